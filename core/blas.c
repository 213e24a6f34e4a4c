/* blas.c - picking OpenBLAS kernels the library failed to detect, and its
 * default thread count under a CPU quota; see blas.h. */
#include "blas.h"

#include <cblas.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/resource.h>
#include <unistd.h>

#include "cpus.h"

const char *sid_blas_corename(void)
{
	const char *name = openblas_get_corename();
	return name ? name : "unknown";
}

const char *sid_blas_better_core(const char *corename, int has_avx2, int has_avx512f)
{
	if (!corename || strcasecmp(corename, "prescott") != 0)
		return NULL;
	if (has_avx512f)
		return "SkylakeX";
	if (has_avx2)
		return "Haswell";
	return NULL;
}

const char *sid__blas_tune_choice(const char *corename, int has_avx2, int has_avx512f)
{
	const char *opt = getenv("SEMID_BLAS_TUNE");

	if (getenv("OPENBLAS_CORETYPE") || (opt && !strcmp(opt, "0")))
		return NULL; /* the user's choice, or opted out */
	return sid_blas_better_core(corename, has_avx2, has_avx512f);
}

/* Execute this program again with @var=@val in its environment (OpenBLAS
 * reads it only when it is loaded); when that fails, carry on as we were. */
static void reexec_with(char **argv, const char *var, const char *val)
{
	if (setenv(var, val, 1))
		return;
	execv("/proc/self/exe", argv);
	unsetenv(var);
}

void sid_blas_tune(char **argv)
{
	const char *want;
	int avx2 = 0, avx512 = 0;

	if (!argv || !argv[0])
		return;
#if defined(__x86_64__) && defined(__GNUC__)
	__builtin_cpu_init();
	avx2 = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
	avx512 = __builtin_cpu_supports("avx512f");
#endif
	want = sid__blas_tune_choice(sid_blas_corename(), avx2, avx512);
	if (!want)
		return;
	/* SEMID_BLAS_TUNE=0 in the new image guards against a loop should
	 * OpenBLAS ignore the variable. */
	if (setenv("SEMID_BLAS_TUNE", "0", 1))
		return;
	reexec_with(argv, "OPENBLAS_CORETYPE", want);
}

void sid_blas_one_thread_under_as_limit(char **argv)
{
	struct rlimit rl;

	if (!argv || !argv[0] || getenv("OPENBLAS_NUM_THREADS") || getrlimit(RLIMIT_AS, &rl) != 0 ||
	    rl.rlim_cur == RLIM_INFINITY)
		return;
	reexec_with(argv, "OPENBLAS_NUM_THREADS", "1");
}

/* The last sid_blas_default_threads's reason (sid_blas_default_threads_why). */
static char last_why[700];

int sid_blas_default_threads(char *why, size_t size)
{
	/* what OpenBLAS itself reads at load, first to last; a value that is
	 * not a positive number is ignored there too */
	static const char *const vars[] = {"OPENBLAS_NUM_THREADS", "GOTO_NUM_THREADS",
					   "OMP_NUM_THREADS", "OPENBLAS_DEFAULT_NUM_THREADS"};
	struct sid_cpus c;
	size_t i;

	for (i = 0; i < sizeof(vars) / sizeof(vars[0]); i++)
		if (getenv(vars[i]) && atoi(getenv(vars[i])) > 0)
			break;
	if (i < sizeof(vars) / sizeof(vars[0])) {
		snprintf(last_why, sizeof(last_why), "%s=%s", vars[i], getenv(vars[i]));
	} else {
		sid_cpus_usable(&c);
		if (c.n < openblas_get_num_threads())
			openblas_set_num_threads(c.n);
		sid_cpus_why(&c, last_why, sizeof(last_why));
	}
	if (why && size)
		snprintf(why, size, "%s", last_why);
	return openblas_get_num_threads();
}

const char *sid_blas_default_threads_why(void)
{
	return last_why;
}
