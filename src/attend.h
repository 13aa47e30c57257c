/*
 * attend.h - the computation of one tile: a (batch, KV heads, token range) of SPEC.md 5-8.
 */
#ifndef IFA_ATTEND_H
#define IFA_ATTEND_H

#include "kernels/kernels.h"
#include "problem.h"

/* Logical tokens per window, and so at most the rows of K/V handed to one kernel call: bounds
 * the scores scratch and keeps them in L1. */
#define IFA__CHUNK_ROWS IFA__KERNEL_MAX_ROWS

/* Most KV heads one tile visits together (bounds the per-tile prefetch cursors on the stack). */
#define IFA__MAX_TILE_HEADS 16

/* Floats of per-thread scratch a tile of up to max_heads KV heads needs. */
int64_t ifa__tile_scratch_floats(const ifa__problem *pb, int64_t max_heads);

/* Runs the online softmax over logical tokens [t0, t1) of batch b and KV heads h0 .. h0+nh-1
 * (nh <= IFA__MAX_TILE_HEADS) into nh consecutive states (softmax_state.h), which it
 * initialises first. */
void ifa__attend_tile(const ifa__problem *pb, const ifa__kernel_table *kt, int64_t b, int64_t h0,
                      int64_t nh, int64_t t0, int64_t t1, float *states, float *scratch);

/* Whether plan.c may split the tokens of a short call between threads (chunks of
 * IFA__MIN_CHUNK_TOKENS_SIDE_BY_SIDE) rather than its heads: the heads of a token sit side by
 * side ((blocks, bs, KVN*D) caches and BSH layouts), the call is not sparse, and its KV and rows
 * are of the kinds the kernel table's split_tokens_wide names (16-bit KV without `heavy`
 * arithmetic everywhere; on AVX2 also heavy 16-bit rows and light int8 rows on the integer
 * kernels). */
int ifa__split_tokens_early(const ifa__problem *pb, const ifa__kernel_table *kt);

/* Turns the final state of (b, h) into the G output rows: normalise, apply the value
 * antiquant / dequant scales, cast or quantise, write through the output view. `rows` is
 * scratch of ifa__output_scratch_floats() floats. */
void ifa__write_output(const ifa__problem *pb, const ifa__kernel_table *kt, int64_t b, int64_t h,
                       const float *state, float *rows);

/* Floats of scratch ifa__write_output needs. */
static inline int64_t ifa__output_scratch_floats(const ifa__problem *pb) { return 5 * pb->D; }

#endif /* IFA_ATTEND_H */
