/*
 * members.h
 *		The one member view: every member as this one knows it, for
 *		hapg_members and for the decisions taken on members (requests,
 *		switchovers, the shutdown hand-over), and what this member
 *		publishes on its own Pod.  Pure C: unit tested in
 *		tests/unit/test_members.c.
 */
#ifndef HAPG_MEMBERS_H
#define HAPG_MEMBERS_H

#include "kjson.h"

/* This member, as it knows itself first hand. */
typedef struct HapgSelf
{
	const char *name;
	HapgRole	role;			/* the decision's role for me */
	bool		in_recovery;
	bool		streaming;
	const char *state;			/* hapg_local_state_name() */
	uint32_t	timeline;
	uint64_t	lsn;
	const char *connect_address;
	bool		nofailover;
	bool		nosync;
	int			priority;
	int			nsenders;		/* my walsenders, by application_name */
	const HapgMemberPos *senders;
} HapgSelf;

/* Everything the member view is built from. */
typedef struct HapgMembersInput
{
	HapgSelf	self;
	const HapgLeaseInfo *lease; /* the Lease as last read */
	int64_t		lease_seen_at;	/* when it was read (caller's timestamps) */
	int64_t		now;			/* same clock as lease_seen_at */
	int			npods;
	const HapgPodInfo *pods;	/* the cached member Pods */
	const int64_t *pod_seen_at; /* when each was last seen */
} HapgMembersInput;

/* The leader's position the view measures lag against. */
typedef struct HapgLeaderPos
{
	bool		i_lead;			/* this member is the writable leader */
	bool		known;			/* a leader position is known */
	uint64_t	lsn;
} HapgLeaderPos;

extern bool hapg_self_leads(const HapgSelf *self);
extern HapgLeaderPos hapg_leader_pos(const HapgMembersInput *in);
extern int	hapg_build_members(const HapgMembersInput *in, HapgMemberView *out,
							   int max);
extern int	hapg_members_for_decision(HapgMemberView *mv, int n);
extern const char *hapg_pod_role_label(const HapgSelf *self, int leader_timeline);
extern const char *hapg_pod_role(const HapgSelf *self);

#endif							/* HAPG_MEMBERS_H */
