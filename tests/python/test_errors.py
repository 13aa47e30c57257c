"""Malformed inputs (SPEC 2-10): each raises ValueError (values, shapes) or TypeError (dtypes) whose
message names the parameter, before anything is computed or written."""

import numpy as np
import pytest

from cases import SENTINEL, make_case, op

torch = pytest.importorskip("torch", reason="error tests use torch tensors")

VE, TE = ValueError, TypeError
EITHER = (ValueError, TypeError)


def _rng(seed=0):
    return np.random.default_rng(seed)


def contig(layout="BSH", **kw):
    o = dict(layout=layout, form="contig", qdtype="float16", B=3, KVN=2, G=2, D=16,
             lens=[6, 3, 0])
    o.update(kw)
    return make_case(_rng(1), **o)


def paged(form="pagedpos3", **kw):
    o = dict(layout="BNSD", form=form, qdtype="float16", B=2, KVN=2, G=2, D=16, lens=[9, 5], bs=4,
             hole_prob=0.0, garbage=False)
    o.update(kw)
    return make_case(_rng(2), **o)


def T(a, dtype=None):
    t = torch.from_numpy(np.ascontiguousarray(a))
    return t if dtype is None else t.to(dtype)


def kw_of(case):
    return case.kwargs("torch")


# Each entry: id -> (function returning the kwargs of a bad call, exception types, names any one
# of which the message must contain).
CASES = {}


def case(name, exc, *names):
    def deco(f):
        CASES[name] = (f, exc, names or (name.split(":")[0],))
        return f
    return deco


# ---- SPEC 2: layout, heads, query


@case("layout:unknown", VE, "layout")
def _():
    k = kw_of(contig()); k["layout"] = "BNHD"; return k


@case("layout:lowercase", VE, "layout")
def _():
    k = kw_of(contig()); k["layout"] = "bsh"; return k


@case("layout:nul-character", VE, "layout")
def _():
    k = kw_of(contig()); k["layout"] = "BSH\0"; return k


@case("layout:not-a-str", TE, "layout")
def _():
    k = kw_of(contig()); k["layout"] = b"BSH"; return k


@case("layout:mismatch-rank", VE, "query", "layout")
def _():
    k = kw_of(contig("BSH")); k["layout"] = "BSND"; return k


@case("num_heads:zero", VE, "num_heads")
def _():
    k = kw_of(contig()); k["num_heads"] = 0; return k


@case("num_heads:zero-and-key_num_heads-zero", VE, "num_heads")
def _():
    # key_num_heads 0 means N: both zero must stop at num_heads, before any N % KVN.
    k = kw_of(contig()); k["num_heads"] = 0; k["key_num_heads"] = 0; return k


@case("num_heads:negative", VE, "num_heads")
def _():
    k = kw_of(contig()); k["num_heads"] = -4; return k


@case("num_heads:not-int", EITHER, "num_heads")
def _():
    k = kw_of(contig()); k["num_heads"] = 4.0; return k


@case("num_heads:bool", TE, "num_heads")
def _():
    k = kw_of(contig(KVN=1, G=1)); k["num_heads"] = True; return k


@case("num_heads:beyond-64-bits", VE, "num_heads")
def _():
    k = kw_of(contig()); k["num_heads"] = 2**70; return k


@case("scale_value:str", TE, "scale_value")
def _():
    k = kw_of(contig()); k["scale_value"] = "0.25"; return k


@case("scale_value:bool", TE, "scale_value")
def _():
    k = kw_of(contig()); k["scale_value"] = True; return k


@case("scale_value:None", TE, "scale_value")
def _():
    k = kw_of(contig()); k["scale_value"] = None; return k


@case("num_heads:not-divisible-by-kvn", VE, "num_heads", "key_num_heads")
def _():
    c = contig("BNSD", KVN=2, G=2)
    k = kw_of(c); k["num_heads"] = 3; k["query"] = k["query"][:, :3].contiguous(); return k


@case("key_num_heads:greater-than-n", VE, "key_num_heads")
def _():
    c = contig("BNSD", KVN=4, G=1)
    k = kw_of(c); k["num_heads"] = 2; k["key_num_heads"] = 4; k["query"] = k["query"][:, :2].contiguous(); return k


@case("key_num_heads:negative", VE, "key_num_heads")
def _():
    k = kw_of(contig()); k["key_num_heads"] = -2; return k


@case("query:S!=1", VE, "query")
def _():
    k = kw_of(contig("BSH")); k["query"] = torch.cat([k["query"], k["query"]], 1); return k


@case("query:H-not-multiple-of-N", VE, "query", "num_heads")
def _():
    k = kw_of(contig("BSH")); k["query"] = k["query"][..., :-1].contiguous(); return k


@case("query:BNSD-N-mismatch", VE, "query", "num_heads")
def _():
    k = kw_of(contig("BNSD")); k["query"] = torch.cat([k["query"], k["query"][:, :1]], 1); return k


@case("query:wrong-rank", VE, "query")
def _():
    k = kw_of(contig("BNSD")); k["query"] = k["query"].reshape(3, 4, 16); return k


@case("query:float64", TE, "query")
def _():
    k = kw_of(contig()); k["query"] = k["query"].double(); return k


@case("query:int32", TE, "query")
def _():
    k = kw_of(contig()); k["query"] = k["query"].to(torch.int32); return k


@case("query:not-a-tensor", TE, "query")
def _():
    k = kw_of(contig()); k["query"] = k["query"].tolist(); return k


@case("query:None", TE, "query")
def _():
    k = kw_of(contig()); k["query"] = None; return k


@case("key_list:None", TE, "key_list")
def _():
    k = kw_of(contig()); k["key_list"] = None; return k


@case("value_list:None-in-list", TE, "value_list")
def _():
    k = kw_of(contig(form="list")); k["value_list"][1] = None; return k


# ---- SPEC 3: KV


@case("value_list:dtype-differs", TE, "value_list", "key_list")
def _():
    k = kw_of(contig()); k["value_list"] = k["value_list"].float(); return k


@case("value_list:shape-differs", VE, "value_list", "key_list")
def _():
    k = kw_of(contig()); k["value_list"] = k["value_list"][:, :-1].contiguous(); return k


@case("key_list:dtype-not-query", TE, "key_list")
def _():
    k = kw_of(contig()); k["key_list"] = k["key_list"].float(); k["value_list"] = k["value_list"].float(); return k


@case("key_list:float64", TE, "key_list")
def _():
    k = kw_of(contig(qdtype="float32"))
    k["key_list"] = k["key_list"].double(); k["value_list"] = k["value_list"].double(); return k


@case("key_list:head-dim", VE, "key_list")
def _():
    c = contig("BSND")
    k = kw_of(c); k["key_list"] = k["key_list"][..., :8].contiguous(); k["value_list"] = k["value_list"][..., :8].contiguous(); return k


@case("key_list:kv-heads", VE, "key_list", "key_num_heads")
def _():
    c = contig("BNSD")
    k = kw_of(c); k["key_list"] = k["key_list"][:, :1].contiguous(); k["value_list"] = k["value_list"][:, :1].contiguous(); return k


@case("key_list:batch", VE, "key_list")
def _():
    k = kw_of(contig()); k["key_list"] = k["key_list"][:2].contiguous(); k["value_list"] = k["value_list"][:2].contiguous(); return k


@case("key_list:list-count", VE, "key_list")
def _():
    k = kw_of(contig(form="list")); k["key_list"] = k["key_list"][:2]; k["value_list"] = k["value_list"][:2]; return k


@case("key_list:list-element-batch-2", VE, "key_list")
def _():
    k = kw_of(contig(form="list"))
    k["key_list"][0] = torch.cat([k["key_list"][0]] * 2); k["value_list"][0] = torch.cat([k["value_list"][0]] * 2); return k


@case("key_list:empty-list", VE, "key_list")
def _():
    k = kw_of(contig()); k["key_list"] = []; k["value_list"] = []; return k


@case("key_list:4d-paged-with-BSH", VE, "key_list", "layout")
def _():
    c = paged("paged4")
    k = kw_of(c); k["layout"] = "BSH"; k["query"] = k["query"].reshape(2, 1, 64); return k


@case("key_list:paged-two-tensors", VE, "key_list")
def _():
    k = kw_of(paged("paged3")); k["key_list"] = [k["key_list"]] * 2; k["value_list"] = [k["value_list"]] * 2; return k


@case("block_size:cache-mismatch", VE, "block_size", "key_list")
def _():
    k = kw_of(paged("paged3")); k["block_size"] = 8; return k


@case("block_size:zero-when-paged", VE, "block_size")
def _():
    k = kw_of(paged("paged3")); k["block_size"] = 0; return k


@case("block_size:zero-with-blocks-of-zero-rows", VE, "block_size")
def _():
    # A cache whose blocks hold 0 rows matches block_size 0 in shape: only the check of
    # block_size itself stands between it and a division by zero.
    k = kw_of(paged("paged3")); k["block_size"] = 0
    k["key_list"] = k["key_list"][:, :0].contiguous(); k["value_list"] = k["value_list"][:, :0].contiguous(); return k


@case("block_size:negative", VE, "block_size")
def _():
    k = kw_of(paged("paged3")); k["block_size"] = -4; return k


@case("block_table:int64", TE, "block_table")
def _():
    k = kw_of(paged("paged3")); k["block_table"] = k["block_table"].long(); return k


@case("block_table:1-D", VE, "block_table")
def _():
    k = kw_of(paged("paged3")); k["block_table"] = k["block_table"].reshape(-1); return k


@case("block_table:batch", VE, "block_table")
def _():
    k = kw_of(paged("paged3")); k["block_table"] = k["block_table"][:1].contiguous(); return k


@case("block_table:used-entry-too-big", VE, "block_table")
def _():
    c = paged("paged3")
    c.inputs["block_table"][1, 1] = c.inputs["key_list"].shape[0]  # L=5, bs=4: column 1 used
    return kw_of(c)


@case("block_table:used-entry-negative", VE, "block_table")
def _():
    c = paged("paged3"); c.inputs["block_table"][0, 2] = -1; return kw_of(c)


@case("block_table:used-entry-sentinel", VE, "block_table")
def _():
    c = paged("paged3"); c.inputs["block_table"][0, 0] = SENTINEL; return kw_of(c)


@case("block_table:via-block_position-out-of-range", VE, "block_table")
def _():
    c = paged("pagedpos4")
    idx = int(c.inputs["block_position"][1, 1, 0])
    c.inputs["block_table"][1, idx] = 10**6
    return kw_of(c)


@case("actual_seq_lengths:paged-missing", VE, "actual_seq_lengths")
def _():
    k = kw_of(paged("paged3")); del k["actual_seq_lengths"]; return k


@case("actual_seq_lengths:paged-exceeds-table", VE, "actual_seq_lengths", "block_table")
def _():
    c = paged("paged3"); M = c.inputs["block_table"].shape[1]
    k = kw_of(c); k["actual_seq_lengths"] = [4 * M + 1, 5]; return k


# ---- SPEC 4: block_position


@case("block_position:int64", TE, "block_position")
def _():
    k = kw_of(paged()); k["block_position"] = k["block_position"].long(); return k


@case("block_position:kvn-dim", VE, "block_position")
def _():
    k = kw_of(paged()); k["block_position"] = torch.cat([k["block_position"]] * 2, 1); return k


@case("block_position:batch-dim", VE, "block_position")
def _():
    k = kw_of(paged()); k["block_position"] = k["block_position"][:1].contiguous(); return k


@case("block_position:used-index-too-big", VE, "block_position")
def _():
    c = paged(); c.inputs["block_position"][0, 1, 2] = c.inputs["block_table"].shape[1]; return kw_of(c)


@case("block_position:used-index-negative", VE, "block_position")
def _():
    c = paged(); c.inputs["block_position"][1, 0, 1] = -1; return kw_of(c)


@case("block_position:too-few-slots", VE, "block_position", "actual_seq_lengths")
def _():
    c = paged(); P = c.inputs["block_position"].shape[2]
    k = kw_of(c); k["actual_seq_lengths"] = [4 * P + 1, 5]; return k


@case("block_position:without-block_table", VE, "block_position", "block_table")
def _():
    c = contig("BNSD", B=2, lens=[6, 3])
    k = kw_of(c); k["block_position"] = torch.zeros((2, 2, 3), dtype=torch.int32); return k


# ---- SPEC 4: lengths, padding


@case("actual_seq_lengths:negative", VE, "actual_seq_lengths")
def _():
    k = kw_of(contig()); k["actual_seq_lengths"] = [3, -1, 0]; return k


@case("actual_seq_lengths:two-for-B3", VE, "actual_seq_lengths")
def _():
    k = kw_of(contig()); k["actual_seq_lengths"] = [3, 1]; return k


@case("actual_seq_lengths:exceeds-S", VE, "actual_seq_lengths")
def _():
    c = contig(); S = c.inputs["key_list"].shape[1]
    k = kw_of(c); k["actual_seq_lengths"] = [S + 1, 1, 1]; return k


@case("actual_seq_lengths:exceeds-S_b", VE, "actual_seq_lengths")
def _():
    c = contig(form="list"); S0 = c.inputs["key_list"][0].shape[1]
    k = kw_of(c); k["actual_seq_lengths"] = [S0 + 1, 1, 0]; return k


@case("actual_seq_lengths:float-tensor", EITHER, "actual_seq_lengths")
def _():
    k = kw_of(contig()); k["actual_seq_lengths"] = torch.tensor([1.0, 2.0, 0.0]); return k


@case("kv_padding_size:negative", VE, "kv_padding_size")
def _():
    k = kw_of(contig(form="pad")); k["kv_padding_size"] = torch.tensor([-1], dtype=torch.int64); return k


@case("kv_padding_size:with-paged", VE, "kv_padding_size")
def _():
    k = kw_of(paged("paged3")); k["kv_padding_size"] = torch.tensor([0], dtype=torch.int64); return k


@case("kv_padding_size:with-list", VE, "kv_padding_size")
def _():
    k = kw_of(contig(form="list")); k["kv_padding_size"] = torch.tensor([0], dtype=torch.int64); return k


@case("kv_padding_size:without-lengths", VE, "actual_seq_lengths", "kv_padding_size")
def _():
    k = kw_of(contig(form="pad")); del k["actual_seq_lengths"]; return k


@case("kv_padding_size:two-values", VE, "kv_padding_size")
def _():
    k = kw_of(contig(form="pad")); k["kv_padding_size"] = torch.tensor([0, 1], dtype=torch.int64); return k


@case("kv_padding_size:float", EITHER, "kv_padding_size")
def _():
    k = kw_of(contig(form="pad")); k["kv_padding_size"] = torch.tensor([1.0]); return k


# ---- SPEC 5: pse / mask


@case("pse_shift:dtype", TE, "pse_shift")
def _():
    k = kw_of(contig(pse="B")); k["pse_shift"] = k["pse_shift"].float(); return k


@case("pse_shift:heads", VE, "pse_shift")
def _():
    k = kw_of(contig(pse="B")); k["pse_shift"] = k["pse_shift"][:, :3].contiguous(); return k


@case("pse_shift:batch-2-for-B3", VE, "pse_shift")
def _():
    k = kw_of(contig(pse="B")); k["pse_shift"] = k["pse_shift"][:2].contiguous(); return k


@case("pse_shift:short-S", VE, "pse_shift")
def _():
    c = contig(pse="B")
    k = kw_of(c); k["pse_shift"] = k["pse_shift"][..., :5].contiguous(); return k  # L[0] = 6


@case("pse_shift:3-D", VE, "pse_shift")
def _():
    k = kw_of(contig(pse="1")); k["pse_shift"] = k["pse_shift"][:, :, 0].contiguous(); return k


@case("attention_mask:float16", TE, "attention_mask")
def _():
    k = kw_of(contig(mask="(B,S)")); k["attention_mask"] = k["attention_mask"].half(); return k


@case("attention_mask:batch", VE, "attention_mask")
def _():
    k = kw_of(contig(mask="(B,S)")); k["attention_mask"] = torch.cat([k["attention_mask"]] * 2); return k


@case("attention_mask:short-S", VE, "attention_mask")
def _():
    k = kw_of(contig(mask="(B,1,S)")); k["attention_mask"] = k["attention_mask"][..., :5].contiguous(); return k


@case("attention_mask:middle-dim-2", VE, "attention_mask")
def _():
    k = kw_of(contig(mask="(B,1,S)")); k["attention_mask"] = torch.cat([k["attention_mask"]] * 2, 1); return k


# ---- SPEC 6: antiquant


def i8kv(kind="ch_flat", **kw):
    return contig(kvdtype="int8", antiquant=kind, **kw)


@case("antiquant_scale:missing-with-int8-kv", VE, "antiquant_scale")
def _():
    k = kw_of(i8kv()); del k["antiquant_scale"]; return k


@case("antiquant_scale:with-float-kv", VE, "antiquant_scale")
def _():
    k = kw_of(contig()); k["antiquant_scale"] = torch.ones(2, dtype=torch.float16); return k


@case("antiquant_offset:with-float-kv", VE, "antiquant_offset")
def _():
    k = kw_of(contig()); k["antiquant_offset"] = torch.ones(2, dtype=torch.float16); return k


@case("antiquant_scale:first-dim-3", VE, "antiquant_scale")
def _():
    k = kw_of(i8kv()); k["antiquant_scale"] = torch.cat([k["antiquant_scale"], k["antiquant_scale"][:1]]); k.pop("antiquant_offset"); return k


@case("antiquant_scale:channels", VE, "antiquant_scale")
def _():
    k = kw_of(i8kv()); k["antiquant_scale"] = k["antiquant_scale"][:, :-1].contiguous(); k.pop("antiquant_offset"); return k


@case("antiquant_offset:shape-differs", VE, "antiquant_offset")
def _():
    k = kw_of(i8kv()); k["antiquant_offset"] = k["antiquant_offset"][:, :16].contiguous(); return k


@case("antiquant_scale:float64", TE, "antiquant_scale")
def _():
    k = kw_of(i8kv()); k["antiquant_scale"] = k["antiquant_scale"].double(); k.pop("antiquant_offset"); return k


@case("antiquant_scale:bf16-with-fp16-query", TE, "antiquant_scale")
def _():
    k = kw_of(i8kv()); k["antiquant_scale"] = k["antiquant_scale"].bfloat16(); k.pop("antiquant_offset"); return k


@case("antiquant_mode:2", VE, "antiquant_mode")
def _():
    k = kw_of(i8kv()); k["antiquant_mode"] = 2; return k


@case("antiquant_mode:negative", VE, "antiquant_mode")
def _():
    k = kw_of(i8kv()); k["antiquant_mode"] = -1; return k


@case("antiquant_scale:mode1-per-channel-shape", VE, "antiquant_scale", "antiquant_mode")
def _():
    k = kw_of(i8kv("ch_flat")); k["antiquant_mode"] = 1; return k


@case("antiquant_scale:per-token-short-S", VE, "antiquant_scale")
def _():
    k = kw_of(i8kv("token")); k["antiquant_scale"] = k["antiquant_scale"][..., :5].contiguous()
    k["antiquant_offset"] = k["antiquant_offset"][..., :5].contiguous(); return k


@case("antiquant_scale:per-token-float16", TE, "antiquant_scale")
def _():
    k = kw_of(i8kv("token")); k["antiquant_scale"] = k["antiquant_scale"].half(); k.pop("antiquant_offset"); return k


# ---- SPEC 7: full quant


def fq(**kw):
    return contig(qdtype="int8", **kw)


@case("dequant_scale1:with-float-query", VE, "dequant_scale1")
def _():
    k = kw_of(contig()); k["dequant_scale1"] = torch.tensor([1.0]); return k


@case("quant_scale1:missing", VE, "quant_scale1")
def _():
    k = kw_of(fq()); del k["quant_scale1"]; return k


@case("dequant_scale1:missing", VE, "dequant_scale1")
def _():
    k = kw_of(fq()); del k["dequant_scale1"]; return k


@case("dequant_scale2:missing", VE, "dequant_scale2")
def _():
    k = kw_of(fq()); del k["dequant_scale2"]; return k


@case("key_list:fp16-with-int8-query", TE, "key_list")
def _():
    k = kw_of(fq()); k["key_list"] = k["key_list"].half(); k["value_list"] = k["value_list"].half(); return k


@case("dequant_scale1:two-values", VE, "dequant_scale1")
def _():
    k = kw_of(fq()); k["dequant_scale1"] = torch.cat([k["dequant_scale1"]] * 2); return k


@case("dequant_scale1:float16", TE, "dequant_scale1")
def _():
    k = kw_of(fq()); k["dequant_scale1"] = k["dequant_scale1"].half(); return k


# ---- SPEC 8: int8 output


@case("quant_scale2:size", VE, "quant_scale2")
def _():
    k = kw_of(contig(out_quant="(ND,)", out_offset=False))
    k["quant_scale2"] = torch.cat([k["quant_scale2"], k["quant_scale2"][:1]]); return k


@case("quant_scale2:float16", TE, "quant_scale2")
def _():
    k = kw_of(contig(out_quant="tensor", out_offset=False)); k["quant_scale2"] = k["quant_scale2"].half(); return k


@case("quant_scale2:bf16-with-fp16-query", TE, "quant_scale2")
def _():
    k = kw_of(contig(out_quant="tensor", out_offset=False)); k["quant_scale2"] = k["quant_scale2"].bfloat16(); return k


@case("quant_offset2:size", VE, "quant_offset2")
def _():
    k = kw_of(contig(out_quant="(N,D)"))
    k["quant_offset2"] = k["quant_offset2"][:, :8].contiguous(); return k


@case("quant_offset2:without-quant_scale2", VE, "quant_offset2")
def _():
    k = kw_of(contig()); k["quant_offset2"] = torch.tensor([1.0]); return k


# ---- SPEC 9: inner_precise


@case("inner_precise:2", VE, "inner_precise")
def _():
    k = kw_of(contig()); k["inner_precise"] = 2; return k


@case("inner_precise:-1", VE, "inner_precise")
def _():
    k = kw_of(contig()); k["inner_precise"] = -1; return k


# ---- out=


@case("pse_shift:short-S-left-padded", VE, "pse_shift")
def _():
    # Left padding: the last valid row is S - pad - 1, so pse needs S' >= S - pad; one short.
    c = make_case(_rng(3), layout="BSH", form="pad", qdtype="float16", B=2, KVN=2, G=2, D=16,
                  lens=[6, 3], pad=2, pse="B")
    k = kw_of(c)
    S = k["key_list"].shape[1]
    k["pse_shift"] = k["pse_shift"][..., :S - 3].contiguous(); return k


@case("out:broadcast-dimension-of-2", VE, "out")
def _():
    k = kw_of(contig(B=2, lens=[6, 3]))
    k["out"] = torch.empty((1, 1, 64), dtype=torch.float16).expand(2, 1, 64); return k


@case("out:wrong-shape", VE, "out")
def _():
    k = kw_of(contig()); k["out"] = torch.empty((3, 1, 63), dtype=torch.float16); return k


@case("out:wrong-dtype", TE, "out")
def _():
    k = kw_of(contig()); k["out"] = torch.empty((3, 1, 64), dtype=torch.float32); return k


@case("out:float-when-int8-output", TE, "out")
def _():
    k = kw_of(contig(out_quant="tensor")); k["out"] = torch.empty((3, 1, 64), dtype=torch.float16); return k


# ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", sorted(CASES))
def test_malformed_input_raises(name):
    make, exc, names = CASES[name]
    kw = make()
    with pytest.raises(exc) as info:
        op()(**kw)
    msg = str(info.value)
    assert any(n in msg for n in names), f"message does not name {names}: {msg!r}"


# Cases whose query shape/dtype and output dtype are those of the valid base call, so that a
# preallocated `out` of the expected shape is itself valid: after the error it must be unchanged.
def _out_like(kw):
    q = kw["query"]
    if kw.get("quant_scale2") is not None and kw["quant_scale2"].numel():
        dt = torch.int8
    elif q.dtype == torch.int8:
        dt = torch.float16
    else:
        dt = q.dtype
    return torch.full(q.shape, 3, dtype=dt)


@pytest.mark.parametrize("name", sorted(n for n in CASES if not n.startswith(("query", "out", "layout", "num_heads", "key_num_heads"))))
def test_out_unchanged_after_error(name):
    make, exc, names = CASES[name]
    kw = make()
    if "out" in kw:
        pytest.skip("case is about out=")
    out = _out_like(kw)
    before = out.clone()
    with pytest.raises(exc):
        op()(**kw, out=out)
    assert torch.equal(out, before), "out= was written before validation failed"


@pytest.mark.parametrize("name", sorted(CASES))
def test_validate_raises_what_the_op_raises(name, custom_ops_mod):
    """custom_ops.validate() checks without computing: the same exception type and message as
    the operator (out= aside, which validate does not take)."""
    make, exc, _ = CASES[name]
    kw = make()
    if "out" in kw:
        pytest.skip("validate takes no out=")
    with pytest.raises(exc) as from_op:
        op()(**kw)
    with pytest.raises(exc) as from_validate:
        custom_ops_mod.validate(**kw)
    assert str(from_validate.value) == str(from_op.value)


def test_validate_accepts_a_valid_call(custom_ops_mod):
    kw = kw_of(paged())
    assert custom_ops_mod.validate(**kw) is None


def test_numpy_errors_name_the_parameter():
    c = contig(qdtype="float32")
    kw = c.kwargs("numpy")
    kw["query"] = kw["query"].astype(np.float64)
    with pytest.raises(TypeError, match="query"):
        op()(**kw)
    kw = c.kwargs("numpy")
    kw["block_table"] = np.zeros((3, 2), np.int32)
    kw["block_size"] = 0
    with pytest.raises(ValueError, match="block_size|block_table|key_list"):
        op()(**kw)


def test_messages_write_shapes_as_python_does():
    """Shapes in messages read as Python tuples: "(2,)" for one dimension, "(2, 3)" for two."""
    k = kw_of(contig(form="pad")); k["kv_padding_size"] = torch.tensor([0, 1], dtype=torch.int64)
    with pytest.raises(ValueError, match=r"got shape \(2,\)$"):
        op()(**k)
    k = kw_of(paged("paged3")); k["block_table"] = k["block_table"][:1].contiguous()
    with pytest.raises(ValueError, match=r"got \(1, \d+\)$"):
        op()(**k)


def test_huge_sizes_do_not_crash():
    """SPEC 10: sizes checked for overflow; no abort or out-of-buffer read whatever the input."""
    c = paged("paged3")
    kw = kw_of(c)
    kw["actual_seq_lengths"] = [2**31 - 1, 2**31 - 1]
    with pytest.raises(ValueError):
        op()(**kw)
    kw = kw_of(c)
    kw["block_size"] = 2**40
    with pytest.raises(EITHER):
        op()(**kw)
    kw = kw_of(contig())
    kw["num_heads"] = 2**62
    with pytest.raises(EITHER):
        op()(**kw)
