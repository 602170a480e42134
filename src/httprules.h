/*
 * httprules.h
 *		What hapg's HTTP endpoint answers: which status for which endpoint,
 *		the JSON bodies, the /metrics text.  Pure functions of a snapshot
 *		(HapgHttpView) the HTTP worker copies out of shared memory; no
 *		PostgreSQL headers, so the unit tests build them as they are.
 */
#ifndef HAPG_HTTPRULES_H
#define HAPG_HTTPRULES_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "lease.h"
#include "metrics.h"

/* A growable, NUL-terminated string on malloc (freed with free()). */
typedef struct HapgBuf
{
	char	   *data;
	size_t		len;
	size_t		cap;
	bool		failed;			/* out of memory: data is incomplete */
} HapgBuf;

extern void hapg_buf_printf(HapgBuf *b, const char *fmt,...)
			__attribute__((format(printf, 2, 3)));
extern void hapg_buf_json_string(HapgBuf *b, const char *s);

/* One member as hapg_members shows it. */
typedef struct HapgHttpMember
{
	char		name[HAPG_NAME_LEN];
	char		role[HAPG_WORD_LEN];
	char		state[HAPG_WORD_LEN];
	char		connect_address[HAPG_ADDR_LEN];
	char		pod_role_label[HAPG_WORD_LEN];
	int			timeline;
	uint64_t	lsn;			/* 0: unknown */
	bool		is_leader;
	double		last_seen_unix; /* 0: never */
	bool		has_settings;
	bool		nofailover;
	int			priority;
} HapgHttpMember;

/* Everything an answer depends on, copied under the locks at one moment. */
typedef struct HapgHttpView
{
	double		now_unix;
	bool		published;		/* the main worker has published at least once */
	bool		configured;
	char		cluster[HAPG_NAME_LEN];
	char		member[HAPG_NAME_LEN];
	HapgRole	role;
	char		state[HAPG_WORD_LEN];	/* primary, streaming, starting, ... */
	char		leader[HAPG_NAME_LEN];	/* Lease holder; "" if none */
	bool		in_recovery;
	bool		streaming;		/* WAL receiver streaming */
	bool		read_only;		/* a new session's transaction_read_only */
	int			timeline;
	uint64_t	lsn;
	uint64_t	write_lsn;		/* primary: written; standby: received and written */
	uint64_t	receive_lsn;	/* standby: flushed by the WAL receiver */
	uint64_t	replay_lsn;		/* standby: replayed */
	bool		replay_paused;	/* standby: pg_wal_replay_pause() in force */
	uint64_t	leader_lsn;		/* 0: unknown */
	bool		paused;
	bool		api_ok;
	char		last_error[HAPG_MSG_LEN];
	int			lease_transitions;
	bool		lease_known;	/* a holder and an expiry are known */
	double		lease_left_s;	/* time left on the Lease (>= 0) */
	bool		failsafe_active;	/* writable past it on a failsafe proof */
	double		info_age_s;		/* since the main worker's last report; -1: never */
	int64_t		loop_count;
	int			worker_pid;		/* 0: none */
	double		uptime_s;		/* since the postmaster started */
	int			loop_wait_s;
	bool		data_dir_ok;	/* PGDATA still holds a data directory */
	bool		pending_restart;
	bool		nofailover;
	int			failover_priority;
	double		postmaster_start_unix;
	char		pending_switchover[HAPG_MSG_LEN];	/* "" if none */
	int			nmembers;
	HapgHttpMember members[HAPG_MAX_MEMBERS];
	int			nhistory;
	HapgHistoryEntry history[HAPG_MAX_HISTORY];
	HapgMetrics metrics;
} HapgHttpView;

typedef enum HapgEndpoint
{
	HAPG_EP_UNKNOWN = 0,
	HAPG_EP_STATUS,				/* / and /patroni: the member, always 200 */
	HAPG_EP_PRIMARY,			/* /primary, /leader, /master */
	HAPG_EP_REPLICA,
	HAPG_EP_READ_WRITE,
	HAPG_EP_READ_ONLY,
	HAPG_EP_HEALTH,
	HAPG_EP_LIVENESS,
	HAPG_EP_READINESS,
	HAPG_EP_CLUSTER,
	HAPG_EP_HISTORY,
	HAPG_EP_METRICS
} HapgEndpoint;

/* The query parameters the health endpoints understand. */
typedef struct HapgHttpQuery
{
	bool		has_lag;
	uint64_t	max_lag;		/* bytes */
	bool		bad_lag;		/* ?lag= could not be read */
	double		stall_s;		/* ?stall=: liveness limit in seconds; 0: the default */
	bool		bad_stall;
} HapgHttpQuery;

/* One answer: status, content type and body (malloc'd). */
typedef struct HapgHttpAnswer
{
	int			status;
	const char *content_type;
	HapgBuf		body;
} HapgHttpAnswer;

extern HapgEndpoint hapg_http_endpoint(const char *path);
extern bool hapg_parse_lag(const char *s, uint64_t *bytes);
extern bool hapg_parse_seconds(const char *s, double *seconds);
extern bool hapg_http_wants_openmetrics(const char *accept);

extern bool hapg_is_primary(const HapgHttpView *v, char *why, size_t whylen);
extern bool hapg_is_replica(const HapgHttpView *v, const HapgHttpQuery *q,
							char *why, size_t whylen);
extern bool hapg_is_live(const HapgHttpView *v, const HapgHttpQuery *q,
						 char *why, size_t whylen);
extern bool hapg_is_ready(const HapgHttpView *v, char *why, size_t whylen);
extern bool hapg_is_healthy(const HapgHttpView *v, char *why, size_t whylen);
extern double hapg_stall_limit_s(int loop_wait_s);

extern void hapg_http_answer(HapgEndpoint ep, const HapgHttpView *v,
							 const HapgHttpQuery *q, bool openmetrics,
							 HapgHttpAnswer *out);
extern void hapg_render_metrics(const HapgHttpView *v, bool openmetrics, HapgBuf *b);

#endif							/* HAPG_HTTPRULES_H */
