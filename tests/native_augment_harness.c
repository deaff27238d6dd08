/* Drives native_augment.c's entry point with random boxes, flips, op orders and factors over
 * awkward shapes (1x1 and 5x300 sources, 8 px upscaled to 96), on 1-3 threads, with and without
 * normalisation. tests/test_native_augment.py builds it with AddressSanitizer and UBSan: any read
 * or write outside the buffers, or undefined behaviour, fails the test. */
#include <stdint.h>
#include <stdlib.h>
#include <stdio.h>
int simsiam_augment(const uint8_t *src, float *dst, int64_t n, int channels, int height, int width, int size,
                    const float *boxes, const uint8_t *flip, const int8_t *ops, const float *factors,
                    const uint8_t *gray, const float *mean, const float *std, int threads);
int main(void) {
  srand(1);
  int shapes[][4] = {{3,64,64,64},{1,28,28,28},{3,37,61,24},{3,1,1,8},{3,200,90,40},{1,5,300,17},{3,8,8,96}};
  for (int s = 0; s < 7; s++) {
    int C = shapes[s][0], H = shapes[s][1], W = shapes[s][2], S = shapes[s][3];
    int n = 13;
    uint8_t *src = malloc((size_t)n*C*H*W); for (size_t k=0;k<(size_t)n*C*H*W;k++) src[k]=rand()&255;
    float *dst = malloc(sizeof(float)*(size_t)n*C*S*S);
    float *boxes = malloc(sizeof(float)*4*n); uint8_t flip[13], gray[13]; int8_t ops[52]; float fac[52];
    for (int i=0;i<n;i++){ int w = 1 + rand()%W, h = 1 + rand()%H; boxes[4*i]=rand()%(W-w+1); boxes[4*i+1]=rand()%(H-h+1); boxes[4*i+2]=w; boxes[4*i+3]=h;
      flip[i]=rand()&3; gray[i]=rand()&1; int perm[4]={0,1,2,3}; for(int a=3;a>0;a--){int b=rand()%(a+1);int t=perm[a];perm[a]=perm[b];perm[b]=t;}
      for(int p=0;p<4;p++){ops[4*i+p]= (rand()%5==0)? -1 : perm[p]; fac[4*i+p]= p==3 ? ((rand()%100)/100.0f-0.5f) : (rand()%200)/100.0f;} }
    float mean[3]={0.5,0.5,0.5}, std[3]={0.25,0.25,0.25};
    for (int t=1;t<=3;t++) if (simsiam_augment(src,dst,n,C,H,W,S,boxes,flip,ops,fac,gray, t==2?NULL:mean, t==2?NULL:std,t)) { printf("fail\n"); return 1; }
    free(src); free(dst); free(boxes);
  }
  printf("ok\n"); return 0;
}
