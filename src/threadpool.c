/*
 * threadpool.c - the persistent pool behind ifa__parallel_for().
 *
 * Workers are created lazily, the first time a loop wants them, and then sleep on a condition
 * variable between loops (creating threads per call would cost tens of microseconds, more than a
 * short decode step). One loop runs at a time: a second caller that finds the pool busy runs its
 * loop serially instead of waiting, which keeps concurrent Python threads independent.
 *
 * Lifetime rule: a worker copies the job (fn, ctx, n) under the mutex and registers itself as a
 * participant; the caller returns only when every item has finished and no participant remains,
 * and a new job is published only when no participant of the old one remains. So a worker never
 * runs an item of one job with the function or context of another.
 */
#define _POSIX_C_SOURCE 200809L

#include "threadpool.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdlib.h>
#include <time.h>
#include <unistd.h>

#define IFA__MAX_WORKERS 256

typedef struct ifa__pool {
    pthread_mutex_t mutex;
    pthread_cond_t wake;     /* a new job was published */
    pthread_cond_t finished; /* an item finished or a participant left */
    pthread_mutex_t caller;  /* held by the one caller running a loop on the pool */
    int n_workers;
    atomic_ulong generation; /* written under mutex; read without it while spinning */
    /* the current job */
    ifa__parallel_fn fn;
    void *ctx;
    size_t n;
    int active_workers; /* workers with index < this take part */
    atomic_size_t next;
    atomic_size_t done;      /* items finished; polled without the mutex by the caller's join */
    atomic_int participants; /* changed under mutex; polled likewise */
} ifa__pool;

static ifa__pool pool = {
    .mutex = PTHREAD_MUTEX_INITIALIZER,
    .wake = PTHREAD_COND_INITIALIZER,
    .finished = PTHREAD_COND_INITIALIZER,
    .caller = PTHREAD_MUTEX_INITIALIZER,
};

/* Claims and runs items until none is left; returns how many this thread ran. */
static size_t run_items(ifa__parallel_fn fn, void *ctx, size_t n, int thread) {
    size_t ran = 0;
    for (;;) {
        const size_t i = atomic_fetch_add_explicit(&pool.next, 1, memory_order_relaxed);
        if (i >= n) break;
        fn(ctx, i, thread);
        ran++;
    }
    return ran;
}

/* How long a worker keeps polling for the next job before it sleeps, and the caller for the end
 * of a loop, by default. Decode calls come back to back (one per layer), and waking a sleeping
 * thread costs from microseconds up to a scheduler tick on a busy machine, longer than a short
 * call itself; polling for a while keeps the worker ready without burning a core forever between
 * bursts. IFA_SPIN_US overrides it (0: sleep at once, for processes whose other threads need the
 * cores right after a call). */
#define IFA__SPIN_NS_DEFAULT 100000

static uint64_t spin_ns(void) {
    static _Atomic(int64_t) cached = -1;
    int64_t v = atomic_load(&cached);
    if (v < 0) {
        v = IFA__SPIN_NS_DEFAULT;
        const char *env = getenv("IFA_SPIN_US");
        if (env != NULL && *env != '\0') {
            char *end = NULL;
            const long us = strtol(env, &end, 10);
            if (end != env && *end == '\0' && us >= 0 && us <= 10000000) v = (int64_t)us * 1000;
        }
        atomic_store(&cached, v);
    }
    return (uint64_t)v;
}

static uint64_t now_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

/* Polls ready(arg) for up to spin_ns(); returns whether it became true. */
static int poll_for(int (*ready)(const void *arg), const void *arg) {
    const uint64_t limit = spin_ns();
    if (limit == 0) return 0;
    const uint64_t start = now_ns();
    for (unsigned i = 1;; i++) {
        if (ready(arg)) return 1;
        if ((i & 255) == 0 && now_ns() - start > limit) return 0;
#if defined(__x86_64__) || defined(__i386__)
        __builtin_ia32_pause();
#endif
    }
}

/* A worker's wait: a generation other than *seen has been published. */
static int job_published(const void *seen) {
    return atomic_load_explicit(&pool.generation, memory_order_acquire) != *(const unsigned long *)seen;
}

/* The caller's side of the join: all *n items have finished and every participant has left.
 * When the caller runs out of items first, what remains is a worker's last item; sleeping on the
 * condition variable at once cost the caller a wake-up after that item ended (on this VM 7 us
 * for the worker's signal and about 18 us until the halted virtual CPU runs again), so the
 * caller polls first. It re-checks under the mutex afterwards: polling only decides when it
 * goes to sleep. */
static int loop_finished(const void *n) {
    return atomic_load_explicit(&pool.done, memory_order_acquire) >= *(const size_t *)n &&
           atomic_load_explicit(&pool.participants, memory_order_acquire) == 0;
}

static void *worker_main(void *arg) {
    const int index = (int)(size_t)arg;
    pthread_mutex_lock(&pool.mutex);
    unsigned long seen = atomic_load(&pool.generation);
    for (;;) {
        if (!job_published(&seen)) {
            pthread_mutex_unlock(&pool.mutex);
            poll_for(job_published, &seen);
            pthread_mutex_lock(&pool.mutex);
        }
        while (!job_published(&seen)) pthread_cond_wait(&pool.wake, &pool.mutex);
        seen = atomic_load(&pool.generation);
        if (index >= pool.active_workers) continue;
        const ifa__parallel_fn fn = pool.fn;
        void *const ctx = pool.ctx;
        const size_t n = pool.n;
        pool.participants++;
        pthread_mutex_unlock(&pool.mutex);
        const size_t ran = run_items(fn, ctx, n, index + 1);
        pthread_mutex_lock(&pool.mutex);
        pool.done += ran;
        pool.participants--;
        pthread_cond_broadcast(&pool.finished);
    }
    return NULL;
}

/* Grows the pool to `wanted` workers (under pool.mutex); returns how many exist. */
static int ensure_workers(int wanted) {
    if (wanted > IFA__MAX_WORKERS) wanted = IFA__MAX_WORKERS;
    while (pool.n_workers < wanted) {
        pthread_t thread;
        pthread_attr_t attr;
        pthread_attr_init(&attr);
        pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
        const int rc = pthread_create(&thread, &attr, worker_main, (void *)(size_t)pool.n_workers);
        pthread_attr_destroy(&attr);
        if (rc != 0) break; /* run with what we have */
        pool.n_workers++;
    }
    return pool.n_workers;
}

static void run_serial(size_t n, ifa__parallel_fn fn, void *ctx) {
    for (size_t i = 0; i < n; i++) fn(ctx, i, 0);
}

void ifa__parallel_for(size_t n, ifa__parallel_fn fn, void *ctx, int max_threads) {
    if (n == 0) return;
    if (n == 1 || max_threads <= 1 || pthread_mutex_trylock(&pool.caller) != 0) {
        run_serial(n, fn, ctx);
        return;
    }
    pthread_mutex_lock(&pool.mutex);
    const size_t helpers_wanted = n - 1 < (size_t)(max_threads - 1) ? n - 1 : (size_t)(max_threads - 1);
    const int workers = ensure_workers((int)helpers_wanted);
    if (workers == 0) {
        pthread_mutex_unlock(&pool.mutex);
        pthread_mutex_unlock(&pool.caller);
        run_serial(n, fn, ctx);
        return;
    }
    while (pool.participants > 0) pthread_cond_wait(&pool.finished, &pool.mutex);
    pool.fn = fn;
    pool.ctx = ctx;
    pool.n = n;
    pool.done = 0;
    pool.active_workers = workers < (int)helpers_wanted ? workers : (int)helpers_wanted;
    atomic_store_explicit(&pool.next, 0, memory_order_relaxed);
    atomic_fetch_add(&pool.generation, 1);
    pthread_cond_broadcast(&pool.wake);
    pthread_mutex_unlock(&pool.mutex);

    const size_t ran = run_items(fn, ctx, n, 0);
    atomic_fetch_add(&pool.done, ran);
    poll_for(loop_finished, &n);

    pthread_mutex_lock(&pool.mutex);
    while (!loop_finished(&n)) pthread_cond_wait(&pool.finished, &pool.mutex);
    pthread_mutex_unlock(&pool.mutex);
    pthread_mutex_unlock(&pool.caller);
}

int ifa__default_num_threads(void) {
    const char *env = getenv("IFA_NUM_THREADS");
    if (env != NULL && *env != '\0') {
        char *end = NULL;
        const long v = strtol(env, &end, 10);
        if (end != env && *end == '\0' && v >= 1 && v <= 1024) return (int)v;
    }
    const long cpus = sysconf(_SC_NPROCESSORS_ONLN);
    return cpus >= 1 && cpus <= 1024 ? (int)cpus : 1;
}
