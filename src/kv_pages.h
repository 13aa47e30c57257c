/*
 * kv_pages.h - the one place where a logical token of (batch, KV head) becomes a storage row.
 *
 * A cursor walks the logical tokens t in [t_begin, t_end) of one (b, h) and yields segments:
 * runs of consecutive tokens whose rows are equally spaced in memory (a whole contiguous range,
 * or the used part of one page). Kernels then stream a segment without knowing which KV form it
 * came from. Unselected block_position slots yield nothing, so their tokens never exist.
 */
#ifndef IFA_KV_PAGES_H
#define IFA_KV_PAGES_H

#include "problem.h"

typedef struct ifa__kv_segment {
    const char *k, *v;    /* row of the first token (element d = 0) */
    int64_t k_tok, v_tok; /* element stride from one token's row to the next */
    int64_t k_d, v_d;     /* element stride along d */
    int64_t n;            /* tokens in the segment, >= 1 */
    int64_t pos0;         /* pos(t) of the first token; the others follow consecutively */
} ifa__kv_segment;

typedef struct ifa__kv_cursor {
    const ifa__problem *pb;
    int64_t b, h;
    int64_t t, t_end;
    int64_t row0; /* contiguous forms: storage row (and position) of logical token 0 */
    ifa__kv_view k, v;
} ifa__kv_cursor;

/* Number of logical tokens of batch b: L[b], or 0 when left padding leaves no room. Tokens of
 * unselected slots are counted here and skipped by the cursor. */
int64_t ifa__kv_token_count(const ifa__problem *pb, int64_t b);

void ifa__kv_cursor_init(ifa__kv_cursor *c, const ifa__problem *pb, int64_t b, int64_t h,
                         int64_t t_begin, int64_t t_end);

/* Fills *seg with the next run of tokens and returns 1, or returns 0 at the end. */
int ifa__kv_cursor_next(ifa__kv_cursor *c, ifa__kv_segment *seg);

#endif /* IFA_KV_PAGES_H */
