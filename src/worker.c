/*
 * worker.c
 *		The hapg background worker: signals, the loop of phases, the wait.
 *
 * One pass of the loop: settings and signals; requests from SQL; when a
 * cycle is due (every hapg.loop_wait, or earlier when a watch, a request
 * or the decision asks), the cycle's phases
 *
 *		observe  -> this server's state, the Lease and the member Pods
 *		decide   -> the pure decision in lease.c
 *		act      -> the decided action, through act.c's table; local actions
 *		publish  -> my Pod, and the shared state SQL reads
 *
 * then the wait, and the check every wake-up makes.  All state is in one
 * HapgWorker (worker.h); per-pass allocations go into a memory context
 * reset after every pass.
 */
#include "worker.h"
#include "http.h"

#include "miscadmin.h"
#include "access/xlog.h"
#include "pgstat.h"
#include "postmaster/bgworker.h"
#include "postmaster/interrupt.h"
#include "storage/ipc.h"
#include "storage/latch.h"
#include "storage/proc.h"
#include "tcop/tcopprot.h"
#include "utils/memutils.h"

#define IDLE_WAIT_MS 10000		/* without valid timing settings */
#define MAX_WAIT_MS 1000		/* look at the clock at least this often */
#define PROMOTING_WAIT_MS 20	/* notice the end of a promotion quickly */

/* Wake the loop no later than at (monotonic ms). */
void
hapg_wake_by(HapgWorker *w, int64 at)
{
	if (w->decision_wake_ms == 0 || at < w->decision_wake_ms)
		w->decision_wake_ms = at;
}

/*
 * Take new settings, the API client's included; a new cluster or identity
 * forgets the old view.
 */
static void
load_settings(HapgWorker *w, bool first)
{
	bool		changed = hapg_load_config(&w->cfg, first);

	if (w->cfg.ready)
		hapg_kube_configure(&w->kube, w->cfg.retry_timeout);
	if (changed)
		hapg_view_forget(w);
}

/* ------------------------------------------------------------- observe */

/* Whether my own Pod exists, logged once each way. */
static void
observe_own_pod(HapgWorker *w)
{
	HapgPodInfo *me = w->pods.valid ? hapg_find_pod(w, w->cfg.member) : NULL;
	bool		pod_exists = me != NULL;

	if (w->pods.valid && !pod_exists)
	{
		if (!w->pod_missing_logged)
			ereport(WARNING,
					(errmsg("hapg: no Pod \"%s\" labelled %s=%s in namespace \"%s\"; this member takes no part in the cluster",
							w->cfg.member, HAPG_CLUSTER_LABEL, w->cfg.cluster, w->cfg.namespace),
					 errhint("Create the Pod with that label, or set hapg.member_name to this member's Pod name.")));
		w->pod_missing_logged = true;
	}
	else if (pod_exists && w->pod_missing_logged)
	{
		ereport(LOG, (errmsg("hapg: Pod \"%s\" found; taking part in cluster \"%s\"",
							 w->cfg.member, w->cfg.cluster)));
		w->pod_missing_logged = false;
	}
	/* Without a Pod list we cannot tell: keep our last judgement of it. */
	if (!w->pods.valid)
		pod_exists = !w->pod_missing_logged;
	if (w->lease.valid && pod_exists)
		hapg_mark_joined(w->cfg.cluster);
	w->my_pod = me;
	w->pod_exists = pod_exists;
}

/*
 * This server's state, the Lease and the Pods, as fresh as the decision
 * needs them.  False when this server is being stopped: nothing to decide.
 */
static bool
phase_observe(HapgWorker *w)
{
	int64		deadline;

	w->loop_count++;
	w->api_ok = true;
	w->last_error[0] = '\0';
	hapg_read_local_state(&w->local);
	if (w->fenced)
		return false;			/* the postmaster is shutting down */
	hapg_check_promotion(w);

	/*
	 * A leader's requests must all end before its fence deadline; in
	 * failsafe within a second, so that its heartbeats go on.
	 */
	deadline = hapg_fence_deadline(w);
	if (hapg_failsafe_until(w) > 0)
		deadline = Min(deadline, hapg_mono_ms() + HAPG_FAILSAFE_REQUEST_MS);
	kube_set_deadline(&w->kube, !w->local.in_recovery && !w->lease.info.paused ? deadline : 0);

	hapg_refresh_view(w);
	observe_own_pod(w);
	return true;
}

/* -------------------------------------------------------------- decide */

/* Build the decision's input from what this cycle observed. */
static void
fill_input(HapgWorker *w, HapgDecisionInput *in)
{
	const HapgLeaseInfo *li = &w->lease.info;
	int			i;

	memset(in, 0, sizeof(*in));
	in->now_ms = hapg_mono_ms();
	in->me = w->cfg.member;
	in->in_recovery = w->local.in_recovery;
	in->pod_exists = w->pod_exists;
	in->ttl_s = w->cfg.ttl;
	in->retry_timeout_s = w->cfg.retry_timeout;
	in->was_leader = w->was_leader;
	in->last_renew_sent_ms = w->last_renew_sent_ms;
	/* a synchronous set to publish rides on the next renewal, now */
	in->renew_interval_ms = w->sync.want_publish ? 0 : w->cfg.loop_wait * 1000L;
	in->lease = li->view;
	in->lease.known = w->lease_known;
	in->lease.observed_ms = w->lease.observed_ms;
	in->starting = w->local.starting;
	in->datadir_ok = hapg_datadir_ok();
	in->fence_margin_ms = hapg_fence_margin_ms(w->cfg.ttl);
	in->promoting = w->promoting;
	in->nofailover = hapg_nofailover;
	in->priority = hapg_failover_priority;
	in->max_lag = (uint64) hapg_maximum_lag_on_failover;
	in->my_timeline = w->local.timeline;
	in->has_leader_lsn = li->has_leader_lsn;
	in->leader_lsn = li->leader_lsn;
	in->leader_timeline = li->leader_timeline;
	in->candidacy_term = w->candidacy_term;
	in->candidacy_sent_ms = w->candidacy_sent_ms;
	/* rank on the position I published, as the others see it */
	in->my_lsn = strcmp(w->candidacy_term, li->view.resource_version) == 0 ?
		w->candidacy_lsn : w->local.lsn;
	in->settle_ms = Min(1000L, w->cfg.retry_timeout * 1000L / 2);
	in->paused = li->paused;
	in->has_handover = li->has_handover;
	in->handover_to = li->handover_to;
	in->handover_lsn = li->handover_lsn;
	hapg_failsafe_note_heard(w);
	in->failsafe_until_ms = hapg_failsafe_until(w);
	in->failsafe_hold_ms = hapg_failsafe_hold(w, in->now_ms);
	in->sync = &li->sync;
	in->ncand = 0;
	in->cand = w->election_peers;
	for (i = 0; i < w->pods.n && in->ncand < HAPG_MAX_MEMBERS; i++)
	{
		const HapgPodInfo *p = &w->pods.pods[i];
		HapgCandidate *c = &w->election_peers[in->ncand];

		if (strcmp(p->name, w->cfg.member) == 0 ||
			strcmp(p->name, li->view.holder) == 0 || p->deleting)
			continue;
		memset(c, 0, sizeof(*c));
		strlcpy(c->name, p->name, sizeof(c->name));
		c->published = p->has_candidacy &&
			strcmp(p->cand_term, li->view.resource_version) == 0;
		c->eligible = p->cand_eligible;
		c->lsn = p->cand_lsn;
		c->timeline = p->cand_timeline;
		c->priority = p->cand_priority;
		in->ncand++;
	}
}

/* Ask the pure decision what to do about the current view. */
static void
decide(HapgWorker *w, HapgDecisionInput *in, HapgDecision *d)
{
	fill_input(w, in);
	hapg_lease_decide(in, d);
}

/* The decision on what is known now, without reading anything first. */
void
hapg_decide_now(HapgWorker *w, HapgDecisionInput *in, HapgDecision *d)
{
	hapg_read_local_state(&w->local);
	decide(w, in, d);
}

/* Remember what the decision concluded, for the next cycle and for SQL. */
static void
record_decision(HapgWorker *w, const HapgDecisionInput *in, const HapgDecision *d)
{
	if (d->lost_lease && w->was_leader)
		ereport(WARNING,
				(errmsg("hapg: member \"%s\" lost the leader Lease \"%s\" to \"%s\"",
						w->cfg.member, w->cfg.cluster,
						w->lease.info.view.holder[0] ? w->lease.info.view.holder : "(nobody)")));
	hapg_failsafe_log_hold(w, d);
	if (d->wake_in_ms >= 0)
		w->decision_wake_ms = in->now_ms + d->wake_in_ms;
	w->was_leader = (d->role == HAPG_ROLE_LEADER);
	w->role = d->role;
	w->expires_in_ms = d->expires_in_ms;
}

/* ----------------------------------------------------------------- act */

/*
 * Decide and carry the action out, deciding again when the view changed
 * under it (a candidacy published, a 409 and a new read).  When the view
 * went stale (no answer, a failed read, too many conflicts) decide once
 * more with the Lease unknown, and carry out only a fence.
 */
static void
phase_decide_and_act(HapgWorker *w)
{
	HapgDecisionInput in;
	HapgDecision d;
	HapgActOutcome outcome = HAPG_DONE;
	int			attempt;

	w->decision_wake_ms = 0;
	w->lease_known = w->lease.valid;
	for (attempt = 0; attempt <= HAPG_MAX_CAS_ATTEMPTS; attempt++)
	{
		decide(w, &in, &d);
		outcome = hapg_execute(w, &in, &d);
		if (outcome != HAPG_DECIDE_AGAIN)
			break;
	}
	if (attempt > HAPG_MAX_CAS_ATTEMPTS)
	{
		hapg_api_error(w, "the Lease kept changing under %d compare-and-swap attempts",
					   HAPG_MAX_CAS_ATTEMPTS);
		outcome = HAPG_VIEW_STALE;
	}
	if (outcome == HAPG_VIEW_STALE)
	{
		w->lease_known = false;
		decide(w, &in, &d);
		if (d.action == HAPG_ACT_FENCE)
			outcome = hapg_act_fence(w, &in, &d);
	}
	if (outcome == HAPG_STOPPED)
		return;
	record_decision(w, &in, &d);
}

/* What follows locally from the cluster's state: follow, keep slots. */
static void
phase_local_actions(HapgWorker *w)
{
	hapg_follow_leader(w);
	if (!w->promoting)
		hapg_keep_slots(w, w->role == HAPG_ROLE_LEADER && !w->local.in_recovery);
	hapg_sync_round(w);
}

/* ------------------------------------------------------------- publish */

/* My Pod, the leader's label clean-up, the watches, the state for SQL. */
static void
phase_publish(HapgWorker *w)
{
	/* a server still starting up has nothing stable to publish yet */
	if (w->my_pod != NULL && !w->local.starting)
		hapg_publish_pod(w, w->my_pod);
	hapg_clear_stale_primary_labels(w);
	hapg_ensure_watches(w, hapg_mono_ms());
	hapg_api_cycle_done(w);
	hapg_publish_shared(w);
}

/* An election this member stood in is settled by the Lease's holder (metrics). */
static void
count_election(HapgWorker *w)
{
	const HapgLeaseView *lv = &w->lease.info.view;

	switch (hapg_election_settled(&w->election_standing, w->candidacy_term,
								  lv->exists ? lv->resource_version : "",
								  lv->exists ? lv->holder : "", w->cfg.member))
	{
		case 1:
			hapg_metrics_event(HAPG_EV_ELECTION_WON);
			break;
		case -1:
			hapg_metrics_event(HAPG_EV_ELECTION_LOST);
			break;
	}
}

/* One cycle: observe, decide, act, publish. */
static void
run_cycle(HapgWorker *w)
{
	if (phase_observe(w))
	{
		phase_decide_and_act(w);
		count_election(w);
		if (!w->fenced)
			hapg_run_switchover(w);
		if (!w->fenced)
		{
			phase_local_actions(w);
			phase_publish(w);
			return;
		}
	}
	hapg_publish_shared(w);		/* the postmaster is shutting down */
}

/* ---------------------------------------------------------------- wait */

/* Sleep until timeout, a latch, postmaster death or watch data. */
static void
wait_for_work(KubeClient *kc, long timeout_ms)
{
	int			fds[8];
	int			evs[8];
	int			n = kube_watch_sockets(kc, fds, evs, 8);
	long		curl_ms = kube_watch_timeout_ms(kc);
	WaitEventSet *set;
	WaitEvent	occurred;
	int			i;

	if (curl_ms >= 0 && curl_ms < timeout_ms)
		timeout_ms = curl_ms;
#if PG_VERSION_NUM >= 170000
	set = CreateWaitEventSet(NULL, 2 + n);	/* 17 takes a resource owner */
#else
	set = CreateWaitEventSet(CurrentMemoryContext, 2 + n);
#endif
	AddWaitEventToSet(set, WL_LATCH_SET, PGINVALID_SOCKET, MyLatch, NULL);
	AddWaitEventToSet(set, WL_EXIT_ON_PM_DEATH, PGINVALID_SOCKET, NULL, NULL);
	for (i = 0; i < n; i++)
		AddWaitEventToSet(set, evs[i], fds[i], NULL, NULL);
	(void) WaitEventSetWait(set, Max(timeout_ms, 0), &occurred, 1, PG_WAIT_EXTENSION);
	FreeWaitEventSet(set);
	ResetLatch(MyLatch);
}

/* A wait of timeout, shortened to ms when that is a wish (>= 0) and sooner. */
static long
sooner(long timeout, int64 ms)
{
	return ms >= 0 && ms < timeout ? (long) ms : timeout;
}

/*
 * Wait for the next cycle, or earlier: the decision's own wake-up, or the
 * instant a watched Lease falls silent (a replica notices a hung API server
 * then, not up to a loop later).
 */
static void
phase_wait(HapgWorker *w)
{
	int64		now = hapg_mono_ms();
	long		timeout = w->next_cycle_ms - now;
	int64		quiet = 0;
	int64		sync_ms;

	if (w->lease.valid && kube_watch_active(w->lease_watch))
		quiet = hapg_quiet_wake_ms(hapg_lease_quiet_at(w->lease_watch_heard_ms, w->cfg.loop_wait),
								   w->cycle_started_ms);
	if (quiet > 0)
	{
		if (quiet <= now)
		{
			w->wake = true;
			timeout = 0;
		}
		else if (quiet - now < timeout)
			timeout = quiet - now;
	}

	/* the decision's own wake-up: Lease expiry, election, fence time */
	if (w->decision_wake_ms > 0)
	{
		if (w->decision_wake_ms <= now)
		{
			w->decision_wake_ms = 0;
			w->wake = true;
			timeout = 0;
		}
		else if (w->decision_wake_ms - now < timeout)
			timeout = w->decision_wake_ms - now;
	}
	if (w->promoting)
		timeout = Min(timeout, PROMOTING_WAIT_MS);
	/* a leader in failsafe beats; a member holding its writes looks again */
	timeout = sooner(timeout, hapg_failsafe_wait_ms(w, now));
	/* a synchronous set to publish, or coming into force: a cycle soon */
	sync_ms = hapg_sync_wait_ms(w);
	if (sync_ms >= 0 && sync_ms < timeout)
	{
		timeout = sync_ms;
		w->next_cycle_ms = Min(w->next_cycle_ms, now + sync_ms);
	}
	wait_for_work(&w->kube, Min(timeout, MAX_WAIT_MS));
}

/*
 * After every wait: ask for a cycle when a promotion finished or a leader's
 * deadline passed (a leader past it has fenced already: the plan's first
 * step on the next pass, hapg_wake_plan).
 */
static void
phase_wake_up(HapgWorker *w)
{
	int64		deadline;

	if (w->cfg.ready)
		hapg_failsafe_round(w);
	deadline = hapg_fence_deadline(w);

	if (w->promoting && !RecoveryInProgress())
		w->wake = true;			/* writable now: publish the new leader at once */
	if (!w->fenced && deadline > 0 &&
		(hapg_mono_ms() >= deadline || !hapg_datadir_ok()))
		w->wake = true;
}

/* Without usable settings: answer requests, show why, wait for a reload. */
static void
phase_idle(HapgWorker *w)
{
	hapg_serve_requests(w);
	hapg_read_local_state(&w->local);
	w->role = HAPG_ROLE_UNKNOWN;
	kube_client_init(&w->kube);
	w->api_ok = false;
	strlcpy(w->last_error, w->cfg.config_error, sizeof(w->last_error));
	hapg_publish_shared(w);
	wait_for_work(&w->kube, w->cfg.timing_valid ? w->cfg.loop_wait * 1000L : IDLE_WAIT_MS);
}

/* SIGTERM: hand over if leading, then exit; SIGHUP: reload settings. */
static void
phase_signals(HapgWorker *w)
{
	if (ShutdownRequestPending)
	{
		hapg_on_shutdown_request(w);
		proc_exit(1);			/* 1: restarted if only this worker was stopped */
	}
	if (ConfigReloadPending)
	{
		ConfigReloadPending = false;
		ProcessConfigFile(PGC_SIGHUP);
		load_settings(w, false);
		w->wake = true;
	}
}

/* A cycle when one is due; otherwise publish what watch events changed. */
static void
phase_cycle_if_due(HapgWorker *w)
{
	if (w->wake || hapg_mono_ms() >= w->next_cycle_ms)
	{
		int64		started = hapg_mono_ms();

		w->wake = false;
		w->cycle_started_ms = started;
		run_cycle(w);
		hapg_metrics_loop((hapg_mono_ms() - started) / 1000.0);
		w->next_cycle_ms = hapg_mono_ms() + w->cfg.loop_wait * 1000L;
	}
	else if (w->pods.valid)
		hapg_publish_shared(w); /* watch events may have changed members */
}

/*
 * One step of the wake-up plan (hapg_wake_plan).  False ends this pass: a
 * reload took the settings away, and the worker idles instead.
 */
static bool
run_step(HapgWorker *w, HapgStep step)
{
	if (step != HAPG_STEP_FENCE && step != HAPG_STEP_SIGNALS && !w->cfg.ready)
	{
		phase_idle(w);
		return false;
	}
	switch (step)
	{
		case HAPG_STEP_FENCE:
			hapg_fence_overdue(w);
			break;
		case HAPG_STEP_SIGNALS:
			phase_signals(w);
			break;
		case HAPG_STEP_IDLE:
			break;				/* a reload made the settings usable: next pass */
		case HAPG_STEP_EVENTS:
			kube_watch_pump(&w->kube);
			break;
		case HAPG_STEP_REQUESTS:
			hapg_serve_requests(w);
			break;
		case HAPG_STEP_CYCLE:
			phase_cycle_if_due(w);
			break;
		case HAPG_STEP_WAIT:
			phase_wait(w);
			phase_wake_up(w);
			break;
	}
	return true;
}

/* Worker entry point, registered in _PG_init. */
void
hapg_worker_main(Datum arg pg_attribute_unused())
{
	HapgWorker *w;

	pqsignal(SIGHUP, SignalHandlerForConfigReload);
	pqsignal(SIGTERM, SignalHandlerForShutdownRequest);
	BackgroundWorkerUnblockSignals();

	hapg_shmem_attach();
	LWLockAcquire(&hapg_shared->lock, LW_EXCLUSIVE);
	hapg_shared->worker_pid = MyProcPid;
	hapg_shared->worker_procno = HAPG_MY_PROCNO();
	LWLockRelease(&hapg_shared->lock);

	kube_global_init();
	w = MemoryContextAllocZero(TopMemoryContext, sizeof(HapgWorker));
	w->role = HAPG_ROLE_UNKNOWN;
	w->loop_cxt = AllocSetContextCreate(TopMemoryContext, "hapg loop",
										ALLOCSET_DEFAULT_SIZES);
	hapg_view_start(w);
	hapg_failsafe_start(w);
	hapg_sync_start(w);
	load_settings(w, true);
	ereport(LOG, (errmsg("hapg: worker started (version %s)", HAPG_VERSION)));
	hapg_log_action_table(DEBUG1);
	hapg_forget_cancelled_handover();

	for (;;)
	{
		MemoryContext old;
		HapgWakeInput wi;
		HapgStep	steps[HAPG_MAX_STEPS];
		int			n;
		int			i;

		CHECK_FOR_INTERRUPTS();
		old = MemoryContextSwitchTo(w->loop_cxt);
		memset(&wi, 0, sizeof(wi));
		wi.ready = w->cfg.ready;
		wi.fenced = w->fenced;
		wi.fence_deadline_ms = hapg_fence_deadline(w);
		wi.now_ms = hapg_mono_ms();
		wi.paused = w->lease.info.paused;
		n = hapg_wake_plan(&wi, steps);
		for (i = 0; i < n; i++)
			if (!run_step(w, steps[i]))
				break;
		MemoryContextSwitchTo(old);
		MemoryContextReset(w->loop_cxt);
	}
}
