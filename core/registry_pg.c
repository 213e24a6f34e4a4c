/*
 * registry_pg.c - the PostgreSQL backend of the ID registry (registry.h), for
 * a fleet of servers sharing one store.
 *
 * Races between processes are decided by the database: the primary key
 * (kind, id) and the unique constraint (kind, codes, suffix).  An assign runs
 * at READ COMMITTED (every session's default, set in conn_ensure): it reads
 * the id, finds the smallest free suffix, and inserts with ON CONFLICT DO
 * NOTHING; when the insert loses (another process took the id or the slot
 * first) it reads again and either returns the winner's assignment or tries
 * the next free suffix.  A unique violation on a
 * reassign, a deadlock or a serialization failure rolls the transaction back
 * and runs it again (RETRY_MAX times, with a random back-off).  Commit waits
 * for the WAL flush (synchronous_commit as the server has it, "on" by
 * default), so an assignment is durable before it is returned.
 *
 * The connection is re-established on demand: a call that finds it broken
 * reconnects once and runs again (assign is idempotent, so that is safe);
 * when the server cannot be reached the call fails with SID_EUNAVAIL.
 * Statements are prepared once per connection; results come back in binary.
 *
 * Waits are bounded when the handle has a timeout (sid_registry_open_timeout):
 * the session's statement_timeout (unless the operator set one) makes the
 * server cancel a statement that runs or waits for a lock too long, and the
 * connection is non-blocking, so that an answer that never comes (a stopped
 * backend, a host that keeps the TCP connection but does not answer) is given
 * up ANSWER_GRACE_MS later: the connection is dropped, which the retry above
 * then replaces once.
 */
#include "registry.h"

#include <ctype.h>
#include <dlfcn.h>
#include <errno.h>
#include <libpq-fe.h>
#include <limits.h>
#include <poll.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

/*
 * libpq is loaded when a PostgreSQL store is first named (dlopen), not
 * linked: its 23 libraries (Kerberos, LDAP, GnuTLS...) made every start of
 * semid and semid-server slower, PostgreSQL or not (`semid version` 22 ms
 * against 9.5 ms now; bench/RESULTS.md), and a deployment on SQLite alone
 * now runs without libpq5.  Every libpq function this file calls goes
 * through this table (pq.PQ...).
 */
/* clang-format off */
#define PQ_FUNCS(X) \
	X(PQclear) X(PQcmdTuples) X(PQconndefaults) X(PQconnectdbParams) \
	X(PQconninfo) X(PQconninfoFree) X(PQconninfoParse) X(PQconsumeInput) X(PQenterPipelineMode) \
	X(PQerrorMessage) X(PQexec) X(PQexecParams) X(PQexecPrepared) \
	X(PQexitPipelineMode) X(PQfinish) X(PQflush) X(PQfreemem) \
	X(PQgetResult) X(PQgetisnull) X(PQgetlength) X(PQgetvalue) \
	X(PQisBusy) X(PQntuples) X(PQparameterStatus) X(PQpipelineSync) \
	X(PQprepare) X(PQresultErrorField) X(PQresultErrorMessage) X(PQresultStatus) \
	X(PQsendPrepare) X(PQsendQuery) X(PQsendQueryParams) X(PQsendQueryPrepared) \
	X(PQsetNoticeProcessor) X(PQsetnonblocking) X(PQsocket) X(PQsslInUse) \
	X(PQstatus) X(PQtransactionStatus)
/* clang-format on */

static struct {
/* declares a member: no parentheses possible */
/* NOLINTNEXTLINE(bugprone-macro-parentheses) */
#define PQ_SLOT(f) __typeof__(f) *f;
	PQ_FUNCS(PQ_SLOT)
#undef PQ_SLOT
} pq;
static pthread_once_t pq_once = PTHREAD_ONCE_INIT;
static char pq_why[256]; /* why it could not be loaded ("" when it was) */

static void pq_load_once(void)
{
	void *h = dlopen("libpq.so.5", RTLD_NOW | RTLD_LOCAL);

	if (!h) {
		snprintf(pq_why, sizeof(pq_why), "%s", dlerror());
		return;
	}
#define PQ_SYM(f)                                                                                  \
	if (!(*(void **)&pq.f = dlsym(h, #f))) {                                                   \
		snprintf(pq_why, sizeof(pq_why), "libpq.so.5 has no %s (older than 14?)", #f);     \
		return;                                                                            \
	}
	PQ_FUNCS(PQ_SYM)
#undef PQ_SYM
}

/* 0 once libpq is loaded, else SID_EINVAL with the reason (or -1 without
 * @err): no retry of this process will open the store (semid-server refuses
 * to start, as for a connection string libpq cannot parse). */
static int pq_load(struct sid_error *err)
{
	pthread_once(&pq_once, pq_load_once);
	if (!pq_why[0])
		return 0;
	return err ? sid_error_set(err, SID_EINVAL,
				   "registry: a PostgreSQL store needs libpq (Debian: apt-get "
				   "install libpq5): %s",
				   pq_why)
		   : -1;
}

#define SCHEMA_VERSION 1
#define RETRY_MAX      40
#define FETCH_ROWS     1000
#define LOCK_KEY       "7305853201" /* pg_advisory_xact_lock key for migrations */
#define RETRY	       (-1000)	    /* internal: run the transaction again */
#define NOT_ALL	       (-1001)	    /* internal: some id is new */
/* how much longer than its statement_timeout an answer is waited for, so
 * that the server's own cancel (which keeps the connection) comes first */
#define ANSWER_GRACE_MS 1000

static const char *const migrations[SCHEMA_VERSION] = {
    "CREATE TABLE semid_meta (key text COLLATE \"C\" PRIMARY KEY, value text NOT NULL);"
    "CREATE TABLE semid_assignment ("
    " kind smallint NOT NULL,"
    " id text COLLATE \"C\" NOT NULL,"
    " codes bytea NOT NULL,"
    " suffix bigint NOT NULL CHECK (suffix >= 0),"
    " model_version text NOT NULL,"
    " created_ms bigint NOT NULL,"
    " updated_ms bigint NOT NULL,"
    " emb_dim integer NOT NULL DEFAULT 0,"
    " embedding bytea,"
    " CONSTRAINT semid_assignment_id PRIMARY KEY (kind, id),"
    " CONSTRAINT semid_assignment_sid UNIQUE (kind, codes, suffix));"
    "INSERT INTO semid_meta VALUES ('schema_version', '0');",
};

#define COLS "kind, id, codes, suffix, model_version, created_ms, updated_ms, emb_dim"

enum {
	P_GET,
	P_GET_SID,
	P_USED,
	P_INSERT,
	P_MOVE,
	P_EMB,
	P_LEVELS_GET,
	P_LEVELS_PUT,
	P_LIST,
	P_INSERT_NEW,
	P_GET_MANY,
	P_INSERT_NEXT,
	P_MAX,
	P_META_HAS,
	P_META_SET,
	P_DELETE,
	P_COUNT
};

static const char *const stmt_sql[P_COUNT] = {
    [P_GET] = "SELECT " COLS " FROM semid_assignment WHERE kind = $1 AND id = $2",
    [P_GET_SID] = "SELECT " COLS " FROM semid_assignment WHERE kind = $1 AND codes = $2"
		  " AND suffix = $3",
    [P_USED] = "SELECT suffix FROM semid_assignment WHERE kind = $1 AND codes = $2"
	       " ORDER BY suffix",
    [P_INSERT] = "INSERT INTO semid_assignment (kind, id, codes, suffix, model_version,"
		 " created_ms, updated_ms, emb_dim, embedding)"
		 " VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9) ON CONFLICT DO NOTHING",
    [P_MOVE] = "UPDATE semid_assignment SET codes = $3, suffix = $4, model_version = $5,"
	       " updated_ms = $6 WHERE kind = $1 AND id = $2",
    [P_EMB] = "UPDATE semid_assignment SET emb_dim = $3, embedding = $4"
	      " WHERE kind = $1 AND id = $2",
    [P_LEVELS_GET] = "SELECT value FROM semid_meta WHERE key = $1",
    [P_LEVELS_PUT] = "INSERT INTO semid_meta VALUES ($1, $2) ON CONFLICT DO NOTHING",
    /* sid__reg_gap's rule in SQL: 0 when free, else one past the lowest used
     * suffix whose successor is free (a kind that may have gaps) */
    [P_INSERT_NEW] =
	"INSERT INTO semid_assignment (kind, id, codes, suffix, model_version, created_ms,"
	" updated_ms, emb_dim, embedding)"
	" SELECT $1::smallint, $2::text, $3::bytea, COALESCE("
	"  (SELECT 0 WHERE NOT EXISTS (SELECT 1 FROM semid_assignment"
	"    WHERE kind = $1::smallint AND codes = $3::bytea AND suffix = 0)),"
	"  (SELECT x.suffix + 1 FROM semid_assignment x"
	"    WHERE x.kind = $1::smallint AND x.codes = $3::bytea AND NOT EXISTS ("
	"     SELECT 1 FROM semid_assignment y WHERE y.kind = $1::smallint"
	"      AND y.codes = $3::bytea AND y.suffix = x.suffix + 1)"
	"    ORDER BY x.suffix LIMIT 1)),"
	" $4::text, $5::bigint, $5::bigint, $6::integer, $7::bytea"
	" ON CONFLICT DO NOTHING RETURNING suffix",
    /* the same for a kind without gaps: one past the largest suffix */
    [P_INSERT_NEXT] =
	"INSERT INTO semid_assignment (kind, id, codes, suffix, model_version, created_ms,"
	" updated_ms, emb_dim, embedding)"
	" SELECT $1::smallint, $2::text, $3::bytea, COALESCE((SELECT suffix + 1"
	"  FROM semid_assignment WHERE kind = $1::smallint AND codes = $3::bytea"
	"  ORDER BY suffix DESC LIMIT 1), 0),"
	" $4::text, $5::bigint, $5::bigint, $6::integer, $7::bytea"
	" ON CONFLICT DO NOTHING RETURNING suffix",
    [P_MAX] = "SELECT suffix FROM semid_assignment WHERE kind = $1 AND codes = $2"
	      " ORDER BY suffix DESC LIMIT 1",
    [P_META_HAS] = "SELECT 1 FROM semid_meta WHERE key = $1",
    [P_META_SET] = "INSERT INTO semid_meta VALUES ($1, '1') ON CONFLICT DO NOTHING",
    [P_DELETE] = "DELETE FROM semid_assignment WHERE kind = $1 AND id = $2 RETURNING " COLS,
    /* one probe of the (kind, id) index per id, whatever the statistics:
     * as "kind = $1 AND id = ANY($2)" the planner, with no statistics yet
     * (or with the generic plan it cached while the table was small), read
     * every row of the kind through the sid index instead, 56 ms a call at
     * 100k rows; OFFSET 0 keeps the subquery from being flattened into a
     * join it could plan that way again */
    [P_GET_MANY] = "SELECT a.* FROM unnest($2::text[]) AS u(id) CROSS JOIN LATERAL"
		   " (SELECT " COLS " FROM semid_assignment WHERE kind = $1 AND id = u.id"
		   " OFFSET 0) a",
    [P_LIST] = "SELECT " COLS " FROM semid_assignment WHERE kind = $1 AND codes >= $2"
	       " AND codes < $3 AND (codes, suffix) > ($4, $5) ORDER BY codes, suffix LIMIT $6",
};

struct pg {
	struct sid_registry base;
	char *conninfo;
	PGconn *conn;
	int prepared[P_COUNT];
	int levels[SID_TOWER_COUNT]; /* cached once known (they never change) */
	int gaps[SID_TOWER_COUNT];   /* 1: the kind may have free slots below a max */
	unsigned seed;
	int lock_global; /* the next transaction takes GLOBAL_KEY exclusive only */
	int timeout_ms;	 /* 0: no bound (sid_registry_open_timeout) */
	int answer_ms;	 /* how long an answer is waited for (pq_await) */
	char lost[96];	 /* why the connection was dropped while waiting */
	/* the store did not answer in this call (base.calls): its other ops
	 * fail at once instead of each waiting again */
	uint64_t down_call;
	struct sid_error down_err;
	int cancelled; /* the last failure was a statement_timeout cancel */
	/* the last failed connect (sid__reg_mono_ms) and why: another is not
	 * tried within CONNECT_GAP_MS of it */
	int64_t connect_failed_at;
	char connect_why[SID_ERROR_MSG_MAX];
	/* with_retries: a COMMIT of this run lost its connection before its
	 * answer came, so the server may have carried it out */
	int maybe_committed;
};

/* Parameters: text for numbers and strings, binary for bytea. */
#define PMAX 10
struct params {
	int n;
	const char *v[PMAX];
	int len[PMAX], fmt[PMAX];
	char num[PMAX][24];
};

static void p_int(struct params *p, int64_t x)
{
	snprintf(p->num[p->n], sizeof(p->num[0]), "%lld", (long long)x);
	p->v[p->n] = p->num[p->n];
	p->len[p->n] = 0;
	p->fmt[p->n++] = 0;
}

static void p_text(struct params *p, const char *s)
{
	p->v[p->n] = s;
	p->len[p->n] = 0;
	p->fmt[p->n++] = 0;
}

static void p_bytes(struct params *p, const void *b, size_t len)
{
	p->v[p->n] = b ? (const char *)b : NULL;
	p->len[p->n] = (int)len;
	p->fmt[p->n++] = 1;
}

static void conn_drop(struct pg *s)
{
	pq.PQfinish(s->conn);
	s->conn = NULL;
	memset(s->prepared, 0, sizeof(s->prepared));
}

/* What went wrong with the connection, for a message. */
static const char *conn_error(const struct pg *s)
{
	return s->conn ? pq.PQerrorMessage(s->conn) : s->lost[0] ? s->lost : "no connection";
}

/*
 * Send what is queued and wait until a result can be taken without blocking.
 * 0 when it can (or the connection failed: PQgetResult then says how);
 * SID_EUNAVAIL when nothing came within s->answer_ms: the connection is in an
 * unknown state and is dropped.  A handle without a timeout keeps its
 * connection blocking and lets PQgetResult wait, as PQexec would.
 */
static int pq_await(struct pg *s)
{
	int64_t deadline = sid__reg_mono_ms() + s->answer_ms;

	if (!s->timeout_ms)
		return 0;
	for (;;) {
		int pending = pq.PQflush(s->conn), left;
		int64_t now;
		struct pollfd pfd;

		if (pending < 0 || (!pending && !pq.PQisBusy(s->conn)))
			return 0; /* a result is there (a pipeline's are, after the first) */
		/* read what has come before polling: with TLS, a record already
		 * decrypted inside the library would not wake poll */
		if (!pq.PQconsumeInput(s->conn) || (!pending && !pq.PQisBusy(s->conn)))
			return 0;
		now = sid__reg_mono_ms();
		if (now >= deadline) {
			snprintf(s->lost, sizeof(s->lost),
				 "no answer within %d ms; connection dropped", s->answer_ms);
			__atomic_add_fetch(&s->base.events.answer_timeouts, 1, __ATOMIC_RELAXED);
			conn_drop(s);
			return SID_EUNAVAIL;
		}
		left = (int)(deadline - now);
		if (pq.PQsslInUse(s->conn) && left > 50)
			left = 50; /* and look again now and then, for the same reason */
		pfd.fd = pq.PQsocket(s->conn);
		pfd.events = (short)(POLLIN | (pending ? POLLOUT : 0));
		pfd.revents = 0;
		if (poll(&pfd, 1, left) < 0 && errno != EINTR)
			return 0; /* let libpq's own read report it */
	}
}

/* The next result of a command sent (PQgetResult), waited for as pq_await
 * does; NULL at the end of the command's results or when the wait failed. */
static PGresult *pq_next(struct pg *s)
{
	return pq_await(s) ? NULL : pq.PQgetResult(s->conn);
}

/* The result of the command just sent, as PQexec gives it: its first error
 * or else its last result; NULL when it could not be sent or no answer came
 * (pg_fail then says why from the connection or s->lost). */
static PGresult *pq_collect(struct pg *s, int sent)
{
	PGresult *keep = NULL, *res;

	if (!sent)
		return NULL;
	while ((res = pq_next(s))) {
		ExecStatusType st = pq.PQresultStatus(keep);
		if (keep && st != PGRES_COMMAND_OK && st != PGRES_TUPLES_OK) {
			pq.PQclear(res);
			continue;
		}
		pq.PQclear(keep);
		keep = res;
	}
	if (!s->conn) { /* dropped while waiting: what came is not the answer */
		pq.PQclear(keep);
		return NULL;
	}
	return keep;
}

/* PQexec, PQexecParams, PQexecPrepared and PQprepare through pq_collect. */
static PGresult *pq_query(struct pg *s, const char *sql)
{
	return pq_collect(s, pq.PQsendQuery(s->conn, sql));
}

static PGresult *pq_params(struct pg *s, const char *sql, int n, const char *const *v,
			   int result_fmt)
{
	return pq_collect(s,
			  pq.PQsendQueryParams(s->conn, sql, n, NULL, v, NULL, NULL, result_fmt));
}

/*
 * Classify a failed result: RETRY for races, SID_EUNAVAIL for a lost or
 * refused connection, SID_EIO otherwise.  Always sets a message.
 */
static int pg_fail(struct pg *s, PGresult *res, struct sid_error *err, const char *what)
{
	const char *state = res ? pq.PQresultErrorField(res, PG_DIAG_SQLSTATE) : NULL;
	const char *msg = res ? pq.PQresultErrorMessage(res) : "", *hint = "";
	char buf[300];
	int code = SID_EIO;

	if (!msg || !*msg)
		msg = conn_error(s);
	snprintf(buf, sizeof(buf), "%s", msg);
	buf[strcspn(buf, "\n")] = '\0';
	if (state &&
	    (!strcmp(state, "40001") || !strcmp(state, "40P01") || !strcmp(state, "23505"))) {
		sid_error_set(err, SID_EUNAVAIL, "registry %s: %s: %s (gave up after %d retries)",
			      s->base.label, what, buf, RETRY_MAX);
		return RETRY;
	}
	/* statement_timeout, or a lock_timeout the operator set on the role or
	 * database (55P03): a wait that ran its time either way (the second
	 * was taken for an I/O error, waited again by every later call of the
	 * group, and never counted) */
	s->cancelled = state && (!strcmp(state, "57014") || !strcmp(state, "55P03"));
	if (s->cancelled)
		__atomic_add_fetch(&s->base.events.statement_timeouts, 1, __ATOMIC_RELAXED);
	if (!s->conn || pq.PQstatus(s->conn) != CONNECTION_OK || !state ||
	    !strncmp(state, "08", 2) || !strncmp(state, "57P", 3) || !strncmp(state, "53", 2) ||
	    s->cancelled) {
		code = SID_EUNAVAIL;
		if (s->conn && pq.PQstatus(s->conn) != CONNECTION_OK)
			conn_drop(s);
	}
	/* PostgreSQL's own words for a full disk may not say so ("could not
	 * extend file ...: wrote only 4096 of 8192 bytes at block 2034"), nor
	 * say why a transaction is read-only */
	if (state && !strcmp(state, "53100"))
		hint = " (the PostgreSQL server's disk is full)";
	else if (state && !strcmp(state, "25006"))
		hint = " (the database takes no writes: a standby in recovery, or "
		       "default_transaction_read_only set on the role or database)";
	return sid_error_set(err, code, "registry %s: %s: %s%s", s->base.label, what, buf, hint);
}

static int migrate_body(struct pg *s, struct sid_error *err);

static int prepare(struct pg *s, int i, struct sid_error *err)
{
	char name[16];
	PGresult *res;

	if (s->prepared[i])
		return 0;
	snprintf(name, sizeof(name), "semid%d", i);
	res = pq_collect(s, pq.PQsendPrepare(s->conn, name, stmt_sql[i], 0, NULL));
	if (pq.PQresultStatus(res) != PGRES_COMMAND_OK) {
		int rc = pg_fail(s, res, err, "prepare");
		pq.PQclear(res);
		return rc;
	}
	pq.PQclear(res);
	s->prepared[i] = 1;
	return 0;
}

/* Run prepared statement @i; on success *out is the result (caller PQclear). */
static int pq_run(struct pg *s, int i, const struct params *p, PGresult **out,
		  struct sid_error *err)
{
	PGresult *res;
	ExecStatusType st;

	*out = NULL;
	if (!s->prepared[i]) {
		int rc = prepare(s, i, err);
		if (rc)
			return rc;
	}
	{
		char name[16];
		snprintf(name, sizeof(name), "semid%d", i);
		res = pq_collect(
		    s, pq.PQsendQueryPrepared(s->conn, name, p->n, p->v, p->len, p->fmt, 1));
	}
	st = pq.PQresultStatus(res);
	if (st != PGRES_TUPLES_OK && st != PGRES_COMMAND_OK) {
		int rc = pg_fail(s, res, err, "query");
		pq.PQclear(res);
		return rc;
	}
	*out = res;
	return 0;
}

/* Run @sql; a failure's message says @what was being done. */
static int pq_exec_what(struct pg *s, const char *sql, const char *what, struct sid_error *err)
{
	PGresult *res = pq_query(s, sql);
	int rc = 0;
	if (pq.PQresultStatus(res) != PGRES_COMMAND_OK && pq.PQresultStatus(res) != PGRES_TUPLES_OK)
		rc = pg_fail(s, res, err, what);
	pq.PQclear(res);
	return rc;
}

/* Run a short statement, named by itself in a failure's message. */
static int pq_exec(struct pg *s, const char *sql, struct sid_error *err)
{
	return pq_exec_what(s, sql, sql, err);
}

/* Forget the levels and gaps flags cached: a rollback (of the transaction,
 * or to a savepoint) may have taken away what they say was written, and a
 * gaps flag cached but not stored would keep the next gap from being
 * stored (other handles would then never look for it). */
static void forget_cached(struct pg *s)
{
	memset(s->levels, 0, sizeof(s->levels));
	memset(s->gaps, 0, sizeof(s->gaps));
}

/* Undo the transaction, and forget what it may have cached: the levels and
 * gaps flags it wrote are gone with it (a retry must write them again). */
static void rollback(struct pg *s)
{
	forget_cached(s);
	if (s->conn && pq.PQtransactionStatus(s->conn) != PQTRANS_IDLE) {
		PGresult *res = pq_query(s, "ROLLBACK");
		pq.PQclear(res);
	}
}

static int64_t getint(const PGresult *res, int row, int col)
{
	const uint8_t *b = (const uint8_t *)pq.PQgetvalue(res, row, col);
	int len = pq.PQgetlength(res, row, col);
	uint64_t v = 0;
	for (int i = 0; i < len; i++)
		v = v << 8 | b[i];
	if (len == 2)
		return (int16_t)v;
	if (len == 4)
		return (int32_t)v;
	return (int64_t)v;
}

/* Read an entry from @res's @row, selecting COLS (@how: registry.h). */
static int row_entry(struct pg *s, const PGresult *res, int row, enum sid__reg_row how,
		     struct sid_reg_entry *e, struct sid_error *err)
{
	const char *id = pq.PQgetvalue(res, row, 1), *ver = pq.PQgetvalue(res, row, 4);

	memset(e, 0, sizeof(*e));
	e->kind = (int)getint(res, row, 0);
	if (how == SID__REG_ROW_ANY && sid_reg_id_check(id, NULL))
		return sid_error_set(err, SID_EDATA,
				     "registry %s: the stored entry of id \"%.*s\" cannot be read: "
				     "its id is damaged (not 1..%d bytes of UTF-8 without control "
				     "characters)",
				     s->base.label, sid__name_shown(id), id, SID_REG_ID_MAX);
	if (pq.PQgetlength(res, row, 4) > SID_REG_VERSION_MAX ||
	    sid__reg_codes_unpack(pq.PQgetvalue(res, row, 2), pq.PQgetlength(res, row, 2), e->codes,
				  &e->L)) {
		if (how == SID__REG_ROW_CODES) /* (stats: it walks the index of codes alone) */
			return sid_error_set(
			    err, SID_EDATA,
			    "registry %s: a stored entry cannot be read: its "
			    "codes are damaged (semid registry check names its id)",
			    s->base.label);
		return sid_error_set(
		    err, SID_EDATA,
		    "registry %s: the stored entry of id \"%.*s\" cannot be read: "
		    "its codes or model_version are damaged (deleting the id erases "
		    "it)",
		    s->base.label, sid__name_shown(id), id);
	}
	memcpy(e->id, id, pq.PQgetlength(res, row, 1));
	memcpy(e->model_version, ver, pq.PQgetlength(res, row, 4));
	e->suffix = getint(res, row, 3);
	e->created_ms = getint(res, row, 5);
	e->updated_ms = getint(res, row, 6);
	e->D = (int)getint(res, row, 7);
	return 0;
}

/* Run a statement selecting COLS: 1 found (*e filled), 0 absent, else an
 * error or RETRY.  @how: the row's, as row_entry takes it. */
static int fetch_one(struct pg *s, int stmt_i, const struct params *p, enum sid__reg_row how,
		     struct sid_reg_entry *e, struct sid_error *err)
{
	PGresult *res;
	int rc = pq_run(s, stmt_i, p, &res, err);

	if (rc)
		return rc;
	rc = pq.PQntuples(res) ? 1 : 0;
	if (rc && row_entry(s, res, 0, how, e, err))
		rc = SID_EDATA;
	pq.PQclear(res);
	return rc;
}

static int get_row(struct pg *s, int kind, const char *id, struct sid_reg_entry *e,
		   struct sid_error *err)
{
	struct params p = {0};
	p_int(&p, kind);
	p_text(&p, id);
	return fetch_one(s, P_GET, &p, SID__REG_ROW_BY_ID, e, err);
}

static int get_sid_row(struct pg *s, int kind, const uint8_t *codes, int L, int64_t suffix,
		       struct sid_reg_entry *e, struct sid_error *err)
{
	struct params p = {0};
	p_int(&p, kind);
	p_bytes(&p, codes, 4 * (size_t)L);
	p_int(&p, suffix);
	return fetch_one(s, P_GET_SID, &p, SID__REG_ROW_ANY, e, err);
}

/* @kind's levels read from the store (0: none yet), and cached when set. */
static int levels_read(struct pg *s, int kind, int *L, struct sid_error *err)
{
	struct params p = {0};
	char key[32];
	PGresult *res;
	int rc;

	*L = 0;
	snprintf(key, sizeof(key), "levels.%s", sid_tower_name(kind));
	p_text(&p, key);
	rc = pq_run(s, P_LEVELS_GET, &p, &res, err);
	if (rc)
		return rc;
	if (pq.PQntuples(res)) {
		rc = sid__reg_levels_parse(s->base.label, kind, pq.PQgetvalue(res, 0, 0), L, err);
		s->levels[kind] = *L;
	}
	pq.PQclear(res);
	return rc;
}

static int levels_get(struct pg *s, int kind, int *L, struct sid_error *err)
{
	*L = s->levels[kind];
	return *L ? 0 : levels_read(s, kind, L, err);
}

/* Set @kind's levels to @L unless set; 0 when they equal @L, 2 when they
 * differ, else an error.  The value is cached; rollback() clears the cache. */
static int levels_ensure(struct pg *s, int kind, int L, struct sid_error *err)
{
	struct params p = {0};
	char key[32], val[16];
	PGresult *res;
	int cur, rc = levels_get(s, kind, &cur, err);

	if (rc)
		return rc;
	if (!cur) {
		snprintf(key, sizeof(key), "levels.%s", sid_tower_name(kind));
		snprintf(val, sizeof(val), "%d", L);
		p_text(&p, key);
		p_text(&p, val);
		rc = pq_run(s, P_LEVELS_PUT, &p, &res, err);
		if (rc)
			return rc;
		pq.PQclear(res);
		rc = levels_get(s, kind, &cur, err);
		if (rc)
			return rc;
	}
	return cur == L ? 0 : 2;
}

/* The gaps flag of registry_sqlite.c ("gaps.<kind>" in semid_meta): until
 * a gap may exist, the smallest free suffix is one past the largest. */
static int gaps_possible(struct pg *s, int kind, int *yes, struct sid_error *err)
{
	struct params p = {0};
	char key[32];
	PGresult *res;
	int rc;

	if (s->gaps[kind]) {
		*yes = 1;
		return 0;
	}
	snprintf(key, sizeof(key), "gaps.%s", sid_tower_name(kind));
	p_text(&p, key);
	if ((rc = pq_run(s, P_META_HAS, &p, &res, err)))
		return rc;
	*yes = s->gaps[kind] = pq.PQntuples(res) > 0;
	pq.PQclear(res);
	return 0;
}

static int gaps_mark(struct pg *s, int kind, struct sid_error *err)
{
	struct params p = {0};
	char key[32];
	PGresult *res;
	int rc;

	if (s->gaps[kind])
		return 0;
	snprintf(key, sizeof(key), "gaps.%s", sid_tower_name(kind));
	p_text(&p, key);
	if ((rc = pq_run(s, P_META_SET, &p, &res, err)))
		return rc;
	pq.PQclear(res);
	s->gaps[kind] = 1; /* rollback() forgets it */
	return 0;
}

/* The largest suffix under @codes, or -1. */
static int max_suffix(struct pg *s, int kind, const uint8_t *codes, int L, int64_t *out,
		      struct sid_error *err)
{
	struct params p = {0};
	PGresult *res;
	int rc;

	p_int(&p, kind);
	p_bytes(&p, codes, 4 * (size_t)L);
	if ((rc = pq_run(s, P_MAX, &p, &res, err)))
		return rc;
	*out = pq.PQntuples(res) ? getint(res, 0, 0) : -1;
	pq.PQclear(res);
	return 0;
}

static int free_suffix(struct pg *s, int kind, const uint8_t *codes, int L, int64_t *out,
		       struct sid_error *err)
{
	struct params p = {0};
	struct sid__reg_gap g;
	PGresult *res;
	int rc, n, gaps = 1;

	if ((rc = gaps_possible(s, kind, &gaps, err)))
		return rc;
	if (!gaps) {
		rc = max_suffix(s, kind, codes, L, out, err);
		++*out;
		return rc;
	}
	p_int(&p, kind);
	p_bytes(&p, codes, 4 * (size_t)L);
	rc = pq_run(s, P_USED, &p, &res, err);
	if (rc)
		return rc;
	sid__reg_gap_init(&g);
	n = pq.PQntuples(res);
	for (int i = 0; i < n; i++)
		if (sid__reg_gap_feed(&g, getint(res, i, 0)))
			break;
	pq.PQclear(res);
	*out = g.next;
	return 0;
}

/*
 * Before an id leaves a slot: note that a gap may be left.  Always, not
 * only when the slot is below the largest suffix this transaction sees: a
 * writer adding an id to the same tuple meanwhile (its locks are the
 * tuple's and its id's, not the leaver's old tuple's) does not see the move
 * yet and takes the next suffix, so the slot ends below the largest one
 * after all, and without the flag it would never be used again.
 */
static int leaving(struct pg *s, int kind, struct sid_error *err)
{
	return gaps_mark(s, kind, err);
}

/* INSERT ... ON CONFLICT DO NOTHING: 1 inserted, 0 lost a race, else error. */
static int insert_row(struct pg *s, const struct sid_reg_entry *e, const uint8_t *codes,
		      const float *emb, struct sid_error *err)
{
	struct params p = {0};
	PGresult *res;
	int rc;

	p_int(&p, e->kind);
	p_text(&p, e->id);
	p_bytes(&p, codes, 4 * (size_t)e->L);
	p_int(&p, e->suffix);
	p_text(&p, e->model_version);
	p_int(&p, e->created_ms);
	p_int(&p, e->updated_ms);
	p_int(&p, emb ? e->D : 0);
	p_bytes(&p, emb, emb ? sizeof(float) * e->D : 0);
	rc = pq_run(s, P_INSERT, &p, &res, err);
	if (rc)
		return rc;
	rc = atoi(pq.PQcmdTuples(res)) == 1;
	pq.PQclear(res);
	return rc;
}

/* Move a stored id; its embedding becomes @emb (D floats), or with @emb NULL
 * is dropped when @drop, else kept. */
static int update_row(struct pg *s, int kind, const char *id, const uint8_t *codes, int L,
		      int64_t suffix, const char *version, int64_t now_ms, const float *emb, int D,
		      int drop, struct sid_error *err)
{
	struct params p = {0};
	PGresult *res;
	int rc;

	p_int(&p, kind);
	p_text(&p, id);
	p_bytes(&p, codes, 4 * (size_t)L);
	p_int(&p, suffix);
	p_text(&p, version);
	p_int(&p, now_ms);
	rc = pq_run(s, P_MOVE, &p, &res, err);
	if (rc || (!emb && !drop))
		goto out;
	pq.PQclear(res);
	memset(&p, 0, sizeof(p));
	p_int(&p, kind);
	p_text(&p, id);
	p_int(&p, emb ? D : 0);
	p_bytes(&p, emb, emb ? sizeof(float) * D : 0);
	rc = pq_run(s, P_EMB, &p, &res, err);
out:
	pq.PQclear(res);
	return rc;
}

static void notice_ignore(void *arg, const char *msg)
{
	(void)arg;
	(void)msg;
}

/*
 * Connect with bounded waits unless the operator chose others.  libpq's
 * defaults wait for ever: a server that accepts and never answers (a hung
 * host, a proxy with nothing behind it) held semid-server's startup, and
 * with it every encode, until someone killed it; and a peer that vanished
 * mid-call left it waiting for the kernel's 15-minute retransmission limit.
 * So: connect_timeout 5 s, or the handle's timeout rounded up to whole
 * seconds (at least 2: libpq's floor) (unless PGCONNECT_TIMEOUT is set), unacknowledged
 * data given up after 10 s (tcp_user_timeout), an idle peer probed after
 * 10 s and declared dead after three probes 5 s apart.  These go before the
 * connection string, whose own settings therefore win.
 */
#define SID__PG_CONNECT_TIMEOUT_S "5"

static PGconn *pg_connect(const char *conninfo, int timeout_ms)
{
	const char *keys[10], *vals[10];
	char secs[16];
	int n = 0;

	if (!getenv("PGCONNECT_TIMEOUT")) {
		int s = (timeout_ms + 999) / 1000;
		snprintf(secs, sizeof(secs), "%d", s < 2 ? 2 : s);
		keys[n] = "connect_timeout";
		vals[n++] = timeout_ms ? secs : SID__PG_CONNECT_TIMEOUT_S;
	}
	keys[n] = "tcp_user_timeout";
	vals[n++] = "10000";
	keys[n] = "keepalives_idle";
	vals[n++] = "10";
	keys[n] = "keepalives_interval";
	vals[n++] = "5";
	keys[n] = "keepalives_count";
	vals[n++] = "3";
	keys[n] = "fallback_application_name"; /* pg_stat_activity shows who it is */
	vals[n++] = "semid";
	keys[n] = "dbname";
	vals[n++] = conninfo;
	/* after the connection string, so that neither it, PGCLIENTENCODING,
	 * the role nor the database can make it another (encoding_check) */
	keys[n] = "client_encoding";
	vals[n++] = "UTF8";
	keys[n] = NULL;
	vals[n] = NULL;
	return pq.PQconnectdbParams(keys, vals, 1);
}

/*
 * Ids and model versions are UTF-8 text and go both ways as UTF-8
 * (client_encoding, set in pg_connect).  A UTF8 database stores them as they
 * are.  So does SQL_ASCII: it converts nothing, and PostgreSQL still checks
 * what a UTF8 client sends as UTF-8 on its way in, so every id semid takes
 * is stored byte for byte and read back unchanged; ids compare byte by byte
 * in both (COLLATE "C"), and no statement here looks at characters.  Any
 * other encoding (LATIN1, WIN1252, EUC_JP...) lacks characters an id may
 * have: such an id would fail its whole transaction, and with it every
 * request of its assign group (or, with the client in the database's
 * encoding, be stored as other characters than those sent).  That database
 * is refused on every connection, before anything is written to it.
 */
static int encoding_check(struct pg *s, struct sid_error *err)
{
	const char *db = pq.PQparameterStatus(s->conn, "server_encoding");
	const char *client = pq.PQparameterStatus(s->conn, "client_encoding");

	if (!db || (strcmp(db, "UTF8") && strcmp(db, "SQL_ASCII")))
		return sid_error_set(err, SID_EFORMAT,
				     "registry %s: the database's encoding is %s, which cannot "
				     "hold every UTF-8 id; use a database created with ENCODING "
				     "'UTF8' (CREATE DATABASE name ENCODING 'UTF8' TEMPLATE "
				     "template0; proto/registry.md)",
				     s->base.label, db ? db : "not reported");
	if (!client || strcmp(client, "UTF8"))
		return sid_error_set(err, SID_EFORMAT,
				     "registry %s: the session's client_encoding is %s, not UTF8",
				     s->base.label, client ? client : "not reported");
	return 0;
}

/*
 * libpq does not read a password file that others may read (or that is no
 * plain file), and says so only in a line on stderr; the connection then
 * fails with "fe_sendauth: no password supplied", which names neither the
 * file nor its mode.  Added to s->connect_why, after that failure, when the
 * password file libpq would have read (passfile=, PGPASSFILE or
 * ~/.pgpass, as the failed connection reports it) is such a file.
 */
static void passfile_ignored(struct pg *s)
{
	PQconninfoOption *o, *x;
	const char *file = NULL;
	size_t n = strlen(s->connect_why);
	struct stat st;

	if (!strstr(s->connect_why, "no password supplied") || !(o = pq.PQconninfo(s->conn)))
		return;
	for (x = o; x->keyword && !file; x++)
		if (!strcmp(x->keyword, "passfile") && x->val && x->val[0])
			file = x->val;
	if (file && !stat(file, &st) && !S_ISREG(st.st_mode))
		snprintf(s->connect_why + n, sizeof(s->connect_why) - n,
			 " (the password file %s was not read: it is not a plain file)", file);
	else if (file && !stat(file, &st) && (st.st_mode & 077))
		snprintf(s->connect_why + n, sizeof(s->connect_why) - n,
			 " (the password file %s was not read: its mode %04o lets other users "
			 "read it; chmod 600 it)",
			 file, (unsigned)(st.st_mode & 07777));
	pq.PQconninfoFree(o);
}

/*
 * A server's handle (one with a timeout, sid_registry_open_timeout) whose
 * connect failed tries again at most once a second (as proto/registry.md
 * says): every call reconnected at once, so an outage, or a server at
 * max_connections, met thousands of attempts a second from each handle (a
 * backend forked for each "too many clients").  Within the gap the call
 * fails at once with the last attempt's reason.  A command's handle, one
 * call after another, tries each time.
 */
#define CONNECT_GAP_MS 1000

static int conn_ensure(struct pg *s, struct sid_error *err)
{
	PGresult *res;

	if (s->conn && pq.PQstatus(s->conn) == CONNECTION_OK)
		return 0;
	conn_drop(s);
	if (s->timeout_ms && s->connect_failed_at &&
	    sid__reg_mono_ms() - s->connect_failed_at < CONNECT_GAP_MS)
		return sid_error_set(err, SID_EUNAVAIL,
				     "registry %s: cannot connect: %s (tried again at most once a "
				     "second)",
				     s->base.label, s->connect_why);
	s->conn = pg_connect(s->conninfo, s->timeout_ms);
	if (pq.PQstatus(s->conn) != CONNECTION_OK) {
		snprintf(s->connect_why, sizeof(s->connect_why), "%s", pq.PQerrorMessage(s->conn));
		s->connect_why[strcspn(s->connect_why, "\n")] = '\0';
		passfile_ignored(s);
		s->connect_failed_at = sid__reg_mono_ms();
		conn_drop(s);
		return sid_error_set(err, SID_EUNAVAIL, "registry %s: cannot connect: %s",
				     s->base.label, s->connect_why);
	}
	s->connect_failed_at = 0;
	{
		int rc = encoding_check(s, err);
		if (rc) {
			conn_drop(s);
			return rc;
		}
	}
	pq.PQsetNoticeProcessor(s->conn, notice_ignore, NULL);
	s->lost[0] = '\0';
	s->answer_ms = s->timeout_ms + ANSWER_GRACE_MS;
	if (s->timeout_ms && pq.PQsetnonblocking(s->conn, 1)) { /* pq_await does the waiting */
		int rc = sid_error_set(err, SID_EUNAVAIL, "registry %s: non-blocking mode: %s",
				       s->base.label, pq.PQerrorMessage(s->conn));
		conn_drop(s);
		return rc;
	}
	/* Every transaction here is written for READ COMMITTED (each statement
	 * sees what committed before it, the advisory locks' waits included),
	 * whatever the role or database default: at REPEATABLE READ a
	 * migration that had waited for the lock read semid_meta with the
	 * snapshot its lock statement took, saw the table but not its row, and
	 * refused a store another process had just created. */
	res = pq_query(s, "SET client_min_messages = warning;"
			  " SET default_transaction_isolation = 'read committed'");
	pq.PQclear(res);
	if (s->conn && s->timeout_ms) {
		/* The server cancels what runs or waits too long, keeping the
		 * connection and releasing the transaction's locks; a nonzero
		 * statement_timeout the operator set is kept, and answers are
		 * then waited for that long (plus the grace), so that it is still
		 * the server's cancel that ends a long lock wait. */
		char sql[200];
		snprintf(sql, sizeof(sql),
			 "SELECT CASE WHEN current_setting('statement_timeout') = '0'"
			 " THEN set_config('statement_timeout', '%d', false) END,"
			 " (SELECT setting FROM pg_settings WHERE name = 'statement_timeout')",
			 s->timeout_ms);
		res = pq_query(s, sql);
		if (pq.PQresultStatus(res) == PGRES_TUPLES_OK && pq.PQntuples(res) == 1) {
			long ms = strtol(pq.PQgetvalue(res, 0, 1), NULL, 10);
			if (ms > s->timeout_ms && ms < INT_MAX - ANSWER_GRACE_MS)
				s->answer_ms = (int)ms + ANSWER_GRACE_MS;
		}
		pq.PQclear(res);
	}
	if (s->conn && (s->base.open_flags & SID_REG_READONLY)) { /* PostgreSQL refuses writes */
		res = pq_query(s, "SET default_transaction_read_only = on");
		pq.PQclear(res);
	} else if (s->conn) {
		/* An assignment is durable before it is answered: a cluster,
		 * database or role at synchronous_commit = off would acknowledge
		 * commits a crash then loses.  Any other value (on, local,
		 * remote_write, remote_apply) is kept as the operator set it. */
		res = pq_query(s, "SELECT set_config('synchronous_commit', 'on', false)"
				  " WHERE current_setting('synchronous_commit') = 'off'");
		pq.PQclear(res);
	}
	if (!s->conn)
		return sid_error_set(err, SID_EUNAVAIL, "registry %s: session setup: %s",
				     s->base.label, s->lost);
	/* Every new connection checks the schema: the database may have been
	 * created, restored or migrated by a newer semid since the last one.
	 * A connection whose check failed is dropped, so the next call checks
	 * again instead of using a schema this build does not know. */
	{
		int rc = pq_exec(s, "BEGIN", err);
		if (!rc)
			rc = migrate_body(s, err);
		if (!rc)
			rc = pq_exec(s, "COMMIT", err);
		if (rc) {
			rollback(s);
			conn_drop(s);
			return rc == RETRY ? SID_EUNAVAIL : rc;
		}
	}
	return 0;
}

static void backoff(struct pg *s, int attempt)
{
	struct timespec ts = {0, 0};
	long us = 200L * (1 + rand_r(&s->seed) % (2 << (attempt < 6 ? attempt : 6)));
	ts.tv_nsec = us * 1000;
	nanosleep(&ts, NULL);
}

/*
 * Run @body (a transaction body when @txn) with reconnects and retries: a
 * broken connection is re-established once (not when it was itself made for
 * this run), a lost race runs it again.  Once a call (base.calls) has found
 * the store unreachable, silent or cancelling its statement, its other runs
 * fail at once with the same error, so that a call of many ops (a group of
 * assign calls) waits out one timeout, not one per op.
 */
typedef int (*body_fn)(struct pg *s, void *ctx, struct sid_error *err);

static int with_retries(struct pg *s, int txn, body_fn body, void *ctx, struct sid_error *err)
{
	int rc = 0, reconnected = !s->conn; /* a new connection is not made twice */

	if (s->base.calls && s->down_call == s->base.calls) {
		*err = s->down_err; /* this call found the store down already */
		return SID_EUNAVAIL;
	}
	s->cancelled = s->maybe_committed = 0;
	for (int attempt = 0; attempt < RETRY_MAX; attempt++) {
		if ((rc = conn_ensure(s, err))) /* (a failed one leaves no connection) */
			break;
		if (txn)
			rc = pq_exec(s, "BEGIN", err);
		if (!rc)
			rc = body(s, ctx, err);
		if (!rc && txn && (rc = pq_exec(s, "COMMIT", err)) == SID_EUNAVAIL && !s->conn)
			s->maybe_committed = 1;
		if (!rc)
			return 0;
		rollback(s);
		if (rc == RETRY) {
			if (!s->lock_global) /* not a race: the lock table was full */
				__atomic_add_fetch(&s->base.events.retries, 1, __ATOMIC_RELAXED);
			backoff(s, attempt);
			continue;
		}
		if (rc == SID_EUNAVAIL && !s->conn && !reconnected) {
			reconnected = 1; /* the connection broke: one more go on a new one */
			continue;
		}
		break;
	}
	if (rc == RETRY && !err->code) /* every failure carries its message */
		sid_error_set(err, SID_EUNAVAIL, "registry %s: still racing after %d retries",
			      s->base.label, RETRY_MAX);
	if (rc == SID_EUNAVAIL && (!s->conn || s->cancelled)) {
		s->down_call = s->base.calls; /* unreachable, or waited its time: not again */
		s->down_err = *err;
	}
	return rc == RETRY ? SID_EUNAVAIL : rc;
}

/* ---- lock ordering ---- */

static int64_t key_hash(int kind, char tag, const void *buf, size_t len)
{
	const uint8_t *b = buf;
	uint64_t h = 1469598103934665603ull;
	h = (h ^ (uint8_t)kind) * 1099511628211ull;
	h = (h ^ (uint8_t)tag) * 1099511628211ull;
	for (size_t i = 0; i < len; i++)
		h = (h ^ b[i]) * 1099511628211ull;
	return (int64_t)h;
}

static int key_cmp(const void *a, const void *b)
{
	int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;
	return x < y ? -1 : x > y;
}

/*
 * Take the transaction's advisory locks for @n keys: every writer takes its
 * locks in the same global order, so writers touching the same ids or code
 * tuples queue instead of deadlocking, and the unique constraints are left
 * as a last defence.  PostgreSQL's lock table is small (max_locks_per_
 * transaction x connections, 6400 by default), so the number of locks per
 * transaction is bounded: first the global key GLOBAL_KEY, shared; then up
 * to LOCK_KEYS_MAX distinct keys, sorted, exclusive.  A transaction with
 * more keys (a big import or group) takes GLOBAL_KEY exclusive instead and
 * so runs alone.  One statement either way.  If the lock table is full all
 * the same (many servers and connections on PostgreSQL's defaults: "out of
 * shared memory", 53200), the transaction runs again holding GLOBAL_KEY
 * exclusive only, instead of failing.
 */
#define GLOBAL_KEY    "7305853202"
#define LOCK_KEYS_MAX (2 * SID_REG_PG_GROUP_IDS)

static int lock_keys(struct pg *s, int64_t *keys, size_t n, struct sid_error *err)
{
	size_t m = 0, cap = 32 + 21 * n;
	char *arr, *p;
	const char *v[1];
	PGresult *res;
	int rc = 0, global;

	qsort(keys, n, sizeof(*keys), key_cmp);
	for (size_t i = 0; i < n; i++)
		m += !i || keys[i] != keys[i - 1];
	global = m > LOCK_KEYS_MAX || s->lock_global;
	if (global) {
		__atomic_add_fetch(s->lock_global ? &s->base.events.lock_table_full
						  : &s->base.events.global_locks,
				   1, __ATOMIC_RELAXED);
		s->lock_global = 0;
		res = pq_query(s, "SELECT pg_advisory_xact_lock(" GLOBAL_KEY ")");
	} else {
		arr = p = malloc(cap);
		if (!arr)
			return sid_error_set(err, SID_ENOMEM, "registry: out of memory");
		p += sprintf(p, "{%s", GLOBAL_KEY);
		for (size_t i = 0; i < n; i++)
			if (!i || keys[i] != keys[i - 1])
				p += sprintf(p, ",%lld", (long long)keys[i]);
		*p++ = '}';
		*p = '\0';
		v[0] = arr;
		res = pq_params(
		    s,
		    "SELECT count(CASE WHEN u.n = 1 THEN pg_advisory_xact_lock_shared(u.k)"
		    " ELSE pg_advisory_xact_lock(u.k) END)"
		    " FROM unnest($1::bigint[]) WITH ORDINALITY AS u(k, n)",
		    1, v, 0);
		free(arr);
	}
	if (pq.PQresultStatus(res) != PGRES_TUPLES_OK) {
		const char *state = pq.PQresultErrorField(res, PG_DIAG_SQLSTATE);
		rc = pg_fail(s, res, err, "lock");
		if (!global && state && !strcmp(state, "53200")) {
			/* the lock table is full: again, holding the global key alone */
			s->lock_global = 1;
			sid_error_set(err, SID_EUNAVAIL,
				      "registry %s: lock: PostgreSQL's lock table is full "
				      "(raise max_locks_per_transaction)",
				      s->base.label);
			rc = RETRY;
		}
	}
	pq.PQclear(res);
	return rc;
}

/* The lock keys of @n inputs (ids, tag 'i', and code tuples, tag 'c') into
 * keys[0..2n). */
static void batch_keys(int kind, const struct sid_reg_item *items,
		       const struct sid_reg_entry *entries, size_t n, int L, int64_t *keys)
{
	for (size_t i = 0; i < n; i++) {
		uint8_t codes[SID__REG_CODES_BYTES];
		const char *id = items ? items[i].id : entries[i].id;
		int k = items ? kind : entries[i].kind, l = items ? L : entries[i].L;
		sid__reg_codes_pack(items ? items[i].codes : entries[i].codes, l, codes);
		keys[2 * i] = key_hash(k, 'i', id, strlen(id));
		keys[2 * i + 1] = key_hash(k, 'c', codes, 4 * (size_t)l);
	}
}

struct assign_ctx {
	int kind;
	const struct sid_reg_item *items;
	size_t n;
	int L, D;
	const char *version;
	unsigned flags;
	int64_t now_ms;
	struct sid_reg_entry *out;
	const struct sid_reg_entry *expect; /* (n) or NULL */
	size_t *order;			    /* (n) input indices sorted by id */
	long *prev;			    /* (n) the previous input with the same id, or -1 */
	int *known;			    /* (n) first occurrences: out[i] holds the stored row */
};

static int order_cmp(const void *a, const void *b, void *ctx)
{
	const struct sid_reg_item *items = ctx;
	size_t x = *(const size_t *)a, y = *(const size_t *)b;
	int c = strcmp(items[x].id, items[y].id);
	return c ? c : (x > y) - (x < y);
}

/* Sort the inputs by id and link repeated ids to their previous occurrence. */
static void batch_index(struct assign_ctx *c)
{
	for (size_t i = 0; i < c->n; i++)
		c->order[i] = i;
	qsort_r(c->order, c->n, sizeof(*c->order), order_cmp, (void *)c->items);
	for (size_t k = 0; k < c->n; k++)
		c->prev[c->order[k]] =
		    k && !strcmp(c->items[c->order[k]].id, c->items[c->order[k - 1]].id)
			? (long)c->order[k - 1]
			: -1;
}

/*
 * Read the stored rows of all the batch's ids in one statement (id = ANY of
 * a text array): known[i] = 1 and out[i] filled for each first occurrence
 * found.  Returns the number found among first occurrences, or an error.
 */
static int prefetch(struct pg *s, struct assign_ctx *c, struct sid_error *err)
{
	size_t cap = 3, firsts = 0;
	char *arr, *q;
	struct params pp = {0};
	PGresult *res;
	int rc = 0, n;

	for (size_t i = 0; i < c->n; i++)
		cap += 2 * strlen(c->items[i].id) + 3;
	arr = q = malloc(cap);
	if (!arr)
		return sid_error_set(err, SID_ENOMEM, "registry: out of memory");
	*q++ = '{';
	for (size_t i = 0; i < c->n; i++) {
		c->known[i] = 0;
		if (c->prev[i] >= 0)
			continue;
		if (firsts++)
			*q++ = ',';
		*q++ = '"';
		for (const char *x = c->items[i].id; *x; x++) {
			if (*x == '"' || *x == '\\')
				*q++ = '\\';
			*q++ = *x;
		}
		*q++ = '"';
	}
	*q++ = '}';
	*q = '\0';
	p_int(&pp, c->kind);
	p_text(&pp, arr);
	rc = pq_run(s, P_GET_MANY, &pp, &res, err);
	free(arr);
	if (rc)
		return rc;
	n = pq.PQntuples(res);
	for (int r = 0; r < n; r++) {
		const char *id = pq.PQgetvalue(res, r, 1);
		size_t lo = 0, hi = c->n;
		while (lo < hi) { /* first index in order[] with id >= this one */
			size_t mid = (lo + hi) / 2;
			if (strcmp(c->items[c->order[mid]].id, id) < 0)
				lo = mid + 1;
			else
				hi = mid;
		}
		if (lo == c->n || strcmp(c->items[c->order[lo]].id, id))
			continue;
		if (row_entry(s, res, r, SID__REG_ROW_BY_ID, &c->out[c->order[lo]], err)) {
			pq.PQclear(res);
			return SID_EDATA;
		}
		c->known[c->order[lo]] = 1;
		rc++;
	}
	pq.PQclear(res);
	return rc;
}

static size_t first_count(const struct assign_ctx *c)
{
	size_t k = 0;
	for (size_t i = 0; i < c->n; i++)
		k += c->prev[i] < 0;
	return k;
}

/* Phase 1, outside a transaction: are all ids known?  Then answer. */
static int assign_known(struct pg *s, void *p, struct sid_error *err)
{
	struct assign_ctx *c = p;
	int rc = prefetch(s, c, err);
	if (rc < 0)
		return rc;
	if ((size_t)rc != first_count(c))
		return NOT_ALL;
	for (size_t i = 0; i < c->n; i++)
		if (c->prev[i] >= 0)
			c->out[i] = c->out[c->prev[i]];
	return 0;
}

/* Insert a new id at the smallest free suffix under its codes (the rule of
 * sid__reg_gap, evaluated by the server in the same statement): 1 inserted
 * (e->suffix set), 0 when a unique constraint said no, else an error. */
/* The parameters of P_INSERT_NEW and P_INSERT_NEXT for the new entry @e. */
static void new_params(struct params *p, const struct sid_reg_entry *e, const uint8_t *codes,
		       const float *emb)
{
	p_int(p, e->kind);
	p_text(p, e->id);
	p_bytes(p, codes, 4 * (size_t)e->L);
	p_text(p, e->model_version);
	p_int(p, e->created_ms);
	p_int(p, emb ? e->D : 0);
	p_bytes(p, emb, emb ? sizeof(float) * e->D : 0);
}

static int insert_new(struct pg *s, struct sid_reg_entry *e, const uint8_t *codes, const float *emb,
		      struct sid_error *err)
{
	struct params p = {0};
	PGresult *res;
	int rc, gaps = 1;

	if ((rc = gaps_possible(s, e->kind, &gaps, err)))
		return rc;
	new_params(&p, e, codes, emb);
	rc = pq_run(s, gaps ? P_INSERT_NEW : P_INSERT_NEXT, &p, &res, err);
	if (rc)
		return rc;
	rc = pq.PQntuples(res) == 1;
	if (rc)
		e->suffix = getint(res, 0, 0);
	pq.PQclear(res);
	return rc;
}

#define PIPE_CHUNK 128 /* inserts in flight at once: results never fill the socket */

static void new_entry(struct assign_ctx *c, size_t i)
{
	struct sid_reg_entry *e = &c->out[i];
	memset(e, 0, sizeof(*e));
	e->kind = c->kind;
	strcpy(e->id, c->items[i].id);
	e->L = c->L;
	memcpy(e->codes, c->items[i].codes, sizeof(int32_t) * c->L);
	e->created_ms = e->updated_ms = c->now_ms;
	e->D = c->items[i].emb ? c->D : 0;
	snprintf(e->model_version, sizeof(e->model_version), "%s", c->version);
}

/*
 * Without reassign: insert every new id (a first occurrence not stored) in
 * input order, PIPE_CHUNK statements per round trip (libpq pipeline mode;
 * the server still runs them one after the other, so suffixes follow input
 * order), then let repeated ids copy their first occurrence.
 */
static int assign_new(struct pg *s, struct assign_ctx *c, struct sid_error *err)
{
	size_t first = c->n;
	int rc, gaps = 1, stmt_i = P_INSERT_NEW;

	for (size_t i = 0; i < c->n && first == c->n; i++)
		if (c->prev[i] < 0 && !c->known[i])
			first = i;
	if (first < c->n) {
		rc = levels_ensure(s, c->kind, c->L, err);
		if (rc == 2)
			return sid_error_set_at(err, SID_EINVAL, (long)first,
						"input %zu: the model gives %d levels; the "
						"registry's %s IDs have %d",
						first, c->L, sid_tower_name(c->kind),
						s->levels[c->kind]);
		if (rc || (rc = gaps_possible(s, c->kind, &gaps, err)))
			return rc;
		stmt_i = gaps ? P_INSERT_NEW : P_INSERT_NEXT;
		if ((rc = prepare(s, stmt_i, err)))
			return rc;
	}
	for (size_t start = first; start < c->n; start += PIPE_CHUNK) {
		size_t end = start + PIPE_CHUNK < c->n ? start + PIPE_CHUNK : c->n;
		char name[16];
		PGresult *res;

		snprintf(name, sizeof(name), "semid%d", stmt_i);
		if (!pq.PQenterPipelineMode(s->conn))
			goto broken;
		for (size_t i = start; i < end; i++) {
			const struct sid_reg_item *it = &c->items[i];
			uint8_t codes[SID__REG_CODES_BYTES];
			struct params p = {0};
			if (c->prev[i] >= 0 || c->known[i])
				continue;
			new_entry(c, i);
			sid__reg_codes_pack(it->codes, c->L, codes);
			new_params(&p, &c->out[i], codes, it->emb);
			if (!pq.PQsendQueryPrepared(s->conn, name, p.n, p.v, p.len, p.fmt, 1))
				goto broken;
		}
		if (!pq.PQpipelineSync(s->conn))
			goto broken;
		rc = 0;
		for (size_t i = start; i < end; i++) {
			if (c->prev[i] >= 0 || c->known[i])
				continue;
			res = pq_next(s);
			if (!res)
				goto broken;
			if (pq.PQresultStatus(res) == PGRES_TUPLES_OK && pq.PQntuples(res) == 1) {
				c->out[i].suffix = getint(res, 0, 0);
				c->out[i].created = 1;
			} else if (pq.PQresultStatus(res) == PGRES_TUPLES_OK) {
				if (!rc) { /* a writer without our locks got there first */
					sid_error_set(err, SID_EUNAVAIL,
						      "registry %s: insert lost a race",
						      s->base.label);
					rc = RETRY;
				}
			} else if (!rc && pq.PQresultStatus(res) != PGRES_PIPELINE_ABORTED) {
				rc = pg_fail(s, res, err, "insert");
			}
			pq.PQclear(res);
			if ((res = pq_next(s))) { /* the NULL after each result */
				pq.PQclear(res);
				goto broken;
			}
		}
		res = pq_next(s);
		if (pq.PQresultStatus(res) != PGRES_PIPELINE_SYNC) {
			pq.PQclear(res);
			goto broken;
		}
		pq.PQclear(res);
		if (!pq.PQexitPipelineMode(s->conn))
			goto broken;
		if (rc)
			return rc;
	}
	for (size_t i = 0; i < c->n; i++)
		if (c->prev[i] >= 0) {
			c->out[i] = c->out[c->prev[i]];
			c->out[i].created = c->out[i].moved = c->out[i].from_L = 0;
		}
	return 0;
broken: /* the connection is in an unknown state: drop it, run again */
	rc = sid_error_set(err, SID_EUNAVAIL, "registry %s: pipeline failed: %s", s->base.label,
			   conn_error(s));
	conn_drop(s);
	return rc;
}

/*
 * Run again after a COMMIT whose answer was lost (s->maybe_committed): out[i]
 * found not where @c's expectation put it is where this very call moves it,
 * written by its own earlier run if it holds the codes of items[i] with this
 * call's model_version and time (now_ms is the call's, the same in every
 * run).  It is then answered as moved, as the lost answer would have said:
 * otherwise it said stale, and reassign_all's log never had that move.
 */
static int moved_here(const struct assign_ctx *c, size_t i)
{
	const struct sid_reg_entry *e = &c->out[i];
	return e->updated_ms == c->now_ms && !strcmp(e->model_version, c->version) &&
	       e->L == c->L && !memcmp(e->codes, c->items[i].codes, sizeof(int32_t) * c->L);
}

/*
 * Run again after a COMMIT whose answer was lost: out[i], found stored, was
 * stored by this very call's earlier run if it holds the codes of items[i]
 * with this call's model_version, created and last written at this call's
 * time (now_ms, the same in every run) - what the prefetch read anyway, so
 * no extra round trip.  (Another writer would have to store the same id
 * with the same codes and model in the same millisecond, while this call's
 * commit did not go through, for this to be wrong.)
 */
static int created_here(const struct assign_ctx *c, size_t i)
{
	return c->out[i].created_ms == c->now_ms && moved_here(c, i);
}

static int assign_body(struct pg *s, void *p, struct sid_error *err)
{
	struct assign_ctx *c = p;
	int reassign = c->flags & SID_REG_REASSIGN, levels_ok = 0;
	int rc = prefetch(s, c, err);

	if (rc < 0)
		return rc;
	/* the lost answer would have said created: so does this one */
	for (size_t i = 0; s->maybe_committed && i < c->n; i++)
		if (c->known[i] && created_here(c, i))
			c->out[i].created = 1;
	if (!reassign)
		return assign_new(s, c, err);
	for (size_t i = 0; i < c->n; i++) {
		struct sid_reg_entry *e = &c->out[i];
		const struct sid_reg_item *it = &c->items[i];
		uint8_t codes[SID__REG_CODES_BYTES];
		int found = c->known[i];

		if (c->prev[i] >= 0) { /* the state the earlier occurrence left */
			*e = c->out[c->prev[i]];
			e->created = e->moved = e->stale = e->from_L = 0;
			found = 1;
		}
		if (sid__reg_stale(e, found, c->kind, it->id, c->expect ? &c->expect[i] : NULL)) {
			if (found && s->maybe_committed && moved_here(c, i)) {
				/* from where the caller expected it: this call's own
				 * earlier run moved it from there */
				/* sid__reg_stale answers 0 when c->expect is NULL */
				/* NOLINTNEXTLINE(clang-analyzer-core.NullDereference) */
				struct sid_reg_entry was = c->expect[i];
				sid__reg_moving(&was);
				e->from_L = was.from_L;
				memcpy(e->from_codes, was.from_codes, sizeof(e->from_codes));
				e->from_suffix = was.from_suffix;
				e->stale = 0;
				e->moved = 1;
			}
			continue;
		}
		if (!levels_ok) {
			rc = levels_ensure(s, c->kind, c->L, err);
			if (rc == 2)
				return sid_error_set_at(err, SID_EINVAL, (long)i,
							"input %zu: the model gives %d levels; the "
							"registry's %s IDs have %d",
							i, c->L, sid_tower_name(c->kind),
							s->levels[c->kind]);
			if (rc)
				return rc;
			levels_ok = 1;
		}
		sid__reg_codes_pack(it->codes, c->L, codes);
		if (found) {
			int same =
			    e->L == c->L && !memcmp(e->codes, it->codes, sizeof(int32_t) * c->L);
			if (!same)
				sid__reg_moving(e);
			if (!same && ((rc = leaving(s, c->kind, err)) ||
				      (rc = free_suffix(s, c->kind, codes, c->L, &e->suffix, err))))
				return rc;
			/* the stored embedding is the input of the codes now stored
			 * (registry_sqlite.c): replaced, or dropped when none is given */
			int drop = !it->emb && e->D && !(c->flags & SID_REG_STORED_EMB);
			rc = update_row(s, c->kind, it->id, codes, c->L, e->suffix, c->version,
					c->now_ms, it->emb, c->D, drop, err);
			if (rc) /* a unique violation here is a race: RETRY */
				return rc;
			e->moved = !same;
			if (it->emb || drop)
				e->D = it->emb ? c->D : 0;
		} else {
			new_entry(c, i);
			rc = insert_new(s, e, codes, it->emb, err);
			if (rc < 0)
				return rc;
			if (rc == 0) { /* a writer without our locks got there first */
				sid_error_set(err, SID_EUNAVAIL, "registry %s: insert lost a race",
					      s->base.label);
				return RETRY;
			}
			e->created = 1;
		}
		e->L = c->L;
		memcpy(e->codes, it->codes, sizeof(int32_t) * c->L);
		e->updated_ms = c->now_ms;
		snprintf(e->model_version, sizeof(e->model_version), "%s", c->version);
	}
	return 0;
}

struct group {
	struct assign_ctx *c; /* (nq) */
	struct sid__reg_req *const *q;
	size_t nq;
	int *pending; /* (nq) 1: needs the write transaction, 2: answered by reads */
	int *res;     /* (nq) its result inside the transaction */
};

/*
 * Run again after a COMMIT whose answer was lost (s->maybe_committed): an id
 * that several calls of the group hold is found stored with the group's
 * codes, model and time by each of them (created_here), but only the first
 * of them stored it, the later ones finding it stored.  So call @i's id
 * that an earlier call of the group holds, one that went through, is not
 * created by call @i (that earlier call held it stored, or stored it).
 */
static void created_once(struct group *g, size_t i)
{
	struct assign_ctx *c = &g->c[i];

	for (size_t r = 0; r < c->n; r++)
		for (size_t k = 0; k < i && c->out[r].created; k++) {
			const struct assign_ctx *o = &g->c[k];
			if (g->pending[k] != 1 || g->res[k] || o->kind != c->kind)
				continue;
			for (size_t m = 0; m < o->n; m++)
				if (!strcmp(o->items[m].id, c->items[r].id)) {
					c->out[r].created = 0;
					break;
				}
		}
}

/* The write transaction of a group: all locks at once, then each call
 * under a savepoint so a call's own SID_EINVAL (or SID_EDATA: a stored row
 * of its ids that cannot be read) undoes only that call. */
static int group_body(struct pg *s, void *p, struct sid_error *err)
{
	struct group *g = p;
	size_t nkeys = 0;
	int64_t *keys;
	int rc;

	for (size_t i = 0; i < g->nq; i++)
		nkeys += g->pending[i] == 1 ? 2 * g->c[i].n : 0;
	keys = malloc(sizeof(*keys) * (nkeys ? nkeys : 1));
	if (!keys)
		return sid_error_set(err, SID_ENOMEM, "registry: out of memory");
	nkeys = 0;
	for (size_t i = 0; i < g->nq; i++)
		if (g->pending[i] == 1) {
			batch_keys(g->c[i].kind, g->c[i].items, NULL, g->c[i].n, g->c[i].L,
				   keys + nkeys);
			nkeys += 2 * g->c[i].n;
		}
	rc = lock_keys(s, keys, nkeys, err);
	free(keys);
	for (size_t i = 0; !rc && i < g->nq; i++) {
		if (g->pending[i] != 1)
			continue;
		g->res[i] = 0;
		if ((rc = pq_exec(s, "SAVEPOINT call", err)))
			break;
		g->res[i] = assign_body(s, &g->c[i], &g->q[i]->err);
		if (g->res[i] == SID_EINVAL || g->res[i] == SID_EDATA) { /* its own */
			rc = pq_exec(s, "ROLLBACK TO SAVEPOINT call", err);
			forget_cached(s);
		} else if (g->res[i]) {
			rc = g->res[i];
			*err = g->q[i]->err;
		} else if (s->maybe_committed) {
			created_once(g, i);
		}
	}
	return rc;
}

static void pg_assign(struct sid_registry *r, struct sid__reg_req *const *q, size_t nq,
		      int64_t now_ms)
{
	struct pg *s = (struct pg *)r;
	struct group g = {.q = q, .nq = nq};
	struct sid_error gerr;
	size_t writers = 0;
	int rc = 0;

	sid_error_clear(&gerr);
	g.c = calloc(nq, sizeof(*g.c));
	g.pending = calloc(nq, sizeof(*g.pending));
	g.res = calloc(nq, sizeof(*g.res));
	if (!g.c || !g.pending || !g.res)
		rc = sid_error_set(&gerr, SID_ENOMEM, "registry: out of memory");
	for (size_t i = 0; !rc && i < nq; i++) {
		struct assign_ctx *c = &g.c[i];
		*c = (struct assign_ctx){.kind = q[i]->kind,
					 .items = q[i]->items,
					 .n = q[i]->n,
					 .L = q[i]->L,
					 .D = q[i]->D,
					 .version = q[i]->version,
					 .flags = q[i]->flags,
					 .now_ms = now_ms,
					 .out = q[i]->out,
					 .expect = q[i]->expect};
		c->order = malloc(c->n * sizeof(*c->order));
		c->prev = malloc(c->n * sizeof(*c->prev));
		c->known = malloc(c->n * sizeof(*c->known));
		if (!c->order || !c->prev || !c->known) {
			rc = sid_error_set(&gerr, SID_ENOMEM, "registry: out of memory");
			break;
		}
		batch_index(c);
		if (!(c->flags & SID_REG_REASSIGN)) {
			int k = with_retries(s, 0, assign_known, c, &q[i]->err);
			if (k != NOT_ALL) {
				q[i]->rc = k;
				g.pending[i] = 2;
				continue;
			}
		}
		g.pending[i] = 1;
		writers++;
	}
	if (!rc && writers)
		rc = with_retries(s, 1, group_body, &g, &gerr);
	for (size_t i = 0; i < nq; i++) {
		if (g.pending && g.pending[i] == 2)
			continue; /* answered without a write */
		if (rc) {
			q[i]->rc = gerr.code ? gerr.code : rc;
			q[i]->err = gerr;
		} else {
			q[i]->rc = g.res[i];
		}
	}
	for (size_t i = 0; g.c && i < nq; i++) {
		free(g.c[i].order);
		free(g.c[i].prev);
		free(g.c[i].known);
	}
	free(g.c);
	free(g.pending);
	free(g.res);
}

struct get_ctx {
	int kind;
	const char *id;
	const uint8_t *codes;
	int L;
	int64_t suffix;
	struct sid_reg_entry *out;
};

static int get_body(struct pg *s, void *p, struct sid_error *err)
{
	struct get_ctx *c = p;
	int rc = c->id ? get_row(s, c->kind, c->id, c->out, err)
		       : get_sid_row(s, c->kind, c->codes, c->L, c->suffix, c->out, err);
	if (rc == 0)
		return SID_ENOTFOUND;
	return rc == 1 ? 0 : rc;
}

static int pg_get(struct sid_registry *r, int kind, const char *id, struct sid_reg_entry *out,
		  struct sid_error *err)
{
	struct get_ctx c = {kind, id, NULL, 0, 0, out};
	int rc = with_retries((struct pg *)r, 0, get_body, &c, err);
	if (rc == SID_ENOTFOUND)
		return sid_error_set(err, rc, "%s id \"%s\": not found", sid_tower_name(kind), id);
	return rc;
}

static int pg_get_sid(struct sid_registry *r, int kind, const int32_t *codes, int L, int64_t suffix,
		      struct sid_reg_entry *out, struct sid_error *err)
{
	uint8_t packed[SID__REG_CODES_BYTES];
	struct get_ctx c = {kind, NULL, packed, L, suffix, out};
	char sid[SID_REG_SID_MAX];
	int rc;

	sid__reg_codes_pack(codes, L, packed);
	rc = with_retries((struct pg *)r, 0, get_body, &c, err);
	if (rc == SID_ENOTFOUND) {
		sid_reg_sid_format(codes, L, suffix, sid, sizeof(sid));
		return sid_error_set(err, rc, "%s sid %s: not found", sid_tower_name(kind), sid);
	}
	return rc;
}

static int pg_get_many(struct sid_registry *r, int kind, const struct sid_reg_item *items, size_t n,
		       struct sid_reg_entry *out, size_t *missing, struct sid_error *err)
{
	/* assign_known's read: one statement, so one snapshot */
	struct assign_ctx c = {.kind = kind, .items = items, .n = n, .out = out};
	int rc;

	c.order = malloc((n ? n : 1) * sizeof(*c.order));
	c.prev = malloc((n ? n : 1) * sizeof(*c.prev));
	c.known = malloc((n ? n : 1) * sizeof(*c.known));
	if (!c.order || !c.prev || !c.known)
		rc = sid_error_set(err, SID_ENOMEM, "registry: out of memory");
	else {
		batch_index(&c);
		rc = with_retries((struct pg *)r, 0, assign_known, &c, err);
	}
	if (rc == NOT_ALL) {
		*missing = 0;
		while (*missing < n && (c.prev[*missing] >= 0 || c.known[*missing]))
			++*missing;
		rc = SID_ENOTFOUND;
	}
	free(c.order);
	free(c.prev);
	free(c.known);
	return rc;
}

struct list_ctx {
	int kind;
	const uint8_t *lo, *hi, *after;
	size_t lo_len, hi_len, after_len;
	int64_t after_suffix;
	size_t limit;
	struct sid_reg_entry *out;
	size_t *n_out;
};

static int list_body(struct pg *s, void *p, struct sid_error *err)
{
	struct list_ctx *c = p;
	struct params q = {0};
	PGresult *res;
	int rc, n;

	p_int(&q, c->kind);
	p_bytes(&q, c->lo_len ? (const void *)c->lo : "", c->lo_len);
	p_bytes(&q, c->hi, c->hi_len);
	p_bytes(&q, c->after_len ? (const void *)c->after : "", c->after_len);
	p_int(&q, c->after_suffix);
	p_int(&q, (int64_t)c->limit);
	rc = pq_run(s, P_LIST, &q, &res, err);
	if (rc)
		return rc;
	n = pq.PQntuples(res);
	*c->n_out = 0;
	for (int i = 0; i < n && (size_t)i < c->limit; i++) {
		if (row_entry(s, res, i, SID__REG_ROW_ANY, &c->out[i], err)) {
			rc = SID_EDATA;
			break;
		}
		(*c->n_out)++;
	}
	pq.PQclear(res);
	return rc;
}

static int pg_list(struct sid_registry *r, int kind, const uint8_t *lo, size_t lo_len,
		   const uint8_t *hi, size_t hi_len, const uint8_t *after, size_t after_len,
		   int64_t after_suffix, size_t limit, struct sid_reg_entry *out, size_t *n_out,
		   struct sid_error *err)
{
	struct list_ctx c = {kind,	lo,	      hi,    after, lo_len, hi_len,
			     after_len, after_suffix, limit, out,   n_out};
	return with_retries((struct pg *)r, 0, list_body, &c, err);
}

struct levels_ctx {
	int kind, *L;
};

static int levels_body(struct pg *s, void *p, struct sid_error *err)
{
	struct levels_ctx *c = p;
	return levels_get(s, c->kind, c->L, err);
}

static int pg_levels(struct sid_registry *r, int kind, int *L, struct sid_error *err)
{
	struct levels_ctx c = {kind, L};
	return with_retries((struct pg *)r, 0, levels_body, &c, err);
}

static int ping_body(struct pg *s, void *p, struct sid_error *err)
{
	int L;
	(void)p;
	return levels_read(s, SID_TOWER_ITEM, &L, err);
}

static int pg_ping(struct sid_registry *r, struct sid_error *err)
{
	return with_retries((struct pg *)r, 0, ping_body, NULL, err);
}

/*
 * The store's own structure, with PostgreSQL's amcheck extension when the
 * database has it (CREATE EXTENSION amcheck, by a superuser) and the user
 * may run its functions: bt_index_check of both unique indexes, each entry
 * of the table looked for in them (heapallindexed), and verify_heapam of the
 * table.  Whatever they report (amcheck raises XX001/XX002 for a damaged
 * index; verify_heapam returns a row a problem) is a finding.  Without it,
 * the store is not checked and @how says why.
 */
struct check_store_ctx {
	sid_reg_finding_fn fn;
	void *ctx;
	int *checked;
	char *how;
	size_t how_len;
};

static int check_store_body(struct pg *s, void *p, struct sid_error *err)
{
	/* bt_index_check raises a problem; verify_heapam returns a row each
	 * (@rows), none when the table is sound */
	static const struct {
		const char *sql;
		int rows;
	} checks[] = {{"SELECT bt_index_check('semid_assignment_id'::regclass, true)", 0},
		      {"SELECT bt_index_check('semid_assignment_sid'::regclass, true)", 0},
		      {"SELECT coalesce(blkno::text, ''), coalesce(offnum::text, ''), msg"
		       " FROM verify_heapam('semid_assignment')",
		       1}};
	struct check_store_ctx *c = p;
	struct sid_reg_finding f = {SID_REG_P_STORE, -1, -1, NULL, NULL};
	char msg[SID_ERROR_MSG_MAX], version[32];
	PGresult *res;
	int rc = 0;

	res = pq_params(s, "SELECT extversion FROM pg_extension WHERE extname = 'amcheck'", 0, NULL,
			0);
	if (pq.PQresultStatus(res) != PGRES_TUPLES_OK) {
		rc = pg_fail(s, res, err, "check");
		pq.PQclear(res);
		return rc;
	}
	if (!pq.PQntuples(res)) {
		pq.PQclear(res);
		snprintf(c->how, c->how_len,
			 "not checked: the database has no amcheck extension (CREATE EXTENSION "
			 "amcheck, as a superuser, lets check use it)");
		return 0;
	}
	snprintf(version, sizeof(version), "%s", pq.PQgetvalue(res, 0, 0));
	pq.PQclear(res);
	for (size_t i = 0; i < sizeof(checks) / sizeof(checks[0]) && !rc; i++) {
		const char *state;
		res = pq_params(s, checks[i].sql, 0, NULL, 0);
		state = pq.PQresultErrorField(res, PG_DIAG_SQLSTATE);
		if (pq.PQresultStatus(res) == PGRES_TUPLES_OK) {
			for (int r = 0; checks[i].rows && r < pq.PQntuples(res) && !rc; r++) {
				snprintf(msg, sizeof(msg),
					 "registry %s: verify_heapam: semid_assignment block %s "
					 "offset %s: %s",
					 s->base.label, pq.PQgetvalue(res, r, 0),
					 pq.PQgetvalue(res, r, 1), pq.PQgetvalue(res, r, 2));
				f.message = msg;
				rc = c->fn(&f, c->ctx);
			}
		} else if (state && (!strcmp(state, "42501") || !strcmp(state, "42883"))) {
			/* insufficient_privilege; undefined_function: an older amcheck, or
			 * in another schema */
			snprintf(
			    c->how, c->how_len, "not checked: amcheck %s is there, but %s", version,
			    strcmp(state, "42501")
				? "without a function the check uses (verify_heapam came with "
				  "amcheck 1.3, PostgreSQL 14), or in a schema not on this "
				  "user's search_path"
				: "this user may not run it (GRANT EXECUTE ON FUNCTION "
				  "bt_index_check(regclass, boolean) and verify_heapam(regclass, "
				  "boolean, boolean, text, bigint, bigint) TO it)");
			pq.PQclear(res);
			return 0;
		} else if (state &&
			   !strncmp(state, "XX", 2)) { /* data_corrupted, index_corrupted */
			/* its message, detail and hint without the "ERROR:  " and
			 * the line breaks of PQresultErrorMessage */
			const char *m = pq.PQresultErrorField(res, PG_DIAG_MESSAGE_PRIMARY),
				   *det = pq.PQresultErrorField(res, PG_DIAG_MESSAGE_DETAIL),
				   *hint = pq.PQresultErrorField(res, PG_DIAG_MESSAGE_HINT);
			if (!m)
				m = pq.PQresultErrorMessage(res);
			snprintf(msg, sizeof(msg), "registry %s: amcheck: %.*s%s%s%s%s%s",
				 s->base.label, (int)strcspn(m, "\n"), m, det ? "; " : "",
				 det ? det : "", hint ? " (hint: " : "", hint ? hint : "",
				 hint ? ")" : "");
			f.message = msg;
			rc = c->fn(&f, c->ctx);
		} else {
			rc = pg_fail(s, res, err, "check");
		}
		pq.PQclear(res);
	}
	if (!rc) {
		*c->checked = 1;
		snprintf(c->how, c->how_len,
			 "amcheck %s: bt_index_check (heapallindexed) of both indexes, "
			 "verify_heapam of the table",
			 version);
	}
	return rc;
}

static int pg_check_store(struct sid_registry *r, sid_reg_finding_fn fn, void *ctx, int *checked,
			  char *how, size_t how_len, struct sid_error *err)
{
	struct check_store_ctx c = {fn, ctx, checked, how, how_len};
	return with_retries((struct pg *)r, 0, check_store_body, &c, err);
}

struct foreach_ctx {
	int kind, want_emb;
	sid_reg_foreach_fn fn;
	sid_reg_finding_fn bad; /* the foreach op's */
	void *ctx;
	int called; /* the walk already reached the callback: no retry */
};

/* A row a tolerant walk cannot read (or its embedding), told to c->bad
 * with the message a walk stops with (in *err). */
static int pg_bad(struct foreach_ctx *c, const PGresult *res, int row, enum sid_reg_problem problem,
		  const struct sid_error *err)
{
	char id[SID_REG_ID_MAX + 1];
	struct sid_reg_finding f = {problem, (int)getint(res, row, 0), -1, NULL, err->msg};

	if (pq.PQgetlength(res, row, 1) <= SID_REG_ID_MAX) {
		memcpy(id, pq.PQgetvalue(res, row, 1), pq.PQgetlength(res, row, 1) + 1);
		if (!sid_reg_id_check(id, NULL))
			f.id = id;
	}
	c->called = 1;
	return c->bad(&f, c->ctx);
}

static int foreach_body(struct pg *s, void *p, struct sid_error *err)
{
	struct foreach_ctx *c = p;
	char sql[512];
	float *buf = NULL;
	int rc, cap = 0;

	if (c->called)
		return sid_error_set(err, SID_EUNAVAIL,
				     "registry %s: connection lost during a walk", s->base.label);
	snprintf(sql, sizeof(sql),
		 "DECLARE semid_walk NO SCROLL CURSOR FOR SELECT %s%s FROM semid_assignment %s"
		 " ORDER BY kind, codes, suffix",
		 c->want_emb == SID__REG_WALK_CODES
		     ? "kind, ''::text, codes, suffix, ''::text, 0::bigint, 0::bigint, 0::integer"
		     : COLS,
		 c->want_emb == 1 ? ", embedding" : "", c->kind >= 0 ? "WHERE kind = $1" : "");
	{
		struct params q = {0};
		PGresult *res;
		p_int(&q, c->kind);
		res = pq_params(s, sql, c->kind >= 0 ? 1 : 0, q.v, 1);
		if (pq.PQresultStatus(res) != PGRES_COMMAND_OK) {
			rc = pg_fail(s, res, err, "walk");
			pq.PQclear(res);
			return rc;
		}
		pq.PQclear(res);
	}
	for (;;) {
		PGresult *res = pq_params(s, "FETCH 1000 FROM semid_walk", 0, NULL, 1);
		int n;
		if (pq.PQresultStatus(res) != PGRES_TUPLES_OK) {
			rc = pg_fail(s, res, err, "walk");
			pq.PQclear(res);
			goto out;
		}
		n = pq.PQntuples(res);
		for (int i = 0; i < n; i++) {
			struct sid_reg_entry e;
			const float *emb = NULL;
			if (row_entry(s, res, i,
				      c->want_emb == SID__REG_WALK_CODES ? SID__REG_ROW_CODES
									 : SID__REG_ROW_ANY,
				      &e, err)) {
				rc = SID_EDATA;
				if (c->bad && !(rc = pg_bad(c, res, i, SID_REG_P_UNREADABLE, err)))
					continue;
				pq.PQclear(res);
				goto out;
			}
			if (c->want_emb == 1 && !pq.PQgetisnull(res, i, 8)) {
				int bytes = pq.PQgetlength(res, i, 8);
				if (bytes != (int)sizeof(float) * e.D || e.D < 1) {
					rc = sid_error_set(err, SID_EDATA,
							   "registry %s: id %s: embedding of %d "
							   "bytes, want %d",
							   s->base.label, e.id, bytes,
							   (int)sizeof(float) * e.D);
					if (c->bad &&
					    !(rc = pg_bad(c, res, i, SID_REG_P_EMBEDDING, err)))
						continue;
					pq.PQclear(res);
					goto out;
				}
				if (e.D > cap) {
					float *nb = realloc(buf, sizeof(float) * e.D);
					if (!nb) {
						pq.PQclear(res);
						rc = sid_error_set(err, SID_ENOMEM,
								   "walk: out of memory");
						goto out;
					}
					buf = nb;
					cap = e.D;
				}
				memcpy(buf, pq.PQgetvalue(res, i, 8), bytes);
				emb = buf;
			}
			c->called = 1;
			rc = c->fn(&e, emb, c->ctx);
			if (rc) {
				pq.PQclear(res);
				goto out;
			}
		}
		pq.PQclear(res);
		if (n < FETCH_ROWS)
			break;
	}
	rc = 0;
out:
	free(buf);
	return rc;
}

static int pg_foreach(struct sid_registry *r, int kind, int want_emb, sid_reg_foreach_fn fn,
		      sid_reg_finding_fn bad, void *ctx, struct sid_error *err)
{
	struct foreach_ctx c = {kind, want_emb, fn, bad, ctx, 0};
	int rc = with_retries((struct pg *)r, 1, foreach_body, &c, err);
	return rc == RETRY ? SID_EUNAVAIL : rc;
}

struct count_ctx {
	int kind, with_emb;
	uint64_t *n;
};

static int count_body(struct pg *s, void *p, struct sid_error *err)
{
	struct count_ctx *c = p;
	char kind[8], sql[160];
	const char *v[1] = {kind};
	PGresult *res;
	int rc = 0;

	snprintf(kind, sizeof(kind), "%d", c->kind);
	sid__reg_count_sql(sql, sizeof(sql), c->kind, c->with_emb, "$1");
	res = pq_params(s, sql, c->kind >= 0, v, 0);
	if (pq.PQresultStatus(res) == PGRES_TUPLES_OK && pq.PQntuples(res) == 1)
		*c->n = strtoull(pq.PQgetvalue(res, 0, 0), NULL, 10);
	else
		rc = pg_fail(s, res, err, "count");
	pq.PQclear(res);
	return rc;
}

static int pg_count(struct sid_registry *r, int kind, int with_emb, uint64_t *n,
		    struct sid_error *err)
{
	struct count_ctx c = {kind, with_emb, n};
	return with_retries((struct pg *)r, 0, count_body, &c, err);
}

struct import_ctx {
	const struct sid_reg_entry *e;
	const float *const *emb;
	size_t n;
	int *status;
	struct sid_reg_entry *existing;
};

static int import_body(struct pg *s, void *p, struct sid_error *err)
{
	struct import_ctx *c = p;
	int64_t *keys = malloc(sizeof(*keys) * 2 * (c->n ? c->n : 1));
	int lrc;

	if (!keys)
		return sid_error_set(err, SID_ENOMEM, "registry: out of memory");
	batch_keys(0, NULL, c->e, c->n, 0, keys);
	lrc = lock_keys(s, keys, 2 * c->n, err);
	free(keys);
	if (lrc)
		return lrc;
	for (size_t i = 0; i < c->n; i++) {
		const struct sid_reg_entry *e = &c->e[i];
		uint8_t codes[SID__REG_CODES_BYTES];
		int rc = levels_ensure(s, e->kind, e->L, err);

		if (rc == 2) {
			c->status[i] = SID__REG_IMPORT_CONFLICT_LEVELS;
			/* the stored IDs' levels, for the message */
			if ((rc = levels_get(s, e->kind, &c->existing[i].L, err)))
				return rc;
			continue;
		}
		if (rc)
			return rc;
		sid__reg_codes_pack(e->codes, e->L, codes);
		{
			int64_t max;
			rc = max_suffix(s, e->kind, codes, e->L, &max, err);
			if (!rc && e->suffix - 1 > max) /* max + 1 overflows at INT64_MAX */
				rc = gaps_mark(s, e->kind, err);
			if (rc)
				return rc;
		}
		rc = insert_row(s, e, codes, c->emb[i], err);
		if (rc < 0)
			return rc;
		if (rc == 1) {
			c->status[i] = SID__REG_IMPORT_ADDED;
			continue;
		}
		rc = get_row(s, e->kind, e->id, &c->existing[i], err);
		if (rc < 0)
			return rc;
		if (rc == 1) {
			const struct sid_reg_entry *x = &c->existing[i];
			c->status[i] = x->L == e->L && x->suffix == e->suffix &&
					       !memcmp(x->codes, e->codes, sizeof(int32_t) * e->L)
					   ? SID__REG_IMPORT_SAME
					   : SID__REG_IMPORT_CONFLICT_ID;
			continue;
		}
		rc = get_sid_row(s, e->kind, codes, e->L, e->suffix, &c->existing[i], err);
		if (rc < 0)
			return rc;
		if (rc == 0)
			return RETRY; /* the holder vanished (rolled back): again */
		c->status[i] = SID__REG_IMPORT_CONFLICT_SID;
	}
	return 0;
}

static int pg_import(struct sid_registry *r, const struct sid_reg_entry *e, const float *const *emb,
		     size_t n, int *status, struct sid_reg_entry *existing, struct sid_error *err)
{
	struct import_ctx c = {e, emb, n, status, existing};
	struct pg *s = (struct pg *)r;
	return with_retries(s, 1, import_body, &c, err);
}

struct delete_ctx {
	int kind;
	const char *const *ids;
	size_t n;
	struct sid_reg_entry *out;
};

/*
 * Locked as assign locks: the global key shared, then each id's key and the
 * key of the code tuple it holds (read first; a writer that moves it in
 * between holds the id's key, so the row is stable once ours is taken, and
 * the tuple key only queues the delete behind inserters of that tuple).
 * Then each row goes, its embedding with it (one column), and the kind's
 * gaps flag is set, as for any slot left on PostgreSQL (leaving).  A row
 * that cannot be read goes too, locked by its id's key only: its tuple is
 * not known, and no inserter can hold codes that do not read.
 */
static int delete_body(struct pg *s, void *p, struct sid_error *err)
{
	struct delete_ctx *c = p;
	int64_t *keys = malloc(sizeof(*keys) * 2 * c->n);
	size_t nkeys = 0, deleted = 0;
	int rc = 0;

	if (!keys)
		return sid_error_set(err, SID_ENOMEM, "registry: out of memory");
	for (size_t i = 0; i < c->n; i++) {
		struct sid_reg_entry e;
		keys[nkeys++] = key_hash(c->kind, 'i', c->ids[i], strlen(c->ids[i]));
		rc = get_row(s, c->kind, c->ids[i], &e, err);
		if (rc == SID_EDATA) /* unreadable: its tuple is not known */
			sid_error_clear(err);
		else if (rc < 0)
			break;
		if (rc == 1) {
			uint8_t codes[SID__REG_CODES_BYTES];
			/* get_row answers 1 only after filling e */
			/* NOLINTNEXTLINE(clang-analyzer-core.CallAndMessage) */
			sid__reg_codes_pack(e.codes, e.L, codes);
			keys[nkeys++] = key_hash(c->kind, 'c', codes, 4 * (size_t)e.L);
		}
		rc = 0;
	}
	if (!rc)
		rc = lock_keys(s, keys, nkeys, err);
	free(keys);
	for (size_t i = 0; !rc && i < c->n; i++) {
		struct params q = {0};
		p_int(&q, c->kind);
		p_text(&q, c->ids[i]);
		rc = fetch_one(s, P_DELETE, &q, SID__REG_ROW_BY_ID, &c->out[i], err);
		if (rc == SID_EDATA) {
			/* a row that cannot be read is erased all the same
			 * (an erasure must not wait for a repair by hand); the
			 * answer has its kind and id only */
			sid__reg_absent(&c->out[i], c->kind, c->ids[i]);
			sid_error_clear(err);
			rc = 1;
		}
		if (rc < 0)
			break;
		if (rc == 0 && s->maybe_committed && c->out[i].deleted) {
			/* Run again after a COMMIT whose answer was lost: the
			 * earlier run found it, so that commit erased it.  Answered
			 * as the lost answer would have been, its sid kept: it was
			 * answered "not found", and the delete's log, the only
			 * record of the sids erased, lost them. */
			rc = 0;
			continue;
		}
		if (rc == 0) /* (a run before may have filled it) */
			sid__reg_absent(&c->out[i], c->kind, c->ids[i]);
		c->out[i].deleted = rc;
		deleted += rc;
		rc = 0;
	}
	if (!rc && deleted)
		rc = leaving(s, c->kind, err);
	return rc;
}

static int pg_delete(struct sid_registry *r, int kind, const char *const *ids, size_t n,
		     struct sid_reg_entry *out, struct sid_error *err)
{
	struct delete_ctx c = {kind, ids, n, out};
	return with_retries((struct pg *)r, 1, delete_body, &c, err);
}

static void pg_close(struct sid_registry *r)
{
	struct pg *s = (struct pg *)r;
	conn_drop(s);
	free(s->conninfo);
	free(s->base.label);
	free(s);
}

static const struct sid__reg_ops pg_ops = {
    .name = "postgresql",
    .close = pg_close,
    .assign = pg_assign,
    .get = pg_get,
    .get_many = pg_get_many,
    .get_sid = pg_get_sid,
    .list = pg_list,
    .levels = pg_levels,
    .ping = pg_ping,
    .foreach = pg_foreach,
    .count = pg_count,
    .import = pg_import,
    .delete_ids = pg_delete,
    .check_store = pg_check_store,
};

/*
 * No registry on the session's search_path: refused when another schema of
 * the database holds one.  Creating a second one there (a role or database
 * given another search_path, one server of a fleet configured apart) gave
 * out IDs the first already held, and known ids new ones.  A schema the role
 * may not use (no USAGE) is left out of the search path by PostgreSQL, so a
 * registry there is refused by naming the missing privilege: "put it on the
 * search_path" was no help when it was on it already.
 */
static int registry_elsewhere(struct pg *s, struct sid_error *err)
{
	PGresult *res =
	    pq_query(s, "SELECT string_agg(quote_ident(n.nspname), ', ' ORDER BY n.nspname)"
			" FILTER (WHERE has_schema_privilege(n.oid, 'USAGE')),"
			" string_agg(quote_ident(n.nspname), ', ' ORDER BY n.nspname)"
			" FILTER (WHERE NOT has_schema_privilege(n.oid, 'USAGE')),"
			" current_setting('search_path'), quote_ident(current_user)"
			" FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace"
			" WHERE c.relname = 'semid_meta' AND c.relkind = 'r'");
	int rc = 0;

	if (pq.PQresultStatus(res) != PGRES_TUPLES_OK || pq.PQntuples(res) != 1)
		rc = pg_fail(s, res, err, "look for a registry in other schemas");
	else if (!pq.PQgetisnull(res, 0, 0))
		rc = sid_error_set(err, SID_EFORMAT,
				   "registry %s: no semid registry on this session's search_path "
				   "(%s), but schema %s of the database holds one; put it on the "
				   "search_path (ALTER ROLE ... SET search_path, or "
				   "options=-csearch_path=... in the connection string): a second "
				   "registry here would give out IDs the first already holds",
				   s->base.label, pq.PQgetvalue(res, 0, 2),
				   pq.PQgetvalue(res, 0, 0));
	else if (!pq.PQgetisnull(res, 0, 1))
		rc =
		    sid_error_set(err, SID_EIO,
				  "registry %s: schema %s of the database holds a semid registry, "
				  "but role %s may not use the schema (no USAGE privilege); GRANT "
				  "USAGE ON SCHEMA %s TO %s, and SELECT, INSERT, UPDATE, DELETE on "
				  "its tables",
				  s->base.label, pq.PQgetvalue(res, 0, 1), pq.PQgetvalue(res, 0, 3),
				  pq.PQgetvalue(res, 0, 1), pq.PQgetvalue(res, 0, 3));
	pq.PQclear(res);
	return rc;
}

/* Create or migrate the schema, one process at a time (advisory lock).  A
 * read-only open does neither and takes no lock: it reads the committed
 * version and refuses one it cannot read, so that a `semid registry stats`
 * neither waits for a server migrating the schema nor holds one up. */
static int migrate_body(struct pg *s, struct sid_error *err)
{
	PGresult *res;
	int version = 0, rc;

	if (!(s->base.open_flags & SID_REG_READONLY) &&
	    (rc = pq_exec(s, "SELECT pg_advisory_xact_lock(" LOCK_KEY ")", err)))
		return rc;
	res = pq_query(s, "SELECT to_regclass('semid_meta') IS NOT NULL");
	if (pq.PQresultStatus(res) != PGRES_TUPLES_OK || pq.PQntuples(res) != 1) {
		rc = pg_fail(s, res, err, "read schema version");
		pq.PQclear(res);
		return rc;
	}
	rc = pq.PQgetvalue(res, 0, 0)[0] == 't';
	pq.PQclear(res);
	if (!rc && (rc = registry_elsewhere(s, err)))
		return rc;
	if (rc) {
		res = pq_query(s, "SELECT value FROM semid_meta WHERE key = 'schema_version'");
		if (pq.PQresultStatus(res) != PGRES_TUPLES_OK || pq.PQntuples(res) != 1) {
			rc = pq.PQresultStatus(res) == PGRES_TUPLES_OK
				 ? sid_error_set(err, SID_EFORMAT,
						 "registry %s: semid_meta has no schema_version",
						 s->base.label)
				 : pg_fail(s, res, err, "read schema version");
			pq.PQclear(res);
			return rc;
		}
		version = sid__reg_schema_parse(pq.PQgetvalue(res, 0, 0));
		pq.PQclear(res);
		if (version < 0) /* never an index into migrations[] */
			return sid_error_set(err, SID_EFORMAT,
					     "registry %s: its schema_version is not a version "
					     "number",
					     s->base.label);
	}
	if (version > SCHEMA_VERSION)
		return sid__reg_schema_ahead(err, s->base.label, version, SCHEMA_VERSION);
	if (version < SCHEMA_VERSION && (s->base.open_flags & SID_REG_READONLY)) {
		/* reading never creates or migrates (as with SQLite) */
		if (!version)
			return sid_error_set(err, SID_ENOTFOUND,
					     "registry %s: this database holds no semid registry "
					     "(nothing to read)",
					     s->base.label);
		return sid_error_set(err, SID_EFORMAT,
				     "registry %s: schema version %d is older than this build's "
				     "%d; open the store for writing once (semid-server, semid "
				     "registry import) to migrate it",
				     s->base.label, version, SCHEMA_VERSION);
	}
	for (; version < SCHEMA_VERSION; version++) {
		/* named, not quoted: the SQL would crowd the reason (a missing
		 * CREATE privilege) out of the message */
		char sql[96], what[64];
		snprintf(what, sizeof(what), "create the schema (version %d)", version + 1);
		if (version)
			snprintf(what, sizeof(what), "migrate the schema from version %d to %d",
				 version, version + 1);
		rc = pq_exec_what(s, migrations[version], what, err);
		snprintf(sql, sizeof(sql),
			 "UPDATE semid_meta SET value = '%d' WHERE key = 'schema_version'",
			 version + 1);
		if (!rc)
			rc = pq_exec_what(s, sql, what, err);
		if (rc)
			return rc;
	}
	/* the registry's uniqueness rests on these two constraints: a store
	 * that lost one would hand out one full ID twice without a word; a
	 * store that lost the whole table (a DROP TABLE) is named so, not by
	 * its first constraint */
	res = pq_query(
	    s, "SELECT c.name, EXISTS (SELECT 1 FROM pg_constraint"
	       " WHERE conrelid = to_regclass('semid_assignment') AND conname = c.name"
	       " AND contype IN ('p', 'u')), to_regclass('semid_assignment') IS NOT NULL"
	       " FROM (VALUES ('semid_assignment_id'), ('semid_assignment_sid')) AS c(name)");
	if (pq.PQresultStatus(res) != PGRES_TUPLES_OK || pq.PQntuples(res) != 2) {
		rc = pg_fail(s, res, err, "check the schema");
		pq.PQclear(res);
		return rc;
	}
	if (pq.PQgetvalue(res, 0, 2)[0] != 't') {
		pq.PQclear(res);
		return sid_error_set(err, SID_EFORMAT,
				     "registry %s: damaged schema: the table semid_assignment is "
				     "missing, though semid_meta is there (restore a backup, or "
				     "import an export into a new store)",
				     s->base.label);
	}
	for (int k = 0; k < 2; k++)
		if (pq.PQgetvalue(res, k, 1)[0] != 't') {
			rc = sid_error_set(err, SID_EFORMAT,
					   "registry %s: damaged schema: the unique constraint %s "
					   "is missing (restore a backup, or import an export into "
					   "a new store)",
					   s->base.label, pq.PQgetvalue(res, k, 0));
			pq.PQclear(res);
			return rc;
		}
	pq.PQclear(res);
	return 0;
}

/* "postgresql://user@host:port/dbname", without the password, and
 * "?service=NAME" when the string names a service (whose file says the
 * rest: without it a bare service=NAME would read "postgresql:///"). */
static char *label_make(const char *conninfo)
{
	PQconninfoOption *o = pq.PQconninfoParse(conninfo, NULL), *x;
	const char *user = "", *host = "", *port = "", *db = "", *service = "";
	char buf[640];

	if (!o)
		return strdup("postgresql (unparsable connection string)");
	for (x = o; x->keyword; x++) {
		if (!x->val)
			continue;
		if (!strcmp(x->keyword, "user"))
			user = x->val;
		else if (!strcmp(x->keyword, "host"))
			host = x->val;
		else if (!strcmp(x->keyword, "port"))
			port = x->val;
		else if (!strcmp(x->keyword, "dbname"))
			db = x->val;
		else if (!strcmp(x->keyword, "service"))
			service = x->val;
	}
	snprintf(buf, sizeof(buf), "postgresql://%s%s%s%s%s/%s%s%s", user, *user ? "@" : "", host,
		 *port ? ":" : "", port, db, *service ? "?service=" : "", service);
	pq.PQconninfoFree(o);
	return strdup(buf);
}

int sid__reg_pg_conninfo_parses(const char *t)
{
	PQconninfoOption *o;

	if (pq_load(NULL))
		return 1; /* it may be one: not taken for a SQLite file name */
	o = pq.PQconninfoParse(t, NULL);
	pq.PQconninfoFree(o);
	return o != NULL;
}

int sid_registry_target_has_password(const char *target)
{
	PQconninfoOption *o, *x;
	int found = 0;

	if (!sid_registry_target_is_pg(target) || pq_load(NULL) ||
	    !(o = pq.PQconninfoParse(target, NULL)))
		return 0;
	for (x = o; x->keyword && !found; x++)
		found = !strcmp(x->keyword, "password") && x->val && x->val[0];
	pq.PQconninfoFree(o);
	return found;
}

/* Whether the @n bytes at @word name an option: one of libpq's, or a word
 * written as a key in @conninfo (followed by '=': key=value, or a URI's
 * ?key=value&key=value). */
static int option_name(const char *conninfo, const char *word, size_t n)
{
	PQconninfoOption *o, *x;
	const char *at = conninfo;
	int found = 0;

	if (n < 2 || strspn(word, "abcdefghijklmnopqrstuvwxyz_0123456789") < n)
		return 0;
	o = pq.PQconndefaults();
	for (x = o; x && x->keyword && !found; x++)
		found = strlen(x->keyword) == n && !memcmp(x->keyword, word, n);
	pq.PQconninfoFree(o);
	while (!found && (at = memmem(at, strlen(at), word, n))) {
		found = at[n] == '=' &&
			(at == conninfo || at[-1] == ' ' || at[-1] == '?' || at[-1] == '&');
		at++;
	}
	return found;
}

/* Whether the text at @p, up to the next quote, is found in @conninfo: what
 * follows a quoted part is libpq's own words, unless the quoted part was a
 * piece of a password that holds a quote. */
static int words_of(const char *conninfo, const char *p)
{
	size_t n = strcspn(p, "\"");
	return n > 1 && memmem(conninfo, strlen(conninfo), p, n);
}

/*
 * libpq's message about @conninfo, which it could not parse, into @out
 * without the password: libpq quotes what it stumbled on, which can be the
 * password ("invalid percent-encoded token: "pa%zz"") or the whole URI with
 * it ("unexpected character ... in URI: "postgresql://u:pw@..."").  Quoted
 * parts are kept while they are a punctuation mark ("=") or name an option
 * ("dbname", or "passwrd" in "invalid connection option "passwrd"") and
 * libpq's words follow; from the first other one to the message's last
 * quote becomes "..." (a password may hold quotes itself).  Returns 1 when
 * something was left out.
 */
static int parse_error_redact(const char *conninfo, const char *msg, char *out, size_t len)
{
	const char *p = msg, *last = strrchr(msg, '"');
	size_t o = 0;
	int cut = 0;

	while (*p && o + 1 < len) {
		const char *q = *p == '"' ? strchr(p + 1, '"') : NULL;
		size_t n = q ? (size_t)(q - p - 1) : 0;

		if (*p != '"') {
			out[o++] = *p++;
			continue;
		}
		if (q &&
		    ((n == 1 && ispunct((unsigned char)p[1])) || option_name(conninfo, p + 1, n)) &&
		    !words_of(conninfo, q + 1))
			o += (size_t)snprintf(out + o, len - o, "\"%.*s\"", (int)n, p + 1);
		else {
			o += (size_t)snprintf(out + o, len - o, "\"...\"");
			cut = 1;
			q = last;
		}
		if (o >= len)
			o = len - 1;
		p = q + 1;
	}
	while (o && (out[o - 1] == '\n' || out[o - 1] == ' ')) /* libpq ends in "\n" */
		o--;
	out[o] = '\0';
	return cut;
}

/* Entries of a comma-separated list, as libpq counts them (0 for none). */
static int list_count(const char *v)
{
	int n = 1;

	if (!v || !*v)
		return 0;
	for (; *v; v++)
		n += *v == ',';
	return n;
}

/* libpq's parse_int_param: an int, blanks around it, nothing else. */
static int int_param_ok(const char *v, size_t len, int lo, int hi)
{
	char one[32], *end;
	long n;

	if (len >= sizeof(one))
		return 0;
	memcpy(one, v, len);
	one[len] = '\0';
	errno = 0;
	n = strtol(one, &end, 10);
	while (isspace((unsigned char)*end))
		end++;
	return end != one && !*end && !errno && n >= lo && n <= hi;
}

/*
 * The values libpq checks only as it connects (connectOptions2 and
 * PQconnectPoll): a typo there ("sslmode=requir", "port=abc") passed
 * PQconninfoParse, so a server started, said its store was not reached and
 * went on retrying a connection that could never be made.  Checked here by
 * libpq's rules (15's, with those of later versions' options, which an
 * older libpq refuses by name before this) for the options @o
 * (PQconninfoParse's) sets: a word of a list (case-sensitive; the TLS
 * versions without case, or empty), an integer, or port's numbers (one, or
 * one per host; an empty one means the default).  The message names the
 * option and what it takes, never the value (a misplaced password).
 */
static int conninfo_values_check(const PQconninfoOption *o, struct sid_error *err)
{
	enum { V_WORDS, V_TLS, V_INT };
	static const struct {
		const char *key;
		int how;
		const char *words; /* "|a|b|" */
	} rules[] = {
	    {"sslmode", V_WORDS, "|disable|allow|prefer|require|verify-ca|verify-full|"},
	    {"gssencmode", V_WORDS, "|disable|prefer|require|"},
	    {"channel_binding", V_WORDS, "|disable|prefer|require|"},
	    {"target_session_attrs", V_WORDS,
	     "|any|read-write|read-only|primary|standby|prefer-standby|"},
	    {"load_balance_hosts", V_WORDS, "|disable|random|"},
	    {"sslnegotiation", V_WORDS, "|postgres|direct|"},
	    {"ssl_min_protocol_version", V_TLS, "|TLSv1|TLSv1.1|TLSv1.2|TLSv1.3|"},
	    {"ssl_max_protocol_version", V_TLS, "|TLSv1|TLSv1.1|TLSv1.2|TLSv1.3|"},
	    {"connect_timeout", V_INT, NULL},
	    {"keepalives", V_INT, NULL},
	    {"keepalives_idle", V_INT, NULL},
	    {"keepalives_interval", V_INT, NULL},
	    {"keepalives_count", V_INT, NULL},
	    {"tcp_user_timeout", V_INT, NULL},
	};
	const char *host = NULL, *hostaddr = NULL, *port = NULL;
	int hosts;

	for (const PQconninfoOption *x = o; x->keyword; x++) {
		const char *v = x->val;
		size_t k = 0, n;
		int ok = 0;

		if (!strcmp(x->keyword, "host"))
			host = v;
		else if (!strcmp(x->keyword, "hostaddr"))
			hostaddr = v;
		else if (!strcmp(x->keyword, "port"))
			port = v;
		while (k < sizeof(rules) / sizeof(rules[0]) && strcmp(rules[k].key, x->keyword))
			k++;
		if (!v || k == sizeof(rules) / sizeof(rules[0]))
			continue; /* unset, or not checked here */
		n = strlen(v);
		if (rules[k].how == V_INT) {
			if (!int_param_ok(v, n, INT_MIN, INT_MAX))
				return sid_error_set(
				    err, SID_EINVAL,
				    "registry: bad connection string: %s is not an "
				    "integer",
				    x->keyword);
			continue;
		}
		ok = rules[k].how == V_TLS && !n;
		for (const char *w = rules[k].words + 1; *w && !ok; w += strcspn(w, "|") + 1)
			ok = strcspn(w, "|") == n &&
			     !(rules[k].how == V_TLS ? strncasecmp(w, v, n) : strncmp(w, v, n));
		if (!ok) {
			char list[96];
			snprintf(list, sizeof(list), "%.*s", (int)strlen(rules[k].words) - 2,
				 rules[k].words + 1);
			for (char *c = list; (c = strchr(c, '|'));)
				*c = ',';
			return sid_error_set(err, SID_EINVAL,
					     "registry: bad connection string: %s is none of %s",
					     x->keyword, list);
		}
	}
	for (const char *p = port; p && *p;) { /* each 1..65535, or empty */
		size_t len = strcspn(p, ",");
		if (len && !int_param_ok(p, len, 1, 65535))
			return sid_error_set(err, SID_EINVAL,
					     "registry: bad connection string: port is not a port "
					     "number 1..65535 (or a comma-separated list of them, "
					     "one per host)");
		p += len + (p[len] == ',');
	}
	hosts = list_count(hostaddr) ? list_count(hostaddr) : list_count(host);
	if (list_count(host) && list_count(hostaddr) && list_count(host) != list_count(hostaddr))
		return sid_error_set(err, SID_EINVAL,
				     "registry: bad connection string: %d hosts and %d hostaddr "
				     "values (one each per server)",
				     list_count(host), list_count(hostaddr));
	if (list_count(port) > 1 && list_count(port) != (hosts ? hosts : 1))
		return sid_error_set(err, SID_EINVAL,
				     "registry: bad connection string: %d port numbers for %d "
				     "hosts (one, or one per host)",
				     list_count(port), hosts ? hosts : 1);
	return 0;
}

int sid__reg_pg_open(const char *conninfo, unsigned flags, int timeout_ms,
		     struct sid_registry **out, struct sid_error *err)
{
	struct pg *s;
	char *perr = NULL;
	PQconninfoOption *o;
	int rc;

	if ((rc = pq_load(err)))
		return rc;
	if (!(s = calloc(1, sizeof(*s))))
		return sid_error_set(err, SID_ENOMEM, "registry: out of memory");
	s->base.ops = &pg_ops;
	s->base.open_flags = flags; /* conn_ensure reads SID_REG_READONLY */
	s->timeout_ms = timeout_ms;
	s->conninfo = strdup(conninfo);
	s->base.label = label_make(conninfo);
	s->seed = (unsigned)getpid() ^ (unsigned)time(NULL);
	if (!s->conninfo || !s->base.label) {
		rc = sid_error_set(err, SID_ENOMEM, "registry: out of memory");
		goto fail;
	}
	o = pq.PQconninfoParse(conninfo, &perr);
	if (!o) {
		char msg[256];
		int cut =
		    parse_error_redact(conninfo, perr ? perr : "out of memory", msg, sizeof(msg));
		rc = sid_error_set(err, SID_EINVAL, "registry: bad connection string: %s%s", msg,
				   cut ? " (the quoted part is left out: it may hold the password)"
				       : "");
		pq.PQfreemem(perr);
		goto fail;
	}
	rc = conninfo_values_check(o, err);
	pq.PQconninfoFree(o);
	if (rc)
		goto fail;
	rc = conn_ensure(s, err); /* connects and creates or migrates the schema */
	if (rc == SID_EUNAVAIL && (flags & SID_REG_LAZY))
		rc = 0; /* the first call that connects will do it */
	if (rc)
		goto fail;
	*out = &s->base;
	return 0;
fail:
	pg_close(&s->base);
	return rc;
}
