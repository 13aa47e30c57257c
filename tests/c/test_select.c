/*
 * test_select.c - block selection (include/ifa.h, "Block selection"): page summaries, their
 * update, and ifa_select_blocks, each judged by a float64 golden written here from the definition
 * (Quest: per-page min/max keys, score sum_d max(q_d*kmax_d, q_d*kmin_d), max over the G heads of
 * a KV head, top pages with ties to the lower index), plus the edges (k >= pages, L = 0, partial
 * and full last pages, sinks, GQA, wide block_position), agreement of every ISA on exact data,
 * and every error, which must leave the outputs untouched.
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "rng.h"
#include "testing.h"

#define MAXB 4
#define SENT IFA_BLOCK_UNSELECTED

/* One paged problem in float32: a 3-D cache (nb, bs, KVN*D), a BSH query, a block table. */
typedef struct scase {
    int64_t B, N, KVN, D, bs, M, nb;
    int64_t L[MAXB];
    float *key;   /* nb * bs * KVN * D */
    float *query; /* B * N * D */
    int32_t *table; /* B * M */
    float *summ;  /* nb * KVN * 2 * D */
} scase;

static void scase_free(scase *c) {
    free(c->key);
    free(c->query);
    free(c->table);
    free(c->summ);
    memset(c, 0, sizeof *c);
}

/* Random case; `integers` draws small integers so that every score is exact in float32. */
static void scase_make(scase *c, uint64_t seed, int64_t B, int64_t N, int64_t KVN, int64_t D,
                       int64_t bs, int64_t M, const int64_t *L, int integers) {
    rng r = rng_seed(seed);
    memset(c, 0, sizeof *c);
    c->B = B; c->N = N; c->KVN = KVN; c->D = D; c->bs = bs; c->M = M;
    c->nb = B * M + 3; /* three blocks nobody references */
    for (int64_t b = 0; b < B; b++) c->L[b] = L[b];
    const int64_t nk = c->nb * bs * KVN * D;
    c->key = malloc((size_t)nk * sizeof(float));
    c->query = malloc((size_t)(B * N * D) * sizeof(float));
    c->table = malloc((size_t)(B * M) * sizeof(int32_t));
    c->summ = malloc((size_t)(c->nb * KVN * 2 * D) * sizeof(float));
    for (int64_t i = 0; i < nk; i++)
        c->key[i] = integers ? (float)rng_int(&r, -3, 3) : (float)rng_uniform(&r, -2, 2);
    for (int64_t i = 0; i < B * N * D; i++)
        c->query[i] = integers ? (float)rng_int(&r, -2, 2) : (float)rng_uniform(&r, -2, 2);
    /* A random permutation of the blocks, the first B*M of them in the table. */
    int32_t *perm = malloc((size_t)c->nb * sizeof(int32_t));
    for (int64_t i = 0; i < c->nb; i++) perm[i] = (int32_t)i;
    for (int64_t i = c->nb - 1; i > 0; i--) {
        const int64_t j = rng_int(&r, 0, i);
        const int32_t t = perm[i]; perm[i] = perm[j]; perm[j] = t;
    }
    for (int64_t i = 0; i < B * M; i++) c->table[i] = perm[i];
    free(perm);
}

static ifa_tensor t_key(const scase *c) {
    return ifa_tensor_make(c->key, IFA_DTYPE_FLOAT32, 3, (int64_t[]){c->nb, c->bs, c->KVN * c->D}, NULL);
}
static ifa_tensor t_table(const scase *c) {
    return ifa_tensor_make(c->table, IFA_DTYPE_INT32, 2, (int64_t[]){c->B, c->M}, NULL);
}
static ifa_tensor t_lengths(const scase *c) {
    return ifa_tensor_make(c->L, IFA_DTYPE_INT64, 1, (int64_t[]){c->B}, NULL);
}
static ifa_tensor t_summ(const scase *c) {
    return ifa_tensor_make(c->summ, IFA_DTYPE_FLOAT32, 4, (int64_t[]){c->nb, c->KVN, 2, c->D}, NULL);
}

static ifa_summary_params sum_params(const scase *c) {
    ifa_summary_params p;
    ifa_summary_params_init(&p);
    p.key_cache = t_key(c);
    p.block_table = t_table(c);
    p.actual_seq_lengths = t_lengths(c);
    p.key_num_heads = c->KVN;
    return p;
}

static ifa_select_params sel_params(const scase *c, int64_t k, int64_t sink) {
    ifa_select_params p;
    ifa_select_params_init(&p);
    p.query = ifa_tensor_make(c->query, IFA_DTYPE_FLOAT32, 3, (int64_t[]){c->B, 1, c->N * c->D}, NULL);
    p.summaries = t_summ(c);
    p.block_table = t_table(c);
    p.actual_seq_lengths = t_lengths(c);
    p.num_heads = c->N;
    p.key_num_heads = c->KVN;
    p.layout = "BSH";
    p.block_size = c->bs;
    p.k = k;
    p.sink_pages = sink;
    return p;
}

static double key_at(const scase *c, int64_t blk, int64_t r, int64_t h, int64_t d) {
    return c->key[((blk * c->bs + r) * c->KVN + h) * c->D + d];
}

/* Golden summaries: min/max over the most rows any reference gives each block. */
static void golden_summaries(const scase *c, double *g) {
    int64_t *rows = calloc((size_t)c->nb, sizeof *rows);
    for (int64_t b = 0; b < c->B; b++)
        for (int64_t j = 0; j * c->bs < c->L[b]; j++) {
            const int64_t blk = c->table[b * c->M + j], n = c->L[b] - j * c->bs;
            const int64_t rr = n < c->bs ? n : c->bs;
            if (rr > rows[blk]) rows[blk] = rr;
        }
    for (int64_t blk = 0; blk < c->nb; blk++)
        for (int64_t h = 0; h < c->KVN; h++)
            for (int64_t d = 0; d < c->D; d++) {
                double lo = INFINITY, hi = -INFINITY;
                for (int64_t r = 0; r < rows[blk]; r++) {
                    const double v = key_at(c, blk, r, h, d);
                    lo = v < lo ? v : lo;
                    hi = v > hi ? v : hi;
                }
                g[((blk * c->KVN + h) * 2 + 0) * c->D + d] = lo;
                g[((blk * c->KVN + h) * 2 + 1) * c->D + d] = hi;
            }
    free(rows);
}

static int compare_summaries(const scase *c, const double *g, const char *what) {
    int bad = 0;
    for (int64_t i = 0; i < c->nb * c->KVN * 2 * c->D; i++)
        if ((double)c->summ[i] != g[i]) {
            if (bad++ < 3) CHECK_MSG(0, "%s: summary element %lld is %g, golden %g", what, (long long)i,
                                     (double)c->summ[i], g[i]);
        }
    return bad;
}

static void test_summaries_golden(void) {
    /* Partial last pages, a full last page, L = 0, and a block shared by two sequences (a common
     * first page) whose other reference has fewer rows. */
    const int64_t L[4] = {37, 40, 0, 3};
    scase c;
    scase_make(&c, 1, 4, 8, 2, 24, 8, 6, L, 0);
    c.table[3 * c.M + 0] = c.table[0]; /* batch 3's first page (3 rows) is batch 0's (8 rows) */
    ifa_summary_params p = sum_params(&c);
    ifa_tensor out = t_summ(&c);
    CHECK_OK(ifa_page_summaries(&p, &out));
    double *g = malloc((size_t)(c.nb * c.KVN * 2 * c.D) * sizeof(double));
    golden_summaries(&c, g);
    compare_summaries(&c, g, "3-D float32");

    /* The same keys as a 4-D cache (nb, KVN, bs, D), read through its strides (a permuted view of
     * the 3-D buffer), and as bfloat16 (exact: the values are rounded to bfloat16 first). */
    ifa_tensor k4 = ifa_tensor_make(c.key, IFA_DTYPE_FLOAT32, 4, (int64_t[]){c.nb, c.KVN, c.bs, c.D},
                                    (int64_t[]){c.bs * c.KVN * c.D, c.D, c.KVN * c.D, 1});
    p.key_cache = k4;
    p.key_num_heads = 0;
    memset(c.summ, 0, (size_t)(c.nb * c.KVN * 2 * c.D) * sizeof(float));
    CHECK_OK(ifa_page_summaries(&p, &out));
    compare_summaries(&c, g, "4-D float32 view");

    const int64_t nk = c.nb * c.bs * c.KVN * c.D;
    uint16_t *kb = malloc((size_t)nk * sizeof(uint16_t));
    for (int64_t i = 0; i < nk; i++) {
        uint32_t u;
        memcpy(&u, &c.key[i], 4);
        u &= 0xFFFF0000u; /* truncate to bfloat16, then use that value as the golden's key */
        memcpy(&c.key[i], &u, 4);
        kb[i] = (uint16_t)(u >> 16);
    }
    golden_summaries(&c, g);
    p = sum_params(&c);
    p.key_cache = ifa_tensor_make(kb, IFA_DTYPE_BFLOAT16, 3, (int64_t[]){c.nb, c.bs, c.KVN * c.D}, NULL);
    CHECK_OK(ifa_page_summaries(&p, &out));
    compare_summaries(&c, g, "3-D bfloat16");

    /* int8 with per-channel scale (some negative, which swaps min and max) and offset. */
    int8_t *k8 = malloc((size_t)nk);
    rng r = rng_seed(7);
    float sc[2 * 48], of[2 * 48];
    for (int i = 0; i < 2 * 48; i++) {
        sc[i] = (float)rng_uniform(&r, -0.1, 0.1);
        of[i] = (float)rng_int(&r, -3, 3);
    }
    for (int64_t i = 0; i < nk; i++) {
        k8[i] = (int8_t)rng_int(&r, -128, 127);
        const int64_t ch = i % (c.KVN * c.D);
        c.key[i] = ((float)k8[i] + of[ch]) * sc[ch]; /* the dequantised key, in float as the library */
    }
    golden_summaries(&c, g);
    p.key_cache = ifa_tensor_make(k8, IFA_DTYPE_INT8, 3, (int64_t[]){c.nb, c.bs, c.KVN * c.D}, NULL);
    p.antiquant_scale = ifa_tensor_make(sc, IFA_DTYPE_FLOAT32, 3, (int64_t[]){2, c.KVN, c.D}, NULL);
    p.antiquant_offset = ifa_tensor_make(of, IFA_DTYPE_FLOAT32, 3, (int64_t[]){2, c.KVN, c.D}, NULL);
    CHECK_OK(ifa_page_summaries(&p, &out));
    compare_summaries(&c, g, "int8 per-channel");
    free(k8);
    free(kb);
    free(g);
    scase_free(&c);
}

static void test_summaries_update(void) {
    const int64_t L0[3] = {13, 16, 0}, n_new[3] = {5, 1, 9};
    scase c;
    scase_make(&c, 2, 3, 4, 4, 16, 4, 8, L0, 0);
    ifa_summary_params p = sum_params(&c);
    ifa_tensor out = t_summ(&c);
    CHECK_OK(ifa_page_summaries(&p, &out));
    /* Append: the new rows get new random values (a block that held garbage before it was
     * referenced is the worst case for a merge, and fine for a recomputation). */
    rng r = rng_seed(3);
    for (int64_t b = 0; b < c.B; b++) {
        for (int64_t t = c.L[b]; t < c.L[b] + n_new[b]; t++) {
            const int64_t blk = c.table[b * c.M + t / c.bs];
            for (int64_t i = 0; i < c.KVN * c.D; i++)
                c.key[(blk * c.bs + t % c.bs) * c.KVN * c.D + i] = (float)rng_uniform(&r, -5, 5);
        }
        c.L[b] += n_new[b];
    }
    /* A canary in an unreferenced block must survive the update. */
    const int64_t spare = c.nb - 1;
    for (int64_t i = 0; i < c.KVN * 2 * c.D; i++) c.summ[spare * c.KVN * 2 * c.D + i] = 42.0f;
    p.new_tokens = ifa_tensor_make(n_new, IFA_DTYPE_INT64, 1, (int64_t[]){3}, NULL);
    CHECK_OK(ifa_page_summaries_update(&p, &out));
    double *g = malloc((size_t)(c.nb * c.KVN * 2 * c.D) * sizeof(double));
    golden_summaries(&c, g);
    for (int64_t i = 0; i < c.KVN * 2 * c.D; i++) g[spare * c.KVN * 2 * c.D + i] = 42.0;
    compare_summaries(&c, g, "after update");
    free(g);
    scase_free(&c);
}

/* ---- Selection golden ------------------------------------------------------------------------ */

/* Golden selection of (b, h): fills sel[0..count) and returns the compact length. */
static int64_t golden_select(const scase *c, const double *summ, int64_t b, int64_t h, int64_t k,
                             int64_t sink, int64_t *sel, int64_t *count, double *scores) {
    const int64_t L = c->L[b], bs = c->bs, n = (L + bs - 1) / bs, G = c->N / c->KVN, D = c->D;
    *count = 0;
    if (n <= k) {
        for (int64_t j = 0; j < n; j++) sel[(*count)++] = j;
        return L;
    }
    for (int64_t j = 0; j < n; j++) {
        const int64_t blk = c->table[b * c->M + j];
        double best = -INFINITY;
        for (int64_t g = 0; g < G; g++) {
            double s = 0;
            for (int64_t d = 0; d < D; d++) {
                const double q = c->query[(b * c->N + h * G + g) * D + d];
                const double lo = summ[((blk * c->KVN + h) * 2 + 0) * D + d];
                const double hi = summ[((blk * c->KVN + h) * 2 + 1) * D + d];
                s += fmax(q * lo, q * hi);
            }
            best = fmax(best, s);
        }
        scores[j] = best;
    }
    char *taken = calloc((size_t)n, 1);
    for (int64_t j = 0; j < sink; j++) taken[j] = 1;
    taken[n - 1] = 1;
    for (int64_t m = 0; m < k - sink - 1; m++) { /* repeatedly the best, lowest index on ties */
        int64_t arg = -1;
        for (int64_t j = sink; j < n - 1; j++)
            if (!taken[j] && (arg < 0 || scores[j] > scores[arg])) arg = j;
        taken[arg] = 1;
    }
    for (int64_t j = 0; j < n; j++)
        if (taken[j]) sel[(*count)++] = j;
    free(taken);
    return (k - 1) * bs + (L - (n - 1) * bs);
}

/* Runs the library on c and compares with the golden. exact: the chosen pages must be identical
 * (exact scores); otherwise a page may differ only where golden scores are within tol. */
static void check_select(const scase *c, int64_t k, int64_t sink, int64_t P, int exact, const char *what) {
    ifa_select_params p = sel_params(c, k, sink);
    int32_t *pos = malloc((size_t)(c->B * c->KVN * P) * sizeof(int32_t));
    int64_t lens[MAXB];
    ifa_tensor tp = ifa_tensor_make(pos, IFA_DTYPE_INT32, 3, (int64_t[]){c->B, c->KVN, P}, NULL);
    ifa_tensor tl = ifa_tensor_make(lens, IFA_DTYPE_INT64, 1, (int64_t[]){c->B}, NULL);
    const ifa_status st = ifa_select_blocks(&p, &tp, &tl);
    CHECK_MSG(st == IFA_OK, "%s: %s", what, ifa_last_error());
    if (st != IFA_OK) {
        free(pos);
        return;
    }
    double *summ = malloc((size_t)(c->nb * c->KVN * 2 * c->D) * sizeof(double));
    for (int64_t i = 0; i < c->nb * c->KVN * 2 * c->D; i++) summ[i] = c->summ[i];
    int64_t sel[512], count;
    double scores[512];
    for (int64_t b = 0; b < c->B; b++)
        for (int64_t h = 0; h < c->KVN; h++) {
            const int64_t want_len = golden_select(c, summ, b, h, k, sink, sel, &count, scores);
            CHECK_MSG(lens[b] == want_len, "%s: length[%lld] %lld, golden %lld", what, (long long)b,
                      (long long)lens[b], (long long)want_len);
            const int32_t *row = pos + (b * c->KVN + h) * P;
            for (int64_t i = 0; i < P; i++) {
                const int64_t want = i < count ? sel[i] : SENT;
                if (row[i] == want) continue;
                /* A near-tie may pick another page of (nearly) the same golden score. */
                const int ok = !exact && i < count && row[i] != SENT && row[i] >= sink &&
                               row[i] < (c->L[b] + c->bs - 1) / c->bs - 1 &&
                               fabs(scores[row[i]] - scores[want]) <= 1e-4 * (1 + fabs(scores[want]));
                CHECK_MSG(ok, "%s: b %lld h %lld slot %lld = %d, golden %lld", what, (long long)b,
                          (long long)h, (long long)i, (int)row[i], (long long)want);
            }
            for (int64_t i = 1; i < count; i++)
                CHECK_MSG(row[i] > row[i - 1], "%s: slots not ascending at %lld", what, (long long)i);
        }
    free(summ);
    free(pos);
}

static void summarise(scase *c) {
    ifa_summary_params p = sum_params(c);
    ifa_tensor out = t_summ(c);
    CHECK_OK(ifa_page_summaries(&p, &out));
}

static void test_select_random(void) {
    static const struct { int64_t N, KVN, D, bs, M, k, sink; } cfg[] = {
        {4, 4, 16, 4, 40, 6, 0},   /* MHA */
        {8, 2, 32, 8, 30, 5, 1},   /* GQA G = 4, one sink */
        {6, 1, 24, 16, 20, 4, 2},  /* MQA, two sinks, odd D */
        {4, 2, 128, 16, 64, 9, 0}, /* D = 128 */
        {2, 2, 7, 3, 50, 1, 0},    /* k = 1: only the last page */
    };
    for (size_t i = 0; i < sizeof cfg / sizeof cfg[0]; i++) {
        const int64_t bs = cfg[i].bs, M = cfg[i].M;
        const int64_t L[3] = {M * bs - 2, (M / 2) * bs, bs * 2 + 1}; /* partial, full, short */
        scase c;
        scase_make(&c, 100 + i, 3, cfg[i].N, cfg[i].KVN, cfg[i].D, bs, M, L, 0);
        summarise(&c);
        char what[64];
        snprintf(what, sizeof what, "random config %zu", i);
        check_select(&c, cfg[i].k, cfg[i].sink, cfg[i].k, 0, what);
        check_select(&c, cfg[i].k, cfg[i].sink, M + 2, 0, what); /* wide block_position */
        scase_free(&c);
    }
}

static void test_select_ties(void) {
    /* Small integers: every score is exact, many pages tie; every ISA must pick the golden's. */
    const int64_t L[2] = {97, 64};
    scase c;
    scase_make(&c, 9, 2, 4, 2, 16, 2, 50, L, 1);
    /* Make many pages identical so that ties are certain. */
    for (int64_t blk = 0; blk < c.nb; blk += 3)
        memcpy(c.key + blk * c.bs * c.KVN * c.D, c.key, (size_t)(c.bs * c.KVN * c.D) * sizeof(float));
    summarise(&c);
    const char *saved = ifa_isa_name();
    char avail[64];
    snprintf(avail, sizeof avail, "%s", ifa_isa_available());
    for (char *isa = strtok(avail, " "); isa != NULL; isa = strtok(NULL, " ")) {
        CHECK_OK(ifa_set_isa(isa));
        char what[64];
        snprintf(what, sizeof what, "ties, isa %s", isa);
        check_select(&c, 10, 1, 10, 1, what);
        check_select(&c, 25, 0, 25, 1, what);
    }
    CHECK_OK(ifa_set_isa(saved));
    scase_free(&c);
}

static void test_select_edges(void) {
    const int64_t L[4] = {0, 5, 24, 23};
    scase c;
    scase_make(&c, 11, 4, 4, 2, 8, 4, 6, L, 0);
    summarise(&c);
    check_select(&c, 6, 0, 6, 0, "k = pages");      /* every batch dense-equivalent */
    check_select(&c, 100, 3, 6, 0, "k > M");         /* P = M suffices */
    check_select(&c, 3, 2, 3, 0, "sinks fill k-1"); /* no middle pages */
    check_select(&c, 2, 0, 5, 0, "k = 2");

    /* Exact expectations for batch 2 (6 full pages) and 3 (last page 3 tokens), k = 3, 1 sink. */
    ifa_select_params p = sel_params(&c, 3, 1);
    int32_t pos[4 * 2 * 4];
    int32_t lens[4];
    ifa_tensor tp = ifa_tensor_make(pos, IFA_DTYPE_INT32, 3, (int64_t[]){4, 2, 4}, NULL);
    ifa_tensor tl = ifa_tensor_make(lens, IFA_DTYPE_INT32, 1, (int64_t[]){4}, NULL);
    CHECK_OK(ifa_select_blocks(&p, &tp, &tl));
    CHECK_EQ_I64(lens[0], 0);
    CHECK_EQ_I64(lens[1], 5);
    CHECK_EQ_I64(lens[2], 12);     /* 2 full pages + a full last page */
    CHECK_EQ_I64(lens[3], 8 + 3);  /* 2 full pages + 3 tokens */
    for (int h = 0; h < 2; h++) {
        CHECK_EQ_I64(pos[(0 * 2 + h) * 4 + 0], SENT);
        CHECK_EQ_I64(pos[(1 * 2 + h) * 4 + 0], 0);
        CHECK_EQ_I64(pos[(1 * 2 + h) * 4 + 1], 1);
        CHECK_EQ_I64(pos[(1 * 2 + h) * 4 + 2], SENT);
        for (int b = 2; b < 4; b++) {
            CHECK_EQ_I64(pos[(b * 2 + h) * 4 + 0], 0);
            CHECK_EQ_I64(pos[(b * 2 + h) * 4 + 2], 5);
            CHECK_EQ_I64(pos[(b * 2 + h) * 4 + 3], SENT);
        }
    }
    scase_free(&c);
}

/* ---- Errors ------------------------------------------------------------------------------------ */

static int msg_has(const char *needle) { return strstr(ifa_last_error(), needle) != NULL; }

#define EXPECT_ERR(call, status_want, needle)                                                      \
    do {                                                                                           \
        const ifa_status st_ = (call);                                                             \
        CHECK_MSG(st_ == (status_want) && msg_has(needle), "%s: got %s \"%s\", want %s naming %s", \
                  #call, ifa_status_string(st_), ifa_last_error(), ifa_status_string(status_want), \
                  needle);                                                                         \
    } while (0)

static void test_summary_errors(void) {
    const int64_t L[2] = {9, 4};
    scase c;
    scase_make(&c, 21, 2, 4, 2, 8, 4, 3, L, 0);
    const size_t bytes = (size_t)(c.nb * c.KVN * 2 * c.D) * sizeof(float);
    memset(c.summ, 0x5A, bytes);
    float *copy = malloc(bytes);
    memcpy(copy, c.summ, bytes);
    ifa_tensor out = t_summ(&c);
    ifa_summary_params p;
    int64_t bad_len[2] = {9, 13}, neg[1] = {-1}, many[2] = {10, 1};
    int32_t bad_table[6];
    memcpy(bad_table, c.table, sizeof bad_table);
    bad_table[3] = (int32_t)c.nb;
    float sc[2] = {1, 1};
    int8_t k8[1];

#define RESET() (p = sum_params(&c))
    RESET(); p.key_cache = ifa_tensor_none();
    EXPECT_ERR(ifa_page_summaries(&p, &out), IFA_ERR_NULL_POINTER, "key_cache");
    RESET(); p.key_cache.dtype = IFA_DTYPE_INT32;
    EXPECT_ERR(ifa_page_summaries(&p, &out), IFA_ERR_INVALID_DTYPE, "key_cache");
    RESET(); p.key_cache.rank = 2;
    EXPECT_ERR(ifa_page_summaries(&p, &out), IFA_ERR_INVALID_SHAPE, "key_cache");
    RESET(); p.key_num_heads = 0;
    EXPECT_ERR(ifa_page_summaries(&p, &out), IFA_ERR_INVALID_ARGUMENT, "key_num_heads");
    RESET(); p.key_num_heads = 3;
    EXPECT_ERR(ifa_page_summaries(&p, &out), IFA_ERR_INVALID_SHAPE, "key_num_heads");
    RESET(); p.block_size = 5;
    EXPECT_ERR(ifa_page_summaries(&p, &out), IFA_ERR_INVALID_SHAPE, "block_size");
    RESET(); p.block_table.dtype = IFA_DTYPE_INT64;
    EXPECT_ERR(ifa_page_summaries(&p, &out), IFA_ERR_INVALID_DTYPE, "block_table");
    RESET(); p.block_table = ifa_tensor_make(bad_table, IFA_DTYPE_INT32, 2, (int64_t[]){2, 3}, NULL);
    EXPECT_ERR(ifa_page_summaries(&p, &out), IFA_ERR_OUT_OF_RANGE, "block_table[1][0]");
    RESET(); p.actual_seq_lengths = ifa_tensor_none();
    EXPECT_ERR(ifa_page_summaries(&p, &out), IFA_ERR_NULL_POINTER, "actual_seq_lengths");
    RESET(); p.actual_seq_lengths = ifa_tensor_make(bad_len, IFA_DTYPE_INT64, 1, (int64_t[]){2}, NULL);
    EXPECT_ERR(ifa_page_summaries(&p, &out), IFA_ERR_INVALID_ARGUMENT, "actual_seq_lengths[1]");
    RESET(); p.actual_seq_lengths = ifa_tensor_make(neg, IFA_DTYPE_INT64, 1, (int64_t[]){1}, NULL);
    EXPECT_ERR(ifa_page_summaries(&p, &out), IFA_ERR_INVALID_ARGUMENT, "negative");
    RESET(); p.antiquant_scale = ifa_tensor_make(sc, IFA_DTYPE_FLOAT32, 1, (int64_t[]){2}, NULL);
    EXPECT_ERR(ifa_page_summaries(&p, &out), IFA_ERR_INVALID_ARGUMENT, "antiquant_scale");
    RESET(); p.key_cache = ifa_tensor_make(k8, IFA_DTYPE_INT8, 3, (int64_t[]){c.nb, c.bs, c.KVN * c.D},
                                           (int64_t[]){0, 0, 0});
    EXPECT_ERR(ifa_page_summaries(&p, &out), IFA_ERR_INVALID_ARGUMENT, "antiquant_scale");
    p.antiquant_scale = ifa_tensor_make(sc, IFA_DTYPE_FLOAT32, 2, (int64_t[]){1, 2}, NULL);
    EXPECT_ERR(ifa_page_summaries(&p, &out), IFA_ERR_INVALID_SHAPE, "antiquant_scale");
    p.antiquant_scale = ifa_tensor_make(sc, IFA_DTYPE_FLOAT32, 1, (int64_t[]){2}, NULL);
    p.antiquant_offset = ifa_tensor_make(sc, IFA_DTYPE_FLOAT32, 2, (int64_t[]){2, 1}, NULL);
    EXPECT_ERR(ifa_page_summaries(&p, &out), IFA_ERR_INVALID_SHAPE, "antiquant_offset");
    p.antiquant_offset = ifa_tensor_none();
    p.antiquant_mode = 2;
    EXPECT_ERR(ifa_page_summaries(&p, &out), IFA_ERR_INVALID_ARGUMENT, "antiquant_mode");
    RESET();
    {
        ifa_tensor o2 = out;
        o2.dtype = IFA_DTYPE_FLOAT16;
        EXPECT_ERR(ifa_page_summaries(&p, &o2), IFA_ERR_INVALID_DTYPE, "summaries");
        o2 = out;
        o2.shape[2] = 3;
        EXPECT_ERR(ifa_page_summaries(&p, &o2), IFA_ERR_INVALID_SHAPE, "summaries");
        EXPECT_ERR(ifa_page_summaries(&p, NULL), IFA_ERR_NULL_POINTER, "summaries");
    }
    /* Update: new_tokens required, not more than the length. */
    RESET();
    EXPECT_ERR(ifa_page_summaries_update(&p, &out), IFA_ERR_NULL_POINTER, "new_tokens");
    p.new_tokens = ifa_tensor_make(many, IFA_DTYPE_INT64, 1, (int64_t[]){2}, NULL);
    EXPECT_ERR(ifa_page_summaries_update(&p, &out), IFA_ERR_INVALID_ARGUMENT, "new_tokens[0]");
    p.new_tokens = ifa_tensor_make(neg, IFA_DTYPE_INT64, 1, (int64_t[]){1}, NULL);
    EXPECT_ERR(ifa_page_summaries_update(&p, &out), IFA_ERR_INVALID_ARGUMENT, "new_tokens");
#undef RESET
    CHECK_MSG(memcmp(copy, c.summ, bytes) == 0, "a failed call wrote to the summaries");
    free(copy);
    scase_free(&c);
}

static void test_select_errors(void) {
    const int64_t L[2] = {9, 4};
    scase c;
    scase_make(&c, 22, 2, 4, 2, 8, 4, 3, L, 0);
    summarise(&c);
    int32_t pos[2 * 2 * 3], canary[2 * 2 * 3];
    int64_t lens[2] = {-7, -7};
    for (int i = 0; i < 12; i++) pos[i] = canary[i] = -5;
    ifa_tensor tp = ifa_tensor_make(pos, IFA_DTYPE_INT32, 3, (int64_t[]){2, 2, 3}, NULL);
    ifa_tensor tl = ifa_tensor_make(lens, IFA_DTYPE_INT64, 1, (int64_t[]){2}, NULL);
    ifa_select_params p;
    int32_t bad_table[6];
    memcpy(bad_table, c.table, sizeof bad_table);
    bad_table[1] = -1;
    int64_t long_len[1] = {13};
    int8_t q8[64];

#define RESET() (p = sel_params(&c, 3, 1))
    RESET(); p.num_heads = 0;
    EXPECT_ERR(ifa_select_blocks(&p, &tp, &tl), IFA_ERR_INVALID_ARGUMENT, "num_heads");
    RESET(); p.key_num_heads = 3;
    EXPECT_ERR(ifa_select_blocks(&p, &tp, &tl), IFA_ERR_INVALID_ARGUMENT, "key_num_heads");
    RESET(); p.key_num_heads = 8;
    EXPECT_ERR(ifa_select_blocks(&p, &tp, &tl), IFA_ERR_INVALID_ARGUMENT, "key_num_heads");
    RESET(); p.block_size = 0;
    EXPECT_ERR(ifa_select_blocks(&p, &tp, &tl), IFA_ERR_INVALID_ARGUMENT, "block_size");
    RESET(); p.k = 0;
    EXPECT_ERR(ifa_select_blocks(&p, &tp, &tl), IFA_ERR_INVALID_ARGUMENT, "k:");
    RESET(); p.sink_pages = -1;
    EXPECT_ERR(ifa_select_blocks(&p, &tp, &tl), IFA_ERR_INVALID_ARGUMENT, "sink_pages");
    RESET(); p.sink_pages = 3;
    EXPECT_ERR(ifa_select_blocks(&p, &tp, &tl), IFA_ERR_INVALID_ARGUMENT, "sink_pages");
    RESET(); p.layout = "SBH";
    EXPECT_ERR(ifa_select_blocks(&p, &tp, &tl), IFA_ERR_INVALID_ARGUMENT, "layout");
    RESET(); p.layout = NULL;
    EXPECT_ERR(ifa_select_blocks(&p, &tp, &tl), IFA_ERR_NULL_POINTER, "layout");
    RESET(); p.query = ifa_tensor_make(q8, IFA_DTYPE_INT8, 3, (int64_t[]){2, 1, 32}, NULL);
    EXPECT_ERR(ifa_select_blocks(&p, &tp, &tl), IFA_ERR_INVALID_DTYPE, "query");
    RESET(); p.query.shape[1] = 2;
    EXPECT_ERR(ifa_select_blocks(&p, &tp, &tl), IFA_ERR_INVALID_SHAPE, "query");
    RESET(); p.layout = "BNSD";
    EXPECT_ERR(ifa_select_blocks(&p, &tp, &tl), IFA_ERR_INVALID_SHAPE, "query");
    RESET(); p.query.shape[2] = 30;
    EXPECT_ERR(ifa_select_blocks(&p, &tp, &tl), IFA_ERR_INVALID_SHAPE, "query");
    RESET(); p.summaries = ifa_tensor_none();
    EXPECT_ERR(ifa_select_blocks(&p, &tp, &tl), IFA_ERR_NULL_POINTER, "summaries");
    RESET(); p.summaries.dtype = IFA_DTYPE_FLOAT16;
    EXPECT_ERR(ifa_select_blocks(&p, &tp, &tl), IFA_ERR_INVALID_DTYPE, "summaries");
    RESET(); p.summaries.shape[3] = 4;
    EXPECT_ERR(ifa_select_blocks(&p, &tp, &tl), IFA_ERR_INVALID_SHAPE, "summaries");
    RESET(); p.summaries.strides[3] = 2; p.summaries.shape[0] = 1;
    EXPECT_ERR(ifa_select_blocks(&p, &tp, &tl), IFA_ERR_INVALID_ARGUMENT, "summaries");
    RESET(); p.summaries.strides[0] = -1;
    EXPECT_ERR(ifa_select_blocks(&p, &tp, &tl), IFA_ERR_INVALID_ARGUMENT, "summaries");
    RESET(); p.block_table.shape[0] = 1;
    EXPECT_ERR(ifa_select_blocks(&p, &tp, &tl), IFA_ERR_INVALID_SHAPE, "block_table");
    RESET(); p.block_table = ifa_tensor_make(bad_table, IFA_DTYPE_INT32, 2, (int64_t[]){2, 3}, NULL);
    EXPECT_ERR(ifa_select_blocks(&p, &tp, &tl), IFA_ERR_OUT_OF_RANGE, "block_table[0][1]");
    RESET(); p.actual_seq_lengths = ifa_tensor_make(long_len, IFA_DTYPE_INT64, 1, (int64_t[]){1}, NULL);
    EXPECT_ERR(ifa_select_blocks(&p, &tp, &tl), IFA_ERR_INVALID_ARGUMENT, "actual_seq_lengths[0]");
    RESET(); p.actual_seq_lengths.dtype = IFA_DTYPE_FLOAT32;
    EXPECT_ERR(ifa_select_blocks(&p, &tp, &tl), IFA_ERR_INVALID_DTYPE, "actual_seq_lengths");
    RESET(); p.actual_seq_lengths = ifa_tensor_none();
    EXPECT_ERR(ifa_select_blocks(&p, &tp, &tl), IFA_ERR_NULL_POINTER, "actual_seq_lengths");
    RESET();
    {
        ifa_tensor t2 = tp;
        t2.shape[2] = 2; /* P < min(k, M) */
        EXPECT_ERR(ifa_select_blocks(&p, &t2, &tl), IFA_ERR_INVALID_SHAPE, "block_position");
        t2 = tp;
        t2.dtype = IFA_DTYPE_INT64;
        EXPECT_ERR(ifa_select_blocks(&p, &t2, &tl), IFA_ERR_INVALID_DTYPE, "block_position");
        t2 = tp;
        t2.shape[1] = 1;
        EXPECT_ERR(ifa_select_blocks(&p, &t2, &tl), IFA_ERR_INVALID_SHAPE, "block_position");
        ifa_tensor l2 = tl;
        l2.dtype = IFA_DTYPE_FLOAT32;
        EXPECT_ERR(ifa_select_blocks(&p, &tp, &l2), IFA_ERR_INVALID_DTYPE, "actual_seq_lengths (output)");
        l2 = tl;
        l2.shape[0] = 3;
        EXPECT_ERR(ifa_select_blocks(&p, &tp, &l2), IFA_ERR_INVALID_SHAPE, "actual_seq_lengths (output)");
        EXPECT_ERR(ifa_select_blocks(&p, NULL, &tl), IFA_ERR_NULL_POINTER, "block_position");
        EXPECT_ERR(ifa_select_blocks(NULL, &tp, &tl), IFA_ERR_NULL_POINTER, "params");
    }
#undef RESET
    CHECK_MSG(memcmp(pos, canary, sizeof pos) == 0, "a failed call wrote to block_position");
    CHECK_MSG(lens[0] == -7 && lens[1] == -7, "a failed call wrote to the lengths");
    scase_free(&c);
}

static const tst_case cases[] = {
    TST_CASE(test_summaries_golden), TST_CASE(test_summaries_update), TST_CASE(test_select_random),
    TST_CASE(test_select_ties),      TST_CASE(test_select_edges),     TST_CASE(test_summary_errors),
    TST_CASE(test_select_errors),
};

int main(int argc, char **argv) { return tst_main(argc, argv, cases, sizeof cases / sizeof cases[0]); }
