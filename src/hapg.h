/*
 * hapg.h
 *		Declarations shared by the server-side parts of hapg.
 */
#ifndef HAPG_H
#define HAPG_H

#include "postgres.h"

#include "access/xlogdefs.h"
#include "datatype/timestamp.h"
#include "port/atomics.h"
#include "storage/lwlock.h"

#include "commitrule.h"
#include "lease.h"
#include "steer.h"

#ifndef HAPG_VERSION
#define HAPG_VERSION "1.0"
#endif

#define HAPG_SA_DIR "/var/run/secrets/kubernetes.io/serviceaccount"
#define HAPG_MAX_RESPONSE (8 * 1024 * 1024)	/* largest API body we accept */
#define HAPG_REJOIN_FILE "hapg.rejoin"	/* note to the launcher: rejoin as standby */
#define HAPG_JOINED_FILE "hapg.joined"	/* this data directory is a member's */

/*
 * PostgreSQL 15 is the oldest version hapg builds against (shmem_request_hook,
 * MarkGUCPrefixReserved, xlogrecovery.h).  Where 16 and 17 differ, the
 * difference is kept here or at a PG_VERSION_NUM guard at its one use.
 */
#if PG_VERSION_NUM < 150000
#error "hapg needs PostgreSQL 15 or later"
#endif
#if PG_VERSION_NUM >= 170000
#define HAPG_MY_PROCNO() (MyProcNumber)	/* PGPROC.pgprocno is gone in 17 */
#else
#define HAPG_MY_PROCNO() (MyProc->pgprocno)
#endif

/* Settings (settings.c). */
extern char *hapg_cluster_name;
extern char *hapg_member_name;
extern char *hapg_namespace;
extern char *hapg_kubernetes_url;
extern char *hapg_token_file;
extern char *hapg_ca_file;
extern int	hapg_ttl;
extern int	hapg_loop_wait;
extern int	hapg_retry_timeout;
extern char *hapg_connect_address;
extern char *hapg_role_label;
extern bool hapg_nofailover;
extern int	hapg_failover_priority;
extern int	hapg_maximum_lag_on_failover;
extern char *hapg_replication_conninfo;
extern bool hapg_use_slots;
extern int	hapg_switchover_timeout;
extern bool hapg_lease_bounded_commits;
extern bool hapg_lease_bounded_reads;
extern bool hapg_failsafe_mode;
extern int	hapg_synchronous_mode;	/* HapgSyncMode */
extern bool hapg_synchronous_mode_strict;
extern int	hapg_synchronous_node_count;
extern bool hapg_nosync;
extern int	hapg_maximum_lag_on_syncnode;

/* The worker's settings in force: the last valid combination (settings.c). */
typedef struct HapgConfig
{
	bool		ready;
	char		cluster[HAPG_NAME_LEN];
	char		member[HAPG_NAME_LEN];
	char		namespace[HAPG_NAME_LEN];
	char		role_label[256];
	char		connect_address[HAPG_ADDR_LEN];
	int			ttl;
	int			loop_wait;
	int			retry_timeout;
	bool		timing_valid;
	bool		failsafe;		/* hapg.failsafe_mode, and its settings hang together */
	char		config_error[HAPG_MSG_LEN];
} HapgConfig;

extern void hapg_define_settings(void);
extern bool hapg_load_config(HapgConfig *cfg, bool first);
extern bool hapg_settings_ready(char *why, int whylen);
extern const char *hapg_effective_member(void);
extern const char *hapg_effective_namespace(void);
extern const char *hapg_effective_url(void);
extern const char *hapg_effective_connect_address(void);

/* This server's state, as read from shared memory (pgstate.c). */
typedef struct HapgLocalState
{
	bool		in_recovery;
	bool		starting;		/* recovery has not replayed anything yet */
	bool		streaming;		/* WAL receiver is streaming */
	TimeLineID	timeline;
	XLogRecPtr	lsn;			/* primary: flush position; standby: max(receive, replay) */
	XLogRecPtr	replay_lsn;
	int			nsenders;
	HapgMemberPos senders[HAPG_MAX_MEMBERS];	/* walsenders by application_name */
	XLogRecPtr	rcv_written;	/* WAL receiver: written up to here (failsafe) */
} HapgLocalState;

extern void hapg_read_local_state(HapgLocalState *st);
extern const char *hapg_local_state_name(const HapgLocalState *st);

/*
 * What the worker publishes for SQL.  Only plain values: no pointers, since
 * a restarted worker or any backend must be able to read it safely.
 */
typedef struct HapgShared
{
	LWLock		lock;
	int			tranche_id;

	/*
	 * Commits are accepted while hapg_clock_us() <= writable_until (see
	 * commitrule.h for its special values).  The worker writes it with a
	 * full memory barrier (commitguard.c); every backend reads it at commit
	 * without taking the lock.
	 */
	pg_atomic_uint64 writable_until;
	pid_t		worker_pid;
	int			worker_procno;	/* to set the worker's latch; -1 if none */
	bool		configured;
	char		cluster[HAPG_NAME_LEN];
	char		member[HAPG_NAME_LEN];
	HapgRole	role;
	char		state[HAPG_WORD_LEN];
	char		leader[HAPG_NAME_LEN];
	int			lease_transitions;
	int64		lease_expires_in_ms;
	TimestampTz lease_info_at;	/* when lease_expires_in_ms was computed */
	bool		api_ok;
	char		last_error[HAPG_MSG_LEN];
	TimestampTz last_error_at;
	TimestampTz last_loop;
	int64		loop_count;
	TimeLineID	timeline;
	XLogRecPtr	lsn;
	XLogRecPtr	leader_lsn;
	bool		paused;
	HapgSwitchover switchover;	/* pending, as last read from the Lease */
	char		handover_to[HAPG_NAME_LEN];	/* Lease released to it, or "" */
	bool		failsafe_active;	/* writable past the fence deadline on a failsafe proof */
	TimestampTz failsafe_since;
	HapgSyncSet sync;			/* the synchronous set the Lease publishes */
	int			nmembers;
	HapgMemberView members[HAPG_MAX_MEMBERS];	/* the member view (members.c) */
	int			nhistory;
	HapgHistoryEntry history[HAPG_MAX_HISTORY];

	/*
	 * One SQL request at a time (both sides in request.c): a backend claims
	 * the slot (req_pid), fills it, bumps req_id and sets the worker's latch;
	 * the worker judges it, writes the Lease, fills the answer and sets
	 * req_done = req_id.
	 */
	pid_t		req_pid;
	int			req_id;
	int			req_done;
	HapgRequestKind req_kind;
	char		req_candidate[HAPG_NAME_LEN];
	int64		req_scheduled_at_us;
	bool		req_force;		/* hapg_failover(..., force => true) */
	HapgVerdict req_verdict;
	char		req_leader[HAPG_NAME_LEN];	/* the leader it was judged against */
} HapgShared;

extern HapgShared *hapg_shared;
extern void hapg_shmem_request(void);
extern void hapg_shmem_startup(void);
extern void hapg_shmem_attach(void);

/* Lease-bounded commits (commitguard.c). */
extern void hapg_commitguard_init(void);
extern void hapg_set_writable_until(uint64 writable_until);
extern uint64 hapg_read_writable_until(void);
extern uint64 hapg_initial_writable_until(void);
/* The backend's side of the request channel (request.c). */
extern void hapg_ask_worker(HapgRequestKind kind, const char *candidate,
							int64 scheduled_at_us, bool force, HapgVerdict *v, char *leader);
extern void hapg_nap(long ms);

/* Local server actions (follow.c). */
/* What follow.c remembers between calls; the worker keeps it in HapgWorker. */
typedef struct HapgSlotSeen
{
	char		name[NAMEDATALEN];	/* one of hapg's slots */
	int64		missing_since;	/* its member's Pod gone since then; 0: present */
} HapgSlotSeen;

typedef struct HapgFollowMemory
{
	char		last_conninfo[2048];	/* what hapg_follow last wrote */
	char		last_slot[NAMEDATALEN];
	HapgSlotSeen seen[HAPG_MAX_MEMBERS * 2];
	int			nseen;
} HapgFollowMemory;

extern bool hapg_datadir_ok(void);
extern bool hapg_request_promotion(char *err, int errlen);
extern void hapg_fence(const char *reason, const char *source, bool immediate);
extern void hapg_write_rejoin(const char *source, const char *reason);
extern void hapg_mark_joined(const char *cluster);
extern void hapg_slot_name(const char *member, char *buf, int buflen);
extern bool hapg_set_auto_conf(const char **names, const char **values, int n);
extern bool hapg_follow(HapgFollowMemory *fm, const char *conninfo,
						const char *slot);
extern void hapg_retry_streaming(void);
extern void hapg_sync_slots(HapgFollowMemory *fm, const char (*members)[HAPG_NAME_LEN],
							int n, const char *me, bool leader, int64 gone_ms);
extern char *hapg_leader_conninfo(const char *connect_address);
extern bool hapg_write_standby_signal(void);

/* Clean hand-over when the leader stops on purpose (handover.c). */
struct KubeClient;				/* kube.h */
extern bool hapg_start_handover(struct KubeClient *kc, const char *target,
								const char *reason, int wait_ms,
								const char *last_renew_time);

/* Start-up guard (guard.c). */
extern void hapg_startup_guard(void);

/* hapg.c */
extern void hapg_register_worker(const char *library_name, const char *function,
								 const char *name, int restart_s);

/* Background worker (worker.c). */
extern PGDLLEXPORT void hapg_worker_main(Datum arg);

/* Clocks (clock.c): monotonic for durations, wall clock for schedules. */
extern int64 hapg_mono_ms(void);
extern int64 hapg_unix_now_us(void);
extern int64 hapg_unix_us(TimestampTz ts);
extern TimestampTz hapg_timestamptz(int64 unix_us);

#endif							/* HAPG_H */
