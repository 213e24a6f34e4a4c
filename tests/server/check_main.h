/*
 * check_main.h - the main() shared by the server's Check suites: one suite
 * of one test case (30 s timeout) holding the tests the suite's add()
 * registers, run in CK_NORMAL mode; exit status 1 on any failure.
 */
#ifndef SRV_CHECK_MAIN_H
#define SRV_CHECK_MAIN_H

#include <check.h>

static int srv_check_run(const char *name, void (*add)(TCase *tc))
{
	Suite *s = suite_create(name);
	TCase *tc = tcase_create(name);
	SRunner *sr;
	int failed;

	tcase_set_timeout(tc, 30);
	add(tc);
	suite_add_tcase(s, tc);
	sr = srunner_create(s);
	srunner_run_all(sr, CK_NORMAL);
	failed = srunner_ntests_failed(sr);
	srunner_free(sr);
	return failed ? 1 : 0;
}

#endif
