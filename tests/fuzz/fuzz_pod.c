/*
 * fuzz_pod.c
 *		A Pod or a PodList as the API server might answer it.  Fields that
 *		end up in a libpq connection string or in the rejoin note must not
 *		be able to smuggle in another keyword or another line.
 */
#include "fuzz.h"

/* Check what hapg_parse_pod promises about one member. */
static void
check_pod(const HapgPodInfo *p)
{
	FUZZ_TERMINATED(p->name);
	FUZZ_TERMINATED(p->resource_version);
	FUZZ_TERMINATED(p->role_label);
	FUZZ_TERMINATED(p->role);
	FUZZ_TERMINATED(p->state);
	FUZZ_TERMINATED(p->connect_address);
	FUZZ_TERMINATED(p->version);
	FUZZ_TERMINATED(p->cand_term);
	/* host:port goes into "host=... port=..." and into the rejoin note */
	FUZZ_ASSERT(fuzz_plain(p->connect_address));
	FUZZ_ASSERT(strchr(p->connect_address, '\'') == NULL &&
				strchr(p->connect_address, '\\') == NULL &&
				strchr(p->connect_address, '=') == NULL);
}

/* One input: a Pod or PodList JSON body. */
int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	json_object *obj;
	char		err[HAPG_MSG_LEN];
	static HapgPodInfo pods[HAPG_MAX_MEMBERS];
	HapgPodInfo p;
	char		rv[HAPG_RV_LEN];
	int			n;
	int			i;

	if (!hapg_parse_json((const char *) data, size, &obj, err, sizeof(err)))
		return 0;
	if (hapg_parse_pod(obj, "role", &p, err, sizeof(err)))
		check_pod(&p);
	else
		FUZZ_TERMINATED(err);
	n = hapg_parse_pod_list(obj, "role", pods, HAPG_MAX_MEMBERS, rv, sizeof(rv),
							err, sizeof(err));
	FUZZ_ASSERT(n >= -1 && n <= HAPG_MAX_MEMBERS);
	for (i = 0; i < n; i++)
		check_pod(&pods[i]);
	if (n >= 0)
		FUZZ_TERMINATED(rv);
	json_object_put(obj);
	return 0;
}
