/*
 * sparse_pattern.c - how fast can this machine read the rows a sparse call reads, with no
 * arithmetic at all?
 *
 * A probe, not part of the library or of the CMake build (AVX-512 or AVX2). Two threads read 1 GiB
 * of K and 1 GiB of V laid out as pages of 16 tokens x 8 heads x 128 float16 (32 KiB), one unit
 * at a time: the 16 rows (256 bytes each) of one head of one page, in K and then in V, as
 * attend.c's sparse units do at block size 16. Each unit's lines are prefetched (PREFETCHT0)
 * `dist` units ahead, spread evenly over the rows of the current unit (8 lines per row), as the
 * kernels' stream does. Patterns:
 *
 *   3d-random   (blocks, bs, KVN*D) pages: a head's rows are 256 bytes every 2 KiB; random pages
 *               (a block table scatters them), heads in turn, as a 1/8 selection reads them;
 *   4d-random   (blocks, KVN, bs, D) pages: a head's rows are one 4 KiB run; random pages;
 *   4d-ordered  the same runs, pages in address order: a dense read in 4 KiB pieces;
 *   3d-sorted,  the units of a tile in address order instead of heads in turn: each group of 2048
 *   4d-sorted   units (8 heads x 256 pages, a 1/8 selection) draws its pages from a stretch of
 *               `spread` pages of the pool and is sorted by (page, head), so heads that chose
 *               the same page read it one after the other. `spread` = the whole pool (32768)
 *               is how a block table scatters a sequence's pages; 2048 crowds a tile's pages
 *               into 64 MiB.
 *
 * Each pattern reads 128 MiB per repetition (best of 3), the patterns alternate every round.
 * Build and run:
 *
 *   gcc -O2 -march=native -pthread bench/probes/sparse_pattern.c -o /tmp/sparse_pattern
 *   /tmp/sparse_pattern 6 [dist] [spread]   (rounds; units ahead, default 8; pages a sorted
 *                                             group draws from, default the whole pool)
 *
 * Measured 2026-11-27 (docs/benchmarks.md, twelfth session), GB/s of K and V, two threads:
 * 8 units ahead (7 rounds in two runs): 3d-random 18-28, 4d-random 20-35, 4d-ordered 39-47;
 * 2 units ahead the pure reads were too short to hide the latency (3d 17-25, ordered 28-39); a
 * first version that prefetched each unit at once, 2-8 units ahead, 3d 24-31, 4d-random 27-37,
 * 4d-ordered 34-51. Whatever the distance, the sparse 3-D pattern read 0.45-0.75 of an ordered
 * read of the same bytes in the same minutes, with no arithmetic at all.
 *
 * Thirteenth session, sorted units against random ones, the ratio of GB/s in the same round
 * (rounds after the first, whose first pattern reads low while the machine settles): spread =
 * the whole pool, 4 rounds in two runs: 3-D 0.99-1.00, 4-D 0.95-1.08 (nothing). Spread 2048 (a
 * tile's pages within 64 MiB), 9 rounds in three runs: 3-D 0.92-1.6, 4-D 0.98-1.4. Sorting helps
 * only pages that lie close together, and a block table does not put them there.
 *
 * Seventeenth session, the Zen 3 host (AVX2 build, the loads 32 bytes wide), 8 units ahead, two
 * rounds after the first: 3d-random 12.0-12.2 GB/s, 4d-random 17.3-19.3, 3d-sorted 12.4-12.6,
 * 4d-sorted 20.0. The library's sparse 3-D calls read about the 3d-random figure (11.7 GB/s in
 * the fifteenth session): there the pattern, not the arithmetic, is the limit.
 */
#include <immintrin.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <time.h>

#define PAGE_BYTES 32768 /* 16 tokens x 8 heads x 128 x 2 bytes */
#define ROWS 16
#define HEADS 8
#define UNITS_PER_REP 16384 /* units of 8 KiB (4 KiB of K, 4 of V): 128 MiB per repetition */

enum pattern { RANDOM_3D, RANDOM_4D, ORDERED_4D, SORTED_3D, SORTED_4D, PATTERNS };
static const char *const names[PATTERNS] = {"3d-random", "4d-random", "4d-ordered", "3d-sorted", "4d-sorted"};
#define SORTED_GROUP 2048 /* units of one tile: 8 heads x 256 pages */

static char *kbase, *vbase;
static size_t pages;
static int dist = 8;
static size_t spread; /* pages a sorted group draws from (0: the whole pool) */

typedef struct job {
    enum pattern pattern;
    const int *page, *head;
    int units;
    long long sink;
} job;

static double now(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + 1e-9 * (double)t.tv_nsec;
}

static const char *row(const char *base, enum pattern p, int page, int head, int r) {
    const char *pg = base + (size_t)page * PAGE_BYTES;
    return p == RANDOM_3D || p == SORTED_3D ? pg + r * (HEADS * 256) + head * 256
                                            : pg + head * (ROWS * 256) + r * 256;
}

/* Share s (of ROWS) of a unit's 128 lines: K's rows 0-15 then V's, 8 lines per share. */
static void prefetch_share(enum pattern p, int page, int head, int s) {
    const char *base = s < ROWS / 2 ? kbase : vbase;
    for (int r = 2 * (s % (ROWS / 2)); r < 2 * (s % (ROWS / 2)) + 2; r++)
        for (int l = 0; l < 4; l++) _mm_prefetch(row(base, p, page, head, r) + 64 * l, _MM_HINT_T0);
}

/* One sorted group: SORTED_GROUP units on random pages of a stretch of `spread` pages, heads in
 * turn, then sorted by (page, head) (insertion sort: the group is small and this is setup). */
static void make_sorted_group(int *page, int *head) {
    const size_t width = spread > 0 && spread < pages ? spread : pages;
    const size_t base = (size_t)rand() % (pages - width + 1);
    for (int u = 0; u < SORTED_GROUP; u++) {
        page[u] = (int)(base + (size_t)rand() % width);
        head[u] = u % HEADS;
    }
    for (int a = 1; a < SORTED_GROUP; a++) {
        const int pk = page[a], hk = head[a];
        int b = a - 1;
        for (; b >= 0 && (page[b] > pk || (page[b] == pk && head[b] > hk)); b--) {
            page[b + 1] = page[b];
            head[b + 1] = head[b];
        }
        page[b + 1] = pk;
        head[b + 1] = hk;
    }
}

static void *run(void *arg) {
    job *j = arg;
    /* Every line read whole: 64-byte loads with AVX-512, two 32-byte ones with AVX2. */
#if defined(__AVX512F__)
    __m512i acc = _mm512_setzero_si512();
#define READ_LINE(p) (acc = _mm512_add_epi64(acc, _mm512_load_si512(p)))
#else
    __m256i acc = _mm256_setzero_si256();
#define READ_LINE(p)                                                                                  \
    (acc = _mm256_add_epi64(_mm256_add_epi64(acc, _mm256_load_si256((const __m256i *)(p))),           \
                            _mm256_load_si256((const __m256i *)(p) + 1)))
#endif
    for (int u = 0; u < j->units; u++) {
        for (int r = 0; r < ROWS; r++) {
            if (u + dist < j->units) prefetch_share(j->pattern, j->page[u + dist], j->head[u + dist], r);
            const char *k = row(kbase, j->pattern, j->page[u], j->head[u], r);
            const char *v = row(vbase, j->pattern, j->page[u], j->head[u], r);
            for (int l = 0; l < 4; l++) {
                READ_LINE(k + 64 * l);
                READ_LINE(v + 64 * l);
            }
        }
    }
#if defined(__AVX512F__)
    j->sink = _mm512_reduce_add_epi64(acc);
#else
    j->sink = _mm256_extract_epi64(acc, 0) + _mm256_extract_epi64(acc, 1) + _mm256_extract_epi64(acc, 2) +
              _mm256_extract_epi64(acc, 3);
#endif
#undef READ_LINE
    return NULL;
}

int main(int argc, char **argv) {
    const int rounds = argc > 1 ? atoi(argv[1]) : 4;
    if (argc > 2) dist = atoi(argv[2]);
    if (argc > 3) spread = (size_t)atol(argv[3]);
    const size_t bytes = (size_t)1 << 30;
    pages = bytes / PAGE_BYTES;
    kbase = aligned_alloc(1 << 21, bytes);
    vbase = aligned_alloc(1 << 21, bytes);
    if (kbase == NULL || vbase == NULL) return 1;
    madvise(kbase, bytes, MADV_HUGEPAGE);
    madvise(vbase, bytes, MADV_HUGEPAGE);
    memset(kbase, 1, bytes);
    memset(vbase, 2, bytes);
    const int per_thread = UNITS_PER_REP / 2;
    static int page[2][UNITS_PER_REP / 2], head[2][UNITS_PER_REP / 2];
    srand(1);
    for (int r = 0; r < rounds; r++) {
        for (int p = 0; p < PATTERNS; p++) {
            for (int t = 0; t < 2; t++)
                if (p == SORTED_3D || p == SORTED_4D)
                    for (int u = 0; u < per_thread; u += SORTED_GROUP) make_sorted_group(page[t] + u, head[t] + u);
                else
                    for (int u = 0; u < per_thread; u++) {
                        head[t][u] = u % HEADS;
                        page[t][u] = p == ORDERED_4D ? (int)(((size_t)t * per_thread + u) / HEADS % pages)
                                                     : (int)((size_t)rand() % pages);
                    }
            double best = 1e30;
            for (int rep = 0; rep < 3; rep++) {
                job jobs[2];
                pthread_t th[2];
                const double t0 = now();
                for (int t = 0; t < 2; t++) {
                    jobs[t] = (job){(enum pattern)p, page[t], head[t], per_thread, 0};
                    pthread_create(&th[t], NULL, run, &jobs[t]);
                }
                for (int t = 0; t < 2; t++) pthread_join(th[t], NULL);
                const double dt = now() - t0;
                if (dt < best) best = dt;
            }
            printf("round %d %-10s %5.1f GB/s\n", r, names[p], (double)UNITS_PER_REP * 2 * ROWS * 256 / best / 1e9);
            fflush(stdout);
        }
    }
    return 0;
}
