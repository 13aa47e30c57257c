"""Edge cases of SPEC 1-8, each compared with the float64 golden."""

import numpy as np
import pytest

from cases import (ISAS, PARAM_ORDER, SENTINEL, Case, assert_matches, check_case,
                   make_case, op, random_case, result_np, run_case)

torch = pytest.importorskip("torch", reason="edge tests use torch tensors")


def _rng(seed):
    return np.random.default_rng(seed)


# ---------------------------------------------------------------- lengths and empty sequences


@pytest.mark.parametrize("form", ["contig", "list", "pad", "paged3", "pagedpos4"])
@pytest.mark.parametrize("outq", [None, "(N,D)"])
def test_all_lengths_zero(form, outq):
    case = make_case(_rng(1), layout="BNSD", form=form, qdtype="float16", B=3, KVN=2, G=2, D=16,
                     lens=[0, 0, 0], bs=4, pse="B", mask="(B,S)", out_quant=outq)
    got = check_case(case)
    if outq is None:
        assert np.all(result_np(got) == 0)
    else:  # quant(0) = sat(rne(offset)) per channel
        off = case.inputs["quant_offset2"].astype(np.float64).reshape(-1)
        exp = np.clip(np.rint(off), -128, 127).reshape(4, 16)
        np.testing.assert_array_equal(result_np(got)[:, :, 0, :], np.broadcast_to(exp, (3, 4, 16)))


@pytest.mark.parametrize("outq", [None, "tensor", "(1,ND)"])
def test_left_padding_start_negative(outq):
    rng = _rng(2)
    case = make_case(rng, layout="BSH", form="pad", qdtype="float32", B=4, KVN=1, G=2, D=16,
                     lens=[3, 8, 9, 0], pad=2, out_quant=outq)
    S = case.inputs["key_list"].shape[1]
    # batch 0 valid, batch 1 exactly start 0, batch 2 start -1, batch 3 zero length
    case.inputs["actual_seq_lengths"] = [3, S - 2, S - 1, 0]
    g = case.golden()
    assert list(g.token_counts[:, 0]) == [3, S - 2, 0, 0]
    got = check_case(case)
    if outq is None:
        assert np.all(result_np(got)[2:] == 0)


def test_left_padding_zero_pad_equals_contiguous():
    case = make_case(_rng(3), layout="BSND", form="pad", qdtype="float16", B=2, KVN=2, D=40,
                     lens=[5, 9], pad=0, pse="1", mask="(B,1,S)")
    check_case(case)


@pytest.mark.parametrize("four", [False, True])
def test_head_with_all_slots_unselected(four):
    case = make_case(_rng(4), layout="BNSD", form="pagedpos4" if four else "pagedpos3",
                     qdtype="float16", B=2, KVN=3, G=2, D=16, lens=[20, 13], bs=4, hole_prob=0.0)
    case.inputs["block_position"][0, 1, :] = SENTINEL
    case.inputs["block_position"][1, :, :] = SENTINEL
    g = case.golden()
    assert g.token_counts[0, 1] == 0 and g.token_counts[0, 0] > 0 and g.token_counts[1].sum() == 0
    got = result_np(check_case(case))
    assert np.all(got[0, 2:4] == 0) and np.all(got[1] == 0)


@pytest.mark.parametrize("qdtype", ["float16", "bfloat16", "float32", "int8"])
def test_fully_masked_is_mean_of_v(qdtype):
    case = make_case(_rng(5), layout="BSH", form="contig", qdtype=qdtype, B=2, KVN=1, G=2, D=64,
                     lens=[7, 33], pse="B", mask="(B,S)")
    case.inputs["attention_mask"][:] = True
    check_case(case)
    if qdtype == "float32":
        v = case.inputs["value_list"].astype(np.float64)
        got = result_np(op()(**case.kwargs()))
        np.testing.assert_allclose(got[0, 0, :64], v[0, :7].mean(0), atol=1e-5, rtol=1e-5)


def test_mask_all_but_one_token():
    case = make_case(_rng(6), layout="BNSD", form="paged3", qdtype="float32", B=1, KVN=1, D=16,
                     lens=[40], bs=16, mask="(B,1,1,S)", mask_dtype="uint8")
    case.inputs["attention_mask"][:] = 1
    case.inputs["attention_mask"][..., 37] = 0
    got = result_np(check_case(case))
    kc = case.inputs["value_list"]  # (nb, bs, D)
    blk = case.inputs["block_table"][0, 37 // 16]
    np.testing.assert_allclose(got[0, 0, 0], kc[blk, 37 % 16].astype(np.float64), rtol=1e-5, atol=1e-5)


def test_holes_and_trimmed_last_page():
    """Selected pages listed with holes; L = (k-1)*bs + tokens in the last (partial) page."""
    rng = _rng(7)
    case = make_case(rng, layout="BNSD", form="pagedpos3", qdtype="float16", B=2, KVN=2, G=4,
                     D=64, lens=[16 * 3 + 5, 16 * 2 + 1], bs=16, pse="B", mask="(B,S)")
    bp = case.inputs["block_position"]
    M = case.inputs["block_table"].shape[1]
    bt = case.inputs["block_table"]
    nb = case.inputs["key_list"].shape[0]
    bt[:] = rng.permutation(nb)[:bt.size].reshape(bt.shape)
    bp[0, 0, :4] = [0, SENTINEL, 2, min(3, M - 1)]      # hole at slot 1
    bp[0, 1, :4] = [SENTINEL, SENTINEL, 1, 0]           # holes first, pages out of order
    bp[1, 0, :3] = [2, 0, SENTINEL]                      # trailing hole
    bp[1, 1, :3] = [SENTINEL, 1, 2]
    check_case(case)


def test_garbage_in_unused_entries():
    rng = _rng(8)
    case = make_case(rng, layout="BNSD", form="pagedpos4", qdtype="float32", B=2, KVN=2, D=16,
                     lens=[9, 4], bs=4, hole_prob=0.0, garbage=True)
    bp, bt = case.inputs["block_position"], case.inputs["block_table"]
    P = bp.shape[2]
    # slots past ceil(L/bs) hold anything (out-of-range and negative values included)
    bp[0, :, 3:] = -12345
    bp[1, :, 1:] = 2**31 - 2
    # table columns never referenced hold anything
    used = {(b, int(i)) for b in range(2) for i in bp[b, :, :3 if b == 0 else 1].reshape(-1)}
    for b in range(2):
        for m in range(bt.shape[1]):
            if (b, m) not in used:
                bt[b, m] = [-1, 2**31 - 1, 99999][m % 3]
    check_case(case)
    # paged without block_position: columns past ceil(L/bs)
    case = make_case(rng, layout="BSH", form="paged3", qdtype="float16", B=2, KVN=1, D=16,
                     lens=[5, 0], bs=4)
    case.inputs["block_table"] = np.concatenate(
        [case.inputs["block_table"], np.full((2, 3), -77, np.int32)], axis=1)
    case.inputs["block_table"][1, :] = SENTINEL
    check_case(case)


# ---------------------------------------------------------------- absent optional inputs


OPTIONAL_TENSORS = ["pse_shift", "attention_mask", "dequant_scale1", "quant_scale1", "dequant_scale2",
                    "quant_scale2", "quant_offset2", "antiquant_scale", "antiquant_offset",
                    "block_table", "kv_padding_size", "block_position"]


@pytest.mark.parametrize("shape", [(0,), (2, 0, 3), (1,) * 7 + (0,)])
@pytest.mark.parametrize("backend", ["torch", "numpy"])
def test_empty_tensor_means_absent(backend, shape):
    """Any tensor with no elements is absent, whatever its rank, up to the largest (8)."""
    case = make_case(_rng(9), layout="BSND", form="contig", qdtype="float16", B=2, KVN=2, D=16,
                     lens=[6, 3])
    empty = torch.empty if backend == "torch" else (lambda shape: np.empty(shape, np.float32))
    over = {n: empty(shape) for n in OPTIONAL_TENSORS}
    got = op()(**case.kwargs(backend, **over))
    assert_matches(case, got, backend=backend)


def test_empty_tensor_absent_on_paged_path():
    case = make_case(_rng(10), layout="BNSD", form="paged4", qdtype="float16", B=2, KVN=2, D=16,
                     lens=[6, 3], bs=4)
    over = {n: torch.empty(0) for n in OPTIONAL_TENSORS if n != "block_table"}
    assert_matches(case, op()(**case.kwargs("torch", **over)))
    # int8 KV with empty offset: offset 0
    case = make_case(_rng(11), layout="BSH", form="contig", qdtype="float16", kvdtype="int8", B=1,
                     KVN=1, D=16, lens=[6], antiquant="ch_flat", antiquant_offset=False)
    assert_matches(case, op()(**case.kwargs("torch", antiquant_offset=torch.empty(0))))


# ---------------------------------------------------------------- actual_seq_lengths forms


def _len_case(form):
    return make_case(_rng(12), layout="BSH", form=form, qdtype="float32", B=3, KVN=1, G=2, D=16,
                     lens=[5, 9, 2], bs=4)


@pytest.mark.parametrize("form", ["contig", "paged3"])
@pytest.mark.parametrize("kind", ["list", "tuple", "int64", "int32", "numpy64", "numpy32"])
def test_lengths_container_types(form, kind):
    case = _len_case(form)
    lens = [5, 9, 2]
    val = {"list": list(lens), "tuple": tuple(lens), "int64": torch.tensor(lens, dtype=torch.int64),
           "int32": torch.tensor(lens, dtype=torch.int32),
           "numpy64": np.array(lens, np.int64), "numpy32": np.array(lens, np.int32)}[kind]
    gold = case.golden()
    got = op()(**case.kwargs("torch", actual_seq_lengths=val))
    assert_matches(case, got, gold)


@pytest.mark.parametrize("form", ["contig", "paged3", "pad"])
@pytest.mark.parametrize("kind", ["list1", "tensor1"])
def test_lengths_one_value_broadcast(form, kind):
    case = _len_case(form)
    case.inputs["actual_seq_lengths"] = [4, 4, 4]
    gold = case.golden()
    val = [4] if kind == "list1" else torch.tensor([4], dtype=torch.int64)
    assert_matches(case, op()(**case.kwargs("torch", actual_seq_lengths=val)), gold)


@pytest.mark.parametrize("form", ["contig", "paged3"])
def test_lengths_more_than_b_values(form):
    case = _len_case(form)
    gold = case.golden()
    for val in ([5, 9, 2, 1000, 7], torch.tensor([5, 9, 2, 7], dtype=torch.int64)):
        assert_matches(case, op()(**case.kwargs("torch", actual_seq_lengths=val)), gold)


def test_lengths_absent_contiguous_is_full():
    case = make_case(_rng(13), layout="BNSD", form="contig", qdtype="float16", B=2, KVN=1, D=16,
                     lens=[7, 7], omit_lengths=True)
    assert "actual_seq_lengths" not in case.inputs
    check_case(case)
    case = make_case(_rng(14), layout="BSH", form="list", qdtype="float16", B=3, KVN=1, D=16,
                     lens=[7, 1, 12], omit_lengths=True)
    check_case(case)


@pytest.mark.parametrize("form", ["contig", "list"])
def test_lengths_empty_is_absent(form):
    """docs/design.md: an empty actual_seq_lengths is absent, like any optional tensor with no
    element; on a contiguous or list cache that means every stored token."""
    case = make_case(_rng(16), layout="BSH", form=form, qdtype="float16", B=2, KVN=1, D=16,
                     lens=[7, 7], omit_lengths=True)
    gold = case.golden()
    for val in ([], (), torch.empty(0, dtype=torch.int64), np.zeros(0, np.int32)):
        assert_matches(case, op()(**case.kwargs("torch", actual_seq_lengths=val)), gold)


@pytest.mark.parametrize("form", ["contig", "list", "pad"])
def test_block_size_ignored_without_block_table(form):
    """docs/design.md: block_size means something only with a block_table."""
    case = make_case(_rng(17), layout="BSH", form=form, qdtype="float16", B=2, KVN=1, G=2, D=16,
                     lens=[5, 3])
    gold = case.golden()
    for bs in (0, 1, 7, -3):
        assert_matches(case, op()(**case.kwargs("torch", block_size=bs)), gold)


# ---------------------------------------------------------------- key_list forms


@pytest.mark.parametrize("layout", ["BSH", "BSND", "BNSD"])
def test_key_list_tensor_list1_listB(layout):
    case = make_case(_rng(15), layout=layout, form="contig", qdtype="float16", B=3, KVN=2, D=16,
                     lens=[4, 6, 1], pse="B")
    gold = case.golden()
    k, v = case.inputs["key_list"], case.inputs["value_list"]
    kw = case.kwargs("torch")
    kt, vt = kw["key_list"], kw["value_list"]
    assert_matches(case, op()(**kw), gold)
    assert_matches(case, op()(**case.kwargs("torch", key_list=[kt], value_list=[vt])), gold)
    assert_matches(case, op()(**case.kwargs("torch", key_list=(kt,), value_list=(vt,))), gold)
    kl = [torch.from_numpy(k[b:b + 1].copy()) for b in range(3)]
    vl = [torch.from_numpy(v[b:b + 1].copy()) for b in range(3)]
    assert_matches(case, op()(**case.kwargs("torch", key_list=kl, value_list=vl)), gold)


def test_key_list_paged_one_element_list():
    case = make_case(_rng(16), layout="BNSD", form="pagedpos4", qdtype="bfloat16", B=2, KVN=2,
                     D=16, lens=[9, 3], bs=4)
    kw = case.kwargs("torch")
    assert_matches(case, op()(**case.kwargs("torch", key_list=[kw["key_list"]],
                                            value_list=[kw["value_list"]])))


# ---------------------------------------------------------------- non-contiguous inputs


def _noncontig(t, kind):
    """A non-contiguous tensor equal to t."""
    if kind == "stride2":
        big = torch.zeros(t.shape[:-1] + (t.shape[-1] * 2,), dtype=t.dtype)
        big[..., ::2] = t
        v = big[..., ::2]
    else:  # permuted storage
        nd = t.dim()
        perm = list(range(nd))[::-1]
        inv = np.argsort(perm).tolist()
        v = t.permute(perm).contiguous().permute(inv)
    assert torch.equal(v, t) and not v.is_contiguous()
    return v


@pytest.mark.parametrize("kind", ["stride2", "permuted"])
@pytest.mark.parametrize("which", ["query", "key_list", "value_list", "pse_shift", "attention_mask",
                                   "block_table", "block_position", "antiquant_scale",
                                   "quant_scale2"])
def test_non_contiguous_inputs_correct_or_rejected(which, kind):
    rng = _rng(17)
    if which in ("block_table", "block_position", "key_list", "value_list"):
        case = make_case(rng, layout="BNSD", form="pagedpos3", qdtype="float16", B=2, KVN=2, G=2,
                         D=16, lens=[9, 5], bs=4)
    elif which == "antiquant_scale":
        case = make_case(rng, layout="BSH", form="contig", qdtype="float16", kvdtype="int8", B=2,
                         KVN=2, D=16, lens=[9, 5], antiquant="ch_nd")
    elif which == "quant_scale2":
        case = make_case(rng, layout="BSND", form="contig", qdtype="float16", B=2, KVN=2, D=16,
                         lens=[9, 5], out_quant="(N,D)")
    else:
        case = make_case(rng, layout="BSND", form="contig", qdtype="float16", B=2, KVN=2, G=2,
                         D=16, lens=[9, 5], pse="B", mask="(B,S)", mask_dtype="int8")
    gold = case.golden()
    kw = case.kwargs("torch")
    kw[which] = _noncontig(kw[which], kind)
    try:
        got = op()(**kw)
    except ValueError as e:
        assert which in str(e) or "contiguous" in str(e), f"rejection message names nothing: {e}"
        return
    assert_matches(case, got, gold)


@pytest.mark.parametrize("which", ["query", "key_list"])
def test_non_contiguous_numpy_correct_or_rejected(which):
    case = make_case(_rng(18), layout="BNSD", form="contig", qdtype="float32", B=2, KVN=2, D=16,
                     lens=[9, 5])
    gold = case.golden()
    kw = case.kwargs("numpy")
    a = kw[which]
    f = np.asfortranarray(a)
    assert not f.flags.c_contiguous
    kw[which] = f
    try:
        got = op()(**kw)
    except ValueError as e:
        assert which in str(e) or "contiguous" in str(e), str(e)
        return
    assert_matches(case, got, gold)


# ---------------------------------------------------------------- out=, antiquant_mode, positional


@pytest.mark.parametrize("backend", ["torch", "numpy"])
@pytest.mark.parametrize("outq", [None, "tensor"])
def test_out_preallocated(backend, outq):
    case = make_case(_rng(19), layout="BSH", form="paged3", qdtype="float16", B=2, KVN=1, G=2,
                     D=16, lens=[9, 0], bs=4, out_quant=outq)
    gold = case.golden()
    shape = gold.out.shape
    if backend == "torch":
        out = torch.full(shape, 77, dtype=torch.int8 if outq else torch.float16)
    else:
        out = np.full(shape, 77, dtype=np.int8 if outq else np.float16)
    got = op()(**case.kwargs(backend), out=out)
    assert_matches(case, out, gold, backend=backend)  # written in place
    assert_matches(case, got, gold, backend=backend)
    assert got is out or np.array_equal(result_np(got), result_np(out))


def test_antiquant_mode_keyword():
    rng = _rng(20)
    case = make_case(rng, layout="BNSD", form="paged4", qdtype="bfloat16", kvdtype="int8", B=2,
                     KVN=2, D=64, lens=[30, 17], bs=16, antiquant="token")
    assert case.antiquant_mode == 1
    check_case(case)
    case = make_case(rng, layout="BNSD", form="paged4", qdtype="float16", kvdtype="int8", B=2,
                     KVN=2, D=64, lens=[30, 17], bs=16, antiquant="ch_n1d")
    assert_matches(case, op()(**case.kwargs("torch"), antiquant_mode=0))
    with pytest.raises(TypeError):  # keyword-only (SPEC 1): a 23rd positional argument is refused
        args, _ = case.positional("torch")
        op()(*args, 0)


@pytest.mark.parametrize("form", ["pagedpos3", "pagedpos4"])
def test_positional_call_like_the_guide(form):
    """All 22 arguments positionally, absent ones as torch.empty(0), as the guide shows."""
    case = make_case(_rng(21), layout="BNSD", form=form, qdtype="float16", B=2, KVN=2, G=4,
                     D=128, lens=[16 * 3, 16 * 2], bs=16, mask="(B,1,1,S)")
    gold = case.golden()
    args, extra = case.positional("torch")
    assert not extra and len(args) == 22
    for i, name in enumerate(PARAM_ORDER[:16]):
        if args[i] is None:
            args[i] = torch.empty(0)
    args[1] = [args[1]]
    args[2] = [args[2]]
    args[5] = list(args[5])
    assert_matches(case, op()(*args), gold)


def test_defaults():
    """num_heads=1, scale_value=1.0, layout BSH, key_num_heads=0, inner_precise=1 by default."""
    rng = _rng(22)
    q = torch.from_numpy(rng.uniform(-1, 1, (2, 1, 32)).astype(np.float32))
    k = torch.from_numpy(rng.uniform(-1, 1, (2, 5, 32)).astype(np.float32))
    v = torch.from_numpy(rng.uniform(-1, 1, (2, 5, 32)).astype(np.float32))
    case = Case(inputs={"query": q.numpy(), "key_list": k.numpy(), "value_list": v.numpy()},
                bf16=set(), qdtype="float32", kvdtype="float32", desc="defaults")
    assert_matches(case, op()(q, k, v), backend="torch")


# ---------------------------------------------------------------- numerics


@pytest.mark.parametrize("qdtype", ["float16", "bfloat16", "float32"])
def test_large_scores_stable(qdtype):
    case = make_case(_rng(23), layout="BSH", form="contig", qdtype=qdtype, B=2, KVN=1, D=128,
                     lens=[50, 300], scale_value=40.0, pse="B")
    check_case(case)


@pytest.mark.parametrize("D", [1, 3, 8, 17, 33, 256, 512])
def test_odd_and_large_head_dims(D):
    case = make_case(_rng(24 + D), layout="BNSD", form="paged3", qdtype="float16", B=2, KVN=2,
                     G=3, D=D, lens=[33, 17], bs=16)
    check_case(case)


@pytest.mark.parametrize("L", [1, 15, 16, 17, 31, 32, 33, 63, 64, 65, 127, 128, 129, 255, 256, 257, 1023, 1025])
def test_tile_edge_lengths(L):
    rng = _rng(1000 + L)
    case = make_case(rng, layout="BNSD", form="contig", qdtype="float32", B=1, KVN=1, G=2, D=64,
                     lens=[L], mask="(B,S)")
    check_case(case)
    case = make_case(rng, layout="BSH", form="pagedpos3", qdtype="float16", kvdtype="int8", B=1,
                     KVN=1, D=64, lens=[L], bs=16, antiquant="tensor")
    check_case(case)


def test_full_quant_uint64_scales():
    for seed in range(4):
        case = make_case(_rng(30 + seed), layout=["BSH", "BNSD"][seed % 2], form="paged3",
                         qdtype="int8", B=2, KVN=2, G=2, D=64, lens=[40, 17], bs=16,
                         u64_scales=True, out_quant=None if seed < 2 else "tensor")
        assert case.inputs["dequant_scale1"].dtype == np.uint64
        check_case(case, "torch" if seed % 2 else "numpy")


def test_full_quant_uint64_high_bits_ignored():
    case = make_case(_rng(34), layout="BSH", form="contig", qdtype="int8", B=1, KVN=1, D=64,
                     lens=[20], u64_scales=True)
    gold = case.golden()
    for n in ("dequant_scale1", "quant_scale1", "dequant_scale2"):
        case.inputs[n] = case.inputs[n] | np.uint64(0xABCD000000000000)
    assert_matches(case, op()(**case.kwargs("numpy")), gold)


def test_repeated_table_entries_and_shared_blocks():
    """Two batches reading the same physical blocks, and two slots of one head the same column."""
    case = make_case(_rng(35), layout="BNSD", form="pagedpos4", qdtype="float32", B=2, KVN=1,
                     D=16, lens=[12, 12], bs=4, hole_prob=0.0)
    bt = case.inputs["block_table"]
    bt[0] = np.random.default_rng(0).permutation(case.inputs["key_list"].shape[0])[:bt.shape[1]]
    bt[1] = bt[0]
    case.inputs["block_position"][0, 0, :3] = [1, 1, 0]
    check_case(case)


def test_random_seeds_numpy_and_torch_agree():
    for seed in range(5):
        case = random_case(130000 + seed, qdtype="float16")
        a = result_np(op()(**case.kwargs("numpy")))
        b = result_np(op()(**case.kwargs("torch")))
        np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("layout", ["BSH", "BSND", "BNSD"])
@pytest.mark.parametrize("qdtype", ["float16", "bfloat16"])
def test_left_padding_positions_index_pse_mask_and_per_token(layout, qdtype):
    """pos(t) = start + t indexes pse, mask and per-token antiquant parameters (SPEC 4.2, 5, 6)."""
    case = make_case(_rng(40), layout=layout, form="pad", qdtype=qdtype, kvdtype="int8", B=3,
                     KVN=2, G=2, D=64, lens=[5, 17, 30], pad=3, pse="B", mask="(B,1,1,S)",
                     antiquant="token")
    check_case(case)


@pytest.mark.parametrize("form", ["contig", "list", "pad", "paged3", "paged4", "pagedpos3", "pagedpos4"])
def test_per_token_antiquant_every_form(form):
    case = make_case(_rng(41), layout="BNSD", form=form, qdtype="float16", kvdtype="int8", B=2,
                     KVN=2, G=2, D=64, lens=[37, 9], bs=16, antiquant="token", pse="1",
                     mask="(B,S)")
    check_case(case)


def _sparse_mask(shape, period, phase):
    """Long unmasked stretches with single masked positions at every offset within a word of 8
    (the library skips 8 unmasked mask bytes at a time), and one masked stretch."""
    m = np.zeros(shape, dtype=np.uint8)
    flat = m.reshape(-1, shape[-1])
    for r in range(flat.shape[0]):
        flat[r, (np.arange(shape[-1]) % period) == (phase + r) % period] = 255
        flat[r, 40:52] = 2
    return m


@pytest.mark.parametrize("bs", [3, 16])
@pytest.mark.parametrize("form", ["pagedpos3", "pagedpos4", "paged3"])
def test_chunk_positions_in_runs(form, bs):
    """pse, mask and per-token antiquant are read a run of consecutive positions at a time: runs
    broken by pages the heads did not select (sparse), by small pages, and chunks longer than
    a page, against the golden."""
    case = make_case(_rng(43 + bs), layout="BNSD", form=form, qdtype="float16", kvdtype="int8", B=2,
                     KVN=2, G=3, D=32, lens=[190, 77], bs=bs, antiquant="token", pse="B",
                     mask="(B,S)", hole_prob=0.4)
    case.inputs["attention_mask"] = _sparse_mask(case.inputs["attention_mask"].shape, 11, bs)
    check_case(case)


@pytest.mark.parametrize("kind", ["stride2", "permuted"])
@pytest.mark.parametrize("which", ["antiquant_scale", "antiquant_offset", "pse_shift", "attention_mask"])
def test_position_parameters_non_contiguous(which, kind):
    """Per-position parameters with strides along the position: the strided row loads."""
    case = make_case(_rng(44), layout="BNSD", form="paged4", qdtype="float16", kvdtype="int8", B=2,
                     KVN=2, G=2, D=32, lens=[100, 61], bs=16, antiquant="token", pse="B",
                     mask="(B,1,S)", mask_dtype="int8")
    case.inputs["attention_mask"] = _sparse_mask(case.inputs["attention_mask"].shape, 9, 4).astype(np.int8)
    gold = case.golden()
    kw = case.kwargs("torch")
    kw[which] = _noncontig(kw[which], kind)
    assert_matches(case, op()(**kw), gold)


@pytest.mark.parametrize("scale_value", [0.0, 1e-39, 1e-30, 0.09])
@pytest.mark.parametrize("form", ["paged3", "pagedpos4", "contig"])
def test_full_quant_score_factor(form, scale_value):
    """Full quantisation: the integer qk recovers the int8 query from q' = scale * ds1 * q8 when
    that factor is a normal float; zero and subnormal factors take the float qk. Several windows
    and heads per tile (the max pass visits them with a ring of units ahead)."""
    case = make_case(_rng(45), layout="BNSD", form=form, qdtype="int8", B=2, KVN=3, G=2, D=32,
                     lens=[300, 130], bs=16, scale_value=scale_value, pse="B", mask="(B,S)")
    check_case(case)


@pytest.mark.parametrize("qs1", [300.0, 127.0, 90.5, -127.0, 1.5])
def test_full_quant_weight_scales(qs1):
    """p8 = sat_int8(rne(p * quant_scale1)): scales up to 127 in magnitude round without
    saturating (the vectorised path), larger ones saturate, negative ones flip the weights."""
    case = make_case(_rng(47), layout="BNSD", form="paged3", qdtype="int8", B=2, KVN=2, G=2, D=16,
                     lens=[150, 33], bs=16)
    case.inputs["quant_scale1"] = np.array([qs1], dtype=np.float32)
    case.inputs["dequant_scale2"] = np.array([2.0 / (127 * abs(qs1))], dtype=np.float32)
    check_case(case)


@pytest.mark.parametrize("qs1", [127.6, 128.0])
def test_full_quant_weights_saturate_just_above_127(qs1):
    """quant_scale1 in (127, 128]: a weight of 1 rounds to 128 and must saturate to 127 (the
    vectorised rounding of quantise_weights_int8 serves only |qs1| <= 127). Every score equal,
    so every weight is 1 and the output is exactly dequant_scale2 * 127 * mean(v); a weight of
    128 would be 0.8% off, inside the 1e-2 tolerance of the golden comparison."""
    D, T = 16, 64
    g = torch.Generator().manual_seed(5)
    q = torch.zeros(1, 2, 1, D, dtype=torch.int8)
    k = torch.randint(-127, 128, (1, 1, T, D), generator=g, dtype=torch.int8)
    v = torch.randint(-127, 128, (1, 1, T, D), generator=g, dtype=torch.int8)
    ds2 = 2.0 / (127 * 128)
    got = op()(q, [k], [v], num_heads=2, key_num_heads=1, layout="BNSD", scale_value=1.0,
               dequant_scale1=torch.tensor([1e-3]), quant_scale1=torch.tensor([qs1]),
               dequant_scale2=torch.tensor([ds2]))
    want = ds2 * 127 * v[0, 0].double().mean(0)
    assert torch.allclose(got[0, :, 0].double(), want.expand(2, D), rtol=1e-3, atol=1e-4)


@pytest.mark.parametrize("form", ["paged3", "pagedpos3"])
def test_full_quant_scores_exact(form):
    """Scores that a change of one in one query element moves by about 0.2 (weights by 20%): the
    int8 query must reach the integer qk unchanged."""
    case = make_case(_rng(46), layout="BNSD", form=form, qdtype="int8", B=2, KVN=2, G=2, D=16,
                     lens=[70, 9], bs=16, scale_value=1.0)
    case.inputs["dequant_scale1"] = np.array([2e-3], dtype=np.float32)
    check_case(case)


@pytest.mark.parametrize("backend", ["torch", "numpy"])
def test_result_is_a_new_buffer(backend):
    case = make_case(_rng(42), layout="BSH", form="contig", qdtype="float32", B=1, KVN=1, D=16,
                     lens=[1])
    kw = case.kwargs(backend)
    got = op()(**kw)
    if backend == "torch":
        assert got.data_ptr() not in (kw["query"].data_ptr(), kw["key_list"].data_ptr(),
                                      kw["value_list"].data_ptr())
    else:
        assert not np.shares_memory(got, kw["query"]) and not np.shares_memory(got, kw["value_list"])
    assert_matches(case, got, backend=backend)


# ---------------------------------------------------------------- int8 KV, fixed-point P.V (SPEC 9)


@pytest.mark.parametrize("peak", [0, 1000, 4095])
@pytest.mark.parametrize("inner_precise", [0, 1])
def test_int8_kv_many_tiny_weights(peak, inner_precise):
    """One token scores 12 above 4095 others (weights e^-12, under 2^-17 of the peak): rounding
    the weights to 16 bits against the largest weight of the whole sequence would drop their 2.5%
    share of the sum; the library rounds against the largest of each window (kernels.h), so the
    output keeps to the tolerance."""
    L, D = 4096, 64
    q = torch.zeros(1, 1, D, dtype=torch.float16)
    q[0, 0, 0] = 1.0
    k = torch.full((1, L, D), 88, dtype=torch.int8)
    k[0, peak, 0] = 100
    v = torch.full((1, L, D), 100, dtype=torch.int8)
    v[0, peak, :] = 0
    scale = torch.tensor([1.0, 0.01], dtype=torch.float16)
    kw = dict(antiquant_scale=scale, num_heads=1, scale_value=1.0, layout="BSH", inner_precise=inner_precise)
    got = op()(q, [k], [v], **kw).double().numpy()
    w = np.exp(-12.0)
    want = (L - 1) * w * 1.0 / (1.0 + (L - 1) * w)  # about 0.024, all from the tiny weights
    np.testing.assert_allclose(got, np.full((1, 1, D), want), rtol=2e-3, atol=2e-3)


@pytest.mark.parametrize("forced_isa", ISAS, indirect=True)
@pytest.mark.parametrize("inner_precise", [0, 1])
@pytest.mark.parametrize("kv", ["int8", "same"])
@pytest.mark.parametrize("qdtype", ["float16", "bfloat16", "float32"])
def test_query_heads_of_zeros(qdtype, kv, inner_precise, forced_isa):
    """A query head of zeros scores every token 0, so its output is the mean of V. With int8 KV at
    inner_precise 1 the query is quantised against its largest element, which is 0 here (a
    scale of 0 rather than a division by it); one head alone, and every head of a KV head."""
    case = make_case(_rng(40), layout="BNSD", form="contig", qdtype=qdtype,
                     kvdtype="int8" if kv == "int8" else None, B=2, KVN=2, G=3, D=32,
                     lens=[50, 17], inner_precise=inner_precise)
    q = case.inputs["query"]
    q[0, 1] = 0
    q[1, :3] = 0
    check_case(case)


@pytest.mark.parametrize("forced_isa", ISAS, indirect=True)
@pytest.mark.parametrize("inner_precise", [0, 1])
@pytest.mark.parametrize("which", ["key_list", "value_list", "both"])
@pytest.mark.parametrize("dmode", ["float16", "bfloat16", "float32", "i8kv-bfloat16"])
def test_kv_with_d_stride_beside_unit_stride(dmode, which, inner_precise, forced_isa):
    """K, V or both stored with D not innermost, on every ISA. The ISA kernels need a unit D
    stride, so such a head goes to the reference kernels, while the other of K and V may still
    take the ISA's: on AVX2 a bfloat16 K or V then has its own order of D (bf16_swapped_quads,
    docs/kernels.md), which must follow the kernel that reads it."""
    qdtype = dmode.split("-")[-1]
    for form in ("contig", "paged4", "pagedpos3"):
        case = make_case(_rng(41), layout="BNSD", form=form, qdtype=qdtype,
                         kvdtype="int8" if dmode.startswith("i8kv") else None, B=2, KVN=2, G=3,
                         D=32, lens=[37, 20], bs=8, inner_precise=inner_precise)
        kw = case.kwargs("torch")
        for name in ("key_list", "value_list"):
            if which in (name, "both"):
                t = kw[name]
                kw[name] = t.transpose(-1, -2).contiguous().transpose(-1, -2)
                assert kw[name].stride(-1) != 1
        assert_matches(case, op()(**kw))


def test_kv_padding_size_int32_same_as_int64():
    # Decided in docs/design.md: kv_padding_size may be int64 (the original's) or int32.
    case = make_case(_rng(42), layout="BSND", form="pad", qdtype="float16", B=3, KVN=2, G=2,
                     D=16, lens=[5, 9, 1], pad=3, pse="B")
    want = result_np(check_case(case))
    got = check_case(case, kv_padding_size=torch.tensor([3], dtype=torch.int32))
    np.testing.assert_array_equal(result_np(got), want)


@pytest.mark.parametrize("score", [-4e10, -4e12])
def test_masked_score_is_exactly_minus_1e12(score):
    """SPEC 5 replaces a masked token's score by -1e12, not by -inf: unmasked scores above it
    (-4e10) leave the masked tokens no weight, and unmasked scores below it (-4e12) leave them
    all of it. float32, every score equal within its group, so the output is a plain mean."""
    D, S = 4, 10
    mag = (-score / D) ** 0.5
    q = torch.full((1, 1, 1, D), mag)
    k = torch.full((1, 1, S, D), -mag)
    v = torch.randn(1, 1, S, D, generator=torch.Generator().manual_seed(3))
    mask = torch.zeros(1, S, dtype=torch.bool)
    mask[0, [2, 5, 7]] = True
    got = op()(q, [k], [v], attention_mask=mask, num_heads=1, scale_value=1.0, layout="BNSD")
    winners = ~mask[0] if score > -1e12 else mask[0]
    want = v[0, 0, winners].double().mean(0)
    assert torch.allclose(got[0, 0, 0].double(), want, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("forced_isa", ISAS, indirect=True)
def test_scores_far_below_any_finite_start(forced_isa):
    """Finite scores of -1e35, far below any finite value a running maximum could start from
    (softmax_state.h starts it at -inf): the tokens at -1e35 share the weight equally and those
    at -2e35 get none. float32 throughout; a zero query makes every score the pse alone."""
    D, S = 8, 40
    q = torch.zeros(1, 2, 1, D)
    k = torch.randn(1, 1, S, D, generator=torch.Generator().manual_seed(4))
    v = torch.randn(1, 1, S, D, generator=torch.Generator().manual_seed(6))
    pse = torch.full((1, 2, 1, S), -1e35)
    pse[..., 3::4] = -2e35
    got = op()(q, [k], [v], pse_shift=pse, num_heads=2, key_num_heads=1, layout="BNSD")
    want = v[0, 0, pse[0, 0, 0] == -1e35].double().mean(0)
    assert torch.allclose(got[0, :, 0].double(), want.expand(2, D), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("forced_isa", ISAS, indirect=True)
def test_weight_at_the_edge_of_the_normal_floats(forced_isa):
    """A score exactly 86.5 below the maximum weighs exp(-86.5) = 2.6e-38, still a normal float
    (the AVX2 softmax's fast exp covers x >= -86.5, kernels.h); a masked token beside it in the
    same 8 weighs nothing. That token's V of 1e38 makes the weight visible in the output:
    about 0.45 (beside six tokens of weight 1 and V 0) where a weight of 0 would give 0.
    float32, a zero query: the scores are the pse."""
    S, D = 8, 4
    q = torch.zeros(1, 1, 1, D)
    k = torch.ones(1, 1, S, D)
    v = torch.zeros(1, 1, S, D)
    v[0, 0, 1] = 1e38
    pse = torch.zeros(1, 1, 1, S)
    pse[0, 0, 0, 1] = -86.5
    mask = torch.zeros(1, S, dtype=torch.bool)
    mask[0, 2] = True
    got = op()(q, [k], [v], pse_shift=pse, attention_mask=mask, num_heads=1, layout="BNSD")
    w = np.exp(-86.5)
    want = float(v[0, 0, 1, 0]) * w / (S - 2 + w)       # six tokens weigh 1
    assert abs(float(got[0, 0, 0, 0]) - want) <= 1e-5 * want, (float(got[0, 0, 0, 0]), want)


def test_full_quantisation_is_never_split(restore_threads):
    """An int8 query quantises P against each head's maximum over all its tokens (SPEC 7), which
    a chunk of a split-KV call could not know: a long call on two threads must match the golden.
    Token 0 scores 6 above the rest, whose weights exp(-6) then round to 0 at quant_scale1 127;
    against the maximum of a later chunk alone they would round to 127."""
    restore_threads.set_num_threads(2)
    # D = 64: 512 KiB of KV, enough for the plan to use both threads (256 KiB at least).
    case = make_case(_rng(43), layout="BNSD", form="contig", qdtype="int8", B=1, KVN=1, G=2,
                     D=64, lens=[4096])
    inp = case.inputs
    inp["query"][:] = 10
    inp["key_list"][:] = 90
    inp["key_list"][0, 0, 0, :] = 100
    inp["scale_value"] = 6.0 / (64 * 10 * 10)
    inp["dequant_scale1"] = np.array([1.0], dtype=np.float32)
    inp["quant_scale1"] = np.array([127.0], dtype=np.float32)
    check_case(case)


def test_per_token_value_offsets_across_split_chunks(restore_threads):
    """Per-token int8 V offsets add sum(p_t * c_t * o_t) beside P.V (attend.c, voff), which the
    split-KV merge must rescale with the rest of the state. Long enough (512 KiB of KV) to split
    on two threads; the scores fall from about +10 to -10 along the sequence, so the later chunk's
    maximum is far below the first's, and the offsets are large and of one sign, so that an
    unscaled voff would show."""
    restore_threads.set_num_threads(2)
    case = make_case(_rng(44), layout="BNSD", form="contig", qdtype="float16", kvdtype="int8",
                     antiquant="token", B=1, KVN=1, G=2, D=64, lens=[4096])
    inp = case.inputs
    k = inp["key_list"]
    k[0, 0, :, :] = np.linspace(127, -127, k.shape[2]).round().astype(np.int8)[:, None]
    inp["query"][:] = 1.0
    inp["scale_value"] = 0.125
    inp["antiquant_scale"][0] = 0.01   # key scales: scores from about +10 to -10
    inp["antiquant_scale"][1] = 0.05   # value scales
    inp["antiquant_offset"][1] = 3.0   # value offsets
    check_case(case)


@pytest.mark.parametrize("kind", ["value_offsets", "all_minus_inf"])
def test_sparse_head_whose_first_chunks_are_holes(restore_threads, kind):
    """KV head 0 leaves its first 32 of 64 pages unselected (holes, SPEC 4): on two threads the
    8192 tokens are cut into chunks of 2048 (plan.c), so that head's first two chunks hold no
    token and the split-KV merge starts from an empty state. It must then take the next chunk's
    state whole: with per-token value offsets their term too ('value_offsets'); and when every
    token the head has scores -inf ('all_minus_inf'), the flag that it had tokens, which makes
    its output NaN (SPEC 5) where a head without tokens gives 0. KV head 1 is an ordinary
    sparse head beside it."""
    restore_threads.set_num_threads(2)
    offsets = kind == "value_offsets"
    case = make_case(_rng(45), layout="BNSD", form="pagedpos3", qdtype="float16",
                     kvdtype="int8" if offsets else None, antiquant="token" if offsets else None,
                     pse=None if offsets else "B", B=1, KVN=2, G=2, D=64, lens=[8192], bs=128)
    inp = case.inputs
    bp, M = inp["block_position"], inp["block_table"].shape[1]
    bp[0, 0, :32] = SENTINEL
    bp[0, 0, 32:64] = _rng(46).integers(0, M, size=32)
    inp["block_table"][0, :] = _rng(47).permutation(inp["key_list"].shape[0])[:M]
    if offsets:
        inp["antiquant_offset"][1] = 3.0   # large, of one sign: a lost term would show
        check_case(case)
        return
    inp["pse_shift"][0, :2] = -np.inf      # query heads 0 and 1 read KV head 0
    with np.errstate(invalid="ignore"):    # the golden's exp(-inf - -inf)
        gold = case.golden().out
    assert np.isnan(gold[0, :2]).all() and np.isfinite(gold[0, 2:]).all()
    got = result_np(run_case(case)).astype(np.float64)
    assert np.isnan(got[0, :2]).all(), "head whose every token is at -inf: NaN, not 0"
    atol, rtol = case.tol()
    np.testing.assert_allclose(got[0, 2:], gold[0, 2:], atol=atol, rtol=rtol)
