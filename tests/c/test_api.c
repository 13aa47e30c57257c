/*
 * test_api.c - the small public entry points of ifa.h: status and dtype names, view construction,
 * parameter defaults, the output dtype rule, runtime settings, and the per-thread error message.
 */
#include <pthread.h>
#include <stdio.h>
#include <string.h>

#include "fixture.h"
#include "testing.h"

static void test_status_strings(void)
{
#define EXPECT_STATUS(name, value, text) CHECK_STREQ(ifa_status_string(name), text);
    IFA_STATUS_LIST(EXPECT_STATUS)
#undef EXPECT_STATUS
    /* A value outside the enum still gets a string, never NULL. */
    CHECK(ifa_status_string((ifa_status)99) != NULL);
    CHECK(ifa_status_string((ifa_status)-1) != NULL);
}

static void test_dtype_names_and_sizes(void)
{
    static const struct {
        ifa_dtype dt;
        const char *name;
        size_t size;
    } table[] = {
        { IFA_DTYPE_FLOAT16, "float16", 2 }, { IFA_DTYPE_BFLOAT16, "bfloat16", 2 },
        { IFA_DTYPE_FLOAT32, "float32", 4 }, { IFA_DTYPE_FLOAT64, "float64", 8 },
        { IFA_DTYPE_INT8, "int8", 1 },       { IFA_DTYPE_UINT8, "uint8", 1 },
        { IFA_DTYPE_BOOL, "bool", 1 },       { IFA_DTYPE_INT16, "int16", 2 },
        { IFA_DTYPE_INT32, "int32", 4 },     { IFA_DTYPE_INT64, "int64", 8 },
        { IFA_DTYPE_UINT64, "uint64", 8 },
    };
    for (size_t i = 0; i < sizeof table / sizeof table[0]; i++) {
        CHECK_STREQ(ifa_dtype_name(table[i].dt), table[i].name);
        CHECK_EQ_I64(ifa_dtype_size(table[i].dt), table[i].size);
    }
    CHECK_EQ_I64(ifa_dtype_size(IFA_DTYPE_NONE), 0);
    CHECK_EQ_I64(ifa_dtype_size(IFA_DTYPE_COUNT), 0);
    CHECK_EQ_I64(ifa_dtype_size((ifa_dtype)1234), 0);
    CHECK(ifa_dtype_name(IFA_DTYPE_NONE) != NULL);
    CHECK_STREQ(ifa_dtype_name(IFA_DTYPE_COUNT), "unknown");
    CHECK_STREQ(ifa_dtype_name((ifa_dtype)-3), "unknown");
}

static void test_tensor_make(void)
{
    float buf[64] = { 0 };
    const int64_t shape[3] = { 2, 3, 4 };
    ifa_tensor t = ifa_tensor_make(buf, IFA_DTYPE_FLOAT32, 3, shape, NULL);
    CHECK(t.data == buf);
    CHECK(t.dtype == IFA_DTYPE_FLOAT32);
    CHECK_EQ_I64(t.rank, 3);
    CHECK_EQ_I64(t.shape[0], 2);
    CHECK_EQ_I64(t.shape[1], 3);
    CHECK_EQ_I64(t.shape[2], 4);
    CHECK_EQ_I64(t.strides[0], 12);
    CHECK_EQ_I64(t.strides[1], 4);
    CHECK_EQ_I64(t.strides[2], 1);

    const int64_t strides[3] = { 1, 2, 6 };
    t = ifa_tensor_make(buf, IFA_DTYPE_INT8, 3, shape, strides);
    CHECK_EQ_I64(t.strides[0], 1);
    CHECK_EQ_I64(t.strides[1], 2);
    CHECK_EQ_I64(t.strides[2], 6);

    /* A rank-0 view is one scalar. */
    t = ifa_tensor_make(buf, IFA_DTYPE_FLOAT32, 0, NULL, NULL);
    CHECK_EQ_I64(t.rank, 0);
    CHECK(t.dtype == IFA_DTYPE_FLOAT32);

    /* A rank outside [0, IFA_MAX_RANK] gives the absent view. */
    const int64_t big[IFA_MAX_RANK + 1] = { 1, 1, 1, 1, 1, 1, 1, 1, 1 };
    t = ifa_tensor_make(buf, IFA_DTYPE_FLOAT32, IFA_MAX_RANK + 1, big, NULL);
    CHECK(t.dtype == IFA_DTYPE_NONE);
    t = ifa_tensor_make(buf, IFA_DTYPE_FLOAT32, -1, shape, NULL);
    CHECK(t.dtype == IFA_DTYPE_NONE);

    const int64_t full[IFA_MAX_RANK] = { 1, 2, 1, 2, 1, 2, 1, 2 };
    t = ifa_tensor_make(buf, IFA_DTYPE_FLOAT16, IFA_MAX_RANK, full, NULL);
    CHECK_EQ_I64(t.rank, IFA_MAX_RANK);
    CHECK_EQ_I64(t.strides[IFA_MAX_RANK - 1], 1);
    CHECK_EQ_I64(t.strides[0], 16);

    /* A dimension of size 0 steps the ones before it as if it were 1, as torch's
     * empty(3, 0, 4).stride() = (4, 4, 1). */
    const int64_t with_zero[3] = { 3, 0, 4 };
    t = ifa_tensor_make(buf, IFA_DTYPE_FLOAT32, 3, with_zero, NULL);
    CHECK_EQ_I64(t.strides[0], 4);
    CHECK_EQ_I64(t.strides[1], 4);
    CHECK_EQ_I64(t.strides[2], 1);

    ifa_tensor none = ifa_tensor_none();
    CHECK(none.dtype == IFA_DTYPE_NONE);
    CHECK(none.data == NULL);
    CHECK_EQ_I64(none.rank, 0);
}

static void test_params_init_defaults(void)
{
    ifa_params p;
    memset(&p, 0x5A, sizeof p); /* ifa_params_init must set every field, not rely on zeroes */
    ifa_params_init(&p);
    CHECK_EQ_I64(p.num_heads, 1);
    CHECK(p.scale_value == 1.0);
    CHECK_STREQ(p.layout, "BSH");
    CHECK_EQ_I64(p.key_num_heads, 0);
    CHECK_EQ_I64(p.block_size, 0);
    CHECK_EQ_I64(p.inner_precise, 1);
    CHECK_EQ_I64(p.antiquant_mode, 0);
    const ifa_tensor *opt[] = { &p.query, &p.pse_shift, &p.attention_mask, &p.actual_seq_lengths,
                                &p.dequant_scale1, &p.quant_scale1, &p.dequant_scale2, &p.quant_scale2,
                                &p.quant_offset2, &p.antiquant_scale, &p.antiquant_offset,
                                &p.block_table, &p.kv_padding_size, &p.block_position };
    for (size_t i = 0; i < sizeof opt / sizeof opt[0]; i++)
        CHECK_MSG(opt[i]->dtype == IFA_DTYPE_NONE, "tensor %zu of ifa_params is not absent after init", i);
    CHECK(p.key == NULL);
    CHECK(p.value == NULL);
    CHECK_EQ_I64(p.kv_count, 0);
}

static void test_output_dtype(void)
{
    fx_arena a = { 0 };
    static const ifa_dtype floats[] = { IFA_DTYPE_FLOAT16, IFA_DTYPE_BFLOAT16, IFA_DTYPE_FLOAT32 };
    for (int i = 0; i < 3; i++) {
        fx_config c = fx_default_config();
        c.q_dtype = c.kv_dtype = floats[i];
        fx_case *fc = fx_build(&a, 1, &c);
        CHECK(ifa_output_dtype(&fc->p) == floats[i]);
        const double one = 1.0;
        fc->p.quant_scale2 = fx_values(&a, IFA_DTYPE_FLOAT32, 1, &one);
        CHECK(ifa_output_dtype(&fc->p) == IFA_DTYPE_INT8);
        /* A zero-element quant_scale2 counts as absent (SPEC 1). */
        fc->p.quant_scale2 = fx_values(&a, IFA_DTYPE_FLOAT32, 0, &one);
        CHECK(ifa_output_dtype(&fc->p) == floats[i]);
    }
    fx_config c = fx_default_config();
    c.q_dtype = c.kv_dtype = IFA_DTYPE_INT8;
    fx_case *fc = fx_build(&a, 2, &c);
    CHECK(ifa_output_dtype(&fc->p) == IFA_DTYPE_FLOAT16);
    const double one = 1.0;
    fc->p.quant_scale2 = fx_values(&a, IFA_DTYPE_FLOAT32, 1, &one);
    CHECK(ifa_output_dtype(&fc->p) == IFA_DTYPE_INT8);

    ifa_params p;
    ifa_params_init(&p);
    CHECK(ifa_output_dtype(&p) == IFA_DTYPE_NONE); /* no query at all */
    CHECK(ifa_output_dtype(NULL) == IFA_DTYPE_NONE);
    fx_arena_free(&a);
}

static void test_num_threads(void)
{
    const int before = ifa_get_num_threads();
    CHECK(before >= 1);
    CHECK(ifa_set_num_threads(0) != IFA_OK);
    CHECK(strlen(ifa_last_error()) > 0);
    CHECK(ifa_set_num_threads(-4) != IFA_OK);
    CHECK_EQ_I64(ifa_get_num_threads(), before); /* a refused value changes nothing */
    CHECK_OK(ifa_set_num_threads(1));
    CHECK_EQ_I64(ifa_get_num_threads(), 1);
    CHECK_OK(ifa_set_num_threads(2));
    CHECK_EQ_I64(ifa_get_num_threads(), 2);
    CHECK_OK(ifa_set_num_threads(before));
}

static void test_isa_and_version(void)
{
    const char *avail = ifa_isa_available();
    CHECK(avail != NULL && strncmp(avail, "ref", 3) == 0);
    const char *name = ifa_isa_name();
    CHECK(name != NULL && strstr(avail, name) != NULL);
    CHECK_OK(ifa_set_isa("ref"));
    CHECK_STREQ(ifa_isa_name(), "ref");
    CHECK(ifa_set_isa("no-such-isa") != IFA_OK);
    CHECK(ifa_set_isa(NULL) != IFA_OK);
    CHECK_STREQ(ifa_isa_name(), "ref"); /* a refused name changes nothing */
    CHECK_OK(ifa_set_isa(name));
    const char *v = ifa_version();
    CHECK(v != NULL && v[0] != '\0');
}

/* Builds an invalid call whose message names `what`: layout or num_heads. */
static ifa_status fail_with(const char *what)
{
    fx_arena a = { 0 };
    fx_config c = fx_default_config();
    fx_case *fc = fx_build(&a, 3, &c);
    if (strcmp(what, "layout") == 0) fc->p.layout = "XYZ";
    else fc->p.num_heads = -7;
    const ifa_status st = ifa_incre_flash_attention_v5(&fc->p, &fc->out);
    fx_arena_free(&a);
    return st;
}

typedef struct thread_result {
    ifa_status status;
    char message[512];
    char after_main_error[512];
    pthread_mutex_t *lock;
    pthread_cond_t *cond;
    int *stage;
} thread_result;

/* The worker raises its own error, waits until the main thread has raised a different one, and
 * then reads its message again: it must not have changed. */
static void *worker(void *arg)
{
    thread_result *r = arg;
    r->status = fail_with("num_heads");
    snprintf(r->message, sizeof r->message, "%s", ifa_last_error());
    pthread_mutex_lock(r->lock);
    *r->stage = 1;
    pthread_cond_broadcast(r->cond);
    while (*r->stage < 2) pthread_cond_wait(r->cond, r->lock);
    pthread_mutex_unlock(r->lock);
    snprintf(r->after_main_error, sizeof r->after_main_error, "%s", ifa_last_error());
    return NULL;
}

static void test_last_error_per_thread(void)
{
    /* A success leaves an empty message. */
    fx_arena a = { 0 };
    fx_config c = fx_default_config();
    fx_case *fc = fx_build(&a, 4, &c);
    CHECK_OK(ifa_incre_flash_attention_v5(&fc->p, &fc->out));
    CHECK_STREQ(ifa_last_error(), "");
    fx_arena_free(&a);

    CHECK(fail_with("layout") != IFA_OK);
    char main_msg[512];
    snprintf(main_msg, sizeof main_msg, "%s", ifa_last_error());
    CHECK(strstr(main_msg, "layout") != NULL);

    pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
    pthread_cond_t cond = PTHREAD_COND_INITIALIZER;
    int stage = 0;
    thread_result r;
    memset(&r, 0, sizeof r);
    r.lock = &lock, r.cond = &cond, r.stage = &stage;
    pthread_t th;
    CHECK(pthread_create(&th, NULL, worker, &r) == 0);
    pthread_mutex_lock(&lock);
    while (stage < 1) pthread_cond_wait(&cond, &lock);
    pthread_mutex_unlock(&lock);
    /* The worker's error must not have replaced the main thread's message. */
    CHECK_STREQ(ifa_last_error(), main_msg);
    /* Now the main thread raises a new error; the worker's message must stay its own. */
    CHECK(fail_with("num_heads") != IFA_OK);
    char second[512];
    snprintf(second, sizeof second, "%s", ifa_last_error());
    pthread_mutex_lock(&lock);
    stage = 2;
    pthread_cond_broadcast(&cond);
    pthread_mutex_unlock(&lock);
    pthread_join(th, NULL);
    CHECK(r.status != IFA_OK);
    CHECK(strstr(r.message, "num_heads") != NULL);
    CHECK_STREQ(r.after_main_error, r.message);
    CHECK(strstr(second, "num_heads") != NULL);
}

/* Several threads calling the library at once on their own cases all get the right answer. */
typedef struct concurrent_job {
    uint64_t seed;
    int bad;
} concurrent_job;

static void *concurrent_worker(void *arg)
{
    concurrent_job *job = arg;
    fx_arena a = { 0 };
    fx_config c = fx_default_config();
    c.form = FX_PAGED_POS;
    c.q_dtype = c.kv_dtype = IFA_DTYPE_FLOAT16;
    c.B = 2, c.N = 4, c.KVN = 2, c.D = 64, c.min_len = 50, c.max_len = 200;
    fx_case *fc = fx_build(&a, job->seed, &c);
    golden_out g;
    job->bad = -1;
    if (golden_compute(&fc->p, &g) == 0) {
        job->bad = 0;
        for (int rep = 0; rep < 5 && job->bad == 0; rep++) {
            if (ifa_incre_flash_attention_v5(&fc->p, &fc->out) != IFA_OK) {
                job->bad = 1;
                break;
            }
            /* Compare without the harness (not thread-safe): errors are counted and reported
             * by the main thread. */
            double atol, rtol;
            fx_tolerance(&fc->p, &atol, &rtol);
            for (int64_t b = 0; b < g.B; b++)
                for (int64_t n = 0; n < g.N; n++)
                    for (int64_t d = 0; d < g.D; d++) {
                        int64_t idx[4];
                        gd_qo_index(GD_BSH, b, n, d, g.D, idx);
                        const double got = gd_load(&fc->out, idx);
                        const double want = g.o[(b * g.N + n) * g.D + d];
                        if (!(got - want <= atol + rtol * (want < 0 ? -want : want) &&
                              want - got <= atol + rtol * (want < 0 ? -want : want)))
                            job->bad++;
                    }
        }
        golden_free(&g);
    }
    fx_arena_free(&a);
    return NULL;
}

static void test_concurrent_calls(void)
{
    CHECK_OK(ifa_set_num_threads(2));
    enum { THREADS = 4 };
    pthread_t th[THREADS];
    concurrent_job jobs[THREADS];
    for (int i = 0; i < THREADS; i++) {
        jobs[i].seed = 100 + (uint64_t)i;
        jobs[i].bad = 0;
        CHECK(pthread_create(&th[i], NULL, concurrent_worker, &jobs[i]) == 0);
    }
    for (int i = 0; i < THREADS; i++) {
        pthread_join(th[i], NULL);
        CHECK_MSG(jobs[i].bad == 0, "thread %d: %d bad elements (or a failed call)", i, jobs[i].bad);
    }
}

/* ifa_validate accepts a valid case and computes nothing (the output keeps its canary). */
static void test_validate_only(void)
{
    fx_arena a = { 0 };
    fx_config c = fx_default_config();
    c.form = FX_PAGED;
    fx_case *fc = fx_build(&a, 5, &c);
    memset(fc->out.data, 0xA5, fc->out_bytes);
    CHECK_OK(ifa_validate(&fc->p));
    const unsigned char *o = fc->out.data;
    int untouched = 1;
    for (size_t i = 0; i < fc->out_bytes; i++) untouched &= o[i] == 0xA5;
    CHECK(untouched);
    CHECK(ifa_validate(NULL) != IFA_OK);
    fx_arena_free(&a);
}

int main(int argc, char **argv)
{
    static const tst_case cases[] = {
        TST_CASE(test_status_strings),    TST_CASE(test_dtype_names_and_sizes),
        TST_CASE(test_tensor_make),       TST_CASE(test_params_init_defaults),
        TST_CASE(test_output_dtype),      TST_CASE(test_num_threads),
        TST_CASE(test_isa_and_version),   TST_CASE(test_last_error_per_thread),
        TST_CASE(test_concurrent_calls),  TST_CASE(test_validate_only),
    };
    return tst_main(argc, argv, cases, sizeof cases / sizeof cases[0]);
}
