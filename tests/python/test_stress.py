"""Stress: the operator as an inference server runs it, for a while, from many threads.

test_eight_threads_for_a_while
    8 Python threads call the op at once on mixed cases (every KV form, float16 / bfloat16 /
    float32 / int8 KV / full quantisation / int8 output, torch and numpy inputs, with and
    without out=), interleaved with calls that must fail (a block table pointing outside the
    cache). Every result must be bit-identical to the serial result of the same case; every
    failing call must raise ValueError; the resident set size must stay flat after a warm-up;
    the reference count of every input must be what it was before.
    Runs IFA_STRESS_SECONDS seconds (default 15; docs/reliability.md records longer runs).

test_extension_leaks_nothing_under_lsan
    A child interpreter runs the op (successes and every kind of error) under LeakSanitizer
    (gcc's liblsan preloaded, PYTHONMALLOC=malloc so that PyMem allocations are seen); any leak
    whose allocation stack passes through the extension fails the test.
"""

import gc
import os
import subprocess
import sys
import threading
import time

import numpy as np
import pytest

from cases import op, random_case
from golden import to_np

torch = pytest.importorskip("torch", reason="uses torch tensors")

SECONDS = float(os.environ.get("IFA_STRESS_SECONDS", "15"))
THREADS = 8


def _rss_bytes():
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    return 0


def _specs():
    return [
        dict(form="pagedpos4", layout="BNSD", qdtype="float16", B=3, bs=16),
        dict(form="pagedpos3", layout="BSND", qdtype="bfloat16", B=2, bs=5),
        dict(form="paged3", layout="BSH", qdtype="float32", B=2, bs=16),
        dict(form="paged4", layout="BNSD", qdtype="float16", kvdtype="int8", antiquant="ch_nd", B=2),
        dict(form="contig", layout="BSH", qdtype="bfloat16", B=2, pse="B", mask="(B,S)"),
        dict(form="list", layout="BSND", qdtype="float32", B=3),
        dict(form="pad", layout="BNSD", qdtype="int8", B=2, out_quant="tensor"),
        dict(form="contig", layout="BNSD", qdtype="float16", kvdtype="int8", antiquant="token", B=1),
        dict(form="pagedpos3", layout="BSH", qdtype="float32", B=1, lens=[1500], bs=16, maxlen=1500),
        dict(form="contig", layout="BSH", qdtype="float16", out_quant="(N,D)", B=2),
    ]


class _Job:
    """One case: its arguments (torch or numpy), the serial result and a failing variant."""

    def __init__(self, seed, spec):
        self.case = random_case(seed, **spec)
        backend = "torch" if self.case.bf16 or seed % 2 else "numpy"
        self.kw = self.case.kwargs(backend)
        first = op()(**self.kw)
        self.out_dtype = first.dtype
        self.serial = to_np(first)
        self.bad = None
        table = self.kw.get("block_table")
        if table is not None:
            bad_table = table.clone() if isinstance(table, torch.Tensor) else table.copy()
            bad_table[0, 0] = 1 << 30  # a scheduler bug: far outside the cache
            self.bad = dict(self.kw, block_table=bad_table)
        del table, first  # only the job's own references remain while counting
        self.tensors = [v for v in self.kw.values() if isinstance(v, (torch.Tensor, np.ndarray, list))]
        self.refs = [sys.getrefcount(t) for t in self.tensors]


def _worker(jobs, deadline, seed, stats, errors):
    rng = np.random.default_rng(seed)
    calls = fails = 0
    try:
        while time.monotonic() < deadline:
            job = jobs[int(rng.integers(0, len(jobs)))]
            r = rng.random()
            if job.bad is not None and r < 0.1:
                try:
                    op()(**job.bad)
                    errors.append(f"{job.case}: a bad block table was accepted")
                except ValueError:
                    fails += 1
                continue
            if r < 0.3:
                q = job.kw["query"]
                if isinstance(q, torch.Tensor):
                    out = torch.empty(q.shape, dtype=job.out_dtype)
                else:
                    out = np.empty(q.shape, dtype=job.out_dtype)
                got = op()(**job.kw, out=out)
                assert got is out
            else:
                got = op()(**job.kw)
            calls += 1
            if not np.array_equal(to_np(got), job.serial, equal_nan=True):
                errors.append(f"{job.case}: a concurrent result differs from the serial one")
    except Exception as e:  # reported by the main thread
        errors.append(f"{type(e).__name__}: {e}")
    stats.append((calls, fails))


def _run_threads(jobs, seconds, seed):
    deadline = time.monotonic() + seconds
    stats, errors = [], []
    threads = [threading.Thread(target=_worker, args=(jobs, deadline, seed + i, stats, errors))
               for i in range(THREADS)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return stats, errors


def test_eight_threads_for_a_while():
    jobs = [_Job(170000 + i, s) for i, s in enumerate(_specs())]
    # Warm-up: thread arenas of malloc, torch's allocator caches, the library's pool.
    warm = max(2.0, SECONDS * 0.2)
    stats, errors = _run_threads(jobs, warm, 1)
    assert not errors, errors[:5]
    gc.collect()
    rss0 = _rss_bytes()
    samples = []
    rounds = 4
    total_calls = total_fails = 0
    for r in range(rounds):
        stats, errors = _run_threads(jobs, (SECONDS - warm) / rounds, 100 * (r + 2))
        assert not errors, errors[:5]
        total_calls += sum(c for c, _ in stats)
        total_fails += sum(f for _, f in stats)
        gc.collect()
        samples.append(_rss_bytes())
    growth = max(samples) - rss0
    print(f"\nstress: {SECONDS:.0f} s, {THREADS} threads, {total_calls} calls, {total_fails} refused "
          f"bad tables, RSS {rss0 / 2**20:.1f} MiB -> {[round(s / 2**20, 1) for s in samples]} MiB")
    assert total_calls > 0 and total_fails > 0
    # Flat: a leak of even 100 bytes per call would show as megabytes here. (Not under
    # AddressSanitizer, whose quarantine of freed memory grows the RSS by design; it reports
    # leaks and bad accesses itself.)
    if "asan" not in os.environ.get("LD_PRELOAD", ""):
        assert growth < 16 * 2**20, f"RSS grew by {growth / 2**20:.1f} MiB"
    for job in jobs:
        now = [sys.getrefcount(t) for t in job.tensors]
        assert now == job.refs, f"{job.case}: reference counts {job.refs} -> {now}"


# The child blocks `import torch`, so custom_ops runs on numpy alone: the script never uses torch,
# and loading torch under LeakSanitizer with slow unwinding took 31 of the child's 34 s here.
_LSAN_SCRIPT = r"""
import sys
sys.modules["torch"] = None  # import torch now raises ImportError
import ctypes, numpy as np, custom_ops
assert not custom_ops.__dict__.get("_torch"), "torch was loaded"
op = custom_ops.incre_flash_attention_v5
rng = np.random.default_rng(0)
B, N, KVN, D, bs, nb = 2, 4, 2, 32, 16, 8
q = rng.standard_normal((B, N, 1, D)).astype(np.float16)
cache = rng.standard_normal((nb, bs, KVN * D)).astype(np.float16)
table = np.arange(B * 4, dtype=np.int32).reshape(B, 4) % nb
pos = np.full((B, KVN, 4), 0x7FFFFFFF, np.int32); pos[:, :, :2] = [0, 2]
kw = dict(num_heads=N, key_num_heads=KVN, layout="BNSD", block_size=bs)
for i in range(100):
    op(q, [cache], [cache], None, None, [2 * bs, bs], block_table=table, block_position=pos, **kw)
    op(q, [cache], [cache], None, None, np.array([2 * bs, 7], np.int64), block_table=table, **kw)
    out = np.empty(q.shape, np.float16)
    op(q, [cache], [cache], None, None, [5, 9], block_table=table, out=out, **kw)
    op(q, [cache], [cache], None, None, [5, 9], block_table=table, quant_scale2=np.ones(1, np.float32), **kw)
    qc = rng.standard_normal((B, N, 40, D)).astype(np.float32)
    kv = [qc[b:b + 1, :KVN] for b in range(B)]
    op(q.astype(np.float32), kv, kv, num_heads=N, key_num_heads=KVN, layout="BNSD")
    for bad in (dict(block_table=table + 100), dict(block_position=pos + 50),
                dict(num_heads=3), dict(layout="XYZ"), dict(block_size=0)):
        args = dict(kw, block_table=table, block_position=pos)
        args.update(bad)
        try:
            op(q, [cache], [cache], None, None, [2 * bs, bs], **args)
            raise SystemExit("accepted: %r" % bad)
        except (ValueError, TypeError):
            pass
    for bad_arg in ("x", [1, "a"], [2**70], object()):
        try:
            op(q, [cache], [cache], None, None, bad_arg, block_table=table, **kw)
        except (ValueError, TypeError, OverflowError):
            pass
    try:
        op(q, [cache, cache], [cache], None, None, [1, 1], block_table=table, **kw)
    except (ValueError, TypeError):
        pass
    custom_ops.validate(q, [cache], [cache], None, None, [2 * bs, bs], block_table=table, **kw)
# A deliberate leak outside the extension proves that LeakSanitizer is watching.
libc = ctypes.CDLL(None)
libc.malloc.restype = ctypes.c_void_p
leak = libc.malloc(12345)
leak = None
print("done")
"""


def test_extension_leaks_nothing_under_lsan(tmp_path):
    lsan = subprocess.run(["gcc", "-print-file-name=liblsan.so"], capture_output=True, text=True)
    path = lsan.stdout.strip()
    if lsan.returncode != 0 or not os.path.isabs(path) or not os.path.exists(path):
        pytest.skip("gcc's liblsan.so is not installed")
    if "address" in os.environ.get("LD_PRELOAD", "") or "asan" in os.environ.get("LD_PRELOAD", ""):
        pytest.skip("already running under AddressSanitizer")
    script = tmp_path / "lsan_child.py"
    script.write_text(_LSAN_SCRIPT)
    env = dict(os.environ, LD_PRELOAD=path, PYTHONMALLOC="malloc",
               LSAN_OPTIONS="exitcode=0:fast_unwind_on_malloc=0:malloc_context_size=30")
    here = os.path.dirname(os.path.abspath(__file__))
    r = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, env=env,
                       cwd=here, timeout=600)
    assert r.returncode == 0 and "done" in r.stdout, r.stdout[-2000:] + r.stderr[-4000:]
    report = r.stderr
    assert "LeakSanitizer" in report and "12345 byte" in report, \
        "LeakSanitizer did not report the deliberate leak: " + report[-2000:]
    leaks = [blk for blk in report.split("\n\n") if "leak of" in blk]
    ours = [blk for blk in leaks if "custom_ops" in blk or "_C.cpython" in blk or "ifa_" in blk]
    assert not ours, "leaks through the extension:\n" + "\n\n".join(ours[:5])
