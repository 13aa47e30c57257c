/*
 * ifa.h - the one public header of libifa.
 *
 * libifa computes IFA-V5 ("incremental flash attention", version 5) on the CPU: one new query
 * token per sequence attends over a KV cache that may be contiguous, a list of per-batch tensors,
 * left padded, paged (block_table) or paged and sparse (block_position). The contract is
 * shared/SPEC.md; every section number quoted below refers to it.
 *
 * Usage, in short:
 *
 *     ifa_params p;
 *     ifa_params_init(&p);                      // defaults: num_heads 1, scale 1, "BSH", ...
 *     p.query = ifa_tensor_make(q, IFA_DTYPE_FLOAT16, 3, (int64_t[]){B, 1, N * D}, NULL);
 *     p.key = &k; p.value = &v; p.kv_count = 1;
 *     p.num_heads = N; ...
 *     ifa_tensor out = ifa_tensor_make(o, ifa_output_dtype(&p), 3, p.query.shape, NULL);
 *     ifa_status st = ifa_incre_flash_attention_v5(&p, &out);
 *     if (st != IFA_OK) fprintf(stderr, "%s: %s\n", ifa_status_string(st), ifa_last_error());
 *
 * Rules of the API:
 * - Every entry point returns an ifa_status. On failure the message of ifa_last_error() (kept per
 *   thread) names the parameter, what was expected and what was given. Nothing is written to the
 *   output unless the whole call was validated first.
 * - Tensors are borrowed views (pointer, dtype, shape, strides in elements); the library never
 *   copies, frees or modifies an input.
 * - An optional tensor is absent when its dtype is IFA_DTYPE_NONE or it has zero elements.
 */
#ifndef IFA_H
#define IFA_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#if defined(_WIN32) && defined(IFA_BUILD_SHARED)
#define IFA_API __declspec(dllexport)
#elif defined(__GNUC__)
#define IFA_API __attribute__((visibility("default")))
#else
#define IFA_API
#endif

/* ---- Status codes ---------------------------------------------------------------------------- */

/* One list yields both the enum and ifa_status_string(). The Python layer maps INVALID_DTYPE to
 * TypeError, OUT_OF_MEMORY to MemoryError and every other error to ValueError. */
#define IFA_STATUS_LIST(X)                                                          \
    X(IFA_OK, 0, "ok")                                                              \
    X(IFA_ERR_INVALID_ARGUMENT, 1, "invalid argument")                              \
    X(IFA_ERR_INVALID_SHAPE, 2, "invalid shape")                                    \
    X(IFA_ERR_INVALID_DTYPE, 3, "invalid dtype")                                    \
    X(IFA_ERR_OUT_OF_RANGE, 4, "index out of range")                                \
    X(IFA_ERR_OVERFLOW, 5, "size overflow")                                         \
    X(IFA_ERR_NULL_POINTER, 6, "null pointer")                                      \
    X(IFA_ERR_OUT_OF_MEMORY, 7, "out of memory")                                    \
    X(IFA_ERR_UNSUPPORTED, 8, "unsupported on this machine")

typedef enum ifa_status {
#define IFA__STATUS_ENUM(name, value, text) name = value,
    IFA_STATUS_LIST(IFA__STATUS_ENUM)
#undef IFA__STATUS_ENUM
} ifa_status;

/* A short fixed description of a status ("invalid shape"); never NULL. */
IFA_API const char *ifa_status_string(ifa_status status);

/* The message of the last error raised on the calling thread, e.g.
 * "block_table[1][2] = 11 is outside the key cache (6 blocks)". Empty after a success. */
IFA_API const char *ifa_last_error(void);

/* ---- Tensor views ---------------------------------------------------------------------------- */

typedef enum ifa_dtype {
    IFA_DTYPE_NONE = 0, /* absent optional tensor */
    IFA_DTYPE_FLOAT16,
    IFA_DTYPE_BFLOAT16,
    IFA_DTYPE_FLOAT32,
    IFA_DTYPE_FLOAT64,
    IFA_DTYPE_INT8,
    IFA_DTYPE_UINT8,
    IFA_DTYPE_BOOL, /* one byte, 0 or 1 */
    IFA_DTYPE_INT16,
    IFA_DTYPE_INT32,
    IFA_DTYPE_INT64,
    IFA_DTYPE_UINT64,
    IFA_DTYPE_COUNT
} ifa_dtype;

/* "float16", "int8", ...; "unknown" for a value outside the enum. */
IFA_API const char *ifa_dtype_name(ifa_dtype dtype);
/* Bytes per element, 0 for IFA_DTYPE_NONE or an unknown value. */
IFA_API size_t ifa_dtype_size(ifa_dtype dtype);

#define IFA_MAX_RANK 8

/* A borrowed, strided view. Element (i0, i1, ...) lives at
 *     (char *)data + (i0 * strides[0] + i1 * strides[1] + ...) * ifa_dtype_size(dtype).
 * Strides count elements, not bytes, and must not be negative. The library only writes through
 * the output view. */
typedef struct ifa_tensor {
    void *data;
    ifa_dtype dtype;
    int32_t rank;
    int64_t shape[IFA_MAX_RANK];
    int64_t strides[IFA_MAX_RANK];
} ifa_tensor;

/* A view with the given shape; strides NULL means C-contiguous (row-major; a dimension of size 0
 * counts as 1 in the strides before it, as in torch). A rank outside [0, IFA_MAX_RANK] gives an
 * absent view. */
IFA_API ifa_tensor ifa_tensor_make(const void *data, ifa_dtype dtype, int32_t rank,
                                   const int64_t *shape, const int64_t *strides);

/* The absent view (all zero). */
IFA_API ifa_tensor ifa_tensor_none(void);

/* ---- Parameters ------------------------------------------------------------------------------ */

/* Value of an unselected block_position entry (SPEC.md 4, item 4). */
#define IFA_BLOCK_UNSELECTED 0x7FFFFFFF

/* The 22 inputs of SPEC.md 1, in the same order, plus the keyword-only extension antiquant_mode.
 * Call ifa_params_init() first: it sets the defaults of the original (every tensor absent,
 * num_heads 1, scale_value 1, layout "BSH", key_num_heads 0, block_size 0, inner_precise 1). */
typedef struct ifa_params {
    ifa_tensor query; /* (B,1,N*D) BSH, (B,1,N,D) BSND, (B,N,1,D) BNSD; f16/bf16/f32, or int8 (7) */
    /* key_list / value_list: kv_count views each. One view: a single contiguous tensor or a paged
     * cache. kv_count == B > 1: one contiguous tensor per batch, each with batch dimension 1. */
    const ifa_tensor *key;
    const ifa_tensor *value;
    int32_t kv_count;
    ifa_tensor pse_shift;          /* (B|1, N, 1, S'), query dtype (float16 for an int8 query) */
    ifa_tensor attention_mask;     /* bool/int8/uint8 (B,S'), (B,1,S') or (B,1,1,S'); !=0 masks */
    ifa_tensor actual_seq_lengths; /* int32/int64, 1-D: 1 value (broadcast) or >= B values */
    ifa_tensor dequant_scale1;     /* int8 query only: one float32, or uint64 holding float bits */
    ifa_tensor quant_scale1;
    ifa_tensor dequant_scale2;
    ifa_tensor quant_scale2;      /* int8 output: 1 or N*D values, float32 (bf16 for a bf16 query) */
    ifa_tensor quant_offset2;     /* optional, like quant_scale2 */
    ifa_tensor antiquant_scale;   /* int8 KV: (2,), (2,KVN*D), (2,KVN,D), (2,KVN,1,D), (2,1,KVN,D) */
    ifa_tensor antiquant_offset;  /*          or, with antiquant_mode 1, float32 (2, B, S') */
    ifa_tensor block_table;       /* int32 (B, M): logical page -> physical block */
    ifa_tensor kv_padding_size;   /* one int64 (or int32) value: left padding, contiguous only */
    ifa_tensor block_position;    /* int32 (B, KVN, P): per KV head, slot -> block_table column */
    int64_t num_heads;            /* N >= 1 */
    double scale_value;
    const char *layout; /* "BSH", "BSND" or "BNSD" */
    int64_t key_num_heads; /* KVN; 0 means N */
    int64_t block_size;    /* bs >= 1 when paged; ignored otherwise */
    int64_t inner_precise; /* 0 high precision, 1 high performance */
    int64_t antiquant_mode; /* 0 per-channel (or per-tensor), 1 per-token */
} ifa_params;

IFA_API void ifa_params_init(ifa_params *params);

/* ---- Entry points ---------------------------------------------------------------------------- */

/* Checks every rule of SPEC.md 2-10 without computing anything. */
IFA_API ifa_status ifa_validate(const ifa_params *params);

/* dtype of the output for these parameters: int8 when quant_scale2 is present, float16 for an int8
 * query, the query's dtype otherwise. IFA_DTYPE_NONE if the query itself is unusable. The output
 * shape is always the query's shape. */
IFA_API ifa_dtype ifa_output_dtype(const ifa_params *params);

/* Validates, then computes IFA-V5 into out (query's shape, ifa_output_dtype(), any non-negative
 * strides). On any error nothing is written to out. Safe to call from several threads at once. */
IFA_API ifa_status ifa_incre_flash_attention_v5(const ifa_params *params, ifa_tensor *out);

/* ---- Runtime settings ------------------------------------------------------------------------ */

/* Threads used by one call, 1 to 1024. The default comes from IFA_NUM_THREADS, else the number of
 * online CPUs. n outside [1, 1024] is an error. */
IFA_API ifa_status ifa_set_num_threads(int n);
IFA_API int ifa_get_num_threads(void);

/* The instruction set the kernels were chosen for ("ref", "avx2", "avx512"), picked once at
 * first use from CPUID, or forced with IFA_ISA=ref|avx2|avx512. */
IFA_API const char *ifa_isa_name(void);
/* Forces an ISA by name for the following calls; IFA_ERR_UNSUPPORTED if the CPU lacks it. */
IFA_API ifa_status ifa_set_isa(const char *name);
/* Space-separated list of the ISAs this CPU can run, best last (always starts with "ref"). */
IFA_API const char *ifa_isa_available(void);

IFA_API const char *ifa_version(void);

/* ---- Block selection ------------------------------------------------------------------------ */

/* Query-aware choice of the pages a sparse decode step reads, after Quest (Tang et al., 2024,
 * "Quest: Query-Aware Sparsity for Efficient Long-Context LLM Inference"). Every physical block of
 * a paged key cache is summarised by the elementwise minimum and maximum of its keys, per KV head;
 * for a query q the page's score sum_d max(q_d * kmax_d, q_d * kmin_d) bounds q . k from above for
 * every key k of the page. ifa_select_blocks() keeps the k best pages per KV head and writes the
 * block_position and actual_seq_lengths that make ifa_incre_flash_attention_v5() read exactly those
 * pages. docs/selection.md has the layouts and the reasoning.
 *
 * Summaries: float32 (num_blocks, KVN, 2, D), indexed by physical block like the cache itself:
 * [blk][h][0][:] is the minimum and [blk][h][1][:] the maximum of the keys of head h over the valid
 * rows of block blk (dequantised when the cache is int8). A block no sequence references holds the
 * empty summary (minimum +inf, maximum -inf). */

/* Inputs of ifa_page_summaries() and ifa_page_summaries_update(). Call
 * ifa_summary_params_init() first (every tensor absent, every number 0). */
typedef struct ifa_summary_params {
    /* Paged key cache, float16/bfloat16/float32/int8: (num_blocks, bs, KVN*D) or
     * (num_blocks, KVN, bs, D). */
    ifa_tensor key_cache;
    ifa_tensor block_table;        /* int32 (B, M) */
    ifa_tensor actual_seq_lengths; /* int32/int64, 1 value (broadcast) or >= B values */
    /* Update only: tokens appended to each sequence since the summaries were last current
     * (int32/int64, 1 value or >= B values; each <= its actual_seq_length). */
    ifa_tensor new_tokens;
    /* int8 cache: the key parameters (index 0) of SPEC.md 6, per-tensor, per-channel, or with
     * antiquant_mode 1 per-token float32 (2, B, S'). */
    ifa_tensor antiquant_scale;
    ifa_tensor antiquant_offset;
    int64_t key_num_heads;  /* KVN: required for the 3-D cache; 0 takes it from a 4-D cache */
    int64_t block_size;     /* bs; 0 takes it from the cache */
    int64_t antiquant_mode; /* 0 per-channel (or per-tensor), 1 per-token */
} ifa_summary_params;

IFA_API void ifa_summary_params_init(ifa_summary_params *params);

/* Computes the summary of every block into summaries (float32 (num_blocks, KVN, 2, D), any
 * non-negative strides). The valid rows of a block are those of the logical pages that reference it:
 * page j of batch b holds min(bs, L[b] - j*bs) rows; a block referenced several times (a shared
 * prefix) is summarised once, over the most rows any reference gives it. Unreferenced blocks get
 * the empty summary. new_tokens is ignored. */
IFA_API ifa_status ifa_page_summaries(const ifa_summary_params *params, ifa_tensor *summaries);

/* Brings summaries up to date after new_tokens[b] tokens were appended to each sequence b (its
 * length is now actual_seq_lengths[b]): every block holding one of the new tokens is summarised
 * again from its first row, so the result equals ifa_page_summaries() on those blocks and every
 * other block is left as it was. Cost: the touched pages only (one page per sequence per decode
 * step). */
IFA_API ifa_status ifa_page_summaries_update(const ifa_summary_params *params,
                                             ifa_tensor *summaries);

/* Inputs of ifa_select_blocks(). Call ifa_select_params_init() first (layout "BSH", num_heads 1,
 * k 1, everything else absent or 0). */
typedef struct ifa_select_params {
    ifa_tensor query;              /* as SPEC.md 2: BSH/BSND/BNSD, float16/bfloat16/float32 */
    ifa_tensor summaries;          /* float32 (num_blocks, KVN, 2, D), unit stride along D */
    ifa_tensor block_table;        /* int32 (B, M) */
    ifa_tensor actual_seq_lengths; /* int32/int64, 1 value (broadcast) or >= B values */
    int64_t num_heads;             /* N */
    int64_t key_num_heads;         /* KVN, 0 means N */
    const char *layout;            /* "BSH", "BSND" or "BNSD" */
    int64_t block_size;            /* bs >= 1 */
    int64_t k;                     /* pages per KV head, sinks and the last page included; >= 1 */
    int64_t sink_pages;            /* first logical pages always kept; < k */
} ifa_select_params;

IFA_API void ifa_select_params_init(ifa_select_params *params);

/* Chooses the pages of each (batch, KV head) and writes
 *   block_position: int32 (B, KVN, P), P >= min(k, M): the chosen block_table columns in ascending
 *                   order (sinks, the best-scoring middle pages, the sequence's last page last),
 *                   then IFA_BLOCK_UNSELECTED;
 *   lengths:        int32/int64 (B,): the compact length, (k-1)*bs + (tokens of the last page),
 *                   so that IFA-V5 reads exactly the chosen tokens.
 * A sequence of n <= k pages keeps all of them (dense-equivalent, length unchanged); L = 0 keeps
 * none. The G query heads of a KV head share its pages; a page's score for the KV head is the
 * largest of its G heads' scores; ties go to the lower page index; a NaN score ranks lowest.
 * Positions are compact (SPEC.md 4.4): a mask or pse_shift given to IFA-V5 with this selection is
 * indexed by the compact token index, not by the original position. */
IFA_API ifa_status ifa_select_blocks(const ifa_select_params *params, ifa_tensor *block_position,
                                     ifa_tensor *lengths);

#ifdef __cplusplus
}
#endif

#endif /* IFA_H */
