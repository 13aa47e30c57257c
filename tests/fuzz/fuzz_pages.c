/*
 * fuzz_pages.c - libFuzzer target: page resolution (SPEC.md 4) against a float64 reference.
 *
 * The input builds a small paged problem (float32, any layout, 3-D or 4-D cache, with or
 * without block_position, an optional mask) whose block table and block positions are chosen
 * by the fuzzer: mostly valid indices, mixed with -1, the 0x7FFFFFFF sentinel, huge values and
 * holes, and garbage in the entries that SPEC.md 4 says are never read. The lengths may exceed
 * what the table or the positions can hold.
 *
 * A reference written here from SPEC.md 4-5 alone (it shares no code with the library) walks
 * the tokens of every (batch, KV head), decides whether the call is valid - and if not, which
 * error comes first, in the SPEC's order - and computes the attention in float64. The library
 * must return the same status; on success its output must match; on error it must leave the
 * output untouched. Sometimes the problem is made large enough for the split-KV path to run on
 * several threads.
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>

#include "fuzz_data_producer.h"
#include "ifa.h"

#define CHECK(cond, ...)                                                                      \
    do {                                                                                      \
        if (!(cond)) {                                                                        \
            fprintf(stderr, "fuzz_pages: check failed: %s\n  ", #cond);                       \
            fprintf(stderr, __VA_ARGS__);                                                     \
            fprintf(stderr, "\n");                                                            \
            abort();                                                                          \
        }                                                                                     \
    } while (0)

#define SENTINEL 0x7FFFFFFF

/* An index as a scheduler bug might write it: mostly in [0, n), else -1, the sentinel, n
 * itself or something huge. */
static int32_t pick_index(fz *f, int32_t n, int sentinel_weight) {
    const uint8_t c = fz_u8(f);
    if (c < 200) return n > 0 ? (int32_t)fz_range(f, 0, n - 1) : 0;
    if (c < 200 + sentinel_weight) return SENTINEL;
    switch (c % 5) {
    case 0: return -1;
    case 1: return n;
    case 2: return INT32_MIN;
    case 3: return SENTINEL - 1;
    default: return (int32_t)fz_u64(f);
    }
}

typedef struct problem {
    int layout; /* 0 BSH, 1 BSND, 2 BNSD */
    int four_d; /* (num_blocks, KVN, bs, D) cache */
    int sparse;
    int64_t B, KVN, G, N, D, bs, nb, M, P, Sp;
    int64_t tstride, pstride; /* row strides of table and positions (>= width) */
    int64_t tokstride;        /* element stride between token rows inside a block */
    float *q, *k, *v, *out;
    int32_t *table, *pos, *len;
    unsigned char *mask;
    double scale;
} problem;

/* Element offset of (blk, h, r, d) in the cache. */
static int64_t cache_off(const problem *p, int64_t blk, int64_t h, int64_t r, int64_t d) {
    if (p->four_d) return ((blk * p->KVN + h) * p->bs) * p->tokstride + r * p->tokstride + d;
    return (blk * p->bs + r) * p->tokstride + h * p->D + d;
}

/* The SPEC's first error, or IFA_OK; fills the reference output when valid. */
static ifa_status reference(const problem *p, double *ref) {
    for (int64_t b = 0; b < p->B; b++) {
        const int64_t L = p->len[b];
        if (L == 0) continue;
        const int64_t pages = (L + p->bs - 1) / p->bs;
        if (!p->sparse) {
            if (L > p->bs * p->M) return IFA_ERR_INVALID_ARGUMENT;
            for (int64_t j = 0; j < pages; j++) {
                const int32_t blk = p->table[b * p->tstride + j];
                if (blk < 0 || blk >= p->nb) return IFA_ERR_OUT_OF_RANGE;
            }
        } else {
            if (pages > p->P) return IFA_ERR_INVALID_ARGUMENT;
            for (int64_t h = 0; h < p->KVN; h++)
                for (int64_t j = 0; j < pages; j++) {
                    const int32_t idx = p->pos[(b * p->KVN + h) * p->pstride + j];
                    if (idx == SENTINEL) continue;
                    if (idx < 0 || idx >= p->M) return IFA_ERR_OUT_OF_RANGE;
                    const int32_t blk = p->table[b * p->tstride + idx];
                    if (blk < 0 || blk >= p->nb) return IFA_ERR_OUT_OF_RANGE;
                }
        }
    }
    for (int64_t b = 0; b < p->B; b++) {
        const int64_t L = p->len[b];
        for (int64_t n = 0; n < p->N; n++) {
            const int64_t h = n / p->G;
            double m = -INFINITY, l = 0.0;
            double *o = ref + (b * p->N + n) * p->D;
            for (int64_t d = 0; d < p->D; d++) o[d] = 0.0;
            /* Two passes: the maximum, then the weighted sum. */
            for (int pass = 0; pass < 2; pass++) {
                for (int64_t t = 0; t < L; t++) {
                    const int64_t j = t / p->bs, r = t % p->bs;
                    int64_t col = j;
                    if (p->sparse) {
                        col = p->pos[(b * p->KVN + h) * p->pstride + j];
                        if (col == SENTINEL) continue;
                    }
                    const int64_t blk = p->table[b * p->tstride + col];
                    double s = 0.0;
                    for (int64_t d = 0; d < p->D; d++)
                        s += (double)p->q[(b * p->N + n) * p->D + d] * p->k[cache_off(p, blk, h, r, d)];
                    s *= p->scale;
                    if (p->mask && p->mask[b * p->Sp + t]) s = -1e12;
                    if (pass == 0) {
                        m = s > m ? s : m;
                    } else {
                        const double w = exp(s - m);
                        l += w;
                        for (int64_t d = 0; d < p->D; d++) o[d] += w * p->v[cache_off(p, blk, h, r, d)];
                    }
                }
            }
            if (l > 0.0)
                for (int64_t d = 0; d < p->D; d++) o[d] /= l;
        }
    }
    return IFA_OK;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    fz f = fz_make(data, size);
    fz_seed(&f);
    problem p;
    memset(&p, 0, sizeof p);
    const int large = fz_chance(&f, 12);
    p.layout = (int)fz_range(&f, 0, 2);
    p.four_d = p.layout == 2 && fz_chance(&f, 128);
    p.sparse = fz_chance(&f, 160);
    p.B = fz_range(&f, 1, 3);
    p.KVN = fz_range(&f, 1, 3);
    p.G = fz_range(&f, 1, 3);
    p.N = p.KVN * p.G;
    p.D = large ? 64 : fz_range(&f, 1, 9);
    p.bs = large ? fz_range(&f, 16, 64) : fz_range(&f, 1, 8);
    p.nb = large ? fz_range(&f, 8, 48) : fz_range(&f, 1, 10);
    p.M = large ? fz_range(&f, 8, 40) : fz_range(&f, 1, 6);
    p.P = large ? fz_range(&f, 8, 40) : fz_range(&f, 1, 6);
    p.tstride = p.M + fz_range(&f, 0, 2);
    p.pstride = p.P + fz_range(&f, 0, 2);
    p.tokstride = (p.four_d ? p.D : p.KVN * p.D) + fz_range(&f, 0, 1);
    p.scale = fz_chance(&f, 128) ? 0.5 : 1.0 / sqrt((double)p.D);
    const int64_t cap = p.bs * (p.sparse ? p.P : p.M);
    const int sentinel_weight = (int)fz_range(&f, 0, 40);

    /* Tables and positions: every entry, used or not, is the fuzzer's. */
    p.table = malloc((size_t)(p.B * p.tstride) * sizeof(int32_t));
    p.len = malloc((size_t)p.B * sizeof(int32_t));
    for (int64_t i = 0; i < p.B * p.tstride; i++) p.table[i] = pick_index(&f, (int32_t)p.nb, 8);
    if (p.sparse) {
        p.pos = malloc((size_t)(p.B * p.KVN * p.pstride) * sizeof(int32_t));
        for (int64_t i = 0; i < p.B * p.KVN * p.pstride; i++) p.pos[i] = pick_index(&f, (int32_t)p.M, sentinel_weight);
    }
    int64_t maxL = 0;
    for (int64_t b = 0; b < p.B; b++) {
        const uint8_t c = fz_u8(&f);
        p.len[b] = (int32_t)(c < 220 ? fz_range(&f, 0, cap) : c < 240 ? cap : fz_range(&f, cap + 1, cap + p.bs));
        if (p.len[b] > maxL) maxL = p.len[b];
    }
    p.Sp = (maxL > 0 ? maxL : 1) + fz_range(&f, 0, 2);
    if (fz_chance(&f, 80)) {
        p.mask = malloc((size_t)(p.B * p.Sp));
        const unsigned density = fz_u8(&f);
        for (int64_t i = 0; i < p.B * p.Sp; i++) p.mask[i] = (fz_next(&f) & 255) < density;
    }

    /* Data. */
    const int64_t qn = p.B * p.N * p.D;
    const int64_t cn = p.four_d ? p.nb * p.KVN * p.bs * p.tokstride : p.nb * p.bs * p.tokstride;
    p.q = malloc((size_t)qn * sizeof(float));
    p.k = malloc((size_t)cn * sizeof(float));
    p.v = malloc((size_t)cn * sizeof(float));
    p.out = malloc((size_t)qn * sizeof(float));
    for (int64_t i = 0; i < qn; i++) p.q[i] = (float)fz_unit(&f);
    for (int64_t i = 0; i < cn; i++) p.k[i] = (float)fz_unit(&f), p.v[i] = (float)fz_unit(&f);
    memset(p.out, 0xA5, (size_t)qn * sizeof(float));

    /* The call. */
    ifa_params prm;
    ifa_params_init(&prm);
    static const char *const layouts[3] = {"BSH", "BSND", "BNSD"};
    prm.layout = layouts[p.layout];
    prm.num_heads = p.N;
    prm.key_num_heads = p.KVN;
    prm.scale_value = p.scale;
    prm.block_size = p.bs;
    prm.inner_precise = fz_range(&f, 0, 1);
    if (p.layout == 0)
        prm.query = ifa_tensor_make(p.q, IFA_DTYPE_FLOAT32, 3, (int64_t[]){p.B, 1, p.N * p.D}, NULL);
    else if (p.layout == 1)
        prm.query = ifa_tensor_make(p.q, IFA_DTYPE_FLOAT32, 4, (int64_t[]){p.B, 1, p.N, p.D}, NULL);
    else
        prm.query = ifa_tensor_make(p.q, IFA_DTYPE_FLOAT32, 4, (int64_t[]){p.B, p.N, 1, p.D}, NULL);
    ifa_tensor k, v;
    if (p.four_d) {
        const int64_t sh[4] = {p.nb, p.KVN, p.bs, p.D};
        const int64_t st[4] = {p.KVN * p.bs * p.tokstride, p.bs * p.tokstride, p.tokstride, 1};
        k = ifa_tensor_make(p.k, IFA_DTYPE_FLOAT32, 4, sh, st);
        v = ifa_tensor_make(p.v, IFA_DTYPE_FLOAT32, 4, sh, st);
    } else {
        const int64_t sh[3] = {p.nb, p.bs, p.KVN * p.D};
        const int64_t st[3] = {p.bs * p.tokstride, p.tokstride, 1};
        k = ifa_tensor_make(p.k, IFA_DTYPE_FLOAT32, 3, sh, st);
        v = ifa_tensor_make(p.v, IFA_DTYPE_FLOAT32, 3, sh, st);
    }
    prm.key = &k;
    prm.value = &v;
    prm.kv_count = 1;
    prm.block_table = ifa_tensor_make(p.table, IFA_DTYPE_INT32, 2, (int64_t[]){p.B, p.M}, (int64_t[]){p.tstride, 1});
    if (p.sparse)
        prm.block_position = ifa_tensor_make(p.pos, IFA_DTYPE_INT32, 3, (int64_t[]){p.B, p.KVN, p.P},
                                             (int64_t[]){p.KVN * p.pstride, p.pstride, 1});
    prm.actual_seq_lengths = ifa_tensor_make(p.len, IFA_DTYPE_INT32, 1, (int64_t[]){p.B}, NULL);
    if (p.mask) prm.attention_mask = ifa_tensor_make(p.mask, IFA_DTYPE_BOOL, 2, (int64_t[]){p.B, p.Sp}, NULL);
    ifa_tensor out = ifa_tensor_make(p.out, IFA_DTYPE_FLOAT32, prm.query.rank, prm.query.shape, NULL);
    ifa_set_num_threads(large ? (int)fz_range(&f, 1, 3) : 1);

    double *ref = malloc((size_t)qn * sizeof(double));
    const ifa_status want = reference(&p, ref);
    const ifa_status got = ifa_incre_flash_attention_v5(&prm, &out);
    CHECK(got == want, "status %d (%s), the SPEC says %d", (int)got, ifa_last_error(), (int)want);
    if (got == IFA_OK) {
        /* The output is (b, n, d)-ordered in every layout because S = 1. */
        for (int64_t i = 0; i < qn; i++) {
            const double err = fabs((double)p.out[i] - ref[i]);
            CHECK(err <= 2e-5 + 2e-5 * fabs(ref[i]), "out[%lld] = %.9g, reference %.9g", (long long)i,
                  (double)p.out[i], ref[i]);
        }
    } else {
        for (int64_t i = 0; i < qn; i++) {
            uint32_t bits;
            memcpy(&bits, &p.out[i], 4);
            CHECK(bits == 0xA5A5A5A5u, "out[%lld] written by a failed call", (long long)i);
        }
    }
    free(ref);
    free(p.q), free(p.k), free(p.v), free(p.out);
    free(p.table), free(p.pos), free(p.len), free(p.mask);
    return 0;
}
