/*
 * page_summaries.c - the per-block key summaries that block selection (select_blocks.c) scores,
 * after Quest (Tang et al., 2024): the elementwise minimum and maximum of the keys of each page.
 *
 * Summaries are indexed by physical block, like the cache they describe, so a block shared by
 * several sequences (a common prefix) is summarised once and a summary never moves when a block
 * table is rebuilt:
 *
 *     key cache (num_blocks, bs, KVN*D)            summaries float32 (num_blocks, KVN, 2, D)
 *     block blk                                     block blk
 *     ┌──────────────────────────────┐              ┌ head 0 ┬ [0] min over valid rows: D ┐
 *     │ r=0      │ h0: D │ h1: D │…  │  ──────────► │        └ [1] max over valid rows: D │
 *     │ …        │                   │              ├ head 1 ┬ [0] min                     │
 *     │ r=rows-1 │ (valid rows only) │              │        └ [1] max                     │
 *     │ r=rows…  │ (not yet written) │              └ …                                    ┘
 *     └──────────────────────────────┘
 *
 * The valid rows of a block come from the pages that reference it: logical page j of batch b
 * holds rows = min(bs, L[b] - j*bs) tokens, so only the first rows of a sequence's last, partial
 * page count. int8 keys are dequantised first, K = (k + offset) * scale (SPEC.md 6), so the
 * summary bounds the keys the attention actually uses.
 *
 * Two entry points share one per-block worker:
 *   ifa_page_summaries         every block (unreferenced ones get the empty summary +inf / -inf);
 *   ifa_page_summaries_update  only the blocks holding the newly appended tokens, each summarised
 *                              again from its first row. Re-reading the page (bs rows) instead of
 *                              merging the new rows into the old summary keeps the result exact
 *                              whatever the summary held before (a block reused from another
 *                              sequence, tokens rolled back by speculative decoding), and costs one
 *                              page per sequence per decode step, about 1/L of the attention.
 * The work list holds each block once, so the parallel workers never write the same summary.
 */
#include <math.h>
#include <stdlib.h>

#include "../kernels/kernels.h"
#include "../threadpool.h"
#include "select_common.h"

/* One block to summarise and the reference (b, j) that gives it `rows` valid rows. */
typedef struct sum_item {
    int64_t blk, b, j, rows;
} sum_item;

/* Where antiquant parameter [0, channel or token] lives. */
typedef struct aq_view {
    const char *data; /* NULL: absent (offset 0) */
    ifa_dtype dtype;
    int64_t s_h, s_d; /* per-channel: element (0, h*D + d); per-tensor: both 0 */
    int64_t s_b, s_t; /* per-token: element (0, b, t) */
} aq_view;

enum { AQ_NONE, AQ_CHANNEL, AQ_TOKEN };

typedef struct sum_job {
    const char *key;
    ifa_dtype dtype;
    int64_t es;                         /* bytes per key element */
    int64_t s_blk, s_head, s_tok, s_d;  /* key element strides */
    int64_t KVN, D, bs, num_blocks;
    int aq;
    aq_view scale, offset;
    char *out;
    int64_t o_blk, o_head, o_i, o_d;    /* summaries element strides */
    const sum_item *items;
    float *scratch;                     /* 5*D floats per thread */
    const ifa__kernel_table *kt;        /* for its float16 row conversion, chosen once per call */
} sum_job;

static float aq_channel(const aq_view *v, int64_t h, int64_t d) {
    if (v->data == NULL) return 0.0f;
    return (float)ifa__load_as_double(v->data + (h * v->s_h + d * v->s_d) * (int64_t)ifa_dtype_size(v->dtype),
                                      v->dtype);
}

static float aq_token(const aq_view *v, int64_t b, int64_t t) {
    if (v->data == NULL) return 0.0f;
    return (float)ifa__load_as_double(v->data + (b * v->s_b + t * v->s_t) * (int64_t)ifa_dtype_size(v->dtype),
                                      v->dtype);
}

/* lo = min(lo, x), hi = max(hi, x) elementwise; written so that it compiles to vector min/max. */
static void minmax_update(const float *restrict x, float *restrict lo, float *restrict hi, int64_t D) {
    for (int64_t d = 0; d < D; d++) {
        const float v = x[d];
        lo[d] = v < lo[d] ? v : lo[d];
        hi[d] = v > hi[d] ? v : hi[d];
    }
}

/* Row of D key elements as float32 into x (dequantised with c, o for int8). */
static void load_row(const sum_job *job, const char *row, float *restrict x, const float *c,
                     const float *o) {
    /* float16 through the ISA's conversion: the scalar one took most of a whole-cache summary
     * (about 40 ms for a 32K Llama-3-8B cache). */
    ifa__load_row_f32_simd(job->kt, row, job->dtype, job->s_d, job->D, x);
    if (job->dtype == IFA_DTYPE_INT8)
        for (int64_t d = 0; d < job->D; d++) x[d] = (x[d] + o[d]) * c[d];
}

static void summarise_block(void *ctx, size_t item, int thread) {
    const sum_job *job = ctx;
    const sum_item *it = &job->items[item];
    const int64_t D = job->D;
    float *lo = job->scratch + (size_t)thread * 5 * (size_t)D;
    float *hi = lo + D, *x = hi + D, *c = x + D, *o = c + D;
    for (int64_t h = 0; h < job->KVN; h++) {
        for (int64_t d = 0; d < D; d++) {
            lo[d] = INFINITY;
            hi[d] = -INFINITY;
        }
        if (job->aq == AQ_CHANNEL) {
            for (int64_t d = 0; d < D; d++) {
                c[d] = aq_channel(&job->scale, h, d);
                o[d] = aq_channel(&job->offset, h, d);
            }
        }
        const char *base = job->key + (it->blk * job->s_blk + h * job->s_head) * job->es;
        for (int64_t r = 0; r < it->rows; r++) {
            const char *row = base + r * job->s_tok * job->es;
            if (job->dtype == IFA_DTYPE_FLOAT32 && job->s_d == 1) {
                minmax_update((const float *)(const void *)row, lo, hi, D);
                continue;
            }
            if (job->aq == AQ_TOKEN) {
                const int64_t t = it->j * job->bs + r;
                const float ct = aq_token(&job->scale, it->b, t), ot = aq_token(&job->offset, it->b, t);
                for (int64_t d = 0; d < D; d++) {
                    c[d] = ct;
                    o[d] = ot;
                }
            }
            load_row(job, row, x, c, o);
            minmax_update(x, lo, hi, D);
        }
        char *dst = job->out + (it->blk * job->o_blk + h * job->o_head) * 4;
        for (int64_t d = 0; d < D; d++) {
            memcpy(dst + d * job->o_d * 4, &lo[d], 4);
            memcpy(dst + (job->o_i + d * job->o_d) * 4, &hi[d], 4);
        }
    }
}

void ifa_summary_params_init(ifa_summary_params *params) {
    if (params == NULL) return;
    memset(params, 0, sizeof *params);
    params->key_cache = ifa_tensor_none();
    params->block_table = ifa_tensor_none();
    params->actual_seq_lengths = ifa_tensor_none();
    params->new_tokens = ifa_tensor_none();
    params->antiquant_scale = ifa_tensor_none();
    params->antiquant_offset = ifa_tensor_none();
}

/* Per-channel (or per-tensor) key parameters: (2,), (2, KVN*D), (2, KVN, D), (2, KVN, 1, D) or
 * (2, 1, KVN, D); per-token: (2, B, S'). */
static ifa_status check_aq_param(const ifa_tensor *t, const char *name, const sum_job *job, int64_t B,
                                 int64_t max_len, aq_view *v) {
    const int64_t KVN = job->KVN, D = job->D;
    const int64_t *sh = t->shape, *st = t->strides;
    RETURN_ERROR_IF(t->dtype != IFA_DTYPE_FLOAT16 && t->dtype != IFA_DTYPE_BFLOAT16 &&
                        t->dtype != IFA_DTYPE_FLOAT32,
                    IFA_ERR_INVALID_DTYPE, "%s: dtype must be float16, bfloat16 or float32, got %s",
                    name, ifa_dtype_name(t->dtype));
    RETURN_ERROR_IF(t->rank < 1 || sh[0] != 2, IFA_ERR_INVALID_SHAPE,
                    "%s: the first dimension must be 2 (key, value), got shape %s", name,
                    IFA__SHAPE(t));
    memset(v, 0, sizeof *v);
    v->data = (const char *)t->data;
    v->dtype = t->dtype;
    if (job->aq == AQ_TOKEN) {
        RETURN_ERROR_IF(t->rank != 3 || sh[1] != B, IFA_ERR_INVALID_SHAPE,
                        "%s: per-token (antiquant_mode 1) expects shape (2, B, S') with B = %" PRId64
                        ", got %s",
                        name, B, IFA__SHAPE(t));
        RETURN_ERROR_IF(sh[2] < max_len, IFA_ERR_INVALID_SHAPE,
                        "%s: S' = %" PRId64 " is shorter than the longest sequence (%" PRId64 ")",
                        name, sh[2], max_len);
        v->s_b = st[1];
        v->s_t = st[2];
        return IFA_OK;
    }
    if (t->rank == 1) return IFA_OK; /* per-tensor: strides 0 */
    if (t->rank == 2 && sh[1] == KVN * D) {
        v->s_h = D * st[1];
        v->s_d = st[1];
    } else if (t->rank == 3 && sh[1] == KVN && sh[2] == D) {
        v->s_h = st[1];
        v->s_d = st[2];
    } else if (t->rank == 4 && sh[1] == KVN && sh[2] == 1 && sh[3] == D) {
        v->s_h = st[1];
        v->s_d = st[3];
    } else if (t->rank == 4 && sh[1] == 1 && sh[2] == KVN && sh[3] == D) {
        v->s_h = st[2];
        v->s_d = st[3];
    } else {
        return ifa__fail(IFA_ERR_INVALID_SHAPE,
                         "%s: expected (2,), (2, %" PRId64 "), (2, %" PRId64 ", %" PRId64
                         "), (2, %" PRId64 ", 1, %" PRId64 ") or (2, 1, %" PRId64 ", %" PRId64
                         "), got %s",
                         name, KVN * D, KVN, D, KVN, D, KVN, D, IFA__SHAPE(t));
    }
    return IFA_OK;
}

/* Every check shared by both entry points; fills the job (all but items and scratch). */
static ifa_status prepare(const ifa_summary_params *p, ifa_tensor *out, int update, sum_job *job,
                          ifa__sel_table *table, ifa__sel_ints *lengths, ifa__sel_ints *new_tokens) {
    RETURN_ERROR_IF(p == NULL, IFA_ERR_NULL_POINTER, "params: is NULL");
    RETURN_ERROR_IF(out == NULL, IFA_ERR_NULL_POINTER, "summaries: is NULL");
    memset(job, 0, sizeof *job);
    job->kt = ifa__kernels();
    const ifa_tensor *k = &p->key_cache;
    RETURN_IF_ERROR(ifa__check_view(k, "key_cache"));
    RETURN_ERROR_IF(!ifa__present(k), IFA_ERR_NULL_POINTER,
                    "key_cache: is required (a paged cache with at least one element)");
    RETURN_ERROR_IF(k->dtype != IFA_DTYPE_FLOAT16 && k->dtype != IFA_DTYPE_BFLOAT16 &&
                        k->dtype != IFA_DTYPE_FLOAT32 && k->dtype != IFA_DTYPE_INT8,
                    IFA_ERR_INVALID_DTYPE,
                    "key_cache: dtype must be float16, bfloat16, float32 or int8, got %s",
                    ifa_dtype_name(k->dtype));
    RETURN_ERROR_IF(p->key_num_heads < 0, IFA_ERR_INVALID_ARGUMENT,
                    "key_num_heads: must be >= 0, got %" PRId64, p->key_num_heads);
    RETURN_ERROR_IF(p->block_size < 0, IFA_ERR_INVALID_ARGUMENT,
                    "block_size: must be >= 0 (0 takes it from the cache), got %" PRId64,
                    p->block_size);
    job->key = (const char *)k->data;
    job->dtype = k->dtype;
    job->es = (int64_t)ifa_dtype_size(k->dtype);
    job->num_blocks = k->shape[0];
    if (k->rank == 4) { /* (num_blocks, KVN, bs, D) */
        RETURN_ERROR_IF(p->key_num_heads != 0 && p->key_num_heads != k->shape[1], IFA_ERR_INVALID_SHAPE,
                        "key_cache: shape %s has %" PRId64 " KV heads but key_num_heads is %" PRId64,
                        IFA__SHAPE(k), k->shape[1], p->key_num_heads);
        job->KVN = k->shape[1];
        job->bs = k->shape[2];
        job->D = k->shape[3];
        job->s_blk = k->strides[0];
        job->s_head = k->strides[1];
        job->s_tok = k->strides[2];
        job->s_d = k->strides[3];
    } else if (k->rank == 3) { /* (num_blocks, bs, KVN*D) */
        RETURN_ERROR_IF(p->key_num_heads == 0, IFA_ERR_INVALID_ARGUMENT,
                        "key_num_heads: is required with a 3-D cache (num_blocks, bs, KVN*D)");
        RETURN_ERROR_IF(k->shape[2] % p->key_num_heads != 0, IFA_ERR_INVALID_SHAPE,
                        "key_cache: last dimension %" PRId64 " is not a multiple of key_num_heads %"
                        PRId64,
                        k->shape[2], p->key_num_heads);
        job->KVN = p->key_num_heads;
        job->bs = k->shape[1];
        job->D = k->shape[2] / job->KVN;
        job->s_blk = k->strides[0];
        job->s_tok = k->strides[1];
        job->s_d = k->strides[2];
        job->s_head = job->D * k->strides[2];
    } else {
        return ifa__fail(IFA_ERR_INVALID_SHAPE,
                         "key_cache: paged cache must be (num_blocks, block_size, KVN*D) or "
                         "(num_blocks, KVN, block_size, D), got %s",
                         IFA__SHAPE(k));
    }
    RETURN_ERROR_IF(p->block_size != 0 && p->block_size != job->bs, IFA_ERR_INVALID_SHAPE,
                    "block_size: %" PRId64 " differs from the cache's block size %" PRId64
                    " (shape %s)",
                    p->block_size, job->bs, IFA__SHAPE(k));

    RETURN_IF_ERROR(ifa__sel_check_table(&p->block_table, table));
    RETURN_IF_ERROR(ifa__sel_check_ints(&p->actual_seq_lengths, "actual_seq_lengths", table->B, lengths));
    RETURN_IF_ERROR(ifa__sel_check_pages(table, lengths, job->bs, job->num_blocks, "key cache"));
    int64_t max_len = 0;
    for (int64_t b = 0; b < table->B; b++) max_len = ifa__max64(max_len, ifa__sel_int_at(lengths, b));
    if (update) {
        RETURN_IF_ERROR(ifa__sel_check_ints(&p->new_tokens, "new_tokens", table->B, new_tokens));
        for (int64_t b = 0; b < table->B; b++) {
            const int64_t n = ifa__sel_int_at(new_tokens, b), L = ifa__sel_int_at(lengths, b);
            RETURN_ERROR_IF(n > L, IFA_ERR_INVALID_ARGUMENT,
                            "new_tokens[%" PRId64 "] = %" PRId64
                            " is more than actual_seq_lengths[%" PRId64 "] = %" PRId64,
                            b, n, b, L);
        }
    }

    /* int8 keys: the key parameters of SPEC.md 6. */
    const ifa_tensor *sc = &p->antiquant_scale, *of = &p->antiquant_offset;
    RETURN_IF_ERROR(ifa__check_view(sc, "antiquant_scale"));
    RETURN_IF_ERROR(ifa__check_view(of, "antiquant_offset"));
    RETURN_ERROR_IF(p->antiquant_mode != 0 && p->antiquant_mode != 1, IFA_ERR_INVALID_ARGUMENT,
                    "antiquant_mode: expected 0 (per-channel) or 1 (per-token), got %" PRId64,
                    p->antiquant_mode);
    if (job->dtype == IFA_DTYPE_INT8) {
        RETURN_ERROR_IF(!ifa__present(sc), IFA_ERR_INVALID_ARGUMENT,
                        "antiquant_scale: is required with an int8 key_cache");
        job->aq = p->antiquant_mode == 1 ? AQ_TOKEN : AQ_CHANNEL;
        RETURN_IF_ERROR(check_aq_param(sc, "antiquant_scale", job, table->B, max_len, &job->scale));
        if (ifa__present(of)) {
            int same = of->rank == sc->rank;
            for (int32_t i = 0; same && i < sc->rank; i++) same = of->shape[i] == sc->shape[i];
            RETURN_ERROR_IF(!same, IFA_ERR_INVALID_SHAPE,
                            "antiquant_offset: shape %s differs from antiquant_scale's %s",
                            IFA__SHAPE(of), IFA__SHAPE(sc));
            RETURN_IF_ERROR(check_aq_param(of, "antiquant_offset", job, table->B, max_len,
                                           &job->offset));
        }
    } else {
        RETURN_ERROR_IF(ifa__present(sc) || ifa__present(of), IFA_ERR_INVALID_ARGUMENT,
                        "antiquant_scale/antiquant_offset: only apply to an int8 key_cache, got %s",
                        ifa_dtype_name(job->dtype));
    }

    RETURN_IF_ERROR(ifa__check_view(out, "summaries"));
    RETURN_ERROR_IF(out->dtype != IFA_DTYPE_FLOAT32, IFA_ERR_INVALID_DTYPE,
                    "summaries: dtype must be float32, got %s", ifa_dtype_name(out->dtype));
    RETURN_ERROR_IF(out->rank != 4 || out->shape[0] != job->num_blocks || out->shape[1] != job->KVN ||
                        out->shape[2] != 2 || out->shape[3] != job->D,
                    IFA_ERR_INVALID_SHAPE,
                    "summaries: expected shape (num_blocks, KVN, 2, D) = (%" PRId64 ", %" PRId64
                    ", 2, %" PRId64 "), got %s",
                    job->num_blocks, job->KVN, job->D, IFA__SHAPE(out));
    job->out = (char *)out->data;
    job->o_blk = out->strides[0];
    job->o_head = out->strides[1];
    job->o_i = out->strides[2];
    job->o_d = out->strides[3];
    return IFA_OK;
}

/* Runs the worker over the items on the library's threads. */
static ifa_status run_items(sum_job *job, const sum_item *items, int64_t count) {
    if (count == 0) return IFA_OK;
    const int threads = (int)ifa__min64(ifa_get_num_threads(), count);
    job->scratch = malloc((size_t)threads * 5 * (size_t)job->D * sizeof(float));
    RETURN_ERROR_IF(job->scratch == NULL, IFA_ERR_OUT_OF_MEMORY,
                    "summaries: cannot allocate %d x %" PRId64 " floats of scratch", threads,
                    5 * job->D);
    job->items = items;
    ifa__parallel_for((size_t)count, summarise_block, job, threads);
    free(job->scratch);
    job->scratch = NULL;
    return IFA_OK;
}

ifa_status ifa_page_summaries(const ifa_summary_params *params, ifa_tensor *summaries) {
    sum_job job;
    ifa__sel_table table;
    ifa__sel_ints lengths, unused;
    RETURN_IF_ERROR(prepare(params, summaries, 0, &job, &table, &lengths, &unused));
    const int64_t nb = job.num_blocks;
    sum_item *items = calloc((size_t)ifa__max64(nb, 1), sizeof *items);
    RETURN_ERROR_IF(items == NULL, IFA_ERR_OUT_OF_MEMORY,
                    "summaries: cannot allocate the work list of %" PRId64 " blocks", nb);
    for (int64_t blk = 0; blk < nb; blk++) items[blk].blk = blk;
    /* Each block keeps the reference that gives it the most valid rows. */
    for (int64_t b = 0; b < table.B; b++) {
        const int64_t L = ifa__sel_int_at(&lengths, b);
        for (int64_t j = 0; j * job.bs < L; j++) {
            sum_item *it = &items[ifa__sel_table_at(&table, b, j)];
            const int64_t rows = ifa__min64(job.bs, L - j * job.bs);
            if (rows > it->rows) {
                it->b = b;
                it->j = j;
                it->rows = rows;
            }
        }
    }
    const ifa_status st = run_items(&job, items, nb);
    free(items);
    if (st == IFA_OK) ifa__clear_error();
    return st;
}

static int item_order(const void *a, const void *b) {
    const sum_item *x = a, *y = b;
    if (x->blk != y->blk) return x->blk < y->blk ? -1 : 1;
    if (x->rows != y->rows) return x->rows > y->rows ? -1 : 1; /* most rows first */
    return 0;
}

ifa_status ifa_page_summaries_update(const ifa_summary_params *params, ifa_tensor *summaries) {
    sum_job job;
    ifa__sel_table table;
    ifa__sel_ints lengths, new_tokens;
    RETURN_IF_ERROR(prepare(params, summaries, 1, &job, &table, &lengths, &new_tokens));
    /* The touched pages of batch b are those holding tokens L-n .. L-1. */
    int64_t count = 0;
    for (int64_t b = 0; b < table.B; b++) {
        const int64_t L = ifa__sel_int_at(&lengths, b), n = ifa__sel_int_at(&new_tokens, b);
        if (n > 0) count += (L - 1) / job.bs - (L - n) / job.bs + 1;
    }
    if (count == 0) {
        ifa__clear_error();
        return IFA_OK;
    }
    sum_item *items = malloc((size_t)count * sizeof *items);
    RETURN_ERROR_IF(items == NULL, IFA_ERR_OUT_OF_MEMORY,
                    "summaries: cannot allocate the work list of %" PRId64 " pages", count);
    int64_t used = 0;
    for (int64_t b = 0; b < table.B; b++) {
        const int64_t L = ifa__sel_int_at(&lengths, b), n = ifa__sel_int_at(&new_tokens, b);
        if (n == 0) continue;
        for (int64_t j = (L - n) / job.bs; j <= (L - 1) / job.bs; j++) {
            items[used].blk = ifa__sel_table_at(&table, b, j);
            items[used].b = b;
            items[used].j = j;
            items[used].rows = ifa__min64(job.bs, L - j * job.bs);
            used++;
        }
    }
    /* One item per block (the reference with the most rows), so no two workers share a block. */
    qsort(items, (size_t)used, sizeof *items, item_order);
    int64_t unique = 0;
    for (int64_t i = 0; i < used; i++)
        if (unique == 0 || items[unique - 1].blk != items[i].blk) items[unique++] = items[i];
    const ifa_status st = run_items(&job, items, unique);
    free(items);
    if (st == IFA_OK) ifa__clear_error();
    return st;
}
