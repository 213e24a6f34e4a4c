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

/* What sid_blas_tune decides for an OpenBLAS core @corename on a CPU with
 * those features: the core to re-execute with, or NULL to carry on (the
 * user set OPENBLAS_CORETYPE, or SEMID_BLAS_TUNE=0, or no better core). */
const char *sid__blas_tune_choice(const char *corename, int has_avx2, int has_avx512f);

#endif
