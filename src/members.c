/*
 * members.c
 *		The member view, and what this member says about itself on its Pod.
 *
 * hapg_members (publish_shared) and every decision taken on members
 * (hapg_judge_request, hapg_plan_switchover, the shutdown hand-over) use
 * the one view built here, so the SQL view shows what the decisions see.
 * A leader knows the replicas' streaming state first hand (its
 * walsenders); the others take it from the leader's last renewal.  Pure C:
 * no I/O, no clock; unit tested in tests/unit/test_members.c.
 */
#include "members.h"

#include <stdio.h>
#include <string.h>

/* Am I the writable leader?  The one answer to "do I lead" for the view. */
bool
hapg_self_leads(const HapgSelf *self)
{
	return self->role == HAPG_ROLE_LEADER && !self->in_recovery;
}

/* The leader's position: mine when I lead, else the Lease's. */
HapgLeaderPos
hapg_leader_pos(const HapgMembersInput *in)
{
	HapgLeaderPos lp;

	lp.i_lead = hapg_self_leads(&in->self);
	lp.known = lp.i_lead || in->lease->has_leader_lsn;
	lp.lsn = lp.i_lead ? in->self.lsn :
		in->lease->has_leader_lsn ? in->lease->leader_lsn : 0;
	return lp;
}

/* The position the leader reported for a member, or NULL. */
static const HapgMemberPos *
reported_pos(const HapgMembersInput *in, bool i_lead, const char *name)
{
	const HapgMemberPos *pos = i_lead ? in->self.senders : in->lease->pos;
	int			npos = i_lead ? in->self.nsenders : in->lease->npos;
	int			i;

	for (i = 0; i < npos; i++)
		if (strcmp(pos[i].name, name) == 0)
			return &pos[i];
	return NULL;
}

/* One member's row: what its Pod says, corrected by what is known better. */
static void
build_one(const HapgMembersInput *in, const HapgLeaderPos *lp, int i,
		  HapgMemberView *m)
{
	const HapgPodInfo *p = &in->pods[i];
	const HapgLeaseInfo *li = in->lease;
	bool		me = strcmp(p->name, in->self.name) == 0;
	const HapgMemberPos *pos;

	memset(m, 0, sizeof(*m));
	snprintf(m->name, sizeof(m->name), "%s", p->name);
	snprintf(m->pod_role_label, sizeof(m->pod_role_label), "%s", p->role_label);
	m->deleting = p->deleting;
	m->is_leader = li->view.exists && strcmp(li->view.holder, p->name) == 0;
	snprintf(m->role, sizeof(m->role), "%s", m->is_leader ? "leader" : "replica");
	m->has_status = p->has_status;
	m->has_settings = p->has_status || me;
	m->replica = p->has_status && strcmp(p->role, "replica") == 0;
	m->nofailover = p->nofailover;
	m->nosync = p->nosync;
	m->priority = p->has_status ? p->priority : 0;
	snprintf(m->state, sizeof(m->state), "%s", p->has_status ? p->state : "unknown");
	snprintf(m->connect_address, sizeof(m->connect_address), "%s", p->connect_address);
	m->timeline = p->timeline;
	m->lsn = p->lsn;
	m->last_seen = in->pod_seen_at[i];

	if (me)
	{
		/* myself I know first hand */
		snprintf(m->state, sizeof(m->state), "%s", in->self.state);
		snprintf(m->connect_address, sizeof(m->connect_address), "%s",
				 in->self.connect_address);
		m->replica = in->self.in_recovery;
		m->nofailover = in->self.nofailover;
		m->nosync = in->self.nosync;
		m->priority = in->self.priority;
		m->timeline = (int) in->self.timeline;
		m->lsn = in->self.lsn;
		m->has_lsn = in->self.in_recovery;
		m->streaming = in->self.in_recovery && in->self.streaming;
		m->last_seen = in->now;
		return;
	}
	if (m->is_leader && li->has_leader_lsn)
	{
		/* the leader's own renewal carries its position */
		m->lsn = li->leader_lsn;
		m->timeline = li->leader_timeline;
		m->last_seen = in->lease_seen_at;
		return;
	}
	pos = reported_pos(in, lp->i_lead, p->name);
	if (pos)
	{
		m->has_lsn = true;
		m->lsn = pos->lsn;
		m->streaming = strcmp(pos->state, "streaming") == 0;
		snprintf(m->state, sizeof(m->state), "%s", pos->state);
		m->last_seen = lp->i_lead ? in->now : in->lease_seen_at;
	}
	else if (lp->known && p->has_status && !m->is_leader)
	{
		/* a member the leader does not see: its Pod status is old news */
		snprintf(m->state, sizeof(m->state), "disconnected");
	}
}

/*
 * Every cached member Pod, in the cache's order (sorted by name), into
 * out[max]; returns how many.
 */
int
hapg_build_members(const HapgMembersInput *in, HapgMemberView *out, int max)
{
	HapgLeaderPos lp = hapg_leader_pos(in);
	int			n = 0;
	int			i;

	for (i = 0; i < in->npods && n < max; i++)
	{
		HapgMemberView *m = &out[n++];

		build_one(in, &lp, i, m);
		/* as the Lease publishes it: what a failover may count on */
		snprintf(m->sync_state, sizeof(m->sync_state), "%s", m->is_leader ? "" :
				 hapg_sync_state_of(&in->lease->sync, m->name, m->streaming, m->nosync));
	}
	return n;
}

/* Drop the members whose Pods are being deleted: no decision counts on them. */
int
hapg_members_for_decision(HapgMemberView *mv, int n)
{
	int			kept = 0;
	int			i;

	for (i = 0; i < n; i++)
		if (!mv[i].deleting)
			mv[kept++] = mv[i];
	return kept;
}

/*
 * The role label on my Pod, for Services to select on: primary on the
 * writable leader, replica on a streaming standby that did not fork off the
 * leader's history, none (NULL) otherwise.
 */
const char *
hapg_pod_role_label(const HapgSelf *self, int leader_timeline)
{
	if (hapg_self_leads(self))
		return "primary";
	if (self->in_recovery && self->streaming &&
		(leader_timeline <= 0 || (int) self->timeline >= leader_timeline))
		return "replica";
	return NULL;
}

/* The role in my Pod's hapg.io/status. */
const char *
hapg_pod_role(const HapgSelf *self)
{
	if (self->role == HAPG_ROLE_LEADER)
		return "leader";
	return self->in_recovery ? "replica" : hapg_role_name(self->role);
}
