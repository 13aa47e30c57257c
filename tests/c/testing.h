/*
 * testing.h - the small test harness shared by the libifa C tests.
 *
 * Each test program lists its test functions in a tst_case table and hands it to tst_main(),
 * which runs them in order (or only those whose name contains argv[1]), counts the failed checks
 * of each test and ends with one "N passed, N failed" line. The CHECK macros never abort: a test
 * keeps going after a failed check so that one run shows every discrepancy, not only the first.
 */
#ifndef IFA_TESTS_TESTING_H
#define IFA_TESTS_TESTING_H

#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "ifa.h"

typedef void (*tst_fn)(void);

typedef struct tst_case {
    const char *name;
    tst_fn fn;
} tst_case;

#define TST_CASE(fn) { #fn, fn }

#if defined(__GNUC__)
#define TST_PRINTF(a, b) __attribute__((format(printf, a, b)))
#else
#define TST_PRINTF(a, b)
#endif

/* Records one failed check of the running test and prints its message (the first few only, so a
 * badly broken library does not bury the summary). */
void tst_fail_at(const char *file, int line, const char *fmt, ...) TST_PRINTF(3, 4);

/* Prints an informational line, indented under the running test. */
void tst_note(const char *fmt, ...) TST_PRINTF(1, 2);

/* Number of failed checks in the running test so far. */
int tst_failures(void);

/* Runs the tests and returns the process exit status (0 when all passed). */
int tst_main(int argc, char **argv, const tst_case *cases, size_t count);

#define CHECK(cond)                                                                  \
    do {                                                                             \
        if (!(cond)) tst_fail_at(__FILE__, __LINE__, "CHECK(%s) failed", #cond);     \
    } while (0)

#define CHECK_MSG(cond, ...)                                                         \
    do {                                                                             \
        if (!(cond)) tst_fail_at(__FILE__, __LINE__, __VA_ARGS__);                   \
    } while (0)

#define CHECK_EQ_I64(a, b)                                                           \
    do {                                                                             \
        long long tst_a_ = (long long)(a), tst_b_ = (long long)(b);                  \
        if (tst_a_ != tst_b_)                                                        \
            tst_fail_at(__FILE__, __LINE__, "%s == %s failed: %lld vs %lld", #a, #b, \
                        tst_a_, tst_b_);                                             \
    } while (0)

#define CHECK_STREQ(a, b)                                                            \
    do {                                                                             \
        const char *tst_a_ = (a), *tst_b_ = (b);                                     \
        if (tst_a_ == NULL || tst_b_ == NULL || strcmp(tst_a_, tst_b_) != 0)         \
            tst_fail_at(__FILE__, __LINE__, "%s == %s failed: \"%s\" vs \"%s\"", #a, #b, \
                        tst_a_ ? tst_a_ : "(null)", tst_b_ ? tst_b_ : "(null)");     \
    } while (0)

/* A call that must succeed; on failure the library's own message is shown. */
#define CHECK_OK(expr)                                                               \
    do {                                                                             \
        ifa_status tst_st_ = (expr);                                                 \
        if (tst_st_ != IFA_OK)                                                       \
            tst_fail_at(__FILE__, __LINE__, "%s returned %s: %s", #expr,             \
                        ifa_status_string(tst_st_), ifa_last_error());               \
    } while (0)

#endif /* IFA_TESTS_TESTING_H */
