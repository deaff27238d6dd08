"""The fast pipeline: the paper's augmentations as tensor ops on whole uint8 batches.

:class:`BatchAugment` draws the same per-image random parameters as the torchvision pipeline of
:func:`~simsiam.augment.per_image.build_view_transform` (same distributions, parameter by
parameter) and applies them to a whole batch at once, on whatever device the batch is on. There
are no per-image Python loops, and on an accelerator no host syncs, so on a GPU the augmentation
of a batch costs a few dozen kernel launches instead of a DataLoader full of PIL work.

Known, deliberate differences from the per-image path (none changes a parameter's distribution):

* The crop is resampled bilinearly from the whole image, without the
  antialiasing that torchvision applies when it *downscales*; a crop larger than the output
  (ImageNet-size files) is therefore slightly sharper/aliased. For in-memory datasets at native
  size every crop is upscaled, where the two agree. Samples within half a pixel of a crop edge
  interpolate with the pixels just outside the crop, where torchvision replicates the crop's edge.
* Colour ops run on float images; the PIL path rounds to uint8 after every op.

On CPU the crop, flip, colour jitter and grayscale (and the normalisation, when there is no blur)
run by default in a C kernel (:mod:`.native`) that computes the same views as the torch ops here
several times faster; ``kernel="torch"`` keeps the torch ops, which are the reference.
"""
from __future__ import annotations

import functools
import math
from typing import Optional

import torch
import torch.nn.functional as F

from ..config import AugConfig
from . import native
from .recipes import (
    CROP_TRIES,
    aug_values,
    blur_kernel_size,
    check_mean_std,
)

# ITU-R 601-2 luma, as PIL's ``convert("L")`` (torchvision's tensor ops use 0.2989 for red).
LUMA = (0.299, 0.587, 0.114)

# Colour-jitter op ids, in torchvision's numbering (its ``ColorJitter.get_params`` permutes these).
BRIGHTNESS, CONTRAST, SATURATION, HUE = 0, 1, 2, 3
_JITTER_NAMES = ("brightness", "contrast", "saturation", "hue")


# ---------------------------------------------------------------------------------------------
# Batched functional ops. ``x`` is float (B, C, H, W) in [0, 1]; factors are per image, shape (B,).
# ---------------------------------------------------------------------------------------------

def _constant(values: tuple[float, ...], like: torch.Tensor) -> torch.Tensor:
    """A small constant tensor on ``like``'s device and dtype, made once.

    Creating it anew each batch would be a blocking host-to-device copy on a GPU.
    """
    return _cached_constant(tuple(values), like.device, like.dtype)


@functools.lru_cache(maxsize=64)
def _cached_constant(values: tuple[float, ...], device: torch.device, dtype: torch.dtype) -> torch.Tensor:
    return torch.tensor(values, device=device, dtype=dtype)


def _per_image(t: torch.Tensor) -> torch.Tensor:
    """A (B,) tensor viewed as (B, 1, 1, 1) to broadcast over an image batch."""
    return t.view(-1, 1, 1, 1)


def rgb_to_grayscale(x: torch.Tensor) -> torch.Tensor:
    """Luma of an RGB batch, (B, 1, H, W); a one-channel batch is returned as is."""
    if x.shape[1] == 1:
        return x
    r, g, b = x.unbind(1)
    return (LUMA[0] * r + LUMA[1] * g + LUMA[2] * b).unsqueeze(1)


def _blend(x: torch.Tensor, other: torch.Tensor, factor: torch.Tensor) -> torch.Tensor:
    """``factor * x + (1 - factor) * other`` clamped to [0, 1], as torchvision's ``_blend``.

    ``torch.lerp`` is one fused kernel (the three-op form costs about 3x on CPU); ``other`` may be
    a (B, 1, H, W) or (B, 1, 1, 1) reference broadcast over the channels.
    """
    return torch.lerp(other.expand_as(x), x, _per_image(factor).expand_as(x)).clamp_(0.0, 1.0)


def adjust_brightness(x: torch.Tensor, factor: torch.Tensor) -> torch.Tensor:
    """Scale the intensities (a blend with black); factors are >= 0, so only the top can clip."""
    return (x * _per_image(factor)).clamp_(max=1.0)


def adjust_contrast(x: torch.Tensor, factor: torch.Tensor) -> torch.Tensor:
    """Blend with the mean grey level of each image (torchvision: mean of the luma, one scalar per image)."""
    channel_means = x.mean(dim=(2, 3))  # (B, C); the luma is linear, so its mean is theirs weighted
    if x.shape[1] == 3:
        weights = _constant(LUMA, x)
        mean = channel_means @ weights
    else:
        mean = channel_means[:, 0]
    return _blend(x, _per_image(mean), factor)


def adjust_saturation(x: torch.Tensor, factor: torch.Tensor) -> torch.Tensor:
    """Blend with the grayscale image; one channel has no saturation (as torchvision and PIL)."""
    if x.shape[1] == 1:
        return x
    return _blend(x, rgb_to_grayscale(x), factor)


# Hue (in sixths of a turn) at which R, G and B are the largest channel.
_HUE_CENTRES = (0.0, 2.0, 4.0)


def adjust_hue(x: torch.Tensor, shift: torch.Tensor) -> torch.Tensor:
    """Rotate the hue of each image by ``shift`` (a fraction of a turn, in [-0.5, 0.5]).

    Equal to RGB -> HSV -> (h + shift) mod 1 -> RGB as torchvision does, but without building the
    HSV image: a rotation keeps V = max and V * S = max - min = delta, and a channel whose centre
    hue is at circular distance ``dist`` (in sixths) from the new hue equals
    ``min + delta * clamp(2 - dist, 0, 1)``; with ``dist = 3 - |d - 3|`` for the plain distance d
    in [0, 6), that is ``min + delta * clamp(|d - 3| - 1, 0, 1)``.

    Which channel is the max is found with ``sign`` (0 where equal, else 1) and arithmetic:
    comparisons, ``torch.where`` and ``remainder`` are each several times slower on CPU.
    """
    if x.shape[1] == 1:
        return x
    r, g, b = x.unbind(1)
    maxc = torch.maximum(torch.maximum(r, g), b)
    minc = torch.minimum(torch.minimum(r, g), b)
    delta = maxc - minc
    # torchvision's precedence when channels tie: red, then green, then blue.
    not_r = torch.sign(maxc - r)
    not_g = torch.sign(maxc - g)
    is_b = not_r * not_g
    is_g = not_r - is_b
    num = (1.0 - not_r) * (g - b) + is_g * (b - r) + is_b * (r - g)
    # Grey pixels (delta 0) have no hue; any finite value works since the output there is min = max.
    hue6 = num / (delta + (1.0 - torch.sign(delta))) + 2.0 * is_g + 4.0 * is_b
    hue6 = hue6 + 6.0 * shift.view(-1, 1, 1)
    hue6 = hue6 - 6.0 * torch.floor(hue6 / 6.0)  # in [0, 6)
    centres = _constant(_HUE_CENTRES, x).view(1, 3, 1, 1)
    ramp = (hue6.unsqueeze(1) - centres).abs_().sub_(3.0).abs_().sub_(1.0).clamp_(0.0, 1.0)
    return minc.unsqueeze(1) + delta.unsqueeze(1) * ramp


def _grayscale_rgb(x: torch.Tensor) -> torch.Tensor:
    """RandomGrayscale's output: the luma replicated to the 3 channels."""
    return rgb_to_grayscale(x).expand_as(x)


def gaussian_kernels(sigma: torch.Tensor, kernel_size: int) -> torch.Tensor:
    """One normalised 1-D Gaussian per image, (B, kernel_size), sampled as torchvision does."""
    half = (kernel_size - 1) * 0.5
    t = torch.linspace(-half, half, kernel_size, device=sigma.device, dtype=sigma.dtype)
    pdf = torch.exp(-0.5 * (t / sigma.unsqueeze(1)) ** 2)
    return pdf / pdf.sum(dim=1, keepdim=True)


# Up to this kernel size the blur is a sum of shifted slices (no per-group overhead); beyond it a
# grouped convolution is faster. Both compute the same separable filter.
_SHIFT_BLUR_MAX_KERNEL = 11


def gaussian_blur(x: torch.Tensor, sigma: torch.Tensor, kernel_size: int) -> torch.Tensor:
    """Blur each image with its own sigma: a separable filter with torchvision's kernel and reflect padding.

    torchvision convolves with the 2-D kernel, the outer product of two 1-D kernels; filtering
    rows then columns is the same filter.
    """
    kernel = gaussian_kernels(sigma.to(x.dtype), kernel_size)  # (B, k)
    pad = kernel_size // 2
    padded = F.pad(x, (pad, pad, pad, pad), mode="reflect")
    if kernel_size <= _SHIFT_BLUR_MAX_KERNEL:
        return _blur_by_shifts(padded, kernel, x.shape[-2:])
    return _blur_by_conv(padded, kernel, x.shape[-2:])


def _blur_by_shifts(padded: torch.Tensor, kernel: torch.Tensor, hw) -> torch.Tensor:
    """Rows then columns as ``sum_j kernel[:, j] * shifted slice j``, each weight per image."""
    (h, w), k = hw, kernel.shape[1]
    weights = [kernel[:, j].view(-1, 1, 1, 1) for j in range(k)]
    rows = padded[..., 0:w] * weights[0]
    for j in range(1, k):
        rows.addcmul_(padded[..., j:j + w], weights[j])
    out = rows[..., 0:h, :] * weights[0]
    for j in range(1, k):
        out.addcmul_(rows[..., j:j + h, :], weights[j])
    return out


def _blur_by_conv(padded: torch.Tensor, kernel: torch.Tensor, hw) -> torch.Tensor:
    """Rows then columns as grouped convolutions, one group (and kernel) per image channel."""
    (h, w), k = hw, kernel.shape[1]
    b, c = padded.shape[:2]
    weight = kernel.repeat_interleave(c, dim=0)  # (B*C, k)
    y = padded.reshape(1, b * c, *padded.shape[-2:])
    y = F.conv2d(y, weight.view(b * c, 1, 1, k), groups=b * c)
    y = F.conv2d(y, weight.view(b * c, 1, k, 1), groups=b * c)
    return y.view(b, c, h, w)


# ---------------------------------------------------------------------------------------------
# Random resized crop, vectorised.
# ---------------------------------------------------------------------------------------------

def _uniform(shape, low: float, high: float, generator, device) -> torch.Tensor:
    return low + (high - low) * torch.rand(shape, generator=generator, device=device)


def fallback_crop(height: int, width: int, ratio: tuple[float, float]) -> tuple[int, int, int, int]:
    """torchvision's box when all tries fail: the central crop, clamped to the ratio range; (x0, y0, w, h)."""
    in_ratio = width / height
    if in_ratio < min(ratio):
        w, h = width, int(round(width / min(ratio)))
    elif in_ratio > max(ratio):
        w, h = int(round(height * max(ratio))), height
    else:
        w, h = width, height
    return (width - w) // 2, (height - h) // 2, w, h


def fallback_crops(heights: torch.Tensor, widths: torch.Tensor, ratio: tuple[float, float]) -> torch.Tensor:
    """:func:`fallback_crop` for images of their own sizes at once: (n, 4) float boxes (x0, y0, w, h)."""
    height, width = heights.double(), widths.double()
    in_ratio = width / height
    narrow, wide = in_ratio < min(ratio), in_ratio > max(ratio)
    w = torch.where(wide, torch.round(height * max(ratio)), width)
    h = torch.where(narrow, torch.round(width / min(ratio)), height)
    return torch.stack((torch.div(width - w, 2, rounding_mode="floor"),
                        torch.div(height - h, 2, rounding_mode="floor"), w, h), dim=1)


def sample_crop_boxes_within(sizes: torch.Tensor, scale: tuple[float, float], ratio: tuple[float, float],
                             generator, device) -> torch.Tensor:
    """:func:`sample_crop_boxes` for images of their own (height, width), ``sizes`` (n, 2): each box
    relative to its whole image (area fraction in ``scale``, log-uniform aspect in ``ratio``, the
    first of ``CROP_TRIES`` tries that fits, else the centre crop), as torchvision's
    ``RandomResizedCrop.get_params`` on each file. Draws exactly the numbers the square version does."""
    n = sizes.shape[0]
    height = sizes[:, 0].to(device=device, dtype=torch.float32).view(-1, 1)
    width = sizes[:, 1].to(device=device, dtype=torch.float32).view(-1, 1)
    w, h, valid = _first_valid_try(n, height * width, height, width, scale, ratio, generator, device)
    offsets = torch.rand((n, 2), generator=generator, device=device)
    height, width = height.squeeze(1), width.squeeze(1)
    x0 = torch.minimum(torch.floor(offsets[:, 0] * (width - w + 1)), width - w)
    y0 = torch.minimum(torch.floor(offsets[:, 1] * (height - h + 1)), height - h)
    drawn = torch.stack((x0, y0, w, h), dim=1).long()
    fallback = fallback_crops(height, width, ratio).long()
    return torch.where(valid.any(dim=1, keepdim=True), drawn, fallback)


def _first_valid_try(n: int, area, height, width, scale: tuple[float, float], ratio: tuple[float, float],
                     generator, device) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """RandomResizedCrop's ``CROP_TRIES`` tries for ``n`` images, drawn together: the (w, h) of each
    image's first valid try (its last try when none is) and the (n, CROP_TRIES) validity mask.
    ``area``, ``height``, ``width``: numbers (one size for all) or (n, 1) tensors (a size each)."""
    log_lo, log_hi = math.log(ratio[0]), math.log(ratio[1])
    target = area * _uniform((n, CROP_TRIES), scale[0], scale[1], generator, device)
    ratios = torch.exp(_uniform((n, CROP_TRIES), log_lo, log_hi, generator, device))
    # torch.round and Python's round both round half to even.
    w = torch.round(torch.sqrt(target * ratios))
    h = torch.round(torch.sqrt(target / ratios))
    valid = (w > 0) & (w <= width) & (h > 0) & (h <= height)
    # Index of the first valid try = the number of invalid tries before it (clamped when none is valid).
    first = (valid.cumsum(dim=1) == 0).sum(dim=1, keepdim=True).clamp_(max=CROP_TRIES - 1)
    return w.gather(1, first).squeeze(1), h.gather(1, first).squeeze(1), valid


def sample_crop_boxes(n: int, height: int, width: int, scale: tuple[float, float], ratio: tuple[float, float],
                      generator, device) -> torch.Tensor:
    """``RandomResizedCrop.get_params`` for ``n`` images at once: (n, 4) int64 boxes (x0, y0, w, h).

    All ``CROP_TRIES`` candidates are drawn together and the first valid one is kept, which is the
    same distribution as torchvision's loop that stops at the first valid try.
    """
    w, h, valid = _first_valid_try(n, height * width, height, width, scale, ratio, generator, device)
    offsets = torch.rand((n, 2), generator=generator, device=device)

    found = valid.any(dim=1)
    fx, fy, fw, fh = fallback_crop(height, width, ratio)
    w = torch.where(found, w, torch.full_like(w, fw))
    h = torch.where(found, h, torch.full_like(h, fh))
    # Uniform integer offset in [0, size - crop]; the min guards float rounding of u * (k + 1) up to k + 1.
    x0 = torch.minimum(torch.floor(offsets[:, 0] * (width - w + 1)), width - w)
    y0 = torch.minimum(torch.floor(offsets[:, 1] * (height - h + 1)), height - h)
    x0 = torch.where(found, x0, torch.full_like(x0, fx))
    y0 = torch.where(found, y0, torch.full_like(y0, fy))
    return torch.stack((x0, y0, w, h), dim=1).long()


def _interpolation_matrices(start: torch.Tensor, length: torch.Tensor, extent: int, size: int,
                            flip: Optional[torch.Tensor] = None) -> torch.Tensor:
    """Bilinear resampling of one axis as a matrix per image: (B, size, extent), two weights per row.

    Output pixel u samples input coordinate ``start + (u + 0.5) * length / size - 0.5`` (pixel
    centres, as torchvision's resize; mirrored about the crop's centre where ``flip``), clamped to
    the image so that the edge pixel is replicated beyond it.
    """
    u = (torch.arange(size, device=start.device, dtype=start.dtype) + 0.5) / size  # (size,)
    u = u.expand(start.shape[0], size)
    if flip is not None:
        u = torch.where(flip.view(-1, 1), 1.0 - u, u)
    pos = (start.view(-1, 1) + length.view(-1, 1) * u - 0.5).clamp_(0.0, extent - 1)
    below = pos.floor()
    frac = (pos - below).unsqueeze(2)
    below = below.long().unsqueeze(2)
    above = (below + 1).clamp_(max=extent - 1)
    m = torch.zeros(start.shape[0], size, extent, device=start.device, dtype=start.dtype)
    return m.scatter_add_(2, below, 1.0 - frac).scatter_add_(2, above, frac)


# Up to this source side the crop is two small matmuls, about half grid_sample's CPU time at 64 px;
# their cost grows with side^3, and at 224 px (256-px sources) they take twice grid_sample's.
_MATMUL_CROP_MAX_SIDE = 160


def crop_resize_flip(x: torch.Tensor, boxes: torch.Tensor, flip: torch.Tensor, size: int,
                     transposed: Optional[torch.Tensor] = None) -> torch.Tensor:
    """Crop each box, resize it to ``size`` x ``size`` (bilinear) and mirror flagged images.

    ``transposed`` (B,) marks images stored transposed (a cache's portrait photos, see
    ``InMemoryImages.sizes``): their ``boxes`` are in the stored image's coordinates, their crop is
    transposed back to upright, and their flip mirrors the stored rows -- the upright columns.

    Bilinear sampling with ``align_corners=False`` and border padding, as ``grid_sample`` computes
    it. For small images (up to ``_MATMUL_CROP_MAX_SIDE``) it is separable: each image is
    ``rows @ image @ columns^T`` with one two-weights-per-row matrix per axis
    (:func:`_interpolation_matrices`), two batched matmuls. The two ways agree to float rounding.
    """
    b, c, height, width = x.shape
    boxes = boxes.to(device=x.device, dtype=x.dtype)
    flip = flip.to(x.device)
    flip_rows = None
    if transposed is not None:
        transposed = transposed.to(x.device)
        flip, flip_rows = flip & ~transposed, flip & transposed
    if max(height, width) > _MATMUL_CROP_MAX_SIDE:
        out = _crop_by_grid_sample(x, boxes, flip, size, flip_rows)
    else:
        out = _crop_by_matmul(x, boxes, flip, size, flip_rows)
    if transposed is None:
        return out
    return torch.where(_per_image(transposed), out.transpose(2, 3), out)


def _crop_by_matmul(x: torch.Tensor, boxes: torch.Tensor, flip: torch.Tensor, size: int,
                    flip_rows: Optional[torch.Tensor] = None) -> torch.Tensor:
    """The crop as ``rows @ image @ columns^T``: two batched matmuls with per-image bilinear weights."""
    b, c, height, width = x.shape
    x0, y0, w, h = boxes.unbind(1)
    rows = _interpolation_matrices(y0, h, height, size, flip_rows)  # (B, size, H)
    columns = _interpolation_matrices(x0, w, width, size, flip)  # (B, size, W)
    # Columns first on (B, C*H, W); then the rows need H innermost-but-one: (B, H, C*size).
    y = torch.bmm(x.reshape(b, c * height, width), columns.transpose(1, 2))
    y = y.view(b, c, height, size).transpose(1, 2).reshape(b, height, c * size)
    out = torch.bmm(rows, y)  # (B, size, C*size)
    return out.view(b, size, c, size).permute(0, 2, 1, 3).contiguous()


def _crop_by_grid_sample(x: torch.Tensor, boxes: torch.Tensor, flip: torch.Tensor, size: int,
                         flip_rows: Optional[torch.Tensor] = None) -> torch.Tensor:
    """The same crop as one ``grid_sample`` of an affine grid per image.

    Output pixel u samples input x0 + (u + 0.5) * w / size - 0.5; in the normalised coordinates of
    ``affine_grid`` that is x_in = (w / W) * x_out + (2 * x0 + w) / W - 1, and a flip negates the
    x scale, mirroring about the crop's centre.
    """
    b, c, height, width = x.shape
    x0, y0, w, h = boxes.unbind(1)
    theta = torch.zeros(b, 2, 3, device=x.device, dtype=x.dtype)
    theta[:, 0, 0] = torch.where(flip, -w / width, w / width)
    theta[:, 0, 2] = (2 * x0 + w) / width - 1
    theta[:, 1, 1] = h / height if flip_rows is None else torch.where(flip_rows, -h / height, h / height)
    theta[:, 1, 2] = (2 * y0 + h) / height - 1
    grid = F.affine_grid(theta, [b, c, size, size], align_corners=False)
    # "border" replicates the image edge, where "zeros" would darken samples in the outer half pixel.
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False)


def _gathers(device: torch.device) -> bool:
    """Whether :func:`apply_where` gathers the selected images (CPU) or masks the whole batch."""
    return device.type == "cpu"


def apply_where(selected: torch.Tensor, x: torch.Tensor, fn, *per_image_args: torch.Tensor) -> torch.Tensor:
    """``x`` with ``fn(x, *args)`` applied to the images where ``selected`` (B,) is True, others unchanged.

    May overwrite ``x`` (CPU); pass only a tensor the caller owns.

    On CPU only the selected images are computed (gathered with an index): the jitter runs each op
    at 4 positions, so computing every op on the whole batch would cost 4x. On an accelerator the
    index would need a host sync (its size is data-dependent), so there the op runs on the whole
    batch and ``torch.where`` keeps the unselected images -- cheap there, and sync-free.
    """
    if _gathers(x.device):
        idx = selected.nonzero().squeeze(1)
        if idx.numel() == 0:
            return x
        # In place: ``x`` is always the pipeline's own intermediate (see BatchAugment.apply).
        return x.index_copy_(0, idx, fn(x.index_select(0, idx), *(a.index_select(0, idx) for a in per_image_args)))
    return torch.where(_per_image(selected), fn(x, *per_image_args), x)


_JITTER_FNS = {BRIGHTNESS: adjust_brightness, CONTRAST: adjust_contrast, SATURATION: adjust_saturation, HUE: adjust_hue}


# ---------------------------------------------------------------------------------------------
# The augmentation.
# ---------------------------------------------------------------------------------------------

def normalize_batch(images_uint8: torch.Tensor, mean, std) -> torch.Tensor:
    """Un-augmented eval path for in-memory data: uint8 (B, C, H, W) -> float32 (x / 255 - mean) / std."""
    mean_t, std_t = check_mean_std(mean, std, images_uint8.shape[1])
    x = images_uint8.to(torch.float32) / 255.0
    return _normalize(x, mean_t, std_t)


def stored_coordinates(params: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """``params`` with the crop boxes of transposed images (``transposed``) moved from upright to
    stored coordinates: (x0, y0, w, h) -> (y0, x0, h, w). Unchanged without that key."""
    transposed = params.get("transposed")
    if transposed is None:
        return params
    box = params["crop_box"]
    return {**params, "crop_box": torch.where(transposed.view(-1, 1), box[:, [1, 0, 3, 2]], box)}


def _normalize(x: torch.Tensor, mean: tuple[float, ...], std: tuple[float, ...]) -> torch.Tensor:
    m = _constant(mean, x).view(1, -1, 1, 1)
    s = _constant(std, x).view(1, -1, 1, 1)
    return (x - m) / s


class BatchAugment:
    """Random SimSiam views of a whole uint8 batch, with the distribution of ``build_view_transform``.

    ``aug(images)`` draws fresh parameters and applies them; ``sample_params`` / ``apply`` split the
    two so the parameters can be inspected (tests) or reused. ``kernel`` (``data.augment_kernel``)
    chooses how CPU batches are computed: "native" (the C kernel, an error where it cannot be
    built), "torch" (tensor ops), "auto" (native where it can be built).
    """

    def __init__(self, aug: AugConfig, size: int, channels: int, mean, std, kernel: str = "auto"):
        if channels not in (1, 3):
            raise ValueError(f"channels must be 1 or 3, got {channels}")
        if kernel not in ("auto", "native", "torch"):
            raise ValueError(f"kernel must be 'auto', 'native' or 'torch', got {kernel!r}")
        self.kernel = kernel
        self.values = aug_values(aug)
        self.size = int(size)
        self.channels = channels
        self.mean, self.std = check_mean_std(mean, std, channels)
        self.kernel_size = blur_kernel_size(self.size)
        v = self.values
        # As the per-image path: one channel gets brightness and contrast only; a zero strength is
        # skipped (torchvision sets the op to None).
        strengths = (v["brightness"], v["contrast"], v["saturation"], v["hue"])
        usable = (BRIGHTNESS, CONTRAST) if channels == 1 else (BRIGHTNESS, CONTRAST, SATURATION, HUE)
        self.jitter_ops = tuple(op for op in usable if strengths[op] > 0) if v["jitter_p"] > 0 else ()
        self.use_grayscale = channels == 3 and v["grayscale_p"] > 0
        self.use_blur = v["blur_p"] > 0

    def __repr__(self) -> str:
        return (f"{type(self).__name__}(size={self.size}, channels={self.channels}, "
                f"values={self.values}, kernel_size={self.kernel_size}, kernel={self.kernel!r})")

    def uses_native(self, device) -> bool:
        """Whether batches on ``device`` go through the C kernel (building it on first call)."""
        if torch.device(device).type != "cpu" or self.kernel == "torch":
            return False
        why = native.unavailable_reason()
        if why is not None and self.kernel == "native":
            raise native.NativeUnavailable(f"data.augment_kernel=native, but the kernel is unavailable: {why}. "
                                           "Use data.augment_kernel=torch (or auto), which computes the same views "
                                           "with torch ops")
        return why is None

    def describe(self, device) -> str:
        """How views are computed on ``device``, for the run's log."""
        if self.uses_native(device):
            return "augmentation by the native C kernel"
        why = native.unavailable_reason() if torch.device(device).type == "cpu" and self.kernel == "auto" else None
        return "augmentation by torch ops" + (f" (native kernel unavailable: {why})" if why else "")

    # -- parameters --------------------------------------------------------------------------

    def sample_params(self, n: int, generator: Optional[torch.Generator] = None, device=None,
                      image_hw: Optional[tuple[int, int]] = None,
                      image_sizes: Optional[torch.Tensor] = None) -> dict[str, torch.Tensor]:
        """Per-image random parameters for ``n`` views, as tensors of leading size ``n`` on ``device``.

        ``image_hw`` is the (height, width) of the images the crop boxes are for; by default the
        output size (in-memory datasets at native size). ``image_sizes`` (n, 2), given for whole
        photos stored in padded slots (``InMemoryImages.sizes``), is each image's own upright
        (height, width) instead: the boxes are drawn relative to it (in upright coordinates), and
        the extra key ``transposed`` says which images are stored transposed (portrait); the same
        numbers are drawn either way. Parameters are drawn on the generator's
        device (so a CPU generator can drive a CUDA batch) and moved to ``device``. Every key is
        always present, also for ops that are switched off, so the random stream does not depend
        on which ops are enabled.

        Keys: ``crop_box`` (x0, y0, w, h) int64 pixels; ``crop_scale`` realised area fraction and
        ``crop_logratio`` realised log(w / h); ``flip``, ``jitter``, ``grayscale``, ``blur`` bool;
        ``brightness``, ``contrast``, ``saturation`` factors, ``hue`` shift; ``order`` (n, 4) the
        jitter ops (0 brightness, 1 contrast, 2 saturation, 3 hue) in the order applied;
        ``sigma`` the blur's standard deviation.
        """
        v = self.values
        device = torch.device(device) if device is not None else (
            generator.device if generator is not None else torch.device("cpu"))
        draw_device = generator.device if generator is not None else device
        height, width = image_hw if image_hw is not None else (self.size, self.size)

        def bernoulli(p: float) -> torch.Tensor:
            return torch.rand(n, generator=generator, device=draw_device) < p

        def uniform(low: float, high: float) -> torch.Tensor:
            return _uniform(n, low, high, generator, draw_device)

        scale, ratio = (v["crop_scale_min"], v["crop_scale_max"]), (v["crop_ratio_min"], v["crop_ratio_max"])
        extra = {}
        if image_sizes is None:
            boxes = sample_crop_boxes(n, height, width, scale, ratio, generator, draw_device)
            area = height * width
        else:
            sizes = image_sizes.to(draw_device)
            boxes = sample_crop_boxes_within(sizes, scale, ratio, generator, draw_device)
            area = sizes.prod(dim=1).double()
            extra["transposed"] = sizes[:, 0] > sizes[:, 1]
        w, h = boxes[:, 2].double(), boxes[:, 3].double()
        params = {
            **extra,
            "crop_box": boxes,
            "crop_scale": (w * h / area).float(),
            "crop_logratio": torch.log(w / h).float(),
            "flip": bernoulli(v["flip_p"]),
            "jitter": bernoulli(v["jitter_p"]),
            # ColorJitter's ranges: brightness/contrast/saturation [max(0, 1 - s), 1 + s], hue [-h, h].
            "brightness": uniform(max(0.0, 1 - v["brightness"]), 1 + v["brightness"]),
            "contrast": uniform(max(0.0, 1 - v["contrast"]), 1 + v["contrast"]),
            "saturation": uniform(max(0.0, 1 - v["saturation"]), 1 + v["saturation"]),
            "hue": uniform(-v["hue"], v["hue"]),
            # argsort of i.i.d. uniforms is a uniformly random permutation, as torch.randperm(4).
            "order": torch.rand((n, 4), generator=generator, device=draw_device).argsort(dim=1),
            "grayscale": bernoulli(v["grayscale_p"]),
            "blur": bernoulli(v["blur_p"]),
            "sigma": uniform(v["blur_sigma_min"], v["blur_sigma_max"]),
        }
        return {k: t.to(device, non_blocking=True) for k, t in params.items()}

    # -- application -------------------------------------------------------------------------

    def apply(self, images_uint8: torch.Tensor, params: dict[str, torch.Tensor]) -> torch.Tensor:
        """Augment a uint8 batch (B, C, H, W) with ``params`` -> float32 (B, C, size, size), normalised."""
        self._check_images(images_uint8)
        params = stored_coordinates(params)
        if self.uses_native(images_uint8.device):
            return self._apply_native(images_uint8, params)
        x = images_uint8.to(torch.float32) / 255.0
        # Crop first: every later op then runs on the (usually smaller) output size. The flip is
        # folded into the crop; it commutes with the colour ops and the symmetric blur.
        x = crop_resize_flip(x, params["crop_box"], params["flip"], self.size, params.get("transposed"))
        if self.jitter_ops:
            x = self._color_jitter(x, params)
        if self.use_grayscale:
            x = apply_where(params["grayscale"], x, _grayscale_rgb)
        if self.use_blur:
            x = apply_where(params["blur"], x, self._blur, params["sigma"])
        return _normalize(x, self.mean, self.std)

    def __call__(self, images_uint8: torch.Tensor, generator: Optional[torch.Generator] = None,
                 sizes: Optional[torch.Tensor] = None) -> torch.Tensor:
        """One random view of every image of the batch (whole photos of ``sizes``, see ``sample_params``)."""
        self._check_images(images_uint8)
        params = self.sample_params(images_uint8.shape[0], generator, images_uint8.device,
                                    image_hw=tuple(images_uint8.shape[-2:]), image_sizes=sizes)
        return self.apply(images_uint8, params)

    def _apply_native(self, images_uint8: torch.Tensor, params: dict[str, torch.Tensor]) -> torch.Tensor:
        """The C kernel's crop, jitter and grayscale; a blur (not in the kernel) and then the
        normalisation follow as torch ops."""
        if not self.use_blur:
            return native.augment(images_uint8, params, self.size, self.jitter_ops, self.use_grayscale,
                                  self.mean, self.std)
        x = native.augment(images_uint8, params, self.size, self.jitter_ops, self.use_grayscale, None, None)
        x = apply_where(params["blur"], x, self._blur, params["sigma"])
        return _normalize(x, self.mean, self.std)

    def _check_images(self, images: torch.Tensor) -> None:
        if images.dim() != 4 or images.shape[1] != self.channels:
            raise ValueError(f"expected a batch (B, {self.channels}, H, W), got shape {tuple(images.shape)}")
        if images.dtype != torch.uint8:
            raise TypeError(f"expected uint8 images, got {images.dtype}")

    def _blur(self, x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
        return gaussian_blur(x, sigma, self.kernel_size)

    def _color_jitter(self, x: torch.Tensor, params: dict[str, torch.Tensor]) -> torch.Tensor:
        """ColorJitter with each image's own op order, under RandomApply(p=jitter_p).

        At each of the 4 positions each op changes only the images whose permutation puts it there
        (and that are jittered at all); see :func:`apply_where`.
        """
        active = params["jitter"]
        for position in range(4):
            op_here = params["order"][:, position]
            for op in self.jitter_ops:
                name = _JITTER_NAMES[op]
                x = apply_where(active & (op_here == op), x, _JITTER_FNS[op], params[name])
        return x
