/*
 * follow.c
 *		Actions on the local server: promote, fence, follow a leader, keep
 *		replication slots, and leave notes for the launcher.
 *
 * The worker has no database connection, so these work the way the server
 * itself does: signal files plus a signal to the postmaster for promotion
 * and shutdown, postgresql.auto.conf (under AutoFileLock, as ALTER SYSTEM)
 * plus SIGHUP for primary_conninfo, and the slot machinery directly.
 */
#include "hapg.h"

#include <signal.h>
#include <sys/stat.h>
#include <unistd.h>

#include "access/xlog.h"
#include "access/xlogrecovery.h"
#include "catalog/pg_control.h"
#include "access/xlog_internal.h"
#include "lib/stringinfo.h"
#include "miscadmin.h"
#include "postmaster/postmaster.h"
#include "replication/slot.h"
#include "storage/fd.h"
#include "storage/lwlock.h"
#include "utils/elog.h"
#include "utils/memutils.h"

#define AUTO_CONF "postgresql.auto.conf"
#define SLOT_PREFIX "hapg_"

/*
 * rm -rf of the data directory under a running server: the process's cwd
 * is then a deleted directory, so relative paths stop resolving.
 */
bool
hapg_datadir_ok(void)
{
	struct stat st;

	if (stat(XLOG_CONTROL_FILE, &st) == 0)
		return true;
	return errno != ENOENT;
}

/* Promotion the way pg_promote() asks for it: signal file plus SIGUSR1. */
bool
hapg_request_promotion(char *err, int errlen)
{
	FILE	   *f = fopen(PROMOTE_SIGNAL_FILE, "w");

	if (f == NULL || fclose(f) != 0)
	{
		snprintf(err, errlen, "could not create \"%s\": %m", PROMOTE_SIGNAL_FILE);
		return false;
	}
	if (kill(PostmasterPid, SIGUSR1) != 0)
	{
		snprintf(err, errlen, "could not signal the postmaster: %m");
		unlink(PROMOTE_SIGNAL_FILE);
		return false;
	}
	return true;
}

/* Write a small file atomically (tmp + durable rename). */
static bool
write_file(const char *path, const char *contents)
{
	char		tmp[MAXPGPATH];
	FILE	   *f;

	snprintf(tmp, sizeof(tmp), "%s.tmp", path);
	f = fopen(tmp, "w");
	if (f == NULL)
		return false;
	if (fputs(contents, f) < 0 || fflush(f) != 0 || fsync(fileno(f)) != 0)
	{
		fclose(f);
		unlink(tmp);
		return false;
	}
	if (fclose(f) != 0)
		return false;
	return durable_rename(tmp, path, LOG) == 0;
}

/* Create standby.signal: the server comes back as a standby at its next start. */
bool
hapg_write_standby_signal(void)
{
	FILE	   *f = fopen(STANDBY_SIGNAL_FILE, "w");

	return f != NULL && fclose(f) == 0;
}

/* Tell the launcher to rewind from source (or just restart as a standby). */
void
hapg_write_rejoin(const char *source, const char *reason)
{
	char		buf[2048];

	snprintf(buf, sizeof(buf), "source=%s\nreason=%s\n", source ? source : "", reason);
	if (!write_file(HAPG_REJOIN_FILE, buf))
		ereport(LOG, (errmsg("hapg: could not write \"%s\": %m", HAPG_REJOIN_FILE)));
}

/* Leave a note that this data directory belongs to an HA cluster. */
void
hapg_mark_joined(const char *cluster)
{
	struct stat st;
	char		buf[256];

	if (stat(HAPG_JOINED_FILE, &st) == 0)
		return;
	snprintf(buf, sizeof(buf), "%s\n", cluster);
	if (!write_file(HAPG_JOINED_FILE, buf))
		ereport(LOG, (errmsg("hapg: could not write \"%s\": %m", HAPG_JOINED_FILE)));
}

/*
 * Stop this primary so it cannot take another write.  It is first set up to
 * come back as a standby (standby.signal, and a rejoin note for the
 * launcher naming the leader to rewind from, when one is known); the
 * postmaster then does a fast shutdown, during which walsenders still ship
 * everything to the standbys.  With the data directory gone, an immediate
 * shutdown is all that is left.
 */
void
hapg_fence(const char *reason, const char *source, bool immediate)
{
	if (!immediate)
	{
		if (!hapg_write_standby_signal())
			ereport(LOG, (errmsg("hapg: could not create \"%s\": %m", STANDBY_SIGNAL_FILE)));
		hapg_write_rejoin(source, reason);
	}
	ereport(WARNING,
			(errmsg("hapg: %s (%s)", RecoveryInProgress() ? "stopping this standby to rejoin" :
					"fencing: stopping this primary", reason),
			 errdetail("It will not accept writes any more; %s",
					   immediate ? "immediate shutdown." :
					   "it will come back as a standby when started again.")));
	if (kill(PostmasterPid, immediate ? SIGQUIT : SIGINT) != 0)
		ereport(LOG, (errmsg("hapg: could not signal the postmaster: %m")));
}

/* Append name = 'value' as the configuration file parser reads it back. */
static void
append_setting(StringInfo out, const char *name, const char *value)
{
	const char *p;

	appendStringInfo(out, "%s = '", name);
	for (p = value; *p; p++)
	{
		if (*p == '\'')
			appendStringInfoString(out, "''");
		else if (*p == '\\')
			appendStringInfoString(out, "\\\\");
		else if (*p != '\n' && *p != '\r')
			appendStringInfoChar(out, *p);
	}
	appendStringInfoString(out, "'\n");
}

/* Is this line an assignment to one of names? */
static bool
line_sets(const char *line, const char **names, int n)
{
	int			i;

	while (*line == ' ' || *line == '\t')
		line++;
	for (i = 0; i < n; i++)
	{
		size_t		len = strlen(names[i]);

		if (pg_strncasecmp(line, names[i], len) == 0 &&
			(line[len] == ' ' || line[len] == '\t' || line[len] == '='))
			return true;
	}
	return false;
}

/*
 * Replace settings in postgresql.auto.conf the way ALTER SYSTEM does (same
 * lock, same atomic rename), so neither can lose the other's change.
 * A NULL value removes the setting.
 */
bool
hapg_set_auto_conf(const char **names, const char **values, int n)
{
	StringInfoData out;
	FILE	   *f;
	char		line[8192];
	bool		ok;
	int			i;

	initStringInfo(&out);
	LWLockAcquire(AutoFileLock, LW_EXCLUSIVE);
	f = fopen(AUTO_CONF, "r");
	if (f != NULL)
	{
		while (fgets(line, sizeof(line), f) != NULL)
			if (!line_sets(line, names, n))
				appendStringInfoString(&out, line);
		fclose(f);
	}
	if (out.len == 0)
		appendStringInfoString(&out,
							   "# Do not edit this file manually!\n"
							   "# It will be overwritten by the ALTER SYSTEM command.\n");
	for (i = 0; i < n; i++)
		if (values[i] != NULL)
			append_setting(&out, names[i], values[i]);
	ok = write_file(AUTO_CONF, out.data);
	LWLockRelease(AutoFileLock);
	pfree(out.data);
	return ok;
}

/* A physical slot name for a member: hapg_ plus its name, [a-z0-9_] only. */
void
hapg_slot_name(const char *member, char *buf, int buflen)
{
	int			i;
	int			j = snprintf(buf, buflen, SLOT_PREFIX);

	for (i = 0; member[i] && j < buflen - 1 && j < NAMEDATALEN - 1; i++)
		buf[j++] = (member[i] == '-' || member[i] == '.') ? '_' : member[i];
	buf[j] = '\0';
}

/*
 * Point this standby at a leader: primary_conninfo (and the slot) by a
 * configuration reload, which restarts the WAL receiver without restarting
 * the server (PostgreSQL 13 and later).  Returns true if it changed anything.
 */
bool
hapg_follow(HapgFollowMemory *fm, const char *conninfo, const char *slot)
{
	const char *names[2] = {"primary_conninfo", "primary_slot_name"};
	const char *values[2];

	if (strcmp(PrimaryConnInfo ? PrimaryConnInfo : "", conninfo) == 0 &&
		strcmp(PrimarySlotName ? PrimarySlotName : "", slot ? slot : "") == 0)
		return false;
	/* written already; our own reload is on its way */
	if (strcmp(fm->last_conninfo, conninfo) == 0 &&
		strcmp(fm->last_slot, slot ? slot : "") == 0)
		return false;
	values[0] = conninfo;
	values[1] = slot && slot[0] ? slot : NULL;
	if (!hapg_set_auto_conf(names, values, 2))
	{
		ereport(LOG, (errmsg("hapg: could not update %s: %m", AUTO_CONF)));
		return false;
	}
	strlcpy(fm->last_conninfo, conninfo, sizeof(fm->last_conninfo));
	strlcpy(fm->last_slot, slot ? slot : "", sizeof(fm->last_slot));
	if (kill(PostmasterPid, SIGHUP) != 0)
		ereport(LOG, (errmsg("hapg: could not signal the postmaster: %m")));
	return true;
}

/*
 * Make the startup process try streaming again now: after a failed WAL
 * receiver it sleeps wal_retrieve_retry_interval (5 s by default) on this
 * latch, which is all a wake-up does otherwise.
 */
void
hapg_retry_streaming(void)
{
	WakeupRecovery();
}

/* Does a slot exist, and is a walsender using it? */
static bool
slot_exists(const char *name, bool *active)
{
	int			i;
	bool		found = false;

	*active = false;
	LWLockAcquire(ReplicationSlotControlLock, LW_SHARED);
	for (i = 0; i < max_replication_slots; i++)
	{
		ReplicationSlot *s = &ReplicationSlotCtl->replication_slots[i];

		if (s->in_use && strcmp(NameStr(s->data.name), name) == 0)
		{
			found = true;
			*active = s->active_pid != 0;
			break;
		}
	}
	LWLockRelease(ReplicationSlotControlLock);
	return found;
}

/*
 * A slot operation failed: log it, forget the error and let go of the slot,
 * so the worker carries on instead of exiting.
 */
static void
slot_error_done(MemoryContext cxt)
{
	MemoryContextSwitchTo(cxt);
	EmitErrorReport();
	FlushErrorState();
	if (MyReplicationSlot != NULL)
		ReplicationSlotRelease();
}

/* Create a persistent physical slot that reserves WAL from now on. */
static void
create_slot(const char *name)
{
	MemoryContext cxt = CurrentMemoryContext;

	PG_TRY();
	{
		CheckSlotRequirements();
		ReplicationSlotCreate(name, false, RS_PERSISTENT, false);
		ReplicationSlotReserveWal();
		ReplicationSlotMarkDirty();
		ReplicationSlotSave();
		ReplicationSlotRelease();
		ereport(LOG, (errmsg("hapg: created replication slot \"%s\"", name)));
	}
	PG_CATCH();
	{
		slot_error_done(cxt);
	}
	PG_END_TRY();
}

/* Drop an unused slot of ours; an active one is left alone (nowait). */
static void
drop_slot(const char *name, const char *why)
{
	MemoryContext cxt = CurrentMemoryContext;

	PG_TRY();
	{
		ReplicationSlotDrop(name, true);
		ereport(LOG, (errmsg("hapg: dropped replication slot \"%s\" (%s)", name, why)));
	}
	PG_CATCH();
	{
		slot_error_done(cxt);
	}
	PG_END_TRY();
}

/*
 * A leader keeps a slot for every member so one briefly away can catch up;
 * slots of members whose Pod has been gone for gone_ms are dropped.  A
 * standby keeps none of hapg's slots: they would only pin WAL.
 */
void
hapg_sync_slots(HapgFollowMemory *fm, const char (*members)[HAPG_NAME_LEN], int n,
				const char *me, bool leader, int64 gone_ms)
{
	HapgSlotSeen *seen = fm->seen;
	char		want[HAPG_MAX_MEMBERS][NAMEDATALEN];
	int			nwant = 0;
	char		existing[HAPG_MAX_MEMBERS * 2][NAMEDATALEN];
	int			nexisting = 0;
	int64		now = hapg_mono_ms();
	int			i,
				j;

	if (max_replication_slots <= 0)
		return;
	if (leader)
		for (i = 0; i < n && nwant < HAPG_MAX_MEMBERS; i++)
			if (strcmp(members[i], me) != 0)
				hapg_slot_name(members[i], want[nwant++], NAMEDATALEN);

	/* hapg's slots as they are now */
	LWLockAcquire(ReplicationSlotControlLock, LW_SHARED);
	for (i = 0; i < max_replication_slots && nexisting < HAPG_MAX_MEMBERS * 2; i++)
	{
		ReplicationSlot *s = &ReplicationSlotCtl->replication_slots[i];

		if (s->in_use && SlotIsPhysical(s) &&
			strncmp(NameStr(s->data.name), SLOT_PREFIX, strlen(SLOT_PREFIX)) == 0)
			strlcpy(existing[nexisting++], NameStr(s->data.name), NAMEDATALEN);
	}
	LWLockRelease(ReplicationSlotControlLock);

	for (i = 0; i < nwant; i++)
	{
		bool		active;

		if (!slot_exists(want[i], &active))
			create_slot(want[i]);
	}
	for (i = 0; i < nexisting; i++)
	{
		bool		wanted = false;
		bool		active;
		int			k = -1;

		for (j = 0; j < nwant; j++)
			if (strcmp(existing[i], want[j]) == 0)
				wanted = true;
		for (j = 0; j < fm->nseen; j++)
			if (strcmp(seen[j].name, existing[i]) == 0)
				k = j;
		if (wanted)
		{
			if (k >= 0)
				seen[k].missing_since = 0;
			continue;
		}
		if (!slot_exists(existing[i], &active) || active)
			continue;
		if (!leader)
		{
			drop_slot(existing[i], "this member is a standby");
			continue;
		}
		if (k < 0 && fm->nseen < (int) lengthof(fm->seen))
		{
			k = fm->nseen++;
			strlcpy(seen[k].name, existing[i], NAMEDATALEN);
			seen[k].missing_since = 0;
		}
		if (k < 0)
			continue;
		if (seen[k].missing_since == 0)
			seen[k].missing_since = now;
		else if (now - seen[k].missing_since >= gone_ms)
		{
			drop_slot(existing[i], "its member's Pod is gone");
			seen[k] = seen[--fm->nseen];
		}
	}
}

/*
 * The libpq connection string to reach the leader at host:port, for
 * primary_conninfo and pg_rewind: this member's name as application_name,
 * so the leader's pg_stat_replication shows every member by name.
 */
char *
hapg_leader_conninfo(const char *connect_address)
{
	char		host[HAPG_ADDR_LEN];
	const char *colon = strrchr(connect_address, ':');
	size_t		hlen;

	if (colon == NULL || colon == connect_address)
		return NULL;
	hlen = Min((size_t) (colon - connect_address), sizeof(host) - 1);
	memcpy(host, connect_address, hlen);
	host[hlen] = '\0';
	if (host[0] == '[' && hlen > 1 && host[hlen - 1] == ']')
	{
		memmove(host, host + 1, hlen - 2);
		host[hlen - 2] = '\0';
	}
	return psprintf("host=%s port=%s application_name=%s connect_timeout=%d%s%s",
					host, colon + 1, hapg_effective_member(),
					Max(1, hapg_retry_timeout / 2),
					hapg_replication_conninfo[0] ? " " : "",
					hapg_replication_conninfo);
}
