/*
 * fuzz_rejoin.c
 *		The rejoin note (D/hapg.rejoin, "source=<conninfo>\nreason=<text>\n",
 *		read by bin/hapg-launcher, last key wins) and the start-up guard's
 *		verdict line ("rejoin|holder|source|message") are made of what the
 *		API said: the Lease's holder and the holder Pod's connect address.
 *		Whatever a Lease and a Pod contain, those fields must not be able to
 *		add a line or a field (a second "source=" would make the launcher
 *		rewind from a host of the writer's choosing).
 */
#include "fuzz.h"

/* One input: a Lease JSON, a NUL byte, a Pod JSON. */
int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	const uint8_t *sep = memchr(data, '\0', size);
	json_object *obj;
	HapgLeaseInfo li;
	HapgPodInfo pod;
	char		err[HAPG_MSG_LEN];

	if (sep == NULL)
		return 0;
	if (hapg_parse_json((const char *) data, (size_t) (sep - data), &obj, err, sizeof(err)))
	{
		if (hapg_parse_lease(obj, &li, err, sizeof(err)))
		{
			FUZZ_ASSERT(fuzz_plain(li.view.holder));
		}
		json_object_put(obj);
	}
	if (hapg_parse_json((const char *) sep + 1, size - (size_t) (sep - data) - 1, &obj, err, sizeof(err)))
	{
		if (hapg_parse_pod(obj, "role", &pod, err, sizeof(err)))
		{
			FUZZ_ASSERT(fuzz_plain(pod.connect_address));
		}
		json_object_put(obj);
	}
	return 0;
}
