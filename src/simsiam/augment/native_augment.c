/* The batched augmentation's CPU kernel: crop + flip + colour jitter + grayscale (+ normalisation)
 * of a whole uint8 batch, one image at a time.
 *
 * It computes what BatchAugment.apply (batched.py) computes with torch ops, for the parameters
 * that BatchAugment.sample_params drew; the tests compare the two. The torch ops walk the whole
 * batch (6 MB for 128 colour images at 64 px) once per elementary operation -- about a hundred
 * passes through memory per view. Here each image (48 KB) is cropped and then jittered while it
 * sits in the core's cache, with loops that the compiler vectorises, and the images are shared
 * between threads (OpenMP's, see simsiam_augment).
 *
 * Built on first use by native.py with the machine's C compiler (-O3 -march=native -fopenmp), no
 * Python headers: it is called through ctypes, which releases the GIL for the call.
 */
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

/* Keep in step with batched.py: the colour-jitter op ids and ITU-R 601-2 luma. */
enum { BRIGHTNESS = 0, CONTRAST = 1, SATURATION = 2, HUE = 3 };
static const float LUMA_R = 0.299f, LUMA_G = 0.587f, LUMA_B = 0.114f;

typedef struct {
    const uint8_t *src;    /* (n, channels, height, width) */
    float *dst;            /* (n, channels, size, size) */
    int64_t n;
    int channels, height, width, size;
    const float *boxes;    /* (n, 4): x0, y0, w, h in source pixels */
    const uint8_t *flip;   /* (n,): bit 0 mirror the view; bit 1 the image is stored transposed */
    const int8_t *ops;     /* (n, 4): the jitter op at each position, -1 for none */
    const float *factors;  /* (n, 4): brightness, contrast, saturation factors and hue shift */
    const uint8_t *gray;   /* (n,): RandomGrayscale chose this image */
    const float *mean, *std; /* (channels,) each, or NULL: leave [0, 1] values unnormalised */
    float lut[256];        /* uint8 -> float in [0, 1], as torch's x.float() / 255 */
} Batch;

/* torch.lerp's CPU formula (exact at both ends): start + weight * (end - start). */
static inline float lerp(float start, float end, float weight) {
    float diff = end - start;
    return weight < 0.5f ? start + weight * diff : end - diff * (1.0f - weight);
}


/* One axis of the bilinear resampling, as _interpolation_matrices: output pixel u reads source
 * position start + (u + 0.5) / size * length - 0.5 (mirrored where flip), clamped to the image. */
static void axis_taps(float start, float length, int extent, int size, int flip,
                      int *below, int *above, float *frac) {
    for (int u = 0; u < size; u++) {
        float t = ((float)u + 0.5f) / (float)size;
        if (flip) t = 1.0f - t;
        float pos = start + length * t - 0.5f;
        if (pos < 0.0f) pos = 0.0f;
        if (pos > (float)(extent - 1)) pos = (float)(extent - 1);
        float lo = floorf(pos);
        below[u] = (int)lo;
        above[u] = below[u] + 1 < extent ? below[u] + 1 : extent - 1;
        frac[u] = pos - lo;
    }
}

/* Crop, resize and flip one image into out (channels x size x size), columns first as the matmul
 * path: rows[y][u] for the source rows the output reads, then out[v][u] from two of those rows.
 * An image stored transposed (a portrait photo in a cache of whole photos; its box is in stored
 * coordinates) is cropped as stored and written transposed, out[u][v], upright again; its flip
 * mirrors the stored rows, which are the upright view's columns. */
static void crop(const Batch *b, int64_t i, float *out, float *rows, int *taps, float *fracs) {
    const int C = b->channels, H = b->height, W = b->width, S = b->size;
    const float *box = b->boxes + 4 * i;
    int *xb = taps, *xa = taps + S, *yb = taps + 2 * S, *ya = taps + 3 * S;
    float *xf = fracs, *yf = fracs + S;
    const int mirror = b->flip[i] & 1, transposed = (b->flip[i] >> 1) & 1;
    axis_taps(box[0], box[2], W, S, mirror && !transposed, xb, xa, xf);
    axis_taps(box[1], box[3], H, S, mirror && transposed, yb, ya, yf);
    /* Rows are read in increasing order, or decreasing where they are mirrored (transposed). */
    const int first = yb[0] < yb[S - 1] ? yb[0] : yb[S - 1], last = ya[0] > ya[S - 1] ? ya[0] : ya[S - 1];
    const uint8_t *img = b->src + (int64_t)i * C * H * W;
    for (int c = 0; c < C; c++) {
        for (int y = first; y <= last; y++) {
            const uint8_t *line = img + ((int64_t)c * H + y) * W;
            float *r = rows + ((int64_t)c * H + y) * S;
            for (int u = 0; u < S; u++)
                r[u] = b->lut[line[xb[u]]] * (1.0f - xf[u]) + b->lut[line[xa[u]]] * xf[u];
        }
        for (int v = 0; v < S; v++) {
            const float *r0 = rows + ((int64_t)c * H + yb[v]) * S, *r1 = rows + ((int64_t)c * H + ya[v]) * S;
            const float w1 = yf[v], w0 = 1.0f - w1;
            if (transposed) {
                float *o = out + (int64_t)c * S * S + v;
                for (int u = 0; u < S; u++) o[(int64_t)u * S] = r0[u] * w0 + r1[u] * w1;
            } else {
                float *o = out + ((int64_t)c * S + v) * S;
                for (int u = 0; u < S; u++) o[u] = r0[u] * w0 + r1[u] * w1;
            }
        }
    }
}

static inline float maxf(float a, float b) { return a > b ? a : b; }
static inline float minf(float a, float b) { return a < b ? a : b; }
static inline float clamp01(float v) { return minf(maxf(v, 0.0f), 1.0f); }

/* The loops below are written for the compiler's vectoriser: restrict planes, selects instead of
 * branches, and maxf/minf (fmaxf's NaN rules keep it from vector max instructions). */

static void brightness(float *restrict x, int64_t count, float factor) {
    for (int64_t k = 0; k < count; k++) x[k] = minf(x[k] * factor, 1.0f);
}

/* A plane's sum in 16 float lanes, added up in double: vectorised, unlike one running sum, and
 * as accurate as torch's mean for the plane sizes of images. */
static double plane_sum(const float *restrict x, int64_t npix) {
    float lanes[16] = {0};
    int64_t k = 0;
    for (; k + 16 <= npix; k += 16)
        for (int j = 0; j < 16; j++) lanes[j] += x[k + j];
    double sum = 0.0;
    for (int j = 0; j < 16; j++) sum += lanes[j];
    for (; k < npix; k++) sum += x[k];
    return sum;
}

static void blend_plane(float *restrict x, const float *restrict other, int64_t npix, float factor) {
    for (int64_t k = 0; k < npix; k++) x[k] = clamp01(lerp(other[k], x[k], factor));
}

static void blend_scalar(float *restrict x, float other, int64_t count, float factor) {
    for (int64_t k = 0; k < count; k++) x[k] = clamp01(lerp(other, x[k], factor));
}

static void luma(const float *restrict r, const float *restrict g, const float *restrict b, float *restrict out,
                 int64_t npix) {
    for (int64_t k = 0; k < npix; k++) out[k] = LUMA_R * r[k] + LUMA_G * g[k] + LUMA_B * b[k];
}

/* Blend with the image's mean luma, one scalar per image (torchvision's adjust_contrast). */
static void contrast(float *x, int channels, int64_t npix, float factor) {
    float mean;
    if (channels == 3)
        mean = LUMA_R * (float)(plane_sum(x, npix) / npix) + LUMA_G * (float)(plane_sum(x + npix, npix) / npix)
             + LUMA_B * (float)(plane_sum(x + 2 * npix, npix) / npix);
    else
        mean = (float)(plane_sum(x, npix) / npix);
    blend_scalar(x, mean, channels * npix, factor);
}

/* Blend with the grayscale image (colour only); scratch holds one plane. */
static void saturation(float *x, int64_t npix, float factor, float *restrict scratch) {
    luma(x, x + npix, x + 2 * npix, scratch, npix);
    for (int c = 0; c < 3; c++) blend_plane(x + c * npix, scratch, npix, factor);
}

/* Hue rotation by shift (a fraction of a turn), as batched.adjust_hue: the hue in sixths from the
 * largest channel (ties: red, then green, then blue), moved and wrapped to [0, 6), and each
 * channel min + delta * clamp(|d - 3| - 1, 0, 1) with d its distance (in sixths) to that hue. */
static void hue(float *restrict r, float *restrict g, float *restrict b, int64_t npix, float shift) {
    const float turn = 6.0f * shift;
    for (int64_t k = 0; k < npix; k++) {
        float rv = r[k], gv = g[k], bv = b[k];
        float mx = maxf(maxf(rv, gv), bv), mn = minf(minf(rv, gv), bv), delta = mx - mn;
        int red = mx == rv, green = (mx != rv) & (mx == gv);
        float num = red ? gv - bv : (green ? bv - rv : rv - gv);
        float base = red ? 0.0f : (green ? 2.0f : 4.0f);
        float h = num / (delta > 0.0f ? delta : 1.0f) + base + turn;
        h = h - 6.0f * floorf(h / 6.0f);
        r[k] = mn + delta * minf(maxf(fabsf(fabsf(h) - 3.0f) - 1.0f, 0.0f), 1.0f);
        g[k] = mn + delta * minf(maxf(fabsf(fabsf(h - 2.0f) - 3.0f) - 1.0f, 0.0f), 1.0f);
        b[k] = mn + delta * minf(maxf(fabsf(fabsf(h - 4.0f) - 3.0f) - 1.0f, 0.0f), 1.0f);
    }
}

static void grayscale(float *x, int64_t npix, float *restrict scratch) {
    luma(x, x + npix, x + 2 * npix, scratch, npix);
    for (int c = 0; c < 3; c++) memcpy(x + c * npix, scratch, sizeof(float) * (size_t)npix);
}

static void normalise(float *restrict x, int channels, int64_t npix, const float *mean, const float *std) {
    for (int c = 0; c < channels; c++) {
        float m = mean[c], s = std[c];
        float *p = x + c * npix;
        for (int64_t k = 0; k < npix; k++) p[k] = (p[k] - m) / s;
    }
}

static void augment_one(const Batch *b, int64_t i, float *rows, int *taps, float *fracs, float *plane) {
    const int C = b->channels;
    const int64_t npix = (int64_t)b->size * b->size;
    float *x = b->dst + i * C * npix;
    crop(b, i, x, rows, taps, fracs);
    for (int position = 0; position < 4; position++) {
        int op = b->ops[4 * i + position];
        float f = b->factors[4 * i + (op < 0 ? 0 : op)];
        if (op == BRIGHTNESS) brightness(x, C * npix, f);
        else if (op == CONTRAST) contrast(x, C, npix, f);
        else if (op == SATURATION && C == 3) saturation(x, npix, f, plane);
        else if (op == HUE && C == 3) hue(x, x + npix, x + 2 * npix, npix, f);
    }
    if (C == 3 && b->gray[i]) grayscale(x, npix, plane);
    if (b->mean) normalise(x, C, npix, b->mean, b->std);
}

/* The entry point; returns 0, or -1 when a thread's scratch memory could not be had. Each image's
 * view is made by one thread and does not depend on how the batch was shared out.
 *
 * The threads are OpenMP's: built with -fopenmp and loaded into a process where torch has loaded
 * its libgomp, the kernel runs on torch's own thread pool. Separate threads would fight torch's
 * for the cores while those spin-wait after each torch op (measured: 30-70% slower views). */
int simsiam_augment(const uint8_t *src, float *dst, int64_t n, int channels, int height, int width, int size,
                    const float *boxes, const uint8_t *flip, const int8_t *ops, const float *factors,
                    const uint8_t *gray, const float *mean, const float *std, int threads) {
    Batch b = {src, dst, n, channels, height, width, size, boxes, flip, ops, factors, gray, mean, std, {0}};
    for (int v = 0; v < 256; v++) b.lut[v] = (float)v / 255.0f;
    int failed = 0;
    (void)threads;
#ifdef _OPENMP
#pragma omp parallel num_threads(threads < 1 ? 1 : threads) reduction(|: failed)
#endif
    {
        float *rows = malloc(sizeof(float) * (size_t)channels * height * size);
        int *taps = malloc(sizeof(int) * 4 * (size_t)size);
        float *fracs = malloc(sizeof(float) * 2 * (size_t)size);
        float *plane = malloc(sizeof(float) * (size_t)size * size);
        if (!rows || !taps || !fracs || !plane) failed = 1;
#ifdef _OPENMP
#pragma omp for schedule(static)
#endif
        for (int64_t i = 0; i < n; i++)
            if (!failed) augment_one(&b, i, rows, taps, fracs, plane);
        free(rows); free(taps); free(fracs); free(plane);
    }
    return failed ? -1 : 0;
}
