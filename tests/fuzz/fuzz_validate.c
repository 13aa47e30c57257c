/*
 * fuzz_validate.c - libFuzzer target: argument validation of ifa_incre_flash_attention_v5.
 *
 * The input picks a problem the way a scheduler would describe it (layout, B, N, KVN, D, the
 * KV form, block_size, table widths, dtypes, which optional tensors are present) and then,
 * byte by byte, breaks it: any dimension may become an interesting size (near 2^31, 2^32,
 * 2^63, negative), any dtype or rank may be wrong, strides may be padded, zero, random or
 * huge, lengths / tables / positions hold small indices mixed with -1, the sentinel and
 * extreme values, float data may hold NaN and Inf. Every view is backed by a buffer of exactly
 * the bytes it claims (fuzz_views.h).
 *
 * Properties checked, besides "no crash, no sanitizer report, no hang":
 *   - the status is one of the enum's values; an error has a message, a success has none;
 *   - a call with a malformed view (negative size or stride, overflowing extent, NULL data,
 *     unknown dtype or rank) fails;
 *   - ifa_validate() and the full call agree: a validation error is the full call's error;
 *   - on error the output buffer is untouched; inputs are never modified.
 * Problems whose computation would be large (huge B or lengths through zero strides) are only
 * validated; problems whose validation alone would loop for long are skipped.
 */
#include <stdio.h>
#include <stdlib.h>

#include "fuzz_data_producer.h"
#include "fuzz_views.h"
#include "ifa.h"

#define CHECK(cond, ...)                                                                      \
    do {                                                                                      \
        if (!(cond)) {                                                                        \
            fprintf(stderr, "fuzz_validate: check failed: %s\n  ", #cond);                    \
            fprintf(stderr, __VA_ARGS__);                                                     \
            fprintf(stderr, "\n");                                                            \
            abort();                                                                          \
        }                                                                                     \
    } while (0)

enum { FORM_CONTIG, FORM_LIST, FORM_PADDED, FORM_PAGED3, FORM_PAGED4, FORM_SPARSE3, FORM_SPARSE4, FORM_COUNT };

static const ifa_dtype float_dtypes[3] = {IFA_DTYPE_FLOAT16, IFA_DTYPE_BFLOAT16, IFA_DTYPE_FLOAT32};

/* The intended dtype, or (rarely) any code, including ones outside the enum. */
static ifa_dtype pick_dtype(fz *f, ifa_dtype want) {
    if (!fz_chance(f, 12)) return want;
    return (ifa_dtype)fz_range(f, -1, IFA_DTYPE_COUNT);
}

/* Sets a view's dtype, rank and shape from the intended ones, with the fuzzer's mutations:
 * a dimension replaced, a dimension dropped or added, the rank made invalid. */
static void shape_view(fz *f, ifa_tensor *t, ifa_dtype dtype, int32_t rank, const int64_t *shape) {
    memset(t, 0, sizeof *t);
    t->dtype = pick_dtype(f, dtype);
    t->rank = rank;
    for (int32_t i = 0; i < rank; i++) t->shape[i] = fz_size(f, shape[i]);
    const uint8_t m = fz_u8(f);
    if (m > 250 && t->rank > 0) t->rank--;
    else if (m > 245 && t->rank < IFA_MAX_RANK) t->shape[t->rank++] = fz_range(f, 0, 3);
    else if (m == 245) t->rank = (int32_t)fz_range(f, -2, IFA_MAX_RANK + 2);
}

static void make_view(fz *f, fv_pool *pool, ifa_tensor *t, ifa_dtype dtype, int32_t rank,
                      const int64_t *shape, int64_t int_hint, unsigned nonfinite) {
    shape_view(f, t, dtype, rank, shape);
    fv_alloc(f, pool, t, int_hint, nonfinite);
}

/* Saturating helpers for the cost estimate. */
static int64_t abs64(int64_t a) { return a < 0 ? (a == INT64_MIN ? INT64_MAX : -a) : a; }
static int64_t sat_mul(int64_t a, int64_t b) {
    int64_t r;
    return __builtin_mul_overflow(abs64(a), abs64(b), &r) ? INT64_MAX : r;
}
static int64_t sat_add(int64_t a, int64_t b) {
    int64_t r;
    return __builtin_add_overflow(abs64(a), abs64(b), &r) ? INT64_MAX : r;
}

/* The largest value an integer view holds (lengths, padding), or 0. */
static int64_t max_int_value(const fv_pool *pool, const ifa_tensor *t) {
    if (t->data == NULL || (t->dtype != IFA_DTYPE_INT32 && t->dtype != IFA_DTYPE_INT64)) return 0;
    const int buf = fv_find(pool, t->data);
    if (buf < 0) return 0;
    const int64_t ext = (int64_t)(pool->size[buf] / ifa_dtype_size(t->dtype));
    int64_t m = 0;
    for (int64_t i = 0; i < ext && i < 4096; i++) {
        int64_t v;
        if (t->dtype == IFA_DTYPE_INT32) {
            int32_t v32;
            memcpy(&v32, (const char *)t->data + 4 * i, 4);
            v = v32;
        } else {
            memcpy(&v, (const char *)t->data + 8 * i, 8);
        }
        if (abs64(v) > m) m = abs64(v);
    }
    return m;
}

static void run_one(fz *f) {
    fv_pool pool;
    memset(&pool, 0, sizeof pool);
    ifa_params p;
    ifa_params_init(&p);

    /* Scalars. */
    const int layout = (int)fz_range(f, 0, 3);
    static const char *const layouts[4] = {"BSH", "BSND", "BNSD", "BHSD"};
    p.layout = layout == 3 && fz_chance(f, 128) ? NULL : layouts[layout];
    const int lay = layout < 3 ? layout : 0;
    const int64_t KVN = fz_range(f, 1, 4), G = fz_range(f, 1, 3), D = fz_range(f, 1, 24);
    const int64_t B = fz_range(f, 1, 4), bs = fz_range(f, 1, 20);
    p.num_heads = fz_size(f, KVN * G);
    p.key_num_heads = fz_size(f, fz_chance(f, 40) ? 0 : KVN);
    const int64_t N = KVN * G;
    p.scale_value = fz_chance(f, 8) ? (double)fz_interesting_value(f) : 0.25;
    p.inner_precise = fz_size(f, fz_range(f, 0, 1));
    p.antiquant_mode = fz_size(f, fz_range(f, 0, 1));
    const unsigned nonfinite = fz_chance(f, 30) ? fz_u8(f) : 0;

    /* Dtypes: query, KV, output quantisation. */
    const int full_quant = fz_chance(f, 30);
    const ifa_dtype qd = full_quant ? IFA_DTYPE_INT8 : float_dtypes[fz_range(f, 0, 2)];
    const ifa_dtype kvd = full_quant || fz_chance(f, 70) ? IFA_DTYPE_INT8 : qd;
    const ifa_dtype qf = full_quant ? IFA_DTYPE_FLOAT16 : qd;

    /* Query. */
    int64_t qshape[4];
    int32_t qrank = 4;
    if (lay == 0) {
        qrank = 3;
        qshape[0] = B, qshape[1] = 1, qshape[2] = N * D;
    } else if (lay == 1) {
        qshape[0] = B, qshape[1] = 1, qshape[2] = N, qshape[3] = D;
    } else {
        qshape[0] = B, qshape[1] = N, qshape[2] = 1, qshape[3] = D;
    }
    make_view(f, &pool, &p.query, qd, qrank, qshape, 4, nonfinite);

    /* KV cache. */
    const int form = (int)fz_range(f, 0, FORM_COUNT - 1);
    const int paged = form >= FORM_PAGED3;
    const int sparse = form >= FORM_SPARSE3;
    const int64_t S = fz_range(f, 0, 24), num_blocks = fz_range(f, 1, 12);
    const int64_t M = fz_range(f, 0, 8), P = fz_range(f, 0, 8);
    ifa_tensor keys[4], values[4];
    memset(keys, 0, sizeof keys);
    memset(values, 0, sizeof values);
    int32_t kv_count = 1;
    if (form == FORM_LIST) kv_count = (int32_t)fz_size(f, B) & 3;
    if (kv_count == 0 && fz_chance(f, 200)) kv_count = 1;
    int64_t kshape[4];
    int32_t krank = 4;
    for (int32_t i = 0; i < kv_count; i++) {
        const int64_t outer = form == FORM_LIST ? 1 : B;
        const int64_t Si = form == FORM_LIST ? fz_range(f, 0, 24) : S;
        if (paged && (form == FORM_PAGED4 || form == FORM_SPARSE4)) {
            kshape[0] = num_blocks, kshape[1] = KVN, kshape[2] = bs, kshape[3] = D;
        } else if (paged) {
            krank = 3;
            kshape[0] = num_blocks, kshape[1] = bs, kshape[2] = KVN * D;
        } else if (lay == 0) {
            krank = 3;
            kshape[0] = outer, kshape[1] = Si, kshape[2] = KVN * D;
        } else if (lay == 1) {
            kshape[0] = outer, kshape[1] = Si, kshape[2] = KVN, kshape[3] = D;
        } else {
            kshape[0] = outer, kshape[1] = KVN, kshape[2] = Si, kshape[3] = D;
        }
        make_view(f, &pool, &keys[i], kvd, krank, kshape, 4, nonfinite);
        if (fz_chance(f, 240)) { /* value like key */
            values[i] = keys[i];
            values[i].data = NULL;
            fv_alloc(f, &pool, &values[i], 4, nonfinite);
        } else {
            make_view(f, &pool, &values[i], kvd, krank, kshape, 4, nonfinite);
        }
    }
    p.key = kv_count > 0 || fz_chance(f, 128) ? keys : NULL;
    p.value = kv_count > 0 || fz_chance(f, 128) ? values : NULL;
    p.kv_count = kv_count;
    if (p.key == NULL || p.value == NULL || kv_count < 1) pool.bad = 1;

    /* Lengths, padding, pages. */
    const int64_t len_max = paged ? bs * (sparse ? P : M) : S;
    if (paged || form == FORM_PADDED || fz_chance(f, 128)) {
        const int64_t n = fz_chance(f, 64) ? 1 : B + fz_range(f, 0, 1);
        const ifa_dtype ld = fz_chance(f, 128) ? IFA_DTYPE_INT32 : IFA_DTYPE_INT64;
        make_view(f, &pool, &p.actual_seq_lengths, ld, 1, (int64_t[]){n}, len_max + 1, 0);
    }
    if (form == FORM_PADDED || fz_chance(f, 6))
        make_view(f, &pool, &p.kv_padding_size, fz_chance(f, 200) ? IFA_DTYPE_INT64 : IFA_DTYPE_INT32, 1,
                  (int64_t[]){1}, S + 1, 0);
    if (paged || fz_chance(f, 6)) {
        p.block_size = fz_size(f, bs);
        make_view(f, &pool, &p.block_table, IFA_DTYPE_INT32, 2, (int64_t[]){B, M}, num_blocks, 0);
    } else if (fz_chance(f, 20)) {
        p.block_size = fz_size(f, 0);
    }
    if (sparse || fz_chance(f, 6))
        make_view(f, &pool, &p.block_position, IFA_DTYPE_INT32, 3, (int64_t[]){B, KVN, P}, M, 0);

    /* pse and mask over positions 0 .. S'-1. */
    int64_t Sp = fz_size(f, len_max > S ? len_max : S);
    if (__builtin_add_overflow(Sp, fz_range(f, -1, 1), &Sp)) Sp = INT64_MAX;
    if (fz_chance(f, 60))
        make_view(f, &pool, &p.pse_shift, qf, 4, (int64_t[]){fz_chance(f, 128) ? 1 : B, N, 1, Sp}, 0,
                  nonfinite);
    if (fz_chance(f, 60)) {
        const int32_t r = (int32_t)fz_range(f, 2, 4);
        const ifa_dtype md = (ifa_dtype[]){IFA_DTYPE_BOOL, IFA_DTYPE_INT8, IFA_DTYPE_UINT8}[fz_range(f, 0, 2)];
        make_view(f, &pool, &p.attention_mask, md, r,
                  r == 2 ? (int64_t[]){B, Sp} : r == 3 ? (int64_t[]){B, 1, Sp} : (int64_t[]){B, 1, 1, Sp}, 1, 0);
    }

    /* Antiquant: per-channel shapes or per-token (2, B, S'). */
    if (kvd == IFA_DTYPE_INT8 ? fz_chance(f, 235) : fz_chance(f, 6)) {
        int64_t as[4] = {2, KVN * D, 0, 0};
        int32_t ar = 2;
        const ifa_dtype ad = fz_chance(f, 128) ? IFA_DTYPE_FLOAT32 : qf;
        switch (p.antiquant_mode == 1 ? 5 : fz_range(f, 0, 4)) {
        case 0: ar = 1; break;
        case 1: break;
        case 2: ar = 3, as[1] = KVN, as[2] = D; break;
        case 3: ar = 4, as[1] = KVN, as[2] = 1, as[3] = D; break;
        case 4: ar = 4, as[1] = 1, as[2] = KVN, as[3] = D; break;
        default: ar = 3, as[1] = B, as[2] = Sp; break;
        }
        const ifa_dtype ad2 = p.antiquant_mode == 1 ? IFA_DTYPE_FLOAT32 : ad;
        make_view(f, &pool, &p.antiquant_scale, ad2, ar, as, 0, nonfinite);
        if (fz_chance(f, 128)) make_view(f, &pool, &p.antiquant_offset, ad2, ar, as, 0, nonfinite);
    }

    /* Full quantisation scales and int8 output. */
    ifa_tensor *scales[3] = {&p.dequant_scale1, &p.quant_scale1, &p.dequant_scale2};
    for (int i = 0; i < 3; i++)
        if (full_quant ? fz_chance(f, 250) : fz_chance(f, 4))
            make_view(f, &pool, scales[i], fz_chance(f, 200) ? IFA_DTYPE_FLOAT32 : IFA_DTYPE_UINT64, 1,
                      (int64_t[]){1}, 0, nonfinite);
    if (fz_chance(f, 50)) {
        const ifa_dtype sd = qd == IFA_DTYPE_BFLOAT16 && fz_chance(f, 128) ? IFA_DTYPE_BFLOAT16 : IFA_DTYPE_FLOAT32;
        static const int32_t ranks[5] = {1, 1, 2, 3, 4};
        const int which = (int)fz_range(f, 0, 4);
        const int64_t shapes[5][4] = {{1}, {N * D}, {N, D}, {N, 1, D}, {1, N, 1, D}};
        make_view(f, &pool, &p.quant_scale2, sd, ranks[which], shapes[which], 0, nonfinite);
        if (fz_chance(f, 100)) make_view(f, &pool, &p.quant_offset2, sd, ranks[which], shapes[which], 0, nonfinite);
    }

    /* Output: the query's shape and the expected dtype, sometimes not. */
    const int in_bad = pool.bad; /* a malformed input view: ifa_validate must fail */
    ifa_tensor out;
    const ifa_dtype od = ifa_output_dtype(&p);
    shape_view(f, &out, od == IFA_DTYPE_NONE ? IFA_DTYPE_FLOAT32 : od, p.query.rank >= 0 && p.query.rank <= IFA_MAX_RANK ? p.query.rank : 3,
               p.query.shape);
    fv_alloc(f, &pool, &out, 0, 0);
    if (out.data != NULL && fv_find(&pool, out.data) >= 0) memset(out.data, 0xA5, pool.size[fv_find(&pool, out.data)]);

    if (fz_chance(f, 16)) ifa_set_num_threads((int)fz_range(f, 1, 3));

    /* Cost estimate: skip what would loop for long in validation, only validate what would
     * compute for long. The largest length is bounded by the lengths and the KV dimensions. */
    int64_t Lmax = max_int_value(&pool, &p.actual_seq_lengths);
    for (int32_t i = 0; i < kv_count; i++)
        for (int32_t d = 0; d >= 0 && d < keys[i].rank && d < IFA_MAX_RANK; d++)
            if (abs64(keys[i].shape[d]) > Lmax) Lmax = abs64(keys[i].shape[d]);
    int64_t qnumel = 1;
    for (int32_t d = 0; d >= 0 && d < p.query.rank && d < IFA_MAX_RANK; d++) qnumel = sat_mul(qnumel, p.query.shape[d]);
    const int64_t qB = p.query.rank >= 1 && p.query.rank <= IFA_MAX_RANK ? abs64(p.query.shape[0]) : 1;
    const int64_t heads = abs64(p.key_num_heads) > abs64(p.num_heads) ? abs64(p.key_num_heads) : abs64(p.num_heads);
    const int64_t pbs = abs64(p.block_size) > 0 ? abs64(p.block_size) : 1;
    int64_t n_len = 1;
    for (int32_t d = 0; d >= 0 && d < p.actual_seq_lengths.rank && d < IFA_MAX_RANK; d++)
        n_len = sat_mul(n_len, p.actual_seq_lengths.shape[d]);
    const int64_t validate_cost =
        sat_add(sat_add(sat_mul(qB, sat_mul(sat_add(heads, 1), sat_add(Lmax / pbs, 2))), n_len), qB);
    const int64_t compute_cost = sat_mul(sat_mul(qnumel, sat_add(Lmax, 1)), sat_add(heads, 1));
    if (validate_cost > ((int64_t)1 << 20)) {
        fv_free(&pool);
        return;
    }

    fv_sum_all(&pool);
    const int out_index = out.data ? fv_find(&pool, out.data) : -1;
    const ifa_status sv = ifa_validate(&p);
    if (getenv("FUZZ_VERBOSE")) {
        const ifa_tensor *all[] = {&p.query, &p.pse_shift, &p.attention_mask, &p.actual_seq_lengths,
                                   &p.dequant_scale1, &p.quant_scale1, &p.dequant_scale2, &p.quant_scale2,
                                   &p.quant_offset2, &p.antiquant_scale, &p.antiquant_offset, &p.block_table,
                                   &p.kv_padding_size, &p.block_position, &keys[0], &values[0], &keys[1],
                                   &values[1], &keys[2], &values[2]};
        for (int i = 0; i < (int)(sizeof all / sizeof all[0]); i++)
            fprintf(stderr, "fuzz: view %d dtype %d rank %d shape0 %lld extent %lld\n", i, (int)all[i]->dtype,
                    (int)all[i]->rank, (long long)all[i]->shape[0], (long long)fv_extent(all[i]));
    }
    if (getenv("FUZZ_VERBOSE"))
        fprintf(stderr, "fuzz: layout %s N %lld KVN %lld kv_count %d form %d full_quant %d: ifa_validate %d \"%s\"\n",
                p.layout ? p.layout : "(null)", (long long)p.num_heads, (long long)p.key_num_heads, (int)kv_count,
                form, full_quant, (int)sv, ifa_last_error());
    CHECK(sv >= IFA_OK && sv <= IFA_ERR_UNSUPPORTED, "ifa_validate returned %d", (int)sv);
    CHECK((sv == IFA_OK) == (ifa_last_error()[0] == '\0'), "status %d with message \"%s\"", (int)sv,
          ifa_last_error());
    ifa_status st = sv;
    if (compute_cost <= ((int64_t)1 << 22)) {
        st = ifa_incre_flash_attention_v5(&p, &out);
        CHECK(st >= IFA_OK && st <= IFA_ERR_UNSUPPORTED, "ifa_incre_flash_attention_v5 returned %d", (int)st);
        CHECK((st == IFA_OK) == (ifa_last_error()[0] == '\0'), "status %d with message \"%s\"", (int)st,
              ifa_last_error());
        CHECK(sv == IFA_OK || st == sv, "ifa_validate said %d but the call returned %d (%s)", (int)sv, (int)st,
              ifa_last_error());
        if (st != IFA_OK && out_index >= 0)
            CHECK(fv_checksum(pool.buf[out_index], pool.size[out_index]) == pool.sum[out_index],
                  "the output was written by a failed call (%s)", ifa_last_error());
        CHECK(!pool.bad || st != IFA_OK, "a malformed view was accepted");
    }
    CHECK(!in_bad || sv != IFA_OK, "ifa_validate accepted a malformed view");
    for (int i = 0; i < pool.count; i++)
        if (i != out_index)
            CHECK(fv_checksum(pool.buf[i], pool.size[i]) == pool.sum[i], "input buffer %d was modified", i);
    fv_free(&pool);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    fz f = fz_make(data, size);
    fz_seed(&f);
    run_one(&f);
    return 0;
}
