/*
 * request.c
 *		The SQL request channel, both sides: a backend hands a steering
 *		request (switchover, failover, pause, resume, cancel) to the worker,
 *		which alone talks to the API, and waits for its verdict.
 *
 * One slot in shared memory (HapgShared.req_*): the backend claims it
 * (req_pid), fills it, bumps req_id and sets the worker's latch; the
 * worker judges the request on a fresh read of the Lease, writes what it
 * changes as a compare-and-swap on that read, fills the verdict and sets
 * req_done = req_id.
 */
#include "worker.h"

#include <signal.h>

#include "miscadmin.h"
#include "storage/latch.h"
#include "storage/proc.h"
#include "utils/wait_event.h"

#define CLAIM_WAIT_MS 5000
#define POLL_MS 20
#define LOCAL_ANSWER_GRACE_MS 300	/* a switchover asked on the leader */

/* ------------------------------------------------------------ backend side */

/* Sleep a little, promptly interruptible by a cancel. */
void
hapg_nap(long ms)
{
	(void) WaitLatch(MyLatch, WL_LATCH_SET | WL_TIMEOUT | WL_EXIT_ON_PM_DEATH, ms,
					 PG_WAIT_EXTENSION);
	ResetLatch(MyLatch);
	CHECK_FOR_INTERRUPTS();
}

/*
 * Hand a request to the worker, which alone talks to the API, and wait for
 * its verdict.  Only one request per server at a time: it is rare, and one
 * slot keeps shared memory free of queues.
 */
static void
ask_once(HapgRequestKind kind, const char *candidate, int64 scheduled_at_us,
		 bool force, HapgVerdict *v, char *leader)
{
	int64		deadline = hapg_mono_ms() + CLAIM_WAIT_MS;
	int			id = 0;
	int			procno = -1;
	int			answer_ms;

	hapg_shmem_attach();
	for (;;)
	{
		bool		claimed = false;

		LWLockAcquire(&hapg_shared->lock, LW_EXCLUSIVE);
		if (hapg_shared->req_pid == 0 ||
			(hapg_shared->req_pid != MyProcPid && kill(hapg_shared->req_pid, 0) != 0))
		{
			hapg_shared->req_pid = MyProcPid;
			hapg_shared->req_kind = kind;
			strlcpy(hapg_shared->req_candidate, candidate, HAPG_NAME_LEN);
			hapg_shared->req_scheduled_at_us = scheduled_at_us;
			hapg_shared->req_force = force;
			id = ++hapg_shared->req_id;
			procno = hapg_shared->worker_procno;
			claimed = true;
		}
		LWLockRelease(&hapg_shared->lock);
		if (claimed)
			break;
		if (hapg_mono_ms() > deadline)
			ereport(ERROR,
					(errcode(ERRCODE_LOCK_NOT_AVAILABLE),
					 errmsg("another hapg request is in progress on this member"),
					 errhint("Try again in a moment.")));
		hapg_nap(POLL_MS);
	}

	answer_ms = (2 * hapg_retry_timeout + 5) * 1000;
	PG_TRY();
	{
		if (procno < 0)
			ereport(ERROR,
					(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
					 errmsg("the hapg worker is not running"),
					 errhint("Check the server log, and that hapg.cluster_name is set.")));
		SetLatch(&ProcGlobal->allProcs[procno].procLatch);
		deadline = hapg_mono_ms() + answer_ms;
		for (;;)
		{
			bool		done;

			LWLockAcquire(&hapg_shared->lock, LW_SHARED);
			done = hapg_shared->req_done == id;
			if (done)
			{
				*v = hapg_shared->req_verdict;
				strlcpy(leader, hapg_shared->req_leader, HAPG_NAME_LEN);
			}
			LWLockRelease(&hapg_shared->lock);
			if (done)
				break;
			if (hapg_mono_ms() > deadline)
				ereport(ERROR,
						(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
						 errmsg("the hapg worker did not answer within %d s", answer_ms / 1000),
						 errhint("See hapg_status() and the server log; the request may still take effect.")));
			hapg_nap(POLL_MS);
		}
	}
	PG_FINALLY();
	{
		LWLockAcquire(&hapg_shared->lock, LW_EXCLUSIVE);
		if (hapg_shared->req_pid == MyProcPid)
			hapg_shared->req_pid = 0;
		LWLockRelease(&hapg_shared->lock);
	}
	PG_END_TRY();
}

/*
 * Ask the worker; a refusal that rests on replication positions is asked
 * again after the next renewals (hapg_request_retry_ms), so a replica that
 * was behind for an instant is not refused on old news.  Any other refusal
 * is an SQL error with the verdict's texts.
 */
void
hapg_ask_worker(HapgRequestKind kind, const char *candidate, int64 scheduled_at_us,
				bool force, HapgVerdict *v, char *leader)
{
	int			refusals;

	for (refusals = 1;; refusals++)
	{
		int64		wait_ms;
		int64		until;

		ask_once(kind, candidate, scheduled_at_us, force, v, leader);
		wait_ms = hapg_request_retry_ms(v, refusals, hapg_loop_wait);
		if (wait_ms < 0)
			break;
		elog(DEBUG1, "hapg: %s; asking again after the next renewal", v->message);
		until = hapg_mono_ms() + wait_ms;
		while (hapg_mono_ms() < until)
			hapg_nap(Min(until - hapg_mono_ms(), 100));
	}
	if (!v->ok)
		ereport(ERROR,
				(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				 errmsg("%s", v->message),
				 v->detail[0] ? errdetail("%s", v->detail) : 0,
				 v->hint[0] ? errhint("%s", v->hint) : 0));
}
/* ------------------------------------------------------------- worker side */

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

/* Fill a refusal. */
static void
refuse(HapgVerdict *v, const char *message, const char *detail, const char *hint)
{
	memset(v, 0, sizeof(*v));
	snprintf(v->message, sizeof(v->message), "%s", message);
	snprintf(v->detail, sizeof(v->detail), "%s", detail);
	snprintf(v->hint, sizeof(v->hint), "%s", hint);
}

/* The Lease edit a judged request makes; *json is malloc'd, or NULL. */
static void
request_edit(HapgWorker *w, const HapgRequestInput *in, const HapgVerdict *v,
			 const char *holder, HapgLeaseEdit *e, char **json)
{
	HapgSwitchover sw;

	memset(e, 0, sizeof(*e));
	*json = NULL;
	e->resource_version = w->lease.info.view.resource_version;
	switch (in->kind)
	{
		case HAPG_REQ_SWITCHOVER:
			memset(&sw, 0, sizeof(sw));
			sw.pending = true;
			strlcpy(sw.from, holder, sizeof(sw.from));
			strlcpy(sw.to, in->scheduled_at_us ? in->candidate : v->target, sizeof(sw.to));
			sw.scheduled_at_us = in->scheduled_at_us;
			sw.requested_at_us = in->now_us;
			strlcpy(sw.requested_by, w->cfg.member, sizeof(sw.requested_by));
			*json = hapg_build_switchover_json(&sw);
			e->switchover_json = *json;
			break;
		case HAPG_REQ_FAILOVER:
			*json = hapg_build_handover_json(holder, v->target, 0, "manual failover");
			e->holder = "";
			e->handover_json = *json;
			e->switchover_json = "";
			break;
		case HAPG_REQ_PAUSE:
			e->config_json = "{\"paused\":true}";
			break;
		case HAPG_REQ_RESUME:
			e->config_json = "";
			break;
		case HAPG_REQ_CANCEL:
			e->switchover_json = "";
			break;
		default:
			break;
	}
}

/*
 * Carry out a request from SQL: judge it on a fresh read of the Lease and
 * write what it changes as a compare-and-swap on that read; a conflict
 * means judging again on a new read.
 */
static void
process_request(HapgWorker *w, int id)
{
	HapgRequestInput in;
	HapgVerdict v;
	HapgMemberView *mv = palloc(sizeof(HapgMemberView) * HAPG_MAX_MEMBERS);
	char		candidate[HAPG_NAME_LEN];
	char		holder[HAPG_NAME_LEN];
	char		err[HAPG_MSG_LEN];
	int			attempt;

	LWLockAcquire(&hapg_shared->lock, LW_SHARED);
	memset(&in, 0, sizeof(in));
	in.kind = hapg_shared->req_kind;
	strlcpy(candidate, hapg_shared->req_candidate, sizeof(candidate));
	in.scheduled_at_us = hapg_shared->req_scheduled_at_us;
	in.force = hapg_shared->req_force;
	LWLockRelease(&hapg_shared->lock);
	memset(&v, 0, sizeof(v));
	holder[0] = '\0';

	if (!w->cfg.ready)
	{
		refuse(&v, "hapg is not configured on this member", w->cfg.config_error,
			   "Fix the hapg.* settings and reload.");
		answer_request(id, &v, "");
		return;
	}
	for (attempt = 0; attempt <= HAPG_MAX_CAS_ATTEMPTS; attempt++)
	{
		HapgLeaseView view;
		HapgLeaseEdit e;
		HapgLeaderPos lp;
		char	   *json;
		long		status;

		if ((!w->pods.valid && !hapg_list_pods(w)) || !hapg_read_lease(w))
		{
			refuse(&v, "cannot reach the Kubernetes API", w->last_error,
				   "Nothing was changed; see hapg_status() and the server log.");
			break;
		}
		view = w->lease.info.view;
		view.observed_ms = w->lease.observed_ms;
		in.cluster = w->cfg.cluster;
		in.candidate = candidate;
		in.now_us = hapg_unix_now_us();
		in.lease_exists = view.exists;
		in.holder = view.exists ? w->lease.info.view.holder : "";
		in.lease_expired = hapg_lease_expired(&view, hapg_mono_ms(), NULL);
		in.paused = w->lease.info.paused;
		in.switchover = w->lease.info.switchover;
		in.max_lag = (uint64) hapg_maximum_lag_on_failover;
		in.members = mv;
		in.nmembers = hapg_member_view(w, mv, true, &lp);
		in.has_leader_lsn = lp.known;
		in.leader_lsn = lp.lsn;
		strlcpy(holder, in.holder, sizeof(holder));
		hapg_judge_request(&in, &v);
		if (!v.ok || !v.changes)
			break;

		request_edit(w, &in, &v, holder, &e, &json);
		err[0] = '\0';
		status = hapg_edit_lease(w, &e, err, sizeof(err));
		if (json)
			free(json);
		if (status == 200)
		{
			ereport(LOG, (errmsg("hapg: %s (asked on this member)", v.message)));
			if (in.kind == HAPG_REQ_SWITCHOVER && strcmp(holder, w->cfg.member) == 0)
				w->handover_not_before_ms = hapg_mono_ms() + LOCAL_ANSWER_GRACE_MS;
			break;
		}
		if (status != 409)
		{
			refuse(&v, "could not write the Lease", err[0] ? err : w->last_error,
				   "Nothing was changed; see hapg_status() and the server log.");
			break;
		}
		/* the Lease moved under us: judge again on a new read */
	}
	if (attempt > HAPG_MAX_CAS_ATTEMPTS)
		refuse(&v, "the Lease kept changing; nothing was changed", "", "Try again.");
	answer_request(id, &v, holder);
	w->wake = true;
}

/* The id of the request from SQL waiting for this worker, or 0. */
static int
request_pending(void)
{
	int			id = 0;

	LWLockAcquire(&hapg_shared->lock, LW_SHARED);
	if (hapg_shared->req_pid != 0 && hapg_shared->req_id != hapg_shared->req_done)
		id = hapg_shared->req_id;
	LWLockRelease(&hapg_shared->lock);
	return id;
}

/* Serve a waiting request; a member that is stopping refuses it. */
void
hapg_serve_requests(HapgWorker *w)
{
	int			id = request_pending();
	HapgVerdict v;

	if (id == 0)
		return;
	if (!w->fenced)
	{
		process_request(w, id);
		return;
	}
	refuse(&v, "this member is stopping", "", "Ask another member.");
	answer_request(id, &v, "");
}
