/*
 * lock.h - the lock one training holds on its --out: "<out>.lock" beside
 * the model, locked (flock, exclusive) from before the data is read until
 * the run ends, so that a second semid-train with the same --out (a cron
 * job overlapping a slow run, two operators, a --resume beside a running
 * one) is refused at once instead of sharing "<out>.ckpt" with it and
 * racing it to the publish.  Not the model file itself, which a server may
 * watch and which the publish replaces (a lock on the old inode would not
 * hold), nor the directory, which other outputs share.  `semid-train gen`
 * holds one the same way on DIR/gen.lock (gen.h) for its whole run: two gens
 * into one directory renamed their files among each other's.
 *
 * The file holds "PID HOST\n" of the run that holds it, for the message
 * that refuses another.  It is removed when the run ends, and when a signal
 * ends it at once (stop.h's second signal, SIGBUS: tr_lock_unlink_held).
 * A run killed with SIGKILL (the OOM killer) leaves it, unlocked (a flock
 * ends with its process): harmless, and the next run with that --out takes
 * it over.
 *
 * Not thread-safe: a struct tr_lock is one thread's.
 */
#ifndef TR_LOCK_H
#define TR_LOCK_H

#include <limits.h>
#include <stddef.h>

#include "err.h"

struct tr_lock {
	int held; /* zeroed: not held */
	int fd;
	int slot;	     /* 1 + its place among tr_lock_unlink_held's, or 0 */
	char path[PATH_MAX]; /* gen's DIR/gen.lock may be longer than an --out */
};

/* "<out>.lock" for @out, into @buf (@len bytes); -1 when it does not fit. */
int tr_lock_path(const char *out, char *buf, size_t len);

/*
 * Lock @path (tr_lock_path of @out, which messages name), made if missing.
 * 0: held.  1: the file system has no locks (ENOLCK: an NFS mount without
 * its lock daemon), @err saying so, not held: the caller may go on
 * unprotected.  Or a negative code, not held: SID_EUNAVAIL when another
 * process holds it, @err naming the file and that process's PID (and its
 * host when another); SID_EINVAL when @path exists as something else than
 * a lock file (a directory, a link, a file with other contents: it is
 * left as it is); SID_EIO when it cannot be made or locked.
 */
int tr_lock_take(struct tr_lock *l, const char *path, const char *out, struct sid_error *err);

/*
 * tr_lock_take, but where the file system has no locks (its 1) it says so
 * on stderr ("@prog: ...; @doing without it: ...") and returns 0, not held:
 * the run goes on unprotected.  Other returns as tr_lock_take's.
 */
int tr_lock_take_or_say(struct tr_lock *l, const char *path, const char *out, const char *prog,
			const char *doing, struct sid_error *err);

/* Remove the file and unlock it, if @l holds it; else nothing. */
void tr_lock_release(struct tr_lock *l);

/* Remove the file of every lock held (taken and not released), for a
 * signal handler about to end the process: async-signal-safe, and the
 * flocks end with the process.  A file that is no longer the one locked
 * (removed, and another run's made in its place) is left. */
void tr_lock_unlink_held(void);

#endif
