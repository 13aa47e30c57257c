/*
 * views.c - checks and descriptions of one borrowed tensor view, shared by every entry point
 * that takes views (validate.c for IFA-V5, select/ for block selection).
 *
 * A view must describe memory it can address: sane rank and dtype code, non-negative sizes and
 * strides, and a byte extent that fits in int64, so that no later offset computation overflows.
 */
#include "views.h"

#include <inttypes.h>
#include <stdio.h>

int64_t ifa__numel(const ifa_tensor *t) {
    int64_t n = 1;
    for (int32_t i = 0; i < t->rank; i++) n *= t->shape[i]; /* overflow already excluded */
    return n;
}

int ifa__present(const ifa_tensor *t) {
    if (t->dtype == IFA_DTYPE_NONE) return 0;
    if (t->rank < 0 || t->rank > IFA_MAX_RANK) return 1; /* let check_view report it */
    for (int32_t i = 0; i < t->rank; i++)
        if (t->shape[i] == 0) return 0;
    return 1;
}

/* "(2, 8, 128)" */
const char *ifa__shape_str(const ifa_tensor *t, char *buf, size_t size) {
    size_t used = 0;
    used += (size_t)snprintf(buf + used, size - used, "(");
    for (int32_t i = 0; i < t->rank && i < IFA_MAX_RANK && used < size; i++)
        used += (size_t)snprintf(buf + used, size - used, "%s%" PRId64, i ? ", " : "", t->shape[i]);
    if (t->rank == 1 && used < size) used += (size_t)snprintf(buf + used, size - used, ",");
    if (used < size) snprintf(buf + used, size - used, ")");
    return buf;
}

/* A view must describe memory it can address: sane rank, dtype, non-negative sizes and strides,
 * and a byte extent that fits in int64 (so no later offset computation overflows). */
ifa_status ifa__check_view(const ifa_tensor *t, const char *name) {
    RETURN_ERROR_IF(t->dtype < IFA_DTYPE_NONE || t->dtype >= IFA_DTYPE_COUNT,
                    IFA_ERR_INVALID_DTYPE, "%s: unknown dtype code %d", name, (int)t->dtype);
    RETURN_ERROR_IF(t->rank < 0 || t->rank > IFA_MAX_RANK, IFA_ERR_INVALID_SHAPE,
                    "%s: rank %d is outside [0, %d]", name, (int)t->rank, IFA_MAX_RANK);
    int64_t numel = 1, extent = 0;
    for (int32_t i = 0; i < t->rank; i++) {
        RETURN_ERROR_IF(t->shape[i] < 0, IFA_ERR_INVALID_SHAPE,
                        "%s: dimension %d has negative size %" PRId64, name, (int)i, t->shape[i]);
        RETURN_ERROR_IF(t->strides[i] < 0, IFA_ERR_INVALID_ARGUMENT,
                        "%s: dimension %d has negative stride %" PRId64
                        " (pass a copy with non-negative strides)",
                        name, (int)i, t->strides[i]);
        RETURN_ERROR_IF(ifa__mul_overflow(numel, t->shape[i], &numel), IFA_ERR_OVERFLOW,
                        "%s: element count of shape %s overflows 64 bits", name, IFA__SHAPE(t));
    }
    if (numel == 0 || t->dtype == IFA_DTYPE_NONE) return IFA_OK;
    for (int32_t i = 0; i < t->rank; i++) {
        int64_t span;
        RETURN_ERROR_IF(ifa__mul_overflow(t->shape[i] - 1, t->strides[i], &span) ||
                            ifa__add_overflow(extent, span, &extent),
                        IFA_ERR_OVERFLOW, "%s: byte extent of shape %s overflows 64 bits", name,
                        IFA__SHAPE(t));
    }
    int64_t bytes;
    RETURN_ERROR_IF(ifa__add_overflow(extent, 1, &bytes) ||
                        ifa__mul_overflow(bytes, (int64_t)ifa_dtype_size(t->dtype), &bytes),
                    IFA_ERR_OVERFLOW, "%s: byte extent of shape %s overflows 64 bits", name,
                    IFA__SHAPE(t));
    RETURN_ERROR_IF(t->data == NULL, IFA_ERR_NULL_POINTER,
                    "%s: data pointer is NULL for %" PRId64 " elements", name, numel);
    return IFA_OK;
}
