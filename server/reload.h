/*
 * reload.h - the model semid-server serves, and replacing it without a
 * failed request (hot swap).
 *
 * The current model is one reference-counted pointer behind a mutex.
 * Readers (HTTP threads validating a request) take their own reference with
 * srv_reload_model and keep it as long as they use the model, so a swap
 * never pulls a model from under a request: the old one is freed when its
 * last job lets go.
 *
 * A reload (triggered by the watcher, SIGHUP or POST /v1/admin/reload) runs
 * on its own thread: load the file aside (sid_model_load validates it
 * completely), check it has a tower, smoke-encode a zero and two unit-norm
 * rows per tower (sid_model_smoke: codes in range, finite distances), and
 * only then swap the pointer.  Any
 * failure leaves the old model serving and is logged (event=reload
 * result=error), counted (semid_model_reloads_total{result="error"}) and
 * shown in GET /v1/model's last_reload.  Triggers arriving while a reload
 * runs are folded into one more reload after it.
 *
 * The watcher is uv_fs_event on the model's directory (a rename into place
 * changes the directory, not the old file) and a poll every watch_poll_ms.
 * Either makes a checker thread stat the model path (through symlinks:
 * device, inode, size, mtime); a file other than the last load began with,
 * and than the last one reported, is reported once, and reloaded
 * reload_debounce_ms after the last report.  So a symlink swapped in the
 * directory (Kubernetes' "..data") counts, and the poll finds what inotify
 * never reports: a symlink swapped higher up the path (current ->
 * releases/42: the watch follows the old target) and renames made by
 * another host on a network filesystem.  A file once tried, good or bad, is
 * not tried again until the path names another (or, after a failed load,
 * its status changes: ctime, as a chmod or chown that makes it readable
 * changes it), and a publish seen by both the event and the poll is
 * loaded once.  The stats run on the checker
 * thread (and the one before a load on the reload thread), never on the
 * loop thread, so a filesystem that hangs (an NFS server gone) cannot stop
 * it batching requests.
 *
 * Thread-safety: srv_reload_model, srv_reload_status_get and
 * srv_reload_request are thread-safe; the rest belongs to the loop thread.
 */
#ifndef SRV_RELOAD_H
#define SRV_RELOAD_H

#include <pthread.h>
#include <uv.h>

#include "config.h"
#include "err.h"
#include "metrics.h"
#include "model.h"

struct srv_reload_status {
	int attempted;	   /* 0: no reload attempt yet (not even at start) */
	double time;	   /* unix seconds of the last attempt's end */
	char trigger[16];  /* "startup", "watch", "signal", "admin" */
	int ok;		   /* 1 success, 0 error */
	char error[512];   /* when !ok */
	char version[256]; /* model_version loaded, when ok */
};

/* An admin reload waiting for its result (owned by the caller). */
struct srv_reload_waiter {
	struct srv_reload_waiter *next; /* private */
	int ok;
	char version[256]; /* when ok */
	char error[512];   /* when !ok */
	int not_tried;	   /* when !ok: no reload ran for it (shutting down): 503, not 422 */
	void (*done)(struct srv_reload_waiter *w); /* called on the loop thread */
	void *ctx;
};

struct srv_reload;

/*
 * Load the model named by @cfg (refusing to start on failure unless
 * cfg->allow_empty), and with cfg->watch start watching its directory.
 * Installs the SIGHUP handler on @loop.
 */
int srv_reload_new(uv_loop_t *loop, const struct srv_config *cfg, struct srv_metrics *metrics,
		   struct srv_reload **out, struct sid_error *err);

/*
 * What srv_reload_new checks at a start, without starting anything (no
 * watcher, no handler, no thread): the model loaded and smoke-encoded as a
 * start loads it, and with cfg->watch that the directory to watch is one.
 * 0 with *@out holding a reference, or *@out NULL and @why saying why
 * not when cfg->allow_empty lets a start go on without a model; else the
 * start's refusal in @err, in its words.  For --check-config.
 */
int srv_reload_check(const struct srv_config *cfg, struct sid_model **out, struct sid_error *why,
		     struct sid_error *err);

/* A new reference to the current model, or NULL when none is loaded. */
struct sid_model *srv_reload_model(struct srv_reload *r);

void srv_reload_status_get(struct srv_reload *r, struct srv_reload_status *out);

/* Ask for a reload from any thread; @w->done runs when one that started
 * after this call has finished.  -1, @w untouched, once the reloader is
 * closed (the server is stopping): the caller answers it. */
int srv_reload_request(struct srv_reload *r, struct srv_reload_waiter *w);

/* Call @fn(@ctx, model) on the loop thread after each reload that swapped
 * a model in (not for the one srv_reload_new loaded: the caller has that
 * one); @fn takes its own reference if it keeps the model.  Loop thread. */
void srv_reload_on_swap(struct srv_reload *r, void (*fn)(void *ctx, struct sid_model *m),
			void *ctx);

/* Start a reload now (loop thread). */
void srv_reload_trigger(struct srv_reload *r, const char *trigger);

/*
 * Load @path aside and check it as a reload does (validation + smoke
 * encode).  On success *@out holds one reference.  Any thread.
 */
int srv_model_load_checked(const char *path, struct sid_model **out, struct sid_error *err);

/* Shutting down (loop thread): no new reload starts, and admin reloads
 * still waiting for one are answered "the server is shutting down".  One
 * already running goes on (admin reloads waiting for it are requests in
 * flight, which the drain waits for) until srv_reload_close. */
void srv_reload_quiesce(struct srv_reload *r);

/* Stop watching and close the handles (loop thread).  A reload still
 * running is abandoned, not waited for: nothing it loads is swapped in, an
 * info line says so, and its thread, if still loading (a hung file system),
 * is left to end by itself.  The HTTP threads may still ask for the model
 * until the daemon stops: srv_reload_free, after that, drops it and frees
 * (or leaves the freeing to that thread, when it has not ended). */
void srv_reload_close(struct srv_reload *r);
void srv_reload_free(struct srv_reload *r);

/* Tests: whether two stats of the model path (@a_has / @b_has: it named a
 * file then, and @a / @b is what stat gave) found the same file, as the
 * watcher compares them: device, inode, size and mtime; no file both times
 * is the same, whatever the structs hold. */
struct stat;
int srv__reload_same_file(int a_has, const struct stat *a, int b_has, const struct stat *b);

#endif
