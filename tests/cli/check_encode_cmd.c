/*
 * check_encode_cmd.c - in-process tests of the `semid encode` pipeline
 * (cli/encode_cmd.c) on a random model with a real MLP (gelu, l2 input norm,
 * biases, non-uniform K): the .npy and TSV outputs equal one direct
 * sid_encode call over all rows, for every thread count and batch size; a
 * non-finite row fails naming its absolute index and leaves no file; a run
 * killed mid-write leaves the directory as it was.
 */
#include <check.h>
#include "check_main.h"
#include <dirent.h>
#include <fcntl.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

#include "../../cli/cli.h" /* tests build with -Icore -Itests only */
#include "cpus.h"
#include "fsutil.h"
#include "kill_mid_write.h"
#include "one_cpu.h"
#include "model_builder.h"
#include "npy.h"

enum { N = 1000, D = 48, E = 16, L = 3 };
static const int K[L] = {32, 17, 9};

static char dir[] = "/tmp/check_encode_cmd.XXXXXX";
static char model_path[600], input_path[600];
static float *X;      /* (N, D) */
static int32_t *WANT; /* (N, L) from one direct sid_encode call */

static void path_in(char *buf, size_t len, const char *name)
{
	snprintf(buf, len, "%s/%s", dir, name);
}

static void setup(void)
{
	struct mb_spec s;
	struct sid_model *m;
	struct sid_workspace *ws;
	struct sid_encode_out out;
	struct sid_error err;
	static const int hidden[] = {64, 32};
	uint64_t rng = 99;
	int i;

	ck_assert_ptr_nonnull(mkdtemp(dir));
	path_in(model_path, sizeof(model_path), "model.safetensors");
	path_in(input_path, sizeof(input_path), "x.npy");
	mb_spec_init(&s);
	mb_tower(&s, SID_TOWER_ITEM, D, hidden, 2, E, L, K, "gelu", "l2", 1);
	s.seed = 5;
	ck_assert_int_eq(mb_build_file(&s, model_path, &err), 0);

	X = malloc(sizeof(float) * N * D);
	WANT = malloc(sizeof(int32_t) * N * L);
	for (i = 0; i < N * D; i++)
		X[i] = mb_rand_sym(&rng);
	ck_assert_int_eq(sid_npy_write(input_path, SID_NPY_F32, N, D, X, &err), 0);

	ck_assert_int_eq(sid_model_load(model_path, &m, &err), 0);
	ws = sid_workspace_new();
	memset(&out, 0, sizeof(out));
	out.codes = WANT;
	ck_assert_int_eq(sid_encode(sid_model_tower(m, SID_TOWER_ITEM), X, N, &out, ws, &err), 0);
	sid_workspace_free(ws);
	sid_model_unref(m);
}

static void teardown(void)
{
	DIR *d = opendir(dir);
	struct dirent *e;
	char p[700];

	while (d && (e = readdir(d))) {
		if (e->d_name[0] == '.')
			continue;
		snprintf(p, sizeof(p), "%s/%s", dir, e->d_name);
		unlink(p);
	}
	if (d)
		closedir(d);
	rmdir(dir);
	strcpy(dir, "/tmp/check_encode_cmd.XXXXXX");
	free(X);
	free(WANT);
}

static void opts_init(struct cli_encode_opts *o, const char *out, int threads, size_t batch)
{
	memset(o, 0, sizeof(*o));
	o->model = model_path;
	o->tower = "item";
	o->input = input_path;
	o->output = out;
	o->threads = threads;
	o->batch = batch;
	o->top_k = 1;
	o->format = SID_FORMAT_DASH;
	o->progress = CLI_PROGRESS_NEVER;
}

static int count_files(void)
{
	DIR *d = opendir(dir);
	struct dirent *e;
	int n = 0;

	while (d && (e = readdir(d)))
		n += e->d_name[0] != '.';
	if (d)
		closedir(d);
	return n;
}

/* Without --threads: the CPUs the process may use (cpus.h), not every
 * online CPU: on one CPU of its affinity, one thread (as under a CPU quota
 * of one; check_cpus.c covers the quota itself). */
START_TEST(test_default_threads_follow_usable_cpus)
{
	cpu_set_t all;

	ck_assert_int_eq(cli_encode_default_threads(), sid_cpus_usable(NULL));
	one_cpu_pin(&all);
	ck_assert_int_eq(cli_encode_default_threads(), 1);
	one_cpu_unpin(&all);
}
END_TEST

START_TEST(test_npy_any_threads_batch)
{
	static const struct {
		int threads;
		size_t batch;
	} runs[] = {{1, 1000}, {1, 1}, {2, 7}, {3, 64}, {2, 1000}, {4, 999}, {0, 333}};
	struct cli_encode_opts o;
	struct sid_error err;
	struct sid_npy f;
	char out[700];
	size_t r;

	path_in(out, sizeof(out), "o.npy");
	for (r = 0; r < sizeof(runs) / sizeof(runs[0]); r++) {
		opts_init(&o, out, runs[r].threads, runs[r].batch);
		ck_assert_int_eq(cli_encode_run(&o, stdout, &err), CLI_EXIT_OK);
		ck_assert_int_eq(sid_npy_open(out, &f, &err), 0);
		ck_assert_int_eq(f.dtype, SID_NPY_I32);
		ck_assert_uint_eq(f.rows, N);
		ck_assert_uint_eq(f.cols, L);
		ck_assert_msg(memcmp(f.data, WANT, sizeof(int32_t) * N * L) == 0,
			      "threads %d batch %zu differ", runs[r].threads, runs[r].batch);
		sid_npy_close(&f);
		ck_assert_int_eq(count_files(), 3); /* model, input, output: no temp left */
	}
}
END_TEST

/* @text (taken, freed) is the TSV of WANT: row<TAB>c0-c1-c2, every row. */
static void tsv_check(char *text)
{
	char *line, *save = NULL, want[128];
	int row = 0;

	for (line = strtok_r(text, "\n", &save); line; line = strtok_r(NULL, "\n", &save), row++) {
		snprintf(want, sizeof(want), "%d\t%d-%d-%d", row, WANT[row * L], WANT[row * L + 1],
			 WANT[row * L + 2]);
		ck_assert_str_eq(line, want);
	}
	ck_assert_int_eq(row, N);
	free(text);
}

START_TEST(test_tsv_matches)
{
	struct cli_encode_opts o;
	struct sid_error err;
	char *text = NULL;
	size_t len = 0;
	FILE *fp = open_memstream(&text, &len);

	ck_assert_ptr_nonnull(fp);
	opts_init(&o, "-", 2, 100);
	ck_assert_int_eq(cli_encode_run(&o, fp, &err), CLI_EXIT_OK);
	fclose(fp);
	tsv_check(text);
}
END_TEST

/* The threads of this process now (/proc/self/task). */
static int threads_now(void)
{
	DIR *d = opendir("/proc/self/task");
	struct dirent *e;
	int n = 0;

	ck_assert_ptr_nonnull(d);
	while ((e = readdir(d)))
		n += e->d_name[0] != '.';
	closedir(d);
	return n;
}

/* A TSV output that counts this process's threads at each write. */
struct task_probe {
	FILE *text; /* what was written */
	int most;   /* the most threads seen at a write */
};

static ssize_t probe_write(void *c, const char *buf, size_t len)
{
	struct task_probe *p = c;
	int n = threads_now();

	if (n > p->most)
		p->most = n;
	return (ssize_t)fwrite(buf, 1, len, p->text);
}

/*
 * One job is done on the calling thread: `semid encode -j 1` started a
 * worker thread all the same, one more than it needs under RLIMIT_NPROC or
 * a pids.max that leaves no room.  The threads of this process are counted
 * at each write of the TSV (a line at a time): with -j 1 no more than
 * before the run, with -j 2 two more at least (the probe sees workers),
 * the rows the same.  And a bad row is named as the workers name it.
 */
START_TEST(test_one_job_starts_no_thread)
{
	cookie_io_functions_t io = {NULL, probe_write, NULL, NULL};
	struct cli_encode_opts o;
	struct sid_error err;
	char *text = NULL;
	size_t len = 0;

	for (int threads = 1; threads <= 2; threads++) {
		struct task_probe p = {open_memstream(&text, &len), 0};
		FILE *fp = fopencookie(&p, "w", io);
		int before = threads_now();

		ck_assert_ptr_nonnull(p.text);
		ck_assert_ptr_nonnull(fp);
		setvbuf(fp, NULL, _IOLBF, 0);
		opts_init(&o, "-", threads, 100);
		ck_assert_int_eq(cli_encode_run(&o, fp, &err), CLI_EXIT_OK);
		fclose(fp);
		fclose(p.text);
		if (threads == 1)
			ck_assert_int_eq(p.most, before);
		else /* (ThreadSanitizer starts a thread of its own at the first) */
			ck_assert_int_ge(p.most, before + threads);
		tsv_check(text);
	}
	X[777 * D + 3] = NAN;
	ck_assert_int_eq(sid_npy_write(input_path, SID_NPY_F32, N, D, X, &err), 0);
	opts_init(&o, "/dev/null", 1, 100);
	ck_assert_int_eq(cli_encode_run(&o, stdout, &err), CLI_EXIT_INPUT);
	ck_assert_str_eq(err.msg + strlen(input_path), ": row 777, column 3 is not finite (nan)");
}
END_TEST

START_TEST(test_top_k_columns)
{
	struct cli_encode_opts o;
	struct sid_error err;
	struct sid_npy f;
	char out[700];
	const int32_t *a;
	int r, j;

	path_in(out, sizeof(out), "k.npy");
	opts_init(&o, out, 2, 50);
	o.top_k = 4;
	ck_assert_int_eq(cli_encode_run(&o, stdout, &err), CLI_EXIT_OK);
	ck_assert_int_eq(sid_npy_open(out, &f, &err), 0);
	ck_assert_uint_eq(f.cols, 4 * L);
	a = (const int32_t *)f.data;
	for (r = 0; r < N; r++) {
		ck_assert_mem_eq(a + r * 4 * L, WANT + r * L, sizeof(int32_t) * L);
		for (j = 1; j < 4; j++) {
			const int32_t *alt = a + r * 4 * L + j * L;
			/* an alternative is a valid tuple other than the greedy one, or -1s */
			if (alt[0] < 0) {
				ck_assert(alt[1] == -1 && alt[2] == -1);
				continue;
			}
			ck_assert(alt[0] < K[0] && alt[1] < K[1] && alt[2] < K[2]);
			ck_assert(memcmp(alt, WANT + r * L, sizeof(int32_t) * L) != 0);
		}
	}
	sid_npy_close(&f);
}
END_TEST

START_TEST(test_nonfinite_leaves_nothing)
{
	struct cli_encode_opts o;
	struct sid_error err;
	char out[700];

	X[777 * D + 3] = NAN;
	X[901 * D] = INFINITY;
	ck_assert_int_eq(sid_npy_write(input_path, SID_NPY_F32, N, D, X, &err), 0);
	path_in(out, sizeof(out), "bad.npy");
	opts_init(&o, out, 2, 10);
	ck_assert_int_eq(cli_encode_run(&o, stdout, &err), CLI_EXIT_INPUT);
	ck_assert_ptr_nonnull(strstr(err.msg, "row 777, column 3 is not finite (nan)"));
	ck_assert_int_eq(strncmp(err.msg, input_path, strlen(input_path)), 0);
	ck_assert_int_eq(count_files(), 2);
	path_in(out, sizeof(out), "bad.tsv");
	opts_init(&o, out, 3, 1);
	ck_assert_int_eq(cli_encode_run(&o, stdout, &err), CLI_EXIT_INPUT);
	ck_assert_ptr_nonnull(strstr(err.msg, "row 777"));
	ck_assert_int_eq(count_files(), 2);
}
END_TEST

/* A row finite as float32 but so large that the encoder overflows on it (a
 * tower without input normalisation): refused with its row named, nothing
 * written; it used to get codes that meant nothing. */
START_TEST(test_overflow_leaves_nothing)
{
	static const int hidden[] = {16};
	struct cli_encode_opts o;
	struct mb_spec s;
	struct sid_error err;
	char out[700], raw[700];

	path_in(raw, sizeof(raw), "raw.safetensors");
	mb_spec_init(&s);
	mb_tower(&s, SID_TOWER_ITEM, D, hidden, 1, E, L, K, "relu", "none", 1);
	ck_assert_int_eq(mb_build_file(&s, raw, &err), 0);
	for (int j = 0; j < D; j++)
		X[613 * D + j] = j % 2 ? 3e38f : -3e38f;
	ck_assert_int_eq(sid_npy_write(input_path, SID_NPY_F32, N, D, X, &err), 0);
	for (int k = 1; k <= 3; k += 2) { /* best code only, and with alternatives */
		path_in(out, sizeof(out), k > 1 ? "o.tsv" : "o.npy");
		opts_init(&o, out, 2, 100);
		o.model = raw;
		o.top_k = k;
		ck_assert_int_eq(cli_encode_run(&o, stdout, &err), CLI_EXIT_INPUT);
		ck_assert_msg(strstr(err.msg, "row 613") &&
				  strstr(err.msg, "too large for the model"),
			      "%s", err.msg);
		ck_assert_int_eq(count_files(), 3); /* model, input, raw model */
	}
}
END_TEST

START_TEST(test_bad_tower_and_columns)
{
	struct cli_encode_opts o;
	struct sid_error err;
	char out[700];

	path_in(out, sizeof(out), "o.npy");
	opts_init(&o, out, 1, 10);
	o.tower = "user";
	ck_assert_int_eq(cli_encode_run(&o, stdout, &err), CLI_EXIT_INPUT);
	ck_assert_ptr_nonnull(strstr(err.msg, "has no tower 'user' (it has: item)"));
	ck_assert_int_eq(sid_npy_write(input_path, SID_NPY_F32, N / 2, D * 2, X, &err), 0);
	opts_init(&o, out, 1, 10);
	ck_assert_int_eq(cli_encode_run(&o, stdout, &err), CLI_EXIT_INPUT);
	ck_assert_ptr_nonnull(strstr(err.msg, "has 96 columns, tower 'item' expects 48"));
	ck_assert_int_eq(count_files(), 2);
}
END_TEST

/*
 * Killed in the middle of writing its output (.npy or TSV file): the
 * directory holds exactly what it held before, the old output untouched.
 * SIGKILL, with the unnamed temp file; SIGTERM, with the named one of a file
 * system without O_TMPFILE, which the handler removes.
 */
START_TEST(test_killed_mid_write)
{
	static const char *const names[] = {"o.npy", "o.tsv"};
	char out[700], old[8] = "";
	struct cli_encode_opts o;
	struct sid_error err;
	int status, sig = _i < 2 ? SIGKILL : SIGTERM;
	FILE *f;
	pid_t pid;

	path_in(out, sizeof(out), names[_i % 2]);
	f = fopen(out, "w");
	fputs("old", f);
	fclose(f);
	pid = fork();
	ck_assert_int_ge(pid, 0);
	if (pid == 0) { /* N rows make 12 KB of output: killed at 4 KB */
		sid__fsutil_no_tmpfile = sig != SIGKILL;
		opts_init(&o, out, 2, 10);
		kill_mid_write(4096, sig);
		_exit(cli_encode_run(&o, stdout, &err) == CLI_EXIT_OK ? 0 : 10);
	}
	ck_assert_int_eq(waitpid(pid, &status, 0), pid);
	ck_assert_msg(WIFSIGNALED(status) && WTERMSIG(status) == sig,
		      "%s: the run was not killed mid-write (status 0x%x)", out, status);
	ck_assert_int_eq(count_files(), 3); /* model, input, the old output */
	f = fopen(out, "r");
	ck_assert_ptr_nonnull(f);
	ck_assert_ptr_nonnull(fgets(old, sizeof(old), f));
	fclose(f);
	ck_assert_str_eq(old, "old");
}
END_TEST

/*
 * The largest --batch and --top-k on a small input under a 512 MiB data
 * limit: the batch buffers are sized for the rows there are, not for a
 * million rows (with 15 alternatives that is about 800 MiB: "out of memory
 * for batches of 1048576 rows").  The limit leaves room for OpenBLAS's own
 * buffers, which it waits for forever when it cannot get them.
 */
#if defined(__SANITIZE_ADDRESS__) || defined(__SANITIZE_THREAD__)
#define UNDER_SANITIZER 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer) || __has_feature(thread_sanitizer)
#define UNDER_SANITIZER 1
#endif
#endif

START_TEST(test_huge_batch_small_input)
{
	struct cli_encode_opts o;
	struct sid_error err;
	struct rlimit rl = {512u << 20, 512u << 20};
	char out[700];
	int status;
	pid_t pid;

	path_in(out, sizeof(out), "o.npy");
	pid = fork();
	ck_assert_int_ge(pid, 0);
	if (pid == 0) {
#ifndef UNDER_SANITIZER /* ASan and TSan map terabytes of shadow: the plain build checks it */
		setrlimit(RLIMIT_DATA, &rl);
#else
		(void)rl;
#endif
		opts_init(&o, out, 1, CLI_BATCH_MAX);
		o.top_k = SID_TOPK_MAX;
		_exit(cli_encode_run(&o, stdout, &err));
	}
	ck_assert_int_eq(waitpid(pid, &status, 0), pid);
	ck_assert_msg(WIFEXITED(status) && WEXITSTATUS(status) == CLI_EXIT_OK, "status 0x%x",
		      status);
	ck_assert_int_eq(count_files(), 3);
}
END_TEST

/* The input truncated while it is read (by the first write of the output):
 * the SIGBUS of the rows not read yet is reported naming the input, exit 1,
 * no crash, even where the parent left SIGBUS ignored (_i 1) or blocked
 * (_i 2). */
START_TEST(test_input_truncated_while_read)
{
	struct cli_encode_opts o;
	struct sid_error err;
	char errpath[700], want[800];
	int status, fd;
	pid_t pid;

	snprintf(errpath, sizeof(errpath), "%s/stderr", dir);
	pid = fork();
	ck_assert_int_ge(pid, 0);
	if (pid == 0) {
		fd = open(errpath, O_WRONLY | O_CREAT | O_TRUNC, 0600);
		if (fd < 0 || dup2(fd, STDERR_FILENO) < 0)
			_exit(98);
		close(fd);
		/* 1: a parent that left SIGBUS ignored, which does not hold back
		 * a fault (the kernel killed by it, without a word) */
		if (_i == 1)
			signal(SIGBUS, SIG_IGN);
		if (_i == 2) { /* or blocked: the kernel takes the handler away */
			sigset_t bus;
			sigemptyset(&bus);
			sigaddset(&bus, SIGBUS);
			sigprocmask(SIG_BLOCK, &bus, NULL);
		}
		fd = open(input_path, O_WRONLY);
		if (fd < 0) /* no truncation: the exit status would not prove a thing */
			_exit(99);
		opts_init(&o, "-", 1, 10);
		_exit(cli_encode_run(&o, truncating_stream(&fd), &err));
	}
	ck_assert_int_eq(waitpid(pid, &status, 0), pid);
	ck_assert_msg(WIFEXITED(status) && WEXITSTATUS(status) == CLI_EXIT_IO, "status 0x%x",
		      status);
	snprintf(want, sizeof(want),
		 "semid: %s: the file shrank or failed while being read (SIGBUS); stopped\n",
		 input_path);
	check_file_has(errpath, want);
}
END_TEST

int main(void)
{
	Suite *s = suite_create("encode_cmd");
	TCase *tc = tcase_create("encode_cmd");

	tcase_add_checked_fixture(tc, setup, teardown);
	tcase_set_timeout(tc, 120);
	tcase_add_test(tc, test_npy_any_threads_batch);
	tcase_add_test(tc, test_default_threads_follow_usable_cpus);
	tcase_add_test(tc, test_tsv_matches);
	tcase_add_test(tc, test_one_job_starts_no_thread);
	tcase_add_test(tc, test_top_k_columns);
	tcase_add_test(tc, test_nonfinite_leaves_nothing);
	tcase_add_test(tc, test_overflow_leaves_nothing);
	tcase_add_test(tc, test_bad_tower_and_columns);
	tcase_add_loop_test(tc, test_killed_mid_write, 0, 4);
	tcase_add_test(tc, test_huge_batch_small_input);
	tcase_add_loop_test(tc, test_input_truncated_while_read, 0, 3);
	suite_add_tcase(s, tc);
	return check_run(s);
}
