/* Unit tests of steer.c: judging SQL requests and planning switchovers. */
#include "unit.h"
#include "steer.h"

#define MB (1024 * 1024)
#define NOW_US INT64_C(1795323600000000)
#define LEADER_LSN UINT64_C(0x50000000)

/* One member view: a replica streaming at lsn unless told otherwise. */
static void
member(HapgMemberView *m, const char *name, bool replica, bool streaming,
	   uint64_t lsn, int priority)
{
	memset(m, 0, sizeof(*m));
	strcpy(m->name, name);
	m->has_status = true;
	m->replica = replica;
	strcpy(m->state, !replica ? "running" : streaming ? "streaming" : "recovering");
	m->streaming = streaming;
	m->has_lsn = true;
	m->lsn = lsn;
	m->priority = priority;
}

/*
 * The usual cluster: pg-0 leads, pg-1 streams level with it, pg-2 streams a
 * little behind.
 */
static void
cluster(HapgMemberView *m)
{
	member(&m[0], "pg-0", false, false, LEADER_LSN, 1);
	member(&m[1], "pg-1", true, true, LEADER_LSN, 1);
	member(&m[2], "pg-2", true, true, LEADER_LSN - 0x1000, 1);
}

/* A request against that cluster, with a valid Lease held by pg-0. */
static HapgRequestInput
request(HapgRequestKind kind, const char *candidate, const HapgMemberView *m)
{
	HapgRequestInput in;

	memset(&in, 0, sizeof(in));
	in.kind = kind;
	in.cluster = "c1";
	in.candidate = candidate;
	in.now_us = NOW_US;
	in.lease_exists = true;
	in.holder = "pg-0";
	in.has_leader_lsn = true;
	in.leader_lsn = LEADER_LSN;
	in.max_lag = MB;
	in.nmembers = 3;
	in.members = m;
	return in;
}

/* Judge with a verdict full of garbage: nothing of it may leak through. */
static void
judge(const HapgRequestInput *in, HapgVerdict *v)
{
	memset(v, 'x', sizeof(*v));
	hapg_judge_request(in, v);
}

static bool
has(const char *haystack, const char *needle)
{
	return strstr(haystack, needle) != NULL;
}

/* A refusal: not ok, nothing to write, no target. */
static bool
refused(const HapgVerdict *v)
{
	return !v->ok && !v->changes && v->target[0] == '\0';
}

/* A named, ready replica is the target, and the message names both ends. */
TEST(switchover_to_named_replica)
{
	HapgMemberView m[3];
	HapgRequestInput in;
	HapgVerdict v;

	cluster(m);
	in = request(HAPG_REQ_SWITCHOVER, "pg-2", m);
	judge(&in, &v);
	CHECK(v.ok);
	CHECK(v.changes);
	CHECK_STR(v.target, "pg-2");
	CHECK_STR(v.message, "switchover from \"pg-0\" to \"pg-2\" requested");
	CHECK_STR(v.detail, "");
	CHECK_STR(v.hint, "");
}

/* Without a candidate an immediate switchover goes to the furthest replica. */
TEST(switchover_without_candidate_picks_best)
{
	HapgMemberView m[3];
	HapgRequestInput in;
	HapgVerdict v;

	cluster(m);
	in = request(HAPG_REQ_SWITCHOVER, "", m);
	judge(&in, &v);
	CHECK(v.ok && v.changes);
	CHECK_STR(v.target, "pg-1");
	CHECK_STR(v.message, "switchover from \"pg-0\" to \"pg-1\" requested");

	/* pg-1 drops out: pg-2 is next */
	m[1].streaming = false;
	judge(&in, &v);
	CHECK(v.ok);
	CHECK_STR(v.target, "pg-2");
}

/* A time that has come already (now included) is refused before anything else. */
TEST(switchover_scheduled_in_the_past)
{
	HapgMemberView m[3];
	HapgRequestInput in;
	HapgVerdict v;

	cluster(m);
	in = request(HAPG_REQ_SWITCHOVER, "pg-2", m);
	in.scheduled_at_us = NOW_US - 1;
	judge(&in, &v);
	CHECK(refused(&v));
	CHECK_STR(v.message, "scheduled_at is in the past");
	CHECK(has(v.hint, "in the future"));
	in.scheduled_at_us = NOW_US;
	judge(&in, &v);
	CHECK(refused(&v));
	CHECK_STR(v.message, "scheduled_at is in the past");
	/* it wins over the other refusals */
	in.switchover.pending = true;
	in.paused = true;
	in.candidate = "";
	judge(&in, &v);
	CHECK_STR(v.message, "scheduled_at is in the past");
	/* one microsecond ahead is the future */
	in = request(HAPG_REQ_SWITCHOVER, "pg-2", m);
	in.scheduled_at_us = NOW_US + 1;
	judge(&in, &v);
	CHECK(v.ok && v.changes);
}

/*
 * A scheduled switchover without a candidate leaves the choice to the time
 * it is carried out; with a candidate the target is fixed now.
 */
TEST(switchover_scheduled)
{
	HapgMemberView m[3];
	HapgRequestInput in;
	HapgVerdict v;

	cluster(m);
	in = request(HAPG_REQ_SWITCHOVER, "", m);
	in.scheduled_at_us = NOW_US + 60 * INT64_C(1000000);
	judge(&in, &v);
	CHECK(v.ok && v.changes);
	CHECK_STR(v.target, "");
	CHECK_STR(v.message, "switchover from \"pg-0\" to the healthiest replica scheduled");

	in.candidate = "pg-2";
	judge(&in, &v);
	CHECK(v.ok && v.changes);
	CHECK_STR(v.target, "pg-2");
	CHECK_STR(v.message, "switchover from \"pg-0\" to \"pg-2\" scheduled");

	/* it is still refused when nobody could take over now */
	in.candidate = "";
	m[1].streaming = m[2].streaming = false;
	judge(&in, &v);
	CHECK(refused(&v));
	CHECK_STR(v.message, "no replica can take over");
}

/* While paused hapg chooses nobody itself, but a named candidate is fine. */
TEST(switchover_paused_needs_candidate)
{
	HapgMemberView m[3];
	HapgRequestInput in;
	HapgVerdict v;

	cluster(m);
	in = request(HAPG_REQ_SWITCHOVER, "", m);
	in.paused = true;
	judge(&in, &v);
	CHECK(refused(&v));
	CHECK_STR(v.message, "cluster \"c1\" is paused");
	CHECK(has(v.detail, "does not choose a candidate"));
	CHECK(has(v.hint, "hapg_resume()"));

	in.candidate = "pg-1";
	judge(&in, &v);
	CHECK(v.ok && v.changes);
	CHECK_STR(v.target, "pg-1");
}

/* One pending switchover at a time; the detail says which one is waiting. */
TEST(switchover_already_pending)
{
	HapgMemberView m[3];
	HapgRequestInput in;
	HapgVerdict v;

	cluster(m);
	in = request(HAPG_REQ_SWITCHOVER, "pg-1", m);
	in.switchover.pending = true;
	strcpy(in.switchover.from, "pg-0");
	strcpy(in.switchover.to, "pg-2");
	judge(&in, &v);
	CHECK(refused(&v));
	CHECK_STR(v.message, "another switchover is already pending");
	CHECK_STR(v.detail, "A switchover from \"pg-0\" to \"pg-2\" is pending.");
	CHECK(has(v.hint, "hapg_cancel_switchover()"));

	in.switchover.to[0] = '\0';
	judge(&in, &v);
	CHECK(refused(&v));
	CHECK_STR(v.detail, "A switchover from \"pg-0\" to the healthiest replica is pending.");
}

/* A switchover needs a leader: a released or expired Lease has none. */
TEST(switchover_without_leader)
{
	HapgMemberView m[3];
	HapgRequestInput in;
	HapgVerdict v;

	cluster(m);
	in = request(HAPG_REQ_SWITCHOVER, "pg-1", m);
	in.holder = "";
	judge(&in, &v);
	CHECK(refused(&v));
	CHECK_STR(v.message, "cluster \"c1\" has no leader to switch over from");
	CHECK(has(v.hint, "hapg_failover(candidate)"));

	in = request(HAPG_REQ_SWITCHOVER, "pg-1", m);
	in.lease_expired = true;
	judge(&in, &v);
	CHECK(refused(&v));
	CHECK_STR(v.message, "cluster \"c1\" has no leader to switch over from");

	/* the same without a candidate */
	in.candidate = "";
	judge(&in, &v);
	CHECK(refused(&v));
	CHECK(has(v.message, "has no leader"));
}

/* Without a Lease object only a failover can be asked for. */
TEST(no_lease_object_refuses_all_but_failover)
{
	HapgMemberView m[3];
	HapgRequestInput in;
	HapgVerdict v;
	HapgRequestKind kinds[] = {HAPG_REQ_SWITCHOVER, HAPG_REQ_PAUSE,
	HAPG_REQ_RESUME, HAPG_REQ_CANCEL, HAPG_REQ_NONE};
	int			i;

	cluster(m);
	for (i = 0; i < (int) (sizeof(kinds) / sizeof(kinds[0])); i++)
	{
		in = request(kinds[i], "pg-1", m);
		in.lease_exists = false;
		in.holder = "";
		in.switchover.pending = true;	/* a cancel has nothing to cancel */
		judge(&in, &v);
		CHECK(refused(&v));
		CHECK_STR(v.message, "cluster \"c1\" has no leader Lease yet");
		CHECK(has(v.hint, "hapg_status()"));
	}

	in = request(HAPG_REQ_FAILOVER, "pg-1", m);
	in.lease_exists = false;
	in.holder = "";
	judge(&in, &v);
	CHECK(v.ok && v.changes);
	CHECK_STR(v.target, "pg-1");
	CHECK_STR(v.message, "failover to \"pg-1\" requested");
}

/* A name that is no member is refused, naming it and the cluster. */
TEST(unknown_member)
{
	HapgMemberView m[3];
	HapgRequestInput in;
	HapgVerdict v;

	cluster(m);
	in = request(HAPG_REQ_SWITCHOVER, "pg-9", m);
	judge(&in, &v);
	CHECK(refused(&v));
	CHECK_STR(v.message, "member \"pg-9\" is not in cluster \"c1\"");
	CHECK(has(v.hint, "hapg_members"));

	in = request(HAPG_REQ_FAILOVER, "pg-9", m);
	in.lease_expired = true;
	judge(&in, &v);
	CHECK(refused(&v));
	CHECK_STR(v.message, "member \"pg-9\" is not in cluster \"c1\"");

	/* no members known at all */
	in = request(HAPG_REQ_SWITCHOVER, "pg-1", NULL);
	in.nmembers = 0;
	judge(&in, &v);
	CHECK(refused(&v));
	CHECK_STR(v.message, "member \"pg-1\" is not in cluster \"c1\"");
}

TEST(candidate_is_the_leader)
{
	HapgMemberView m[3];
	HapgRequestInput in;
	HapgVerdict v;

	cluster(m);
	in = request(HAPG_REQ_SWITCHOVER, "pg-0", m);
	judge(&in, &v);
	CHECK(refused(&v));
	CHECK_STR(v.message, "member \"pg-0\" is already the leader");
	CHECK(has(v.hint, "Name a replica"));
}

/* nofailover and failover_priority = 0 forbid promotion, for either request. */
TEST(candidate_must_not_be_promoted)
{
	HapgMemberView m[3];
	HapgRequestInput in;
	HapgVerdict v;
	int			k;

	for (k = 0; k < 2; k++)
	{
		cluster(m);
		in = request(k == 0 ? HAPG_REQ_SWITCHOVER : HAPG_REQ_FAILOVER, "pg-2", m);
		if (k == 1)
			in.lease_expired = true;
		m[2].nofailover = true;
		judge(&in, &v);
		CHECK(refused(&v));
		CHECK_STR(v.message, "member \"pg-2\" must not be promoted");
		CHECK_STR(v.detail, "It has hapg.nofailover = on.");
		CHECK(has(v.hint, "\"pg-2\""));

		m[2].nofailover = false;
		m[2].priority = 0;
		judge(&in, &v);
		CHECK(refused(&v));
		CHECK_STR(v.message, "member \"pg-2\" must not be promoted");
		CHECK_STR(v.detail, "It has hapg.failover_priority = 0.");
		CHECK(has(v.hint, "\"pg-2\""));

		/* a negative priority is no better */
		m[2].priority = -1;
		judge(&in, &v);
		CHECK(refused(&v));
		CHECK(has(v.message, "must not be promoted"));
	}
}

/* Only a standby can be promoted; its state tells the operator why not. */
TEST(candidate_not_a_replica)
{
	HapgMemberView m[4];
	HapgRequestInput in;
	HapgVerdict v;

	cluster(m);
	member(&m[3], "pg-3", false, false, LEADER_LSN, 1);
	in = request(HAPG_REQ_SWITCHOVER, "pg-3", m);
	in.nmembers = 4;
	judge(&in, &v);
	CHECK(refused(&v));
	CHECK_STR(v.message, "member \"pg-3\" is not a replica");
	CHECK_STR(v.detail, "Its state is \"running\".");
	CHECK(has(v.hint, "Only a standby"));

	/* a member that never published a status */
	m[3].has_status = false;
	judge(&in, &v);
	CHECK(refused(&v));
	CHECK_STR(v.detail, "Its state is \"unknown\".");

	/* a failover checks the same */
	in.kind = HAPG_REQ_FAILOVER;
	in.lease_expired = true;
	judge(&in, &v);
	CHECK(refused(&v));
	CHECK_STR(v.message, "member \"pg-3\" is not a replica");
}

/* A switchover needs the candidate streaming; a failover does not. */
TEST(candidate_not_streaming)
{
	HapgMemberView m[3];
	HapgRequestInput in;
	HapgVerdict v;

	cluster(m);
	m[2].streaming = false;
	strcpy(m[2].state, "recovering");
	in = request(HAPG_REQ_SWITCHOVER, "pg-2", m);
	judge(&in, &v);
	CHECK(refused(&v));
	CHECK_STR(v.message, "member \"pg-2\" is not streaming from the leader");
	CHECK_STR(v.detail, "Its state is \"recovering\".");
	CHECK(has(v.hint, "Wait until it streams"));
	m[2].has_status = false;
	judge(&in, &v);
	CHECK_STR(v.detail, "Its state is \"unknown\".");

	in = request(HAPG_REQ_FAILOVER, "pg-2", m);
	in.lease_expired = true;
	judge(&in, &v);
	CHECK(v.ok && v.changes);
	CHECK_STR(v.target, "pg-2");
	CHECK_STR(v.message, "failover to \"pg-2\" requested");
}

/* Lag beyond hapg.maximum_lag_on_failover is refused; exactly at it is not. */
TEST(candidate_lags)
{
	HapgMemberView m[3];
	HapgRequestInput in;
	HapgVerdict v;

	cluster(m);
	m[2].lsn = LEADER_LSN - MB - 1;
	in = request(HAPG_REQ_SWITCHOVER, "pg-2", m);
	judge(&in, &v);
	CHECK(refused(&v));
	CHECK_STR(v.message, "member \"pg-2\" lags too far behind the leader");
	CHECK_STR(v.detail, "It is 1048577 bytes behind; hapg.maximum_lag_on_failover is 1048576 bytes.");
	CHECK(has(v.hint, "catches up"));

	/* a failover applies the same limit to the leader's last position */
	in.kind = HAPG_REQ_FAILOVER;
	in.lease_expired = true;
	judge(&in, &v);
	CHECK(refused(&v));
	CHECK(has(v.message, "lags too far behind"));

	m[2].lsn = LEADER_LSN - MB;
	in = request(HAPG_REQ_SWITCHOVER, "pg-2", m);
	judge(&in, &v);
	CHECK(v.ok && v.changes);
	CHECK_STR(v.target, "pg-2");

	/* without the leader's position there is no lag to hold against it */
	m[2].lsn = 0;
	in.has_leader_lsn = false;
	judge(&in, &v);
	CHECK(v.ok);
	/* a replica ahead of the leader's last report does not lag */
	in.has_leader_lsn = true;
	m[2].lsn = LEADER_LSN + 0x100;
	judge(&in, &v);
	CHECK(v.ok);
}

/* Without a candidate and no replica fit to take over, nothing is written. */
TEST(no_replica_can_take_over)
{
	HapgMemberView m[3];
	HapgRequestInput in;
	HapgVerdict v;

	cluster(m);
	m[1].streaming = false;
	m[2].lsn = LEADER_LSN - MB - 1;
	in = request(HAPG_REQ_SWITCHOVER, "", m);
	judge(&in, &v);
	CHECK(refused(&v));
	CHECK_STR(v.message, "no replica can take over");
	CHECK(has(v.detail, "hapg.maximum_lag_on_failover"));
	CHECK(has(v.hint, "hapg_members"));
}

/*
 * Refusals on positions (not streaming, lagging, no replica fit) are asked
 * again a renewal later, a bounded number of times; others are final.
 */
TEST(refusal_on_positions_is_asked_again)
{
	HapgMemberView m[3];
	HapgRequestInput in;
	HapgVerdict v;
	int			i;

	cluster(m);
	m[2].lsn = LEADER_LSN - MB - 1;
	in = request(HAPG_REQ_SWITCHOVER, "pg-2", m);
	judge(&in, &v);
	CHECK(refused(&v) && v.on_positions);
	CHECK(hapg_request_retry_ms(&v, 1, 1) == 1000 + HAPG_RENEWAL_DELIVERY_MS);
	CHECK(hapg_request_retry_ms(&v, 1, 10) == 10000 + HAPG_RENEWAL_DELIVERY_MS);
	for (i = 1; i <= HAPG_POSITION_RETRIES; i++)
		CHECK(hapg_request_retry_ms(&v, i, 1) > 0);
	CHECK(hapg_request_retry_ms(&v, HAPG_POSITION_RETRIES + 1, 1) == -1);
	CHECK(hapg_request_retry_ms(&v, 0, 1) == -1);

	m[2].lsn = LEADER_LSN;
	m[2].streaming = false;
	judge(&in, &v);
	CHECK(refused(&v) && v.on_positions);
	CHECK(hapg_request_retry_ms(&v, 1, 1) > 0);

	m[1].streaming = false;
	in = request(HAPG_REQ_SWITCHOVER, "", m);
	judge(&in, &v);
	CHECK_STR(v.message, "no replica can take over");
	CHECK(v.on_positions);

	/* the member's settings, its role, the Lease: final at once */
	cluster(m);
	m[2].nofailover = true;
	in = request(HAPG_REQ_SWITCHOVER, "pg-2", m);
	judge(&in, &v);
	CHECK(refused(&v) && !v.on_positions);
	CHECK(hapg_request_retry_ms(&v, 1, 1) == -1);
	in = request(HAPG_REQ_SWITCHOVER, "pg-0", m);
	judge(&in, &v);
	CHECK(refused(&v) && !v.on_positions);
	in = request(HAPG_REQ_SWITCHOVER, "pg-9", m);
	judge(&in, &v);
	CHECK(refused(&v) && !v.on_positions);

	/* an accepted request is never asked again */
	in = request(HAPG_REQ_SWITCHOVER, "pg-1", m);
	judge(&in, &v);
	CHECK(v.ok && !v.on_positions);
	CHECK(hapg_request_retry_ms(&v, 1, 1) == -1);
}

/* A failover is for a cluster without a healthy leader, and needs a name. */
TEST(failover_rules)
{
	HapgMemberView m[3];
	HapgRequestInput in;
	HapgVerdict v;

	cluster(m);
	in = request(HAPG_REQ_FAILOVER, "", m);
	in.lease_expired = true;
	judge(&in, &v);
	CHECK(refused(&v));
	CHECK_STR(v.message, "hapg_failover needs a candidate");

	in = request(HAPG_REQ_FAILOVER, "pg-2", m);
	judge(&in, &v);
	CHECK(refused(&v));
	CHECK_STR(v.message, "cluster \"c1\" has a healthy leader, \"pg-0\"");
	CHECK_STR(v.detail, "Its Lease is valid.");
	CHECK(has(v.hint, "hapg_switchover()"));

	/* an expired Lease and a released one both allow it */
	in.lease_expired = true;
	judge(&in, &v);
	CHECK(v.ok && v.changes);
	CHECK_STR(v.target, "pg-2");
	CHECK_STR(v.message, "failover to \"pg-2\" requested");
	in = request(HAPG_REQ_FAILOVER, "pg-1", m);
	in.holder = "";
	judge(&in, &v);
	CHECK(v.ok && v.changes);
	CHECK_STR(v.target, "pg-1");

	/* paused or with a switchover pending, a failover is still allowed */
	in.paused = true;
	in.switchover.pending = true;
	judge(&in, &v);
	CHECK(v.ok);
	CHECK_STR(v.target, "pg-1");
}

/*
 * A failover candidate whose position nobody reported cannot be held to the
 * lag limit: refused, with a hint to ask on the candidate itself.
 */
TEST(failover_unknown_position)
{
	HapgMemberView m[3];
	HapgRequestInput in;
	HapgVerdict v;

	cluster(m);
	m[2].has_lsn = false;
	m[2].lsn = 0;
	m[2].streaming = false;
	in = request(HAPG_REQ_FAILOVER, "pg-2", m);
	in.lease_expired = true;
	judge(&in, &v);
	CHECK(refused(&v));
	CHECK_STR(v.message, "the position of member \"pg-2\" is unknown here");
	CHECK(has(v.hint, "on that member itself"));
	/* without any leader position there is nothing to compare with */
	in.has_leader_lsn = false;
	judge(&in, &v);
	CHECK(v.ok && v.changes);
	CHECK_STR(v.target, "pg-2");
}

/* Pause and resume report whether they change anything. */
TEST(pause_resume_idempotent)
{
	HapgMemberView m[3];
	HapgRequestInput in;
	HapgVerdict v;

	cluster(m);
	in = request(HAPG_REQ_PAUSE, "", m);
	judge(&in, &v);
	CHECK(v.ok && v.changes);
	CHECK_STR(v.message, "cluster \"c1\" paused");
	CHECK_STR(v.target, "");
	in.paused = true;
	judge(&in, &v);
	CHECK(v.ok && !v.changes);
	CHECK_STR(v.message, "cluster \"c1\" was already paused");

	in.kind = HAPG_REQ_RESUME;
	judge(&in, &v);
	CHECK(v.ok && v.changes);
	CHECK_STR(v.message, "cluster \"c1\" resumed");
	in.paused = false;
	judge(&in, &v);
	CHECK(v.ok && !v.changes);
	CHECK_STR(v.message, "cluster \"c1\" was already running");

	/* they need a Lease object but no leader */
	in = request(HAPG_REQ_PAUSE, "", m);
	in.holder = "";
	in.lease_expired = true;
	judge(&in, &v);
	CHECK(v.ok && v.changes);
}

/* Cancelling writes only when a switchover is pending. */
TEST(cancel_idempotent)
{
	HapgMemberView m[3];
	HapgRequestInput in;
	HapgVerdict v;

	cluster(m);
	in = request(HAPG_REQ_CANCEL, "", m);
	in.switchover.pending = true;
	strcpy(in.switchover.from, "pg-0");
	judge(&in, &v);
	CHECK(v.ok && v.changes);
	CHECK_STR(v.message, "switchover cancelled");
	in.switchover.pending = false;
	judge(&in, &v);
	CHECK(v.ok && !v.changes);
	CHECK_STR(v.message, "no switchover was pending");
}

TEST(unknown_request_kind)
{
	HapgMemberView m[3];
	HapgRequestInput in;
	HapgVerdict v;

	cluster(m);
	in = request(HAPG_REQ_NONE, "", m);
	judge(&in, &v);
	CHECK(refused(&v));
	CHECK_STR(v.message, "unknown request");
	in.kind = (HapgRequestKind) 99;
	judge(&in, &v);
	CHECK(refused(&v));
	CHECK_STR(v.message, "unknown request");
}

/* The furthest replica wins, whatever the priority. */
TEST(best_replica_by_lsn)
{
	HapgMemberView m[3];

	member(&m[0], "pg-a", true, true, 100, 1);
	member(&m[1], "pg-b", true, true, 300, 1);
	member(&m[2], "pg-c", true, true, 200, 9);
	CHECK(hapg_best_replica(m, 3, "pg-0", true, 300, MB) == &m[1]);
	m[1].lsn = 150;
	CHECK(hapg_best_replica(m, 3, "pg-0", true, 300, MB) == &m[2]);
}

/* At the same position the higher priority wins, then the lower name. */
TEST(best_replica_ties)
{
	HapgMemberView m[3];

	member(&m[0], "pg-c", true, true, 100, 1);
	member(&m[1], "pg-b", true, true, 100, 1);
	member(&m[2], "pg-a", true, true, 100, 1);
	CHECK(hapg_best_replica(m, 3, "pg-0", true, 100, MB) == &m[2]);
	/* the order in the array does not matter */
	member(&m[0], "pg-a", true, true, 100, 1);
	member(&m[2], "pg-c", true, true, 100, 1);
	CHECK(hapg_best_replica(m, 3, "pg-0", true, 100, MB) == &m[0]);
	m[1].priority = 2;
	CHECK(hapg_best_replica(m, 3, "pg-0", true, 100, MB) == &m[1]);
	m[2].priority = 3;
	CHECK(hapg_best_replica(m, 3, "pg-0", true, 100, MB) == &m[2]);
	/* but position comes first */
	m[0].lsn = 101;
	CHECK(hapg_best_replica(m, 3, "pg-0", true, 101, MB) == &m[0]);
}

/* A known position beats an unknown one, in either order. */
TEST(best_replica_known_position_first)
{
	HapgMemberView m[2];

	/* a stale value behind has_lsn = false is not trusted */
	member(&m[0], "pg-a", true, true, 1000, 5);
	m[0].has_lsn = false;
	member(&m[1], "pg-b", true, true, 10, 1);
	CHECK(hapg_best_replica(m, 2, "pg-0", true, 10, MB) == &m[1]);
	member(&m[0], "pg-a", true, true, 10, 1);
	member(&m[1], "pg-b", true, true, 1000, 5);
	m[1].has_lsn = false;
	CHECK(hapg_best_replica(m, 2, "pg-0", true, 10, MB) == &m[0]);
}

/* Everything that may not take over is skipped, one reason at a time. */
TEST(best_replica_skips)
{
	HapgMemberView m[2];
	int			k;

	CHECK(hapg_best_replica(NULL, 0, "pg-0", true, 0, MB) == NULL);
	for (k = 0; k < 6; k++)
	{
		/* pg-a is disqualified; pg-b, exactly at the lag limit, is fine */
		member(&m[0], "pg-a", true, true, LEADER_LSN, 1);
		member(&m[1], "pg-b", true, true, LEADER_LSN - MB, 1);
		if (k == 0)
			strcpy(m[0].name, "pg-0");	/* the leader itself */
		else if (k == 1)
			m[0].streaming = false;
		else if (k == 2)
			m[0].nofailover = true;
		else if (k == 3)
			m[0].priority = 0;
		else if (k == 4)
			m[0].replica = false;
		else
			m[0].lsn = LEADER_LSN - MB - 1;	/* one byte beyond the lag limit */
		CHECK(hapg_best_replica(m, 2, "pg-0", true, LEADER_LSN, MB) == &m[1]);
		/* with pg-b out too there is nobody */
		m[1].streaming = false;
		CHECK(hapg_best_replica(m, 2, "pg-0", true, LEADER_LSN, MB) == NULL);
	}
	/* without the leader's position nobody is held back for lag */
	member(&m[0], "pg-a", true, true, 0, 1);
	CHECK(hapg_best_replica(m, 1, "pg-0", false, LEADER_LSN, MB) == &m[0]);
	CHECK(hapg_best_replica(m, 1, "pg-0", true, LEADER_LSN, MB) == NULL);
}

/* A switchover as the leader pg-0 finds it in the Lease. */
static HapgSwitchover
pending(const char *from, const char *to, int64_t scheduled_at_us)
{
	HapgSwitchover sw;

	memset(&sw, 0, sizeof(sw));
	sw.pending = true;
	strcpy(sw.from, from);
	strcpy(sw.to, to);
	sw.scheduled_at_us = scheduled_at_us;
	sw.requested_at_us = NOW_US - 1000;
	strcpy(sw.requested_by, "pg-1");
	return sw;
}

/* Plan with a plan full of garbage: nothing of it may leak through. */
static void
plan(const HapgSwitchover *sw, int64_t now_us, const HapgMemberView *m, int n,
	 HapgSwitchoverPlan *p)
{
	memset(p, 'x', sizeof(*p));
	hapg_plan_switchover(sw, "pg-0", now_us, 60 * INT64_C(1000000), m, n,
						 LEADER_LSN, MB, p);
}

TEST(plan_nothing_pending)
{
	HapgMemberView m[3];
	HapgSwitchover sw = pending("pg-0", "pg-1", 0);
	HapgSwitchoverPlan p;

	cluster(m);
	sw.pending = false;
	plan(&sw, NOW_US, m, 3, &p);
	CHECK(p.step == HAPG_SW_WAIT);
	CHECK(p.wait_us == -1);
	CHECK_STR(p.target, "");
	CHECK_STR(p.why, "");
}

/* A switchover asked of an earlier leader is not this leader's to carry out. */
TEST(plan_not_mine)
{
	HapgMemberView m[3];
	HapgSwitchover sw = pending("pg-1", "pg-2", 0);
	HapgSwitchoverPlan p;

	cluster(m);
	plan(&sw, NOW_US, m, 3, &p);
	CHECK(p.step == HAPG_SW_DROP);
	CHECK_STR(p.target, "");
	CHECK_STR(p.why, "it was requested while \"pg-1\" was the leader");
}

/* Before its time it waits exactly until it is due. */
TEST(plan_not_due)
{
	HapgMemberView m[3];
	HapgSwitchover sw = pending("pg-0", "pg-2", NOW_US + 5000000);
	HapgSwitchoverPlan p;

	cluster(m);
	plan(&sw, NOW_US, m, 3, &p);
	CHECK(p.step == HAPG_SW_WAIT);
	CHECK(p.wait_us == 5000000);
	CHECK_STR(p.target, "");
	CHECK_STR(p.why, "not due yet");
	plan(&sw, NOW_US + 4999999, m, 3, &p);
	CHECK(p.step == HAPG_SW_WAIT);
	CHECK(p.wait_us == 1);
	/* due exactly now */
	plan(&sw, NOW_US + 5000000, m, 3, &p);
	CHECK(p.step == HAPG_SW_GO);
	CHECK_STR(p.target, "pg-2");

	/* an immediate one is due from when it was asked */
	sw = pending("pg-0", "pg-2", 0);
	sw.requested_at_us = NOW_US + 10;
	plan(&sw, NOW_US, m, 3, &p);
	CHECK(p.step == HAPG_SW_WAIT);
	CHECK(p.wait_us == 10);
}

/* Long past its time it would surprise everyone: dropped. */
TEST(plan_stale)
{
	HapgMemberView m[3];
	HapgSwitchover sw = pending("pg-0", "pg-2", NOW_US);
	HapgSwitchoverPlan p;

	cluster(m);
	plan(&sw, NOW_US + 60 * INT64_C(1000000) + 1, m, 3, &p);
	CHECK(p.step == HAPG_SW_DROP);
	CHECK_STR(p.target, "");
	CHECK_STR(p.why, "it is stale: due 60.0 s ago");
	/* exactly at the limit it still goes */
	plan(&sw, NOW_US + 60 * INT64_C(1000000), m, 3, &p);
	CHECK(p.step == HAPG_SW_GO);
	CHECK_STR(p.target, "pg-2");

	/* an immediate one ages from when it was requested */
	sw = pending("pg-0", "", 0);
	sw.requested_at_us = NOW_US;
	plan(&sw, NOW_US + 90 * INT64_C(1000000), m, 3, &p);
	CHECK(p.step == HAPG_SW_DROP);
	CHECK_STR(p.why, "it is stale: due 90.0 s ago");
}

/* A named target that is not ready makes the leader wait, saying why. */
TEST(plan_named_target_not_ready)
{
	HapgMemberView m[3];
	HapgSwitchover sw = pending("pg-0", "pg-2", 0);
	HapgSwitchoverPlan p;

	cluster(m);
	m[2].streaming = false;
	plan(&sw, NOW_US, m, 3, &p);
	CHECK(p.step == HAPG_SW_WAIT);
	CHECK(p.wait_us == -1);
	CHECK_STR(p.target, "");
	CHECK_STR(p.why, "candidate \"pg-2\" is not ready: not streaming");

	cluster(m);
	m[2].nofailover = true;
	plan(&sw, NOW_US, m, 3, &p);
	CHECK(p.step == HAPG_SW_WAIT);
	CHECK_STR(p.why, "candidate \"pg-2\" is not ready: it must not be promoted");
	m[2].nofailover = false;
	m[2].priority = 0;
	plan(&sw, NOW_US, m, 3, &p);
	CHECK(p.step == HAPG_SW_WAIT);
	CHECK_STR(p.why, "candidate \"pg-2\" is not ready: it must not be promoted");

	cluster(m);
	m[2].lsn = LEADER_LSN - MB - 1;
	plan(&sw, NOW_US, m, 3, &p);
	CHECK(p.step == HAPG_SW_WAIT);
	CHECK_STR(p.why, "candidate \"pg-2\" is not ready: it lags behind");
	m[2].lsn = LEADER_LSN - MB;
	plan(&sw, NOW_US, m, 3, &p);
	CHECK(p.step == HAPG_SW_GO);

	cluster(m);
	plan(&sw, NOW_US, m, 2, &p);	/* pg-2 is gone */
	CHECK(p.step == HAPG_SW_WAIT);
	CHECK_STR(p.why, "candidate \"pg-2\" is not ready: not a member");

	/* a member that is a primary is not ready either */
	cluster(m);
	m[2].replica = false;
	plan(&sw, NOW_US, m, 3, &p);
	CHECK(p.step == HAPG_SW_WAIT);
	CHECK_STR(p.target, "");
}

/* A named, ready target is taken even when another replica is further ahead. */
TEST(plan_go_named_target)
{
	HapgMemberView m[3];
	HapgSwitchover sw = pending("pg-0", "pg-2", 0);
	HapgSwitchoverPlan p;

	cluster(m);
	plan(&sw, NOW_US, m, 3, &p);
	CHECK(p.step == HAPG_SW_GO);
	CHECK_STR(p.target, "pg-2");
}

/* Without a named target the best replica is chosen when the time comes. */
TEST(plan_go_best_replica)
{
	HapgMemberView m[3];
	HapgSwitchover sw = pending("pg-0", "", NOW_US);
	HapgSwitchoverPlan p;

	cluster(m);
	plan(&sw, NOW_US, m, 3, &p);
	CHECK(p.step == HAPG_SW_GO);
	CHECK_STR(p.target, "pg-1");
	m[1].streaming = false;
	plan(&sw, NOW_US, m, 3, &p);
	CHECK(p.step == HAPG_SW_GO);
	CHECK_STR(p.target, "pg-2");
	/* nobody ready: wait for the next loop */
	m[2].lsn = LEADER_LSN - MB - 1;
	plan(&sw, NOW_US, m, 3, &p);
	CHECK(p.step == HAPG_SW_WAIT);
	CHECK(p.wait_us == -1);
	CHECK_STR(p.target, "");
	CHECK_STR(p.why, "no replica is ready to take over");
}

void
run_steer_tests(void)
{
	RUN(switchover_to_named_replica);
	RUN(switchover_without_candidate_picks_best);
	RUN(switchover_scheduled_in_the_past);
	RUN(switchover_scheduled);
	RUN(switchover_paused_needs_candidate);
	RUN(switchover_already_pending);
	RUN(switchover_without_leader);
	RUN(no_lease_object_refuses_all_but_failover);
	RUN(unknown_member);
	RUN(candidate_is_the_leader);
	RUN(candidate_must_not_be_promoted);
	RUN(candidate_not_a_replica);
	RUN(candidate_not_streaming);
	RUN(candidate_lags);
	RUN(no_replica_can_take_over);
	RUN(refusal_on_positions_is_asked_again);
	RUN(failover_rules);
	RUN(failover_unknown_position);
	RUN(pause_resume_idempotent);
	RUN(cancel_idempotent);
	RUN(unknown_request_kind);
	RUN(best_replica_by_lsn);
	RUN(best_replica_ties);
	RUN(best_replica_known_position_first);
	RUN(best_replica_skips);
	RUN(plan_nothing_pending);
	RUN(plan_not_mine);
	RUN(plan_not_due);
	RUN(plan_stale);
	RUN(plan_named_target_not_ready);
	RUN(plan_go_named_target);
	RUN(plan_go_best_replica);
}
