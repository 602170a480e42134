/*
 * steer.c
 *		Judging operators' requests, as pure functions.
 *
 * The worker that received a request from SQL reads the Lease afresh, fills
 * a HapgRequestInput and writes whatever hapg_judge_request() allows as a
 * compare-and-swap on that read; a refusal comes back to the caller as an
 * SQL error with this verdict's message, detail and hint.  The leader asks
 * hapg_plan_switchover() every cycle what to do about a pending switchover.
 */
#include "steer.h"

#include <inttypes.h>
#include <stdio.h>
#include <string.h>

static void
refuse(HapgVerdict *out, const char *message, const char *detail, const char *hint)
{
	out->ok = false;
	out->changes = false;
	snprintf(out->message, sizeof(out->message), "%s", message);
	snprintf(out->detail, sizeof(out->detail), "%s", detail ? detail : "");
	snprintf(out->hint, sizeof(out->hint), "%s", hint ? hint : "");
}

static const HapgMemberView *
find_member(const HapgMemberView *members, int n, const char *name)
{
	int			i;

	for (i = 0; i < n; i++)
		if (strcmp(members[i].name, name) == 0)
			return &members[i];
	return NULL;
}

/* The member the request names, or NULL after refusing it as unknown. */
static const HapgMemberView *
named_member(const HapgRequestInput *in, HapgVerdict *out)
{
	const HapgMemberView *m = find_member(in->members, in->nmembers, in->candidate);
	char		msg[HAPG_MSG_LEN];

	if (m == NULL)
	{
		snprintf(msg, sizeof(msg), "member \"%s\" is not in cluster \"%s\"",
				 in->candidate, in->cluster);
		refuse(out, msg, NULL, "SELECT member FROM hapg_members lists the members.");
	}
	return m;
}

/* Bytes m is behind the leader's last position, 0 when unknown. */
static uint64_t
lag_of(const HapgMemberView *m, bool has_leader_lsn, uint64_t leader_lsn)
{
	if (!has_leader_lsn || !m->has_lsn || m->lsn >= leader_lsn)
		return 0;
	return leader_lsn - m->lsn;
}

/*
 * Why member m may not take over (NULL: it may), with detail and hint.
 * A switchover also needs it streaming; a failover has no leader to stream
 * from.
 */
static bool
candidate_refused(const HapgRequestInput *in, const HapgMemberView *m,
				  bool need_streaming, HapgVerdict *out)
{
	char		msg[HAPG_MSG_LEN];
	char		detail[HAPG_MSG_LEN];
	char		hint[HAPG_MSG_LEN];
	uint64_t	lag;

	if (m->nofailover || m->priority <= 0)
	{
		snprintf(msg, sizeof(msg), "member \"%s\" must not be promoted", m->name);
		snprintf(detail, sizeof(detail), "%s",
				 m->nofailover ? "It has hapg.nofailover = on." :
				 "It has hapg.failover_priority = 0.");
		snprintf(hint, sizeof(hint),
				 "Choose another member, or change that setting on \"%s\" and reload.", m->name);
		refuse(out, msg, detail, hint);
		return true;
	}
	if (!m->replica)
	{
		snprintf(msg, sizeof(msg), "member \"%s\" is not a replica", m->name);
		snprintf(detail, sizeof(detail), "Its state is \"%s\".",
				 m->has_status ? m->state : "unknown");
		refuse(out, msg, detail, "Only a standby can be promoted; see hapg_members.");
		return true;
	}
	if (need_streaming && !m->streaming)
	{
		snprintf(msg, sizeof(msg), "member \"%s\" is not streaming from the leader", m->name);
		snprintf(detail, sizeof(detail), "Its state is \"%s\".",
				 m->has_status ? m->state : "unknown");
		refuse(out, msg, detail,
			   "Wait until it streams (see hapg_members), or choose another member.");
		out->on_positions = true;
		return true;
	}
	lag = lag_of(m, in->has_leader_lsn, in->leader_lsn);
	if (lag > in->max_lag)
	{
		snprintf(msg, sizeof(msg), "member \"%s\" lags too far behind the leader", m->name);
		snprintf(detail, sizeof(detail),
				 "It is %" PRIu64 " bytes behind; hapg.maximum_lag_on_failover is %" PRIu64 " bytes.",
				 lag, in->max_lag);
		refuse(out, msg, detail, "Wait until it catches up, or choose another member.");
		out->on_positions = true;
		return true;
	}
	return false;
}

/* A standby the leader published as synchronous (sync or quorum). */
static bool
is_synchronous(const HapgMemberView *m)
{
	return strcmp(m->sync_state, "sync") == 0 || strcmp(m->sync_state, "quorum") == 0;
}

/* Whether the Lease publishes any synchronous standby. */
static bool
any_synchronous(const HapgMemberView *members, int n)
{
	int			i;

	for (i = 0; i < n; i++)
		if (is_synchronous(&members[i]))
			return true;
	return false;
}

/*
 * The replica a switchover without a candidate goes to: streaming, allowed
 * to be promoted, within the lag limit; a synchronous one first, then the
 * furthest ahead, then the higher priority, then the lower name.
 */
const HapgMemberView *
hapg_best_replica(const HapgMemberView *members, int n, const char *leader,
				  bool has_leader_lsn, uint64_t leader_lsn, uint64_t max_lag)
{
	const HapgMemberView *best = NULL;
	int			i;

	for (i = 0; i < n; i++)
	{
		const HapgMemberView *m = &members[i];

		if (strcmp(m->name, leader) == 0 || !m->replica || !m->streaming ||
			m->nofailover || m->priority <= 0 ||
			lag_of(m, has_leader_lsn, leader_lsn) > max_lag)
			continue;
		if (best != NULL && is_synchronous(m) != is_synchronous(best))
		{
			if (is_synchronous(m))
				best = m;
			continue;
		}
		if (best == NULL ||
			(m->has_lsn && (!best->has_lsn || m->lsn > best->lsn)) ||
			((m->has_lsn == best->has_lsn && m->lsn == best->lsn) &&
			 (m->priority > best->priority ||
			  (m->priority == best->priority && strcmp(m->name, best->name) < 0))))
			best = m;
	}
	return best;
}

static void
judge_switchover(const HapgRequestInput *in, HapgVerdict *out)
{
	char		msg[HAPG_MSG_LEN];
	char		detail[HAPG_MSG_LEN];
	const HapgMemberView *m;

	if (in->scheduled_at_us != 0 && in->scheduled_at_us <= in->now_us)
	{
		refuse(out, "scheduled_at is in the past", NULL,
			   "Give a time in the future, or leave scheduled_at out to switch over now.");
		return;
	}
	if (in->paused && in->candidate[0] == '\0')
	{
		snprintf(msg, sizeof(msg), "cluster \"%s\" is paused", in->cluster);
		refuse(out, msg, "While paused, hapg does not choose a candidate itself.",
			   "Name the member to promote, or call hapg_resume() first.");
		return;
	}
	if (in->switchover.pending)
	{
		snprintf(detail, sizeof(detail), "A switchover from \"%s\" to %s%s%s is pending.",
				 in->switchover.from,
				 in->switchover.to[0] ? "\"" : "the healthiest replica",
				 in->switchover.to, in->switchover.to[0] ? "\"" : "");
		refuse(out, "another switchover is already pending", detail,
			   "Wait for it, or cancel it with hapg_cancel_switchover().");
		return;
	}
	if (!in->lease_exists || in->holder[0] == '\0' || in->lease_expired)
	{
		snprintf(msg, sizeof(msg), "cluster \"%s\" has no leader to switch over from", in->cluster);
		refuse(out, msg, NULL, "Use hapg_failover(candidate) to promote a replica.");
		return;
	}
	if (in->candidate[0])
	{
		if ((m = named_member(in, out)) == NULL)
			return;
		if (strcmp(in->candidate, in->holder) == 0)
		{
			snprintf(msg, sizeof(msg), "member \"%s\" is already the leader", in->candidate);
			refuse(out, msg, NULL,
				   "Name a replica, or pass no candidate to let hapg choose one.");
			return;
		}
		if (candidate_refused(in, m, true, out))
			return;
		snprintf(out->target, sizeof(out->target), "%s", m->name);
	}
	else
	{
		m = hapg_best_replica(in->members, in->nmembers, in->holder,
							  in->has_leader_lsn, in->leader_lsn, in->max_lag);
		if (m == NULL)
		{
			refuse(out, "no replica can take over",
				   "None is streaming within hapg.maximum_lag_on_failover with hapg.nofailover off.",
				   "See hapg_members.");
			out->on_positions = true;
			return;
		}
		/* a scheduled one picks the healthiest when its time comes */
		if (in->scheduled_at_us == 0)
			snprintf(out->target, sizeof(out->target), "%s", m->name);
	}
	out->ok = out->changes = true;
	if (in->scheduled_at_us != 0)
		snprintf(out->message, sizeof(out->message), "switchover from \"%s\" to %s%s%s scheduled",
				 in->holder, out->target[0] ? "\"" : "the healthiest replica",
				 out->target, out->target[0] ? "\"" : "");
	else
		snprintf(out->message, sizeof(out->message), "switchover from \"%s\" to \"%s\" requested",
				 in->holder, out->target);
}

static void
judge_failover(const HapgRequestInput *in, HapgVerdict *out)
{
	char		msg[HAPG_MSG_LEN];
	const HapgMemberView *m;

	if (in->candidate[0] == '\0')
	{
		refuse(out, "hapg_failover needs a candidate", NULL, "Name the replica to promote.");
		return;
	}
	if ((m = named_member(in, out)) == NULL)
		return;
	if (in->lease_exists && in->holder[0] && !in->lease_expired)
	{
		snprintf(msg, sizeof(msg), "cluster \"%s\" has a healthy leader, \"%s\"",
				 in->cluster, in->holder);
		refuse(out, msg, "Its Lease is valid.",
			   "Use hapg_switchover() to move the leader role while the leader is up.");
		return;
	}
	if (candidate_refused(in, m, false, out))
		return;
	if (!in->force && !is_synchronous(m) && any_synchronous(in->members, in->nmembers))
	{
		snprintf(msg, sizeof(msg), "member \"%s\" is not a synchronous standby", m->name);
		refuse(out, msg,
			   "The leader published the synchronous standbys that have every acknowledged commit (hapg_members.sync_state); it is not one of them.",
			   "Choose a member whose sync_state is sync or quorum, or call hapg_failover(candidate, force => true): acknowledged commits may be lost.");
		return;
	}
	if (in->has_leader_lsn && !m->has_lsn)
	{
		/* without its position the lag limit cannot be checked */
		snprintf(msg, sizeof(msg), "the position of member \"%s\" is unknown here", m->name);
		refuse(out, msg, "The leader did not report it as connected before it went away.",
			   "Call hapg_failover() on that member itself: it knows its own position.");
		return;
	}
	snprintf(out->target, sizeof(out->target), "%s", m->name);
	out->ok = out->changes = true;
	snprintf(out->message, sizeof(out->message), "failover to \"%s\" requested", m->name);
}

/* May this request be carried out, and what does it change? */
void
hapg_judge_request(const HapgRequestInput *in, HapgVerdict *out)
{
	char		msg[HAPG_MSG_LEN];

	memset(out, 0, sizeof(*out));
	if (!in->lease_exists && in->kind != HAPG_REQ_FAILOVER)
	{
		snprintf(msg, sizeof(msg), "cluster \"%s\" has no leader Lease yet", in->cluster);
		refuse(out, msg, NULL, "Wait until a primary member has created it (see hapg_status()).");
		return;
	}
	switch (in->kind)
	{
		case HAPG_REQ_SWITCHOVER:
			judge_switchover(in, out);
			return;
		case HAPG_REQ_FAILOVER:
			judge_failover(in, out);
			return;
		case HAPG_REQ_PAUSE:
		case HAPG_REQ_RESUME:
			{
				bool		pause = in->kind == HAPG_REQ_PAUSE;

				out->ok = true;
				out->changes = pause != in->paused;
				snprintf(out->message, sizeof(out->message), "cluster \"%s\" %s%s",
						 in->cluster, out->changes ? "" : "was already ",
						 pause ? "paused" : (out->changes ? "resumed" : "running"));
				return;
			}
		case HAPG_REQ_CANCEL:
			out->ok = true;
			out->changes = in->switchover.pending;
			snprintf(out->message, sizeof(out->message), "%s",
					 out->changes ? "switchover cancelled" : "no switchover was pending");
			return;
		default:
			refuse(out, "unknown request", NULL, NULL);
	}
}

/*
 * How long the asking backend waits before asking again after its
 * refusals-th refusal, or -1 to give this one to its caller.  Positions
 * reach the judge with the leader's renewals, one loop_wait apart: a
 * replica that was behind a moment ago (a WAL segment switch, a restarted
 * WAL receiver) is judged again on the next renewals, a bounded number of
 * times.
 */
int64_t
hapg_request_retry_ms(const HapgVerdict *v, int refusals, int loop_wait_s)
{
	if (v->ok || !v->on_positions || refusals < 1 || refusals > HAPG_POSITION_RETRIES)
		return -1;
	return (int64_t) loop_wait_s * 1000 + HAPG_RENEWAL_DELIVERY_MS;
}

/*
 * A leader's view of its pending switchover: due yet, target ready, or so
 * old (or so foreign) that carrying it out now would surprise everyone.
 */
void
hapg_plan_switchover(const HapgSwitchover *sw, const char *me, int64_t now_us,
					 int64_t stale_us, const HapgMemberView *members, int n,
					 uint64_t leader_lsn, uint64_t max_lag, HapgSwitchoverPlan *out)
{
	int64_t		due = sw->scheduled_at_us ? sw->scheduled_at_us : sw->requested_at_us;
	const HapgMemberView *m;

	memset(out, 0, sizeof(*out));
	out->step = HAPG_SW_WAIT;
	out->wait_us = -1;
	if (!sw->pending)
		return;
	if (strcmp(sw->from, me) != 0)
	{
		out->step = HAPG_SW_DROP;
		snprintf(out->why, sizeof(out->why), "it was requested while \"%s\" was the leader",
				 sw->from);
		return;
	}
	if (now_us < due)
	{
		out->wait_us = due - now_us;
		snprintf(out->why, sizeof(out->why), "not due yet");
		return;
	}
	if (now_us - due > stale_us)
	{
		out->step = HAPG_SW_DROP;
		snprintf(out->why, sizeof(out->why), "it is stale: due %.1f s ago",
				 (double) (now_us - due) / 1e6);
		return;
	}
	if (sw->to[0])
	{
		m = find_member(members, n, sw->to);
		if (m == NULL || !m->replica || !m->streaming || m->nofailover || m->priority <= 0 ||
			lag_of(m, true, leader_lsn) > max_lag)
		{
			snprintf(out->why, sizeof(out->why), "candidate \"%s\" is not ready: %s", sw->to,
					 m == NULL ? "not a member" : !m->replica ? "not a replica" :
					 !m->streaming ? "not streaming" :
					 (m->nofailover || m->priority <= 0) ? "it must not be promoted" :
					 "it lags behind");
			return;
		}
	}
	else
	{
		m = hapg_best_replica(members, n, me, true, leader_lsn, max_lag);
		if (m == NULL)
		{
			snprintf(out->why, sizeof(out->why), "no replica is ready to take over");
			return;
		}
	}
	out->step = HAPG_SW_GO;
	snprintf(out->target, sizeof(out->target), "%s", m->name);
}
