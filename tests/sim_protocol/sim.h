/*
 * sim.h
 *		Deterministic simulation of hapg's lease protocol: the real decision
 *		code (lease.c, steer.c) driven by a simulated Kubernetes API server,
 *		simulated monotonic clocks and simulated PostgreSQL servers, all on
 *		one simulated timeline chosen by a seeded PRNG.  No real time, no
 *		sleeping: one seed is one reproducible run.
 */
#ifndef HAPG_SIM_H
#define HAPG_SIM_H

#include <stdbool.h>
#include <stdint.h>

#include "lease.h"
#include "steer.h"

#define SIM_MAX_N 7
#define SIM_TRACE_LINES 160

/* Rules the simulator may break on purpose, to show that it notices. */
typedef enum SimMutation
{
	MUT_NONE = 0,
	MUT_FENCE_LATE,				/* the leader fences one second late */
	MUT_CAS_IGNORES_RV,			/* the API server accepts any resourceVersion */
	MUT_NO_TAKEOVER,			/* a standby never takes an expired Lease */
	MUT_PROMOTING_FORGETS,		/* lease.c before the fix: a promoting winner that
								 * cannot read the API forgets it leads */
	MUT_FS_SKIP_SILENT,			/* failsafe: the proof leaves out a listed member
								 * that has no walsender */
	MUT_FS_IMPATIENT,			/* failsafe: a standby's patience is only the
								 * margin, shorter than the leader's bound */
	MUT_FS_NO_WRITE_HOLD,		/* failsafe: the taker's write hold is ignored */
	MUT_FS_TOOK_ON_ANSWER		/* act.c before the fix: took_failsafe set only
								 * when the acquire's answer arrives */
} SimMutation;

/* How one run is set up; everything else comes from the seed. */
typedef struct SimConfig
{
	uint64_t	seed;
	int64_t		max_steps;		/* events to process */
	bool		commit_guard;	/* writes refused after writable_until */
	bool		observe_at_response;	/* stamp a GET's observation when it answers */
	bool		handover_fix;
	bool		restart_without_wait;	/* the server restarts while its hand-over process runs */	/* the hand-over child releases only the renewal its server made */
	SimMutation mutation;
	bool		trace;			/* keep the last lines of the run's trace */
	bool		no_pause;		/* leave out pauses (to isolate other faults) */
	bool		whole_pauses_only;	/* pauses stop the whole member, never only the worker */
	bool		worker_stalls_only; /* pauses stop only the worker, never the server */
	bool		cut_winners;	/* cut a new Lease holder off the API right after its win */
	bool		failsafe;		/* hapg.failsafe_mode: heartbeats, proofs, a
								 * replication stream with its own delays and cuts */
} SimConfig;

/* What one run found. */
typedef struct SimResult
{
	int64_t		steps;
	int64_t		sim_ms;			/* simulated time covered */
	int			n;				/* members */
	int			ttl,
				loop_wait,
				retry_timeout;
	int64_t		faults;
	int64_t		elections;		/* successful acquisitions */
	int64_t		handovers;		/* hand-over acquisitions */
	int64_t		writes;			/* acknowledged writes */
	int64_t		lost_failover;	/* acknowledged bytes lost in failovers (allowed) */
	int64_t		quiet_periods;
	int64_t		max_recovery_ms;	/* longest wait for a leader once faults stopped */
	int64_t		checks;			/* invariant evaluations */
	int64_t		fs_beats;		/* failsafe: heartbeat records written */
	int64_t		fs_proof_ms;	/* failsafe: time leaders were writable only by a proof */
	int64_t		fs_holds;		/* failsafe: decisions that left an expired Lease alone */
	int64_t		fs_takeovers;	/* failsafe: Leases taken from a failsafe holder */
	uint64_t	digest;			/* of the whole run: same seed, same digest */
	bool		violated;
	char		violation[512];
	int64_t		violation_step;
	int			ntrace;
	char		trace[SIM_TRACE_LINES][200];
	int			trace_head;
} SimResult;

extern void sim_run(const SimConfig *cfg, SimResult *res);

#endif							/* HAPG_SIM_H */
