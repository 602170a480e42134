/*
 * check_cost.c
 *		What one lease-bounded commit check costs: the backend's work at
 *		each of its two checks per commit (a read of writable_until and
 *		of the clock, then the rule), timed over many iterations.  Built
 *		and run by bench/commit_check.py; prints nanoseconds per check.
 */
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>

#include "commitrule.h"

/* Time n checks against a deadline far ahead; print ns per check. */
int
main(int argc, char **argv)
{
	long		n = argc > 1 ? atol(argv[1]) : 10000000L;
	_Atomic uint64_t writable_until = UINT64_MAX - 1;
	uint64_t	t0;
	uint64_t	t1;
	long		i;
	long		allowed = 0;

	t0 = hapg_clock_us();
	for (i = 0; i < n; i++)
	{
		HapgCommitInput in;

		in.writable_until_us = atomic_load_explicit(&writable_until, memory_order_relaxed);
		in.now_us = hapg_clock_us();
		in.enabled = true;
		in.writes = true;
		in.bounded_reads = false;
		in.primary = true;
		allowed += hapg_commit_allowed(&in);
	}
	t1 = hapg_clock_us();
	printf("%.1f ns per check (%ld checks, %ld allowed)\n",
		   (double) (t1 - t0) * 1000.0 / n, n, allowed);
	return allowed == n ? 0 : 1;
}
