/*
 * golden.h - an independent float64 model of IFA-V5, written from shared/SPEC.md alone.
 *
 * The tests judge libifa against this model, never against the library itself. It reads the very
 * same ifa_params a test hands to the library, walks every KV form of SPEC 4 token by token, and
 * does the math of SPEC 5-8 in double precision with the plain (two-pass, global maximum)
 * softmax. It is deliberately slow and simple: clarity is what makes it trustworthy.
 *
 * The model assumes its input is valid; it does not reproduce the library's validation. Only the
 * public view types and constants of ifa.h are used, no libifa function.
 */
#ifndef IFA_TESTS_GOLDEN_H
#define IFA_TESTS_GOLDEN_H

#include <stdint.h>

#include "ifa.h"

/* ---- Scalar conversions, round to nearest even ----------------------------------------------- */

float gd_half_to_float(uint16_t h);
uint16_t gd_float_to_half(float f);
float gd_bf16_to_float(uint16_t h);
uint16_t gd_float_to_bf16(float f);
/* Round half to even, independent of the floating-point environment. */
double gd_round_half_even(double x);
/* Clamps to [-128, 127] after round_half_even. */
double gd_quant_int8(double x);

/* ---- Reading views --------------------------------------------------------------------------- */

/* True when an optional tensor counts as given (SPEC 1: absent = NONE dtype or zero elements). */
int gd_present(const ifa_tensor *t);
int64_t gd_numel(const ifa_tensor *t);
/* The element at the index tuple idx (rank entries), converted to double. Integer dtypes give
 * their integer value; uint64 gives its integer value too (see gd_load_scale for Ascend scales). */
double gd_load(const ifa_tensor *t, const int64_t *idx);
/* The element with row-major flat index `flat`, through the view's strides. */
double gd_load_flat(const ifa_tensor *t, int64_t flat);
/* An integer element (int32, int64; others through double) with row-major flat index `flat`,
 * exactly: lengths and paddings may be as large as INT64_MAX. */
int64_t gd_load_int(const ifa_tensor *t, int64_t flat);
/* A one-value scale of SPEC 7: float32, or uint64 whose low 32 bits are float32 bits. */
double gd_load_scale(const ifa_tensor *t);

/* Layout codes, and the index tuple of element (b, n, d) of a query or output view. */
enum { GD_BSH = 0, GD_BSND = 1, GD_BNSD = 2 };
int gd_layout_code(const char *layout); /* -1 when unknown */
void gd_qo_index(int layout, int64_t b, int64_t n, int64_t d, int64_t head_dim, int64_t idx[4]);

/* ---- The model ------------------------------------------------------------------------------- */

typedef struct golden_out {
    int64_t B, N, D, KVN;
    ifa_dtype out_dtype;
    double *o;        /* B*N*D values, at (b*N + n)*D + d: the attention output before the cast */
    double *y;        /* the same cells: o cast to out_dtype, or quantised to int8 (SPEC 8) */
    int64_t *tokens;  /* B*N: number of tokens that took part in the softmax of (b, n) */
    /* SPEC 7 lets an online implementation quantise p against the running maximum of its tile
     * instead of the global one; the p8 of each token may then round differently (by less than
     * one unit either way). slack is one standard deviation of the resulting change of o, if the
     * two roundings are independent and uniform: dequant_scale2 * sqrt(sum_t v_t^2 / 6) / l.
     * 0 outside full quantisation. */
    double *slack;
} golden_out;

/* Computes the model. Returns 0, or -1 (with a line on stderr) when the parameters are outside
 * what the model understands, which in a test means the test itself is broken. */
int golden_compute(const ifa_params *p, golden_out *g);
void golden_free(golden_out *g);

#endif /* IFA_TESTS_GOLDEN_H */
