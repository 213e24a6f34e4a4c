/*
 * lock.c - the lock of one training's --out (lock.h): an flock on
 * "<out>.lock", whose text names the process that holds it.  A lock file is
 * removed while it is held, so whoever opened it meanwhile and then got
 * the lock checks that the name still names that file, and else starts
 * again (the file it locked is no longer anyone's lock).
 */
#include "lock.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#define LOCK_TEXT_MAX 320 /* "PID HOST\n" (a host name is 64 bytes at most) */

int tr_lock_path(const char *out, char *buf, size_t len)
{
	int n = snprintf(buf, len, "%s.lock", out);
	return n < 0 || (size_t)n >= len ? -1 : 0;
}

/* The text of the lock file @fd into @buf (LOCK_TEXT_MAX + 1 bytes): 1 when
 * it is a lock file's (empty, or one line "PID HOST"), 0 when the file
 * holds something else, -1 when it cannot be read (errno). */
static int lock_text(int fd, char *buf)
{
	ssize_t n;
	char *p = buf;

	while ((n = pread(fd, buf, LOCK_TEXT_MAX, 0)) < 0 && errno == EINTR)
		;
	if (n < 0)
		return -1;
	buf[n] = '\0';
	if (n == 0)
		return 1;
	if (n == LOCK_TEXT_MAX || (size_t)n != strlen(buf))
		return 0;
	while (*p >= '0' && *p <= '9')
		p++;
	if (p == buf || *p != ' ')
		return 0;
	p = strchr(p, '\n');
	return p && !p[1];
}

/* " (pid N)", or " (pid N on HOST)" for another host, from a lock file's
 * @text into @buf; "" when it names no process (written an instant
 * later, or by nothing). */
static void holder(const char *text, char *buf, size_t len)
{
	char host[LOCK_TEXT_MAX], me[256];
	long pid;
	int got = sscanf(text, "%ld %319[^\n]", &pid, host);

	buf[0] = '\0';
	if (got < 1 || pid <= 0)
		return;
	if (gethostname(me, sizeof(me)) != 0)
		me[0] = '\0';
	me[sizeof(me) - 1] = '\0';
	if (got == 2 && strcmp(host, me))
		snprintf(buf, len, " (pid %ld on %s)", pid, host);
	else
		snprintf(buf, len, " (pid %ld)", pid);
}

/* This process's "PID HOST\n" into the lock file @fd, for the message that
 * refuses the next run; or, where that cannot be written (a file system
 * too full for these few bytes), nothing.  The lock is what excludes. */
static void lock_sign(int fd)
{
	char text[LOCK_TEXT_MAX], host[256];
	int n;

	if (gethostname(host, sizeof(host)) != 0)
		host[0] = '\0';
	host[sizeof(host) - 1] = '\0';
	n = snprintf(text, sizeof(text), "%ld %s\n", (long)getpid(), host);
	if (ftruncate(fd, 0) == 0 && pwrite(fd, text, (size_t)n, 0) != n) {
		/* cut short (a full disk): no half line for another run to read */
		int rc = ftruncate(fd, 0);
		(void)rc;
	}
}

/* What @st is, for "is not a lock file (...)". */
static const char *kind(const struct stat *st)
{
	return S_ISLNK(st->st_mode)   ? "a symbolic link"
	       : S_ISDIR(st->st_mode) ? "a directory"
	       : S_ISREG(st->st_mode) ? "it holds other text"
				      : "not a regular file";
}

static int not_a_lock(const char *out, const char *path, const struct stat *st,
		      struct sid_error *err)
{
	return sid_error_set(err, SID_EINVAL,
			     "--out %s: %s exists and is not a semid-train lock file (%s): remove "
			     "it or name another --out",
			     out, path, kind(st));
}

/* The flock of the lock file @fd failed with @e: tr_lock_take's return. */
static int lock_failed(int fd, const char *out, const char *path, int e, struct sid_error *err)
{
	char text[LOCK_TEXT_MAX + 1], who[LOCK_TEXT_MAX + 32];

	if (e == EWOULDBLOCK) {
		holder(lock_text(fd, text) == 1 ? text : "", who, sizeof(who));
		return sid_error_set(
		    err, SID_EUNAVAIL,
		    "--out %s: another semid-train%s is running with this --out (it "
		    "holds %s): let it finish, or stop it, or give another --out",
		    out, who, path);
	}
	if (e == ENOLCK) {
		sid_error_set(err, SID_EIO, "--out %s: %s cannot be locked here: %s", out, path,
			      strerror(e));
		return 1;
	}
	return sid_error_set(err, SID_EIO, "--out %s: lock %s: %s", out, path, strerror(e));
}

int tr_lock_take(struct tr_lock *l, const char *path, const char *out, struct sid_error *err)
{
	char text[LOCK_TEXT_MAX + 1];
	struct stat st, now;
	int fd, e, ok;

	l->held = 0;
	l->fd = -1;
	if ((size_t)snprintf(l->path, sizeof(l->path), "%s", path) >= sizeof(l->path))
		return sid_error_set(err, SID_EINVAL, "--out %s: path too long", out);
	for (int tries = 0;; tries++) {
		/* not opened unless a regular file: opening a device may act */
		if (lstat(path, &st) == 0 && !S_ISREG(st.st_mode))
			return not_a_lock(out, path, &st, err);
		fd = open(path, O_RDWR | O_CREAT | O_NOFOLLOW | O_NONBLOCK | O_CLOEXEC, 0644);
		if (fd < 0 && errno == EACCES) /* another user's, left: it locks all the same */
			fd = open(path, O_RDONLY | O_NOFOLLOW | O_NONBLOCK | O_CLOEXEC);
		if (fd < 0)
			return sid_error_set(err, SID_EIO, "--out %s: lock file %s: %s", out, path,
					     strerror(errno));
		if (fstat(fd, &st) != 0) {
			e = errno;
			close(fd);
			return sid_error_set(err, SID_EIO, "--out %s: lock file %s: %s", out, path,
					     strerror(e));
		}
		if (!S_ISREG(st.st_mode)) { /* made so between the lstat and the open */
			close(fd);
			return not_a_lock(out, path, &st, err);
		}
		if (flock(fd, LOCK_EX | LOCK_NB) != 0) {
			ok = lock_failed(fd, out, path, errno, err);
			close(fd);
			return ok;
		}
		/* the run that held it removes it before it lets go: locked
		 * once the name names another file (or none), it is no one's */
		if (stat(path, &now) == 0 && now.st_dev == st.st_dev && now.st_ino == st.st_ino)
			break;
		close(fd);
		if (tries == 10)
			return sid_error_set(err, SID_EIO,
					     "--out %s: %s was replaced each time it was locked",
					     out, path);
	}
	if ((ok = lock_text(fd, text)) <= 0) {
		e = errno;
		close(fd); /* left as it is: it may be someone's file */
		if (ok < 0)
			return sid_error_set(err, SID_EIO, "--out %s: lock file %s: %s", out, path,
					     strerror(e));
		return not_a_lock(out, path, &st, err);
	}
	lock_sign(fd);
	l->fd = fd;
	l->held = 1;
	return 0;
}

int tr_lock_take_or_say(struct tr_lock *l, const char *path, const char *out, const char *prog,
			const char *doing, struct sid_error *err)
{
	int rc = tr_lock_take(l, path, out, err);

	if (rc == 1) { /* said, not fatal */
		fprintf(stderr,
			"%s: %s; %s without it: nothing keeps another run with this --out away\n",
			prog, err ? err->msg : "no lock", doing);
		sid_error_clear(err);
		rc = 0;
	}
	return rc;
}

void tr_lock_release(struct tr_lock *l)
{
	struct stat st, now;

	if (!l || !l->held)
		return;
	if (fstat(l->fd, &st) == 0 && stat(l->path, &now) == 0 && now.st_dev == st.st_dev &&
	    now.st_ino == st.st_ino)
		unlink(l->path);
	close(l->fd);
	l->fd = -1;
	l->held = 0;
}
