/*
 * check_overcommit.c - tests for trainer/overcommit.c: vm.overcommit_memory,
 * CommitLimit and Committed_AS read from a fake proc directory (strict or
 * not, a file missing or saying something else), and the OpenBLAS threads
 * that fit in the room left, worked out by hand in MiB.  A test cannot set
 * the sysctl: it is the whole machine's, other processes' included.
 */
#include <check.h>
#include "check_main.h"
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "overcommit.h"

#define MIB (1ULL << 20)

static char dir[] = "/tmp/check_overcommit.XXXXXX";

static void setup(void)
{
	char vm[96];

	strcpy(dir, "/tmp/check_overcommit.XXXXXX");
	ck_assert_ptr_nonnull(mkdtemp(dir));
	snprintf(vm, sizeof(vm), "%s/sys", dir);
	ck_assert_int_eq(mkdir(vm, 0755), 0);
	snprintf(vm, sizeof(vm), "%s/sys/vm", dir);
	ck_assert_int_eq(mkdir(vm, 0755), 0);
}

static void teardown(void)
{
	char cmd[96];
	snprintf(cmd, sizeof(cmd), "rm -rf %s", dir);
	ck_assert_int_eq(system(cmd), 0);
}

/* @text into DIR/@name, or DIR/@name removed when NULL. */
static void put(const char *name, const char *text)
{
	char path[128];
	FILE *f;

	snprintf(path, sizeof(path), "%s/%s", dir, name);
	if (!text) {
		unlink(path);
		return;
	}
	f = fopen(path, "w");
	ck_assert_ptr_nonnull(f);
	fputs(text, f);
	ck_assert_int_eq(fclose(f), 0);
}

/* A meminfo as Linux writes it, the two lines among others. */
static const char meminfo[] = "MemTotal:       24684032 kB\n"
			      "MemFree:        16688928 kB\n"
			      "CommitLimit:    12342044 kB\n"
			      "Committed_AS:    2178796 kB\n"
			      "VmallocTotal:   34359738367 kB\n";

START_TEST(test_read)
{
	struct tr_overcommit oc;

	put("sys/vm/overcommit_memory", "2\n");
	put("meminfo", meminfo);
	ck_assert_int_eq(tr_overcommit_read(dir, &oc), 0);
	ck_assert_int_eq(oc.strict, 1);
	ck_assert_uint_eq(oc.limit, 12342044ULL * 1024);
	ck_assert_uint_eq(oc.committed, 2178796ULL * 1024);

	/* the heuristic (0) and always (1): nothing refused for commit */
	for (int mode = 0; mode < 2; mode++) {
		put("sys/vm/overcommit_memory", mode ? "1\n" : "0\n");
		ck_assert_int_eq(tr_overcommit_read(dir, &oc), 0);
		ck_assert_int_eq(oc.strict, 0);
	}

	/* nothing known: not strict */
	put("sys/vm/overcommit_memory", "strict\n");
	ck_assert_int_eq(tr_overcommit_read(dir, &oc), -1);
	ck_assert_int_eq(oc.strict, 0);
	put("sys/vm/overcommit_memory", "2\n");
	put("meminfo", "MemTotal:       24684032 kB\nCommitLimit:    12342044 kB\n");
	ck_assert_int_eq(tr_overcommit_read(dir, &oc), -1);
	ck_assert_int_eq(oc.strict, 0);
	put("meminfo", NULL);
	ck_assert_int_eq(tr_overcommit_read(dir, &oc), -1);
	put("sys/vm/overcommit_memory", NULL);
	ck_assert_int_eq(tr_overcommit_read(dir, &oc), -1);
	ck_assert_int_eq(oc.strict, 0);
}
END_TEST

/* In MiB: a 128 buffer, 136 a further thread (its buffer and an 8 MiB
 * stack); a quarter of the room is kept for the data. */
static int fit(unsigned long long limit, unsigned long long committed, int want, int started,
	       int caller_mapped)
{
	struct tr_overcommit oc = {1, limit * MIB, committed * MIB};
	return tr_overcommit_threads(&oc, want, started, caller_mapped, 128 * MIB, 136 * MIB);
}

START_TEST(test_threads_that_fit)
{
	struct tr_overcommit lax = {0, 100 * MIB, 0};

	/* not strict: as asked, whatever the numbers */
	ck_assert_int_eq(tr_overcommit_threads(&lax, 8, 1, 0, 128 * MIB, 136 * MIB), 8);
	/* 100 MiB left: not the calling thread's buffer; mapped already, it
	 * runs alone (75 MiB spare, no thread) */
	ck_assert_int_eq(fit(5000, 4900, 4, 1, 0), 0);
	ck_assert_int_eq(fit(5000, 4900, 4, 1, 1), 1);
	/* exactly its buffer, and one byte less */
	ck_assert_int_eq(fit(5000, 4872, 4, 1, 0), 1);
	{
		struct tr_overcommit oc = {1, 5000 * MIB, 4872 * MIB + 1};
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
	tcase_add_checked_fixture(tc, setup, teardown);
	tcase_add_test(tc, test_read);
	tcase_add_test(tc, test_threads_that_fit);
	suite_add_tcase(s, tc);
	return s;
}

int main(void)
{
	return check_run(overcommit_suite());
}
