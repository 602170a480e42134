/*
 * fuzz_lease.c
 *		A Lease as the API server might answer it: parse it, and if it
 *		parses, build the renewal and an edit from it the way the worker
 *		does; what hapg writes must parse back to what it meant.
 */
#include "fuzz.h"

/* One input: a Lease JSON body. */
int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	json_object *obj;
	HapgLeaseInfo li;
	HapgLeaseInfo back;
	HapgLeaseWrite w;
	HapgLeaseEdit e;
	char		err[HAPG_MSG_LEN];
	char	   *body;
	int			i;

	if (!hapg_parse_json((const char *) data, size, &obj, err, sizeof(err)))
	{
		FUZZ_TERMINATED(err);
		return 0;
	}
	if (!hapg_parse_lease(obj, &li, err, sizeof(err)))
	{
		FUZZ_TERMINATED(err);
		json_object_put(obj);
		return 0;
	}
	FUZZ_TERMINATED(li.view.holder);
	FUZZ_TERMINATED(li.view.resource_version);
	FUZZ_TERMINATED(li.view.renew_time);
	FUZZ_ASSERT(li.npos >= 0 && li.npos <= HAPG_MAX_MEMBERS);
	FUZZ_ASSERT(li.nhistory >= 0 && li.nhistory <= HAPG_MAX_HISTORY);
	for (i = 0; i < li.npos; i++)
		FUZZ_TERMINATED(li.pos[i].name);
	for (i = 0; i < li.nhistory; i++)
		FUZZ_TERMINATED(li.history[i].reason);
	/* the holder ends up in fence reasons, the rejoin note and the guard's verdict line */
	FUZZ_ASSERT(li.view.holder[0] == '\0' || hapg_valid_member_name(li.view.holder));

	/* a renewal built on it keeps what it does not own and says what it means */
	memset(&w, 0, sizeof(w));
	w.name = "pg";
	w.namespace = "default";
	w.cluster = "pg";
	w.holder = "pg-0";
	w.duration_s = 30;
	w.transitions = li.view.transitions;
	w.renew_time = "2026-01-01T00:00:00.000000Z";
	w.resource_version = li.view.resource_version;
	w.leader_lsn = 0x16B3748;
	w.leader_timeline = 2;
	w.members_json = "[]";
	body = hapg_build_lease(obj, &w);
	FUZZ_ASSERT(body != NULL);
	{
		json_object *o2;

		FUZZ_ASSERT(hapg_parse_json(body, strlen(body), &o2, err, sizeof(err)));
		FUZZ_ASSERT(hapg_parse_lease(o2, &back, err, sizeof(err)));
		FUZZ_ASSERT(strcmp(back.view.holder, "pg-0") == 0);
		FUZZ_ASSERT(strcmp(back.view.resource_version, li.view.resource_version) == 0);
		FUZZ_ASSERT(back.view.duration_s == 30);
		FUZZ_ASSERT(back.has_leader_lsn && back.leader_lsn == 0x16B3748);
		json_object_put(o2);
	}
	free(body);

	/* an edit (a SQL request) releases it with a hand-over */
	memset(&e, 0, sizeof(e));
	e.resource_version = li.view.resource_version;
	e.holder = "";
	e.handover_json = "{\"from\":\"pg-0\",\"to\":\"pg-1\",\"lsn\":\"0/3000028\",\"reason\":\"switchover\"}";
	e.switchover_json = "";
	body = hapg_build_lease_edit(obj, &e);
	FUZZ_ASSERT(body != NULL);
	{
		json_object *o2;

		FUZZ_ASSERT(hapg_parse_json(body, strlen(body), &o2, err, sizeof(err)));
		FUZZ_ASSERT(hapg_parse_lease(o2, &back, err, sizeof(err)));
		FUZZ_ASSERT(back.view.holder[0] == '\0');
		FUZZ_ASSERT(back.has_handover && back.handover_lsn == 0x3000028);
		FUZZ_ASSERT(!back.switchover.pending);
		json_object_put(o2);
	}
	free(body);
	json_object_put(obj);
	return 0;
}
