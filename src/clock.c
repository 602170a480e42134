/*
 * clock.c
 *		The two clocks hapg reads: monotonic milliseconds for every duration
 *		the protocol measures, wall-clock Unix microseconds for schedules
 *		and for the times written into the Lease.
 */
#include "hapg.h"

#include <time.h>

#include "utils/timestamp.h"

/* Milliseconds since an arbitrary point that never jumps with the wall clock. */
int64
hapg_mono_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64) ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* A PostgreSQL timestamp as Unix microseconds. */
int64
hapg_unix_us(TimestampTz ts)
{
	return hapg_unix_us_from_pg(ts);
}

/* Unix microseconds as a PostgreSQL timestamp. */
TimestampTz
hapg_timestamptz(int64 unix_us)
{
	return (TimestampTz) hapg_pg_from_unix_us(unix_us);
}

/* Wall-clock Unix microseconds now. */
int64
hapg_unix_now_us(void)
{
	return hapg_unix_us(GetCurrentTimestamp());
}

StaticAssertDecl(HAPG_PG_EPOCH_UNIX_US ==
				 (int64) (POSTGRES_EPOCH_JDATE - UNIX_EPOCH_JDATE) * SECS_PER_DAY * USECS_PER_SEC,
				 "the epoch offset in common.h must match PostgreSQL's");
