/*
 * kernels.h - the kernel families and the table the library calls them through.
 *
 * Two families do all the work that touches the KV cache, each for every KV storage dtype:
 *
 *   qk:  scores[g*ld + i]  = sum_d q[g*D + d] * K(i, d)            g < G, i < n
 *   pv:  acc[g*D + d]     += sum_i p[g*ld + i] * V(i, d)           g < G, d < D
 *
 * plus the online-softmax step between them (below). Row i is given by its address rows[i]
 * (element d at rows[i] + d*d_stride elements), so one call can take rows from several pages of
 * any size: attend.c hands a kernel up to 64 rows gathered across pages. n <= 64.
 *
 * `prefetch` lists stretches of memory that the caller wants in cache soon (attend.c: a share of
 * the window ahead, in address order; ifa__prefetch_list below). A kernel may issue software
 * prefetches for them and must not read them. It spreads them evenly over its own
 * work, a few lines at a time (ifa__prefetch_stream below): measured, a burst of a whole list at
 * once overflows the core's miss buffers and streams from DRAM up to 1.6x slower than the same
 * lines spread out (docs/benchmarks.md). Pages of a paged cache are scattered, so the hardware
 * prefetchers cannot find them.
 *
 * One call covers the G query heads that share a KV head, so each K and V row is read once for
 * all of them (GQA sharing). int8 rows are used raw: the caller folds the antiquant scale and
 * offset into q, p and the final output (see attend.c), so a kernel only ever multiplies.
 *
 * A kernel includes only this header and its intrinsics: no allocation, no threads, no errors
 * (its inputs were validated). The reference kernels (kernels/ref/) accept any d_stride; an ISA
 * kernel may require d_stride == 1 and is only called then.
 */
#ifndef IFA_KERNELS_H
#define IFA_KERNELS_H

#include <stdint.h>

/* What a kernel prefetches: n stretches of `bytes` bytes each, from runs[0..n). A stretch is one
 * row of the next unit, or several that lie end to end: attend.c lists a token's rows of all the
 * tile's heads as one stretch when they sit side by side, so that neither it nor the kernel
 * handles each 256-byte row on its own (two threads, cold: int8 1.03x, G = 7 and 8 1.02-1.03x,
 * Llama-3-8B fp16 1.00x; docs/kernels.md). n = 0 (IFA__NO_PREFETCH): nothing. */
typedef struct ifa__prefetch_list {
    const void *const *runs;
    int64_t n;
    int64_t bytes;
} ifa__prefetch_list;

#define IFA__NO_PREFETCH ((ifa__prefetch_list){NULL, 0, 0})

typedef enum ifa__kv_kind {
    IFA__KV_F16,
    IFA__KV_BF16,
    IFA__KV_F32,
    IFA__KV_I8,
    IFA__KV_KIND_COUNT
} ifa__kv_kind;

typedef void (*ifa__qk_fn)(const float *q, int64_t G, int64_t D, const void *const *rows, int64_t d_stride,
                           int64_t n, float *scores, int64_t ld, ifa__prefetch_list prefetch);

typedef void (*ifa__pv_fn)(const float *p, int64_t ld, int64_t G, int64_t D, const void *const *rows,
                           int64_t d_stride, int64_t n, float *acc, ifa__prefetch_list prefetch);

/* qk for int8 K on a query quantised to int16 (inner_precise = 1 only, attend.c):
 *
 *   scores[g*ld + i] = qscale[g] * (float)(sum_d q16[g*D + d] * K(i, d))
 *
 * The sum is exact in int32 (the caller bounds |q16| so that D * 128 * max|q16| < 2^31), so every
 * implementation gives the same bits; AVX-512 VNNI does it with VPDPWSSD, two products per lane,
 * half the instructions of the float path. K rows have unit d stride. */
typedef void (*ifa__qk_q16_fn)(const int16_t *q16, const float *qscale, int64_t G, int64_t D,
                               const void *const *rows, int64_t n, float *scores, int64_t ld,
                               ifa__prefetch_list prefetch);

/* qk for bfloat16 K on a query rounded to bfloat16 (inner_precise = 1 only, attend.c):
 *
 *   scores[g*ld + i] = sum_d qb[g*D + d] * K(i, d)       products exact, sums in float32
 *
 * which AVX-512 BF16 does with VDPBF16PS, two products per lane, half the instructions of the
 * float path (VDPBF16PS treats bfloat16 subnormals as 0). K rows have unit d stride. */
typedef void (*ifa__qk_bf16q_fn)(const uint16_t *qb, int64_t G, int64_t D, const void *const *rows, int64_t n,
                                 float *scores, int64_t ld, ifa__prefetch_list prefetch);

/* P.V for int8 V on weights rounded to 16-bit fixed point (inner_precise = 1 only, attend.c).
 * Per head g, with a = max_i |p[g*ld + i]|, s = 32767 / a and w_i = rne(p[g*ld + i] * s) (float
 * operations, |w_i| <= 32767):
 *
 *   acc[g*D + d] = fma(a / 32767, (float)(sum_i w_i * V(i, d)), acc[g*D + d])
 *
 * with the sum exact in int32 (n <= 64 rows, |w| <= 32767, |v| <= 128: below 2^31). A head with
 * a == 0 adds nothing. Each weight moves by at most a / 65534, a 2^-16 share of the largest weight
 * of the call (SPEC.md 9 lets inner_precise = 1 round p before P.V). If any weight of the call is
 * not finite, the call does the table's float pv[IFA__KV_I8] instead, so NaN and Inf propagate as
 * there. On finite weights every implementation gives the same bits; AVX-512 VNNI sums pairs of
 * rows with VPDPWSSD: half the multiply instructions of the float path and no conversion of V to
 * float. V rows have unit d stride. */
typedef void (*ifa__pv_q16_fn)(const float *p, int64_t ld, int64_t G, int64_t D, const void *const *rows, int64_t n,
                               float *acc, ifa__prefetch_list prefetch);

/* P.V for bfloat16 V on weights rounded to bfloat16 (inner_precise = 1 only, attend.c):
 *
 *   acc[g*D + d] += sum_i bf16(p[g*ld + i]) * V(i, d)     products exact, sums in float32
 *
 * (bf16() rounds to nearest even; SPEC.md 9 lets inner_precise = 1 round p to the KV's 16-bit
 * dtype). AVX-512 BF16 sums pairs of rows with VDPBF16PS, which reads V as it is stored: no
 * conversion to float32 and half the multiply instructions. VDPBF16PS treats bfloat16 subnormals
 * as 0. V rows have unit d stride. */
typedef void (*ifa__pv_bf16p_fn)(const float *p, int64_t ld, int64_t G, int64_t D, const void *const *rows,
                                 int64_t n, float *acc, ifa__prefetch_list prefetch);

/* Most rows one qk/pv call takes. */
#define IFA__KERNEL_MAX_ROWS 64

/* The online-softmax step of one chunk (softmax_state.h), for each head g < G:
 *
 *   mx       = max(m[g], max_i s[g*ld + i])
 *   alpha[g] = m[g] == -inf ? 0 : exp(m[g] - mx)
 *   s[g*ld + i] = exp(s[g*ld + i] - mx)          (in place: scores become weights)
 *   l[g]     = l[g] * alpha[g] + sum_i s[g*ld + i]
 *   m[g]     = mx
 *
 * exp may be a polynomial approximation with a relative error of a few float ulps. */
typedef void (*ifa__softmax_fn)(float *s, int64_t ld, int64_t G, int64_t n, float *m, float *l,
                                float *alpha);

/* Unit-stride float16 row conversions, for the query going in and the output going out (the
 * fixed cost of a short call is mostly these). float16 -> float32 is exact; float32 -> float16
 * rounds to nearest even, overflow to infinity, NaN stays NaN (as convert.h). */
typedef void (*ifa__f16_to_f32_fn)(const void *src, int64_t n, float *dst);
typedef void (*ifa__f32_to_f16_fn)(const float *src, int64_t n, void *dst);

/* dst[i] = src[i] * f (mul_row) or src[i] / f (div_row) for n floats; dst may be src. One IEEE
 * single-precision operation per element, so every table gives the same bits. They serve the
 * per-head work of attend.c around the kernels (the query's scale, the accumulators' rescale, the
 * output's division by l), which the baseline build does four floats at a time: the division
 * alone took a tenth of a 16-token call (docs/kernels.md). */
typedef void (*ifa__row_scale_fn)(const float *src, float f, int64_t n, float *dst);

typedef struct ifa__kernel_table {
    const char *isa; /* "ref", "avx2", "avx512" */
    ifa__qk_fn qk[IFA__KV_KIND_COUNT];
    ifa__pv_fn pv[IFA__KV_KIND_COUNT];
    ifa__qk_q16_fn qk_i8_q16; /* NULL: this table has no integer qk (attend.c uses qk[IFA__KV_I8]) */
    ifa__qk_bf16q_fn qk_bf16_qbf16; /* NULL: none (attend.c uses qk[IFA__KV_BF16]) */
    ifa__pv_q16_fn pv_i8_q16;       /* NULL: none (attend.c uses pv[IFA__KV_I8]) */
    ifa__pv_bf16p_fn pv_bf16_pbf16; /* NULL: none (attend.c uses pv[IFA__KV_BF16]) */
    ifa__softmax_fn softmax;
    ifa__f16_to_f32_fn f16_to_f32;
    ifa__f32_to_f16_fn f32_to_f16;
    ifa__row_scale_fn mul_row, div_row;
    int needs_unit_d_stride; /* 1: use the reference kernels when d_stride != 1 */
    /* Which short calls whose heads sit side by side split their tokens between threads rather
     * than their heads (attend.c, ifa__split_tokens_early), as measured on the hosts of each ISA:
     * 0: 16-bit KV with light rows only; 1: also 16-bit KV with heavy rows, and int8 KV with
     * light rows through the integer kernels (inner_precise = 1). */
    int split_tokens_wide;
    /* Windows of int8 calls with heavy rows (G > 4; attend.c, window_plan), as measured on the
     * hosts of each ISA: 0: the rule of every heavy call, at least 8 KiB of each head's rows (64
     * rows at D = 128; the AVX-512 host); 1: at least 4 KiB (32 rows) and at most two pages of the
     * paged cache (Zen 3). */
    int heavy_i8_small_windows;
    /* 1: qk[IFA__KV_BF16] and pv[IFA__KV_BF16] take q and the accumulators with the middle quads
     * of every whole block of 16 floats swapped (ifa__swap_mid_quads; the last D % 16 floats keep
     * their order), the order in which they widen 16 bfloat16 elements at a time. attend.c swaps
     * the query into it and swaps the output back (quads_swapped there). 0: natural order. */
    int bf16_swapped_quads;
} ifa__kernel_table;

/* Swaps floats 4-7 and 8-11 of every whole block of 16 of each of the `rows` rows of D floats at
 * x, in place (its own inverse). */
static inline void ifa__swap_mid_quads(float *x, int64_t rows, int64_t D) {
    for (int64_t r = 0; r < rows; r++, x += D)
        for (int64_t d = 0; d + 16 <= D; d += 16)
            for (int64_t j = 4; j < 8; j++) {
                const float t = x[d + j];
                x[d + j] = x[d + j + 4];
                x[d + j + 4] = t;
            }
}

/* The lines of a kernel's `prefetch` list as a stream: a kernel calls ifa__prefetch_next(&s, k)
 * between its loads to issue the next k lines, with k chosen so that the list is spread evenly
 * over the call, and finally with the rest. No division per line.
 *
 * The listed stretches are called rows below (most lists are rows). The order depends on whether
 * they form one run of memory (each row starting where the previous one ends: the shares of a
 * window of attend.c, and any page of a (blocks, KVN, bs, D) cache): then row after row, in
 * address order. When they lie apart (a head's rows of a
 * (blocks, bs, KVN*D) page in the sparse form, 2 KiB apart), line 0 of every row first, then
 * line 1, and so on: measured, 1.08-1.29x faster sparse calls in that cache (two threads, 1/8
 * and 1/32 of the pages), while the same order cost 7-13% on runs of memory (docs/kernels.md).
 *
 * Every line goes to the L1 (PREFETCHT0). Rows that lie apart into the L2 only (PREFETCHT2) made
 * sparse 3-D calls up to 1.4x faster in the C program but up to 1.8x slower under bench.py: in
 * one process their speed swung between full and half in phases of seconds that the T0 build
 * did not see (docs/kernels.md, *Into which cache*). */
typedef struct ifa__prefetch_stream {
    const void *const *rows;
    int64_t n;
    int64_t span; /* bytes of each row's lines, from the line the row starts in */
    int64_t r, off;
    int across; /* 1: line `off` of every row before the next line */
} ifa__prefetch_stream;

/* A row that does not start on a line boundary (a tensor of numpy's, 16-byte aligned, or an odd
 * D) touches one line more than row_bytes / 64, its last: without that line, every strided row
 * of the sparse 3-D form cost a demand miss, and those calls ran at half speed. Rows share the
 * alignment of the first when row_bytes is a multiple of 64 (their distances are multiples of a
 * row), so the first row and row_bytes decide; with an odd D a row may get one line past its
 * end, which a prefetch may touch (it never faults). In a run of misaligned rows a row's last
 * line is the next row's first, so it is issued twice: a prefetch of a line already on its way
 * costs an instruction, not a read. */
static inline ifa__prefetch_stream ifa__prefetch_begin(const void *const *rows, int64_t n, int64_t row_bytes) {
    ifa__prefetch_stream s = {rows, rows != 0 ? n : 0, 0, 0, 0, 0};
    if (s.n == 0) return s;
    const int misaligned = (((uintptr_t)rows[0] | (uintptr_t)row_bytes) & 63) != 0;
    s.span = (row_bytes + (misaligned ? 63 : 0) + 63) / 64 * 64;
    s.across = s.n >= 2 && (const char *)rows[1] != (const char *)rows[0] + row_bytes;
    return s;
}

static inline ifa__prefetch_stream ifa__prefetch_begin_list(ifa__prefetch_list list) {
    return ifa__prefetch_begin(list.runs, list.n, list.bytes);
}

/* Lines of the whole list. */
static inline int64_t ifa__prefetch_lines(const ifa__prefetch_stream *s) {
    return s->n * (s->span / 64);
}

/* Lines per step that spread the whole list over `steps` steps of a kernel (0 when steps == 0:
 * the final ifa__prefetch_next with the rest issues everything then). */
static inline int64_t ifa__prefetch_per_step(const ifa__prefetch_stream *s, int64_t steps) {
    return steps > 0 ? (ifa__prefetch_lines(s) + steps - 1) / steps : 0;
}

/* The line the stream issues next (s->r < s->n). */
static inline const void *ifa__prefetch_line(const ifa__prefetch_stream *s) {
    return (const void *)(((uintptr_t)s->rows[s->r] & ~(uintptr_t)63) + (uintptr_t)s->off);
}

static inline void ifa__prefetch_next(ifa__prefetch_stream *s, int64_t lines) {
    for (; lines > 0 && s->r < s->n; lines--) {
        __builtin_prefetch(ifa__prefetch_line(s), 0, 3);
        if (s->across) {
            if (++s->r == s->n && (s->off += 64) < s->span) s->r = 0; /* next line of row 0 */
        } else if ((s->off += 64) >= s->span) {
            s->off = 0;
            s->r++;
        }
    }
}

/* Runs `call` with GC and DC, the query heads per KV head and the head dim, as compile-time
 * constants for the shapes of common models (D = 128 with G = 1 to 8), else as G and D themselves.
 * The ISA kernels are always inline, so each case is its own copy in which the loops over head
 * blocks and slices of D unroll and every accumulator sits at a constant offset: with G and D
 * known only at run time the compiler ran out of registers for the block pointers and spilled
 * them around every row. Measured on AVX-512 with 16 rows per call (attend.c's window), in L1:
 * P.V at G = 4 5.4 instead of 7.5 ns per row; a whole call on L3-resident fp16 KV (B = 1, L = 4K)
 * 11% faster (docs/kernels.md). */
#if defined(IFA_KERNELS_ONE_COPY)
/* Sanitizer builds (CMakeLists.txt): the generic body only. Instrumented, the nine copies took
 * seven times as long to compile (100 s for the AVX-512 file, three times per test.sh run); the
 * copies are the same source with constants in, and the release build's kernel tests run them
 * against the reference for every G they serve. */
#define IFA__WITH_CONST_GD(G, D, call)                                                               \
    do {                                                                                             \
        const int64_t GC = (G), DC = (D);                                                            \
        call;                                                                                        \
    } while (0)
#else
#define IFA__WITH_CONST_GD(G, D, call)                                                               \
    do {                                                                                             \
        if ((D) != 128 || (G) < 1 || (G) > 8) {                                                      \
            const int64_t GC = (G), DC = (D);                                                        \
            call;                                                                                    \
            break;                                                                                   \
        }                                                                                            \
        const int64_t DC = 128;                                                                      \
        switch (G) {                                                                                 \
        case 1: { const int64_t GC = 1; call; } break;                                               \
        case 2: { const int64_t GC = 2; call; } break;                                               \
        case 3: { const int64_t GC = 3; call; } break;                                               \
        case 4: { const int64_t GC = 4; call; } break;                                               \
        case 5: { const int64_t GC = 5; call; } break;                                               \
        case 6: { const int64_t GC = 6; call; } break;                                               \
        case 7: { const int64_t GC = 7; call; } break;                                               \
        default: { const int64_t GC = 8; call; } break;                                              \
        }                                                                                            \
    } while (0)
#endif

/* The entry points qk_<suffix> and pv_<suffix> of an ISA file, for KV dtype `kind`, around its
 * own always-inline qk_impl and pv_impl (which need unit d stride: the table says so). */
#define IFA__DEFINE_QK_PV(suffix, kind)                                                                    \
    static void qk_##suffix(const float *q, int64_t G, int64_t D, const void *const *rows, int64_t d_stride, \
                            int64_t n, float *scores, int64_t ld, ifa__prefetch_list prefetch) {             \
        (void)d_stride;                                                                                     \
        qk_impl(kind, q, G, D, rows, n, scores, ld, prefetch);                                              \
    }                                                                                                       \
    static void pv_##suffix(const float *p, int64_t ld, int64_t G, int64_t D, const void *const *rows,      \
                            int64_t d_stride, int64_t n, float *acc, ifa__prefetch_list prefetch) {         \
        (void)d_stride;                                                                                     \
        pv_impl(kind, p, ld, G, D, rows, n, acc, prefetch);                                                 \
    }

/* The constants of the vectorised expf of every ISA file (Cephes): the input clamp, log2(e), ln 2
 * split in two for an exact Cody-Waite reduction x = n ln2 + r, and P of e^r = 1 + r + r^2 P(r). */
#define IFA__EXP_MIN (-110.0f)
#define IFA__EXP_MAX 89.0f
#define IFA__EXP_NORMAL_MIN (-86.5f) /* exp(x) >= 2^-124.8 for x >= this: a normal float */
#define IFA__EXP_ZERO_BELOW (-104.5f) /* exp(x) < 2^-150.7 for x < this: 0 in round to nearest */
#define IFA__EXP_LOG2E 1.44269504088896341f
#define IFA__EXP_LN2_HI 0.693359375f
#define IFA__EXP_LN2_LO (-2.12194440e-4f)
#define IFA__EXP_P0 1.9875691500e-4f
#define IFA__EXP_P1 1.3981999507e-3f
#define IFA__EXP_P2 8.3334519073e-3f
#define IFA__EXP_P3 4.1665795894e-2f
#define IFA__EXP_P4 1.6666665459e-1f
#define IFA__EXP_P5 5.0000001201e-1f

/* The reference table: scalar C, always built, the oracle the ISA kernels are tested against. */
extern const ifa__kernel_table ifa__kernels_ref;
#if defined(IFA_HAVE_AVX2_KERNELS)
extern const ifa__kernel_table ifa__kernels_avx2;
#endif
#if defined(IFA_HAVE_AVX512_KERNELS)
extern const ifa__kernel_table ifa__kernels_avx512;
#endif

/* The table chosen for this CPU (or forced with IFA_ISA / ifa_set_isa), picked once. */
const ifa__kernel_table *ifa__kernels(void);

#endif /* IFA_KERNELS_H */
