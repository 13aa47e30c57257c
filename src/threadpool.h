/*
 * threadpool.h - one parallel loop, on a small persistent pool of worker threads.
 *
 * ifa__parallel_for(n, fn, ctx, max_threads) replaces the serial loop
 *
 *     for (size_t i = 0; i < n; i++) fn(ctx, i, 0);
 *
 * running the items on up to max_threads threads (the caller is one of them); `thread` tells the
 * item which of those threads runs it (0 <= thread < max_threads), for per-thread scratch. Items
 * are handed out one at a time from a shared counter, so uneven items balance themselves. Every
 * item runs exactly once and the call returns after all have finished. When the pool is busy with
 * another caller's loop, or max_threads is 1, the loop simply runs serially on the caller.
 */
#ifndef IFA_THREADPOOL_H
#define IFA_THREADPOOL_H

#include <stddef.h>

typedef void (*ifa__parallel_fn)(void *ctx, size_t item, int thread);

void ifa__parallel_for(size_t n, ifa__parallel_fn fn, void *ctx, int max_threads);

/* Number of threads a call uses by default: IFA_NUM_THREADS, else the online CPUs. */
int ifa__default_num_threads(void);

#endif /* IFA_THREADPOOL_H */
