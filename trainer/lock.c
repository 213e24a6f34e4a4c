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
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#define LOCK_TEXT_MAX 320 /* "PID HOST\n" (a host name is 64 bytes at most) */

/* The locks tr_lock_unlink_held removes: a slot is claimed, filled, then
 * made live; a handler reads only live ones.  A process holds one (a
 * training's, or gen's); a few more are room for tests. */
#define HELD_MAX 4
static struct {
	int claimed;
	volatile sig_atomic_t live;
	int fd;
	char path[PATH_MAX];
} held_locks[HELD_MAX];

/* @l, just taken, into a slot (none free: not covered, as a SIGKILL) */
static void held_add(struct tr_lock *l)
{
	for (int k = 0; k < HELD_MAX; k++) {
		int free_slot = 0;
		if (!__atomic_compare_exchange_n(&held_locks[k].claimed, &free_slot, 1, 0,
						 __ATOMIC_ACQ_REL, __ATOMIC_RELAXED))
			continue;
		held_locks[k].fd = l->fd;
		memcpy(held_locks[k].path, l->path, strlen(l->path) + 1);
		__atomic_store_n(&held_locks[k].live, 1, __ATOMIC_SEQ_CST);
		l->slot = k + 1;
		return;
	}
}

static void held_drop(struct tr_lock *l)
{
	int k = l->slot - 1;

	if (k < 0)
		return;
	__atomic_store_n(&held_locks[k].live, 0, __ATOMIC_SEQ_CST);
	__atomic_store_n(&held_locks[k].claimed, 0, __ATOMIC_RELEASE);
	l->slot = 0;
}

/* Remove @path if it still names the file open as @fd (async-signal-safe). */
static void unlink_if_same(int fd, const char *path)
{
	struct stat st, now;

	if (fstat(fd, &st) == 0 && stat(path, &now) == 0 && now.st_dev == st.st_dev &&
	    now.st_ino == st.st_ino)
		unlink(path);
}

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
	l->slot = 0;
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
	held_add(l);
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
	if (!l || !l->held)
		return;
	unlink_if_same(l->fd, l->path);
	held_drop(l); /* after the unlink (a signal between: the file is gone, or another's) */
	close(l->fd); /* after the drop: a handler no longer looks at this fd */
	l->fd = -1;
	l->held = 0;
}

void tr_lock_unlink_held(void)
{
	for (int k = 0; k < HELD_MAX; k++)
		if (__atomic_load_n(&held_locks[k].live, __ATOMIC_SEQ_CST))
			unlink_if_same(held_locks[k].fd, held_locks[k].path);
}
