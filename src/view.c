/*
 * view.c
 *		What the worker knows of the cluster: the Lease and the member Pods,
 *		kept current by watches and read afresh when a decision needs it;
 *		the member view built from them; the Kubernetes API's health.
 */
#include "worker.h"

#include "utils/timestamp.h"

#define WATCH_TIMEOUT_S 240
#define ERROR_LOG_INTERVAL_MS (60 * 1000)

static void on_lease_event(void *arg, const char *type, json_object *obj);
static void on_pod_event(void *arg, const char *type, json_object *obj);

/*
 * Record an API problem for hapg_status() and log it without flooding: the
 * first error of an outage at once, then at most one line a minute.
 */
void
hapg_api_error(HapgWorker *w, const char *fmt,...)
{
	va_list		ap;
	int64		now = hapg_mono_ms();

	va_start(ap, fmt);
	vsnprintf(w->last_error, sizeof(w->last_error), fmt, ap);
	va_end(ap);
	w->api_ok = false;
	hapg_publish_api_error(w);
	if (w->outage_start_ms == 0 || now - w->logged_error_ms >= ERROR_LOG_INTERVAL_MS)
	{
		if (w->outage_start_ms == 0)
			w->outage_start_ms = now;
		ereport(LOG, (errmsg("hapg: %s", w->last_error)));
		w->logged_error_ms = now;
	}
}

/* Close an outage in the log once a whole cycle went without API errors. */
void
hapg_api_cycle_done(HapgWorker *w)
{
	if (w->api_ok && w->outage_start_ms != 0)
	{
		ereport(LOG,
				(errmsg("hapg: Kubernetes API usable again after %.1f s of errors",
						(hapg_mono_ms() - w->outage_start_ms) / 1000.0)));
		w->outage_start_ms = 0;
	}
}

/* Create the two watches (started later, once a read gave a version). */
void
hapg_view_start(HapgWorker *w)
{
	w->lease_watch = kube_watch_create(&w->kube, "Lease", on_lease_event, w);
	w->pod_watch = kube_watch_create(&w->kube, "Pod", on_pod_event, w);
}

/* A different cluster or identity: forget everything we knew. */
void
hapg_view_forget(HapgWorker *w)
{
	kube_watch_stop(w->lease_watch);
	kube_watch_stop(w->pod_watch);
	if (w->lease.obj)
		json_object_put(w->lease.obj);
	memset(&w->lease, 0, sizeof(w->lease));
	memset(&w->pods, 0, sizeof(w->pods));
	w->was_leader = false;
	w->published_key[0] = '\0';
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

/* Did the Lease change in a way that should run a cycle at once? */
static bool
lease_news(const HapgLeaseInfo *seen, const HapgLeaseInfo *next)
{
	return strcmp(next->view.holder, seen->view.holder) != 0 ||
		next->paused != seen->paused ||
		next->switchover.pending != seen->switchover.pending ||
		next->switchover.scheduled_at_us != seen->switchover.scheduled_at_us ||
		next->has_handover != seen->has_handover;
}

/*
 * Adopt a Lease object (or its absence), from an answer to a request sent at
 * sent_ms that arrived at arrived_ms, as the current view.  The expiry clock
 * restarts only when the holder renewed, at the answer's arrival
 * (hapg_lease_observed_ms): that is the moment this member observed it.
 */
void
hapg_adopt_lease(HapgWorker *w, json_object *obj, int64 sent_ms,
				 int64 arrived_ms, bool own_write)
{
	HapgLeaseCache *lc = &w->lease;
	HapgLeaseInfo info;
	char		err[HAPG_MSG_LEN];

	if (obj == NULL)
	{
		HapgLeaseView none;

		memset(&none, 0, sizeof(none));
		none.known = true;
		lc->observed_ms = hapg_lease_observed_ms(&lc->info.view, &none,
												 sent_ms, arrived_ms, own_write);
		if (lc->obj)
			json_object_put(lc->obj);
		lc->obj = NULL;
		memset(&lc->info, 0, sizeof(lc->info));
		lc->info.view.known = true;
		lc->info.view.exists = false;
		lc->observed_at = GetCurrentTimestamp();
		lc->valid = true;
		return;
	}
	if (!hapg_parse_lease(obj, &info, err, sizeof(err)))
	{
		hapg_api_error(w, "unusable Lease \"%s\": %s", w->cfg.cluster, err);
		return;
	}
	if (lc->obj && lc->info.view.exists &&
		rv_older(info.view.resource_version, lc->info.view.resource_version))
		return;					/* a late event for a version we are past */
	if (hapg_lease_clock_restarts(&lc->info.view, &info.view))
	{
		lc->observed_ms = hapg_lease_observed_ms(&lc->info.view, &info.view,
												 sent_ms, arrived_ms, own_write);
		lc->observed_at = GetCurrentTimestamp();
	}
	if ((!lc->info.view.exists ||
		 strcmp(info.view.resource_version, lc->info.view.resource_version) != 0) &&
		lease_news(&lc->info, &info))
		w->wake = true;
	if (lc->obj)
		json_object_put(lc->obj);
	lc->obj = json_object_get(obj);
	lc->info = info;
	lc->valid = true;
	strlcpy(lc->watch_rv, info.view.resource_version, sizeof(lc->watch_rv));
}

/* GET the Lease: the read a decision and its compare-and-swap rest on. */
bool
hapg_read_lease(HapgWorker *w)
{
	KubeResponse r;
	json_object *obj;
	char		err[HAPG_MSG_LEN];
	int64		sent = hapg_mono_ms();
	int64		arrived;
	bool		ok = false;

	if (!kube_request(&w->kube, "GET", hapg_lease_path(w->cfg.namespace, w->cfg.cluster), NULL, NULL, &r))
	{
		hapg_api_error(w, "could not read Lease: %s", r.error);
		return false;
	}
	/* the expiry clock starts when the answer came, not when we asked */
	arrived = hapg_mono_ms();
	if (r.status == 404)
	{
		hapg_adopt_lease(w, NULL, sent, arrived, false);
		w->lease.watch_rv[0] = '\0';
		ok = true;
	}
	else if (r.status != 200)
		hapg_api_error(w, "could not read Lease: %s", r.error);
	else if (!hapg_parse_json(r.body, r.len, &obj, err, sizeof(err)))
		hapg_api_error(w, "could not read Lease: %s", err);
	else
	{
		hapg_adopt_lease(w, obj, sent, arrived, false);
		json_object_put(obj);
		ok = w->lease.valid;
	}
	kube_response_free(&r);
	w->lease.fresh = ok;
	return ok;
}

/* Insert or replace a Pod in the cache (sorted by name for stable output). */
void
hapg_cache_pod(HapgWorker *w, const HapgPodInfo *p, bool deleted)
{
	HapgPodCache *pc = &w->pods;
	int			i;

	for (i = 0; i < pc->n; i++)
		if (strcmp(pc->pods[i].name, p->name) == 0)
			break;
	if (deleted)
	{
		if (i < pc->n)
		{
			memmove(&pc->pods[i], &pc->pods[i + 1], (pc->n - i - 1) * sizeof(HapgPodInfo));
			memmove(&pc->seen_at[i], &pc->seen_at[i + 1], (pc->n - i - 1) * sizeof(TimestampTz));
			pc->n--;
		}
		return;
	}
	if (i == pc->n)
	{
		if (pc->n >= HAPG_MAX_MEMBERS)
		{
			hapg_api_error(w, "more than %d member Pods; ignoring \"%s\"", HAPG_MAX_MEMBERS, p->name);
			return;
		}
		/* keep sorted */
		for (i = 0; i < pc->n && strcmp(pc->pods[i].name, p->name) < 0; i++)
			;
		memmove(&pc->pods[i + 1], &pc->pods[i], (pc->n - i) * sizeof(HapgPodInfo));
		memmove(&pc->seen_at[i + 1], &pc->seen_at[i], (pc->n - i) * sizeof(TimestampTz));
		pc->n++;
	}
	pc->pods[i] = *p;
	pc->seen_at[i] = GetCurrentTimestamp();
}

/* The cached Pod of a member, or NULL. */
HapgPodInfo *
hapg_find_pod(HapgWorker *w, const char *name)
{
	int			i;

	for (i = 0; i < w->pods.n; i++)
		if (strcmp(w->pods.pods[i].name, name) == 0)
			return &w->pods.pods[i];
	return NULL;
}

/* LIST the member Pods: the starting point of the Pod watch. */
bool
hapg_list_pods(HapgWorker *w)
{
	KubeResponse r;
	json_object *obj;
	char		err[HAPG_MSG_LEN];
	HapgPodInfo *found = palloc(sizeof(HapgPodInfo) * HAPG_MAX_MEMBERS);
	int			n;
	int			i;
	bool		ok = false;

	if (!kube_request(&w->kube, "GET", hapg_pods_path(w->cfg.namespace, w->cfg.cluster), NULL, NULL, &r))
	{
		hapg_api_error(w, "could not list member Pods: %s", r.error);
		return false;
	}
	if (r.status != 200)
		hapg_api_error(w, "could not list member Pods: %s", r.error);
	else if (!hapg_parse_json(r.body, r.len, &obj, err, sizeof(err)))
		hapg_api_error(w, "could not list member Pods: %s", err);
	else
	{
		n = hapg_parse_pod_list(obj, w->cfg.role_label, found, HAPG_MAX_MEMBERS,
								w->pods.rv, sizeof(w->pods.rv), err, sizeof(err));
		json_object_put(obj);
		if (n < 0)
			hapg_api_error(w, "could not list member Pods: %s", err);
		else
		{
			w->pods.n = 0;
			for (i = 0; i < n; i++)
				hapg_cache_pod(w, &found[i], false);
			w->pods.valid = true;
			ok = true;
		}
	}
	kube_response_free(&r);
	return ok;
}

/* A watch said the Lease changed: adopt it, and wake the loop if it matters. */
static void
on_lease_event(void *arg, const char *type, json_object *obj)
{
	HapgWorker *w = (HapgWorker *) arg;
	const char *rv = hapg_object_rv(obj);
	int64		now = hapg_mono_ms();	/* received: the observation's time */

	w->lease_event_ms = now;
	w->lease_watch_heard_ms = now;
	if (strcmp(type, "ERROR") == 0)
	{
		/* usually 410 Gone: our resourceVersion is too old; read afresh */
		w->lease.watch_rv[0] = '\0';
		w->lease.valid = false;
		return;
	}
	if (strcmp(type, "BOOKMARK") == 0)
	{
		if (rv)
			strlcpy(w->lease.watch_rv, rv, sizeof(w->lease.watch_rv));
		return;
	}
	if (hapg_object_name(obj) == NULL || strcmp(hapg_object_name(obj), w->cfg.cluster) != 0)
		return;
	if (strcmp(type, "DELETED") == 0)
	{
		hapg_adopt_lease(w, NULL, now, now, false);
		if (rv)
			strlcpy(w->lease.watch_rv, rv, sizeof(w->lease.watch_rv));
		w->wake = true;
		return;
	}
	hapg_adopt_lease(w, obj, now, now, false);
}

/* A watch said a member Pod changed: cache it, and wake the loop if it matters. */
static void
on_pod_event(void *arg, const char *type, json_object *obj)
{
	HapgWorker *w = (HapgWorker *) arg;
	HapgPodInfo p;
	char		err[HAPG_MSG_LEN];
	const char *rv = hapg_object_rv(obj);
	const HapgLeaseView *lv = &w->lease.info.view;

	if (strcmp(type, "ERROR") == 0)
	{
		w->pods.rv[0] = '\0';
		w->pods.valid = false;
		return;
	}
	if (rv)
		strlcpy(w->pods.rv, rv, sizeof(w->pods.rv));
	if (strcmp(type, "BOOKMARK") == 0)
		return;
	if (!hapg_parse_pod(obj, w->cfg.role_label, &p, err, sizeof(err)))
		return;
	/* our own Pod appearing or vanishing changes whether we take part */
	if (strcmp(p.name, w->cfg.member) == 0 &&
		(strcmp(type, "DELETED") == 0) == (hapg_find_pod(w, p.name) != NULL))
		w->wake = true;
	/* another member spoke in the election we take part in */
	if (w->candidacy_term[0] && p.has_candidacy && strcmp(p.cand_term, w->candidacy_term) == 0)
		w->wake = true;
	/* the leader's address appeared or moved: a standby follows it now */
	if (lv->exists && strcmp(p.name, lv->holder) == 0 && strcmp(p.name, w->cfg.member) != 0)
	{
		HapgPodInfo *known = hapg_find_pod(w, p.name);

		if (known == NULL || strcmp(known->connect_address, p.connect_address) != 0)
			w->wake = true;
	}
	/* a synchronous standby leaving: its leader stops waiting for it now */
	if (lv->exists && strcmp(lv->holder, w->cfg.member) == 0 && p.nosync &&
		hapg_sync_set_has(&w->lease.info.sync, p.name))
	{
		HapgPodInfo *known = hapg_find_pod(w, p.name);

		if (known == NULL || !known->nosync)
			w->wake = true;
	}
	hapg_cache_pod(w, &p, strcmp(type, "DELETED") == 0);
}

/*
 * From when this member's Lease watch counts as silent (hapg_lease_quiet_at):
 * the last thing it heard of the Lease, by the watch or a read.
 */
int64
hapg_lease_watch_quiet_at(HapgWorker *w)
{
	return hapg_lease_quiet_at(Max(w->lease_event_ms, w->lease.observed_ms),
							   w->cfg.loop_wait);
}

/*
 * Make sure the view is good enough to decide on: list the Pods if the
 * watch lapsed, and read the Lease if it may be stale, or if a standby is
 * about to start an election on it.
 */
void
hapg_refresh_view(HapgWorker *w)
{
	if (!w->pods.valid || !kube_watch_active(w->pod_watch))
		hapg_list_pods(w);
	w->lease.fresh = false;

	/* a Lease watch silent for two loops may be hung: read the Lease */
	if (!w->lease.valid || !kube_watch_active(w->lease_watch) ||
		hapg_mono_ms() >= hapg_lease_watch_quiet_at(w))
	{
		if (hapg_read_lease(w))
			w->lease_event_ms = hapg_mono_ms();
	}
	else if (w->local.in_recovery && w->lease.info.view.exists)
	{
		HapgLeaseView v = w->lease.info.view;

		/* an election is only started from a Lease read just now */
		v.observed_ms = w->lease.observed_ms;
		if (hapg_lease_expired(&v, hapg_mono_ms(), NULL))
			hapg_read_lease(w);
	}
}

/*
 * Should a lapsed watch be opened again?  A watch that failed may have
 * missed changes: what it fed is no longer valid, and a new read (which
 * makes it valid) comes first.  At most once per loop_wait.
 */
static bool
watch_due(KubeWatch *watch, bool *valid, int64 retry_ms, int64 now)
{
	if (kube_watch_active(watch))
		return false;
	if (kube_watch_error(watch)[0])
	{
		*valid = false;
		kube_watch_clear_error(watch);	/* re-read once, then watch again */
	}
	return *valid && now >= retry_ms;
}

/* (Re)open the watches that lapsed, at most once per loop_wait each. */
void
hapg_ensure_watches(HapgWorker *w, int64 now)
{
	if (watch_due(w->lease_watch, &w->lease.valid, w->lease_watch_retry_ms, now))
	{
		kube_watch_start(w->lease_watch,
						 hapg_lease_watch_path(w->cfg.namespace, w->cfg.cluster,
											   WATCH_TIMEOUT_S, w->lease.watch_rv),
						 WATCH_TIMEOUT_S);
		w->lease_watch_retry_ms = now + w->cfg.loop_wait * 1000L;
	}
	if (watch_due(w->pod_watch, &w->pods.valid, w->pod_watch_retry_ms, now))
	{
		kube_watch_start(w->pod_watch,
						 hapg_pods_watch_path(w->cfg.namespace, w->cfg.cluster,
											  WATCH_TIMEOUT_S, w->pods.rv),
						 WATCH_TIMEOUT_S);
		w->pod_watch_retry_ms = now + w->cfg.loop_wait * 1000L;
	}
}

/* libpq connection string of the current Lease holder, or NULL. */
char *
hapg_holder_conninfo(HapgWorker *w)
{
	const HapgLeaseView *lv = &w->lease.info.view;
	HapgPodInfo *p;

	if (!lv->exists || lv->holder[0] == '\0' || strcmp(lv->holder, w->cfg.member) == 0)
		return NULL;
	p = hapg_find_pod(w, lv->holder);
	if (p == NULL || p->connect_address[0] == '\0')
		return NULL;
	return hapg_leader_conninfo(p->connect_address);
}

/* This member as it knows itself, for the member view and its Pod. */
HapgSelf
hapg_self(HapgWorker *w)
{
	HapgSelf	s;

	memset(&s, 0, sizeof(s));
	s.name = w->cfg.member;
	s.role = w->role;
	s.in_recovery = w->local.in_recovery;
	s.streaming = w->local.streaming;
	s.state = hapg_local_state_name(&w->local);
	s.timeline = w->local.timeline;
	s.lsn = w->local.lsn;
	s.connect_address = w->cfg.connect_address;
	s.nofailover = hapg_nofailover;
	s.nosync = hapg_nosync || w->leaving;
	s.priority = hapg_failover_priority;
	s.nsenders = w->local.nsenders;
	s.senders = w->local.senders;
	return s;
}

/*
 * The one member view (members.c) over the current caches, into
 * mv[HAPG_MAX_MEMBERS]; for a decision, without members being deleted.
 */
int
hapg_member_view(HapgWorker *w, HapgMemberView *mv, bool for_decision, HapgLeaderPos *lp)
{
	HapgMembersInput in;
	int			n;

	memset(&in, 0, sizeof(in));
	in.self = hapg_self(w);
	in.lease = &w->lease.info;
	in.lease_seen_at = w->lease.observed_at;
	in.now = GetCurrentTimestamp();
	in.npods = w->pods.n;
	in.pods = w->pods.pods;
	in.pod_seen_at = w->pods.seen_at;
	n = hapg_build_members(&in, mv, HAPG_MAX_MEMBERS);
	if (lp)
		*lp = hapg_leader_pos(&in);
	return for_decision ? hapg_members_for_decision(mv, n) : n;
}

/*
 * When this leader must have fenced itself if no renewal succeeds, or 0
 * when it holds no Lease to protect: the plain deadline, or a failsafe
 * proof's end if later.  The place to derive a published "writable until"
 * from.
 */
int64
hapg_fence_deadline(HapgWorker *w)
{
	int64		plain;

	if (!w->was_leader || w->last_renew_sent_ms <= 0)
		return 0;
	plain = hapg_fence_deadline_ms(w->last_renew_sent_ms, w->cfg.ttl,
								   hapg_fence_margin_ms(w->cfg.ttl));
	return Max(plain, hapg_failsafe_until(w));
}
