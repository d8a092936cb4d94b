/* Bit-packed binary convolution and matrix product: the edge runtime's custom ops (C99, no dependencies).
 *
 * Activations are packed per pixel over channels (NHWC, 64 channels a word, least significant bit first, bit 1 =
 * sign +1, and sign(0) = +1); weights per output channel over (ky, kx, channel word). Unused high bits are 0 in
 * both operands, so they never mismatch, and a tap inside the image contributes
 *     sum over the c real channels of sign(x) * sign(w) = c - 2 * popcount(x ^ w).
 * Taps in the zero padding contribute 0, as in a float Conv on +-1 inputs: each output pixel's kernel window is
 * clipped to the image once (rows per output row, columns per output column), so the inner loops hold no per-tap
 * branch, and the kx taps of one kernel row are kw * CW contiguous words in both operands (NHWC).
 *
 * Loop order: blocks of MB output channels, whose weights are interleaved word by word into a small buffer that
 * stays in L1 (9 KB for 512 channels 3x3), then every output pixel, then kernel rows, then the row's words; the
 * innermost step takes one activation word against MB weight words, in vector registers: NEON vcntq_u8 on the
 * aarch64 boards, AVX-512 VPOPCNTQ on x86 processors that have it (-march=native), and __builtin_popcountll
 * elsewhere. GCC left to itself vectorizes over the row's words instead, which for 64 channels (3 words a row)
 * never leaves its scalar tail: the explicit AVX-512 path is about 4x faster over Bi-Real-18.
 */
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#if defined(__aarch64__)
#include <arm_neon.h>
#elif defined(__AVX512F__) && defined(__AVX512VPOPCNTDQ__)
#include <immintrin.h>
#endif

#define MB 16 /* output channels per pass */

#if defined(__aarch64__)
/* acc[j] += sum_i popcount(x[i] ^ wb[i * MB + j]). vcntq_u8 counts bits per byte; byte sums are widened every
 * 31 words (31 * 8 = 248 < 256), then to 32-bit lanes, then folded into each 64-bit channel lane. */
static inline void mismatch_row(const uint64_t *x, const uint64_t *wb, int64_t len, uint64_t acc[MB]) {
    uint32x4_t sums[MB / 2];
    for (int q = 0; q < MB / 2; q++) sums[q] = vdupq_n_u32(0);
    for (int64_t i0 = 0; i0 < len; i0 += 31) {
        const int64_t i1 = len < i0 + 31 ? len : i0 + 31;
        uint8x16_t bytes[MB / 2];
        for (int q = 0; q < MB / 2; q++) bytes[q] = vdupq_n_u8(0);
        for (int64_t i = i0; i < i1; i++) {
            const uint64x2_t xv = vdupq_n_u64(x[i]);
            for (int q = 0; q < MB / 2; q++) {
                const uint64x2_t diff = veorq_u64(xv, vld1q_u64(wb + i * MB + 2 * q));
                bytes[q] = vaddq_u8(bytes[q], vcntq_u8(vreinterpretq_u8_u64(diff)));
            }
        }
        for (int q = 0; q < MB / 2; q++) sums[q] = vpadalq_u16(sums[q], vpaddlq_u8(bytes[q]));
    }
    for (int q = 0; q < MB / 2; q++) {
        const uint64x2_t lanes = vpaddlq_u32(sums[q]);
        acc[2 * q] += vgetq_lane_u64(lanes, 0);
        acc[2 * q + 1] += vgetq_lane_u64(lanes, 1);
    }
}
#elif defined(__AVX512F__) && defined(__AVX512VPOPCNTDQ__)
/* acc[j] += sum_i popcount(x[i] ^ wb[i * MB + j]), eight channels to a VPOPCNTQ. */
static inline void mismatch_row(const uint64_t *x, const uint64_t *wb, int64_t len, uint64_t acc[MB]) {
    __m512i sums[MB / 8];
    for (int q = 0; q < MB / 8; q++) sums[q] = _mm512_loadu_si512(acc + 8 * q);
    for (int64_t i = 0; i < len; i++) {
        const __m512i xv = _mm512_set1_epi64((long long)x[i]);
        for (int q = 0; q < MB / 8; q++) {
            const __m512i diff = _mm512_xor_si512(xv, _mm512_loadu_si512(wb + i * MB + 8 * q));
            sums[q] = _mm512_add_epi64(sums[q], _mm512_popcnt_epi64(diff));
        }
    }
    for (int q = 0; q < MB / 8; q++) _mm512_storeu_si512(acc + 8 * q, sums[q]);
}
#else
/* acc[j] += sum_i popcount(x[i] ^ wb[i * MB + j]), one POPCNT (or its software form) per word. */
static inline void mismatch_row(const uint64_t *x, const uint64_t *wb, int64_t len, uint64_t acc[MB]) {
    for (int64_t i = 0; i < len; i++) {
        const uint64_t xv = x[i];
        for (int j = 0; j < MB; j++) acc[j] += (uint64_t)__builtin_popcountll(xv ^ wb[i * MB + j]);
    }
}
#endif

#define PACK_PIXELS 256 /* pixels per packing pass: their words (2 KB) stay in L1 while 64 channel planes stream */

/* Channel planes are read contiguously, PACK_PIXELS pixels at a time, each OR-ing one bit into every pixel's word
 * of a small buffer: a loop the compiler vectorizes; the finished words are then stored with the stride CW. */
void bnn_pack_nhwc(const float *x, int n, int c, int h, int w, uint64_t *out) {
    const int64_t cw = (c + 63) / 64, hw = (int64_t)h * w;
    uint64_t words[PACK_PIXELS];
    for (int64_t img = 0; img < n; img++) {
        const float *image = x + img * c * hw;
        uint64_t *packed = out + img * hw * cw;
        for (int64_t p0 = 0; p0 < hw; p0 += PACK_PIXELS) {
            const int64_t np = hw - p0 < PACK_PIXELS ? hw - p0 : PACK_PIXELS;
            for (int64_t g = 0; g < cw; g++) {
                memset(words, 0, sizeof words);
                const int bits = c - 64 * g < 64 ? (int)(c - 64 * g) : 64;
                for (int b = 0; b < bits; b++) {
                    const float *plane = image + (64 * g + b) * hw + p0;
                    for (int64_t p = 0; p < np; p++) words[p] |= (uint64_t)(plane[p] >= 0.0f) << b;
                }
                for (int64_t p = 0; p < np; p++) packed[(p0 + p) * cw + g] = words[p];
            }
        }
    }
}

/* The clipped kernel range [lo, hi) of one output coordinate whose window starts at input index `start`. */
static void clip(int start, int k, int size, int *lo, int *hi) {
    *lo = start < 0 ? -start : 0;
    *hi = start + k > size ? size - start : k;
    if (*hi < *lo) *hi = *lo; /* a window wholly in the padding: no taps */
}

/* On allocation failure every output is NaN (a real result is always an integer), for the caller to report. */
void bnn_conv2d(const uint64_t *xp, int n, int c, int h, int w, const uint64_t *wp, int m, int kh, int kw,
                int stride_h, int stride_w, int pad_h, int pad_w, float *y) {
    const int64_t cw = (c + 63) / 64, kwords = (int64_t)kh * kw * cw;
    const int oh = (h + 2 * pad_h - kh) / stride_h + 1, ow = (w + 2 * pad_w - kw) / stride_w + 1;
    uint64_t *block = malloc((size_t)(kwords * MB) * sizeof(uint64_t));
    int *cols = malloc((size_t)ow * 2 * sizeof(int));
    if (block == NULL || cols == NULL) {
        for (int64_t i = 0; i < (int64_t)n * m * oh * ow; i++) y[i] = NAN;
        free(block);
        free(cols);
        return;
    }
    for (int ox = 0; ox < ow; ox++) clip(ox * stride_w - pad_w, kw, w, &cols[2 * ox], &cols[2 * ox + 1]);

    for (int m0 = 0; m0 < m; m0 += MB) {
        const int mb = m - m0 < MB ? m - m0 : MB;
        for (int64_t i = 0; i < kwords; i++) {
            for (int j = 0; j < MB; j++) block[i * MB + j] = j < mb ? wp[(m0 + j) * kwords + i] : 0;
        }
        for (int64_t img = 0; img < n; img++) {
            const uint64_t *image = xp + img * h * w * cw;
            float *out = y + (img * m + m0) * oh * ow;
            for (int oy = 0; oy < oh; oy++) {
                const int iy = oy * stride_h - pad_h;
                int ky0, ky1;
                clip(iy, kh, h, &ky0, &ky1);
                for (int ox = 0; ox < ow; ox++) {
                    const int ix = ox * stride_w - pad_w, kx0 = cols[2 * ox], kx1 = cols[2 * ox + 1];
                    const int64_t len = (kx1 - kx0) * cw;
                    uint64_t acc[MB] = {0};
                    for (int ky = ky0; ky < ky1; ky++) {
                        const uint64_t *xr = image + ((int64_t)(iy + ky) * w + ix + kx0) * cw;
                        mismatch_row(xr, block + ((int64_t)ky * kw + kx0) * cw * MB, len, acc);
                    }
                    const int64_t bits = (int64_t)(ky1 - ky0) * (kx1 - kx0) * c; /* matches + mismatches */
                    for (int j = 0; j < mb; j++) {
                        out[((int64_t)j * oh + oy) * ow + ox] = (float)(bits - 2 * (int64_t)acc[j]);
                    }
                }
            }
        }
    }
    free(block);
    free(cols);
}

/* A matrix product is a 1x1 convolution of 1x1 images: x [n, k] is already NCHW with c = k, h = w = 1. */
void bnn_matmul(const float *x, int n, int k, const uint64_t *wp, int m, float *y) {
    uint64_t *xp = malloc((size_t)n * ((k + 63) / 64) * sizeof(uint64_t));
    if (xp == NULL) {
        for (int64_t i = 0; i < (int64_t)n * m; i++) y[i] = NAN;
        return;
    }
    bnn_pack_nhwc(x, n, k, 1, 1, xp);
    bnn_conv2d(xp, n, k, 1, 1, wp, m, 1, 1, 1, 1, 0, 0, y);
    free(xp);
}
