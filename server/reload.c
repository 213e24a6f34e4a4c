/*
 * reload.c - the served model and hot swap: watch, SIGHUP and admin
 * triggers, loading aside on a thread, smoke encode, pointer swap.  See
 * reload.h.
 */
#include "reload.h"

#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

#include "api.h"
#include "encode.h"
#include "env.h"
#include "log.h"

struct srv_reload {
	uv_loop_t *loop;
	const struct srv_config *cfg;
	struct srv_metrics *metrics;
	char dir[SRV_PATH_MAX];

	pthread_mutex_t mu; /* guards model, status, incoming, thread results */
	struct sid_model *model;
	/* under mu: the reload thread has not ended; srv_reload_close gave up
	 * on it (it then hands nothing back); srv_reload_free left @r to it */
	int thread_live, abandoned, free_pending;
	struct srv_reload_status status;
	struct srv_reload_waiter *incoming;

	/* Loop thread only. */
	struct srv_reload_waiter *next_waiters; /* for the next reload */
	struct srv_reload_waiter *cur_waiters;	/* for the running one */
	int running, again;
	int moved_pending; /* the checker reported a file while a reload ran */
	int hup_pending;   /* a SIGHUP came: the next reload looks at the config files */
	char again_trigger[16];
	char cur_trigger[16];
	pthread_t thread;
	struct checker *load_ck; /* the thread's reference to ck (or NULL) */
	/* the thread's copy of the model path: an abandoned thread may still
	 * be opening the file after srv_reload_free, once the caller may have
	 * let go of cfg (main's is static, but srv_reload_new does not ask it) */
	char load_path[SRV_PATH_MAX];
	/* the thread's: look whether the --config files changed (a SIGHUP's
	 * reload), in a copy of cfg->files taken at srv_reload_new */
	int load_hup;
	struct srv_config_file cfg_files[SRV_CONFIG_FILES_MAX];
	int n_cfg_files;
	struct sid_model *result; /* from the thread */
	struct sid_error result_err;
	double started;

	/* srv_reload_on_swap: told of each model swapped in (loop thread) */
	void (*on_swap)(void *ctx, struct sid_model *m);
	void *on_swap_ctx;

	uv_fs_event_t watch;
	uv_timer_t rewatch; /* while the watched directory is gone: looks for it */
	uv_timer_t debounce;
	uv_timer_t retry;   /* after a load that failed for want of memory or fds */
	uint64_t retry_ms;  /* its last delay; 0: none pending */
	struct checker *ck; /* with watch: stats the model path (below) */
	uv_async_t moved;   /* the checker found the path names another file */
	uv_signal_t sighup;
	uv_async_t request_async, done_async;
	int watching;
	int closing;
	int closed; /* under mu: request_async is closed, requests are refused */
};

/*
 * The checker: a thread of its own stats the model path, every watch_poll_ms
 * and after directory events (at most every CHECK_GAP_MS), and tells the
 * loop (uv_async) once when the path names another file (device, inode,
 * size, mtime) than the last load began with and the last one reported.  A
 * stat on a hung network filesystem then blocks this thread alone, never the
 * loop thread that batches every request.  It is detached: stopping it never waits for a
 * stat, and the last of the reloader and the thread to let go frees it.
 */
#define CHECK_GAP_MS 20 /* the checker stats at most this often */

struct checker {
	pthread_mutex_t mu;
	pthread_cond_t cv;
	int refs; /* the reloader and the thread */
	int stop, kick;
	int poll_ms;
	int test_delay_ms;	     /* SEMID_TEST_STAT_DELAY_MS: a stat as slow as a hung NFS */
	uv_async_t *moved;	     /* sent under mu, never once stop is set */
	struct srv_metrics *metrics; /* (NULL in tests) */
	struct stat seen, fired;     /* when the last load began; the last reported */
	int seen_has, fired_has;     /* 0: the path named no file then */
	int seen_failed;	     /* the load that began with @seen failed */
	int had;		     /* the last stat found a file */
	char path[SRV_PATH_MAX];
};

static int checker_stat(const struct checker *ck, struct stat *st)
{
	if (ck->test_delay_ms > 0)
		usleep((useconds_t)ck->test_delay_ms * 1000);
	return stat(ck->path, st) == 0;
}

static int same_file(int a_has, const struct stat *a, int b_has, const struct stat *b)
{
	if (a_has != b_has)
		return 0;
	/* no file either time: what a failed stat left in @a and @b (a
	 * previous file's, or nothing written) says nothing */
	return !a_has ||
	       (a->st_dev == b->st_dev && a->st_ino == b->st_ino && a->st_size == b->st_size &&
		a->st_mtim.tv_sec == b->st_mtim.tv_sec && a->st_mtim.tv_nsec == b->st_mtim.tv_nsec);
}

int srv__reload_same_file(int a_has, const struct stat *a, int b_has, const struct stat *b)
{
	return same_file(a_has, a, b_has, b);
}

/*
 * same_file, and with @ctime the same status change time too.  After a
 * failed load the checker asks for it: a file published unreadable (mode
 * 000, another user's 0600) and made readable by chmod or chown keeps its
 * inode, size and mtime, and was never tried again.  Not after a good one:
 * a hard link made to the served file is no reason to load it again.
 */
static int same_file_status(int a_has, const struct stat *a, int b_has, const struct stat *b,
			    int ctime)
{
	return same_file(a_has, a, b_has, b) && (!ctime || !a_has ||
						 (a->st_ctim.tv_sec == b->st_ctim.tv_sec &&
						  a->st_ctim.tv_nsec == b->st_ctim.tv_nsec));
}

static struct checker *checker_ref(struct checker *ck)
{
	if (ck) {
		pthread_mutex_lock(&ck->mu);
		ck->refs++;
		pthread_mutex_unlock(&ck->mu);
	}
	return ck;
}

static void checker_unref(struct checker *ck)
{
	int last;

	pthread_mutex_lock(&ck->mu);
	last = --ck->refs == 0;
	pthread_mutex_unlock(&ck->mu);
	if (last) {
		pthread_mutex_destroy(&ck->mu);
		pthread_cond_destroy(&ck->cv);
		free(ck);
	}
}

/* @t plus @ms milliseconds. */
static struct timespec ts_after(struct timespec t, long ms)
{
	t.tv_sec += ms / 1000;
	t.tv_nsec += (ms % 1000) * 1000000L;
	if (t.tv_nsec >= 1000000000L) {
		t.tv_sec++;
		t.tv_nsec -= 1000000000L;
	}
	return t;
}

static int ts_before(const struct timespec *a, const struct timespec *b)
{
	return a->tv_sec < b->tv_sec || (a->tv_sec == b->tv_sec && a->tv_nsec < b->tv_nsec);
}

/* Wait on @ck->cv (under mu) until @until (NULL: no end), or with @for_kick
 * until a kick; 0 once stop is set. */
static int checker_wait(struct checker *ck, const struct timespec *until, int for_kick)
{
	while (!ck->stop && !(for_kick && ck->kick))
		if (until ? pthread_cond_timedwait(&ck->cv, &ck->mu, until) != 0
			  : pthread_cond_wait(&ck->cv, &ck->mu) != 0)
			break; /* the time has come */
	return !ck->stop;
}

static void *checker_main(void *arg)
{
	struct checker *ck = arg;
	struct timespec last = {0, 0}; /* the last stat's start */

	pthread_mutex_lock(&ck->mu);
	while (!ck->stop) {
		struct timespec now_ts, next;
		struct stat now;
		int has;

		clock_gettime(CLOCK_MONOTONIC, &now_ts);
		next = ts_after(now_ts, ck->poll_ms);
		if (!checker_wait(ck, ck->poll_ms > 0 ? &next : NULL, 1))
			break;
		/* Directory events come as fast as anything in the directory is
		 * written (a log, the registry's WAL beside the model): at most one
		 * stat per CHECK_GAP_MS, all the events since it answered by the
		 * next.  The kick stays set meanwhile, so they do not signal. */
		clock_gettime(CLOCK_MONOTONIC, &now_ts);
		next = ts_after(last, CHECK_GAP_MS);
		if (ts_before(&now_ts, &next) && !checker_wait(ck, &next, 0))
			break;
		ck->kick = 0;
		pthread_mutex_unlock(&ck->mu);
		clock_gettime(CLOCK_MONOTONIC, &last);
		has = checker_stat(ck, &now);
		/* counted, not logged: with the log in the model's directory a
		 * line per stat was a directory event, so at debug level the
		 * checker logged and stat'ed every CHECK_GAP_MS for good */
		if (ck->metrics)
			srv_metrics_watch_check(ck->metrics);
		pthread_mutex_lock(&ck->mu);
		/* A path that names no file now (the file removed before the next
		 * is published, or its directory made anew) is no file to load:
		 * trying one counted a failed reload, which the alert on those
		 * took for a bad publish.  Said once; the model keeps serving. */
		if (!has && ck->had) {
			pthread_mutex_unlock(&ck->mu);
			srv_log(SRV_LOG_WARN, "watch",
				"%s names no file now; the loaded model keeps serving until one "
				"is published there",
				ck->path);
			pthread_mutex_lock(&ck->mu);
		}
		ck->had = has;
		/* once per new file: not again while its reload is pending */
		if (!ck->stop && has &&
		    !same_file_status(has, &now, ck->seen_has, &ck->seen, ck->seen_failed) &&
		    !same_file_status(has, &now, ck->fired_has, &ck->fired, ck->seen_failed)) {
			ck->fired = now;
			ck->fired_has = has;
			uv_async_send(ck->moved);
		}
	}
	pthread_mutex_unlock(&ck->mu);
	checker_unref(ck);
	return NULL;
}

/* The path as the load about to begin finds it (any thread but the loop's:
 * the stat may block). */
static void checker_note_load(struct checker *ck)
{
	struct stat now;
	int has;

	if (!ck)
		return;
	has = checker_stat(ck, &now);
	pthread_mutex_lock(&ck->mu);
	ck->seen = now;
	ck->seen_has = has;
	/* and the last reported, which that report was for or this load
	 * outdates: a file reported once, then replaced and loaded by an admin
	 * reload or SIGHUP before the checker saw the new one, was never
	 * reported again when renamed back into place (a roll back) */
	ck->fired = now;
	ck->fired_has = has;
	ck->seen_failed = 0;
	pthread_mutex_unlock(&ck->mu);
}

/* The load that began at checker_note_load has ended (loop thread; does not
 * wait): after a failure, look again at once, since a chmod's event may
 * have come while the file's status was no news yet. */
static void checker_kick(struct checker *ck);

static void checker_note_result(struct checker *ck, int ok)
{
	if (!ck)
		return;
	pthread_mutex_lock(&ck->mu);
	ck->seen_failed = !ok;
	pthread_mutex_unlock(&ck->mu);
	if (!ok)
		checker_kick(ck);
}

/* The load that began at checker_note_load found no file at the path (loop
 * thread; does not wait): it tried none, so the next file there is news,
 * even one that stat found then (removed and put back before the open), but
 * a report made since stands.  Look again at once: one may be there. */
static void checker_note_gone(struct checker *ck)
{
	if (!ck)
		return;
	pthread_mutex_lock(&ck->mu);
	if (same_file(ck->fired_has, &ck->fired, ck->seen_has, &ck->seen))
		ck->fired_has = 0;
	ck->seen_has = 0;
	ck->seen_failed = 0;
	pthread_mutex_unlock(&ck->mu);
	checker_kick(ck);
}

/* Has a load begun with the file last reported since it was reported (loop
 * thread; does not wait)?  Then the report is stale. */
static int checker_reported_is_loading(struct checker *ck)
{
	int same;

	pthread_mutex_lock(&ck->mu);
	same =
	    same_file_status(ck->fired_has, &ck->fired, ck->seen_has, &ck->seen, ck->seen_failed);
	pthread_mutex_unlock(&ck->mu);
	return same;
}

/* Look now (loop thread; does not wait). */
static void checker_kick(struct checker *ck)
{
	pthread_mutex_lock(&ck->mu);
	if (!ck->kick) { /* one wake-up for any number of events */
		ck->kick = 1;
		pthread_cond_signal(&ck->cv);
	}
	pthread_mutex_unlock(&ck->mu);
}

static void checker_stop(struct checker *ck)
{
	if (!ck)
		return;
	pthread_mutex_lock(&ck->mu);
	ck->stop = 1;
	pthread_cond_signal(&ck->cv);
	pthread_mutex_unlock(&ck->mu);
	checker_unref(ck);
}

/* A checker for @path, whose last load began when stat gave @seen (@has). */
static struct checker *checker_start(const char *path, int poll_ms, uv_async_t *moved,
				     struct srv_metrics *metrics, int has, const struct stat *seen,
				     int failed)
{
	struct checker *ck = calloc(1, sizeof(*ck));
	pthread_condattr_t ca;
	pthread_t t;

	if (!ck)
		return NULL;
	pthread_mutex_init(&ck->mu, NULL);
	pthread_condattr_init(&ca);
	pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
	pthread_cond_init(&ck->cv, &ca);
	pthread_condattr_destroy(&ca);
	snprintf(ck->path, sizeof(ck->path), "%s", path);
	ck->poll_ms = poll_ms;
	ck->moved = moved;
	ck->metrics = metrics;
	ck->test_delay_ms = (int)sid_env_test_ms(getenv("SEMID_TEST_STAT_DELAY_MS"));
	ck->seen_has = ck->fired_has = ck->had = has;
	if (has)
		ck->seen = ck->fired = *seen;
	ck->seen_failed = failed;
	ck->refs = 2;
	if (pthread_create(&t, NULL, checker_main, ck) != 0) {
		pthread_mutex_destroy(&ck->mu);
		pthread_cond_destroy(&ck->cv);
		free(ck);
		return NULL;
	}
	pthread_detach(t);
	return ck;
}

static double unix_now(void)
{
	struct timeval tv;
	gettimeofday(&tv, NULL);
	return (double)tv.tv_sec + (double)tv.tv_usec * 1e-6;
}

/* Tests: a load that hangs, as on a hung file system (a FIFO at the model's
 * path did, until loads opened it non-blocking).  When
 * SEMID_TEST_LOAD_GATE names a file, each load first reads it to its end:
 * a FIFO's open waits for a writer. */
static void test_load_gate(void)
{
	const char *gate = getenv("SEMID_TEST_LOAD_GATE");
	char b[64];
	int fd;

	if (!gate || (fd = open(gate, O_RDONLY | O_CLOEXEC)) < 0)
		return;
	while (read(fd, b, sizeof(b)) > 0)
		;
	close(fd);
}

int srv_model_load_checked(const char *path, struct sid_model **out, struct sid_error *err)
{
	struct sid_model *m = NULL;
	int rc;

	*out = NULL;
	test_load_gate();
	rc = sid_model_load(path, &m, err);
	if (rc)
		return rc;
	if (!sid_model_tower(m, SID_TOWER_ITEM) && !sid_model_tower(m, SID_TOWER_USER)) {
		rc = sid_error_set(err, SID_EFORMAT,
				   "%s: the model has neither an item nor a user tower", path);
		goto fail;
	}
	if ((rc = sid_model_smoke(m, err))) {
		sid_error_prefix(err, "%s", path);
		goto fail;
	}
	*out = m;
	return 0;
fail:
	sid_model_unref(m);
	return rc;
}

struct sid_model *srv_reload_model(struct srv_reload *r)
{
	struct sid_model *m;
	pthread_mutex_lock(&r->mu);
	m = r->model ? sid_model_ref(r->model) : NULL;
	pthread_mutex_unlock(&r->mu);
	return m;
}

void srv_reload_status_get(struct srv_reload *r, struct srv_reload_status *out)
{
	pthread_mutex_lock(&r->mu);
	*out = r->status;
	pthread_mutex_unlock(&r->mu);
}

static void log_result(const char *trigger, int ok, const struct sid_model *m, const char *error,
		       double secs)
{
	struct srv_logline l;
	enum srv_log_level level = ok ? SRV_LOG_INFO : SRV_LOG_ERROR;

	if (ok && !strcmp(trigger, "startup"))
		level = SRV_LOG_ALWAYS; /* the model a start serves, whatever log_level is */
	srv_logline_begin(&l, level, "reload");
	srv_logline_str(&l, "trigger", trigger);
	srv_logline_str(&l, "result", ok ? "success" : "error");
	if (ok) {
		srv_logline_str(&l, "model_version", m->version);
		srv_logline_str(&l, "sha256", m->sha256);
	} else {
		srv_logline_str(&l, "error", error);
	}
	srv_logline_int(&l, "ms", (long long)(secs * 1000 + 0.5));
	srv_logline_end(&l);
}

/* A swap that changes what callers must send: a tower's input width, or a
 * tower gone.  Every request of the old shape is refused from now on (400
 * or 404), which the success line at info did not make plain. */
static void warn_contract_change(const struct sid_model *old, const struct sid_model *m)
{
	for (int t = 0; old && t < SID_TOWER_COUNT; t++) {
		const struct sid_tower *a = sid_model_tower(old, (enum sid_tower_kind)t);
		const struct sid_tower *b = sid_model_tower(m, (enum sid_tower_kind)t);
		if (!a)
			continue;
		if (!b)
			srv_log(SRV_LOG_WARN, "reload",
				"model %s has no %s tower, which %s had: its encodes and assigns "
				"get 404 from now on (lookups and deletes, which read the store "
				"alone, go on)",
				m->version, sid_tower_name((enum sid_tower_kind)t), old->version);
		else if (a->D != b->D)
			srv_log(
			    SRV_LOG_WARN, "reload",
			    "model %s takes %s embeddings of %d values, %s took %d: requests of "
			    "the old width get 400 from now on",
			    m->version, sid_tower_name((enum sid_tower_kind)t), b->D, old->version,
			    a->D);
	}
}

/* A swap to other bytes under the served model_version (a model retrained
 * or fixed and published without a new one): it swapped in silently, and
 * responses, logs and the ID registry then named one version for the codes
 * of two different models.  Kept (an operator may mean it), but said.  The
 * same bytes published again (the same sha256) change nothing served. */
static void warn_version_reused(const struct sid_model *old, const struct sid_model *m)
{
	const char *v = m->version ? m->version : "";

	if (!old || strcmp(old->version ? old->version : "", v) != 0 ||
	    !strcmp(old->sha256, m->sha256))
		return;
	srv_log(SRV_LOG_WARN, "reload",
		"model_version %s now names another file (sha256 %.12s..., was %.12s...): "
		"responses and the ID registry name the same version for codes of different "
		"weights; publish a changed model under a new model_version",
		v, m->sha256, old->sha256);
}

/* Record an attempt's result; on success swap in @m (consumes the ref). */
static void finish(struct srv_reload *r, const char *trigger, struct sid_model *m,
		   const char *error, double secs)
{
	struct sid_model *old = NULL;

	/* before the swap: the new model's first batches are its own */
	if (r->metrics)
		srv_metrics_reload(r->metrics, m ? m->sha256 : NULL);
	pthread_mutex_lock(&r->mu);
	r->status.attempted = 1;
	r->status.time = unix_now();
	snprintf(r->status.trigger, sizeof(r->status.trigger), "%s", trigger);
	r->status.ok = m != NULL;
	if (m) {
		old = r->model;
		r->model = m;
		r->status.error[0] = '\0';
		snprintf(r->status.version, sizeof(r->status.version), "%s",
			 m->version ? m->version : "");
	} else {
		snprintf(r->status.error, sizeof(r->status.error), "%s", error);
		r->status.version[0] = '\0';
	}
	pthread_mutex_unlock(&r->mu);
	log_result(trigger, m != NULL, m, error, secs);
	if (m) {
		warn_version_reused(old, m);
		warn_contract_change(old, m);
	}
	if (m && r->on_swap)
		r->on_swap(r->on_swap_ctx, m);
	sid_model_unref(old); /* freed here or when its last job finishes */
}

void srv_reload_on_swap(struct srv_reload *r, void (*fn)(void *ctx, struct sid_model *m), void *ctx)
{
	r->on_swap = fn;
	r->on_swap_ctx = ctx;
}

static void reload_destroy(struct srv_reload *r)
{
	pthread_mutex_destroy(&r->mu);
	free(r);
}

/*
 * Loads aside.  It may outlive the loop: a shutdown does not wait for it
 * (srv_reload_close abandons it), so it touches only what it owns (its
 * checker reference, its copies of the path and of the config files' list)
 * until it takes r->mu, and then hands its model back only if it was not
 * abandoned, and frees @r if srv_reload_free has come and gone.
 */
static void *reload_thread(void *arg)
{
	struct srv_reload *r = arg;
	struct sid_model *m = NULL;
	struct sid_error err;
	int last;

	sid_error_clear(&err);
	/* here, not in the SIGHUP's handler on the loop thread: a stat of a
	 * config file on a hung NFS mount held every request meanwhile.
	 * systemctl reload after editing the config looked like it worked. */
	if (r->load_hup) {
		const char *changed = srv_config_files_changed(r->cfg_files, r->n_cfg_files);
		if (changed)
			srv_log(SRV_LOG_WARN, "signal",
				"SIGHUP reloads the model only: the config file %s changed since "
				"the server read it at start and is not read again; restart the "
				"server to apply it",
				changed);
	}
	if (r->load_ck) {
		checker_note_load(r->load_ck);
		checker_unref(r->load_ck);
	}
	srv_model_load_checked(r->load_path, &m, &err);
	pthread_mutex_lock(&r->mu);
	r->thread_live = 0;
	if (!r->abandoned) {
		r->result = m;
		r->result_err = err;
		m = NULL;
		uv_async_send(&r->done_async); /* under mu: not once it is closed */
	}
	last = r->free_pending;
	pthread_mutex_unlock(&r->mu);
	sid_model_unref(m); /* abandoned: nothing will serve it */
	if (last)
		reload_destroy(r);
	return NULL;
}

/* Answer the admin reloads on *@list: a reload of theirs failed with @why,
 * or (@not_tried) none will serve them. */
static void waiters_answer(struct srv_reload_waiter **list, int not_tried, const char *why)
{
	struct srv_reload_waiter *w, *next;

	for (w = *list; w; w = next) {
		next = w->next;
		w->ok = 0;
		w->not_tried = not_tried;
		snprintf(w->error, sizeof(w->error), "%s", why);
		w->done(w);
	}
	*list = NULL;
}

/* Answer the admin reloads on *@list that no reload will serve. */
static void waiters_fail(struct srv_reload_waiter **list, const char *why)
{
	waiters_answer(list, 1, why);
}

/*
 * A load that failed for want of memory or descriptors (SID_ENOMEM: the
 * file may be fine) is tried again after 1, 2, 4 ... 60 s, until a load
 * succeeds or fails on the file itself.  A published model failing so was
 * never tried again (the watcher reports a file once), and the old model
 * served on for good.
 */
#define RETRY_FIRST_MS 1000
#define RETRY_MAX_MS   60000

static void on_retry(uv_timer_t *t);

static void retry_after(struct srv_reload *r, int short_of_resources, const char *why)
{
	if (!short_of_resources || r->closing) {
		r->retry_ms = 0;
		uv_timer_stop(&r->retry);
		return;
	}
	r->retry_ms = !r->retry_ms		       ? RETRY_FIRST_MS
		      : r->retry_ms * 2 > RETRY_MAX_MS ? RETRY_MAX_MS
						       : r->retry_ms * 2;
	uv_timer_start(&r->retry, on_retry, r->retry_ms, 0);
	srv_log(SRV_LOG_WARN, "watch",
		"the reload failed for want of memory or descriptors (%s): trying again in "
		"%.0f s",
		why, r->retry_ms / 1000.0);
}

static void start(struct srv_reload *r, const char *trigger)
{
	int e;

	if (r->closing)
		return;
	if (r->running) {
		r->again = 1;
		snprintf(r->again_trigger, sizeof(r->again_trigger), "%s", trigger);
		return;
	}
	r->cur_waiters = r->next_waiters;
	r->next_waiters = NULL;
	snprintf(r->cur_trigger, sizeof(r->cur_trigger), "%s", trigger);
	r->started = unix_now();
	r->running = 1;
	r->load_ck = checker_ref(r->ck);
	snprintf(r->load_path, sizeof(r->load_path), "%s", r->cfg->model);
	r->load_hup = r->hup_pending;
	r->hup_pending = 0;
	pthread_mutex_lock(&r->mu);
	r->thread_live = 1;
	pthread_mutex_unlock(&r->mu);
	if ((e = pthread_create(&r->thread, NULL, reload_thread, r)) != 0) {
		char why[128];
		snprintf(why, sizeof(why), "could not start the reload thread: %s", strerror(e));
		if (r->load_ck)
			checker_unref(r->load_ck);
		r->hup_pending |= r->load_hup; /* the next one looks */
		pthread_mutex_lock(&r->mu);
		r->thread_live = 0;
		pthread_mutex_unlock(&r->mu);
		r->running = 0;
		finish(r, trigger, NULL, why, 0);
		/* a reload tried and failed, as last_reload and the error count
		 * say: 422, as for a load short of descriptors; the 503 "no
		 * reload was tried" of a shutdown said otherwise */
		waiters_answer(&r->cur_waiters, 0, why);
		retry_after(r, 1, why);
	}
}

static void on_retry(uv_timer_t *t)
{
	start(t->data, "retry");
}

void srv_reload_trigger(struct srv_reload *r, const char *trigger)
{
	start(r, trigger);
}

static void consider(struct srv_reload *r);

static void on_done(uv_async_t *h)
{
	struct srv_reload *r = h->data;
	struct srv_reload_waiter *w, *next;
	struct sid_model *m;
	struct sid_error err;

	if (!r->running)
		return;
	pthread_join(r->thread, NULL);
	r->running = 0;
	pthread_mutex_lock(&r->mu);
	m = r->result;
	err = r->result_err;
	r->result = NULL;
	pthread_mutex_unlock(&r->mu);
	/* The watcher's reload (or a retry of one) of a path that names no file
	 * by now (a file published, then removed before the debounce ran out)
	 * is no failed reload: it was counted as one, and the last reload
	 * gauge stayed 0 (SemidModelReloadFailing) beside the checker's warn
	 * that the loaded model keeps serving.  Nothing is recorded; the next
	 * file there is loaded. */
	if (!m && err.code == SID_ENOTFOUND && !r->cur_waiters &&
	    (!strcmp(r->cur_trigger, "watch") || !strcmp(r->cur_trigger, "retry"))) {
		srv_log(SRV_LOG_DEBUG, "watch",
			"%s names no file now: no reload tried; the loaded model keeps serving",
			r->load_path);
		checker_note_gone(r->ck);
		retry_after(r, 0, NULL);
		goto folded;
	}
	for (w = r->cur_waiters; w; w = next) {
		next = w->next;
		w->ok = m != NULL;
		if (m)
			snprintf(w->version, sizeof(w->version), "%s",
				 m->version ? m->version : "");
		else
			snprintf(w->error, sizeof(w->error), "%s", err.msg);
	}
	checker_note_result(r->ck, m != NULL);
	finish(r, r->cur_trigger, m, err.msg, unix_now() - r->started);
	retry_after(r, !m && err.code == SID_ENOMEM, err.msg);
	for (w = r->cur_waiters; w; w = next) {
		next = w->next;
		w->done(w);
	}
	r->cur_waiters = NULL;
folded:
	if (r->again || r->next_waiters) {
		r->again = 0;
		start(r, r->next_waiters ? "admin" : r->again_trigger);
	}
	if (r->moved_pending) {
		r->moved_pending = 0;
		consider(r);
	}
}

int srv_reload_request(struct srv_reload *r, struct srv_reload_waiter *w)
{
	pthread_mutex_lock(&r->mu);
	if (r->closed) {
		pthread_mutex_unlock(&r->mu);
		return -1;
	}
	w->next = r->incoming;
	r->incoming = w;
	uv_async_send(&r->request_async); /* under mu: not after the close below */
	pthread_mutex_unlock(&r->mu);
	return 0;
}

static void on_request(uv_async_t *h)
{
	struct srv_reload *r = h->data;
	struct srv_reload_waiter *w, *next;

	pthread_mutex_lock(&r->mu);
	w = r->incoming;
	r->incoming = NULL;
	pthread_mutex_unlock(&r->mu);
	if (!w)
		return;
	for (; w; w = next) {
		next = w->next;
		w->next = r->next_waiters;
		r->next_waiters = w;
	}
	if (r->closing) {
		waiters_fail(&r->next_waiters, SRV_MSG_SHUTTING_DOWN);
		return;
	}
	start(r, "admin");
}

/* The checker reported a file, and the debounce has passed: reload unless a
 * load has begun with that file since (a SIGHUP, say); while one runs,
 * decide when it ends. */
static void consider(struct srv_reload *r)
{
	if (r->closing)
		return;
	if (r->running) {
		r->moved_pending = 1;
		return;
	}
	if (r->ck && checker_reported_is_loading(r->ck))
		return;
	start(r, "watch");
}

static void on_debounced(uv_timer_t *t)
{
	consider(t->data);
}

#define REWATCH_MS 1000 /* how often a directory gone is looked for */

static void on_fs_event(uv_fs_event_t *h, const char *filename, int events, int status);
static void on_rewatch(uv_timer_t *t);

/*
 * r->dir itself was removed or renamed (an event naming the directory, as
 * libuv names those; a file of the directory's name is taken for one too,
 * at the cost of a watch made again): inotify's watch is of the directory,
 * not its name, and it saw nothing more, so with watch_poll_ms 0 no model
 * published in a directory made again was ever loaded.  The name is
 * watched anew (the inode cannot tell: a new directory often gets the old
 * one's), or while nothing is there looked for every REWATCH_MS; then the
 * path is checked at once (a model may be in it already).
 */
static void rewatch(struct srv_reload *r)
{
	int gone = uv_is_active((uv_handle_t *)&r->rewatch);

	if (r->closing)
		return;
	uv_fs_event_stop(&r->watch);
	if (uv_fs_event_start(&r->watch, on_fs_event, r->dir, 0) != 0) {
		if (!gone) {
			srv_log(SRV_LOG_WARN, "watch",
				"%s is gone: no model published there is seen until it is back "
				"(looked for every %d ms)",
				r->dir, REWATCH_MS);
			uv_timer_start(&r->rewatch, on_rewatch, REWATCH_MS, REWATCH_MS);
		}
		return;
	}
	uv_timer_stop(&r->rewatch);
	srv_log(SRV_LOG_INFO, "watch", "%s was %s: watching it anew", r->dir,
		gone ? "made again" : "removed or replaced");
	if (r->ck)
		checker_kick(r->ck);
}

static void on_rewatch(uv_timer_t *t)
{
	rewatch(t->data);
}

static void on_fs_event(uv_fs_event_t *h, const char *filename, int events, int status)
{
	struct srv_reload *r = h->data;
	const char *base = strrchr(r->dir, '/');

	(void)events;
	/* the directory's own events (deleted, moved) name it (libuv) */
	if (filename && !strcmp(filename, base && base[1] ? base + 1 : r->dir))
		rewatch(r);
	if (status < 0) {
		srv_log(SRV_LOG_WARN, "watch", "watching %s: %s", r->dir, uv_strerror(status));
		return;
	}
	/* The checker looks whether the path now names another file: for the
	 * model's own name, and for any other (a symlink swapped in the
	 * directory, as a Kubernetes volume swaps "..data").  So one new file
	 * is one report, whether an event, the poll or both see it first. */
	if (r->ck)
		checker_kick(r->ck);
}

/* The checker's news: the path names another file, which also covers what no
 * directory event reports (a symlink swapped higher up the path, current ->
 * releases/42, where the watch follows the old target; a rename made by
 * another host on a network filesystem). */
static void on_moved(uv_async_t *h)
{
	struct srv_reload *r = h->data;
	if (r->closing)
		return;
	srv_log(SRV_LOG_DEBUG, "watch", "%s now names another file", r->cfg->model);
	uv_timer_start(&r->debounce, on_debounced, (uint64_t)r->cfg->reload_debounce_ms, 0);
}

static void on_sighup(uv_signal_t *h, int sig)
{
	struct srv_reload *r = h->data;

	(void)sig;
	r->hup_pending = 1; /* the reload's thread looks at the config files */
	start(r, "signal");
}

/* The directory of @model that the watcher watches, into @dir. */
static void model_dir(const char *model, char *dir, size_t len)
{
	const char *slash = strrchr(model, '/');

	if (!slash) {
		snprintf(dir, len, ".");
		return;
	}
	/* without the slashes before the name ("models//model.safetensors",
	 * a "$DIR/" joined to "/model.safetensors"): the directory's own
	 * events name its last component, which "models/" has none of, and
	 * a replaced directory was never watched again */
	while (slash > model && slash[-1] == '/')
		slash--;
	snprintf(dir, len, "%.*s", slash == model ? 1 : (int)(slash - model), model);
}

/* A watch of @dir that libuv refused with @rc: the start's refusal. */
static int watch_error(struct sid_error *err, const char *dir, int rc)
{
	/* inotify's per-user limits (instances, watches) are the usual
	 * cause; say what to do about them */
	return sid_error_set(err, SID_EIO, "cannot watch %s: %s%s", dir, uv_strerror(rc),
			     rc == UV_EMFILE || rc == UV_ENOSPC
				 ? " (the inotify limits: raise "
				   "fs.inotify.max_user_instances or max_user_watches, "
				   "or start with --watch false and reload by SIGHUP or "
				   "POST /v1/admin/reload)"
				 : "");
}

/* The start's load of cfg->model: 0 with *@out holding a reference, or
 * *@out NULL and the load's error in @why when cfg->allow_empty lets the
 * start go on without one; else the start's refusal in @err. */
static int startup_load(const struct srv_config *cfg, struct sid_model **out, struct sid_error *why,
			struct sid_error *err)
{
	int rc;

	*out = NULL;
	sid_error_clear(why);
	if (!cfg->model[0] || cfg->model[strlen(cfg->model) - 1] == '/')
		return sid_error_set(err, SID_EINVAL, "model path \"%s\" names a directory",
				     cfg->model);
	rc = srv_model_load_checked(cfg->model, out, why);
	if (rc && !cfg->allow_empty)
		return sid_error_set(err, rc, "cannot load the model: %s", why->msg);
	return 0;
}

int srv_reload_check(const struct srv_config *cfg, struct sid_model **out, struct sid_error *why,
		     struct sid_error *err)
{
	char dir[SRV_PATH_MAX];
	struct stat st;
	int rc = startup_load(cfg, out, why, err);

	if (rc || !cfg->watch)
		return rc;
	/* what uv_fs_event_start finds wrong with it; the inotify limits are
	 * the start's own */
	model_dir(cfg->model, dir, sizeof(dir));
	rc = stat(dir, &st)	      ? -errno
	     : !S_ISDIR(st.st_mode)   ? UV_ENOTDIR
	     : access(dir, R_OK) != 0 ? -errno /* inotify_add_watch needs it */
				      : 0;
	if (rc) {
		sid_model_unref(*out);
		*out = NULL;
		return watch_error(err, dir, rc);
	}
	return 0;
}

int srv_reload_new(uv_loop_t *loop, const struct srv_config *cfg, struct srv_metrics *metrics,
		   struct srv_reload **out, struct sid_error *err)
{
	struct srv_reload *r;
	struct sid_model *m = NULL;
	struct sid_error lerr;
	struct stat st0 = {0}, now = {0};
	double t0;
	int rc, had;

	*out = NULL;
	r = calloc(1, sizeof(*r));
	if (!r)
		return sid_error_set(err, SID_ENOMEM, "reload: out of memory");
	r->loop = loop;
	r->cfg = cfg;
	r->metrics = metrics;
	memcpy(r->cfg_files, cfg->files, sizeof(r->cfg_files));
	r->n_cfg_files = cfg->n_files;
	model_dir(cfg->model, r->dir, sizeof(r->dir));
	t0 = unix_now();
	had = stat(cfg->model, &st0) == 0; /* startup: nothing is served yet */
	rc = startup_load(cfg, &m, &lerr, err);
	if (rc) {
		free(r);
		return rc;
	}
	pthread_mutex_init(&r->mu, NULL);
	finish(r, "startup", m, lerr.msg, unix_now() - t0);

	uv_async_init(loop, &r->request_async, on_request);
	r->request_async.data = r;
	uv_async_init(loop, &r->done_async, on_done);
	r->done_async.data = r;
	uv_timer_init(loop, &r->debounce);
	r->debounce.data = r;
	uv_timer_init(loop, &r->rewatch);
	r->rewatch.data = r;
	uv_timer_init(loop, &r->retry);
	r->retry.data = r;
	uv_async_init(loop, &r->moved, on_moved);
	r->moved.data = r;
	uv_signal_init(loop, &r->sighup);
	r->sighup.data = r;
	uv_signal_start(&r->sighup, on_sighup, SIGHUP);
	uv_fs_event_init(loop, &r->watch);
	r->watch.data = r;
	if (cfg->watch) {
		rc = uv_fs_event_start(&r->watch, on_fs_event, r->dir, 0);
		if (rc) {
			watch_error(err, r->dir, rc);
			*out = r;
			return SID_EIO; /* caller closes */
		}
		r->watching = 1;
		r->ck = checker_start(cfg->model, cfg->watch_poll_ms, &r->moved, r->metrics, had,
				      &st0, !m);
		if (!r->ck) {
			sid_error_set(err, SID_EIO, "cannot start the thread that checks %s",
				      cfg->model);
			*out = r;
			return SID_EIO; /* caller closes */
		}
		/* A file published while the startup load ran, before the watch
		 * began, raised no event: compare the path with what was loaded. */
		if (!same_file(stat(cfg->model, &now) == 0, &now, had, &st0)) {
			srv_log(SRV_LOG_INFO, "watch", "%s changed during startup", cfg->model);
			checker_kick(r->ck);
		}
	}
	/* allow_empty: a start-up load short of memory or descriptors is
	 * tried again as a reload's is; the file, maybe fine, was never
	 * tried again until it changed, and nothing was served meanwhile */
	if (!m && lerr.code == SID_ENOMEM)
		retry_after(r, 1, lerr.msg);
	*out = r;
	return 0;
}

void srv_reload_free(struct srv_reload *r)
{
	int live;

	if (!r)
		return;
	pthread_mutex_lock(&r->mu);
	sid_model_unref(r->model);
	r->model = NULL;
	live = r->thread_live;
	r->free_pending = live; /* an abandoned reload, still loading, frees it */
	pthread_mutex_unlock(&r->mu);
	if (!live)
		reload_destroy(r);
}

void srv_reload_quiesce(struct srv_reload *r)
{
	r->closing = 1;
	r->again = 0;
	uv_timer_stop(&r->debounce);
	uv_timer_stop(&r->rewatch);
	uv_timer_stop(&r->retry);
	waiters_fail(&r->next_waiters, SRV_MSG_SHUTTING_DOWN);
}

void srv_reload_close(struct srv_reload *r)
{
	struct srv_reload_waiter *w;

	if (!r)
		return;
	srv_reload_quiesce(r);
	if (r->running) {
		/* A reload is no request, and what it loads aside is not served
		 * yet: the drain waited for the requests only, and this one is
		 * given up rather than waited for (joined, a load held by a hung
		 * file system held the exit, and past shutdown_timeout_ms the drain
		 * exited 1 as if requests had been dropped).  A thread still
		 * loading is left to end by itself (reload_thread). */
		struct sid_model *m;
		int live;

		pthread_mutex_lock(&r->mu);
		live = r->thread_live;
		r->abandoned = 1;
		m = r->result;
		r->result = NULL;
		pthread_mutex_unlock(&r->mu);
		if (live)
			pthread_detach(r->thread);
		else
			pthread_join(r->thread, NULL); /* it has handed back its result */
		r->running = 0;
		sid_model_unref(m);
		srv_log(SRV_LOG_INFO, "shutdown",
			"the reload of %s (trigger %s, %.0f ms in) was abandoned by shutdown: "
			"nothing swapped; the next start loads the file",
			r->cfg->model, r->cur_trigger, (unix_now() - r->started) * 1e3);
		waiters_fail(&r->cur_waiters, SRV_MSG_SHUTTING_DOWN);
	}
	/* requests from now on are refused; those already in are answered */
	pthread_mutex_lock(&r->mu);
	r->closed = 1;
	w = r->incoming;
	r->incoming = NULL;
	pthread_mutex_unlock(&r->mu);
	waiters_fail(&w, SRV_MSG_SHUTTING_DOWN);
	if (r->watching)
		uv_fs_event_stop(&r->watch);
	uv_signal_stop(&r->sighup);
	uv_close((uv_handle_t *)&r->watch, NULL);
	uv_close((uv_handle_t *)&r->debounce, NULL);
	uv_close((uv_handle_t *)&r->rewatch, NULL);
	uv_close((uv_handle_t *)&r->retry, NULL);
	checker_stop(r->ck); /* before its uv_async is closed: it sends no more */
	r->ck = NULL;
	uv_close((uv_handle_t *)&r->moved, NULL);
	uv_close((uv_handle_t *)&r->sighup, NULL);
	uv_close((uv_handle_t *)&r->request_async, NULL);
	uv_close((uv_handle_t *)&r->done_async, NULL);
}
