/*
 * testing.c - the harness behind testing.h.
 *
 * The state is a handful of globals because a test program runs its tests one after another on
 * the main thread; the per-thread tests in test_api.c only check results on the main thread.
 * Every line is flushed at once, so that the log stays complete up to the last line when a
 * sanitizer stops the program in the middle of a test.
 */
#include "testing.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

/* How many failure messages one test prints before it only counts them. */
#define TST_MAX_PRINTED 12

static int tst_failed_checks;
static const char *tst_running = "";

void tst_fail_at(const char *file, int line, const char *fmt, ...)
{
    tst_failed_checks++;
    if (tst_failed_checks > TST_MAX_PRINTED) return;
    va_list ap;
    va_start(ap, fmt);
    fprintf(stdout, "    FAIL %s:%d [%s]: ", file, line, tst_running);
    vfprintf(stdout, fmt, ap);
    fputc('\n', stdout);
    va_end(ap);
    if (tst_failed_checks == TST_MAX_PRINTED)
        fprintf(stdout, "    (further failures of this test are counted, not printed)\n");
    fflush(stdout);
}

void tst_note(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    fputs("    note: ", stdout);
    vfprintf(stdout, fmt, ap);
    fputc('\n', stdout);
    va_end(ap);
    fflush(stdout);
}

int tst_failures(void) { return tst_failed_checks; }

static double tst_seconds(void)
{
    struct timespec ts;
    timespec_get(&ts, TIME_UTC);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

int tst_main(int argc, char **argv, const tst_case *cases, size_t count)
{
    const char *filter = argc > 1 ? argv[1] : NULL;
    int passed = 0, failed = 0;
    const double t0 = tst_seconds();
    for (size_t i = 0; i < count; i++) {
        if (filter != NULL && strstr(cases[i].name, filter) == NULL) continue;
        tst_running = cases[i].name;
        tst_failed_checks = 0;
        const double t = tst_seconds();
        cases[i].fn();
        const double dt = tst_seconds() - t;
        if (tst_failed_checks == 0) {
            passed++;
            printf("[  OK  ] %s (%.2f s)\n", cases[i].name, dt);
        } else {
            failed++;
            printf("[ FAIL ] %s: %d failed check%s (%.2f s)\n", cases[i].name, tst_failed_checks,
                   tst_failed_checks == 1 ? "" : "s", dt);
        }
        fflush(stdout);
    }
    printf("%d passed, %d failed (%.2f s)\n", passed, failed, tst_seconds() - t0);
    return failed == 0 ? 0 : 1;
}
