/*
 * commitrule.h
 *		When may this server acknowledge a commit?  The rule the commit guard
 *		(commitguard.c) applies in every backend and the value the worker
 *		publishes for it.  Pure C with no PostgreSQL dependency, so the unit
 *		tests in tests/unit drive it directly.
 */
#ifndef HAPG_COMMITRULE_H
#define HAPG_COMMITRULE_H

#include <stdbool.h>
#include <stdint.h>

/*
 * writable_until, in microseconds on hapg's clock (hapg_clock_us): commits
 * are accepted while now <= writable_until.  Two special values:
 * UNGUARDED when hapg is not in charge of this server (stock PostgreSQL),
 * NEVER when it is and this member is not the leader.
 */
#define HAPG_WRITABLE_UNGUARDED UINT64_MAX
#define HAPG_WRITABLE_NEVER ((uint64_t) 0)

/* What the worker knows when it publishes writable_until. */
typedef struct HapgWritableInput
{
	bool		configured;		/* the settings are complete: the worker is in charge */
	bool		in_cluster;		/* the cluster's Lease exists (unread: hapg.joined) */
	bool		leader;			/* the decision says this member holds the Lease */
	bool		other_holds;	/* the Lease as last seen names another holder */
	bool		fenced;			/* the postmaster was told to stop */
	int64_t		last_renew_sent_ms; /* when the last successful Lease write was sent; 0 = none */
	int			ttl_s;			/* hapg.ttl */
	int64_t		fence_margin_ms;	/* hapg_fence_margin_ms(ttl) */
	int64_t		failsafe_until_ms;	/* failsafe proof's end (failsafe.c); 0: none */
	int64_t		hold_until_ms;	/* took a failsafe Lease: no writes before (0: none) */
	int64_t		now_ms;			/* monotonic, for the hold */
} HapgWritableInput;

/* What the commit guard knows about one transaction at commit. */
typedef struct HapgCommitInput
{
	uint64_t	writable_until_us;	/* as published by the worker */
	uint64_t	now_us;			/* hapg_clock_us() at the check */
	bool		enabled;		/* hapg.lease_bounded_commits */
	bool		writes;			/* the transaction has an XID (or commits a prepared one) */
	bool		bounded_reads;	/* hapg.lease_bounded_reads, for a read */
	bool		primary;		/* this server is not in recovery */
} HapgCommitInput;

extern uint64_t hapg_clock_us(void);
extern uint64_t hapg_writable_until(const HapgWritableInput *in);
extern bool hapg_commit_allowed(const HapgCommitInput *in);

#endif							/* HAPG_COMMITRULE_H */
