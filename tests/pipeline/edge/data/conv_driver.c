/* Runs bnn_conv2d once on a case file, for the aarch64 build of the edge kernel under qemu-user.
 *
 *     conv_driver CASE OUT
 *
 * CASE: 13 int32 (n c h w m kh kw stride_h stride_w pad_h pad_w affine residual), then x (float32 NCHW), the
 * packed weights (uint64 [m][kh * kw * ceil(c / 64)]) and, if affine, scale and bias (float32 [m] each).
 * OUT: y, float32 NCHW. Prints the kernel path it was built with. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

void bnn_pack_nhwc(const float *x, int n, int c, int h, int w, uint64_t *out);
void bnn_conv2d(const uint64_t *xp, int n, int c, int h, int w, const uint64_t *wp, int m, int kh, int kw,
                int stride_h, int stride_w, int pad_h, int pad_w, const float *scale, const float *bias,
                const float *res, float *y);

static void *read_array(FILE *f, size_t count, size_t size) {
    void *data = malloc(count * size);
    if (data == NULL || fread(data, size, count, f) != count) exit(2);
    return data;
}

int main(int argc, char **argv) {
    if (argc != 3) return 2;
    FILE *f = fopen(argv[1], "rb");
    if (f == NULL) return 2;
    int32_t p[13];
    if (fread(p, sizeof p[0], 13, f) != 13) return 2;
    const int n = p[0], c = p[1], h = p[2], w = p[3], m = p[4], kh = p[5], kw = p[6];
    const int oh = (h + 2 * p[9] - kh) / p[7] + 1, ow = (w + 2 * p[10] - kw) / p[8] + 1, cw = (c + 63) / 64;
    float *x = read_array(f, (size_t)n * c * h * w, sizeof(float));
    uint64_t *wp = read_array(f, (size_t)m * kh * kw * cw, sizeof(uint64_t));
    float *scale = p[11] ? read_array(f, (size_t)m, sizeof(float)) : NULL;
    float *bias = p[11] ? read_array(f, (size_t)m, sizeof(float)) : NULL;
    fclose(f);
    uint64_t *xp = malloc((size_t)n * h * w * cw * sizeof(uint64_t));
    float *y = malloc((size_t)n * m * oh * ow * sizeof(float));
    if (xp == NULL || y == NULL) return 2;
    bnn_pack_nhwc(x, n, c, h, w, xp);
    bnn_conv2d(xp, n, c, h, w, wp, m, kh, kw, p[7], p[8], p[9], p[10], scale, bias, p[12] ? x : NULL, y);
    FILE *out = fopen(argv[2], "wb");
    if (out == NULL || fwrite(y, sizeof(float), (size_t)n * m * oh * ow, out) != (size_t)n * m * oh * ow) return 2;
    fclose(out);
#if defined(__aarch64__) && defined(__ARM_NEON)
    puts("neon");
#else
    puts("portable");
#endif
    return 0;
}
