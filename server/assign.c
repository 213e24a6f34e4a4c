/*
 * assign.c - the registry lane: group commit of encoded assign jobs and the
 * lookups, on the libuv pool (see assign.h for the flow).
 *
 * Loop-thread state: the queue of encoded assign jobs, the queue of lookups
 * taken from the intake, and the busy flags.  Shared with HTTP threads: only
 * the lookup intake list (mutex) and the uv_async handle.
 */
#include "assign.h"

#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "log.h"

struct srv_assigner {
	uv_loop_t *loop;
	const struct srv_config *cfg;
	struct srv_store *store;
	struct srv_metrics *metrics;

	/* Shared with HTTP threads. */
	pthread_mutex_t mu;
	struct srv_lookup *in_head, *in_tail;
	int closed;
	uv_async_t async;

	/* Loop thread only. */
	struct srv_job *pend_head, *pend_tail;
	size_t pend_rows; /* written on the loop thread only, read anywhere (atomic) */
	struct srv_lookup *lk_head, *lk_tail;
	int assign_busy, lookup_busy;			  /* groups / lookups running */
	unsigned char writer_busy[SRV_STORE_MAX_WRITERS]; /* store writer slots in use */
	uv_timer_t probe; /* registry_probe_s: a tick a second (probe_on: started) */
	int probe_on;	  /* 1: running; 0: never started or stopped */
	int probing;	  /* a probe queued or running */
	double last_call; /* srv_now() when the last store call ended */
};

struct group {
	uv_work_t work;
	struct srv_assigner *a;
	struct srv_job *jobs;
	int writer; /* the store's writer slot this group uses */
	/* the store did not answer its call in time: its error, for the
	 * assigns queued behind it (fail_pending) */
	int waited_out;
	int rc;
	struct sid_error err;
};

struct lookup_work {
	uv_work_t work;
	struct srv_assigner *a;
	struct srv_lookup *lk;
	/* the store did not answer it in time (a 503): its error, for the
	 * lookups queued behind it (fail_queued_lookups) */
	int waited_out;
	int rc;
	struct sid_error err;
};

void srv_lookup_free(struct srv_lookup *lk)
{
	if (!lk)
		return;
	free(lk->key);
	free(lk->cursor);
	free(lk->body);
	sid_model_unref(lk->model);
	free(lk);
}

/* The store holds @kind's IDs with @L levels; 1 when that is news. */
static int note_levels(struct srv_assigner *a, int kind, int L)
{
	srv_metrics_registry_levels(a->metrics, kind, L);
	return srv_store_levels_note(a->store, kind, L);
}

/* What an operator is told when @m's @kind tower gives @L levels and the
 * store's IDs of that kind have @Ls: the 409's message and the log line. */
static void levels_msg(char *buf, size_t len, const struct sid_model *m, int kind, int L, int Ls)
{
	const char *k = sid_tower_name(kind);
	snprintf(buf, len,
		 "the served model %s's %s tower gives %d levels, but the registry's %s IDs have "
		 "%d: new %s ids cannot be assigned (known ids keep their stored IDs, lookups "
		 "answer); serve a model of %d %s levels, or give this model a registry of its "
		 "own (semid registry diff --model MODEL counts the IDs it changes; then export "
		 "and assign into the new store)",
		 m->version ? m->version : "", k, L, k, Ls, k, Ls, k);
}

/* A call's rc in group_work when it met a store whose IDs have another
 * number of levels than the served tower (not a SID_E* code). */
#define SRV_RC_LEVELS 1

/* Registry error -> HTTP error kind: the store's failures are 503; a
 * stored entry that cannot be read is 500 (no retry mends it, and the
 * store is not down: semid_registry_up stays 1). */
static enum srv_err reg_err_kind(int rc)
{
	if (rc == SID_EINVAL)
		return SRV_ERR_INVALID_ARGUMENT;
	if (rc == SID_ENOTFOUND)
		return SRV_ERR_NOT_FOUND;
	if (rc == SID_EDATA)
		return SRV_ERR_INTERNAL;
	return SRV_ERR_UNAVAILABLE;
}

static char *reg_err_body(int rc, const struct sid_error *err, int *status, size_t *len, char *note,
			  size_t note_len)
{
	enum srv_err kind = reg_err_kind(rc);
	char msg[SID_ERROR_MSG_MAX + 64];

	if (kind == SRV_ERR_UNAVAILABLE && rc != SID_EUNAVAIL)
		snprintf(msg, sizeof(msg), "the ID registry is unavailable: %s", err->msg);
	else
		snprintf(msg, sizeof(msg), "%s", err->msg);
	{
		size_t n = strlen(msg);
		if (n >= note_len)
			n = note_len - 1;
		memcpy(note, msg, n);
		note[n] = '\0';
	}
	return srv_api_error_body(kind, msg, len, status);
}

/* ---- assign groups (worker) ---- */

static void write_assign_body(struct srv_job *j, const struct sid_reg_entry *out)
{
	struct srv_buf b = SRV_BUF_INIT;
	const char *v = j->model->version ? j->model->version : "";
	char sid[SID_REG_SID_MAX];

	srv_buf_puts(&b, "{\"model_version\": ");
	srv_buf_json_str(&b, v, strlen(v));
	srv_buf_puts(&b, ", \"results\": [");
	for (size_t i = 0; i < j->req.B; i++) {
		const struct sid_reg_entry *e = &out[i];
		int n = sid_reg_sid_format(e->codes, e->L, e->suffix, sid, sizeof(sid));
		srv_buf_puts(&b, i ? ", {\"id\": " : "{\"id\": ");
		srv_buf_json_str(&b, e->id, strlen(e->id));
		srv_buf_puts(&b, ", \"codes\": [");
		for (int l = 0; l < e->L; l++)
			srv_buf_printf(&b, l ? ", %d" : "%d", (int)e->codes[l]);
		srv_buf_printf(&b, "], \"suffix\": %lld, \"sid\": ", (long long)e->suffix);
		srv_buf_json_str(&b, sid, n > 0 && (size_t)n < sizeof(sid) ? (size_t)n : 0);
		srv_buf_puts(&b, ", \"model_version\": ");
		srv_buf_json_str(&b, e->model_version, strlen(e->model_version));
		srv_buf_printf(&b, ", \"created\": %s, \"moved\": %s",
			       e->created ? "true" : "false", e->moved ? "true" : "false");
		if (e->moved && e->from_L > 0) { /* the ID it left */
			n = sid_reg_sid_format(e->from_codes, e->from_L, e->from_suffix, sid,
					       sizeof(sid));
			srv_buf_puts(&b, ", \"previous_sid\": ");
			srv_buf_json_str(&b, sid, n > 0 && (size_t)n < sizeof(sid) ? (size_t)n : 0);
		}
		srv_buf_puts(&b, "}");
	}
	srv_buf_puts(&b, "]}\n");
	j->body = srv_buf_detach(&b, &j->body_len);
	j->status = 200;
	if (!j->body)
		j->body =
		    srv_api_error_body(SRV_ERR_UNAVAILABLE, "out of memory writing the response",
				       &j->body_len, &j->status);
}

static void fail_job(struct srv_job *j, int rc, const struct sid_error *err)
{
	char note[256];
	int status;
	free(j->body);
	if (rc == SRV_RC_LEVELS)
		j->body =
		    srv_api_error_body(SRV_ERR_LEVELS_MISMATCH, err->msg, &j->body_len, &status);
	else
		j->body = reg_err_body(rc, err, &status, &j->body_len, note, sizeof(note));
	j->status = status;
}

/* What the store call on @h ran into (retries, timeouts), into the metrics;
 * returns the number of waits that ran out. */
static uint64_t take_events(struct srv_assigner *a, struct sid_registry *h)
{
	struct sid_reg_events ev;
	sid_registry_events_take(h, &ev);
	srv_metrics_registry_events(a->metrics, &ev);
	return ev.busy_timeouts + ev.rebuild_timeouts + ev.statement_timeouts + ev.answer_timeouts;
}

/* A store call of @op's kind ended with @rc after @secs, into the metrics;
 * @read_only: it went through without writing (an assign group whose ids
 * were all known, a delete of ids none of which were stored), which says
 * only that the store reads. */
static void registry_call_noted(struct srv_assigner *a, enum srv_reg_op op, double secs, int rc,
				int read_only)
{
	if (read_only)
		srv_metrics_registry_call_read(a->metrics, op, secs);
	else
		srv_metrics_registry_call(a->metrics, op, secs, !srv_store_is_outage(rc));
}

static void group_work(uv_work_t *w)
{
	struct group *g = w->data;
	struct srv_assigner *a = g->a;
	struct sid_registry *h = NULL, *ro = NULL;
	struct sid_reg_call *calls = NULL;
	struct sid_reg_item **items = NULL;
	struct sid_reg_entry **outs = NULL;
	struct sid_error err;
	struct srv_job *j;
	size_t n = 0, i;
	uint64_t waits;
	double t0;
	int rc, failed = 0; /* the call was counted as failed */

	sid_error_clear(&err);
	for (j = g->jobs; j; j = j->next)
		n++;
	t0 = srv_now(); /* a call refused before the store (no handle) is timed too */
	rc = srv_store_get(a->store, SRV_STORE_WRITER(g->writer), &h, &err);
	if (rc) {
		/* No writer (a read-only store, a full disk at open): the lookup
		 * handle still answers requests whose ids are all known; the
		 * others get the writer's error. */
		struct sid_error rerr;
		if (a->store->disabled ||
		    srv_store_get(a->store, SRV_STORE_READER, &ro, &rerr) != 0) {
			for (j = g->jobs; j; j = j->next)
				fail_job(j, rc, &err);
			if (!a->store->disabled)
				srv_metrics_registry_call(a->metrics, SRV_REG_OP_ASSIGN,
							  srv_now() - t0, 0);
			return;
		}
		h = ro;
	}
	calls = calloc(n, sizeof(*calls));
	items = calloc(n, sizeof(struct sid_reg_item *));
	outs = calloc(n, sizeof(struct sid_reg_entry *));
	if (!calls || !items || !outs)
		goto oom;
	for (j = g->jobs, i = 0; j; j = j->next, i++) {
		size_t B = j->req.B, D = (size_t)j->req.D;
		items[i] = malloc(B * sizeof(**items));
		outs[i] = malloc(B * sizeof(**outs));
		if (!items[i] || !outs[i])
			goto oom;
		for (size_t r = 0; r < B; r++) {
			items[i][r].id = j->req.id_str[r];
			items[i][r].codes = j->codes + r * (size_t)j->L;
			items[i][r].emb = a->cfg->registry_embeddings ? j->req.x + r * D : NULL;
		}
		calls[i] = (struct sid_reg_call){.kind = j->req.tower,
						 .items = items[i],
						 .n = B,
						 .L = j->L,
						 .D = j->req.D,
						 .model_version =
						     j->model->version ? j->model->version : "",
						 .flags = j->req.reassign ? SID_REG_REASSIGN : 0u,
						 .out = outs[i]};
	}
	sid_registry_assign_calls(h, calls, n);
	waits = take_events(a, h);
	for (j = g->jobs, i = 0; j; j = j->next, i++) {
		struct sid_error lerr;
		int Ls = 0;
		if (!calls[i].rc && calls[i].n) {
			note_levels(a, calls[i].kind, outs[i][0].L);
			continue;
		}
		/* SID_EINVAL from valid ids is the store's L against the
		 * model's; a kind's L never changes once set, so asking now
		 * tells what the call met */
		if (calls[i].rc != SID_EINVAL ||
		    sid_registry_levels(h, calls[i].kind, &Ls, &lerr) != 0 || Ls <= 0 ||
		    Ls == calls[i].L)
			continue;
		calls[i].rc = SRV_RC_LEVELS;
		levels_msg(calls[i].err.msg, sizeof(calls[i].err.msg), j->model, calls[i].kind,
			   calls[i].L, Ls);
		if (note_levels(a, calls[i].kind, Ls))
			srv_log(SRV_LOG_WARN, "registry", "%s", calls[i].err.msg);
	}
	if (ro) { /* what needed a write gets the writer's reason */
		for (i = 0; i < n; i++)
			if (calls[i].rc == SID_EUNAVAIL) {
				calls[i].rc = rc;
				calls[i].err = err;
			}
		srv_metrics_registry_call(a->metrics, SRV_REG_OP_ASSIGN, srv_now() - t0, 0);
		failed = 1;
	} else {
		double secs = srv_now() - t0;
		int outage = 0, wrote = 0;
		for (i = 0; i < n; i++) {
			for (size_t r = 0; !calls[i].rc && r < calls[i].n && !wrote; r++)
				wrote = outs[i][r].created || outs[i][r].moved;
			if (srv_store_is_outage(calls[i].rc) && !outage) {
				outage = 1;
				srv_store_note(a->store, calls[i].rc, &calls[i].err);
				if (waits) {
					g->waited_out = 1;
					g->rc = calls[i].rc;
					g->err = calls[i].err;
				}
			}
		}
		if (!outage)
			srv_store_note(a->store, 0, NULL);
		registry_call_noted(a, SRV_REG_OP_ASSIGN, secs, outage ? SID_EUNAVAIL : 0,
				    !outage && !wrote);
		failed = outage;
	}
	for (j = g->jobs, i = 0; j; j = j->next, i++) {
		if (calls[i].rc) {
			fail_job(j, calls[i].rc, &calls[i].err);
			/* (an outage is counted with the call above; 409
			 * levels_mismatch has a gauge of its own); one error
			 * for the call, however many of its requests met a
			 * damaged entry */
			if (calls[i].rc == SID_EDATA && !failed) {
				srv_metrics_registry_error(a->metrics, SRV_REG_OP_ASSIGN);
				failed = 1;
			}
			continue;
		}
		{
			uint64_t created = 0;
			for (size_t r = 0; r < j->req.B; r++)
				/* outs[i] of every job was allocated above (or oom) */
				/* NOLINTNEXTLINE(clang-analyzer-core.NullDereference) */
				created += outs[i][r].created != 0;
			srv_metrics_registry_assigned(a->metrics, j->req.tower, created,
						      j->req.B - created);
		}
		write_assign_body(j, outs[i]);
	}
	goto done;
oom:
	sid_error_set(&err, SID_ENOMEM, "out of memory for the registry call");
	for (j = g->jobs; j; j = j->next)
		fail_job(j, SID_ENOMEM, &err);
done:
	for (i = 0; i < n; i++) {
		if (items)
			free(items[i]);
		if (outs)
			free(outs[i]);
	}
	free(items);
	free(outs);
	free(calls);
}

static void schedule(struct srv_assigner *a);

/*
 * A store that does not answer (a lock held elsewhere, a stopped PostgreSQL
 * backend) would make each queued group wait registry_timeout_ms in turn:
 * with PostgreSQL's groups of at most 128 ids, queue_rows of 64-row requests
 * are 512 groups, the last answered after minutes, each request holding its
 * connection (and with them connection_limit, which encode clients need
 * too).  When a group's call has waited out the timeout, the assigns queued
 * behind it get its 503 at once; those that arrive later try the store
 * again.  (Retrying is safe: assign is idempotent.)
 */
static void fail_pending(struct srv_assigner *a, int rc, const struct sid_error *err)
{
	struct srv_job *j = a->pend_head, *next;

	a->pend_head = a->pend_tail = NULL;
	__atomic_store_n(&a->pend_rows, 0, __ATOMIC_RELAXED);
	for (; j; j = next) {
		next = j->next;
		j->next = NULL;
		fail_job(j, rc, err);
		j->done(j);
	}
}

static void group_after(uv_work_t *w, int status)
{
	struct group *g = w->data;
	struct srv_assigner *a = g->a;
	struct srv_job *j, *next;

	(void)status;
	a->assign_busy--;
	a->writer_busy[g->writer] = 0;
	a->last_call = srv_now();
	for (j = g->jobs; j; j = next) {
		next = j->next;
		j->next = NULL;
		j->done(j);
	}
	if (g->waited_out)
		fail_pending(a, g->rc, &g->err);
	free(g);
	schedule(a);
}

/* ---- lookups (worker) ---- */

static void lookup_json(struct srv_lookup *lk, json_t *v)
{
	char *s = v ? json_dumps(v, JSON_PRESERVE_ORDER) : NULL;
	json_decref(v);
	if (!s) {
		lk->body = srv_api_error_body(SRV_ERR_UNAVAILABLE, "out of memory", &lk->body_len,
					      &lk->status);
		return;
	}
	lk->body_len = strlen(s);
	lk->body = realloc(s, lk->body_len + 2);
	if (!lk->body) {
		free(s);
		lk->body = srv_api_error_body(SRV_ERR_UNAVAILABLE, "out of memory", &lk->body_len,
					      &lk->status);
		return;
	}
	lk->body[lk->body_len++] = '\n';
	lk->body[lk->body_len] = '\0';
	lk->status = 200;
}

/* SRV_LOOKUP_LEVELS: note the store's levels of each kind, and log the
 * model's towers that cannot assign.  A store that cannot
 * be read now is left: the first assign of the kind finds out. */
static void check_levels_work(struct srv_assigner *a, struct srv_lookup *lk)
{
	struct sid_registry *h = NULL;
	struct sid_error err;
	char msg[SID_ERROR_MSG_MAX];

	lk->status = 200;
	if (srv_store_get(a->store, SRV_STORE_READER, &h, &err))
		return;
	for (int k = 0; k < SID_TOWER_COUNT; k++) {
		const struct sid_tower *t = sid_model_tower(lk->model, k);
		int Ls = 0;
		/* every kind's, a tower or not: /v1/model showed null for the
		 * user IDs of a store an item-only model served */
		if (sid_registry_levels(h, k, &Ls, &err) || Ls <= 0)
			continue;
		note_levels(a, k, Ls);
		if (t && Ls != t->L) {
			levels_msg(msg, sizeof(msg), lk->model, k, t->L, Ls);
			srv_log(SRV_LOG_WARN, "registry", "%s", msg);
		}
	}
}

/* SRV_LOOKUP_PROBE: read the store (sid_registry_ping: a row of its
 * metadata, behind the checks and bounded waits of any call), as no call has
 * for registry_probe_s, so that semid_registry_up and GET /v1/model show
 * an outage while no request comes.  A change of health is logged. */
static void probe_work(struct srv_assigner *a)
{
	struct sid_registry *h = NULL;
	struct sid_error err;
	int rc, was_up = srv_store_healthy(a->store);

	sid_error_clear(&err);
	rc = srv_store_get(a->store, SRV_STORE_READER, &h, &err);
	if (!rc)
		rc = sid_registry_ping(h, &err);
	if (rc && !srv_store_is_outage(rc))
		rc = 0; /* it answered */
	if (h)
		take_events(a, h);
	srv_store_note(a->store, rc, &err);
	srv_metrics_registry_probe(a->metrics, rc == 0);
	if (rc && was_up)
		srv_log(SRV_LOG_WARN, "registry", "probe of the idle store: %s", err.msg);
	else if (!rc && !was_up)
		srv_log(SRV_LOG_INFO, "registry",
			"probe of the idle store: it answers reads again");
}

/* A lookup's store call failed with @rc: its error answer, and the
 * registry's error count when it met a damaged entry (an outage is counted
 * with its call; a miss or a bad request is no error of the store's). */
static void lookup_fail(struct srv_assigner *a, struct srv_lookup *lk, enum srv_reg_op op, int rc,
			const struct sid_error *err)
{
	int status;

	if (rc == SID_EDATA)
		srv_metrics_registry_error(a->metrics, op);
	lk->body = reg_err_body(rc, err, &status, &lk->body_len, lk->errmsg, sizeof(lk->errmsg));
	lk->status = status;
}

/* A lookup's store call ended with @rc (@err) after @waits waits that ran
 * out: when that is an outage, its error is kept for those queued behind. */
static void lookup_waited_out(struct lookup_work *lw, uint64_t waits, int rc,
			      const struct sid_error *err)
{
	lw->waited_out = waits != 0 && srv_store_is_outage(rc);
	if (lw->waited_out) {
		lw->rc = rc;
		lw->err = *err;
	}
}

/*
 * POST /v1/{items,users}:delete: the ids in one transaction; 200 with a
 * result per id in their order, {"kind", "id", "deleted": false} for one
 * not stored (an id given twice: its second), else its entry as it was with
 * "deleted": true (kind and id only for an entry that could not be read).
 */
static void delete_many(struct lookup_work *lw, struct sid_registry *h, double t0)
{
	struct srv_lookup *lk = lw->lk;
	struct srv_assigner *a = lw->a;
	struct sid_reg_entry *e = malloc(lk->n_keys * sizeof(*e));
	json_t *results = json_array(), *v;
	struct sid_error err;
	size_t deleted = 0;
	int rc;

	sid_error_clear(&err);
	if (!e || !results) {
		free(e);
		json_decref(results);
		lookup_json(lk, NULL); /* 503: out of memory */
		return;
	}
	rc = sid_registry_delete(h, lk->kind, (const char *const *)lk->keys, lk->n_keys, e, &err);
	srv_store_note(a->store, rc, &err);
	lookup_waited_out(lw, take_events(a, h), rc, &err);
	for (size_t i = 0; !rc && i < lk->n_keys; i++)
		deleted += e[i].deleted != 0;
	registry_call_noted(a, SRV_REG_OP_ASSIGN, srv_now() - t0, rc, !rc && !deleted);
	if (rc) {
		free(e);
		json_decref(results);
		lookup_fail(a, lk, SRV_REG_OP_ASSIGN, rc, &err);
		return;
	}
	srv_metrics_registry_deleted(a->metrics, lk->kind, deleted);
	for (size_t i = 0; i < lk->n_keys && results; i++) {
		/* committed: each id is answered with what can be said of it */
		v = e[i].deleted && e[i].L ? sid_reg_entry_json(&e[i], 0) : NULL;
		if (!v)
			v = json_pack("{s:s, s:s}", "kind", sid_tower_name(lk->kind), "id",
				      lk->keys[i]);
		if (v && json_object_set_new(v, "deleted", json_boolean(e[i].deleted))) {
			json_decref(v);
			v = NULL;
		}
		if (!v || json_array_append_new(results, v)) {
			json_decref(results);
			results = NULL;
		}
	}
	free(e);
	lookup_json(lk, results ? json_pack("{s:s, s:I, s:o}", "tower", sid_tower_name(lk->kind),
					    "deleted", (json_int_t)deleted, "results", results)
				: NULL);
}

/* The series a call of @op counts in: a delete writes, so its store calls
 * count as the assigns' (op "assign"), also when it fails queued. */
static enum srv_reg_op lookup_metric_op(enum srv_lookup_op op)
{
	return op == SRV_LOOKUP_DELETE ? SRV_REG_OP_ASSIGN : SRV_REG_OP_LOOKUP;
}

/* What a miss of id @key adds to its message: the id of /v1/items/x/ is
 * "x/" (an id may hold a '/'), and a bare "no such item id" hid that the
 * path's trailing slash was taken as part of it.  Names no id. */
static const char *miss_hint(const char *key)
{
	size_t n = key ? strlen(key) : 0;

	return n && key[n - 1] == '/'
		   ? " (the id is the rest of the path, so its trailing \"/\" is part of it: "
		     "ids may hold a \"/\")"
		   : "";
}

/* The kind that is not @kind, its stored IDs' number of levels into *@Lo
 * (0: none stored yet); -1 when the store cannot say. */
static int other_levels(struct sid_registry *h, enum sid_tower_kind kind, int *Lo)
{
	enum sid_tower_kind other = kind == SID_TOWER_ITEM ? SID_TOWER_USER : SID_TOWER_ITEM;
	struct sid_error e2;

	sid_error_clear(&e2);
	return sid_registry_levels(h, other, Lo, &e2) ? -1 : (int)other;
}

/* A sid of another number of levels than @kind's IDs (@err, SID_EINVAL:
 * @rc), or of any while none of @kind is stored (SID_ENOTFOUND), that has
 * as many as the other kind's is most likely one of those, looked up
 * without ?tower= (or with the wrong one): say so, since the hint alone
 * ("codes alone? the first ID under them is 5-5-0-0") sent the client to
 * an ID of the wrong kind, and "no item IDs stored yet" left it to find
 * ?tower=user. */
static void other_tower_hint(struct sid_registry *h, enum sid_tower_kind kind, const char *sid,
			     int rc, struct sid_error *err)
{
	int32_t codes[SID_MAX_LEVELS];
	int64_t suffix;
	int L, Ls, Lo, o;
	char alone[160] = "";
	struct sid_error e2;
	const char *other;

	sid_error_clear(&e2);
	/* the kind asked first (its levels are cached once it holds IDs): a
	 * plain miss of a kind that holds IDs asks the store nothing more */
	if (sid_reg_sid_parse(sid, codes, &L, &suffix, &e2) ||
	    sid_registry_levels(h, kind, &Ls, &e2) || Ls == L ||
	    (rc == SID_ENOTFOUND) != (Ls == 0) || (o = other_levels(h, kind, &Lo)) < 0 || Lo != L)
		return;
	other = sid_tower_name((enum sid_tower_kind)o);
	if (rc == SID_ENOTFOUND) {
		sid_error_set(err, SID_ENOTFOUND,
			      "sid %.64s: not found (no %s IDs stored yet), but it has %d %s "
			      "and a suffix, as %s IDs have: look it up with ?tower=%s",
			      sid, sid_tower_name(kind), L, sid_plural(L, "level", "levels"), other,
			      other);
		return;
	}
	if (L == Ls - 1)
		snprintf(alone, sizeof(alone),
			 " (or, if it is the codes alone of %s, the first ID under them is "
			 "%.64s-0)",
			 kind == SID_TOWER_ITEM ? "an item" : "a user", sid);
	sid_error_set(err, SID_EINVAL,
		      "sid \"%.64s\" has %d %s and a suffix, as %s IDs have, but %s IDs have "
		      "%d: look it up with ?tower=%s%s",
		      sid, L, sid_plural(L, "level", "levels"), other, sid_tower_name(kind), Ls,
		      other, alone);
}

/* A list's prefix of more levels than @lk's kind's IDs have, or its cursor
 * of another number (@err, SID_EINVAL), that the other kind's IDs fit is
 * most likely a listing of those without ?tower= (or with the wrong one),
 * or a next page sent without the ?tower= of the page its cursor came
 * from: say so, since "prefix \"1-2-3\" has 3 levels; item IDs have 2" left
 * the client to find ?tower=user. */
static void other_tower_list_hint(struct sid_registry *h, const struct srv_lookup *lk,
				  struct sid_error *err)
{
	int32_t codes[SID_MAX_LEVELS];
	int64_t suffix;
	int p, cl, Ls, Lo, o;
	struct sid_error e2;
	const char *kind = sid_tower_name(lk->kind), *other;

	sid_error_clear(&e2);
	if (sid_reg_prefix_parse(lk->key, codes, &p, &e2) ||
	    sid_registry_levels(h, lk->kind, &Ls, &e2) ||
	    (o = other_levels(h, lk->kind, &Lo)) < 0 || !Lo)
		return;
	other = sid_tower_name((enum sid_tower_kind)o);
	if (p > Ls) {
		if (p <= Lo)
			sid_error_set(err, SID_EINVAL,
				      "prefix \"%.64s\" has %d %s; %s IDs have %d%s, but %s "
				      "IDs have %d: list those with ?tower=%s",
				      lk->key, p, sid_plural(p, "level", "levels"), kind, Ls,
				      p == Ls + 1 ? " (a prefix is codes only, without the suffix)"
						  : "",
				      other, Lo, other);
		return;
	}
	if (lk->cursor && !sid_reg_sid_parse(lk->cursor, codes, &cl, &suffix, &e2) && cl != Ls &&
	    cl == Lo)
		sid_error_set(
		    err, SID_EINVAL,
		    "cursor \"%.64s\" has %d %s; %s IDs have %d, but %s IDs have %d: "
		    "a cursor goes on the listing it came from, so send ?tower=%s with it",
		    lk->cursor, cl, sid_plural(cl, "level", "levels"), kind, Ls, other, Lo, other);
}

static void lookup_work(uv_work_t *w)
{
	struct lookup_work *lw = w->data;
	struct srv_lookup *lk = lw->lk;
	struct srv_assigner *a = lw->a;
	struct sid_registry *h = NULL;
	struct sid_reg_entry *e = NULL;
	struct sid_error err;
	size_t n = 0;
	char next[SID_REG_SID_MAX] = ""; /* a list fills it when it answers 0 */
	double t0 = srv_now();
	int del = lk->op == SRV_LOOKUP_DELETE, rc;
	enum srv_reg_op op = lookup_metric_op(lk->op);

	sid_error_clear(&err);
	if (lk->op == SRV_LOOKUP_PROBE) {
		probe_work(a);
		return;
	}
	if (lk->op == SRV_LOOKUP_LEVELS) {
		check_levels_work(a, lk);
		return;
	}
	rc = srv_store_get(a->store, del ? SRV_STORE_WRITER(0) : SRV_STORE_READER, &h, &err);
	if (rc) {
		if (!a->store->disabled)
			srv_metrics_registry_call(a->metrics, op, srv_now() - t0, 0);
		goto fail;
	}
	if (del && lk->keys) {
		delete_many(lw, h, t0);
		return;
	}
	e = malloc((lk->op == SRV_LOOKUP_LIST ? lk->limit : 1) * sizeof(*e));
	if (!e) {
		rc = sid_error_set(&err, SID_ENOMEM, "out of memory for the lookup");
		goto fail;
	}
	if (lk->op == SRV_LOOKUP_ID)
		rc = sid_registry_get(h, lk->kind, lk->key, e, &err);
	else if (lk->op == SRV_LOOKUP_SID)
		rc = sid_registry_get_sid(h, lk->kind, lk->key, e, &err);
	else if (del)
		rc = sid_registry_delete(h, lk->kind, (const char *const *)&lk->key, 1, e, &err);
	else
		rc = sid_registry_list(h, lk->kind, lk->key, lk->cursor ? lk->cursor : "",
				       lk->limit, e, &n, next, &err);
	srv_store_note(a->store, rc, &err);
	lookup_waited_out(lw, take_events(a, h), rc, &err);
	registry_call_noted(a, op, srv_now() - t0, rc, del && !rc && !e->deleted);
	if (!rc && del && !e->deleted)
		/* the id left out: the message goes to the request log, and an
		 * erasure retried after a lost answer would put it there */
		rc = sid_error_set(&err, SID_ENOTFOUND, "no such %s id: nothing deleted%s",
				   sid_tower_name(lk->kind), miss_hint(lk->key));
	else if ((rc == SID_EINVAL || rc == SID_ENOTFOUND) && lk->op == SRV_LOOKUP_SID)
		other_tower_hint(h, lk->kind, lk->key, rc, &err);
	else if (rc == SID_EINVAL && lk->op == SRV_LOOKUP_LIST)
		other_tower_list_hint(h, lk, &err);
	else if (rc == SID_ENOTFOUND && lk->op == SRV_LOOKUP_ID)
		/* nor a GET's: a client still asking for an erased id would
		 * write it into the request log at each miss */
		rc = sid_error_set(&err, SID_ENOTFOUND, "no such %s id%s", sid_tower_name(lk->kind),
				   miss_hint(lk->key));
	if (rc)
		goto fail;
	if (del)
		srv_metrics_registry_deleted(a->metrics, lk->kind, 1);
	{
		/* an entry JSON cannot hold (text that is not UTF-8, from before it
		 * was checked) fails the lookup: never dropped from a page, which
		 * the cursor would then skip */
		int list = lk->op == SRV_LOOKUP_LIST;
		json_t *arr = list ? json_array() : NULL, *v = NULL;
		size_t bad = SIZE_MAX;
		for (size_t i = 0; i < (list ? n : 1) && bad == SIZE_MAX; i++) {
			/* (a deleted row that could not be read has no codes) */
			v = del && !e[i].L ? NULL : sid_reg_entry_json(&e[i], 0);
			if (!v)
				bad = i;
			else if (list)
				json_array_append_new(arr, v); /* (a NULL arr takes nothing) */
		}
		if (bad != SIZE_MAX && del) {
			/* committed: the answer says so, with what it can (the
			 * id was checked); a failure would name the erased id
			 * in the request log, and a retry would say 404 */
			v = json_pack("{s:s, s:s}", "kind", sid_tower_name(lk->kind), "id",
				      lk->key);
			bad = SIZE_MAX;
		}
		if (bad != SIZE_MAX) {
			json_decref(arr);
			rc = sid_error_set(&err, SID_EDATA,
					   "registry: the stored entry of id %.64s cannot be "
					   "written as JSON (text that is not UTF-8?)",
					   e[bad].id);
			goto fail;
		}
		if (del && v && json_object_set_new(v, "deleted", json_true())) {
			json_decref(v);
			v = NULL;
		}
		if (list)
			v = !arr ? NULL
				 : json_pack("{s:s, s:s, s:o, s:o}", "tower",
					     sid_tower_name(lk->kind), "prefix", lk->key, "entries",
					     arr, "next_cursor",
					     next[0] ? json_string(next) : json_null());
		lookup_json(lk, v); /* NULL: out of memory, 503 */
	}
	free(e);
	return;
fail:
	free(e);
	lookup_fail(a, lk, op, rc, &err);
}

/*
 * Lookups run one at a time: a store that does not answer (a lock held
 * elsewhere, a stopped PostgreSQL backend) would make each queued lookup
 * wait registry_timeout_ms in turn, the last of a hundred for minutes, each
 * holding its connection (and with them connection_limit, which encode
 * clients need too).  When one (@lw) has waited out the timeout, those
 * queued behind it get its 503 at once, as assigns do (fail_pending);
 * lookups that arrive later try the store again.  None is a store call
 * (semid_registry_errors_total and _duration_seconds count the one that
 * timed out, as for the assigns queued behind a group), but each sets
 * semid_registry_up for its kind as a failed call would, and the store's
 * health is noted with the error they were answered (a call that went
 * through on another handle meanwhile had set it back): the metrics alone
 * were, so the next probe's log (which says when the store answers again)
 * and the error of GET /v1/model went by that call instead.  A model's levels check
 * (SRV_LOOKUP_LEVELS) is no lookup and was counted as a failed one; it is left, as when it cannot
 * read the store itself (the first assign of a kind finds out).
 */
static void fail_queued_lookups(struct srv_assigner *a, const struct lookup_work *lw)
{
	const struct srv_lookup *timed_out = lw->lk;
	struct srv_lookup *lk = a->lk_head, *next;

	a->lk_head = a->lk_tail = NULL;
	if (lk)
		srv_store_note(a->store, lw->rc, &lw->err);
	for (; lk; lk = next) {
		next = lk->next;
		lk->next = NULL;
		lk->body = timed_out->body ? malloc(timed_out->body_len + 1) : NULL;
		if (lk->body) {
			memcpy(lk->body, timed_out->body, timed_out->body_len + 1);
			lk->body_len = timed_out->body_len;
			lk->status = timed_out->status;
		} else {
			lk->body = srv_api_error_body(SRV_ERR_UNAVAILABLE, timed_out->errmsg,
						      &lk->body_len, &lk->status);
		}
		memcpy(lk->errmsg, timed_out->errmsg, sizeof(lk->errmsg));
		if (lk->op == SRV_LOOKUP_PROBE)
			srv_metrics_registry_probe(a->metrics, 0);
		else if (lk->op != SRV_LOOKUP_LEVELS)
			srv_metrics_registry_refused(a->metrics, lookup_metric_op(lk->op));
		lk->done(lk);
	}
}

static void lookup_after(uv_work_t *w, int status)
{
	struct lookup_work *lw = w->data;
	struct srv_assigner *a = lw->a;

	(void)status;
	a->lookup_busy = 0;
	a->last_call = srv_now();
	if (lw->waited_out)
		fail_queued_lookups(a, lw);
	lw->lk->done(lw->lk);
	free(lw);
	schedule(a);
}

/* ---- scheduling (loop thread) ---- */

static void schedule(struct srv_assigner *a)
{
	int nw = a->store->writers > 0 ? a->store->writers : 1;

	while (a->assign_busy < nw && a->pend_head) {
		struct group *g = calloc(1, sizeof(*g));
		struct srv_job *last = a->pend_head, *j;
		size_t rows = last->req.B;

		for (j = last->next; j && rows + j->req.B <= a->store->group_rows; j = j->next) {
			rows += j->req.B;
			last = j;
		}
		if (!g)
			break;
		{
			g->a = a;
			while (g->writer < nw - 1 && a->writer_busy[g->writer])
				g->writer++;
			a->writer_busy[g->writer] = 1;
			g->jobs = a->pend_head;
			g->work.data = g;
			a->pend_head = last->next;
			if (!a->pend_head)
				a->pend_tail = NULL;
			last->next = NULL;
			__atomic_sub_fetch(&a->pend_rows, rows, __ATOMIC_RELAXED);
			a->assign_busy++;
			if (uv_queue_work(a->loop, &g->work, group_work, group_after)) {
				struct sid_error err;
				sid_error_set(&err, SID_EUNAVAIL,
					      "could not queue the registry call");
				for (j = g->jobs; j; j = j->next)
					fail_job(j, SID_EUNAVAIL, &err);
				group_after(&g->work, 0); /* calls schedule again */
				return;
			}
		}
	}
	if (!a->lookup_busy && a->lk_head) {
		struct lookup_work *lw = calloc(1, sizeof(*lw));
		if (lw) {
			lw->a = a;
			lw->lk = a->lk_head;
			a->lk_head = lw->lk->next;
			if (!a->lk_head)
				a->lk_tail = NULL;
			lw->lk->next = NULL;
			lw->work.data = lw;
			a->lookup_busy = 1;
			if (uv_queue_work(a->loop, &lw->work, lookup_work, lookup_after)) {
				lw->lk->body = srv_api_error_body(
				    SRV_ERR_UNAVAILABLE, "could not queue the lookup",
				    &lw->lk->body_len, &lw->lk->status);
				lookup_after(&lw->work, 0);
			}
		}
	}
}

void srv_assigner_handoff(void *assigner, struct srv_job *job)
{
	struct srv_assigner *a = assigner;

	job->next = NULL;
	if (srv_assigner_full(a, job->req.B)) {
		job->body = srv_api_error_body(SRV_ERR_UNAVAILABLE, SRV_MSG_REGISTRY_FULL,
					       &job->body_len, &job->status);
		job->done(job);
		return;
	}
	if (a->pend_tail)
		a->pend_tail->next = job;
	else
		a->pend_head = job;
	a->pend_tail = job;
	__atomic_add_fetch(&a->pend_rows, job->req.B, __ATOMIC_RELAXED);
	schedule(a);
}

size_t srv_assign_row_bytes(int L)
{
	/* j->codes (the batcher's), and group_work's items and outs */
	return (size_t)L * sizeof(int32_t) + sizeof(struct sid_reg_item) +
	       sizeof(struct sid_reg_entry);
}

size_t srv_delete_row_bytes(void)
{
	return sizeof(struct sid_reg_entry); /* delete_many's */
}

int srv_assigner_full(struct srv_assigner *a, size_t rows)
{
	return __atomic_load_n(&a->pend_rows, __ATOMIC_RELAXED) + rows > (size_t)a->cfg->queue_rows;
}

/* Queue the chain of lookups from @lk on (loop thread) and run what can. */
static void lookups_queue(struct srv_assigner *a, struct srv_lookup *lk)
{
	if (lk) {
		if (a->lk_tail)
			a->lk_tail->next = lk;
		else
			a->lk_head = lk;
		while (lk->next)
			lk = lk->next;
		a->lk_tail = lk;
	}
	schedule(a);
}

static void on_async(uv_async_t *h)
{
	struct srv_assigner *a = h->data;
	struct srv_lookup *lk;

	pthread_mutex_lock(&a->mu);
	lk = a->in_head;
	a->in_head = a->in_tail = NULL;
	pthread_mutex_unlock(&a->mu);
	lookups_queue(a, lk);
}

int srv_assigner_lookup(struct srv_assigner *a, struct srv_lookup *lk)
{
	int rc = 0;

	lk->next = NULL;
	pthread_mutex_lock(&a->mu);
	if (a->closed) {
		rc = -1;
	} else {
		if (a->in_tail)
			a->in_tail->next = lk;
		else
			a->in_head = lk;
		a->in_tail = lk;
	}
	pthread_mutex_unlock(&a->mu);
	if (!rc)
		uv_async_send(&a->async);
	return rc;
}

static void check_levels_done(struct srv_lookup *lk)
{
	srv_lookup_free(lk);
}

void srv_assigner_check_levels(struct srv_assigner *a, struct sid_model *m)
{
	struct srv_lookup *lk;

	if (!m || a->store->disabled || !(lk = calloc(1, sizeof(*lk))))
		return;
	lk->op = SRV_LOOKUP_LEVELS;
	lk->model = sid_model_ref(m);
	lk->done = check_levels_done;
	if (srv_assigner_lookup(a, lk))
		srv_lookup_free(lk);
}

static void probe_done(struct srv_lookup *lk)
{
	struct srv_assigner *a = lk->ctx;

	a->probing = 0;
	srv_lookup_free(lk);
}

/* A tick (loop thread): a probe once no store call has ended for
 * registry_probe_s, queued as a lookup (behind any waiting). */
static void on_probe_tick(uv_timer_t *t)
{
	struct srv_assigner *a = t->data;
	struct srv_lookup *lk;

	if (a->probing || srv_now() - a->last_call < a->cfg->registry_probe_s ||
	    !(lk = calloc(1, sizeof(*lk))))
		return;
	lk->op = SRV_LOOKUP_PROBE;
	lk->done = probe_done;
	lk->ctx = a;
	a->probing = 1;
	lookups_queue(a, lk);
}

void srv_assigner_stop_probes(struct srv_assigner *a)
{
	if (a && a->probe_on) {
		a->probe_on = 0;
		uv_timer_stop(&a->probe);
		uv_close((uv_handle_t *)&a->probe, NULL);
	}
}

int srv_assigner_new(uv_loop_t *loop, const struct srv_config *cfg, struct srv_store *store,
		     struct srv_metrics *metrics, struct srv_assigner **out, struct sid_error *err)
{
	struct srv_assigner *a = calloc(1, sizeof(*a));

	*out = NULL;
	if (!a)
		return sid_error_set(err, SID_ENOMEM, "assigner: out of memory");
	if (pthread_mutex_init(&a->mu, NULL)) {
		free(a);
		return sid_error_set(err, SID_ENOMEM, "assigner: mutex");
	}
	a->loop = loop;
	a->cfg = cfg;
	a->store = store;
	a->metrics = metrics;
	uv_async_init(loop, &a->async, on_async);
	a->async.data = a;
	a->last_call = srv_now();
	if (!store->disabled && cfg->registry_probe_s > 0) {
		uv_timer_init(loop, &a->probe);
		a->probe.data = a;
		uv_timer_start(&a->probe, on_probe_tick, 1000, 1000);
		uv_unref((uv_handle_t *)&a->probe); /* the loop's end does not wait for it */
		a->probe_on = 1;
	}
	*out = a;
	return 0;
}

void srv_assigner_free(struct srv_assigner *a)
{
	if (!a)
		return;
	pthread_mutex_destroy(&a->mu);
	free(a);
}

void srv_assigner_close(struct srv_assigner *a)
{
	struct srv_lookup *lk, *next;

	if (!a)
		return;
	srv_assigner_stop_probes(a);
	pthread_mutex_lock(&a->mu);
	a->closed = 1;
	lk = a->in_head; /* asked for after the drain's last look: answered here */
	a->in_head = a->in_tail = NULL;
	pthread_mutex_unlock(&a->mu);
	for (; lk; lk = next) {
		next = lk->next;
		lk->next = NULL;
		lk->body = srv_api_error_body(SRV_ERR_UNAVAILABLE, SRV_MSG_SHUTTING_DOWN,
					      &lk->body_len, &lk->status);
		lk->done(lk);
	}
	uv_close((uv_handle_t *)&a->async, NULL);
}
