"""Benchmark of query-aware block selection: Quest selection + sparse IFA-V5 against dense IFA-V5.

    python bench/select_bench.py [--context 32768] [--reps 7] [--json docs/select.json]
                                 [--png docs/select.png]

One decode step of a Llama-3-8B-shaped layer (N=32, KVN=8, D=128, float16, B=1) over the
structured keys and queries of examples/sparse_decode.py (topic segments in the low-frequency
rotary dimensions, RoPE, an attention sink). For k = 1/64 .. 1/2 of the pages it reports

- quality: the relative output error ||o_sparse - o_dense|| / ||o_dense|| and the share of the
  dense attention mass on the chosen pages, for Quest and for as many random pages;
- time: select_blocks, the sparse attention, their sum, and the dense attention, measured
  interleaved in the same run, each call after evicting the last-level cache (a real decode step
  finds the layer's KV cold: the other layers ran in between), best of --reps;

plus page_summaries (whole cache) and update_page_summaries (one new token), and the headline
speedup at other block sizes. Writes a JSON file and a PNG plot (error and time against k).
"""

import argparse
import json
import os
import sys
import time

import numpy as np
import torch

import custom_ops
from bench import cpu_name  # bench/bench.py, beside this script

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "examples"))
import sparse_decode as sd  # noqa: E402

N, KVN, D = 32, 8, 128
FRACTIONS = [64, 32, 16, 8, 4, 2]
SINKS = 1


class Flusher:
    """Evicts the caches by writing a buffer twice the size of a large L3."""

    def __init__(self, mib=96):
        self.buf = np.ones(mib * 1024 * 1024 // 8)

    def __call__(self):
        self.buf += 1.0


def attention_mass(q, kc, table, L, bs, positions):
    """Share of the dense softmax mass (float64, averaged over heads) on the chosen pages."""
    pages = L // bs
    G = N // KVN
    keys = kc[table[0].long()]
    if keys.dim() == 4:  # (pages, KVN, bs, D) -> (pages, bs, KVN, D)
        keys = keys.permute(0, 2, 1, 3)
    keys = keys.reshape(pages * bs, KVN, D).double()
    qq = q.view(N, D).double()
    shares = []
    for h in range(KVN):
        p = torch.softmax(keys[:, h] @ qq[h * G:(h + 1) * G].T * D ** -0.5, 0)  # (L, G)
        per_page = p.view(pages, bs, G).sum(1)
        chosen = [int(j) for j in positions[0, h] if j != custom_ops.BLOCK_UNSELECTED]
        shares.append(per_page[chosen].sum(0).mean().item())
    return float(np.mean(shares))


def timed(fn, flush):
    flush()
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def run_block_size(bs, context, reps, flush, fractions, quality, form):
    q, kc, vc, table, L = sd.structured_case(context=context, block_size=bs, form=form)
    pages = L // bs
    summaries = custom_ops.page_summaries(kc, table, [L], key_num_heads=KVN)
    t_summ = min(timed(lambda: custom_ops.page_summaries(
        kc, table, [L], key_num_heads=KVN, out=summaries), flush) for _ in range(3))
    t_upd = min(timed(lambda: custom_ops.update_page_summaries(
        summaries, kc, table, [L], 1, key_num_heads=KVN), flush) for _ in range(reps))
    dense_out = sd.attend(q, kc, vc, table, [L], None, N, KVN, bs)
    rows = []
    for frac in fractions:
        k = max(SINKS + 1, pages // frac)

        def select():
            return custom_ops.select_blocks(q, summaries, table, [L], k=k, sink_pages=SINKS,
                                            num_heads=N, key_num_heads=KVN,
                                            layout=sd.layout_of(kc), block_size=bs)

        pos, lens = select()
        row = {"block_size": bs, "fraction": 1 / frac, "k": k, "pages": pages}
        if quality:
            sparse_out = sd.attend(q, kc, vc, table, lens, pos, N, KVN, bs)
            rpos = sd.random_selection(1, KVN, pages, k, SINKS, np.random.default_rng(frac))
            rand_out = sd.attend(q, kc, vc, table, lens, rpos, N, KVN, bs)
            row.update(error_quest=sd.rel_error(sparse_out, dense_out),
                       error_random=sd.rel_error(rand_out, dense_out),
                       mass_quest=attention_mass(q, kc, table, L, bs, pos),
                       mass_random=attention_mass(q, kc, table, L, bs, rpos))
        best = {"dense": 1e9, "select": 1e9, "sparse_attention": 1e9, "select_plus_sparse": 1e9}
        for _ in range(reps):  # interleaved: every variant once per round
            best["dense"] = min(best["dense"], timed(
                lambda: sd.attend(q, kc, vc, table, [L], None, N, KVN, bs), flush))
            best["select"] = min(best["select"], timed(select, flush))
            best["sparse_attention"] = min(best["sparse_attention"], timed(
                lambda: sd.attend(q, kc, vc, table, lens, pos, N, KVN, bs), flush))

            def step():
                p, ln = select()
                sd.attend(q, kc, vc, table, ln, p, N, KVN, bs)

            best["select_plus_sparse"] = min(best["select_plus_sparse"], timed(step, flush))
        row.update({f"ms_{key}": v * 1e3 for key, v in best.items()})
        row["speedup"] = best["dense"] / best["select_plus_sparse"]
        rows.append(row)
        line = (f"bs {bs:4d}  k {k:4d} (1/{frac:<2d})  dense {row['ms_dense']:7.2f} ms  select "
                f"{row['ms_select']:6.3f} ms  sparse {row['ms_sparse_attention']:6.2f} ms  "
                f"select+sparse {row['ms_select_plus_sparse']:6.2f} ms  {row['speedup']:5.1f}x")
        if quality:
            line += (f"  err Quest {row['error_quest']:.3f} random {row['error_random']:.3f}  "
                     f"mass Quest {row['mass_quest']:.3f} random {row['mass_random']:.3f}")
        print(line, flush=True)
    return {"block_size": bs, "context": L, "ms_page_summaries": t_summ * 1e3,
            "ms_update_one_token": t_upd * 1e3, "rows": rows}


def plot(result, path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    main = result["runs"][0]
    rows = main["rows"]
    x = [r["fraction"] for r in rows]
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 4.2))
    ax1.plot(x, [r["error_quest"] for r in rows], "o-", label="Quest selection")
    ax1.plot(x, [r["error_random"] for r in rows], "s--", label="random pages")
    ax1.set_xscale("log", base=2)
    ax1.set_yscale("log")
    ax1.set_xlabel("k / pages")
    ax1.set_ylabel("relative error of the output vs dense")
    ax1b = ax1.twinx()
    ax1b.plot(x, [r["mass_quest"] for r in rows], "o:", color="C2", label="Quest: attention mass kept")
    ax1b.set_ylim(0, 1.02)
    ax1b.set_ylabel("share of dense attention mass on chosen pages")
    h1, l1 = ax1.get_legend_handles_labels()
    h2, l2 = ax1b.get_legend_handles_labels()
    ax1.legend(h1 + h2, l1 + l2, fontsize=8, loc="lower left")
    ax1.set_title("Output error (structured keys, L = %d)" % main["context"])
    ax2.plot(x, [r["ms_select_plus_sparse"] for r in rows], "o-", label="select + sparse attention")
    ax2.plot(x, [r["ms_sparse_attention"] for r in rows], "^--", label="sparse attention only")
    ax2.plot(x, [r["ms_select"] for r in rows], "v--", label="select_blocks only")
    ax2.plot(x, [r["ms_dense"] for r in rows], "k-", label="dense attention")
    ax2.set_xscale("log", base=2)
    ax2.set_yscale("log")
    ax2.set_xlabel("k / pages")
    ax2.set_ylabel("ms per decode step (cold cache, best of %d)" % result["reps"])
    ax2.legend(fontsize=8)
    ax2.set_title("Time, %s, %d threads, block_size %d" % (result["isa"], result["threads"],
                                                          main["block_size"]))
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--context", type=int, default=32768)
    ap.add_argument("--reps", type=int, default=7)
    ap.add_argument("--json", default=os.path.join(HERE, "..", "docs", "select.json"))
    ap.add_argument("--png", default=os.path.join(HERE, "..", "docs", "select.png"))
    ap.add_argument("--no-other-sizes", action="store_true",
                    help="skip the block sizes 16 and 64 (headline rows only)")
    ap.add_argument("--cache", choices=["4d", "3d"], default="4d",
                    help="4d: (num_blocks, KVN, bs, D), BNSD query (default); 3d: (num_blocks, bs, "
                         "KVN*D), BSH query")
    args = ap.parse_args()
    flush = Flusher()
    result = {"cpu": cpu_name(), "isa": custom_ops.isa(), "threads": custom_ops.get_num_threads(),
              "reps": args.reps, "cache": args.cache,
              "shape": {"B": 1, "N": N, "KVN": KVN, "D": D, "dtype": "float16"},
              "sink_pages": SINKS, "runs": []}
    print(f"cpu {result['cpu']}; isa {result['isa']}; threads {result['threads']}; "
          f"B=1 N={N} KVN={KVN} D={D} float16, {args.cache} cache, L={args.context}, "
          f"sink_pages={SINKS}; "
          f"cold cache, best of {args.reps}, interleaved", flush=True)
    result["runs"].append(run_block_size(128, args.context, args.reps, flush, FRACTIONS, True,
                                         args.cache))
    if not args.no_other_sizes:
        for bs in (64, 16):
            result["runs"].append(run_block_size(bs, args.context, args.reps, flush, [16, 8],
                                                 False, args.cache))
    for run in result["runs"]:
        print(f"bs {run['block_size']}: page_summaries {run['ms_page_summaries']:.1f} ms (whole "
              f"cache), update_page_summaries {run['ms_update_one_token']:.3f} ms (one token)")
    with open(args.json, "w") as f:
        json.dump(result, f, indent=1)
    plot(result, args.png)
    print(f"wrote {args.json} and {args.png}")


if __name__ == "__main__":
    main()
