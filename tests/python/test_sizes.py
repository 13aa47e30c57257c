"""Sizes at the edges of the integer types: clear errors (or correct results), never a crash, a
hang or a silent wrong answer.

Huge shapes cost nothing here: torch's expand and numpy's as_strided give views whose zero
strides make every element alias one, so a (1, 2**62, 1) KV cache is a few bytes. The library
trusts views to describe valid memory (ifa.h), and such views do. Element-count overflow of a
single view (which neither torch nor numpy can even construct) is covered by the C tests
(test_errors) and the fuzz corpus (tests/fuzz/corpus/validate).
"""

import numpy as np
import pytest
from numpy.lib.stride_tricks import as_strided

torch = pytest.importorskip("torch", reason="uses torch tensors")

SENTINEL = 0x7FFFFFFF
INT32_MAX, INT64_MAX = 2**31 - 1, 2**63 - 1


def _op():
    import custom_ops

    return custom_ops.incre_flash_attention_v5


def huge(shape, dtype=torch.float32, value=1.0):
    """A read-only view of any shape over one element."""
    return torch.full((1,) * len(shape), value, dtype=dtype).expand(*shape)


def small():
    g = torch.Generator().manual_seed(1)
    return torch.randn(1, 1, 8, generator=g), torch.randn(1, 4, 8, generator=g), torch.randn(1, 4, 8, generator=g)


# ---- byte counts beyond 64 bits -------------------------------------------------------------------


def test_key_byte_extent_overflowing_64_bits():
    q, k, v = (t.numpy() for t in small())
    bad = as_strided(k, shape=(1, 4, 8), strides=(0, 2**62, 4))
    with pytest.raises(ValueError, match=r"key_list\[0\].*overflows 64 bits"):
        _op()(q, [bad], [v])


def test_byte_extent_near_the_limit_of_pse():
    q, k, v = small()
    pse = as_strided(np.zeros(1, np.float32), shape=(1, 1, 1, 4), strides=(0, 0, 0, 2**62))
    with pytest.raises(ValueError, match=r"pse_shift.*overflows 64 bits"):
        _op()(q, [k], [v], pse_shift=pse)


# ---- lengths near and beyond INT32_MAX ------------------------------------------------------------


@pytest.mark.parametrize("length", [INT32_MAX, INT32_MAX + 1, 2**32 + 1, 2**40, INT64_MAX])
@pytest.mark.parametrize("form", ["list", "int32", "int64"])
def test_length_longer_than_the_cache(length, form):
    q, k, v = small()
    if form == "list":
        lengths = [length]
    elif form == "int32":
        if length > INT32_MAX:
            pytest.skip("does not fit int32")
        lengths = torch.tensor([length], dtype=torch.int32)
    else:
        lengths = torch.tensor([length], dtype=torch.int64)
    with pytest.raises(ValueError, match=rf"actual_seq_lengths\[0\] = {length} is longer"):
        _op()(q, [k], [v], actual_seq_lengths=lengths)


@pytest.mark.parametrize("length", [2**63, 2**64, -(2**63) - 1])
def test_length_not_fitting_64_bits(length):
    q, k, v = small()
    with pytest.raises(ValueError, match="actual_seq_lengths"):
        _op()(q, [k], [v], actual_seq_lengths=[length])


@pytest.mark.parametrize("length", [-1, -(2**31), -(2**63)])
def test_negative_length(length):
    q, k, v = small()
    with pytest.raises(ValueError, match="negative"):
        _op()(q, [k], [v], actual_seq_lengths=[length])


@pytest.mark.parametrize("pad,length", [(INT64_MAX, 2), (INT64_MAX, INT64_MAX), (2**62, 2**62),
                                        (INT32_MAX, INT32_MAX), (3, INT64_MAX)])
def test_left_padding_beyond_the_cache_gives_zeros(pad, length):
    """start = S - pad - L < 0: zeros (SPEC 4.2). Found by fuzz_validate: S - pad - L used to
    overflow int64 (undefined behaviour) for pad and L near INT64_MAX."""
    q, k, v = small()
    out = _op()(q, [k], [v], actual_seq_lengths=[length], kv_padding_size=torch.tensor([pad]))
    assert torch.count_nonzero(out) == 0


# ---- block_size x table width ---------------------------------------------------------------------


@pytest.mark.parametrize("bs", [2**31, 2**32 + 3, 2**62])
def test_block_size_times_width_overflowing(bs):
    """bs * M beyond int64 (or int32) holds every length: a short sequence in page 0 works.
    Before the fix the overflowing capacity was reported as 'longer than block_table'."""
    q = torch.ones(1, 1, 1)
    cache_k = huge((1, bs, 1), value=2.0)
    cache_v = huge((1, bs, 1), value=3.0)
    table = torch.zeros(1, 4, dtype=torch.int32)
    out = _op()(q, [cache_k], [cache_v], actual_seq_lengths=[5], block_table=table, block_size=bs)
    assert out.item() == 3.0
    pos = torch.full((1, 1, 2), SENTINEL, dtype=torch.int32)
    pos[0, 0, 0] = 3
    out = _op()(q, [cache_k], [cache_v], actual_seq_lengths=[5], block_table=table,
                block_position=pos, block_size=bs)
    assert out.item() == 3.0


def test_length_near_int32_max_with_a_wide_table():
    """L = INT32_MAX over a (1, 2**40)-wide table: the first bad entry is reported at once
    (validation stops at the first error, it does not walk 2**27 pages)."""
    q = torch.ones(1, 1, 8)
    cache = huge((1, 16, 8))
    table = huge((1, 2**40), dtype=torch.int32, value=5)
    with pytest.raises(ValueError, match=r"block_table\[0\]\[0\] = 5 is outside the key cache \(1 blocks\)"):
        _op()(q, [cache], [cache], actual_seq_lengths=[INT32_MAX], block_table=table, block_size=16)


def test_length_near_int32_max_beyond_block_position():
    q = torch.ones(1, 1, 8)
    cache = huge((1, 16, 8))
    table = torch.zeros(1, 4, dtype=torch.int32)
    pos = torch.full((1, 1, 2), SENTINEL, dtype=torch.int32)
    with pytest.raises(ValueError, match=r"needs 134217728 slots of block_size 16 but block_position has P = 2"):
        _op()(q, [cache], [cache], actual_seq_lengths=[INT32_MAX], block_table=table,
              block_position=pos, block_size=16)


def test_length_beyond_table_capacity_in_32_bits():
    """bs * M = 2**32 exceeds uint32; L = 2**32 + 1 is one token too many."""
    q = torch.ones(1, 1, 8)
    cache = huge((1, 2**16, 8))
    table = huge((1, 2**16), dtype=torch.int32, value=0)
    with pytest.raises(ValueError, match="is longer than block_table's 65536 pages of 65536 tokens"):
        _op()(q, [cache], [cache], actual_seq_lengths=[2**32 + 1], block_table=table, block_size=2**16)


# ---- huge D, N and scalar arguments -------------------------------------------------------------


def test_head_size_at_the_limit_works():
    q = torch.ones(1, 1, 65536)
    kv = huge((1, 3, 65536), value=0.5)
    out = _op()(q, [kv], [kv])
    assert bool((out == 0.5).all())


@pytest.mark.parametrize("D", [65537, 2**31, 2**40])
def test_huge_head_size(D):
    """With out= (a view, so nothing of that size is allocated): the error names D. (Without out=
    the package first allocates an output of the query's size, whose failure is torch's or
    numpy's error: see docs/reliability.md.)"""
    q = huge((1, 1, D))
    kv = huge((1, 4, D))
    out = as_strided(np.zeros(1, np.float32), shape=(1, 1, D), strides=(4, 4, 4))
    with pytest.raises(ValueError, match=rf"head size D = {D} is larger than the supported 65536"):
        _op()(q.numpy(), [kv.numpy()], [kv.numpy()], out=out)


def test_output_with_zero_stride_is_refused():
    """An expanded output would have several threads write one element."""
    q, k, v = small()
    out = torch.zeros(1, 1, 1).expand(1, 1, 8)
    with pytest.raises(ValueError, match="out: dimension 2 of size 8 has stride 0"):
        _op()(q, [k], [v], out=out)


@pytest.mark.parametrize("name", ["num_heads", "key_num_heads", "block_size", "inner_precise"])
@pytest.mark.parametrize("value", [2**63, 2**64, -(2**63) - 1])
def test_integer_arguments_beyond_64_bits(name, value):
    q, k, v = small()
    with pytest.raises(ValueError, match=name):
        _op()(q, [k], [v], **{name: value})


@pytest.mark.parametrize("heads", [2**31, 2**40, INT64_MAX])
def test_huge_num_heads(heads):
    q, k, v = small()
    with pytest.raises(ValueError, match="num_heads|hidden size"):
        _op()(q, [k], [v], num_heads=heads)


def test_huge_query_without_out_reports_the_argument_not_the_allocator():
    """Without out=, the package allocates the output first; when that allocation fails for an
    absurd query (a broadcast view with D = 2**40), the error still names the parameter. numpy
    rather than torch: torch's allocator throws a C++ exception, which a preloaded ASan runtime
    (the sanitizer run of scripts/test.sh) cannot intercept."""
    import numpy as np

    import custom_ops

    q = np.broadcast_to(np.zeros(1, dtype=np.float16), (1, 1, 1, 2**40))
    k = np.zeros((1, 1, 4, 8), dtype=np.float16)
    with pytest.raises(ValueError, match="query"):
        custom_ops.incre_flash_attention_v5(q, k, k, num_heads=1, layout="BNSD")
