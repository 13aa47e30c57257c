/*
 * read_order.c - does the order in which a paged BSH cache is read change how fast it streams?
 *
 * A probe, not part of the library or of the CMake build (AVX-512 and F16C only). It reads 1 GiB
 * laid out as a (tokens, 8 heads x 128) float16 cache, the rows of a (blocks, bs, KVN*D) page, and
 * does the work of the qk kernel on it: each 64-byte line converted once and used in 8 float32
 * FMAs (4 query heads per KV head, G = 4), 16 accumulators per group of 4 rows. Two orders:
 *
 *   head   16-token windows, one KV head after another (what attend.c does today): a group is
 *          rows t, t+4, t+8, t+12 of one head, 2 KiB apart;
 *   token  2 tokens at a time, all heads in address order: a group is heads h, h+1 of tokens
 *          t, t+1 (each head keeps its own query vectors, so twice the query loads).
 *
 * Both prefetch every line 32 tokens ahead, in address order, 16 lines before each group of 4
 * rows (the same rate for both, no bursts). Build and run:
 *
 *   gcc -O3 -march=native -pthread bench/probes/read_order.c -o /tmp/read_order
 *   /tmp/read_order 1 && /tmp/read_order 2        (threads)
 *
 * Measured 2026-11-26 (docs/benchmarks.md), best of 3, interleaved: one thread 27.9-28.2 GB/s
 * in head order against 31.1-31.8 in token order; two threads 35.7-36.8 against 38.0-38.2. (A
 * first version that prefetched each head-order window in one burst gave 11.7-12.0 against
 * 20.4-22.2: the burst, not the order, made most of that gap.)
 */
#include <immintrin.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define HEADS 8
#define DIM 128
#define ROW_BYTES (HEADS * DIM * 2)
#define AHEAD 32 /* tokens prefetched ahead */

static float query[HEADS][4][DIM];

typedef struct job {
    const char *base;
    size_t tokens;
    int token_order;
    float sink;
} job;

static double now(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + 1e-9 * (double)t.tv_nsec;
}

static inline __m512 load16(const char *p) { return _mm512_cvtph_ps(_mm256_loadu_si256((const __m256i *)p)); }

/* Four rows against the query vectors qa (rows 0 and 2) and qb (rows 1 and 3); the sum of the
 * 16 accumulators stands in for the reduction tree. */
static inline __m512 group(const char *const r[4], int ha, int hb) {
    __m512 acc[4][4];
    for (int g = 0; g < 4; g++)
        for (int k = 0; k < 4; k++) acc[g][k] = _mm512_setzero_ps();
    for (int d = 0; d < DIM; d += 16) {
        const __m512 k0 = load16(r[0] + 2 * d), k1 = load16(r[1] + 2 * d);
        const __m512 k2 = load16(r[2] + 2 * d), k3 = load16(r[3] + 2 * d);
        for (int g = 0; g < 4; g++) {
            const __m512 qa = _mm512_loadu_ps(&query[ha][g][d]), qb = _mm512_loadu_ps(&query[hb][g][d]);
            acc[g][0] = _mm512_fmadd_ps(qa, k0, acc[g][0]);
            acc[g][1] = _mm512_fmadd_ps(qb, k1, acc[g][1]);
            acc[g][2] = _mm512_fmadd_ps(qa, k2, acc[g][2]);
            acc[g][3] = _mm512_fmadd_ps(qb, k3, acc[g][3]);
        }
    }
    __m512 s = _mm512_setzero_ps();
    for (int g = 0; g < 4; g++)
        for (int k = 0; k < 4; k++) s = _mm512_add_ps(s, acc[g][k]);
    return s;
}

/* Prefetches the 1 KiB that group `k` of the current step owns in the region AHEAD tokens on:
 * both orders issue 16 lines per group of 4 rows, in address order, so neither comes in bursts. */
static void prefetch_share(const char *ahead, size_t k) {
    for (size_t b = 0; b < 1024; b += 64) _mm_prefetch(ahead + k * 1024 + b, _MM_HINT_T0);
}

static void *run(void *arg) {
    job *j = arg;
    __m512 sink = _mm512_setzero_ps();
    const size_t step = j->token_order ? 2 : 16; /* tokens per step: 4 or 32 groups, 1 KiB each */
    for (size_t t0 = 0; t0 + step + AHEAD <= j->tokens; t0 += step) {
        const char *ahead = j->base + (t0 + AHEAD) * ROW_BYTES;
        size_t k = 0;
        if (j->token_order) {
            for (int h = 0; h < HEADS; h += 2) {
                const char *row0 = j->base + t0 * ROW_BYTES, *row1 = row0 + ROW_BYTES;
                const char *r[4] = {row0 + h * DIM * 2, row0 + (h + 1) * DIM * 2, row1 + h * DIM * 2,
                                    row1 + (h + 1) * DIM * 2};
                prefetch_share(ahead, k++);
                sink = _mm512_add_ps(sink, group(r, h, h + 1));
            }
        } else {
            for (int h = 0; h < HEADS; h++)
                for (int t = 0; t < 4; t++) {
                    const char *r[4];
                    for (int i = 0; i < 4; i++) r[i] = j->base + (t0 + t + 4 * i) * ROW_BYTES + h * DIM * 2;
                    prefetch_share(ahead, k++);
                    sink = _mm512_add_ps(sink, group(r, h, h));
                }
        }
    }
    j->sink = _mm512_reduce_add_ps(sink);
    return NULL;
}

int main(int argc, char **argv) {
    const int threads = argc > 1 ? atoi(argv[1]) : 1;
    if (threads < 1 || threads > 8) {
        fprintf(stderr, "usage: read_order [threads 1..8]\n");
        return 2;
    }
    const size_t total = (size_t)1 << 30, tokens = total / ROW_BYTES;
    char *base = aligned_alloc(4096, total);
    if (base == NULL) return 1;
    memset(base, 0x11, total); /* float16 0x1111: small normal numbers */
    for (int h = 0; h < HEADS; h++)
        for (int g = 0; g < 4; g++)
            for (int d = 0; d < DIM; d++) query[h][g][d] = 0.001f * (float)(d + g);
    for (int rep = 0; rep < 3; rep++)
        for (int order = 0; order < 2; order++) { /* interleaved: the host's speed drifts */
            double best = 1e30;
            for (int r = 0; r < 3; r++) {
                pthread_t tid[8];
                job jobs[8];
                const double t0 = now();
                for (int i = 0; i < threads; i++) {
                    jobs[i] = (job){base + (size_t)i * (tokens / threads) * ROW_BYTES, tokens / threads, order, 0.0f};
                    pthread_create(&tid[i], NULL, run, &jobs[i]);
                }
                for (int i = 0; i < threads; i++) pthread_join(tid[i], NULL);
                const double dt = now() - t0;
                best = dt < best ? dt : best;
            }
            printf("%d thread(s), %s order: %.1f GB/s\n", threads, order ? "token" : "head ", (double)total / best / 1e9);
        }
    free(base);
    return 0;
}
