"""What the C extension (python/custom_ops/_C.c) does with the objects it is handed.

The other tests pass torch tensors and numpy arrays, which reach the extension by two routes only
(torch's C exchange table, numpy's versioned DLPack capsule). A coverage run of the suite left the
rest of the extension's borrowing code unrun; these tests run it:
- argument lists longer than the room the extension keeps on its stack (24 borrowed tensors,
  8 KV tensors, 64 lengths), which spill to the heap;
- producers older than DLPack 1.0 (legacy capsules), producers that fail or return something
  else, and the C exchange table's other entry points;
- DLPack views the library cannot take: negative strides, a read-only output, dtypes it has no
  name for, too many dimensions, another device, a newer DLPack major version.
Each refusal must be a TypeError or ValueError naming the parameter, raised before anything is
written to ``out``, and every tensor the extension took must be handed back (its deleter called
once).
"""

import ctypes
import os

import numpy as np
import pytest

from cases import assert_matches, make_case, op, result_np, run_case

torch = pytest.importorskip("torch", reason="binding tests compare with torch tensors")

# torch reports some errors by throwing a C++ exception inside libtorch, which the ASan runtime
# that scripts/test.sh preloads for its sanitizer run cannot intercept (it aborts); test_sizes.py
# meets the same limit. The checks that make torch throw are left out there.
ASAN_PRELOADED = "asan" in os.environ.get("LD_PRELOAD", "")

# numpy exports versioned capsules (DLPack 1.0, which can say read-only) from 2.1 on.
needs_versioned_numpy = pytest.mark.skipif(np.lib.NumpyVersion(np.__version__) < "2.1.0",
                                           reason="numpy before 2.1 exports legacy capsules only")


def _small_case(seed=0, **kw):
    o = dict(layout="BSH", form="contig", qdtype="float16", B=2, KVN=2, G=2, D=16, lens=[7, 4])
    o.update(kw)
    return make_case(np.random.default_rng(seed), **o)


def _sentinel_out(case):
    """An output array filled with a value the operator never writes for these cases."""
    gold = case.golden()
    return np.full(gold.out.shape, 1234.0, dtype=np.float16)


# ---------------------------------------------------------------- past the stack room


@pytest.mark.parametrize("backend", ["numpy", "torch"])
def test_list_form_with_more_tensors_than_the_stack_holds(backend):
    # 30 batches: 60 KV tensors (more than 8 kept on the stack) and 62 borrowed tensors with the
    # query and the output (more than 24).
    case = _small_case(1, form="list", B=30, lens=[int(x) for x in
                                                   np.random.default_rng(5).integers(0, 40, 30)])
    got = run_case(case, backend)
    assert_matches(case, got, backend=backend)


@pytest.mark.parametrize("element", ["int", "numpy-int64", "numpy-int32"])
def test_lengths_list_longer_than_the_stack_holds(element):
    lens = [int(x) for x in np.random.default_rng(6).integers(0, 12, 100)]
    case = _small_case(2, B=100, lens=lens)
    cast = {"int": int, "numpy-int64": np.int64, "numpy-int32": np.int32}[element]
    case.inputs["actual_seq_lengths"] = [cast(x) for x in lens]
    got = run_case(case, "numpy")
    assert_matches(case, got, backend="numpy")


def test_lengths_list_error_past_the_stack_names_the_element():
    lens = [3] * 100
    lens[77] = -1
    case = _small_case(3, B=100, lens=[3] * 100)
    case.inputs["actual_seq_lengths"] = lens
    with pytest.raises(ValueError, match="actual_seq_lengths"):
        run_case(case, "numpy")
    lens[77] = 2.5
    with pytest.raises(TypeError, match=r"actual_seq_lengths\[77\]"):
        run_case(case, "numpy")


# ---------------------------------------------------------------- producers


class Legacy:
    """A producer from before DLPack 1.0: __dlpack__ takes no max_version and returns a
    "dltensor" capsule (numpy makes one when asked without max_version)."""

    def __init__(self, array):
        self.array = array

    def __dlpack__(self, stream=None):
        return self.array.__dlpack__()

    def __dlpack_device__(self):
        return self.array.__dlpack_device__()


def test_legacy_producer_inputs_and_output():
    case = _small_case(4, pse="B", mask="(B,S)")
    expected = result_np(run_case(case, "numpy"))
    kw = case.kwargs("numpy")
    out = np.zeros_like(kw["query"])
    for name in ("key_list", "value_list", "pse_shift", "attention_mask"):
        kw[name] = Legacy(kw[name])
    # A legacy capsule cannot say it is read-only, so an output through one is written.
    got = op()(**dict(kw, out=Legacy(out)))
    assert isinstance(got, Legacy)
    np.testing.assert_array_equal(result_np(out), expected)


def test_query_from_another_producer_gives_a_numpy_result():
    # A query that is neither a torch tensor nor a numpy array: the output is a numpy array.
    case = _small_case(18)
    kw = case.kwargs("numpy")
    got = op()(**dict(kw, query=Legacy(kw["query"])))
    assert isinstance(got, np.ndarray)
    assert_matches(case, got, backend="numpy")


class Raises:
    def __init__(self, exc):
        self.exc = exc

    def __dlpack__(self, **kwargs):
        raise self.exc


class NotACapsule:
    def __dlpack__(self, **kwargs):
        return 42


@pytest.mark.parametrize("exc", [RuntimeError("first line\nsecond line"), BufferError("no")])
def test_producer_error_becomes_value_error_naming_the_parameter(exc):
    case = _small_case(5)
    out = _sentinel_out(case)
    with pytest.raises(ValueError, match=r"^value_list: this Raises cannot be borrowed") as info:
        run_case(case, "numpy", value_list=[Raises(exc)], out=out)
    assert "second line" not in str(info.value)
    assert info.value.__cause__ is exc
    assert np.all(out == 1234.0)


def test_producer_returning_no_capsule():
    case = _small_case(6)
    out = _sentinel_out(case)
    with pytest.raises(TypeError, match=r"pse_shift: NotACapsule.__dlpack__\(\) did not return"):
        run_case(case, "numpy", pse_shift=NotACapsule(), out=out)
    assert np.all(out == 1234.0)


def test_producer_memory_error_passes_through():
    case = _small_case(7)
    with pytest.raises(MemoryError):
        run_case(case, "numpy", key_list=Raises(MemoryError()))


# ---------------------------------------------------------------- views the library cannot take


@pytest.mark.parametrize("name", ["query", "key_list", "pse_shift"])
def test_negative_strides_are_refused(name):
    case = _small_case(8, pse="B")
    kw = case.kwargs("numpy")
    kw[name] = kw[name][::-1] if name == "query" else kw[name][:, ::-1]
    out = _sentinel_out(case)
    with pytest.raises(ValueError, match=rf"^{name}: negative stride"):
        op()(**dict(kw, out=out))
    assert np.all(out == 1234.0)


@needs_versioned_numpy
def test_read_only_output_is_refused_and_read_only_inputs_are_fine():
    case = _small_case(9, pse="B")
    kw = case.kwargs("numpy")
    for name in ("query", "key_list", "value_list", "pse_shift"):
        kw[name].flags.writeable = False
    got = op()(**kw)
    assert_matches(case, got, backend="numpy")
    out = _sentinel_out(case)
    out.flags.writeable = False
    with pytest.raises(ValueError, match="^out: the output array is read-only"):
        op()(**dict(kw, out=out))
    assert np.all(out == 1234.0)


@pytest.mark.parametrize("dtype", [np.complex64, np.uint16, np.uint32])
def test_dtypes_without_a_library_name(dtype):
    case = _small_case(10)
    name = np.dtype(dtype).name
    with pytest.raises(TypeError, match=rf"^pse_shift: dtype {name} is not supported"):
        run_case(case, "numpy", pse_shift=np.zeros((2, 4, 1, 7), dtype=dtype))


def test_more_than_eight_dimensions():
    case = _small_case(11)
    with pytest.raises(ValueError, match="^pse_shift: rank 9 is not supported"):
        run_case(case, "numpy", pse_shift=np.zeros((1,) * 9, dtype=np.float16))


@pytest.mark.skipif(ASAN_PRELOADED, reason="torch refuses these tensors with a C++ exception, "
                    "which aborts under a preloaded ASan runtime")
@pytest.mark.parametrize("name", ["query", "key_list"])
def test_torch_meta_and_sparse_tensors(name):
    case = _small_case(12)
    kw = case.kwargs("torch")
    for bad in (torch.empty(kw[name].shape, dtype=kw[name].dtype, device="meta"),
                kw[name].to_sparse()):
        with pytest.raises(ValueError, match=rf"^{name}: this Tensor cannot be borrowed") as info:
            op()(**dict(kw, **{name: bad}))
        assert isinstance(info.value.__cause__, RuntimeError)


def test_a_query_that_requires_grad_gets_a_backward_that_raises():
    """With grad mode on, a call whose query requires grad goes through the registered op, as
    under torch.compile: its result has an autograd node whose backward raises, since the op has
    none. Without grad mode it takes the direct path and the result has no node."""
    case = _small_case(13, qdtype="float32", pse="B")
    kw = case.kwargs("torch")
    kw["query"].requires_grad_(True)
    got = op()(**kw)
    assert got.requires_grad and got.grad_fn is not None
    assert_matches(case, got.detach(), backend="torch")
    if not ASAN_PRELOADED:  # torch raises it as a C++ exception
        with pytest.raises(RuntimeError, match="no autograd formula"):
            got.sum().backward()
    for mode in (torch.no_grad, torch.inference_mode):
        with mode():
            quiet = op()(**kw)
        assert not quiet.requires_grad and quiet.grad_fn is None
        assert torch.equal(quiet, got.detach())


@pytest.mark.parametrize("name", ["key_list", "value_list", "pse_shift"])
def test_other_arguments_that_require_grad_are_only_read(name):
    # Decided in docs/design.md: only the query (and out) are checked, as the query is what
    # carries a gradient in decode; a cache or bias that requires grad is read like any tensor.
    case = _small_case(16, qdtype="float32", pse="B")
    kw = case.kwargs("torch")
    kw[name].requires_grad_(True)
    got = op()(**kw)
    assert not got.requires_grad
    assert_matches(case, got, backend="torch")


def test_out_is_refused_while_the_query_or_out_requires_grad():
    case = _small_case(14, qdtype="float32")
    kw = case.kwargs("torch")
    out = torch.full(case.golden().out.shape, 1234.0)
    kw["query"].requires_grad_(True)
    with pytest.raises(ValueError, match="^out: the op has no backward"):
        op()(**kw, out=out)
    assert bool((out == 1234.0).all())
    kw["query"] = kw["query"].detach()
    leaf = out.clone().requires_grad_(True)
    with pytest.raises(ValueError, match="^out: the op has no backward"):
        op()(**kw, out=leaf)
    assert bool((leaf == 1234.0).all())
    with torch.no_grad():
        assert op()(**kw, out=leaf) is leaf
    assert_matches(case, leaf.detach(), backend="torch")


def test_argument_errors_name_the_parameter_while_grad_is_wanted():
    case = _small_case(15, qdtype="float32")
    kw = case.kwargs("torch")
    kw["query"].requires_grad_(True)
    with pytest.raises(TypeError, match="^key_list: expected a tensor"):
        op()(**dict(kw, key_list=None))
    with pytest.raises(ValueError, match="layout"):
        op()(**dict(kw, layout="BNHD"))


# ---------------------------------------------------------------- hand-built DLPack tensors


class _Version(ctypes.Structure):
    _fields_ = [("major", ctypes.c_uint32), ("minor", ctypes.c_uint32)]


class _Device(ctypes.Structure):
    _fields_ = [("device_type", ctypes.c_int32), ("device_id", ctypes.c_int32)]


class _DType(ctypes.Structure):
    _fields_ = [("code", ctypes.c_uint8), ("bits", ctypes.c_uint8), ("lanes", ctypes.c_uint16)]


class _DLTensor(ctypes.Structure):
    _fields_ = [("data", ctypes.c_void_p), ("device", _Device), ("ndim", ctypes.c_int32),
                ("dtype", _DType), ("shape", ctypes.POINTER(ctypes.c_int64)),
                ("strides", ctypes.POINTER(ctypes.c_int64)), ("byte_offset", ctypes.c_uint64)]


_DELETER = ctypes.CFUNCTYPE(None, ctypes.c_void_p)


class _Versioned(ctypes.Structure):
    _fields_ = [("version", _Version), ("manager_ctx", ctypes.c_void_p), ("deleter", _DELETER),
                ("flags", ctypes.c_uint64), ("dl_tensor", _DLTensor)]


_capsule_new = ctypes.pythonapi.PyCapsule_New
_capsule_new.restype = ctypes.py_object
_capsule_new.argtypes = [ctypes.c_void_p, ctypes.c_char_p, ctypes.c_void_p]
_capsule_pointer = ctypes.pythonapi.PyCapsule_GetPointer
_capsule_pointer.restype = ctypes.c_void_p
_capsule_pointer.argtypes = [ctypes.py_object, ctypes.c_char_p]
_capsule_rename = ctypes.pythonapi.PyCapsule_SetName
_capsule_rename.restype = ctypes.c_int
_capsule_rename.argtypes = [ctypes.py_object, ctypes.c_char_p]


class HandBuilt:
    """A producer whose versioned capsule describes `array` with fields set by hand, to make what
    numpy and torch never export. Counts the calls of its deleter."""

    def __init__(self, array, major=1, device_type=1, lanes=1):
        self.array = np.ascontiguousarray(array)
        self.deletions = 0
        self.shape = (ctypes.c_int64 * self.array.ndim)(*self.array.shape)

        def deleter(_):
            self.deletions += 1

        self.deleter = _DELETER(deleter)
        code = {"f": 2, "i": 0, "u": 1, "b": 6}[self.array.dtype.kind]
        self.managed = _Versioned(
            _Version(major, 0), None, self.deleter, 0,
            _DLTensor(self.array.ctypes.data, _Device(device_type, 0), self.array.ndim,
                      _DType(code, self.array.dtype.itemsize * 8, lanes), self.shape, None, 0))

    def __dlpack__(self, **kwargs):
        return _capsule_new(ctypes.addressof(self.managed), b"dltensor_versioned", None)


def test_hand_built_capsule_is_read():
    case = _small_case(14)
    kw = case.kwargs("numpy")
    key = HandBuilt(kw["key_list"])
    got = op()(**dict(kw, key_list=key))
    assert_matches(case, got, backend="numpy")
    assert key.deletions == 1


@pytest.mark.parametrize("field,message", [
    ({"major": 2}, r"^key_list: the producer returned DLPack 2\.0, newer than"),
    ({"device_type": 2}, r"^key_list: expected a CPU tensor, got one on DLPack device type 2"),
])
def test_hand_built_capsule_refused(field, message):
    case = _small_case(15)
    kw = case.kwargs("numpy")
    key = HandBuilt(kw["key_list"], **field)
    out = _sentinel_out(case)
    with pytest.raises(ValueError, match=message):
        op()(**dict(kw, key_list=key, out=out))
    assert key.deletions == 1
    assert np.all(out == 1234.0)


def test_hand_built_vector_dtype_refused():
    case = _small_case(16)
    kw = case.kwargs("numpy")
    key = HandBuilt(kw["key_list"], lanes=2)
    with pytest.raises(TypeError, match=r"^key_list: dtype float16x2 is not supported"):
        op()(**dict(kw, key_list=key))
    assert key.deletions == 1


# ---------------------------------------------------------------- the C exchange table


_MANAGED_FROM = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.c_void_p, ctypes.POINTER(ctypes.c_void_p))


class _ExchangeAPI(ctypes.Structure):
    _fields_ = [("version", _Version), ("prev_api", ctypes.c_void_p),
                ("managed_tensor_allocator", ctypes.c_void_p),
                ("managed_tensor_from_py_object_no_sync", _MANAGED_FROM),
                ("managed_tensor_to_py_object_no_sync", ctypes.c_void_p),
                ("dltensor_from_py_object_no_sync", ctypes.c_void_p),
                ("current_work_stream", ctypes.c_void_p)]


def _managed_from(py_object, out):
    """Exports the wrapped numpy array through numpy's own versioned capsule, which it then marks
    used, so that the caller (the extension) owns the tensor and calls its deleter."""
    holder = ctypes.cast(py_object, ctypes.py_object).value
    capsule = holder.array.__dlpack__(max_version=(1, 0))
    out[0] = _capsule_pointer(capsule, b"dltensor_versioned")
    _capsule_rename(capsule, b"used_dltensor_versioned")
    holder.exports += 1
    return 0


# The extension keeps a table's address for the life of the process, so these never go away.
_MANAGED_FROM_FN = _MANAGED_FROM(_managed_from)
_TABLE_V1 = _ExchangeAPI(_Version(1, 0), None, None, _MANAGED_FROM_FN, None, None, None)
_TABLE_V2 = _ExchangeAPI(_Version(2, 0), None, None, _MANAGED_FROM_FN, None, None, None)


class _Exported:
    def __init__(self, array):
        self.array = array
        self.exports = 0

    def __dlpack__(self, **kwargs):
        return self.array.__dlpack__(**kwargs)


class OwningTable(_Exported):
    """A type whose table offers only the owning export (no non-owning DLTensor fill)."""

    __dlpack_c_exchange_api__ = ctypes.addressof(_TABLE_V1)


class NewerTable(_Exported):
    """A table of a major version the extension does not know: ignored, __dlpack__ is used."""

    __dlpack_c_exchange_api__ = ctypes.addressof(_TABLE_V2)


class NullTable(_Exported):
    """A table published as the integer 0: no table."""

    __dlpack_c_exchange_api__ = 0


@needs_versioned_numpy
@pytest.mark.parametrize("kind,exports", [(OwningTable, 2), (NewerTable, 0), (NullTable, 0)])
def test_exchange_table_forms(kind, exports):
    case = _small_case(17)
    kw = case.kwargs("numpy")
    key, value = kind(kw["key_list"]), kind(kw["value_list"])
    got = op()(**dict(kw, key_list=key, value_list=value))
    assert_matches(case, got, backend="numpy")
    assert key.exports + value.exports == exports
