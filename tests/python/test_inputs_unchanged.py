"""SPEC 10: no input is modified, whether the call succeeds or fails."""

import numpy as np
import pytest

from cases import TENSOR_PARAMS, op, random_case

torch = pytest.importorskip("torch", reason="uses torch tensors")


def _snapshot(kw):
    snap = {}
    for name in TENSOR_PARAMS:
        v = kw.get(name)
        items = v if isinstance(v, (list, tuple)) else [v]
        snap[name] = []
        for x in items:
            if isinstance(x, torch.Tensor):
                snap[name].append(x.clone().contiguous().view(torch.uint8)
                                  if x.numel() and x.dtype != torch.bool else x.clone())
            elif isinstance(x, np.ndarray):
                snap[name].append(np.ascontiguousarray(x).view(np.uint8).copy() if x.size else x.copy())
            else:
                snap[name].append(x)
    return snap


def _same(a, b):
    if isinstance(a, torch.Tensor):
        return torch.equal(a, b)
    if isinstance(a, np.ndarray):
        return np.array_equal(a, b)
    return a == b


def _check_unchanged(kw, snap):
    now = _snapshot(kw)
    for name in snap:
        assert len(now[name]) == len(snap[name]), name
        for a, b in zip(now[name], snap[name]):
            assert _same(a, b), f"{name} was modified by the call"


MODES = [dict(qdtype="float16"), dict(qdtype="bfloat16"), dict(qdtype="float32"),
         dict(qdtype="float16", kvdtype="int8"), dict(qdtype="int8"),
         dict(qdtype="bfloat16", out_quant="(N,D)", pse="B", mask="(B,1,S)")]
FORMS = ["contig", "list", "pad", "paged3", "pagedpos3", "paged4", "pagedpos4"]


PARAMS = [(mode, form, backend) for mode in range(len(MODES)) for form in FORMS
          for backend in ("torch", "numpy")
          if not (backend == "numpy" and "bfloat16" in MODES[mode].values())]  # numpy has no bf16


@pytest.mark.parametrize("mode,form,backend", PARAMS)
def test_inputs_unchanged(mode, form, backend):
    m = MODES[mode]
    case = random_case(140000 + 10 * mode + FORMS.index(form), layout="BNSD", form=form, **m)
    kw = case.kwargs(backend)
    snap = _snapshot(kw)
    op()(**kw)
    _check_unchanged(kw, snap)
    # a second call over the same inputs gives the same answer (nothing cached from the first)
    kw2 = case.kwargs(backend)
    a, b = op()(**kw), op()(**kw2)
    np.testing.assert_array_equal(np.asarray(a.float() if isinstance(a, torch.Tensor) else a),
                                  np.asarray(b.float() if isinstance(b, torch.Tensor) else b))


def test_inputs_unchanged_after_error():
    case = random_case(150000, layout="BNSD", form="pagedpos3", qdtype="float16", pse="B",
                       mask="(B,S)")
    kw = case.kwargs("torch")
    kw["inner_precise"] = 5
    snap = _snapshot(kw)
    with pytest.raises(ValueError):
        op()(**kw)
    _check_unchanged(kw, snap)
