/* blas.c - picking OpenBLAS kernels the library failed to detect, and its
 * default thread count under a CPU quota; see blas.h. */
#include "blas.h"

#include <cblas.h>
#include <limits.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/resource.h>
#include <unistd.h>

#include "cpus.h"
#include "env.h"
#include "err.h"

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

/* Where sid_blas_no_threads_at_load keeps the user's OPENBLAS_NUM_THREADS
 * across its re-execution: "=VALUE", or "" when it was unset. */
#define DEFERRED "SEMID_BLAS_DEFERRED"

/* What OpenBLAS itself reads at load, first to last. */
static const char *const thread_vars[] = {"OPENBLAS_NUM_THREADS", "GOTO_NUM_THREADS",
					  "OMP_NUM_THREADS", "OPENBLAS_DEFAULT_NUM_THREADS"};

/*
 * The first of thread_vars set to a whole number of threads, its value in
 * *@value and *@n; or NULL.  One set to anything else but "" is ignored,
 * as if unset, and named in @ignored ("" when none): OpenBLAS skips a value
 * that atoi makes 0 or less ("0", "-1", "many"), but takes "8x" for 8 and
 * "99999999999" for what atoi's overflow makes of it, so its count is set
 * again after (sid_blas_default_threads).
 */
static const char *thread_var(const char **value, long *n, char *ignored, size_t size)
{
	char shown[SID_ENV_SHOWN_MAX];
	size_t len = 0;

	ignored[0] = '\0';
	for (size_t i = 0; i < sizeof(thread_vars) / sizeof(thread_vars[0]); i++) {
		const char *v = getenv(thread_vars[i]);
		if (!v || !v[0]) /* unset, or as unset */
			continue;
		if (!sid_whole_parse(v, 1, INT_MAX, n)) {
			*value = v;
			return thread_vars[i];
		}
		if (len < size)
			len +=
			    (size_t)snprintf(ignored + len, size - len, "%s%s=%s", len ? ", " : "",
					     thread_vars[i], sid_env_shown(v, shown));
	}
	return NULL;
}

/* The tighter of the finite soft limits on the address space and on the
 * data segment, in bytes (0: neither), with its name (may be NULL) and
 * what the process maps against it now (@used, may be NULL). */
static unsigned long long memory_limit(const char **name, unsigned long long *used)
{
	struct rlimit as, data;
	unsigned long long lim = 0, pages[6] = {0};
	int data_wins;
	FILE *f;

	if (getrlimit(RLIMIT_AS, &as) != 0)
		as.rlim_cur = RLIM_INFINITY;
	if (getrlimit(RLIMIT_DATA, &data) != 0)
		data.rlim_cur = RLIM_INFINITY;
	data_wins = data.rlim_cur != RLIM_INFINITY &&
		    (as.rlim_cur == RLIM_INFINITY || data.rlim_cur < as.rlim_cur);
	if (data_wins)
		lim = data.rlim_cur;
	else if (as.rlim_cur != RLIM_INFINITY)
		lim = as.rlim_cur;
	if (name)
		*name = data_wins ? "the data-segment limit (ulimit -d, LimitDATA=)"
				  : "the address-space limit (ulimit -v, LimitAS=)";
	if (used) { /* statm: size resident shared text lib data(+stack) dirty */
		f = fopen("/proc/self/statm", "re");
		if (f && fscanf(f, "%llu %llu %llu %llu %llu %llu", &pages[0], &pages[1], &pages[2],
				&pages[3], &pages[4], &pages[5]) != 6)
			pages[0] = pages[5] = 0;
		if (f)
			fclose(f);
		*used = pages[data_wins ? 5 : 0] * (unsigned long long)sysconf(_SC_PAGESIZE);
	}
	return lim;
}

int sid_commit_read(const char *proc, struct sid_commit *c)
{
	char path[PATH_MAX], line[256];
	unsigned long long kb, *dst;
	int mode = -1, got = 0;
	FILE *f;

	memset(c, 0, sizeof(*c));
	if (!proc) {
		proc = getenv("SEMID_TEST_PROC");
		if (!proc || !proc[0])
			proc = "/proc";
	}
	if (snprintf(path, sizeof(path), "%s/sys/vm/overcommit_memory", proc) >= (int)sizeof(path))
		return -1;
	if (!(f = fopen(path, "re")))
		return -1;
	if (fscanf(f, "%d", &mode) != 1)
		mode = -1;
	fclose(f);
	if (mode < 0 || mode > 2)
		return -1;
	if (mode != 2) /* heuristic (0) or always (1): a mapping is not refused so */
		return 0;
	if (snprintf(path, sizeof(path), "%s/meminfo", proc) >= (int)sizeof(path))
		return -1;
	if (!(f = fopen(path, "re")))
		return -1;
	while (fgets(line, sizeof(line), f)) {
		dst = !strncmp(line, "CommitLimit:", 12)    ? &c->limit
		      : !strncmp(line, "Committed_AS:", 13) ? &c->committed
							    : NULL;
		if (!dst || sscanf(strchr(line, ':') + 1, " %llu kB", &kb) != 1 ||
		    kb > ULLONG_MAX >> 10)
			continue;
		*dst = kb << 10;
		got |= dst == &c->limit ? 1 : 2;
	}
	fclose(f);
	if (got != 3) {
		memset(c, 0, sizeof(*c));
		return -1;
	}
	c->strict = 1;
	return 0;
}

void sid_blas_no_threads_at_load(char **argv)
{
	const char *user = getenv("OPENBLAS_NUM_THREADS");
	struct sid_commit c;
	char kept[80];

	if (!argv || !argv[0] || getenv(DEFERRED))
		return;
	if (!memory_limit(NULL, NULL) && (sid_commit_read(NULL, &c) < 0 || !c.strict) &&
	    !sid_threads_limited())
		return;
	if (snprintf(kept, sizeof(kept), "%s%s", user ? "=" : "", user ? user : "") >=
		(int)sizeof(kept) ||
	    setenv(DEFERRED, kept, 1))
		return;
	reexec_with(argv, "OPENBLAS_NUM_THREADS", "1");
	unsetenv(DEFERRED); /* the exec failed: OpenBLAS is as it was loaded */
	if (user)
		setenv("OPENBLAS_NUM_THREADS", kept + 1, 1);
}

/* The last sid_blas_default_threads's reason (sid_blas_default_threads_why),
 * and the count it chose but left to sid_blas_ready to start (0: none). */
static char last_why[700];
static int pending;

int sid_blas_default_threads(char *why, size_t size)
{
	const char *var, *val = NULL;
	char kept[80] = "", ignored[300];
	int deferred = getenv(DEFERRED) != NULL;
	struct sid_cpus c;
	long k = 0;
	int n;

	if (deferred) { /* the user's environment back, for the reason and children */
		snprintf(kept, sizeof(kept), "%s", getenv(DEFERRED));
		unsetenv(DEFERRED);
		if (kept[0] == '=')
			setenv("OPENBLAS_NUM_THREADS", kept + 1, 1);
		else
			unsetenv("OPENBLAS_NUM_THREADS");
	}
	var = thread_var(&val, &k, ignored, sizeof(ignored));
	if (var) {
		snprintf(last_why, sizeof(last_why), "%s=%s", var, val);
		n = openblas_get_num_threads();
		/* what OpenBLAS would have taken at load, had it not been
		 * deferred or misread an ignored value */
		if (deferred || ignored[0]) {
			sid_cpus_usable(&c);
			n = k < c.affinity ? (int)k : c.affinity;
		}
		if (!deferred && ignored[0]) {
			openblas_set_num_threads(n);
			n = openblas_get_num_threads();
		}
	} else {
		sid_cpus_usable(&c);
		if (!deferred && (ignored[0] || c.n < openblas_get_num_threads()))
			openblas_set_num_threads(c.n);
		sid_cpus_why(&c, last_why, sizeof(last_why));
		n = deferred ? c.n : openblas_get_num_threads();
	}
	if (ignored[0]) {
		size_t len = strlen(last_why);
		snprintf(last_why + len, sizeof(last_why) - len,
			 "; %s ignored: not a whole number of threads", ignored);
	}
	if (deferred)
		pending = n;
	if (why && size)
		snprintf(why, size, "%s", last_why);
	return n;
}

/* One product of n x n matrices, large enough for OpenBLAS's level-3 path
 * (not its small-matrix kernels, which map nothing) and for every thread. */
static int product(int n)
{
	float *a = calloc((size_t)3 * n * n, sizeof(float));
	if (!a)
		return -1;
	cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, n, n, n, 1.0f, a, n, a + n * n, n,
		    0.0f, a + 2 * n * n, n);
	free(a);
	return 0;
}

size_t sid_blas_thread_bytes(void)
{
	pthread_attr_t attr;
	size_t stack = (size_t)8 << 20;

	if (pthread_attr_init(&attr) == 0) { /* the stack a new thread maps */
		pthread_attr_getstacksize(&attr, &stack);
		pthread_attr_destroy(&attr);
	}
	return SID_BLAS_BUFFER + stack + (size_t)sysconf(_SC_PAGESIZE);
}

int sid_blas_map_caller_buffer(void)
{
	return product(160);
}

/*
 * Of @want threads, @started of them running, how many OpenBLAS can have:
 * OpenBLAS 0.3.21 does not look whether the threads openblas_set_num_threads
 * starts did start, and its next product waits for ever on one that did not
 * (RLIMIT_NPROC, pids.max).  They are tried first (sid_threads_try, with
 * the default stack, as OpenBLAS starts them); @note says so when fewer
 * than @asked (what the caller asked, @want what else let it have).
 */
static int threads_that_start(int asked, int want, int started, char *note, size_t size)
{
	int e, got;

	if (want <= started)
		return want;
	got = sid_threads_try(want - started, 0, &e);
	if (got == want - started)
		return want;
	if (note && size)
		snprintf(note, size,
			 "%d asked: %d more could start beside the %d running, the rest refused "
			 "(%s) by the limit on the user's processes and threads, ulimit -u or "
			 "LimitNPROC=, or by a cgroup's pids.max",
			 asked, got, started, strerror(e));
	return started + got;
}

int sid_blas_ready(int n, char *note, size_t size, struct sid_error *err)
{
	static int started, caller_mapped; /* threads OpenBLAS started, the caller included */
	int want = n > 0 ? n : pending > 0 ? pending : openblas_get_num_threads(), fit;
	unsigned long long used, lim, before, spare;
	const char *name;
	size_t per;

	if (note && size)
		note[0] = '\0';
	if (!started)
		started = openblas_get_num_threads();
	pending = 0;
	lim = memory_limit(&name, &used);
	if (!lim) {
		fit = threads_that_start(want, want, started, note, size);
		openblas_set_num_threads(fit);
		if (fit > started)
			started = fit;
		return openblas_get_num_threads();
	}
	/* Counted, not tried: a trial mapping of a large limit's size can
	 * fail for the kernel's overcommit heuristic alone. */
	if (!caller_mapped) {
		if (used + SID_BLAS_BUFFER > lim || product(160) < 0)
			return sid_error_set(err, SID_ENOMEM,
					     "%s of %llu MiB leaves no room for OpenBLAS's %zu MiB "
					     "work buffer beside "
					     "the %llu MiB mapped already (OpenBLAS would wait for "
					     "it for ever): raise it",
					     name, lim >> 20, SID_BLAS_BUFFER >> 20, used >> 20);
		caller_mapped = 1;
		memory_limit(NULL, &used);
	}
	per = sid_blas_thread_bytes();
	/* a quarter of the limit kept for the program's own data: fewer
	 * threads that train beat more that leave no room to */
	spare = used + lim / 4 < lim ? lim - lim / 4 - used : 0;
	fit = want;
	if (fit > started && (unsigned long long)(fit - started) * per > spare)
		fit = started + (int)(spare / per);
	if (fit < want && note && size)
		snprintf(note, size,
			 "%d asked: %s of %llu MiB leaves no room for more, each %zu MiB of "
			 "OpenBLAS buffer and stack, with a quarter of it kept for the data",
			 want, name, lim >> 20, per >> 20);
	fit = threads_that_start(want, fit, started, note, size);
	before = used;
	openblas_set_num_threads(fit);
	if (fit > started) {
		/* Each new thread maps its buffer as it starts, beside this one:
		 * a product for them all, then until they have (1 s at most). */
		product(512);
		for (int ms = 0; ms < 1000; ms++) {
			memory_limit(NULL, &used);
			if (used >= before + (unsigned long long)(fit - started) * SID_BLAS_BUFFER)
				break;
			usleep(1000);
		}
		started = fit;
	}
	return fit;
}

const char *sid_blas_default_threads_why(void)
{
	return last_why;
}
