/*
 * watchframe.h
 *		The framing of a Kubernetes watch stream: one JSON event per line.
 *		Pure C without PostgreSQL, so a fuzzer can drive it directly.
 */
#ifndef HAPG_WATCHFRAME_H
#define HAPG_WATCHFRAME_H

#include <stddef.h>

typedef void (*HapgLineFn) (void *arg, const char *line, size_t len);

extern int	hapg_watch_drain(char *data, size_t *len, HapgLineFn fn, void *arg);

#endif							/* HAPG_WATCHFRAME_H */
