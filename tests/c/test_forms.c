/*
 * test_forms.c - every KV form of SPEC 3/4 against the golden model.
 *
 * Each test sweeps one form over the layouts it allows, the dtype pairs of SPEC 11 (float16,
 * bfloat16 and float32 caches; int8 caches with antiquant), both inner_precise modes and a few
 * seeds. Each seed draws the sizes that stress tile edges: G in {1, 2, 4, 7}, D in {1, 16, 40,
 * 64, 100, 128}, block_size in {1, 5, 16, 128}, B from 1 to 4 with different lengths, and lengths
 * from 0 up. Every case runs on every ISA the machine offers and with 1 to 3 threads, so the
 * scalar and the vector kernels, and the split of the KV length across threads, all meet the same
 * golden answer.
 */
#include <stdio.h>
#include <string.h>

#include "fixture.h"
#include "testing.h"

typedef struct dtype_pair {
    ifa_dtype q, kv;
} dtype_pair;

static const dtype_pair k_pairs[] = {
    { IFA_DTYPE_FLOAT32, IFA_DTYPE_FLOAT32 }, { IFA_DTYPE_FLOAT16, IFA_DTYPE_FLOAT16 },
    { IFA_DTYPE_BFLOAT16, IFA_DTYPE_BFLOAT16 }, { IFA_DTYPE_FLOAT16, IFA_DTYPE_INT8 },
    { IFA_DTYPE_BFLOAT16, IFA_DTYPE_INT8 },     { IFA_DTYPE_FLOAT32, IFA_DTYPE_INT8 },
};

static const char *const k_layouts[] = { "BSH", "BSND", "BNSD" };

/* Draws the sizes of one case from the seed and runs it. */
static void random_case(fx_form form, const char *layout, dtype_pair dt, int ip, int cache4d, uint64_t seed)
{
    rng r = rng_seed(seed ^ 0xF0F0F0F0ull);
    fx_config c = fx_default_config();
    static const int64_t gs[] = { 1, 2, 4, 7 };
    static const int64_t ds[] = { 1, 16, 40, 64, 100, 128 };
    static const int64_t bss[] = { 1, 5, 16, 128 };
    static const int64_t lens_hi[] = { 1, 9, 40, 130, 260 };
    c.form = form;
    c.layout = layout;
    c.q_dtype = dt.q;
    c.kv_dtype = dt.kv;
    c.inner_precise = ip;
    c.cache4d = cache4d;
    const int64_t G = RNG_PICK(&r, gs);
    const int64_t KVN = rng_int(&r, 1, 2);
    c.N = G * KVN;
    c.KVN = (G == 1 && rng_int(&r, 0, 1)) ? 0 : KVN; /* 0 means "same as N", right when G is 1 */
    c.D = RNG_PICK(&r, ds);
    c.B = rng_int(&r, 1, 4);
    c.block_size = RNG_PICK(&r, bss);
    c.min_len = 0;
    c.max_len = RNG_PICK(&r, lens_hi);
    /* Keep the golden model's work bounded so the whole suite stays fast under sanitizers. */
    while (c.max_len > 8 && c.B * c.N * c.D * c.max_len > 1500000) c.max_len /= 2;
    c.lens_dtype = rng_int(&r, 0, 1) ? IFA_DTYPE_INT32 : IFA_DTYPE_INT64;
    if (form == FX_LEFTPAD) c.pad = rng_int(&r, 0, 4);
    if (dt.kv == IFA_DTYPE_INT8) {
        c.antiquant = (fx_antiquant)rng_int(&r, FX_AQ_TENSOR, FX_AQ_TOKEN);
        c.antiquant_offset = (int)rng_int(&r, 0, 1);
    }
    /* Now and then the optional inputs join in, so forms are also seen with pse and masks. */
    if (rng_int(&r, 0, 3) == 0) c.pse = (int)rng_int(&r, 1, 2);
    if (rng_int(&r, 0, 3) == 0) c.mask_rank = (int)rng_int(&r, 2, 4);
    if (rng_int(&r, 0, 5) == 0) {
        c.out_quant = (int)rng_int(&r, 1, 2);
        c.out_quant_shape = (int)rng_int(&r, 0, 7);
        c.out_quant_offset = (int)rng_int(&r, 0, 1);
    }
    if (rng_int(&r, 0, 7) == 0) c.kv_strides = (fx_strides)rng_int(&r, 1, 2);
    if (rng_int(&r, 0, 7) == 0) c.out_strides = (fx_strides)rng_int(&r, 1, 2);
    fx_arena a = { 0 };
    fx_case *fc = fx_build(&a, seed, &c);
    fx_check_everywhere(fc, seed);
    fx_arena_free(&a);
}

static void sweep(fx_form form, int cache4d, int seeds)
{
    const long calls = fx_calls();
    uint64_t seed = 1000u * (uint64_t)(form + 1) + (cache4d ? 500u : 0u);
    const int only_bnsd = cache4d;
    for (size_t li = 0; li < sizeof k_layouts / sizeof k_layouts[0]; li++) {
        if (only_bnsd && strcmp(k_layouts[li], "BNSD") != 0) continue;
        const int reps = only_bnsd ? seeds * 2 : seeds;
        for (size_t pi = 0; pi < sizeof k_pairs / sizeof k_pairs[0]; pi++) {
            for (int ip = 0; ip <= 1; ip++) {
                for (int s = 0; s < reps; s++) {
                    random_case(form, k_layouts[li], k_pairs[pi], ip, cache4d, seed++);
                }
            }
        }
    }
    tst_note("%ld library calls checked", fx_calls() - calls);
}

/* Not a check: the log says which kernels and how many threads the sweeps below ran with. */
static void test_machine(void)
{
    tst_note("ISAs: %s (current %s), %d threads by default", ifa_isa_available(), ifa_isa_name(),
             ifa_get_num_threads());
}

static void test_contiguous(void) { sweep(FX_CONTIG, 0, 10); }
static void test_list(void) { sweep(FX_LIST, 0, 10); }
static void test_left_padding(void) { sweep(FX_LEFTPAD, 0, 10); }
static void test_paged_3d(void) { sweep(FX_PAGED, 0, 10); }
static void test_paged_4d_bnsd(void) { sweep(FX_PAGED, 1, 10); }
static void test_paged_position_3d(void) { sweep(FX_PAGED_POS, 0, 10); }
static void test_paged_position_4d_bnsd(void) { sweep(FX_PAGED_POS, 1, 10); }

/* Every form with every length 0: the output is all zeros (SPEC 5). */
static void test_all_lengths_zero(void)
{
    uint64_t seed = 77;
    for (int form = 0; form < FX_FORM_COUNT; form++) {
        for (size_t li = 0; li < 3; li++) {
            for (size_t pi = 0; pi < sizeof k_pairs / sizeof k_pairs[0]; pi++) {
                fx_config c = fx_default_config();
                c.form = (fx_form)form;
                c.layout = k_layouts[li];
                c.q_dtype = k_pairs[pi].q;
                c.kv_dtype = k_pairs[pi].kv;
                c.B = 3, c.N = 4, c.KVN = 2, c.D = 40;
                c.min_len = c.max_len = 0;
                c.block_size = 5;
                c.extra_rows = 2; /* stored rows exist, but none of them is attended */
                fx_arena a = { 0 };
                fx_case *fc = fx_build(&a, seed++, &c);
                golden_out g;
                if (golden_compute(&fc->p, &g) == 0) {
                    for (int64_t i = 0; i < g.B * g.N * g.D; i++) CHECK(g.o[i] == 0.0);
                    golden_free(&g);
                }
                fx_check_everywhere(fc, seed);
                fx_arena_free(&a);
            }
        }
    }
}

/* One long sequence, so that an implementation that splits the KV length across threads has to
 * merge partial softmax states (flash-decoding); compared for 1, 2 and 4 threads. The paged forms
 * also run in a (blocks, KVN, bs, D) cache of 200-token pages: there a tile visits each page's
 * windows head after head (attend.c, head_stretch_tokens), its chunks start and end inside
 * pages, and 200 is no multiple of a window. */
static void test_long_sequence_split(void)
{
    static const dtype_pair pairs[] = { { IFA_DTYPE_FLOAT32, IFA_DTYPE_FLOAT32 },
                                        { IFA_DTYPE_FLOAT16, IFA_DTYPE_FLOAT16 },
                                        { IFA_DTYPE_BFLOAT16, IFA_DTYPE_INT8 } };
    uint64_t seed = 9001;
    for (size_t pi = 0; pi < 3; pi++) {
        for (int variant = 0; variant < FX_FORM_COUNT + 2; variant++) {
            const int form = variant < FX_FORM_COUNT ? variant : variant - FX_FORM_COUNT + FX_PAGED;
            const int big_pages = variant >= FX_FORM_COUNT;
            fx_config c = fx_default_config();
            c.form = (fx_form)form;
            c.layout = "BNSD";
            c.q_dtype = pairs[pi].q;
            c.kv_dtype = pairs[pi].kv;
            c.B = 1, c.N = 2 * (big_pages ? 3 : 1), c.KVN = big_pages ? 3 : 1, c.D = 64;
            c.min_len = c.max_len = 3000 + (int64_t)pi * 7;
            c.block_size = big_pages ? 200 : 16;
            c.cache4d = big_pages;
            c.hole_percent = 10;
            c.pad = 3;
            c.mask_rank = 2;
            c.mask_percent = 5;
            for (int threads = 1; threads <= 4; threads *= 2) {
                fx_arena a = { 0 };
                fx_case *fc = fx_build(&a, seed, &c);
                CHECK_OK(ifa_set_num_threads(threads));
                fx_check(fc);
                fx_arena_free(&a);
            }
            seed++;
        }
    }
}

/* Sizes at the edges of vector widths and KV chunks (XNNPACK style: equal to, just below and
 * just above a tile): D around 8, 16, 32 and 64 lanes, lengths around 64 and 128 rows. */
static void test_tile_edges(void)
{
    static const int64_t ds[] = { 7, 8, 9, 15, 16, 17, 31, 32, 33, 63, 64, 65 };
    static const int64_t lens[] = { 63, 64, 65, 127, 128, 129 };
    uint64_t seed = 20000;
    for (size_t di = 0; di < sizeof ds / sizeof ds[0]; di++) {
        for (size_t li = 0; li < sizeof lens / sizeof lens[0]; li++) {
            const dtype_pair dt = k_pairs[(di + li) % (sizeof k_pairs / sizeof k_pairs[0])];
            fx_config c = fx_default_config();
            c.form = (fx_form)((di + 2 * li) % FX_FORM_COUNT);
            c.layout = k_layouts[li % 3];
            c.cache4d = c.form >= FX_PAGED && li % 3 == 2;
            c.q_dtype = dt.q;
            c.kv_dtype = dt.kv;
            c.B = 2, c.N = 4, c.KVN = (int64_t)(1 + di % 2), c.D = ds[di];
            c.min_len = c.max_len = lens[li];
            c.block_size = li % 2 ? 64 : 16;
            c.inner_precise = (int)(di % 2);
            c.antiquant = (fx_antiquant)(FX_AQ_TENSOR + (int)(di % 6));
            c.antiquant_offset = (int)(li % 2);
            c.pad = 1;
            c.hole_percent = 10;
            fx_arena a = { 0 };
            fx_case *fc = fx_build(&a, seed++, &c);
            fx_check_everywhere(fc, seed);
            fx_arena_free(&a);
        }
    }
}

int main(int argc, char **argv)
{
    static const tst_case cases[] = {
        TST_CASE(test_machine),
        TST_CASE(test_contiguous),
        TST_CASE(test_list),
        TST_CASE(test_left_padding),
        TST_CASE(test_paged_3d),
        TST_CASE(test_paged_4d_bnsd),
        TST_CASE(test_paged_position_3d),
        TST_CASE(test_paged_position_4d_bnsd),
        TST_CASE(test_all_lengths_zero),
        TST_CASE(test_long_sequence_split),
        TST_CASE(test_tile_edges),
    };
    return tst_main(argc, argv, cases, sizeof cases / sizeof cases[0]);
}
