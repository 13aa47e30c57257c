/*
 * kernel_loop.c - how fast do the library's AVX-512 (or AVX2) kernels run by themselves,
 * without the paged gather, the windows and the bookkeeping of attend.c around them?
 *
 * A probe, not part of the library or of the CMake build. It compiles the library's kernel file
 * into itself (the same source, the same constants for G and D; -DKL_AVX2 takes the AVX2 file)
 * and calls its table the way attend.c does for one dense unit: qk, softmax, pv over n rows of
 * K and V (D = 128), G query heads. KL_KIND in the environment picks the rows and kernels:
 * f16 (float16, the default), bf16 (the same bits read as bfloat16), i8 (int8 rows, the float qk and pv), i8q16 (int8 rows, the
 * integer qk_i8_q16 and pv_i8_q16 of inner_precise = 1). Two measurements:
 *
 *   l1    one core, the n rows in L1: ns per row of qk, softmax and pv alone, then of the three
 *         in turn (each call repeated on the same rows).
 *   dram  T threads (1 or 2), each on its own 128 MiB of K and V in units of n contiguous rows
 *         (one head's rows, as a (blocks, KVN, bs, D) page holds them), visited in order; while
 *         it computes a unit, a call prefetches the unit `dist` units ahead through the
 *         kernels' own prefetch stream (K during qk, V during pv), as attend.c's lists do. ns
 *         per row per core and GB/s of K and V over all threads.
 *
 * This is the ceiling of the kernels on contiguous rows with the simplest prefetch: what the
 * library loses beyond it is the paged form and its bookkeeping.
 *
 * KL_3D=1 in the environment makes dram read the rows as a (blocks, bs, KVN*D) cache holds them,
 * 8 heads of a token side by side (a head's rows 8 rows apart), and visit them as attend.c's dense
 * windows do: windows of n tokens, the 8 heads of a window in turn, each head's call prefetching
 * its eighth of the window ahead as whole tokens in address order (dist is then unused). That is
 * the kernels on the 3-D cache's pattern, without the paging and the bookkeeping of attend.c.
 * int8 rows then read bytes of the float16 fill as well: any values time the same there.
 *
 * Build and run (from the repository root):
 *
 *   gcc -O3 -DNDEBUG -pthread -mavx512f -mavx512bw -mavx512dq -mavx512vl -mavx512bf16 \
 *       -mavx512vnni -mavx2 -mfma -mf16c -Isrc bench/probes/kernel_loop.c -o /tmp/kernel_loop -lm
 *
 *   gcc -O3 -DNDEBUG -DKL_AVX2 -pthread -mavx2 -mfma -mf16c -Isrc bench/probes/kernel_loop.c \
 *       -o /tmp/kernel_loop_avx2 -lm
 *
 *   /tmp/kernel_loop l1 G [n]                    n rows per call (default 32, at most 64)
 *   /tmp/kernel_loop dram G [n] [threads] [dist]  defaults 32, 2, 1 (dist 0: no software prefetch)
 *
 * -DDRAM_BYTES=... sets the rows' bytes per thread (K and V together; 128 MiB by default), so that
 * the same loop runs from L2 or L3 (below 16 MiB, with proportionally more rounds). KL_HUGE=1 in
 * the environment asks for transparent huge pages (madvise), as ifa_bench --huge-pages does;
 * without it the rows lie on 4 KiB pages wherever transparent huge pages are madvise-only.
 *
 * Three more switches of the environment, for dram (twenty-seventh session):
 *   KL_AB=1     every round twice, with the prefetch stream and without it (dist 0), in one
 *               process; prints both and their ratio.
 *   KL_SELF=1   each unit's stream lists the unit's own rows: with the rows in cache, the cost of
 *               issuing the prefetches alone. KL_AB and KL_SELF need dist >= 1 and not KL_3D.
 *   KL_PARTS=n  which kernels run: qk 1, softmax 2, pv 4 (default 7, all three). pv_i8_q16
 *               without the softmax finds its weights all 0 and returns at once.
 *
 * These are the library's flags for that file. With -march=native instead, GCC 12 (which does
 * not know this Zen 5 by name) compiled the kernels 15-20% slower in L1: qk 11.7 against 9.9 ns
 * per row at G = 8.
 *
 * Measured 2026-11-27 (fourteenth session, three runs; docs/benchmarks.md), ns per row:
 *   l1, n = 64, G = 8: qk 9.6-9.9, softmax 1.7, pv 8.5-8.8, the three 19.6-20.4 (their 128
 *   FMAs per row alone need 15.2 at 8.4 FMAs per ns); G = 4: qk 4.9-5.1, softmax 0.8, pv 4.0,
 *   the three 9.7-9.9. n = 32 costs G = 8 another 0.3-0.6 (the softmax's per-call work).
 *   dram, G = 8, n = 64: one thread 26-33 per row (16-20 GB/s); two threads 28-35 per core,
 *   29.5-37 GB/s; n = 32 32-33 GB/s; G = 4, n = 64, two threads 49-55 GB/s. The library in the
 *   same minutes, Llama-3-70B B=1 L=32K fp16 in the (blocks, KVN, bs, D) cache: 28-29 GB/s.
 *   An earlier version of this loop put dist 1, 2, 4 and 8 within the noise of each other
 *   (36-40 GB/s, two threads; 8 the slowest in both of two runs).
 *
 * Fifteenth session, a Zen 3 machine (AVX2 only), -DKL_AVX2, l1, n = 16, best of 4-6 interleaved
 * runs, ns per row: f16 G = 4 qk 16.9 -> 13.9 with the query in a register (in_register),
 * softmax 4.9, pv 12.4; G = 8 qk 29.2 -> 24.6, pv 26.7; i8 (float kernels) G = 4 qk 16.8, pv 14.3;
 * i8q16 (VPMADDWD) G = 4 qk 13.8, pv 13.0; G = 8 qk 21.5, pv 26.2 (docs/kernels.md).
 * Sixteenth session, the same host, after its kernel changes (docs/kernels.md), l1, n = 16: f16
 * G = 4 qk 14.0, softmax 3.7, pv 12.3, the three 30.1; i8q16 G = 4 qk 10.0, softmax 3.7, pv 12.6
 * (n = 32: 10.4). dram, f16, one thread, 2 MiB-aligned rows, best of 3: G = 1 30.8 ns per row
 * (17 GB/s, the one-thread read bandwidth), G = 2 33.3, G = 4 41.0, against 17.0, 25.3 and 31.0
 * of arithmetic in L1: as the arithmetic nears the memory time, less of the two overlaps. Two
 * threads, G = 4: 41.7-44.5 per row per core, 24-25 GB/s, where the library read 19-21 GB/s.
 * Seventeenth session, the same host, after the qk steps (docs/kernels.md), l1, n = 16: f16 qk
 * G = 1 6.4, G = 4 12.6, G = 8 24.5; i8q16 qk G = 4 9.6. The query and scores here are 64-byte
 * aligned, as the library's are since that session: 16 bytes off a line, i8q16's qk took 11.9.
 * Eighteenth session, the same host, dram, n = 32, one thread, three runs: f16 G = 4 40.6-42.9 ns
 * per row with the kernels' prefetch stream one unit ahead, 59.8-64.6 without it (dist 0); G = 8
 * 67.5-79.0 against 88.7-131. The hardware prefetchers alone do not keep up even on these
 * contiguous rows (docs/benchmarks.md).
 * Twenty-sixth session, the same host, dram, two threads, 2-3 interleaved runs, ns per row per
 * core, contiguous against KL_3D: f16 G = 4 n = 16 37.7-38.3 against 40.2-40.9 (n = 32 in 3-D:
 * 44.0-45.2); i8q16 G = 4 n = 32 26.5-26.9 against 29.8-30.3; f16 G = 8 n = 32 61.7-62.6 against
 * 69.7-70.8. The library in the same minutes (Llama-3-8B or -70B, B = 4, L = 4K, 3-D cache):
 * about 45, 34 and 75.5 (docs/benchmarks.md).
 * Twenty-seventh session, the same host, -DDRAM_BYTES=262144, one thread, n = 32, KL_AB=1
 * KL_SELF=1, time with / without the stream: f16 G = 4 1.26-1.27 (qk 1.25-1.27, pv 1.29-1.30),
 * G = 8 1.07-1.14; i8q16 G = 4 1.10-1.11, G = 8 1.06-1.08. From DRAM (128 MiB, two threads):
 * 0.67, 0.78 and 0.71 (docs/benchmarks.md).
 */
#define _DEFAULT_SOURCE /* madvise and MADV_HUGEPAGE */
#define _POSIX_C_SOURCE 200809L
#if defined(KL_AVX2)
#include "kernels/x86_avx2/attention_avx2.c"
#define KL_TABLE ifa__kernels_avx2
#else
#include "kernels/x86_avx512/attention_avx512.c"
#define KL_TABLE ifa__kernels_avx512
#endif

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <time.h>

#define D 128
#ifndef DRAM_BYTES
#define DRAM_BYTES ((size_t)128 << 20) /* K and V together, per thread (-DDRAM_BYTES=...: an L2 or L3 run) */
#endif

static double now(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + 1e-9 * (double)t.tv_nsec;
}

/* One thread's state: its query, scores, softmax state and accumulators. */
typedef struct worker {
    int G, n, dist, kind; /* kind: KL_F16, KL_I8 (float query and weights), KL_I8Q16 (the integer kernels) */
    size_t units;
    uint16_t *k, *v; /* float16 rows, or int8 rows in the first half of each */
    int16_t *q16;
    float qscale[16];
    const void **krows, **vrows;
    float *q, *s, *acc, m[16], l[16], alpha[16];
    double ns_per_row;
    double ns_no_prefetch; /* KL_AB: the same rounds without the prefetch stream */
} worker;

enum { KL_F16, KL_I8, KL_I8Q16, KL_BF16 };

/* K and V start on a 2 MiB boundary, as ifa_bench --huge-pages and torch with
 * THP_MEM_ALLOC_ENABLE place a cache (4 KiB pages all the same: nothing here asks for huge
 * ones). Measured on the Zen 3 host, dram G = 4 n = 16, two threads, 8 interleaved runs (sixteenth
 * session): 64-byte alignment (a large block then begins 16 bytes into a page, so every unit of
 * rows straddles two pages) best 46.8, median 57.1 ns per row per core; 4 KiB alignment 44.8,
 * 51.5; 2 MiB 41.7, 44.5. */
static void *block_alloc(size_t bytes) {
    const size_t align = (size_t)2 << 20, size = (bytes + align - 1) / align * align;
    void *p = NULL;
    if (posix_memalign(&p, align, size) != 0) return NULL;
#if defined(MADV_HUGEPAGE)
    if (getenv("KL_HUGE") != NULL) madvise(p, size, MADV_HUGEPAGE); /* as ifa_bench --huge-pages */
#endif
    return p;
}

static void worker_init(worker *w, int G, int n, size_t units, int kind) {
    w->G = G, w->n = n, w->units = units, w->kind = kind;
    const size_t rows = units * (size_t)n;
    w->k = block_alloc(rows * D * 2);
    w->v = block_alloc(rows * D * 2);
    /* float16 values near 1 and 0.5, varied in their low bits: no subnormals anywhere. */
    for (size_t i = 0; i < rows * D; i++) {
        w->k[i] = (uint16_t)(0x3c00 ^ (i * 2654435761u >> 22 & 0x3ff));
        w->v[i] = (uint16_t)(0x3800 ^ (i * 40503u >> 6 & 0x3ff));
    }
    w->krows = malloc(rows * sizeof *w->krows);
    w->vrows = malloc(rows * sizeof *w->vrows);
    for (size_t i = 0; i < rows; i++) w->krows[i] = w->k + i * D, w->vrows[i] = w->v + i * D;
    w->q = aligned_alloc(64, (size_t)G * D * 4);
    w->s = aligned_alloc(64, (size_t)G * 64 * 4);
    w->acc = aligned_alloc(64, (size_t)G * D * 4);
    for (int i = 0; i < G * D; i++) w->q[i] = (float)(i % 97) / 970.0f, w->acc[i] = 0.0f;
    /* The table's order of bfloat16's q (kernels.h), as attend.c gives it. */
    if (w->kind == KL_BF16 && KL_TABLE.bf16_swapped_quads) ifa__swap_mid_quads(w->q, G, D);
    w->q16 = aligned_alloc(64, (size_t)G * D * 2);
    for (int i = 0; i < G * D; i++) w->q16[i] = (int16_t)((i * 7919) % 4001 - 2000);
    for (int g = 0; g < 16; g++) w->qscale[g] = 1e-6f;
    if (w->kind == KL_I8 || w->kind == KL_I8Q16) /* int8 rows of D bytes, D apart: the first half of each float16 row's room */
        for (size_t i = 0; i < rows; i++) {
            w->krows[i] = (const int8_t *)w->k + i * D;
            w->vrows[i] = (const int8_t *)w->v + i * D;
            for (int d = 0; d < D; d++) {
                ((int8_t *)w->k)[i * D + d] = (int8_t)((i * 31 + d * 17) % 255 - 127);
                ((int8_t *)w->v)[i * D + d] = (int8_t)((i * 13 + d * 29) % 255 - 127);
            }
        }
    /* A running maximum above every score: the softmax takes its usual path (no new maximum)
     * and the weights stay normal floats. */
    for (int g = 0; g < 16; g++) w->m[g] = 30.0f, w->l[g] = 0.0f;
}

/* qk, softmax and pv (the parts of `parts`: 1, 2, 4) of the rows kr and vr, prefetching pk and
 * pv. */
static void unit_rows(worker *w, const void *const *kr, const void *const *vr, ifa__prefetch_list pk,
                      ifa__prefetch_list pv, int parts) {
    const ifa__kernel_table *t = &KL_TABLE;
    const ifa__kv_kind fk = w->kind == KL_F16 ? IFA__KV_F16 : w->kind == KL_BF16 ? IFA__KV_BF16 : IFA__KV_I8;
    if (parts & 1) {
        if (w->kind == KL_I8Q16)
            t->qk_i8_q16(w->q16, w->qscale, w->G, D, kr, w->n, w->s, 64, pk);
        else
            t->qk[fk](w->q, w->G, D, kr, 1, w->n, w->s, 64, pk);
    }
    if (parts & 2) t->softmax(w->s, 64, w->G, w->n, w->m, w->l, w->alpha);
    if (parts & 4) {
        if (w->kind == KL_I8Q16)
            t->pv_i8_q16(w->s, 64, w->G, D, vr, w->n, w->acc, pv);
        else
            t->pv[fk](w->s, 64, w->G, D, vr, 1, w->n, w->acc, pv);
    }
}

/* Bytes of one row of the worker's kind. */
static int64_t row_bytes(const worker *w) {
    return w->kind == KL_F16 || w->kind == KL_BF16 ? D * 2 : D;
}

/* Unit u of the contiguous form, prefetching unit `ahead` (or nothing when ahead < 0). */
static void unit_call(worker *w, size_t u, long ahead, int parts) {
    const void *const *kr = w->krows + u * (size_t)w->n, *const *vr = w->vrows + u * (size_t)w->n;
    ifa__prefetch_list pk = IFA__NO_PREFETCH, pv = IFA__NO_PREFETCH;
    if (ahead >= 0) {
        pk = (ifa__prefetch_list){w->krows + (size_t)ahead * w->n, w->n, row_bytes(w)};
        pv = (ifa__prefetch_list){w->vrows + (size_t)ahead * w->n, w->n, row_bytes(w)};
    }
    unit_rows(w, kr, vr, pk, pv, parts);
}

/* KL_3D: the rows as a (blocks, bs, KVN*D) page holds them, HEADS_3D heads of a token side by
 * side, visited as attend.c's dense windows visit them: windows of n tokens, the heads of a window
 * in turn, each head's unit prefetching its share of the window ahead as whole token stretches in
 * address order (window_prefetch). Head h of window `win` of `wins`; `parts` as unit_rows. */
#define HEADS_3D 8
static void unit_3d(worker *w, size_t win, int h, size_t wins, int parts) {
    const void *kr[64], *vr[64], *pkr[64], *pvr[64];
    const int n = w->n;
    const size_t rb = (size_t)row_bytes(w);
    const char *k = (const char *)w->k, *v = (const char *)w->v;
    for (int i = 0; i < n; i++) {
        kr[i] = k + ((win * (size_t)n + (size_t)i) * HEADS_3D + (size_t)h) * rb;
        vr[i] = v + ((win * (size_t)n + (size_t)i) * HEADS_3D + (size_t)h) * rb;
    }
    const size_t ahead = (win + 1) % wins;
    int m = 0;
    for (int r = h * n / HEADS_3D; r < (h + 1) * n / HEADS_3D; r++, m++) {
        pkr[m] = k + (ahead * (size_t)n + (size_t)r) * HEADS_3D * rb;
        pvr[m] = v + (ahead * (size_t)n + (size_t)r) * HEADS_3D * rb;
    }
    unit_rows(w, kr, vr, (ifa__prefetch_list){pkr, m, (int64_t)(HEADS_3D * rb)},
              (ifa__prefetch_list){pvr, m, (int64_t)(HEADS_3D * rb)}, parts);
}

/* Best ns per row of `parts` over 100 rounds of 200 calls on unit 0 (rows in L1). */
static double l1_time(worker *w, int parts) {
    double best = 1e30;
    for (int r = 0; r < 100; r++) {
        const double t0 = now();
        for (int i = 0; i < 200; i++) unit_call(w, 0, -1, parts);
        const double ns = (now() - t0) / 200 / w->n * 1e9;
        if (ns < best) best = ns;
    }
    return best;
}

static int side_by_side; /* KL_3D */
static int pf_self;      /* KL_SELF: each unit's stream lists its own rows */
static int pf_ab;        /* KL_AB: every round twice, with and without the prefetch stream */
static int dram_parts = 7; /* KL_PARTS: which of qk (1), softmax (2) and pv (4) dram runs */

/* Rounds of dram_run: 5 over the default 128 MiB; a run from L2 or L3 (-DDRAM_BYTES below 16 MiB)
 * takes proportionally more, so that each form gets a few milliseconds in all. */
#define DRAM_ROUNDS (DRAM_BYTES >= ((size_t)16 << 20) ? 5 : (int)(5 * (((size_t)16 << 20) / DRAM_BYTES)))

/* One pass over the worker's rows, prefetching `dist` units ahead (0: no prefetch); ns per row. */
static double dram_pass(worker *w, int dist) {
    const size_t wins = w->units / HEADS_3D; /* windows of the 3-D form: as many rows or fewer */
    const double t0 = now();
    if (side_by_side)
        for (size_t win = 0; win < wins; win++)
            for (int h = 0; h < HEADS_3D; h++) unit_3d(w, win, h, wins, dram_parts);
    else
        for (size_t u = 0; u < w->units; u++) {
            const long ahead = dist == 0 ? -1 : pf_self ? (long)u : (long)((u + (size_t)dist) % w->units);
            unit_call(w, u, ahead, dram_parts);
        }
    const double rows = (double)(side_by_side ? wins * HEADS_3D : w->units) * w->n;
    return (now() - t0) / rows * 1e9;
}

static void *dram_run(void *arg) {
    worker *w = arg;
    w->ns_per_row = w->ns_no_prefetch = 1e30;
    for (int r = 0; r < DRAM_ROUNDS; r++) {
        const double ns = dram_pass(w, w->dist);
        if (ns < w->ns_per_row) w->ns_per_row = ns;
        if (pf_ab) {
            const double off = dram_pass(w, 0);
            if (off < w->ns_no_prefetch) w->ns_no_prefetch = off;
        }
    }
    return NULL;
}

int main(int argc, char **argv) {
    if (argc < 3 || (strcmp(argv[1], "l1") != 0 && strcmp(argv[1], "dram") != 0)) {
        fprintf(stderr, "usage: %s l1 G [n] | dram G [n] [threads] [dist]   (env KL_KIND=f16|bf16|i8|i8q16)\n", argv[0]);
        return 2;
    }
    const char *kn = getenv("KL_KIND");
    const int kind = kn == NULL || strcmp(kn, "f16") == 0 ? KL_F16
                     : strcmp(kn, "bf16") == 0                ? KL_BF16
                     : strcmp(kn, "i8") == 0                  ? KL_I8
                                                              : KL_I8Q16;
    const int G = atoi(argv[2]), n = argc > 3 ? atoi(argv[3]) : 32;
    if (G < 1 || G > 16 || n < 1 || n > 64) {
        fprintf(stderr, "G must be 1-16 and n 1-64\n");
        return 2;
    }
    if (strcmp(argv[1], "l1") == 0) {
        worker w;
        worker_init(&w, G, n, 1, kind);
        const double qk = l1_time(&w, 1), sm = l1_time(&w, 2), pv = l1_time(&w, 4), all = l1_time(&w, 7);
        printf("l1 G=%d n=%d: qk %.2f  softmax %.2f  pv %.2f  all three %.2f ns per row (acc %g)\n", G, n, qk, sm,
               pv, all, (double)w.acc[1]);
        return 0;
    }
    const int threads = argc > 4 ? atoi(argv[4]) : 2, dist = argc > 5 ? atoi(argv[5]) : 1;
    if (threads < 1 || threads > 2 || dist < 0) {
        fprintf(stderr, "threads must be 1 or 2, dist at least 0 (0: no software prefetch)\n");
        return 2;
    }
    side_by_side = getenv("KL_3D") != NULL;
    pf_self = getenv("KL_SELF") != NULL;
    pf_ab = getenv("KL_AB") != NULL;
    if (getenv("KL_PARTS") != NULL) dram_parts = atoi(getenv("KL_PARTS"));
    if (dram_parts < 1 || dram_parts > 7 || ((pf_ab || pf_self) && (side_by_side || dist == 0))) {
        fprintf(stderr, "KL_PARTS must be 1-7; KL_AB and KL_SELF need dist >= 1 and not KL_3D\n");
        return 2;
    }
    worker w[2];
    pthread_t th[2];
    for (int i = 0; i < threads; i++) {
        worker_init(&w[i], G, n, DRAM_BYTES / ((size_t)n * D * 2 * 2), kind);
        w[i].dist = dist;
    }
    for (int i = 0; i < threads; i++) pthread_create(&th[i], NULL, dram_run, &w[i]);
    for (int i = 0; i < threads; i++) pthread_join(th[i], NULL);
    double worst = 0.0;
    for (int i = 0; i < threads; i++) worst = w[i].ns_per_row > worst ? w[i].ns_per_row : worst;
    printf("dram%s G=%d n=%d threads=%d dist=%d: %.2f ns per row per core, %.1f GB/s of K and V (acc %g)\n",
           side_by_side ? " 3-D" : "", G, n, threads, dist, worst,
           threads * 2.0 * (double)row_bytes(&w[0]) / worst, (double)w[0].acc[1]);
    if (pf_ab) {
        double off = 0.0;
        for (int i = 0; i < threads; i++) off = w[i].ns_no_prefetch > off ? w[i].ns_no_prefetch : off;
        printf("  without the prefetch stream (KL_AB, the same rounds): %.2f ns per row per core; "
               "with / without %.3f\n", off, worst / off);
    }
    return 0;
}
