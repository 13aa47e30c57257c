/*
 * plan.h - how one validated call is cut into tiles and run on the threads.
 */
#ifndef IFA_PLAN_H
#define IFA_PLAN_H

#include "kernels/kernels.h"
#include "problem.h"

/* Computes the whole problem into its output view. Allocates the per-call states and scratch
 * (sized by B, N, D and the thread count, never by the KV length) before writing anything. */
ifa_status ifa__run(const ifa__problem *pb, const ifa__kernel_table *kt, int num_threads);

#endif /* IFA_PLAN_H */
