/*
 * cpu_features.c - CPU detection and the choice of kernel table, once per process.
 *
 * As in BLIS and XNNPACK: detect what the CPU and the OS support (CPUID for the instructions,
 * XGETBV for the register state the OS saves), then pick the best table built into this
 * library. IFA_ISA=ref|avx2|avx512 forces a table (like BLIS_ARCH_TYPE); asking for one the CPU
 * lacks is an error at the first call rather than a crash. IFA_ISA_VERBOSE=1 prints the choice
 * to stderr once.
 */
#include "cpu_features.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#if defined(__x86_64__) || defined(__i386__)
#include <cpuid.h>
#define IFA__X86 1
#endif

typedef struct isa_entry {
    const char *name;
    const ifa__kernel_table *table;
    int supported;
} isa_entry;

enum { ISA_REF, ISA_AVX2, ISA_AVX512, ISA_COUNT };

static isa_entry isas[ISA_COUNT];
static char available_names[64];
static pthread_once_t detect_once = PTHREAD_ONCE_INIT;
static _Atomic(const ifa__kernel_table *) chosen = NULL;
/* Non-empty when IFA_ISA asked for what we lack; written once by detect(), and the flag below
 * (not the text) is what ifa_set_isa() clears, so readers never race with a writer. */
static char forced_error[160];
static atomic_int forced_failed = 0;

#if defined(IFA__X86)
static unsigned long long read_xcr0(void) {
    unsigned int eax, edx;
    __asm__ volatile("xgetbv" : "=a"(eax), "=d"(edx) : "c"(0));
    return ((unsigned long long)edx << 32) | eax;
}
#endif

static void detect_cpu(int *avx2, int *avx512) {
    *avx2 = *avx512 = 0;
#if defined(IFA__X86)
    unsigned int a, b, c, d;
    if (!__get_cpuid(1, &a, &b, &c, &d)) return;
    const int osxsave = (c >> 27) & 1, fma = (c >> 12) & 1, f16c = (c >> 29) & 1, avx = (c >> 28) & 1;
    if (!osxsave || !avx) return;
    const unsigned long long xcr0 = read_xcr0();
    const int os_ymm = (xcr0 & 0x6) == 0x6, os_zmm = (xcr0 & 0xE6) == 0xE6;
    if (__get_cpuid_max(0, NULL) < 7) return;
    __cpuid_count(7, 0, a, b, c, d);
    const int has_avx2 = (b >> 5) & 1;
    const int has_f = (b >> 16) & 1, has_dq = (b >> 17) & 1, has_bw = (b >> 30) & 1, has_vl = (b >> 31) & 1;
    const int has_vnni = (c >> 11) & 1;
    __cpuid_count(7, 1, a, b, c, d);
    const int has_bf16 = (a >> 5) & 1;
    *avx2 = os_ymm && has_avx2 && fma && f16c;
    *avx512 = *avx2 && os_zmm && has_f && has_dq && has_bw && has_vl && has_vnni && has_bf16;
#if defined(IFA_AVX512_EMULATED)
    /* A test build (CMake IFA_EMULATE_AVX512): the AVX-512 table is SIMDe code on AVX2. */
    *avx512 = *avx2;
#endif
#endif
}

#ifdef IFA_EXPERIMENT_KERNELS
/* Kernel experiment builds (CMakeLists.txt): the second copy of each ISA table, for ifa__experiment = 1. */
#if defined(IFA_HAVE_AVX2_KERNELS)
extern const ifa__kernel_table ifa__kernels_avx2_form1;
#endif
#if defined(IFA_HAVE_AVX512_KERNELS)
extern const ifa__kernel_table ifa__kernels_avx512_form1;
#endif

const ifa__kernel_table *ifa__experiment_table(const ifa__kernel_table *kt) {
    if (!ifa__experiment) return kt;
#if defined(IFA_HAVE_AVX2_KERNELS)
    if (kt == &ifa__kernels_avx2) return &ifa__kernels_avx2_form1;
#endif
#if defined(IFA_HAVE_AVX512_KERNELS)
    if (kt == &ifa__kernels_avx512) return &ifa__kernels_avx512_form1;
#endif
    return kt;
}
#endif

static void detect(void) {
    int avx2, avx512;
    detect_cpu(&avx2, &avx512);
    isas[ISA_REF] = (isa_entry){"ref", &ifa__kernels_ref, 1};
    isas[ISA_AVX2] = (isa_entry){"avx2", NULL, 0};
    isas[ISA_AVX512] = (isa_entry){"avx512", NULL, 0};
#if defined(IFA_HAVE_AVX2_KERNELS)
    isas[ISA_AVX2].table = &ifa__kernels_avx2;
    isas[ISA_AVX2].supported = avx2;
#endif
#if defined(IFA_HAVE_AVX512_KERNELS)
    isas[ISA_AVX512].table = &ifa__kernels_avx512;
    isas[ISA_AVX512].supported = avx512;
#endif
    (void)avx2;
    (void)avx512;
    available_names[0] = '\0';
    const ifa__kernel_table *best = NULL;
    for (int i = 0; i < ISA_COUNT; i++) {
        if (!isas[i].supported) continue;
        if (available_names[0]) strcat(available_names, " ");
        strcat(available_names, isas[i].name);
        best = isas[i].table;
    }
    const char *env = getenv("IFA_ISA");
    if (env != NULL && *env != '\0') {
        int found = 0;
        for (int i = 0; i < ISA_COUNT; i++) {
            if (strcmp(env, isas[i].name) != 0) continue;
            found = 1;
            if (isas[i].supported)
                best = isas[i].table;
            else
                snprintf(forced_error, sizeof forced_error,
                         "IFA_ISA=%.16s: this CPU or build lacks it (available: %s)", env, available_names);
        }
        if (!found)
            snprintf(forced_error, sizeof forced_error,
                     "IFA_ISA=%.16s: unknown ISA (expected ref, avx2 or avx512; available: %s)", env,
                     available_names);
    }
    atomic_store(&chosen, best);
    atomic_store(&forced_failed, forced_error[0] != '\0');
    const char *verbose = getenv("IFA_ISA_VERBOSE");
    if (verbose != NULL && strcmp(verbose, "1") == 0)
        fprintf(stderr, "ifa: available ISAs: %s; chosen: %s%s%s\n", available_names, best->isa,
                forced_error[0] ? "; " : "", forced_error);
}

ifa_status ifa__select_kernels(const ifa__kernel_table **table) {
    pthread_once(&detect_once, detect);
    RETURN_ERROR_IF(atomic_load(&forced_failed), IFA_ERR_UNSUPPORTED, "%s", forced_error);
    *table = atomic_load(&chosen);
    return IFA_OK;
}

const ifa__kernel_table *ifa__kernels(void) {
    pthread_once(&detect_once, detect);
    return atomic_load(&chosen);
}

const char *ifa_isa_name(void) { return ifa__kernels()->isa; }

const char *ifa_isa_available(void) {
    pthread_once(&detect_once, detect);
    return available_names;
}

ifa_status ifa_set_isa(const char *name) {
    pthread_once(&detect_once, detect);
    RETURN_ERROR_IF(name == NULL, IFA_ERR_NULL_POINTER, "isa: name is NULL");
    for (int i = 0; i < ISA_COUNT; i++) {
        if (strcmp(name, isas[i].name) != 0) continue;
        RETURN_ERROR_IF(!isas[i].supported, IFA_ERR_UNSUPPORTED,
                        "isa: %.16s is not available on this CPU or build (available: %s)", name,
                        available_names);
        atomic_store(&chosen, isas[i].table);
        atomic_store(&forced_failed, 0);
        ifa__clear_error();
        return IFA_OK;
    }
    return ifa__fail(IFA_ERR_INVALID_ARGUMENT, "isa: unknown name \"%.16s\" (expected ref, avx2 or avx512)", name);
}
