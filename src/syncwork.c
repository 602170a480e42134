/*
 * syncwork.c
 *		Synchronous replication, the worker's side: it observes the
 *		standbys, asks syncrep.c for the next step, and carries it out: the
 *		published set rides on a Lease write (kwrite.c), the configured one
 *		goes into synchronous_standby_names (postgresql.auto.conf, as ALTER
 *		SYSTEM, and a reload).  A new leader configures the set it published
 *		before it promotes.
 */
#include "worker.h"

#include <signal.h>

#include "access/xlog.h"
#include "miscadmin.h"
#include "postmaster/interrupt.h"
#include "postmaster/postmaster.h"
#include "replication/message.h"
#include "replication/syncrep.h"
#include "replication/walsender_private.h"
#include "utils/guc.h"

/* how long a configured set must have been in force before its sync point */
#define SYNC_SETTLE_MS 200
/* the prefix of the WAL record that makes standbys report their position */
#define SYNC_NUDGE_PREFIX "hapg.sync"
/* how long a new leader waits for its synchronous set to be in force */
#define SYNC_PROMOTE_WAIT_MS 5000

/* The worker starts: nothing configured by it that it knows of. */
void
hapg_sync_start(HapgWorker *w)
{
	memset(&w->sync, 0, sizeof(w->sync));
}

/* Note that a standby streams now (or, at a new term, may come back). */
static void
note_seen(HapgSyncWork *s, const char *name, int64 now, uint64 flush)
{
	int			i;

	for (i = 0; i < s->nseen; i++)
		if (strcmp(s->seen_name[i], name) == 0)
			break;
	if (i == s->nseen)
	{
		if (s->nseen >= HAPG_MAX_MEMBERS)
			return;
		strlcpy(s->seen_name[s->nseen++], name, HAPG_NAME_LEN);
	}
	s->seen_ms[i] = now;
	if (flush > s->seen_flush[i] || flush == 0)
		s->seen_flush[i] = flush;
}

/*
 * The standbys as the leader sees them: walsenders, and hapg.nosync from
 * their Pods.  A published standby that stopped streaming stays eligible
 * ("missing") for one loop_wait, so that a reconnect or a new leader's
 * followers do not drop it at once (and turn commits asynchronous in a
 * non-strict mode).
 */
static int
observe_standbys(HapgWorker *w, HapgSyncStandby *sb)
{
	HapgSyncWork *s = &w->sync;
	const HapgSyncSet *pub = &w->lease.info.sync;
	int64		now = hapg_mono_ms();
	int64		grace = w->cfg.loop_wait * 1000L;
	int			n = 0;
	int			i,
				j;

	for (i = 0; i < w->local.nsenders && n < HAPG_MAX_MEMBERS; i++)
	{
		const HapgMemberPos *p = &w->local.senders[i];

		if (strcmp(p->name, w->cfg.member) == 0)
			continue;
		memset(&sb[n], 0, sizeof(sb[n]));
		strlcpy(sb[n].name, p->name, sizeof(sb[n].name));
		sb[n].streaming = strcmp(p->state, "streaming") == 0;
		sb[n].flush = p->lsn;
		if (sb[n].streaming)
			note_seen(s, p->name, now, p->lsn);
		n++;
	}
	for (j = 0; j < s->nseen && n < HAPG_MAX_MEMBERS; j++)
	{
		bool		listed = false;

		if (now - s->seen_ms[j] >= grace || !hapg_sync_set_has(pub, s->seen_name[j]))
			continue;
		for (i = 0; i < n; i++)
			if (strcmp(sb[i].name, s->seen_name[j]) == 0)
			{
				listed = true;
				if (!sb[i].streaming)
					sb[i].missing = true;
			}
		if (listed)
			continue;
		memset(&sb[n], 0, sizeof(sb[n]));
		strlcpy(sb[n].name, s->seen_name[j], sizeof(sb[n].name));
		sb[n].missing = true;
		sb[n].flush = s->seen_flush[j];
		n++;
	}
	for (i = 0; i < n; i++)
		for (j = 0; j < w->pods.n; j++)
			if (strcmp(w->pods.pods[j].name, sb[i].name) == 0)
				sb[i].nosync = w->pods.pods[j].nosync;
	return n;
}

/*
 * What this leader wants, from its settings and its standbys; the set it
 * configured is the one to keep (the published one may be a union on its
 * way to it).
 */
static void
target_of(HapgWorker *w, const HapgSyncStandby *sb, int n, HapgSyncSet *target)
{
	hapg_sync_target((HapgSyncMode) hapg_synchronous_mode, hapg_synchronous_mode_strict,
					 hapg_synchronous_node_count, hapg_maximum_lag_on_syncnode,
					 w->local.lsn, sb, n,
					 w->sync.config.defined ? &w->sync.config : &w->lease.info.sync, target);
}

/*
 * Whether commits wait for standbys, as the checkpointer last published
 * (the flag became a status with an "initialised" bit in later minor
 * releases).
 */
static bool
checkpointer_says_wait(void)
{
#ifdef SYNC_STANDBY_DEFINED
	bits8		st = WalSndCtl->sync_standbys_status;

	return (st & SYNC_STANDBY_INIT) && (st & SYNC_STANDBY_DEFINED);
#else
	return WalSndCtl->sync_standbys_defined;
#endif
}

/* Is what this worker last wrote in force, as far as it can tell? */
static bool
config_in_force(HapgWorker *w)
{
	HapgSyncWork *s = &w->sync;

	if (!s->config.defined)
		return false;
	if (strcmp(SyncRepStandbyNames ? SyncRepStandbyNames : "", s->written) != 0)
		return false;
	/* the checkpointer's reload decides whether commits wait at all */
	return WalSndCtl != NULL && checkpointer_says_wait() == (s->written[0] != '\0');
}

/*
 * Write synchronous_standby_names for a set and reload.  The sync point is
 * taken later, once this process saw the reload (the postmaster signals
 * every child before that) and a little time passed for the walsenders.
 */
static bool
configure(HapgWorker *w, const HapgSyncSet *set)
{
	HapgSyncWork *s = &w->sync;
	char		names[sizeof(s->written)];
	const char *name = "synchronous_standby_names";
	const char *value = names;

	if (!hapg_sync_standby_names(set, names, sizeof(names)))
	{
		ereport(WARNING, (errmsg("hapg: synchronous_standby_names for %d standbys does not fit", set->n)));
		return false;
	}
	if (s->config.defined && hapg_sync_set_equal(&s->config, set) &&
		strcmp(s->written, names) == 0)
		return true;
	if (!hapg_set_auto_conf(&name, &value, 1))
	{
		ereport(LOG, (errmsg("hapg: could not set synchronous_standby_names: %m")));
		return false;
	}
	s->config = *set;
	strlcpy(s->written, names, sizeof(s->written));
	s->written_ms = hapg_mono_ms();
	s->in_force_ms = 0;
	s->sync_point = 0;
	ereport(LOG, (errmsg("hapg: synchronous_standby_names = '%s'", names)));
	if (kill(PostmasterPid, SIGHUP) != 0)
		ereport(LOG, (errmsg("hapg: could not signal the postmaster: %m")));
	return true;
}

/*
 * Make the standbys answer now: a walsender releases waiting commits only
 * when its standby reports a position, and a standby that has everything
 * reports again only after wal_receiver_status_interval (10 s).  Commits
 * that waited for a standby that left, and are already on the one that
 * took its place, would wait that long.  A tiny WAL record makes every
 * standby report at once.
 */
static void
nudge_standbys(void)
{
	XLogFlush(LogLogicalMessage(SYNC_NUDGE_PREFIX, "", 0, false));
}

/*
 * Note when the configured set came into force, and its sync point;
 * nudge the standbys then and once the walsenders surely reloaded.
 */
static void
track_in_force(HapgWorker *w, int64 now)
{
	HapgSyncWork *s = &w->sync;

	if (!config_in_force(w))
	{
		s->in_force_ms = 0;
		s->sync_point = 0;
		return;
	}
	if (s->in_force_ms == 0)
	{
		s->in_force_ms = now;
		if (!RecoveryInProgress())
			nudge_standbys();
	}
	if (s->sync_point == 0 && now - s->in_force_ms >= SYNC_SETTLE_MS)
	{
		s->sync_point = GetFlushRecPtr(NULL);
		if (!RecoveryInProgress())
			nudge_standbys();
	}
}

/* The next step, from what this leader observes now. */
static void
next_step(HapgWorker *w, HapgSyncStep *step)
{
	HapgSyncStandby sb[HAPG_MAX_MEMBERS];
	int			n = observe_standbys(w, sb);
	HapgSyncSet target;

	target_of(w, sb, n, &target);
	track_in_force(w, hapg_mono_ms());
	hapg_sync_step(&w->lease.info.sync, &w->sync.config, &target,
				   w->sync.sync_point != 0, w->sync.sync_point, sb, n, step);
}

/* Whether this member manages synchronous replication as the leader now. */
static bool
leading(HapgWorker *w)
{
	return w->cfg.ready && w->role == HAPG_ROLE_LEADER && !w->local.in_recovery &&
		!w->promoting && !w->fenced;
}

/*
 * The hapg.io/sync annotation for a Lease write (malloc'd; "" removes it),
 * or NULL to leave it as read.  A new leader publishes the old set adapted
 * (hapg_sync_for_new_leader); a leader renewing publishes the next step's
 * set when that step is a publication.
 */
char *
hapg_sync_before_write(HapgWorker *w, const HapgDecision *d)
{
	const HapgLeaseInfo *li = &w->lease.info;
	HapgSyncSet set;
	HapgSyncStep step;
	int			i;

	if (d->action == HAPG_ACT_ACQUIRE || d->action == HAPG_ACT_CREATE)
	{
		const char *old = li->view.holder[0] ? li->view.holder :
			li->has_handover ? li->handover_from : "";

		if (d->action == HAPG_ACT_CREATE || !li->view.exists)
			hapg_sync_set_clear(&set);
		else
			hapg_sync_for_new_leader(&li->sync, w->cfg.member, old, &set);
		/* nothing configured by this member applies to its new term */
		hapg_sync_start(w);
		/* the standbys it names get their grace period from now */
		for (i = 0; set.defined && i < set.n; i++)
			if (!hapg_sync_is_placeholder(set.names[i]))
				note_seen(&w->sync, set.names[i], hapg_mono_ms(), 0);
		return set.defined ? hapg_build_sync_json(&set) : strdup("");
	}
	if (d->action != HAPG_ACT_RENEW || !leading(w))
		return NULL;
	next_step(w, &step);
	if (step.kind != HAPG_SYNC_PUBLISH)
		return NULL;
	w->sync.publish_try_ms = hapg_mono_ms();
	ereport(LOG, (errmsg("hapg: %s", step.why)));
	return step.set.defined ? hapg_build_sync_json(&step.set) : strdup("");
}

/*
 * Read the configuration once the reload signal arrived (the promotion
 * waits on it); the flag stays set, so that the loop still takes the new
 * settings as usual.
 */
static void
reload_now(bool *done)
{
	CHECK_FOR_INTERRUPTS();
	if (ConfigReloadPending && !*done)
	{
		ProcessConfigFile(PGC_SIGHUP);
		*done = true;
	}
}

/*
 * A new leader of a cluster without a published set: what this member set
 * in postgresql.auto.conf in an earlier term (hapg owns the setting there)
 * would make its commits wait for a standby nobody chose; remove it, so
 * that postgresql.conf's value (normally none) applies.
 */
static void
forget_own_setting(HapgWorker *w)
{
	const char *name = "synchronous_standby_names";
	const char *value = NULL;
	int64		end;
	bool		reloaded = false;

	if (SyncRepStandbyNames == NULL || SyncRepStandbyNames[0] == '\0')
		return;
	if (!hapg_set_auto_conf(&name, &value, 1))
	{
		ereport(LOG, (errmsg("hapg: could not reset synchronous_standby_names: %m")));
		return;
	}
	ereport(LOG, (errmsg("hapg: no synchronous standbys published: synchronous_standby_names removed from postgresql.auto.conf")));
	if (kill(PostmasterPid, SIGHUP) != 0)
		return;
	end = hapg_mono_ms() + SYNC_PROMOTE_WAIT_MS;
	while (hapg_mono_ms() < end)
	{
		pg_usleep(10 * 1000L);
		reload_now(&reloaded);
		if (reloaded && WalSndCtl &&
			checkpointer_says_wait() == (SyncRepStandbyNames && SyncRepStandbyNames[0]))
			break;
	}
	(void) w;
}

/*
 * A new leader, before it promotes: commits must wait for the set it
 * published from the first one on, so configure it and wait (bounded) for
 * the reload.  False if it could not be configured: do not promote yet.
 */
bool
hapg_sync_before_promote(HapgWorker *w)
{
	const HapgSyncSet *set = &w->lease.info.sync;
	int64		end;
	bool		reloaded = false;

	if (!set->defined)
	{
		forget_own_setting(w);
		return true;
	}
	if (!configure(w, set))
		return false;
	end = hapg_mono_ms() + SYNC_PROMOTE_WAIT_MS;
	while (!config_in_force(w) && hapg_mono_ms() < end)
	{
		reload_now(&reloaded);
		pg_usleep(10 * 1000L);
	}
	if (!config_in_force(w))
	{
		ereport(WARNING,
				(errmsg("hapg: synchronous_standby_names = '%s' not in force after %d ms; not promoting yet",
						w->sync.written, SYNC_PROMOTE_WAIT_MS)));
		return false;
	}
	return true;
}

/*
 * Once a cycle, after the Lease write: configure, or note what the next
 * write should publish; a member that does not lead forgets what it
 * configured (its next term starts from the Lease).
 */
void
hapg_sync_round(HapgWorker *w)
{
	HapgSyncStep step;

	if (!leading(w))
	{
		/* a standby again (not a new leader still promoting) */
		if (w->local.in_recovery && !w->promoting && w->role != HAPG_ROLE_LEADER &&
			(w->sync.config.defined || w->sync.nseen > 0))
			hapg_sync_start(w);
		w->sync.want_publish = false;
		return;
	}
	next_step(w, &step);
	w->sync.want_publish = step.kind == HAPG_SYNC_PUBLISH;
	if (step.kind == HAPG_SYNC_CONFIGURE)
	{
		ereport(LOG, (errmsg("hapg: %s", step.why)));
		configure(w, &step.set);
	}
	else if (step.kind == HAPG_SYNC_CONFIRM && strcmp(w->sync.last_why, step.why) != 0)
		ereport(LOG, (errmsg("hapg: %s", step.why)));
	strlcpy(w->sync.last_why, step.why ? step.why : "", sizeof(w->sync.last_why));
}

/*
 * How soon to look again: a set to publish (at most every 250 ms, also when
 * the writes fail), or one coming into force.
 */
int64
hapg_sync_wait_ms(HapgWorker *w)
{
	if (!leading(w))
		return -1;
	if (w->sync.want_publish)
		return Max(0, w->sync.publish_try_ms + 250 - hapg_mono_ms());
	if (w->sync.config.defined && w->sync.sync_point == 0)
		return hapg_mono_ms() - w->sync.written_ms < 5000 ? 50 : 1000;
	return -1;
}

/*
 * A synchronous standby shutting down cleanly: its WAL receiver stops with
 * it, so say so on its Pod at once (as hapg.nosync); the leader drops it
 * on that event instead of after a grace period, and commits do not wait
 * for it meanwhile.  Bounded by a second: the shutdown goes on regardless.
 */
void
hapg_sync_leave(HapgWorker *w)
{
	const HapgSyncSet *pub = &w->lease.info.sync;

	if (!w->cfg.ready || !w->local.in_recovery || w->my_pod == NULL ||
		!pub->defined || pub->k <= 0 || !hapg_sync_set_has(pub, w->cfg.member))
		return;
	w->leaving = true;
	kube_set_deadline(&w->kube, hapg_mono_ms() + 1000);
	hapg_publish_pod(w, w->my_pod);
	ereport(LOG, (errmsg("hapg: shutting down a synchronous standby: asked the leader to stop waiting for it")));
}
