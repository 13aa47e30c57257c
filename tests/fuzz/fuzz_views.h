/*
 * fuzz_views.h - tensor views backed by real memory, for the fuzz targets.
 *
 * The library trusts a view to describe memory it may read (ifa.h), so a harness that hands it
 * a shape without the bytes behind it would only find its own bugs. fv_alloc() therefore sizes
 * every buffer to the exact byte extent the view claims (one malloc per view, so AddressSanitizer
 * sees a read one byte past it), and keeps a view well formed unless the fuzzer asked for a
 * broken one. A broken view (negative size or stride, an extent that overflows 64 bits, NULL
 * data, an unknown dtype or rank) is backed by a small dummy buffer and marked `bad`: the
 * library must refuse the call before it reads anything, so the harness checks that any call
 * with a bad view fails.
 *
 *     extent = 1 + sum_i (shape[i] - 1) * strides[i]   elements, when every shape[i] > 0
 *
 * A view whose extent is legal but too large to allocate gets zero strides (every element
 * aliases the first), which keeps huge shapes - the interesting ones for overflow - affordable.
 */
#ifndef IFA_FUZZ_VIEWS_H
#define IFA_FUZZ_VIEWS_H

#include <stdio.h>
#include <stdlib.h>

#include "fuzz_data_producer.h"
#include "ifa.h"

#define FV_MAX_BUFFERS 48
#define FV_MAX_BYTES ((int64_t)1 << 18) /* per view */

typedef struct fv_pool {
    void *buf[FV_MAX_BUFFERS];
    size_t size[FV_MAX_BUFFERS];
    uint64_t sum[FV_MAX_BUFFERS]; /* checksum taken before the call */
    int count;
    int bad; /* some view is malformed: the call must fail */
} fv_pool;

static inline uint64_t fv_checksum(const void *p, size_t n) {
    const unsigned char *c = p;
    uint64_t h = 1469598103934665603ull;
    for (size_t i = 0; i < n; i++) h = (h ^ c[i]) * 1099511628211ull;
    return h;
}

/* Set FUZZ_VERBOSE=1 in the environment to see why a view counts as malformed. */
static inline void fv_mark_bad(fv_pool *pool, const ifa_tensor *t, const char *why) {
    pool->bad = 1;
    if (getenv("FUZZ_VERBOSE") == NULL) return;
    fprintf(stderr, "fuzz: malformed view (%s): dtype %d rank %d shape", why, (int)t->dtype, (int)t->rank);
    for (int32_t i = 0; i >= 0 && i < t->rank && i < IFA_MAX_RANK; i++) fprintf(stderr, " %lld", (long long)t->shape[i]);
    fprintf(stderr, " strides");
    for (int32_t i = 0; i >= 0 && i < t->rank && i < IFA_MAX_RANK; i++) fprintf(stderr, " %lld", (long long)t->strides[i]);
    fprintf(stderr, "\n");
}

static inline void *fv_track(fv_pool *pool, size_t bytes) {
    if (pool->count == FV_MAX_BUFFERS) return NULL;
    void *p = malloc(bytes ? bytes : 1);
    if (p == NULL) return NULL;
    pool->buf[pool->count] = p;
    pool->size[pool->count] = bytes;
    pool->count++;
    return p;
}

static inline void fv_free(fv_pool *pool) {
    for (int i = 0; i < pool->count; i++) free(pool->buf[i]);
    pool->count = 0;
}

static inline void fv_sum_all(fv_pool *pool) {
    for (int i = 0; i < pool->count; i++) pool->sum[i] = fv_checksum(pool->buf[i], pool->size[i]);
}

/* Index of the buffer holding p, or -1. */
static inline int fv_find(const fv_pool *pool, const void *p) {
    for (int i = 0; i < pool->count; i++)
        if (pool->buf[i] == p) return i;
    return -1;
}

/* Element extent of a view, or -1 if a size or stride is negative or the extent overflows. */
static inline int64_t fv_extent(const ifa_tensor *t) {
    int64_t ext = 1;
    for (int32_t i = 0; i < t->rank; i++) {
        if (t->shape[i] < 0 || t->strides[i] < 0) return -1;
        if (t->shape[i] == 0) return 0;
    }
    for (int32_t i = 0; i < t->rank; i++) {
        int64_t span;
        if (__builtin_mul_overflow(t->shape[i] - 1, t->strides[i], &span) ||
            __builtin_add_overflow(ext, span, &ext))
            return -1;
    }
    return ext;
}

/* Fills a buffer of `n` elements of dtype `d`. Integers come from `int_hint`: mostly in
 * [0, int_hint], sometimes -1, the sentinel or an interesting value. Floats are mostly in
 * (-2, 2); `nonfinite` (0-255) is the chance per element of NaN, +-Inf or a huge value. */
static inline void fv_fill(fz *f, void *buf, ifa_dtype d, int64_t n, int64_t int_hint, unsigned nonfinite) {
    unsigned char *c = buf;
    for (int64_t i = 0; i < n; i++) {
        const uint64_t r = fz_next(f);
        int64_t iv;
        const unsigned sel = (unsigned)(r & 255);
        if (sel < 200)
            iv = int_hint > 0 ? (int64_t)((r >> 8) % (uint64_t)(int_hint + 1)) : 0;
        else if (sel < 215)
            iv = -1;
        else if (sel < 235)
            iv = INT32_MAX;
        else
            iv = fz_interesting[(r >> 8) % FZ_N_INTERESTING];
        float fv = (float)(2.0 * ((double)(r >> 11) * 0x1.0p-53 - 0.5) * 2.0);
        if (((r >> 3) & 255) < nonfinite) {
            static const float specials[4] = {__builtin_nanf(""), __builtin_inff(), -__builtin_inff(), 3.0e38f};
            fv = specials[(r >> 40) & 3];
        }
        uint32_t fbits;
        memcpy(&fbits, &fv, 4);
        switch (d) {
        case IFA_DTYPE_FLOAT16: {
            uint16_t h;
            if (fv != fv) h = 0x7E00;
            else if (fv == __builtin_inff()) h = 0x7C00;
            else if (fv == -__builtin_inff()) h = 0xFC00;
            else if (fv > 65000.0f) h = 0x7BFF;
            else h = (uint16_t)(((r >> 63) << 15) | ((13 + (r >> 50) % 3) << 10) | ((r >> 20) & 0x3FF));
            memcpy(c + 2 * i, &h, 2);
            break;
        }
        case IFA_DTYPE_BFLOAT16: {
            const uint16_t h = (uint16_t)(fbits >> 16);
            memcpy(c + 2 * i, &h, 2);
            break;
        }
        case IFA_DTYPE_FLOAT32: memcpy(c + 4 * i, &fv, 4); break;
        case IFA_DTYPE_FLOAT64: {
            const double dv = fv;
            memcpy(c + 8 * i, &dv, 8);
            break;
        }
        case IFA_DTYPE_INT8:
        case IFA_DTYPE_UINT8: c[i] = (unsigned char)(r >> 24); break;
        case IFA_DTYPE_BOOL: c[i] = (unsigned char)((r >> 24) & 1); break;
        case IFA_DTYPE_INT16: {
            const int16_t v = (int16_t)iv;
            memcpy(c + 2 * i, &v, 2);
            break;
        }
        case IFA_DTYPE_INT32: {
            const int32_t v = (int32_t)iv;
            memcpy(c + 4 * i, &v, 4);
            break;
        }
        case IFA_DTYPE_INT64:
        case IFA_DTYPE_UINT64: {
            /* uint64 holds float bits for the full-quantisation scales */
            const uint64_t v = d == IFA_DTYPE_UINT64 && (r & 1) ? fbits : (uint64_t)iv;
            memcpy(c + 8 * i, &v, 8);
            break;
        }
        default: break;
        }
    }
}

/* Gives view t (dtype, rank, shape already set) strides and memory, as the fuzzer chooses.
 * `contiguous_only` keeps C-contiguous strides (for the output of a differential check). */
static inline void fv_alloc(fz *f, fv_pool *pool, ifa_tensor *t, int64_t int_hint, unsigned nonfinite) {
    const int rank_ok = t->rank >= 0 && t->rank <= IFA_MAX_RANK;
    const int dtype_ok = t->dtype >= IFA_DTYPE_NONE && t->dtype < IFA_DTYPE_COUNT;
    if (!rank_ok || !dtype_ok) {
        if (!rank_ok) t->rank = t->rank < 0 ? -1 : IFA_MAX_RANK + 1;
        t->data = fv_track(pool, 16);
        fv_mark_bad(pool, t, rank_ok ? "dtype" : "rank");
        return;
    }
    /* Strides: C-contiguous, padded, zero in some dimensions, small random, or one raw. */
    const uint8_t mode = fz_u8(f);
    int64_t running = 1;
    for (int32_t i = t->rank - 1; i >= 0; i--) {
        int64_t s = running;
        if (mode >= 160 && mode < 190 && i != t->rank - 1 &&
            __builtin_add_overflow(running, fz_range(f, 0, 3), &s))
            s = running;
        else if (mode >= 190 && mode < 215) s = fz_chance(f, 100) ? 0 : running;
        else if (mode >= 215 && mode < 245) s = fz_range(f, 0, 5);
        else if (mode >= 245 && fz_chance(f, 64)) s = fz_interesting_value(f);
        t->strides[i] = s;
        const int64_t dim = t->shape[i] > 0 ? t->shape[i] : 1;
        if (__builtin_mul_overflow(running, dim, &running)) running = INT64_MAX / 4;
    }
    /* The order of the library's check_view(): sizes and strides, element count; a view with
     * dtype none or no elements is then absent, whatever its extent. */
    const size_t es = ifa_dtype_size(t->dtype);
    int64_t numel = 1;
    for (int32_t i = 0; i < t->rank; i++) {
        if (t->shape[i] < 0 || t->strides[i] < 0) {
            t->data = fv_track(pool, 16);
            fv_mark_bad(pool, t, "negative size or stride");
            return;
        }
        if (__builtin_mul_overflow(numel, t->shape[i], &numel)) {
            t->data = fv_track(pool, 16);
            fv_mark_bad(pool, t, "element count overflows");
            return;
        }
    }
    if (t->dtype == IFA_DTYPE_NONE || numel == 0) {
        t->data = fz_chance(f, 128) ? NULL : fv_track(pool, 16);
        return;
    }
    int64_t ext = fv_extent(t);
    if (ext < 0) {
        t->data = fv_track(pool, 16);
        fv_mark_bad(pool, t, "extent overflows");
        return;
    }
    int64_t bytes;
    if (__builtin_mul_overflow(ext, (int64_t)es, &bytes)) {
        t->data = fv_track(pool, 16);
        fv_mark_bad(pool, t, "byte extent overflows");
        return;
    }
    if (bytes > FV_MAX_BYTES) { /* legal but too big to back: alias every element */
        for (int32_t i = 0; i < t->rank; i++) t->strides[i] = 0;
        ext = 1;
        bytes = (int64_t)es;
    }
    if (fz_chance(f, 2)) {
        t->data = NULL;
        fv_mark_bad(pool, t, "NULL data");
        return;
    }
    t->data = fv_track(pool, (size_t)bytes);
    if (t->data == NULL) {
        fv_mark_bad(pool, t, "pool exhausted, NULL data");
        return;
    }
    fv_fill(f, t->data, t->dtype, ext, int_hint, nonfinite);
}

#endif /* IFA_FUZZ_VIEWS_H */
