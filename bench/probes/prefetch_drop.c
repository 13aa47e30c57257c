/*
 * prefetch_drop.c - how many software prefetches does one core keep when they come in a burst?
 *
 * A probe, not part of the library or of the CMake build (any x86-64 with SSE). For bursts of
 * 4 to 128 cache lines of a cold 64 KiB region (every other line, so that the adjacent-line
 * prefetcher adds nothing), it issues the burst (PREFETCHT0, PREFETCHT2, or plain loads), waits
 * about 10 us, and then reads the lines with dependent loads, each address depending on the
 * previous value. The time per line after the wait says where the lines are: about 6 ticks of
 * the time-stamp counter when every line was fetched, tens of ticks when some were not (those
 * come from DRAM, with the hardware prefetchers' help). Regions are drawn at random from 1 GiB.
 *
 * Build and run:
 *
 *   gcc -O2 bench/probes/prefetch_drop.c -o /tmp/prefetch_drop && /tmp/prefetch_drop
 *
 * Measured 2026-11-27 (twenty-first session, AMD EPYC Zen 3, 2 vCPUs, 300 regions per figure),
 * ticks per dependent line after the wait:
 *
 *   lines    none     T0     T2   loads
 *       4   319.3   14.4   14.5   14.3
 *      16   101.5    6.9    6.9    6.9
 *      24    65.9    6.4    6.4    6.4
 *      32    60.1   19.4   25.5    6.1
 *      64    50.8   25.6   22.7    6.1
 *     128    44.1   26.7   23.3    5.6
 *
 * Up to 24 lines every prefetched line arrives; from 32 on a quarter to a half of them never do:
 * a prefetch that finds the core's miss buffers full is dropped, not queued (the same loop
 * issuing nothing but prefetches ran at over 100 GB/s of addresses). PREFETCHT2 behaves the
 * same, so it holds the same buffers. Hence the kernels' stream of a few lines per step
 * (kernels.h), and why a burst of a unit's rows before computing it (docs/benchmarks.md) could
 * not work.
 */
#define _GNU_SOURCE
#include <immintrin.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <x86intrin.h>

#define POOL_BYTES ((size_t)1 << 30)
#define REGION_BYTES 65536
#define LINE_STRIDE 128 /* every other line */
#define WAIT_TICKS 30000
#define ROUNDS 300

enum { NONE, T0, T2, LOADS, MODES };
static const char *const mode_names[MODES] = {"none", "T0", "T2", "loads"};

static uint64_t ticks(void) {
    unsigned aux;
    return __rdtscp(&aux);
}

int main(void) {
    char *pool = mmap(NULL, POOL_BYTES, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (pool == MAP_FAILED) {
        perror("mmap");
        return 1;
    }
    madvise(pool, POOL_BYTES, MADV_HUGEPAGE);
    memset(pool, 0, POOL_BYTES); /* zeros: each loaded value adds 0 to the next address */
    srand(1);
    static const int bursts[] = {4, 8, 16, 24, 32, 48, 64, 128};
    printf("lines");
    for (int m = 0; m < MODES; m++) printf("  %7s", mode_names[m]);
    printf("   (ticks per dependent line after the wait)\n");
    for (size_t b = 0; b < sizeof bursts / sizeof bursts[0]; b++) {
        const int lines = bursts[b];
        printf("%5d", lines);
        for (int mode = 0; mode < MODES; mode++) {
            uint64_t total = 0;
            for (int r = 0; r < ROUNDS; r++) {
                const char *p = pool + (size_t)rand() % (POOL_BYTES / REGION_BYTES - 1) * REGION_BYTES;
                for (int i = 0; i < lines; i++) {
                    if (mode == T0) _mm_prefetch(p + i * LINE_STRIDE, _MM_HINT_T0);
                    if (mode == T2) _mm_prefetch(p + i * LINE_STRIDE, _MM_HINT_T2);
                    if (mode == LOADS) (void)*(volatile const char *)(p + i * LINE_STRIDE);
                }
                const uint64_t w = ticks();
                while (ticks() - w < WAIT_TICKS) {
                }
                long offset = 0;
                const uint64_t t0 = ticks();
                for (int i = 0; i < lines; i++)
                    offset = *(volatile const char *)(p + i * LINE_STRIDE + offset);
                total += ticks() - t0;
            }
            printf("  %7.1f", (double)total / ROUNDS / lines);
        }
        printf("\n");
    }
    return 0;
}
