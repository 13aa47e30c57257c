/* Does VCVTPH2PS take issue slots from the FMAs? fp16 KV needs one conversion of 8 elements per
 * G FMAs of them (the K or V vector is converted once and serves the G query heads), so if the
 * conversions shared the FMA pipes, G = 8 kernels could not pass 8/9 of the FMA peak in L1.
 *
 * Each loop does 16 FMAs per iteration into 8 accumulators (two per dependency chain, enough
 * for 2 FMAs per cycle at a latency of 4), fed from L1 by:
 *   f32     8-float loads, no conversion (the FMA peak),
 *   cvt/8   one VCVTPH2PS per 8 FMAs (G = 8),
 *   cvt/4   one VCVTPH2PS per 4 FMAs (G = 4),
 * and prints ns per 16 FMAs, best of the rounds; at 2 FMAs per cycle that is 8 cycles.
 * Build: gcc -O3 -mavx2 -mfma -mf16c bench/probes/cvt_fma.c -o cvt_fma  (x86-64 with AVX2) */
#include <immintrin.h>
#include <stdint.h>
#include <stdio.h>
#include <time.h>

static double now(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + (double)t.tv_nsec * 1e-9;
}

#define ITERS 2000000L

static uint16_t halves[4096];
static float floats[4096];

static float sum8(const __m256 *acc)
{
    __m256 s = acc[0];
    for (int j = 1; j < 8; j++) s = _mm256_add_ps(s, acc[j]);
    float out[8];
    _mm256_storeu_ps(out, s);
    return out[0];
}

/* ITERS iterations of 16 FMAs fed by `nk` vectors of K, each feeding 16 / nk accumulators in turn
 * (nk = 2: each vector all 8; nk = 4: the first 4, then the last 4), loaded as floats or, with
 * `convert`, as halves through VCVTPH2PS. Always inline, so that each caller below is its own loop
 * with nk and convert as constants. The K data cycles through 2048 elements, in L1. */
__attribute__((always_inline)) static inline float fma_loop(const float *q_in, const int nk, const int convert)
{
    const int per = 16 / nk;
    __m256 acc[8], q = _mm256_loadu_ps(q_in);
    for (int j = 0; j < 8; j++) acc[j] = _mm256_setzero_ps();
    for (long i = 0; i < ITERS; i++) {
        const long at = (i & (256 / nk - 1)) * 8 * nk;
        __m256 k[4];
        for (int v = 0; v < nk; v++)
            k[v] = convert ? _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(halves + at + 8 * v)))
                           : _mm256_loadu_ps(floats + at + 8 * v);
        for (int v = 0; v < nk; v++)
            for (int j = v * per % 8; j < v * per % 8 + per; j++) acc[j] = _mm256_fmadd_ps(k[v], q, acc[j]);
    }
    return sum8(acc);
}

__attribute__((noinline)) static float loop_f32(const float *q_in) { return fma_loop(q_in, 2, 0); }
__attribute__((noinline)) static float loop_cvt8(const float *q_in) { return fma_loop(q_in, 2, 1); }
__attribute__((noinline)) static float loop_cvt4(const float *q_in) { return fma_loop(q_in, 4, 1); }

int main(void)
{
    for (int i = 0; i < 4096; i++) {
        halves[i] = (uint16_t)(0x3c00 + (i & 255)); /* 1.0 to about 1.25 */
        floats[i] = 1.0f + (float)(i & 255) / 1024.0f;
    }
    const float q[8] = {1e-7f, 1e-7f, 1e-7f, 1e-7f, 1e-7f, 1e-7f, 1e-7f, 1e-7f};
    double best[3] = {1e9, 1e9, 1e9};
    float sink = 0;
    for (int round = 0; round < 7; round++) { /* interleaved, best of each */
        double t0 = now();
        sink += loop_f32(q);
        double t1 = now();
        sink += loop_cvt8(q);
        double t2 = now();
        sink += loop_cvt4(q);
        double t3 = now();
        const double t[3] = {t1 - t0, t2 - t1, t3 - t2};
        for (int k = 0; k < 3; k++)
            if (t[k] < best[k]) best[k] = t[k];
    }
    printf("ns per 16 FMAs, best of 7: f32 %.3f  cvt/8 %.3f  cvt/4 %.3f  (checksum %g)\n",
           best[0] / ITERS * 1e9, best[1] / ITERS * 1e9, best[2] / ITERS * 1e9, (double)sink);
    return 0;
}
