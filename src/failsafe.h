/*
 * failsafe.h
 *		Failsafe mode: a leader that cannot renew its Lease stays writable
 *		while streaming replication proves that no member can take over.
 *		Pure C with no PostgreSQL or I/O dependency (unit tested in
 *		tests/unit/test_failsafe.c); the timing argument is in
 *		docs/DESIGN.md, "Failsafe mode".
 */
#ifndef HAPG_FAILSAFE_H
#define HAPG_FAILSAFE_H

#include <stdbool.h>
#include <stdint.h>

#include "lease.h"

/* heartbeat records a leader remembers: enough to cover the bound */
#define HAPG_FAILSAFE_BEATS 64
/* what the replicas' patience adds to the leader's bound */
#define HAPG_FAILSAFE_MARGIN_MS 1000
/* the shortest bound worth having: a heartbeat round and its answers */
#define HAPG_FAILSAFE_MIN_BOUND_MS 2000
/*
 * the longest: a leader confirmed by every member but the one that will win
 * the election acknowledges writes that member never gets for this long
 */
#define HAPG_FAILSAFE_MAX_BOUND_MS 4000
/* an API request of a leader in failsafe ends this soon */
#define HAPG_FAILSAFE_REQUEST_MS 1000

/* One heartbeat record a leader wrote: when (before the insert), and its end. */
typedef struct HapgHeartbeat
{
	int64_t		sent_ms;
	uint64_t	end_lsn;
} HapgHeartbeat;

/* The heartbeats written, oldest first, in a ring of fixed size. */
typedef struct HapgBeats
{
	int			n;
	HapgHeartbeat beat[HAPG_FAILSAFE_BEATS];
} HapgBeats;

/* What a leader knows when it asks whether it may stay writable. */
typedef struct HapgFailsafeLeaderIn
{
	bool		enabled;		/* hapg.failsafe_mode, and its settings check passed */
	bool		published;		/* my last successful renewal carried the member list */
	bool		refused;		/* the API answered, and refused me (401, 403) */
	int			ttl_s;
	int64_t		now_ms;
	const char *me;
	int			nrequired;		/* every member that might take over */
	const char (*required)[HAPG_NAME_LEN];
	int			nsenders;		/* my walsenders: name, write_lsn */
	const HapgMemberPos *senders;
	const HapgBeats *beats;
} HapgFailsafeLeaderIn;

typedef struct HapgFailsafeProof
{
	int64_t		until_ms;		/* writable until then (monotonic); 0: no proof */
	char		why[HAPG_MSG_LEN];	/* no proof, or one that ran out: why */
} HapgFailsafeProof;

/* What a standby knows when it looks at an expired Lease. */
typedef struct HapgFailsafeReplicaIn
{
	bool		lease_failsafe; /* the Lease carries hapg.io/failsafe */
	bool		holder_named;	/* it names a holder (not released) */
	bool		manual_release; /* released by hapg_failover (hapg.io/handover lsn 0) */
	bool		holder_is_me;
	bool		me_listed;		/* I am in its member list */
	int64_t		heard_ms;		/* last new WAL from the leader seen arriving */
	int64_t		now_ms;
	int			ttl_s;
} HapgFailsafeReplicaIn;

extern int64_t hapg_failsafe_bound_ms(int ttl_s);
extern int64_t hapg_failsafe_patience_ms(int ttl_s);
extern int64_t hapg_failsafe_beat_interval_ms(int ttl_s);
extern const char *hapg_failsafe_settings_error(int ttl_s, bool lease_bounded_commits,
												int wal_receiver_status_interval_s);
extern bool hapg_failsafe_beating(bool enabled, bool published, bool leader,
								  int64_t now_ms, int64_t last_renew_sent_ms,
								  int loop_wait_s, bool api_failing);
extern void hapg_beats_add(HapgBeats *b, int64_t sent_ms, uint64_t end_lsn);
extern void hapg_failsafe_prove(const HapgFailsafeLeaderIn *in, HapgFailsafeProof *out);
extern int64_t hapg_failsafe_hold_ms(const HapgFailsafeReplicaIn *in);
extern int64_t hapg_failsafe_write_hold_until(bool took_failsafe_lease, int64_t heard_ms,
											  int ttl_s);

#endif							/* HAPG_FAILSAFE_H */
