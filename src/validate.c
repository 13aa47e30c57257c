/*
 * validate.c - every check of SPEC.md 2-10, before any computation.
 *
 * ifa__validate() reads the caller's ifa_params once, rule by rule, and either returns an error
 * whose message names the parameter, the expected value and the given one, or fills an
 * ifa__problem in which every index the computation will use is known to be in range. Nothing
 * here writes to the output, so a failed call leaves it untouched.
 *
 * The order follows the SPEC: scalars, query (2), KV forms (3), lengths and pages (4), pse and
 * mask (5), antiquant (6), full quantisation (7), int8 output (8), then the output view. Every
 * tensor view is first checked on its own (rank, strides, overflow of its byte extent), so later
 * offset arithmetic cannot overflow.
 */
#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <string.h>

#include "convert.h"
#include "problem.h"
#include "views.h"

/* The stride of dimension i as the computation should use it: 0 for a dimension of size 1 (its
 * stride is never multiplied by anything but 0, yet a caller may pass any value there, e.g.
 * 2^62, and a kernel that scales it to bytes would overflow). For a dimension of size >= 2,
 * check_view() has bounded stride * element size. */
static int64_t stride_of(const ifa_tensor *t, int32_t i) { return t->shape[i] > 1 ? t->strides[i] : 0; }

/* The stride between heads of a flattened (..., heads*D) dimension i: 0 with one head. For a
 * view with elements check_view() bounds (heads*D - 1) * stride, so the product fits; an empty
 * view is never stepped along and gets 0 rather than an overflowing product. */
static int64_t head_stride(const ifa_tensor *t, int32_t i, int64_t heads, int64_t D) {
    int64_t s;
    if (heads <= 1 || ifa__mul_overflow(D, stride_of(t, i), &s)) return 0;
    return s;
}

static int is_float_dtype(ifa_dtype d) {
    return d == IFA_DTYPE_FLOAT16 || d == IFA_DTYPE_BFLOAT16 || d == IFA_DTYPE_FLOAT32;
}

static ifa__view3 view3(const ifa_tensor *t, int64_t s0, int64_t s1, int64_t s2) {
    ifa__view3 v;
    v.data = (const char *)t->data;
    v.dtype = t->dtype;
    v.s0 = s0;
    v.s1 = s1;
    v.s2 = s2;
    return v;
}

/* ---- Sequence lengths ----------------------------------------------------------------------- */

int64_t ifa__seq_len(const ifa__problem *pb, int64_t b) {
    if (pb->lengths == NULL) {
        if (pb->kv_count > 1) {
            const ifa_tensor *k = &pb->params->key[b];
            return pb->layout == IFA__LAYOUT_BNSD ? k->shape[2] : k->shape[1];
        }
        return pb->stored_len;
    }
    const int64_t i = pb->lengths_count == 1 ? 0 : b;
    const char *p = pb->lengths + i * pb->lengths_stride * (int64_t)ifa_dtype_size(pb->lengths_dtype);
    if (pb->lengths_dtype == IFA_DTYPE_INT32) return ifa__load_i32(p);
    int64_t v;
    memcpy(&v, p, sizeof v);
    return v;
}

/* ---- Sections ------------------------------------------------------------------------------- */

/* SPEC.md 2: the layout string. */
ifa_status ifa__decode_layout(const char *name, ifa__layout *layout) {
    RETURN_ERROR_IF(name == NULL, IFA_ERR_NULL_POINTER,
                    "layout: is NULL (expected \"BSH\", \"BSND\" or \"BNSD\")");
    if (strcmp(name, "BSH") == 0)
        *layout = IFA__LAYOUT_BSH;
    else if (strcmp(name, "BSND") == 0)
        *layout = IFA__LAYOUT_BSND;
    else if (strcmp(name, "BNSD") == 0)
        *layout = IFA__LAYOUT_BNSD;
    else
        return ifa__fail(IFA_ERR_INVALID_ARGUMENT,
                         "layout: expected \"BSH\", \"BSND\" or \"BNSD\", got \"%.32s\"", name);
    return IFA_OK;
}

/* SPEC.md 2: the query's shape for its layout and N heads (S = 1, N*D divisible, B and D >= 1,
 * D capped); fills B, D and the (b, n, d) element strides. The dtype is the caller's rule. */
ifa_status ifa__decode_query(const ifa_tensor *q, ifa__layout layout, int64_t N, int64_t *B, int64_t *D,
                             ifa__view3 *qv) {
    if (layout == IFA__LAYOUT_BSH) {
        RETURN_ERROR_IF(q->rank != 3, IFA_ERR_INVALID_SHAPE,
                        "query: layout BSH expects shape (B, 1, N*D), got %s", IFA__SHAPE(q));
        RETURN_ERROR_IF(q->shape[1] != 1, IFA_ERR_INVALID_SHAPE,
                        "query: sequence length S must be 1 (one decode step), got %" PRId64
                        " in shape %s",
                        q->shape[1], IFA__SHAPE(q));
        RETURN_ERROR_IF(q->shape[2] % N != 0, IFA_ERR_INVALID_SHAPE,
                        "query: hidden size %" PRId64 " is not a multiple of num_heads %" PRId64,
                        q->shape[2], N);
        *D = q->shape[2] / N;
        *qv = view3(q, stride_of(q, 0), head_stride(q, 2, N, *D), stride_of(q, 2));
    } else {
        const int bsnd = layout == IFA__LAYOUT_BSND;
        RETURN_ERROR_IF(q->rank != 4, IFA_ERR_INVALID_SHAPE, "query: layout %s expects shape %s, got %s",
                        bsnd ? "BSND" : "BNSD", bsnd ? "(B, 1, N, D)" : "(B, N, 1, D)", IFA__SHAPE(q));
        const int64_t s_dim = bsnd ? 1 : 2, n_dim = bsnd ? 2 : 1;
        RETURN_ERROR_IF(q->shape[s_dim] != 1, IFA_ERR_INVALID_SHAPE,
                        "query: sequence length S must be 1 (one decode step), got %" PRId64
                        " in shape %s",
                        q->shape[s_dim], IFA__SHAPE(q));
        RETURN_ERROR_IF(q->shape[n_dim] != N, IFA_ERR_INVALID_SHAPE,
                        "query: has %" PRId64 " heads in shape %s but num_heads is %" PRId64,
                        q->shape[n_dim], IFA__SHAPE(q), N);
        *D = q->shape[3];
        *qv = view3(q, stride_of(q, 0), stride_of(q, (int32_t)n_dim), stride_of(q, 3));
    }
    *B = q->shape[0];
    RETURN_ERROR_IF(*B < 1 || *D < 1, IFA_ERR_INVALID_SHAPE,
                    "query: batch and head size must be >= 1, got shape %s", IFA__SHAPE(q));
    RETURN_ERROR_IF(*D > 65536, IFA_ERR_INVALID_SHAPE,
                    "query: head size D = %" PRId64 " is larger than the supported 65536", *D);
    return IFA_OK;
}

static ifa_status check_scalars(const ifa_params *p, ifa__problem *pb) {
    RETURN_ERROR_IF(p->num_heads <= 0, IFA_ERR_INVALID_ARGUMENT,
                    "num_heads: must be >= 1, got %" PRId64, p->num_heads);
    RETURN_ERROR_IF(p->key_num_heads < 0, IFA_ERR_INVALID_ARGUMENT,
                    "key_num_heads: must be >= 0 (0 means num_heads), got %" PRId64,
                    p->key_num_heads);
    pb->N = p->num_heads;
    pb->KVN = p->key_num_heads == 0 ? p->num_heads : p->key_num_heads;
    RETURN_ERROR_IF(pb->KVN > pb->N, IFA_ERR_INVALID_ARGUMENT,
                    "key_num_heads: %" PRId64 " is larger than num_heads %" PRId64, pb->KVN, pb->N);
    RETURN_ERROR_IF(pb->N % pb->KVN != 0, IFA_ERR_INVALID_ARGUMENT,
                    "key_num_heads: num_heads %" PRId64 " is not a multiple of key_num_heads %" PRId64,
                    pb->N, pb->KVN);
    pb->G = pb->N / pb->KVN;
    RETURN_IF_ERROR(ifa__decode_layout(p->layout, &pb->layout));
    RETURN_ERROR_IF(p->inner_precise != 0 && p->inner_precise != 1, IFA_ERR_INVALID_ARGUMENT,
                    "inner_precise: expected 0 (high precision) or 1 (high performance), got %" PRId64,
                    p->inner_precise);
    pb->inner_precise = (int)p->inner_precise;
    RETURN_ERROR_IF(p->antiquant_mode != 0 && p->antiquant_mode != 1, IFA_ERR_INVALID_ARGUMENT,
                    "antiquant_mode: expected 0 (per-channel) or 1 (per-token), got %" PRId64,
                    p->antiquant_mode);
    pb->scale = (float)p->scale_value;
    return IFA_OK;
}

static ifa_status check_query(const ifa_params *p, ifa__problem *pb) {
    const ifa_tensor *q = &p->query;
    RETURN_IF_ERROR(ifa__check_view(q, "query"));
    RETURN_ERROR_IF(q->dtype == IFA_DTYPE_NONE, IFA_ERR_NULL_POINTER, "query: is required");
    RETURN_ERROR_IF(!is_float_dtype(q->dtype) && q->dtype != IFA_DTYPE_INT8, IFA_ERR_INVALID_DTYPE,
                    "query: dtype must be float16, bfloat16, float32 or int8, got %s",
                    ifa_dtype_name(q->dtype));
    pb->q_dtype = q->dtype;
    pb->full_quant = q->dtype == IFA_DTYPE_INT8;
    RETURN_IF_ERROR(ifa__decode_query(q, pb->layout, pb->N, &pb->B, &pb->D, &pb->q));
    return IFA_OK;
}

/* Shape check of one contiguous K/V tensor; returns its stored length in *len. */
static ifa_status check_contiguous_kv(const ifa__problem *pb, const ifa_tensor *t, const char *name,
                                      int64_t batch, int64_t *len) {
    const int64_t KVN = pb->KVN, D = pb->D;
    switch (pb->layout) {
    case IFA__LAYOUT_BSH:
        RETURN_ERROR_IF(t->rank != 3 || t->shape[0] != batch || t->shape[2] != KVN * D,
                        IFA_ERR_INVALID_SHAPE,
                        "%s: layout BSH expects shape (%" PRId64 ", S, %" PRId64 ") (KVN*D = %" PRId64
                        "*%" PRId64 "), got %s",
                        name, batch, KVN * D, KVN, D, IFA__SHAPE(t));
        *len = t->shape[1];
        break;
    case IFA__LAYOUT_BSND:
        RETURN_ERROR_IF(t->rank != 4 || t->shape[0] != batch || t->shape[2] != KVN || t->shape[3] != D,
                        IFA_ERR_INVALID_SHAPE,
                        "%s: layout BSND expects shape (%" PRId64 ", S, %" PRId64 ", %" PRId64 "), got %s",
                        name, batch, KVN, D, IFA__SHAPE(t));
        *len = t->shape[1];
        break;
    case IFA__LAYOUT_BNSD:
        RETURN_ERROR_IF(t->rank != 4 || t->shape[0] != batch || t->shape[1] != KVN || t->shape[3] != D,
                        IFA_ERR_INVALID_SHAPE,
                        "%s: layout BNSD expects shape (%" PRId64 ", %" PRId64 ", S, %" PRId64 "), got %s",
                        name, batch, KVN, D, IFA__SHAPE(t));
        *len = t->shape[2];
        break;
    }
    return IFA_OK;
}

static ifa_status check_kv(const ifa_params *p, ifa__problem *pb) {
    RETURN_ERROR_IF(p->key == NULL || p->value == NULL || p->kv_count < 1, IFA_ERR_NULL_POINTER,
                    "key_list/value_list: at least one key and one value tensor are required");
    pb->kv_count = p->kv_count;
    char kname[40], vname[40];
    for (int32_t i = 0; i < p->kv_count; i++) {
        /* Names only for lists: formatting them costs more than the rest of a short call. */
        if (p->kv_count == 1) {
            strcpy(kname, "key_list[0]");
            strcpy(vname, "value_list[0]");
        } else {
            snprintf(kname, sizeof kname, "key_list[%d]", (int)i);
            snprintf(vname, sizeof vname, "value_list[%d]", (int)i);
        }
        RETURN_IF_ERROR(ifa__check_view(&p->key[i], kname));
        RETURN_IF_ERROR(ifa__check_view(&p->value[i], vname));
        const ifa_tensor *k = &p->key[i], *v = &p->value[i];
        RETURN_ERROR_IF(k->dtype == IFA_DTYPE_NONE, IFA_ERR_NULL_POINTER, "%s: is required", kname);
        RETURN_ERROR_IF(v->dtype == IFA_DTYPE_NONE, IFA_ERR_NULL_POINTER, "%s: is required", vname);
        RETURN_ERROR_IF(k->dtype != v->dtype, IFA_ERR_INVALID_DTYPE,
                        "value_list: dtype %s differs from key_list's %s", ifa_dtype_name(v->dtype),
                        ifa_dtype_name(k->dtype));
        int same = k->rank == v->rank;
        for (int32_t d = 0; same && d < k->rank; d++) same = k->shape[d] == v->shape[d];
        RETURN_ERROR_IF(!same, IFA_ERR_INVALID_SHAPE, "value_list: shape %s differs from key_list's %s",
                        IFA__SHAPE(v), IFA__SHAPE(k));
        RETURN_ERROR_IF(k->dtype != p->key[0].dtype, IFA_ERR_INVALID_DTYPE,
                        "%s: dtype %s differs from key_list[0]'s %s", kname, ifa_dtype_name(k->dtype),
                        ifa_dtype_name(p->key[0].dtype));
    }
    pb->kv_dtype = p->key[0].dtype;
    pb->elem_size = (int64_t)ifa_dtype_size(pb->kv_dtype);
    if (pb->full_quant) {
        RETURN_ERROR_IF(pb->kv_dtype != IFA_DTYPE_INT8, IFA_ERR_INVALID_DTYPE,
                        "key_list: must be int8 with an int8 query (full quantisation), got %s",
                        ifa_dtype_name(pb->kv_dtype));
    } else {
        RETURN_ERROR_IF(pb->kv_dtype != pb->q_dtype && pb->kv_dtype != IFA_DTYPE_INT8,
                        IFA_ERR_INVALID_DTYPE,
                        "key_list: dtype must be the query's %s or int8, got %s",
                        ifa_dtype_name(pb->q_dtype), ifa_dtype_name(pb->kv_dtype));
    }

    const int paged = ifa__present(&p->block_table);
    if (paged) {
        RETURN_ERROR_IF(p->kv_count != 1, IFA_ERR_INVALID_ARGUMENT,
                        "key_list: a paged cache (block_table given) must be one tensor, got a list of %d",
                        (int)p->kv_count);
        RETURN_ERROR_IF(p->block_size < 1, IFA_ERR_INVALID_ARGUMENT,
                        "block_size: must be >= 1 with a paged cache, got %" PRId64, p->block_size);
        pb->bs = p->block_size;
        const ifa_tensor *k = &p->key[0];
        if (k->rank == 3) {
            RETURN_ERROR_IF(k->shape[1] != pb->bs || k->shape[2] != pb->KVN * pb->D, IFA_ERR_INVALID_SHAPE,
                            "key_list: paged cache expects shape (num_blocks, %" PRId64 ", %" PRId64
                            ") (block_size, KVN*D), got %s",
                            pb->bs, pb->KVN * pb->D, IFA__SHAPE(k));
        } else if (k->rank == 4) {
            RETURN_ERROR_IF(pb->layout != IFA__LAYOUT_BNSD, IFA_ERR_INVALID_SHAPE,
                            "key_list: the 4-D paged cache (num_blocks, KVN, block_size, D) needs layout "
                            "BNSD, got layout %s (use (num_blocks, block_size, KVN*D))",
                            p->layout);
            RETURN_ERROR_IF(k->shape[1] != pb->KVN || k->shape[2] != pb->bs || k->shape[3] != pb->D,
                            IFA_ERR_INVALID_SHAPE,
                            "key_list: paged cache expects shape (num_blocks, %" PRId64 ", %" PRId64
                            ", %" PRId64 ") (KVN, block_size, D), got %s",
                            pb->KVN, pb->bs, pb->D, IFA__SHAPE(k));
        } else {
            return ifa__fail(IFA_ERR_INVALID_SHAPE,
                             "key_list: paged cache must be (num_blocks, block_size, KVN*D) or "
                             "(num_blocks, KVN, block_size, D), got %s",
                             IFA__SHAPE(k));
        }
        pb->num_blocks = k->shape[0];
        pb->form = IFA__KV_PAGED;
        return IFA_OK;
    }

    RETURN_ERROR_IF(ifa__present(&p->block_position), IFA_ERR_INVALID_ARGUMENT,
                    "block_position: needs block_table (a paged cache)");
    pb->form = IFA__KV_CONTIGUOUS;
    if (p->kv_count == 1) {
        RETURN_IF_ERROR(check_contiguous_kv(pb, &p->key[0], "key_list", pb->B, &pb->stored_len));
        pb->kv_count = 1;
    } else {
        RETURN_ERROR_IF(p->kv_count != pb->B, IFA_ERR_INVALID_SHAPE,
                        "key_list: a list must hold one tensor per batch (%" PRId64 "), got %d",
                        pb->B, (int)p->kv_count);
        for (int32_t i = 0; i < p->kv_count; i++) {
            int64_t len;
            snprintf(kname, sizeof kname, "key_list[%d]", (int)i);
            RETURN_IF_ERROR(check_contiguous_kv(pb, &p->key[i], kname, 1, &len));
        }
    }
    return IFA_OK;
}

static ifa_status check_lengths(const ifa_params *p, ifa__problem *pb) {
    const ifa_tensor *t = &p->actual_seq_lengths;
    RETURN_IF_ERROR(ifa__check_view(t, "actual_seq_lengths"));
    if (!ifa__present(t)) {
        pb->lengths = NULL;
        RETURN_ERROR_IF(pb->form != IFA__KV_CONTIGUOUS, IFA_ERR_INVALID_ARGUMENT,
                        "actual_seq_lengths: is required with a paged cache (block_table given)");
        return IFA_OK;
    }
    RETURN_ERROR_IF(t->dtype != IFA_DTYPE_INT32 && t->dtype != IFA_DTYPE_INT64, IFA_ERR_INVALID_DTYPE,
                    "actual_seq_lengths: dtype must be int32 or int64, got %s", ifa_dtype_name(t->dtype));
    RETURN_ERROR_IF(t->rank > 1, IFA_ERR_INVALID_SHAPE,
                    "actual_seq_lengths: must be 1-D, got shape %s", IFA__SHAPE(t));
    const int64_t count = ifa__numel(t);
    RETURN_ERROR_IF(count != 1 && count < pb->B, IFA_ERR_INVALID_SHAPE,
                    "actual_seq_lengths: expected 1 value or at least B = %" PRId64 " values, got %" PRId64,
                    pb->B, count);
    pb->lengths = (const char *)t->data;
    pb->lengths_dtype = t->dtype;
    pb->lengths_stride = t->rank == 1 ? stride_of(t, 0) : 0;
    pb->lengths_count = count;
    const int64_t used = count == 1 ? 1 : pb->B;
    for (int64_t i = 0; i < used; i++) {
        const int64_t len = ifa__seq_len(pb, i);
        RETURN_ERROR_IF(len < 0, IFA_ERR_INVALID_ARGUMENT,
                        "actual_seq_lengths[%" PRId64 "] = %" PRId64 " is negative", i, len);
    }
    return IFA_OK;
}

static ifa_status check_padding(const ifa_params *p, ifa__problem *pb) {
    const ifa_tensor *t = &p->kv_padding_size;
    RETURN_IF_ERROR(ifa__check_view(t, "kv_padding_size"));
    pb->pad = 0;
    if (!ifa__present(t)) return IFA_OK;
    RETURN_ERROR_IF(t->dtype != IFA_DTYPE_INT64 && t->dtype != IFA_DTYPE_INT32, IFA_ERR_INVALID_DTYPE,
                    "kv_padding_size: dtype must be int64, got %s", ifa_dtype_name(t->dtype));
    RETURN_ERROR_IF(ifa__numel(t) != 1, IFA_ERR_INVALID_SHAPE,
                    "kv_padding_size: expected one value, got shape %s", IFA__SHAPE(t));
    RETURN_ERROR_IF(pb->form != IFA__KV_CONTIGUOUS, IFA_ERR_INVALID_ARGUMENT,
                    "kv_padding_size: left padding needs a contiguous KV tensor, not a paged cache");
    RETURN_ERROR_IF(pb->kv_count != 1, IFA_ERR_INVALID_ARGUMENT,
                    "kv_padding_size: left padding needs a single KV tensor, not a list of %" PRId64,
                    pb->kv_count);
    RETURN_ERROR_IF(pb->lengths == NULL, IFA_ERR_INVALID_ARGUMENT,
                    "kv_padding_size: needs actual_seq_lengths");
    if (t->dtype == IFA_DTYPE_INT64)
        memcpy(&pb->pad, t->data, sizeof pb->pad);
    else
        pb->pad = ifa__load_i32((const char *)t->data);
    RETURN_ERROR_IF(pb->pad < 0, IFA_ERR_INVALID_ARGUMENT,
                    "kv_padding_size: must be >= 0, got %" PRId64, pb->pad);
    pb->form = IFA__KV_LEFT_PADDED;
    return IFA_OK;
}

static ifa_status check_pages(const ifa_params *p, ifa__problem *pb) {
    const ifa_tensor *bt = &p->block_table, *bp = &p->block_position;
    RETURN_IF_ERROR(ifa__check_view(bt, "block_table"));
    RETURN_IF_ERROR(ifa__check_view(bp, "block_position"));
    if (pb->form != IFA__KV_PAGED) return IFA_OK;
    RETURN_ERROR_IF(bt->dtype != IFA_DTYPE_INT32, IFA_ERR_INVALID_DTYPE,
                    "block_table: dtype must be int32, got %s", ifa_dtype_name(bt->dtype));
    RETURN_ERROR_IF(bt->rank != 2 || bt->shape[0] != pb->B, IFA_ERR_INVALID_SHAPE,
                    "block_table: expected shape (B, M) with B = %" PRId64 ", got %s", pb->B, IFA__SHAPE(bt));
    pb->M = bt->shape[1];
    pb->table = view3(bt, stride_of(bt, 0), stride_of(bt, 1), 0);
    if (ifa__present(bp)) {
        RETURN_ERROR_IF(bp->dtype != IFA_DTYPE_INT32, IFA_ERR_INVALID_DTYPE,
                        "block_position: dtype must be int32, got %s", ifa_dtype_name(bp->dtype));
        RETURN_ERROR_IF(bp->rank != 3 || bp->shape[0] != pb->B || bp->shape[1] != pb->KVN,
                        IFA_ERR_INVALID_SHAPE,
                        "block_position: expected shape (B, KVN, P) = (%" PRId64 ", %" PRId64
                        ", P), got %s",
                        pb->B, pb->KVN, IFA__SHAPE(bp));
        pb->P = bp->shape[2];
        pb->position = view3(bp, stride_of(bp, 0), stride_of(bp, 1), stride_of(bp, 2));
        pb->form = IFA__KV_PAGED_SPARSE;
    }
    return IFA_OK;
}

/* Per batch: the length fits the storage, every page index that will be read is in range, and
 * the largest position pos(t) that will be used (for the S' of pse, mask and per-token
 * antiquant) is found. */
static ifa_status check_batches(ifa__problem *pb, int64_t *max_pos) {
    *max_pos = -1;
    pb->max_len = 0;
    for (int64_t b = 0; b < pb->B; b++) {
        const int64_t L = ifa__seq_len(pb, b);
        pb->max_len = ifa__max64(pb->max_len, L);
        if (L == 0) continue;
        switch (pb->form) {
        case IFA__KV_CONTIGUOUS: {
            int64_t S = pb->stored_len;
            if (pb->kv_count > 1) {
                const ifa_tensor *k = &pb->params->key[b];
                S = pb->layout == IFA__LAYOUT_BNSD ? k->shape[2] : k->shape[1];
            }
            RETURN_ERROR_IF(L > S, IFA_ERR_INVALID_ARGUMENT,
                            "actual_seq_lengths[%" PRId64 "] = %" PRId64
                            " is longer than the KV tensor's %" PRId64 " tokens",
                            b, L, S);
            *max_pos = ifa__max64(*max_pos, L - 1);
            break;
        }
        case IFA__KV_LEFT_PADDED: {
            /* start = S - pad - L, computed without overflow: pad and L may each be near
             * INT64_MAX (a start < 0 leaves the batch without tokens, SPEC.md 4). */
            if (pb->pad <= pb->stored_len && L <= pb->stored_len - pb->pad)
                *max_pos = ifa__max64(*max_pos, pb->stored_len - pb->pad - 1);
            break;
        }
        case IFA__KV_PAGED: {
            /* A capacity bs * M beyond int64 holds every length. */
            int64_t cap;
            RETURN_ERROR_IF(!ifa__mul_overflow(pb->bs, pb->M, &cap) && L > cap, IFA_ERR_INVALID_ARGUMENT,
                            "actual_seq_lengths[%" PRId64 "] = %" PRId64
                            " is longer than block_table's %" PRId64 " pages of %" PRId64 " tokens",
                            b, L, pb->M, pb->bs);
            const int64_t pages = ifa__ceil_div(L, pb->bs);
            for (int64_t j = 0; j < pages; j++) {
                const int32_t blk = ifa__table_at(pb, b, j);
                RETURN_ERROR_IF(blk < 0 || blk >= pb->num_blocks, IFA_ERR_OUT_OF_RANGE,
                                "block_table[%" PRId64 "][%" PRId64 "] = %d is outside the key cache (%" PRId64
                                " blocks)",
                                b, j, (int)blk, pb->num_blocks);
            }
            *max_pos = ifa__max64(*max_pos, L - 1);
            break;
        }
        case IFA__KV_PAGED_SPARSE: {
            const int64_t pages = ifa__ceil_div(L, pb->bs);
            RETURN_ERROR_IF(pages > pb->P, IFA_ERR_INVALID_ARGUMENT,
                            "actual_seq_lengths[%" PRId64 "] = %" PRId64 " needs %" PRId64
                            " slots of block_size %" PRId64 " but block_position has P = %" PRId64,
                            b, L, pages, pb->bs, pb->P);
            for (int64_t h = 0; h < pb->KVN; h++) {
                for (int64_t j = 0; j < pages; j++) {
                    const int32_t idx = ifa__position_at(pb, b, h, j);
                    if (idx == IFA_BLOCK_UNSELECTED) continue;
                    RETURN_ERROR_IF(idx < 0 || idx >= pb->M, IFA_ERR_OUT_OF_RANGE,
                                    "block_position[%" PRId64 "][%" PRId64 "][%" PRId64
                                    "] = %d is outside block_table's %" PRId64
                                    " columns (and is not the unselected marker 0x7FFFFFFF)",
                                    b, h, j, (int)idx, pb->M);
                    const int32_t blk = ifa__table_at(pb, b, idx);
                    RETURN_ERROR_IF(blk < 0 || blk >= pb->num_blocks, IFA_ERR_OUT_OF_RANGE,
                                    "block_table[%" PRId64 "][%d] = %d is outside the key cache (%" PRId64
                                    " blocks), used by block_position[%" PRId64 "][%" PRId64 "][%" PRId64 "]",
                                    b, (int)idx, (int)blk, pb->num_blocks, b, h, j);
                    /* The slot's last token: (j + 1) * bs, or L for the last slot (where the
                     * product could overflow when bs is near 2^62). */
                    *max_pos = ifa__max64(*max_pos, (j + 1 >= pages ? L : (j + 1) * pb->bs) - 1);
                }
            }
            break;
        }
        }
    }
    return IFA_OK;
}

static ifa_status check_pse_mask(const ifa_params *p, ifa__problem *pb, int64_t max_pos) {
    const ifa_tensor *pse = &p->pse_shift, *mask = &p->attention_mask;
    RETURN_IF_ERROR(ifa__check_view(pse, "pse_shift"));
    RETURN_IF_ERROR(ifa__check_view(mask, "attention_mask"));
    pb->has_pse = ifa__present(pse);
    if (pb->has_pse) {
        const ifa_dtype want = pb->full_quant ? IFA_DTYPE_FLOAT16 : pb->q_dtype;
        RETURN_ERROR_IF(pse->dtype != want, IFA_ERR_INVALID_DTYPE,
                        "pse_shift: dtype must be %s (the query's%s), got %s", ifa_dtype_name(want),
                        pb->full_quant ? ", float16 for an int8 query" : "", ifa_dtype_name(pse->dtype));
        RETURN_ERROR_IF(pse->rank != 4 || (pse->shape[0] != pb->B && pse->shape[0] != 1) ||
                            pse->shape[1] != pb->N || pse->shape[2] != 1,
                        IFA_ERR_INVALID_SHAPE,
                        "pse_shift: expected shape (B, N, 1, S') or (1, N, 1, S') with B = %" PRId64
                        ", N = %" PRId64 ", got %s",
                        pb->B, pb->N, IFA__SHAPE(pse));
        RETURN_ERROR_IF(pse->shape[3] <= max_pos, IFA_ERR_INVALID_SHAPE,
                        "pse_shift: last dimension S' = %" PRId64 " must exceed the largest position used, %" PRId64,
                        pse->shape[3], max_pos);
        pb->pse = view3(pse, stride_of(pse, 0), stride_of(pse, 1), stride_of(pse, 3));
    }
    pb->has_mask = ifa__present(mask);
    if (pb->has_mask) {
        RETURN_ERROR_IF(mask->dtype != IFA_DTYPE_BOOL && mask->dtype != IFA_DTYPE_INT8 &&
                            mask->dtype != IFA_DTYPE_UINT8,
                        IFA_ERR_INVALID_DTYPE, "attention_mask: dtype must be bool, int8 or uint8, got %s",
                        ifa_dtype_name(mask->dtype));
        int ok = mask->rank >= 2 && mask->rank <= 4 && mask->shape[0] == pb->B;
        for (int32_t i = 1; ok && i < mask->rank - 1; i++) ok = mask->shape[i] == 1;
        RETURN_ERROR_IF(!ok, IFA_ERR_INVALID_SHAPE,
                        "attention_mask: expected shape (B, S'), (B, 1, S') or (B, 1, 1, S') with B = %" PRId64
                        ", got %s",
                        pb->B, IFA__SHAPE(mask));
        const int32_t last = mask->rank - 1;
        RETURN_ERROR_IF(mask->shape[last] <= max_pos, IFA_ERR_INVALID_SHAPE,
                        "attention_mask: last dimension S' = %" PRId64 " must exceed the largest position used, %" PRId64,
                        mask->shape[last], max_pos);
        pb->mask = view3(mask, stride_of(mask, 0), stride_of(mask, last), 0);
    }
    return IFA_OK;
}

/* Decodes a per-channel antiquant shape into (i, h, d) strides; 0 if the shape is not one. */
static int antiquant_channel_strides(const ifa__problem *pb, const ifa_tensor *t, ifa__view3 *v) {
    const int64_t KVN = pb->KVN, D = pb->D;
    const int64_t *s = t->shape;
    if (t->rank < 1 || s[0] != 2) return 0;
    int64_t st[IFA_MAX_RANK];
    for (int32_t i = 0; i < t->rank; i++) st[i] = stride_of(t, i);
    if (t->rank == 1) {
        *v = view3(t, st[0], 0, 0); /* per-tensor */
        return 1;
    }
    if (t->rank == 2 && s[1] == KVN * D) {
        *v = view3(t, st[0], head_stride(t, 1, KVN, D), st[1]);
        return 1;
    }
    if (t->rank == 3 && s[1] == KVN && s[2] == D) {
        *v = view3(t, st[0], st[1], st[2]);
        return 1;
    }
    if (t->rank == 4 && s[1] == KVN && s[2] == 1 && s[3] == D) {
        *v = view3(t, st[0], st[1], st[3]);
        return 1;
    }
    if (t->rank == 4 && s[1] == 1 && s[2] == KVN && s[3] == D) {
        *v = view3(t, st[0], st[2], st[3]);
        return 1;
    }
    return 0;
}

static ifa_status check_antiquant(const ifa_params *p, ifa__problem *pb, int64_t max_pos) {
    const ifa_tensor *sc = &p->antiquant_scale, *off = &p->antiquant_offset;
    RETURN_IF_ERROR(ifa__check_view(sc, "antiquant_scale"));
    RETURN_IF_ERROR(ifa__check_view(off, "antiquant_offset"));
    const int has_sc = ifa__present(sc), has_off = ifa__present(off);
    pb->aq = IFA__AQ_NONE;
    memset(&pb->aq_scale, 0, sizeof pb->aq_scale);
    memset(&pb->aq_offset, 0, sizeof pb->aq_offset);
    RETURN_ERROR_IF(has_off && !has_sc, IFA_ERR_INVALID_ARGUMENT,
                    "antiquant_offset: given without antiquant_scale");
    if (pb->kv_dtype != IFA_DTYPE_INT8) {
        RETURN_ERROR_IF(has_sc, IFA_ERR_INVALID_ARGUMENT,
                        "antiquant_scale: only for an int8 KV cache, but the KV dtype is %s",
                        ifa_dtype_name(pb->kv_dtype));
        return IFA_OK;
    }
    /* With an int8 query the scores use the raw int8 keys (SPEC.md 7), so the antiquant
     * parameters are not needed; given anyway, they are checked and ignored. */
    RETURN_ERROR_IF(!has_sc && !pb->full_quant, IFA_ERR_INVALID_ARGUMENT,
                    "antiquant_scale: is required with an int8 KV cache and a %s query",
                    ifa_dtype_name(pb->q_dtype));
    if (!has_sc) return IFA_OK;
    const int per_token = p->antiquant_mode == 1;
    if (per_token) {
        RETURN_ERROR_IF(sc->rank != 3, IFA_ERR_INVALID_SHAPE,
                        "antiquant_scale: per-token (antiquant_mode=1) expects shape (2, B, S'), got %s",
                        IFA__SHAPE(sc));
        RETURN_ERROR_IF(sc->dtype != IFA_DTYPE_FLOAT32, IFA_ERR_INVALID_DTYPE,
                        "antiquant_scale: per-token (antiquant_mode=1) parameters must be float32, got %s",
                        ifa_dtype_name(sc->dtype));
        RETURN_ERROR_IF(sc->shape[0] != 2 || sc->shape[1] != pb->B, IFA_ERR_INVALID_SHAPE,
                        "antiquant_scale: per-token (antiquant_mode=1) expects shape (2, B, S') with B = %" PRId64
                        ", got %s",
                        pb->B, IFA__SHAPE(sc));
        RETURN_ERROR_IF(sc->shape[2] <= max_pos, IFA_ERR_INVALID_SHAPE,
                        "antiquant_scale: per-token S' = %" PRId64 " must exceed the largest position used, %" PRId64,
                        sc->shape[2], max_pos);
        pb->aq_scale = view3(sc, stride_of(sc, 0), stride_of(sc, 1), stride_of(sc, 2));
    } else {
        const ifa_dtype qf = pb->full_quant ? IFA_DTYPE_FLOAT16 : pb->q_dtype;
        RETURN_ERROR_IF(sc->dtype != qf && sc->dtype != IFA_DTYPE_FLOAT32, IFA_ERR_INVALID_DTYPE,
                        "antiquant_scale: dtype must be %s or float32, got %s", ifa_dtype_name(qf),
                        ifa_dtype_name(sc->dtype));
        RETURN_ERROR_IF(!antiquant_channel_strides(pb, sc, &pb->aq_scale), IFA_ERR_INVALID_SHAPE,
                        "antiquant_scale: expected (2,), (2, KVN*D), (2, KVN, D), (2, KVN, 1, D) or "
                        "(2, 1, KVN, D) with KVN = %" PRId64 ", D = %" PRId64 " (per-token (2, B, S') "
                        "needs antiquant_mode=1), got %s",
                        pb->KVN, pb->D, IFA__SHAPE(sc));
    }
    if (has_off) {
        int same = off->rank == sc->rank;
        for (int32_t i = 0; same && i < sc->rank; i++) same = off->shape[i] == sc->shape[i];
        RETURN_ERROR_IF(!same, IFA_ERR_INVALID_SHAPE,
                        "antiquant_offset: shape %s must equal antiquant_scale's %s", IFA__SHAPE(off), IFA__SHAPE(sc));
        if (per_token) {
            RETURN_ERROR_IF(off->dtype != IFA_DTYPE_FLOAT32, IFA_ERR_INVALID_DTYPE,
                            "antiquant_offset: per-token parameters must be float32, got %s",
                            ifa_dtype_name(off->dtype));
            pb->aq_offset = view3(off, stride_of(off, 0), stride_of(off, 1), stride_of(off, 2));
        } else {
            const ifa_dtype qf = pb->full_quant ? IFA_DTYPE_FLOAT16 : pb->q_dtype;
            RETURN_ERROR_IF(off->dtype != qf && off->dtype != IFA_DTYPE_FLOAT32, IFA_ERR_INVALID_DTYPE,
                            "antiquant_offset: dtype must be %s or float32, got %s", ifa_dtype_name(qf),
                            ifa_dtype_name(off->dtype));
            antiquant_channel_strides(pb, off, &pb->aq_offset);
        }
    }
    if (!pb->full_quant) pb->aq = per_token ? IFA__AQ_PER_TOKEN : IFA__AQ_PER_CHANNEL;
    return IFA_OK;
}

static ifa_status check_one_scale(const ifa_tensor *t, const char *name, float *value) {
    RETURN_ERROR_IF(!ifa__present(t), IFA_ERR_INVALID_ARGUMENT,
                    "%s: is required with an int8 query (full quantisation)", name);
    RETURN_ERROR_IF(t->dtype != IFA_DTYPE_FLOAT32 && t->dtype != IFA_DTYPE_UINT64, IFA_ERR_INVALID_DTYPE,
                    "%s: dtype must be float32 or uint64 (float bits), got %s", name,
                    ifa_dtype_name(t->dtype));
    RETURN_ERROR_IF(ifa__numel(t) != 1, IFA_ERR_INVALID_SHAPE, "%s: expected one value, got shape %s", name,
                    IFA__SHAPE(t));
    *value = ifa__load_scale(t->data, t->dtype);
    return IFA_OK;
}

static ifa_status check_full_quant(const ifa_params *p, ifa__problem *pb) {
    const ifa_tensor *ts[3] = {&p->dequant_scale1, &p->quant_scale1, &p->dequant_scale2};
    const char *names[3] = {"dequant_scale1", "quant_scale1", "dequant_scale2"};
    float *values[3] = {&pb->dequant_scale1, &pb->quant_scale1, &pb->dequant_scale2};
    for (int i = 0; i < 3; i++) {
        RETURN_IF_ERROR(ifa__check_view(ts[i], names[i]));
        if (pb->full_quant) {
            RETURN_IF_ERROR(check_one_scale(ts[i], names[i], values[i]));
        } else {
            RETURN_ERROR_IF(ifa__present(ts[i]), IFA_ERR_INVALID_ARGUMENT,
                            "%s: only for an int8 query (full quantisation), but the query is %s", names[i],
                            ifa_dtype_name(pb->q_dtype));
        }
    }
    return IFA_OK;
}

/* quant_scale2 / quant_offset2: one value, or N*D values in one of SPEC.md 8's shapes. */
static ifa_status check_out_quant_param(const ifa__problem *pb, const ifa_tensor *t, const char *name,
                                        ifa__view3 *v) {
    const ifa_dtype want_alt = pb->q_dtype == IFA_DTYPE_BFLOAT16 ? IFA_DTYPE_BFLOAT16 : IFA_DTYPE_FLOAT32;
    RETURN_ERROR_IF(t->dtype != IFA_DTYPE_FLOAT32 && t->dtype != want_alt, IFA_ERR_INVALID_DTYPE,
                    "%s: dtype must be float32%s, got %s", name,
                    want_alt == IFA_DTYPE_BFLOAT16 ? " or bfloat16" : "", ifa_dtype_name(t->dtype));
    const int64_t numel = ifa__numel(t), N = pb->N, D = pb->D;
    if (numel == 1) {
        *v = view3(t, 0, 0, 0);
        return IFA_OK;
    }
    /* Drop leading ones, then the rest must be (N*D), (N, D) or (N, 1, D). */
    int32_t first = 0;
    while (first < t->rank - 1 && t->shape[first] == 1) first++;
    const int32_t rest = t->rank - first;
    const int64_t *s = t->shape + first;
    int64_t st[IFA_MAX_RANK] = {0};
    for (int32_t i = first; i < t->rank; i++) st[i - first] = stride_of(t, i);
    int ok = numel == N * D && t->rank <= 4;
    if (ok && rest == 1) {
        *v = view3(t, head_stride(t, first, N, D), st[0], 0);
    } else if (ok && rest == 2 && s[0] == N && s[1] == D) {
        *v = view3(t, st[0], st[1], 0);
    } else if (ok && rest == 3 && s[0] == N && s[1] == 1 && s[2] == D) {
        *v = view3(t, st[0], st[2], 0);
    } else {
        ok = 0;
    }
    RETURN_ERROR_IF(!ok, IFA_ERR_INVALID_SHAPE,
                    "%s: expected one value or N*D = %" PRId64 " values shaped (N*D,), (1, N*D), (N, D), "
                    "(N, 1, D), (1, N, 1, D), (1, 1, N*D), (1, N, D) or (1, 1, N, D), got %s",
                    name, N * D, IFA__SHAPE(t));
    return IFA_OK;
}

static ifa_status check_out_quant(const ifa_params *p, ifa__problem *pb) {
    RETURN_IF_ERROR(ifa__check_view(&p->quant_scale2, "quant_scale2"));
    RETURN_IF_ERROR(ifa__check_view(&p->quant_offset2, "quant_offset2"));
    pb->int8_out = ifa__present(&p->quant_scale2);
    memset(&pb->oq_offset, 0, sizeof pb->oq_offset);
    if (!pb->int8_out) {
        RETURN_ERROR_IF(ifa__present(&p->quant_offset2), IFA_ERR_INVALID_ARGUMENT,
                        "quant_offset2: given without quant_scale2");
        return IFA_OK;
    }
    RETURN_IF_ERROR(check_out_quant_param(pb, &p->quant_scale2, "quant_scale2", &pb->oq_scale));
    if (ifa__present(&p->quant_offset2))
        RETURN_IF_ERROR(check_out_quant_param(pb, &p->quant_offset2, "quant_offset2", &pb->oq_offset));
    return IFA_OK;
}

static ifa_status check_output(const ifa__problem *pb, const ifa_tensor *out, ifa__problem *pbw) {
    const ifa_tensor *q = &pb->params->query;
    RETURN_IF_ERROR(ifa__check_view(out, "out"));
    RETURN_ERROR_IF(out->dtype != pb->out_dtype, IFA_ERR_INVALID_DTYPE, "out: dtype must be %s, got %s",
                    ifa_dtype_name(pb->out_dtype), ifa_dtype_name(out->dtype));
    int same = out->rank == q->rank;
    for (int32_t i = 0; same && i < q->rank; i++) same = out->shape[i] == q->shape[i];
    RETURN_ERROR_IF(!same, IFA_ERR_INVALID_SHAPE, "out: shape must be the query's %s, got %s", IFA__SHAPE(q),
                    IFA__SHAPE(out));
    /* A zero stride (torch's expand) would make several threads write one element. */
    for (int32_t i = 0; i < out->rank; i++)
        RETURN_ERROR_IF(out->shape[i] > 1 && out->strides[i] == 0, IFA_ERR_INVALID_ARGUMENT,
                        "out: dimension %d of size %" PRId64 " has stride 0, so its elements overlap "
                        "(pass a writable tensor without broadcast dimensions)",
                        (int)i, out->shape[i]);
    if (pb->layout == IFA__LAYOUT_BSH)
        pbw->out = view3(out, stride_of(out, 0), head_stride(out, 2, pb->N, pb->D), stride_of(out, 2));
    else if (pb->layout == IFA__LAYOUT_BSND)
        pbw->out = view3(out, stride_of(out, 0), stride_of(out, 2), stride_of(out, 3));
    else
        pbw->out = view3(out, stride_of(out, 0), stride_of(out, 1), stride_of(out, 3));
    return IFA_OK;
}

ifa_status ifa__validate(const ifa_params *p, const ifa_tensor *out, ifa__problem *pb) {
    RETURN_ERROR_IF(p == NULL, IFA_ERR_NULL_POINTER, "params: is NULL");
    memset(pb, 0, sizeof *pb);
    pb->params = p;
    RETURN_IF_ERROR(check_scalars(p, pb));
    RETURN_IF_ERROR(check_query(p, pb));
    RETURN_IF_ERROR(check_kv(p, pb));
    RETURN_IF_ERROR(check_lengths(p, pb));
    RETURN_IF_ERROR(check_padding(p, pb));
    RETURN_IF_ERROR(check_pages(p, pb));
    int64_t max_pos;
    RETURN_IF_ERROR(check_batches(pb, &max_pos));
    RETURN_IF_ERROR(check_pse_mask(p, pb, max_pos));
    RETURN_IF_ERROR(check_antiquant(p, pb, max_pos));
    RETURN_IF_ERROR(check_full_quant(p, pb));
    RETURN_IF_ERROR(check_out_quant(p, pb));
    pb->out_dtype = pb->int8_out ? IFA_DTYPE_INT8 : pb->full_quant ? IFA_DTYPE_FLOAT16 : pb->q_dtype;
    if (out != NULL) RETURN_IF_ERROR(check_output(pb, out, pb));
    return IFA_OK;
}
