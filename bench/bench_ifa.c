/*
 * bench_ifa.c - ifa_bench, the C benchmark of libifa's decode attention.
 *
 * It first measures the machine (streaming read bandwidth with 1 and T threads, and the peak rate
 * of the multiply-add instructions each KV dtype needs; see bandwidth.c), then runs
 * ifa_incre_flash_attention_v5 over a grid of real model shapes and reports, per shape, the best
 * time, the KV bytes the call has to read, the GB/s that makes, and how close that is to the
 * measured bandwidth and to the shape's roofline:
 *
 *     bytes    = B * KVN * tokens * D * 2 (K and V) * bytes per element
 *     macs     = B * KVN * tokens * 2 * G * D        (q.k and p.v for the G query heads of a KV head)
 *     roofline = max(bytes / read bandwidth, macs / peak multiply-add rate)
 *
 * where `tokens` counts only the tokens a KV head attends to (the selected pages when sparse).
 *
 * The KV cache is paged, as a serving system holds it: block_table maps each sequence's logical
 * pages to physical blocks spread at random over the pool. Sparse shapes add block_position in the
 * form SPEC.md 4.4 describes: per KV head, the selected pages first (ascending), then the sentinel
 * 0x7FFFFFFF, with L = (selected pages) * block_size.
 *
 * Cold cache. In a model, each layer's KV cache is read once per token and the other layers' caches
 * pass through the last-level cache in between, so every call meets a cold cache. Repeating a call
 * on one small cache would time the L3 instead of DRAM (the whole KV of B=1, L=512 is 2 MiB). So
 * unless --warm is given, the pool holds several copies of the cache (together at least 256 MiB,
 * eight times the L3 of the reference machine) and successive repetitions rotate over them; sparse
 * shapes also rotate over independent random page selections.
 *
 *     pool:  [ copy 0: B*M blocks, shuffled ][ copy 1 ] ... [ copy n-1 ]
 *     rep r: block_table r % n, block_position r % n_rot
 *
 * The host of the reference machine is shared and noisy, so every figure is a best of several
 * repetitions, and the bandwidth that the fractions divide by is measured in the same run.
 */
#define _POSIX_C_SOURCE 200809L
#define _DEFAULT_SOURCE /* MADV_HUGEPAGE */

#include <errno.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "bandwidth.h"
#include "ifa.h"

#ifdef IFA_EXPERIMENT
/* The library's experiment switch (src/common.h): the one internal symbol this program touches,
 * and only in builds configured with -DIFA_EXPERIMENT=ON, for --ab. */
extern int ifa__experiment;
#endif

/* ---- Shapes --------------------------------------------------------------------------------- */

typedef struct model {
    const char *name;
    int64_t num_heads, kv_heads, head_dim;
} model;

static const model MODELS[] = {
    {"llama3-8b", 32, 8, 128},
    {"qwen2.5-7b", 28, 4, 128},
    {"llama3-70b", 64, 8, 128},
    {"llama2-7b", 32, 32, 128}, /* no GQA (G = 1, 32 KV heads); in no grid, for --shape and --model */
};
#define N_MODELS ((int)(sizeof MODELS / sizeof MODELS[0]))

typedef enum kv_type { KV_F16 = 0, KV_BF16, KV_I8, KV_TYPE_COUNT } kv_type;
static const char *const KV_NAMES[KV_TYPE_COUNT] = {"float16", "bfloat16", "int8"};
static const char *const KV_SHORT[KV_TYPE_COUNT] = {"fp16", "bf16", "int8"};
static const size_t KV_SIZE[KV_TYPE_COUNT] = {2, 2, 1};

typedef struct shape {
    int model;
    int64_t batch, len, block_size;
    kv_type dtype;
    int sparse_den; /* 1: dense; 8 or 32: that fraction of the pages selected per KV head */
} shape;

/* A block of the grid: the cartesian product of its axes. Axis lists end at 0 (or -1). */
typedef struct grid_block {
    int models[4];        /* model index + 1, 0-terminated */
    int64_t batch[4], len[4], block_size[3];
    int dtypes[4];        /* kv_type + 1, 0-terminated */
    int sparse[4];        /* 1, 8, 32, 0-terminated */
} grid_block;

#define K4 4096
#define K32 32768
/* The quick grid: one model at B=1 over every axis, plus a few points of the others. */
static const grid_block GRID_QUICK[] = {
    {{1}, {1}, {512, K4, K32}, {128}, {1, 2, 3}, {1}},
    {{1}, {4}, {K4}, {128}, {1}, {1}},
    {{2, 3}, {1}, {K4}, {128}, {1}, {1}},
    {{1}, {1}, {K4, K32}, {16}, {1}, {1}},
    {{1}, {1}, {K32}, {16, 128}, {1}, {8, 32}},
};
/* The default grid: every model, batch and length for fp16 at block size 128; bf16 and int8,
 * block size 16 and the sparse selections on Llama-3-8B. */
static const grid_block GRID_DEFAULT[] = {
    {{1, 2, 3}, {1, 4, 16}, {512, K4, K32}, {128}, {1}, {1}},
    {{1}, {1, 4, 16}, {512, K4, K32}, {128}, {2, 3}, {1}},
    {{1}, {1, 4, 16}, {512, K4, K32}, {16}, {1}, {1}},
    {{1}, {4}, {K4, K32}, {16}, {2, 3}, {1}},
    {{1}, {1, 4, 16}, {K32}, {16, 128}, {1}, {8, 32}},
    {{1}, {4}, {K4, K32}, {16, 128}, {2, 3}, {8, 32}},
};
/* Every combination of the axes (486 shapes; hours with torch). */
static const grid_block GRID_ALL[] = {
    {{1, 2, 3}, {1, 4, 16}, {512, K4, K32}, {16, 128}, {1, 2, 3}, {1, 8, 32}},
};

/* Filters from the command line: a shape is kept when each axis value is listed (or the axis is
 * not filtered). */
typedef struct filter {
    int models[N_MODELS + 1], n_models;
    int64_t batch[16], len[16], block_size[16];
    int n_batch, n_len, n_block_size;
    int dtypes[KV_TYPE_COUNT], n_dtypes;
    int sparse[8], n_sparse;
} filter;

static int in_list_i(const int *list, int n, int v) {
    if (n == 0) return 1;
    for (int i = 0; i < n; i++)
        if (list[i] == v) return 1;
    return 0;
}

static int in_list_l(const int64_t *list, int n, int64_t v) {
    if (n == 0) return 1;
    for (int i = 0; i < n; i++)
        if (list[i] == v) return 1;
    return 0;
}

static int shape_kept(const filter *f, const shape *s) {
    return in_list_i(f->models, f->n_models, s->model) && in_list_l(f->batch, f->n_batch, s->batch) &&
           in_list_l(f->len, f->n_len, s->len) &&
           in_list_l(f->block_size, f->n_block_size, s->block_size) &&
           in_list_i(f->dtypes, f->n_dtypes, (int)s->dtype) &&
           in_list_i(f->sparse, f->n_sparse, s->sparse_den);
}

static int shape_equal(const shape *a, const shape *b) {
    return a->model == b->model && a->batch == b->batch && a->len == b->len &&
           a->block_size == b->block_size && a->dtype == b->dtype && a->sparse_den == b->sparse_den;
}

/* Appends the shapes of the grid blocks that pass the filter, without duplicates. */
static int expand_grid(const grid_block *blocks, int n_blocks, const filter *f, shape *out, int cap,
                       int count) {
    for (int g = 0; g < n_blocks; g++) {
        const grid_block *gb = &blocks[g];
        for (int im = 0; im < 4 && gb->models[im]; im++)
            for (int ib = 0; ib < 4 && gb->batch[ib]; ib++)
                for (int il = 0; il < 4 && gb->len[il]; il++)
                    for (int is = 0; is < 3 && gb->block_size[is]; is++)
                        for (int id = 0; id < 4 && gb->dtypes[id]; id++)
                            for (int ip = 0; ip < 4 && gb->sparse[ip]; ip++) {
                                const shape s = {gb->models[im] - 1, gb->batch[ib], gb->len[il],
                                                 gb->block_size[is], (kv_type)(gb->dtypes[id] - 1),
                                                 gb->sparse[ip]};
                                if (!shape_kept(f, &s)) continue;
                                int dup = 0;
                                for (int k = 0; k < count; k++) dup |= shape_equal(&out[k], &s);
                                if (!dup && count < cap) out[count++] = s;
                            }
    }
    return count;
}

/* ---- Random contents ------------------------------------------------------------------------ */

static uint64_t rng_next(uint64_t *state) {
    /* xorshift64*: fast, and good enough for filling a cache with noise. */
    uint64_t x = *state;
    x ^= x >> 12;
    x ^= x << 25;
    x ^= x >> 27;
    *state = x;
    return x * 0x2545F4914F6CDD1DULL;
}

static double rng_uniform(uint64_t *state) { return (double)(rng_next(state) >> 11) * 0x1p-53; }

/* float -> IEEE binary16 bits, round to nearest even; |f| stays well inside the normal range here,
 * but subnormals and overflow are still handled. */
static uint16_t f32_to_f16(float f) {
    uint32_t x;
    memcpy(&x, &f, sizeof x);
    const uint32_t sign = (x >> 16) & 0x8000u;
    const int32_t exp = (int32_t)((x >> 23) & 0xFF) - 127 + 15;
    uint32_t mant = x & 0x7FFFFFu;
    if (exp >= 31) return (uint16_t)(sign | 0x7C00u);
    if (exp <= 0) {
        if (exp < -10) return (uint16_t)sign;
        mant |= 0x800000u;
        const uint32_t shift = (uint32_t)(14 - exp);
        uint32_t h = mant >> shift;
        const uint32_t rem = mant & ((1u << shift) - 1u), half = 1u << (shift - 1u);
        if (rem > half || (rem == half && (h & 1u))) h++;
        return (uint16_t)(sign | h);
    }
    uint32_t h = ((uint32_t)exp << 10) | (mant >> 13);
    const uint32_t rem = mant & 0x1FFFu;
    if (rem > 0x1000u || (rem == 0x1000u && (h & 1u))) h++;
    return (uint16_t)(sign | h);
}

static uint16_t f32_to_bf16(float f) {
    uint32_t x;
    memcpy(&x, &f, sizeof x);
    x += 0x7FFFu + ((x >> 16) & 1u);
    return (uint16_t)(x >> 16);
}

/* 65536 random 16-bit values per 16-bit dtype, uniform in [-1, 1); a fill draws indices into it. */
static uint16_t table_f16[65536], table_bf16[65536];

static void build_tables(void) {
    uint64_t st = 0x9E3779B97F4A7C15ULL;
    for (int i = 0; i < 65536; i++) {
        const float v = (float)(2.0 * rng_uniform(&st) - 1.0);
        table_f16[i] = f32_to_f16(v);
        table_bf16[i] = f32_to_bf16(v);
    }
}

typedef struct fill_ctx {
    uint8_t *dst;
    size_t bytes;
    kv_type dtype;
    uint64_t seed;
} fill_ctx;

static void fill_task(void *p, int thread, int threads) {
    const fill_ctx *c = p;
    const size_t words = c->bytes / 8;
    const size_t b = words * (size_t)thread / (size_t)threads;
    const size_t e = words * (size_t)(thread + 1) / (size_t)threads;
    uint64_t st = c->seed ^ (0xD1B54A32D192ED03ULL * (uint64_t)(thread + 1));
    const uint16_t *table = c->dtype == KV_BF16 ? table_bf16 : table_f16;
    uint64_t *w = (uint64_t *)(void *)c->dst;
    for (size_t i = b; i < e; i++) {
        const uint64_t r = rng_next(&st);
        if (c->dtype == KV_I8) {
            w[i] = r; /* random int8 values over the whole range */
        } else {
            w[i] = (uint64_t)table[r & 0xFFFF] | (uint64_t)table[(r >> 16) & 0xFFFF] << 16 |
                   (uint64_t)table[(r >> 32) & 0xFFFF] << 32 | (uint64_t)table[r >> 48] << 48;
        }
    }
    if (thread == threads - 1)
        for (size_t i = words * 8; i < c->bytes; i++) c->dst[i] = 0;
}

/* ---- One shape ------------------------------------------------------------------------------ */

typedef struct options {
    int threads;
    int min_reps, max_reps;
    double budget_s;          /* time spent on repetitions of one shape, beyond min_reps */
    int warm;                 /* 1: no rotation, the cache may stay in L3 */
    int huge_pages;           /* 1: the cache on transparent huge pages (madvise) */
    int gap_us;               /* pause before each call: the rest of a decode step, during which
                                 the library's worker threads go to sleep */
    double cold_bytes;        /* footprint the rotation aims for */
    double max_cache_bytes;   /* shapes whose KV pool would exceed this are skipped */
    int bnsd;                 /* 1: 4-D paged cache (num_blocks, KVN, bs, D) with layout BNSD */
    size_t bw_bytes;
    int bw_reps;
    int verbose;
    int ab; /* 1: alternate the library's experiment switch call by call (--ab) */
} options;

typedef struct machine {
    int threads;
    double bw1, bwT, bw1_median, bwT_median; /* GB/s; bwT is the figure fractions divide by */
    double bw_start, bw_end;                 /* T threads, before and after the shapes */
    bench_mac_rate mac[BENCH_MAC_KIND_COUNT];
} machine;

typedef struct result {
    shape s;
    int ok;
    char error[256];
    int64_t pages_per_seq, pages_selected, tokens; /* tokens a KV head attends to */
    double kv_bytes, macs;
    double best_s, median_s;
    int reps, rotations;
    double gbps, bw_fraction, bw_time_s, compute_time_s, roofline_s, roofline_fraction;
    const char *bound;
    const char *mac_instruction;
    /* --ab: calls of form 0 and form 1 in adjacent pairs; the quartiles of time0 / time1 over the
     * pairs (above 1: form 1 faster) and each form's best call */
    int ab_pairs;
    double ab_ratio_q1, ab_ratio_median, ab_ratio_q3, ab_best0_s, ab_best1_s;
} result;

/* The multiply-add instruction whose rate limits a KV dtype (see docs/benchmarks.md). */
static bench_mac_kind mac_kind_for(kv_type t, const machine *m) {
    bench_mac_kind k = BENCH_MAC_FMA_F32;
    if (t == KV_BF16) k = BENCH_MAC_DPBF16;
    if (t == KV_I8) k = BENCH_MAC_DPBUSD;
    if (m->mac[k].instruction == NULL) k = BENCH_MAC_FMA_F32;
    return k;
}

static void roofline(result *r, const machine *m) {
    const bench_mac_rate *rate = &m->mac[mac_kind_for(r->s.dtype, m)];
    r->mac_instruction = rate->instruction ? rate->instruction : "none";
    r->bw_time_s = m->bwT > 0 ? r->kv_bytes / (m->bwT * 1e9) : 0.0;
    r->compute_time_s = rate->macs_per_ns > 0 ? r->macs / (rate->macs_per_ns * 1e9) : 0.0;
    r->roofline_s = r->bw_time_s > r->compute_time_s ? r->bw_time_s : r->compute_time_s;
    r->bound = r->bw_time_s >= r->compute_time_s ? "memory" : "compute";
    r->gbps = r->best_s > 0 ? r->kv_bytes / r->best_s / 1e9 : 0.0;
    r->bw_fraction = m->bwT > 0 ? r->gbps / m->bwT : 0.0;
    r->roofline_fraction = r->best_s > 0 ? r->roofline_s / r->best_s : 0.0;
}

static int compare_doubles(const void *a, const void *b) {
    const double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

/* Fisher-Yates shuffle of [0, n). */
static void shuffle_i32(int32_t *v, int64_t n, uint64_t *st) {
    for (int64_t i = n - 1; i > 0; i--) {
        const int64_t j = (int64_t)(rng_next(st) % (uint64_t)(i + 1));
        const int32_t t = v[i];
        v[i] = v[j];
        v[j] = t;
    }
}

/* Fills one block_position (B, KVN, M): per (batch, KV head) `k` distinct random pages in
 * ascending order, then the sentinel. */
static void make_selection(int32_t *bp, int64_t B, int64_t KVN, int64_t M, int64_t k, int32_t *tmp,
                           uint64_t *st) {
    for (int64_t b = 0; b < B; b++)
        for (int64_t h = 0; h < KVN; h++) {
            for (int64_t j = 0; j < M; j++) tmp[j] = (int32_t)j;
            /* A partial shuffle picks k pages; marking them and scanning keeps them ascending. */
            for (int64_t i = 0; i < k; i++) {
                const int64_t j = i + (int64_t)(rng_next(st) % (uint64_t)(M - i));
                const int32_t t = tmp[i];
                tmp[i] = tmp[j];
                tmp[j] = t;
            }
            int32_t *row = bp + (b * KVN + h) * M;
            for (int64_t j = 0; j < M; j++) row[j] = 0;
            for (int64_t i = 0; i < k; i++) row[tmp[i]] = 1;
            int64_t n = 0;
            for (int64_t j = 0; j < M; j++)
                if (row[j]) row[n++] = (int32_t)j;
            for (; n < M; n++) row[n] = IFA_BLOCK_UNSELECTED;
        }
}

static int64_t min_i64(int64_t a, int64_t b) { return a < b ? a : b; }
static int64_t max_i64(int64_t a, int64_t b) { return a > b ? a : b; }

static void set_error(result *r, const char *what, ifa_status st) {
    snprintf(r->error, sizeof r->error, "%s: %s (%s)", what, ifa_status_string(st), ifa_last_error());
}

static result run_shape(const shape *s, const options *o, const machine *mc) {
    result r = {.s = *s};
    const model *md = &MODELS[s->model];
    const int64_t B = s->batch, N = md->num_heads, KVN = md->kv_heads, D = md->head_dim;
    const int64_t G = N / KVN, bs = s->block_size;
    const int64_t M = (s->len + bs - 1) / bs;
    const int64_t k = s->sparse_den == 1 ? M : max_i64(1, M / s->sparse_den);
    const size_t es = KV_SIZE[s->dtype];
    r.pages_per_seq = M;
    r.pages_selected = k;
    r.tokens = s->sparse_den == 1 ? s->len : k * bs;
    r.kv_bytes = (double)B * (double)KVN * (double)r.tokens * (double)D * 2.0 * (double)es;
    r.macs = (double)B * (double)KVN * (double)r.tokens * 2.0 * (double)G * (double)D;

    /* How many copies of the cache (block tables) and page selections to rotate over. */
    const double copy_bytes = (double)B * (double)M * (double)bs * (double)KVN * (double)D * 2.0 * (double)es;
    int64_t n_tables = 1, n_rot = 1;
    if (!o->warm) {
        n_tables = min_i64(64, max_i64(1, (int64_t)ceil(o->cold_bytes / copy_bytes)));
        n_rot = min_i64(64, max_i64(n_tables, (int64_t)ceil(o->cold_bytes / r.kv_bytes)));
        if (s->sparse_den == 1) n_rot = n_tables;
    }
    r.rotations = (int)n_rot;
    if (copy_bytes * (double)n_tables > o->max_cache_bytes) {
        snprintf(r.error, sizeof r.error, "skipped: the KV pool would take %.2f GiB (limit %.2f)",
                 copy_bytes * (double)n_tables / 1073741824.0, o->max_cache_bytes / 1073741824.0);
        return r;
    }

    const int64_t blocks_per_copy = B * M;
    const int64_t num_blocks = blocks_per_copy * n_tables;
    const size_t cache_bytes = (size_t)num_blocks * (size_t)bs * (size_t)KVN * (size_t)D * es;
    uint8_t *kc = NULL, *vc = NULL;
    /* --huge-pages: 2 MiB-aligned and advised, so the kernel backs the cache with huge pages
     * (measured: 1.00-1.03x against 4 KiB pages; docs/benchmarks.md, Huge pages). */
    const size_t align = o->huge_pages ? (size_t)2 << 20 : 4096;
    if (posix_memalign((void **)&kc, align, cache_bytes) != 0) kc = NULL;
    if (posix_memalign((void **)&vc, align, cache_bytes) != 0) vc = NULL;
#ifdef MADV_HUGEPAGE
    if (o->huge_pages && kc != NULL && vc != NULL) {
        (void)madvise(kc, cache_bytes, MADV_HUGEPAGE);
        (void)madvise(vc, cache_bytes, MADV_HUGEPAGE);
    }
#endif
    int32_t *tables = malloc(sizeof(int32_t) * (size_t)(blocks_per_copy * n_tables));
    int32_t *bps = s->sparse_den == 1 ? NULL : malloc(sizeof(int32_t) * (size_t)(B * KVN * M * n_rot));
    int32_t *tmp = malloc(sizeof(int32_t) * (size_t)max_i64(M, 1));
    const size_t q_elems = (size_t)(B * N * D);
    uint16_t *q = malloc(q_elems * 2), *out = malloc(q_elems * 2);
    uint16_t *aq_scale = malloc(2 * (size_t)(KVN * D) * 2), *aq_offset = malloc(2 * (size_t)(KVN * D) * 2);
    double *times = malloc(sizeof(double) * (size_t)(o->max_reps > 0 ? o->max_reps : 1));
    /* --ab: the form (0 or 1) of each timed call */
    unsigned char *form = o->ab ? malloc((size_t)(o->max_reps > 0 ? o->max_reps : 1)) : NULL;
    if (!kc || !vc || !tables || (s->sparse_den != 1 && !bps) || !tmp || !q || !out || !aq_scale ||
        !aq_offset || !times || (o->ab && !form)) {
        snprintf(r.error, sizeof r.error, "out of memory (KV pool %.2f GiB)",
                 2.0 * (double)cache_bytes / 1073741824.0);
        goto done;
    }

    /* Contents. */
    {
        uint64_t st = 0x1234567ULL + (uint64_t)s->len * 31u + (uint64_t)B;
        fill_ctx fk = {kc, cache_bytes, s->dtype, rng_next(&st)};
        fill_ctx fv = {vc, cache_bytes, s->dtype, rng_next(&st)};
        bench_parallel_best(fill_task, &fk, o->threads, 1, NULL);
        bench_parallel_best(fill_task, &fv, o->threads, 1, NULL);
        const int qbf16 = s->dtype == KV_BF16;
        for (size_t i = 0; i < q_elems; i++) {
            const float v = (float)(2.0 * rng_uniform(&st) - 1.0);
            q[i] = qbf16 ? f32_to_bf16(v) : f32_to_f16(v);
        }
        /* int8 KV: per-channel scale and offset in the query's dtype (float16), K at index 0. */
        for (int64_t i = 0; i < 2 * KVN * D; i++) {
            aq_scale[i] = f32_to_f16((float)(0.004 + 0.004 * rng_uniform(&st)));
            aq_offset[i] = f32_to_f16((float)(4.0 * rng_uniform(&st) - 2.0));
        }
        for (int64_t t = 0; t < n_tables; t++) {
            int32_t *tab = tables + t * blocks_per_copy;
            for (int64_t i = 0; i < blocks_per_copy; i++) tab[i] = (int32_t)(t * blocks_per_copy + i);
            shuffle_i32(tab, blocks_per_copy, &st);
        }
        for (int64_t t = 0; bps && t < n_rot; t++) make_selection(bps + t * B * KVN * M, B, KVN, M, k, tmp, &st);
    }

    /* Parameters, as a user of the API fills them. */
    ifa_params p;
    ifa_params_init(&p);
    const ifa_dtype qdt = s->dtype == KV_BF16 ? IFA_DTYPE_BFLOAT16 : IFA_DTYPE_FLOAT16;
    const ifa_dtype kdt = s->dtype == KV_BF16 ? IFA_DTYPE_BFLOAT16
                          : s->dtype == KV_I8 ? IFA_DTYPE_INT8
                                              : IFA_DTYPE_FLOAT16;
    ifa_tensor kt, vt, ot;
    if (o->bnsd) {
        const int64_t qs[4] = {B, N, 1, D}, cs[4] = {num_blocks, KVN, bs, D};
        p.query = ifa_tensor_make(q, qdt, 4, qs, NULL);
        kt = ifa_tensor_make(kc, kdt, 4, cs, NULL);
        vt = ifa_tensor_make(vc, kdt, 4, cs, NULL);
        ot = ifa_tensor_make(out, qdt, 4, qs, NULL);
        p.layout = "BNSD";
    } else {
        const int64_t qs[3] = {B, 1, N * D}, cs[3] = {num_blocks, bs, KVN * D};
        p.query = ifa_tensor_make(q, qdt, 3, qs, NULL);
        kt = ifa_tensor_make(kc, kdt, 3, cs, NULL);
        vt = ifa_tensor_make(vc, kdt, 3, cs, NULL);
        ot = ifa_tensor_make(out, qdt, 3, qs, NULL);
        p.layout = "BSH";
    }
    p.key = &kt;
    p.value = &vt;
    p.kv_count = 1;
    int64_t seq_len = s->sparse_den == 1 ? s->len : k * bs;
    const int64_t one = 1;
    p.actual_seq_lengths = ifa_tensor_make(&seq_len, IFA_DTYPE_INT64, 1, &one, NULL);
    p.num_heads = N;
    p.key_num_heads = KVN;
    p.scale_value = 1.0 / sqrt((double)D);
    p.block_size = bs;
    p.inner_precise = 1;
    if (s->dtype == KV_I8) {
        const int64_t as[2] = {2, KVN * D};
        p.antiquant_scale = ifa_tensor_make(aq_scale, IFA_DTYPE_FLOAT16, 2, as, NULL);
        p.antiquant_offset = ifa_tensor_make(aq_offset, IFA_DTYPE_FLOAT16, 2, as, NULL);
    }
    const int64_t ts[2] = {B, M}, ps[3] = {B, KVN, M};

    /* Every rotation is validated once up front, so a harness bug shows as an error, not a time. */
    for (int64_t t = 0; t < n_rot; t++) {
        p.block_table = ifa_tensor_make(tables + (t % n_tables) * blocks_per_copy, IFA_DTYPE_INT32, 2, ts, NULL);
        if (bps) p.block_position = ifa_tensor_make(bps + t * B * KVN * M, IFA_DTYPE_INT32, 3, ps, NULL);
        const ifa_status st = ifa_validate(&p);
        if (st != IFA_OK) {
            set_error(&r, "ifa_validate", st);
            goto done;
        }
    }

    /* One warm-up call, then repetitions until min_reps are done and the budget is spent. */
    int reps = 0;
    const double t_start = bench_now();
    for (int rep = -1; rep < o->max_reps; rep++) {
        const int64_t t = (rep + 1) % n_rot;
        p.block_table = ifa_tensor_make(tables + (t % n_tables) * blocks_per_copy, IFA_DTYPE_INT32, 2, ts, NULL);
        if (bps) p.block_position = ifa_tensor_make(bps + t * B * KVN * M, IFA_DTYPE_INT32, 3, ps, NULL);
        if (o->gap_us > 0) {
            const struct timespec gap = {o->gap_us / 1000000, (long)(o->gap_us % 1000000) * 1000};
            nanosleep(&gap, NULL);
        }
#ifdef IFA_EXPERIMENT
        /* --ab: the forms alternate call by call. With an even number of copies of the cache their
         * order shifts by one at every turn of the rotation, so that every copy serves both forms;
         * an odd number (one copy with --warm) needs no shift, and with one the shift made every
         * call form 0. */
        const int64_t call = rep + 1;
        const int f = o->ab ? (int)((n_rot % 2 == 0 ? call + call / n_rot : call) & 1) : 0;
        ifa__experiment = f;
        if (o->ab && rep >= 0) form[reps] = (unsigned char)f;
#endif
        const double t0 = bench_now();
        const ifa_status st = ifa_incre_flash_attention_v5(&p, &ot);
        const double dt = bench_now() - t0;
        if (st != IFA_OK) {
            set_error(&r, "ifa_incre_flash_attention_v5", st);
            goto done;
        }
        if (rep >= 0) times[reps++] = dt;
        if (reps >= o->min_reps && bench_now() - t_start > o->budget_s) break;
    }
    if (o->ab) {
        /* Ratios of adjacent calls of the two forms, which met the host in the same few
         * milliseconds: the host's swings, which last seconds, cancel out of them. */
        double *ratio = malloc(sizeof *ratio * (size_t)(reps / 2 + 1));
        if (ratio == NULL) {
            snprintf(r.error, sizeof r.error, "out of memory");
            goto done;
        }
        r.ab_best0_s = r.ab_best1_s = 1e30;
        for (int i = 0; i < reps; i++) {
            double *best = form[i] ? &r.ab_best1_s : &r.ab_best0_s;
            if (times[i] < *best) *best = times[i];
        }
        int pairs = 0;
        for (int i = 0; i + 1 < reps; i++)
            if (form[i] != form[i + 1]) {
                ratio[pairs++] = form[i] ? times[i + 1] / times[i] : times[i] / times[i + 1];
                i++; /* each call in one pair only */
            }
        qsort(ratio, (size_t)pairs, sizeof *ratio, compare_doubles);
        r.ab_pairs = pairs;
        if (pairs > 0) {
            r.ab_ratio_q1 = ratio[pairs / 4];
            r.ab_ratio_median = ratio[pairs / 2];
            r.ab_ratio_q3 = ratio[3 * pairs / 4];
        }
        free(ratio);
    }
    qsort(times, (size_t)reps, sizeof *times, compare_doubles);
    r.best_s = times[0];
    r.median_s = times[reps / 2];
    r.reps = reps;
    r.ok = 1;
    roofline(&r, mc);

done:
    free(form);
    free(kc);
    free(vc);
    free(tables);
    free(bps);
    free(tmp);
    free(q);
    free(out);
    free(aq_scale);
    free(aq_offset);
    free(times);
    return r;
}

/* The fixed cost of one call: B=1, Llama-3-8B heads, one page of 16 fp16 tokens, warm cache.
 * Each call is timed alone; the best and the median of `calls` calls are returned, in seconds. */
static void fixed_cost(int calls, double *best, double *median) {
    const model *md = &MODELS[0];
    const int64_t N = md->num_heads, KVN = md->kv_heads, D = md->head_dim, bs = 16;
    uint16_t *q = calloc((size_t)(N * D), 2), *out = calloc((size_t)(N * D), 2);
    uint16_t *kc = calloc((size_t)(bs * KVN * D), 2), *vc = calloc((size_t)(bs * KVN * D), 2);
    double *times = malloc(sizeof(double) * (size_t)calls);
    *best = *median = 0.0;
    if (q && out && kc && vc && times) {
        const int64_t qs[3] = {1, 1, N * D}, cs[3] = {1, bs, KVN * D}, one = 1;
        int32_t table = 0;
        int64_t len = bs;
        ifa_params p;
        ifa_params_init(&p);
        p.query = ifa_tensor_make(q, IFA_DTYPE_FLOAT16, 3, qs, NULL);
        const ifa_tensor kt = ifa_tensor_make(kc, IFA_DTYPE_FLOAT16, 3, cs, NULL);
        const ifa_tensor vt = ifa_tensor_make(vc, IFA_DTYPE_FLOAT16, 3, cs, NULL);
        ifa_tensor ot = ifa_tensor_make(out, IFA_DTYPE_FLOAT16, 3, qs, NULL);
        p.key = &kt;
        p.value = &vt;
        p.kv_count = 1;
        p.block_table = ifa_tensor_make(&table, IFA_DTYPE_INT32, 2, (const int64_t[]){1, 1}, NULL);
        p.actual_seq_lengths = ifa_tensor_make(&len, IFA_DTYPE_INT64, 1, &one, NULL);
        p.num_heads = N;
        p.key_num_heads = KVN;
        p.block_size = bs;
        p.scale_value = 1.0 / sqrt((double)D);
        int n = 0;
        for (int i = -10; i < calls; i++) {
            const double t0 = bench_now();
            const ifa_status st = ifa_incre_flash_attention_v5(&p, &ot);
            const double dt = bench_now() - t0;
            if (st != IFA_OK) {
                fprintf(stderr, "fixed cost: %s (%s)\n", ifa_status_string(st), ifa_last_error());
                break;
            }
            if (i >= 0) times[n++] = dt;
        }
        if (n > 0) {
            qsort(times, (size_t)n, sizeof *times, compare_doubles);
            *best = times[0];
            *median = times[n / 2];
        }
    }
    free(q);
    free(out);
    free(kc);
    free(vc);
    free(times);
}

/* ---- Output --------------------------------------------------------------------------------- */

static void cpu_model(char *buf, size_t n) {
    snprintf(buf, n, "unknown");
    FILE *f = fopen("/proc/cpuinfo", "r");
    if (f == NULL) return;
    char line[512];
    while (fgets(line, sizeof line, f)) {
        if (strncmp(line, "model name", 10) == 0) {
            const char *c = strchr(line, ':');
            if (c) {
                c++;
                while (*c == ' ') c++;
                snprintf(buf, n, "%s", c);
                buf[strcspn(buf, "\n")] = '\0';
            }
            break;
        }
    }
    fclose(f);
}

static void print_machine(const machine *m, const options *o) {
    char cpu[256];
    cpu_model(cpu, sizeof cpu);
    printf("# ifa_bench %s: IFA-V5 decode attention, libifa C API\n", ifa_version());
    printf("# cpu: %s, %ld online CPUs\n", cpu, sysconf(_SC_NPROCESSORS_ONLN));
    printf("# isa: %s (available: %s); threads: %d\n", ifa_isa_name(), ifa_isa_available(), m->threads);
    printf("# read bandwidth (%.0f MiB, best of %d): %.1f GB/s with 1 thread, %.1f GB/s with %d "
           "(medians %.1f, %.1f)\n",
           (double)o->bw_bytes / 1048576.0, o->bw_reps, m->bw1, m->bwT, m->threads, m->bw1_median,
           m->bwT_median);
    for (int k = 0; k < BENCH_MAC_KIND_COUNT; k++) {
        const bench_mac_rate *r = &m->mac[k];
        if (r->instruction == NULL) continue;
        printf("# peak %-16s %5.2f per ns per core: %6.1f multiply-adds per ns on %d cores "
               "(%.1f measured together)\n",
               r->instruction, r->instr_per_ns_core, r->macs_per_ns, m->threads, r->macs_per_ns_run);
    }
    printf("# cache: %s; %s pages\n", o->warm ? "warm (one copy, may sit in L3)"
                                             : "cold (repetitions rotate over copies of >= the cold footprint)",
           o->huge_pages ? "huge" : "4 KiB");
}

static const char *sparse_name(int den) {
    switch (den) {
    case 1: return "dense";
    case 8: return "1/8";
    case 32: return "1/32";
    default: return "?";
    }
}

static void print_header(void) {
    printf("%-11s %3s %6s %4s %-5s %-6s %7s %9s %9s %7s %6s %9s %6s %-7s\n", "model", "B", "L", "bs",
           "kv", "sparse", "tokens", "KV MiB", "best ms", "GB/s", "bw", "roof ms", "roof", "bound");
}

static void print_result(const result *r) {
    const shape *s = &r->s;
    printf("%-11s %3lld %6lld %4lld %-5s %-6s ", MODELS[s->model].name, (long long)s->batch,
           (long long)s->len, (long long)s->block_size, KV_SHORT[s->dtype], sparse_name(s->sparse_den));
    if (!r->ok) {
        printf("%s\n", r->error);
    } else {
        printf("%7lld %9.1f %9.3f %7.2f %6.3f %9.3f %6.3f %-7s\n", (long long)r->tokens,
               r->kv_bytes / 1048576.0, r->best_s * 1e3, r->gbps, r->bw_fraction, r->roofline_s * 1e3,
               r->roofline_fraction, r->bound);
        if (r->ab_pairs > 0)
            printf("#   ab: %d pairs, time(form 0) / time(form 1): median %.4f (quartiles %.4f %.4f); "
                   "best %.4f and %.4f ms\n",
                   r->ab_pairs, r->ab_ratio_median, r->ab_ratio_q1, r->ab_ratio_q3, r->ab_best0_s * 1e3,
                   r->ab_best1_s * 1e3);
    }
    fflush(stdout);
}

static void json_machine(FILE *f, const machine *m, const options *o) {
    char cpu[256];
    cpu_model(cpu, sizeof cpu);
    fprintf(f, "  \"machine\": {\n    \"cpu\": \"%s\",\n    \"online_cpus\": %ld,\n", cpu,
            sysconf(_SC_NPROCESSORS_ONLN));
    fprintf(f, "    \"isa\": \"%s\",\n    \"isa_available\": \"%s\",\n    \"threads\": %d,\n",
            ifa_isa_name(), ifa_isa_available(), m->threads);
    fprintf(f, "    \"bandwidth_probe_bytes\": %zu,\n    \"bandwidth_reps\": %d,\n", o->bw_bytes, o->bw_reps);
    fprintf(f, "    \"bandwidth_gbps_1_thread\": %.3f,\n    \"bandwidth_gbps\": %.3f,\n", m->bw1, m->bwT);
    fprintf(f, "    \"bandwidth_gbps_1_thread_median\": %.3f,\n    \"bandwidth_gbps_median\": %.3f,\n",
            m->bw1_median, m->bwT_median);
    fprintf(f, "    \"mac_rates\": {");
    static const char *const keys[BENCH_MAC_KIND_COUNT] = {"fma_f32", "dpbf16", "dpbusd"};
    for (int k = 0; k < BENCH_MAC_KIND_COUNT; k++) {
        const bench_mac_rate *r = &m->mac[k];
        fprintf(f, "%s\n      \"%s\": ", k ? "," : "", keys[k]);
        if (r->instruction == NULL)
            fprintf(f, "null");
        else
            fprintf(f,
                    "{\"instruction\": \"%s\", \"macs_per_instruction\": %d, "
                    "\"instr_per_ns_core\": %.4f, \"macs_per_ns\": %.3f, \"macs_per_ns_measured\": %.3f}",
                    r->instruction, r->macs_per_instruction, r->instr_per_ns_core, r->macs_per_ns,
                    r->macs_per_ns_run);
    }
    fprintf(f, "\n    }\n  }");
}

static void json_result(FILE *f, const result *r, const options *o, int threads) {
    const shape *s = &r->s;
    const model *md = &MODELS[s->model];
    fprintf(f,
            "    {\"model\": \"%s\", \"num_heads\": %lld, \"key_num_heads\": %lld, \"head_dim\": %lld, "
            "\"batch\": %lld, \"seq_len\": %lld, \"block_size\": %lld, \"kv_dtype\": \"%s\", "
            "\"sparsity\": \"%s\", \"kv_layout\": \"%s\", \"threads\": %d, \"ok\": %s",
            md->name, (long long)md->num_heads, (long long)md->kv_heads, (long long)md->head_dim,
            (long long)s->batch, (long long)s->len, (long long)s->block_size, KV_NAMES[s->dtype],
            sparse_name(s->sparse_den), o->bnsd ? "BNSD" : "BSH", threads, r->ok ? "true" : "false");
    if (!r->ok) {
        fprintf(f, ", \"error\": \"");
        for (const char *c = r->error; *c; c++) {
            if (*c == '"' || *c == '\\') fputc('\\', f);
            fputc(*c >= 32 ? *c : ' ', f);
        }
        fprintf(f, "\"}");
        return;
    }
    fprintf(f,
            ", \"pages_per_seq\": %lld, \"pages_selected\": %lld, \"tokens_per_head\": %lld, "
            "\"kv_bytes\": %.0f, \"macs\": %.0f, \"reps\": %d, \"rotations\": %d, \"time_s\": %.9g, "
            "\"time_median_s\": %.9g, \"gbps\": %.4f, \"bw_fraction\": %.4f, \"bw_time_s\": %.9g, "
            "\"compute_time_s\": %.9g, \"roofline_s\": %.9g, \"roofline_fraction\": %.4f, "
            "\"bound\": \"%s\", \"mac_instruction\": \"%s\"",
            (long long)r->pages_per_seq, (long long)r->pages_selected, (long long)r->tokens, r->kv_bytes,
            r->macs, r->reps, r->rotations, r->best_s, r->median_s, r->gbps, r->bw_fraction, r->bw_time_s,
            r->compute_time_s, r->roofline_s, r->roofline_fraction, r->bound, r->mac_instruction);
    if (r->ab_pairs > 0)
        fprintf(f,
                ", \"ab\": {\"pairs\": %d, \"ratio_q1\": %.5f, \"ratio_median\": %.5f, \"ratio_q3\": %.5f, "
                "\"best0_s\": %.9g, \"best1_s\": %.9g}",
                r->ab_pairs, r->ab_ratio_q1, r->ab_ratio_median, r->ab_ratio_q3, r->ab_best0_s,
                r->ab_best1_s);
    fputc('}', f);
}

/* ---- Command line --------------------------------------------------------------------------- */

static void usage(FILE *f) {
    fprintf(f,
            "usage: ifa_bench [options]\n"
            "  --quick              the quick grid (about 20 shapes)\n"
            "  --grid NAME          quick | default | all (every combination, 486 shapes)\n"
            "  --model LIST         llama3-8b,qwen2.5-7b,llama3-70b (keeps those of the grid;\n"
            "                       llama2-7b, 32 KV heads without GQA, only with --shape)\n"
            "  --batch LIST         e.g. 1,4,16        --len LIST        e.g. 512,4096,32768\n"
            "  --block-size LIST    e.g. 16,128        --dtype LIST      fp16,bf16,int8\n"
            "  --sparsity LIST      dense,1/8,1/32\n"
            "  --shape M:B:L:BS:DT:SP  one explicit shape, e.g. llama3-8b:4:4096:128:fp16:dense\n"
            "                       (repeatable; replaces the grid)\n"
            "  --threads N          threads of the library and of the probes (default: library's)\n"
            "  --isa NAME           force ref | avx2 | avx512\n"
            "  --min-reps N --max-reps N --budget S   repetitions per shape (defaults 5, 200, 1.0)\n"
            "  --warm               do not rotate copies of the cache (it may stay in L3)\n"
            "  --huge-pages         the cache on transparent huge pages (madvise; Linux)\n"
            "  --gap-us N           pause N us before each call, as the rest of a decode step would\n"
            "                       (the worker threads fall asleep between calls; default 0)\n"
            "  --bnsd               4-D paged cache (num_blocks, KVN, bs, D), layout BNSD\n"
            "  --ab                 builds with -DIFA_EXPERIMENT=ON: alternate the library's\n"
            "                       experiment switch call by call and print, per shape, the\n"
            "                       quartiles of time(form 0) / time(form 1) over adjacent pairs\n"
            "                       (default reps then: at least 200, until the budget is spent)\n"
            "  --max-cache-gib X    skip shapes whose KV pool exceeds X GiB (default 4)\n"
            "  --bw-mib N --bw-reps N   bandwidth probe size and repetitions (1024, 7)\n"
            "  --bandwidth-only     measure the machine only (bandwidth, peak rates) and exit\n"
            "  --no-fixed-cost      skip the fixed-cost measurement\n"
            "  --json FILE          also write the results as JSON ('-' for stdout, then the table\n"
            "                       goes to stderr)\n");
}

static int model_index(const char *name) {
    for (int i = 0; i < N_MODELS; i++)
        if (strcmp(name, MODELS[i].name) == 0) return i;
    return -1;
}

static int dtype_index(const char *name) {
    for (int i = 0; i < KV_TYPE_COUNT; i++)
        if (strcmp(name, KV_SHORT[i]) == 0 || strcmp(name, KV_NAMES[i]) == 0) return i;
    return -1;
}

static int sparse_value(const char *name) {
    if (strcmp(name, "dense") == 0 || strcmp(name, "1") == 0) return 1;
    if (strcmp(name, "1/8") == 0 || strcmp(name, "8") == 0) return 8;
    if (strcmp(name, "1/32") == 0 || strcmp(name, "32") == 0) return 32;
    return -1;
}

static int64_t parse_len(const char *t) {
    char *end = NULL;
    errno = 0;
    long long v = strtoll(t, &end, 10);
    if (errno || end == t) return -1;
    if (*end == 'K' || *end == 'k') {
        v *= 1024;
        end++;
    }
    return *end ? -1 : (int64_t)v;
}

/* Splits a comma-separated list and calls parse() on each item; returns -1 on a bad item. */
static int parse_ints(const char *arg, int64_t *out, int cap) {
    char buf[256];
    snprintf(buf, sizeof buf, "%s", arg);
    int n = 0;
    for (char *save = NULL, *t = strtok_r(buf, ",", &save); t; t = strtok_r(NULL, ",", &save)) {
        const int64_t v = parse_len(t);
        if (v <= 0 || n >= cap) return -1;
        out[n++] = v;
    }
    return n;
}

static int parse_names(const char *arg, int (*lookup)(const char *), int *out, int cap) {
    char buf[256];
    snprintf(buf, sizeof buf, "%s", arg);
    int n = 0;
    for (char *save = NULL, *t = strtok_r(buf, ",", &save); t; t = strtok_r(NULL, ",", &save)) {
        const int v = lookup(t);
        if (v < 0 || n >= cap) return -1;
        out[n++] = v;
    }
    return n;
}

static int parse_shape(const char *arg, shape *s) {
    char buf[256];
    snprintf(buf, sizeof buf, "%s", arg);
    char *parts[6];
    int n = 0;
    for (char *save = NULL, *t = strtok_r(buf, ":", &save); t && n < 6; t = strtok_r(NULL, ":", &save))
        parts[n++] = t;
    if (n != 6) return -1;
    s->model = model_index(parts[0]);
    s->batch = parse_len(parts[1]);
    s->len = parse_len(parts[2]);
    s->block_size = parse_len(parts[3]);
    const int dt = dtype_index(parts[4]);
    s->sparse_den = sparse_value(parts[5]);
    if (s->model < 0 || s->batch <= 0 || s->len <= 0 || s->block_size <= 0 || dt < 0 || s->sparse_den < 0)
        return -1;
    s->dtype = (kv_type)dt;
    return 0;
}

int main(int argc, char **argv) {
    options o = {
        .threads = 0,
        .min_reps = 5,
        .max_reps = 200,
        .budget_s = 1.0,
        .warm = 0,
        .cold_bytes = 256.0 * 1048576.0,
        .max_cache_bytes = 4.0 * 1073741824.0,
        .bw_bytes = (size_t)1 << 30,
        .bw_reps = 7,
    };
    filter f = {0};
    const char *grid = "default", *json_path = NULL, *isa = NULL;
    int bandwidth_only = 0, do_fixed = 1, min_reps_given = 0, max_reps_given = 0;
    enum { MAX_SHAPES = 1024 };
    static shape shapes[MAX_SHAPES];
    int n_explicit = 0;

    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        const char *v = i + 1 < argc ? argv[i + 1] : NULL;
#define NEED_VALUE()                                                  \
    do {                                                              \
        if (v == NULL) {                                              \
            fprintf(stderr, "ifa_bench: %s needs a value\n", a);     \
            return 2;                                                 \
        }                                                             \
        i++;                                                          \
    } while (0)
        int bad = 0;
        if (strcmp(a, "--help") == 0 || strcmp(a, "-h") == 0) {
            usage(stdout);
            return 0;
        } else if (strcmp(a, "--quick") == 0) {
            grid = "quick";
        } else if (strcmp(a, "--grid") == 0) {
            NEED_VALUE();
            grid = v;
        } else if (strcmp(a, "--model") == 0) {
            NEED_VALUE();
            bad = (f.n_models = parse_names(v, model_index, f.models, N_MODELS)) < 0;
        } else if (strcmp(a, "--batch") == 0) {
            NEED_VALUE();
            bad = (f.n_batch = parse_ints(v, f.batch, 16)) < 0;
        } else if (strcmp(a, "--len") == 0) {
            NEED_VALUE();
            bad = (f.n_len = parse_ints(v, f.len, 16)) < 0;
        } else if (strcmp(a, "--block-size") == 0) {
            NEED_VALUE();
            bad = (f.n_block_size = parse_ints(v, f.block_size, 16)) < 0;
        } else if (strcmp(a, "--dtype") == 0) {
            NEED_VALUE();
            bad = (f.n_dtypes = parse_names(v, dtype_index, f.dtypes, KV_TYPE_COUNT)) < 0;
        } else if (strcmp(a, "--sparsity") == 0) {
            NEED_VALUE();
            bad = (f.n_sparse = parse_names(v, sparse_value, f.sparse, 8)) < 0;
        } else if (strcmp(a, "--shape") == 0) {
            NEED_VALUE();
            bad = n_explicit >= MAX_SHAPES || parse_shape(v, &shapes[n_explicit]) != 0;
            if (!bad) n_explicit++;
        } else if (strcmp(a, "--threads") == 0) {
            NEED_VALUE();
            o.threads = atoi(v);
            bad = o.threads < 1 || o.threads > 256;
        } else if (strcmp(a, "--isa") == 0) {
            NEED_VALUE();
            isa = v;
        } else if (strcmp(a, "--min-reps") == 0) {
            NEED_VALUE();
            bad = (o.min_reps = atoi(v)) < 1;
            min_reps_given = 1;
        } else if (strcmp(a, "--max-reps") == 0) {
            NEED_VALUE();
            bad = (o.max_reps = atoi(v)) < 1;
            max_reps_given = 1;
        } else if (strcmp(a, "--budget") == 0) {
            NEED_VALUE();
            bad = (o.budget_s = atof(v)) < 0;
        } else if (strcmp(a, "--warm") == 0) {
            o.warm = 1;
        } else if (strcmp(a, "--huge-pages") == 0) {
            o.huge_pages = 1;
        } else if (strcmp(a, "--gap-us") == 0) {
            NEED_VALUE();
            o.gap_us = atoi(v);
            bad = o.gap_us < 0 || o.gap_us > 1000000;
        } else if (strcmp(a, "--bnsd") == 0) {
            o.bnsd = 1;
        } else if (strcmp(a, "--ab") == 0) {
#ifdef IFA_EXPERIMENT
            o.ab = 1;
#else
            fprintf(stderr, "ifa_bench: --ab needs a build configured with -DIFA_EXPERIMENT=ON "
                            "(docs/benchmarks.md, \"A/B in one process\")\n");
            return 2;
#endif
        } else if (strcmp(a, "--max-cache-gib") == 0) {
            NEED_VALUE();
            bad = (o.max_cache_bytes = atof(v) * 1073741824.0) <= 0;
        } else if (strcmp(a, "--bw-mib") == 0) {
            NEED_VALUE();
            const long mib = atol(v);
            bad = mib < 1;
            o.bw_bytes = (size_t)(mib > 0 ? mib : 1) << 20;
        } else if (strcmp(a, "--bw-reps") == 0) {
            NEED_VALUE();
            bad = (o.bw_reps = atoi(v)) < 1;
        } else if (strcmp(a, "--bandwidth-only") == 0) {
            bandwidth_only = 1;
        } else if (strcmp(a, "--no-fixed-cost") == 0) {
            do_fixed = 0;
        } else if (strcmp(a, "--json") == 0) {
            NEED_VALUE();
            json_path = v;
        } else {
            fprintf(stderr, "ifa_bench: unknown option %s\n", a);
            usage(stderr);
            return 2;
        }
        if (bad) {
            fprintf(stderr, "ifa_bench: bad value for %s: %s\n", a, v ? v : "");
            return 2;
        }
#undef NEED_VALUE
    }
    /* --ab compares medians of many pairs: by default, calls until the budget is spent. */
    if (o.ab && !max_reps_given) o.max_reps = 1000000;
    if (o.ab && !min_reps_given) o.min_reps = 200;
    if (o.max_reps < o.min_reps) o.max_reps = o.min_reps;

    if (isa != NULL) {
        const ifa_status st = ifa_set_isa(isa);
        if (st != IFA_OK) {
            fprintf(stderr, "ifa_bench: --isa %s: %s (%s)\n", isa, ifa_status_string(st), ifa_last_error());
            return 1;
        }
    }
    if (o.threads > 0) {
        if (ifa_set_num_threads(o.threads) != IFA_OK) {
            fprintf(stderr, "ifa_bench: --threads %d: %s\n", o.threads, ifa_last_error());
            return 1;
        }
    }
    o.threads = ifa_get_num_threads();

    int n_shapes = n_explicit;
    if (n_shapes == 0 && !bandwidth_only) {
        if (strcmp(grid, "quick") == 0)
            n_shapes = expand_grid(GRID_QUICK, (int)(sizeof GRID_QUICK / sizeof *GRID_QUICK), &f, shapes,
                                   MAX_SHAPES, 0);
        else if (strcmp(grid, "default") == 0)
            n_shapes = expand_grid(GRID_DEFAULT, (int)(sizeof GRID_DEFAULT / sizeof *GRID_DEFAULT), &f,
                                   shapes, MAX_SHAPES, 0);
        else if (strcmp(grid, "all") == 0)
            n_shapes = expand_grid(GRID_ALL, 1, &f, shapes, MAX_SHAPES, 0);
        else {
            fprintf(stderr, "ifa_bench: unknown grid %s (quick, default, all)\n", grid);
            return 2;
        }
        if (n_shapes == 0) {
            fprintf(stderr, "ifa_bench: the filters leave no shape of the %s grid\n", grid);
            return 2;
        }
    }

    build_tables();

    /* The machine first: the fractions below divide by these figures. */
    machine m = {.threads = o.threads};
    m.bw1 = bench_read_bandwidth(o.bw_bytes, 1, o.bw_reps, &m.bw1_median);
    m.bwT = o.threads > 1 ? bench_read_bandwidth(o.bw_bytes, o.threads, o.bw_reps, &m.bwT_median) : m.bw1;
    if (o.threads == 1) m.bwT_median = m.bw1_median;
    for (int k = 0; k < BENCH_MAC_KIND_COUNT; k++) m.mac[k] = bench_mac_peak((bench_mac_kind)k, o.threads, 5);
    if (m.bwT <= 0) {
        fprintf(stderr, "ifa_bench: could not allocate the %zu-byte bandwidth buffer\n", o.bw_bytes);
        return 1;
    }

    /* --json - sends the JSON to stdout and everything human-readable to stderr. */
    FILE *jf = NULL;
    if (json_path != NULL && strcmp(json_path, "-") == 0) {
        const int saved = dup(STDOUT_FILENO);
        if (saved < 0 || dup2(STDERR_FILENO, STDOUT_FILENO) < 0) return 1;
        jf = fdopen(saved, "w");
    } else if (json_path != NULL) {
        jf = fopen(json_path, "w");
        if (jf == NULL) {
            fprintf(stderr, "ifa_bench: cannot write %s: %s\n", json_path, strerror(errno));
            return 1;
        }
    }

    print_machine(&m, &o);
    if (jf != NULL) {
        fprintf(jf, "{\n  \"tool\": \"ifa_bench\",\n  \"version\": \"%s\",\n  \"grid\": \"%s\",\n",
                ifa_version(), n_explicit ? "explicit" : bandwidth_only ? "none" : grid);
        fprintf(jf, "  \"cache\": \"%s\",\n  \"huge_pages\": %s,\n  \"kv_layout\": \"%s\",\n",
                o.warm ? "warm" : "cold", o.huge_pages ? "true" : "false", o.bnsd ? "BNSD" : "BSH");
        json_machine(jf, &m, &o);
    }

    if (!bandwidth_only) {
        if (do_fixed) {
            double best = 0, median = 0;
            fixed_cost(2000, &best, &median);
            printf("# fixed cost of one C call (B=1, L=16, llama3-8b heads, fp16, warm): best %.2f us, "
                   "median %.2f us\n",
                   best * 1e6, median * 1e6);
            if (jf) fprintf(jf, ",\n  \"fixed_cost_us\": {\"best\": %.3f, \"median\": %.3f}", best * 1e6, median * 1e6);
        }
        printf("# %d shapes; tokens = per KV head; KV MiB = bytes read; bw = fraction of %.1f GB/s; "
               "roof = roofline / best\n",
               n_shapes, m.bwT);
        print_header();
        static result results[MAX_SHAPES];
        for (int i = 0; i < n_shapes; i++) {
            results[i] = run_shape(&shapes[i], &o, &m);
            print_result(&results[i]);
        }
        /* The host is shared: the bandwidth is measured again after the shapes, and the JSON
         * divides by the better of the two figures (the table above used the first). */
        double med_end = 0.0;
        const double bw_end = bench_read_bandwidth(o.bw_bytes, o.threads, o.bw_reps, &med_end);
        printf("# read bandwidth again at the end: %.1f GB/s with %d threads (median %.1f)%s\n", bw_end,
               o.threads, med_end,
               bw_end > m.bwT ? "; the JSON fractions use this better figure" : "");
        m.bw_end = bw_end;
        if (bw_end > m.bwT) {
            m.bw_start = m.bwT;
            m.bwT = bw_end;
            for (int i = 0; i < n_shapes; i++)
                if (results[i].ok) roofline(&results[i], &m);
        } else {
            m.bw_start = m.bwT;
        }
        if (jf) {
            fprintf(jf,
                    ",\n  \"bandwidth_gbps_start\": %.3f,\n  \"bandwidth_gbps_end\": %.3f,\n"
                    "  \"bandwidth_gbps_used\": %.3f",
                    m.bw_start, m.bw_end, m.bwT);
            fprintf(jf, ",\n  \"results\": [\n");
            for (int i = 0; i < n_shapes; i++) {
                json_result(jf, &results[i], &o, o.threads);
                fprintf(jf, "%s\n", i + 1 < n_shapes ? "," : "");
            }
            fprintf(jf, "  ]");
        }
    }
    if (jf) {
        fprintf(jf, "\n}\n");
        fclose(jf);
    }
    return 0;
}
