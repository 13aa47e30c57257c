/*
 * test_kernels.c - every ISA kernel against the scalar reference kernels, at the tile edges.
 *
 * The vector kernels tile the work (16 rows and 4 heads per qk tile on AVX-512, 8 rows on AVX2;
 * slices of 64 or 16 floats of D in pv), so the sizes swept sit on, just below and just above
 * those tiles: D in {1, 7, 8, 15, 16, 17, 31, 32, 33, 40, 64, 100, 128, 129, 256}, n in
 * {1, 2, 15, 16, 17, 31, 32, 33, 63, 64}, G in {1, ..., 9, 16} (the AVX-512 kernels have a copy per
 * G <= 8 at D = 128 and a generic one), rows further apart than D.
 * Each buffer is allocated to its exact size, so a sanitized build catches any read past a row
 * or a chunk, and the output buffers are filled with a sentinel to catch any write outside the
 * entries a kernel owns.
 *
 * The bounds are those of float32 arithmetic, not of the storage dtypes: conversions to float32
 * are exact, so the only differences from the reference are the order of the additions and the
 * fused multiply-adds. qk: the reference sums in double, a kernel in float32 over chains of about
 * D/16 + 4 additions, so |err| <= (D/16 + 8) * 2^-23 * sum_d |q_d k_d|. pv: both sum in float32
 * in row order, so |err| <= (n + 2) * 2^-23 * (|acc| + sum_i |p_i v_i|). softmax: exp to a few
 * ulps, sums over n terms.
 *
 * An ISA the CPU lacks is skipped with a printed reason; one this build lacks (its table is a
 * weak symbol, NULL when the kernel file was not compiled in) likewise.
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../../src/convert.h"
#include "../../src/kernels/kernels.h"
#include "rng.h"
#include "testing.h"

/* Weak, so this test links whether or not the library was built with each ISA's kernels (the
 * library defines IFA_HAVE_*_KERNELS for its own sources only). */
extern const ifa__kernel_table ifa__kernels_avx2 __attribute__((weak));
extern const ifa__kernel_table ifa__kernels_avx512 __attribute__((weak));

static const int64_t k_ds[] = { 1, 7, 8, 15, 16, 17, 31, 32, 33, 40, 64, 100, 128, 129, 256 };
static const int64_t k_ns[] = { 1, 2, 3, 4, 5, 7, 15, 16, 17, 23, 24, 25, 31, 32, 33, 48, 63, 64 };
static const int64_t k_gs[] = { 1, 2, 3, 4, 5, 6, 7, 8, 9, 16 };
#define MAX_G 16
static const char *const k_kind_names[] = { "f16", "bf16", "f32", "i8" };
#define NELEMS(a) ((int64_t)(sizeof(a) / sizeof((a)[0])))
#define LD 64
#define SENTINEL 12345.0f

static int64_t elem_bytes(ifa__kv_kind kind)
{
    return kind == IFA__KV_F32 ? 4 : kind == IFA__KV_I8 ? 1 : 2;
}

/* Element i of a KV buffer as float (exact). */
static float kv_get(const void *buf, ifa__kv_kind kind, int64_t i)
{
    switch (kind) {
    case IFA__KV_F16: { uint16_t h; memcpy(&h, (const char *)buf + 2 * i, 2); return ifa__f16_to_f32(h); }
    case IFA__KV_BF16: { uint16_t h; memcpy(&h, (const char *)buf + 2 * i, 2); return ifa__bf16_to_f32(h); }
    case IFA__KV_F32: { float f; memcpy(&f, (const char *)buf + 4 * i, 4); return f; }
    default: return (float)((const int8_t *)buf)[i];
    }
}

/* A KV buffer of exactly (n-1)*stride + D elements (the last row ends the allocation), values in
 * [-2, 2) (int8: the full range), gaps between rows filled too. */
static void *kv_make(ifa__kv_kind kind, int64_t n, int64_t D, int64_t stride, rng *r)
{
    const int64_t count = (n - 1) * stride + D;
    char *buf = malloc((size_t)(count * elem_bytes(kind)));
    for (int64_t i = 0; i < count; i++) {
        const float x = (float)rng_uniform(r, -2.0, 2.0);
        switch (kind) {
        case IFA__KV_F16: { const uint16_t h = ifa__f32_to_f16(x); memcpy(buf + 2 * i, &h, 2); break; }
        case IFA__KV_BF16: { const uint16_t h = ifa__f32_to_bf16(x); memcpy(buf + 2 * i, &h, 2); break; }
        case IFA__KV_F32: memcpy(buf + 4 * i, &x, 4); break;
        default: ((int8_t *)buf)[i] = (int8_t)rng_int(r, -128, 127); break;
        }
    }
    return buf;
}

static float *floats(int64_t count, rng *r, double lo, double hi)
{
    float *f = malloc((size_t)count * sizeof *f);
    for (int64_t i = 0; i < count; i++) f[i] = (float)rng_uniform(r, lo, hi);
    return f;
}

/* The CPU's own answer, independent of the library's detection (src/cpu_features.c). Off x86 the
 * build has no x86 tables, so the answer is never asked for. */
#if defined(__x86_64__) || defined(__i386__)
#define CPU_HAS(feature) __builtin_cpu_supports(feature)
#else
#define CPU_HAS(feature) 0
#endif
#define CPU_HAS_AVX2 (CPU_HAS("avx2") && CPU_HAS("fma") && CPU_HAS("f16c"))
/* A test build whose AVX-512 table is SIMDe code on AVX2 (CMake IFA_EMULATE_AVX512) runs it
 * wherever the AVX2 table runs. */
#if defined(IFA_AVX512_EMULATED)
#define CPU_HAS_AVX512_EMULATED CPU_HAS_AVX2
#else
#define CPU_HAS_AVX512_EMULATED 0
#endif

/* The tables to test, with the reason when one is skipped. */
static int isa_tables(const ifa__kernel_table **out, int verbose)
{
    int count = 0;
#if defined(__x86_64__) || defined(__i386__)
    __builtin_cpu_init();
#endif
    if (&ifa__kernels_avx2 == NULL) {
        if (verbose) tst_note("avx2: skipped, this build has no AVX2 kernels");
    } else if (!CPU_HAS_AVX2) {
        if (verbose) tst_note("avx2: skipped, this CPU lacks AVX2, FMA or F16C");
    } else {
        out[count++] = &ifa__kernels_avx2;
    }
    if (&ifa__kernels_avx512 == NULL) {
        if (verbose) tst_note("avx512: skipped, this build has no AVX-512 kernels");
    } else if (!(CPU_HAS_AVX512_EMULATED || (CPU_HAS("avx512f") && CPU_HAS("avx512bw") &&
                 CPU_HAS("avx512dq") && CPU_HAS("avx512vl") &&
                 CPU_HAS("avx512bf16") && CPU_HAS("avx512vnni")))) {
        if (verbose) tst_note("avx512: skipped, this CPU lacks AVX-512 F/BW/DQ/VL/BF16/VNNI");
    } else {
        out[count++] = &ifa__kernels_avx512;
    }
    return count;
}

/* Row stride of a case: D itself or a little more, varied with the case. */
static int64_t pick_stride(int64_t D, rng *r)
{
    static const int64_t extra[] = { 0, 1, 3, 16, 37 };
    return D + RNG_PICK(r, extra);
}

/* Row pointers for the n rows of a buffer: rows in a scrambled order (as pages of a paged cache
 * are), and a prefetch list naming the same rows backwards (kernels may prefetch but not read
 * it; pointing it at valid rows keeps a stray read harmless but the sanitizer build still
 * checks the kernels stay inside the rows they are given). */
static void row_pointers(const void *base, ifa__kv_kind kind, int64_t n, int64_t stride, uint64_t seed,
                         const void **rows, const void **pf)
{
    const int64_t es = elem_bytes(kind);
    for (int64_t i = 0; i < n; i++) {
        const int64_t j = (seed & 2) ? (i * 7 + 3) % n : i;
        rows[i] = (const char *)base + ((n % 7 == 0 || (seed & 2) == 0) ? i : j) * stride * es;
        pf[n - 1 - i] = rows[i];
    }
}

/* Whether table t's float kernels of kind take q and the accumulators in the order of
 * ifa__swap_mid_quads (kernels.h, bf16_swapped_quads): then the checks hand them over in it. */
static int swaps_quads(const ifa__kernel_table *t, ifa__kv_kind kind)
{
    return t->bf16_swapped_quads && kind == IFA__KV_BF16;
}

static void check_qk(const ifa__kernel_table *t, ifa__kv_kind kind, int64_t D, int64_t n, int64_t G, uint64_t seed)
{
    rng r = rng_seed(seed);
    const int64_t stride = pick_stride(D, &r);
    void *k = kv_make(kind, n, D, stride, &r);
    float *q = floats(G * D, &r, -2.0, 2.0);
    float *got = malloc((size_t)(G * LD) * sizeof *got), *want = malloc((size_t)(G * LD) * sizeof *want);
    for (int64_t i = 0; i < G * LD; i++) got[i] = want[i] = SENTINEL;
    const void *rows[64], *pf[64];
    row_pointers(k, kind, n, stride, seed, rows, pf);
    ifa__kernels_ref.qk[kind](q, G, D, rows, 1, n, want, LD, IFA__NO_PREFETCH);
    float *qt = malloc((size_t)(G * D) * sizeof *qt);
    memcpy(qt, q, (size_t)(G * D) * sizeof *qt);
    if (swaps_quads(t, kind)) ifa__swap_mid_quads(qt, G, D);
    t->qk[kind](qt, G, D, rows, 1, n, got, LD, (ifa__prefetch_list){pf, n, D * elem_bytes(kind)});
    free(qt);
    int bad = 0;
    for (int64_t g = 0; g < G && !bad; g++) {
        for (int64_t i = 0; i < LD && !bad; i++) {
            const float a = got[g * LD + i], b = want[g * LD + i];
            if (i >= n) {
                if (a != SENTINEL) {
                    bad = 1;
                    CHECK_MSG(0, "%s qk %s D=%lld n=%lld G=%lld: wrote scores[%lld][%lld] past n", t->isa,
                              k_kind_names[kind], (long long)D, (long long)n, (long long)G, (long long)g, (long long)i);
                }
                continue;
            }
            double mag = 0.0;
            for (int64_t d = 0; d < D; d++) mag += fabs((double)q[g * D + d] * kv_get(rows[i], kind, d));
            const double tol = (double)(D / 16 + 8) * 0x1p-23 * mag;
            if (!(fabs((double)a - b) <= tol)) {
                bad = 1;
                CHECK_MSG(0, "%s qk %s D=%lld n=%lld G=%lld stride=%lld: scores[%lld][%lld] = %.9g, ref %.9g (tol %.3g)",
                          t->isa, k_kind_names[kind], (long long)D, (long long)n, (long long)G, (long long)stride,
                          (long long)g, (long long)i, a, b, tol);
            }
        }
    }
    free(k);
    free(q);
    free(got);
    free(want);
}

/* The inputs and outputs of one P.V check: V rows of `kind`, weights as the softmax leaves them
 * (0..1, and for odd seeds -1..1: per-token antiquant folds a scale into them) with a NaN past n
 * that no kernel may read, an accumulator to add to with a sentinel past its end, and the two
 * results (want: the reference's, got: the table's), both starting from that accumulator. */
typedef struct pv_case {
    int64_t D, n, G;
    void *v;
    float *p, *acc0, *got, *want;
    const void *rows[64], *pf[64];
} pv_case;

static void pv_case_make(pv_case *c, ifa__kv_kind kind, int64_t D, int64_t n, int64_t G, uint64_t seed)
{
    rng r = rng_seed(seed);
    const int64_t stride = pick_stride(D, &r);
    c->D = D;
    c->n = n;
    c->G = G;
    c->v = kv_make(kind, n, D, stride, &r);
    c->p = floats(G * LD, &r, (seed & 1) ? -1.0 : 0.0, 1.0);
    for (int64_t g = 0; g < G; g++)
        for (int64_t i = n; i < LD; i++) c->p[g * LD + i] = NAN;
    c->acc0 = floats(G * D + 1, &r, -3.0, 3.0);
    c->acc0[G * D] = SENTINEL;
    c->got = malloc((size_t)(G * D + 1) * sizeof *c->got);
    c->want = malloc((size_t)(G * D + 1) * sizeof *c->want);
    memcpy(c->got, c->acc0, (size_t)(G * D + 1) * sizeof *c->got);
    memcpy(c->want, c->acc0, (size_t)(G * D + 1) * sizeof *c->want);
    row_pointers(c->v, kind, n, stride, seed, c->rows, c->pf);
}

static void pv_case_free(pv_case *c)
{
    free(c->v);
    free(c->p);
    free(c->acc0);
    free(c->got);
    free(c->want);
}

/* The float32 bound on acc[j] = acc[g][d] (see the file comment): both sum in row order, so
 * |err| <= (n + 2) * 2^-23 * (|acc| + sum_i |p_i v_i|); bf16_weights takes p rounded to bfloat16. */
static double pv_bound(const pv_case *c, ifa__kv_kind kind, int64_t j, int bf16_weights)
{
    const int64_t g = j / c->D, d = j % c->D;
    double mag = fabs(c->acc0[j]);
    for (int64_t i = 0; i < c->n; i++) {
        const float w = bf16_weights ? ifa__bf16_to_f32(ifa__f32_to_bf16(c->p[g * LD + i])) : c->p[g * LD + i];
        mag += fabs((double)w * kv_get(c->rows[i], kind, d));
    }
    return (double)(c->n + 2) * 0x1p-23 * mag;
}

static void check_pv(const ifa__kernel_table *t, ifa__kv_kind kind, int64_t D, int64_t n, int64_t G, uint64_t seed)
{
    pv_case c;
    pv_case_make(&c, kind, D, n, G, seed);
    ifa__kernels_ref.pv[kind](c.p, LD, G, D, c.rows, 1, n, c.want, IFA__NO_PREFETCH);
    if (swaps_quads(t, kind)) ifa__swap_mid_quads(c.got, G, D);
    t->pv[kind](c.p, LD, G, D, c.rows, 1, n, c.got, (ifa__prefetch_list){c.pf, n, D * elem_bytes(kind)});
    if (swaps_quads(t, kind)) ifa__swap_mid_quads(c.got, G, D);
    CHECK_MSG(c.got[G * D] == SENTINEL, "%s pv %s D=%lld n=%lld G=%lld: wrote past acc", t->isa, k_kind_names[kind],
              (long long)D, (long long)n, (long long)G);
    for (int64_t j = 0; j < G * D; j++) {
        const float a = c.got[j], b = c.want[j];
        const double tol = pv_bound(&c, kind, j, 0);
        if (!(fabs((double)a - b) <= tol)) {
            CHECK_MSG(0, "%s pv %s D=%lld n=%lld G=%lld: acc[%lld][%lld] = %.9g, ref %.9g (tol %.3g)", t->isa,
                      k_kind_names[kind], (long long)D, (long long)n, (long long)G, (long long)(j / D),
                      (long long)(j % D), a, b, tol);
            break;
        }
    }
    pv_case_free(&c);
}

static void sweep(int qk)
{
    const ifa__kernel_table *tables[2];
    const int count = isa_tables(tables, 1);
    int64_t cases = 0;
    for (int ti = 0; ti < count; ti++) {
        for (int kind = 0; kind < IFA__KV_KIND_COUNT; kind++) {
            const int before = tst_failures();
            for (int64_t a = 0; a < NELEMS(k_ds); a++)
                for (int64_t b = 0; b < NELEMS(k_ns); b++)
                    for (int64_t c = 0; c < NELEMS(k_gs); c++) {
                        const uint64_t seed = (uint64_t)(((kind * 31 + a) * 31 + b) * 31 + c) + (qk ? 0 : 1000003u);
                        if (qk)
                            check_qk(tables[ti], (ifa__kv_kind)kind, k_ds[a], k_ns[b], k_gs[c], seed);
                        else
                            check_pv(tables[ti], (ifa__kv_kind)kind, k_ds[a], k_ns[b], k_gs[c], seed);
                        cases++;
                        if (tst_failures() - before > 8) goto next_kind; /* one broken kernel: enough said */
                    }
        next_kind:;
        }
    }
    tst_note("%lld cases over %d ISA(s)", (long long)cases, count);
}

/* The integer qk (int8 K, int16 query): exact in int32, so a table's result must equal the
 * reference bit for bit. q16 spans the full int16 range the caller allows (|q16| <= 32767 for
 * D <= 512), the K rows the full int8 range including -128. */
static void check_qk_q16(const ifa__kernel_table *t, int64_t D, int64_t n, int64_t G, uint64_t seed)
{
    rng r = rng_seed(seed);
    const int64_t stride = pick_stride(D, &r);
    int8_t *k = malloc((size_t)((n - 1) * stride + D));
    for (int64_t i = 0; i < (n - 1) * stride + D; i++) k[i] = (int8_t)(rng_next(&r) & 0xFF);
    int16_t *q = malloc((size_t)(G * D) * sizeof *q);
    for (int64_t i = 0; i < G * D; i++) q[i] = (int16_t)((int32_t)(rng_next(&r) % 65535u) - 32767);
    float qscale[MAX_G] = { 0 };
    for (int64_t g = 0; g < G; g++) qscale[g] = (float)(g + 1) * 0x1p-20f;
    float *got = malloc((size_t)(G * LD) * sizeof *got), *want = malloc((size_t)(G * LD) * sizeof *want);
    for (int64_t i = 0; i < G * LD; i++) got[i] = want[i] = SENTINEL;
    const void *rows[64] = { 0 }, *pf[64] = { 0 };
    row_pointers(k, IFA__KV_I8, n, stride, seed, rows, pf);
    ifa__kernels_ref.qk_i8_q16(q, qscale, G, D, rows, n, want, LD, IFA__NO_PREFETCH);
    t->qk_i8_q16(q, qscale, G, D, rows, n, got, LD, (ifa__prefetch_list){pf, n, D});
    for (int64_t i = 0; i < G * LD; i++)
        if (got[i] != want[i]) {
            CHECK_MSG(0, "%s qk_i8_q16 D=%lld n=%lld G=%lld: scores[%lld][%lld] = %.9g, ref %.9g", t->isa,
                      (long long)D, (long long)n, (long long)G, (long long)(i / LD), (long long)(i % LD), got[i],
                      want[i]);
            break;
        }
    free(k);
    free(q);
    free(got);
    free(want);
}

/* The bfloat16 qk on a bfloat16 query: products exact, float32 sums in another order than the
 * reference's double ones, so check_qk's bound with q taken as the rounded query. */
static void check_qk_bf16q(const ifa__kernel_table *t, int64_t D, int64_t n, int64_t G, uint64_t seed)
{
    rng r = rng_seed(seed);
    const int64_t stride = pick_stride(D, &r);
    void *k = kv_make(IFA__KV_BF16, n, D, stride, &r);
    float *qf = floats(G * D, &r, -2.0, 2.0);
    uint16_t *q = malloc((size_t)(G * D) * sizeof *q);
    for (int64_t i = 0; i < G * D; i++) q[i] = ifa__f32_to_bf16(qf[i]);
    float *got = malloc((size_t)(G * LD) * sizeof *got), *want = malloc((size_t)(G * LD) * sizeof *want);
    for (int64_t i = 0; i < G * LD; i++) got[i] = want[i] = SENTINEL;
    const void *rows[64] = { 0 }, *pf[64] = { 0 };
    row_pointers(k, IFA__KV_BF16, n, stride, seed, rows, pf);
    ifa__kernels_ref.qk_bf16_qbf16(q, G, D, rows, n, want, LD, IFA__NO_PREFETCH);
    t->qk_bf16_qbf16(q, G, D, rows, n, got, LD, (ifa__prefetch_list){pf, n, 2 * D});
    for (int64_t g = 0; g < G; g++)
        for (int64_t i = 0; i < LD; i++) {
            const float a = got[g * LD + i], b = want[g * LD + i];
            double mag = 0.0;
            for (int64_t d = 0; i < n && d < D; d++)
                mag += fabs((double)ifa__bf16_to_f32(q[g * D + d]) * kv_get(rows[i], IFA__KV_BF16, d));
            const int ok = i >= n ? a == SENTINEL : fabs((double)a - b) <= (double)(D / 16 + 8) * 0x1p-23 * mag;
            if (!ok) {
                CHECK_MSG(0, "%s qk_bf16_qbf16 D=%lld n=%lld G=%lld: scores[%lld][%lld] = %.9g, ref %.9g", t->isa,
                          (long long)D, (long long)n, (long long)G, (long long)g, (long long)i, a, b);
                g = G;
                break;
            }
        }
    free(k);
    free(qf);
    free(q);
    free(got);
    free(want);
}

/* The fixed-point P.V (int8 V, 16-bit weights): the same float operations and an exact int32
 * sum, so a table's result must equal the reference bit for bit. Weights as check_pv's, one head
 * sometimes all zero; every seventh case puts a NaN or an infinity among the weights, which sends
 * both down their float paths (check_pv's bound then). */
static void check_pv_q16(const ifa__kernel_table *t, int64_t D, int64_t n, int64_t G, uint64_t seed)
{
    pv_case c;
    pv_case_make(&c, IFA__KV_I8, D, n, G, seed);
    if (G > 1 && seed % 5 == 0)
        for (int64_t i = 0; i < n; i++) c.p[LD + i] = 0.0f;
    const int odd = seed % 7 == 0;
    if (odd) c.p[(G - 1) * LD + n / 2] = (seed & 8) ? NAN : INFINITY;
    ifa__kernels_ref.pv_i8_q16(c.p, LD, G, D, c.rows, n, c.want, IFA__NO_PREFETCH);
    t->pv_i8_q16(c.p, LD, G, D, c.rows, n, c.got, (ifa__prefetch_list){c.pf, n, D});
    CHECK_MSG(c.got[G * D] == SENTINEL, "%s pv_i8_q16 D=%lld n=%lld G=%lld: wrote past acc", t->isa, (long long)D,
              (long long)n, (long long)G);
    for (int64_t j = 0; j < G * D; j++) {
        const float a = c.got[j], b = c.want[j];
        int ok = memcmp(&a, &b, sizeof a) == 0;
        if (odd && !ok) /* float paths: NaN where the reference has NaN, else check_pv's bound */
            ok = isnan(b) ? isnan(a) : isinf(b) ? a == b : fabs((double)a - b) <= pv_bound(&c, IFA__KV_I8, j, 0);
        if (!ok) {
            CHECK_MSG(0, "%s pv_i8_q16 D=%lld n=%lld G=%lld: acc[%lld][%lld] = %.9g, ref %.9g", t->isa, (long long)D,
                      (long long)n, (long long)G, (long long)(j / D), (long long)(j % D), a, b);
            break;
        }
    }
    pv_case_free(&c);
}

/* The bfloat16-weight P.V: the reference's products are those of the kernel (weights rounded to
 * bfloat16 the same way, products exact), the sums in another order: check_pv's bound with p
 * taken as the rounded weights. */
static void check_pv_bf16p(const ifa__kernel_table *t, int64_t D, int64_t n, int64_t G, uint64_t seed)
{
    pv_case c;
    pv_case_make(&c, IFA__KV_BF16, D, n, G, seed);
    ifa__kernels_ref.pv_bf16_pbf16(c.p, LD, G, D, c.rows, n, c.want, IFA__NO_PREFETCH);
    t->pv_bf16_pbf16(c.p, LD, G, D, c.rows, n, c.got, (ifa__prefetch_list){c.pf, n, 2 * D});
    CHECK_MSG(c.got[G * D] == SENTINEL, "%s pv_bf16_pbf16 D=%lld n=%lld G=%lld: wrote past acc", t->isa,
              (long long)D, (long long)n, (long long)G);
    for (int64_t j = 0; j < G * D; j++) {
        if (!(fabs((double)c.got[j] - c.want[j]) <= pv_bound(&c, IFA__KV_BF16, j, 1))) {
            CHECK_MSG(0, "%s pv_bf16_pbf16 D=%lld n=%lld G=%lld: acc[%lld][%lld] = %.9g, ref %.9g", t->isa,
                      (long long)D, (long long)n, (long long)G, (long long)(j / D), (long long)(j % D), c.got[j],
                      c.want[j]);
            break;
        }
    }
    pv_case_free(&c);
}

/* Sweeps one optional kernel over the edge sizes, for every table that has it (`has`). */
typedef void (*optional_check)(const ifa__kernel_table *t, int64_t D, int64_t n, int64_t G, uint64_t seed);

static void sweep_optional(const char *name, int (*has)(const ifa__kernel_table *), optional_check check,
                           uint64_t salt)
{
    const ifa__kernel_table *tables[2];
    const int count = isa_tables(tables, 0);
    int64_t cases = 0;
    for (int ti = 0; ti < count; ti++) {
        if (!has(tables[ti])) {
            tst_note("%s: no %s kernel (the float kernel serves that KV dtype there)", tables[ti]->isa, name);
            continue;
        }
        for (int64_t a = 0; a < NELEMS(k_ds); a++)
            for (int64_t b = 0; b < NELEMS(k_ns); b++)
                for (int64_t c = 0; c < NELEMS(k_gs); c++, cases++)
                    check(tables[ti], k_ds[a], k_ns[b], k_gs[c], (uint64_t)((a * 31 + b) * 31 + c) + salt);
    }
    tst_note("%lld cases", (long long)cases);
}

static int has_qk_q16(const ifa__kernel_table *t) { return t->qk_i8_q16 != NULL; }
static int has_qk_bf16q(const ifa__kernel_table *t) { return t->qk_bf16_qbf16 != NULL; }
static int has_pv_q16(const ifa__kernel_table *t) { return t->pv_i8_q16 != NULL; }
static int has_pv_bf16p(const ifa__kernel_table *t) { return t->pv_bf16_pbf16 != NULL; }

static void test_qk_q16_edges(void) { sweep_optional("qk_i8_q16", has_qk_q16, check_qk_q16, 77u); }
static void test_qk_bf16q_edges(void) { sweep_optional("qk_bf16_qbf16", has_qk_bf16q, check_qk_bf16q, 91u); }
static void test_pv_q16_edges(void) { sweep_optional("pv_i8_q16", has_pv_q16, check_pv_q16, 113u); }
static void test_pv_bf16p_edges(void) { sweep_optional("pv_bf16_pbf16", has_pv_bf16p, check_pv_bf16p, 127u); }

/* The reference qk, the oracle of the sweeps, sums in double: a float32 row that cancels 2^24
 * against -2^24 around 62 ones scores exactly 62, where a float32 sum in order loses the ones
 * (2^24 + 1 rounds to 2^24) and gives 0. The ISA kernels sum in float32 lanes and are held to
 * the tolerance instead. */
static void test_ref_qk_sums_in_double(void)
{
    enum { D = 64 };
    float q[D], row[D], score = -1.0f;
    for (int d = 0; d < D; d++) q[d] = 1.0f, row[d] = 1.0f;
    row[0] = 0x1p24f;
    row[D - 1] = -0x1p24f;
    const void *rows[1] = { row };
    ifa__kernels_ref.qk[IFA__KV_F32](q, 1, D, rows, 1, 1, &score, 1, IFA__NO_PREFETCH);
    CHECK_MSG(score == 62.0f, "ref qk of a cancelling row: %.9g, want 62", (double)score);
}

/* pv_bf16_pbf16 rounds the weights to bfloat16 before they meet V (kernels.h), in the reference
 * too: the sweeps compare every table with the reference, so a reference that skipped the
 * rounding would only move the comparison. V rows of ones; the weights 1 + 2^-9 (rounds down to
 * 1), 1 + 3 * 2^-9 (up to 1 + 2^-7) and 0.1f (to 0.10009765625): every sum exact in float32. */
static void test_pv_bf16p_rounds_weights(void)
{
    enum { G = 2, D = 9, N = 3 };
    const ifa__kernel_table *tables[3] = { &ifa__kernels_ref };
    const int count = 1 + isa_tables(tables + 1, 0);
    uint16_t row[D];
    for (int d = 0; d < D; d++) row[d] = 0x3F80u; /* 1.0 */
    const void *rows[N] = { row, row, row };
    const float w[N] = { 1.0f + 0x1p-9f, 1.0f + 3 * 0x1p-9f, 0.1f };
    float p[G * N], acc[G * D];
    for (int g = 0; g < G; g++)
        for (int i = 0; i < N; i++) p[g * N + i] = (g + 1) * w[i];
    for (int ti = 0; ti < count; ti++) {
        if (!has_pv_bf16p(tables[ti])) continue;
        for (int j = 0; j < G * D; j++) acc[j] = 0.0f;
        tables[ti]->pv_bf16_pbf16(p, N, G, D, rows, N, acc, IFA__NO_PREFETCH);
        for (int g = 0; g < G; g++) {
            const float want = (float)(g + 1) * (1.0f + (1.0f + 0x1p-7f) + 0.10009765625f);
            for (int d = 0; d < D; d++)
                CHECK_MSG(acc[g * D + d] == want, "%s pv_bf16_pbf16: acc[%d][%d] = %.9g, want %.9g",
                          tables[ti]->isa, g, d, (double)acc[g * D + d], (double)want);
        }
    }
}

/* The last row of an odd n pairs with a partner the kernels make up (kernels.h): zeros for
 * bfloat16, since 0 * Inf is NaN where the reference, which has no partner, gives Inf. An Inf in
 * that last row must come out as the reference's Inf in every table with pv_bf16_pbf16. */
static void test_pv_bf16p_inf_last_row(void)
{
    static const int64_t ns[] = {1, 3, 15, 17, 33, 63};
    static const int64_t ds[] = {7, 33, 128};
    const ifa__kernel_table *tables[2];
    const int count = isa_tables(tables, 0);
    int64_t cases = 0;
    for (int ti = 0; ti < count; ti++) {
        if (!has_pv_bf16p(tables[ti])) continue;
        for (size_t a = 0; a < sizeof ns / sizeof ns[0]; a++)
            for (size_t b = 0; b < sizeof ds / sizeof ds[0]; b++)
                for (int64_t G = 1; G <= 5; G += 2) {
                    const int64_t n = ns[a], D = ds[b];
                    pv_case c;
                    pv_case_make(&c, IFA__KV_BF16, D, n, G, (uint64_t)(a * 7 + b) * 11 + (uint64_t)G);
                    uint16_t *last = (uint16_t *)(uintptr_t)c.rows[n - 1];
                    for (int64_t d = 0; d < D; d += 3) last[d] = 0x7F80; /* +Inf */
                    ifa__kernels_ref.pv_bf16_pbf16(c.p, LD, G, D, c.rows, n, c.want, IFA__NO_PREFETCH);
                    tables[ti]->pv_bf16_pbf16(c.p, LD, G, D, c.rows, n, c.got, IFA__NO_PREFETCH);
                    for (int64_t j = 0; j < G * D; j++) {
                        const float x = c.got[j], y = c.want[j];
                        const int same = isfinite(y) ? isfinite(x) : (isnan(y) ? isnan(x) : x == y);
                        if (!same) {
                            CHECK_MSG(0, "%s pv_bf16_pbf16 D=%lld n=%lld G=%lld, Inf in the last row: "
                                      "acc[%lld] = %g, ref %g", tables[ti]->isa, (long long)D, (long long)n,
                                      (long long)G, (long long)j, x, y);
                            break;
                        }
                    }
                    pv_case_free(&c);
                    cases++;
                }
    }
    tst_note("%lld cases", (long long)cases);
}

static void test_qk_edges(void) { sweep(1); }
static void test_pv_edges(void) { sweep(0); }

/* ---- softmax ---- */

/* |a - b| within a few ulps relative (or both NaN, or both the same infinity). */
static int close_rel(double a, double b, double rel)
{
    if (isnan(a) || isnan(b)) return isnan(a) && isnan(b);
    if (a == b) return 1;
    return fabs(a - b) <= rel * fabs(b) + 1e-37;
}

typedef enum score_pattern { PAT_RANDOM, PAT_ALL_MASKED, PAT_MIXED, PAT_NEG_INF, PAT_NAN, PAT_COUNT } score_pattern;
static const char *const k_pattern_names[] = { "random", "all -1e12", "mixed -1e12", "some -inf", "a NaN" };

static void check_softmax(const ifa__kernel_table *t, score_pattern pat, int64_t n, int64_t G, int m_init, uint64_t seed)
{
    rng r = rng_seed(seed);
    float s0[MAX_G * LD], sg[MAX_G * LD], sw[MAX_G * LD];
    /* mg, lg and ag have 8 guard lanes past G, which the kernel must leave alone (its stores of
     * a block's lanes are cut to the block's heads). */
    float m0[MAX_G] = { 0 }, l0[MAX_G] = { 0 }, mw[MAX_G], lw[MAX_G], aw[MAX_G];
    float mg[MAX_G + 8], lg[MAX_G + 8], ag[MAX_G + 8];
    for (int64_t i = 0; i < G * LD; i++) {
        float x = (float)rng_uniform(&r, -30.0, 30.0);
        if (pat == PAT_ALL_MASKED || (pat == PAT_MIXED && rng_int(&r, 0, 2) == 0)) x = -1e12f;
        if (pat == PAT_NEG_INF && rng_int(&r, 0, 3) == 0) x = -INFINITY;
        s0[i] = (i % LD) < n ? x : SENTINEL;
    }
    if (pat == PAT_NAN) s0[rng_int(&r, 0, n - 1)] = NAN;
    for (int64_t g = 0; g < G; g++) {
        /* m_init: 0 the first chunk (-inf, l = 0), 1 a running max below the scores, 2 above (the
         * maximum stays: AVX-512 skips its reduction), 3 above and below by head, 4 not finite. */
        if (m_init == 3)
            m0[g] = g % 2 ? -40.0f : 45.0f;
        else if (m_init == 4)
            m0[g] = g % 2 ? NAN : INFINITY;
        else
            m0[g] = m_init == 0 ? -INFINITY : m_init == 1 ? -40.0f : 45.0f;
        l0[g] = m_init == 0 ? 0.0f : (float)rng_uniform(&r, 1.0, 10.0);
    }
    memcpy(sg, s0, sizeof sg);
    memcpy(sw, s0, sizeof sw);
    for (int64_t g = 0; g < MAX_G + 8; g++) mg[g] = lg[g] = ag[g] = SENTINEL;
    memcpy(mg, m0, (size_t)G * sizeof mg[0]);
    memcpy(mw, m0, sizeof mw);
    memcpy(lg, l0, (size_t)G * sizeof lg[0]);
    memcpy(lw, l0, sizeof lw);
    ifa__kernels_ref.softmax(sw, LD, G, n, mw, lw, aw);
    t->softmax(sg, LD, G, n, mg, lg, ag);
    int bad = 0;
    const double rel = 8 * 0x1p-23;
    for (int64_t g = 0; g < G && !bad; g++) {
        for (int64_t i = 0; i < LD && !bad; i++) {
            const float a = sg[g * LD + i], b = sw[g * LD + i];
            const int ok = i < n ? close_rel(a, b, rel) : a == SENTINEL;
            if (!ok) {
                bad = 1;
                CHECK_MSG(0, "%s softmax (%s, n=%lld, G=%lld, m=%g): s[%lld][%lld] = %.9g, ref %.9g", t->isa,
                          k_pattern_names[pat], (long long)n, (long long)G, m0[g], (long long)g, (long long)i, a, b);
            }
        }
        const int same_m = mg[g] == mw[g] || (isnan(mg[g]) && isnan(mw[g]));
        const int ok = same_m && close_rel(ag[g], aw[g], rel) && close_rel(lg[g], lw[g], (double)(n + 8) * 0x1p-23);
        if (!ok && !bad) {
            bad = 1;
            CHECK_MSG(0, "%s softmax (%s, n=%lld, G=%lld, m=%g): head %lld m/l/alpha = %.9g %.9g %.9g, ref %.9g %.9g %.9g",
                      t->isa, k_pattern_names[pat], (long long)n, (long long)G, m0[g], (long long)g, mg[g], lg[g],
                      ag[g], mw[g], lw[g], aw[g]);
        }
    }
    for (int64_t g = G; g < G + 8 && !bad; g++)
        if (mg[g] != SENTINEL || lg[g] != SENTINEL || ag[g] != SENTINEL) {
            bad = 1;
            CHECK_MSG(0, "%s softmax (%s, n=%lld, G=%lld): wrote m/l/alpha[%lld], past the G heads", t->isa,
                      k_pattern_names[pat], (long long)n, (long long)G, (long long)g);
        }
}

static void test_softmax(void)
{
    const ifa__kernel_table *tables[2];
    const int count = isa_tables(tables, 0);
    int64_t cases = 0;
    for (int ti = 0; ti < count; ti++)
        for (int pat = 0; pat < PAT_COUNT; pat++)
            for (int64_t b = 0; b < NELEMS(k_ns); b++)
                for (int64_t c = 0; c < NELEMS(k_gs); c++)
                    for (int mi = 0; mi < 5; mi++, cases++)
                        check_softmax(tables[ti], (score_pattern)pat, k_ns[b], k_gs[c], mi, (uint64_t)cases * 7919u + 1);
    tst_note("%lld cases over %d ISA(s)", (long long)cases, count);
}

/* The exp itself, over the range the softmax feeds it (x - max <= 0) and the special values: a
 * few ulps relative where expf is normal, within a few subnormal steps below, exactly 0 far below,
 * NaN through (+inf - +inf included). Driven through the softmax with m = 0 and one score x, so
 * s = exp(min(x, 0)). */
static void test_exp_range(void)
{
    const ifa__kernel_table *tables[2];
    const int count = isa_tables(tables, 0);
    static const float specials[] = { 0.0f, -0.0f, -1e-30f, 1e-30f, -87.0f, -87.4f, -88.0f, -100.0f, -103.9f,
                                      -104.0f, -110.0f, -1e12f, -INFINITY, 88.0f, 88.7f, 88.8f, 100.0f, INFINITY, NAN };
    for (int ti = 0; ti < count; ti++) {
        int bad = 0;
        for (int64_t k = 0; k < 200000 + NELEMS(specials) && bad < 5; k++) {
            const float x = k < NELEMS(specials) ? specials[k] : -120.0f + (float)(k - NELEMS(specials)) * (210.0f / 200000.0f);
            float s[1] = { x }, m[1] = { 0.0f }, l[1] = { 0.0f }, a[1];
            tables[ti]->softmax(s, LD, 1, 1, m, l, a);
            const double want = exp((double)(x > 0.0f ? 0.0f : x)); /* m becomes max(0, x) */
            const double got = s[0];
            const int ok = isnan(x) || x == INFINITY ? isnan(got) : want < 0x1p-126 ? fabs(got - want) <= 4 * 0x1p-149 : close_rel(got, want, 4 * 0x1p-23);
            if (!ok) {
                bad++;
                CHECK_MSG(0, "%s exp(%.9g) = %.9g, want %.9g", tables[ti]->isa, x, got, want);
            }
        }
        /* Whole vectors of 8 (the kernels' main loops, where a vector entirely within the
         * normal range may take a shorter path): 8 consecutive values of the same sweep, plus
         * blocks that straddle that range's edge and hold the specials. */
        for (int64_t k = 0; k < 200000 && bad < 5; k += 8) {
            float s[8], m[1] = { 0.0f }, l[1] = { 0.0f }, a[1], x[8];
            for (int j = 0; j < 8; j++) {
                const int64_t kk = k + j;
                x[j] = kk < NELEMS(specials) ? specials[kk] : -120.0f + (float)(kk * 7 % 200000) * (210.0f / 200000.0f);
                if (k >= 1000 && k < 3000) x[j] = -86.0f - (float)((k + j) % 16) * 0.0625f; /* around -86.5 */
                s[j] = x[j];
            }
            float mx = 0.0f;
            for (int j = 0; j < 8; j++) mx = x[j] > mx ? x[j] : mx; /* NaN is skipped, as the kernels do */
            tables[ti]->softmax(s, LD, 1, 8, m, l, a);
            for (int j = 0; j < 8 && bad < 5; j++) {
                const double want = exp((double)x[j] - (double)mx), got = s[j];
                const int ok = isnan(x[j]) || x[j] == INFINITY ? isnan(got) /* inf - inf */
                               : want < 0x1p-126 ? fabs(got - want) <= 4 * 0x1p-149
                                                 : close_rel(got, want, 4 * 0x1p-23);
                if (!ok) {
                    bad++;
                    CHECK_MSG(0, "%s exp(%.9g - %.9g) = %.9g in a vector of 8, want %.9g", tables[ti]->isa, x[j], mx,
                              got, want);
                }
            }
        }
        /* Vectors that mix weights in the normal range with masked scores, -inf and values whose
         * exp rounds to 0 (the AVX2 softmax's second short path), and now and then one lane
         * between the two ranges (its full path). */
        for (int64_t k = 0; k < 4000 && bad < 5; k++) {
            float s[8], m[1] = { 0.0f }, l[1] = { 0.0f }, a[1], x[8];
            static const float tail[] = { -1e12f, -INFINITY, -104.6f, -150.0f, -3e38f };
            for (int j = 0; j < 8; j++) {
                x[j] = (k + j) % 3 == 0 ? tail[(k + j) % NELEMS(tail)] : -(float)((k * 13 + j * 7) % 860) * 0.1f;
                if (k % 97 == 0 && j == 5) x[j] = -86.5f - (float)(k % 18); /* -86.5 to -103.5 */
                s[j] = x[j];
            }
            tables[ti]->softmax(s, LD, 1, 8, m, l, a);
            for (int j = 0; j < 8 && bad < 5; j++) {
                const double want = exp((double)x[j]), got = s[j];
                const int ok = want < 0x1p-126 ? fabs(got - want) <= 4 * 0x1p-149 : close_rel(got, want, 4 * 0x1p-23);
                if (!ok) {
                    bad++;
                    CHECK_MSG(0, "%s exp(%.9g) = %.9g beside masked scores, want %.9g", tables[ti]->isa, x[j], got, want);
                }
            }
        }
        /* The far tail must be exactly 0, not a subnormal. */
        float s[2] = { -1e12f, -INFINITY }, m[1] = { 0.0f }, l[1] = { 0.0f }, a[1];
        tables[ti]->softmax(s, LD, 1, 2, m, l, a);
        CHECK_MSG(s[0] == 0.0f && s[1] == 0.0f && l[0] == 0.0f && a[0] == 1.0f, "%s: exp(-1e12) = %g, exp(-inf) = %g",
                  tables[ti]->isa, s[0], s[1]);
    }
}

/* Whether a and b are the same float: the same bits, or both NaN (whose payload the vector and
 * scalar forms may not keep alike). */
static int same_float(float a, float b)
{
    if (isnan(a) || isnan(b)) return isnan(a) && isnan(b);
    uint32_t x, y;
    memcpy(&x, &a, sizeof x);
    memcpy(&y, &b, sizeof y);
    return x == y;
}

/* One case of test_row_scale: table t's div_row (op 1) or mul_row (op 0) of n floats by f, in
 * place or not, against the same operation done here one float at a time. */
static void check_row_scale(const ifa__kernel_table *t, int op, int in_place, int64_t n, float f,
                            int64_t shift, rng *r)
{
    static const float specials[] = { 0.0f,      -0.0f, 1e-40f,        -1e-45f, INFINITY,
                                      -INFINITY, NAN,   3.4028235e38f, -1.5f,   1e-30f };
    const ifa__row_scale_fn fn = op ? t->div_row : t->mul_row;
    const size_t bytes = (size_t)(n > 0 ? n : 1) * sizeof(float);
    float *src = malloc(bytes), *want = malloc(bytes), *dst = malloc(bytes + sizeof(float));
    for (int64_t i = 0; i < n; i++)
        src[i] = i % 5 == 4 ? specials[(i / 5 + shift) % NELEMS(specials)] : (float)rng_uniform(r, -4.0, 4.0);
    for (int64_t i = 0; i < n; i++) want[i] = op ? src[i] / f : src[i] * f;
    const float sentinel = -12345.0f;
    dst[n] = sentinel;
    if (in_place) {
        memcpy(dst, src, (size_t)n * sizeof *dst);
        fn(dst, f, n, dst);
    } else {
        fn(src, f, n, dst);
    }
    int64_t bad = -1;
    for (int64_t i = 0; i < n && bad < 0; i++)
        if (!same_float(dst[i], want[i])) bad = i;
    const char *name = op ? "div_row" : "mul_row", *how = in_place ? " in place" : "";
    const double got_bad = bad >= 0 ? (double)dst[bad] : 0.0, want_bad = bad >= 0 ? (double)want[bad] : 0.0;
    CHECK_MSG(bad < 0, "%s %s n %lld f %g%s: element %lld is %.9g, want %.9g", t->isa, name, (long long)n,
              (double)f, how, (long long)bad, got_bad, want_bad);
    CHECK_MSG(dst[n] == sentinel, "%s %s n %lld%s: wrote past the row", t->isa, name, (long long)n, how);
    free(src);
    free(want);
    free(dst);
}

/* mul_row and div_row of every table, the reference's included, against x * f and x / f done
 * here one float at a time: bit for bit (kernels.h promises one IEEE operation per element), at
 * lengths around the vector widths, in place and not. Out of place the source is exactly n floats
 * (a sanitized build catches a read past it); a sentinel after the destination must stay
 * untouched. The rows mix ordinary values with the specials (signed zeros, subnormals,
 * infinities, NaN, the largest float) and the factors include 0, a subnormal, infinity and NaN. */
static void test_row_scale(void)
{
    const ifa__kernel_table *tables[3] = { &ifa__kernels_ref };
    const int count = 1 + isa_tables(tables + 1, 0);
    static const float factors[] = { 0.7f, -3.0f, 1.0f, 0.0f, -0.0f, 1e-40f, 3e38f, INFINITY, NAN, 1e-3f };
    static const int64_t lengths[] = { 0, 1, 7, 8, 9, 15, 16, 17, 31, 32, 33, 100, 128, 129 };
    rng r = rng_seed(211u);
    int64_t cases = 0;
    for (int ti = 0; ti < count; ti++)
        for (int64_t li = 0; li < NELEMS(lengths); li++)
            for (int64_t fi = 0; fi < NELEMS(factors); fi++)
                for (int op = 0; op < 2; op++)
                    for (int in_place = 0; in_place < 2; in_place++, cases++)
                        check_row_scale(tables[ti], op, in_place, lengths[li], factors[fi], fi, &r);
    tst_note("%lld rows over %d tables", (long long)cases, count);
}

/* The first byte of rows[0..n) (row_bytes each) that is in none of lines[0..count), its row in
 * *row; -1 when every byte is in one of them. */
static int64_t first_unlisted_byte(const void *const *rows, int64_t n, int64_t row_bytes, const uintptr_t *lines,
                                   int64_t count, int64_t *row)
{
    for (int64_t r = 0; r < n; r++)
        for (int64_t b = 0; b < row_bytes; b++) {
            const uintptr_t want = ((uintptr_t)rows[r] + (uintptr_t)b) & ~(uintptr_t)63;
            int found = 0;
            for (int64_t k = 0; k < count && !found; k++) found = lines[k] == want;
            if (!found) {
                *row = r;
                return b;
            }
        }
    return -1;
}

/* The prefetch stream of the kernels (kernels.h), stepped one line at a time: it issues exactly
 * ifa__prefetch_lines lines, those lines cover every byte of every listed row whatever the rows'
 * alignment (a row 16 bytes past a line boundary touches one line more), and the order is row
 * after row for rows that form one run of memory, line 0 of every row first for rows apart. */
static void test_prefetch_stream(void)
{
    static char buf[64 * 1024 + 256];
    char *const base = (char *)(((uintptr_t)buf + 63) & ~(uintptr_t)63);
    /* 2048 bytes: a stretch of 8 rows, as attend.c lists a token's rows of 8 side-by-side heads. */
    static const int64_t aligns[] = { 0, 2, 16, 48 }, sizes[] = { 64, 130, 254, 256, 512, 2048 };
    static const int64_t counts[] = { 1, 2, 16 };
    int64_t cases = 0;
    for (int64_t ai = 0; ai < NELEMS(aligns); ai++)
        for (int64_t si = 0; si < NELEMS(sizes); si++)
            for (int64_t ci = 0; ci < NELEMS(counts); ci++)
                for (int apart = 0; apart < 2; apart++, cases++) {
                    const int64_t row_bytes = sizes[si], n = counts[ci];
                    const int64_t stride = apart ? (row_bytes > 1024 ? 4096 : 2048) : row_bytes;
                    const void *rows[16];
                    for (int64_t r = 0; r < n; r++) rows[r] = base + aligns[ai] + r * stride;
                    ifa__prefetch_stream s = ifa__prefetch_begin(rows, n, row_bytes);
                    const int64_t expect = ifa__prefetch_lines(&s);
                    uintptr_t lines[16 * 40]; /* up to 16 stretches of 33 lines (2048 bytes, misaligned) */
                    int64_t got = 0;
                    while (s.r < s.n && got < expect + 1) {
                        lines[got < NELEMS(lines) ? got : NELEMS(lines) - 1] = (uintptr_t)ifa__prefetch_line(&s);
                        got++;
                        ifa__prefetch_next(&s, 1);
                    }
                    CHECK_MSG(got == expect, "align %lld, %lld bytes, n %lld, apart %d: %lld lines issued, %lld counted",
                              (long long)aligns[ai], (long long)row_bytes, (long long)n, apart, (long long)got,
                              (long long)expect);
                    int64_t row = 0;
                    const int64_t byte = first_unlisted_byte(rows, n, row_bytes, lines, got, &row);
                    CHECK_MSG(byte < 0, "align %lld, %lld bytes, n %lld, apart %d: byte %lld of row %lld not prefetched",
                              (long long)aligns[ai], (long long)row_bytes, (long long)n, apart, (long long)byte,
                              (long long)row);
                    if (n >= 2 && got >= n) {
                        /* The second line issued: the next line of row 0 for a run, row 1's first for rows apart. */
                        const uintptr_t row0 = (uintptr_t)rows[0] & ~(uintptr_t)63;
                        const uintptr_t want = apart ? ((uintptr_t)rows[1] & ~(uintptr_t)63) : row0 + 64;
                        CHECK_MSG(lines[1] == want, "align %lld, %lld bytes, n %lld, apart %d: second line in the wrong order",
                                  (long long)aligns[ai], (long long)row_bytes, (long long)n, apart);
                    }
                }
    tst_note("%lld lists", (long long)cases);
}

/* The scalar float32 -> float16 rounding (convert.c), bit for bit: every finite half comes back
 * unchanged, the midpoint of two neighbours goes to the even one and a float32 ulp either side of
 * it to the nearer, 65520 and above overflow to infinity, infinities stay infinite and NaNs NaN.
 * Output comparisons allow a float16 ulp, so they cannot see a rounding mode (a mutation to
 * truncation passed every other test). */
static void test_f32_to_f16_rounding(void)
{
    int64_t checked = 0;
    for (uint32_t h = 0; h < 0x7C00u; h++) {
        for (uint32_t sign = 0; sign <= 0x8000u; sign += 0x8000u) {
            const uint16_t a = (uint16_t)(h | sign);
            CHECK_MSG(ifa__f32_to_f16(ifa__f16_to_f32(a)) == a, "half 0x%04x does not come back", a);
            if (h + 1 >= 0x7C00u) continue;
            const uint16_t b = (uint16_t)((h + 1) | sign);
            const float fa = ifa__f16_to_f32(a), fb = ifa__f16_to_f32(b);
            const float mid = (float)(((double)fa + (double)fb) / 2.0); /* exact in float32 */
            const uint16_t even = (h & 1u) ? b : a;
            CHECK_MSG(ifa__f32_to_f16(mid) == even, "midpoint of 0x%04x and 0x%04x: got 0x%04x", a, b,
                      ifa__f32_to_f16(mid));
            CHECK_MSG(ifa__f32_to_f16(nextafterf(mid, fa)) == a, "just below the midpoint of 0x%04x", a);
            CHECK_MSG(ifa__f32_to_f16(nextafterf(mid, fb)) == b, "just above the midpoint of 0x%04x", a);
            checked++;
        }
    }
    CHECK(ifa__f32_to_f16(65519.99f) == 0x7BFFu);
    CHECK(ifa__f32_to_f16(65520.0f) == 0x7C00u);
    CHECK(ifa__f32_to_f16(-65520.0f) == 0xFC00u);
    CHECK(ifa__f32_to_f16(1e30f) == 0x7C00u);
    CHECK(ifa__f32_to_f16(INFINITY) == 0x7C00u);
    CHECK(ifa__f32_to_f16(-INFINITY) == 0xFC00u);
    CHECK((ifa__f32_to_f16(NAN) & 0x7C00u) == 0x7C00u && (ifa__f32_to_f16(NAN) & 0x03FFu) != 0);
    CHECK(ifa__f32_to_f16(1e-10f) == 0x0000u); /* below half the smallest subnormal */
    CHECK(ifa__f32_to_f16(-1e-10f) == 0x8000u);
    tst_note("%lld neighbour pairs", (long long)checked);
}

/* Every table's f32_to_f16 (the output conversion, VCVTPS2PH on x86) against ifa__f32_to_f16,
 * which test_f32_to_f16_rounding checks: bit for bit on the same inputs (every half, the midpoints
 * between neighbours and the floats on either side of them) and the specials. The whole array
 * goes through the vector loop; rows of 0-17 floats at every start through its tail as well. */
static void test_f32_to_f16_tables(void)
{
    const ifa__kernel_table *tables[3] = { &ifa__kernels_ref };
    const int count = 1 + isa_tables(tables + 1, 0);
    static const float specials[] = { 65519.99f, 65520.0f, -65520.0f, 1e30f, INFINITY, -INFINITY,
                                      NAN, 1e-10f, -1e-10f, 0.0f, -0.0f, 5.9604645e-08f, 2.9802322e-08f };
    const int64_t cap = 8 * 0x7C00 + NELEMS(specials);
    float *src = malloc((size_t)cap * sizeof *src);
    uint16_t *got = malloc((size_t)(cap + 1) * sizeof *got);
    int64_t n = 0;
    for (uint32_t h = 0; h < 0x7C00u; h++)
        for (uint32_t sign = 0; sign <= 0x8000u; sign += 0x8000u) {
            const float fa = ifa__f16_to_f32((uint16_t)(h | sign));
            src[n++] = fa;
            if (h + 1 >= 0x7C00u) continue;
            const float fb = ifa__f16_to_f32((uint16_t)((h + 1) | sign));
            const float mid = (float)(((double)fa + (double)fb) / 2.0);
            src[n++] = mid;
            src[n++] = nextafterf(mid, fa);
            src[n++] = nextafterf(mid, fb);
        }
    for (int64_t i = 0; i < NELEMS(specials); i++) src[n++] = specials[i];
    int64_t rows = 0;
    for (int ti = 0; ti < count; ti++) {
        const ifa__kernel_table *t = tables[ti];
        got[n] = 0xABCDu;
        t->f32_to_f16(src, n, got);
        int64_t bad = -1;
        for (int64_t i = 0; i < n && bad < 0; i++)
            if (got[i] != ifa__f32_to_f16(src[i])) bad = i;
        const float x = bad < 0 ? 0.0f : src[bad];
        CHECK_MSG(bad < 0, "%s f32_to_f16 of %.9g: 0x%04x, want 0x%04x", t->isa, (double)x,
                  bad < 0 ? 0u : got[bad], ifa__f32_to_f16(x));
        CHECK_MSG(got[n] == 0xABCDu, "%s f32_to_f16 wrote past %lld halves", t->isa, (long long)n);
        /* Short rows over the specials and their neighbours, at every start. */
        for (int64_t len = 0; len <= 17; len++)
            for (int64_t start = n - NELEMS(specials) - 17; start + len <= n; start++, rows++) {
                got[len] = 0xABCDu;
                t->f32_to_f16(src + start, len, got);
                for (int64_t i = 0; i < len; i++)
                    CHECK_MSG(got[i] == ifa__f32_to_f16(src[start + i]), "%s f32_to_f16 row of %lld at %lld: "
                              "element %lld", t->isa, (long long)len, (long long)start, (long long)i);
                CHECK_MSG(got[len] == 0xABCDu, "%s f32_to_f16 row of %lld wrote past it", t->isa,
                          (long long)len);
            }
    }
    tst_note("%lld floats and %lld short rows over %d tables", (long long)n, (long long)rows, count);
    free(src);
    free(got);
}

int main(int argc, char **argv)
{
    printf("ISAs available to the library: %s\n", ifa_isa_available());
    static const tst_case cases[] = {
        TST_CASE(test_qk_edges),
        TST_CASE(test_pv_edges),
        TST_CASE(test_qk_q16_edges),
        TST_CASE(test_qk_bf16q_edges),
        TST_CASE(test_pv_q16_edges),
        TST_CASE(test_pv_bf16p_edges),
        TST_CASE(test_pv_bf16p_inf_last_row),
        TST_CASE(test_pv_bf16p_rounds_weights),
        TST_CASE(test_ref_qk_sums_in_double),
        TST_CASE(test_softmax),
        TST_CASE(test_exp_range),
        TST_CASE(test_prefetch_stream),
        TST_CASE(test_row_scale),
        TST_CASE(test_f32_to_f16_rounding),
        TST_CASE(test_f32_to_f16_tables),
    };
    return tst_main(argc, argv, cases, sizeof cases / sizeof cases[0]);
}
