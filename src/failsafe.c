/*
 * failsafe.c
 *		Failsafe mode's rules, as pure functions.
 *
 * A leader that cannot renew its Lease (the API server is down, or cut
 * off from it) writes a small WAL record, a heartbeat, every few hundred
 * milliseconds.  A member whose walsender reports a write position past a
 * heartbeat has received it, so it heard from this leader after that
 * heartbeat was written.  The leader stays writable until the oldest of
 * its members' latest confirmed heartbeats plus the bound; a standby does
 * not take a failsafe Lease, nor accept writes, until the bound plus a
 * margin has passed since it last received new WAL from the leader.
 * So the two intervals never overlap (docs/DESIGN.md, "Failsafe mode").
 */
#include "failsafe.h"

#include <stdio.h>
#include <string.h>

/*
 * How far past its members' last confirmed heartbeat a leader may write:
 * ttl/2 within [2 s, 4 s].  Heartbeats go every 250 ms and are confirmed
 * within milliseconds, so a few seconds cover a slow round; more would only
 * lengthen what a partitioned member that wins the election never gets.
 */
int64_t
hapg_failsafe_bound_ms(int ttl_s)
{
	int64_t		b = (int64_t) ttl_s * 500;

	if (b < HAPG_FAILSAFE_MIN_BOUND_MS)
		return HAPG_FAILSAFE_MIN_BOUND_MS;
	return b > HAPG_FAILSAFE_MAX_BOUND_MS ? HAPG_FAILSAFE_MAX_BOUND_MS : b;
}

/* How long after the leader's last message a standby keeps its hands off. */
int64_t
hapg_failsafe_patience_ms(int ttl_s)
{
	return hapg_failsafe_bound_ms(ttl_s) + HAPG_FAILSAFE_MARGIN_MS;
}

/* How often a leader in failsafe writes a heartbeat: the ring covers the bound. */
int64_t
hapg_failsafe_beat_interval_ms(int ttl_s)
{
	int64_t		i = hapg_failsafe_bound_ms(ttl_s) / (HAPG_FAILSAFE_BEATS * 3 / 4);

	return i > 250 ? i : 250;
}

/*
 * Why failsafe mode cannot be used with these settings, or NULL.  Without
 * lease-bounded commits nothing stops a commit at the bound but the fence,
 * which may come late; a standby with wal_receiver_status_interval = 0
 * never reports what it received; a bound under two seconds leaves no room
 * for a heartbeat round and its answers.
 */
const char *
hapg_failsafe_settings_error(int ttl_s, bool lease_bounded_commits,
							 int wal_receiver_status_interval_s)
{
	if (!lease_bounded_commits)
		return "hapg.failsafe_mode needs hapg.lease_bounded_commits = on";
	if (wal_receiver_status_interval_s <= 0)
		return "hapg.failsafe_mode needs wal_receiver_status_interval > 0 (a standby must report what it received)";
	if ((int64_t) ttl_s * 500 < HAPG_FAILSAFE_MIN_BOUND_MS)
		return "hapg.failsafe_mode needs hapg.ttl of at least 4 s";
	return NULL;
}

/*
 * Does a leader write heartbeats now?  From the moment a renewal fails (or
 * one is a loop late), so the proof is there before the fence deadline.
 */
bool
hapg_failsafe_beating(bool enabled, bool published, bool leader, int64_t now_ms,
					  int64_t last_renew_sent_ms, int loop_wait_s, bool api_failing)
{
	if (!enabled || !published || !leader || last_renew_sent_ms <= 0)
		return false;
	return api_failing || now_ms - last_renew_sent_ms >= (int64_t) loop_wait_s * 2000;
}

/* Remember a heartbeat; the oldest goes when the ring is full. */
void
hapg_beats_add(HapgBeats *b, int64_t sent_ms, uint64_t end_lsn)
{
	if (b->n == HAPG_FAILSAFE_BEATS)
	{
		memmove(&b->beat[0], &b->beat[1], sizeof(b->beat[0]) * (HAPG_FAILSAFE_BEATS - 1));
		b->n--;
	}
	b->beat[b->n].sent_ms = sent_ms;
	b->beat[b->n].end_lsn = end_lsn;
	b->n++;
}

/* When the latest heartbeat a write position covers was written, or -1. */
static int64_t
confirmed_at(const HapgBeats *b, uint64_t write_lsn)
{
	int			i;

	for (i = b->n - 1; i >= 0; i--)
		if (b->beat[i].end_lsn <= write_lsn)
			return b->beat[i].sent_ms;
	return -1;
}

static const HapgMemberPos *
find_sender(const HapgFailsafeLeaderIn *in, const char *name)
{
	int			i;

	for (i = 0; i < in->nsenders; i++)
		if (strcmp(in->senders[i].name, name) == 0)
			return &in->senders[i];
	return NULL;
}

/*
 * Until when may a leader past its fence deadline accept writes?  Every
 * member that might take over must have confirmed a heartbeat; the oldest
 * of those confirmations plus the bound.  One member missing or silent and
 * there is no proof.
 */
void
hapg_failsafe_prove(const HapgFailsafeLeaderIn *in, HapgFailsafeProof *out)
{
	int64_t		oldest = -1;
	const char *slowest = NULL;
	int			i;

	memset(out, 0, sizeof(*out));
	if (!in->enabled)
	{
		snprintf(out->why, sizeof(out->why), "hapg.failsafe_mode is off");
		return;
	}
	if (!in->published)
	{
		snprintf(out->why, sizeof(out->why), "my last renewal did not publish the member list");
		return;
	}
	if (in->refused)
	{
		snprintf(out->why, sizeof(out->why), "the Kubernetes API refused this member");
		return;
	}
	for (i = 0; i < in->nrequired; i++)
	{
		const char *name = in->required[i];
		const HapgMemberPos *s;
		int64_t		at;

		if (strcmp(name, in->me) == 0)
			continue;
		if ((s = find_sender(in, name)) == NULL)
		{
			snprintf(out->why, sizeof(out->why),
					 "member \"%s\" is not streaming from this leader", name);
			return;
		}
		if ((at = confirmed_at(in->beats, s->write_lsn)) < 0)
		{
			snprintf(out->why, sizeof(out->why),
					 "member \"%s\" has not confirmed a heartbeat", name);
			return;
		}
		if (oldest < 0 || at < oldest)
		{
			oldest = at;
			slowest = name;
		}
	}
	/* alone in the list: nobody can take over; the latest heartbeat dates it */
	if (oldest < 0)
	{
		if (in->beats->n == 0)
		{
			snprintf(out->why, sizeof(out->why), "no heartbeat written yet");
			return;
		}
		oldest = in->beats->beat[in->beats->n - 1].sent_ms;
	}
	out->until_ms = oldest + hapg_failsafe_bound_ms(in->ttl_s);
	if (out->until_ms <= in->now_ms && slowest)
		snprintf(out->why, sizeof(out->why),
				 "member \"%s\" confirmed no heartbeat for %.1f s (the bound is %.1f s)",
				 slowest, (in->now_ms - oldest) / 1000.0,
				 hapg_failsafe_bound_ms(in->ttl_s) / 1000.0);
}

/*
 * How long a standby must leave an expired Lease alone: 0 when it may take
 * it, -1 when it never may (it is not in the failsafe member list, so the
 * leader does not wait for it), else the time left of its patience since
 * it last received new WAL from the leader.  A Lease released by
 * hapg_failover goes to a listed member at once (its writes wait instead,
 * hapg_failsafe_write_hold_until); one released by a stopped leader (a
 * hand-over), or without the list, has no such rule.
 */
int64_t
hapg_failsafe_hold_ms(const HapgFailsafeReplicaIn *in)
{
	int64_t		left;

	if (!in->lease_failsafe || in->holder_is_me ||
		(!in->holder_named && !in->manual_release))
		return 0;
	if (!in->me_listed)
		return -1;
	if (!in->holder_named)
		return 0;
	left = in->heard_ms + hapg_failsafe_patience_ms(in->ttl_s) - in->now_ms;
	return left > 0 ? left : 0;
}

/*
 * A member that took a failsafe Lease accepts writes only after its
 * patience has passed since it last received new WAL from the old leader
 * (read once its WAL receiver is gone): a heartbeat that arrived while it
 * was taking over may have let the old leader extend its writes.
 */
int64_t
hapg_failsafe_write_hold_until(bool took_failsafe_lease, int64_t heard_ms, int ttl_s)
{
	return took_failsafe_lease ? heard_ms + hapg_failsafe_patience_ms(ttl_s) : 0;
}
