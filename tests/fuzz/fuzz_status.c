/*
 * fuzz_status.c
 *		An error body (a Kubernetes Status, or anything at all) turned into
 *		the short message that goes into the log and hapg_status().
 */
#include "fuzz.h"

/* One input: the body; its first byte also picks the buffer size. */
int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	char		big[HAPG_MSG_LEN];
	char	   *small;
	int			smalllen;

	hapg_status_message((const char *) data, size, big, sizeof(big));
	FUZZ_TERMINATED(big);
	if (size == 0)
		return 0;
	smalllen = 1 + data[0] % 32;
	small = malloc(smalllen);
	FUZZ_ASSERT(small != NULL);
	hapg_status_message((const char *) data + 1, size - 1, small, smalllen);
	FUZZ_ASSERT(memchr(small, '\0', smalllen) != NULL);
	free(small);
	return 0;
}
