/*
 * sqlfuncs.c
 *		The SQL surface: hapg_status() and the rows behind hapg_members.
 *
 * Both answer from the shared state the worker keeps, never from the
 * Kubernetes API: they work on standbys and while the API is down, and say
 * how old their information is.
 */
#include "hapg.h"

#include "access/htup_details.h"
#include "fmgr.h"
#include "funcapi.h"
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

/* One row describing this member and its view of the Lease. */
Datum
hapg_status(PG_FUNCTION_ARGS)
{
	TupleDesc	tupdesc;
	Datum		values[16];
	bool		nulls[16];
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
		HapgMemberRow *m = &s->members[i];
		Datum		values[10];
		bool		nulls[10];

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
