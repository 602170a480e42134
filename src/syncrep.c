/*
 * syncrep.c
 *		Synchronous replication's rules (see syncrep.h for the argument):
 *		the target set, the order of the steps towards it, the set a new
 *		leader starts from, and the takeover quorum.
 */
#include "syncrep.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* The mode's name in settings, the Lease and hapg_status(). */
const char *
hapg_sync_mode_name(HapgSyncMode mode)
{
	switch (mode)
	{
		case HAPG_SYNC_ON:
			return "on";
		case HAPG_SYNC_QUORUM:
			return "quorum";
		default:
			return "off";
	}
}

/* Read a mode's name; false for anything else. */
bool
hapg_sync_parse_mode(const char *s, HapgSyncMode *mode)
{
	if (s == NULL)
		return false;
	if (strcmp(s, "off") == 0)
		*mode = HAPG_SYNC_OFF;
	else if (strcmp(s, "on") == 0)
		*mode = HAPG_SYNC_ON;
	else if (strcmp(s, "quorum") == 0)
		*mode = HAPG_SYNC_QUORUM;
	else
		return false;
	return true;
}

/* A strict mode's stand-in for a missing standby. */
bool
hapg_sync_is_placeholder(const char *name)
{
	return strncmp(name, HAPG_SYNC_WAIT_PREFIX, strlen(HAPG_SYNC_WAIT_PREFIX)) == 0;
}

/* An empty, undefined set. */
void
hapg_sync_set_clear(HapgSyncSet *s)
{
	memset(s, 0, sizeof(*s));
}

/* Whether name is in s. */
bool
hapg_sync_set_has(const HapgSyncSet *s, const char *name)
{
	int			i;

	for (i = 0; i < s->n; i++)
		if (strcmp(s->names[i], name) == 0)
			return true;
	return false;
}

/* Add name, keeping the names sorted; false if full or too long. */
bool
hapg_sync_set_add(HapgSyncSet *s, const char *name)
{
	int			i;

	if (hapg_sync_set_has(s, name))
		return true;
	if (s->n >= HAPG_MAX_MEMBERS || strlen(name) >= HAPG_NAME_LEN || name[0] == '\0')
		return false;
	for (i = s->n; i > 0 && strcmp(s->names[i - 1], name) > 0; i--)
		memcpy(s->names[i], s->names[i - 1], HAPG_NAME_LEN);
	snprintf(s->names[i], HAPG_NAME_LEN, "%s", name);
	s->n++;
	return true;
}

/* Remove name if present. */
static void
set_remove(HapgSyncSet *s, const char *name)
{
	int			i;

	for (i = 0; i < s->n; i++)
		if (strcmp(s->names[i], name) == 0)
		{
			memmove(s->names[i], s->names[i + 1], (size_t) (s->n - i - 1) * HAPG_NAME_LEN);
			s->n--;
			return;
		}
}

/* Stand-ins up to k names, so that a set can always be configured. */
static void
pad_to_k(HapgSyncSet *s)
{
	int			i;

	for (i = 1; s->n < s->k && s->n < HAPG_MAX_MEMBERS; i++)
	{
		char		name[HAPG_NAME_LEN];

		snprintf(name, sizeof(name), HAPG_SYNC_WAIT_PREFIX "%d", i);
		hapg_sync_set_add(s, name);
	}
	if (s->k > s->n)
		s->k = s->n;
}

/* Same promise: both undefined, or the same k over the same names. */
bool
hapg_sync_set_equal(const HapgSyncSet *a, const HapgSyncSet *b)
{
	int			i;

	if (a->defined != b->defined)
		return false;
	if (!a->defined)
		return true;
	if (a->k != b->k || a->n != b->n)
		return false;
	for (i = 0; i < a->n; i++)
		if (strcmp(a->names[i], b->names[i]) != 0)
			return false;
	return true;
}

/* |a \ b| */
static int
count_outside(const HapgSyncSet *a, const HapgSyncSet *b)
{
	int			i;
	int			c = 0;

	for (i = 0; i < a->n; i++)
		if (!hapg_sync_set_has(b, a->names[i]))
			c++;
	return c;
}

/* An undefined set promises nothing: (empty, 0). */
static const HapgSyncSet *
effective(const HapgSyncSet *s, HapgSyncSet *tmp)
{
	if (s->defined)
		return s;
	hapg_sync_set_clear(tmp);
	return tmp;
}

/*
 * A commit on k members of a is on k' members of b, whatever members they
 * were: at most |A \ B| of those k are outside B.
 */
static bool
promise_carries(const HapgSyncSet *a, const HapgSyncSet *b)
{
	HapgSyncSet ta,
				tb;
	const HapgSyncSet *x = effective(a, &ta);
	const HapgSyncSet *y = effective(b, &tb);

	return y->k <= 0 || x->k - count_outside(x, y) >= y->k;
}

/* Rule 1: commits acknowledged under the configured set keep the published promise. */
bool
hapg_sync_configured_covered(const HapgSyncSet *config, const HapgSyncSet *published)
{
	return promise_carries(config, published);
}

/* Rule 2 without a sync point: the new published set promises no more than the old one kept. */
bool
hapg_sync_change_covered(const HapgSyncSet *from, const HapgSyncSet *to)
{
	return promise_carries(from, to);
}

typedef struct Ranked
{
	const HapgSyncStandby *sb;
	bool		missing;
	bool		lagging;
	bool		kept;			/* in the published set already */
} Ranked;

/*
 * Order for FIRST n: streaming now, not lagging, already synchronous, most
 * advanced, name.
 */
static int
rank_cmp(const void *a, const void *b)
{
	const Ranked *x = a;
	const Ranked *y = b;

	if (x->missing != y->missing)
		return x->missing ? 1 : -1;
	if (x->lagging != y->lagging)
		return x->lagging ? 1 : -1;
	if (x->kept != y->kept)
		return x->kept ? -1 : 1;
	if (x->sb->flush != y->sb->flush)
		return x->sb->flush > y->sb->flush ? -1 : 1;
	return strcmp(x->sb->name, y->sb->name);
}

/*
 * The set the leader wants: in "on", the count best eligible standbys
 * (those already synchronous kept, a lagging one or one missing for a
 * moment replaced when another can take its place); in "quorum", every eligible standby with ANY count.
 * Too few: fewer acknowledgements, or in strict mode the standbys that were
 * synchronous and then stand-ins that never answer, so that commits wait.
 */
void
hapg_sync_target(HapgSyncMode mode, bool strict, int count, int64_t max_lag,
				 uint64_t leader_lsn, const HapgSyncStandby *sb, int nsb,
				 const HapgSyncSet *published, HapgSyncSet *out)
{
	Ranked		r[HAPG_MAX_MEMBERS];
	int			nr = 0;
	int			i;

	hapg_sync_set_clear(out);
	if (mode == HAPG_SYNC_OFF)
		return;
	if (count < 1)
		count = 1;
	if (count > HAPG_MAX_MEMBERS)
		count = HAPG_MAX_MEMBERS;
	out->defined = true;
	out->mode = mode;
	out->strict = strict;
	for (i = 0; i < nsb && nr < HAPG_MAX_MEMBERS; i++)
	{
		if (!(sb[i].streaming || sb[i].missing) || sb[i].nosync ||
			!hapg_valid_member_name(sb[i].name))
			continue;
		r[nr].sb = &sb[i];
		r[nr].missing = !sb[i].streaming;
		r[nr].lagging = max_lag >= 0 && leader_lsn > sb[i].flush &&
			leader_lsn - sb[i].flush > (uint64_t) max_lag;
		r[nr].kept = published && published->defined &&
			hapg_sync_set_has(published, sb[i].name);
		nr++;
	}
	qsort(r, nr, sizeof(Ranked), rank_cmp);
	for (i = 0; i < nr && (mode == HAPG_SYNC_QUORUM || i < count); i++)
		hapg_sync_set_add(out, r[i].sb->name);
	out->k = out->n < count ? out->n : count;
	if (strict && out->k < count)
	{
		/*
		 * Keep waiting for the standbys that were synchronous (they have the
		 * commits, and one of them may still take over), then for nobody.
		 */
		for (i = 0; published && published->defined && i < published->n && out->n < count; i++)
			if (!hapg_sync_is_placeholder(published->names[i]))
				hapg_sync_set_add(out, published->names[i]);
		out->k = count;
		pad_to_k(out);
	}
}

/* The set for a step, with the display fields of the target. */
static void
make_step(HapgSyncStep *out, HapgSyncStepKind kind, const HapgSyncSet *set,
		  const HapgSyncSet *target, const char *why)
{
	out->kind = kind;
	out->set = *set;
	if (target->defined && out->set.defined)
	{
		out->set.mode = target->mode;
		out->set.strict = target->strict;
	}
	out->why = why;
}

/*
 * The next step from (published, configured) towards target, one at a time
 * and each safe on its own: the published set grows before the configured
 * one changes and shrinks only once that is in force and enough standbys
 * flushed sync_point (the leader's flush position once it was).
 * Idempotent: the same observation gives the same step.
 */
void
hapg_sync_step(const HapgSyncSet *published, const HapgSyncSet *config,
			   const HapgSyncSet *target, bool in_force, uint64_t sync_point,
			   const HapgSyncStandby *sb, int nsb, HapgSyncStep *out)
{
	HapgSyncSet tp,
				tc,
				next;
	const HapgSyncSet *p = effective(published, &tp);
	const HapgSyncSet *c = effective(config, &tc);
	int			i;
	int			caught_up = 0;

	memset(out, 0, sizeof(*out));
	if (!target->defined)
	{
		/* off: promise nothing first, then stop waiting, then say nothing */
		hapg_sync_set_clear(&next);
		if (published->defined && published->k > 0)
		{
			next = *published;
			next.k = 0;
			make_step(out, HAPG_SYNC_PUBLISH, &next, target,
					  "synchronous replication off: publishing that no commit waits");
		}
		else if (config->defined && config->k > 0)
		{
			next.defined = true;
			make_step(out, HAPG_SYNC_CONFIGURE, &next, target,
					  "synchronous replication off: commits stop waiting");
		}
		else if (published->defined)
			make_step(out, HAPG_SYNC_PUBLISH, &next, target,
					  "synchronous replication off: removing the published set");
		else
			make_step(out, HAPG_SYNC_DONE, target, target, "asynchronous");
		return;
	}

	if (!hapg_sync_set_equal(c, target) || !config->defined)
	{
		if (hapg_sync_configured_covered(target, p))
		{
			make_step(out, HAPG_SYNC_CONFIGURE, target, target,
					  "configuring the synchronous standbys");
			return;
		}
		/* publish the union with the fewest acknowledgements either promises */
		next = *p;
		next.defined = true;
		for (i = 0; i < target->n; i++)
			hapg_sync_set_add(&next, target->names[i]);
		next.k = p->k;
		if (target->k < next.k)
			next.k = target->k;
		if (c->k - count_outside(c, &next) < next.k)
			next.k = c->k - count_outside(c, &next);
		if (next.k < 0)
			next.k = 0;
		make_step(out, HAPG_SYNC_PUBLISH, &next, target,
				  "publishing the new synchronous standbys before configuring them");
		return;
	}

	if (published->defined && hapg_sync_set_equal(p, target))
	{
		if (published->mode != target->mode || published->strict != target->strict)
			make_step(out, HAPG_SYNC_PUBLISH, target, target, "publishing the mode");
		else
			make_step(out, HAPG_SYNC_DONE, target, target, "synchronous standbys in place");
		return;
	}
	if (published->defined && hapg_sync_change_covered(p, target))
	{
		make_step(out, HAPG_SYNC_PUBLISH, target, target, "publishing the synchronous standbys");
		return;
	}
	if (!in_force || sync_point == 0)
	{
		make_step(out, HAPG_SYNC_CONFIRM, target, target,
				  "waiting for synchronous_standby_names to take effect");
		return;
	}
	for (i = 0; i < nsb; i++)
		if (hapg_sync_set_has(target, sb[i].name) && !hapg_sync_is_placeholder(sb[i].name) &&
			sb[i].flush >= sync_point)
			caught_up++;
	if (caught_up >= target->k)
		make_step(out, HAPG_SYNC_PUBLISH, target, target,
				  "the synchronous standbys caught up: publishing them");
	else
		make_step(out, HAPG_SYNC_CONFIRM, target, target,
				  "waiting for the synchronous standbys to flush what was committed before");
}

/*
 * What a new leader publishes (and configures before it promotes): the old
 * set without itself, plus the old leader, with the same k.  Every
 * acknowledged commit is on k members of that: it was on k of the old set,
 * and one of those that is now the leader is replaced by the old leader,
 * which had every commit.
 */
void
hapg_sync_for_new_leader(const HapgSyncSet *published, const char *me,
						 const char *old_leader, HapgSyncSet *out)
{
	*out = *published;
	if (!published->defined)
		return;
	set_remove(out, me);
	if (old_leader && old_leader[0] && strcmp(old_leader, me) != 0 &&
		hapg_valid_member_name(old_leader))
		hapg_sync_set_add(out, old_leader);
	pad_to_k(out);
}

/*
 * How many members of the published set (the candidate included) a
 * candidate must hear from; more than there are when nothing is promised
 * (k = 0): then nobody takes over on its own.
 */
int
hapg_sync_witnesses_needed(const HapgSyncSet *published)
{
	if (!published->defined)
		return 0;
	if (published->k <= 0)
		return published->n + 1;
	return published->n - published->k + 1;
}

/*
 * synchronous_standby_names for a configured set: "" when no commit waits,
 * FIRST k when every listed standby must answer in "on", ANY k otherwise.
 * False when it does not fit.
 */
bool
hapg_sync_standby_names(const HapgSyncSet *config, char *buf, int buflen)
{
	int			len;
	int			i;

	if (buflen < 1)
		return false;
	buf[0] = '\0';
	if (!config->defined || config->k <= 0 || config->n == 0)
		return true;
	len = snprintf(buf, buflen, "%s %d (",
				   config->mode == HAPG_SYNC_ON && config->n == config->k ? "FIRST" : "ANY",
				   config->k);
	for (i = 0; i < config->n && len < buflen; i++)
		len += snprintf(buf + len, buflen - len, "%s\"%s\"", i ? ", " : "", config->names[i]);
	if (len < buflen)
		len += snprintf(buf + len, buflen - len, ")");
	if (len >= buflen)
	{
		buf[0] = '\0';
		return false;
	}
	return true;
}

/* hapg_members.sync_state of a standby. */
const char *
hapg_sync_state_of(const HapgSyncSet *published, const char *name,
				   bool streaming, bool nosync)
{
	if (!published->defined)
		return "async";
	if (hapg_sync_set_has(published, name) && published->k > 0)
		return published->mode == HAPG_SYNC_QUORUM ? "quorum" : "sync";
	if (streaming && !nosync)
		return "potential";
	return "async";
}
