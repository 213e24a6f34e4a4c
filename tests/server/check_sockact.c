/* check_sockact.c - server/sockact.c: the socket activation variables, the
 * checks of a passed fd, and what reading the environment leaves behind. */
#include <check.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include "check_main.h"
#include "../../server/sockact.h"

/* Parsed as process 100: 0, and *@out filled. */
static int parse(const char *pid, const char *fds, const char *names, struct srv_sockact *out,
		 struct sid_error *err)
{
	sid_error_clear(err);
	return srv_sockact_parse(100, pid, fds, names, out, err);
}

static void refused(const char *pid, const char *fds, const char *names, const char *msg)
{
	struct srv_sockact sa;
	struct sid_error err;

	ck_assert_int_eq(parse(pid, fds, names, &sa, &err), SID_EINVAL);
	ck_assert_str_eq(err.msg, msg);
}

START_TEST(test_not_activated)
{
	struct srv_sockact sa;
	struct sid_error err;

	ck_assert_int_eq(parse(NULL, NULL, NULL, &sa, &err), 0);
	ck_assert_int_eq(sa.n, 0);
	ck_assert_int_eq(sa.main_fd, -1);
	ck_assert_int_eq(sa.ops_fd, -1);
	ck_assert_int_eq(parse("100", NULL, NULL, &sa, &err), 0);
	ck_assert_int_eq(sa.n, 0);
	ck_assert_int_eq(parse(NULL, "1", NULL, &sa, &err), 0);
	ck_assert_int_eq(sa.n, 0);
	ck_assert_int_eq(parse("100", "0", NULL, &sa, &err), 0);
	ck_assert_int_eq(sa.n, 0);
	/* another process's: not read further, not refused */
	ck_assert_int_eq(parse("101", "junk", "x:y", &sa, &err), 0);
	ck_assert_int_eq(sa.n, 0);
	ck_assert_int_eq(sa.foreign_pid, 101);
	ck_assert_int_eq(sa.main_fd, -1);
}
END_TEST

START_TEST(test_roles)
{
	struct srv_sockact sa;
	struct sid_error err;

	ck_assert_int_eq(parse("100", "1", NULL, &sa, &err), 0);
	ck_assert_int_eq(sa.n, 1);
	ck_assert_int_eq(sa.main_fd, 3);
	ck_assert_int_eq(sa.ops_fd, -1);
	ck_assert_str_eq(sa.main_name, "");
	ck_assert_int_eq(parse("100", "2", NULL, &sa, &err), 0);
	ck_assert_int_eq(sa.main_fd, 3);
	ck_assert_int_eq(sa.ops_fd, 4);
	ck_assert_int_eq(parse("100", "2", "ops:main", &sa, &err), 0);
	ck_assert_int_eq(sa.main_fd, 4);
	ck_assert_int_eq(sa.ops_fd, 3);
	ck_assert_str_eq(sa.main_name, "main");
	ck_assert_str_eq(sa.ops_name, "ops");
	ck_assert_int_eq(parse("100", "1", "main", &sa, &err), 0);
	ck_assert_int_eq(sa.main_fd, 3);
	ck_assert_int_eq(sa.foreign_pid, 0);
}
END_TEST

START_TEST(test_bad_variables)
{
	refused("-100", "1", NULL, "socket activation: LISTEN_PID \"-100\" is not a process id");
	refused("", "1", NULL, "socket activation: LISTEN_PID \"\" is not a process id");
	refused("0", "1", NULL, "socket activation: LISTEN_PID \"0\" is not a process id");
	refused("100 ", "1", NULL, "socket activation: LISTEN_PID \"100 \" is not a process id");
	refused("1000000000000", "1", NULL,
		"socket activation: LISTEN_PID \"1000000000000\" is not a process id");
	refused("100", "x", NULL, "socket activation: LISTEN_FDS \"x\" is not a number of sockets");
	refused("100", "", NULL, "socket activation: LISTEN_FDS \"\" is not a number of sockets");
	refused("100", "+1", NULL,
		"socket activation: LISTEN_FDS \"+1\" is not a number of sockets");
	refused("100", "99999999999", NULL,
		"socket activation: LISTEN_FDS \"99999999999\" is not a number of sockets");
	/* past what a pid_t holds, or a descriptor 3 + n: 2^32 + 100 once
	 * read as an int was pid 100 */
	refused("4294967396", "1", NULL,
		"socket activation: LISTEN_PID \"4294967396\" is not a process id");
	refused("100", "2147483645", NULL,
		"socket activation: LISTEN_FDS \"2147483645\" is not a number of sockets");
	/* garbage is shown quoted, a control character as '?' (it went to the
	 * terminal or the journal as it was), a long value cut short */
	refused("12\x1b[2J", "1", NULL,
		"socket activation: LISTEN_PID \"12?[2J\" is not a process id");
	refused("100", "1\n2", NULL,
		"socket activation: LISTEN_FDS \"1?2\" is not a number of sockets");
	refused("100", "11111111112222222222333333333344444444445555", NULL,
		"socket activation: LISTEN_FDS \"1111111111222222222233333333334444444444\"... "
		"is not a number of sockets");
	refused("100", "2", "main\tops",
		"socket activation: LISTEN_FDNAMES \"main?ops\" names 1 sockets but LISTEN_FDS "
		"is 2");
	refused("100", "2", "main",
		"socket activation: LISTEN_FDNAMES \"main\" names 1 sockets but LISTEN_FDS is 2");
	refused(
	    "100", "1", "main:ops",
	    "socket activation: LISTEN_FDNAMES \"main:ops\" names 2 sockets but LISTEN_FDS is 1");
}
END_TEST

START_TEST(test_bad_names)
{
	refused(
	    "100", "1", "semid-server.socket",
	    "socket activation: fd 3 (name \"semid-server.socket\"): unknown name; semid-server "
	    "takes a socket named \"main\" (the API) and one named \"ops\" (the operations port): "
	    "the socket units' FileDescriptorName=");
	refused(
	    "100", "2", "main:",
	    "socket activation: fd 4 (name \"\"): unknown name; semid-server takes a socket named "
	    "\"main\" (the API) and one named \"ops\" (the operations port): the socket units' "
	    "FileDescriptorName=");
	refused(
	    "100", "2", "ops:ops",
	    "socket activation: fd 4 (name \"ops\"): a second socket for the operations port (fd "
	    "3 is one); semid-server takes one of each");
	refused(
	    "100", "3", "main:ops:main",
	    "socket activation: fd 5 (name \"main\"): a second socket for the API (fd 3 is one); "
	    "semid-server takes one of each");
	refused(
	    "100", "3", NULL,
	    "socket activation: fd 5 (no name): more sockets than semid-server uses (LISTEN_FDS "
	    "3: it takes 2 at most, fd 3 for the API and fd 4 for the operations port, or sockets "
	    "named \"main\" and \"ops\")");
	refused(
	    "100", "1", "ops",
	    "socket activation: no socket named \"main\" among LISTEN_FDNAMES \"ops\": the API's "
	    "socket must be passed too");
	{
		/* a name longer than any the server knows */
		char names[200], msg[400];
		memset(names, 'm', 100);
		names[100] = '\0';
		snprintf(
		    msg, sizeof(msg),
		    "socket activation: fd 3 (name \"%.63s\"): unknown name; semid-server takes "
		    "a socket named \"main\" (the API) and one named \"ops\" (the operations "
		    "port): the socket units' FileDescriptorName=",
		    names);
		refused("100", "1", names, msg);
	}
}
END_TEST

START_TEST(test_check_fd)
{
	struct sid_error err;
	struct sockaddr_in a;
	struct sockaddr_un u;
	char path[] = "/tmp/check_sockact_XXXXXX";
	int tcp = socket(AF_INET, SOCK_STREAM, 0), udp = socket(AF_INET, SOCK_DGRAM, 0);
	int ux = socket(AF_UNIX, SOCK_STREAM, 0), file = mkstemp(path), closed = dup(file);
	char addr[300];
	int port = 0;

	ck_assert(tcp >= 0 && udp >= 0 && ux >= 0 && file >= 0 && closed >= 0);
	close(closed);
	memset(&a, 0, sizeof(a));
	a.sin_family = AF_INET;
	a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	ck_assert_int_eq(bind(tcp, (struct sockaddr *)&a, sizeof(a)), 0);
	/* bound, not listening */
	ck_assert_int_eq(srv_sockact_check_fd(tcp, "main", "main", &err), SID_EINVAL);
	snprintf(addr, sizeof(addr),
		 "socket activation: fd %d (name \"main\") is not listening (SO_ACCEPTCONN 0: no "
		 "listen(2) on it)",
		 tcp);
	ck_assert_str_eq(err.msg, addr);
	ck_assert_int_eq(listen(tcp, 4), 0);
	ck_assert_int_eq(srv_sockact_check_fd(tcp, "main", "main", &err), 0);
	ck_assert_int_eq(srv_sockact_addr(tcp, addr, sizeof(addr), &port), 0);
	ck_assert_int_gt(port, 0);
	ck_assert_int_eq(strncmp(addr, "127.0.0.1:", 10), 0);
	ck_assert_int_eq(atoi(addr + 10), port);

	ck_assert_int_eq(srv_sockact_check_fd(udp, "", "ops", &err), SID_EINVAL);
	ck_assert_ptr_nonnull(strstr(err.msg, "(no name: taken as ops) is a datagram (SOCK_DGRAM) "
					      "socket, not a stream (TCP) socket"));
	ck_assert_int_eq(srv_sockact_check_fd(file, "ops", "ops", &err), SID_EINVAL);
	ck_assert_ptr_nonnull(strstr(err.msg, "(name \"ops\") is a regular file, not a listening "
					      "socket"));
	ck_assert_int_eq(srv_sockact_check_fd(closed, "main", "main", &err), SID_EINVAL);
	ck_assert_ptr_nonnull(strstr(err.msg, "(name \"main\") is not open (Bad file descriptor)"));
	memset(&u, 0, sizeof(u));
	u.sun_family = AF_UNIX;
	snprintf(u.sun_path, sizeof(u.sun_path), "%s.sock", path);
	ck_assert_int_eq(bind(ux, (struct sockaddr *)&u, sizeof(u)), 0);
	ck_assert_int_eq(listen(ux, 4), 0);
	ck_assert_int_eq(srv_sockact_check_fd(ux, "main", "main", &err), SID_EINVAL);
	ck_assert_ptr_nonnull(strstr(err.msg, "is a unix socket (AF_UNIX)"));
	ck_assert_int_eq(srv_sockact_addr(ux, addr, sizeof(addr), &port), -1);
	unlink(u.sun_path);
	unlink(path);
	close(tcp);
	close(udp);
	close(ux);
	close(file);
}
END_TEST

/* In a child of its own (fds 3 and 4 are the child's to give away): a
 * listening socket at fd 3 named main, LISTEN_PID its pid.  The variables
 * are unset afterwards and the fd close-on-exec; exit 0 if all held. */
START_TEST(test_from_env_unsets_and_cloexecs)
{
	pid_t pid = fork();
	int status = -1;

	ck_assert_int_ge(pid, 0);
	if (pid == 0) {
		struct srv_sockact sa;
		struct sid_error err;
		struct sockaddr_in a;
		char v[32];
		int s = socket(AF_INET, SOCK_STREAM, 0);

		memset(&a, 0, sizeof(a));
		a.sin_family = AF_INET;
		a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
		if (s < 0 || bind(s, (struct sockaddr *)&a, sizeof(a)) || listen(s, 4) ||
		    dup2(s, 3) != 3)
			_exit(10);
		close(s);
		snprintf(v, sizeof(v), "%ld", (long)getpid());
		setenv("LISTEN_PID", v, 1);
		setenv("LISTEN_FDS", "1", 1);
		setenv("LISTEN_FDNAMES", "main", 1);
		if (srv_sockact_from_env(&sa, &err) || sa.main_fd != 3 || sa.n != 1)
			_exit(11);
		if (getenv("LISTEN_PID") || getenv("LISTEN_FDS") || getenv("LISTEN_FDNAMES"))
			_exit(12);
		if (!(fcntl(3, F_GETFD) & FD_CLOEXEC))
			_exit(13);
		/* for another process: refused nothing, unset all the same */
		setenv("LISTEN_PID", "1", 1);
		setenv("LISTEN_FDS", "x", 1);
		if (srv_sockact_from_env(&sa, &err) || sa.n != 0 || sa.foreign_pid != 1)
			_exit(14);
		if (getenv("LISTEN_PID") || getenv("LISTEN_FDS"))
			_exit(15);
		/* a bad fd: refused, and the variables gone too */
		setenv("LISTEN_PID", v, 1);
		setenv("LISTEN_FDS", "2", 1);
		close(4);
		if (srv_sockact_from_env(&sa, &err) != SID_EINVAL || getenv("LISTEN_PID") ||
		    !strstr(err.msg, "fd 4 (no name: taken as ops) is not open"))
			_exit(16);
		_exit(0);
	}
	ck_assert_int_eq(waitpid(pid, &status, 0), pid);
	ck_assert(WIFEXITED(status));
	ck_assert_int_eq(WEXITSTATUS(status), 0);
}
END_TEST

static void add_tests(TCase *tc)
{
	tcase_add_test(tc, test_not_activated);
	tcase_add_test(tc, test_roles);
	tcase_add_test(tc, test_bad_variables);
	tcase_add_test(tc, test_bad_names);
	tcase_add_test(tc, test_check_fd);
	tcase_add_test(tc, test_from_env_unsets_and_cloexecs);
}

int main(void)
{
	return srv_check_run("sockact", add_tests);
}
