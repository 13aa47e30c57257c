"""pytest configuration for the incre_flash_attention_v5 tests.

The helpers (golden.py, cases.py) live beside the tests; this directory is put on sys.path so they
import the same way under any pytest import mode.
"""

import os
import sys

import pytest

HERE = os.path.dirname(os.path.abspath(__file__))
if HERE not in sys.path:
    sys.path.insert(0, HERE)

from cases import has_torch  # noqa: E402


def pytest_report_header(config):
    if not has_torch():
        return "torch not installed: bfloat16 and torch-backend cases are skipped"
    import torch

    return f"torch {torch.__version__}"


@pytest.fixture
def ifa():
    """The operator under test (import errors are test errors, never skips)."""
    import custom_ops

    return custom_ops.incre_flash_attention_v5


@pytest.fixture
def custom_ops_mod():
    import custom_ops

    return custom_ops


@pytest.fixture
def restore_threads(custom_ops_mod):
    """custom_ops, with its thread count restored after the test."""
    n = custom_ops_mod.get_num_threads()
    yield custom_ops_mod
    custom_ops_mod.set_num_threads(n)


@pytest.fixture
def forced_isa(custom_ops_mod, request):
    """Runs the test on the ISA named by its parameter (indirect=True; cases.ISAS names them
    all), skipped with a reason where this CPU or build lacks it, and restores the ISA chosen
    before."""
    name = request.param
    if name not in custom_ops_mod.isa_available():
        pytest.skip(f"ISA {name} not available here (available: {custom_ops_mod.isa_available()})")
    before = custom_ops_mod.isa()
    custom_ops_mod.set_isa(name)
    assert custom_ops_mod.isa() == name
    yield name
    custom_ops_mod.set_isa(before)


@pytest.fixture
def need_torch():
    if not has_torch():
        pytest.skip("torch is not installed (needed for bfloat16 / torch tensors)")
