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

/* The decision sid_blas_tune acts on, for a Prescott core on an AVX-512
 * CPU whatever this host is: re-execute with SkylakeX, unless the user set
 * OPENBLAS_CORETYPE (kept as it is) or opted out with SEMID_BLAS_TUNE=0.
 * (sid_blas_tune itself would re-execute this test program.) */
START_TEST(test_tune_respects_user_choice)
{
	unsetenv("OPENBLAS_CORETYPE");
	unsetenv("SEMID_BLAS_TUNE");
	ck_assert_str_eq(sid__blas_tune_choice("Prescott", 1, 1), "SkylakeX");
	setenv("OPENBLAS_CORETYPE", "Prescott", 1);
	ck_assert_ptr_null(sid__blas_tune_choice("Prescott", 1, 1));
	ck_assert_str_eq(getenv("OPENBLAS_CORETYPE"), "Prescott");
	unsetenv("OPENBLAS_CORETYPE");
	setenv("SEMID_BLAS_TUNE", "0", 1);
	ck_assert_ptr_null(sid__blas_tune_choice("Prescott", 1, 1));
	setenv("SEMID_BLAS_TUNE", "1", 1); /* only 0 opts out */
	ck_assert_str_eq(sid__blas_tune_choice("Prescott", 1, 0), "Haswell");
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
