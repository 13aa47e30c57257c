/*
 * attention_avx512.c - the kernels of kernels.h for AVX-512 (F, BW, DQ, VL), for every KV dtype.
 *
 * Decode attention reads each K and V row once and does 2*G*D multiply-adds per token, so with
 * float16 K/V, G = 4 and D = 128 the float32 FMAs alone take about 0.9 of the time the memory
 * system needs to deliver the rows. Every instruction beside the FMAs therefore costs speed,
 * and the kernels are shaped to keep them few:
 *
 * qk  scores[g][i] = q[g] . K[i]. A tile is 16 rows and up to 4 heads. The 16 rows go in four
 *     groups of four; a group keeps 4 rows x 4 heads = 16 zmm accumulators, so each K vector
 *     converted to float32 feeds 4 FMAs and each q vector loaded feeds 4 FMAs (half a load per
 *     FMA). Dot products are never reduced one by one with a horizontal sum (that costs about as
 *     much as the FMAs themselves); instead the 16 partial vectors of one head are reduced
 *     together by a transpose-add tree of 15 shuffle+add steps, whose result is the 16 scores in
 *     one register:
 *
 *         group t holds rows t, t+4, t+8, t+12 (in its slots j = 0..3)
 *         level 1+2 (per group, 128-bit shuffles):   4 vectors -> 1, lane j = 4 partials of slot j
 *         level 3+4 (4 groups, in-lane unpacks):     4 vectors -> 1, element 4j+t = row t+4j
 *
 *     so the rows are assigned to slots such that the tree's output is already in row order.
 *     Rows past n point at row n-1 (valid memory) and their lanes are masked off at the store,
 *     so the tile never needs a second, scalar code path. Before each group the kernel issues
 *     its share of the prefetch list (1/4 per tile), so misses stay in flight at an even rate.
 *
 * pv  acc[g][d] += sum_i p[g][i] V[i][d]. The D axis goes in slices of 64 floats (4 zmm) and the
 *     heads in blocks of up to 4, so 16 accumulators stay in registers across all n rows of the
 *     chunk (loaded and stored once per call); each V vector converted feeds 4 FMAs, each
 *     broadcast weight 4 FMAs. D tails use masked loads and stores, never a scalar loop. The
 *     first two head blocks are written out rather than looped over, and the row pointer is
 *     opaque to the optimiser (opaque_pointer): both cost G = 5-8 up to a quarter of pv's speed
 *     in GCC 12's code.
 *
 * softmax  heads in blocks of up to 16, each over its n <= 64 scores (4 zmm): max, a polynomial exp,
 *     sum. When no score passes a head's finite running maximum (most windows after the first
 *     few) the maximum's reduction and the alpha exp are skipped: alpha is exp(0) = 1 exactly.
 *     The exps of four heads go side by side, and the heads' sums are reduced together by the
 *     qk tree (sum_each), not one horizontal sum per head.
 *     The exp is Cephes' expf (Cody-Waite reduction, degree-5 polynomial, about 1 ulp) with
 *     VSCALEFPS to apply 2^n, which rounds once into the subnormal range and gives exactly 0 far
 *     below it.
 *
 * Conversions: float16 by VCVTPH2PS; bfloat16 by zero-extending to 32 bits and shifting left 16
 * (exact, and cheaper in accuracy than VDPBF16PS, which would round q to bfloat16: see the note
 * at qk below); int8 by sign extension and VCVTDQ2PS (exact). Every kernel here requires
 * d_stride == 1 (the table says so; attend.c then falls back to the reference kernels).
 */
#if defined(IFA_AVX512_EMULATED)
#include "avx512_simde.h" /* a test build on a CPU without AVX-512 (tests/emulated/avx512_simde.h) */
#else
#include <immintrin.h>
#endif
#include <math.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "../kernels.h"

#define IFA__INLINE static inline __attribute__((always_inline))

/* acc += the sums of adjacent int16 products of a and b (VPDPWSSD), in place. GCC 12 compiled the
 * intrinsic in pv_pairs' loop with a copy of every accumulator into another register and back
 * around each instruction, and two of them spilled: 32 moves per 16 VPDPWSSD. The asm statement
 * ties the accumulator to one register. Measured in L1, int8 P.V at G = 4: 6.2 -> 4.3 ns per row;
 * G = 8: 13 -> 8.7. (VDPBF16PS does not suffer from it here, so its intrinsic stays.) */
IFA__INLINE __m512i dpwssd_acc(__m512i acc, __m512i a, __m512i b) {
#if defined(__GNUC__) && !defined(IFA_AVX512_EMULATED)
    __asm__("vpdpwssd %2, %1, %0" : "+v"(acc) : "v"(a), "v"(b));
    return acc;
#else
    return _mm512_dpwssd_epi32(acc, a, b);
#endif
}

/* Hides the value of *p from the optimiser. GCC otherwise splits "row + constant offset" into
 * the row and one loop-invariant offset per vector of the slice, keeps those offsets in
 * registers, and at G = 8 runs out of them: each load then reloads its offset from the stack.
 * Opaque, the row stays one register and every load a displacement from it. */
IFA__INLINE void opaque_pointer(const char **p) {
#if defined(__GNUC__)
    __asm__("" : "+r"(*p));
#else
    (void)p;
#endif
}

/* ---- Loads: 16 elements of a row as float32 ------------------------------------------------- */

/* The dtype is a compile-time constant at every call site (the kernels below are instantiated per
 * dtype through always-inline functions), so the switch folds away. */
IFA__INLINE int elem_size(const int kind) {
    return kind == IFA__KV_F32 ? 4 : kind == IFA__KV_I8 ? 1 : 2;
}

IFA__INLINE __m512 load16(const int kind, const char *p) {
    switch (kind) {
    case IFA__KV_F16: return _mm512_cvtph_ps(_mm256_loadu_si256((const __m256i *)p));
    case IFA__KV_BF16:
        return _mm512_castsi512_ps(
            _mm512_slli_epi32(_mm512_cvtepu16_epi32(_mm256_loadu_si256((const __m256i *)p)), 16));
    case IFA__KV_F32: return _mm512_loadu_ps(p);
    default: return _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(_mm_loadu_si128((const __m128i *)p)));
    }
}

/* The same with the lanes outside mask read as 0 (and not read at all: AVX-512 masked loads do
 * not fault on masked-off elements, so a tail never touches memory past the row). */
IFA__INLINE __m512 load16_mask(const int kind, const char *p, __mmask16 m) {
    switch (kind) {
    case IFA__KV_F16: return _mm512_cvtph_ps(_mm256_maskz_loadu_epi16(m, p));
    case IFA__KV_BF16:
        return _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(_mm256_maskz_loadu_epi16(m, p)), 16));
    case IFA__KV_F32: return _mm512_maskz_loadu_ps(m, p);
    default: return _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(_mm_maskz_loadu_epi8(m, p)));
    }
}

IFA__INLINE __mmask16 tail_mask(int64_t count) { return (__mmask16)((1u << count) - 1u); }

/* ---- qk ----------------------------------------------------------------------------------- */

/* Levels 1 and 2 of the tree: four partial vectors (one per row slot) -> one vector whose 128-bit
 * lane j holds four partial sums of slot j. Only 128-bit shuffles (VSHUFF32X4), one cycle each. */
IFA__INLINE __m512 tree12(__m512 a, __m512 b, __m512 c, __m512 d) {
    const __m512 ab = _mm512_add_ps(_mm512_shuffle_f32x4(a, b, _MM_SHUFFLE(1, 0, 1, 0)),
                                    _mm512_shuffle_f32x4(a, b, _MM_SHUFFLE(3, 2, 3, 2)));
    const __m512 cd = _mm512_add_ps(_mm512_shuffle_f32x4(c, d, _MM_SHUFFLE(1, 0, 1, 0)),
                                    _mm512_shuffle_f32x4(c, d, _MM_SHUFFLE(3, 2, 3, 2)));
    return _mm512_add_ps(_mm512_shuffle_f32x4(ab, cd, _MM_SHUFFLE(2, 0, 2, 0)),
                         _mm512_shuffle_f32x4(ab, cd, _MM_SHUFFLE(3, 1, 3, 1)));
}

/* Levels 3 and 4: the level-2 vectors of groups 0..3 -> element 4j+t = total of group t, slot j. */
IFA__INLINE __m512 tree34(__m512 e0, __m512 e1, __m512 e2, __m512 e3) {
    const __m512 f01 = _mm512_add_ps(_mm512_unpacklo_ps(e0, e1), _mm512_unpackhi_ps(e0, e1));
    const __m512 f23 = _mm512_add_ps(_mm512_unpacklo_ps(e2, e3), _mm512_unpackhi_ps(e2, e3));
    const __m512d lo = _mm512_unpacklo_pd(_mm512_castps_pd(f01), _mm512_castps_pd(f23));
    const __m512d hi = _mm512_unpackhi_pd(_mm512_castps_pd(f01), _mm512_castps_pd(f23));
    return _mm512_add_ps(_mm512_castpd_ps(lo), _mm512_castpd_ps(hi));
}

/* VDPBF16PS for bfloat16 K halves the qk instructions but rounds q (which has the score scale
 * folded in) to bfloat16, an extra relative error of 2^-9 per product: inside the bfloat16
 * tolerance of SPEC.md 11 at inner_precise = 1 only, so qk_tile stays exact and the VDPBF16PS
 * kernel (qk_bf16_qbf16 below) serves inner_precise = 1. */

/* One tile: 16 rows (row pointers given, already clamped to valid rows) x GB heads. q points at
 * head g0's query, scores at scores[g0][i0]; smask selects the rows that exist. */
IFA__INLINE void qk_tile(const int kind, const int GB, const float *q, int64_t D, const char *const *rows,
                         float *scores, int64_t ld, __mmask16 smask, ifa__prefetch_stream *ps,
                         int64_t per_group) {
    const int es = elem_size(kind);
    const int64_t Dv = D & ~(int64_t)15;
    __m512 part[4][4]; /* [head][group]: level-2 results */
    for (int t = 0; t < 4; t++) {
        /* Group t: rows t, t+4, t+8, t+12 in slots 0..3 (see the file comment). */
        const char *r0 = rows[t], *r1 = rows[t + 4], *r2 = rows[t + 8], *r3 = rows[t + 12];
        ifa__prefetch_next(ps, per_group);
        /* The query behind an opaque pointer in every group: otherwise GCC hoists all G*D/16 query
         * vectors out of the group loop, spills them, and reads each back as the memory operand
         * of every FMA that uses it, four loads where one does, which with the K loads kept the
         * load ports busy. Measured in L1: G = 4 5.8 -> 5.0 ns per row; qk_bf16q_tile at G = 7
         * 6.95 -> 5.15, qk_q16_tile 5.4 -> 5.1 (docs/benchmarks.md). */
        const char *qg = (const char *)q;
        opaque_pointer(&qg);
        __m512 acc[4][4];
        for (int g = 0; g < GB; g++)
            for (int j = 0; j < 4; j++) acc[g][j] = _mm512_setzero_ps();
        for (int64_t d = 0; d < Dv; d += 16) {
            const __m512 k0 = load16(kind, r0 + d * es), k1 = load16(kind, r1 + d * es);
            const __m512 k2 = load16(kind, r2 + d * es), k3 = load16(kind, r3 + d * es);
            for (int g = 0; g < GB; g++) {
                const __m512 qv = _mm512_loadu_ps((const float *)qg + g * D + d);
                acc[g][0] = _mm512_fmadd_ps(qv, k0, acc[g][0]);
                acc[g][1] = _mm512_fmadd_ps(qv, k1, acc[g][1]);
                acc[g][2] = _mm512_fmadd_ps(qv, k2, acc[g][2]);
                acc[g][3] = _mm512_fmadd_ps(qv, k3, acc[g][3]);
            }
        }
        if (Dv < D) {
            const __mmask16 m = tail_mask(D - Dv);
            const __m512 k0 = load16_mask(kind, r0 + Dv * es, m), k1 = load16_mask(kind, r1 + Dv * es, m);
            const __m512 k2 = load16_mask(kind, r2 + Dv * es, m), k3 = load16_mask(kind, r3 + Dv * es, m);
            for (int g = 0; g < GB; g++) {
                const __m512 qv = _mm512_maskz_loadu_ps(m, (const float *)qg + g * D + Dv);
                acc[g][0] = _mm512_fmadd_ps(qv, k0, acc[g][0]);
                acc[g][1] = _mm512_fmadd_ps(qv, k1, acc[g][1]);
                acc[g][2] = _mm512_fmadd_ps(qv, k2, acc[g][2]);
                acc[g][3] = _mm512_fmadd_ps(qv, k3, acc[g][3]);
            }
        }
        for (int g = 0; g < GB; g++) part[g][t] = tree12(acc[g][0], acc[g][1], acc[g][2], acc[g][3]);
    }
    for (int g = 0; g < GB; g++)
        _mm512_mask_storeu_ps(scores + g * ld, smask, tree34(part[g][0], part[g][1], part[g][2], part[g][3]));
}

/* ---- qk, int8 K on an int16 query (VPDPWSSD) ---------------------------------------------- */

/* The trees above in int32: the same shuffles, integer adds (the partial sums are exact). */
IFA__INLINE __m512i tree12i(__m512i a, __m512i b, __m512i c, __m512i d) {
    const __m512i ab = _mm512_add_epi32(_mm512_shuffle_i32x4(a, b, _MM_SHUFFLE(1, 0, 1, 0)),
                                        _mm512_shuffle_i32x4(a, b, _MM_SHUFFLE(3, 2, 3, 2)));
    const __m512i cd = _mm512_add_epi32(_mm512_shuffle_i32x4(c, d, _MM_SHUFFLE(1, 0, 1, 0)),
                                        _mm512_shuffle_i32x4(c, d, _MM_SHUFFLE(3, 2, 3, 2)));
    return _mm512_add_epi32(_mm512_shuffle_i32x4(ab, cd, _MM_SHUFFLE(2, 0, 2, 0)),
                            _mm512_shuffle_i32x4(ab, cd, _MM_SHUFFLE(3, 1, 3, 1)));
}

IFA__INLINE __m512i tree34i(__m512i e0, __m512i e1, __m512i e2, __m512i e3) {
    const __m512i f01 = _mm512_add_epi32(_mm512_unpacklo_epi32(e0, e1), _mm512_unpackhi_epi32(e0, e1));
    const __m512i f23 = _mm512_add_epi32(_mm512_unpacklo_epi32(e2, e3), _mm512_unpackhi_epi32(e2, e3));
    return _mm512_add_epi32(_mm512_unpacklo_epi64(f01, f23), _mm512_unpackhi_epi64(f01, f23));
}

/* 32 int8 of a row sign-extended to int16 (masked: lanes outside m are 0 and not read). */
IFA__INLINE __m512i load32_i8(const int8_t *p, __mmask32 m) {
    return _mm512_cvtepi8_epi16(_mm256_maskz_loadu_epi8(m, p));
}

/* As qk_tile: 16 rows x GB heads, 4 groups of 4 rows, 16 int32 accumulators, 32 elements of D per
 * step, two products per lane per VPDPWSSD. */
IFA__INLINE void qk_q16_tile(const int GB, const int16_t *q, const float *qscale, int64_t D,
                             const char *const *rows, float *scores, int64_t ld, __mmask16 smask,
                             ifa__prefetch_stream *ps, int64_t per_group) {
    const int64_t Dv = D & ~(int64_t)31;
    __m512i part[4][4];
    for (int t = 0; t < 4; t++) {
        const int8_t *r0 = (const int8_t *)rows[t], *r1 = (const int8_t *)rows[t + 4];
        const int8_t *r2 = (const int8_t *)rows[t + 8], *r3 = (const int8_t *)rows[t + 12];
        ifa__prefetch_next(ps, per_group);
        const char *qg = (const char *)q; /* opaque: see qk_tile */
        opaque_pointer(&qg);
        __m512i acc[4][4];
        for (int g = 0; g < GB; g++)
            for (int j = 0; j < 4; j++) acc[g][j] = _mm512_setzero_si512();
        for (int64_t d = 0; d < D; d += 32) {
            const __mmask32 m = d < Dv ? (__mmask32)0xFFFFFFFFu : (__mmask32)((1ull << (D - d)) - 1u);
            const __m512i k0 = load32_i8(r0 + d, m), k1 = load32_i8(r1 + d, m);
            const __m512i k2 = load32_i8(r2 + d, m), k3 = load32_i8(r3 + d, m);
            for (int g = 0; g < GB; g++) {
                const __m512i qv = _mm512_maskz_loadu_epi16(m, (const int16_t *)qg + g * D + d);
                acc[g][0] = dpwssd_acc(acc[g][0], qv, k0);
                acc[g][1] = dpwssd_acc(acc[g][1], qv, k1);
                acc[g][2] = dpwssd_acc(acc[g][2], qv, k2);
                acc[g][3] = dpwssd_acc(acc[g][3], qv, k3);
            }
        }
        for (int g = 0; g < GB; g++) part[g][t] = tree12i(acc[g][0], acc[g][1], acc[g][2], acc[g][3]);
    }
    for (int g = 0; g < GB; g++) {
        const __m512 sc = _mm512_cvtepi32_ps(tree34i(part[g][0], part[g][1], part[g][2], part[g][3]));
        _mm512_mask_storeu_ps(scores + g * ld, smask, _mm512_mul_ps(_mm512_set1_ps(qscale[g]), sc));
    }
}

/* ---- qk, bfloat16 K on a bfloat16 query (VDPBF16PS) ---------------------------------------- */

/* As qk_tile, 32 elements of D per step, two products per lane per VDPBF16PS. */
IFA__INLINE void qk_bf16q_tile(const int GB, const uint16_t *q, int64_t D, const char *const *rows, float *scores,
                               int64_t ld, __mmask16 smask, ifa__prefetch_stream *ps, int64_t per_group) {
    const int64_t Dv = D & ~(int64_t)31;
    __m512 part[4][4];
    for (int t = 0; t < 4; t++) {
        const uint16_t *r0 = (const uint16_t *)rows[t], *r1 = (const uint16_t *)rows[t + 4];
        const uint16_t *r2 = (const uint16_t *)rows[t + 8], *r3 = (const uint16_t *)rows[t + 12];
        ifa__prefetch_next(ps, per_group);
        const char *qg = (const char *)q; /* opaque: see qk_tile */
        opaque_pointer(&qg);
        __m512 acc[4][4];
        for (int g = 0; g < GB; g++)
            for (int j = 0; j < 4; j++) acc[g][j] = _mm512_setzero_ps();
        for (int64_t d = 0; d < D; d += 32) {
            const __mmask32 m = d < Dv ? (__mmask32)0xFFFFFFFFu : (__mmask32)((1ull << (D - d)) - 1u);
            const __m512bh k0 = (__m512bh)_mm512_maskz_loadu_epi16(m, r0 + d);
            const __m512bh k1 = (__m512bh)_mm512_maskz_loadu_epi16(m, r1 + d);
            const __m512bh k2 = (__m512bh)_mm512_maskz_loadu_epi16(m, r2 + d);
            const __m512bh k3 = (__m512bh)_mm512_maskz_loadu_epi16(m, r3 + d);
            for (int g = 0; g < GB; g++) {
                const __m512bh qv = (__m512bh)_mm512_maskz_loadu_epi16(m, (const uint16_t *)qg + g * D + d);
                acc[g][0] = _mm512_dpbf16_ps(acc[g][0], qv, k0);
                acc[g][1] = _mm512_dpbf16_ps(acc[g][1], qv, k1);
                acc[g][2] = _mm512_dpbf16_ps(acc[g][2], qv, k2);
                acc[g][3] = _mm512_dpbf16_ps(acc[g][3], qv, k3);
            }
        }
        for (int g = 0; g < GB; g++) part[g][t] = tree12(acc[g][0], acc[g][1], acc[g][2], acc[g][3]);
    }
    for (int g = 0; g < GB; g++)
        _mm512_mask_storeu_ps(scores + g * ld, smask, tree34(part[g][0], part[g][1], part[g][2], part[g][3]));
}

/* ---- qk, the driver of all three forms ------------------------------------------------------ */

/* The qk forms beside the float ones (whose form is the KV kind itself). */
#define QK_Q16 IFA__KV_KIND_COUNT        /* int8 K, int16 query (qk_q16_tile) */
#define QK_BF16Q (IFA__KV_KIND_COUNT + 1) /* bfloat16 K, bfloat16 query (qk_bf16q_tile) */

/* One tile of GB heads from head g0 on, in the form `form` (a compile-time constant at every call
 * site): q is float, int16 or bfloat16 accordingly; qscale serves QK_Q16 only. */
IFA__INLINE void qk_form_tile(const int form, const int GB, const void *q, const float *qscale, int64_t g0,
                              int64_t D, const char *const *rows, float *scores, int64_t ld, __mmask16 smask,
                              ifa__prefetch_stream *ps, int64_t per_group) {
    if (form == QK_Q16)
        qk_q16_tile(GB, (const int16_t *)q + g0 * D, qscale + g0, D, rows, scores, ld, smask, ps, per_group);
    else if (form == QK_BF16Q)
        qk_bf16q_tile(GB, (const uint16_t *)q + g0 * D, D, rows, scores, ld, smask, ps, per_group);
    else
        qk_tile(form, GB, (const float *)q + g0 * D, D, rows, scores, ld, smask, ps, per_group);
}

/* Tiles of 16 rows (the last repeats its last row, masked at the store) by blocks of 4 heads and
 * a remainder of 1-3. Before each group of 4 rows a tile issues its share of the prefetch list
 * (the first head block of a tile only), so misses stay in flight at an even rate. */
IFA__INLINE void qk_drive_g(const int form, const void *q, const float *qscale, const int64_t G, const int64_t D,
                            const void *const *krows, int64_t n, float *scores, int64_t ld,
                            ifa__prefetch_list prefetch) {
    ifa__prefetch_stream ps = ifa__prefetch_begin_list(prefetch);
    const int64_t groups = 4 * ((n + 15) / 16);
    const int64_t per_group = ifa__prefetch_per_step(&ps, groups);
    for (int64_t i0 = 0; i0 < n; i0 += 16) {
        const int64_t m = n - i0 < 16 ? n - i0 : 16;
        const char *rows[16];
        for (int64_t r = 0; r < 16; r++) rows[r] = (const char *)krows[i0 + (r < m ? r : m - 1)];
        const __mmask16 smask = tail_mask(m);
        int64_t g0 = 0, pg = per_group;
        for (; g0 + 4 <= G; g0 += 4, pg = 0)
            qk_form_tile(form, 4, q, qscale, g0, D, rows, scores + g0 * ld + i0, ld, smask, &ps, pg);
        switch (G - g0) {
        case 1: qk_form_tile(form, 1, q, qscale, g0, D, rows, scores + g0 * ld + i0, ld, smask, &ps, pg); break;
        case 2: qk_form_tile(form, 2, q, qscale, g0, D, rows, scores + g0 * ld + i0, ld, smask, &ps, pg); break;
        case 3: qk_form_tile(form, 3, q, qscale, g0, D, rows, scores + g0 * ld + i0, ld, smask, &ps, pg); break;
        default: break;
        }
    }
    ifa__prefetch_next(&ps, ifa__prefetch_lines(&ps));
}

IFA__INLINE void qk_drive(const int form, const void *q, const float *qscale, int64_t G, int64_t D,
                          const void *const *krows, int64_t n, float *scores, int64_t ld, ifa__prefetch_list prefetch) {
    IFA__WITH_CONST_GD(G, D, qk_drive_g(form, q, qscale, GC, DC, krows, n, scores, ld, prefetch));
}

IFA__INLINE void qk_impl(const int kind, const float *q, int64_t G, int64_t D, const void *const *krows, int64_t n,
                         float *scores, int64_t ld, ifa__prefetch_list prefetch) {
    qk_drive(kind, q, NULL, G, D, krows, n, scores, ld, prefetch);
}

static void qk_i8_q16_avx512(const int16_t *q16, const float *qscale, int64_t G, int64_t D, const void *const *krows,
                             int64_t n, float *scores, int64_t ld, ifa__prefetch_list prefetch) {
    qk_drive(QK_Q16, q16, qscale, G, D, krows, n, scores, ld, prefetch);
}

static void qk_bf16_qbf16_avx512(const uint16_t *qb, int64_t G, int64_t D, const void *const *krows, int64_t n,
                                 float *scores, int64_t ld, ifa__prefetch_list prefetch) {
    qk_drive(QK_BF16Q, qb, NULL, G, D, krows, n, scores, ld, prefetch);
}

/* ---- pv ----------------------------------------------------------------------------------- */

/* One slice of W full vectors (W*16 floats of D starting at d0), or of one masked vector when
 * W == 0 (the tail), for GB heads, over all n rows. */
IFA__INLINE void pv_slice(const int kind, const int GB, const int W, const float *p, int64_t ld, int64_t D,
                          const void *const *vrows, int64_t n, float *acc, int64_t d0, __mmask16 tm,
                          ifa__prefetch_stream *ps, int64_t per_row) {
    const int es = elem_size(kind);
    const int nv = W == 0 ? 1 : W;
    __m512 a[4][4];
    for (int g = 0; g < GB; g++)
        for (int w = 0; w < nv; w++)
            a[g][w] = W == 0 ? _mm512_maskz_loadu_ps(tm, acc + g * D + d0) : _mm512_loadu_ps(acc + g * D + d0 + 16 * w);
    for (int64_t i = 0; i < n; i++) {
        const char *row = (const char *)vrows[i] + d0 * es;
        opaque_pointer(&row);
        ifa__prefetch_next(ps, per_row);
        __m512 x[4];
        for (int w = 0; w < nv; w++) x[w] = W == 0 ? load16_mask(kind, row, tm) : load16(kind, row + 16 * w * es);
        for (int g = 0; g < GB; g++) {
            const __m512 pb = _mm512_set1_ps(p[g * ld + i]);
            for (int w = 0; w < nv; w++) a[g][w] = _mm512_fmadd_ps(pb, x[w], a[g][w]);
        }
    }
    for (int g = 0; g < GB; g++)
        for (int w = 0; w < nv; w++) {
            if (W == 0)
                _mm512_mask_storeu_ps(acc + g * D + d0, tm, a[g][w]);
            else
                _mm512_storeu_ps(acc + g * D + d0 + 16 * w, a[g][w]);
        }
}

/* All head blocks of one slice. */
IFA__INLINE void pv_heads(const int kind, const int W, const float *p, int64_t ld, int64_t G, int64_t D,
                          const void *const *v, int64_t n, float *acc, int64_t d0, __mmask16 tm,
                          ifa__prefetch_stream *ps, int64_t per_row) {
    int64_t g0 = 0, pr = per_row;
    /* The first two blocks written out: with G a constant (kernels.h), a loop over them left
     * the block's code shared and G = 8 ran at 0.75 of two G = 4 calls. */
    if (G >= 4) {
        pv_slice(kind, 4, W, p, ld, D, v, n, acc, d0, tm, ps, pr);
        g0 = 4, pr = 0;
    }
    if (G >= 8) {
        pv_slice(kind, 4, W, p + 4 * ld, ld, D, v, n, acc + 4 * D, d0, tm, ps, 0);
        g0 = 8;
    }
    for (; g0 + 4 <= G; g0 += 4, pr = 0)
        pv_slice(kind, 4, W, p + g0 * ld, ld, D, v, n, acc + g0 * D, d0, tm, ps, pr);
    switch (G - g0) {
    case 1: pv_slice(kind, 1, W, p + g0 * ld, ld, D, v, n, acc + g0 * D, d0, tm, ps, pr); break;
    case 2: pv_slice(kind, 2, W, p + g0 * ld, ld, D, v, n, acc + g0 * D, d0, tm, ps, pr); break;
    case 3: pv_slice(kind, 3, W, p + g0 * ld, ld, D, v, n, acc + g0 * D, d0, tm, ps, pr); break;
    default: break;
    }
}

IFA__INLINE void pv_impl_g(const int kind, const float *p, int64_t ld, const int64_t G, const int64_t D,
                           const void *const *v, int64_t n, float *acc, ifa__prefetch_list prefetch) {
    ifa__prefetch_stream ps = ifa__prefetch_begin_list(prefetch);
    /* The prefetch list is spread over the rows of the 64-float slices, a line or two per row. */
    const int64_t steps = (D / 64) * n;
    const int64_t per_row = ifa__prefetch_per_step(&ps, steps);
    int64_t d0 = 0;
    for (; d0 + 64 <= D; d0 += 64) pv_heads(kind, 4, p, ld, G, D, v, n, acc, d0, 0, &ps, per_row);
    ifa__prefetch_next(&ps, ifa__prefetch_lines(&ps));
    for (; d0 + 16 <= D; d0 += 16) pv_heads(kind, 1, p, ld, G, D, v, n, acc, d0, 0, &ps, 0);
    if (d0 < D) pv_heads(kind, 0, p, ld, G, D, v, n, acc, d0, tail_mask(D - d0), &ps, 0);
}

IFA__INLINE void pv_impl(const int kind, const float *p, int64_t ld, int64_t G, int64_t D, const void *const *v,
                         int64_t n, float *acc, ifa__prefetch_list prefetch) {
    IFA__WITH_CONST_GD(G, D, pv_impl_g(kind, p, ld, GC, DC, v, n, acc, prefetch));
}

/* ---- pv on pairs of rows: int8 V on 16-bit fixed-point weights (VPDPWSSD), bfloat16 V on
 * bfloat16 weights (VDPBF16PS) ---------------------------------------------------------------- */

/* kernels.h's pv_i8_q16 and pv_bf16_pbf16. Both instructions add the products of adjacent 16-bit
 * pairs into each 32-bit lane, so a lane pairs rows i and i+1 of one d: the two rows of a pair
 * (int8 sign-extended to int16, bfloat16 as stored) are interleaved with UNPCKLWD/UNPCKHWD, and
 * each head broadcasts its two weights (w_i, w_i+1) as one 32-bit value. The unpacks work inside
 * 128-bit lanes, so the "lo" accumulator of a 32-wide group of d holds d = 0-3, 8-11, 16-19,
 * 24-27 and "hi" the rest; two permutes (VPERMT2D/PS) restore the order when the call ends. An
 * odd n pairs the last row with itself at weight 0 for int8, with zeros for bfloat16 (0 * Inf
 * would be NaN). */
#define PV_PAIRS_I8 0   /* int32 accumulators, scaled by a / 32767 per head at the end */
#define PV_PAIRS_BF16 1 /* float32 accumulators */

/* One slice: NG groups of 32 d starting at d0 (masks m0, m1 for the D tail), GB heads, all rows.
 * Each form keeps accumulators of its own type (ai or af, the other unused): casting one type
 * back and forth inside the loop made the compiler copy all 16 accumulators on every row pair. */
IFA__INLINE void pv_pairs_slice(const int form, const int GB, const int NG, const uint16_t *w, const float *inv,
                                int64_t D, const void *const *vrows, int64_t n, float *acc, int64_t d0, __mmask32 m0,
                                __mmask32 m1, ifa__prefetch_stream *ps, int64_t per_pair) {
    const int es = form == PV_PAIRS_I8 ? 1 : 2;
    __m512i ai[4][4];
    __m512 af[4][4];
    for (int g = 0; g < GB; g++)
        for (int j = 0; j < 2 * NG; j++) {
            ai[g][j] = _mm512_setzero_si512();
            af[g][j] = _mm512_setzero_ps();
        }
    for (int64_t i = 0; i < n; i += 2) {
        const char *r0 = (const char *)vrows[i] + d0 * es;
        const char *r1 = (const char *)vrows[i + 1 < n ? i + 1 : i] + d0 * es;
        const int pair = i + 1 < n;
        ifa__prefetch_next(ps, per_pair);
        __m512i x[4];
        for (int h = 0; h < NG; h++) {
            const __mmask32 m = h == 0 ? m0 : m1;
            __m512i va, vb;
            if (form == PV_PAIRS_I8) { /* int8 has no Inf: row n-1 may pair with itself at weight 0 */
                va = _mm512_cvtepi8_epi16(_mm256_maskz_loadu_epi8(m, r0 + 32 * h));
                vb = _mm512_cvtepi8_epi16(_mm256_maskz_loadu_epi8(m, r1 + 32 * h));
            } else {
                va = _mm512_maskz_loadu_epi16(m, r0 + 64 * h);
                vb = _mm512_maskz_loadu_epi16(pair ? m : 0, r1 + 64 * h);
            }
            x[2 * h] = _mm512_unpacklo_epi16(va, vb);
            x[2 * h + 1] = _mm512_unpackhi_epi16(va, vb);
        }
        for (int g = 0; g < GB; g++) {
            int32_t wpair; /* w_i and w_i+1 as one 32-bit value (memcpy: no type punning) */
            memcpy(&wpair, w + g * 64 + i, sizeof wpair);
            const __m512i pw = _mm512_set1_epi32(wpair);
            for (int j = 0; j < 2 * NG; j++) {
                if (form == PV_PAIRS_I8)
                    ai[g][j] = dpwssd_acc(ai[g][j], pw, x[j]);
                else
                    af[g][j] = _mm512_dpbf16_ps(af[g][j], (__m512bh)pw, (__m512bh)x[j]);
            }
        }
    }
    const __m512i first = _mm512_setr_epi32(0, 1, 2, 3, 16, 17, 18, 19, 4, 5, 6, 7, 20, 21, 22, 23);
    const __m512i second = _mm512_setr_epi32(8, 9, 10, 11, 24, 25, 26, 27, 12, 13, 14, 15, 28, 29, 30, 31);
    for (int g = 0; g < GB; g++)
        for (int h = 0; h < NG; h++) {
            const __mmask32 m = h == 0 ? m0 : m1;
            const __mmask16 k[2] = {(__mmask16)m, (__mmask16)(m >> 16)};
            for (int e = 0; e < 2; e++) {
                const __m512i idx = e == 0 ? first : second;
                float *o = acc + g * D + d0 + 32 * h + 16 * e;
                const __m512 old = _mm512_maskz_loadu_ps(k[e], o);
                __m512 sum;
                if (form == PV_PAIRS_I8) {
                    const __m512i total = _mm512_permutex2var_epi32(ai[g][2 * h], idx, ai[g][2 * h + 1]);
                    sum = _mm512_fmadd_ps(_mm512_set1_ps(inv[g]), _mm512_cvtepi32_ps(total), old);
                } else {
                    sum = _mm512_add_ps(old, _mm512_permutex2var_ps(af[g][2 * h], idx, af[g][2 * h + 1]));
                }
                _mm512_mask_storeu_ps(o, k[e], sum);
            }
        }
}

IFA__INLINE __mmask32 mask32(int64_t count) {
    return count >= 32 ? (__mmask32)0xFFFFFFFFu : (__mmask32)((1u << count) - 1u);
}

/* All slices of D for a block of GB heads. */
IFA__INLINE void pv_pairs_heads(const int form, const int GB, const uint16_t *w, const float *inv, int64_t D,
                                const void *const *v, int64_t n, float *acc, ifa__prefetch_stream *ps,
                                int64_t per_pair) {
    int64_t d0 = 0;
    for (; D - d0 > 32; d0 += 64)
        pv_pairs_slice(form, GB, 2, w, inv, D, v, n, acc, d0, mask32(D - d0), mask32(D - d0 - 32), ps, per_pair);
    if (d0 < D) pv_pairs_slice(form, GB, 1, w, inv, D, v, n, acc, d0, mask32(D - d0), 0, ps, per_pair);
}

/* The 16-bit weights of head pg (n of them, then a 0 when n is odd) into w; for int8 also the
 * head's scale a / 32767 into *inv. Returns 0 when the head adds nothing (int8, all weights 0). */
IFA__INLINE int pv_pairs_weights(const int form, const float *pg, int64_t n, uint16_t *w, float *inv) {
    float s = 0.0f;
    if (form == PV_PAIRS_I8) {
        __m512 mx = _mm512_setzero_ps();
        for (int64_t i = 0; i < n; i += 16)
            mx = _mm512_max_ps(mx, _mm512_abs_ps(_mm512_maskz_loadu_ps(tail_mask(n - i < 16 ? n - i : 16), pg + i)));
        const float a = _mm512_reduce_max_ps(mx);
        if (!(a > 0.0f)) { /* weights 0 (another head of the block may still be summed) */
            memset(w, 0, sizeof *w * (size_t)(n + (n & 1)));
            *inv = 0.0f;
            return 0;
        }
        s = 32767.0f / a;
        *inv = a / 32767.0f;
    }
    for (int64_t i = 0; i < n; i += 16) {
        const __mmask16 k = tail_mask(n - i < 16 ? n - i : 16);
        const __m512 x = _mm512_maskz_loadu_ps(k, pg + i);
        const __m256i h = form == PV_PAIRS_I8
                              ? _mm512_cvtepi32_epi16(_mm512_cvtps_epi32(_mm512_mul_ps(x, _mm512_set1_ps(s))))
                              : (__m256i)_mm512_cvtneps_pbh(x);
        _mm256_mask_storeu_epi16(w + i, k, h);
    }
    if (n & 1) w[n] = 0;
    return 1;
}

/* One block of gb <= 4 heads starting at head g0: their 16-bit weights, then all slices of D. */
IFA__INLINE void pv_pairs_block(const int form, const float *p, int64_t ld, int64_t g0, int64_t gb, int64_t D,
                                const void *const *v, int64_t n, float *acc, ifa__prefetch_stream *ps,
                                int64_t per_pair) {
    uint16_t w[4 * 64];
    float inv[4] = {0};
    int any = 0;
    for (int64_t g = 0; g < gb; g++) any |= pv_pairs_weights(form, p + (g0 + g) * ld, n, w + g * 64, &inv[g]);
    if (!any) return;
    switch (gb) {
    case 1: pv_pairs_heads(form, 1, w, inv, D, v, n, acc + g0 * D, ps, per_pair); break;
    case 2: pv_pairs_heads(form, 2, w, inv, D, v, n, acc + g0 * D, ps, per_pair); break;
    case 3: pv_pairs_heads(form, 3, w, inv, D, v, n, acc + g0 * D, ps, per_pair); break;
    default: pv_pairs_heads(form, 4, w, inv, D, v, n, acc + g0 * D, ps, per_pair); break;
    }
}

/* Heads in blocks of 4; the prefetch list is spread over the row pairs of every slice and block. */
IFA__INLINE void pv_pairs_g(const int form, const float *p, int64_t ld, const int64_t G, const int64_t D,
                            const void *const *v, int64_t n, float *acc, ifa__prefetch_list prefetch) {
    ifa__prefetch_stream ps = ifa__prefetch_begin_list(prefetch);
    const int64_t steps = ((D + 63) / 64) * ((n + 1) / 2) * ((G + 3) / 4);
    const int64_t per_pair = ifa__prefetch_per_step(&ps, steps);
    /* int8: the first two blocks written out, as in pv_heads (G = 8: 0.82 of the time of the
     * loop). bfloat16 keeps the loop, which measured 9% faster than the blocks written out. */
    int64_t g0 = 0;
    if (form == PV_PAIRS_I8 && G >= 4) {
        pv_pairs_block(form, p, ld, 0, 4, D, v, n, acc, &ps, per_pair);
        g0 = 4;
    }
    if (form == PV_PAIRS_I8 && G >= 8) {
        pv_pairs_block(form, p, ld, 4, 4, D, v, n, acc, &ps, per_pair);
        g0 = 8;
    }
    for (; g0 < G; g0 += 4) pv_pairs_block(form, p, ld, g0, G - g0 < 4 ? G - g0 : 4, D, v, n, acc, &ps, per_pair);
    ifa__prefetch_next(&ps, ifa__prefetch_lines(&ps));
}

IFA__INLINE void pv_pairs(const int form, const float *p, int64_t ld, int64_t G, int64_t D, const void *const *v,
                          int64_t n, float *acc, ifa__prefetch_list prefetch) {
    IFA__WITH_CONST_GD(G, D, pv_pairs_g(form, p, ld, GC, DC, v, n, acc, prefetch));
}

static void pv_i8_q16_avx512(const float *p, int64_t ld, int64_t G, int64_t D, const void *const *v, int64_t n,
                             float *acc, ifa__prefetch_list prefetch) {
    /* A weight that is not finite sends the whole call down the float path (kernels.h). */
    __mmask16 odd = 0;
    for (int64_t g = 0; g < G; g++)
        for (int64_t i = 0; i < n; i += 16)
            odd |= _mm512_fpclass_ps_mask(_mm512_maskz_loadu_ps(tail_mask(n - i < 16 ? n - i : 16), p + g * ld + i),
                                          0x01 | 0x08 | 0x10 | 0x80); /* QNaN, +Inf, -Inf, SNaN */
    if (odd)
        pv_impl(IFA__KV_I8, p, ld, G, D, v, n, acc, prefetch);
    else
        pv_pairs(PV_PAIRS_I8, p, ld, G, D, v, n, acc, prefetch);
}

static void pv_bf16_pbf16_avx512(const float *p, int64_t ld, int64_t G, int64_t D, const void *const *v, int64_t n,
                                 float *acc, ifa__prefetch_list prefetch) {
    pv_pairs(PV_PAIRS_BF16, p, ld, G, D, v, n, acc, prefetch);
}

/* ---- The instances ------------------------------------------------------------------------ */

IFA__DEFINE_QK_PV(f16, IFA__KV_F16)
IFA__DEFINE_QK_PV(bf16, IFA__KV_BF16)
IFA__DEFINE_QK_PV(f32, IFA__KV_F32)
IFA__DEFINE_QK_PV(i8, IFA__KV_I8)

/* ---- softmax ------------------------------------------------------------------------------ */

/* expf, vectorised (Cephes): x = n ln2 + r with |r| <= ln2/2 (ln2 split in two for an exact
 * reduction), e^r = 1 + r + r^2 P(r), then VSCALEFPS multiplies by 2^n with one rounding. The
 * input is clamped to [-110, 89] first, with the constant as the first operand of MIN/MAX so a
 * NaN input passes through (MAXPS returns its second operand when either is NaN); -inf and
 * -1e12 become -110, whose exp rounds to exactly 0, and 89 overflows to +inf as expf does. */
IFA__INLINE __m512 exp16(__m512 x) {
    x = _mm512_max_ps(_mm512_set1_ps(IFA__EXP_MIN), x);
    x = _mm512_min_ps(_mm512_set1_ps(IFA__EXP_MAX), x);
    const __m512 n = _mm512_roundscale_ps(_mm512_mul_ps(x, _mm512_set1_ps(IFA__EXP_LOG2E)),
                                          _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    __m512 r = _mm512_fnmadd_ps(n, _mm512_set1_ps(IFA__EXP_LN2_HI), x);
    r = _mm512_fnmadd_ps(n, _mm512_set1_ps(IFA__EXP_LN2_LO), r);
    __m512 y = _mm512_set1_ps(IFA__EXP_P0);
    y = _mm512_fmadd_ps(y, r, _mm512_set1_ps(IFA__EXP_P1));
    y = _mm512_fmadd_ps(y, r, _mm512_set1_ps(IFA__EXP_P2));
    y = _mm512_fmadd_ps(y, r, _mm512_set1_ps(IFA__EXP_P3));
    y = _mm512_fmadd_ps(y, r, _mm512_set1_ps(IFA__EXP_P4));
    y = _mm512_fmadd_ps(y, r, _mm512_set1_ps(IFA__EXP_P5));
    const __m512 r2 = _mm512_mul_ps(r, r);
    y = _mm512_fmadd_ps(y, r2, _mm512_add_ps(r, _mm512_set1_ps(1.0f)));
    return _mm512_scalef_ps(y, n);
}

/* Lane g of the result = the sum of the 16 lanes of v[g], g < count <= 16 (the other lanes 0):
 * the qk kernels' transpose-add trees and one permute, 14 operations for four vectors and 46 for
 * sixteen, where one horizontal sum per vector takes about 8 dependent ones plus the insertion of
 * its lane. v[count..] up to a multiple of 4 are overwritten with zeros. */
IFA__INLINE __m512 sum_each(__m512 *v, int64_t count) {
    const int64_t padded = (count + 3) & ~(int64_t)3;
    for (int64_t g = count; g < padded; g++) v[g] = _mm512_setzero_ps();
    if (padded == 4) {
        /* Block j of e holds four partial sums of v[j]; two in-block steps leave its total in
         * every lane of block j, and a permute gathers lanes 0, 4, 8, 12. */
        __m512 e = tree12(v[0], v[1], v[2], v[3]);
        e = _mm512_add_ps(e, _mm512_permute_ps(e, _MM_SHUFFLE(1, 0, 3, 2)));
        e = _mm512_add_ps(e, _mm512_permute_ps(e, _MM_SHUFFLE(2, 3, 0, 1)));
        const __m512i first = _mm512_setr_epi32(0, 4, 8, 12, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0);
        return _mm512_maskz_permutexvar_ps(0x000F, first, e);
    }
    __m512 e[4];
    for (int t = 0; t < 4; t++)
        e[t] = 4 * t < padded ? tree12(v[4 * t], v[4 * t + 1], v[4 * t + 2], v[4 * t + 3]) : _mm512_setzero_ps();
    /* tree34 puts the total of v[4t + j] (group t, slot j) at element 4j + t. */
    const __m512i order = _mm512_setr_epi32(0, 4, 8, 12, 1, 5, 9, 13, 2, 6, 10, 14, 3, 7, 11, 15);
    return _mm512_permutexvar_ps(order, tree34(e[0], e[1], e[2], e[3]));
}

/* Weights of R <= 4 heads (rows s, s + ld, ...) in place, s = exp(s - mx), and their lane-wise
 * sums in part[0..R); n <= 16. A maximum of -inf (all scores so far -inf) subtracts 0 instead,
 * so the weights are exp(-inf) = 0, not NaN (see the reference kernel). */
IFA__INLINE void softmax_weights16(const int R, float *s, int64_t ld, int64_t n, const float *mx, __m512 *part) {
    const __mmask16 k = tail_mask(n);
    __m512 e[4];
    for (int j = 0; j < R; j++)
        e[j] = _mm512_sub_ps(_mm512_maskz_loadu_ps(k, s + j * ld), _mm512_set1_ps(mx[j] == -INFINITY ? 0.0f : mx[j]));
    for (int j = 0; j < R; j++) e[j] = exp16(e[j]);
    for (int j = 0; j < R; j++) {
        _mm512_mask_storeu_ps(s + j * ld, k, e[j]);
        part[j] = _mm512_maskz_mov_ps(k, e[j]);
    }
}

/* The same for any n <= 64, 16 scores at a time. */
IFA__INLINE void softmax_weights(const int R, float *s, int64_t ld, int64_t n, const float *mx, __m512 *part) {
    __m512 vmx[4], vsum[4];
    for (int j = 0; j < R; j++) {
        vmx[j] = _mm512_set1_ps(mx[j] == -INFINITY ? 0.0f : mx[j]);
        vsum[j] = _mm512_setzero_ps();
    }
    for (int64_t i = 0; i < n; i += 16) {
        const __mmask16 k = n - i >= 16 ? (__mmask16)0xFFFF : tail_mask(n - i);
        __m512 e[4];
        for (int j = 0; j < R; j++) e[j] = exp16(_mm512_sub_ps(_mm512_maskz_loadu_ps(k, s + j * ld + i), vmx[j]));
        for (int j = 0; j < R; j++) {
            _mm512_mask_storeu_ps(s + j * ld + i, k, e[j]);
            vsum[j] = _mm512_add_ps(vsum[j], _mm512_maskz_mov_ps(k, e[j]));
        }
    }
    for (int j = 0; j < R; j++) part[j] = vsum[j];
}

/* softmax_weights16 (short_rows, n <= 16) or softmax_weights, for R heads starting at head g. */
IFA__INLINE void softmax_weights_at(const int short_rows, const int R, float *s, int64_t ld, int64_t n, int64_t g,
                                    const float *mx, __m512 *part) {
    if (short_rows)
        softmax_weights16(R, s + g * ld, ld, n, mx + g, part + g);
    else
        softmax_weights(R, s + g * ld, ld, n, mx + g, part + g);
}

/* The weights of count <= 16 heads, four at a time; short_rows is a constant at both call sites,
 * so each gets its own straight-line copy. */
IFA__INLINE void softmax_weights_heads(const int short_rows, float *s, int64_t ld, int64_t n, int64_t count,
                                       const float *mx, __m512 *part) {
    int64_t g = 0;
    for (; g + 4 <= count; g += 4) softmax_weights_at(short_rows, 4, s, ld, n, g, mx, part);
    switch (count - g) {
    case 1: softmax_weights_at(short_rows, 1, s, ld, n, g, mx, part); break;
    case 2: softmax_weights_at(short_rows, 2, s, ld, n, g, mx, part); break;
    case 3: softmax_weights_at(short_rows, 3, s, ld, n, g, mx, part); break;
    default: break;
    }
}

/* The heads go in blocks of up to 16, each phase over every head of the block before the next
 * phase: a head's steps form one long dependent chain (a reduction, the exp polynomial, another
 * reduction), and a window has only 16 to 32 scores per head, so one head at a time leaves the
 * core waiting on latency; independent heads side by side overlap. The exps go four heads at a
 * time in straight-line code (softmax_weights), the sums are reduced together (sum_each), and
 * the alphas of the block are one vector exp, or none when no head's maximum moved. Measured in
 * L1 on 16-row windows, each of the last three steps took time off: 1-4% of a whole call at
 * G = 4 for the alphas; 15-23% of the softmax's own time for the four-head exps and the joint
 * sum together (G = 4, 7, 8). */
static void softmax_avx512(float *s, int64_t ld, int64_t G, int64_t n, float *m, float *l, float *alpha) {
    for (int64_t g0 = 0; g0 < G; g0 += 16) {
        const int64_t gb = G - g0 < 16 ? G - g0 : 16;
        /* The moved maxima go into a vector lane by lane (a masked broadcast each): written as
         * 16 floats and read back as one vector, they stalled on store forwarding. */
        float mx[16] = {0};
        __m512 vmxs = _mm512_setzero_ps();
        __mmask16 changed = 0; /* heads whose maximum moved or is not finite */
        for (int64_t g = 0; g < gb; g++) {
            const float *sg = s + (g0 + g) * ld;
            /* The maximum: MAXPS(x, acc) keeps acc when x is NaN, as the reference's "x > mx" does. */
            __m512 vmax = _mm512_set1_ps(-INFINITY);
            for (int64_t i = 0; i < n; i += 16) {
                const __mmask16 k = n - i >= 16 ? (__mmask16)0xFFFF : tail_mask(n - i);
                vmax = _mm512_max_ps(_mm512_mask_loadu_ps(_mm512_set1_ps(-INFINITY), k, sg + i), vmax);
            }
            /* No score above a finite running maximum (most windows once the first few have been
             * seen): the maximum stays, and its horizontal reduction is skipped. */
            const float mg = m[g0 + g];
            if (isfinite(mg) && !_mm512_cmp_ps_mask(vmax, _mm512_set1_ps(mg), _CMP_GT_OQ)) {
                mx[g] = mg;
                continue;
            }
            changed |= (__mmask16)(1u << g);
            const float smax = _mm512_reduce_max_ps(vmax);
            mx[g] = smax > mg ? smax : mg;
            vmxs = _mm512_mask_mov_ps(vmxs, (__mmask16)(1u << g), _mm512_set1_ps(mx[g]));
        }
        __m512 part[16]; /* head g's weights summed lane-wise; reduced together below */
        if (n <= 16) /* one vector per head (16-row windows): straight-line code */
            softmax_weights_heads(1, s + g0 * ld, ld, n, gb, mx, part);
        else
            softmax_weights_heads(0, s + g0 * ld, ld, n, gb, mx, part);
        const __m512 vsums = sum_each(part, gb);
        const __mmask16 kb = tail_mask(gb);
        if (!changed) { /* every alpha is exp(0) = 1 */
            _mm512_mask_storeu_ps(alpha + g0, kb, _mm512_set1_ps(1.0f));
            _mm512_mask_storeu_ps(l + g0, kb, _mm512_add_ps(_mm512_maskz_loadu_ps(kb, l + g0), vsums));
            continue;
        }
        /* alpha = exp(m - mx), 0 where m is still -inf (no score before this chunk); the heads
         * whose maximum stayed take it from m (they have no lane in vmxs). */
        const __m512 vm = _mm512_maskz_loadu_ps(kb, m + g0), vnew = _mm512_mask_mov_ps(vm, changed, vmxs);
        const __mmask16 seen = _mm512_mask_cmp_ps_mask(kb, vm, _mm512_set1_ps(-INFINITY), _CMP_NEQ_UQ);
        const __m512 a = _mm512_maskz_mov_ps(seen, exp16(_mm512_sub_ps(vm, vnew)));
        const __m512 vl = _mm512_maskz_loadu_ps(kb, l + g0);
        _mm512_mask_storeu_ps(alpha + g0, kb, a);
        _mm512_mask_storeu_ps(l + g0, kb, _mm512_add_ps(_mm512_mul_ps(vl, a), vsums));
        _mm512_mask_storeu_ps(m + g0, kb, vnew);
    }
}

/* ---- float16 rows ------------------------------------------------------------------------- */

static void f16_to_f32_avx512(const void *src, int64_t n, float *dst) {
    const char *s = (const char *)src;
    for (int64_t i = 0; i < n; i += 16) {
        const __mmask16 k = n - i >= 16 ? (__mmask16)0xFFFF : tail_mask(n - i);
        _mm512_mask_storeu_ps(dst + i, k, _mm512_cvtph_ps(_mm256_maskz_loadu_epi16(k, s + 2 * i)));
    }
}

/* VCVTPS2PH with the round-to-nearest-even immediate: the same result as ifa__f32_to_f16. */
static void f32_to_f16_avx512(const float *src, int64_t n, void *dst) {
    char *d = (char *)dst;
    for (int64_t i = 0; i < n; i += 16) {
        const __mmask16 k = n - i >= 16 ? (__mmask16)0xFFFF : tail_mask(n - i);
        const __m256i h = _mm512_cvtps_ph(_mm512_maskz_loadu_ps(k, src + i), _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
        _mm256_mask_storeu_epi16(d + 2 * i, k, h);
    }
}

/* ---- Rows of float32 scaled (kernels.h) ------------------------------------------------------ */

static void mul_row_avx512(const float *src, float f, int64_t n, float *dst) {
    const __m512 vf = _mm512_set1_ps(f);
    for (int64_t i = 0; i < n; i += 16) {
        const __mmask16 k = n - i >= 16 ? (__mmask16)0xFFFF : tail_mask(n - i);
        _mm512_mask_storeu_ps(dst + i, k, _mm512_mul_ps(_mm512_maskz_loadu_ps(k, src + i), vf));
    }
}

/* Lanes masked off are neither divided (no exception flag) nor stored. */
static void div_row_avx512(const float *src, float f, int64_t n, float *dst) {
    const __m512 vf = _mm512_set1_ps(f);
    for (int64_t i = 0; i < n; i += 16) {
        const __mmask16 k = n - i >= 16 ? (__mmask16)0xFFFF : tail_mask(n - i);
        _mm512_mask_storeu_ps(dst + i, k, _mm512_maskz_div_ps(k, _mm512_maskz_loadu_ps(k, src + i), vf));
    }
}

const ifa__kernel_table ifa__kernels_avx512 = {
    .isa = "avx512",
    .qk = {[IFA__KV_F16] = qk_f16, [IFA__KV_BF16] = qk_bf16, [IFA__KV_F32] = qk_f32, [IFA__KV_I8] = qk_i8},
    .pv = {[IFA__KV_F16] = pv_f16, [IFA__KV_BF16] = pv_bf16, [IFA__KV_F32] = pv_f32, [IFA__KV_I8] = pv_i8},
    .qk_i8_q16 = qk_i8_q16_avx512,
    .qk_bf16_qbf16 = qk_bf16_qbf16_avx512,
    .pv_i8_q16 = pv_i8_q16_avx512,
    .pv_bf16_pbf16 = pv_bf16_pbf16_avx512,
    .softmax = softmax_avx512,
    .f16_to_f32 = f16_to_f32_avx512,
    .f32_to_f16 = f32_to_f16_avx512,
    .mul_row = mul_row_avx512,
    .div_row = div_row_avx512,
    .needs_unit_d_stride = 1,
    .split_tokens_wide = 0,
    .heavy_i8_small_windows = 0,
    .bf16_swapped_quads = 0,
};
