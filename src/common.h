/*
 * common.h
 *		Small pure helpers shared by the pure core (lease.c, steer.c,
 *		kjson.c, members.c) and the server side: sizes, member names, WAL
 *		positions and arithmetic, the timing rule, Unix time.  No PostgreSQL
 *		or I/O dependency; unit tested in tests/unit/test_common.c.
 */
#ifndef HAPG_COMMON_H
#define HAPG_COMMON_H

#include <stdbool.h>
#include <stdint.h>

#define HAPG_NAME_LEN 64		/* DNS-1123 label: 63 + NUL */
#define HAPG_RV_LEN 64
#define HAPG_ADDR_LEN 256
#define HAPG_MSG_LEN 512
#define HAPG_MAX_MEMBERS 32
#define HAPG_WORD_LEN 24

/* Microseconds from the Unix epoch to PostgreSQL's (2000-01-01 UTC). */
#define HAPG_PG_EPOCH_UNIX_US INT64_C(946684800000000)

extern bool hapg_timing_valid(int ttl_s, int loop_wait_s, int retry_timeout_s,
							  char *msg, int msglen);
extern bool hapg_valid_member_name(const char *name);
extern bool hapg_parse_lsn(const char *s, uint64_t *lsn);
extern void hapg_format_lsn(uint64_t lsn, char *buf, int buflen);
extern uint64_t hapg_wal_record_end(uint64_t start, uint32_t len,
									uint32_t page_size, uint32_t seg_size,
									uint32_t short_header, uint32_t long_header);
extern int64_t hapg_unix_us_from_pg(int64_t pg_us);
extern int64_t hapg_pg_from_unix_us(int64_t unix_us);

#endif							/* HAPG_COMMON_H */
