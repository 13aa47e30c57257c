"""custom_ops: IFA-V5 decode attention on the CPU.

``incre_flash_attention_v5`` is the CPU port of the Ascend "IncreFlashAttention" V5 operator: one new
query token per sequence attends over a KV cache that may be contiguous, a list of per-batch tensors,
left padded, paged (``block_table``) or paged and sparse per KV head (``block_position``). The
contract is ``SPEC.md``; the computation is done by libifa in C, reached through the extension
module ``custom_ops._C``.

Tensors can be torch CPU tensors or numpy arrays (anything that implements ``__dlpack__``); they are
borrowed without a copy. torch is optional: when it is installed, the operator is also registered as
``torch.ops.custom_ops.incre_flash_attention_v5`` so that ``torch.compile`` can trace it.

Threads: ``set_num_threads(n)`` / ``get_num_threads()``; the default comes from the environment
variable ``IFA_NUM_THREADS``, else the number of online CPUs. The instruction set is chosen from
CPUID at first use (``isa()``), and can be forced with ``IFA_ISA=ref|avx2|avx512`` or ``set_isa``.
"""

import numpy as _np

from . import _C

try:
    import torch as _torch
except ImportError:  # numpy inputs work without torch.
    _torch = None

__all__ = [
    "incre_flash_attention_v5",
    "validate",
    "set_num_threads",
    "get_num_threads",
    "isa",
    "isa_available",
    "set_isa",
    "BLOCK_UNSELECTED",
    "page_summaries",
    "update_page_summaries",
    "select_blocks",
]

__version__ = _C.version()

#: Value of an unselected ``block_position`` entry (0x7FFFFFFF).
BLOCK_UNSELECTED = _C.BLOCK_UNSELECTED

# Bound once at import so the per-call path does no attribute lookups on modules.
_run = _C.run
_ndarray = _np.ndarray
_np_empty = _np.empty
_np_int8 = _np.dtype(_np.int8)
_np_float16 = _np.dtype(_np.float16)
if _torch is not None:
    _Tensor = _torch.Tensor
    _torch_empty = _torch.empty
    # empty_like(query, ...) took 1.4-1.6 us a call where empty(query.shape, ...) took 3.3 (torch
    # 2.13, Zen 3): a fifth of the fixed cost of a call. The contiguous format makes the output
    # the same dense tensor as before, whatever the query's strides.
    _torch_empty_like = _torch.empty_like
    _torch_contiguous = _torch.contiguous_format
    _torch_int8 = _torch.int8
    _torch_float16 = _torch.float16
    _grad_enabled = _torch.is_grad_enabled
    # torch.compiler.is_compiling arrived in torch 2.3; older versions cannot compile this op.
    _is_compiling = getattr(getattr(_torch, "compiler", None), "is_compiling", None) or (
        lambda: False)
else:
    _Tensor = None


def incre_flash_attention_v5(
    query,
    key_list,
    value_list,
    pse_shift=None,
    attention_mask=None,
    actual_seq_lengths=None,
    dequant_scale1=None,
    quant_scale1=None,
    dequant_scale2=None,
    quant_scale2=None,
    quant_offset2=None,
    antiquant_scale=None,
    antiquant_offset=None,
    block_table=None,
    kv_padding_size=None,
    block_position=None,
    num_heads=1,
    scale_value=1.0,
    layout="BSH",
    key_num_heads=0,
    block_size=0,
    inner_precise=1,
    *,
    antiquant_mode=0,
    out=None,
):
    """Incremental (decode) flash attention V5: one query token per sequence over a KV cache.

    All 22 parameters of the original keep their order and names; the extensions are keyword-only.
    An optional tensor is absent when it is None or has zero elements (``torch.empty(0)``).

    Args:
        query: (B, 1, N*D) for "BSH", (B, 1, N, D) for "BSND", (B, N, 1, D) for "BNSD"; float16,
            bfloat16 or float32, or int8 on the full-quantisation path.
        key_list, value_list: one tensor or a list/tuple of tensors, same shapes and dtype.
            Contiguous: one tensor in the query's layout with S tokens, or B tensors with batch
            dimension 1. Paged (``block_table`` given): one cache (num_blocks, block_size, KVN*D),
            or (num_blocks, KVN, block_size, D) with layout "BNSD". float dtype of the query, or int8
            with ``antiquant_scale``.
        pse_shift: (B or 1, N, 1, S') positional bias added to the scaled scores.
        attention_mask: bool/int8/uint8 (B, S'), (B, 1, S') or (B, 1, 1, S'); nonzero masks a token.
        actual_seq_lengths: KV length per batch: None, a list/tuple of ints or an integer tensor;
            one value is broadcast. Required when paged.
        dequant_scale1, quant_scale1, dequant_scale2: full quantisation (int8 query) scales.
        quant_scale2, quant_offset2: int8 output quantisation (per tensor or per channel).
        antiquant_scale, antiquant_offset: int8 KV dequantisation, key at index 0, value at 1.
        block_table: int32 (B, M), logical page -> physical block.
        kv_padding_size: one int64, left padding of a contiguous KV tensor.
        block_position: int32 (B, KVN, P), per KV head, slot -> ``block_table`` column, or
            ``BLOCK_UNSELECTED`` (0x7FFFFFFF) for a page the head does not attend to.
        num_heads: N, query heads. scale_value: score scale, usually 1/sqrt(D).
        layout: "BSH", "BSND" or "BNSD". key_num_heads: KVN (0 means N).
        block_size: tokens per page when paged. inner_precise: 0 high precision, 1 high performance.
        antiquant_mode: keyword-only; 0 per-channel (or per-tensor), 1 per-token antiquant params.
        out: keyword-only; a preallocated output (query's shape and the output dtype).

    Returns:
        A new tensor shaped like ``query`` (torch for a torch query, numpy for a numpy query), or
        ``out``: dtype int8 when ``quant_scale2`` is given, float16 for an int8 query, else the
        query's dtype.

    Raises:
        TypeError for a wrong dtype or argument type, ValueError for a wrong value or shape,
        MemoryError when the library runs out of memory; the message names the parameter.
    """
    qtype = type(query)
    # With grad mode on, a call whose query requires grad goes through the registered op, which
    # gives its result an autograd node whose backward raises (the op has none); the direct path
    # would return a result that silently has no gradient. With out= it is refused, as torch's
    # out= functions refuse it. Only the query (and out) are checked: reading requires_grad costs
    # about 0.1 us a tensor, and in decode the query is what carries a gradient (docs/design.md).
    recorded = False
    if qtype is _Tensor and _grad_enabled():
        recorded = query.requires_grad
        if recorded or (out is not None and isinstance(out, _Tensor) and out.requires_grad):
            # First the library's checks, whose errors name the parameter (the op's schema and
            # _call_torch_op would report a malformed argument less clearly).
            _validate_call(locals())
            if out is not None:
                raise ValueError("out: the op has no backward, so out= is refused while the "
                                 "query or out requires grad; call it under torch.no_grad()")
    if _Tensor is not None and (
        recorded or _is_compiling() or (qtype is not _Tensor and isinstance(query, _Tensor))
    ):
        # Inside torch.compile (or for tensor subclasses such as FakeTensor) the call must go
        # through the dispatcher so that the registered fake implementation can stand in for it.
        return _call_torch_op(
            query, key_list, value_list, pse_shift, attention_mask, actual_seq_lengths,
            dequant_scale1, quant_scale1, dequant_scale2, quant_scale2, quant_offset2,
            antiquant_scale, antiquant_offset, block_table, kv_padding_size, block_position,
            num_heads, scale_value, layout, key_num_heads, block_size, inner_precise,
            antiquant_mode, out,
        )
    if out is None:
        try:
            out = _allocate_output(query, qtype, quant_scale2)
        except (RuntimeError, MemoryError, ValueError, AttributeError) as exc:
            # An absurd query (e.g. an expanded view claiming D = 2**40) fails in the allocator
            # first, and one without __dlpack__ in numpy; report what is wrong with the
            # arguments instead, as the extension words it, if anything is (without the
            # allocator's error as its context: it says nothing the extension does not).
            try:
                _validate_call(locals())
            except (TypeError, ValueError) as named:
                named.__suppress_context__ = True  # its __cause__, if any, stays
                raise
            raise exc
    return _run(
        query, key_list, value_list, pse_shift, attention_mask, actual_seq_lengths,
        dequant_scale1, quant_scale1, dequant_scale2, quant_scale2, quant_offset2,
        antiquant_scale, antiquant_offset, block_table, kv_padding_size, block_position,
        num_heads, scale_value, layout, key_num_heads, block_size, inner_precise,
        antiquant_mode, out,
    )


# The parameters of incre_flash_attention_v5 (and of validate) that _C.validate takes, in its
# order.
_VALIDATE_ARGS = (
    "query", "key_list", "value_list", "pse_shift", "attention_mask", "actual_seq_lengths",
    "dequant_scale1", "quant_scale1", "dequant_scale2", "quant_scale2", "quant_offset2",
    "antiquant_scale", "antiquant_offset", "block_table", "kv_padding_size", "block_position",
    "num_heads", "scale_value", "layout", "key_num_heads", "block_size", "inner_precise",
    "antiquant_mode",
)


def _validate_call(arguments):
    """The extension's checks on the arguments of a call (its locals()); never on the fast path
    of a call, where building the dict would cost time."""
    _C.validate(*[arguments[name] for name in _VALIDATE_ARGS])


def _allocate_output(query, qtype, quant_scale2):
    """The output, allocated like the query; everything else (argument types, shapes, dtypes) is
    checked in C, where it costs nanoseconds rather than microseconds."""
    if qtype is _Tensor:
        dtype = query.dtype
        if quant_scale2 is not None and _present(quant_scale2):
            dtype = _torch_int8
        elif dtype is _torch_int8:
            dtype = _torch_float16
        out = _torch_empty_like(query, dtype=dtype, memory_format=_torch_contiguous)
    else:
        if qtype is not _ndarray:
            # Any other DLPack producer: answer with a numpy array (over the same memory). An
            # object without __dlpack__ raises AttributeError here, which the caller turns into
            # the extension's error.
            query = _np.from_dlpack(query)
        dtype = query.dtype
        if quant_scale2 is not None and _present(quant_scale2):
            dtype = _np_int8
        elif dtype == _np_int8:
            dtype = _np_float16
        out = _np_empty(query.shape, dtype)
    return out


def validate(
    query,
    key_list,
    value_list,
    pse_shift=None,
    attention_mask=None,
    actual_seq_lengths=None,
    dequant_scale1=None,
    quant_scale1=None,
    dequant_scale2=None,
    quant_scale2=None,
    quant_offset2=None,
    antiquant_scale=None,
    antiquant_offset=None,
    block_table=None,
    kv_padding_size=None,
    block_position=None,
    num_heads=1,
    scale_value=1.0,
    layout="BSH",
    key_num_heads=0,
    block_size=0,
    inner_precise=1,
    *,
    antiquant_mode=0,
):
    """Checks the arguments of ``incre_flash_attention_v5`` without computing anything.

    Returns None, or raises the TypeError / ValueError the operator would raise.
    """
    _validate_call(locals())


def set_num_threads(n):
    """Sets the number of threads one call uses (1 <= n <= 1024), for the whole process."""
    _C.set_num_threads(n)


def get_num_threads():
    """Returns the number of threads one call uses (IFA_NUM_THREADS, else the online CPUs)."""
    return _C.get_num_threads()


def isa():
    """Returns the instruction set the kernels run with: "ref", "avx2" or "avx512"."""
    return _C.isa()


def isa_available():
    """Returns the instruction sets this CPU can run, as a list of names, best last."""
    return _C.isa_available().split()


def set_isa(name):
    """Forces an instruction set ("ref", "avx2", "avx512"); ValueError if the CPU lacks it."""
    _C.set_isa(name)


def _new_like(like, shape, np_dtype, torch_dtype):
    """A new array for an output: a torch tensor when `like` is one, numpy otherwise."""
    if _Tensor is not None and isinstance(like, _Tensor):
        return _torch_empty(shape, dtype=torch_dtype)
    return _np_empty(shape, np_dtype)


def _dims(tensor):
    shape = getattr(tensor, "shape", None)
    return tuple(int(s) for s in shape) if shape is not None else ()


def _summary_shape(key_cache, key_num_heads):
    """(num_blocks, KVN, 2, D) for a paged key cache; a placeholder when the cache is malformed,
    so that the library (not this helper) reports the error."""
    dims = _dims(key_cache)
    if len(dims) == 4:
        return (dims[0], dims[1], 2, dims[3])
    if len(dims) == 3 and _is_int(key_num_heads) and key_num_heads > 0 and (
            dims[2] % key_num_heads == 0):
        return (dims[0], int(key_num_heads), 2, dims[2] // key_num_heads)
    return (dims[0] if dims else 1, 1, 2, 1)


def _ints(value):
    """An int or a list/tuple of ints as an int64 array; tensors pass through."""
    if _is_int(value):
        return _np.asarray([int(value)], dtype=_np.int64)
    if isinstance(value, (list, tuple)):
        for i, v in enumerate(value):
            if not _is_int(v):
                raise TypeError(f"new_tokens[{i}]: expected an int, got {type(v).__name__}")
        return _np.asarray([int(v) for v in value], dtype=_np.int64)
    return value


def page_summaries(key_cache, block_table, actual_seq_lengths, *, key_num_heads=0, block_size=0,
                   antiquant_scale=None, antiquant_offset=None, antiquant_mode=0, out=None):
    """Quest page summaries: the elementwise min and max keys of every block of a paged cache.

    Args:
        key_cache: paged keys, (num_blocks, block_size, KVN*D) or (num_blocks, KVN, block_size, D);
            float16, bfloat16, float32, or int8 (dequantised with ``antiquant_scale`` /
            ``antiquant_offset``, key parameters at index 0, as in the operator).
        block_table: int32 (B, M), logical page -> physical block.
        actual_seq_lengths: tokens per sequence (list of ints or an integer tensor; one value is
            broadcast). Page j of sequence b holds min(block_size, L[b] - j*block_size) valid rows;
            only those count.
        key_num_heads: KVN, required for the 3-D cache (0 takes it from a 4-D cache).
        block_size: 0 takes it from the cache; otherwise it must match.
        antiquant_mode: 0 per-channel / per-tensor parameters, 1 per-token (2, B, S').
        out: a preallocated float32 (num_blocks, KVN, 2, D) array to fill.

    Returns:
        float32 (num_blocks, KVN, 2, D), indexed by physical block: ``[blk, h, 0]`` is the minimum
        and ``[blk, h, 1]`` the maximum key of head h over the block's valid rows. A block that no
        sequence references holds +inf / -inf. A torch tensor for a torch cache, else numpy.
    """
    if out is None:
        out = _new_like(key_cache, _summary_shape(key_cache, key_num_heads), _np.float32,
                        _torch.float32 if _torch is not None else None)
    return _C.page_summaries(key_cache, block_table, actual_seq_lengths, None, key_num_heads,
                             block_size, antiquant_scale, antiquant_offset, antiquant_mode, out,
                             False)


def update_page_summaries(summaries, key_cache, block_table, actual_seq_lengths, new_tokens=1, *,
                          key_num_heads=0, block_size=0, antiquant_scale=None,
                          antiquant_offset=None, antiquant_mode=0):
    """Brings ``summaries`` (from ``page_summaries``) up to date after appending tokens, in place.

    ``actual_seq_lengths`` are the lengths after the append and ``new_tokens`` (an int, a list or
    an integer tensor, one value broadcast) how many tokens each sequence gained. Every block that
    holds one of the new tokens is summarised again from its first row, so the result equals
    ``page_summaries`` for those blocks; all other blocks are left alone. Returns ``summaries``.
    """
    return _C.page_summaries(key_cache, block_table, actual_seq_lengths, _ints(new_tokens),
                             key_num_heads, block_size, antiquant_scale, antiquant_offset,
                             antiquant_mode, summaries, True)


def select_blocks(query, summaries, block_table, actual_seq_lengths, k, sink_pages=0, *,
                  num_heads=1, key_num_heads=0, layout="BSH", block_size, width=None):
    """Chooses the pages each KV head attends to (Quest) and returns the inputs of a sparse step.

    A page's score for query head n is sum_d max(q_d * kmax_d, q_d * kmin_d), an upper bound of
    q . k over the page; a KV head scores a page by the largest score of its G query heads. Each
    KV head of sequence b with n = ceil(L[b] / block_size) pages keeps:

    - all n pages when n <= k (dense-equivalent, length unchanged); none when L[b] == 0;
    - otherwise exactly k: the first ``sink_pages`` pages, the k - sink_pages - 1 best-scoring of
      the pages in between (ties to the lower page), and the last (possibly partial) page, listed
      in ascending page order with the last page last, then ``BLOCK_UNSELECTED``.

    Args:
        query: (B, 1, N*D) "BSH", (B, 1, N, D) "BSND" or (B, N, 1, D) "BNSD"; float16, bfloat16
            or float32.
        summaries: float32 (num_blocks, KVN, 2, D) from ``page_summaries``.
        block_table: int32 (B, M). actual_seq_lengths: the true lengths (as for the operator).
        k: pages kept per KV head, sinks and the last page included (k > sink_pages).
        sink_pages: leading pages always kept (attention sinks).
        block_size: tokens per page (keyword, required).
        width: P, the last dimension of block_position (default min(k, M), at least 1).

    Returns:
        ``(block_position, actual_seq_lengths)``: int32 (B, KVN, P) and int64 (B,), to pass as
        ``block_position`` and ``actual_seq_lengths`` of ``incre_flash_attention_v5`` together with
        the same ``block_table``. The length of a sparse sequence is the compact
        (k - 1) * block_size + (tokens of its last page), so the operator reads exactly the chosen
        tokens. Positions are compact (SPEC 4.4): a ``pse_shift`` or ``attention_mask`` used with
        this selection is indexed by the compact token index. torch tensors for a torch query,
        else numpy arrays.
    """
    qdims = _dims(query)
    batch = qdims[0] if qdims else 1
    kv_heads = key_num_heads if _is_int(key_num_heads) and key_num_heads > 0 else num_heads
    kv_heads = int(kv_heads) if _is_int(kv_heads) and kv_heads > 0 else 1
    if width is None:
        tdims = _dims(block_table)
        columns = tdims[1] if len(tdims) == 2 else 1
        width = max(1, min(int(k), columns)) if _is_int(k) else 1
    elif not _is_int(width) or width < 1:
        raise ValueError(f"width: expected an int >= 1, got {width!r}")
    torch_int32 = _torch.int32 if _torch is not None else None
    torch_int64 = _torch.int64 if _torch is not None else None
    position = _new_like(query, (batch, kv_heads, int(width)), _np.int32, torch_int32)
    lengths = _new_like(query, (batch,), _np.int64, torch_int64)
    _C.select_blocks(query, summaries, block_table, actual_seq_lengths, num_heads, key_num_heads,
                     layout, block_size, k, sink_pages, position, lengths)
    return position, lengths


def _present(tensor):
    """Whether an optional tensor argument counts as given (it has at least one element)."""
    shape = getattr(tensor, "shape", None)
    if shape is None:
        return _np.from_dlpack(tensor).size > 0
    return 0 not in shape


def _is_int(value):
    """Python int or numpy integer, but not bool (a bool is almost always a mistake here)."""
    return isinstance(value, (int, _np.integer)) and not isinstance(value, (bool, _np.bool_))


def _check_scalars(num_heads, scale_value, layout, key_num_heads, block_size, inner_precise,
                   antiquant_mode):
    """The C extension's scalar checks, repeated for the torch.ops path, whose schema would
    otherwise coerce a bool to an int silently."""
    for name, value in (("num_heads", num_heads), ("key_num_heads", key_num_heads),
                        ("block_size", block_size), ("inner_precise", inner_precise),
                        ("antiquant_mode", antiquant_mode)):
        if not _is_int(value):
            raise TypeError(f"{name}: expected an int, got {type(value).__name__}")
    if isinstance(scale_value, bool) or not isinstance(scale_value, (int, float, _np.floating,
                                                                     _np.integer)):
        raise TypeError(f"scale_value: expected a float, got {type(scale_value).__name__}")
    if not isinstance(layout, str):
        raise TypeError(f"layout: expected a str (\"BSH\", \"BSND\" or \"BNSD\"), "
                        f"got {type(layout).__name__}")


def _lengths_tensor(actual_seq_lengths):
    """actual_seq_lengths as the Optional[Tensor] the torch schema takes: a list/tuple of ints
    becomes an int64 tensor, an empty one None."""
    if not isinstance(actual_seq_lengths, (list, tuple)):
        return actual_seq_lengths
    for i, value in enumerate(actual_seq_lengths):
        if not _is_int(value):
            raise TypeError(f"actual_seq_lengths[{i}]: expected an int, "
                            f"got {type(value).__name__}")
    if not actual_seq_lengths:
        return None
    return _torch.tensor([int(v) for v in actual_seq_lengths], dtype=_torch.int64)


def _call_torch_op(query, key_list, value_list, pse_shift, attention_mask, actual_seq_lengths,
                   dequant_scale1, quant_scale1, dequant_scale2, quant_scale2, quant_offset2,
                   antiquant_scale, antiquant_offset, block_table, kv_padding_size,
                   block_position, num_heads, scale_value, layout, key_num_heads, block_size,
                   inner_precise, antiquant_mode, out):
    """The same call through torch.ops, normalised to the op's typed schema."""
    _check_scalars(num_heads, scale_value, layout, key_num_heads, block_size, inner_precise,
                   antiquant_mode)
    keys = [key_list] if isinstance(key_list, _Tensor) else list(key_list)
    values = [value_list] if isinstance(value_list, _Tensor) else list(value_list)
    args = (query, keys, values, pse_shift, attention_mask, _lengths_tensor(actual_seq_lengths),
            dequant_scale1, quant_scale1, dequant_scale2, quant_scale2, quant_offset2,
            antiquant_scale, antiquant_offset, block_table, kv_padding_size, block_position,
            int(num_heads), float(scale_value), layout, int(key_num_heads), int(block_size),
            int(inner_precise), int(antiquant_mode))
    if out is None:
        return _torch.ops.custom_ops.incre_flash_attention_v5(*args)
    _torch.ops.custom_ops.incre_flash_attention_v5_out(*args, out)
    return out


def _register_torch_ops():
    """Registers custom_ops::incre_flash_attention_v5 (functional) and ..._out (writes `out`)
    with torch.library, each with a fake implementation that gives the output's shape and dtype
    so that torch.compile can trace calls without running them."""
    from typing import List, Optional

    torch = _torch
    Tensor = torch.Tensor

    def out_dtype(query, quant_scale2):
        if quant_scale2 is not None and quant_scale2.numel() > 0:
            return torch.int8
        return torch.float16 if query.dtype == torch.int8 else query.dtype

    @torch.library.custom_op("custom_ops::incre_flash_attention_v5", mutates_args=())
    def incre_flash_attention_v5_op(
        query: Tensor,
        key_list: List[Tensor],
        value_list: List[Tensor],
        pse_shift: Optional[Tensor],
        attention_mask: Optional[Tensor],
        actual_seq_lengths: Optional[Tensor],
        dequant_scale1: Optional[Tensor],
        quant_scale1: Optional[Tensor],
        dequant_scale2: Optional[Tensor],
        quant_scale2: Optional[Tensor],
        quant_offset2: Optional[Tensor],
        antiquant_scale: Optional[Tensor],
        antiquant_offset: Optional[Tensor],
        block_table: Optional[Tensor],
        kv_padding_size: Optional[Tensor],
        block_position: Optional[Tensor],
        num_heads: int,
        scale_value: float,
        layout: str,
        key_num_heads: int,
        block_size: int,
        inner_precise: int,
        antiquant_mode: int,
    ) -> Tensor:
        out = torch.empty(query.shape, dtype=out_dtype(query, quant_scale2), device=query.device)
        _run(query, key_list, value_list, pse_shift, attention_mask, actual_seq_lengths,
             dequant_scale1, quant_scale1, dequant_scale2, quant_scale2, quant_offset2,
             antiquant_scale, antiquant_offset, block_table, kv_padding_size, block_position,
             num_heads, scale_value, layout, key_num_heads, block_size, inner_precise,
             antiquant_mode, out)
        return out

    @incre_flash_attention_v5_op.register_fake
    def _(query, key_list, value_list, pse_shift, attention_mask, actual_seq_lengths,
          dequant_scale1, quant_scale1, dequant_scale2, quant_scale2, quant_offset2,
          antiquant_scale, antiquant_offset, block_table, kv_padding_size, block_position,
          num_heads, scale_value, layout, key_num_heads, block_size, inner_precise,
          antiquant_mode):
        return query.new_empty(query.shape, dtype=out_dtype(query, quant_scale2))

    @torch.library.custom_op("custom_ops::incre_flash_attention_v5_out", mutates_args=("out",))
    def incre_flash_attention_v5_out_op(
        query: Tensor,
        key_list: List[Tensor],
        value_list: List[Tensor],
        pse_shift: Optional[Tensor],
        attention_mask: Optional[Tensor],
        actual_seq_lengths: Optional[Tensor],
        dequant_scale1: Optional[Tensor],
        quant_scale1: Optional[Tensor],
        dequant_scale2: Optional[Tensor],
        quant_scale2: Optional[Tensor],
        quant_offset2: Optional[Tensor],
        antiquant_scale: Optional[Tensor],
        antiquant_offset: Optional[Tensor],
        block_table: Optional[Tensor],
        kv_padding_size: Optional[Tensor],
        block_position: Optional[Tensor],
        num_heads: int,
        scale_value: float,
        layout: str,
        key_num_heads: int,
        block_size: int,
        inner_precise: int,
        antiquant_mode: int,
        out: Tensor,
    ) -> None:
        _run(query, key_list, value_list, pse_shift, attention_mask, actual_seq_lengths,
             dequant_scale1, quant_scale1, dequant_scale2, quant_scale2, quant_offset2,
             antiquant_scale, antiquant_offset, block_table, kv_padding_size, block_position,
             num_heads, scale_value, layout, key_num_heads, block_size, inner_precise,
             antiquant_mode, out)

    @incre_flash_attention_v5_out_op.register_fake
    def _(*args):
        return None


if _torch is not None and hasattr(_torch, "library") and hasattr(_torch.library, "custom_op"):
    try:
        _register_torch_ops()
    except RuntimeError as exc:  # Already registered: the module was reloaded in this process.
        if "already" not in str(exc).lower():
            raise
