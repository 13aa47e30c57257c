"""Sparse decode on the CPU, end to end: Quest page selection feeding IFA-V5's block_position.

    python examples/sparse_decode.py [--context 32768] [--fraction 8]

One decode step of a Llama-3-8B-shaped attention layer (32 query heads, 8 KV heads, head size 128,
float16, a paged cache of 128-token blocks) over keys and queries with the structure of a real
model's (see ``structured_case``):

1. ``page_summaries``: per-block, per-KV-head min/max keys (once, after prefill);
2. ``select_blocks``: each KV head keeps 1/fraction of its pages (one sink page, the best pages by
   the Quest bound, and the current page), returning ``block_position`` and the compact
   ``actual_seq_lengths``;
3. ``incre_flash_attention_v5`` with them, against the dense step;
4. a new token is appended and ``update_page_summaries`` refreshes only the page it landed in.

It prints the output error of sparse against dense attention (and of a random choice of as many
pages, for scale) and the time of each step. ``bench/select_bench.py`` sweeps k and plots it.
"""

import argparse
import time

import numpy as np
import torch

import custom_ops


def rope(x, positions, base):
    """Rotary position encoding (Su et al., 2021), half-split form as in Llama: x (..., T, D)
    rotated by positions (T,)."""
    D = x.shape[-1]
    inv = base ** (-np.arange(0, D, 2, dtype=np.float64) / D)          # (D/2,)
    ang = positions[:, None].astype(np.float64) * inv[None]             # (T, D/2)
    cos, sin = np.cos(ang), np.sin(ang)
    x1, x2 = x[..., : D // 2], x[..., D // 2:]
    return np.concatenate([x1 * cos - x2 * sin, x1 * sin + x2 * cos], axis=-1)


def structured_case(batch=1, context=32768, q_heads=32, kv_heads=8, head_dim=128, block_size=128,
                    topics=32, rank=6, base=500000.0, strength=6.0, sink_logit=6.0, seed=0,
                    form="4d"):
    """Keys, values and queries shaped like a real model's, as torch float16 tensors.

    Per KV head, key content lives mostly in a few dominant directions (rank ``rank``) placed on the
    low-frequency rotary dimensions, which carry long-range attention in real models; the sequence
    is a succession of topic segments of a few hundred to a few thousand tokens, each topic a point
    in that subspace, plus isotropic noise; keys are then rotated by RoPE at their position. Each
    query head looks for one or two of the topics (rotated to the current position), so attention
    is concentrated on a minority of pages scattered over the whole context, as in retrieval. The
    first tokens get large keys along the mean query direction (an attention sink).

    Returns query (B, 1, N*D), key/value caches (num_blocks, bs, KVN*D), block_table (B, M) and the
    length (the same for every sequence); with form="4d" (the default) the query is (B, N, 1, D)
    and the caches (num_blocks, KVN, bs, D), where a head's page is one contiguous run: the form
    that suits per-head page selection (docs/benchmarks.md).
    """
    rng = np.random.default_rng(seed)
    D, G = head_dim, q_heads // kv_heads
    pages = context // block_size
    num_blocks = batch * pages
    low = np.r_[D // 2 - D // 8: D // 2, D - D // 8: D]                # lowest-frequency pairs
    key = np.empty((batch, context, kv_heads, D), dtype=np.float16)
    query = np.empty((batch, q_heads, D))
    positions = np.arange(context)
    for b in range(batch):
        for h in range(kv_heads):
            U = np.zeros((D, rank))
            U[low] = np.linalg.qr(rng.standard_normal((len(low), rank)))[0]
            centres = rng.standard_normal((topics, rank)) * 1.6
            seg = np.repeat(rng.integers(0, topics, context // 256 + 1),
                            rng.integers(256, 2048, context // 256 + 1))[:context]
            seg = np.resize(seg, context)
            content = centres[seg] @ U.T + 0.6 * rng.standard_normal((context, D))
            # The heads of a group look for the same two topics, with their own weights.
            targets = rng.choice(topics, size=2, replace=False)
            mix = rng.uniform(0.3, 1.0, size=(G, 2))
            w = strength * (mix @ centres[targets]) @ U.T
            qh = w + 0.5 * rng.standard_normal((G, D))
            qm = qh.mean(0)
            content[:4] += qm * (sink_logit * np.sqrt(D) / (qm @ qm))  # scaled logit ~ sink_logit
            key[b, :, h] = rope(content, positions, base).astype(np.float16)
            query[b, h * G:(h + 1) * G] = rope(qh[:, None, :], np.array([context]), base)[:, 0]
    value = rng.standard_normal((batch, context, kv_heads, D)).astype(np.float16)
    table = np.stack([b * pages + rng.permutation(pages) for b in range(batch)]).astype(np.int32)
    k_cache = np.empty((num_blocks, block_size, kv_heads * D), np.float16)
    v_cache = np.empty_like(k_cache)
    for b in range(batch):
        blocks = table[b]
        k_cache[blocks] = key[b].reshape(pages, block_size, kv_heads * D)
        v_cache[blocks] = value[b].reshape(pages, block_size, kv_heads * D)
    q = torch.from_numpy(query.reshape(batch, 1, q_heads * D).astype(np.float16))
    if form == "4d":
        q = q.view(batch, q_heads, 1, D)
        k_cache, v_cache = (np.ascontiguousarray(c.reshape(num_blocks, block_size, kv_heads, D)
                                                 .transpose(0, 2, 1, 3)) for c in (k_cache, v_cache))
    return q, torch.from_numpy(k_cache), torch.from_numpy(v_cache), torch.from_numpy(table), context


def layout_of(k_cache):
    """The query layout that goes with a cache form: BNSD for 4-D, BSH for 3-D."""
    return "BNSD" if k_cache.dim() == 4 else "BSH"


def attend(q, k_cache, v_cache, table, lengths, position, q_heads, kv_heads, block_size):
    D = q.shape[-1] if q.dim() == 4 else q.shape[-1] // q_heads  # BNSD (B, N, 1, D) or BSH (B, 1, N*D)
    return custom_ops.incre_flash_attention_v5(
        q, k_cache, v_cache, None, None, lengths, block_table=table, block_position=position,
        num_heads=q_heads, scale_value=D ** -0.5, layout=layout_of(k_cache), key_num_heads=kv_heads,
        block_size=block_size)


def random_selection(batch, kv_heads, pages, k, sink, rng):
    """The same page budget chosen at random (sinks and the last page kept), for comparison."""
    pos = np.full((batch, kv_heads, k), custom_ops.BLOCK_UNSELECTED, np.int32)
    for b in range(batch):
        for h in range(kv_heads):
            middle = rng.choice(np.arange(sink, pages - 1), k - sink - 1, replace=False)
            pos[b, h] = np.r_[np.arange(sink), np.sort(middle), pages - 1]
    return torch.from_numpy(pos)


def rel_error(x, ref):
    x, ref = x.double(), ref.double()
    return float((x - ref).norm() / ref.norm())


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--context", type=int, default=32768)
    ap.add_argument("--fraction", type=int, default=8, help="keep 1/fraction of the pages")
    ap.add_argument("--block-size", type=int, default=128)
    ap.add_argument("--sink-pages", type=int, default=1)
    ap.add_argument("--cache", choices=["4d", "3d"], default="4d",
                    help="4d: (num_blocks, KVN, bs, D) with a BNSD query; 3d: (num_blocks, bs, KVN*D), BSH")
    args = ap.parse_args()
    N, KVN, bs = 32, 8, args.block_size
    q, kc, vc, table, L = structured_case(context=args.context, block_size=bs, form=args.cache)
    pages = L // bs
    k = max(args.sink_pages + 1, pages // args.fraction)
    print(f"isa {custom_ops.isa()}, threads {custom_ops.get_num_threads()}; "
          f"B=1 N={N} KVN={KVN} D=128 float16, {args.cache} cache, L={L}, block_size {bs} ({pages} pages), "
          f"k={k} (1/{args.fraction}), sink_pages={args.sink_pages}")

    t0 = time.perf_counter()
    summaries = custom_ops.page_summaries(kc, table, [L], key_num_heads=KVN)
    t_summ = time.perf_counter() - t0

    dense = attend(q, kc, vc, table, [L], None, N, KVN, bs)
    t0 = time.perf_counter()
    dense = attend(q, kc, vc, table, [L], None, N, KVN, bs)
    t_dense = time.perf_counter() - t0

    t0 = time.perf_counter()
    position, lengths = custom_ops.select_blocks(q, summaries, table, [L], k=k,
                                                 sink_pages=args.sink_pages, num_heads=N,
                                                 key_num_heads=KVN, layout=layout_of(kc),
                                                 block_size=bs)
    t_select = time.perf_counter() - t0
    t0 = time.perf_counter()
    sparse = attend(q, kc, vc, table, lengths, position, N, KVN, bs)
    t_sparse = time.perf_counter() - t0

    rand_pos = random_selection(1, KVN, pages, k, args.sink_pages, np.random.default_rng(1))
    rand = attend(q, kc, vc, table, lengths, rand_pos, N, KVN, bs)

    print(f"block_position[0, 0, :8] = {position[0, 0, :8].tolist()} ... "
          f"{position[0, 0, k - 1].item()}  actual_seq_lengths = {lengths.tolist()}")
    print(f"relative error vs dense: Quest {rel_error(sparse, dense):.4f}, "
          f"random pages {rel_error(rand, dense):.4f}")
    print(f"time: dense {t_dense * 1e3:.2f} ms; select {t_select * 1e3:.3f} ms + sparse "
          f"{t_sparse * 1e3:.2f} ms = {(t_select + t_sparse) * 1e3:.2f} ms "
          f"({t_dense / (t_select + t_sparse):.1f}x, one cold run each; see bench/select_bench.py)")

    # Decode continues: one new token lands in the last page (the cache has room when L is not a
    # multiple of the block size; here we overwrite the last row to show the call).
    t0 = time.perf_counter()
    custom_ops.update_page_summaries(summaries, kc, table, [L], 1, key_num_heads=KVN)
    t_update = time.perf_counter() - t0
    print(f"page_summaries (whole cache, once): {t_summ * 1e3:.1f} ms; "
          f"update_page_summaries (one new token): {t_update * 1e3:.3f} ms")


if __name__ == "__main__":
    main()
