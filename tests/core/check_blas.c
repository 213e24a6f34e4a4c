/* check_blas.c - tests for core/blas.c: which kernel we ask OpenBLAS for, and
 * how many threads it runs when nobody said. */
#include <check.h>
#include "check_main.h"
#include <cblas.h>
#include <sched.h>
#include <stdlib.h>
#include <string.h>

#include "blas.h"
#include "cpus.h"
#include "one_cpu.h"

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

static const char *const thread_vars[] = {"OPENBLAS_NUM_THREADS", "GOTO_NUM_THREADS",
					  "OMP_NUM_THREADS", "OPENBLAS_DEFAULT_NUM_THREADS"};

/* Run in a process of its own (Check forks each test) on one CPU of its
 * affinity: OpenBLAS, loaded with one thread per CPU of the whole mask,
 * comes down to sid_cpus_usable's 1 (as it does under a CPU quota of 1). */
START_TEST(test_default_threads_follow_usable_cpus)
{
	cpu_set_t all;
	char why[700];

	for (size_t i = 0; i < sizeof(thread_vars) / sizeof(thread_vars[0]); i++)
		unsetenv(thread_vars[i]);
	ck_assert_int_eq(sched_getaffinity(0, sizeof(all), &all), 0);
	if (CPU_COUNT(&all) < 2 || openblas_get_num_threads() < 2)
		CHECK_SKIP("one CPU (or one OpenBLAS thread) already: nothing to lower");
	/* as many as usable already: left alone */
	ck_assert_int_eq(sid_blas_default_threads(why, sizeof(why)), openblas_get_num_threads());
	ck_assert_int_le(openblas_get_num_threads(), sid_cpus_usable(NULL));
	ck_assert_ptr_nonnull(strstr(why, "affinity"));
	one_cpu_pin(&all);
	ck_assert_int_eq(sid_blas_default_threads(NULL, 0), 1);
	ck_assert_int_eq(openblas_get_num_threads(), 1);
	/* never raised again, even with more CPUs back */
	one_cpu_unpin(&all);
	ck_assert_int_eq(sid_blas_default_threads(why, sizeof(why)), 1);
}
END_TEST

/* Each of OpenBLAS's own variables is the user's choice: left as it is. */
START_TEST(test_default_threads_leave_the_environment_alone)
{
	cpu_set_t all;
	char why[700];
	int before = openblas_get_num_threads();

	one_cpu_pin(&all);
	for (size_t i = 0; i < sizeof(thread_vars) / sizeof(thread_vars[0]); i++)
		unsetenv(thread_vars[i]);
	for (size_t i = 0; i < sizeof(thread_vars) / sizeof(thread_vars[0]); i++) {
		char want[64];
		setenv(thread_vars[i], "2", 1);
		ck_assert_int_eq(sid_blas_default_threads(why, sizeof(why)), before);
		snprintf(want, sizeof(want), "%s=2", thread_vars[i]);
		ck_assert_str_eq(why, want);
		unsetenv(thread_vars[i]);
	}
	/* not a positive number: OpenBLAS ignores it, and so does this */
	setenv("OPENBLAS_NUM_THREADS", "0", 1);
	setenv("OMP_NUM_THREADS", "many", 1);
	ck_assert_int_eq(sid_blas_default_threads(why, sizeof(why)), 1);
	ck_assert_ptr_nonnull(strstr(why, "affinity 1"));
}
END_TEST

static Suite *blas_suite(void)
{
	Suite *s = suite_create("blas");
	TCase *tc = tcase_create("core");
	tcase_add_test(tc, test_better_core_only_replaces_prescott);
	tcase_add_test(tc, test_tune_respects_user_choice);
	tcase_add_test(tc, test_default_threads_follow_usable_cpus);
	tcase_add_test(tc, test_default_threads_leave_the_environment_alone);
	suite_add_tcase(s, tc);
	return s;
}

int main(void)
{
	return check_run(blas_suite());
}
