/*
 * fixture.h - builds random IFA-V5 test cases and checks the library against the golden model.
 *
 * A test describes a case with an fx_config (KV form, layout, dtypes, sizes, optional inputs);
 * fx_build() allocates every buffer from an arena, fills it from a seeded generator and fills an
 * ifa_params exactly as a user of the API would. The test may then change the params (add a
 * mask, break a rule, ...) before calling fx_check(), which runs the golden model, calls the
 * library and compares element by element with the tolerances of SPEC 11.
 */
#ifndef IFA_TESTS_FIXTURE_H
#define IFA_TESTS_FIXTURE_H

#include <stddef.h>
#include <stdint.h>

#include "golden.h"
#include "ifa.h"
#include "rng.h"

/* ---- Memory: everything a case allocates is freed at once --------------------------------- */

typedef struct fx_arena {
    void **ptrs;
    size_t count, cap;
} fx_arena;

/* Zeroed memory owned by the arena. A test cannot go on without memory, so this exits on failure. */
void *fx_alloc(fx_arena *a, size_t bytes);
void fx_arena_free(fx_arena *a);

/* ---- Views ----------------------------------------------------------------------------------- */

typedef enum fx_strides {
    FX_DENSE = 0,   /* C-contiguous */
    FX_GAPPED = 1,  /* every dimension padded by one and the last one read with stride 2 */
    FX_REVERSED = 2 /* column-major: the first dimension is the fastest */
} fx_strides;

/* A new view over a fresh buffer. Gaps (elements outside the view) are filled with a poison value
 * (NaN, or 0x7f for 1-byte types) so that a library reading them would show it. *bytes, when not
 * NULL, receives the size of the whole buffer that starts at t.data. */
ifa_tensor fx_tensor(fx_arena *a, ifa_dtype dt, int32_t rank, const int64_t *shape, fx_strides mode,
                     size_t *bytes);
/* Shorthand for a dense view. */
ifa_tensor fx_dense(fx_arena *a, ifa_dtype dt, int32_t rank, const int64_t *shape);
/* A dense rank-1 view holding the given values. */
ifa_tensor fx_values(fx_arena *a, ifa_dtype dt, int64_t count, const double *values);

void fx_set(const ifa_tensor *t, const int64_t *idx, double v);
void fx_set_flat(const ifa_tensor *t, int64_t flat, double v);
/* Advances idx (rank entries) in row-major order; returns 0 after the last element. */
int fx_next_index(const ifa_tensor *t, int64_t *idx);
/* Floats uniform in [lo, hi); integer dtypes get integers in [lo, hi]. */
void fx_fill(const ifa_tensor *t, rng *r, double lo, double hi);
/* Bytes from t->data to the end of its last element (0 for an empty or data-less view). */
size_t fx_extent_bytes(const ifa_tensor *t);
/* A copy of the first `bytes` bytes at t->data, to check later that an input stayed unchanged. */
void *fx_snapshot(fx_arena *a, const ifa_tensor *t, size_t bytes);

/* ---- Random cases ---------------------------------------------------------------------------- */

typedef enum fx_form {
    FX_CONTIG = 0,    /* one tensor in the query's layout */
    FX_LIST = 1,      /* B tensors, batch dimension 1 */
    FX_LEFTPAD = 2,   /* one tensor, kv_padding_size */
    FX_PAGED = 3,     /* block_table */
    FX_PAGED_POS = 4, /* block_table and block_position */
    FX_FORM_COUNT
} fx_form;

typedef enum fx_antiquant {
    FX_AQ_NONE = 0,
    FX_AQ_TENSOR,   /* (2,) */
    FX_AQ_FLAT,     /* (2, KVN*D) */
    FX_AQ_HD,       /* (2, KVN, D) */
    FX_AQ_H1D,      /* (2, KVN, 1, D) */
    FX_AQ_1HD,      /* (2, 1, KVN, D) */
    FX_AQ_TOKEN,    /* (2, B, S'), antiquant_mode 1 */
    FX_AQ_COUNT
} fx_antiquant;

typedef enum fx_lens {
    FX_LENS_B = 0,     /* exactly B values */
    FX_LENS_ONE = 1,   /* one value, broadcast (all L[b] equal) */
    FX_LENS_MORE = 2,  /* B + 3 values, the extra ones 0 */
    FX_LENS_ABSENT = 3 /* no actual_seq_lengths (contiguous forms only) */
} fx_lens;

#define FX_MAX_B 16

typedef struct fx_config {
    fx_form form;
    const char *layout;
    int64_t B, N, KVN, D;   /* KVN 0 is passed as key_num_heads 0 ("same as N") */
    ifa_dtype q_dtype;      /* f16, bf16, f32, or int8 for full quantisation */
    ifa_dtype kv_dtype;     /* the query's dtype or int8 */
    int64_t min_len, max_len; /* L[b] uniform in [min_len, max_len] unless lens is given */
    const int64_t *lens;    /* B explicit lengths, or NULL */
    fx_lens lens_mode;
    ifa_dtype lens_dtype;   /* int32 or int64 (NONE: int64) */
    int64_t extra_rows;     /* contiguous: stored length = L + extra_rows (-1: random 0..3) */
    int64_t pad;            /* FX_LEFTPAD: the kv_padding_size value */
    int64_t block_size;
    int cache4d;            /* paged: (nb, KVN, bs, D) instead of (nb, bs, KVN*D) */
    int hole_percent;       /* FX_PAGED_POS: chance of a sentinel slot before ceil(L/bs) */
    fx_antiquant antiquant;
    int antiquant_offset;
    ifa_dtype antiquant_dtype; /* NONE: the query's dtype (float32 for per-token) */
    int pse;                /* 0 none, 1 (B, N, 1, S'), 2 (1, N, 1, S') */
    int mask_rank;          /* 0 none, 2, 3 or 4 */
    ifa_dtype mask_dtype;   /* bool, int8 or uint8 (NONE: bool) */
    int mask_percent;       /* chance that a position is masked */
    int out_quant;          /* 0 float output, 1 per-tensor int8, 2 per-channel int8 */
    int out_quant_shape;    /* per-channel: index into the 8 shapes of SPEC 8 */
    int out_quant_offset;
    ifa_dtype out_quant_dtype; /* NONE: float32 */
    int uint64_scales;      /* int8 query: dequant/quant scales as uint64 */
    int inner_precise;
    double scale_value;     /* 0: random around 1/sqrt(D) */
    fx_strides q_strides, kv_strides, out_strides;
} fx_config;

/* A sensible default: contiguous BSH float32, B 1, N 1, D 16, lengths 1..20. */
fx_config fx_default_config(void);

typedef struct fx_case {
    ifa_params p;
    ifa_tensor key[FX_MAX_B], value[FX_MAX_B];
    int64_t L[FX_MAX_B];     /* the lengths the case was built with */
    int64_t stored[FX_MAX_B]; /* contiguous: stored length per batch */
    int64_t sprime;          /* last dimension of pse / mask / per-token antiquant */
    ifa_tensor out;          /* allocated with ifa_output_dtype-independent rules (see fx_build) */
    size_t out_bytes;
    int strided_inputs;      /* the query or the KV cache is not contiguous */
    int strict_quant;        /* compare full quantisation without the tile-maximum slack */
    char label[256];         /* describes the case in failure messages */
} fx_case;

/* Builds a random case. The output view has the query's shape and the dtype SPEC 1 prescribes. */
fx_case *fx_build(fx_arena *a, uint64_t seed, const fx_config *c);

/* Tolerance of SPEC 11 for these parameters. */
void fx_tolerance(const ifa_params *p, double *atol, double *rtol);

/* Runs the golden model, fills out with a canary, calls the library, and checks every element
 * and that no byte of the output buffer outside the view changed. Returns the number of bad
 * elements (each reported through the harness with the case label). */
int fx_check(fx_case *c);

/* Compares c->out (already computed by the library) with the model; `what` prefixes the failure
 * messages. Returns the number of bad elements. */
int fx_compare_output(const fx_case *c, const golden_out *g, const char *what);

/* The library ISAs this machine offers, as a list of names (at most 8). */
int fx_isa_list(char names[8][16]);

/* fx_check() on every ISA the machine offers, with 1 to 3 threads depending on `spin`. Returns
 * the number of bad elements over all runs. */
int fx_check_everywhere(fx_case *c, uint64_t spin);

/* Number of library calls fx_check() has made so far (for the summary lines). */
long fx_calls(void);

#endif /* IFA_TESTS_FIXTURE_H */
