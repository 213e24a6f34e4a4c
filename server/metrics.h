/*
 * metrics.h - semid-server's counters, histograms and the code-entropy
 * window, rendered in the Prometheus text exposition format (version 0.0.4)
 * for GET /metrics.  Names and units follow Prometheus conventions:
 *
 *   semid_requests_total{route,code}          counter
 *   semid_request_duration_seconds{route}     histogram (sub-millisecond buckets)
 *   semid_queue_wait_seconds                  histogram (admission -> batch start)
 *   semid_batch_size                          histogram (rows per encode batch)
 *   semid_encoded_total{tower}                counter (rows encoded: the work
 *       done, the rows of a request whose client left before its answer too)
 *   semid_model_reloads_total{result}         counter (success|error)
 *   semid_model_last_reload_successful        gauge: 1 when the last reload
 *       attempt (the start-up load included) loaded its file, 0 when it
 *       failed (absent before the first attempt)
 *   semid_model_watch_checks_total            counter (looks at the model path by
 *       the watcher, a stat each: watch_poll_ms and each directory event)
 *   semid_log_lines_dropped_total             counter (log lines dropped: the
 *       log's reader was not reading, or the write failed)
 *   semid_model_info{version,sha256} 1        gauge (absent with no model)
 *   semid_model_loaded_timestamp_seconds      gauge
 *   semid_queue_rows                          gauge (rows admitted, not answered)
 *   semid_queue_rows_limit                    gauge (queue_rows: srv_metrics_limits)
 *   semid_build_info{version} 1               gauge
 *   semid_code_entropy_bits{tower,level}      gauge: Shannon entropy (bits) of
 *       level's codes over the last entropy_window encoded rows of the tower
 *       by the model served (absent until it has encoded one);
 *       log2(K) means uniform use, near 0 means collapse.  Bits of
 *       information: promtool's lint wanting bytes (a rule for data sizes)
 *       is answered in proto/api.md, Metrics.
 *   semid_registry_assignments_total{tower,created}  counter (ids answered by
 *       assign; created="true" for ids stored by that call)
 *   semid_registry_deletions_total{tower}     counter (ids a DELETE removed)
 *   semid_registry_errors_total{op}           counter (store calls that failed,
 *       one per call as for the duration, none for the requests answered the
 *       503 of a call ahead that timed out; for the store's sake, op "assign"
 *       or "lookup": it was unavailable, or
 *       an entry could not be read; a miss (404) or a refused request (400,
 *       409) is none: semid_requests_total counts those by route and code)
 *   semid_registry_duration_seconds{op}       histogram (one store call: an
 *       assign group's commit or one lookup; one refused before the store,
 *       no handle to be had, too: errors never outnumber _count)
 *   semid_connections_open                    gauge (TCP connections held)
 *   semid_connections_limit                   gauge (connection_limit as served:
 *       after the start lowered it to fit RLIMIT_NOFILE, check.h srv_check_fd_limit)
 *   semid_request_body_bytes                  gauge (bytes of request bodies held
 *       while read or decoded, of decoded requests until answered, and of answers
 *       until sent; body_memory_bytes bounds it)
 *   semid_request_body_limit_bytes            gauge (body_memory_bytes)
 *   semid_connections_closed_total{reason}    counter: connections the server
 *       closed itself, reason "deadline" (a request begun took longer than
 *       connection_timeout_s to arrive), "limit" (503 over connection_limit),
 *       "send_deadline" (the answer was not taken in full
 *       connection_timeout_s after it was queued) or "idle" (no request
 *       begun connection_timeout_s after it opened or its last answer)
 *   semid_registry_retries_total              counter (store transactions run
 *       again after losing a race to another writer; PostgreSQL only)
 *   semid_registry_global_lock_total{reason}  counter (PostgreSQL transactions
 *       that ran alone under the store's global lock: reason "size" (too many
 *       keys to lock one by one) or "lock_table_full" (PostgreSQL's lock
 *       table was full: raise max_locks_per_transaction))
 *   semid_registry_timeouts_total{reason}     counter (store calls whose wait
 *       ran out, registry_timeout_ms: "busy" (SQLite's lock held by another
 *       writer), "index_rebuild" (SQLite: a reader that may not write the
 *       -shm waited out the writer's rebuild of the WAL index),
 *       "statement_timeout" or "no_answer" (PostgreSQL))
 *   semid_registry_up                         gauge: 0 from a store call that
 *       found the store unavailable until a call of the same kind (assign or
 *       lookup; an assign or delete that wrote nothing is a lookup:
 *       srv_metrics_registry_call_read) goes through, or one of the other kind does when the failed
 *       kind has not failed for reg_hold_s; else 1 (absent when the
 *       registry is disabled)
 *   semid_registry_probes_total{result}       counter (reads of an idle store,
 *       srv_metrics_registry_probe: result "ok" or "unavailable")
 *   semid_registry_levels_mismatch{tower}     gauge: 1 when the served tower
 *       gives another number of levels than the registry's IDs of its kind
 *       have (new ids of that kind answer 409), else 0; one per tower of the
 *       served model (absent when the registry is disabled)
 *   semid_registry_filesystem_avail_bytes     gauge: bytes free to the server
 *       on the file system of a SQLite registry's directory (statvfs f_bavail,
 *       what an unprivileged writer may use), read at each render
 *   semid_registry_filesystem_size_bytes      gauge: that file system's size;
 *       both absent for PostgreSQL, with the registry disabled, and in a
 *       scrape whose statvfs failed (logged once)
 *   process_*                                 the standard process metrics of
 *       Prometheus's client libraries (CPU, memory, descriptors, start time,
 *       threads), read from /proc/self at each render: proc.h
 *
 * Thread-safety: every call is thread-safe (one mutex inside; updates are a
 * few additions, so contention is negligible next to encoding).
 */
#ifndef SRV_METRICS_H
#define SRV_METRICS_H

#include <limits.h>
#include <pthread.h>
#include <stddef.h>
#include <stdint.h>

#include "buf.h"
#include "proc.h"
#include "model.h"
#include "registry.h"

#define SRV_VERSION SID_VERSION

enum srv_route {
	SRV_ROUTE_ITEMS_ENCODE,
	SRV_ROUTE_USERS_ENCODE,
	SRV_ROUTE_HEALTHZ,
	SRV_ROUTE_READYZ,
	SRV_ROUTE_MODEL,
	SRV_ROUTE_RELOAD,
	SRV_ROUTE_METRICS,
	SRV_ROUTE_ITEMS_ASSIGN,
	SRV_ROUTE_USERS_ASSIGN,
	SRV_ROUTE_ITEM_GET, /* /v1/items/{id} */
	SRV_ROUTE_USER_GET, /* /v1/users/{id} */
	SRV_ROUTE_SID_GET,  /* /v1/sids/{sid} */
	SRV_ROUTE_SID_LIST, /* /v1/sids */
	SRV_ROUTE_ITEMS_DELETE,
	SRV_ROUTE_USERS_DELETE,
	SRV_ROUTE_OTHER, /* unknown paths, labelled "other" */
	SRV_ROUTE_COUNT
};

/* The path of a route ("/v1/items:encode"; "other" for SRV_ROUTE_OTHER). */
const char *srv_route_name(enum srv_route r);

#define SRV_HIST_MAX 24

/* A cumulative-on-render histogram with fixed upper bounds. */
struct srv_hist {
	int n;			      /* bounds in use */
	double le[SRV_HIST_MAX];      /* ascending upper bounds; +Inf is implicit */
	uint64_t count[SRV_HIST_MAX]; /* per bucket, non-cumulative; [n] is +Inf */
	uint64_t total;
	double sum;
};

void srv_hist_init(struct srv_hist *h, const double *le, int n);
void srv_hist_observe(struct srv_hist *h, double v);
/* Append the _bucket/_sum/_count lines for @name with extra @labels
 * ("route=\"/x\"" or ""). Returns 0 or -1 when out of memory. */
int srv_hist_render(const struct srv_hist *h, const char *name, const char *labels,
		    struct srv_buf *out);

/*
 * Code-entropy window: the codes of the last @window rows (ring buffer), and
 * per level how many of them hold each code, kept up to date as rows come
 * and go.  Rendering then costs one pass over the counts (no bigger than the
 * codebooks, which the model holds anyway, times E floats), not a sort of
 * the window: /metrics runs under the metrics lock that every request and
 * batch takes, so a scrape must be cheap whatever its caller's rate.  Not
 * locked itself; struct srv_metrics guards its windows.
 */
struct srv_entropy {
	int L;				 /* levels of the rows held; a new L resets the window */
	size_t window;			 /* capacity in rows */
	size_t next;			 /* ring position */
	size_t filled;			 /* rows held, <= window */
	int32_t *codes;			 /* (window, L) */
	uint32_t *count[SID_MAX_LEVELS]; /* (ncount[l]) rows in the window per code */
	size_t ncount[SID_MAX_LEVELS];	 /* largest code counted + 1 */
	char model[65];			 /* sha256 of the model whose codes it holds */
};
int srv_entropy_init(struct srv_entropy *e, size_t window);
void srv_entropy_release(struct srv_entropy *e);
void srv_entropy_add(struct srv_entropy *e, const int32_t *codes, size_t B, int L);
/* Entropy in bits of level @l over the window; 0 when empty. */
double srv_entropy_bits(const struct srv_entropy *e, int l);

enum srv_reg_op { SRV_REG_OP_ASSIGN, SRV_REG_OP_LOOKUP, SRV_REG_OPS };

enum srv_conn_close {
	SRV_CONN_DEADLINE,
	SRV_CONN_LIMIT,
	SRV_CONN_SEND_DEADLINE,
	SRV_CONN_IDLE,
	SRV_CONN_CLOSES
};

struct srv_metrics {
	pthread_mutex_t mu;
	uint64_t requests[SRV_ROUTE_COUNT][600]; /* by status code 0..599 */
	struct srv_hist duration[SRV_ROUTE_COUNT];
	struct srv_hist queue_wait;
	struct srv_hist batch_size;
	uint64_t encoded[SID_TOWER_COUNT];
	uint64_t reloads_ok, reloads_err;
	int last_reload_ok;    /* -1 before the first attempt, else 0 or 1 */
	uint64_t watch_checks; /* atomic: the model watcher's stats of its path */
	char served[65];       /* sha256 of the model served ("": none yet) */
	long queue_rows;
	struct srv_entropy entropy[SID_TOWER_COUNT];
	uint64_t reg_assigned[SID_TOWER_COUNT][2]; /* [created] */
	uint64_t reg_deleted[SID_TOWER_COUNT];
	uint64_t reg_errors[SRV_REG_OPS];
	uint64_t reg_probes[2];		  /* [ok] */
	struct sid_reg_events reg_events; /* summed over the store's handles */
	struct srv_hist reg_duration[SRV_REG_OPS];
	int reg_levels[SID_TOWER_COUNT]; /* the store's L per kind, 0: none known */
	int reg_up[SRV_REG_OPS]; /* last call of each kind went through: 1, 0; -1 disabled */
	double reg_down_at[SRV_REG_OPS]; /* when that kind last failed (CLOCK_MONOTONIC s) */
	double reg_hold_s; /* a kind's failure outweighs the other's successes this long (60) */
	uint64_t conn_closed[SRV_CONN_CLOSES];
	long conns_open;
	size_t body_bytes;
	/* the bounds of queue_rows, conns_open and body_bytes (0: not set, no
	 * sample: a 0 would make every ratio against it infinite) */
	long queue_rows_limit, conns_limit;
	size_t body_limit;
	struct srv_proc proc;	/* read outside mu: a scrape's /proc reads hold no request up */
	char reg_dir[PATH_MAX]; /* a SQLite registry's directory ("": none); statvfs outside mu */
	int reg_dir_logged;	/* its statvfs failure was logged (atomic) */
};

int srv_metrics_init(struct srv_metrics *m, size_t entropy_window);
void srv_metrics_release(struct srv_metrics *m);

void srv_metrics_request(struct srv_metrics *m, enum srv_route r, int status, double seconds);
/* One encode batch of @B rows (0: it failed before encoding) by the model
 * whose file has SHA-256 @model (hex), of which @coded were answered with
 * codes (the rows of a request refused after the encode, its encoder
 * overflowing, are not): @codes (coded, L) feed semid_encoded_total and,
 * when @model is the one served, the entropy window, which holds the codes
 * of one model only (another model's codes name other codewords).  @waits
 * holds each job's queue wait in seconds (@n_jobs of them). */
void srv_metrics_batch(struct srv_metrics *m, enum sid_tower_kind t, size_t B, const char *model,
		       const int32_t *codes, size_t coded, int L, const double *waits,
		       size_t n_jobs);
/* A reload attempt: @model the SHA-256 of the file now served, or NULL when
 * the attempt failed.  Call it before the new model serves: from then on
 * only its codes enter the entropy windows, and a tower whose window holds
 * another model's codes has no semid_code_entropy_bits. */
void srv_metrics_reload(struct srv_metrics *m, const char *model);
/* The model watcher looked at its path once more (any thread, no lock). */
void srv_metrics_watch_check(struct srv_metrics *m);
void srv_metrics_queue_rows(struct srv_metrics *m, long rows);
/* One store call of @seconds (one refused before it reached the store, no
 * handle to be had, is a call too, timed with what it took, so that errors
 * never outnumber semid_registry_duration_seconds_count); @ok = 0 when the
 * store was unavailable (it
 * also counts an error and sets semid_registry_up to 0 until a call of
 * @op's kind goes through: a lookup that reads does not say that an assign
 * could write, unless no assign has failed for reg_hold_s, as after a blip
 * when assigns are rare). */
void srv_metrics_registry_call(struct srv_metrics *m, enum srv_reg_op op, double seconds, int ok);
/* A call of @op's kind that went through without writing (an assign whose
 * ids were all known, a delete of ids none of which were stored): its
 * @seconds count as @op's, but it says only that the store reads, so it
 * moves semid_registry_up as a lookup does.  On a full disk such assigns
 * go through while every new id fails: counted as assigns that went
 * through, they set the gauge back to 1 between the failures. */
void srv_metrics_registry_call_read(struct srv_metrics *m, enum srv_reg_op op, double seconds);
/* A request of @op's kind answered with the 503 of a call ahead of it that
 * waited out registry_timeout_ms, without a call of its own: it sets
 * semid_registry_up to 0 as a failed call of @op would, but no call is
 * counted or timed (semid_registry_errors_total counts store calls, as
 * semid_registry_duration_seconds does; semid_requests_total the 503s). */
void srv_metrics_registry_refused(struct srv_metrics *m, enum srv_reg_op op);
/* A probe of an idle store (registry_probe_s): a read, so it moves
 * semid_registry_up as a lookup does (it cannot say that an assign could
 * write), without counting as a lookup call or error. */
void srv_metrics_registry_probe(struct srv_metrics *m, int ok);
/* A call that met a stored entry it cannot read (SID_EDATA: a 500), which
 * is no outage (semid_registry_up stays 1).  Misses (404) and refused
 * requests (400, 409) are not store errors and are not counted here. */
void srv_metrics_registry_error(struct srv_metrics *m, enum srv_reg_op op);
void srv_metrics_registry_assigned(struct srv_metrics *m, enum sid_tower_kind t, uint64_t created,
				   uint64_t known);
void srv_metrics_registry_deleted(struct srv_metrics *m, enum sid_tower_kind t, uint64_t n);
/* Add what a store handle ran into (sid_registry_events_take). */
void srv_metrics_registry_events(struct srv_metrics *m, const struct sid_reg_events *ev);
/* The store holds @kind's IDs with @L levels (srv_store_levels_note): the
 * served tower's levels are compared with it at each render. */
void srv_metrics_registry_levels(struct srv_metrics *m, enum sid_tower_kind kind, int L);
/* -1: the registry is disabled (no semid_registry_up); 0 or 1. */
void srv_metrics_registry_up(struct srv_metrics *m, int up);
/* semid_registry_up as a render now gives it: 0 or 1, or -1 when the
 * registry is disabled.  GET /v1/model's registry status is this verdict,
 * so the two never disagree (a lookup that went through set the store's
 * own flag back while no new id could be written). */
int srv_metrics_registry_is_up(struct srv_metrics *m);

/* @n connections closed by the server for @why. */
void srv_metrics_connections_closed(struct srv_metrics *m, enum srv_conn_close why, uint64_t n);
/* The number of connections held now and the bytes of request bodies held
 * (set before each render). */
void srv_metrics_connections_open(struct srv_metrics *m, long n, size_t body_bytes);

/* The limits the server enforces, exported beside the gauges they bound so
 * that alerts and dashboards compare the two without copying the
 * configuration: queue_rows, connection_limit as served (after the start
 * lowered it to fit the open-files limit) and body_memory_bytes.  Set once
 * at start, before the first scrape. */
void srv_metrics_limits(struct srv_metrics *m, long queue_rows, long connections,
			size_t body_bytes);

/* The registry is a SQLite file at @path: export the free space and size of
 * its directory's file system (a full disk stops new ids, and each keeps
 * 4·D bytes of embedding besides its entry).  Call once at start, before
 * the first scrape. */
void srv_metrics_registry_fs(struct srv_metrics *m, const char *path);

/* Render everything; @model (may be NULL) gives model_info and the loaded
 * timestamp.  Returns a malloc'ed NUL-terminated string or NULL (no memory). */
char *srv_metrics_render(struct srv_metrics *m, const struct sid_model *model);

#endif
