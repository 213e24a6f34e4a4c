/*
 * kill_after.h - the durability tests' "kill it mid-stream" step: read a
 * child's acknowledgement lines from a pipe until at least @lines have
 * arrived (or it closes), SIGKILL it, reap it, and read whatever it had
 * already written.  @buf (capacity @cap) ends NUL-terminated; the pipe's read
 * end is closed.  Returns the number of bytes read.
 */
#ifndef SID_KILL_AFTER_H
#define SID_KILL_AFTER_H

#include <signal.h>
#include <stddef.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <unistd.h>

static inline size_t kill_after_lines(int fd, pid_t pid, int lines, char *buf, size_t cap)
{
	size_t len = 0;
	ssize_t got;
	int acked = 0;

	while (acked < lines && (got = read(fd, buf + len, cap - 1 - len)) > 0) {
		len += (size_t)got;
		acked = 0;
		for (size_t i = 0; i < len; i++)
			acked += buf[i] == '\n';
	}
	kill(pid, SIGKILL);
	waitpid(pid, NULL, 0);
	while ((got = read(fd, buf + len, cap - 1 - len)) > 0)
		len += (size_t)got;
	close(fd);
	buf[len] = '\0';
	return len;
}

#endif
