"""The main job of the README (`python -m custom_ops`): its golden check passes in both cache
forms, with torch tensors and with numpy arrays (a small shape, so it runs in the test suite)."""

import pytest


@pytest.mark.parametrize("cache", ["4d", "3d"])
@pytest.mark.parametrize("numpy", [False, True])
def test_demo_checks_itself(cache, numpy, capsys):
    from custom_ops.__main__ import main

    argv = ["--batch", "2", "--context", "1024", "--keep", "4", "--repeat", "1", "--cache", cache]
    assert main(argv + (["--numpy"] if numpy else [])) == 0
    out = capsys.readouterr().out
    assert "-> OK" in out and ("BNSD" if cache == "4d" else "BSH") in out


def test_sparse_decode_example_same_in_both_cache_forms():
    """examples/sparse_decode.py on a short context: the same data in the 3-D and the 4-D cache
    gives the same selection quality (any mistake in one form's shapes or scale shows here)."""
    import os
    import re
    import subprocess
    import sys

    pytest.importorskip("torch")
    script = os.path.join(os.path.dirname(__file__), "..", "..", "examples", "sparse_decode.py")
    errors = {}
    for cache in ("4d", "3d"):
        out = subprocess.run([sys.executable, script, "--context", "2048", "--cache", cache],
                             check=True, capture_output=True, text=True).stdout
        errors[cache] = re.search(r"Quest ([0-9.]+), random pages ([0-9.]+)", out).groups()
    assert errors["4d"] == errors["3d"]
