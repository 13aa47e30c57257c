/*
 * kv_pages.c - token-to-row resolution for every KV form of SPEC.md 4.
 *
 * Contiguous, one tensor or a list (row t, pos t):
 *
 *     batch b:  [ row 0 | row 1 | ... | row L-1 | (unused up to S) ]
 *
 * Left padded (rows right-aligned, ending pad rows before the end; pos = row):
 *
 *     batch b:  [ unused ... | row start ... row start+L-1 | pad rows ]     start = S - pad - L
 *
 * Paged (block_table, pos t):
 *
 *     t ──► page j = t / bs, slot r = t % bs ──► blk = block_table[b][j] ──► cache[blk] row r
 *
 *     3-D cache (num_blocks, bs, KVN*D):  row of head h = cache[blk, r, h*D : h*D+D]
 *     4-D cache (num_blocks, KVN, bs, D): row of head h = cache[blk, h, r, :]
 *
 * Paged with block_position (per KV head h; pos t, compact over the slots):
 *
 *     t ──► slot j = t / bs ──► idx = block_position[b][h][j]
 *              idx == 0x7FFFFFFF: the slot's tokens do not exist for head h (skipped)
 *              otherwise blk = block_table[b][idx], row r = t % bs as above
 *
 * Pages are read in place: a segment points into the caller's cache, never into a copy.
 * Validation (validate.c) has already checked every index this file dereferences.
 */
#include "kv_pages.h"

/* The [outer][head][token][d] strides of a K/V tensor, for its form and the query's layout. */
static ifa__kv_view kv_view_of(const ifa__problem *pb, const ifa_tensor *t) {
    ifa__kv_view v;
    /* A dimension of size 1 is never stepped along: its stride (which may be anything the
     * caller chose) is taken as 0, so that no kernel scales a huge unused stride to bytes; so
     * are all strides of an empty tensor (a list entry with S = 0), whose extent was never
     * bounded. */
    int64_t st[IFA_MAX_RANK] = {0}, numel = 1;
    for (int32_t i = 0; i < t->rank; i++) numel *= t->shape[i]; /* validated: no overflow */
    for (int32_t i = 0; i < t->rank && numel > 0; i++) st[i] = t->shape[i] > 1 ? t->strides[i] : 0;
    v.data = (const char *)t->data;
    v.s_outer = st[0];
    const int paged = pb->form == IFA__KV_PAGED || pb->form == IFA__KV_PAGED_SPARSE;
    if (paged && t->rank == 4) { /* (num_blocks, KVN, bs, D) */
        v.s_head = st[1];
        v.s_tok = st[2];
        v.s_d = st[3];
    } else if (paged || pb->layout == IFA__LAYOUT_BSH) { /* (outer, tokens, KVN*D) */
        v.s_tok = st[1];
        v.s_d = st[2];
        v.s_head = pb->KVN > 1 ? pb->D * st[2] : 0;
    } else if (pb->layout == IFA__LAYOUT_BSND) { /* (B, S, KVN, D) */
        v.s_tok = st[1];
        v.s_head = st[2];
        v.s_d = st[3];
    } else { /* BNSD: (B, KVN, S, D) */
        v.s_head = st[1];
        v.s_tok = st[2];
        v.s_d = st[3];
    }
    return v;
}

/* Left padding: whether start = S - pad - L >= 0, decided without computing S - pad - L, which
 * overflows when pad and L are both large. */
static int padded_fits(const ifa__problem *pb, int64_t L) {
    return pb->pad <= pb->stored_len && L <= pb->stored_len - pb->pad;
}

int64_t ifa__kv_token_count(const ifa__problem *pb, int64_t b) {
    const int64_t L = ifa__seq_len(pb, b);
    if (pb->form == IFA__KV_LEFT_PADDED && !padded_fits(pb, L)) return 0;
    return L;
}

void ifa__kv_cursor_init(ifa__kv_cursor *c, const ifa__problem *pb, int64_t b, int64_t h,
                         int64_t t_begin, int64_t t_end) {
    c->pb = pb;
    c->b = b;
    c->h = h;
    c->t = t_begin;
    c->t_end = t_end;
    c->row0 = 0;
    const int list = pb->kv_count > 1;
    c->k = kv_view_of(pb, &pb->params->key[list ? b : 0]);
    c->v = kv_view_of(pb, &pb->params->value[list ? b : 0]);
    if (list) { /* each batch's tensor has batch dimension 1 */
        c->k.s_outer = 0;
        c->v.s_outer = 0;
    }
    if (pb->form == IFA__KV_LEFT_PADDED) {
        const int64_t L = ifa__seq_len(pb, b);
        c->row0 = padded_fits(pb, L) ? pb->stored_len - pb->pad - L : 0; /* no tokens otherwise */
    }
}

static const char *row_at(const ifa__kv_view *v, int64_t outer, int64_t h, int64_t row, int64_t es) {
    return v->data + (outer * v->s_outer + h * v->s_head + row * v->s_tok) * es;
}

int ifa__kv_cursor_next(ifa__kv_cursor *c, ifa__kv_segment *seg) {
    const ifa__problem *pb = c->pb;
    const int64_t es = pb->elem_size;
    while (c->t < c->t_end) {
        int64_t outer, row, n;
        if (pb->form == IFA__KV_CONTIGUOUS || pb->form == IFA__KV_LEFT_PADDED) {
            outer = c->b;
            row = c->row0 + c->t;
            n = c->t_end - c->t;
        } else {
            const int64_t j = c->t / pb->bs, r = c->t % pb->bs;
            n = ifa__min64(pb->bs - r, c->t_end - c->t);
            int64_t column = j;
            if (pb->form == IFA__KV_PAGED_SPARSE) {
                const int32_t idx = ifa__position_at(pb, c->b, c->h, j);
                if (idx == IFA_BLOCK_UNSELECTED) { /* the slot's tokens do not exist for head h */
                    c->t += n;
                    continue;
                }
                column = idx;
            }
            outer = ifa__table_at(pb, c->b, column);
            row = r;
        }
        seg->k = row_at(&c->k, outer, c->h, row, es);
        seg->v = row_at(&c->v, outer, c->h, row, es);
        seg->k_tok = c->k.s_tok;
        seg->v_tok = c->v.s_tok;
        seg->k_d = c->k.s_d;
        seg->v_d = c->v.s_d;
        seg->n = n;
        seg->pos0 = c->row0 + c->t;
        c->t += n;
        return 1;
    }
    return 0;
}
