/*
 * kwrite.c
 *		Every write hapg's worker makes to the Kubernetes API, and the API
 *		paths every part of hapg uses (the worker, the start-up guard and
 *		the hand-over process).
 *
 * Lease writes are compare-and-swaps on the resourceVersion of the read
 * the decision rested on; a successful answer is adopted as the new view.
 * Pod writes are merge patches of this member's own Pod, made only when
 * something users care about changed.
 */
#include "worker.h"

#include "utils/timestamp.h"

#define STREAM_LOSS_GRACE_MS 2000	/* a WAL receiver restart is not news */

/* The Lease named name. */
char *
hapg_lease_path(const char *ns, const char *name)
{
	return psprintf("/apis/coordination.k8s.io/v1/namespaces/%s/leases/%s", ns, name);
}

/* The collection a Lease is created in. */
char *
hapg_leases_path(const char *ns)
{
	return psprintf("/apis/coordination.k8s.io/v1/namespaces/%s/leases", ns);
}

/* A watch of the one Lease named name, from resourceVersion rv ("" = now). */
char *
hapg_lease_watch_path(const char *ns, const char *name, int timeout_s, const char *rv)
{
	char	   *sel = kube_escape(psprintf("metadata.name=%s", name));

	return psprintf("%s?watch=1&allowWatchBookmarks=true&timeoutSeconds=%d&fieldSelector=%s%s%s",
					hapg_leases_path(ns), timeout_s, sel,
					rv[0] ? "&resourceVersion=" : "", rv);
}

/* The Pod named name. */
char *
hapg_pod_path(const char *ns, const char *name)
{
	return psprintf("/api/v1/namespaces/%s/pods/%s", ns, name);
}

/* The member Pods of cluster: those labelled hapg.io/cluster=cluster. */
char *
hapg_pods_path(const char *ns, const char *cluster)
{
	char	   *sel = kube_escape(psprintf("%s=%s", HAPG_CLUSTER_LABEL, cluster));

	return psprintf("/api/v1/namespaces/%s/pods?labelSelector=%s", ns, sel);
}

/* A watch of the member Pods from the list's resourceVersion rv. */
char *
hapg_pods_watch_path(const char *ns, const char *cluster, int timeout_s, const char *rv)
{
	return psprintf("%s&watch=1&allowWatchBookmarks=true&timeoutSeconds=%d&resourceVersion=%s",
					hapg_pods_path(ns, cluster), timeout_s, rv);
}

/* Now as the Lease's RFC 3339 micro time. */
static void
now_microtime(char *buf, int buflen)
{
	hapg_format_microtime(hapg_unix_now_us(), buf, buflen);
}

/* PATCH a Pod with a merge patch; true on 200, and the answer in *r. */
static bool
patch_pod(HapgWorker *w, const char *name, const char *patch, KubeResponse *r)
{
	return kube_request(&w->kube, "PATCH", hapg_pod_path(w->cfg.namespace, name),
						"application/merge-patch+json", patch, r) && r->status == 200;
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
/* Carry out one decided Lease write; returns the HTTP status (0 = no answer). */
long
hapg_write_lease(HapgWorker *w, const HapgDecision *d, int64 *sent_ms)
{
	HapgLeaseWrite lw;
	char		now_str[40];
	char	   *members;
	char	   *failsafe;
	char	   *sync;
	char	   *body;
	KubeResponse r;
	long		status;
	json_object *obj;
	char		err[HAPG_MSG_LEN];
	bool		ok;

	now_microtime(now_str, sizeof(now_str));
	memset(&lw, 0, sizeof(lw));
	lw.name = w->cfg.cluster;
	lw.namespace = w->cfg.namespace;
	lw.cluster = w->cfg.cluster;
	lw.holder = d->action == HAPG_ACT_RELEASE ? "" : w->cfg.member;
	lw.duration_s = w->cfg.ttl;
	lw.add_history = w->have_pending_history && w->pending_history.new_timeline > 0 &&
		d->action == HAPG_ACT_RENEW ? &w->pending_history : NULL;
	lw.renew_time = now_str;
	lw.leader_lsn = w->local.lsn;
	lw.leader_timeline = w->local.timeline;
	members = hapg_build_members_json(w->local.senders, w->local.nsenders);
	lw.members_json = members;
	failsafe = hapg_failsafe_before_write(w, d->action != HAPG_ACT_RELEASE);
	lw.failsafe_json = failsafe ? failsafe : "";
	sync = hapg_sync_before_write(w, d);
	lw.sync_json = sync;
	if (d->action == HAPG_ACT_ACQUIRE || d->action == HAPG_ACT_CREATE)
	{
		/* a new leader: a hand-over is done, an old switchover request void */
		lw.handover_json = "";
		lw.switchover_json = "";
	}
	if (d->action == HAPG_ACT_CREATE)
	{
		lw.transitions = 0;
		lw.acquire_time = now_str;
	}
	else
	{
		lw.resource_version = w->lease.info.view.resource_version;
		lw.transitions = w->lease.info.view.transitions +
			(d->action == HAPG_ACT_ACQUIRE ? 1 : 0);
		lw.acquire_time = d->action == HAPG_ACT_ACQUIRE ? now_str : NULL;
	}
	body = hapg_build_lease(d->action == HAPG_ACT_CREATE ? NULL : w->lease.obj, &lw);
	free(members);
	free(failsafe);
	free(sync);
	if (body == NULL)
	{
		hapg_api_error(w, "out of memory building the Lease");
		return 0;
	}

	*sent_ms = hapg_mono_ms();
	if (d->action == HAPG_ACT_CREATE)
		ok = kube_request(&w->kube, "POST", hapg_leases_path(w->cfg.namespace),
						  "application/json", body, &r);
	else
		ok = kube_request(&w->kube, "PUT", hapg_lease_path(w->cfg.namespace, w->cfg.cluster),
						  "application/json", body, &r);
	free(body);
	if (!ok)
	{
		hapg_api_error(w, "could not %s the Lease: %s", hapg_action_name(d->action), r.error);
		return 0;
	}
	status = r.status;
	if (status == 200 || status == 201)
	{
		/*
		 * Only an answer that is the Lease as we wrote it proves the write:
		 * a 200 whose body is not (a proxy's error page, a cut-off answer)
		 * may come from a request the API server never executed, and
		 * counting it as a renewal would move the fence deadline past the
		 * instant the others see the Lease expire.
		 */
		if (!hapg_parse_json(r.body, r.len, &obj, err, sizeof(err)))
		{
			hapg_api_error(w, "could not %s the Lease: HTTP %ld with an answer that is not JSON (%s)",
						   hapg_action_name(d->action), status, err);
			w->lease.valid = false;
			status = 0;
		}
		else if (!is_written_lease(obj, lw.holder, err, sizeof(err)))
		{
			hapg_api_error(w, "could not %s the Lease: HTTP %ld with an answer that is not the Lease written (%s)",
						   hapg_action_name(d->action), status, err);
			json_object_put(obj);
			w->lease.valid = false;
			status = 0;
		}
		else
		{
			hapg_adopt_lease(w, obj, *sent_ms, hapg_mono_ms(), true);
			hapg_failsafe_after_write(w, true);
			json_object_put(obj);
		}
	}
	else if (status != 409)
		hapg_api_error(w, "could not %s the Lease: %s", hapg_action_name(d->action), r.error);
	kube_response_free(&r);
	return status;
}

/* PUT an edit of the Lease as last read: a compare-and-swap on its version. */
long
hapg_edit_lease(HapgWorker *w, const HapgLeaseEdit *e, char *err, int errlen)
{
	char	   *body = hapg_build_lease_edit(w->lease.obj, e);
	KubeResponse r;
	long		status;
	json_object *obj;
	char		perr[HAPG_MSG_LEN];

	if (body == NULL)
	{
		snprintf(err, errlen, "could not build the Lease edit");
		return 0;
	}
	if (!kube_request(&w->kube, "PUT", hapg_lease_path(w->cfg.namespace, w->cfg.cluster),
					  "application/json", body, &r))
	{
		free(body);
		snprintf(err, errlen, "%s", r.error);
		return 0;
	}
	free(body);
	status = r.status;
	if (status == 200 && hapg_parse_json(r.body, r.len, &obj, perr, sizeof(perr)))
	{
		hapg_adopt_lease(w, obj, hapg_mono_ms(), hapg_mono_ms(), false);
		json_object_put(obj);
	}
	else if (status != 200)
		snprintf(err, errlen, "%s", r.error);
	kube_response_free(&r);
	return status;
}

/* Publish my position for this election on my Pod. */
bool
hapg_publish_candidacy(HapgWorker *w, const HapgDecision *d)
{
	char	   *patch = hapg_build_candidacy_patch(d->term, d->eligible, w->local.lsn,
												   w->local.timeline, hapg_failover_priority);
	KubeResponse r;
	bool		ok;
	char		lsn[32];

	if (patch == NULL)
		return false;
	ok = patch_pod(w, w->cfg.member, patch, &r);
	if (!ok)
		hapg_api_error(w, "could not publish candidacy: %s", r.error);
	kube_response_free(&r);
	free(patch);
	if (!ok)
		return false;
	strlcpy(w->candidacy_term, d->term, sizeof(w->candidacy_term));
	w->candidacy_sent_ms = hapg_mono_ms();
	w->election_standing = true;
	w->candidacy_lsn = w->local.lsn;
	hapg_format_lsn(w->local.lsn, lsn, sizeof(lsn));
	ereport(LOG,
			(errmsg("hapg: the Lease held by \"%s\" expired; %s candidate at %s on timeline %u%s%s",
					w->lease.info.view.holder[0] ? w->lease.info.view.holder : "(nobody)",
					d->eligible ? "eligible" : "ineligible", lsn, w->local.timeline,
					d->eligible ? "" : ": ", d->eligible ? "" : d->reason)));
	return true;
}

/*
 * A WAL receiver restarting (after a reload, or to switch timelines) stops
 * streaming for a moment: publish that only once it lasts.  True while the
 * publication should wait.
 */
static bool
stream_loss_is_brief(HapgWorker *w, const HapgPodInfo *pod)
{
	int64		now;

	if (!(w->local.in_recovery && !w->local.streaming && strcmp(pod->state, "streaming") == 0 &&
		  strcmp(w->published_key, "") != 0 && w->role != HAPG_ROLE_LEADER))
	{
		w->stream_lost_ms = 0;
		return false;
	}
	now = hapg_mono_ms();
	if (w->stream_lost_ms == 0)
		w->stream_lost_ms = now;
	if (now - w->stream_lost_ms >= STREAM_LOSS_GRACE_MS)
		return false;
	hapg_wake_by(w, w->stream_lost_ms + STREAM_LOSS_GRACE_MS);
	return true;
}

/* Patch our own Pod when its role label or published status is out of date. */
void
hapg_publish_pod(HapgWorker *w, HapgPodInfo *pod)
{
	HapgSelf	self = hapg_self(w);
	const char *label;
	const char *role;
	char		key[512];
	char	   *status;
	char	   *patch;
	KubeResponse r;
	char		err[HAPG_MSG_LEN];
	json_object *obj;
	bool		ok;

	if (stream_loss_is_brief(w, pod))
		return;
	label = hapg_pod_role_label(&self, w->lease.info.leader_timeline);
	role = hapg_pod_role(&self);
	snprintf(key, sizeof(key), "%s|%s|%s|%u|%s|%d|%d|%d", label ? label : "", role, self.state,
			 self.timeline, self.connect_address, self.nofailover, self.nosync, self.priority);
	/* Up to date if we wrote it, and the Pod as last seen still agrees. */
	if (strcmp(key, w->published_key) == 0 &&
		strcmp(pod->role_label, label ? label : "") == 0 &&
		pod->has_status && strcmp(pod->role, role) == 0 &&
		strcmp(pod->state, self.state) == 0 && pod->timeline == (int) self.timeline &&
		strcmp(pod->connect_address, self.connect_address) == 0 &&
		pod->nofailover == self.nofailover && pod->nosync == self.nosync &&
		pod->priority == self.priority)
		return;
	/* Written before and the cache merely lags: also nothing to do. */
	if (strcmp(key, w->published_key) == 0 && !w->pods.valid)
		return;

	status = hapg_build_status_json(role, self.state, self.timeline, self.lsn,
									self.connect_address, HAPG_VERSION,
									self.nofailover, self.nosync, self.priority);
	patch = hapg_build_pod_patch(w->cfg.role_label, label, status);
	free(status);
	if (patch == NULL)
		return;
	ok = patch_pod(w, w->cfg.member, patch, &r);
	free(patch);
	if (ok)
	{
		HapgPodInfo p;

		strlcpy(w->published_key, key, sizeof(w->published_key));
		if (hapg_parse_json(r.body, r.len, &obj, err, sizeof(err)))
		{
			if (hapg_parse_pod(obj, w->cfg.role_label, &p, err, sizeof(err)))
				hapg_cache_pod(w, &p, false);
			json_object_put(obj);
		}
		ereport(LOG,
				(errmsg("hapg: published Pod \"%s\": %s=%s, role %s, state %s, timeline %u",
						w->cfg.member, w->cfg.role_label, label ? label : "(none)", role,
						self.state, self.timeline)));
	}
	else
		hapg_api_error(w, "could not update Pod \"%s\": %s", w->cfg.member, r.error);
	kube_response_free(&r);
}

/*
 * A Pod still labelled primary after its member lost the Lease (killed, or
 * cut off before it could say so) keeps a Service routing clients to it:
 * the leader takes the label off.  Only ever a write when one is stale.
 */
void
hapg_clear_stale_primary_labels(HapgWorker *w)
{
	int			i;

	if (w->role != HAPG_ROLE_LEADER || w->local.in_recovery || w->promoting || !w->pods.valid)
		return;
	for (i = 0; i < w->pods.n; i++)
	{
		HapgPodInfo *p = &w->pods.pods[i];
		char	   *patch;
		KubeResponse r;

		if (strcmp(p->name, w->cfg.member) == 0 || strcmp(p->role_label, "primary") != 0)
			continue;
		patch = hapg_build_pod_patch(w->cfg.role_label, NULL, NULL);
		if (patch == NULL)
			return;
		if (patch_pod(w, p->name, patch, &r))
		{
			ereport(LOG, (errmsg("hapg: removed the stale %s=primary label from Pod \"%s\"",
								 w->cfg.role_label, p->name)));
			p->role_label[0] = '\0';
		}
		else
			hapg_api_error(w, "could not remove the stale %s=primary label from Pod \"%s\": %s",
						   w->cfg.role_label, p->name, r.error);
		kube_response_free(&r);
		free(patch);
	}
}
