/* Runs every unit test and prints the closing line CI reads. */
#include "unit.h"

int			unit_passed = 0;
int			unit_failed = 0;
const char *unit_current = "";

int
main(void)
{
	run_lease_tests();
	run_kjson_tests();
	run_steer_tests();
	run_commitrule_tests();
	run_members_tests();
	run_common_tests();
	run_http_tests();
	run_failsafe_tests();
	run_syncrep_tests();
	run_synctakeover_tests();
	printf("unit: %d passed, %d failed\n", unit_passed, unit_failed);
	return unit_failed == 0 ? 0 : 1;
}
