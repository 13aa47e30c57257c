/*
 * _C.c - the CPython extension under custom_ops: it borrows every tensor argument through DLPack,
 * fills an ifa_params and calls libifa with the GIL released.
 *
 * The module is plain C against the CPython API and never links against torch: any object that
 * speaks DLPack (a torch tensor, a numpy array, ...) is lent to us without a copy. Borrowing one
 * tensor tries, in order:
 *
 *   1. the producer's C exchange table (type(obj).__dlpack_c_exchange_api__, DLPack 1.2+; torch has
 *      it): one C call fills a DLTensor, with no Python-level call and no allocation. torch's
 *      Python __dlpack__() costs about 1.7 us a tensor, which alone would blow the per-call budget.
 *   2. obj.__dlpack__(max_version=(1, 0)): a versioned capsule, which carries the read-only flag
 *      that numpy sets for read-only arrays;
 *   3. obj.__dlpack__() when the producer rejects max_version with a TypeError (pre-1.0 producers):
 *      a legacy capsule.
 *
 * Whatever was borrowed is recorded in a `borrow` and released in one place (call_release) on every
 * path, success or error: the managed tensor's deleter is called, the capsule and the strong
 * reference that keeps the producer object alive are dropped. Nothing is copied; the library only
 * reads the inputs and writes `out`.
 *
 * Every non-OK ifa_status becomes a Python exception in exactly one function, raise_status().
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include "_dlpack.h"
#include "ifa.h"

/* ---- Interned objects, created once at import ------------------------------------------------ */

static PyObject *str_dlpack;              /* "__dlpack__" */
static PyObject *str_exchange_api;        /* "__dlpack_c_exchange_api__" */
static PyObject *kwnames_max_version;     /* ("max_version",), for the vectorcall */
static PyObject *tuple_max_version;       /* (1, 0): the newest DLPack major we can read */

/* ---- Status -> exception: the one place that does it ----------------------------------------- */

/* Sets the Python exception for a failed libifa call and returns NULL. It must run on the thread
 * that made the call, because ifa_last_error() is kept per thread. */
static PyObject *raise_status(ifa_status status) {
    PyObject *type = PyExc_ValueError;
    if (status == IFA_ERR_INVALID_DTYPE) {
        type = PyExc_TypeError;
    } else if (status == IFA_ERR_OUT_OF_MEMORY) {
        type = PyExc_MemoryError;
    }
    const char *message = ifa_last_error();
    if (message == NULL || message[0] == '\0') {
        message = ifa_status_string(status);
    }
    PyErr_SetString(type, message);
    return NULL;
}

/* ---- DLPack borrowing ------------------------------------------------------------------------ */

/* One borrowed tensor. Exactly what is set here is undone by borrow_release(). */
typedef struct borrow {
    PyObject *owner;                     /* strong reference keeping a fast-path object alive */
    PyObject *capsule;                   /* the consumed ("used_...") capsule */
    DLManagedTensor *legacy;             /* owned legacy tensor: call its deleter */
    DLManagedTensorVersioned *versioned; /* owned versioned tensor: call its deleter */
} borrow;

static void borrow_release(borrow *b) {
    /* The deleters may run Python code (numpy's drops a reference to the array), so they are
     * called with the GIL held, which every caller of this function does. */
    if (b->versioned != NULL && b->versioned->deleter != NULL) {
        b->versioned->deleter(b->versioned);
    }
    if (b->legacy != NULL && b->legacy->deleter != NULL) {
        b->legacy->deleter(b->legacy);
    }
    Py_XDECREF(b->capsule);
    Py_XDECREF(b->owner);
    b->owner = b->capsule = NULL;
    b->legacy = NULL;
    b->versioned = NULL;
}

/* Cache of type -> exchange table (or NULL when the type has none), so the attribute lookup happens
 * once per type rather than once per tensor. The cached types are kept alive by a reference so that
 * their address cannot be reused by another type. */
#define API_CACHE_SIZE 8
static struct {
    PyTypeObject *type;
    const DLPackExchangeAPI *api;
} api_cache[API_CACHE_SIZE];
static int api_cache_count;

static const DLPackExchangeAPI *exchange_api_for(PyTypeObject *type) {
    for (int i = 0; i < api_cache_count; ++i) {
        if (api_cache[i].type == type) {
            return api_cache[i].api;
        }
    }
    const DLPackExchangeAPI *api = NULL;
    PyObject *attr = PyObject_GetAttr((PyObject *)type, str_exchange_api);
    if (attr == NULL) {
        /* No table (the usual case outside torch): the portable __dlpack__ path is used. */
        PyErr_Clear();
    } else {
        /* The specification publishes the table as an integer address; torch uses a capsule. */
        if (PyCapsule_CheckExact(attr)) {
            api = (const DLPackExchangeAPI *)PyCapsule_GetPointer(attr,
                                                                  IFA_DLPACK_EXCHANGE_API_CAPSULE);
        } else if (PyLong_CheckExact(attr)) {
            api = (const DLPackExchangeAPI *)PyLong_AsVoidPtr(attr);
        }
        if (PyErr_Occurred()) {
            PyErr_Clear();
            api = NULL;
        }
        /* The table itself lives as long as the process, so only the attribute is dropped. */
        Py_DECREF(attr);
    }
    /* Only tables whose layout we know are used: major version 1, with a way to export. */
    if (api != NULL &&
        (api->header.version.major != IFA_DLPACK_MAJOR_VERSION ||
         (api->dltensor_from_py_object_no_sync == NULL &&
          api->managed_tensor_from_py_object_no_sync == NULL))) {
        api = NULL;
    }
    if (api_cache_count < API_CACHE_SIZE) {
        Py_INCREF(type);
        api_cache[api_cache_count].type = type;
        api_cache[api_cache_count].api = api;
        ++api_cache_count;
    }
    return api;
}

/* Py_NewRef() arrived in Python 3.10; we support 3.9. */
static PyObject *new_ref(PyObject *obj) {
    Py_INCREF(obj);
    return obj;
}

/* Takes the pending exception as a normalised instance (with its traceback attached). */
static PyObject *fetch_exception(void) {
#if PY_VERSION_HEX >= 0x030C0000
    return PyErr_GetRaisedException();
#else
    PyObject *type, *value, *traceback;
    PyErr_Fetch(&type, &value, &traceback);
    PyErr_NormalizeException(&type, &value, &traceback);
    if (value != NULL && traceback != NULL) {
        PyException_SetTraceback(value, traceback);
    }
    Py_XDECREF(type);
    Py_XDECREF(traceback);
    return value;
#endif
}

static void restore_exception(PyObject *exc) {
#if PY_VERSION_HEX >= 0x030C0000
    PyErr_SetRaisedException(exc);
#else
    PyErr_Restore(new_ref((PyObject *)Py_TYPE(exc)), exc, PyException_GetTraceback(exc));
#endif
}

/* A producer that cannot export a tensor (torch: a meta or sparse tensor, one that requires grad
 * under __dlpack__) raises its own error, which does not say which argument it was, and torch's
 * comes with a C++ backtrace. Replace it by a ValueError that names the parameter and quotes the
 * first line of the original, which stays attached as __cause__. MemoryError and exceptions that
 * are not errors (KeyboardInterrupt) pass through untouched. */
static void name_producer_error(const char *name, PyObject *obj) {
    if (!PyErr_ExceptionMatches(PyExc_Exception) || PyErr_ExceptionMatches(PyExc_MemoryError)) {
        return;
    }
    PyObject *cause = fetch_exception();
    if (cause == NULL) {
        return;
    }
    PyObject *text = PyObject_Str(cause);
    PyObject *line = NULL;
    if (text != NULL) {
        const Py_ssize_t end = PyUnicode_FindChar(text, '\n', 0, PyUnicode_GET_LENGTH(text), 1);
        line = end >= 0 ? PyUnicode_Substring(text, 0, end) : new_ref(text);
        Py_DECREF(text);
    }
    if (line == NULL) {
        PyErr_Clear();
        line = PyUnicode_FromString("?");
    }
    PyErr_Format(PyExc_ValueError, "%s: this %.200s cannot be borrowed through DLPack: %S", name,
                 Py_TYPE(obj)->tp_name, line);
    Py_XDECREF(line);
    PyObject *exc = fetch_exception();
    if (exc == NULL) {
        restore_exception(cause);
        return;
    }
    PyException_SetContext(exc, new_ref(cause));
    PyException_SetCause(exc, cause); /* steals the reference */
    restore_exception(exc);
}

/* Calls obj.__dlpack__(max_version=(1, 0)), falling back to obj.__dlpack__() on TypeError, and
 * returns the capsule (new reference) or NULL with an exception set. */
static PyObject *call_dlpack(const char *name, PyObject *obj) {
    PyObject *args[2] = {obj, tuple_max_version};
    PyObject *capsule = PyObject_VectorcallMethod(
        str_dlpack, args, 1 | PY_VECTORCALL_ARGUMENTS_OFFSET, kwnames_max_version);
    if (capsule != NULL) {
        return capsule;
    }
    if (PyErr_ExceptionMatches(PyExc_AttributeError)) {
        PyErr_Clear();
        return PyErr_Format(PyExc_TypeError,
                            "%s: expected a tensor or array (an object with __dlpack__), got %.200s",
                            name, Py_TYPE(obj)->tp_name);
    }
    if (!PyErr_ExceptionMatches(PyExc_TypeError)) {
        name_producer_error(name, obj);
        return NULL;
    }
    /* A producer older than DLPack 1.0 does not know max_version; ask for a legacy capsule. */
    PyErr_Clear();
    capsule = PyObject_CallMethodNoArgs(obj, str_dlpack);
    if (capsule == NULL) {
        name_producer_error(name, obj);
    }
    return capsule;
}

/* Formats a DLPack dtype the way numpy/torch name it ("complex64", "uint16"). */
static void dl_dtype_name(DLDataType t, char *buf, size_t size) {
    static const char *const codes[] = {"int", "uint", "float", "opaque", "bfloat", "complex",
                                        "bool"};
    const char *code = t.code < sizeof codes / sizeof codes[0] ? codes[t.code] : "code";
    if (t.lanes == 1) {
        snprintf(buf, size, "%s%u", code, (unsigned)t.bits);
    } else {
        snprintf(buf, size, "%s%ux%u", code, (unsigned)t.bits, (unsigned)t.lanes);
    }
}

static ifa_dtype map_dtype(DLDataType t) {
    if (t.lanes != 1) {
        return IFA_DTYPE_NONE;
    }
    switch (t.code) {
    case kDLFloat:
        return t.bits == 16 ? IFA_DTYPE_FLOAT16
             : t.bits == 32 ? IFA_DTYPE_FLOAT32
             : t.bits == 64 ? IFA_DTYPE_FLOAT64
                            : IFA_DTYPE_NONE;
    case kDLBfloat:
        return t.bits == 16 ? IFA_DTYPE_BFLOAT16 : IFA_DTYPE_NONE;
    case kDLInt:
        return t.bits == 8    ? IFA_DTYPE_INT8
             : t.bits == 16 ? IFA_DTYPE_INT16
             : t.bits == 32 ? IFA_DTYPE_INT32
             : t.bits == 64 ? IFA_DTYPE_INT64
                            : IFA_DTYPE_NONE;
    case kDLUInt:
        /* Producers older than kDLBool export bool as uint8, which the mask accepts as well. */
        return t.bits == 8 ? IFA_DTYPE_UINT8 : t.bits == 64 ? IFA_DTYPE_UINT64 : IFA_DTYPE_NONE;
    case kDLBool:
        return t.bits == 8 ? IFA_DTYPE_BOOL : IFA_DTYPE_NONE;
    default:
        return IFA_DTYPE_NONE;
    }
}

/* Whether a borrowed tensor is optional (zero elements mean absent) or the output. */
enum { ROLE_REQUIRED = 0, ROLE_OPTIONAL = 1, ROLE_OUTPUT = 2 };

/* Turns a DLTensor into an ifa_tensor view, checking everything the view cannot express. Returns 0,
 * or -1 with an exception naming the parameter. */
static int view_from_dl(const char *name, const DLTensor *dl, int role, int read_only,
                        ifa_tensor *view) {
    if (dl->ndim < 0 || dl->ndim > IFA_MAX_RANK) {
        PyErr_Format(PyExc_ValueError, "%s: rank %d is not supported (at most %d dimensions)",
                     name, (int)dl->ndim, IFA_MAX_RANK);
        return -1;
    }
    int empty = 0;
    for (int32_t i = 0; i < dl->ndim; ++i) {
        empty |= dl->shape[i] == 0;
    }
    /* An optional tensor with zero elements is absent (torch.empty(0) in the original's guide),
     * whatever its dtype or device. */
    if (role == ROLE_OPTIONAL && empty) {
        *view = ifa_tensor_none();
        return 0;
    }
    if (dl->device.device_type != kDLCPU) {
        PyErr_Format(PyExc_ValueError,
                     "%s: expected a CPU tensor, got one on DLPack device type %d (id %d); "
                     "move it to the CPU first",
                     name, (int)dl->device.device_type, (int)dl->device.device_id);
        return -1;
    }
    const ifa_dtype dtype = map_dtype(dl->dtype);
    if (dtype == IFA_DTYPE_NONE) {
        char buf[32];
        dl_dtype_name(dl->dtype, buf, sizeof buf);
        PyErr_Format(PyExc_TypeError,
                     "%s: dtype %s is not supported (expected float16, bfloat16, float32, "
                     "float64, int8, uint8, bool, int16, int32, int64 or uint64)",
                     name, buf);
        return -1;
    }
    if (dl->strides != NULL) {
        for (int32_t i = 0; i < dl->ndim; ++i) {
            if (dl->strides[i] < 0) {
                PyErr_Format(PyExc_ValueError,
                             "%s: negative stride %lld in dimension %d is not supported; pass a "
                             "contiguous copy",
                             name, (long long)dl->strides[i], (int)i);
                return -1;
            }
        }
    }
    if (role == ROLE_OUTPUT && read_only) {
        PyErr_Format(PyExc_ValueError, "%s: the output array is read-only", name);
        return -1;
    }
    /* The library checks shapes against each other; here only the view is built. Strides NULL
     * means C-contiguous in both DLPack and ifa_tensor_make(). */
    *view = ifa_tensor_make((const char *)dl->data + dl->byte_offset, dtype, dl->ndim, dl->shape,
                            dl->strides);
    return 0;
}

/* Borrows obj (not None) into *view, recording what must be released in *b. Returns 0, or -1 with
 * an exception set; *b is valid to release either way. */
static int borrow_tensor(const char *name, PyObject *obj, int role, borrow *b, ifa_tensor *view) {
    const DLPackExchangeAPI *api = exchange_api_for(Py_TYPE(obj));
    if (api != NULL && api->dltensor_from_py_object_no_sync != NULL) {
        /* Non-owning: the DLTensor (data, shape, strides) stays valid while obj is alive and
         * unchanged, so a reference is held until the call ends. Shape and strides are copied into
         * the view right away. */
        DLTensor dl;
        if (api->dltensor_from_py_object_no_sync(obj, &dl) != 0) {
            name_producer_error(name, obj);
            return -1;
        }
        Py_INCREF(obj);
        b->owner = obj;
        return view_from_dl(name, &dl, role, 0, view);
    }
    if (api != NULL) {
        DLManagedTensorVersioned *managed = NULL;
        if (api->managed_tensor_from_py_object_no_sync(obj, &managed) != 0) {
            name_producer_error(name, obj);
            return -1;
        }
        b->versioned = managed;
        return view_from_dl(name, &managed->dl_tensor, role,
                            (managed->flags & IFA_DLPACK_FLAG_READ_ONLY) != 0, view);
    }

    PyObject *capsule = call_dlpack(name, obj);
    if (capsule == NULL) {
        return -1;
    }
    if (PyCapsule_IsValid(capsule, IFA_DLPACK_VERSIONED_CAPSULE)) {
        DLManagedTensorVersioned *managed =
            (DLManagedTensorVersioned *)PyCapsule_GetPointer(capsule, IFA_DLPACK_VERSIONED_CAPSULE);
        /* Renaming marks the capsule consumed: from now on we, not the capsule's destructor, call
         * the deleter. If renaming fails the capsule still owns the tensor and frees it. */
        if (managed == NULL ||
            PyCapsule_SetName(capsule, IFA_DLPACK_VERSIONED_CAPSULE_USED) != 0) {
            Py_DECREF(capsule);
            return -1;
        }
        b->capsule = capsule;
        b->versioned = managed;
        if (managed->version.major > IFA_DLPACK_MAJOR_VERSION) {
            /* Only the deleter may be touched in a layout we do not know; release does that. */
            PyErr_Format(PyExc_ValueError,
                         "%s: the producer returned DLPack %u.%u, newer than this extension "
                         "reads (%u.x)",
                         name, (unsigned)managed->version.major, (unsigned)managed->version.minor,
                         IFA_DLPACK_MAJOR_VERSION);
            return -1;
        }
        return view_from_dl(name, &managed->dl_tensor, role,
                            (managed->flags & IFA_DLPACK_FLAG_READ_ONLY) != 0, view);
    }
    if (PyCapsule_IsValid(capsule, IFA_DLPACK_CAPSULE)) {
        DLManagedTensor *managed =
            (DLManagedTensor *)PyCapsule_GetPointer(capsule, IFA_DLPACK_CAPSULE);
        if (managed == NULL || PyCapsule_SetName(capsule, IFA_DLPACK_CAPSULE_USED) != 0) {
            Py_DECREF(capsule);
            return -1;
        }
        b->capsule = capsule;
        b->legacy = managed;
        /* A legacy capsule cannot say it is read-only. */
        return view_from_dl(name, &managed->dl_tensor, role, 0, view);
    }
    PyErr_Format(PyExc_TypeError, "%s: %.200s.__dlpack__() did not return a DLPack capsule", name,
                 Py_TYPE(obj)->tp_name);
    Py_DECREF(capsule);
    return -1;
}

/* ---- One call's state ------------------------------------------------------------------------ */

/* Stack room that covers the common cases (one KV tensor, a short actual_seq_lengths list) so a
 * call allocates nothing; larger inputs spill to the heap. */
#define STACK_BORROWS 24
#define STACK_KV 8
#define STACK_LENGTHS 64

typedef struct call_state {
    ifa_params params;
    ifa_tensor out;
    borrow *borrows;
    Py_ssize_t borrow_count, borrow_capacity;
    borrow borrow_stack[STACK_BORROWS];
    ifa_tensor *kv_views; /* keys in [0, n), values in [n, 2n) */
    ifa_tensor kv_stack[2 * STACK_KV];
    int64_t *lengths;
    int64_t lengths_stack[STACK_LENGTHS];
    PyObject *key_seq, *value_seq; /* snapshots of list arguments (tuples), or NULL */
} call_state;

static void call_init(call_state *s) {
    ifa_params_init(&s->params);
    s->out = ifa_tensor_none();
    s->borrows = s->borrow_stack;
    s->borrow_count = 0;
    s->borrow_capacity = STACK_BORROWS;
    s->kv_views = s->kv_stack;
    s->lengths = s->lengths_stack;
    s->key_seq = s->value_seq = NULL;
}

/* Releases everything the call borrowed or allocated. Safe with an exception pending: the exception
 * is set aside while the deleters run, so they cannot clobber or observe it. */
static void call_release(call_state *s) {
#if PY_VERSION_HEX >= 0x030C0000
    PyObject *pending = PyErr_GetRaisedException();
#else
    PyObject *type, *value, *traceback;
    PyErr_Fetch(&type, &value, &traceback);
#endif
    for (Py_ssize_t i = 0; i < s->borrow_count; ++i) {
        borrow_release(&s->borrows[i]);
    }
    if (s->borrows != s->borrow_stack) {
        PyMem_Free(s->borrows);
    }
    if (s->kv_views != s->kv_stack) {
        PyMem_Free(s->kv_views);
    }
    if (s->lengths != s->lengths_stack) {
        PyMem_Free(s->lengths);
    }
    Py_XDECREF(s->key_seq);
    Py_XDECREF(s->value_seq);
#if PY_VERSION_HEX >= 0x030C0000
    PyErr_SetRaisedException(pending);
#else
    PyErr_Restore(type, value, traceback);
#endif
}

/* A fresh, zeroed borrow record owned by the call, or NULL with MemoryError. */
static borrow *call_new_borrow(call_state *s) {
    if (s->borrow_count == s->borrow_capacity) {
        const Py_ssize_t capacity = s->borrow_capacity * 2;
        borrow *grown = PyMem_Calloc((size_t)capacity, sizeof *grown);
        if (grown == NULL) {
            PyErr_NoMemory();
            return NULL;
        }
        memcpy(grown, s->borrows, (size_t)s->borrow_count * sizeof *grown);
        if (s->borrows != s->borrow_stack) {
            PyMem_Free(s->borrows);
        }
        s->borrows = grown;
        s->borrow_capacity = capacity;
    }
    borrow *b = &s->borrows[s->borrow_count++];
    memset(b, 0, sizeof *b);
    return b;
}

/* Borrows a tensor argument. None gives the absent view for an optional tensor and a TypeError for
 * a required one. */
static int call_tensor(call_state *s, const char *name, PyObject *obj, int role, ifa_tensor *view) {
    if (obj == Py_None) {
        if (role == ROLE_OPTIONAL) {
            *view = ifa_tensor_none();
            return 0;
        }
        PyErr_Format(PyExc_TypeError, "%s: expected a tensor, got None", name);
        return -1;
    }
    borrow *b = call_new_borrow(s);
    if (b == NULL) {
        return -1;
    }
    return borrow_tensor(name, obj, role, b, view);
}

/* key_list / value_list: one tensor, or a non-empty list/tuple of tensors. Lists are snapshotted
 * into a tuple so that code run by a producer's __dlpack__ cannot change them under us. */
static int call_kv_seq(const char *name, PyObject *obj, PyObject **seq, Py_ssize_t *count) {
    if (PyList_Check(obj)) {
        *seq = PyList_AsTuple(obj);
        if (*seq == NULL) {
            return -1;
        }
    } else if (PyTuple_Check(obj)) {
        Py_INCREF(obj);
        *seq = obj;
    } else {
        *seq = NULL;
        *count = 1;
        return 0;
    }
    *count = PyTuple_GET_SIZE(*seq);
    if (*count == 0) {
        PyErr_Format(PyExc_ValueError, "%s: expected a tensor or a non-empty list of tensors, "
                                       "got an empty %s",
                     name, PyList_Check(obj) ? "list" : "tuple");
        return -1;
    }
    return 0;
}

static int call_kv(call_state *s, PyObject *key_list, PyObject *value_list) {
    Py_ssize_t key_count, value_count;
    if (call_kv_seq("key_list", key_list, &s->key_seq, &key_count) != 0 ||
        call_kv_seq("value_list", value_list, &s->value_seq, &value_count) != 0) {
        return -1;
    }
    if (key_count != value_count) {
        PyErr_Format(PyExc_ValueError,
                     "key_list and value_list: expected the same number of tensors, got %zd "
                     "keys and %zd values",
                     key_count, value_count);
        return -1;
    }
    if (key_count > INT32_MAX) {
        PyErr_Format(PyExc_ValueError, "key_list: %zd tensors is too many", key_count);
        return -1;
    }
    if (key_count > STACK_KV) {
        s->kv_views = PyMem_Calloc((size_t)(2 * key_count), sizeof *s->kv_views);
        if (s->kv_views == NULL) {
            s->kv_views = s->kv_stack;
            PyErr_NoMemory();
            return -1;
        }
    }
    for (Py_ssize_t i = 0; i < key_count; ++i) {
        char key_name[48], value_name[48];
        PyObject *key = s->key_seq != NULL ? PyTuple_GET_ITEM(s->key_seq, i) : key_list;
        PyObject *value = s->value_seq != NULL ? PyTuple_GET_ITEM(s->value_seq, i) : value_list;
        if (s->key_seq != NULL) {
            snprintf(key_name, sizeof key_name, "key_list[%zd]", i);
            snprintf(value_name, sizeof value_name, "value_list[%zd]", i);
        } else {
            snprintf(key_name, sizeof key_name, "key_list");
            snprintf(value_name, sizeof value_name, "value_list");
        }
        if (call_tensor(s, key_name, key, ROLE_REQUIRED, &s->kv_views[i]) != 0 ||
            call_tensor(s, value_name, value, ROLE_REQUIRED, &s->kv_views[key_count + i]) != 0) {
            return -1;
        }
    }
    s->params.key = s->kv_views;
    s->params.value = s->kv_views + key_count;
    s->params.kv_count = (int32_t)key_count;
    return 0;
}

/* Reads an int argument: a Python int or anything with __index__ (numpy integers), never a bool. */
static int parse_int(const char *name, PyObject *obj, int64_t *value) {
    if (PyBool_Check(obj) || !(PyLong_Check(obj) || PyIndex_Check(obj))) {
        PyErr_Format(PyExc_TypeError, "%s: expected an int, got %.200s", name,
                     Py_TYPE(obj)->tp_name);
        return -1;
    }
    int overflow = 0;
    long long v;
    if (PyLong_Check(obj)) {
        v = PyLong_AsLongLongAndOverflow(obj, &overflow);
    } else {
        PyObject *index = PyNumber_Index(obj);
        if (index == NULL) {
            return -1;
        }
        v = PyLong_AsLongLongAndOverflow(index, &overflow);
        Py_DECREF(index);
    }
    if (v == -1 && PyErr_Occurred()) {
        return -1;
    }
    if (overflow != 0) {
        PyErr_Format(PyExc_ValueError, "%s: %R does not fit in 64 bits", name, obj);
        return -1;
    }
    *value = (int64_t)v;
    return 0;
}

/* actual_seq_lengths: None, a list/tuple of ints (read into an int64 buffer here, which is what
 * converting it to an int64 array would give, without the array), or an integer tensor. */
static int call_lengths(call_state *s, PyObject *obj) {
    if (!PyList_Check(obj) && !PyTuple_Check(obj)) {
        return call_tensor(s, "actual_seq_lengths", obj, ROLE_OPTIONAL,
                           &s->params.actual_seq_lengths);
    }
    /* Snapshot a list, since reading an element through __index__ may run Python code. */
    PyObject *seq = PySequence_Tuple(obj);
    if (seq == NULL) {
        return -1;
    }
    const Py_ssize_t n = PyTuple_GET_SIZE(seq);
    if (n > STACK_LENGTHS) {
        s->lengths = PyMem_Malloc((size_t)n * sizeof *s->lengths);
        if (s->lengths == NULL) {
            s->lengths = s->lengths_stack;
            Py_DECREF(seq);
            PyErr_NoMemory();
            return -1;
        }
    }
    for (Py_ssize_t i = 0; i < n; ++i) {
        char name[48];
        snprintf(name, sizeof name, "actual_seq_lengths[%zd]", i);
        if (parse_int(name, PyTuple_GET_ITEM(seq, i), &s->lengths[i]) != 0) {
            Py_DECREF(seq);
            return -1;
        }
    }
    Py_DECREF(seq);
    /* An empty list has zero elements, so it is absent like any empty optional tensor. */
    s->params.actual_seq_lengths =
        n == 0 ? ifa_tensor_none()
               : ifa_tensor_make(s->lengths, IFA_DTYPE_INT64, 1, (const int64_t[]){(int64_t)n},
                                 NULL);
    return 0;
}

static int parse_float(const char *name, PyObject *obj, double *value) {
    if (PyFloat_CheckExact(obj)) {
        *value = PyFloat_AS_DOUBLE(obj);
        return 0;
    }
    const PyNumberMethods *nb = Py_TYPE(obj)->tp_as_number;
    if (PyBool_Check(obj) ||
        !(PyFloat_Check(obj) || PyLong_Check(obj) ||
          (nb != NULL && (nb->nb_float != NULL || nb->nb_index != NULL)))) {
        PyErr_Format(PyExc_TypeError, "%s: expected a float, got %.200s", name,
                     Py_TYPE(obj)->tp_name);
        return -1;
    }
    const double v = PyFloat_AsDouble(obj);
    if (v == -1.0 && PyErr_Occurred()) {
        return -1;
    }
    *value = v;
    return 0;
}

static int parse_layout(PyObject *obj, const char **layout) {
    if (!PyUnicode_Check(obj)) {
        PyErr_Format(PyExc_TypeError, "layout: expected a str (\"BSH\", \"BSND\" or \"BNSD\"), "
                                      "got %.200s",
                     Py_TYPE(obj)->tp_name);
        return -1;
    }
    Py_ssize_t size;
    /* The UTF-8 buffer belongs to the str, which the caller keeps alive for the whole call. */
    const char *text = PyUnicode_AsUTF8AndSize(obj, &size);
    if (text == NULL) {
        return -1;
    }
    if ((size_t)size != strlen(text)) {
        PyErr_SetString(PyExc_ValueError, "layout: contains a NUL character");
        return -1;
    }
    *layout = text;
    return 0;
}

/* Argument positions shared by run() and validate(). */
enum {
    ARG_QUERY,
    ARG_KEY_LIST,
    ARG_VALUE_LIST,
    ARG_PSE_SHIFT,
    ARG_ATTENTION_MASK,
    ARG_ACTUAL_SEQ_LENGTHS,
    ARG_DEQUANT_SCALE1,
    ARG_QUANT_SCALE1,
    ARG_DEQUANT_SCALE2,
    ARG_QUANT_SCALE2,
    ARG_QUANT_OFFSET2,
    ARG_ANTIQUANT_SCALE,
    ARG_ANTIQUANT_OFFSET,
    ARG_BLOCK_TABLE,
    ARG_KV_PADDING_SIZE,
    ARG_BLOCK_POSITION,
    ARG_NUM_HEADS,
    ARG_SCALE_VALUE,
    ARG_LAYOUT,
    ARG_KEY_NUM_HEADS,
    ARG_BLOCK_SIZE,
    ARG_INNER_PRECISE,
    ARG_ANTIQUANT_MODE,
    ARG_OUT,
    ARG_COUNT_VALIDATE = ARG_OUT,
    ARG_COUNT_RUN = ARG_OUT + 1
};

/* Fills s->params from the positional arguments (and s->out when with_out). 0, or -1 with an
 * exception set; call_release() must follow either way. */
static int call_parse(call_state *s, PyObject *const *args, Py_ssize_t nargs, int with_out) {
    const Py_ssize_t expected = with_out ? ARG_COUNT_RUN : ARG_COUNT_VALIDATE;
    if (nargs != expected) {
        PyErr_Format(PyExc_TypeError, "expected %zd positional arguments, got %zd", expected,
                     nargs);
        return -1;
    }
    ifa_params *p = &s->params;
    /* The optional tensors, in the order of the signature, with their slot in ifa_params. */
    static const struct {
        int arg;
        const char *name;
        size_t offset;
    } optional[] = {
        {ARG_PSE_SHIFT, "pse_shift", offsetof(ifa_params, pse_shift)},
        {ARG_ATTENTION_MASK, "attention_mask", offsetof(ifa_params, attention_mask)},
        {ARG_DEQUANT_SCALE1, "dequant_scale1", offsetof(ifa_params, dequant_scale1)},
        {ARG_QUANT_SCALE1, "quant_scale1", offsetof(ifa_params, quant_scale1)},
        {ARG_DEQUANT_SCALE2, "dequant_scale2", offsetof(ifa_params, dequant_scale2)},
        {ARG_QUANT_SCALE2, "quant_scale2", offsetof(ifa_params, quant_scale2)},
        {ARG_QUANT_OFFSET2, "quant_offset2", offsetof(ifa_params, quant_offset2)},
        {ARG_ANTIQUANT_SCALE, "antiquant_scale", offsetof(ifa_params, antiquant_scale)},
        {ARG_ANTIQUANT_OFFSET, "antiquant_offset", offsetof(ifa_params, antiquant_offset)},
        {ARG_BLOCK_TABLE, "block_table", offsetof(ifa_params, block_table)},
        {ARG_KV_PADDING_SIZE, "kv_padding_size", offsetof(ifa_params, kv_padding_size)},
        {ARG_BLOCK_POSITION, "block_position", offsetof(ifa_params, block_position)},
    };
    /* Scalars first: they are cheap and fail without borrowing anything. */
    if (parse_int("num_heads", args[ARG_NUM_HEADS], &p->num_heads) != 0 ||
        parse_float("scale_value", args[ARG_SCALE_VALUE], &p->scale_value) != 0 ||
        parse_layout(args[ARG_LAYOUT], &p->layout) != 0 ||
        parse_int("key_num_heads", args[ARG_KEY_NUM_HEADS], &p->key_num_heads) != 0 ||
        parse_int("block_size", args[ARG_BLOCK_SIZE], &p->block_size) != 0 ||
        parse_int("inner_precise", args[ARG_INNER_PRECISE], &p->inner_precise) != 0 ||
        parse_int("antiquant_mode", args[ARG_ANTIQUANT_MODE], &p->antiquant_mode) != 0) {
        return -1;
    }
    if (call_tensor(s, "query", args[ARG_QUERY], ROLE_REQUIRED, &p->query) != 0 ||
        call_kv(s, args[ARG_KEY_LIST], args[ARG_VALUE_LIST]) != 0 ||
        call_lengths(s, args[ARG_ACTUAL_SEQ_LENGTHS]) != 0) {
        return -1;
    }
    for (size_t i = 0; i < sizeof optional / sizeof optional[0]; ++i) {
        ifa_tensor *slot = (ifa_tensor *)((char *)p + optional[i].offset);
        if (call_tensor(s, optional[i].name, args[optional[i].arg], ROLE_OPTIONAL, slot) != 0) {
            return -1;
        }
    }
    if (with_out && call_tensor(s, "out", args[ARG_OUT], ROLE_OUTPUT, &s->out) != 0) {
        return -1;
    }
    return 0;
}

/* ---- Module functions ------------------------------------------------------------------------ */

PyDoc_STRVAR(run_doc,
             "run(query, key_list, value_list, pse_shift, attention_mask, actual_seq_lengths,\n"
             "    dequant_scale1, quant_scale1, dequant_scale2, quant_scale2, quant_offset2,\n"
             "    antiquant_scale, antiquant_offset, block_table, kv_padding_size,\n"
             "    block_position, num_heads, scale_value, layout, key_num_heads, block_size,\n"
             "    inner_precise, antiquant_mode, out) -> out\n"
             "\n"
             "Computes IFA-V5 into `out` (all 24 arguments positional). Tensors are borrowed\n"
             "through DLPack without a copy; use custom_ops.incre_flash_attention_v5 instead.");

static PyObject *run(PyObject *module, PyObject *const *args, Py_ssize_t nargs) {
    (void)module;
    call_state s;
    call_init(&s);
    if (call_parse(&s, args, nargs, 1) != 0) {
        call_release(&s);
        return NULL;
    }
    ifa_status status;
    /* The computation touches no Python object: the borrows keep every buffer alive. */
    Py_BEGIN_ALLOW_THREADS
    status = ifa_incre_flash_attention_v5(&s.params, &s.out);
    Py_END_ALLOW_THREADS
    call_release(&s);
    if (status != IFA_OK) {
        return raise_status(status);
    }
    PyObject *out = args[ARG_OUT];
    Py_INCREF(out);
    return out;
}

PyDoc_STRVAR(validate_doc,
             "validate(query, key_list, ..., inner_precise, antiquant_mode) -> None\n"
             "\n"
             "Checks the 23 arguments of run() (all but `out`) against the contract without\n"
             "computing anything; raises TypeError / ValueError like run().");

static PyObject *validate(PyObject *module, PyObject *const *args, Py_ssize_t nargs) {
    (void)module;
    call_state s;
    call_init(&s);
    if (call_parse(&s, args, nargs, 0) != 0) {
        call_release(&s);
        return NULL;
    }
    ifa_status status;
    /* Validation walks index tables (block_table, block_position) that can be large. */
    Py_BEGIN_ALLOW_THREADS
    status = ifa_validate(&s.params);
    Py_END_ALLOW_THREADS
    call_release(&s);
    if (status != IFA_OK) {
        return raise_status(status);
    }
    Py_RETURN_NONE;
}

PyDoc_STRVAR(set_num_threads_doc, "set_num_threads(n) -> None\n\nThreads used by one call (n >= 1).");

static PyObject *set_num_threads(PyObject *module, PyObject *arg) {
    (void)module;
    int64_t n;
    if (parse_int("n", arg, &n) != 0) {
        return NULL;
    }
    if (n < 1 || n > INT32_MAX) {
        PyErr_Format(PyExc_ValueError, "n: expected a thread count >= 1, got %lld", (long long)n);
        return NULL;
    }
    const ifa_status status = ifa_set_num_threads((int)n);
    if (status != IFA_OK) {
        return raise_status(status);
    }
    Py_RETURN_NONE;
}

PyDoc_STRVAR(get_num_threads_doc, "get_num_threads() -> int\n\nThreads used by one call.");

static PyObject *get_num_threads(PyObject *module, PyObject *unused) {
    (void)module;
    (void)unused;
    return PyLong_FromLong(ifa_get_num_threads());
}

PyDoc_STRVAR(isa_doc, "isa() -> str\n\nThe instruction set in use: \"ref\", \"avx2\" or \"avx512\".");

static PyObject *isa(PyObject *module, PyObject *unused) {
    (void)module;
    (void)unused;
    return PyUnicode_FromString(ifa_isa_name());
}

PyDoc_STRVAR(isa_available_doc,
             "isa_available() -> str\n\nSpace-separated ISAs this CPU can run, best last.");

static PyObject *isa_available(PyObject *module, PyObject *unused) {
    (void)module;
    (void)unused;
    return PyUnicode_FromString(ifa_isa_available());
}

PyDoc_STRVAR(set_isa_doc,
             "set_isa(name) -> None\n\nForces an instruction set (\"ref\", \"avx2\", \"avx512\")"
             " for the following calls;\nValueError if this CPU lacks it.");

static PyObject *set_isa(PyObject *module, PyObject *arg) {
    (void)module;
    if (!PyUnicode_Check(arg)) {
        return PyErr_Format(PyExc_TypeError, "name: expected a str, got %.200s",
                            Py_TYPE(arg)->tp_name);
    }
    const char *name = PyUnicode_AsUTF8(arg);
    if (name == NULL) {
        return NULL;
    }
    const ifa_status status = ifa_set_isa(name);
    if (status != IFA_OK) {
        return raise_status(status);
    }
    Py_RETURN_NONE;
}

PyDoc_STRVAR(version_doc, "version() -> str\n\nThe version of libifa.");

static PyObject *version(PyObject *module, PyObject *unused) {
    (void)module;
    (void)unused;
    return PyUnicode_FromString(ifa_version());
}

/* ---- Block selection (Quest page summaries and select_blocks) ------------------------------- */

PyDoc_STRVAR(page_summaries_doc,
             "page_summaries(key_cache, block_table, actual_seq_lengths, new_tokens,\n"
             "               key_num_heads, block_size, antiquant_scale, antiquant_offset,\n"
             "               antiquant_mode, summaries, update) -> summaries\n"
             "\n"
             "Computes (update=False) or updates (update=True, the blocks holding the last\n"
             "new_tokens tokens of each sequence) the float32 (num_blocks, KVN, 2, D) min/max key\n"
             "summaries into `summaries`. Use custom_ops.page_summaries instead.");

static PyObject *page_summaries(PyObject *module, PyObject *const *args, Py_ssize_t nargs) {
    (void)module;
    if (nargs != 11) {
        return PyErr_Format(PyExc_TypeError, "expected 11 positional arguments, got %zd", nargs);
    }
    const int update = PyObject_IsTrue(args[10]);
    if (update < 0) {
        return NULL;
    }
    ifa_summary_params sp;
    ifa_summary_params_init(&sp);
    call_state s;
    call_init(&s);
    if (parse_int("key_num_heads", args[4], &sp.key_num_heads) != 0 ||
        parse_int("block_size", args[5], &sp.block_size) != 0 ||
        parse_int("antiquant_mode", args[8], &sp.antiquant_mode) != 0 ||
        call_tensor(&s, "key_cache", args[0], ROLE_REQUIRED, &sp.key_cache) != 0 ||
        call_tensor(&s, "block_table", args[1], ROLE_REQUIRED, &sp.block_table) != 0 ||
        (args[2] != Py_None && call_lengths(&s, args[2]) != 0) ||
        call_tensor(&s, "new_tokens", args[3], ROLE_OPTIONAL, &sp.new_tokens) != 0 ||
        call_tensor(&s, "antiquant_scale", args[6], ROLE_OPTIONAL, &sp.antiquant_scale) != 0 ||
        call_tensor(&s, "antiquant_offset", args[7], ROLE_OPTIONAL, &sp.antiquant_offset) != 0 ||
        call_tensor(&s, "summaries", args[9], ROLE_OUTPUT, &s.out) != 0) {
        call_release(&s);
        return NULL;
    }
    sp.actual_seq_lengths = s.params.actual_seq_lengths;
    ifa_status status;
    Py_BEGIN_ALLOW_THREADS
    status = update ? ifa_page_summaries_update(&sp, &s.out) : ifa_page_summaries(&sp, &s.out);
    Py_END_ALLOW_THREADS
    call_release(&s);
    if (status != IFA_OK) {
        return raise_status(status);
    }
    PyObject *out = args[9];
    Py_INCREF(out);
    return out;
}

PyDoc_STRVAR(select_blocks_doc,
             "select_blocks(query, summaries, block_table, actual_seq_lengths, num_heads,\n"
             "              key_num_heads, layout, block_size, k, sink_pages, block_position,\n"
             "              lengths) -> None\n"
             "\n"
             "Writes the Quest page selection into block_position (int32 (B, KVN, P)) and the\n"
             "compact lengths into lengths. Use custom_ops.select_blocks instead.");

static PyObject *select_blocks(PyObject *module, PyObject *const *args, Py_ssize_t nargs) {
    (void)module;
    if (nargs != 12) {
        return PyErr_Format(PyExc_TypeError, "expected 12 positional arguments, got %zd", nargs);
    }
    ifa_select_params sp;
    ifa_select_params_init(&sp);
    call_state s;
    call_init(&s);
    ifa_tensor lengths_out = ifa_tensor_none();
    if (parse_int("num_heads", args[4], &sp.num_heads) != 0 ||
        parse_int("key_num_heads", args[5], &sp.key_num_heads) != 0 ||
        parse_layout(args[6], &sp.layout) != 0 ||
        parse_int("block_size", args[7], &sp.block_size) != 0 ||
        parse_int("k", args[8], &sp.k) != 0 ||
        parse_int("sink_pages", args[9], &sp.sink_pages) != 0 ||
        call_tensor(&s, "query", args[0], ROLE_REQUIRED, &sp.query) != 0 ||
        call_tensor(&s, "summaries", args[1], ROLE_REQUIRED, &sp.summaries) != 0 ||
        call_tensor(&s, "block_table", args[2], ROLE_REQUIRED, &sp.block_table) != 0 ||
        (args[3] != Py_None && call_lengths(&s, args[3]) != 0) ||
        call_tensor(&s, "block_position", args[10], ROLE_OUTPUT, &s.out) != 0 ||
        call_tensor(&s, "actual_seq_lengths (output)", args[11], ROLE_OUTPUT, &lengths_out) != 0) {
        call_release(&s);
        return NULL;
    }
    sp.actual_seq_lengths = s.params.actual_seq_lengths;
    ifa_status status;
    Py_BEGIN_ALLOW_THREADS
    status = ifa_select_blocks(&sp, &s.out, &lengths_out);
    Py_END_ALLOW_THREADS
    call_release(&s);
    if (status != IFA_OK) {
        return raise_status(status);
    }
    Py_RETURN_NONE;
}

/* METH_FASTCALL functions have another signature than PyCFunction; the cast through a function
 * pointer without parameters keeps -Wcast-function-type quiet, and CPython calls them correctly
 * by their flags. */
#define FASTCALL(fn) ((PyCFunction)(void (*)(void))(fn))

static PyMethodDef methods[] = {
    {"run", FASTCALL(run), METH_FASTCALL, run_doc},
    {"validate", FASTCALL(validate), METH_FASTCALL, validate_doc},
    {"set_num_threads", set_num_threads, METH_O, set_num_threads_doc},
    {"get_num_threads", get_num_threads, METH_NOARGS, get_num_threads_doc},
    {"isa", isa, METH_NOARGS, isa_doc},
    {"isa_available", isa_available, METH_NOARGS, isa_available_doc},
    {"set_isa", set_isa, METH_O, set_isa_doc},
    {"version", version, METH_NOARGS, version_doc},
    {"page_summaries", FASTCALL(page_summaries), METH_FASTCALL, page_summaries_doc},
    {"select_blocks", FASTCALL(select_blocks), METH_FASTCALL, select_blocks_doc},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module_def = {
    PyModuleDef_HEAD_INIT,
    "custom_ops._C",
    "C extension of custom_ops: IFA-V5 decode attention (libifa) over DLPack tensors.",
    -1, /* The type cache and interned strings are process-wide, so single-phase init. */
    methods,
    NULL,
    NULL,
    NULL,
    NULL,
};

PyMODINIT_FUNC PyInit__C(void);

PyMODINIT_FUNC PyInit__C(void) {
    str_dlpack = PyUnicode_InternFromString("__dlpack__");
    str_exchange_api = PyUnicode_InternFromString("__dlpack_c_exchange_api__");
    kwnames_max_version = Py_BuildValue("(s)", "max_version");
    tuple_max_version = Py_BuildValue("(II)", IFA_DLPACK_MAJOR_VERSION, IFA_DLPACK_MINOR_VERSION);
    if (str_dlpack == NULL || str_exchange_api == NULL || kwnames_max_version == NULL ||
        tuple_max_version == NULL) {
        return NULL;
    }
    PyObject *module = PyModule_Create(&module_def);
    if (module == NULL) {
        return NULL;
    }
    if (PyModule_AddIntConstant(module, "BLOCK_UNSELECTED", IFA_BLOCK_UNSELECTED) != 0) {
        Py_DECREF(module);
        return NULL;
    }
    return module;
}
