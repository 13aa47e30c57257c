/*
 * kernel_loop.c - how fast do the library's AVX-512 kernels run by themselves, without the
 * paged gather, the windows and the bookkeeping of attend.c around them?
 *
 * A probe, not part of the library or of the CMake build (AVX-512 only). It compiles the
 * library's kernel file into itself (the same source, the same constants for G and D) and
 * calls its table the way attend.c does for one dense unit: qk, softmax, pv over n rows of
 * float16 K and V (D = 128), G query heads. Two measurements:
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
 * Build and run (from the repository root):
 *
 *   gcc -O3 -DNDEBUG -pthread -mavx512f -mavx512bw -mavx512dq -mavx512vl -mavx512bf16 \
 *       -mavx512vnni -mavx2 -mfma -mf16c -Isrc bench/probes/kernel_loop.c -o /tmp/kernel_loop -lm
 *
 *   /tmp/kernel_loop l1 G [n]                    n rows per call (default 32, at most 64)
 *   /tmp/kernel_loop dram G [n] [threads] [dist]  defaults 32, 2, 1
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
 */
#define _POSIX_C_SOURCE 200809L
#include "kernels/x86_avx512/attention_avx512.c"

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define D 128
#define DRAM_BYTES ((size_t)128 << 20) /* K and V together, per thread */

static double now(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + 1e-9 * (double)t.tv_nsec;
}

/* One thread's state: its query, scores, softmax state and accumulators. */
typedef struct worker {
    int G, n, dist;
    size_t units;
    uint16_t *k, *v;
    const void **krows, **vrows;
    float *q, *s, *acc, m[16], l[16], alpha[16];
    double ns_per_row;
} worker;

static void worker_init(worker *w, int G, int n, size_t units) {
    w->G = G, w->n = n, w->units = units;
    const size_t rows = units * (size_t)n;
    w->k = aligned_alloc(64, rows * D * 2);
    w->v = aligned_alloc(64, rows * D * 2);
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
    /* A running maximum above every score: the softmax takes its usual path (no new maximum)
     * and the weights stay normal floats. */
    for (int g = 0; g < 16; g++) w->m[g] = 30.0f, w->l[g] = 0.0f;
}

/* qk, softmax and pv of unit u, prefetching unit `ahead` (or nothing when ahead < 0). */
static void unit_call(worker *w, size_t u, long ahead, int parts) {
    const ifa__kernel_table *t = &ifa__kernels_avx512;
    const void *const *kr = w->krows + u * (size_t)w->n, *const *vr = w->vrows + u * (size_t)w->n;
    ifa__prefetch_list pk = IFA__NO_PREFETCH, pv = IFA__NO_PREFETCH;
    if (ahead >= 0) {
        pk = (ifa__prefetch_list){w->krows + (size_t)ahead * w->n, w->n, D * 2};
        pv = (ifa__prefetch_list){w->vrows + (size_t)ahead * w->n, w->n, D * 2};
    }
    if (parts & 1) t->qk[IFA__KV_F16](w->q, w->G, D, kr, 1, w->n, w->s, 64, pk);
    if (parts & 2) t->softmax(w->s, 64, w->G, w->n, w->m, w->l, w->alpha);
    if (parts & 4) t->pv[IFA__KV_F16](w->s, 64, w->G, D, vr, 1, w->n, w->acc, pv);
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

static void *dram_run(void *arg) {
    worker *w = arg;
    double best = 1e30;
    for (int r = 0; r < 5; r++) {
        const double t0 = now();
        for (size_t u = 0; u < w->units; u++) unit_call(w, u, (long)((u + (size_t)w->dist) % w->units), 7);
        const double ns = (now() - t0) / (double)(w->units * (size_t)w->n) * 1e9;
        if (ns < best) best = ns;
    }
    w->ns_per_row = best;
    return NULL;
}

int main(int argc, char **argv) {
    if (argc < 3 || (strcmp(argv[1], "l1") != 0 && strcmp(argv[1], "dram") != 0)) {
        fprintf(stderr, "usage: %s l1 G [n] | dram G [n] [threads] [dist]\n", argv[0]);
        return 2;
    }
    const int G = atoi(argv[2]), n = argc > 3 ? atoi(argv[3]) : 32;
    if (G < 1 || G > 16 || n < 1 || n > 64) {
        fprintf(stderr, "G must be 1-16 and n 1-64\n");
        return 2;
    }
    if (strcmp(argv[1], "l1") == 0) {
        worker w;
        worker_init(&w, G, n, 1);
        const double qk = l1_time(&w, 1), sm = l1_time(&w, 2), pv = l1_time(&w, 4), all = l1_time(&w, 7);
        printf("l1 G=%d n=%d: qk %.2f  softmax %.2f  pv %.2f  all three %.2f ns per row (acc %g)\n", G, n, qk, sm,
               pv, all, (double)w.acc[1]);
        return 0;
    }
    const int threads = argc > 4 ? atoi(argv[4]) : 2, dist = argc > 5 ? atoi(argv[5]) : 1;
    if (threads < 1 || threads > 2 || dist < 1) {
        fprintf(stderr, "threads must be 1 or 2, dist at least 1\n");
        return 2;
    }
    worker w[2];
    pthread_t th[2];
    for (int i = 0; i < threads; i++) {
        worker_init(&w[i], G, n, DRAM_BYTES / ((size_t)n * D * 2 * 2));
        w[i].dist = dist;
    }
    for (int i = 0; i < threads; i++) pthread_create(&th[i], NULL, dram_run, &w[i]);
    for (int i = 0; i < threads; i++) pthread_join(th[i], NULL);
    double worst = 0.0;
    for (int i = 0; i < threads; i++) worst = w[i].ns_per_row > worst ? w[i].ns_per_row : worst;
    printf("dram G=%d n=%d threads=%d dist=%d: %.2f ns per row per core, %.1f GB/s of K and V (acc %g)\n", G, n,
           threads, dist, worst, threads * 2.0 * D * 2 / worst, (double)w[0].acc[1]);
    return 0;
}
