/*
 * overlap.c - how much of one core's memory time and arithmetic overlap when the arithmetic
 * depends on the data, as in the kernels?
 *
 * A probe, not part of the library or of the CMake build (AVX2 and FMA only). One thread streams
 * 512 MiB of K and 512 MiB of V in 4 KiB units, as kernel_loop's dram mode does with 16 float16
 * rows of D = 128: each unit's 64 lines of K, then its 64 lines of V, in the order the AVX2
 * kernels touch them (qk: pairs of rows t and t+4 of 8-row tiles; pv: 16-d slices down all 16
 * rows). Per line it does `work` steps of 8 independent FMAs, plus (unless `indep`) FMAs that use
 * the loaded data, so that a late line stalls them. With `prefetch` it issues PREFETCHT0 for the
 * next unit's lines, one per line consumed, K during the K phase and V during the V phase, as the
 * kernels' prefetch stream does. Prints GB/s of K and V for each combination.
 *
 * Build and run:
 *
 *   gcc -O2 -mavx2 -mfma bench/probes/overlap.c -o /tmp/overlap
 *   /tmp/overlap [work ...]          (default: 0 1 2 3 4)
 *
 * Measured 2026-11-27 on the Zen 3 host (sixteenth session, docs/benchmarks.md), two runs, GB/s
 * with the arithmetic dependent on the data and prefetching: work 0-1 16.7-20.1 (the one-thread
 * read bandwidth), work 2 12.7-13.3, work 3 11.4-13.3, work 4 9.6. A line of K then costs 8 work
 * + 4 FMAs, at 6.4 FMAs per ns about 3.1 ns at work 2 (20 GB/s if the two overlapped fully), 4.4
 * at work 3 (14.6 GB/s) and 5.6 at work 4 (11.4 GB/s). Without prefetching 5-8.5 whatever the
 * arithmetic: the hardware prefetchers do not follow this order from one 4 KiB unit to the next.
 */
#define _GNU_SOURCE
#include <immintrin.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <time.h>

#define BYTES ((size_t)512 << 20) /* of K, and as much of V */
#define UNIT 4096
#define LINES (UNIT / 64)
#define ROWS 16 /* rows of 256 bytes per unit */

static int k_order[LINES];      /* line of the unit read at step i of the K phase */
static int v_order[ROWS * 8];   /* byte offset of the 32-byte piece read at step i of the V phase */

static double now(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + 1e-9 * (double)t.tv_nsec;
}

/* The kernels' orders: qk visits 8-row tiles as pairs (t, t + 4), 4 lines per row alternating
 * between the pair; pv visits 16-float slices (32 bytes of float16) down all rows. */
static void make_orders(void) {
    int n = 0;
    for (int tile = 0; tile < ROWS / 8; tile++)
        for (int t = 0; t < 4; t++)
            for (int l = 0; l < 4; l++) {
                k_order[n++] = (tile * 8 + t) * 4 + l;
                k_order[n++] = (tile * 8 + t + 4) * 4 + l;
            }
    n = 0;
    for (int s = 0; s < 8; s++)
        for (int r = 0; r < ROWS; r++) v_order[n++] = r * 256 + s * 32;
}

/* `work` steps of 8 independent FMA chains. */
#define WORK(W)                                                                                   \
    do {                                                                                          \
        for (int w_ = 0; w_ < (W); w_++) {                                                        \
            f0 = _mm256_fmadd_ps(f0, c, c), f1 = _mm256_fmadd_ps(f1, c, c);                       \
            f2 = _mm256_fmadd_ps(f2, c, c), f3 = _mm256_fmadd_ps(f3, c, c);                       \
            f4 = _mm256_fmadd_ps(f4, c, c), f5 = _mm256_fmadd_ps(f5, c, c);                       \
            f6 = _mm256_fmadd_ps(f6, c, c), f7 = _mm256_fmadd_ps(f7, c, c);                       \
        }                                                                                         \
    } while (0)

static double run(const char *k, const char *v, int work, int prefetch, int dependent) {
    const __m256 c = _mm256_set1_ps(0.999f);
    __m256 f0 = _mm256_set1_ps(1.0f), f1 = f0, f2 = f0, f3 = f0, f4 = f0, f5 = f0, f6 = f0, f7 = f0;
    __m256i sum = _mm256_setzero_si256();
    const size_t units = BYTES / UNIT;
    const double t0 = now();
    for (size_t u = 0; u < units; u++) {
        const char *ku = k + u * UNIT, *vu = v + u * UNIT;
        const char *kn = k + (u + 1) % units * UNIT, *vn = v + (u + 1) % units * UNIT;
        for (int i = 0; i < LINES; i++) {
            if (prefetch) _mm_prefetch(kn + 64 * i, _MM_HINT_T0);
            const char *line = ku + 64 * k_order[i];
            const __m256i a = _mm256_load_si256((const __m256i *)line);
            sum = _mm256_add_epi64(sum, _mm256_add_epi64(a, _mm256_load_si256((const __m256i *)(line + 32))));
            if (dependent) {
                const __m256 d = _mm256_castsi256_ps(a);
                f0 = _mm256_fmadd_ps(f0, d, c), f1 = _mm256_fmadd_ps(f1, d, c);
                f2 = _mm256_fmadd_ps(f2, d, c), f3 = _mm256_fmadd_ps(f3, d, c);
            }
            WORK(work);
        }
        for (int i = 0; i < ROWS * 8; i++) {
            if (prefetch && i % 2 == 0) _mm_prefetch(vn + 64 * (i / 2), _MM_HINT_T0);
            const __m256i a = _mm256_load_si256((const __m256i *)(vu + v_order[i]));
            sum = _mm256_add_epi64(sum, a);
            if (dependent) {
                const __m256 d = _mm256_castsi256_ps(a);
                f4 = _mm256_fmadd_ps(f4, d, c), f5 = _mm256_fmadd_ps(f5, d, c);
            }
            WORK(work / 2); /* two 32-byte pieces per line: the same arithmetic per byte as K */
        }
    }
    const double t = now() - t0;
    f0 = _mm256_add_ps(_mm256_add_ps(_mm256_add_ps(f0, f1), _mm256_add_ps(f2, f3)),
                       _mm256_add_ps(_mm256_add_ps(f4, f5), _mm256_add_ps(f6, f7)));
    volatile long long sink = _mm256_extract_epi64(sum, 0) + (long long)_mm256_cvtss_f32(f0);
    (void)sink;
    return 2.0 * (double)BYTES / t / 1e9;
}

int main(int argc, char **argv) {
    static const int default_work[] = {0, 1, 2, 3, 4};
    const int nw = argc > 1 ? argc - 1 : 5;
    char *k = aligned_alloc((size_t)2 << 20, BYTES), *v = aligned_alloc((size_t)2 << 20, BYTES);
    if (k == NULL || v == NULL) return 1;
    madvise(k, BYTES, MADV_HUGEPAGE);
    madvise(v, BYTES, MADV_HUGEPAGE);
    memset(k, 1, BYTES);
    memset(v, 2, BYTES);
    make_orders();
    for (int j = 0; j < nw; j++) {
        const int work = argc > 1 ? atoi(argv[j + 1]) : default_work[j];
        for (int dep = 1; dep >= 0; dep--)
            for (int pf = 0; pf < 2; pf++) {
                double best = 0.0;
                for (int rep = 0; rep < 3; rep++) {
                    const double g = run(k, v, work, pf, dep);
                    best = g > best ? g : best;
                }
                printf("work %d, arithmetic %s, %s: %5.1f GB/s\n", work, dep ? "dependent  " : "independent",
                       pf ? "prefetch   " : "no prefetch", best);
                fflush(stdout);
            }
    }
    free(k);
    free(v);
    return 0;
}
