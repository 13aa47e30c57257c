/*
 * avx512_simde.h - the AVX-512 intrinsics of src/kernels/x86_avx512/attention_avx512.c in portable
 * code, for a test build on a CPU without AVX-512 (CMake option IFA_EMULATE_AVX512, run by
 * scripts/emulated.sh). Tests only: never part of a release build.
 *
 * Why: on a host without AVX-512 the AVX-512 kernels are compiled but never run, so a change to
 * them would meet its first test on the next AVX-512 machine. QEMU's user mode does not emulate
 * AVX-512, so instead the kernel file is compiled against SIMDe (SIMD Everywhere, Debian's
 * libsimde-dev, header only), which implements the Intel intrinsics in C, here on top of AVX2.
 * What it checks: the kernels' logic (tiles, trees, masks, tails, the rows they read) against the
 * reference, as test_kernels and the other C tests do on a real AVX-512 CPU. What it cannot check:
 * the instructions GCC selects for the real ISA, and their speed.
 *
 * SIMDe 0.7.4 lacks some of the intrinsics the file uses; they are written below, following the
 * Intel SDM's definitions. The masked loads and stores touch only the enabled elements, as the
 * instructions do, so AddressSanitizer still sees a read past a row's end. Three intrinsics that
 * SIMDe has are replaced because its versions round differently from the instructions:
 * VSCALEFPS (one rounding, also into the subnormals), VDPBF16PS (inputs and outputs that are
 * subnormal count as 0) and VCVTNEPS2BF16 (round to nearest even, a subnormal input gives 0).
 */
#ifndef IFA_TESTS_AVX512_SIMDE_H
#define IFA_TESTS_AVX512_SIMDE_H

#include <immintrin.h> /* the __m512 ... types, which SIMDe then uses as its own */
#include <math.h>
#include <stdint.h>
#include <string.h>

#define SIMDE_ENABLE_NATIVE_ALIASES
#include <simde/x86/avx512.h>

#define EMU static inline

/* ---- masked loads and stores: element by element, only the enabled ones ------------------- */

#define EMU_MASKZ_LOAD(name, vec, elem, count, mask_t)                                          \
    EMU vec name(mask_t k, const void *p) {                                                     \
        elem r[count];                                                                          \
        for (int i = 0; i < (count); i++) {                                                     \
            r[i] = 0;                                                                           \
            if ((k >> i) & 1) memcpy(&r[i], (const char *)p + i * (int)sizeof(elem), sizeof(elem)); \
        }                                                                                       \
        vec v;                                                                                  \
        memcpy(&v, r, sizeof v);                                                                \
        return v;                                                                               \
    }
EMU_MASKZ_LOAD(emu_mm512_maskz_loadu_ps, __m512, float, 16, __mmask16)
EMU_MASKZ_LOAD(emu_mm512_maskz_loadu_epi16, __m512i, int16_t, 32, __mmask32)
EMU_MASKZ_LOAD(emu_mm256_maskz_loadu_epi16, __m256i, int16_t, 16, __mmask16)
EMU_MASKZ_LOAD(emu_mm256_maskz_loadu_epi8, __m256i, int8_t, 32, __mmask32)
EMU_MASKZ_LOAD(emu_mm_maskz_loadu_epi8, __m128i, int8_t, 16, __mmask16)
#undef EMU_MASKZ_LOAD

EMU __m512 emu_mm512_mask_loadu_ps(__m512 src, __mmask16 k, const void *p) {
    float r[16];
    memcpy(r, &src, sizeof r);
    for (int i = 0; i < 16; i++)
        if ((k >> i) & 1) memcpy(&r[i], (const char *)p + 4 * i, 4);
    memcpy(&src, r, sizeof r);
    return src;
}

EMU void emu_mm512_mask_storeu_ps(void *p, __mmask16 k, __m512 a) {
    float r[16];
    memcpy(r, &a, sizeof r);
    for (int i = 0; i < 16; i++)
        if ((k >> i) & 1) memcpy((char *)p + 4 * i, &r[i], 4);
}

EMU void emu_mm256_mask_storeu_epi16(void *p, __mmask16 k, __m256i a) {
    int16_t r[16];
    memcpy(r, &a, sizeof r);
    for (int i = 0; i < 16; i++)
        if ((k >> i) & 1) memcpy((char *)p + 2 * i, &r[i], 2);
}

/* ---- conversions --------------------------------------------------------------------------- */

/* 16 elements converted one by one, as each instruction defines it. */
#define EMU_CONVERT16(name, vout, tout, vin, tin, convert)                                      \
    EMU vout name(vin a) {                                                                      \
        tin x[16];                                                                              \
        tout r[16];                                                                             \
        memcpy(x, &a, sizeof x);                                                                \
        for (int i = 0; i < 16; i++) r[i] = convert(x[i]);                                      \
        vout v;                                                                                 \
        memcpy(&v, r, sizeof v);                                                                \
        return v;                                                                               \
    }
#define EMU_TRUNCATE16(x) ((int16_t)(uint16_t)(uint32_t)(x)) /* VPMOVDW */
#define EMU_TO_FLOAT(x) ((float)(x))                         /* the rounding mode, as VCVTDQ2PS */
#define EMU_WIDEN(x) ((int32_t)(x))                          /* VPMOVSXBD, VPMOVZXWD */
EMU_CONVERT16(emu_mm512_cvtepi32_epi16, __m256i, int16_t, __m512i, int32_t, EMU_TRUNCATE16)
EMU_CONVERT16(emu_mm512_cvtepi32_ps, __m512, float, __m512i, int32_t, EMU_TO_FLOAT)
EMU_CONVERT16(emu_mm512_cvtepi8_epi32, __m512i, int32_t, __m128i, int8_t, EMU_WIDEN)
EMU_CONVERT16(emu_mm512_cvtepu16_epi32, __m512i, int32_t, __m256i, uint16_t, EMU_WIDEN)
#undef EMU_CONVERT16

/* Two halves through F16C and AVX2, whose instructions give the same results per element. */
EMU __m512 emu_mm512_cvtph_ps(__m256i a) {
    __m256 h[2] = {_mm256_cvtph_ps(_mm256_castsi256_si128(a)),
                   _mm256_cvtph_ps(_mm256_extracti128_si256(a, 1))};
    __m512 v;
    memcpy(&v, h, sizeof v);
    return v;
}

#define emu_mm512_cvtps_ph(a, imm)                                                                    \
    __extension__({                                                                                   \
        __m256 h_[2];                                                                                 \
        const __m512 a_ = (a);                                                                        \
        memcpy(h_, &a_, sizeof h_);                                                                   \
        _mm256_set_m128i(_mm256_cvtps_ph(h_[1], (imm)), _mm256_cvtps_ph(h_[0], (imm)));               \
    })

EMU __m512i emu_mm512_cvtps_epi32(__m512 a) { /* out of range and NaN: 0x80000000, as VCVTPS2DQ */
    __m256 h[2];
    memcpy(h, &a, sizeof h);
    __m256i r[2] = {_mm256_cvtps_epi32(h[0]), _mm256_cvtps_epi32(h[1])};
    __m512i v;
    memcpy(&v, r, sizeof v);
    return v;
}

EMU int emu_is_subnormal(float x) { return x != 0.0f && fabsf(x) < 0x1p-126f; }
EMU float emu_daz(float x) { return emu_is_subnormal(x) ? copysignf(0.0f, x) : x; }

/* VCVTNEPS2BF16: round to nearest even; NaN stays a quiet NaN; a subnormal input gives a zero of
 * its sign (the SDM's DAZ). */
EMU __m256bh emu_mm512_cvtneps_pbh(__m512 a) {
    float x[16];
    uint16_t r[16];
    memcpy(x, &a, sizeof x);
    for (int i = 0; i < 16; i++) {
        uint32_t u;
        const float f = emu_daz(x[i]);
        memcpy(&u, &f, 4);
        if (f != f)
            r[i] = (uint16_t)((u >> 16) | 0x40);
        else
            r[i] = (uint16_t)((u + 0x7FFFu + ((u >> 16) & 1u)) >> 16);
    }
    __m256bh v;
    memcpy(&v, r, sizeof v);
    return v;
}

/* ---- arithmetic and shuffles ---------------------------------------------------------------- */

/* VSCALEFPS: a * 2^floor(b), rounded once (into the subnormals too); the special cases of the
 * SDM's table that attention_avx512.c can meet. */
EMU __m512 emu_mm512_scalef_ps(__m512 a, __m512 b) {
    float x[16], y[16], r[16];
    memcpy(x, &a, sizeof x);
    memcpy(y, &b, sizeof y);
    for (int i = 0; i < 16; i++) {
        if (x[i] != x[i] || y[i] != y[i])
            r[i] = x[i] + y[i];
        else if (isinf(y[i]))
            r[i] = y[i] > 0 ? (x[i] == 0.0f ? NAN : copysignf(INFINITY, x[i]))
                            : (isinf(x[i]) ? NAN : copysignf(0.0f, x[i]));
        else
            r[i] = scalbnf(x[i], (int)fmaxf(-400.0f, fminf(400.0f, floorf(y[i]))));
    }
    __m512 v;
    memcpy(&v, r, sizeof v);
    return v;
}

/* VDPBF16PS: per lane, acc += a_odd * b_odd, then acc += a_even * b_even, each rounded once to
 * nearest even; subnormal inputs and results count as 0 (the SDM's DAZ and FTZ). */
EMU __m512 emu_mm512_dpbf16_ps(__m512 src, __m512bh a, __m512bh b) {
    float acc[16];
    uint16_t x[32], y[32];
    memcpy(acc, &src, sizeof acc);
    memcpy(x, &a, sizeof x);
    memcpy(y, &b, sizeof y);
    for (int i = 0; i < 16; i++) {
        float s = emu_daz(acc[i]);
        for (int j = 1; j >= 0; j--) {
            const uint32_t ux = (uint32_t)x[2 * i + j] << 16, uy = (uint32_t)y[2 * i + j] << 16;
            float fx, fy;
            memcpy(&fx, &ux, 4);
            memcpy(&fy, &uy, 4);
            s = emu_daz(fmaf(emu_daz(fx), emu_daz(fy), s));
        }
        acc[i] = s;
    }
    __m512 v;
    memcpy(&v, acc, sizeof v);
    return v;
}

/* VFPCLASSPS: bit 0 QNaN, 1 +0, 2 -0, 3 +Inf, 4 -Inf, 5 subnormal, 6 negative finite, 7 SNaN. */
EMU __mmask16 emu_mm512_fpclass_ps_mask(__m512 a, int imm) {
    float x[16];
    memcpy(x, &a, sizeof x);
    unsigned m = 0;
    for (int i = 0; i < 16; i++) {
        uint32_t u;
        memcpy(&u, &x[i], 4);
        const int nan = x[i] != x[i], quiet = nan && (u & 0x00400000u);
        const int hit = ((imm & 0x01) && quiet) || ((imm & 0x80) && nan && !quiet) ||
                        ((imm & 0x02) && u == 0u) || ((imm & 0x04) && u == 0x80000000u) ||
                        ((imm & 0x08) && x[i] == INFINITY) || ((imm & 0x10) && x[i] == -INFINITY) ||
                        ((imm & 0x20) && emu_is_subnormal(x[i])) ||
                        ((imm & 0x40) && !nan && !isinf(x[i]) && (u >> 31));
        m |= (unsigned)hit << i;
    }
    return (__mmask16)m;
}

#define emu_mm512_mask_cmp_ps_mask(k, a, b, pred) \
    ((__mmask16)((k) & simde_mm512_cmp_ps_mask((a), (b), (pred))))

EMU __m512 emu_mm512_permute_ps(__m512 a, int imm) { /* VPERMILPS: within each 128-bit lane */
    float x[16], r[16];
    memcpy(x, &a, sizeof x);
    for (int i = 0; i < 16; i++) r[i] = x[(i & ~3) + ((imm >> (2 * (i & 3))) & 3)];
    __m512 v;
    memcpy(&v, r, sizeof v);
    return v;
}

/* GCC's sequence: halves, then quarters, then pairs, then elements, each step MAXPS (the second
 * operand where unordered). */
EMU float emu_mm512_reduce_max_ps(__m512 a) {
    float x[16];
    memcpy(x, &a, sizeof x);
    for (int w = 8; w >= 1; w /= 2)
        for (int i = 0; i < w; i++) x[i] = x[i] > x[i + w] ? x[i] : x[i + w];
    return x[0];
}

/* Route the names (SIMDe's aliases of these, where it has them, are replaced). */
#undef _mm512_maskz_loadu_ps
#define _mm512_maskz_loadu_ps emu_mm512_maskz_loadu_ps
#undef _mm512_maskz_loadu_epi16
#define _mm512_maskz_loadu_epi16 emu_mm512_maskz_loadu_epi16
#undef _mm256_maskz_loadu_epi16
#define _mm256_maskz_loadu_epi16 emu_mm256_maskz_loadu_epi16
#undef _mm256_maskz_loadu_epi8
#define _mm256_maskz_loadu_epi8 emu_mm256_maskz_loadu_epi8
#undef _mm_maskz_loadu_epi8
#define _mm_maskz_loadu_epi8 emu_mm_maskz_loadu_epi8
#undef _mm512_mask_loadu_ps
#define _mm512_mask_loadu_ps emu_mm512_mask_loadu_ps
#undef _mm512_mask_storeu_ps
#define _mm512_mask_storeu_ps emu_mm512_mask_storeu_ps
#undef _mm256_mask_storeu_epi16
#define _mm256_mask_storeu_epi16 emu_mm256_mask_storeu_epi16
#undef _mm512_cvtepi32_epi16
#define _mm512_cvtepi32_epi16 emu_mm512_cvtepi32_epi16
#undef _mm512_cvtepi32_ps
#define _mm512_cvtepi32_ps emu_mm512_cvtepi32_ps
#undef _mm512_cvtepi8_epi32
#define _mm512_cvtepi8_epi32 emu_mm512_cvtepi8_epi32
#undef _mm512_cvtepu16_epi32
#define _mm512_cvtepu16_epi32 emu_mm512_cvtepu16_epi32
#undef _mm512_cvtph_ps
#define _mm512_cvtph_ps emu_mm512_cvtph_ps
#undef _mm512_cvtps_ph
#define _mm512_cvtps_ph emu_mm512_cvtps_ph
#undef _mm512_cvtps_epi32
#define _mm512_cvtps_epi32 emu_mm512_cvtps_epi32
#undef _mm512_cvtneps_pbh
#define _mm512_cvtneps_pbh emu_mm512_cvtneps_pbh
#undef _mm512_scalef_ps
#define _mm512_scalef_ps emu_mm512_scalef_ps
#undef _mm512_dpbf16_ps
#define _mm512_dpbf16_ps emu_mm512_dpbf16_ps
#undef _mm512_fpclass_ps_mask
#define _mm512_fpclass_ps_mask emu_mm512_fpclass_ps_mask
#undef _mm512_mask_cmp_ps_mask
#define _mm512_mask_cmp_ps_mask emu_mm512_mask_cmp_ps_mask
#undef _mm512_permute_ps
#define _mm512_permute_ps emu_mm512_permute_ps
#undef _mm512_shuffle_f32x4 /* SIMDe has it, without its alias */
#define _mm512_shuffle_f32x4 simde_mm512_shuffle_f32x4
#undef _mm512_reduce_max_ps
#define _mm512_reduce_max_ps emu_mm512_reduce_max_ps

#endif /* IFA_TESTS_AVX512_SIMDE_H */
