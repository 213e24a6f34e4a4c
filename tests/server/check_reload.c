/*
 * check_reload.c - server/reload.c's comparison of two stats of the model
 * path (srv__reload_same_file), which decides whether the watcher reports a
 * new file: the same file is the same device, inode, size and mtime, and a
 * path that named no file both times is the same, whatever the failed stats
 * left in their structs.  The mutation audit found no test of the latter.
 * And a start with allow_empty whose load was short of descriptors: tried
 * again as a reload is (srv_reload_new on a loop of the test's own).
 */
#include <check.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>
#include <uv.h>

#include "../../server/reload.h" /* tests build with -Icore -Itests only */
#include "check_main.h"
#include "model_builder.h"

/* stat of a new file holding @text (removed again). */
static struct stat stat_of_new(const char *text)
{
	char path[] = "/tmp/check_reload-XXXXXX";
	int fd = mkstemp(path);
	struct stat st;

	ck_assert_int_ge(fd, 0);
	ck_assert_int_eq(write(fd, text, strlen(text)), (int)strlen(text));
	ck_assert_int_eq(fstat(fd, &st), 0);
	close(fd);
	unlink(path);
	return st;
}

/* No file both times is the same, even when the structs differ: a failed
 * stat leaves in its struct whatever was there (another file's stat, or
 * nothing written at all).  Compared anyway, two such structs apart would
 * make a path that still names nothing look like a new file. */
START_TEST(test_no_file_both_times_is_the_same)
{
	struct stat a = stat_of_new("a"), b = stat_of_new("bb");

	ck_assert(a.st_ino != b.st_ino || a.st_size != b.st_size);
	ck_assert_int_eq(srv__reload_same_file(0, &a, 0, &b), 1);
	ck_assert_int_eq(srv__reload_same_file(0, &b, 0, &a), 1);
	ck_assert_int_eq(srv__reload_same_file(0, &a, 0, &a), 1);
	/* a file one time and none the other: another, either way round */
	ck_assert_int_eq(srv__reload_same_file(1, &a, 0, &a), 0);
	ck_assert_int_eq(srv__reload_same_file(0, &a, 1, &a), 0);
}
END_TEST

/* A file both times: the same only when device, inode, size and mtime (to
 * the nanosecond) all are. */
START_TEST(test_files_compared_field_by_field)
{
	struct stat a = stat_of_new("a"), b = stat_of_new("bb"), c;

	ck_assert_int_eq(srv__reload_same_file(1, &a, 1, &a), 1);
	ck_assert_int_eq(srv__reload_same_file(1, &a, 1, &b), 0);
	for (int field = 0; field < 5; field++) {
		c = a;
		switch (field) {
		case 0:
			c.st_dev++;
			break;
		case 1:
			c.st_ino++;
			break;
		case 2:
			c.st_size++;
			break;
		case 3:
			c.st_mtim.tv_sec++;
			break;
		default:
			c.st_mtim.tv_nsec = (c.st_mtim.tv_nsec + 1) % 1000000000L;
		}
		ck_assert_msg(srv__reload_same_file(1, &a, 1, &c) == 0, "field %d", field);
		ck_assert_msg(srv__reload_same_file(1, &c, 1, &a) == 0, "field %d", field);
	}
	c = a; /* what the watcher does not look at */
	c.st_atim.tv_sec++;
	c.st_mode ^= S_IWOTH;
	ck_assert_int_eq(srv__reload_same_file(1, &a, 1, &c), 1);
}
END_TEST

static double mono(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + ts.tv_nsec * 1e-9;
}

/* A start with allow_empty whose load found no descriptor free (or memory:
 * SID_ENOMEM, the file may be fine) served no model until the file changed
 * or someone sent SIGHUP: the retry of a reload short of them (1, 2, 4 ...
 * s, proto/api.md) was not armed for it.  Now it is, and loads the file. */
START_TEST(test_startup_short_of_descriptors_is_tried_again)
{
	static struct srv_config cfg; /* large: not on the stack */
	char dir[] = "/tmp/check_reload-XXXXXX";
	struct srv_reload *r = NULL;
	struct srv_reload_status st;
	struct sid_model *m = NULL;
	struct sid_error err;
	struct rlimit rl, low;
	struct mb_spec spec;
	uv_async_t async;
	uv_signal_t sig;
	uv_loop_t loop;
	double t0;
	int fd, rc;

	ck_assert_ptr_nonnull(mkdtemp(dir));
	srv_config_defaults(&cfg);
	snprintf(cfg.model, sizeof(cfg.model), "%s/m.safetensors", dir);
	cfg.allow_empty = 1;
	cfg.watch = 0;
	mb_spec_init(&spec);
	ck_assert_int_eq(mb_build_file(&spec, cfg.model, &err), 0);
	ck_assert_int_eq(uv_loop_init(&loop), 0);
	/* the descriptors the reloader's handles share on the loop (the async
	 * wake-up, the signal pipes), taken before the limit comes down */
	ck_assert_int_eq(uv_async_init(&loop, &async, NULL), 0);
	ck_assert_int_eq(uv_signal_init(&loop, &sig), 0);
	/* no descriptor free for the model's open: the soft limit at the
	 * lowest free one (the suite runs each test in a child of its own) */
	fd = dup(2);
	ck_assert_int_ge(fd, 0);
	close(fd);
	ck_assert_int_eq(getrlimit(RLIMIT_NOFILE, &rl), 0);
	low = rl;
	low.rlim_cur = (rlim_t)fd;
	ck_assert_int_eq(setrlimit(RLIMIT_NOFILE, &low), 0);
	rc = srv_reload_new(&loop, &cfg, NULL, &r, &err);
	ck_assert_int_eq(setrlimit(RLIMIT_NOFILE, &rl), 0);
	ck_assert_msg(rc == 0, "%s", err.msg);
	ck_assert_ptr_null(srv_reload_model(r));
	srv_reload_status_get(r, &st);
	ck_assert_int_eq(st.ok, 0);
	ck_assert_msg(strstr(st.error, "Too many open files"), "%s", st.error);
	/* the retry, 1 s on, loads it */
	t0 = mono();
	while (!(m = srv_reload_model(r)) && mono() - t0 < 5) {
		uv_run(&loop, UV_RUN_NOWAIT);
		usleep(10000);
	}
	ck_assert_msg(m != NULL, "the start-up load was not tried again");
	srv_reload_status_get(r, &st);
	ck_assert_str_eq(st.trigger, "retry");
	ck_assert_int_eq(st.ok, 1);
	sid_model_unref(m);
	srv_reload_close(r);
	uv_close((uv_handle_t *)&async, NULL);
	uv_close((uv_handle_t *)&sig, NULL);
	uv_run(&loop, UV_RUN_DEFAULT);
	srv_reload_free(r);
	ck_assert_int_eq(uv_loop_close(&loop), 0);
	unlink(cfg.model);
	rmdir(dir);
}
END_TEST

static void add(TCase *tc)
{
	tcase_add_test(tc, test_no_file_both_times_is_the_same);
	tcase_add_test(tc, test_files_compared_field_by_field);
	tcase_add_test(tc, test_startup_short_of_descriptors_is_tried_again);
}

int main(void)
{
	return srv_check_run("reload", add);
}
