/*
 * assign.h - the registry lane of semid-server: POST /v1/{items,users}:assign
 * after their encode, and the lookups GET /v1/{items,users}/{id},
 * GET /v1/sids/{sid} and GET /v1/sids?prefix=... (proto/api.md).
 *
 * Flow of an assign request: the HTTP thread validates it (api.h,
 * srv_assign_req_decode) and submits it to the batcher as a job with
 * job->assign set; it is encoded in an ordinary batch (so dynamic batching
 * and the job's model reference apply as for encode), and the batcher's
 * after-work callback hands it here with its codes (srv_assigner_handoff, on
 * the loop thread).  The loop thread queues such jobs and runs them on the
 * libuv pool (uv_queue_work) as one registry call per group: every assign job
 * that arrived while the previous group was being committed goes into the
 * next sid_registry_assign_calls (each request in one transaction, many
 * requests per commit: group commit, one fsync for all), up to the store's
 * group_rows (PostgreSQL: 128 ids, so that no group locks the store for
 * itself alone; see registry.h).  The response is
 * written on the worker once the store has committed, so an assignment is
 * durable before its answer is sent; the after-work callback calls each
 * job's done() on the loop thread.
 *
 * Lookups are submitted from HTTP threads (srv_assigner_lookup: intake list
 * + uv_async_send) and run on the pool too, on the store's reader handle;
 * a delete (DELETE of one id, or POST .../{items,users}:delete of a list, in
 * one transaction) goes the same way, one at a time with them, on the first
 * writer handle (shared with an assign group then: the handle serialises
 * them), committed before its answer is written.
 *
 * At most one assign group per store writer (SQLite: one; PostgreSQL:
 * registry_connections) and one lookup run at a time; the batcher sizes the
 * pool with that many extra threads (batcher opts.extra_threads), so a slow
 * or unreachable store never holds up an encode.  Store calls never
 * run on the loop thread or an HTTP thread.
 *
 * Back-pressure: at most queue_rows rows may wait for the store; beyond that
 * an assign job is answered 503 at once.  Their memory counts against
 * body_memory_bytes (srv_assign_row_bytes).  Assigns and lookups queued behind
 * a store call that ran out of registry_timeout_ms get its 503 at once
 * rather than each waiting its own timeout in turn.
 *
 * Errors (srv_err): bad input (a malformed sid, prefix or cursor) 400;
 * unknown id or sid 404; a new id (or a reassign) of a kind whose stored IDs
 * have another number of levels than the served tower gives 409
 * `levels_mismatch` (the server's state, not the request: known ids are
 * still answered); the store unavailable, read-only, corrupt or disabled 503
 * `unavailable` - encoding is unaffected.
 *
 * Thread-safety: srv_assigner_lookup is thread-safe; the rest belongs to the
 * loop thread.
 */
#ifndef SRV_ASSIGN_H
#define SRV_ASSIGN_H

#include <pthread.h>
#include <stddef.h>
#include <uv.h>

#include "batcher.h"
#include "config.h"
#include "metrics.h"
#include "store.h"

enum srv_lookup_op {
	SRV_LOOKUP_ID,	   /* key = id */
	SRV_LOOKUP_SID,	   /* key = full sid */
	SRV_LOOKUP_LIST,   /* key = prefix ("" for all), cursor, limit */
	SRV_LOOKUP_DELETE, /* key = id: DELETE /v1/{items,users}/{id}, or keys: POST
			    * /v1/{items,users}:delete; on the writer */
	SRV_LOOKUP_LEVELS, /* srv_assigner_check_levels: no answer */
	SRV_LOOKUP_PROBE   /* registry_probe_s: a read of an idle store, no answer */
};

struct srv_lookup {
	struct srv_lookup *next; /* private */
	enum srv_lookup_op op;
	enum sid_tower_kind kind;
	char *key; /* malloc'ed, owned */
	/* SRV_LOOKUP_DELETE of a list (POST /v1/{items,users}:delete) instead
	 * of key: borrowed from the request, which waits for the answer */
	char *const *keys;
	size_t n_keys;
	char *cursor; /* malloc'ed or NULL, owned */
	size_t limit;
	struct sid_model *model; /* SRV_LOOKUP_LEVELS: a reference, owned */
	/* the answer, written by a worker */
	int status;
	char *body; /* malloc'ed */
	size_t body_len;
	char errmsg[256];
	void (*done)(struct srv_lookup *lk); /* loop thread; takes over lk */
	void *ctx;
};

void srv_lookup_free(struct srv_lookup *lk); /* NULL: no-op */

struct srv_assigner;

int srv_assigner_new(uv_loop_t *loop, const struct srv_config *cfg, struct srv_store *store,
		     struct srv_metrics *metrics, struct srv_assigner **out, struct sid_error *err);

/* The batcher's assign_handoff (loop thread): takes over @job. */
void srv_assigner_handoff(void *assigner, struct srv_job *job);

#define SRV_MSG_REGISTRY_FULL "the registry queue is full; retry later"

/* 1 when @rows more would not fit in the queue of assign rows waiting for
 * the store (queue_rows) now (any thread): the HTTP layer then answers 503
 * before the request is encoded, so that while the store is slow assigns
 * that could not be stored do not take encode workers from other requests.
 * srv_assigner_handoff checks again. */
int srv_assigner_full(struct srv_assigner *a, size_t rows);

/* The bytes an assign request of @L levels holds for each row, beside its
 * decoded form (the floats and ids), after its encode until the store has
 * answered: its codes and its part of the registry call.  The HTTP layer
 * charges them to body_memory_bytes when the request is decoded. */
size_t srv_assign_row_bytes(int L);

/* The same for a delete of a list of ids (POST /v1/{items,users}:delete):
 * the bytes the registry call holds for each id while it runs. */
size_t srv_delete_row_bytes(void);

/* Queue a lookup (any thread).  Returns 0, or -1 when closed (the lookup
 * stays the caller's). */
int srv_assigner_lookup(struct srv_assigner *a, struct srv_lookup *lk);

/* Compare @m's towers with the levels of the IDs the store holds (any
 * thread; on a pool thread, as a lookup): noted for GET /v1/model and
 * semid_registry_levels_mismatch, and a tower that cannot assign new ids
 * logged at warn.  Called at start and after each model swap.  Takes a
 * reference of its own. */
void srv_assigner_check_levels(struct srv_assigner *a, struct sid_model *m);

/* No more probes of the idle store (registry_probe_s; loop thread): from
 * the start of a drain, so that none begins while the server stops. */
void srv_assigner_stop_probes(struct srv_assigner *a);

/* Close the loop handle (loop thread, after the last request is answered);
 * from then on lookups are refused.  The HTTP threads may still call in until
 * the daemon stops: srv_assigner_free, after that, frees. */
void srv_assigner_close(struct srv_assigner *a);
void srv_assigner_free(struct srv_assigner *a);

#endif
