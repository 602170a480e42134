/*
 * shmem.c
 *		The shared state the worker publishes and SQL reads.
 *
 * The worker copies its view here after every cycle (hapg_publish_shared);
 * hapg_status(), hapg_members and hapg_history read it.
 * A fixed-size struct of plain values guarded by one LWLock that lives
 * inside it (no pointers: a restarted worker and every backend read the
 * same bytes safely).
 */
#include "worker.h"

#include <sys/stat.h>

#include "miscadmin.h"
#include "storage/ipc.h"
#include "storage/shmem.h"
#include "utils/timestamp.h"

HapgShared *hapg_shared = NULL;

static shmem_request_hook_type prev_shmem_request_hook = NULL;
static shmem_startup_hook_type prev_shmem_startup_hook = NULL;

/*
 * Tell every backend until when it may commit (commitrule.c): the fence
 * deadline of my last successful Lease write while I lead, never once I do
 * not or have fenced, "unguarded" where hapg is not in charge.  A cluster
 * exists once its Lease does; before the Lease was read, the data
 * directory's note says whether it belonged to one.
 */
void
hapg_publish_writable(HapgWorker *w, bool leader)
{
	HapgWritableInput in;
	struct stat st;

	memset(&in, 0, sizeof(in));
	in.configured = w->cfg.ready;
	in.in_cluster = w->lease.valid ? w->lease.info.view.exists :
		stat(HAPG_JOINED_FILE, &st) == 0;
	in.leader = leader;
	in.other_holds = w->lease.valid && w->lease.info.view.exists &&
		w->lease.info.view.holder[0] != '\0' &&
		strcmp(w->lease.info.view.holder, w->cfg.member) != 0;
	in.fenced = w->fenced;
	in.last_renew_sent_ms = w->last_renew_sent_ms;
	in.ttl_s = w->cfg.ttl;
	in.fence_margin_ms = hapg_fence_margin_ms(w->cfg.ttl);
	hapg_failsafe_note_heard(w);
	in.failsafe_until_ms = hapg_failsafe_until(w);
	in.hold_until_ms = hapg_failsafe_hold_until(w);
	in.now_ms = hapg_mono_ms();
	hapg_set_writable_until(hapg_writable_until(&in));
}

/* Ask for our shared memory at start-up. */
static void
shmem_request(void)
{
	if (prev_shmem_request_hook)
		prev_shmem_request_hook();
	RequestAddinShmemSpace(MAXALIGN(sizeof(HapgShared)));
}

/* Create or attach; the tranche is registered in every process that uses it. */
static void
shmem_startup(void)
{
	bool		found;

	if (prev_shmem_startup_hook)
		prev_shmem_startup_hook();
	LWLockAcquire(AddinShmemInitLock, LW_EXCLUSIVE);
	hapg_shared = ShmemInitStruct("hapg", sizeof(HapgShared), &found);
	if (!found)
	{
		memset(hapg_shared, 0, sizeof(HapgShared));
		hapg_shared->tranche_id = LWLockNewTrancheId();
		LWLockInitialize(&hapg_shared->lock, hapg_shared->tranche_id);
		hapg_shared->worker_procno = -1;
		pg_atomic_init_u64(&hapg_shared->writable_until, hapg_initial_writable_until());
		strlcpy(hapg_shared->last_error, "worker not started yet",
				sizeof(hapg_shared->last_error));
	}
	LWLockRelease(AddinShmemInitLock);
	LWLockRegisterTranche(hapg_shared->tranche_id, "hapg");
}

/* Install the hooks that size and create the shared state. */
void
hapg_shmem_request(void)
{
	prev_shmem_request_hook = shmem_request_hook;
	shmem_request_hook = shmem_request;
	prev_shmem_startup_hook = shmem_startup_hook;
	shmem_startup_hook = shmem_startup;
}

/* Make sure this process can use hapg_shared (and its lock's tranche name). */
void
hapg_shmem_attach(void)
{
	if (hapg_shared == NULL)
		ereport(ERROR,
				(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				 errmsg("hapg is not loaded through shared_preload_libraries"),
				 errhint("Add hapg to shared_preload_libraries in postgresql.conf and restart the server.")));
	LWLockRegisterTranche(hapg_shared->tranche_id, "hapg");
}

/*
 * Show an API error to SQL and the HTTP endpoint at once: a cycle of hung
 * requests can take several seconds, and an outage must not look healthy
 * until it ends.
 */
void
hapg_publish_api_error(HapgWorker *w)
{
	HapgShared *s = hapg_shared;

	if (s == NULL)
		return;
	LWLockAcquire(&s->lock, LW_EXCLUSIVE);
	s->api_ok = false;
	strlcpy(s->last_error, w->last_error, sizeof(s->last_error));
	LWLockRelease(&s->lock);
}

/*
 * Copy the worker's view of the cluster into shared memory for SQL.  The
 * members are the one member view (members.c), the same the decisions use.
 */
void
hapg_publish_shared(HapgWorker *w)
{
	HapgShared *s = hapg_shared;
	TimestampTz now = GetCurrentTimestamp();
	const HapgLeaseInfo *li = &w->lease.info;
	HapgMemberView *mv = palloc(sizeof(HapgMemberView) * HAPG_MAX_MEMBERS);
	HapgLeaderPos lp;
	int			n = hapg_member_view(w, mv, false, &lp);

	LWLockAcquire(&s->lock, LW_EXCLUSIVE);
	s->configured = w->cfg.ready;
	strlcpy(s->cluster, w->cfg.cluster, sizeof(s->cluster));
	strlcpy(s->member, w->cfg.member, sizeof(s->member));
	s->role = w->role;
	strlcpy(s->state, hapg_local_state_name(&w->local), sizeof(s->state));
	strlcpy(s->leader, li->view.exists ? li->view.holder : "", sizeof(s->leader));
	s->lease_transitions = li->view.transitions;
	s->lease_expires_in_ms = w->expires_in_ms;
	s->lease_info_at = now;
	s->api_ok = w->api_ok;
	strlcpy(s->last_error, w->last_error, sizeof(s->last_error));
	if (w->cfg.config_error[0])
		strlcpy(s->last_error, w->cfg.config_error, sizeof(s->last_error));
	s->last_loop = now;
	s->loop_count = w->loop_count;
	s->timeline = w->local.timeline;
	s->lsn = w->local.lsn;
	s->leader_lsn = lp.known ? lp.lsn : InvalidXLogRecPtr;
	s->paused = li->paused;
	s->switchover = li->switchover;
	strlcpy(s->handover_to,
			li->view.exists && li->view.holder[0] == '\0' && li->has_handover ? li->handover_to : "",
			sizeof(s->handover_to));
	s->failsafe_active = w->fs.active;
	s->failsafe_since = w->fs.active ? w->fs.active_since : 0;
	s->sync = li->sync;
	s->nhistory = Min(li->nhistory, HAPG_MAX_HISTORY);
	memcpy(s->history, li->history, sizeof(HapgHistoryEntry) * s->nhistory);
	s->nmembers = n;
	memcpy(s->members, mv, sizeof(HapgMemberView) * n);
	LWLockRelease(&s->lock);
	hapg_publish_writable(w, w->was_leader);
}
