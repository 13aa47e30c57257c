/*
 * plan.c - the work split: (batch, KV head, KV chunk) tiles over the thread pool.
 *
 * The natural unit is a (b, h) pair: its G query heads share every K and V row. With B*KVN
 * pairs at least a few times the thread count, each pair is one tile. With fewer (B = 1 and 8 KV
 * heads on many cores, say), each pair's token range is cut into `splits` chunks
 * ("flash-decoding"), each producing a partial softmax state; a second pass merges the partial
 * states of a pair and writes its output.
 *
 *     tiles:  (b0,h0,c0) (b0,h0,c1) ... (b0,h1,c0) ...   -> states[tile]   (parallel)
 *     merge:  (b0,h0) <- c0 + c1 + ...                    -> output rows   (parallel)
 */
#include "plan.h"

#include <stdlib.h>

#include "attend.h"
#include "kv_pages.h"
#include "softmax_state.h"
#include "threadpool.h"

/* Below this many tokens per chunk the merge and the per-chunk setup cost more than the
 * parallelism gains. */
#define IFA__MIN_CHUNK_TOKENS 512

/* Below this many bytes of K and V in a whole call, waking a second thread costs more than it
 * saves (a wake-up is a few microseconds; 256 KiB is about ten of them at memory speed). */
#define IFA__MIN_PARALLEL_BYTES (256 * 1024)

typedef struct run_ctx {
    const ifa__problem *pb;
    const ifa__kernel_table *kt;
    int64_t splits;
    int64_t state_floats;
    int64_t scratch_floats;
    float *states;  /* one per tile */
    float *scratch; /* one per thread */
} run_ctx;

static void run_tile(void *arg, size_t item, int thread) {
    const run_ctx *c = arg;
    const ifa__problem *pb = c->pb;
    const int64_t tile = (int64_t)item;
    const int64_t pair = tile / c->splits, chunk = tile % c->splits;
    const int64_t b = pair / pb->KVN, h = pair % pb->KVN;
    const int64_t T = ifa__kv_token_count(pb, b);
    /* Chunks of equal token count; splitting at page boundaries is not needed for correctness
     * because the cursor starts mid-page. */
    const int64_t per = ifa__ceil_div(T, c->splits);
    const int64_t t0 = ifa__min64(T, chunk * per), t1 = ifa__min64(T, t0 + per);
    ifa__attend_tile(pb, c->kt, b, h, t0, t1, c->states + tile * c->state_floats,
                     c->scratch + (int64_t)thread * c->scratch_floats);
}

static void merge_pair(void *arg, size_t item, int thread) {
    const run_ctx *c = arg;
    const ifa__problem *pb = c->pb;
    (void)thread;
    const int64_t pair = (int64_t)item;
    float *first = c->states + pair * c->splits * c->state_floats;
    for (int64_t s = 1; s < c->splits; s++)
        ifa__state_merge(first, first + s * c->state_floats, pb->G, pb->D);
    ifa__write_output(pb, pair / pb->KVN, pair % pb->KVN, first);
}

ifa_status ifa__run(const ifa__problem *pb, const ifa__kernel_table *kt, int num_threads) {
    const int64_t pairs = pb->B * pb->KVN;
    double kv_bytes = 0.0;
    for (int64_t b = 0; b < pb->B; b++) kv_bytes += (double)ifa__kv_token_count(pb, b);
    kv_bytes *= 2.0 * (double)pb->KVN * (double)pb->D * (double)pb->elem_size;
    if (kv_bytes < IFA__MIN_PARALLEL_BYTES) num_threads = 1;
    int64_t splits = 1;
    /* Full quantisation quantises p against the global maximum of each (b, h) (attend.c), which
     * a chunk of the token range cannot know: no split there. */
    if (num_threads > 1 && pairs < 4 * (int64_t)num_threads && !pb->full_quant) {
        splits = ifa__ceil_div(4 * (int64_t)num_threads, pairs);
        splits = ifa__min64(splits, ifa__max64(1, pb->max_len / IFA__MIN_CHUNK_TOKENS));
    }
    const int64_t tiles = pairs * splits;
    int64_t threads = ifa__min64(num_threads, tiles);
    if (threads < 1) threads = 1;

    run_ctx c;
    c.pb = pb;
    c.kt = kt;
    c.splits = splits;
    c.state_floats = ifa__state_floats(pb->G, pb->D);
    c.scratch_floats = ifa__tile_scratch_floats(pb);
    int64_t state_total, scratch_total, bytes;
    RETURN_ERROR_IF(ifa__mul_overflow(tiles, c.state_floats, &state_total) ||
                        ifa__mul_overflow(threads, c.scratch_floats, &scratch_total) ||
                        ifa__add_overflow(state_total, scratch_total, &bytes) ||
                        ifa__mul_overflow(bytes, (int64_t)sizeof(float), &bytes) || (uint64_t)bytes > SIZE_MAX,
                    IFA_ERR_OVERFLOW, "query: working memory for B = %lld, N = %lld, D = %lld overflows",
                    (long long)pb->B, (long long)pb->N, (long long)pb->D);
    float *mem = malloc((size_t)bytes);
    RETURN_ERROR_IF(mem == NULL, IFA_ERR_OUT_OF_MEMORY,
                    "query: cannot allocate %lld bytes of working memory", (long long)bytes);
    c.states = mem;
    c.scratch = mem + state_total;
    ifa__parallel_for((size_t)tiles, run_tile, &c, (int)threads);
    ifa__parallel_for((size_t)pairs, merge_pair, &c, (int)ifa__min64(threads, pairs));
    free(mem);
    return IFA_OK;
}
