/*
 * Unit tests of failsafe mode (src/failsafe.c) and where its answers enter
 * the lease decision (src/lease.c), writable_until (src/commitrule.c) and
 * the Lease annotation (src/kjson.c).
 */
#include "unit.h"
#include "commitrule.h"
#include "failsafe.h"
#include "kjson.h"

#include <stdlib.h>

static const char three[3][HAPG_NAME_LEN] = {"pg-0", "pg-1", "pg-2"};

static HapgMemberPos
sender(const char *name, uint64_t write_lsn)
{
	HapgMemberPos p;

	memset(&p, 0, sizeof(p));
	strcpy(p.name, name);
	strcpy(p.state, "streaming");
	p.write_lsn = write_lsn;
	return p;
}

/* pg-0 leads pg-1 and pg-2; heartbeats at 1000, 1250, 1500 ending at 100, 200, 300. */
static HapgFailsafeLeaderIn
leader_in(HapgBeats *beats, HapgMemberPos *senders)
{
	HapgFailsafeLeaderIn in;

	memset(beats, 0, sizeof(*beats));
	hapg_beats_add(beats, 1000, 100);
	hapg_beats_add(beats, 1250, 200);
	hapg_beats_add(beats, 1500, 300);
	senders[0] = sender("pg-1", 300);
	senders[1] = sender("pg-2", 250);
	memset(&in, 0, sizeof(in));
	in.enabled = true;
	in.published = true;
	in.ttl_s = 6;
	in.now_ms = 1600;
	in.me = "pg-0";
	in.nrequired = 3;
	in.required = three;
	in.nsenders = 2;
	in.senders = senders;
	in.beats = beats;
	return in;
}

/* The bound, the patience beyond it, the heartbeat pace. */
TEST(failsafe_timings)
{
	CHECK(hapg_failsafe_bound_ms(6) == 3000);
	CHECK(hapg_failsafe_bound_ms(30) == HAPG_FAILSAFE_MAX_BOUND_MS);
	CHECK(hapg_failsafe_bound_ms(8) == 4000);
	CHECK(hapg_failsafe_bound_ms(5) == 2500);
	CHECK(hapg_failsafe_bound_ms(2) == HAPG_FAILSAFE_MIN_BOUND_MS);
	CHECK(hapg_failsafe_patience_ms(6) == 3000 + HAPG_FAILSAFE_MARGIN_MS);
	CHECK(hapg_failsafe_patience_ms(30) > hapg_failsafe_bound_ms(30));
	CHECK(hapg_failsafe_beat_interval_ms(6) == 250);
	/* the ring always covers the bound */
	CHECK(hapg_failsafe_beat_interval_ms(3600) * HAPG_FAILSAFE_BEATS >
		  hapg_failsafe_bound_ms(3600));
	CHECK(hapg_failsafe_beat_interval_ms(30) * HAPG_FAILSAFE_BEATS >
		  hapg_failsafe_bound_ms(30));
}

/* What failsafe mode needs of the other settings. */
TEST(failsafe_settings_check)
{
	CHECK(hapg_failsafe_settings_error(30, true, 10) == NULL);
	CHECK(hapg_failsafe_settings_error(4, true, 1) == NULL);
	CHECK(strstr(hapg_failsafe_settings_error(30, false, 10), "lease_bounded_commits") != NULL);
	CHECK(strstr(hapg_failsafe_settings_error(30, true, 0), "wal_receiver_status_interval") != NULL);
	CHECK(strstr(hapg_failsafe_settings_error(3, true, 10), "hapg.ttl") != NULL);
}

/* Heartbeats start when a renewal fails or is a loop late, only for a leader. */
TEST(failsafe_beating)
{
	CHECK(!hapg_failsafe_beating(true, true, true, 10000, 9000, 1, false));
	CHECK(hapg_failsafe_beating(true, true, true, 11000, 9000, 1, false));
	CHECK(hapg_failsafe_beating(true, true, true, 9500, 9000, 1, true));
	CHECK(!hapg_failsafe_beating(false, true, true, 20000, 9000, 1, true));
	CHECK(!hapg_failsafe_beating(true, false, true, 20000, 9000, 1, true));
	CHECK(!hapg_failsafe_beating(true, true, false, 20000, 9000, 1, true));
	CHECK(!hapg_failsafe_beating(true, true, true, 20000, 0, 1, true));
}

/* The ring keeps the newest heartbeats in order. */
TEST(failsafe_ring)
{
	HapgBeats b;
	int			i;

	memset(&b, 0, sizeof(b));
	for (i = 0; i < HAPG_FAILSAFE_BEATS + 5; i++)
		hapg_beats_add(&b, 1000 + i, 10 + i);
	CHECK(b.n == HAPG_FAILSAFE_BEATS);
	CHECK(b.beat[0].sent_ms == 1005);
	CHECK(b.beat[b.n - 1].sent_ms == 1000 + HAPG_FAILSAFE_BEATS + 4);
}

/* The proof: the oldest latest-confirmed heartbeat plus the bound. */
TEST(failsafe_proof_oldest_confirmation)
{
	HapgBeats beats;
	HapgMemberPos s[2];
	HapgFailsafeLeaderIn in = leader_in(&beats, s);
	HapgFailsafeProof p;

	hapg_failsafe_prove(&in, &p);
	/* pg-2 has 250: it confirmed the beat ending at 200, written at 1250 */
	CHECK(p.until_ms == 1250 + 3000);
	CHECK(p.why[0] == '\0');
	/* past it: the proof ran out, and says on whom */
	in.now_ms = 1250 + 3000;
	hapg_failsafe_prove(&in, &p);
	CHECK(p.until_ms == 1250 + 3000);
	CHECK_STR(p.why, "member \"pg-2\" confirmed no heartbeat for 3.0 s (the bound is 3.0 s)");
	in.now_ms = 1600;
	/* a write position exactly at a heartbeat's end confirms it */
	s[1].write_lsn = 300;
	hapg_failsafe_prove(&in, &p);
	CHECK(p.until_ms == 1500 + 3000);
	/* a new heartbeat nobody confirmed yet changes nothing */
	hapg_beats_add(&beats, 1750, 400);
	hapg_failsafe_prove(&in, &p);
	CHECK(p.until_ms == 1500 + 3000);
}

/* One member missing or silent, and there is no proof. */
TEST(failsafe_proof_needs_every_member)
{
	HapgBeats beats;
	HapgMemberPos s[2];
	HapgFailsafeLeaderIn in = leader_in(&beats, s);
	HapgFailsafeProof p;

	in.nsenders = 1;			/* pg-2 does not stream */
	hapg_failsafe_prove(&in, &p);
	CHECK(p.until_ms == 0);
	CHECK_STR(p.why, "member \"pg-2\" is not streaming from this leader");

	in.nsenders = 2;
	s[1].write_lsn = 99;		/* streams, but from before every heartbeat */
	hapg_failsafe_prove(&in, &p);
	CHECK(p.until_ms == 0);
	CHECK_STR(p.why, "member \"pg-2\" has not confirmed a heartbeat");

	/* a streaming member outside the list does not count, either way */
	s[1] = sender("pg-9", 0);
	in.nrequired = 2;
	hapg_failsafe_prove(&in, &p);
	CHECK(p.until_ms == 1500 + 3000);
}

/* Off, never published, or refused by the API: no proof. */
TEST(failsafe_proof_preconditions)
{
	HapgBeats beats;
	HapgMemberPos s[2];
	HapgFailsafeLeaderIn in = leader_in(&beats, s);
	HapgFailsafeProof p;

	in.enabled = false;
	hapg_failsafe_prove(&in, &p);
	CHECK(p.until_ms == 0 && strstr(p.why, "off") != NULL);
	in = leader_in(&beats, s);
	in.published = false;
	hapg_failsafe_prove(&in, &p);
	CHECK(p.until_ms == 0 && strstr(p.why, "member list") != NULL);
	in = leader_in(&beats, s);
	in.refused = true;
	hapg_failsafe_prove(&in, &p);
	CHECK(p.until_ms == 0 && strstr(p.why, "refused") != NULL);

	/* alone in the list: dated by the latest heartbeat */
	in = leader_in(&beats, s);
	in.nrequired = 1;
	hapg_failsafe_prove(&in, &p);
	CHECK(p.until_ms == 1500 + 3000);
	beats.n = 0;
	hapg_failsafe_prove(&in, &p);
	CHECK(p.until_ms == 0);
}

static HapgFailsafeReplicaIn
replica_in(void)
{
	HapgFailsafeReplicaIn in;

	memset(&in, 0, sizeof(in));
	in.lease_failsafe = true;
	in.holder_named = true;
	in.me_listed = true;
	in.heard_ms = 10000;
	in.now_ms = 11000;
	in.ttl_s = 6;
	return in;
}

/* A standby's patience with a failsafe Lease. */
TEST(failsafe_replica_patience)
{
	HapgFailsafeReplicaIn in = replica_in();

	CHECK(hapg_failsafe_hold_ms(&in) == 10000 + 4000 - 11000);
	in.now_ms = 14000;
	CHECK(hapg_failsafe_hold_ms(&in) == 0);
	in.now_ms = 13999;
	CHECK(hapg_failsafe_hold_ms(&in) == 1);
	in.me_listed = false;
	CHECK(hapg_failsafe_hold_ms(&in) == -1);
	in = replica_in();
	in.lease_failsafe = false;
	CHECK(hapg_failsafe_hold_ms(&in) == 0);
	in = replica_in();
	in.holder_named = false;	/* released: a hand-over, no rule */
	CHECK(hapg_failsafe_hold_ms(&in) == 0);
	in = replica_in();
	in.holder_is_me = true;
	CHECK(hapg_failsafe_hold_ms(&in) == 0);
	/* released by hapg_failover: listed at once (its writes wait), unlisted never */
	in = replica_in();
	in.holder_named = false;
	in.manual_release = true;
	CHECK(hapg_failsafe_hold_ms(&in) == 0);
	in.me_listed = false;
	CHECK(hapg_failsafe_hold_ms(&in) == -1);
	CHECK(hapg_failsafe_write_hold_until(true, 10000, 6) == 14000);
	CHECK(hapg_failsafe_write_hold_until(false, 10000, 6) == 0);
}

/* The one safety inequality: the standby's patience outlasts the leader's bound. */
TEST(failsafe_intervals_never_overlap)
{
	int			ttl;
	bool		holds = true;

	for (ttl = 1; ttl <= 3600; ttl++)
		if (hapg_failsafe_patience_ms(ttl) < hapg_failsafe_bound_ms(ttl) + HAPG_FAILSAFE_MARGIN_MS)
			holds = false;
	CHECK(holds);
}

static HapgDecisionInput
decision_input(void)
{
	HapgDecisionInput in;

	memset(&in, 0, sizeof(in));
	in.now_ms = 50000;
	in.me = "pg-1";
	in.pod_exists = true;
	in.datadir_ok = true;
	in.fence_margin_ms = 600;
	in.priority = 1;
	in.max_lag = 1024 * 1024;
	in.candidacy_term = "";
	in.settle_ms = 1000;
	in.ttl_s = 6;
	in.retry_timeout_s = 2;
	in.renew_interval_ms = 1000;
	in.lease.known = true;
	in.lease.exists = true;
	strcpy(in.lease.holder, "pg-0");
	strcpy(in.lease.resource_version, "42");
	in.lease.duration_s = 6;
	in.lease.observed_ms = 10000;	/* long expired */
	return in;
}

/* A standby holding back leaves an expired Lease alone, and says why. */
TEST(decision_failsafe_hold)
{
	HapgDecisionInput in = decision_input();
	HapgDecision d;

	in.in_recovery = true;
	hapg_lease_decide(&in, &d);
	CHECK(d.action == HAPG_ACT_CANDIDACY);	/* no hold: the usual election */
	CHECK(!d.failsafe_held);
	in.failsafe_hold_ms = 700;
	hapg_lease_decide(&in, &d);
	CHECK(d.action == HAPG_ACT_NONE);
	CHECK(d.failsafe_held);
	CHECK(d.role == HAPG_ROLE_REPLICA);
	CHECK(d.wake_in_ms == 701);
	CHECK(strstr(d.reason, "failsafe") != NULL);
	in.failsafe_hold_ms = -1;
	hapg_lease_decide(&in, &d);
	CHECK(d.action == HAPG_ACT_NONE);
	CHECK(strstr(d.reason, "member list") != NULL);
	/* an unleased primary does not take it either */
	in.in_recovery = false;
	hapg_lease_decide(&in, &d);
	CHECK(d.action == HAPG_ACT_NONE);
	CHECK(d.role == HAPG_ROLE_UNLEASED_PRIMARY);
	in.failsafe_hold_ms = 0;
	hapg_lease_decide(&in, &d);
	CHECK(d.action == HAPG_ACT_ACQUIRE);
	/* a Lease hapg_failover released to me: taken unless I am unlisted */
	in = decision_input();
	in.in_recovery = true;
	in.lease.holder[0] = '\0';
	in.lease.observed_ms = 49000;
	in.has_handover = true;
	in.handover_to = "pg-1";
	in.handover_lsn = 0;
	hapg_lease_decide(&in, &d);
	CHECK(d.action == HAPG_ACT_ACQUIRE && d.promote);
	in.failsafe_hold_ms = -1;
	hapg_lease_decide(&in, &d);
	CHECK(d.action == HAPG_ACT_NONE && d.failsafe_held);
}

/* A leader past its plain deadline with a proof does not fence until the proof ends. */
TEST(decision_failsafe_proof_moves_the_fence)
{
	HapgDecisionInput in = decision_input();
	HapgDecision d;
	int64_t		plain;

	in.me = "pg-0";
	in.was_leader = true;
	in.last_renew_sent_ms = 40000;
	in.lease.known = false;		/* the API does not answer */
	plain = hapg_fence_deadline_ms(40000, 6, 600);
	in.now_ms = plain;
	hapg_lease_decide(&in, &d);
	CHECK(d.action == HAPG_ACT_FENCE);
	in.failsafe_until_ms = plain + 2000;
	hapg_lease_decide(&in, &d);
	CHECK(d.action == HAPG_ACT_NONE);
	CHECK(d.role == HAPG_ROLE_LEADER);
	in.now_ms = plain + 2000;
	hapg_lease_decide(&in, &d);
	CHECK(d.action == HAPG_ACT_FENCE);
	/* another holder in a Lease that answers: fence at once, proof or not */
	in = decision_input();
	in.me = "pg-0";
	strcpy(in.lease.holder, "pg-1");
	in.lease.observed_ms = 49000;
	in.was_leader = true;
	in.last_renew_sent_ms = 40000;
	in.failsafe_until_ms = 90000;
	hapg_lease_decide(&in, &d);
	CHECK(d.action == HAPG_ACT_FENCE);
	CHECK(d.lost_lease);
}

/* writable_until follows the proof, and a failsafe taker holds its writes. */
TEST(writable_failsafe)
{
	HapgWritableInput in;
	uint64_t	plain;

	memset(&in, 0, sizeof(in));
	in.configured = true;
	in.in_cluster = true;
	in.leader = true;
	in.last_renew_sent_ms = 100000;
	in.ttl_s = 6;
	in.fence_margin_ms = 600;
	in.now_ms = 100500;
	plain = hapg_writable_until(&in);
	CHECK(plain == (uint64_t) (100000 + 6000 - 600) * 1000);
	in.failsafe_until_ms = 120000;
	CHECK(hapg_writable_until(&in) == UINT64_C(120000) * 1000);
	in.failsafe_until_ms = 90000;	/* an older proof never shortens it */
	CHECK(hapg_writable_until(&in) == plain);
	in.hold_until_ms = 101000;
	CHECK(hapg_writable_until(&in) == HAPG_WRITABLE_NEVER);
	in.now_ms = 101000;
	CHECK(hapg_writable_until(&in) == plain);
	in.other_holds = true;
	in.failsafe_until_ms = 120000;
	CHECK(hapg_writable_until(&in) == HAPG_WRITABLE_NEVER);
}

static json_object *
lease_with(const char *failsafe_value)
{
	char		buf[1024];
	json_object *o = NULL;
	char		err[128];

	snprintf(buf, sizeof(buf),
			 "{\"kind\":\"Lease\",\"metadata\":{\"name\":\"c1\",\"resourceVersion\":\"5\","
			 "\"annotations\":{%s}},\"spec\":{\"holderIdentity\":\"pg-0\","
			 "\"leaseDurationSeconds\":6,\"renewTime\":\"2026-12-04T05:00:00.000000Z\"}}",
			 failsafe_value);
	hapg_parse_json(buf, strlen(buf), &o, err, sizeof(err));
	return o;
}

/* hapg.io/failsafe: written and read back; damaged, it lists nobody. */
TEST(failsafe_annotation)
{
	char	   *js = hapg_build_failsafe_json(three, 3);
	json_object *o;
	HapgLeaseInfo li;
	char		err[128];
	char		ann[512];
	const char *p;
	char	   *q;

	CHECK_STR(js, "{\"members\":[\"pg-0\",\"pg-1\",\"pg-2\"]}");
	/* as a JSON string inside the annotations */
	q = ann;
	q += sprintf(q, "\"hapg.io/failsafe\":\"");
	for (p = js; *p; p++)
	{
		if (*p == '"')
			*q++ = '\\';
		*q++ = *p;
	}
	strcpy(q, "\"");
	free(js);
	o = lease_with(ann);
	CHECK(o && hapg_parse_lease(o, &li, err, sizeof(err)));
	CHECK(li.failsafe && li.nfailsafe == 3);
	CHECK_STR(li.failsafe_members[2], "pg-2");
	json_object_put(o);

	o = lease_with("\"hapg.io/failsafe\":\"{not json\"");
	CHECK(o && hapg_parse_lease(o, &li, err, sizeof(err)));
	CHECK(li.failsafe && li.nfailsafe == 0);
	json_object_put(o);

	o = lease_with("\"hapg.io/failsafe\":\"{\\\"members\\\":[\\\"pg-1\\\",7,\\\"Bad Name\\\"]}\"");
	CHECK(o && hapg_parse_lease(o, &li, err, sizeof(err)));
	CHECK(li.failsafe && li.nfailsafe == 1);
	CHECK_STR(li.failsafe_members[0], "pg-1");
	json_object_put(o);

	o = lease_with("\"other.io/x\":\"y\"");
	CHECK(o && hapg_parse_lease(o, &li, err, sizeof(err)));
	CHECK(!li.failsafe && li.nfailsafe == 0);
	json_object_put(o);
}

void
run_failsafe_tests(void)
{
	RUN(failsafe_timings);
	RUN(failsafe_settings_check);
	RUN(failsafe_beating);
	RUN(failsafe_ring);
	RUN(failsafe_proof_oldest_confirmation);
	RUN(failsafe_proof_needs_every_member);
	RUN(failsafe_proof_preconditions);
	RUN(failsafe_replica_patience);
	RUN(failsafe_intervals_never_overlap);
	RUN(decision_failsafe_hold);
	RUN(decision_failsafe_proof_moves_the_fence);
	RUN(writable_failsafe);
	RUN(failsafe_annotation);
}
