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

/* The 16 FMAs of one iteration: k0 feeds the first 8, k1 the second 8. */
#define SIXTEEN_FMAS(k0, k1)                                                                         \
    do {                                                                                             \
        for (int j = 0; j < 8; j++) acc[j] = _mm256_fmadd_ps(k0, q, acc[j]);                         \
        for (int j = 0; j < 8; j++) acc[j] = _mm256_fmadd_ps(k1, q, acc[j]);                         \
    } while (0)

static float sum8(const __m256 *acc)
{
    __m256 s = acc[0];
    for (int j = 1; j < 8; j++) s = _mm256_add_ps(s, acc[j]);
    float out[8];
    _mm256_storeu_ps(out, s);
    return out[0];
}

__attribute__((noinline)) static float loop_f32(const float *q_in)
{
    __m256 acc[8], q = _mm256_loadu_ps(q_in);
    for (int j = 0; j < 8; j++) acc[j] = _mm256_setzero_ps();
    for (long i = 0; i < ITERS; i++) {
        const float *p = floats + (i & 127) * 16;
        SIXTEEN_FMAS(_mm256_loadu_ps(p), _mm256_loadu_ps(p + 8));
    }
    return sum8(acc);
}

__attribute__((noinline)) static float loop_cvt8(const float *q_in)
{
    __m256 acc[8], q = _mm256_loadu_ps(q_in);
    for (int j = 0; j < 8; j++) acc[j] = _mm256_setzero_ps();
    for (long i = 0; i < ITERS; i++) {
        const uint16_t *p = halves + (i & 127) * 16;
        SIXTEEN_FMAS(_mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)p)),
                     _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(p + 8))));
    }
    return sum8(acc);
}

__attribute__((noinline)) static float loop_cvt4(const float *q_in)
{
    __m256 acc[8], q = _mm256_loadu_ps(q_in);
    for (int j = 0; j < 8; j++) acc[j] = _mm256_setzero_ps();
    for (long i = 0; i < ITERS; i++) {
        const uint16_t *p = halves + (i & 63) * 32;
        const __m256 k0 = _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)p));
        const __m256 k1 = _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(p + 8)));
        const __m256 k2 = _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(p + 16)));
        const __m256 k3 = _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(p + 24)));
        for (int j = 0; j < 4; j++) acc[j] = _mm256_fmadd_ps(k0, q, acc[j]);
        for (int j = 4; j < 8; j++) acc[j] = _mm256_fmadd_ps(k1, q, acc[j]);
        for (int j = 0; j < 4; j++) acc[j] = _mm256_fmadd_ps(k2, q, acc[j]);
        for (int j = 4; j < 8; j++) acc[j] = _mm256_fmadd_ps(k3, q, acc[j]);
    }
    return sum8(acc);
}

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
