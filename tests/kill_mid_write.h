/*
 * kill_mid_write.h - kill a forked test child in the middle of writing its
 * output, at a byte, without timing: the child lowers RLIMIT_FSIZE to @limit
 * bytes, so the first write past it raises SIGXFSZ, whose handler sends the
 * child @sig (SIGKILL: nothing of the child's own runs after that).  Call it
 * in the child before the command; every file the child writes counts, so
 * @limit must be below the output's size and above anything else it writes.
 *
 * truncating_stream: a stream whose first write cuts the file @fd to zero
 * bytes, for a child to use as stdout: a command reading that file through
 * a memory map then faults (SIGBUS) on the rows it has not read yet.
 */
#ifndef SID_KILL_MID_WRITE_H
#define SID_KILL_MID_WRITE_H

#include <signal.h>
#include <stdio.h>
#include <sys/resource.h>
#include <unistd.h>

static volatile sig_atomic_t kill_mid_write_sig;

static void kill_mid_write_on_xfsz(int sig)
{
	(void)sig;
	kill(getpid(), kill_mid_write_sig);
}

static inline void kill_mid_write(rlim_t limit, int sig)
{
	struct rlimit rl = {limit, limit};

	kill_mid_write_sig = sig;
	signal(SIGXFSZ, kill_mid_write_on_xfsz);
	setrlimit(RLIMIT_FSIZE, &rl);
}

static ssize_t truncating_write(void *cookie, const char *buf, size_t len)
{
	(void)buf;
	if (ftruncate(*(int *)cookie, 0) != 0)
		return -1;
	return (ssize_t)len;
}

static inline FILE *truncating_stream(int *fd)
{
	cookie_io_functions_t io = {NULL, truncating_write, NULL, NULL};
	return fopencookie(fd, "w", io);
}

#endif
