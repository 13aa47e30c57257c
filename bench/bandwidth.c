/*
 * bandwidth.c - the machine probes: streaming read bandwidth and peak multiply-add rates.
 *
 * Read bandwidth. Decode attention reads its KV cache once, so its speed limit is the rate at which
 * the cores can stream memory in. The probe measures exactly that: each thread sums the 64-bit
 * words of its own contiguous share of a buffer far larger than the last-level cache (1 GiB by
 * default), and the best repetition gives the figure. The loop is plain C with four independent
 * accumulators; this file is built with -O3 and without ISA flags, so the compiler vectorises it
 * with the baseline SSE2 instructions, which are already enough to keep a core's load ports ahead
 * of DRAM. The figure therefore does not depend on which SIMD kernels libifa happens to have.
 *
 *     buffer:  | thread 0's share | thread 1's share | ... |     each thread: s += word, in order
 *
 * Peak multiply-add rate. A kernel can also be held back by the arithmetic: with fp16 KV every
 * element costs float32 FMAs after conversion, and with many query heads per KV head (G) that can
 * take longer than reading the bytes. The probe runs 16 independent accumulator chains of one
 * instruction (enough to cover its latency times its throughput on current x86 cores), so the rate
 * measured is the issue rate, not the latency. The instructions are reached through function-level
 * target attributes and run only when CPUID reports them, so the binary stays portable.
 *
 * Threads start together on a barrier; a repetition lasts from the release of the barrier to the
 * moment the last thread reaches the closing barrier.
 */
#define _POSIX_C_SOURCE 200809L

#include "bandwidth.h"

#include <pthread.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#if defined(__x86_64__) && defined(__GNUC__)
#include <immintrin.h>
#define BENCH_X86 1
#else
#define BENCH_X86 0
#endif

double bench_now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

/* ---- Running a task on several threads at once --------------------------------------------- */

typedef struct parallel_run {
    bench_task task;
    void *ctx;
    int threads;
    int reps;
    pthread_barrier_t start, end;
} parallel_run;

typedef struct worker_arg {
    parallel_run *run;
    int thread;
} worker_arg;

static void *worker_main(void *p) {
    const worker_arg *w = p;
    parallel_run *run = w->run;
    for (int r = 0; r < run->reps; r++) {
        pthread_barrier_wait(&run->start);
        run->task(run->ctx, w->thread, run->threads);
        pthread_barrier_wait(&run->end);
    }
    return NULL;
}

static int compare_doubles(const void *a, const void *b) {
    const double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

double bench_parallel_best(bench_task task, void *ctx, int threads, int reps, double *median) {
    if (threads < 1) threads = 1;
    if (reps < 1) reps = 1;
    parallel_run run = {.task = task, .ctx = ctx, .threads = threads, .reps = reps};
    pthread_barrier_init(&run.start, NULL, (unsigned)threads);
    pthread_barrier_init(&run.end, NULL, (unsigned)threads);
    pthread_t *tids = calloc((size_t)threads, sizeof *tids);
    worker_arg *args = calloc((size_t)threads, sizeof *args);
    double *times = calloc((size_t)reps, sizeof *times);
    int started = 1;
    if (tids != NULL && args != NULL && times != NULL) {
        for (int t = 1; t < threads; t++) {
            args[t] = (worker_arg){.run = &run, .thread = t};
            if (pthread_create(&tids[t], NULL, worker_main, &args[t]) != 0) break;
            started++;
        }
    }
    double best = 0.0;
    if (started == threads && times != NULL) {
        for (int r = 0; r < reps; r++) {
            pthread_barrier_wait(&run.start);
            const double t0 = bench_now();
            task(ctx, 0, threads);
            pthread_barrier_wait(&run.end);
            times[r] = bench_now() - t0;
        }
        qsort(times, (size_t)reps, sizeof *times, compare_doubles);
        best = times[0];
        if (median != NULL) *median = times[reps / 2];
        for (int t = 1; t < threads; t++) pthread_join(tids[t], NULL);
    } else {
        /* A thread could not be created: the workers that exist are parked on the start barrier
         * forever, which is acceptable in a benchmark that reports the failure and exits. */
        best = 0.0;
    }
    pthread_barrier_destroy(&run.start);
    pthread_barrier_destroy(&run.end);
    free(tids);
    free(args);
    free(times);
    return best;
}

/* ---- Read bandwidth ------------------------------------------------------------------------- */

typedef struct sum_ctx {
    const uint64_t *words;
    size_t n;
    uint64_t sums[256];
} sum_ctx;

/* The streaming loop. Four accumulators break the dependency chain; integer addition is
 * associative, so the compiler may vectorise it freely. */
static uint64_t sum_words(const uint64_t *p, size_t n) {
    uint64_t s0 = 0, s1 = 0, s2 = 0, s3 = 0;
    size_t i = 0;
    for (; i + 4 <= n; i += 4) {
        s0 += p[i];
        s1 += p[i + 1];
        s2 += p[i + 2];
        s3 += p[i + 3];
    }
    for (; i < n; i++) s0 += p[i];
    return s0 + s1 + s2 + s3;
}

static void share(size_t n, int thread, int threads, size_t *begin, size_t *end) {
    /* Shares are whole 4 KiB pages, so no two threads touch the same cache line. */
    const size_t page = 512;
    const size_t pages = (n + page - 1) / page;
    const size_t b = pages * (size_t)thread / (size_t)threads * page;
    const size_t e = pages * (size_t)(thread + 1) / (size_t)threads * page;
    *begin = b < n ? b : n;
    *end = e < n ? e : n;
}

static void sum_task(void *p, int thread, int threads) {
    sum_ctx *c = p;
    size_t b, e;
    share(c->n, thread, threads, &b, &e);
    c->sums[thread & 255] += sum_words(c->words + b, e - b);
}

static void fill_task(void *p, int thread, int threads) {
    sum_ctx *c = p;
    size_t b, e;
    share(c->n, thread, threads, &b, &e);
    /* Each thread touches its own share first, so its pages are mapped before any timing. */
    memset((void *)(uintptr_t)(c->words + b), 1, (e - b) * sizeof(uint64_t));
}

double bench_read_bandwidth(size_t bytes, int threads, int reps, double *median_gbps) {
    if (threads > 256) threads = 256;
    const size_t n = bytes / sizeof(uint64_t);
    void *mem = NULL;
    if (n == 0 || posix_memalign(&mem, 4096, n * sizeof(uint64_t)) != 0) return 0.0;
    sum_ctx *c = calloc(1, sizeof *c);
    if (c == NULL) {
        free(mem);
        return 0.0;
    }
    c->words = mem;
    c->n = n;
    bench_parallel_best(fill_task, c, threads, 1, NULL);
    bench_parallel_best(sum_task, c, threads, 1, NULL); /* warm-up pass */
    double median = 0.0;
    const double best = bench_parallel_best(sum_task, c, threads, reps, &median);
    /* The sums are published through a volatile so the loop cannot be dropped. */
    volatile uint64_t sink = 0;
    for (int t = 0; t < threads; t++) sink += c->sums[t];
    (void)sink;
    free(c);
    free(mem);
    const double gbytes = (double)(n * sizeof(uint64_t)) / 1e9;
    if (median_gbps != NULL) *median_gbps = median > 0.0 ? gbytes / median : 0.0;
    return best > 0.0 ? gbytes / best : 0.0;
}

/* ---- Peak multiply-add rates ---------------------------------------------------------------- */

#define MAC_CHAINS 16
/* AVX2 has 16 ymm registers: 16 chains and the two operands spilled three chains to the stack,
 * whose store-to-load round trip held the loop to 3.7 FMAs per ns on a core that does 5 (Zen 3;
 * the library's kernels did 5.2 in L1). Twelve chains still cover the FMA latency of two pipes. */
#define MAC_CHAINS_YMM 12
/* VPMADDWD + VPADDD pairs (maddwd_ymm): only the 1-cycle VPADDD chains through a sum. */
#define MADD_CHAINS_YMM 8
#define MAC_ITERS 1000000

typedef struct mac_ctx {
    bench_mac_kind kind;
    int zmm; /* 1: an AVX-512 form (MAC_CHAINS chains), 0: an AVX2 one (MAC_CHAINS_YMM or MADD_CHAINS_YMM) */
    volatile float sink_f[256];
    volatile int32_t sink_i[256];
    _Alignas(64) int16_t operands[4 * MADD_CHAINS_YMM * 16]; /* maddwd_ymm's products' operands */
} mac_ctx;

#if BENCH_X86
__attribute__((target("avx512f"))) static float fma_zmm(void) {
    __m512 acc[MAC_CHAINS];
    const __m512 x = _mm512_set1_ps(0.999f), y = _mm512_set1_ps(0.001f);
    for (int j = 0; j < MAC_CHAINS; j++) acc[j] = _mm512_set1_ps((float)j);
    for (int i = 0; i < MAC_ITERS; i++)
        for (int j = 0; j < MAC_CHAINS; j++) acc[j] = _mm512_fmadd_ps(acc[j], x, y);
    __m512 s = acc[0];
    for (int j = 1; j < MAC_CHAINS; j++) s = _mm512_add_ps(s, acc[j]);
    return _mm512_reduce_add_ps(s);
}

__attribute__((target("avx2,fma"))) static float fma_ymm(void) {
    __m256 acc[MAC_CHAINS_YMM];
    const __m256 x = _mm256_set1_ps(0.999f), y = _mm256_set1_ps(0.001f);
    for (int j = 0; j < MAC_CHAINS_YMM; j++) acc[j] = _mm256_set1_ps((float)j);
    for (int i = 0; i < MAC_ITERS; i++)
        for (int j = 0; j < MAC_CHAINS_YMM; j++) acc[j] = _mm256_fmadd_ps(acc[j], x, y);
    __m256 s = acc[0];
    for (int j = 1; j < MAC_CHAINS_YMM; j++) s = _mm256_add_ps(s, acc[j]);
    float out[8];
    _mm256_storeu_ps(out, s);
    return out[0] + out[7];
}

__attribute__((target("avx512f,avx512bf16"))) static float dpbf16_zmm(void) {
    __m512 acc[MAC_CHAINS];
    /* bf16 0x3A83 is about 0.001: the sums grow slowly and stay far from overflow. */
    const __m512bh a = (__m512bh)_mm512_set1_epi16(0x3A83);
    const __m512bh b = (__m512bh)_mm512_set1_epi16(0x3A83);
    for (int j = 0; j < MAC_CHAINS; j++) acc[j] = _mm512_set1_ps((float)j);
    for (int i = 0; i < MAC_ITERS; i++)
        for (int j = 0; j < MAC_CHAINS; j++) acc[j] = _mm512_dpbf16_ps(acc[j], a, b);
    __m512 s = acc[0];
    for (int j = 1; j < MAC_CHAINS; j++) s = _mm512_add_ps(s, acc[j]);
    return _mm512_reduce_add_ps(s);
}

__attribute__((target("avx512f,avx512vnni"))) static int32_t dpbusd_zmm(void) {
    __m512i acc[MAC_CHAINS];
    const __m512i a = _mm512_set1_epi8(3), b = _mm512_set1_epi8(-2);
    for (int j = 0; j < MAC_CHAINS; j++) acc[j] = _mm512_set1_epi32(j);
    for (int i = 0; i < MAC_ITERS; i++)
        for (int j = 0; j < MAC_CHAINS; j++) acc[j] = _mm512_dpbusd_epi32(acc[j], a, b);
    __m512i s = acc[0];
    for (int j = 1; j < MAC_CHAINS; j++) s = _mm512_add_epi32(s, acc[j]);
    return _mm512_reduce_add_epi32(s);
}

/* int8 KV on AVX2 without VNNI: the VPMADDWD of the kernels' int8 path at inner_precise = 1 (16
 * int16 products added in pairs into 8 int32 lanes) and the VPADDD that accumulates it, counted
 * together as one instruction of 16 multiply-adds. As in the kernels, the products' operands come
 * from memory (x: 4 x 8 vectors in L1, a different 8 on each iteration) and only the 1-cycle
 * VPADDD chains through a sum, so eight sums cover it. The pairs are written in asm: in C, GCC 12
 * copied every sum through another register and kept some on the stack (2.2-2.7 per ns on Zen 3,
 * where this measures 5.3). */
__attribute__((target("avx2"))) static int32_t maddwd_ymm(const __m256i *x) {
    const __m256i b = _mm256_set1_epi16(3);
    __m256i a0 = _mm256_setzero_si256(), a1 = a0, a2 = a0, a3 = a0, a4 = a0, a5 = a0, a6 = a0, a7 = a0, t0, t1;
    for (int i = 0; i < MAC_ITERS; i++) {
        const __m256i *xi = x + (i & 3) * MADD_CHAINS_YMM;
        __asm__("vpmaddwd 0(%[x]), %[b], %[t0]\n\t"
                "vpmaddwd 32(%[x]), %[b], %[t1]\n\t"
                "vpaddd %[t0], %[a0], %[a0]\n\t"
                "vpaddd %[t1], %[a1], %[a1]\n\t"
                "vpmaddwd 64(%[x]), %[b], %[t0]\n\t"
                "vpmaddwd 96(%[x]), %[b], %[t1]\n\t"
                "vpaddd %[t0], %[a2], %[a2]\n\t"
                "vpaddd %[t1], %[a3], %[a3]\n\t"
                "vpmaddwd 128(%[x]), %[b], %[t0]\n\t"
                "vpmaddwd 160(%[x]), %[b], %[t1]\n\t"
                "vpaddd %[t0], %[a4], %[a4]\n\t"
                "vpaddd %[t1], %[a5], %[a5]\n\t"
                "vpmaddwd 192(%[x]), %[b], %[t0]\n\t"
                "vpmaddwd 224(%[x]), %[b], %[t1]\n\t"
                "vpaddd %[t0], %[a6], %[a6]\n\t"
                "vpaddd %[t1], %[a7], %[a7]"
                : [a0] "+x"(a0), [a1] "+x"(a1), [a2] "+x"(a2), [a3] "+x"(a3), [a4] "+x"(a4), [a5] "+x"(a5),
                  [a6] "+x"(a6), [a7] "+x"(a7), [t0] "=&x"(t0), [t1] "=&x"(t1)
                : [x] "r"(xi), [b] "x"(b)
                : "memory");
    }
    const __m256i s = _mm256_add_epi32(_mm256_add_epi32(_mm256_add_epi32(a0, a1), _mm256_add_epi32(a2, a3)),
                                       _mm256_add_epi32(_mm256_add_epi32(a4, a5), _mm256_add_epi32(a6, a7)));
    return _mm256_extract_epi32(s, 0) + _mm256_extract_epi32(s, 7);
}
#endif

static void mac_task(void *p, int thread, int threads) {
    mac_ctx *c = p;
    (void)threads;
#if BENCH_X86
    switch (c->kind) {
    case BENCH_MAC_FMA_F32:
        c->sink_f[thread & 255] = c->zmm ? fma_zmm() : fma_ymm();
        break;
    case BENCH_MAC_DPBF16:
        c->sink_f[thread & 255] = dpbf16_zmm();
        break;
    case BENCH_MAC_DPBUSD:
        c->sink_i[thread & 255] = c->zmm ? dpbusd_zmm() : maddwd_ymm((const __m256i *)c->operands);
        break;
    default:
        break;
    }
#else
    (void)c;
    (void)thread;
#endif
}

bench_mac_rate bench_mac_peak(bench_mac_kind kind, int threads, int reps) {
    bench_mac_rate r = {0};
    /* Aligned, so that no operand of maddwd_ymm straddles two cache lines (with calloc's 16-byte
     * alignment the probe read 3.0-4.2 per ns on Zen 3, 5.3 aligned). */
    mac_ctx *c = aligned_alloc(_Alignof(mac_ctx), sizeof *c); /* sizeof is a multiple of the alignment */
    if (c == NULL) return r;
    memset(c, 0, sizeof *c);
    c->kind = kind;
    for (int i = 0; i < 4 * MADD_CHAINS_YMM * 16; i++) c->operands[i] = (int16_t)(i % 7 - 3);
#if BENCH_X86
    __builtin_cpu_init();
    const int has512 = __builtin_cpu_supports("avx512f");
    switch (kind) {
    case BENCH_MAC_FMA_F32:
        if (has512) {
            r.instruction = "vfmadd231ps zmm";
            r.macs_per_instruction = 16;
            c->zmm = 1;
        } else if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma")) {
            r.instruction = "vfmadd231ps ymm";
            r.macs_per_instruction = 8;
        }
        break;
    case BENCH_MAC_DPBF16:
        if (has512 && __builtin_cpu_supports("avx512bf16")) {
            r.instruction = "vdpbf16ps zmm";
            r.macs_per_instruction = 32;
            c->zmm = 1;
        }
        break;
    case BENCH_MAC_DPBUSD:
        if (has512 && __builtin_cpu_supports("avx512vnni")) {
            r.instruction = "vpdpbusd zmm";
            r.macs_per_instruction = 64;
            c->zmm = 1;
        } else if (__builtin_cpu_supports("avx2")) {
            /* What libifa's AVX2 int8 kernels use (VPMADDWD + VPADDD): two 8-wide FMAs' worth
             * of multiply-adds per pair. On Zen 3 5.3 pairs per ns per core against 6.4 FMAs,
             * so 1.65x the float path's rate (seventeenth session). */
            r.instruction = "vpmaddwd ymm";
            r.macs_per_instruction = 16;
        }
        break;
    default:
        break;
    }
#endif
    if (r.instruction != NULL) {
        const double chains = c->zmm ? MAC_CHAINS : kind == BENCH_MAC_DPBUSD ? MADD_CHAINS_YMM : MAC_CHAINS_YMM;
        const double instr = (double)MAC_ITERS * chains;
        bench_parallel_best(mac_task, c, 1, 1, NULL); /* warm-up: clocks up, code paged in */
        const double t1 = bench_parallel_best(mac_task, c, 1, reps, NULL);
        const double tn = bench_parallel_best(mac_task, c, threads, reps, NULL);
        r.instr_per_ns_core = t1 > 0.0 ? instr / t1 * 1e-9 : 0.0;
        r.macs_per_ns = r.instr_per_ns_core * threads * r.macs_per_instruction;
        r.macs_per_ns_run = tn > 0.0 ? instr * threads * r.macs_per_instruction / tn * 1e-9 : 0.0;
    }
    free(c);
    return r;
}
