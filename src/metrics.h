/*
 * metrics.h
 *		Counters and histograms the hapg worker keeps for /metrics.
 *
 * Plain values only (the struct lives in shared memory, written by the
 * main worker and copied by the HTTP worker); no PostgreSQL headers, so the
 * unit tests build it as is.
 */
#ifndef HAPG_METRICS_H
#define HAPG_METRICS_H

#include <stdbool.h>
#include <stdint.h>

#define HAPG_HIST_MAX_BUCKETS 16
#define HAPG_API_CODES 48		/* distinct (verb, status) pairs kept */

/* Kubernetes API verbs counted apart; anything else is "OTHER". */
typedef enum HapgApiVerb
{
	HAPG_VERB_GET = 0,
	HAPG_VERB_PUT,
	HAPG_VERB_POST,
	HAPG_VERB_PATCH,
	HAPG_VERB_DELETE,
	HAPG_VERB_OTHER,
	HAPG_VERB_COUNT
} HapgApiVerb;

/* A Prometheus histogram: cumulative counts are made when rendering. */
typedef struct HapgHistogram
{
	uint64_t	buckets[HAPG_HIST_MAX_BUCKETS];	/* per bucket, not cumulative */
	uint64_t	count;
	double		sum;
} HapgHistogram;

typedef struct HapgApiCount
{
	uint8_t		verb;			/* HapgApiVerb */
	int16_t		code;			/* HTTP status; 0: no response (transport error) */
	uint64_t	n;
} HapgApiCount;

typedef struct HapgMetrics
{
	int			napi;
	HapgApiCount api[HAPG_API_CODES];
	uint64_t	api_other_codes;	/* requests whose pair did not fit in api[] */
	HapgHistogram api_seconds;
	HapgHistogram loop_seconds;
	uint64_t	fencing_events;
	uint64_t	elections_won;
	uint64_t	elections_lost;
	uint64_t	watch_reconnects;
	double		last_api_success_unix;	/* 0: never */
} HapgMetrics;

/* Bucket upper bounds (seconds) of the two histograms. */
extern const double hapg_api_seconds_bounds[];
extern const int hapg_api_seconds_nbounds;
extern const double hapg_loop_seconds_bounds[];
extern const int hapg_loop_seconds_nbounds;

extern HapgApiVerb hapg_api_verb(const char *method);
extern const char *hapg_api_verb_name(HapgApiVerb verb);
extern void hapg_histogram_observe(HapgHistogram *h, const double *bounds,
								   int nbounds, double value);
extern int	hapg_election_settled(bool *standing, const char *term, const char *rv,
								  const char *holder, const char *me);
extern void hapg_metrics_note_answer(HapgMetrics *m, double now_unix);
extern void hapg_metrics_count_api(HapgMetrics *m, HapgApiVerb verb, long code,
								   double seconds, double now_unix);

#endif							/* HAPG_METRICS_H */
