/*
 * check_main.h - the end of every Check suite's main(): run the suite in
 * CK_NORMAL mode (its summary line is what tests/run.py counts), free it, and
 * turn the result into the exit status (1 on any failure or error).
 */
#ifndef SID_CHECK_MAIN_H
#define SID_CHECK_MAIN_H

#include <check.h>

static inline int check_run(Suite *s)
{
	SRunner *sr = srunner_create(s);
	int failed;

	srunner_run_all(sr, CK_NORMAL);
	failed = srunner_ntests_failed(sr);
	srunner_free(sr);
	return failed ? 1 : 0;
}

#endif
