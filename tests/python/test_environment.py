"""The environment variables the library reads once per process (README): IFA_ISA,
IFA_ISA_VERBOSE, IFA_NUM_THREADS and IFA_SPIN_US. Each case runs a fresh interpreter, since the
library reads them at its first call; torch is kept out of those interpreters (the package falls
back to numpy), which makes each start take a fraction of a second."""

import json
import os
import subprocess
import sys

import pytest

import custom_ops

# Prints what the library chose, then the result of one small call (or its error) as JSON.
CHILD = r"""
import json, sys
sys.modules["torch"] = None  # numpy only: a faster start
import numpy as np
import custom_ops
report = {"isa": custom_ops.isa(), "available": custom_ops.isa_available(),
          "threads": custom_ops.get_num_threads()}
rng = np.random.default_rng(0)
S = int(sys.argv[1])  # 40: one thread does it all (240 KiB of KV); 1024: 6 MiB, shared
q = rng.standard_normal((3, 1, 512)).astype(np.float32)
k = rng.standard_normal((3, S, 256)).astype(np.float32)
v = rng.standard_normal((3, S, 256)).astype(np.float32)
def call():
    return custom_ops.incre_flash_attention_v5(q, k, v, num_heads=4, scale_value=0.25,
                                               key_num_heads=2, actual_seq_lengths=[S, 7, 0])
try:
    report["out"] = call().ravel().tolist()
except Exception as e:
    report["error"] = [type(e).__name__, str(e)]
if "error" in report and len(sys.argv) > 2:
    custom_ops.set_isa(sys.argv[2])
    report["after_set_isa"] = call().ravel().tolist()
print(json.dumps(report))
"""


def run_child(env_over, *args, tokens=40):
    env = {k: v for k, v in os.environ.items()
           if k not in ("IFA_ISA", "IFA_ISA_VERBOSE", "IFA_NUM_THREADS", "IFA_SPIN_US")}
    env.update(env_over)
    proc = subprocess.run([sys.executable, "-c", CHILD, str(tokens), *args], env=env,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout.strip().splitlines()[-1]), proc.stderr


@pytest.fixture(scope="module")
def baseline():
    report, _ = run_child({"IFA_ISA": "ref", "IFA_NUM_THREADS": "1"})
    return report


@pytest.mark.parametrize("isa", custom_ops.isa_available())
def test_isa_forced(isa, baseline):
    report, _ = run_child({"IFA_ISA": isa})
    assert report["isa"] == isa
    assert "error" not in report
    # Every table within the float32 tolerance of the reference one (SPEC 11).
    for got, want in zip(report["out"], baseline["out"]):
        assert abs(got - want) <= 1e-5 + 1e-5 * abs(want)


@pytest.mark.parametrize("value,message", [
    ("sse9", "IFA_ISA=sse9: unknown ISA (expected ref, avx2 or avx512"),
    ("avx512", "IFA_ISA=avx512: this CPU or build lacks it"),
])
def test_isa_forced_error_at_first_call(value, message):
    if value == "avx512" and "avx512" in custom_ops.isa_available():
        pytest.skip("this CPU has the AVX-512 kernels, so IFA_ISA=avx512 is no error here")
    report, _ = run_child({"IFA_ISA": value}, "ref")
    assert report["error"][0] == "ValueError"
    assert report["error"][1].startswith(message), report["error"]
    # set_isa() replaces the forced choice, and calls work again.
    assert len(report["after_set_isa"]) == 3 * 4 * 128


def test_isa_empty_means_unset():
    report, _ = run_child({"IFA_ISA": ""})
    assert report["isa"] == custom_ops.isa_available()[-1]
    assert "error" not in report


def test_isa_verbose_prints_the_choice():
    _, stderr = run_child({"IFA_ISA": "ref", "IFA_ISA_VERBOSE": "1"})
    available = " ".join(custom_ops.isa_available())
    assert f"ifa: available ISAs: {available}; chosen: ref" in stderr
    _, stderr = run_child({"IFA_ISA": "ref"})
    assert "ifa:" not in stderr


@pytest.mark.parametrize("value,expected", [("3", 3), ("1", 1), ("0", None), ("-2", None),
                                            ("abc", None), ("4x", None), ("", None)])
def test_num_threads(value, expected, baseline):
    report, _ = run_child({"IFA_ISA": "ref", "IFA_NUM_THREADS": value})
    # Anything but an integer in 1..1024 is ignored: the CPU count, as without the variable.
    want = expected if expected is not None else (os.cpu_count() or 1)
    assert report["threads"] == want
    # Six (batch, KV head) tiles for at most three threads: no tile is split, so every thread
    # count sums the same numbers in the same order, and the bits are equal.
    assert report["out"] == baseline["out"]


@pytest.mark.parametrize("value", ["0", "5000", "abc", "-1"])
def test_spin_us(value):
    # A call large enough for the thread pool, whose waits IFA_SPIN_US sets (0: sleep at once).
    env = {"IFA_ISA": "ref", "IFA_NUM_THREADS": "2"}
    want, _ = run_child(env, tokens=1024)
    report, _ = run_child(dict(env, IFA_SPIN_US=value), tokens=1024)
    for got, expected in zip(report["out"], want["out"]):
        assert abs(got - expected) <= 1e-5 + 1e-5 * abs(expected)
