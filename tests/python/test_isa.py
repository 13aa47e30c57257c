"""Every kernel family the CPU can run (ref, avx2, avx512) against the golden: a forced path must be
as correct as the automatic choice.  ISAs this CPU (or this build) lacks are skipped with a reason."""

import pytest

from cases import DMODES_ALL, ISAS, check_case, pick_backend, random_case


@pytest.mark.parametrize("forced_isa", ISAS, indirect=True)
@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize("dmode", DMODES_ALL)
def test_isa_against_golden(forced_isa, dmode, seed):
    s = 180000 + 100 * DMODES_ALL.index(dmode) + seed
    kw = dict(qdtype="int8") if dmode == "i8q" else (
        dict(qdtype=dmode[5:], kvdtype="int8") if dmode.startswith("i8kv-") else dict(qdtype=dmode))
    case = random_case(s, **kw)
    check_case(case, pick_backend(case, s))


def test_set_isa_unknown_name(custom_ops_mod):
    with pytest.raises(ValueError, match="sse9"):
        custom_ops_mod.set_isa("sse9")
    with pytest.raises(TypeError, match="name: expected a str"):
        custom_ops_mod.set_isa(2)
