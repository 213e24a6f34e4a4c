/* check_blas.c - tests for core/blas.c: which kernel we ask OpenBLAS for, and
 * how many threads it runs when nobody said. */
#include <check.h>
#include "check_main.h"
#include <cblas.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <unistd.h>

#include "blas.h"
#include "cpus.h"
#include "err.h"
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

/* A variable set to what is not a whole number of threads is ignored, as
 * unset, and the reason says so: the old code took "8x" as the user's
 * choice ("OPENBLAS_NUM_THREADS=8x") and left OpenBLAS at what atoi had
 * made of it at load; "99999999999" was whatever atoi's overflow gave. */
START_TEST(test_default_threads_ignore_what_is_not_a_number)
{
	static const char *const bad[] = {"8x", "-1",  "99999999999", "+2", " 2",
					  "2 ", "0x2", "0",	      "2.0"};
	cpu_set_t all;
	char why[700], want[200];
	const char *end;

	for (size_t i = 0; i < sizeof(thread_vars) / sizeof(thread_vars[0]); i++)
		unsetenv(thread_vars[i]);
	/* OpenBLAS took "1x" for 1 at load: the CPUs decide instead */
	openblas_set_num_threads(1);
	setenv("OPENBLAS_NUM_THREADS", "1x", 1);
	ck_assert_int_eq(sid_blas_default_threads(why, sizeof(why)), sid_cpus_usable(NULL));
	ck_assert_int_eq(openblas_get_num_threads(), sid_cpus_usable(NULL));
	end = "; OPENBLAS_NUM_THREADS=\"1x\" ignored: not a whole number of threads";
	ck_assert_str_eq(why + strlen(why) - strlen(end), end);
	ck_assert_ptr_nonnull(strstr(why, "affinity"));
	/* the next variable is then the one that counts */
	setenv("OPENBLAS_NUM_THREADS", "8x", 1);
	setenv("GOTO_NUM_THREADS", "1", 1);
	ck_assert_int_eq(sid_blas_default_threads(why, sizeof(why)), 1);
	ck_assert_int_eq(openblas_get_num_threads(), 1);
	ck_assert_str_eq(why, "GOTO_NUM_THREADS=1; OPENBLAS_NUM_THREADS=\"8x\" ignored: not a "
			      "whole number of threads");
	unsetenv("GOTO_NUM_THREADS");
	one_cpu_pin(&all);
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		setenv("OMP_NUM_THREADS", bad[i], 1);
		ck_assert_int_eq(sid_blas_default_threads(why, sizeof(why)), 1);
		snprintf(want, sizeof(want),
			 "; OPENBLAS_NUM_THREADS=\"8x\", OMP_NUM_THREADS=\"%s\" ignored: not a "
			 "whole number of threads",
			 bad[i]);
		ck_assert_str_eq(why + strlen(why) - strlen(want), want);
		ck_assert_ptr_nonnull(strstr(why, "affinity 1"));
	}
	/* "" is as unset, as OpenBLAS takes it: nothing to say */
	setenv("OPENBLAS_NUM_THREADS", "", 1);
	unsetenv("OMP_NUM_THREADS");
	ck_assert_int_eq(sid_blas_default_threads(why, sizeof(why)), 1);
	ck_assert_ptr_null(strstr(why, "ignored"));
	one_cpu_unpin(&all);
}
END_TEST

/* What this process maps now (VmSize), in bytes. */
static unsigned long long mapped(void)
{
	unsigned long long pages = 0;
	FILE *f = fopen("/proc/self/statm", "r");
	ck_assert_ptr_nonnull(f);
	ck_assert_int_eq(fscanf(f, "%llu", &pages), 1);
	fclose(f);
	return pages * (unsigned long long)sysconf(_SC_PAGESIZE);
}

/* Under ulimit -v OpenBLAS 0.3.21 retried a 128 MiB buffer it could not
 * map for ever (semid-train spun, deaf to SIGTERM).  sid_blas_ready maps
 * the calling thread's first or refuses naming the limit, and starts only
 * the threads whose buffers and stacks fit with a quarter of the limit to
 * spare; a product on all of them then completes (Check's timeout fails a
 * hang). */
START_TEST(test_ready_under_a_memory_limit)
{
	const unsigned long long mib = 1 << 20, per = 137 * mib; /* buffer, stack, guard */
	struct rlimit old, rl;
	struct sid_error err;
	char note[300];
	int started = openblas_get_num_threads(), n;
	float *a;

	if (getenv("SEMID_SANITIZE") && *getenv("SEMID_SANITIZE"))
		CHECK_SKIP("a sanitizer's shadow memory does not fit an address-space limit");
	ck_assert_int_eq(getrlimit(RLIMIT_AS, &old), 0);
	rl = old;
	rl.rlim_cur = mapped() + 64 * mib;
	ck_assert_int_eq(setrlimit(RLIMIT_AS, &rl), 0);
	sid_error_clear(&err);
	ck_assert_int_lt(sid_blas_ready(1, note, sizeof(note), &err), 0);
	ck_assert_int_eq(err.code, SID_ENOMEM);
	ck_assert_msg(strstr(err.msg, "the address-space limit (ulimit -v, LimitAS=) of ") ==
			  err.msg,
		      "%s", err.msg);
	ck_assert_msg(strstr(err.msg, "leaves no room for OpenBLAS's 128 MiB work buffer"), "%s",
		      err.msg);
	ck_assert_ptr_nonnull(strstr(err.msg, ": raise it"));
	/* room for the caller's buffer and one more thread, not for 8 */
	rl.rlim_cur = (mapped() + 128 * mib + per + 8 * mib) * 4 / 3;
	ck_assert_int_eq(setrlimit(RLIMIT_AS, &rl), 0);
	n = sid_blas_ready(8, note, sizeof(note), &err);
	ck_assert_int_eq(n, started + 1);
	ck_assert_int_eq(openblas_get_num_threads(), n);
	ck_assert_msg(strstr(note, "8 asked: the address-space limit (ulimit -v, LimitAS=) of ") ==
			  note,
		      "%s", note);
	a = calloc((size_t)3 << 20, sizeof(float));
	ck_assert_ptr_nonnull(a);
	cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, 1024, 1024, 1024, 1.0f, a, 1024,
		    a + (1 << 20), 1024, 0.0f, a + (2 << 20), 1024);
	free(a);
	/* no limit: the count asked, no note */
	ck_assert_int_eq(setrlimit(RLIMIT_AS, &old), 0);
	ck_assert_int_eq(sid_blas_ready(2, note, sizeof(note), &err), 2);
	ck_assert_str_eq(note, "");
}
END_TEST

static char dir[] = "/tmp/check_blas_commit.XXXXXX";

static void commit_setup(void)
{
	char vm[96];

	strcpy(dir, "/tmp/check_blas_commit.XXXXXX");
	ck_assert_ptr_nonnull(mkdtemp(dir));
	snprintf(vm, sizeof(vm), "%s/sys", dir);
	ck_assert_int_eq(mkdir(vm, 0755), 0);
	snprintf(vm, sizeof(vm), "%s/sys/vm", dir);
	ck_assert_int_eq(mkdir(vm, 0755), 0);
}

static void commit_teardown(void)
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

/* vm.overcommit_memory, CommitLimit and Committed_AS from a fake proc
 * directory: strict or not, a file missing or saying something else.  A test
 * cannot set the sysctl: it is the whole machine's. */
START_TEST(test_commit_read)
{
	struct sid_commit oc;

	put("sys/vm/overcommit_memory", "2\n");
	put("meminfo", meminfo);
	ck_assert_int_eq(sid_commit_read(dir, &oc), 0);
	ck_assert_int_eq(oc.strict, 1);
	ck_assert_uint_eq(oc.limit, 12342044ULL * 1024);
	ck_assert_uint_eq(oc.committed, 2178796ULL * 1024);

	/* the heuristic (0) and always (1): nothing refused for commit */
	for (int mode = 0; mode < 2; mode++) {
		put("sys/vm/overcommit_memory", mode ? "1\n" : "0\n");
		ck_assert_int_eq(sid_commit_read(dir, &oc), 0);
		ck_assert_int_eq(oc.strict, 0);
	}

	/* nothing known: not strict */
	put("sys/vm/overcommit_memory", "strict\n");
	ck_assert_int_eq(sid_commit_read(dir, &oc), -1);
	ck_assert_int_eq(oc.strict, 0);
	put("sys/vm/overcommit_memory", "2\n");
	put("meminfo", "MemTotal:       24684032 kB\nCommitLimit:    12342044 kB\n");
	ck_assert_int_eq(sid_commit_read(dir, &oc), -1);
	ck_assert_int_eq(oc.strict, 0);
	put("meminfo", NULL);
	ck_assert_int_eq(sid_commit_read(dir, &oc), -1);
	put("sys/vm/overcommit_memory", NULL);
	ck_assert_int_eq(sid_commit_read(dir, &oc), -1);
	ck_assert_int_eq(oc.strict, 0);

	/* NULL: the directory SEMID_TEST_PROC names (else /proc) */
	put("sys/vm/overcommit_memory", "2\n");
	put("meminfo", meminfo);
	setenv("SEMID_TEST_PROC", dir, 1);
	ck_assert_int_eq(sid_commit_read(NULL, &oc), 0);
	unsetenv("SEMID_TEST_PROC");
	ck_assert_int_eq(oc.strict, 1);
	ck_assert_uint_eq(oc.committed, 2178796ULL * 1024);
}
END_TEST

static Suite *blas_suite(void)
{
	Suite *s = suite_create("blas");
	TCase *tc = tcase_create("core");
	tcase_add_test(tc, test_better_core_only_replaces_prescott);
	tcase_add_test(tc, test_tune_respects_user_choice);
	tcase_add_test(tc, test_default_threads_follow_usable_cpus);
	tcase_add_test(tc, test_ready_under_a_memory_limit);
	tcase_add_test(tc, test_default_threads_leave_the_environment_alone);
	tcase_add_test(tc, test_default_threads_ignore_what_is_not_a_number);
	suite_add_tcase(s, tc);
	tc = tcase_create("commit");
	tcase_add_checked_fixture(tc, commit_setup, commit_teardown);
	tcase_add_test(tc, test_commit_read);
	suite_add_tcase(s, tc);
	return s;
}

int main(void)
{
	return check_run(blas_suite());
}
