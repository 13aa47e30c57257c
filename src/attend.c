/*
 * attend.c - one tile of the attention: scores, scale/pse/mask, online softmax, P.V, output.
 *
 * For a (batch b, KV head h) and its G query heads n = h*G + g, per chunk of up to
 * IFA__CHUNK_ROWS rows of a segment (kv_pages.h):
 *
 *   1. raw[g][i]  = q'[g] . K_row_i                          kernel qk (GQA: K read once for G)
 *   2. s[g][i]    = scale * dequant(raw) + pse[b][n][pos]; -1e12 where mask[b][pos] != 0
 *   3. online softmax update of (m, l, acc), p[g][i] = exp(s - m)   kernel softmax
 *   4. acc[g]    += p'[g][i] * V_row_i                       kernel pv (V read once for G)
 *
 * int8 KV stays int8 in the kernels; the antiquant algebra is folded around them:
 *   per-channel / per-tensor:  q . ((k + o) * c) = (q*c) . k + (q*c) . o   -> q' = q*c, bias
 *                              sum p (v + o) * c = c * (sum p v + o * l)    -> applied at output
 *   per-token (scalar c_t, o_t): q . ((k + o_t) c_t) = c_t (q . k + o_t sum q)
 *                              sum p (v + o_t) c_t = sum (p c_t) v + sum p c_t o_t   -> voff
 * Full quantisation (int8 query, SPEC.md 7): raw = q_i8 . k_i8 exactly (integers in float32),
 * s = scale * dequant_scale1 * raw, and the P.V kernel receives p8 = sat_int8(rne(p * qs1)),
 * quantised against the global maximum of (b, h), found by a first pass over K.
 */
#include "attend.h"

#include <float.h>
#include <math.h>
#include <string.h>

#include "convert.h"
#include "kv_pages.h"
#include "softmax_state.h"

/* Scratch layout (floats): per head of the tile { q'[G*D] | bias[G] | qsum[G] | qscale[G] |
 * q16[G*D int16] }, then alpha[G] | s[G*CHUNK] | rows[5*D] shared by the heads. q16 is the
 * query of the integer or bfloat16 qk (rounded_query below): int16 with its scales in qscale for
 * int8 KV (rounded at inner_precise = 1, the int8 query itself with full quantisation), bfloat16
 * for bfloat16 KV; qscale[0] < 0 means the head uses the float qk. q', q16, each head's block,
 * s and rows start on cache lines (ifa__line_floats; the scratch itself does, plan.c). */
static int64_t q16_offset(int64_t G, int64_t D) { return ifa__line_floats(G * D + 3 * G); }

static int64_t head_scratch_floats(const ifa__problem *pb) {
    return ifa__line_floats(q16_offset(pb->G, pb->D) + ifa__ceil_div(pb->G * pb->D, 2));
}

/* The int16 (or bfloat16) query of the head whose scratch block starts at qp. */
static void *q16_of(const float *qp, int64_t G, int64_t D) { return (void *)(qp + q16_offset(G, D)); }

int64_t ifa__tile_scratch_floats(const ifa__problem *pb, int64_t max_heads) {
    return max_heads * head_scratch_floats(pb) + ifa__line_floats(pb->G) + pb->G * IFA__CHUNK_ROWS + 5 * pb->D;
}

/* x rounded to the nearest integer, ties to even, for |x| <= 2^15: adding and removing 1.5 * 2^23
 * (exact for |x| <= 2^22) leaves only the integer part in a float's fraction. Unlike nearbyintf,
 * a libm call per element on the baseline ISA, this vectorises. */
static inline int16_t rne_int16(float x) {
    return (int16_t)(int32_t)((x + 12582912.0f) - 12582912.0f);
}

/* Largest |q16| for which D products of q16 and an int8 (|k| <= 128) add up exactly in int32. */
static int32_t q16_limit(int64_t D) {
    const int64_t lim = (int64_t)INT32_MAX / (128 * ifa__max64(1, D));
    return (int32_t)ifa__min64(32767, lim);
}

/* The integer qk's query (inner_precise = 1, int8 KV, not full quantisation, and a table that
 * has the kernel): q16 = rne(q' / qscale) with qscale = max|q'| / limit, per query head. The
 * relative error of a score is about 2^-16 of max|q'| * |k|, far inside SPEC.md 11's 2e-3. A
 * head with a non-finite q' keeps the float qk (qscale[0] = -1), so Inf and NaN propagate as
 * they do there. */
static void quantise_query16(const ifa__problem *pb, const float *qp, float *qscale, int16_t *q16) {
    const int64_t G = pb->G, D = pb->D;
    const int32_t lim = q16_limit(D);
    for (int64_t g = 0; g < G; g++) {
        const float *qg = qp + g * D;
        /* max |q'| as the largest of the bit patterns without the sign: an integer reduction,
         * which the compiler vectorises on every ISA (a float max with NaN rules does not); a
         * pattern at or above that of +inf means an Inf or a NaN. */
        uint32_t part[8] = {0}; /* eight running maxima, not one chain of D dependent steps */
        int64_t e = 0;
        for (; e + 8 <= D; e += 8)
            for (int j = 0; j < 8; j++) {
                uint32_t bits;
                memcpy(&bits, qg + e + j, sizeof bits);
                bits &= 0x7FFFFFFFu;
                part[j] = bits > part[j] ? bits : part[j];
            }
        for (; e < D; e++) {
            uint32_t bits;
            memcpy(&bits, qg + e, sizeof bits);
            bits &= 0x7FFFFFFFu;
            part[0] = bits > part[0] ? bits : part[0];
        }
        uint32_t amax_bits = 0;
        for (int j = 0; j < 8; j++) amax_bits = part[j] > amax_bits ? part[j] : amax_bits;
        if (amax_bits >= 0x7F800000u) {
            qscale[0] = -1.0f;
            return;
        }
        float amax;
        memcpy(&amax, &amax_bits, sizeof amax);
        qscale[g] = amax / (float)lim;
        const float inv = amax > 0.0f ? (float)lim / amax : 0.0f;
        /* |q' * inv| <= lim * (1 + 2^-23) < lim + 1/2, so rounding never passes lim: no clamp. */
        for (int64_t d = 0; d < D; d++) q16[g * D + d] = rne_int16(qg[d] * inv);
    }
}

/* Whether the tile's qk takes a 16-bit query: int8 KV through the integer qk, bfloat16 KV through
 * the VDPBF16PS qk (q' rounded to bfloat16, an extra relative error of 2^-9 per product, inside
 * SPEC.md 11's 1.6e-2); both at inner_precise = 1 and where the table has the kernel. With full
 * quantisation the int8 query goes to the integer qk as it is, at either inner_precise: its sums
 * are exact (int8_query). */
static int uses_rounded_query(const ifa__problem *pb, const ifa__kernel_table *kt) {
    if (pb->full_quant) return kt->qk_i8_q16 != NULL; /* not rounded: the int8 query itself */
    if (pb->inner_precise != 1) return 0;
    if (pb->kv_dtype == IFA_DTYPE_INT8) return kt->qk_i8_q16 != NULL;
    return pb->kv_dtype == IFA_DTYPE_BFLOAT16 && kt->qk_bf16_qbf16 != NULL;
}

/* Whether P.V takes weights rounded to 16-bit fixed point (kernels.h, pv_i8_q16): int8 KV at
 * inner_precise = 1, not with full quantisation (whose weights are int8 already, and exact in the
 * float kernel), where the table has the kernel. A weight moves by at most 2^-16 of the largest
 * of its window, far inside SPEC.md 11's 2e-3; measured, P.V on int8 V runs 1.6x faster. */
static int uses_fixed_point_pv(const ifa__problem *pb, const ifa__kernel_table *kt) {
    return pb->inner_precise == 1 && pb->kv_dtype == IFA_DTYPE_INT8 && !pb->full_quant && kt->pv_i8_q16 != NULL;
}

/* Whether P.V takes weights rounded to bfloat16 (kernels.h, pv_bf16_pbf16): bfloat16 KV at
 * inner_precise = 1 (SPEC.md 9), where the table has the kernel; a relative error of 2^-9 per
 * weight, inside SPEC.md 11's 1.6e-2. */
static int uses_bf16_weights(const ifa__problem *pb, const ifa__kernel_table *kt) {
    return pb->inner_precise == 1 && pb->kv_dtype == IFA_DTYPE_BFLOAT16 && kt->pv_bf16_pbf16 != NULL;
}

/* Whether the float qk (which) or pv (!which) of bfloat16 rows of batch b takes its query or
 * accumulators in the order of ifa__swap_mid_quads (kernels.h, the table's bf16_swapped_quads):
 * where the table's own float kernel serves it, that is the rows of b have unit stride along d
 * (else the reference kernels do, in natural order) and, for pv, P.V does not take bfloat16
 * weights (pv_bf16_pbf16, natural order). The query is swapped after rounded_query has read it, so
 * the 16-bit kernels see it in natural order. */
static int quads_swapped(const ifa__problem *pb, const ifa__kernel_table *kt, int64_t b, int which_qk) {
    if (!kt->bf16_swapped_quads || pb->kv_dtype != IFA_DTYPE_BFLOAT16 || pb->D < 16) return 0;
    if (!which_qk && uses_bf16_weights(pb, kt)) return 0;
    ifa__kv_cursor cur;
    ifa__kv_cursor_init(&cur, pb, b, 0, 0, 0);
    return (which_qk ? cur.k.s_d : cur.v.s_d) == 1 || !kt->needs_unit_d_stride;
}

/* The factor of the raw dot product in the score: scale_value, times dequant_scale1 for an
 * int8 query. */
static float score_scale(const ifa__problem *pb) {
    return pb->full_quant ? pb->scale * pb->dequant_scale1 : pb->scale;
}

/* Full quantisation: the int8 query itself for the integer qk, so that a score is fold * (q8 .
 * k8), the exact integer sum scaled once (the float qk sums q' . k8 with q' = fold * q8 rounded).
 * q' is fold * q8 up to one rounding, so q8 = rne(q' / fold) recovers it for a normal fold whose
 * q' cannot overflow (|q8| <= 128); any other fold keeps the float qk (qscale[0] = -1; the fuzzer
 * found a fold near FLT_MAX, whose q' was infinite). Measured: the integer qk made a fully
 * quantised call (Llama-3-8B, B=4, L=8K) 1.25x faster. */
static void int8_query(const ifa__problem *pb, const float *qp, float *qscale, int16_t *q16) {
    const float fold = score_scale(pb);
    if (!(fabsf(fold) >= FLT_MIN && fabsf(fold) <= FLT_MAX / 128.0f)) {
        qscale[0] = -1.0f;
        return;
    }
    for (int64_t g = 0; g < pb->G; g++) qscale[g] = fold;
    for (int64_t j = 0; j < pb->G * pb->D; j++) q16[j] = rne_int16(qp[j] / fold);
}

/* q16 and qscale of one head for the rounded-query qk (see the scratch layout). */
static void rounded_query(const ifa__problem *pb, const float *qp, float *qscale, int16_t *q16) {
    if (pb->full_quant) {
        int8_query(pb, qp, qscale, q16);
        return;
    }
    if (pb->kv_dtype == IFA_DTYPE_INT8) {
        quantise_query16(pb, qp, qscale, q16);
        return;
    }
    for (int64_t j = 0; j < pb->G * pb->D; j++) ((uint16_t *)q16)[j] = ifa__f32_to_bf16(qp[j]);
    qscale[0] = 0.0f;
}

static ifa__kv_kind kv_kind(ifa_dtype d) {
    switch (d) {
    case IFA_DTYPE_FLOAT16: return IFA__KV_F16;
    case IFA_DTYPE_BFLOAT16: return IFA__KV_BF16;
    case IFA_DTYPE_FLOAT32: return IFA__KV_F32;
    default: return IFA__KV_I8;
    }
}

/* Row (i0, i1, .) of a view into dst[0..n) as float32. */
static void load_view_row(const ifa__kernel_table *kt, const ifa__view3 *v, int64_t i0, int64_t i1, int64_t n,
                          float *dst) {
    const char *p = v->data + (i0 * v->s0 + i1 * v->s1) * (int64_t)ifa_dtype_size(v->dtype);
    ifa__load_row_f32_simd(kt, p, v->dtype, v->s2, n, dst);
}

/* sum_d x[d] * y[d] in double, over eight chains: one serial chain of D dependent double
 * additions took a quarter of a short int8 call, and four chains (two vectors of two doubles on
 * the baseline ISA) still waited on the adds' latency. The chains are lanes the compiler
 * vectorises (CVTPS2PD, MULPD, ADDPD); with `y ? y[d] : 1` in the loop, as one function served
 * both sums, GCC 12 kept them scalar (CVTSS2SD, ADDSD): 2% of Llama-3-8B int8 B=1 L=512, whose
 * two chunks each prepare all 8 heads; vectorised, that call ran 1.01x (ifa_bench --ab). */
static double sum_products(const float *x, const float *y, int64_t D) {
    double acc[8] = {0.0};
    int64_t d = 0;
    for (; d + 8 <= D; d += 8)
        for (int k = 0; k < 8; k++) acc[k] += (double)x[d + k] * (double)y[d + k];
    for (; d < D; d++) acc[0] += (double)x[d] * (double)y[d];
    return ((acc[0] + acc[1]) + (acc[2] + acc[3])) + ((acc[4] + acc[5]) + (acc[6] + acc[7]));
}

/* sum_d x[d], in the chains and order of sum_products (x[d] * 1 is exact: the same bits). */
static double sum_elements(const float *x, int64_t D) {
    double acc[8] = {0.0};
    int64_t d = 0;
    for (; d + 8 <= D; d += 8)
        for (int k = 0; k < 8; k++) acc[k] += (double)x[d + k];
    for (; d < D; d++) acc[0] += (double)x[d];
    return ((acc[0] + acc[1]) + (acc[2] + acc[3])) + ((acc[4] + acc[5]) + (acc[6] + acc[7]));
}

/* q' and the key bias of the tile (see the file comment). The score scale is folded into q'
 * too (scale*(q.k) and (scale*q).k differ by rounding only), except for per-token antiquant,
 * whose scale multiplies each score separately. `rows` is scratch for 2*D floats. */
static void prepare_query(const ifa__problem *pb, const ifa__kernel_table *kt, int64_t b, int64_t h, float *qp,
                          float *bias, float *qsum, float *rows) {
    const int64_t G = pb->G, D = pb->D;
    const float fold = pb->aq == IFA__AQ_PER_TOKEN ? 1.0f : score_scale(pb);
    float *ks = rows, *ko = rows + D;
    const int per_channel = pb->aq == IFA__AQ_PER_CHANNEL, has_offset = per_channel && pb->aq_offset.data;
    if (per_channel) load_view_row(kt, &pb->aq_scale, 0, h, D, ks);
    if (has_offset) load_view_row(kt, &pb->aq_offset, 0, h, D, ko);
    for (int64_t g = 0; g < G; g++) {
        float *qg = qp + g * D;
        load_view_row(kt, &pb->q, b, h * G + g, D, qg);
        /* The sum of q only serves per-token antiquant, the offset bias only an offset: both are
         * double sums, skipped when not needed (they dominate a short call otherwise). */
        double sum = 0.0, b_acc = 0.0;
        if (pb->aq == IFA__AQ_PER_TOKEN) sum = sum_elements(qg, D);
        if (per_channel)
            for (int64_t d = 0; d < D; d++) qg[d] *= ks[d];
        if (has_offset) b_acc = sum_products(qg, ko, D);
        if (fold != 1.0f) kt->mul_row(qg, fold, D, qg);
        bias[g] = (float)(b_acc * fold);
        qsum[g] = (float)sum;
    }
}

/* Whether raw scores need step 2 at all: the plain case (no bias, pse, mask or per-token
 * scale) goes straight from the qk kernel to the softmax. */
static int needs_finish(const ifa__problem *pb) {
    return pb->aq == IFA__AQ_PER_TOKEN || pb->has_pse || pb->has_mask ||
           (pb->aq == IFA__AQ_PER_CHANNEL && pb->aq_offset.data != NULL);
}

/* The per-channel key offset adds bias[g] = q'[g] . o to every score of head g: a constant per
 * head, which the softmax cancels (exp(s + b - (m + b)) = exp(s - m), and the split-KV merge sees
 * the same shift in every chunk). So when nothing else needs step 2, the tile drops the bias and
 * skips that pass (measured 3% of an int8 call). Kept where it is not a pure shift: with a mask,
 * whose -1e12 is an absolute score (a bias near -1e12 would change which tokens dominate), and
 * when a bias is not finite, which must poison its head (docs/reliability.md). Returns whether the
 * biases of the tile's nh heads (scratch layout above) were zeroed. */
static int drop_constant_bias(const ifa__problem *pb, float *scratch, int64_t nh, int64_t per_head) {
    if (pb->aq != IFA__AQ_PER_CHANNEL || pb->aq_offset.data == NULL || pb->has_mask) return 0;
    const int64_t G = pb->G, D = pb->D;
    for (int64_t i = 0; i < nh; i++)
        for (int64_t g = 0; g < G; g++)
            if (!isfinite(scratch[i * per_head + G * D + g])) return 0;
    for (int64_t i = 0; i < nh; i++)
        for (int64_t g = 0; g < G; g++) scratch[i * per_head + G * D + g] = 0.0f;
    return 1;
}

/* The runs of consecutive positions of a chunk (a page's tokens, and across pages in the dense
 * forms): run r is positions pos[start[r]] .. pos[start[r + 1] - 1]. Returns the number of runs;
 * start has room for n + 1 entries. */
static int64_t position_runs(const int64_t *pos, int64_t n, int64_t *start) {
    int64_t runs = 0;
    for (int64_t i = 0; i < n; i++)
        if (i == 0 || pos[i] != pos[i - 1] + 1) start[runs++] = i;
    start[runs] = n;
    return runs;
}

/* v[i0][i1][pos[i]] for the n positions of a chunk, as float32. A run of consecutive positions
 * is one strided row of the view, converted by the row loader (the kernel table's for float16)
 * instead of element by element. Element by element, pse_shift made calls 1.5-2.8x slower and
 * per-token antiquant 4-5.5x; a run at a time, 1.0-1.15x and 1.2-1.26x (bench/params_bench.py). */
static void load_view_at(const ifa__kernel_table *kt, const ifa__view3 *v, int64_t i0, int64_t i1,
                         const int64_t *pos, const int64_t *start, int64_t runs, float *dst) {
    const int64_t es = (int64_t)ifa_dtype_size(v->dtype);
    const char *row = v->data + (i0 * v->s0 + i1 * v->s1) * es;
    for (int64_t r = 0; r < runs; r++) {
        const int64_t i = start[r];
        ifa__load_row_f32_simd(kt, row + pos[i] * v->s2 * es, v->dtype, v->s2, start[r + 1] - i, dst + i);
    }
}

/* The per-token antiquant scale and offset (0 without one) of K (which = 0) or V (1) at the
 * chunk's positions. */
static void load_per_token(const ifa__kernel_table *kt, const ifa__problem *pb, int64_t which, int64_t b,
                           const int64_t *pos, const int64_t *start, int64_t runs, float *c, float *o) {
    load_view_at(kt, &pb->aq_scale, which, b, pos, start, runs, c);
    if (pb->aq_offset.data)
        load_view_at(kt, &pb->aq_offset, which, b, pos, start, runs, o);
    else
        memset(o, 0, sizeof *o * (size_t)start[runs]);
}

/* What depends on a chunk's positions only, not on its head: their runs (for pse_shift), the
 * per-token antiquant scales and offsets of K and V, and the rows the mask hides. Every head of
 * a window has the same positions, so attend_windows works this out once per window for all the
 * tile's heads; per head, the per-token values and the runs took most of the 1.2x that per-token
 * antiquant cost an int8 call (docs/benchmarks.md). */
typedef struct chunk_positions {
    int64_t runs, start[IFA__CHUNK_ROWS + 1]; /* position_runs */
    float kc[IFA__CHUNK_ROWS], ko[IFA__CHUNK_ROWS]; /* K: scale, offset (per-token antiquant) */
    float vc[IFA__CHUNK_ROWS], vo[IFA__CHUNK_ROWS]; /* V (not loaded with full quantisation) */
    int64_t masked[IFA__CHUNK_ROWS], n_masked;      /* rows whose mask byte is nonzero */
} chunk_positions;

/* The rows of a chunk that batch b's mask hides, listed without a branch per position (a random
 * mask would mispredict it). Any nonzero byte masks. */
static int64_t masked_rows(const ifa__problem *pb, int64_t b, const int64_t *pos, const int64_t *start,
                           int64_t runs, int64_t *masked) {
    const char *row = pb->mask.data + b * pb->mask.s0;
    const int64_t s1 = pb->mask.s1;
    int64_t count = 0;
    for (int64_t r = 0; r < runs; r++) {
        const char *m = row + pos[start[r]] * s1;
        for (int64_t i = start[r], end = start[r + 1]; i < end;) {
            uint64_t w;
            if (s1 == 1 && i + 8 <= end && (memcpy(&w, m, sizeof w), w == 0)) {
                i += 8; /* eight unmasked positions at once (a padding mask is mostly these) */
                m += 8;
                continue;
            }
            masked[count] = i++;
            count += *m != 0;
            m += s1;
        }
    }
    return count;
}

/* cp for the n positions of a chunk of batch b, or NULL when the call has nothing that depends
 * on the position (no per-token antiquant, pse_shift or mask) or the chunk is empty. */
static const chunk_positions *chunk_positions_of(const ifa__kernel_table *kt, const ifa__problem *pb, int64_t b,
                                                 const int64_t *pos, int64_t n, chunk_positions *cp) {
    const int per_token = pb->aq == IFA__AQ_PER_TOKEN;
    if (n == 0 || !(per_token || pb->has_pse || pb->has_mask)) return NULL;
    cp->runs = position_runs(pos, n, cp->start);
    if (per_token) {
        load_per_token(kt, pb, 0, b, pos, cp->start, cp->runs, cp->kc, cp->ko);
        if (!pb->full_quant) load_per_token(kt, pb, 1, b, pos, cp->start, cp->runs, cp->vc, cp->vo);
    }
    cp->n_masked = pb->has_mask ? masked_rows(pb, b, pos, cp->start, cp->runs, cp->masked) : 0;
    return cp;
}

/* Prefetches v[i0][i1][last + 1 .. last + n], where the next chunk's positions are when they
 * continue this one's (the dense forms). A tile reads the pse rows of all its G * heads query
 * heads side by side, too many streams for the hardware prefetchers: without this, each chunk's
 * pse waited on memory. Measured (bench/params_bench.py, A/B of builds, 4 rounds), pse against
 * the call without it: Llama-3-8B int8 B=1 L=32K 1.26x -> 1.12x, Llama-3-70B 1.25x -> 1.14-1.17x. */
static void prefetch_view_after(const ifa__view3 *v, int64_t i0, int64_t i1, int64_t last, int64_t n) {
    if (v->s2 != 1) return;
    const int64_t es = (int64_t)ifa_dtype_size(v->dtype);
    const char *from = v->data + (i0 * v->s0 + i1 * v->s1 + (last + 1)) * es;
    for (int64_t off = 0; off < n * es; off += 64) __builtin_prefetch(from + off, 0, 3);
}

/* Step 2 for one chunk: raw scores -> final scores, in place. What depends on the position only
 * (per-token antiquant, the mask, the runs) comes in cp, from chunk_positions_of. */
static void finish_scores(const ifa__problem *pb, const ifa__kernel_table *kt, int64_t b, int64_t h,
                          const int64_t *pos, int64_t n, const float *bias, const float *qsum,
                          const chunk_positions *cp, float *s, int64_t ld) {
    const int64_t G = pb->G;
    const float scale = score_scale(pb);
    float pse[IFA__CHUNK_ROWS];
    for (int64_t g = 0; g < G; g++) {
        float *sg = s + g * ld;
        if (pb->aq == IFA__AQ_PER_TOKEN) {
            const float *c = cp->kc, *o = cp->ko;
            for (int64_t i = 0; i < n; i++) sg[i] = scale * (c[i] * (sg[i] + o[i] * qsum[g]));
        } else if (bias[g] != 0.0f) {
            for (int64_t i = 0; i < n; i++) sg[i] += bias[g];
        }
        if (pb->has_pse) {
            load_view_at(kt, &pb->pse, b, h * G + g, pos, cp->start, cp->runs, pse);
            for (int64_t i = 0; i < n; i++) sg[i] += pse[i];
            prefetch_view_after(&pb->pse, b, h * G + g, pos[n - 1], n);
        }
    }
    if (pb->has_mask)
        for (int64_t k = 0; k < cp->n_masked; k++)
            for (int64_t g = 0; g < G; g++) s[g * ld + cp->masked[k]] = -1e12f;
}

/* p8 = sat_int8(rne(p * qs1)) of a chunk's weights of one head, in place (SPEC.md 7). GCC does not
 * vectorise ifa__sat_round_int8's compares (they may trap), so when every |p| <= 1 (an integer
 * test of the bits, which also rules out NaN and Inf) and |qs1| <= 127, where no product needs
 * the saturation, the weights are rounded by the magic number alone, a loop that vectorises. */
static void quantise_weights_int8(float *p, int64_t n, double qs1) {
    uint32_t over_one = 0;
    for (int64_t i = 0; i < n; i++) {
        uint32_t bits;
        memcpy(&bits, p + i, sizeof bits);
        over_one |= (bits & 0x7FFFFFFFu) > 0x3F800000u;
    }
    if (!over_one && fabs(qs1) <= 127.0) {
        for (int64_t i = 0; i < n; i++)
            p[i] = (float)(((double)p[i] * qs1 + IFA__ROUND_MAGIC) - IFA__ROUND_MAGIC);
        return;
    }
    for (int64_t i = 0; i < n; i++) p[i] = (float)ifa__sat_round_int8((double)p[i] * qs1);
}

/* Step 3 for one chunk: the softmax kernel updates m and l and turns scores into weights; the
 * accumulators follow with the same factor; then the weights get the form P.V needs. */
static void softmax_update(const ifa__problem *pb, const ifa__kernel_table *kt, const chunk_positions *cp, int64_t n,
                           float *s, int64_t ld, float *state, float *alpha) {
    const int64_t G = pb->G, D = pb->D;
    float *m = ifa__state_m(state, G), *l = ifa__state_l(state, G), *voff = ifa__state_voff(state, G);
    kt->softmax(s, ld, G, n, m, l, alpha);
    float *seen = ifa__state_seen(state, G);
    for (int64_t g = 0; g < G; g++) {
        /* A head's first chunk finds voff and acc as ifa__state_init left them, zeros, and gets
         * alpha = 0 (its m was -inf; full quantisation's first pass may have set m, and then alpha
         * is whatever it is): zeros times zero are zeros, so that rescale is skipped, the same
         * bits. A 16-token call is one chunk per head, and the rescale took 4% of it. */
        if (alpha[g] != 1.0f && !(alpha[g] == 0.0f && seen[g] == 0.0f)) {
            voff[g] *= alpha[g];
            float *acc = ifa__state_acc(state, G) + g * D;
            kt->mul_row(acc, alpha[g], D, acc);
        }
        seen[g] = 1.0f;
        float *sg = s + g * ld;
        if (pb->full_quant) {
            quantise_weights_int8(sg, n, pb->quant_scale1);
        } else if (pb->aq == IFA__AQ_PER_TOKEN) {
            /* Per-token antiquant of V (in cp, loaded once for the heads). Eight partial sums: one
             * chain of n dependent adds cost an int8 call 1.2x its time. */
            const float *c = cp->vc, *o = cp->vo;
            float part[8] = {0.0f};
            int64_t i = 0;
            for (; i + 8 <= n; i += 8)
                for (int k = 0; k < 8; k++) {
                    sg[i + k] *= c[i + k];
                    part[k] += sg[i + k] * o[i + k];
                }
            for (; i < n; i++) {
                sg[i] *= c[i];
                part[0] += sg[i] * o[i];
            }
            voff[g] += ((part[0] + part[1]) + (part[2] + part[3])) + ((part[4] + part[5]) + (part[6] + part[7]));
        }
    }
}

/* How far ahead the kernels prefetch (see ifa__attend_tile): windows for the forms whose heads
 * share pages, units for the sparse form. One window is the shortest distance a token-major
 * share allows (window_prefetch), and measured the best: with two windows ahead, 128 KiB of K and
 * V in a (blocks, bs, KVN*D) cache, the rows left the 48 KiB L1 before their turn came, and
 * calls were 2-4% slower (B = 1, L = 512: 7-11%; docs/benchmarks.md). */
#define IFA__PREFETCH_WINDOWS 1

/* Bytes of K rows of all heads of a side-by-side window, before the per-head minimum
 * (window_plan). */
#define IFA__WINDOW_BYTES 32768
#ifndef IFA__PREFETCH_UNITS
#define IFA__PREFETCH_UNITS 2
#endif

/* The rows of one (KV head, window of logical tokens): what one qk/pv call takes. Gathering
 * the rows across pages lets one kernel call cover a whole window even with small pages. */
typedef struct rows_unit {
    const void *k[IFA__CHUNK_ROWS];
    const void *v[IFA__CHUNK_ROWS];
    int64_t pos[IFA__CHUNK_ROWS];
    int64_t n;
    int64_t k_d, v_d;           /* element strides along d (the same for every row of a head) */
    int64_t k_head, v_head;     /* byte strides from a row of head h to the same row of head h+1 */
} rows_unit;

/* Fills u with the existing tokens of head h in [tw, te) (te - tw <= IFA__CHUNK_ROWS). */
static void gather_rows(const ifa__problem *pb, int64_t b, int64_t h, int64_t tw, int64_t te, rows_unit *u) {
    const int64_t es = pb->elem_size;
    ifa__kv_cursor cur;
    ifa__kv_segment seg;
    ifa__kv_cursor_init(&cur, pb, b, h, tw, te);
    u->n = 0;
    u->k_d = u->v_d = 1;
    u->k_head = cur.k.s_head * es;
    u->v_head = cur.v.s_head * es;
    while (ifa__kv_cursor_next(&cur, &seg)) {
        u->k_d = seg.k_d;
        u->v_d = seg.v_d;
        for (int64_t r = 0; r < seg.n; r++, u->n++) {
            u->k[u->n] = seg.k + r * seg.k_tok * es;
            u->v[u->n] = seg.v + r * seg.v_tok * es;
            u->pos[u->n] = seg.pos0 + r;
        }
    }
}

/* dst = the rows of src's window for the head i heads after src's (same pages, same tokens). */
static void shift_rows(const rows_unit *src, int64_t i, rows_unit *dst) {
    const int64_t dk = i * src->k_head, dv = i * src->v_head;
    dst->n = src->n;
    dst->k_d = src->k_d;
    dst->v_d = src->v_d;
    dst->k_head = src->k_head;
    dst->v_head = src->v_head;
    for (int64_t r = 0; r < src->n; r++) {
        dst->k[r] = (const char *)src->k[r] + dk;
        dst->v[r] = (const char *)src->v[r] + dv;
        dst->pos[r] = src->pos[r];
    }
}

/* Logical tokens per window: about `bytes` of one head's rows (4 KiB: 16 rows of float16 at
 * D = 128, 32 of int8), between 16 (the AVX-512 tile) and IFA__CHUNK_ROWS. */
static int64_t window_tokens(const ifa__problem *pb, int64_t bytes) {
    int64_t w = bytes / ifa__max64(1, pb->D * pb->elem_size);
    w = w < 16 ? 16 : w > IFA__CHUNK_ROWS ? IFA__CHUNK_ROWS : w;
    return w / 16 * 16;
}

/* Whether a call does more arithmetic per row than float16 at G <= 4 (window_plan): G > 4 on
 * float32 FMAs or on int8's integer products; bfloat16 with VDPBF16PS in both kernels (twice the
 * rate) is not. */
static int heavy_rows(const ifa__problem *pb, ifa__kv_kind kind, int rounded, int pv_bf16) {
    return pb->G > 4 && !(kind == IFA__KV_BF16 && rounded && pv_bf16);
}

/* Whether the heads of a token sit side by side (a (blocks, bs, KVN*D) cache, BSH and BSND
 * layouts): cur is a cursor of the call, whose views are those of every window. */
static int heads_side_by_side(const ifa__problem *pb, const ifa__kv_cursor *cur) {
    return cur->k.s_head == pb->D && cur->v.s_head == pb->D;
}

/* Window size of a tile whose heads share pages. A window is visited for all the nh heads of the
 * tile in turn while the window ahead is prefetched, so the rows of both compete for the L1.
 *
 * When the heads of a token sit side by side ((blocks, bs, KVN*D) caches), a small window means
 * the heads of the same few tokens, one short contiguous stretch of the page, are read close
 * together in time. A window holds 32 KiB of K rows (and as much V) over the nh heads, and at
 * least 4 KiB of each head's (16 rows of float16 at D = 128): with 8 heads, 16-row windows read
 * fp16 caches about 20% faster than 64-row ones, and 8 KiB windows 7% slower; with 4 heads
 * (Qwen2.5-7B), 8 KiB windows 1.08-1.10x faster than 4 KiB. Calls with more arithmetic per row
 * (`heavy`: G > 4 on float32 FMAs or on int8's integer products) take at least 8 KiB whatever
 * nh: Llama-3-70B (8 heads, G = 8) 1.11-1.15x fp16, 1.10x int8, 1.06x at block 16; its bfloat16
 * path with VDPBF16PS (twice the rate) read 0.96x so, and keeps 4 KiB (docs/benchmarks.md).
 * Heavy int8 follows the kernel table's heavy_i8_small_windows: on Zen 3 (AVX2) its windows take
 * at least 4 KiB of each head's rows (32 rows at D = 128, as many as float16's 8 KiB) and at most
 * two pages of a paged cache (`small_i8`): Llama-3-70B int8 1.13-1.14x at block 16 and
 * 1.03-1.05x at block 128, Qwen2.5-7B int8 (4 heads: 8 KiB each, 64 rows) 1.12x at block 16 and
 * unchanged at 128 (docs/benchmarks.md).
 *
 * When each head's rows lie apart ((blocks, KVN, bs, D) caches), each head reads its own stretch
 * whatever the window, and larger windows halve the per-window work of the kernels and of the
 * bookkeeping: 8 KiB windows, 5-15% faster from DRAM (docs/benchmarks.md). Smaller pages that
 * still hold 4 KiB of a head's rows (16 float16 tokens) make a window each when the rows are not
 * heavy: the window's heads then read one page in address order, two streams instead of four,
 * 1.045-1.069x for float16 and bfloat16 at block 16 on Zen 3; heavy rows lost (0.95-0.97), and
 * int8's pages of 4 KiB (block 32) read the same (docs/benchmarks.md). Returns whether the
 * heads of a token sit side by side (the strides are those of every window of the tile: one
 * (batch, head group), one view). */
static int window_plan(const ifa__problem *pb, int64_t b, int64_t h, int64_t nh, int heavy, int small_i8,
                       int64_t *window, int *token_stretches) {
    ifa__kv_cursor cur;
    ifa__kv_cursor_init(&cur, pb, b, h, 0, 0);
    const int side_by_side = heads_side_by_side(pb, &cur);
    const int64_t least = heavy && !small_i8 ? 8192 : 4096; /* of each head's bytes */
    const int64_t per_head = ifa__max64(least, IFA__WINDOW_BYTES / ifa__max64(1, nh));
    *window = window_tokens(pb, side_by_side ? per_head : 8192);
    if (small_i8 && side_by_side && pb->form == IFA__KV_PAGED && *window > 2 * pb->bs)
        *window = ifa__max64(16, 2 * pb->bs / 16 * 16); /* window_tokens' multiples of 16 */
    if (!side_by_side && !heavy && pb->form == IFA__KV_PAGED && pb->bs % 16 == 0 && pb->bs < *window &&
        pb->bs * pb->D * pb->elem_size >= 4096)
        *window = pb->bs; /* one page a window: a page in address order, see above */
    /* The tile's heads are all the heads of a token (or the rows of one token's heads end where
     * the next token's begin): window_prefetch lists whole tokens. */
    *token_stretches = side_by_side && cur.k.s_tok == nh * pb->D && cur.v.s_tok == nh * pb->D;
    return side_by_side;
}

/* Most stretches one unit's prefetch list holds: a share of a window (window_prefetch), and in
 * a tile's first window the next head's rows before it (lead_in_prefetch). */
#define IFA__MAX_PREFETCH_ROWS (2 * IFA__CHUNK_ROWS + IFA__MAX_TILE_HEADS)

/* One of the two lists of window_prefetch: rows[r] + j * head of rows r0..r1, heads j0..j1. */
static int64_t prefetch_list(const void *const *rows, int64_t head, int64_t r0, int64_t r1, int64_t j0, int64_t j1,
                             const void **out) {
    int64_t n = 0;
    for (int64_t r = r0; r < r1; r++)
        for (int64_t j = j0; j < j1; j++) out[n++] = (const char *)rows[r] + j * head;
    return n;
}

/* What unit (window w, head i) prefetches, for the forms whose heads share pages: the i-th of nh
 * shares of the rows of all nh heads of the window IFA__PREFETCH_WINDOWS ahead (`ahead`, head
 * h0's rows), cut so that each share is one stretch of memory. In a (blocks, bs, KVN*D) cache the
 * heads of a token sit side by side (`side_by_side`, from window_plan), so a share is a run of
 * whole tokens (token-major); when each head's rows lie apart (BNSD, (blocks, KVN, bs, D)), a
 * share is one head's rows. Either way the window is fetched in address order at an even rate
 * of one unit's bytes per unit: measured, with the kernels spreading the lines over their work,
 * 5-17% faster from DRAM than prefetching the next unit's rows, 2 KiB apart (docs/benchmarks.md).
 *
 * When the rows of the tile's heads of each token lie end to end (`token_stretches`, window_plan),
 * the lists name one stretch per token, else one per row (kernels.h: 1.00-1.03x). Listing a
 * head's rows of a 4-D window as one stretch measured 0.96-0.98x, so those stay rows. pk and pv
 * hold the stretches of K and V (the same count). */
static void window_prefetch(const rows_unit *ahead, int64_t nh, int64_t i, int side_by_side, int token_stretches,
                            int64_t row_bytes, const void **pk, const void **pv, ifa__prefetch_list *lk,
                            ifa__prefetch_list *lv) {
    *lk = *lv = IFA__NO_PREFETCH;
    if (ahead == NULL || ahead->k_d != 1 || ahead->v_d != 1 || ahead->n == 0) return;
    int64_t n, bytes = row_bytes;
    if (side_by_side) {
        /* A token stretch starts at head h0's row and covers the nh rows end to end. */
        const int64_t r0 = i * ahead->n / nh, r1 = (i + 1) * ahead->n / nh;
        const int64_t heads = token_stretches ? 1 : nh;
        prefetch_list(ahead->v, ahead->v_head, r0, r1, 0, heads, pv);
        n = prefetch_list(ahead->k, ahead->k_head, r0, r1, 0, heads, pk);
        if (token_stretches) bytes = nh * row_bytes;
    } else {
        prefetch_list(ahead->v, ahead->v_head, 0, ahead->n, i, i + 1, pv);
        n = prefetch_list(ahead->k, ahead->k_head, 0, ahead->n, i, i + 1, pk);
    }
    *lk = (ifa__prefetch_list){pk, n, bytes};
    *lv = (ifa__prefetch_list){pv, n, bytes};
}

/* What unit (window 0, head i < nh - 1) of a tile prefetches: the rows of head i + 1 in the same
 * window, then its share of the window ahead (window_prefetch's), one stretch per row. The first
 * window has no window before it to prefetch it; its burst at the start of the tile
 * (prefetch_rows_now) asks for far more lines than the core's miss buffers hold, and a prefetch
 * that finds them full is dropped (bench/probes/prefetch_drop.c), so most of that window used
 * to arrive as demand misses. Prefetching the next head's rows while this head computes, as the
 * (blocks, KVN, bs, D) pages do one unit ahead, measured with two threads (ifa_bench --ab): int8
 * Llama-3-8B B=1 L=512 1.12x, L=1K 1.07x, B=16 L=512 1.07x, Llama-3-70B B=4 L=4K 1.02x; 16-bit
 * KV and the (blocks, KVN, bs, D) cache 0.997-1.007. Every window so (the next head's rows
 * brought from the L2 besides the window ahead from DRAM) read 0.81-0.88x. */
static void lead_in_prefetch(const rows_unit *base, const rows_unit *ahead, int64_t nh, int64_t i,
                             int side_by_side, int64_t row_bytes, const void **pk, const void **pv,
                             ifa__prefetch_list *lk, ifa__prefetch_list *lv) {
    *lk = *lv = IFA__NO_PREFETCH;
    if (base->k_d != 1 || base->v_d != 1) return;
    int64_t n = prefetch_list(base->k, base->k_head, 0, base->n, i + 1, i + 2, pk);
    prefetch_list(base->v, base->v_head, 0, base->n, i + 1, i + 2, pv);
    /* The share, listed after them one stretch per row (no token stretches: one list has one
     * stretch length). */
    ifa__prefetch_list share_k, share_v;
    window_prefetch(ahead, nh, i, side_by_side, 0, row_bytes, pk + n, pv + n, &share_k, &share_v);
    n += share_k.n;
    *lk = (ifa__prefetch_list){pk, n, row_bytes};
    *lv = (ifa__prefetch_list){pv, n, row_bytes};
}

/* Every line of n rows of row_bytes each, at once. */
static void prefetch_lines(const void *const *rows, int64_t n, int64_t row_bytes) {
    for (int64_t r = 0; r < n; r++)
        for (int64_t o = 0; o < row_bytes; o += 64) __builtin_prefetch((const char *)rows[r] + o, 0, 3);
}

/* Every line of the rows of u and of the nh - 1 heads after its head, at once. A tile's first
 * windows (or sparse units), those before the first one a unit prefetches, would otherwise be
 * read with one demand miss after another: measured, fetching them in one burst at the start of
 * the tile made B = 1, L = 512 calls 4-7% faster (L = 4K and longer: within the noise). */
static void prefetch_rows_now(const rows_unit *u, int64_t nh, int64_t row_bytes) {
    if (u->k_d != 1 || u->v_d != 1) return;
    for (int64_t r = 0; r < u->n; r++)
        for (int64_t j = 0; j < nh; j++)
            for (int64_t o = 0; o < row_bytes; o += 64) {
                __builtin_prefetch((const char *)u->k[r] + j * u->k_head + o, 0, 3);
                __builtin_prefetch((const char *)u->v[r] + j * u->v_head + o, 0, 3);
            }
}

/* Raw scores of unit u for a head whose scratch (layout above) starts at qp, into s: the 16-bit
 * query kernels where the tile uses them (`rounded`, with a finite query: qscale[0] >= 0) and the
 * rows have unit stride, else the float qk (the reference one for other strides). */
static void unit_scores(const ifa__problem *pb, const ifa__kernel_table *kt, ifa__kv_kind kind, int rounded,
                        const float *qp, const rows_unit *u, float *s, ifa__prefetch_list pk) {
    const int64_t G = pb->G, D = pb->D, ld = IFA__CHUNK_ROWS;
    const float *qscale = qp + G * D + 2 * G;
    const void *q16 = q16_of(qp, G, D);
    if (rounded && qscale[0] >= 0.0f && u->k_d == 1) {
        if (kind == IFA__KV_BF16)
            kt->qk_bf16_qbf16((const uint16_t *)q16, G, D, u->k, u->n, s, ld, pk);
        else
            kt->qk_i8_q16((const int16_t *)q16, qscale, G, D, u->k, u->n, s, ld, pk);
        return;
    }
    const ifa__kernel_table *kk = kt->needs_unit_d_stride && u->k_d != 1 ? &ifa__kernels_ref : kt;
    kk->qk[kind](qp, G, D, u->k, u->k_d, u->n, s, ld, pk);
}

/* Full quantisation only: the maximum score of each of the tile's nh heads over [t0, t1), one
 * extra pass over K. SPEC.md 7 quantises p_t = exp(s_t - m) against the global maximum m;
 * quantising against a running maximum instead (which SPEC allows) drifts by up to a few times
 * the 1e-2 tolerance on widely spread scores, so the int8 path pays for the extra read of K to be
 * exact. The pass visits windows of IFA__CHUNK_ROWS tokens and, in each, the heads in turn (in a
 * (blocks, bs, KVN*D) cache their rows of a token are side by side), and each qk call prefetches
 * the K rows of the unit IFA__PREFETCH_UNITS ahead, as the sparse units do. Head by head without
 * prefetching, as this pass first was, it read the scattered pages at memory latency: a fully
 * quantised call took 6x the time of the same call on int8 KV with a float query. */
static void full_quant_max(const ifa__problem *pb, const ifa__kernel_table *kt, int rounded, int64_t b, int64_t h0,
                           int64_t nh, int64_t t0, int64_t t1, float *scratch, int64_t per_head, float *states,
                           int64_t state_floats, float *s) {
    const int64_t G = pb->G, D = pb->D, ld = IFA__CHUNK_ROWS;
    const int finish = needs_finish(pb);
    const int64_t units = ifa__ceil_div(t1 - t0, IFA__CHUNK_ROWS) * nh, ring = IFA__PREFETCH_UNITS + 1;
    rows_unit unit[IFA__PREFETCH_UNITS + 1];
    /* Unit q is window q / nh, head q % nh, gathered IFA__PREFETCH_UNITS units before its turn. */
    for (int64_t q_in = 0; q_in < units + IFA__PREFETCH_UNITS; q_in++) {
        if (q_in < units) {
            const int64_t tw = t0 + (q_in / nh) * IFA__CHUNK_ROWS;
            gather_rows(pb, b, h0 + q_in % nh, tw, ifa__min64(tw + IFA__CHUNK_ROWS, t1), &unit[q_in % ring]);
        }
        const int64_t q = q_in - IFA__PREFETCH_UNITS;
        if (q < 0) continue;
        const rows_unit *u = &unit[q % ring], *next = q_in < units ? &unit[q_in % ring] : NULL;
        if (u->n == 0) continue;
        const int64_t i = q % nh;
        const float *qp = scratch + i * per_head, *bias = qp + G * D, *qsum = bias + G;
        float *m = ifa__state_m(states + i * state_floats, G);
        unit_scores(pb, kt, IFA__KV_I8, rounded, qp, u, s,
                    next != NULL && next->k_d == 1 ? (ifa__prefetch_list){next->k, next->n, D * pb->elem_size}
                                                   : IFA__NO_PREFETCH);
        if (finish) {
            chunk_positions cp_buf;
            const chunk_positions *cp = chunk_positions_of(kt, pb, b, u->pos, u->n, &cp_buf);
            finish_scores(pb, kt, b, h0 + i, u->pos, u->n, bias, qsum, cp, s, ld);
        }
        for (int64_t g = 0; g < G; g++)
            for (int64_t r = 0; r < u->n; r++) m[g] = s[g * ld + r] > m[g] ? s[g * ld + r] : m[g];
    }
}

/* What attend_unit needs of one tile beyond the rows: the problem, its kernels and the scratch. */
typedef struct tile_ctx {
    const ifa__problem *pb;
    const ifa__kernel_table *kt;
    ifa__kv_kind kind;
    int finish, rounded, pv_q16, pv_bf16;
    int burst_rows; /* ask for each unit's own rows at once (attend_unit): sparse tiles, heads side by side */
    int64_t b, h0, per_head, state_floats;
    float *scratch, *states, *s, *alpha;
} tile_ctx;

/* Steps 1-4 for the rows of one unit of head h0 + i; pk and pv are what the qk and pv kernels
 * prefetch while they work on these; cp is what depends on u's positions (chunk_positions_of). */
static void attend_unit(const tile_ctx *c, int64_t i, const rows_unit *u, const chunk_positions *cp,
                        ifa__prefetch_list pk, ifa__prefetch_list pv) {
    const ifa__problem *pb = c->pb;
    const ifa__kernel_table *kt = c->kt;
    const int64_t G = pb->G, D = pb->D, ld = IFA__CHUNK_ROWS, h = c->h0 + i;
    const float *qp = c->scratch + i * c->per_head, *bias = qp + G * D, *qsum = bias + G;
    float *state = c->states + i * c->state_floats, *s = c->s;
    const ifa__kernel_table *kv = kt->needs_unit_d_stride && u->v_d != 1 ? &ifa__kernels_ref : kt;
    if (u->n == 0) return;
    /* A sparse unit of a (blocks, bs, KVN*D) cache is 256 bytes of a row every 2 KiB, prefetched
     * a few lines per kernel step two units ahead; a prefetch that finds the miss buffers full is
     * dropped (bench/probes/prefetch_drop.c), and on this pattern the rows still arrived late.
     * Asking for the unit's K rows at once before qk, and its V rows before the softmax, measured
     * 1.07-1.17x for those calls; dense windows and the (blocks, KVN, bs, D) cache lost or gained
     * nothing (0.93-1.01; docs/benchmarks.md). */
    if (c->burst_rows && u->k_d == 1) prefetch_lines(u->k, u->n, D * pb->elem_size);
    unit_scores(pb, kt, c->kind, c->rounded, qp, u, s, pk);
    if (c->burst_rows && u->v_d == 1) prefetch_lines(u->v, u->n, D * pb->elem_size);
    if (c->finish) finish_scores(pb, kt, c->b, h, u->pos, u->n, bias, qsum, cp, s, ld);
    softmax_update(pb, kt, cp, u->n, s, ld, state, c->alpha);
    if (c->pv_q16 && u->v_d == 1)
        kt->pv_i8_q16(s, ld, G, D, u->v, u->n, ifa__state_acc(state, G), pv);
    else if (c->pv_bf16 && u->v_d == 1)
        kt->pv_bf16_pbf16(s, ld, G, D, u->v, u->n, ifa__state_acc(state, G), pv);
    else
        kv->pv[c->kind](s, ld, G, D, u->v, u->v_d, u->n, ifa__state_acc(state, G), pv);
}

/* Where a tile's units go next: runs of tokens, each visited head after head, and in a run the
 * windows in order. */
typedef struct unit_walk {
    int64_t t1, window, run, nh;
    int64_t rs, re;   /* the current run's tokens, [rs, re) */
    int64_t head, tw; /* the next unit: its head (0..nh-1) and the first token of its window */
} unit_walk;

/* Runs of `run` tokens from t0, or (`aligned`) ending on multiples of `run`. A run of one window
 * is the order (window, head); runs of a page, (page, head, window). */
static unit_walk walk_begin(int64_t t0, int64_t t1, int64_t window, int64_t run, int aligned, int64_t nh) {
    const int64_t re = aligned ? (t0 / run + 1) * run : t0 + run;
    return (unit_walk){.t1 = t1, .window = window, .run = run, .nh = nh, .rs = t0, .re = ifa__min64(re, t1),
                       .head = 0, .tw = t0};
}

/* The next unit's head and tokens [*tw, *te); 0 when the tile has no more. */
static int walk_next(unit_walk *w, int64_t *head, int64_t *tw, int64_t *te) {
    if (w->rs >= w->t1) return 0;
    *head = w->head;
    *tw = w->tw;
    *te = ifa__min64(w->tw + w->window, w->re);
    w->tw = *te;
    if (w->tw < w->re) return 1; /* the run's next window, the same head */
    w->tw = w->rs;               /* the run again for the next head */
    if (++w->head < w->nh) return 1;
    w->head = 0; /* the next run */
    w->rs = w->tw = w->re;
    w->re = ifa__min64(w->rs + w->run, w->t1);
    return 1;
}

/* The units of a tile in the order of `walk`, each head's rows gathered by itself (no head
 * shares another's pages here, or each head's rows lie apart). While unit u computes, its
 * kernels prefetch the rows of unit u + IFA__PREFETCH_UNITS, gathered into a ring of
 * IFA__PREFETCH_UNITS + 1 units; the first units are asked for in one burst. */
static void attend_units(const tile_ctx *c, unit_walk walk) {
    const ifa__problem *pb = c->pb;
    const int64_t dist = IFA__PREFETCH_UNITS, ring = IFA__PREFETCH_UNITS + 1;
    const int64_t row_bytes = pb->D * pb->elem_size;
    rows_unit units[IFA__PREFETCH_UNITS + 1];
    int64_t heads[IFA__PREFETCH_UNITS + 1], gathered = 0;
    for (int64_t u = 0;; u++) {
        int64_t h, tw, te;
        const int more = walk_next(&walk, &h, &tw, &te);
        if (more) {
            heads[u % ring] = h;
            gather_rows(pb, c->b, c->h0 + h, tw, te, &units[u % ring]);
            if (u < dist) prefetch_rows_now(&units[u % ring], 1, row_bytes);
            gathered++;
        }
        const int64_t cu = u - dist;
        if (cu >= gathered) break;
        if (cu < 0) continue;
        const rows_unit *cur = &units[cu % ring], *next = more ? &units[u % ring] : NULL;
        const int prefetch = next != NULL && next->k_d == 1 && next->v_d == 1 && next->n > 0;
        chunk_positions cp_buf;
        const chunk_positions *cp = chunk_positions_of(c->kt, pb, c->b, cur->pos, cur->n, &cp_buf);
        attend_unit(c, heads[cu % ring], cur, cp,
                    prefetch ? (ifa__prefetch_list){next->k, next->n, row_bytes} : IFA__NO_PREFETCH,
                    prefetch ? (ifa__prefetch_list){next->v, next->n, row_bytes} : IFA__NO_PREFETCH);
    }
}

/* Tokens of one head's rows that lie in one stretch, when the tile's heads' rows lie apart and
 * such a stretch holds more than one window; else 0. A (blocks, KVN, bs, D) page holds each
 * head's bs rows end to end, the heads one after another; a contiguous BNSD cache holds each
 * head's rows of the whole sequence. Visiting such a stretch's windows head after head
 * (attend_units, runs of these tokens) reads a page in address order, two streams (K and V)
 * where the order (window, head) keeps 2 nh open. */
static int64_t head_stretch_tokens(const ifa__problem *pb, int64_t window, int64_t t0, int64_t t1) {
    if (pb->form == IFA__KV_CONTIGUOUS) return t1 - t0 > window ? t1 - t0 : 0;
    return pb->bs > window ? pb->bs : 0;
}

/* The units of a tile whose heads share pages, in the order (window, head): in a (blocks, bs,
 * KVN*D) cache the heads of one token sit side by side, so visiting the heads of a window
 * together reads memory in order. Only head h0 walks the pages; the other heads shift its rows.
 * A ring holds the windows from the current one to the one being prefetched. The first window,
 * which no window before it prefetched, is asked for in one burst when the tile starts, and its
 * units also prefetch the next head's rows (lead_in_prefetch). Where each head's rows of a page
 * lie in one stretch longer than a window (head_stretch_tokens), the tile goes to attend_units
 * in the order (page, head, window) instead. */
static void attend_windows(const tile_ctx *c, int64_t nh, int64_t t0, int64_t t1) {
    const ifa__problem *pb = c->pb;
    const int64_t dist = IFA__PREFETCH_WINDOWS, ring = IFA__PREFETCH_WINDOWS + 1;
    int64_t window;
    const int heavy = heavy_rows(pb, c->kind, c->rounded, c->pv_bf16);
    const int small_i8 = heavy && c->kind == IFA__KV_I8 && c->kt->heavy_i8_small_windows;
    int token_stretches;
    const int side_by_side = window_plan(pb, c->b, c->h0, nh, heavy, small_i8, &window, &token_stretches);
    const int64_t stretch = side_by_side ? 0 : head_stretch_tokens(pb, window, t0, t1);
    if (stretch > 0) {
        attend_units(c, walk_begin(t0, t1, window, stretch, pb->form != IFA__KV_CONTIGUOUS, nh));
        return;
    }
    const int64_t windows = ifa__ceil_div(t1 - t0, window), row_bytes = pb->D * pb->elem_size;
    rows_unit win[IFA__PREFETCH_WINDOWS + 1], unit;
    chunk_positions cp_buf;
    const void *pk[IFA__MAX_PREFETCH_ROWS], *pv[IFA__MAX_PREFETCH_ROWS];
    for (int64_t w = 0; w < windows && w < dist; w++) {
        gather_rows(pb, c->b, c->h0, t0 + w * window, ifa__min64(t0 + (w + 1) * window, t1), &win[w]);
        prefetch_rows_now(&win[w], nh, row_bytes);
    }
    for (int64_t w = 0; w < windows; w++) {
        const int64_t wa = w + dist;
        const rows_unit *ahead = NULL;
        if (wa < windows) {
            const int64_t tw = t0 + wa * window;
            gather_rows(pb, c->b, c->h0, tw, ifa__min64(tw + window, t1), &win[wa % ring]);
            ahead = &win[wa % ring];
        }
        const rows_unit *base = &win[w % ring];
        /* Every head of the window has head h0's positions (shift_rows). */
        const chunk_positions *cp = chunk_positions_of(c->kt, pb, c->b, base->pos, base->n, &cp_buf);
        for (int64_t i = 0; i < nh; i++) {
            ifa__prefetch_list lk, lv;
            if (w == 0 && i + 1 < nh)
                lead_in_prefetch(base, ahead, nh, i, side_by_side, row_bytes, pk, pv, &lk, &lv);
            else
                window_prefetch(ahead, nh, i, side_by_side, token_stretches, row_bytes, pk, pv, &lk, &lv);
            if (i == 0) {
                attend_unit(c, i, base, cp, lk, lv);
            } else {
                shift_rows(base, i, &unit);
                attend_unit(c, i, &unit, cp, lk, lv);
            }
        }
    }
}

/* Which calls split their tokens early depends on the host as much as on the call (the table's
 * split_tokens_wide), measured with two threads, B = 1, L = 512, two chunks of 256 tokens against
 * two groups of heads. On the AVX-512 host: fp16 at G = 4 1.12x, bf16 1.13x, but int8 0.87-0.89x
 * and Llama-3-70B fp16 (heavy) 0.92-0.95x. On Zen 3 (AVX2): Qwen2.5-7B fp16 (G = 7, heavy)
 * 1.19x, bf16 1.19x, block 16 1.13x, Llama-3-70B fp16 1.04x (L = 768: 1.07x), bf16 1.04x, int8
 * at G = 4 1.02x (L = 768: 1.06x), but int8 at G = 7 and 8 0.96x and 0.93x (docs/benchmarks.md). */
int ifa__split_tokens_early(const ifa__problem *pb, const ifa__kernel_table *kt) {
    const ifa__kv_kind kind = kv_kind(pb->kv_dtype);
    if (pb->form == IFA__KV_PAGED_SPARSE || pb->B < 1 || pb->KVN < 1) return 0;
    const int rounded = uses_rounded_query(pb, kt);
    const int heavy = heavy_rows(pb, kind, rounded, uses_bf16_weights(pb, kt));
    int kinds_allow;
    if (kind == IFA__KV_F16 || kind == IFA__KV_BF16)
        kinds_allow = !heavy || kt->split_tokens_wide;
    else /* int8 only as measured: light rows through the integer kernels (inner_precise = 1) */
        kinds_allow = kt->split_tokens_wide && kind == IFA__KV_I8 && rounded && !heavy;
    if (!kinds_allow) return 0;
    ifa__kv_cursor cur;
    ifa__kv_cursor_init(&cur, pb, 0, 0, 0, 0);
    return heads_side_by_side(pb, &cur);
}

void ifa__attend_tile(const ifa__problem *pb, const ifa__kernel_table *kt, int64_t b, int64_t h0, int64_t nh,
                      int64_t t0, int64_t t1, float *states, float *scratch) {
    const int64_t G = pb->G, D = pb->D, per_head = head_scratch_floats(pb);
    const int64_t state_floats = ifa__state_floats(G, D);
    float *alpha = scratch + nh * per_head, *s = alpha + ifa__line_floats(G);
    tile_ctx c = {.pb = pb, .kt = kt, .kind = kv_kind(pb->kv_dtype), .finish = needs_finish(pb),
                  .rounded = uses_rounded_query(pb, kt), .pv_q16 = uses_fixed_point_pv(pb, kt),
                  .pv_bf16 = uses_bf16_weights(pb, kt), .b = b, .h0 = h0, .per_head = per_head,
                  .state_floats = state_floats, .scratch = scratch, .states = states, .s = s, .alpha = alpha};
    const int q_swapped = quads_swapped(pb, kt, b, 1);
    for (int64_t i = 0; i < nh; i++) {
        float *qp = scratch + i * per_head, *bias = qp + G * D, *qsum = bias + G;
        float *state = states + i * state_floats;
        ifa__state_init(state, G, D);
        if (t1 <= t0) continue;
        prepare_query(pb, kt, b, h0 + i, qp, bias, qsum, s + G * IFA__CHUNK_ROWS);
        if (c.rounded) rounded_query(pb, qp, qsum + G, (int16_t *)q16_of(qp, G, D));
        if (q_swapped) ifa__swap_mid_quads(qp, G, D);
    }
    if (t1 <= t0) return;
    if (pb->full_quant)
        full_quant_max(pb, kt, c.rounded, b, h0, nh, t0, t1, scratch, per_head, states, state_floats, s);
    if (drop_constant_bias(pb, scratch, nh, per_head)) c.finish = pb->has_pse; /* no mask, per-channel */
    if (pb->form == IFA__KV_PAGED_SPARSE) {
        /* Every head has its own pages: each gathers its own rows, window after window in
         * windows of 4 KiB of a head's rows, or where a head's rows of a page lie in one stretch
         * of more than 8 KiB (a (blocks, KVN, bs, D) cache), in runs of a page and windows of
         * 8 KiB, as the dense tiles of that cache take them. The larger windows there measured
         * 1.00-1.03x (float16, G = 4), 1.02x (bfloat16), 1.06x (int8) and 1.07-1.09x (G = 7 and
         * 8); windows of a whole page (block 32) 0.99x (docs/benchmarks.md). */
        ifa__kv_cursor cur;
        ifa__kv_cursor_init(&cur, pb, b, h0, 0, 0);
        const int apart = !heads_side_by_side(pb, &cur);
        c.burst_rows = !apart;
        const int64_t wide = window_tokens(pb, 8192);
        const int64_t window = apart && pb->bs > wide ? wide : window_tokens(pb, 4096);
        const int64_t stretch = apart ? head_stretch_tokens(pb, window, t0, t1) : 0;
        attend_units(&c, walk_begin(t0, t1, window, stretch > 0 ? stretch : window, stretch > 0, nh));
    } else {
        attend_windows(&c, nh, t0, t1);
    }
}

/* Turns the final state into the G output rows (`rows`: scratch for 5*D floats). */
void ifa__write_output(const ifa__problem *pb, const ifa__kernel_table *kt, int64_t b, int64_t h, const float *state,
                       float *rows) {
    const int64_t G = pb->G, D = pb->D;
    float *o = rows, *sc = rows + D, *off = rows + 2 * D;
    const ifa__view3 *ov = &pb->out;
    const int64_t out_es = (int64_t)ifa_dtype_size(ov->dtype);
    if (pb->aq == IFA__AQ_PER_CHANNEL) {
        load_view_row(kt, &pb->aq_scale, 1, h, D, sc);
        if (pb->aq_offset.data)
            load_view_row(kt, &pb->aq_offset, 1, h, D, off);
        else
            for (int64_t d = 0; d < D; d++) off[d] = 0.0f;
    }
    const int acc_swapped = quads_swapped(pb, kt, b, 0);
    for (int64_t g = 0; g < G; g++) {
        const int64_t n = h * G + g;
        const float l = state[G + g], voff = state[2 * G + g], seen = state[3 * G + g];
        const float *acc = state + 4 * G + g * D;
        if (l > 0.0f || l != l) {
            const int per_token = !pb->full_quant && pb->aq == IFA__AQ_PER_TOKEN;
            if (per_token)
                for (int64_t d = 0; d < D; d++) o[d] = (acc[d] + voff) / l;
            else
                kt->div_row(acc, l, D, o);
            /* Back to natural order, before any factor per d. */
            if (acc_swapped) ifa__swap_mid_quads(o, 1, D);
            if (!per_token) {
                if (pb->full_quant)
                    kt->mul_row(o, pb->dequant_scale2, D, o);
                else if (pb->aq == IFA__AQ_PER_CHANNEL)
                    for (int64_t d = 0; d < D; d++) o[d] = sc[d] * (o[d] + off[d]);
            }
        } else if (seen != 0.0f) {
            /* Tokens, but every score -inf: exp(-inf - -inf) in SPEC.md 5's formula. */
            for (int64_t d = 0; d < D; d++) o[d] = NAN;
        } else {
            for (int64_t d = 0; d < D; d++) o[d] = 0.0f; /* no token: SPEC.md 5 says the output is 0 */
        }
        char *dst = (char *)ov->data + (b * ov->s0 + n * ov->s1) * out_es;
        if (!pb->int8_out) {
            if (ov->dtype == IFA_DTYPE_FLOAT16 && ov->s2 == 1)
                kt->f32_to_f16(o, D, dst);
            else
                ifa__store_row_f32(dst, ov->dtype, ov->s2, D, o);
            continue;
        }
        /* int8 output: y = sat_int8(rne(o * scale + offset)), per tensor or per channel n*D + d. */
        float *qs = rows + 3 * D, *qo = rows + 4 * D;
        /* These views are (n, d) at n*s0 + d*s1 (validate.c), not (i0, i1, .) like the others. */
        const ifa__view3 *vs = &pb->oq_scale, *vo = &pb->oq_offset;
        ifa__load_row_f32(vs->data + n * vs->s0 * (int64_t)ifa_dtype_size(vs->dtype), vs->dtype, vs->s1, D, qs);
        if (vo->data)
            ifa__load_row_f32(vo->data + n * vo->s0 * (int64_t)ifa_dtype_size(vo->dtype), vo->dtype, vo->s1, D, qo);
        for (int64_t d = 0; d < D; d++) {
            const double y = (double)o[d] * qs[d] + (pb->oq_offset.data ? (double)qo[d] : 0.0);
            ((int8_t *)dst)[d * ov->s2] = ifa__sat_round_int8(y);
        }
    }
}
