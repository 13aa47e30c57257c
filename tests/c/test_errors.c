/*
 * test_errors.c - every rule of SPEC 2-10 that makes a call an error.
 *
 * Each test starts from a valid random case, breaks exactly one rule, and checks what SPEC 10
 * and ifa.h promise: the status is not IFA_OK and of a sensible class (IFA_ERR_INVALID_DTYPE
 * exactly for dtype problems, which Python turns into TypeError; never that class for a value or
 * shape problem), ifa_validate() agrees, ifa_last_error() names the parameter, the output buffer
 * is byte for byte unchanged (it holds a canary), and no input was modified.
 */
#include <stdio.h>
#include <string.h>

#include "fixture.h"
#include "testing.h"

typedef enum expect {
    E_VALUE, /* a value or shape problem: any error but INVALID_DTYPE (and no OOM/UNSUPPORTED) */
    E_DTYPE, /* exactly IFA_ERR_INVALID_DTYPE */
    E_ANY,   /* any error but OOM/UNSUPPORTED: the SPEC leaves the class open */
    E_NULL   /* IFA_ERR_NULL_POINTER or IFA_ERR_INVALID_ARGUMENT */
} expect;

typedef enum base {
    B_F16,     /* contiguous BSH float16, B 3, N 4, KVN 2, D 16 */
    B_PAGED,   /* paged 3-D, block_size 4 */
    B_POS,     /* paged with block_position, no holes */
    B_PAGED4,  /* paged 4-D, BNSD */
    B_INT8KV,  /* int8 KV, per-channel antiquant with offset */
    B_TOKEN,   /* int8 KV, per-token antiquant */
    B_FULLQ,   /* int8 query, full quantisation */
    B_PAD,     /* left padding */
    B_LIST,    /* list of per-batch tensors */
    B_QOUT,    /* per-channel int8 output with offset */
    B_PSEMASK  /* pse (B, N, 1, S') and mask (B, S') */
} base;

static fx_arena *g_arena;
static rng g_rng;

/* A fresh dense tensor with random contents, for a mutation to put in place of a valid one. */
static ifa_tensor mk(ifa_dtype dt, int32_t rank, int64_t d0, int64_t d1, int64_t d2, int64_t d3)
{
    const int64_t shape[4] = { d0, d1, d2, d3 };
    ifa_tensor t = fx_dense(g_arena, dt, rank, shape);
    if (dt == IFA_DTYPE_FLOAT16 || dt == IFA_DTYPE_BFLOAT16 || dt == IFA_DTYPE_FLOAT32 || dt == IFA_DTYPE_FLOAT64)
        fx_fill(&t, &g_rng, 0.1, 1.0);
    else
        fx_fill(&t, &g_rng, 0, 1);
    return t;
}

/* Same contents, other dtype (the values converted). */
static ifa_tensor redtype(const ifa_tensor *t, ifa_dtype dt)
{
    ifa_tensor r = fx_dense(g_arena, dt, t->rank, t->shape);
    int64_t idx[IFA_MAX_RANK] = { 0 };
    if (gd_numel(t) > 0) {
        do fx_set(&r, idx, gd_load(t, idx));
        while (fx_next_index(t, idx));
    }
    return r;
}

/* Same dtype, another shape, contents copied where they fit (and small values elsewhere). */
static ifa_tensor reshape(const ifa_tensor *t, int32_t rank, int64_t d0, int64_t d1, int64_t d2, int64_t d3)
{
    ifa_tensor r = mk(t->dtype, rank, d0, d1, d2, d3);
    const int64_t n = gd_numel(&r) < gd_numel(t) ? gd_numel(&r) : gd_numel(t);
    for (int64_t i = 0; i < n; i++) fx_set_flat(&r, i, gd_load_flat(t, i));
    return r;
}

static fx_case *build_base(base which, uint64_t seed)
{
    fx_config c = fx_default_config();
    c.q_dtype = c.kv_dtype = IFA_DTYPE_FLOAT16;
    c.B = 3, c.N = 4, c.KVN = 2, c.D = 16;
    c.min_len = 9, c.max_len = 16;
    c.block_size = 4;
    c.hole_percent = 0;
    switch (which) {
    case B_PAGED: c.form = FX_PAGED; break;
    case B_POS: c.form = FX_PAGED_POS; break;
    case B_PAGED4: c.form = FX_PAGED, c.cache4d = 1, c.layout = "BNSD"; break;
    case B_INT8KV:
        c.kv_dtype = IFA_DTYPE_INT8, c.antiquant = FX_AQ_FLAT, c.antiquant_offset = 1;
        break;
    case B_TOKEN: c.kv_dtype = IFA_DTYPE_INT8, c.antiquant = FX_AQ_TOKEN; break;
    case B_FULLQ: c.q_dtype = c.kv_dtype = IFA_DTYPE_INT8; break;
    case B_PAD: c.form = FX_LEFTPAD, c.pad = 2; break;
    case B_LIST: c.form = FX_LIST; break;
    case B_QOUT: c.out_quant = 2, c.out_quant_offset = 1; break;
    case B_PSEMASK: c.pse = 1, c.mask_rank = 2; break;
    default: break;
    }
    return fx_build(g_arena, seed, &c);
}

/* ---- The mutations ---------------------------------------------------------------------------- */

#define MUT(name) static void name(fx_case *c)
#define P (&c->p)
#define NQ (c->p.num_heads)
#define BQ (c->p.query.shape[0])
#define KVNQ (c->p.key_num_heads > 0 ? c->p.key_num_heads : c->p.num_heads)
#define DQ ((int64_t)16)

MUT(m_layout_unknown) { P->layout = "BHS"; }
MUT(m_layout_lowercase) { P->layout = "bsh"; }
MUT(m_layout_null) { P->layout = NULL; }
MUT(m_layout_mismatch) { P->layout = "BSND"; } /* the query is (B, 1, N*D): rank 3 */
MUT(m_num_heads_zero) { P->num_heads = 0; }
MUT(m_num_heads_negative) { P->num_heads = -4; }
MUT(m_heads_not_divisible) { P->key_num_heads = 3; }
MUT(m_kvn_above_n) { P->key_num_heads = 8; }
MUT(m_kvn_negative) { P->key_num_heads = -2; }
MUT(m_query_s2) { P->query = mk(P->query.dtype, 3, BQ, 2, NQ * DQ, 0); }
MUT(m_query_s2_bnsd) { P->query = mk(P->query.dtype, 4, BQ, NQ, 2, DQ); }
MUT(m_query_hidden) { P->query = mk(P->query.dtype, 3, BQ, 1, NQ * DQ + 1, 0); }
MUT(m_query_rank) { P->query = mk(P->query.dtype, 4, BQ, 1, NQ, DQ); }
MUT(m_query_batch) { P->query = mk(P->query.dtype, 3, BQ + 1, 1, NQ * DQ, 0); }
MUT(m_query_int32) { P->query = redtype(&P->query, IFA_DTYPE_INT32); }
MUT(m_query_float64) { P->query = redtype(&P->query, IFA_DTYPE_FLOAT64); }
MUT(m_query_uint8) { P->query = redtype(&P->query, IFA_DTYPE_UINT8); }
MUT(m_query_absent) { P->query = ifa_tensor_none(); }
MUT(m_query_null_data) { P->query.data = NULL; }
MUT(m_query_negative_stride) { P->query.strides[1] = -1; }
MUT(m_query_rank9) { P->query.rank = IFA_MAX_RANK + 1; }
/* A query with no element is an absent query (SPEC 1), and the query is required. */
MUT(m_query_d0) { P->query.shape[2] = 0; }
MUT(m_query_b0) { P->query.shape[0] = 0; }
MUT(m_value_shape)
{
    const ifa_tensor *k = &c->key[0];
    c->value[0] = reshape(k, 3, k->shape[0], k->shape[1] + 1, k->shape[2], 0);
}
MUT(m_value_dtype) { c->value[0] = redtype(&c->value[0], IFA_DTYPE_FLOAT32); }
MUT(m_kv_float32)
{
    c->key[0] = redtype(&c->key[0], IFA_DTYPE_FLOAT32);
    c->value[0] = redtype(&c->value[0], IFA_DTYPE_FLOAT32);
}
MUT(m_kv_bf16)
{
    c->key[0] = redtype(&c->key[0], IFA_DTYPE_BFLOAT16);
    c->value[0] = redtype(&c->value[0], IFA_DTYPE_BFLOAT16);
}
MUT(m_kv_batch)
{
    const ifa_tensor *k = &c->key[0];
    c->key[0] = reshape(k, 3, k->shape[0] + 1, k->shape[1], k->shape[2], 0);
    c->value[0] = reshape(k, 3, k->shape[0] + 1, k->shape[1], k->shape[2], 0);
}
MUT(m_kv_hidden)
{
    const ifa_tensor *k = &c->key[0];
    c->key[0] = reshape(k, 3, k->shape[0], k->shape[1], k->shape[2] + DQ, 0);
    c->value[0] = reshape(k, 3, k->shape[0], k->shape[1], k->shape[2] + DQ, 0);
}
MUT(m_key_null) { P->key = NULL; }
MUT(m_value_null) { P->value = NULL; }
MUT(m_kv_count_zero) { P->kv_count = 0; }
MUT(m_kv_overflow)
{
    /* A shape whose element count overflows int64; lengths stay small, so only a size check
     * can catch it (SPEC 10: sizes are checked for integer overflow). */
    c->key[0].shape[1] = (int64_t)1 << 40;
    c->key[0].shape[2] = (int64_t)1 << 30;
    c->value[0].shape[1] = (int64_t)1 << 40;
    c->value[0].shape[2] = (int64_t)1 << 30;
}
MUT(m_int8kv_no_scale)
{
    P->antiquant_scale = ifa_tensor_none();
    P->antiquant_offset = ifa_tensor_none();
}
MUT(m_antiquant_float_kv) { P->antiquant_scale = mk(IFA_DTYPE_FLOAT16, 2, 2, KVNQ * DQ, 0, 0); }
MUT(m_antiquant_offset_shape) { P->antiquant_offset = mk(P->antiquant_scale.dtype, 3, 2, KVNQ, DQ, 0); }
MUT(m_antiquant_first_dim) { P->antiquant_scale = mk(P->antiquant_scale.dtype, 2, 3, KVNQ * DQ, 0, 0), P->antiquant_offset = ifa_tensor_none(); }
MUT(m_antiquant_channels) { P->antiquant_scale = mk(P->antiquant_scale.dtype, 2, 2, KVNQ * DQ + 1, 0, 0), P->antiquant_offset = ifa_tensor_none(); }
MUT(m_antiquant_4d) { P->antiquant_scale = mk(P->antiquant_scale.dtype, 4, 2, KVNQ, 2, DQ), P->antiquant_offset = ifa_tensor_none(); }
MUT(m_antiquant_int32)
{
    P->antiquant_scale = redtype(&P->antiquant_scale, IFA_DTYPE_INT32);
    P->antiquant_offset = redtype(&P->antiquant_offset, IFA_DTYPE_INT32);
}
MUT(m_antiquant_bf16_for_f16)
{
    P->antiquant_scale = redtype(&P->antiquant_scale, IFA_DTYPE_BFLOAT16);
    P->antiquant_offset = redtype(&P->antiquant_offset, IFA_DTYPE_BFLOAT16);
}
MUT(m_antiquant_mode_2) { P->antiquant_mode = 2; }
MUT(m_antiquant_mode_negative) { P->antiquant_mode = -1; }
MUT(m_antiquant_mode1_channel_shape) { P->antiquant_mode = 1; }
MUT(m_per_token_f16) { P->antiquant_scale = redtype(&P->antiquant_scale, IFA_DTYPE_FLOAT16); }
MUT(m_per_token_short) { P->antiquant_scale = mk(IFA_DTYPE_FLOAT32, 3, 2, BQ, 2, 0); }
MUT(m_per_token_batch) { P->antiquant_scale = mk(IFA_DTYPE_FLOAT32, 3, 2, BQ - 1, c->sprime, 0); }
MUT(m_paged_no_lens) { P->actual_seq_lengths = ifa_tensor_none(); }
MUT(m_block_size_zero) { P->block_size = 0; }
MUT(m_block_size_negative) { P->block_size = -4; }
MUT(m_block_size_mismatch) { P->block_size = 5; }
MUT(m_cache4d_bsh)
{
    const ifa_tensor *k = &c->key[0]; /* (nb, bs, KVN*D) */
    c->key[0] = mk(k->dtype, 4, k->shape[0], KVNQ, k->shape[1], DQ);
    c->value[0] = mk(k->dtype, 4, k->shape[0], KVNQ, k->shape[1], DQ);
}
MUT(m_cache3d_hidden)
{
    const ifa_tensor *k = &c->key[0];
    c->key[0] = mk(k->dtype, 3, k->shape[0], k->shape[1], k->shape[2] + 1, 0);
    c->value[0] = mk(k->dtype, 3, k->shape[0], k->shape[1], k->shape[2] + 1, 0);
}
MUT(m_block_table_int64) { P->block_table = redtype(&P->block_table, IFA_DTYPE_INT64); }
MUT(m_block_table_rank1) { P->block_table = reshape(&P->block_table, 1, gd_numel(&P->block_table), 0, 0, 0); }
MUT(m_block_table_rows) { P->block_table = reshape(&P->block_table, 2, BQ - 1, P->block_table.shape[1], 0, 0); }
static int64_t num_blocks(const fx_case *c) { return c->key[0].shape[0]; }
MUT(m_block_table_entry_big)
{
    const int64_t idx[2] = { 1, 2 };
    fx_set(&P->block_table, idx, (double)(num_blocks(c) + 7));
}
MUT(m_block_table_entry_negative)
{
    const int64_t idx[2] = { 1, 0 };
    fx_set(&P->block_table, idx, -1.0);
}
MUT(m_block_table_entry_sentinel)
{
    const int64_t idx[2] = { 2, 1 };
    fx_set(&P->block_table, idx, (double)IFA_BLOCK_UNSELECTED);
}
MUT(m_lens_beyond_table)
{
    fx_set_flat(&P->actual_seq_lengths, 0, (double)(P->block_size * P->block_table.shape[1] + 1));
}
MUT(m_block_position_int64) { P->block_position = redtype(&P->block_position, IFA_DTYPE_INT64); }
MUT(m_block_position_heads)
{
    const ifa_tensor *bp = &P->block_position;
    P->block_position = reshape(bp, 3, bp->shape[0], bp->shape[1] + 1, bp->shape[2], 0);
}
MUT(m_block_position_rank2)
{
    const ifa_tensor *bp = &P->block_position;
    P->block_position = reshape(bp, 2, bp->shape[0], bp->shape[1] * bp->shape[2], 0, 0);
}
MUT(m_block_position_entry_m)
{
    const int64_t idx[3] = { 1, 1, 0 };
    fx_set(&P->block_position, idx, (double)P->block_table.shape[1]);
}
MUT(m_block_position_entry_negative)
{
    const int64_t idx[3] = { 2, 0, 1 };
    fx_set(&P->block_position, idx, -1.0);
}
MUT(m_block_position_entry_near_sentinel)
{
    const int64_t idx[3] = { 0, 1, 0 };
    fx_set(&P->block_position, idx, (double)(IFA_BLOCK_UNSELECTED - 1));
}
MUT(m_block_position_too_few_slots)
{
    /* One slot per head, while every batch needs at least ceil(9/4) = 3. */
    const int64_t shape[3] = { BQ, KVNQ, 1 };
    P->block_position = fx_dense(g_arena, IFA_DTYPE_INT32, 3, shape);
}
MUT(m_block_position_to_garbage_column)
{
    /* The slot is in range, but the table entry it selects is not a block. */
    const int64_t pidx[3] = { 1, 0, 0 };
    const int64_t col = (int64_t)gd_load(&P->block_position, pidx);
    const int64_t tidx[2] = { 1, col };
    fx_set(&P->block_table, tidx, (double)(num_blocks(c) + 3));
}
MUT(m_block_position_without_table)
{
    const int64_t shape[3] = { BQ, KVNQ, 4 };
    P->block_position = fx_dense(g_arena, IFA_DTYPE_INT32, 3, shape);
}
MUT(m_lens_int64_max)
{
    /* Written directly: INT64_MAX has no exact double. Sizes derived from it (ceil(L/bs),
     * start = S - pad - L) must not overflow inside the library. */
    const int64_t big = INT64_MAX;
    memcpy((int64_t *)P->actual_seq_lengths.data + P->actual_seq_lengths.strides[0], &big, sizeof big);
}
MUT(m_block_size_huge) { P->block_size = INT64_MAX; }
MUT(m_query_stride_overflow) { P->query.strides[2] = (int64_t)1 << 62; }
MUT(m_heads_huge) { P->num_heads = (int64_t)1 << 62, P->key_num_heads = (int64_t)1 << 61; }
MUT(m_lens_negative) { fx_set_flat(&P->actual_seq_lengths, 1, -1.0); }
MUT(m_lens_two_of_three) { P->actual_seq_lengths = reshape(&P->actual_seq_lengths, 1, 2, 0, 0, 0); }
MUT(m_lens_float) { P->actual_seq_lengths = redtype(&P->actual_seq_lengths, IFA_DTYPE_FLOAT32); }
MUT(m_lens_rank2) { P->actual_seq_lengths = reshape(&P->actual_seq_lengths, 2, 1, BQ, 0, 0); }
MUT(m_lens_beyond_stored) { fx_set_flat(&P->actual_seq_lengths, 2, (double)(c->stored[2] + 1)); }
MUT(m_pad_negative)
{
    const double v = -1;
    P->kv_padding_size = fx_values(g_arena, IFA_DTYPE_INT64, 1, &v);
}
MUT(m_pad_with_paged_or_list)
{
    const double v = 1;
    P->kv_padding_size = fx_values(g_arena, IFA_DTYPE_INT64, 1, &v);
}
MUT(m_pad_without_lens) { P->actual_seq_lengths = ifa_tensor_none(); }
MUT(m_pad_float) { P->kv_padding_size = redtype(&P->kv_padding_size, IFA_DTYPE_FLOAT32); }
MUT(m_pad_two_values)
{
    const double v[2] = { 2, 2 };
    P->kv_padding_size = fx_values(g_arena, IFA_DTYPE_INT64, 2, v);
}
MUT(m_pse_float32) { P->pse_shift = redtype(&P->pse_shift, IFA_DTYPE_FLOAT32); }
MUT(m_pse_heads) { P->pse_shift = mk(P->pse_shift.dtype, 4, BQ, NQ + 1, 1, c->sprime); }
MUT(m_pse_dim2) { P->pse_shift = mk(P->pse_shift.dtype, 4, BQ, NQ, 2, c->sprime); }
MUT(m_pse_rank3) { P->pse_shift = mk(P->pse_shift.dtype, 3, BQ, NQ, c->sprime, 0); }
MUT(m_pse_batch) { P->pse_shift = mk(P->pse_shift.dtype, 4, BQ - 1, NQ, 1, c->sprime); }
static int64_t max_len(const fx_case *c)
{
    int64_t m = 0;
    for (int64_t b = 0; b < BQ; b++) m = c->L[b] > m ? c->L[b] : m;
    return m;
}
MUT(m_pse_short) { P->pse_shift = mk(P->query.dtype, 4, BQ, NQ, 1, max_len(c) - 1); }
MUT(m_mask_float16) { P->attention_mask = redtype(&P->attention_mask, IFA_DTYPE_FLOAT16); }
MUT(m_mask_int32) { P->attention_mask = redtype(&P->attention_mask, IFA_DTYPE_INT32); }
MUT(m_mask_rank1) { P->attention_mask = mk(IFA_DTYPE_BOOL, 1, c->sprime, 0, 0, 0); }
MUT(m_mask_rank5)
{
    const int64_t shape[5] = { BQ, 1, 1, 1, c->sprime };
    P->attention_mask = fx_dense(g_arena, IFA_DTYPE_BOOL, 5, shape);
}
MUT(m_mask_dim1) { P->attention_mask = mk(IFA_DTYPE_BOOL, 3, BQ, 2, c->sprime, 0); }
MUT(m_mask_batch) { P->attention_mask = mk(IFA_DTYPE_BOOL, 2, BQ - 1, c->sprime, 0, 0); }
MUT(m_mask_short) { P->attention_mask = mk(IFA_DTYPE_BOOL, 2, BQ, max_len(c) - 1, 0, 0); }
MUT(m_no_dequant_scale1) { P->dequant_scale1 = ifa_tensor_none(); }
MUT(m_no_quant_scale1) { P->quant_scale1 = ifa_tensor_none(); }
MUT(m_no_dequant_scale2) { P->dequant_scale2 = ifa_tensor_none(); }
static ifa_tensor one_scale(void)
{
    const double v = 0.5;
    return fx_values(g_arena, IFA_DTYPE_FLOAT32, 1, &v);
}
MUT(m_float_query_dequant_scale1) { P->dequant_scale1 = one_scale(); }
MUT(m_float_query_quant_scale1) { P->quant_scale1 = one_scale(); }
MUT(m_float_query_dequant_scale2) { P->dequant_scale2 = one_scale(); }
MUT(m_quant_scale1_two_values) { P->quant_scale1 = mk(IFA_DTYPE_FLOAT32, 1, 2, 0, 0, 0); }
MUT(m_dequant_scale1_float16) { P->dequant_scale1 = redtype(&P->dequant_scale1, IFA_DTYPE_FLOAT16); }
MUT(m_fullq_float_kv)
{
    c->key[0] = redtype(&c->key[0], IFA_DTYPE_FLOAT16);
    c->value[0] = redtype(&c->value[0], IFA_DTYPE_FLOAT16);
}
MUT(m_quant_scale2_three) { P->quant_scale2 = mk(IFA_DTYPE_FLOAT32, 1, 3, 0, 0, 0), P->quant_offset2 = ifa_tensor_none(); }
MUT(m_quant_scale2_float16) { P->quant_scale2 = redtype(&P->quant_scale2, IFA_DTYPE_FLOAT16); }
MUT(m_quant_scale2_bf16_for_f16) { P->quant_scale2 = redtype(&P->quant_scale2, IFA_DTYPE_BFLOAT16); }
MUT(m_quant_offset2_alone) { P->quant_scale2 = ifa_tensor_none(); }
MUT(m_quant_offset2_three) { P->quant_offset2 = mk(P->quant_offset2.dtype, 1, 3, 0, 0, 0); }
MUT(m_inner_precise_2) { P->inner_precise = 2; }
MUT(m_inner_precise_negative) { P->inner_precise = -1; }
MUT(m_out_shape) { c->out = mk(c->out.dtype, 3, BQ, 1, NQ * DQ + 1, 0); }
MUT(m_out_rank) { c->out = mk(c->out.dtype, 4, BQ, 1, NQ, DQ); }
MUT(m_out_float32) { c->out = mk(IFA_DTYPE_FLOAT32, c->out.rank, c->out.shape[0], c->out.shape[1], c->out.shape[2], c->out.shape[3]); }
MUT(m_out_float16_for_int8) { c->out = mk(IFA_DTYPE_FLOAT16, c->out.rank, c->out.shape[0], c->out.shape[1], c->out.shape[2], c->out.shape[3]); }
MUT(m_out_null_data) { c->out.data = NULL; }
MUT(m_out_negative_stride) { c->out.strides[0] = -1; }
MUT(m_list_count) { P->kv_count = (int32_t)(BQ - 1); }
MUT(m_list_member_batch2)
{
    const ifa_tensor *k = &c->key[1];
    c->key[1] = mk(k->dtype, 3, 2, k->shape[1], k->shape[2], 0);
    c->value[1] = mk(k->dtype, 3, 2, k->shape[1], k->shape[2], 0);
}
MUT(m_list_member_hidden)
{
    const ifa_tensor *k = &c->key[2];
    c->key[2] = mk(k->dtype, 3, 1, k->shape[1], k->shape[2] + DQ, 0);
    c->value[2] = mk(k->dtype, 3, 1, k->shape[1], k->shape[2] + DQ, 0);
}
MUT(m_list_member_dtype)
{
    c->key[1] = redtype(&c->key[1], IFA_DTYPE_FLOAT32);
    c->value[1] = redtype(&c->value[1], IFA_DTYPE_FLOAT32);
}

typedef struct err_case {
    const char *name;
    base base;
    void (*mutate)(fx_case *c);
    expect kind;
    const char *names; /* '|'-separated: the message must contain one of them */
} err_case;

static const err_case k_cases[] = {
    /* SPEC 2: query and layout. */
    { "layout unknown", B_F16, m_layout_unknown, E_VALUE, "layout" },
    { "layout lower case", B_F16, m_layout_lowercase, E_VALUE, "layout" },
    { "layout NULL", B_F16, m_layout_null, E_ANY, "layout" },
    { "layout not matching the query rank", B_F16, m_layout_mismatch, E_VALUE, "query|layout" },
    { "num_heads 0", B_F16, m_num_heads_zero, E_VALUE, "num_heads" },
    { "num_heads negative", B_F16, m_num_heads_negative, E_VALUE, "num_heads" },
    { "N not divisible by KVN", B_F16, m_heads_not_divisible, E_VALUE, "num_heads" },
    { "KVN > N", B_F16, m_kvn_above_n, E_VALUE, "num_heads" },
    { "KVN negative", B_F16, m_kvn_negative, E_VALUE, "num_heads" },
    { "query S = 2 (BSH)", B_F16, m_query_s2, E_VALUE, "query" },
    { "query S = 2 (BNSD)", B_PAGED4, m_query_s2_bnsd, E_VALUE, "query" },
    { "query H not N*D", B_F16, m_query_hidden, E_VALUE, "query" },
    { "query rank 4 with BSH", B_F16, m_query_rank, E_VALUE, "query" },
    { "query batch differs from KV", B_F16, m_query_batch, E_VALUE, "query|key|actual_seq_lengths" },
    { "query int32", B_F16, m_query_int32, E_DTYPE, "query" },
    { "query float64", B_F16, m_query_float64, E_DTYPE, "query" },
    { "query uint8", B_F16, m_query_uint8, E_DTYPE, "query" },
    { "query absent", B_F16, m_query_absent, E_ANY, "query" },
    { "query data NULL", B_F16, m_query_null_data, E_ANY, "query" },
    { "query negative stride", B_F16, m_query_negative_stride, E_ANY, "query" },
    { "query rank 9", B_F16, m_query_rank9, E_ANY, "query" },
    { "query with D = 0", B_F16, m_query_d0, E_ANY, "query" },
    { "query with B = 0", B_F16, m_query_b0, E_ANY, "query" },
    /* SPEC 3: KV cache. */
    { "value shape differs from key", B_F16, m_value_shape, E_VALUE, "value|key" },
    { "value dtype differs from key", B_F16, m_value_dtype, E_DTYPE, "value|key" },
    { "KV float32 with a float16 query", B_F16, m_kv_float32, E_DTYPE, "key" },
    { "KV bfloat16 with a float16 query", B_F16, m_kv_bf16, E_DTYPE, "key" },
    { "KV batch differs", B_F16, m_kv_batch, E_VALUE, "key" },
    { "KV hidden not KVN*D", B_F16, m_kv_hidden, E_VALUE, "key" },
    { "key NULL", B_F16, m_key_null, E_ANY, "key" },
    { "value NULL", B_F16, m_value_null, E_ANY, "value" },
    { "kv_count 0", B_F16, m_kv_count_zero, E_ANY, "key|kv_count" },
    { "list count != B", B_LIST, m_list_count, E_VALUE, "key|kv_count" },
    { "list member with batch 2", B_LIST, m_list_member_batch2, E_VALUE, "key" },
    { "list member with other hidden size", B_LIST, m_list_member_hidden, E_VALUE, "key" },
    { "list member with other dtype", B_LIST, m_list_member_dtype, E_DTYPE, "key" },
    /* SPEC 6: antiquant. */
    { "int8 KV without antiquant_scale", B_INT8KV, m_int8kv_no_scale, E_ANY, "antiquant_scale" },
    { "antiquant with float KV", B_F16, m_antiquant_float_kv, E_ANY, "antiquant" },
    { "antiquant_offset shape != scale shape", B_INT8KV, m_antiquant_offset_shape, E_VALUE, "antiquant_offset" },
    { "antiquant first dim 3", B_INT8KV, m_antiquant_first_dim, E_VALUE, "antiquant_scale" },
    { "antiquant KVN*D+1 channels", B_INT8KV, m_antiquant_channels, E_VALUE, "antiquant_scale" },
    { "antiquant (2,KVN,2,D)", B_INT8KV, m_antiquant_4d, E_VALUE, "antiquant_scale" },
    { "antiquant int32", B_INT8KV, m_antiquant_int32, E_DTYPE, "antiquant" },
    { "antiquant bfloat16 with a float16 query", B_INT8KV, m_antiquant_bf16_for_f16, E_DTYPE, "antiquant" },
    { "antiquant_mode 2", B_INT8KV, m_antiquant_mode_2, E_VALUE, "antiquant_mode" },
    { "antiquant_mode -1", B_INT8KV, m_antiquant_mode_negative, E_VALUE, "antiquant_mode" },
    /* SPEC 6: antiquant_mode 1 means per-token, float32 (2, B, S'); a per-channel tensor with
     * mode 1 is a bad antiquant shape, not a silent switch back to per-channel. */
    { "antiquant_mode 1 with a per-channel shape", B_INT8KV, m_antiquant_mode1_channel_shape, E_ANY, "antiquant" },
    { "per-token scale float16", B_TOKEN, m_per_token_f16, E_DTYPE, "antiquant_scale" },
    { "per-token scale too short", B_TOKEN, m_per_token_short, E_VALUE, "antiquant_scale" },
    { "per-token scale batch B-1", B_TOKEN, m_per_token_batch, E_VALUE, "antiquant_scale" },
    /* SPEC 3 and 4: paged. */
    { "paged without actual_seq_lengths", B_PAGED, m_paged_no_lens, E_VALUE, "actual_seq_lengths" },
    { "block_size 0 when paged", B_PAGED, m_block_size_zero, E_VALUE, "block_size" },
    { "block_size negative when paged", B_PAGED, m_block_size_negative, E_VALUE, "block_size" },
    { "cache dim != block_size", B_PAGED, m_block_size_mismatch, E_VALUE, "block_size|key" },
    { "cache dim != block_size (4-D)", B_PAGED4, m_block_size_mismatch, E_VALUE, "block_size|key" },
    { "4-D cache with BSH", B_PAGED, m_cache4d_bsh, E_VALUE, "key|layout" },
    { "3-D cache hidden != KVN*D", B_PAGED, m_cache3d_hidden, E_VALUE, "key" },
    { "block_table int64", B_PAGED, m_block_table_int64, E_DTYPE, "block_table" },
    { "block_table rank 1", B_PAGED, m_block_table_rank1, E_VALUE, "block_table" },
    { "block_table B-1 rows", B_PAGED, m_block_table_rows, E_VALUE, "block_table" },
    { "block_table used entry too big", B_PAGED, m_block_table_entry_big, E_VALUE, "block_table[1][2]" },
    { "block_table used entry -1", B_PAGED, m_block_table_entry_negative, E_VALUE, "block_table" },
    { "block_table used entry = sentinel", B_PAGED, m_block_table_entry_sentinel, E_VALUE, "block_table" },
    { "block_table used entry too big (4-D)", B_PAGED4, m_block_table_entry_big, E_VALUE, "block_table" },
    { "L > block_size * M", B_PAGED, m_lens_beyond_table, E_VALUE, "actual_seq_lengths|block_table" },
    { "block_position int64", B_POS, m_block_position_int64, E_DTYPE, "block_position" },
    { "block_position KVN+1 heads", B_POS, m_block_position_heads, E_VALUE, "block_position" },
    { "block_position rank 2", B_POS, m_block_position_rank2, E_VALUE, "block_position" },
    { "block_position used entry = M", B_POS, m_block_position_entry_m, E_VALUE, "block_position" },
    { "block_position used entry -1", B_POS, m_block_position_entry_negative, E_VALUE, "block_position" },
    { "block_position used entry 0x7FFFFFFE", B_POS, m_block_position_entry_near_sentinel, E_VALUE, "block_position" },
    { "ceil(L/bs) > P", B_POS, m_block_position_too_few_slots, E_VALUE, "block_position|actual_seq_lengths" },
    { "block_position selects a bad block_table entry", B_POS, m_block_position_to_garbage_column, E_VALUE, "block_table" },
    { "block_position without block_table", B_F16, m_block_position_without_table, E_VALUE, "block_position" },
    /* SPEC 4: lengths and padding. */
    { "negative actual_seq_lengths", B_F16, m_lens_negative, E_VALUE, "actual_seq_lengths" },
    { "negative actual_seq_lengths (paged)", B_PAGED, m_lens_negative, E_VALUE, "actual_seq_lengths" },
    { "2 lengths for B = 3", B_F16, m_lens_two_of_three, E_VALUE, "actual_seq_lengths" },
    { "2 lengths for B = 3 (paged)", B_POS, m_lens_two_of_three, E_VALUE, "actual_seq_lengths" },
    { "actual_seq_lengths float32", B_F16, m_lens_float, E_DTYPE, "actual_seq_lengths" },
    { "actual_seq_lengths rank 2", B_F16, m_lens_rank2, E_ANY, "actual_seq_lengths" },
    { "L > stored length", B_F16, m_lens_beyond_stored, E_VALUE, "actual_seq_lengths" },
    { "L > stored length (list)", B_LIST, m_lens_beyond_stored, E_VALUE, "actual_seq_lengths" },
    { "kv_padding_size negative", B_PAD, m_pad_negative, E_VALUE, "kv_padding_size" },
    { "kv_padding_size with paged KV", B_PAGED, m_pad_with_paged_or_list, E_VALUE, "kv_padding_size" },
    { "kv_padding_size with list KV", B_LIST, m_pad_with_paged_or_list, E_VALUE, "kv_padding_size" },
    { "kv_padding_size without lengths", B_PAD, m_pad_without_lens, E_VALUE, "kv_padding_size|actual_seq_lengths" },
    { "kv_padding_size float32", B_PAD, m_pad_float, E_DTYPE, "kv_padding_size" },
    { "kv_padding_size two values", B_PAD, m_pad_two_values, E_ANY, "kv_padding_size" },
    /* SPEC 5: pse and mask. */
    { "pse_shift float32 with a float16 query", B_PSEMASK, m_pse_float32, E_DTYPE, "pse_shift" },
    { "pse_shift N+1 heads", B_PSEMASK, m_pse_heads, E_VALUE, "pse_shift" },
    { "pse_shift dim 2 = 2", B_PSEMASK, m_pse_dim2, E_VALUE, "pse_shift" },
    { "pse_shift rank 3", B_PSEMASK, m_pse_rank3, E_VALUE, "pse_shift" },
    { "pse_shift batch B-1", B_PSEMASK, m_pse_batch, E_VALUE, "pse_shift" },
    { "pse_shift S' too short", B_PSEMASK, m_pse_short, E_VALUE, "pse_shift" },
    { "pse_shift S' too short (paged)", B_POS, m_pse_short, E_VALUE, "pse_shift" },
    { "attention_mask float16", B_PSEMASK, m_mask_float16, E_DTYPE, "attention_mask" },
    { "attention_mask int32", B_PSEMASK, m_mask_int32, E_DTYPE, "attention_mask" },
    { "attention_mask rank 1", B_PSEMASK, m_mask_rank1, E_VALUE, "attention_mask" },
    { "attention_mask rank 5", B_PSEMASK, m_mask_rank5, E_VALUE, "attention_mask" },
    { "attention_mask (B, 2, S')", B_PSEMASK, m_mask_dim1, E_VALUE, "attention_mask" },
    { "attention_mask batch B-1", B_PSEMASK, m_mask_batch, E_VALUE, "attention_mask" },
    { "attention_mask too short", B_PSEMASK, m_mask_short, E_VALUE, "attention_mask" },
    { "attention_mask too short (paged)", B_PAGED, m_mask_short, E_VALUE, "attention_mask" },
    /* SPEC 7: full quantisation. */
    { "int8 query without dequant_scale1", B_FULLQ, m_no_dequant_scale1, E_ANY, "dequant_scale1" },
    { "int8 query without quant_scale1", B_FULLQ, m_no_quant_scale1, E_ANY, "quant_scale1" },
    { "int8 query without dequant_scale2", B_FULLQ, m_no_dequant_scale2, E_ANY, "dequant_scale2" },
    { "dequant_scale1 with a float query", B_F16, m_float_query_dequant_scale1, E_ANY, "dequant_scale1" },
    { "quant_scale1 with a float query", B_F16, m_float_query_quant_scale1, E_ANY, "quant_scale1" },
    { "dequant_scale2 with a float query", B_F16, m_float_query_dequant_scale2, E_ANY, "dequant_scale2" },
    { "quant_scale1 two values", B_FULLQ, m_quant_scale1_two_values, E_VALUE, "quant_scale1" },
    { "dequant_scale1 float16", B_FULLQ, m_dequant_scale1_float16, E_DTYPE, "dequant_scale1" },
    { "int8 query with float16 KV", B_FULLQ, m_fullq_float_kv, E_ANY, "key" },
    /* SPEC 8: int8 output. */
    { "quant_scale2 three values", B_QOUT, m_quant_scale2_three, E_VALUE, "quant_scale2" },
    { "quant_scale2 float16", B_QOUT, m_quant_scale2_float16, E_DTYPE, "quant_scale2" },
    { "quant_scale2 bfloat16 with a float16 query", B_QOUT, m_quant_scale2_bf16_for_f16, E_DTYPE, "quant_scale2" },
    { "quant_offset2 without quant_scale2", B_QOUT, m_quant_offset2_alone, E_ANY, "quant_offset2" },
    { "quant_offset2 three values", B_QOUT, m_quant_offset2_three, E_VALUE, "quant_offset2" },
    /* SPEC 9. */
    { "inner_precise 2", B_F16, m_inner_precise_2, E_VALUE, "inner_precise" },
    { "inner_precise -1", B_F16, m_inner_precise_negative, E_VALUE, "inner_precise" },
    /* ifa.h: the output view. */
    { "out shape", B_F16, m_out_shape, E_VALUE, "out" },
    { "out rank", B_F16, m_out_rank, E_VALUE, "out" },
    { "out float32 for a float16 query", B_F16, m_out_float32, E_DTYPE, "out" },
    { "out float16 when int8 is due", B_QOUT, m_out_float16_for_int8, E_DTYPE, "out" },
    { "out data NULL", B_F16, m_out_null_data, E_ANY, "out" },
    { "out negative stride", B_F16, m_out_negative_stride, E_ANY, "out" },
};

/* Overflow cases come last and in their own test: under UBSan (which stops the program at the
 * first report) a library overflow then cannot hide the results of the other rules. */
static const err_case k_overflow_cases[] = {
    { "KV shape overflows", B_F16, m_kv_overflow, E_ANY, "key" },
    { "actual_seq_lengths INT64_MAX", B_F16, m_lens_int64_max, E_VALUE, "actual_seq_lengths" },
    { "actual_seq_lengths INT64_MAX (paged)", B_PAGED, m_lens_int64_max, E_VALUE, "actual_seq_lengths|block_table" },
    { "actual_seq_lengths INT64_MAX (position)", B_POS, m_lens_int64_max, E_VALUE, "actual_seq_lengths|block_position" },
    { "block_size INT64_MAX", B_PAGED, m_block_size_huge, E_VALUE, "block_size|key" },
    { "query stride overflows", B_F16, m_query_stride_overflow, E_ANY, "query" },
    { "num_heads 2^62", B_F16, m_heads_huge, E_ANY, "query|num_heads" },
};

/* ---- Running one case ------------------------------------------------------------------------- */

typedef struct snap {
    const ifa_tensor *t;
    const void *data;
    void *copy;
    size_t bytes;
} snap;

#define MAX_SNAPS (2 * FX_MAX_B + 24)

/* Copies every input buffer the params point at, valid or not. */
static int take_snapshots(const fx_case *c, snap *s)
{
    int n = 0;
    const ifa_params *p = &c->p;
    const ifa_tensor *all[] = { &p->query, &p->pse_shift, &p->attention_mask, &p->actual_seq_lengths,
                                &p->dequant_scale1, &p->quant_scale1, &p->dequant_scale2, &p->quant_scale2,
                                &p->quant_offset2, &p->antiquant_scale, &p->antiquant_offset, &p->block_table,
                                &p->kv_padding_size, &p->block_position };
    for (size_t i = 0; i < sizeof all / sizeof all[0]; i++) s[n++].t = all[i];
    for (int i = 0; i < FX_MAX_B; i++) {
        s[n++].t = &c->key[i];
        s[n++].t = &c->value[i];
    }
    for (int i = 0; i < n; i++) {
        const ifa_tensor *t = s[i].t;
        int sane = t->data != NULL && t->rank >= 0 && t->rank <= IFA_MAX_RANK && ifa_dtype_size(t->dtype) > 0;
        /* Views a mutation made absurd (huge shapes or strides) cannot be copied; they are
         * skipped, the library must not have touched memory through them anyway. */
        for (int32_t k = 0; sane && k < t->rank; k++)
            sane = t->strides[k] >= 0 && t->strides[k] < ((int64_t)1 << 24) && t->shape[k] >= 0 &&
                   t->shape[k] < ((int64_t)1 << 24);
        s[i].bytes = sane ? fx_extent_bytes(t) : 0;
        s[i].data = t->data;
        s[i].copy = s[i].bytes ? fx_snapshot(g_arena, t, s[i].bytes) : NULL;
    }
    return n;
}

static int snapshots_unchanged(const snap *s, int n)
{
    for (int i = 0; i < n; i++)
        if (s[i].bytes && memcmp(s[i].data, s[i].copy, s[i].bytes) != 0) return 0;
    return 1;
}

static int status_fits(ifa_status st, expect kind)
{
    if (st == IFA_OK || st == IFA_ERR_OUT_OF_MEMORY || st == IFA_ERR_UNSUPPORTED) return 0;
    switch (kind) {
    case E_DTYPE: return st == IFA_ERR_INVALID_DTYPE;
    case E_VALUE: return st != IFA_ERR_INVALID_DTYPE;
    case E_NULL: return st == IFA_ERR_NULL_POINTER || st == IFA_ERR_INVALID_ARGUMENT;
    default: return 1;
    }
}

static int message_names(const char *msg, const char *names)
{
    char buf[128];
    const char *s = names;
    while (*s) {
        size_t len = strcspn(s, "|");
        if (len >= sizeof buf) len = sizeof buf - 1;
        memcpy(buf, s, len);
        buf[len] = '\0';
        if (strstr(msg, buf) != NULL) return 1;
        s += len;
        if (*s == '|') s++;
    }
    return 0;
}

static void run_error_case(const err_case *e, uint64_t seed)
{
    fx_arena a = { 0 };
    g_arena = &a;
    g_rng = rng_seed(seed * 31 + 7);
    fx_case *c = build_base(e->base, seed);
    /* The base must be valid, or the test would prove nothing. */
    CHECK_MSG(ifa_validate(&c->p) == IFA_OK, "[%s] base case invalid: %s", e->name, ifa_last_error());
    e->mutate(c);
    snap snaps[MAX_SNAPS];
    const int ns = take_snapshots(c, snaps);
    unsigned char *out_copy = NULL;
    size_t out_bytes = 0;
    if (c->out.data != NULL && c->out.rank >= 0 && c->out.rank <= IFA_MAX_RANK) {
        out_bytes = fx_extent_bytes(&c->out);
        if (c->out.strides[0] < 0) out_bytes = (size_t)gd_numel(&c->out) * ifa_dtype_size(c->out.dtype);
        memset(c->out.data, 0xA5, out_bytes);
        out_copy = fx_snapshot(&a, &c->out, out_bytes);
    }
    /* The name goes out before the call, so a crash inside the library is attributed. */
    printf("    %-48s -> ", e->name);
    fflush(stdout);
    const ifa_status vst = ifa_validate(&c->p);
    char vmsg[512];
    snprintf(vmsg, sizeof vmsg, "%s", ifa_last_error());
    const ifa_status st = ifa_incre_flash_attention_v5(&c->p, &c->out);
    const char *msg = ifa_last_error();
    printf("%-20s %s\n", ifa_status_string(st), msg);
    fflush(stdout);
    CHECK_MSG(st != IFA_OK, "[%s] accepted (status ok)", e->name);
    if (st != IFA_OK) {
        CHECK_MSG(status_fits(st, e->kind), "[%s] status %s is not of the expected class (%s)", e->name,
                  ifa_status_string(st), e->kind == E_DTYPE ? "invalid dtype" : "a value error");
        CHECK_MSG(message_names(msg, e->names), "[%s] message \"%s\" does not name %s", e->name, msg, e->names);
        CHECK_MSG(strlen(msg) > 0, "[%s] empty message", e->name);
    }
    /* Output validation (the out view) is not part of ifa_validate, which sees only params. */
    if (strcmp(e->names, "out") != 0) {
        CHECK_MSG(vst == st, "[%s] ifa_validate gave %s but the call %s (%s)", e->name, ifa_status_string(vst),
                  ifa_status_string(st), vmsg);
    }
    if (out_copy != NULL)
        CHECK_MSG(memcmp(c->out.data, out_copy, out_bytes) == 0, "[%s] output written on error", e->name);
    CHECK_MSG(snapshots_unchanged(snaps, ns), "[%s] an input was modified", e->name);
    fx_arena_free(&a);
    g_arena = NULL;
}

static void test_every_rule(void)
{
    for (size_t i = 0; i < sizeof k_cases / sizeof k_cases[0]; i++) run_error_case(&k_cases[i], 100 + i);
}

/* SPEC 10: sizes are checked for integer overflow, whatever the input. */
static void test_size_overflow(void)
{
    for (size_t i = 0; i < sizeof k_overflow_cases / sizeof k_overflow_cases[0]; i++)
        run_error_case(&k_overflow_cases[i], 900 + i);
}

/* The message for a used block_table entry out of range names the entry and its value, as the
 * example of ifa.h ("block_table[1][2] = 11 is outside the key cache (6 blocks)"). */
static void test_block_table_message(void)
{
    fx_arena a = { 0 };
    g_arena = &a;
    g_rng = rng_seed(5);
    fx_case *c = build_base(B_PAGED, 55);
    const int64_t idx[2] = { 1, 2 };
    const int64_t bad = num_blocks(c) + 7;
    fx_set(&c->p.block_table, idx, (double)bad);
    const ifa_status st = ifa_incre_flash_attention_v5(&c->p, &c->out);
    CHECK(st != IFA_OK);
    char want[64];
    snprintf(want, sizeof want, "block_table[1][2] = %lld", (long long)bad);
    CHECK_MSG(strstr(ifa_last_error(), want) != NULL, "message \"%s\" lacks \"%s\"", ifa_last_error(), want);
    fx_arena_free(&a);
    g_arena = NULL;
}

static void test_null_arguments(void)
{
    fx_arena a = { 0 };
    g_arena = &a;
    fx_case *c = build_base(B_F16, 66);
    ifa_status st = ifa_incre_flash_attention_v5(NULL, &c->out);
    CHECK(status_fits(st, E_NULL));
    CHECK(strlen(ifa_last_error()) > 0);
    st = ifa_incre_flash_attention_v5(&c->p, NULL);
    CHECK(status_fits(st, E_NULL));
    CHECK(strstr(ifa_last_error(), "out") != NULL);
    st = ifa_validate(NULL);
    CHECK(status_fits(st, E_NULL));
    st = ifa_incre_flash_attention_v5(NULL, NULL);
    CHECK(status_fits(st, E_NULL));
    fx_arena_free(&a);
    g_arena = NULL;
}

/* SPEC 10: no input is modified by a successful call either; a rich case touches every input. */
static void test_inputs_unchanged_after_success(void)
{
    static const fx_form forms[] = { FX_PAGED_POS, FX_LEFTPAD, FX_LIST };
    for (size_t fi = 0; fi < 3; fi++) {
        fx_arena a = { 0 };
        g_arena = &a;
        fx_config cfg = fx_default_config();
        cfg.form = forms[fi];
        cfg.layout = "BSND";
        cfg.q_dtype = IFA_DTYPE_BFLOAT16;
        cfg.kv_dtype = IFA_DTYPE_INT8;
        cfg.antiquant = FX_AQ_TOKEN;
        cfg.antiquant_offset = 1;
        cfg.B = 3, cfg.N = 4, cfg.KVN = 2, cfg.D = 32, cfg.block_size = 4, cfg.pad = 2;
        cfg.pse = 1, cfg.mask_rank = 3;
        cfg.out_quant = 2, cfg.out_quant_offset = 1, cfg.out_quant_shape = 3;
        cfg.out_quant_dtype = IFA_DTYPE_BFLOAT16;
        fx_case *c = fx_build(&a, 77 + fi, &cfg);
        snap snaps[MAX_SNAPS];
        const int ns = take_snapshots(c, snaps);
        fx_check(c);
        CHECK_MSG(snapshots_unchanged(snaps, ns), "an input was modified by a successful call (form %d)", (int)forms[fi]);
        fx_arena_free(&a);
        g_arena = NULL;
    }
    /* Full quantisation with uint64 scales. */
    fx_arena a = { 0 };
    g_arena = &a;
    fx_config cfg = fx_default_config();
    cfg.form = FX_PAGED;
    cfg.q_dtype = cfg.kv_dtype = IFA_DTYPE_INT8;
    cfg.uint64_scales = 1;
    cfg.pse = 2;
    cfg.B = 2, cfg.N = 2, cfg.D = 16, cfg.min_len = 20, cfg.max_len = 60;
    fx_case *c = fx_build(&a, 88, &cfg);
    snap snaps[MAX_SNAPS];
    const int ns = take_snapshots(c, snaps);
    fx_check(c);
    CHECK_MSG(snapshots_unchanged(snaps, ns), "an input was modified by a full-quantisation call");
    fx_arena_free(&a);
    g_arena = NULL;
}

/* After an error, a valid call succeeds and clears the message (no sticky state). */
static void test_error_then_success(void)
{
    fx_arena a = { 0 };
    g_arena = &a;
    fx_case *c = build_base(B_PAGED, 99);
    const int64_t idx[2] = { 0, 0 };
    const double keep = gd_load(&c->p.block_table, idx);
    fx_set(&c->p.block_table, idx, -3.0);
    CHECK(ifa_incre_flash_attention_v5(&c->p, &c->out) != IFA_OK);
    fx_set(&c->p.block_table, idx, keep);
    CHECK(fx_check(c) == 0);
    CHECK_STREQ(ifa_last_error(), "");
    fx_arena_free(&a);
    g_arena = NULL;
}

int main(int argc, char **argv)
{
    static const tst_case cases[] = {
        TST_CASE(test_every_rule),
        TST_CASE(test_block_table_message),
        TST_CASE(test_null_arguments),
        TST_CASE(test_inputs_unchanged_after_success),
        TST_CASE(test_error_then_success),
        TST_CASE(test_size_overflow),
    };
    return tst_main(argc, argv, cases, sizeof cases / sizeof cases[0]);
}
