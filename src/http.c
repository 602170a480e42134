/*
 * http.c
 *		hapg's HTTP endpoint: a second background worker serving Patroni's
 *		health checks (/primary, /replica, /health, ...) and /metrics with
 *		libmicrohttpd; and the shared counters /metrics shows.
 *
 * The worker drives libmicrohttpd from its own wait loop (epoll in
 * "external" mode: one epoll descriptor in PostgreSQL's WaitEventSet, then
 * MHD_run), so every callback runs in this process's only thread and no
 * PostgreSQL function is ever called from another thread.  Answers come
 * from a snapshot (HapgHttpView) copied under the locks at most every
 * SNAPSHOT_MS: hapg's state as the main worker published it, this
 * server's recovery state and WAL positions, the counters.  The callbacks
 * only read that snapshot and call the pure rules of httprules.c; nothing
 * in them can raise an ERROR.
 *
 * Bounded: at most hapg.http_max_connections connections (more wait in the
 * listen backlog), each closed after hapg.http_timeout of inactivity or
 * when its request has not fully arrived in that time, each
 * with HTTP_CONN_MEMORY bytes for its request (longer headers get 431),
 * no request body accepted.
 */
#include "postgres.h"

#include <netdb.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <time.h>

#include <microhttpd.h>

#include "access/xact.h"
#include "access/xlog.h"
#include "access/xlogrecovery.h"
#include "miscadmin.h"
#include "pgstat.h"
#include "postmaster/bgworker.h"
#include "postmaster/interrupt.h"
#include "replication/walreceiver.h"
#include "storage/ipc.h"
#include "storage/proc.h"
#include "storage/latch.h"
#include "storage/shmem.h"
#include "storage/fd.h"
#include "storage/spin.h"
#include "utils/guc.h"
#include "utils/guc_tables.h"
#include "utils/memutils.h"
#include "utils/timestamp.h"

#include "hapg.h"
#include "http.h"
#include "httprules.h"

#define HTTP_MAX_DAEMONS 8		/* listen sockets (addresses x families) */
#define HTTP_CONN_MEMORY (32 * 1024)	/* per connection: request line and headers */
#define HTTP_BACKLOG 128
#define SNAPSHOT_MS 50			/* answers are at most this stale */
#define LOG_EVERY_MS 10000		/* libmicrohttpd's own messages, rate-limited */
#define HAPG_HTTP_FILE "hapg.http"	/* in PGDATA: where the endpoint listens */
#define FENCES_SUFFIX ".hapg-fences"	/* PGDATA + this: fences counted on this volume */

/* The shared counters (written by the main worker, read here). */
typedef struct HapgHttpShared
{
	slock_t		mutex;
	HapgMetrics metrics;
} HapgHttpShared;

/* Settings; GUC needs their addresses, hence one static struct. */
typedef struct HapgHttpSettings
{
	int			port;
	char	   *listen_addresses;
	char	   *ssl_cert_file;
	char	   *ssl_key_file;
	int			max_connections;
	int			timeout_s;
} HapgHttpSettings;

/*
 * One open connection: since when it waits for a request that has not
 * fully arrived (0: a request is being answered).  A client that sends its
 * request more slowly than hapg.http_timeout (a "slowloris") is cut off:
 * libmicrohttpd's own timeout only counts silence.
 */
typedef struct ConnSlot
{
	struct MHD_Connection *conn;	/* NULL: free */
	int64		waiting_since_ms;
} ConnSlot;

/* This worker's state, passed to every callback. */
typedef struct HttpServer
{
	int			ndaemons;
	struct MHD_Daemon *daemons[HTTP_MAX_DAEMONS];
	char	   *cert;			/* PEM contents while TLS is on */
	char	   *key;
	char		cert_file[MAXPGPATH];	/* the files they were read from */
	char		key_file[MAXPGPATH];
	HapgShared *shared;			/* copy of hapg_shared */
	HapgHttpView *view;
	int64		view_ms;		/* when the view was taken; 0: never */
	int64		last_log_ms;
	int			log_dropped;
	ConnSlot   *slots;			/* max_connections per daemon */
	int			nslots;
	int64		cut_off;		/* slow requests cut off, not yet logged */
	int64		cut_logged_ms;
} HttpServer;

static HapgHttpSettings http_settings;
static HapgHttpShared *http_shared = NULL;
static shmem_request_hook_type prev_shmem_request_hook = NULL;
static shmem_startup_hook_type prev_shmem_startup_hook = NULL;

/* ---------------------------------------------------------------- shmem */

static void
http_shmem_request(void)
{
	if (prev_shmem_request_hook)
		prev_shmem_request_hook();
	RequestAddinShmemSpace(MAXALIGN(sizeof(HapgHttpShared)));
}

/* Create or attach the counters. */
static void
http_shmem_startup(void)
{
	bool		found;

	if (prev_shmem_startup_hook)
		prev_shmem_startup_hook();
	LWLockAcquire(AddinShmemInitLock, LW_EXCLUSIVE);
	http_shared = ShmemInitStruct("hapg http", sizeof(HapgHttpShared), &found);
	if (!found)
	{
		FILE	   *f;
		unsigned long long n = 0;
		char		path[MAXPGPATH];

		memset(http_shared, 0, sizeof(HapgHttpShared));
		SpinLockInit(&http_shared->mutex);
		/*
		 * A fence stops the server: its count outlives it next to the data
		 * directory (as the launcher's rejoin stash does), where neither
		 * pg_rewind nor a clone replaces it.
		 */
		snprintf(path, sizeof(path), "%s" FENCES_SUFFIX, DataDir);
		f = AllocateFile(path, "r");
		if (f != NULL)
		{
			if (fscanf(f, "%llu", &n) == 1)
				http_shared->metrics.fencing_events = n;
			FreeFile(f);
		}
	}
	LWLockRelease(AddinShmemInitLock);
}

/*
 * May this process touch the counters?  Not the hand-over process
 * (handover.c): it detached from shared memory, and says so by MyProc = NULL.
 */
static bool
counters_attached(void)
{
	return http_shared != NULL && MyProc != NULL;
}

/* Wall-clock seconds, for the timestamps /metrics shows. */
static double
unix_now(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_REALTIME, &ts);
	return ts.tv_sec + ts.tv_nsec / 1e9;
}

/* A TimestampTz as Unix seconds (0 stays 0: never). */
static double
ts_unix(TimestampTz t)
{
	if (t == 0)
		return 0;
	return (double) t / USECS_PER_SEC +
		(double) (POSTGRES_EPOCH_JDATE - UNIX_EPOCH_JDATE) * SECS_PER_DAY;
}

/* One Kubernetes API request (kube.c), counted by verb and status. */
void
hapg_metrics_api_request(const char *method, long status, double seconds)
{
	HapgApiVerb verb = hapg_api_verb(method);
	double		now = unix_now();

	if (!counters_attached())
		return;
	SpinLockAcquire(&http_shared->mutex);
	hapg_metrics_count_api(&http_shared->metrics, verb, status, seconds, now);
	SpinLockRelease(&http_shared->mutex);
}

/* An event arrived on a watch: the API answered (hapg_metrics_note_answer). */
void
hapg_metrics_watch_event(void)
{
	double		now = unix_now();

	if (!counters_attached())
		return;
	SpinLockAcquire(&http_shared->mutex);
	hapg_metrics_note_answer(&http_shared->metrics, now);
	SpinLockRelease(&http_shared->mutex);
}

/* One run of the main worker's loop. */
void
hapg_metrics_loop(double seconds)
{
	if (!counters_attached())
		return;
	SpinLockAcquire(&http_shared->mutex);
	hapg_histogram_observe(&http_shared->metrics.loop_seconds, hapg_loop_seconds_bounds,
						   hapg_loop_seconds_nbounds, seconds);
	SpinLockRelease(&http_shared->mutex);
}

/* Keep the fence count in PGDATA.hapg-fences (the fence stops this server). */
static void
save_fences(uint64 n)
{
	char		path[MAXPGPATH];
	char		tmp[MAXPGPATH + 8];
	FILE	   *f;

	snprintf(path, sizeof(path), "%s" FENCES_SUFFIX, DataDir);
	snprintf(tmp, sizeof(tmp), "%s.tmp", path);
	f = AllocateFile(tmp, "w");
	if (f == NULL || fprintf(f, "%llu\n", (unsigned long long) n) < 0 ||
		FreeFile(f) != 0 || rename(tmp, path) != 0)
		ereport(LOG, (errcode_for_file_access(),
					  errmsg("hapg http: could not write \"%s\": %m", path),
					  errhint("The fence count then restarts with the server.")));
}

/* A fence, an election's outcome, a watch opened again. */
void
hapg_metrics_event(HapgMetricEvent ev)
{
	uint64		fences = 0;

	if (!counters_attached())
		return;
	SpinLockAcquire(&http_shared->mutex);
	switch (ev)
	{
		case HAPG_EV_FENCE:
			fences = ++http_shared->metrics.fencing_events;
			break;
		case HAPG_EV_ELECTION_WON:
			http_shared->metrics.elections_won++;
			break;
		case HAPG_EV_ELECTION_LOST:
			http_shared->metrics.elections_lost++;
			break;
		case HAPG_EV_WATCH_RECONNECT:
			http_shared->metrics.watch_reconnects++;
			break;
	}
	SpinLockRelease(&http_shared->mutex);
	if (fences > 0)
		save_fences(fences);
}

/* ---------------------------------------------------------------- settings */

/* hapg.http_listen_addresses: '*' or a comma-separated list of hosts. */
static bool
check_listen(char **newval, void **extra pg_attribute_unused(),
			 GucSource source pg_attribute_unused())
{
	const char *v = *newval;

	if (v == NULL || strlen(v) > 1000 || strpbrk(v, "\t\r\n\"'/") != NULL)
	{
		GUC_check_errdetail("hapg.http_listen_addresses must be '*' or a comma-separated list of host names or IP addresses.");
		return false;
	}
	return true;
}

static void
define_settings(void)
{
	DefineCustomIntVariable("hapg.http_port",
							"TCP port of hapg's HTTP endpoint (health checks, /metrics); 0 turns it off.",
							NULL, &http_settings.port, 8008, 0, 65535, PGC_POSTMASTER, 0,
							NULL, NULL, NULL);
	DefineCustomStringVariable("hapg.http_listen_addresses",
							   "Addresses hapg's HTTP endpoint listens on: '*' (all), or a comma-separated list.",
							   NULL, &http_settings.listen_addresses, "*", PGC_POSTMASTER, 0,
							   check_listen, NULL, NULL);
	DefineCustomStringVariable("hapg.http_ssl_cert_file",
							   "PEM certificate of the HTTP endpoint; with hapg.http_ssl_key_file it serves HTTPS only.",
							   NULL, &http_settings.ssl_cert_file, "", PGC_SIGHUP, 0,
							   NULL, NULL, NULL);
	DefineCustomStringVariable("hapg.http_ssl_key_file",
							   "PEM private key of the HTTP endpoint's certificate.",
							   NULL, &http_settings.ssl_key_file, "", PGC_SIGHUP, 0,
							   NULL, NULL, NULL);
	DefineCustomIntVariable("hapg.http_max_connections",
							"Connections the HTTP endpoint serves at once; more wait in the listen backlog.",
							NULL, &http_settings.max_connections, 64, 1, 10000, PGC_POSTMASTER, 0,
							NULL, NULL, NULL);
	DefineCustomIntVariable("hapg.http_timeout",
							"An HTTP connection idle this long, or whose request has not fully arrived in this time, is closed.",
							NULL, &http_settings.timeout_s, 10, 1, 3600, PGC_POSTMASTER, GUC_UNIT_S,
							NULL, NULL, NULL);
}

/* Settings, counters, and the worker when the endpoint is on (_PG_init). */
void
hapg_http_init(const char *library_name)
{
	define_settings();
	prev_shmem_request_hook = shmem_request_hook;
	shmem_request_hook = http_shmem_request;
	prev_shmem_startup_hook = shmem_startup_hook;
	shmem_startup_hook = http_shmem_startup;
	if (http_settings.port != 0)
		hapg_register_worker(library_name, "hapg_http_main", "hapg http", 5);
}

/* ---------------------------------------------------------------- snapshot */

/* Is any setting waiting for a restart (pg_settings.pending_restart)? */
static bool
pending_restart(void)
{
	struct config_generic **vars = get_guc_variables();
	int			n = GetNumConfigOptions();
	int			i;

	for (i = 0; i < n; i++)
		if (vars[i]->status & GUC_PENDING_RESTART)
			return true;
	return false;
}

/*
 * Take a new snapshot: the main worker's shared state (copied under its
 * lock), the counters (under theirs), and this server's own recovery
 * state and WAL positions from PostgreSQL's shared memory.
 */
static void
take_snapshot(HttpServer *srv)
{
	HapgShared *s = srv->shared;
	HapgHttpView *v = srv->view;
	HapgLocalState local;
	TimestampTz now = GetCurrentTimestamp();
	int			i;

	LWLockAcquire(&hapg_shared->lock, LW_SHARED);
	memcpy(s, hapg_shared, sizeof(HapgShared));
	LWLockRelease(&hapg_shared->lock);

	memset(v, 0, sizeof(*v));
	SpinLockAcquire(&http_shared->mutex);
	v->metrics = http_shared->metrics;
	SpinLockRelease(&http_shared->mutex);

	hapg_read_local_state(&local);
	v->now_unix = unix_now();
	v->published = s->last_loop != 0;
	v->configured = s->configured;
	strlcpy(v->cluster, s->cluster, sizeof(v->cluster));
	strlcpy(v->member, s->member[0] ? s->member : hapg_effective_member(), sizeof(v->member));
	v->role = s->role;
	strlcpy(v->state, hapg_local_state_name(&local), sizeof(v->state));
	strlcpy(v->leader, s->leader, sizeof(v->leader));
	v->in_recovery = local.in_recovery;
	v->streaming = local.streaming;
	v->read_only = DefaultXactReadOnly;
	v->timeline = (int) local.timeline;
	v->lsn = local.lsn;
	if (local.in_recovery)
	{
		v->receive_lsn = GetWalRcvFlushRecPtr(NULL, NULL);
		v->replay_lsn = local.replay_lsn;
		v->replay_paused = GetRecoveryPauseState() != RECOVERY_NOT_PAUSED;
		v->write_lsn = 0;
	}
	else
		v->write_lsn = GetXLogWriteRecPtr();
	v->leader_lsn = s->leader_lsn;
	v->paused = s->paused;
	v->api_ok = s->api_ok;
	strlcpy(v->last_error, s->last_error, sizeof(v->last_error));
	v->lease_transitions = s->lease_transitions;
	v->lease_known = s->leader[0] && s->lease_info_at;
	v->failsafe_active = s->failsafe_active;
	if (v->lease_known)
		v->lease_left_s = Max(0, s->lease_expires_in_ms - (now - s->lease_info_at) / 1000) / 1000.0;
	v->info_age_s = s->last_loop ? (now - s->last_loop) / 1e6 : -1;
	v->loop_count = s->loop_count;
	v->worker_pid = s->worker_pid;
	v->uptime_s = (now - PgStartTime) / 1e6;
	v->postmaster_start_unix = ts_unix(PgStartTime);
	v->loop_wait_s = hapg_loop_wait;
	v->data_dir_ok = hapg_datadir_ok();
	v->pending_restart = pending_restart();
	v->nofailover = hapg_nofailover;
	v->failover_priority = hapg_failover_priority;
	if (s->switchover.pending)
		snprintf(v->pending_switchover, sizeof(v->pending_switchover), "switchover from %s to %s",
				 s->switchover.from, s->switchover.to[0] ? s->switchover.to : "the healthiest replica");
	else if (s->handover_to[0])
		snprintf(v->pending_switchover, sizeof(v->pending_switchover), "Lease released to %s",
				 s->handover_to);
	v->nmembers = Min(s->nmembers, HAPG_MAX_MEMBERS);
	for (i = 0; i < v->nmembers; i++)
	{
		const HapgMemberView *r = &s->members[i];
		HapgHttpMember *m = &v->members[i];

		strlcpy(m->name, r->name, sizeof(m->name));
		strlcpy(m->role, r->role, sizeof(m->role));
		strlcpy(m->state, r->state, sizeof(m->state));
		strlcpy(m->connect_address, r->connect_address, sizeof(m->connect_address));
		strlcpy(m->pod_role_label, r->pod_role_label, sizeof(m->pod_role_label));
		m->timeline = r->timeline;
		m->lsn = r->lsn;
		m->is_leader = r->is_leader;
		m->last_seen_unix = ts_unix(r->last_seen);
		m->has_settings = r->has_settings;
		m->nofailover = r->nofailover;
		m->priority = r->priority;
	}
	v->nhistory = Min(s->nhistory, HAPG_MAX_HISTORY);
	memcpy(v->history, s->history, sizeof(HapgHistoryEntry) * v->nhistory);
	srv->view_ms = hapg_mono_ms();
}

/* ---------------------------------------------------------------- serving */

/* libmicrohttpd's messages: to the server log, at most one per LOG_EVERY_MS. */
static void
mhd_logger(void *cls, const char *fmt, va_list ap)
{
	HttpServer *srv = cls;
	char		msg[512];
	int64		now = hapg_mono_ms();
	size_t		len;

	if (srv->last_log_ms != 0 && now - srv->last_log_ms < LOG_EVERY_MS)
	{
		srv->log_dropped++;
		return;
	}
	vsnprintf(msg, sizeof(msg), fmt, ap);
	len = strlen(msg);
	while (len > 0 && (msg[len - 1] == '\n' || msg[len - 1] == ' '))
		msg[--len] = '\0';
	if (srv->log_dropped > 0)
		ereport(LOG, (errmsg("hapg http: %s (and %d more messages in the last %d s)",
							 msg, srv->log_dropped, LOG_EVERY_MS / 1000)));
	else
		ereport(LOG, (errmsg("hapg http: %s", msg)));
	srv->log_dropped = 0;
	srv->last_log_ms = now;
}

/* A connection opens (take a slot) or closes (free it). */
static void
on_connection(void *cls, struct MHD_Connection *conn, void **socket_context,
			  enum MHD_ConnectionNotificationCode toe)
{
	HttpServer *srv = cls;
	ConnSlot   *slot = *socket_context;
	int			i;

	if (toe == MHD_CONNECTION_NOTIFY_STARTED)
	{
		*socket_context = NULL;
		for (i = 0; i < srv->nslots; i++)
			if (srv->slots[i].conn == NULL)
			{
				srv->slots[i].conn = conn;
				srv->slots[i].waiting_since_ms = hapg_mono_ms();
				*socket_context = &srv->slots[i];
				return;
			}
		return;
	}
	if (slot != NULL)
		slot->conn = NULL;
	*socket_context = NULL;
}

/* The slot of a connection, or NULL. */
static ConnSlot *
slot_of(struct MHD_Connection *conn)
{
	const union MHD_ConnectionInfo *ci =
		MHD_get_connection_info(conn, MHD_CONNECTION_INFO_SOCKET_CONTEXT);

	return ci ? (ConnSlot *) ci->socket_context : NULL;
}

/* A request was answered: the connection waits for the next one (keep-alive). */
static void
on_completed(void *cls pg_attribute_unused(), struct MHD_Connection *conn,
			 void **con_cls pg_attribute_unused(),
			 enum MHD_RequestTerminationCode toe pg_attribute_unused())
{
	ConnSlot   *slot = slot_of(conn);

	if (slot != NULL)
		slot->waiting_since_ms = hapg_mono_ms();
}

/*
 * Cut off every connection whose request has not fully arrived within
 * hapg.http_timeout: shut its socket down, and libmicrohttpd closes it at
 * its next run.  Logged at most every LOG_EVERY_MS.
 */
static void
cut_off_slow_requests(HttpServer *srv)
{
	int64		now = hapg_mono_ms();
	int64		limit = http_settings.timeout_s * 1000L;
	int			i;

	for (i = 0; i < srv->nslots; i++)
	{
		ConnSlot   *slot = &srv->slots[i];
		const union MHD_ConnectionInfo *ci;

		if (slot->conn == NULL || slot->waiting_since_ms == 0 ||
			now - slot->waiting_since_ms < limit)
			continue;
		ci = MHD_get_connection_info(slot->conn, MHD_CONNECTION_INFO_CONNECTION_FD);
		if (ci != NULL)
			(void) shutdown(ci->connect_fd, SHUT_RDWR);
		slot->waiting_since_ms = 0;
		srv->cut_off++;
	}
	if (srv->cut_off > 0 && now - srv->cut_logged_ms >= LOG_EVERY_MS)
	{
		ereport(LOG,
				(errmsg("hapg http: closed %lld connection%s whose request did not arrive within %d s",
						(long long) srv->cut_off, srv->cut_off == 1 ? "" : "s",
						http_settings.timeout_s),
				 errhint("Slow or stuck clients; hapg.http_timeout sets the limit.")));
		srv->cut_off = 0;
		srv->cut_logged_ms = now;
	}
}

/* Queue a response made from a malloc'd buffer (taken over by libmicrohttpd). */
static enum MHD_Result
respond(struct MHD_Connection *conn, int status, const char *ctype, char *body,
		size_t len, const char *allow)
{
	struct MHD_Response *resp;
	enum MHD_Result ret;

	resp = MHD_create_response_from_buffer(len, body, body ? MHD_RESPMEM_MUST_FREE : MHD_RESPMEM_PERSISTENT);
	if (resp == NULL)
	{
		free(body);
		return MHD_NO;
	}
	if (ctype)
		MHD_add_response_header(resp, MHD_HTTP_HEADER_CONTENT_TYPE, ctype);
	MHD_add_response_header(resp, MHD_HTTP_HEADER_CACHE_CONTROL, "no-store");
	if (allow)
		MHD_add_response_header(resp, MHD_HTTP_HEADER_ALLOW, allow);
	ret = MHD_queue_response(conn, status, resp);
	MHD_destroy_response(resp);
	return ret;
}

/*
 * Every request.  GET and HEAD get the endpoint's answer; OPTIONS (what
 * HAProxy's "option httpchk OPTIONS /primary" sends) the same status with
 * no body; anything else 405.  Called in this process's thread by MHD_run.
 */
static enum MHD_Result
on_request(void *cls, struct MHD_Connection *conn, const char *url,
		   const char *method, const char *version pg_attribute_unused(),
		   const char *upload_data pg_attribute_unused(), size_t *upload_data_size,
		   void **con_cls pg_attribute_unused())
{
	HttpServer *srv = cls;
	HapgEndpoint ep = hapg_http_endpoint(url);
	HapgHttpQuery q;
	HapgHttpAnswer ans;
	const char *lag;
	const char *stall;
	bool		options = strcmp(method, MHD_HTTP_METHOD_OPTIONS) == 0;
	bool		head = strcmp(method, MHD_HTTP_METHOD_HEAD) == 0;
	ConnSlot   *slot = slot_of(conn);

	if (slot != NULL)
		slot->waiting_since_ms = 0;		/* the request has arrived */

	if (!options && !head && strcmp(method, MHD_HTTP_METHOD_GET) != 0)
	{
		HapgBuf		b = {0};

		hapg_buf_printf(&b, "{\"error\": \"only GET, HEAD and OPTIONS are served\"}\n");
		return respond(conn, MHD_HTTP_METHOD_NOT_ALLOWED, "application/json",
					   b.data, b.failed ? 0 : b.len, "GET, HEAD, OPTIONS");
	}
	if (*upload_data_size != 0)
	{
		HapgBuf		b = {0};

		*upload_data_size = 0;
		hapg_buf_printf(&b, "{\"error\": \"a request body is not accepted\"}\n");
		return respond(conn, MHD_HTTP_CONTENT_TOO_LARGE, "application/json",
					   b.data, b.failed ? 0 : b.len, NULL);
	}
	if (srv->view_ms == 0)
	{
		HapgBuf		b = {0};

		hapg_buf_printf(&b, "{\"error\": \"starting\"}\n");
		return respond(conn, MHD_HTTP_SERVICE_UNAVAILABLE, "application/json",
					   b.data, b.failed ? 0 : b.len, NULL);
	}

	memset(&q, 0, sizeof(q));
	lag = MHD_lookup_connection_value(conn, MHD_GET_ARGUMENT_KIND, "lag");
	if (lag != NULL)
	{
		q.has_lag = true;
		q.bad_lag = !hapg_parse_lag(lag, &q.max_lag);
	}
	stall = MHD_lookup_connection_value(conn, MHD_GET_ARGUMENT_KIND, "stall");
	if (stall != NULL)
		q.bad_stall = !hapg_parse_seconds(stall, &q.stall_s);
	hapg_http_answer(ep, srv->view, &q,
					 hapg_http_wants_openmetrics(MHD_lookup_connection_value(conn, MHD_HEADER_KIND,
																			 MHD_HTTP_HEADER_ACCEPT)),
					 &ans);
	if (ans.body.failed)
	{
		free(ans.body.data);
		return respond(conn, MHD_HTTP_INTERNAL_SERVER_ERROR, NULL, NULL, 0, NULL);
	}
	if (options)
	{
		free(ans.body.data);
		return respond(conn, ans.status, NULL, NULL, 0, "GET, HEAD, OPTIONS");
	}
	return respond(conn, ans.status, ans.content_type, ans.body.data, ans.body.len, NULL);
}

/* A whole file into palloc'd memory (PEM is small); NULL with a log line. */
static char *
read_pem(const char *path)
{
	FILE	   *f = AllocateFile(path, "r");
	char	   *buf;
	size_t		n;

	if (f == NULL)
	{
		ereport(LOG, (errcode_for_file_access(),
					  errmsg("hapg http: could not open \"%s\": %m", path)));
		return NULL;
	}
	buf = MemoryContextAllocZero(TopMemoryContext, 256 * 1024 + 1);
	n = fread(buf, 1, 256 * 1024, f);
	FreeFile(f);
	if (n == 0 || n >= 256 * 1024)
	{
		ereport(LOG, (errmsg("hapg http: \"%s\" is empty or larger than 256 kB", path)));
		pfree(buf);
		return NULL;
	}
	return buf;
}

/* Start one daemon on addr (NULL: every address of both families). */
static bool
start_daemon(HttpServer *srv, const struct sockaddr *addr, bool ipv6)
{
	unsigned int flags = MHD_USE_EPOLL | MHD_USE_ERROR_LOG;
	struct MHD_OptionItem opts[16];
	int			n = 0;
	struct MHD_Daemon *d;

	if (srv->ndaemons >= HTTP_MAX_DAEMONS)
	{
		ereport(LOG, (errmsg("hapg http: more than %d listen addresses; the rest are ignored",
							 HTTP_MAX_DAEMONS)));
		return false;
	}
	if (addr == NULL)
		flags |= MHD_USE_DUAL_STACK;
	else if (ipv6)
		flags |= MHD_USE_IPv6;
	if (srv->cert)
		flags |= MHD_USE_TLS;
	opts[n++] = (struct MHD_OptionItem) {MHD_OPTION_CONNECTION_LIMIT, http_settings.max_connections, NULL};
	opts[n++] = (struct MHD_OptionItem) {MHD_OPTION_CONNECTION_TIMEOUT, http_settings.timeout_s, NULL};
	opts[n++] = (struct MHD_OptionItem) {MHD_OPTION_CONNECTION_MEMORY_LIMIT, HTTP_CONN_MEMORY, NULL};
	opts[n++] = (struct MHD_OptionItem) {MHD_OPTION_LISTEN_BACKLOG_SIZE, HTTP_BACKLOG, NULL};
	opts[n++] = (struct MHD_OptionItem) {MHD_OPTION_NOTIFY_CONNECTION, (intptr_t) on_connection, srv};
	opts[n++] = (struct MHD_OptionItem) {MHD_OPTION_NOTIFY_COMPLETED, (intptr_t) on_completed, srv};
	if (addr)
		opts[n++] = (struct MHD_OptionItem) {MHD_OPTION_SOCK_ADDR, 0, (void *) addr};
	if (srv->cert)
	{
		opts[n++] = (struct MHD_OptionItem) {MHD_OPTION_HTTPS_MEM_CERT, 0, srv->cert};
		opts[n++] = (struct MHD_OptionItem) {MHD_OPTION_HTTPS_MEM_KEY, 0, srv->key};
	}
	opts[n++] = (struct MHD_OptionItem) {MHD_OPTION_END, 0, NULL};

	d = MHD_start_daemon(flags, (uint16_t) http_settings.port, NULL, NULL,
						 on_request, srv,
							/* the logger first: it then gets every message */
							MHD_OPTION_EXTERNAL_LOGGER, mhd_logger, srv,
							MHD_OPTION_ARRAY, opts, MHD_OPTION_END);
	if (d == NULL && addr == NULL)
	{
		/* no IPv6 here: all IPv4 addresses */
		flags &= ~MHD_USE_DUAL_STACK;
		d = MHD_start_daemon(flags, (uint16_t) http_settings.port, NULL, NULL,
							 on_request, srv,
							/* the logger first: it then gets every message */
							MHD_OPTION_EXTERNAL_LOGGER, mhd_logger, srv,
							MHD_OPTION_ARRAY, opts, MHD_OPTION_END);
	}
	if (d == NULL)
		return false;
	srv->daemons[srv->ndaemons++] = d;
	return true;
}

/* One entry of hapg.http_listen_addresses: every address it resolves to. */
static int
listen_on(HttpServer *srv, const char *host)
{
	struct addrinfo hints;
	struct addrinfo *res = NULL;
	struct addrinfo *ai;
	char		port[16];
	int			rc;
	int			started = 0;

	if (strcmp(host, "*") == 0)
		return start_daemon(srv, NULL, false) ? 1 : 0;
	memset(&hints, 0, sizeof(hints));
	hints.ai_family = AF_UNSPEC;
	hints.ai_socktype = SOCK_STREAM;
	hints.ai_flags = AI_PASSIVE | AI_NUMERICSERV;
	snprintf(port, sizeof(port), "%d", http_settings.port);
	rc = getaddrinfo(host, port, &hints, &res);
	if (rc != 0)
	{
		ereport(LOG, (errmsg("hapg http: could not resolve \"%s\" of hapg.http_listen_addresses: %s",
							 host, gai_strerror(rc))));
		return 0;
	}
	for (ai = res; ai != NULL; ai = ai->ai_next)
		if (ai->ai_family == AF_INET || ai->ai_family == AF_INET6)
		{
			if (start_daemon(srv, ai->ai_addr, ai->ai_family == AF_INET6))
				started++;
			else
				ereport(LOG, (errmsg("hapg http: could not listen on %s port %d: %m",
									 host, http_settings.port)));
		}
	freeaddrinfo(res);
	return started;
}

static void
stop_daemons(HttpServer *srv)
{
	int			i;

	for (i = 0; i < srv->ndaemons; i++)
		MHD_stop_daemon(srv->daemons[i]);
	srv->ndaemons = 0;
	if (srv->cert)
		pfree(srv->cert);
	if (srv->key)
		pfree(srv->key);
	srv->cert = srv->key = NULL;
}

/*
 * Listen as the settings say; TLS when both certificate and key are set.
 * A setting that cannot work is logged and the worker exits (it is
 * started again in a few seconds, and logs again, until it is fixed).
 */
static void
start_daemons(HttpServer *srv)
{
	char	   *list = pstrdup(http_settings.listen_addresses);
	char	   *tok;
	char	   *save = NULL;
	int			started = 0;
	bool		tls = http_settings.ssl_cert_file[0] || http_settings.ssl_key_file[0];

	strlcpy(srv->cert_file, http_settings.ssl_cert_file, sizeof(srv->cert_file));
	strlcpy(srv->key_file, http_settings.ssl_key_file, sizeof(srv->key_file));
	if (tls)
	{
		if (!http_settings.ssl_cert_file[0] || !http_settings.ssl_key_file[0])
			ereport(FATAL,
					(errmsg("hapg http: hapg.http_ssl_cert_file and hapg.http_ssl_key_file must be set together"),
					 errhint("Set both for HTTPS, or neither for plain HTTP.")));
		if (MHD_is_feature_supported(MHD_FEATURE_TLS) != MHD_YES)
			ereport(FATAL,
					(errmsg("hapg http: this libmicrohttpd has no TLS support"),
					 errhint("Install a libmicrohttpd built with GnuTLS (Debian's is).")));
		srv->cert = read_pem(http_settings.ssl_cert_file);
		srv->key = read_pem(http_settings.ssl_key_file);
		if (srv->cert == NULL || srv->key == NULL)
			ereport(FATAL,
					(errmsg("hapg http: cannot read the certificate or key of the HTTP endpoint"),
					 errhint("Check hapg.http_ssl_cert_file and hapg.http_ssl_key_file.")));
	}
	for (tok = strtok_r(list, ",", &save); tok != NULL; tok = strtok_r(NULL, ",", &save))
	{
		char	   *end;

		while (*tok == ' ')
			tok++;
		end = tok + strlen(tok);
		while (end > tok && end[-1] == ' ')
			*--end = '\0';
		if (*tok)
			started += listen_on(srv, tok);
	}
	pfree(list);
	if (started == 0)
		ereport(FATAL,
				(errmsg("hapg http: could not listen on port %d (hapg.http_listen_addresses '%s')",
						http_settings.port, http_settings.listen_addresses),
				 errhint("Another process may use the port: set hapg.http_port (0 turns the endpoint off).")));
	ereport(LOG, (errmsg("hapg http: serving %s on port %d (%d listen socket%s)",
						 srv->cert ? "HTTPS" : "HTTP", http_settings.port, started,
						 started == 1 ? "" : "s")));
}

/*
 * Tell the probe (kubernetes/hapg-probe) where this server's endpoint is:
 * PGDATA/hapg.http holds "port host pid scheme", written atomically once the
 * endpoint listens and removed when this worker exits.  A file in the
 * data directory cannot name another server's endpoint.
 */
static void
write_endpoint_file(HttpServer *srv)
{
	const char *list = http_settings.listen_addresses;
	char		host[256];
	const char *comma;
	FILE	   *f;

	if (strchr(list, '*') || strstr(list, "0.0.0.0") || strstr(list, "127.0.0.1") ||
		strstr(list, "localhost"))
		strlcpy(host, "127.0.0.1", sizeof(host));
	else
	{
		while (*list == ' ')
			list++;
		comma = strchr(list, ',');
		strlcpy(host, list, Min(sizeof(host), comma ? (size_t) (comma - list) + 1 : sizeof(host)));
		if (strchr(host, ' '))
			*strchr(host, ' ') = '\0';
	}
	f = AllocateFile(HAPG_HTTP_FILE ".tmp", "w");
	if (f == NULL || fprintf(f, "%d %s %d %s\n", http_settings.port, host, (int) MyProcPid,
							 srv->cert ? "https" : "http") < 0 ||
		FreeFile(f) != 0 || rename(HAPG_HTTP_FILE ".tmp", HAPG_HTTP_FILE) != 0)
		ereport(LOG, (errcode_for_file_access(),
					  errmsg("hapg http: could not write \"%s\": %m", HAPG_HTTP_FILE),
					  errhint("The probe (hapg-probe) finds the endpoint through this file.")));
}

/* At exit: the endpoint is gone. */
static void
remove_endpoint_file(int code pg_attribute_unused(), Datum arg pg_attribute_unused())
{
	(void) unlink(HAPG_HTTP_FILE);
}

/* Wait for a connection's data, the latch, or libmicrohttpd's next timeout. */
static void
wait_for_clients(HttpServer *srv)
{
	WaitEventSet *set;
	WaitEvent	occurred[HTTP_MAX_DAEMONS + 2];
	long		timeout_ms = 500;	/* also the pace of cut_off_slow_requests */
	int			i;

#if PG_VERSION_NUM >= 170000
	set = CreateWaitEventSet(NULL, 2 + srv->ndaemons);	/* 17 takes a resource owner */
#else
	set = CreateWaitEventSet(CurrentMemoryContext, 2 + srv->ndaemons);
#endif
	AddWaitEventToSet(set, WL_LATCH_SET, PGINVALID_SOCKET, MyLatch, NULL);
	AddWaitEventToSet(set, WL_EXIT_ON_PM_DEATH, PGINVALID_SOCKET, NULL, NULL);
	for (i = 0; i < srv->ndaemons; i++)
	{
		const union MHD_DaemonInfo *info =
			MHD_get_daemon_info(srv->daemons[i], MHD_DAEMON_INFO_EPOLL_FD);
		MHD_UNSIGNED_LONG_LONG t;

		if (info != NULL)
			AddWaitEventToSet(set, WL_SOCKET_READABLE, info->epoll_fd, NULL, NULL);
		if (MHD_get_timeout(srv->daemons[i], &t) == MHD_YES && (long) t < timeout_ms)
			timeout_ms = (long) t;
	}
	(void) WaitEventSetWait(set, timeout_ms, occurred, lengthof(occurred), PG_WAIT_EXTENSION);
	FreeWaitEventSet(set);
	ResetLatch(MyLatch);
}

/*
 * On a reload: do the TLS settings, or the files they name, differ from
 * what the daemons serve?  A certificate renewed in place (cert-manager
 * rewrites the same files) counts; a file that cannot be read now keeps
 * the running daemons (read_pem logged why).
 */
static bool
tls_changed(HttpServer *srv)
{
	char	   *cert;
	char	   *key;
	bool		changed;

	if (strcmp(srv->cert_file, http_settings.ssl_cert_file) != 0 ||
		strcmp(srv->key_file, http_settings.ssl_key_file) != 0)
		return true;
	if (srv->cert == NULL)
		return false;
	cert = read_pem(srv->cert_file);
	key = read_pem(srv->key_file);
	changed = cert != NULL && key != NULL &&
		(strcmp(cert, srv->cert) != 0 || strcmp(key, srv->key) != 0);
	if (cert)
		pfree(cert);
	if (key)
		pfree(key);
	return changed;
}

/* Worker entry point, registered by hapg_http_init. */
void
hapg_http_main(Datum arg pg_attribute_unused())
{
	HttpServer *srv;
	MemoryContext loop_cxt;
	int			i;

	pqsignal(SIGHUP, SignalHandlerForConfigReload);
	pqsignal(SIGTERM, SignalHandlerForShutdownRequest);
	BackgroundWorkerUnblockSignals();
	hapg_shmem_attach();
	if (http_shared == NULL)
		ereport(FATAL, (errmsg("hapg http: shared memory is not set up")));

	srv = MemoryContextAllocZero(TopMemoryContext, sizeof(HttpServer));
	srv->shared = MemoryContextAllocZero(TopMemoryContext, sizeof(HapgShared));
	srv->view = MemoryContextAllocZero(TopMemoryContext, sizeof(HapgHttpView));
	srv->nslots = http_settings.max_connections * HTTP_MAX_DAEMONS;
	srv->slots = MemoryContextAllocZero(TopMemoryContext, sizeof(ConnSlot) * srv->nslots);
	loop_cxt = AllocSetContextCreate(TopMemoryContext, "hapg http loop", ALLOCSET_DEFAULT_SIZES);
	start_daemons(srv);
	on_proc_exit(remove_endpoint_file, (Datum) 0);
	write_endpoint_file(srv);
	take_snapshot(srv);

	for (;;)
	{
		MemoryContext old;

		CHECK_FOR_INTERRUPTS();
		if (ShutdownRequestPending)
		{
			stop_daemons(srv);
			proc_exit(0);
		}
		if (ConfigReloadPending)
		{
			ConfigReloadPending = false;
			ProcessConfigFile(PGC_SIGHUP);
			if (tls_changed(srv))
			{
				ereport(LOG, (errmsg("hapg http: TLS settings or files changed: listening again")));
				stop_daemons(srv);
				start_daemons(srv);
				write_endpoint_file(srv);
			}
		}
		old = MemoryContextSwitchTo(loop_cxt);
		wait_for_clients(srv);
		if (hapg_mono_ms() - srv->view_ms >= SNAPSHOT_MS)
			take_snapshot(srv);
		for (i = 0; i < srv->ndaemons; i++)
			(void) MHD_run(srv->daemons[i]);
		cut_off_slow_requests(srv);
		MemoryContextSwitchTo(old);
		MemoryContextReset(loop_cxt);
	}
}
