/*
 * registry.c - the backend-neutral half of the ID registry (registry.h):
 * validation of ids, sid and prefix parsing and formatting, the suffix rule's
 * gap search, the choice of backend, the per-handle lock, and the operations
 * built on an ordered walk of the store (stats, diff, export, import).
 * registry_sqlite.c and registry_pg.c implement struct sid__reg_ops.
 */
#include "registry.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <jansson.h>
#include <math.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "encode.h"
#include "fsutil.h"

#define IMPORT_BATCH   1000
#define LINE_MAX_BYTES (64u << 20) /* one export line: an embedding of SID_MAX_DIM fits */
#define DIFF_BATCH     256
#define GROUP_CALLS    256   /* assign calls committed together, at most */
#define GROUP_ITEMS    16384 /* and their inputs (one call may exceed it alone) */

/* ---- ids, sids, prefixes ---- */

/* How much of @s to quote in a message, as "%.*s" takes it: at most @max
 * bytes, not ending inside a character. */
static int utf8_cut(const char *s, int max)
{
	return (int)sid_utf8_prefix(s, (size_t)max);
}

/* sid_reg_id_check, and with @named the id quoted in the message (its
 * first bytes). */
static int id_check(const char *id, int named, struct sid_error *err)
{
	const unsigned char *s = (const unsigned char *)id;
	size_t i = 0, len;

	if (!id || !*id)
		return sid_error_set(err, SID_EINVAL, "id is empty");
	len = strlen(id);
	if (len > SID_REG_ID_MAX && !named)
		return sid_error_set(err, SID_EINVAL, "id is %zu bytes, the limit is %d", len,
				     SID_REG_ID_MAX);
	if (len > SID_REG_ID_MAX)
		return sid_error_set(err, SID_EINVAL,
				     "id \"%.*s...\" is %zu bytes, the limit is %d",
				     utf8_cut(id, 40), id, len, SID_REG_ID_MAX);
	while (i < len) {
		unsigned c = s[i];
		size_t n;
		if (c < 0x20 || c == 0x7f)
			return named ? sid_error_set(err, SID_EINVAL,
						     "id \"%.*s\": control character 0x%02x at "
						     "byte offset %zu",
						     utf8_cut(id, 64), id, c, i)
				     : sid_error_set(err, SID_EINVAL,
						     "id: control character 0x%02x at byte offset "
						     "%zu",
						     c, i);
		if (!(n = sid_utf8_len(s + i, len - i)))
			goto bad;
		i += n;
	}
	return 0;
bad:
	return sid_error_set(err, SID_EINVAL, "id: invalid UTF-8 at byte offset %zu", i);
}

int sid_reg_id_check(const char *id, struct sid_error *err)
{
	return id_check(id, 1, err);
}

int sid_reg_id_check_unnamed(const char *id, struct sid_error *err)
{
	return id_check(id, 0, err);
}

static int version_check(const char *v, struct sid_error *err)
{
	if (!v)
		return sid_error_set(err, SID_EINVAL, "model_version is missing");
	return sid_model_version_check(v, err);
}

/*
 * Split @s into '-' separated canonical decimal fields (at most @max).
 * @what names the thing in messages ("sid", "prefix").
 */
static int fields_parse(const char *s, const char *what, int max, int64_t *val, int *n,
			struct sid_error *err)
{
	const char *p = s;
	int k = 0;

	if (!s || !*s)
		return sid_error_set(err, SID_EINVAL, "%s is empty", what);
	for (;;) {
		const char *start = p;
		int64_t v = 0;
		if (k == max)
			return sid_error_set(err, SID_EINVAL,
					     "%s \"%.*s\" has too many fields (at most %d)", what,
					     utf8_cut(s, 64), s, max);
		while (*p >= '0' && *p <= '9') {
			int d = *p - '0';
			if (v > (INT64_MAX - d) / 10)
				return sid_error_set(err, SID_EINVAL,
						     "%s \"%.*s\": field %d overflows", what,
						     utf8_cut(s, 64), s, k + 1);
			v = v * 10 + d;
			p++;
		}
		if (p == start) {
			if (*p == '-' || *p == '\0')
				return sid_error_set(err, SID_EINVAL,
						     "%s \"%.*s\": field %d is empty (fields are "
						     "non-negative integers joined by '-')",
						     what, utf8_cut(s, 64), s, k + 1);
			return sid_error_set(err, SID_EINVAL,
					     "%s \"%.*s\": field %d is not a non-negative decimal "
					     "integer",
					     what, utf8_cut(s, 64), s, k + 1);
		}
		if (*p != '-' && *p != '\0')
			return sid_error_set(err, SID_EINVAL,
					     "%s \"%.*s\": field %d is not a non-negative decimal "
					     "integer",
					     what, utf8_cut(s, 64), s, k + 1);
		if (p - start > 1 && *start == '0')
			return sid_error_set(err, SID_EINVAL,
					     "%s \"%.*s\": field %d has a leading zero", what,
					     utf8_cut(s, 64), s, k + 1);
		val[k++] = v;
		if (*p == '\0')
			break;
		p++;
		if (*p == '\0')
			return sid_error_set(err, SID_EINVAL, "%s \"%.*s\": ends with '-'", what,
					     utf8_cut(s, 64), s);
	}
	*n = k;
	return 0;
}

static int codes_from_fields(const char *s, const char *what, const int64_t *val, int n,
			     int32_t *codes, struct sid_error *err)
{
	for (int l = 0; l < n; l++) {
		if (val[l] >= SID_MAX_CODEBOOK)
			return sid_error_set(err, SID_EINVAL,
					     "%s \"%.*s\": code %" PRId64
					     " at level %d is out of range (codes are below %d)",
					     what, utf8_cut(s, 64), s, val[l], l, SID_MAX_CODEBOOK);
		codes[l] = (int32_t)val[l];
	}
	return 0;
}

int sid_reg_sid_parse(const char *s, int32_t *codes, int *L, int64_t *suffix, struct sid_error *err)
{
	int64_t val[SID_MAX_LEVELS + 1];
	int n, rc;

	rc = fields_parse(s, "sid", SID_MAX_LEVELS + 1, val, &n, err);
	if (rc)
		return rc;
	if (n < 2) /* one number: most often the code alone of a 1-level ID, which
		    * /v1/items:encode answers as its "sid", as for more levels */
		return sid_error_set(err, SID_EINVAL,
				     "sid \"%.*s\" needs at least one code and a suffix%s%.*s%s",
				     utf8_cut(s, 64), s,
				     val[0] < SID_MAX_CODEBOOK ? " (a code alone? the first ID "
								 "under it is "
							       : "",
				     val[0] < SID_MAX_CODEBOOK ? utf8_cut(s, 64) : 0, s,
				     val[0] < SID_MAX_CODEBOOK ? "-0)" : "");
	rc = codes_from_fields(s, "sid", val, n - 1, codes, err);
	if (rc)
		return rc;
	*L = n - 1;
	*suffix = val[n - 1];
	return 0;
}

int sid_reg_prefix_parse(const char *s, int32_t *codes, int *p, struct sid_error *err)
{
	int64_t val[SID_MAX_LEVELS];
	int n, rc;

	if (s && !*s) {
		*p = 0;
		return 0;
	}
	rc = fields_parse(s, "prefix", SID_MAX_LEVELS, val, &n, err);
	if (rc)
		return rc;
	rc = codes_from_fields(s, "prefix", val, n, codes, err);
	if (rc)
		return rc;
	*p = n;
	return 0;
}

int sid_reg_sid_format(const int32_t *codes, int L, int64_t suffix, char *buf, size_t len)
{
	/* the model's sid ("12-7-200"), then "-" and the suffix */
	int total = sid_codes_format(codes, L, SID_FORMAT_DASH, buf, len), w;
	size_t room;

	if (total < 0)
		return total;
	room = (size_t)total < len ? len - (size_t)total : 0;
	w = snprintf(buf + (room ? total : 0), room, L ? "-%" PRId64 : "%" PRId64, suffix);
	return w < 0 ? w : total + w;
}

void sid__reg_codes_pack(const int32_t *codes, int L, uint8_t *buf)
{
	for (int l = 0; l < L; l++) {
		uint32_t c = (uint32_t)codes[l];
		buf[4 * l] = c >> 24;
		buf[4 * l + 1] = c >> 16;
		buf[4 * l + 2] = c >> 8;
		buf[4 * l + 3] = c;
	}
}

#define SCHEMA_AHEAD "is newer than this build's"

int sid__reg_schema_ahead(struct sid_error *err, const char *label, int version, int known)
{
	return sid_error_set(err, SID_EFORMAT,
			     "registry %s: schema version %d " SCHEMA_AHEAD " %d (a newer semid "
			     "created or migrated it): run a semid that knows version %d",
			     label, version, known, version);
}

int sid_registry_error_schema_ahead(const struct sid_error *err)
{
	return err && err->code == SID_EFORMAT && strstr(err->msg, ": schema version ") &&
	       strstr(err->msg, " " SCHEMA_AHEAD " ");
}

int sid__reg_schema_parse(const char *text)
{
	int v = 0;

	if (!text || !*text || strlen(text) > 4)
		return -1;
	for (const char *p = text; *p; p++) {
		if (*p < '0' || *p > '9')
			return -1;
		v = v * 10 + (*p - '0');
	}
	return v;
}

int sid__reg_levels_parse(const char *label, int kind, const char *text, int *L,
			  struct sid_error *err)
{
	int v = sid__reg_schema_parse(text);

	*L = 0;
	if (v < 1 || v > SID_MAX_LEVELS)
		return sid_error_set(err, SID_EFORMAT,
				     "registry %s: damaged metadata: levels.%s in semid_meta is "
				     "\"%.40s\", not a level count 1..%d (restore a backup)",
				     label, sid_tower_name(kind), text ? text : "", SID_MAX_LEVELS);
	*L = v;
	return 0;
}

int sid__reg_stale(struct sid_reg_entry *e, int found, int kind, const char *id,
		   const struct sid_reg_entry *want)
{
	if (!want ||
	    (found && e->L == want->L && e->suffix == want->suffix &&
	     !memcmp(e->codes, want->codes, sizeof(int32_t) * (size_t)want->L) &&
	     e->updated_ms == want->updated_ms && !strcmp(e->model_version, want->model_version)))
		return 0;
	if (!found)
		sid__reg_absent(e, kind, id);
	e->stale = 1;
	return 1;
}

void sid__reg_absent(struct sid_reg_entry *e, int kind, const char *id)
{
	memset(e, 0, sizeof(*e));
	e->kind = kind;
	snprintf(e->id, sizeof(e->id), "%s", id);
}

void sid__reg_moving(struct sid_reg_entry *e)
{
	e->from_L = e->L;
	memcpy(e->from_codes, e->codes, sizeof(int32_t) * (size_t)e->L);
	e->from_suffix = e->suffix;
}

int sid__reg_codes_unpack(const void *buf, size_t len, int32_t *codes, int *L)
{
	const uint8_t *b = buf;
	if (len == 0 || len % 4 || len / 4 > SID_MAX_LEVELS)
		return -1;
	for (size_t l = 0; l < len / 4; l++) {
		uint32_t c = (uint32_t)b[4 * l] << 24 | (uint32_t)b[4 * l + 1] << 16 |
			     (uint32_t)b[4 * l + 2] << 8 | b[4 * l + 3];
		if (c >= SID_MAX_CODEBOOK)
			return -1;
		codes[l] = (int32_t)c;
	}
	*L = (int)(len / 4);
	return 0;
}

void sid__reg_gap_init(struct sid__reg_gap *g)
{
	g->next = 0;
}

int sid__reg_gap_feed(struct sid__reg_gap *g, int64_t used)
{
	if (used < g->next)
		return 0; /* cannot happen in increasing order; ignore */
	if (used > g->next)
		return 1; /* g->next is free */
	g->next++;
	return 0;
}

static int64_t clock_ms(clockid_t c)
{
	struct timespec ts;
	clock_gettime(c, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

int64_t sid__reg_now_ms(void)
{
	return clock_ms(CLOCK_REALTIME);
}

int64_t sid__reg_mono_ms(void)
{
	return clock_ms(CLOCK_MONOTONIC);
}

/* ---- open, close, and the locked wrappers ---- */

/* A URI, key=value words libpq parses (user=semid password=... with the
 * host from PGHOST was taken for a file name, which every message and
 * /v1/model then showed, password and all), or a string naming a host,
 * database, service or password that it cannot (refused as such, with
 * libpq's reason, rather than created as a SQLite file). */
int sid_registry_target_is_pg(const char *t)
{
	return t && (!strncmp(t, "postgresql://", 13) || !strncmp(t, "postgres://", 11) ||
		     strstr(t, "host=") || strstr(t, "dbname=") || strstr(t, "service=") ||
		     strstr(t, "password=") || (strchr(t, '=') && sid__reg_pg_conninfo_parses(t)));
}

int sid_registry_open(const char *target, unsigned flags, struct sid_registry **out,
		      struct sid_error *err)
{
	return sid_registry_open_timeout(target, flags, 0, out, err);
}

int sid_registry_open_timeout(const char *target, unsigned flags, int timeout_ms,
			      struct sid_registry **out, struct sid_error *err)
{
	int rc;

	*out = NULL;
	if (!target || !*target)
		return sid_error_set(err, SID_EINVAL,
				     "registry: no store given (a file path or a "
				     "postgresql:// connection string)");
	if (timeout_ms < 0)
		return sid_error_set(err, SID_EINVAL, "registry: timeout %d ms (want >= 0)",
				     timeout_ms);
	if (flags & SID_REG_PEEK)
		flags |= SID_REG_READONLY;
	if (sid_registry_target_is_pg(target))
		rc = sid__reg_pg_open(target, flags, timeout_ms, out, err);
	else
		rc = sid__reg_sqlite_open(target, flags, timeout_ms, out, err);
	if (rc)
		return rc;
	(*out)->open_flags = flags;
	pthread_mutex_init(&(*out)->lock, NULL);
	pthread_mutex_init(&(*out)->q_lock, NULL);
	pthread_cond_init(&(*out)->q_cond, NULL);
	return 0;
}

void sid_registry_close(struct sid_registry *r)
{
	if (!r)
		return;
	pthread_mutex_destroy(&r->lock);
	pthread_mutex_destroy(&r->q_lock);
	pthread_cond_destroy(&r->q_cond);
	r->ops->close(r);
}

void sid_registry_events_take(struct sid_registry *r, struct sid_reg_events *out)
{
	out->retries = __atomic_exchange_n(&r->events.retries, 0, __ATOMIC_RELAXED);
	out->global_locks = __atomic_exchange_n(&r->events.global_locks, 0, __ATOMIC_RELAXED);
	out->lock_table_full = __atomic_exchange_n(&r->events.lock_table_full, 0, __ATOMIC_RELAXED);
	out->busy_timeouts = __atomic_exchange_n(&r->events.busy_timeouts, 0, __ATOMIC_RELAXED);
	out->statement_timeouts =
	    __atomic_exchange_n(&r->events.statement_timeouts, 0, __ATOMIC_RELAXED);
	out->answer_timeouts = __atomic_exchange_n(&r->events.answer_timeouts, 0, __ATOMIC_RELAXED);
	out->rebuild_timeouts =
	    __atomic_exchange_n(&r->events.rebuild_timeouts, 0, __ATOMIC_RELAXED);
}

const char *sid_registry_backend(const struct sid_registry *r)
{
	return r->ops->name;
}

const char *sid_registry_label(const struct sid_registry *r)
{
	return r->label;
}

int sid_registry_default_path(const char *model_path, char *buf, size_t len)
{
	const char *slash = strrchr(model_path, '/');
	if (!slash)
		return snprintf(buf, len, "semid-registry.db");
	return snprintf(buf, len, "%.*s/semid-registry.db", (int)(slash - model_path) + 0,
			model_path);
}

static int kind_check(int kind, struct sid_error *err)
{
	if (kind != SID_TOWER_ITEM && kind != SID_TOWER_USER)
		return sid_error_set(err, SID_EINVAL, "registry: unknown kind %d", kind);
	return 0;
}

/* Take the handle for one call (or one group of assign calls): the backend
 * ops run until call_end count as one call (r->calls). */
static void call_begin(struct sid_registry *r)
{
	pthread_mutex_lock(&r->lock);
	r->calls++;
}

static void call_end(struct sid_registry *r)
{
	pthread_mutex_unlock(&r->lock);
}

/*
 * Queue @q and wait until it is answered.  Whoever finds no leader becomes
 * one: it takes the queue (up to GROUP_ITEMS inputs), runs it through the
 * backend under the handle lock, answers it, and lets the next waiter lead.
 * Calls arriving during a commit thus share the next one.
 */
static void group_commit(struct sid_registry *r, struct sid__reg_req **qs, size_t nqs)
{
	struct sid__reg_req *group[GROUP_CALLS];
	struct sid__reg_req *last = nqs ? qs[nqs - 1] : NULL;

	if (!nqs)
		return;
	pthread_mutex_lock(&r->q_lock);
	for (size_t i = 0; i < nqs; i++) {
		if (r->q_tail)
			r->q_tail->next = qs[i];
		else
			r->q_head = qs[i];
		r->q_tail = qs[i];
	}
	/* the queue is FIFO and served in order: the last one done means all */
	while (!last->done) {
		size_t nq = 0, items = 0;
		if (r->q_leader) {
			pthread_cond_wait(&r->q_cond, &r->q_lock);
			continue;
		}
		r->q_leader = 1;
		while (r->q_head && nq < GROUP_CALLS &&
		       (nq == 0 || items + r->q_head->n <= GROUP_ITEMS)) {
			items += r->q_head->n;
			group[nq++] = r->q_head;
			r->q_head = r->q_head->next;
		}
		if (!r->q_head)
			r->q_tail = NULL;
		pthread_mutex_unlock(&r->q_lock);
		call_begin(r);
		r->ops->assign(r, group, nq, sid__reg_now_ms());
		call_end(r);
		pthread_mutex_lock(&r->q_lock);
		for (size_t i = 0; i < nq; i++)
			group[i]->done = 1;
		r->q_leader = 0;
		pthread_cond_broadcast(&r->q_cond);
	}
	pthread_mutex_unlock(&r->q_lock);
}

/* Validate one call's arguments (nothing touches the store). */
static int assign_check(int kind, const struct sid_reg_item *items, size_t n, int L, int D,
			const char *model_version, int *any_emb, struct sid_error *err)
{
	int rc = kind_check(kind, err);

	*any_emb = 0;
	if (rc)
		return rc;
	if (L < 1 || L > SID_MAX_LEVELS)
		return sid_error_set(err, SID_EINVAL, "assign: %d levels (1..%d)", L,
				     SID_MAX_LEVELS);
	rc = version_check(model_version, err);
	if (rc)
		return rc;
	for (size_t i = 0; i < n; i++) {
		rc = sid_reg_id_check(items[i].id, err);
		if (rc) {
			if (err)
				err->index = (long)i;
			return sid_error_prefix(err, "input %zu", i);
		}
		if (!items[i].codes)
			return sid_error_set_at(err, SID_EINVAL, (long)i, "input %zu: no codes", i);
		for (int l = 0; l < L; l++)
			if (items[i].codes[l] < 0 || items[i].codes[l] >= SID_MAX_CODEBOOK)
				return sid_error_set_at(err, SID_EINVAL, (long)i,
							"input %zu (id \"%.*s\"): code %" PRId32
							" at level %d out of range",
							i, utf8_cut(items[i].id, 64), items[i].id,
							items[i].codes[l], l);
		if (items[i].emb)
			*any_emb = 1;
	}
	if (*any_emb && (D < 1 || D > SID_MAX_DIM))
		return sid_error_set(err, SID_EINVAL, "assign: embedding width %d (1..%d)", D,
				     SID_MAX_DIM);
	return 0;
}

int sid_registry_assign(struct sid_registry *r, enum sid_tower_kind kind,
			const struct sid_reg_item *items, size_t n, int L, int D,
			const char *model_version, unsigned flags, struct sid_reg_entry *out,
			struct sid_error *err)
{
	struct sid_reg_call c = {.kind = kind,
				 .items = items,
				 .n = n,
				 .L = L,
				 .D = D,
				 .model_version = model_version,
				 .flags = flags,
				 .out = out};
	int rc = sid_registry_assign_calls(r, &c, 1);
	if (rc && err)
		*err = c.err;
	return rc;
}

static int writable(const struct sid_registry *r, struct sid_error *err)
{
	if (r->open_flags & SID_REG_READONLY)
		return sid_error_set(err, SID_EINVAL, "registry %s: opened read-only", r->label);
	return 0;
}

/* A call on a read-only handle: answered when every id is known; one that
 * needs a write finds the store unavailable for writing (SID_EUNAVAIL). */
static int assign_known_only(struct sid_registry *r, struct sid_reg_call *c)
{
	if (c->flags & SID_REG_REASSIGN)
		return sid_error_set(&c->err, SID_EUNAVAIL,
				     "registry %s: opened read-only, and reassign writes",
				     r->label);
	size_t i = 0;
	int rc;

	if (!c->n)
		return 0;
	call_begin(r);
	/* from one state of the store, as a writer's read of known ids is */
	rc = r->ops->get_many(r, c->kind, c->items, c->n, c->out, &i, &c->err);
	call_end(r);
	if (rc == SID_ENOTFOUND)
		return sid_error_set_at(&c->err, SID_EUNAVAIL, (long)i,
					"registry %s: opened read-only, and input %zu (id "
					"%.*s) is not assigned yet",
					r->label, i, utf8_cut(c->items[i].id, 64), c->items[i].id);
	for (i = 0; !rc && i < c->n; i++)
		c->out[i].created = c->out[i].moved = 0;
	return rc;
}

int sid_registry_assign_calls(struct sid_registry *r, struct sid_reg_call *calls, size_t n)
{
	struct sid__reg_req *q = calloc(n ? n : 1, sizeof(*q));
	/* sizeof(*p) of an array of pointers: the pointer's size is meant */
	/* NOLINTNEXTLINE(bugprone-sizeof-expression) */
	struct sid__reg_req **qs = calloc(n ? n : 1, sizeof(*qs));
	size_t nq = 0;
	int rc = 0;

	if (!q || !qs) {
		for (size_t i = 0; i < n; i++)
			calls[i].rc =
			    sid_error_set(&calls[i].err, SID_ENOMEM, "assign: out of memory");
		free(q);
		free(qs);
		return n ? SID_ENOMEM : 0;
	}
	for (size_t i = 0; i < n; i++) {
		struct sid_reg_call *c = &calls[i];
		int any_emb;
		sid_error_clear(&c->err);
		c->rc = assign_check(c->kind, c->items, c->n, c->L, c->D, c->model_version,
				     &any_emb, &c->err);
		if (!c->rc && (r->open_flags & SID_REG_READONLY)) {
			c->rc = assign_known_only(r, c);
			continue;
		}
		if (c->rc || c->n == 0)
			continue;
		q[i] = (struct sid__reg_req){.kind = c->kind,
					     .L = c->L,
					     .D = any_emb ? c->D : 0,
					     .items = c->items,
					     .n = c->n,
					     .version = c->model_version,
					     .flags = c->flags,
					     .out = c->out,
					     .expect = c->expect};
		sid_error_clear(&q[i].err);
		qs[nq++] = &q[i];
	}
	group_commit(r, qs, nq);
	for (size_t i = 0; i < n; i++) {
		struct sid_reg_call *c = &calls[i];
		if (!c->rc && c->n) {
			c->rc = q[i].rc;
			if (c->rc)
				c->err = q[i].err;
		}
		if (c->rc && !rc)
			rc = c->rc;
	}
	free(q);
	free(qs);
	return rc;
}

int sid_registry_get(struct sid_registry *r, enum sid_tower_kind kind, const char *id,
		     struct sid_reg_entry *out, struct sid_error *err)
{
	int rc = kind_check(kind, err);
	if (!rc)
		rc = sid_reg_id_check(id, err);
	if (rc)
		return rc;
	call_begin(r);
	rc = r->ops->get(r, kind, id, out, err);
	call_end(r);
	return rc;
}

int sid_registry_delete(struct sid_registry *r, enum sid_tower_kind kind, const char *const *ids,
			size_t n, struct sid_reg_entry *out, struct sid_error *err)
{
	int rc = kind_check(kind, err);

	for (size_t i = 0; !rc && i < n; i++)
		if ((rc = sid_reg_id_check(ids[i], err))) {
			if (err)
				err->index = (long)i;
			return sid_error_prefix(err, "input %zu", i);
		}
	if (rc)
		return rc;
	if (r->open_flags & SID_REG_READONLY)
		return sid_error_set(err, SID_EUNAVAIL,
				     "registry %s: opened read-only, and delete "
				     "writes",
				     r->label);
	if (!n)
		return 0;
	call_begin(r);
	rc = r->ops->delete_ids(r, kind, ids, n, out, err);
	call_end(r);
	return rc;
}

int sid_registry_delete_rows(struct sid_registry *r, const int64_t *rows, size_t n,
			     struct sid_reg_entry *out, struct sid_error *err)
{
	int rc;

	if (!r->ops->delete_rows)
		return sid_error_set(err, SID_EINVAL,
				     "registry %s: a %s store's entries have no row numbers: "
				     "delete them by id",
				     r->label, r->ops->name);
	if (r->open_flags & SID_REG_READONLY)
		return sid_error_set(err, SID_EUNAVAIL,
				     "registry %s: opened read-only, and delete writes", r->label);
	if (!n)
		return 0;
	call_begin(r);
	rc = r->ops->delete_rows(r, rows, n, out, err);
	call_end(r);
	return rc;
}

int sid_registry_levels(struct sid_registry *r, enum sid_tower_kind kind, int *L,
			struct sid_error *err)
{
	int rc = kind_check(kind, err);
	if (rc)
		return rc;
	call_begin(r);
	rc = r->ops->levels(r, kind, L, err);
	call_end(r);
	return rc;
}

int sid_registry_ping(struct sid_registry *r, struct sid_error *err)
{
	int rc;

	call_begin(r);
	rc = r->ops->ping(r, err);
	call_end(r);
	return rc;
}

int sid_registry_get_sid(struct sid_registry *r, enum sid_tower_kind kind, const char *sid,
			 struct sid_reg_entry *out, struct sid_error *err)
{
	int32_t codes[SID_MAX_LEVELS];
	int L, Ls, rc;
	int64_t suffix;

	rc = kind_check(kind, err);
	if (!rc)
		rc = sid_reg_sid_parse(sid, codes, &L, &suffix, err);
	if (rc)
		return rc;
	call_begin(r);
	rc = r->ops->levels(r, kind, &Ls, err);
	if (rc)
		goto out;
	if (Ls == 0) {
		rc = sid_error_set(err, SID_ENOTFOUND, "sid %s: not found (no %s IDs stored yet)",
				   sid, sid_tower_name(kind));
		goto out;
	}
	if (L != Ls) {
		/* one number short: most often the codes alone, which
		 * /v1/items:encode answers as its "sid" */
		rc = sid_error_set(
		    err, SID_EINVAL,
		    "sid \"%.64s\" has %d level%s and a suffix; %s IDs have %d level%s "
		    "and a suffix%s%.64s%s",
		    sid, L, L == 1 ? "" : "s", sid_tower_name(kind), Ls, Ls == 1 ? "" : "s",
		    L == Ls - 1 ? " (codes alone? the first ID under them is " : "",
		    L == Ls - 1 ? sid : "", L == Ls - 1 ? "-0)" : "");
		goto out;
	}
	rc = r->ops->get_sid(r, kind, codes, L, suffix, out, err);
out:
	call_end(r);
	return rc;
}

/* @b (@len bytes) + 1 as a big-endian number; returns 0 when it overflowed. */
static int bytes_increment(uint8_t *b, size_t len)
{
	for (size_t i = len; i-- > 0;) {
		if (b[i] != 0xff) {
			b[i]++;
			return 1;
		}
		b[i] = 0;
	}
	return 0;
}

int sid_registry_list(struct sid_registry *r, enum sid_tower_kind kind, const char *prefix,
		      const char *cursor, size_t limit, struct sid_reg_entry *out, size_t *n_out,
		      char *next_cursor, struct sid_error *err)
{
	int32_t pc[SID_MAX_LEVELS], cc[SID_MAX_LEVELS];
	uint8_t lo[SID__REG_CODES_BYTES], hi[SID__REG_CODES_BYTES + 1], after[SID__REG_CODES_BYTES];
	size_t lo_len, hi_len, after_len, got = 0;
	int p, Ls, cl = 0, rc;
	int64_t after_suffix = -1;
	struct sid_reg_entry *buf = NULL;

	*n_out = 0;
	next_cursor[0] = '\0';
	rc = kind_check(kind, err);
	if (!rc)
		rc = sid_reg_prefix_parse(prefix ? prefix : "", pc, &p, err);
	if (rc)
		return rc;
	if (limit < 1 || limit > SID_REG_PAGE_MAX)
		return sid_error_set(err, SID_EINVAL, "limit %zu (1..%d)", limit, SID_REG_PAGE_MAX);
	if (cursor && *cursor) {
		rc = sid_reg_sid_parse(cursor, cc, &cl, &after_suffix, err);
		if (rc)
			return sid_error_prefix(err, "cursor");
	}
	buf = malloc((limit + 1) * sizeof(*buf));
	if (!buf)
		return sid_error_set(err, SID_ENOMEM, "list: out of memory");
	call_begin(r);
	rc = r->ops->levels(r, kind, &Ls, err);
	if (rc || Ls == 0)
		goto out;
	if (p > Ls) {
		rc = sid_error_set(
		    err, SID_EINVAL, "prefix \"%.64s\" has %d levels; %s IDs have %d%s", prefix, p,
		    sid_tower_name(kind), Ls,
		    p == Ls + 1 ? " (a prefix is codes only, without the suffix)" : "");
		goto out;
	}
	if (cl && cl != Ls) {
		rc = sid_error_set(err, SID_EINVAL, "cursor \"%.64s\" has %d %s; %s IDs have %d",
				   cursor, cl, sid_plural(cl, "level", "levels"),
				   sid_tower_name(kind), Ls);
		goto out;
	}
	sid__reg_codes_pack(pc, p, lo);
	lo_len = 4 * (size_t)p;
	memcpy(hi, lo, lo_len);
	hi_len = lo_len;
	if (!bytes_increment(hi, hi_len)) {
		hi[0] = 0xff; /* above every codes string (codes < 2^31) */
		hi_len = 1;
	}
	if (cl) {
		sid__reg_codes_pack(cc, cl, after);
		after_len = 4 * (size_t)cl;
	} else {
		memcpy(after, lo, lo_len);
		after_len = lo_len;
		after_suffix = -1;
	}
	rc = r->ops->list(r, kind, lo, lo_len, hi, hi_len, after, after_len, after_suffix,
			  limit + 1, buf, &got, err);
	if (rc)
		goto out;
	*n_out = got > limit ? limit : got;
	memcpy(out, buf, *n_out * sizeof(*out));
	if (got > limit)
		sid_reg_sid_format(out[limit - 1].codes, out[limit - 1].L, out[limit - 1].suffix,
				   next_cursor, SID_REG_SID_MAX);
out:
	call_end(r);
	free(buf);
	return rc;
}

void sid_registry_set_progress(struct sid_registry *r, sid_reg_progress_fn fn, void *ctx)
{
	r->progress = fn;
	r->progress_ctx = ctx;
}

/* A walk that tells r->progress how far it got (sid_registry_set_progress). */
struct told_walk {
	struct sid_registry *r;
	sid_reg_foreach_fn fn;
	void *ctx;
	uint64_t n;
};

static int told_fn(const struct sid_reg_entry *e, const float *emb, void *p)
{
	struct told_walk *t = p;
	if (++t->n % 4096 == 0)
		t->r->progress(t->r->progress_ctx, t->n, 0);
	return t->fn(e, emb, t->ctx);
}

/* The backend's walk, told to r->progress; under the handle lock. */
static int walk(struct sid_registry *r, int kind, int want_emb, sid_reg_foreach_fn fn, void *ctx,
		struct sid_error *err)
{
	struct told_walk t = {r, fn, ctx, 0};
	int rc;

	if (!r->progress)
		return r->ops->foreach (r, kind, want_emb, fn, NULL, ctx, err);
	rc = r->ops->foreach (r, kind, want_emb, told_fn, NULL, &t, err);
	if (!rc)
		r->progress(r->progress_ctx, t.n, 0);
	return rc;
}

int sid_registry_foreach(struct sid_registry *r, int kind, int want_emb, sid_reg_foreach_fn fn,
			 void *ctx, struct sid_error *err)
{
	int rc;
	if (kind != -1 && (rc = kind_check(kind, err)))
		return rc;
	call_begin(r);
	rc = walk(r, kind, want_emb, fn, ctx, err);
	call_end(r);
	return rc;
}

void sid__reg_count_sql(char *buf, size_t len, int kind, int with_emb, const char *param)
{
	int n = snprintf(buf, len, "SELECT count(*) FROM semid_assignment WHERE 1 = 1");

	if (kind >= 0)
		n += snprintf(buf + n, len - (size_t)n, " AND kind = %s", param);
	if (with_emb)
		snprintf(buf + n, len - (size_t)n, " AND emb_dim > 0");
}

int sid_registry_count(struct sid_registry *r, int kind, uint64_t *n, struct sid_error *err)
{
	int rc;
	*n = 0;
	if (kind != -1 && (rc = kind_check(kind, err)))
		return rc;
	call_begin(r);
	rc = r->ops->count(r, kind, 0, n, err);
	call_end(r);
	return rc;
}

/* ---- stats ---- */

struct stats_ctx {
	struct sid_reg_stats *st;
	int32_t prev[SID_MAX_LEVELS];
	int prev_L;
};

static int suffix_bucket(int64_t s)
{
	return s <= 0 ? 0 : 64 - __builtin_clzll((unsigned long long)s);
}

static int stats_fn(const struct sid_reg_entry *e, const float *emb, void *p)
{
	struct stats_ctx *c = p;
	struct sid_reg_stats *st = c->st;
	int d = 0;

	if (st->items && c->prev_L == e->L)
		while (d < e->L && c->prev[d] == e->codes[d])
			d++;
	for (int l = d; l < e->L; l++)
		st->prefixes[l]++;
	memcpy(c->prev, e->codes, sizeof(c->prev));
	c->prev_L = e->L;
	st->items++;
	if (e->L > st->L)
		st->L = e->L;
	if (e->suffix > st->max_suffix)
		st->max_suffix = e->suffix;
	st->suffix_hist[suffix_bucket(e->suffix)]++;
	return 0;
}

int sid_registry_stats(struct sid_registry *r, enum sid_tower_kind kind, struct sid_reg_stats *st,
		       struct sid_error *err)
{
	struct stats_ctx c;
	int rc = kind_check(kind, err);

	memset(st, 0, sizeof(*st));
	st->max_suffix = -1;
	memset(&c, 0, sizeof(c));
	c.st = st;
	if (rc)
		return rc;
	call_begin(r);
	rc = walk(r, kind, SID__REG_WALK_CODES, stats_fn, &c, err);
	if (!rc)
		rc = r->ops->count(r, kind, 1, &st->with_embedding, err);
	call_end(r);
	return rc;
}

/* ---- check ---- */

const char *sid_reg_problem_name(enum sid_reg_problem p)
{
	static const char *const names[SID_REG_P_COUNT] = {"unreadable", "kind", "levels",
							   "embedding", "store"};
	return (unsigned)p < SID_REG_P_COUNT ? names[p] : "?";
}

struct check_ctx {
	struct sid_registry *r;
	struct sid_reg_check *res;
	sid_reg_finding_fn fn;
	void *ctx;
	int L[2]; /* each kind's stored levels; 0 while it holds none */
};

/* One entry walked, readable or not: counted and told to r->progress. */
static void check_counted(struct check_ctx *c)
{
	if (++c->res->entries % 4096 == 0 && c->r->progress)
		c->r->progress(c->r->progress_ctx, c->res->entries, 0);
}

static int check_found(const struct sid_reg_finding *f, void *p)
{
	struct check_ctx *c = p;

	c->res->found[f->problem]++;
	return c->fn ? c->fn(f, c->ctx) : 0;
}

/* The backend's: an entry it could not read, or its embedding. */
static int check_bad(const struct sid_reg_finding *f, void *p)
{
	check_counted(p);
	return check_found(f, p);
}

static int check_report(struct check_ctx *c, enum sid_reg_problem problem,
			const struct sid_reg_entry *e, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

static int check_report(struct check_ctx *c, enum sid_reg_problem problem,
			const struct sid_reg_entry *e, const char *fmt, ...)
{
	struct sid_reg_finding f = {problem, e->kind, -1, e->id, NULL};
	char what[256], msg[512];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(what, sizeof(what), fmt, ap);
	va_end(ap);
	snprintf(msg, sizeof(msg), "registry %s: the stored entry of id \"%.*s\": %s", c->r->label,
		 utf8_cut(e->id, 64), e->id, what);
	f.message = msg;
	return check_found(&f, c);
}

int sid__reg_kind_bad(struct sid_registry *r, const struct sid_reg_entry *e, int64_t row,
		      sid_reg_finding_fn bad, void *ctx, int *rc)
{
	struct sid_reg_finding f = {SID_REG_P_KIND, e->kind, row, e->id, NULL};
	char where[32] = "", how[2 * SID_REG_ID_MAX + 128], msg[sizeof(how) + 256];
	size_t n;

	if (e->kind == SID_TOWER_ITEM || e->kind == SID_TOWER_USER)
		return 0;
	if (row >= 0) {
		snprintf(where, sizeof(where), " (row %lld)", (long long)row);
		snprintf(how, sizeof(how), "semid registry delete --rows %lld erases it",
			 (long long)row);
	} else { /* the id as an SQL literal: its quotes doubled */
		n = (size_t)snprintf(how, sizeof(how),
				     "DELETE FROM semid_assignment WHERE kind = %d AND id = '",
				     e->kind);
		for (const char *s = e->id; *s && n + 2 < sizeof(how); s++) {
			if (*s == '\'')
				how[n++] = '\'';
			how[n++] = *s;
		}
		snprintf(how + n, sizeof(how) - n, "' erases it");
	}
	snprintf(msg, sizeof(msg),
		 "registry %s: the stored entry of id \"%.*s\"%s: kind %d is neither item (0) nor "
		 "user (1), so no request reaches it (%s)",
		 r->label, utf8_cut(e->id, 64), e->id, where, e->kind, how);
	f.message = msg;
	*rc = bad(&f, ctx);
	return 1;
}

/* 1 when @ms is a time time_format writes as time_parse reads it back:
 * 1970-01-01T00:00:00.000Z to 9999-12-31T23:59:59.999Z */
static int time_exportable(int64_t ms)
{
	return ms >= 0 && ms <= INT64_C(253402300799999);
}

static int check_entry(const struct sid_reg_entry *e, const float *emb, void *p)
{
	struct check_ctx *c = p;
	struct sid_error verr;
	int rc;

	check_counted(c);
	if (sid__reg_kind_bad(c->r, e, -1, check_found, c, &rc))
		return rc;
	/* (read as text of at most its length, not checked as import does) */
	if (sid_model_version_check(e->model_version, &verr))
		return check_report(c, SID_REG_P_UNREADABLE, e,
				    "its model_version is damaged (%s): an export of it cannot "
				    "be imported back; assigning the id again with reassign "
				    "rewrites it, and semid registry delete ID erases it",
				    verr.msg);
	if (!time_exportable(e->created_ms) || !time_exportable(e->updated_ms))
		return check_report(c, SID_REG_P_UNREADABLE, e,
				    "its created_ms (%lld) or updated_ms (%lld) is not a time from "
				    "1970 to 9999: an export of it cannot be imported back; "
				    "semid registry delete ID erases it",
				    (long long)e->created_ms, (long long)e->updated_ms);
	if (c->L[e->kind] && e->L != c->L[e->kind])
		return check_report(c, SID_REG_P_LEVELS, e,
				    "%d levels of codes, where the %s IDs have %d", e->L,
				    sid_tower_name(e->kind), c->L[e->kind]);
	if (e->D > 0 && !emb)
		return check_report(c, SID_REG_P_EMBEDDING, e,
				    "it says an embedding of %d floats is kept, and none is", e->D);
	for (int i = 0; emb && i < e->D; i++)
		if (!isfinite(emb[i]))
			return check_report(c, SID_REG_P_EMBEDDING, e,
					    "value %d of its embedding is not finite (%g)", i,
					    (double)emb[i]);
	return 0;
}

/* A file too damaged to be read on (SID_EFORMAT: SQLite's "malformed") is
 * what a check is for: a finding, and the check goes on.  Else @rc. */
static int check_broken(struct check_ctx *c, int rc, const char *note, struct sid_error *err)
{
	char msg[sizeof(err->msg) + 64];
	struct sid_reg_finding f = {SID_REG_P_STORE, -1, -1, NULL, msg};

	if (rc != SID_EFORMAT)
		return rc;
	if (note)
		snprintf(msg, sizeof(msg), "%s (%s, after %" PRIu64 " entries)", err->msg, note,
			 c->res->entries);
	else
		snprintf(msg, sizeof(msg), "%s", err->msg);
	sid_error_clear(err);
	return check_found(&f, c);
}

int sid_registry_check(struct sid_registry *r, int kind, sid_reg_finding_fn fn, void *ctx,
		       struct sid_reg_check *res, struct sid_error *err)
{
	struct check_ctx c = {r, res, fn, ctx, {0, 0}};
	int rc = 0;

	memset(res, 0, sizeof(*res));
	if (kind != -1 && (rc = kind_check(kind, err)))
		return rc;
	call_begin(r);
	for (int k = SID_TOWER_ITEM; k <= SID_TOWER_USER && !rc; k++)
		rc = r->ops->levels(r, k, &c.L[k], err);
	if (!rc)
		rc = check_broken(&c, r->ops->foreach (r, kind, 1, check_entry, check_bad, &c, err),
				  "the walk stopped there", err);
	if (!rc && r->progress)
		r->progress(r->progress_ctx, res->entries, 0);
	if (!rc) {
		int checked = 0;
		rc = check_broken(&c,
				  r->ops->check_store(r, check_found, &c, &checked, res->store_how,
						      sizeof(res->store_how), err),
				  NULL, err);
		res->store_checked = !rc && checked;
	}
	call_end(r);
	if (!rc) /* (what the walk went past) */
		sid_error_clear(err);
	return rc;
}

/* ---- backup ---- */

int sid_registry_backup(struct sid_registry *r, const char *dest, const char *final,
			sid_reg_progress_fn fn, void *ctx, struct sid_error *err)
{
	int rc;

	if (!r->ops->backup)
		return sid_error_set(err, SID_EINVAL,
				     "registry %s: a %s store is backed up with PostgreSQL's own "
				     "tools (pg_dump); semid registry backup copies SQLite stores",
				     r->label, r->ops->name);
	call_begin(r);
	rc = r->ops->backup(r, dest, final, fn, ctx, err);
	call_end(r);
	return rc;
}

/* ---- diff ---- */

struct diff_ctx {
	const struct sid_tower *t;
	struct sid_reg_diff *d;
	struct sid_workspace *ws;
	float *x;	/* (DIFF_BATCH, D) */
	int32_t *old;	/* (DIFF_BATCH, SID_MAX_LEVELS) */
	int32_t *codes; /* (DIFF_BATCH, L_new) */
	float *dist;	/* (DIFF_BATCH): to find an encoder that overflowed */
	size_t n;
	struct sid_error *err;
	int rc;
	/* reassign_all: each changed entry is written here (spool_put) */
	FILE *spool;
	struct sid_reg_entry *ent; /* (DIFF_BATCH) the entries encoded */
	sid_reg_stop_fn stop;	   /* asked after each DIFF_BATCH entries */
	void *stop_ctx;
};

/*
 * A spool record: one entry whose codes the new tower changes, as
 * sid_registry_reassign_all reads it back: the entry as stored (id, L,
 * codes, suffix, and the model_version and updated_ms of its last write, so
 * that a write since the walk that kept its codes, and replaced the
 * embedding the new codes came from, is seen too) and the new codes (L_new).
 * Not the embedding: the move leaves the stored one in place (it is the one
 * the codes came from).
 */
static int spool_put(struct diff_ctx *c, size_t i, const int32_t *codes)
{
	const struct sid_reg_entry *e = &c->ent[i];
	uint32_t idlen = (uint32_t)strlen(e->id), vlen = (uint32_t)strlen(e->model_version);

	if (fwrite(&idlen, sizeof(idlen), 1, c->spool) != 1 ||
	    fwrite(e->id, 1, idlen, c->spool) != idlen ||
	    fwrite(&vlen, sizeof(vlen), 1, c->spool) != 1 ||
	    fwrite(e->model_version, 1, vlen, c->spool) != vlen ||
	    fwrite(&e->updated_ms, sizeof(e->updated_ms), 1, c->spool) != 1 ||
	    fwrite(&e->L, sizeof(e->L), 1, c->spool) != 1 ||
	    fwrite(e->codes, sizeof(e->codes), 1, c->spool) != 1 ||
	    fwrite(&e->suffix, sizeof(e->suffix), 1, c->spool) != 1 ||
	    fwrite(codes, sizeof(int32_t), (size_t)c->t->L, c->spool) != (size_t)c->t->L)
		return sid_error_set(c->err, SID_EIO, "reassign: the spool file: %s",
				     strerror(errno));
	return 0;
}

static int spool_get(FILE *f, const struct sid_tower *t, struct sid_reg_entry *before,
		     int32_t *codes)
{
	uint32_t idlen, vlen;

	memset(before, 0, sizeof(*before));
	if (fread(&idlen, sizeof(idlen), 1, f) != 1 || idlen > SID_REG_ID_MAX ||
	    fread(before->id, 1, idlen, f) != idlen || fread(&vlen, sizeof(vlen), 1, f) != 1 ||
	    vlen > SID_REG_VERSION_MAX || fread(before->model_version, 1, vlen, f) != vlen ||
	    fread(&before->updated_ms, sizeof(before->updated_ms), 1, f) != 1 ||
	    fread(&before->L, sizeof(before->L), 1, f) != 1 ||
	    fread(before->codes, sizeof(before->codes), 1, f) != 1 ||
	    fread(&before->suffix, sizeof(before->suffix), 1, f) != 1 ||
	    fread(codes, sizeof(int32_t), (size_t)t->L, f) != (size_t)t->L)
		return -1;
	before->D = t->D;
	return 0;
}

static int diff_flush(struct diff_ctx *c)
{
	struct sid_encode_out o = {.codes = c->codes, .dist = c->dist};
	struct sid_reg_diff *d = c->d;
	int Lmin = d->L_old < d->L_new ? d->L_old : d->L_new;
	long bad;
	int rc;

	if (!c->n)
		return 0;
	rc = sid_encode(c->t, c->x, c->n, &o, c->ws, c->err);
	if (rc)
		return rc;
	/* codes from an overflowed encoder mean nothing: no move is made on them */
	if ((bad = sid_encode_overflow(c->dist, NULL, NULL, 0, c->n)) >= 0)
		return sid_error_set(
		    c->err, SID_EINVAL,
		    "the stored embedding of id %s is too large for the new model: "
		    "its encoder overflows float32 on it",
		    c->ent[bad].id);
	for (size_t i = 0; i < c->n; i++) {
		const int32_t *a = c->old + i * SID_MAX_LEVELS, *b = c->codes + i * d->L_new;
		int any = 0;
		for (int l = 0; l < Lmin; l++) {
			if (a[l] != b[l]) {
				d->level_changed[l]++;
				any = 1;
			}
			if (any)
				d->prefix_changed[l]++;
		}
		if (any || d->L_old != d->L_new) {
			d->changed++;
			if (c->spool && (rc = spool_put(c, i, b)))
				return rc;
		}
		d->compared++;
	}
	c->n = 0;
	return 0;
}

static int diff_fn(const struct sid_reg_entry *e, const float *emb, void *p)
{
	struct diff_ctx *c = p;
	struct sid_reg_diff *d = c->d;

	d->items++;
	if (d->L_old == 0)
		d->L_old = e->L;
	if (!emb) {
		d->no_embedding++;
		return 0;
	}
	if (e->D != c->t->D) {
		d->wrong_dim++;
		return 0;
	}
	memcpy(c->x + c->n * c->t->D, emb, sizeof(float) * c->t->D);
	memcpy(c->old + c->n * SID_MAX_LEVELS, e->codes, sizeof(e->codes));
	c->ent[c->n] = *e;
	if (++c->n == DIFF_BATCH) {
		c->rc = diff_flush(c);
		if (!c->rc && c->stop && (c->rc = c->stop(c->stop_ctx)))
			sid_error_set(c->err, c->rc, "reassign: stopped during the walk");
	}
	return c->rc;
}

/* The diff's walk; with @spool, every changed entry is written there too,
 * and @stop (may be NULL) is asked now and then whether to go on. */
static int diff_walk(struct sid_registry *r, enum sid_tower_kind kind, const struct sid_model *m,
		     struct sid_reg_diff *d, FILE *spool, sid_reg_stop_fn stop, void *ctx,
		     struct sid_error *err)
{
	struct diff_ctx c;
	int rc;

	memset(d, 0, sizeof(*d));
	memset(&c, 0, sizeof(c));
	rc = kind_check(kind, err);
	if (rc)
		return rc;
	c.t = sid_model_tower(m, kind);
	if (!c.t)
		return sid_error_set(err, SID_ENOTFOUND, "diff: the model has no %s tower",
				     sid_tower_name(kind));
	d->L_new = c.t->L;
	c.d = d;
	c.err = err;
	c.spool = spool;
	c.stop = stop;
	c.stop_ctx = ctx;
	c.ws = sid_workspace_new();
	c.x = malloc(sizeof(float) * DIFF_BATCH * c.t->D);
	c.old = malloc(sizeof(int32_t) * DIFF_BATCH * SID_MAX_LEVELS);
	c.codes = malloc(sizeof(int32_t) * DIFF_BATCH * c.t->L);
	c.dist = malloc(sizeof(float) * DIFF_BATCH);
	c.ent = malloc(sizeof(*c.ent) * DIFF_BATCH);
	if (!c.ws || !c.x || !c.old || !c.codes || !c.dist || !c.ent) {
		rc = sid_error_set(err, SID_ENOMEM, "diff: out of memory");
		goto fail;
	}
	rc = sid_registry_foreach(r, kind, 1, diff_fn, &c, err);
	if (!rc)
		rc = diff_flush(&c);
	/* when diff_fn stopped the walk, err holds the encoder's message */
fail:
	sid_workspace_free(c.ws);
	free(c.x);
	free(c.old);
	free(c.codes);
	free(c.dist);
	free(c.ent);
	return rc;
}

int sid_registry_diff(struct sid_registry *r, enum sid_tower_kind kind, const struct sid_model *m,
		      struct sid_reg_diff *d, struct sid_error *err)
{
	return diff_walk(r, kind, m, d, NULL, NULL, NULL, err);
}

/* An unnamed temp file in $TMPDIR (else /tmp) for the spool. */
static FILE *spool_open(struct sid_error *err)
{
	const char *dir = getenv("TMPDIR");
	char path[4096];
	int fd;
	FILE *f;

	snprintf(path, sizeof(path), "%s", dir && *dir ? dir : "/tmp");
	fd = open(path, O_TMPFILE | O_RDWR | O_CLOEXEC, 0600);
	if (fd < 0) { /* no O_TMPFILE there: a named file, unlinked at once */
		snprintf(path, sizeof(path), "%s/semid-reassign.XXXXXX",
			 dir && *dir ? dir : "/tmp");
		if ((fd = mkostemp(path, O_CLOEXEC)) >= 0)
			unlink(path);
	}
	if (fd < 0 || !(f = fdopen(fd, "w+b"))) {
		sid_error_set(err, SID_EIO, "reassign: cannot make a spool file in %s: %s",
			      dir && *dir ? dir : "/tmp", strerror(errno));
		if (fd >= 0)
			close(fd);
		return NULL;
	}
	return f;
}

int sid_registry_reassign_check(struct sid_registry *r, enum sid_tower_kind kind,
				const struct sid_model *m, struct sid_error *err)
{
	const struct sid_tower *t = sid_model_tower(m, kind);
	int rc, L = 0;

	if ((rc = kind_check(kind, err)))
		return rc;
	if (!t)
		return sid_error_set(err, SID_ENOTFOUND, "reassign: the model has no %s tower",
				     sid_tower_name(kind));
	if ((rc = sid_registry_levels(r, kind, &L, err)))
		return rc;
	if (L && L != t->L)
		return sid_error_set(
		    err, SID_EINVAL,
		    "reassign: the store's %s IDs have %d levels and model %s gives "
		    "%d; IDs of another length need a store of their own",
		    sid_tower_name(kind), L, m->version, t->L);
	return 0;
}

int sid_registry_reassign_all(struct sid_registry *r, enum sid_tower_kind kind,
			      const struct sid_model *m, size_t batch, sid_reg_moved_fn fn,
			      sid_reg_stop_fn stop, void *ctx, struct sid_reg_diff *d,
			      uint64_t *moved, uint64_t *stale, struct sid_error *err)
{
	const struct sid_tower *t = sid_model_tower(m, kind);
	struct sid_reg_entry *before = NULL, *after = NULL;
	struct sid_reg_item *items = NULL;
	int32_t *codes = NULL;
	struct sid_reg_call call;
	FILE *spool = NULL;
	int rc;

	*moved = *stale = 0;
	memset(d, 0, sizeof(*d));
	if ((rc = sid_registry_reassign_check(r, kind, m, err)))
		return rc;
	if (!batch || batch > 10000)
		return sid_error_set(err, SID_EINVAL, "reassign: batch %zu, not 1..10000", batch);
	if (!(spool = spool_open(err)))
		return SID_EIO;
	if ((rc = diff_walk(r, kind, m, d, spool, stop, ctx, err)))
		goto out;
	if (fflush(spool) != 0 || fseek(spool, 0, SEEK_SET) != 0) {
		rc = sid_error_set(err, SID_EIO, "reassign: the spool file: %s", strerror(errno));
		goto out;
	}
	before = malloc(sizeof(*before) * batch);
	after = malloc(sizeof(*after) * batch);
	items = malloc(sizeof(*items) * batch);
	codes = malloc(sizeof(int32_t) * batch * (size_t)t->L);
	if (!before || !after || !items || !codes) {
		rc = sid_error_set(err, SID_ENOMEM, "reassign: out of memory");
		goto out;
	}
	for (uint64_t left = d->changed; left > 0;) {
		size_t n = left < batch ? (size_t)left : batch;
		for (size_t i = 0; i < n; i++) {
			if (spool_get(spool, t, &before[i], codes + i * t->L)) {
				rc = sid_error_set(err, SID_EIO,
						   "reassign: the spool file ends early");
				goto out;
			}
			before[i].kind = kind;
			/* no embedding: the stored one stays (no second copy written) */
			items[i] = (struct sid_reg_item){before[i].id, codes + i * t->L, NULL};
		}
		if (stop && (rc = stop(ctx))) {
			sid_error_set(err, rc, "reassign: stopped");
			goto out;
		}
		/* each id moves only from the ID the walk read */
		call = (struct sid_reg_call){.kind = kind,
					     .items = items,
					     .n = n,
					     .L = t->L,
					     .model_version = m->version,
					     .flags = SID_REG_REASSIGN | SID_REG_STORED_EMB,
					     .out = after,
					     .expect = before};
		if ((rc = sid_registry_assign_calls(r, &call, 1))) {
			*err = call.err;
			goto out;
		}
		/* every move this commit made is told, even after @fn said stop */
		for (size_t i = 0; i < n; i++) {
			*stale += after[i].stale != 0;
			if (after[i].moved) {
				int frc = fn ? fn(&before[i], &after[i], ctx) : 0;
				++*moved;
				if (frc && !rc)
					rc = frc;
			}
		}
		if (rc)
			goto out;
		left -= n;
	}
out:
	if (spool)
		fclose(spool);
	free(before);
	free(after);
	free(items);
	free(codes);
	return rc;
}

/* ---- export and import ---- */

static const char b64chars[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

/* Base64 of @len bytes into a malloc'ed string. */
static char *b64_encode(const void *buf, size_t len)
{
	const uint8_t *s = buf;
	char *out = malloc((len + 2) / 3 * 4 + 1), *o = out;
	if (!out)
		return NULL;
	for (size_t i = 0; i < len; i += 3) {
		uint32_t v = (uint32_t)s[i] << 16;
		if (i + 1 < len)
			v |= (uint32_t)s[i + 1] << 8;
		if (i + 2 < len)
			v |= s[i + 2];
		*o++ = b64chars[v >> 18];
		*o++ = b64chars[(v >> 12) & 63];
		*o++ = i + 1 < len ? b64chars[(v >> 6) & 63] : '=';
		*o++ = i + 2 < len ? b64chars[v & 63] : '=';
	}
	*o = '\0';
	return out;
}

/* Decode padded base64 of little-endian float32 into a malloc'ed array;
 * SID_EFORMAT saying what is wrong and where (a character counted from 1,
 * as lines are), or SID_ENOMEM. */
static int b64_floats(const char *s, size_t slen, float **out, int *D, struct sid_error *err)
{
	char shown[SID_BYTE_SHOWN_MAX];
	uint8_t *buf;
	size_t n = 0, i;
	uint32_t acc = 0;
	int bits = 0;

	*out = NULL;
	for (i = 0; i < slen; i++) /* the first stray character, before the length */
		if (s[i] == '=' ? i + 2 < slen || (i + 2 == slen && s[slen - 1] != '=')
				: !s[i] || !strchr(b64chars, s[i]))
			return sid_error_set(
			    err, SID_EFORMAT,
			    "embedding_b64 is not valid base64 (character %zu, %s)", i + 1,
			    sid_byte_shown((unsigned char)s[i], shown));
	if (slen % 4)
		return sid_error_set(err, SID_EFORMAT,
				     "embedding_b64 is not valid base64 (length %zu, not a "
				     "multiple of 4)",
				     slen);
	buf = malloc(slen / 4 * 3 + 4);
	if (!buf)
		return sid_error_set(err, SID_ENOMEM, "embedding_b64: out of memory");
	for (i = 0; i < slen && s[i] != '='; i++) {
		acc = acc << 6 | (uint32_t)(strchr(b64chars, s[i]) - b64chars);
		bits += 6;
		if (bits >= 8) {
			bits -= 8;
			buf[n++] = (uint8_t)(acc >> bits);
		}
	}
	if (n == 0 || n % 4 || n / 4 > SID_MAX_DIM) {
		free(buf);
		return sid_error_set(err, SID_EFORMAT,
				     "embedding_b64 decodes to %zu bytes; an embedding is 1 to %d "
				     "float32 values (4 bytes each)",
				     n, SID_MAX_DIM);
	}
	for (i = 0; i < n / 4; i++) {
		float f;
		uint32_t u = (uint32_t)buf[4 * i] | (uint32_t)buf[4 * i + 1] << 8 |
			     (uint32_t)buf[4 * i + 2] << 16 | (uint32_t)buf[4 * i + 3] << 24;
		memcpy(&f, &u, 4);
		if (!isfinite(f)) {
			free(buf);
			return sid_error_set(
			    err, SID_EFORMAT,
			    "embedding_b64 holds a non-finite float32 at index %zu", i);
		}
		memcpy(buf + 4 * i, &f, 4);
	}
	*out = (float *)(void *)buf;
	*D = (int)(n / 4);
	return 0;
}

static void time_format(int64_t ms, char out[80])
{
	time_t t = (time_t)(ms / 1000);
	struct tm tm;
	gmtime_r(&t, &tm);
	snprintf(out, 80, "%04d-%02d-%02dT%02d:%02d:%02d.%03dZ", tm.tm_year + 1900, tm.tm_mon + 1,
		 tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec, (int)(ms % 1000));
}

#define TIME_EXAMPLE "2026-01-31T12:00:00.000Z" /* the form export writes */

static int time_parse(const char *s, int64_t *ms)
{
	struct tm tm;
	int y, mo, d, h, mi, se, f, n = 0;
	time_t t;

	/* the form export writes, exactly: digits where digits go (sscanf
	 * alone took a sign or a space there) */
	static const char form[] = "dddd-dd-ddTdd:dd:dd.dddZ";
	if (strlen(s) != 24)
		return -1;
	for (int i = 0; i < 24; i++)
		if (form[i] == 'd' ? !(s[i] >= '0' && s[i] <= '9') : s[i] != form[i])
			return -1;
	if (sscanf(s, "%4d-%2d-%2dT%2d:%2d:%2d.%3dZ%n", &y, &mo, &d, &h, &mi, &se, &f, &n) != 7 ||
	    n != 24)
		return -1;
	if (y < 1970 || mo < 1 || mo > 12 || d < 1 || d > 31 || h > 23 || mi > 59 || se > 59)
		return -1;
	memset(&tm, 0, sizeof(tm));
	tm.tm_year = y - 1900;
	tm.tm_mon = mo - 1;
	tm.tm_mday = d;
	tm.tm_hour = h;
	tm.tm_min = mi;
	tm.tm_sec = se;
	t = timegm(&tm);
	/* a date that does not exist (February 31) comes back as another */
	if (t == (time_t)-1 || tm.tm_mday != d || tm.tm_mon != mo - 1)
		return -1;
	*ms = (int64_t)t * 1000 + f;
	return 0;
}

json_t *sid_reg_entry_json(const struct sid_reg_entry *e, int assign)
{
	char sid[SID_REG_SID_MAX], ct[80], ut[80];
	json_t *codes = json_array(), *o;

	sid_reg_sid_format(e->codes, e->L, e->suffix, sid, sizeof(sid));
	time_format(e->created_ms, ct);
	time_format(e->updated_ms, ut);
	for (int l = 0; codes && l < e->L; l++)
		json_array_append_new(codes, json_integer(e->codes[l]));
	o = json_pack("{s:s, s:s, s:o, s:I, s:s, s:s, s:s, s:s, s:i}", "kind",
		      sid_tower_name(e->kind), "id", e->id, "codes", codes, "suffix",
		      (json_int_t)e->suffix, "sid", sid, "model_version", e->model_version,
		      "created_at", ct, "updated_at", ut, "embedding_dim", e->D);
	if (o && assign) {
		json_object_set_new(o, "created", json_boolean(e->created));
		json_object_set_new(o, "moved", json_boolean(e->moved));
	}
	return o;
}

/* The little-endian bytes of @D floats (a copy on big-endian hosts is not
 * needed: semid targets little-endian machines, as the model format does). */
struct export_ctx {
	struct sid_registry *r;
	FILE *f;
	enum sid_reg_format fmt;
	int with_emb;
	struct sid_error *err;
};

static int export_fn(const struct sid_reg_entry *e, const float *emb, void *p)
{
	struct export_ctx *c = p;
	char sid[SID_REG_SID_MAX], ct[80], ut[80];
	char *b64 = NULL;
	struct sid_error verr;
	int rc = 0;

	/* a model_version import refuses (damaged by hand or an older bug) made
	 * a TSV line that import could not read back, and failed JSON as "out
	 * of memory": the entry is damaged, and the walk stops at it */
	if (sid_model_version_check(e->model_version, &verr))
		return sid_error_set(
		    c->err, SID_EDATA,
		    "registry %s: the stored entry of id \"%.*s\" cannot be "
		    "exported: its model_version is damaged (%s), and import would "
		    "refuse the line (semid registry check lists every such entry)",
		    c->r->label, utf8_cut(e->id, 64), e->id, verr.msg);
	/* (a time stored by hand out of range was written as
	 * "1970-01-01T00:00:00.-01Z", which import refused) */
	int bad_created = !time_exportable(e->created_ms);
	if (bad_created || !time_exportable(e->updated_ms))
		return sid_error_set(c->err, SID_EDATA,
				     "registry %s: the stored entry of id \"%.*s\" cannot be "
				     "exported: its %s (%lld ms) is not a time from 1970 to 9999, "
				     "and import would refuse the line (semid registry check lists "
				     "every such entry)",
				     c->r->label, utf8_cut(e->id, 64), e->id,
				     bad_created ? "created_ms" : "updated_ms",
				     (long long)(bad_created ? e->created_ms : e->updated_ms));
	sid_reg_sid_format(e->codes, e->L, e->suffix, sid, sizeof(sid));
	time_format(e->created_ms, ct);
	time_format(e->updated_ms, ut);
	for (int i = 0; c->with_emb && emb && i < e->D; i++)
		if (!isfinite(emb[i])) /* (stored by hand: import refused the line) */
			return sid_error_set(
			    c->err, SID_EDATA,
			    "registry %s: the stored embedding of id \"%.*s\" cannot "
			    "be exported: value %d is not finite (%g), and import would "
			    "refuse the line (semid registry check lists every such "
			    "entry)",
			    c->r->label, utf8_cut(e->id, 64), e->id, i, (double)emb[i]);
	if (c->with_emb && emb) {
		b64 = b64_encode(emb, sizeof(float) * e->D);
		if (!b64)
			return sid_error_set(c->err, SID_ENOMEM, "export: out of memory");
	}
	if (c->fmt == SID_REG_TSV) {
		if (fprintf(c->f, "%s\t%s\t%s\t%s\t%s\t%s\t%s\n", sid_tower_name(e->kind), e->id,
			    sid, e->model_version, ct, ut, b64 ? b64 : "") < 0)
			rc = sid_error_set(c->err, SID_EIO, "export: write failed: %s",
					   strerror(errno));
	} else {
		json_t *codes = json_array(), *o;
		char *line;
		for (int l = 0; l < e->L; l++)
			json_array_append_new(codes, json_integer(e->codes[l]));
		o = json_pack("{s:s, s:s, s:o, s:I, s:s, s:s, s:s, s:s}", "kind",
			      sid_tower_name(e->kind), "id", e->id, "codes", codes, "suffix",
			      (json_int_t)e->suffix, "sid", sid, "model_version", e->model_version,
			      "created_at", ct, "updated_at", ut);
		if (o && b64)
			json_object_set_new(o, "embedding_b64", json_string(b64));
		line = o ? json_dumps(o, JSON_COMPACT | JSON_PRESERVE_ORDER) : NULL;
		if (!line)
			rc = sid_error_set(c->err, SID_ENOMEM, "export: id %s: JSON failed", e->id);
		else if (fprintf(c->f, "%s\n", line) < 0)
			rc = sid_error_set(c->err, SID_EIO, "export: write failed: %s",
					   strerror(errno));
		free(line);
		json_decref(o);
	}
	free(b64);
	return rc;
}

int sid_registry_export(struct sid_registry *r, int kind, enum sid_reg_format fmt, int with_emb,
			FILE *f, struct sid_error *err)
{
	struct export_ctx c = {r, f, fmt, with_emb, err};
	int rc;

	if (fmt == SID_REG_TSV &&
	    fprintf(f, "kind\tid\tsid\tmodel_version\tcreated_at\tupdated_at\tembedding_b64\n") < 0)
		return sid_error_set(err, SID_EIO, "export: write failed: %s", strerror(errno));
	rc = sid_registry_foreach(r, kind, with_emb, export_fn, &c, err);
	if (!rc && fflush(f))
		rc = sid_error_set(err, SID_EIO, "export: write failed: %s", strerror(errno));
	return rc;
}

/* Fill @e (and *emb) from one TSV line (no newline) or JSON line. */
static int line_parse_fields(const char *kind, const char *id, const char *sid, const char *version,
			     const char *ct, const char *ut, const char *b64,
			     struct sid_reg_entry *e, float **emb, struct sid_error *err)
{
	int k = sid_tower_parse(kind);
	int rc;

	memset(e, 0, sizeof(*e));
	*emb = NULL;
	if (k < 0)
		return sid_error_set(err, SID_EFORMAT, "kind \"%.*s\" is not item or user",
				     utf8_cut(kind, 32), kind);
	e->kind = k;
	rc = sid_reg_id_check(id, err);
	if (!rc)
		rc = sid_reg_sid_parse(sid, e->codes, &e->L, &e->suffix, err);
	if (!rc)
		rc = version_check(version, err);
	if (rc) {
		if (err)
			err->code = SID_EFORMAT;
		return SID_EFORMAT;
	}
	strcpy(e->id, id);
	strcpy(e->model_version, version);
	if (time_parse(ct, &e->created_ms))
		return sid_error_set(err, SID_EFORMAT,
				     "created_at \"%.*s\" is not a time (want %s)",
				     utf8_cut(ct, 32), ct, TIME_EXAMPLE);
	if (time_parse(ut, &e->updated_ms))
		return sid_error_set(err, SID_EFORMAT,
				     "updated_at \"%.*s\" is not a time (want %s)",
				     utf8_cut(ut, 32), ut, TIME_EXAMPLE);
	if (b64 && *b64)
		return b64_floats(b64, strlen(b64), emb, &e->D, err);
	return 0;
}

static int line_parse_tsv(char *line, struct sid_reg_entry *e, float **emb, struct sid_error *err)
{
	char *f[8];
	int n = 0;
	char *p = line;

	for (;;) {
		if (n == 8)
			break;
		f[n++] = p;
		p = strchr(p, '\t');
		if (!p)
			break;
		*p++ = '\0';
	}
	if (n != 6 && n != 7)
		return sid_error_set(err, SID_EFORMAT,
				     "%s%d tab-separated fields, want 6 or 7 (kind id sid "
				     "model_version created_at updated_at [embedding_b64])",
				     n == 8 ? "more than " : "", n == 8 ? 7 : n);
	return line_parse_fields(f[0], f[1], f[2], f[3], f[4], f[5], n == 7 ? f[6] : NULL, e, emb,
				 err);
}

static int line_parse_json(const char *line, struct sid_reg_entry *e, float **emb,
			   struct sid_error *err)
{
	json_error_t je;
	json_t *o, *codes = NULL, *suffix = NULL;
	const char *kind, *id, *sid, *ver, *ct, *ut, *b64 = NULL;
	int rc;

	/* a JSON document, not JSON lines: said so, not "']' expected near
	 * end of file" or "Expected object, got array" */
	if (line[strspn(line, " \t")] == '[')
		return sid_error_set(err, SID_EFORMAT,
				     "a JSON array; import reads JSON lines, one object per line, "
				     "as export writes them");
	if (!(o = json_loads(line, JSON_REJECT_DUPLICATES, &je))) {
		if (je.position >= (int)strlen(line))
			return sid_error_set(err, SID_EFORMAT,
					     "JSON: %s (column %d): the line ends inside its "
					     "object; import reads JSON lines, one whole object "
					     "per line",
					     je.text, je.column);
		return sid_error_set(err, SID_EFORMAT, "JSON: %s (column %d)", je.text, je.column);
	}
	if (json_unpack_ex(o, &je, 0, "{s:s, s:s, s:s, s:s, s:s, s:s, s?s, s?o, s?o !}", "kind",
			   &kind, "id", &id, "sid", &sid, "model_version", &ver, "created_at", &ct,
			   "updated_at", &ut, "embedding_b64", &b64, "codes", &codes, "suffix",
			   &suffix)) {
		rc = sid_error_set(err, SID_EFORMAT, "JSON: %s", je.text);
		goto fail;
	}
	rc = line_parse_fields(kind, id, sid, ver, ct, ut, b64, e, emb, err);
	if (rc)
		goto fail;
	if (codes) {
		int ok = json_is_array(codes) && (int)json_array_size(codes) == e->L;
		for (int l = 0; ok && l < e->L; l++)
			ok = json_integer_value(json_array_get(codes, l)) == e->codes[l] &&
			     json_is_integer(json_array_get(codes, l));
		if (!ok) {
			rc = sid_error_set(err, SID_EFORMAT, "\"codes\" disagree with sid %s", sid);
			goto fail;
		}
	}
	/* (checked when present: -1 is a value like any other, not "absent") */
	if (suffix && (!json_is_integer(suffix) || json_integer_value(suffix) != e->suffix))
		rc = sid_error_set(err, SID_EFORMAT, "\"suffix\" disagrees with sid %s", sid);
fail:
	json_decref(o);
	if (rc) {
		free(*emb);
		*emb = NULL;
	}
	return rc;
}

struct import_batch {
	struct sid_reg_entry *e, *existing;
	float **emb;
	int *status;
	long *line;
	size_t n;
};

static int import_flush(struct sid_registry *r, struct import_batch *b, sid_reg_conflict_fn fn,
			void *ctx, struct sid_reg_import_result *res, struct sid_error *err)
{
	int rc = 0;

	if (b->n) {
		call_begin(r);
		rc = r->ops->import(r, b->e, (const float *const *)b->emb, b->n, b->status,
				    b->existing, err);
		call_end(r);
	}
	for (size_t i = 0; !rc && i < b->n; i++) {
		char msg[1024], s1[SID_REG_SID_MAX], s2[SID_REG_SID_MAX];
		const struct sid_reg_entry *e = &b->e[i], *x = &b->existing[i];
		const char *kn = sid_tower_name(e->kind);
		sid_reg_sid_format(e->codes, e->L, e->suffix, s1, sizeof(s1));
		sid_reg_sid_format(x->codes, x->L, x->suffix, s2, sizeof(s2));
		switch (b->status[i]) {
		case SID__REG_IMPORT_ADDED:
			res->added++;
			res->added_bare += !b->emb[i];
			continue;
		case SID__REG_IMPORT_SAME:
			res->same++;
			continue;
		case SID__REG_IMPORT_CONFLICT_ID:
			snprintf(msg, sizeof(msg), "%s id \"%s\": stored as %s, the file says %s",
				 kn, e->id, s2, s1);
			break;
		case SID__REG_IMPORT_CONFLICT_SID:
			snprintf(msg, sizeof(msg), "%s sid %s of id \"%s\" is held by id \"%s\"",
				 kn, s1, e->id, x->id);
			break;
		default:
			snprintf(msg, sizeof(msg),
				 "%s id \"%s\": sid %s has %d levels, the stored %s IDs have %d",
				 kn, e->id, s1, e->L, kn, x->L);
		}
		res->conflicts++;
		if (fn)
			fn(b->line[i], msg, ctx);
	}
	for (size_t i = 0; i < b->n; i++)
		free(b->emb[i]);
	b->n = 0;
	return rc;
}

int sid_registry_import(struct sid_registry *r, enum sid_reg_format fmt, FILE *f,
			sid_reg_conflict_fn on_conflict, void *ctx,
			struct sid_reg_import_result *res, struct sid_error *err)
{
	return sid_registry_import_until(r, fmt, f, on_conflict, ctx, NULL, NULL, res, err);
}

int sid_registry_import_until(struct sid_registry *r, enum sid_reg_format fmt, FILE *f,
			      sid_reg_conflict_fn on_conflict, void *ctx, sid_reg_stop_fn stop,
			      void *stop_ctx, struct sid_reg_import_result *res,
			      struct sid_error *err)
{
	struct import_batch b;
	char *line = NULL;
	const char *kind;
	size_t cap = 0;
	ssize_t len;
	long lineno = 0;
	int rc = 0;

	memset(res, 0, sizeof(*res));
	memset(&b, 0, sizeof(b));
	if ((rc = writable(r, err)))
		return rc;
	b.e = calloc(IMPORT_BATCH, sizeof(*b.e));
	b.existing = calloc(IMPORT_BATCH, sizeof(*b.existing));
	b.emb = calloc(IMPORT_BATCH, sizeof(*b.emb));
	b.status = calloc(IMPORT_BATCH, sizeof(*b.status));
	b.line = calloc(IMPORT_BATCH, sizeof(*b.line));
	if (!b.e || !b.existing || !b.emb || !b.status || !b.line) {
		rc = sid_error_set(err, SID_ENOMEM, "import: out of memory");
		goto fail;
	}
	for (;;) {
		len = sid_line_read(f, &line, &cap, LINE_MAX_BYTES);
		if (stop && (rc = stop(stop_ctx))) { /* that line not taken */
			int frc = import_flush(r, &b, on_conflict, ctx, res, err);
			res->lines = lineno;
			rc = frc ? frc : rc;
			goto fail;
		}
		if (len == -1)
			break;
		if (++lineno == 1 && len > 0)
			len = sid_line_drop_bom(line, len);
		if (len == -3) {
			rc = sid_error_set(err, SID_ENOMEM, "import: out of memory at line %ld",
					   lineno);
			goto fail;
		}
		if (len == -2) {
			rc = sid_error_set_at(err, SID_EFORMAT, lineno,
					      "line %ld: longer than %u bytes", lineno,
					      LINE_MAX_BYTES);
			goto fail;
		}
		while (len && (line[len - 1] == '\n' || line[len - 1] == '\r'))
			line[--len] = '\0';
		/* the header, wherever it is: exports of both kinds may be
		 * concatenated (no data line starts with "kind") */
		if (len == 0 || (fmt == SID_REG_TSV && !strncmp(line, "kind\t", 5)))
			continue;
		/* a backup, a compressed export: said so, not "NUL byte" or
		 * "1 tab-separated fields" */
		if (lineno == 1 && (kind = sid_file_kind(line, (size_t)len))) {
			rc = sid_error_set_at(err, SID_EFORMAT, lineno,
					      "line 1: not an export (TSV or JSON lines): it looks "
					      "like %s",
					      kind);
			goto fail;
		}
		if ((size_t)len != strlen(line)) {
			rc = sid_error_set_at(err, SID_EFORMAT, lineno, "line %ld: NUL byte",
					      lineno);
			goto fail;
		}
		rc = fmt == SID_REG_TSV ? line_parse_tsv(line, &b.e[b.n], &b.emb[b.n], err)
					: line_parse_json(line, &b.e[b.n], &b.emb[b.n], err);
		if (rc) {
			if (err)
				err->index = lineno;
			sid_error_prefix(err, "line %ld", lineno);
			goto fail;
		}
		b.line[b.n++] = lineno;
		if (b.n == IMPORT_BATCH && (rc = import_flush(r, &b, on_conflict, ctx, res, err)))
			goto fail;
	}
	if (ferror(f)) {
		rc = sid_error_set(err, SID_EIO, "import: read failed: %s", strerror(errno));
		goto fail;
	}
	rc = import_flush(r, &b, on_conflict, ctx, res, err);
	res->lines = lineno;
fail:
	for (size_t i = 0; b.emb && i < b.n; i++)
		free(b.emb[i]);
	free(b.e);
	free(b.existing);
	free(b.emb);
	free(b.status);
	free(b.line);
	free(line);
	return rc;
}
