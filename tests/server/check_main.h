/*
 * check_main.h - the main() shared by the server's Check suites: one suite
 * of one test case (30 s timeout) holding the tests the suite's add()
 * registers, run in CK_NORMAL mode; exit status 1 on any failure.
 */
#ifndef SRV_CHECK_MAIN_H
#define SRV_CHECK_MAIN_H

#include <check.h>

#include "../check_main.h"

static int srv_check_run(const char *name, void (*add)(TCase *tc))
{
	Suite *s = suite_create(name);
	TCase *tc = tcase_create(name);

	tcase_set_timeout(tc, 30);
	add(tc);
	suite_add_tcase(s, tc);
	return check_run(s);
}

#endif
