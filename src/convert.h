/*
 * convert.h - scalar conversions between the storage dtypes and float, with round-to-nearest-even
 * on every narrowing cast (SPEC.md 5: "cast with round-to-nearest-even").
 *
 * The conversions are bit manipulations rather than compiler casts so that they behave the same
 * on every target, with or without hardware half-precision support.
 */
#ifndef IFA_CONVERT_H
#define IFA_CONVERT_H

#include <stdint.h>
#include <string.h>

#include "ifa.h"

static inline float ifa__bits_to_f32(uint32_t u) {
    float f;
    memcpy(&f, &u, sizeof f);
    return f;
}
static inline uint32_t ifa__f32_to_bits(float f) {
    uint32_t u;
    memcpy(&u, &f, sizeof u);
    return u;
}

/* IEEE binary16 -> binary32, exact (subnormals, infinities and NaN included). */
static inline float ifa__f16_to_f32(uint16_t h) {
    const uint32_t sign = (uint32_t)(h & 0x8000u) << 16;
    const uint32_t exp = (h >> 10) & 0x1Fu;
    uint32_t mant = h & 0x3FFu;
    if (exp == 0x1Fu) return ifa__bits_to_f32(sign | 0x7F800000u | (mant << 13));
    if (exp != 0) return ifa__bits_to_f32(sign | ((exp + 112u) << 23) | (mant << 13));
    if (mant == 0) return ifa__bits_to_f32(sign);
    /* Subnormal half: value = mant * 2^-24, exactly representable as a float. */
    const float magnitude = (float)mant * (1.0f / 16777216.0f);
    return sign ? -magnitude : magnitude;
}

/* binary32 -> binary16 with round-to-nearest-even; overflow gives infinity, NaN stays NaN. */
uint16_t ifa__f32_to_f16(float f);

static inline float ifa__bf16_to_f32(uint16_t b) { return ifa__bits_to_f32((uint32_t)b << 16); }

/* binary32 -> bfloat16 with round-to-nearest-even; NaN stays a (quiet) NaN. */
static inline uint16_t ifa__f32_to_bf16(float f) {
    const uint32_t u = ifa__f32_to_bits(f);
    if ((u & 0x7FFFFFFFu) > 0x7F800000u) return (uint16_t)((u >> 16) | 0x40u);
    const uint32_t rounding = 0x7FFFu + ((u >> 16) & 1u);
    return (uint16_t)((u + rounding) >> 16);
}

/* Reads one element of a float or integer dtype as a double (used for parameters, not in hot
 * loops). uint64 is read as an integer; callers that want the Ascend "float bits in the low 32
 * bits" form use ifa__load_scale(). */
double ifa__load_as_double(const void *ptr, ifa_dtype dtype);

/* A float32 scale given as float32/float16/bfloat16 (by value) or as uint64 whose low 32 bits are
 * the bits of a float32 (the Ascend form of dequant/quant scales). */
float ifa__load_scale(const void *ptr, ifa_dtype dtype);

/* dst[i] = element i (i < n) of a row at p with the given element stride, as float32. Rows of
 * parameters, queries and scales are read through this, with the dtype switch outside the loop. */
void ifa__load_row_f32(const void *p, ifa_dtype dtype, int64_t stride, int64_t n, float *dst);

struct ifa__kernel_table;

/* The same, with a float16 row of unit stride converted by the kernel table's SIMD routine (the
 * query and scale rows of a call, the keys of a page summary): the scalar conversion took most of
 * a short call and of a whole-cache summary. */
void ifa__load_row_f32_simd(const struct ifa__kernel_table *kt, const void *p, ifa_dtype dtype, int64_t stride,
                            int64_t n, float *dst);

/* Stores n float32 values into a float16 / bfloat16 / float32 row (round to nearest even). */
void ifa__store_row_f32(void *p, ifa_dtype dtype, int64_t stride, int64_t n, const float *src);

/* 1.5 * 2^52: (y + it) - it rounds a double y to an integer, to nearest, ties to even (only the
 * integer part is left in the 52-bit fraction; exact for |y| < 2^51, in the default rounding
 * mode). */
#define IFA__ROUND_MAGIC 6755399441055744.0

/* Saturating round-half-even cast of a double to int8. NaN gives 0. Rounded by IFA__ROUND_MAGIC,
 * not nearbyint: without SSE4.1 that is a libm call per value, and per weight it made a fully
 * quantised call 1.1x slower. */
static inline int8_t ifa__sat_round_int8(double x) {
    double y = x == x ? x : 0.0;
    y = y > 127.0 ? 127.0 : y;
    y = y < -128.0 ? -128.0 : y;
    return (int8_t)((y + IFA__ROUND_MAGIC) - IFA__ROUND_MAGIC);
}

#endif /* IFA_CONVERT_H */
