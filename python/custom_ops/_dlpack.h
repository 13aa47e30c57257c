/*
 * _dlpack.h - our own declaration of the DLPack ABI (https://dmlc.github.io/dlpack/latest/).
 *
 * DLPack is a small, stable C ABI through which array libraries lend a tensor to each other without
 * copying. The extension only consumes tensors, so this header declares just what a consumer needs:
 * the plain structs, the versioned managed tensor of DLPack 1.x (which adds a read-only flag), and
 * the optional C exchange table that a producer may publish on its type so that a consumer can
 * borrow a tensor with one C call instead of a Python-level __dlpack__() call. It is written from
 * the specification rather than copied, and prefixed where it could collide with a real dlpack.h.
 *
 * Layouts (every field in declaration order, natural C alignment, as the ABI defines them):
 *
 *   DLTensor                 DLManagedTensor (legacy)     DLManagedTensorVersioned (1.x)
 *   +--------------------+   +----------------------+     +--------------------------+
 *   | void *data         |   | DLTensor dl_tensor   |     | DLPackVersion version    |
 *   | DLDevice device    |   | void *manager_ctx    |     | void *manager_ctx        |
 *   | int32_t ndim       |   | void (*deleter)(..)  |     | void (*deleter)(..)      |
 *   | DLDataType dtype   |   +----------------------+     | uint64_t flags           |
 *   | int64_t *shape     |                                | DLTensor dl_tensor       |
 *   | int64_t *strides   |  (NULL: C-contiguous)          +--------------------------+
 *   | uint64_t byte_offset|
 *   +--------------------+
 */
#ifndef CUSTOM_OPS_DLPACK_H
#define CUSTOM_OPS_DLPACK_H

#include <stdint.h>

/* The newest major version whose layout this header describes. A versioned tensor with a larger
 * major version must not be read (the layout after `deleter` may differ); only its deleter may be
 * called. */
#define IFA_DLPACK_MAJOR_VERSION 1u
#define IFA_DLPACK_MINOR_VERSION 0u

/* Bits of DLManagedTensorVersioned.flags. */
#define IFA_DLPACK_FLAG_READ_ONLY ((uint64_t)1 << 0) /* the consumer must not write the data */
#define IFA_DLPACK_FLAG_IS_COPIED ((uint64_t)1 << 1) /* the producer made a copy for us */

/* Capsule names of the Python protocol: a producer hands out an unused capsule, and the consumer
 * renames it to the used name once it owns the tensor, so that the capsule's own destructor no
 * longer calls the deleter. */
#define IFA_DLPACK_CAPSULE "dltensor"
#define IFA_DLPACK_CAPSULE_USED "used_dltensor"
#define IFA_DLPACK_VERSIONED_CAPSULE "dltensor_versioned"
#define IFA_DLPACK_VERSIONED_CAPSULE_USED "used_dltensor_versioned"
#define IFA_DLPACK_EXCHANGE_API_CAPSULE "dlpack_exchange_api"

typedef struct DLPackVersion {
    uint32_t major;
    uint32_t minor;
} DLPackVersion;

/* Device types are a C enum in the specification; int32_t has the same size and keeps the values
 * we do not name representable. */
enum {
    kDLCPU = 1,
    kDLCUDA = 2,
    kDLCUDAHost = 3,
};

typedef struct DLDevice {
    int32_t device_type;
    int32_t device_id;
} DLDevice;

/* Type codes of DLDataType.code. */
enum {
    kDLInt = 0,
    kDLUInt = 1,
    kDLFloat = 2,
    kDLOpaqueHandle = 3,
    kDLBfloat = 4,
    kDLComplex = 5,
    kDLBool = 6,
};

typedef struct DLDataType {
    uint8_t code;   /* one of the type codes above */
    uint8_t bits;   /* bits per lane: 8, 16, 32, 64 */
    uint16_t lanes; /* 1 for every scalar type we accept */
} DLDataType;

typedef struct DLTensor {
    void *data; /* base pointer; the first element lives at (char *)data + byte_offset */
    DLDevice device;
    int32_t ndim;
    DLDataType dtype;
    int64_t *shape;   /* ndim extents */
    int64_t *strides; /* ndim strides counted in elements, or NULL for C-contiguous */
    uint64_t byte_offset;
} DLTensor;

typedef struct DLManagedTensor {
    DLTensor dl_tensor;
    void *manager_ctx;
    void (*deleter)(struct DLManagedTensor *self);
} DLManagedTensor;

typedef struct DLManagedTensorVersioned {
    DLPackVersion version;
    void *manager_ctx;
    void (*deleter)(struct DLManagedTensorVersioned *self);
    uint64_t flags;
    DLTensor dl_tensor;
} DLManagedTensorVersioned;

/*
 * The C exchange table (DLPack 1.2+). A producer publishes it as the attribute
 * __dlpack_c_exchange_api__ of its tensor type, either as a capsule named "dlpack_exchange_api" or
 * as an integer holding the address. The table lives as long as the process. Only the header is
 * guaranteed stable across versions; we read the entries of major version 1.
 */
typedef struct DLPackExchangeAPIHeader {
    DLPackVersion version;
    struct DLPackExchangeAPIHeader *prev_api;
} DLPackExchangeAPIHeader;

typedef struct DLPackExchangeAPI {
    DLPackExchangeAPIHeader header;
    /* Allocates a new tensor like a prototype; unused by a pure consumer. */
    int (*managed_tensor_allocator)(DLTensor *prototype, DLManagedTensorVersioned **out,
                                    void *error_ctx,
                                    void (*set_error)(void *error_ctx, const char *kind,
                                                      const char *message));
    /* Exports py_object as an owning versioned tensor (call its deleter when done). 0 on success,
     * -1 with a Python exception set on failure. */
    int (*managed_tensor_from_py_object_no_sync)(void *py_object, DLManagedTensorVersioned **out);
    /* Wraps an owning versioned tensor into a Python object; unused by us. */
    int (*managed_tensor_to_py_object_no_sync)(DLManagedTensorVersioned *tensor,
                                               void **out_py_object);
    /* Fills a caller-provided DLTensor that stays valid only while py_object is alive and unchanged
     * (non-owning, no allocation). May be NULL. 0 on success, -1 with a Python exception set. */
    int (*dltensor_from_py_object_no_sync)(void *py_object, DLTensor *out);
    /* The producer's current stream for a device; CPU tensors have none. */
    int (*current_work_stream)(int32_t device_type, int32_t device_id, void **out_current_stream);
} DLPackExchangeAPI;

#endif /* CUSTOM_OPS_DLPACK_H */
