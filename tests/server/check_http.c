/* check_http.c - server/http.c: the parts testable without a socket (the
 * admin bearer check, the MHD panic callback); tests/server/test_*.py drive
 * the rest over HTTP. */
#include <check.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "check_main.h"
#include "../../server/http.h"
#include "../../server/log.h"

START_TEST(test_bearer)
{
	static const struct {
		const char *header, *token;
		int ok;
	} cases[] = {
	    {"Bearer tok", "tok", 1},
	    /* RFC 9110: the scheme is case-insensitive, one or more spaces follow */
	    {"bearer tok", "tok", 1},
	    {"BEARER tok", "tok", 1},
	    {"Bearer   tok", "tok", 1},
	    {"Bearer a b", "a b", 1},
	    /* RFC 9110 5.5: trailing whitespace is no part of the value */
	    {"Bearer tok ", "tok", 1},
	    {"Bearer tok\t \t", "tok", 1},
	    {"Bearer tok x", "tok", 0},
	    {"Bearer tok  ", "tok ", 0},
	    /* wrong scheme, separator, token, length; nothing configured */
	    {"Basic tok", "tok", 0},
	    {"Bearertok", "tok", 0},
	    {"Bearer\ttok", "tok", 0},
	    {"Bearer tok2", "tok", 0},
	    {"Bearer to", "tok", 0},
	    {"Bearer TOK", "tok", 0},
	    {"Bearer ", "tok", 0},
	    {"Bearer", "tok", 0},
	    {NULL, "tok", 0},
	    {"Bearer ", "", 0},
	};
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++)
		ck_assert_msg(srv_http_bearer_ok(cases[i].header, cases[i].token) == cases[i].ok,
			      "case %zu: \"%s\" with token \"%s\"", i,
			      cases[i].header ? cases[i].header : "(none)", cases[i].token);
}
END_TEST

/* An MHD panic is logged (its file, line and reason, without MHD's
 * newline) before the process aborts: a child process calls the callback
 * with its log on a pipe. */
START_TEST(test_panic_logged_then_abort)
{
	int fds[2], status = 0;
	char buf[1024];
	ssize_t n, got = 0;
	pid_t pid;

	ck_assert_int_eq(pipe(fds), 0);
	pid = fork();
	ck_assert_int_ge(pid, 0);
	if (pid == 0) {
		static char fill[1 << 16];
		int fl = fcntl(fds[1], F_GETFL);

		close(fds[0]);
		signal(SIGABRT, SIG_DFL);
		/* the pipe full, as a stalled log reader leaves it: the line waits
		 * for the reader (it was dropped, and the abort said nothing) */
		memset(fill, '.', sizeof(fill));
		fcntl(fds[1], F_SETFL, fl | O_NONBLOCK);
		while (write(fds[1], fill, sizeof(fill)) > 0 || write(fds[1], fill, 1) > 0)
			;
		fcntl(fds[1], F_SETFL, fl);
		srv_log_set_fd(fds[1]);
		srv_http_panic(NULL, "daemon.c", 7040,
			       "MHD_stop_daemon() called while we have suspended connections.\n");
		_exit(3); /* not reached */
	}
	close(fds[1]);
	usleep(200 * 1000); /* a reader slow to come back */
	while ((n = read(fds[0], buf + got, sizeof(buf) - 1 - (size_t)got)) > 0) {
		got += n;
		if (got == (ssize_t)sizeof(buf) - 1) { /* keep the last bytes only */
			memmove(buf, buf + got / 2, (size_t)(got - got / 2));
			got -= got / 2;
		}
	}
	close(fds[0]);
	buf[got] = '\0';
	ck_assert_int_eq(waitpid(pid, &status, 0), pid);
	ck_assert_msg(WIFSIGNALED(status) && WTERMSIG(status) == SIGABRT, "status %d", status);
	ck_assert_ptr_nonnull(strstr(buf, " level=error event=panic msg=\"libmicrohttpd gave up "
					  "at daemon.c:7040: MHD_stop_daemon() called while we "
					  "have suspended connections.; aborting\"\n"));
}
END_TEST

/* X-Request-Id values echoed (1 to 128 visible ASCII characters, trailing
 * whitespace left out) or replaced by a made one (anything else). */
START_TEST(test_request_id_len)
{
	char v[SRV_REQUEST_ID_MAX + 4];

	ck_assert_uint_eq(srv_http_request_id_len(NULL), 0);
	ck_assert_uint_eq(srv_http_request_id_len(""), 0);
	ck_assert_uint_eq(srv_http_request_id_len("a"), 1);
	ck_assert_uint_eq(srv_http_request_id_len("!~\"=\\{}"), 7);
	ck_assert_uint_eq(srv_http_request_id_len("a b"), 0);
	ck_assert_uint_eq(srv_http_request_id_len("a\tb"), 0);
	ck_assert_uint_eq(srv_http_request_id_len("a\x7f"), 0);
	ck_assert_uint_eq(srv_http_request_id_len("caf\xc3\xa9"), 0);
	ck_assert_uint_eq(srv_http_request_id_len("abc \t"), 3);
	ck_assert_uint_eq(srv_http_request_id_len(" \t"), 0);
	memset(v, 'r', SRV_REQUEST_ID_MAX);
	v[SRV_REQUEST_ID_MAX] = '\0';
	ck_assert_uint_eq(srv_http_request_id_len(v), SRV_REQUEST_ID_MAX);
	v[SRV_REQUEST_ID_MAX] = ' ';
	v[SRV_REQUEST_ID_MAX + 1] = '\0';
	ck_assert_uint_eq(srv_http_request_id_len(v), SRV_REQUEST_ID_MAX);
	v[SRV_REQUEST_ID_MAX] = 'r';
	ck_assert_uint_eq(srv_http_request_id_len(v), 0);
}
END_TEST

static void add_tests(TCase *tc)
{
	tcase_add_test(tc, test_bearer);
	tcase_add_test(tc, test_request_id_len);
	tcase_add_test(tc, test_panic_logged_then_abort);
}

int main(void)
{
	return srv_check_run("http", add_tests);
}
