/*
 * qk_head_lanes.c - would qk at G = 8 (float16 K, D = 128) run faster with the heads in the
 * lanes instead of the rows' dimensions?
 *
 * A probe, not part of the library or of the CMake build (AVX-512 only). One core, K rows in L1,
 * calls of 32 rows (the window of attend.c at G = 8), ns per row for all 8 heads:
 *
 *   rows-in-lanes  the library's form (qk_tile, src/kernels/x86_avx512/attention_avx512.c): each
 *                  FMA multiplies 16 elements of one K row by 16 of one head's query; two blocks
 *                  of 4 heads, so every K vector is converted twice; a transpose-add tree per head
 *                  and 16 rows turns the partial vectors into scores.
 *   head-lanes     lane 2h+j holds head h and element 2k+j of D: each FMA multiplies a vector of
 *                  the query laid out that way by a 64-bit broadcast of two float32 K elements,
 *                  so one accumulator per row gathers all 8 heads and no tree is needed (one
 *                  in-lane add of the pairs and a 16 x 8 transpose per 16 rows). K is converted
 *                  once, into a float32 buffer that the broadcasts read; the next 16 rows are
 *                  converted between the FMAs of the current ones.
 *   head-lanes, K already float32   the same without the conversion: its floor.
 *
 * and then the instruction mixes behind the figures, cycles per 16 FMAs at 4.1 GHz (this
 * machine's measured 8.2 FMAs per ns on two pipes).
 *
 * Build and run:
 *
 *   gcc -O3 -DNDEBUG -mavx512f -mavx512bw -mavx512dq -mavx512vl -mavx512bf16 -mavx512vnni \
 *       -mavx2 -mfma -mf16c -Isrc bench/probes/qk_head_lanes.c -o /tmp/qk_head_lanes -lm
 *
 * (from the repository root; the library's flags for its kernel file, which the probe includes:
 * see bench/probes/kernel_loop.c for why not -march=native)
 *   /tmp/qk_head_lanes
 *
 * Measured 2026-11-27 (thirteenth session, five runs): rows-in-lanes 10.8-11.5 ns per row,
 * head-lanes 10.4-10.9, head-lanes with K already float32 8.4-8.7 (the FMAs alone: 7.8). Mixes:
 * FMAs alone 8.0-8.2 cycles; a 64-bit broadcast load per FMA 8.0-8.1 (free); 4 VCVTPH2PS
 * 8.3-8.4; 2 VSHUFF32X4 8.1-8.2; both 8.9-9.1 (they contend, as the library's conversions and
 * tree do); 2 stores 8.6-8.8; 2 VCVTPH2PS whose results are stored 8.0-8.2. The instructions
 * that convert K into head-lanes' buffer are nearly free in the mix, yet the form loses 2 ns
 * per row to them (also with the conversion unrolled one row per 4 steps, and with 64-row calls:
 * 10.3-10.5); where that goes is not understood. Nor is it the tree's shuffles alone that slow
 * rows-in-lanes: its tree with the levels swapped (6 VSHUFF32X4 per head and 16 rows instead of
 * 24, the rest in-lane) ran 10.7-11.0 against 11.0. A qk 2-4% faster is 1-2% of a call at G = 8,
 * within the noise of an A/B run: the library keeps rows-in-lanes.
 *
 * Fourteenth session: those figures came from a -march=native build of a copy of qk_tile, and
 * GCC 12 compiles the library's kernels worse that way. Built as above, on the library's own
 * qk_tile (three runs): rows-in-lanes 9.8-10.1 ns per row, head-lanes 10.6-10.9, head-lanes with
 * K already float32 8.4-8.8; the copy built with the library's flags gave 9.8-10.3 the same
 * minutes, and with -march=native 10.95-11.2. So the library's form is the faster of the two.
 */
#define _POSIX_C_SOURCE 200809L
/* The library's kernel file itself, for its qk_tile (the rows-in-lanes form measured here) and
 * its helpers, as bench/probes/kernel_loop.c does. */
#include "kernels/x86_avx512/attention_avx512.c"

#include <immintrin.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <time.h>

/* After the kernel file, whose functions take parameters of these names. */
#define D 128
#define G 8
#define N 32
#define INL static inline __attribute__((always_inline))

static double now(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + 1e-9 * (double)t.tv_nsec;
}

/* The library's opaque_pointer and float16 load (see there). */
INL void opaque(const char **p) { opaque_pointer(p); }

INL __m512 load16_f16(const char *p) { return load16(IFA__KV_F16, p); }

/* ---- rows-in-lanes: the library's qk_tile, two blocks of 4 heads per 16 rows, float16 K, with
 * an empty prefetch stream (the probe does not measure it) --------------------------------- */

__attribute__((noinline)) static void qk_rows(const float *q, const char *const *krows, float *scores, int ld) {
    ifa__prefetch_stream ps = ifa__prefetch_begin_list(IFA__NO_PREFETCH);
    for (int i0 = 0; i0 < N; i0 += 16) {
        qk_tile(IFA__KV_F16, 4, q, D, (const char *const *)krows + i0, scores + i0, ld, 0xFFFF, &ps, 0);
        qk_tile(IFA__KV_F16, 4, q + 4 * D, D, (const char *const *)krows + i0, scores + 4 * ld + i0, ld, 0xFFFF, &ps,
                0);
    }
}

/* ---- head-lanes ------------------------------------------------------------------------------ */

/* The query as D/2 vectors: lane 2h+j of vector k = q[h][2k+j]. */
static void head_lane_query(const float *q, float *qh) {
    for (int k = 0; k < D / 2; k++)
        for (int h = 0; h < G; h++) {
            qh[16 * k + 2 * h] = q[h * D + 2 * k];
            qh[16 * k + 2 * h + 1] = q[h * D + 2 * k + 1];
        }
}

/* Sixteen accumulators (row r: lane 2h+j) -> scores[h][i0 + r]: the pairs j added in-lane, then
 * a 4 x 4 transpose of 128-bit lanes and one permute per head. */
INL void head_lane_scores(const __m512 *a, float *scores, int ld) {
    const __m512i even = _mm512_setr_epi32(0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22, 24, 26, 28, 30);
    const __m512i odd = _mm512_setr_epi32(1, 3, 5, 7, 9, 11, 13, 15, 17, 19, 21, 23, 25, 27, 29, 31);
    __m512 u[8], x[2][4];
    for (int p = 0; p < 8; p++) /* lane L of u[p]: rows 2p, 2p+1 x heads 2L, 2L+1 */
        u[p] = _mm512_add_ps(_mm512_shuffle_ps(a[2 * p], a[2 * p + 1], _MM_SHUFFLE(2, 0, 2, 0)),
                             _mm512_shuffle_ps(a[2 * p], a[2 * p + 1], _MM_SHUFFLE(3, 1, 3, 1)));
    for (int half = 0; half < 2; half++) { /* x[half][L]: lane L of u[4 half .. 4 half + 3] */
        const __m512 *v = u + 4 * half;
        const __m512 t0 = _mm512_shuffle_f32x4(v[0], v[1], _MM_SHUFFLE(1, 0, 1, 0));
        const __m512 t1 = _mm512_shuffle_f32x4(v[0], v[1], _MM_SHUFFLE(3, 2, 3, 2));
        const __m512 t2 = _mm512_shuffle_f32x4(v[2], v[3], _MM_SHUFFLE(1, 0, 1, 0));
        const __m512 t3 = _mm512_shuffle_f32x4(v[2], v[3], _MM_SHUFFLE(3, 2, 3, 2));
        x[half][0] = _mm512_shuffle_f32x4(t0, t2, _MM_SHUFFLE(2, 0, 2, 0));
        x[half][1] = _mm512_shuffle_f32x4(t0, t2, _MM_SHUFFLE(3, 1, 3, 1));
        x[half][2] = _mm512_shuffle_f32x4(t1, t3, _MM_SHUFFLE(2, 0, 2, 0));
        x[half][3] = _mm512_shuffle_f32x4(t1, t3, _MM_SHUFFLE(3, 1, 3, 1));
    }
    for (int L = 0; L < 4; L++) {
        _mm512_storeu_ps(scores + 2 * L * ld, _mm512_permutex2var_ps(x[0][L], even, x[1][L]));
        _mm512_storeu_ps(scores + (2 * L + 1) * ld, _mm512_permutex2var_ps(x[0][L], odd, x[1][L]));
    }
}

/* CONVERT = 1: K rows are float16, converted into a double buffer; 0: kf already holds them. */
INL void qk_head_lanes_impl(const int CONVERT, const float *qh, const char *const *krows, float *kf, float *scores,
                            int ld) {
    float *buf[2] = {kf, kf + 16 * D + 128}; /* apart by more than 4 KiB multiples */
    if (CONVERT)
        for (int r = 0; r < 16; r++)
            for (int d = 0; d < D; d += 16) _mm512_store_ps(buf[0] + r * D + d, load16_f16(krows[r] + 2 * d));
    for (int i0 = 0, b = 0; i0 < N; i0 += 16, b ^= CONVERT) {
        __m512 a[16];
        _Pragma("GCC unroll 16") for (int r = 0; r < 16; r++) a[r] = _mm512_setzero_ps();
        const char *kp = (const char *)buf[b], *qp = (const char *)qh;
        opaque(&kp);
        opaque(&qp);
        float *next = buf[b ^ 1];
        const int more = CONVERT && i0 + 16 < N;
        for (int k = 0; k < D / 2; k++) {
            const __m512 qv = _mm512_load_ps((const float *)qp + 16 * k);
            if (more) { /* 2 of the next 16 rows' 128 vectors per step */
                const int r = k >> 2, d = 32 * (k & 3);
                _mm512_store_ps(next + r * D + d, load16_f16(krows[i0 + 16 + r] + 2 * d));
                _mm512_store_ps(next + r * D + d + 16, load16_f16(krows[i0 + 16 + r] + 2 * d + 32));
            }
            _Pragma("GCC unroll 16") for (int r = 0; r < 16; r++) a[r] = _mm512_fmadd_ps(
                qv, _mm512_castpd_ps(_mm512_set1_pd(*(const double *)(kp + r * D * 4 + 8 * k))), a[r]);
        }
        head_lane_scores(a, scores + i0, ld);
    }
}

__attribute__((noinline)) static void qk_head_lanes(const float *qh, const char *const *krows, float *kf,
                                                    float *scores, int ld) {
    qk_head_lanes_impl(1, qh, krows, kf, scores, ld);
}

__attribute__((noinline)) static void qk_head_lanes_f32(const float *qh, float *kf, float *scores, int ld) {
    qk_head_lanes_impl(0, qh, NULL, kf, scores, ld);
}

/* ---- instruction mixes ------------------------------------------------------------------------ */

static uint16_t mix_src[256] __attribute__((aligned(64)));
static double mix_src64[64] __attribute__((aligned(64)));
static float mix_dst[64] __attribute__((aligned(64)));

/* 16 independent FMAs per step plus: 0 nothing, 1 a 64-bit broadcast load feeding each FMA,
 * 2 four VCVTPH2PS, 3 two VSHUFF32X4, 4 both 2 and 3, 5 two 64-byte stores, 6 two VCVTPH2PS and
 * two 64-byte stores (head-lanes' conversion). Returns cycles per step at 4.1 GHz. */
INL double mix(const int kind) {
    __m512 a[16], s0 = _mm512_set1_ps(1.0f), s1 = s0;
    for (int i = 0; i < 16; i++) a[i] = _mm512_set1_ps(1.0f);
    const __m512 m = _mm512_set1_ps(0.9999999f);
    double best = 1e30;
    for (int rep = 0; rep < 20; rep++) {
        const double t0 = now();
        for (long it = 0; it < 1000000; it++) {
            const char *p = (const char *)mix_src, *p64 = (const char *)mix_src64;
            opaque(&p);
            opaque(&p64);
            __m512 k[4] = {m, m, m, m};
            if (kind == 2 || kind == 4)
                for (int c = 0; c < 4; c++) k[c] = load16_f16(p + 32 * c);
            if (kind == 5 || kind == 6) {
                char *dst = (char *)mix_dst;
                opaque((const char **)&dst);
                _mm512_store_ps((float *)dst, kind == 6 ? load16_f16(p) : m);
                _mm512_store_ps((float *)dst + 16, kind == 6 ? load16_f16(p + 32) : m);
            }
            _Pragma("GCC unroll 16") for (int i = 0; i < 16; i++) {
                const __m512 x = kind == 1 ? _mm512_castpd_ps(_mm512_set1_pd(*(const double *)(p64 + 8 * i))) : k[i & 3];
                a[i] = _mm512_fmadd_ps(x, m, a[i]);
            }
            if (kind == 3 || kind == 4) {
                /* two chains, one shuffle each per step: latency never limits them */
                s0 = _mm512_shuffle_f32x4(s0, m, 0x4e);
                s1 = _mm512_shuffle_f32x4(s1, m, 0xb1);
            }
            for (int i = 0; i < 16; i += 4) __asm__ volatile("" : "+v"(a[i]), "+v"(a[i + 1]), "+v"(a[i + 2]), "+v"(a[i + 3]));
            if (kind == 3 || kind == 4) __asm__ volatile("" : "+v"(s0), "+v"(s1)); /* else GCC spills them */
        }
        const double t = now() - t0;
        if (t < best) best = t;
    }
    return best / 1e6 * 1e9 * 4.1;
}

int main(void) {
    static uint16_t kh[N * D] __attribute__((aligned(64)));
    static float q[G * D], qh[G * D] __attribute__((aligned(64))), kf[2 * 16 * D + 256] __attribute__((aligned(64)));
    static float s_rows[G * N], s_heads[G * N], s_f32[G * N];
    uint32_t x = 1;
    for (int i = 0; i < G * D; i++) q[i] = (float)((x = x * 1664525u + 1013904223u) >> 16) / 65536.0f - 0.5f;
    for (int i = 0; i < N * D; i++) kh[i] = _cvtss_sh((float)((x = x * 1664525u + 1013904223u) >> 16) / 65536.0f - 0.5f, 0);
    const char *rows[N];
    for (int r = 0; r < N; r++) rows[r] = (const char *)(kh + r * D);
    head_lane_query(q, qh);

    qk_rows(q, rows, s_rows, N);
    qk_head_lanes(qh, rows, kf, s_heads, N);
    for (int r = 0; r < 16; r++) /* the float32 form reads the first 16 rows, converted */
        for (int d = 0; d < D; d++) kf[r * D + d] = _cvtsh_ss(kh[r * D + d]);
    double err = 0;
    for (int h = 0; h < G; h++)
        for (int i = 0; i < N; i++) {
            double ref = 0;
            for (int d = 0; d < D; d++) ref += (double)q[h * D + d] * _cvtsh_ss(kh[i * D + d]);
            err = fmax(err, fmax(fabs(s_rows[h * N + i] - ref), fabs(s_heads[h * N + i] - ref)));
        }
    printf("largest error of either form against float64: %.2g\n", err);

    for (int round = 0; round < 3; round++) {
        double best[3] = {1e30, 1e30, 1e30};
        for (int rep = 0; rep < 200; rep++) {
            double t0 = now();
            for (int it = 0; it < 200; it++) qk_rows(q, rows, s_rows, N);
            double t = now() - t0;
            if (t < best[0]) best[0] = t;
            t0 = now();
            for (int it = 0; it < 200; it++) qk_head_lanes(qh, rows, kf, s_heads, N);
            t = now() - t0;
            if (t < best[1]) best[1] = t;
            t0 = now();
            for (int it = 0; it < 200; it++) qk_head_lanes_f32(qh, kf, s_f32, N);
            t = now() - t0;
            if (t < best[2]) best[2] = t;
        }
        printf("ns per row (8 heads): rows-in-lanes %.2f  head-lanes %.2f  head-lanes, K float32 %.2f\n",
               best[0] / 200 / N * 1e9, best[1] / 200 / N * 1e9, best[2] / 200 / N * 1e9);
    }
    static const char *const mixes[7] = {"FMAs alone", "a 64-bit broadcast load per FMA", "4 VCVTPH2PS",
                                         "2 VSHUFF32X4", "4 VCVTPH2PS and 2 VSHUFF32X4", "2 64-byte stores",
                                         "2 VCVTPH2PS stored (64 bytes each)"};
    for (int k = 0; k < 7; k++) {
        double c = 0;
        switch (k) { /* a constant per call, so each mix compiles to its own loop */
        case 0: c = mix(0); break;
        case 1: c = mix(1); break;
        case 2: c = mix(2); break;
        case 3: c = mix(3); break;
        case 4: c = mix(4); break;
        case 5: c = mix(5); break;
        default: c = mix(6); break;
        }
        printf("16 FMAs with %-34s %5.2f cycles\n", mixes[k], c);
    }
    return 0;
}
