/*
 * softmax_state.h - the online-softmax state of the G query heads of one KV head, and its merge.
 *
 * Online softmax (Milakov & Gimelshein, "Online normalizer calculation for softmax", 2018): keep
 * per head the running maximum m, the running sum l = sum_t exp(s_t - m) and the running
 * numerator acc[d] = sum_t exp(s_t - m) * V_t[d]; when a new score raises the maximum to m',
 * multiply l and acc by exp(m - m') first. One pass over the KV cache suffices.
 *
 * Split-KV ("flash-decoding", Dao et al. 2023): when one (batch, KV head) is cut into chunks
 * processed by different threads, each chunk produces such a state and the states merge the
 * same way: m = max(m1, m2), l = l1*e^(m1-m) + l2*e^(m2-m), acc likewise.
 *
 * Memory layout of one state, in floats:
 *
 *     [ m[0..G) | l[0..G) | voff[0..G) | seen[0..G) | acc[0..G*D) ]
 *
 * voff is the per-token antiquant value-offset term (sum_t p_t * scale_t * offset_t), which
 * scales with the state like l. seen is 1 once the head has had a token at all: a head whose
 * every score is -inf ends with l == 0 like a head without tokens, but SPEC.md 5's formula gives
 * it exp(-inf - -inf) = NaN, not 0.
 */
#ifndef IFA_SOFTMAX_STATE_H
#define IFA_SOFTMAX_STATE_H

#include <math.h>
#include <stdint.h>

#include "common.h"

/* Floats of one state, whole cache lines (common.h) so that every state starts on one. */
static inline int64_t ifa__state_floats(int64_t G, int64_t D) { return ifa__line_floats(4 * G + G * D); }

static inline float *ifa__state_m(float *st, int64_t G) { (void)G; return st; }
static inline float *ifa__state_l(float *st, int64_t G) { return st + G; }
static inline float *ifa__state_voff(float *st, int64_t G) { return st + 2 * G; }
static inline float *ifa__state_seen(float *st, int64_t G) { return st + 3 * G; }
static inline float *ifa__state_acc(float *st, int64_t G) { return st + 4 * G; }

static inline void ifa__state_init(float *st, int64_t G, int64_t D) {
    for (int64_t g = 0; g < G; g++) {
        st[g] = -INFINITY;
        st[G + g] = 0.0f;
        st[2 * G + g] = 0.0f;
        st[3 * G + g] = 0.0f;
    }
    float *acc = ifa__state_acc(st, G);
    for (int64_t i = 0; i < G * D; i++) acc[i] = 0.0f;
}

/* dst <- merge(dst, src). A state whose scores were all -inf (or that had no token) has l == 0
 * and m == -inf and adds only its seen flag. */
static inline void ifa__state_merge(float *dst, const float *src, int64_t G, int64_t D) {
    for (int64_t g = 0; g < G; g++) {
        if (src[3 * G + g] != 0.0f) dst[3 * G + g] = 1.0f;
        const float ms = src[g], ls = src[G + g];
        if (ls == 0.0f && ms == -INFINITY) continue;
        const float md = dst[g];
        float *acc = dst + 4 * G + g * D;
        const float *sacc = src + 4 * G + g * D;
        if (dst[G + g] == 0.0f && md == -INFINITY) {
            dst[g] = ms;
            dst[G + g] = ls;
            dst[2 * G + g] = src[2 * G + g];
            for (int64_t d = 0; d < D; d++) acc[d] = sacc[d];
            continue;
        }
        /* The factor of the larger finite maximum is exp(0) = 1 exactly: one expf, not two (an
         * infinite or NaN maximum keeps both, for their NaN). */
        const float m = md > ms ? md : ms;
        const float ad = isfinite(md) && md >= ms ? 1.0f : expf(md - m);
        const float as = isfinite(ms) && ms >= md ? 1.0f : expf(ms - m);
        dst[g] = m;
        dst[G + g] = dst[G + g] * ad + ls * as;
        dst[2 * G + g] = dst[2 * G + g] * ad + src[2 * G + g] * as;
        for (int64_t d = 0; d < D; d++) acc[d] = acc[d] * ad + sacc[d] * as;
    }
}

#endif /* IFA_SOFTMAX_STATE_H */
