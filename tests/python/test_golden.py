"""Self-checks of the float64 golden (golden.py) on hand-computed cases and on re-encodings of the
same logical KV in different cache forms.  These tests do not use custom_ops."""

import math

import numpy as np
import pytest

from cases import SENTINEL, f32_as_u64, make_case
from golden import golden_ifa, quantize_int8


def _simple(L=3, D=4, N=1, seed=0):
    rng = np.random.default_rng(seed)
    q = rng.uniform(-2, 2, (1, 1, N * D)).astype(np.float32)
    k = rng.uniform(-2, 2, (1, L, N * D)).astype(np.float32)
    v = rng.uniform(-2, 2, (1, L, N * D)).astype(np.float32)
    return q, k, v


def test_one_token_gives_v():
    q, k, v = _simple(L=1, D=8, N=2)
    g = golden_ifa(q, k, v, num_heads=2, scale_value=0.3)
    np.testing.assert_array_equal(g.out, v.astype(np.float64))


def test_equal_scores_give_mean():
    q, k, v = _simple(L=2, D=4)
    q[:] = 0
    g = golden_ifa(q, k, v, num_heads=1)
    np.testing.assert_allclose(g.out[0, 0], v[0].astype(np.float64).mean(0), rtol=1e-15)


def test_two_tokens_hand_computed():
    q = np.array([[[1.0, 0.0]]], np.float32)
    k = np.array([[[1.0, 0.0], [0.0, 1.0]]], np.float32)
    v = np.array([[[1.0, 2.0], [3.0, 4.0]]], np.float32)
    g = golden_ifa(q, k, v, num_heads=1, scale_value=2.0)
    w = math.exp(2.0) / (math.exp(2.0) + 1.0)
    np.testing.assert_allclose(g.out[0, 0], [w * 1 + (1 - w) * 3, w * 2 + (1 - w) * 4], rtol=1e-14)
    # pse on token 1 of +2 makes both scores equal -> mean
    pse = np.array([0.0, 2.0], np.float32).reshape(1, 1, 1, 2)
    g = golden_ifa(q, k, v, pse_shift=pse, num_heads=1, scale_value=2.0)
    np.testing.assert_allclose(g.out[0, 0], [2.0, 3.0], rtol=1e-14)
    # mask token 0 -> V of token 1; the mask replaces the score (pse does not survive it)
    mask = np.array([[True, False]])
    g = golden_ifa(q, k, v, pse_shift=pse, attention_mask=mask, num_heads=1, scale_value=2.0)
    np.testing.assert_allclose(g.out[0, 0], [3.0, 4.0], rtol=1e-14)
    # all masked -> plain mean
    g = golden_ifa(q, k, v, attention_mask=np.array([[1, 1]], np.uint8), num_heads=1, scale_value=2.0)
    np.testing.assert_allclose(g.out[0, 0], [2.0, 3.0], rtol=1e-14)


def test_zero_length_gives_zero_and_quant_zero():
    q, k, v = _simple(L=3, D=4)
    g = golden_ifa(q, k, v, actual_seq_lengths=[0], num_heads=1)
    assert np.all(g.out == 0)
    g = golden_ifa(q, k, v, actual_seq_lengths=[0], num_heads=1,
                   quant_scale2=np.array([3.0], np.float32), quant_offset2=np.array([2.5], np.float32))
    assert g.out.dtype == np.int8 and np.all(g.out == 2)  # rint(2.5) = 2 (half even)


def test_quantize_half_even_and_saturation():
    x = np.array([0.5, 1.5, 2.5, -0.5, -1.5, 200.0, -200.0, 127.5, -128.5])
    np.testing.assert_array_equal(quantize_int8(x, 1.0, 0.0), [0, 2, 2, 0, -2, 127, -128, 127, -128])


def test_gqa_head_mapping():
    rng = np.random.default_rng(1)
    B, N, KVN, D, L = 1, 4, 2, 4, 5
    q = rng.uniform(-2, 2, (B, N, 1, D))
    k = rng.uniform(-2, 2, (B, KVN, L, D))
    v = rng.uniform(-2, 2, (B, KVN, L, D))
    g = golden_ifa(q, k, v, num_heads=N, key_num_heads=KVN, layout="BNSD")
    for n in range(N):
        h = n // 2
        s = k[0, h] @ q[0, n, 0]
        p = np.exp(s - s.max())
        np.testing.assert_allclose(g.out[0, n, 0], p @ v[0, h] / p.sum(), rtol=1e-13)


def _to_paged(c, bs, four=False, seed=0):
    """Re-encode a contiguous BNSD case's KV as a paged cache (independent of the builder)."""
    rng = np.random.default_rng(seed)
    k, v = c.inputs["key_list"], c.inputs["value_list"]
    B, KVN, S, D = k.shape
    M = -(-S // bs)
    nb = B * M + 2
    perm = rng.permutation(nb)
    table = perm[:B * M].reshape(B, M).astype(np.int32)
    kc = np.zeros((nb, KVN, bs, D), k.dtype)
    vc = np.zeros_like(kc)
    for b in range(B):
        for t in range(S):
            kc[table[b, t // bs], :, t % bs] = k[b, :, t]
            vc[table[b, t // bs], :, t % bs] = v[b, :, t]
    if not four:
        kc = kc.transpose(0, 2, 1, 3).reshape(nb, bs, KVN * D)
        vc = vc.transpose(0, 2, 1, 3).reshape(nb, bs, KVN * D)
    return kc, vc, table


@pytest.mark.parametrize("four", [False, True])
@pytest.mark.parametrize("bs", [1, 3, 16])
def test_paged_equals_contiguous(four, bs):
    rng = np.random.default_rng(bs)
    c = make_case(rng, layout="BNSD", form="contig", qdtype="float32", B=3, KVN=2, G=2, D=8,
                  lens=[5, 0, 17], pse="B", mask="(B,S)")
    g0 = c.golden()
    kc, vc, table = _to_paged(c, bs, four)
    kw = c.kwargs("numpy", key_list=kc, value_list=vc, block_table=table, block_size=bs)
    g1 = golden_ifa(**kw)
    np.testing.assert_allclose(g1.out, g0.out, rtol=1e-13, atol=1e-15)
    # block_position selecting every slot in order is the same thing
    M = table.shape[1]
    bp = np.broadcast_to(np.arange(M, dtype=np.int32), (3, 2, M)).copy()
    g2 = golden_ifa(**kw, block_position=bp)
    np.testing.assert_allclose(g2.out, g0.out, rtol=1e-13, atol=1e-15)
    # unselecting slot 0 of head 1 equals dropping those tokens (compact positions kept: pos(t)=t)
    bp[:, 1, 0] = SENTINEL
    g3 = golden_ifa(**kw, block_position=bp)
    np.testing.assert_allclose(g3.out[:, :2], g0.out[:, :2], rtol=1e-13, atol=1e-15)
    assert list(g3.token_counts[:, 1]) == [max(0, L - bs) if L else 0 for L in (5, 0, 17)]


def test_left_padding_equals_slice():
    rng = np.random.default_rng(3)
    c = make_case(rng, layout="BSH", form="contig", qdtype="float32", B=2, KVN=1, D=8, lens=[4, 4])
    k, v = c.inputs["key_list"], c.inputs["value_list"]
    S = k.shape[1]
    kw = c.kwargs("numpy", actual_seq_lengths=[3, S], kv_padding_size=np.array([1], np.int64))
    g = golden_ifa(**kw)
    ref = golden_ifa(**c.kwargs("numpy", key_list=k[:, S - 4:S - 1].copy(),
                                value_list=v[:, S - 4:S - 1].copy(), actual_seq_lengths=[3, 3]))
    np.testing.assert_allclose(g.out[0], ref.out[0], rtol=1e-14)
    assert np.all(g.out[1] == 0)  # start = S - 1 - S < 0


def test_full_quant_u64_equals_f32_and_by_hand():
    rng = np.random.default_rng(4)
    c = make_case(rng, layout="BSH", form="contig", qdtype="int8", B=1, KVN=1, D=4, lens=[3])
    g32 = c.golden()
    kw = c.kwargs("numpy")
    for n in ("dequant_scale1", "quant_scale1", "dequant_scale2"):
        kw[n] = f32_as_u64(float(kw[n][0]))
        kw[n][0] |= np.uint64(0)  # high bits zero here; low bits carry the float
    g64 = golden_ifa(**kw)
    np.testing.assert_array_equal(g32.out, g64.out)
    q = kw["query"].astype(np.float64).reshape(4)
    k = kw["key_list"].astype(np.float64)[0, :3]
    v = kw["value_list"].astype(np.float64)[0, :3]
    ds1, qs1, ds2 = (float(c.inputs[n][0]) for n in ("dequant_scale1", "quant_scale1", "dequant_scale2"))
    s = c.inputs["scale_value"] * ds1 * (k @ q)
    p = np.exp(s - s.max())
    p8 = np.clip(np.rint(p * qs1), -128, 127)
    np.testing.assert_allclose(g32.out.reshape(4), ds2 * (p8 @ v) / p.sum(), rtol=1e-14)


def test_antiquant_shapes_agree():
    rng = np.random.default_rng(5)
    c = make_case(rng, layout="BSND", form="contig", qdtype="float32", kvdtype="int8", B=2, KVN=2,
                  D=8, lens=[6, 2], antiquant="ch_flat")
    g = c.golden()
    sc = c.inputs["antiquant_scale"]
    off = c.inputs["antiquant_offset"]
    for shp in [(2, 2, 8), (2, 2, 1, 8), (2, 1, 2, 8)]:
        g2 = golden_ifa(**c.kwargs("numpy", antiquant_scale=sc.reshape(shp),
                                   antiquant_offset=off.reshape(shp)))
        np.testing.assert_array_equal(g.out, g2.out)
    # per-token with constant rows equals per-tensor
    kw = c.kwargs("numpy", antiquant_scale=np.array([0.01, 0.02], np.float32),
                  antiquant_offset=np.array([1.0, -2.0], np.float32))
    gt = golden_ifa(**kw)
    tok_s = np.stack([np.full((2, 7), 0.01, np.float32), np.full((2, 7), 0.02, np.float32)])
    tok_o = np.stack([np.full((2, 7), 1.0, np.float32), np.full((2, 7), -2.0, np.float32)])
    gk = golden_ifa(**c.kwargs("numpy", antiquant_scale=tok_s, antiquant_offset=tok_o),
                    antiquant_mode=1)
    np.testing.assert_allclose(gk.out, gt.out, rtol=1e-14)
