/*
 * attention_ref.c - the scalar reference kernels of kernels.h, for every KV dtype.
 *
 * Clear before fast: one loop nest per family, any strides. qk accumulates in double so the
 * reference stays well inside the float32 tolerance of SPEC.md 11 even at long head sizes; pv
 * accumulates in float32 like the state it updates. The ISA kernels are tested against these.
 */
#include <math.h>
#include <string.h>

#include "../../convert.h"
#include "../kernels.h"

static inline float load_f16(const void *base, int64_t i) {
    uint16_t h;
    memcpy(&h, (const char *)base + i * 2, sizeof h);
    return ifa__f16_to_f32(h);
}
static inline float load_bf16(const void *base, int64_t i) {
    uint16_t h;
    memcpy(&h, (const char *)base + i * 2, sizeof h);
    return ifa__bf16_to_f32(h);
}
static inline float load_f32(const void *base, int64_t i) {
    float f;
    memcpy(&f, (const char *)base + i * 4, sizeof f);
    return f;
}
static inline float load_i8(const void *base, int64_t i) { return (float)((const int8_t *)base)[i]; }

/* One definition per dtype from a template, so the four stay identical but for the load. */
#define IFA__DEFINE_REF_KERNELS(suffix, load)                                                         \
    static void qk_##suffix(const float *q, int64_t G, int64_t D, const void *const *rows, int64_t d_stride,  \
                            int64_t n, float *scores, int64_t ld, ifa__prefetch_list prefetch) {              \
        (void)prefetch;                                                                                      \
        for (int64_t i = 0; i < n; i++) {                                                                    \
            for (int64_t g = 0; g < G; g++) {                                                                \
                double sum = 0.0;                                                                            \
                const float *qg = q + g * D;                                                                 \
                for (int64_t d = 0; d < D; d++) sum += (double)qg[d] * (double)load(rows[i], d * d_stride); \
                scores[g * ld + i] = (float)sum;                                                             \
            }                                                                                                \
        }                                                                                                    \
    }                                                                                                        \
    static void pv_##suffix(const float *p, int64_t ld, int64_t G, int64_t D, const void *const *rows,       \
                            int64_t d_stride, int64_t n, float *acc, ifa__prefetch_list prefetch) {          \
        (void)prefetch;                                                                                      \
        for (int64_t i = 0; i < n; i++) {                                                                    \
            for (int64_t g = 0; g < G; g++) {                                                                \
                const float pi = p[g * ld + i];                                                              \
                float *ag = acc + g * D;                                                                     \
                for (int64_t d = 0; d < D; d++) ag[d] += pi * load(rows[i], d * d_stride);                  \
            }                                                                                                \
        }                                                                                                    \
    }

IFA__DEFINE_REF_KERNELS(f16, load_f16)
IFA__DEFINE_REF_KERNELS(bf16, load_bf16)
IFA__DEFINE_REF_KERNELS(f32, load_f32)
IFA__DEFINE_REF_KERNELS(i8, load_i8)

/* int32 like the SIMD kernels: the caller's bound on q16 keeps the sum from overflowing. */
static void qk_i8_q16_ref(const int16_t *q16, const float *qscale, int64_t G, int64_t D, const void *const *rows,
                          int64_t n, float *scores, int64_t ld, ifa__prefetch_list prefetch) {
    (void)prefetch;
    for (int64_t i = 0; i < n; i++) {
        const int8_t *k = (const int8_t *)rows[i];
        for (int64_t g = 0; g < G; g++) {
            int32_t sum = 0;
            for (int64_t d = 0; d < D; d++) sum += (int32_t)q16[g * D + d] * (int32_t)k[d];
            scores[g * ld + i] = qscale[g] * (float)sum;
        }
    }
}

static void qk_bf16_qbf16_ref(const uint16_t *qb, int64_t G, int64_t D, const void *const *rows, int64_t n,
                              float *scores, int64_t ld, ifa__prefetch_list prefetch) {
    (void)prefetch;
    for (int64_t i = 0; i < n; i++)
        for (int64_t g = 0; g < G; g++) {
            double sum = 0.0;
            for (int64_t d = 0; d < D; d++)
                sum += (double)ifa__bf16_to_f32(qb[g * D + d]) * (double)load_bf16(rows[i], d);
            scores[g * ld + i] = (float)sum;
        }
}

static void softmax_ref(float *s, int64_t ld, int64_t G, int64_t n, float *m, float *l, float *alpha) {
    for (int64_t g = 0; g < G; g++) {
        float *sg = s + g * ld;
        float mx = m[g];
        for (int64_t i = 0; i < n; i++) mx = sg[i] > mx ? sg[i] : mx;
        alpha[g] = m[g] == -INFINITY ? 0.0f : expf(m[g] - mx);
        /* All scores so far -inf: their weights are 0 (exp(-inf)), not exp(-inf - -inf) = NaN; a
         * later finite score then starts the sum. attend.c turns an all -inf head into NaN. */
        const float base = mx == -INFINITY ? 0.0f : mx;
        float sum = 0.0f;
        for (int64_t i = 0; i < n; i++) {
            sg[i] = expf(sg[i] - base);
            sum += sg[i];
        }
        l[g] = l[g] * alpha[g] + sum;
        m[g] = mx;
    }
}

/* kernels.h's fixed-point P.V, in the same float operations as the SIMD kernels (nearbyintf
 * rounds half to even in the default rounding mode; fmaf is exact-then-round, like VFMADD). */
static void pv_i8_q16_ref(const float *p, int64_t ld, int64_t G, int64_t D, const void *const *rows, int64_t n,
                          float *acc, ifa__prefetch_list prefetch) {
    for (int64_t g = 0; g < G; g++)
        for (int64_t i = 0; i < n; i++)
            if (!isfinite(p[g * ld + i])) {
                pv_i8(p, ld, G, D, rows, 1, n, acc, prefetch);
                return;
            }
    for (int64_t g = 0; g < G; g++) {
        const float *pg = p + g * ld;
        float a = 0.0f;
        for (int64_t i = 0; i < n; i++) a = fabsf(pg[i]) > a ? fabsf(pg[i]) : a;
        if (a == 0.0f) continue;
        const float s = 32767.0f / a, inv = a / 32767.0f;
        for (int64_t d = 0; d < D; d++) {
            int32_t sum = 0;
            for (int64_t i = 0; i < n; i++) sum += (int32_t)nearbyintf(pg[i] * s) * ((const int8_t *)rows[i])[d];
            acc[g * D + d] = fmaf(inv, (float)sum, acc[g * D + d]);
        }
    }
}

/* kernels.h's bfloat16-weight P.V: the weights rounded to bfloat16, then as pv_bf16. */
static void pv_bf16_pbf16_ref(const float *p, int64_t ld, int64_t G, int64_t D, const void *const *rows,
                              int64_t n, float *acc, ifa__prefetch_list prefetch) {
    (void)prefetch;
    for (int64_t i = 0; i < n; i++)
        for (int64_t g = 0; g < G; g++) {
            const float pi = ifa__bf16_to_f32(ifa__f32_to_bf16(p[g * ld + i]));
            for (int64_t d = 0; d < D; d++) acc[g * D + d] += pi * load_bf16(rows[i], d);
        }
}

static void f16_to_f32_ref(const void *src, int64_t n, float *dst) {
    for (int64_t i = 0; i < n; i++) dst[i] = load_f16(src, i);
}

static void f32_to_f16_ref(const float *src, int64_t n, void *dst) {
    for (int64_t i = 0; i < n; i++) {
        const uint16_t h = ifa__f32_to_f16(src[i]);
        memcpy((char *)dst + i * 2, &h, sizeof h);
    }
}

static void mul_row_ref(const float *src, float f, int64_t n, float *dst) {
    for (int64_t i = 0; i < n; i++) dst[i] = src[i] * f;
}

static void div_row_ref(const float *src, float f, int64_t n, float *dst) {
    for (int64_t i = 0; i < n; i++) dst[i] = src[i] / f;
}

const ifa__kernel_table ifa__kernels_ref = {
    .isa = "ref",
    .qk = {[IFA__KV_F16] = qk_f16, [IFA__KV_BF16] = qk_bf16, [IFA__KV_F32] = qk_f32, [IFA__KV_I8] = qk_i8},
    .pv = {[IFA__KV_F16] = pv_f16, [IFA__KV_BF16] = pv_bf16, [IFA__KV_F32] = pv_f32, [IFA__KV_I8] = pv_i8},
    .qk_i8_q16 = qk_i8_q16_ref,
    .qk_bf16_qbf16 = qk_bf16_qbf16_ref,
    .pv_i8_q16 = pv_i8_q16_ref,
    .pv_bf16_pbf16 = pv_bf16_pbf16_ref,
    .softmax = softmax_ref,
    .f16_to_f32 = f16_to_f32_ref,
    .f32_to_f16 = f32_to_f16_ref,
    .mul_row = mul_row_ref,
    .div_row = div_row_ref,
    .needs_unit_d_stride = 0,
    .split_tokens_wide = 0,
    .heavy_i8_small_windows = 0,
    .bf16_swapped_quads = 0,
};
