/*
 * plan.c - the work split: (batch, group of KV heads, KV chunk) tiles over the thread pool.
 *
 * A tile visits up to IFA__MAX_TILE_HEADS KV heads of one batch together, window by window
 * (attend.c), because in the common (blocks, bs, KVN*D) cache the heads of a token are adjacent
 * in memory. With at least a few tiles per thread, each (batch, head group) is one tile. With
 * fewer (B = 1 on many cores, say), or when one sequence is longer than a thread's share of the
 * call (a ragged batch), the token range is cut into `splits` chunks ("flash-decoding", Dao et
 * al. 2023), each producing partial softmax states; a second pass merges the partial states of
 * each (b, h) and writes its output.
 *
 *     tiles:  (b0,grp0,c0) (b0,grp0,c1) ... (b0,grp1,c0) ...  -> states   (parallel)
 *     merge:  (b0,h0) <- c0 + c1 + ...                         -> output   (parallel)
 *
 * States are laid out [b][chunk][h], so a tile's heads are consecutive.
 */
#include "plan.h"

#include <math.h>
#include <stdlib.h>

#include "attend.h"
#include "kv_pages.h"
#include "softmax_state.h"
#include "threadpool.h"

/* Below this many tokens per chunk the merge and the per-chunk setup cost more than the
 * parallelism gains. */
#define IFA__MIN_CHUNK_TOKENS 512
/* ... except where the alternative is worse: a short call with fewer (batch, head group) units
 * than threads otherwise has its heads split (below), and in a cache whose heads of a token sit
 * side by side that reads half of every token row per thread. For the calls of
 * ifa__split_tokens_early (heads side by side, not sparse, and the KV and rows its kernel table
 * names), measured with two threads, B = 1, L = 512, two chunks of 256 tokens against two groups
 * of 4 heads on the AVX-512 host: Llama-3-8B fp16 1.12x (L = 768: 1.15x), bf16 1.13x, block 16
 * 1.12x, Llama-3-70B bf16 1.05x; a (blocks, KVN, bs, D) cache lost, 0.78-0.84x (each head's rows
 * are one run there), and sparse 0.95x. Which other kinds win depends on the host (attend.c;
 * docs/benchmarks.md). */
#define IFA__MIN_CHUNK_TOKENS_SIDE_BY_SIDE 256

/* Chunks beyond one per thread only from this many tokens each. Every chunk starts cold: its
 * first window is fetched in one burst that nothing overlaps, which cost about 7 us per chunk
 * (B = 1, L = 4K, int8: eight chunks of 512 tokens took 0.26 ms, two of 2048 0.22 ms). Measured
 * with two threads, B = 1, L = 4K, two chunks against eight: int8 1.20x, Llama-3-70B 1.09x,
 * Qwen2.5-7B 1.11x, block 16 1.14x, Llama-3-8B fp16 and bf16 equal; a sparse selection whose
 * L is 4K (1/8 of 32K) 1.02-1.08x; L = 32K equal (docs/benchmarks.md). */
#define IFA__EXTRA_CHUNK_TOKENS 2048

/* Below this many bytes of K and V in a whole call, waking a second thread costs more than it
 * saves (a wake-up is a few microseconds; 256 KiB is about ten of them at memory speed). */
#define IFA__MIN_PARALLEL_BYTES (256 * 1024)

typedef struct run_ctx {
    const ifa__problem *pb;
    const ifa__kernel_table *kt;
    int64_t groups, group_heads, splits;
    int64_t min_chunk; /* fewest tokens in a chunk (0: none); ragged batches (ifa__run) */
    int64_t state_floats;
    int64_t scratch_floats;
    float *states;  /* [b][split][h] */
    float *scratch; /* one per thread */
} run_ctx;

static void run_tile(void *arg, size_t item, int thread) {
    const run_ctx *c = arg;
    const ifa__problem *pb = c->pb;
    const int64_t tile = (int64_t)item;
    const int64_t chunk = tile % c->splits, grp = (tile / c->splits) % c->groups;
    const int64_t b = tile / (c->splits * c->groups);
    const int64_t h0 = grp * c->group_heads, nh = ifa__min64(c->group_heads, pb->KVN - h0);
    const int64_t T = ifa__kv_token_count(pb, b);
    /* Chunks of equal token count (at least min_chunk, so that a short sequence of a ragged
     * batch leaves its last chunks empty); they need not start on a page boundary because the
     * cursor can start mid-page. */
    const int64_t per = ifa__max64(ifa__ceil_div(T, c->splits), c->min_chunk);
    const int64_t t0 = ifa__min64(T, chunk * per), t1 = ifa__min64(T, t0 + per);
    float *states = c->states + ((b * c->splits + chunk) * pb->KVN + h0) * c->state_floats;
    ifa__attend_tile(pb, c->kt, b, h0, nh, t0, t1, states, c->scratch + (int64_t)thread * c->scratch_floats);
}

static void merge_pair(void *arg, size_t item, int thread) {
    const run_ctx *c = arg;
    const ifa__problem *pb = c->pb;
    const int64_t b = (int64_t)item / pb->KVN, h = (int64_t)item % pb->KVN;
    const int64_t split_stride = pb->KVN * c->state_floats;
    float *first = c->states + (b * c->splits * pb->KVN + h) * c->state_floats;
    for (int64_t s = 1; s < c->splits; s++) ifa__state_merge(first, first + s * split_stride, pb->G, pb->D);
    ifa__write_output(pb, c->kt, b, h, first, c->scratch + (int64_t)thread * c->scratch_floats);
}

ifa_status ifa__run(const ifa__problem *pb, const ifa__kernel_table *kt, int num_threads) {
    /* Tokens of the whole call and of its longest sequence, in double: the token counts of views
     * with huge strides add up past int64. */
    double tokens = 0.0;
    int64_t longest = 0;
    for (int64_t b = 0; b < pb->B; b++) {
        const int64_t t = ifa__kv_token_count(pb, b);
        tokens += (double)t;
        longest = ifa__max64(longest, t);
    }
    const double kv_bytes = tokens * 2.0 * (double)pb->KVN * (double)pb->D * (double)pb->elem_size;
    if (kv_bytes < IFA__MIN_PARALLEL_BYTES) num_threads = 1;

    run_ctx c;
    c.pb = pb;
    c.kt = kt;
    c.groups = ifa__ceil_div(pb->KVN, IFA__MAX_TILE_HEADS);
    c.group_heads = ifa__ceil_div(pb->KVN, c.groups);
    c.splits = 1;
    c.min_chunk = 0;
    /* Fewer (batch, head group) units than a few per thread: split-KV first. Full quantisation
     * quantises p against the global maximum of each (b, h) (attend.c), which a chunk of the
     * token range cannot know: no split there. */
    if (num_threads > 1 && pb->B * c.groups < 4 * (int64_t)num_threads && !pb->full_quant) {
        const int64_t one_per_thread = ifa__ceil_div(num_threads, pb->B * c.groups);
        c.splits = ifa__ceil_div(4 * (int64_t)num_threads, pb->B * c.groups);
        c.splits = ifa__min64(c.splits, ifa__max64(one_per_thread, pb->max_len / IFA__EXTRA_CHUNK_TOKENS));
        const int64_t min_chunk =
            ifa__split_tokens_early(pb, kt) ? IFA__MIN_CHUNK_TOKENS_SIDE_BY_SIDE : IFA__MIN_CHUNK_TOKENS;
        c.splits = ifa__min64(c.splits, ifa__max64(1, pb->max_len / min_chunk));
    }
    /* A ragged batch: when one sequence holds more tokens than a thread's share of the whole
     * call, its tiles would run on one core while the others finish early and wait. Every
     * sequence is then cut so that the longest gives chunks of at most half a thread's share,
     * but no chunk is cut shorter than IFA__MIN_CHUNK_TOKENS: a short sequence keeps one or two
     * chunks and leaves the rest of its splits empty (the merge takes any). Measured with two
     * threads, Llama-3-8B fp16, block 128: one 32K sequence beside seven of 1K, 5.0-5.5 ->
     * 3.4-3.6 ms; beside fifteen, 5.5-5.7 -> 4.4-4.6 (docs/benchmarks.md). Batches of at least
     * as many equal sequences as threads never meet the condition. */
    if (num_threads > 1 && c.splits == 1 && !pb->full_quant && (double)longest * num_threads > tokens) {
        const double want = ceil(2.0 * num_threads * (double)longest / tokens);
        c.splits = ifa__max64(1, ifa__min64(longest / IFA__MIN_CHUNK_TOKENS, want < 64.0 ? (int64_t)want : 64));
        c.min_chunk = IFA__MIN_CHUNK_TOKENS;
    }
    /* Still fewer tiles than threads (short or fully quantised calls): smaller head groups. Only
     * then: threads on different heads of the same tokens each stream half of every token row of
     * a (blocks, bs, KVN*D) cache, which is much slower (the likely cause: each core's hardware
     * prefetchers fetch the other half too). Measured at B = 1, L = 32K, fp16, 2 threads:
     * splitting the heads read 31 GB/s, splitting the tokens 41 (docs/benchmarks.md). */
    if (pb->B * c.groups * c.splits < num_threads) {
        c.groups = ifa__min64(pb->KVN, ifa__ceil_div(num_threads, pb->B * c.splits));
        c.group_heads = ifa__ceil_div(pb->KVN, c.groups);
        c.groups = ifa__ceil_div(pb->KVN, c.group_heads);
    }
    const int64_t units = pb->B * c.groups;
    const int64_t tiles = units * c.splits;
    int64_t threads = ifa__min64(num_threads, tiles);
    if (threads < 1) threads = 1;

    c.state_floats = ifa__state_floats(pb->G, pb->D);
    /* Per-thread scratch serves the tiles, then the merge phase's output rows. */
    c.scratch_floats =
        ifa__line_floats(ifa__max64(ifa__tile_scratch_floats(pb, c.group_heads), ifa__output_scratch_floats(pb)));
    int64_t state_total, scratch_total, bytes;
    RETURN_ERROR_IF(ifa__mul_overflow(pb->B * c.splits * pb->KVN, c.state_floats, &state_total) ||
                        ifa__mul_overflow(threads, c.scratch_floats, &scratch_total) ||
                        ifa__add_overflow(state_total, scratch_total, &bytes) ||
                        ifa__mul_overflow(bytes, (int64_t)sizeof(float), &bytes) || (uint64_t)bytes > SIZE_MAX,
                    IFA_ERR_OVERFLOW, "query: working memory for B = %lld, N = %lld, D = %lld overflows",
                    (long long)pb->B, (long long)pb->N, (long long)pb->D);
    /* On a cache line, as are the states and each thread's scratch (whole lines each; common.h).
     * bytes is a multiple of 64, as aligned_alloc requires (64 at least: never a 0-byte request). */
    float *mem = aligned_alloc(64, (size_t)ifa__max64(bytes, 64));
    RETURN_ERROR_IF(mem == NULL, IFA_ERR_OUT_OF_MEMORY,
                    "query: cannot allocate %lld bytes of working memory", (long long)bytes);
    c.states = mem;
    c.scratch = mem + state_total;
    ifa__parallel_for((size_t)tiles, run_tile, &c, (int)threads);
    const int64_t pairs = pb->B * pb->KVN;
    ifa__parallel_for((size_t)pairs, merge_pair, &c, (int)ifa__min64(threads, pairs));
    free(mem);
    return IFA_OK;
}
