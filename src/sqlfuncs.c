/*
 * sqlfuncs.c
 *		The SQL surface: hapg_status(), the rows behind hapg_members and
 *		hapg_history, and the steering functions (hapg_switchover,
 *		hapg_failover, hapg_pause, hapg_resume, hapg_cancel_switchover).
 *
 * The views answer from the shared state the worker keeps, never from the
 * Kubernetes API: they work on standbys and while the API is down, and say
 * how old their information is.  The steering functions hand their request
 * to the worker (request.c) and wait for its verdict.
 */
#include "hapg.h"

#include "access/htup_details.h"
#include "access/xlog.h"
#include "lib/stringinfo.h"
#include "miscadmin.h"
#include "fmgr.h"
#include "funcapi.h"
#include "catalog/pg_type.h"
#include "utils/array.h"
#include "utils/builtins.h"
#include "utils/pg_lsn.h"
#include "utils/timestamp.h"

PG_FUNCTION_INFO_V1(hapg_status);
PG_FUNCTION_INFO_V1(hapg_members_internal);
PG_FUNCTION_INFO_V1(hapg_history_internal);

/* A text datum, or NULL for an empty string. */
static Datum
text_or_null(const char *s, bool *isnull)
{
	*isnull = (s == NULL || s[0] == '\0');
	return *isnull ? (Datum) 0 : CStringGetTextDatum(s);
}

/* Milliseconds as an interval, for lease_expires_in and info_age. */
static Datum
ms_interval(int64 ms)
{
	Interval   *iv = palloc0(sizeof(Interval));

	iv->time = ms * 1000;
	return IntervalPGetDatum(iv);
}

/* "to \"pg-1\" at <time>" for hapg_status().pending_switchover. */
static char *
describe_switchover(const HapgSwitchover *sw)
{
	const char *when = "now";

	if (sw->scheduled_at_us)
		when = timestamptz_to_str(hapg_timestamptz(sw->scheduled_at_us));
	if (sw->to[0])
		return psprintf("from \"%s\" to \"%s\" at %s", sw->from, sw->to, when);
	return psprintf("from \"%s\" to the healthiest replica at %s", sw->from, when);
}

/* One row describing this member and its view of the Lease. */
Datum
hapg_status(PG_FUNCTION_ARGS)
{
	TupleDesc	tupdesc;
	Datum		values[23];
	bool		nulls[23];
	HapgShared	s;
	TimestampTz now = GetCurrentTimestamp();
	int64		age_ms;

	hapg_shmem_attach();
	if (get_call_result_type(fcinfo, NULL, &tupdesc) != TYPEFUNC_COMPOSITE)
		elog(ERROR, "return type must be a row type");
	tupdesc = BlessTupleDesc(tupdesc);

	LWLockAcquire(&hapg_shared->lock, LW_SHARED);
	memcpy(&s, hapg_shared, offsetof(HapgShared, nmembers));
	LWLockRelease(&hapg_shared->lock);

	memset(nulls, 0, sizeof(nulls));
	age_ms = s.last_loop ? (now - s.last_loop) / 1000 : -1;
	values[0] = text_or_null(s.cluster, &nulls[0]);
	values[1] = text_or_null(s.member, &nulls[1]);
	values[2] = CStringGetTextDatum(hapg_role_name(s.role));
	values[3] = text_or_null(s.leader, &nulls[3]);
	values[4] = Int32GetDatum(s.lease_transitions);
	if (s.leader[0] && s.lease_info_at)
		values[5] = ms_interval(Max(0, s.lease_expires_in_ms - (now - s.lease_info_at) / 1000));
	else
		nulls[5] = true;
	values[6] = BoolGetDatum(s.api_ok);
	values[7] = text_or_null(s.last_error, &nulls[7]);
	values[8] = TimestampTzGetDatum(s.last_loop);
	nulls[8] = s.last_loop == 0;
	values[9] = text_or_null(s.state, &nulls[9]);
	values[10] = Int32GetDatum((int32) s.timeline);
	nulls[10] = s.timeline == 0;
	values[11] = LSNGetDatum(s.lsn);
	nulls[11] = s.lsn == InvalidXLogRecPtr;
	values[12] = Int64GetDatum(s.loop_count);
	values[13] = Int32GetDatum(s.worker_pid);
	nulls[13] = s.worker_pid == 0;
	values[14] = ms_interval(age_ms);
	nulls[14] = age_ms < 0;
	values[15] = BoolGetDatum(s.paused);
	if (s.switchover.pending)
		values[16] = CStringGetTextDatum(describe_switchover(&s.switchover));
	else if (s.handover_to[0])
		values[16] = CStringGetTextDatum(psprintf("handing over to \"%s\"", s.handover_to));
	else
		nulls[16] = true;
	values[17] = BoolGetDatum(s.failsafe_active);
	values[18] = TimestampTzGetDatum(s.failsafe_since);
	nulls[18] = !s.failsafe_active;
	/* the synchronous set as the Lease publishes it (the leader's settings) */
	if (s.sync.defined)
	{
		Datum		names[HAPG_MAX_MEMBERS];
		int			n = 0;
		int			i;

		for (i = 0; i < s.sync.n; i++)
			if (!hapg_sync_is_placeholder(s.sync.names[i]))
				names[n++] = CStringGetTextDatum(s.sync.names[i]);
		values[19] = CStringGetTextDatum(hapg_sync_mode_name(s.sync.mode));
		values[20] = BoolGetDatum(s.sync.strict);
		values[21] = Int32GetDatum(s.sync.k);
		values[22] = PointerGetDatum(construct_array(names, n, TEXTOID, -1, false, TYPALIGN_INT));
	}
	else
	{
		values[19] = CStringGetTextDatum("off");
		nulls[20] = nulls[21] = nulls[22] = true;
	}
	PG_RETURN_DATUM(HeapTupleGetDatum(heap_form_tuple(tupdesc, values, nulls)));
}

/* One row per member Pod, with positions and lag against the leader. */
Datum
hapg_members_internal(PG_FUNCTION_ARGS)
{
	ReturnSetInfo *rsinfo = (ReturnSetInfo *) fcinfo->resultinfo;
	HapgShared *s;
	int			i;

	hapg_shmem_attach();
	InitMaterializedSRF(fcinfo, 0);
	s = palloc(sizeof(HapgShared));
	LWLockAcquire(&hapg_shared->lock, LW_SHARED);
	memcpy(s, hapg_shared, sizeof(HapgShared));
	LWLockRelease(&hapg_shared->lock);

	for (i = 0; i < s->nmembers; i++)
	{
		HapgMemberView *m = &s->members[i];
		Datum		values[15];
		bool		nulls[15];

		memset(nulls, 0, sizeof(nulls));
		values[0] = CStringGetTextDatum(m->name);
		values[1] = CStringGetTextDatum(m->role);
		values[2] = text_or_null(m->state, &nulls[2]);
		values[3] = text_or_null(m->connect_address, &nulls[3]);
		values[4] = Int32GetDatum(m->timeline);
		nulls[4] = m->timeline == 0;
		values[5] = LSNGetDatum(m->lsn);
		nulls[5] = m->lsn == InvalidXLogRecPtr;
		if (m->lsn != InvalidXLogRecPtr && s->leader_lsn != InvalidXLogRecPtr)
			values[6] = Int64GetDatum(s->leader_lsn > m->lsn ? (int64) (s->leader_lsn - m->lsn) : 0);
		else
			nulls[6] = true;
		values[7] = BoolGetDatum(m->is_leader);
		values[8] = TimestampTzGetDatum(m->last_seen);
		nulls[8] = m->last_seen == 0;
		values[9] = text_or_null(m->pod_role_label, &nulls[9]);
		values[10] = BoolGetDatum(m->nofailover);
		values[11] = Int32GetDatum(m->priority);
		nulls[10] = nulls[11] = !m->has_settings;
		values[12] = BoolGetDatum(s->paused);
		values[13] = text_or_null(m->sync_state, &nulls[13]);
		values[14] = BoolGetDatum(m->nosync);
		nulls[14] = !m->has_settings;
		tuplestore_putvalues(rsinfo->setResult, rsinfo->setDesc, values, nulls);
	}
	return (Datum) 0;
}

/* The cluster's leader changes, as kept in the Lease, oldest first. */
Datum
hapg_history_internal(PG_FUNCTION_ARGS)
{
	ReturnSetInfo *rsinfo = (ReturnSetInfo *) fcinfo->resultinfo;
	HapgHistoryEntry *h;
	int			n;
	int			i;

	hapg_shmem_attach();
	InitMaterializedSRF(fcinfo, 0);
	h = palloc(sizeof(HapgHistoryEntry) * HAPG_MAX_HISTORY);
	LWLockAcquire(&hapg_shared->lock, LW_SHARED);
	n = Min(hapg_shared->nhistory, HAPG_MAX_HISTORY);
	memcpy(h, hapg_shared->history, sizeof(HapgHistoryEntry) * n);
	LWLockRelease(&hapg_shared->lock);

	for (i = 0; i < n; i++)
	{
		Datum		values[6];
		bool		nulls[6];

		memset(nulls, 0, sizeof(nulls));
		values[0] = Int32GetDatum(h[i].old_timeline);
		values[1] = Int32GetDatum(h[i].new_timeline);
		values[2] = LSNGetDatum(h[i].lsn);
		values[3] = text_or_null(h[i].reason, &nulls[3]);
		values[4] = text_or_null(h[i].time, &nulls[4]);
		values[5] = text_or_null(h[i].leader, &nulls[5]);
		tuplestore_putvalues(rsinfo->setResult, rsinfo->setDesc, values, nulls);
	}
	return (Datum) 0;
}

/* ---------------------------------------------------------------- steering */

PG_FUNCTION_INFO_V1(hapg_switchover);
PG_FUNCTION_INFO_V1(hapg_failover);
PG_FUNCTION_INFO_V1(hapg_pause);
PG_FUNCTION_INFO_V1(hapg_resume);
PG_FUNCTION_INFO_V1(hapg_cancel_switchover);

/* What this member sees of the cluster, for a timeout message. */
static char *
cluster_picture(const HapgShared *s)
{
	StringInfoData buf;
	int			i;

	initStringInfo(&buf);
	appendStringInfo(&buf, "The Lease is %s%s%s%s.",
					 s->leader[0] ? "held by \"" : "not held",
					 s->leader, s->leader[0] ? "\"" : "",
					 s->handover_to[0] ? psprintf(", being handed over to \"%s\"", s->handover_to) : "");
	for (i = 0; i < s->nmembers; i++)
		appendStringInfo(&buf, " %s: %s, %s.", s->members[i].name,
						 s->members[i].role, s->members[i].state);
	return buf.data;
}

/*
 * Wait until target holds the Lease and accepts writes, as this member's
 * worker sees it, for at most hapg.switchover_timeout.
 */
static void
wait_for_leader(const char *target, const char *old_leader)
{
	int64		deadline = hapg_mono_ms() + (int64) hapg_switchover_timeout * 1000;
	HapgShared *s = palloc(sizeof(HapgShared));
	int			transitions = -1;

	for (;;)
	{
		bool		writable = false;
		int			i;

		LWLockAcquire(&hapg_shared->lock, LW_SHARED);
		memcpy(s, hapg_shared, sizeof(HapgShared));
		LWLockRelease(&hapg_shared->lock);
		if (transitions < 0)
			transitions = s->lease_transitions;
		if (strcmp(s->leader, target) == 0)
		{
			if (strcmp(s->member, target) == 0)
				writable = !RecoveryInProgress();
			else
				for (i = 0; i < s->nmembers; i++)
					if (strcmp(s->members[i].name, target) == 0)
						writable = strcmp(s->members[i].state, "running") == 0;
			if (writable)
				return;
		}
		else if (s->leader[0] &&
				 (strcmp(s->leader, old_leader) != 0 || s->lease_transitions > transitions))
			ereport(ERROR,
					(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
					 errmsg("\"%s\" became the leader instead of \"%s\"", s->leader, target),
					 errdetail("%s", cluster_picture(s)),
					 errhint("\"%s\" may have failed to take over in time; see its server log.", target)));
		if (hapg_mono_ms() > deadline)
			ereport(ERROR,
					(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
					 errmsg("timed out after %d s waiting for \"%s\" to become the leader",
							hapg_switchover_timeout, target),
					 errdetail("%s", cluster_picture(s)),
					 errhint("The cluster may still complete the change; see hapg_members and hapg_status().")));
		hapg_nap(50);
	}
}

/* A candidate argument: NULL is "", a name that cannot be a member is refused. */
static char *
candidate_arg(FunctionCallInfo fcinfo, int argno)
{
	char	   *c;

	if (PG_ARGISNULL(argno))
		return "";
	c = text_to_cstring(PG_GETARG_TEXT_PP(argno));
	if (!hapg_valid_member_name(c))
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("member \"%s\" is not in cluster \"%s\"", c,
						hapg_cluster_name ? hapg_cluster_name : ""),
				 errhint("SELECT member FROM hapg_members lists the members.")));
	return c;
}

/* Planned switchover, now (waits for the new leader) or at a given time. */
Datum
hapg_switchover(PG_FUNCTION_ARGS)
{
	char	   *candidate = candidate_arg(fcinfo, 0);
	int64		at = PG_ARGISNULL(1) ? 0 : hapg_unix_us(PG_GETARG_TIMESTAMPTZ(1));
	HapgVerdict v;
	char		leader[HAPG_NAME_LEN];

	hapg_ask_worker(HAPG_REQ_SWITCHOVER, candidate, at, false, &v, leader);
	if (at != 0)
		PG_RETURN_TEXT_P(cstring_to_text(v.message));
	if (strcmp(leader, hapg_shared->member) == 0)
	{
		/* this server stops to hand over: the session cannot see the end */
		ereport(NOTICE,
				(errmsg("this server is the leader; it stops now and hands over to \"%s\"",
						v.target),
				 errdetail("This session will be closed; reconnect to reach the new leader.")));
		PG_RETURN_TEXT_P(cstring_to_text(v.target));
	}
	wait_for_leader(v.target, leader);
	PG_RETURN_TEXT_P(cstring_to_text(v.target));
}

/* Manual failover to a named replica when there is no healthy leader. */
Datum
hapg_failover(PG_FUNCTION_ARGS)
{
	char	   *candidate = candidate_arg(fcinfo, 0);
	HapgVerdict v;
	char		leader[HAPG_NAME_LEN];

	bool		force = PG_NARGS() > 1 && !PG_ARGISNULL(1) && PG_GETARG_BOOL(1);

	hapg_ask_worker(HAPG_REQ_FAILOVER, candidate, 0, force, &v, leader);
	wait_for_leader(v.target, leader);
	PG_RETURN_TEXT_P(cstring_to_text(v.target));
}

/* pause, resume and cancel only write the Lease: their answer is the message. */
static Datum
simple_request(HapgRequestKind kind)
{
	HapgVerdict v;
	char		leader[HAPG_NAME_LEN];

	hapg_ask_worker(kind, "", 0, false, &v, leader);
	PG_RETURN_TEXT_P(cstring_to_text(v.message));
}

Datum
hapg_pause(PG_FUNCTION_ARGS)
{
	(void) fcinfo;
	return simple_request(HAPG_REQ_PAUSE);
}

Datum
hapg_resume(PG_FUNCTION_ARGS)
{
	(void) fcinfo;
	return simple_request(HAPG_REQ_RESUME);
}

Datum
hapg_cancel_switchover(PG_FUNCTION_ARGS)
{
	(void) fcinfo;
	return simple_request(HAPG_REQ_CANCEL);
}
