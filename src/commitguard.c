/*
 * commitguard.c
 *		Lease-bounded commits: every backend refuses to commit a transaction
 *		that writes once this server's leader Lease could have expired, and
 *		withholds the answer to a commit that finished after that instant.
 *
 * The worker publishes writable_until in shared memory (commitrule.c says
 * what it is); the checks here read it without a lock:
 *
 * - before the commit record (XACT_EVENT_PRE_COMMIT, XACT_EVENT_PRE_PREPARE,
 *   and COMMIT PREPARED, whose commit record is written while the statement
 *   runs, before its own transaction commits; a NOTIFY statement counts as a
 *   write, since PreCommit_Notify assigns an XID after these callbacks ran):
 *   past the instant, an ERROR
 *   with SQLSTATE 25006 (what a standby answers), so the transaction aborts
 *   and no commit record is written;
 * - after it (XACT_EVENT_COMMIT, XACT_EVENT_PREPARE): a commit that passed
 *   the first check but finished past the instant (the backend was paused
 *   in between, or its WAL flush stalled) is not confirmed: a WARNING with
 *   SQLSTATE 08007 (transaction resolution unknown) and the connection is
 *   closed before the CommandComplete goes out (also for a transaction whose
 *   XID came after the first check: pg_notify() called as a function);
 * - with hapg.lease_bounded_reads, every statement through the executor on
 *   a primary, after its snapshot was taken.
 *
 * Hooks are process-wide by PostgreSQL's design, so their state is one
 * struct here.
 */
#include "hapg.h"

#include <sys/socket.h>
#include <sys/stat.h>

#include "access/xact.h"
#include "access/xlog.h"
#include "executor/executor.h"
#include "libpq/libpq.h"
#include "libpq/libpq-be.h"
#include "miscadmin.h"
#include "nodes/parsenodes.h"
#include "tcop/dest.h"
#include "tcop/utility.h"

typedef struct CommitGuard
{
	ProcessUtility_hook_type prev_utility;
	ExecutorStart_hook_type prev_executor_start;
	bool		writes;			/* this transaction passed the check as a writer */
	bool		commit_prepared;	/* it ran COMMIT PREPARED */
	bool		notifies;		/* it ran NOTIFY: PreCommit_Notify assigns an XID */
} CommitGuard;

static CommitGuard guard;

/* The check itself, on the values of this instant. */
static bool
allowed_now(bool writes, bool read)
{
	HapgCommitInput in;

	if (hapg_shared == NULL)
		return true;
	in.writable_until_us = hapg_read_writable_until();
	if (in.writable_until_us == HAPG_WRITABLE_UNGUARDED)
		return true;
	in.now_us = hapg_clock_us();
	in.enabled = hapg_lease_bounded_commits;
	in.writes = writes;
	in.bounded_reads = read && hapg_lease_bounded_reads;
	in.primary = read ? !RecoveryInProgress() : true;
	return hapg_commit_allowed(&in);
}

/* The leader as the worker last saw it, for the error's detail. */
static void
known_leader(char *buf, int len)
{
	LWLockAcquire(&hapg_shared->lock, LW_SHARED);
	strlcpy(buf, hapg_shared->leader, len);
	LWLockRelease(&hapg_shared->lock);
	if (strcmp(buf, hapg_effective_member()) == 0)
		buf[0] = '\0';
}

#define HINT_ROLLED_BACK "The transaction was rolled back; run it again on the leader."
#define HINT_PREPARED "The prepared transaction is left as it was; commit it on the leader."
#define HINT_READ "hapg.lease_bounded_reads is on: read on the leader, or turn it off for this session."

/* Refuse what the caller was about to do: the transaction aborts. */
static void
refuse(const char *what, const char *hint)
{
	char		leader[HAPG_NAME_LEN];
	bool		never = hapg_read_writable_until() == HAPG_WRITABLE_NEVER;

	known_leader(leader, sizeof(leader));
	ereport(ERROR,
			(errcode(ERRCODE_READ_ONLY_SQL_TRANSACTION),
			 errmsg("cannot %s: member \"%s\" does not hold a valid leader Lease",
					what, hapg_effective_member()),
			 leader[0] ?
			 errdetail("%s The leader is \"%s\".",
					   never ? "This member is not the leader." :
					   "Its last Lease renewal is too old: another member may lead now.",
					   leader) :
			 errdetail("%s No other leader is known yet.",
					   never ? "This member is not the leader." :
					   "Its last Lease renewal is too old: another member may lead now."),
			 errhint("%s", hint)));
}

/*
 * A commit finished after the Lease could have expired: say so and close
 * the connection before the backend confirms it, so the client sees an
 * unknown outcome rather than a success a new leader may never have had.
 */
static void
withhold_answer(void)
{
	ereport(WARNING,
			(errcode(ERRCODE_TRANSACTION_RESOLUTION_UNKNOWN),
			 errmsg("hapg: the leader Lease of member \"%s\" could have expired while this transaction committed",
					hapg_effective_member()),
			 errdetail("The connection is closed without confirming the commit: it was written here, but a new leader may not have it, and this server discards it when it rejoins."),
			 errhint("Check on the leader whether the transaction's changes are there before running it again.")));
	if (MyProcPort != NULL && whereToSendOutput == DestRemote)
	{
		(void) pq_flush();		/* the warning; the confirmation is not yet queued */
		(void) shutdown(MyProcPort->sock, SHUT_RDWR);
	}
}

/* Commit-time checks, before and after the commit (or prepare) record. */
static void
guard_xact(XactEvent event, void *arg)
{
	CommitGuard *g = (CommitGuard *) arg;

	switch (event)
	{
		case XACT_EVENT_PRE_COMMIT:
		case XACT_EVENT_PRE_PREPARE:
			/* NOTIFY gets its XID after these callbacks, in PreCommit_Notify */
			g->writes = GetTopTransactionIdIfAny() != InvalidTransactionId || g->notifies;
			if (g->writes && !allowed_now(true, false))
			{
				g->writes = false;
				refuse(event == XACT_EVENT_PRE_COMMIT ? "commit" : "prepare transaction",
					   HINT_ROLLED_BACK);
			}
			break;
		case XACT_EVENT_COMMIT:
		case XACT_EVENT_PREPARE:
			/* the XID too: pg_notify() got one after the first check */
			if ((g->writes || g->commit_prepared ||
				 GetTopTransactionIdIfAny() != InvalidTransactionId) &&
				!allowed_now(true, false))
				withhold_answer();
			g->writes = false;
			g->commit_prepared = false;
			g->notifies = false;
			break;
		case XACT_EVENT_ABORT:
		case XACT_EVENT_PARALLEL_ABORT:
			g->writes = false;
			g->commit_prepared = false;
			g->notifies = false;
			break;
		default:
			break;
	}
}

/* COMMIT PREPARED writes its commit record before its transaction commits. */
static void
guard_utility(PlannedStmt *pstmt, const char *queryString, bool readOnlyTree,
			  ProcessUtilityContext context, ParamListInfo params,
			  QueryEnvironment *queryEnv, DestReceiver *dest, QueryCompletion *qc)
{
	Node	   *stmt = pstmt->utilityStmt;

	if (IsA(stmt, TransactionStmt) &&
		((TransactionStmt *) stmt)->kind == TRANS_STMT_COMMIT_PREPARED)
	{
		if (!allowed_now(true, false))
			refuse("commit prepared transaction", HINT_PREPARED);
		guard.commit_prepared = true;
	}
	if (IsA(stmt, NotifyStmt))
		guard.notifies = true;
	if (guard.prev_utility)
		guard.prev_utility(pstmt, queryString, readOnlyTree, context, params,
						   queryEnv, dest, qc);
	else
		standard_ProcessUtility(pstmt, queryString, readOnlyTree, context, params,
								queryEnv, dest, qc);
}

/* hapg.lease_bounded_reads: a statement's snapshot is taken; is it a leader's? */
static void
guard_executor_start(QueryDesc *queryDesc, int eflags)
{
	if (hapg_lease_bounded_reads && !(eflags & EXEC_FLAG_EXPLAIN_ONLY) &&
		!allowed_now(false, true))
		refuse("read", HINT_READ);
	if (guard.prev_executor_start)
		guard.prev_executor_start(queryDesc, eflags);
	else
		standard_ExecutorStart(queryDesc, eflags);
}

/* The worker publishes; a full barrier orders it with what it does next. */
void
hapg_set_writable_until(uint64 writable_until)
{
	(void) pg_atomic_exchange_u64(&hapg_shared->writable_until, writable_until);
}

/* Read at every commit: one atomic load, no lock. */
uint64
hapg_read_writable_until(void)
{
	return pg_atomic_read_u64(&hapg_shared->writable_until);
}

/*
 * Before the worker has spoken (server start, or shared memory rebuilt after
 * a crash): a configured member whose data directory joined a cluster takes
 * no commit until its worker proves the Lease; anything else is stock.
 */
uint64
hapg_initial_writable_until(void)
{
	char		why[HAPG_MSG_LEN];
	struct stat st;

	if (!hapg_settings_ready(why, sizeof(why)))
		return HAPG_WRITABLE_UNGUARDED;
	return stat(HAPG_JOINED_FILE, &st) == 0 ? HAPG_WRITABLE_NEVER : HAPG_WRITABLE_UNGUARDED;
}

/* The hooks, from _PG_init (the settings are in settings.c). */
void
hapg_commitguard_init(void)
{
	RegisterXactCallback(guard_xact, &guard);
	guard.prev_utility = ProcessUtility_hook;
	ProcessUtility_hook = guard_utility;
	guard.prev_executor_start = ExecutorStart_hook;
	ExecutorStart_hook = guard_executor_start;
}
