/*
 * Unit tests of synchronous replication's rules (src/syncrep.c): the target
 * set, the order of the steps towards it, the set a new leader starts from,
 * the takeover quorum, synchronous_standby_names, and a randomized model of
 * a leader, its standbys and its commits that checks the safety argument of
 * syncrep.h after every event.
 */
#include "unit.h"
#include "syncrep.h"

#include <stdlib.h>

#define W1 HAPG_SYNC_WAIT_PREFIX "1"
#define W2 HAPG_SYNC_WAIT_PREFIX "2"
#define W3 HAPG_SYNC_WAIT_PREFIX "3"

/* A defined set of k over space-separated names (kept sorted by the add). */
static HapgSyncSet
set_of(HapgSyncMode mode, int k, const char *names)
{
	HapgSyncSet s;
	char		buf[1024];
	char	   *tok;
	char	   *save = NULL;

	hapg_sync_set_clear(&s);
	s.defined = true;
	s.mode = mode;
	s.k = k;
	snprintf(buf, sizeof(buf), "%s", names);
	for (tok = strtok_r(buf, " ", &save); tok; tok = strtok_r(NULL, " ", &save))
		hapg_sync_set_add(&s, tok);
	return s;
}

/* "-" for undefined, else "k (names in stored order)": readable failures. */
static const char *
set_str(const HapgSyncSet *s)
{
	static char bufs[4][2048];
	static int	next = 0;
	char	   *b = bufs[next++ % 4];
	int			len;
	int			i;

	if (!s->defined)
		return "-";
	len = snprintf(b, 2048, "%d (", s->k);
	for (i = 0; i < s->n; i++)
		len += snprintf(b + len, 2048 - len, "%s%s", i ? " " : "", s->names[i]);
	snprintf(b + len, 2048 - len, ")");
	return b;
}

/* A standby as the leader sees it. */
static HapgSyncStandby
sby(const char *name, bool streaming, bool nosync, uint64_t flush)
{
	HapgSyncStandby s;

	memset(&s, 0, sizeof(s));
	snprintf(s.name, sizeof(s.name), "%s", name);
	s.streaming = streaming;
	s.nosync = nosync;
	s.flush = flush;
	return s;
}

/* hapg_sync_target's answer, as set_str. */
static const char *
target_str(HapgSyncMode mode, bool strict, int count, int64_t max_lag, uint64_t leader,
		   const HapgSyncStandby *sb, int nsb, const HapgSyncSet *published)
{
	HapgSyncSet out;

	hapg_sync_target(mode, strict, count, max_lag, leader, sb, nsb, published, &out);
	return set_str(&out);
}

/* Names, modes and the sorted set underneath every other rule. */
TEST(syncrep_modes_and_sets)
{
	HapgSyncMode m = HAPG_SYNC_OFF;
	HapgSyncMode modes[3] = {HAPG_SYNC_OFF, HAPG_SYNC_ON, HAPG_SYNC_QUORUM};
	HapgSyncSet s,
				t;
	char		name[HAPG_NAME_LEN + 1];
	int			i;
	bool		sorted = true;

	for (i = 0; i < 3; i++)
	{
		m = (HapgSyncMode) 99;
		CHECK(hapg_sync_parse_mode(hapg_sync_mode_name(modes[i]), &m) && m == modes[i]);
	}
	CHECK_STR(hapg_sync_mode_name(HAPG_SYNC_OFF), "off");
	CHECK_STR(hapg_sync_mode_name(HAPG_SYNC_ON), "on");
	CHECK_STR(hapg_sync_mode_name(HAPG_SYNC_QUORUM), "quorum");
	m = HAPG_SYNC_ON;
	CHECK(!hapg_sync_parse_mode("ON", &m) && m == HAPG_SYNC_ON);
	CHECK(!hapg_sync_parse_mode("", &m));
	CHECK(!hapg_sync_parse_mode("quorum ", &m));
	CHECK(!hapg_sync_parse_mode("true", &m));
	CHECK(!hapg_sync_parse_mode(NULL, &m) && m == HAPG_SYNC_ON);

	CHECK(hapg_sync_is_placeholder(W1));
	CHECK(!hapg_sync_is_placeholder("pg-1"));
	CHECK(!hapg_valid_member_name(W1));

	/* sorted whatever the order of the adds, duplicates ignored */
	hapg_sync_set_clear(&s);
	CHECK(!s.defined && s.n == 0 && s.k == 0);
	CHECK(hapg_sync_set_add(&s, "pg-2"));
	CHECK(hapg_sync_set_add(&s, "pg-0"));
	CHECK(hapg_sync_set_add(&s, W1));
	CHECK(hapg_sync_set_add(&s, "pg-1"));
	CHECK(hapg_sync_set_add(&s, "pg-0"));
	CHECK(s.n == 4);
	/* '_' sorts before the letters: stand-ins come first */
	CHECK_STR(s.names[0], W1);
	CHECK_STR(s.names[1], "pg-0");
	CHECK_STR(s.names[2], "pg-1");
	CHECK_STR(s.names[3], "pg-2");
	CHECK(hapg_sync_set_has(&s, "pg-1") && !hapg_sync_set_has(&s, "pg-3"));
	/* empty or too long: refused */
	CHECK(!hapg_sync_set_add(&s, ""));
	memset(name, 'a', HAPG_NAME_LEN);
	name[HAPG_NAME_LEN] = '\0';
	CHECK(!hapg_sync_set_add(&s, name));
	name[HAPG_NAME_LEN - 1] = '\0';
	CHECK(hapg_sync_set_add(&s, name));
	CHECK(s.n == 5);

	/* full: the 33rd name is refused, the 32 stay sorted */
	hapg_sync_set_clear(&s);
	for (i = 0; i < HAPG_MAX_MEMBERS; i++)
	{
		snprintf(name, sizeof(name), "m-%02d", (i * 7) % HAPG_MAX_MEMBERS);
		CHECK(hapg_sync_set_add(&s, name));
	}
	CHECK(s.n == HAPG_MAX_MEMBERS);
	CHECK(!hapg_sync_set_add(&s, "z-extra"));
	CHECK(hapg_sync_set_add(&s, "m-05"));	/* already in: fine */
	CHECK(s.n == HAPG_MAX_MEMBERS && !hapg_sync_set_has(&s, "z-extra"));
	for (i = 1; i < s.n; i++)
		if (strcmp(s.names[i - 1], s.names[i]) >= 0)
			sorted = false;
	CHECK(sorted);

	/* equal: same k over the same names, or both undefined; mode aside */
	s = set_of(HAPG_SYNC_ON, 1, "b a");
	t = set_of(HAPG_SYNC_QUORUM, 1, "a b");
	CHECK(hapg_sync_set_equal(&s, &t));
	t.k = 2;
	CHECK(!hapg_sync_set_equal(&s, &t));
	t = set_of(HAPG_SYNC_ON, 1, "a b c");
	CHECK(!hapg_sync_set_equal(&s, &t));
	t = set_of(HAPG_SYNC_ON, 1, "a c");
	CHECK(!hapg_sync_set_equal(&s, &t));
	t = s;
	t.defined = false;
	CHECK(!hapg_sync_set_equal(&s, &t));
	s = set_of(HAPG_SYNC_ON, 2, "x");
	s.defined = false;
	CHECK(hapg_sync_set_equal(&s, &t));
}

/* The two coverage rules of syncrep.h, on their arithmetic. */
TEST(syncrep_coverage_rules)
{
	HapgSyncSet a1 = set_of(HAPG_SYNC_ON, 1, "a");
	HapgSyncSet b1 = set_of(HAPG_SYNC_ON, 1, "b");
	HapgSyncSet ab1 = set_of(HAPG_SYNC_ON, 1, "a b");
	HapgSyncSet ab2 = set_of(HAPG_SYNC_ON, 2, "a b");
	HapgSyncSet abc2 = set_of(HAPG_SYNC_QUORUM, 2, "a b c");
	HapgSyncSet a0 = set_of(HAPG_SYNC_ON, 0, "a");
	HapgSyncSet undef;

	hapg_sync_set_clear(&undef);
	/* configured (Vc, kc) covered by published (V, k): kc - |Vc \ V| >= k */
	CHECK(hapg_sync_configured_covered(&b1, &ab1));
	CHECK(!hapg_sync_configured_covered(&b1, &a1));
	CHECK(hapg_sync_configured_covered(&abc2, &ab1));
	CHECK(!hapg_sync_configured_covered(&abc2, &ab2));
	CHECK(hapg_sync_configured_covered(&ab2, &abc2));
	CHECK(hapg_sync_configured_covered(&undef, &undef));
	CHECK(hapg_sync_configured_covered(&undef, &a0));
	CHECK(hapg_sync_configured_covered(&a1, &undef));
	CHECK(!hapg_sync_configured_covered(&undef, &a1));
	CHECK(!hapg_sync_configured_covered(&a0, &a1));

	/* (V, k) to (V', k') at once: k - |V \ V'| >= k' */
	CHECK(hapg_sync_change_covered(&a1, &ab1));
	CHECK(!hapg_sync_change_covered(&ab1, &b1));
	CHECK(hapg_sync_change_covered(&ab2, &b1));
	CHECK(hapg_sync_change_covered(&abc2, &ab1));
	CHECK(!hapg_sync_change_covered(&abc2, &ab2));
	CHECK(!hapg_sync_change_covered(&a1, &ab2));
	CHECK(hapg_sync_change_covered(&a1, &undef));
	CHECK(hapg_sync_change_covered(&a1, &a0));
	CHECK(!hapg_sync_change_covered(&undef, &a1));
	CHECK(!hapg_sync_change_covered(&a0, &a1));
}

/* "on": the count best eligible standbys, kept ones first, laggards last. */
TEST(syncrep_target_on)
{
	HapgSyncStandby sb[6];
	HapgSyncSet pub = set_of(HAPG_SYNC_ON, 1, "a");
	HapgSyncSet out;

	sb[0] = sby("a", true, false, 100);
	sb[1] = sby("b", true, false, 200);
	sb[2] = sby("c", true, false, 150);

	hapg_sync_target(HAPG_SYNC_ON, false, 1, -1, 300, sb, 3, NULL, &out);
	CHECK(out.defined && out.mode == HAPG_SYNC_ON && !out.strict);
	CHECK_STR(set_str(&out), "1 (b)");
	CHECK_STR(target_str(HAPG_SYNC_ON, false, 2, -1, 300, sb, 3, NULL), "2 (b c)");
	CHECK_STR(target_str(HAPG_SYNC_ON, false, 3, -1, 300, sb, 3, NULL), "3 (a b c)");
	/* too few and not strict: fewer acknowledgements */
	CHECK_STR(target_str(HAPG_SYNC_ON, false, 4, -1, 300, sb, 3, NULL), "3 (a b c)");
	/* a count below 1 counts as 1 */
	CHECK_STR(target_str(HAPG_SYNC_ON, false, 0, -1, 300, sb, 3, NULL), "1 (b)");

	/* one already published stays over a more advanced one */
	CHECK_STR(target_str(HAPG_SYNC_ON, false, 1, -1, 300, sb, 3, &pub), "1 (a)");
	CHECK_STR(target_str(HAPG_SYNC_ON, false, 2, -1, 300, sb, 3, &pub), "2 (a b)");
	/* ... only if the published set is defined */
	pub.defined = false;
	CHECK_STR(target_str(HAPG_SYNC_ON, false, 1, -1, 300, sb, 3, &pub), "1 (b)");
	pub.defined = true;

	/* not eligible: nosync, not streaming, not a member name */
	sb[1].nosync = true;
	CHECK_STR(target_str(HAPG_SYNC_ON, false, 1, -1, 300, sb, 3, NULL), "1 (c)");
	sb[1].nosync = false;
	sb[1].streaming = false;
	CHECK_STR(target_str(HAPG_SYNC_ON, false, 1, -1, 300, sb, 3, NULL), "1 (c)");
	CHECK_STR(target_str(HAPG_SYNC_ON, false, 3, -1, 300, sb, 3, NULL), "2 (a c)");
	sb[1].streaming = true;
	sb[3] = sby("Bad", true, false, 290);
	sb[4] = sby(W1, true, false, 295);
	sb[5] = sby("", true, false, 299);
	CHECK_STR(target_str(HAPG_SYNC_ON, false, 1, -1, 300, sb, 6, NULL), "1 (b)");
	CHECK_STR(target_str(HAPG_SYNC_ON, false, 5, -1, 300, sb, 6, NULL), "3 (a b c)");

	/* lagging (max_lag 50 behind 300): a and c lag, b does not */
	sb[1].flush = 280;
	CHECK_STR(target_str(HAPG_SYNC_ON, false, 1, 50, 300, sb, 3, &pub), "1 (b)");
	/* a lagging one stays when nobody else can take its place */
	sb[1].nosync = true;
	CHECK_STR(target_str(HAPG_SYNC_ON, false, 1, 50, 300, sb, 3, &pub), "1 (a)");
	sb[1].nosync = false;
	/* the lag must exceed max_lag; -1 never lags */
	CHECK_STR(target_str(HAPG_SYNC_ON, false, 1, 200, 300, sb, 3, &pub), "1 (a)");
	CHECK_STR(target_str(HAPG_SYNC_ON, false, 1, 199, 300, sb, 3, &pub), "1 (b)");
	CHECK_STR(target_str(HAPG_SYNC_ON, false, 1, -1, 300, sb, 3, &pub), "1 (a)");
	/* count 2: b, then the kept a before the more advanced c (both lag) */
	CHECK_STR(target_str(HAPG_SYNC_ON, false, 2, 50, 300, sb, 3, &pub), "2 (a b)");
	pub = set_of(HAPG_SYNC_ON, 1, "b");
	CHECK_STR(target_str(HAPG_SYNC_ON, false, 2, 50, 300, sb, 3, &pub), "2 (b c)");

	/* off: no synchronous state at all */
	hapg_sync_target(HAPG_SYNC_OFF, true, 2, -1, 300, sb, 3, &pub, &out);
	CHECK(!out.defined && out.n == 0 && out.k == 0);
}

/* "quorum": every eligible standby, ANY min(count, n). */
TEST(syncrep_target_quorum)
{
	HapgSyncStandby sb[3];
	HapgSyncSet out;

	sb[0] = sby("a", true, false, 100);
	sb[1] = sby("b", true, false, 200);
	sb[2] = sby("c", true, false, 150);
	hapg_sync_target(HAPG_SYNC_QUORUM, false, 2, -1, 300, sb, 3, NULL, &out);
	CHECK(out.defined && out.mode == HAPG_SYNC_QUORUM);
	CHECK_STR(set_str(&out), "2 (a b c)");
	CHECK_STR(target_str(HAPG_SYNC_QUORUM, false, 1, -1, 300, sb, 3, NULL), "1 (a b c)");
	CHECK_STR(target_str(HAPG_SYNC_QUORUM, false, 5, -1, 300, sb, 3, NULL), "3 (a b c)");
	/* laggards are in too: any k of them will do */
	CHECK_STR(target_str(HAPG_SYNC_QUORUM, false, 2, 10, 300, sb, 3, NULL), "2 (a b c)");
	sb[1].nosync = true;
	CHECK_STR(target_str(HAPG_SYNC_QUORUM, false, 2, -1, 300, sb, 3, NULL), "2 (a c)");
	sb[2].streaming = false;
	CHECK_STR(target_str(HAPG_SYNC_QUORUM, false, 2, -1, 300, sb, 3, NULL), "1 (a)");
	sb[0].streaming = false;
	CHECK_STR(target_str(HAPG_SYNC_QUORUM, false, 2, -1, 300, sb, 3, NULL), "0 ()");
}

/* Strict: stand-ins up to count, so that commits wait for the missing ones. */
TEST(syncrep_target_strict)
{
	HapgSyncStandby sb[3];
	HapgSyncSet out;
	HapgSyncSet pub;

	sb[0] = sby("a", false, false, 100);
	sb[1] = sby("b", true, false, 200);
	sb[2] = sby("c", true, true, 150);
	hapg_sync_target(HAPG_SYNC_ON, true, 2, -1, 300, sb, 3, NULL, &out);
	CHECK(out.defined && out.strict && out.k == 2);
	CHECK_STR(set_str(&out), "2 (" W1 " b)");
	CHECK_STR(target_str(HAPG_SYNC_QUORUM, true, 3, -1, 300, sb, 3, NULL), "3 (" W1 " " W2 " b)");
	CHECK_STR(target_str(HAPG_SYNC_ON, true, 3, -1, 300, sb, 0, NULL), "3 (" W1 " " W2 " " W3 ")");
	/* enough standbys: no stand-in */
	CHECK_STR(target_str(HAPG_SYNC_ON, true, 1, -1, 300, sb, 3, NULL), "1 (b)");
	sb[0].streaming = true;
	CHECK_STR(target_str(HAPG_SYNC_ON, true, 2, -1, 300, sb, 3, NULL), "2 (a b)");
	/* those that were synchronous stay while too few stream, then stand-ins */
	pub = set_of(HAPG_SYNC_ON, 2, "a b");
	pub.strict = true;
	sb[0].streaming = false;
	CHECK_STR(target_str(HAPG_SYNC_ON, true, 2, -1, 300, sb, 3, &pub), "2 (a b)");
	CHECK_STR(target_str(HAPG_SYNC_ON, true, 3, -1, 300, sb, 3, &pub), "3 (" W1 " a b)");
	CHECK_STR(target_str(HAPG_SYNC_QUORUM, true, 2, -1, 300, sb, 3, &pub), "2 (a b)");
	/* ... not its stand-ins, and not once enough others stream */
	pub = set_of(HAPG_SYNC_ON, 2, W2 " a");
	CHECK_STR(target_str(HAPG_SYNC_ON, true, 2, -1, 300, sb, 3, &pub), "2 (a b)");
	CHECK_STR(target_str(HAPG_SYNC_ON, true, 3, -1, 300, sb, 3, &pub), "3 (" W1 " a b)");
	pub = set_of(HAPG_SYNC_ON, 1, "a");
	sb[2].nosync = false;
	CHECK_STR(target_str(HAPG_SYNC_ON, true, 2, -1, 300, sb, 3, &pub), "2 (b c)");
	/* not strict: stopped ones are not kept */
	sb[2].nosync = true;
	CHECK_STR(target_str(HAPG_SYNC_ON, false, 2, -1, 300, sb, 3, &pub), "1 (b)");
	sb[0].streaming = true;

	/* not strict and nobody: defined, nothing waits */
	hapg_sync_target(HAPG_SYNC_ON, false, 2, -1, 300, sb, 0, NULL, &out);
	CHECK(out.defined && out.n == 0 && out.k == 0);
}

/*
 * The takeover quorum: |V| - k + 1 witnesses meet any k that acknowledged,
 * and one fewer does not.  3 members: 2 standbys; 5 members: 4 standbys.
 */
TEST(syncrep_quorum_arithmetic)
{
	HapgSyncStandby sb[4];
	HapgSyncSet out;
	HapgSyncSet undef;
	int			n,
				k;

	sb[0] = sby("pg-1", true, false, 100);
	sb[1] = sby("pg-2", true, false, 100);
	sb[2] = sby("pg-3", true, false, 100);
	sb[3] = sby("pg-4", true, false, 100);

	/* 3 members */
	hapg_sync_target(HAPG_SYNC_QUORUM, false, 1, -1, 100, sb, 2, NULL, &out);
	CHECK(out.n == 2 && out.k == 1 && hapg_sync_witnesses_needed(&out) == 2);
	hapg_sync_target(HAPG_SYNC_QUORUM, false, 2, -1, 100, sb, 2, NULL, &out);
	CHECK(out.n == 2 && out.k == 2 && hapg_sync_witnesses_needed(&out) == 1);
	hapg_sync_target(HAPG_SYNC_ON, false, 1, -1, 100, sb, 2, NULL, &out);
	CHECK(out.n == 1 && out.k == 1 && hapg_sync_witnesses_needed(&out) == 1);

	/* 5 members */
	hapg_sync_target(HAPG_SYNC_QUORUM, false, 2, -1, 100, sb, 4, NULL, &out);
	CHECK(out.n == 4 && out.k == 2 && hapg_sync_witnesses_needed(&out) == 3);
	hapg_sync_target(HAPG_SYNC_QUORUM, false, 1, -1, 100, sb, 4, NULL, &out);
	CHECK(hapg_sync_witnesses_needed(&out) == 4);
	hapg_sync_target(HAPG_SYNC_QUORUM, false, 3, -1, 100, sb, 4, NULL, &out);
	CHECK(hapg_sync_witnesses_needed(&out) == 2);
	hapg_sync_target(HAPG_SYNC_QUORUM, false, 4, -1, 100, sb, 4, NULL, &out);
	CHECK(hapg_sync_witnesses_needed(&out) == 1);
	hapg_sync_target(HAPG_SYNC_ON, false, 2, -1, 100, sb, 4, NULL, &out);
	CHECK(out.n == 2 && hapg_sync_witnesses_needed(&out) == 1);

	/* nothing promised: nobody alone; undefined: not this rule */
	out = set_of(HAPG_SYNC_QUORUM, 0, "pg-1 pg-2");
	CHECK(hapg_sync_witnesses_needed(&out) == 3);
	hapg_sync_set_clear(&undef);
	CHECK(hapg_sync_witnesses_needed(&undef) == 0);

	/* any w witnesses meet any k holders; some w - 1 miss some k */
	for (n = 2; n <= 4; n += 2)
		for (k = 1; k <= n; k++)
		{
			HapgSyncSet s;
			int			w;
			int			a,
						b;
			bool		meet = true;
			bool		miss = false;

			hapg_sync_target(HAPG_SYNC_QUORUM, false, k, -1, 100, sb, n, NULL, &s);
			w = hapg_sync_witnesses_needed(&s);
			for (a = 0; a < (1 << n); a++)
				for (b = 0; b < (1 << n); b++)
				{
					if (__builtin_popcount(b) != k)
						continue;
					if (__builtin_popcount(a) == w && (a & b) == 0)
						meet = false;
					if (__builtin_popcount(a) == w - 1 && (a & b) == 0)
						miss = true;
				}
			CHECK(meet);
			CHECK(miss);
		}
}

/*
 * A leader applying steps one by one, as the worker does: PUBLISH writes the
 * Lease, CONFIGURE writes synchronous_standby_names (not yet in force), a
 * CONFIRM first sees it in force at the leader's position, then streaming
 * standbys advance by 10.  Every step is checked against the two rules.
 */
typedef struct Drive
{
	HapgSyncSet published;
	HapgSyncSet config;
	bool		in_force;
	uint64_t	sync_point;
	uint64_t	leader;
	HapgSyncStandby sb[4];
	int			nsb;
	HapgSyncStep steps[40];
	char		kinds[41];
	int			nsteps;
} Drive;

/* Published and configured as given, the latter in force since 500, leader at 1000. */
static Drive
drive_init(const HapgSyncSet *published, const HapgSyncSet *config)
{
	Drive		d;

	memset(&d, 0, sizeof(d));
	if (published)
		d.published = *published;
	if (config)
		d.config = *config;
	d.in_force = true;
	d.sync_point = 500;
	d.leader = 1000;
	return d;
}

/* Standbys of s with flush at or past p, stand-ins excluded. */
static int
drive_held(const Drive *d, const HapgSyncSet *s, uint64_t p)
{
	int			i;
	int			c = 0;

	for (i = 0; i < d->nsb; i++)
		if (hapg_sync_set_has(s, d->sb[i].name) && !hapg_sync_is_placeholder(d->sb[i].name) &&
			d->sb[i].flush >= p)
			c++;
	return c;
}

/* Step and apply until DONE (true) or max_steps; kinds gets one letter per step. */
static bool
drive(Drive *d, const HapgSyncSet *target, int max_steps)
{
	int			i;

	d->kinds[0] = '\0';
	for (d->nsteps = 0; d->nsteps < max_steps && d->nsteps < 40;)
	{
		HapgSyncStep st,
					again;

		hapg_sync_step(&d->published, &d->config, target, d->in_force, d->sync_point,
					   d->sb, d->nsb, &st);
		hapg_sync_step(&d->published, &d->config, target, d->in_force, d->sync_point,
					   d->sb, d->nsb, &again);
		/* idempotent */
		CHECK(st.kind == again.kind && hapg_sync_set_equal(&st.set, &again.set) &&
			  st.set.mode == again.set.mode && strcmp(st.why, again.why) == 0);
		d->steps[d->nsteps] = st;
		d->kinds[d->nsteps] = "DPCW"[st.kind];
		d->kinds[++d->nsteps] = '\0';
		switch (st.kind)
		{
			case HAPG_SYNC_DONE:
				CHECK(hapg_sync_set_equal(&d->published, target));
				return true;
			case HAPG_SYNC_PUBLISH:
				/* at once, or once k' of V' flushed where the configured set came in */
				CHECK(hapg_sync_change_covered(&d->published, &st.set) ||
					  (d->in_force && hapg_sync_set_equal(&d->config, &st.set) &&
					   drive_held(d, &st.set, d->sync_point) >= st.set.k));
				d->published = st.set;
				break;
			case HAPG_SYNC_CONFIGURE:
				/* the old sync_point stays, stale, until the new set is in force */
				d->config = st.set;
				d->in_force = false;
				break;
			case HAPG_SYNC_CONFIRM:
				if (!d->in_force)
				{
					d->in_force = true;
					d->sync_point = d->leader;
				}
				else
					for (i = 0; i < d->nsb; i++)
						if (d->sb[i].streaming)
							d->sb[i].flush = d->sb[i].flush + 10 < d->leader ?
								d->sb[i].flush + 10 : d->leader;
				break;
		}
		CHECK(hapg_sync_configured_covered(&d->config, &d->published));
	}
	return false;
}

/* "on", sync standby a replaced by b: publish both, configure b, wait, publish b. */
TEST(syncrep_steps_replace)
{
	HapgSyncSet a1 = set_of(HAPG_SYNC_ON, 1, "a");
	HapgSyncSet b1 = set_of(HAPG_SYNC_ON, 1, "b");
	Drive		d = drive_init(&a1, &a1);

	d.sb[0] = sby("a", true, true, 1000);
	d.sb[1] = sby("b", true, false, 980);
	d.nsb = 2;
	CHECK(drive(&d, &b1, 20));
	CHECK_STR(d.kinds, "PCWWWPD");
	CHECK_STR(set_str(&d.steps[0].set), "1 (a b)");
	CHECK(d.steps[0].set.mode == HAPG_SYNC_ON);
	CHECK_STR(set_str(&d.steps[1].set), "1 (b)");
	CHECK_STR(set_str(&d.steps[5].set), "1 (b)");
	CHECK_STR(set_str(&d.published), "1 (b)");
	CHECK_STR(set_str(&d.config), "1 (b)");

	/* b never catches up: the union stays published, it only waits */
	d = drive_init(&a1, &a1);
	d.sb[0] = sby("a", true, true, 1000);
	d.sb[1] = sby("b", false, false, 980);
	d.nsb = 2;
	CHECK(!drive(&d, &b1, 10));
	CHECK_STR(d.kinds, "PCWWWWWWWW");
	CHECK_STR(set_str(&d.published), "1 (a b)");

	/* b not yet known to the step (its flush missing): not counted */
	d = drive_init(&a1, &a1);
	d.sb[0] = sby("a", true, true, 1000);
	d.nsb = 1;
	CHECK(!drive(&d, &b1, 6));
	CHECK_STR(set_str(&d.published), "1 (a b)");
}

/* Off: promise nothing, stop waiting, then say nothing. */
TEST(syncrep_steps_off)
{
	HapgSyncSet a1 = set_of(HAPG_SYNC_ON, 1, "a");
	HapgSyncSet off;
	Drive		d = drive_init(&a1, &a1);
	char		buf[64] = "x";

	hapg_sync_set_clear(&off);
	d.sb[0] = sby("a", true, false, 1000);
	d.nsb = 1;
	CHECK(drive(&d, &off, 10));
	CHECK_STR(d.kinds, "PCPD");
	CHECK_STR(set_str(&d.steps[0].set), "0 (a)");
	CHECK_STR(set_str(&d.steps[1].set), "0 ()");
	CHECK_STR(set_str(&d.steps[2].set), "-");
	CHECK(!d.published.defined);
	CHECK(hapg_sync_standby_names(&d.config, buf, sizeof(buf)) && buf[0] == '\0');

	/* already half-way: each step picks up where it is */
	d = drive_init(&off, &a1);
	d.nsb = 0;
	CHECK(drive(&d, &off, 10));
	CHECK_STR(d.kinds, "CD");
	d = drive_init(&a1, &off);
	d.published.k = 0;
	CHECK(drive(&d, &off, 10));
	CHECK_STR(d.kinds, "PD");
	d = drive_init(&off, &off);
	CHECK(drive(&d, &off, 10));
	CHECK_STR(d.kinds, "D");
}

/* On from nothing: configure first, publish once a has what came before. */
TEST(syncrep_steps_on_from_undefined)
{
	HapgSyncSet a1 = set_of(HAPG_SYNC_ON, 1, "a");
	HapgSyncSet empty = set_of(HAPG_SYNC_ON, 0, "");
	Drive		d = drive_init(NULL, NULL);

	d.sb[0] = sby("a", true, false, 980);
	d.nsb = 1;
	CHECK(drive(&d, &a1, 20));
	CHECK_STR(d.kinds, "CWWWPD");
	CHECK_STR(set_str(&d.steps[0].set), "1 (a)");
	CHECK_STR(set_str(&d.published), "1 (a)");

	/* from a configured "" (defined, k 0) the same */
	d = drive_init(NULL, &empty);
	d.sb[0] = sby("a", true, false, 1000);
	d.nsb = 1;
	CHECK(drive(&d, &a1, 20));
	CHECK_STR(d.kinds, "CWPD");

	/* from a published (V, 0) too: it promised nothing */
	empty = set_of(HAPG_SYNC_ON, 0, "a");
	d = drive_init(&empty, &empty);
	d.sb[0] = sby("a", true, false, 1000);
	d.nsb = 1;
	CHECK(drive(&d, &a1, 20));
	CHECK_STR(d.kinds, "CWPD");
}

/* Not strict, every standby gone: (V, 0) published, nothing waits, then (empty, 0). */
TEST(syncrep_steps_lose_all)
{
	HapgSyncSet a1 = set_of(HAPG_SYNC_ON, 1, "a");
	HapgSyncSet none = set_of(HAPG_SYNC_ON, 0, "");
	Drive		d = drive_init(&a1, &a1);

	d.sb[0] = sby("a", false, false, 900);
	d.nsb = 1;
	CHECK(drive(&d, &none, 10));
	CHECK_STR(d.kinds, "PCPD");
	CHECK_STR(set_str(&d.steps[0].set), "0 (a)");
	CHECK_STR(set_str(&d.steps[1].set), "0 ()");
	CHECK_STR(set_str(&d.steps[2].set), "0 ()");
	CHECK(d.published.defined);
}

/* Quorum and count changes, strict stand-ins, and the mode alone. */
TEST(syncrep_steps_other_changes)
{
	HapgSyncSet p,
				t;
	Drive		d;

	/* quorum grows: (V + c, 1) is covered at once */
	p = set_of(HAPG_SYNC_QUORUM, 1, "a b");
	t = set_of(HAPG_SYNC_QUORUM, 1, "a b c");
	d = drive_init(&p, &p);
	CHECK(drive(&d, &t, 10));
	CHECK_STR(d.kinds, "PCD");
	CHECK_STR(set_str(&d.steps[0].set), "1 (a b c)");

	/* quorum shrinks: configure ANY 2 (a, b), wait until both have it */
	p = set_of(HAPG_SYNC_QUORUM, 2, "a b c");
	t = set_of(HAPG_SYNC_QUORUM, 2, "a b");
	d = drive_init(&p, &p);
	d.sb[0] = sby("a", true, false, 1000);
	d.sb[1] = sby("b", true, false, 990);
	d.sb[2] = sby("c", false, false, 1000);
	d.nsb = 3;
	CHECK(drive(&d, &t, 10));
	CHECK_STR(d.kinds, "CWWPD");

	/* on, count 1 to 2 */
	p = set_of(HAPG_SYNC_ON, 1, "a");
	t = set_of(HAPG_SYNC_ON, 2, "a b");
	d = drive_init(&p, &p);
	d.sb[0] = sby("a", true, false, 1000);
	d.sb[1] = sby("b", true, false, 970);
	d.nsb = 2;
	CHECK(drive(&d, &t, 10));
	CHECK_STR(d.kinds, "CWWWWPD");

	/* on, count 1 to 2 with a replaced: the union keeps the smaller k */
	p = set_of(HAPG_SYNC_ON, 1, "a");
	t = set_of(HAPG_SYNC_ON, 2, "b c");
	d = drive_init(&p, &p);
	d.sb[0] = sby("a", true, false, 1000);
	d.sb[1] = sby("b", true, false, 1000);
	d.sb[2] = sby("c", true, false, 1000);
	d.nsb = 3;
	CHECK(drive(&d, &t, 10));
	CHECK_STR(d.kinds, "PCWPD");
	CHECK_STR(set_str(&d.steps[0].set), "1 (a b c)");
	CHECK_STR(set_str(&d.steps[1].set), "2 (b c)");

	/* on, count 2 to 1 */
	p = set_of(HAPG_SYNC_ON, 2, "a b");
	t = set_of(HAPG_SYNC_ON, 1, "a");
	d = drive_init(&p, &p);
	d.sb[0] = sby("a", true, false, 1000);
	d.sb[1] = sby("b", true, false, 1000);
	d.nsb = 2;
	CHECK(drive(&d, &t, 10));
	CHECK_STR(d.kinds, "PCWPD");
	CHECK_STR(set_str(&d.steps[0].set), "1 (a b)");

	/* strict: a stand-in replaced by b */
	p = set_of(HAPG_SYNC_ON, 2, W1 " a");
	p.strict = true;
	t = set_of(HAPG_SYNC_ON, 2, "a b");
	t.strict = true;
	d = drive_init(&p, &p);
	d.sb[0] = sby("a", true, false, 1000);
	d.sb[1] = sby("b", true, false, 990);
	d.nsb = 2;
	CHECK(drive(&d, &t, 10));
	CHECK_STR(d.kinds, "PCWWPD");
	CHECK_STR(set_str(&d.steps[0].set), "2 (" W1 " a b)");
	CHECK(d.published.strict);

	/*
	 * strict, a target with a stand-in the published set lacks (as when the
	 * count grows): stand-ins never catch up, so it is never published
	 */
	p = set_of(HAPG_SYNC_ON, 2, "a b");
	p.strict = true;
	t = set_of(HAPG_SYNC_ON, 2, W1 " a");
	t.strict = true;
	d = drive_init(&p, &p);
	d.sb[0] = sby("a", true, false, 1000);
	d.sb[1] = sby("b", false, false, 1000);
	d.sb[2] = sby(W1, true, false, 1000);	/* a stand-in's name never answers */
	d.nsb = 3;
	CHECK(!drive(&d, &t, 8));
	CHECK_STR(d.kinds, "PCWWWWWW");
	CHECK_STR(set_str(&d.published), "2 (" W1 " a b)");

	/* the same sets in another mode: published for display only */
	p = set_of(HAPG_SYNC_ON, 1, "a");
	t = set_of(HAPG_SYNC_QUORUM, 1, "a");
	d = drive_init(&p, &p);
	CHECK(drive(&d, &t, 10));
	CHECK_STR(d.kinds, "PD");
	CHECK(d.published.mode == HAPG_SYNC_QUORUM);
	t = set_of(HAPG_SYNC_ON, 1, "a");
	t.strict = true;
	d = drive_init(&p, &p);
	CHECK(drive(&d, &t, 10));
	CHECK_STR(d.kinds, "PD");
	CHECK(d.published.strict);
}

/* A new leader: itself out, the old leader in, the same k, stand-ins if short. */
TEST(syncrep_for_new_leader)
{
	HapgSyncSet p,
				out;

	p = set_of(HAPG_SYNC_ON, 1, "pg-1 pg-2");
	p.strict = true;
	hapg_sync_for_new_leader(&p, "pg-1", "pg-0", &out);
	CHECK_STR(set_str(&out), "1 (pg-0 pg-2)");
	CHECK(out.mode == HAPG_SYNC_ON && out.strict);

	p = set_of(HAPG_SYNC_ON, 1, "pg-1");
	hapg_sync_for_new_leader(&p, "pg-1", "pg-0", &out);
	CHECK_STR(set_str(&out), "1 (pg-0)");

	p = set_of(HAPG_SYNC_QUORUM, 2, "pg-1 pg-2 pg-3");
	hapg_sync_for_new_leader(&p, "pg-2", "pg-0", &out);
	CHECK_STR(set_str(&out), "2 (pg-0 pg-1 pg-3)");
	CHECK(out.mode == HAPG_SYNC_QUORUM);

	/* no usable old leader: a stand-in keeps k */
	p = set_of(HAPG_SYNC_ON, 2, "pg-1 pg-2");
	hapg_sync_for_new_leader(&p, "pg-1", NULL, &out);
	CHECK_STR(set_str(&out), "2 (" W1 " pg-2)");
	hapg_sync_for_new_leader(&p, "pg-1", "", &out);
	CHECK_STR(set_str(&out), "2 (" W1 " pg-2)");
	hapg_sync_for_new_leader(&p, "pg-1", "Bad", &out);
	CHECK_STR(set_str(&out), "2 (" W1 " pg-2)");
	hapg_sync_for_new_leader(&p, "pg-1", "pg-1", &out);
	CHECK_STR(set_str(&out), "2 (" W1 " pg-2)");
	/* a stand-in already there: another one */
	p = set_of(HAPG_SYNC_ON, 2, W1 " pg-1");
	hapg_sync_for_new_leader(&p, "pg-1", NULL, &out);
	CHECK_STR(set_str(&out), "2 (" W1 " " W2 ")");

	/* k 0 stays 0 */
	p = set_of(HAPG_SYNC_ON, 0, "pg-1");
	hapg_sync_for_new_leader(&p, "pg-1", "pg-0", &out);
	CHECK_STR(set_str(&out), "0 (pg-0)");

	/* undefined stays undefined */
	hapg_sync_set_clear(&p);
	hapg_sync_for_new_leader(&p, "pg-1", "pg-0", &out);
	CHECK(!out.defined && out.n == 0);
}

/* synchronous_standby_names: "", FIRST k when all must answer, else ANY k. */
TEST(syncrep_standby_names)
{
	HapgSyncSet s;
	char		buf[256];
	const char *any2 = "ANY 2 (\"pg-1\", \"pg-2\", \"pg-3\")";
	int			len = (int) strlen(any2);
	int			i;

	hapg_sync_set_clear(&s);
	strcpy(buf, "x");
	CHECK(hapg_sync_standby_names(&s, buf, sizeof(buf)) && buf[0] == '\0');
	s = set_of(HAPG_SYNC_ON, 0, "pg-1");
	strcpy(buf, "x");
	CHECK(hapg_sync_standby_names(&s, buf, sizeof(buf)) && buf[0] == '\0');
	s = set_of(HAPG_SYNC_ON, 0, "");
	strcpy(buf, "x");
	CHECK(hapg_sync_standby_names(&s, buf, sizeof(buf)) && buf[0] == '\0');

	s = set_of(HAPG_SYNC_ON, 1, "pg-1");
	CHECK(hapg_sync_standby_names(&s, buf, sizeof(buf)));
	CHECK_STR(buf, "FIRST 1 (\"pg-1\")");
	s = set_of(HAPG_SYNC_ON, 2, W1 " pg-1");
	CHECK(hapg_sync_standby_names(&s, buf, sizeof(buf)));
	CHECK_STR(buf, "FIRST 2 (\"" W1 "\", \"pg-1\")");
	/* on, during a change (n > k): any of them */
	s = set_of(HAPG_SYNC_ON, 1, "pg-1 pg-2");
	CHECK(hapg_sync_standby_names(&s, buf, sizeof(buf)));
	CHECK_STR(buf, "ANY 1 (\"pg-1\", \"pg-2\")");
	s = set_of(HAPG_SYNC_QUORUM, 2, "pg-1 pg-2");
	CHECK(hapg_sync_standby_names(&s, buf, sizeof(buf)));
	CHECK_STR(buf, "ANY 2 (\"pg-1\", \"pg-2\")");

	s = set_of(HAPG_SYNC_QUORUM, 2, "pg-3 pg-1 pg-2");
	CHECK(hapg_sync_standby_names(&s, buf, sizeof(buf)));
	CHECK_STR(buf, any2);
	/* just fits; one byte short, or far short: false and "" */
	CHECK(hapg_sync_standby_names(&s, buf, len + 1));
	CHECK_STR(buf, any2);
	for (i = len; i >= 0; i -= (i > len - 3 || i < 3) ? 1 : 7)
	{
		memset(buf, 'x', sizeof(buf));
		CHECK(!hapg_sync_standby_names(&s, buf, i));
		CHECK(i == 0 || buf[0] == '\0');
	}
}

/* hapg_members.sync_state. */
TEST(syncrep_state_of)
{
	HapgSyncSet s;

	hapg_sync_set_clear(&s);
	CHECK_STR(hapg_sync_state_of(&s, "pg-1", true, false), "async");
	s = set_of(HAPG_SYNC_ON, 1, "pg-1");
	CHECK_STR(hapg_sync_state_of(&s, "pg-1", true, false), "sync");
	CHECK_STR(hapg_sync_state_of(&s, "pg-1", false, false), "sync");
	CHECK_STR(hapg_sync_state_of(&s, "pg-2", true, false), "potential");
	CHECK_STR(hapg_sync_state_of(&s, "pg-2", true, true), "async");
	CHECK_STR(hapg_sync_state_of(&s, "pg-2", false, false), "async");
	s = set_of(HAPG_SYNC_QUORUM, 1, "pg-1 pg-2");
	CHECK_STR(hapg_sync_state_of(&s, "pg-2", true, false), "quorum");
	CHECK_STR(hapg_sync_state_of(&s, "pg-3", true, false), "potential");
	s = set_of(HAPG_SYNC_ON, 0, "pg-1");
	CHECK_STR(hapg_sync_state_of(&s, "pg-1", true, false), "potential");
	CHECK_STR(hapg_sync_state_of(&s, "pg-1", false, false), "async");
}

/*
 * The model: six members, one the leader.  Commits wait until the configured
 * set has k members with the commit flushed (at once when k is 0), as
 * PostgreSQL's waiters are released.  Standbys flush (never past the
 * leader), stop and start streaming, toggle nosync; settings change; the
 * leader takes one step and applies it; a witness quorum of the published
 * set elects its most advanced witness, which starts from
 * hapg_sync_for_new_leader.  "delayed": a written synchronous_standby_names
 * takes effect only on a later reload event.
 */
#define M_MEMBERS 6
#define M_PENDING 512

enum
{
	V_CORRECT = 0,
	V_SKIP_UNION,				/* configure the target instead of publishing the union */
	V_NO_WAIT,					/* publish the target instead of waiting */
	V_STALE_POINT,				/* keep the old sync_point on a new configuration */
	V_NO_OLD_LEADER				/* a new leader without the old one in its set */
};

typedef struct Model
{
	uint64_t	rng;
	int			variant;
	bool		delayed;
	int			leader;
	bool		streaming[M_MEMBERS];
	bool		nosync[M_MEMBERS];
	uint64_t	flush[M_MEMBERS];
	uint64_t	leader_pos;
	HapgSyncMode mode;
	bool		strict;
	int			count;
	int64_t		max_lag;
	HapgSyncSet published;
	HapgSyncSet config;			/* written */
	HapgSyncSet active;			/* what commits wait for */
	bool		in_force;
	uint64_t	sync_point;
	uint64_t	pending[M_PENDING];
	int			npending;
	uint64_t	acked_max;		/* acknowledged commits: all at or below */
	long		nacked;
	long		ntakeovers;
	const char *violation;
} Model;

static int	m_waiting_runs;		/* ended waiting (strict), not DONE */

static const char *m_names[M_MEMBERS] = {"pg-0", "pg-1", "pg-2", "pg-3", "pg-4", "pg-5"};

/* xorshift64: deterministic, seeded per run. */
static uint32_t
m_rand(Model *m, uint32_t n)
{
	m->rng ^= m->rng << 13;
	m->rng ^= m->rng >> 7;
	m->rng ^= m->rng << 17;
	return (uint32_t) ((m->rng >> 32) % n);
}

/* The leader's view: every other member. */
static int
m_observe(const Model *m, HapgSyncStandby *sb)
{
	int			i;
	int			n = 0;

	for (i = 0; i < M_MEMBERS; i++)
		if (i != m->leader)
			sb[n++] = sby(m_names[i], m->streaming[i], m->nosync[i], m->flush[i]);
	return n;
}

/* Standbys of s (not the leader, no stand-in) that flushed p. */
static int
m_holders(const Model *m, const HapgSyncSet *s, uint64_t p)
{
	int			i;
	int			c = 0;

	for (i = 0; i < M_MEMBERS; i++)
		if (i != m->leader && hapg_sync_set_has(s, m_names[i]) && m->flush[i] >= p)
			c++;
	return c;
}

/* Release the waiting commits the active set acknowledges (lowest first). */
static void
m_release(Model *m)
{
	int			j;
	const HapgSyncSet *c = &m->active;

	for (j = m->npending - 1; j >= 0; j--)
		if (!c->defined || c->k <= 0 || m_holders(m, c, m->pending[j]) >= c->k)
			break;
	if (j < 0)
		return;
	/* a set that acknowledges p acknowledges everything below it */
	if (m->pending[j] > m->acked_max)
		m->acked_max = m->pending[j];
	m->nacked += j + 1;
	memmove(m->pending, m->pending + j + 1, (size_t) (m->npending - j - 1) * sizeof(uint64_t));
	m->npending -= j + 1;
}

/*
 * The invariant.  Holding a commit at p is monotone in p, so the highest
 * acknowledged position stands for every acknowledged commit.
 */
static bool
m_check(Model *m)
{
	const HapgSyncSet *p = &m->published;

	if (m->violation)
		return false;
	if (hapg_sync_set_has(p, m_names[m->leader]))
		m->violation = "the leader is in its own published set";
	else if (!hapg_sync_configured_covered(&m->active, p))
		m->violation = "the configured set in force is not covered by the published one";
	else if (!hapg_sync_configured_covered(&m->config, p))
		m->violation = "the written configured set is not covered by the published one";
	else if (p->defined && p->k > 0 && m->nacked > 0)
	{
		int			idx[M_MEMBERS];
		int			nreal = 0;
		int			w = hapg_sync_witnesses_needed(p);
		int			i,
					mask;

		if (m_holders(m, p, m->acked_max) < p->k)
			m->violation = "an acknowledged commit is on fewer than k published standbys";
		for (i = 0; i < M_MEMBERS; i++)
			if (i != m->leader && hapg_sync_set_has(p, m_names[i]))
				idx[nreal++] = i;
		/* every w witnesses: the most advanced has every acknowledged commit */
		for (mask = 0; mask < (1 << nreal) && !m->violation; mask++)
		{
			uint64_t	best = 0;

			if (__builtin_popcount(mask) != w)
				continue;
			for (i = 0; i < nreal; i++)
				if ((mask & (1 << i)) && m->flush[idx[i]] > best)
					best = m->flush[idx[i]];
			if (best < m->acked_max)
				m->violation = "a witness quorum's most advanced member misses an acknowledged commit";
		}
	}
	return m->violation == NULL;
}

/* Write synchronous_standby_names; in force at once unless delayed. */
static void
m_configure(Model *m, const HapgSyncSet *s)
{
	m->config = *s;
	if (m->delayed)
	{
		m->in_force = false;
		return;
	}
	m->active = *s;
	m->in_force = true;
	if (m->variant != V_STALE_POINT || m->sync_point == 0)
		m->sync_point = m->leader_pos;
}

/* The server reloads: the written set is in force from the leader's position. */
static void
m_reload(Model *m)
{
	if (m->in_force)
		return;
	m->active = m->config;
	m->in_force = true;
	m->sync_point = m->leader_pos;
}

/* One leader step; returns its kind. */
static HapgSyncStepKind
m_step(Model *m, HapgSyncSet *target)
{
	HapgSyncStandby sb[M_MEMBERS];
	int			nsb = m_observe(m, sb);
	HapgSyncStep st,
				again;

	hapg_sync_target(m->mode, m->strict, m->count, m->max_lag, m->leader_pos, sb, nsb,
					 &m->published, target);
	hapg_sync_step(&m->published, &m->config, target, m->in_force, m->sync_point, sb, nsb, &st);
	hapg_sync_step(&m->published, &m->config, target, m->in_force, m->sync_point, sb, nsb, &again);
	if (st.kind != again.kind || !hapg_sync_set_equal(&st.set, &again.set))
		m->violation = "the same observation gave another step";
	switch (st.kind)
	{
		case HAPG_SYNC_PUBLISH:
			if (m->variant == V_SKIP_UNION && target->defined &&
				!hapg_sync_set_equal(&st.set, target))
				m_configure(m, target);
			else
				m->published = st.set;
			break;
		case HAPG_SYNC_CONFIGURE:
			m_configure(m, &st.set);
			break;
		case HAPG_SYNC_CONFIRM:
			if (m->variant == V_NO_WAIT)
				m->published = *target;
			break;
		case HAPG_SYNC_DONE:
			break;
	}
	return st.kind;
}

/* w random witnesses of the published set elect the most advanced. */
static void
m_takeover(Model *m)
{
	const HapgSyncSet *p = &m->published;
	int			idx[M_MEMBERS];
	int			nreal = 0;
	int			w = hapg_sync_witnesses_needed(p);
	int			i,
				nl,
				old = m->leader;
	HapgSyncSet np;

	if (!p->defined || p->k <= 0)
		return;
	for (i = 0; i < M_MEMBERS; i++)
		if (i != m->leader && hapg_sync_set_has(p, m_names[i]))
			idx[nreal++] = i;
	if (w < 1 || nreal < w)
		return;
	for (i = nreal - 1; i > 0; i--)
	{
		int			j = (int) m_rand(m, (uint32_t) i + 1);
		int			t = idx[i];

		idx[i] = idx[j];
		idx[j] = t;
	}
	nl = idx[0];
	for (i = 1; i < w; i++)
		if (m->flush[idx[i]] > m->flush[nl])
			nl = idx[i];
	if (m->nacked > 0 && m->flush[nl] < m->acked_max)
	{
		m->violation = "the new leader misses an acknowledged commit";
		return;
	}
	hapg_sync_for_new_leader(p, m_names[nl],
							 m->variant == V_NO_OLD_LEADER ? NULL : m_names[old], &np);
	/* the old leader had everything; all rewind to the new timeline's fork */
	m->flush[old] = m->leader_pos;
	m->streaming[old] = false;
	m->leader = nl;
	m->leader_pos = m->flush[nl];
	for (i = 0; i < M_MEMBERS; i++)
		if (m->flush[i] > m->leader_pos)
			m->flush[i] = m->leader_pos;
	m->npending = 0;			/* waiting commits fail with the old leader */
	m->published = np;
	m->config = np;
	m->active = np;
	m->in_force = true;
	m->sync_point = m->leader_pos;
	m->ntakeovers++;
}

/* A random standby (not the leader). */
static int
m_standby(Model *m)
{
	int			i = (int) m_rand(m, M_MEMBERS - 1);

	return i >= m->leader ? i + 1 : i;
}

/* One random event of the world or the leader. */
static void
m_event(Model *m)
{
	uint32_t	e = m_rand(m, 100);
	HapgSyncSet target;
	int			i;

	if (e < 30)
	{
		/* a commit; some standbys get it at once */
		m->leader_pos += 1 + m_rand(m, 3);
		if (m->npending < M_PENDING)
			m->pending[m->npending++] = m->leader_pos;
		for (i = 0; i < M_MEMBERS; i++)
			if (i != m->leader && m->streaming[i] && m_rand(m, 3) == 0)
				m->flush[i] = m->leader_pos;
	}
	else if (e < 50)
	{
		i = m_standby(m);
		if (m->streaming[i])
			m->flush[i] += m_rand(m, (uint32_t) (m->leader_pos - m->flush[i]) + 1);
	}
	else if (e < 55)
	{
		i = m_standby(m);
		m->streaming[i] = !m->streaming[i];
	}
	else if (e < 58)
	{
		i = m_standby(m);
		m->nosync[i] = !m->nosync[i];
	}
	else if (e < 62)
	{
		static const int64_t lags[3] = {-1, 3, 10};

		switch (m_rand(m, 4))
		{
			case 0:
				m->mode = (HapgSyncMode) m_rand(m, 3);
				break;
			case 1:
				m->strict = !m->strict;
				break;
			case 2:
				m->count = 1 + (int) m_rand(m, 4);
				break;
			default:
				m->max_lag = lags[m_rand(m, 3)];
				break;
		}
	}
	else if (e < 64)
		m_takeover(m);
	else if (e < 68 && m->delayed)
		m_reload(m);
	else
		m_step(m, &target);
}

/*
 * One run; false on the first violation.  At the end (correct rules only)
 * the world stands still, standbys catch up, and the steps must reach DONE
 * unless the target (strict) waits for stand-ins or stopped standbys.
 */
static bool
m_run(uint32_t seed, int nevents, int variant, bool delayed, long *events, Model *out)
{
	Model	   *m = out;
	int			i;

	memset(m, 0, sizeof(*m));
	m->rng = 0x9E3779B97F4A7C15ULL * (seed + 1);
	m->variant = variant;
	m->delayed = delayed;
	m->leader_pos = 100;
	for (i = 0; i < M_MEMBERS; i++)
	{
		m->streaming[i] = i != 0;
		m->flush[i] = 100;
	}
	m->mode = (HapgSyncMode) m_rand(m, 3);
	m->strict = m_rand(m, 4) == 0;
	m->count = 1 + (int) m_rand(m, 3);
	m->max_lag = -1;
	for (i = 0; i < nevents; i++)
	{
		m_event(m);
		m_release(m);
		(*events)++;
		if (!m_check(m))
			return false;
	}
	if (variant == V_CORRECT)
	{
		HapgSyncSet target;
		HapgSyncStepKind k = HAPG_SYNC_CONFIRM;
		int			j;

		for (i = 0; i < 40 && k != HAPG_SYNC_DONE; i++)
		{
			k = m_step(m, &target);
			if (k == HAPG_SYNC_CONFIRM && m->delayed)
				m_reload(m);
			for (j = 0; j < M_MEMBERS; j++)
				if (j != m->leader && m->streaming[j])
					m->flush[j] = m->leader_pos;
			m_release(m);
			(*events)++;
			if (!m_check(m))
				return false;
		}
		if (k != HAPG_SYNC_DONE)
		{
			int			live = 0;

			/* strict may wait for stand-ins or for standbys that stopped */
			for (j = 0; j < M_MEMBERS; j++)
				if (j != m->leader && m->streaming[j] && hapg_sync_set_has(&target, m_names[j]))
					live++;
			if (live >= target.k)
			{
				m->violation = "the steps did not reach DONE with every standby caught up";
				return false;
			}
			m_waiting_runs++;
		}
	}
	return true;
}

/* Runs seeds [0, runs); the violating ones counted, the first described. */
static int
m_runs(int runs, int nevents, int variant, bool delayed, long *events, long *acked,
	   long *takeovers)
{
	Model	   *m = malloc(sizeof(Model));
	int			bad = 0;
	int			s;

	for (s = 0; s < runs; s++)
	{
		if (!m_run((uint32_t) s, nevents, variant, delayed, events, m))
		{
			if (bad == 0 && variant == V_CORRECT)
				fprintf(stderr, "syncrep model: seed %d%s: %s (published %s, configured %s)\n",
						s, delayed ? " (delayed)" : "", m->violation,
						set_str(&m->published), set_str(&m->active));
			bad++;
		}
		*acked += m->nacked;
		*takeovers += m->ntakeovers;
	}
	free(m);
	return bad;
}

/* The safety argument of syncrep.h, checked after every event of many runs. */
TEST(syncrep_model)
{
	long		events = 0,
				acked = 0,
				takeovers = 0;
	int			bad,
				bad_delayed;

	bad = m_runs(2000, 200, V_CORRECT, false, &events, &acked, &takeovers);
	bad_delayed = m_runs(1000, 200, V_CORRECT, true, &events, &acked, &takeovers);
	CHECK(bad == 0);
	CHECK(bad_delayed == 0);
	/* the runs did exercise commits and takeovers */
	CHECK(acked > 10000);
	CHECK(takeovers > 100);
	printf("syncrep model: %ld events checked in 3000 runs, %ld commits acknowledged, "
		   "%ld takeovers, %d runs left waiting in strict mode, %d + %d violations\n",
		   events, acked, takeovers, m_waiting_runs, bad, bad_delayed);
}

/* The checker can fail: each broken applier is caught on some seed. */
TEST(syncrep_model_catches_broken_rules)
{
	static const int variants[4] = {V_SKIP_UNION, V_NO_WAIT, V_STALE_POINT, V_NO_OLD_LEADER};
	static const char *vnames[4] = {"skip the union", "publish without waiting",
	"stale sync point", "new leader without the old"};
	long		events = 0,
				acked = 0,
				takeovers = 0;
	int			i;

	for (i = 0; i < 4; i++)
	{
		int			bad = m_runs(200, 200, variants[i], false, &events, &acked, &takeovers);

		CHECK(bad > 0);
		printf("syncrep model: broken rule \"%s\" caught on %d of 200 seeds\n", vnames[i], bad);
	}
}

void
run_syncrep_tests(void)
{
	RUN(syncrep_modes_and_sets);
	RUN(syncrep_coverage_rules);
	RUN(syncrep_target_on);
	RUN(syncrep_target_quorum);
	RUN(syncrep_target_strict);
	RUN(syncrep_quorum_arithmetic);
	RUN(syncrep_steps_replace);
	RUN(syncrep_steps_off);
	RUN(syncrep_steps_on_from_undefined);
	RUN(syncrep_steps_lose_all);
	RUN(syncrep_steps_other_changes);
	RUN(syncrep_for_new_leader);
	RUN(syncrep_standby_names);
	RUN(syncrep_state_of);
	RUN(syncrep_model);
	RUN(syncrep_model_catches_broken_rules);
}
