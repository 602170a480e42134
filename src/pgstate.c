/*
 * pgstate.c
 *		This server's state, read straight from shared memory.
 *
 * The worker has no database connection (it must run during recovery and
 * before consistency), so it cannot use SQL: recovery state, timeline and
 * WAL positions come from xlog's shared state, streaming from the WAL
 * receiver's, and the replicas' positions from the walsenders' slots plus
 * the backend status array (for application_name).
 */
#include "hapg.h"

#include "access/xlog.h"
#include "access/xlogrecovery.h"
#include "miscadmin.h"
#include "replication/walreceiver.h"
#include "replication/walsender_private.h"
#include "storage/spin.h"
#include "utils/backend_status.h"

/* application_name of a walsender, from the backend status array. */
static bool
walsender_name(pid_t pid, char *name, int namelen)
{
	int			n = pgstat_fetch_stat_numbackends();
	int			i;

	for (i = 1; i <= n; i++)
	{
		LocalPgBackendStatus *l = pgstat_fetch_stat_local_beentry(i);

		if (l && l->backendStatus.st_procpid == pid)
		{
			strlcpy(name, l->backendStatus.st_appname, namelen);
			return name[0] != '\0';
		}
	}
	return false;
}

/* The replicas connected to this primary, keyed by their member name. */
static void
read_walsenders(HapgLocalState *st)
{
	int			i;

	st->nsenders = 0;
	if (WalSndCtl == NULL)
		return;
	/* the status array snapshot is cached until cleared: take a fresh one */
	pgstat_clear_backend_activity_snapshot();
	for (i = 0; i < max_wal_senders && st->nsenders < HAPG_MAX_MEMBERS; i++)
	{
		WalSnd	   *ws = &WalSndCtl->walsnds[i];
		pid_t		pid;
		WalSndState state;
		XLogRecPtr	flush;
		XLogRecPtr	write;
		HapgMemberPos *p = &st->senders[st->nsenders];

		SpinLockAcquire(&ws->mutex);
		pid = ws->pid;
		state = ws->state;
		flush = ws->flush;
		write = ws->write;
		SpinLockRelease(&ws->mutex);
		if (pid == 0)
			continue;
		memset(p, 0, sizeof(*p));
		if (!walsender_name(pid, p->name, sizeof(p->name)) ||
			!hapg_valid_member_name(p->name))
			continue;
		p->lsn = flush;
		p->write_lsn = write;
		strlcpy(p->state, state == WALSNDSTATE_STREAMING ? "streaming" :
				state == WALSNDSTATE_CATCHUP ? "catchup" :
				state == WALSNDSTATE_BACKUP ? "backup" :
				state == WALSNDSTATE_STOPPING ? "stopping" : "startup",
				sizeof(p->state));
		st->nsenders++;
	}
	pgstat_clear_backend_activity_snapshot();
}

/* Fill st from shared memory; cheap enough to call on every wake-up. */
void
hapg_read_local_state(HapgLocalState *st)
{
	memset(st, 0, sizeof(*st));
	st->in_recovery = RecoveryInProgress();

	/*
	 * WAL received from the primary, kept after the receiver exits; read
	 * after RecoveryInProgress, so that on a promoted server (whose
	 * receiver stopped before recovery ended) it is the receiver's last word
	 * (failsafe mode's write hold).
	 */
	if (WalRcv != NULL)
		st->rcv_written = GetWalRcvWriteRecPtr();
	if (!st->in_recovery)
	{
		st->lsn = GetFlushRecPtr(&st->timeline);
		st->replay_lsn = st->lsn;
		read_walsenders(st);
	}
	else
	{
		TimeLineID	replay_tli = 0;
		TimeLineID	recv_tli = 0;
		XLogRecPtr	recv;

		st->replay_lsn = GetXLogReplayRecPtr(&replay_tli);
		recv = GetWalRcvFlushRecPtr(NULL, &recv_tli);
		st->timeline = replay_tli;
		st->lsn = Max(st->replay_lsn, recv);
		st->starting = (replay_tli == 0);
		if (WalRcv != NULL)
		{
			WalRcvState state;

			SpinLockAcquire(&WalRcv->mutex);
			state = WalRcv->walRcvState;
			SpinLockRelease(&WalRcv->mutex);
			st->streaming = (state == WALRCV_STREAMING);
		}
	}
}

/* The state word users see in hapg_members and on the Pod. */
const char *
hapg_local_state_name(const HapgLocalState *st)
{
	if (!st->in_recovery)
		return "running";
	if (st->starting)
		return "starting";
	return st->streaming ? "streaming" : "recovering";
}
