/* check_blas.c - tests for core/blas.c: which kernel we ask OpenBLAS for. */
#include <check.h>
#include "check_main.h"
#include <stdlib.h>
#include <string.h>

#include "blas.h"

START_TEST(test_better_core_only_replaces_prescott)
{
	ck_assert_str_eq(sid_blas_better_core("Prescott", 1, 1), "SkylakeX");
	ck_assert_str_eq(sid_blas_better_core("prescott", 1, 0), "Haswell");
	ck_assert_ptr_null(sid_blas_better_core("Prescott", 0, 0));
	/* a kernel OpenBLAS detected itself is never second-guessed */
	ck_assert_ptr_null(sid_blas_better_core("Haswell", 1, 1));
	ck_assert_ptr_null(sid_blas_better_core("SkylakeX", 1, 1));
	ck_assert_ptr_null(sid_blas_better_core(NULL, 1, 1));
}
END_TEST

START_TEST(test_tune_respects_user_choice)
{
	/* With the variable set by the user, tune must return (not exec) and
	 * leave it alone. */
	char *argv[] = {"/nonexistent/program", NULL};
	setenv("OPENBLAS_CORETYPE", "Prescott", 1);
	sid_blas_tune(argv);
	ck_assert_str_eq(getenv("OPENBLAS_CORETYPE"), "Prescott");
	unsetenv("OPENBLAS_CORETYPE");
	/* Opted out: returns too. */
	setenv("SEMID_BLAS_TUNE", "0", 1);
	sid_blas_tune(argv);
	ck_assert_ptr_null(getenv("OPENBLAS_CORETYPE"));
	unsetenv("SEMID_BLAS_TUNE");
	ck_assert_ptr_nonnull(sid_blas_corename());
	ck_assert_int_gt((int)strlen(sid_blas_corename()), 0);
}
END_TEST

static Suite *blas_suite(void)
{
	Suite *s = suite_create("blas");
	TCase *tc = tcase_create("core");
	tcase_add_test(tc, test_better_core_only_replaces_prescott);
	tcase_add_test(tc, test_tune_respects_user_choice);
	suite_add_tcase(s, tc);
	return s;
}

int main(void)
{
	return check_run(blas_suite());
}
