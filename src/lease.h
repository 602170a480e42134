/*
 * lease.h
 *		The lease protocol's decision: given what this member observed, what
 *		should it do?  Pure C with no PostgreSQL or I/O dependency, so the
 *		unit tests in tests/unit can drive it directly.
 */
#ifndef HAPG_LEASE_H
#define HAPG_LEASE_H

#include <stdbool.h>
#include <stdint.h>

#include "common.h"
#include "syncrep.h"

/* A member's position as the leader saw it from its walsender. */
typedef struct HapgMemberPos
{
	char		name[HAPG_NAME_LEN];
	uint64_t	lsn;
	char		state[HAPG_WORD_LEN];
	uint64_t	write_lsn;		/* received (a walsender's write), 0 if unknown */
} HapgMemberPos;

#define HAPG_MAX_HISTORY 16

/* One leader change, as kept in the Lease's hapg.io/history annotation. */
typedef struct HapgHistoryEntry
{
	int			old_timeline;
	int			new_timeline;
	uint64_t	lsn;
	char		reason[128];
	char		time[40];
	char		leader[HAPG_NAME_LEN];
} HapgHistoryEntry;

/* What this member is, as far as the cluster is concerned. */
typedef enum HapgRole
{
	HAPG_ROLE_UNKNOWN = 0,		/* not configured, no Pod, or not yet decided */
	HAPG_ROLE_LEADER,			/* primary holding the Lease */
	HAPG_ROLE_REPLICA,			/* standby (streaming or not) */
	HAPG_ROLE_UNLEASED_PRIMARY	/* primary without the Lease */
} HapgRole;

/* The action, if any, the decision asks for. */
typedef enum HapgAction
{
	HAPG_ACT_NONE = 0,
	HAPG_ACT_CREATE,			/* no Lease object: create one naming me */
	HAPG_ACT_ACQUIRE,			/* expired or released Lease: CAS it to me */
	HAPG_ACT_RENEW,				/* my Lease: CAS a renewal */
	HAPG_ACT_CANDIDACY,			/* publish my position for this election */
	HAPG_ACT_RELEASE,			/* give the Lease up at once (data dir lost) */
	HAPG_ACT_FENCE				/* stop this primary: it must not take writes */
} HapgAction;

#define HAPG_NUM_ACTIONS (HAPG_ACT_FENCE + 1)

/* The Lease as this member last read it, plus when it saw it change. */
typedef struct HapgLeaseView
{
	bool		known;			/* a read succeeded (exists is meaningful) */
	bool		exists;			/* the object exists */
	char		holder[HAPG_NAME_LEN];	/* "" = released */
	char		resource_version[HAPG_RV_LEN];
	int			duration_s;		/* spec.leaseDurationSeconds */
	int			transitions;	/* spec.leaseTransitions */
	char		renew_time[40]; /* spec.renewTime, only compared for change */
	int64_t		observed_ms;	/* monotonic ms when the holder was last seen renewing */
} HapgLeaseView;

/* Another member's published position in the current election. */
typedef struct HapgCandidate
{
	char		name[HAPG_NAME_LEN];
	bool		published;		/* it published a candidacy for this term */
	bool		eligible;
	uint64_t	lsn;
	uint32_t	timeline;
	int			priority;
} HapgCandidate;

/* Everything the decision needs; filled by the worker, never read live. */
typedef struct HapgDecisionInput
{
	int64_t		now_ms;			/* monotonic clock */
	const char *me;				/* this member's name */
	bool		in_recovery;	/* local server is a standby */
	bool		starting;		/* still in start-up recovery */
	bool		pod_exists;		/* my Pod exists: otherwise I take no part */
	bool		datadir_ok;		/* the data directory is still there */
	int			ttl_s;			/* hapg.ttl */
	int			retry_timeout_s;	/* hapg.retry_timeout */
	bool		was_leader;		/* I held the Lease after my last loop */
	int64_t		last_renew_sent_ms; /* when my last successful write was sent */
	int64_t		renew_interval_ms;	/* renew no more often than this (loop_wait) */
	int64_t		fence_margin_ms;	/* fence this long before the Lease ends */
	HapgLeaseView lease;

	/* failover */
	bool		promoting;		/* I won an election and asked to promote */
	bool		nofailover;		/* hapg.nofailover */
	int			priority;		/* hapg.failover_priority (0 = never) */
	uint64_t	max_lag;		/* hapg.maximum_lag_on_failover, bytes */
	uint64_t	my_lsn;
	uint32_t	my_timeline;
	bool		has_leader_lsn;	/* the Lease carries the leader's position */
	uint64_t	leader_lsn;
	uint32_t	leader_timeline;
	const char *candidacy_term; /* term of my published candidacy, "" if none */
	int64_t		candidacy_sent_ms;
	int64_t		settle_ms;		/* how long to wait for others' candidacies */
	int			ncand;
	const HapgCandidate *cand;	/* the other members, except the old holder */

	/* steering (hapg_pause, hapg_switchover, hapg_failover, clean stop) */
	bool		paused;			/* nobody promotes or fences on its own */
	bool		has_handover;	/* released for a hand-over to handover_to */
	const char *handover_to;
	uint64_t	handover_lsn;	/* the target must have received this much */

	/* failsafe mode (failsafe.c) */
	int64_t		failsafe_until_ms;	/* a leader's proof: writable until then (0: none) */
	int64_t		failsafe_hold_ms;	/* hapg_failsafe_hold_ms: leave an expired Lease alone */

	/* synchronous replication (syncrep.c): the set the Lease publishes, or NULL */
	const HapgSyncSet *sync;
} HapgDecisionInput;

typedef struct HapgDecision
{
	HapgAction	action;
	HapgRole	role;			/* role after the action succeeds */
	bool		promote;		/* after ACQUIRE: promote this standby */
	bool		eligible;		/* with CANDIDACY: may I be promoted? */
	bool		lost_lease;		/* I was leader and someone else holds it now */
	bool		renew_overdue;	/* I am leader but my last renewal is too old */
	bool		failsafe_held;	/* an expired Lease left alone (failsafe mode) */
	int64_t		expires_in_ms;	/* time left on the Lease as I judge it */
	int64_t		wake_in_ms;		/* decide again after this long (-1: no wish) */
	char		term[HAPG_RV_LEN];	/* election term: the expired Lease's version */
	const char *reason;			/* short static explanation, for logs */
} HapgDecision;

extern bool hapg_candidate_better(const HapgCandidate *a, const HapgCandidate *b);
extern bool hapg_lease_expired(const HapgLeaseView *lease, int64_t now_ms,
							   int64_t *expires_in_ms);
extern void hapg_lease_decide(const HapgDecisionInput *in, HapgDecision *out);
extern const char *hapg_role_name(HapgRole role);
extern const char *hapg_action_name(HapgAction action);
extern const char *hapg_action_does(HapgAction action);
extern int64_t hapg_fence_margin_ms(int ttl_s);
extern int64_t hapg_fence_deadline_ms(int64_t last_renew_sent_ms, int ttl_s,
									  int64_t fence_margin_ms);
extern bool hapg_lease_clock_restarts(const HapgLeaseView *seen,
									  const HapgLeaseView *next);
extern int64_t hapg_lease_observed_ms(const HapgLeaseView *seen,
									 const HapgLeaseView *next,
									 int64_t sent_ms, int64_t arrived_ms,
									 bool own_write);
extern bool hapg_handover_may_release(const HapgLeaseView *now, const char *me,
									  const char *last_renew_time,
									  const char **why);
extern bool hapg_write_still_valid(int64_t sent_ms, int64_t arrived_ms,
								   int ttl_s, int64_t fence_margin_ms);
extern int64_t hapg_lease_quiet_at(int64_t last_heard_ms, int loop_wait_s);
extern int64_t hapg_quiet_wake_ms(int64_t quiet_at_ms, int64_t last_cycle_ms);
extern int64_t hapg_rewind_patience_ms(int ttl_s);
extern bool hapg_past_fork(const HapgHistoryEntry *history, int nhistory,
						   uint32_t my_timeline, uint64_t my_lsn);
extern bool hapg_rewind_due(int64_t not_streaming_since_ms, int64_t now_ms,
							int ttl_s, int leader_timeline,
							uint32_t my_timeline);

/*
 * What the worker's loop does after every wait, in this order
 * (hapg_wake_plan): the order is a rule like any other, so it is data.
 */
typedef enum HapgStep
{
	HAPG_STEP_FENCE,			/* past the fence deadline: fence on what is known */
	HAPG_STEP_SIGNALS,			/* SIGTERM (hand over, exit), SIGHUP (reload) */
	HAPG_STEP_IDLE,				/* no usable settings: requests, then wait */
	HAPG_STEP_EVENTS,			/* buffered watch events */
	HAPG_STEP_REQUESTS,			/* SQL requests */
	HAPG_STEP_CYCLE,			/* observe, decide, act, publish, when due */
	HAPG_STEP_WAIT				/* sleep until the next cycle, a latch or an event */
} HapgStep;

#define HAPG_MAX_STEPS 8

typedef struct HapgWakeInput
{
	bool		ready;			/* the settings are usable */
	bool		fenced;			/* the postmaster was told to stop */
	int64_t		fence_deadline_ms;	/* hapg_fence_deadline_ms, 0: no Lease held */
	int64_t		now_ms;
	bool		paused;			/* nobody fences for want of a renewal */
} HapgWakeInput;

extern bool hapg_fence_due(int64_t fence_deadline_ms, int64_t now_ms, bool paused);
extern int	hapg_wake_plan(const HapgWakeInput *in, HapgStep *steps);
extern const char *hapg_step_name(HapgStep step);

#endif							/* HAPG_LEASE_H */
