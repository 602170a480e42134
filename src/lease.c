/*
 * lease.c
 *		The lease protocol's decision, as a pure function.
 *
 * The worker gathers what it observed (the Lease as last read, when it saw
 * it change on its own monotonic clock, whether the local server is in
 * recovery) into a HapgDecisionInput; hapg_lease_decide() says which write
 * to attempt.  Nothing here does I/O or reads a clock, so every rule is unit
 * tested in tests/unit/test_lease.c, and every write it asks for is carried
 * out by the worker as a compare-and-swap on the resourceVersion of the very
 * read the input was built from.
 */
#include "lease.h"

#include <stdio.h>
#include <string.h>

/*
 * Judge expiry from the moment *we* saw the Lease change, never from its
 * renewTime: two members with skewed wall clocks then agree to within their
 * observation delay.
 */
bool
hapg_lease_expired(const HapgLeaseView *lease, int64_t now_ms,
				   int64_t *expires_in_ms)
{
	int64_t		left;

	if (!lease->known || !lease->exists)
	{
		if (expires_in_ms)
			*expires_in_ms = 0;
		return lease->known;	/* no object: as good as expired */
	}
	if (lease->holder[0] == '\0')
	{
		if (expires_in_ms)
			*expires_in_ms = 0;
		return true;			/* released */
	}
	left = (int64_t) lease->duration_s * 1000 - (now_ms - lease->observed_ms);
	if (expires_in_ms)
		*expires_in_ms = left > 0 ? left : 0;
	return left <= 0;
}

/*
 * Fence this long before the Lease would run out: covers the time between
 * deciding and the postmaster refusing new work, and clock-rate drift.
 */
int64_t
hapg_fence_margin_ms(int ttl_s)
{
	int64_t		m = (int64_t) ttl_s * 100;

	if (m < 500)
		m = 500;
	if (m > 2000)
		m = 2000;
	return m;
}

/*
 * The moment a leader must have stopped taking writes if its last renewal
 * (sent at last_renew_sent_ms) was the last one to succeed: the one formula
 * behind the decision's fence row, the API deadline of a leader's requests
 * and the worker's check on every wake-up.
 */
int64_t
hapg_fence_deadline_ms(int64_t last_renew_sent_ms, int ttl_s,
					   int64_t fence_margin_ms)
{
	return last_renew_sent_ms + (int64_t) ttl_s * 1000 - fence_margin_ms;
}

/*
 * Does a newly read version of the Lease restart this member's expiry
 * clock?  Only when the holder renewed, which always changes renewTime (or
 * a new holder or duration): an edit by another member (pause, a
 * switchover request) changes neither and must not stretch a silent
 * leader's Lease.
 */
bool
hapg_lease_clock_restarts(const HapgLeaseView *seen, const HapgLeaseView *next)
{
	if (!seen->exists)
		return true;
	if (strcmp(next->resource_version, seen->resource_version) == 0)
		return false;
	return strcmp(next->holder, seen->holder) != 0 ||
		strcmp(next->renew_time, seen->renew_time) != 0 ||
		next->duration_s != seen->duration_s;
}

/*
 * Where the expiry clock starts for a newly read version: when its answer
 * *arrived* (a GET's response, a watch event's receipt), never when the GET
 * was sent.  The renewal may have been applied after the GET left, and the
 * leader's fence counts from when it sent that renewal: a clock started at
 * the send would let a standby judge the Lease expired up to one request
 * timeout before the leader fences (found by tests/sim_protocol).  The
 * answer to my own write counts from its send, as my fence does.  Without a
 * renewal (hapg_lease_clock_restarts) the clock keeps seen's start.
 */
int64_t
hapg_lease_observed_ms(const HapgLeaseView *seen, const HapgLeaseView *next,
					   int64_t sent_ms, int64_t arrived_ms, bool own_write)
{
	if (!hapg_lease_clock_restarts(seen, next))
		return seen->observed_ms;
	if (own_write)
		return sent_ms;
	return arrived_ms > sent_ms ? arrived_ms : sent_ms;
}

/*
 * May the hand-over process of a stopped leader release this Lease?  Only
 * if it is still exactly the one that leader last wrote: held by it, with
 * the renewTime of its last successful renewal.  Otherwise the server came
 * back (the launcher waits only so long for this process) and renewed, and
 * a release would take the Lease from a writable primary (found by
 * tests/sim_protocol).
 */
bool
hapg_handover_may_release(const HapgLeaseView *now, const char *me,
						  const char *last_renew_time, const char **why)
{
	const char *reason = NULL;

	if (!now->known || !now->exists)
		reason = "there is no Lease";
	else if (strcmp(now->holder, me) != 0)
		reason = "another member holds the Lease";
	else if (last_renew_time == NULL || last_renew_time[0] == '\0')
		reason = "the stopped leader's last renewal is not known";
	else if (strcmp(now->renew_time, last_renew_time) != 0)
		reason = "the Lease was renewed after this server stopped";
	if (why)
		*why = reason;
	return reason == NULL;
}

/*
 * May a standby promote on the Lease write that just succeeded?  Not if the
 * answer came after that write's own fence deadline: the Lease may already
 * have run out for the others (a long stall between send and answer), so
 * re-read and decide again instead.
 */
bool
hapg_write_still_valid(int64_t sent_ms, int64_t arrived_ms, int ttl_s,
					   int64_t fence_margin_ms)
{
	return arrived_ms < hapg_fence_deadline_ms(sent_ms, ttl_s, fence_margin_ms);
}

/*
 * How long a standby may fail to stream from a leader on a newer timeline
 * before it concludes it diverged (a former primary) and stops to be
 * rewound: long enough for a new leader's WAL receiver switch.
 */
int64_t
hapg_rewind_patience_ms(int ttl_s)
{
	int64_t		p = (int64_t) ttl_s * 2000;

	return p > 10000 ? p : 10000;
}

/*
 * A leader renews every loop_wait, so a healthy Lease watch speaks at least
 * that often: from this instant on, one that said nothing since last_heard
 * may be hung, and the Lease is read instead of trusted.
 */
int64_t
hapg_lease_quiet_at(int64_t last_heard_ms, int loop_wait_s)
{
	return last_heard_ms + (int64_t) loop_wait_s * 2000 + 1;
}

/*
 * When the worker must wake to read a quiet Lease: at the quiet instant if
 * it comes after the last cycle began (that cycle could not see it), so a
 * hung API server is noticed then and not up to a loop later; 0 when the
 * last cycle already saw the silence (it read the Lease, or tried to).
 */
int64_t
hapg_quiet_wake_ms(int64_t quiet_at_ms, int64_t last_cycle_ms)
{
	return quiet_at_ms > last_cycle_ms ? quiet_at_ms : 0;
}

/*
 * Has this standby gone past the point where the leader's history forked
 * off its timeline?  Then its WAL receiver streams, reaches the fork, stops
 * and starts again for ever ("new timeline forked off current database
 * system timeline before current recovery point"): streaming that leads
 * nowhere, which the rewind rule must count as not streaming.  The fork
 * is the position the Lease's history recorded for the promotion away from
 * my timeline (the new leader's position when it asked to promote; a
 * standby between that and the true switch point is not diverged, and
 * switches timeline well within the rewind patience).
 */
bool
hapg_past_fork(const HapgHistoryEntry *history, int nhistory, uint32_t my_timeline,
			   uint64_t my_lsn)
{
	int			i;

	for (i = 0; i < nhistory; i++)
		if (history[i].old_timeline == (int) my_timeline &&
			history[i].new_timeline > (int) my_timeline &&
			history[i].lsn > 0 && my_lsn > history[i].lsn)
			return true;
	return false;
}

/* The rewind rule: a newer leader timeline and no streaming for that long. */
bool
hapg_rewind_due(int64_t not_streaming_since_ms, int64_t now_ms, int ttl_s,
				int leader_timeline, uint32_t my_timeline)
{
	return leader_timeline > (int) my_timeline &&
		now_ms - not_streaming_since_ms >= hapg_rewind_patience_ms(ttl_s);
}

/*
 * The election order: further ahead wins (timeline, then WAL position), then
 * the higher failover priority, then the lower name, so every member that
 * sees the same candidacies ranks them the same way.
 */
bool
hapg_candidate_better(const HapgCandidate *a, const HapgCandidate *b)
{
	if (a->timeline != b->timeline)
		return a->timeline > b->timeline;
	if (a->lsn != b->lsn)
		return a->lsn > b->lsn;
	if (a->priority != b->priority)
		return a->priority > b->priority;
	return strcmp(a->name, b->name) < 0;
}

/* Why this standby may not be promoted, or NULL if it may. */
static const char *
ineligible_reason(const HapgDecisionInput *in)
{
	if (in->starting)
		return "still starting up";
	if (in->nofailover)
		return "hapg.nofailover is on";
	if (in->priority <= 0)
		return "hapg.failover_priority is 0";
	if (in->has_leader_lsn && in->my_lsn + in->max_lag < in->leader_lsn)
		return "lagging behind the leader's last position by more than hapg.maximum_lag_on_failover";
	if (in->leader_timeline > 0 && in->my_timeline < in->leader_timeline)
		return "on an older timeline than the leader";
	return NULL;
}

/*
 * Synchronous mode: an acknowledged commit is on k members of the published
 * set; hearing |V| - k + 1 of them, none further ahead than me, I have it.
 * Otherwise wait: a more advanced one may take over, or one not heard yet
 * may publish its position (true: out says why).
 */
static bool
sync_witnesses_missing(const HapgDecisionInput *in, const HapgCandidate *me, HapgDecision *out)
{
	int			need;
	int			heard = 1;
	int			i;

	if (in->sync == NULL || !in->sync->defined)
		return false;
	need = hapg_sync_witnesses_needed(in->sync);
	for (i = 0; i < in->ncand; i++)
	{
		const HapgCandidate *c = &in->cand[i];

		if (!c->published || !hapg_sync_set_has(in->sync, c->name))
			continue;
		heard++;
		if (c->timeline > me->timeline ||
			(c->timeline == me->timeline && c->lsn > me->lsn))
		{
			out->wake_in_ms = in->settle_ms > 0 ? in->settle_ms : 1000;
			out->reason = "synchronous mode: a synchronous member is further ahead";
			return true;
		}
	}
	if (heard >= need)
		return false;
	out->wake_in_ms = in->settle_ms > 0 ? in->settle_ms : 1000;
	out->reason = in->sync->k <= 0 ?
		"synchronous mode: the leader promised no synchronous standby; no automatic failover" :
		"synchronous mode: waiting to hear from enough synchronous members to be sure of every acknowledged commit";
	return true;
}

/*
 * A standby that saw the Lease expire: publish a candidacy for this term
 * (the expired Lease's resourceVersion), wait until the others have
 * published theirs or the settle time passed, and take the Lease only if no
 * eligible member is healthier.  The compare-and-swap on the term's version
 * makes sure at most one wins, whatever the members believe.
 */
static void
decide_election(const HapgDecisionInput *in, HapgDecision *out)
{
	const char *why = ineligible_reason(in);
	HapgCandidate me;
	int64_t		waited;
	bool		all_in = true;
	const HapgCandidate *better = NULL;
	int			i;

	if (why == NULL && in->sync && in->sync->defined && !hapg_sync_set_has(in->sync, in->me))
		why = "synchronous mode: not a synchronous standby, so it may lack acknowledged commits";

	snprintf(out->term, sizeof(out->term), "%s", in->lease.resource_version);
	out->role = HAPG_ROLE_REPLICA;
	if (strcmp(in->candidacy_term ? in->candidacy_term : "", out->term) != 0)
	{
		out->action = HAPG_ACT_CANDIDACY;
		out->eligible = (why == NULL);
		out->reason = why ? why : "Lease expired; publishing my position";
		return;
	}
	if (why)
	{
		out->reason = why;
		return;
	}

	memset(&me, 0, sizeof(me));
	snprintf(me.name, sizeof(me.name), "%s", in->me);
	me.published = me.eligible = true;
	me.lsn = in->my_lsn;
	me.timeline = in->my_timeline;
	me.priority = in->priority;
	waited = in->now_ms - in->candidacy_sent_ms;
	if (sync_witnesses_missing(in, &me, out))
		return;
	for (i = 0; i < in->ncand; i++)
	{
		const HapgCandidate *c = &in->cand[i];

		if (!c->published)
			all_in = false;
		else if (c->eligible && hapg_candidate_better(c, &me) &&
				 (better == NULL || hapg_candidate_better(c, better)))
			better = c;
	}
	if (better)
	{
		int64_t		patience = in->settle_ms + (int64_t) in->retry_timeout_s * 1000;

		if (waited < patience)
		{
			out->wake_in_ms = patience - waited;
			out->reason = "a healthier member is taking over";
			return;
		}
		/* it had its chance and did not take the Lease: it is not healthy */
	}
	else if (!all_in && waited < in->settle_ms)
	{
		out->wake_in_ms = in->settle_ms - waited;
		out->reason = "waiting for the other members' positions";
		return;
	}
	out->action = HAPG_ACT_ACQUIRE;
	out->promote = true;
	out->role = HAPG_ROLE_LEADER;
	out->expires_in_ms = (int64_t) in->ttl_s * 1000;
	out->reason = in->lease.holder[0] ? "leader's Lease expired; taking over"
		: "Lease released; taking over";
}

/*
 * Failsafe mode: an expired Lease whose holder may still be writable, since
 * this member heard from it over replication lately (or is not in its
 * member list, so the holder does not wait for it), is left alone.
 */
static bool
failsafe_hold(const HapgDecisionInput *in, HapgDecision *out, HapgRole role)
{
	if (in->failsafe_hold_ms == 0)
		return false;
	out->role = role;
	out->failsafe_held = true;
	if (in->failsafe_hold_ms > 0)
	{
		out->wake_in_ms = in->failsafe_hold_ms + 1;
		out->reason = "failsafe: the leader was heard over replication lately and may still be writable";
	}
	else
		out->reason = "failsafe: not in the leader's member list; not taking it";
	return true;
}

/*
 * The decision table.  Rows are checked in order and the first match wins:
 * the safety of a primary first (fence or release), then the Lease itself,
 * then failover for standbys.
 */
void
hapg_lease_decide(const HapgDecisionInput *in, HapgDecision *out)
{
	const HapgLeaseView *l = &in->lease;
	bool		primary = !in->in_recovery && !in->starting;
	bool		mine;
	bool		expired;
	bool		handing_over;
	int64_t		ttl_ms = (int64_t) in->ttl_s * 1000;
	int64_t		fence_at = hapg_fence_deadline_ms(in->last_renew_sent_ms, in->ttl_s,
												  in->fence_margin_ms);

	/* replication proves that nobody can take over before then */
	if (in->failsafe_until_ms > fence_at)
		fence_at = in->failsafe_until_ms;
	memset(out, 0, sizeof(*out));
	out->action = HAPG_ACT_NONE;
	out->wake_in_ms = -1;
	out->role = in->in_recovery ? HAPG_ROLE_REPLICA : HAPG_ROLE_UNKNOWN;

	/* Without my own Pod I am not a member (a leader still protects itself). */
	if (!in->pod_exists && !(primary && in->was_leader))
	{
		out->role = HAPG_ROLE_UNKNOWN;
		out->reason = "own Pod not found";
		return;
	}

	expired = hapg_lease_expired(l, in->now_ms, &out->expires_in_ms);

	/*
	 * A Lease released for a hand-over belongs to its target for one ttl
	 * from when we saw it: nobody else races for it meanwhile.
	 */
	handing_over = l->known && l->exists && l->holder[0] == '\0' &&
		in->has_handover && in->handover_to && in->handover_to[0] &&
		in->now_ms - l->observed_ms < ttl_ms;

	/* 1. A primary that must not keep taking writes. */
	if (primary)
	{
		if (!in->datadir_ok)
		{
			out->action = in->was_leader ? HAPG_ACT_RELEASE : HAPG_ACT_FENCE;
			out->role = HAPG_ROLE_UNLEASED_PRIMARY;
			out->reason = "the data directory is gone";
			return;
		}
		if (hapg_fence_due(in->was_leader && in->last_renew_sent_ms > 0 ? fence_at : 0,
						   in->now_ms, in->paused))
		{
			out->action = HAPG_ACT_FENCE;
			out->role = HAPG_ROLE_UNLEASED_PRIMARY;
			out->renew_overdue = true;
			out->reason = "could not renew the Lease before it runs out";
			return;
		}
		if (l->known && l->exists && l->holder[0] &&
			strcmp(l->holder, in->me) != 0 && !expired)
		{
			out->action = HAPG_ACT_FENCE;
			out->role = HAPG_ROLE_UNLEASED_PRIMARY;
			out->lost_lease = in->was_leader;
			out->reason = "another member holds the Lease";
			return;
		}
		if (handing_over && strcmp(in->handover_to, in->me) != 0)
		{
			out->action = HAPG_ACT_FENCE;
			out->role = HAPG_ROLE_UNLEASED_PRIMARY;
			out->lost_lease = in->was_leader;
			out->reason = "the Lease is being handed over to another member";
			return;
		}
	}

	/*
	 * 2. The API could not be read: nothing can be written either.  A winner
	 * still promoting stays leader too, or it would forget to fence once it
	 * is writable (found by tests/sim_protocol).
	 */
	if (!l->known)
	{
		if (in->was_leader && (primary || (in->promoting && !in->starting)))
		{
			int64_t		left = in->last_renew_sent_ms + ttl_ms - in->now_ms;

			out->expires_in_ms = left > 0 ? left : 0;
			out->role = HAPG_ROLE_LEADER;
			out->wake_in_ms = fence_at - in->now_ms;
			out->reason = "Kubernetes API unreachable; Lease still valid";
		}
		else
		{
			if (primary)
				out->role = HAPG_ROLE_UNLEASED_PRIMARY;
			out->reason = "Kubernetes API unreachable";
		}
		return;
	}

	/* 3. No Lease object at all. */
	if (!l->exists)
	{
		out->lost_lease = in->was_leader;
		if (!primary)
		{
			out->reason = "no Lease; a standby does not create it";
			return;
		}
		out->action = HAPG_ACT_CREATE;
		out->role = HAPG_ROLE_LEADER;
		out->expires_in_ms = ttl_ms;
		out->reason = "no Lease exists; creating it";
		return;
	}

	mine = strcmp(l->holder, in->me) == 0;

	/*
	 * 4. My Lease: renew it, once per loop.  A standby named in a valid Lease
	 * (a leader restarted as a standby, or a winner that has not promoted
	 * yet) renews it and then promotes: only the compare-and-swap makes it
	 * leader again.
	 */
	if (mine && (primary || !expired))
	{
		if (in->starting)
		{
			out->reason = "still starting up";
			return;
		}
		if (in->last_renew_sent_ms > 0)
		{
			int64_t		left = in->last_renew_sent_ms + ttl_ms - in->now_ms;

			out->expires_in_ms = left > 0 ? left : 0;
		}
		out->role = HAPG_ROLE_LEADER;
		/* an early wake-up must not add writes: one renewal per loop */
		if (in->last_renew_sent_ms > 0 &&
			in->now_ms - in->last_renew_sent_ms < in->renew_interval_ms * 9 / 10)
		{
			out->wake_in_ms = in->renew_interval_ms - (in->now_ms - in->last_renew_sent_ms);
			out->reason = "Lease held; renewal not due yet";
			return;
		}
		out->action = HAPG_ACT_RENEW;
		out->promote = !primary && !in->promoting;
		out->reason = primary ? "renewing my Lease" :
			in->promoting ? "renewing my Lease while promoting" :
			"my Lease is still valid; renewing it and promoting";
		return;
	}

	/* 5. Someone else's Lease, or nobody's. */
	out->lost_lease = in->was_leader;
	if (primary && failsafe_hold(in, out, HAPG_ROLE_UNLEASED_PRIMARY))
		return;
	if (primary)
	{
		/* a valid foreign Lease was handled in row 1 */
		out->action = HAPG_ACT_ACQUIRE;
		out->role = HAPG_ROLE_LEADER;
		out->expires_in_ms = ttl_ms;
		out->reason = l->holder[0] ? "Lease expired; taking it" : "Lease released; taking it";
		return;
	}
	if (in->starting)
	{
		out->reason = "still starting up";
		return;
	}
	if (handing_over)
	{
		int64_t		left = ttl_ms - (in->now_ms - l->observed_ms);

		if (strcmp(in->handover_to, in->me) != 0)
		{
			out->wake_in_ms = left + 1;
			out->reason = "the Lease is being handed over to another member";
			return;
		}
		if (in->my_lsn < in->handover_lsn)
		{
			/* every byte the old leader wrote first, its shutdown included */
			out->wake_in_ms = left < 50 ? left + 1 : 50;
			out->reason = "hand-over to me: waiting for the old leader's last WAL";
			return;
		}
		if (failsafe_hold(in, out, HAPG_ROLE_REPLICA))
			return;
		out->action = HAPG_ACT_ACQUIRE;
		out->promote = true;
		out->role = HAPG_ROLE_LEADER;
		out->expires_in_ms = ttl_ms;
		out->reason = "the Lease was handed over to me";
		return;
	}
	if (!expired)
	{
		out->wake_in_ms = out->expires_in_ms + 1;
		out->reason = "following the Lease holder";
		return;
	}
	if (failsafe_hold(in, out, HAPG_ROLE_REPLICA))
		return;
	if (in->paused)
	{
		out->reason = "paused: no automatic failover";
		return;
	}
	decide_election(in, out);
}

/* The role's name in hapg_status() and logs. */
const char *
hapg_role_name(HapgRole role)
{
	switch (role)
	{
		case HAPG_ROLE_LEADER:
			return "leader";
		case HAPG_ROLE_REPLICA:
			return "replica";
		case HAPG_ROLE_UNLEASED_PRIMARY:
			return "primary_without_lease";
		default:
			return "unknown";
	}
}

/*
 * The actions the decision can ask for, and what the worker does for each
 * (worker.c dispatches on the same enum): one table to read, and to print.
 */
static const struct
{
	HapgAction	action;
	const char *name;
	const char *does;
}			action_table[] = {
	{HAPG_ACT_NONE, "none", "nothing to write; follow, publish"},
	{HAPG_ACT_CREATE, "create", "POST a new Lease naming me"},
	{HAPG_ACT_ACQUIRE, "acquire", "PUT the Lease naming me (compare-and-swap), then promote if asked"},
	{HAPG_ACT_RENEW, "renew", "PUT a renewal (compare-and-swap), then promote if asked"},
	{HAPG_ACT_CANDIDACY, "candidacy", "PATCH my Pod with my position, then decide again"},
	{HAPG_ACT_RELEASE, "release", "PUT the Lease with no holder (compare-and-swap), then fence"},
	{HAPG_ACT_FENCE, "fence", "stop this server, set up to return as a standby"},
};

/* The action's name in logs. */
const char *
hapg_action_name(HapgAction action)
{
	if ((int) action < 0 || (size_t) action >= sizeof(action_table) / sizeof(action_table[0]))
		return "none";
	return action_table[action].name;
}

/* What the worker does to carry the action out, for the printed table. */
const char *
hapg_action_does(HapgAction action)
{
	if ((int) action < 0 || (size_t) action >= sizeof(action_table) / sizeof(action_table[0]))
		return "";
	return action_table[action].does;
}

/*
 * A leader past its fence deadline must stop now (a paused cluster fences
 * nobody for want of a renewal; its commits are still bounded).  The
 * decision's fence row and the wake-up plan both ask this.
 */
bool
hapg_fence_due(int64_t fence_deadline_ms, int64_t now_ms, bool paused)
{
	return fence_deadline_ms > 0 && now_ms >= fence_deadline_ms && !paused;
}

/*
 * The loop's order after a wait: a leader past its deadline fences first,
 * on what it already knows, before it handles signals, reads buffered watch
 * events, answers requests or calls the API; without usable settings the
 * worker only idles.  Returns the number of steps.
 */
int
hapg_wake_plan(const HapgWakeInput *in, HapgStep *steps)
{
	int			n = 0;

	if (in->ready && !in->fenced && hapg_fence_due(in->fence_deadline_ms, in->now_ms, in->paused))
		steps[n++] = HAPG_STEP_FENCE;
	steps[n++] = HAPG_STEP_SIGNALS;
	if (!in->ready)
	{
		steps[n++] = HAPG_STEP_IDLE;
		return n;
	}
	steps[n++] = HAPG_STEP_EVENTS;
	steps[n++] = HAPG_STEP_REQUESTS;
	steps[n++] = HAPG_STEP_CYCLE;
	steps[n++] = HAPG_STEP_WAIT;
	return n;
}

/* A step's name, for logs and tests. */
const char *
hapg_step_name(HapgStep step)
{
	switch (step)
	{
		case HAPG_STEP_FENCE:
			return "fence";
		case HAPG_STEP_SIGNALS:
			return "signals";
		case HAPG_STEP_IDLE:
			return "idle";
		case HAPG_STEP_EVENTS:
			return "events";
		case HAPG_STEP_REQUESTS:
			return "requests";
		case HAPG_STEP_CYCLE:
			return "cycle";
		case HAPG_STEP_WAIT:
			return "wait";
	}
	return "?";
}
