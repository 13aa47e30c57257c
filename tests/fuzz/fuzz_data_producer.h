/*
 * fuzz_data_producer.h - turns the fuzzer's bytes into the numbers a harness needs.
 *
 * Modelled on zstd's fuzz_data_producer: small integers are taken from the front of the input
 * and a running out of bytes yields zeros, so every input, even an empty one, is a valid
 * program for the harness and a short input describes a small problem. Bulk tensor contents
 * come from a splitmix64 stream seeded by eight bytes of the input, so that a tensor of a few
 * thousand elements costs the fuzzer eight bytes, not thousands.
 *
 * Header-only (static functions), shared by the fuzz targets and nothing else.
 */
#ifndef IFA_FUZZ_DATA_PRODUCER_H
#define IFA_FUZZ_DATA_PRODUCER_H

#include <stddef.h>
#include <stdint.h>
#include <string.h>

/* The libFuzzer entry point, defined by each target and called by replay.c. */
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

typedef struct fz {
    const uint8_t *p;
    size_t n;
    uint64_t rng; /* splitmix64 state for bulk data */
} fz;

static inline fz fz_make(const uint8_t *data, size_t size) {
    fz f = {data, size, 0x9E3779B97F4A7C15ull};
    return f;
}

static inline uint8_t fz_u8(fz *f) {
    if (f->n == 0) return 0;
    f->n--;
    return *f->p++;
}

static inline uint64_t fz_u64(fz *f) {
    uint64_t v = 0;
    for (int i = 0; i < 8; i++) v = (v << 8) | fz_u8(f);
    return v;
}

/* A value in [lo, hi] (inclusive, hi - lo < 2^16) from one or two bytes. */
static inline int64_t fz_range(fz *f, int64_t lo, int64_t hi) {
    const uint64_t span = (uint64_t)(hi - lo) + 1;
    uint64_t v = fz_u8(f);
    if (span > 256) v = (v << 8) | fz_u8(f);
    return lo + (int64_t)(v % span);
}

/* True with probability about num/256. */
static inline int fz_chance(fz *f, unsigned num) { return fz_u8(f) < num; }

/* Sizes that break arithmetic: around the 32- and 64-bit limits, the library's own limits and
 * the sentinel of block_position. */
static const int64_t fz_interesting[] = {
    0, -1, 1, 2, 3, 7, 16, 17, 127, 128, 255, 256, 65535, 65536, 65537,
    INT32_MAX - 1, INT32_MAX, (int64_t)INT32_MAX + 1, (int64_t)UINT32_MAX, (int64_t)UINT32_MAX + 1,
    (int64_t)1 << 40, (int64_t)1 << 52, (int64_t)1 << 62, INT64_MAX / 2 + 1, INT64_MAX - 1,
    INT64_MAX, INT32_MIN, INT64_MIN, -2,
};
#define FZ_N_INTERESTING ((int)(sizeof fz_interesting / sizeof fz_interesting[0]))

static inline int64_t fz_interesting_value(fz *f) {
    return fz_interesting[fz_u8(f) % FZ_N_INTERESTING];
}

/* Mostly `typical`; sometimes an interesting size, a small number or a raw 64-bit value. */
static inline int64_t fz_size(fz *f, int64_t typical) {
    const uint8_t c = fz_u8(f);
    if (c < 232) return typical;
    if (c < 244) return fz_interesting_value(f);
    if (c < 252) return fz_range(f, 0, 40);
    return (int64_t)fz_u64(f);
}

/* ---- Bulk data ------------------------------------------------------------------------------ */

static inline uint64_t fz_next(fz *f) {
    uint64_t z = (f->rng += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

static inline void fz_seed(fz *f) { f->rng ^= fz_u64(f); }

/* Uniform in [-1, 1). */
static inline double fz_unit(fz *f) { return (double)(fz_next(f) >> 11) * 0x1.0p-52 - 1.0; }

#endif /* IFA_FUZZ_DATA_PRODUCER_H */
