/*
 * sockact.c - systemd socket activation (sd_listen_fds(3)) by hand: two
 * environment variables and a few checks need no libsystemd.  See
 * sockact.h for the protocol and the rules on names.
 */
#include "sockact.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include "env.h"

/* "fd 4 (name "ops")", or for an unnamed one "fd 4 (no name: taken as
 * ops)": how every message names an fd. */
static void fd_label(char *out, size_t n, int fd, const char *name, const char *role)
{
	if (name[0])
		snprintf(out, n, "fd %d (name \"%s\")", fd, name);
	else
		snprintf(out, n, "fd %d (no name: taken as %s)", fd, role);
}

int srv_sockact_parse(pid_t pid, const char *listen_pid, const char *listen_fds,
		      const char *listen_fdnames, struct srv_sockact *out, struct sid_error *err)
{
	const char *p = listen_fdnames;
	char shown[SID_ENV_SHOWN_MAX];
	long lpid, n, names = 0;
	int i;

	memset(out, 0, sizeof(*out));
	out->main_fd = out->ops_fd = -1;
	/* sd_listen_fds: both unset (or either) is no activation at all */
	if (!listen_pid || !listen_fds)
		return 0;
	/* decimal digits only, as sd_listen_fds(3) reads them (no sign, space
	 * or hex), and within what a pid_t or a descriptor holds; the value
	 * quoted as env.h shows one (a control character as '?') */
	if (sid_whole_parse(listen_pid, 1, INT_MAX, &lpid))
		return sid_error_set(err, SID_EINVAL,
				     "socket activation: LISTEN_PID %s is not a process id",
				     sid_env_shown(listen_pid, shown));
	if (lpid != (long)pid) {
		/* set for another process (a parent that was activated):
		 * not ours; LISTEN_FDS is not even read */
		out->foreign_pid = lpid;
		return 0;
	}
	if (sid_whole_parse(listen_fds, 0, INT_MAX - SRV_SOCKACT_FIRST_FD, &n))
		return sid_error_set(err, SID_EINVAL,
				     "socket activation: LISTEN_FDS %s is not a number of sockets",
				     sid_env_shown(listen_fds, shown));
	if (n == 0)
		return 0;
	if (p) {
		names = 1;
		for (const char *c = p; *c; c++)
			names += *c == ':';
		if (names != n)
			return sid_error_set(err, SID_EINVAL,
					     "socket activation: LISTEN_FDNAMES %s names %ld "
					     "sockets but LISTEN_FDS is %ld",
					     sid_env_shown(p, shown), names, n);
	}
	out->n = (int)n;
	for (i = 0; i < n; i++) {
		int fd = SRV_SOCKACT_FIRST_FD + i, ops;
		char name[64] = "", label[128];
		const char *role;

		if (p) {
			size_t len = strcspn(p, ":");
			/* a name too long for @name is no name the server knows */
			snprintf(name, sizeof(name), "%.*s", (int)(len < 63 ? len : 63), p);
			p += len + (p[len] == ':');
			if (len >= sizeof(name) - 1 ||
			    (strcmp(name, "main") && strcmp(name, "ops")))
				return sid_error_set(
				    err, SID_EINVAL,
				    "socket activation: fd %d (name \"%s\"): unknown "
				    "name; semid-server takes a socket named \"main\" "
				    "(the API) and one named \"ops\" (the operations "
				    "port): the socket units' FileDescriptorName=",
				    fd, name);
			ops = !strcmp(name, "ops");
		} else if (i >= 2) {
			return sid_error_set(
			    err, SID_EINVAL,
			    "socket activation: fd %d (no name): more sockets than "
			    "semid-server uses (LISTEN_FDS %ld: it takes 2 at most, "
			    "fd 3 for the API and fd 4 for the operations port, or "
			    "sockets named \"main\" and \"ops\")",
			    fd, n);
		} else {
			ops = i == 1; /* unnamed: fd 3 the API's, fd 4 the operations port's */
		}
		role = ops ? "ops" : "main";
		fd_label(label, sizeof(label), fd, name, role);
		if ((ops ? out->ops_fd : out->main_fd) >= 0)
			return sid_error_set(
			    err, SID_EINVAL,
			    "socket activation: %s: a second socket for the %s (fd "
			    "%d is one); semid-server takes one of each",
			    label, ops ? "operations port" : "API",
			    ops ? out->ops_fd : out->main_fd);
		if (ops) {
			out->ops_fd = fd;
			snprintf(out->ops_name, sizeof(out->ops_name), "%s", name);
		} else {
			out->main_fd = fd;
			snprintf(out->main_name, sizeof(out->main_name), "%s", name);
		}
	}
	if (out->main_fd < 0)
		return sid_error_set(
		    err, SID_EINVAL,
		    "socket activation: no socket named \"main\" among LISTEN_FDNAMES "
		    "\"%s\": the API's socket must be passed too",
		    listen_fdnames);
	return 0;
}

/* What a file that is not a socket is, for the message. */
static const char *file_kind(mode_t m)
{
	if (S_ISREG(m))
		return "a regular file";
	if (S_ISDIR(m))
		return "a directory";
	if (S_ISFIFO(m))
		return "a pipe";
	if (S_ISCHR(m))
		return "a character device";
	if (S_ISBLK(m))
		return "a block device";
	return "not a socket";
}

int srv_sockact_check_fd(int fd, const char *name, const char *role, struct sid_error *err)
{
	char label[128];
	struct stat st;
	struct sockaddr_storage ss;
	socklen_t len = sizeof(int), slen = sizeof(ss);
	int type = 0, acc = 0;

	fd_label(label, sizeof(label), fd, name, role);
	if (fcntl(fd, F_GETFD) < 0)
		return sid_error_set(err, SID_EINVAL, "socket activation: %s is not open (%s)",
				     label, strerror(errno));
	if (fstat(fd, &st) != 0)
		return sid_error_set(err, SID_EINVAL, "socket activation: %s: fstat: %s", label,
				     strerror(errno));
	if (!S_ISSOCK(st.st_mode))
		return sid_error_set(err, SID_EINVAL,
				     "socket activation: %s is %s, not a listening socket", label,
				     file_kind(st.st_mode));
	if (getsockopt(fd, SOL_SOCKET, SO_TYPE, &type, &len) != 0 || type != SOCK_STREAM)
		return sid_error_set(err, SID_EINVAL,
				     "socket activation: %s is a %s socket, not a stream (TCP) "
				     "socket",
				     label,
				     type == SOCK_DGRAM	      ? "datagram (SOCK_DGRAM)"
				     : type == SOCK_SEQPACKET ? "SOCK_SEQPACKET"
				     : type == SOCK_RAW	      ? "raw (SOCK_RAW)"
							      : "non-stream");
	if (getsockname(fd, (struct sockaddr *)&ss, &slen) != 0)
		return sid_error_set(err, SID_EINVAL, "socket activation: %s: getsockname: %s",
				     label, strerror(errno));
	/* getsockname filled ss: it answered 0 */
	/* NOLINTNEXTLINE(clang-analyzer-core.UndefinedBinaryOperatorResult) */
	if (ss.ss_family == AF_UNIX)
		return sid_error_set(err, SID_EINVAL,
				     "socket activation: %s is a unix socket (AF_UNIX): "
				     "semid-server serves TCP only (AF_INET, AF_INET6), as listen "
				     "takes HOST:PORT only",
				     label);
	if (ss.ss_family != AF_INET && ss.ss_family != AF_INET6)
		return sid_error_set(err, SID_EINVAL,
				     "socket activation: %s is of address family %d: semid-server "
				     "serves TCP only (AF_INET, AF_INET6)",
				     label, (int)ss.ss_family);
	len = sizeof(acc);
	if (getsockopt(fd, SOL_SOCKET, SO_ACCEPTCONN, &acc, &len) != 0 || !acc)
		return sid_error_set(err, SID_EINVAL,
				     "socket activation: %s is not listening (SO_ACCEPTCONN 0: no "
				     "listen(2) on it)",
				     label);
	return 0;
}

int srv_sockact_from_env(struct srv_sockact *out, struct sid_error *err)
{
	char *vars[3] = {NULL, NULL, NULL};
	static const char *const names[3] = {"LISTEN_PID", "LISTEN_FDS", "LISTEN_FDNAMES"};
	int i, rc;

	/* copied first: unsetenv may free what getenv returned */
	for (i = 0; i < 3; i++) {
		const char *v = getenv(names[i]);
		if (v && !(vars[i] = strdup(v))) {
			rc = sid_error_set(err, SID_ENOMEM, "socket activation: out of memory");
			goto out;
		}
	}
	/* whatever they say: a program the server starts must not take the
	 * sockets (or a stale LISTEN_PID) for its own */
	for (i = 0; i < 3; i++)
		unsetenv(names[i]);
	rc = srv_sockact_parse(getpid(), vars[0], vars[1], vars[2], out, err);
	if (rc || out->n == 0)
		goto out;
	/* the manager passes them inheritable; nothing we exec gets them */
	for (i = 0; i < out->n; i++) {
		int fd = SRV_SOCKACT_FIRST_FD + i, fl = fcntl(fd, F_GETFD);
		if (fl >= 0)
			fcntl(fd, F_SETFD, fl | FD_CLOEXEC);
	}
	rc = srv_sockact_check_fd(out->main_fd, out->main_name, "main", err);
	if (!rc && out->ops_fd >= 0)
		rc = srv_sockact_check_fd(out->ops_fd, out->ops_name, "ops", err);
out:
	for (i = 0; i < 3; i++)
		free(vars[i]);
	return rc;
}

int srv_sockact_addr(int fd, char *buf, size_t n, int *port)
{
	struct sockaddr_storage ss;
	socklen_t len = sizeof(ss);
	char host[INET6_ADDRSTRLEN] = "";

	if (getsockname(fd, (struct sockaddr *)&ss, &len) != 0)
		return -1;
	/* getsockname filled ss: it answered 0 */
	/* NOLINTNEXTLINE(clang-analyzer-core.UndefinedBinaryOperatorResult) */
	if (ss.ss_family == AF_INET) {
		const struct sockaddr_in *s4 = (const struct sockaddr_in *)&ss;
		inet_ntop(AF_INET, &s4->sin_addr, host, sizeof(host));
		*port = ntohs(s4->sin_port);
		snprintf(buf, n, "%s:%d", host, *port);
		return 0;
	}
	if (ss.ss_family == AF_INET6) {
		const struct sockaddr_in6 *s6 = (const struct sockaddr_in6 *)&ss;
		inet_ntop(AF_INET6, &s6->sin6_addr, host, sizeof(host));
		*port = ntohs(s6->sin6_port);
		snprintf(buf, n, "[%s]:%d", host, *port);
		return 0;
	}
	return -1;
}
