/*
 * common.h - internal helpers shared by every file of libifa: error reporting, checked integer
 * arithmetic and the `ifa__` naming rule (internal but not static).
 *
 * Errors are reported by formatting a message into a thread-local buffer and returning a status;
 * RETURN_ERROR_IF keeps each check on one line so validate.c reads like the list of rules it is.
 */
#ifndef IFA_COMMON_H
#define IFA_COMMON_H

#include <stdint.h>
#include <stddef.h>

#include "ifa.h"

#ifdef IFA_EXPERIMENT
/* Builds configured with -DIFA_EXPERIMENT=ON only: 0 or 1, the form of some code under trial
 * (`if (ifa__experiment) new form; else old form;`). ifa_bench --ab alternates it call by call and
 * reports the two forms' times side by side (docs/benchmarks.md, "A/B in one process"). With
 * -DIFA_EXPERIMENT_KERNELS=ON, form 1 also runs a second copy of the kernels, compiled with
 * IFA_EXPERIMENT_FORM defined, for trials of kernel code. */
extern int ifa__experiment;
#endif

#if defined(__GNUC__)
#define IFA__PRINTF(fmt_index, first_arg) __attribute__((format(printf, fmt_index, first_arg)))
#define IFA__LIKELY(x) __builtin_expect(!!(x), 1)
#define IFA__UNLIKELY(x) __builtin_expect(!!(x), 0)
#else
#define IFA__PRINTF(fmt_index, first_arg)
#define IFA__LIKELY(x) (x)
#define IFA__UNLIKELY(x) (x)
#endif

/* Records the message of the calling thread's last error and returns `status`. */
ifa_status ifa__fail(ifa_status status, const char *fmt, ...) IFA__PRINTF(2, 3);
/* Clears the calling thread's last error message. */
void ifa__clear_error(void);

#define RETURN_ERROR_IF(cond, status, ...)                                                    \
    do {                                                                                      \
        if (IFA__UNLIKELY(cond)) return ifa__fail((status), __VA_ARGS__);                     \
    } while (0)

#define RETURN_IF_ERROR(expr)                                                                 \
    do {                                                                                      \
        const ifa_status ifa__st_ = (expr);                                                   \
        if (ifa__st_ != IFA_OK) return ifa__st_;                                              \
    } while (0)

/* Checked int64 arithmetic: return nonzero on overflow. */
static inline int ifa__mul_overflow(int64_t a, int64_t b, int64_t *out) {
    return __builtin_mul_overflow(a, b, out);
}
static inline int ifa__add_overflow(int64_t a, int64_t b, int64_t *out) {
    return __builtin_add_overflow(a, b, out);
}

static inline int64_t ifa__min64(int64_t a, int64_t b) { return a < b ? a : b; }
static inline int64_t ifa__max64(int64_t a, int64_t b) { return a > b ? a : b; }
/* ceil(a / b) for a >= 0, b > 0, without the overflow of (a + b - 1) / b near INT64_MAX. */
static inline int64_t ifa__ceil_div(int64_t a, int64_t b) { return a / b + (a % b != 0); }

/* Working memory is laid out in cache lines: every buffer a kernel reads vector by vector (the
 * query, its int16 form, the scores, the softmax states) starts on a 64-byte boundary, so that no
 * 32- or 64-byte load of it straddles two lines. With the int16 query 16 bytes off a line, every
 * other load of it did, and the AVX2 qk_i8_q16 took 11.9 ns per row in L1 against 9.6 (G = 4,
 * seventeenth session). */
#define IFA__LINE_FLOATS 16
/* n floats rounded up to whole cache lines (n far below INT64_MAX: buffer sizes in floats). */
static inline int64_t ifa__line_floats(int64_t n) {
    return (n + IFA__LINE_FLOATS - 1) / IFA__LINE_FLOATS * IFA__LINE_FLOATS;
}

#endif /* IFA_COMMON_H */
