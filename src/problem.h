/*
 * problem.h - the validated, decoded form of one call ("the problem"), produced by validate.c
 * and read by everything after it.
 *
 * validate.c turns the caller's loose ifa_params (views, strings, optional tensors) into this
 * struct: sizes named B, N, KVN, G, D, bs as in SPEC.md, every tensor reduced to the handful of
 * element strides the math needs, and the rules of SPEC.md 2-10 already checked. After
 * ifa__validate() returns IFA_OK, every index the computation will use is known to be in range,
 * so the hot code contains no checks.
 */
#ifndef IFA_PROBLEM_H
#define IFA_PROBLEM_H

#include <stdint.h>

#include "common.h"

typedef enum ifa__layout { IFA__LAYOUT_BSH, IFA__LAYOUT_BSND, IFA__LAYOUT_BNSD } ifa__layout;

/* Which of SPEC.md 4's mappings turns a logical token t into a storage row. */
typedef enum ifa__kv_form {
    IFA__KV_CONTIGUOUS,   /* one tensor or a list of B tensors; row t                    */
    IFA__KV_LEFT_PADDED,  /* one tensor, rows start..start+L-1, start = S - pad - L       */
    IFA__KV_PAGED,        /* block_table[b][t / bs], slot t % bs                           */
    IFA__KV_PAGED_SPARSE  /* block_table[b][block_position[b][h][t / bs]], slot t % bs     */
} ifa__kv_form;

typedef enum ifa__antiquant {
    IFA__AQ_NONE,        /* float KV, or an int8 query (full quantisation uses raw int8) */
    IFA__AQ_PER_CHANNEL, /* per-tensor is per-channel with zero strides                  */
    IFA__AQ_PER_TOKEN
} ifa__antiquant;

/* Where element (i0, i1, i2) of a strided tensor lives: strides in elements, a zero stride
 * broadcasts. */
typedef struct ifa__view3 {
    const char *data;
    ifa_dtype dtype;
    int64_t s0, s1, s2;
} ifa__view3;

/* A K or V tensor seen as [outer][head][token][d]: outer is the batch (contiguous) or the
 * physical block (paged). For a list of per-batch tensors, each batch has its own view. */
typedef struct ifa__kv_view {
    const char *data;
    int64_t s_outer, s_head, s_tok, s_d; /* element strides */
} ifa__kv_view;

typedef struct ifa__problem {
    const ifa_params *params;
    int64_t B, N, KVN, G, D;
    ifa__layout layout;
    ifa__kv_form form;
    ifa_dtype q_dtype, kv_dtype, out_dtype;
    int full_quant;    /* int8 query: SPEC.md 7 */
    int inner_precise; /* 0 or 1 */
    float scale;

    /* query / output element (b, n, d) = data + b*s0 + n*s1 + d*s2 */
    ifa__view3 q, out;

    /* K/V: one view, or kv_count == B views for the list form (per-batch data/strides). */
    int64_t kv_count;
    int64_t elem_size; /* bytes per K/V element */
    int64_t stored_len; /* S of a single contiguous tensor */
    int64_t pad;        /* kv_padding_size */
    int64_t bs, num_blocks, M, P;

    /* actual_seq_lengths: NULL means full stored length. */
    const char *lengths;
    ifa_dtype lengths_dtype;
    int64_t lengths_stride, lengths_count;

    /* block_table (b, j) and block_position (b, h, j) */
    ifa__view3 table;    /* s0 batch, s1 column */
    ifa__view3 position; /* s0 batch, s1 KV head, s2 slot */

    /* pse_shift (b, n, pos): s0 is 0 when the pse has batch 1 */
    int has_pse;
    ifa__view3 pse;
    /* attention_mask (b, pos) */
    int has_mask;
    ifa__view3 mask;

    /* antiquant: per-channel (i, h, d) = s0, s1, s2; per-token (i, b, pos) = s0, s1, s2 */
    ifa__antiquant aq;
    ifa__view3 aq_scale, aq_offset; /* aq_offset.data NULL when absent */

    /* full quantisation scales (SPEC.md 7) */
    float dequant_scale1, quant_scale1, dequant_scale2;

    /* int8 output: channel (n, d) at n*s0 + d*s1 (zero strides for per-tensor) */
    int int8_out;
    ifa__view3 oq_scale, oq_offset; /* oq_offset.data NULL when absent */

    int64_t max_len; /* largest L[b] */
} ifa__problem;

/* Checks every rule of SPEC.md 2-10 and fills `pb`. `out` may be NULL (validation only). */
ifa_status ifa__validate(const ifa_params *params, const ifa_tensor *out, ifa__problem *pb);

/* SPEC.md 2, shared with block selection (select/): the layout string, and the query's shape for
 * a layout and N heads, giving B, D and the (b, n, d) element strides of the query. */
ifa_status ifa__decode_layout(const char *name, ifa__layout *layout);
ifa_status ifa__decode_query(const ifa_tensor *q, ifa__layout layout, int64_t N, int64_t *B, int64_t *D,
                             ifa__view3 *qv);

/* L[b], already validated. */
int64_t ifa__seq_len(const ifa__problem *pb, int64_t b);

/* Short helpers used by validation and the page resolver. */
static inline int32_t ifa__load_i32(const char *p) {
    int32_t v;
    __builtin_memcpy(&v, p, sizeof v);
    return v;
}
static inline int32_t ifa__table_at(const ifa__problem *pb, int64_t b, int64_t j) {
    return ifa__load_i32(pb->table.data + (b * pb->table.s0 + j * pb->table.s1) * 4);
}
static inline int32_t ifa__position_at(const ifa__problem *pb, int64_t b, int64_t h, int64_t j) {
    return ifa__load_i32(pb->position.data +
                         (b * pb->position.s0 + h * pb->position.s1 + j * pb->position.s2) * 4);
}

#endif /* IFA_PROBLEM_H */
