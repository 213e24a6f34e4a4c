/*
 * check_cpus.c - tests for core/cpus.c: the CPUs to size thread pools by,
 * against fake /proc and /sys/fs/cgroup trees laid out in a temp dir
 * (sid__cpus_at reads every file under its root).  cgroup v2 quotas at the
 * leaf and at a tighter parent, "max", fractions rounding up, a quota above
 * the affinity; cgroup v1 (cpu,cpuacct beside cpuset) and its -1; a
 * container's mount root; several lines and spaces in /proc/self/cgroup and
 * escaped ones in mountinfo; missing, unreadable and malformed files (no
 * quota seen, never a crash); and the "why" text.
 */
#include <check.h>
#include <errno.h>
#include <ftw.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sched.h>
#include <signal.h>
#include <sys/ptrace.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include "check_main.h"
#include "cpus.h"

/*
 * sched_getaffinity as a kernel built for more CPUs than a cpu_set_t holds
 * (1024) answers it, while fake_cpus is set: EINVAL for a mask of fewer
 * bits than its possible CPUs (2048), else CPUs 0-3 and 1500.  Defined
 * here, it is the one cpus.c calls; otherwise it passes the call on.
 */
static int fake_cpus;

int sched_getaffinity(pid_t pid, size_t size, cpu_set_t *set)
{
	long r;

	if (fake_cpus) {
		if (size * 8 < 2048) {
			errno = EINVAL;
			return -1;
		}
		memset(set, 0, size);
		for (int i = 0; i < 4; i++)
			CPU_SET_S(i, size, set);
		CPU_SET_S(1500, size, set);
		return 0;
	}
	r = syscall(SYS_sched_getaffinity, pid, size, set);
	if (r < 0)
		return -1;
	if ((size_t)r < size) /* as glibc does */
		memset((char *)set + r, 0, size - (size_t)r);
	return 0;
}

static char root[256];

static void setup(void)
{
	snprintf(root, sizeof(root), "/tmp/check_cpus.XXXXXX");
	ck_assert_ptr_nonnull(mkdtemp(root));
}

static int rm_one(const char *p, const struct stat *st, int flag, struct FTW *ftw)
{
	return remove(p);
}

static void teardown(void)
{
	nftw(root, rm_one, 16, FTW_DEPTH | FTW_PHYS);
}

/* mkdir -p of @path's directory part (or of @path itself, @self). */
static void mkdirs(char *path, int self)
{
	for (char *s = path + 1; *s; s++)
		if (*s == '/') {
			*s = '\0';
			ck_assert(mkdir(path, 0755) == 0 || errno == EEXIST);
			*s = '/';
		}
	if (self)
		ck_assert(mkdir(path, 0755) == 0 || errno == EEXIST);
}

/* Write @text to @root/@rel, making its directories. */
static void put(const char *rel, const char *text)
{
	char p[1024];
	FILE *f;

	snprintf(p, sizeof(p), "%s/%s", root, rel);
	mkdirs(p, 0);
	f = fopen(p, "w");
	ck_assert_ptr_nonnull(f);
	fputs(text, f);
	ck_assert_int_eq(fclose(f), 0);
}

/* Remove the file or empty directory @root/@rel. */
static void rm(const char *rel)
{
	char p[1024];

	snprintf(p, sizeof(p), "%s/%s", root, rel);
	ck_assert_msg(remove(p) == 0, "remove %s", p);
}

/* A cgroup v1 quota at @dir (under @root): cpu.cfs_quota_us @quota and
 * cpu.cfs_period_us @period. */
static void v1_quota(const char *dir, const char *quota, const char *period)
{
	char q[512], p[512];

	snprintf(q, sizeof(q), "%s/cpu.cfs_quota_us", dir);
	snprintf(p, sizeof(p), "%s/cpu.cfs_period_us", dir);
	put(q, quota);
	put(p, period);
}

static void dir(const char *rel)
{
	char p[1024];

	snprintf(p, sizeof(p), "%s/%s", root, rel);
	mkdirs(p, 1);
}

#define V2_MOUNT                                                                                   \
	"30 22 0:27 / /sys/fs/cgroup rw,nosuid,nodev,noexec,relatime - cgroup2 cgroup2 rw\n"
#define CG "sys/fs/cgroup"

/* A cgroup v2 process at /kubepods/pod1/ctr, "max" at every level. */
static void v2_tree(void)
{
	put("proc/self/cgroup", "0::/kubepods/pod1/ctr\n");
	put("proc/self/mountinfo", "22 1 0:21 / /sys rw - sysfs sysfs rw\n" V2_MOUNT);
	put(CG "/cpu.max", "max 100000\n"); /* the real root has none; harmless */
	put(CG "/kubepods/cpu.max", "max 100000\n");
	put(CG "/kubepods/pod1/cpu.max", "max 100000\n");
	put(CG "/kubepods/pod1/ctr/cpu.max", "max 100000\n");
}

static int cpus(int affinity, struct sid_cpus *c)
{
	return sid__cpus_at(root, affinity, c);
}

static const char *why(const struct sid_cpus *c)
{
	static char buf[1024];
	return sid_cpus_why(c, buf, sizeof(buf));
}

START_TEST(test_v2_quota_at_leaf)
{
	struct sid_cpus c;

	v2_tree();
	put(CG "/kubepods/pod1/ctr/cpu.max", "200000 100000\n");
	ck_assert_int_eq(cpus(64, &c), 2);
	ck_assert_int_eq(c.n, 2);
	ck_assert_int_eq(c.affinity, 64);
	ck_assert_int_eq(c.quota_cpus, 2);
	ck_assert_int_eq(c.quota, 200000);
	ck_assert_int_eq(c.period, 100000);
	ck_assert_int_eq(c.cgroup, 2);
	ck_assert_str_eq(c.path, "/kubepods/pod1/ctr");
	ck_assert_str_eq(why(&c), "cpu quota 200000/100000 at /kubepods/pod1/ctr (cgroup v2; "
				  "affinity 64)");
}
END_TEST

START_TEST(test_v2_parent_tighter_than_leaf)
{
	struct sid_cpus c;

	v2_tree();
	put(CG "/kubepods/pod1/ctr/cpu.max", "400000 100000\n");
	put(CG "/kubepods/pod1/cpu.max", "100000 100000\n");
	put(CG "/kubepods/cpu.max", "800000 100000\n");
	ck_assert_int_eq(cpus(8, &c), 1);
	ck_assert_str_eq(c.path, "/kubepods/pod1");
	ck_assert_int_eq(c.quota, 100000);
	/* the same share with another period is no tighter: the first stays */
	put(CG "/kubepods/cpu.max", "50000 50000\n");
	ck_assert_int_eq(cpus(8, &c), 1);
	ck_assert_str_eq(c.path, "/kubepods/pod1");
	/* and the tightest can be the top level */
	put(CG "/kubepods/cpu.max", "30000 100000\n");
	ck_assert_int_eq(cpus(8, &c), 1);
	ck_assert_str_eq(c.path, "/kubepods");
	ck_assert_str_eq(why(&c), "cpu quota 30000/100000 at /kubepods (cgroup v2; affinity 8)");
}
END_TEST

START_TEST(test_v2_max_everywhere)
{
	struct sid_cpus c;

	v2_tree();
	ck_assert_int_eq(cpus(8, &c), 8);
	ck_assert_int_eq(c.quota_cpus, 0);
	ck_assert_int_eq(c.cgroup, 0);
	ck_assert_str_eq(c.path, "");
	ck_assert_str_eq(why(&c), "affinity 8 (no cpu quota)");
}
END_TEST

START_TEST(test_fractions_round_up)
{
	static const struct {
		const char *max;
		int want;
	} cases[] = {
	    {"150000 100000\n", 2}, {"50000 100000\n", 1},  {"1000 100000\n", 1},
	    {"100001 100000\n", 2}, {"300000 100000\n", 3}, {"250000 1000000\n", 1},
	    {"1500 1000", 2}, /* no newline */
	};

	v2_tree();
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		struct sid_cpus c;
		put(CG "/kubepods/pod1/ctr/cpu.max", cases[i].max);
		ck_assert_msg(cpus(16, &c) == cases[i].want, "cpu.max \"%s\": %d, want %d",
			      cases[i].max, c.n, cases[i].want);
		ck_assert_int_eq(c.quota_cpus, cases[i].want);
	}
}
END_TEST

START_TEST(test_quota_above_affinity)
{
	struct sid_cpus c;

	v2_tree();
	put(CG "/kubepods/pod1/cpu.max", "1600000 100000\n");
	ck_assert_int_eq(cpus(4, &c), 4);
	ck_assert_int_eq(c.quota_cpus, 16);
	ck_assert_str_eq(why(&c), "affinity 4 (cpu quota 1600000/100000 at /kubepods/pod1 "
				  "allows 16)");
	/* equal: the affinity, said so */
	put(CG "/kubepods/pod1/cpu.max", "400000 100000\n");
	ck_assert_int_eq(cpus(4, &c), 4);
	ck_assert_str_eq(why(&c), "affinity 4 (cpu quota 400000/100000 at /kubepods/pod1 "
				  "allows 4)");
}
END_TEST

/* Docker on cgroup v1 without a cgroup namespace: the cpu mount's root is
 * the container's cgroup; cpu shares its hierarchy with cpuacct.  cpuset's
 * hierarchy (never read for a quota, though its name starts with "cpu") is
 * elsewhere, at another path, and has quota files where cpu's would be. */
static void v1_tree(void)
{
	put("proc/self/cgroup", "12:pids:/docker/abc\n"
				"4:cpuset:/cs\n"
				"3:cpu,cpuacct:/docker/abc\n"
				"1:name=systemd:/docker/abc\n");
	put("proc/self/mountinfo",
	    "30 22 0:27 / /sys/fs/cgroup ro - tmpfs tmpfs ro,mode=755\n"
	    "33 30 0:30 / /sys/fs/cgroup/cpuset ro - cgroup cgroup rw,cpuset\n"
	    "31 30 0:28 /docker/abc /sys/fs/cgroup/cpu,cpuacct ro shared:9 - cgroup cgroup "
	    "rw,cpu,cpuacct\n");
	v1_quota(CG "/cpu,cpuacct", "-1\n", "100000\n");
	v1_quota(CG "/cpuset/docker/abc", "100000\n", "100000\n");
	v1_quota(CG "/cpuset/cs", "100000\n", "100000\n");
}

START_TEST(test_v1_quota)
{
	struct sid_cpus c;

	v1_tree();
	put(CG "/cpu,cpuacct/cpu.cfs_quota_us", "250000\n");
	ck_assert_int_eq(cpus(32, &c), 3);
	ck_assert_int_eq(c.cgroup, 1);
	ck_assert_str_eq(c.path, "/docker/abc");
	ck_assert_str_eq(why(&c),
			 "cpu quota 250000/100000 at /docker/abc (cgroup v1; affinity 32)");
	put(CG "/cpu,cpuacct/cpu.cfs_period_us", "50000\n");
	ck_assert_int_eq(cpus(32, &c), 5);
}
END_TEST

START_TEST(test_v1_no_quota)
{
	struct sid_cpus c;

	v1_tree();
	ck_assert_int_eq(cpus(32, &c), 32);
	ck_assert_int_eq(c.quota_cpus, 0);
	put(CG "/cpu,cpuacct/cpu.cfs_quota_us", "0\n");
	ck_assert_int_eq(cpus(32, &c), 32);
}
END_TEST

/* systemd on cgroup v1, the mount at the hierarchy's root: a slice's quota
 * above the service's counts too. */
START_TEST(test_v1_parent)
{
	struct sid_cpus c;

	put("proc/self/cgroup", "2:cpu,cpuacct:/semid.slice/semid.service\n");
	put("proc/self/mountinfo",
	    "31 30 0:28 / /sys/fs/cgroup/cpu,cpuacct rw - cgroup cgroup rw,cpuacct,cpu\n");
	v1_quota(CG "/cpu,cpuacct/semid.slice/semid.service", "-1\n", "100000\n");
	v1_quota(CG "/cpu,cpuacct/semid.slice", "150000\n", "100000\n");
	ck_assert_int_eq(cpus(8, &c), 2);
	ck_assert_str_eq(c.path, "/semid.slice");
}
END_TEST

/* A hybrid host: the unified hierarchy mounted too, without the cpu
 * controller (no cpu.max); the v1 quota decides, and the tighter of both
 * when both have one. */
START_TEST(test_hybrid)
{
	struct sid_cpus c;

	v1_tree();
	put("proc/self/cgroup", "3:cpu,cpuacct:/docker/abc\n0::/docker/abc\n");
	put("proc/self/mountinfo",
	    "31 30 0:28 /docker/abc /sys/fs/cgroup/cpu,cpuacct ro - cgroup cgroup rw,cpu,cpuacct\n"
	    "40 30 0:37 /docker/abc /sys/fs/cgroup/unified rw - cgroup2 cgroup2 rw\n");
	dir(CG "/unified");
	put(CG "/cpu,cpuacct/cpu.cfs_quota_us", "400000\n");
	ck_assert_int_eq(cpus(8, &c), 4);
	ck_assert_int_eq(c.cgroup, 1);
	put(CG "/unified/cpu.max", "200000 100000\n");
	ck_assert_int_eq(cpus(8, &c), 2);
	ck_assert_int_eq(c.cgroup, 2);
	ck_assert_str_eq(c.path, "/docker/abc");
}
END_TEST

/* The memory this process may use (sid__memory_at): a cgroup v2 limit at a
 * parent of the leaf (systemd's MemoryMax on a slice: it read only the
 * root's memory.max, which a host has not), v1's memory.limit_in_bytes
 * (this kind of host: it read no v1 file at all) and its 'none', the
 * physical memory when that is lower or nothing is set. */
START_TEST(test_memory_limits)
{
	const double G = 1073741824.0, phys = 24 * G;

	v2_tree();
	ck_assert(sid__memory_at(root, phys) == phys); /* no memory.max anywhere */
	put(CG "/kubepods/pod1/ctr/memory.max", "max\n");
	put(CG "/kubepods/memory.max", "8589934592\n");
	ck_assert(sid__memory_at(root, phys) == 8 * G);
	put(CG "/kubepods/pod1/ctr/memory.max", "2147483648\n");
	ck_assert(sid__memory_at(root, phys) == 2 * G);
	ck_assert(sid__memory_at(root, 1 * G) == 1 * G); /* less memory than the limit */
	ck_assert(sid__memory_at(root, 0) == 2 * G);	 /* physical unknown */

	/* cgroup v1, the memory controller's own hierarchy, a service under a
	 * slice; v1's "no limit" is a page-rounded 2^63 - 1 */
	put("proc/self/cgroup",
	    "4:memory:/semid.slice/train.service\n2:cpu,cpuacct:/semid.slice/train.service\n");
	put("proc/self/mountinfo",
	    "31 30 0:28 / /sys/fs/cgroup/memory rw - cgroup cgroup rw,memory\n"
	    "32 30 0:29 / /sys/fs/cgroup/cpu,cpuacct rw - cgroup cgroup rw,cpuacct,cpu\n");
	put(CG "/memory/semid.slice/train.service/memory.limit_in_bytes", "9223372036854771712\n");
	ck_assert(sid__memory_at(root, phys) == phys);
	put(CG "/memory/semid.slice/memory.limit_in_bytes", "4294967296\n");
	ck_assert(sid__memory_at(root, phys) == 4 * G);
	put(CG "/memory/semid.slice/memory.limit_in_bytes", "garbage\n");
	ck_assert(sid__memory_at(root, phys) == phys);
}
END_TEST

/* A limit on threads (sid__threads_limited_at) in force and within reach
 * of the room wanted (W threads): a finite pids.max at the leaf or an
 * ancestor, v2's and v1's pids controller, "max" and garbage as none, with
 * fewer than W pids to spare beside its pids.current (or no pids.current
 * to tell); a finite RLIMIT_NPROC when it binds, ignored when it does not
 * (root).  The trainer re-executed itself at every start under any finite
 * limit, 96365 as much as 1. */
#define W 10

/* One step of test_thread_limits: @dir's pids.max and pids.current set
 * (NULL: none), and what sid__threads_limited_at says then. */
struct pids_step {
	const char *dir, *max, *current;
	int limited;
};

static void pids_steps(const struct pids_step *st, size_t n)
{
	char path[1024];

	for (size_t i = 0; i < n; i++) {
		snprintf(path, sizeof(path), "%s/pids.max", st[i].dir);
		if (st[i].max)
			put(path, st[i].max);
		snprintf(path, sizeof(path), "%s/%s/pids.current", root, st[i].dir);
		if (st[i].current)
			put(path + strlen(root) + 1, st[i].current);
		else
			remove(path); /* may not be there */
		ck_assert_msg(sid__threads_limited_at(root, 0, W) == st[i].limited, "step %zu (%s)",
			      i, st[i].dir);
	}
}

START_TEST(test_thread_limits)
{
	static const struct pids_step v2[] = {
	    {CG "/kubepods/pod1/ctr", "max\n", NULL, 0},  {CG "/kubepods", "max\n", NULL, 0},
	    {CG "/kubepods", "4096\n", NULL, 1},     /* no pids.current */
	    {CG "/kubepods", "4096\n", "4086\n", 0}, /* W to spare */
	    {CG "/kubepods", "4096\n", "4087\n", 1},	  {CG "/kubepods", "4096\n", "12\n", 0},
	    {CG "/kubepods", "4096\n", "12x\n", 1},	  {CG "/kubepods", "40x\n", "12\n", 0},
	    {CG "/kubepods/pod1/ctr", "64\n", "60\n", 1}, /* the leaf, nearer */
	    {CG "/kubepods/pod1/ctr", "64\n", "3\n", 0},
	};
	/* cgroup v1: the pids controller's own hierarchy, a container's root */
	static const struct pids_step v1[] = {
	    {CG "/pids", "max\n", NULL, 0},
	    {CG "/pids", "100\n", NULL, 1},
	    {CG "/pids", "100\n", "90\n", 0},
	    {CG "/pids", "100\n", "91\n", 1},
	};

	v2_tree();
	ck_assert_int_eq(sid__threads_limited_at(root, 0, W), 0); /* no pids.max anywhere */
	pids_steps(v2, sizeof(v2) / sizeof(v2[0]));
	put("proc/self/cgroup", "12:pids:/docker/abc\n3:cpu,cpuacct:/docker/abc\n");
	put("proc/self/mountinfo",
	    "35 30 0:31 /docker/abc /sys/fs/cgroup/pids rw - cgroup cgroup rw,pids\n");
	pids_steps(v1, sizeof(v1) / sizeof(v1[0]));
}
END_TEST

/* /proc/PID/status of a process of real user @uid with @threads threads. */
static void task(int pid, long uid, long threads)
{
	char path[64], text[256];

	snprintf(path, sizeof(path), "proc/%d/status", pid);
	snprintf(text, sizeof(text),
		 "Name:\tx\nUmask:\t0022\nState:\tS (sleeping)\nUid:\t%ld\t%ld\t%ld\t%ld\n"
		 "Gid:\t0\t0\t0\t0\nThreads:\t%ld\nVmRSS:\t1 kB\n",
		 uid, uid + 7, uid + 7, uid + 7, threads);
	put(path, text);
}

/* RLIMIT_NPROC (the test is forked, its limits its own): a limit the
 * machine's task count (proc/loadavg) stays W below is never in reach, and
 * the processes are not read; nearer, the threads of the user's processes
 * (their real uid) are counted against it, and a count that cannot be
 * made counts as tight. */
START_TEST(test_nproc_within_reach)
{
	const long me = (long)getuid();
	char load[128];
	struct rlimit r;
	long lim;

	v2_tree(); /* no pids.max */
	ck_assert_int_eq(getrlimit(RLIMIT_NPROC, &r), 0);
	if (r.rlim_max == RLIM_INFINITY) {
		r.rlim_cur = RLIM_INFINITY;
		ck_assert_int_eq(setrlimit(RLIMIT_NPROC, &r), 0);
		ck_assert_int_eq(sid__threads_limited_at(root, 1, W), 0);
	}
	r.rlim_cur = r.rlim_max == RLIM_INFINITY || r.rlim_max > 1000 ? 1000 : r.rlim_max;
	ck_assert_int_eq(setrlimit(RLIMIT_NPROC, &r), 0);
	lim = (long)r.rlim_cur;
	ck_assert_int_gt(lim, 2 * W);
	/* processes that would fill the limit, were they counted */
	task(1, me, lim);
	snprintf(load, sizeof(load), "0.00 0.01 0.05 1/%ld 18256\n", lim - W);
	put("proc/loadavg", load);
	ck_assert_int_eq(sid__threads_limited_at(root, 1, W), 0);
	ck_assert_int_eq(sid__threads_limited_at(root, 0, W), 0);
	/* nearer: counted */
	snprintf(load, sizeof(load), "0.00 0.01 0.05 1/%ld 18256\n", lim - W + 1);
	put("proc/loadavg", load);
	ck_assert_int_eq(sid__threads_limited_at(root, 1, W), 1);
	ck_assert_int_eq(sid__threads_limited_at(root, 0, W), 0);
	task(1, me, lim - 2 * W);
	task(22, me, W);
	task(333, me + 1, lim); /* another user's: not counted */
	ck_assert_int_eq(sid__threads_limited_at(root, 1, W), 0);
	task(22, me, W + 1);
	ck_assert_int_eq(sid__threads_limited_at(root, 1, W), 1);
	rm("proc/loadavg"); /* no machine count: the user's */
	ck_assert_int_eq(sid__threads_limited_at(root, 1, W), 1);
	task(22, me, W);
	ck_assert_int_eq(sid__threads_limited_at(root, 1, W), 0);
	/* none of the user's found: cannot tell */
	task(1, me + 1, 1);
	task(22, me + 1, 1);
	ck_assert_int_eq(sid__threads_limited_at(root, 1, W), 1);
}
END_TEST

/* sid_threads_try starts them all at once and ends them; none asked, none. */
START_TEST(test_threads_try)
{
	int e = -1;

	ck_assert_int_eq(sid_threads_try(5, 0, &e), 5);
	ck_assert_int_eq(e, 0);
	ck_assert_int_eq(sid_threads_try(3, (size_t)1 << 20, NULL), 3);
	e = -1;
	ck_assert_int_eq(sid_threads_try(0, 0, &e), 0);
	ck_assert_int_eq(e, 0);
}
END_TEST

/* This process's thread count, from /proc/self/status: the kernel's own,
 * which counts a thread until it is released. */
static int status_threads(void)
{
	FILE *f = fopen("/proc/self/status", "r");
	char line[256];
	int n = -1;

	while (f && fgets(line, sizeof(line), f))
		if (!strncmp(line, "Threads:", 8))
			n = atoi(line + 8);
	if (f)
		fclose(f);
	return n;
}

/* The traced child of test_threads_try_waits_for_release: 0 when
 * sid_threads_try returned with its threads released, 4 when they did not
 * all start, 5 when some still counted (3, refused a tracer, it never
 * stops for one, which the test says first). */
static void released_child(void)
{
	int before, got;

	if (ptrace(PTRACE_TRACEME, 0, NULL, NULL))
		_exit(3);
	raise(SIGSTOP);
	/* a sanitizer's own thread, should one start at the first
	 * pthread_create, is counted in before */
	sid_threads_try(1, 0, NULL);
	before = status_threads();
	got = sid_threads_try(3, 0, NULL);
	_exit(got != 3 ? 4 : status_threads() != before ? 5 : 0);
}

/*
 * pthread_join returns before the kernel releases the thread, which counts
 * against RLIMIT_NPROC till then: a thread started right after
 * sid_threads_try could fail EAGAIN under a limit with room for it (the
 * server's drain watch did, in CI).  Here a tracer holds each exited
 * thread of the child unreleased for 30 ms before it reaps it, as a busy
 * machine can: sid_threads_try still returns with none of its threads
 * counted.  (_exit: no leak check in a traced child.)
 */
START_TEST(test_threads_try_waits_for_release)
{
	pid_t child = fork(), pid;
	int st;

	ck_assert_int_ge(child, 0);
	if (child == 0)
		released_child();
	ck_assert_int_eq(waitpid(child, &st, 0), child);
	ck_assert_msg(WIFSTOPPED(st), "the child did not stop for its tracer (status %#x)", st);
	ck_assert_int_eq(ptrace(PTRACE_SETOPTIONS, child, NULL,
				(void *)(long)(PTRACE_O_TRACECLONE | PTRACE_O_EXITKILL)),
			 0);
	ck_assert_int_eq(ptrace(PTRACE_CONT, child, NULL, NULL), 0);
	for (;;) {
		siginfo_t si;

		memset(&si, 0, sizeof(si));
		ck_assert_int_eq(waitid(P_ALL, 0, &si, WEXITED | WSTOPPED | __WALL | WNOWAIT), 0);
		if (si.si_code == CLD_EXITED || si.si_code == CLD_KILLED ||
		    si.si_code == CLD_DUMPED) {
			if (si.si_pid != child)
				usleep(30 * 1000); /* a thread, held unreleased */
			ck_assert_int_eq(waitpid(si.si_pid, &st, __WALL), si.si_pid);
			if (si.si_pid == child)
				break;
			continue;
		}
		/* a stop: a clone's event, a new thread's first SIGSTOP */
		pid = waitpid(si.si_pid, &st, __WALL);
		ck_assert_int_eq(pid, si.si_pid);
		ck_assert_int_eq(ptrace(PTRACE_CONT, pid, NULL,
					(void *)(long)(WIFSTOPPED(st) && WSTOPSIG(st) != SIGSTOP &&
							       WSTOPSIG(st) != SIGTRAP
							   ? WSTOPSIG(st)
							   : 0)),
				 0);
	}
	ck_assert_msg(WIFEXITED(st) && WEXITSTATUS(st) == 0,
		      "sid_threads_try returned with its threads unreleased (child status %#x: "
		      "4 not all started, 5 still counted)",
		      st);
}
END_TEST

/* Several lines, the v2 one not first, a path with spaces and colons; the
 * mount point and root with mountinfo's \040 escapes. */
START_TEST(test_cgroup_lines_and_spaces)
{
	struct sid_cpus c;

	put("proc/self/cgroup", "9:memory:/elsewhere\n"
				"1:name=systemd:/x\n"
				"0::/my pods/a b:c/\n");
	put("proc/self/mountinfo",
	    "30 22 0:27 / /sys/fs/my\\040cgroup rw shared:4 master:1 - cgroup2 none rw\n");
	put("sys/fs/my cgroup/my pods/a b:c/cpu.max", "max 100000\n");
	put("sys/fs/my cgroup/my pods/cpu.max", "300000 100000\n");
	ck_assert_int_eq(cpus(16, &c), 3);
	ck_assert_str_eq(c.path, "/my pods");
	put("sys/fs/my cgroup/my pods/a b:c/cpu.max", "100000 100000\n");
	ck_assert_int_eq(cpus(16, &c), 1);
	ck_assert_str_eq(c.path, "/my pods/a b:c");
}
END_TEST

/* A mount whose root is another part of the tree (or only shares a
 * prefix of the path's name) shows nothing of the process's cgroup. */
START_TEST(test_mount_of_another_cgroup)
{
	struct sid_cpus c;

	put("proc/self/cgroup", "0::/docker/abcdef\n");
	put("proc/self/mountinfo",
	    "30 22 0:27 /docker/abc /sys/fs/cgroup rw - cgroup2 cgroup2 rw\n");
	put(CG "/cpu.max", "100000 100000\n");
	put(CG "/def/cpu.max", "100000 100000\n");
	ck_assert_int_eq(cpus(4, &c), 4);
	/* the container's own root: read at the mount point */
	put("proc/self/mountinfo",
	    "30 22 0:27 /docker/abcdef /sys/fs/cgroup rw - cgroup2 cgroup2 rw\n");
	ck_assert_int_eq(cpus(4, &c), 1);
	ck_assert_str_eq(c.path, "/docker/abcdef");
}
END_TEST

/* A container in its own cgroup namespace (Docker's default on cgroup v2,
 * Kubernetes' too): /proc/self/cgroup says "0::/", the mount's root is "/",
 * and the quota is the root's, at the mount point.  Its path reads "/". */
START_TEST(test_quota_at_namespace_root)
{
	struct sid_cpus c;

	put("proc/self/cgroup", "0::/\n");
	put("proc/self/mountinfo", V2_MOUNT);
	put(CG "/cpu.max", "200000 100000\n");
	ck_assert_int_eq(cpus(8, &c), 2);
	ck_assert_str_eq(c.path, "/");
	ck_assert_str_eq(why(&c), "cpu quota 200000/100000 at / (cgroup v2; affinity 8)");
	put(CG "/cpu.max", "1600000 100000\n");
	ck_assert_int_eq(cpus(8, &c), 8);
	ck_assert_str_eq(why(&c), "affinity 8 (cpu quota 1600000/100000 at / allows 16)");
	/* v1, Docker without a cgroup namespace: the mount's root is the
	 * container's cgroup, the quota read at the mount point */
	put("proc/self/cgroup", "4:cpu,cpuacct:/docker/abc\n");
	put("proc/self/mountinfo", "40 30 0:35 /docker/abc /sys/fs/cgroup/cpu,cpuacct ro - cgroup "
				   "cgroup rw,cpu,cpuacct\n");
	v1_quota(CG "/cpu,cpuacct", "50000\n", "100000\n");
	ck_assert_int_eq(cpus(8, &c), 1);
	ck_assert_str_eq(c.path, "/docker/abc");
}
END_TEST

/* A mount whose source field is empty ("- cgroup2  rw": mount(2) with ""
 * as the source, as some container runtimes do) is still read, its fields
 * counted from the dash: splitting on runs of spaces lost the empty field,
 * so the v2 mount was skipped and a v1 mount's options were read from the
 * wrong field. */
START_TEST(test_empty_mount_source)
{
	struct sid_cpus c;

	put("proc/self/cgroup", "0::/ctr\n");
	put("proc/self/mountinfo", "30 22 0:27 / /cg2 rw,nosuid - cgroup2  rw,nsdelegate\n");
	put("cg2/ctr/cpu.max", "100000 100000\n");
	ck_assert_int_eq(cpus(8, &c), 1);
	ck_assert_str_eq(why(&c), "cpu quota 100000/100000 at /ctr (cgroup v2; affinity 8)");
	put("proc/self/cgroup", "4:cpu,cpuacct:/ctr\n");
	put("proc/self/mountinfo", "40 30 0:35 / /cg1 rw - cgroup  rw,cpu,cpuacct\n");
	v1_quota("cg1/ctr", "200000\n", "100000\n");
	ck_assert_int_eq(cpus(8, &c), 2);
	ck_assert_str_eq(c.path, "/ctr");
}
END_TEST

/* No mountinfo: cgroup v2 where it is usually mounted, /sys/fs/cgroup. */
START_TEST(test_no_mountinfo)
{
	struct sid_cpus c;

	v2_tree();
	put(CG "/kubepods/pod1/ctr/cpu.max", "200000 100000\n");
	rm("proc/self/mountinfo");
	ck_assert_int_eq(cpus(8, &c), 2);
}
END_TEST

START_TEST(test_missing_files)
{
	struct sid_cpus c;

	ck_assert_int_eq(cpus(6, &c), 6); /* nothing at all */
	ck_assert_str_eq(why(&c), "affinity 6 (no cpu quota)");
	put("proc/self/mountinfo", V2_MOUNT);
	ck_assert_int_eq(cpus(6, &c), 6); /* no /proc/self/cgroup */
	put("proc/self/cgroup", "0::/a/b\n");
	ck_assert_int_eq(cpus(6, &c), 6); /* no cgroup directories */
	dir(CG "/a/b");
	ck_assert_int_eq(cpus(6, &c), 6); /* no cpu.max in them */
	/* v1: a quota without its period */
	put("proc/self/cgroup", "3:cpu:/\n");
	put("proc/self/mountinfo", "31 30 0:28 / /sys/fs/cgroup/cpu rw - cgroup cgroup rw,cpu\n");
	put(CG "/cpu/cpu.cfs_quota_us", "100000\n");
	ck_assert_int_eq(cpus(6, &c), 6);
	put(CG "/cpu/cpu.cfs_period_us", "100000\n");
	ck_assert_int_eq(cpus(6, &c), 1); /* (the layout is right) */
}
END_TEST

/* Unreadable: a directory where the file should be (root reads any mode). */
START_TEST(test_unreadable_files)
{
	struct sid_cpus c;

	v2_tree();
	put(CG "/kubepods/pod1/ctr/cpu.max", "100000 100000\n");
	ck_assert_int_eq(cpus(3, &c), 1); /* (the layout is right) */
	rm(CG "/kubepods/pod1/ctr/cpu.max");
	dir(CG "/kubepods/pod1/ctr/cpu.max");
	ck_assert_int_eq(cpus(3, &c), 3);
	put(CG "/kubepods/cpu.max", "100000 100000\n");
	ck_assert_int_eq(cpus(3, &c), 1); /* the levels above are still read */
	rm("proc/self/cgroup");
	dir("proc/self/cgroup");
	ck_assert_int_eq(cpus(3, &c), 3);
	rm("proc/self/cgroup");
	put("proc/self/cgroup", "0::/kubepods/pod1/ctr\n");
	rm("proc/self/mountinfo");
	dir("proc/self/mountinfo"); /* opens, but no line: no mount seen */
	ck_assert_int_eq(cpus(3, &c), 3);
}
END_TEST

START_TEST(test_garbage)
{
	static const char *maxes[] = {
	    "",
	    "\n",
	    "banana\n",
	    "max\n",
	    "200000\n",
	    "200000 \n",
	    " 200000 100000\n",
	    "200000  100000\n",
	    "200000 100000 7\n",
	    "200000 0\n",
	    "0 100000\n",
	    "-200000 100000\n",
	    "200000 -100000\n",
	    "2e5 100000\n",
	    "99999999999999999999999 100000\n",
	    "200000 100000x\n",
	    "200000\t100000\n",
	    "max 100000 junk\n",
	};
	static const char *cgroups[] = {
	    "",
	    "garbage\n",
	    "0\n",
	    "0:\n",
	    "::\n",
	    "0::\n",
	    "0::relative/path\n",
	    "x::/kubepods\n",
	    "\n\n\n",
	};
	static const char *mounts[] = {
	    "",
	    "garbage\n",
	    "30 22 0:27 / /sys/fs/cgroup rw - cgroup2\n",
	    "30 22 0:27 / /sys/fs/cgroup rw cgroup2 cgroup2 rw\n",
	    "- - - - - - - - -\n",
	    "30 22 0:27 /elsewhere /sys/fs/cgroup rw - cgroup2 cgroup2 rw\n",
	};
	struct sid_cpus c;

	v2_tree();
	for (size_t i = 0; i < sizeof(maxes) / sizeof(maxes[0]); i++) {
		put(CG "/kubepods/pod1/ctr/cpu.max", maxes[i]);
		ck_assert_msg(cpus(5, &c) == 5 && c.quota_cpus == 0, "cpu.max \"%s\": %d", maxes[i],
			      c.n);
	}
	put(CG "/kubepods/pod1/ctr/cpu.max", "100000 100000\n");
	ck_assert_int_eq(cpus(5, &c), 1);
	for (size_t i = 0; i < sizeof(cgroups) / sizeof(cgroups[0]); i++) {
		put("proc/self/cgroup", cgroups[i]);
		/* "0::/" and the like fall back to the root's "max": 5 */
		ck_assert_msg(cpus(5, &c) == 5, "/proc/self/cgroup \"%s\": %d", cgroups[i], c.n);
	}
	put("proc/self/cgroup", "0::/kubepods/pod1/ctr\n");
	for (size_t i = 0; i < sizeof(mounts) / sizeof(mounts[0]); i++) {
		put("proc/self/mountinfo", mounts[i]);
		ck_assert_msg(cpus(5, &c) == 5, "mountinfo \"%s\": %d", mounts[i], c.n);
	}
	/* a very long line is cut off, not taken whole */
	{
		size_t n = 100000;
		char *big = malloc(n + 2);
		ck_assert_ptr_nonnull(big);
		memset(big, '/', n);
		memcpy(big, "0::", 3);
		big[n] = '\n';
		big[n + 1] = '\0';
		put("proc/self/mountinfo", V2_MOUNT);
		put("proc/self/cgroup", big);
		ck_assert_int_eq(cpus(5, &c), 5);
		put("proc/self/cgroup", "0::/kubepods/pod1/ctr\n");
		put("proc/self/mountinfo", big);
		ck_assert_int_eq(cpus(5, &c), 5);
		free(big);
	}
}
END_TEST

START_TEST(test_why_is_cut_and_terminated)
{
	struct sid_cpus c;
	char small[12];

	v2_tree();
	put(CG "/kubepods/pod1/ctr/cpu.max", "200000 100000\n");
	cpus(8, &c);
	memset(small, 'x', sizeof(small));
	ck_assert_ptr_eq(sid_cpus_why(&c, small, sizeof(small)), small);
	ck_assert_str_eq(small, "cpu quota 2");
	ck_assert_ptr_eq(sid_cpus_why(&c, small, 0), small); /* writes nothing */
}
END_TEST

/*
 * A line longer than the reader takes is skipped, not the end of the file:
 * in a container the first line of mountinfo is its root's overlay mount,
 * whose lowerdir= names every layer of the image (over 4 KiB with some
 * fifty), and the cgroup mount comes after it.  Lines of exactly the
 * limit, newline included, and one byte over, are skipped without taking
 * the next line with them.
 */
START_TEST(test_long_lines_before)
{
	static const size_t lens[] = {5000, 4096, 4097, 4095, 100000};
	struct sid_cpus c;

	v2_tree();
	put(CG "/kubepods/pod1/cpu.max", "200000 100000\n");
	for (size_t i = 0; i < sizeof(lens) / sizeof(lens[0]); i++) {
		size_t n = lens[i], k;
		/* "NNN 1 0:99 / / rw - overlay overlay rw,lowerdir=/l/1:/l/2:...\n",
		 * newline included n bytes */
		char *text = malloc(n + 64 + sizeof(V2_MOUNT)), *big = malloc(n + 1);
		ck_assert_ptr_nonnull(text);
		ck_assert_ptr_nonnull(big);
		k = (size_t)snprintf(big, n + 1,
				     "2000 1 0:99 / / rw - overlay overlay rw,lowerdir=");
		for (; k < n - 1; k++)
			big[k] = k % 7 ? 'a' : ':';
		big[n - 1] = '\n';
		big[n] = '\0';
		ck_assert_uint_eq(strlen(big), n);
		snprintf(text, n + 64 + sizeof(V2_MOUNT), "%s%s", big, V2_MOUNT);
		put("proc/self/mountinfo", text);
		ck_assert_msg(cpus(16, &c) == 2, "mountinfo, a %zu-byte line first: %d", n, c.n);
		/* and in /proc/self/cgroup, a v1 hierarchy's long path first */
		snprintf(text, n + 64, "%s", big);
		memcpy(text, "12:name=x:/", 11);
		strcat(text, "0::/kubepods/pod1/ctr\n");
		put("proc/self/cgroup", text);
		put("proc/self/mountinfo", V2_MOUNT);
		ck_assert_msg(cpus(16, &c) == 2, "/proc/self/cgroup, a %zu-byte line first: %d", n,
			      c.n);
		put("proc/self/cgroup", "0::/kubepods/pod1/ctr\n");
		free(text);
		free(big);
	}
}
END_TEST

/* A kernel for more than 1024 CPUs refuses a cpu_set_t's mask (EINVAL):
 * the mask is asked for again, larger, rather than taking every online
 * CPU (a taskset or cpuset on a big host was lost). */
START_TEST(test_affinity_beyond_cpu_setsize)
{
	struct sid_cpus c;

	fake_cpus = 1;
	ck_assert_int_eq(cpus(0, &c), 5);
	ck_assert_int_eq(c.affinity, 5);
	put("proc/self/cgroup", "0::/\n");
	put("proc/self/mountinfo", V2_MOUNT);
	put(CG "/cpu.max", "200000 100000\n");
	ck_assert_int_eq(cpus(0, &c), 2);
	ck_assert_str_eq(why(&c), "cpu quota 200000/100000 at / (cgroup v2; affinity 5)");
	fake_cpus = 0;
}
END_TEST

/* This process: at least 1, at most its affinity; NULL allowed. */
START_TEST(test_real)
{
	struct sid_cpus c;
	char buf[600];

	ck_assert_int_ge(sid_cpus_usable(&c), 1);
	ck_assert_int_le(c.n, c.affinity);
	ck_assert_int_eq(sid_cpus_usable(NULL), c.n);
	ck_assert_int_eq(sid__cpus_at(root, 0, NULL), c.affinity); /* the real mask */
	ck_assert_ptr_nonnull(strstr(sid_cpus_why(&c, buf, sizeof(buf)), "affinity"));
}
END_TEST

int main(void)
{
	Suite *s = suite_create("cpus");
	TCase *tc = tcase_create("core");

	tcase_add_checked_fixture(tc, setup, teardown);
	tcase_add_test(tc, test_v2_quota_at_leaf);
	tcase_add_test(tc, test_v2_parent_tighter_than_leaf);
	tcase_add_test(tc, test_v2_max_everywhere);
	tcase_add_test(tc, test_fractions_round_up);
	tcase_add_test(tc, test_quota_above_affinity);
	tcase_add_test(tc, test_v1_quota);
	tcase_add_test(tc, test_v1_no_quota);
	tcase_add_test(tc, test_v1_parent);
	tcase_add_test(tc, test_memory_limits);
	tcase_add_test(tc, test_hybrid);
	tcase_add_test(tc, test_thread_limits);
	tcase_add_test(tc, test_nproc_within_reach);
	tcase_add_test(tc, test_threads_try);
	tcase_add_test(tc, test_threads_try_waits_for_release);
	tcase_add_test(tc, test_cgroup_lines_and_spaces);
	tcase_add_test(tc, test_mount_of_another_cgroup);
	tcase_add_test(tc, test_quota_at_namespace_root);
	tcase_add_test(tc, test_empty_mount_source);
	tcase_add_test(tc, test_no_mountinfo);
	tcase_add_test(tc, test_missing_files);
	tcase_add_test(tc, test_unreadable_files);
	tcase_add_test(tc, test_garbage);
	tcase_add_test(tc, test_long_lines_before);
	tcase_add_test(tc, test_why_is_cut_and_terminated);
	tcase_add_test(tc, test_affinity_beyond_cpu_setsize);
	tcase_add_test(tc, test_real);
	suite_add_tcase(s, tc);
	return check_run(s);
}
