/*
 * http.h
 *		hapg's HTTP endpoint (health checks, /metrics) and the counters the
 *		main worker keeps for it (http.c).
 */
#ifndef HAPG_HTTP_H
#define HAPG_HTTP_H

#include "postgres.h"

#include "metrics.h"

/* Events counted for /metrics. */
typedef enum HapgMetricEvent
{
	HAPG_EV_FENCE,
	HAPG_EV_ELECTION_WON,
	HAPG_EV_ELECTION_LOST,
	HAPG_EV_WATCH_RECONNECT
} HapgMetricEvent;

/* _PG_init: settings, shared memory, and the worker when hapg.http_port != 0. */
extern void hapg_http_init(const char *library_name);

/* Counters, for the main worker (cheap: a spinlock and a few additions). */
extern void hapg_metrics_api_request(const char *method, long status, double seconds);
extern void hapg_metrics_watch_event(void);
extern void hapg_metrics_loop(double seconds);
extern void hapg_metrics_event(HapgMetricEvent ev);

extern PGDLLEXPORT void hapg_http_main(Datum arg);

#endif							/* HAPG_HTTP_H */
