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

#include <ctype.h>
#include <inttypes.h>
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
 * Where a WAL record of len bytes starting at start ends, counting the page
 * headers it crosses (long at a segment start, short otherwise): a hand-over
 * target must have received the old leader's shutdown checkpoint whole.
 */
uint64_t
hapg_wal_record_end(uint64_t start, uint32_t len, uint32_t page_size,
					uint32_t seg_size, uint32_t short_header,
					uint32_t long_header)
{
	uint64_t	pos = start;
	uint64_t	left = len;

	if (page_size == 0 || seg_size == 0)
		return start + len;
	while (left > 0)
	{
		uint64_t	in_page = page_size - pos % page_size;

		if (pos % page_size == 0)
		{
			uint32_t	hdr = pos % seg_size == 0 ? long_header : short_header;

			pos += hdr;
			in_page -= hdr;
		}
		if (left <= in_page)
			return pos + left;
		left -= in_page;
		pos += in_page;
	}
	return pos;
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
	int64_t		fence_at = in->last_renew_sent_ms + ttl_ms - in->fence_margin_ms;

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
		if (in->was_leader && in->last_renew_sent_ms > 0 && in->now_ms >= fence_at &&
			!in->paused)
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
	if (in->paused)
	{
		out->reason = "paused: no automatic failover";
		return;
	}
	decide_election(in, out);
}

/*
 * A leader must be able to retry a failed renewal twice and still act before
 * its Lease runs out: the rule Patroni users know.
 */
bool
hapg_timing_valid(int ttl_s, int loop_wait_s, int retry_timeout_s,
				  char *msg, int msglen)
{
	if (ttl_s <= 0 || loop_wait_s <= 0 || retry_timeout_s <= 0)
	{
		snprintf(msg, msglen, "hapg.ttl, hapg.loop_wait and hapg.retry_timeout must be positive");
		return false;
	}
	if ((int64_t) loop_wait_s + 2 * (int64_t) retry_timeout_s > ttl_s)
	{
		snprintf(msg, msglen,
				 "hapg.loop_wait (%ds) + 2 * hapg.retry_timeout (%ds) = %llds exceeds hapg.ttl (%ds)",
				 loop_wait_s, retry_timeout_s,
				 (long long) ((int64_t) loop_wait_s + 2 * (int64_t) retry_timeout_s), ttl_s);
		return false;
	}
	if (msglen > 0)
		msg[0] = '\0';
	return true;
}

/*
 * Member names become Pod names and Lease holders: accept only what
 * Kubernetes accepts as a DNS-1123 subdomain, at most 63 characters.
 */
bool
hapg_valid_member_name(const char *name)
{
	size_t		len = strlen(name);
	size_t		i;

	if (len == 0 || len >= HAPG_NAME_LEN)
		return false;
	for (i = 0; i < len; i++)
	{
		unsigned char c = (unsigned char) name[i];

		if (!(islower(c) || isdigit(c) || c == '-' || c == '.'))
			return false;
	}
	return isalnum((unsigned char) name[0]) && isalnum((unsigned char) name[len - 1]);
}

/* WAL positions travel as PostgreSQL prints them: "X/Y" in hex. */
bool
hapg_parse_lsn(const char *s, uint64_t *lsn)
{
	unsigned int hi,
				lo;
	int			n = 0;

	if (s == NULL || sscanf(s, "%X/%X%n", &hi, &lo, &n) != 2 || s[n] != '\0')
		return false;
	*lsn = ((uint64_t) hi << 32) | lo;
	return true;
}

void
hapg_format_lsn(uint64_t lsn, char *buf, int buflen)
{
	snprintf(buf, buflen, "%X/%X", (unsigned int) (lsn >> 32), (unsigned int) lsn);
}

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

const char *
hapg_action_name(HapgAction action)
{
	switch (action)
	{
		case HAPG_ACT_CREATE:
			return "create";
		case HAPG_ACT_ACQUIRE:
			return "acquire";
		case HAPG_ACT_RENEW:
			return "renew";
		case HAPG_ACT_CANDIDACY:
			return "candidacy";
		case HAPG_ACT_RELEASE:
			return "release";
		case HAPG_ACT_FENCE:
			return "fence";
		default:
			return "none";
	}
}
