/*
 * sockact.h - systemd socket activation for semid-server, by hand.
 *
 * The protocol of sd_listen_fds(3), without libsystemd: the service manager
 * (systemd, or anything that speaks the protocol) opens the listening
 * sockets itself and starts the server with them as file descriptors 3,
 * 4, ... and three environment variables:
 *
 *   LISTEN_PID      the pid the sockets are meant for: ours, or they are not
 *                   for us (a variable inherited from a parent) and the
 *                   server binds its addresses as usual
 *   LISTEN_FDS      how many: the sockets are fds 3 .. 3 + LISTEN_FDS - 1
 *   LISTEN_FDNAMES  optional, colon-separated: each fd's name, the socket
 *                   unit's FileDescriptorName=
 *
 * Since the manager holds its own copy of each socket, a restart or a new
 * binary never closes it: connections that arrive while no server runs wait
 * in the socket's backlog for the next one (http.c stops accepting on a
 * drain without shutting the socket down).
 *
 * semid-server uses at most two sockets: the main API's and the operations
 * port's (ops_listen).  With names, "main" is the API's and "ops" the
 * operations port's; any other name is refused.  Without LISTEN_FDNAMES,
 * fd 3 is the API's and fd 4, if passed, the operations port's.  The API's
 * socket must be among them.  Every one must be an open, listening TCP
 * stream socket (AF_INET or AF_INET6): not a unix socket, as `listen` takes
 * none either.  Anything else refuses the start (exit 2) with a message
 * naming the fd, its name and what is wrong.
 */
#ifndef SRV_SOCKACT_H
#define SRV_SOCKACT_H

#include <sys/types.h>

#include "err.h"

/* The first fd passed (SD_LISTEN_FDS_START). */
#define SRV_SOCKACT_FIRST_FD 3

struct srv_sockact {
	int main_fd; /* the API's socket, or -1: bind cfg->listen */
	int ops_fd;  /* the operations port's, or -1: bind cfg->ops_listen if set */
	int n;	     /* sockets passed to this process (0: not activated) */
	/* LISTEN_PID was set to another process's pid (sockets not for us):
	 * the pid it named, else 0 */
	long foreign_pid;
	char main_name[64], ops_name[64]; /* their names ("" when unnamed) */
};

/*
 * The protocol's variables as found (NULL: unset) for process @pid, parsed
 * into @out; no system call.  Refuses (SID_EINVAL, @err says why, naming the
 * variable or the fd and its name) a LISTEN_PID or LISTEN_FDS that is not a
 * number (decimal digits only, within an int; the value quoted as
 * env.h's sid_env_shown does, a control character as '?'), LISTEN_FDNAMES naming another count of
 * fds, a name the server does not know, a second socket for one port, more fds than it uses, or
 * sockets without the API's.  Exposed for tests.
 */
int srv_sockact_parse(pid_t pid, const char *listen_pid, const char *listen_fds,
		      const char *listen_fdnames, struct srv_sockact *out, struct sid_error *err);

/* Whether @fd, the socket named @name ("" when unnamed, taken as @role),
 * is an open, listening TCP stream socket; else SID_EINVAL and @err says
 * what it is instead.  Exposed for tests. */
int srv_sockact_check_fd(int fd, const char *name, const char *role, struct sid_error *err);

/*
 * Read LISTEN_PID, LISTEN_FDS and LISTEN_FDNAMES, unset all three (nothing
 * the server starts must take the sockets for its own), parse them
 * (srv_sockact_parse), mark every fd passed close-on-exec, and check each
 * one the server takes (srv_sockact_check_fd).  0 when not activated too
 * (out->n == 0).
 */
int srv_sockact_from_env(struct srv_sockact *out, struct sid_error *err);

/* The local address of socket @fd in numbers: "127.0.0.1:8080",
 * "[::1]:8080"; its port in *@port.  -1 if it has none of those. */
int srv_sockact_addr(int fd, char *buf, size_t n, int *port);

#endif
