/* Unit tests of the small shared helpers (src/common.c). */
#include "unit.h"
#include "common.h"

TEST(timing_rule)
{
	char		msg[256];

	CHECK(hapg_timing_valid(30, 10, 10, msg, sizeof(msg)));
	CHECK(hapg_timing_valid(6, 2, 2, msg, sizeof(msg)));
	CHECK(!hapg_timing_valid(29, 10, 10, msg, sizeof(msg)));
	CHECK(strstr(msg, "exceeds hapg.ttl (29s)") != NULL);
	CHECK(!hapg_timing_valid(30, 0, 10, msg, sizeof(msg)));
	/* found by tests/fuzz: the sum in the message must not overflow */
	CHECK(!hapg_timing_valid(30, 2147483647, 2147483647, msg, sizeof(msg)));
	CHECK(strstr(msg, "6442450941s") != NULL);
}

TEST(member_names)
{
	CHECK(hapg_valid_member_name("pg-0"));
	CHECK(hapg_valid_member_name("a.b-c"));
	CHECK(!hapg_valid_member_name(""));
	CHECK(!hapg_valid_member_name("PG-0"));
	CHECK(!hapg_valid_member_name("-pg"));
	CHECK(!hapg_valid_member_name("pg-"));
	CHECK(!hapg_valid_member_name("pg_0"));
	CHECK(!hapg_valid_member_name("0123456789012345678901234567890123456789012345678901234567890123"));
}

TEST(lsn_round_trip)
{
	uint64_t	lsn;
	char		buf[32];

	CHECK(hapg_parse_lsn("0/3000060", &lsn));
	CHECK(lsn == 0x3000060);
	CHECK(hapg_parse_lsn("1A/FF", &lsn));
	CHECK(lsn == ((uint64_t) 0x1A << 32 | 0xFF));
	hapg_format_lsn(lsn, buf, sizeof(buf));
	CHECK_STR(buf, "1A/FF");
	CHECK(!hapg_parse_lsn("0/", &lsn));
	CHECK(!hapg_parse_lsn("0/10 x", &lsn));
	CHECK(!hapg_parse_lsn(NULL, &lsn));
}

#define PAGE 8192
#define SEG (16 * 1024 * 1024)
#define SHORT_PHD 24
#define LONG_PHD 40

/* A record that fits in its page ends where its bytes end. */
TEST(wal_record_within_a_page)
{
	CHECK(hapg_wal_record_end(3 * PAGE + 100, 114, PAGE, SEG, SHORT_PHD, LONG_PHD) ==
		  3 * PAGE + 100 + 114);
	/* ending exactly at the page end adds no header */
	CHECK(hapg_wal_record_end(4 * PAGE - 114, 114, PAGE, SEG, SHORT_PHD, LONG_PHD) ==
		  4 * PAGE);
	/* nothing to read */
	CHECK(hapg_wal_record_end(3 * PAGE + 100, 0, PAGE, SEG, SHORT_PHD, LONG_PHD) ==
		  3 * PAGE + 100);
	/* without a page geometry there are no headers to count */
	CHECK(hapg_wal_record_end(4 * PAGE - 50, 114, 0, SEG, SHORT_PHD, LONG_PHD) ==
		  4 * PAGE - 50 + 114);
	CHECK(hapg_wal_record_end(4 * PAGE - 50, 114, PAGE, 0, SHORT_PHD, LONG_PHD) ==
		  4 * PAGE - 50 + 114);
}

/* Crossing into the next page skips its short header. */
TEST(wal_record_crosses_a_page)
{
	CHECK(hapg_wal_record_end(4 * PAGE - 50, 114, PAGE, SEG, SHORT_PHD, LONG_PHD) ==
		  4 * PAGE + SHORT_PHD + 64);
	/* one byte over */
	CHECK(hapg_wal_record_end(4 * PAGE - 113, 114, PAGE, SEG, SHORT_PHD, LONG_PHD) ==
		  4 * PAGE + SHORT_PHD + 1);
	/* a start on a page boundary is after that page's header */
	CHECK(hapg_wal_record_end(5 * PAGE, 10, PAGE, SEG, SHORT_PHD, LONG_PHD) ==
		  5 * PAGE + SHORT_PHD + 10);
}

/* Crossing into a new segment skips the long header. */
TEST(wal_record_crosses_a_segment)
{
	CHECK(hapg_wal_record_end((uint64_t) SEG - 50, 114, PAGE, SEG, SHORT_PHD, LONG_PHD) ==
		  (uint64_t) SEG + LONG_PHD + 64);
	CHECK(hapg_wal_record_end(UINT64_C(0x300000000) + 5 * SEG - 50, 114, PAGE, SEG,
							  SHORT_PHD, LONG_PHD) ==
		  UINT64_C(0x300000000) + 5 * SEG + LONG_PHD + 64);
}

/* A long record pays one header per page it reaches. */
TEST(wal_record_spans_pages)
{
	/* 8092 bytes in page 2, 8168 in page 3, the last 3740 in page 4 */
	CHECK(hapg_wal_record_end(2 * PAGE + 100, 20000, PAGE, SEG, SHORT_PHD, LONG_PHD) ==
		  4 * PAGE + SHORT_PHD + 3740);
	/* with a segment of 4 pages, page 4 starts a segment: 8152 bytes there */
	CHECK(hapg_wal_record_end(3 * PAGE + 100, 20000, PAGE, 4 * PAGE, SHORT_PHD, LONG_PHD) ==
		  5 * PAGE + SHORT_PHD + 3756);
	/* filling pages 3 and 4 exactly ends at the end of page 4 */
	CHECK(hapg_wal_record_end(3 * PAGE + 100, (PAGE - 100) + (PAGE - LONG_PHD), PAGE,
							  4 * PAGE, SHORT_PHD, LONG_PHD) == 5 * PAGE);
}

/* PostgreSQL's epoch is 2000-01-01 00:00:00 UTC, Unix second 946684800. */
TEST(epoch_conversion)
{
	CHECK(hapg_unix_us_from_pg(0) == INT64_C(946684800) * 1000000);
	CHECK(hapg_pg_from_unix_us(INT64_C(946684800) * 1000000) == 0);
	CHECK(hapg_pg_from_unix_us(hapg_unix_us_from_pg(INT64_C(123456789))) == 123456789);
	/* 2026-12-03 00:00:00 UTC */
	CHECK(hapg_unix_us_from_pg(INT64_C(849571200) * 1000000) == INT64_C(1796256000) * 1000000);
}

void
run_common_tests(void)
{
	RUN(timing_rule);
	RUN(member_names);
	RUN(lsn_round_trip);
	RUN(wal_record_within_a_page);
	RUN(wal_record_crosses_a_page);
	RUN(wal_record_crosses_a_segment);
	RUN(wal_record_spans_pages);
	RUN(epoch_conversion);
}
