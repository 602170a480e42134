/*
 * fuzz_settings.c
 *		Settings values and the strings hapg reads back from annotations:
 *		member names (hapg.member_name, hapg.cluster_name, hapg.namespace),
 *		WAL positions ("X/Y"), and the timing rule.
 */
#include "fuzz.h"

/* One input: a string value; its first 12 bytes are also three integers. */
int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	char	   *s = malloc(size + 1);
	uint64_t	lsn;
	char		msg[HAPG_MSG_LEN];

	FUZZ_ASSERT(s != NULL);
	memcpy(s, data, size);
	s[size] = '\0';

	if (hapg_valid_member_name(s))
	{
		size_t		i,
					n = strlen(s);

		FUZZ_ASSERT(n > 0 && n < HAPG_NAME_LEN);
		for (i = 0; i < n; i++)
			FUZZ_ASSERT((s[i] >= 'a' && s[i] <= 'z') || (s[i] >= '0' && s[i] <= '9') ||
						s[i] == '-' || s[i] == '.');
	}
	if (hapg_parse_lsn(s, &lsn))
	{
		char		buf[32];
		uint64_t	again;

		/* what hapg prints it reads back as the same position */
		hapg_format_lsn(lsn, buf, sizeof(buf));
		FUZZ_ASSERT(hapg_parse_lsn(buf, &again) && again == lsn);
	}
	if (size >= 12)
	{
		int32_t		v[3];

		memcpy(v, data, sizeof(v));
		if (hapg_timing_valid(v[0], v[1], v[2], msg, sizeof(msg)))
		{
			FUZZ_ASSERT(v[0] > 0 && v[1] > 0 && v[2] > 0);
			FUZZ_ASSERT((int64_t) v[1] + 2 * (int64_t) v[2] <= v[0]);
			/* the fence comes before the Lease ends, and not absurdly early */
			FUZZ_ASSERT(hapg_fence_margin_ms(v[0]) > 0 &&
						hapg_fence_margin_ms(v[0]) <= 2000);
		}
		else
			FUZZ_TERMINATED(msg);
	}
	free(s);
	return 0;
}
