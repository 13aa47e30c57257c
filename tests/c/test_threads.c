/*
 * test_threads.c - the thread pool and the API hammered from several threads at once.
 *
 * Written to run under ThreadSanitizer (scripts/test.sh builds it with -DIFA_SANITIZE=thread) as
 * well as in the plain and ASan builds. Each property has its own test:
 *
 *   pool_every_item_once      several callers run ifa__parallel_for at once (the pool serves one,
 *                             the others run serially): every item of every loop runs exactly
 *                             once, with a thread index in bounds.
 *   pool_thread_index_in_bounds  one caller, items slow enough that every helper takes some:
 *                             each thread index is below max_threads.
 *   calls_identical_to_serial 6 threads call ifa_incre_flash_attention_v5 on mixed cases
 *                             (paged+position f16, contiguous bf16, list f32, int8 KV, full quant)
 *                             with their own outputs: results bit-identical to serial calls.
 *   settings_change_during_calls  one thread flips ifa_set_num_threads and ifa_set_isa while
 *                             others compute: every call succeeds and stays within the golden
 *                             tolerance of the serial result (a different thread count or ISA may
 *                             round differently, never wrongly).
 *   errors_stay_per_thread    threads making failing and succeeding calls at once each see their
 *                             own ifa_last_error().
 *
 * The harness's CHECK is not thread-safe, so workers count failures and the main thread checks.
 */
#define _POSIX_C_SOURCE 200809L /* nanosleep */
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "../../src/threadpool.h"
#include "fixture.h"
#include "testing.h"

/* ---- The pool -------------------------------------------------------------------------------- */

enum { POOL_CALLERS = 4, POOL_ROUNDS = 200, POOL_MAX_ITEMS = 97 };

typedef struct pool_job {
    atomic_int hits[POOL_MAX_ITEMS];
    size_t n;
    int max_threads;
    atomic_int bad_thread;
} pool_job;

static void pool_item(void *ctx, size_t item, int thread) {
    pool_job *job = ctx;
    atomic_fetch_add(&job->hits[item], 1);
    if (thread < 0 || thread >= job->max_threads) atomic_fetch_add(&job->bad_thread, 1);
}

typedef struct pool_caller {
    int id;
    int bad;
} pool_caller;

static void *pool_worker(void *arg) {
    pool_caller *c = arg;
    pool_job *job = malloc(sizeof *job);
    for (int round = 0; round < POOL_ROUNDS && job; round++) {
        job->n = (size_t)((round * 7 + c->id * 13) % POOL_MAX_ITEMS);
        job->max_threads = 1 + (round + c->id) % 4;
        for (size_t i = 0; i < POOL_MAX_ITEMS; i++) atomic_init(&job->hits[i], 0);
        atomic_init(&job->bad_thread, 0);
        ifa__parallel_for(job->n, pool_item, job, job->max_threads);
        for (size_t i = 0; i < POOL_MAX_ITEMS; i++)
            if (atomic_load(&job->hits[i]) != (i < job->n ? 1 : 0)) c->bad++;
        c->bad += atomic_load(&job->bad_thread);
    }
    if (job == NULL) c->bad++;
    free(job);
    return NULL;
}

static void test_pool_every_item_once(void) {
    pthread_t th[POOL_CALLERS];
    pool_caller callers[POOL_CALLERS];
    for (int i = 0; i < POOL_CALLERS; i++) {
        callers[i].id = i;
        callers[i].bad = 0;
        CHECK(pthread_create(&th[i], NULL, pool_worker, &callers[i]) == 0);
    }
    for (int i = 0; i < POOL_CALLERS; i++) {
        pthread_join(th[i], NULL);
        CHECK_MSG(callers[i].bad == 0, "caller %d: %d items run the wrong number of times", i, callers[i].bad);
    }
}

/* Items of 300 us: every helper the loop wakes is up before the caller has run them all, so
 * each index the pool hands out is seen. With several callers (above) the helpers often come too
 * late to take an item, and one index past the last would go unnoticed. */
typedef struct slow_job {
    atomic_int used[8];
    atomic_int bad_thread;
    int max_threads;
} slow_job;

static void slow_item(void *ctx, size_t item, int thread) {
    (void)item;
    slow_job *job = ctx;
    if (thread < 0 || thread >= job->max_threads) /* max_threads <= 4 < 8 */
        atomic_fetch_add(&job->bad_thread, 1);
    else
        atomic_store(&job->used[thread], 1);
    const struct timespec pause = { 0, 300000 };
    nanosleep(&pause, NULL);
}

static void test_pool_thread_index_in_bounds(void) {
    for (int max_threads = 2; max_threads <= 4; max_threads++) {
        slow_job job;
        for (int i = 0; i < 8; i++) atomic_init(&job.used[i], 0);
        atomic_init(&job.bad_thread, 0);
        job.max_threads = max_threads;
        ifa__parallel_for((size_t)(16 * max_threads), slow_item, &job, max_threads);
        int used = 0;
        for (int i = 0; i < 8; i++) used += atomic_load(&job.used[i]);
        CHECK_MSG(atomic_load(&job.bad_thread) == 0, "max_threads %d: %d items got an index out of bounds",
                  max_threads, atomic_load(&job.bad_thread));
        /* Not checked: a helper the host schedules late may find no item left. */
        tst_note("max_threads %d: %d thread indices used", max_threads, used);
    }
}

/* ---- The API ---------------------------------------------------------------------------------- */

enum { N_CASES = 5, WORKERS = 6, REPS = 6 };

typedef struct shared_cases {
    fx_case *fc[N_CASES];
    void *serial[N_CASES]; /* output bytes of a serial call */
    size_t bytes[N_CASES];
} shared_cases;

static void build_cases(fx_arena *a, shared_cases *s) {
    for (int i = 0; i < N_CASES; i++) {
        fx_config c = fx_default_config();
        c.B = 2, c.N = 4, c.KVN = 2, c.D = 64, c.min_len = 100, c.max_len = 900;
        c.block_size = 16;
        switch (i) {
        case 0: c.form = FX_PAGED_POS, c.q_dtype = c.kv_dtype = IFA_DTYPE_FLOAT16, c.layout = "BNSD"; break;
        case 1: c.form = FX_CONTIG, c.q_dtype = c.kv_dtype = IFA_DTYPE_BFLOAT16, c.layout = "BSH"; break;
        case 2: c.form = FX_LIST, c.q_dtype = c.kv_dtype = IFA_DTYPE_FLOAT32, c.layout = "BSND"; break;
        case 3:
            c.form = FX_PAGED, c.q_dtype = IFA_DTYPE_FLOAT16, c.kv_dtype = IFA_DTYPE_INT8;
            c.antiquant = FX_AQ_FLAT, c.layout = "BSH";
            break;
        default:
            c.form = FX_LEFTPAD, c.q_dtype = c.kv_dtype = IFA_DTYPE_INT8, c.layout = "BSH", c.pad = 3;
            break;
        }
        s->fc[i] = fx_build(a, 9000 + (uint64_t)i, &c);
        CHECK_OK(ifa_incre_flash_attention_v5(&s->fc[i]->p, &s->fc[i]->out));
        s->bytes[i] = fx_extent_bytes(&s->fc[i]->out);
        s->serial[i] = fx_snapshot(a, &s->fc[i]->out, s->bytes[i]);
    }
}

typedef struct api_worker {
    const shared_cases *s;
    ifa_tensor out[N_CASES]; /* the worker's own outputs, shaped like the cases' */
    int id;
    int exact; /* compare bit for bit (no settings change during the run) */
    int failed_calls, mismatches;
    const atomic_int *stop;
} api_worker;

static void *api_worker_run(void *arg) {
    api_worker *w = arg;
    for (int rep = 0; rep < REPS || (w->stop && !atomic_load(w->stop)); rep++) {
        const int i = (rep + w->id) % N_CASES;
        const fx_case *fc = w->s->fc[i];
        if (ifa_incre_flash_attention_v5(&fc->p, &w->out[i]) != IFA_OK) {
            w->failed_calls++;
            continue;
        }
        if (w->exact) {
            if (memcmp(w->out[i].data, w->s->serial[i], w->s->bytes[i]) != 0) w->mismatches++;
        } else {
            /* Within the golden tolerance of the serial result, element by element. */
            double atol, rtol;
            fx_tolerance(&fc->p, &atol, &rtol);
            const ifa_tensor ref = {.data = w->s->serial[i], .dtype = fc->out.dtype, .rank = fc->out.rank};
            ifa_tensor refv = ref;
            memcpy(refv.shape, fc->out.shape, sizeof refv.shape);
            memcpy(refv.strides, fc->out.strides, sizeof refv.strides);
            int64_t idx[IFA_MAX_RANK] = {0};
            do {
                const double got = gd_load(&w->out[i], idx), want = gd_load(&refv, idx);
                const double tol = atol + rtol * (want < 0 ? -want : want) + (fc->out.dtype == IFA_DTYPE_INT8);
                if (!(got - want <= tol && want - got <= tol)) w->mismatches++;
            } while (fx_next_index(&refv, idx));
        }
    }
    return NULL;
}

static void run_workers(fx_arena *a, const shared_cases *s, int exact, const atomic_int *stop,
                        void (*side)(void), int *failed, int *mismatched) {
    pthread_t th[WORKERS];
    api_worker *w = fx_alloc(a, sizeof(api_worker) * WORKERS);
    for (int t = 0; t < WORKERS; t++) {
        w[t].s = s;
        w[t].id = t;
        w[t].exact = exact;
        w[t].stop = stop;
        for (int i = 0; i < N_CASES; i++) {
            const ifa_tensor *o = &s->fc[i]->out;
            w[t].out[i] = fx_tensor(a, o->dtype, o->rank, o->shape, FX_DENSE, NULL);
            memcpy(w[t].out[i].strides, o->strides, sizeof o->strides);
            w[t].out[i].data = fx_alloc(a, s->bytes[i]);
        }
        CHECK(pthread_create(&th[t], NULL, api_worker_run, &w[t]) == 0);
    }
    if (side) side();
    *failed = *mismatched = 0;
    for (int t = 0; t < WORKERS; t++) {
        pthread_join(th[t], NULL);
        *failed += w[t].failed_calls;
        *mismatched += w[t].mismatches;
    }
}

static void test_calls_identical_to_serial(void) {
    const int saved = ifa_get_num_threads();
    for (int threads = 1; threads <= 3; threads += 2) {
        CHECK_OK(ifa_set_num_threads(threads));
        fx_arena a = {0};
        shared_cases s;
        build_cases(&a, &s);
        int failed, mismatched;
        run_workers(&a, &s, 1, NULL, NULL, &failed, &mismatched);
        CHECK_MSG(failed == 0, "%d concurrent calls failed (num_threads %d)", failed, threads);
        CHECK_MSG(mismatched == 0, "%d concurrent results differ from the serial ones (num_threads %d)",
                  mismatched, threads);
        fx_arena_free(&a);
    }
    CHECK_OK(ifa_set_num_threads(saved));
}

static atomic_int stop_flag;

static void flip_settings(void) {
    char isas[64];
    snprintf(isas, sizeof isas, "%s", ifa_isa_available());
    const char *names[3] = {"ref", NULL, NULL};
    int n_isa = 1;
    for (char *tok = strtok(isas, " "); tok && n_isa < 3; tok = strtok(NULL, " "))
        if (strcmp(tok, "ref") != 0) names[n_isa++] = tok;
    for (int i = 0; i < 300; i++) {
        ifa_set_num_threads(1 + i % 3);
        ifa_set_isa(names[i % n_isa]);
        nanosleep(&(struct timespec){0, 100000}, NULL); /* 0.1 ms: let calls run in between */
    }
    atomic_store(&stop_flag, 1);
}

static void test_settings_change_during_calls(void) {
    const int saved = ifa_get_num_threads();
    char saved_isa[16];
    snprintf(saved_isa, sizeof saved_isa, "%s", ifa_isa_name());
    fx_arena a = {0};
    shared_cases s;
    CHECK_OK(ifa_set_num_threads(2));
    build_cases(&a, &s);
    atomic_store(&stop_flag, 0);
    int failed, mismatched;
    run_workers(&a, &s, 0, &stop_flag, flip_settings, &failed, &mismatched);
    CHECK_MSG(failed == 0, "%d calls failed while the settings changed", failed);
    CHECK_MSG(mismatched == 0, "%d elements outside the tolerance while the settings changed", mismatched);
    fx_arena_free(&a);
    CHECK_OK(ifa_set_num_threads(saved));
    CHECK_OK(ifa_set_isa(saved_isa));
}

/* ---- Errors ----------------------------------------------------------------------------------- */

typedef struct err_worker {
    const fx_case *fc;
    int id, bad;
} err_worker;

static void *err_worker_run(void *arg) {
    err_worker *w = arg;
    ifa_params p = w->fc->p;
    ifa_tensor out = w->fc->out;
    for (int rep = 0; rep < 200; rep++) {
        if ((rep + w->id) % 2) {
            p.num_heads = -1 - w->id; /* this thread's own bad value */
            const ifa_status st = ifa_validate(&p);
            char want[32];
            snprintf(want, sizeof want, "got %d", -1 - w->id);
            if (st != IFA_ERR_INVALID_ARGUMENT || strstr(ifa_last_error(), want) == NULL) w->bad++;
        } else {
            p.num_heads = w->fc->p.num_heads;
            if (ifa_validate(&p) != IFA_OK || ifa_last_error()[0] != '\0') w->bad++;
        }
    }
    (void)out;
    return NULL;
}

static void test_errors_stay_per_thread(void) {
    fx_arena a = {0};
    fx_config c = fx_default_config();
    c.form = FX_PAGED_POS, c.B = 2, c.N = 4, c.KVN = 2, c.D = 32;
    const fx_case *fc = fx_build(&a, 77, &c);
    enum { T = 4 };
    pthread_t th[T];
    err_worker w[T];
    for (int i = 0; i < T; i++) {
        w[i].fc = fc, w[i].id = i, w[i].bad = 0;
        CHECK(pthread_create(&th[i], NULL, err_worker_run, &w[i]) == 0);
    }
    for (int i = 0; i < T; i++) {
        pthread_join(th[i], NULL);
        CHECK_MSG(w[i].bad == 0, "thread %d saw %d wrong statuses or messages", i, w[i].bad);
    }
    fx_arena_free(&a);
}

int main(int argc, char **argv) {
    static const tst_case cases[] = {
        TST_CASE(test_pool_every_item_once),
        TST_CASE(test_pool_thread_index_in_bounds),
        TST_CASE(test_calls_identical_to_serial),
        TST_CASE(test_settings_change_during_calls),
        TST_CASE(test_errors_stay_per_thread),
    };
    return tst_main(argc, argv, cases, sizeof cases / sizeof cases[0]);
}
