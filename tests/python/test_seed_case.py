"""The original operator's test case (examples/ifa_v5_case.py), both cache forms of the guide."""

import importlib.util
import os

import pytest

HERE = os.path.dirname(os.path.abspath(__file__))
CASE_PATH = os.path.join(HERE, "..", "..", "examples", "ifa_v5_case.py")


@pytest.fixture(scope="module")
def seed_case():
    assert os.path.exists(CASE_PATH), f"missing {CASE_PATH}"
    spec = importlib.util.spec_from_file_location("ifa_v5_case", CASE_PATH)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


@pytest.mark.parametrize("use_torch", [True, False])
@pytest.mark.parametrize("form,layout", [("4d", "BNSD"), ("3d", "BNSD"), ("3d", "BSH"), ("3d", "BSND")])
def test_seed_case_small(seed_case, form, layout, use_torch):
    if use_torch:
        pytest.importorskip("torch")
    passed, max_err, out = seed_case.run_case(form, layout, num_heads=8, head_dim=64,
                                              num_blocks=128, selected=16, use_torch=use_torch)
    assert passed, f"max |error| {max_err}"


@pytest.mark.parametrize("form,layout", [("4d", "BNSD"), ("3d", "BSH")])
def test_seed_case_full_size(seed_case, form, layout):
    """The original's sizes: 32 heads, D=128, 2048 blocks of 16, 256 pages selected per head."""
    passed, max_err, out = seed_case.run_case(form, layout)
    assert passed, f"max |error| {max_err}"
    assert out.shape == (32, 128)
