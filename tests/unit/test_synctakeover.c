/*
 * Unit tests of where synchronous replication enters the lease decision
 * (src/lease.c: who may take over an expired Lease), the steering rules
 * (src/steer.c: hapg_failover outside the set, the switchover's automatic
 * candidate), the Lease annotation (src/kjson.c) and the grace period of a
 * missing standby (src/syncrep.c).
 */
#include "unit.h"
#include "kjson.h"
#include "lease.h"
#include "steer.h"
#include "syncrep.h"

#include <stdlib.h>

/* (names, k) as a published set in mode m. */
static HapgSyncSet
pub(HapgSyncMode m, int k, const char *a, const char *b, const char *c, const char *d)
{
	HapgSyncSet s;
	const char *names[4] = {a, b, c, d};
	int			i;

	hapg_sync_set_clear(&s);
	s.defined = true;
	s.mode = m;
	s.k = k;
	for (i = 0; i < 4; i++)
		if (names[i])
			hapg_sync_set_add(&s, names[i]);
	return s;
}

/* Standby me at 0x5000 after pg-0's Lease expired, having published its candidacy. */
static HapgDecisionInput
expired(const char *me, HapgCandidate *cand, int ncand, const HapgSyncSet *sync)
{
	HapgDecisionInput in;

	memset(&in, 0, sizeof(in));
	in.now_ms = 40000;
	in.me = me;
	in.in_recovery = true;
	in.pod_exists = true;
	in.datadir_ok = true;
	in.fence_margin_ms = 2000;
	in.priority = 1;
	in.max_lag = 1024 * 1024;
	in.settle_ms = 1000;
	in.ttl_s = 30;
	in.retry_timeout_s = 10;
	in.lease.known = true;
	in.lease.exists = true;
	strcpy(in.lease.holder, "pg-0");
	strcpy(in.lease.resource_version, "42");
	in.lease.duration_s = 30;
	in.lease.observed_ms = 5000;
	in.my_lsn = 0x5000;
	in.my_timeline = 1;
	in.candidacy_term = "42";
	in.candidacy_sent_ms = 39000;
	in.ncand = ncand;
	in.cand = cand;
	in.sync = sync;
	return in;
}

/* A peer's published candidacy for term 42. */
static HapgCandidate
peer(const char *name, bool published, uint64_t lsn)
{
	HapgCandidate c;

	memset(&c, 0, sizeof(c));
	strcpy(c.name, name);
	c.published = published;
	c.eligible = true;
	c.lsn = lsn;
	c.timeline = 1;
	c.priority = 1;
	return c;
}

/* on, k 1: the published standby takes over alone; the other never does. */
TEST(sync_on_only_the_published_standby_takes_over)
{
	HapgSyncSet s = pub(HAPG_SYNC_ON, 1, "pg-1", NULL, NULL, NULL);
	HapgCandidate cand[1];
	HapgDecisionInput in;
	HapgDecision d;

	cand[0] = peer("pg-2", true, 0x9000);	/* further ahead, but asynchronous */
	cand[0].eligible = false;
	in = expired("pg-1", cand, 1, &s);
	hapg_lease_decide(&in, &d);
	CHECK(d.action == HAPG_ACT_ACQUIRE);
	CHECK(d.promote);

	cand[0] = peer("pg-1", true, 0x5000);
	in = expired("pg-2", cand, 1, &s);
	in.my_lsn = 0x9000;
	in.candidacy_term = "";
	hapg_lease_decide(&in, &d);
	CHECK(d.action == HAPG_ACT_CANDIDACY);
	CHECK(!d.eligible);
	CHECK(strstr(d.reason, "not a synchronous standby") != NULL);
	in.candidacy_term = "42";
	hapg_lease_decide(&in, &d);
	CHECK(d.action == HAPG_ACT_NONE);
	CHECK(!d.promote);

	/* without a published set, the same member would take over */
	in.sync = NULL;
	hapg_lease_decide(&in, &d);
	CHECK(d.action == HAPG_ACT_ACQUIRE);
}

/* quorum, 4 voters, k 2: three must be heard, none of them ahead. */
TEST(sync_quorum_needs_enough_voters_none_ahead)
{
	HapgSyncSet s = pub(HAPG_SYNC_QUORUM, 2, "pg-1", "pg-2", "pg-3", "pg-4");
	HapgCandidate cand[3];
	HapgDecisionInput in;
	HapgDecision d;

	CHECK(hapg_sync_witnesses_needed(&s) == 3);
	cand[0] = peer("pg-2", true, 0x4000);
	cand[1] = peer("pg-3", false, 0);
	cand[2] = peer("pg-4", false, 0);
	in = expired("pg-1", cand, 3, &s);
	in.now_ms = 39000 + 60000;	/* patience long gone: only the rule holds it */
	hapg_lease_decide(&in, &d);
	CHECK(d.action == HAPG_ACT_NONE);
	CHECK(strstr(d.reason, "enough synchronous members") != NULL);
	CHECK(d.wake_in_ms > 0);

	/* a third voter heard: it may go */
	cand[1] = peer("pg-3", true, 0x5000);
	hapg_lease_decide(&in, &d);
	CHECK(d.action == HAPG_ACT_ACQUIRE);

	/* one heard voter further ahead: not me */
	cand[1].lsn = 0x5001;
	hapg_lease_decide(&in, &d);
	CHECK(d.action == HAPG_ACT_NONE);
	CHECK(strstr(d.reason, "further ahead") != NULL);

	/* ... also when it is on a later timeline */
	cand[1].lsn = 0x10;
	cand[1].timeline = 2;
	hapg_lease_decide(&in, &d);
	CHECK(d.action == HAPG_ACT_NONE);
	/* ... and even when it may not be promoted itself: it has commits I lack */
	cand[1] = peer("pg-3", true, 0x6000);
	cand[1].eligible = false;
	hapg_lease_decide(&in, &d);
	CHECK(d.action == HAPG_ACT_NONE);

	/* a non-voter's position neither counts nor blocks */
	cand[1] = peer("pg-9", true, 0x9000);
	cand[1].eligible = false;
	hapg_lease_decide(&in, &d);
	CHECK(d.action == HAPG_ACT_NONE);
	CHECK(strstr(d.reason, "enough synchronous members") != NULL);
}

/* Nothing promised (k 0): nobody takes over on its own. */
TEST(sync_nothing_promised_no_automatic_failover)
{
	HapgSyncSet s = pub(HAPG_SYNC_ON, 0, "pg-1", NULL, NULL, NULL);
	HapgCandidate cand[1];
	HapgDecisionInput in;
	HapgDecision d;

	cand[0] = peer("pg-2", true, 0x4000);
	in = expired("pg-1", cand, 1, &s);
	in.now_ms = 39000 + 60000;
	hapg_lease_decide(&in, &d);
	CHECK(d.action == HAPG_ACT_NONE);
	CHECK(strstr(d.reason, "promised no synchronous standby") != NULL);

	/* a damaged annotation parses as exactly that */
	{
		const char *lease = "{\"kind\":\"Lease\",\"metadata\":{\"name\":\"pg\",\"resourceVersion\":\"7\","
			"\"annotations\":{\"hapg.io/sync\":\"{not json\"}},\"spec\":{\"holderIdentity\":\"pg-0\"}}";
		json_object *obj = json_tokener_parse(lease);
		HapgLeaseInfo li;
		char		err[128];

		memset(&li, 0, sizeof(li));
		CHECK(obj != NULL && hapg_parse_lease(obj, &li, err, sizeof(err)));
		CHECK(li.sync.defined && li.sync.k == 0 && li.sync.n == 0);
		CHECK(hapg_sync_witnesses_needed(&li.sync) == 1);
		in = expired("pg-1", cand, 1, &li.sync);
		hapg_lease_decide(&in, &d);
		CHECK(d.action == HAPG_ACT_NONE);
		json_object_put(obj);
	}
}

/* A clean hand-over to a member outside the set still goes (it has everything). */
TEST(sync_handover_ignores_the_set)
{
	HapgSyncSet s = pub(HAPG_SYNC_ON, 1, "pg-2", NULL, NULL, NULL);
	HapgDecisionInput in = expired("pg-1", NULL, 0, &s);
	HapgDecision d;

	in.lease.holder[0] = '\0';
	in.lease.observed_ms = 39000;
	in.has_handover = true;
	in.handover_to = "pg-1";
	in.handover_lsn = 0x5000;
	hapg_lease_decide(&in, &d);
	CHECK(d.action == HAPG_ACT_ACQUIRE);
	CHECK(d.promote);
}

/* The annotation round-trips through the Lease the leader writes. */
TEST(sync_annotation_round_trip)
{
	HapgSyncSet s = pub(HAPG_SYNC_QUORUM, 2, "pg-1", "pg-2", "_hapg_wait_1", NULL);
	char	   *json;
	HapgLeaseWrite lw;
	char	   *body;
	json_object *obj;
	HapgLeaseInfo li;
	char		err[128];

	s.strict = true;
	json = hapg_build_sync_json(&s);
	memset(&lw, 0, sizeof(lw));
	lw.name = "pg";
	lw.namespace = "default";
	lw.holder = "pg-0";
	lw.cluster = "pg";
	lw.resource_version = "7";
	lw.duration_s = 30;
	lw.renew_time = "2026-12-04T21:00:00.000000Z";
	lw.sync_json = json;
	body = hapg_build_lease(NULL, &lw);
	CHECK(body != NULL);
	obj = body ? json_tokener_parse(body) : NULL;
	memset(&li, 0, sizeof(li));
	CHECK(obj != NULL && hapg_parse_lease(obj, &li, err, sizeof(err)));
	CHECK(hapg_sync_set_equal(&li.sync, &s));
	CHECK(li.sync.mode == HAPG_SYNC_QUORUM && li.sync.strict);
	json_object_put(obj);
	free(body);
	free(json);

	/* a name that is no member's and no stand-in makes the list suspect */
	{
		const char *lease = "{\"kind\":\"Lease\",\"metadata\":{\"name\":\"pg\",\"resourceVersion\":\"7\","
			"\"annotations\":{\"hapg.io/sync\":\"{\\\"mode\\\":\\\"on\\\",\\\"k\\\":1,\\\"members\\\":[\\\"Bad Name\\\"]}\"}},"
			"\"spec\":{\"holderIdentity\":\"pg-0\"}}";

		obj = json_tokener_parse(lease);
		memset(&li, 0, sizeof(li));
		CHECK(obj != NULL && hapg_parse_lease(obj, &li, err, sizeof(err)));
		CHECK(li.sync.defined && li.sync.n == 0 && li.sync.k == 0);
		json_object_put(obj);
	}
}

/* A member view row with a sync state. */
static HapgMemberView
member(const char *name, const char *sync_state, uint64_t lsn)
{
	HapgMemberView m;

	memset(&m, 0, sizeof(m));
	strcpy(m.name, name);
	strcpy(m.role, "replica");
	strcpy(m.state, "streaming");
	m.has_status = m.replica = m.streaming = m.has_lsn = m.has_settings = true;
	m.lsn = lsn;
	m.priority = 1;
	strcpy(m.sync_state, sync_state);
	return m;
}

/* hapg_failover refuses a member outside the set unless forced; switchover prefers the set. */
TEST(sync_steering)
{
	HapgMemberView mv[3];
	HapgRequestInput in;
	HapgVerdict v;
	const HapgMemberView *best;

	mv[0] = member("pg-0", "", 0x9000);
	mv[0].replica = mv[0].streaming = false;
	strcpy(mv[0].role, "leader");
	mv[1] = member("pg-1", "sync", 0x5000);
	mv[2] = member("pg-2", "potential", 0x6000);

	memset(&in, 0, sizeof(in));
	in.kind = HAPG_REQ_FAILOVER;
	in.cluster = "pg";
	in.candidate = "pg-2";
	in.lease_exists = true;
	in.holder = "pg-0";
	in.lease_expired = true;
	in.max_lag = UINT64_MAX;
	in.members = mv;
	in.nmembers = 3;
	hapg_judge_request(&in, &v);
	CHECK(!v.ok);
	CHECK(strstr(v.message, "is not a synchronous standby") != NULL);
	CHECK(strstr(v.hint, "force => true") != NULL);
	in.force = true;
	hapg_judge_request(&in, &v);
	CHECK(v.ok);
	in.force = false;
	in.candidate = "pg-1";
	hapg_judge_request(&in, &v);
	CHECK(v.ok);

	/* no set published (asynchronous): anyone fit */
	strcpy(mv[1].sync_state, "async");
	strcpy(mv[2].sync_state, "async");
	in.candidate = "pg-2";
	hapg_judge_request(&in, &v);
	CHECK(v.ok);

	/* the switchover's own choice: the synchronous one, though behind */
	strcpy(mv[1].sync_state, "sync");
	strcpy(mv[2].sync_state, "potential");
	best = hapg_best_replica(mv, 3, "pg-0", true, 0x9000, UINT64_MAX);
	CHECK(best && strcmp(best->name, "pg-1") == 0);
	strcpy(mv[1].sync_state, "async");
	strcpy(mv[2].sync_state, "async");
	best = hapg_best_replica(mv, 3, "pg-0", true, 0x9000, UINT64_MAX);
	CHECK(best && strcmp(best->name, "pg-2") == 0);
}

/* A published standby missing for a moment stays in the target, behind present ones. */
TEST(sync_target_keeps_a_missing_standby_for_its_grace)
{
	HapgSyncSet p = pub(HAPG_SYNC_ON, 1, "pg-1", NULL, NULL, NULL);
	HapgSyncStandby sb[2];
	HapgSyncSet t;

	memset(sb, 0, sizeof(sb));
	strcpy(sb[0].name, "pg-1");
	sb[0].missing = true;
	sb[0].flush = 0x9000;
	hapg_sync_target(HAPG_SYNC_ON, false, 1, -1, 0x9000, sb, 1, &p, &t);
	CHECK(t.defined && t.k == 1 && t.n == 1 && strcmp(t.names[0], "pg-1") == 0);
	/* once another streams, that one is preferred */
	strcpy(sb[1].name, "pg-2");
	sb[1].streaming = true;
	sb[1].flush = 0x100;
	hapg_sync_target(HAPG_SYNC_ON, false, 1, -1, 0x9000, sb, 2, &p, &t);
	CHECK(t.n == 1 && strcmp(t.names[0], "pg-2") == 0);
	/* quorum counts it as a voter meanwhile */
	hapg_sync_target(HAPG_SYNC_QUORUM, false, 1, -1, 0x9000, sb, 2, &p, &t);
	CHECK(t.n == 2 && t.k == 1);
	/* past its grace the worker stops listing it: gone, non-strict drops to none */
	hapg_sync_target(HAPG_SYNC_ON, false, 1, -1, 0x9000, sb, 0, &p, &t);
	CHECK(t.defined && t.k == 0 && t.n == 0);
}

void
run_synctakeover_tests(void)
{
	RUN(sync_on_only_the_published_standby_takes_over);
	RUN(sync_quorum_needs_enough_voters_none_ahead);
	RUN(sync_nothing_promised_no_automatic_failover);
	RUN(sync_handover_ignores_the_set);
	RUN(sync_annotation_round_trip);
	RUN(sync_steering);
	RUN(sync_target_keeps_a_missing_standby_for_its_grace);
}
