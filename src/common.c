/*
 * common.c
 *		Small pure helpers shared by the pure core and the server side.
 *
 * Nothing here does I/O or reads a clock: every function is unit tested in
 * tests/unit/test_common.c.
 */
#include "common.h"

#include <ctype.h>
#include <stdio.h>
#include <string.h>

/*
 * Where a WAL record of len bytes starting at start ends, counting the page
 * headers it crosses (long at a segment start, short otherwise): a hand-over
 * target must have received the old leader's shutdown checkpoint whole.
 */
uint64_t
hapg_wal_record_end(uint64_t start, uint32_t len, uint32_t page_size,
					uint32_t seg_size, uint32_t short_header,
					uint32_t long_header)
{
	uint64_t	pos = start;
	uint64_t	left = len;

	if (page_size == 0 || seg_size == 0)
		return start + len;
	while (left > 0)
	{
		uint64_t	in_page = page_size - pos % page_size;

		if (pos % page_size == 0)
		{
			uint32_t	hdr = pos % seg_size == 0 ? long_header : short_header;

			pos += hdr;
			in_page -= hdr;
		}
		if (left <= in_page)
			return pos + left;
		left -= in_page;
		pos += in_page;
	}
	return pos;
}

/*
 * A leader must be able to retry a failed renewal twice and still act before
 * its Lease runs out: the rule Patroni users know.
 */
bool
hapg_timing_valid(int ttl_s, int loop_wait_s, int retry_timeout_s,
				  char *msg, int msglen)
{
	if (ttl_s <= 0 || loop_wait_s <= 0 || retry_timeout_s <= 0)
	{
		snprintf(msg, msglen, "hapg.ttl, hapg.loop_wait and hapg.retry_timeout must be positive");
		return false;
	}
	if ((int64_t) loop_wait_s + 2 * (int64_t) retry_timeout_s > ttl_s)
	{
		snprintf(msg, msglen,
				 "hapg.loop_wait (%ds) + 2 * hapg.retry_timeout (%ds) = %llds exceeds hapg.ttl (%ds)",
				 loop_wait_s, retry_timeout_s,
				 (long long) ((int64_t) loop_wait_s + 2 * (int64_t) retry_timeout_s), ttl_s);
		return false;
	}
	if (msglen > 0)
		msg[0] = '\0';
	return true;
}

/*
 * Member names become Pod names and Lease holders: accept only what
 * Kubernetes accepts as a DNS-1123 subdomain, at most 63 characters.
 */
bool
hapg_valid_member_name(const char *name)
{
	size_t		len = strlen(name);
	size_t		i;

	if (len == 0 || len >= HAPG_NAME_LEN)
		return false;
	for (i = 0; i < len; i++)
	{
		unsigned char c = (unsigned char) name[i];

		if (!(islower(c) || isdigit(c) || c == '-' || c == '.'))
			return false;
	}
	return isalnum((unsigned char) name[0]) && isalnum((unsigned char) name[len - 1]);
}

/* WAL positions travel as PostgreSQL prints them: "X/Y" in hex. */
bool
hapg_parse_lsn(const char *s, uint64_t *lsn)
{
	unsigned int hi,
				lo;
	int			n = 0;

	if (s == NULL || sscanf(s, "%X/%X%n", &hi, &lo, &n) != 2 || s[n] != '\0')
		return false;
	*lsn = ((uint64_t) hi << 32) | lo;
	return true;
}

/* The same "X/Y" form, for logs and annotations. */
void
hapg_format_lsn(uint64_t lsn, char *buf, int buflen)
{
	snprintf(buf, buflen, "%X/%X", (unsigned int) (lsn >> 32), (unsigned int) lsn);
}


/* PostgreSQL timestamps (microseconds since 2000) as Unix microseconds. */
int64_t
hapg_unix_us_from_pg(int64_t pg_us)
{
	return pg_us + HAPG_PG_EPOCH_UNIX_US;
}

/* Unix microseconds as a PostgreSQL timestamp. */
int64_t
hapg_pg_from_unix_us(int64_t unix_us)
{
	return unix_us - HAPG_PG_EPOCH_UNIX_US;
}
