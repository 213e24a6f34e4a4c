/*
 * cpus.h - how many CPUs this process may use, for sizing thread pools.
 *
 * The CPU affinity mask (taskset, a container's cpuset, Kubernetes' static
 * CPU manager) says which CPUs the process may run on; a CPU quota (Docker's
 * --cpus, a Kubernetes CPU limit, systemd's CPUQuota=) says how much time it
 * may take of them, and is invisible in the mask: a pod limited to 2 CPUs on
 * a 64-core node sees 64.  Running 64 busy threads there, the kernel
 * throttles the whole cgroup for most of each period, and every request
 * waiting then pays for it.  So, as the JVM, .NET and Go's automaxprocs do,
 * the count here is
 *
 *   min(CPUs in the affinity mask, ceil(quota / period))
 *
 * with the tightest quota of every level of the process's cgroup, from the
 * leaf up to the root of its hierarchy: cgroup v2's cpu.max ("max 100000",
 * "200000 100000") and cgroup v1's cpu controller (cpu.cfs_quota_us, -1 for
 * none, and cpu.cfs_period_us), both found through /proc/self/cgroup and
 * /proc/self/mountinfo (a hybrid host has both).  A fraction rounds up
 * (1.5 CPUs: 2), and the result is never below 1.  A file missing,
 * unreadable or malformed counts as no quota there: never an error.
 *
 * Explicit settings (a program's --workers, --threads, OPENBLAS_NUM_THREADS)
 * are the callers' business and always win over this default.
 * Thread-safe (it only reads files); a few small reads, so call it at start.
 */
#ifndef SID_CPUS_H
#define SID_CPUS_H

#include <stddef.h>

struct sid_cpus {
	int n;		  /* the CPUs to size by: min(affinity, quota_cpus), >= 1 */
	int affinity;	  /* CPUs in the affinity mask (online CPUs if it cannot be read) */
	int quota_cpus;	  /* ceil(quota / period) of the tightest quota, 0: none seen */
	long long quota;  /* that quota and its period, in microseconds */
	long long period; /* (both 0 when none was seen) */
	int cgroup;	  /* the quota's cgroup version, 1 or 2 (0: none) */
	char path[512];	  /* its cgroup, as /proc/self/cgroup names it ("/kubepods/...") */
};

/* Fill @c (may be NULL) for this process; returns c->n. */
int sid_cpus_usable(struct sid_cpus *c);

/*
 * Why c->n is what it is, for a log line, into @buf (always NUL-terminated,
 * cut to @size): "cpu quota 200000/100000 at /kubepods/pod1 (cgroup v2;
 * affinity 64)" when the quota decides, "affinity 8 (no cpu quota)" or
 * "affinity 8 (cpu quota 1600000/100000 at /x allows 16)" otherwise.
 * Returns @buf.
 */
const char *sid_cpus_why(const struct sid_cpus *c, char *buf, size_t size);

/* Bytes of memory this process may use, for refusing work that cannot fit
 * before it starts: physical memory, or the tightest memory limit of the
 * process's cgroup and its ancestors when lower (v2's memory.max, v1's
 * memory.limit_in_bytes, found as the CPU quota is); 0 when unknown. */
double sid_memory_usable(void);
/* Tests: the same with every file read under @root (as sid__cpus_at) and
 * @phys bytes of physical memory. */
double sid__memory_at(const char *root, double phys);

/* Tests: sid_cpus_usable with every file read under @root ("" for the real
 * ones: @root "/tmp/x" reads /tmp/x/proc/self/cgroup, and the mount points
 * that /tmp/x/proc/self/mountinfo names under /tmp/x too) and @affinity
 * CPUs in the mask (<= 0: read the real mask). */
int sid__cpus_at(const char *root, int affinity, struct sid_cpus *c);

/*
 * Whether a limit on this process's threads leaves it little room: fewer
 * than one thread per CPU (what OpenBLAS starts as it loads) and
 * SID_THREADS_SPARE more to start beside those running.  The limits are
 * RLIMIT_NPROC, finite for a user other than root (ulimit -u, systemd's
 * LimitNPROC=; the kernel exempts root), which counts every thread of the
 * user, and a pids cgroup limit (pids.max, v2's or v1's, a container's
 * --pids-limit) at the process's cgroup or an ancestor, which counts its
 * pids.current.  For RLIMIT_NPROC the machine's task count
 * (/proc/loadavg) settles it when the limit is far above; only a limit
 * within reach of it has every process of the user counted (/proc/PID/
 * status).  A count that cannot be read counts as little room.  How many
 * threads do fit is sid_threads_try's to tell: the others come and go.
 */
#define SID_THREADS_SPARE 256
int sid_threads_limited(void);
/* Tests: the same with every file read under @root (as sid__cpus_at: the
 * cgroup files, proc/loadavg, proc/PID/status), @nproc_binds for whether
 * RLIMIT_NPROC counts, and room wanted for @want threads. */
int sid__threads_limited_at(const char *root, int nproc_binds, long long want);

/*
 * Start @n threads of @stack bytes of stack (0: the default, as libraries
 * that pass no attributes get), all at once, then end them: how many
 * started, and in *@e (may be NULL) the error of the first that could not
 * (0 when all did; EAGAIN under a thread limit).  It returns once the
 * kernel has released them (up to 1 s after they end), so that they no
 * longer count against the limits it tests.  For a program whose
 * libraries start threads it cannot stop from failing (libuv abort()s,
 * OpenBLAS hangs or raises SIGINT): tried first, the shortfall is said.
 */
int sid_threads_try(int n, size_t stack, int *e);

#endif
