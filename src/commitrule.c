/*
 * commitrule.c
 *		Lease-bounded commits: the instant until which a leader may
 *		acknowledge a commit, and the test every commit passes.  Pure C, no
 *		PostgreSQL or I/O dependency (unit tested in tests/unit).
 *
 * The clock is CLOCK_BOOTTIME: it keeps running while a process is stopped
 * (SIGSTOP, cgroup freezer, D state) and, unlike CLOCK_MONOTONIC, while
 * the machine is suspended, so a leader that wakes up never believes less
 * time has passed than the other members saw (docs/DESIGN.md).
 */
#include "commitrule.h"

#include <time.h>

#include "lease.h"

/* hapg's one clock, in microseconds: every duration the protocol measures. */
uint64_t
hapg_clock_us(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_BOOTTIME, &ts);
	return (uint64_t) ts.tv_sec * 1000000 + (uint64_t) ts.tv_nsec / 1000;
}

/*
 * What the worker publishes: the fence deadline while it leads (extended
 * only by a successful Lease write, since only the send time of one that
 * succeeded bounds when others can see the Lease expire, or by a failsafe
 * proof, and held back after taking a failsafe Lease), never once it is
 * not the leader or has fenced, and "unguarded" where hapg is not in charge.
 * A leader whose settings became unusable on a reload keeps its deadline:
 * its worker idles and renews no more, and others take over once the Lease
 * expires, so "unguarded" would let it accept commits beside them.
 */
uint64_t
hapg_writable_until(const HapgWritableInput *in)
{
	int64_t		deadline_ms;

	/* a watch event showed another holder: stop before the cycle decides */
	if (in->fenced || in->other_holds)
		return HAPG_WRITABLE_NEVER;
	/* a leader whose settings a reload took away still holds a Lease */
	if (in->leader && in->last_renew_sent_ms > 0)
	{
		/* the old leader may be writable until my hold ends (failsafe.c) */
		if (in->hold_until_ms > 0 && in->now_ms < in->hold_until_ms)
			return HAPG_WRITABLE_NEVER;
		deadline_ms = hapg_fence_deadline_ms(in->last_renew_sent_ms, in->ttl_s,
											 in->fence_margin_ms);
		/* replication proves nobody can take over until then */
		if (in->failsafe_until_ms > deadline_ms)
			deadline_ms = in->failsafe_until_ms;
		return deadline_ms > 0 ? (uint64_t) deadline_ms * 1000 : HAPG_WRITABLE_NEVER;
	}
	if (!in->configured || !in->in_cluster)
		return HAPG_WRITABLE_UNGUARDED;
	return HAPG_WRITABLE_NEVER;
}

/*
 * May this transaction commit (or be prepared, or this read run) now?  Only
 * a transaction that writes needs the Lease, unless hapg.lease_bounded_reads
 * asks the same of reads on a primary (a standby's reads are stale by
 * nature); an unguarded server is stock PostgreSQL.
 */
bool
hapg_commit_allowed(const HapgCommitInput *in)
{
	if (!in->enabled || in->writable_until_us == HAPG_WRITABLE_UNGUARDED)
		return true;
	if (!in->writes && !(in->bounded_reads && in->primary))
		return true;
	return in->now_us <= in->writable_until_us;
}
