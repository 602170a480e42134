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

TEST(standby_never_takes_lease)
{
	HapgDecisionInput in = base_input(NULL, 0, 1000);
	HapgDecision d;

	in.in_recovery = true;
	hapg_lease_decide(&in, &d);
	CHECK(d.action == HAPG_ACT_NONE);
	CHECK(d.role == HAPG_ROLE_REPLICA);

	in = base_input("pg-1", 0, 999999);	/* long expired */
	in.in_recovery = true;
	hapg_lease_decide(&in, &d);
	CHECK(d.action == HAPG_ACT_NONE);
	CHECK(d.role == HAPG_ROLE_REPLICA);
}

TEST(valid_foreign_lease_is_respected)
{
	HapgDecisionInput in = base_input("pg-1", 10000, 10000 + 29999);
	HapgDecision d;

	hapg_lease_decide(&in, &d);
	CHECK(d.action == HAPG_ACT_NONE);
	CHECK(d.role == HAPG_ROLE_UNLEASED_PRIMARY);
	CHECK(d.expires_in_ms == 1);
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

TEST(own_lease_on_standby_is_not_renewed)
{
	HapgDecisionInput in = base_input("pg-0", 10000, 12000);
	HapgDecision d;

	in.in_recovery = true;
	hapg_lease_decide(&in, &d);
	CHECK(d.action == HAPG_ACT_NONE);
	CHECK(d.role == HAPG_ROLE_REPLICA);
}

TEST(leader_that_sees_other_holder_lost_it)
{
	HapgDecisionInput in = base_input("pg-2", 10000, 11000);
	HapgDecision d;

	in.was_leader = true;
	hapg_lease_decide(&in, &d);
	CHECK(d.lost_lease);
	CHECK(d.action == HAPG_ACT_NONE);
	CHECK(d.role == HAPG_ROLE_UNLEASED_PRIMARY);
}

TEST(api_down_leader_keeps_role_until_ttl_from_last_renewal)
{
	HapgDecisionInput in = base_input("pg-0", 10000, 10000 + 29999);
	HapgDecision d;

	in.lease.known = false;
	in.was_leader = true;
	in.last_renew_sent_ms = 10000;
	hapg_lease_decide(&in, &d);
	CHECK(d.action == HAPG_ACT_NONE);
	CHECK(d.role == HAPG_ROLE_LEADER);
	CHECK(!d.renew_overdue);

	in.now_ms = 10000 + 30000;
	hapg_lease_decide(&in, &d);
	CHECK(d.renew_overdue);
	CHECK(d.role == HAPG_ROLE_UNLEASED_PRIMARY);
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

TEST(timing_rule)
{
	char		msg[256];

	CHECK(hapg_timing_valid(30, 10, 10, msg, sizeof(msg)));
	CHECK(hapg_timing_valid(6, 2, 2, msg, sizeof(msg)));
	CHECK(!hapg_timing_valid(29, 10, 10, msg, sizeof(msg)));
	CHECK(strstr(msg, "exceeds hapg.ttl (29s)") != NULL);
	CHECK(!hapg_timing_valid(30, 0, 10, msg, sizeof(msg)));
}

TEST(member_names)
{
	CHECK(hapg_valid_member_name("pg-0"));
	CHECK(hapg_valid_member_name("a.b-c"));
	CHECK(!hapg_valid_member_name(""));
	CHECK(!hapg_valid_member_name("PG-0"));
	CHECK(!hapg_valid_member_name("-pg"));
	CHECK(!hapg_valid_member_name("pg-"));
	CHECK(!hapg_valid_member_name("pg_0"));
	CHECK(!hapg_valid_member_name("0123456789012345678901234567890123456789012345678901234567890123"));
}

TEST(lsn_round_trip)
{
	uint64_t	lsn;
	char		buf[32];

	CHECK(hapg_parse_lsn("0/3000060", &lsn));
	CHECK(lsn == 0x3000060);
	CHECK(hapg_parse_lsn("1A/FF", &lsn));
	CHECK(lsn == ((uint64_t) 0x1A << 32 | 0xFF));
	hapg_format_lsn(lsn, buf, sizeof(buf));
	CHECK_STR(buf, "1A/FF");
	CHECK(!hapg_parse_lsn("0/", &lsn));
	CHECK(!hapg_parse_lsn("0/10 x", &lsn));
	CHECK(!hapg_parse_lsn(NULL, &lsn));
}

void
run_lease_tests(void)
{
	RUN(primary_creates_missing_lease);
	RUN(standby_never_takes_lease);
	RUN(valid_foreign_lease_is_respected);
	RUN(expired_lease_is_taken_exactly_at_expiry);
	RUN(expiry_uses_observation_time_only);
	RUN(released_lease_is_taken_at_once);
	RUN(own_lease_is_renewed);
	RUN(renewal_at_most_once_per_loop);
	RUN(own_lease_on_standby_is_not_renewed);
	RUN(leader_that_sees_other_holder_lost_it);
	RUN(api_down_leader_keeps_role_until_ttl_from_last_renewal);
	RUN(api_down_non_leader_does_nothing);
	RUN(member_without_pod_takes_no_part);
	RUN(timing_rule);
	RUN(member_names);
	RUN(lsn_round_trip);
}
