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
