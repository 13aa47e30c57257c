/*
 * rng.h - a deterministic random generator for the tests (splitmix64).
 *
 * Every random case is a function of its seed alone, so a failure printed with its seed can be
 * replayed exactly. splitmix64 is tiny, has no bad seeds and is plenty for test data.
 */
#ifndef IFA_TESTS_RNG_H
#define IFA_TESTS_RNG_H

#include <stdint.h>

typedef struct rng {
    uint64_t state;
} rng;

static inline rng rng_seed(uint64_t seed)
{
    rng r = { seed * 0x9E3779B97F4A7C15ull + 0x632BE59BD9B4E019ull };
    return r;
}

static inline uint64_t rng_next(rng *r)
{
    uint64_t z = (r->state += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

/* Uniform in [0, 1). */
static inline double rng_unit(rng *r) { return (double)(rng_next(r) >> 11) * 0x1.0p-53; }

/* Uniform real in [lo, hi). */
static inline double rng_uniform(rng *r, double lo, double hi)
{
    return lo + (hi - lo) * rng_unit(r);
}

/* Uniform integer in [lo, hi], both ends included. */
static inline int64_t rng_int(rng *r, int64_t lo, int64_t hi)
{
    const uint64_t span = (uint64_t)(hi - lo) + 1u;
    return lo + (int64_t)(rng_next(r) % span);
}

/* One element of a small array, chosen uniformly. */
#define RNG_PICK(r, array) ((array)[rng_int((r), 0, (int64_t)(sizeof(array) / sizeof((array)[0])) - 1)])

#endif /* IFA_TESTS_RNG_H */
