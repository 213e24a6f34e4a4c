/*
 * check_overcommit.c - tests for trainer/overcommit.c: the OpenBLAS threads
 * that fit in the room strict commit accounting leaves, worked out by hand
 * in MiB (check_blas reads the setting from a fake proc directory).
 */
#include <check.h>
#include "check_main.h"

#include "overcommit.h"

#define MIB (1ULL << 20)

/* In MiB: a 128 buffer, 136 a further thread (its buffer and an 8 MiB
 * stack); a quarter of the room is kept for the data. */
static int fit(unsigned long long limit, unsigned long long committed, int want, int started,
	       int caller_mapped)
{
	struct sid_commit oc = {1, limit * MIB, committed * MIB};
	return tr_overcommit_threads(&oc, want, started, caller_mapped, 128 * MIB, 136 * MIB);
}

START_TEST(test_threads_that_fit)
{
	struct sid_commit lax = {0, 100 * MIB, 0};

	/* not strict: as asked, whatever the numbers */
	ck_assert_int_eq(tr_overcommit_threads(&lax, 8, 1, 0, 128 * MIB, 136 * MIB), 8);
	/* 100 MiB left: not the calling thread's buffer; mapped already, it
	 * runs alone (75 MiB spare, no thread) */
	ck_assert_int_eq(fit(5000, 4900, 4, 1, 0), 0);
	ck_assert_int_eq(fit(5000, 4900, 4, 1, 1), 1);
	/* exactly its buffer, and one byte less */
	ck_assert_int_eq(fit(5000, 4872, 4, 1, 0), 1);
	{
		struct sid_commit oc = {1, 5000 * MIB, 4872 * MIB + 1};
		ck_assert_int_eq(tr_overcommit_threads(&oc, 4, 1, 0, 128 * MIB, 136 * MIB), 0);
	}
	/* committed past the limit (it happens: the limit is enforced on new
	 * mappings only) */
	ck_assert_int_eq(fit(5000, 6000, 4, 1, 0), 0);
	/* 1024 MiB: 1024 - 128 - 256 = 640 spare, 4 threads of 136 more */
	ck_assert_int_eq(fit(5000, 3976, 16, 1, 0), 5);
	ck_assert_int_eq(fit(5000, 3976, 16, 3, 0), 7);
	ck_assert_int_eq(fit(5000, 3976, 3, 1, 0), 3);
	/* the caller's mapped: 768 spare, 5 more */
	ck_assert_int_eq(fit(5000, 3976, 16, 1, 1), 6);
	/* no more than started: nothing new to commit */
	ck_assert_int_eq(fit(5000, 4990, 4, 8, 1), 4);
	/* a terabyte: all asked, no overflow */
	ck_assert_int_eq(fit(1ULL << 20, 0, 1024, 1, 0), 1024);
}
END_TEST

static Suite *overcommit_suite(void)
{
	Suite *s = suite_create("overcommit");
	TCase *tc = tcase_create("overcommit");
	tcase_add_test(tc, test_threads_that_fit);
	suite_add_tcase(s, tc);
	return s;
}

int main(void)
{
	return check_run(overcommit_suite());
}
