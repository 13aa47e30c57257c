"""What the optional per-position parameters cost: pse_shift, attention_mask and per-token
antiquant, each against the same call without it; and full quantisation (an int8 query) against
the same call with a float16 query.

    python bench/params_bench.py [--rounds 3] [--calls 25] [--quick]

Each shape is built once with and without the parameter; the variants alternate round after
round and each keeps its best call (the host's speed swings, see docs/benchmarks.md, *Noise*).
The cache is warm (one copy, reused), so the ratios show the work a parameter adds rather than
DRAM. The parameters read S' values per batch and query head (pse), per batch (mask, per-token
scale and offset): 2-6% of the KV bytes of these shapes.

Then ragged batches (not --quick): one long sequence beside short ones, and an even batch of the
same tokens, in ms and GB/s of KV.

Variants: pse (float16, (B, N, 1, S')), mask10 (bool, 10% of the positions at random), maskpad
(the first 5% of the positions masked, as left padding is), pt (int8 KV with per-token scale and
offset, (2, B, S') float32, antiquant_mode=1), fq (int8 query, K and V: SPEC.md 7, whose exact
quantisation of the weights needs a first pass over K for the maximum score, so 1.5x the bytes).
"""

import argparse
import time

import torch

import custom_ops

SENTINEL = 0x7FFFFFFF
MODELS = {"llama3-8b": (32, 8, 128), "llama3-70b": (64, 8, 128)}


def make_call(model, B, L, bs, kv, variant, sparse=1, four=False, seed=0):
    """The operator call of one shape and variant, its inputs bound."""
    g = torch.Generator().manual_seed(seed)
    N, KVN, D = MODELS[model]
    M = L // bs
    nb = B * M
    q = torch.randn(B, N, 1, D, generator=g).half()
    if variant == "fq":
        q = torch.randint(-127, 128, (B, N, 1, D), generator=g, dtype=torch.int8)
    shape = (nb, KVN, bs, D) if four else (nb, bs, KVN * D)
    if kv == "fp16":
        k = torch.randn(*shape, generator=g).half()
        v = torch.randn(*shape, generator=g).half()
    else:
        k = torch.randint(-100, 100, shape, generator=g, dtype=torch.int8)
        v = torch.randint(-100, 100, shape, generator=g, dtype=torch.int8)
    table = torch.randperm(nb, generator=g).int().view(B, M)
    bpos, lengths = None, [L] * B
    if sparse > 1:
        sel = M // sparse
        bpos = torch.full((B, KVN, M), SENTINEL, dtype=torch.int32)
        for b in range(B):
            for h in range(KVN):
                bpos[b, h, :sel] = torch.randperm(M, generator=g)[:sel].sort().values.int()
        lengths = [sel * bs] * B
    pse = torch.randn(B, N, 1, L, generator=g).half() if variant == "pse" else None
    mask = None
    if variant == "mask10":
        mask = torch.rand(B, L, generator=g) < 0.1
    elif variant == "maskpad":
        mask = torch.zeros(B, L, dtype=torch.bool)
        mask[:, : L // 20] = True
    aq_scale = aq_offset = None
    scales = [None, None, None]
    extra = {}
    if variant == "fq":
        scales = [torch.tensor([2e-5]), torch.tensor([127.0]), torch.tensor([1e-4])]
    elif kv == "int8":
        if variant == "pt":
            aq_scale = torch.rand(2, B, L, generator=g) * 0.02
            aq_offset = torch.randn(2, B, L, generator=g)
            extra["antiquant_mode"] = 1
        else:
            aq_scale = torch.tensor([0.01, 0.01], dtype=torch.float16)

    def call():
        return custom_ops.incre_flash_attention_v5(
            q, [k], [v], pse, mask, lengths, *scales, None, None, aq_scale, aq_offset,
            table, None, bpos, N, 1.0 / D ** 0.5, "BNSD", KVN, bs, 1, **extra)

    return call


def ragged_call(model, lengths, bs=128):
    """A dense fp16 call whose sequences have the given lengths (a ragged decode batch)."""
    g = torch.Generator().manual_seed(1)
    N, KVN, D = MODELS[model]
    B, M = len(lengths), max(lengths) // bs
    q = torch.randn(B, N, 1, D, generator=g).half()
    k = torch.randn(B * M, bs, KVN * D, generator=g).half()
    v = torch.randn(B * M, bs, KVN * D, generator=g).half()
    table = torch.randperm(B * M, generator=g).int().view(B, M)

    def call():
        return custom_ops.incre_flash_attention_v5(
            q, [k], [v], None, None, list(lengths), None, None, None, None, None, None, None,
            table, None, None, N, 1.0 / D ** 0.5, "BNSD", KVN, bs, 1)

    return call, sum(lengths) * KVN * D * 2 * 2


RAGGED = [("one 32K and seven 1K", [32768] + [1024] * 7), ("one 32K and fifteen 1K", [32768] + [1024] * 15),
          ("eight of 5K (the same tokens, even)", [5120] * 8)]


def shapes(quick):
    """(label, make_call arguments, variants) of the shapes measured."""
    out = [
        ("llama3-8b B=4 L=4K fp16", ("llama3-8b", 4, 4096, 128, "fp16"), {}, ["pse", "mask10", "maskpad"]),
        ("llama3-70b B=4 L=4K fp16", ("llama3-70b", 4, 4096, 128, "fp16"), {}, ["pse", "mask10", "maskpad"]),
        ("llama3-8b B=1 L=32K int8", ("llama3-8b", 1, 32768, 128, "int8"), {}, ["pse", "mask10", "pt", "fq"]),
        ("llama3-70b B=4 L=4K int8", ("llama3-70b", 4, 4096, 128, "int8"), {}, ["pse", "pt", "fq"]),
        ("llama3-8b B=4 L=32K fp16 1/8 bs16 3-D", ("llama3-8b", 4, 32768, 16, "fp16"), dict(sparse=8), ["pse"]),
        ("llama3-8b B=4 L=32K fp16 1/8 bs128 4-D", ("llama3-8b", 4, 32768, 128, "fp16"),
         dict(sparse=8, four=True), ["pse"]),
    ]
    return out[:2] if quick else out


def best_times(calls, rounds, n):
    """The best time of each call: rounds of 3 warm-up calls and n timed ones, the calls in turn."""
    best = {key: float("inf") for key in calls}
    for _ in range(rounds):
        for key, call in calls.items():
            for _ in range(3):
                call()
            for _ in range(n):
                t = time.perf_counter()
                call()
                best[key] = min(best[key], time.perf_counter() - t)
    return best


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--calls", type=int, default=25, help="calls per variant and round (best counts)")
    ap.add_argument("--quick", action="store_true", help="two shapes")
    a = ap.parse_args()
    print(f"# isa {custom_ops.isa()}, {custom_ops.get_num_threads()} threads; best call in ms, and "
          f"its ratio to the call without the parameter")
    for label, args, kw, variants in shapes(a.quick):
        best = best_times({v: make_call(*args, variant=v, **kw) for v in ["plain"] + variants}, a.rounds, a.calls)
        cells = [f"plain {best['plain'] * 1e3:.3f}"]
        cells += [f"{v} {best[v] * 1e3:.3f} ({best[v] / best['plain']:.2f}x)" for v in variants]
        print(f"{label:40s} " + "  ".join(cells), flush=True)
    if a.quick:
        return
    print("# ragged batches, Llama-3-8B fp16 (plan.c splits the longest sequence when it holds more than "
          "a thread's share)")
    ragged = {label: ragged_call("llama3-8b", lengths) for label, lengths in RAGGED}
    best = best_times({label: call for label, (call, _) in ragged.items()}, a.rounds, a.calls)
    for label, (_, nbytes) in ragged.items():
        print(f"{label:40s} {best[label] * 1e3:.3f} ms  {nbytes / best[label] / 1e9:.1f} GB/s of KV", flush=True)


if __name__ == "__main__":
    main()
