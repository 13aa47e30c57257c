/*
 * convert.c - the out-of-line scalar conversions of convert.h.
 *
 * These run on parameters and on the output (once per element), never per KV element, so
 * clarity wins over speed here. The KV conversions live in the kernels.
 */
#include "convert.h"

#include "kernels/kernels.h"

uint16_t ifa__f32_to_f16(float f) {
    const uint32_t u = ifa__f32_to_bits(f);
    const uint16_t sign = (uint16_t)((u >> 16) & 0x8000u);
    const uint32_t abs = u & 0x7FFFFFFFu;
    if (abs > 0x7F800000u) return (uint16_t)(sign | 0x7E00u); /* NaN */
    if (abs >= 0x477FF000u) return (uint16_t)(sign | 0x7C00u); /* rounds to >= 65520: inf */
    if (abs < 0x38800000u) {
        /* Result is a half subnormal (or zero): value / 2^-24 rounded to an integer. Adding and
         * subtracting 0.5f (2^-1) in float aligns the bits so the FPU's own round-to-nearest-even
         * does the rounding. */
        const float scaled = ifa__bits_to_f32(abs) + 0.5f;
        return (uint16_t)(sign | (uint16_t)(ifa__f32_to_bits(scaled) - 0x3F000000u));
    }
    /* Normal: rebias the exponent and round the 13 dropped mantissa bits to nearest even. */
    const uint32_t mant_odd = (abs >> 13) & 1u;
    const uint32_t rounded = abs + 0xC8000FFFu + mant_odd; /* -(112 << 23) + 0xFFF + odd */
    return (uint16_t)(sign | (uint16_t)(rounded >> 13));
}

double ifa__load_as_double(const void *ptr, ifa_dtype dtype) {
    switch (dtype) {
    case IFA_DTYPE_FLOAT16: {
        uint16_t h;
        memcpy(&h, ptr, sizeof h);
        return ifa__f16_to_f32(h);
    }
    case IFA_DTYPE_BFLOAT16: {
        uint16_t h;
        memcpy(&h, ptr, sizeof h);
        return ifa__bf16_to_f32(h);
    }
    case IFA_DTYPE_FLOAT32: {
        float f;
        memcpy(&f, ptr, sizeof f);
        return f;
    }
    case IFA_DTYPE_FLOAT64: {
        double d;
        memcpy(&d, ptr, sizeof d);
        return d;
    }
    case IFA_DTYPE_INT8: return *(const int8_t *)ptr;
    case IFA_DTYPE_UINT8:
    case IFA_DTYPE_BOOL: return *(const uint8_t *)ptr;
    case IFA_DTYPE_INT16: {
        int16_t v;
        memcpy(&v, ptr, sizeof v);
        return v;
    }
    case IFA_DTYPE_INT32: {
        int32_t v;
        memcpy(&v, ptr, sizeof v);
        return v;
    }
    case IFA_DTYPE_INT64: {
        int64_t v;
        memcpy(&v, ptr, sizeof v);
        return (double)v;
    }
    case IFA_DTYPE_UINT64: {
        uint64_t v;
        memcpy(&v, ptr, sizeof v);
        return (double)v;
    }
    default: return 0.0;
    }
}

float ifa__load_scale(const void *ptr, ifa_dtype dtype) {
    if (dtype == IFA_DTYPE_UINT64) {
        uint64_t v;
        memcpy(&v, ptr, sizeof v);
        return ifa__bits_to_f32((uint32_t)(v & 0xFFFFFFFFu));
    }
    return (float)ifa__load_as_double(ptr, dtype);
}

void ifa__load_row_f32(const void *p, ifa_dtype dtype, int64_t stride, int64_t n, float *dst) {
    const char *base = (const char *)p;
    switch (dtype) {
    case IFA_DTYPE_FLOAT32:
        for (int64_t i = 0; i < n; i++) memcpy(&dst[i], base + i * stride * 4, sizeof(float));
        break;
    case IFA_DTYPE_FLOAT16:
        for (int64_t i = 0; i < n; i++) {
            uint16_t h;
            memcpy(&h, base + i * stride * 2, sizeof h);
            dst[i] = ifa__f16_to_f32(h);
        }
        break;
    case IFA_DTYPE_BFLOAT16:
        for (int64_t i = 0; i < n; i++) {
            uint16_t h;
            memcpy(&h, base + i * stride * 2, sizeof h);
            dst[i] = ifa__bf16_to_f32(h);
        }
        break;
    case IFA_DTYPE_INT8:
        for (int64_t i = 0; i < n; i++) dst[i] = (float)((const int8_t *)base)[i * stride];
        break;
    default: {
        const int64_t es = (int64_t)ifa_dtype_size(dtype);
        for (int64_t i = 0; i < n; i++) dst[i] = (float)ifa__load_as_double(base + i * stride * es, dtype);
        break;
    }
    }
}

void ifa__load_row_f32_simd(const ifa__kernel_table *kt, const void *p, ifa_dtype dtype, int64_t stride, int64_t n,
                            float *dst) {
    if (dtype == IFA_DTYPE_FLOAT16 && stride == 1)
        kt->f16_to_f32(p, n, dst);
    else if (dtype == IFA_DTYPE_FLOAT32 && stride == 1) /* the strided loop copies one by one */
        memcpy(dst, p, sizeof(float) * (size_t)n);
    else
        ifa__load_row_f32(p, dtype, stride, n, dst);
}

void ifa__store_row_f32(void *p, ifa_dtype dtype, int64_t stride, int64_t n, const float *src) {
    char *base = (char *)p;
    switch (dtype) {
    case IFA_DTYPE_FLOAT16:
        for (int64_t i = 0; i < n; i++) {
            const uint16_t h = ifa__f32_to_f16(src[i]);
            memcpy(base + i * stride * 2, &h, sizeof h);
        }
        break;
    case IFA_DTYPE_BFLOAT16:
        for (int64_t i = 0; i < n; i++) {
            const uint16_t h = ifa__f32_to_bf16(src[i]);
            memcpy(base + i * stride * 2, &h, sizeof h);
        }
        break;
    default:
        for (int64_t i = 0; i < n; i++) memcpy(base + i * stride * 4, &src[i], sizeof(float));
        break;
    }
}
