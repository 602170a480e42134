/*
 * clock.c
 *		The two clocks hapg reads: milliseconds on the boot clock (which
 *		never jumps and never stops, see commitrule.c) for every duration
 *		the protocol measures, wall-clock Unix microseconds for schedules
 *		and for the times written into the Lease.
 */
#include "hapg.h"

#include <time.h>

#include "utils/timestamp.h"

/*
 * Milliseconds on hapg's one clock for durations (hapg_clock_us,
 * CLOCK_BOOTTIME, commitrule.c): never jumps with the wall clock and keeps
 * counting while this process or the machine is stopped, so the fence and
 * the commit guard measure the same time.
 */
int64
hapg_mono_ms(void)
{
	return (int64) (hapg_clock_us() / 1000);
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
