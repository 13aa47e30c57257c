#!/usr/bin/env python3
"""Benchmark of custom_ops.incre_flash_attention_v5 against torch, on real model shapes.

For every shape of the grid (model heads, batch B, KV length L, block size, KV dtype, dense or sparse
page selection) the script times, in the same run and with their repetitions interleaved (ifa a
few calls per round, as its calls are far shorter than torch's; see measure):

  ifa            custom_ops.incre_flash_attention_v5 on the paged KV cache (block_table, and for
                 sparse shapes block_position in the form of SPEC.md 4.4);
  torch gather   torch doing the same job: gather the pages the heads attend to from the same paged
                 cache into contiguous K/V (index_select; per-head advanced indexing when sparse),
                 dequantise int8, then scaled_dot_product_attention with GQA;
  torch contig   scaled_dot_product_attention on K/V that are already contiguous (the gather done
                 beforehand, outside the timing): the best case of torch.

and reports the best time of each, the GB/s of KV read (bytes of the tokens attended to, in the KV
dtype), the fraction of the read bandwidth measured in the same run, the fraction of the roofline,
and the speed-ups over torch. It also measures the fixed cost of one Python call (L=16), checks the
goals of the issue and can write JSON (--json) and a PNG plot (--plot).

The read bandwidth and the peak multiply-add rates come from the C probe (`ifa_bench
--bandwidth-only`, see bench/bandwidth.c), run before and after the shapes; without the binary, a
torch sum stands in for the bandwidth and the figures of shared/MACHINE.md for the rates. This
host's bandwidth swings by up to 2x within seconds, so a shorter probe (--shape-bw-mib) also runs
between every two shapes, and each shape's fractions divide by the better of the probes just
before and just after it: the bandwidth measured together with that shape.

GQA in torch: by default the G query heads of a KV head are folded into the query-length dimension,
(B, N, 1, D) -> (B, KVN, G, D), which is exact (no mask) and several times faster on the CPU than
enable_gqa=True in torch 2.13; --torch-gqa enable_gqa measures the latter instead.

Cold cache: as in ifa_bench, successive repetitions rotate over copies of the cache that together
exceed the last-level cache many times, so that every call reads its KV from memory (--warm turns
this off).

Usage:
  python bench/bench.py --quick                 # < 3 minutes
  python bench/bench.py --json docs/bench.json --plot docs/bench.png     # the default grid
  python bench/bench.py --model llama3-8b --dtype int8 --len 32768       # a filtered grid
"""

import argparse
import itertools
import json
import math
import os
import platform
import shutil
import subprocess
import sys
import time

# torch's OpenMP threads busy-wait for a while after each torch op (GNU OpenMP's default policy).
# Interleaved with ifa's calls, as here (and as in a model, where torch layers surround the
# attention), those spinning threads take the cores ifa's threads need: measured here, ifa at
# B=4, L=4K ran at half speed right after a torch op, while torch's own times barely change with
# the passive policy. So the benchmark asks for it unless the caller chose; docs/benchmarks.md.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

# torch's CPU allocator puts tensors of 2 MiB and more on transparent huge pages when
# THP_MEM_ALLOC_ENABLE=1 (the kernel's THP mode here is "madvise", so nothing is huge otherwise).
# The benchmark asks for them unless the caller chose, for the cache (ifa's input) and torch's
# copies and temporaries alike: measured over the grid, torch's gather + SDPA ran 1.39x faster
# and ifa 1.14x, mostly because torch's jobs fault in 512 times fewer pages between ifa's calls
# (the cache alone on huge pages: 1.00-1.03x in ifa_bench); docs/benchmarks.md, Huge pages.
os.environ.setdefault("THP_MEM_ALLOC_ENABLE", "1")

import torch  # noqa: E402  (after the OpenMP and huge-page settings)
import torch.nn.functional as F

import custom_ops

# ---- Shapes ------------------------------------------------------------------------------------

# name: (num_heads N, key_num_heads KVN, head size D)
MODELS = {
    "llama3-8b": (32, 8, 128),
    "qwen2.5-7b": (28, 4, 128),
    "llama3-70b": (64, 8, 128),
}
DTYPES = {
    # name: (KV dtype, query dtype, bytes per KV element)
    "fp16": (torch.float16, torch.float16, 2),
    "bf16": (torch.bfloat16, torch.bfloat16, 2),
    "int8": (torch.int8, torch.float16, 1),
}
SPARSITY = {"dense": 1, "1/8": 8, "1/32": 32}
K4, K32 = 4096, 32768
M8B, MQW, M70B = "llama3-8b", "qwen2.5-7b", "llama3-70b"

# A grid is a union of cartesian products: (models, batches, lengths, block sizes, dtypes, sparsity
# [, caches]). The cache is "3d", (blocks, bs, KVN*D) with a BSH query (the default), or "4d",
# (blocks, KVN, bs, D) with a BNSD query: in the 4-D cache a head's rows of a page are contiguous,
# the natural form for per-head page selection. The 3-D grids are those of bench/bench_ifa.c.
GRIDS = {
    # One model at B=1 over every axis, plus a few points of the others.
    "quick": [
        ([M8B], [1], [512, K4, K32], [128], ["fp16", "bf16", "int8"], ["dense"]),
        ([M8B], [4], [K4], [128], ["fp16"], ["dense"]),
        ([MQW, M70B], [1], [K4], [128], ["fp16"], ["dense"]),
        ([M8B], [1], [K4, K32], [16], ["fp16"], ["dense"]),
        ([M8B], [1], [K32], [16, 128], ["fp16"], ["1/8", "1/32"]),
        ([M8B], [1], [K32], [128], ["fp16"], ["dense", "1/8"], ["4d"]),
    ],
    # Every model, batch and length for fp16 at block size 128; bf16, int8, block size 16 and the
    # sparse selections on Llama-3-8B.
    "default": [
        ([M8B, MQW, M70B], [1, 4, 16], [512, K4, K32], [128], ["fp16"], ["dense"]),
        ([M8B], [1, 4, 16], [512, K4, K32], [128], ["bf16", "int8"], ["dense"]),
        ([M8B], [1, 4, 16], [512, K4, K32], [16], ["fp16"], ["dense"]),
        ([M8B], [4], [K4, K32], [16], ["bf16", "int8"], ["dense"]),
        ([M8B], [1, 4, 16], [K32], [16, 128], ["fp16"], ["1/8", "1/32"]),
        ([M8B], [4], [K4, K32], [16, 128], ["bf16", "int8"], ["1/8", "1/32"]),
        ([M8B], [1, 4, 16], [K32], [16, 128], ["fp16"], ["dense", "1/8", "1/32"], ["4d"]),
    ],
    # Every combination of the issue's axes: 486 shapes, hours with torch.
    "all": [
        ([M8B, MQW, M70B], [1, 4, 16], [512, K4, K32], [16, 128], ["fp16", "bf16", "int8"],
         ["dense", "1/8", "1/32"]),
    ],
}


def expand_grid(name, args):
    """The shapes of grid `name` that pass the command-line filters, without duplicates."""
    shapes, seen = [], set()
    for block in GRIDS[name]:
        caches = ["4d"] if args.bnsd else (block[6] if len(block) > 6 else ["3d"])
        for s in itertools.product(*block[:6], caches):
            keep = all(f is None or v in f for v, f in zip(
                s, (args.model, args.batch, args.len, args.block_size, args.dtype, args.sparsity)))
            if keep and s not in seen:
                seen.add(s)
                shapes.append(s)
    return shapes


# ---- Machine probes ----------------------------------------------------------------------------

def find_ifa_bench(explicit):
    """The ifa_bench binary: --bench-bin, $IFA_BENCH, or a build folder of the repository."""
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    candidates = [explicit, os.environ.get("IFA_BENCH")]
    for build in ("build", "build/release", "build-release", "build/bench"):
        candidates.append(os.path.join(root, build, "bench", "ifa_bench"))
    candidates.append(shutil.which("ifa_bench"))
    for c in candidates:
        if c and os.path.isfile(c) and os.access(c, os.X_OK):
            return c
    return None


def probe_machine(binary, threads, bw_mib, bw_reps):
    """Read bandwidth (GB/s, 1 and T threads) and peak multiply-add rates, from the C probe."""
    if binary is not None:
        cmd = [binary, "--bandwidth-only", "--threads", str(threads), "--bw-mib", str(bw_mib),
               "--bw-reps", str(bw_reps), "--json", "-"]
        try:
            out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
            m = json.loads(out)["machine"]
            m["probe"] = "ifa_bench"
            return m
        except (subprocess.CalledProcessError, ValueError, KeyError) as e:
            print(f"# ifa_bench --bandwidth-only failed ({e}); using the torch probe", file=sys.stderr)
    return torch_probe(threads, bw_mib, bw_reps)


def torch_probe(threads, bw_mib, bw_reps):
    """Fallback: a torch sum over a large int64 tensor, and the rates of shared/MACHINE.md."""
    x = torch.ones(bw_mib * (1 << 20) // 8, dtype=torch.int64)
    res = {}
    for t in sorted({1, threads}):
        torch.set_num_threads(t)
        x.sum()
        best = min(timed(lambda: x.sum()) for _ in range(bw_reps))
        res[t] = x.numel() * 8 / best / 1e9
    torch.set_num_threads(threads)
    per_core = 3.6  # 16-wide float32 FMAs per ns per core, shared/MACHINE.md (not measured here)
    rate = lambda k, macs: {"instruction": k, "macs_per_instruction": macs,
                            "instr_per_ns_core": per_core, "macs_per_ns": per_core * threads * macs}
    return {
        "probe": "torch (ifa_bench not found; multiply-add rates assumed, not measured)",
        "cpu": platform.processor() or platform.machine(),
        "threads": threads,
        "bandwidth_gbps_1_thread": res[1],
        "bandwidth_gbps": res[threads],
        "mac_rates": {"fma_f32": rate("vfmadd231ps zmm (assumed)", 16),
                      "dpbf16": rate("vdpbf16ps zmm (assumed)", 32),
                      "dpbusd": rate("vpdpbusd zmm (assumed)", 64)},
    }


def mac_rate(machine, dtype):
    """Peak multiply-adds per ns of the instruction a KV dtype needs (fp16: float32 FMA after
    conversion; bf16: VDPBF16PS; int8: VPDPBUSD, or VPMADDWD ymm on AVX2 without VNNI), falling
    back to the float32 FMA."""
    rates = machine["mac_rates"]
    key = {"fp16": "fma_f32", "bf16": "dpbf16", "int8": "dpbusd"}[dtype]
    r = rates.get(key) or rates.get("fma_f32")
    return (r["macs_per_ns"], r["instruction"]) if r else (0.0, "none")


# ---- Timing helpers ----------------------------------------------------------------------------

def keep_freed_memory():
    """Asks glibc to keep freed memory in the process: no block of its own mmap, no trimming.

    By default glibc gives every large block (torch's gathered copies and int8 dequantisations,
    up to gigabytes per call) its own mmap and unmaps it when freed. Each torch job then faults in
    fresh pages that the kernel must zero, and this VM's kernel reports the freed pages back to
    the host (free page reporting). Kept in the process (--keep-freed-memory), measured on
    Llama-3-8B B=4 L=32K int8: torch's SDPA on contiguous KV went from 632 to 247 ms. It is not
    the default: holding gigabytes of freed memory, later large shapes ran 3-40x slower (B=16,
    L=32K int8: 2.4 GB/s instead of 25, though the process stayed under half the RAM), which
    points at the host reclaiming the VM's memory; docs/benchmarks.md. Returns whether it took
    effect."""
    if platform.libc_ver()[0] != "glibc":
        return False
    import ctypes
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):
        return False
    M_TRIM_THRESHOLD, M_MMAP_MAX = -1, -4
    return mallopt(M_MMAP_MAX, 0) == 1 and mallopt(M_TRIM_THRESHOLD, 2**31 - 1) == 1


def release_freed_memory():
    """With --keep-freed-memory: gives the process's free memory back to the kernel (malloc_trim)
    between two shapes, so that one shape's freed buffers are not held through the next."""
    import ctypes
    import gc
    gc.collect()
    try:
        ctypes.CDLL(None).malloc_trim(0)
    except (OSError, AttributeError):
        pass


# measure(): ifa's calls come in bursts that last at least IFA_BURST_S (at most IFA_BURST_CALLS
# calls) between two runs of the torch jobs (each once per round).
IFA_BURST_S = 0.010
IFA_BURST_CALLS = 256


def timed(fn):
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def cpu_name():
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


# ---- One shape ---------------------------------------------------------------------------------

def fill_random(t, gen):
    """Fills a large tensor quickly: a random 8 MiB chunk, repeated. The contents only have to be
    ordinary numbers; memory speed does not depend on them."""
    flat = t.view(-1)
    n = min(flat.numel(), (8 << 20) // t.element_size())
    if t.dtype == torch.int8:
        chunk = torch.randint(-128, 128, (n,), dtype=torch.int8, generator=gen)
    else:
        chunk = (torch.rand(n, generator=gen) * 2 - 1).to(t.dtype)
    for i in range(0, flat.numel(), n):
        m = min(n, flat.numel() - i)
        flat[i:i + m].copy_(chunk[:m])


class Case:
    """Buffers and callables of one shape: the paged cache (with copies to rotate over), the
    block tables and selections, and the three timed jobs."""

    def __init__(self, shape, args):
        model, B, L, bs, dt, sp, cache = shape
        N, KVN, D = MODELS[model]
        kv_dtype, q_dtype, es = DTYPES[dt]
        den = SPARSITY[sp]
        G = N // KVN
        M = -(-L // bs)
        k = M if den == 1 else max(1, M // den)
        self.shape, self.den, self.k, self.M = shape, den, k, M
        self.B, self.N, self.KVN, self.D, self.G, self.bs = B, N, KVN, D, G, bs
        self.dt, self.q_dtype = dt, q_dtype
        self.tokens = L if den == 1 else k * bs
        self.kv_bytes = B * KVN * self.tokens * D * 2 * es
        self.macs = B * KVN * self.tokens * 2 * G * D
        copy_bytes = B * M * bs * KVN * D * 2 * es
        if args.warm:
            n_tables = n_rot = 1
        else:
            n_tables = min(64, max(1, math.ceil(args.cold_mib * (1 << 20) / copy_bytes)))
            n_rot = n_tables if den == 1 else min(64, max(n_tables, math.ceil(
                args.cold_mib * (1 << 20) / self.kv_bytes)))
        self.n_tables, self.n_rot = n_tables, n_rot
        # torch's contiguous copies (and the gather's output) come on top of the paged pool.
        self.pool_bytes = copy_bytes * n_tables + 2 * self.kv_bytes * (n_rot if n_rot > 1 else 1)
        if self.pool_bytes > args.max_cache_gib * (1 << 30):
            raise MemoryError(f"skipped: the buffers would take {self.pool_bytes / (1 << 30):.2f} GiB "
                              f"(limit {args.max_cache_gib} GiB)")
        gen = torch.Generator().manual_seed(1234 + B * 7 + L)

        nb = B * M * n_tables
        if cache == "4d":
            cache_shape, self.layout = (nb, KVN, bs, D), "BNSD"
            self.q = (torch.rand(B, N, 1, D, generator=gen) * 2 - 1).to(q_dtype)
        else:
            cache_shape, self.layout = (nb, bs, KVN * D), "BSH"
            self.q = (torch.rand(B, 1, N * D, generator=gen) * 2 - 1).to(q_dtype)
        self.kc = torch.empty(cache_shape, dtype=kv_dtype)
        self.vc = torch.empty(cache_shape, dtype=kv_dtype)
        fill_random(self.kc, gen)
        fill_random(self.vc, gen)
        self.scale = 1.0 / math.sqrt(D)

        # Block tables: copy t owns blocks [t*B*M, (t+1)*B*M), shuffled.
        self.tables = []
        for t in range(n_tables):
            perm = torch.randperm(B * M, generator=gen, dtype=torch.int64) + t * B * M
            self.tables.append(perm.to(torch.int32).view(B, M).contiguous())
        # Selections (sparse): per (b, h), k random pages in ascending order, then the sentinel.
        self.positions = []
        if den > 1:
            for _ in range(n_rot):
                keys = torch.rand(B, KVN, M, generator=gen)
                sel = keys.argsort(dim=-1)[..., :k].sort(dim=-1).values.to(torch.int32)
                bp = torch.full((B, KVN, M), custom_ops.BLOCK_UNSELECTED, dtype=torch.int32)
                bp[..., :k] = sel
                self.positions.append(bp.contiguous())
        self.seq_lens = torch.full((B,), self.tokens, dtype=torch.int64)

        # int8 KV: per-channel scale and offset (key at index 0, value at 1), in the query dtype.
        self.aq_scale = self.aq_offset = None
        if dt == "int8":
            self.aq_scale = (0.004 + 0.004 * torch.rand(2, KVN * D, generator=gen)).to(q_dtype)
            self.aq_offset = (torch.rand(2, KVN * D, generator=gen) * 4 - 2).to(q_dtype)
            # The same parameters broadcast over (B, KVN, S, D) for torch's dequantisation.
            self.t_scale = self.aq_scale.view(2, 1, KVN, 1, D)
            self.t_offset = self.aq_offset.view(2, 1, KVN, 1, D)

        self.torch_gqa = args.torch_gqa
        # torch's contiguous K/V, one pair per rotation (made with the gather, untimed).
        self.contig = [self.gather(r) for r in range(n_rot if n_rot > 1 else 1)]

    def rotation(self, r):
        r %= self.n_rot
        return self.tables[r % self.n_tables], (self.positions[r] if self.positions else None), r

    # -- ifa
    def run_ifa(self, r):
        table, pos, _ = self.rotation(r)
        return custom_ops.incre_flash_attention_v5(
            self.q, self.kc, self.vc, actual_seq_lengths=self.seq_lens,
            antiquant_scale=self.aq_scale, antiquant_offset=self.aq_offset, block_table=table,
            block_position=pos, num_heads=self.N, scale_value=self.scale, layout=self.layout,
            key_num_heads=self.KVN, block_size=self.bs)

    # -- torch
    def gather(self, r):
        """K and V of rotation r as contiguous (B, KVN, tokens, D) tensors in the KV dtype."""
        table, pos, _ = self.rotation(r)
        B, KVN, D, bs, M = self.B, self.KVN, self.D, self.bs, self.M
        out = []
        for cache in (self.kc, self.vc):
            if pos is None:
                g = cache.index_select(0, table.view(-1))
                if self.layout == "BSH":  # (B*M, bs, KVN*D) -> (B, KVN, M*bs, D)
                    g = g.view(B, M * bs, KVN, D).transpose(1, 2)
                else:  # (B*M, KVN, bs, D) -> (B, KVN, M*bs, D)
                    g = g.view(B, M, KVN, bs, D).transpose(1, 2)
                g = g.reshape(B, KVN, M * bs, D)
            else:
                # Physical block of each selected page, then one advanced-indexing gather that
                # takes head h's rows of those blocks: (B, KVN, k, bs, D).
                sel = pos[..., :self.k].reshape(B, -1).long()
                blk = table.long().gather(1, sel).view(B, KVN, self.k)
                heads = torch.arange(KVN).view(1, KVN, 1)
                if self.layout == "BSH":
                    g = cache.view(-1, bs, KVN, D)[blk, :, heads]
                else:
                    g = cache[blk, heads]
                g = g.reshape(B, KVN, self.k * bs, D)
            out.append(g.contiguous())
        return out

    def sdpa(self, k, v):
        if self.dt == "int8":
            k = (k.to(self.q_dtype) + self.t_offset[0]) * self.t_scale[0]
            v = (v.to(self.q_dtype) + self.t_offset[1]) * self.t_scale[1]
        B, N, KVN, G, D = self.B, self.N, self.KVN, self.G, self.D
        q = self.q.view(B, N, D)  # (B, 1, N*D) and (B, N, 1, D) hold the same numbers
        if self.torch_gqa == "fold":
            o = F.scaled_dot_product_attention(q.view(B, KVN, G, D), k, v, scale=self.scale)
        else:
            o = F.scaled_dot_product_attention(q.view(B, N, 1, D), k, v, scale=self.scale,
                                               enable_gqa=True)
        return o.reshape(self.q.shape)

    def run_torch_gather(self, r):
        k, v = self.gather(r)
        return self.sdpa(k, v)

    def run_torch_contig(self, r):
        k, v = self.contig[r % len(self.contig)]
        return self.sdpa(k, v)


def measure(case, args, with_torch):
    """Interleaved repetitions of the jobs; best and median time of each, in seconds.

    A round runs a burst of ifa calls, then each torch job once. A burst lasts at least
    IFA_BURST_S: after other work (torch's jobs, or even a matmul on both cores) this shared host
    runs memory-bound calls up to 1.4x slower for the next 2-10 ms, and torch's jobs (1-3000 ms
    each) spend most of their time past that ramp while short ifa calls would spend all of theirs
    inside it (docs/benchmarks.md, *Noise*). The earlier rule, ifa an eighth of a round and at
    most 8 calls, gave a 0.5 ms call three calls per round, all inside the ramp. The first call
    of every burst, the one that follows torch's jobs, is also kept apart ("ifa_first")."""
    jobs = [("ifa", case.run_ifa)]
    if with_torch:
        jobs += [("torch_gather", case.run_torch_gather), ("torch_contig", case.run_torch_contig)]
    times = {name: [] for name, _ in jobs}
    times["ifa_first"] = []
    for _, fn in jobs:  # warm-up: one call of each
        fn(0)
    start, rep, calls = time.perf_counter(), 0, 0
    while rep < args.max_reps:
        for name, fn in jobs:
            burst_end = time.perf_counter() + IFA_BURST_S
            for i in range(IFA_BURST_CALLS if name == "ifa" else 1):
                calls += 1
                t = timed(lambda: fn(calls))
                times[name].append(t)
                if name == "ifa" and i == 0:
                    times["ifa_first"].append(t)
                if time.perf_counter() >= burst_end:
                    break
        rep += 1
        if rep >= args.min_reps and time.perf_counter() - start > args.budget:
            break
    res = {}
    for name, t in times.items():
        t.sort()
        res[name] = (t[0], t[len(t) // 2], len(t))
    return res


def run_shape(shape, args, threads, machine):
    """One shape: build its buffers, check ifa against torch, time the interleaved jobs."""
    model, B, L, bs, dt, sp, cache = shape
    N, KVN, D = MODELS[model]
    r = {"model": model, "num_heads": N, "key_num_heads": KVN, "head_dim": D, "batch": B,
         "seq_len": L, "block_size": bs, "kv_dtype": str(DTYPES[dt][0]).replace("torch.", ""),
         "dtype_short": dt, "sparsity": sp, "cache": cache, "threads": threads}
    try:
        case = Case(shape, args)
        r.update(kv_layout=case.layout, pages_per_seq=case.M, pages_selected=case.k,
                 tokens_per_head=case.tokens, kv_bytes=case.kv_bytes, macs=case.macs,
                 rotations=case.n_rot)
        if not args.no_torch:
            r["max_abs_diff_vs_torch"] = check(case)
        res = measure(case, args, not args.no_torch)
        r["time_s"], r["time_median_s"], r["reps"] = res["ifa"]
        r["time_first_s"], r["time_first_median_s"], r["bursts"] = res["ifa_first"]
        for k in ("torch_gather", "torch_contig"):
            if k in res:
                r[k + "_s"], r[k + "_median_s"], _ = res[k]
        r["ok"] = True  # main() adds the figures (roofline) once it knows the probe after the shape
        del case
    except (MemoryError, RuntimeError, ValueError) as e:
        r["ok"] = False
        r["error"] = str(e).splitlines()[0][:200]
    return r


def check(case):
    """Largest difference between ifa and torch on one rotation (both do the same job)."""
    a = case.run_ifa(0).float()
    b = case.run_torch_contig(0).float()
    return float((a - b).abs().max())


def fixed_cost(calls):
    """Best and median time of one Python call at L=16 (one page of 16 fp16 tokens, B=1,
    Llama-3-8B heads, warm), in microseconds; every call timed alone."""
    N, KVN, D = MODELS[M8B]
    q = torch.randn(1, 1, N * D, dtype=torch.float16)
    kc = torch.randn(1, 16, KVN * D, dtype=torch.float16)
    vc = torch.randn(1, 16, KVN * D, dtype=torch.float16)
    table = torch.zeros(1, 1, dtype=torch.int32)
    lens = torch.tensor([16], dtype=torch.int64)
    f = custom_ops.incre_flash_attention_v5
    scale = 1.0 / math.sqrt(D)
    pc = time.perf_counter_ns
    t = []
    for i in range(calls + 50):
        t0 = pc()
        f(q, kc, vc, actual_seq_lengths=lens, block_table=table, num_heads=N, scale_value=scale,
          key_num_heads=KVN, block_size=16)
        t.append(pc() - t0)
    t = sorted(t[50:])
    return t[0] / 1e3, t[len(t) // 2] / 1e3


# ---- Goals of the issue ------------------------------------------------------------------------

def goals(results, fixed_us, median_bw=None):
    """The goals of the issue. Each shape's fractions divide by the better of the bandwidth probes
    around it (a probe in one of the host's fast bursts makes a shape look worse, never better);
    with median_bw, the goals that divide by the bandwidth also count the shapes that meet them
    against the run's median probe instead (`shapes_met_at_median_probe`), to show how much of
    a miss is the yardstick's burst rather than the shape."""
    ok = [r for r in results if r.get("ok")]
    out = []

    def add(name, target, values, cmp, at_median=None):
        """values: list of (label, value); the goal is met when every value meets the target.
        at_median: the same values against median_bw, where the goal divides by the bandwidth."""
        if not values:
            out.append({"goal": name, "target": f"{cmp} {target}", "shapes": 0, "met": None})
            return
        vals = [v for _, v in values]
        worst = min(vals) if cmp == ">=" else max(vals)
        srt = sorted(vals)
        met = sum(1 for v in vals if (v >= target if cmp == ">=" else v <= target))
        out.append({"goal": name, "target": f"{cmp} {target}", "shapes": len(vals), "shapes_met": met,
                    "worst": round(worst, 4), "median": round(srt[len(srt) // 2], 4),
                    "worst_shape": next(l for l, v in values if v == worst),
                    "met": met == len(vals)})
        if at_median is not None and median_bw:
            out[-1]["shapes_met_at_median_probe"] = sum(1 for v in at_median if v >= target)
            out[-1]["median_probe_gbps"] = round(median_bw, 3)

    def at_median_roofline(r):
        return max(r["kv_bytes"] / (median_bw * 1e9), r["compute_time_s"]) / r["time_s"] if median_bw else 0.0

    def at_median_bw(r):
        return r["kv_bytes"] / (median_bw * 1e9) / r["time_s"] if median_bw else 0.0

    lab = lambda r: (f"{r['model']} B={r['batch']} L={r['seq_len']} bs={r['block_size']} "
                     f"{r['kv_dtype']} {r['sparsity']}{' 4d' if r['cache'] == '4d' else ''}")
    # int8 has its own goal (bandwidth counting int8 bytes) just below.
    dense128 = [r for r in ok if r["sparsity"] == "dense" and r["seq_len"] >= K4 and r["block_size"] == 128
                and r["dtype_short"] != "int8"]
    add("fp16/bf16 KV, dense, L >= 4K, block size 128: fraction of roofline", 0.80,
        [(lab(r), r["roofline_fraction"]) for r in dense128], ">=", [at_median_roofline(r) for r in dense128])
    int8 = [r for r in ok if r["kv_dtype"] == "int8" and r["sparsity"] == "dense" and r["seq_len"] >= K4]
    add("int8 KV, dense, L >= 4K: fraction of bandwidth (int8 bytes)", 0.70,
        [(lab(r), r["bw_fraction"]) for r in int8], ">=", [at_median_bw(r) for r in int8])
    dense16 = [r for r in ok if r["block_size"] == 16 and r["sparsity"] == "dense" and r["seq_len"] >= K4
               and r["dtype_short"] != "int8"]
    add("block size 16, fp16/bf16 KV, dense, L >= 4K: fraction of roofline", 0.70,
        [(lab(r), r["roofline_fraction"]) for r in dense16], ">=", [at_median_roofline(r) for r in dense16])
    add("speed-up over torch gather + SDPA", 3.0,
        [(lab(r), r["speedup_vs_torch_gather"]) for r in ok if "speedup_vs_torch_gather" in r], ">=")
    add("speed-up over torch SDPA on contiguous KV", 1.5,
        [(lab(r), r["speedup_vs_torch_contig"]) for r in ok if "speedup_vs_torch_contig" in r], ">=")
    key = lambda r: (r["model"], r["batch"], r["seq_len"], r["block_size"], r["kv_dtype"], r["cache"])
    dense = {key(r): r for r in ok if r["sparsity"] == "dense"}
    for cache, what in (("3d", "(blocks, bs, KVN*D) cache"), ("4d", "(blocks, KVN, bs, D) cache")):
        sp = [(lab(r), dense[key(r)]["time_s"] / r["time_s"]) for r in ok
              if r["sparsity"] == "1/8" and r["seq_len"] == K32 and r["cache"] == cache and key(r) in dense]
        if sp or cache == "3d":
            add(f"sparse 1/8 at L=32K, {what}: speed-up over dense", 6.0, sp, ">=")
    if fixed_us is not None:
        out.append({"goal": "fixed cost of one Python call (L=16), us", "target": "<= 15",
                    "shapes": 1, "worst": round(fixed_us, 3), "met": fixed_us <= 15.0})
    add("B=1, L=512: time / bandwidth time", 2.0,
        [(lab(r), r["time_s"] / r["bw_time_s"]) for r in ok
         if r["batch"] == 1 and r["seq_len"] == 512 and r["sparsity"] == "dense"], "<=")
    return out


# ---- Output ------------------------------------------------------------------------------------

def roofline(r, machine):
    """Adds GB/s, the fractions of bandwidth and roofline to a result (in place): against the
    bandwidth probed around the shape where there is one, else the run's."""
    bw = r.get("bandwidth_gbps_local") or machine["bandwidth_gbps_used"]
    rate, instr = mac_rate(machine, r["dtype_short"])
    r["bw_time_s"] = r["kv_bytes"] / (bw * 1e9)
    r["compute_time_s"] = r["macs"] / (rate * 1e9) if rate > 0 else 0.0
    r["roofline_s"] = max(r["bw_time_s"], r["compute_time_s"])
    r["bound"] = "memory" if r["bw_time_s"] >= r["compute_time_s"] else "compute"
    r["mac_instruction"] = instr
    r["gbps"] = r["kv_bytes"] / r["time_s"] / 1e9
    r["bw_fraction"] = r["gbps"] / bw
    r["roofline_fraction"] = r["roofline_s"] / r["time_s"]
    for k in ("torch_gather", "torch_contig"):
        if k + "_s" in r:
            r[k + "_gbps"] = r["kv_bytes"] / r[k + "_s"] / 1e9
            r["speedup_vs_" + k] = r[k + "_s"] / r["time_s"]


HEADER = (f"{'model':<11} {'B':>3} {'L':>6} {'bs':>4} {'kv':<5} {'sparse':<6} {'cache':<5} {'KV MiB':>8} "
          f"{'ifa ms':>9} {'GB/s':>6} {'bw':>5} {'roof':>5} {'gather ms':>10} {'x':>6} "
          f"{'contig ms':>10} {'x':>6} {'err':>8}")


def line(r):
    head = (f"{r['model']:<11} {r['batch']:>3} {r['seq_len']:>6} {r['block_size']:>4} "
            f"{r['dtype_short']:<5} {r['sparsity']:<6} {r['cache']:<5} ")
    if not r.get("ok"):
        return head + r.get("error", "failed")
    s = (f"{r['kv_bytes'] / 2**20:>8.1f} {r['time_s'] * 1e3:>9.3f} {r['gbps']:>6.2f} "
         f"{r['bw_fraction']:>5.2f} {r['roofline_fraction']:>5.2f} ")
    if "torch_gather_s" in r:
        s += (f"{r['torch_gather_s'] * 1e3:>10.3f} {r['speedup_vs_torch_gather']:>6.2f} "
              f"{r['torch_contig_s'] * 1e3:>10.3f} {r['speedup_vs_torch_contig']:>6.2f} "
              f"{r.get('max_abs_diff_vs_torch', float('nan')):>8.1e}")
    return head + s


def plot(data, path):
    """GB/s of KV read against L, one panel per KV dtype: ifa per batch size, torch's two ways
    (largest batch), the measured read bandwidth and the roofline of the shape."""
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("# --plot needs matplotlib: pip install matplotlib", file=sys.stderr)
        return False
    ok = [r for r in data["results"] if r.get("ok") and r["sparsity"] == "dense"
          and r["block_size"] == 128 and r["model"] == M8B and r.get("cache", "3d") == "3d"]
    dtypes = [d for d in ("fp16", "bf16", "int8") if any(r["dtype_short"] == d for r in ok)]
    if not dtypes:
        print("# --plot: no dense llama3-8b shape with block size 128 to draw", file=sys.stderr)
        return False
    m = data["machine"]
    fig, axes = plt.subplots(1, len(dtypes), figsize=(5.2 * len(dtypes), 4.4), sharey=True,
                             squeeze=False)
    colors = {1: "tab:blue", 4: "tab:green", 16: "tab:purple"}
    for ax, dt in zip(axes[0], dtypes):
        rs = [r for r in ok if r["dtype_short"] == dt]
        batches = sorted({r["batch"] for r in rs})
        # torch and the roofline are drawn for the batch with the most lengths (ties: largest B).
        ref = max(batches, key=lambda b: (sum(r["batch"] == b for r in rs), b))
        for b in batches:
            pts = sorted(((r["seq_len"], r) for r in rs if r["batch"] == b), key=lambda p: p[0])
            xs = [p[0] for p in pts]
            ax.plot(xs, [p[1]["gbps"] for p in pts], "o-", color=colors.get(b, None),
                    label=f"ifa B={b}")
            if b == ref:
                ax.plot(xs, [p[1]["kv_bytes"] / p[1]["roofline_s"] / 1e9 for p in pts], ":",
                        color="gray", lw=2, label=f"roofline B={b}")
                if "torch_gather_gbps" in pts[0][1]:
                    ax.plot(xs, [p[1]["torch_gather_gbps"] for p in pts], "s--", color="tab:red",
                            label=f"torch gather+SDPA B={b}")
                    ax.plot(xs, [p[1]["torch_contig_gbps"] for p in pts], "^--",
                            color="tab:orange", label=f"torch SDPA contiguous B={b}")
        bw = m.get("bandwidth_gbps_shapes", {}).get("median", m["bandwidth_gbps_used"])
        ax.axhline(bw, color="black", lw=1, label=f"read bandwidth {bw:.1f} GB/s")
        ax.set_xscale("log", base=2)
        ax.set_xlabel("KV length L (tokens)")
        ax.set_title(f"{M8B}, {dt} KV, block size 128")
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize=7, loc="center left")
    axes[0][0].set_ylabel("GB/s of KV read")
    fig.suptitle(f"IFA-V5 decode attention, {data['machine']['cpu']}, isa {data['isa']}, "
                 f"{data['threads']} threads ({data['date']})", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True


def markdown(data):
    """The figures of a JSON file as a Markdown report (for docs/benchmarks.md)."""
    m = data["machine"]
    if "bandwidth_gbps_shapes" in m:
        p = m["bandwidth_gbps_shapes"]
        frac = (f"between the shapes ({m['shape_probe_mib']} MiB probes) {p['min']:.1f} to "
                f"{p['max']:.1f}, median {p['median']:.1f}; each shape's fractions divide by the "
                f"better of the probes just before and after it")
    else:
        frac = f"fractions divide by {m['bandwidth_gbps_used']:.1f}"
    passes = f" --passes {data['passes']}" if data.get("passes", 1) > 1 else ""
    out = [f"Measured {data['date']} by `bench.py --grid {data['grid']}{passes}`: {m['cpu']}, isa "
           f"**{data['isa']}**, {data['threads']} threads, {data['cache']} cache, torch "
           f"{data['versions']['torch']} (GQA: {data['torch_gqa']}). Read bandwidth "
           f"{m.get('bandwidth_gbps_start', m['bandwidth_gbps']):.1f} GB/s before the shapes and "
           f"{m.get('bandwidth_gbps_end', m['bandwidth_gbps']):.1f} after (1 GiB probes); {frac}. "
           f"Fixed cost of one Python call (L=16): best {data['fixed_cost_us']['best']:.1f} µs.", ""]
    out.append("ifa ms is the best call; first ms the best of the calls that came right after torch's "
               "jobs (the first of each burst, see *Noise*).")
    out.append("")
    out.append("| model | B | L | bs | KV | sparse | cache | KV MiB | ifa ms | first ms | GB/s | bw | roof | "
               "gather+SDPA ms | x | SDPA contig ms | x |")
    out.append("|---|---:|---:|---:|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for r in data["results"]:
        if not r.get("ok"):
            out.append(f"| {r['model']} | {r['batch']} | {r['seq_len']} | {r['block_size']} | "
                       f"{r['dtype_short']} | {r['sparsity']} | {r.get('cache', '3d')} | "
                       f"{r.get('error', 'failed')} |"
                       + " |" * 9)
            continue
        t = ""
        if "torch_gather_s" in r:
            t = (f"{r['torch_gather_s'] * 1e3:.3f} | {r['speedup_vs_torch_gather']:.2f} | "
                 f"{r['torch_contig_s'] * 1e3:.3f} | {r['speedup_vs_torch_contig']:.2f} |")
        else:
            t = " | | | |"
        first = f"{r['time_first_s'] * 1e3:.3f}" if "time_first_s" in r else ""
        out.append(f"| {r['model']} | {r['batch']} | {r['seq_len']} | {r['block_size']} | "
                   f"{r['dtype_short']} | {r['sparsity']} | {r.get('cache', '3d')} | "
                   f"{r['kv_bytes'] / 2**20:.1f} | "
                   f"{r['time_s'] * 1e3:.3f} | {first} | {r['gbps']:.2f} | {r['bw_fraction']:.2f} | "
                   f"{r['roofline_fraction']:.2f} | {t}")
    out += ["", "| goal | target | met | worst | median | shapes met |", "|---|---|---|---:|---:|---:|"]
    for g in data["goals"]:
        met = {True: "yes", False: "**no**", None: "no shape"}[g["met"]]
        out.append(f"| {g['goal']} | {g['target']} | {met} | {g.get('worst', '')} | "
                   f"{g.get('median', '')} | {g.get('shapes_met', '')}"
                   f"{'/' + str(g['shapes']) if 'shapes_met' in g else ''}"
                   f"{' (' + str(g['shapes_met_at_median_probe']) + ' at the median probe)' if 'shapes_met_at_median_probe' in g else ''} |")
    return "\n".join(out)


# ---- Main --------------------------------------------------------------------------------------

def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="the quick grid, under 3 minutes")
    p.add_argument("--grid", choices=sorted(GRIDS), default=None,
                   help="quick | default | all (default: default, or quick with --quick)")
    csv = lambda conv: (lambda s: [conv(x) for x in s.split(",")])
    length = lambda s: int(s[:-1]) * 1024 if s[-1] in "kK" else int(s)
    p.add_argument("--model", type=csv(str), help="e.g. llama3-8b,qwen2.5-7b,llama3-70b")
    p.add_argument("--batch", type=csv(int), help="e.g. 1,4,16")
    p.add_argument("--len", type=csv(length), help="e.g. 512,4K,32K")
    p.add_argument("--block-size", type=csv(int), help="e.g. 16,128")
    p.add_argument("--dtype", type=csv(str), help="fp16,bf16,int8")
    p.add_argument("--sparsity", type=csv(str), help="dense,1/8,1/32")
    p.add_argument("--threads", type=int, default=None,
                   help="threads of ifa and torch (default: custom_ops.get_num_threads())")
    p.add_argument("--no-torch", action="store_true", help="time ifa only")
    p.add_argument("--torch-gqa", choices=["fold", "enable_gqa"], default="fold",
                   help="how torch's SDPA does GQA (default: fold the G heads into the query length)")
    p.add_argument("--min-reps", type=int, default=3)
    p.add_argument("--max-reps", type=int, default=100)
    p.add_argument("--budget", type=float, default=None,
                   help="seconds of repetitions per shape beyond --min-reps (1.0; 0.3 with --quick)")
    p.add_argument("--warm", action="store_true", help="no rotation: the KV may stay in the L3")
    p.add_argument("--cold-mib", type=float, default=256.0,
                   help="footprint the rotation over cache copies aims for (MiB)")
    p.add_argument("--bnsd", action="store_true",
                   help="every shape in the 4-D paged cache (num_blocks, KVN, bs, D), layout BNSD "
                        "(the grids already add 4-D sparse shapes)")
    p.add_argument("--max-cache-gib", type=float, default=8.0,
                   help="skip shapes whose buffers (pool + torch's copies) exceed this")
    p.add_argument("--bench-bin", help="path of ifa_bench for the bandwidth probe")
    p.add_argument("--bw-mib", type=int, default=1024)
    p.add_argument("--bw-reps", type=int, default=7)
    p.add_argument("--passes", type=int, default=1,
                   help="run the grid this many times, round-robin; each shape keeps its best")
    p.add_argument("--shape-bw-mib", type=int, default=256,
                   help="size of the bandwidth probe between shapes (MiB); 0: no such probe, the "
                        "fractions divide by the better of the first and last probes")
    p.add_argument("--fixed-calls", type=int, default=5000)
    p.add_argument("--keep-freed-memory", action="store_true",
                   help="keep freed memory in the process (glibc mallopt): torch's jobs stop "
                        "faulting in their temporaries, up to 2.6x faster; unsafe for large grids "
                        "on this VM (see keep_freed_memory)")
    p.add_argument("--json", help="write the results here (e.g. docs/bench.json)")
    p.add_argument("--plot", nargs="?", const="docs/bench.png", default=None,
                   help="write a PNG plot (default path docs/bench.png)")
    p.add_argument("--plot-from", help="only draw the plot of an existing JSON file")
    p.add_argument("--table-from", help="only print the figures of a JSON file as Markdown")
    args = p.parse_args(argv)
    if args.grid is None:
        args.grid = "quick" if args.quick else "default"
    if args.budget is None:
        args.budget = 0.3 if args.grid == "quick" else 1.0
    for name, allowed in (("model", MODELS), ("dtype", DTYPES), ("sparsity", SPARSITY)):
        for v in getattr(args, name) or []:
            if v not in allowed:
                p.error(f"--{name}: {v!r} is not one of {', '.join(allowed)}")
    return args


def main(argv=None):
    args = parse_args(argv)
    if args.table_from:
        with open(args.table_from) as f:
            print(markdown(json.load(f)))
        return 0
    if args.plot_from:
        with open(args.plot_from) as f:
            data = json.load(f)
        out = args.plot or "docs/bench.png"
        if plot(data, out):
            print(f"# wrote {out}")
        return 0

    kept = keep_freed_memory() if args.keep_freed_memory else False
    if args.threads is not None:
        custom_ops.set_num_threads(args.threads)
    threads = custom_ops.get_num_threads()
    torch.set_num_threads(threads)
    shapes = expand_grid(args.grid, args)
    if not shapes:
        print(f"bench.py: the filters leave no shape of the {args.grid} grid", file=sys.stderr)
        return 2

    binary = find_ifa_bench(args.bench_bin)
    machine = probe_machine(binary, threads, args.bw_mib, args.bw_reps)
    print(f"# bench.py: custom_ops {custom_ops.__version__}, torch {torch.__version__}, "
          f"python {platform.python_version()}")
    print(f"# cpu: {cpu_name()}; isa: {custom_ops.isa()} (available: "
          f"{' '.join(custom_ops.isa_available())}); threads: ifa {threads}, torch "
          f"{torch.get_num_threads()}")
    print(f"# read bandwidth ({machine['probe']}): {machine['bandwidth_gbps_1_thread']:.1f} GB/s "
          f"with 1 thread, {machine['bandwidth_gbps']:.1f} GB/s with {threads}")
    for r in machine["mac_rates"].values():
        if r:
            print(f"# peak {r['instruction']}: {r['macs_per_ns']:.1f} multiply-adds per ns "
                  f"on {threads} cores")
    print(f"# freed memory: {'kept in the process (mallopt)' if kept else 'returned to the kernel'}; "
          f"torch huge pages (THP_MEM_ALLOC_ENABLE): {os.environ.get('THP_MEM_ALLOC_ENABLE')}")
    print(f"# cache: {'warm' if args.warm else 'cold'}; torch GQA: {args.torch_gqa}; "
          f"grid {args.grid}: {len(shapes)} shapes")

    fixed = fixed_cost(args.fixed_calls)
    print(f"# fixed cost of one Python call (B=1, L=16, fp16, warm): best {fixed[0]:.2f} us, "
          f"median {fixed[1]:.2f} us")

    # Provisional figures use the probe before the shape; the final table the better of the
    # probes before and after it (or, without them, the better of the run's first and last).
    machine["bandwidth_gbps_used"] = machine["bandwidth_gbps"]
    local = lambda: (probe_machine(binary, threads, args.shape_bw_mib, 3)["bandwidth_gbps"]
                     if args.shape_bw_mib > 0 else None)
    print(HEADER)
    # Passes: the whole grid again, round-robin, so a slow phase of the host hits different
    # shapes in different passes; each shape keeps its best ifa time (with the probes around that
    # pass) and torch's best times (and its own best first call), all from interleaved
    # repetitions.
    results, probes = [None] * len(shapes), [local()]
    t_start = time.perf_counter()
    for pass_no in range(args.passes):
        if args.passes > 1:
            print(f"# pass {pass_no + 1} of {args.passes}", flush=True)
        for i, shape in enumerate(shapes):
            r = run_shape(shape, args, threads, machine)
            if kept:
                release_freed_memory()
            probes.append(local())
            best = results[i]
            if best is not None and best.get("ok") and r.get("ok"):
                # torch and ifa's first calls keep their best of all passes
                for k in ("torch_gather_s", "torch_contig_s", "time_first_s"):
                    if k in best and k in r:
                        r[k] = best[k] = min(r[k], best[k])
            if r.get("ok"):
                r["bandwidth_gbps_local"] = (max(probes[-2], probes[-1]) if probes[-1] is not None
                                             else None)
                roofline(r, machine)
            if best is None or (r.get("ok") and (not best.get("ok") or r["time_s"] < best["time_s"])):
                results[i] = r
            print(line(r), flush=True)
    elapsed = time.perf_counter() - t_start

    end = probe_machine(binary, threads, args.bw_mib, args.bw_reps)
    machine["bandwidth_gbps_start"] = machine["bandwidth_gbps"]
    machine["bandwidth_gbps_end"] = end["bandwidth_gbps"]
    machine["bandwidth_gbps_used"] = max(machine["bandwidth_gbps"], end["bandwidth_gbps"])
    for r in results:
        if r.get("ok"):
            roofline(r, machine)
    if probes[0] is not None:
        srt = sorted(probes)
        machine["shape_probe_mib"] = args.shape_bw_mib
        machine["bandwidth_gbps_shapes"] = {"min": srt[0], "median": srt[len(srt) // 2],
                                            "max": srt[-1]}
        print(f"# read bandwidth between the shapes ({args.shape_bw_mib} MiB): min {srt[0]:.1f}, "
              f"median {srt[len(srt) // 2]:.1f}, max {srt[-1]:.1f} GB/s; each shape's fractions "
              f"divide by the better of the probes before and after it")
    print(f"# read bandwidth again at the end: {end['bandwidth_gbps']:.1f} GB/s; the plot's line is "
          f"{machine['bandwidth_gbps_used']:.1f} GB/s; shapes took {elapsed:.0f} s")
    print("# final figures (bw = fraction of read bandwidth, roof = fraction of roofline, "
          "x = speed-up of ifa over that torch job, err = max |ifa - torch|)")
    print(HEADER)
    for r in results:
        print(line(r))

    g = goals(results, fixed[0], machine.get("bandwidth_gbps_shapes", {}).get("median"))
    print("# goals of the issue")
    for x in g:
        state = {True: "met", False: "NOT met", None: "no shape"}[x["met"]]
        detail = ""
        if x.get("shapes"):
            detail = f"worst {x['worst']}"
            if "median" in x:
                detail += f", median {x['median']}, {x['shapes_met']}/{x['shapes']} shapes"
            if "worst_shape" in x and not x["met"]:
                detail += f" (worst: {x['worst_shape']})"
            if "shapes_met_at_median_probe" in x:
                detail += (f"; {x['shapes_met_at_median_probe']}/{x['shapes']} against the median probe "
                           f"({x['median_probe_gbps']:.1f} GB/s)")
        print(f"#   {x['goal']} {x['target']}: {state}; {detail}")

    data = {
        "tool": "bench.py",
        "date": time.strftime("%Y-%m-%d %H:%M"),
        "grid": args.grid,
        "passes": args.passes,
        "cache": "warm" if args.warm else "cold",
        "torch_gqa": args.torch_gqa,
        "freed_memory_kept": kept,
        "thp_mem_alloc_enable": os.environ.get("THP_MEM_ALLOC_ENABLE"),
        "isa": custom_ops.isa(),
        "isa_available": list(custom_ops.isa_available()),
        "threads": threads,
        "versions": {"custom_ops": custom_ops.__version__, "torch": torch.__version__,
                     "python": platform.python_version()},
        "machine": dict(machine, cpu=cpu_name()),
        "fixed_cost_us": {"best": fixed[0], "median": fixed[1]},
        "elapsed_s": elapsed,
        "goals": g,
        "results": results,
    }
    if args.json:
        os.makedirs(os.path.dirname(os.path.abspath(args.json)), exist_ok=True)
        with open(args.json, "w") as f:
            json.dump(data, f, indent=1)
        print(f"# wrote {args.json}")
    if args.plot:
        os.makedirs(os.path.dirname(os.path.abspath(args.plot)), exist_ok=True)
        if plot(data, args.plot):
            print(f"# wrote {args.plot}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
