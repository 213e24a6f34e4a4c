/*
 * stop.c - the trainer's clean stop on SIGINT / SIGTERM / SIGHUP (stop.h).
 */
#include "stop.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "env.h"
#include "err.h"
#include "fsutil.h"
#include "lock.h"

static volatile sig_atomic_t stop_signal;    /* the signal that asked, or 0 */
static volatile sig_atomic_t held, held_sig; /* tr_stop_hold; a second signal then */
static const int stop_signals[TR_STOP_NSIG] = {SIGINT, SIGTERM, SIGHUP};

/* End the process by @sig now, leaving no named temp file and no lock
 * file (a second signal, in a handler or at tr_stop_release). */
static void end_now(int sig)
{
	sid_publish_unlink_temps();
	tr_lock_unlink_held();
	signal(sig, SIG_DFL);
	raise(sig);
}

static void on_stop_signal(int sig)
{
	if (stop_signal && held) { /* asked twice: at tr_stop_release */
		held_sig = sig;
		return;
	}
	if (stop_signal) { /* asked twice: stop now */
		end_now(sig);
		return;
	}
	stop_signal = sig;
}

static void on_bus(int sig)
{
	static const char msg[] =
	    "\nsemid-train: an input file (a mapped .npy) shrank or failed while being read "
	    "(SIGBUS): was it rewritten during the run?  Stopped; a checkpoint keeps the "
	    "epochs finished before\n";
	ssize_t n = write(STDERR_FILENO, msg, sizeof(msg) - 1);
	(void)n;
	(void)sig;
	sid_publish_unlink_temps();
	tr_lock_unlink_held();
	_exit(1);
}

/* SIGUSR1, SIGUSR2: a line, and the run goes on. */
static void on_usr(int sig)
{
	static const char usr1[] = "semid-train: SIGUSR1 ignored: the run goes on (SIGINT, "
				   "SIGTERM or SIGHUP stop it cleanly)\n";
	static const char usr2[] = "semid-train: SIGUSR2 ignored: the run goes on (SIGINT, "
				   "SIGTERM or SIGHUP stop it cleanly)\n";
	struct sigaction ign, pipe;
	int saved = errno;
	ssize_t n;

	/* a stderr whose reader is gone: the line is lost, not the run */
	memset(&ign, 0, sizeof(ign));
	ign.sa_handler = SIG_IGN;
	sigemptyset(&ign.sa_mask);
	sigaction(SIGPIPE, &ign, &pipe);
	n = sig == SIGUSR1 ? write(STDERR_FILENO, usr1, sizeof(usr1) - 1)
			   : write(STDERR_FILENO, usr2, sizeof(usr2) - 1);
	sigaction(SIGPIPE, &pipe, NULL);
	(void)n;
	errno = saved;
}

void tr_stop_install(struct tr_stop_saved *saved)
{
	struct sigaction sa;
	memset(&sa, 0, sizeof(sa));
	sa.sa_handler = on_stop_signal;
	sigemptyset(&sa.sa_mask);
	sa.sa_flags = SA_RESTART; /* a write under way goes on */
	stop_signal = held = held_sig = 0;
	for (int i = 0; i < TR_STOP_NSIG; i++)
		sid_catch_unless_ignored(stop_signals[i], &sa, &saved->sa[i]);
	sa.sa_handler = on_usr; /* SA_RESTART still */
	sid_catch_unless_ignored(SIGUSR1, &sa, &saved->usr[0]);
	sid_catch_unless_ignored(SIGUSR2, &sa, &saved->usr[1]);
	sa.sa_handler = on_bus;
	sa.sa_flags = 0;
	sigaction(SIGBUS, &sa, &saved->bus);
}

void tr_stop_restore(const struct tr_stop_saved *saved)
{
	for (int i = 0; i < TR_STOP_NSIG; i++)
		sigaction(stop_signals[i], &saved->sa[i], NULL);
	sigaction(SIGBUS, &saved->bus, NULL);
	sigaction(SIGUSR1, &saved->usr[0], NULL);
	sigaction(SIGUSR2, &saved->usr[1], NULL);
}

void tr_stop_hold(void)
{
	held = 1;
}

void tr_stop_release(void)
{
	held = 0;
	if (held_sig) /* asked twice meanwhile */
		end_now(held_sig);
}

int tr_stop_signal(void)
{
	return stop_signal;
}

const char *tr_stop_name(int sig)
{
	return sig == SIGINT ? "SIGINT" : sig == SIGTERM ? "SIGTERM" : "SIGHUP";
}

int tr_stop_error(struct sid_error *err, const char *what)
{
	return sid_error_set(err, SID_EIO, "%s stopped by %s", what,
			     tr_stop_name(tr_stop_signal()));
}

void tr__test_hook_sleep(const char *var)
{
	long ms = sid_env_test_ms(getenv(var)); /* garbage is none, not atoi's guess */
	if (ms > 0)
		usleep((useconds_t)ms * 1000);
}
