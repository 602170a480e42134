/*
 * steer.h
 *		What operators ask from SQL (switchover, failover, pause, resume):
 *		whether a request may be carried out, and when a pending switchover
 *		is due.  Pure C with no PostgreSQL or I/O dependency, unit tested in
 *		tests/unit like the lease decision.
 */
#ifndef HAPG_STEER_H
#define HAPG_STEER_H

/* a refusal on positions is judged again this often, a renewal apart */
#define HAPG_POSITION_RETRIES 2
/* what a renewal takes to reach the judge: the write and its watch event */
#define HAPG_RENEWAL_DELIVERY_MS 250

#include <stdbool.h>
#include <stdint.h>

#include "lease.h"

typedef enum HapgRequestKind
{
	HAPG_REQ_NONE = 0,
	HAPG_REQ_SWITCHOVER,
	HAPG_REQ_FAILOVER,
	HAPG_REQ_PAUSE,
	HAPG_REQ_RESUME,
	HAPG_REQ_CANCEL				/* drop a pending switchover */
} HapgRequestKind;

/*
 * One member as the deciding member knows it: what hapg_members shows and
 * what requests are judged on (built by hapg_build_members, members.c).
 */
typedef struct HapgMemberView
{
	char		name[HAPG_NAME_LEN];
	bool		has_status;		/* it published its state on its Pod */
	bool		replica;		/* in recovery */
	char		state[HAPG_WORD_LEN];	/* streaming, recovering, running... */
	bool		streaming;		/* streaming from the leader right now */
	bool		has_lsn;
	uint64_t	lsn;			/* its position as the leader last saw it */
	bool		nofailover;
	bool		nosync;			/* hapg.nosync: never a synchronous standby */
	int			priority;

	/* for hapg_members */
	bool		is_leader;		/* it holds the Lease */
	bool		deleting;		/* its Pod is being deleted */
	bool		has_settings;	/* nofailover and priority are known */
	char		role[HAPG_WORD_LEN];	/* "leader" or "replica" */
	char		connect_address[HAPG_ADDR_LEN];
	char		pod_role_label[HAPG_WORD_LEN];
	int			timeline;
	int64_t		last_seen;		/* when this was true (caller's timestamps) */
	char		sync_state[HAPG_WORD_LEN];	/* sync, quorum, potential, async; "" for the leader */
} HapgMemberView;

/* A switchover waiting in the Lease's hapg.io/switchover annotation. */
typedef struct HapgSwitchover
{
	bool		pending;
	char		from[HAPG_NAME_LEN];	/* the leader when it was asked */
	char		to[HAPG_NAME_LEN];	/* "" = the healthiest replica */
	int64_t		scheduled_at_us;	/* Unix microseconds; 0 = at once */
	int64_t		requested_at_us;
	char		requested_by[HAPG_NAME_LEN];
} HapgSwitchover;

/* Everything a request is judged on. */
typedef struct HapgRequestInput
{
	HapgRequestKind kind;
	const char *cluster;
	const char *candidate;		/* "" = none given */
	int64_t		scheduled_at_us;	/* 0 = none */
	bool		force;			/* hapg_failover(..., force): past the synchronous set */
	int64_t		now_us;			/* wall clock, Unix microseconds */
	bool		lease_exists;
	const char *holder;			/* "" = released */
	bool		lease_expired;	/* as this member judges it */
	bool		paused;
	HapgSwitchover switchover;
	bool		has_leader_lsn;
	uint64_t	leader_lsn;
	uint64_t	max_lag;
	int			nmembers;
	const HapgMemberView *members;
} HapgRequestInput;

typedef struct HapgVerdict
{
	bool		ok;
	bool		changes;		/* ok and something must be written */
	char		target[HAPG_NAME_LEN];	/* switchover/failover: who takes over */
	char		message[HAPG_MSG_LEN];	/* refusal, or what was done */
	char		detail[HAPG_MSG_LEN];
	char		hint[HAPG_MSG_LEN];
	bool		on_positions;	/* refused on replication positions, which are
								 * one renewal old: may pass at the next one */
} HapgVerdict;

/* What a leader does about a pending switchover this cycle. */
typedef enum HapgSwitchoverStep
{
	HAPG_SW_WAIT = 0,			/* not due, or the target is not ready yet */
	HAPG_SW_GO,					/* hand over to target now */
	HAPG_SW_DROP				/* stale or not ours: remove it */
} HapgSwitchoverStep;

typedef struct HapgSwitchoverPlan
{
	HapgSwitchoverStep step;
	char		target[HAPG_NAME_LEN];
	int64_t		wait_us;		/* WAIT: look again after this long (-1: next loop) */
	char		why[HAPG_MSG_LEN];
} HapgSwitchoverPlan;

extern void hapg_judge_request(const HapgRequestInput *in, HapgVerdict *out);
extern const HapgMemberView *hapg_best_replica(const HapgMemberView *members, int n,
											   const char *leader, bool has_leader_lsn,
											   uint64_t leader_lsn, uint64_t max_lag);
extern int64_t hapg_request_retry_ms(const HapgVerdict *v, int refusals,
									 int loop_wait_s);
extern void hapg_plan_switchover(const HapgSwitchover *sw, const char *me,
								 int64_t now_us, int64_t stale_us,
								 const HapgMemberView *members, int n,
								 uint64_t leader_lsn, uint64_t max_lag,
								 HapgSwitchoverPlan *out);

#endif							/* HAPG_STEER_H */
