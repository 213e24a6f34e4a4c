/*
 * blas.h - choosing OpenBLAS's kernels for the CPU we run on.
 *
 * Debian 12's OpenBLAS (0.3.21) does not recognise some current x86 CPUs
 * (Sapphire/Emerald Rapids among them) and falls back to its SSE3
 * "Prescott" kernels, several times slower than the AVX2 or AVX-512 ones the
 * CPU has.  The kernel is chosen when the library is loaded, from the
 * environment variable OPENBLAS_CORETYPE, so the only fix from inside a
 * program is to set the variable and execute itself again.
 *
 * Programs whose time goes into OpenBLAS (semid-train) call sid_blas_tune
 * first thing in main().  It does nothing when the user set
 * OPENBLAS_CORETYPE (theirs wins), when SEMID_BLAS_TUNE=0, when OpenBLAS
 * already picked a non-Prescott kernel, or when the CPU has neither AVX2
 * nor AVX-512; otherwise it sets OPENBLAS_CORETYPE to "SkylakeX" (AVX-512)
 * or "Haswell" (AVX2) and re-executes /proc/self/exe with the same argv.  If
 * the exec fails, the program simply goes on with the slow kernels.
 * Call it before any thread starts.
 */
#ifndef SID_BLAS_H
#define SID_BLAS_H

#include <stddef.h>

/* The kernel name OpenBLAS is using ("Prescott", "SkylakeX", ...). */
const char *sid_blas_corename(void);

/*
 * The OPENBLAS_CORETYPE value that sid_blas_tune would set given what
 * OpenBLAS picked (@corename) and the CPU's features, or NULL for "leave
 * it".  Pure function, for tests.
 */
const char *sid_blas_better_core(const char *corename, int has_avx2, int has_avx512f);

/* See above; returns only when it did not re-execute. */
void sid_blas_tune(char **argv);

/*
 * Under a memory limit (ulimit -v or -d; systemd's LimitAS= or LimitDATA=)
 * OpenBLAS 0.3.21 retries for ever when it cannot map a work buffer (128
 * MiB here): each thread it starts maps one as it starts, the calling
 * thread at its first matrix product, and a process near its limit then
 * spins, deaf to SIGTERM, instead of failing.  When RLIMIT_AS or
 * RLIMIT_DATA is finite, or under strict commit accounting (sid_commit_read
 * below: OpenBLAS waits for ever there too), this executes the program again with
 * OPENBLAS_NUM_THREADS=1 (the user's value kept in SEMID_BLAS_DEFERRED), so
 * that OpenBLAS starts no thread at load; sid_blas_default_threads then
 * restores the user's environment and sid_blas_ready starts the threads
 * where their buffers fit.  It does so under a limit on threads too, one
 * that leaves little room (sid_threads_limited, cpus.h: RLIMIT_NPROC for a
 * user other than root, a cgroup's pids.max): OpenBLAS 0.3.21 raises
 * SIGINT when a thread it starts at load cannot start, and the program died
 * as if interrupted (exit 130) before main().  A limit far above the
 * threads running re-executes nothing.  Call it first in main(), after
 * sid_blas_tune; returns only when it did not re-execute.
 */
void sid_blas_no_threads_at_load(char **argv);

/* OpenBLAS 0.3.21's work buffer (BUFFER_SIZE, 32 << 22 on x86-64 and
 * arm64): one for the calling thread, one for each thread it starts. */
#define SID_BLAS_BUFFER ((size_t)128 << 20)

/* Have OpenBLAS map the calling thread's work buffer now (a level-3
 * product; its small-matrix kernels map nothing): 0, or -1 when the
 * product's own matrices could not be allocated. */
int sid_blas_map_caller_buffer(void);

/* What each further OpenBLAS thread maps (and, under strict commit
 * accounting, commits): its work buffer, the default thread stack, and a
 * guard page. */
size_t sid_blas_thread_bytes(void);

/*
 * Strict commit accounting (vm.overcommit_memory=2): the kernel refuses a
 * writable private mapping once the machine's committed memory
 * (Committed_AS) would pass CommitLimit, whatever this process's limits,
 * and OpenBLAS then waits for its buffer for ever, as under an rlimit.
 * sid_blas_no_threads_at_load defers OpenBLAS's threads under it too; how
 * many to start after is the program's decision (the room is the
 * machine's, shared, and read at one moment).
 */
struct sid_commit {
	int strict;		      /* vm.overcommit_memory is 2 */
	unsigned long long limit;     /* CommitLimit, bytes */
	unsigned long long committed; /* Committed_AS, bytes */
};

/*
 * Read vm.overcommit_memory, CommitLimit and Committed_AS from the proc
 * file system at @proc (NULL: "/proc", or the directory the environment
 * variable SEMID_TEST_PROC names, for tests; a directory holding
 * sys/vm/overcommit_memory and meminfo) into @c.  0; or -1, @c not strict,
 * when a file is missing or says something else than expected (nothing
 * known: nothing to do).
 */
int sid_commit_read(const char *proc, struct sid_commit *c);

/*
 * Make OpenBLAS ready for matrix products on @n threads (0: the count
 * sid_blas_default_threads chose).  With no memory limit in force it only
 * sets the count.  Under one, it first maps the calling thread's work
 * buffer (a small product), or fails with SID_ENOMEM naming the limit when
 * there is no room for it, then starts only as many more threads as a
 * trial mapping of their buffers and stacks shows room for with a quarter
 * of the limit to spare.  Either way, the threads it would add are tried
 * first (sid_threads_try, cpus.h), and only those that started are asked
 * of OpenBLAS: 0.3.21 ignores a thread it fails to start, and its next
 * product waits for that thread for ever (a limit on threads: RLIMIT_NPROC,
 * pids.max; another process of the user may still take the place between
 * the try and OpenBLAS's start).  @note (may be NULL) then says why fewer
 * than @n ("" otherwise).  Returns the threads, or a negative value with @err set.
 * Call it before the program's own large allocations: what it maps is
 * kept, and what the program maps after fails cleanly rather than hangs.
 */
struct sid_error;
int sid_blas_ready(int n, char *note, size_t size, struct sid_error *err);

/*
 * OpenBLAS's thread count when the user did not choose it.  At load,
 * OpenBLAS takes OPENBLAS_NUM_THREADS, GOTO_NUM_THREADS or OMP_NUM_THREADS,
 * else one thread per CPU of the affinity mask (at most the number it was
 * built for), blind to a cgroup CPU quota: in a pod limited to 2 CPUs on a
 * 64-core node it runs 64 threads, throttled most of each period.  When
 * none of those variables (nor OPENBLAS_DEFAULT_NUM_THREADS) is set, this
 * lowers the count to sid_cpus_usable() (cpus.h); it never raises it.  A
 * variable set to anything but a whole number of threads ("8x", "-1",
 * "99999999999"; "" is as unset) is ignored, as if unset: OpenBLAS, which
 * reads them with atoi, took "8x" for 8, so its count is then set to what
 * the next variable or sid_cpus_usable() gives, either way.  A program's
 * own --threads, applied after, wins.  Returns the threads OpenBLAS now
 * uses; @why (may be NULL) says how they were chosen
 * ("OPENBLAS_NUM_THREADS=4", or sid_cpus_why's text), followed by
 * '; OPENBLAS_NUM_THREADS="8x" ignored: not a whole number of threads'
 * for those ignored.  Call it after
 * sid_blas_tune (a re-execution would start over) and before BLAS work.
 * After sid_blas_no_threads_at_load deferred the threads, it starts none
 * and returns the count it chose: sid_blas_ready starts them.
 */
int sid_blas_default_threads(char *why, size_t size);
/* The @why of the last sid_blas_default_threads call ("" before any). */
const char *sid_blas_default_threads_why(void);

/* What sid_blas_tune decides for an OpenBLAS core @corename on a CPU with
 * those features: the core to re-execute with, or NULL to carry on (the
 * user set OPENBLAS_CORETYPE, or SEMID_BLAS_TUNE=0, or no better core). */
const char *sid__blas_tune_choice(const char *corename, int has_avx2, int has_avx512f);

#endif
