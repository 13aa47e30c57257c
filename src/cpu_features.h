/*
 * cpu_features.h - which kernel table this process uses, decided once.
 */
#ifndef IFA_CPU_FEATURES_H
#define IFA_CPU_FEATURES_H

#include "common.h"
#include "kernels/kernels.h"

/* The chosen table, or an error (IFA_ISA names an ISA this CPU or build lacks). */
ifa_status ifa__select_kernels(const ifa__kernel_table **table);

#ifdef IFA_EXPERIMENT_KERNELS
/* Kernel experiment builds: kt, or its copy compiled with IFA_EXPERIMENT_FORM=1 when ifa__experiment is 1
 * (common.h, CMakeLists.txt). */
const ifa__kernel_table *ifa__experiment_table(const ifa__kernel_table *kt);
#endif

#endif /* IFA_CPU_FEATURES_H */
