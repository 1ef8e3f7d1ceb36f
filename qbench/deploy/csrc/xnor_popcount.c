/* qbench deploy: binary (+-1 x +-1) convolution and matrix product by xnor and popcount on bit-packed operands.
 *
 * Signs are bits: 1 for +1 (x >= 0), 0 for -1. For two +-1 vectors of length K packed this way,
 * dot(x, w) = K - 2 * popcount(x XOR w): every differing bit is a -1 product, every equal bit a +1.
 * Channels are packed along 64-bit words, padded with zero bits on both operands (XOR 0: never counted).
 * Zero padding of a convolution cannot be held by a +-1 operand, so a tap outside the image is masked out of
 * the popcount and out of K: the sum is over the taps the zero-padded float convolution multiplies by a
 * nonzero value, which is exactly its value. Built by qbench/deploy/kernel.py with -O3 -march=native -fopenmp;
 * GCC turns the popcount loops into VPOPCNTQ where the CPU has AVX-512 VPOPCNTDQ.
 */
#include <stdint.h>
#include <string.h>
#include <stdlib.h>
#ifdef _OPENMP
#include <omp.h>
#endif

/* rows x C floats (row-major) -> rows x cw words: bit c % 64 of word c / 64 is (x[c] >= 0) */
void qb_pack_signs(const float *x, int64_t rows, int64_t c, int64_t cw, uint64_t *out, int threads) {
    #pragma omp parallel for num_threads(threads) schedule(static)
    for (int64_t r = 0; r < rows; r++) {
        const float *xr = x + r * c;
        uint64_t *o = out + r * cw;
        for (int64_t w = 0; w < cw; w++) {
            uint64_t word = 0;
            int64_t base = w * 64, n = c - base < 64 ? c - base : 64;
            for (int64_t j = 0; j < n; j++) word |= (uint64_t)(xr[base + j] >= 0.0f) << j;
            o[w] = word;
        }
    }
}

static inline int64_t popcount_xor(const uint64_t *a, const uint64_t *b, int64_t n) {
    int64_t acc = 0;
    for (int64_t k = 0; k < n; k++) acc += __builtin_popcountll(a[k] ^ b[k]);
    return acc;
}

static inline int64_t popcount_xor_masked(const uint64_t *a, const uint64_t *b, const uint64_t *m, int64_t n) {
    int64_t acc = 0;
    for (int64_t k = 0; k < n; k++) acc += __builtin_popcountll((a[k] ^ b[k]) & m[k]);
    return acc;
}

/* out[m, o] = k_true - 2 popcount(a[m] ^ b[o]): a is m x kw words, b is o x kw words, out is m x o floats */
void qb_binary_gemm(const uint64_t *a, int64_t m, const uint64_t *b, int64_t o, int64_t kw, int64_t k_true,
                    float *out, int threads) {
    #pragma omp parallel for num_threads(threads) schedule(static)
    for (int64_t i = 0; i < m; i++)
        for (int64_t j = 0; j < o; j++)
            out[i * o + j] = (float)(k_true - 2 * popcount_xor(a + i * kw, b + j * kw, kw));
}

/* A +-1 convolution, groups = 1. x: n x h x w x cw words (the input's signs packed along channels, NHWC);
 * wt: oc x kh x kw x cw words; out: n x oc x oh x ow floats (NCHW), each the exact zero-padded convolution. */
void qb_binary_conv2d(const uint64_t *x, int64_t n, int64_t h, int64_t w, int64_t cw, int64_t c_true,
                      const uint64_t *wt, int64_t oc, int64_t kh, int64_t kw,
                      int64_t sh, int64_t sw, int64_t ph, int64_t pw, int64_t dh, int64_t dw,
                      int64_t oh, int64_t ow, float *out, int threads) {
    const int64_t taps = kh * kw, kwords = taps * cw;
    #pragma omp parallel num_threads(threads)
    {
        uint64_t *patch = (uint64_t *)malloc(sizeof(uint64_t) * kwords);
        uint64_t *mask = (uint64_t *)malloc(sizeof(uint64_t) * kwords);
        #pragma omp for schedule(static) collapse(2)
        for (int64_t b = 0; b < n; b++) {
            for (int64_t y = 0; y < oh; y++) {
                for (int64_t xo = 0; xo < ow; xo++) {
                    int64_t valid = 0;
                    for (int64_t i = 0; i < kh; i++) {
                        for (int64_t j = 0; j < kw; j++) {
                            int64_t iy = y * sh - ph + i * dh, ix = xo * sw - pw + j * dw;
                            uint64_t *p = patch + (i * kw + j) * cw, *q = mask + (i * kw + j) * cw;
                            if (iy >= 0 && iy < h && ix >= 0 && ix < w) {
                                memcpy(p, x + ((b * h + iy) * w + ix) * cw, sizeof(uint64_t) * cw);
                                memset(q, 0xff, sizeof(uint64_t) * cw);
                                valid++;
                            } else {
                                memset(p, 0, sizeof(uint64_t) * cw);
                                memset(q, 0, sizeof(uint64_t) * cw);
                            }
                        }
                    }
                    const int64_t k_valid = valid * c_true;
                    float *dst = out + ((b * oc) * oh + y) * ow + xo;
                    if (valid == taps) {
                        for (int64_t o = 0; o < oc; o++)
                            dst[o * oh * ow] = (float)(k_valid - 2 * popcount_xor(patch, wt + o * kwords, kwords));
                    } else {
                        for (int64_t o = 0; o < oc; o++)
                            dst[o * oh * ow] = (float)(k_valid - 2 * popcount_xor_masked(patch, wt + o * kwords,
                                                                                          mask, kwords));
                    }
                }
            }
        }
        free(patch);
        free(mask);
    }
}
