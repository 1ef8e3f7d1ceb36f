/* qbench deploy: binary (+-1 x +-1) convolution and matrix product by xnor and popcount on bit-packed operands.
 *
 * Signs are bits: 1 for +1 (x >= 0), 0 for -1. For two +-1 vectors of length K packed this way,
 * dot(x, w) = K - 2 * popcount(x XOR w): every differing bit is a -1 product, every equal bit a +1.
 * Channels are packed along 64-bit words, padded with zero bits on both operands (XOR 0: never counted), and
 * every packed row is padded with zero words to a multiple of 8 words (one 512-bit vector).
 * Zero padding of a convolution cannot be held by a +-1 operand, so a tap outside the image is masked out of
 * the popcount and out of K: the sum is over the taps the zero-padded float convolution multiplies by a
 * nonzero value, which is exactly its value. Built by qbench/deploy/kernel.py with -O3 -march=native -fopenmp:
 * with AVX-512 VPOPCNTDQ the popcounts are VPOPCNTQ on 8 words at a time, four output channels per pass over
 * a patch; without it, the compiler's popcount of one word at a time.
 */
#include <stdint.h>
#include <string.h>
#include <stdlib.h>
#if defined(__AVX512F__) && defined(__AVX512VPOPCNTDQ__)
#include <immintrin.h>
#define QB_AVX512 1
#else
#define QB_AVX512 0
#endif

int qb_simd(void) { return QB_AVX512; }

/* 64 x 64 bit matrix transpose in place: bit j of a[i] becomes bit i of a[j] (block swaps of 32, 16, ... 1) */
static void transpose64(uint64_t a[64]) {
    uint64_t m = 0x00000000FFFFFFFFULL;
    for (int j = 32; j; j >>= 1, m ^= m << j) {
        for (int k = 0; k < 64; k = ((k | j) + 1) & ~j) {
            uint64_t t = ((a[k] >> j) ^ a[k | j]) & m;
            a[k] ^= t << j;
            a[k | j] ^= t;
        }
    }
}

/* bit p of the result, for p < n (n <= 64): x[p] >= t (up = 1) or x[p] <= t (up = 0) */
static inline uint64_t sign_mask(const float *x, int64_t n, float t, int up) {
    uint64_t m = 0;
#if QB_AVX512
    if (n == 64) {
        const __m512 z = _mm512_set1_ps(t);
        for (int q = 0; q < 4; q++) {
            __m512 v = _mm512_loadu_ps(x + 16 * q);
            m |= (uint64_t)(up ? _mm512_cmp_ps_mask(v, z, _CMP_GE_OQ) : _mm512_cmp_ps_mask(v, z, _CMP_LE_OQ)) << (16 * q);
        }
        return m;
    }
#endif
    for (int64_t p = 0; p < n; p++) m |= (uint64_t)(up ? x[p] >= t : x[p] <= t) << p;
    return m;
}

/* x: n x c x hw floats (NCHW, hw = 1 for a matrix) -> out: n x hw rows of out_stride words (>= ceil(c / 64));
 * bit c % 64 of word c / 64 of pixel p is (x[c, p] >= 0), the other bits and words 0 -- or, with thresholds,
 * x[c, p] >= thr[c] where up[c] is 1 and x[c, p] <= thr[c] where it is 0 (batch norm + sign, folded). Blocks of
 * 64 channels x 64 pixels: one mask per channel over the pixels, then a bit transpose gives each pixel's word. */
void qb_pack_signs_nchw(const float *x, int64_t n, int64_t c, int64_t hw, int64_t out_stride, uint64_t *out,
                        const float *thr, const int8_t *up, int threads) {
    const int64_t cw = (c + 63) / 64, pblocks = (hw + 63) / 64;
    #pragma omp parallel for num_threads(threads) schedule(static) collapse(2)
    for (int64_t b = 0; b < n; b++) {
        for (int64_t pb = 0; pb < pblocks; pb++) {
            const int64_t p0 = pb * 64, np = hw - p0 < 64 ? hw - p0 : 64;
            uint64_t a[64];
            for (int64_t p = 0; p < np; p++)
                memset(out + (b * hw + p0 + p) * out_stride + cw, 0, sizeof(uint64_t) * (out_stride - cw));
            for (int64_t wi = 0; wi < cw; wi++) {
                const int64_t c0 = wi * 64, nc = c - c0 < 64 ? c - c0 : 64;
                for (int64_t k = 0; k < nc; k++)
                    a[k] = sign_mask(x + (b * c + c0 + k) * hw + p0, np, thr ? thr[c0 + k] : 0.0f, up ? up[c0 + k] : 1);
                for (int64_t k = nc; k < 64; k++) a[k] = 0;
                transpose64(a);
                for (int64_t p = 0; p < np; p++) out[(b * hw + p0 + p) * out_stride + wi] = a[p];
            }
        }
    }
}

/* popcounts of (p ^ w_j) & m for four weight rows at once, k words (a multiple of 8) */
static inline void popcount4(const uint64_t *p, const uint64_t *m, const uint64_t *w0, const uint64_t *w1,
                             const uint64_t *w2, const uint64_t *w3, int64_t k, int64_t out[4]) {
#if QB_AVX512
    __m512i a0 = _mm512_setzero_si512(), a1 = a0, a2 = a0, a3 = a0;
    for (int64_t i = 0; i < k; i += 8) {
        __m512i v = _mm512_loadu_si512(p + i), mk = _mm512_loadu_si512(m + i);
        a0 = _mm512_add_epi64(a0, _mm512_popcnt_epi64(_mm512_and_si512(_mm512_xor_si512(v, _mm512_loadu_si512(w0 + i)), mk)));
        a1 = _mm512_add_epi64(a1, _mm512_popcnt_epi64(_mm512_and_si512(_mm512_xor_si512(v, _mm512_loadu_si512(w1 + i)), mk)));
        a2 = _mm512_add_epi64(a2, _mm512_popcnt_epi64(_mm512_and_si512(_mm512_xor_si512(v, _mm512_loadu_si512(w2 + i)), mk)));
        a3 = _mm512_add_epi64(a3, _mm512_popcnt_epi64(_mm512_and_si512(_mm512_xor_si512(v, _mm512_loadu_si512(w3 + i)), mk)));
    }
    out[0] = _mm512_reduce_add_epi64(a0); out[1] = _mm512_reduce_add_epi64(a1);
    out[2] = _mm512_reduce_add_epi64(a2); out[3] = _mm512_reduce_add_epi64(a3);
#else
    int64_t s0 = 0, s1 = 0, s2 = 0, s3 = 0;
    for (int64_t i = 0; i < k; i++) {
        s0 += __builtin_popcountll((p[i] ^ w0[i]) & m[i]); s1 += __builtin_popcountll((p[i] ^ w1[i]) & m[i]);
        s2 += __builtin_popcountll((p[i] ^ w2[i]) & m[i]); s3 += __builtin_popcountll((p[i] ^ w3[i]) & m[i]);
    }
    out[0] = s0; out[1] = s1; out[2] = s2; out[3] = s3;
#endif
}

/* the +-1 dot products of one packed patch (k words, masked by m) with every weight row (o rows, k apart),
 * written as k_valid - 2 popcount to dst[j * dst_stride] */
static void dot_rows(const uint64_t *patch, const uint64_t *mask, const uint64_t *wt, int64_t o, int64_t k,
                     int64_t k_valid, float *dst, int64_t dst_stride) {
    int64_t pc[4];
    int64_t j = 0;
    for (; j + 4 <= o; j += 4) {
        popcount4(patch, mask, wt + j * k, wt + (j + 1) * k, wt + (j + 2) * k, wt + (j + 3) * k, k, pc);
        for (int q = 0; q < 4; q++) dst[(j + q) * dst_stride] = (float)(k_valid - 2 * pc[q]);
    }
    for (; j < o; j++) {
        popcount4(patch, mask, wt + j * k, wt + j * k, wt + j * k, wt + j * k, k, pc);
        dst[j * dst_stride] = (float)(k_valid - 2 * pc[0]);
    }
}

/* out[i, j] = k_true - 2 popcount(a[i] ^ b[j]): a is m rows, b is o rows, both kw words apart (kw a multiple of 8) */
void qb_binary_gemm(const uint64_t *a, int64_t m, const uint64_t *b, int64_t o, int64_t kw, int64_t k_true,
                    float *out, int threads) {
    uint64_t *ones = (uint64_t *)malloc(sizeof(uint64_t) * kw);
    memset(ones, 0xff, sizeof(uint64_t) * kw);
    #pragma omp parallel for num_threads(threads) schedule(static)
    for (int64_t i = 0; i < m; i++) dot_rows(a + i * kw, ones, b, o, kw, k_true, out + i * o, 1);
    free(ones);
}

/* A +-1 convolution, groups = 1. x: n x h x w x cw words (the input's signs packed along channels, NHWC);
 * wt: oc rows of kpad words, each kh x kw x cw words then zero words up to kpad (a multiple of 8);
 * out: n x oc x oh x ow floats (NCHW), each the exact zero-padded convolution. */
void qb_binary_conv2d(const uint64_t *x, int64_t n, int64_t h, int64_t w, int64_t cw, int64_t c_true,
                      const uint64_t *wt, int64_t kpad, int64_t oc, int64_t kh, int64_t kw,
                      int64_t sh, int64_t sw, int64_t ph, int64_t pw, int64_t dh, int64_t dw,
                      int64_t oh, int64_t ow, float *out, int threads) {
    #pragma omp parallel num_threads(threads)
    {
        uint64_t *patch = (uint64_t *)calloc(kpad, sizeof(uint64_t));
        uint64_t *mask = (uint64_t *)calloc(kpad, sizeof(uint64_t));
        float *row = (float *)malloc(sizeof(float) * ow * oc);  /* one output row, pixel-major, then transposed */
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
                    dot_rows(patch, mask, wt, oc, kpad, valid * c_true, row + xo * oc, 1);
                }
                for (int64_t o = 0; o < oc; o++) {  /* contiguous writes: out[b, o, y, :] */
                    float *dst = out + ((b * oc + o) * oh + y) * ow;
                    for (int64_t xo = 0; xo < ow; xo++) dst[xo] = row[xo * oc + o];
                }
            }
        }
        free(patch);
        free(mask);
        free(row);
    }
}

/* max pooling without padding or dilation, planes x h x w -> planes x oh x ow (exact: a max of floats) */
void qb_max_pool2d(const float *x, int64_t planes, int64_t h, int64_t w, int64_t kh, int64_t kw, int64_t sh,
                   int64_t sw, int64_t oh, int64_t ow, float *out, int threads) {
    if (kh == 2 && kw == 2 && sh == 2 && sw == 2) {  /* the VGG pool: two rows at a time, vectorizable */
        #pragma omp parallel for num_threads(threads) schedule(static)
        for (int64_t pl = 0; pl < planes; pl++) {
            for (int64_t y = 0; y < oh; y++) {
                const float *r0 = x + pl * h * w + 2 * y * w, *r1 = r0 + w;
                float *dst = out + (pl * oh + y) * ow;
                for (int64_t xo = 0; xo < ow; xo++) {
                    float a = r0[2 * xo], b = r0[2 * xo + 1], c = r1[2 * xo], d = r1[2 * xo + 1];
                    float m = (b > a || b != b) ? b : a;
                    m = (c > m || c != c) ? c : m;
                    dst[xo] = (d > m || d != d) ? d : m;
                }
            }
        }
        return;
    }
    #pragma omp parallel for num_threads(threads) schedule(static)
    for (int64_t pl = 0; pl < planes; pl++) {
        const float *src = x + pl * h * w;
        float *dst = out + pl * oh * ow;
        for (int64_t y = 0; y < oh; y++) {
            for (int64_t xo = 0; xo < ow; xo++) {
                const float *s0 = src + (y * sh) * w + xo * sw;
                float m = s0[0];
                for (int64_t i = 0; i < kh; i++)
                    for (int64_t j = 0; j < kw; j++) {
                        float v = s0[i * w + j];
                        m = (v > m || v != v) ? v : m;  /* NaN propagates, as torch's max_pool2d */
                    }
                dst[y * ow + xo] = m;
            }
        }
    }
}
