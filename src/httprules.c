/*
 * httprules.c
 *		The rules of hapg's HTTP endpoint, as pure functions of a snapshot:
 *		which status each health endpoint answers (Patroni's semantics: 200
 *		when true, 503 when not), the JSON bodies and the /metrics text.
 *
 * The readiness and liveness rules here are the only copies: the HTTP
 * worker answers /readiness and /liveness with them, and the kubelet's
 * probes (kubernetes/hapg-probe) ask those endpoints.
 */
#include "httprules.h"

#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#define BUF_MAX (4 * 1024 * 1024)	/* no answer grows beyond this */

/* Append formatted text; on failure the buffer is marked and left as is. */
void
hapg_buf_printf(HapgBuf *b, const char *fmt,...)
{
	va_list		ap;
	int			n;

	if (b->failed)
		return;
	for (;;)
	{
		size_t		avail = b->cap - b->len;

		if (b->data != NULL)
		{
			va_start(ap, fmt);
			n = vsnprintf(b->data + b->len, avail, fmt, ap);
			va_end(ap);
			if (n < 0)
			{
				b->failed = true;
				return;
			}
			if ((size_t) n < avail)
			{
				b->len += n;
				return;
			}
		}
		else
			n = 256;
		{
			size_t		cap = b->cap ? b->cap * 2 : 1024;
			char	   *p;

			while (cap < b->len + (size_t) n + 1)
				cap *= 2;
			if (cap > BUF_MAX || (p = realloc(b->data, cap)) == NULL)
			{
				b->failed = true;
				return;
			}
			if (b->data == NULL)
				p[0] = '\0';
			b->data = p;
			b->cap = cap;
		}
	}
}

/* Append a JSON string literal (quotes included). */
void
hapg_buf_json_string(HapgBuf *b, const char *s)
{
	const unsigned char *p;

	hapg_buf_printf(b, "\"");
	for (p = (const unsigned char *) (s ? s : ""); *p; p++)
	{
		if (*p == '"' || *p == '\\')
			hapg_buf_printf(b, "\\%c", *p);
		else if (*p == '\n')
			hapg_buf_printf(b, "\\n");
		else if (*p < 0x20)
			hapg_buf_printf(b, "\\u%04x", *p);
		else
			hapg_buf_printf(b, "%c", *p);
	}
	hapg_buf_printf(b, "\"");
}

/* Prometheus label values escape backslash, quote and newline. */
static void
buf_label_value(HapgBuf *b, const char *s)
{
	const char *p;

	for (p = s ? s : ""; *p; p++)
	{
		if (*p == '"' || *p == '\\')
			hapg_buf_printf(b, "\\%c", *p);
		else if (*p == '\n')
			hapg_buf_printf(b, "\\n");
		else
			hapg_buf_printf(b, "%c", *p);
	}
}

/* Map a request path (no query string) to its endpoint; Patroni's aliases too. */
HapgEndpoint
hapg_http_endpoint(const char *path)
{
	static const struct
	{
		const char *path;
		HapgEndpoint ep;
	}			map[] = {
		{"/", HAPG_EP_STATUS}, {"/patroni", HAPG_EP_STATUS},
		{"/primary", HAPG_EP_PRIMARY}, {"/leader", HAPG_EP_PRIMARY},
		{"/master", HAPG_EP_PRIMARY}, {"/replica", HAPG_EP_REPLICA},
		{"/read-write", HAPG_EP_READ_WRITE}, {"/read-only", HAPG_EP_READ_ONLY},
		{"/health", HAPG_EP_HEALTH}, {"/liveness", HAPG_EP_LIVENESS},
		{"/readiness", HAPG_EP_READINESS}, {"/cluster", HAPG_EP_CLUSTER},
		{"/history", HAPG_EP_HISTORY}, {"/metrics", HAPG_EP_METRICS},
	};
	size_t		len;
	size_t		i;

	if (path == NULL)
		return HAPG_EP_UNKNOWN;
	len = strlen(path);
	/* one trailing slash is the same endpoint */
	if (len > 1 && path[len - 1] == '/')
		len--;
	for (i = 0; i < sizeof(map) / sizeof(map[0]); i++)
		if (strlen(map[i].path) == len && strncmp(map[i].path, path, len) == 0)
			return map[i].ep;
	return HAPG_EP_UNKNOWN;
}

/*
 * ?lag= as Patroni reads it: a number of bytes, or a number with a unit
 * (B, kB, MB, GB, TB, case-insensitive, powers of 1024, as PostgreSQL's
 * memory units).
 */
bool
hapg_parse_lag(const char *s, uint64_t *bytes)
{
	static const struct
	{
		const char *unit;
		uint64_t	mult;
	}			units[] = {
		{"", 1}, {"b", 1}, {"kb", 1024ULL}, {"mb", 1024ULL * 1024},
		{"gb", 1024ULL * 1024 * 1024}, {"tb", 1024ULL * 1024 * 1024 * 1024},
	};
	char	   *end;
	unsigned long long n;
	size_t		i;

	if (s == NULL || *s < '0' || *s > '9' || strlen(s) > 32)
		return false;
	n = strtoull(s, &end, 10);
	while (*end == ' ')
		end++;
	for (i = 0; i < sizeof(units) / sizeof(units[0]); i++)
		if (strcasecmp(end, units[i].unit) == 0)
		{
			if (n > UINT64_MAX / units[i].mult)
				return false;
			*bytes = (uint64_t) n * units[i].mult;
			return true;
		}
	return false;
}

/* ?stall=: a positive number of seconds, at most a day. */
bool
hapg_parse_seconds(const char *s, double *seconds)
{
	char	   *end;
	double		v;

	if (s == NULL || *s < '0' || *s > '9' || strlen(s) > 16)
		return false;
	v = strtod(s, &end);
	if (*end != '\0' || !(v > 0) || v > 86400)
		return false;
	*seconds = v;
	return true;
}

/* Prometheus asks for OpenMetrics in its Accept header; others get text 0.0.4. */
bool
hapg_http_wants_openmetrics(const char *accept)
{
	return accept != NULL && strstr(accept, "application/openmetrics-text") != NULL;
}

/* Bytes a position is behind the leader's; -1 when either is unknown. */
static int64_t
lag_of(const HapgHttpView *v, uint64_t lsn)
{
	if (v->leader_lsn == 0 || lsn == 0)
		return -1;
	return v->leader_lsn > lsn ? (int64_t) (v->leader_lsn - lsn) : 0;
}

/*
 * The primary: a server out of recovery that holds a valid Lease (or is
 * writable past it in failsafe mode: the API is down, replication proves
 * nobody else can take over) and takes writes (a new session is not
 * read-only).  Readiness of a primary, and /primary, /leader, /master,
 * /read-write.
 */
bool
hapg_is_primary(const HapgHttpView *v, char *why, size_t whylen)
{
	bool		valid = v->lease_known && v->lease_left_s > 0;

	if (v->in_recovery)
	{
		snprintf(why, whylen, "a standby, not the primary");
		return false;
	}
	if (v->role == HAPG_ROLE_LEADER && (valid || v->failsafe_active) && !v->read_only)
	{
		snprintf(why, whylen, "%s", valid ? "the leader, accepting writes" :
				 "the leader, accepting writes in failsafe mode (its Lease cannot be renewed)");
		return true;
	}
	snprintf(why, whylen, "a primary without a valid Lease (hapg role %s, lease valid %s, transaction_read_only %s)",
			 hapg_role_name(v->role),
			 v->lease_known && v->lease_left_s > 0 ? "true" : "false",
			 v->read_only ? "on" : "off");
	return false;
}

/*
 * A replica: a standby streaming from the leader, and with ?lag= no
 * further behind the leader's last known position than that.
 */
bool
hapg_is_replica(const HapgHttpView *v, const HapgHttpQuery *q, char *why, size_t whylen)
{
	int64_t		lag;

	if (!v->in_recovery)
	{
		snprintf(why, whylen, "not a standby");
		return false;
	}
	if (!v->streaming)
	{
		snprintf(why, whylen, "a standby that is not streaming (state %s, leader %s)",
				 v->state[0] ? v->state : "?", v->leader[0] ? v->leader : "none");
		return false;
	}
	if (q != NULL && q->has_lag)
	{
		lag = lag_of(v, v->lsn);
		if (lag < 0)
		{
			snprintf(why, whylen, "a streaming standby, but the leader's position is unknown: lag cannot be judged");
			return false;
		}
		if ((uint64_t) lag > q->max_lag)
		{
			snprintf(why, whylen, "a streaming standby %lld bytes behind the leader (more than %llu)",
					 (long long) lag, (unsigned long long) q->max_lag);
			return false;
		}
	}
	snprintf(why, whylen, "a replica streaming from %s", v->leader[0] ? v->leader : "the leader");
	return true;
}

/* The liveness limit: max(60 s, 3 loop_wait). */
double
hapg_stall_limit_s(int loop_wait_s)
{
	return fmax(60.0, 3.0 * loop_wait_s);
}

/*
 * Liveness: restart the container only when the data directory is gone or
 * hapg's loop has stalled (no report for max(60 s, 3 loop_wait), or ?stall=
 * seconds as the probe's HAPG_PROBE_STALL asks), or the
 * worker has not reported that long after the server started.  A server
 * that is only starting or recovering is alive: a restart would interrupt it.
 */
bool
hapg_is_live(const HapgHttpView *v, const HapgHttpQuery *q, char *why, size_t whylen)
{
	double		limit = q && q->stall_s > 0 ? q->stall_s : hapg_stall_limit_s(v->loop_wait_s);

	if (!v->data_dir_ok)
	{
		snprintf(why, whylen, "the data directory is gone: restarting the container lets the entrypoint clone the leader");
		return false;
	}
	if (v->worker_pid == 0 || v->info_age_s < 0)
	{
		if (v->uptime_s < limit)
		{
			snprintf(why, whylen, "the hapg worker has not reported yet (server up %.0f s)", v->uptime_s);
			return true;
		}
		snprintf(why, whylen, "the hapg worker has not reported for the %.0f s the server has been up",
				 v->uptime_s);
		return false;
	}
	if (v->info_age_s > limit)
	{
		snprintf(why, whylen, "hapg's loop has stalled: last report %.0f s ago (limit %.0f s), worker pid %d, %lld loops",
				 v->info_age_s, limit, v->worker_pid, (long long) v->loop_count);
		return false;
	}
	snprintf(why, whylen, "hapg's last report %.1f s ago (worker pid %d)", v->info_age_s, v->worker_pid);
	return true;
}

/* Readiness: the primary holding the Lease, or a standby streaming from it. */
bool
hapg_is_ready(const HapgHttpView *v, char *why, size_t whylen)
{
	if (!v->in_recovery)
		return hapg_is_primary(v, why, whylen);
	return hapg_is_replica(v, NULL, why, whylen);
}

/* A whole number, or null when it is not known. */
static void
buf_count(HapgBuf *b, int64_t n, bool known)
{
	if (known)
		hapg_buf_printf(b, "%lld", (long long) n);
	else
		hapg_buf_printf(b, "null");
}

/* A name as a JSON string, or null when it is empty. */
static void
buf_name(HapgBuf *b, const char *name)
{
	if (name[0])
		hapg_buf_json_string(b, name);
	else
		hapg_buf_printf(b, "null");
}

/* Health (Patroni's /health): PostgreSQL is up, past the start of recovery. */
bool
hapg_is_healthy(const HapgHttpView *v, char *why, size_t whylen)
{
	if (!v->data_dir_ok)
	{
		snprintf(why, whylen, "the data directory is gone");
		return false;
	}
	if (strcmp(v->state, "starting") == 0)
	{
		snprintf(why, whylen, "PostgreSQL is starting: recovery has not replayed anything yet");
		return false;
	}
	snprintf(why, whylen, "PostgreSQL is running (%s)", v->state);
	return true;
}

/* An LSN as PostgreSQL writes it (a JSON string), or null when unknown. */
static void
buf_lsn(HapgBuf *b, uint64_t lsn)
{
	if (lsn == 0)
		hapg_buf_printf(b, "null");
	else
		hapg_buf_printf(b, "\"%X/%X\"", (unsigned) (lsn >> 32), (unsigned) lsn);
}

/* The member's JSON: what Patroni's GET / says, in hapg's words. */
static void
member_json(HapgBuf *b, const HapgHttpView *v, const char *why)
{
	int64_t		lag = v->in_recovery ? lag_of(v, v->lsn) : 0;

	hapg_buf_printf(b, "{\"cluster\": ");
	hapg_buf_json_string(b, v->cluster);
	hapg_buf_printf(b, ", \"member\": ");
	hapg_buf_json_string(b, v->member);
	hapg_buf_printf(b, ", \"role\": \"%s\", \"state\": ", hapg_role_name(v->role));
	hapg_buf_json_string(b, v->state);
	hapg_buf_printf(b, ", \"in_recovery\": %s, \"streaming\": %s, \"timeline\": ",
					v->in_recovery ? "true" : "false", v->streaming ? "true" : "false");
	buf_count(b, v->timeline, v->timeline != 0);
	hapg_buf_printf(b, ", \"lsn\": ");
	buf_lsn(b, v->lsn);
	if (v->in_recovery)
	{
		hapg_buf_printf(b, ", \"receive_lsn\": ");
		buf_lsn(b, v->receive_lsn);
		hapg_buf_printf(b, ", \"replay_lsn\": ");
		buf_lsn(b, v->replay_lsn);
	}
	hapg_buf_printf(b, ", \"lag\": ");
	buf_count(b, lag, lag >= 0);
	hapg_buf_printf(b, ", \"leader\": ");
	buf_name(b, v->leader);
	hapg_buf_printf(b, ", \"paused\": %s, \"lease_expires_in\": ", v->paused ? "true" : "false");
	if (v->lease_known)
		hapg_buf_printf(b, "%.3f", v->lease_left_s);
	else
		hapg_buf_printf(b, "null");
	hapg_buf_printf(b, ", \"api_ok\": %s, \"pending_restart\": %s, \"nofailover\": %s, \"failover_priority\": %d, \"failsafe_active\": %s",
					v->api_ok ? "true" : "false", v->pending_restart ? "true" : "false",
					v->nofailover ? "true" : "false", v->failover_priority,
					v->failsafe_active ? "true" : "false");
	if (v->pending_switchover[0])
	{
		hapg_buf_printf(b, ", \"pending_switchover\": ");
		hapg_buf_json_string(b, v->pending_switchover);
	}
	if (v->last_error[0])
	{
		hapg_buf_printf(b, ", \"last_error\": ");
		hapg_buf_json_string(b, v->last_error);
	}
	if (why)
	{
		hapg_buf_printf(b, ", \"reason\": ");
		hapg_buf_json_string(b, why);
	}
	hapg_buf_printf(b, "}\n");
}

/* Seconds since the epoch as RFC 3339 UTC (JSON), or null. */
static void
buf_time(HapgBuf *b, double unix_s)
{
	time_t		t = (time_t) unix_s;
	struct tm	tm;
	char		s[40];

	if (unix_s <= 0 || gmtime_r(&t, &tm) == NULL)
	{
		hapg_buf_printf(b, "null");
		return;
	}
	strftime(s, sizeof(s), "%Y-%m-%dT%H:%M:%SZ", &tm);
	hapg_buf_printf(b, "\"%s\"", s);
}

/* The hapg_members view as JSON, with the cluster-wide figures. */
static void
cluster_json(HapgBuf *b, const HapgHttpView *v)
{
	int			i;

	hapg_buf_printf(b, "{\"cluster\": ");
	hapg_buf_json_string(b, v->cluster);
	hapg_buf_printf(b, ", \"leader\": ");
	buf_name(b, v->leader);
	hapg_buf_printf(b, ", \"paused\": %s, \"members\": [", v->paused ? "true" : "false");
	for (i = 0; i < v->nmembers; i++)
	{
		const HapgHttpMember *m = &v->members[i];
		int64_t		lag = lag_of(v, m->lsn);

		hapg_buf_printf(b, "%s\n  {\"member\": ", i ? "," : "");
		hapg_buf_json_string(b, m->name);
		hapg_buf_printf(b, ", \"role\": ");
		hapg_buf_json_string(b, m->role);
		hapg_buf_printf(b, ", \"state\": ");
		hapg_buf_json_string(b, m->state);
		hapg_buf_printf(b, ", \"connect_address\": ");
		hapg_buf_json_string(b, m->connect_address);
		hapg_buf_printf(b, ", \"timeline\": ");
		buf_count(b, m->timeline, m->timeline != 0);
		hapg_buf_printf(b, ", \"lsn\": ");
		buf_lsn(b, m->lsn);
		hapg_buf_printf(b, ", \"lag_bytes\": ");
		buf_count(b, lag, lag >= 0);
		hapg_buf_printf(b, ", \"is_leader\": %s, \"last_seen\": ", m->is_leader ? "true" : "false");
		buf_time(b, m->last_seen_unix);
		hapg_buf_printf(b, ", \"pod_role_label\": ");
		hapg_buf_json_string(b, m->pod_role_label);
		if (m->has_settings)
			hapg_buf_printf(b, ", \"nofailover\": %s, \"failover_priority\": %d",
							m->nofailover ? "true" : "false", m->priority);
		else
			hapg_buf_printf(b, ", \"nofailover\": null, \"failover_priority\": null");
		hapg_buf_printf(b, "}");
	}
	hapg_buf_printf(b, "\n]}\n");
}

/* hapg_history as JSON, oldest first. */
static void
history_json(HapgBuf *b, const HapgHttpView *v)
{
	int			i;

	hapg_buf_printf(b, "[");
	for (i = 0; i < v->nhistory; i++)
	{
		const HapgHistoryEntry *h = &v->history[i];

		hapg_buf_printf(b, "%s\n  {\"old_timeline\": %d, \"new_timeline\": %d, \"lsn\": ",
						i ? "," : "", h->old_timeline, h->new_timeline);
		buf_lsn(b, h->lsn);
		hapg_buf_printf(b, ", \"reason\": ");
		hapg_buf_json_string(b, h->reason);
		hapg_buf_printf(b, ", \"switched_at\": ");
		hapg_buf_json_string(b, h->time);
		hapg_buf_printf(b, ", \"leader\": ");
		hapg_buf_json_string(b, h->leader);
		hapg_buf_printf(b, "}");
	}
	hapg_buf_printf(b, "%s]\n", v->nhistory ? "\n" : "");
}

/* ---------------------------------------------------------------- metrics */

typedef struct MetricOut
{
	HapgBuf    *b;
	const HapgHttpView *v;
	bool		om;				/* OpenMetrics */
} MetricOut;

/* HELP and TYPE of one family; OpenMetrics names a counter without _total. */
static void
family(MetricOut *o, const char *name, const char *type, const char *help)
{
	size_t		len = strlen(name);

	if (o->om && strcmp(type, "counter") == 0 && len > 6 &&
		strcmp(name + len - 6, "_total") == 0)
		len -= 6;
	hapg_buf_printf(o->b, "# HELP %.*s %s\n# TYPE %.*s %s\n",
					(int) len, name, help, (int) len, name, type);
}

/* name{cluster="..",member=".."[,extra]} */
static void
series(MetricOut *o, const char *name, const char *extra)
{
	hapg_buf_printf(o->b, "%s{cluster=\"", name);
	buf_label_value(o->b, o->v->cluster);
	hapg_buf_printf(o->b, "\",member=\"");
	buf_label_value(o->b, o->v->member);
	hapg_buf_printf(o->b, "\"%s%s} ", extra && extra[0] ? "," : "", extra ? extra : "");
}

static void
gauge(MetricOut *o, const char *name, const char *help, double value)
{
	family(o, name, "gauge", help);
	series(o, name, NULL);
	hapg_buf_printf(o->b, "%.17g\n", value);
}

static void
counter(MetricOut *o, const char *name, const char *help, double value)
{
	family(o, name, "counter", help);
	series(o, name, NULL);
	hapg_buf_printf(o->b, "%.17g\n", value);
}

/* A histogram's cumulative buckets, sum and count. */
static void
histogram(MetricOut *o, const char *name, const char *help, const HapgHistogram *h,
		  const double *bounds, int nbounds)
{
	char		n[128];
	char		le[64];
	uint64_t	cum = 0;
	int			i;

	family(o, name, "histogram", help);
	snprintf(n, sizeof(n), "%s_bucket", name);
	for (i = 0; i < nbounds && i < HAPG_HIST_MAX_BUCKETS - 1; i++)
	{
		cum += h->buckets[i];
		snprintf(le, sizeof(le), "le=\"%g\"", bounds[i]);
		series(o, n, le);
		hapg_buf_printf(o->b, "%llu\n", (unsigned long long) cum);
	}
	series(o, n, "le=\"+Inf\"");
	hapg_buf_printf(o->b, "%llu\n", (unsigned long long) h->count);
	snprintf(n, sizeof(n), "%s_sum", name);
	series(o, n, NULL);
	hapg_buf_printf(o->b, "%.17g\n", h->sum);
	snprintf(n, sizeof(n), "%s_count", name);
	series(o, n, NULL);
	hapg_buf_printf(o->b, "%llu\n", (unsigned long long) h->count);
}

/*
 * Every metric hapg exports, in the Prometheus text format 0.0.4 or in
 * OpenMetrics 1.0.  The README's metrics table lists the same names.
 */
void
hapg_render_metrics(const HapgHttpView *v, bool openmetrics, HapgBuf *b)
{
	MetricOut	o = {b, v, openmetrics};
	const HapgMetrics *m = &v->metrics;
	char		why[HAPG_MSG_LEN];
	char		extra[HAPG_NAME_LEN * 2 + 32];
	int			i;

	gauge(&o, "hapg_primary", "1 if this member is the primary holding a valid Lease (as /primary)",
		  hapg_is_primary(v, why, sizeof(why)));
	gauge(&o, "hapg_replica", "1 if this member is a standby streaming from the leader (as /replica)",
		  hapg_is_replica(v, NULL, why, sizeof(why)));
	gauge(&o, "hapg_postgres_running", "1 if PostgreSQL is up (as /health)",
		  hapg_is_healthy(v, why, sizeof(why)));
	gauge(&o, "hapg_postmaster_start_time_seconds", "When the postmaster started, Unix time",
		  v->postmaster_start_unix);
	gauge(&o, "hapg_timeline", "PostgreSQL timeline of this member", v->timeline);
	gauge(&o, "hapg_wal_written_position_bytes",
		  "Primary: WAL position written (pg_current_wal_lsn); 0 on a standby",
		  v->in_recovery ? 0 : (double) v->write_lsn);
	gauge(&o, "hapg_wal_received_position_bytes",
		  "Standby: WAL position received and flushed by the WAL receiver; 0 on a primary",
		  v->in_recovery ? (double) v->receive_lsn : 0);
	gauge(&o, "hapg_wal_replayed_position_bytes",
		  "Standby: WAL position replayed; 0 on a primary",
		  v->in_recovery ? (double) v->replay_lsn : 0);
	gauge(&o, "hapg_wal_replay_paused", "1 if WAL replay is paused (pg_wal_replay_pause())",
		  v->in_recovery && v->replay_paused);
	gauge(&o, "hapg_streaming", "1 if the WAL receiver is streaming", v->streaming);
	gauge(&o, "hapg_paused", "1 if the cluster is paused (no automatic failover)", v->paused);
	gauge(&o, "hapg_cluster_unlocked", "1 if no member holds the leader Lease", v->leader[0] == '\0');
	gauge(&o, "hapg_api_last_success_timestamp_seconds",
		  "Last answer from the Kubernetes API (a request's that was not an error or a time-out, or a watch event), Unix time; 0: never",
		  m->last_api_success_unix);
	gauge(&o, "hapg_api_ok", "1 if every Kubernetes API call of the last loop succeeded", v->api_ok);
	gauge(&o, "hapg_failsafe_active", "1 if this leader is writable past its Lease on a failsafe proof",
		  v->failsafe_active);
	gauge(&o, "hapg_pending_restart", "1 if a changed setting needs a restart of PostgreSQL",
		  v->pending_restart);
	gauge(&o, "hapg_failover_priority", "hapg.failover_priority of this member (0: never promoted)",
		  v->failover_priority);
	gauge(&o, "hapg_nofailover", "1 if hapg.nofailover is on", v->nofailover);
	gauge(&o, "hapg_lease_remaining_seconds",
		  "Time left on the leader Lease as this member sees it; 0 if expired or unknown",
		  v->lease_known ? v->lease_left_s : 0);
	gauge(&o, "hapg_worker_report_age_seconds",
		  "Time since the hapg worker's last report; -1: it has not reported",
		  v->info_age_s);
	counter(&o, "hapg_lease_transitions_total",
			"The Lease's leaseTransitions: how often the leader changed", v->lease_transitions);
	counter(&o, "hapg_loops_total", "Runs of the hapg worker's loop", (double) v->loop_count);
	counter(&o, "hapg_fencing_events_total",
			"Times this member stopped its own server to keep a single writer", (double) m->fencing_events);
	counter(&o, "hapg_elections_won_total", "Elections this member won (it took the Lease)",
			(double) m->elections_won);
	counter(&o, "hapg_elections_lost_total",
			"Elections this member stood in and another member won", (double) m->elections_lost);
	counter(&o, "hapg_watch_reconnects_total",
			"Lease and Pod watches opened again after the first", (double) m->watch_reconnects);

	family(&o, "hapg_api_requests_total", "counter",
		   "Kubernetes API requests by verb and HTTP status (code 0: no response)");
	for (i = 0; i < m->napi; i++)
	{
		snprintf(extra, sizeof(extra), "verb=\"%s\",code=\"%d\"",
				 hapg_api_verb_name((HapgApiVerb) m->api[i].verb), m->api[i].code);
		series(&o, "hapg_api_requests_total", extra);
		hapg_buf_printf(b, "%llu\n", (unsigned long long) m->api[i].n);
	}
	if (m->napi == 0 || m->api_other_codes)
	{
		series(&o, "hapg_api_requests_total", "verb=\"OTHER\",code=\"other\"");
		hapg_buf_printf(b, "%llu\n", (unsigned long long) m->api_other_codes);
	}
	histogram(&o, "hapg_api_request_duration_seconds", "Duration of Kubernetes API requests",
			  &m->api_seconds, hapg_api_seconds_bounds, hapg_api_seconds_nbounds);
	histogram(&o, "hapg_loop_duration_seconds", "Duration of one run of the hapg loop",
			  &m->loop_seconds, hapg_loop_seconds_bounds, hapg_loop_seconds_nbounds);

	family(&o, "hapg_replication_lag_bytes", "gauge",
		   "Bytes each other member is behind the leader's position, as the leader last reported it");
	for (i = 0; i < v->nmembers; i++)
	{
		const HapgHttpMember *mm = &v->members[i];
		int64_t		lag = lag_of(v, mm->lsn);
		HapgBuf		lbl = {0};

		if (mm->is_leader || lag < 0)
			continue;
		hapg_buf_printf(&lbl, "replica=\"");
		buf_label_value(&lbl, mm->name);
		hapg_buf_printf(&lbl, "\"");
		if (!lbl.failed)
		{
			series(&o, "hapg_replication_lag_bytes", lbl.data);
			hapg_buf_printf(b, "%lld\n", (long long) lag);
		}
		free(lbl.data);
	}
	if (openmetrics)
		hapg_buf_printf(b, "# EOF\n");
}

/* The full answer to one GET of an endpoint. */
void
hapg_http_answer(HapgEndpoint ep, const HapgHttpView *v, const HapgHttpQuery *q,
				 bool openmetrics, HapgHttpAnswer *out)
{
	char		why[HAPG_MSG_LEN];
	bool		ok = true;

	memset(out, 0, sizeof(*out));
	out->content_type = "application/json";
	why[0] = '\0';
	if (q != NULL && q->bad_stall && ep == HAPG_EP_LIVENESS)
	{
		out->status = 400;
		hapg_buf_printf(&out->body, "{\"error\": \"stall must be a number of seconds (more than 0, at most 86400)\"}\n");
		return;
	}
	if (q != NULL && q->bad_lag &&
		(ep == HAPG_EP_REPLICA || ep == HAPG_EP_READ_ONLY))
	{
		out->status = 400;
		hapg_buf_printf(&out->body, "{\"error\": \"lag must be a number of bytes, optionally with a unit (B, kB, MB, GB, TB), e.g. ?lag=1MB\"}\n");
		return;
	}
	switch (ep)
	{
		case HAPG_EP_STATUS:
			break;
		case HAPG_EP_PRIMARY:
		case HAPG_EP_READ_WRITE:
			ok = hapg_is_primary(v, why, sizeof(why));
			break;
		case HAPG_EP_REPLICA:
			ok = hapg_is_replica(v, q, why, sizeof(why));
			break;
		case HAPG_EP_READ_ONLY:
			ok = hapg_is_primary(v, why, sizeof(why)) ||
				hapg_is_replica(v, q, why, sizeof(why));
			break;
		case HAPG_EP_HEALTH:
			ok = hapg_is_healthy(v, why, sizeof(why));
			break;
		case HAPG_EP_LIVENESS:
			ok = hapg_is_live(v, q, why, sizeof(why));
			break;
		case HAPG_EP_READINESS:
			ok = hapg_is_ready(v, why, sizeof(why));
			break;
		case HAPG_EP_CLUSTER:
			out->status = 200;
			cluster_json(&out->body, v);
			return;
		case HAPG_EP_HISTORY:
			out->status = 200;
			history_json(&out->body, v);
			return;
		case HAPG_EP_METRICS:
			out->status = 200;
			out->content_type = openmetrics ?
				"application/openmetrics-text; version=1.0.0; charset=utf-8" :
				"text/plain; version=0.0.4; charset=utf-8";
			hapg_render_metrics(v, openmetrics, &out->body);
			return;
		case HAPG_EP_UNKNOWN:
			out->status = 404;
			hapg_buf_printf(&out->body, "{\"error\": \"no such endpoint\"}\n");
			return;
	}
	out->status = ok ? 200 : 503;
	member_json(&out->body, v, why[0] ? why : NULL);
}
