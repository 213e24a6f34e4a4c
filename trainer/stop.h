/*
 * stop.h - a clean stop on SIGINT, SIGTERM or SIGHUP for the trainer's long
 * jobs (training, eval, gen).
 *
 * While installed, the first such signal only sets a flag: the job checks
 * tr_stop_signal() at points where it can stop without leaving anything
 * half-written, cleans up, and returns the signal number (the program then
 * exits with 128 + it, as a shell reports a signal).  A second signal ends
 * the process at once (the default action), or, within tr_stop_hold, at
 * tr_stop_release, removing first the named temp files being published
 * and the lock files held (lock.h).  A signal the caller ignores (nohup)
 * stays ignored.  SIGBUS, from a mapped input (items.npy, users.npy)
 * truncated while in use, ends it with a message and exit status 1 instead
 * of a bare crash, those files removed too.  SIGUSR1 and SIGUSR2, whose
 * default action ended a run at once without a word (its epoch lost, its
 * lock file left), are ignored with a line saying so, as semid-server
 * ignores them.  A job takes its lock after
 * tr_stop_install and releases it before tr_stop_restore, so that no
 * signal in between ends it by the default action with the lock file left.
 * Not thread-safe: install and restore from the main thread.
 */
#ifndef TR_STOP_H
#define TR_STOP_H

#include <signal.h>

#define TR_STOP_NSIG 3

struct tr_stop_saved {
	struct sigaction sa[TR_STOP_NSIG];
	struct sigaction bus;
	struct sigaction usr[2]; /* SIGUSR1, SIGUSR2 */
};

void tr_stop_install(struct tr_stop_saved *saved);
void tr_stop_restore(const struct tr_stop_saved *saved);

/* The signal that asked for the stop, or 0. */
int tr_stop_signal(void);

/* Across a step that must not be cut in two, such as renaming a set of
 * files into place, a second signal does not end the process at once but
 * at tr_stop_release (whichever thread takes it: blocking it in this one
 * would not do, OpenBLAS's threads take it as well). */
void tr_stop_hold(void);
void tr_stop_release(void);

/* "SIGINT", "SIGTERM" or "SIGHUP". */
const char *tr_stop_name(int sig);

/* The error of a job that heeded tr_stop_signal(): SID_EIO, and "@what
 * stopped by SIGTERM" in @err (may be NULL).  The caller, seeing
 * tr_stop_signal() set, reports a stop rather than the message. */
struct sid_error;
int tr_stop_error(struct sid_error *err, const char *what);

/* Tests: sleep the milliseconds the environment variable @var gives, if
 * any, to hold a window open for a signal (tests/trainer/test_train.py). */
void tr__test_hook_sleep(const char *var);

#endif
