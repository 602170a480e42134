/*
 * kjson.h
 *		Parsing and building the Kubernetes objects hapg uses (Lease, Pod,
 *		watch events, Status) with json-c.  No PostgreSQL dependency: unit
 *		tested in tests/unit.  Built strings are malloc'd; callers free().
 */
#ifndef HAPG_KJSON_H
#define HAPG_KJSON_H

#include <stddef.h>
#include <json-c/json.h>

#include "lease.h"
#include "steer.h"
#include "syncrep.h"

#define HAPG_CLUSTER_LABEL "hapg.io/cluster"
#define HAPG_STATUS_ANNOTATION "hapg.io/status"
#define HAPG_LSN_ANNOTATION "hapg.io/lsn"
#define HAPG_TIMELINE_ANNOTATION "hapg.io/timeline"
#define HAPG_MEMBERS_ANNOTATION "hapg.io/members"
#define HAPG_HISTORY_ANNOTATION "hapg.io/history"
#define HAPG_CANDIDACY_ANNOTATION "hapg.io/candidacy"
#define HAPG_CONFIG_ANNOTATION "hapg.io/config"
#define HAPG_SWITCHOVER_ANNOTATION "hapg.io/switchover"
#define HAPG_HANDOVER_ANNOTATION "hapg.io/handover"
#define HAPG_FAILSAFE_ANNOTATION "hapg.io/failsafe"
#define HAPG_SYNC_ANNOTATION "hapg.io/sync"


/* A parsed Lease: the protocol fields plus the leader's annotations. */
typedef struct HapgLeaseInfo
{
	HapgLeaseView view;			/* observed_ms is left 0: the caller stamps it */
	bool		has_leader_lsn;
	uint64_t	leader_lsn;
	int			leader_timeline;
	int			npos;
	HapgMemberPos pos[HAPG_MAX_MEMBERS];
	int			nhistory;
	HapgHistoryEntry history[HAPG_MAX_HISTORY];
	bool		paused;			/* hapg.io/config: {"paused": true} */
	HapgSwitchover switchover;	/* hapg.io/switchover */
	bool		has_handover;	/* hapg.io/handover, on a released Lease */
	char		handover_from[HAPG_NAME_LEN];
	char		handover_to[HAPG_NAME_LEN];
	uint64_t	handover_lsn;
	char		handover_reason[HAPG_WORD_LEN * 2];
	bool		failsafe;		/* hapg.io/failsafe: the holder may use failsafe mode */
	int			nfailsafe;		/* its member list (a damaged one lists nobody) */
	char		failsafe_members[HAPG_MAX_MEMBERS][HAPG_NAME_LEN];
	HapgSyncSet sync;			/* hapg.io/sync: the published synchronous set */
} HapgLeaseInfo;

/* A parsed member Pod: its role label and its hapg.io/status annotation. */
typedef struct HapgPodInfo
{
	char		name[HAPG_NAME_LEN];
	char		resource_version[HAPG_RV_LEN];
	char		role_label[HAPG_WORD_LEN];	/* "" when absent */
	bool		deleting;
	bool		has_status;
	char		role[HAPG_WORD_LEN];
	char		state[HAPG_WORD_LEN];
	int			timeline;
	uint64_t	lsn;
	char		connect_address[HAPG_ADDR_LEN];
	char		version[HAPG_WORD_LEN];
	bool		has_candidacy;	/* hapg.io/candidacy: its position in an election */
	char		cand_term[HAPG_RV_LEN];
	bool		cand_eligible;
	uint64_t	cand_lsn;
	int			cand_timeline;
	int			cand_priority;
	bool		nofailover;		/* from the status: may it be promoted? */
	bool		nosync;			/* from the status: never a synchronous standby */
	int			priority;
} HapgPodInfo;

/* What a leader writes into the Lease. */
typedef struct HapgLeaseWrite
{
	const char *name;
	const char *namespace;
	const char *cluster;
	const char *holder;
	int			duration_s;
	int			transitions;
	const char *acquire_time;	/* NULL: keep the existing one */
	const char *renew_time;
	const char *resource_version;	/* NULL on create */
	uint64_t	leader_lsn;
	int			leader_timeline;
	const char *members_json;	/* hapg.io/members, may be NULL */
	const HapgHistoryEntry *add_history;	/* appended to hapg.io/history */
	/* annotations: NULL keeps them as read, "" removes them */
	const char *config_json;
	const char *switchover_json;
	const char *handover_json;
	const char *failsafe_json;	/* hapg.io/failsafe */
	const char *sync_json;		/* hapg.io/sync */
} HapgLeaseWrite;

/* An edit of a Lease by a member that does not hold it (SQL requests). */
typedef struct HapgLeaseEdit
{
	const char *resource_version;	/* of the read the edit was judged on */
	const char *holder;			/* NULL: keep; "" releases */
	const char *config_json;	/* NULL keeps, "" removes */
	const char *switchover_json;
	const char *handover_json;
} HapgLeaseEdit;

extern bool hapg_parse_json(const char *buf, size_t len, json_object **out,
							char *err, int errlen);
extern bool hapg_parse_lease(json_object *obj, HapgLeaseInfo *out,
							 char *err, int errlen);
extern bool hapg_parse_pod(json_object *obj, const char *role_label_key,
						   HapgPodInfo *out, char *err, int errlen);
extern int	hapg_parse_pod_list(json_object *obj, const char *role_label_key,
								HapgPodInfo *pods, int max, char *list_rv,
								int rvlen, char *err, int errlen);
extern bool hapg_parse_watch_event(const char *line, size_t len, char *type,
								   int typelen, json_object **obj,
								   char *err, int errlen);
extern void hapg_status_message(const char *body, size_t len, char *buf,
								int buflen);
extern const char *hapg_object_rv(json_object *obj);
extern const char *hapg_object_kind(json_object *obj);
extern const char *hapg_object_name(json_object *obj);

extern char *hapg_build_lease(json_object *existing, const HapgLeaseWrite *w);
extern char *hapg_build_status_json(const char *role, const char *state,
									int timeline, uint64_t lsn,
									const char *connect_address,
									const char *version, bool nofailover,
									bool nosync, int priority);
extern char *hapg_build_lease_edit(json_object *existing, const HapgLeaseEdit *e);
extern char *hapg_build_switchover_json(const HapgSwitchover *sw);
extern char *hapg_build_handover_json(const char *from, const char *to,
									  uint64_t lsn, const char *reason);
extern char *hapg_build_pod_patch(const char *role_label_key,
								  const char *label_value,
								  const char *status_json);
extern char *hapg_build_candidacy_patch(const char *term, bool eligible,
										uint64_t lsn, int timeline,
										int priority);
extern char *hapg_build_members_json(const HapgMemberPos *pos, int n);
extern char *hapg_build_failsafe_json(const char (*names)[HAPG_NAME_LEN], int n);
extern char *hapg_build_sync_json(const HapgSyncSet *set);
extern void hapg_format_microtime(int64_t unix_us, char *buf, int buflen);

#endif							/* HAPG_KJSON_H */
