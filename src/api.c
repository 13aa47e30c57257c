/*
 * api.c - the public entry points of ifa.h: validate everything, plan, run.
 *
 * Also the small things every caller needs: status and dtype names, tensor views, parameter
 * defaults, the per-thread last-error message and the thread-count setting. The heavy lifting is
 * elsewhere: validate.c (rules), plan.c (work split), attend.c (math), kernels/ (inner loops).
 */
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <string.h>

#include "common.h"
#include "cpu_features.h"
#include "plan.h"
#include "problem.h"
#include "threadpool.h"

/* ---- Errors --------------------------------------------------------------------------------- */

#ifdef IFA_EXPERIMENT
int ifa__experiment; /* common.h */
#endif

static _Thread_local char last_error[512];

ifa_status ifa__fail(ifa_status status, const char *fmt, ...) {
    va_list args;
    va_start(args, fmt);
    vsnprintf(last_error, sizeof last_error, fmt, args);
    va_end(args);
    return status;
}

void ifa__clear_error(void) { last_error[0] = '\0'; }

const char *ifa_last_error(void) { return last_error; }

const char *ifa_status_string(ifa_status status) {
    switch (status) {
#define IFA__STATUS_CASE(name, value, text) \
    case name: return text;
        IFA_STATUS_LIST(IFA__STATUS_CASE)
#undef IFA__STATUS_CASE
    }
    return "unknown status";
}

/* ---- Tensors -------------------------------------------------------------------------------- */

static const struct {
    const char *name;
    size_t size;
} dtype_info[IFA_DTYPE_COUNT] = {
    [IFA_DTYPE_NONE] = {"none", 0},       [IFA_DTYPE_FLOAT16] = {"float16", 2},
    [IFA_DTYPE_BFLOAT16] = {"bfloat16", 2}, [IFA_DTYPE_FLOAT32] = {"float32", 4},
    [IFA_DTYPE_FLOAT64] = {"float64", 8}, [IFA_DTYPE_INT8] = {"int8", 1},
    [IFA_DTYPE_UINT8] = {"uint8", 1},     [IFA_DTYPE_BOOL] = {"bool", 1},
    [IFA_DTYPE_INT16] = {"int16", 2},     [IFA_DTYPE_INT32] = {"int32", 4},
    [IFA_DTYPE_INT64] = {"int64", 8},     [IFA_DTYPE_UINT64] = {"uint64", 8},
};

const char *ifa_dtype_name(ifa_dtype dtype) {
    return dtype >= 0 && dtype < IFA_DTYPE_COUNT ? dtype_info[dtype].name : "unknown";
}

size_t ifa_dtype_size(ifa_dtype dtype) {
    return dtype >= 0 && dtype < IFA_DTYPE_COUNT ? dtype_info[dtype].size : 0;
}

ifa_tensor ifa_tensor_none(void) {
    ifa_tensor t;
    memset(&t, 0, sizeof t);
    return t;
}

ifa_tensor ifa_tensor_make(const void *data, ifa_dtype dtype, int32_t rank, const int64_t *shape,
                           const int64_t *strides) {
    ifa_tensor t = ifa_tensor_none();
    if (rank < 0 || rank > IFA_MAX_RANK || (rank > 0 && shape == NULL)) return t;
    t.data = (void *)data; /* views are read-only except the output's */
    t.dtype = dtype;
    t.rank = rank;
    int64_t running = 1;
    for (int32_t i = rank - 1; i >= 0; i--) {
        t.shape[i] = shape[i];
        t.strides[i] = strides ? strides[i] : running;
        running *= shape[i] > 0 ? shape[i] : 1;
    }
    return t;
}

void ifa_params_init(ifa_params *p) {
    if (p == NULL) return;
    memset(p, 0, sizeof *p);
    p->num_heads = 1;
    p->scale_value = 1.0;
    p->layout = "BSH";
    p->key_num_heads = 0;
    p->block_size = 0;
    p->inner_precise = 1;
    p->antiquant_mode = 0;
}

/* ---- Entry points --------------------------------------------------------------------------- */

ifa_status ifa_validate(const ifa_params *params) {
    ifa__problem pb;
    ifa__clear_error();
    return ifa__validate(params, NULL, &pb);
}

ifa_dtype ifa_output_dtype(const ifa_params *p) {
    if (p == NULL) return IFA_DTYPE_NONE;
    const ifa_dtype q = p->query.dtype;
    if (q != IFA_DTYPE_FLOAT16 && q != IFA_DTYPE_BFLOAT16 && q != IFA_DTYPE_FLOAT32 && q != IFA_DTYPE_INT8)
        return IFA_DTYPE_NONE;
    const ifa_tensor *qs = &p->quant_scale2;
    int present = qs->dtype != IFA_DTYPE_NONE && qs->rank >= 0 && qs->rank <= IFA_MAX_RANK;
    for (int32_t i = 0; present && i < qs->rank; i++) present = qs->shape[i] != 0;
    if (present) return IFA_DTYPE_INT8;
    return q == IFA_DTYPE_INT8 ? IFA_DTYPE_FLOAT16 : q;
}

ifa_status ifa_incre_flash_attention_v5(const ifa_params *params, ifa_tensor *out) {
    ifa__clear_error();
    RETURN_ERROR_IF(out == NULL, IFA_ERR_NULL_POINTER, "out: is NULL");
    const ifa__kernel_table *kt;
    RETURN_IF_ERROR(ifa__select_kernels(&kt));
#ifdef IFA_EXPERIMENT_KERNELS
    kt = ifa__experiment_table(kt);
#endif
    ifa__problem pb;
    RETURN_IF_ERROR(ifa__validate(params, out, &pb));
    return ifa__run(&pb, kt, ifa_get_num_threads());
}

/* ---- Settings ------------------------------------------------------------------------------- */

static atomic_int num_threads = 0; /* 0: not yet read from the environment */

ifa_status ifa_set_num_threads(int n) {
    RETURN_ERROR_IF(n < 1 || n > 1024, IFA_ERR_INVALID_ARGUMENT,
                    "num_threads: must be in [1, 1024], got %d", n);
    atomic_store(&num_threads, n);
    return IFA_OK;
}

int ifa_get_num_threads(void) {
    int n = atomic_load(&num_threads);
    if (n == 0) {
        n = ifa__default_num_threads();
        int expected = 0;
        if (!atomic_compare_exchange_strong(&num_threads, &expected, n)) n = expected;
    }
    return n;
}

const char *ifa_version(void) { return "0.1.0"; }
