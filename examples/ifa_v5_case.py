#!/usr/bin/env python3
"""The original operator's test case (test/ifa_v5_case.py of the Ascend package), ported to the CPU.

One decode step of 32 query heads over 32 KV heads (head size 128) whose cache is paged in blocks of
16 tokens: 2048 blocks, a 32K-token cache. Every KV head selects its own 256 pages (4K tokens)
through ``block_table`` + ``block_position``; the rest of each ``block_position`` row holds the
sentinel 0x7FFFFFFF.

The data makes any mistake visible in the output: in head h's slice of the cache, the pages that
head selected hold 0.1 + h/1000 (keys and values alike) and every other page holds 9.9. All selected
keys are equal, so the softmax weights are uniform and head h must return exactly 0.1 + h/1000 (at
float16 precision); reading one unselected page, or another head's page, pulls the result towards
9.9.

Both cache forms of the guide are run: (num_blocks, KVN, block_size, D), which needs layout BNSD,
and (num_blocks, block_size, KVN*D). Run it as a script (exit code 1 on failure), or import
``run_case`` from a test, with smaller sizes if it must be quick.
"""

import sys

import numpy as np

try:
    import torch
except ImportError:  # The case runs on numpy arrays alone.
    torch = None

import custom_ops

SENTINEL = 0x7FFFFFFF

#: The cache forms of the original's guide: (name, cache layout, query layout).
FORMS = (
    ("(blocknum, KVN, bs, D) / BNSD", "4d", "BNSD"),
    ("(blocknum, bs, KVN*D) / BNSD", "3d", "BNSD"),
    ("(blocknum, bs, KVN*D) / BSH", "3d", "BSH"),
)


def head_value(h):
    """The value head h's selected pages hold, and so the output head h must return."""
    return 0.1 + h / 1000.0


def run_case(cache_form="4d", layout="BNSD", *, num_heads=32, head_dim=128, block_size=16,
             num_blocks=2048, selected=256, use_torch=None, seed=0):
    """Builds the case for one cache form and runs the operator.

    Args:
        cache_form: "4d" for (num_blocks, KVN, block_size, D) or "3d" for
            (num_blocks, block_size, KVN*D).
        layout: the query layout, "BNSD" (both forms) or "BSH" / "BSND" (3-D form only).
        num_heads: query heads, equal to the KV heads as in the original case.
        num_blocks: blocks in the cache, all mapped by the one sequence's block_table.
        selected: pages each KV head selects through block_position.
        use_torch: torch tensors (default when torch is installed) or numpy arrays.

    Returns:
        (passed, max_abs_error, output as a float32 numpy array of shape (num_heads, head_dim)).
    """
    if use_torch is None:
        use_torch = torch is not None
    n, d, bs = num_heads, head_dim, block_size
    rng = np.random.default_rng(seed)

    # block_table maps logical page j to a physical block; a permutation so that logical and
    # physical numbering differ and a page mix-up shows.
    block_table = rng.permutation(num_blocks).astype(np.int32).reshape(1, num_blocks)
    # Each head selects its own pages, listed first in ascending logical order; the rest of the
    # row is the sentinel, as in the original's example.
    block_position = np.full((1, n, num_blocks), SENTINEL, dtype=np.int32)
    for h in range(n):
        block_position[0, h, :selected] = np.sort(rng.choice(num_blocks, selected, replace=False))

    # Keys and values are the same numbers, so one cache serves as both (half the memory).
    if cache_form == "4d":
        cache = np.full((num_blocks, n, bs, d), 9.9, dtype=np.float16)
        for h in range(n):
            cache[block_table[0, block_position[0, h, :selected]], h] = head_value(h)
    elif cache_form == "3d":
        cache = np.full((num_blocks, bs, n * d), 9.9, dtype=np.float16)
        for h in range(n):
            blocks = block_table[0, block_position[0, h, :selected]]
            cache[blocks, :, h * d:(h + 1) * d] = head_value(h)
    else:
        raise ValueError(f"cache_form: expected '4d' or '3d', got {cache_form!r}")

    query_shape = {"BNSD": (1, n, 1, d), "BSND": (1, 1, n, d), "BSH": (1, 1, n * d)}[layout]
    query = rng.uniform(-1.0, 1.0, size=query_shape).astype(np.float16)
    lengths = [selected * bs]
    if use_torch:
        query, cache = torch.from_numpy(query), torch.from_numpy(cache)
        block_table, block_position = torch.from_numpy(block_table), torch.from_numpy(block_position)

    out = custom_ops.incre_flash_attention_v5(
        query, [cache], [cache], None, None, lengths, None, None, None, None, None, None, None,
        block_table, None, block_position, n, 1.0 / np.sqrt(d), layout, n, bs, 1)

    out = np.asarray(out.float() if use_torch else out, dtype=np.float32).reshape(n, d)
    expected = np.array([[np.float16(head_value(h))] * d for h in range(n)], dtype=np.float32)
    max_err = float(np.abs(out - expected).max())
    return bool(np.array_equal(out, expected)), max_err, out


def main():
    print(f"custom_ops {custom_ops.__version__}: isa {custom_ops.isa()}, "
          f"{custom_ops.get_num_threads()} threads, "
          f"{'torch ' + torch.__version__ if torch is not None else 'numpy only'}")
    failures = 0
    for name, form, layout in FORMS:
        passed, max_err, out = run_case(form, layout)
        failures += not passed
        status = "PASS" if passed else "FAIL"
        print(f"{status}  cache {name}: head 0 -> {out[0, 0]:.6f}, head 31 -> {out[-1, 0]:.6f}, "
              f"max |error| {max_err:.3g}")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
