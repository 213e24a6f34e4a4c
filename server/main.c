/*
 * main.c - semid-server: parse the command line, wire the parts, run.
 *
 * Architecture (each part is one file with its manual in the header):
 *   http.c     libmicrohttpd threads: route, read and validate requests
 *              (api.c), suspend the connection, hand the job on
 *   batcher.c  the libuv loop thread (this one, after start-up): gathers jobs
 *              per tower into batches (max_batch rows or max_delay_us), runs
 *              them on the libuv pool (one batch per worker at a time), and
 *              resumes each connection with its response
 *   reload.c   the served model: watch / SIGHUP / admin reload, load aside,
 *              smoke encode, swap one reference-counted pointer
 *   assign.c   the registry lane: assign requests, once encoded by the
 *              batcher, are committed to the ID registry (store.c: SQLite or
 *              PostgreSQL, core/registry.h) in groups on extra pool threads
 *              (one per store writer); registry lookups run there too
 *   metrics.c  Prometheus text; log.c logfmt lines; config.c settings
 *   check.c    what a start checks first (the open files limit, the admin
 *              token, the threads beside the pool), and --check-config,
 *              which checks and starts nothing
 *
 * SIGTERM / SIGINT: stop accepting, let in-flight requests finish (up to
 * shutdown_timeout_ms), exit 0; exit 1 if the deadline passes first.  A
 * model reload still running is no request: it is abandoned, not waited for.
 * Exit 2: refused to start (bad flag, config or model, cannot listen; the
 * listen and ops_listen addresses are tried first, before the model loads).
 *
 * Socket activation (sockact.h): sockets the service manager passes
 * (LISTEN_PID, LISTEN_FDS, LISTEN_FDNAMES) are read and checked first of
 * all and served instead of binding listen / ops_listen, which are then
 * ignored (an info line says so); a bad one refuses the start (exit 2).
 */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <malloc.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include <uv.h>

#include "assign.h"
#include "batcher.h"
#include "check.h"
#include "config.h"
#include "env.h"
#include "fsutil.h"
#include "http.h"
#include "log.h"
#include "metrics.h"
#include "reload.h"
#include "selfbench.h"
#include "sockact.h"
#include "store.h"

struct server {
	struct srv_config cfg;
	uv_loop_t *loop;
	struct srv_metrics metrics;
	struct srv_batcher *batcher;
	struct srv_reload *reload;
	struct srv_http *http;
	struct srv_http *ops;  /* the operations port (ops_listen), or NULL */
	struct srv_sockact sa; /* sockets passed by the service manager */
	struct srv_store store;
	struct srv_assigner *assigner;
	uv_signal_t sigterm, sigint, sighup;
	uv_signal_t sigusr1, sigusr2; /* said to do nothing (on_usr_signal) */
	uv_timer_t drain;
	double drain_deadline;
	int draining;
	int drained;	    /* atomic: the drain ended: every request answered */
	int loop_ended;	    /* atomic: uv_run returned, the stall watch stands down */
	uv_timer_t trim;    /* memory_trim_s: a tick a second */
	long trim_begun;    /* requests begun, at the last tick */
	double trim_quiet;  /* since when none has begun */
	int trim_due;	    /* requests served since the last trim */
	long long trim_rss; /* resident bytes after the last trim (or at start) */
};

/* What the resident size must have grown by since the last trim for a
 * quiet spell to trim again. */
#define TRIM_GROWTH (16LL << 20)

/* --help or --version written: 1 (said on stderr) when the text did not
 * arrive (a full disk), as semid and semid-train do; a reader that took
 * what it wanted (| head) is no failure. */
static int stdout_done(void)
{
	char lost[128];

	if (sid_stdout_lost(lost, sizeof(lost)) && !sid_stdout_pipe_gone()) {
		fprintf(stderr, "semid-server: stdout: write failed%s\n", lost);
		return 1;
	}
	return 0;
}

static void usage(FILE *f)
{
	char flags[4096];
	srv_config_usage(flags, sizeof(flags));
	fprintf(f,
		"usage: semid-server --model PATH [--listen HOST:PORT] [--config FILE] [flags]\n"
		"\n"
		"Serves semantic IDs over HTTP/JSON (API: proto/api.md).  Every config key\n"
		"(config/README.md) is also a flag; flags override the --config file.  A\n"
		"boolean is a bare flag (--allow-empty) or --FLAG=false (not --FLAG false).\n"
		"\n"
		"  --config FILE                JSON config file\n"
		"%s"
		"  --check-config               check as a start would, start nothing (below)\n"
		"  --help, --version\n"
		"\n"
		"exit status: 0 after SIGTERM or SIGINT once in-flight requests are answered\n"
		"             (or at once, before it listens); 1 when they outlast\n"
		"             shutdown_timeout_ms; 2 refused to start (a bad flag or config\n"
		"             value, no valid model without --allow-empty, the address in use,\n"
		"             a bad socket passed by systemd: LISTEN_FDS, LISTEN_FDNAMES, a\n"
		"             registry a newer semid wrote or that is the model file, a model\n"
		"             directory that cannot be watched, encode threads, or the\n"
		"             threads beside them, that cannot start: proto/api.md, Life\n"
		"             cycle)\n"
		"\n"
		"       semid-server --check-config [--config FILE] [flags]\n"
		"checks what a start with the same flags would (every flag and the --config\n"
		"file, the listen and ops_listen hosts, each bound once on port 0 and closed,\n"
		"not their ports, which the running server holds, the open files limit, the\n"
		"model loaded and smoke-encoded, the registry read without creating, migrating\n"
		"or locking it; a PostgreSQL one is connected to within registry_timeout_ms;\n"
		"the threads a start runs, started at once under the limit on threads and\n"
		"ended) and keeps nothing started, listens on and writes nothing: a summary\n"
		"on stdout, a refusal on stderr in the start's words; exit 0 when a start\n"
		"would succeed, 2 when it would be refused, 1 when it would succeed but the\n"
		"summary could not be written (a full disk).\n"
		"\n"
		"       semid-server --bench-encode MODEL TOWER BATCH THREADS SECONDS\n"
		"times the encoder in this process (no HTTP) and prints items/s as JSON: the\n"
		"in-process baseline of make bench-http.\n",
		flags);
}

/* Test hook: sleep the milliseconds environment variable @var names, to hold
 * a shutdown window open (tests/server/test_server.py, late_request).  Read
 * by sid_env_test_ms: atoi took "99999999999" for 276 s. */
static void test_hook_sleep(const char *var)
{
	long ms = sid_env_test_ms(getenv(var));
	if (ms > 0)
		usleep((useconds_t)ms * 1000);
}

/* Requests in flight on both ports. */
static long inflight(struct server *s)
{
	return srv_http_inflight(s->http) + (s->ops ? srv_http_inflight(s->ops) : 0);
}

/* Connections an inherited socket's drain waits for, with no request yet
 * (srv_http_fresh). */
static long fresh(struct server *s)
{
	return srv_http_fresh(s->http) + (s->ops ? srv_http_fresh(s->ops) : 0);
}

static void on_drain_tick(uv_timer_t *t)
{
	struct server *s = t->data;
	long idle, n;

	/* Requests only: a model reload still running is no request, and is
	 * abandoned by srv_reload_close below (the next start loads the file). */
	if (inflight(s) > 0 || srv_batcher_admitted(s->batcher) > 0) {
		if (srv_now() < s->drain_deadline)
			return;
		n = inflight(s); /* once: it may change between two reads */
		srv_log_exiting(SRV_LOG_EXIT_WAIT_MS);
		srv_log(SRV_LOG_ERROR, "shutdown",
			"%ld %s still in flight after %d ms; exiting anyway", n,
			sid_plural(n, "request", "requests"), s->cfg.shutdown_timeout_ms);
		_exit(1);
	}
	/* Waited for up to 1 s, but not past shutdown_timeout_ms; no request
	 * of theirs had begun, so closing them is no reason for exit 1. */
	idle = fresh(s);
	if (idle > 0) {
		if (srv_now() < s->drain_deadline)
			return;
		srv_log(SRV_LOG_INFO, "shutdown",
			"%ld %s accepted before the drain sent no request within %d ms; "
			"closing %s",
			idle, sid_plural(idle, "connection", "connections"),
			s->cfg.shutdown_timeout_ms, sid_plural(idle, "it", "them"));
	}
	/* a request may still arrive between that look and the close */
	test_hook_sleep("SEMID_TEST_DRAIN_CLOSE_DELAY_MS");
	__atomic_store_n(&s->drained, 1, __ATOMIC_RELEASE);
	uv_timer_stop(t);
	uv_close((uv_handle_t *)&s->drain, NULL);
	/* The signal handles stay open, only unreferenced so that the loop can
	 * end: closing the last handle of a signal puts back its default
	 * action, and a SIGTERM, SIGINT or SIGHUP in the last milliseconds of
	 * the exit would then kill the process instead of letting it exit 0.
	 * (They are never closed; the process ends with them.) */
	uv_unref((uv_handle_t *)&s->sigterm);
	uv_unref((uv_handle_t *)&s->sigint);
	srv_reload_close(s->reload);
	srv_batcher_close(s->batcher);
	srv_assigner_close(s->assigner);
	/* The loop ends once these handles have closed. */
}

/*
 * memory_trim_s: once no request has begun for that long (by this tick's
 * count, so up to 2 s more) and none is in flight, give the free pages of
 * every malloc arena back to the system (malloc_trim), once per quiet spell
 * and only when the resident size grew by TRIM_GROWTH since the last time.
 * glibc keeps what a burst of large bodies freed (its mmap threshold rises
 * with them, so they come from the arenas), and the process stayed at its
 * peak resident size for good (12 -> 164-258 MiB after eight clients sent
 * three 31 MB bodies each; make bench-burst).  The growth test spares quiet
 * but steady small traffic a trim between every two requests: each page
 * given back costs a fault when it is used again (13 us on the guest of
 * bench/RESULTS.md).  On the loop thread, which then has nothing else to do.
 */
static void on_trim_tick(uv_timer_t *t)
{
	struct server *s = t->data;
	long n = srv_http_begun(s->http) + (s->ops ? srv_http_begun(s->ops) : 0);
	double now = srv_now(), t0;
	long long rss;
	char res[64] = "";

	if (n != s->trim_begun) {
		s->trim_begun = n;
		s->trim_quiet = now;
		s->trim_due = 1;
		return;
	}
	if (!s->trim_due || now - s->trim_quiet < s->cfg.memory_trim_s || inflight(s) > 0 ||
	    srv_batcher_admitted(s->batcher) > 0)
		return;
	s->trim_due = 0;
	rss = srv_proc_rss(&s->metrics.proc);
	if (rss >= 0 && s->trim_rss >= 0 && rss - s->trim_rss < TRIM_GROWTH) {
		if (rss < s->trim_rss)
			s->trim_rss = rss;
		return;
	}
	t0 = srv_now();
	malloc_trim(0);
	s->trim_rss = srv_proc_rss(&s->metrics.proc);
	if (rss >= 0 && s->trim_rss >= 0)
		snprintf(res, sizeof(res), ": resident %lld -> %lld MiB", rss >> 20,
			 s->trim_rss >> 20);
	srv_log(SRV_LOG_DEBUG, "memory", "free heap memory given back to the system in %.1f ms%s",
		(srv_now() - t0) * 1e3, res);
}

/* SIGHUP beside reload.c's handler, which closes first (see on_drain_tick). */
static void on_late_hup(uv_signal_t *h, int sig)
{
	(void)h;
	(void)sig;
}

/* How long past shutdown_timeout_ms the stall watch gives the loop. */
#define STALL_GRACE_MS 1000

/*
 * The drain's deadline kept off the loop thread: on_drain_tick exits 1 once
 * shutdown_timeout_ms has passed, but only if the loop runs.  A log write
 * blocked it when whoever reads stderr stopped reading (a stalled journald
 * or log shipper: the pipe fills; log.c now drops such lines), and SIGTERM
 * then never ended the server; anything else that holds the loop would do
 * the same.  This thread, started with the drain, exits 1 a grace period
 * past the deadline unless the drain has ended, its line given
 * SRV_LOG_EXIT_WAIT_MS to reach a slow reader.
 *
 * A drain that ended leaves the loop to end once its work is done, and that
 * includes store calls no request waits for: the probe of an idle store,
 * the check of its IDs' levels (at start and after a swap), the assign of a
 * client that left.  Against a store that does not answer (a PostgreSQL
 * host gone: a connect waits registry_timeout_ms) the server exited that
 * long after the drain, 20 s past a shutdown_timeout_ms of 1 s, and a
 * supervisor's SIGKILL came first.  Past the grace period such calls are
 * not waited for: every request was answered, so exit 0, saying so.
 */
static void *stall_watch(void *arg)
{
	struct server *s = arg;
	struct timespec until;
	long long ns;

	clock_gettime(CLOCK_MONOTONIC, &until);
	ns = until.tv_nsec + (long long)(s->cfg.shutdown_timeout_ms + STALL_GRACE_MS) * 1000000;
	until.tv_sec += (time_t)(ns / 1000000000);
	until.tv_nsec = (long)(ns % 1000000000);
	while (clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &until, NULL) == EINTR)
		;
	if (__atomic_load_n(&s->loop_ended, __ATOMIC_ACQUIRE))
		return NULL;
	srv_log_exiting(SRV_LOG_EXIT_WAIT_MS);
	if (__atomic_load_n(&s->drained, __ATOMIC_ACQUIRE)) {
		srv_log(SRV_LOG_WARN, "shutdown",
			"drained, but store calls no request waits for (a probe of the store, "
			"the check of its IDs' levels, an assign whose client left) had not "
			"ended %d ms after the drain began; exiting without them",
			s->cfg.shutdown_timeout_ms + STALL_GRACE_MS);
		_exit(0);
	}
	srv_log(SRV_LOG_ERROR, "shutdown",
		"the drain did not end within %d ms and the event loop did not answer "
		"for %d ms more; exiting",
		s->cfg.shutdown_timeout_ms, STALL_GRACE_MS);
	_exit(1);
}

/* SIGUSR1 and SIGUSR2 ended the server by their default action, without a
 * word and without a drain: an operator's habit ("USR1 reopens the logs")
 * cost the requests in flight, and a restart.  They do nothing, and say so:
 * in a line built without stdio, for on_early_usr as well. */
static void usr_ignored(int sig)
{
	struct srv_logline l;

	srv_logline_begin(&l, SRV_LOG_WARN, "signal");
	srv_logline_str(&l, "msg",
			sig == SIGUSR1
			    ? "SIGUSR1 ignored: semid-server reopens no file (its log is "
			      "stderr); SIGHUP reloads the model, SIGTERM or SIGINT stop it"
			    : "SIGUSR2 ignored: semid-server reopens no file (its log is "
			      "stderr); SIGHUP reloads the model, SIGTERM or SIGINT stop it");
	srv_logline_end(&l);
}

static void on_usr_signal(uv_signal_t *h, int sig)
{
	(void)h;
	usr_ignored(sig);
}

static void on_stop_signal(uv_signal_t *h, int sig)
{
	struct server *s = h->data;
	pthread_attr_t attr;
	pthread_t t;
	long n;

	if (s->draining)
		return;
	s->draining = 1;
	/* before anything that could hold the loop */
	pthread_attr_init(&attr);
	pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
	if (pthread_create(&t, &attr, stall_watch, s) != 0)
		srv_log(SRV_LOG_WARN, "shutdown",
			"cannot start the thread that bounds the drain if the event loop blocks");
	pthread_attr_destroy(&attr);
	/* tests: the loop held, as a call that blocks would hold it */
	test_hook_sleep("SEMID_TEST_DRAIN_STALL_MS");
	n = inflight(s);
	srv_log(SRV_LOG_INFO, "shutdown", "%s: draining %ld in-flight %s (up to %d ms)",
		sig == SIGINT ? "SIGINT" : "SIGTERM", n, sid_plural(n, "request", "requests"),
		s->cfg.shutdown_timeout_ms);
	srv_http_quiesce(s->http);
	if (s->ops)
		srv_http_quiesce(s->ops);
	srv_reload_quiesce(s->reload);
	srv_assigner_stop_probes(s->assigner);
	if (s->cfg.memory_trim_s > 0)
		uv_timer_stop(&s->trim);
	srv_batcher_flush(s->batcher);
	s->drain_deadline = srv_now() + s->cfg.shutdown_timeout_ms * 1e-3;
	uv_timer_start(&s->drain, on_drain_tick, 0, 5);
}

/* event=listening: where the server listens, with the real addresses (port
 * 0 picks one), and how it batches; whatever log_level is. */
static void log_listening(const struct server *s)
{
	struct srv_logline l;

	srv_logline_begin(&l, SRV_LOG_ALWAYS, "listening");
	srv_logline_str(&l, "addr", srv_http_addr(s->http));
	srv_logline_int(&l, "port", srv_http_port(s->http));
	if (s->ops) {
		srv_logline_str(&l, "ops_addr", srv_http_addr(s->ops));
		srv_logline_int(&l, "ops_port", srv_http_port(s->ops));
	}
	/* which of them are sockets passed by the service manager */
	if (s->sa.main_fd >= 0)
		srv_logline_str(&l, "inherited", s->sa.ops_fd >= 0 ? "main,ops" : "main");
	srv_logline_int(&l, "workers", s->cfg.workers);
	srv_logline_str(&l, "workers_from", srv_config_workers_from(&s->cfg));
	srv_logline_int(&l, "max_batch", s->cfg.max_batch);
	srv_logline_int(&l, "max_delay_us", s->cfg.max_delay_us);
	srv_logline_end(&l);
}

/* What socket activation changes, in info lines: listen and ops_listen not
 * bound, or LISTEN_PID set for another process. */
static void log_sockact(const struct server *s)
{
	char addr[300];
	int port;

	if (s->sa.foreign_pid)
		srv_log(SRV_LOG_INFO, "startup",
			"LISTEN_PID %ld is not this process (%ld): the sockets passed are not for "
			"it; binding listen",
			s->sa.foreign_pid, (long)getpid());
	if (s->sa.main_fd < 0)
		return;
	if (srv_sockact_addr(s->sa.main_fd, addr, sizeof(addr), &port))
		addr[0] = '\0';
	srv_log(SRV_LOG_INFO, "startup",
		"socket activation: serving the API on the inherited socket %s (fd %d); listen "
		"\"%s\" is not bound",
		addr, s->sa.main_fd, s->cfg.listen);
	if (s->sa.ops_fd >= 0) {
		if (srv_sockact_addr(s->sa.ops_fd, addr, sizeof(addr), &port))
			addr[0] = '\0';
		srv_log(SRV_LOG_INFO, "startup",
			"socket activation: serving the operations port on the inherited socket %s "
			"(fd %d)%s%s%s",
			addr, s->sa.ops_fd, s->cfg.ops_listen[0] ? "; ops_listen \"" : "",
			s->cfg.ops_listen, s->cfg.ops_listen[0] ? "\" is not bound" : "");
	} else if (s->cfg.ops_listen[0]) {
		srv_log(SRV_LOG_INFO, "startup",
			"socket activation: no socket named \"ops\" passed: binding ops_listen "
			"\"%s\" (a restart refuses connections there meanwhile)",
			s->cfg.ops_listen);
	}
}

/* srv_reload_on_swap: compare the new model with the registry's levels. */
static void check_levels(void *assigner, struct sid_model *m)
{
	srv_assigner_check_levels(assigner, m);
}

/*
 * semid-server --bench-encode MODEL TOWER BATCH THREADS SECONDS: the
 * in-process encode throughput that make bench-http compares against; one
 * JSON line on stdout.
 */
/* @s as a number in [@lo, @hi] (a whole one when @whole) into *@v; else a
 * message naming @what and -1.  atoi took "99999999999" for a batch ASan
 * then refused to allocate, and "inf" seconds ran for ever. */
static int bench_arg(const char *what, const char *s, double lo, double hi, int whole, double *v)
{
	char *end;

	errno = 0;
	*v = strtod(s, &end);
	if (end == s || *end || errno || !(*v >= lo && *v <= hi) || (whole && *v != (long)*v)) {
		fprintf(stderr, "semid-server: --bench-encode: %s \"%s\" is not %s in [%g, %g]\n",
			what, s, whole ? "an integer" : "a number", lo, hi);
		return -1;
	}
	return 0;
}

static int bench_encode(int argc, char **argv)
{
	struct srv_selfbench_result r;
	struct sid_error err;
	double batch, threads, secs;

	if (argc != 7) {
		fprintf(stderr, "usage: semid-server --bench-encode MODEL TOWER BATCH THREADS "
				"SECONDS\n");
		return 2;
	}
	if (bench_arg("BATCH", argv[4], 1, 65536, 1, &batch) ||
	    bench_arg("THREADS", argv[5], 1, 256, 1, &threads) ||
	    bench_arg("SECONDS", argv[6], 0.001, 3600, 0, &secs))
		return 2;
	if (srv_selfbench_run(argv[2], argv[3], (int)batch, (int)threads, secs, &r, &err)) {
		fprintf(stderr, "semid-server: %s\n", err.msg);
		return 2;
	}
	printf("{\"items_per_s\": %.1f, \"rows\": %lld, \"seconds\": %.3f, \"batch\": %d, "
	       "\"threads\": %d}\n",
	       r.items_per_s, r.rows, r.seconds, (int)batch, (int)threads);
	return 0;
}

/*
 * SIGHUP asks for a reload, but its handler (reload.c) is installed only once
 * the model is loaded, and loading a large model can take seconds; a SIGHUP
 * before then would end the process.  Until then it is noted here,
 * and main asks for the reload once the reloader exists.
 */
static volatile sig_atomic_t early_hup;

static void on_early_hup(int sig)
{
	(void)sig;
	early_hup = 1;
}

/* SIGUSR1, SIGUSR2 before on_usr_signal's handles exist (a model that
 * takes seconds to load): ignored in silence, where a running server says
 * so (proto/api.md, Life cycle). */
static void on_early_usr(int sig)
{
	int saved = errno;

	usr_ignored(sig);
	errno = saved;
}

/*
 * SIGTERM or SIGINT before the loop's handlers exist (the model or the
 * registry may take seconds to open, or wait on a FIFO or a network mount):
 * nothing is served yet and nothing is half written that a restart would not
 * finish (the registry's schema changes are transactions), so the server
 * says so and exits 0 at once, as it would once up, instead of dying by the
 * signal's default action.
 */
static void on_early_stop(int sig)
{
	struct srv_logline l;

	srv_logline_begin(&l, SRV_LOG_INFO, "shutdown");
	srv_logline_str(&l, "msg",
			sig == SIGINT ? "SIGINT during startup: exiting before serving"
				      : "SIGTERM during startup: exiting before serving");
	srv_logline_end(&l);
	_exit(0);
}

int main(int argc, char **argv)
{
	static struct server s;
	struct srv_batcher_opts bo;
	const char *pool;
	long pool_size;
	struct srv_http_deps hd;
	struct sid_error err;
	struct sigaction hup, stop, usr;
	int help = 0, version = 0, check = 0;

	/* Descriptors 0-2 closed (>&- 2>&-): the next ones opened took their
	 * numbers, so log lines went into libuv's signal pipe and libuv
	 * asserted at exit (134).  They are /dev/null then, as SQLite does. */
	for (int fd = 0; fd <= 2; fd++)
		if (fcntl(fd, F_GETFD) < 0 && errno == EBADF &&
		    open("/dev/null", fd ? O_WRONLY : O_RDONLY) != fd)
			return 2;
	/* Before anything is written: a stderr whose reader is gone (a dead log
	 * pipe) must cost the messages, not the process or its exit status. */
	signal(SIGPIPE, SIG_IGN);
	/* ulimit -f reached (the log file, the registry's -wal) ended the
	 * process by SIGXFSZ, in silence: a write fails with EFBIG instead, as
	 * on a full disk (an assign answers 503, a log line is dropped) */
	signal(SIGXFSZ, SIG_IGN);
	signal(SIGUSR1, SIG_IGN); /* until on_early_usr, below, says so */
	signal(SIGUSR2, SIG_IGN);
	memset(&hup, 0, sizeof(hup));
	hup.sa_handler = on_early_hup;
	hup.sa_flags = SA_RESTART; /* an open or read under way goes on */
	sigemptyset(&hup.sa_mask);
	sigaction(SIGHUP, &hup, NULL);
	sid_error_clear(&err);
	if (argc > 1 && !strcmp(argv[1], "--bench-encode"))
		return bench_encode(argc, argv);
	memset(&stop, 0, sizeof(stop));
	stop.sa_handler = on_early_stop;
	sigfillset(&stop.sa_mask);
	sigaction(SIGTERM, &stop, NULL);
	sigaction(SIGINT, &stop, NULL);
	memset(&usr, 0, sizeof(usr));
	usr.sa_handler = on_early_usr;
	usr.sa_flags = SA_RESTART; /* as SIGHUP's: the load goes on */
	sigfillset(&usr.sa_mask);
	sigaction(SIGUSR1, &usr, NULL);
	sigaction(SIGUSR2, &usr, NULL);
	srv_config_defaults(&s.cfg);
	if (argc < 2) {
		usage(stderr);
		return 2;
	}
	if (srv_config_from_args(&s.cfg, argc, argv, &help, &version, &check, &err)) {
		fprintf(stderr, "semid-server: %s\n(try --help)\n", err.msg);
		return 2;
	}
	/* copied: ps and /proc/PID/cmdline need not show them for the process's life */
	srv_config_wipe_secret_args(&s.cfg);
	if (help || version) {
		/* the whole text in one flush, so a failure keeps its errno
		 * (glibc ignores the size without a buffer) */
		static char text[1 << 14];

		setvbuf(stdout, text, _IOFBF, sizeof(text));
		if (help)
			usage(stdout);
		else
			printf("semid-server %s\n", SRV_VERSION);
		return stdout_done();
	}
	srv_log_set_level((enum srv_log_level)s.cfg.log_level);
	/* sockets passed by the service manager: read (and the variables
	 * unset) before anything could start a program, and checked before
	 * anything slow */
	if (srv_sockact_from_env(&s.sa, &err)) {
		fprintf(stderr, "semid-server: %s\n", err.msg);
		return 2;
	}
	log_sockact(&s);
	if (check) {
		/* a check cut short passed nothing: not on_early_stop's exit 0 */
		signal(SIGTERM, SIG_DFL);
		signal(SIGINT, SIG_DFL);
		signal(SIGUSR1, SIG_IGN); /* its stderr is a refusal's, not a log */
		signal(SIGUSR2, SIG_IGN);
		return srv_check_config(&s.cfg, &s.sa);
	}
	/* a listen address that cannot work refuses before the model loads */
	if (srv_http_listen_check(&s.cfg, &s.sa, 0, &err)) {
		fprintf(stderr, "semid-server: %s\n", err.msg);
		return 2;
	}
	if (srv_check_fd_limit(&s.cfg))
		return 2;

	s.loop = uv_default_loop();
	if (!s.loop) { /* its epoll descriptor, or memory */
		fprintf(stderr, "semid-server: cannot create the event loop: %s\n",
			strerror(errno));
		return 2;
	}
	if (srv_metrics_init(&s.metrics, (size_t)s.cfg.entropy_window)) {
		fprintf(stderr, "semid-server: cannot initialise metrics\n");
		return 2;
	}
	/* connection_limit as srv_check_fd_limit left it: the one http.c enforces */
	srv_metrics_limits(&s.metrics, s.cfg.queue_rows, s.cfg.connection_limit,
			   (size_t)s.cfg.body_memory_bytes);
	memset(&bo, 0, sizeof(bo));
	bo.workers = s.cfg.workers;
	bo.max_batch = s.cfg.max_batch;
	bo.max_delay_us = s.cfg.max_delay_us;
	bo.queue_rows = s.cfg.queue_rows;
	bo.metrics = &s.metrics;
	/* The model first: a server that cannot load it refuses to start and
	 * must not leave a registry file beside it. */
	if (srv_reload_new(s.loop, &s.cfg, &s.metrics, &s.reload, &err)) {
		fprintf(stderr, "semid-server: %s\n", err.msg);
		srv_log(SRV_LOG_ERROR, "startup", "%s", err.msg);
		return 2;
	}
	if (early_hup) /* from now on SIGHUP reaches reload.c's handler */
		srv_reload_trigger(s.reload, "signal");
	/* The registry opens before the pool starts: a store that cannot be
	 * reached is logged and retried later, never a reason to refuse. */
	if (srv_store_init(&s.store, &s.cfg, &err) ||
	    srv_assigner_new(s.loop, &s.cfg, &s.store, &s.metrics, &s.assigner, &err)) {
		fprintf(stderr, "semid-server: %s\n", err.msg);
		return 2;
	}
	if (!s.store.disabled && !strcmp(s.store.backend, "sqlite"))
		srv_metrics_registry_fs(&s.metrics, s.store.target);
	if (!s.store.disabled) {
		struct sid_model *m = srv_reload_model(s.reload);
		srv_metrics_registry_up(&s.metrics, srv_store_healthy(&s.store));
		/* a model whose levels differ from the stored IDs' is told of
		 * now, and after each swap, not only by the assigns it refuses */
		srv_assigner_check_levels(s.assigner, m);
		sid_model_unref(m);
		srv_reload_on_swap(s.reload, check_levels, s.assigner);
	}
	bo.assign_handoff = srv_assigner_handoff;
	bo.assign_ctx = s.assigner;
	/* the registry lane: a group per store writer, and one lookup */
	bo.extra_threads = s.store.writers + 1;
	/* srv_batcher_new sizes libuv's pool itself: an operator's
	 * UV_THREADPOOL_SIZE (meant as the number of encode threads) would
	 * otherwise be replaced without a word; and so would "8x", which atoi
	 * took for 8 */
	pool = getenv("UV_THREADPOOL_SIZE");
	if (pool && pool[0] &&
	    (sid_whole_parse(pool, 0, INT_MAX, &pool_size) ||
	     pool_size != bo.workers + bo.extra_threads))
		srv_log(SRV_LOG_WARN, "startup",
			"UV_THREADPOOL_SIZE=%s in the environment is not used: the pool is "
			"workers (%d) plus %d for the registry; set workers (--workers) instead",
			pool, bo.workers, bo.extra_threads);
	srv_check_admin_token(&s.cfg);
	if (srv_batcher_new(s.loop, &bo, &s.batcher, &err)) {
		fprintf(stderr, "semid-server: %s\n", err.msg);
		srv_log(SRV_LOG_ERROR, "startup", "%s", err.msg);
		return 2;
	}
	if (srv_check_threads(&s.cfg, &s.sa, bo.workers + bo.extra_threads))
		return 2;
	/* Catch the stop signals before the listening line tells anyone we are
	 * up; they are handled once the loop runs. */
	uv_signal_init(s.loop, &s.sigterm);
	uv_signal_init(s.loop, &s.sigint);
	uv_signal_init(s.loop, &s.sighup);
	uv_timer_init(s.loop, &s.drain);
	s.sigterm.data = s.sigint.data = s.sighup.data = s.drain.data = &s;
	uv_signal_start(&s.sigterm, on_stop_signal, SIGTERM);
	uv_signal_start(&s.sigint, on_stop_signal, SIGINT);
	uv_signal_start(&s.sighup, on_late_hup, SIGHUP);
	uv_unref((uv_handle_t *)&s.sighup);
	uv_signal_init(s.loop, &s.sigusr1);
	uv_signal_init(s.loop, &s.sigusr2);
	uv_signal_start(&s.sigusr1, on_usr_signal, SIGUSR1);
	uv_signal_start(&s.sigusr2, on_usr_signal, SIGUSR2);
	uv_unref((uv_handle_t *)&s.sigusr1);
	uv_unref((uv_handle_t *)&s.sigusr2);
	hd.cfg = &s.cfg;
	hd.metrics = &s.metrics;
	hd.reload = s.reload;
	hd.batcher = s.batcher;
	hd.assigner = s.assigner;
	hd.store = &s.store;
	hd.main_port = NULL;
	hd.listen_fd = s.sa.main_fd;
	if (srv_http_start(&hd, &s.http, &err)) {
		fprintf(stderr, "semid-server: %s\n", err.msg);
		return 2;
	}
	hd.main_port = s.http;
	hd.listen_fd = s.sa.ops_fd;
	if ((s.cfg.ops_listen[0] || s.sa.ops_fd >= 0) && srv_http_start(&hd, &s.ops, &err)) {
		fprintf(stderr, "semid-server: %s\n", err.msg);
		return 2;
	}
	if (s.cfg.memory_trim_s > 0) {
		uv_timer_init(s.loop, &s.trim);
		s.trim.data = &s;
		s.trim_rss = srv_proc_rss(&s.metrics.proc);
		uv_timer_start(&s.trim, on_trim_tick, 1000, 1000);
		uv_unref((uv_handle_t *)&s.trim); /* the loop's end does not wait for it */
	}
	log_listening(&s);

	uv_run(s.loop, UV_RUN_DEFAULT);
	__atomic_store_n(&s.loop_ended, 1, __ATOMIC_RELEASE);

	/* No uv_loop_close: the signal handles stay open to the end (see
	 * on_drain_tick). */
	/* The modules' memory goes only once no MHD thread can call in: a
	 * request on a kept-alive connection may still arrive after the drain
	 * closed them (it is answered 503), and freeing them first let it use
	 * a freed model (a double free at exit, 1 run in about 100 under load). */
	test_hook_sleep("SEMID_TEST_STOP_DELAY_MS");
	srv_http_stop(s.ops); /* first: it reads the main port's counts */
	srv_http_stop(s.http);
	srv_reload_free(s.reload);
	srv_batcher_free(s.batcher);
	srv_assigner_free(s.assigner);
	srv_store_release(&s.store);
	srv_metrics_release(&s.metrics);
	srv_log_exiting(SRV_LOG_EXIT_WAIT_MS);
	srv_log(SRV_LOG_INFO, "shutdown", "drained; bye");
	return 0;
}
