/*
 * golden.c - the float64 model of IFA-V5 (see golden.h), written from shared/SPEC.md.
 *
 * For every batch b and KV head h the model first lists the tokens that exist for that head (SPEC
 * 4), each with its dequantised key row, value row and position pos(t); then each of the G query
 * heads sharing h runs the textbook softmax of SPEC 5 over that list:
 *
 *     tokens of (b, h) --> s_t = scale * q.K_t  (+ pse[pos])  (mask[pos] ? -1e12 : s_t)
 *                      --> m = max s, p = exp(s - m), l = sum p, o = sum p V / l
 *
 * Everything after loading the inputs is double precision, with a global maximum, so the model
 * carries none of the tiling or rounding choices an optimised kernel makes.
 */
#include "golden.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ---- Scalar conversions ---------------------------------------------------------------------- */

float gd_half_to_float(uint16_t h)
{
    const int sign = (h >> 15) & 1;
    const int exponent = (h >> 10) & 0x1f;
    const int mantissa = h & 0x3ff;
    float v;
    if (exponent == 0) {
        v = ldexpf((float)mantissa, -24); /* subnormal: mantissa * 2^-24 */
    } else if (exponent == 31) {
        v = mantissa != 0 ? NAN : INFINITY;
    } else {
        v = ldexpf((float)(mantissa | 0x400), exponent - 25); /* 1.m * 2^(e-15) */
    }
    return sign ? -v : v;
}

double gd_round_half_even(double x)
{
    if (!isfinite(x)) return x;
    double r = floor(x);
    const double diff = x - r;
    if (diff > 0.5 || (diff == 0.5 && fmod(r, 2.0) != 0.0)) r += 1.0;
    return r;
}

double gd_quant_int8(double x)
{
    if (isnan(x)) return 0.0;
    const double r = gd_round_half_even(x);
    return r < -128.0 ? -128.0 : (r > 127.0 ? 127.0 : r);
}

uint16_t gd_float_to_half(float f)
{
    uint32_t x;
    memcpy(&x, &f, sizeof x);
    const uint16_t sign = (uint16_t)((x >> 16) & 0x8000u);
    const uint32_t ax = x & 0x7fffffffu;
    if (ax > 0x7f800000u) return (uint16_t)(sign | 0x7e00u);  /* NaN */
    if (ax >= 0x477ff000u) return (uint16_t)(sign | 0x7c00u); /* >= 65520 rounds to infinity */
    if (ax < 0x38800000u) {
        /* Below 2^-14 the result is subnormal: count units of 2^-24, rounding half to even.
         * A count of 0x400 correctly becomes the smallest normal number. */
        float a;
        memcpy(&a, &ax, sizeof a);
        const double units = gd_round_half_even((double)a * 16777216.0);
        return (uint16_t)(sign | (uint16_t)units);
    }
    const uint32_t exponent = (ax >> 23) - 127u + 15u;
    const uint32_t mantissa = ax & 0x7fffffu;
    uint32_t h = (exponent << 10) | (mantissa >> 13);
    const uint32_t rest = mantissa & 0x1fffu;
    if (rest > 0x1000u || (rest == 0x1000u && (h & 1u))) h++; /* a carry moves into the exponent */
    return (uint16_t)(sign | h);
}

float gd_bf16_to_float(uint16_t h)
{
    const uint32_t x = (uint32_t)h << 16;
    float f;
    memcpy(&f, &x, sizeof f);
    return f;
}

uint16_t gd_float_to_bf16(float f)
{
    uint32_t x;
    memcpy(&x, &f, sizeof x);
    if ((x & 0x7fffffffu) > 0x7f800000u) return (uint16_t)((x >> 16) | 0x40u); /* quiet NaN */
    x += 0x7fffu + ((x >> 16) & 1u);
    return (uint16_t)(x >> 16);
}

/* ---- Reading views --------------------------------------------------------------------------- */

static size_t gd_elem_size(ifa_dtype dt)
{
    switch (dt) {
    case IFA_DTYPE_FLOAT16:
    case IFA_DTYPE_BFLOAT16:
    case IFA_DTYPE_INT16: return 2;
    case IFA_DTYPE_FLOAT32:
    case IFA_DTYPE_INT32: return 4;
    case IFA_DTYPE_FLOAT64:
    case IFA_DTYPE_INT64:
    case IFA_DTYPE_UINT64: return 8;
    case IFA_DTYPE_INT8:
    case IFA_DTYPE_UINT8:
    case IFA_DTYPE_BOOL: return 1;
    default: return 0;
    }
}

int64_t gd_numel(const ifa_tensor *t)
{
    int64_t n = 1;
    for (int32_t k = 0; k < t->rank; k++) n *= t->shape[k];
    return n;
}

int gd_present(const ifa_tensor *t)
{
    return t->dtype != IFA_DTYPE_NONE && t->rank >= 0 && gd_numel(t) > 0;
}

static const void *gd_addr(const ifa_tensor *t, const int64_t *idx)
{
    int64_t off = 0;
    for (int32_t k = 0; k < t->rank; k++) off += idx[k] * t->strides[k];
    return (const char *)t->data + off * (int64_t)gd_elem_size(t->dtype);
}

double gd_load(const ifa_tensor *t, const int64_t *idx)
{
    const void *a = gd_addr(t, idx);
    switch (t->dtype) {
    case IFA_DTYPE_FLOAT16: {
        uint16_t h;
        memcpy(&h, a, 2);
        return gd_half_to_float(h);
    }
    case IFA_DTYPE_BFLOAT16: {
        uint16_t h;
        memcpy(&h, a, 2);
        return gd_bf16_to_float(h);
    }
    case IFA_DTYPE_FLOAT32: {
        float f;
        memcpy(&f, a, 4);
        return f;
    }
    case IFA_DTYPE_FLOAT64: {
        double f;
        memcpy(&f, a, 8);
        return f;
    }
    case IFA_DTYPE_INT8: return *(const int8_t *)a;
    case IFA_DTYPE_UINT8: return *(const uint8_t *)a;
    case IFA_DTYPE_BOOL: return *(const uint8_t *)a;
    case IFA_DTYPE_INT16: {
        int16_t v;
        memcpy(&v, a, 2);
        return v;
    }
    case IFA_DTYPE_INT32: {
        int32_t v;
        memcpy(&v, a, 4);
        return v;
    }
    case IFA_DTYPE_INT64: {
        int64_t v;
        memcpy(&v, a, 8);
        return (double)v;
    }
    case IFA_DTYPE_UINT64: {
        uint64_t v;
        memcpy(&v, a, 8);
        return (double)v;
    }
    default: return NAN;
    }
}

double gd_load_flat(const ifa_tensor *t, int64_t flat)
{
    int64_t idx[IFA_MAX_RANK] = { 0 };
    for (int32_t k = t->rank - 1; k >= 0; k--) {
        idx[k] = flat % t->shape[k];
        flat /= t->shape[k];
    }
    return gd_load(t, idx);
}

int64_t gd_load_int(const ifa_tensor *t, int64_t flat)
{
    int64_t idx[IFA_MAX_RANK] = { 0 };
    for (int32_t k = t->rank - 1; k >= 0; k--) {
        idx[k] = flat % t->shape[k];
        flat /= t->shape[k];
    }
    const void *a = gd_addr(t, idx);
    if (t->dtype == IFA_DTYPE_INT64) {
        int64_t v;
        memcpy(&v, a, 8);
        return v;
    }
    if (t->dtype == IFA_DTYPE_INT32) {
        int32_t v;
        memcpy(&v, a, 4);
        return v;
    }
    return (int64_t)gd_load(t, idx);
}

double gd_load_scale(const ifa_tensor *t)
{
    int64_t idx[IFA_MAX_RANK] = { 0 };
    if (t->dtype == IFA_DTYPE_UINT64) {
        uint64_t v;
        memcpy(&v, gd_addr(t, idx), 8);
        const uint32_t bits = (uint32_t)(v & 0xffffffffu);
        float f;
        memcpy(&f, &bits, sizeof f);
        return f;
    }
    return gd_load(t, idx);
}

int gd_layout_code(const char *layout)
{
    if (layout == NULL) return -1;
    if (strcmp(layout, "BSH") == 0) return GD_BSH;
    if (strcmp(layout, "BSND") == 0) return GD_BSND;
    if (strcmp(layout, "BNSD") == 0) return GD_BNSD;
    return -1;
}

void gd_qo_index(int layout, int64_t b, int64_t n, int64_t d, int64_t head_dim, int64_t idx[4])
{
    idx[0] = b;
    if (layout == GD_BSH) {
        idx[1] = 0, idx[2] = n * head_dim + d, idx[3] = 0;
    } else if (layout == GD_BSND) {
        idx[1] = 0, idx[2] = n, idx[3] = d;
    } else {
        idx[1] = n, idx[2] = 0, idx[3] = d;
    }
}

/* ---- Where a token lives (SPEC 3 and 4) ------------------------------------------------------ */

typedef struct gd_kv {
    const ifa_params *p;
    int layout;
    int64_t KVN, D;
    int paged, padded, listed, positioned, full_quant, int8_kv;
    int64_t pad;
} gd_kv;

/* Fills the index tuple of element d of a key/value row. The head dimension is always the last
 * axis, so a row is idx[0..rank-2] fixed and idx[rank-1] = base + d; this returns the base. */
static int64_t gd_row_index(const gd_kv *kv, const ifa_tensor *t, int64_t bi, int64_t h, int64_t row,
                            int64_t idx[4])
{
    if (kv->paged) {
        idx[0] = bi; /* the block */
        if (t->rank == 4) {
            idx[1] = h, idx[2] = row, idx[3] = 0;
            return 0;
        }
        idx[1] = row, idx[2] = 0;
        return h * kv->D;
    }
    idx[0] = bi;
    if (kv->layout == GD_BSH) {
        idx[1] = row, idx[2] = 0;
        return h * kv->D;
    }
    if (kv->layout == GD_BSND) {
        idx[1] = row, idx[2] = h, idx[3] = 0;
        return 0;
    }
    idx[1] = h, idx[2] = row, idx[3] = 0;
    return 0;
}

/* Antiquant parameter i (0 key, 1 value) for head h, channel d, batch b, position pos (SPEC 6). */
static double gd_antiquant_param(const gd_kv *kv, const ifa_tensor *t, int i, int64_t b, int64_t h,
                                 int64_t d, int64_t pos)
{
    int64_t idx[4] = { i, 0, 0, 0 };
    if (kv->p->antiquant_mode == 1) {
        idx[1] = b, idx[2] = pos;
    } else if (t->rank == 1) {
        /* per-tensor: (2,) */
    } else if (t->rank == 2) {
        idx[1] = h * kv->D + d;
    } else if (t->rank == 3) {
        idx[1] = h, idx[2] = d;
    } else if (t->shape[2] == 1) {
        idx[1] = h, idx[2] = 0, idx[3] = d; /* (2, KVN, 1, D) */
    } else {
        idx[1] = 0, idx[2] = h, idx[3] = d; /* (2, 1, KVN, D) */
    }
    return gd_load(t, idx);
}

static void gd_load_row(const gd_kv *kv, const ifa_tensor *t, int which, int64_t bi, int64_t b,
                        int64_t h, int64_t row, int64_t pos, double *out)
{
    int64_t idx[4];
    const int64_t base = gd_row_index(kv, t, bi, h, row, idx);
    const int last = t->rank - 1;
    const ifa_params *p = kv->p;
    const int dequant = kv->int8_kv && !kv->full_quant;
    for (int64_t d = 0; d < kv->D; d++) {
        idx[last] = base + d;
        double v = gd_load(t, idx);
        if (dequant) {
            const double scale = gd_antiquant_param(kv, &p->antiquant_scale, which, b, h, d, pos);
            const double offset = gd_present(&p->antiquant_offset)
                                      ? gd_antiquant_param(kv, &p->antiquant_offset, which, b, h, d, pos)
                                      : 0.0;
            v = (v + offset) * scale;
        }
        out[d] = v;
    }
}

static int64_t gd_seq_dim(int layout) { return layout == GD_BNSD ? 2 : 1; }

/* L[b] of SPEC 4: absent means the stored length, one value is broadcast, else the b-th value. */
static int64_t gd_length(const ifa_params *p, int64_t b, int64_t stored)
{
    const ifa_tensor *t = &p->actual_seq_lengths;
    if (!gd_present(t)) return stored;
    return gd_load_int(t, gd_numel(t) == 1 ? 0 : b);
}

/* ---- The model ------------------------------------------------------------------------------- */

void golden_free(golden_out *g)
{
    free(g->o);
    free(g->y);
    free(g->tokens);
    free(g->slack);
    memset(g, 0, sizeof *g);
}

static double gd_mask_at(const ifa_tensor *m, int64_t b, int64_t pos)
{
    int64_t idx[4] = { b, 0, 0, 0 };
    idx[m->rank - 1] = pos;
    return gd_load(m, idx);
}

int golden_compute(const ifa_params *p, golden_out *g)
{
    memset(g, 0, sizeof *g);
    const ifa_tensor *q = &p->query;
    gd_kv kv;
    memset(&kv, 0, sizeof kv);
    kv.p = p;
    kv.layout = gd_layout_code(p->layout);
    if (kv.layout < 0 || q->rank != (kv.layout == GD_BSH ? 3 : 4) || p->num_heads < 1 ||
        p->key == NULL || p->value == NULL || p->kv_count < 1) {
        fprintf(stderr, "golden: unsupported parameters\n");
        return -1;
    }
    const int64_t B = q->shape[0];
    const int64_t N = p->num_heads;
    const int64_t KVN = p->key_num_heads > 0 ? p->key_num_heads : N;
    const int64_t G = N / KVN;
    const int64_t D = kv.layout == GD_BSH ? q->shape[2] / N : q->shape[3];
    kv.KVN = KVN;
    kv.D = D;
    kv.paged = gd_present(&p->block_table);
    kv.positioned = kv.paged && gd_present(&p->block_position);
    kv.padded = gd_present(&p->kv_padding_size);
    kv.listed = !kv.paged && p->kv_count > 1;
    kv.full_quant = q->dtype == IFA_DTYPE_INT8;
    kv.int8_kv = p->key[0].dtype == IFA_DTYPE_INT8;
    if (kv.padded) kv.pad = gd_load_int(&p->kv_padding_size, 0);

    g->B = B, g->N = N, g->D = D, g->KVN = KVN;
    g->out_dtype = gd_present(&p->quant_scale2) ? IFA_DTYPE_INT8
                   : kv.full_quant                ? IFA_DTYPE_FLOAT16
                                                  : q->dtype;
    const size_t cells = (size_t)(B * N * D);
    g->o = calloc(cells + 1, sizeof(double));
    g->y = calloc(cells + 1, sizeof(double));
    g->tokens = calloc((size_t)(B * N) + 1, sizeof(int64_t));
    g->slack = calloc(cells + 1, sizeof(double));
    if (g->o == NULL || g->y == NULL || g->tokens == NULL || g->slack == NULL) {
        golden_free(g);
        return -1;
    }

    /* Scalars of SPEC 7, read once. */
    double dequant1 = 1.0, quant1 = 1.0, dequant2 = 1.0;
    if (kv.full_quant) {
        dequant1 = gd_load_scale(&p->dequant_scale1);
        quant1 = gd_load_scale(&p->quant_scale1);
        dequant2 = gd_load_scale(&p->dequant_scale2);
    }
    const int has_pse = gd_present(&p->pse_shift);
    const int has_mask = gd_present(&p->attention_mask);

    for (int64_t b = 0; b < B; b++) {
        /* Stored length and L[b]. */
        int64_t stored = 0;
        if (!kv.paged) {
            const ifa_tensor *k0 = &p->key[kv.listed ? b : 0];
            stored = k0->shape[gd_seq_dim(kv.layout)];
        }
        const int64_t L = gd_length(p, b, stored);
        /* start = S - pad - L, written so that a huge pad cannot overflow: any pad above
         * S - L gives a negative start, and only the sign matters then. */
        const int64_t start = !kv.padded ? 0 : (kv.pad > stored - L ? -1 : stored - L - kv.pad);
        double *krows = malloc(sizeof(double) * (size_t)((L > 0 ? L : 1) * D));
        double *vrows = malloc(sizeof(double) * (size_t)((L > 0 ? L : 1) * D));
        int64_t *pos = malloc(sizeof(int64_t) * (size_t)(L > 0 ? L : 1));
        double *s = malloc(sizeof(double) * (size_t)(L > 0 ? L : 1));
        if (krows == NULL || vrows == NULL || pos == NULL || s == NULL) {
            free(krows), free(vrows), free(pos), free(s);
            golden_free(g);
            return -1;
        }
        for (int64_t h = 0; h < KVN; h++) {
            /* The token list of (b, h). */
            int64_t T = 0;
            for (int64_t t = 0; t < L && start >= 0; t++) {
                const ifa_tensor *kt = &p->key[0], *vt = &p->value[0];
                int64_t bi = b, row = t, ps = t;
                if (kv.paged) {
                    const int64_t bs = p->block_size;
                    int64_t col = t / bs;
                    if (kv.positioned) {
                        const int64_t pidx[3] = { b, h, t / bs };
                        const double idx = gd_load(&p->block_position, pidx);
                        if (idx == (double)IFA_BLOCK_UNSELECTED) continue;
                        col = (int64_t)idx;
                    }
                    const int64_t tidx[2] = { b, col };
                    bi = (int64_t)gd_load(&p->block_table, tidx);
                    row = t % bs;
                } else if (kv.listed) {
                    kt = &p->key[b], vt = &p->value[b];
                    bi = 0;
                } else if (kv.padded) {
                    row = start + t;
                    ps = row;
                }
                gd_load_row(&kv, kt, 0, bi, b, h, row, ps, krows + T * D);
                gd_load_row(&kv, vt, 1, bi, b, h, row, ps, vrows + T * D);
                pos[T] = ps;
                T++;
            }
            for (int64_t gi = 0; gi < G; gi++) {
                const int64_t n = h * G + gi;
                double *o = g->o + (b * N + n) * D;
                g->tokens[b * N + n] = T;
                if (T == 0) continue; /* SPEC 5: no token at all gives o = 0 */
                double qrow[1024];
                double *qv = D <= 1024 ? qrow : malloc(sizeof(double) * (size_t)D);
                for (int64_t d = 0; d < D; d++) {
                    int64_t idx[4];
                    gd_qo_index(kv.layout, b, n, d, D, idx);
                    qv[d] = gd_load(q, idx);
                }
                double m = -INFINITY;
                for (int64_t t = 0; t < T; t++) {
                    double dot = 0.0;
                    for (int64_t d = 0; d < D; d++) dot += qv[d] * krows[t * D + d];
                    double st = p->scale_value * dequant1 * dot;
                    if (has_pse) {
                        const ifa_tensor *ps = &p->pse_shift;
                        const int64_t idx[4] = { ps->shape[0] == 1 ? 0 : b, n, 0, pos[t] };
                        st += gd_load(ps, idx);
                    }
                    if (has_mask && gd_mask_at(&p->attention_mask, b, pos[t]) != 0.0) st = -1e12;
                    s[t] = st;
                    if (st > m) m = st;
                }
                double l = 0.0;
                for (int64_t t = 0; t < T; t++) {
                    s[t] = exp(s[t] - m);
                    l += s[t];
                }
                for (int64_t d = 0; d < D; d++) {
                    double acc = 0.0, vv = 0.0;
                    for (int64_t t = 0; t < T; t++) {
                        const double pt = kv.full_quant ? gd_quant_int8(s[t] * quant1) : s[t];
                        acc += pt * vrows[t * D + d];
                        vv += vrows[t * D + d] * vrows[t * D + d];
                    }
                    o[d] = (kv.full_quant ? dequant2 * acc : acc) / l;
                    if (kv.full_quant) g->slack[(b * N + n) * D + d] = fabs(dequant2) * sqrt(vv / 6.0) / l;
                }
                if (qv != qrow) free(qv);
            }
        }
        free(krows), free(vrows), free(pos), free(s);
    }

    /* The final cast or quantisation (SPEC 5 last line, SPEC 8). */
    const int per_channel2 = gd_present(&p->quant_scale2) && gd_numel(&p->quant_scale2) > 1;
    const int has_offset2 = gd_present(&p->quant_offset2);
    const int per_channel_off = has_offset2 && gd_numel(&p->quant_offset2) > 1;
    for (int64_t b = 0; b < B; b++) {
        for (int64_t n = 0; n < N; n++) {
            for (int64_t d = 0; d < D; d++) {
                const int64_t cell = (b * N + n) * D + d;
                const double o = g->o[cell];
                const int64_t c = n * D + d;
                double y;
                switch (g->out_dtype) {
                case IFA_DTYPE_INT8: {
                    const double sc = gd_load_flat(&p->quant_scale2, per_channel2 ? c : 0);
                    const double off = has_offset2 ? gd_load_flat(&p->quant_offset2, per_channel_off ? c : 0) : 0.0;
                    y = gd_quant_int8(o * sc + off);
                    break;
                }
                case IFA_DTYPE_FLOAT16: y = gd_half_to_float(gd_float_to_half((float)o)); break;
                case IFA_DTYPE_BFLOAT16: y = gd_bf16_to_float(gd_float_to_bf16((float)o)); break;
                case IFA_DTYPE_FLOAT32: y = (float)o; break;
                default: y = o; break;
                }
                g->y[cell] = y;
            }
        }
    }
    return 0;
}
