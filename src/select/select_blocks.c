/*
 * select_blocks.c - query-aware page selection for IFA-V5's block_position, after Quest
 * (Tang et al., 2024, "Quest: Query-Aware Sparsity for Efficient Long-Context LLM Inference").
 *
 * For a query q and a page whose keys lie elementwise in [kmin, kmax] (page_summaries.c),
 *
 *     score = sum_d max(q_d * kmax_d, q_d * kmin_d)  >=  q . k   for every key k of the page,
 *
 * an upper bound of the page's best attention logit. Per (batch b, KV head h) with n = ceil(L/bs)
 * pages and k pages to keep:
 *
 *     n <= k: every page, in order; the length is unchanged (dense-equivalent).
 *     n >  k: pages 0 .. sink-1 (the sinks), the k-sink-1 best of pages sink .. n-2 by score, and
 *             page n-1 (the current, possibly partial, page), all in ascending page order:
 *
 *     block_position[b][h] = [ 0, 1, | 5, 9, 17, 40, | n-1 | 0x7FFFFFFF ... ]
 *                              sinks   best middle     last   unselected (up to P)
 *
 *     and the compact length (k-1)*bs + r, r = L - (n-1)*bs the tokens of the last page, makes
 *     IFA-V5 read exactly the chosen tokens (SPEC.md 4.4): every chosen page but the last is full.
 *
 * The score of a KV head is the largest of the scores of its G query heads (they share the
 * selection); ties go to the lower page index, a NaN score ranks below every other. The k-sink-1
 * best are found with a radix select on the scores mapped to order-preserving 32-bit keys: four
 * histogram passes, O(n) whatever the data, then one ascending scan takes the pages above the
 * threshold and the lowest-indexed pages equal to it, which yields the ascending order directly.
 *
 * Work: one item per (b, h) on the library's threads. The scoring reads 2*D floats per page per
 * KV head, 8/(bs*2*e) of the K and V bytes the dense attention reads (e bytes per element); its
 * inner loop has an AVX-512 and an AVX2 form chosen with the attention kernels (IFA_ISA), and a
 * portable form written for the compiler's vectoriser.
 */
#include <math.h>
#include <stdlib.h>

#include "../threadpool.h"
#include "../problem.h"
#include "select_common.h"

#if defined(__GNUC__) && (defined(__x86_64__) || defined(_M_X64))
#include <immintrin.h>
#define SEL_X86 1
#endif

typedef float (*score_fn)(const float *q, const float *lo, const float *hi, int64_t D);

/* sum_d max(q*hi, q*lo), portable: 16 independent partial sums so that the compiler can keep them
 * in vector registers without reassociating a single sum. */
static float score_portable(const float *restrict q, const float *restrict lo,
                            const float *restrict hi, int64_t D) {
    float acc[16] = {0};
    int64_t d = 0;
    for (; d + 16 <= D; d += 16)
        for (int l = 0; l < 16; l++) {
            const float a = q[d + l] * hi[d + l], b = q[d + l] * lo[d + l];
            acc[l] += a > b ? a : b;
        }
    float s = 0.0f;
    for (; d < D; d++) {
        const float a = q[d] * hi[d], b = q[d] * lo[d];
        s += a > b ? a : b;
    }
    for (int l = 0; l < 16; l++) s += acc[l];
    return s;
}

#ifdef SEL_X86
__attribute__((target("avx2,fma"))) static float score_avx2(const float *q, const float *lo,
                                                            const float *hi, int64_t D) {
    __m256 acc0 = _mm256_setzero_ps(), acc1 = _mm256_setzero_ps();
    int64_t d = 0;
    for (; d + 16 <= D; d += 16) {
        const __m256 q0 = _mm256_loadu_ps(q + d), q1 = _mm256_loadu_ps(q + d + 8);
        acc0 = _mm256_add_ps(acc0, _mm256_max_ps(_mm256_mul_ps(q0, _mm256_loadu_ps(hi + d)),
                                                 _mm256_mul_ps(q0, _mm256_loadu_ps(lo + d))));
        acc1 = _mm256_add_ps(acc1, _mm256_max_ps(_mm256_mul_ps(q1, _mm256_loadu_ps(hi + d + 8)),
                                                 _mm256_mul_ps(q1, _mm256_loadu_ps(lo + d + 8))));
    }
    acc0 = _mm256_add_ps(acc0, acc1);
    __m128 s4 = _mm_add_ps(_mm256_castps256_ps128(acc0), _mm256_extractf128_ps(acc0, 1));
    s4 = _mm_add_ps(s4, _mm_movehl_ps(s4, s4));
    s4 = _mm_add_ss(s4, _mm_movehdup_ps(s4));
    float s = _mm_cvtss_f32(s4);
    for (; d < D; d++) {
        const float a = q[d] * hi[d], b = q[d] * lo[d];
        s += a > b ? a : b;
    }
    return s;
}

#if !defined(IFA_AVX512_EMULATED) /* that test build runs no AVX-512 instruction (CMakeLists.txt) */
__attribute__((target("avx512f"))) static float score_avx512(const float *q, const float *lo,
                                                             const float *hi, int64_t D) {
    __m512 acc = _mm512_setzero_ps();
    int64_t d = 0;
    for (; d + 16 <= D; d += 16) {
        const __m512 qv = _mm512_loadu_ps(q + d);
        acc = _mm512_add_ps(acc, _mm512_max_ps(_mm512_mul_ps(qv, _mm512_loadu_ps(hi + d)),
                                               _mm512_mul_ps(qv, _mm512_loadu_ps(lo + d))));
    }
    if (d < D) {
        const __mmask16 m = (__mmask16)((1u << (D - d)) - 1u);
        const __m512 qv = _mm512_maskz_loadu_ps(m, q + d);
        acc = _mm512_add_ps(acc, _mm512_max_ps(_mm512_mul_ps(qv, _mm512_maskz_loadu_ps(m, hi + d)),
                                               _mm512_mul_ps(qv, _mm512_maskz_loadu_ps(m, lo + d))));
    }
    return _mm512_reduce_add_ps(acc);
}
#else
#define score_avx512 score_avx2
#endif
#endif

/* The scoring loop that goes with the attention kernels' ISA (so IFA_ISA=ref forces it too). */
static score_fn pick_score(void) {
#ifdef SEL_X86
    const char *isa = ifa_isa_name();
    if (strcmp(isa, "avx512") == 0) return score_avx512;
    if (strcmp(isa, "avx2") == 0) return score_avx2;
#endif
    return score_portable;
}

/* Order-preserving map of a score to 32 bits: NaN lowest, -0 and +0 equal. */
static uint32_t score_key(float s) {
    if (s != s) return 0;
    if (s == 0.0f) s = 0.0f;
    const uint32_t u = ifa__f32_to_bits(s);
    return (u & 0x80000000u) ? ~u : (u | 0x80000000u);
}

/* The m-th largest key (1 <= m <= c); *equal_take receives how many keys equal to it are among the
 * m largest. Radix select, most significant byte first. */
static uint32_t kth_largest(const uint32_t *keys, int64_t c, int64_t m, int64_t *equal_take) {
    uint32_t prefix = 0, mask = 0;
    int64_t rem = m;
    for (int shift = 24; shift >= 0; shift -= 8) {
        int64_t hist[256] = {0};
        for (int64_t i = 0; i < c; i++)
            if ((keys[i] & mask) == prefix) hist[(keys[i] >> shift) & 0xFFu]++;
        int bin = 255;
        while (hist[bin] < rem) rem -= hist[bin--];
        prefix |= (uint32_t)bin << shift;
        mask |= 0xFFu << shift;
    }
    *equal_take = rem;
    return prefix;
}

typedef struct sel_job {
    const ifa__sel_table *table;
    const ifa__sel_ints *lengths;
    const char *q;
    ifa_dtype q_dtype;
    int64_t q_sb, q_sn, q_sd; /* query element (b, n, d) strides */
    const float *summ;
    int64_t s_blk, s_head, s_i; /* summaries element strides (unit along D) */
    int64_t KVN, G, D, bs, k, sink, P;
    char *pos;
    int64_t p_sb, p_sh, p_sj;
    char *len;
    ifa_dtype len_dtype;
    int64_t len_s;
    score_fn score;
    char *scratch;
    size_t scratch_bytes; /* per thread */
} sel_job;

static void put_position(const sel_job *job, int64_t b, int64_t h, int64_t slot, int32_t v) {
    memcpy(job->pos + (b * job->p_sb + h * job->p_sh + slot * job->p_sj) * 4, &v, 4);
}

/* Pages ahead whose summaries the scoring loop prefetches. */
#define SELECT_PREFETCH_PAGES 8

static void select_item(void *ctx, size_t item, int thread) {
    const sel_job *job = ctx;
    const int64_t b = (int64_t)item / job->KVN, h = (int64_t)item % job->KVN;
    const int64_t L = ifa__sel_int_at(job->lengths, b), bs = job->bs, k = job->k;
    const int64_t n = ifa__ceil_div(L, bs);
    int64_t slot = 0, compact = L;
    if (n <= k) {
        for (int64_t j = 0; j < n; j++) put_position(job, b, h, slot++, (int32_t)j);
    } else {
        const int64_t sink = job->sink, first = sink, c = n - 1 - sink, m = k - sink - 1;
        for (int64_t j = 0; j < sink; j++) put_position(job, b, h, slot++, (int32_t)j);
        if (m > 0) {
            const int64_t G = job->G, D = job->D;
            float *q = (float *)(void *)(job->scratch + (size_t)thread * job->scratch_bytes);
            uint32_t *keys = (uint32_t *)(void *)(q + G * D);
            for (int64_t g = 0; g < G; g++) {
                const char *row = job->q + (b * job->q_sb + (h * G + g) * job->q_sn) *
                                               (int64_t)ifa_dtype_size(job->q_dtype);
                ifa__load_row_f32(row, job->q_dtype, job->q_sd, D, q + g * D);
            }
            for (int64_t i = 0; i < c; i++) {
                /* The pages' summaries lie where the block table scattered them, so the hardware
                 * prefetchers cannot find the next ones: fetching a few pages ahead made the call
                 * about 2x faster from DRAM (docs/selection.md). */
                if (i + SELECT_PREFETCH_PAGES < c) {
                    const int64_t ahead = ifa__sel_table_at(job->table, b, first + i + SELECT_PREFETCH_PAGES);
                    const char *plo = (const char *)(job->summ + ahead * job->s_blk + h * job->s_head);
                    const char *phi = plo + job->s_i * (int64_t)sizeof(float);
                    for (int64_t byte = 0; byte < D * (int64_t)sizeof(float); byte += 64) {
                        __builtin_prefetch(plo + byte, 0, 3);
                        __builtin_prefetch(phi + byte, 0, 3);
                    }
                }
                const int64_t blk = ifa__sel_table_at(job->table, b, first + i);
                const float *lo = job->summ + blk * job->s_blk + h * job->s_head;
                const float *hi = lo + job->s_i;
                float best = job->score(q, lo, hi, D);
                for (int64_t g = 1; g < G; g++) {
                    const float s = job->score(q + g * D, lo, hi, D);
                    best = s > best || best != best ? s : best;
                }
                keys[i] = score_key(best);
            }
            int64_t equal_take;
            const uint32_t threshold = kth_largest(keys, c, m, &equal_take);
            for (int64_t i = 0; i < c; i++) {
                if (keys[i] > threshold || (keys[i] == threshold && equal_take-- > 0))
                    put_position(job, b, h, slot++, (int32_t)(first + i));
            }
        }
        put_position(job, b, h, slot++, (int32_t)(n - 1));
        compact = (k - 1) * bs + (L - (n - 1) * bs);
    }
    for (; slot < job->P; slot++) put_position(job, b, h, slot, IFA_BLOCK_UNSELECTED);
    if (h == 0) {
        char *dst = job->len + b * job->len_s * (int64_t)ifa_dtype_size(job->len_dtype);
        if (job->len_dtype == IFA_DTYPE_INT32) {
            const int32_t v = (int32_t)compact;
            memcpy(dst, &v, 4);
        } else {
            memcpy(dst, &compact, 8);
        }
    }
}

void ifa_select_params_init(ifa_select_params *params) {
    if (params == NULL) return;
    memset(params, 0, sizeof *params);
    params->query = ifa_tensor_none();
    params->summaries = ifa_tensor_none();
    params->block_table = ifa_tensor_none();
    params->actual_seq_lengths = ifa_tensor_none();
    params->num_heads = 1;
    params->layout = "BSH";
    params->k = 1;
}

/* SPEC.md 2 for the query: fills B, N-strides and D. */
static ifa_status check_query(const ifa_select_params *p, sel_job *job, int64_t N, int64_t *B) {
    const ifa_tensor *q = &p->query;
    RETURN_IF_ERROR(ifa__check_view(q, "query"));
    RETURN_ERROR_IF(q->dtype == IFA_DTYPE_NONE, IFA_ERR_NULL_POINTER, "query: is required");
    RETURN_ERROR_IF(q->dtype != IFA_DTYPE_FLOAT16 && q->dtype != IFA_DTYPE_BFLOAT16 &&
                        q->dtype != IFA_DTYPE_FLOAT32,
                    IFA_ERR_INVALID_DTYPE, "query: dtype must be float16, bfloat16 or float32, got %s",
                    ifa_dtype_name(q->dtype));
    ifa__layout layout;
    RETURN_IF_ERROR(ifa__decode_layout(p->layout, &layout));
    ifa__view3 qv;
    RETURN_IF_ERROR(ifa__decode_query(q, layout, N, B, &job->D, &qv));
    job->q = (const char *)q->data;
    job->q_dtype = q->dtype;
    job->q_sb = qv.s0;
    job->q_sn = qv.s1;
    job->q_sd = qv.s2;
    return IFA_OK;
}

ifa_status ifa_select_blocks(const ifa_select_params *p, ifa_tensor *block_position,
                             ifa_tensor *lengths) {
    RETURN_ERROR_IF(p == NULL, IFA_ERR_NULL_POINTER, "params: is NULL");
    RETURN_ERROR_IF(block_position == NULL, IFA_ERR_NULL_POINTER, "block_position: is NULL");
    RETURN_ERROR_IF(lengths == NULL, IFA_ERR_NULL_POINTER, "actual_seq_lengths (output): is NULL");
    sel_job job;
    memset(&job, 0, sizeof job);

    /* Scalars. */
    RETURN_ERROR_IF(p->num_heads <= 0, IFA_ERR_INVALID_ARGUMENT,
                    "num_heads: must be >= 1, got %" PRId64, p->num_heads);
    RETURN_ERROR_IF(p->key_num_heads < 0, IFA_ERR_INVALID_ARGUMENT,
                    "key_num_heads: must be >= 0 (0 means num_heads), got %" PRId64, p->key_num_heads);
    const int64_t N = p->num_heads, KVN = p->key_num_heads == 0 ? N : p->key_num_heads;
    RETURN_ERROR_IF(KVN > N, IFA_ERR_INVALID_ARGUMENT,
                    "key_num_heads: %" PRId64 " is larger than num_heads %" PRId64, KVN, N);
    RETURN_ERROR_IF(N % KVN != 0, IFA_ERR_INVALID_ARGUMENT,
                    "key_num_heads: num_heads %" PRId64 " is not a multiple of key_num_heads %" PRId64,
                    N, KVN);
    RETURN_ERROR_IF(p->block_size < 1, IFA_ERR_INVALID_ARGUMENT,
                    "block_size: must be >= 1, got %" PRId64, p->block_size);
    RETURN_ERROR_IF(p->k < 1, IFA_ERR_INVALID_ARGUMENT,
                    "k: must be >= 1 (pages kept per KV head), got %" PRId64, p->k);
    RETURN_ERROR_IF(p->sink_pages < 0, IFA_ERR_INVALID_ARGUMENT,
                    "sink_pages: must be >= 0, got %" PRId64, p->sink_pages);
    RETURN_ERROR_IF(p->sink_pages >= p->k, IFA_ERR_INVALID_ARGUMENT,
                    "sink_pages: %" PRId64 " leaves no room for the last page in k = %" PRId64
                    " (need sink_pages < k)",
                    p->sink_pages, p->k);
    job.KVN = KVN;
    job.G = N / KVN;
    job.bs = p->block_size;
    job.k = p->k;
    job.sink = p->sink_pages;

    int64_t B = 0;
    RETURN_IF_ERROR(check_query(p, &job, N, &B));

    /* Summaries. */
    const ifa_tensor *s = &p->summaries;
    RETURN_IF_ERROR(ifa__check_view(s, "summaries"));
    RETURN_ERROR_IF(s->dtype == IFA_DTYPE_NONE, IFA_ERR_NULL_POINTER, "summaries: is required");
    RETURN_ERROR_IF(s->dtype != IFA_DTYPE_FLOAT32, IFA_ERR_INVALID_DTYPE,
                    "summaries: dtype must be float32, got %s", ifa_dtype_name(s->dtype));
    RETURN_ERROR_IF(s->rank != 4 || s->shape[1] != KVN || s->shape[2] != 2 || s->shape[3] != job.D,
                    IFA_ERR_INVALID_SHAPE,
                    "summaries: expected shape (num_blocks, KVN, 2, D) = (num_blocks, %" PRId64
                    ", 2, %" PRId64 "), got %s",
                    KVN, job.D, IFA__SHAPE(s));
    RETURN_ERROR_IF(job.D > 1 && s->strides[3] != 1, IFA_ERR_INVALID_ARGUMENT,
                    "summaries: must have unit stride along D, got stride %" PRId64
                    " (pass a contiguous copy)",
                    s->strides[3]);
    job.summ = (const float *)s->data;
    job.s_blk = s->strides[0];
    job.s_head = s->strides[1];
    job.s_i = s->strides[2];
    const int64_t num_blocks = s->shape[0];

    /* Pages. */
    ifa__sel_table table;
    ifa__sel_ints lens;
    RETURN_IF_ERROR(ifa__sel_check_table(&p->block_table, &table));
    RETURN_ERROR_IF(table.B != B, IFA_ERR_INVALID_SHAPE,
                    "block_table: expected shape (B, M) with B = %" PRId64 ", got %s", B,
                    IFA__SHAPE(&p->block_table));
    RETURN_IF_ERROR(ifa__sel_check_ints(&p->actual_seq_lengths, "actual_seq_lengths", B, &lens));
    RETURN_IF_ERROR(ifa__sel_check_pages(&table, &lens, job.bs, num_blocks, "summaries"));
    job.table = &table;
    job.lengths = &lens;

    /* Outputs. */
    const ifa_tensor *bp = block_position, *lo = lengths;
    RETURN_IF_ERROR(ifa__check_view(bp, "block_position"));
    RETURN_ERROR_IF(bp->dtype != IFA_DTYPE_INT32, IFA_ERR_INVALID_DTYPE,
                    "block_position: dtype must be int32, got %s", ifa_dtype_name(bp->dtype));
    const int64_t need = ifa__min64(job.k, table.M);
    RETURN_ERROR_IF(bp->rank != 3 || bp->shape[0] != B || bp->shape[1] != KVN || bp->shape[2] < need,
                    IFA_ERR_INVALID_SHAPE,
                    "block_position: expected shape (B, KVN, P) = (%" PRId64 ", %" PRId64
                    ", P) with P >= min(k, M) = %" PRId64 ", got %s",
                    B, KVN, need, IFA__SHAPE(bp));
    RETURN_IF_ERROR(ifa__check_view(lo, "actual_seq_lengths (output)"));
    RETURN_ERROR_IF(lo->dtype != IFA_DTYPE_INT32 && lo->dtype != IFA_DTYPE_INT64, IFA_ERR_INVALID_DTYPE,
                    "actual_seq_lengths (output): dtype must be int32 or int64, got %s",
                    ifa_dtype_name(lo->dtype));
    RETURN_ERROR_IF(lo->rank != 1 || lo->shape[0] != B, IFA_ERR_INVALID_SHAPE,
                    "actual_seq_lengths (output): expected shape (%" PRId64 ",), got %s", B,
                    IFA__SHAPE(lo));
    if (lo->dtype == IFA_DTYPE_INT32) {
        for (int64_t b = 0; b < B; b++)
            RETURN_ERROR_IF(ifa__sel_int_at(&lens, b) > INT32_MAX, IFA_ERR_OVERFLOW,
                            "actual_seq_lengths (output): %" PRId64 " does not fit in int32",
                            ifa__sel_int_at(&lens, b));
    }
    job.pos = (char *)bp->data;
    job.p_sb = bp->strides[0];
    job.p_sh = bp->strides[1];
    job.p_sj = bp->strides[2];
    job.P = bp->shape[2];
    job.len = (char *)lo->data;
    job.len_dtype = lo->dtype;
    job.len_s = lo->strides[0];

    /* Per-thread scratch: the G query rows as float32 and one key per candidate page. */
    const int64_t items = B * KVN;
    const int threads = (int)ifa__min64(ifa_get_num_threads(), items);
    const size_t bytes = ((size_t)(job.G * job.D) * sizeof(float) +
                          (size_t)ifa__max64(table.M, 1) * sizeof(uint32_t) + 63) & ~(size_t)63;
    job.scratch = malloc(bytes * (size_t)threads);
    RETURN_ERROR_IF(job.scratch == NULL, IFA_ERR_OUT_OF_MEMORY,
                    "select_blocks: cannot allocate %zu bytes of scratch", bytes * (size_t)threads);
    job.scratch_bytes = bytes;
    job.score = pick_score();
    ifa__parallel_for((size_t)items, select_item, &job, threads);
    free(job.scratch);
    ifa__clear_error();
    return IFA_OK;
}
