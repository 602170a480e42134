/* Unit tests of the member view and the Pod role rules (src/members.c). */
#include "unit.h"
#include "members.h"

#define NOW 5000
#define LEASE_SEEN 4000

static HapgPodInfo pods[4];
static int64_t seen_at[4] = {100, 200, 300, 400};
static HapgLeaseInfo lease;
static HapgMemberPos senders[2];

/* A Pod with a published status. */
static void
pod(HapgPodInfo *p, const char *name, const char *role, const char *state, uint64_t lsn)
{
	memset(p, 0, sizeof(*p));
	strcpy(p->name, name);
	p->has_status = true;
	strcpy(p->role, role);
	strcpy(p->state, state);
	p->timeline = 2;
	p->lsn = lsn;
	p->priority = 1;
	strcpy(p->connect_address, "10.0.0.1:5432");
}

/* pg-0 leads, pg-1 and pg-2 are replicas; I am me, with role and recovery given. */
static HapgMembersInput
cluster(const char *me, HapgRole role, bool in_recovery)
{
	HapgMembersInput in;

	pod(&pods[0], "pg-0", "leader", "running", 0x1000);
	pod(&pods[1], "pg-1", "replica", "streaming", 0x800);
	pod(&pods[2], "pg-2", "replica", "streaming", 0x700);
	memset(&lease, 0, sizeof(lease));
	lease.view.known = lease.view.exists = true;
	strcpy(lease.view.holder, "pg-0");
	lease.has_leader_lsn = true;
	lease.leader_lsn = 0x3000;
	lease.leader_timeline = 2;
	lease.npos = 1;
	strcpy(lease.pos[0].name, "pg-1");
	lease.pos[0].lsn = 0x2f00;
	strcpy(lease.pos[0].state, "streaming");
	memset(senders, 0, sizeof(senders));
	strcpy(senders[0].name, "pg-1");
	senders[0].lsn = 0x2fff;
	strcpy(senders[0].state, "streaming");

	memset(&in, 0, sizeof(in));
	in.self.name = me;
	in.self.role = role;
	in.self.in_recovery = in_recovery;
	in.self.streaming = in_recovery;
	in.self.state = in_recovery ? "streaming" : "running";
	in.self.timeline = 2;
	in.self.lsn = 0x3100;
	in.self.connect_address = "127.0.0.1:5433";
	in.self.priority = 7;
	in.self.nsenders = 1;
	in.self.senders = senders;
	in.lease = &lease;
	in.lease_seen_at = LEASE_SEEN;
	in.now = NOW;
	in.npods = 3;
	in.pods = pods;
	in.pod_seen_at = seen_at;
	return in;
}

/* The leader knows its replicas from its walsenders; one it does not see is disconnected. */
TEST(leader_view_from_walsenders)
{
	HapgMembersInput in = cluster("pg-0", HAPG_ROLE_LEADER, false);
	HapgMemberView mv[HAPG_MAX_MEMBERS];
	HapgLeaderPos lp = hapg_leader_pos(&in);
	int			n = hapg_build_members(&in, mv, HAPG_MAX_MEMBERS);

	CHECK(n == 3);
	CHECK(lp.i_lead && lp.known && lp.lsn == 0x3100);
	/* me: first hand */
	CHECK_STR(mv[0].name, "pg-0");
	CHECK(mv[0].is_leader);
	CHECK_STR(mv[0].role, "leader");
	CHECK(mv[0].lsn == 0x3100);
	CHECK(!mv[0].has_lsn);
	CHECK(!mv[0].replica);
	CHECK_STR(mv[0].connect_address, "127.0.0.1:5433");
	CHECK(mv[0].priority == 7 && mv[0].has_settings);
	CHECK(mv[0].last_seen == NOW);
	/* pg-1: my walsender */
	CHECK(mv[1].has_lsn && mv[1].streaming && mv[1].lsn == 0x2fff);
	CHECK(mv[1].last_seen == NOW);
	CHECK_STR(mv[1].role, "replica");
	/* pg-2: not among my walsenders */
	CHECK_STR(mv[2].state, "disconnected");
	CHECK(!mv[2].has_lsn && !mv[2].streaming);
	CHECK(mv[2].lsn == 0x700);
	CHECK(mv[2].last_seen == 300);
}

/* A replica takes the others from the leader's last renewal. */
TEST(replica_view_from_the_lease)
{
	HapgMembersInput in = cluster("pg-2", HAPG_ROLE_REPLICA, true);
	HapgMemberView mv[HAPG_MAX_MEMBERS];
	HapgLeaderPos lp = hapg_leader_pos(&in);
	int			n = hapg_build_members(&in, mv, HAPG_MAX_MEMBERS);

	CHECK(n == 3);
	CHECK(!lp.i_lead && lp.known && lp.lsn == 0x3000);
	/* the leader: its position from its own renewal */
	CHECK(mv[0].is_leader);
	CHECK(mv[0].lsn == 0x3000 && mv[0].timeline == 2);
	CHECK(mv[0].last_seen == LEASE_SEEN);
	CHECK_STR(mv[0].state, "running");
	/* pg-1: from the Lease's members */
	CHECK(mv[1].has_lsn && mv[1].streaming && mv[1].lsn == 0x2f00);
	CHECK(mv[1].last_seen == LEASE_SEEN);
	/* me: first hand, even though the Lease does not list me */
	CHECK(mv[2].has_lsn && mv[2].streaming && mv[2].replica);
	CHECK(mv[2].lsn == 0x3100);
	CHECK_STR(mv[2].state, "streaming");
}

/* Without any leader position, a Pod's status is all there is. */
TEST(no_leader_position_keeps_pod_status)
{
	HapgMembersInput in = cluster("pg-2", HAPG_ROLE_REPLICA, true);
	HapgMemberView mv[HAPG_MAX_MEMBERS];
	HapgLeaderPos lp;

	lease.has_leader_lsn = false;
	lease.npos = 0;
	lp = hapg_leader_pos(&in);
	CHECK(!lp.known && lp.lsn == 0);
	CHECK(hapg_build_members(&in, mv, HAPG_MAX_MEMBERS) == 3);
	CHECK_STR(mv[1].state, "streaming");
	CHECK(!mv[1].has_lsn);
	CHECK(mv[0].lsn == 0x1000);	/* the leader Pod's own status */
	CHECK(mv[0].last_seen == 100);
}

/* "Do I lead" has one answer: the Lease role on a server out of recovery. */
TEST(leading_needs_a_writable_server)
{
	HapgMembersInput in = cluster("pg-0", HAPG_ROLE_LEADER, true);
	HapgMemberView mv[HAPG_MAX_MEMBERS];
	HapgLeaderPos lp = hapg_leader_pos(&in);

	CHECK(!hapg_self_leads(&in.self));
	CHECK(!lp.i_lead && lp.lsn == 0x3000);
	hapg_build_members(&in, mv, HAPG_MAX_MEMBERS);
	/* positions come from the Lease, not from a standby's walsenders */
	CHECK(mv[1].lsn == 0x2f00);
	CHECK_STR(mv[2].state, "disconnected");
	in.self.in_recovery = false;
	CHECK(hapg_self_leads(&in.self));
}

/* A Pod being deleted is shown, but no decision counts on it. */
TEST(deleting_members_are_shown_not_decided_on)
{
	HapgMembersInput in = cluster("pg-0", HAPG_ROLE_LEADER, false);
	HapgMemberView mv[HAPG_MAX_MEMBERS];
	int			n;

	pods[1].deleting = true;
	n = hapg_build_members(&in, mv, HAPG_MAX_MEMBERS);
	CHECK(n == 3 && mv[1].deleting);
	n = hapg_members_for_decision(mv, n);
	CHECK(n == 2);
	CHECK_STR(mv[0].name, "pg-0");
	CHECK_STR(mv[1].name, "pg-2");
}

/* A stale Pod claiming leadership without the Lease is no replica, and disconnected. */
TEST(stale_leader_pod)
{
	HapgMembersInput in = cluster("pg-1", HAPG_ROLE_REPLICA, true);
	HapgMemberView mv[HAPG_MAX_MEMBERS];

	strcpy(lease.view.holder, "pg-1");
	in.self.role = HAPG_ROLE_LEADER;
	hapg_build_members(&in, mv, HAPG_MAX_MEMBERS);
	CHECK(!mv[0].is_leader && !mv[0].replica);
	CHECK_STR(mv[0].state, "disconnected");
	CHECK_STR(mv[0].role, "replica");
	CHECK(mv[1].is_leader);
}

/* At most max rows. */
TEST(view_is_bounded)
{
	HapgMembersInput in = cluster("pg-0", HAPG_ROLE_LEADER, false);
	HapgMemberView mv[2];

	CHECK(hapg_build_members(&in, mv, 2) == 2);
}

/* The role label Services select on, and the role in the status. */
TEST(pod_role_label_rule)
{
	HapgSelf	s;

	memset(&s, 0, sizeof(s));
	s.role = HAPG_ROLE_LEADER;
	CHECK_STR(hapg_pod_role_label(&s, 2), "primary");
	CHECK_STR(hapg_pod_role(&s), "leader");
	/* a leader still in recovery (promoting) has no label yet */
	s.in_recovery = true;
	CHECK(hapg_pod_role_label(&s, 2) == NULL);
	CHECK_STR(hapg_pod_role(&s), "leader");
	/* a streaming standby on the leader's timeline, or without one known */
	s.role = HAPG_ROLE_REPLICA;
	s.streaming = true;
	s.timeline = 2;
	CHECK_STR(hapg_pod_role_label(&s, 2), "replica");
	CHECK_STR(hapg_pod_role_label(&s, 0), "replica");
	CHECK_STR(hapg_pod_role(&s), "replica");
	/* one that forked off the leader's history */
	CHECK(hapg_pod_role_label(&s, 3) == NULL);
	/* not streaming */
	s.streaming = false;
	CHECK(hapg_pod_role_label(&s, 2) == NULL);
	/* a primary without the Lease */
	s.in_recovery = false;
	s.role = HAPG_ROLE_UNLEASED_PRIMARY;
	CHECK(hapg_pod_role_label(&s, 2) == NULL);
	CHECK_STR(hapg_pod_role(&s), "primary_without_lease");
	s.role = HAPG_ROLE_UNKNOWN;
	CHECK_STR(hapg_pod_role(&s), "unknown");
}

void
run_members_tests(void)
{
	RUN(leader_view_from_walsenders);
	RUN(replica_view_from_the_lease);
	RUN(no_leader_position_keeps_pod_status);
	RUN(leading_needs_a_writable_server);
	RUN(deleting_members_are_shown_not_decided_on);
	RUN(stale_leader_pod);
	RUN(view_is_bounded);
	RUN(pod_role_label_rule);
}
