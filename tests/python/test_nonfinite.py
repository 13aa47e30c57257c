"""NaN and infinity in the inputs: the behaviour decided in docs/reliability.md, tested.

The rule: the math of SPEC.md 5 runs as written in IEEE float arithmetic, and non-finite values
propagate through it; nothing is sanitised, and nothing crashes or hangs. Concretely:

- NaN in the query of head n: head n's output is NaN; other heads are unaffected.
- NaN (or +inf that makes a score +inf) in a K row of a used, unmasked token of KV head h: the
  outputs of the G query heads of h are NaN. A K row that makes a score -inf removes that token.
- A masked token's score is replaced by -1e12 (SPEC 5), so a NaN in its K row has no effect.
- NaN / inf in a V row of a used token reaches the output element d of the heads of h, masked
  or not (its weight is 0 and 0 * NaN = NaN, 0 * inf = NaN).
- Rows the operator never reads (past L, unselected slots, left padding, unreferenced pages)
  may hold anything: they never affect the result.
- pse_shift -inf removes the token (weight 0); every token of a head at -inf gives NaN, as in
  torch.softmax; +inf or NaN in pse gives NaN for that head.
- int8 output: NaN quantises to 0, +inf to 127, -inf to -128.
- A non-finite scale_value (or one beyond float32's range) gives NaN outputs.
"""

import math

import numpy as np
import pytest

torch = pytest.importorskip("torch", reason="uses torch tensors")

NAN, INF = float("nan"), float("inf")
SENTINEL = 0x7FFFFFFF


def _op():
    import custom_ops

    return custom_ops.incre_flash_attention_v5


def _setup(N=4, KVN=2, D=16, S=40, seed=0, dtype=torch.float32):
    g = torch.Generator().manual_seed(seed)
    q = torch.randn(1, N, 1, D, generator=g).to(dtype)
    k = torch.randn(1, KVN, S, D, generator=g).to(dtype)
    v = torch.randn(1, KVN, S, D, generator=g).to(dtype)
    return q, k, v


def _run(q, k, v, **kw):
    kw.setdefault("num_heads", q.shape[1])
    kw.setdefault("key_num_heads", k.shape[1])
    kw.setdefault("layout", "BNSD")
    return _op()(q, [k], [v], **kw)


def _heads_nan(out):
    """Per query head: True if every element is NaN, False if all are finite, else None."""
    res = []
    for n in range(out.shape[1]):
        h = out[0, n].float()
        res.append(True if bool(h.isnan().all()) else False if bool(h.isfinite().all()) else None)
    return res


@pytest.fixture(autouse=True)
def _every_isa():
    """Runs each test under the selected ISA; the ISA and thread settings are restored after."""
    import custom_ops

    isa, threads = custom_ops.isa(), custom_ops.get_num_threads()
    yield
    custom_ops.set_isa(isa)
    custom_ops.set_num_threads(threads)


def _isas():
    import custom_ops

    return list(custom_ops.isa_available())


@pytest.mark.parametrize("D,at", [(16, 3), (13, 0)])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
def test_nan_in_query_poisons_only_its_head(dtype, D, at):
    """D = 13 with the NaN at element 0: a qk tail that read one element past head 0's 13 would
    meet it (a zero K lane times NaN is NaN)."""
    import custom_ops

    for isa in _isas():
        custom_ops.set_isa(isa)
        q, k, v = _setup(dtype=dtype, D=D)
        base = _run(q, k, v)
        q[0, 1, 0, at] = NAN
        out = _run(q, k, v)
        assert _heads_nan(out) == [False, True, False, False], isa
        assert torch.equal(out[0, [0, 2, 3]], base[0, [0, 2, 3]]), isa


@pytest.mark.parametrize("value", [NAN, INF, -INF])
def test_nonfinite_query_with_int8_kv_same_at_both_precisions(value):
    """int8 KV at inner_precise = 1 scores through an int16 quantisation of the query; a head whose
    query is not finite must keep the float path, so it gives what inner_precise = 0 gives (an
    int16 quantisation of an infinite query would turn every score into 0 * inf = NaN)."""
    import custom_ops

    for isa in _isas():
        custom_ops.set_isa(isa)
        q, k, v = _setup(dtype=torch.float16)
        g = torch.Generator().manual_seed(5)
        k8 = torch.randint(-128, 128, k.shape, generator=g, dtype=torch.int8)
        v8 = torch.randint(-128, 128, v.shape, generator=g, dtype=torch.int8)
        aq = dict(antiquant_scale=torch.full((2, 32), 0.01, dtype=torch.float16))
        q[0, 2, 0, 5] = value
        outs = [_run(q, k8, v8, inner_precise=ip, **aq).float() for ip in (0, 1)]
        assert torch.equal(outs[0][0, 2].isnan(), outs[1][0, 2].isnan()), isa
        fin = outs[0][0, 2].isfinite()
        assert torch.equal(outs[0][0, 2][fin], outs[1][0, 2][fin]), isa
        for n in (0, 1, 3):
            assert bool(outs[1][0, n].isfinite().all()), (isa, n)
            assert torch.allclose(outs[0][0, n], outs[1][0, n], atol=2e-3, rtol=2e-3), (isa, n)


@pytest.mark.parametrize("token", [0, 17, 39])
def test_nan_in_key_poisons_the_heads_of_its_kv_head(token):
    import custom_ops

    for isa in _isas():
        custom_ops.set_isa(isa)
        q, k, v = _setup()
        base = _run(q, k, v)
        k[0, 1, token, 5] = NAN  # KV head 1 serves query heads 2 and 3 (G = 2)
        out = _run(q, k, v)
        assert _heads_nan(out) == [False, False, True, True], isa
        assert torch.equal(out[0, :2], base[0, :2]), isa


def test_nan_in_key_of_masked_token_has_no_effect():
    q, k, v = _setup()
    mask = torch.zeros(1, 40, dtype=torch.bool)
    mask[0, 7] = True
    base = _run(q, k, v, attention_mask=mask)
    k[0, :, 7, :] = NAN
    out = _run(q, k, v, attention_mask=mask)
    assert torch.equal(out, base)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("S", [40, 41])
def test_nonfinite_value_reaches_the_output_element(dtype, S):
    """bfloat16 at inner_precise 1 takes the paired-row P.V (kernels.h): an odd S leaves a row
    that pairs with zeros, which must not turn an infinity into NaN."""
    q, k, v = _setup(S=S, dtype=dtype)
    v[0, 0, 9, 2] = NAN
    v[0, 1, S - 1, 4] = INF  # the last row: the unpaired one when S is odd
    out = _run(q, k, v)
    assert bool(out[0, :2, 0, 2].isnan().all())
    assert bool(torch.isposinf(out[0, 2:, 0, 4]).all())
    finite = out.clone()
    finite[0, :2, 0, 2] = 0
    finite[0, 2:, 0, 4] = 0
    assert bool(finite.isfinite().all())


def test_nan_value_of_masked_token_still_propagates():
    """0 * NaN = NaN: the decided behaviour, written down rather than papered over."""
    q, k, v = _setup()
    mask = torch.zeros(1, 40, dtype=torch.bool)
    mask[0, 7] = True
    v[0, 0, 7, 1] = NAN
    out = _run(q, k, v, attention_mask=mask)
    assert bool(out[0, :2, 0, 1].isnan().all())
    assert bool(out[0, 2:].isfinite().all())


def test_unread_rows_never_matter():
    """NaN in every row the operator must not read: past L, in left padding, in unselected slots
    and in pages no table entry used for a length reaches."""
    q, k, v = _setup(S=40)
    # Contiguous: L = 30, rows 30.. poisoned.
    kk, vv = k.clone(), v.clone()
    kk[:, :, 30:] = NAN
    vv[:, :, 30:] = INF
    a = _run(q, kk, vv, actual_seq_lengths=[30])
    b = _run(q, k[:, :, :30].contiguous(), v[:, :, :30].contiguous())
    assert torch.equal(a, b)
    # Left padding: rows [40 - 3 - 20, 40 - 3) are valid, the rest poisoned.
    kk, vv = k.clone(), v.clone()
    kk[:, :, :17] = NAN
    kk[:, :, 37:] = NAN
    vv[:, :, :17] = NAN
    vv[:, :, 37:] = NAN
    a = _run(q, kk, vv, actual_seq_lengths=[20], kv_padding_size=torch.tensor([3]))
    b = _run(q, k[:, :, 17:37].contiguous(), v[:, :, 17:37].contiguous())
    assert torch.allclose(a, b, atol=1e-6, rtol=1e-6)
    # Paged + block_position: head 0 selects pages 0 and 2, head 1 page 1; pages 3.. poisoned.
    bs, KVN, D = 8, 2, 16
    cache_k = torch.randn(6, bs, KVN * D)
    cache_v = torch.randn(6, bs, KVN * D)
    cache_k[3:] = NAN
    cache_v[3:] = NAN
    table = torch.tensor([[0, 1, 2, 3, 4, 5]], dtype=torch.int32)
    pos = torch.full((1, KVN, 4), SENTINEL, dtype=torch.int32)
    pos[0, 0, :2] = torch.tensor([0, 2])
    pos[0, 1, 0] = 1
    pos[0, 1, 2:] = torch.tensor([-5, 99])  # past ceil(L/bs) = 2 slots: never read
    out = _op()(q, [cache_k], [cache_v], None, None, [2 * bs], block_table=table,
                block_position=pos, num_heads=4, key_num_heads=KVN, layout="BNSD", block_size=bs)
    assert bool(out.isfinite().all())


@pytest.mark.parametrize("pos", [0, 5, 39])
def test_pse_minus_inf_removes_the_token(pos):
    import custom_ops

    for isa in _isas():
        custom_ops.set_isa(isa)
        q, k, v = _setup()
        pse = torch.zeros(1, 4, 1, 40)
        pse[..., pos] = -INF
        a = _run(q, k, v, pse_shift=pse)
        keep = [t for t in range(40) if t != pos]
        b = _run(q, k[:, :, keep].contiguous(), v[:, :, keep].contiguous())
        assert torch.allclose(a, b, atol=1e-6, rtol=1e-5), isa


def test_pse_all_minus_inf_gives_nan_for_that_head():
    q, k, v = _setup()
    pse = torch.zeros(1, 4, 1, 40)
    pse[0, 2] = -INF
    out = _run(q, k, v, pse_shift=pse)
    assert _heads_nan(out) == [False, False, True, False]


@pytest.mark.parametrize("threads", [1, 2])
def test_pse_minus_inf_on_a_long_prefix_removes_it(threads):
    import custom_ops

    custom_ops.set_num_threads(threads)
    q, k, v = _setup(N=2, KVN=2, D=32, S=4096)
    pse = torch.zeros(1, 2, 1, 4096)
    pse[..., :2048] = -INF
    a = _run(q, k, v, pse_shift=pse)
    b = _run(q, k[:, :, 2048:].contiguous(), v[:, :, 2048:].contiguous())
    assert torch.allclose(a, b, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize("where", [100, 3000, 6000, 8000])
def test_nonfinite_in_one_chunk_of_a_split_call(where, threads):
    """One KV head, one batch, 8K tokens: with two threads the tokens are cut into chunks whose
    softmax states are merged (split-KV). A NaN key, a +inf pse, or one token left by a -inf pse,
    in any chunk, gives what it gives in one pass: the merge keeps NaN and ignores empty chunks."""
    import custom_ops

    custom_ops.set_num_threads(threads)
    for isa in _isas():
        custom_ops.set_isa(isa)
        q, k, v = _setup(N=2, KVN=1, D=64, S=8192, seed=where)
        k_nan = k.clone()
        k_nan[0, 0, where, 3] = NAN
        assert _heads_nan(_run(q, k_nan, v, scale_value=0.125)) == [True, True], isa
        pse = torch.zeros(1, 2, 1, 8192)
        pse[0, 1, 0, where] = INF
        assert _heads_nan(_run(q, k, v, pse_shift=pse, scale_value=0.125)) == [False, True], isa
        pse = torch.full((1, 2, 1, 8192), -INF)
        pse[..., where] = 0.0
        out = _run(q, k, v, pse_shift=pse, scale_value=0.125)
        assert torch.allclose(out[0, :, 0], v[0, 0, where].expand(2, 64), atol=1e-6), isa
        # Every token of head 0 at -inf: NaN (it saw tokens), however the chunks fall.
        pse = torch.zeros(1, 2, 1, 8192)
        pse[0, 0] = -INF
        assert _heads_nan(_run(q, k, v, pse_shift=pse, scale_value=0.125)) == [True, False], isa


@pytest.mark.parametrize("chunk", [0, 1, 3])
def test_chunk_whose_every_score_is_nan(chunk):
    """Two threads cut 8192 tokens into chunks of 2048 (plan.c); every key of one chunk is NaN,
    so its state has no finite maximum at all. The merge must still pass the NaN on to both
    query heads, wherever that chunk falls."""
    import custom_ops

    custom_ops.set_num_threads(2)
    for isa in _isas():
        custom_ops.set_isa(isa)
        q, k, v = _setup(N=2, KVN=1, D=64, S=8192, seed=chunk)
        k[0, 0, chunk * 2048:(chunk + 1) * 2048] = NAN
        assert _heads_nan(_run(q, k, v, scale_value=0.125)) == [True, True], isa


@pytest.mark.parametrize("bad", [INF, NAN])
def test_pse_plus_inf_or_nan_gives_nan_for_that_head(bad):
    q, k, v = _setup()
    pse = torch.zeros(1, 4, 1, 40)
    pse[0, 1, 0, 12] = bad
    out = _run(q, k, v, pse_shift=pse)
    assert _heads_nan(out) == [False, True, False, False]


def test_key_making_score_minus_inf_removes_the_token():
    q, k, v = _setup(N=1, KVN=1)
    k[0, 0, 6] = 0.0
    k[0, 0, 6, 0] = -math.copysign(INF, float(q[0, 0, 0, 0]))
    a = _run(q, k, v)
    keep = [t for t in range(40) if t != 6]
    b = _run(q, k[:, :, keep].contiguous(), v[:, :, keep].contiguous())
    assert torch.allclose(a, b, atol=1e-6, rtol=1e-5)


def test_int8_output_of_nonfinite_values():
    q, k, v = _setup(N=1, KVN=1)
    v[0, 0, :, 0] = NAN
    v[0, 0, :, 1] = INF
    v[0, 0, :, 2] = -INF
    out = _run(q, k, v, quant_scale2=torch.tensor([1.0]))
    assert out.dtype == torch.int8
    assert out[0, 0, 0, :3].tolist() == [0, 127, -128]


@pytest.mark.parametrize("scale", [NAN, INF, -INF, 1e300])
def test_nonfinite_scale_gives_nan(scale):
    q, k, v = _setup()
    out = _run(q, k, v, scale_value=scale)
    assert bool(out.isnan().all())


def test_float16_overflow_rounds_to_inf():
    q, k, v = _setup(N=1, KVN=1, dtype=torch.float16)
    v[0, 0, :, 0] = 60000.0
    v[0, 0, :, 1] = -60000.0
    out = _run(q, k * 0, v * 2)  # uniform weights: the mean is +-120000, beyond float16
    assert torch.isposinf(out[0, 0, 0, 0]) and torch.isneginf(out[0, 0, 0, 1])


def test_random_nonfinite_inputs_never_crash():
    """Many shapes, dtypes and KV forms with NaN / inf sprinkled everywhere: every call returns a
    tensor of the right shape (values may be anything)."""
    from cases import random_case

    rng = np.random.default_rng(5)
    for seed in range(40):
        case = random_case(7000 + seed, maxlen=80)
        kw = case.kwargs("torch")
        for name in ("query", "pse_shift", "antiquant_scale", "antiquant_offset", "quant_scale2"):
            t = kw.get(name)
            if isinstance(t, torch.Tensor) and t.is_floating_point() and t.numel():
                flat = t.view(-1)
                idx = torch.from_numpy(rng.integers(0, flat.numel(), size=3))
                flat[idx] = torch.tensor([NAN, INF, -INF], dtype=t.dtype)
        for name in ("key_list", "value_list"):
            for t in kw[name] if isinstance(kw[name], (list, tuple)) else [kw[name]]:
                if t.is_floating_point() and t.numel():
                    flat = t.view(-1)
                    idx = torch.from_numpy(rng.integers(0, flat.numel(), size=5))
                    flat[idx] = torch.tensor([NAN, INF, -INF, NAN, INF], dtype=t.dtype)
        out = _op()(**kw)
        assert tuple(out.shape) == tuple(kw["query"].shape)


@pytest.mark.parametrize("masked", [False, True])
def test_nan_key_offset_poisons_its_kv_head(masked):
    """int8 KV, per-channel antiquant: a NaN in the key offset of KV head 1 makes the scores of
    its query heads NaN. Without a mask the library drops the key offset's constant term, which the
    softmax cancels (src/attend.c), but only when that term is finite for every head of the tile."""
    g = torch.Generator().manual_seed(3)
    N, KVN, D, S = 4, 2, 16, 24
    q = torch.randn(1, N, 1, D, generator=g).half()
    k = torch.randint(-100, 100, (1, KVN, S, D), generator=g, dtype=torch.int8)
    v = torch.randint(-100, 100, (1, KVN, S, D), generator=g, dtype=torch.int8)
    scale = (0.01 + 0.01 * torch.rand(2, KVN * D, generator=g)).half()
    offset = torch.randn(2, KVN * D, generator=g).half()
    offset[0, D + 3] = NAN  # key offset, KV head 1, channel 3
    kw = dict(antiquant_scale=scale, antiquant_offset=offset)
    if masked:
        kw["attention_mask"] = torch.zeros(1, S, dtype=torch.bool)
    out = _run(q, k, v, **kw)
    assert _heads_nan(out) == [False, False, True, True]
