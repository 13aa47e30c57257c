"""torch.library registration: torch.compile traces the op (through its fake implementation) and
matches eager; torch.library.opcheck accepts it."""

import numpy as np
import pytest

from cases import assert_matches, make_case, random_case

torch = pytest.importorskip("torch", reason="torch.compile needs torch")


def _case(i=0, **kw):
    o = dict(layout="BNSD", form="pagedpos3", qdtype="float16", B=2, KVN=2, G=2, D=32,
             lens=[20, 7], bs=8, pse="B", mask="(B,S)")
    o.update(kw)
    return make_case(np.random.default_rng(170000 + i), **o)


def test_registered(custom_ops_mod):
    assert hasattr(torch.ops.custom_ops, "incre_flash_attention_v5")


def _compile_and_compare(case, backend):
    import custom_ops

    kw = case.kwargs("torch")

    def f(q, k, v):
        o = custom_ops.incre_flash_attention_v5(**dict(kw, query=q, key_list=k, value_list=v))
        return o.float() * 2.0

    eager = f(kw["query"], kw["key_list"], kw["value_list"])
    torch._dynamo.reset()
    cf = torch.compile(f, backend=backend, fullgraph=True)
    got = cf(kw["query"], kw["key_list"], kw["value_list"])
    assert got.shape == eager.shape and got.dtype == eager.dtype
    assert torch.equal(got, eager)
    gold = case.golden()
    out = (got / 2.0).to(getattr(torch, gold.out_dtype))
    assert_matches(case, out, gold)


@pytest.mark.parametrize("backend", ["eager", "aot_eager"])
def test_compile_matches_eager(backend):
    _compile_and_compare(_case(), backend)


def test_compile_inductor():
    try:
        _compile_and_compare(_case(1), "inductor")
    except Exception as e:  # only a missing C compiler toolchain is an acceptable reason
        msg = str(e)
        if "compiler" in msg.lower() or "InvalidCxxCompiler" in type(e).__name__ or "cpp" in msg.lower():
            pytest.skip(f"inductor cannot compile here: {type(e).__name__}")
        raise


@pytest.mark.parametrize("which", ["int8_out", "int8_query", "list_kv"])
def test_compile_output_dtypes(which):
    if which == "int8_out":
        case = _case(2, out_quant="(N,D)")
    elif which == "int8_query":
        case = _case(3, qdtype="int8")
    else:
        case = _case(4, form="list", layout="BSH")
    import custom_ops

    kw = case.kwargs("torch")

    def f(q):
        return custom_ops.incre_flash_attention_v5(**dict(kw, query=q))

    torch._dynamo.reset()
    got = torch.compile(f, backend="aot_eager", fullgraph=True)(kw["query"])
    assert_matches(case, got)


def _op_args(case):
    kw = case.kwargs("torch")
    k = kw["key_list"]
    v = kw["value_list"]
    lens = kw.get("actual_seq_lengths")
    return (kw["query"], k if isinstance(k, list) else [k], v if isinstance(v, list) else [v],
            kw.get("pse_shift"), kw.get("attention_mask"),
            None if lens is None else torch.tensor(list(lens), dtype=torch.int64),
            kw.get("dequant_scale1"), kw.get("quant_scale1"), kw.get("dequant_scale2"),
            kw.get("quant_scale2"), kw.get("quant_offset2"), kw.get("antiquant_scale"),
            kw.get("antiquant_offset"), kw.get("block_table"), kw.get("kv_padding_size"),
            kw.get("block_position"), kw["num_heads"], float(kw["scale_value"]), kw["layout"],
            kw["key_num_heads"], kw.get("block_size", 0), kw["inner_precise"],
            int(kw.get("antiquant_mode", 0)))


def test_torch_ops_direct():
    case = _case(5)
    got = torch.ops.custom_ops.incre_flash_attention_v5(*_op_args(case))
    assert_matches(case, got)


@pytest.mark.parametrize("i", range(3))
def test_opcheck(i):
    case = [_case(6), random_case(170100, qdtype="bfloat16", form="paged3", layout="BSH"),
            _case(7, kvdtype="int8", antiquant="ch_flat")][i]
    torch.library.opcheck(torch.ops.custom_ops.incre_flash_attention_v5.default, _op_args(case))


def test_out_op_direct():
    case = _case(8)
    out = torch.full(case.golden().out.shape, 7.0, dtype=torch.float16)
    assert torch.ops.custom_ops.incre_flash_attention_v5_out(*_op_args(case), out) is None
    assert_matches(case, out)


@pytest.mark.parametrize("i", range(2))
def test_opcheck_out(i):
    case = [_case(9), _case(10, out_quant="(N,D)")][i]
    gold = case.golden()
    out = torch.zeros(gold.out.shape, dtype=getattr(torch, gold.out_dtype))
    torch.library.opcheck(torch.ops.custom_ops.incre_flash_attention_v5_out.default,
                          _op_args(case) + (out,))


def test_compile_with_out():
    """Under torch.compile a call with out= goes through the _out op (its fake returns None), and
    writes the caller's tensor as eager does."""
    import custom_ops

    case = _case(11)
    kw = case.kwargs("torch")

    def f(q, out):
        custom_ops.incre_flash_attention_v5(**dict(kw, query=q), out=out)
        return out.float() + 1.0

    gold = case.golden()
    out = torch.zeros(gold.out.shape, dtype=torch.float16)
    torch._dynamo.reset()
    got = torch.compile(f, backend="aot_eager", fullgraph=True)(kw["query"], out)
    assert_matches(case, out, gold)
    assert torch.equal(got, out.float() + 1.0)


@pytest.mark.parametrize("name,value,exc", [
    ("num_heads", True, TypeError), ("scale_value", "0.5", TypeError),
    ("layout", 3, TypeError), ("actual_seq_lengths", [20, 7.0], TypeError),
])
def test_compile_path_checks_scalars(name, value, exc):
    """The torch.ops path (torch.compile, tensor subclasses) repeats the extension's scalar
    checks, which the op's schema would otherwise coerce or report without the name. Tested
    eagerly through a tensor subclass, which takes that path too."""
    import custom_ops

    class Sub(torch.Tensor):
        pass

    case = _case(12)
    kw = case.kwargs("torch")
    kw["query"] = kw["query"].as_subclass(Sub)
    assert_matches(case, custom_ops.incre_flash_attention_v5(**kw).as_subclass(torch.Tensor))
    with pytest.raises(exc, match=name.split("_")[0]):
        custom_ops.incre_flash_attention_v5(**dict(kw, **{name: value}))
