/* check_config.c - server/config.c: defaults, flags, JSON files, validation. */
#include <check.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "check_main.h"
#include "cpus.h"
#include "one_cpu.h"
#include "../../server/config.h"
#include "../../server/log.h"

static char *write_tmp(const char *text)
{
	static char path[64];
	int fd;
	strcpy(path, "/tmp/check_config_XXXXXX");
	fd = mkstemp(path);
	ck_assert_int_ge(fd, 0);
	ck_assert_int_eq(write(fd, text, strlen(text)), (int)strlen(text));
	close(fd);
	return path;
}

/* A config file of @text is refused with "PATH: @msg". */
static void file_refused(const char *text, const char *msg)
{
	struct srv_config c;
	struct sid_error err;
	char want[300], *path = write_tmp(text);

	srv_config_defaults(&c);
	ck_assert_int_ne(srv_config_load_file(&c, path, &err), 0);
	snprintf(want, sizeof(want), "%s: %s", path, msg);
	ck_assert_str_eq(err.msg, want);
	unlink(path);
}

static int parse(struct srv_config *c, struct sid_error *err, int argc, const char **argv)
{
	srv_config_defaults(c);
	sid_error_clear(err);
	return srv_config_from_args(c, argc, (char **)argv, NULL, NULL, NULL, err);
}

START_TEST(test_defaults)
{
	struct srv_config c;
	srv_config_defaults(&c);
	ck_assert_str_eq(c.listen, "127.0.0.1:8080");
	ck_assert_int_eq(c.max_batch, 256);
	ck_assert_int_eq(c.max_delay_us, 0);
	ck_assert_int_eq(c.http_threads, 2);
	ck_assert_int_eq(c.watch, 1);
	ck_assert_int_eq(c.allow_empty, 0);
	ck_assert_int_ge(c.workers, 1);
	ck_assert_int_eq(c.log_level, SRV_LOG_INFO);
	ck_assert_str_eq(c.admin_token, "");
}
END_TEST

/* workers defaults to the CPUs the process may run on (taskset, a cpuset),
 * not every online CPU of the host: 64 encode threads on 2 allowed CPUs.
 * (Fewer under a CPU quota: sid_cpus_usable, check_cpus.c.) */
START_TEST(test_default_workers_follow_affinity)
{
	struct srv_config c;
	cpu_set_t all;

	srv_config_defaults(&c);
	ck_assert_int_eq(c.workers, sid_cpus_usable(NULL) > 64 ? 64 : sid_cpus_usable(NULL));
	one_cpu_pin(&all);
	ck_assert_int_le(c.workers, CPU_COUNT(&all));
	srv_config_defaults(&c);
	one_cpu_unpin(&all);
	ck_assert_int_eq(c.workers, 1);
}
END_TEST

/* The listening line's workers_from: how the default was chosen, else
 * the flag or file that set workers. */
START_TEST(test_workers_from)
{
	struct srv_config c;
	struct sid_error err;
	struct sid_cpus cpus;
	char want[640];
	char *path = write_tmp("{\"workers\": 3}");
	const char *flag[] = {"s", "--model", "m", "--workers", "5"};
	const char *file[] = {"s", "--model", "m", "--config", path};

	sid_cpus_usable(&cpus);
	sid_cpus_why(&cpus, want, sizeof(want));
	srv_config_defaults(&c);
	ck_assert_str_eq(srv_config_workers_from(&c), want);
	ck_assert_ptr_nonnull(strstr(want, "affinity"));
	ck_assert_int_eq(parse(&c, &err, 5, flag), 0);
	ck_assert_str_eq(srv_config_workers_from(&c), "--workers");
	ck_assert_int_eq(parse(&c, &err, 5, file), 0);
	ck_assert_int_eq(c.workers, 3);
	ck_assert_str_eq(srv_config_workers_from(&c), path);
	unlink(path);
}
END_TEST

/* workers 0, from a file or a flag, is the default count and says why as
 * the default does; a later flag still overrides a file's 0. */
START_TEST(test_workers_zero_is_the_default)
{
	struct srv_config c;
	struct sid_error err;
	struct sid_cpus cpus;
	char want[640];
	int ncpu = sid_cpus_usable(&cpus);
	char *path = write_tmp("{\"workers\": 0}");
	const char *file[] = {"s", "--model", "m", "--config", path};
	const char *flag[] = {"s", "--model", "m", "--workers=0"};
	const char *both[] = {"s", "--model", "m", "--config", path, "--workers", "3"};

	sid_cpus_why(&cpus, want, sizeof(want));
	ck_assert_int_eq(parse(&c, &err, 5, file), 0);
	ck_assert_int_eq(c.workers, ncpu > 64 ? 64 : ncpu);
	ck_assert_str_eq(srv_config_workers_from(&c), want);
	ck_assert_int_eq(parse(&c, &err, 4, flag), 0);
	ck_assert_int_eq(c.workers, ncpu > 64 ? 64 : ncpu);
	ck_assert_str_eq(srv_config_workers_from(&c), want);
	ck_assert_int_eq(parse(&c, &err, 7, both), 0);
	ck_assert_int_eq(c.workers, 3);
	ck_assert_str_eq(srv_config_workers_from(&c), "--workers");
	unlink(path);
}
END_TEST

START_TEST(test_flags)
{
	struct srv_config c;
	struct sid_error err;
	const char *argv[] = {"semid-server",	"--model", "m.st",	    "--max-batch=64",
			      "--max-delay-us", "250",	   "--allow-empty", "--watch=false",
			      "--log-level",	"debug",   "--admin-token", "s3cret"};
	ck_assert_int_eq(parse(&c, &err, 12, argv), 0);
	ck_assert_str_eq(c.model, "m.st");
	ck_assert_int_eq(c.max_batch, 64);
	ck_assert_int_eq(c.max_delay_us, 250);
	ck_assert_int_eq(c.allow_empty, 1);
	ck_assert_int_eq(c.watch, 0);
	ck_assert_int_eq(c.log_level, SRV_LOG_DEBUG);
	ck_assert_str_eq(c.admin_token, "s3cret");
}
END_TEST

START_TEST(test_flag_errors)
{
	struct srv_config c;
	struct sid_error err;
	const char *a1[] = {"s", "--model", "m", "--max-batch", "lots"};
	const char *a2[] = {"s", "--model", "m", "--workers", "257"};
	const char *a3[] = {"s", "--model", "m", "--frobnicate", "1"};
	const char *a4[] = {"s", "--model", "m", "--allow-empty=maybe"};
	const char *a5[] = {"s", "--model"};
	const char *a6[] = {"s", "--max-batch", "8"};
	const char *a7[] = {"s", "--model", "m", "--log-level", "loud"};
	const char *a8[] = {"s", "--model", "m", "--listen", "localhost"};

	ck_assert_int_ne(parse(&c, &err, 5, a1), 0);
	ck_assert_str_eq(err.msg, "--max-batch: max_batch must be an integer in [1, 65536], not "
				  "\"lots\"");
	ck_assert_int_ne(parse(&c, &err, 5, a2), 0);
	ck_assert_str_eq(err.msg, "--workers: workers = 257 is out of range [0, 256]");
	ck_assert_int_ne(parse(&c, &err, 5, a3), 0);
	ck_assert_str_eq(err.msg, "unknown flag \"--frobnicate\"");
	/* a misspelt flag is told its nearest one, when one alone is near; a
	 * boolean flag's value as the next argument (the flag alone meant true)
	 * is said to belong after '=' */
	{
		const char *cases[][3] = {
		    {"--max-bach=8", "1",
		     "unknown flag \"--max-bach\" (did you mean --max-batch?)"},
		    {"--workres", "1", "unknown flag \"--workres\" (did you mean --workers?)"},
		    {"--lsten", "1", "unknown flag \"--lsten\" (did you mean --listen?)"},
		    {"--registry-timeout", "1",
		     "unknown flag \"--registry-timeout\" (did you mean --registry-timeout-ms?)"},
		    {"--max", "1", "unknown flag \"--max\""}, /* begins four keys */
		    {"--x", "1", "unknown flag \"--x\""},
		    {"--watch", "false",
		     "unexpected argument \"false\" after --watch: a boolean flag takes its value "
		     "after '=' (--watch=false)"},
		    {"--allow-empty", "yes",
		     "unexpected argument \"yes\" after --allow-empty: a boolean flag takes its "
		     "value after '=' (--allow-empty=yes)"},
		    {"--watch", "foo", "unexpected argument \"foo\" (flags start with --)"},
		    /* a flag that takes no value, given one: it was an "unknown
		     * flag \"--check-config\"" */
		    {"--check-config=true", "--watch",
		     "--check-config takes no value, not --check-config=true"},
		    {"--help=1", "--watch", "--help takes no value, not --help=1"},
		    {"--version=", "--watch", "--version takes no value, not --version="},
		    {"--check-configs=1", "--watch", "unknown flag \"--check-configs\""},
		};
		for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
			const char *a[] = {"s", "--model", "m", cases[i][0], cases[i][1]};
			ck_assert_int_ne(parse(&c, &err, 5, a), 0);
			ck_assert_str_eq(err.msg, cases[i][2]);
		}
	}
	ck_assert_int_ne(parse(&c, &err, 4, a4), 0);
	ck_assert_ptr_nonnull(strstr(err.msg, "allow_empty must be true or false"));
	ck_assert_int_ne(parse(&c, &err, 2, a5), 0);
	ck_assert_str_eq(err.msg, "--model needs a value");
	ck_assert_int_ne(parse(&c, &err, 3, a6), 0);
	ck_assert_ptr_nonnull(strstr(err.msg, "no model"));
	ck_assert_int_ne(parse(&c, &err, 5, a7), 0);
	ck_assert_ptr_nonnull(strstr(err.msg, "log_level must be debug, info, warn or error"));
	ck_assert_int_ne(parse(&c, &err, 5, a8), 0);
	ck_assert_ptr_nonnull(strstr(err.msg, "HOST:PORT"));
	/* numbers are digits with an optional '-', nothing strtol also skips */
	{
		const char *bad[] = {" 5", "+5", "5 ", "", "-", "0x10", "1e3"};
		for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
			const char *a[] = {"s", "--model", "m", "--workers", bad[i]};
			char want[80];
			ck_assert_int_ne(parse(&c, &err, 5, a), 0);
			snprintf(want, sizeof(want),
				 "--workers: workers must be an integer in [0, 256], not \"%s\"",
				 bad[i]);
			ck_assert_str_eq(err.msg, want);
		}
		const char *neg[] = {"s", "--model", "m", "--workers", "-3"};
		ck_assert_int_ne(parse(&c, &err, 5, neg), 0);
		ck_assert_str_eq(err.msg, "--workers: workers = -3 is out of range [0, 256]");
		/* digits past a long long are out of range, not "not an integer" */
		const char *huge[] = {"s", "--model", "m", "--workers", "99999999999999999999"};
		ck_assert_int_ne(parse(&c, &err, 5, huge), 0);
		ck_assert_str_eq(err.msg, "--workers: workers = 99999999999999999999 is out of "
					  "range [0, 256]");
	}
	{
		const char *bad[] = {"127.0.0.1: 80", "127.0.0.1:+80", "127.0.0.1:-0", "[::1]"};
		for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
			const char *a[] = {"s", "--model", "m", "--listen", bad[i]};
			ck_assert_int_ne(parse(&c, &err, 5, a), 0);
			ck_assert_msg(strstr(err.msg, "bad port") != NULL, "%s: %s", bad[i],
				      err.msg);
		}
	}
}
END_TEST

START_TEST(test_file_and_override)
{
	struct srv_config c;
	struct sid_error err;
	char *path = write_tmp("{\"model\": \"/srv/a.safetensors\", \"max_batch\": 32, "
			       "\"workers\": 3, \"allow_empty\": true, \"log_level\": \"warn\"}");
	char cfg[80];
	/* The flag comes before --config in argv and still wins. */
	const char *argv[] = {"s", "--max-batch", "8", "--config", cfg};

	snprintf(cfg, sizeof(cfg), "%s", path);
	ck_assert_int_eq(parse(&c, &err, 5, argv), 0);
	ck_assert_str_eq(c.model, "/srv/a.safetensors");
	ck_assert_int_eq(c.max_batch, 8);
	ck_assert_int_eq(c.workers, 3);
	ck_assert_int_eq(c.allow_empty, 1);
	ck_assert_int_eq(c.log_level, SRV_LOG_WARN);
	/* --config twice (config/README.md): the files in the order given, a
	 * key of the later one replacing the earlier one's, flags over both */
	char cfg2[80]; /* write_tmp's buffer is one: path now names this file */
	const char *two[] = {"s", "--config", cfg2, "--max-inputs=200", "--config", cfg};
	const char *back[] = {"s", "--config", cfg, "--config", cfg2};
	snprintf(cfg2, sizeof(cfg2), "%s", write_tmp("{\"max_batch\": 64, \"workers\": 5}"));
	ck_assert_int_eq(parse(&c, &err, 6, two), 0);
	ck_assert_int_eq(c.max_batch, 32);
	ck_assert_int_eq(c.workers, 3);
	ck_assert_int_eq(c.max_inputs, 200);
	ck_assert_str_eq(srv_config_source(&c, "workers"), cfg);
	ck_assert_int_eq(parse(&c, &err, 5, back), 0);
	ck_assert_int_eq(c.max_batch, 64);
	ck_assert_int_eq(c.workers, 5);
	ck_assert_str_eq(c.model, "/srv/a.safetensors");
	ck_assert_str_eq(srv_config_source(&c, "workers"), cfg2);
	unlink(cfg2);
	unlink(cfg);
	/* a relative path is kept as written (config/README.md: from the
	 * working directory, not joined to the file's directory) */
	path = write_tmp("{\"model\": \"models/m.safetensors\", \"registry\": \"r.db\"}");
	srv_config_defaults(&c);
	ck_assert_int_eq(srv_config_load_file(&c, path, &err), 0);
	ck_assert_str_eq(c.model, "models/m.safetensors");
	ck_assert_str_eq(c.registry, "r.db");
	unlink(path);
}
END_TEST

START_TEST(test_file_errors)
{
	struct srv_config c;
	struct sid_error err;
	char *path;
	char want[200];

	srv_config_defaults(&c);
	file_refused("{\"max_batch\": \"big\"}",
		     "max_batch must be an integer in [1, 65536], not \"big\"");

	/* a wrong type says what the key takes and what was written */
	{
		const char *cases[][2] = {
		    {"{\"workers\": 1.5}", "workers must be an integer in [0, 256], not 1.5"},
		    {"{\"workers\": \"10\"}", "workers must be an integer in [0, 256], not \"10\""},
		    {"{\"workers\": null}", "workers must be an integer in [0, 256], not null"},
		    {"{\"max_body_bytes\": true}",
		     "max_body_bytes must be an integer in [64, 17179869184], not true"},
		    {"{\"watch\": \"yes\"}", "watch must be true or false, not \"yes\""},
		    {"{\"model\": 5}", "model must be a string, not 5"},
		    {"{\"log_level\": 1}", "log_level must be debug, info, warn or error, not 1"},
		    {"{\"listen\": [\"0.0.0.0:8080\", \"[::]:8080\", \"127.0.0.1:9090\"]}",
		     "listen must be a string, not "
		     "[\"0.0.0.0:8080\",\"[::]:8080\",\"127.0.0.1:9..."},
		};
		for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++)
			file_refused(cases[i][0], cases[i][1]);
	}

	file_refused("{\"max_batchh\": 3}",
		     "unknown setting \"max_batchh\" (did you mean \"max_batch\"?)");
	/* dashes are for flags only */
	file_refused("{\"max-batch\": 3}",
		     "unknown setting \"max-batch\" (the file spells it \"max_batch\")");
	/* a unit left off; nothing near enough: no guess */
	file_refused(
	    "{\"shutdown_timeout\": 3}",
	    "unknown setting \"shutdown_timeout\" (did you mean \"shutdown_timeout_ms\"?)");
	file_refused("{\"threads\": 3}", "unknown setting \"threads\"");

	path = write_tmp("{\"watch\": 1}");
	ck_assert_int_ne(srv_config_load_file(&c, path, &err), 0);
	ck_assert_ptr_nonnull(strstr(err.msg, "watch must be true or false"));
	unlink(path);

	path = write_tmp("{\"max_batch\": 3,}");
	ck_assert_int_ne(srv_config_load_file(&c, path, &err), 0);
	ck_assert_ptr_nonnull(strstr(err.msg, path)); /* jansson's line:column follows */
	unlink(path);

	/* the usual slips of a hand-edited copy of semid-server.json, whose
	 * jansson message points past them (the line after a trailing comma),
	 * are said */
	{
		static const char *const slips[][2] = {
		    {"{\n  \"max_batch\": 3,\n  \"workers\": 2,\n}\n",
		     ":4:1: string or '}' expected near '}' (JSON allows no comma after the last "
		     "member)"},
		    {"{\"listen\": \"127.0.0.1:9\"\n \"workers\": 2}",
		     ":2:10: '}' expected near '\"workers\"' (a comma missing before this "
		     "member?)"},
		    {"{workers: 2}",
		     ":1:8: string or '}' expected near 'workers' (a key is a string in double "
		     "quotes)"},
		    {"{\"workers\": 2} x", ":1:16: end of file expected near 'x'"},
		};
		for (size_t i = 0; i < sizeof(slips) / sizeof(slips[0]); i++) {
			path = write_tmp(slips[i][0]);
			ck_assert_int_ne(srv_config_load_file(&c, path, &err), 0);
			snprintf(want, sizeof(want), "%s%s", path, slips[i][1]);
			ck_assert_str_eq(err.msg, want);
			unlink(path);
		}
	}

	path = write_tmp("[1]");
	ck_assert_int_ne(srv_config_load_file(&c, path, &err), 0);
	ck_assert_ptr_nonnull(strstr(err.msg, "must be a JSON object"));
	unlink(path);

	/* a directory (a ConfigMap's mount point given for the file in it) is
	 * said to be one, not "'[' or '{' expected near end of file" */
	{
		char dir[] = "/tmp/check_config_dir_XXXXXX";
		ck_assert_ptr_nonnull(mkdtemp(dir));
		ck_assert_int_ne(srv_config_load_file(&c, dir, &err), 0);
		snprintf(want, sizeof(want),
			 "config file: %s is a directory; give the JSON file in it", dir);
		ck_assert_str_eq(err.msg, want);
		rmdir(dir);
	}

	/* an empty file (a write that failed, an empty ConfigMap key) is said to
	 * be empty, not "'[' or '{' expected near end of file" */
	path = write_tmp("");
	ck_assert_int_ne(srv_config_load_file(&c, path, &err), 0);
	snprintf(want, sizeof(want), "config file: %s is empty (a config of no settings is {})",
		 path);
	ck_assert_str_eq(err.msg, want);
	unlink(path);

	/* a read error is one, not the end of the file (/proc/self/mem reads
	 * EIO at offset 0, as a failing disk or network mount would) */
	ck_assert_int_ne(srv_config_load_file(&c, "/proc/self/mem", &err), 0);
	ck_assert_str_eq(err.msg, "config file: cannot read /proc/self/mem: Input/output error");

	ck_assert_int_ne(srv_config_load_file(&c, "/nonexistent/semid.json", &err), 0);
	/* no made-up position (jansson's -1:-1) when the file cannot be opened */
	ck_assert_str_eq(err.msg, "config file: unable to open /nonexistent/semid.json: No such "
				  "file or directory");
}
END_TEST

START_TEST(test_validate)
{
	struct srv_config c;
	struct sid_error err;
	srv_config_defaults(&c);
	strcpy(c.model, "m");
	ck_assert_int_eq(srv_config_validate(&c, &err), 0);
	c.max_inputs = 100;
	c.queue_rows = 99;
	ck_assert_int_ne(srv_config_validate(&c, &err), 0);
	ck_assert_ptr_nonnull(strstr(err.msg, "queue_rows (99) must be at least max_inputs (100)"));
	c.queue_rows = 100;
	strcpy(c.listen, "127.0.0.1:70000");
	ck_assert_int_ne(srv_config_validate(&c, &err), 0);
	ck_assert_ptr_nonnull(strstr(err.msg, "bad port"));
	strcpy(c.listen, "127.0.0.1:0");
	/* an admin token no Authorization header can carry refuses to start */
	strcpy(c.admin_token, "a b");
	ck_assert_int_eq(srv_config_validate(&c, &err), 0);
	strcpy(c.admin_token, "tok\n");
	ck_assert_int_ne(srv_config_validate(&c, &err), 0);
	ck_assert_ptr_nonnull(
	    strstr(err.msg, "admin_token has a control character (at byte offset 3)"));
	strcpy(c.admin_token, "a\tb");
	ck_assert_int_ne(srv_config_validate(&c, &err), 0);
	strcpy(c.admin_token, " tok");
	ck_assert_int_ne(srv_config_validate(&c, &err), 0);
	ck_assert_ptr_nonnull(strstr(err.msg, "admin_token starts or ends with a space"));
	strcpy(c.admin_token, "tok ");
	ck_assert_int_ne(srv_config_validate(&c, &err), 0);
}
END_TEST

/* A UTF-8 byte order mark (Windows editors write one) is skipped, as RFC 8259
 * allows; jansson alone called it an invisible bad token.  A file over the
 * cap (the model given as the config, a log) is refused as too large. */
START_TEST(test_file_bom_and_size)
{
	struct srv_config c;
	struct sid_error err;
	char want[200], *path, *big;
	FILE *f;

	srv_config_defaults(&c);
	path = write_tmp("\xef\xbb\xbf{\"workers\": 3}");
	ck_assert_msg(srv_config_load_file(&c, path, &err) == 0, "%s", err.msg);
	ck_assert_int_eq(c.workers, 3);
	unlink(path);
	/* a mark anywhere else is still an error, with its position */
	path = write_tmp("{\"workers\": 3}\n\xef\xbb\xbf");
	ck_assert_int_ne(srv_config_load_file(&c, path, &err), 0);
	snprintf(want, sizeof(want), "%s:2:", path);
	ck_assert_ptr_eq(strstr(err.msg, want), err.msg);
	unlink(path);

	/* 1 MiB of spaces around an object: over the cap by one byte */
	path = write_tmp("");
	f = fopen(path, "w");
	ck_assert_ptr_nonnull(f);
	big = malloc((1 << 20) - 1);
	ck_assert_ptr_nonnull(big);
	memset(big, ' ', (1 << 20) - 1);
	fputs("{}", f);
	ck_assert_int_eq(fwrite(big, 1, (1 << 20) - 1, f), (1 << 20) - 1);
	ck_assert_int_eq(fclose(f), 0);
	free(big);
	ck_assert_int_ne(srv_config_load_file(&c, path, &err), 0);
	snprintf(want, sizeof(want),
		 "config file: %s is over 1048576 bytes, so not a config file (one with every "
		 "key is a few KiB)",
		 path);
	ck_assert_str_eq(err.msg, want);
	/* one byte less is a config */
	ck_assert_int_eq(truncate(path, 1 << 20), 0);
	ck_assert_msg(srv_config_load_file(&c, path, &err) == 0, "%s", err.msg);
	unlink(path);
}
END_TEST

/* A value refused by its own check names where it came from: the flag, the
 * file, or the environment variable, which no config file or flag shows (a
 * Secret made from a file with a final newline). */
START_TEST(test_check_names_source)
{
	struct srv_config c;
	struct sid_error err;
	char want[300], *path;
	const char *a1[] = {"s", "--model", "m", "--listen=localhost"};
	const char *a2[] = {"s", "--model", "m", "--admin-token", " tok"};
	const char *a3[] = {"s", "--model", "m"};
	const char *a4[] = {"s", "--model", "m", "--admin-token", "tok"};

	ck_assert_int_ne(parse(&c, &err, 4, a1), 0);
	ck_assert_str_eq(err.msg, "--listen: listen \"localhost\" must be HOST:PORT "
				  "(127.0.0.1:8080, [::1]:8080)");
	/* brackets with no host in them: getaddrinfo took it for every address */
	{
		const char *a[] = {"s", "--model", "m", "--listen", "[]:8080"};
		ck_assert_int_ne(parse(&c, &err, 5, a), 0);
		ck_assert_str_eq(err.msg, "--listen: listen \"[]:8080\" must be HOST:PORT "
					  "(127.0.0.1:8080, [::1]:8080)");
	}
	/* a unix socket is said not to be supported, not "bad port" */
	{
		const char *u[] = {"unix:/run/semid.sock", "/run/semid.sock"};
		for (size_t i = 0; i < 2; i++) {
			const char *a[] = {"s", "--model", "m", "--listen", u[i]};
			char w[200];
			ck_assert_int_ne(parse(&c, &err, 5, a), 0);
			snprintf(w, sizeof(w),
				 "--listen: listen \"%s\": a unix socket is not supported; give "
				 "HOST:PORT",
				 u[i]);
			ck_assert_str_eq(err.msg, w);
		}
	}
	ck_assert_int_ne(parse(&c, &err, 5, a2), 0);
	ck_assert_str_eq(err.msg, "--admin-token: admin_token starts or ends with a space, which "
				  "HTTP strips from the Authorization header: no request could "
				  "match it");

	path = write_tmp("{\"listen\": \"127.0.0.1:99999\"}");
	srv_config_defaults(&c);
	ck_assert_int_ne(srv_config_load_file(&c, path, &err), 0);
	snprintf(want, sizeof(want),
		 "%s: listen \"127.0.0.1:99999\": bad port (digits 0..65535 after the last ':')",
		 path);
	ck_assert_str_eq(err.msg, want);
	unlink(path);

	/* model and registry: a control character (the newline that ends the
	 * file a Secret was made from) is refused, not made a file name */
	{
		const char *a5[] = {"s", "--model", "m",
				    "--registry=postgresql://h/db?sslmode=require\n"};
		ck_assert_int_ne(parse(&c, &err, 4, a5), 0);
		ck_assert_str_eq(err.msg,
				 "--registry: registry has a control character (0x0a at "
				 "byte offset 33); a value read from a file that ends in a "
				 "newline?");
	}
	file_refused(
	    "{\"model\": \"/srv/m.safetensors\\r\"}",
	    "model has a control character (0x0d at byte offset 18); a value read from a file "
	    "that ends in a newline?");
	srv_config_defaults(&c);
	strcpy(c.model, "m");
	strcpy(c.registry, "r\tdb");
	ck_assert_int_ne(srv_config_validate(&c, &err), 0);
	ck_assert_str_eq(err.msg,
			 "registry has a control character (0x09 at byte offset 1); a value "
			 "read from a file that ends in a newline?");

	setenv("SEMID_ADMIN_TOKEN", "tok\n", 1);
	ck_assert_int_ne(parse(&c, &err, 3, a3), 0);
	ck_assert_str_eq(err.msg, "SEMID_ADMIN_TOKEN: admin_token has a control character "
				  "(at byte offset 3), which no Authorization header can carry");
	/* a flag's token wins, and the variable is then not looked at */
	ck_assert_int_eq(parse(&c, &err, 5, a4), 0);
	ck_assert_str_eq(c.admin_token, "tok");
	setenv("SEMID_ADMIN_TOKEN", "tok2", 1);
	ck_assert_int_eq(parse(&c, &err, 3, a3), 0);
	ck_assert_str_eq(c.admin_token, "tok2");
	/* "" in the file (the example config's) is no token: the variable's
	 * is used */
	path = write_tmp("{\"model\": \"m\", \"admin_token\": \"\"}");
	{
		const char *a5[] = {"s", "--config", path};
		ck_assert_int_eq(parse(&c, &err, 3, a5), 0);
		ck_assert_str_eq(c.admin_token, "tok2");
	}
	unlink(path);
	unsetenv("SEMID_ADMIN_TOKEN");
}
END_TEST

/* Keys that disagree are named with the file or flag that set each (one
 * left at its default is not named), so the operator knows which to change. */
START_TEST(test_disagreeing_keys_name_their_sources)
{
	struct srv_config c;
	struct sid_error err;
	char want[400], cfg[80];
	char *path = write_tmp("{\"model\": \"m\", \"queue_rows\": 100}");
	const char *a1[] = {"s", "--config", cfg, "--max-inputs=200"};
	const char *a2[] = {"s", "--model", "m", "--max_body_bytes", "2147483648"};

	snprintf(cfg, sizeof(cfg), "%s", path);
	ck_assert_int_ne(parse(&c, &err, 4, a1), 0);
	snprintf(want, sizeof(want),
		 "queue_rows (100) must be at least max_inputs (200), or a full request could "
		 "never be admitted (queue_rows from %s, max_inputs from --max-inputs)",
		 path);
	ck_assert_str_eq(err.msg, want);
	unlink(path);
	ck_assert_int_ne(parse(&c, &err, 5, a2), 0);
	ck_assert_str_eq(err.msg,
			 "body_memory_bytes (1073741824) must be at least max_body_bytes "
			 "(2147483648), or a body of the largest size accepted could never "
			 "be read (max_body_bytes from --max_body_bytes)");
}
END_TEST

/* The shipped example config must load and pass validation as documented. */
START_TEST(test_example_config)
{
	struct srv_config c;
	struct sid_error err;
	const char *path = "config/semid-server.json";
	if (access(path, R_OK) != 0)
		path = "../../config/semid-server.json";
	srv_config_defaults(&c);
	ck_assert_msg(srv_config_load_file(&c, path, &err) == 0, "%s", err.msg);
	ck_assert_int_eq(srv_config_validate(&c, &err), 0);
	ck_assert_str_ne(c.model, "");
	/* the image serves with it: workers must follow the container's CPUs */
	ck_assert_int_eq(c.workers, c.workers_auto);
	ck_assert_int_eq(c.workers_zero, 1);
}
END_TEST

/* An in-place upgrade keeps the config file: the example an early build
 * shipped (config/semid-server.json of 2026-11-28, every key of the first
 * build and the registry's), kept here as it was, loads and validates, each
 * key with the meaning it had.  A key removed, renamed or narrowed fails
 * here before it fails an operator's server at start. */
START_TEST(test_config_of_the_first_builds)
{
	struct srv_config c;
	struct sid_error err;
	char *path = write_tmp("{\n"
			       "  \"listen\": \"127.0.0.1:8080\",\n"
			       "  \"model\": \"/var/lib/semid/models/model.safetensors\",\n"
			       "  \"allow_empty\": false,\n"
			       "  \"watch\": true,\n"
			       "  \"reload_debounce_ms\": 200,\n"
			       "  \"workers\": 2,\n"
			       "  \"http_threads\": 1,\n"
			       "  \"max_batch\": 256,\n"
			       "  \"max_delay_us\": 500,\n"
			       "  \"queue_rows\": 65536,\n"
			       "  \"max_body_bytes\": 67108864,\n"
			       "  \"max_inputs\": 4096,\n"
			       "  \"admin_token\": \"\",\n"
			       "  \"shutdown_timeout_ms\": 10000,\n"
			       "  \"connection_timeout_s\": 30,\n"
			       "  \"connection_limit\": 1024,\n"
			       "  \"retry_after_s\": 1,\n"
			       "  \"entropy_window\": 10000,\n"
			       "  \"log_level\": \"info\",\n"
			       "  \"registry\": \"\",\n"
			       "  \"registry_embeddings\": true,\n"
			       "  \"registry_connections\": 4\n"
			       "}\n");

	srv_config_defaults(&c);
	ck_assert_msg(srv_config_load_file(&c, path, &err) == 0, "%s", err.msg);
	ck_assert_msg(srv_config_validate(&c, &err) == 0, "%s", err.msg);
	ck_assert_str_eq(c.listen, "127.0.0.1:8080");
	ck_assert_str_eq(c.model, "/var/lib/semid/models/model.safetensors");
	ck_assert_int_eq(c.watch, 1);
	ck_assert_int_eq(c.workers, 2);
	ck_assert_int_eq(c.workers_zero, 0);
	ck_assert_int_eq(c.http_threads, 1);
	ck_assert_int_eq(c.max_delay_us, 500);
	ck_assert_int_eq(c.max_body_bytes, 67108864);
	ck_assert_str_eq(c.admin_token, "");
	ck_assert_int_eq(c.log_level, SRV_LOG_INFO);
	ck_assert_str_eq(c.registry, ""); /* the store beside the model, as then */
	ck_assert_int_eq(c.registry_embeddings, 1);
	ck_assert_int_eq(c.registry_connections, 4);
	unlink(path);
}
END_TEST

START_TEST(test_usage_lists_every_flag)
{
	char buf[4096];
	srv_config_usage(buf, sizeof(buf));
	ck_assert_ptr_nonnull(strstr(buf, "--max-delay-us N"));
	ck_assert_ptr_nonnull(strstr(buf, "--allow-empty "));
	ck_assert_ptr_nonnull(strstr(buf, "--admin-token TEXT"));
	ck_assert_ptr_nonnull(strstr(buf, "--log-level LEVEL"));
}
END_TEST

static void add_tests(TCase *tc)
{
	tcase_add_test(tc, test_defaults);
	tcase_add_test(tc, test_default_workers_follow_affinity);
	tcase_add_test(tc, test_workers_zero_is_the_default);
	tcase_add_test(tc, test_workers_from);
	tcase_add_test(tc, test_flags);
	tcase_add_test(tc, test_flag_errors);
	tcase_add_test(tc, test_file_and_override);
	tcase_add_test(tc, test_file_errors);
	tcase_add_test(tc, test_validate);
	tcase_add_test(tc, test_file_bom_and_size);
	tcase_add_test(tc, test_check_names_source);
	tcase_add_test(tc, test_disagreeing_keys_name_their_sources);
	tcase_add_test(tc, test_example_config);
	tcase_add_test(tc, test_config_of_the_first_builds);
	tcase_add_test(tc, test_usage_lists_every_flag);
}

int main(void)
{
	return srv_check_run("config", add_tests);
}
