"""``python -m custom_ops``: run IFA-V5 once on a realistic sparse, paged decode step and time it.

The shape is Llama-3-8B's attention (32 query heads, 8 KV heads, head size 128) in float16, with a
paged cache of 16-token blocks, 4 sequences of 32K tokens each, and every KV head attending to its
own 1/8 of the pages through ``block_position`` (the V5 addition). The cache is 4-D,
(num_blocks, KVN, block_size, D) with a BNSD query, the form that suits per-head page selection
(a head's page is one contiguous run; docs/benchmarks.md); ``--cache 3d`` uses
(num_blocks, block_size, KVN*D) with a BSH query instead. The result of one batch is
checked against a float64 numpy computation, then the call is timed (best of several runs) and
reported as GB/s of K/V actually read. Works with numpy alone when torch is not installed.
"""

import argparse
import sys
import time

import numpy as np

import custom_ops


def build_case(batch, q_heads, kv_heads, head_dim, block_size, context, keep, seed=0, form="3d"):
    """The inputs as numpy arrays: query (B, 1, N*D) BSH, one K and one V cache
    (num_blocks, block_size, KVN*D), block_table (B, M), block_position (B, KVN, M), and the
    per-batch length; with form="4d" the query is (B, N, 1, D) BNSD and the caches
    (num_blocks, KVN, block_size, D)."""
    rng = np.random.default_rng(seed)
    pages = context // block_size
    selected = pages // keep
    num_blocks = batch * pages
    # Random data, generated block by block in float32 to keep the peak memory near the cache's.
    caches = []
    for _ in range(2):
        cache = np.empty((num_blocks, block_size, kv_heads * head_dim), dtype=np.float16)
        for start in range(0, num_blocks, 512):
            chunk = cache[start:start + 512]
            chunk[...] = rng.uniform(-1.0, 1.0, size=chunk.shape).astype(np.float32)
        caches.append(cache)
    query = rng.uniform(-1.0, 1.0, size=(batch, 1, q_heads * head_dim)).astype(np.float16)
    # Each sequence owns `pages` physical blocks in a shuffled order.
    block_table = np.stack([b * pages + rng.permutation(pages) for b in range(batch)]).astype(
        np.int32)
    # Each KV head keeps its own `selected` pages, listed first in ascending logical order, with the
    # sentinel after them.
    block_position = np.full((batch, kv_heads, pages), custom_ops.BLOCK_UNSELECTED, dtype=np.int32)
    for b in range(batch):
        for h in range(kv_heads):
            block_position[b, h, :selected] = np.sort(rng.choice(pages, selected, replace=False))
    length = selected * block_size
    if form == "4d":
        query = np.ascontiguousarray(query.reshape(batch, q_heads, 1, head_dim))
        caches = [np.ascontiguousarray(c.reshape(num_blocks, block_size, kv_heads, head_dim)
                                       .transpose(0, 2, 1, 3)) for c in caches]
    return query, caches[0], caches[1], block_table, block_position, length


def golden_batch(b, query, key, value, block_table, block_position, length, q_heads, kv_heads,
                 head_dim, block_size, scale):
    """SPEC.md 5 for batch b in float64: (N, D)."""
    group = q_heads // kv_heads
    slots = -(-length // block_size)
    out = np.empty((q_heads, head_dim))
    q = query[b].astype(np.float64).reshape(q_heads, head_dim)
    for h in range(kv_heads):
        idx = block_position[b, h, :slots]
        idx = idx[idx != custom_ops.BLOCK_UNSELECTED]
        blocks = block_table[b, idx]
        if key.ndim == 4:  # (num_blocks, KVN, block_size, D)
            k = key[blocks, h].reshape(-1, head_dim).astype(np.float64)
            v = value[blocks, h].reshape(-1, head_dim).astype(np.float64)
        else:
            cols = slice(h * head_dim, (h + 1) * head_dim)
            k = key[blocks, :, cols].reshape(-1, head_dim).astype(np.float64)
            v = value[blocks, :, cols].reshape(-1, head_dim).astype(np.float64)
        s = scale * (q[h * group:(h + 1) * group] @ k.T)
        p = np.exp(s - s.max(axis=1, keepdims=True))
        out[h * group:(h + 1) * group] = (p @ v) / p.sum(axis=1, keepdims=True)
    return out


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m custom_ops", description=__doc__.split("\n")[0])
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--context", type=int, default=32768, help="cache tokens per sequence")
    parser.add_argument("--keep", type=int, default=8, help="each KV head keeps 1/keep of pages")
    parser.add_argument("--repeat", type=int, default=50, help="timed runs (the best is shown)")
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--numpy", action="store_true", help="use numpy arrays even with torch")
    parser.add_argument("--cache", choices=["4d", "3d"], default="4d",
                        help="4d: (num_blocks, KVN, block_size, D), BNSD query (default); "
                             "3d: (num_blocks, block_size, KVN*D), BSH query")
    args = parser.parse_args(argv)

    q_heads, kv_heads, head_dim, block_size = 32, 8, 128, 16
    scale = 1.0 / np.sqrt(head_dim)
    if args.threads is not None:
        custom_ops.set_num_threads(args.threads)
    torch = None
    if not args.numpy:
        try:
            import torch
        except ImportError:
            torch = None

    query, key, value, table, position, length = build_case(
        args.batch, q_heads, kv_heads, head_dim, block_size, args.context, args.keep,
        form=args.cache)
    layout = "BNSD" if args.cache == "4d" else "BSH"
    inputs = (query, key, value, table, position)
    if torch is not None:
        # Zero-copy views: the operator sees the same memory either way.
        inputs = tuple(torch.from_numpy(x) for x in inputs)
    tq, tk, tv, tt, tp = inputs

    def call(out=None):
        return custom_ops.incre_flash_attention_v5(
            tq, [tk], [tv], None, None, [length] * args.batch, None, None, None, None, None, None,
            None, tt, None, tp, q_heads, scale, layout, kv_heads, block_size, 1, out=out)

    out = call()
    got = np.asarray(out.float() if torch is not None else out, dtype=np.float64)
    want = golden_batch(0, query, key, value, table, position, length, q_heads, kv_heads,
                        head_dim, block_size, scale)
    err = np.abs(got[0].reshape(q_heads, head_dim) - want)
    ok = bool(np.all(err <= 2e-3 + 2e-3 * np.abs(want)))

    # Warm-up: right after other work (here the numpy check) this machine's memory-bound calls
    # run up to 1.4x slower for a few milliseconds (docs/benchmarks.md, *Noise*); 20 ms of calls
    # first, so that the timed runs measure the call rather than that slow start.
    warm_end = time.perf_counter() + 0.02
    while time.perf_counter() < warm_end:
        call(out)
    times = []
    for _ in range(max(1, args.repeat)):
        start = time.perf_counter()
        call(out)
        times.append(time.perf_counter() - start)
    best = min(times)
    # Bytes of K and V the call has to read: every selected token of every (batch, KV head).
    kv_bytes = 2 * args.batch * kv_heads * length * head_dim * key.itemsize

    print(f"custom_ops {custom_ops.__version__} "
          f"({'torch ' + torch.__version__ + ' tensors' if torch else 'numpy arrays'}): isa {custom_ops.isa()} (available: {' '.join(custom_ops.isa_available())}),"
          f" {custom_ops.get_num_threads()} threads")
    print(f"IFA-V5 decode, Llama-3-8B attention: B {args.batch}, N {q_heads}, KVN {kv_heads}, "
          f"D {head_dim}, float16, layout {layout}")
    print(f"paged cache {tuple(key.shape)}: block_size {block_size}, {args.context} tokens per sequence "
          f"({key.shape[0]} blocks, {2 * key.nbytes / 2**20:.0f} MiB of K+V); each KV head selects "
          f"{length // block_size} of {args.context // block_size} pages via block_position "
          f"-> {length} tokens")
    print(f"check batch 0 against float64 numpy: max |error| {err.max():.2e} -> "
          f"{'OK' if ok else 'MISMATCH'}")
    print(f"time: best {best * 1e3:.3f} ms of {len(times)} runs (median "
          f"{sorted(times)[len(times) // 2] * 1e3:.3f} ms), {kv_bytes / 2**20:.1f} MiB of K/V read "
          f"-> {kv_bytes / best / 1e9:.1f} GB/s")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
