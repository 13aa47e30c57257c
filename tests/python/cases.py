"""Random case builders and SPEC 11 comparisons for the incre_flash_attention_v5 tests.

A Case holds every input as a numpy array in a canonical form (bfloat16 values are stored as float32
arrays whose values are exactly representable in bfloat16, and their names are listed in
``case.bf16``).  ``case.kwargs(backend)`` turns them into torch tensors or numpy arrays for a call;
``case.golden()`` runs the float64 reference of golden.py on the same values.

All randomness comes from a seeded numpy Generator, so a failing case is reproduced by its seed.
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np

from golden import SENTINEL, dtype_name, golden_ifa, to_np

try:
    import torch
except Exception:  # pragma: no cover
    torch = None

PARAM_ORDER = [
    "query", "key_list", "value_list", "pse_shift", "attention_mask", "actual_seq_lengths",
    "dequant_scale1", "quant_scale1", "dequant_scale2", "quant_scale2", "quant_offset2",
    "antiquant_scale", "antiquant_offset", "block_table", "kv_padding_size", "block_position",
    "num_heads", "scale_value", "layout", "key_num_heads", "block_size", "inner_precise",
]
TENSOR_PARAMS = PARAM_ORDER[:16]

# Every kernel table the library has; tests parametrised over them take conftest's forced_isa.
ISAS = ["ref", "avx2", "avx512"]
LAYOUTS = ["BSH", "BSND", "BNSD"]
FORMS = ["contig", "list", "pad", "paged3", "paged4", "pagedpos3", "pagedpos4"]
FORMS_FOR = {
    "BSH": ["contig", "list", "pad", "paged3", "pagedpos3"],
    "BSND": ["contig", "list", "pad", "paged3", "pagedpos3"],
    "BNSD": FORMS,
}
ANTIQUANT_KINDS = ["tensor", "ch_flat", "ch_nd", "ch_n1d", "ch_1nd", "token"]
OUT_QUANT_KINDS = ["tensor", "(ND,)", "(1,ND)", "(N,D)", "(N,1,D)", "(1,N,1,D)", "(1,1,ND)",
                   "(1,N,D)", "(1,1,N,D)"]
MASK_SHAPES = ["(B,S)", "(B,1,S)", "(B,1,1,S)"]
MASK_DTYPES = ["bool", "int8", "uint8"]

# SPEC 11: (atol, rtol) by (query dtype, kv kind, inner_precise)
TOLERANCES = {
    ("float32", "float", 0): (1e-5, 1e-5), ("float32", "float", 1): (1e-5, 1e-5),
    ("float16", "float", 0): (1e-3, 1e-3), ("float16", "float", 1): (2e-3, 2e-3),
    ("float16", "int8", 0): (1e-3, 1e-3), ("float16", "int8", 1): (2e-3, 2e-3),
    ("bfloat16", "float", 0): (8e-3, 8e-3), ("bfloat16", "float", 1): (1.6e-2, 1.6e-2),
    ("bfloat16", "int8", 0): (8e-3, 8e-3), ("bfloat16", "int8", 1): (1.6e-2, 1.6e-2),
    ("int8", "int8", 0): (1e-2, 1e-2), ("int8", "int8", 1): (1e-2, 1e-2),
    # Not in the SPEC 11 table (float32 query over int8 KV); decided in docs/design.md: float32
    # accuracy at inner_precise 0 (everything float32 after loading), 5e-4 at 1, where the query
    # is rounded to int16 for the integer dot products (SPEC 9). 35,000 random_case seeds
    # reached at most 15x float32's bound (1.5e-4; AVX-512 through SIMDe 16x), median 2x.
    ("float32", "int8", 0): (1e-5, 1e-5), ("float32", "int8", 1): (5e-4, 5e-4),
}


def has_torch():
    return torch is not None


# --------------------------------------------------------------------------------------------
# dtype helpers


def round_bf16(x):
    """float32 array rounded (nearest even) to bfloat16 values, kept as float32."""
    x = np.asarray(x, dtype=np.float32)
    bits = x.view(np.uint32).astype(np.uint64)
    bits = (bits + 0x7FFF + ((bits >> 16) & 1)) >> 16 << 16
    return bits.astype(np.uint32).view(np.float32).copy()


def cast_float(x, dt):
    """Values of x representable in dtype dt ('float16', 'bfloat16', 'float32'), numpy storage."""
    if dt == "float16":
        return np.asarray(x).astype(np.float16)
    if dt == "bfloat16":
        return round_bf16(x)
    if dt == "float32":
        return np.asarray(x).astype(np.float32)
    raise ValueError(dt)


def f32_as_u64(v):
    """Ascend form of a scale: float32 bits in the low 32 bits of a uint64 (high bits garbage-free)."""
    return np.array([np.array([v], dtype=np.float32).view(np.uint32)[0]], dtype=np.uint64)


def to_backend(x, backend, bf16=False):
    """numpy array -> torch tensor (backend 'torch') or numpy array."""
    if x is None:
        return None
    if isinstance(x, (list, tuple)):
        return type(x)(to_backend(e, backend, bf16) for e in x)
    if not isinstance(x, np.ndarray):
        return x
    if backend == "numpy":
        assert not bf16, "numpy has no bfloat16"
        return x.copy()
    t = torch.from_numpy(np.ascontiguousarray(x).copy())
    if bf16:
        t = t.to(torch.bfloat16)
    return t


# --------------------------------------------------------------------------------------------
# the case


@dataclasses.dataclass
class Case:
    inputs: dict                  # parameter name -> numpy array / list of arrays / python value
    bf16: set                     # parameter names stored as bfloat16
    qdtype: str
    kvdtype: str
    desc: str = ""
    antiquant_mode: int = 0

    @property
    def inner_precise(self):
        return self.inputs.get("inner_precise", 1)

    @property
    def int8_out(self):
        return self.inputs.get("quant_scale2") is not None

    @property
    def needs_torch(self):
        return bool(self.bf16)

    def kwargs(self, backend="torch", **over):
        kw = {}
        for name, v in self.inputs.items():
            kw[name] = to_backend(v, backend, name in self.bf16) if name in TENSOR_PARAMS else v
        if self.antiquant_mode:
            kw["antiquant_mode"] = self.antiquant_mode
        kw.update(over)
        return kw

    def positional(self, backend="torch"):
        kw = self.kwargs(backend)
        extra = {k: v for k, v in kw.items() if k not in PARAM_ORDER}
        defaults = dict(num_heads=1, scale_value=1.0, layout="BSH", key_num_heads=0, block_size=0,
                        inner_precise=1)
        args = [kw.get(n, defaults.get(n)) for n in PARAM_ORDER]
        return args, extra

    def golden(self):
        # bf16 storage is float32 with bf16 values: the golden reads them exactly either way.
        kw = self.kwargs("numpy") if not self.bf16 else self.kwargs("torch")
        return golden_ifa(**kw)

    def tol(self):
        kv = "int8" if self.kvdtype == "int8" else "float"
        return TOLERANCES[(self.qdtype, kv, int(self.inner_precise))]

    def __repr__(self):
        return f"Case({self.desc})"


def result_np(got):
    """numpy float64 (or int8) copy of an op result (torch bf16 widened exactly)."""
    a = to_np(got)
    if a is None:  # zero-size output
        a = np.zeros(tuple(got.shape), dtype=np.float64)
    return a


def assert_matches(case, got, gold=None, backend=None):
    """Compare an op result with the golden under the SPEC 11 tolerances."""
    if gold is None:
        gold = case.golden()
    if backend == "torch":
        assert torch is not None and isinstance(got, torch.Tensor), f"expected torch.Tensor, got {type(got)}"
    elif backend == "numpy":
        assert isinstance(got, np.ndarray), f"expected numpy.ndarray, got {type(got)}"
    assert tuple(got.shape) == tuple(gold.out.shape), \
        f"{case}: shape {tuple(got.shape)} != expected {tuple(gold.out.shape)}"
    assert dtype_name(got) == gold.out_dtype, f"{case}: dtype {dtype_name(got)} != {gold.out_dtype}"
    g = result_np(got)
    if gold.out_dtype == "int8":
        diff = np.abs(g.astype(np.int64) - gold.out.astype(np.int64))
        if diff.size and diff.max() > 1:
            i = np.unravel_index(np.argmax(diff), diff.shape)
            raise AssertionError(
                f"{case}: int8 output off by {diff.max()} at {i}: got {g[i]}, expected {gold.out[i]} "
                f"(float golden {gold.o[i]:.6g}); {int((diff > 1).sum())} of {diff.size} elements off by >1")
        return
    atol, rtol = case.tol()
    g = g.astype(np.float64)
    assert np.all(np.isfinite(g)), f"{case}: non-finite output"
    err = np.abs(g - gold.out)
    bound = atol + rtol * np.abs(gold.out)
    bad = err > bound
    if bad.any():
        i = np.unravel_index(np.argmax(err - bound), err.shape)
        raise AssertionError(
            f"{case}: {int(bad.sum())} of {bad.size} elements out of tolerance (atol={atol}, rtol={rtol}); "
            f"worst at {i}: got {g[i]!r}, expected {gold.out[i]!r}, err {err[i]:.3g} > {bound[i]:.3g}")


# --------------------------------------------------------------------------------------------
# builders


def kv_shape(layout, B, S, KVN, D):
    return {"BSH": (B, S, KVN * D), "BSND": (B, S, KVN, D), "BNSD": (B, KVN, S, D)}[layout]


def q_shape(layout, B, N, D):
    return {"BSH": (B, 1, N * D), "BSND": (B, 1, N, D), "BNSD": (B, N, 1, D)}[layout]


def _garbage(rng, n):
    """Values that must never be read: sentinel, negatives, huge."""
    choices = np.array([SENTINEL, -1, -7, 2**30, 123456789, -2**31], dtype=np.int64)
    return choices[rng.integers(0, len(choices), n)].astype(np.int32)


def random_lengths(rng, B, bs=16, maxlen=300, allow_zero=True):
    out = []
    for _ in range(B):
        r = rng.random()
        if allow_zero and r < 0.1:
            out.append(0)
        elif r < 0.2:
            out.append(1)
        elif r < 0.4:
            out.append(int(min(maxlen, max(1, bs + int(rng.integers(-1, 2))))))
        else:
            out.append(int(rng.integers(1, maxlen + 1)))
    return out


def make_case(rng, *, layout="BSH", form="contig", qdtype="float16", kvdtype=None, B=2, KVN=2,
              G=1, D=64, lens=None, bs=16, pse=None, mask=None, mask_dtype="bool", out_quant=None,
              out_offset=True, antiquant=None, antiquant_offset=True, inner_precise=1,
              scale_value=None, pad=None, lengths_as="list", omit_lengths=False,
              garbage=True, u64_scales=False, hole_prob=0.3, scale_dtype=None, maxlen=300):
    """Build one random valid case.

    form: contig | list | pad | paged3 | paged4 | pagedpos3 | pagedpos4
    qdtype: float16 | bfloat16 | float32 | int8 (full quant; then kvdtype is int8)
    kvdtype: None (= qdtype) or 'int8' (antiquant, requires `antiquant` kind)
    pse: None | 'B' | '1';  mask: None | '(B,S)' | '(B,1,S)' | '(B,1,1,S)'
    out_quant: None | one of OUT_QUANT_KINDS;  antiquant: None | one of ANTIQUANT_KINDS
    """
    full_quant = qdtype == "int8"
    if kvdtype is None:
        kvdtype = "int8" if full_quant else qdtype
    if kvdtype == "int8" and not full_quant and antiquant is None:
        antiquant = "ch_flat"
    N = KVN * G
    if lens is None:
        lens = random_lengths(rng, B, bs if form.startswith("paged") else 16, maxlen)
    lens = [int(x) for x in lens]
    assert len(lens) == B
    if scale_value is None:
        scale_value = float(rng.uniform(0.5, 1.5) / math.sqrt(D))
    bf16 = set()
    inputs = {}
    desc = (f"layout={layout} form={form} q={qdtype} kv={kvdtype} B={B} N={N} KVN={KVN} D={D} "
            f"lens={lens} bs={bs} pse={pse} mask={mask}/{mask_dtype} outq={out_quant} "
            f"aq={antiquant} ip={inner_precise}")

    def fl(shape, dt, lo=-2.0, hi=2.0):
        a = cast_float(rng.uniform(lo, hi, size=shape), dt)
        return a

    def i8(shape, lo=-128, hi=127):
        return rng.integers(lo, hi + 1, size=shape).astype(np.int8)

    # ---- query ----
    if full_quant:
        inputs["query"] = i8(q_shape(layout, B, N, D), -127, 127)
    else:
        inputs["query"] = fl(q_shape(layout, B, N, D), qdtype)
        if qdtype == "bfloat16":
            bf16.add("query")

    def kvdata(shape):
        if kvdtype == "int8":
            return i8(shape, -127 if full_quant else -128, 127)
        return fl(shape, kvdtype)

    kv_bf16 = kvdtype == "bfloat16"
    # ---- KV forms ----
    maxpos = max(lens) - 1 if lens else -1
    if form == "contig":
        S = max(lens + [0]) + int(rng.integers(0, 4))
        if omit_lengths:
            lens = [S] * B
            maxpos = S - 1
        inputs["key_list"] = kvdata(kv_shape(layout, B, S, KVN, D))
        inputs["value_list"] = kvdata(kv_shape(layout, B, S, KVN, D))
    elif form == "list":
        Ss = [max(1, L + int(rng.integers(0, 3))) for L in lens]
        if omit_lengths:
            lens = Ss
            maxpos = max(Ss) - 1
        inputs["key_list"] = [kvdata(kv_shape(layout, 1, s, KVN, D)) for s in Ss]
        inputs["value_list"] = [kvdata(kv_shape(layout, 1, s, KVN, D)) for s in Ss]
    elif form == "pad":
        if pad is None:
            pad = int(rng.integers(0, 5))
        S = max(lens) + pad + int(rng.integers(-2, 3))
        S = max(S, 1)
        inputs["key_list"] = kvdata(kv_shape(layout, B, S, KVN, D))
        inputs["value_list"] = kvdata(kv_shape(layout, B, S, KVN, D))
        inputs["kv_padding_size"] = np.array([pad], dtype=np.int64)
        maxpos = max([S - pad - 1 if S - pad - L >= 0 and L > 0 else -1 for L in lens])
    elif form.startswith("paged"):
        four = form.endswith("4")
        with_pos = form.startswith("pagedpos")
        nslots = [-(-L // bs) for L in lens]
        if with_pos:
            P = max(nslots + [0]) + int(rng.integers(0, 3))
            P = max(P, 1)
            M = max(1, max(nslots + [0]) + int(rng.integers(0, 3)))
        else:
            M = max(1, max(nslots + [0]) + int(rng.integers(0, 3)))
        # each batch owns M table columns pointing at distinct blocks (shuffled)
        nb = B * M + int(rng.integers(0, 3))
        perm = rng.permutation(nb).astype(np.int32)
        table = perm[: B * M].reshape(B, M).copy()
        if with_pos:
            bpos = np.empty((B, KVN, P), dtype=np.int32)
            used_cols = np.zeros((B, M), dtype=bool)
            for b in range(B):
                for h in range(KVN):
                    row = np.full(P, SENTINEL, dtype=np.int32)
                    for j in range(nslots[b]):
                        if rng.random() >= hole_prob:
                            row[j] = int(rng.integers(0, M))
                            used_cols[b, row[j]] = True
                    if garbage and P > nslots[b]:
                        row[nslots[b]:] = _garbage(rng, P - nslots[b])
                    bpos[b, h] = row
            if garbage:
                table[~used_cols] = _garbage(rng, int((~used_cols).sum()))
            inputs["block_position"] = bpos
        else:
            if garbage:
                for b in range(B):
                    if M > nslots[b]:
                        table[b, nslots[b]:] = _garbage(rng, M - nslots[b])
        inputs["block_table"] = table
        shape = (nb, KVN, bs, D) if four else (nb, bs, KVN * D)
        inputs["key_list"] = kvdata(shape)
        inputs["value_list"] = kvdata(shape)
        inputs["block_size"] = bs
        omit_lengths = False
    else:
        raise ValueError(form)
    if kv_bf16:
        bf16 |= {"key_list", "value_list"}

    Sp = max(maxpos + 1, 1) + int(rng.integers(0, 3))  # S' of pse / mask / per-token params

    if not omit_lengths or form in ("pad",) or form.startswith("paged"):
        if lengths_as == "list":
            inputs["actual_seq_lengths"] = list(lens)
        elif lengths_as == "tuple":
            inputs["actual_seq_lengths"] = tuple(lens)
        elif lengths_as == "int64":
            inputs["actual_seq_lengths"] = np.array(lens, dtype=np.int64)
        elif lengths_as == "int32":
            inputs["actual_seq_lengths"] = np.array(lens, dtype=np.int32)
        else:
            raise ValueError(lengths_as)

    # ---- pse / mask ----
    pse_dt = "float16" if full_quant else qdtype
    if pse is not None:
        lim = 1.0 if full_quant else 2.0
        inputs["pse_shift"] = fl((B if pse == "B" else 1, N, 1, Sp), pse_dt, -lim, lim)
        if pse_dt == "bfloat16":
            bf16.add("pse_shift")
    if mask is not None:
        shp = {"(B,S)": (B, Sp), "(B,1,S)": (B, 1, Sp), "(B,1,1,S)": (B, 1, 1, Sp)}[mask]
        m = rng.random(shp) < 0.3
        if mask_dtype == "bool":
            inputs["attention_mask"] = m
        elif mask_dtype == "int8":
            inputs["attention_mask"] = (m * rng.choice([1, -1, 5, 127, -128], size=shp)).astype(np.int8)
        else:
            inputs["attention_mask"] = (m * rng.choice([1, 2, 255], size=shp)).astype(np.uint8)

    # ---- antiquant ----
    aq_mode = 0
    if antiquant is not None:
        sdt = scale_dtype or ("float32" if antiquant == "token" else
                              (qdtype if rng.random() < 0.5 else "float32"))
        shp = {"tensor": (2,), "ch_flat": (2, KVN * D), "ch_nd": (2, KVN, D),
               "ch_n1d": (2, KVN, 1, D), "ch_1nd": (2, 1, KVN, D), "token": (2, B, Sp)}[antiquant]
        inputs["antiquant_scale"] = cast_float(rng.uniform(0.004, 0.016, size=shp), sdt)
        if antiquant_offset:
            inputs["antiquant_offset"] = cast_float(rng.uniform(-3, 3, size=shp), sdt)
        if sdt == "bfloat16":
            bf16 |= {"antiquant_scale"} | ({"antiquant_offset"} if antiquant_offset else set())
        if antiquant == "token":
            aq_mode = 1

    # ---- full quant ----
    if full_quant:
        # Scores spread with sigma ~0.2-0.5 (plus pse in [-1, 1]): there a kernel that quantises p
        # against its tile's running maximum (allowed by SPEC 7) stays inside the 1e-2 tolerance.
        # Wider spreads (sigma >= ~1.3) push tile-max quantisation past 1e-2 in simulation.
        ds1 = float(np.float32(rng.uniform(0.5, 1.5) / (127 * 127)))
        qs1 = float(np.float32(rng.choice([127.0, 120.0])))
        ds2 = float(np.float32(2.0 / (127 * qs1)))
        for name, v in (("dequant_scale1", ds1), ("quant_scale1", qs1), ("dequant_scale2", ds2)):
            inputs[name] = f32_as_u64(v) if u64_scales else np.array([v], dtype=np.float32)

    # ---- int8 output ----
    if out_quant is not None:
        sdt = "float32"
        if qdtype == "bfloat16" and rng.random() < 0.5:
            sdt = "bfloat16"
        if out_quant == "tensor":
            shp = (1,)
        else:
            shp = {"(ND,)": (N * D,), "(1,ND)": (1, N * D), "(N,D)": (N, D), "(N,1,D)": (N, 1, D),
                   "(1,N,1,D)": (1, N, 1, D), "(1,1,ND)": (1, 1, N * D), "(1,N,D)": (1, N, D),
                   "(1,1,N,D)": (1, 1, N, D)}[out_quant]
        inputs["quant_scale2"] = cast_float(rng.uniform(20, 120, size=shp), sdt)
        if out_offset:
            inputs["quant_offset2"] = cast_float(rng.uniform(-4, 4, size=shp), sdt)
        if sdt == "bfloat16":
            bf16 |= {"quant_scale2"} | ({"quant_offset2"} if out_offset else set())

    inputs["num_heads"] = N
    inputs["scale_value"] = scale_value
    inputs["layout"] = layout
    inputs["key_num_heads"] = KVN if (G > 1 or rng.random() < 0.5) else 0
    inputs["inner_precise"] = inner_precise
    return Case(inputs=inputs, bf16=bf16, qdtype=qdtype, kvdtype=kvdtype, desc=desc,
                antiquant_mode=aq_mode)


def random_case(seed, **fixed):
    """A case whose unspecified options are drawn from the seed."""
    rng = np.random.default_rng(seed)
    o = dict(fixed)
    o.setdefault("layout", LAYOUTS[int(rng.integers(0, 3))])
    forms = FORMS_FOR[o["layout"]]
    o.setdefault("form", forms[int(rng.integers(0, len(forms)))])
    o.setdefault("qdtype", ["float16", "bfloat16", "float32"][int(rng.integers(0, 3))])
    o.setdefault("B", int(rng.integers(1, 4)))
    o.setdefault("KVN", int(rng.integers(1, 4)))
    o.setdefault("G", [1, 2, 4, 7, 8][int(rng.integers(0, 5))])
    o.setdefault("D", [16, 40, 64, 100, 128][int(rng.integers(0, 5))])
    o.setdefault("bs", [1, 5, 16, 128][int(rng.integers(0, 4))])
    o.setdefault("pse", [None, None, "B", "1"][int(rng.integers(0, 4))])
    o.setdefault("mask", [None, None, *MASK_SHAPES][int(rng.integers(0, 5))])
    o.setdefault("mask_dtype", MASK_DTYPES[int(rng.integers(0, 3))])
    o.setdefault("out_quant", None if rng.random() < 0.75 else
                 OUT_QUANT_KINDS[int(rng.integers(0, len(OUT_QUANT_KINDS)))])
    o.setdefault("inner_precise", int(rng.integers(0, 2)))
    if o.get("kvdtype") == "int8" and o["qdtype"] != "int8":
        o.setdefault("antiquant", ANTIQUANT_KINDS[int(rng.integers(0, len(ANTIQUANT_KINDS)))])
    if o["bs"] == 1 and o["form"].startswith("paged"):
        o["maxlen"] = min(o.get("maxlen", 60), 60)
    # keep the golden cheap: the per-token python loop of the paged golden is O(L)
    o.setdefault("maxlen", 200)
    return make_case(rng, **o)


def op():
    import custom_ops

    return custom_ops.incre_flash_attention_v5


def pick_backend(case, seed):
    """numpy for some float16/float32/int8 cases, torch otherwise (numpy has no bfloat16)."""
    if case.bf16:
        return "torch"
    return "numpy" if seed % 3 == 0 else "torch"


def run_case(case, backend="torch", **over):
    if backend == "torch" or case.bf16:
        if torch is None:
            import pytest

            pytest.skip("bfloat16 / torch-backend case needs torch, which is not installed")
    return op()(**case.kwargs(backend, **over))


def check_case(case, backend="torch", **over):
    got = run_case(case, backend, **over)
    assert_matches(case, got, backend=backend)
    return got

DMODES_ALL = ["float16", "bfloat16", "float32", "i8kv-float16", "i8kv-bfloat16", "i8kv-float32", "i8q"]
