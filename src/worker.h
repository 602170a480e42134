/*
 * worker.h
 *		The hapg background worker's state, one struct passed around, and
 *		the functions its files share.
 *
 * worker.c runs the loop of phases; view.c keeps the Lease and Pod caches;
 * kwrite.c makes every Kubernetes write; act.c carries out decided actions
 * and the local ones (follow, slots, switchover, hand-over); request.c
 * serves SQL requests; shmem.c publishes the state for SQL.
 */
#ifndef HAPG_WORKER_H
#define HAPG_WORKER_H

#include "hapg.h"
#include "failsafe.h"
#include "kube.h"
#include "members.h"

#define HAPG_MAX_CAS_ATTEMPTS 3

/* The Lease as last read; the raw object is kept so a replace preserves it. */
typedef struct HapgLeaseCache
{
	bool		valid;			/* a read succeeded and no watch gap since */
	bool		fresh;			/* read (or watched) during this cycle */
	json_object *obj;			/* NULL if the Lease does not exist */
	HapgLeaseInfo info;
	int64		observed_ms;	/* expiry clock: when its holder last renewed */
	TimestampTz observed_at;	/* the same moment, wall clock, for SQL */
	char		watch_rv[HAPG_RV_LEN];
} HapgLeaseCache;

/* The member Pods, sorted by name. */
typedef struct HapgPodCache
{
	bool		valid;
	int			n;
	HapgPodInfo pods[HAPG_MAX_MEMBERS];
	TimestampTz seen_at[HAPG_MAX_MEMBERS];
	char		rv[HAPG_RV_LEN];
} HapgPodCache;

/* Failsafe mode, the worker's side (heartbeat.c); the rules are failsafe.c's. */
typedef struct HapgFailsafeState
{
	/* leader: whom a proof must hear, and what it heard */
	char		required[HAPG_MAX_MEMBERS][HAPG_NAME_LEN];	/* every list possibly in the Lease */
	int			nrequired;
	char		writing[HAPG_MAX_MEMBERS][HAPG_NAME_LEN];	/* the list of the write under way */
	int			nwriting;
	bool		published;		/* every version of the Lease I may hold carries a list */
	HapgBeats	beats;
	int64		last_beat_ms;
	int64		until_ms;		/* the proof's end, 0: none */
	bool		active;			/* writable past the fence deadline on the proof */
	TimestampTz active_since;
	char		why[HAPG_MSG_LEN];	/* without a proof: why not */
	/* every member: the last new WAL received from the leader */
	XLogRecPtr	rcv_written;	/* the WAL receiver's write position, as last read */
	int64		heard_ms;		/* when that moved (or the worker started) */
	bool		took_failsafe;	/* my Lease was taken from a failsafe holder */
	char		held_term[HAPG_RV_LEN];	/* the expired Lease I last said I leave alone */
} HapgFailsafeState;

/* Synchronous replication, the worker's side (syncwork.c); the rules are syncrep.c's. */
typedef struct HapgSyncWork
{
	HapgSyncSet config;			/* synchronous_standby_names as this leader set it */
	char		written[2048];	/* the string written for it */
	int64		written_ms;
	int64		in_force_ms;	/* when it was seen in force, 0: not yet */
	uint64		sync_point;		/* the flush position once in force, 0: not yet */
	bool		want_publish;	/* the next step is a publication: renew soon */
	int64		publish_try_ms; /* when a Lease write last carried one */
	int			nseen;			/* standbys last seen streaming: their grace period */
	char		seen_name[HAPG_MAX_MEMBERS][HAPG_NAME_LEN];
	int64		seen_ms[HAPG_MAX_MEMBERS];
	uint64		seen_flush[HAPG_MAX_MEMBERS];
	char		last_why[HAPG_MSG_LEN];	/* the last step, logged once */
} HapgSyncWork;

/* Everything the worker remembers; no other mutable state in the worker. */
typedef struct HapgWorker
{
	HapgConfig	cfg;			/* settings in force (settings.c) */
	HapgLocalState local;		/* this server, read each cycle (pgstate.c) */
	int64		loop_count;
	bool		wake;			/* run a cycle at the next pass */
	int64		next_cycle_ms;	/* the next cycle is due then at the latest */
	int64		cycle_started_ms;	/* when the last cycle began */

	/* what this member knows of the cluster (view.c) */
	HapgLeaseCache lease;
	HapgPodCache pods;
	KubeClient	kube;			/* the API client (kube.c); watches point into it */
	KubeWatch  *lease_watch;
	KubeWatch  *pod_watch;
	int64		lease_watch_retry_ms;
	int64		pod_watch_retry_ms;
	int64		lease_event_ms; /* last time the Lease watch or a read said anything */
	int64		lease_watch_heard_ms;	/* last time the Lease watch itself did */

	/* this cycle's observation (worker.c, phase_observe) */
	bool		lease_known;	/* the decision may trust the Lease view */
	bool		pod_exists;		/* my Pod exists, as far as we can tell */
	HapgPodInfo *my_pod;		/* in pods, or NULL */
	bool		pod_missing_logged;

	/* the lease decision's memory between cycles */
	bool		was_leader;
	int64		last_renew_sent_ms; /* send time of my last successful write */
	char		last_renew_time[40];	/* its renewTime as the API stored it, or "" */
	HapgRole	role;
	int64		expires_in_ms;
	int64		decision_wake_ms;	/* decide again at this time (0: no wish) */
	HapgCandidate election_peers[HAPG_MAX_MEMBERS];

	/* failover and hand-over (act.c) */
	bool		promoting;		/* won the Lease as a standby, promotion asked */
	int64		promote_asked_ms;
	HapgHistoryEntry pending_history;	/* goes into the next Lease write */
	bool		have_pending_history;
	char		candidacy_term[HAPG_RV_LEN];	/* term of my published candidacy */
	int64		candidacy_sent_ms;
	uint64		candidacy_lsn;
	bool		election_standing;	/* a candidacy published, its election unsettled (metrics) */
	bool		fenced;			/* the postmaster was told to stop */
	bool		handing_over;	/* stopping for a hand-over; the child releases */
	int64		handover_not_before_ms; /* let a local caller get its answer first */
	char		switchover_wait_why[HAPG_MSG_LEN];	/* last logged reason to wait */
	int64		not_streaming_since_ms;
	int64		recovery_poked_ms;	/* last time the startup process was woken */
	HapgFollowMemory follow;	/* what follow.c wrote and saw (slots) */

	/* my Pod as I last published it (kwrite.c) */
	char		published_key[512];
	int64		stream_lost_ms;

	/* Kubernetes API health, for hapg_status() (view.c) */
	bool		api_ok;
	char		last_error[HAPG_MSG_LEN];
	int64		logged_error_ms;
	int64		outage_start_ms;	/* first error of the current outage, or 0 */

	HapgFailsafeState fs;		/* failsafe mode (heartbeat.c) */
	HapgSyncWork sync;			/* synchronous replication (syncwork.c) */
	bool		leaving;		/* shutting down: not a synchronous standby any more */

	MemoryContext loop_cxt;		/* reset after every pass of the loop */
} HapgWorker;

/* worker.c */
extern void hapg_wake_by(HapgWorker *w, int64 at);
extern void hapg_decide_now(HapgWorker *w, HapgDecisionInput *in, HapgDecision *d);

/* view.c: the caches, reads, watches; API error reporting */
extern void hapg_api_error(HapgWorker *w, const char *fmt,...) pg_attribute_printf(2, 3);
extern void hapg_api_cycle_done(HapgWorker *w);
extern void hapg_view_start(HapgWorker *w);
extern void hapg_view_forget(HapgWorker *w);
extern void hapg_adopt_lease(HapgWorker *w, json_object *obj, int64 sent_ms,
							 int64 arrived_ms, bool own_write);
extern bool hapg_read_lease(HapgWorker *w);
extern bool hapg_list_pods(HapgWorker *w);
extern void hapg_refresh_view(HapgWorker *w);
extern int64 hapg_lease_watch_quiet_at(HapgWorker *w);
extern void hapg_ensure_watches(HapgWorker *w, int64 now);
extern void hapg_cache_pod(HapgWorker *w, const HapgPodInfo *p, bool deleted);
extern HapgPodInfo *hapg_find_pod(HapgWorker *w, const char *name);
extern char *hapg_holder_conninfo(HapgWorker *w);
extern HapgSelf hapg_self(HapgWorker *w);
extern int	hapg_member_view(HapgWorker *w, HapgMemberView *mv, bool for_decision,
							 HapgLeaderPos *lp);
extern int64 hapg_fence_deadline(HapgWorker *w);

/* kwrite.c: every write to the Kubernetes API */
extern long hapg_write_lease(HapgWorker *w, const HapgDecision *d, int64 *sent_ms);
extern long hapg_edit_lease(HapgWorker *w, const HapgLeaseEdit *e, char *err, int errlen);
extern bool hapg_publish_candidacy(HapgWorker *w, const HapgDecision *d);
extern void hapg_publish_pod(HapgWorker *w, HapgPodInfo *pod);
extern void hapg_clear_stale_primary_labels(HapgWorker *w);

/* act.c: carrying out the decided action, and the local actions */
typedef enum HapgActOutcome
{
	HAPG_DONE = 0,				/* the decision stands */
	HAPG_DECIDE_AGAIN,			/* the view changed: decide again on it */
	HAPG_VIEW_STALE,			/* decide once more with the Lease unknown */
	HAPG_STOPPED				/* this server is being stopped */
} HapgActOutcome;

extern HapgActOutcome hapg_execute(HapgWorker *w, const HapgDecisionInput *in,
								   const HapgDecision *d);
extern HapgActOutcome hapg_act_fence(HapgWorker *w, const HapgDecisionInput *in,
									 const HapgDecision *d);
extern void hapg_fence_overdue(HapgWorker *w);
extern void hapg_log_action_table(int elevel);
extern void hapg_check_promotion(HapgWorker *w);
extern void hapg_run_switchover(HapgWorker *w);
extern void hapg_follow_leader(HapgWorker *w);
extern void hapg_keep_slots(HapgWorker *w, bool leader);
extern void hapg_on_shutdown_request(HapgWorker *w);
extern void hapg_forget_cancelled_handover(void);

/* heartbeat.c: failsafe mode's heartbeats, proof and patience */
extern void hapg_failsafe_start(HapgWorker *w);
extern void hapg_failsafe_note_heard(HapgWorker *w);
extern char *hapg_failsafe_before_write(HapgWorker *w, bool holding);
extern void hapg_failsafe_after_write(HapgWorker *w, bool stored);
extern void hapg_failsafe_round(HapgWorker *w);
extern void hapg_failsafe_log_hold(HapgWorker *w, const HapgDecision *d);
extern int64 hapg_failsafe_until(HapgWorker *w);
extern int64 hapg_failsafe_hold(HapgWorker *w, int64 now);
extern int64 hapg_failsafe_hold_until(HapgWorker *w);
extern int64 hapg_failsafe_wait_ms(HapgWorker *w, int64 now);

/* syncwork.c: synchronous replication */
extern void hapg_sync_start(HapgWorker *w);
extern char *hapg_sync_before_write(HapgWorker *w, const HapgDecision *d);
extern bool hapg_sync_before_promote(HapgWorker *w);
extern void hapg_sync_round(HapgWorker *w);
extern int64 hapg_sync_wait_ms(HapgWorker *w);
extern void hapg_sync_leave(HapgWorker *w);

/* request.c: the worker's side of the SQL request channel */
extern void hapg_serve_requests(HapgWorker *w);

/* shmem.c: the state SQL reads, and writable_until for every backend */
extern void hapg_publish_shared(HapgWorker *w);
extern void hapg_publish_api_error(HapgWorker *w);
extern void hapg_publish_writable(HapgWorker *w, bool leader);

#endif							/* HAPG_WORKER_H */
