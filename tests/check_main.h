/*
 * check_main.h - the end of every Check suite's main(): run the suite in
 * CK_NORMAL mode (its summary line is what tests/run.py counts), free it, and
 * turn the result into the exit status (1 on any failure or error).  And the
 * skip that Check lacks: CHECK_SKIP; and check_file_has.
 */
#ifndef SID_CHECK_MAIN_H
#define SID_CHECK_MAIN_H

#include <check.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

/*
 * For a test that cannot run here (it needs root, or a service the host
 * lacks): print "SKIP <test>: <why>" on stderr and return from the test.
 * Check still counts the test as passed; tests/run.py counts the line as a
 * skip instead.  Only from the body of a START_TEST.
 */
#define CHECK_SKIP(...)                                                                            \
	do {                                                                                       \
		check_skip(__func__, __VA_ARGS__);                                                 \
		return;                                                                            \
	} while (0)

static inline void check_skip(const char *fn, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

static inline void check_skip(const char *fn, const char *fmt, ...)
{
	char why[512];
	size_t n = strlen(fn);
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(why, sizeof(why), fmt, ap);
	va_end(ap);
	if (n > 3 && !strcmp(fn + n - 3, "_fn")) /* START_TEST(name) defines name_fn */
		n -= 3;
	/* one write, so that the line stays whole beside Check's output */
	fprintf(stderr, "SKIP %.*s: %s\n", (int)n, fn, why);
}

/* Fail unless the file @path (its first 64 KiB) holds @want, showing what it
 * holds: a child's stderr, for one. */
static inline void check_file_has(const char *path, const char *want)
{
	static char buf[1 << 16];
	int fd = open(path, O_RDONLY);
	ssize_t n;

	ck_assert_msg(fd >= 0, "%s: cannot be opened", path);
	n = read(fd, buf, sizeof(buf) - 1);
	close(fd);
	ck_assert_int_ge(n, 0);
	buf[n] = '\0';
	ck_assert_msg(strstr(buf, want), "%s holds: %s", path, buf);
}

static inline int check_run(Suite *s)
{
	SRunner *sr = srunner_create(s);
	int failed;

	srunner_run_all(sr, CK_NORMAL);
	failed = srunner_ntests_failed(sr);
	srunner_free(sr);
	return failed ? 1 : 0;
}

#endif
