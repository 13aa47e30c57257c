/*
 * attention_avx2.c - the kernels of kernels.h for AVX2 + FMA + F16C, for every KV dtype.
 *
 * The same plan as the AVX-512 kernels (see attention_avx512.c for the reasoning), scaled to
 * 16 ymm registers of 8 floats:
 *
 * qk  the rows go in groups of up to 24 and the heads in blocks of up to 4. A group is walked in
 *     steps of R rows (qk_step_rows: 2 rows for 4 heads, 3 for 3 (bfloat16: 2), 4 for 1 or 2; a
 *     step keeps R x heads accumulators, so each converted K vector feeds one FMA per head and each
 *     q vector, loaded once into a register, R). A step leaves each (row, head) as a vector of 8 partial sums
 *     in a small buffer; every 8 rows of a head are then reduced together by a transpose-add tree
 *     of 7 shuffle+add steps, never one horizontal sum per score:
 *
 *         level 1 (VPERM2F128): rows t and t+4 -> 1 vector, 128-bit half h = 4 partials of row t+4h
 *         level 2, 3 (in-lane unpacks): the 4 level-1 vectors -> 1, element k = row k
 *
 *     Steps take only existing rows (the last ones of a group 2 or 1 at a time); the partials of
 *     rows past n are zeroed and their lanes not stored.
 *
 * pv  the D axis goes in slices of 24 or 16 floats (3 or 2 ymm; bfloat16 16 only) and the heads
 *     in blocks of up to 4: 12 or 8 accumulators stay in registers across all n rows of the chunk;
 *     each converted V vector feeds 4 FMAs.
 *
 * qk_i8_q16, pv_i8_q16 (int8 KV at inner_precise = 1, kernels.h) the same steps, tiles and trees
 *     on VPMADDWD: 16 int16 products added in pairs into 8 int32 lanes, exact, so the same bits as
 *     the reference. AVX2 has no bfloat16 dot product: bf16 KV keeps the float kernels.
 *
 * bfloat16 rows are read 16 elements at a time and widened by one unpack per 8 (bf16_split), which
 * leaves each 16-element block with its middle quads swapped. The table says so
 * (bf16_swapped_quads): attend.c swaps q's quads to match, and the accumulators stay in that order
 * until the output is written.
 *
 * D tails: AVX2 has masked loads for 32-bit elements only, so a row's last D % 8 elements (of
 * any dtype) are copied into a zeroed 8-element buffer and converted from there; q and the
 * accumulators (float32) are read with VMASKMOVPS and written back in plain stores of their first
 * lanes (store_first_lanes). A masked or copied load never reads past the row.
 *
 * softmax  as on AVX-512, with 2^n built from the exponent bits. To keep expf's subnormal
 * results, 2^n is applied as two factors 2^(n/2) * 2^(n - n/2), each a normal float, so the one
 * rounding happens in the last multiply, as in expf; vectors whose weights are all normal floats
 * (the usual case) add n to the exponent field instead, the same bits in fewer operations.
 *
 * Every kernel here requires d_stride == 1.
 */
#include <immintrin.h>
#include <math.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "../kernels.h"

#define IFA__INLINE static inline __attribute__((always_inline))

/* Hides where p points from the optimiser (qk_step). */
IFA__INLINE void opaque_pointer(const char **p) {
#if defined(__GNUC__)
    __asm__("" : "+r"(*p));
#else
    (void)p;
#endif
}

/* Makes *v, a float or integer vector, a register value the optimiser cannot see through
 * (qk_step, qk_q16_step). */
#if defined(__GNUC__)
#define in_register(v) __asm__("" : "+x"(*(v)))
#else
#define in_register(v) ((void)(v))
#endif

/* ---- Loads: 8 elements of a row as float32 ------------------------------------------------ */

/* The dtype is a compile-time constant at every call site, so the switch folds away. */
IFA__INLINE int elem_size(const int kind) {
    return kind == IFA__KV_F32 ? 4 : kind == IFA__KV_I8 ? 1 : 2;
}

IFA__INLINE __m256 load8(const int kind, const char *p) {
    switch (kind) {
    case IFA__KV_F16: return _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)p));
    case IFA__KV_BF16:
        return _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_cvtepu16_epi32(_mm_loadu_si128((const __m128i *)p)), 16));
    case IFA__KV_F32: return _mm256_loadu_ps((const float *)p);
    default: return _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(_mm_loadl_epi64((const __m128i *)p)));
    }
}

/* The first count (< 8) elements, the rest 0, without reading past them. */
static __m256 load8_tail(const int kind, const char *p, int64_t count) {
    char buf[32] = { 0 };
    memcpy(buf, p, (size_t)(count * elem_size(kind)));
    return load8(kind, buf);
}

/* Half `half` of 16 bfloat16 elements at p as float32, one unpack each: half 0 holds elements
 * 0-3 and 8-11, half 1 elements 4-7 and 12-15 (VPUNPCKLWD and VPUNPCKHWD work inside 128-bit
 * lanes). So the two halves are a 16-element block with its quads 1 and 2 swapped, the order of
 * ifa__swap_mid_quads (kernels.h), which the table's bf16_swapped_quads asks attend.c to give q and
 * the accumulators. load8's widening and shift take two operations per 8 elements where this takes
 * one, and bfloat16 ran 10-15% slower than float16 in L1 with them (docs/kernels.md). */
IFA__INLINE __m256 bf16_split(const int half, const char *p) {
    const __m256i x = _mm256_loadu_si256((const __m256i *)p), zero = _mm256_setzero_si256();
    return _mm256_castsi256_ps(half ? _mm256_unpackhi_epi16(zero, x) : _mm256_unpacklo_epi16(zero, x));
}

/* VMASKMOVPS mask of the first count (< 8) lanes. */
IFA__INLINE __m256i lane_mask(int64_t count) {
    return _mm256_cmpgt_epi32(_mm256_set1_epi32((int)count), _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7));
}

/* The largest of the 8 lanes. */
IFA__INLINE float hmax8(__m256 v) {
    __m128 x = _mm_max_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    x = _mm_max_ps(x, _mm_movehl_ps(x, x));
    x = _mm_max_ss(x, _mm_shuffle_ps(x, x, 1));
    return _mm_cvtss_f32(x);
}

/* ---- qk ----------------------------------------------------------------------------------- */

/* Level 1: rows a (slot 2t) and b (slot 2t+1) -> low half 4 partials of a, high half of b. */
IFA__INLINE __m256 tree1(__m256 a, __m256 b) {
    return _mm256_add_ps(_mm256_permute2f128_ps(a, b, 0x20), _mm256_permute2f128_ps(a, b, 0x31));
}

/* Levels 2 and 3: the level-1 vectors of pairs 0..3 -> element k = row k. After level 2, half h
 * holds rows (t, t') of pairs (0, 1) or (2, 3) interleaved; level 3 adds those interleaved halves
 * as 64-bit pairs, leaving half h = rows of pairs 0..3 in its four lanes. */
IFA__INLINE __m256 tree23(__m256 e0, __m256 e1, __m256 e2, __m256 e3) {
    const __m256 f01 = _mm256_add_ps(_mm256_unpacklo_ps(e0, e1), _mm256_unpackhi_ps(e0, e1));
    const __m256 f23 = _mm256_add_ps(_mm256_unpacklo_ps(e2, e3), _mm256_unpackhi_ps(e2, e3));
    const __m256d lo = _mm256_unpacklo_pd(_mm256_castps_pd(f01), _mm256_castps_pd(f23));
    const __m256d hi = _mm256_unpackhi_pd(_mm256_castps_pd(f01), _mm256_castps_pd(f23));
    return _mm256_add_ps(_mm256_castpd_ps(lo), _mm256_castpd_ps(hi));
}

/* The first count (1-8) lanes of v to dst, in plain stores: a row group's last scores, the last
 * D % 8 accumulators of a slice, a chunk's last weights, the softmax's alpha, l and m. VMASKMOVPS
 * to memory is slow on Zen 3, and a load cannot take its data from one still in flight: plain
 * stores for the softmax's alpha (read by attend.c right after the call), l and m made Llama-3-8B
 * calls (G = 4) 1.03-1.05x faster end to end (docs/kernels.md). */
IFA__INLINE void store_first_lanes(float *dst, __m256 v, int64_t count) {
    if (count >= 8) {
        _mm256_storeu_ps(dst, v);
        return;
    }
    __m128 x = _mm256_castps256_ps128(v);
    if (count >= 4) {
        _mm_storeu_ps(dst, x);
        dst += 4;
        count -= 4;
        x = _mm256_extractf128_ps(v, 1);
    }
    if (count >= 2) {
        _mm_storel_pi((__m64 *)dst, x);
        dst += 2;
        count -= 2;
        x = _mm_movehl_ps(x, x);
    }
    if (count >= 1) _mm_store_ss(dst, x);
}

/* Rows of K per group of both qk forms (qk_group): a multiple of 8 (the tree's) and of every
 * step's rows. */
#define QK_GROUP_ROWS 24

/* The row sums of one step of R rows (R <= 4, R x GB <= 12) x GB heads as vectors of 8 partials,
 * into raw[g][r0 + r]. */
IFA__INLINE void qk_step(const int kind, const int GB, const int R, const float *q, int64_t D,
                         const void *const *rows, __m256 (*raw)[QK_GROUP_ROWS], int64_t r0) {
    const int es = elem_size(kind);
    const int64_t Dv = D & ~(int64_t)7;
    /* Each query vector is loaded once into a register for the R FMAs that use it (in_register),
     * through a pointer the optimiser cannot see through: GCC 12 otherwise made it the memory
     * operand of each FMA, which on Zen 3 held qk at G = 4 to 16.9 ns per row in L1 against 13.9
     * (docs/kernels.md). */
    const char *qg = (const char *)q;
    opaque_pointer(&qg);
    __m256 acc[4][4];
    for (int g = 0; g < GB; g++)
        for (int r = 0; r < R; r++) acc[g][r] = _mm256_setzero_ps();
    int64_t d = 0;
    if (kind == IFA__KV_BF16) {
        /* 16 elements of a row per load, in the order of bf16_split (q's quads 1 and 2 swapped). */
        for (; d + 16 <= D; d += 16)
            for (int half = 0; half < 2; half++) {
                __m256 k[4];
                for (int r = 0; r < R; r++) k[r] = bf16_split(half, (const char *)rows[r] + d * 2);
                for (int g = 0; g < GB; g++) {
                    __m256 qv = _mm256_loadu_ps((const float *)qg + g * D + d + 8 * half);
                    in_register(&qv);
                    for (int r = 0; r < R; r++) acc[g][r] = _mm256_fmadd_ps(qv, k[r], acc[g][r]);
                }
            }
    }
    for (; d < Dv; d += 8) {
        __m256 k[4];
        for (int r = 0; r < R; r++) k[r] = load8(kind, (const char *)rows[r] + d * es);
        for (int g = 0; g < GB; g++) {
            __m256 qv = _mm256_loadu_ps((const float *)qg + g * D + d);
            in_register(&qv);
            for (int r = 0; r < R; r++) acc[g][r] = _mm256_fmadd_ps(qv, k[r], acc[g][r]);
        }
    }
    if (Dv < D) {
        __m256 k[4];
        for (int r = 0; r < R; r++) k[r] = load8_tail(kind, (const char *)rows[r] + Dv * es, D - Dv);
        const __m256i lm = lane_mask(D - Dv);
        for (int g = 0; g < GB; g++) {
            const __m256 qv = _mm256_maskload_ps(q + g * D + Dv, lm);
            for (int r = 0; r < R; r++) acc[g][r] = _mm256_fmadd_ps(qv, k[r], acc[g][r]);
        }
    }
    for (int g = 0; g < GB; g++)
        for (int r = 0; r < R; r++) raw[g][r0 + r] = acc[g][r];
}

/* ---- qk, int8 K on an int16 query (VPMADDWD) ----------------------------------------------- */

/* 16 int8 of a row sign-extended to int16. */
IFA__INLINE __m256i load16_i8(const int8_t *p) {
    return _mm256_cvtepi8_epi16(_mm_loadu_si128((const __m128i *)p));
}

/* The integer forms of tree1 and tree23 (exact: int32 additions of exact int32 sums). */
IFA__INLINE __m256i tree1i(__m256i a, __m256i b) {
    return _mm256_add_epi32(_mm256_permute2x128_si256(a, b, 0x20), _mm256_permute2x128_si256(a, b, 0x31));
}

IFA__INLINE __m256i tree23i(__m256i e0, __m256i e1, __m256i e2, __m256i e3) {
    const __m256i f01 = _mm256_add_epi32(_mm256_unpacklo_epi32(e0, e1), _mm256_unpackhi_epi32(e0, e1));
    const __m256i f23 = _mm256_add_epi32(_mm256_unpacklo_epi32(e2, e3), _mm256_unpackhi_epi32(e2, e3));
    return _mm256_add_epi32(_mm256_unpacklo_epi64(f01, f23), _mm256_unpackhi_epi64(f01, f23));
}

/* As qk_step for int8 K on an int16 query: 16 elements of D per step, each VPMADDWD two products
 * per 32-bit lane (int8 K sign-extended to int16 once for the GB heads). The int32 sums go to raw
 * as bits (qk_group reduces them as integers). The last D % 16 elements of K and q are copied into
 * zeroed buffers: AVX2 has no 8- or 16-bit masked loads. */
IFA__INLINE void qk_q16_step(const int GB, const int R, const int16_t *q, int64_t D, const void *const *rows,
                             __m256 (*raw)[QK_GROUP_ROWS], int64_t r0) {
    const int64_t Dv = D & ~(int64_t)15;
    __m256i acc[4][4];
    for (int g = 0; g < GB; g++)
        for (int r = 0; r < R; r++) acc[g][r] = _mm256_setzero_si256();
    for (int64_t d = 0; d < Dv; d += 16) {
        __m256i k[4];
        for (int r = 0; r < R; r++) k[r] = load16_i8((const int8_t *)rows[r] + d);
        for (int g = 0; g < GB; g++) {
            const __m256i qv = _mm256_loadu_si256((const __m256i *)(q + g * D + d));
            for (int r = 0; r < R; r++) {
                acc[g][r] = _mm256_add_epi32(acc[g][r], _mm256_madd_epi16(qv, k[r]));
                /* Each sum kept as one running register (in_register): integer addition is
                 * associative, and GCC 12, with D a constant, unrolled the loop and computed all
                 * of a step's products before adding any, writing them to the stack and reading
                 * them back: at G = 4 13.7 ns per row in L1 against 10.0 (sixteenth session). */
                in_register(&acc[g][r]);
            }
        }
    }
    if (Dv < D) {
        __m256i k[4];
        for (int r = 0; r < R; r++) {
            int8_t buf[16] = {0};
            memcpy(buf, (const int8_t *)rows[r] + Dv, (size_t)(D - Dv));
            k[r] = load16_i8(buf);
        }
        for (int g = 0; g < GB; g++) {
            /* Copied here, in the tail only: a zeroed array per step became a REP STOSQ, whose
             * start-up cost every call with D % 16 == 0 too. */
            int16_t qt[16] = {0};
            memcpy(qt, q + g * D + Dv, sizeof(int16_t) * (size_t)(D - Dv));
            const __m256i qv = _mm256_loadu_si256((const __m256i *)qt);
            for (int r = 0; r < R; r++) acc[g][r] = _mm256_add_epi32(acc[g][r], _mm256_madd_epi16(qv, k[r]));
        }
    }
    for (int g = 0; g < GB; g++)
        for (int r = 0; r < R; r++) raw[g][r0 + r] = _mm256_castsi256_ps(acc[g][r]);
}

/* ---- qk, the driver of both forms ----------------------------------------------------------- */

/* The integer form beside the float ones (whose form is the KV kind itself). */
#define QK_Q16 IFA__KV_KIND_COUNT /* int8 K, int16 query (qk_q16_step) */

/* Rows per step for GB heads: R x GB accumulators, R K vectors and one q vector fit the 16 ymm
 * registers. Measured in L1 (sixteenth and seventeenth sessions, Zen 3, float16, 16 rows per call,
 * ns per row), against the earlier tile of 8 rows in pairs whose level-1 results stayed in
 * registers: G = 1 7.8 -> 6.3, G = 4 13.9 -> 12.6, G = 7 23.8 -> 21.8, G = 8 24.7 -> 24.3. Three
 * rows for 4 heads (12 accumulators, more slack for the FMA's latency of 4) ran no faster than two
 * (12.5-12.9 against 12.1-12.6 at G = 4, 25.2-25.8 against 23.9-24.2 at G = 8). bfloat16 K (qk_step's
 * two halves of 16 elements) takes two rows for 3 heads: G = 3 qk 12.5-12.9 -> 10.9-11.0, G = 7
 * 26.8-26.9 -> 25.2-25.3 (twenty-fifth session). */
IFA__INLINE int qk_step_rows(const int form, const int GB) {
    return GB >= 4 ? 2 : GB == 3 ? (form == IFA__KV_BF16 ? 2 : 3) : 4;
}

/* The scores of a group of up to QK_GROUP_ROWS rows x GB heads in the form `form` (a compile-time
 * constant at every call site; q is float or int16 accordingly, qscale serves QK_Q16 only): steps
 * of qk_step_rows rows, then of 2 or 1 for the rest (m = 16 at 3 rows a step: 4 x 3 + 2 x 2), then
 * the tree of every 8 rows. */
IFA__INLINE void qk_group(const int form, const int GB, const void *q, const float *qscale, int64_t D,
                          const void *const *rows, int64_t m, __m256 (*raw)[QK_GROUP_ROWS], float *scores,
                          int64_t ld, ifa__prefetch_stream *ps, int64_t per_step) {
    const int R = qk_step_rows(form, GB);
    int64_t r = 0;
#define QK_STEP(RR)                                                                            \
    do {                                                                                       \
        if (form == QK_Q16)                                                                    \
            qk_q16_step(GB, RR, (const int16_t *)q, D, rows + r, raw, r);                      \
        else                                                                                   \
            qk_step(form, GB, RR, (const float *)q, D, rows + r, raw, r);                      \
    } while (0)
    for (; m - r >= R && !(R == 3 && m - r == 4); r += R) {
        ifa__prefetch_next(ps, per_step);
        QK_STEP(R);
    }
    for (; m - r >= 2; r += 2) {
        ifa__prefetch_next(ps, per_step);
        QK_STEP(2);
    }
    if (r < m) QK_STEP(1);
#undef QK_STEP
    /* The lanes of rows past m are not stored; their partials are zeroed so that none is read
     * unset. */
    for (int64_t e = m; e % 8 != 0; e++)
        for (int g = 0; g < GB; g++) raw[g][e] = _mm256_setzero_ps();
    for (int64_t j = 0; j < m; j += 8)
        for (int g = 0; g < GB; g++) {
            const __m256 *rg = raw[g] + j;
            __m256 sums;
            if (form == QK_Q16) {
#define RAW_I(k) _mm256_castps_si256(rg[k])
                const __m256i si = tree23i(tree1i(RAW_I(0), RAW_I(4)), tree1i(RAW_I(1), RAW_I(5)),
                                           tree1i(RAW_I(2), RAW_I(6)), tree1i(RAW_I(3), RAW_I(7)));
#undef RAW_I
                sums = _mm256_mul_ps(_mm256_set1_ps(qscale[g]), _mm256_cvtepi32_ps(si));
            } else {
                sums = tree23(tree1(rg[0], rg[4]), tree1(rg[1], rg[5]), tree1(rg[2], rg[6]), tree1(rg[3], rg[7]));
            }
            /* Lanes past m are rows past n, not stored. */
            store_first_lanes(scores + g * ld + j, sums, m - j < 8 ? m - j : 8);
        }
}

/* Heads g0... of q in the form `form`. */
IFA__INLINE const void *qk_heads(const int form, const void *q, int64_t g0, int64_t D) {
    return form == QK_Q16 ? (const void *)((const int16_t *)q + g0 * D) : (const void *)((const float *)q + g0 * D);
}

/* One call: groups of up to QK_GROUP_ROWS rows, each for all heads in blocks of up to 4. */
IFA__INLINE void qk_drive_g(const int form, const void *q, const float *qscale, const int64_t G, const int64_t D,
                            const void *const *krows, int64_t n, float *scores, int64_t ld,
                            ifa__prefetch_list prefetch) {
    /* The next call's rows are prefetched a few lines per step (see the AVX-512 file), spread
     * over the steps of all blocks of heads (about n / R each). Spread over fewer steps (n / 3
     * where G = 4 takes n / 2), the calls ran 4-6% slower from DRAM though faster in L1; over the
     * first block's only, Llama-3-70B (G = 8) fp16 ran 3.6-3.8% slower, int8 1% faster. */
    ifa__prefetch_stream ps = ifa__prefetch_begin_list(prefetch);
    int64_t steps = 0;
    for (int64_t g0 = 0; g0 < G; g0 += 4) {
        const int R = qk_step_rows(form, G - g0 < 4 ? (int)(G - g0) : 4);
        steps += (n + R - 1) / R;
    }
    const int64_t per_step = ifa__prefetch_per_step(&ps, steps);
    __m256 raw[4][QK_GROUP_ROWS];
    for (int64_t i0 = 0; i0 < n; i0 += QK_GROUP_ROWS) {
        const int64_t m = n - i0 < QK_GROUP_ROWS ? n - i0 : QK_GROUP_ROWS;
        const void *const *rows = krows + i0;
        float *sc = scores + i0;
        int64_t g0 = 0;
#define QK_BLOCK(GB) qk_group(form, GB, qk_heads(form, q, g0, D), form == QK_Q16 ? qscale + g0 : NULL, D, rows, m, raw, sc + g0 * ld, ld, &ps, per_step)
        if (form == IFA__KV_F16 || form == QK_Q16) {
            for (; g0 + 4 <= G; g0 += 4) QK_BLOCK(4);
        } else {
            /* One copy of the block for the other dtypes: with two blocks (G = 8) written out,
             * GCC 12 ran their qk at 52 against 30 ns per row in L1 (bf16 and int8; float16's two
             * copies ran at 24.5 against 26.9 for one). */
#pragma GCC unroll 1
            for (; g0 + 4 <= G; g0 += 4) QK_BLOCK(4);
        }
        switch (G - g0) {
        case 1: QK_BLOCK(1); break;
        case 2: QK_BLOCK(2); break;
        case 3: QK_BLOCK(3); break;
        default: break;
        }
#undef QK_BLOCK
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

/* ---- pv ----------------------------------------------------------------------------------- */

/* One slice for GB heads over all n rows: W = 3 or 2 full vectors (24 or 16 floats at d0), W = 1
 * one full vector, W = 0 one vector of the last tail (< 8) elements. */
IFA__INLINE void pv_slice(const int kind, const int GB, const int W, const float *p, int64_t ld, int64_t D,
                          const void *const *vrows, int64_t n, float *acc, int64_t d0) {
    const int es = elem_size(kind);
    const int nv = W == 0 ? 1 : W;
    const int64_t tail = D - d0;
    const __m256i lm = lane_mask(W == 0 ? tail : 8);
    __m256 a[4][3];
    for (int g = 0; g < GB; g++)
        for (int w = 0; w < nv; w++)
            a[g][w] = W == 0 ? _mm256_maskload_ps(acc + g * D + d0, lm) : _mm256_loadu_ps(acc + g * D + d0 + 8 * w);
    for (int64_t i = 0; i < n; i++) {
        const char *row = (const char *)vrows[i] + d0 * es;
        __m256 x[3];
        if (kind == IFA__KV_BF16 && W == 2) { /* the accumulators' quads 1 and 2 swapped (bf16_split) */
            x[0] = bf16_split(0, row);
            x[1] = bf16_split(1, row);
        } else {
            for (int w = 0; w < nv; w++)
                x[w] = W == 0 ? load8_tail(kind, row, tail) : load8(kind, row + 8 * w * es);
        }
        for (int g = 0; g < GB; g++) {
            const __m256 pb = _mm256_broadcast_ss(p + g * ld + i);
            for (int w = 0; w < nv; w++) a[g][w] = _mm256_fmadd_ps(pb, x[w], a[g][w]);
        }
    }
    for (int g = 0; g < GB; g++)
        for (int w = 0; w < nv; w++) {
            if (W == 0)
                store_first_lanes(acc + g * D + d0, a[g][w], tail);
            else
                _mm256_storeu_ps(acc + g * D + d0 + 8 * w, a[g][w]);
        }
}

IFA__INLINE void pv_heads(const int kind, const int W, const float *p, int64_t ld, int64_t G, int64_t D,
                          const void *const *v, int64_t n, float *acc, int64_t d0) {
    int64_t g0 = 0;
    for (; g0 + 4 <= G; g0 += 4) pv_slice(kind, 4, W, p + g0 * ld, ld, D, v, n, acc + g0 * D, d0);
    switch (G - g0) {
    case 1: pv_slice(kind, 1, W, p + g0 * ld, ld, D, v, n, acc + g0 * D, d0); break;
    case 2: pv_slice(kind, 2, W, p + g0 * ld, ld, D, v, n, acc + g0 * D, d0); break;
    case 3: pv_slice(kind, 3, W, p + g0 * ld, ld, D, v, n, acc + g0 * D, d0); break;
    default: break;
    }
}

IFA__INLINE void pv_impl_g(const int kind, const float *p, int64_t ld, const int64_t G, const int64_t D,
                           const void *const *v, int64_t n, float *acc, ifa__prefetch_list prefetch) {
    /* The next call's rows are prefetched a few lines per slice of 24 or 16 floats, spread evenly. */
    ifa__prefetch_stream ps = ifa__prefetch_begin_list(prefetch);
    /* D covered by 24-float slices; bfloat16 takes 16-float ones only, each a block of bf16_split. */
    const int64_t d3 = kind != IFA__KV_BF16 && D % 16 == 0 ? D / 48 * 48 : 0;
    const int64_t slices = d3 / 24 + (D - d3) / 16;
    const int64_t per_slice = ifa__prefetch_per_step(&ps, slices);
    int64_t d0 = 0;
    /* Slices of 24 floats (12 accumulators for 4 heads) while D allows an even number of them and
     * leaves a multiple of 16 (D = 128: 4 x 24 + 2 x 16): 12 chains of dependent FMAs leave the
     * FMA units slack that 8 (2 FMAs per cycle at a latency of 4) do not. In L1, 16 rows per call
     * (sixteenth session, ns per row): G = 1 6.7 -> 5.7, G = 4 12.8 -> 12.3, G = 7 24.0 -> 19.9,
     * G = 8 26.6 -> 24.5; int8 rows likewise. bfloat16 rows take 16-float slices only, converted
     * by one unpack per vector (bf16_split), faster than 24-float ones converted by load8: G = 4
     * pv 12.6-12.7 -> 11.1-11.2, G = 8 26.0 -> 23.4 (twenty-fifth session). */
    for (; d0 < d3; d0 += 24) {
        ifa__prefetch_next(&ps, per_slice);
        pv_heads(kind, 3, p, ld, G, D, v, n, acc, d0);
    }
    for (; d0 + 16 <= D; d0 += 16) {
        ifa__prefetch_next(&ps, per_slice);
        pv_heads(kind, 2, p, ld, G, D, v, n, acc, d0);
    }
    ifa__prefetch_next(&ps, ifa__prefetch_lines(&ps));
    for (; d0 + 8 <= D; d0 += 8) pv_heads(kind, 1, p, ld, G, D, v, n, acc, d0);
    if (d0 < D) pv_heads(kind, 0, p, ld, G, D, v, n, acc, d0);
}

IFA__INLINE void pv_impl(const int kind, const float *p, int64_t ld, int64_t G, int64_t D, const void *const *v,
                         int64_t n, float *acc, ifa__prefetch_list prefetch) {
    IFA__WITH_CONST_GD(G, D, pv_impl_g(kind, p, ld, GC, DC, v, n, acc, prefetch));
}

/* ---- The instances ------------------------------------------------------------------------ */

IFA__DEFINE_QK_PV(f16, IFA__KV_F16)
IFA__DEFINE_QK_PV(bf16, IFA__KV_BF16)
IFA__DEFINE_QK_PV(f32, IFA__KV_F32)
IFA__DEFINE_QK_PV(i8, IFA__KV_I8)

static void qk_i8_q16_avx2(const int16_t *q16, const float *qscale, int64_t G, int64_t D, const void *const *krows,
                           int64_t n, float *scores, int64_t ld, ifa__prefetch_list prefetch) {
    qk_drive(QK_Q16, q16, qscale, G, D, krows, n, scores, ld, prefetch);
}

/* ---- pv, int8 V on 16-bit fixed-point weights (VPMADDWD on pairs of rows) ------------------- */

/* kernels.h's pv_i8_q16. VPMADDWD adds the products of adjacent 16-bit pairs into each 32-bit
 * lane, so a lane pairs rows i and i+1 of one d: the two rows (sign-extended to int16) are
 * interleaved with VPUNPCKLWD/VPUNPCKHWD and each head broadcasts its two weights as one 32-bit
 * value. The unpacks work inside 128-bit lanes, so of a 16-wide group of d the "lo" accumulator
 * holds d = 0-3 and 8-11, "hi" 4-7 and 12-15; two VPERM2I128 restore the order at the end. An
 * odd n pairs the last row with itself at weight 0. */

/* One slice of 16 d from d0 on for GB heads over all rows: `full` 16 d, else the D tail through
 * zeroed buffers. 16 d, two accumulators per head: with 32 d the 16 accumulators of 4 heads and
 * the row vectors outgrew the 16 ymm registers, and the kernel ran slower than the float pv.
 * vrows has an entry past the last row when n is odd (a copy of the last row, whose partner
 * weight w[n] is 0: pv_q16_g), so the pair loop tests neither the row count nor the width. */
IFA__INLINE void pv_q16_slice(const int GB, const int full, const uint16_t *w, const float *inv, int64_t D,
                              const void *const *vrows, int64_t n, float *acc, int64_t d0) {
    const int64_t width = full ? 16 : D - d0; /* d of this slice */
    __m256i a[4][2];
    for (int g = 0; g < GB; g++) a[g][0] = a[g][1] = _mm256_setzero_si256();
#pragma GCC unroll 2
    for (int64_t i = 0; i < n; i += 2) {
        const int8_t *r0 = (const int8_t *)vrows[i] + d0, *r1 = (const int8_t *)vrows[i + 1] + d0;
        __m256i va, vb;
        if (full) {
            va = load16_i8(r0);
            vb = load16_i8(r1);
        } else {
            int8_t b0[16] = {0}, b1[16] = {0};
            memcpy(b0, r0, (size_t)width);
            memcpy(b1, r1, (size_t)width);
            va = load16_i8(b0);
            vb = load16_i8(b1);
        }
        const __m256i x0 = _mm256_unpacklo_epi16(va, vb), x1 = _mm256_unpackhi_epi16(va, vb);
        for (int g = 0; g < GB; g++) {
            int32_t wpair; /* w_i and w_i+1 as one 32-bit value (memcpy: no type punning) */
            memcpy(&wpair, w + g * 64 + i, sizeof wpair);
            const __m256i pw = _mm256_set1_epi32(wpair);
            a[g][0] = _mm256_add_epi32(a[g][0], _mm256_madd_epi16(pw, x0));
            a[g][1] = _mm256_add_epi32(a[g][1], _mm256_madd_epi16(pw, x1));
        }
    }
    for (int g = 0; g < GB; g++) {
        const __m256i sums[2] = {_mm256_permute2x128_si256(a[g][0], a[g][1], 0x20),
                                 _mm256_permute2x128_si256(a[g][0], a[g][1], 0x31)};
        const __m256 scale = _mm256_set1_ps(inv[g]);
        for (int e = 0; e < 2; e++) {
            const int64_t count = width - 8 * e; /* d of this vector */
            if (count <= 0) break;
            float *o = acc + g * D + d0 + 8 * e;
            const __m256 total = _mm256_cvtepi32_ps(sums[e]);
            if (count >= 8) {
                _mm256_storeu_ps(o, _mm256_fmadd_ps(scale, total, _mm256_loadu_ps(o)));
            } else {
                const __m256i lm = lane_mask(count);
                store_first_lanes(o, _mm256_fmadd_ps(scale, total, _mm256_maskload_ps(o, lm)), count);
            }
        }
    }
}

/* All slices of D for a block of GB heads, prefetching a share of the next call's rows before
 * each. Per slice rather than per pair of rows as qk does: the stream's bookkeeping in the pair
 * loop took general registers the loop needed, and at G = 4, 32 rows per call, the kernel ran at
 * 12.4 ns per row in L1 against 10.4 (sixteenth session). */
IFA__INLINE void pv_q16_heads(const int GB, const uint16_t *w, const float *inv, int64_t D, const void *const *v,
                              int64_t n, float *acc, ifa__prefetch_stream *ps, int64_t per_slice) {
    int64_t d0 = 0;
    for (; d0 + 16 <= D; d0 += 16) {
        ifa__prefetch_next(ps, per_slice);
        pv_q16_slice(GB, 1, w, inv, D, v, n, acc, d0);
    }
    if (d0 < D) {
        ifa__prefetch_next(ps, per_slice);
        pv_q16_slice(GB, 0, w, inv, D, v, n, acc, d0);
    }
}

/* The 16-bit weights of head pg (n of them, then a 0 when n is odd) and its scale a / 32767, as
 * kernels.h says (rne by VCVTPS2DQ in the default rounding mode). Returns 0 when every weight is
 * 0 (the head adds nothing). */
IFA__INLINE int pv_q16_weights(const float *pg, int64_t n, uint16_t *w, float *inv) {
    const __m256 sign = _mm256_set1_ps(-0.0f);
    __m256 mx = _mm256_setzero_ps();
    int64_t i = 0;
    for (; i + 8 <= n; i += 8) mx = _mm256_max_ps(mx, _mm256_andnot_ps(sign, _mm256_loadu_ps(pg + i)));
    float a = hmax8(mx);
    for (; i < n; i++) a = fabsf(pg[i]) > a ? fabsf(pg[i]) : a;
    if (!(a > 0.0f)) {
        memset(w, 0, sizeof *w * (size_t)(n + (n & 1)));
        *inv = 0.0f;
        return 0;
    }
    const float s = 32767.0f / a;
    *inv = a / 32767.0f;
    const __m256 vs = _mm256_set1_ps(s);
    for (i = 0; i + 8 <= n; i += 8) {
        const __m256i q = _mm256_cvtps_epi32(_mm256_mul_ps(_mm256_loadu_ps(pg + i), vs));
        /* |q| <= 32767: the signed pack saturates nothing; it packs within 128-bit lanes. */
        const __m128i h = _mm_packs_epi32(_mm256_castsi256_si128(q), _mm256_extracti128_si256(q, 1));
        _mm_storeu_si128((__m128i *)(w + i), h);
    }
    for (; i < n; i++) w[i] = (uint16_t)(int16_t)_mm_cvtss_si32(_mm_set_ss(pg[i] * s));
    if (n & 1) w[n] = 0;
    return 1;
}

/* One block of gb <= 4 heads from head g0: their weights, then all slices of D. */
IFA__INLINE void pv_q16_block(const float *p, int64_t ld, int64_t g0, int64_t gb, int64_t D, const void *const *v,
                              int64_t n, float *acc, ifa__prefetch_stream *ps, int64_t per_slice) {
    uint16_t w[4 * 64];
    float inv[4] = {0};
    int any = 0;
    for (int64_t g = 0; g < gb; g++) any |= pv_q16_weights(p + (g0 + g) * ld, n, w + g * 64, &inv[g]);
    if (!any) return;
    switch (gb) {
    case 1: pv_q16_heads(1, w, inv, D, v, n, acc + g0 * D, ps, per_slice); break;
    case 2: pv_q16_heads(2, w, inv, D, v, n, acc + g0 * D, ps, per_slice); break;
    case 3: pv_q16_heads(3, w, inv, D, v, n, acc + g0 * D, ps, per_slice); break;
    default: pv_q16_heads(4, w, inv, D, v, n, acc + g0 * D, ps, per_slice); break;
    }
}

IFA__INLINE void pv_q16_g(const float *p, int64_t ld, const int64_t G, const int64_t D, const void *const *v,
                          int64_t n, float *acc, ifa__prefetch_list prefetch) {
    ifa__prefetch_stream ps = ifa__prefetch_begin_list(prefetch);
    const int64_t steps = ((D + 15) / 16) * ((G + 3) / 4);
    const int64_t per_slice = ifa__prefetch_per_step(&ps, steps);
    /* An odd n: the last row's partner (pv_q16_slice), once for every block of heads. */
    const void *padded[IFA__KERNEL_MAX_ROWS + 1];
    if (n & 1) {
        memcpy(padded, v, sizeof *v * (size_t)n);
        padded[n] = v[n - 1];
        v = padded;
    }
    for (int64_t g0 = 0; g0 < G; g0 += 4) pv_q16_block(p, ld, g0, G - g0 < 4 ? G - g0 : 4, D, v, n, acc, &ps, per_slice);
    ifa__prefetch_next(&ps, ifa__prefetch_lines(&ps));
}

static void pv_i8_q16_avx2(const float *p, int64_t ld, int64_t G, int64_t D, const void *const *v, int64_t n,
                           float *acc, ifa__prefetch_list prefetch) {
    /* A weight that is not finite sends the whole call down the float path (kernels.h): its
     * exponent bits are all ones. */
    const __m256i expo = _mm256_set1_epi32(0x7F800000);
    __m256i odd = _mm256_setzero_si256();
    int scalar_odd = 0;
    for (int64_t g = 0; g < G; g++) {
        int64_t i = 0;
        for (; i + 8 <= n; i += 8) {
            const __m256i e = _mm256_and_si256(_mm256_loadu_si256((const __m256i *)(p + g * ld + i)), expo);
            odd = _mm256_or_si256(odd, _mm256_cmpeq_epi32(e, expo));
        }
        for (; i < n; i++) scalar_odd |= !isfinite(p[g * ld + i]);
    }
    if (scalar_odd || !_mm256_testz_si256(odd, odd))
        pv_impl(IFA__KV_I8, p, ld, G, D, v, n, acc, prefetch);
    else
        IFA__WITH_CONST_GD(G, D, pv_q16_g(p, ld, GC, DC, v, n, acc, prefetch));
}

/* ---- softmax ------------------------------------------------------------------------------ */

/* expf, vectorised (Cephes, as in attention_avx512.c), in two parts. exp8_mantissa splits
 * x = n ln2 + r (x within [-110, 89]) and returns y = e^r and n. exp8 clamps x to that range
 * first (which keeps NaN: the constant is MAXPS/MINPS's first operand, and makes -inf and -1e12
 * give exactly 0), then builds 2^n as 2^n1 * 2^n2 with n1 = n >> 1 and n2 = n - n1, both within
 * the normal exponent range for n in [-159, 129], so the product rounds once, into the
 * subnormals where it must. */
IFA__INLINE __m256 exp8_mantissa(__m256 x, __m256i *ni) {
    /* n = round(x log2e): adding 1.5 * 2^23 rounds to an integer, which then sits in the low
     * mantissa bits of t, so n needs no VROUNDPS and its integer form no VCVTPS2DQ. */
    const __m256 magic = _mm256_set1_ps(12582912.0f);
    const __m256 t = _mm256_fmadd_ps(x, _mm256_set1_ps(IFA__EXP_LOG2E), magic);
    const __m256 n = _mm256_sub_ps(t, magic);
    __m256 r = _mm256_fnmadd_ps(n, _mm256_set1_ps(IFA__EXP_LN2_HI), x);
    r = _mm256_fnmadd_ps(n, _mm256_set1_ps(IFA__EXP_LN2_LO), r);
    /* P0 r^5 + ... + P5 in Estrin's form, (P0 r + P1) r^4 + (P2 r + P3) r^2 + (P4 r + P5): three
     * dependent FMAs after r instead of Horner's five. */
    const __m256 r2 = _mm256_mul_ps(r, r);
    const __m256 a = _mm256_fmadd_ps(_mm256_set1_ps(IFA__EXP_P0), r, _mm256_set1_ps(IFA__EXP_P1));
    const __m256 b = _mm256_fmadd_ps(_mm256_set1_ps(IFA__EXP_P2), r, _mm256_set1_ps(IFA__EXP_P3));
    const __m256 c = _mm256_fmadd_ps(_mm256_set1_ps(IFA__EXP_P4), r, _mm256_set1_ps(IFA__EXP_P5));
    const __m256 y = _mm256_fmadd_ps(_mm256_fmadd_ps(a, r2, b), r2, c);
    *ni = _mm256_sub_epi32(_mm256_castps_si256(t), _mm256_castps_si256(magic));
    return _mm256_fmadd_ps(y, r2, _mm256_add_ps(r, _mm256_set1_ps(1.0f)));
}

IFA__INLINE __m256 exp8(__m256 x) {
    x = _mm256_max_ps(_mm256_set1_ps(IFA__EXP_MIN), x);
    x = _mm256_min_ps(_mm256_set1_ps(IFA__EXP_MAX), x);
    __m256i ni;
    const __m256 y = exp8_mantissa(x, &ni);
    const __m256i n1 = _mm256_srai_epi32(ni, 1), n2 = _mm256_sub_epi32(ni, n1);
    const __m256i bias = _mm256_set1_epi32(127);
    const __m256 s1 = _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_add_epi32(n1, bias), 23));
    const __m256 s2 = _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_add_epi32(n2, bias), 23));
    return _mm256_mul_ps(_mm256_mul_ps(y, s1), s2);
}

/* exp8 for x in [-86.5, 0], where the result is a normal float: y * 2^n as n added to y's
 * exponent field (y is in [0.7, 1.42], so the field stays in [1, 127]). Exact, so the same bits
 * as exp8's two multiplies, in 2 operations instead of 8, and no clamps. The softmax's
 * x = s - max is never above 0; exp8_normal_range checks the lower end (and NaN). */
IFA__INLINE __m256 exp8_normal(__m256 x) {
    __m256i ni;
    const __m256 y = exp8_mantissa(x, &ni);
    return _mm256_castsi256_ps(_mm256_add_epi32(_mm256_castps_si256(y), _mm256_slli_epi32(ni, 23)));
}

/* Whether exp8_normal is exact for every lane of x <= 0: none below -86.5, none NaN. */
IFA__INLINE int exp8_normal_range(__m256 x) {
    return !_mm256_movemask_ps(_mm256_cmp_ps(x, _mm256_set1_ps(IFA__EXP_NORMAL_MIN), _CMP_NGE_UQ));
}

/* Whether every lane of x <= 0 is in exp8_normal's range or so far below it that its exp is 0
 * (x < -104.5: a masked score's -1e12, a -inf); none between, none NaN. */
IFA__INLINE int exp8_normal_or_zero_range(__m256 x) {
    const __m256 below = _mm256_cmp_ps(x, _mm256_set1_ps(IFA__EXP_NORMAL_MIN), _CMP_NGE_UQ);
    const __m256 not_zero = _mm256_cmp_ps(x, _mm256_set1_ps(IFA__EXP_ZERO_BELOW), _CMP_NLT_UQ);
    return !_mm256_movemask_ps(_mm256_and_ps(below, not_zero));
}

/* exp8_normal for x that passed exp8_normal_or_zero_range: the lanes below the normal range are
 * exactly 0, as exp8 would give them. */
IFA__INLINE __m256 exp8_normal_or_zero(__m256 x) {
    const __m256 lo = _mm256_set1_ps(IFA__EXP_NORMAL_MIN);
    return _mm256_and_ps(exp8_normal(_mm256_max_ps(x, lo)), _mm256_cmp_ps(x, lo, _CMP_GE_OQ));
}

/* Lane g of the result = the sum of the 8 lanes of v[g], g < 8: three rounds of HADDPS and one
 * cross-lane add reduce all eight together, where one horizontal sum per vector is a chain of
 * about 6 dependent operations plus the insertion of its lane. */
IFA__INLINE __m256 sum_each8(const __m256 *v) {
    const __m256 h0123 = _mm256_hadd_ps(_mm256_hadd_ps(v[0], v[1]), _mm256_hadd_ps(v[2], v[3]));
    const __m256 h4567 = _mm256_hadd_ps(_mm256_hadd_ps(v[4], v[5]), _mm256_hadd_ps(v[6], v[7]));
    /* h0123 holds the sums of lanes 0-3 of v[0..3] in its low half and of lanes 4-7 in its high
     * half; likewise h4567 for v[4..7]. */
    return _mm256_add_ps(_mm256_permute2f128_ps(h0123, h4567, 0x20), _mm256_permute2f128_ps(h0123, h4567, 0x31));
}

/* Weights of R <= 4 heads (rows s, s + ld, ...) in place, s = exp(s - mx), and their lane-wise
 * sums in part[0..R). A maximum of -inf (all scores so far -inf) subtracts 0 instead, so the
 * weights are exp(-inf) = 0, not NaN (see the reference kernel). The exps of the R heads are
 * written side by side so that their dependent chains overlap. */
IFA__INLINE void softmax_weights8(const int R, float *s, int64_t ld, int64_t n, const float *mx, __m256 *part) {
    __m256 vmx[4], vsum[4];
    for (int j = 0; j < R; j++) {
        vmx[j] = _mm256_set1_ps(mx[j] == -INFINITY ? 0.0f : mx[j]);
        vsum[j] = _mm256_setzero_ps();
    }
    int64_t i = 0;
    for (; i + 8 <= n; i += 8) { /* whole vectors: VMASKMOVPS stores are slow on some cores */
        __m256 x[4], e[4];
        for (int j = 0; j < R; j++) x[j] = _mm256_sub_ps(_mm256_loadu_ps(s + j * ld + i), vmx[j]);
        /* One test for the R vectors: in the usual case every weight is a normal float and all
         * take the short path; vectors with masked (-1e12) or -inf scores a second test, and
         * weights below 2^-125 that are not 0 the full path. */
        int normal = 1;
        for (int j = 0; j < R; j++) normal &= exp8_normal_range(x[j]);
        if (normal) {
            for (int j = 0; j < R; j++) e[j] = exp8_normal(x[j]);
        } else {
            /* Masked scores (-1e12) in a vector are the common reason to get here: their weights
             * are 0, and the other lanes can still take the short path. */
            int normal_or_zero = 1;
            for (int j = 0; j < R; j++) normal_or_zero &= exp8_normal_or_zero_range(x[j]);
            if (normal_or_zero)
                for (int j = 0; j < R; j++) e[j] = exp8_normal_or_zero(x[j]);
            else
                for (int j = 0; j < R; j++) e[j] = exp8(x[j]);
        }
        for (int j = 0; j < R; j++) {
            _mm256_storeu_ps(s + j * ld + i, e[j]);
            vsum[j] = _mm256_add_ps(vsum[j], e[j]);
        }
    }
    if (i < n) {
        const __m256i lm = lane_mask(n - i);
        __m256 e[4];
        for (int j = 0; j < R; j++) e[j] = exp8(_mm256_sub_ps(_mm256_maskload_ps(s + j * ld + i, lm), vmx[j]));
        for (int j = 0; j < R; j++) {
            store_first_lanes(s + j * ld + i, e[j], n - i);
            vsum[j] = _mm256_add_ps(vsum[j], _mm256_and_ps(e[j], _mm256_castsi256_ps(lm)));
        }
    }
    for (int j = 0; j < R; j++) part[j] = vsum[j];
}

/* As on AVX-512, in blocks of 8 heads: the maxima first (a head whose scores all stay below its
 * finite running maximum keeps it without a horizontal reduction), then the exps four heads at
 * a time, the sums of the block reduced together, and the block's alphas as one vector exp, or
 * none when no maximum moved (alpha = exp(0) = 1 exactly); whole vectors without VMASKMOVPS, and
 * the block's alpha, l and m in plain stores (store_first_lanes).
 * Measured in L1, 16 rows per call: G = 4 4.8 -> 3.0 ns per row, G = 7 8.1 -> 4.3, G = 8
 * 9.4 -> 4.9, against one head at a time with a horizontal maximum, a vector exp for its one
 * alpha and a horizontal sum each. */
static void softmax_avx2(float *s, int64_t ld, int64_t G, int64_t n, float *m, float *l, float *alpha) {
    const __m256 ninf = _mm256_set1_ps(-INFINITY);
    for (int64_t g0 = 0; g0 < G; g0 += 8) {
        const int64_t gb = G - g0 < 8 ? G - g0 : 8;
        float mx[8] = {0};
        int changed = 0; /* heads whose maximum moved or is not finite */
        for (int64_t g = 0; g < gb; g++) {
            const float *sg = s + (g0 + g) * ld;
            /* MAXPS(x, acc) keeps acc when x is NaN, as the reference's "x > mx" does. Masked-off
             * lanes read as 0 and are replaced by -inf. */
            __m256 vmax = ninf;
            int64_t i = 0;
            for (; i + 8 <= n; i += 8) vmax = _mm256_max_ps(_mm256_loadu_ps(sg + i), vmax);
            if (i < n) {
                const __m256i lm = lane_mask(n - i);
                const __m256 x = _mm256_blendv_ps(ninf, _mm256_maskload_ps(sg + i, lm), _mm256_castsi256_ps(lm));
                vmax = _mm256_max_ps(x, vmax);
            }
            const float mg = m[g0 + g];
            if (isfinite(mg) && !_mm256_movemask_ps(_mm256_cmp_ps(vmax, _mm256_set1_ps(mg), _CMP_GT_OQ))) {
                mx[g] = mg;
                continue;
            }
            changed |= 1 << g;
            const float smax = hmax8(vmax);
            mx[g] = smax > mg ? smax : mg;
        }
        /* All eight zeroed first: zeroing the gb..7 left over became a REP STOSQ (a memset of
         * variable length), whose start-up cost 7% of the kernel's time. */
        __m256 part[8];
        for (int h = 0; h < 8; h++) part[h] = _mm256_setzero_ps();
        int64_t g = 0;
        for (; g + 4 <= gb; g += 4) softmax_weights8(4, s + (g0 + g) * ld, ld, n, mx + g, part + g);
        switch (gb - g) {
        case 1: softmax_weights8(1, s + (g0 + g) * ld, ld, n, mx + g, part + g); break;
        case 2: softmax_weights8(2, s + (g0 + g) * ld, ld, n, mx + g, part + g); break;
        case 3: softmax_weights8(3, s + (g0 + g) * ld, ld, n, mx + g, part + g); break;
        default: break;
        }
        const __m256 vsums = sum_each8(part);
        const __m256i kb = lane_mask(gb);
        const __m256 vl = _mm256_maskload_ps(l + g0, kb);
        if (!changed) {
            store_first_lanes(alpha + g0, _mm256_set1_ps(1.0f), gb);
            store_first_lanes(l + g0, _mm256_add_ps(vl, vsums), gb);
            continue;
        }
        /* alpha = exp(m - mx), 0 where m is still -inf (no score before this chunk). */
        const __m256 vm = _mm256_maskload_ps(m + g0, kb), vnew = _mm256_loadu_ps(mx);
        const __m256 seen = _mm256_cmp_ps(vm, ninf, _CMP_NEQ_UQ);
        const __m256 a = _mm256_and_ps(seen, exp8(_mm256_sub_ps(vm, vnew)));
        store_first_lanes(alpha + g0, a, gb);
        store_first_lanes(l + g0, _mm256_add_ps(_mm256_mul_ps(vl, a), vsums), gb);
        store_first_lanes(m + g0, vnew, gb);
    }
}

/* ---- float16 rows ------------------------------------------------------------------------- */

static void f16_to_f32_avx2(const void *src, int64_t n, float *dst) {
    const char *s = (const char *)src;
    int64_t i = 0;
    for (; i + 8 <= n; i += 8) _mm256_storeu_ps(dst + i, _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(s + 2 * i))));
    for (; i < n; i++) {
        uint16_t h;
        memcpy(&h, s + 2 * i, sizeof h);
        dst[i] = _mm_cvtss_f32(_mm_cvtph_ps(_mm_cvtsi32_si128(h)));
    }
}

/* VCVTPS2PH with the round-to-nearest-even immediate: the same result as ifa__f32_to_f16. */
static void f32_to_f16_avx2(const float *src, int64_t n, void *dst) {
    char *d = (char *)dst;
    int64_t i = 0;
    for (; i + 8 <= n; i += 8)
        _mm_storeu_si128((__m128i *)(d + 2 * i), _mm256_cvtps_ph(_mm256_loadu_ps(src + i), _MM_FROUND_TO_NEAREST_INT));
    for (; i < n; i++) {
        const uint16_t h = (uint16_t)_mm_extract_epi16(_mm_cvtps_ph(_mm_set_ss(src[i]), _MM_FROUND_TO_NEAREST_INT), 0);
        memcpy(d + 2 * i, &h, sizeof h);
    }
}

/* ---- Rows of float32 scaled (kernels.h) ------------------------------------------------------ */

static void mul_row_avx2(const float *src, float f, int64_t n, float *dst) {
    const __m256 vf = _mm256_set1_ps(f);
    int64_t i = 0;
    for (; i + 8 <= n; i += 8) _mm256_storeu_ps(dst + i, _mm256_mul_ps(_mm256_loadu_ps(src + i), vf));
    for (; i < n; i++) dst[i] = src[i] * f;
}

static void div_row_avx2(const float *src, float f, int64_t n, float *dst) {
    const __m256 vf = _mm256_set1_ps(f);
    int64_t i = 0;
    for (; i + 8 <= n; i += 8) _mm256_storeu_ps(dst + i, _mm256_div_ps(_mm256_loadu_ps(src + i), vf));
    for (; i < n; i++) dst[i] = src[i] / f;
}

const ifa__kernel_table ifa__kernels_avx2 = {
    .isa = "avx2",
    .qk = {[IFA__KV_F16] = qk_f16, [IFA__KV_BF16] = qk_bf16, [IFA__KV_F32] = qk_f32, [IFA__KV_I8] = qk_i8},
    .pv = {[IFA__KV_F16] = pv_f16, [IFA__KV_BF16] = pv_bf16, [IFA__KV_F32] = pv_f32, [IFA__KV_I8] = pv_i8},
    .qk_i8_q16 = qk_i8_q16_avx2,
    .pv_i8_q16 = pv_i8_q16_avx2,
    .softmax = softmax_avx2,
    .f16_to_f32 = f16_to_f32_avx2,
    .f32_to_f16 = f32_to_f16_avx2,
    .mul_row = mul_row_avx2,
    .div_row = div_row_avx2,
    .needs_unit_d_stride = 1,
    .split_tokens_wide = 1, /* Zen 3: docs/benchmarks.md, eighteenth session */
    .heavy_i8_small_windows = 1, /* Zen 3: docs/benchmarks.md, twenty-third session */
    .bf16_swapped_quads = 1,     /* bf16_split */
};
