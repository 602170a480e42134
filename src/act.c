/*
 * act.c
 *		Carrying out what the decision asked for, and the local actions that
 *		follow from the cluster's state: promote, fence, follow the leader,
 *		keep replication slots, a pending switchover, the hand-over of a
 *		stopping leader.
 *
 * The decided action is dispatched through one table (executors[], below):
 * HapgAction -> the function that carries it out.  hapg_log_action_table()
 * prints it with what each does.
 */
#include "worker.h"
#include "http.h"

#include <signal.h>
#include <sys/stat.h>
#include <unistd.h>

#include "access/xlog.h"
#include "miscadmin.h"
#include "postmaster/bgwriter.h"

#define HANDOVER_WAIT_MS (120 * 1000)	/* for the server to stop */
#define PROMOTION_SLOW_MS 30000
#define RECOVERY_POKE_MS 250	/* wake a retrying startup process at most this often */
#define RECOVERY_LOOK_AGAIN_MS 1000 /* while not streaming from a known leader */

typedef HapgActOutcome (*HapgExecutor) (HapgWorker *w, const HapgDecisionInput *in,
										const HapgDecision *d);

static HapgActOutcome act_none(HapgWorker *w, const HapgDecisionInput *in,
							   const HapgDecision *d);
static HapgActOutcome act_write_lease(HapgWorker *w, const HapgDecisionInput *in,
									  const HapgDecision *d);
static HapgActOutcome act_candidacy(HapgWorker *w, const HapgDecisionInput *in,
									const HapgDecision *d);

/* The dispatch table: what carries out each action (lease.c says what it does). */
static const HapgExecutor executors[HAPG_NUM_ACTIONS] = {
	[HAPG_ACT_NONE] = act_none,
	[HAPG_ACT_CREATE] = act_write_lease,
	[HAPG_ACT_ACQUIRE] = act_write_lease,
	[HAPG_ACT_RENEW] = act_write_lease,
	[HAPG_ACT_CANDIDACY] = act_candidacy,
	[HAPG_ACT_RELEASE] = act_write_lease,
	[HAPG_ACT_FENCE] = hapg_act_fence,
};

/* Carry out the decided action through the table. */
HapgActOutcome
hapg_execute(HapgWorker *w, const HapgDecisionInput *in, const HapgDecision *d)
{
	return executors[d->action] (w, in, d);
}

/* Print the action table, e.g. into the log when the worker starts. */
void
hapg_log_action_table(int elevel)
{
	int			a;

	for (a = 0; a < HAPG_NUM_ACTIONS; a++)
		ereport(elevel, (errmsg("hapg: action %-9s -> %s", hapg_action_name((HapgAction) a),
								hapg_action_does((HapgAction) a))));
}

/* NONE: nothing to write. */
static HapgActOutcome
act_none(HapgWorker *w pg_attribute_unused(), const HapgDecisionInput *in pg_attribute_unused(),
		 const HapgDecision *d pg_attribute_unused())
{
	return HAPG_DONE;
}

/* CANDIDACY: publish my position, then decide again (the others may all be in). */
static HapgActOutcome
act_candidacy(HapgWorker *w, const HapgDecisionInput *in pg_attribute_unused(),
			  const HapgDecision *d)
{
	return hapg_publish_candidacy(w, d) ? HAPG_DECIDE_AGAIN : HAPG_DONE;
}

/* The fence reason for the log, naming the holder when there is one. */
static const char *
fence_reason(HapgWorker *w, const HapgDecision *d)
{
	const HapgLeaseView *lv = &w->lease.info.view;

	if (lv->exists && lv->holder[0] && strcmp(lv->holder, w->cfg.member) != 0)
		return psprintf("%s: the leader Lease \"%s\" is held by \"%s\"",
						d->reason, w->cfg.cluster, lv->holder);
	/* failsafe could not keep it: say why */
	if (d->renew_overdue && w->cfg.failsafe && w->fs.why[0])
		return psprintf("%s; failsafe mode could not hold: %s", d->reason, w->fs.why);
	return d->reason;
}

/*
 * Stop this server, leaving it set up to return as a standby.  Commits stop
 * first (writable_until), before the shutdown reaches any backend.
 */
static void
fence(HapgWorker *w, const char *reason, bool immediate)
{
	w->fenced = true;
	hapg_publish_writable(w, false);
	hapg_fence(reason, hapg_holder_conninfo(w), immediate);
	hapg_metrics_event(HAPG_EV_FENCE);
	w->role = HAPG_ROLE_UNLEASED_PRIMARY;
}

/* FENCE: this primary must not take another write. */
HapgActOutcome
hapg_act_fence(HapgWorker *w, const HapgDecisionInput *in, const HapgDecision *d)
{
	if (d->lost_lease)
		ereport(WARNING,
				(errmsg("hapg: member \"%s\" lost the leader Lease \"%s\" to \"%s\"",
						w->cfg.member, w->cfg.cluster, w->lease.info.view.holder)));
	fence(w, fence_reason(w, d), !in->datadir_ok);
	return HAPG_STOPPED;
}

/*
 * The wake-up plan's first step for a leader past its fence deadline: fence
 * on what is already known, before buffered watch events, requests or any
 * API call (its backends stopped committing at that deadline already).
 * Then learn who leads now, from buffered events or one read, so that the
 * launcher's rejoin note names the leader to rewind from (the postmaster
 * waits for this process before it exits).
 */
void
hapg_fence_overdue(HapgWorker *w)
{
	HapgDecisionInput in;
	HapgDecision d;
	const char *reason;
	char	   *source;

	hapg_decide_now(w, &in, &d);
	if (d.action != HAPG_ACT_FENCE)
		return;					/* no longer a primary; the cycle decides */
	reason = fence_reason(w, &d);
	(void) hapg_act_fence(w, &in, &d);
	if (in.datadir_ok)
	{
		kube_watch_pump(&w->kube);
		if (hapg_holder_conninfo(w) == NULL)
		{
			kube_set_deadline(&w->kube, 0);
			(void) hapg_read_lease(w);
		}
		source = hapg_holder_conninfo(w);
		if (source != NULL)
			hapg_write_rejoin(source, reason);
	}
	hapg_publish_shared(w);
}

/* Ask the server to promote, and remember what to write into the history. */
static void
start_promotion(HapgWorker *w, const char *reason, const char *old_holder)
{
	char		err[HAPG_MSG_LEN];
	HapgHistoryEntry *h = &w->pending_history;

	if (!hapg_request_promotion(err, sizeof(err)))
	{
		ereport(WARNING, (errmsg("hapg: could not promote: %s", err)));
		return;
	}
	w->promoting = true;
	w->promote_asked_ms = hapg_mono_ms();
	memset(h, 0, sizeof(*h));
	h->old_timeline = w->local.timeline;
	h->lsn = w->local.lsn;
	snprintf(h->reason, sizeof(h->reason), "%s%s%s",
			 reason, old_holder[0] ? "; previous leader " : "", old_holder);
	strlcpy(h->leader, w->cfg.member, sizeof(h->leader));
	hapg_format_microtime(hapg_unix_now_us(), h->time, sizeof(h->time));
	w->have_pending_history = true;
	ereport(LOG, (errmsg("hapg: member \"%s\" holds the Lease and is promoting (%s)",
						 w->cfg.member, reason)));
}

/*
 * CREATE, ACQUIRE, RENEW, RELEASE: the Lease write, a compare-and-swap on
 * the read the decision used.  A conflict says only that our read was
 * stale, never by itself that we lost: re-read and decide again.
 */
static HapgActOutcome
act_write_lease(HapgWorker *w, const HapgDecisionInput *in, const HapgDecision *d)
{
	const HapgLeaseInfo *li = &w->lease.info;
	char		old_holder[HAPG_NAME_LEN];
	const char *why;
	long		status;
	int64		sent_ms;
	bool		from_failsafe;

	/*
	 * Taking a Lease whose holder may be writable in failsafe (heartbeat.c):
	 * an expired one, or one a manual failover released (lsn 0; a clean
	 * hand-over is released by the stopped leader itself).
	 */
	from_failsafe = d->action == HAPG_ACT_ACQUIRE && li->failsafe &&
		(li->view.holder[0] != '\0' ?
		 strcmp(li->view.holder, w->cfg.member) != 0 :
		 li->has_handover && li->handover_lsn == 0 &&
		 strcmp(li->handover_from, w->cfg.member) != 0);
	strlcpy(old_holder, li->view.holder, sizeof(old_holder));
	if (d->promote && li->has_handover && old_holder[0] == '\0')
		strlcpy(old_holder, li->handover_from, sizeof(old_holder));
	why = d->promote && li->has_handover && li->view.holder[0] == '\0' ?
		pstrdup(li->handover_reason) : d->reason;
	/* a winner's slots must exist before its followers look for them */
	if (d->promote)
		hapg_keep_slots(w, true);

	/*
	 * The write hold from the moment the acquire is sent: one stored but
	 * unanswered is found next cycle as my Lease, renewed and promoted on
	 * (found by tests/sim_protocol, seed 5028).
	 */
	if (from_failsafe)
		w->fs.took_failsafe = true;
	status = hapg_write_lease(w, d, &sent_ms);
	if (status == 200 || status == 201)
	{
		if (d->action == HAPG_ACT_RELEASE)
		{
			ereport(WARNING, (errmsg("hapg: released the leader Lease \"%s\": %s",
									 w->cfg.cluster, d->reason)));
			fence(w, d->reason, true);
			return HAPG_STOPPED;
		}
		w->last_renew_sent_ms = sent_ms;
		/* a stored acquire or create says whether it took a failsafe Lease */
		if (d->action != HAPG_ACT_RENEW)
			w->fs.took_failsafe = from_failsafe;
		/* what the hand-over process may release: this renewal, as stored */
		strlcpy(w->last_renew_time, w->lease.valid ? w->lease.info.view.renew_time : "",
				sizeof(w->last_renew_time));
		if (d->promote && !hapg_write_still_valid(sent_ms, hapg_mono_ms(), in->ttl_s,
												  in->fence_margin_ms))
		{
			/* the Lease may have run out for the others already */
			ereport(LOG,
					(errmsg("hapg: the answer to the Lease %s came %.1f s after it was sent, past its fence deadline; not promoting on it, re-reading and deciding again",
							hapg_action_name(d->action), (hapg_mono_ms() - sent_ms) / 1000.0)));
			w->lease.valid = false;
			return HAPG_VIEW_STALE;
		}
		hapg_publish_writable(w, true);
		if (d->action == HAPG_ACT_RENEW && w->have_pending_history &&
			w->pending_history.new_timeline > 0)
			w->have_pending_history = false;	/* it is in the Lease now */
		if (d->action != HAPG_ACT_RENEW || !w->was_leader)
			ereport(LOG,
					(errmsg("hapg: member \"%s\" %s the leader Lease \"%s\" (transitions %d)",
							w->cfg.member,
							d->action == HAPG_ACT_CREATE ? "created and holds" :
							d->action == HAPG_ACT_ACQUIRE ? "acquired" : "holds",
							w->cfg.cluster, w->lease.info.view.transitions)));
		hapg_mark_joined(w->cfg.cluster);
		/* commits wait for the published synchronous set from the first one */
		if (d->promote && hapg_sync_before_promote(w))
			start_promotion(w, why, strcmp(old_holder, w->cfg.member) == 0 ? "" : old_holder);
		return HAPG_DONE;
	}
	if (status != 409)
	{
		/* no answer or an error: our view may be stale, re-read next time */
		w->lease.valid = false;
		return HAPG_VIEW_STALE;
	}
	ereport(LOG,
			(errmsg("hapg: conflict writing the Lease (%s, resourceVersion %s); re-reading and deciding again",
					hapg_action_name(d->action), w->lease.info.view.resource_version)));
	w->lease_known = hapg_read_lease(w);
	return w->lease_known ? HAPG_DECIDE_AGAIN : HAPG_VIEW_STALE;
}

/* A promotion asked for earlier: note when it finished, or that it is slow. */
void
hapg_check_promotion(HapgWorker *w)
{
	if (!w->promoting)
		return;
	if (!w->local.in_recovery)
	{
		w->promoting = false;
		w->pending_history.new_timeline = w->local.timeline;

		/*
		 * Promotion only asks for a spread checkpoint; until one ends,
		 * pg_control names the old timeline and a rewinding former leader
		 * would read the wrong history from us.  Hurry it, without waiting.
		 */
		RequestCheckpoint(CHECKPOINT_IMMEDIATE | CHECKPOINT_FORCE);
		ereport(LOG, (errmsg("hapg: promoted: member \"%s\" is the leader on timeline %u",
							 w->cfg.member, w->local.timeline)));
	}
	else if (hapg_mono_ms() - w->promote_asked_ms > PROMOTION_SLOW_MS)
		ereport(WARNING, (errmsg("hapg: promotion asked for %lld s ago has not finished",
								 (long long) (hapg_mono_ms() - w->promote_asked_ms) / 1000)));
}

/* The slot name this member streams through, or "" without slots. */
static void
my_slot(HapgWorker *w, char *slot, int len)
{
	if (hapg_use_slots)
		hapg_slot_name(w->cfg.member, slot, len);
	else
		slot[0] = '\0';
}

/*
 * A standby follows the Lease holder.  One that cannot stream from it
 * because its timeline diverged (a former primary) asks the launcher to
 * rewind it (hapg_rewind_due).
 */
void
hapg_follow_leader(HapgWorker *w)
{
	char	   *conninfo;
	char		slot[NAMEDATALEN];
	int64		now = hapg_mono_ms();

	if (!w->local.in_recovery || w->local.starting || w->promoting ||
		w->role == HAPG_ROLE_LEADER)
	{
		w->not_streaming_since_ms = 0;
		return;
	}
	conninfo = hapg_holder_conninfo(w);
	if (conninfo == NULL)
		return;
	my_slot(w, slot, sizeof(slot));
	if (hapg_follow(&w->follow, conninfo, slot))
	{
		ereport(LOG, (errmsg("hapg: following leader \"%s\" (%s)",
							 w->lease.info.view.holder, conninfo)));
		w->not_streaming_since_ms = now;
		return;
	}
	/* streaming that cannot get past the fork is not following */
	if (w->local.streaming &&
		!(w->lease.info.leader_timeline > (int) w->local.timeline &&
		  hapg_past_fork(w->lease.info.history, w->lease.info.nhistory,
						 w->local.timeline, w->local.lsn)))
	{
		w->not_streaming_since_ms = 0;
		return;
	}
	if (w->not_streaming_since_ms == 0)
		w->not_streaming_since_ms = now;
	if (hapg_rewind_due(w->not_streaming_since_ms, now, w->cfg.ttl,
						w->lease.info.leader_timeline, w->local.timeline))
	{
		char	   *why = psprintf("cannot stream from leader \"%s\" on timeline %d for %lld s while on timeline %u",
								   w->lease.info.view.holder, w->lease.info.leader_timeline,
								   (long long) ((now - w->not_streaming_since_ms) / 1000),
								   w->local.timeline);

		ereport(WARNING, (errmsg("hapg: %s; stopping to rejoin through pg_rewind", why)));
		w->fenced = true;
		hapg_publish_writable(w, false);
		hapg_fence(why, conninfo, false);
		return;
	}

	/*
	 * Pointed at the leader and not streaming: a WAL receiver that failed
	 * (the leader not up yet, its slot not created yet) makes the startup
	 * process sleep wal_retrieve_retry_interval before it tries again.  Wake
	 * it so it tries now, and look again within a second.
	 */
	if (now - w->recovery_poked_ms >= RECOVERY_POKE_MS)
	{
		hapg_retry_streaming();
		w->recovery_poked_ms = now;
	}
	hapg_wake_by(w, now + RECOVERY_LOOK_AGAIN_MS);
}

/* Keep the slots a leader holds for its members, and none on a standby. */
void
hapg_keep_slots(HapgWorker *w, bool leader)
{
	char		(*names)[HAPG_NAME_LEN];
	int			i;

	if (!hapg_use_slots || !w->pods.valid || w->local.starting)
		return;
	names = palloc(sizeof(*names) * HAPG_MAX_MEMBERS);
	for (i = 0; i < w->pods.n; i++)
		strlcpy(names[i], w->pods.pods[i].name, HAPG_NAME_LEN);
	hapg_sync_slots(&w->follow, (const char (*)[HAPG_NAME_LEN]) names, w->pods.n,
					w->cfg.member, leader, 30000L * w->cfg.ttl);
}

/*
 * A leader that hands over stops cleanly with all its WAL sent to target:
 * it can come back as target's standby without pg_rewind.
 */
static void
come_back_as_standby_of(HapgWorker *w, const char *target)
{
	HapgPodInfo *p = hapg_find_pod(w, target);
	char		slot[NAMEDATALEN];

	if (p && p->connect_address[0])
	{
		my_slot(w, slot, sizeof(slot));
		(void) hapg_follow(&w->follow, hapg_leader_conninfo(p->connect_address), slot);
	}
	if (!hapg_write_standby_signal())
		ereport(LOG, (errmsg("hapg: could not create \"%s\": %m", STANDBY_SIGNAL_FILE)));
}

/*
 * Stop this leader so that target takes over with nothing lost: come back
 * as its standby, and let the hand-over process release the Lease once the
 * shutdown checkpoint has been written (and streamed: walsenders wait for
 * their standbys before the postmaster exits).
 */
static void
hand_over(HapgWorker *w, const char *target, const char *reason)
{
	come_back_as_standby_of(w, target);
	ereport(LOG,
			(errmsg("hapg: %s: handing the Lease over to \"%s\"; stopping this server to come back as its standby",
					reason, target)));
	(void) hapg_start_handover(&w->kube, target, reason, HANDOVER_WAIT_MS,
							   w->last_renew_time);
	w->handing_over = true;
	w->fenced = true;
	hapg_publish_writable(w, false);
	if (kill(PostmasterPid, SIGINT) != 0)
		ereport(LOG, (errmsg("hapg: could not signal the postmaster: %m")));
}

/* The leader's part in a pending switchover: wait, drop, or hand over. */
void
hapg_run_switchover(HapgWorker *w)
{
	HapgSwitchoverPlan plan;
	HapgMemberView *mv;
	HapgLeaderPos lp;
	int			n;
	int64		now = hapg_mono_ms();

	if (!w->lease.info.switchover.pending || w->role != HAPG_ROLE_LEADER ||
		w->local.in_recovery || w->promoting || w->fenced)
		return;
	mv = palloc(sizeof(HapgMemberView) * HAPG_MAX_MEMBERS);
	n = hapg_member_view(w, mv, true, &lp);
	hapg_plan_switchover(&w->lease.info.switchover, w->cfg.member, hapg_unix_now_us(),
						 (int64) w->cfg.ttl * 1000000, mv, n, lp.lsn,
						 (uint64) hapg_maximum_lag_on_failover, &plan);
	if (plan.step == HAPG_SW_WAIT)
	{
		if (plan.wait_us > 0)
			hapg_wake_by(w, now + plan.wait_us / 1000 + 1);
		else if (strcmp(plan.why, w->switchover_wait_why) != 0)
			ereport(LOG, (errmsg("hapg: switchover waiting: %s", plan.why)));
		strlcpy(w->switchover_wait_why, plan.why, sizeof(w->switchover_wait_why));
		return;
	}
	w->switchover_wait_why[0] = '\0';
	if (plan.step == HAPG_SW_DROP)
	{
		HapgLeaseEdit e;
		HapgSwitchover sw = w->lease.info.switchover;
		char		err[HAPG_MSG_LEN];

		memset(&e, 0, sizeof(e));
		e.resource_version = w->lease.info.view.resource_version;
		e.switchover_json = "";
		if (hapg_edit_lease(w, &e, err, sizeof(err)) == 200)
			ereport(LOG, (errmsg("hapg: dropped the switchover to %s requested by \"%s\": %s",
								 sw.to[0] ? sw.to : "the healthiest replica",
								 sw.requested_by, plan.why)));
		return;
	}
	if (now < w->handover_not_before_ms)
	{
		w->decision_wake_ms = w->handover_not_before_ms;
		return;
	}
	hand_over(w, plan.target, "switchover");
}

/*
 * SIGTERM.  When the server is being stopped on purpose (pod deletion, a
 * rolling update), a leader's Lease goes to the best replica once the
 * server is down, instead of after the ttl.  Paused clusters are left
 * alone, like everything else while paused.
 */
void
hapg_on_shutdown_request(HapgWorker *w)
{
	HapgMemberView *mv;
	const HapgMemberView *best;
	HapgLeaderPos lp;
	int			n;

	hapg_sync_leave(w);
	if (!w->cfg.ready || w->fenced || !w->was_leader || w->role != HAPG_ROLE_LEADER ||
		w->local.in_recovery || w->lease.info.paused || !hapg_datadir_ok())
		return;
	hapg_read_local_state(&w->local);
	mv = palloc(sizeof(HapgMemberView) * HAPG_MAX_MEMBERS);
	n = hapg_member_view(w, mv, true, &lp);
	best = hapg_best_replica(mv, n, w->cfg.member, lp.known, lp.lsn,
							 (uint64) hapg_maximum_lag_on_failover);
	if (best == NULL)
	{
		ereport(LOG, (errmsg("hapg: shutting down the leader with no replica ready to take over; the Lease runs out in its ttl")));
		return;
	}
	ereport(LOG, (errmsg("hapg: shutting down: the Lease goes to \"%s\" once this server has stopped",
						 best->name)));
	come_back_as_standby_of(w, best->name);
	(void) hapg_start_handover(&w->kube, best->name, "the leader was shut down", HANDOVER_WAIT_MS,
							   w->last_renew_time);
}

/*
 * A leader's worker stopped on its own (pg_terminate_backend) left
 * standby.signal behind for a hand-over that did not happen: the server is
 * still a primary, and must not turn into a standby at its next restart
 * for that reason.
 */
void
hapg_forget_cancelled_handover(void)
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
