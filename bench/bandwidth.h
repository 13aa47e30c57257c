/*
 * bandwidth.h - machine probes of the benchmark: streaming read bandwidth and peak multiply-add
 * rates, the two denominators of the roofline (docs/benchmarks.md).
 *
 * These probes use nothing from libifa: they measure the machine, not the library, so that a
 * slow kernel can never make its own yardstick look short.
 */
#ifndef IFA_BENCH_BANDWIDTH_H
#define IFA_BENCH_BANDWIDTH_H

#include <stddef.h>

/* A task run by every thread of bench_parallel_best() at once: thread is in [0, threads). */
typedef void (*bench_task)(void *ctx, int thread, int threads);

/* Runs task on `threads` threads that start together (a barrier), `reps` times, and returns the
 * best (smallest) wall time of one repetition in seconds, from the start barrier to the moment the
 * last thread is done. The calling thread is thread 0. When median is not NULL it receives the
 * median time. */
double bench_parallel_best(bench_task task, void *ctx, int threads, int reps, double *median);

/* Monotonic clock in seconds. */
double bench_now(void);

/* Streaming read bandwidth in GB/s (1e9 bytes per second): `threads` threads each sum their own
 * contiguous share of a buffer of `bytes` bytes, best of `reps`. The buffer is allocated, touched
 * and freed here. The sum is portable C that the compiler vectorises (bandwidth.c is built with
 * -O3 and no ISA flags), so the figure does not depend on which SIMD kernels libifa has.
 * Returns 0 when the buffer cannot be allocated. median_gbps, when not NULL, gets the median. */
double bench_read_bandwidth(size_t bytes, int threads, int reps, double *median_gbps);

/* The multiply-add instructions a decode-attention path may be limited by. */
typedef enum bench_mac_kind {
    BENCH_MAC_FMA_F32 = 0, /* VFMADD231PS zmm (16 lanes), or ymm (8 lanes) without AVX-512 */
    BENCH_MAC_DPBF16,      /* VDPBF16PS zmm: 32 bf16 products summed in pairs into 16 floats */
    BENCH_MAC_DPBUSD,      /* int8: VPDPBUSD zmm (64 u8*s8 products summed in fours into 16 int32),
                            * or without AVX-512 VNNI VPMADDWD ymm + VPADDD (16 int16 products) */
    BENCH_MAC_KIND_COUNT
} bench_mac_kind;

typedef struct bench_mac_rate {
    const char *instruction;   /* "vfmadd231ps zmm", ...; NULL when the CPU lacks it */
    int macs_per_instruction;  /* multiply-adds done by one instruction */
    double instr_per_ns_core;  /* measured on one thread */
    double macs_per_ns;        /* peak of `threads` cores: instr_per_ns_core * threads * macs */
    double macs_per_ns_run;    /* measured with all `threads` threads running together */
} bench_mac_rate;

/* Measures the peak rate of the instruction of `kind` with independent accumulator chains, on one
 * thread and on `threads` threads together, best of `reps`. The roofline uses macs_per_ns, the
 * one-thread rate times the threads: on a shared host a simultaneous run is often cut short by
 * another process, and a roofline must not move with the neighbours. An instruction the CPU lacks gives a
 * rate with instruction == NULL and zero rates. */
bench_mac_rate bench_mac_peak(bench_mac_kind kind, int threads, int reps);

#endif /* IFA_BENCH_BANDWIDTH_H */
