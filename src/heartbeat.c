/*
 * heartbeat.c
 *		Failsafe mode, the worker's side: the member list a leader
 *		publishes in the Lease, the heartbeat records it writes while it
 *		cannot renew, the proof it draws from its walsenders, and what a
 *		standby heard from its leader over replication.
 *
 * The rules (when to beat, what proves what, how long a standby waits)
 * are pure functions in failsafe.c; this file feeds them and carries their
 * answers out.  docs/DESIGN.md, "Failsafe mode", has the timing argument.
 */
#include "worker.h"

#include "access/xlog.h"
#include "replication/message.h"
#include "utils/timestamp.h"

#define HEARTBEAT_PREFIX "hapg.failsafe"

/* The worker starts: it may have heard its leader just before. */
void
hapg_failsafe_start(HapgWorker *w)
{
	memset(&w->fs, 0, sizeof(w->fs));
	w->fs.heard_ms = hapg_mono_ms();
}

/*
 * New WAL received since the last look moves heard_ms to now: later than
 * it arrived, so a standby's patience is never too short.  WAL, not any
 * message: a fenced leader restarted as a standby still answers a
 * cascading WAL receiver with keepalives, but writes no new WAL, while a
 * leader in failsafe writes a heartbeat every few hundred milliseconds, and
 * its proof counts only those (failsafe.c).
 */
void
hapg_failsafe_note_heard(HapgWorker *w)
{
	if (w->local.rcv_written != w->fs.rcv_written)
	{
		w->fs.rcv_written = w->local.rcv_written;
		w->fs.heard_ms = hapg_mono_ms();
	}
}

/* Add a name to a list unless it is there. */
static void
list_add(char (*list)[HAPG_NAME_LEN], int *n, const char *name)
{
	int			i;

	for (i = 0; i < *n; i++)
		if (strcmp(list[i], name) == 0)
			return;
	if (*n < HAPG_MAX_MEMBERS)
		strlcpy(list[(*n)++], name, HAPG_NAME_LEN);
}

/*
 * The hapg.io/failsafe annotation for a Lease write (malloc'd JSON), or ""
 * to remove it.  Its list is every member Pod I know and myself; it joins
 * the members a proof must hear before the write is sent, since a write
 * whose answer is lost may still have been stored.
 */
char *
hapg_failsafe_before_write(HapgWorker *w, bool holding)
{
	HapgFailsafeState *fs = &w->fs;
	int			i;

	fs->nwriting = 0;
	if (!holding || !w->cfg.failsafe)
	{
		/* a Lease without the list may be stored from now on */
		fs->published = false;
		return NULL;
	}
	list_add(fs->writing, &fs->nwriting, w->cfg.member);
	for (i = 0; i < w->pods.n; i++)
		if (!w->pods.pods[i].deleting)
			list_add(fs->writing, &fs->nwriting, w->pods.pods[i].name);
	for (i = 0; i < fs->nwriting; i++)
		list_add(fs->required, &fs->nrequired, fs->writing[i]);
	return hapg_build_failsafe_json((const char (*)[HAPG_NAME_LEN]) fs->writing, fs->nwriting);
}

/*
 * The write's answer: stored, the Lease now carries exactly the list just
 * written; otherwise every list written since the last stored one may be
 * there, and all stay required.
 */
void
hapg_failsafe_after_write(HapgWorker *w, bool stored)
{
	HapgFailsafeState *fs = &w->fs;

	if (!stored || fs->nwriting == 0)
		return;
	memcpy(fs->required, fs->writing, sizeof(fs->writing[0]) * fs->nwriting);
	fs->nrequired = fs->nwriting;
	fs->published = true;
}

/* Write one heartbeat record and wait until it is flushed, so it is sent. */
static void
write_heartbeat(HapgWorker *w, int64 now)
{
	XLogRecPtr	end;

	end = LogLogicalMessage(HEARTBEAT_PREFIX, "", 0, false);
	XLogFlush(end);
	hapg_beats_add(&w->fs.beats, now, end);
	w->fs.last_beat_ms = now;
}

/* Failsafe ends (or never began): log it once, forget the proof. */
static void
failsafe_off(HapgWorker *w, const char *why)
{
	HapgFailsafeState *fs = &w->fs;

	if (fs->active)
		ereport(LOG, (errmsg("hapg: failsafe mode ends: %s", why)));
	fs->active = false;
	fs->until_ms = 0;
	fs->beats.n = 0;
	fs->last_beat_ms = 0;
}

/*
 * A leader's round, on every wake-up: while its renewals fail, prove from
 * its walsenders' write positions that every listed member received a
 * recent heartbeat, and write the next one.  The proof's end extends the
 * fence deadline and writable_until; past the plain deadline that is
 * "failsafe active".
 */
void
hapg_failsafe_round(HapgWorker *w)
{
	HapgFailsafeState *fs = &w->fs;
	int64		now = hapg_mono_ms();
	bool		leader = w->was_leader && !w->fenced && !RecoveryInProgress();
	int64		plain;
	HapgLocalState st;
	HapgFailsafeLeaderIn in;
	HapgFailsafeProof proof;

	if (!hapg_failsafe_beating(w->cfg.failsafe, fs->published, leader, now,
							   w->last_renew_sent_ms, w->cfg.loop_wait,
							   w->outage_start_ms != 0))
	{
		failsafe_off(w, w->fenced ? "this server is stopping" :
					 !leader ? "this member no longer leads" :
					 "the Lease was renewed");
		return;
	}
	hapg_read_local_state(&st);
	memset(&in, 0, sizeof(in));
	in.enabled = w->cfg.failsafe;
	in.published = fs->published;
	in.refused = w->kube.last_status == 401 || w->kube.last_status == 403;
	in.ttl_s = w->cfg.ttl;
	in.now_ms = now;
	in.me = w->cfg.member;
	in.nrequired = fs->nrequired;
	in.required = (const char (*)[HAPG_NAME_LEN]) fs->required;
	in.nsenders = st.nsenders;
	in.senders = st.senders;
	in.beats = &fs->beats;
	hapg_failsafe_prove(&in, &proof);
	fs->until_ms = proof.until_ms;
	strlcpy(fs->why, proof.why, sizeof(fs->why));

	plain = hapg_fence_deadline_ms(w->last_renew_sent_ms, w->cfg.ttl,
								   hapg_fence_margin_ms(w->cfg.ttl));
	if (!fs->active && now >= plain && fs->until_ms > now)
	{
		fs->active = true;
		fs->active_since = GetCurrentTimestamp();
		ereport(LOG,
				(errmsg("hapg: failsafe mode: the Lease could not be renewed, and all %d listed members stream from this leader; it stays writable while they do",
						fs->nrequired)));
	}
	else if (fs->active && fs->until_ms <= now)
	{
		ereport(LOG, (errmsg("hapg: failsafe mode cannot go on: %s", fs->why)));
		fs->active = false;
	}
	if (now - fs->last_beat_ms >= hapg_failsafe_beat_interval_ms(w->cfg.ttl))
		write_heartbeat(w, now);
	hapg_publish_writable(w, true);
}

/* Say once per expired Lease why this member leaves it alone. */
void
hapg_failsafe_log_hold(HapgWorker *w, const HapgDecision *d)
{
	const char *rv = w->lease.info.view.resource_version;

	if (!d->failsafe_held || strcmp(w->fs.held_term, rv) == 0)
		return;
	strlcpy(w->fs.held_term, rv, sizeof(w->fs.held_term));
	ereport(LOG,
			(errmsg("hapg: the Lease held by \"%s\" expired; %s",
					w->lease.info.view.holder, d->reason),
			 errdetail("Last WAL from the leader received %.1f s ago; hapg.failsafe_mode leaves the Lease to it for %.1f s after that.",
					   (hapg_mono_ms() - w->fs.heard_ms) / 1000.0,
					   hapg_failsafe_patience_ms(w->cfg.ttl) / 1000.0)));
}

/* The proof's end, for the fence deadline (0: none). */
int64
hapg_failsafe_until(HapgWorker *w)
{
	return w->fs.until_ms;
}

/*
 * A standby's patience with an expired Lease (hapg_failsafe_hold_ms):
 * 0 may take it, -1 never on its own, else how long still.
 */
int64
hapg_failsafe_hold(HapgWorker *w, int64 now)
{
	const HapgLeaseInfo *li = &w->lease.info;
	HapgFailsafeReplicaIn in;
	int			i;

	memset(&in, 0, sizeof(in));
	in.lease_failsafe = w->lease_known && li->view.exists && li->failsafe;
	in.holder_named = li->view.holder[0] != '\0';
	in.manual_release = !in.holder_named && li->has_handover && li->handover_lsn == 0;
	in.holder_is_me = strcmp(li->view.holder, w->cfg.member) == 0;
	for (i = 0; i < li->nfailsafe; i++)
		if (strcmp(li->failsafe_members[i], w->cfg.member) == 0)
			in.me_listed = true;
	in.heard_ms = w->fs.heard_ms;
	in.now_ms = now;
	in.ttl_s = w->cfg.ttl;
	return hapg_failsafe_hold_ms(&in);
}

/*
 * No writes before this, after taking a failsafe Lease (0: none).  Until
 * the worker has seen this server out of recovery, its receiver may still
 * hear the old leader: no writes at all.
 */
int64
hapg_failsafe_hold_until(HapgWorker *w)
{
	if (w->fs.took_failsafe && w->local.in_recovery)
		return PG_INT64_MAX;
	return hapg_failsafe_write_hold_until(w->fs.took_failsafe, w->fs.heard_ms, w->cfg.ttl);
}

/* How long the loop may sleep: a leader in failsafe beats often. */
int64
hapg_failsafe_wait_ms(HapgWorker *w, int64 now)
{
	int64		hold = hapg_failsafe_hold_until(w);

	if (hold > now && hold < PG_INT64_MAX)
		return hold - now;
	if (w->fs.until_ms > 0 || w->fs.beats.n > 0)
		return hapg_failsafe_beat_interval_ms(w->cfg.ttl);
	return -1;
}
