/*
 * unit.h
 *		A minimal test harness: each CHECK counts, failures print where.
 */
#ifndef HAPG_UNIT_H
#define HAPG_UNIT_H

#include <stdio.h>
#include <string.h>

extern int	unit_passed;
extern int	unit_failed;
extern const char *unit_current;

#define CHECK(cond) \
	do { \
		if (cond) \
			unit_passed++; \
		else \
		{ \
			unit_failed++; \
			fprintf(stderr, "FAIL %s (%s:%d): %s\n", unit_current, __FILE__, __LINE__, #cond); \
		} \
	} while (0)

#define CHECK_STR(a, b) CHECK(strcmp((a), (b)) == 0)

#define TEST(name) static void name(void)
#define RUN(name) do { unit_current = #name; name(); } while (0)

extern void run_lease_tests(void);
extern void run_kjson_tests(void);
extern void run_steer_tests(void);
extern void run_commitrule_tests(void);
extern void run_members_tests(void);
extern void run_common_tests(void);
extern void run_http_tests(void);
extern void run_failsafe_tests(void);
extern void run_syncrep_tests(void);
extern void run_synctakeover_tests(void);

#endif
