/* Unit tests of the lease decision table (src/lease.c). */
#include "unit.h"
#include "lease.h"

/* A primary that holds nothing and sees a Lease held by holder. */
static HapgDecisionInput
base_input(const char *holder, int64_t observed_ms, int64_t now_ms)
{
	HapgDecisionInput in;

	memset(&in, 0, sizeof(in));
	in.now_ms = now_ms;
	in.me = "pg-0";
	in.pod_exists = true;
	in.datadir_ok = true;
	in.fence_margin_ms = 2000;
	in.priority = 1;
	in.max_lag = 1024 * 1024;
	in.candidacy_term = "";
	in.settle_ms = 1000;
	in.ttl_s = 30;
	in.retry_timeout_s = 10;
	in.lease.known = true;
	in.lease.exists = holder != NULL;
	if (holder)
		strcpy(in.lease.holder, holder);
	strcpy(in.lease.resource_version, "42");
	in.lease.duration_s = 30;
	in.lease.transitions = 3;
	in.lease.observed_ms = observed_ms;
	return in;
}

TEST(primary_creates_missing_lease)
{
	HapgDecisionInput in = base_input(NULL, 0, 1000);
	HapgDecision d;

	hapg_lease_decide(&in, &d);
	CHECK(d.action == HAPG_ACT_CREATE);
	CHECK(d.role == HAPG_ROLE_LEADER);
}

TEST(standby_never_creates_lease)
{
	HapgDecisionInput in = base_input(NULL, 0, 1000);
	HapgDecision d;

	in.in_recovery = true;
	hapg_lease_decide(&in, &d);
	CHECK(d.action == HAPG_ACT_NONE);
	CHECK(d.role == HAPG_ROLE_REPLICA);
}

TEST(standby_follows_valid_lease)
{
	HapgDecisionInput in = base_input("pg-1", 10000, 20000);
	HapgDecision d;

	in.in_recovery = true;
	hapg_lease_decide(&in, &d);
	CHECK(d.action == HAPG_ACT_NONE);
	CHECK(d.role == HAPG_ROLE_REPLICA);
	/* it asks to be woken the instant the Lease would expire */
	CHECK(d.wake_in_ms == 20001);
}

/* A primary that sees someone else's valid Lease must stop taking writes. */
TEST(primary_fences_on_foreign_valid_lease)
{
	HapgDecisionInput in = base_input("pg-1", 10000, 10000 + 29999);
	HapgDecision d;

	hapg_lease_decide(&in, &d);
	CHECK(d.action == HAPG_ACT_FENCE);
	CHECK(d.role == HAPG_ROLE_UNLEASED_PRIMARY);
	CHECK(!d.lost_lease);
}

TEST(expired_lease_is_taken_exactly_at_expiry)
{
	HapgDecisionInput in = base_input("pg-1", 10000, 10000 + 30000);
	HapgDecision d;

	hapg_lease_decide(&in, &d);
	CHECK(d.action == HAPG_ACT_ACQUIRE);
	CHECK(d.role == HAPG_ROLE_LEADER);
}

/*
 * Expiry is measured from when this member saw the change, whatever the
 * holder's clock wrote: the input has no wall-clock field to be fooled by,
 * and two observers who saw the change at the same moment agree.
 */
TEST(expiry_uses_observation_time_only)
{
	HapgLeaseView l;
	int64_t		left;

	memset(&l, 0, sizeof(l));
	l.known = l.exists = true;
	strcpy(l.holder, "pg-1");
	l.duration_s = 6;
	l.observed_ms = 1000000;
	CHECK(!hapg_lease_expired(&l, 1000000 + 5999, &left));
	CHECK(left == 1);
	CHECK(hapg_lease_expired(&l, 1000000 + 6000, &left));
	CHECK(left == 0);
	/* an observer that saw the renewal later waits longer, never shorter */
	l.observed_ms = 1000500;
	CHECK(!hapg_lease_expired(&l, 1000000 + 6000, &left));
	CHECK(left == 500);
}

TEST(released_lease_is_taken_at_once)
{
	HapgDecisionInput in = base_input("", 10000, 10001);
	HapgDecision d;

	hapg_lease_decide(&in, &d);
	CHECK(d.action == HAPG_ACT_ACQUIRE);
}

TEST(own_lease_is_renewed)
{
	HapgDecisionInput in = base_input("pg-0", 10000, 12000);
	HapgDecision d;

	in.was_leader = true;
	in.last_renew_sent_ms = 10000;
	hapg_lease_decide(&in, &d);
	CHECK(d.action == HAPG_ACT_RENEW);
	CHECK(d.role == HAPG_ROLE_LEADER);
	CHECK(d.expires_in_ms == 28000);
	CHECK(!d.renew_overdue);
}

/* Early wake-ups (watch events, latches) must not multiply Lease writes. */
TEST(renewal_at_most_once_per_loop)
{
	HapgDecisionInput in = base_input("pg-0", 10000, 10500);
	HapgDecision d;

	in.was_leader = true;
	in.last_renew_sent_ms = 10000;
	in.renew_interval_ms = 1000;
	hapg_lease_decide(&in, &d);
	CHECK(d.action == HAPG_ACT_NONE);
	CHECK(d.role == HAPG_ROLE_LEADER);
	in.now_ms = 10950;
	hapg_lease_decide(&in, &d);
	CHECK(d.action == HAPG_ACT_RENEW);
}

/* A leader restarted as a standby keeps its Lease only through a CAS, then promotes. */
TEST(standby_holding_valid_lease_renews_then_promotes)
{
	HapgDecisionInput in = base_input("pg-0", 10000, 12000);
	HapgDecision d;

	in.in_recovery = true;
	hapg_lease_decide(&in, &d);
	CHECK(d.action == HAPG_ACT_RENEW);
	CHECK(d.promote);
	CHECK(d.role == HAPG_ROLE_LEADER);

	/* once promotion was asked for, it only keeps renewing */
	in.promoting = true;
	hapg_lease_decide(&in, &d);
	CHECK(d.action == HAPG_ACT_RENEW);
	CHECK(!d.promote);

	/* but not while still starting up */
	in.promoting = false;
	in.starting = true;
	hapg_lease_decide(&in, &d);
	CHECK(d.action == HAPG_ACT_NONE);
}

TEST(leader_that_sees_other_holder_fences_at_once)
{
	HapgDecisionInput in = base_input("pg-2", 10000, 11000);
	HapgDecision d;

	in.was_leader = true;
	in.last_renew_sent_ms = 10500;
	hapg_lease_decide(&in, &d);
	CHECK(d.lost_lease);
	CHECK(d.action == HAPG_ACT_FENCE);
}

/*
 * The fence deadline counts from when the last successful renewal was sent,
 * minus the margin, and holds whether or not the API answers.
 */
TEST(leader_fences_before_lease_runs_out)
{
	HapgDecisionInput in = base_input("pg-0", 10000, 10000 + 27999);
	HapgDecision d;

	in.lease.known = false;
	in.was_leader = true;
	in.last_renew_sent_ms = 10000;
	hapg_lease_decide(&in, &d);
	CHECK(d.action == HAPG_ACT_NONE);
	CHECK(d.role == HAPG_ROLE_LEADER);
	CHECK(d.wake_in_ms == 1);	/* wakes exactly at the deadline */

	in.now_ms = 10000 + 28000;
	hapg_lease_decide(&in, &d);
	CHECK(d.action == HAPG_ACT_FENCE);
	CHECK(d.renew_overdue);

	/* the API answering that the Lease is still mine changes nothing */
	in.lease.known = true;
	hapg_lease_decide(&in, &d);
	CHECK(d.action == HAPG_ACT_FENCE);
}

TEST(data_dir_gone)
{
	HapgDecisionInput in = base_input("pg-0", 10000, 11000);
	HapgDecision d;

	in.was_leader = true;
	in.last_renew_sent_ms = 10000;
	in.datadir_ok = false;
	hapg_lease_decide(&in, &d);
	CHECK(d.action == HAPG_ACT_RELEASE);
	in.was_leader = false;
	hapg_lease_decide(&in, &d);
	CHECK(d.action == HAPG_ACT_FENCE);
	/* a standby has nothing to release or fence */
	in.in_recovery = true;
	in.lease.holder[0] = 'x';
	hapg_lease_decide(&in, &d);
	CHECK(d.action != HAPG_ACT_RELEASE && d.action != HAPG_ACT_FENCE);
}

/*
 * Found by tests/sim_protocol: a winner whose next cycle cannot reach the API
 * while it is still promoting must stay leader, or it never fences once it
 * is writable.
 */
TEST(api_down_while_promoting_keeps_leadership)
{
	HapgDecisionInput in = base_input("pg-0", 0, 5000);
	HapgDecision d;

	in.in_recovery = true;
	in.promoting = true;
	in.was_leader = true;
	in.last_renew_sent_ms = 4000;
	in.lease.known = false;
	hapg_lease_decide(&in, &d);
	CHECK(d.action == HAPG_ACT_NONE);
	CHECK(d.role == HAPG_ROLE_LEADER);
	CHECK(d.wake_in_ms == 4000 + 30000 - 2000 - 5000);
	/* promoted now, still no API: it fences in time */
	in.in_recovery = false;
	in.promoting = false;
	in.now_ms = 4000 + 30000 - 2000;
	hapg_lease_decide(&in, &d);
	CHECK(d.action == HAPG_ACT_FENCE);
	/* a standby that is not promoting has no leadership to keep */
	in.in_recovery = true;
	in.now_ms = 5000;
	hapg_lease_decide(&in, &d);
	CHECK(d.role == HAPG_ROLE_REPLICA);
}

TEST(api_down_non_leader_does_nothing)
{
	HapgDecisionInput in = base_input(NULL, 0, 1000);
	HapgDecision d;

	in.lease.known = false;
	hapg_lease_decide(&in, &d);
	CHECK(d.action == HAPG_ACT_NONE);
	CHECK(d.role == HAPG_ROLE_UNLEASED_PRIMARY);
}

TEST(member_without_pod_takes_no_part)
{
	HapgDecisionInput in = base_input(NULL, 0, 1000);
	HapgDecision d;

	in.pod_exists = false;
	hapg_lease_decide(&in, &d);
	CHECK(d.action == HAPG_ACT_NONE);
	CHECK(d.role == HAPG_ROLE_UNKNOWN);
}

/* A standby whose leader's Lease expired, with two peers. */
static HapgDecisionInput
election_input(HapgCandidate *cand)
{
	HapgDecisionInput in = base_input("pg-0", 10000, 40000);

	in.me = "pg-1";
	in.in_recovery = true;
	in.my_lsn = 0x5000;
	in.my_timeline = 1;
	in.has_leader_lsn = true;
	in.leader_lsn = 0x5000;
	in.leader_timeline = 1;
	memset(cand, 0, 2 * sizeof(HapgCandidate));
	strcpy(cand[0].name, "pg-2");
	cand[0].priority = 1;
	cand[0].timeline = 1;
	in.ncand = 1;
	in.cand = cand;
	return in;
}

TEST(election_starts_with_candidacy)
{
	HapgCandidate cand[2];
	HapgDecisionInput in = election_input(cand);
	HapgDecision d;

	hapg_lease_decide(&in, &d);
	CHECK(d.action == HAPG_ACT_CANDIDACY);
	CHECK(d.eligible);
	CHECK_STR(d.term, "42");

	/* a released Lease starts an election too, without waiting */
	in = election_input(cand);
	in.lease.holder[0] = '\0';
	in.now_ms = 10001;
	hapg_lease_decide(&in, &d);
	CHECK(d.action == HAPG_ACT_CANDIDACY);
}

TEST(election_waits_for_peers_then_takes_over)
{
	HapgCandidate cand[2];
	HapgDecisionInput in = election_input(cand);
	HapgDecision d;

	in.candidacy_term = "42";
	in.candidacy_sent_ms = 40000;
	hapg_lease_decide(&in, &d);
	CHECK(d.action == HAPG_ACT_NONE);	/* pg-2 has not spoken yet */
	CHECK(d.wake_in_ms == 1000);
	in.now_ms = 41000;
	hapg_lease_decide(&in, &d);
	CHECK(d.action == HAPG_ACT_ACQUIRE);	/* settle time over */
	CHECK(d.promote);

	/* once every peer has spoken there is no need to wait */
	in.now_ms = 40010;
	cand[0].published = true;
	cand[0].eligible = true;
	cand[0].lsn = 0x4000;
	hapg_lease_decide(&in, &d);
	CHECK(d.action == HAPG_ACT_ACQUIRE);
}

TEST(healthiest_wins)
{
	HapgCandidate cand[2];
	HapgDecisionInput in = election_input(cand);
	HapgDecision d;

	in.candidacy_term = "42";
	in.candidacy_sent_ms = 40000;
	in.now_ms = 40010;
	cand[0].published = true;
	cand[0].eligible = true;
	cand[0].lsn = 0x6000;		/* pg-2 is further ahead */
	hapg_lease_decide(&in, &d);
	CHECK(d.action == HAPG_ACT_NONE);
	CHECK(strstr(d.reason, "healthier") != NULL);
	/* an ineligible peer further ahead does not count */
	cand[0].eligible = false;
	hapg_lease_decide(&in, &d);
	CHECK(d.action == HAPG_ACT_ACQUIRE);
	/* a healthier peer that never takes the Lease is passed over in time */
	cand[0].eligible = true;
	in.now_ms = 40000 + 1000 + 10000;
	hapg_lease_decide(&in, &d);
	CHECK(d.action == HAPG_ACT_ACQUIRE);
}

TEST(ties_broken_by_priority_then_name)
{
	HapgCandidate a,
				b;

	memset(&a, 0, sizeof(a));
	memset(&b, 0, sizeof(b));
	strcpy(a.name, "pg-1");
	strcpy(b.name, "pg-2");
	a.lsn = b.lsn = 100;
	a.timeline = b.timeline = 1;
	a.priority = b.priority = 1;
	CHECK(hapg_candidate_better(&a, &b));
	CHECK(!hapg_candidate_better(&b, &a));
	b.priority = 5;
	CHECK(hapg_candidate_better(&b, &a));
	a.lsn = 101;
	CHECK(hapg_candidate_better(&a, &b));
	b.timeline = 2;
	CHECK(hapg_candidate_better(&b, &a));
}

TEST(ineligible_members_publish_but_never_take)
{
	HapgCandidate cand[2];
	HapgDecisionInput in;
	HapgDecision d;
	int			k;

	for (k = 0; k < 4; k++)
	{
		in = election_input(cand);
		if (k == 0)
			in.nofailover = true;
		else if (k == 1)
			in.priority = 0;
		else if (k == 2)
		{
			in.leader_lsn = 0x20000000;
			in.my_lsn = 0x20000000 - 1024 * 1024 - 1;	/* lag beyond the limit */
		}
		else
			in.leader_timeline = 2;
		hapg_lease_decide(&in, &d);
		CHECK(d.action == HAPG_ACT_CANDIDACY);
		CHECK(!d.eligible);
		in.candidacy_term = "42";
		in.candidacy_sent_ms = 40000;
		in.now_ms = 90000;
		hapg_lease_decide(&in, &d);
		CHECK(d.action == HAPG_ACT_NONE);
	}
	/* lag exactly at the limit is still eligible */
	in = election_input(cand);
	in.leader_lsn = 0x20000000;
	in.my_lsn = 0x20000000 - 1024 * 1024;
	hapg_lease_decide(&in, &d);
	CHECK(d.eligible);
}

/* A standby that saw the Lease released for a hand-over, at now_ms. */
static HapgDecisionInput
handover_input(const char *to, int64_t now_ms)
{
	HapgDecisionInput in = base_input("", 10000, now_ms);

	in.me = "pg-1";
	in.in_recovery = true;
	in.my_lsn = 0x5000;
	in.my_timeline = 1;
	in.has_handover = true;
	in.handover_to = to;
	in.handover_lsn = 0x5000;
	return in;
}

/* The target takes the Lease only once it has the old leader's last WAL. */
TEST(handover_to_me_waits_for_wal)
{
	HapgDecisionInput in = handover_input("pg-1", 11000);
	HapgDecision d;

	in.my_lsn = 0x4FFF;
	hapg_lease_decide(&in, &d);
	CHECK(d.action == HAPG_ACT_NONE);
	CHECK(!d.promote);
	CHECK(d.role == HAPG_ROLE_REPLICA);
	CHECK(d.wake_in_ms == 50);
	CHECK(strstr(d.reason, "waiting for the old leader's last WAL") != NULL);
	/* near the end of the hand-over it wakes when the ttl runs out */
	in.now_ms = 10000 + 29980;
	hapg_lease_decide(&in, &d);
	CHECK(d.action == HAPG_ACT_NONE);
	CHECK(d.wake_in_ms == 21);

	in.now_ms = 11000;
	in.my_lsn = 0x5000;
	hapg_lease_decide(&in, &d);
	CHECK(d.action == HAPG_ACT_ACQUIRE);
	CHECK(d.promote);
	CHECK(d.role == HAPG_ROLE_LEADER);
	CHECK(d.expires_in_ms == 30000);
	CHECK(strstr(d.reason, "handed over to me") != NULL);
	in.my_lsn = 0x6000;
	hapg_lease_decide(&in, &d);
	CHECK(d.action == HAPG_ACT_ACQUIRE);
	CHECK(d.promote);
}

/* A target that never catches up does not hold the cluster forever. */
TEST(handover_to_me_gives_way_to_election)
{
	HapgDecisionInput in = handover_input("pg-1", 10000 + 30000);
	HapgDecision d;

	in.my_lsn = 0x4FFF;
	hapg_lease_decide(&in, &d);
	CHECK(d.action == HAPG_ACT_CANDIDACY);
	CHECK_STR(d.term, "42");
}

/* Others keep off a Lease handed to someone else, for one ttl. */
TEST(handover_to_other_blocks_election)
{
	HapgDecisionInput in = handover_input("pg-2", 11000);
	HapgDecision d;

	in.my_lsn = 0x9000;			/* even further ahead than the target */
	hapg_lease_decide(&in, &d);
	CHECK(d.action == HAPG_ACT_NONE);
	CHECK(!d.promote);
	CHECK(d.role == HAPG_ROLE_REPLICA);
	CHECK(d.wake_in_ms == 29001);
	CHECK(strstr(d.reason, "handed over to another member") != NULL);
	in.now_ms = 10000 + 29999;
	hapg_lease_decide(&in, &d);
	CHECK(d.action == HAPG_ACT_NONE);
	CHECK(d.wake_in_ms == 2);

	/* one ttl after it was seen released, the normal election starts */
	in.now_ms = 10000 + 30000;
	hapg_lease_decide(&in, &d);
	CHECK(d.action == HAPG_ACT_CANDIDACY);
	CHECK(d.eligible);
	CHECK_STR(d.term, "42");
}

/* Hand-over fields count only on a released Lease that says so. */
TEST(handover_needs_released_lease)
{
	HapgDecisionInput in = handover_input("pg-2", 11000);
	HapgDecision d;

	/* no has_handover: a released Lease starts the election at once */
	in.has_handover = false;
	hapg_lease_decide(&in, &d);
	CHECK(d.action == HAPG_ACT_CANDIDACY);
	/* an empty target is no hand-over either */
	in.has_handover = true;
	in.handover_to = "";
	hapg_lease_decide(&in, &d);
	CHECK(d.action == HAPG_ACT_CANDIDACY);
	in.handover_to = NULL;
	hapg_lease_decide(&in, &d);
	CHECK(d.action == HAPG_ACT_CANDIDACY);
	/* a held Lease is followed, whatever the annotation says */
	in = handover_input("pg-1", 11000);
	strcpy(in.lease.holder, "pg-0");
	hapg_lease_decide(&in, &d);
	CHECK(d.action == HAPG_ACT_NONE);
	CHECK(!d.promote);
	CHECK(d.wake_in_ms == 29001);
	CHECK(strstr(d.reason, "following") != NULL);
}

/* A primary must not keep taking writes while its Lease goes to another. */
TEST(primary_fences_on_handover_to_other)
{
	HapgDecisionInput in = handover_input("pg-1", 11000);
	HapgDecision d;

	in.me = "pg-0";
	in.in_recovery = false;
	hapg_lease_decide(&in, &d);
	CHECK(d.action == HAPG_ACT_FENCE);
	CHECK(d.role == HAPG_ROLE_UNLEASED_PRIMARY);
	CHECK(!d.lost_lease);
	CHECK(strstr(d.reason, "handed over to another member") != NULL);
	in.was_leader = true;
	in.last_renew_sent_ms = 10500;
	hapg_lease_decide(&in, &d);
	CHECK(d.action == HAPG_ACT_FENCE);
	CHECK(d.lost_lease);
	/* paused changes nothing to that */
	in.paused = true;
	hapg_lease_decide(&in, &d);
	CHECK(d.action == HAPG_ACT_FENCE);

	/* a primary that is the target itself takes it */
	in = handover_input("pg-0", 11000);
	in.me = "pg-0";
	in.in_recovery = false;
	hapg_lease_decide(&in, &d);
	CHECK(d.action == HAPG_ACT_ACQUIRE);
	CHECK(d.role == HAPG_ROLE_LEADER);

	/* after one ttl the hand-over is over: a released Lease for the taking */
	in = handover_input("pg-1", 10000 + 30000);
	in.me = "pg-0";
	in.in_recovery = false;
	hapg_lease_decide(&in, &d);
	CHECK(d.action == HAPG_ACT_ACQUIRE);
}

/* Paused, an expired or released Lease starts no election. */
TEST(paused_standby_does_not_elect)
{
	HapgCandidate cand[2];
	HapgDecisionInput in = election_input(cand);
	HapgDecision d;

	in.paused = true;
	hapg_lease_decide(&in, &d);
	CHECK(d.action == HAPG_ACT_NONE);
	CHECK(!d.promote);
	CHECK(d.role == HAPG_ROLE_REPLICA);
	CHECK(strstr(d.reason, "paused") != NULL);
	/* not even with a candidacy already published and nobody better */
	in.candidacy_term = "42";
	in.candidacy_sent_ms = 40000;
	in.now_ms = 90000;
	hapg_lease_decide(&in, &d);
	CHECK(d.action == HAPG_ACT_NONE);
	CHECK(strstr(d.reason, "paused") != NULL);
	in.paused = false;
	hapg_lease_decide(&in, &d);
	CHECK(d.action == HAPG_ACT_ACQUIRE);

	/* a released Lease without a hand-over */
	in = election_input(cand);
	in.lease.holder[0] = '\0';
	in.now_ms = 10001;
	in.paused = true;
	hapg_lease_decide(&in, &d);
	CHECK(d.action == HAPG_ACT_NONE);
	CHECK(strstr(d.reason, "paused") != NULL);
	in.paused = false;
	hapg_lease_decide(&in, &d);
	CHECK(d.action == HAPG_ACT_CANDIDACY);
}

/* Paused, a leader that cannot renew keeps running; not paused, it fences. */
TEST(paused_leader_does_not_fence_on_overdue_renewal)
{
	HapgDecisionInput in = base_input("pg-0", 10000, 10000 + 28000);
	HapgDecision d;

	in.lease.known = false;
	in.was_leader = true;
	in.last_renew_sent_ms = 10000;
	hapg_lease_decide(&in, &d);
	CHECK(d.action == HAPG_ACT_FENCE);
	CHECK(d.renew_overdue);

	in.paused = true;
	hapg_lease_decide(&in, &d);
	CHECK(d.action == HAPG_ACT_NONE);
	CHECK(!d.renew_overdue);
	CHECK(d.role == HAPG_ROLE_LEADER);
	in.now_ms = 10000 + 60000;
	hapg_lease_decide(&in, &d);
	CHECK(d.action == HAPG_ACT_NONE);
	CHECK(!d.renew_overdue);

	/* once the API answers that the Lease is still mine it renews it */
	in.lease.known = true;
	in.lease.observed_ms = 10000;
	hapg_lease_decide(&in, &d);
	CHECK(d.action == HAPG_ACT_RENEW);
	CHECK(d.role == HAPG_ROLE_LEADER);
	CHECK(!d.promote);
}

/* Paused or not, a primary that sees another valid holder fences. */
TEST(paused_leader_still_fences_on_other_holder)
{
	HapgDecisionInput in = base_input("pg-2", 10000, 11000);
	HapgDecision d;

	in.was_leader = true;
	in.last_renew_sent_ms = 10500;
	in.paused = true;
	hapg_lease_decide(&in, &d);
	CHECK(d.action == HAPG_ACT_FENCE);
	CHECK(d.lost_lease);
	CHECK(d.role == HAPG_ROLE_UNLEASED_PRIMARY);
	/* and so does a data directory that is gone */
	in = base_input("pg-0", 10000, 11000);
	in.was_leader = true;
	in.last_renew_sent_ms = 10500;
	in.paused = true;
	in.datadir_ok = false;
	hapg_lease_decide(&in, &d);
	CHECK(d.action == HAPG_ACT_RELEASE);
}

/* A switchover is an operator's act: pausing does not stop the hand-over. */
TEST(paused_handover_to_me_still_works)
{
	HapgDecisionInput in = handover_input("pg-1", 11000);
	HapgDecision d;

	in.paused = true;
	hapg_lease_decide(&in, &d);
	CHECK(d.action == HAPG_ACT_ACQUIRE);
	CHECK(d.promote);
	CHECK(d.role == HAPG_ROLE_LEADER);
	in.my_lsn = 0x4000;
	hapg_lease_decide(&in, &d);
	CHECK(d.action == HAPG_ACT_NONE);
	CHECK(d.wake_in_ms == 50);
}

/* The one fence-deadline formula, and the decision fencing exactly there. */
TEST(fence_deadline_formula)
{
	HapgDecisionInput in = base_input("pg-0", 0, 0);
	HapgDecision d;
	int64_t		at = hapg_fence_deadline_ms(10000, 30, 2000);

	CHECK(at == 10000 + 30000 - 2000);
	CHECK(hapg_fence_deadline_ms(0, 3, hapg_fence_margin_ms(3)) == 3000 - 500);
	CHECK(hapg_fence_margin_ms(3) == 500);
	CHECK(hapg_fence_margin_ms(10) == 1000);
	CHECK(hapg_fence_margin_ms(3600) == 2000);
	in.was_leader = true;
	in.last_renew_sent_ms = 10000;
	in.lease.observed_ms = 10000;
	in.renew_interval_ms = 1000000;	/* no renewal due: only the deadline counts */
	in.now_ms = at - 1;
	hapg_lease_decide(&in, &d);
	CHECK(d.action != HAPG_ACT_FENCE);
	in.now_ms = at;
	hapg_lease_decide(&in, &d);
	CHECK(d.action == HAPG_ACT_FENCE);
	CHECK(d.renew_overdue);
}

/* The expiry clock restarts on a renewal, never on another member's edit. */
TEST(expiry_clock_restarts_only_on_renewal)
{
	HapgLeaseView seen;
	HapgLeaseView next;

	memset(&seen, 0, sizeof(seen));
	seen.known = true;
	seen.exists = true;
	strcpy(seen.holder, "pg-0");
	strcpy(seen.resource_version, "10");
	strcpy(seen.renew_time, "2026-12-03T09:00:00.000000Z");
	seen.duration_s = 30;
	next = seen;
	/* the same version again (a watch replay): nothing new */
	CHECK(!hapg_lease_clock_restarts(&seen, &next));
	/* a new version with the same holder, renewTime and duration: an edit */
	strcpy(next.resource_version, "11");
	CHECK(!hapg_lease_clock_restarts(&seen, &next));
	/* a renewal changes renewTime */
	strcpy(next.renew_time, "2026-12-03T09:00:10.000000Z");
	CHECK(hapg_lease_clock_restarts(&seen, &next));
	/* a new holder, or a new duration */
	next = seen;
	strcpy(next.resource_version, "12");
	strcpy(next.holder, "pg-1");
	CHECK(hapg_lease_clock_restarts(&seen, &next));
	next = seen;
	strcpy(next.resource_version, "12");
	next.duration_s = 60;
	CHECK(hapg_lease_clock_restarts(&seen, &next));
	/* the first Lease seen after none existed */
	seen.exists = false;
	next = seen;
	CHECK(hapg_lease_clock_restarts(&seen, &next));
}

/*
 * The expiry clock of another member's renewal starts when the answer
 * arrived: whenever a GET is sent (up to a request timeout before the
 * leader's renewal) and answered after the renewal was applied, the reader
 * must not judge the Lease expired before the leader's fence deadline plus
 * its margin, i.e. before the renewal's send time plus the ttl.
 */
TEST(expiry_clock_starts_at_arrival)
{
	HapgLeaseView seen;
	HapgLeaseView next;
	int			ttl = 10;
	int64_t		timeout = 4000;
	int64_t		margin = hapg_fence_margin_ms(ttl);
	int64_t		renew_sent = 100000;
	int64_t		fence_at = hapg_fence_deadline_ms(renew_sent, ttl, margin);
	int64_t		get_sent;
	int			bad = 0;

	memset(&seen, 0, sizeof(seen));
	seen.known = true;
	seen.exists = true;
	strcpy(seen.holder, "pg-0");
	strcpy(seen.resource_version, "10");
	strcpy(seen.renew_time, "2026-12-03T09:00:00.000000Z");
	seen.duration_s = ttl;
	seen.observed_ms = 1;
	next = seen;
	strcpy(next.resource_version, "11");
	strcpy(next.renew_time, "2026-12-03T09:00:03.000000Z");
	for (get_sent = renew_sent - timeout; get_sent <= renew_sent + timeout; get_sent += 250)
	{
		int64_t		arrived;

		/* the renewal is applied at or after its send; the answer comes later */
		for (arrived = get_sent > renew_sent ? get_sent : renew_sent;
			 arrived <= get_sent + timeout; arrived += 250)
		{
			HapgLeaseView v = next;

			v.observed_ms = hapg_lease_observed_ms(&seen, &next, get_sent, arrived, false);
			if (hapg_lease_expired(&v, fence_at + margin - 1, NULL))
				bad++;
		}
	}
	CHECK(bad == 0);
	/* the arrival, not the send */
	CHECK(hapg_lease_observed_ms(&seen, &next, 500, 2500, false) == 2500);
	/* my own write counts from its send, like my fence */
	CHECK(hapg_lease_observed_ms(&seen, &next, 500, 2500, true) == 500);
	/* no renewal (an annotation edit): the clock keeps running */
	next = seen;
	strcpy(next.resource_version, "12");
	CHECK(hapg_lease_observed_ms(&seen, &next, 500, 2500, false) == 1);
}

/*
 * The hand-over process releases only the Lease its stopped leader last
 * wrote: not one the restarted server renewed since, nor anyone else's.
 */
TEST(handover_releases_only_the_last_renewal)
{
	HapgLeaseView now;
	const char *why = NULL;
	const char *last = "2026-12-03T09:00:03.000000Z";

	memset(&now, 0, sizeof(now));
	now.known = true;
	now.exists = true;
	strcpy(now.holder, "pg-0");
	strcpy(now.resource_version, "11");
	strcpy(now.renew_time, last);
	now.duration_s = 10;
	CHECK(hapg_handover_may_release(&now, "pg-0", last, &why));
	CHECK(why == NULL);
	/* an annotation edit since (a switchover request) keeps renewTime */
	strcpy(now.resource_version, "12");
	CHECK(hapg_handover_may_release(&now, "pg-0", last, NULL));
	/* the server came back and renewed: leave its Lease alone */
	strcpy(now.renew_time, "2026-12-03T09:00:14.000000Z");
	CHECK(!hapg_handover_may_release(&now, "pg-0", last, &why));
	CHECK(why != NULL && strstr(why, "renewed") != NULL);
	/* someone else's, or gone, or no renewal known */
	strcpy(now.renew_time, last);
	strcpy(now.holder, "pg-1");
	CHECK(!hapg_handover_may_release(&now, "pg-0", last, &why));
	strcpy(now.holder, "pg-0");
	CHECK(!hapg_handover_may_release(&now, "pg-0", "", &why));
	CHECK(!hapg_handover_may_release(&now, "pg-0", NULL, &why));
	now.exists = false;
	CHECK(!hapg_handover_may_release(&now, "pg-0", last, &why));
}

/* A write answered after its own fence deadline must not make a leader. */
TEST(late_write_does_not_promote)
{
	int			ttl = 10;
	int64_t		margin = hapg_fence_margin_ms(ttl);
	int64_t		deadline = hapg_fence_deadline_ms(1000, ttl, margin);

	CHECK(hapg_write_still_valid(1000, 1200, ttl, margin));
	CHECK(hapg_write_still_valid(1000, deadline - 1, ttl, margin));
	CHECK(!hapg_write_still_valid(1000, deadline, ttl, margin));
	CHECK(!hapg_write_still_valid(1000, 1000 + 60000, ttl, margin));
}

/* A Lease watch is silent after two loops; the worker wakes once for it. */
TEST(lease_watch_quiet)
{
	/* loop_wait 1 s: silent strictly after two seconds, as before */
	CHECK(hapg_lease_quiet_at(5000, 1) == 7001);
	CHECK(hapg_lease_quiet_at(5000, 10) == 25001);
	/* the silence began after the last cycle: wake at that instant */
	CHECK(hapg_quiet_wake_ms(7001, 6500) == 7001);
	CHECK(hapg_quiet_wake_ms(7001, 7000) == 7001);
	/* a cycle began at or after it and read (or tried): no extra wake */
	CHECK(hapg_quiet_wake_ms(7001, 7001) == 0);
	CHECK(hapg_quiet_wake_ms(7001, 9000) == 0);
}

/* A standby stops to be rewound only after patience, behind a newer timeline. */
TEST(rewind_patience)
{
	CHECK(hapg_rewind_patience_ms(3) == 10000);
	CHECK(hapg_rewind_patience_ms(30) == 60000);
	/* the leader is on a newer timeline: wait the patience out */
	CHECK(!hapg_rewind_due(1000, 1000 + 59999, 30, 3, 2));
	CHECK(hapg_rewind_due(1000, 1000 + 60000, 30, 3, 2));
	/* the same or an older leader timeline never asks for a rewind */
	CHECK(!hapg_rewind_due(1000, 1000 + 600000, 30, 2, 2));
	CHECK(!hapg_rewind_due(1000, 1000 + 600000, 30, 0, 2));
	/* short ttl: at least ten seconds */
	CHECK(!hapg_rewind_due(0, 9999, 3, 2, 1));
	CHECK(hapg_rewind_due(0, 10000, 3, 2, 1));
}

/* A standby past the point where the leader's timeline forked off its own. */
TEST(past_the_fork)
{
	HapgHistoryEntry h[2];

	memset(h, 0, sizeof(h));
	h[0].old_timeline = 6;
	h[0].new_timeline = 7;
	h[0].lsn = 0x5000000;
	h[1].old_timeline = 7;
	h[1].new_timeline = 8;
	h[1].lsn = 0x61FD9B8;
	/* the campaign's case: received up to 0/6205958 on 7, 8 forked at 0/61FD9B8 */
	CHECK(hapg_past_fork(h, 2, 7, 0x6205958));
	CHECK(!hapg_past_fork(h, 2, 7, 0x61FD9B8));	/* at the fork: it can switch */
	CHECK(!hapg_past_fork(h, 2, 7, 0x6000000));
	CHECK(!hapg_past_fork(h, 2, 8, 0x9000000));	/* on the newest timeline */
	CHECK(hapg_past_fork(h, 2, 6, 0x5000001));
	CHECK(!hapg_past_fork(h, 0, 7, 0x6205958));	/* no history: nothing known */
	h[1].lsn = 0;				/* a position never recorded */
	CHECK(!hapg_past_fork(h, 2, 7, 0x6205958));
}

/* Every action the decision can ask for has a name and a description. */
TEST(action_table_is_complete)
{
	int			a,
				b;

	for (a = 0; a < HAPG_NUM_ACTIONS; a++)
	{
		CHECK(hapg_action_does((HapgAction) a)[0] != '\0');
		for (b = 0; b < a; b++)
			CHECK(strcmp(hapg_action_name((HapgAction) a), hapg_action_name((HapgAction) b)) != 0);
	}
	CHECK_STR(hapg_action_name(HAPG_ACT_RENEW), "renew");
	CHECK_STR(hapg_action_name(HAPG_ACT_FENCE), "fence");
	CHECK_STR(hapg_action_name((HapgAction) HAPG_NUM_ACTIONS), "none");
}

void
run_lease_tests(void)
{
	RUN(primary_creates_missing_lease);
	RUN(standby_never_creates_lease);
	RUN(standby_follows_valid_lease);
	RUN(primary_fences_on_foreign_valid_lease);
	RUN(expired_lease_is_taken_exactly_at_expiry);
	RUN(expiry_uses_observation_time_only);
	RUN(released_lease_is_taken_at_once);
	RUN(own_lease_is_renewed);
	RUN(renewal_at_most_once_per_loop);
	RUN(standby_holding_valid_lease_renews_then_promotes);
	RUN(leader_that_sees_other_holder_fences_at_once);
	RUN(leader_fences_before_lease_runs_out);
	RUN(data_dir_gone);
	RUN(api_down_while_promoting_keeps_leadership);
	RUN(api_down_non_leader_does_nothing);
	RUN(member_without_pod_takes_no_part);
	RUN(election_starts_with_candidacy);
	RUN(election_waits_for_peers_then_takes_over);
	RUN(healthiest_wins);
	RUN(ties_broken_by_priority_then_name);
	RUN(ineligible_members_publish_but_never_take);
	RUN(handover_to_me_waits_for_wal);
	RUN(handover_to_me_gives_way_to_election);
	RUN(handover_to_other_blocks_election);
	RUN(handover_needs_released_lease);
	RUN(primary_fences_on_handover_to_other);
	RUN(paused_standby_does_not_elect);
	RUN(paused_leader_does_not_fence_on_overdue_renewal);
	RUN(paused_leader_still_fences_on_other_holder);
	RUN(paused_handover_to_me_still_works);
	RUN(fence_deadline_formula);
	RUN(expiry_clock_restarts_only_on_renewal);
	RUN(expiry_clock_starts_at_arrival);
	RUN(handover_releases_only_the_last_renewal);
	RUN(late_write_does_not_promote);
	RUN(rewind_patience);
	RUN(past_the_fork);
	RUN(lease_watch_quiet);
	RUN(action_table_is_complete);
}
