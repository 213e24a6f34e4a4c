/*
 * fsutil.h - file helpers shared by the programs: atomic publish, whole-file
 * reads with a size cap, line reads with a length cap, read-only memory
 * maps, and sha256 of a buffer; and the signal set-up of programs that
 * publish (catching a signal unless ignored, SIGPIPE on stdout) and of the
 * library's own threads (started with no signal to take).
 *
 * Atomic publish follows redis rdbSave: write "<path>.tmp.<pid>.<n>" in the
 * same directory (the name part cut short when both would exceed NAME_MAX;
 * a name over NAME_MAX fails at once), fsync it, rename over @path, fsync
 * the directory.  On any
 * failure the temp file is removed and @path is untouched.  Where the file
 * system has O_TMPFILE the file has no name until it is complete, so a
 * process killed while writing leaves nothing behind.  A failure's message
 * names @path, and a step on the temp file as "the temporary file for it"
 * (its name never existed with O_TMPFILE, and is gone once it failed).
 * Thread-safe.
 */
#ifndef SID_FSUTIL_H
#define SID_FSUTIL_H

#include <pthread.h>
#include <signal.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <sys/types.h>

#include "err.h"

/* Tests: nonzero makes the publish use a named temp file from the start, as
 * on a file system without O_TMPFILE. */
extern int sid__fsutil_no_tmpfile;

/* 1 when @path names the file @st describes (the same device and inode:
 * a hard link or a symlink to it too), else 0 (also when @path cannot be
 * stat'ed).  For refusing an output that is one of the inputs. */
struct stat;
int sid_same_file(const char *path, const struct stat *st);

/* The network or cluster file system that holds @path, or its directory
 * when @path does not exist yet ("nfs", "cifs", "ceph", ...), or NULL: a
 * local one (FUSE counts as local: it is often a local overlay), or one
 * statfs cannot reach.  For the SQLite registry, whose WAL index lives in
 * memory shared by the processes of one host. */
const char *sid_fs_network(const char *path);
/* The name for statfs's f_type @magic when it is a network or cluster file
 * system, else NULL (sid_fs_network's table, for tests). */
const char *sid__fs_network_name(unsigned long magic);

/* Write @len bytes of @buf to @path atomically (see above). */
int sid_publish_atomic(const char *path, const void *buf, size_t len, struct sid_error *err);

/* The same for a file made of @npc pieces written one after the other (no
 * copy into one buffer: a checkpoint is gigabytes). */
struct sid_piece {
	const void *p;
	size_t len;
};
int sid_publish_atomic_pieces(const char *path, const struct sid_piece *pc, size_t npc,
			      struct sid_error *err);

/* The same, asking @go(@arg) (when not NULL) once the file is written and
 * synced, just before the rename, the last step: when it returns 0,
 * nothing is published and the return is 1.  A trainer told to stop while
 * it wrote a large model publishes nothing (its stop flag, checked there). */
typedef int (*sid_publish_go)(void *arg);
int sid_publish_atomic_pieces_go(const char *path, const struct sid_piece *pc, size_t npc,
				 sid_publish_go go, void *arg, struct sid_error *err);

/*
 * The same for a file written as it is produced (an output of unknown or
 * unbounded size): sid_publish_begin opens the temp file (unnamed where the
 * file system has O_TMPFILE) and gives its descriptor in @pub->fd, the caller
 * writes it, then sid_publish_commit fsyncs it, renames it over @path and
 * fsyncs the directory, or sid_publish_abort closes and removes it.  Either
 * call ends the publish; on a commit failure @path is untouched.  Until the
 * commit, @pub->tmp is the name the file has (@pub->named) or will have for
 * an instant during the commit, for a signal handler to unlink.  Abort on a
 * zeroed, failed or finished @pub is a no-op.
 */
struct sid_publish {
	int fd;	   /* write the contents here */
	int named; /* the temp file has a name in the directory */
	char *path, *tmp;
	size_t name_max; /* the directory's longest name */
	int watch;	 /* 1 + its place among sid_publish_unlink_temps' names, or 0 */
};
int sid_publish_begin(struct sid_publish *pub, const char *path, struct sid_error *err);

/* The same with a temp file named from the start, for a writer that opens
 * the file by its name @pub->tmp (SQLite); a process killed by SIGKILL then
 * leaves it behind.  Since other processes can open it by that name while it
 * is written, it is made readable by its owner only (0600): the caller gives
 * it the file's mode before the commit. */
int sid_publish_begin_named(struct sid_publish *pub, const char *path, struct sid_error *err);
int sid_publish_commit(struct sid_publish *pub, struct sid_error *err);
void sid_publish_abort(struct sid_publish *pub);

/* Remove the temp file of every publish under way whose file has a name (a
 * file system without O_TMPFILE, sid_publish_begin_named, or the instant of
 * a commit), for a signal handler about to end the process: a second Ctrl-C
 * left a temp file as large as a checkpoint.  Async-signal-safe.  Up to 16
 * publishes at once are covered. */
void sid_publish_unlink_temps(void);

/* sigaction(@sig, @sa, @saved), unless the caller's process ignores @sig
 * (nohup): an ignored signal stays ignored.  *@saved is the action before
 * in either case, for restoring. */
void sid_catch_unless_ignored(int sig, const struct sigaction *sa, struct sigaction *saved);

/* Every signal but the synchronous ones (SIGSEGV, SIGBUS, SIGFPE, SIGILL),
 * which a thread cannot hold back: the set to block. */
void sid_signals_async(sigset_t *set);

/*
 * pthread_create for a thread of the library's own (a store's checkpointer):
 * it starts with the asynchronous signals blocked, so that a signal sent to
 * the process goes to a thread of the program's, never to this one.  Taken
 * by such a thread, a SIGTERM left the program's main thread asleep in a read
 * that it was meant to cut short (`semid registry import -` waiting for a
 * line), and the import never stopped.  0 or pthread_create's error.
 */
int sid_thread_start(pthread_t *t, void *(*fn)(void *), void *arg);

/*
 * For a program whose parent left SIGPIPE ignored (some CI runners, a
 * program that ignores it and passes that on): a write into a stdout pipe
 * whose reader went away (`| head -1`) then ends the process at once and
 * quietly with status 141 (128 + SIGPIPE), as the signal's default action
 * ends it otherwise, instead of an error about a broken pipe.  Other
 * broken pipes, and a stdout socket (a systemd unit's journal, which must
 * not end a job when journald restarts), fail with EPIPE as before.  Call
 * once at start, from the main thread, after any re-exec.
 */
void sid_sigpipe_quiet_stdout(void);
/* 1 when stdout is a pipe whose reader went away, else 0; errno kept.
 * Async-signal-safe: for a SIGPIPE handler that tells stdout's broken pipe
 * from another. */
int sid_stdout_pipe_gone(void);
/*
 * Flush stdout at a program's end: 1 when something written to it did not
 * arrive (the flush, or a write before it, failed: a full disk), with @why
 * (@len bytes) ": <the flush's errno>", or "" when only an earlier write
 * failed (its errno is long gone), for the caller's message; else 0.
 */
int sid_stdout_lost(char *why, size_t len);

/*
 * Read a whole regular file into a malloc'ed, NUL-terminated buffer.  Fails
 * with SID_EFORMAT when it is larger than @max_len bytes.
 */
int sid_file_read(const char *path, size_t max_len, uint8_t **out, size_t *out_len,
		  struct sid_error *err);

/*
 * sid_file_read, with @check (when not NULL) given the file's first bytes
 * (up to SID_FILE_HEAD_BYTES; fewer when the file is shorter), its size and
 * its descriptor (to pread more of it) before the rest is read: a nonzero
 * return (a SID_E* code, the message in @err, which gets @path in front)
 * fails the read.  So that a file of the wrong kind (embeddings or a
 * checkpoint copied over a model) is refused from its first bytes, not
 * after gigabytes were read into memory.
 */
#define SID_FILE_HEAD_BYTES 16
typedef int (*sid_file_head_check)(int fd, const uint8_t *head, size_t n, uint64_t size,
				   struct sid_error *err);
int sid_file_read_checked(const char *path, size_t max_len, sid_file_head_check check,
			  uint8_t **out, size_t *out_len, struct sid_error *err);

/* The directory holding @path into @dir (PATH_MAX bytes): "." for a bare
 * name, "/" for a file at the root; -1 when it does not fit. */
int sid_path_dir(const char *path, char *dir);

/*
 * The first bytes of the file at @path, up to @n into @buf (fewer when it is
 * shorter): the count, or -1 when it cannot be opened or read.  Opened
 * non-blocking, so that a FIFO named by mistake does not hang the caller.
 */
ssize_t sid_file_head(const char *path, void *buf, size_t n);

/*
 * What a file most likely is, from its first @n bytes (SID_FILE_HEAD_BYTES
 * are enough): the files an operator gives in the place of another (the
 * embeddings, a PyTorch checkpoint, the ID registry, a compressed copy), as
 * "a .npy array", "gzip-compressed data (decompress it first)"...; NULL for
 * none of those.
 */
const char *sid_file_kind(const void *head, size_t n);

/*
 * The next line of @f into *@buf (malloc'ed, grown as needed and kept for
 * the next call; free it at the end), NUL-terminated: its length with its
 * newline, -1 at the end of the file or on a read error (see ferror), -2
 * when it is longer than @max bytes, newline included (only @max + 1 bytes
 * of it are read: the rest, maybe endless, is never taken into memory), -3
 * out of memory.  *@cap never exceeds @max + 2.  Files from outside (export
 * lines, ids) are read with it so that one long line cannot exhaust memory.
 */
ssize_t sid_line_read(FILE *f, char **buf, size_t *cap, size_t max);

/* For the first line of a text file (@len bytes at @line): a UTF-8 byte
 * order mark in front, which editors on Windows write, is taken out (it was
 * read as part of the first id); returns the new length. */
ssize_t sid_line_drop_bom(char *line, ssize_t len);

/* @bytes as "12.0 KiB", "2.4 MiB", "1.5 GiB" or "3.0 TiB" (the largest unit
 * in which the figure shown, one decimal, is at least 1.0: 1023.96 MiB is
 * "1.0 GiB"; KiB at least, TiB at most), into @buf. */
const char *sid_size_str(double bytes, char *buf, size_t len);

/* A read-only private map of a whole file (len 0 gives addr NULL). */
struct sid_map {
	void *addr;
	size_t len;
};
int sid_map_open(const char *path, struct sid_map *m, struct sid_error *err);
void sid_map_close(struct sid_map *m); /* zeroed or closed map: no-op */

/* SHA-256 of @len bytes, as 64 lowercase hex digits plus NUL. */
void sid_sha256_hex(const void *buf, size_t len, char out[65]);

/* The same over pieces: init, update any number of times, final. */
struct sid_sha256 {
	uint32_t h[8];
	uint8_t buf[64];
	size_t n;	/* bytes pending in buf */
	uint64_t total; /* bytes so far */
};
void sid_sha256_init(struct sid_sha256 *c);
void sid_sha256_update(struct sid_sha256 *c, const void *buf, size_t len);
void sid_sha256_final_hex(struct sid_sha256 *c, char out[65]);

#endif
