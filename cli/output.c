/*
 * output.c - where `semid` commands write (see cli.h): "-" is stdout, a
 * regular file (or a new name) is published atomically through fsutil.h's
 * sid_publish (an unnamed O_TMPFILE file that gets its name only when
 * complete), so however the process ends, even by SIGKILL, the directory
 * holds the old file or the complete new one and nothing else.  Anything
 * else that exists (/dev/null, a FIFO, /dev/stdout) is written in place: it
 * cannot be replaced by a rename, and must not be.  A symbolic link is never
 * renamed over: one that names a descriptor of this process (/dev/stdout)
 * is written through that descriptor, another is followed to the file it
 * names (link_target).
 *
 * While an output is open, SIGINT, SIGTERM and SIGHUP remove a named temp
 * file (a file system without O_TMPFILE), say what that leaves of the output,
 * and end the process with that signal; SIGBUS, from an input file truncated while it is mapped,
 * does the same after saying so, and exits 1.  While a device output is open, SIGPIPE leaves its
 * write failing (EPIPE, reported with the path) unless stdout's own reader is the one gone
 * (on_sigpipe).
 *
 * What is written in place goes out in whole lines (lines_open).
 */
#include "cli.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <pthread.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "env.h"

/* ---- signals -------------------------------------------------------------- */

/* What a stop leaves of the open output, after "semid: stopped by SIGINT"
 * (signals_install): the process said nothing, and a Ctrl-C's
 * output might have been taken for complete. */
static char said[4096 + 128];
static size_t said_len;
/* "semid: " and the mapped input's path, for the SIGBUS message */
static char mapped[4096 + 8];
static size_t mapped_len;

void cli_output_mapped_input(const char *path)
{
	int k = path ? snprintf(mapped, sizeof(mapped), "semid: %s: ", path) : 0;
	mapped_len = k < 0 ? 0 : (size_t)k < sizeof(mapped) ? (size_t)k : sizeof(mapped) - 1;
}

static void on_signal(int sig)
{
	static const char bus[] = "semid: an input file shrank or failed while being read "
				  "(SIGBUS); stopped\n";
	static const char bus_named[] = "the file shrank or failed while being read "
					"(SIGBUS); stopped\n";
	static const char by[] = "semid: stopped by ";
	const char *name = sig == SIGINT ? "SIGINT" : sig == SIGTERM ? "SIGTERM" : "SIGHUP";
	int saved = errno; /* the signal, blocked in here, is taken as the handler returns */
	ssize_t n;

	sid_publish_unlink_temps(); /* a named temp file (fsutil.h) */
	if (sig == SIGBUS) {
		/* a mapped page past the end of a file truncated under us */
		if (mapped_len && write(STDERR_FILENO, mapped, mapped_len) > 0)
			n = write(STDERR_FILENO, bus_named, sizeof(bus_named) - 1);
		else
			n = write(STDERR_FILENO, bus, sizeof(bus) - 1);
		(void)n;
		_exit(CLI_EXIT_IO);
	}
	/* a stderr whose reader is gone must not end it by SIGPIPE instead */
	signal(SIGPIPE, SIG_IGN);
	/* a part that cannot be written (stderr gone): the rest is not tried */
	if (write(STDERR_FILENO, by, sizeof(by) - 1) > 0 &&
	    write(STDERR_FILENO, name, strlen(name)) > 0) {
		n = write(STDERR_FILENO, said, said_len);
		(void)n;
	}
	signal(sig, SIG_DFL);
	raise(sig);
	errno = saved;
}

static const int caught[CLI_OUTPUT_SIGNALS] = {SIGINT, SIGTERM, SIGHUP, SIGBUS};

/* SIGPIPE's action before on_sigpipe; the catches not yet released (a
 * command's own, an output's or a log's within it). */
static struct sigaction pipe_saved;
static int pipe_caught;

/* A write into a pipe or socket with no reader while a named output is open
 * (-o FIFO): that output's reader gone fails the write with EPIPE, which
 * the command reports naming the path (SIGPIPE's default action ended the
 * process without a word); stdout's reader gone is still the quiet stop of
 * cli.h, by the action before. */
static void on_sigpipe(int sig)
{
	if (sid_stdout_pipe_gone()) {
		sigaction(sig, &pipe_saved, NULL);
		raise(sig); /* taken as this handler returns */
	}
}

static void signals_install(struct cli_output *w)
{
	struct sigaction sa;
	sigset_t bus;
	size_t i;
	int k;

	if (w->kind == CLI_OUT_FILE)
		k = snprintf(said, sizeof(said),
			     "; nothing written to %s (it gets its name only when complete)\n",
			     w->path);
	else
		k = snprintf(said, sizeof(said), "; %s got whole lines, not all of them\n",
			     cli_output_name(w));
	said_len = k < 0 ? 0 : (size_t)k < sizeof(said) ? (size_t)k : sizeof(said) - 1;

	memset(&sa, 0, sizeof(sa));
	sa.sa_handler = on_signal;
	sigemptyset(&sa.sa_mask);
	for (i = 0; i < CLI_OUTPUT_SIGNALS; i++) {
		/* SIGBUS is a fault, which no SIG_IGN a parent left holds back
		 * (the kernel kills by it, without a word): caught all the same */
		if (caught[i] == SIGBUS)
			sigaction(SIGBUS, &sa, &w->saved[i]);
		else
			sid_catch_unless_ignored(caught[i], &sa, &w->saved[i]);
	}
	/* nor does a mask a parent left blocking it: the kernel takes the
	 * handler away for a fault that is blocked (threads started from here
	 * on inherit the mask) */
	sigemptyset(&bus);
	sigaddset(&bus, SIGBUS);
	pthread_sigmask(SIG_UNBLOCK, &bus, NULL);
	if (w->kind == CLI_OUT_DEVICE) {
		cli_output_pipe_catch();
		w->pipe_on = 1;
	}
	w->signals_on = 1;
}

void cli_output_pipe_catch(void)
{
	struct sigaction sa;

	if (pipe_caught++)
		return;
	memset(&sa, 0, sizeof(sa));
	sa.sa_handler = on_sigpipe;
	sa.sa_flags = SA_RESTART;
	sigemptyset(&sa.sa_mask);
	sigaction(SIGPIPE, &sa, &pipe_saved);
}

void cli_output_pipe_release(void)
{
	if (pipe_caught && !--pipe_caught)
		sigaction(SIGPIPE, &pipe_saved, NULL);
}

static void signals_restore(struct cli_output *w)
{
	size_t i;

	if (!w->signals_on)
		return;
	for (i = 0; i < CLI_OUTPUT_SIGNALS; i++)
		sigaction(caught[i], &w->saved[i], NULL);
	if (w->pipe_on)
		cli_output_pipe_release();
	w->signals_on = w->pipe_on = 0;
}

/* ---- whole lines ---------------------------------------------------------- */

/*
 * A stream over a descriptor that is written in place (stdout, a FIFO, a
 * device).  stdio wrote its buffer wherever it was full, so a process ended
 * by a signal (a Ctrl-C, a timeout's SIGTERM) left its reader a last line
 * cut short, "4359\t200-9" of "4359\t200-9-136", read as a complete, shorter
 * ID.  Here each write(2) ends at a line's end and is at most PIPE_BUF
 * bytes, which a pipe takes whole or not at all; only a line longer than
 * that goes out in pieces.  The bytes after the last newline wait for the
 * rest of their line, or for the close.
 */
struct lines {
	int fd, own; /* own: closed with the stream */
	size_t n;    /* bytes held: a line begun */
	char held[PIPE_BUF];
};

static int lines_put(int fd, const char *p, size_t len)
{
	while (len) {
		ssize_t k = write(fd, p, len);
		if (k < 0 && errno == EINTR)
			continue;
		if (k <= 0)
			return -1;
		p += k;
		len -= (size_t)k;
	}
	return 0;
}

static ssize_t lines_write(void *cookie, const char *buf, size_t len)
{
	struct lines *l = cookie;
	size_t at = 0;

	while (at < len) {
		size_t take = len - at, out;
		const char *nl;

		if (take > sizeof(l->held) - l->n)
			take = sizeof(l->held) - l->n;
		memcpy(l->held + l->n, buf + at, take);
		l->n += take;
		nl = memrchr(l->held, '\n', l->n);
		if (!nl && l->n < sizeof(l->held))
			return (ssize_t)len; /* a line begun: the rest comes later */
		out = nl ? (size_t)(nl - l->held) + 1 : l->n; /* longer than PIPE_BUF: a piece */
		if (lines_put(l->fd, l->held, out)) {
			/* The bytes taken before (errno says why not these):
			 * never -1, which glibc takes for a count of SIZE_MAX
			 * and then copies one byte more than it was given from
			 * past the caller's buffer (fopencookie(3): "must not
			 * return a negative value"). */
			l->n -= take;
			return (ssize_t)at;
		}
		at += take;
		memmove(l->held, l->held + out, l->n - out);
		l->n -= out;
	}
	return (ssize_t)len;
}

static int lines_close(void *cookie)
{
	struct lines *l = cookie;
	int rc = l->n ? lines_put(l->fd, l->held, l->n) : 0, e = errno;

	if (l->own && close(l->fd) != 0 && rc == 0)
		rc = -1;
	else
		errno = e;
	free(l);
	return rc;
}

/* A stream of whole lines on @fd (closed with it when @own), or NULL (errno
 * set, @fd left open). */
static FILE *lines_open(int fd, int own)
{
	cookie_io_functions_t io = {NULL, lines_write, NULL, lines_close};
	struct lines *l = calloc(1, sizeof(*l));
	FILE *f;

	if (!l)
		return NULL;
	l->fd = fd;
	l->own = own;
	if (!(f = fopencookie(l, "w", io)))
		free(l);
	return f;
}

/* ---- the output ----------------------------------------------------------- */

/* Refuse to write over one of @inputs (the same file, by device and inode). */
int cli_output_not_input(const char *path, const struct stat *st, const char *const *inputs,
			 struct sid_error *err)
{
	for (; inputs && *inputs; inputs++)
		if (sid_same_file(*inputs, st))
			return sid_error_set(err, SID_EINVAL,
					     "--output %s is the input file %s; write the "
					     "output elsewhere",
					     path, *inputs);
	return 0;
}

int cli_output_std_not_input(FILE *std, const char *const *inputs, struct sid_error *err)
{
	struct stat st;

	/* a shell's 1<>FILE, or a descriptor inherited so: fd 1 is then the
	 * file, and writing it destroyed the input as it was read */
	if (fstat(fileno(std), &st) != 0 || !S_ISREG(st.st_mode))
		return 0;
	return cli_output_not_input(std == stderr ? "- (stderr)" : "- (stdout)", &st, inputs, err);
}

/* N when @name is this process's descriptor N by a name of /proc's
 * (/dev/stdout, /dev/stderr, /dev/fd/N, /proc/self/fd/N, /proc/PID/fd/N),
 * else -1. */
static int fd_of_name(const char *name)
{
	static const char *const dirs[] = {"/dev/fd/", "/proc/self/fd/", "/proc/thread-self/fd/"};
	char own[64];
	const char *num = NULL;
	long n;

	if (!strcmp(name, "/dev/stdout"))
		return STDOUT_FILENO;
	if (!strcmp(name, "/dev/stderr"))
		return STDERR_FILENO;
	snprintf(own, sizeof(own), "/proc/%ld/fd/", (long)getpid());
	for (size_t i = 0; i < sizeof(dirs) / sizeof(dirs[0]) && !num; i++)
		if (!strncmp(name, dirs[i], strlen(dirs[i])))
			num = name + strlen(dirs[i]);
	if (!num && !strncmp(name, own, strlen(own)))
		num = name + strlen(own);
	return num && !sid_whole_parse(num, 0, INT_MAX, &n) ? (int)n : -1;
}

/* The relative target @to of the link @name as the kernel takes it: from
 * the link's directory, the directories on the way followed (realpath), the
 * last part as it is ("../../dev/stdout" is /dev/stdout, not a file to
 * replace); in @out (4096 bytes), or NULL. */
static const char *link_relative(const char *name, const char *to, char *out)
{
	char join[2 * 4096 + 2], real[PATH_MAX];
	const char *slash = strrchr(name, '/'), *dir = ".", *base = join;
	char *last;

	if (snprintf(join, sizeof(join), "%.*s%s", slash ? (int)(slash - name) + 1 : 0, name, to) >=
	    (int)sizeof(join))
		return NULL;
	if ((last = strrchr(join, '/'))) {
		*last = '\0';
		dir = join[0] ? join : "/";
		base = last + 1;
	}
	if (!realpath(dir, real) ||
	    snprintf(out, 4096, "%s/%s", strcmp(real, "/") ? real : "", base) >= 4096)
		return NULL;
	return out;
}

/* The descriptor N that @path names, itself or through symbolic links
 * (a link to /dev/stdout, absolute or relative), by one of fd_of_name's
 * names; else -1. */
static int fd_named(const char *path)
{
	char link[2][4096], rel[4096];
	const char *name = path;
	ssize_t n;
	int fd;

	for (int hop = 0; hop < 8; hop++) {
		char *to = link[hop & 1];

		if ((fd = fd_of_name(name)) >= 0)
			return fd;
		n = readlink(name, to, sizeof(link[0]) - 1);
		if (n <= 0)
			return -1;
		to[n] = '\0';
		if (to[0] != '/') { /* from the link's directory, not the process's */
			if (!link_relative(name, to, rel))
				return -1;
			memcpy(to, rel, strlen(rel) + 1);
		}
		name = to;
	}
	return -1;
}

int cli_output_fd_check(const char *path, struct sid_error *err)
{
	int fd = fd_named(path), fl = fd >= 0 ? fcntl(fd, F_GETFL) : -1;

	if (fd < 0 || (fl >= 0 && (fl & O_ACCMODE) != O_RDONLY))
		return 0;
	return sid_error_set(err, SID_EIO, "%s: cannot write the output: descriptor %d is not %s",
			     path, fd, fl < 0 ? "open" : "open for writing");
}

/*
 * The descriptor of this process that @path (@st: its stat) stands for
 * (fd_named), when it is that same file and open for writing; else -1.
 * Opening such a name makes a new open file, at offset 0 and without
 * O_APPEND: it would write over what the caller wrote before, or over the
 * log it appends to.
 */
static int own_descriptor(const char *path, const struct stat *st)
{
	struct stat fst;
	int fd = fd_named(path), fl = fd >= 0 ? fcntl(fd, F_GETFL) : -1;

	if (fl < 0 || (fl & O_ACCMODE) == O_RDONLY || fstat(fd, &fst) != 0 ||
	    fst.st_dev != st->st_dev || fst.st_ino != st->st_ino)
		return -1;
	return fd;
}

/*
 * Where the output @path really goes.  A symbolic link is not replaced by
 * the publishing rename.  One that names a descriptor of this process
 * (/dev/stdout, /dev/fd/N, a link to them), or a path in /dev or /proc
 * that leads to no file (a pipe's or a socket's), is written in place
 * (*@in_place), as the stream it stands for; any other is followed to the
 * file it names, in @w->target, which is then the file replaced (or, a
 * device, written in place), wherever it is (/dev/shm).  The path to
 * publish, or NULL (SID_EIO set) for a link that leads nowhere.
 */
static const char *link_target(struct cli_output *w, const char *path, int *in_place,
			       struct sid_error *err)
{
	struct stat lst;
	char to[4096];
	ssize_t n;

	*in_place = 0;
	if (lstat(path, &lst) != 0 || !S_ISLNK(lst.st_mode))
		return path;
	n = readlink(path, to, sizeof(to) - 1);
	to[n > 0 ? n : 0] = '\0';
	if (fd_named(path) >= 0) {
		*in_place = 1;
		return path;
	}
	if (!realpath(path, w->target)) {
		w->target[0] = '\0';
		if (!strncmp(path, "/dev/", 5) || !strncmp(path, "/proc/", 6) ||
		    !strncmp(to, "/dev/", 5) || !strncmp(to, "/proc/", 6)) {
			*in_place = 1;
			return path;
		}
		sid_error_set(err, SID_EIO,
			      "%s: a symbolic link to %s, which cannot be followed: %s; name the "
			      "file itself",
			      path, to, strerror(errno));
		return NULL;
	}
	return w->target;
}

/* An output that is a directory cannot be created (SID_EIO), whichever
 * command's it is. */
static int not_a_directory(const char *path, const struct stat *st, struct sid_error *err)
{
	if (S_ISDIR(st->st_mode))
		return sid_error_set(err, SID_EIO,
				     "%s: cannot create the output: it is a directory", path);
	return 0;
}

int cli_output_open_named(struct cli_output *w, const char *path, const char *const *inputs,
			  struct sid_error *err)
{
	struct stat st;
	int rc, in_place;

	memset(w, 0, sizeof(*w));
	w->path = path;
	w->pub.fd = w->fd = -1;
	if (!path || !*path) /* as cli_output_open says it */
		return sid_error_set(err, SID_EINVAL, "--output is empty");
	if (!strcmp(path, "-"))
		return sid_error_set(err, SID_EINVAL, "--output must name a file, not stdout");
	/* a link is followed, as for any output: the file it names is
	 * replaced, not the link; a descriptor's (/dev/stdout) is no file */
	if (!(path = link_target(w, path, &in_place, err)))
		return SID_EIO;
	if (stat(path, &st) == 0) {
		if ((rc = cli_output_not_input(path, &st, inputs, err)) < 0 ||
		    (rc = not_a_directory(path, &st, err)) < 0)
			return rc;
		if (!S_ISREG(st.st_mode) || in_place)
			return sid_error_set(err, SID_EINVAL,
					     "--output %s is not a regular file; name a file",
					     w->path);
	}
	w->kind = CLI_OUT_FILE;
	signals_install(w); /* before the temp file is, see cli_output_open */
	if ((rc = sid_publish_begin_named(&w->pub, path, err)) < 0)
		signals_restore(w);
	return rc < 0 ? rc : 0;
}

int cli_output_open(struct cli_output *w, const char *path, FILE *std, const char *const *inputs,
		    struct sid_error *err)
{
	struct stat st;
	int rc, fd = -1, e, in_place, replaces;

	memset(w, 0, sizeof(*w));
	w->path = path;
	w->pub.fd = w->fd = -1;
	if (!path || !*path)
		return sid_error_set(err, SID_EINVAL, "--output is empty");
	if (strcmp(path, "-") == 0) {
		if ((rc = cli_output_std_not_input(std, inputs, err)) < 0)
			return rc;
		w->fd = fileno(std);
		w->borrowed = w->fd < 0; /* a memory stream (tests) */
		if (fflush(std) != 0 || !(w->fp = w->borrowed ? std : lines_open(w->fd, 0)))
			return sid_error_set(err, SID_EIO, "stdout: write: %s", strerror(errno));
		w->kind = CLI_OUT_STDOUT;
		signals_install(w);
		return 0;
	}
	if ((rc = cli_output_fd_check(path, err)) < 0 ||
	    !(path = link_target(w, path, &in_place, err)))
		return rc < 0 ? rc : SID_EIO;
	if (in_place && stat(path, &st) != 0) /* never renamed over: that is the link */
		return sid_error_set(err, SID_EIO, "%s: cannot open the output: %s", path,
				     strerror(errno));
	if ((replaces = stat(path, &st) == 0)) {
		if ((rc = cli_output_not_input(path, &st, inputs, err)) < 0)
			return rc;
		if ((rc = not_a_directory(path, &st, err)) < 0)
			return rc;
		if (!S_ISREG(st.st_mode) || in_place) { /* /dev/null, a FIFO, /dev/stdout */
			int own = in_place ? own_descriptor(path, &st) : -1;

			fd = own >= 0 ? fcntl(own, F_DUPFD_CLOEXEC, 0)
				      : open(path, O_WRONLY | O_CLOEXEC | O_NOCTTY);
			if (fd < 0 || !(w->fp = lines_open(fd, 1))) {
				e = errno;
				if (fd >= 0)
					close(fd);
				return sid_error_set(err, SID_EIO, "%s: cannot open the output: %s",
						     path, strerror(e));
			}
			w->fd = fd;
			w->kind = CLI_OUT_DEVICE;
			signals_install(w);
			return 0;
		}
	}
	w->kind = CLI_OUT_FILE;
	/* Its message as it is: it names the output, says the temporary file
	 * for it could not be created beside it and why, and its code says out of memory apart
	 * from a file system error (errno once it returns is no promise). */
	/* Caught before the temp file is: a stop the moment it opened ended
	 * the process without a word (what the output was left went unsaid). */
	signals_install(w);
	if ((rc = sid_publish_begin(&w->pub, path, err)) < 0) {
		signals_restore(w);
		return rc;
	}
	/* the mode of the file it replaces, from the start: a private file
	 * stays private; an owner that cannot be given (not root) is not */
	if (replaces && (fchmod(w->pub.fd, st.st_mode & 07777) != 0 ||
			 (fchown(w->pub.fd, st.st_uid, st.st_gid) != 0 && errno != EPERM))) {
		e = errno;
		cli_output_abort(w);
		return sid_error_set(err, SID_EIO,
				     "%s: cannot give the output the mode of the file it "
				     "replaces: %s",
				     path, strerror(e));
	}
	fd = fcntl(w->pub.fd, F_DUPFD_CLOEXEC, 0);
	if (fd < 0 || !(w->fp = fdopen(fd, "w"))) {
		e = errno;
		if (fd >= 0)
			close(fd);
		cli_output_abort(w);
		return sid_error_set(err, SID_EIO, "%s: cannot create the output: %s", path,
				     strerror(e));
	}
	w->fd = fd;
	return 0;
}

const char *cli_output_name(const struct cli_output *w)
{
	return w->kind == CLI_OUT_STDOUT ? "stdout" : w->path;
}

const char *cli_output_file(const struct cli_output *w)
{
	return w->target[0] ? w->target : w->path;
}

int cli_output_commit(struct cli_output *w, struct sid_error *err)
{
	int rc = 0;

	if (!w->fp && !w->pub.path) /* zeroed or ended */
		return 0;
	if (w->fp) {
		if (fflush(w->fp) != 0 || ferror(w->fp))
			rc = sid_error_set(err, SID_EIO, "%s: write: %s", cli_output_name(w),
					   strerror(errno));
		/* stdout's stream: the end of a last line without one */
		if (!w->borrowed && fclose(w->fp) != 0 && rc == 0)
			rc = sid_error_set(err, SID_EIO, "%s: write: %s", cli_output_name(w),
					   strerror(errno));
		w->fp = NULL;
		w->fd = -1;
	}
	if (w->kind == CLI_OUT_FILE) {
		if (rc == 0)
			rc = sid_publish_commit(&w->pub, err);
		else
			sid_publish_abort(&w->pub);
	}
	signals_restore(w);
	return rc;
}

void cli_output_abort(struct cli_output *w)
{
	if (w->fp) {
		/* stdout's: the rows before the failure are worth having */
		if (w->borrowed)
			fflush(w->fp);
		else
			fclose(w->fp);
		w->fp = NULL;
		w->fd = -1;
	}
	if (w->kind == CLI_OUT_FILE)
		sid_publish_abort(&w->pub);
	signals_restore(w);
}
