/* Bit-packed binary convolution and matrix product: the edge runtime's custom ops (C99, no dependencies).
 *
 * Activations are packed per pixel over channels (NHWC, 64 channels a word, least significant bit first, bit 1 =
 * sign +1, and sign(0) = +1); weights per output channel over (ky, kx, channel word). Unused high bits are 0 in
 * both operands, so they never mismatch, and a tap inside the image contributes
 *     sum over the c real channels of sign(x) * sign(w) = c - 2 * popcount(x ^ w).
 * Taps in the zero padding contribute 0, as in a float Conv on +-1 inputs. Kernel rows in the padding are left out
 * (rows are clipped once per output row). Columns are not: each image row is copied between zero words, so every
 * kernel row is kw * CW contiguous words and the inner loops hold no branch; a zero word meets tap t's weights in
 * popcount(w_t) places, adding tapsum_t = c - 2 * popcount(w_t), which is subtracted again for the few pixels
 * whose window reaches into the side padding.
 *
 * Loop order: blocks of MB output channels, whose weights are interleaved word by word into a small buffer that
 * stays in L1 (9 KB for 512 channels 3x3), then runs of PX output pixels of one row, then kernel rows, then the
 * row's words; the innermost step takes one activation word against MB weight words, in vector registers: NEON
 * vcntq_u8 on the aarch64 boards, AVX-512 VPOPCNTQ on x86 processors that have it (-march=native), and
 * __builtin_popcountll elsewhere. GCC left to itself vectorizes over the row's words instead, which for 64
 * channels (3 words a row) never leaves its scalar tail.
 */
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#if defined(__aarch64__)
#include <arm_neon.h>
#elif defined(__AVX512F__) && defined(__AVX512VPOPCNTDQ__) && defined(__AVX512DQ__) && defined(__AVX512VL__)
#define HAVE_AVX512_BLOCK 1
#include <immintrin.h>
#endif

#define MB 16 /* output channels per pass */
#define PX 8  /* output pixels per pass, neighbours in one output row */

/* One pass's geometry: PX windows `step` words apart, `rows` kernel rows `xrow` words apart in the activations and
 * `wrow` in the weight block, `len` words each; `bits` = rows * kw * c, the taps' count if none were padding. */
typedef struct {
    const uint64_t *x, *wb;
    int64_t step, xrow, wrow, len, bits;
    int rows;
} window;

/* Where a pass's results go, and the optional epilogue: y = (sum - pad) * scale[j] + bias[j] + res[i], with pad
 * the padded taps' share (NULL: none), a folded BatchNorm and a residual add in the order the float graph computes
 * them. NULL leaves a part out, so a bare conv stays an exact integer. out and res start at the pass's first
 * pixel of channel 0; channel j is `ostride` floats further. */
typedef struct {
    float *out;
    const float *scale, *bias, *res;
    const int64_t *pad; /* [PX][MB] */
    int64_t ostride;
    int mb, npx;
} results;

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
#elif defined(HAVE_AVX512_BLOCK)
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

/* Eight floats per row, 8x8 transposed: rows[p] holds channels 0..7 of pixel p, and leaves holding pixels 0..7
 * of channel p. */
static inline void transpose8(__m256 rows[8]) {
    __m256 t[8], u[8];
    for (int i = 0; i < 4; i++) {
        t[2 * i] = _mm256_unpacklo_ps(rows[2 * i], rows[2 * i + 1]);
        t[2 * i + 1] = _mm256_unpackhi_ps(rows[2 * i], rows[2 * i + 1]);
    }
    for (int i = 0; i < 2; i++) {
        for (int k = 0; k < 2; k++) {
            u[4 * i + 2 * k] = _mm256_shuffle_ps(t[4 * i + k], t[4 * i + 2 + k], _MM_SHUFFLE(1, 0, 1, 0));
            u[4 * i + 2 * k + 1] = _mm256_shuffle_ps(t[4 * i + k], t[4 * i + 2 + k], _MM_SHUFFLE(3, 2, 3, 2));
        }
    }
    for (int i = 0; i < 4; i++) {
        rows[i] = _mm256_permute2f128_ps(u[i], u[4 + i], 0x20);
        rows[4 + i] = _mm256_permute2f128_ps(u[i], u[4 + i], 0x31);
    }
}

/* All PX pixels of a pass at once: each weight word is loaded once for all of them, the PX x MB sums stay in
 * registers over every kernel row, and the results leave as one masked 8-float store per channel, transposed in
 * registers (scalar stores of the sums cost as much as the popcounts for 64-channel layers). Pixels past npx are
 * computed on the row's slack words and not stored. */
static inline void conv_block(const window *win, const results *r) {
    __m512i sums[PX][MB / 8];
    for (int p = 0; p < PX; p++)
        for (int q = 0; q < MB / 8; q++) sums[p][q] = _mm512_setzero_si512();
    for (int k = 0; k < win->rows; k++) {
        const uint64_t *xr = win->x + k * win->xrow, *wr = win->wb + k * win->wrow;
        for (int64_t i = 0; i < win->len; i++) {
            __m512i wv[MB / 8];
            for (int q = 0; q < MB / 8; q++) wv[q] = _mm512_loadu_si512(wr + i * MB + 8 * q);
            for (int p = 0; p < PX; p++) {
                const __m512i xv = _mm512_set1_epi64((long long)xr[p * win->step + i]);
                for (int q = 0; q < MB / 8; q++)
                    sums[p][q] = _mm512_add_epi64(sums[p][q], _mm512_popcnt_epi64(_mm512_xor_si512(xv, wv[q])));
            }
        }
    }
    const __m512i bits = _mm512_set1_epi64(win->bits);
    const __mmask8 mask = (__mmask8)((1u << r->npx) - 1);
    for (int q = 0; q < MB / 8 && 8 * q < r->mb; q++) {
        __m256 v[PX];
        for (int p = 0; p < PX; p++) {
            __m512i sum = _mm512_sub_epi64(bits, _mm512_slli_epi64(sums[p][q], 1));
            if (r->pad != NULL) sum = _mm512_sub_epi64(sum, _mm512_loadu_si512(r->pad + p * MB + 8 * q));
            v[p] = _mm512_cvtepi64_ps(sum);
        }
        transpose8(v);
        for (int j = 0; j < 8 && 8 * q + j < r->mb; j++) {
            const int ch = 8 * q + j;
            if (r->scale != NULL)
                v[j] = _mm256_add_ps(_mm256_mul_ps(v[j], _mm256_set1_ps(r->scale[ch])), _mm256_set1_ps(r->bias[ch]));
            if (r->res != NULL) v[j] = _mm256_add_ps(v[j], _mm256_maskz_loadu_ps(mask, r->res + ch * r->ostride));
            _mm256_mask_storeu_ps(r->out + ch * r->ostride, mask, v[j]);
        }
    }
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

/* A pass one pixel at a time: the form for NEON (whose byte counters leave no registers for more pixels) and
 * portable builds, and for short passes anywhere. */
static void conv_pixels(const window *win, const results *r) {
    for (int p = 0; p < r->npx; p++) {
        uint64_t acc[MB] = {0};
        for (int k = 0; k < win->rows; k++)
            mismatch_row(win->x + p * win->step + k * win->xrow, win->wb + k * win->wrow, win->len, acc);
        for (int j = 0; j < r->mb; j++) {
            float v = (float)(win->bits - 2 * (int64_t)acc[j] - (r->pad != NULL ? r->pad[p * MB + j] : 0));
            if (r->scale != NULL) v = v * r->scale[j] + r->bias[j];
            if (r->res != NULL) v += r->res[j * r->ostride + p];
            r->out[j * r->ostride + p] = v;
        }
    }
}

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

/* The sizes of one convolution, and its scratch buffers. */
typedef struct {
    int n, c, h, m, kh, kw, stride_h, stride_w, pad_h, oh, ow;
    int64_t cw, wpad;
    const int *cols;  /* [ow][2]: each output column's kernel columns inside the image */
    uint64_t *block;  /* [kh * kw * CW][MB]: one block of MB filters, interleaved word by word */
    int64_t *tapsum;  /* [kh * kw][MB]: what a tap on a zero word adds, c - 2 * popcount(w_t) */
    int64_t *padtab;  /* [passes][PX][MB]: the side padding's share of each pass's pixels */
    int *padded;      /* [passes]: whether a pass reaches into the side padding */
} conv_plan;

/* Fill padtab for output rows whose kernel rows are [ky0, ky1): only a row's first and last passes can reach
 * into the side padding, once per block and per distinct row clipping (top, bottom and the rest). */
static void side_padding(const conv_plan *cp, int ky0, int ky1) {
    for (int pass = 0, ox0 = 0; ox0 < cp->ow; pass++, ox0 += PX) {
        const int npx = cp->ow - ox0 < PX ? cp->ow - ox0 : PX;
        int64_t *pad = cp->padtab + (int64_t)pass * PX * MB;
        cp->padded[pass] = cp->cols[2 * ox0] > 0 || cp->cols[2 * (ox0 + npx - 1) + 1] < cp->kw;
        if (!cp->padded[pass]) continue;
        memset(pad, 0, PX * MB * sizeof(int64_t));
        for (int p = 0; p < npx; p++) {
            const int kx0 = cp->cols[2 * (ox0 + p)], kx1 = cp->cols[2 * (ox0 + p) + 1];
            for (int ky = ky0; ky < ky1; ky++) {
                for (int kx = 0; kx < cp->kw; kx++) {
                    if (kx >= kx0 && kx < kx1) continue;
                    for (int j = 0; j < MB; j++) pad[p * MB + j] += cp->tapsum[((int64_t)ky * cp->kw + kx) * MB + j];
                }
            }
        }
    }
}

static void conv_all(const conv_plan *cp, const uint64_t *xpad, const uint64_t *wp, const float *scale,
                     const float *bias, const float *res, float *y) {
    const int64_t cw = cp->cw, kwords = (int64_t)cp->kh * cp->kw * cw, plane = (int64_t)cp->oh * cp->ow;
    for (int m0 = 0; m0 < cp->m; m0 += MB) {
        const int mb = cp->m - m0 < MB ? cp->m - m0 : MB;
        for (int64_t i = 0; i < kwords; i++) {
            for (int j = 0; j < MB; j++) cp->block[i * MB + j] = j < mb ? wp[(m0 + j) * kwords + i] : 0;
        }
        for (int64_t t = 0; t < (int64_t)cp->kh * cp->kw; t++) {
            for (int j = 0; j < MB; j++) {
                int64_t ones = 0;
                for (int64_t i = 0; i < cw; i++) ones += __builtin_popcountll(cp->block[(t * cw + i) * MB + j]);
                cp->tapsum[t * MB + j] = cp->c - 2 * ones;
            }
        }
        int pad_ky0 = -1, pad_ky1 = -1; /* the kernel rows padtab was filled for */
        for (int64_t img = 0; img < cp->n; img++) {
            const int64_t base = (img * cp->m + m0) * plane; /* this block's offset in y and res */
            for (int oy = 0; oy < cp->oh; oy++) {
                const int iy = oy * cp->stride_h - cp->pad_h;
                int ky0, ky1;
                clip(iy, cp->kh, cp->h, &ky0, &ky1);
                if (ky0 != pad_ky0 || ky1 != pad_ky1) {
                    side_padding(cp, ky0, ky1);
                    pad_ky0 = ky0;
                    pad_ky1 = ky1;
                }
                for (int pass = 0, ox0 = 0; ox0 < cp->ow; pass++, ox0 += PX) {
                    const int npx = cp->ow - ox0 < PX ? cp->ow - ox0 : PX;
                    const int64_t at = base + (int64_t)oy * cp->ow + ox0;
                    const window win = {xpad + ((img * cp->h + iy + ky0) * cp->wpad + (int64_t)ox0 * cp->stride_w) * cw,
                                        cp->block + (int64_t)ky0 * cp->kw * cw * MB, (int64_t)cp->stride_w * cw,
                                        cp->wpad * cw, (int64_t)cp->kw * cw * MB, (int64_t)cp->kw * cw,
                                        (int64_t)(ky1 - ky0) * cp->kw * cp->c, ky1 - ky0};
                    const results r = {y + at, scale != NULL ? scale + m0 : NULL, bias != NULL ? bias + m0 : NULL,
                                       res != NULL ? res + at : NULL,
                                       cp->padded[pass] ? cp->padtab + (int64_t)pass * PX * MB : NULL, plane, mb, npx};
#if defined(HAVE_AVX512_BLOCK)
                    if (2 * npx > PX) {
                        conv_block(&win, &r);
                        continue;
                    }
#endif
                    conv_pixels(&win, &r);
                }
            }
        }
    }
}

/* y = conv(x, w), then the epilogue when scale / bias (per output channel, both or neither) or res (shaped like y)
 * are given. On allocation failure every output is NaN (a real result is never NaN), for the caller to report. */
void bnn_conv2d(const uint64_t *xp, int n, int c, int h, int w, const uint64_t *wp, int m, int kh, int kw,
                int stride_h, int stride_w, int pad_h, int pad_w, const float *scale, const float *bias,
                const float *res, float *y) {
    const int oh = (h + 2 * pad_h - kh) / stride_h + 1, ow = (w + 2 * pad_w - kw) / stride_w + 1;
    const int64_t cw = (c + 63) / 64, passes = (ow + PX - 1) / PX;
    /* a padded row: pad_w zero pixels each side, and slack for the last pass's unstored pixels */
    const int64_t wpad = (int64_t)w + 2 * pad_w + (int64_t)(PX - 1) * stride_w;
    int *cols = malloc((size_t)ow * 2 * sizeof(int));
    conv_plan cp = {n, c, h, m, kh, kw, stride_h, stride_w, pad_h, oh, ow, cw, wpad, cols,
                    malloc((size_t)(kh * kw * cw * MB) * sizeof(uint64_t)),
                    malloc((size_t)kh * kw * MB * sizeof(int64_t)),
                    malloc((size_t)(passes * PX * MB) * sizeof(int64_t)),
                    malloc((size_t)passes * sizeof(int))};
    uint64_t *xpad = calloc((size_t)((int64_t)n * h * wpad * cw), sizeof(uint64_t));
    if (cols == NULL || cp.block == NULL || cp.tapsum == NULL || cp.padtab == NULL || cp.padded == NULL ||
        xpad == NULL) {
        for (int64_t i = 0; i < (int64_t)n * m * oh * ow; i++) y[i] = NAN;
    } else {
        for (int64_t row = 0; row < (int64_t)n * h; row++) {
            memcpy(xpad + (row * wpad + pad_w) * cw, xp + row * w * cw, (size_t)(w * cw) * sizeof(uint64_t));
        }
        for (int ox = 0; ox < ow; ox++) clip(ox * stride_w - pad_w, kw, w, &cols[2 * ox], &cols[2 * ox + 1]);
        conv_all(&cp, xpad, wp, scale, bias, res, y);
    }
    free(cols);
    free(cp.block);
    free(cp.tapsum);
    free(cp.padtab);
    free(cp.padded);
    free(xpad);
}

/* A matrix product is a 1x1 convolution of 1x1 images: x [n, k] is already NCHW with c = k, h = w = 1. */
void bnn_matmul(const float *x, int n, int k, const uint64_t *wp, int m, float *y) {
    uint64_t *xp = malloc((size_t)n * ((k + 63) / 64) * sizeof(uint64_t));
    if (xp == NULL) {
        for (int64_t i = 0; i < (int64_t)n * m; i++) y[i] = NAN;
        return;
    }
    bnn_pack_nhwc(x, n, k, 1, 1, xp);
    bnn_conv2d(xp, n, k, 1, 1, wp, m, 1, 1, 1, 1, 0, 0, NULL, NULL, NULL, y);
    free(xp);
}
