/*
 * check_lock.c - tests for trainer/lock.c: one holder at a time (an flock
 * taken through another descriptor of this process conflicts as another
 * process's does), the holder named in the refusal, the file removed on
 * release, a file left by a killed run taken over, anything else at the
 * lock's path refused and left as it is, a lock file removed between the
 * open and the flock (its holder ending) not taken for the lock, a file
 * system without locks, and the files of the locks held removed for a
 * signal handler (tr_lock_unlink_held) but not another's in their place.  This file defines flock,
 * which can fail with ENOLCK or run a hook first, when told to.
 */
#include <check.h>
#include "check_main.h"
#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include "lock.h"

static char dir[] = "/tmp/check_lock.XXXXXX";
static char out[64], path[80];

static int flock_enolck;
static void (*flock_hook)(void); /* run once before the next flock */

int flock(int fd, int op)
{
	int (*next)(int, int) = (int (*)(int, int))dlsym(RTLD_NEXT, "flock");
	void (*hook)(void) = flock_hook;

	flock_hook = NULL;
	if (hook)
		hook();
	if (flock_enolck) {
		errno = ENOLCK;
		return -1;
	}
	return next(fd, op);
}

static void setup(void)
{
	strcpy(dir, "/tmp/check_lock.XXXXXX");
	ck_assert_ptr_nonnull(mkdtemp(dir));
	snprintf(out, sizeof(out), "%s/m.st", dir);
	ck_assert_int_eq(tr_lock_path(out, path, sizeof(path)), 0);
}

static void teardown(void)
{
	char cmd[64];
	flock_enolck = 0;
	flock_hook = NULL;
	snprintf(cmd, sizeof(cmd), "rm -rf %s", dir);
	ck_assert_int_eq(system(cmd), 0);
}

static void put(const char *text)
{
	FILE *f = fopen(path, "w");
	ck_assert_ptr_nonnull(f);
	fputs(text, f);
	ck_assert_int_eq(fclose(f), 0);
}

static void get(char *buf, size_t len)
{
	FILE *f = fopen(path, "r");
	size_t n;
	ck_assert_ptr_nonnull(f);
	n = fread(buf, 1, len - 1, f);
	buf[n] = '\0';
	fclose(f);
}

static void my_text(char *buf, size_t len)
{
	char host[256] = "";
	gethostname(host, sizeof(host));
	host[sizeof(host) - 1] = '\0';
	snprintf(buf, len, "%ld %s\n", (long)getpid(), host);
}

/* One holder; the next is refused, naming it; released, the file is gone
 * and the lock free. */
START_TEST(test_one_holder)
{
	struct tr_lock a = {0}, b = {0};
	struct sid_error err;
	char want[512], text[512];

	ck_assert_str_eq(path + strlen(path) - 10, "/m.st.lock");
	ck_assert_int_eq(tr_lock_take(&a, path, out, &err), 0);
	get(text, sizeof(text));
	my_text(want, sizeof(want));
	ck_assert_str_eq(text, want);
	ck_assert_int_eq(tr_lock_take(&b, path, out, &err), SID_EUNAVAIL);
	snprintf(want, sizeof(want),
		 "--out %s: another semid-train (pid %ld) is running with this --out (it holds "
		 "%s): let it finish, or stop it, or give another --out",
		 out, (long)getpid(), path);
	ck_assert_str_eq(err.msg, want);
	ck_assert_int_eq(b.held, 0);
	tr_lock_release(&b); /* not held: nothing */
	ck_assert_int_eq(access(path, F_OK), 0);
	tr_lock_release(&a);
	ck_assert_int_ne(access(path, F_OK), 0);
	tr_lock_release(&a); /* twice: nothing */
	ck_assert_int_eq(tr_lock_take(&b, path, out, &err), 0);
	tr_lock_release(&b);
}
END_TEST

/* A run on another host holds it (a network volume): its host is named. */
START_TEST(test_holder_on_another_host)
{
	struct tr_lock l = {0};
	struct sid_error err;
	char want[512];
	int fd;

	put("4242 node-b\n");
	fd = open(path, O_RDONLY);
	ck_assert_int_ge(fd, 0);
	ck_assert_int_eq(flock(fd, LOCK_EX | LOCK_NB), 0);
	ck_assert_int_eq(tr_lock_take(&l, path, out, &err), SID_EUNAVAIL);
	snprintf(want, sizeof(want),
		 "--out %s: another semid-train (pid 4242 on node-b) is running with this --out "
		 "(it holds %s): let it finish, or stop it, or give another --out",
		 out, path);
	ck_assert_str_eq(err.msg, want);
	close(fd);
}
END_TEST

/* Left by a run killed with SIGKILL (or empty): taken over, its text made
 * this process's. */
START_TEST(test_left_file_taken_over)
{
	struct tr_lock l = {0};
	struct sid_error err;
	char want[512], text[512];

	put(_i ? "" : "99999 node-c\n");
	ck_assert_int_eq(tr_lock_take(&l, path, out, &err), 0);
	get(text, sizeof(text));
	my_text(want, sizeof(want));
	ck_assert_str_eq(text, want);
	tr_lock_release(&l);
	ck_assert_int_ne(access(path, F_OK), 0);
}
END_TEST

/* Anything else at the lock's path is refused and left as it was: a file
 * of other text (it would be written over, then removed), a link, a
 * directory. */
START_TEST(test_other_files_refused)
{
	static const char *const texts[] = {"notes\n", "12\n", "12 a\nb\n", "x12 a\n"};
	struct tr_lock l = {0};
	struct sid_error err;
	char want[512], text[512];
	struct stat st;

	for (size_t i = 0; i < sizeof(texts) / sizeof(texts[0]); i++) {
		put(texts[i]);
		ck_assert_int_eq(tr_lock_take(&l, path, out, &err), SID_EINVAL);
		snprintf(want, sizeof(want),
			 "--out %s: %s exists and is not a semid-train lock file (it holds other "
			 "text): remove it or name another --out",
			 out, path);
		ck_assert_str_eq(err.msg, want);
		get(text, sizeof(text));
		ck_assert_str_eq(text, texts[i]);
	}
	unlink(path);
	ck_assert_int_eq(symlink("elsewhere", path), 0);
	ck_assert_int_eq(tr_lock_take(&l, path, out, &err), SID_EINVAL);
	ck_assert_msg(strstr(err.msg, "(a symbolic link)"), "%s", err.msg);
	ck_assert_int_eq(lstat(path, &st), 0);
	ck_assert(S_ISLNK(st.st_mode));
	unlink(path);
	ck_assert_int_eq(mkdir(path, 0755), 0);
	ck_assert_int_eq(tr_lock_take(&l, path, out, &err), SID_EINVAL);
	ck_assert_msg(strstr(err.msg, "(a directory)"), "%s", err.msg);
	ck_assert_int_eq(l.held, 0);
}
END_TEST

/* The run that held it ends between this one's open and its flock: it
 * removes the file, and the next run makes a new one.  The old file, now
 * locked, is no one's lock: the one the name names is taken instead. */
static void holder_ends(void)
{
	ck_assert_int_eq(unlink(path), 0);
	put("77777 node-d\n");
}

START_TEST(test_file_replaced_before_the_flock)
{
	struct tr_lock l = {0};
	struct sid_error err;
	struct stat held, named;

	put("");
	flock_hook = holder_ends;
	ck_assert_int_eq(tr_lock_take(&l, path, out, &err), 0);
	ck_assert_int_eq(fstat(l.fd, &held), 0);
	ck_assert_int_eq(stat(path, &named), 0);
	ck_assert_int_eq(held.st_ino, named.st_ino);
	tr_lock_release(&l);
}
END_TEST

/* No locks on this file system: 1, said, not held. */
START_TEST(test_no_locks_here)
{
	struct tr_lock l = {0};
	struct sid_error err;
	char want[512];

	flock_enolck = 1;
	ck_assert_int_eq(tr_lock_take(&l, path, out, &err), 1);
	snprintf(want, sizeof(want), "--out %s: %s cannot be locked here: %s", out, path,
		 strerror(ENOLCK));
	ck_assert_str_eq(err.msg, want);
	ck_assert_int_eq(l.held, 0);
}
END_TEST

/* What a signal that ends the process at once calls: the files of the
 * locks held go, those released or no longer the one locked stay. */
START_TEST(test_unlink_held)
{
	struct tr_lock a = {0}, b = {0};
	struct sid_error err;
	char out2[80], path2[96], text[512];

	snprintf(out2, sizeof(out2), "%s/n.st", dir);
	ck_assert_int_eq(tr_lock_path(out2, path2, sizeof(path2)), 0);
	ck_assert_int_eq(tr_lock_take(&a, path, out, &err), 0);
	ck_assert_int_eq(tr_lock_take(&b, path2, out2, &err), 0);
	tr_lock_unlink_held();
	ck_assert_int_ne(access(path, F_OK), 0);
	ck_assert_int_ne(access(path2, F_OK), 0);
	tr_lock_release(&a);
	tr_lock_release(&b);

	/* removed by hand and another run's made in its place: left */
	ck_assert_int_eq(tr_lock_take(&a, path, out, &err), 0);
	holder_ends();
	tr_lock_unlink_held();
	get(text, sizeof(text));
	ck_assert_str_eq(text, "77777 node-d\n");
	tr_lock_release(&a);
	get(text, sizeof(text));
	ck_assert_str_eq(text, "77777 node-d\n");

	/* released: no longer its to remove */
	ck_assert_int_eq(unlink(path), 0);
	ck_assert_int_eq(tr_lock_take(&a, path, out, &err), 0);
	tr_lock_release(&a);
	put("");
	tr_lock_unlink_held();
	ck_assert_int_eq(access(path, F_OK), 0);
}
END_TEST

static Suite *lock_suite(void)
{
	Suite *s = suite_create("lock");
	TCase *tc = tcase_create("lock");
	tcase_add_checked_fixture(tc, setup, teardown);
	tcase_add_test(tc, test_one_holder);
	tcase_add_test(tc, test_holder_on_another_host);
	tcase_add_loop_test(tc, test_left_file_taken_over, 0, 2);
	tcase_add_test(tc, test_other_files_refused);
	tcase_add_test(tc, test_file_replaced_before_the_flock);
	tcase_add_test(tc, test_no_locks_here);
	tcase_add_test(tc, test_unlink_held);
	suite_add_tcase(s, tc);
	return s;
}

int main(void)
{
	return check_run(lock_suite());
}
