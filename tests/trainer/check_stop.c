/*
 * check_stop.c - tests for trainer/stop.c: the first SIGTERM only asks for a
 * stop; a second one ends the process, and removes the named temp file of a
 * publish under way (a file system without O_TMPFILE: a checkpoint's temp
 * file, as large as the checkpoint, was left behind); within tr_stop_hold
 * the second one ends it only at tr_stop_release.
 */
#include <check.h>
#include "check_main.h"
#include <dirent.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "fsutil.h"
#include "stop.h"

static char dir[] = "/tmp/check_stop.XXXXXX";

static void setup(void)
{
	strcpy(dir, "/tmp/check_stop.XXXXXX");
	ck_assert_ptr_nonnull(mkdtemp(dir));
}

static void teardown(void)
{
	char cmd[64];
	snprintf(cmd, sizeof(cmd), "rm -rf %s", dir);
	ck_assert_int_eq(system(cmd), 0);
}

/* The names in dir, one a line. */
static void listing(char *buf, size_t len)
{
	DIR *d = opendir(dir);
	struct dirent *e;
	size_t n = 0;

	buf[0] = '\0';
	ck_assert_ptr_nonnull(d);
	while ((e = readdir(d)))
		if (strcmp(e->d_name, ".") && strcmp(e->d_name, ".."))
			n += (size_t)snprintf(buf + n, len - n, "%s\n", e->d_name);
	closedir(d);
}

/* A child that publishes dir/m.st with a named temp file, within
 * tr_stop_hold when @hold, and gets two SIGTERMs while it writes; returns
 * its wait status. */
static int publish_signalled_twice(int hold)
{
	int fd[2], status;
	char c;
	pid_t pid;

	ck_assert_int_eq(pipe(fd), 0);
	pid = fork();
	ck_assert_int_ge(pid, 0);
	if (pid == 0) {
		struct tr_stop_saved saved;
		struct sid_publish pub;
		char path[64];

		close(fd[0]);
		sid__fsutil_no_tmpfile = 1;
		tr_stop_install(&saved);
		snprintf(path, sizeof(path), "%s/m.st", dir);
		if (sid_publish_begin(&pub, path, NULL) != 0 || write(pub.fd, "half", 4) != 4)
			_exit(3);
		if (hold)
			tr_stop_hold();
		raise(SIGTERM); /* the first: a stop asked for, no more */
		if (!tr_stop_signal())
			_exit(4);
		raise(SIGTERM); /* the second: the end, unless held */
		if (!hold)
			_exit(5);
		if (write(fd[1], "h", 1) != 1) /* alive while held */
			_exit(6);
		tr_stop_release();
		_exit(7);
	}
	close(fd[1]);
	if (hold)
		ck_assert_int_eq(read(fd[0], &c, 1), 1);
	close(fd[0]);
	ck_assert_int_eq(waitpid(pid, &status, 0), pid);
	return status;
}

/* loop 0: the second signal ends it at once; 1: within tr_stop_hold, at
 * tr_stop_release.  Either way no temp file is left. */
START_TEST(test_second_signal_removes_a_named_temp)
{
	char names[512];
	int status = publish_signalled_twice(_i);

	ck_assert_msg(WIFSIGNALED(status) && WTERMSIG(status) == SIGTERM,
		      "not ended by the second SIGTERM (status 0x%x)", status);
	listing(names, sizeof(names));
	ck_assert_msg(!names[0], "left in the directory:\n%s", names);
}
END_TEST

static Suite *stop_suite(void)
{
	Suite *s = suite_create("stop");
	TCase *tc = tcase_create("stop");
	tcase_set_timeout(tc, 30);
	tcase_add_checked_fixture(tc, setup, teardown);
	tcase_add_loop_test(tc, test_second_signal_removes_a_named_temp, 0, 2);
	suite_add_tcase(s, tc);
	return s;
}

int main(void)
{
	return check_run(stop_suite());
}
