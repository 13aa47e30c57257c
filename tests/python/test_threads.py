"""Thread safety and thread-count independence.

Several Python threads calling the operator at once (mixed shapes) must give bit-identical results to
serial calls; set_num_threads(1) and (2) must both match the golden."""

import threading

import numpy as np
import pytest

from cases import assert_matches, make_case, op, random_case, result_np

torch = pytest.importorskip("torch", reason="uses torch tensors")


def _cases():
    out = []
    specs = [dict(form="pagedpos4", layout="BNSD", qdtype="float16", lens=[700, 0, 33], B=3),
             dict(form="contig", layout="BSH", qdtype="bfloat16", B=2),
             dict(form="list", layout="BSND", qdtype="float32", B=3),
             dict(form="paged3", layout="BSH", qdtype="float16", kvdtype="int8", antiquant="ch_nd", B=2),
             dict(form="pad", layout="BNSD", qdtype="int8", B=2, out_quant="tensor"),
             dict(form="pagedpos3", layout="BSND", qdtype="bfloat16", B=1, lens=[1500], bs=16)]
    for i, s in enumerate(specs):
        out.append(random_case(160000 + i, **s))
    return out


def test_set_get_num_threads(restore_threads):
    co = restore_threads
    for n in (1, 2, 3):
        co.set_num_threads(n)
        assert co.get_num_threads() == n
    with pytest.raises(ValueError):
        co.set_num_threads(0)
    with pytest.raises(TypeError, match="^n: expected an int"):
        co.set_num_threads(True)
    assert co.get_num_threads() == 3
    # The range is [1, 1024], both ends included (ifa.h).
    co.set_num_threads(1024)
    assert co.get_num_threads() == 1024
    with pytest.raises(ValueError, match="1024"):
        co.set_num_threads(1025)
    assert co.get_num_threads() == 1024


@pytest.mark.parametrize("nthreads", [1, 2])
def test_concurrent_calls_match_serial(restore_threads, nthreads):
    restore_threads.set_num_threads(nthreads)
    cases = _cases()
    kws = [c.kwargs("torch") for c in cases]
    serial = [result_np(op()(**kw)) for kw in kws]
    for c, kw in zip(cases, kws):
        assert_matches(c, op()(**kw))
    results = {}
    errors = []

    def worker(tid):
        try:
            order = np.random.default_rng(tid).permutation(len(kws))
            for rep in range(3):
                for i in order:
                    results[(tid, rep, int(i))] = result_np(op()(**kws[i]))
        except Exception as e:  # pragma: no cover - reported below
            errors.append(e)

    threads = [threading.Thread(target=worker, args=(t,)) for t in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors
    assert len(results) == 6 * 3 * len(kws)
    for (tid, rep, i), r in results.items():
        assert np.array_equal(r, serial[i], equal_nan=True), f"thread {tid} rep {rep} case {i} differs"


def test_one_vs_two_threads(restore_threads):
    co = restore_threads
    for c in _cases():
        co.set_num_threads(1)
        a = op()(**c.kwargs("torch"))
        co.set_num_threads(2)
        b = op()(**c.kwargs("torch"))
        assert_matches(c, a)
        assert_matches(c, b)


def test_concurrent_calls_with_errors(restore_threads):
    """Failing calls in some threads do not disturb good calls in others."""
    cases = _cases()[:3]
    good = [c.kwargs("torch") for c in cases]
    serial = [result_np(op()(**kw)) for kw in good]
    bad = dict(good[0])
    bad["inner_precise"] = 7
    fails = []

    def run_good(i):
        for _ in range(5):
            if not np.array_equal(result_np(op()(**good[i])), serial[i]):
                fails.append(i)

    def run_bad():
        for _ in range(20):
            try:
                op()(**bad)
                fails.append("bad call succeeded")
            except ValueError:
                pass

    ts = [threading.Thread(target=run_good, args=(i,)) for i in range(3)]
    ts += [threading.Thread(target=run_bad) for _ in range(2)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    assert not fails, fails


@pytest.mark.parametrize("lens", [[2100] + [17] * 8, [1500, 3, 0, 600, 9, 40, 1, 2, 70]])
@pytest.mark.parametrize("form", ["paged3", "pagedpos4", "contig"])
def test_ragged_batch_split(restore_threads, form, lens):
    """One sequence longer than a thread's share of the call: every sequence is cut into chunks
    of at least 512 tokens (plan.c), short ones leave chunks empty; with two threads the result
    still matches the golden, and one thread's."""
    layout = "BNSD" if form == "pagedpos4" else "BSH"
    case = make_case(np.random.default_rng(161000 + len(lens)), layout=layout, form=form,
                     qdtype="float16", B=len(lens), KVN=2, G=2, D=32, lens=lens, bs=16,
                     pse="B", mask="(B,S)")
    restore_threads.set_num_threads(2)
    two = op()(**case.kwargs("torch"))
    assert_matches(case, two)
    restore_threads.set_num_threads(1)
    assert_matches(case, op()(**case.kwargs("torch")))


MANY_THREADS_SPECS = [
    # B = 1, 8 heads side by side: the tokens cut in up to 16 chunks (plan.c), merged per head
    dict(layout="BSH", form="paged3", qdtype="float16", B=1, KVN=8, G=4, D=32, bs=16, lens=[4500]),
    dict(layout="BSND", form="paged3", qdtype="bfloat16", kvdtype="int8", antiquant="ch_nd", B=1,
         KVN=8, G=4, D=32, bs=16, lens=[3100], inner_precise=1),
    # full quantisation may not split the tokens: the heads go to their own tiles instead
    dict(layout="BSH", form="paged3", qdtype="int8", B=1, KVN=8, G=2, D=32, bs=16, lens=[2500]),
    # per-head pages (sparse), two sequences
    dict(layout="BSH", form="pagedpos3", qdtype="float16", B=2, KVN=4, G=2, D=32, bs=16,
         lens=[3000, 1900]),
    # a ragged batch: one long sequence beside short ones
    dict(layout="BSH", form="paged3", qdtype="float16", B=4, KVN=2, G=2, D=32, bs=16,
         lens=[2600, 17, 0, 600], pse="B", mask="(B,S)"),
    dict(layout="BNSD", form="contig", qdtype="float32", B=3, KVN=2, G=3, D=40, lens=[1700, 1200, 5]),
]


@pytest.mark.parametrize("nthreads", [3, 4, 8, 16])
@pytest.mark.parametrize("spec", range(len(MANY_THREADS_SPECS)))
def test_many_threads(restore_threads, nthreads, spec):
    """More threads than this machine's cores, as on a larger host: the plans that cut the tokens
    in many chunks (and merge them), give the heads their own tiles, or split a ragged batch,
    against the golden."""
    case = random_case(162000 + spec, **MANY_THREADS_SPECS[spec])
    restore_threads.set_num_threads(nthreads)
    assert_matches(case, op()(**case.kwargs("torch")))
