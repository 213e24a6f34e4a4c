/*
 * metrics.c - counters, histograms and the code-entropy windows behind
 * GET /metrics, and their Prometheus text rendering.  See metrics.h.
 */
#include "metrics.h"
#include "fsutil.h"
#include "log.h"

#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/statvfs.h>
#include <time.h>

static const char *const route_names[SRV_ROUTE_COUNT] = {
    "/v1/items:encode", "/v1/users:encode", "/healthz",		"/readyz",
    "/v1/model",	"/v1/admin/reload", "/metrics",		"/v1/items:assign",
    "/v1/users:assign", "/v1/items/{id}",   "/v1/users/{id}",	"/v1/sids/{sid}",
    "/v1/sids",		"/v1/items:delete", "/v1/users:delete", "other"};

/* Seconds: sub-millisecond resolution where the service lives. */
static const double duration_le[] = {0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025,
				     0.005,   0.01,   0.025,   0.05,   0.1,   0.25,
				     0.5,     1,      2.5,     5,      10};
/* Rows: every power of two up to 65536, the largest max_batch (config.c). */
static const double batch_le[] = {1,   2,    4,	   8,	 16,   32,    64,    128,  256,
				  512, 1024, 2048, 4096, 8192, 16384, 32768, 65536};

const char *srv_route_name(enum srv_route r)
{
	return (unsigned)r < SRV_ROUTE_COUNT ? route_names[r] : "other";
}

void srv_hist_init(struct srv_hist *h, const double *le, int n)
{
	memset(h, 0, sizeof(*h));
	if (n > SRV_HIST_MAX - 1)
		n = SRV_HIST_MAX - 1;
	h->n = n;
	memcpy(h->le, le, (size_t)n * sizeof(*le));
}

void srv_hist_observe(struct srv_hist *h, double v)
{
	int i = 0;
	while (i < h->n && v > h->le[i])
		i++;
	h->count[i]++;
	h->total++;
	h->sum += v;
}

/* @v in the fewest significant digits that read back as @v, as the
 * Prometheus client libraries write a float: a histogram's _sum is a
 * counter, and one of whole rows (semid_batch_size_sum) written with 9
 * digits stopped being exact past 10^9 rows (hours at 100k rows/s), so
 * that its rate went in steps of 10, then 100 rows. */
static void fmt_exact(char *out, size_t n, double v)
{
	for (int prec = 1; prec < 17; prec++) {
		snprintf(out, n, "%.*g", prec, v);
		if (strtod(out, NULL) == v)
			return;
	}
	snprintf(out, n, "%.17g", v);
}

int srv_hist_render(const struct srv_hist *h, const char *name, const char *labels,
		    struct srv_buf *out)
{
	const char *sep = labels[0] ? "," : "";
	uint64_t cum = 0;
	char sum[40];

	for (int i = 0; i < h->n; i++) {
		cum += h->count[i];
		srv_buf_printf(out, "%s_bucket{%s%sle=\"%.6g\"} %llu\n", name, labels, sep,
			       h->le[i], (unsigned long long)cum);
	}
	srv_buf_printf(out, "%s_bucket{%s%sle=\"+Inf\"} %llu\n", name, labels, sep,
		       (unsigned long long)h->total);
	fmt_exact(sum, sizeof(sum), h->sum);
	if (labels[0]) {
		srv_buf_printf(out, "%s_sum{%s} %s\n", name, labels, sum);
		srv_buf_printf(out, "%s_count{%s} %llu\n", name, labels,
			       (unsigned long long)h->total);
	} else {
		srv_buf_printf(out, "%s_sum %s\n", name, sum);
		srv_buf_printf(out, "%s_count %llu\n", name, (unsigned long long)h->total);
	}
	return out->oom ? -1 : 0;
}

int srv_entropy_init(struct srv_entropy *e, size_t window)
{
	memset(e, 0, sizeof(*e));
	e->window = window ? window : 1;
	return 0;
}

void srv_entropy_release(struct srv_entropy *e)
{
	free(e->codes);
	for (int l = 0; l < SID_MAX_LEVELS; l++)
		free(e->count[l]);
	memset(e, 0, sizeof(*e));
}

/* Empty the window (keeping its allocations). */
static void entropy_clear(struct srv_entropy *e)
{
	for (int l = 0; l < SID_MAX_LEVELS; l++)
		if (e->count[l])
			memset(e->count[l], 0, e->ncount[l] * sizeof(*e->count[l]));
	e->next = e->filled = 0;
}

/* Count one more row with code @c at level @l; -1 when out of memory. */
static int entropy_count(struct srv_entropy *e, int l, int32_t c)
{
	if (c < 0 || c >= SID_MAX_CODEBOOK)
		return 0; /* not a code: left out, here and when it leaves */
	if ((size_t)c >= e->ncount[l]) {
		size_t n = (size_t)c + 1 > 2 * e->ncount[l] ? (size_t)c + 1 : 2 * e->ncount[l];
		uint32_t *p = realloc(e->count[l], n * sizeof(*p));
		if (!p)
			return -1;
		memset(p + e->ncount[l], 0, (n - e->ncount[l]) * sizeof(*p));
		e->count[l] = p;
		e->ncount[l] = n;
	}
	e->count[l][c]++;
	return 0;
}

void srv_entropy_add(struct srv_entropy *e, const int32_t *codes, size_t B, int L)
{
	if (!B || L <= 0 || L > SID_MAX_LEVELS)
		return; /* no rows: nothing changes, not even L */
	if (L != e->L || !e->codes) {
		int32_t *c = realloc(e->codes, e->window * (size_t)L * sizeof(*c));
		if (!c)
			return; /* metrics are best effort */
		e->codes = c;
		e->L = L;
		entropy_clear(e);
	}
	/* Only the last @window rows of a huge batch can stay. */
	if (B > e->window) {
		codes += (B - e->window) * (size_t)L;
		B = e->window;
	}
	for (size_t i = 0; i < B; i++) {
		int32_t *slot = e->codes + e->next * (size_t)L;
		for (int l = 0; l < L; l++) {
			if (e->filled == e->window && slot[l] >= 0 && slot[l] < SID_MAX_CODEBOOK)
				e->count[l][slot[l]]--; /* the row it replaces leaves */
			slot[l] = codes[i * (size_t)L + (size_t)l];
			if (entropy_count(e, l, slot[l])) {
				entropy_clear(e); /* out of memory: start over */
				return;
			}
		}
		e->next = (e->next + 1) % e->window;
		if (e->filled < e->window)
			e->filled++;
	}
}

double srv_entropy_bits(const struct srv_entropy *e, int l)
{
	double h = 0, n = 0;

	if (!e->filled || l < 0 || l >= e->L)
		return 0;
	for (size_t c = 0; c < e->ncount[l]; c++)
		n += e->count[l][c];
	for (size_t c = 0; c < e->ncount[l]; c++) {
		if (!e->count[l][c])
			continue;
		double p = e->count[l][c] / n;
		h -= p * log2(p);
	}
	return h > 0 ? h : 0; /* no -0 */
}

int srv_metrics_init(struct srv_metrics *m, size_t entropy_window)
{
	memset(m, 0, sizeof(*m));
	if (pthread_mutex_init(&m->mu, NULL))
		return -1;
	for (int r = 0; r < SRV_ROUTE_COUNT; r++)
		srv_hist_init(&m->duration[r], duration_le,
			      (int)(sizeof(duration_le) / sizeof(double)));
	srv_hist_init(&m->queue_wait, duration_le, (int)(sizeof(duration_le) / sizeof(double)));
	srv_hist_init(&m->batch_size, batch_le, (int)(sizeof(batch_le) / sizeof(double)));
	for (int t = 0; t < SID_TOWER_COUNT; t++)
		srv_entropy_init(&m->entropy[t], entropy_window);
	for (int o = 0; o < SRV_REG_OPS; o++)
		srv_hist_init(&m->reg_duration[o], duration_le,
			      (int)(sizeof(duration_le) / sizeof(double)));
	m->reg_up[SRV_REG_OP_ASSIGN] = m->reg_up[SRV_REG_OP_LOOKUP] = -1;
	m->reg_hold_s = 60;
	m->last_reload_ok = -1;
	srv_proc_init(&m->proc, NULL);
	return 0;
}

void srv_metrics_release(struct srv_metrics *m)
{
	for (int t = 0; t < SID_TOWER_COUNT; t++)
		srv_entropy_release(&m->entropy[t]);
	pthread_mutex_destroy(&m->mu);
}

void srv_metrics_request(struct srv_metrics *m, enum srv_route r, int status, double seconds)
{
	if ((unsigned)r >= SRV_ROUTE_COUNT)
		r = SRV_ROUTE_OTHER;
	if (status < 0 || status >= 600)
		status = 0;
	pthread_mutex_lock(&m->mu);
	m->requests[r][status]++;
	srv_hist_observe(&m->duration[r], seconds);
	pthread_mutex_unlock(&m->mu);
}

void srv_metrics_batch(struct srv_metrics *m, enum sid_tower_kind t, size_t B, const char *model,
		       const int32_t *codes, size_t coded, int L, const double *waits,
		       size_t n_jobs)
{
	struct srv_entropy *e;

	if ((unsigned)t >= SID_TOWER_COUNT)
		return;
	pthread_mutex_lock(&m->mu);
	if (B) /* 0: the batch failed before encoding; its jobs still waited */
		srv_hist_observe(&m->batch_size, (double)B);
	for (size_t i = 0; i < n_jobs; i++)
		srv_hist_observe(&m->queue_wait, waits[i]);
	m->encoded[t] += coded;
	e = &m->entropy[t];
	if (coded && strcmp(e->model, model) != 0) {
		if (m->served[0] && strcmp(model, m->served) != 0) {
			coded = 0; /* the model replaced, finishing its last batches */
		} else {
			entropy_clear(e); /* the model served: its codes from now on */
			snprintf(e->model, sizeof(e->model), "%s", model);
		}
	}
	srv_entropy_add(e, codes, coded, L);
	pthread_mutex_unlock(&m->mu);
}

void srv_metrics_reload(struct srv_metrics *m, const char *model)
{
	pthread_mutex_lock(&m->mu);
	if (model) {
		m->reloads_ok++;
		snprintf(m->served, sizeof(m->served), "%s", model);
	} else {
		m->reloads_err++;
	}
	m->last_reload_ok = model != NULL;
	pthread_mutex_unlock(&m->mu);
}

void srv_metrics_watch_check(struct srv_metrics *m)
{
	__atomic_add_fetch(&m->watch_checks, 1, __ATOMIC_RELAXED);
}

void srv_metrics_queue_rows(struct srv_metrics *m, long rows)
{
	pthread_mutex_lock(&m->mu);
	m->queue_rows = rows;
	pthread_mutex_unlock(&m->mu);
}

static double mono_now(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

/* A call of kind @op went through (@ok) or found the store unavailable. */
static void reg_note(struct srv_metrics *m, enum srv_reg_op op, int ok)
{
	double now = mono_now();

	m->reg_up[op] = ok;
	if (!ok) {
		m->reg_down_at[op] = now;
		return;
	}
	for (int o = 0; o < SRV_REG_OPS; o++)
		if (!m->reg_up[o] && now - m->reg_down_at[o] >= m->reg_hold_s)
			m->reg_up[o] = 1; /* not failed for a while: the store is back */
}

void srv_metrics_registry_call(struct srv_metrics *m, enum srv_reg_op op, double seconds, int ok)
{
	pthread_mutex_lock(&m->mu);
	srv_hist_observe(&m->reg_duration[op], seconds > 0 ? seconds : 0);
	if (!ok)
		m->reg_errors[op]++;
	reg_note(m, op, ok);
	pthread_mutex_unlock(&m->mu);
}

void srv_metrics_registry_call_read(struct srv_metrics *m, enum srv_reg_op op, double seconds)
{
	pthread_mutex_lock(&m->mu);
	if (seconds > 0)
		srv_hist_observe(&m->reg_duration[op], seconds);
	reg_note(m, SRV_REG_OP_LOOKUP, 1);
	pthread_mutex_unlock(&m->mu);
}

void srv_metrics_registry_refused(struct srv_metrics *m, enum srv_reg_op op)
{
	pthread_mutex_lock(&m->mu);
	reg_note(m, op, 0);
	pthread_mutex_unlock(&m->mu);
}

void srv_metrics_registry_probe(struct srv_metrics *m, int ok)
{
	pthread_mutex_lock(&m->mu);
	m->reg_probes[ok != 0]++;
	reg_note(m, SRV_REG_OP_LOOKUP, ok);
	pthread_mutex_unlock(&m->mu);
}

void srv_metrics_registry_error(struct srv_metrics *m, enum srv_reg_op op)
{
	pthread_mutex_lock(&m->mu);
	m->reg_errors[op]++;
	pthread_mutex_unlock(&m->mu);
}

void srv_metrics_registry_assigned(struct srv_metrics *m, enum sid_tower_kind t, uint64_t created,
				   uint64_t known)
{
	pthread_mutex_lock(&m->mu);
	m->reg_assigned[t][1] += created;
	m->reg_assigned[t][0] += known;
	pthread_mutex_unlock(&m->mu);
}

void srv_metrics_registry_deleted(struct srv_metrics *m, enum sid_tower_kind t, uint64_t n)
{
	pthread_mutex_lock(&m->mu);
	m->reg_deleted[t] += n;
	pthread_mutex_unlock(&m->mu);
}

void srv_metrics_registry_events(struct srv_metrics *m, const struct sid_reg_events *ev)
{
	pthread_mutex_lock(&m->mu);
	m->reg_events.retries += ev->retries;
	m->reg_events.global_locks += ev->global_locks;
	m->reg_events.lock_table_full += ev->lock_table_full;
	m->reg_events.busy_timeouts += ev->busy_timeouts;
	m->reg_events.rebuild_timeouts += ev->rebuild_timeouts;
	m->reg_events.statement_timeouts += ev->statement_timeouts;
	m->reg_events.answer_timeouts += ev->answer_timeouts;
	pthread_mutex_unlock(&m->mu);
}

void srv_metrics_registry_levels(struct srv_metrics *m, enum sid_tower_kind kind, int L)
{
	if ((unsigned)kind >= SID_TOWER_COUNT)
		return;
	pthread_mutex_lock(&m->mu);
	m->reg_levels[kind] = L;
	pthread_mutex_unlock(&m->mu);
}

void srv_metrics_registry_up(struct srv_metrics *m, int up)
{
	pthread_mutex_lock(&m->mu);
	for (int o = 0; o < SRV_REG_OPS; o++) {
		m->reg_up[o] = up;
		m->reg_down_at[o] = mono_now();
	}
	pthread_mutex_unlock(&m->mu);
}

/* semid_registry_up's value (m->mu held): both kinds up, or -1 disabled. */
static int reg_up_now(const struct srv_metrics *m)
{
	if (m->reg_up[SRV_REG_OP_ASSIGN] < 0)
		return -1;
	return m->reg_up[SRV_REG_OP_ASSIGN] && m->reg_up[SRV_REG_OP_LOOKUP];
}

int srv_metrics_registry_is_up(struct srv_metrics *m)
{
	int up;

	pthread_mutex_lock(&m->mu);
	up = reg_up_now(m);
	pthread_mutex_unlock(&m->mu);
	return up;
}

void srv_metrics_connections_closed(struct srv_metrics *m, enum srv_conn_close why, uint64_t n)
{
	pthread_mutex_lock(&m->mu);
	m->conn_closed[why] += n;
	pthread_mutex_unlock(&m->mu);
}

void srv_metrics_connections_open(struct srv_metrics *m, long n, size_t body_bytes)
{
	pthread_mutex_lock(&m->mu);
	m->conns_open = n;
	m->body_bytes = body_bytes;
	pthread_mutex_unlock(&m->mu);
}

void srv_metrics_limits(struct srv_metrics *m, long queue_rows, long connections, size_t body_bytes)
{
	pthread_mutex_lock(&m->mu);
	m->queue_rows_limit = queue_rows;
	m->conns_limit = connections;
	m->body_limit = body_bytes;
	pthread_mutex_unlock(&m->mu);
}

/* Prometheus label values escape \ " and newline. */
static void label_value(struct srv_buf *b, const char *s)
{
	for (; *s; s++) {
		if (*s == '\\' || *s == '"')
			srv_buf_printf(b, "\\%c", *s);
		else if (*s == '\n')
			srv_buf_puts(b, "\\n");
		else
			srv_buf_append(b, s, 1);
	}
}

void srv_metrics_registry_fs(struct srv_metrics *m, const char *path)
{
	if (sid_path_dir(path, m->reg_dir) < 0)
		m->reg_dir[0] = '\0'; /* (no path that long opens) */
}

/* The registry's file system, read now: no sample when statvfs fails (a
 * directory removed, a hung mount's error), logged once for the process's
 * life rather than at every scrape. */
static void render_registry_fs(struct srv_metrics *m, struct srv_buf *b)
{
	struct statvfs v;
	int ok;

	if (!m->reg_dir[0])
		return;
	ok = statvfs(m->reg_dir, &v) == 0;
	if (!ok && !__atomic_exchange_n(&m->reg_dir_logged, 1, __ATOMIC_RELAXED)) {
		int e = errno;
		srv_log(SRV_LOG_WARN, "metrics",
			"cannot read the free space of the registry's directory %s: %s (no "
			"semid_registry_filesystem_* sample while this lasts; not logged again)",
			m->reg_dir, strerror(e));
	}
	const struct {
		const char *name, *help;
		unsigned long long value;
	} g[] = {{"avail",
		  "Bytes free to the server on the file system of the SQLite registry's "
		  "directory.",
		  ok ? (unsigned long long)v.f_bavail * v.f_frsize : 0},
		 {"size", "Size of that file system in bytes.",
		  ok ? (unsigned long long)v.f_blocks * v.f_frsize : 0}};
	for (size_t i = 0; i < sizeof(g) / sizeof(g[0]); i++) {
		srv_buf_printf(b,
			       "# HELP semid_registry_filesystem_%s_bytes %s\n"
			       "# TYPE semid_registry_filesystem_%s_bytes gauge\n",
			       g[i].name, g[i].help, g[i].name);
		if (ok)
			srv_buf_printf(b, "semid_registry_filesystem_%s_bytes %llu\n", g[i].name,
				       g[i].value);
	}
}

char *srv_metrics_render(struct srv_metrics *m, const struct sid_model *model)
{
	struct srv_buf b = SRV_BUF_INIT;
	char labels[128];
	int r, s, t;

	pthread_mutex_lock(&m->mu);
	srv_buf_puts(&b, "# HELP semid_requests_total HTTP requests, by route and status code "
			 "(499: the client closed the connection before the answer).\n# TYPE "
			 "semid_requests_total counter\n");
	for (r = 0; r < SRV_ROUTE_COUNT; r++)
		for (s = 0; s < 600; s++)
			if (m->requests[r][s])
				srv_buf_printf(
				    &b, "semid_requests_total{route=\"%s\",code=\"%d\"} %llu\n",
				    route_names[r], s, (unsigned long long)m->requests[r][s]);
	srv_buf_puts(&b, "# HELP semid_request_duration_seconds Time from request headers to "
			 "the response sent.\n# TYPE semid_request_duration_seconds histogram\n");
	for (r = 0; r < SRV_ROUTE_COUNT; r++) {
		if (!m->duration[r].total)
			continue;
		snprintf(labels, sizeof(labels), "route=\"%s\"", route_names[r]);
		srv_hist_render(&m->duration[r], "semid_request_duration_seconds", labels, &b);
	}
	srv_buf_puts(&b, "# HELP semid_queue_wait_seconds Time a request waited from admission "
			 "to the start of its encode batch.\n"
			 "# TYPE semid_queue_wait_seconds histogram\n");
	srv_hist_render(&m->queue_wait, "semid_queue_wait_seconds", "", &b);
	srv_buf_puts(&b, "# HELP semid_batch_size Rows per encode batch.\n"
			 "# TYPE semid_batch_size histogram\n");
	srv_hist_render(&m->batch_size, "semid_batch_size", "", &b);
	srv_buf_puts(&b,
		     "# HELP semid_encoded_total Rows encoded, by tower (the work done, a request "
		     "whose client left before its answer, a 499, included).\n"
		     "# TYPE semid_encoded_total counter\n");
	for (t = 0; t < SID_TOWER_COUNT; t++)
		srv_buf_printf(&b, "semid_encoded_total{tower=\"%s\"} %llu\n",
			       sid_tower_name((enum sid_tower_kind)t),
			       (unsigned long long)m->encoded[t]);
	srv_buf_printf(&b,
		       "# HELP semid_model_reloads_total Model reload attempts, by result.\n"
		       "# TYPE semid_model_reloads_total counter\n"
		       "semid_model_reloads_total{result=\"success\"} %llu\n"
		       "semid_model_reloads_total{result=\"error\"} %llu\n",
		       (unsigned long long)m->reloads_ok, (unsigned long long)m->reloads_err);
	/* The counter's rise ends once the refused file is not tried again (the
	 * watcher tries a file once), so an alert on it ends while that file
	 * still waits at the model path, unserved: this says so until a reload
	 * succeeds. */
	srv_buf_puts(&b, "# HELP semid_model_last_reload_successful 1 when the last model reload "
			 "attempt loaded its file, 0 when it failed (the previous model, if any, "
			 "still serves).\n"
			 "# TYPE semid_model_last_reload_successful gauge\n");
	if (m->last_reload_ok >= 0)
		srv_buf_printf(&b, "semid_model_last_reload_successful %d\n", m->last_reload_ok);
	srv_buf_printf(&b,
		       "# HELP semid_model_watch_checks_total Looks at the model path by the "
		       "watcher (a stat each).\n"
		       "# TYPE semid_model_watch_checks_total counter\n"
		       "semid_model_watch_checks_total %llu\n",
		       (unsigned long long)__atomic_load_n(&m->watch_checks, __ATOMIC_RELAXED));
	srv_buf_printf(&b,
		       "# HELP semid_log_lines_dropped_total Log lines dropped because the log's "
		       "reader was not reading or the write failed (a full disk).\n"
		       "# TYPE semid_log_lines_dropped_total counter\n"
		       "semid_log_lines_dropped_total %lu\n",
		       srv_log_dropped_total());
	srv_buf_printf(&b,
		       "# HELP semid_queue_rows Rows admitted and not yet encoded (queue_rows "
		       "bounds it).\n"
		       "# TYPE semid_queue_rows gauge\nsemid_queue_rows %ld\n",
		       m->queue_rows);
	if (m->queue_rows_limit > 0)
		srv_buf_printf(&b,
			       "# HELP semid_queue_rows_limit Rows that may be admitted at once "
			       "(queue_rows); over it requests get 503.\n"
			       "# TYPE semid_queue_rows_limit gauge\nsemid_queue_rows_limit %ld\n",
			       m->queue_rows_limit);
	/* bits of information, not of data: promtool's lint asking for bytes
	 * is wrong here (proto/api.md, Metrics) */
	srv_buf_puts(&b, "# HELP semid_code_entropy_bits Shannon entropy in bits (base-2 "
			 "logarithms) of each level's codes over the tower's last "
			 "entropy_window rows encoded by the model served: log2(K) when its "
			 "K codes are used evenly, 0 when one code takes every row.\n"
			 "# TYPE semid_code_entropy_bits gauge\n");
	for (t = 0; t < SID_TOWER_COUNT; t++) {
		const struct srv_entropy *e = &m->entropy[t];
		if (m->served[0] && strcmp(e->model, m->served) != 0)
			continue; /* codes of a model no longer served, or none */
		for (int l = 0; l < e->L && e->filled; l++)
			srv_buf_printf(
			    &b, "semid_code_entropy_bits{tower=\"%s\",level=\"%d\"} %.6f\n",
			    sid_tower_name((enum sid_tower_kind)t), l, srv_entropy_bits(e, l));
	}
	srv_buf_puts(&b, "# HELP semid_registry_assignments_total Ids answered by assign, by tower "
			 "and whether the call stored them.\n"
			 "# TYPE semid_registry_assignments_total counter\n");
	for (t = 0; t < SID_TOWER_COUNT; t++)
		for (int c = 1; c >= 0; c--)
			srv_buf_printf(
			    &b,
			    "semid_registry_assignments_total{tower=\"%s\",created=\"%s\"} "
			    "%llu\n",
			    sid_tower_name((enum sid_tower_kind)t), c ? "true" : "false",
			    (unsigned long long)m->reg_assigned[t][c]);
	srv_buf_puts(&b,
		     "# HELP semid_registry_deletions_total Ids removed by the delete routes, by "
		     "tower.\n"
		     "# TYPE semid_registry_deletions_total counter\n");
	for (t = 0; t < SID_TOWER_COUNT; t++)
		srv_buf_printf(&b, "semid_registry_deletions_total{tower=\"%s\"} %llu\n",
			       sid_tower_name((enum sid_tower_kind)t),
			       (unsigned long long)m->reg_deleted[t]);
	srv_buf_printf(&b,
		       "# HELP semid_registry_errors_total Registry store calls that failed: the "
		       "store unavailable, or a stored entry that cannot be read.  Misses (404) "
		       "and refused requests (400, 409) are not counted.\n"
		       "# TYPE semid_registry_errors_total counter\n"
		       "semid_registry_errors_total{op=\"assign\"} %llu\n"
		       "semid_registry_errors_total{op=\"lookup\"} %llu\n",
		       (unsigned long long)m->reg_errors[SRV_REG_OP_ASSIGN],
		       (unsigned long long)m->reg_errors[SRV_REG_OP_LOOKUP]);
	srv_buf_puts(&b, "# HELP semid_registry_duration_seconds One registry store call (an "
			 "assign group's commit, or a lookup).\n"
			 "# TYPE semid_registry_duration_seconds histogram\n");
	srv_hist_render(&m->reg_duration[SRV_REG_OP_ASSIGN], "semid_registry_duration_seconds",
			"op=\"assign\"", &b);
	srv_hist_render(&m->reg_duration[SRV_REG_OP_LOOKUP], "semid_registry_duration_seconds",
			"op=\"lookup\"", &b);
	srv_buf_printf(&b,
		       "# HELP semid_connections_open TCP connections the server holds.\n"
		       "# TYPE semid_connections_open gauge\nsemid_connections_open %ld\n",
		       m->conns_open);
	if (m->conns_limit > 0)
		srv_buf_printf(
		    &b,
		    "# HELP semid_connections_limit Connections served at once "
		    "(connection_limit, as lowered at start to fit the open-files "
		    "limit); over it a connection gets 503.\n"
		    "# TYPE semid_connections_limit gauge\nsemid_connections_limit %ld\n",
		    m->conns_limit);
	srv_buf_printf(
	    &b,
	    "# HELP semid_request_body_bytes Bytes of request bodies held while they are "
	    "read or decoded, of decoded requests until they are answered, and of encode, "
	    "assign and lookup answers until they are sent (body_memory_bytes bounds it).\n"
	    "# TYPE semid_request_body_bytes gauge\nsemid_request_body_bytes %zu\n",
	    m->body_bytes);
	if (m->body_limit > 0)
		srv_buf_printf(&b,
			       "# HELP semid_request_body_limit_bytes The bound on "
			       "semid_request_body_bytes (body_memory_bytes): a body, decoded "
			       "request or answer that would pass it is answered 503.\n"
			       "# TYPE semid_request_body_limit_bytes gauge\n"
			       "semid_request_body_limit_bytes %zu\n",
			       m->body_limit);
	srv_buf_printf(
	    &b,
	    "# HELP semid_connections_closed_total Connections the server closed itself: "
	    "the request took longer than connection_timeout_s to arrive (deadline), "
	    "503 over connection_limit (limit), the answer was not taken in full "
	    "connection_timeout_s after it was queued (send_deadline), or no request began "
	    "in connection_timeout_s (idle).\n"
	    "# TYPE semid_connections_closed_total counter\n"
	    "semid_connections_closed_total{reason=\"deadline\"} %llu\n"
	    "semid_connections_closed_total{reason=\"limit\"} %llu\n"
	    "semid_connections_closed_total{reason=\"send_deadline\"} %llu\n"
	    "semid_connections_closed_total{reason=\"idle\"} %llu\n",
	    (unsigned long long)m->conn_closed[SRV_CONN_DEADLINE],
	    (unsigned long long)m->conn_closed[SRV_CONN_LIMIT],
	    (unsigned long long)m->conn_closed[SRV_CONN_SEND_DEADLINE],
	    (unsigned long long)m->conn_closed[SRV_CONN_IDLE]);
	if (reg_up_now(m) >= 0)
		srv_buf_printf(
		    &b,
		    "# HELP semid_registry_up 0 from a store call that found the ID "
		    "registry unavailable until a call of the same kind (assign or "
		    "lookup) goes through, else 1.\n"
		    "# TYPE semid_registry_up gauge\nsemid_registry_up %d\n"
		    "# HELP semid_registry_retries_total Store transactions run again "
		    "after losing a race to another writer (PostgreSQL).\n"
		    "# TYPE semid_registry_retries_total counter\n"
		    "semid_registry_retries_total %llu\n"
		    "# HELP semid_registry_global_lock_total PostgreSQL transactions that "
		    "ran alone under the store's global lock: too many keys to lock one "
		    "by one (size), or the lock table was full (lock_table_full: raise "
		    "max_locks_per_transaction).\n"
		    "# TYPE semid_registry_global_lock_total counter\n"
		    "semid_registry_global_lock_total{reason=\"size\"} %llu\n"
		    "semid_registry_global_lock_total{reason=\"lock_table_full\"} %llu\n"
		    "# HELP semid_registry_timeouts_total Store calls whose wait ran "
		    "out (registry_timeout_ms): busy (SQLite: another writer held the "
		    "lock), index_rebuild (SQLite: to a reader that may not write the "
		    "-shm, no writer rebuilt the WAL index there), statement_timeout "
		    "(PostgreSQL cancelled the statement), "
		    "no_answer (PostgreSQL did not answer; the connection was dropped).\n"
		    "# TYPE semid_registry_timeouts_total counter\n"
		    "semid_registry_timeouts_total{reason=\"busy\"} %llu\n"
		    "semid_registry_timeouts_total{reason=\"index_rebuild\"} %llu\n"
		    "semid_registry_timeouts_total{reason=\"statement_timeout\"} %llu\n"
		    "semid_registry_timeouts_total{reason=\"no_answer\"} %llu\n"
		    "# HELP semid_registry_probes_total Reads of the store after "
		    "registry_probe_s without a call, so that an outage shows while no "
		    "request comes.\n"
		    "# TYPE semid_registry_probes_total counter\n"
		    "semid_registry_probes_total{result=\"ok\"} %llu\n"
		    "semid_registry_probes_total{result=\"unavailable\"} %llu\n",
		    reg_up_now(m), (unsigned long long)m->reg_events.retries,
		    (unsigned long long)m->reg_events.global_locks,
		    (unsigned long long)m->reg_events.lock_table_full,
		    (unsigned long long)m->reg_events.busy_timeouts,
		    (unsigned long long)m->reg_events.rebuild_timeouts,
		    (unsigned long long)m->reg_events.statement_timeouts,
		    (unsigned long long)m->reg_events.answer_timeouts,
		    (unsigned long long)m->reg_probes[1], (unsigned long long)m->reg_probes[0]);
	if (m->reg_up[SRV_REG_OP_ASSIGN] >= 0 && model) {
		srv_buf_puts(&b, "# HELP semid_registry_levels_mismatch 1 when the served tower "
				 "gives another number of levels than the registry's IDs of its "
				 "kind have: new ids of that kind are refused (409).\n"
				 "# TYPE semid_registry_levels_mismatch gauge\n");
		for (int k = 0; k < SID_TOWER_COUNT; k++) {
			const struct sid_tower *tw = sid_model_tower(model, k);
			if (tw)
				srv_buf_printf(&b,
					       "semid_registry_levels_mismatch{tower=\"%s\"} %d\n",
					       sid_tower_name(k),
					       m->reg_levels[k] > 0 && m->reg_levels[k] != tw->L);
		}
	}
	pthread_mutex_unlock(&m->mu);
	render_registry_fs(m, &b);

	srv_buf_puts(&b, "# HELP semid_model_info The model being served.\n"
			 "# TYPE semid_model_info gauge\n");
	if (model) {
		srv_buf_puts(&b, "semid_model_info{version=\"");
		label_value(&b, model->version ? model->version : "");
		srv_buf_printf(&b, "\",sha256=\"%s\"} 1\n", model->sha256);
		srv_buf_printf(&b,
			       "# HELP semid_model_loaded_timestamp_seconds When the model being "
			       "served was loaded (unix time).\n"
			       "# TYPE semid_model_loaded_timestamp_seconds gauge\n"
			       "semid_model_loaded_timestamp_seconds %.3f\n",
			       model->loaded_at);
	}
	srv_buf_puts(&b, "# HELP semid_build_info Build information.\n"
			 "# TYPE semid_build_info gauge\n"
			 "semid_build_info{version=\"" SRV_VERSION "\"} 1\n");
	srv_proc_render(&m->proc, &b);
	return srv_buf_detach(&b, NULL);
}
