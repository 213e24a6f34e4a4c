/*
 * check_cli.c - unit tests for the pieces of bin/semid that do not need a
 * process: encode option parsing (cli_encode_parse), the progress line
 * (cli_progress_format), the pace of a capped copy, the signals an open
 * output handles, and a device output's failed write.  The end-to-end behaviour is in test_cli.py.
 */
#include <check.h>
#include "check_main.h"
#include <signal.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "../../cli/cli.h" /* tests build with -Icore -Itests only */

static int parse(struct cli_encode_opts *o, struct sid_error *err, int argc, ...)
{
	char *argv[32];
	va_list ap;
	int i;

	va_start(ap, argc);
	for (i = 0; i < argc; i++)
		argv[i] = va_arg(ap, char *);
	va_end(ap);
	sid_error_clear(err);
	return cli_encode_parse(argc, argv, o, err);
}

START_TEST(test_parse_defaults_and_forms)
{
	struct cli_encode_opts o;
	struct sid_error err;

	ck_assert_int_eq(parse(&o, &err, 6, "--model", "m.st", "--input", "x.npy", "--output", "-"),
			 0);
	ck_assert_str_eq(o.model, "m.st");
	ck_assert_str_eq(o.input, "x.npy");
	ck_assert_str_eq(o.output, "-");
	ck_assert_str_eq(o.tower, "item");
	ck_assert_uint_eq(o.batch, CLI_BATCH_DEFAULT);
	ck_assert_int_eq(o.threads, 0);
	ck_assert_int_eq(o.top_k, 1);
	ck_assert_int_eq(o.format, SID_FORMAT_DASH);
	ck_assert_int_eq(o.progress, CLI_PROGRESS_AUTO);

	ck_assert_int_eq(parse(&o, &err, 13, "-m", "a", "-i", "b", "-o", "c.npy", "--tower=user",
			       "-b", "7", "--threads=3", "-k", "16", "--no-progress"),
			 0);
	ck_assert_str_eq(o.model, "a");
	ck_assert_str_eq(o.tower, "user");
	ck_assert_uint_eq(o.batch, 7);
	ck_assert_int_eq(o.threads, 3);
	ck_assert_int_eq(o.top_k, 16);
	ck_assert_int_eq(o.progress, CLI_PROGRESS_NEVER);
	ck_assert_int_eq(parse(&o, &err, 8, "-m", "a", "-i", "b", "-o", "-", "--format", "tokens"),
			 0);
	ck_assert_int_eq(o.format, SID_FORMAT_TOKENS);
	/* a short option's value attached, as getopt (and semid registry) take it */
	ck_assert_int_eq(parse(&o, &err, 8, "-ma.st", "-ib.npy", "-oc.tsv", "-j4", "-b64", "-k3",
			       "-ftokens", "-tuser"),
			 0);
	ck_assert_str_eq(o.model, "a.st");
	ck_assert_str_eq(o.input, "b.npy");
	ck_assert_str_eq(o.output, "c.tsv");
	ck_assert_int_eq(o.threads, 4);
	ck_assert_uint_eq(o.batch, 64);
	ck_assert_int_eq(o.top_k, 3);
	ck_assert_int_eq(o.format, SID_FORMAT_TOKENS);
	ck_assert_str_eq(o.tower, "user");
	/* a later option wins */
	ck_assert_int_eq(parse(&o, &err, 9, "-m", "a", "-i", "b", "-o", "-", "--no-progress",
			       "--progress", "--batch=1048576"),
			 0);
	ck_assert_int_eq(o.progress, CLI_PROGRESS_ALWAYS);
	ck_assert_uint_eq(o.batch, 1048576);
	/* help ends parsing, required options or not; an earlier bad option wins */
	ck_assert_int_eq(parse(&o, &err, 1, "--help"), 1);
	ck_assert_int_eq(parse(&o, &err, 3, "-m", "a", "-h"), 1);
	ck_assert_int_eq(parse(&o, &err, 2, "--bogus", "-h"), SID_EINVAL);
}
END_TEST

static void expect_err(const char *needle, int argc, char **argv)
{
	struct cli_encode_opts o;
	struct sid_error err;

	sid_error_clear(&err);
	ck_assert_int_eq(cli_encode_parse(argc, argv, &o, &err), SID_EINVAL);
	ck_assert_msg(strstr(err.msg, needle) != NULL, "'%s' lacks '%s'", err.msg, needle);
}

#define EXPECT_ERR(needle, ...)                                                                    \
	do {                                                                                       \
		char *v_[] = {__VA_ARGS__};                                                        \
		expect_err(needle, (int)(sizeof(v_) / sizeof(v_[0])), v_);                         \
	} while (0)

START_TEST(test_parse_errors)
{
	EXPECT_ERR("--model is required", "-i", "x", "-o", "-");
	EXPECT_ERR("--input is required", "-m", "x", "-o", "-");
	EXPECT_ERR("--output is required", "-m", "x", "-i", "x");
	EXPECT_ERR("--output is empty", "-m", "x", "-i", "x", "-o", "");
	EXPECT_ERR("--tower must be 'item' or 'user', got 'movie'", "-m", "x", "-i", "x", "-o", "-",
		   "-t", "movie");
	EXPECT_ERR("--batch wants an integer from 1 to 1048576, got '0'", "--batch", "0");
	EXPECT_ERR("got '1048577'", "--batch", "1048577");
	EXPECT_ERR("got '-5'", "--batch", "-5");
	EXPECT_ERR("got '+5'", "--batch", "+5");
	EXPECT_ERR("got '5k'", "--batch", "5k");
	EXPECT_ERR("got ''", "--batch=");
	EXPECT_ERR("got '99999999999999999999999'", "-b", "99999999999999999999999");
	EXPECT_ERR("--threads wants an integer from 0 to 256", "-j", "257");
	EXPECT_ERR("--top-k wants an integer from 1 to 16", "-k", "0");
	EXPECT_ERR("--format must be 'dash' or 'tokens', got 'csv'", "-f", "csv");
	/* a .npy holds integer codes: a format for sid text would be ignored */
	EXPECT_ERR("--format applies to TSV output; c.npy is a .npy of integer codes", "-m", "a",
		   "-i", "b", "-o", "c.npy", "--format", "tokens");
	EXPECT_ERR("unknown option '--bogus'", "--bogus=1");
	EXPECT_ERR("unknown option '-x'", "-x");
	EXPECT_ERR("unknown option '-xj4'", "-xj4");
	EXPECT_ERR("--threads wants an integer from 0 to 256, got 'x'", "-jx");
	EXPECT_ERR("unknown option '--mod'", "--mod", "a"); /* no prefix matching */
	/* an option without a value given one is named as such, not unknown */
	EXPECT_ERR("--progress takes no value, got '--progress=1'", "--progress=1");
	EXPECT_ERR("--no-progress takes no value, got '--no-progress=yes'", "--no-progress=yes");
	EXPECT_ERR("unexpected argument 'x.npy'", "x.npy");
	EXPECT_ERR("unexpected argument '-'", "-");
	EXPECT_ERR("--model needs a value", "--model");
	EXPECT_ERR("-o needs a value", "-m", "a", "-o");
	/* a value forgotten before the next option is not a file named "-m" */
	EXPECT_ERR("-o needs a value, got the option '-m'", "-i", "x", "-o", "-m", "a");
	EXPECT_ERR("--model needs a value, got the option '--input'", "--model", "--input", "x",
		   "-o", "-");
	/* empty paths are named as such, not as a file "" not found */
	EXPECT_ERR("--model is empty", "-m", "", "-i", "x", "-o", "-");
	EXPECT_ERR("--input is empty", "-m", "a", "--input=", "-o", "-");
	EXPECT_ERR("--input cannot be stdin", "-m", "a", "-i", "-", "-o", "-");
}
END_TEST

START_TEST(test_progress_format)
{
	char buf[256];
	int n;

	n = cli_progress_format(buf, sizeof(buf), 450000, 1000000, 2.0);
	ck_assert_int_eq(n, (int)strlen(buf));
	/* 450000 rows in 2 s: 225k/s; 550000 left: 2.44 s -> 0:02 */
	ck_assert_str_eq(buf,
			 "[##########--------------]  45.0%  450000/1000000 rows  225.0k rows/s  "
			 "ETA 0:02");
	cli_progress_format(buf, sizeof(buf), 0, 10, 0.0);
	ck_assert_str_eq(buf, "[------------------------]   0.0%  0/10 rows  0 rows/s  ETA ?");
	cli_progress_format(buf, sizeof(buf), 10, 10, 3725.0);
	ck_assert_str_eq(buf,
			 "[########################] 100.0%  10/10 rows  0 rows/s  in 1:02:05");
	cli_progress_format(buf, sizeof(buf), 3000000, 9000000, 1.0);
	ck_assert_str_eq(buf,
			 "[########----------------]  33.3%  3000000/9000000 rows  3.00M rows/s  "
			 "ETA 0:02");
	cli_progress_format(buf, sizeof(buf), 0, 0, 0.5);
	ck_assert_str_eq(buf, "[########################] 100.0%  0/0 rows  0 rows/s  in 0:01");
	/* truncation is safe and reports the full length */
	n = cli_progress_format(buf, 8, 1, 2, 1.0);
	ck_assert_int_gt(n, 8);
	ck_assert_uint_eq(strlen(buf), 7);
}
END_TEST

/* The pace of a rate-capped copy (semid registry backup --max-rate). */
START_TEST(test_pace_delay)
{
	ck_assert_double_eq(cli_pace_delay(100, 0.0, 0.0), 0.0); /* no cap */
	ck_assert_double_eq(cli_pace_delay(100, -1.0, 0.0), 0.0);
	/* 100 units at 50 a second are due at 2 s: 1 s early, wait 1 s */
	ck_assert_double_eq_tol(cli_pace_delay(100, 50.0, 1.0), 1.0, 1e-12);
	ck_assert_double_eq(cli_pace_delay(100, 50.0, 2.0), 0.0);
	ck_assert_double_eq(cli_pace_delay(100, 50.0, 5.0), 0.0); /* behind: no wait */
	ck_assert_double_eq_tol(cli_pace_delay(1u << 30, 1048576.0, 0.5), 1023.5, 1e-9);
}
END_TEST

START_TEST(test_progress_quiet_when_off)
{
	struct cli_progress p;
	char *text = NULL;
	size_t len = 0;
	FILE *fp = open_memstream(&text, &len);

	ck_assert_ptr_nonnull(fp);
	cli_progress_begin(&p, 0, 100, fp);
	cli_progress_update(&p, 50);
	cli_progress_end(&p, 100);
	fflush(fp);
	ck_assert_uint_eq(len, 0);
	cli_progress_begin(&p, 1, 100, fp);
	cli_progress_update(&p, 50);
	cli_progress_update(&p, 60); /* within 0.1 s of the last draw: skipped */
	cli_progress_end(&p, 100);
	fclose(fp);
	ck_assert_ptr_nonnull(strstr(text, "\r[############------------]  50.0%  50/100 rows"));
	ck_assert_ptr_null(strstr(text, "60/100"));
	ck_assert_ptr_nonnull(strstr(text, "100/100 rows"));
	ck_assert_int_eq(text[len - 1], '\n');
	free(text);
}
END_TEST

/* While an output file is open, SIGINT/SIGTERM/SIGHUP remove its temp
 * file; a signal the caller ignores (SIGHUP under nohup) stays ignored, and
 * every disposition is as it was once the output is closed. */
START_TEST(test_output_keeps_ignored_signals)
{
	char dir[] = "/tmp/check_cli.XXXXXX", path[64];
	struct cli_output w;
	struct sigaction sa, hup, term, term0;
	struct sid_error err;

	ck_assert_ptr_nonnull(mkdtemp(dir));
	snprintf(path, sizeof(path), "%s/out.txt", dir);
	memset(&sa, 0, sizeof(sa));
	sa.sa_handler = SIG_IGN;
	ck_assert_int_eq(sigaction(SIGHUP, &sa, NULL), 0);
	ck_assert_int_eq(sigaction(SIGTERM, NULL, &term0), 0);
	ck_assert_int_eq(cli_output_open_named(&w, path, NULL, &err), 0);
	ck_assert_int_eq(sigaction(SIGHUP, NULL, &hup), 0);
	ck_assert_int_eq(sigaction(SIGTERM, NULL, &term), 0);
	ck_assert(hup.sa_handler == SIG_IGN);
	ck_assert(term.sa_handler != term0.sa_handler && term.sa_handler != SIG_IGN);
	cli_output_abort(&w);
	ck_assert_int_eq(sigaction(SIGHUP, NULL, &hup), 0);
	ck_assert_int_eq(sigaction(SIGTERM, NULL, &term), 0);
	ck_assert(hup.sa_handler == SIG_IGN);
	ck_assert(term.sa_handler == term0.sa_handler);
	sa.sa_handler = SIG_DFL;
	sigaction(SIGHUP, &sa, NULL);
	ck_assert_int_eq(rmdir(dir), 0);
}
END_TEST

/* A write that fails on a device output (/dev/full: ENOSPC) made the
 * whole-lines stream's write hook return -1, which glibc takes for a count
 * of SIZE_MAX: fwrite then copied one byte more than it was given from past
 * the caller's buffer (`semid registry list -o /dev/full` died of SIGSEGV
 * under TSan).  The buffer here ends at an inaccessible page. */
START_TEST(test_device_write_failure_reads_no_further)
{
	long pg = sysconf(_SC_PAGESIZE);
	size_t len = 4 * (size_t)pg;
	char *map = mmap(NULL, len + (size_t)pg, PROT_READ | PROT_WRITE,
			 MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	struct cli_output w;
	struct sid_error err;

	ck_assert_ptr_ne(map, MAP_FAILED);
	ck_assert_int_eq(mprotect(map + len, (size_t)pg, PROT_NONE), 0);
	for (size_t i = 0; i < len; i++)
		map[i] = i % 64 == 63 ? '\n' : 'x';
	ck_assert_int_eq(cli_output_open(&w, "/dev/full", stdout, NULL, &err), 0);
	ck_assert_uint_lt(fwrite(map, 1, len, w.fp), len);
	ck_assert(ferror(w.fp));
	cli_output_abort(&w);
	munmap(map, len + (size_t)pg);
}
END_TEST

int main(void)
{
	Suite *s = suite_create("cli");
	TCase *tc = tcase_create("cli");

	tcase_set_timeout(tc, 30);
	tcase_add_test(tc, test_parse_defaults_and_forms);
	tcase_add_test(tc, test_parse_errors);
	tcase_add_test(tc, test_progress_format);
	tcase_add_test(tc, test_progress_quiet_when_off);
	tcase_add_test(tc, test_pace_delay);
	tcase_add_test(tc, test_output_keeps_ignored_signals);
	tcase_add_test(tc, test_device_write_failure_reads_no_further);
	suite_add_tcase(s, tc);
	return check_run(s);
}
