/* bnnflow's bit-packed kernels: the inner loops of the simulator (the edge runtime has its own, pipeline/edge/).
 *
 * Bits are packed 64 to a word, least significant bit first; padding bits are 0 in both operands, so they never
 * count as mismatches. popcount(xnor(x, w)) over K real bits = K - popcount(x ^ w).
 */
#include <stdint.h>

void xnor_popcount_gemm(const uint64_t *x, const uint64_t *w, int64_t rows, int64_t cols, int64_t words,
                        int64_t k, int32_t *out) {
    for (int64_t r = 0; r < rows; r++) {
        const uint64_t *xr = x + r * words;
        int32_t *o = out + r * cols;
        for (int64_t c = 0; c < cols; c++) {
            const uint64_t *wc = w + c * words;
            int64_t mismatches = 0;
            for (int64_t i = 0; i < words; i++) {
                mismatches += __builtin_popcountll(xr[i] ^ wc[i]);
            }
            o[c] = (int32_t)(k - mismatches);
        }
    }
}

/* Integer matrix product for multi-bit layers: x (rows, k) int32 codes, w (cols, k) int32 weights (transposed),
 * out (rows, cols) int64 accumulators. */
void int_gemm(const int32_t *x, const int32_t *w, int64_t rows, int64_t cols, int64_t k, int64_t *out) {
    for (int64_t r = 0; r < rows; r++) {
        const int32_t *xr = x + r * k;
        int64_t *o = out + r * cols;
        for (int64_t c = 0; c < cols; c++) {
            const int32_t *wc = w + c * k;
            int64_t acc = 0;
            for (int64_t i = 0; i < k; i++) {
                acc += (int64_t)xr[i] * wc[i];
            }
            o[c] = acc;
        }
    }
}
