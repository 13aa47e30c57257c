/*
 * test_edges.c - the corners of SPEC 4 and 5 that random sweeps hit rarely or never: empty
 * sequences, left padding that runs off the front, heads with no selected page, fully masked
 * batches, holes and garbage in the page tables, odd sizes, every pse / mask / length variant,
 * and non-contiguous views. Each case is still judged by the golden model; where the answer is
 * known outright (zeros, quant(0)), that is checked exactly as well.
 */
#include <math.h>
#include <stdio.h>
#include <string.h>

#include "fixture.h"
#include "testing.h"

/* Runs the library once (current ISA) and returns the golden model in *g, or -1 on failure. */
static int run_once(fx_case *fc, golden_out *g)
{
    if (golden_compute(&fc->p, g) != 0) {
        CHECK_MSG(0, "golden model refused %s", fc->label);
        return -1;
    }
    memset(fc->out.data, 0xA5, fc->out_bytes);
    const ifa_status st = ifa_incre_flash_attention_v5(&fc->p, &fc->out);
    if (st != IFA_OK) {
        CHECK_MSG(0, "call failed: %s: %s; %s", ifa_status_string(st), ifa_last_error(), fc->label);
        golden_free(g);
        return -1;
    }
    fx_compare_output(fc, g, "result");
    return 0;
}

/* Output element (b, n, d) of the library, as a double. */
static double out_at(const fx_case *fc, int64_t b, int64_t n, int64_t d)
{
    int64_t idx[4];
    gd_qo_index(gd_layout_code(fc->p.layout), b, n, d, fc->out.rank == 3 ? fc->out.shape[2] / fc->p.num_heads : fc->out.shape[3], idx);
    return gd_load(&fc->out, idx);
}

/* Checks that batch b's output (every head, or only heads n0..n1-1) is exactly quant(0) or 0. */
static void expect_zero_output(const fx_case *fc, const golden_out *g, int64_t b, int64_t n0, int64_t n1)
{
    const int quant = gd_present(&fc->p.quant_scale2);
    const int per_channel_off = gd_present(&fc->p.quant_offset2) && gd_numel(&fc->p.quant_offset2) > 1;
    for (int64_t n = n0; n < n1; n++) {
        for (int64_t d = 0; d < g->D; d++) {
            double want = 0.0;
            if (quant && gd_present(&fc->p.quant_offset2))
                want = gd_quant_int8(gd_load_flat(&fc->p.quant_offset2, per_channel_off ? n * g->D + d : 0));
            const double got = out_at(fc, b, n, d);
            CHECK_MSG(got == want, "b=%lld n=%lld d=%lld: %g, expected exactly %g (no token); %s",
                      (long long)b, (long long)n, (long long)d, got, want, fc->label);
            CHECK(g->tokens[b * g->N + n] == 0);
        }
    }
}

static void test_zero_length(void)
{
    static const int64_t lens[3] = { 0, 7, 0 };
    uint64_t seed = 1;
    for (int form = 0; form < FX_FORM_COUNT; form++) {
        for (int quant = 0; quant <= 2; quant++) {
            fx_config c = fx_default_config();
            c.form = (fx_form)form;
            c.layout = "BSND";
            c.q_dtype = c.kv_dtype = IFA_DTYPE_FLOAT16;
            c.B = 3, c.N = 4, c.KVN = 2, c.D = 16, c.block_size = 5, c.pad = 2;
            c.lens = lens;
            c.out_quant = quant;
            c.out_quant_shape = 2;
            c.out_quant_offset = quant == 2;
            c.pse = 1;
            c.mask_rank = 2;
            fx_arena a = { 0 };
            fx_case *fc = fx_build(&a, seed++, &c);
            golden_out g;
            if (run_once(fc, &g) == 0) {
                expect_zero_output(fc, &g, 0, 0, 4);
                expect_zero_output(fc, &g, 2, 0, 4);
                golden_free(&g);
            }
            fx_arena_free(&a);
        }
    }
}

/* SPEC 4.2: start = S - pad - L < 0 gives zeros (quant(0) with int8 output). */
static void test_left_padding_start_negative(void)
{
    uint64_t seed = 20;
    for (int quant = 0; quant <= 2; quant++) {
        for (int li = 0; li < 3; li++) {
            static const char *const layouts[3] = { "BSH", "BSND", "BNSD" };
            static const int64_t lens[3] = { 4, 6, 5 };
            fx_config c = fx_default_config();
            c.form = FX_LEFTPAD;
            c.layout = layouts[li];
            c.q_dtype = c.kv_dtype = IFA_DTYPE_BFLOAT16;
            c.B = 3, c.N = 2, c.D = 40, c.pad = 3, c.extra_rows = 0;
            c.lens = lens;
            c.out_quant = quant;
            c.out_quant_offset = 1;
            fx_arena a = { 0 };
            fx_case *fc = fx_build(&a, seed++, &c);
            /* Stored S = 6 + 3. Batch 1 asks for L = S - pad + 1 = 7 <= S: start = -1. */
            const int64_t S = fc->stored[0];
            fx_set_flat(&fc->p.actual_seq_lengths, 1, (double)(S - 3 + 1));
            golden_out g;
            if (run_once(fc, &g) == 0) {
                expect_zero_output(fc, &g, 1, 0, 2);
                CHECK(g.tokens[0] == 4 && g.tokens[2 * 2] == 5);
                golden_free(&g);
            }
            fx_arena_free(&a);
        }
    }
}

/* Left padding with L[b] > S. SPEC 4.1 requires L <= S for the plain contiguous form; for left
 * padding SPEC 4.2 only says start < 0 gives zeros. Either reading is accepted: an error that
 * names actual_seq_lengths (with the output untouched), or zeros for that batch. */
static void test_left_padding_length_beyond_stored(void)
{
    static const int64_t lens[2] = { 3, 4 };
    fx_config c = fx_default_config();
    c.form = FX_LEFTPAD;
    c.B = 2, c.N = 2, c.D = 16, c.pad = 1, c.extra_rows = 0;
    c.lens = lens;
    fx_arena a = { 0 };
    fx_case *fc = fx_build(&a, 33, &c);
    fx_set_flat(&fc->p.actual_seq_lengths, 1, (double)(fc->stored[1] + 2));
    memset(fc->out.data, 0xA5, fc->out_bytes);
    const ifa_status st = ifa_incre_flash_attention_v5(&fc->p, &fc->out);
    if (st != IFA_OK) {
        CHECK(strstr(ifa_last_error(), "actual_seq_lengths") != NULL);
        const unsigned char *o = fc->out.data;
        for (size_t i = 0; i < fc->out_bytes; i++) CHECK(o[i] == 0xA5);
        tst_note("rejected: %s", ifa_last_error());
    } else {
        golden_out g;
        if (golden_compute(&fc->p, &g) == 0) {
            fx_compare_output(fc, &g, "result");
            expect_zero_output(fc, &g, 1, 0, 2);
            golden_free(&g);
        }
        tst_note("accepted, zeros for the batch");
    }
    fx_arena_free(&a);
}

/* A huge kv_padding_size makes start = S - pad - L very negative: zeros (SPEC 4.2), or an error
 * that names kv_padding_size; never an overflow inside the library (SPEC 10). */
static void test_left_padding_huge_pad(void)
{
    static const int64_t pads[] = { INT64_MAX, INT64_MAX - 5, ((int64_t)1 << 62) };
    for (size_t i = 0; i < sizeof pads / sizeof pads[0]; i++) {
        fx_config c = fx_default_config();
        c.form = FX_LEFTPAD;
        c.B = 2, c.N = 2, c.D = 16, c.pad = 1;
        fx_arena a = { 0 };
        fx_case *fc = fx_build(&a, 44 + i, &c);
        memcpy(fc->p.kv_padding_size.data, &pads[i], sizeof pads[i]);
        memset(fc->out.data, 0xA5, fc->out_bytes);
        const ifa_status st = ifa_incre_flash_attention_v5(&fc->p, &fc->out);
        if (st != IFA_OK) {
            CHECK_MSG(strstr(ifa_last_error(), "kv_padding_size") != NULL, "message: %s", ifa_last_error());
        } else {
            golden_out g;
            if (golden_compute(&fc->p, &g) == 0) {
                expect_zero_output(fc, &g, 0, 0, 2);
                expect_zero_output(fc, &g, 1, 0, 2);
                golden_free(&g);
            }
        }
        fx_arena_free(&a);
    }
}

/* Stride 0 is a legal (non-negative) stride: a broadcast view. The query repeats one head for
 * all heads, pse repeats batch 0 for every batch through a stride-0 batch dimension, and the
 * mask repeats one row. */
static void test_zero_strides(void)
{
    uint64_t seed = 900;
    for (int form = 0; form < FX_FORM_COUNT; form++) {
        fx_config c = fx_default_config();
        c.form = (fx_form)form;
        c.layout = "BSND";
        c.q_dtype = c.kv_dtype = IFA_DTYPE_FLOAT16;
        c.B = 3, c.N = 4, c.KVN = 2, c.D = 16, c.block_size = 5, c.pad = 1;
        c.min_len = 1, c.max_len = 30;
        c.pse = 1, c.mask_rank = 2;
        fx_arena a = { 0 };
        fx_case *fc = fx_build(&a, seed++, &c);
        fc->p.query.strides[2] = 0;          /* (B, 1, N, D): every head reads head 0 */
        fc->p.pse_shift.strides[0] = 0;      /* (B, N, 1, S'): every batch reads batch 0 */
        fc->p.attention_mask.strides[0] = 0; /* (B, S'): every batch reads row 0 */
        fx_check_everywhere(fc, seed);
        fx_arena_free(&a);
    }
}

/* SPEC 4.4 and 5: a KV head with every slot unselected has no token, so its G query heads give
 * zeros, while the other heads of the same batch are unaffected. */
static void test_head_all_unselected(void)
{
    uint64_t seed = 40;
    for (int quant = 0; quant <= 1; quant++) {
        for (int cache4d = 0; cache4d <= 1; cache4d++) {
            fx_config c = fx_default_config();
            c.form = FX_PAGED_POS;
            c.layout = cache4d ? "BNSD" : "BSH";
            c.cache4d = cache4d;
            c.q_dtype = c.kv_dtype = IFA_DTYPE_FLOAT16;
            c.B = 2, c.N = 6, c.KVN = 3, c.D = 64, c.block_size = 16;
            c.min_len = 20, c.max_len = 70;
            c.out_quant = quant;
            c.out_quant_offset = 1;
            fx_arena a = { 0 };
            fx_case *fc = fx_build(&a, seed++, &c);
            const ifa_tensor *bp = &fc->p.block_position;
            for (int64_t j = 0; j < bp->shape[2]; j++) {
                const int64_t idx[3] = { 1, 1, j };
                fx_set(bp, idx, IFA_BLOCK_UNSELECTED);
            }
            golden_out g;
            if (run_once(fc, &g) == 0) {
                expect_zero_output(fc, &g, 1, 2, 4); /* KV head 1 serves query heads 2 and 3 */
                golden_free(&g);
            }
            fx_arena_free(&a);
        }
    }
}

/* SPEC 5: every token masked gives the plain mean of V, whatever pse adds. */
static void test_fully_masked_batch(void)
{
    uint64_t seed = 60;
    for (int form = 0; form < FX_FORM_COUNT; form++) {
        for (int pse = 0; pse <= 1; pse++) {
            fx_config c = fx_default_config();
            c.form = (fx_form)form;
            c.layout = "BNSD";
            c.q_dtype = c.kv_dtype = IFA_DTYPE_FLOAT32;
            c.B = 2, c.N = 4, c.KVN = 2, c.D = 16, c.block_size = 5, c.pad = 1;
            c.min_len = 3, c.max_len = 30;
            c.mask_rank = 3;
            c.mask_percent = 30;
            c.pse = pse;
            fx_arena a = { 0 };
            fx_case *fc = fx_build(&a, seed++, &c);
            const ifa_tensor *m = &fc->p.attention_mask;
            for (int64_t s = 0; s < m->shape[2]; s++) {
                const int64_t idx[3] = { 1, 0, s };
                fx_set(m, idx, 1.0);
            }
            golden_out g;
            if (run_once(fc, &g) == 0) golden_free(&g);
            /* The same with the scores made huge: the mask still replaces them. */
            fc->p.scale_value = 50.0;
            if (run_once(fc, &g) == 0) golden_free(&g);
            fx_arena_free(&a);
        }
    }
}

/* SPEC 4.4: holes (sentinels before selected slots), in all densities. */
static void test_block_position_holes(void)
{
    static const int holes[] = { 0, 30, 60, 90 };
    uint64_t seed = 80;
    for (size_t hi = 0; hi < sizeof holes / sizeof holes[0]; hi++) {
        for (int rep = 0; rep < 6; rep++) {
            fx_config c = fx_default_config();
            c.form = FX_PAGED_POS;
            c.layout = rep % 2 ? "BNSD" : "BSND";
            c.cache4d = rep % 4 == 1;
            c.q_dtype = c.kv_dtype = rep % 3 == 0 ? IFA_DTYPE_FLOAT16 : IFA_DTYPE_FLOAT32;
            c.B = 3, c.N = 4, c.KVN = 4, c.D = 16;
            c.block_size = rep < 3 ? 5 : 16;
            c.min_len = 0, c.max_len = 90;
            c.hole_percent = holes[hi];
            fx_arena a = { 0 };
            fx_case *fc = fx_build(&a, seed++, &c);
            fx_check_everywhere(fc, seed);
            fx_arena_free(&a);
        }
    }
}

/* SPEC 4: garbage in every unused entry (table columns never referenced, position slots past
 * ceil(L/bs)) is ignored, including a batch whose whole table is garbage (L = 0). The fixture
 * writes garbage there; this test also writes the worst values by hand. */
static void test_garbage_in_unused_entries(void)
{
    static const int64_t lens[3] = { 0, 13, 6 };
    static const double junk[] = { IFA_BLOCK_UNSELECTED, -5, 999999, -2147483647.0 - 1.0 };
    uint64_t seed = 100;
    for (int form = FX_PAGED; form <= FX_PAGED_POS; form++) {
        for (size_t ji = 0; ji < sizeof junk / sizeof junk[0]; ji++) {
            fx_config c = fx_default_config();
            c.form = (fx_form)form;
            c.B = 3, c.N = 2, c.D = 16, c.block_size = 5;
            c.lens = lens;
            c.hole_percent = 0;
            fx_arena a = { 0 };
            fx_case *fc = fx_build(&a, seed++, &c);
            const ifa_tensor *bt = &fc->p.block_table;
            /* Batch 0 uses nothing; batch 2 (L = 6) uses at most columns referenced by its two
             * first slots. With no position, columns >= 2 of batch 2 and >= 3 of batch 1 are
             * unused. */
            for (int64_t j = 0; j < bt->shape[1]; j++) {
                const int64_t i0[2] = { 0, j };
                fx_set(bt, i0, junk[ji]);
                if (form == FX_PAGED && j >= 2) {
                    const int64_t i2[2] = { 2, j };
                    fx_set(bt, i2, junk[ji]);
                }
                if (form == FX_PAGED && j >= 3) {
                    const int64_t i1[2] = { 1, j };
                    fx_set(bt, i1, junk[ji]);
                }
            }
            if (form == FX_PAGED_POS) {
                const ifa_tensor *bp = &fc->p.block_position;
                for (int64_t h = 0; h < bp->shape[1]; h++)
                    for (int64_t j = 0; j < bp->shape[2]; j++) {
                        const int64_t i0[3] = { 0, h, j };
                        fx_set(bp, i0, junk[ji]);
                        if (j >= 2) {
                            const int64_t i2[3] = { 2, h, j };
                            fx_set(bp, i2, junk[ji]);
                        }
                        if (j >= 3) {
                            const int64_t i1[3] = { 1, h, j };
                            fx_set(bp, i1, junk[ji]);
                        }
                    }
            }
            fx_check_everywhere(fc, seed);
            fx_arena_free(&a);
        }
    }
}

/* Two batches sharing a physical block (a common prefix) is legal: blocks are only read. */
static void test_shared_blocks(void)
{
    static const int64_t lens[2] = { 33, 40 };
    fx_config c = fx_default_config();
    c.form = FX_PAGED;
    c.B = 2, c.N = 2, c.D = 64, c.block_size = 16;
    c.lens = lens;
    c.q_dtype = c.kv_dtype = IFA_DTYPE_FLOAT16;
    fx_arena a = { 0 };
    fx_case *fc = fx_build(&a, 120, &c);
    const int64_t i00[2] = { 0, 0 }, i10[2] = { 1, 0 }, i01[2] = { 0, 1 }, i11[2] = { 1, 1 };
    fx_set(&fc->p.block_table, i10, gd_load(&fc->p.block_table, i00));
    fx_set(&fc->p.block_table, i11, gd_load(&fc->p.block_table, i01));
    fx_check_everywhere(fc, 1);
    fx_arena_free(&a);
}

/* Block sizes 1 and 5 (far from the original's multiples of 16), 128 beyond L, odd D, G = 7. */
static void test_sizes(void)
{
    static const int64_t bss[] = { 1, 5, 16, 128 };
    static const int64_t ds[] = { 1, 3, 40, 100, 128, 256 };
    uint64_t seed = 140;
    for (size_t bi = 0; bi < sizeof bss / sizeof bss[0]; bi++) {
        for (size_t di = 0; di < sizeof ds / sizeof ds[0]; di++) {
            for (int form = 0; form < FX_FORM_COUNT; form++) {
                fx_config c = fx_default_config();
                c.form = (fx_form)form;
                c.layout = (di % 3 == 0) ? "BSH" : (di % 3 == 1 ? "BSND" : "BNSD");
                c.cache4d = form >= FX_PAGED && strcmp(c.layout, "BNSD") == 0;
                c.q_dtype = c.kv_dtype = (form % 2) ? IFA_DTYPE_FLOAT16 : IFA_DTYPE_FLOAT32;
                c.B = 2, c.N = 7, c.KVN = 1, c.D = ds[di];
                c.block_size = bss[bi];
                c.min_len = 1, c.max_len = 45;
                c.pad = 2;
                fx_arena a = { 0 };
                fx_case *fc = fx_build(&a, seed++, &c);
                fx_check_everywhere(fc, seed);
                fx_arena_free(&a);
            }
        }
    }
    /* G = 7 with several KV heads, and the largest group sizes the heads allow. */
    static const int64_t groups[][2] = { { 21, 3 }, { 14, 2 }, { 32, 1 }, { 32, 32 }, { 8, 4 } };
    for (size_t gi = 0; gi < sizeof groups / sizeof groups[0]; gi++) {
        for (int form = 0; form < FX_FORM_COUNT; form++) {
            fx_config c = fx_default_config();
            c.form = (fx_form)form;
            c.layout = "BSH";
            c.q_dtype = IFA_DTYPE_BFLOAT16;
            c.kv_dtype = form % 2 ? IFA_DTYPE_INT8 : IFA_DTYPE_BFLOAT16;
            c.N = groups[gi][0], c.KVN = groups[gi][1], c.D = 16, c.B = 2;
            c.block_size = 16, c.min_len = 0, c.max_len = 40;
            fx_arena a = { 0 };
            fx_case *fc = fx_build(&a, seed++, &c);
            fx_check_everywhere(fc, seed);
            fx_arena_free(&a);
        }
    }
}

/* pse_shift with batch 1 (broadcast) and batch B, over every form (pos(t) differs by form). */
static void test_pse(void)
{
    uint64_t seed = 200;
    static const ifa_dtype dts[] = { IFA_DTYPE_FLOAT16, IFA_DTYPE_BFLOAT16, IFA_DTYPE_FLOAT32 };
    for (int form = 0; form < FX_FORM_COUNT; form++) {
        for (int pse = 1; pse <= 2; pse++) {
            for (size_t di = 0; di < 3; di++) {
                fx_config c = fx_default_config();
                c.form = (fx_form)form;
                c.layout = "BSND";
                c.q_dtype = c.kv_dtype = dts[di];
                c.B = 3, c.N = 4, c.KVN = 2, c.D = 16, c.block_size = 5, c.pad = 4;
                c.min_len = 0, c.max_len = 30;
                c.pse = pse;
                fx_arena a = { 0 };
                fx_case *fc = fx_build(&a, seed++, &c);
                fx_check_everywhere(fc, seed);
                fx_arena_free(&a);
            }
        }
    }
}

/* attention_mask of shape (B,S'), (B,1,S'), (B,1,1,S') in bool, int8 and uint8. */
static void test_mask_shapes_and_dtypes(void)
{
    static const ifa_dtype dts[] = { IFA_DTYPE_BOOL, IFA_DTYPE_INT8, IFA_DTYPE_UINT8 };
    uint64_t seed = 300;
    for (int rank = 2; rank <= 4; rank++) {
        for (size_t di = 0; di < 3; di++) {
            for (int form = 0; form < FX_FORM_COUNT; form++) {
                fx_config c = fx_default_config();
                c.form = (fx_form)form;
                c.layout = "BNSD";
                c.q_dtype = c.kv_dtype = IFA_DTYPE_FLOAT16;
                c.B = 3, c.N = 2, c.D = 16, c.block_size = 5, c.pad = 2;
                c.min_len = 1, c.max_len = 30;
                c.mask_rank = rank;
                c.mask_dtype = dts[di];
                c.mask_percent = 40;
                c.pse = 1;
                fx_arena a = { 0 };
                fx_case *fc = fx_build(&a, seed++, &c);
                fx_check_everywhere(fc, seed);
                fx_arena_free(&a);
            }
        }
    }
}

/* actual_seq_lengths: one value broadcast, more than B values, exactly B, absent; int32/int64. */
static void test_length_variants(void)
{
    static const ifa_dtype dts[] = { IFA_DTYPE_INT32, IFA_DTYPE_INT64 };
    uint64_t seed = 400;
    for (int mode = FX_LENS_B; mode <= FX_LENS_ABSENT; mode++) {
        for (size_t di = 0; di < 2; di++) {
            for (int form = 0; form < FX_FORM_COUNT; form++) {
                if (mode == FX_LENS_ABSENT && form != FX_CONTIG && form != FX_LIST) continue;
                fx_config c = fx_default_config();
                c.form = (fx_form)form;
                c.layout = "BSH";
                c.B = 4, c.N = 2, c.D = 16, c.block_size = 5, c.pad = 1;
                c.min_len = 0, c.max_len = 25;
                c.lens_mode = (fx_lens)mode;
                c.lens_dtype = dts[di];
                fx_arena a = { 0 };
                fx_case *fc = fx_build(&a, seed++, &c);
                fx_check_everywhere(fc, seed);
                fx_arena_free(&a);
            }
        }
    }
}

/* Non-contiguous query, KV and output views (gapped and column-major strides), and an output
 * with gaps that must stay untouched. */
static void test_strided_views(void)
{
    static const fx_strides modes[] = { FX_DENSE, FX_GAPPED, FX_REVERSED };
    uint64_t seed = 500;
    for (int form = 0; form < FX_FORM_COUNT; form++) {
        for (size_t qi = 0; qi < 3; qi++) {
            for (size_t ki = 0; ki < 3; ki++) {
                for (size_t oi = 0; oi < 3; oi++) {
                    fx_config c = fx_default_config();
                    c.form = (fx_form)form;
                    c.layout = (qi + ki + oi) % 3 == 0 ? "BSH" : ((qi + ki + oi) % 3 == 1 ? "BSND" : "BNSD");
                    c.cache4d = form >= FX_PAGED && strcmp(c.layout, "BNSD") == 0 && oi == 1;
                    c.q_dtype = qi == 2 ? IFA_DTYPE_FLOAT32 : IFA_DTYPE_FLOAT16;
                    c.kv_dtype = ki == 1 ? IFA_DTYPE_INT8 : c.q_dtype;
                    c.B = 2, c.N = 4, c.KVN = 2, c.D = 16, c.block_size = 5, c.pad = 2;
                    c.min_len = 1, c.max_len = 20;
                    c.q_strides = modes[qi];
                    c.kv_strides = modes[ki];
                    c.out_strides = modes[oi];
                    c.out_quant = (int)(seed % 3 == 0);
                    fx_arena a = { 0 };
                    fx_case *fc = fx_build(&a, seed++, &c);
                    fx_check_everywhere(fc, seed);
                    fx_arena_free(&a);
                }
            }
        }
    }
}

/* SPEC 1: an optional tensor with zero elements is absent, whatever its dtype or rank. */
static void test_zero_element_optionals_are_absent(void)
{
    uint64_t seed = 600;
    for (int form = 0; form < FX_FORM_COUNT; form++) {
        fx_config c = fx_default_config();
        c.form = (fx_form)form;
        c.q_dtype = c.kv_dtype = IFA_DTYPE_FLOAT16;
        c.B = 2, c.N = 2, c.D = 16, c.block_size = 5, c.pad = 1;
        fx_arena a = { 0 };
        fx_case *fc = fx_build(&a, seed++, &c);
        const int64_t empty1[1] = { 0 };
        const int64_t empty4[4] = { 2, 2, 1, 0 };
        const int64_t empty8[8] = { 1, 1, 1, 1, 1, 1, 1, 0 }; /* the largest rank, IFA_MAX_RANK */
        fc->p.pse_shift = fx_dense(&a, IFA_DTYPE_FLOAT16, 4, empty4);
        fc->p.attention_mask = fx_dense(&a, IFA_DTYPE_BOOL, 8, empty8);
        fc->p.quant_scale2 = fx_dense(&a, IFA_DTYPE_FLOAT32, 1, empty1);
        fc->p.quant_offset2 = fx_dense(&a, IFA_DTYPE_FLOAT32, 1, empty1);
        fc->p.antiquant_scale = fx_dense(&a, IFA_DTYPE_FLOAT16, 1, empty1);
        fc->p.antiquant_offset = fx_dense(&a, IFA_DTYPE_FLOAT16, 1, empty1);
        fc->p.dequant_scale1 = fx_dense(&a, IFA_DTYPE_FLOAT32, 1, empty1);
        if (form != FX_LEFTPAD) fc->p.kv_padding_size = fx_dense(&a, IFA_DTYPE_INT64, 1, empty1);
        if (form == FX_PAGED) {
            const int64_t bp0[3] = { 2, 2, 0 };
            fc->p.block_position = fx_dense(&a, IFA_DTYPE_INT32, 3, bp0);
        }
        CHECK(ifa_output_dtype(&fc->p) == IFA_DTYPE_FLOAT16);
        fx_check(fc);
        fx_arena_free(&a);
    }
}

/* Peaky and flat softmaxes: a large scale (one token dominates, exp underflows for the rest),
 * a tiny scale (uniform weights), and a pse that pushes scores far down. */
static void test_extreme_scores(void)
{
    static const double scales[] = { 1e-6, 30.0, 300.0 };
    uint64_t seed = 700;
    for (size_t si = 0; si < 3; si++) {
        for (int form = 0; form < FX_FORM_COUNT; form++) {
            fx_config c = fx_default_config();
            c.form = (fx_form)form;
            c.q_dtype = c.kv_dtype = IFA_DTYPE_FLOAT32;
            c.B = 2, c.N = 2, c.D = 64, c.block_size = 16, c.pad = 1;
            c.min_len = 1, c.max_len = 200;
            c.scale_value = scales[si];
            c.pse = 1;
            fx_arena a = { 0 };
            fx_case *fc = fx_build(&a, seed++, &c);
            /* Shift pse far down for half the positions of batch 0. */
            const ifa_tensor *ps = &fc->p.pse_shift;
            for (int64_t n = 0; n < 2; n++)
                for (int64_t s = 0; s < ps->shape[3]; s += 2) {
                    const int64_t idx[4] = { 0, n, 0, s };
                    fx_set(ps, idx, -1000.0);
                }
            fx_check_everywhere(fc, seed);
            fx_arena_free(&a);
        }
    }
}

/* A large batch with very different lengths, to exercise the work split across batches. */
static void test_many_batches(void)
{
    uint64_t seed = 800;
    for (int form = 0; form < FX_FORM_COUNT; form++) {
        fx_config c = fx_default_config();
        c.form = (fx_form)form;
        c.layout = "BNSD";
        c.cache4d = form >= FX_PAGED;
        c.q_dtype = c.kv_dtype = IFA_DTYPE_FLOAT16;
        c.B = 16, c.N = 4, c.KVN = 2, c.D = 32, c.block_size = 16, c.pad = 3;
        c.min_len = 0, c.max_len = 300;
        fx_arena a = { 0 };
        fx_case *fc = fx_build(&a, seed++, &c);
        fx_check_everywhere(fc, seed);
        fx_arena_free(&a);
    }
}

/* SPEC 5, last line: the cast to float16 / bfloat16 rounds to nearest even. With a zero query
 * every score is 0, so two tokens get equal weight and o is the exact mean of two V values. Two
 * neighbouring 16-bit values have a mean exactly halfway between them, so each channel is a tie
 * that only round-half-to-even settles (truncation or half-away-from-zero give the other one). */
static void test_output_cast_ties_to_even(void)
{
    static const ifa_dtype dts[] = { IFA_DTYPE_FLOAT16, IFA_DTYPE_BFLOAT16 };
    for (size_t di = 0; di < 2; di++) {
        for (int ip = 0; ip <= 1; ip++) {
            fx_config c = fx_default_config();
            c.q_dtype = c.kv_dtype = dts[di];
            c.B = 1, c.N = 1, c.D = 64, c.min_len = c.max_len = 2, c.extra_rows = 0;
            c.inner_precise = ip;
            fx_arena a = { 0 };
            fx_case *fc = fx_build(&a, 1234 + di * 2 + (uint64_t)ip, &c);
            rng r = rng_seed(99 + di);
            for (int64_t d = 0; d < c.D; d++) {
                const int64_t qi[3] = { 0, 0, d };
                fx_set(&fc->p.query, qi, 0.0);
                /* A normal value in [0.5, 2) whose mantissa is not all ones, and its successor. */
                const int mant_bits = dts[di] == IFA_DTYPE_FLOAT16 ? 10 : 7;
                const int bias = dts[di] == IFA_DTYPE_FLOAT16 ? 15 : 127;
                const uint16_t sign = rng_int(&r, 0, 1) ? 0x8000u : 0u;
                const uint16_t e = (uint16_t)(bias - 1 + rng_int(&r, 0, 1));
                const uint16_t m = (uint16_t)rng_int(&r, 0, (1 << mant_bits) - 2);
                const uint16_t lo = (uint16_t)(sign | (e << mant_bits) | m);
                const uint16_t hi = (uint16_t)(lo + 1);
                const int64_t v0[3] = { 0, 0, d }, v1[3] = { 0, 1, d };
                memcpy((uint16_t *)fc->value[0].data + v0[1] * fc->value[0].strides[1] + d, &lo, 2);
                memcpy((uint16_t *)fc->value[0].data + v1[1] * fc->value[0].strides[1] + d, &hi, 2);
            }
            golden_out g;
            if (run_once(fc, &g) == 0) {
                for (int64_t d = 0; d < c.D; d++) {
                    const double got = out_at(fc, 0, 0, d);
                    CHECK_MSG(got == g.y[d], "%s ip=%d channel %lld: mean %.10g was cast to %.10g, round-half-even gives %.10g",
                              ifa_dtype_name(dts[di]), ip, (long long)d, g.o[d], got, g.y[d]);
                }
                golden_free(&g);
            }
            fx_arena_free(&a);
        }
    }
}

int main(int argc, char **argv)
{
    static const tst_case cases[] = {
        TST_CASE(test_zero_length),
        TST_CASE(test_left_padding_start_negative),
        TST_CASE(test_left_padding_length_beyond_stored),
        TST_CASE(test_left_padding_huge_pad),
        TST_CASE(test_zero_strides),
        TST_CASE(test_head_all_unselected),
        TST_CASE(test_fully_masked_batch),
        TST_CASE(test_block_position_holes),
        TST_CASE(test_garbage_in_unused_entries),
        TST_CASE(test_shared_blocks),
        TST_CASE(test_sizes),
        TST_CASE(test_pse),
        TST_CASE(test_mask_shapes_and_dtypes),
        TST_CASE(test_length_variants),
        TST_CASE(test_strided_views),
        TST_CASE(test_zero_element_optionals_are_absent),
        TST_CASE(test_extreme_scores),
        TST_CASE(test_many_batches),
        TST_CASE(test_output_cast_ties_to_even),
    };
    return tst_main(argc, argv, cases, sizeof cases / sizeof cases[0]);
}
