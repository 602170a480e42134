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
 * The decision table of the core protocol.  Rows are checked in order; the
 * first match wins.  A standby never takes the Lease here: failover is a
 * separate set of rows.
 */
void
hapg_lease_decide(const HapgDecisionInput *in, HapgDecision *out)
{
	const HapgLeaseView *l = &in->lease;
	bool		mine;
	bool		expired;
	int64_t		ttl_ms = (int64_t) in->ttl_s * 1000;

	memset(out, 0, sizeof(*out));
	out->action = HAPG_ACT_NONE;
	out->role = in->in_recovery ? HAPG_ROLE_REPLICA : HAPG_ROLE_UNKNOWN;

	/* Without my own Pod I am not a member: take no part at all. */
	if (!in->pod_exists)
	{
		out->role = HAPG_ROLE_UNKNOWN;
		out->reason = "own Pod not found";
		return;
	}

	/* The API could not be read: nothing can be written either. */
	if (!l->known)
	{
		if (!in->in_recovery && in->was_leader)
		{
			int64_t		left = in->last_renew_sent_ms + ttl_ms - in->now_ms;

			out->expires_in_ms = left > 0 ? left : 0;
			if (left > 0)
			{
				out->role = HAPG_ROLE_LEADER;
				out->reason = "Kubernetes API unreachable; Lease still valid";
			}
			else
			{
				out->role = HAPG_ROLE_UNLEASED_PRIMARY;
				out->renew_overdue = true;
				out->reason = "Kubernetes API unreachable; Lease could not be renewed";
			}
		}
		else
		{
			if (!in->in_recovery)
				out->role = HAPG_ROLE_UNLEASED_PRIMARY;
			out->reason = "Kubernetes API unreachable";
		}
		return;
	}

	if (!l->exists)
	{
		out->lost_lease = in->was_leader;
		if (in->in_recovery)
		{
			out->reason = "no Lease; a standby does not take it";
			return;
		}
		out->action = HAPG_ACT_CREATE;
		out->role = HAPG_ROLE_LEADER;
		out->expires_in_ms = ttl_ms;
		out->reason = "no Lease exists; creating it";
		return;
	}

	mine = strcmp(l->holder, in->me) == 0;
	expired = hapg_lease_expired(l, in->now_ms, &out->expires_in_ms);

	if (mine)
	{
		if (in->in_recovery)
		{
			out->reason = "Lease names me but I am a standby; not renewing";
			return;
		}
		if (in->last_renew_sent_ms > 0)
		{
			int64_t		left = in->last_renew_sent_ms + ttl_ms - in->now_ms;

			out->expires_in_ms = left > 0 ? left : 0;
			out->renew_overdue = left <= 0;
		}
		out->role = HAPG_ROLE_LEADER;
		/* an early wake-up must not add writes: one renewal per loop */
		if (in->last_renew_sent_ms > 0 &&
			in->now_ms - in->last_renew_sent_ms < in->renew_interval_ms * 9 / 10)
		{
			out->reason = "Lease held; renewal not due yet";
			return;
		}
		out->action = HAPG_ACT_RENEW;
		out->reason = "renewing my Lease";
		return;
	}

	/* Someone else, or nobody, holds it. */
	out->lost_lease = in->was_leader;
	if (in->in_recovery)
	{
		out->reason = expired ? "Lease expired; standbys wait for failover"
			: "following the Lease holder";
		return;
	}
	if (expired)
	{
		out->action = HAPG_ACT_ACQUIRE;
		out->role = HAPG_ROLE_LEADER;
		out->expires_in_ms = ttl_ms;
		out->reason = l->holder[0] ? "Lease expired; taking it" : "Lease released; taking it";
		return;
	}
	out->role = HAPG_ROLE_UNLEASED_PRIMARY;
	out->reason = "another member holds a valid Lease";
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
				 "hapg.loop_wait (%ds) + 2 * hapg.retry_timeout (%ds) = %ds exceeds hapg.ttl (%ds)",
				 loop_wait_s, retry_timeout_s,
				 loop_wait_s + 2 * retry_timeout_s, ttl_s);
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
		default:
			return "none";
	}
}
