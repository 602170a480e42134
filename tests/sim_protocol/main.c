/*
 * main.c
 *		The simulation's runner: many seeds for the safety and liveness
 *		invariants, then the simulator's own tests (it must find the bug of
 *		a leader without a commit guard, and deliberately broken rules), and
 *		the closing line "N passed, N failed".
 *
 *	  sim_protocol [--steps N] [--seed S] [--soak]      the whole run
 *	  sim_protocol --failsafe [--steps N] [--seed S]   failsafe mode's runs only
 *	  sim_protocol --one SEED [--no-guard] [--failsafe]
 *	               [--mutation fence-late|cas|no-takeover|promoting-forgets|
 *	                           fs-skip-silent|fs-impatient|fs-no-write-hold]
 *	               [--observe-at-send] [--steps N]  one run, with its trace
 */
#include "sim.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define STEPS_PER_SEED 250000

typedef struct Totals
{
	int64_t		steps;
	int64_t		sim_ms;
	int64_t		seeds;
	int64_t		faults;
	int64_t		elections;
	int64_t		handovers;
	int64_t		writes;
	int64_t		checks;
	int64_t		quiet;
	int64_t		max_recovery_ms;
	int64_t		lost;
	int64_t		fs_beats;
	int64_t		fs_proof_ms;
	int64_t		fs_holds;
	int64_t		fs_takeovers;
	int			by_n[SIM_MAX_N + 1];
} Totals;

static int	passed = 0;
static int	failed = 0;

/* CPU seconds: the figures say how long a run took. */
static double
cpu_seconds(void)
{
	return (double) clock() / CLOCKS_PER_SEC;
}

/* The last lines of a run's trace, oldest first. */
static void
print_trace(const SimResult *r, int lines)
{
	int			n = r->ntrace < lines ? r->ntrace : lines;
	int			i;

	for (i = 0; i < n; i++)
	{
		int			idx = (r->trace_head - n + i + 2 * SIM_TRACE_LINES) % SIM_TRACE_LINES;

		printf("      %s\n", r->trace[idx]);
	}
}

/* Run a seed again with tracing, and show how it went wrong. */
static void
replay(const SimConfig *base, uint64_t seed, int64_t per_seed, int lines)
{
	SimConfig	c = *base;
	SimResult  *r = malloc(sizeof(SimResult));

	if (r == NULL)
		abort();
	c.seed = seed;
	c.trace = true;
	c.max_steps = per_seed;
	sim_run(&c, r);
	printf("    replay of seed %" PRIu64 " (n=%d ttl=%d loop_wait=%d retry_timeout=%d): %s at step %" PRId64 "\n",
		   seed, r->n, r->ttl, r->loop_wait, r->retry_timeout,
		   r->violated ? r->violation : "no violation", r->violation_step);
	print_trace(r, lines);
	free(r);
}

/* Sum one run into the totals. */
static void
add(Totals *t, const SimResult *r)
{
	t->steps += r->steps;
	t->sim_ms += r->sim_ms;
	t->seeds++;
	t->faults += r->faults;
	t->elections += r->elections;
	t->handovers += r->handovers;
	t->writes += r->writes;
	t->checks += r->checks;
	t->quiet += r->quiet_periods;
	t->lost += r->lost_failover;
	t->fs_beats += r->fs_beats;
	t->fs_proof_ms += r->fs_proof_ms;
	t->fs_holds += r->fs_holds;
	t->fs_takeovers += r->fs_takeovers;
	if (r->max_recovery_ms > t->max_recovery_ms)
		t->max_recovery_ms = r->max_recovery_ms;
	t->by_n[r->n]++;
}

/*
 * Seeds from first on until steps are spent or one violates.  Returns the
 * violating seed, or 0.
 */
static uint64_t
run_seeds(const SimConfig *base, uint64_t first, int64_t steps, int64_t per_seed,
		  Totals *t, SimResult *r)
{
	uint64_t	seed;

	memset(t, 0, sizeof(*t));
	for (seed = first; t->steps < steps; seed++)
	{
		SimConfig	c = *base;

		c.seed = seed;
		c.max_steps = per_seed;
		sim_run(&c, r);
		
		add(t, r);
		if (r->violated)
			return seed;
	}
	return 0;
}

/* The figures of a group of runs. */
static void
print_totals(const char *what, const Totals *t, double secs)
{
	printf("    %s: %" PRId64 " steps over %" PRId64 " seeds (%.1f simulated hours) in %.1f s CPU;\n"
		   "      %" PRId64 " faults, %" PRId64 " Lease acquisitions (%" PRId64 " by hand-over), %" PRId64 " acknowledged writes,\n"
		   "      %" PRId64 " invariant checks, %" PRId64 " quiet periods (longest wait for a leader %.1f s),\n"
		   "      members 3..7: %d/%d/%d/%d/%d seeds; bytes acknowledged then lost in failovers (allowed, asynchronous): %" PRId64 "\n",
		   what, t->steps, t->seeds, t->sim_ms / 3600000.0, secs, t->faults, t->elections,
		   t->handovers, t->writes, t->checks, t->quiet, t->max_recovery_ms / 1000.0,
		   t->by_n[3], t->by_n[4], t->by_n[5], t->by_n[6], t->by_n[7], t->lost);
	if (t->fs_beats > 0)
		printf("      failsafe: %" PRId64 " heartbeats, %.1f simulated minutes writable on a proof past the plain deadline,\n"
			   "      %" PRId64 " decisions leaving an expired Lease alone, %" PRId64 " failsafe Leases taken over\n",
			   t->fs_beats, t->fs_proof_ms / 60000.0, t->fs_holds, t->fs_takeovers);
}

/* A run that must find no violation. */
static void
expect_safe(const char *name, const SimConfig *base, uint64_t first, int64_t steps,
			int64_t per_seed)
{
	Totals		t;
	SimResult  *r = malloc(sizeof(SimResult));
	double		t0 = cpu_seconds();
	uint64_t	bad;

	if (r == NULL)
		abort();
	bad = run_seeds(base, first, steps, per_seed, &t, r);
	print_totals(name, &t, cpu_seconds() - t0);
	if (bad)
	{
		failed++;
		printf("FAIL %s: seed %" PRIu64 " violates: %s\n", name, bad, r->violation);
		replay(base, bad, per_seed, 60);
		printf("    reproduce: tests/sim_protocol/sim_protocol --one %" PRIu64 " --steps %" PRId64 "%s%s%s\n", bad, per_seed,
			   base->commit_guard ? (base->handover_fix ? (base->restart_without_wait ? " --restart-without-wait" : "") : " --no-handover-fix") :
			   base->no_pause ? (base->cut_winners ? " --no-guard --no-pause --cut-winners" : " --no-guard --no-pause") : " --no-guard",
			   base->observe_at_response ? "" : " --observe-at-send",
			   base->failsafe ? " --failsafe" : "");
	}
	else
	{
		passed++;
		printf("ok   %s: no violation\n", name);
	}
	free(r);
}

/* A run that must find a violation (the simulator's own test). */
static void
expect_caught(const char *name, const SimConfig *base, uint64_t first, int64_t steps,
			  const char *flags)
{
	Totals		t;
	SimResult  *r = malloc(sizeof(SimResult));
	double		t0 = cpu_seconds();
	uint64_t	bad;

	if (r == NULL)
		abort();
	bad = run_seeds(base, first, steps, STEPS_PER_SEED, &t, r);
	if (bad)
	{
		passed++;
		printf("ok   %s: caught by seed %" PRIu64 " after %" PRId64 " steps (%.1f s CPU): %s\n",
			   name, bad, t.steps, cpu_seconds() - t0, r->violation);
		replay(base, bad, STEPS_PER_SEED, 14);
		printf("    reproduce: tests/sim_protocol/sim_protocol --one %" PRIu64 " %s\n", bad, flags);
	}
	else
	{
		failed++;
		printf("FAIL %s: not caught in %" PRId64 " steps\n", name, t.steps);
	}
	free(r);
}

/* The same seed twice gives the same run. */
static void
expect_deterministic(const SimConfig *base, uint64_t seed)
{
	SimResult  *a = malloc(sizeof(SimResult));
	SimResult  *b = malloc(sizeof(SimResult));
	SimConfig	c = *base;

	if (a == NULL || b == NULL)
		abort();
	c.seed = seed;
	c.max_steps = STEPS_PER_SEED;
	sim_run(&c, a);
	c.trace = true;				/* tracing must not change the run */
	sim_run(&c, b);
	if (a->digest == b->digest && a->steps == b->steps && a->sim_ms == b->sim_ms)
	{
		passed++;
		printf("ok   determinism: seed %" PRIu64 " twice (once traced): digest %016" PRIx64 ", %" PRId64 " steps both times\n",
			   seed, a->digest, a->steps);
	}
	else
	{
		failed++;
		printf("FAIL determinism: seed %" PRIu64 ": digests %016" PRIx64 " / %016" PRIx64 "\n",
			   seed, a->digest, b->digest);
	}
	free(a);
	free(b);
}

/*
 * Failsafe mode's runs: safe with long API outages, replication cuts and
 * pauses, and each broken rule of failsafe.c's caught.
 */
static void
failsafe_tests(const SimConfig *base, uint64_t first, int64_t steps)
{
	SimConfig	c = *base;

	c.failsafe = true;
	c.mutation = MUT_NONE;
	expect_safe("failsafe mode: safety and liveness with long API outages, leaders cut off, replication cuts",
				&c, first, steps, STEPS_PER_SEED);
	/* rare (one seed in about 110 million steps): the seed that found it */
	c.mutation = MUT_FS_TOOK_ON_ANSWER;
	expect_caught("failsafe mutation: act.c before the fix (a taker whose acquire was stored but unanswered promotes on a renewal without the write hold) is caught",
				  &c, 5028, STEPS_PER_SEED, "--failsafe --mutation fs-took-on-answer");
	c.mutation = MUT_FS_SKIP_SILENT;
	expect_caught("failsafe mutation: a proof leaving out a listed member that has no walsender is caught",
				  &c, first, 20000000, "--failsafe --mutation fs-skip-silent");
	c.mutation = MUT_FS_IMPATIENT;
	expect_caught("failsafe mutation: a standby's patience shorter than the leader's bound is caught",
				  &c, first, 20000000, "--failsafe --mutation fs-impatient");
	c.mutation = MUT_FS_NO_WRITE_HOLD;
	expect_caught("failsafe mutation: a taker's write hold ignored is caught",
				  &c, first, 40000000, "--failsafe --mutation fs-no-write-hold");
}

/* The whole CI run, or one seed with its trace (--one). */
int
main(int argc, char **argv)
{
	SimConfig	base;
	int64_t		steps = 10000000;
	uint64_t	first = 1;
	bool		soak = false;
	bool		one = false;
	bool		failsafe_only = false;
	uint64_t	one_seed = 0;
	int			i;

	memset(&base, 0, sizeof(base));
	base.commit_guard = true;
	base.handover_fix = true;
	base.observe_at_response = true;
	for (i = 1; i < argc; i++)
	{
		if (strcmp(argv[i], "--steps") == 0 && i + 1 < argc)
			steps = strtoll(argv[++i], NULL, 10);
		else if (strcmp(argv[i], "--seed") == 0 && i + 1 < argc)
			first = strtoull(argv[++i], NULL, 10);
		else if (strcmp(argv[i], "--soak") == 0)
			soak = true;
		else if (strcmp(argv[i], "--one") == 0 && i + 1 < argc)
		{
			one = true;
			one_seed = strtoull(argv[++i], NULL, 10);
		}
		else if (strcmp(argv[i], "--no-guard") == 0)
			base.commit_guard = false;
		else if (strcmp(argv[i], "--whole-pauses") == 0)
			base.whole_pauses_only = true;
		else if (strcmp(argv[i], "--cut-winners") == 0)
			base.cut_winners = true;
		else if (strcmp(argv[i], "--worker-stalls") == 0)
			base.worker_stalls_only = true;
		else if (strcmp(argv[i], "--no-pause") == 0)
			base.no_pause = true;
		else if (strcmp(argv[i], "--restart-without-wait") == 0)
			base.restart_without_wait = true;
		else if (strcmp(argv[i], "--no-handover-fix") == 0)
			base.handover_fix = false;
		else if (strcmp(argv[i], "--observe-at-send") == 0)
			base.observe_at_response = false;
		else if (strcmp(argv[i], "--failsafe") == 0)
			failsafe_only = base.failsafe = true;
		else if (strcmp(argv[i], "--mutation") == 0 && i + 1 < argc)
		{
			i++;
			base.mutation = strcmp(argv[i], "fence-late") == 0 ? MUT_FENCE_LATE :
				strcmp(argv[i], "cas") == 0 ? MUT_CAS_IGNORES_RV :
				strcmp(argv[i], "no-takeover") == 0 ? MUT_NO_TAKEOVER :
				strcmp(argv[i], "promoting-forgets") == 0 ? MUT_PROMOTING_FORGETS :
				strcmp(argv[i], "fs-skip-silent") == 0 ? MUT_FS_SKIP_SILENT :
				strcmp(argv[i], "fs-impatient") == 0 ? MUT_FS_IMPATIENT :
				strcmp(argv[i], "fs-no-write-hold") == 0 ? MUT_FS_NO_WRITE_HOLD :
				strcmp(argv[i], "fs-took-on-answer") == 0 ? MUT_FS_TOOK_ON_ANSWER : MUT_NONE;
		}
		else
		{
			fprintf(stderr, "usage: %s [--steps N] [--seed S] [--soak] | --one SEED [--no-guard] [--no-handover-fix] [--restart-without-wait] [--whole-pauses] [--worker-stalls] [--cut-winners] [--no-pause] [--failsafe] [--mutation fence-late|cas|no-takeover|promoting-forgets|fs-skip-silent|fs-impatient|fs-no-write-hold|fs-took-on-answer] [--observe-at-send] [--steps N]\n",
					argv[0]);
			return 2;
		}
	}

	if (one)
	{
		SimResult  *r = malloc(sizeof(SimResult));

		if (r == NULL)
			abort();
		base.seed = one_seed;
		base.max_steps = steps == 10000000 ? STEPS_PER_SEED : steps;
		base.trace = true;
		sim_run(&base, r);
		printf("seed %" PRIu64 ": n=%d ttl=%d loop_wait=%d retry_timeout=%d, %" PRId64 " steps, %.1f simulated minutes, digest %016" PRIx64 "\n",
			   one_seed, r->n, r->ttl, r->loop_wait, r->retry_timeout, r->steps,
			   r->sim_ms / 60000.0, r->digest);
		printf("%s\n", r->violated ? r->violation : "no violation");
		print_trace(r, SIM_TRACE_LINES);
		i = r->violated ? 1 : 0;
		free(r);
		return i;
	}

	printf("sim_protocol: the lease protocol (src/lease.c, src/steer.c) in a simulated world\n");
	printf("  invariants after every step: at most one member accepts writes; a member accepting\n"
		   "  writes holds the Lease and nobody's view of it has expired; a hand-over loses no\n"
		   "  acknowledged write; a leader accepts writes within 3 ttl + 4 request timeouts + 10 s\n"
		   "  once faults stop\n");
	printf("  seeds from %" PRIu64 ", %d steps each; writes accepted while primary and before writable_until\n",
		   first, STEPS_PER_SEED);
	if (failsafe_only)
	{
		/* --failsafe: failsafe mode's runs alone, as long as asked */
		failsafe_tests(&base, first, steps);
		expect_deterministic(&base, first + 7);
		printf("sim_protocol: %d passed, %d failed\n", passed, failed);
		return failed == 0 ? 0 : 1;
	}

	expect_safe("safety and liveness, with the commit guard", &base, first, steps,
				soak ? 4 * STEPS_PER_SEED : STEPS_PER_SEED);

	{
		SimConfig	c = base;

		c.commit_guard = false;
		c.whole_pauses_only = true;
		expect_caught("without the commit guard a leader SIGSTOPped past its ttl and resumed is caught (issue 9)",
					  &c, first, 20000000, "--no-guard --whole-pauses");
		c.whole_pauses_only = false;
		c.worker_stalls_only = true;
		expect_caught("without the commit guard a leader whose worker stalls past its ttl is caught (issue 9)",
					  &c, first, 20000000, "--no-guard --worker-stalls");
		c.worker_stalls_only = false;
		c.commit_guard = false;
		c.no_pause = true;
		expect_safe("without the commit guard and without pauses", &c, first + 1000000,
					soak ? steps : steps / 5, STEPS_PER_SEED);
	}
	{
		SimConfig	c = base;

		c.mutation = MUT_FENCE_LATE;
		expect_caught("mutation: fencing one second late is caught", &c, first, 20000000,
					  "--mutation fence-late");
		c.mutation = MUT_CAS_IGNORES_RV;
		expect_caught("mutation: CAS ignoring the resourceVersion is caught", &c, first, 20000000,
					  "--mutation cas");
		c.mutation = MUT_PROMOTING_FORGETS;
		c.commit_guard = false;
		c.no_pause = true;
		c.cut_winners = true;
		expect_caught("without the commit guard, lease.c before its fix (a promoting winner cut off from the API never fences): caught",
					  &c, first, 40000000, "--mutation promoting-forgets --no-guard --no-pause --cut-winners");
		c.mutation = MUT_NONE;
		expect_safe("the same schedule with lease.c as it is", &c, first, soak ? steps : steps / 5,
					STEPS_PER_SEED);
		c = base;
		c.mutation = MUT_NO_TAKEOVER;
		expect_caught("mutation: standbys never taking an expired Lease is caught (liveness)", &c,
					  first, 20000000, "--mutation no-takeover");
	}
	{
		SimConfig	c = base;

		c.handover_fix = false;
		c.restart_without_wait = true;
		expect_caught("today's hand-over process releases a Lease its restarted server renewed: caught",
					  &c, first, 40000000, "--no-handover-fix --restart-without-wait");
		c.handover_fix = true;
		expect_safe("the same stress with the hand-over process checking its own renewal", &c,
					first, soak ? steps : steps / 5, STEPS_PER_SEED);
		c = base;
		c.observe_at_response = false;
		expect_caught("today's read_lease stamping a read with its send time: caught",
					  &c, first, 40000000, "--observe-at-send");
	}
	failsafe_tests(&base, first, soak ? steps : 3000000);
	expect_deterministic(&base, first + 7);
	{
		SimConfig	c = base;

		c.failsafe = true;
		expect_deterministic(&c, first + 7);
	}

	printf("sim_protocol: %d passed, %d failed\n", passed, failed);
	return failed == 0 ? 0 : 1;
}
