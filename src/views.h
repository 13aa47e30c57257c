/*
 * views.h - one borrowed tensor view on its own: present or absent, element count, shape text,
 * and the check every entry point runs on every view before using it (views.c).
 */
#ifndef IFA_VIEWS_H
#define IFA_VIEWS_H

#include <stddef.h>
#include <stdint.h>

#include "common.h"

/* An optional view is absent when its dtype is NONE or it has zero elements. */
int ifa__present(const ifa_tensor *t);

/* Element count of a view already accepted by ifa__check_view (no overflow then). */
int64_t ifa__numel(const ifa_tensor *t);

/* "(2, 8, 128)" into buf; returns buf. */
const char *ifa__shape_str(const ifa_tensor *t, char *buf, size_t size);
#define IFA__SHAPE(t) ifa__shape_str((t), (char[96]){0}, 96)

/* Rank, dtype code, sizes, strides and byte extent of one view; the message names `name`. */
ifa_status ifa__check_view(const ifa_tensor *t, const char *name);

#endif /* IFA_VIEWS_H */
