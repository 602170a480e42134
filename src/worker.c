/*
 * worker.c
 *		The hapg background worker: observe, decide, act, publish.
 *
 * One cycle runs every hapg.loop_wait, or earlier when a watch shows the
 * Lease changed or a backend sets our latch.  A cycle reads this server's
 * state from shared memory, makes sure it has a current view of the Lease
 * and the member Pods (from watches, or by reading), asks the pure decision
 * in lease.c what to do, carries that out as a compare-and-swap on the
 * Lease, publishes this member's Pod when something users care about
 * changed, and copies the result into shared memory for SQL.
 *
 * All per-cycle allocations go into a memory context reset every iteration.
 */
#include "hapg.h"

#include <sys/stat.h>
#include <unistd.h>
#include "kube.h"

#include "miscadmin.h"
#include "access/xlog.h"
#include "pgstat.h"
#include "postmaster/bgworker.h"
#include "postmaster/bgwriter.h"
#include "postmaster/interrupt.h"
#include "storage/ipc.h"
#include "storage/latch.h"
#include "storage/proc.h"
#include "tcop/tcopprot.h"
#include "utils/memutils.h"
#include "utils/timestamp.h"

#define WATCH_TIMEOUT_S 240
#define ERROR_LOG_INTERVAL_MS (60 * 1000)
#define MAX_CAS_ATTEMPTS 3
#define STREAM_LOSS_GRACE_MS 2000	/* a WAL receiver restart is not news */
#define LOCAL_ANSWER_GRACE_MS 300	/* a switchover asked on the leader */
#define HANDOVER_WAIT_MS (120 * 1000)	/* for the server to stop */

/* Settings in force (the last valid combination). */
typedef struct Settings
{
	bool		ready;
	char		cluster[HAPG_NAME_LEN];
	char		member[HAPG_NAME_LEN];
	char		namespace[HAPG_NAME_LEN];
	char		role_label[256];
	char		connect_address[HAPG_ADDR_LEN];
	int			ttl;
	int			loop_wait;
	int			retry_timeout;
	bool		timing_valid;
	char		config_error[HAPG_MSG_LEN];
} Settings;

/* The Lease as last read; the raw object is kept so a replace preserves it. */
typedef struct LeaseCache
{
	bool		valid;			/* a read succeeded and no watch gap since */
	bool		fresh;			/* read (or watched) during this cycle */
	json_object *obj;			/* NULL if the Lease does not exist */
	HapgLeaseInfo info;
	int64		observed_ms;
	TimestampTz observed_at;
	char		watch_rv[HAPG_RV_LEN];
} LeaseCache;

typedef struct PodCache
{
	bool		valid;
	int			n;
	HapgPodInfo pods[HAPG_MAX_MEMBERS];
	TimestampTz seen_at[HAPG_MAX_MEMBERS];
	char		rv[HAPG_RV_LEN];
} PodCache;

static Settings cfg;
static LeaseCache lease;
static PodCache pods;
static KubeWatch *lease_watch;
static KubeWatch *pod_watch;
static int64 lease_watch_retry_ms;
static int64 pod_watch_retry_ms;
static int64 lease_event_ms;	/* last time the Lease watch said anything */

static bool was_leader;
static int64 last_renew_sent_ms;
static HapgRole current_role = HAPG_ROLE_UNKNOWN;
static int64 expires_in_ms;
static bool wake_cycle;
static bool pod_missing_logged;
static char published_key[512];

/* failover state */
static bool promoting;			/* won the Lease as a standby, promotion asked */
static int64 promote_asked_ms;
static HapgHistoryEntry pending_history;	/* goes into the next Lease write */
static bool have_pending_history;
static char candidacy_term[HAPG_RV_LEN];	/* term of my published candidacy */
static int64 candidacy_sent_ms;
static uint64 candidacy_lsn;
static bool fenced;				/* the postmaster was told to stop */
static bool handing_over;		/* stopping for a hand-over; the child releases */
static int64 handover_not_before_ms;	/* let a local caller get its answer first */
static char switchover_wait_why[HAPG_MSG_LEN];	/* last logged reason to wait */
static int64 decision_wake_ms;	/* the decision asked to run again at */
static int64 not_streaming_since_ms;

static bool api_ok;
static char last_error[HAPG_MSG_LEN];
static int64 logged_error_ms;
static int64 outage_start_ms;	/* first error of the current outage, or 0 */
static int64 loop_count;
static HapgLocalState local;

static MemoryContext loop_cxt;

static void sync_slots_as(bool leader);

/*
 * Record an API problem for hapg_status() and log it without flooding: the
 * first error of an outage at once, then at most one line a minute.
 */
static void
api_error(const char *fmt,...)
{
	va_list		ap;
	int64		now = hapg_mono_ms();

	va_start(ap, fmt);
	vsnprintf(last_error, sizeof(last_error), fmt, ap);
	va_end(ap);
	api_ok = false;
	if (outage_start_ms == 0 || now - logged_error_ms >= ERROR_LOG_INTERVAL_MS)
	{
		if (outage_start_ms == 0)
			outage_start_ms = now;
		ereport(LOG, (errmsg("hapg: %s", last_error)));
		logged_error_ms = now;
	}
}

/* Close an outage in the log once a whole cycle went without API errors. */
static void
api_cycle_done(void)
{
	if (api_ok && outage_start_ms != 0)
	{
		ereport(LOG,
				(errmsg("hapg: Kubernetes API usable again after %.1f s of errors",
						(hapg_mono_ms() - outage_start_ms) / 1000.0)));
		outage_start_ms = 0;
	}
}

/* Take the new settings if they hang together; otherwise keep the old ones. */
static void
load_settings(bool first)
{
	char		why[HAPG_MSG_LEN];
	char		msg[HAPG_MSG_LEN];
	bool		was_ready = cfg.ready;
	char		old_why[HAPG_MSG_LEN];

	strlcpy(old_why, cfg.config_error, sizeof(old_why));
	if (!hapg_timing_valid(hapg_ttl, hapg_loop_wait, hapg_retry_timeout, msg, sizeof(msg)))
	{
		if (cfg.timing_valid)
		{
			ereport(WARNING,
					(errmsg("hapg: invalid timing settings ignored: %s", msg),
					 errdetail("Keeping hapg.ttl = %ds, hapg.loop_wait = %ds, hapg.retry_timeout = %ds.",
							   cfg.ttl, cfg.loop_wait, cfg.retry_timeout),
					 errhint("Choose values with hapg.loop_wait + 2 * hapg.retry_timeout <= hapg.ttl and reload.")));
			snprintf(cfg.config_error, sizeof(cfg.config_error),
					 "invalid timing settings ignored: %s", msg);
		}
		else
		{
			if (strcmp(cfg.config_error, msg) != 0)
				ereport(WARNING,
						(errmsg("hapg: invalid timing settings: %s; hapg is idle", msg),
						 errhint("Choose values with hapg.loop_wait + 2 * hapg.retry_timeout <= hapg.ttl and reload.")));
			strlcpy(cfg.config_error, msg, sizeof(cfg.config_error));
			cfg.ready = false;
			return;
		}
	}
	else
	{
		cfg.ttl = hapg_ttl;
		cfg.loop_wait = hapg_loop_wait;
		cfg.retry_timeout = hapg_retry_timeout;
		cfg.timing_valid = true;
		cfg.config_error[0] = '\0';
	}

	if (!hapg_settings_ready(why, sizeof(why)))
	{
		if (was_ready || first || strcmp(old_why, why) != 0)
			ereport(LOG, (errmsg("hapg: %s", why)));
		strlcpy(cfg.config_error, why, sizeof(cfg.config_error));
		cfg.ready = false;
		return;
	}

	if (cfg.ready && (strcmp(cfg.cluster, hapg_cluster_name) != 0 ||
					  strcmp(cfg.member, hapg_effective_member()) != 0 ||
					  strcmp(cfg.namespace, hapg_effective_namespace()) != 0))
	{
		/* a different cluster or identity: forget everything we knew */
		kube_watch_stop(lease_watch);
		kube_watch_stop(pod_watch);
		if (lease.obj)
			json_object_put(lease.obj);
		memset(&lease, 0, sizeof(lease));
		memset(&pods, 0, sizeof(pods));
		was_leader = false;
		published_key[0] = '\0';
	}
	strlcpy(cfg.cluster, hapg_cluster_name, sizeof(cfg.cluster));
	strlcpy(cfg.member, hapg_effective_member(), sizeof(cfg.member));
	strlcpy(cfg.namespace, hapg_effective_namespace(), sizeof(cfg.namespace));
	strlcpy(cfg.role_label, hapg_role_label, sizeof(cfg.role_label));
	strlcpy(cfg.connect_address, hapg_effective_connect_address(),
			sizeof(cfg.connect_address));
	/* every request must finish well inside the leader's renewal budget */
	kube_configure(hapg_effective_url(), hapg_token_file, hapg_ca_file,
				   Max(500, cfg.retry_timeout * 1000 / 2));
	if (!cfg.ready)
		ereport(LOG,
				(errmsg("hapg: member \"%s\" of cluster \"%s\" in namespace \"%s\", API %s, ttl %ds, loop_wait %ds, retry_timeout %ds",
						cfg.member, cfg.cluster, cfg.namespace, hapg_effective_url(),
						cfg.ttl, cfg.loop_wait, cfg.retry_timeout)));
	cfg.ready = true;
}

static char *
lease_path(void)
{
	return psprintf("/apis/coordination.k8s.io/v1/namespaces/%s/leases/%s",
					cfg.namespace, cfg.cluster);
}

/* Wall-clock Unix microseconds: schedules are wall-clock times. */
static int64
unix_now_us(void)
{
	return GetCurrentTimestamp() +
		((int64) (POSTGRES_EPOCH_JDATE - UNIX_EPOCH_JDATE) * SECS_PER_DAY * USECS_PER_SEC);
}

/* Integer resourceVersions order events; anything else is taken as newer. */
static bool
rv_older(const char *a, const char *b)
{
	char	   *ea,
			   *eb;
	unsigned long long va = strtoull(a, &ea, 10);
	unsigned long long vb = strtoull(b, &eb, 10);

	if (*a == '\0' || *b == '\0' || *ea != '\0' || *eb != '\0')
		return false;
	return va < vb;
}

/*
 * Adopt a Lease object (or its absence) as the current view.  The expiry
 * clock restarts only when the resourceVersion changes: that is the moment
 * this member observed a renewal.
 */
static void
adopt_lease(json_object *obj, int64 seen_ms)
{
	HapgLeaseInfo info;
	char		err[HAPG_MSG_LEN];

	if (obj == NULL)
	{
		if (lease.obj)
			json_object_put(lease.obj);
		lease.obj = NULL;
		memset(&lease.info, 0, sizeof(lease.info));
		lease.info.view.known = true;
		lease.info.view.exists = false;
		lease.observed_ms = seen_ms;
		lease.observed_at = GetCurrentTimestamp();
		lease.valid = true;
		return;
	}
	if (!hapg_parse_lease(obj, &info, err, sizeof(err)))
	{
		api_error("unusable Lease \"%s\": %s", cfg.cluster, err);
		return;
	}
	if (lease.obj && lease.info.view.exists &&
		rv_older(info.view.resource_version, lease.info.view.resource_version))
		return;					/* a late event for a version we are past */
	if (!lease.info.view.exists ||
		strcmp(info.view.resource_version, lease.info.view.resource_version) != 0)
	{
		/*
		 * The expiry clock restarts when the holder renews, which always
		 * changes renewTime.  An edit by another member (pause, a
		 * switchover request) changes neither holder nor renewTime, and must
		 * not stretch a silent leader's Lease.
		 */
		if (!lease.info.view.exists ||
			strcmp(info.view.holder, lease.info.view.holder) != 0 ||
			strcmp(info.view.renew_time, lease.info.view.renew_time) != 0 ||
			info.view.duration_s != lease.info.view.duration_s)
		{
			lease.observed_ms = seen_ms;
			lease.observed_at = GetCurrentTimestamp();
		}
		if (strcmp(info.view.holder, lease.info.view.holder) != 0 ||
			info.paused != lease.info.paused ||
			info.switchover.pending != lease.info.switchover.pending ||
			info.switchover.scheduled_at_us != lease.info.switchover.scheduled_at_us ||
			info.has_handover != lease.info.has_handover)
			wake_cycle = true;
	}
	if (lease.obj)
		json_object_put(lease.obj);
	lease.obj = json_object_get(obj);
	lease.info = info;
	lease.valid = true;
	strlcpy(lease.watch_rv, info.view.resource_version, sizeof(lease.watch_rv));
}

/* GET the Lease: the read a decision and its compare-and-swap rest on. */
static bool
read_lease(void)
{
	KubeResponse r;
	json_object *obj;
	char		err[HAPG_MSG_LEN];
	int64		sent = hapg_mono_ms();
	bool		ok = false;

	if (!kube_request("GET", lease_path(), NULL, NULL, &r))
	{
		api_error("could not read Lease: %s", r.error);
		return false;
	}
	if (r.status == 404)
	{
		adopt_lease(NULL, sent);
		lease.watch_rv[0] = '\0';
		ok = true;
	}
	else if (r.status != 200)
		api_error("could not read Lease: %s", r.error);
	else if (!hapg_parse_json(r.body, r.len, &obj, err, sizeof(err)))
		api_error("could not read Lease: %s", err);
	else
	{
		adopt_lease(obj, sent);
		json_object_put(obj);
		ok = lease.valid;
	}
	kube_response_free(&r);
	lease.fresh = ok;
	return ok;
}

/* Insert or replace a Pod in the cache (sorted by name for stable output). */
static void
cache_pod(const HapgPodInfo *p, bool deleted)
{
	int			i;

	for (i = 0; i < pods.n; i++)
		if (strcmp(pods.pods[i].name, p->name) == 0)
			break;
	if (deleted)
	{
		if (i < pods.n)
		{
			memmove(&pods.pods[i], &pods.pods[i + 1], (pods.n - i - 1) * sizeof(HapgPodInfo));
			memmove(&pods.seen_at[i], &pods.seen_at[i + 1], (pods.n - i - 1) * sizeof(TimestampTz));
			pods.n--;
		}
		return;
	}
	if (i == pods.n)
	{
		if (pods.n >= HAPG_MAX_MEMBERS)
		{
			api_error("more than %d member Pods; ignoring \"%s\"", HAPG_MAX_MEMBERS, p->name);
			return;
		}
		/* keep sorted */
		for (i = 0; i < pods.n && strcmp(pods.pods[i].name, p->name) < 0; i++)
			;
		memmove(&pods.pods[i + 1], &pods.pods[i], (pods.n - i) * sizeof(HapgPodInfo));
		memmove(&pods.seen_at[i + 1], &pods.seen_at[i], (pods.n - i) * sizeof(TimestampTz));
		pods.n++;
	}
	pods.pods[i] = *p;
	pods.seen_at[i] = GetCurrentTimestamp();
}

/* The cached Pod of a member, or NULL. */
static HapgPodInfo *
find_pod(const char *name)
{
	int			i;

	for (i = 0; i < pods.n; i++)
		if (strcmp(pods.pods[i].name, name) == 0)
			return &pods.pods[i];
	return NULL;
}

static char *
pods_path(void)
{
	char	   *sel = kube_escape(psprintf("%s=%s", HAPG_CLUSTER_LABEL, cfg.cluster));

	return psprintf("/api/v1/namespaces/%s/pods?labelSelector=%s", cfg.namespace, sel);
}

/* LIST the member Pods: the starting point of the Pod watch. */
static bool
list_pods(void)
{
	KubeResponse r;
	json_object *obj;
	char		err[HAPG_MSG_LEN];
	HapgPodInfo *found = palloc(sizeof(HapgPodInfo) * HAPG_MAX_MEMBERS);
	int			n;
	int			i;
	bool		ok = false;

	if (!kube_request("GET", pods_path(), NULL, NULL, &r))
	{
		api_error("could not list member Pods: %s", r.error);
		return false;
	}
	if (r.status != 200)
		api_error("could not list member Pods: %s", r.error);
	else if (!hapg_parse_json(r.body, r.len, &obj, err, sizeof(err)))
		api_error("could not list member Pods: %s", err);
	else
	{
		n = hapg_parse_pod_list(obj, cfg.role_label, found, HAPG_MAX_MEMBERS,
								pods.rv, sizeof(pods.rv), err, sizeof(err));
		json_object_put(obj);
		if (n < 0)
			api_error("could not list member Pods: %s", err);
		else
		{
			pods.n = 0;
			for (i = 0; i < n; i++)
				cache_pod(&found[i], false);
			pods.valid = true;
			ok = true;
		}
	}
	kube_response_free(&r);
	return ok;
}

/* A watch said the Lease changed: adopt it, and wake the loop if it matters. */
static void
on_lease_event(void *arg pg_attribute_unused(), const char *type, json_object *obj)
{
	const char *rv = hapg_object_rv(obj);

	lease_event_ms = hapg_mono_ms();
	if (strcmp(type, "ERROR") == 0)
	{
		/* usually 410 Gone: our resourceVersion is too old; read afresh */
		lease.watch_rv[0] = '\0';
		lease.valid = false;
		return;
	}
	if (strcmp(type, "BOOKMARK") == 0)
	{
		if (rv)
			strlcpy(lease.watch_rv, rv, sizeof(lease.watch_rv));
		return;
	}
	if (hapg_object_name(obj) == NULL || strcmp(hapg_object_name(obj), cfg.cluster) != 0)
		return;
	if (strcmp(type, "DELETED") == 0)
	{
		adopt_lease(NULL, hapg_mono_ms());
		if (rv)
			strlcpy(lease.watch_rv, rv, sizeof(lease.watch_rv));
		wake_cycle = true;
		return;
	}
	adopt_lease(obj, hapg_mono_ms());
}

static void
on_pod_event(void *arg pg_attribute_unused(), const char *type, json_object *obj)
{
	HapgPodInfo p;
	char		err[HAPG_MSG_LEN];
	const char *rv = hapg_object_rv(obj);

	if (strcmp(type, "ERROR") == 0)
	{
		pods.rv[0] = '\0';
		pods.valid = false;
		return;
	}
	if (rv)
		strlcpy(pods.rv, rv, sizeof(pods.rv));
	if (strcmp(type, "BOOKMARK") == 0)
		return;
	if (!hapg_parse_pod(obj, cfg.role_label, &p, err, sizeof(err)))
		return;
	/* our own Pod appearing or vanishing changes whether we take part */
	if (strcmp(p.name, cfg.member) == 0 &&
		(strcmp(type, "DELETED") == 0) == (find_pod(p.name) != NULL))
		wake_cycle = true;
	/* another member spoke in the election we take part in */
	if (candidacy_term[0] && p.has_candidacy && strcmp(p.cand_term, candidacy_term) == 0)
		wake_cycle = true;
	/* the leader's address appeared or moved: a standby follows it now */
	if (lease.info.view.exists && strcmp(p.name, lease.info.view.holder) == 0 &&
		strcmp(p.name, cfg.member) != 0)
	{
		HapgPodInfo *known = find_pod(p.name);

		if (known == NULL || strcmp(known->connect_address, p.connect_address) != 0)
			wake_cycle = true;
	}
	cache_pod(&p, strcmp(type, "DELETED") == 0);
}

/* (Re)open the watches that lapsed, at most once per loop_wait each. */
static void
ensure_watches(int64 now)
{
	if (!kube_watch_active(lease_watch))
	{
		if (kube_watch_error(lease_watch)[0])
			lease.valid = false;	/* we may have missed changes */
		if (lease.valid && now >= lease_watch_retry_ms)
		{
			char	   *sel = kube_escape(psprintf("metadata.name=%s", cfg.cluster));
			char	   *path = psprintf("/apis/coordination.k8s.io/v1/namespaces/%s/leases?watch=1&allowWatchBookmarks=true&timeoutSeconds=%d&fieldSelector=%s%s%s",
										cfg.namespace, WATCH_TIMEOUT_S, sel,
										lease.watch_rv[0] ? "&resourceVersion=" : "",
										lease.watch_rv);

			kube_watch_start(lease_watch, path, WATCH_TIMEOUT_S);
			lease_watch_retry_ms = now + cfg.loop_wait * 1000L;
		}
	}
	if (!kube_watch_active(pod_watch))
	{
		if (kube_watch_error(pod_watch)[0])
			pods.valid = false;
		if (pods.valid && now >= pod_watch_retry_ms)
		{
			char	   *path = psprintf("%s&watch=1&allowWatchBookmarks=true&timeoutSeconds=%d&resourceVersion=%s",
										pods_path(), WATCH_TIMEOUT_S, pods.rv);

			kube_watch_start(pod_watch, path, WATCH_TIMEOUT_S);
			pod_watch_retry_ms = now + cfg.loop_wait * 1000L;
		}
	}
}

/* Is an answer to a Lease write the Lease with the holder we wrote? */
static bool
is_written_lease(json_object *obj, const char *holder, char *err, int errlen)
{
	HapgLeaseInfo info;

	if (!hapg_parse_lease(obj, &info, err, errlen))
		return false;
	if (strcmp(info.view.holder, holder) != 0)
	{
		snprintf(err, errlen, "holder \"%s\"", info.view.holder);
		return false;
	}
	return true;
}

/* Carry out one decided write; returns the HTTP status (0 = no answer). */
static long
write_lease(const HapgDecision *d, int64 *sent_ms)
{
	HapgLeaseWrite w;
	char		now_str[40];
	char	   *members;
	char	   *body;
	KubeResponse r;
	long		status;
	json_object *obj;
	char		err[HAPG_MSG_LEN];
	bool		ok;

	hapg_format_microtime(GetCurrentTimestamp() + ((int64) POSTGRES_EPOCH_JDATE - UNIX_EPOCH_JDATE) * SECS_PER_DAY * USECS_PER_SEC,
						  now_str, sizeof(now_str));
	memset(&w, 0, sizeof(w));
	w.name = cfg.cluster;
	w.namespace = cfg.namespace;
	w.cluster = cfg.cluster;
	w.holder = d->action == HAPG_ACT_RELEASE ? "" : cfg.member;
	w.duration_s = cfg.ttl;
	w.add_history = have_pending_history && pending_history.new_timeline > 0 &&
		d->action == HAPG_ACT_RENEW ? &pending_history : NULL;
	w.renew_time = now_str;
	w.leader_lsn = local.lsn;
	w.leader_timeline = local.timeline;
	members = hapg_build_members_json(local.senders, local.nsenders);
	w.members_json = members;
	if (d->action == HAPG_ACT_ACQUIRE || d->action == HAPG_ACT_CREATE)
	{
		/* a new leader: a hand-over is done, an old switchover request void */
		w.handover_json = "";
		w.switchover_json = "";
	}
	if (d->action == HAPG_ACT_CREATE)
	{
		w.transitions = 0;
		w.acquire_time = now_str;
	}
	else
	{
		w.resource_version = lease.info.view.resource_version;
		w.transitions = lease.info.view.transitions +
			(d->action == HAPG_ACT_ACQUIRE ? 1 : 0);
		w.acquire_time = d->action == HAPG_ACT_ACQUIRE ? now_str : NULL;
	}
	body = hapg_build_lease(d->action == HAPG_ACT_CREATE ? NULL : lease.obj, &w);
	free(members);
	if (body == NULL)
	{
		api_error("out of memory building the Lease");
		return 0;
	}

	*sent_ms = hapg_mono_ms();
	if (d->action == HAPG_ACT_CREATE)
		ok = kube_request("POST", psprintf("/apis/coordination.k8s.io/v1/namespaces/%s/leases",
										   cfg.namespace),
						  "application/json", body, &r);
	else
		ok = kube_request("PUT", lease_path(), "application/json", body, &r);
	free(body);
	if (!ok)
	{
		api_error("could not %s the Lease: %s", hapg_action_name(d->action), r.error);
		return 0;
	}
	status = r.status;
	if (status == 200 || status == 201)
	{
		/*
		 * Only an answer that is the Lease as we wrote it proves the write:
		 * a 200 with a body that is not (a proxy's error page, a cut-off
		 * answer) may come from a request the API server never executed,
		 * and counting it as a renewal would move the fence deadline past
		 * the instant the others see the Lease expire.
		 */
		if (!hapg_parse_json(r.body, r.len, &obj, err, sizeof(err)))
		{
			api_error("could not %s the Lease: HTTP %ld with an answer that "
					  "is not JSON (%s)",
					  hapg_action_name(d->action), status, err);
			lease.valid = false;
			status = 0;
		}
		else if (!is_written_lease(obj, w.holder, err, sizeof(err)))
		{
			api_error("could not %s the Lease: HTTP %ld with an answer that "
					  "is not the Lease written (%s)",
					  hapg_action_name(d->action), status, err);
			json_object_put(obj);
			lease.valid = false;
			status = 0;
		}
		else
		{
			adopt_lease(obj, *sent_ms);
			json_object_put(obj);
		}
	}
	else if (status != 409)
		api_error("could not %s the Lease: %s", hapg_action_name(d->action), r.error);
	kube_response_free(&r);
	return status;
}

/* Build the decision's input from what this cycle observed. */
static void
fill_input(HapgDecisionInput *in, bool lease_known, bool pod_exists)
{
	static HapgCandidate election_peers[HAPG_MAX_MEMBERS];
	int			i;

	memset(in, 0, sizeof(*in));
	in->now_ms = hapg_mono_ms();
	in->me = cfg.member;
	in->in_recovery = local.in_recovery;
	in->pod_exists = pod_exists;
	in->ttl_s = cfg.ttl;
	in->retry_timeout_s = cfg.retry_timeout;
	in->was_leader = was_leader;
	in->last_renew_sent_ms = last_renew_sent_ms;
	in->renew_interval_ms = cfg.loop_wait * 1000L;
	in->lease = lease.info.view;
	in->lease.known = lease_known;
	in->lease.observed_ms = lease.observed_ms;
	in->starting = local.starting;
	in->datadir_ok = hapg_datadir_ok();
	in->fence_margin_ms = hapg_fence_margin_ms(cfg.ttl);
	in->promoting = promoting;
	in->nofailover = hapg_nofailover;
	in->priority = hapg_failover_priority;
	in->max_lag = (uint64) hapg_maximum_lag_on_failover;
	in->my_timeline = local.timeline;
	in->has_leader_lsn = lease.info.has_leader_lsn;
	in->leader_lsn = lease.info.leader_lsn;
	in->leader_timeline = lease.info.leader_timeline;
	in->candidacy_term = candidacy_term;
	in->candidacy_sent_ms = candidacy_sent_ms;
	/* rank on the position I published, as the others see it */
	in->my_lsn = strcmp(candidacy_term, lease.info.view.resource_version) == 0 ?
		candidacy_lsn : local.lsn;
	in->settle_ms = Min(1000L, cfg.retry_timeout * 1000L / 2);
	in->paused = lease.info.paused;
	in->has_handover = lease.info.has_handover;
	in->handover_to = lease.info.handover_to;
	in->handover_lsn = lease.info.handover_lsn;
	in->ncand = 0;
	in->cand = election_peers;
	for (i = 0; i < pods.n && in->ncand < HAPG_MAX_MEMBERS; i++)
	{
		const HapgPodInfo *p = &pods.pods[i];
		HapgCandidate *c = &election_peers[in->ncand];

		if (strcmp(p->name, cfg.member) == 0 ||
			strcmp(p->name, lease.info.view.holder) == 0 || p->deleting)
			continue;
		memset(c, 0, sizeof(*c));
		strlcpy(c->name, p->name, sizeof(c->name));
		c->published = p->has_candidacy &&
			strcmp(p->cand_term, lease.info.view.resource_version) == 0;
		c->eligible = p->cand_eligible;
		c->lsn = p->cand_lsn;
		c->timeline = p->cand_timeline;
		c->priority = p->cand_priority;
		in->ncand++;
	}
}

/* libpq connection string of the current Lease holder, or NULL. */
static char *
leader_conninfo(void)
{
	HapgPodInfo *p;

	if (!lease.info.view.exists || lease.info.view.holder[0] == '\0' ||
		strcmp(lease.info.view.holder, cfg.member) == 0)
		return NULL;
	p = find_pod(lease.info.view.holder);
	if (p == NULL || p->connect_address[0] == '\0')
		return NULL;
	return hapg_leader_conninfo(p->connect_address);
}

/* Publish my position for this election on my Pod. */
static bool
publish_candidacy(const HapgDecision *d)
{
	char	   *patch = hapg_build_candidacy_patch(d->term, d->eligible, local.lsn,
												   local.timeline, hapg_failover_priority);
	KubeResponse r;
	bool		ok = false;

	if (patch == NULL)
		return false;
	if (kube_request("PATCH", psprintf("/api/v1/namespaces/%s/pods/%s", cfg.namespace, cfg.member),
					 "application/merge-patch+json", patch, &r))
	{
		ok = r.status == 200;
		if (!ok)
			api_error("could not publish candidacy: %s", r.error);
		kube_response_free(&r);
	}
	else
		api_error("could not publish candidacy: %s", r.error);
	free(patch);
	if (ok)
	{
		char		lsn[32];

		strlcpy(candidacy_term, d->term, sizeof(candidacy_term));
		candidacy_sent_ms = hapg_mono_ms();
		candidacy_lsn = local.lsn;
		hapg_format_lsn(local.lsn, lsn, sizeof(lsn));
		ereport(LOG,
				(errmsg("hapg: the Lease held by \"%s\" expired; %s candidate at %s on timeline %u%s%s",
						lease.info.view.holder[0] ? lease.info.view.holder : "(nobody)",
						d->eligible ? "eligible" : "ineligible", lsn, local.timeline,
						d->eligible ? "" : ": ", d->eligible ? "" : d->reason)));
	}
	return ok;
}

/* Ask the server to promote, and remember what to write into the history. */
static void
start_promotion(const char *reason, const char *old_holder)
{
	char		err[HAPG_MSG_LEN];

	if (!hapg_request_promotion(err, sizeof(err)))
	{
		ereport(WARNING, (errmsg("hapg: could not promote: %s", err)));
		return;
	}
	promoting = true;
	promote_asked_ms = hapg_mono_ms();
	memset(&pending_history, 0, sizeof(pending_history));
	pending_history.old_timeline = local.timeline;
	pending_history.lsn = local.lsn;
	snprintf(pending_history.reason, sizeof(pending_history.reason), "%s%s%s",
			 reason, old_holder[0] ? "; previous leader " : "", old_holder);
	strlcpy(pending_history.leader, cfg.member, sizeof(pending_history.leader));
	hapg_format_microtime(GetCurrentTimestamp() + ((int64) POSTGRES_EPOCH_JDATE - UNIX_EPOCH_JDATE) * SECS_PER_DAY * USECS_PER_SEC,
						  pending_history.time, sizeof(pending_history.time));
	have_pending_history = true;
	ereport(LOG, (errmsg("hapg: member \"%s\" holds the Lease and is promoting (%s)",
						 cfg.member, reason)));
}

/* The fence reason for the log, naming the holder when there is one. */
static const char *
fence_reason(const HapgDecision *d)
{
	if (lease.info.view.exists && lease.info.view.holder[0] &&
		strcmp(lease.info.view.holder, cfg.member) != 0)
		return psprintf("%s: the leader Lease \"%s\" is held by \"%s\"",
						d->reason, cfg.cluster, lease.info.view.holder);
	return d->reason;
}

/* Stop this server, leaving it set up to return as a standby. */
static void
fence(const char *reason, bool immediate)
{
	char	   *source = leader_conninfo();

	hapg_fence(reason, source, immediate);
	fenced = true;
	current_role = HAPG_ROLE_UNLEASED_PRIMARY;
}

/*
 * Decide and act, re-reading and deciding again after a 409: a conflict
 * says only that our read was stale, never by itself that we lost.
 */
static void
run_lease_protocol(bool pod_exists)
{
	HapgDecisionInput in;
	HapgDecision d;
	int			attempt;
	bool		lease_known = lease.valid;
	char		old_holder[HAPG_NAME_LEN];
	const char *why;

	decision_wake_ms = 0;
	for (attempt = 0; attempt < MAX_CAS_ATTEMPTS + 1; attempt++)
	{
		long		status;
		int64		sent_ms;

		fill_input(&in, lease_known, pod_exists);
		hapg_lease_decide(&in, &d);
		if (d.action == HAPG_ACT_NONE)
			break;
		if (d.action == HAPG_ACT_FENCE)
		{
			if (d.lost_lease)
				ereport(WARNING,
						(errmsg("hapg: member \"%s\" lost the leader Lease \"%s\" to \"%s\"",
								cfg.member, cfg.cluster, lease.info.view.holder)));
			fence(fence_reason(&d), !in.datadir_ok);
			return;
		}
		if (d.action == HAPG_ACT_CANDIDACY)
		{
			if (!publish_candidacy(&d))
				break;
			continue;			/* the others may all have spoken already */
		}
		strlcpy(old_holder, lease.info.view.holder, sizeof(old_holder));
		if (d.promote && lease.info.has_handover && old_holder[0] == '\0')
			strlcpy(old_holder, lease.info.handover_from, sizeof(old_holder));
		why = d.promote && lease.info.has_handover && lease.info.view.holder[0] == '\0' ?
			pstrdup(lease.info.handover_reason) : d.reason;
		/* a winner's slots must exist before its followers look for them */
		if (d.promote)
			sync_slots_as(true);
		status = write_lease(&d, &sent_ms);
		if (status == 200 || status == 201)
		{
			if (d.action == HAPG_ACT_RELEASE)
			{
				ereport(WARNING, (errmsg("hapg: released the leader Lease \"%s\": %s",
										 cfg.cluster, d.reason)));
				fence(d.reason, true);
				return;
			}
			last_renew_sent_ms = sent_ms;
			if (d.action == HAPG_ACT_RENEW && have_pending_history &&
				pending_history.new_timeline > 0)
				have_pending_history = false;	/* it is in the Lease now */
			if (d.action != HAPG_ACT_RENEW || !was_leader)
				ereport(LOG,
						(errmsg("hapg: member \"%s\" %s the leader Lease \"%s\" (transitions %d)",
								cfg.member,
								d.action == HAPG_ACT_CREATE ? "created and holds" :
								d.action == HAPG_ACT_ACQUIRE ? "acquired" : "holds",
								cfg.cluster, lease.info.view.transitions)));
			hapg_mark_joined(cfg.cluster);
			if (d.promote)
				start_promotion(why, strcmp(old_holder, cfg.member) == 0 ? "" : old_holder);
			break;
		}
		if (status != 409)
		{
			/* no answer or an error: our view may be stale, re-read next time */
			lease.valid = false;
			lease_known = false;
			fill_input(&in, false, pod_exists);
			hapg_lease_decide(&in, &d);
			break;
		}
		ereport(LOG,
				(errmsg("hapg: conflict writing the Lease (%s, resourceVersion %s); re-reading and deciding again",
						hapg_action_name(d.action), lease.info.view.resource_version)));
		lease_known = read_lease();
		if (!lease_known)
		{
			fill_input(&in, false, pod_exists);
			hapg_lease_decide(&in, &d);
			break;
		}
	}
	if (attempt > MAX_CAS_ATTEMPTS)
	{
		api_error("the Lease kept changing under %d compare-and-swap attempts", MAX_CAS_ATTEMPTS);
		fill_input(&in, false, pod_exists);
		hapg_lease_decide(&in, &d);
	}
	if (d.action == HAPG_ACT_FENCE)
	{
		fence(fence_reason(&d), !in.datadir_ok);
		return;
	}

	if (d.lost_lease && was_leader)
		ereport(WARNING,
				(errmsg("hapg: member \"%s\" lost the leader Lease \"%s\" to \"%s\"",
						cfg.member, cfg.cluster,
						lease.info.view.holder[0] ? lease.info.view.holder : "(nobody)")));
	if (d.wake_in_ms >= 0)
		decision_wake_ms = in.now_ms + d.wake_in_ms;
	was_leader = (d.role == HAPG_ROLE_LEADER);
	current_role = d.role;
	expires_in_ms = d.expires_in_ms;
}

/*
 * A standby follows the Lease holder.  One that cannot stream from it
 * because its timeline diverged (a former primary) asks the launcher to
 * rewind it.
 */
static void
follow_leader(void)
{
	char	   *conninfo;
	char		slot[NAMEDATALEN];
	int64		now = hapg_mono_ms();
	int64		patience = Max(10000L, 2000L * cfg.ttl);

	if (!local.in_recovery || local.starting || promoting || current_role == HAPG_ROLE_LEADER)
	{
		not_streaming_since_ms = 0;
		return;
	}
	conninfo = leader_conninfo();
	if (conninfo == NULL)
		return;
	if (hapg_use_slots)
		hapg_slot_name(cfg.member, slot, sizeof(slot));
	else
		slot[0] = '\0';
	if (hapg_follow(conninfo, slot))
	{
		ereport(LOG, (errmsg("hapg: following leader \"%s\" (%s)",
							 lease.info.view.holder, conninfo)));
		not_streaming_since_ms = now;
		return;
	}
	if (local.streaming)
	{
		not_streaming_since_ms = 0;
		return;
	}
	if (not_streaming_since_ms == 0)
		not_streaming_since_ms = now;
	if (lease.info.leader_timeline > (int) local.timeline &&
		now - not_streaming_since_ms >= patience)
	{
		char	   *why = psprintf("cannot stream from leader \"%s\" on timeline %d for %lld s while on timeline %u",
								   lease.info.view.holder, lease.info.leader_timeline,
								   (long long) ((now - not_streaming_since_ms) / 1000), local.timeline);

		ereport(WARNING, (errmsg("hapg: %s; stopping to rejoin through pg_rewind", why)));
		hapg_fence(why, conninfo, false);
		fenced = true;
	}
}

/* Keep the slots a leader holds for its members, and none on a standby. */
static void
sync_slots_as(bool leader)
{
	char		(*names)[HAPG_NAME_LEN];
	int			i;

	if (!hapg_use_slots || !pods.valid || local.starting)
		return;
	names = palloc(sizeof(*names) * HAPG_MAX_MEMBERS);
	for (i = 0; i < pods.n; i++)
		strlcpy(names[i], pods.pods[i].name, HAPG_NAME_LEN);
	hapg_sync_slots((const char (*)[HAPG_NAME_LEN]) names, pods.n, cfg.member,
					leader, 30000L * cfg.ttl);
}

/* Patch our own Pod when its role label or published status is out of date. */
static void
publish_pod(HapgPodInfo *pod)
{
	const char *label = NULL;
	const char *role;
	const char *state = hapg_local_state_name(&local);
	char		key[512];
	char	   *status;
	char	   *patch;
	KubeResponse r;
	char		err[HAPG_MSG_LEN];
	json_object *obj;

	static int64 stream_lost_ms = 0;

	/*
	 * A WAL receiver restarting (after a reload, or to switch timelines)
	 * stops streaming for a moment: publish that only once it lasts.
	 */
	if (local.in_recovery && !local.streaming && strcmp(pod->state, "streaming") == 0 &&
		strcmp(published_key, "") != 0 && current_role != HAPG_ROLE_LEADER)
	{
		int64		now = hapg_mono_ms();

		if (stream_lost_ms == 0)
			stream_lost_ms = now;
		if (now - stream_lost_ms < STREAM_LOSS_GRACE_MS)
		{
			if (decision_wake_ms == 0 || decision_wake_ms > stream_lost_ms + STREAM_LOSS_GRACE_MS)
				decision_wake_ms = stream_lost_ms + STREAM_LOSS_GRACE_MS;
			return;
		}
	}
	else
		stream_lost_ms = 0;

	if (current_role == HAPG_ROLE_LEADER && !local.in_recovery)
		label = "primary";
	else if (local.in_recovery && local.streaming &&
			 (lease.info.leader_timeline <= 0 || (int) local.timeline >= lease.info.leader_timeline))
		label = "replica";		/* not a standby that forked off the leader's history */
	role = current_role == HAPG_ROLE_LEADER ? "leader" :
		local.in_recovery ? "replica" : hapg_role_name(current_role);

	snprintf(key, sizeof(key), "%s|%s|%s|%u|%s|%d|%d", label ? label : "", role, state,
			 local.timeline, cfg.connect_address, hapg_nofailover, hapg_failover_priority);
	/* Up to date if we wrote it, and the Pod as last seen still agrees. */
	if (strcmp(key, published_key) == 0 &&
		strcmp(pod->role_label, label ? label : "") == 0 &&
		pod->has_status && strcmp(pod->role, role) == 0 &&
		strcmp(pod->state, state) == 0 && pod->timeline == (int) local.timeline &&
		strcmp(pod->connect_address, cfg.connect_address) == 0 &&
		pod->nofailover == hapg_nofailover && pod->priority == hapg_failover_priority)
		return;
	/* Written before and the cache merely lags: also nothing to do. */
	if (strcmp(key, published_key) == 0 && !pods.valid)
		return;

	status = hapg_build_status_json(role, state, local.timeline, local.lsn,
									cfg.connect_address, HAPG_VERSION,
									hapg_nofailover, hapg_failover_priority);
	patch = hapg_build_pod_patch(cfg.role_label, label, status);
	free(status);
	if (patch == NULL)
		return;
	if (!kube_request("PATCH", psprintf("/api/v1/namespaces/%s/pods/%s", cfg.namespace, cfg.member),
					  "application/merge-patch+json", patch, &r))
	{
		free(patch);
		api_error("could not update Pod \"%s\": %s", cfg.member, r.error);
		return;
	}
	free(patch);
	if (r.status == 200)
	{
		HapgPodInfo p;

		strlcpy(published_key, key, sizeof(published_key));
		if (hapg_parse_json(r.body, r.len, &obj, err, sizeof(err)))
		{
			if (hapg_parse_pod(obj, cfg.role_label, &p, err, sizeof(err)))
				cache_pod(&p, false);
			json_object_put(obj);
		}
		ereport(LOG,
				(errmsg("hapg: published Pod \"%s\": %s=%s, role %s, state %s, timeline %u",
						cfg.member, cfg.role_label, label ? label : "(none)", role, state,
						local.timeline)));
	}
	else
		api_error("could not update Pod \"%s\": %s", cfg.member, r.error);
	kube_response_free(&r);
}

/*
 * A Pod still labelled primary after its member lost the Lease (killed, or
 * cut off before it could say so) keeps a Service routing clients to it:
 * the leader takes the label off.  Only ever a write when one is stale.
 */
static void
clear_stale_primary_labels(void)
{
	int			i;

	if (current_role != HAPG_ROLE_LEADER || local.in_recovery || promoting || !pods.valid)
		return;
	for (i = 0; i < pods.n; i++)
	{
		HapgPodInfo *p = &pods.pods[i];
		char	   *patch;
		KubeResponse r;

		if (strcmp(p->name, cfg.member) == 0 || strcmp(p->role_label, "primary") != 0)
			continue;
		patch = hapg_build_pod_patch(cfg.role_label, NULL, NULL);
		if (patch == NULL)
			return;
		if (kube_request("PATCH", psprintf("/api/v1/namespaces/%s/pods/%s", cfg.namespace, p->name),
						 "application/merge-patch+json", patch, &r) && r.status == 200)
		{
			ereport(LOG, (errmsg("hapg: removed the stale %s=primary label from Pod \"%s\"",
								 cfg.role_label, p->name)));
			p->role_label[0] = '\0';
		}
		else
			api_error("could not remove the stale %s=primary label from Pod \"%s\": %s",
					  cfg.role_label, p->name, r.error);
		kube_response_free(&r);
		free(patch);
	}
}

/* Copy the view of the cluster into shared memory for hapg_members. */
static void
publish_shared(void)
{
	HapgShared *s = hapg_shared;
	TimestampTz now = GetCurrentTimestamp();
	const HapgLeaseInfo *li = &lease.info;
	bool		i_lead = current_role == HAPG_ROLE_LEADER;
	XLogRecPtr	leader_lsn = i_lead ? local.lsn : (li->has_leader_lsn ? li->leader_lsn : InvalidXLogRecPtr);
	int			i,
				j;

	LWLockAcquire(&s->lock, LW_EXCLUSIVE);
	s->configured = cfg.ready;
	strlcpy(s->cluster, cfg.cluster, sizeof(s->cluster));
	strlcpy(s->member, cfg.member, sizeof(s->member));
	s->role = current_role;
	strlcpy(s->state, hapg_local_state_name(&local), sizeof(s->state));
	strlcpy(s->leader, li->view.exists ? li->view.holder : "", sizeof(s->leader));
	s->lease_transitions = li->view.transitions;
	s->lease_expires_in_ms = expires_in_ms;
	s->lease_info_at = now;
	s->api_ok = api_ok;
	strlcpy(s->last_error, last_error, sizeof(s->last_error));
	if (cfg.config_error[0])
		strlcpy(s->last_error, cfg.config_error, sizeof(s->last_error));
	s->last_loop = now;
	s->loop_count = loop_count;
	s->timeline = local.timeline;
	s->lsn = local.lsn;
	s->leader_lsn = leader_lsn;
	s->paused = li->paused;
	s->switchover = li->switchover;
	strlcpy(s->handover_to,
			li->view.exists && li->view.holder[0] == '\0' && li->has_handover ? li->handover_to : "",
			sizeof(s->handover_to));

	s->nhistory = Min(li->nhistory, HAPG_MAX_HISTORY);
	memcpy(s->history, li->history, sizeof(HapgHistoryEntry) * s->nhistory);
	s->nmembers = 0;
	for (i = 0; i < pods.n && s->nmembers < HAPG_MAX_MEMBERS; i++)
	{
		const HapgPodInfo *p = &pods.pods[i];
		HapgMemberRow *m = &s->members[s->nmembers++];
		bool		me = strcmp(p->name, cfg.member) == 0;

		memset(m, 0, sizeof(*m));
		strlcpy(m->name, p->name, sizeof(m->name));
		strlcpy(m->pod_role_label, p->role_label, sizeof(m->pod_role_label));
		m->is_leader = li->view.exists && strcmp(li->view.holder, p->name) == 0;
		m->has_settings = p->has_status || me;
		m->nofailover = me ? hapg_nofailover : p->nofailover;
		m->priority = me ? hapg_failover_priority : p->priority;
		strlcpy(m->role, m->is_leader ? "leader" : "replica", sizeof(m->role));
		if (me)
		{
			strlcpy(m->state, hapg_local_state_name(&local), sizeof(m->state));
			strlcpy(m->connect_address, cfg.connect_address, sizeof(m->connect_address));
			m->timeline = local.timeline;
			m->lsn = local.lsn;
			m->last_seen = now;
			continue;
		}
		strlcpy(m->state, p->has_status ? p->state : "unknown", sizeof(m->state));
		strlcpy(m->connect_address, p->connect_address, sizeof(m->connect_address));
		m->timeline = p->timeline;
		m->lsn = p->lsn;
		m->last_seen = pods.seen_at[i];
		if (m->is_leader && li->has_leader_lsn)
		{
			m->lsn = li->leader_lsn;
			m->timeline = li->leader_timeline;
			m->last_seen = lease.observed_at;
		}
		else
		{
			/* the leader's renewal carries replica positions */
			const HapgMemberPos *pos = i_lead ? local.senders : li->pos;
			int			npos = i_lead ? local.nsenders : li->npos;

			for (j = 0; j < npos; j++)
				if (strcmp(pos[j].name, p->name) == 0)
				{
					m->lsn = pos[j].lsn;
					strlcpy(m->state, pos[j].state, sizeof(m->state));
					m->last_seen = i_lead ? now : lease.observed_at;
					break;
				}
			/* a member the leader does not see: its Pod status is old news */
			if (j == npos && (i_lead || li->has_leader_lsn) && p->has_status)
				strlcpy(m->state, "disconnected", sizeof(m->state));
		}
	}
	LWLockRelease(&s->lock);
}

/*
 * Every member as this one knows it, for judging requests and choosing a
 * switchover target.  A leader knows the replicas' streaming state first
 * hand (its walsenders); others take it from the leader's last renewal.
 */
static int
fill_members(HapgMemberView *mv, bool *has_leader_lsn, uint64 *leader_lsn)
{
	bool		i_lead = current_role == HAPG_ROLE_LEADER && !local.in_recovery;
	const HapgMemberPos *pos = i_lead ? local.senders : lease.info.pos;
	int			npos = i_lead ? local.nsenders : lease.info.npos;
	int			n = 0;
	int			i,
				j;

	*has_leader_lsn = i_lead || lease.info.has_leader_lsn;
	*leader_lsn = i_lead ? local.lsn : lease.info.leader_lsn;
	for (i = 0; i < pods.n && n < HAPG_MAX_MEMBERS; i++)
	{
		const HapgPodInfo *p = &pods.pods[i];
		HapgMemberView *m = &mv[n];

		if (p->deleting)
			continue;
		memset(m, 0, sizeof(*m));
		strlcpy(m->name, p->name, sizeof(m->name));
		m->has_status = p->has_status;
		strlcpy(m->state, p->has_status ? p->state : "unknown", sizeof(m->state));
		m->replica = p->has_status && strcmp(p->role, "replica") == 0;
		m->nofailover = p->nofailover;
		m->priority = p->has_status ? p->priority : 0;
		if (strcmp(p->name, cfg.member) == 0)
		{
			strlcpy(m->state, hapg_local_state_name(&local), sizeof(m->state));
			m->replica = local.in_recovery;
			m->nofailover = hapg_nofailover;
			m->priority = hapg_failover_priority;
			if (local.in_recovery && !i_lead)
			{
				/* my own position I know first hand */
				m->has_lsn = true;
				m->lsn = local.lsn;
				m->streaming = local.streaming;
			}
		}
		for (j = 0; j < npos && !m->has_lsn; j++)
			if (strcmp(pos[j].name, p->name) == 0)
			{
				m->streaming = strcmp(pos[j].state, "streaming") == 0;
				m->has_lsn = true;
				m->lsn = pos[j].lsn;
				strlcpy(m->state, pos[j].state, sizeof(m->state));
			}
		/* the leader's view says more than a Pod status written long ago */
		if (!m->has_lsn && m->replica && *has_leader_lsn &&
			strcmp(p->name, cfg.member) != 0)
			strlcpy(m->state, "disconnected", sizeof(m->state));
		n++;
	}
	return n;
}

/* PUT an edit of the Lease as last read: a compare-and-swap on its version. */
static long
edit_lease(const HapgLeaseEdit *e, char *err, int errlen)
{
	char	   *body = hapg_build_lease_edit(lease.obj, e);
	KubeResponse r;
	long		status;
	json_object *obj;
	char		perr[HAPG_MSG_LEN];

	if (body == NULL)
	{
		snprintf(err, errlen, "could not build the Lease edit");
		return 0;
	}
	if (!kube_request("PUT", lease_path(), "application/json", body, &r))
	{
		free(body);
		snprintf(err, errlen, "%s", r.error);
		return 0;
	}
	free(body);
	status = r.status;
	if (status == 200 && hapg_parse_json(r.body, r.len, &obj, perr, sizeof(perr)))
	{
		adopt_lease(obj, hapg_mono_ms());
		json_object_put(obj);
	}
	else if (status != 200)
		snprintf(err, errlen, "%s", r.error);
	kube_response_free(&r);
	return status;
}

/* Answer the waiting backend. */
static void
answer_request(int id, const HapgVerdict *v, const char *leader)
{
	LWLockAcquire(&hapg_shared->lock, LW_EXCLUSIVE);
	hapg_shared->req_verdict = *v;
	strlcpy(hapg_shared->req_leader, leader, HAPG_NAME_LEN);
	hapg_shared->req_done = id;
	LWLockRelease(&hapg_shared->lock);
}

/*
 * Carry out a request from SQL: judge it on a fresh read of the Lease and
 * write what it changes as a compare-and-swap on that read; a conflict
 * means judging again on a new read.
 */
static void
process_request(void)
{
	int			id;
	HapgRequestInput in;
	HapgVerdict v;
	HapgMemberView *mv = palloc(sizeof(HapgMemberView) * HAPG_MAX_MEMBERS);
	char		candidate[HAPG_NAME_LEN];
	char		holder[HAPG_NAME_LEN];
	char		err[HAPG_MSG_LEN];
	int			attempt;

	LWLockAcquire(&hapg_shared->lock, LW_SHARED);
	id = hapg_shared->req_id;
	memset(&in, 0, sizeof(in));
	in.kind = hapg_shared->req_kind;
	strlcpy(candidate, hapg_shared->req_candidate, sizeof(candidate));
	in.scheduled_at_us = hapg_shared->req_scheduled_at_us;
	LWLockRelease(&hapg_shared->lock);
	memset(&v, 0, sizeof(v));
	holder[0] = '\0';

	if (!cfg.ready)
	{
		snprintf(v.message, sizeof(v.message), "hapg is not configured on this member");
		snprintf(v.detail, sizeof(v.detail), "%s", cfg.config_error);
		snprintf(v.hint, sizeof(v.hint), "Fix the hapg.* settings and reload.");
		answer_request(id, &v, "");
		return;
	}
	for (attempt = 0; attempt <= MAX_CAS_ATTEMPTS; attempt++)
	{
		HapgLeaseView view;
		HapgLeaseEdit e;
		HapgSwitchover sw;
		char	   *json = NULL;
		long		status;

		if ((!pods.valid && !list_pods()) || !read_lease())
		{
			memset(&v, 0, sizeof(v));
			snprintf(v.message, sizeof(v.message), "cannot reach the Kubernetes API");
			snprintf(v.detail, sizeof(v.detail), "%s", last_error);
			snprintf(v.hint, sizeof(v.hint),
					 "Nothing was changed; see hapg_status() and the server log.");
			break;
		}
		view = lease.info.view;
		view.observed_ms = lease.observed_ms;
		in.cluster = cfg.cluster;
		in.candidate = candidate;
		in.now_us = unix_now_us();
		in.lease_exists = view.exists;
		in.holder = view.exists ? lease.info.view.holder : "";
		in.lease_expired = hapg_lease_expired(&view, hapg_mono_ms(), NULL);
		in.paused = lease.info.paused;
		in.switchover = lease.info.switchover;
		in.max_lag = (uint64) hapg_maximum_lag_on_failover;
		in.members = mv;
		in.nmembers = fill_members(mv, &in.has_leader_lsn, &in.leader_lsn);
		strlcpy(holder, in.holder, sizeof(holder));
		hapg_judge_request(&in, &v);
		if (!v.ok || !v.changes)
			break;

		memset(&e, 0, sizeof(e));
		e.resource_version = lease.info.view.resource_version;
		switch (in.kind)
		{
			case HAPG_REQ_SWITCHOVER:
				memset(&sw, 0, sizeof(sw));
				sw.pending = true;
				strlcpy(sw.from, holder, sizeof(sw.from));
				strlcpy(sw.to, in.scheduled_at_us ? candidate : v.target, sizeof(sw.to));
				sw.scheduled_at_us = in.scheduled_at_us;
				sw.requested_at_us = in.now_us;
				strlcpy(sw.requested_by, cfg.member, sizeof(sw.requested_by));
				json = hapg_build_switchover_json(&sw);
				e.switchover_json = json;
				break;
			case HAPG_REQ_FAILOVER:
				json = hapg_build_handover_json(holder, v.target, 0, "manual failover");
				e.holder = "";
				e.handover_json = json;
				e.switchover_json = "";
				break;
			case HAPG_REQ_PAUSE:
				e.config_json = "{\"paused\":true}";
				break;
			case HAPG_REQ_RESUME:
				e.config_json = "";
				break;
			case HAPG_REQ_CANCEL:
				e.switchover_json = "";
				break;
			default:
				break;
		}
		err[0] = '\0';
		status = edit_lease(&e, err, sizeof(err));
		if (json)
			free(json);
		if (status == 200)
		{
			ereport(LOG, (errmsg("hapg: %s (asked on this member)", v.message)));
			if (in.kind == HAPG_REQ_SWITCHOVER && strcmp(holder, cfg.member) == 0)
				handover_not_before_ms = hapg_mono_ms() + LOCAL_ANSWER_GRACE_MS;
			break;
		}
		if (status != 409)
		{
			memset(&v, 0, sizeof(v));
			snprintf(v.message, sizeof(v.message), "could not write the Lease");
			snprintf(v.detail, sizeof(v.detail), "%s", err[0] ? err : last_error);
			snprintf(v.hint, sizeof(v.hint),
					 "Nothing was changed; see hapg_status() and the server log.");
			break;
		}
		/* the Lease moved under us: judge again on a new read */
	}
	if (attempt > MAX_CAS_ATTEMPTS)
	{
		memset(&v, 0, sizeof(v));
		snprintf(v.message, sizeof(v.message), "the Lease kept changing; nothing was changed");
		snprintf(v.hint, sizeof(v.hint), "Try again.");
	}
	answer_request(id, &v, holder);
	wake_cycle = true;
}

/* Is a request from SQL waiting for this worker? */
static bool
request_pending(void)
{
	bool		pending;

	LWLockAcquire(&hapg_shared->lock, LW_SHARED);
	pending = hapg_shared->req_pid != 0 && hapg_shared->req_id != hapg_shared->req_done;
	LWLockRelease(&hapg_shared->lock);
	return pending;
}

/*
 * A leader that hands over stops cleanly with all its WAL sent to target:
 * it can come back as target's standby without pg_rewind.
 */
static void
come_back_as_standby_of(const char *target)
{
	HapgPodInfo *p = find_pod(target);
	char		slot[NAMEDATALEN];
	FILE	   *f;

	if (p && p->connect_address[0])
	{
		if (hapg_use_slots)
			hapg_slot_name(cfg.member, slot, sizeof(slot));
		else
			slot[0] = '\0';
		(void) hapg_follow(hapg_leader_conninfo(p->connect_address), slot);
	}
	f = fopen(STANDBY_SIGNAL_FILE, "w");
	if (f == NULL || fclose(f) != 0)
		ereport(LOG, (errmsg("hapg: could not create \"%s\": %m", STANDBY_SIGNAL_FILE)));
}

/*
 * Stop this leader so that target takes over with nothing lost: come back
 * as its standby, and let the hand-over process release the Lease once the
 * shutdown checkpoint has been written (and streamed: walsenders wait for
 * their standbys before the postmaster exits).
 */
static void
hand_over(const char *target, const char *reason)
{
	come_back_as_standby_of(target);
	ereport(LOG,
			(errmsg("hapg: %s: handing the Lease over to \"%s\"; stopping this server to come back as its standby",
					reason, target)));
	(void) hapg_start_handover(target, reason, HANDOVER_WAIT_MS);
	handing_over = true;
	fenced = true;
	if (kill(PostmasterPid, SIGINT) != 0)
		ereport(LOG, (errmsg("hapg: could not signal the postmaster: %m")));
}

/* The leader's part in a pending switchover: wait, drop, or hand over. */
static void
run_switchover(void)
{
	HapgSwitchoverPlan plan;
	HapgMemberView *mv;
	bool		has_lsn;
	uint64		leader_lsn;
	int			n;
	int64		now = hapg_mono_ms();

	if (!lease.info.switchover.pending || current_role != HAPG_ROLE_LEADER ||
		local.in_recovery || promoting || fenced)
		return;
	mv = palloc(sizeof(HapgMemberView) * HAPG_MAX_MEMBERS);
	n = fill_members(mv, &has_lsn, &leader_lsn);
	hapg_plan_switchover(&lease.info.switchover, cfg.member, unix_now_us(),
						 (int64) cfg.ttl * 1000000, mv, n, leader_lsn,
						 (uint64) hapg_maximum_lag_on_failover, &plan);
	if (plan.step == HAPG_SW_WAIT)
	{
		if (plan.wait_us > 0)
		{
			int64		at = now + plan.wait_us / 1000 + 1;

			if (decision_wake_ms == 0 || at < decision_wake_ms)
				decision_wake_ms = at;
		}
		else if (strcmp(plan.why, switchover_wait_why) != 0)
			ereport(LOG, (errmsg("hapg: switchover waiting: %s", plan.why)));
		strlcpy(switchover_wait_why, plan.why, sizeof(switchover_wait_why));
		return;
	}
	switchover_wait_why[0] = '\0';
	if (plan.step == HAPG_SW_DROP)
	{
		HapgLeaseEdit e;
		HapgSwitchover sw = lease.info.switchover;
		char		err[HAPG_MSG_LEN];

		memset(&e, 0, sizeof(e));
		e.resource_version = lease.info.view.resource_version;
		e.switchover_json = "";
		if (edit_lease(&e, err, sizeof(err)) == 200)
			ereport(LOG, (errmsg("hapg: dropped the switchover to %s requested by \"%s\": %s",
								 sw.to[0] ? sw.to : "the healthiest replica",
								 sw.requested_by, plan.why)));
		return;
	}
	if (now < handover_not_before_ms)
	{
		decision_wake_ms = handover_not_before_ms;
		return;
	}
	hand_over(plan.target, "switchover");
}

/*
 * SIGTERM.  When the server is being stopped on purpose (pod deletion, a
 * rolling update), a leader's Lease goes to the best replica once the
 * server is down, instead of after the ttl.  Paused clusters are left
 * alone, like everything else while paused.
 */
static void
on_shutdown_request(void)
{
	HapgMemberView *mv;
	const HapgMemberView *best;
	bool		has_lsn;
	uint64		leader_lsn;
	int			n;

	if (!cfg.ready || fenced || !was_leader || current_role != HAPG_ROLE_LEADER ||
		local.in_recovery || lease.info.paused || !hapg_datadir_ok())
		return;
	hapg_read_local_state(&local);
	mv = palloc(sizeof(HapgMemberView) * HAPG_MAX_MEMBERS);
	n = fill_members(mv, &has_lsn, &leader_lsn);
	best = hapg_best_replica(mv, n, cfg.member, has_lsn, leader_lsn,
							 (uint64) hapg_maximum_lag_on_failover);
	if (best == NULL)
	{
		ereport(LOG, (errmsg("hapg: shutting down the leader with no replica ready to take over; the Lease runs out in its ttl")));
		return;
	}
	ereport(LOG, (errmsg("hapg: shutting down: the Lease goes to \"%s\" once this server has stopped",
						 best->name)));
	come_back_as_standby_of(best->name);
	(void) hapg_start_handover(best->name, "the leader was shut down", HANDOVER_WAIT_MS);
}

/* One pass of observe, decide, act, publish. */
static void
run_cycle(void)
{
	HapgPodInfo *me;
	bool		pod_exists;

	loop_count++;
	api_ok = true;
	last_error[0] = '\0';
	hapg_read_local_state(&local);
	if (fenced)
	{
		publish_shared();		/* the postmaster is shutting down */
		return;
	}
	if (promoting && !local.in_recovery)
	{
		promoting = false;
		pending_history.new_timeline = local.timeline;

		/*
		 * Promotion only asks for a spread checkpoint; until one ends,
		 * pg_control names the old timeline and a rewinding former leader
		 * would read the wrong history from us.  Hurry it, without waiting.
		 */
		RequestCheckpoint(CHECKPOINT_IMMEDIATE | CHECKPOINT_FORCE);
		ereport(LOG, (errmsg("hapg: promoted: member \"%s\" is the leader on timeline %u",
							 cfg.member, local.timeline)));
	}
	else if (promoting && hapg_mono_ms() - promote_asked_ms > 30000)
		ereport(WARNING, (errmsg("hapg: promotion asked for %lld s ago has not finished",
								 (long long) (hapg_mono_ms() - promote_asked_ms) / 1000)));

	/* a leader's requests must all end before its fence deadline */
	if (was_leader && !local.in_recovery && last_renew_sent_ms > 0 && !lease.info.paused)
		kube_set_deadline(last_renew_sent_ms + cfg.ttl * 1000L - hapg_fence_margin_ms(cfg.ttl));
	else
		kube_set_deadline(0);

	if (!pods.valid || !kube_watch_active(pod_watch))
		list_pods();
	lease.fresh = false;

	/*
	 * A leader renews every loop, so a healthy Lease watch speaks at least
	 * that often; a silent one may be hung: read the Lease to be sure.
	 */
	if (!lease.valid || !kube_watch_active(lease_watch) ||
		hapg_mono_ms() - Max(lease_event_ms, lease.observed_ms) > 2 * cfg.loop_wait * 1000L)
	{
		if (read_lease())
			lease_event_ms = hapg_mono_ms();
	}
	else if (local.in_recovery && lease.info.view.exists)
	{
		HapgLeaseView v = lease.info.view;

		/* an election is only started from a Lease read just now */
		v.observed_ms = lease.observed_ms;
		if (hapg_lease_expired(&v, hapg_mono_ms(), NULL))
			read_lease();
	}

	me = pods.valid ? find_pod(cfg.member) : NULL;
	pod_exists = me != NULL;
	if (pods.valid && !pod_exists)
	{
		if (!pod_missing_logged)
			ereport(WARNING,
					(errmsg("hapg: no Pod \"%s\" labelled %s=%s in namespace \"%s\"; this member takes no part in the cluster",
							cfg.member, HAPG_CLUSTER_LABEL, cfg.cluster, cfg.namespace),
					 errhint("Create the Pod with that label, or set hapg.member_name to this member's Pod name.")));
		pod_missing_logged = true;
	}
	else if (pod_exists && pod_missing_logged)
	{
		ereport(LOG, (errmsg("hapg: Pod \"%s\" found; taking part in cluster \"%s\"",
							 cfg.member, cfg.cluster)));
		pod_missing_logged = false;
	}
	/* Without a Pod list we cannot tell: keep our last judgement of it. */
	if (!pods.valid)
		pod_exists = !pod_missing_logged;

	if (lease.valid && pod_exists)
		hapg_mark_joined(cfg.cluster);

	run_lease_protocol(pod_exists);
	if (!fenced)
		run_switchover();
	if (fenced)
	{
		publish_shared();
		return;
	}
	follow_leader();
	if (!promoting)
		sync_slots_as(current_role == HAPG_ROLE_LEADER && !local.in_recovery);
	/* a server still starting up has nothing stable to publish yet */
	if (me != NULL && !local.starting)
		publish_pod(me);
	clear_stale_primary_labels();
	ensure_watches(hapg_mono_ms());
	api_cycle_done();
	publish_shared();
}

/* Sleep until the next cycle, a latch, postmaster death or watch data. */
static void
wait_for_work(long timeout_ms)
{
	int			fds[8];
	int			evs[8];
	int			n = kube_watch_sockets(fds, evs, 8);
	long		curl_ms = kube_watch_timeout_ms();
	WaitEventSet *set;
	WaitEvent	occurred;
	int			i;

	if (curl_ms >= 0 && curl_ms < timeout_ms)
		timeout_ms = curl_ms;
	set = CreateWaitEventSet(CurrentMemoryContext, 2 + n);
	AddWaitEventToSet(set, WL_LATCH_SET, PGINVALID_SOCKET, MyLatch, NULL);
	AddWaitEventToSet(set, WL_EXIT_ON_PM_DEATH, PGINVALID_SOCKET, NULL, NULL);
	for (i = 0; i < n; i++)
		AddWaitEventToSet(set, evs[i], fds[i], NULL, NULL);
	(void) WaitEventSetWait(set, Max(timeout_ms, 0), &occurred, 1, PG_WAIT_EXTENSION);
	FreeWaitEventSet(set);
	ResetLatch(MyLatch);
}

/*
 * A leader's worker stopped on its own (pg_terminate_backend) left
 * standby.signal behind for a hand-over that did not happen: the server is
 * still a primary, and must not turn into a standby at its next restart
 * for that reason.
 */
static void
forget_cancelled_handover(void)
{
	struct stat st;

	if (!RecoveryInProgress() && stat(STANDBY_SIGNAL_FILE, &st) == 0 &&
		stat(HAPG_REJOIN_FILE, &st) != 0)
	{
		if (unlink(STANDBY_SIGNAL_FILE) == 0)
			ereport(LOG, (errmsg("hapg: removed \"%s\" left by a hand-over that did not happen",
								 STANDBY_SIGNAL_FILE)));
	}
}

/* Worker entry point, registered in _PG_init. */
void
hapg_worker_main(Datum arg pg_attribute_unused())
{
	int64		next_cycle = 0;

	pqsignal(SIGHUP, SignalHandlerForConfigReload);
	pqsignal(SIGTERM, SignalHandlerForShutdownRequest);
	BackgroundWorkerUnblockSignals();

	hapg_shmem_attach();
	LWLockAcquire(&hapg_shared->lock, LW_EXCLUSIVE);
	hapg_shared->worker_pid = MyProcPid;
	hapg_shared->worker_procno = MyProc->pgprocno;
	LWLockRelease(&hapg_shared->lock);

	kube_global_init();
	lease_watch = kube_watch_create("Lease", on_lease_event, NULL);
	pod_watch = kube_watch_create("Pod", on_pod_event, NULL);
	loop_cxt = AllocSetContextCreate(TopMemoryContext, "hapg loop",
									 ALLOCSET_DEFAULT_SIZES);
	load_settings(true);
	ereport(LOG, (errmsg("hapg: worker started (version %s)", HAPG_VERSION)));
	forget_cancelled_handover();

	for (;;)
	{
		int64		now;
		long		timeout;
		MemoryContext old;

		CHECK_FOR_INTERRUPTS();
		old = MemoryContextSwitchTo(loop_cxt);
		if (ShutdownRequestPending)
		{
			on_shutdown_request();
			proc_exit(1);		/* 1: restarted if only this worker was stopped */
		}
		if (ConfigReloadPending)
		{
			ConfigReloadPending = false;
			ProcessConfigFile(PGC_SIGHUP);
			load_settings(false);
			wake_cycle = true;
		}
		now = hapg_mono_ms();
		if (!cfg.ready)
		{
			if (request_pending())
				process_request();
			hapg_read_local_state(&local);
			current_role = HAPG_ROLE_UNKNOWN;
			api_ok = false;
			strlcpy(last_error, cfg.config_error, sizeof(last_error));
			publish_shared();
			wait_for_work(cfg.timing_valid ? cfg.loop_wait * 1000L : 10000L);
			MemoryContextSwitchTo(old);
			MemoryContextReset(loop_cxt);
			continue;
		}

		kube_watch_pump();
		if (request_pending() && !fenced)
			process_request();
		else if (request_pending())
		{
			HapgVerdict v;
			int			id;

			memset(&v, 0, sizeof(v));
			snprintf(v.message, sizeof(v.message), "this member is stopping");
			snprintf(v.hint, sizeof(v.hint), "Ask another member.");
			LWLockAcquire(&hapg_shared->lock, LW_SHARED);
			id = hapg_shared->req_id;
			LWLockRelease(&hapg_shared->lock);
			answer_request(id, &v, "");
		}
		now = hapg_mono_ms();
		if (wake_cycle || now >= next_cycle)
		{
			wake_cycle = false;
			run_cycle();
			now = hapg_mono_ms();
			next_cycle = now + cfg.loop_wait * 1000L;
		}
		else if (pods.valid)
			publish_shared();	/* watch events may have changed members */

		timeout = next_cycle - now;
		/* the decision's own wake-up: Lease expiry, election, fence time */
		if (decision_wake_ms > 0)
		{
			if (decision_wake_ms <= now)
			{
				decision_wake_ms = 0;
				wake_cycle = true;
				timeout = 0;
			}
			else if (decision_wake_ms - now < timeout)
				timeout = decision_wake_ms - now;
		}
		if (promoting)
			timeout = Min(timeout, 20L);
		wait_for_work(Min(timeout, 1000L));
		if (promoting && !RecoveryInProgress())
			wake_cycle = true;	/* writable now: publish the new leader at once */

		/*
		 * Every wake-up, even the first after this process was stalled,
		 * checks whether a leader must fence now.
		 */
		if (was_leader && !fenced && last_renew_sent_ms > 0 &&
			(hapg_mono_ms() >= last_renew_sent_ms + cfg.ttl * 1000L - hapg_fence_margin_ms(cfg.ttl) ||
			 !hapg_datadir_ok()))
			wake_cycle = true;
		MemoryContextSwitchTo(old);
		MemoryContextReset(loop_cxt);
	}
}
