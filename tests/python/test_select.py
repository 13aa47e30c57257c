"""Block selection: custom_ops.page_summaries / update_page_summaries / select_blocks.

Each result is judged by a float64 golden written here from the definition (Quest, Tang et al.
2024): per-block min/max keys over the valid rows, the page score sum_d max(q_d*kmax_d, q_d*kmin_d)
combined over the G query heads of a KV head by max, the top pages with ties to the lower page
index, sinks first and the last page last, and the compact length (k-1)*bs + r. The end-to-end test
checks that incre_flash_attention_v5 with the returned (block_position, lengths) computes exactly
attention over the chosen pages.
"""

import numpy as np
import pytest

import custom_ops
from cases import ISAS

torch = pytest.importorskip("torch")

SENT = custom_ops.BLOCK_UNSELECTED


def make_case(seed, B=3, N=8, KVN=2, D=16, bs=4, M=12, lengths=None, dtype=torch.float32,
              form="3d", integers=False):
    g = torch.Generator().manual_seed(seed)
    nb = B * M + 2
    if integers:
        keys = torch.randint(-3, 4, (nb, bs, KVN, D), generator=g).float()
    else:
        keys = torch.rand(nb, bs, KVN, D, generator=g) * 4 - 2
    keys = keys.to(dtype)
    if form == "3d":
        cache = keys.reshape(nb, bs, KVN * D)
    else:
        cache = keys.permute(0, 2, 1, 3).contiguous()
    table = torch.randperm(nb, generator=g)[: B * M].to(torch.int32).view(B, M)
    if lengths is None:
        lengths = [M * bs - 1, (M // 2) * bs, 3][:B]
    return keys.double(), cache, table, list(lengths)


def golden_summaries(keys, table, lengths, bs):
    """float64 (nb, KVN, 2, D); rows of a block = max over its references."""
    nb, _, KVN, D = keys.shape
    rows = np.zeros(nb, dtype=np.int64)
    for b, L in enumerate(lengths):
        for j in range(-(-L // bs)):
            blk = int(table[b, j])
            rows[blk] = max(rows[blk], min(bs, L - j * bs))
    out = np.empty((nb, KVN, 2, D))
    out[:, :, 0] = np.inf
    out[:, :, 1] = -np.inf
    k = keys.numpy()
    for blk in range(nb):
        if rows[blk]:
            out[blk, :, 0] = k[blk, : rows[blk]].min(0)
            out[blk, :, 1] = k[blk, : rows[blk]].max(0)
    return out


def golden_select(q, summ, table, lengths, bs, k, sink, KVN):
    """q: float64 (B, N, D). Returns (positions list per (b, h), compact lengths, scores)."""
    B, N, D = q.shape
    G = N // KVN
    sel, lens, scores = {}, [], {}
    for b, L in enumerate(lengths):
        n = -(-L // bs)
        lens.append(L if n <= k else (k - 1) * bs + L - (n - 1) * bs)
        for h in range(KVN):
            if n <= k:
                sel[b, h] = list(range(n))
                continue
            blks = table[b, :n].numpy().astype(np.int64)
            lo, hi = summ[blks, h, 0], summ[blks, h, 1]          # (n, D)
            qs = q[b, h * G:(h + 1) * G]                          # (G, D)
            # A NaN score ranks below everything (docs/selection.md): the group's score is the
            # largest of its heads' that are not NaN, and NaN if all are.
            per_head = np.maximum(qs[:, None] * hi[None], qs[:, None] * lo[None]).sum(-1)
            s = np.fmax.reduce(per_head, axis=0)
            s = np.where(np.isnan(s), -np.inf, s)
            middle = sorted(range(sink, n - 1), key=lambda j: (-s[j], j))[: k - sink - 1]
            sel[b, h] = list(range(sink)) + sorted(middle) + [n - 1]
            scores[b, h] = s
    return sel, lens, scores


def query_as(q, layout):
    """q (B, N, D) -> the layout's shape."""
    B, N, D = q.shape
    if layout == "BSH":
        return q.reshape(B, 1, N * D)
    if layout == "BSND":
        return q.reshape(B, 1, N, D)
    return q.reshape(B, N, 1, D)


def check_selection(pos, lens, gsel, glens, gscores, k, sink, bs, lengths, exact):
    pos = np.asarray(pos)
    assert list(np.asarray(lens)) == glens
    B, KVN, P = pos.shape
    for b in range(B):
        for h in range(KVN):
            want = gsel[b, h]
            got = pos[b, h]
            assert (got[len(want):] == SENT).all(), (b, h, got)
            got = list(got[: len(want)])
            if exact or got == want:
                assert got == want, (b, h, got, want)
                continue
            # Near-ties in float32 may swap a middle page for one of (almost) the same score.
            n = -(-lengths[b] // bs)
            assert got[:sink] == want[:sink] and got[-1] == n - 1
            assert got == sorted(got)
            s = gscores[b, h]
            thr = min(s[j] for j in want[sink:-1])
            for j in got[sink:-1]:
                assert s[j] >= thr - 1e-4 * (1 + abs(thr)), (b, h, j)


# ---- Summaries -------------------------------------------------------------------------------

@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
@pytest.mark.parametrize("form", ["3d", "4d"])
def test_summaries_golden(dtype, form):
    keys, cache, table, lengths = make_case(1, dtype=dtype, form=form, lengths=[47, 24, 0])
    table[2, 0] = table[0, 0]  # a block referenced twice (by a sequence of length 0: unused)
    table[1, 1] = table[0, 1]  # shared by two sequences
    s = custom_ops.page_summaries(cache, table, lengths, key_num_heads=2)
    assert s.dtype == torch.float32 and s.shape == (cache.shape[0], 2, 2, 16)
    np.testing.assert_array_equal(s.numpy(), golden_summaries(keys, table, lengths, 4))


def test_summaries_numpy_and_out():
    keys, cache, table, lengths = make_case(2)
    g = golden_summaries(keys, table, lengths, 4)
    s = custom_ops.page_summaries(cache.numpy(), table.numpy(), np.array(lengths), key_num_heads=2)
    assert isinstance(s, np.ndarray)
    np.testing.assert_array_equal(s, g)
    out = torch.zeros(cache.shape[0], 2, 2, 16)
    assert custom_ops.page_summaries(cache, table, lengths, key_num_heads=2, out=out) is out
    np.testing.assert_array_equal(out.numpy(), g)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
@pytest.mark.parametrize("mode", ["tensor", "channel", "channel4", "channel1", "token"])
def test_summaries_int8(mode, dtype):
    g = torch.Generator().manual_seed(5)
    B, KVN, D, bs, M = 2, 2, 8, 4, 5
    nb = B * M
    k8 = torch.randint(-128, 128, (nb, bs, KVN * D), generator=g, dtype=torch.int8)
    table = torch.arange(nb, dtype=torch.int32).view(B, M)
    lengths = [18, 7]
    kw = {}
    if mode == "token":
        scale = (torch.rand(2, B, 20, generator=g) * 0.2 - 0.1).to(dtype)
        offset = torch.randint(-2, 3, (2, B, 20), generator=g).to(dtype)
        kw["antiquant_mode"] = 1
        tok = torch.arange(nb * bs).view(nb, bs) % (M * bs)
        bat = torch.arange(nb * bs).view(nb, bs) // (M * bs)
        deq = (k8.float() + offset[0].float()[bat, tok][..., None]) * \
            scale[0].float()[bat, tok][..., None]
    else:
        shape = {"tensor": (2,), "channel": (2, KVN * D), "channel4": (2, KVN, 1, D),
                 "channel1": (2, 1, KVN, D)}[mode]
        scale = (torch.rand(shape, generator=g) * 0.2 - 0.1).to(dtype)
        offset = torch.randint(-2, 3, shape, generator=g).to(dtype)
        c, o = scale[0].float().reshape(-1), offset[0].float().reshape(-1)
        deq = (k8.float() + o) * c
    s = custom_ops.page_summaries(k8, table, lengths, key_num_heads=KVN, antiquant_scale=scale,
                                  antiquant_offset=offset, **kw)
    want = golden_summaries(deq.double().view(nb, bs, KVN, D), table, lengths, bs)
    np.testing.assert_allclose(s.numpy(), want, rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize("new", [1, 3, [0, 5, 2], 9, [0, 0, 0]])
def test_update_matches_full(new):
    keys, cache, table, lengths = make_case(3, lengths=[20, 14, 1])
    s = custom_ops.page_summaries(cache, table, lengths, key_num_heads=2)
    counts = [new] * 3 if isinstance(new, int) else new
    g = torch.Generator().manual_seed(9)
    view = cache.view(cache.shape[0], 4, 2, 16)
    for b, n in enumerate(counts):
        for t in range(lengths[b], lengths[b] + n):
            view[table[b, t // 4], t % 4] = torch.rand(2, 16, generator=g) * 10 - 5
        lengths[b] += n
    spare = sorted(set(range(cache.shape[0])) - set(table.flatten().tolist()))[0]  # unreferenced
    s[spare] = 7.0
    before = s.clone()
    assert custom_ops.update_page_summaries(s, cache, table, lengths, new, key_num_heads=2) is s
    want = golden_summaries(view.double(), table, lengths, 4)
    want[spare] = 7.0
    np.testing.assert_array_equal(s.numpy(), want)
    # Only the touched blocks changed.
    touched = {int(table[b, j]) for b, n in enumerate(counts) if n
               for j in range((lengths[b] - n) // 4, (lengths[b] - 1) // 4 + 1)}
    changed = {i for i in range(s.shape[0]) if not torch.equal(s[i], before[i])}
    assert changed <= touched


def test_update_of_a_block_two_sequences_share():
    """Sequence 0's page 5 and sequence 1's page 3 are one physical block, and both gain tokens
    in it: 2 rows of it are valid for sequence 0 and 3 for sequence 1. The update must summarise
    the block over the 3 rows, as page_summaries does (a block keeps its reference with the most
    rows), not over the 2 of the other reference."""
    keys, cache, table, lengths = make_case(3, lengths=[20, 14, 1])
    table[1, 3] = table[0, 5]
    s = custom_ops.page_summaries(cache, table, lengths, key_num_heads=2)
    view = cache.view(cache.shape[0], 4, 2, 16)
    blk = int(table[0, 5])
    view[blk, :2] = torch.rand(2, 2, 16, generator=torch.Generator().manual_seed(9)) - 0.5
    view[blk, 2] = 9.0                      # sequence 1's token 14: only its reference covers it
    lengths = [22, 15, 1]
    custom_ops.update_page_summaries(s, cache, table, lengths, [2, 1, 0], key_num_heads=2)
    want = golden_summaries(view.double(), table, lengths, 4)
    assert want[blk, :, 1].max() == 9.0
    np.testing.assert_array_equal(s.numpy(), want)
    full = custom_ops.page_summaries(cache, table, lengths, key_num_heads=2)
    np.testing.assert_array_equal(full.numpy(), want)


# ---- Selection -------------------------------------------------------------------------------

@pytest.mark.parametrize("layout", ["BSH", "BSND", "BNSD"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
@pytest.mark.parametrize("N,KVN,k,sink", [(4, 4, 5, 0), (8, 2, 4, 1), (6, 1, 6, 2), (2, 2, 1, 0)])
def test_select_golden(layout, dtype, N, KVN, k, sink):
    keys, cache, table, lengths = make_case(11, N=N, KVN=KVN, M=16, lengths=[63, 32, 9])
    s = custom_ops.page_summaries(cache, table, lengths, key_num_heads=KVN)
    q = (torch.rand(3, N, 16, generator=torch.Generator().manual_seed(4)) * 4 - 2).to(dtype)
    pos, lens = custom_ops.select_blocks(query_as(q, layout), s, table, lengths, k=k,
                                         sink_pages=sink, num_heads=N, key_num_heads=KVN,
                                         layout=layout, block_size=4)
    assert pos.dtype == torch.int32 and pos.shape == (3, KVN, k)
    assert lens.dtype == torch.int64
    gsel, glens, gsc = golden_select(q.double().numpy(), s.double().numpy(), table, lengths, 4, k,
                                     sink, KVN)
    check_selection(pos, lens, gsel, glens, gsc, k, sink, 4, lengths, exact=False)


def _select(q, s, table, lengths, N, KVN, k, sink, bs=4):
    """select_blocks on q (B, N, D), passed in BSH, and the golden's answer beside it."""
    pos, lens = custom_ops.select_blocks(q.reshape(q.shape[0], 1, -1), s, table, lengths, k=k,
                                         sink_pages=sink, num_heads=N, key_num_heads=KVN,
                                         block_size=bs)
    gsel, glens, gsc = golden_select(q.double().numpy(), s.double().numpy(), table, lengths, bs, k,
                                     sink, KVN)
    return pos, lens, gsel, glens, gsc


@pytest.mark.parametrize("forced_isa", ISAS, indirect=True)
def test_select_ties_exact(forced_isa):
    # Integer data: exact scores, many identical pages; the lower page must win every tie.
    keys, cache, table, lengths = make_case(12, N=4, KVN=2, M=30, lengths=[117, 80, 40],
                                            integers=True)
    view = cache.view(cache.shape[0], 4, 2, 16)
    for blk in range(0, cache.shape[0], 2):
        view[blk] = view[0]
    s = custom_ops.page_summaries(cache, table, lengths, key_num_heads=2)
    q = torch.randint(-2, 3, (3, 4, 16), generator=torch.Generator().manual_seed(1)).float()
    for k, sink in ((7, 1), (12, 0), (3, 2)):
        pos, lens, gsel, glens, gsc = _select(q, s, table, lengths, 4, 2, k, sink)
        check_selection(pos, lens, gsel, glens, gsc, k, sink, 4, lengths, exact=True)


@pytest.mark.parametrize("forced_isa", ISAS, indirect=True)
def test_select_negative_scores(forced_isa):
    """Every key in [-3, -1] and every query element in [0.5, 1.5]: every page scores below zero,
    where the order of the scores' bit patterns is reversed (select_blocks.c, score_key)."""
    keys, cache, table, lengths = make_case(14, N=4, KVN=2, M=16, lengths=[63, 50, 33])
    cache = -(cache.abs() + 1.0)
    s = custom_ops.page_summaries(cache, table, lengths, key_num_heads=2)
    q = torch.rand(3, 4, 16, generator=torch.Generator().manual_seed(2)) + 0.5
    for k, sink in ((5, 1), (8, 0)):
        pos, lens, gsel, glens, gsc = _select(q, s, table, lengths, 4, 2, k, sink)
        assert all((v < 0).all() for v in gsc.values())
        check_selection(pos, lens, gsel, glens, gsc, k, sink, 4, lengths, exact=False)


@pytest.mark.parametrize("forced_isa", ISAS, indirect=True)
def test_select_nan_scores_rank_last(forced_isa):
    """docs/selection.md: a NaN score ranks below everything. Pages whose summaries hold a NaN
    (for KV head 0) are chosen only when too few others remain; a query head that is NaN leaves
    its group's scores to the other head (KV head 1: query head 2 is NaN, head 3 decides)."""
    keys, cache, table, lengths = make_case(15, N=4, KVN=2, M=16, lengths=[63, 50, 33])
    s = custom_ops.page_summaries(cache, table, lengths, key_num_heads=2)
    nan_pages = {0: [2, 3, 7, 9, 10], 1: [1, 4, 5], 2: [3, 4, 5, 6]}
    for b, pages in nan_pages.items():
        for j in pages:
            s[int(table[b, j]), 0, :, 5] = float("nan")
    q = torch.rand(3, 4, 16, generator=torch.Generator().manual_seed(3)) * 4 - 2
    q[:, 2] = float("nan")
    for k, sink in ((5, 1), (12, 0), (9, 2)):
        pos, lens, gsel, glens, gsc = _select(q, s, table, lengths, 4, 2, k, sink)
        check_selection(pos, lens, gsel, glens, gsc, k, sink, 4, lengths, exact=False)
        for b, pages in nan_pages.items():
            n = -(-lengths[b] // 4)
            nan_middle = {j for j in pages if sink <= j < n - 1}
            if n > k and n - 1 - sink - len(nan_middle) >= k - sink - 1:
                assert not nan_middle & set(np.asarray(pos[b, 0]).tolist()), (b, k, sink)


def test_select_edges():
    keys, cache, table, lengths = make_case(13, B=4, M=6, lengths=[0, 5, 24, 23])
    s = custom_ops.page_summaries(cache, table, lengths, key_num_heads=2)
    q = torch.randn(4, 1, 8 * 16)
    # k >= pages: every page in order, lengths unchanged.
    pos, lens = custom_ops.select_blocks(q, s, table, lengths, k=100, num_heads=8,
                                         key_num_heads=2, block_size=4)
    assert pos.shape == (4, 2, 6) and lens.tolist() == lengths
    assert (pos[0] == SENT).all()
    assert pos[1, :, :2].tolist() == [[0, 1]] * 2 and (pos[1, :, 2:] == SENT).all()
    assert pos[2].tolist() == [list(range(6))] * 2
    # k = 3 with 2 sinks: no middle pages; the partial last page is listed last.
    pos, lens = custom_ops.select_blocks(q, s, table, lengths, k=3, sink_pages=2, num_heads=8,
                                         key_num_heads=2, block_size=4, width=5)
    assert lens.tolist() == [0, 5, 12, 11]
    assert pos[3].tolist() == [[0, 1, 5, SENT, SENT]] * 2
    # k = 1: only the last page.
    pos, lens = custom_ops.select_blocks(q, s, table, lengths, k=1, num_heads=8, key_num_heads=2,
                                         block_size=4)
    assert lens.tolist() == [0, 1, 4, 3] and pos[:, :, 0].tolist() == [[SENT] * 2, [1] * 2,
                                                                       [5] * 2, [5] * 2]


def test_select_numpy():
    keys, cache, table, lengths = make_case(14)
    s = custom_ops.page_summaries(cache.numpy(), table.numpy(), lengths, key_num_heads=2)
    q = np.random.default_rng(0).standard_normal((3, 1, 128)).astype(np.float32)
    pos, lens = custom_ops.select_blocks(q, s, table.numpy(), np.array(lengths, np.int32), k=4,
                                         num_heads=8, key_num_heads=2, block_size=4)
    assert isinstance(pos, np.ndarray) and pos.dtype == np.int32 and lens.dtype == np.int64
    gsel, glens, gsc = golden_select(q.reshape(3, 8, 16).astype(np.float64), s.astype(np.float64),
                                     table, lengths, 4, 4, 0, 2)
    check_selection(pos, lens, gsel, glens, gsc, 4, 0, 4, lengths, exact=False)


def attention_over(q, kc, vc, table, b, h_pages, L_pages, bs, KVN, D, scale):
    """float64 attention of batch b, every query head, over the listed pages of each KV head."""
    N = q.shape[1]
    G = N // KVN
    out = np.zeros((N, D))
    for h in range(KVN):
        rows_k, rows_v = [], []
        for j, rows in zip(h_pages[h], L_pages[h]):
            blk = int(table[b, j])
            rows_k.append(kc[blk, :rows, h * D:(h + 1) * D])
            rows_v.append(vc[blk, :rows, h * D:(h + 1) * D])
        if not rows_k:
            continue
        K, V = np.concatenate(rows_k), np.concatenate(rows_v)
        for g in range(G):
            s = scale * K @ q[b, h * G + g]
            p = np.exp(s - s.max())
            out[h * G + g] = p @ V / p.sum()
    return out


@pytest.mark.parametrize("k,sink", [(4, 0), (5, 2), (100, 1)])
def test_end_to_end_reads_exactly_the_chosen_pages(k, sink):
    B, N, KVN, D, bs, M = 2, 8, 2, 16, 4, 10
    keys, cache, table, lengths = make_case(15, B=B, N=N, KVN=KVN, D=D, bs=bs, M=M,
                                            lengths=[38, 17])
    vc = torch.randn(cache.shape)
    q = torch.randn(B, N, D)
    s = custom_ops.page_summaries(cache, table, lengths, key_num_heads=KVN)
    pos, lens = custom_ops.select_blocks(q.view(B, 1, N * D), s, table, lengths, k=k,
                                         sink_pages=sink, num_heads=N, key_num_heads=KVN,
                                         block_size=bs)
    out = custom_ops.incre_flash_attention_v5(
        q.view(B, 1, N * D), cache, vc, None, None, lens, block_table=table, block_position=pos,
        num_heads=N, scale_value=D ** -0.5, key_num_heads=KVN, block_size=bs, inner_precise=0)
    kc64, vc64, q64 = cache.double().numpy(), vc.double().numpy(), q.double().numpy()
    for b in range(B):
        n = -(-lengths[b] // bs)
        pages = {h: [int(j) for j in pos[b, h] if j != SENT] for h in range(KVN)}
        rows = {h: [min(bs, lengths[b] - j * bs) for j in pages[h]] for h in range(KVN)}
        for h in range(KVN):
            assert len(pages[h]) == min(k, n) and pages[h][-1] == n - 1
        want = attention_over(q64, kc64, vc64, table, b, pages, rows, bs, KVN, D, D ** -0.5)
        np.testing.assert_allclose(out[b, 0].double().view(N, D).numpy(), want, rtol=1e-5,
                                   atol=1e-5)


# ---- Errors ------------------------------------------------------------------------------------

def test_errors():
    keys, cache, table, lengths = make_case(16, B=2, M=3, lengths=[9, 4])
    s = custom_ops.page_summaries(cache, table, lengths, key_num_heads=2)
    q = torch.randn(2, 1, 128)

    def sel(**kw):
        args = dict(query=q, summaries=s, block_table=table, actual_seq_lengths=lengths, k=2,
                    sink_pages=0, num_heads=8, key_num_heads=2, block_size=4)
        args.update(kw)
        return custom_ops.select_blocks(**args)

    cases = [
        (dict(query=q.to(torch.int8)), TypeError, "query"),
        (dict(query=q.view(2, 2, 64)), ValueError, "query"),
        (dict(layout="BNSD"), ValueError, "query"),
        (dict(layout="XYZ"), ValueError, "layout"),
        (dict(layout=3), TypeError, "layout"),
        (dict(summaries=s.double()), TypeError, "summaries"),
        (dict(summaries=s[:, :, :, :8]), ValueError, "summaries"),
        (dict(summaries=s.transpose(2, 3).contiguous().transpose(2, 3)), ValueError, "summaries"),
        (dict(block_table=table.long()), TypeError, "block_table"),
        (dict(block_table=table[:1]), ValueError, "block_table"),
        (dict(actual_seq_lengths=[13, 4]), ValueError, "actual_seq_lengths[0]"),
        (dict(actual_seq_lengths=[-1]), ValueError, "actual_seq_lengths[0]"),
        (dict(actual_seq_lengths=[1, 2, 3][:0]), ValueError, "actual_seq_lengths"),
        (dict(k=0), ValueError, "k:"),
        (dict(k=2.0), TypeError, "k"),
        (dict(sink_pages=2), ValueError, "sink_pages"),
        (dict(sink_pages=-1), ValueError, "sink_pages"),
        (dict(num_heads=3), ValueError, "key_num_heads"),
        (dict(key_num_heads=16), ValueError, "key_num_heads"),
        (dict(block_size=0), ValueError, "block_size"),
        (dict(width=0), ValueError, "width"),
        (dict(k=3, width=2), ValueError, "block_position"),
    ]
    for kw, exc, name in cases:
        with pytest.raises(exc, match=name.replace("[", r"\[").replace("]", r"\]")):
            sel(**kw)
    bad = table.clone()
    bad[0, 1] = 1000
    with pytest.raises(ValueError, match=r"block_table\[0\]\[1\] = 1000"):
        sel(block_table=bad)

    summ_cases = [
        ((cache.view(-1, 4, 32).to(torch.int32), table, lengths), dict(key_num_heads=2), TypeError,
         "key_cache"),
        ((cache[:, 0], table, lengths), dict(key_num_heads=2), ValueError, "key_cache"),
        ((cache, table, lengths), dict(), ValueError, "key_num_heads"),
        ((cache, table, lengths), dict(key_num_heads=3), ValueError, "key_num_heads"),
        ((cache, table, lengths), dict(key_num_heads=2, block_size=8), ValueError, "block_size"),
        ((cache, table, [9, 40]), dict(key_num_heads=2), ValueError, r"actual_seq_lengths\[1\]"),
        ((cache, table, lengths), dict(key_num_heads=2, antiquant_scale=torch.ones(2)),
         ValueError, "antiquant_scale"),
        ((cache.to(torch.int8), table, lengths), dict(key_num_heads=2), ValueError,
         "antiquant_scale"),
        ((cache.to(torch.int8), table, lengths),
         dict(key_num_heads=2, antiquant_scale=torch.ones(2, 5)), ValueError, "antiquant_scale"),
        ((cache.to(torch.int8), table, lengths),
         dict(key_num_heads=2, antiquant_scale=torch.ones(2, dtype=torch.int32)), TypeError,
         "antiquant_scale"),
        ((cache, table, lengths), dict(key_num_heads=2, out=torch.empty(3, 2, 2, 16)),
         ValueError, "summaries"),
        ((cache, table.to(torch.int64), lengths), dict(key_num_heads=2), TypeError,
         "block_table"),
    ]
    for args, kw, exc, name in summ_cases:
        with pytest.raises(exc, match=name):
            custom_ops.page_summaries(*args, **kw)
    before = s.clone()
    with pytest.raises(ValueError, match="new_tokens"):
        custom_ops.update_page_summaries(s, cache, table, lengths, [10, 1], key_num_heads=2)
    with pytest.raises(TypeError, match="new_tokens"):
        custom_ops.update_page_summaries(s, cache, table, lengths, [1.5, 1], key_num_heads=2)
    assert torch.equal(s, before)
