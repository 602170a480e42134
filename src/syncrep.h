/*
 * syncrep.h
 *		Synchronous replication's rules: which standbys the leader makes
 *		synchronous, in which order the published set (the Lease's
 *		hapg.io/sync) and the server's synchronous_standby_names change, and
 *		who may take over afterwards.  Pure C with no PostgreSQL or I/O
 *		dependency (unit tested in tests/unit/test_syncrep.c); the argument
 *		is in docs/DESIGN.md, "Synchronous replication".
 *
 * A set (V, k) says: every acknowledged commit is on at least k members of
 * V (besides the leader).  The leader keeps two: the one published in the
 * Lease, and the one configured in synchronous_standby_names (ANY k (V)).
 * Two rules keep every acknowledged commit on k published members:
 *   - the configured set is covered by the published one:
 *     kc - |Vc \ V| >= k;
 *   - the published set changes from (V, k) to (V', k') only when
 *     k - |V \ V'| >= k', or when k' members of V' have flushed the
 *     position at which the configured set came into force.
 * A standby takes over only if it is in V and hears the positions of
 * |V| - k + 1 members of V (itself included), none ahead of it: those
 * include one of any k that acknowledged a commit.
 */
#ifndef HAPG_SYNCREP_H
#define HAPG_SYNCREP_H

#include <stdbool.h>
#include <stdint.h>

#include "common.h"

/* hapg.synchronous_mode */
typedef enum HapgSyncMode
{
	HAPG_SYNC_OFF = 0,
	HAPG_SYNC_ON,				/* FIRST n: the chosen standbys */
	HAPG_SYNC_QUORUM			/* ANY n over every eligible standby */
} HapgSyncMode;

/*
 * A name no member can have (member names are DNS labels): strict mode
 * waits for it when too few standbys stream, so that commits wait.
 */
#define HAPG_SYNC_WAIT_PREFIX "_hapg_wait_"

/* A set (V, k); names kept sorted, so that sets compare with memcmp-free equality. */
typedef struct HapgSyncSet
{
	bool		defined;		/* false: no synchronous state (asynchronous) */
	HapgSyncMode mode;			/* for display and the FIRST/ANY choice */
	bool		strict;			/* for display */
	int			k;				/* acknowledgements a commit needs from names */
	int			n;
	char		names[HAPG_MAX_MEMBERS][HAPG_NAME_LEN];
} HapgSyncSet;

/* A standby as the leader sees it (walsender plus Pod status). */
typedef struct HapgSyncStandby
{
	char		name[HAPG_NAME_LEN];
	bool		streaming;
	bool		missing;		/* not streaming just now, within its grace period */
	bool		nosync;			/* hapg.nosync on that member */
	uint64_t	flush;			/* flushed up to here */
} HapgSyncStandby;

/* What the leader should do next about synchronous replication. */
typedef enum HapgSyncStepKind
{
	HAPG_SYNC_DONE = 0,			/* published and configured are the target */
	HAPG_SYNC_PUBLISH,			/* write step.set into the Lease (CAS), then look again */
	HAPG_SYNC_CONFIGURE,		/* set synchronous_standby_names to step.set */
	HAPG_SYNC_CONFIRM			/* wait: the configured set in force, standbys caught up */
} HapgSyncStepKind;

typedef struct HapgSyncStep
{
	HapgSyncStepKind kind;
	HapgSyncSet set;
	const char *why;
} HapgSyncStep;

extern const char *hapg_sync_mode_name(HapgSyncMode mode);
extern bool hapg_sync_parse_mode(const char *s, HapgSyncMode *mode);
extern bool hapg_sync_is_placeholder(const char *name);
extern void hapg_sync_set_clear(HapgSyncSet *s);
extern bool hapg_sync_set_add(HapgSyncSet *s, const char *name);
extern bool hapg_sync_set_has(const HapgSyncSet *s, const char *name);
extern bool hapg_sync_set_equal(const HapgSyncSet *a, const HapgSyncSet *b);
extern bool hapg_sync_configured_covered(const HapgSyncSet *config, const HapgSyncSet *published);
extern bool hapg_sync_change_covered(const HapgSyncSet *from, const HapgSyncSet *to);
extern void hapg_sync_target(HapgSyncMode mode, bool strict, int count, int64_t max_lag,
							 uint64_t leader_lsn, const HapgSyncStandby *sb, int nsb,
							 const HapgSyncSet *published, HapgSyncSet *out);
extern void hapg_sync_step(const HapgSyncSet *published, const HapgSyncSet *config,
						   const HapgSyncSet *target, bool in_force, uint64_t sync_point,
						   const HapgSyncStandby *sb, int nsb, HapgSyncStep *out);
extern void hapg_sync_for_new_leader(const HapgSyncSet *published, const char *me,
									 const char *old_leader, HapgSyncSet *out);
extern int	hapg_sync_witnesses_needed(const HapgSyncSet *published);
extern bool hapg_sync_standby_names(const HapgSyncSet *config, char *buf, int buflen);
extern const char *hapg_sync_state_of(const HapgSyncSet *published, const char *name,
									  bool streaming, bool nosync);

#endif							/* HAPG_SYNCREP_H */
