"""Float64 reference ("golden") for incre_flash_attention_v5, written straight from SPEC.md.

It never imports custom_ops.  Inputs may be numpy arrays or torch CPU tensors (bfloat16 tensors are
widened to float32 exactly); the computation is done in float64 with explicit loops over
(batch, KV head) so that every rule of SPEC sections 4 to 8 is visible in one place:

    tokens(b, h)  ->  storage rows + positions pos(t)          (SPEC 4)
    antiquant                                                  (SPEC 6)
    scores: scale, then pse, then mask (-1e12 replacement)     (SPEC 5)
    softmax / P.V  (or the int8 full-quant path)               (SPEC 7)
    int8 output: round half even, saturate                     (SPEC 8)

The golden raises GoldenError on inputs it considers malformed; it is a helper for building valid
cases, not the thing under test for error handling.
"""

from __future__ import annotations

import dataclasses

import numpy as np

SENTINEL = 0x7FFFFFFF
MASK_FILL = -1e12

try:  # torch is optional for the golden: only needed to read torch tensors.
    import torch as _torch
except Exception:  # pragma: no cover - torch is installed in CI
    _torch = None


class GoldenError(ValueError):
    pass


def _is_torch(x):
    return _torch is not None and isinstance(x, _torch.Tensor)


def dtype_name(x):
    """'float16' | 'bfloat16' | 'float32' | 'int8' | 'uint8' | 'bool' | 'uint64' | ..."""
    if _is_torch(x):
        return str(x.dtype).replace("torch.", "")
    return np.asarray(x).dtype.name


def to_np(x, keep_empty=False):
    """numpy copy of x (bfloat16 widened to float32, exact); None for absent (None or 0 elements)."""
    if x is None:
        return None
    if _is_torch(x):
        if x.numel() == 0 and not keep_empty:
            return None
        t = x.detach()
        if t.dtype == _torch.bfloat16:
            t = t.to(_torch.float32)
        if t.dtype == _torch.uint64:
            # torch has few uint64 kernels; reinterpret the bits as int64 then as uint64.
            return t.contiguous().view(_torch.int64).numpy().view(np.uint64).copy()
        return t.contiguous().numpy().copy()
    a = np.asarray(x)
    if a.size == 0 and not keep_empty:
        return None
    return a.copy()


def absent(x):
    if x is None:
        return True
    if _is_torch(x):
        return x.numel() == 0
    return np.asarray(x).size == 0


def scalar_scale(x):
    """One quantisation scale: float32, or uint64 whose low 32 bits are float32 bits (SPEC 7)."""
    a = to_np(x)
    if a is None:
        raise GoldenError("scale absent")
    if a.size != 1:
        raise GoldenError("scale must have one element")
    if a.dtype == np.uint64 or a.dtype == np.int64:
        bits = np.array([int(a.reshape(-1)[0]) & 0xFFFFFFFF], dtype=np.uint32)
        return float(bits.view(np.float32)[0])
    return float(a.reshape(-1)[0])


def parse_lengths(actual_seq_lengths, B):
    if actual_seq_lengths is None:
        return None
    if _is_torch(actual_seq_lengths) or isinstance(actual_seq_lengths, np.ndarray):
        a = to_np(actual_seq_lengths)
        if a is None:
            return None
        vals = [int(v) for v in a.reshape(-1)]
    elif isinstance(actual_seq_lengths, (int, np.integer)):
        vals = [int(actual_seq_lengths)]
    else:
        vals = [int(v) for v in actual_seq_lengths]
        if len(vals) == 0:
            return None
    if len(vals) == 1:
        vals = vals * B
    if len(vals) < B:
        raise GoldenError("actual_seq_lengths: need 1 or >= B values")
    vals = vals[:B]
    if any(v < 0 for v in vals):
        raise GoldenError("actual_seq_lengths: negative")
    return vals


def _query_bnd(q, layout, N):
    """(B, N, D) float64 view of the query."""
    if layout == "BSH":
        B, S, H = q.shape
        if S != 1 or H % N:
            raise GoldenError("query shape")
        return q.reshape(B, N, H // N)
    if layout == "BSND":
        B, S, n, D = q.shape
        if S != 1 or n != N:
            raise GoldenError("query shape")
        return q.reshape(B, N, D)
    if layout == "BNSD":
        B, n, S, D = q.shape
        if S != 1 or n != N:
            raise GoldenError("query shape")
        return q.reshape(B, N, D)
    raise GoldenError("layout")


def _contig_kv(t, layout, KVN, D):
    """Contiguous KV tensor in the query's layout -> (B, KVN, S, D)."""
    if layout == "BSH":
        B, S, H = t.shape
        if H != KVN * D:
            raise GoldenError("kv shape")
        return t.reshape(B, S, KVN, D).transpose(0, 2, 1, 3)
    if layout == "BSND":
        B, S, n, d = t.shape
        if (n, d) != (KVN, D):
            raise GoldenError("kv shape")
        return t.transpose(0, 2, 1, 3)
    B, n, S, d = t.shape
    if (n, d) != (KVN, D):
        raise GoldenError("kv shape")
    return t


def _paged_kv(t, layout, KVN, D, bs):
    """Paged cache -> (num_blocks, KVN, bs, D)."""
    if t.ndim == 3:
        nb, b2, H = t.shape
        if b2 != bs or H != KVN * D:
            raise GoldenError("paged kv shape")
        return t.reshape(nb, bs, KVN, D).transpose(0, 2, 1, 3)
    if t.ndim == 4:
        if layout != "BNSD":
            raise GoldenError("4-D paged cache only with BNSD")
        nb, n, b2, d = t.shape
        if (n, b2, d) != (KVN, bs, D):
            raise GoldenError("paged kv shape")
        return t
    raise GoldenError("paged kv rank")


def _as_list(x):
    if isinstance(x, (list, tuple)):
        return list(x)
    return [x]


@dataclasses.dataclass
class GoldenResult:
    o: np.ndarray            # float64 attention output in the query's shape (before int8 output quant)
    out: np.ndarray          # final expected values: float64 (float output) or int8 (quantised output)
    out_dtype: str           # 'float16' | 'bfloat16' | 'float32' | 'int8'
    token_counts: np.ndarray  # (B, KVN) number of tokens each (batch, KV head) attended over


def _antiquant_params(antiquant_scale, antiquant_offset, antiquant_mode, KVN, D, B):
    sc = to_np(antiquant_scale)
    off = to_np(antiquant_offset)
    if off is not None and off.shape != sc.shape:
        raise GoldenError("antiquant_offset shape")
    if antiquant_mode == 1:
        if sc.ndim != 3 or sc.shape[0] != 2 or sc.shape[1] != B:
            raise GoldenError("per-token antiquant shape")
        kind = "token"
    elif sc.size == 2:
        sc = sc.reshape(2)
        off = None if off is None else off.reshape(2)
        kind = "tensor"
    else:
        ok = [(2, KVN * D), (2, KVN, D), (2, KVN, 1, D), (2, 1, KVN, D)]
        if tuple(sc.shape) not in ok:
            raise GoldenError("per-channel antiquant shape")
        sc = sc.reshape(2, KVN, D)
        off = None if off is None else off.reshape(2, KVN, D)
        kind = "channel"
    sc = sc.astype(np.float64)
    off = np.zeros_like(sc) if off is None else off.astype(np.float64)
    return kind, sc, off


def _dequant(raw, i, kind, sc, off, b, h, pos):
    """raw: (T, D) int8 rows of K (i=0) or V (i=1) for batch b, KV head h."""
    raw = raw.astype(np.float64)
    if kind == "tensor":
        return (raw + off[i]) * sc[i]
    if kind == "channel":
        return (raw + off[i, h][None, :]) * sc[i, h][None, :]
    return (raw + off[i, b, pos][:, None]) * sc[i, b, pos][:, None]


def _out_quant_params(quant_scale2, quant_offset2, N, D):
    def per_channel(x, name):
        # Per tensor (one element) or per channel (N*D elements), as (N, D) float64.
        x = x.astype(np.float64)
        if x.size == 1:
            return np.full((N, D), float(x.reshape(-1)[0]))
        if x.size == N * D:
            return x.reshape(N, D)
        raise GoldenError(name + " size")

    off = to_np(quant_offset2)
    s = per_channel(to_np(quant_scale2), "quant_scale2")
    return s, (np.zeros((N, D)) if off is None else per_channel(off, "quant_offset2"))


def quantize_int8(x, scale, offset):
    """sat_int8(round_half_even(x * scale + offset)) in float64 (SPEC 8)."""
    return np.clip(np.rint(x * scale + offset), -128, 127).astype(np.int8)


def golden_ifa(query, key_list, value_list, pse_shift=None, attention_mask=None,
               actual_seq_lengths=None, dequant_scale1=None, quant_scale1=None,
               dequant_scale2=None, quant_scale2=None, quant_offset2=None,
               antiquant_scale=None, antiquant_offset=None, block_table=None,
               kv_padding_size=None, block_position=None, num_heads=1, scale_value=1.0,
               layout="BSH", key_num_heads=0, block_size=0, inner_precise=1, *,
               antiquant_mode=0):
    qdt = dtype_name(query)
    q = to_np(query, keep_empty=True)
    N = int(num_heads)
    KVN = int(key_num_heads) if key_num_heads else N
    if N <= 0 or KVN <= 0 or N % KVN:
        raise GoldenError("num_heads / key_num_heads")
    G = N // KVN
    qb = _query_bnd(q.astype(np.float64), layout, N)
    B, _, D = qb.shape

    keys = _as_list(key_list)
    vals = _as_list(value_list)
    kvdt = dtype_name(keys[0])
    full_quant = qdt == "int8"
    int8_kv = kvdt == "int8"
    keys = [to_np(k, keep_empty=True) for k in keys]
    vals = [to_np(v, keep_empty=True) for v in vals]

    lens = parse_lengths(actual_seq_lengths, B)
    bt = to_np(block_table)
    bp = to_np(block_position)
    pad_arr = to_np(kv_padding_size)

    # ---- token rows per (b, h): a function returning (K raw rows, V raw rows, pos) ----
    if bt is not None:
        if len(keys) != 1:
            raise GoldenError("paged cache must be one tensor")
        if lens is None:
            raise GoldenError("paged needs actual_seq_lengths")
        bs = int(block_size)
        kc = _paged_kv(keys[0], layout, KVN, D, bs)
        vc = _paged_kv(vals[0], layout, KVN, D, bs)
        nb = kc.shape[0]
        M = bt.shape[1]

        def rows(b, h):
            L = lens[b]
            ks, vs, pos = [], [], []
            for t in range(L):
                j = t // bs
                if bp is not None:
                    idx = int(bp[b, h, j])
                    if idx == SENTINEL:
                        continue
                    if not 0 <= idx < M:
                        raise GoldenError("block_position index out of range")
                else:
                    idx = j
                    if j >= M:
                        raise GoldenError("length exceeds block_table")
                blk = int(bt[b, idx])
                if not 0 <= blk < nb:
                    raise GoldenError("block_table entry out of range")
                ks.append(kc[blk, h, t % bs])
                vs.append(vc[blk, h, t % bs])
                pos.append(t)
            return ks, vs, pos
    elif len(keys) == 1:
        kc = _contig_kv(keys[0], layout, KVN, D)
        vc = _contig_kv(vals[0], layout, KVN, D)
        if kc.shape[0] != B:
            raise GoldenError("kv batch")
        S = kc.shape[2]
        if lens is None:
            if pad_arr is not None:
                raise GoldenError("padding needs actual_seq_lengths")
            lens = [S] * B
        if pad_arr is not None:
            pad = int(pad_arr.reshape(-1)[0])
            if pad < 0:
                raise GoldenError("negative pad")
        else:
            pad = None

        def rows(b, h):
            L = lens[b]
            if pad is None:
                if L > S:
                    raise GoldenError("length exceeds S")
                start = 0
            else:
                start = S - pad - L
                if start < 0:
                    return [], [], []
            p = list(range(start, start + L))
            return list(kc[b, h, p]), list(vc[b, h, p]), p
    else:
        if len(keys) != B or len(vals) != B:
            raise GoldenError("list of B tensors")
        if pad_arr is not None:
            raise GoldenError("padding with list")
        kcs = [_contig_kv(k, layout, KVN, D) for k in keys]
        vcs = [_contig_kv(v, layout, KVN, D) for v in vals]
        if lens is None:
            lens = [k.shape[2] for k in kcs]

        def rows(b, h):
            L = lens[b]
            if L > kcs[b].shape[2]:
                raise GoldenError("length exceeds S_b")
            p = list(range(L))
            return list(kcs[b][0, h, p]), list(vcs[b][0, h, p]), p

    # ---- optional inputs ----
    pse = to_np(pse_shift)
    if pse is not None:
        pse = pse.astype(np.float64)
        if pse.ndim != 4 or pse.shape[1] != N or pse.shape[2] != 1 or pse.shape[0] not in (1, B):
            raise GoldenError("pse shape")
    mask = to_np(attention_mask)
    if mask is not None:
        if mask.shape[0] != B or mask.ndim not in (2, 3, 4) or any(s != 1 for s in mask.shape[1:-1]):
            raise GoldenError("mask shape")
        mask = mask.reshape(B, mask.shape[-1]) != 0

    if int8_kv and not full_quant:
        aq = _antiquant_params(antiquant_scale, antiquant_offset, antiquant_mode, KVN, D, B)
    if full_quant:
        ds1 = scalar_scale(dequant_scale1)
        qs1 = scalar_scale(quant_scale1)
        ds2 = scalar_scale(dequant_scale2)

    o = np.zeros((B, N, D), dtype=np.float64)
    counts = np.zeros((B, KVN), dtype=np.int64)
    for b in range(B):
        for h in range(KVN):
            ks, vs, pos = rows(b, h)
            T = len(pos)
            counts[b, h] = T
            if T == 0:
                continue  # no token: o = 0 (SPEC 5)
            K = np.stack(ks).astype(np.float64)
            V = np.stack(vs).astype(np.float64)
            pos = np.asarray(pos, dtype=np.int64)
            if int8_kv and not full_quant:
                K = _dequant(K, 0, aq[0], aq[1], aq[2], b, h, pos)
                V = _dequant(V, 1, aq[0], aq[1], aq[2], b, h, pos)
            for n in range(h * G, h * G + G):
                if full_quant:
                    s = scale_value * ds1 * (K @ qb[b, n])
                else:
                    s = scale_value * (K @ qb[b, n])
                if pse is not None:
                    s = s + pse[b if pse.shape[0] == B else 0, n, 0, pos]
                if mask is not None:
                    s = np.where(mask[b, pos], MASK_FILL, s)
                m = s.max()
                p = np.exp(s - m)
                l = p.sum()
                if full_quant:
                    p8 = np.clip(np.rint(p * qs1), -128, 127)
                    o[b, n] = ds2 * (p8 @ V) / l
                else:
                    o[b, n] = (p @ V) / l

    o_q = o.reshape(q.shape) if layout != "BNSD" else o.reshape(B, N, 1, D)
    o_q = o_q.reshape(q.shape)
    if not absent(quant_scale2):
        sc, off = _out_quant_params(quant_scale2, quant_offset2, N, D)
        out = quantize_int8(o, sc[None], off[None]).reshape(q.shape)
        out_dtype = "int8"
    else:
        out = o_q
        out_dtype = "float16" if full_quant else qdt
    return GoldenResult(o=o_q, out=out, out_dtype=out_dtype, token_counts=counts)
