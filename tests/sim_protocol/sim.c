/*
 * sim.c
 *		The simulated world the real lease decision runs in.
 *
 * Every member runs a model of src/worker.c's loop, step for step: the same
 * order of observe (pump watch events, LIST the Pods, GET the Lease), decide
 * (hapg_lease_decide, hapg_plan_switchover: the real functions), act (one
 * compare-and-swap PUT, a candidacy PATCH, a fence, a promotion) and wait
 * (loop_wait, the decision's own wake-up, at most one second, and the
 * fence check after every wake-up).  Each HTTP call blocks the worker until
 * its answer or its deadline, as curl_easy_perform does; the API server
 * applies it at its own moment, which may be after the client gave up.
 *
 * Around the members: an API server with resourceVersions and CAS, watches
 * that deliver late, stall silently or break; per-member monotonic clocks
 * that drift (up to 500 ppm, NTP's slew limit) and jump forward (up to
 * 100 ms); whole members or only their workers paused for any length;
 * PostgreSQL servers that promote, fence (writes stop a moment later),
 * crash, restart as standbys, stream WAL or stop streaming, rewind; and a
 * client writing to whichever member accepts writes.
 *
 * With SimConfig.failsafe, hapg.failsafe_mode as well (the real rules of
 * failsafe.c, fed as heartbeat.c feeds them): the member list in the Lease,
 * heartbeats of a leader whose renewals fail, its proof from the walsenders'
 * write positions, the standbys' patience and a taker's write hold; WAL and
 * the receivers' replies then travel as messages, late, lost or cut apart
 * from the API, and the faults include long API outages, leaders alone cut
 * off, partitions and hapg_failover() of a Lease that looks expired.
 *
 * The invariants are checked after every event (see check_invariants()).
 */
#include "sim.h"
#include "failsafe.h"
#include "members.h"

/* issue 9's commit rule, once src/commitrule.c is part of the pure core */
#if defined(__has_include)
#if __has_include("commitrule.h")
#include "commitrule.h"
#define SIM_COMMITRULE 1
#endif
#endif

#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define NOWHERE (-1)
#define MAX_EVENTS_HINT 4096
#define REQ_POOL 64
#define MAX_TL 4096

/* ------------------------------------------------------------------ PRNG */

typedef struct Rng
{
	uint64_t	s;
} Rng;

/* splitmix64: small, fast, and every seed gives a different stream. */
static uint64_t
rng_next(Rng *r)
{
	uint64_t	z = (r->s += 0x9E3779B97F4A7C15ULL);

	z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ULL;
	z = (z ^ (z >> 27)) * 0x94D049BB133111EBULL;
	return z ^ (z >> 31);
}

/* Uniform in [lo, hi]. */
static int64_t
rng_range(Rng *r, int64_t lo, int64_t hi)
{
	if (hi <= lo)
		return lo;
	return lo + (int64_t) (rng_next(r) % (uint64_t) (hi - lo + 1));
}

/* True with probability pct/1000. */
static bool
rng_permille(Rng *r, int pm)
{
	return (int) (rng_next(r) % 1000) < pm;
}

/* ------------------------------------------------------------------ model */

/* The Lease object as the API server stores it. */
typedef struct SLease
{
	bool		exists;
	int64_t		rv;
	char		holder[HAPG_NAME_LEN];
	int			duration_s;
	int			transitions;
	int64_t		renew_seq;		/* stands for spec.renewTime */
	bool		has_leader_lsn;
	uint64_t	leader_lsn;
	int			leader_tl;
	bool		has_handover;
	char		ho_from[HAPG_NAME_LEN];
	char		ho_to[HAPG_NAME_LEN];
	uint64_t	ho_lsn;
	bool		sw_pending;
	char		sw_from[HAPG_NAME_LEN];
	char		sw_to[HAPG_NAME_LEN];
	int64_t		sw_requested_us;
	bool		fs_list;		/* hapg.io/failsafe is there */
	uint32_t	fs_members;		/* its member list, one bit per member */
} SLease;

/* A member Pod's candidacy annotation. */
typedef struct SPod
{
	bool		has_cand;
	char		term[HAPG_RV_LEN];
	bool		eligible;
	uint64_t	lsn;
	int			tl;
	int			prio;
} SPod;

typedef enum ReqKind
{
	RQ_GET = 1,
	RQ_PUT,
	RQ_POST,
	RQ_PATCH_CAND,
	RQ_LIST
} ReqKind;

/* One HTTP call: what was sent, and what the server made of it. */
typedef struct Req
{
	bool		used;
	int			m;				/* member; its worker generation below */
	int			gen;
	bool		child;			/* sent by the hand-over child, not the worker */
	ReqKind		kind;
	SLease		body;
	int64_t		cas_rv;
	SPod		pod;
	int64_t		sent_local;
	int64_t		timeout_ms;
	bool		done_server;	/* applied (or refused) by the server */
	int			status;			/* the server's answer */
	SLease		snap;			/* the Lease as the server answered */
	SPod		pods[SIM_MAX_N];
	bool		answered;		/* the client has its answer (or gave up) */
	bool		delivered;		/* the answer event was handled */
	bool		server_pending; /* an EV_SERVER is scheduled */
} Req;

typedef enum PgState
{
	PG_DOWN = 0,				/* stopped or crashed */
	PG_STARTING,				/* start-up recovery */
	PG_STANDBY,
	PG_PROMOTING,				/* standby asked to promote */
	PG_PRIMARY,
	PG_STOPPING					/* fence or clean stop under way */
} PgState;

/* What the worker keeps between cycles: worker.c's statics. */
typedef struct Worker
{
	bool		alive;
	int			cont;			/* where the blocked cycle resumes */
	int			req;			/* outstanding request, or NOWHERE */
	bool		idle;			/* waiting in wait_for_work */
	int64_t		wake_seq;		/* only the latest wake-up timer counts */

	bool		lease_valid;
	bool		lease_have;		/* lease_obj holds an object */
	SLease		lease;			/* lease.info; exists=false when none */
	int64_t		observed_ms;
	int64_t		lease_event_ms;
	int64_t		watch_heard_ms; /* the Lease watch's last event (not a read) */
	int64_t		watch_rv;
	bool		lease_watch;	/* the watch is open */
	bool		lease_watch_error;
	int64_t		lease_watch_retry;
	bool		pods_valid;
	bool		pod_watch;
	bool		pod_watch_error;
	int64_t		pod_watch_retry;
	SPod		pods[SIM_MAX_N];

	bool		was_leader;
	int64_t		last_renew_sent;
	HapgRole	role;
	bool		wake_cycle;
	bool		promoting;
	char		cand_term[HAPG_RV_LEN];
	int64_t		cand_sent;
	uint64_t	cand_lsn;
	bool		fenced;
	int64_t		decision_wake;
	int64_t		next_cycle;
	int64_t		cycle_started;	/* when the last cycle began */
	int64_t		not_streaming_since;
	int64_t		deadline;		/* kube_set_deadline */

	/* the cycle in progress */
	int			attempt;
	bool		lease_known;
	HapgDecision d;
	HapgDecisionInput in;
	HapgCandidate peers[SIM_MAX_N];
	int64_t		write_sent;
	char		old_holder[HAPG_NAME_LEN];
	bool		handover_promote;

	/* failsafe mode: heartbeat.c's HapgFailsafeState */
	uint32_t	fs_writing;		/* the list of the Lease write in flight */
	uint32_t	fs_required;	/* every list written since the last one stored */
	bool		fs_published;	/* the last stored write carried the list */
	bool		fs_api_failing; /* the last request got no answer */
	bool		fs_taking;		/* the write in flight takes a failsafe Lease */
	bool		fs_took;		/* took a failsafe Lease from another holder */
	bool		fs_in_recovery; /* the server, as the worker last looked */
	int64_t		fs_rcv_seen;	/* the receiver's progress, as last looked */
	int64_t		fs_heard;		/* when the worker first saw it move */
	int64_t		fs_until;		/* the proof's end (0: none) */
	int64_t		fs_last_beat;
	HapgBeats	fs_beats;

	/* watch data waiting for the next pump */
	bool		inbox_lease;
	SLease		inbox_lease_obj;
	bool		inbox_pod[SIM_MAX_N];
	SPod		inbox_pod_obj[SIM_MAX_N];
} Worker;

typedef struct Member
{
	char		name[HAPG_NAME_LEN];
	/* clock: mono = anchor_mono + elapsed * (1 + ppm / 1e6) */
	int64_t		anchor_t;
	int64_t		anchor_mono;
	int			ppm;
	int64_t		wall_offset_us;
	/* pauses */
	int64_t		paused_until;	/* the whole member (SIGSTOP) */
	int64_t		worker_paused_until;	/* only the worker */
	/* API reachability */
	int64_t		cut_until;		/* requests fail or hang */
	bool		cut_hang;
	int64_t		watch_stall_until;	/* watches deliver nothing */
	int64_t		last_watch_at;	/* watch order is preserved */
	/* PostgreSQL */
	PgState		pg;
	int64_t		pg_gen;
	int			tl;
	uint64_t	lsn;
	int			stream_from;	/* member streamed from, or NOWHERE */
	int			conn_to;		/* primary_conninfo names this member */
	int64_t		last_jump_t;	/* forward clock jumps are rare */
	bool		standby_signal;
	bool		rejoin_note;
	bool		joined;
	bool		guard_set;
	int64_t		writable_until; /* monotonic ms: the commit guard */
	bool		writable_flag;	/* as of the last check */
	bool		clean_stop;		/* stopping for a hand-over */
	char		handover_to[HAPG_NAME_LEN];
	uint64_t	final_lsn;		/* end of the shutdown checkpoint */
	int64_t		final_renew_seq;	/* the last renewal this server made */
	int64_t		stopped_at;
	int			final_tl;
	int64_t		restart_at;		/* when the launcher starts it again */
	Worker		w;
	int			wgen;			/* worker generation: stale answers are dropped */
	/* failsafe runs: replication as a stream with delays and cuts */
	int64_t		stream_gen;		/* one per connection: in-flight data of an old one is lost */
	int64_t		rcv_seq;		/* bumped when the receiver writes new WAL */
	uint64_t	rep_write;		/* its walsender's write position (the last reply) */
	int64_t		rep_rx_cut_until;	/* replication into it is cut */
	int64_t		rep_tx_cut_until;	/* replication out of it is cut */
	int64_t		last_wal_at;	/* the stream keeps its order */
	int64_t		last_fb_at;
	bool		fs_released;	/* hapg_failover released its Lease while it led */
	int			rep_peer;		/* the primary of its last connection */
	int64_t		rep_lost_at;	/* when that connection ended (0: it has not) */
	int64_t		ghost_ms;		/* its walsender lingers this long after */
} Member;

typedef enum EvType
{
	EV_WAKE = 1,				/* a worker's wait ends */
	EV_SERVER,					/* the API server handles a request */
	EV_ANSWER,					/* the answer (or the timeout) reaches the client */
	EV_WATCH_LEASE,
	EV_WATCH_POD,
	EV_PG,						/* a PostgreSQL state change completes */
	EV_TICK,					/* client writes and WAL streaming */
	EV_FAULT,					/* the next fault, or the end of a fault phase */
	EV_RESUME,
	EV_CHILD,					/* the hand-over child's next step */
	EV_WAL,						/* failsafe runs: WAL reaches a standby */
	EV_FEEDBACK					/* failsafe runs: its reply reaches the walsender */
} EvType;

typedef struct Ev
{
	int64_t		t;
	uint64_t	seq;
	int			type;
	int			m;
	int64_t		a;
	int64_t		b;
} Ev;

/* Watch payloads live in a pool; events carry an index. */
typedef struct WatchMsg
{
	SLease		lease;
	SPod		pod;
	int			pod_of;
} WatchMsg;

typedef struct Sim
{
	SimConfig	cfg;
	SimResult  *res;
	Rng			rng;
	int			n;
	int			ttl,
				loop_wait,
				retry;
	int64_t		req_timeout;
	int64_t		settle_ms;
	int64_t		t;
	uint64_t	seq;
	Ev		   *heap;
	int			nheap,
				capheap;
	Member		mem[SIM_MAX_N];
	SLease		lease;			/* the API server's Lease */
	int64_t		next_rv;
	SPod		pods[SIM_MAX_N];
	Req			reqs[REQ_POOL];
	WatchMsg   *wmsg;
	int			nwmsg,
				capwmsg;
	int			wfree;			/* free list head, -1 none */
	int		   *wnext;
	/* timelines: parent and the position where each one forked */
	int			ntl;
	int			tl_parent[MAX_TL];
	uint64_t	tl_fork[MAX_TL];
	uint64_t	acked_max[MAX_TL];	/* highest acknowledged position per timeline */
	/* API-wide faults */
	int64_t		api_down_until;
	bool		api_down_hang;
	int64_t		api_slow_until;
	int			watch_drop_pm;	/* watch events lost, per mille */
	bool		fs_on;			/* failsafe mode, and its settings check passed */
	int64_t		rep_slow_until; /* replication slow for everyone */
	/* phases */
	bool		quiet;
	int64_t		quiet_since;
	int64_t		quiet_until;
	bool		leader_seen_in_quiet;
	int64_t		live_bound;
	/* hand-over children: one per member at most */
	int			child_state[SIM_MAX_N];
	int			child_req[SIM_MAX_N];
	char		child_target[SIM_MAX_N][HAPG_NAME_LEN];
	uint64_t	child_lsn[SIM_MAX_N];
	int			child_tries[SIM_MAX_N];
	/* expected hand-over promotions: the old leader's last acknowledged write */
	int64_t		steps;
} Sim;

static void worker_loop(Sim *s, int m);
static void cycle_resume(Sim *s, int m, Req *r);
static void cycle_tail(Sim *s, int m);
static void fault_next(Sim *s);
static void start_child(Sim *s, int m);
static void violation(Sim *s, const char *fmt,...);
static bool in_recovery(Member *mb);
static int64_t fs_hold_until(Sim *s, int m);
static void fs_observe(Sim *s, int m);
static int64_t fs_hold_ms(Sim *s, int m, bool lease_known, int64_t now);
static void fs_before_write(Sim *s, int m, bool holding, SLease *body);
static void fs_round(Sim *s, int m);

/* ------------------------------------------------------------------ trace */

/* One line into the run's trace ring (only when tracing). */
static void
trace(Sim *s, const char *fmt,...)
{
	SimResult  *res = s->res;
	va_list		ap;
	char	   *line;
	int			off;

	if (!s->cfg.trace)
		return;
	line = res->trace[res->trace_head];
	off = snprintf(line, 200, "%9" PRId64 ".%03d ", s->t / 1000, (int) (s->t % 1000));
	va_start(ap, fmt);
	vsnprintf(line + off, 200 - off, fmt, ap);
	va_end(ap);
	res->trace_head = (res->trace_head + 1) % SIM_TRACE_LINES;
	if (res->ntrace < SIM_TRACE_LINES)
		res->ntrace++;
}

/* Fold a value into the run's digest: two runs of a seed must agree. */
static void
digest(Sim *s, uint64_t v)
{
	s->res->digest = (s->res->digest ^ v) * 0x100000001B3ULL;
}

/* ------------------------------------------------------------------ events */

/* Push an event onto the heap (time, then insertion order). */
static void
ev_push(Sim *s, int64_t t, int type, int m, int64_t a, int64_t b)
{
	Ev			e;
	int			i;

	if (s->nheap == s->capheap)
	{
		s->capheap = s->capheap ? s->capheap * 2 : MAX_EVENTS_HINT;
		s->heap = realloc(s->heap, sizeof(Ev) * s->capheap);
		if (s->heap == NULL)
			abort();
	}
	e.t = t < s->t ? s->t : t;
	e.seq = s->seq++;
	e.type = type;
	e.m = m;
	e.a = a;
	e.b = b;
	i = s->nheap++;
	while (i > 0)
	{
		int			p = (i - 1) / 2;

		if (s->heap[p].t < e.t || (s->heap[p].t == e.t && s->heap[p].seq < e.seq))
			break;
		s->heap[i] = s->heap[p];
		i = p;
	}
	s->heap[i] = e;
}

/* Pop the earliest event. */
static Ev
ev_pop(Sim *s)
{
	Ev			top = s->heap[0];
	Ev			last = s->heap[--s->nheap];
	int			i = 0;

	for (;;)
	{
		int			c = 2 * i + 1;

		if (c >= s->nheap)
			break;
		if (c + 1 < s->nheap &&
			(s->heap[c + 1].t < s->heap[c].t ||
			 (s->heap[c + 1].t == s->heap[c].t && s->heap[c + 1].seq < s->heap[c].seq)))
			c++;
		if (last.t < s->heap[c].t || (last.t == s->heap[c].t && last.seq < s->heap[c].seq))
			break;
		s->heap[i] = s->heap[c];
		i = c;
	}
	if (s->nheap > 0)
		s->heap[i] = last;
	return top;
}

/* ------------------------------------------------------------------ clocks */

/* A member's monotonic clock at true time t. */
static int64_t
mono_at(const Member *mb, int64_t t)
{
	int64_t		d = t - mb->anchor_t;

	return mb->anchor_mono + d + d * mb->ppm / 1000000;
}

/* A member's monotonic clock now. */
static int64_t
mono(Sim *s, int m)
{
	return mono_at(&s->mem[m], s->t);
}

/* The first true time at which a member's clock reads at least local. */
static int64_t
true_at(Sim *s, int m, int64_t local)
{
	Member	   *mb = &s->mem[m];
	int64_t		dl = local - mb->anchor_mono;
	int64_t		t;

	if (dl <= 0)
		return s->t;
	t = mb->anchor_t + dl * 1000000 / (1000000 + mb->ppm) - 2;
	while (mono_at(mb, t) < local)
		t++;
	return t < s->t ? s->t : t;
}

/* Change a clock's rate from now on (NTP slewing). */
static void
clock_rerate(Sim *s, int m, int ppm)
{
	Member	   *mb = &s->mem[m];

	mb->anchor_mono = mono_at(mb, s->t);
	mb->anchor_t = s->t;
	mb->ppm = ppm;
}

/* ------------------------------------------------------------------ members */

/* Is the whole member stopped (SIGSTOP) right now? */
static bool
paused(Sim *s, int m)
{
	return s->t < s->mem[m].paused_until;
}

/* Is its worker stopped, alone or with the whole member? */
static bool
worker_paused(Sim *s, int m)
{
	return paused(s, m) || s->t < s->mem[m].worker_paused_until;
}

/* A member's index by name, or NOWHERE. */
static int
member_by_name(Sim *s, const char *name)
{
	int			i;

	for (i = 0; i < s->n; i++)
		if (strcmp(s->mem[i].name, name) == 0)
			return i;
	return NOWHERE;
}

/* hapg_fence_margin_ms, one second short under the fence-late mutation. */
static int64_t
fence_margin(Sim *s)
{
	int64_t		m = hapg_fence_margin_ms(s->ttl);

	if (s->cfg.mutation == MUT_FENCE_LATE)
		m -= 1000;
	return m;
}

/*
 * hapg_fence_deadline (view.c): the plain deadline, or a failsafe proof's
 * end if later.
 */
static int64_t
fence_deadline(Sim *s, int m)
{
	Worker	   *w = &s->mem[m].w;
	int64_t		plain = hapg_fence_deadline_ms(w->last_renew_sent, s->ttl, fence_margin(s));

	return w->fs_until > plain ? w->fs_until : plain;
}

/*
 * Does this member accept a commit right now?  A running primary does
 * until its fence takes effect; with the commit guard (issue 9) only while
 * its own clock is before writable_until.  A paused server commits nothing.
 */
static bool
accepts_writes(Sim *s, int m)
{
	Member	   *mb = &s->mem[m];

	if (paused(s, m) || mb->pg != PG_PRIMARY)
		return false;
	if (s->cfg.commit_guard)
	{
#ifdef SIM_COMMITRULE
		/* the real rule: writable_until as the worker publishes it */
		HapgWritableInput wi;
		HapgCommitInput ci;

		memset(&wi, 0, sizeof(wi));
		wi.configured = true;
		wi.in_cluster = true;
		wi.leader = mb->w.alive && mb->w.was_leader;
		wi.fenced = mb->w.fenced || !mb->w.alive;
		wi.last_renew_sent_ms = mb->w.last_renew_sent;
		wi.ttl_s = s->ttl;
		wi.fence_margin_ms = fence_margin(s);
		if (s->fs_on && mb->w.alive)
		{
			/* failsafe: the proof's end, the taker's hold (shmem.c) */
			wi.failsafe_until_ms = mb->w.fs_until;
			wi.hold_until_ms = s->cfg.mutation == MUT_FS_NO_WRITE_HOLD ? 0 : fs_hold_until(s, m);
			wi.now_ms = mono(s, m);
		}
		memset(&ci, 0, sizeof(ci));
		ci.writable_until_us = hapg_writable_until(&wi);
		ci.now_us = (uint64_t) mono(s, m) * 1000;
		ci.enabled = true;
		ci.writes = true;
		ci.primary = true;
		return hapg_commit_allowed(&ci);
#else
		return mb->guard_set && mono(s, m) < mb->writable_until;
#endif
	}
	return true;
}

/* Is timeline a an ancestor of (or equal to) b; where b's line left a. */
static bool
tl_ancestor(Sim *s, int a, int b, uint64_t *leaves_at)
{
	uint64_t	at = UINT64_MAX;

	while (b > 0)
	{
		if (b == a)
		{
			*leaves_at = at;
			return true;
		}
		at = s->tl_fork[b];
		b = s->tl_parent[b];
	}
	return false;
}

/* Can standby r stream from primary p without a rewind? */
static bool
can_stream(Sim *s, int r, int p)
{
	Member	   *R = &s->mem[r];
	Member	   *P = &s->mem[p];
	uint64_t	leaves;

	if (!tl_ancestor(s, R->tl, P->tl, &leaves))
		return false;
	if (R->tl == P->tl)
		return R->lsn <= P->lsn;
	return R->lsn <= leaves;
}

/*
 * Where the histories of timelines a and b part: the last position both
 * contain.  A rewound server keeps nothing after it.
 */
static uint64_t
common_point(Sim *s, int a, int b)
{
	int			x = b;
	uint64_t	b_leaves = UINT64_MAX;

	while (x > 0)
	{
		uint64_t	a_leaves;

		if (tl_ancestor(s, x, a, &a_leaves))
			return a_leaves < b_leaves ? a_leaves : b_leaves;
		b_leaves = s->tl_fork[x];
		x = s->tl_parent[x];
	}
	return 0;
}

/* A PostgreSQL state change voids the transitions scheduled before it. */
static void
bump_pg(Sim *s, int m)
{
	s->mem[m].pg_gen++;
}

/* The worker process dies (its server stopped) or a new one starts. */
static void
worker_reset(Sim *s, int m, bool alive)
{
	Worker	   *w = &s->mem[m].w;

	memset(w, 0, sizeof(*w));
	w->req = NOWHERE;
	w->alive = alive;
	s->mem[m].fs_released = false;
	s->mem[m].wgen++;
	if (alive && s->fs_on)
	{
		/* hapg_failsafe_start: it may have heard its leader just before */
		w->fs_heard = mono(s, m);
		w->fs_rcv_seen = s->mem[m].rcv_seq;
		w->fs_in_recovery = in_recovery(&s->mem[m]);
	}
	if (alive)
	{
		w->idle = true;
		w->wake_seq++;
		ev_push(s, s->t + rng_range(&s->rng, 0, 50), EV_WAKE, m, w->wake_seq, s->mem[m].wgen);
	}
}

/* PostgreSQL stops (crash, fence, clean stop): the worker goes with it. */
static void
pg_down(Sim *s, int m, int64_t restart_after)
{
	Member	   *mb = &s->mem[m];

	if (mb->writable_flag)
		mb->writable_flag = false;
	mb->pg = PG_DOWN;
	mb->stopped_at = s->t;
	mb->stream_from = NOWHERE;
	mb->guard_set = false;
	bump_pg(s, m);
	worker_reset(s, m, false);
	if (restart_after >= 0)
	{
		mb->restart_at = s->t + restart_after;
		ev_push(s, mb->restart_at, EV_PG, m, 100, mb->pg_gen);
	}
	else
		mb->restart_at = -1;
}

/* ------------------------------------------------------------------ API server */

/* The Lease as a view for hapg_lease_decide. */
static void
to_view(const SLease *l, bool exists, HapgLeaseView *v)
{
	memset(v, 0, sizeof(*v));
	v->known = true;
	v->exists = exists;
	if (!exists)
		return;
	snprintf(v->holder, sizeof(v->holder), "%s", l->holder);
	snprintf(v->resource_version, sizeof(v->resource_version), "%" PRId64, l->rv);
	v->duration_s = l->duration_s;
	v->transitions = l->transitions;
	snprintf(v->renew_time, sizeof(v->renew_time), "%" PRId64, l->renew_seq);
}

/* A free watch-message slot: a recycled one first, else a new one. */
static int
wmsg_slot(Sim *s)
{
	int			idx;

	if (s->wfree >= 0)
	{
		idx = s->wfree;
		s->wfree = s->wnext[idx];
		return idx;
	}
	if (s->nwmsg == s->capwmsg)
	{
		s->capwmsg = s->capwmsg ? s->capwmsg * 2 : 256;
		s->wmsg = realloc(s->wmsg, sizeof(WatchMsg) * s->capwmsg);
		s->wnext = realloc(s->wnext, sizeof(int) * s->capwmsg);
		if (s->wmsg == NULL || s->wnext == NULL)
			abort();
	}
	return s->nwmsg++;
}

/* A Lease write reaches every open watch, late, or not at all. */
static void
broadcast_lease(Sim *s)
{
	int			i;

	for (i = 0; i < s->n; i++)
	{
		Member	   *mb = &s->mem[i];
		int64_t		at;
		int			idx;

		if (!mb->w.alive || !mb->w.lease_watch)
			continue;
		if (s->t < mb->watch_stall_until || s->t < mb->cut_until || s->t < s->api_down_until)
			continue;			/* a stalled stream: nothing arrives */
		if (rng_permille(&s->rng, s->watch_drop_pm))
		{
			/* the stream broke: the worker notices it ended */
			if (rng_permille(&s->rng, 500))
			{
				mb->w.lease_watch = false;
				mb->w.lease_watch_error = true;
			}
			continue;
		}
		at = s->t + (rng_permille(&s->rng, 20) ? rng_range(&s->rng, 100, 3000) :
					 rng_range(&s->rng, 1, 30));
		if (at < mb->last_watch_at)
			at = mb->last_watch_at;
		mb->last_watch_at = at;
		idx = wmsg_slot(s);
		s->wmsg[idx].lease = s->lease;
		ev_push(s, at, EV_WATCH_LEASE, i, idx, mb->wgen);
	}
}

/* A Pod change reaches the other members' Pod watches. */
static void
broadcast_pod(Sim *s, int of)
{
	int			i;

	for (i = 0; i < s->n; i++)
	{
		Member	   *mb = &s->mem[i];
		int64_t		at;
		int			idx;

		if (!mb->w.alive || !mb->w.pod_watch)
			continue;
		if (s->t < mb->watch_stall_until || s->t < mb->cut_until || s->t < s->api_down_until)
			continue;
		if (rng_permille(&s->rng, s->watch_drop_pm))
		{
			if (rng_permille(&s->rng, 500))
			{
				mb->w.pod_watch = false;
				mb->w.pod_watch_error = true;
			}
			continue;
		}
		at = s->t + rng_range(&s->rng, 1, 60);
		if (at < mb->last_watch_at)
			at = mb->last_watch_at;
		mb->last_watch_at = at;
		idx = wmsg_slot(s);
		s->wmsg[idx].pod = s->pods[of];
		s->wmsg[idx].pod_of = of;
		ev_push(s, at, EV_WATCH_POD, i, idx, mb->wgen);
	}
}

/* The server applies a request: CAS on the resourceVersion for writes. */
static void
server_apply(Sim *s, Req *r)
{
	r->done_server = true;
	switch (r->kind)
	{
		case RQ_GET:
			r->status = s->lease.exists ? 200 : 404;
			r->snap = s->lease;
			break;
		case RQ_LIST:
			r->status = 200;
			memcpy(r->pods, s->pods, sizeof(r->pods));
			break;
		case RQ_POST:
			if (s->lease.exists)
				r->status = 409;
			else
			{
				s->lease = r->body;
				s->lease.exists = true;
				s->lease.rv = s->next_rv++;
				r->status = 201;
				broadcast_lease(s);
			}
			r->snap = s->lease;
			break;
		case RQ_PUT:
			if (!s->lease.exists)
				r->status = 404;
			else if (r->cas_rv != s->lease.rv && s->cfg.mutation != MUT_CAS_IGNORES_RV)
				r->status = 409;
			else
			{
				bool		taken = strcmp(s->lease.holder, r->body.holder) != 0 &&
					r->body.holder[0] != '\0';

				s->lease = r->body;
				s->lease.exists = true;
				s->lease.rv = s->next_rv++;
				r->status = 200;
				broadcast_lease(s);
				if (taken && s->cfg.cut_winners && !s->quiet && rng_permille(&s->rng, 300))
				{
					/* the adversary cuts a new holder off right after its win */
					s->mem[r->m].cut_until = s->t + rng_range(&s->rng, 1, 2 * s->ttl * 1000L);
					s->mem[r->m].cut_hang = rng_permille(&s->rng, 500);
					s->mem[r->m].watch_stall_until = s->mem[r->m].cut_until;
				}
			}
			r->snap = s->lease;
			break;
		case RQ_PATCH_CAND:
			s->pods[r->m] = r->pod;
			r->status = 200;
			broadcast_pod(s, r->m);
			break;
	}
	trace(s, "api  %s %s -> %d (rv %" PRId64 ", holder \"%s\")", s->mem[r->m].name,
		  r->kind == RQ_GET ? "GET" : r->kind == RQ_PUT ? "PUT" : r->kind == RQ_POST ? "POST" :
		  r->kind == RQ_LIST ? "LIST" : "PATCH", r->status, s->lease.rv, s->lease.holder);
	digest(s, (uint64_t) r->status * 31 + (uint64_t) s->lease.rv);
}

/*
 * Send a request from member m (its worker or its hand-over child).  Its
 * fate: answered in time, refused at once, answered too late, or never
 * answered; the server may apply it although the client gave up.
 */
static int
send_request(Sim *s, int m, bool child, ReqKind kind, Req *proto)
{
	Member	   *mb = &s->mem[m];
	int			id;
	Req		   *r;
	int64_t		now = mono(s, m);
	int64_t		timeout = s->req_timeout;
	int64_t		up,
				down;
	bool		cut = s->t < mb->cut_until || s->t < s->api_down_until;
	bool		hang = (s->t < mb->cut_until && mb->cut_hang) ||
		(s->t < s->api_down_until && s->api_down_hang);

	for (id = 0; id < REQ_POOL; id++)
		if (!s->reqs[id].used)
			break;
	if (id == REQ_POOL)
		abort();
	r = &s->reqs[id];
	*r = *proto;
	r->used = true;
	r->m = m;
	r->gen = child ? -2 : mb->wgen;
	r->child = child;
	r->kind = kind;
	r->sent_local = now;
	r->done_server = false;
	r->answered = false;
	r->delivered = false;
	r->server_pending = false;
	r->status = 0;
	if (!child && mb->w.deadline > 0)
	{
		if (mb->w.deadline - now < 20)
		{
			/* kube_request: not sent, the fence deadline has passed */
			ev_push(s, s->t, EV_ANSWER, m, id, 0);
			return id;
		}
		if (mb->w.deadline - now < timeout)
			timeout = mb->w.deadline - now;
	}
	r->timeout_ms = timeout;
	up = rng_range(&s->rng, 1, 15);
	down = rng_range(&s->rng, 1, 15);
	if (s->t < s->api_slow_until || rng_permille(&s->rng, 10) ||
		(child && s->cfg.restart_without_wait))
	{
		/* (the hand-over race's test makes the hand-over process slow) */
		up += rng_range(&s->rng, 0, timeout);
		down += rng_range(&s->rng, 0, timeout);
	}
	if (cut && !hang)
	{
		/* refused at once: connection refused or a 5xx */
		ev_push(s, s->t + up, EV_ANSWER, m, id, 1);
		return id;
	}
	if (hang || rng_permille(&s->rng, 5))
	{
		/* no answer before the deadline; the server may still apply it */
		if (rng_permille(&s->rng, 400))
		{
			r->server_pending = true;
			ev_push(s, s->t + rng_range(&s->rng, 1, 2 * timeout), EV_SERVER, m, id, 0);
		}
		ev_push(s, true_at(s, m, now + timeout), EV_ANSWER, m, id, 2);
		return id;
	}
	r->server_pending = true;
	ev_push(s, s->t + up, EV_SERVER, m, id, 0);
	if (rng_permille(&s->rng, 5) || mono_at(mb, s->t + up + down) - now > timeout)
	{
		/* applied, but the answer is lost or comes after curl gave up */
		ev_push(s, true_at(s, m, now + timeout), EV_ANSWER, m, id, 2);
		return id;
	}
	ev_push(s, s->t + up + down, EV_ANSWER, m, id, 3);
	return id;
}

/* ------------------------------------------------------------------ worker */

/* worker.c's rv_older: integer versions order events. */
static bool
rv_older(int64_t a, int64_t b)
{
	return a < b;
}

/*
 * worker.c's adopt_lease: the expiry clock restarts only when holder,
 * renewTime or duration change.
 */
static void
adopt_lease(Sim *s, int m, const SLease *obj, int64_t seen)
{
	Worker	   *w = &s->mem[m].w;

	if (obj == NULL || !obj->exists)
	{
		w->lease_have = false;
		memset(&w->lease, 0, sizeof(w->lease));
		w->observed_ms = seen;
		w->lease_valid = true;
		return;
	}
	if (w->lease_have && w->lease.exists && rv_older(obj->rv, w->lease.rv))
		return;
	if (!w->lease.exists || obj->rv != w->lease.rv)
	{
		HapgLeaseView was,
					next;

		to_view(&w->lease, w->lease.exists, &was);
		to_view(obj, true, &next);
		if (hapg_lease_clock_restarts(&was, &next))
			w->observed_ms = seen;
		if (strcmp(obj->holder, w->lease.holder) != 0 ||
			obj->sw_pending != w->lease.sw_pending ||
			obj->has_handover != w->lease.has_handover)
			w->wake_cycle = true;
	}
	w->lease_have = true;
	w->lease = *obj;
	w->lease.exists = true;
	w->lease_valid = true;
	w->watch_rv = obj->rv;
}

/* The local server as hapg_read_local_state sees it. */
static bool
in_recovery(Member *mb)
{
	return mb->pg == PG_STANDBY || mb->pg == PG_PROMOTING || mb->pg == PG_STARTING;
}

/* worker.c's fill_input. */
static void
fill_input(Sim *s, int m, bool lease_known)
{
	Member	   *mb = &s->mem[m];
	Worker	   *w = &mb->w;
	HapgDecisionInput *in = &w->in;
	int			i;

	memset(in, 0, sizeof(*in));
	in->now_ms = mono(s, m);
	in->me = mb->name;
	in->in_recovery = in_recovery(mb);
	in->starting = mb->pg == PG_STARTING;
	in->pod_exists = true;
	in->datadir_ok = true;
	in->ttl_s = s->ttl;
	in->retry_timeout_s = s->retry;
	in->was_leader = w->was_leader;
	in->last_renew_sent_ms = w->last_renew_sent;
	in->renew_interval_ms = s->loop_wait * 1000L;
	to_view(&w->lease, w->lease_have, &in->lease);
	in->lease.known = lease_known;
	in->lease.observed_ms = w->observed_ms;
	in->fence_margin_ms = fence_margin(s);
	in->promoting = w->promoting;
	in->priority = 1;
	in->max_lag = 1024 * 1024;
	in->my_timeline = mb->tl;
	in->has_leader_lsn = w->lease_have && w->lease.has_leader_lsn;
	in->leader_lsn = w->lease_have ? w->lease.leader_lsn : 0;
	in->leader_timeline = w->lease_have ? (uint32_t) w->lease.leader_tl : 0;
	in->candidacy_term = w->cand_term;
	in->candidacy_sent_ms = w->cand_sent;
	in->my_lsn = strcmp(w->cand_term, in->lease.resource_version) == 0 ? w->cand_lsn : mb->lsn;
	in->settle_ms = s->settle_ms;
	in->has_handover = w->lease_have && w->lease.has_handover;
	in->handover_to = w->lease.ho_to;
	in->handover_lsn = w->lease.ho_lsn;
	if (s->fs_on)
	{
		fs_observe(s, m);
		in->failsafe_until_ms = w->fs_until;
		in->failsafe_hold_ms = fs_hold_ms(s, m, lease_known, in->now_ms);
	}
	in->ncand = 0;
	in->cand = w->peers;
	if (!w->pods_valid)
		return;
	for (i = 0; i < s->n; i++)
	{
		HapgCandidate *c;
		const SPod *p = &w->pods[i];

		if (i == m || strcmp(s->mem[i].name, w->lease.holder) == 0)
			continue;
		c = &w->peers[in->ncand++];
		memset(c, 0, sizeof(*c));
		snprintf(c->name, sizeof(c->name), "%s", s->mem[i].name);
		c->published = p->has_cand && strcmp(p->term, in->lease.resource_version) == 0;
		c->eligible = p->eligible;
		c->lsn = p->lsn;
		c->timeline = p->tl;
		c->priority = p->prio;
	}
}

/* The worker blocks on a request; the cycle resumes at cont. */
static void
block_on(Sim *s, int m, int cont, ReqKind kind, Req *proto)
{
	Worker	   *w = &s->mem[m].w;

	w->cont = cont;
	w->idle = false;
	w->req = send_request(s, m, false, kind, proto);
}

enum
{
	K_NONE = 0,
	K_LIST,
	K_READ,
	K_READ_EXPIRED,
	K_CAND,
	K_WRITE,
	K_READ409,
	K_SW_DROP
};

/* hapg_fence: set up to come back as a standby, and stop the server. */
static void
do_fence(Sim *s, int m, const char *why)
{
	Member	   *mb = &s->mem[m];

	trace(s, "%s fences: %s", mb->name, why);
	mb->w.fenced = true;
	mb->w.role = HAPG_ROLE_UNLEASED_PRIMARY;
	mb->standby_signal = true;
	mb->rejoin_note = true;
	if (mb->pg == PG_PRIMARY || mb->pg == PG_PROMOTING || mb->pg == PG_STANDBY ||
		mb->pg == PG_STARTING)
	{
		/* commits in flight finish within the delay; then it is down */
		int64_t		delay = rng_range(&s->rng, 0, 60);

		bump_pg(s, m);
		ev_push(s, s->t + delay, EV_PG, m, 1, mb->pg_gen);
	}
}

/* hapg_request_promotion plus start_promotion. */
static void
do_promote(Sim *s, int m, bool handover)
{
	Member	   *mb = &s->mem[m];
	Worker	   *w = &mb->w;

	if (mb->pg != PG_STANDBY)
		return;					/* "could not promote": not a standby */
	if (handover)
	{
		/* a hand-over promises every acknowledged write of the old leader */
		int			from = member_by_name(s, w->lease.ho_from);

		s->res->handovers++;
		if (from != NOWHERE && s->mem[from].final_tl > 0)
		{
			int			ftl = s->mem[from].final_tl;

			uint64_t	leaves;

			/* its history must hold every write acknowledged on the old leader's timeline */
			if (!tl_ancestor(s, ftl, mb->tl, &leaves) ||
				(leaves < mb->lsn ? leaves : mb->lsn) < s->acked_max[ftl])
				violation(s, "hand-over from %s to %s loses acknowledged writes: target at tl %d/%" PRIu64 ", acknowledged up to tl %d/%" PRIu64,
						  s->mem[from].name, mb->name, mb->tl, mb->lsn, ftl, s->acked_max[ftl]);
		}
	}
	w->promoting = true;
	mb->pg = PG_PROMOTING;
	bump_pg(s, m);
	ev_push(s, s->t + rng_range(&s->rng, 20, 400), EV_PG, m, 2, mb->pg_gen);
	trace(s, "%s promoting from tl %d at %" PRIu64, mb->name, mb->tl, mb->lsn);
}

/* The Lease as the worker keeps it, for the member view. */
static void
to_info(const SLease *l, bool have, HapgLeaseInfo *li)
{
	memset(li, 0, sizeof(*li));
	to_view(l, have, &li->view);
	if (!have)
		return;
	li->has_leader_lsn = l->has_leader_lsn;
	li->leader_lsn = l->leader_lsn;
	li->leader_timeline = l->leader_tl;
}

/*
 * The leader's member view (members.c, as view.c builds it): itself first
 * hand, its walsenders for the standbys streaming from it, every member's
 * Pod status as published.
 */
static int
fill_members(Sim *s, int m, HapgMemberView *mv, HapgLeaderPos *lp)
{
	Member	   *mb = &s->mem[m];
	HapgMembersInput in;
	HapgLeaseInfo li;
	static HapgPodInfo pods[SIM_MAX_N];
	static HapgMemberPos senders[SIM_MAX_N];
	int64_t		seen[SIM_MAX_N];
	int			ns = 0;
	int			i;
	int			n;

	memset(&in, 0, sizeof(in));
	to_info(&mb->w.lease, mb->w.lease_have, &li);
	for (i = 0; i < s->n; i++)
	{
		Member	   *o = &s->mem[i];
		HapgPodInfo *p = &pods[i];

		memset(p, 0, sizeof(*p));
		snprintf(p->name, sizeof(p->name), "%s", o->name);
		p->has_status = o->pg != PG_DOWN;
		snprintf(p->role, sizeof(p->role), "%s", in_recovery(o) ? "replica" : "leader");
		snprintf(p->state, sizeof(p->state), "%s",
				 o->pg == PG_STANDBY && o->stream_from != NOWHERE ? "streaming" :
				 in_recovery(o) ? "recovering" : "running");
		p->timeline = o->tl;
		p->lsn = o->lsn;
		snprintf(p->connect_address, sizeof(p->connect_address), "10.0.0.%d:5432", 10 + i);
		p->priority = 1;
		seen[i] = 0;
		if (i != m && o->stream_from == m && o->pg == PG_STANDBY)
		{
			snprintf(senders[ns].name, sizeof(senders[ns].name), "%s", o->name);
			senders[ns].lsn = o->lsn;
			snprintf(senders[ns].state, sizeof(senders[ns].state), "streaming");
			ns++;
		}
	}
	in.self.name = mb->name;
	in.self.role = mb->w.role;
	in.self.in_recovery = in_recovery(mb);
	in.self.streaming = mb->stream_from != NOWHERE;
	in.self.state = in_recovery(mb) ? "recovering" : "running";
	in.self.timeline = (uint32_t) mb->tl;
	in.self.lsn = mb->lsn;
	in.self.connect_address = pods[m].connect_address;
	in.self.priority = 1;
	in.self.nsenders = ns;
	in.self.senders = senders;
	in.lease = &li;
	in.npods = s->n;
	in.pods = pods;
	in.pod_seen_at = seen;
	n = hapg_build_members(&in, mv, HAPG_MAX_MEMBERS);
	*lp = hapg_leader_pos(&in);
	return hapg_members_for_decision(mv, n);
}

/* hand_over: stop cleanly; the child releases the Lease to target. */
static void
hand_over(Sim *s, int m, const char *target)
{
	Member	   *mb = &s->mem[m];

	trace(s, "%s hands over to %s", mb->name, target);
	mb->w.fenced = true;
	mb->standby_signal = true;
	mb->clean_stop = true;
	mb->final_renew_seq = mb->w.lease.renew_seq;
	snprintf(mb->handover_to, sizeof(mb->handover_to), "%s", target);
	bump_pg(s, m);
	ev_push(s, s->t + rng_range(&s->rng, 0, 30), EV_PG, m, 3, mb->pg_gen);
}

/* run_switchover: the leader's part in a pending switchover. */
static bool
run_switchover(Sim *s, int m)
{
	Member	   *mb = &s->mem[m];
	Worker	   *w = &mb->w;
	HapgSwitchover sw;
	HapgSwitchoverPlan plan;
	HapgMemberView mv[HAPG_MAX_MEMBERS];
	HapgLeaderPos lp;
	int			n;
	Req			proto;

	if (!w->lease_have || !w->lease.sw_pending || w->role != HAPG_ROLE_LEADER ||
		in_recovery(mb) || w->promoting || w->fenced)
		return false;
	memset(&sw, 0, sizeof(sw));
	sw.pending = true;
	snprintf(sw.from, sizeof(sw.from), "%s", w->lease.sw_from);
	snprintf(sw.to, sizeof(sw.to), "%s", w->lease.sw_to);
	sw.requested_at_us = w->lease.sw_requested_us;
	n = fill_members(s, m, mv, &lp);
	hapg_plan_switchover(&sw, mb->name, s->t * 1000 + mb->wall_offset_us,
						 (int64_t) s->ttl * 1000000, mv, n, lp.lsn, 1024 * 1024, &plan);
	if (plan.step == HAPG_SW_WAIT)
	{
		if (plan.wait_us > 0)
		{
			int64_t		at = mono(s, m) + plan.wait_us / 1000 + 1;

			if (w->decision_wake == 0 || at < w->decision_wake)
				w->decision_wake = at;
		}
		return false;
	}
	if (plan.step == HAPG_SW_DROP)
	{
		memset(&proto, 0, sizeof(proto));
		proto.body = w->lease;
		proto.body.sw_pending = false;
		proto.cas_rv = w->lease.rv;
		block_on(s, m, K_SW_DROP, RQ_PUT, &proto);
		return true;
	}
	hand_over(s, m, plan.target);
	return false;
}

/* follow_leader: stream from the holder; a diverged standby asks to rewind. */
static void
follow_leader(Sim *s, int m)
{
	Member	   *mb = &s->mem[m];
	Worker	   *w = &mb->w;
	int			h;
	int64_t		now = mono(s, m);
	int64_t		patience = hapg_rewind_patience_ms(s->ttl);

	if (!in_recovery(mb) || mb->pg == PG_STARTING || w->promoting ||
		w->role == HAPG_ROLE_LEADER)
	{
		w->not_streaming_since = 0;
		return;
	}
	if (!w->lease_have || w->lease.holder[0] == '\0' ||
		(h = member_by_name(s, w->lease.holder)) == NOWHERE || h == m)
		return;
	if (mb->conn_to != h)
	{
		/* hapg_follow: a new primary_conninfo; the receiver reconnects */
		mb->conn_to = h;
		mb->stream_from = NOWHERE;
		w->not_streaming_since = now;
		return;
	}
	if (mb->stream_from == h)
	{
		w->not_streaming_since = 0;
		return;
	}
	if (w->not_streaming_since == 0)
		w->not_streaming_since = now;
	if (w->lease.leader_tl > mb->tl && now - w->not_streaming_since >= patience)
		do_fence(s, m, "cannot stream from the leader: rejoin through pg_rewind");
}

static void protocol_done(Sim *s, int m);

/*
 * run_lease_protocol's loop from the current attempt on: decide, and start
 * the write it asks for (the worker then blocks), or finish.
 */
static void
decide_and_act(Sim *s, int m)
{
	Member	   *mb = &s->mem[m];
	Worker	   *w = &mb->w;
	HapgDecision *d = &w->d;
	Req			proto;

	if (w->attempt >= 4)
	{
		/* the Lease kept changing under the compare-and-swap attempts */
		fill_input(s, m, false);
		hapg_lease_decide(&w->in, d);
		protocol_done(s, m);
		return;
	}
	fill_input(s, m, w->lease_known);
	hapg_lease_decide(&w->in, d);
	if (s->cfg.mutation == MUT_PROMOTING_FORGETS && !w->in.lease.known && w->in.promoting &&
		w->in.in_recovery && d->role == HAPG_ROLE_LEADER)
	{
		d->role = HAPG_ROLE_REPLICA;
		d->wake_in_ms = -1;
	}
	if (s->cfg.mutation == MUT_NO_TAKEOVER && d->action == HAPG_ACT_ACQUIRE && w->in.in_recovery)
	{
		d->action = HAPG_ACT_NONE;
		d->role = HAPG_ROLE_REPLICA;
		d->promote = false;
	}
	digest(s, (uint64_t) d->action * 7 + (uint64_t) m);
	if (d->action != HAPG_ACT_NONE || w->was_leader)
		trace(s, "%s decides %s: %s (known %d)", mb->name, hapg_action_name(d->action),
			  d->reason ? d->reason : "", (int) w->lease_known);
	if (d->action == HAPG_ACT_NONE || d->action == HAPG_ACT_FENCE)
	{
		protocol_done(s, m);
		return;
	}
	memset(&proto, 0, sizeof(proto));
	if (d->action == HAPG_ACT_CANDIDACY)
	{
		proto.pod.has_cand = true;
		snprintf(proto.pod.term, sizeof(proto.pod.term), "%s", d->term);
		proto.pod.eligible = d->eligible;
		proto.pod.lsn = mb->lsn;
		proto.pod.tl = mb->tl;
		proto.pod.prio = 1;
		block_on(s, m, K_CAND, RQ_PATCH_CAND, &proto);
		return;
	}
	/* write_lease */
	/* the hand-over rule of hapg_lease_decide, not an election after it */
	w->handover_promote = d->promote && w->lease_have && w->lease.has_handover &&
		w->lease.holder[0] == '\0' && strcmp(d->reason, "the Lease was handed over to me") == 0 &&
		w->lease.ho_lsn > 0;	/* (hapg_failover's release promises nothing) */
	if (d->action != HAPG_ACT_CREATE)
		proto.body = w->lease;
	snprintf(proto.body.holder, sizeof(proto.body.holder), "%s",
			 d->action == HAPG_ACT_RELEASE ? "" : mb->name);
	proto.body.duration_s = s->ttl;
	proto.body.renew_seq = (int64_t) s->seq * SIM_MAX_N + m;	/* a new renewTime */
	proto.body.has_leader_lsn = true;
	proto.body.leader_lsn = mb->lsn;
	proto.body.leader_tl = mb->tl;
	if (d->action == HAPG_ACT_ACQUIRE || d->action == HAPG_ACT_CREATE)
	{
		proto.body.has_handover = false;
		proto.body.sw_pending = false;
	}
	if (d->action == HAPG_ACT_CREATE)
		proto.body.transitions = 0;
	else
	{
		proto.cas_rv = w->lease.rv;
		proto.body.transitions = w->lease.transitions + (d->action == HAPG_ACT_ACQUIRE ? 1 : 0);
	}
	if (s->fs_on)
	{
		/* act.c: taking a Lease whose holder may be writable in failsafe */
		w->fs_taking = d->action == HAPG_ACT_ACQUIRE && w->lease_have && w->lease.fs_list &&
			(w->lease.holder[0] ? strcmp(w->lease.holder, mb->name) != 0 :
			 w->lease.has_handover && w->lease.ho_lsn == 0 &&
			 strcmp(w->lease.ho_from, mb->name) != 0);
		fs_before_write(s, m, d->action != HAPG_ACT_RELEASE, &proto.body);

		/*
		 * act.c takes the write hold on before it sends the acquire: one
		 * whose answer was lost but which was stored is found next cycle as
		 * "my Lease is still valid; renewing it and promoting", a renewal.
		 * Setting it only on the answer (the mutation) lost the hold.
		 */
		if (s->cfg.mutation != MUT_FS_TOOK_ON_ANSWER && w->fs_taking)
			w->fs_took = true;
	}
	w->write_sent = mono(s, m);
	block_on(s, m, K_WRITE, d->action == HAPG_ACT_CREATE ? RQ_POST : RQ_PUT, &proto);
}

static void cycle_tail(Sim *s, int m);
static void cycle_done(Sim *s, int m);

/* The tail of run_lease_protocol: fence, or take the decided role. */
static void
protocol_done(Sim *s, int m)
{
	Worker	   *w = &s->mem[m].w;

	if (w->d.action == HAPG_ACT_FENCE)
	{
		do_fence(s, m, w->d.reason);
		cycle_done(s, m);
		return;
	}
	if (w->d.wake_in_ms >= 0)
		w->decision_wake = w->in.now_ms + w->d.wake_in_ms;
	w->was_leader = w->d.role == HAPG_ROLE_LEADER;
	w->role = w->d.role;
	if (!w->fenced && run_switchover(s, m))
		return;					/* blocked on dropping the switchover */
	if (w->fenced)
	{
		cycle_done(s, m);
		return;
	}
	cycle_tail(s, m);
}

/* The rest of run_cycle: follow the leader, reopen watches. */
static void
cycle_tail(Sim *s, int m)
{
	Member	   *mb = &s->mem[m];
	Worker	   *w = &mb->w;
	int64_t		now;

	follow_leader(s, m);
	if (w->fenced)
	{
		cycle_done(s, m);
		return;
	}
	/* ensure_watches */
	now = mono(s, m);
	if (!w->lease_watch)
	{
		if (w->lease_watch_error)
			w->lease_valid = false;
		if (w->lease_valid && now >= w->lease_watch_retry &&
			s->t >= mb->cut_until && s->t >= s->api_down_until)
		{
			w->lease_watch = true;
			w->lease_watch_error = false;
			w->lease_watch_retry = now + s->loop_wait * 1000L;
		}
	}
	if (!w->pod_watch)
	{
		if (w->pod_watch_error)
			w->pods_valid = false;
		if (w->pods_valid && now >= w->pod_watch_retry &&
			s->t >= mb->cut_until && s->t >= s->api_down_until)
		{
			w->pod_watch = true;
			w->pod_watch_error = false;
			w->pod_watch_retry = now + s->loop_wait * 1000L;
		}
	}
	cycle_done(s, m);
}

static void worker_sleep(Sim *s, int m);

/* From when this worker's Lease watch counts as silent (view.c's rule). */
static int64_t
quiet_at(Sim *s, Worker *w)
{
	return hapg_lease_quiet_at(w->lease_event_ms > w->observed_ms ? w->lease_event_ms : w->observed_ms,
							   s->loop_wait);
}

/* run_cycle returned: the next one is due after loop_wait. */
static void
cycle_done(Sim *s, int m)
{
	Worker	   *w = &s->mem[m].w;

	w->cont = K_NONE;
	w->req = NOWHERE;
	w->next_cycle = mono(s, m) + s->loop_wait * 1000L;
	worker_sleep(s, m);
}

/* run_cycle from the top: local state, Pods, the Lease, then decide. */
static void
cycle_start(Sim *s, int m)
{
	Member	   *mb = &s->mem[m];
	Worker	   *w = &mb->w;
	Req			proto;

	if (w->fenced)
	{
		cycle_done(s, m);
		return;
	}
	w->cycle_started = mono(s, m);
	if (w->promoting && !in_recovery(mb))
		w->promoting = false;
	if (w->was_leader && !in_recovery(mb) && w->last_renew_sent > 0)
	{
		w->deadline = fence_deadline(s, m);
		/* in failsafe every request ends within a second: the beats go on */
		if (w->fs_until > 0 && mono(s, m) + HAPG_FAILSAFE_REQUEST_MS < w->deadline)
			w->deadline = mono(s, m) + HAPG_FAILSAFE_REQUEST_MS;
	}
	else
		w->deadline = 0;
	w->decision_wake = 0;
	memset(&proto, 0, sizeof(proto));
	if (!w->pods_valid || !w->pod_watch)
	{
		block_on(s, m, K_LIST, RQ_LIST, &proto);
		return;
	}
	cycle_resume(s, m, NULL);
}

/* Continue the blocked cycle with the answer r (NULL: no request made). */
static void
cycle_resume(Sim *s, int m, Req *r)
{
	Member	   *mb = &s->mem[m];
	Worker	   *w = &mb->w;
	int			cont = r ? w->cont : K_LIST;
	bool		ok = r && r->answered && r->status >= 200 && r->status < 300;
	int64_t		now;
	Req			proto;

	memset(&proto, 0, sizeof(proto));
	w->cont = K_NONE;
	w->req = NOWHERE;
	if (r && s->fs_on)
		w->fs_api_failing = !r->answered;	/* view.c's outage_start_ms */
	switch (cont)
	{
		case K_LIST:
			if (r && ok)
			{
				memcpy(w->pods, r->pods, sizeof(w->pods));
				w->pods_valid = true;
			}
			now = mono(s, m);
			if (!w->lease_valid || !w->lease_watch || now >= quiet_at(s, w))
			{
				block_on(s, m, K_READ, RQ_GET, &proto);
				return;
			}
			if (in_recovery(mb) && w->lease_have)
			{
				HapgLeaseView v;

				to_view(&w->lease, true, &v);
				v.observed_ms = w->observed_ms;
				if (hapg_lease_expired(&v, now, NULL))
				{
					block_on(s, m, K_READ_EXPIRED, RQ_GET, &proto);
					return;
				}
			}
			break;
		case K_READ:
		case K_READ_EXPIRED:
		case K_READ409:
			{
				bool		read_ok = r->answered && (r->status == 200 || r->status == 404);

				if (read_ok)
				{
					/* read_lease stamps the observation with the time it was sent */
					int64_t		seen = s->cfg.observe_at_response ? mono(s, m) : r->sent_local;

					adopt_lease(s, m, r->status == 200 ? &r->snap : NULL, seen);
					trace(s, "%s read rv %" PRId64 " (sent %" PRId64 " ms ago), observed %" PRId64 " ms ago",
						  mb->name, r->snap.rv, mono(s, m) - r->sent_local, mono(s, m) - w->observed_ms);
					if (cont == K_READ)
						w->lease_event_ms = mono(s, m);
				}
				if (cont == K_READ409)
				{
					w->lease_known = read_ok;
					if (!read_ok)
					{
						fill_input(s, m, false);
						hapg_lease_decide(&w->in, &w->d);
						protocol_done(s, m);
						return;
					}
					w->attempt++;
					decide_and_act(s, m);
					return;
				}
			}
			break;
		case K_CAND:
			if (ok)
			{
				memcpy(w->cand_term, w->d.term, sizeof(w->cand_term));
				w->cand_sent = mono(s, m);
				w->cand_lsn = mb->lsn;
				w->pods[m] = r->pod;
				w->attempt++;
				decide_and_act(s, m);
				return;
			}
			protocol_done(s, m);
			return;
		case K_WRITE:
			if (r->answered && (r->status == 200 || r->status == 201))
			{
				adopt_lease(s, m, &r->snap, w->write_sent);
				if (w->d.action == HAPG_ACT_RELEASE)
				{
					do_fence(s, m, "released");
					cycle_done(s, m);
					return;
				}
				w->last_renew_sent = w->write_sent;
				if (s->fs_on)
				{
					mb->fs_released = false;
					/* hapg_failsafe_after_write; act.c's took_failsafe */
					if (w->fs_writing)
					{
						w->fs_required = w->fs_writing;
						w->fs_published = true;
					}
					if (w->d.action != HAPG_ACT_RENEW)
					{
						w->fs_took = w->fs_taking;
						if (w->fs_took)
						{
							s->res->fs_takeovers++;
							trace(s, "%s took a failsafe Lease: no writes before %" PRId64 " ms from now",
								  mb->name, fs_hold_until(s, m) == INT64_MAX ? -1 :
								  fs_hold_until(s, m) - mono(s, m));
						}
					}
				}
				if (w->d.promote &&
					!hapg_write_still_valid(w->write_sent, mono(s, m), s->ttl, fence_margin(s)))
				{
					/* act.c: answered past its fence deadline: no promotion, re-read */
					trace(s, "%s write answered %" PRId64 " ms after it was sent: not promoting",
						  mb->name, mono(s, m) - w->write_sent);
					w->lease_valid = false;
					w->lease_known = false;
					fill_input(s, m, false);
					hapg_lease_decide(&w->in, &w->d);
					protocol_done(s, m);
					return;
				}
				/* the commit guard of issue 9: last renewal sent + ttl - margin */
				mb->guard_set = true;
				mb->writable_until = hapg_fence_deadline_ms(w->write_sent, s->ttl, fence_margin(s));
				mb->joined = true;
				if (w->d.action != HAPG_ACT_RENEW)
					s->res->elections++;
				if (w->d.promote)
					do_promote(s, m, w->handover_promote);
				protocol_done(s, m);
				return;
			}
			if (!r->answered || r->status != 409)
			{
				/* no answer or an error: the view may be stale */
				w->lease_valid = false;
				w->lease_known = false;
				fill_input(s, m, false);
				hapg_lease_decide(&w->in, &w->d);
				protocol_done(s, m);
				return;
			}
			block_on(s, m, K_READ409, RQ_GET, &proto);
			return;
		case K_SW_DROP:
			if (ok)
				adopt_lease(s, m, &r->snap, mono(s, m));
			cycle_tail(s, m);
			return;
		default:
			break;
	}
	/* run_lease_protocol: lease_known is whether the view is valid */
	w->attempt = 0;
	w->lease_known = w->lease_valid;
	decide_and_act(s, m);
}

/* Apply what the watches delivered since the last pump. */
static void
pump(Sim *s, int m)
{
	Worker	   *w = &s->mem[m].w;
	int			i;

	if (w->inbox_lease)
	{
		w->inbox_lease = false;
		w->lease_event_ms = mono(s, m);
		w->watch_heard_ms = mono(s, m);
		adopt_lease(s, m, &w->inbox_lease_obj, mono(s, m));
	}
	for (i = 0; i < s->n; i++)
		if (w->inbox_pod[i])
		{
			w->inbox_pod[i] = false;
			if (w->cand_term[0] && w->inbox_pod_obj[i].has_cand &&
				strcmp(w->inbox_pod_obj[i].term, w->cand_term) == 0)
				w->wake_cycle = true;
			w->pods[i] = w->inbox_pod_obj[i];
		}
}

/* One pass of hapg_worker_main's loop, from the top. */
static void
worker_loop(Sim *s, int m)
{
	Worker	   *w = &s->mem[m].w;

	w->idle = false;
	pump(s, m);
	if (w->wake_cycle || mono(s, m) >= w->next_cycle)
	{
		w->wake_cycle = false;
		cycle_start(s, m);
		return;
	}
	worker_sleep(s, m);
}

/* The wait at the bottom of the loop: loop_wait, the decision's wish, 1 s. */
static void
worker_sleep(Sim *s, int m)
{
	Member	   *mb = &s->mem[m];
	Worker	   *w = &mb->w;
	int64_t		now = mono(s, m);
	int64_t		timeout;

	if (!w->alive)
		return;
	timeout = w->next_cycle - now;
	if (w->lease_valid && w->lease_watch)
	{
		/* as phase_wait: wake when the watched Lease falls silent */
		int64_t		quiet = hapg_quiet_wake_ms(hapg_lease_quiet_at(w->watch_heard_ms, s->loop_wait),
											   w->cycle_started);

		if (quiet > 0 && quiet <= now)
		{
			w->wake_cycle = true;
			timeout = 0;
		}
		else if (quiet > 0 && quiet - now < timeout)
			timeout = quiet - now;
	}
	if (w->decision_wake > 0)
	{
		if (w->decision_wake <= now)
		{
			w->decision_wake = 0;
			w->wake_cycle = true;
			timeout = 0;
		}
		else if (w->decision_wake - now < timeout)
			timeout = w->decision_wake - now;
	}
	if (w->promoting && timeout > 20)
		timeout = 20;
	if (s->fs_on)
	{
		/* hapg_failsafe_wait_ms: a leader in failsafe beats; a held taker looks again */
		int64_t		hold = fs_hold_until(s, m);
		int64_t		fw = -1;

		if (hold > now && hold < INT64_MAX)
			fw = hold - now;
		else if (w->fs_until > 0 || w->fs_beats.n > 0)
			fw = hapg_failsafe_beat_interval_ms(s->ttl);
		if (fw >= 0 && fw < timeout)
			timeout = fw;
	}
	if (timeout > 1000)
		timeout = 1000;
	if (timeout < 0)
		timeout = 0;
	w->idle = true;
	w->wake_seq++;
	ev_push(s, true_at(s, m, now + timeout), EV_WAKE, m, w->wake_seq, mb->wgen);
}

/* wait_for_work returned: the checks after every wake-up, then loop. */
static void
worker_wake(Sim *s, int m)
{
	Member	   *mb = &s->mem[m];
	Worker	   *w = &mb->w;

	if (s->fs_on)
	{
		fs_observe(s, m);
		fs_round(s, m);
	}
	if (w->promoting && mb->pg == PG_PRIMARY)
		w->wake_cycle = true;
	if (w->was_leader && !w->fenced && w->last_renew_sent > 0 &&
		mono(s, m) >= fence_deadline(s, m))
		w->wake_cycle = true;
	worker_loop(s, m);
}

/* ------------------------------------------------------------------ failsafe */

/*
 * The replication stream of failsafe runs.  In the other runs a standby
 * copies its primary's position on every tick; here WAL travels as
 * messages with their own delays (and the walreceiver's replies back to
 * the walsender), so that a stream can lag, stall or be cut independently
 * of the API, and a standby hears its leader at a moment of its own.
 */
static int64_t
rep_delay(Sim *s)
{
	int64_t		d = rng_permille(&s->rng, 30) ? rng_range(&s->rng, 100, 2000) :
		rng_range(&s->rng, 1, 15);

	if (s->t < s->rep_slow_until)
		d += rng_range(&s->rng, 0, s->ttl * 500L);
	return d;
}

/* Is the stream from primary p to standby r carrying data now? */
static bool
rep_open(Sim *s, int p, int r)
{
	return s->t >= s->mem[p].rep_tx_cut_until && s->t >= s->mem[r].rep_rx_cut_until;
}

/* The walsender sends standby r what primary p has written (or loses it). */
static void
fs_ship(Sim *s, int p, int r)
{
	Member	   *R = &s->mem[r];
	int64_t		at;

	if (!rep_open(s, p, r))
		return;					/* lost: a later message carries it */
	at = s->t + rep_delay(s);
	if (at < R->last_wal_at)
		at = R->last_wal_at;
	R->last_wal_at = at;
	ev_push(s, at, EV_WAL, r, (int64_t) s->mem[p].lsn,
			R->stream_gen * MAX_TL + s->mem[p].tl);
}

/* A standby that receives WAL: still in recovery, promotion included. */
static bool
fs_receives(Member *mb)
{
	return mb->pg == PG_STANDBY || mb->pg == PG_PROMOTING;
}

/* Right after a heartbeat: every standby streaming from p gets it. */
static void
fs_ship_all(Sim *s, int p)
{
	int			i;

	for (i = 0; i < s->n; i++)
		if (i != p && s->mem[i].stream_from == p && fs_receives(&s->mem[i]) &&
			can_stream(s, i, p))
			fs_ship(s, p, i);
}

/*
 * tick()'s streaming for one standby in failsafe runs: reconnect now and
 * then, else ship the primary's position down the stream.
 */
static void
fs_tick_stream(Sim *s, int i)
{
	Member	   *mb = &s->mem[i];
	int			p = mb->stream_from;

	if (p == NOWHERE && mb->rep_peer != NOWHERE && mb->rep_lost_at == 0)
	{
		/*
		 * The connection ended; a walsender that heard no FIN (a partition)
		 * stays until wal_sender_timeout, showing the last write position.
		 */
		mb->rep_lost_at = s->t;
		mb->ghost_ms = rng_permille(&s->rng, 500) ? rng_range(&s->rng, 0, 2 * s->ttl * 1000L) : 0;
	}
	if (!fs_receives(mb))
		return;
	if (p == NOWHERE)
	{
		int			c = mb->conn_to;

		if (mb->pg == PG_STANDBY && !paused(s, i) && c != NOWHERE && c != i &&
			s->mem[c].pg == PG_PRIMARY && !paused(s, c) && rep_open(s, c, i) &&
			rep_open(s, i, c) && can_stream(s, i, c) && rng_permille(&s->rng, 200))
		{
			/* a new connection, a new walsender: no reply from it yet */
			mb->stream_from = c;
			mb->stream_gen++;
			mb->rep_write = 0;
			mb->rep_peer = c;
			mb->rep_lost_at = 0;
		}
		return;
	}
	if (s->mem[p].pg != PG_PRIMARY && s->mem[p].pg != PG_STOPPING)
	{
		mb->stream_from = NOWHERE;
		return;
	}
	if (paused(s, p))
		return;
	if (!can_stream(s, i, p))
	{
		mb->stream_from = NOWHERE;
		return;
	}
	fs_ship(s, p, i);
}

/*
 * WAL arrives: the receiver writes it (new WAL moves the position the
 * worker watches) and replies with its write position.  A stopped standby
 * receives it when it resumes.
 */
static void
fs_deliver(Sim *s, int r, uint64_t lsn, int64_t tag)
{
	Member	   *R = &s->mem[r];
	int64_t		gen = tag / MAX_TL;
	int			tl = (int) (tag % MAX_TL);
	int64_t		at;

	if (gen != R->stream_gen || R->stream_from == NOWHERE || !fs_receives(R))
		return;					/* that connection is gone */
	if (paused(s, r))
	{
		ev_push(s, R->paused_until, EV_WAL, r, (int64_t) lsn, tag);
		return;
	}
	if (s->t < R->rep_rx_cut_until)
		return;
	if (lsn > R->lsn || (lsn == R->lsn && tl != R->tl))
	{
		R->tl = tl;
		if (lsn > R->lsn)
			R->rcv_seq++;
		R->lsn = lsn;
	}
	if (s->t < R->rep_tx_cut_until || s->t < s->mem[R->stream_from].rep_rx_cut_until)
		return;					/* the reply is lost */
	at = s->t + rep_delay(s);
	if (at < R->last_fb_at)
		at = R->last_fb_at;
	R->last_fb_at = at;
	ev_push(s, at, EV_FEEDBACK, r, (int64_t) R->lsn, gen);
}

/* The reply reaches the walsender, which keeps it as its write position. */
static void
fs_feedback(Sim *s, int r, uint64_t lsn, int64_t gen)
{
	Member	   *R = &s->mem[r];
	int			p = R->stream_from;

	if (gen != R->stream_gen || p == NOWHERE)
		return;
	if (paused(s, p))
	{
		ev_push(s, s->mem[p].paused_until, EV_FEEDBACK, r, (int64_t) lsn, gen);
		return;
	}
	if (lsn > R->rep_write)
		R->rep_write = lsn;
}

/*
 * hapg_failsafe_note_heard and the worker's look at its server: only a
 * running worker looks, so a stopped one sees new WAL late (later than it
 * arrived: the safe direction).
 */
static void
fs_observe(Sim *s, int m)
{
	Member	   *mb = &s->mem[m];
	Worker	   *w = &mb->w;

	if (!s->fs_on || !w->alive)
		return;
	if (mb->rcv_seq != w->fs_rcv_seen)
	{
		w->fs_rcv_seen = mb->rcv_seq;
		w->fs_heard = mono(s, m);
	}
	w->fs_in_recovery = in_recovery(mb);
}

/* heard_ms as the rules see it: the impatient mutation moves it back by the bound. */
static int64_t
fs_heard_ms(Sim *s, int m)
{
	int64_t		h = s->mem[m].w.fs_heard;

	if (s->cfg.mutation == MUT_FS_IMPATIENT)
		h -= hapg_failsafe_bound_ms(s->ttl);
	return h;
}

/* hapg_failsafe_hold_until (heartbeat.c), with the real rule. */
static int64_t
fs_hold_until(Sim *s, int m)
{
	Worker	   *w = &s->mem[m].w;

	if (!s->fs_on)
		return 0;
	if (w->fs_took && w->fs_in_recovery)
		return INT64_MAX;
	return hapg_failsafe_write_hold_until(w->fs_took, fs_heard_ms(s, m), s->ttl);
}

/* hapg_failsafe_hold (heartbeat.c): the real hapg_failsafe_hold_ms on my view. */
static int64_t
fs_hold_ms(Sim *s, int m, bool lease_known, int64_t now)
{
	Member	   *mb = &s->mem[m];
	Worker	   *w = &mb->w;
	HapgFailsafeReplicaIn in;
	int64_t		hold;

	memset(&in, 0, sizeof(in));
	in.lease_failsafe = lease_known && w->lease_have && w->lease.fs_list;
	in.holder_named = w->lease.holder[0] != '\0';
	in.manual_release = !in.holder_named && w->lease.has_handover && w->lease.ho_lsn == 0;
	in.holder_is_me = strcmp(w->lease.holder, mb->name) == 0;
	in.me_listed = (w->lease.fs_members & (1u << m)) != 0;
	in.heard_ms = fs_heard_ms(s, m);
	in.now_ms = now;
	in.ttl_s = s->ttl;
	hold = hapg_failsafe_hold_ms(&in);
	if (hold != 0)
		s->res->fs_holds++;
	return hold;
}

/*
 * hapg_failsafe_before_write: the list a holder writes is itself and every
 * member Pod it knows, less one now and then (a Pod being deleted), so
 * that lists differ from write to write; the required set is their union
 * until a write is known to be stored.
 */
static void
fs_before_write(Sim *s, int m, bool holding, SLease *body)
{
	Worker	   *w = &s->mem[m].w;
	uint32_t	list = 1u << m;
	int			skip = rng_permille(&s->rng, 30) ? (int) rng_range(&s->rng, 0, s->n - 1) : m;
	int			i;

	w->fs_writing = 0;
	body->fs_list = false;
	body->fs_members = 0;
	if (!holding)
	{
		w->fs_published = false;
		return;
	}
	for (i = 0; i < s->n; i++)
		if (i != skip)
			list |= 1u << i;
	w->fs_writing = list;
	w->fs_required |= list;
	body->fs_list = true;
	body->fs_members = list;
}

/*
 * hapg_failsafe_round, on every wake-up: while renewals fail, prove from the
 * walsenders' write positions (the real hapg_failsafe_prove) and write the
 * next heartbeat; otherwise forget the proof.
 */
static void
fs_round(Sim *s, int m)
{
	Member	   *mb = &s->mem[m];
	Worker	   *w = &mb->w;
	int64_t		now = mono(s, m);
	bool		leader = w->was_leader && !w->fenced && !in_recovery(mb);
	char		required[SIM_MAX_N][HAPG_NAME_LEN];
	HapgMemberPos senders[SIM_MAX_N];
	HapgFailsafeLeaderIn in;
	HapgFailsafeProof proof;
	int			nreq = 0;
	int			ns = 0;
	int64_t		was = w->fs_until;
	int			i;

	if (!hapg_failsafe_beating(s->fs_on, w->fs_published, leader, now, w->last_renew_sent,
							   s->loop_wait, w->fs_api_failing))
	{
		if (w->fs_until > 0)
			trace(s, "%s failsafe off", mb->name);
		w->fs_until = 0;
		w->fs_beats.n = 0;
		w->fs_last_beat = 0;
		return;
	}
	for (i = 0; i < s->n; i++)
	{
		Member	   *o = &s->mem[i];
		bool		sender = i != m && ((o->stream_from == m && fs_receives(o)) ||
										(o->rep_peer == m && o->rep_lost_at > 0 &&
										 s->t - o->rep_lost_at < o->ghost_ms));

		if (sender)
		{
			memset(&senders[ns], 0, sizeof(senders[ns]));
			snprintf(senders[ns].name, HAPG_NAME_LEN, "%s", o->name);
			senders[ns].lsn = o->rep_write;
			senders[ns].write_lsn = o->rep_write;
			snprintf(senders[ns].state, sizeof(senders[ns].state), "streaming");
			ns++;
		}
		if (!(w->fs_required & (1u << i)))
			continue;
		/* the mutation: a listed member without a walsender does not count */
		if (s->cfg.mutation == MUT_FS_SKIP_SILENT && i != m && !sender)
			continue;
		snprintf(required[nreq++], HAPG_NAME_LEN, "%s", o->name);
	}
	memset(&in, 0, sizeof(in));
	in.enabled = s->fs_on;
	in.published = w->fs_published;
	in.refused = false;			/* the simulated API never answers 401 or 403 */
	in.ttl_s = s->ttl;
	in.now_ms = now;
	in.me = mb->name;
	in.nrequired = nreq;
	in.required = (const char (*)[HAPG_NAME_LEN]) required;
	in.nsenders = ns;
	in.senders = senders;
	in.beats = &w->fs_beats;
	hapg_failsafe_prove(&in, &proof);
	w->fs_until = proof.until_ms;
	if ((was > now) != (w->fs_until > now))
		trace(s, "%s failsafe proof %s: %s", mb->name,
			  w->fs_until > now ? "holds" : "gone", w->fs_until > now ? "" : proof.why);
	digest(s, (uint64_t) w->fs_until * 13 + (uint64_t) m);
	if (now - w->fs_last_beat >= hapg_failsafe_beat_interval_ms(s->ttl))
	{
		/* write_heartbeat: a small WAL record, flushed, then sent */
		mb->lsn++;
		hapg_beats_add(&w->fs_beats, now, mb->lsn);
		w->fs_last_beat = now;
		s->res->fs_beats++;
		fs_ship_all(s, m);
	}
}

/* ------------------------------------------------------------------ PostgreSQL */

/* The start-up guard: a former primary asks the API before starting. */
static void
pg_start(Sim *s, int m)
{
	Member	   *mb = &s->mem[m];
	int			h;

	if (mb->joined && !mb->standby_signal)
	{
		/* hapg_startup_guard, answered directly (its own deadline) */
		if (s->t < mb->cut_until || s->t < s->api_down_until)
			mb->standby_signal = true;
		else if (!s->lease.exists)
			;					/* bootstrap: start as a primary */
		else
			mb->standby_signal = true;
	}
	if (mb->rejoin_note)
	{
		/* the launcher rewinds from the holder when its history diverged */
		h = s->lease.exists ? member_by_name(s, s->lease.holder) : NOWHERE;
		if (h != NOWHERE && h != m && s->mem[h].pg == PG_PRIMARY && !can_stream(s, m, h))
		{
			uint64_t	at = common_point(s, mb->tl, s->mem[h].tl);

			if (mb->lsn > at)
				mb->lsn = at;
			mb->tl = s->mem[h].tl;
			mb->conn_to = h;
			trace(s, "%s rewound onto tl %d at %" PRIu64, mb->name, mb->tl, mb->lsn);
		}
		mb->rejoin_note = false;
	}
	mb->clean_stop = false;
	mb->pg = mb->standby_signal ? PG_STARTING : PG_PRIMARY;
	mb->guard_set = false;
	bump_pg(s, m);
	if (mb->pg == PG_STARTING)
		ev_push(s, s->t + rng_range(&s->rng, 200, 2000), EV_PG, m, 4, mb->pg_gen);
	trace(s, "%s starts as %s (tl %d, lsn %" PRIu64 ")", mb->name,
		  mb->pg == PG_PRIMARY ? "primary" : "standby", mb->tl, mb->lsn);
	worker_reset(s, m, true);
}

/* A PostgreSQL transition completes. */
static void
pg_event(Sim *s, int m, int what, int64_t gen)
{
	Member	   *mb = &s->mem[m];
	int			i;

	if (what == 100)
	{
		if (mb->pg != PG_DOWN || mb->restart_at < 0 || s->t < mb->restart_at)
			return;
		/* the launcher waits at most 10 s for the hand-over process to exit */
		if (s->child_state[m] != 0 && s->t < mb->stopped_at + 10000 &&
			!s->cfg.restart_without_wait)
		{
			ev_push(s, s->t + 200, EV_PG, m, 100, gen);
			return;
		}
		pg_start(s, m);
		return;
	}
	if (gen != mb->pg_gen)
		return;
	if (paused(s, m))
	{
		ev_push(s, mb->paused_until, EV_PG, m, what, gen);
		return;
	}
	switch (what)
	{
		case 1:					/* fence took effect */
			trace(s, "%s stopped (fence)", mb->name);
			pg_down(s, m, rng_range(&s->rng, 500, 4000));
			break;
		case 2:					/* promotion finished */
			if (mb->pg != PG_PROMOTING)
				break;
			if (s->ntl + 1 >= MAX_TL)
				abort();
			s->ntl++;
			s->tl_parent[s->ntl] = mb->tl;
			s->tl_fork[s->ntl] = mb->lsn;
			s->acked_max[s->ntl] = 0;
			/* acknowledged writes beyond the fork are lost to this history */
			if (s->acked_max[mb->tl] > mb->lsn)
				s->res->lost_failover += (int64_t) (s->acked_max[mb->tl] - mb->lsn);
			mb->tl = s->ntl;
			mb->pg = PG_PRIMARY;
			mb->stream_from = NOWHERE;
			mb->lsn++;
			trace(s, "%s promoted: tl %d", mb->name, mb->tl);
			break;
		case 3:					/* clean stop for a hand-over */
			mb->final_lsn = mb->lsn + 1;	/* the shutdown checkpoint */
			mb->final_tl = mb->tl;
			mb->lsn = mb->final_lsn;
			/* walsenders ship everything to the standbys still connected */
			for (i = 0; i < s->n; i++)
				if (i != m && s->mem[i].stream_from == m && s->mem[i].pg == PG_STANDBY &&
					can_stream(s, i, m))
				{
					if (s->fs_on && s->mem[i].lsn < mb->final_lsn)
						s->mem[i].rcv_seq++;	/* new WAL: the worker hears it */
					s->mem[i].tl = mb->tl;
					s->mem[i].lsn = mb->final_lsn;
				}
			trace(s, "%s stopped cleanly at %" PRIu64, mb->name, mb->final_lsn);
			mb->conn_to = member_by_name(s, mb->handover_to);
			pg_down(s, m, rng_range(&s->rng, 1000, 5000));
			start_child(s, m);
			break;
		case 4:					/* start-up recovery finished */
			if (mb->pg == PG_STARTING)
				mb->pg = PG_STANDBY;
			break;
	}
}

/* ------------------------------------------------------------------ hand-over child */

/* The child that outlives the server: GET, then release to the target. */
static void
start_child(Sim *s, int m)
{
	Req			proto;

	memset(&proto, 0, sizeof(proto));
	s->child_state[m] = 1;
	s->child_tries[m] = 0;
	memcpy(s->child_target[m], s->mem[m].handover_to, HAPG_NAME_LEN);
	s->child_lsn[m] = s->mem[m].final_lsn;
	s->child_req[m] = send_request(s, m, true, RQ_GET, &proto);
}

/* The child's answer. */
static void
child_answer(Sim *s, int m, Req *r)
{
	Req			proto;

	memset(&proto, 0, sizeof(proto));
	if (s->child_state[m] == 1)
	{
		if (!r->answered || r->status != 200 || strcmp(r->snap.holder, s->mem[m].name) != 0 ||
			(s->cfg.handover_fix && r->snap.renew_seq != s->mem[m].final_renew_seq))
		{
			s->child_state[m] = 0;
			return;
		}
		proto.body = r->snap;
		proto.body.holder[0] = '\0';
		proto.body.has_handover = true;
		snprintf(proto.body.ho_from, HAPG_NAME_LEN, "%s", s->mem[m].name);
		snprintf(proto.body.ho_to, HAPG_NAME_LEN, "%s", s->child_target[m]);
		proto.body.ho_lsn = s->child_lsn[m];
		proto.body.sw_pending = false;	/* e.switchover_json = "" */
		proto.cas_rv = r->snap.rv;
		s->child_state[m] = 2;
		s->child_req[m] = send_request(s, m, true, RQ_PUT, &proto);
		return;
	}
	if (s->child_state[m] == 2)
	{
		if (r->answered && r->status == 409 && ++s->child_tries[m] < 3)
		{
			s->child_state[m] = 1;
			s->child_req[m] = send_request(s, m, true, RQ_GET, &proto);
			return;
		}
		s->child_state[m] = 0;
	}
}

/* ------------------------------------------------------------------ invariants */

/* Record the first broken invariant of the run, with the step it broke at. */
static void
violation(Sim *s, const char *fmt,...)
{
	va_list		ap;

	if (s->res->violated)
		return;
	s->res->violated = true;
	s->res->violation_step = s->steps;
	va_start(ap, fmt);
	vsnprintf(s->res->violation, sizeof(s->res->violation), fmt, ap);
	va_end(ap);
	trace(s, "VIOLATION: %s", s->res->violation);
}

/*
 * After every event:
 *  1. at most one member accepts writes;
 *  2. a member accepting writes holds the Lease on the server, and no other
 *     member's own view of that very Lease already says it expired (so
 *     nobody could take it over meanwhile), unless it is a failsafe leader
 *     past its plain deadline, writable on its proof;
 *  3. (at hand-over promotions, in pg_event) nothing acknowledged is lost;
 *  4. liveness: once faults stop, a leader accepts writes within a bound.
 */
static void
check_invariants(Sim *s)
{
	int			writers = 0;
	int			first = NOWHERE;
	int			i,
				x;

	s->res->checks++;
	for (i = 0; i < s->n; i++)
	{
		bool		wr = accepts_writes(s, i);

		s->mem[i].writable_flag = wr;
		if (!wr)
			continue;
		writers++;
		if (first == NOWHERE)
			first = i;
		else
			violation(s, "two members accept writes: %s and %s",
					  s->mem[first].name, s->mem[i].name);
		/*
		 * (hapg_failover may release the Lease of a failsafe leader, and its
		 * target take it, while that leader is writable on its proof: the
		 * target's writes wait, and the check above covers them.)
		 */
		if (s->lease.exists && strcmp(s->lease.holder, s->mem[i].name) != 0 &&
			!s->mem[i].fs_released)
			violation(s, "%s accepts writes but the Lease is held by \"%s\"",
					  s->mem[i].name, s->lease.exists ? s->lease.holder : "(none)");

		/*
		 * Past its plain deadline a failsafe leader is writable on its proof:
		 * the others may see its Lease expired, and leave it alone (checked
		 * above: nobody took it, nobody else writes).
		 */
		if (s->fs_on && mono(s, i) >= hapg_fence_deadline_ms(s->mem[i].w.last_renew_sent, s->ttl,
															 fence_margin(s)))
			continue;
		for (x = 0; x < s->n; x++)
		{
			Worker	   *xw = &s->mem[x].w;
			HapgLeaseView v;

			if (x == i || !xw->alive || !xw->lease_have || xw->lease.rv != s->lease.rv)
				continue;
			to_view(&xw->lease, true, &v);
			v.observed_ms = xw->observed_ms;
			if (hapg_lease_expired(&v, mono(s, x), NULL))
				violation(s, "%s accepts writes while %s already judges its Lease (rv %" PRId64 ") expired",
						  s->mem[i].name, s->mem[x].name, s->lease.rv);
		}
	}
	if (s->quiet && writers == 1 && !s->leader_seen_in_quiet)
	{
		int64_t		took = s->t - s->quiet_since;

		s->leader_seen_in_quiet = true;
		if (took > s->res->max_recovery_ms)
			s->res->max_recovery_ms = took;
	}
	if (s->quiet && !s->leader_seen_in_quiet && s->t - s->quiet_since > s->live_bound)
	{
		s->leader_seen_in_quiet = true;	/* report once */
		violation(s, "no leader accepts writes %" PRId64 " ms after faults stopped (bound %" PRId64 " ms)",
				  s->t - s->quiet_since, s->live_bound);
	}
}

/* ------------------------------------------------------------------ client and streaming */

/* Every 100 ms: standbys receive WAL, and the client writes where it can. */
static void
tick(Sim *s)
{
	int			i;

	for (i = 0; i < s->n; i++)
	{
		Member	   *mb = &s->mem[i];
		int			p = mb->stream_from;

		if (s->fs_on)
		{
			fs_tick_stream(s, i);
			continue;
		}
		if (mb->pg != PG_STANDBY || paused(s, i))
			continue;
		if (p == NOWHERE)
		{
			/* the WAL receiver retries primary_conninfo now and then */
			int			c = mb->conn_to;

			if (c != NOWHERE && c != i && s->mem[c].pg == PG_PRIMARY && !paused(s, c) &&
				can_stream(s, i, c) && rng_permille(&s->rng, 200))
				mb->stream_from = c;
			continue;
		}
		if (s->mem[p].pg != PG_PRIMARY && s->mem[p].pg != PG_STOPPING)
		{
			mb->stream_from = NOWHERE;
			continue;
		}
		if (paused(s, p))
			continue;
		if (!can_stream(s, i, p))
		{
			mb->stream_from = NOWHERE;
			continue;
		}
		mb->tl = s->mem[p].tl;
		mb->lsn = s->mem[p].lsn;
	}
	for (i = 0; i < s->n; i++)
	{
		Member	   *mb = &s->mem[i];

		if (!accepts_writes(s, i))
			continue;
		if (s->fs_on && mono(s, i) >= hapg_fence_deadline_ms(mb->w.last_renew_sent, s->ttl,
															 fence_margin(s)))
			s->res->fs_proof_ms += 100;
		mb->lsn += (uint64_t) rng_range(&s->rng, 1, 64);
		if (mb->lsn > s->acked_max[mb->tl])
			s->acked_max[mb->tl] = mb->lsn;
		s->res->writes++;
	}
	ev_push(s, s->t + 100, EV_TICK, NOWHERE, 0, 0);
}

/* ------------------------------------------------------------------ faults */

/* One fault, chosen by the PRNG; the leader is the favourite target. */
static void
inject_fault(Sim *s)
{
	int			m = (int) rng_range(&s->rng, 0, s->n - 1);
	int			leader = s->lease.exists ? member_by_name(s, s->lease.holder) : NOWHERE;
	int64_t		ttl_ms = s->ttl * 1000L;
	int			kind = (int) rng_range(&s->rng, 0, s->fs_on ? 19 : 13);
	Member	   *mb;
	int			i;

	if (leader != NOWHERE && rng_permille(&s->rng, 600))
		m = leader;
	mb = &s->mem[m];
	s->res->faults++;
	if (s->cfg.no_pause && (kind == 0 || kind == 1))
		kind = 2;
	if (s->cfg.whole_pauses_only && kind == 1)
		kind = 0;
	if (s->cfg.worker_stalls_only && kind == 0)
		kind = 1;
	if (s->fs_on && leader != NOWHERE && s->mem[leader].w.fs_until > mono(s, leader) &&
		rng_permille(&s->rng, 200))
		kind = 19;				/* a leader writable on a proof: someone calls hapg_failover() */
	switch (kind)
	{
		case 0:					/* SIGSTOP of the whole member, any length */
			{
				int64_t		d = rng_permille(&s->rng, 500) ? rng_range(&s->rng, 1, 3000) :
					rng_permille(&s->rng, 800) ? rng_range(&s->rng, ttl_ms / 2, 3 * ttl_ms) :
					rng_range(&s->rng, 3 * ttl_ms, 20 * ttl_ms);

				mb->paused_until = s->t + d;
				ev_push(s, mb->paused_until, EV_RESUME, m, 0, 0);
				trace(s, "fault: %s paused for %" PRId64 " ms", mb->name, d);
				break;
			}
		case 1:					/* only the worker stalls */
			{
				int64_t		d = rng_range(&s->rng, 1, 2 * ttl_ms);

				mb->worker_paused_until = s->t + d;
				ev_push(s, mb->worker_paused_until, EV_RESUME, m, 1, 0);
				trace(s, "fault: %s's worker stalled for %" PRId64 " ms", mb->name, d);
				break;
			}
		case 2:					/* cut off from the API */
			mb->cut_until = s->t + rng_range(&s->rng, 500, 2 * ttl_ms);
			mb->cut_hang = rng_permille(&s->rng, 500);
			mb->watch_stall_until = mb->cut_until;
			trace(s, "fault: %s cut off from the API (%s)", mb->name, mb->cut_hang ? "hangs" : "errors");
			break;
		case 3:					/* the API down for everyone */
			s->api_down_until = s->t + rng_range(&s->rng, 500, 2 * ttl_ms);
			s->api_down_hang = rng_permille(&s->rng, 500);
			trace(s, "fault: API down (%s)", s->api_down_hang ? "hangs" : "errors");
			break;
		case 4:					/* the API slow */
			s->api_slow_until = s->t + rng_range(&s->rng, 1000, 2 * ttl_ms);
			trace(s, "fault: API slow");
			break;
		case 5:					/* a member's watches stall silently */
			mb->watch_stall_until = s->t + rng_range(&s->rng, 1000, 3 * ttl_ms);
			trace(s, "fault: %s's watches stall", mb->name);
			break;
		case 6:					/* watch events get lost */
			s->watch_drop_pm = (int) rng_range(&s->rng, 0, 300);
			break;
		case 7:					/* clock drift changes; a forward jump */
			clock_rerate(s, m, (int) rng_range(&s->rng, -500, 500));
			if (rng_permille(&s->rng, 300) && s->t - mb->last_jump_t > 3 * ttl_ms)
			{
				/* at most 100 ms forward, at most once in three ttl */
				mb->anchor_mono += rng_range(&s->rng, 1, 100);
				mb->last_jump_t = s->t;
			}
			break;
		case 8:					/* kill -9 of PostgreSQL (the launcher restarts it) */
			if (mb->pg != PG_DOWN)
			{
				trace(s, "fault: %s's PostgreSQL killed", mb->name);
				pg_down(s, m, rng_range(&s->rng, 300, 3000));
			}
			break;
		case 9:					/* node loss: back much later */
			if (mb->pg != PG_DOWN)
			{
				trace(s, "fault: %s lost", mb->name);
				pg_down(s, m, rng_range(&s->rng, ttl_ms, 4 * ttl_ms));
			}
			break;
		case 10:				/* streaming breaks */
			mb->stream_from = NOWHERE;
			break;
		case 11:				/* hapg_switchover(): an edit of the Lease */
			if (s->lease.exists && s->lease.holder[0])
			{
				int			to = (int) rng_range(&s->rng, 0, s->n - 1);

				s->lease.sw_pending = true;
				snprintf(s->lease.sw_from, HAPG_NAME_LEN, "%s", s->lease.holder);
				snprintf(s->lease.sw_to, HAPG_NAME_LEN, "%s",
						 rng_permille(&s->rng, 500) && to != leader ? s->mem[to].name : "");
				s->lease.sw_requested_us = s->t * 1000 + s->mem[m].wall_offset_us;
				s->lease.rv = s->next_rv++;
				broadcast_lease(s);
				trace(s, "fault: switchover requested to \"%s\"", s->lease.sw_to);
			}
			break;
		case 12:				/* SIGTERM of the leader: clean stop, hand-over */
			if (leader != NOWHERE && s->mem[leader].pg == PG_PRIMARY &&
				s->mem[leader].w.alive && s->mem[leader].w.was_leader && !s->mem[leader].w.fenced)
			{
				HapgMemberView mv[HAPG_MAX_MEMBERS];
				HapgLeaderPos lp;
				int			n = fill_members(s, leader, mv, &lp);
				const HapgMemberView *best = hapg_best_replica(mv, n, s->mem[leader].name, lp.known,
															   lp.lsn, 1024 * 1024);

				if (best)
					hand_over(s, leader, best->name);
			}
			break;
		case 14:				/* failsafe runs: the API down for everyone, for long */
			s->api_down_until = s->t + rng_range(&s->rng, 2 * ttl_ms, 8 * ttl_ms);
			s->api_down_hang = rng_permille(&s->rng, 500);
			trace(s, "fault: API down for long (%s)", s->api_down_hang ? "hangs" : "errors");
			break;
		case 15:				/* failsafe runs: one member (the leader, mostly) cut off the API, for long */
			mb->cut_until = s->t + rng_range(&s->rng, 2 * ttl_ms, 8 * ttl_ms);
			mb->cut_hang = rng_permille(&s->rng, 500);
			mb->watch_stall_until = mb->cut_until;
			trace(s, "fault: %s cut off from the API for long (%s)", mb->name,
				  mb->cut_hang ? "hangs" : "errors");
			break;
		case 16:				/* failsafe runs: replication into or out of a member cut */
			{
				int64_t		d = rng_permille(&s->rng, 500) ? rng_range(&s->rng, 100, 3000) :
					rng_range(&s->rng, 1000, 3 * ttl_ms);
				int			dir = (int) rng_range(&s->rng, 1, 3);

				if (dir & 1)
					mb->rep_rx_cut_until = s->t + d;
				if (dir & 2)
					mb->rep_tx_cut_until = s->t + d;
				if (rng_permille(&s->rng, 300))
					mb->stream_from = NOWHERE;
				trace(s, "fault: %s's replication cut (%s) for %" PRId64 " ms", mb->name,
					  dir == 1 ? "in" : dir == 2 ? "out" : "both ways", d);
				break;
			}
		case 17:				/* failsafe runs: a member partitioned off, API and replication */
			mb->cut_until = s->t + rng_range(&s->rng, ttl_ms, 6 * ttl_ms);
			mb->cut_hang = rng_permille(&s->rng, 500);
			mb->watch_stall_until = mb->cut_until;
			mb->rep_rx_cut_until = mb->cut_until;
			mb->rep_tx_cut_until = mb->cut_until;
			for (i = 0; i < s->n; i++)
				if (i != m && (s->mem[i].stream_from == m || mb->stream_from == i) &&
					rng_permille(&s->rng, 500))
				{
					/* wal_receiver_timeout: the receivers give up on it */
					if (mb->stream_from == i)
						mb->stream_from = NOWHERE;
					else
						s->mem[i].stream_from = NOWHERE;
				}
			trace(s, "fault: %s partitioned off", mb->name);
			break;
		case 18:				/* failsafe runs: replication slow */
			s->rep_slow_until = s->t + rng_range(&s->rng, 1000, 3 * ttl_ms);
			trace(s, "fault: replication slow");
			break;
		case 19:				/* failsafe runs: hapg_failover() on m, of a Lease it sees expired */
			{
				int			to = (int) rng_range(&s->rng, 0, s->n - 1);
				Worker	   *w = &mb->w;
				HapgLeaseView v;

				if (leader == NOWHERE || to == leader || !w->alive || !w->lease_have ||
					w->lease.rv != s->lease.rv || s->t < mb->cut_until || s->t < s->api_down_until)
					break;
				to_view(&w->lease, true, &v);
				v.observed_ms = w->observed_ms;
				if (!hapg_lease_expired(&v, mono(s, m), NULL))
					break;		/* judge_failover: "has a healthy leader" */
				/* request.c: released to the candidate, lsn 0, "manual failover" */
				s->lease.has_handover = true;
				s->mem[leader].fs_released = true;
				snprintf(s->lease.ho_from, HAPG_NAME_LEN, "%s", s->lease.holder);
				snprintf(s->lease.ho_to, HAPG_NAME_LEN, "%s", s->mem[to].name);
				s->lease.ho_lsn = 0;
				s->lease.holder[0] = '\0';
				s->lease.sw_pending = false;
				s->lease.rv = s->next_rv++;
				broadcast_lease(s);
				trace(s, "fault: hapg_failover() on %s releases the Lease of %s to %s",
					  mb->name, s->lease.ho_from, s->lease.ho_to);
				break;
			}
		default:				/* nothing: time passes */
			break;
	}
}

/* Faults for a while, then a quiet phase in which a leader must appear. */
static void
fault_next(Sim *s)
{
	int64_t		ttl_ms = s->ttl * 1000L;
	int			i;

	if (s->quiet && s->t >= s->quiet_until)
	{
		s->quiet = false;
		ev_push(s, s->t + rng_range(&s->rng, 100, 2 * ttl_ms), EV_FAULT, NOWHERE, 0, 0);
		return;
	}
	if (!s->quiet && rng_permille(&s->rng, 120))
	{
		/* faults stop: everything heals, and the clock for liveness starts */
		int64_t		heal = s->t;

		for (i = 0; i < s->n; i++)
		{
			Member	   *mb = &s->mem[i];

			if (mb->paused_until > heal)
				heal = mb->paused_until;
			if (mb->worker_paused_until > heal)
				heal = mb->worker_paused_until;
			if (mb->pg == PG_DOWN && mb->restart_at > heal)
				heal = mb->restart_at;
			mb->cut_until = 0;
			mb->watch_stall_until = 0;
			mb->rep_rx_cut_until = 0;
			mb->rep_tx_cut_until = 0;
		}
		s->rep_slow_until = 0;
		s->api_down_until = 0;
		s->api_slow_until = 0;
		s->watch_drop_pm = 0;
		s->quiet = true;
		s->quiet_since = heal;
		s->leader_seen_in_quiet = false;
		s->quiet_until = heal + s->live_bound + ttl_ms;
		s->res->quiet_periods++;
		trace(s, "faults stop; everything healed at %" PRId64, heal);
		ev_push(s, s->quiet_until, EV_FAULT, NOWHERE, 0, 0);
		return;
	}
	if (!s->quiet)
	{
		inject_fault(s);
		ev_push(s, s->t + rng_range(&s->rng, 200, 3 * ttl_ms), EV_FAULT, NOWHERE, 0, 0);
	}
}

/* ------------------------------------------------------------------ the run */

/* Deliver an answer to the worker or the child that sent the request. */
static void
answer(Sim *s, int m, int id, int how)
{
	Req		   *r = &s->reqs[id];
	Member	   *mb = &s->mem[m];

	if (!r->used || r->delivered)
		return;
	if (!r->child && worker_paused(s, m))
	{
		ev_push(s, paused(s, m) ? mb->paused_until : mb->worker_paused_until, EV_ANSWER, m, id, how);
		return;
	}
	r->delivered = true;
	r->answered = false;
	if (how == 3 && r->done_server)
	{
		/* late because the client was paused? curl may give up first */
		r->answered = !(mono(s, m) - r->sent_local > r->timeout_ms && rng_permille(&s->rng, 500));
	}
	if (!r->answered)
		r->status = 0;
	if (r->child)
	{
		if (s->child_req[m] == id && s->child_state[m])
			child_answer(s, m, r);
	}
	else if (r->gen == mb->wgen && mb->w.alive && mb->w.req == id)
		cycle_resume(s, m, r);
	if (!r->server_pending || r->done_server)
		r->used = false;
}

/* Set up the members: m0 bootstraps as the primary, the others stream. */
static void
sim_init(Sim *s, const SimConfig *cfg, SimResult *res)
{
	static const int profiles[][3] = {{5, 1, 2}, {30, 10, 10}, {10, 2, 4}, {10, 1, 3}};
	int			p;
	int			i;

	memset(s, 0, sizeof(*s));
	memset(res, 0, sizeof(*res));
	s->cfg = *cfg;
	s->res = res;
	s->rng.s = cfg->seed * 0x2545F4914F6CDD1DULL + 1;
	s->n = 3 + (int) (rng_next(&s->rng) % 5);
	p = (int) (rng_next(&s->rng) % 4);
	s->ttl = profiles[p][0];
	s->loop_wait = profiles[p][1];
	s->retry = profiles[p][2];
	s->req_timeout = s->retry * 1000L / 2 > 500 ? s->retry * 1000L / 2 : 500;
	s->settle_ms = s->retry * 1000L / 2 < 1000 ? s->retry * 1000L / 2 : 1000;
	s->live_bound = 3 * s->ttl * 1000L + 4 * s->req_timeout + 10000;
	/* hapg.failsafe_mode's settings check: the commit guard is required */
	s->fs_on = cfg->failsafe &&
		hapg_failsafe_settings_error(s->ttl, cfg->commit_guard, 10) == NULL;
	s->next_rv = 100;
	s->wfree = -1;
	s->ntl = 1;
	s->tl_parent[1] = 0;
	res->n = s->n;
	res->ttl = s->ttl;
	res->loop_wait = s->loop_wait;
	res->retry_timeout = s->retry;
	s->t = 0;
	for (i = 0; i < s->n; i++)
	{
		Member	   *mb = &s->mem[i];

		snprintf(mb->name, sizeof(mb->name), "pg-%d", i);
		mb->anchor_t = 0;
		mb->anchor_mono = rng_range(&s->rng, 1000, 1000000000);
		mb->ppm = (int) rng_range(&s->rng, -500, 500);
		mb->wall_offset_us = rng_range(&s->rng, -2000000, 2000000) + 1700000000000000LL;
		mb->tl = 1;
		mb->lsn = 1000;
		mb->stream_from = NOWHERE;
		mb->standby_signal = i != 0;
		mb->w.req = NOWHERE;
		mb->restart_at = -1;
		mb->conn_to = i != 0 ? 0 : NOWHERE;
		mb->rep_peer = NOWHERE;
		pg_start(s, i);
	}
	ev_push(s, 100, EV_TICK, NOWHERE, 0, 0);
	/* a first quiet phase: the cluster must bootstrap */
	s->quiet = true;
	s->quiet_since = 0;
	s->quiet_until = s->live_bound + s->ttl * 1000L;
	ev_push(s, s->quiet_until, EV_FAULT, NOWHERE, 0, 0);
}

/* One run: events in time order, the invariants after each, until done. */
void
sim_run(const SimConfig *cfg, SimResult *res)
{
	Sim		   *s = malloc(sizeof(Sim));

	if (s == NULL)
		abort();
	sim_init(s, cfg, res);
	while (s->steps < cfg->max_steps && s->nheap > 0 && !res->violated)
	{
		Ev			e = ev_pop(s);
		Member	   *mb = e.m >= 0 ? &s->mem[e.m] : NULL;

		s->t = e.t;
		s->steps++;
		digest(s, (uint64_t) e.t ^ ((uint64_t) e.type << 56));
		switch (e.type)
		{
			case EV_WAKE:
				if (e.b != mb->wgen || !mb->w.alive || e.a != mb->w.wake_seq || !mb->w.idle)
					break;
				if (worker_paused(s, e.m))
				{
					ev_push(s, paused(s, e.m) ? mb->paused_until : mb->worker_paused_until,
							EV_WAKE, e.m, e.a, e.b);
					break;
				}
				worker_wake(s, e.m);
				break;
			case EV_SERVER:
				if (s->reqs[e.a].used && !s->reqs[e.a].done_server)
				{
					Req		   *r = &s->reqs[e.a];

					server_apply(s, r);
					if (r->delivered)
						r->used = false;	/* nobody waits for it any more */
				}
				break;
			case EV_ANSWER:
				answer(s, e.m, (int) e.a, (int) e.b);
				break;
			case EV_WATCH_LEASE:
			case EV_WATCH_POD:
				{
					WatchMsg   *wm = &s->wmsg[e.a];

					if (e.b == mb->wgen && mb->w.alive)
					{
						if (e.type == EV_WATCH_LEASE && mb->w.lease_watch)
						{
							mb->w.inbox_lease = true;
							mb->w.inbox_lease_obj = wm->lease;
						}
						else if (e.type == EV_WATCH_POD && mb->w.pod_watch)
						{
							mb->w.inbox_pod[wm->pod_of] = true;
							mb->w.inbox_pod_obj[wm->pod_of] = wm->pod;
						}
						/* data on a socket wakes an idle worker */
						if (mb->w.idle && !worker_paused(s, e.m))
						{
							mb->w.wake_seq++;
							ev_push(s, s->t, EV_WAKE, e.m, mb->w.wake_seq, mb->wgen);
						}
					}
					s->wnext[e.a] = s->wfree;
					s->wfree = (int) e.a;
					break;
				}
			case EV_PG:
				pg_event(s, e.m, (int) e.a, e.b);
				break;
			case EV_TICK:
				tick(s);
				break;
			case EV_WAL:
				fs_deliver(s, e.m, (uint64_t) e.a, e.b);
				break;
			case EV_FEEDBACK:
				fs_feedback(s, e.m, (uint64_t) e.a, e.b);
				break;
			case EV_FAULT:
				fault_next(s);
				break;
			case EV_RESUME:
				trace(s, "%s resumes", mb->name);
				if (mb->w.alive && mb->w.idle)
				{
					mb->w.wake_seq++;
					ev_push(s, s->t, EV_WAKE, e.m, mb->w.wake_seq, mb->wgen);
				}
				break;
			default:
				break;
		}
		check_invariants(s);
	}
	res->steps = s->steps;
	res->sim_ms = s->t;
	free(s->heap);
	free(s->wmsg);
	free(s->wnext);
	free(s);
}
