/*
 * check_reload.c - server/reload.c's comparison of two stats of the model
 * path (srv__reload_same_file), which decides whether the watcher reports a
 * new file: the same file is the same device, inode, size and mtime, and a
 * path that named no file both times is the same, whatever the failed stats
 * left in their structs.  The mutation audit found no test of the latter.
 */
#include <check.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "../../server/reload.h" /* tests build with -Icore -Itests only */
#include "check_main.h"

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

static void add(TCase *tc)
{
	tcase_add_test(tc, test_no_file_both_times_is_the_same);
	tcase_add_test(tc, test_files_compared_field_by_field);
}

int main(void)
{
	return srv_check_run("reload", add);
}
