/*
 * Unit tests of lease-bounded commits (src/commitrule.c) and of the worker's
 * wake-up order (hapg_wake_plan, src/lease.c).
 */
#include "unit.h"
#include "commitrule.h"
#include "lease.h"

/* A leader whose last successful renewal was sent at 100 s (ttl 5 s). */
static HapgWritableInput
leader_input(void)
{
	HapgWritableInput in;

	memset(&in, 0, sizeof(in));
	in.configured = true;
	in.in_cluster = true;
	in.leader = true;
	in.last_renew_sent_ms = 100000;
	in.ttl_s = 5;
	in.fence_margin_ms = hapg_fence_margin_ms(5);
	return in;
}

static HapgCommitInput
commit_at(uint64_t writable_until, uint64_t now_us)
{
	HapgCommitInput c;

	memset(&c, 0, sizeof(c));
	c.writable_until_us = writable_until;
	c.now_us = now_us;
	c.enabled = true;
	c.writes = true;
	c.primary = true;
	return c;
}

TEST(leader_may_write_until_the_fence_deadline)
{
	HapgWritableInput in = leader_input();
	uint64_t	wu = hapg_writable_until(&in);

	/* renewal sent at 100 s + ttl 5 s - margin 0.5 s */
	CHECK(wu == (uint64_t) 104500 * 1000);
	CHECK(wu == (uint64_t) hapg_fence_deadline_ms(100000, 5, 500) * 1000);
}

TEST(commit_before_at_and_after_the_instant)
{
	uint64_t	wu = 104500000;
	HapgCommitInput c;

	c = commit_at(wu, wu - 1);
	CHECK(hapg_commit_allowed(&c));
	c = commit_at(wu, wu);
	CHECK(hapg_commit_allowed(&c));
	c = commit_at(wu, wu + 1);
	CHECK(!hapg_commit_allowed(&c));
	c = commit_at(wu, wu + 60000000);
	CHECK(!hapg_commit_allowed(&c));
}

TEST(only_a_successful_renewal_extends_it)
{
	HapgWritableInput in = leader_input();
	uint64_t	before = hapg_writable_until(&in);

	in.last_renew_sent_ms += 1000;	/* the next renewal that succeeded */
	CHECK(hapg_writable_until(&in) == before + 1000000);
	/* nothing else moves it: there is no "now" in the input */
}

TEST(not_a_leader_never_commits)
{
	HapgWritableInput in = leader_input();
	HapgCommitInput c;

	in.leader = false;
	CHECK(hapg_writable_until(&in) == HAPG_WRITABLE_NEVER);
	c = commit_at(hapg_writable_until(&in), 1);
	CHECK(!hapg_commit_allowed(&c));

	/* the leader that has not written the Lease yet */
	in = leader_input();
	in.last_renew_sent_ms = 0;
	CHECK(hapg_writable_until(&in) == HAPG_WRITABLE_NEVER);

	/* fenced: even with a renewal that is still young */
	in = leader_input();
	in.fenced = true;
	CHECK(hapg_writable_until(&in) == HAPG_WRITABLE_NEVER);

	/* a watch event showed another holder, before the cycle decided */
	in = leader_input();
	in.other_holds = true;
	CHECK(hapg_writable_until(&in) == HAPG_WRITABLE_NEVER);
}

TEST(not_configured_is_stock_postgresql)
{
	HapgWritableInput in = leader_input();
	HapgCommitInput c;

	in.configured = false;
	in.leader = false;
	CHECK(hapg_writable_until(&in) == HAPG_WRITABLE_UNGUARDED);
	c = commit_at(hapg_writable_until(&in), UINT64_MAX - 1);
	CHECK(hapg_commit_allowed(&c));
	in.in_cluster = false;
	CHECK(hapg_writable_until(&in) == HAPG_WRITABLE_UNGUARDED);

	/* configured, but never part of a cluster (no Pod, not joined) */
	in = leader_input();
	in.leader = false;
	in.in_cluster = false;
	CHECK(hapg_writable_until(&in) == HAPG_WRITABLE_UNGUARDED);
	/* ... unless it leads, which it can only do in a cluster */
	in.leader = true;
	CHECK(hapg_writable_until(&in) == (uint64_t) 104500 * 1000);
}

TEST(a_leader_whose_settings_a_reload_took_away_keeps_its_deadline)
{
	HapgWritableInput in = leader_input();
	HapgCommitInput c;

	in.configured = false;		/* the worker idles: no renewal any more */
	CHECK(hapg_writable_until(&in) == (uint64_t) 104500 * 1000);
	c = commit_at(hapg_writable_until(&in), (uint64_t) 104500 * 1000 + 1);
	CHECK(!hapg_commit_allowed(&c));
	in.fenced = true;
	CHECK(hapg_writable_until(&in) == HAPG_WRITABLE_NEVER);
}

TEST(switched_off_is_stock_postgresql)
{
	HapgCommitInput c = commit_at(HAPG_WRITABLE_NEVER, 5);

	c.enabled = false;
	CHECK(hapg_commit_allowed(&c));
}

TEST(reads_are_bounded_only_when_asked_and_on_a_primary)
{
	HapgCommitInput c = commit_at(1000, 2000);

	c.writes = false;
	CHECK(hapg_commit_allowed(&c));		/* a read, by default */
	c.bounded_reads = true;
	CHECK(!hapg_commit_allowed(&c));	/* hapg.lease_bounded_reads */
	c.now_us = 1000;
	CHECK(hapg_commit_allowed(&c));
	c.now_us = 2000;
	c.primary = false;
	CHECK(hapg_commit_allowed(&c));		/* a standby's reads */
	c.writes = true;
	c.primary = true;
	c.bounded_reads = false;
	CHECK(!hapg_commit_allowed(&c));
}

TEST(the_clock_moves_forward)
{
	uint64_t	a = hapg_clock_us();
	uint64_t	b = hapg_clock_us();

	CHECK(a > 0);
	CHECK(b >= a);
}

/* The plan as a string: "fence,signals,events,...". */
static const char *
plan_of(const HapgWakeInput *in)
{
	static char buf[256];
	HapgStep	steps[HAPG_MAX_STEPS];
	int			n = hapg_wake_plan(in, steps);
	int			i;

	buf[0] = '\0';
	for (i = 0; i < n; i++)
	{
		if (i > 0)
			strcat(buf, ",");
		strcat(buf, hapg_step_name(steps[i]));
	}
	return buf;
}

static HapgWakeInput
wake_input(int64_t deadline, int64_t now)
{
	HapgWakeInput in;

	memset(&in, 0, sizeof(in));
	in.ready = true;
	in.fence_deadline_ms = deadline;
	in.now_ms = now;
	return in;
}

TEST(an_overdue_leader_fences_before_anything_else)
{
	HapgWakeInput in = wake_input(104500, 104500);

	CHECK_STR(plan_of(&in), "fence,signals,events,requests,cycle,wait");
	in.now_ms = 200000;			/* the first wake-up after a long stop */
	CHECK_STR(plan_of(&in), "fence,signals,events,requests,cycle,wait");
}

TEST(a_leader_within_its_lease_does_not_fence)
{
	HapgWakeInput in = wake_input(104500, 104499);

	CHECK_STR(plan_of(&in), "signals,events,requests,cycle,wait");
	in = wake_input(0, 104500);	/* holds no Lease */
	CHECK_STR(plan_of(&in), "signals,events,requests,cycle,wait");
}

TEST(paused_fenced_or_unconfigured_never_fence_on_wake_up)
{
	HapgWakeInput in = wake_input(104500, 200000);

	in.paused = true;
	CHECK_STR(plan_of(&in), "signals,events,requests,cycle,wait");
	in.paused = false;
	in.fenced = true;			/* once is enough */
	CHECK_STR(plan_of(&in), "signals,events,requests,cycle,wait");
	in.fenced = false;
	in.ready = false;
	CHECK_STR(plan_of(&in), "signals,idle");
}

TEST(the_fence_rule_is_the_decisions_too)
{
	CHECK(hapg_fence_due(104500, 104500, false));
	CHECK(!hapg_fence_due(104500, 104499, false));
	CHECK(!hapg_fence_due(104500, 200000, true));
	CHECK(!hapg_fence_due(0, 200000, false));
}

void
run_commitrule_tests(void)
{
	RUN(leader_may_write_until_the_fence_deadline);
	RUN(commit_before_at_and_after_the_instant);
	RUN(only_a_successful_renewal_extends_it);
	RUN(not_a_leader_never_commits);
	RUN(not_configured_is_stock_postgresql);
	RUN(a_leader_whose_settings_a_reload_took_away_keeps_its_deadline);
	RUN(switched_off_is_stock_postgresql);
	RUN(reads_are_bounded_only_when_asked_and_on_a_primary);
	RUN(the_clock_moves_forward);
	RUN(an_overdue_leader_fences_before_anything_else);
	RUN(a_leader_within_its_lease_does_not_fence);
	RUN(paused_fenced_or_unconfigured_never_fence_on_wake_up);
	RUN(the_fence_rule_is_the_decisions_too);
}
