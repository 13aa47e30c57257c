/*
 * select_common.h - private helpers shared by page_summaries.c and select_blocks.c: checks of the
 * borrowed views, and readers of the integer inputs (block_table, lengths) with their strides.
 *
 * The block-selection entry points validate their own parameters (they are not IFA-V5 calls, so
 * validate.c does not know them), with the same rules and the same style of message as
 * validate.c: every view is checked on its own first (rank, dtype code, non-negative strides, a
 * byte extent that fits in int64), so later offset arithmetic cannot overflow.
 */
#ifndef IFA_SELECT_COMMON_H
#define IFA_SELECT_COMMON_H

#include <inttypes.h>
#include <stdio.h>
#include <string.h>

#include "../common.h"
#include "../convert.h"
#include "../views.h"

static inline int32_t ifa__sel_load_i32(const char *p) {
    int32_t v;
    memcpy(&v, p, sizeof v);
    return v;
}

/* A 1-D integer input with one value (broadcast) or at least B values. */
typedef struct ifa__sel_ints {
    const char *data;
    ifa_dtype dtype; /* int32 or int64 */
    int64_t stride, count;
} ifa__sel_ints;

static inline int64_t ifa__sel_int_at(const ifa__sel_ints *v, int64_t b) {
    const char *p = v->data + (v->count == 1 ? 0 : b) * v->stride * (int64_t)ifa_dtype_size(v->dtype);
    if (v->dtype == IFA_DTYPE_INT32) return ifa__sel_load_i32(p);
    int64_t x;
    memcpy(&x, p, sizeof x);
    return x;
}

/* Checks a required per-batch integer input (actual_seq_lengths, new_tokens): int32/int64, 0-D or
 * 1-D, 1 or >= B values, none negative. */
static inline ifa_status ifa__sel_check_ints(const ifa_tensor *t, const char *name, int64_t B,
                                             ifa__sel_ints *v) {
    RETURN_IF_ERROR(ifa__check_view(t, name));
    RETURN_ERROR_IF(!ifa__present(t), IFA_ERR_NULL_POINTER, "%s: is required", name);
    RETURN_ERROR_IF(t->dtype != IFA_DTYPE_INT32 && t->dtype != IFA_DTYPE_INT64, IFA_ERR_INVALID_DTYPE,
                    "%s: dtype must be int32 or int64, got %s", name, ifa_dtype_name(t->dtype));
    RETURN_ERROR_IF(t->rank > 1, IFA_ERR_INVALID_SHAPE, "%s: must be 1-D, got shape %s", name,
                    IFA__SHAPE(t));
    const int64_t count = ifa__numel(t);
    RETURN_ERROR_IF(count != 1 && count < B, IFA_ERR_INVALID_SHAPE,
                    "%s: expected 1 value or at least B = %" PRId64 " values, got %" PRId64, name, B,
                    count);
    v->data = (const char *)t->data;
    v->dtype = t->dtype;
    v->stride = t->rank == 1 ? t->strides[0] : 0;
    v->count = count;
    const int64_t used = count == 1 ? 1 : B;
    for (int64_t i = 0; i < used; i++) {
        const int64_t x = ifa__sel_int_at(v, i);
        RETURN_ERROR_IF(x < 0, IFA_ERR_INVALID_ARGUMENT, "%s[%" PRId64 "] = %" PRId64 " is negative",
                        name, i, x);
    }
    return IFA_OK;
}

/* block_table: int32 (B, M), element (b, j). */
typedef struct ifa__sel_table {
    const char *data;
    int64_t B, M, s0, s1;
} ifa__sel_table;

static inline int32_t ifa__sel_table_at(const ifa__sel_table *t, int64_t b, int64_t j) {
    return ifa__sel_load_i32(t->data + (b * t->s0 + j * t->s1) * 4);
}

static inline ifa_status ifa__sel_check_table(const ifa_tensor *t, ifa__sel_table *v) {
    RETURN_IF_ERROR(ifa__check_view(t, "block_table"));
    RETURN_ERROR_IF(t->dtype == IFA_DTYPE_NONE, IFA_ERR_NULL_POINTER, "block_table: is required");
    RETURN_ERROR_IF(t->dtype != IFA_DTYPE_INT32, IFA_ERR_INVALID_DTYPE,
                    "block_table: dtype must be int32, got %s", ifa_dtype_name(t->dtype));
    RETURN_ERROR_IF(t->rank != 2, IFA_ERR_INVALID_SHAPE, "block_table: expected shape (B, M), got %s",
                    IFA__SHAPE(t));
    v->data = (const char *)t->data;
    v->B = t->shape[0];
    v->M = t->shape[1];
    v->s0 = t->strides[0];
    v->s1 = t->strides[1];
    return IFA_OK;
}

/* Every batch fits its table row (ceil(L/bs) <= M) and every page it uses names a block in
 * [0, num_blocks). */
static inline ifa_status ifa__sel_check_pages(const ifa__sel_table *t, const ifa__sel_ints *lengths,
                                              int64_t bs, int64_t num_blocks, const char *what) {
    for (int64_t b = 0; b < t->B; b++) {
        const int64_t L = ifa__sel_int_at(lengths, b);
        const int64_t n = ifa__ceil_div(L, bs);
        RETURN_ERROR_IF(n > t->M, IFA_ERR_INVALID_ARGUMENT,
                        "actual_seq_lengths[%" PRId64 "] = %" PRId64 " needs %" PRId64
                        " pages of %" PRId64 " tokens but block_table has %" PRId64 " columns",
                        b, L, n, bs, t->M);
        for (int64_t j = 0; j < n; j++) {
            const int32_t blk = ifa__sel_table_at(t, b, j);
            RETURN_ERROR_IF(blk < 0 || blk >= num_blocks, IFA_ERR_OUT_OF_RANGE,
                            "block_table[%" PRId64 "][%" PRId64 "] = %d is outside the %s "
                            "(%" PRId64 " blocks)",
                            b, j, (int)blk, what, num_blocks);
        }
    }
    return IFA_OK;
}

#endif /* IFA_SELECT_COMMON_H */
