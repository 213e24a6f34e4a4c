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
 * For a program that does no multi-threaded BLAS work (semid, semid-server):
 * under an address-space limit (ulimit -v, systemd's LimitAS) the thread
 * OpenBLAS starts when it is loaded spins for ever on a buffer it cannot
 * map, and the process never exits (seen at 100-150 MiB).  When RLIMIT_AS
 * is finite and OPENBLAS_NUM_THREADS is unset, this sets it to 1 and
 * executes the program again, so that OpenBLAS starts no thread.  Call it
 * first in main(); returns only when it did not re-execute.
 */
void sid_blas_one_thread_under_as_limit(char **argv);

/*
 * OpenBLAS's thread count when the user did not choose it.  At load,
 * OpenBLAS takes OPENBLAS_NUM_THREADS, GOTO_NUM_THREADS or OMP_NUM_THREADS,
 * else one thread per CPU of the affinity mask (at most the number it was
 * built for), blind to a cgroup CPU quota: in a pod limited to 2 CPUs on a
 * 64-core node it runs 64 threads, throttled most of each period.  When
 * none of those variables (nor OPENBLAS_DEFAULT_NUM_THREADS) is set, this
 * lowers the count to sid_cpus_usable() (cpus.h); it never raises it.  A
 * program's own --threads, applied after, wins.  Returns the threads
 * OpenBLAS now uses; @why (may be NULL) says how they were chosen
 * ("OPENBLAS_NUM_THREADS=4", or sid_cpus_why's text).  Call it after
 * sid_blas_tune (a re-execution would start over) and before BLAS work.
 */
int sid_blas_default_threads(char *why, size_t size);
/* The @why of the last sid_blas_default_threads call ("" before any). */
const char *sid_blas_default_threads_why(void);

/* What sid_blas_tune decides for an OpenBLAS core @corename on a CPU with
 * those features: the core to re-execute with, or NULL to carry on (the
 * user set OPENBLAS_CORETYPE, or SEMID_BLAS_TUNE=0, or no better core). */
const char *sid__blas_tune_choice(const char *corename, int has_avx2, int has_avx512f);

#endif
