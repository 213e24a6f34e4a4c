/*
 * registry_sqlite.c - the SQLite backend of the ID registry (registry.h).
 *
 * One database file in WAL mode with synchronous=FULL, so a commit is on disk
 * (the WAL fsynced) before sid_registry_assign returns.  Writers take the
 * file's write lock up front (BEGIN IMMEDIATE) and wait up to busy_ms for
 * other connections or processes; a known id is answered from a plain read
 * without a write transaction.  The schema (proto/registry.md) is versioned
 * in semid_meta and migrated on open under the write lock.  Embeddings live
 * in their own table so the assignment rows stay small for scans.
 *
 * The caller (registry.c) serialises calls on a handle, so the connection is
 * opened without SQLite's own mutex.
 */
#include "fsutil.h"
#include "registry.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <pthread.h>
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <time.h>
#include <unistd.h>

#define BUSY_MS	       5000 /* the busy timeout unless the handle was given one */
#define SCHEMA_VERSION 1

/* Migrations: migrations[v] takes schema v to v + 1 (v = 0: a new file). */
static const char *const migrations[SCHEMA_VERSION] = {
    "CREATE TABLE semid_meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);"
    "CREATE TABLE semid_assignment ("
    " rid INTEGER PRIMARY KEY,"
    " kind INTEGER NOT NULL,"
    " id TEXT NOT NULL,"
    " codes BLOB NOT NULL,"
    " suffix INTEGER NOT NULL CHECK (suffix >= 0),"
    " model_version TEXT NOT NULL,"
    " created_ms INTEGER NOT NULL,"
    " updated_ms INTEGER NOT NULL,"
    " emb_dim INTEGER NOT NULL DEFAULT 0);"
    "CREATE UNIQUE INDEX semid_assignment_id ON semid_assignment (kind, id);"
    "CREATE UNIQUE INDEX semid_assignment_sid ON semid_assignment (kind, codes, suffix);"
    "CREATE TABLE semid_embedding (rid INTEGER PRIMARY KEY, emb BLOB NOT NULL);"
    "INSERT INTO semid_meta VALUES ('schema_version', '0');",
};

#define COLS "kind, id, codes, suffix, model_version, created_ms, updated_ms, emb_dim, rid"

enum {
	S_GET,
	S_GET_SID,
	S_USED,
	S_INSERT,
	S_MOVE,
	S_TOUCH,
	S_EMB_PUT,
	S_EMB_DEL,
	S_DELETE,
	S_LEVELS_GET,
	S_LEVELS_PUT,
	S_MAX,
	S_GAPS_GET,
	S_GAPS_SET,
	S_LIST,
	S_BEGIN,
	S_COMMIT,
	S_ROLLBACK,
	S_COUNT
};

static const char *const stmt_sql[S_COUNT] = {
    [S_GET] = "SELECT " COLS " FROM semid_assignment WHERE kind = ?1 AND id = ?2",
    [S_GET_SID] = "SELECT " COLS " FROM semid_assignment WHERE kind = ?1 AND codes = ?2"
		  " AND suffix = ?3",
    [S_USED] = "SELECT suffix FROM semid_assignment WHERE kind = ?1 AND codes = ?2"
	       " ORDER BY suffix",
    [S_INSERT] = "INSERT INTO semid_assignment (kind, id, codes, suffix, model_version,"
		 " created_ms, updated_ms, emb_dim) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
    [S_MOVE] = "UPDATE semid_assignment SET codes = ?2, suffix = ?3, model_version = ?4,"
	       " updated_ms = ?5 WHERE rid = ?1",
    [S_TOUCH] = "UPDATE semid_assignment SET emb_dim = ?2 WHERE rid = ?1",
    [S_EMB_PUT] = "INSERT OR REPLACE INTO semid_embedding (rid, emb) VALUES (?1, ?2)",
    [S_EMB_DEL] = "DELETE FROM semid_embedding WHERE rid = ?1",
    [S_DELETE] = "DELETE FROM semid_assignment WHERE rid = ?1",
    [S_LEVELS_GET] = "SELECT value FROM semid_meta WHERE key = 'levels.' || ?1",
    [S_LEVELS_PUT] = "INSERT INTO semid_meta VALUES ('levels.' || ?1, ?2)",
    [S_MAX] = "SELECT suffix FROM semid_assignment WHERE kind = ?1 AND codes = ?2"
	      " ORDER BY suffix DESC LIMIT 1",
    [S_GAPS_GET] = "SELECT 1 FROM semid_meta WHERE key = 'gaps.' || ?1",
    [S_GAPS_SET] = "INSERT OR REPLACE INTO semid_meta VALUES ('gaps.' || ?1, '1')",
    [S_LIST] = "SELECT " COLS " FROM semid_assignment WHERE kind = ?1 AND codes >= ?2"
	       " AND codes < ?3 AND (codes, suffix) > (?4, ?5) ORDER BY codes, suffix LIMIT ?6",
    [S_BEGIN] = "BEGIN IMMEDIATE",
    [S_COMMIT] = "COMMIT",
    [S_ROLLBACK] = "ROLLBACK",
};

/* A -wal or -shm beside the store, as first seen (side_same). */
struct side_file {
	dev_t dev;
	ino_t ino;
	off_t size;    /* the largest seen */
	int grow_only; /* (the -shm) shorter than size is not the one seen */
	int known;
};

struct sq {
	struct sid_registry base;
	sqlite3 *db;
	sqlite3_stmt *st[S_COUNT];
	int busy_ms; /* the busy timeout: BUSY_MS or sid_registry_open_timeout's */
	/* while the open runs: when its waits end, all of them (open_waits);
	 * 0 after */
	int64_t open_deadline;
	int levels[SID_TOWER_COUNT]; /* cached once known (they never change) */
	int gaps[SID_TOWER_COUNT];   /* 1: the kind may have free slots below a max */
	/* background checkpointer: its own connection, woken by the WAL hook */
	sqlite3 *ck_db;
	pthread_t ck_thread;
	pthread_mutex_t ck_lock;
	pthread_cond_t ck_cond;
	int ck_running, ck_wanted, ck_stop;
	int ck_failed_pages; /* wal_hook: WAL pages when a RESTART last found a reader */
	/* read-only fallback (reopen_immutable): when to try a normal open again */
	int immutable;
	int64_t reopen_ms;
	/* the file opened (file_check): the path must still name it,
	 * "<path>-wal" the WAL its connections read and write through, and
	 * "<path>-shm" the index of that WAL they have mapped */
	dev_t dev;
	ino_t ino;
	struct side_file wal, shm;
	int readonly;
	int lost;	 /* the -wal or -shm was found gone: lost_err says so */
	int wal_pending; /* ... and the -wal's commits are not all in the file yet */
	struct sid_error lost_err;
	int no_ckpt;	       /* stale_files: its connections may checkpoint no more */
	uint64_t checked_call; /* base.calls when the file was last found in place */
	/* SID_REG_READONLY opened through a read-write connection (read_open),
	 * so that its close, the last, removes the -wal and -shm it made */
	int tidy;
	/* read_open through a writer's -wal and -shm by a process that may
	 * write the store: its close, the last, does as a writer's would
	 * (last_close) */
	int owner_read;
	/* read_open of a file this process cannot write, read as immutable:
	 * the file as opened, which a writer's checkpoint would change under it */
	int guarded;
	off_t g_size;
	struct timespec g_mtime;
};

static int file_check(struct sq *s, struct sid_error *err);
static int file_check_now(struct sq *s, struct sid_error *err);

/*
 * Checkpoints run mostly off the commit path: the main connection's automatic
 * checkpoint is off, and after a commit that leaves CKPT_PAGES or more in the
 * WAL the hook wakes this thread, which copies the WAL into the file with a
 * PASSIVE checkpoint on its own connection (never blocking writers).  Under a
 * steady stream of commits a PASSIVE checkpoint never catches up with the
 * last frame, and a WAL that is never fully copied is never restarted: it grew
 * to hundreds of MiB.  A RESTART checkpoint from this thread does not help
 * either (it waits for a moment with no writer, and the writers, retrying
 * sooner, win).  So once the WAL holds CKPT_RESTART pages the committing
 * thread, the one writer of this handle, runs the RESTART checkpoint itself
 * right after its commit: it copies what the background thread has not yet
 * copied, and the next commit writes from the start of the WAL again.  Only
 * a read transaction another process keeps open can stop the restart: the
 * RESTART then gives up after RESTART_WAIT_MS (not the busy timeout: that
 * made every commit wait 5 s for as long as a `semid registry export` or any
 * other long read ran) and is tried again once RESTART_RETRY more pages are
 * in the WAL; meanwhile the WAL grows, as it must while that reader needs
 * it.  journal_size_limit trims a WAL that one huge transaction (an import)
 * or such a reader made larger.
 */
#define CKPT_PAGES	1000
#define CKPT_RESTART	(SID_REG_SQLITE_WAL_PAGES / 2)
#define RESTART_WAIT_MS 20
#define RESTART_RETRY	256

static void *ckpt_main(void *p)
{
	struct sq *s = p;
	pthread_mutex_lock(&s->ck_lock);
	for (;;) {
		while (!s->ck_wanted && !s->ck_stop)
			pthread_cond_wait(&s->ck_cond, &s->ck_lock);
		if (s->ck_stop)
			break;
		s->ck_wanted = 0;
		pthread_mutex_unlock(&s->ck_lock);
		sqlite3_wal_checkpoint_v2(s->ck_db, NULL, SQLITE_CHECKPOINT_PASSIVE, NULL, NULL);
		pthread_mutex_lock(&s->ck_lock);
	}
	pthread_mutex_unlock(&s->ck_lock);
	return NULL;
}

static int wal_hook(void *p, sqlite3 *db, const char *name, int pages)
{
	struct sq *s = p;
	/* after a failed RESTART, again when RESTART_RETRY more pages came or
	 * the WAL was restarted meanwhile (by another process) */
	if (pages >= CKPT_RESTART &&
	    (pages < s->ck_failed_pages || pages >= s->ck_failed_pages + RESTART_RETRY)) {
		int rc;
		sqlite3_busy_timeout(db, RESTART_WAIT_MS);
		rc = sqlite3_wal_checkpoint_v2(db, name, SQLITE_CHECKPOINT_RESTART, NULL, NULL);
		sqlite3_busy_timeout(db, s->busy_ms);
		s->ck_failed_pages = rc == SQLITE_OK ? 0 : pages;
	} else if (pages >= CKPT_PAGES) {
		pthread_mutex_lock(&s->ck_lock);
		s->ck_wanted = 1;
		pthread_cond_signal(&s->ck_cond);
		pthread_mutex_unlock(&s->ck_lock);
	}
	return SQLITE_OK;
}

/* Start the checkpointer; without it SQLite's automatic checkpoint stays on. */
static void ckpt_start(struct sq *s)
{
	pthread_mutex_init(&s->ck_lock, NULL);
	pthread_cond_init(&s->ck_cond, NULL);
	if (sqlite3_open_v2(s->base.label, &s->ck_db, SQLITE_OPEN_READWRITE | SQLITE_OPEN_NOMUTEX,
			    NULL) != SQLITE_OK) {
		sqlite3_close(s->ck_db);
		s->ck_db = NULL;
		return;
	}
	sqlite3_busy_timeout(s->ck_db, s->busy_ms);
	if (sid_thread_start(&s->ck_thread, ckpt_main, s)) {
		sqlite3_close(s->ck_db);
		s->ck_db = NULL;
		return;
	}
	s->ck_running = 1;
	sqlite3_wal_autocheckpoint(s->db, 0);
	sqlite3_wal_hook(s->db, wal_hook, s);
}

static void ckpt_stop(struct sq *s)
{
	if (!s->ck_running)
		return;
	pthread_mutex_lock(&s->ck_lock);
	s->ck_stop = 1;
	pthread_cond_signal(&s->ck_cond);
	pthread_mutex_unlock(&s->ck_lock);
	pthread_join(s->ck_thread, NULL);
	sqlite3_wal_hook(s->db, NULL, NULL); /* it would wake a thread no longer there */
	if (s->no_ckpt)
		sqlite3_db_config(s->ck_db, SQLITE_DBCONFIG_NO_CKPT_ON_CLOSE, 1, NULL);
	sqlite3_close(s->ck_db);
	s->ck_running = 0;
	pthread_mutex_destroy(&s->ck_lock);
	pthread_cond_destroy(&s->ck_cond);
}

/* The OS's error behind @rc on @db (errno of the system call that failed),
 * or 0.  SQLite records one only with SQLITE_CANTOPEN and SQLITE_IOERR (and
 * keeps it past later errors of other kinds, which it does not explain). */
static int sys_errno(sqlite3 *db, int rc)
{
	if (!db || ((rc & 0xff) != SQLITE_CANTOPEN && (rc & 0xff) != SQLITE_IOERR))
		return 0;
	return sqlite3_system_errno(db);
}

/* ": <the OS's reason>" for sys_errno(@db, @rc), or "" without one: "unable
 * to open database file" alone does not tell a full descriptor table
 * (EMFILE) from a denied directory.  Returns @buf. */
static const char *sys_cause(sqlite3 *db, int rc, char *buf, size_t len)
{
	int e = sys_errno(db, rc);

	if (e)
		snprintf(buf, len, ": %s", strerror(e));
	else
		buf[0] = '\0';
	return buf;
}

/* 0 when this process may create files in @path's directory, else why not
 * (EACCES, EROFS, ...): the -wal and -shm must be made there. */
static int dir_denied(const char *path)
{
	char dir[PATH_MAX];
	const char *slash = strrchr(path, '/');
	size_t n = slash ? (size_t)(slash - path) : 0;

	if (!slash)
		snprintf(dir, sizeof(dir), ".");
	else if (n == 0)
		snprintf(dir, sizeof(dir), "/");
	else if (n < sizeof(dir))
		snprintf(dir, sizeof(dir), "%.*s", (int)n, path);
	else
		return 0; /* cannot tell */
	return faccessat(AT_FDCWD, dir, W_OK | X_OK, AT_EACCESS) ? errno : 0;
}

/* Whether the store's directory is to blame for a failed open, from the
 * OS's error @e and, without one that says so, a check of the directory:
 * EROFS (a read-only file system), EACCES (no write access; EPERM too), or
 * 0 (not the directory: the descriptors ran out, say, where advice on side
 * files would send the operator to the wrong place). */
static int dir_trouble(const char *path, int e)
{
	if (e != EROFS && e != EACCES && e != EPERM)
		e = dir_denied(path);
	return e == EROFS ? EROFS : e == EACCES || e == EPERM ? EACCES : 0;
}

/* Map a SQLite result code to a SID_E* code and a message naming the file
 * and, where the OS gave one, its reason. */
static int sq_fail(struct sq *s, int rc, struct sid_error *err, const char *what)
{
	const char *msg = s->db ? sqlite3_errmsg(s->db) : sqlite3_errstr(rc);
	const char *l = s->base.label;
	char cause[128], hint[SID_ERROR_MSG_MAX] = "";
	int code;

	sys_cause(s->db, rc, cause, sizeof(cause));
	switch (rc & 0xff) {
	case SQLITE_NOTADB:
	case SQLITE_CORRUPT:
		return sid_error_set(err, SID_EFORMAT,
				     "registry %s: %s: %s (the file is not a SQLite database or is "
				     "corrupt)",
				     s->base.label, what, msg);
	case SQLITE_NOMEM:
		code = SID_ENOMEM;
		break;
	case SQLITE_BUSY: /* the busy timeout ran out: say whose lock, and how long */
		__atomic_add_fetch(&s->base.events.busy_timeouts, 1, __ATOMIC_RELAXED);
		return sid_error_set(err, SID_EUNAVAIL,
				     "registry %s: %s: %s (another connection, another process's "
				     "most likely, held the store's lock; waited up to %d ms: "
				     "registry_timeout_ms)",
				     s->base.label, what, msg, s->busy_ms);
	case SQLITE_READONLY:
		/* a reader's recovery_wait ran out (SQLite's own message,
		 * "attempt to write a readonly database", is false of a read) */
		if (rc == SQLITE_READONLY_RECOVERY) {
			__atomic_add_fetch(&s->base.events.rebuild_timeouts, 1, __ATOMIC_RELAXED);
			return sid_error_set(
			    err, SID_EUNAVAIL,
			    "registry %s: %s: the store's index (%s-shm) was being "
			    "rebuilt by its writer (a process that may not write "
			    "it reads once the writer is done); waited up to %d ms: "
			    "registry_timeout_ms",
			    l, what, l, s->busy_ms);
		}
		code = SID_EUNAVAIL;
		break;
	case SQLITE_LOCKED:
	case SQLITE_IOERR:
	case SQLITE_FULL:
	case SQLITE_PROTOCOL:
		code = SID_EUNAVAIL;
		break;
	case SQLITE_CANTOPEN:
	case SQLITE_PERM:
		code = SID_EIO;
		switch (dir_trouble(l, sys_errno(s->db, rc))) {
		case EROFS:
			snprintf(hint, sizeof(hint),
				 " (on a read-only file system: WAL mode writes the file and "
				 "%s-wal and %s-shm beside it; mount it read-write)",
				 l, l);
			break;
		case EACCES:
			snprintf(hint, sizeof(hint),
				 " (the file and its directory must be writable: WAL mode keeps "
				 "%s-wal and %s-shm beside it)",
				 l, l);
			break;
		}
		break;
	default:
		code = SID_EIO;
	}
	return sid_error_set(err, code, "registry %s: %s: %s%s%s", l, what, msg, cause, hint);
}

static sqlite3_stmt *stmt(struct sq *s, int i)
{
	sqlite3_reset(s->st[i]);
	sqlite3_clear_bindings(s->st[i]);
	return s->st[i];
}

/*
 * A connection that may not write the store's -shm (reader_open's, for a
 * process that may not write the store) cannot rebuild the WAL's index
 * there: while the index's header is not valid (a writer has just made the
 * -shm, at its start or a restart, or is seen writing the header) every read
 * that begins fails SQLITE_READONLY_RECOVERY, until a writer has rebuilt it
 * (its next read or write does).  Not only a first read: a reader stays open
 * while writers come and go.  So such a read is tried again every 2 ms, up
 * to the busy timeout, as a lock held elsewhere is waited for; a writer's
 * connection never fails so.  recovery_wait pauses and returns 1 while the
 * read may be tried again, 0 once *deadline (0 before the first pause of a
 * read: set then, or during the open to the open's) has passed.  The
 * wrappers below (extended result codes on, or SQLite answers
 * SQLITE_READONLY alone) are for every read.
 */
static int recovery_wait(struct sq *s, int64_t *deadline)
{
	int64_t now = sid__reg_mono_ms();

	if (!*deadline)
		*deadline = s->open_deadline ? s->open_deadline : now + s->busy_ms;
	else if (now >= *deadline)
		return 0;
	usleep(2000);
	return 1;
}

/* sqlite3_step, tried again (reset) at the start of the statement only: once
 * it has begun, its read holds the index it began with. */
static int step(struct sq *s, sqlite3_stmt *st)
{
	int64_t deadline = 0;
	int first = !sqlite3_stmt_busy(st), rc;

	while ((rc = sqlite3_step(st)) == SQLITE_READONLY_RECOVERY && first &&
	       recovery_wait(s, &deadline))
		sqlite3_reset(st);
	return rc;
}

/* sqlite3_prepare_v2 on s->db (it may read the schema) */
static int prepare(struct sq *s, const char *sql, sqlite3_stmt **st)
{
	int64_t deadline = 0;
	int rc;

	while ((rc = sqlite3_prepare_v2(s->db, sql, -1, st, NULL)) == SQLITE_READONLY_RECOVERY &&
	       recovery_wait(s, &deadline))
		;
	return rc;
}

/* sqlite3_exec of @sql on @db, s->db or one about to replace it */
static int db_exec(struct sq *s, sqlite3 *db, const char *sql)
{
	int64_t deadline = 0;
	int rc;

	while ((rc = sqlite3_exec(db, sql, NULL, NULL, NULL)) == SQLITE_READONLY_RECOVERY &&
	       recovery_wait(s, &deadline))
		;
	return rc;
}

/* Run a statement that returns no rows. */
static int run(struct sq *s, sqlite3_stmt *st, struct sid_error *err, const char *what)
{
	int rc = step(s, st);
	sqlite3_reset(st);
	if (rc != SQLITE_DONE && rc != SQLITE_ROW)
		return sq_fail(s, rc, err, what);
	return 0;
}

static int exec(struct sq *s, const char *sql, struct sid_error *err, const char *what)
{
	int rc = db_exec(s, s->db, sql);
	return rc == SQLITE_OK ? 0 : sq_fail(s, rc, err, what);
}

/* Forget the levels and gaps flags cached: a rollback (of the transaction,
 * or to a savepoint) may have taken away what they say was written, and a
 * gaps flag cached but not stored would keep the next gap from being
 * stored (other handles would then never look for it). */
static void forget_cached(struct sq *s)
{
	memset(s->levels, 0, sizeof(s->levels));
	memset(s->gaps, 0, sizeof(s->gaps));
}

/* Undo the transaction, and forget what it may have cached: the levels and
 * gaps flags it wrote are gone with it (the next one must write them). */
static void rollback(struct sq *s)
{
	forget_cached(s);
	if (!sqlite3_get_autocommit(s->db))
		run(s, stmt(s, S_ROLLBACK), NULL, "rollback");
}

/* Read an entry from a statement selecting COLS (@how: registry.h). */
static int row_entry(struct sq *s, sqlite3_stmt *st, enum sid__reg_row how, struct sid_reg_entry *e,
		     struct sid_error *err)
{
	const char *id = (const char *)sqlite3_column_text(st, 1);
	const char *ver = (const char *)sqlite3_column_text(st, 4);

	memset(e, 0, sizeof(*e));
	e->kind = sqlite3_column_int(st, 0);
	if (!id || (how == SID__REG_ROW_ANY && sid_reg_id_check(id, NULL))) /* none can name it */
		return sid_error_set(
		    err, SID_EDATA,
		    "registry %s: the stored entry of row %lld cannot be read: its "
		    "id is damaged (not 1..%d bytes of UTF-8 without control "
		    "characters; semid registry delete --rows %lld erases it)",
		    s->base.label, (long long)sqlite3_column_int64(st, 8), SID_REG_ID_MAX,
		    (long long)sqlite3_column_int64(st, 8));
	if (!ver || strlen(ver) > SID_REG_VERSION_MAX ||
	    sid__reg_codes_unpack(sqlite3_column_blob(st, 2), sqlite3_column_bytes(st, 2), e->codes,
				  &e->L)) {
		if (how == SID__REG_ROW_CODES) /* (stats: it walks the index of codes alone) */
			return sid_error_set(err, SID_EDATA,
					     "registry %s: the stored entry of row %lld cannot be "
					     "read: its codes are damaged (semid registry check "
					     "names its id)",
					     s->base.label, (long long)sqlite3_column_int64(st, 8));
		return sid_error_set(
		    err, SID_EDATA,
		    "registry %s: the stored entry of row %lld (id \"%.*s\") cannot "
		    "be read: its codes or model_version are damaged (deleting the id "
		    "erases it)",
		    s->base.label, (long long)sqlite3_column_int64(st, 8), sid__name_shown(id), id);
	}
	strcpy(e->id, id);
	strcpy(e->model_version, ver);
	e->suffix = sqlite3_column_int64(st, 3);
	e->created_ms = sqlite3_column_int64(st, 5);
	e->updated_ms = sqlite3_column_int64(st, 6);
	e->D = sqlite3_column_int(st, 7);
	return 0;
}

/* Step @st, bound and selecting COLS (@how: the row's, as row_entry takes
 * it), then reset it: 1 found (*e filled, and *rid when not NULL, read or
 * not), 0 absent, < 0 error (SID_EDATA: a row that cannot be read). */
static int fetch_one(struct sq *s, sqlite3_stmt *st, enum sid__reg_row how, struct sid_reg_entry *e,
		     sqlite3_int64 *rid, struct sid_error *err)
{
	int rc = step(s, st);

	if (rc == SQLITE_DONE)
		rc = 0;
	else if (rc != SQLITE_ROW)
		rc = sq_fail(s, rc, err, "read");
	else {
		if (rid)
			*rid = sqlite3_column_int64(st, 8);
		if ((rc = row_entry(s, st, how, e, err)) == 0)
			rc = 1;
	}
	sqlite3_reset(st);
	return rc;
}

/* Look @id up: 1 found, 0 absent, < 0 error (SID_EDATA: a row that
 * cannot be read); *rid is set when a row was found, read or not. */
static int get_row(struct sq *s, int kind, const char *id, struct sid_reg_entry *e,
		   sqlite3_int64 *rid, struct sid_error *err)
{
	sqlite3_stmt *st = stmt(s, S_GET);

	sqlite3_bind_int(st, 1, kind);
	sqlite3_bind_text(st, 2, id, -1, SQLITE_STATIC);
	return fetch_one(s, st, SID__REG_ROW_BY_ID, e, rid, err);
}

static int get_sid_row(struct sq *s, int kind, const uint8_t *codes, int L, int64_t suffix,
		       struct sid_reg_entry *e, struct sid_error *err)
{
	sqlite3_stmt *st = stmt(s, S_GET_SID);

	sqlite3_bind_int(st, 1, kind);
	sqlite3_bind_blob(st, 2, codes, 4 * L, SQLITE_STATIC);
	sqlite3_bind_int64(st, 3, suffix);
	return fetch_one(s, st, SID__REG_ROW_ANY, e, NULL, err);
}

/* @kind's levels read from the store (0: none yet), and cached when set. */
static int levels_read(struct sq *s, int kind, int *L, struct sid_error *err)
{
	sqlite3_stmt *st = stmt(s, S_LEVELS_GET);
	int rc;

	sqlite3_bind_text(st, 1, sid_tower_name(kind), -1, SQLITE_STATIC);
	rc = step(s, st);
	*L = 0;
	if (rc == SQLITE_ROW) {
		rc = sid__reg_levels_parse(s->base.label, kind,
					   (const char *)sqlite3_column_text(st, 0), L, err);
		s->levels[kind] = *L;
		sqlite3_reset(st);
		return rc;
	}
	if (rc != SQLITE_DONE)
		rc = sq_fail(s, rc, err, "read levels");
	sqlite3_reset(st);
	return rc == SQLITE_DONE ? 0 : rc;
}

static int levels_get(struct sq *s, int kind, int *L, struct sid_error *err)
{
	*L = s->levels[kind];
	return *L ? 0 : levels_read(s, kind, L, err);
}

/* Inside a write transaction: the store's levels for @kind, set to @L when
 * unset.  Returns 1 when they differ from @L. */
static int levels_ensure(struct sq *s, int kind, int L, struct sid_error *err)
{
	int cur, rc = levels_get(s, kind, &cur, err);
	sqlite3_stmt *st;

	if (rc)
		return rc;
	if (cur)
		return cur != L;
	st = stmt(s, S_LEVELS_PUT);
	sqlite3_bind_text(st, 1, sid_tower_name(kind), -1, SQLITE_STATIC);
	sqlite3_bind_int(st, 2, L);
	rc = run(s, st, err, "write levels");
	/* not cached here: levels_get reads it back (a rollback clears the cache) */
	return rc;
}

/* The smallest suffix free under @codes. */
/*
 * Free slots below the largest suffix of a code tuple ("gaps") appear only
 * when a reassign or a delete takes an id out of the middle of its tuple
 * (or a delete takes a damaged row, whose slot is not known) or an import
 * brings a suffix past the end.  Until then every tuple's suffixes are
 * 0..max, the smallest free one is max + 1, and one index probe finds it; so
 * each kind keeps a flag (semid_meta "gaps.<kind>"), set for good the first
 * time a gap may appear, after which allocation walks the tuple's suffixes
 * (sid__reg_gap).  This keeps a collapsed codebook (thousands of ids under
 * one tuple) from making every insert O(ids in the tuple).
 */
static int gaps_possible(struct sq *s, int kind, int *yes, struct sid_error *err)
{
	sqlite3_stmt *st;
	int rc;

	if (s->gaps[kind]) {
		*yes = 1;
		return 0;
	}
	st = stmt(s, S_GAPS_GET);
	sqlite3_bind_text(st, 1, sid_tower_name(kind), -1, SQLITE_STATIC);
	rc = sqlite3_step(st);
	sqlite3_reset(st);
	if (rc != SQLITE_ROW && rc != SQLITE_DONE)
		return sq_fail(s, rc, err, "read gaps flag");
	*yes = s->gaps[kind] = rc == SQLITE_ROW;
	return 0;
}

static int gaps_mark(struct sq *s, int kind, struct sid_error *err)
{
	sqlite3_stmt *st;
	if (s->gaps[kind])
		return 0;
	st = stmt(s, S_GAPS_SET);
	sqlite3_bind_text(st, 1, sid_tower_name(kind), -1, SQLITE_STATIC);
	s->gaps[kind] = 1; /* rollback() forgets it */
	return run(s, st, err, "write gaps flag");
}

/* The largest suffix under @codes, or -1 when none. */
static int max_suffix(struct sq *s, int kind, const uint8_t *codes, int L, int64_t *out,
		      struct sid_error *err)
{
	sqlite3_stmt *st = stmt(s, S_MAX);
	int rc;

	sqlite3_bind_int(st, 1, kind);
	sqlite3_bind_blob(st, 2, codes, 4 * L, SQLITE_STATIC);
	rc = sqlite3_step(st);
	*out = rc == SQLITE_ROW ? sqlite3_column_int64(st, 0) : -1;
	sqlite3_reset(st);
	if (rc != SQLITE_ROW && rc != SQLITE_DONE)
		return sq_fail(s, rc, err, "read suffixes");
	return 0;
}

/* The smallest suffix free under @codes. */
static int free_suffix(struct sq *s, int kind, const uint8_t *codes, int L, int64_t *out,
		       struct sid_error *err)
{
	sqlite3_stmt *st;
	struct sid__reg_gap g;
	int rc, gaps = 1;

	if ((rc = gaps_possible(s, kind, &gaps, err)))
		return rc;
	if (!gaps) {
		rc = max_suffix(s, kind, codes, L, out, err);
		++*out;
		return rc;
	}
	st = stmt(s, S_USED);
	sid__reg_gap_init(&g);
	sqlite3_bind_int(st, 1, kind);
	sqlite3_bind_blob(st, 2, codes, 4 * L, SQLITE_STATIC);
	while ((rc = sqlite3_step(st)) == SQLITE_ROW)
		if (sid__reg_gap_feed(&g, sqlite3_column_int64(st, 0)))
			break;
	sqlite3_reset(st);
	if (rc != SQLITE_ROW && rc != SQLITE_DONE)
		return sq_fail(s, rc, err, "read suffixes");
	*out = g.next;
	return 0;
}

/* Before an id leaves slot (@codes, @suffix): note a gap if one is left. */
static int leaving(struct sq *s, int kind, const int32_t *codes, int L, int64_t suffix,
		   struct sid_error *err)
{
	uint8_t packed[SID__REG_CODES_BYTES];
	int64_t max;
	int rc;

	sid__reg_codes_pack(codes, L, packed);
	rc = max_suffix(s, kind, packed, L, &max, err);
	if (!rc && max > suffix)
		rc = gaps_mark(s, kind, err);
	return rc;
}

static int emb_put(struct sq *s, sqlite3_int64 rid, const float *emb, int D, struct sid_error *err)
{
	sqlite3_stmt *st = stmt(s, S_EMB_PUT);
	sqlite3_bind_int64(st, 1, rid);
	sqlite3_bind_blob(st, 2, emb, (int)sizeof(float) * D, SQLITE_STATIC);
	return run(s, st, err, "write embedding");
}

static int insert_row(struct sq *s, const struct sid_reg_entry *e, const uint8_t *codes,
		      const float *emb, struct sid_error *err)
{
	sqlite3_stmt *st = stmt(s, S_INSERT);
	int rc;

	sqlite3_bind_int(st, 1, e->kind);
	sqlite3_bind_text(st, 2, e->id, -1, SQLITE_STATIC);
	sqlite3_bind_blob(st, 3, codes, 4 * e->L, SQLITE_STATIC);
	sqlite3_bind_int64(st, 4, e->suffix);
	sqlite3_bind_text(st, 5, e->model_version, -1, SQLITE_STATIC);
	sqlite3_bind_int64(st, 6, e->created_ms);
	sqlite3_bind_int64(st, 7, e->updated_ms);
	sqlite3_bind_int(st, 8, emb ? e->D : 0);
	rc = run(s, st, err, "insert");
	if (!rc && emb)
		rc = emb_put(s, sqlite3_last_insert_rowid(s->db), emb, e->D, err);
	else if (!rc) {
		/* an embedding row of no entry (semid_assignment's rows deleted by
		 * hand) may hold this reused rowid: it is not this entry's, and
		 * read as its own it made every walk with embeddings stop here */
		st = stmt(s, S_EMB_DEL);
		sqlite3_bind_int64(st, 1, sqlite3_last_insert_rowid(s->db));
		rc = run(s, st, err, "insert");
	}
	return rc;
}

/* All of @items already stored and no reassign: answer without writing.
 * Returns 1 when it did. */
static int assign_known(struct sq *s, int kind, const struct sid_reg_item *items, size_t n,
			struct sid_reg_entry *out, struct sid_error *err)
{
	for (size_t i = 0; i < n; i++) {
		int rc = get_row(s, kind, items[i].id, &out[i], NULL, err);
		if (rc <= 0)
			return rc;
	}
	return 1;
}

/* One call's inputs, inside the group's write transaction. */
static int assign_call(struct sq *s, struct sid__reg_req *q, int64_t now_ms)
{
	const struct sid_reg_item *items = q->items;
	struct sid_reg_entry *out = q->out;
	struct sid_error *err = &q->err;
	const char *model_version = q->version;
	int kind = q->kind, L = q->L, D = q->D;
	int reassign = q->flags & SID_REG_REASSIGN, levels_ok = 0, rc = 0;

	for (size_t i = 0; i < q->n; i++) {
		struct sid_reg_entry *e = &out[i];
		uint8_t codes[SID__REG_CODES_BYTES];
		sqlite3_int64 rid = 0;
		int found = get_row(s, kind, items[i].id, e, &rid, err);

		if (found < 0)
			return found;
		if (found && !reassign)
			continue;
		if (reassign &&
		    sid__reg_stale(e, found, kind, items[i].id, q->expect ? &q->expect[i] : NULL))
			continue;
		if (!levels_ok) {
			rc = levels_ensure(s, kind, L, err);
			if (rc > 0)
				rc = sid_error_set_at(err, SID_EINVAL, (long)i,
						      "input %zu: the model gives %d levels; the "
						      "registry's %s IDs have %d",
						      i, L, sid_tower_name(kind), s->levels[kind]);
			if (rc)
				return rc;
			levels_ok = 1;
		}
		sid__reg_codes_pack(items[i].codes, L, codes);
		if (found) {
			/* reassign: to the same codes it keeps its slot and notes the model */
			int same = e->L == L && !memcmp(e->codes, items[i].codes, 4 * (size_t)L);
			sqlite3_stmt *st;
			if (!same)
				sid__reg_moving(e);
			if (!same && ((rc = leaving(s, kind, e->codes, e->L, e->suffix, err)) ||
				      (rc = free_suffix(s, kind, codes, L, &e->suffix, err))))
				return rc;
			st = stmt(s, S_MOVE);
			sqlite3_bind_int64(st, 1, rid);
			sqlite3_bind_blob(st, 2, codes, 4 * L, SQLITE_STATIC);
			sqlite3_bind_int64(st, 3, e->suffix);
			sqlite3_bind_text(st, 4, model_version, -1, SQLITE_STATIC);
			sqlite3_bind_int64(st, 5, now_ms);
			rc = run(s, st, err, "update");
			e->moved = !same;
		} else {
			memset(e, 0, sizeof(*e));
			e->kind = kind;
			strcpy(e->id, items[i].id);
			e->L = L;
			e->created_ms = e->updated_ms = now_ms;
			e->D = items[i].emb ? D : 0;
			snprintf(e->model_version, sizeof(e->model_version), "%s", model_version);
			rc = free_suffix(s, kind, codes, L, &e->suffix, err);
			if (!rc)
				rc = insert_row(s, e, codes, items[i].emb, err);
			e->created = 1;
		}
		if (rc)
			return rc;
		/* the stored embedding is the input of the codes now stored: a
		 * reassign replaces it, or drops it when given none (unless the
		 * codes came from it: SID_REG_STORED_EMB) */
		if (found && (items[i].emb || (e->D && !(q->flags & SID_REG_STORED_EMB)))) {
			sqlite3_stmt *st = stmt(s, S_TOUCH);
			int keep = items[i].emb != NULL;
			sqlite3_bind_int64(st, 1, rid);
			sqlite3_bind_int(st, 2, keep ? D : 0);
			rc = run(s, st, err, "update");
			if (!rc && keep)
				rc = emb_put(s, rid, items[i].emb, D, err);
			if (!rc && !keep) {
				st = stmt(s, S_EMB_DEL);
				sqlite3_bind_int64(st, 1, rid);
				rc = run(s, st, err, "drop embedding");
			}
			if (rc)
				return rc;
			e->D = keep ? D : 0;
		}
		e->L = L;
		memcpy(e->codes, items[i].codes, sizeof(int32_t) * L);
		e->updated_ms = now_ms;
		snprintf(e->model_version, sizeof(e->model_version), "%s", model_version);
	}
	return 0;
}

static void fail_all(struct sid__reg_req *const *q, size_t nq, const struct sid_error *err)
{
	for (size_t i = 0; i < nq; i++)
		if (q[i]->rc == 1) {
			q[i]->rc = err->code;
			q[i]->err = *err;
		}
}

/*
 * A group of calls: answer the all-known ones from reads, then run the rest
 * in one write transaction, each under a savepoint so one call's own error
 * (a level mismatch) leaves the others in.  rc 1 marks "needs the write".
 */
static void sq_assign(struct sid_registry *r, struct sid__reg_req *const *q, size_t nq,
		      int64_t now_ms)
{
	struct sq *s = (struct sq *)r;
	struct sid_error gerr;
	size_t writers = 0;
	int rc;

	sid_error_clear(&gerr);
	for (size_t i = 0; i < nq; i++)
		q[i]->rc = 1;
	if (file_check(s, &gerr)) {
		fail_all(q, nq, &gerr);
		return;
	}
	/* one read transaction: the all-known calls are answered from one
	 * snapshot (read one statement at a time, a commit in between, another
	 * process's reassign moving one id out and another into its slot, gave
	 * two ids of one answer the same sid) */
	if ((rc = exec(s, "BEGIN", &gerr, "begin"))) {
		fail_all(q, nq, &gerr);
		return;
	}
	for (size_t i = 0; i < nq; i++) {
		if (!(q[i]->flags & SID_REG_REASSIGN)) {
			rc = assign_known(s, q[i]->kind, q[i]->items, q[i]->n, q[i]->out,
					  &q[i]->err);
			if (rc) {
				q[i]->rc = rc < 0 ? rc : 0;
				continue;
			}
		}
		writers++;
	}
	if ((rc = exec(s, "COMMIT", &gerr, "end the read"))) {
		rollback(s);
		fail_all(q, nq, &gerr);
		return;
	}
	if (!writers)
		return;
	if ((rc = run(s, stmt(s, S_BEGIN), &gerr, "begin")))
		goto fail;
	for (size_t i = 0; i < nq; i++) {
		if (q[i]->rc != 1)
			continue;
		if ((rc = exec(s, "SAVEPOINT call", &gerr, "savepoint")))
			goto fail;
		rc = assign_call(s, q[i], now_ms);
		if (rc == SID_EINVAL || rc == SID_EDATA) { /* this call's own: undo it alone */
			q[i]->rc = rc;
			if ((rc = exec(s, "ROLLBACK TO call", &gerr, "savepoint")))
				goto fail;
			forget_cached(s);
		} else if (rc) {
			gerr = q[i]->err;
			goto fail;
		}
		if ((rc = exec(s, "RELEASE call", &gerr, "savepoint")))
			goto fail;
	}
	/* the levels read or set inside the transaction are cached by
	 * levels_get (a call answered as known never checked its own L, so L
	 * is not taken from the calls) */
	if ((rc = run(s, stmt(s, S_COMMIT), &gerr, "commit")))
		goto fail;
	if (file_check_now(s, &gerr)) { /* committed to a file no longer there: not durable */
		fail_all(q, nq, &gerr);
		return;
	}
	for (size_t i = 0; i < nq; i++)
		if (q[i]->rc == 1)
			q[i]->rc = 0;
	return;
fail:
	rollback(s);
	fail_all(q, nq, &gerr);
}

/* Row @rid of semid_assignment and its embedding row go. */
static int delete_rid(struct sq *s, sqlite3_int64 rid, struct sid_error *err)
{
	sqlite3_stmt *st = stmt(s, S_EMB_DEL);
	int rc;

	sqlite3_bind_int64(st, 1, rid);
	if ((rc = run(s, st, err, "delete embedding")))
		return rc;
	st = stmt(s, S_DELETE);
	sqlite3_bind_int64(st, 1, rid);
	return run(s, st, err, "delete");
}

/* Remove one stored row and its embedding; its slot is left as a reassign
 * leaves its old one (leaving: the gaps flag when it is below the largest).
 * A row that could not be read (e->L 0) has no slot known: the gaps flag. */
static int delete_row(struct sq *s, const struct sid_reg_entry *e, sqlite3_int64 rid,
		      struct sid_error *err)
{
	int rc =
	    e->L ? leaving(s, e->kind, e->codes, e->L, e->suffix, err) : gaps_mark(s, e->kind, err);

	return rc ? rc : delete_rid(s, rid, err);
}

static int sq_delete(struct sid_registry *r, int kind, const char *const *ids, size_t n,
		     struct sid_reg_entry *out, struct sid_error *err)
{
	struct sq *s = (struct sq *)r;
	int rc;

	if ((rc = file_check(s, err)))
		return rc;
	if ((rc = run(s, stmt(s, S_BEGIN), err, "begin")))
		return rc;
	for (size_t i = 0; i < n; i++) {
		sqlite3_int64 rid = 0;
		int found = get_row(s, kind, ids[i], &out[i], &rid, err);

		if (found == SID_EDATA && rid) { /* (rowids start at 1) */
			/* a row that cannot be read is erased all the same:
			 * an erasure must not wait for a repair by hand */
			sid__reg_absent(&out[i], kind, ids[i]);
			sid_error_clear(err);
			found = 1;
		}
		if (found < 0) {
			rc = found;
			goto fail;
		}
		if (!found) {
			sid__reg_absent(&out[i], kind, ids[i]);
			continue;
		}
		if ((rc = delete_row(s, &out[i], rid, err)))
			goto fail;
		out[i].deleted = 1;
	}
	if ((rc = run(s, stmt(s, S_COMMIT), err, "commit")))
		goto fail;
	return file_check_now(s, err); /* committed to a file no longer there: not durable */
fail:
	rollback(s);
	return rc;
}

/*
 * The rows' entries go, but only what a delete of an id cannot reach: an
 * entry sid_registry_check finds unreadable (row_entry, as its walk reads
 * it) or of a kind no request has (sid__reg_kind_bad's), and an embedding
 * row of no entry.  An entry it finds nothing wrong with by those tests is
 * refused (out[i] as read, deleted 0): a row number is only as good as the
 * check that gave it, and the row it named may have gone since and its
 * rowid been given to a new, healthy assignment.
 */
static int sq_delete_rows(struct sid_registry *r, const int64_t *rows, size_t n,
			  struct sid_reg_entry *out, struct sid_error *err)
{
	struct sq *s = (struct sq *)r;
	sqlite3_stmt *st = NULL;
	int rc;

	if ((rc = file_check(s, err)))
		return rc;
	if ((rc = run(s, stmt(s, S_BEGIN), err, "begin")))
		return rc;
	rc = sqlite3_prepare_v2(s->db, "SELECT " COLS " FROM semid_assignment WHERE rid = ?1", -1,
				&st, NULL);
	if (rc) {
		rc = sq_fail(s, rc, err, "delete");
		goto fail;
	}
	for (size_t i = 0; i < n; i++) {
		int found, known;

		sqlite3_bind_int64(st, 1, rows[i]);
		memset(&out[i], 0, sizeof(out[i]));
		found = fetch_one(s, st, SID__REG_ROW_ANY, &out[i], NULL, err);
		known = out[i].kind == SID_TOWER_ITEM || out[i].kind == SID_TOWER_USER;
		if (found == 1 && known) { /* healthy: its id names it */
			out[i].deleted = 0;
			continue;
		}
		if (found == SID_EDATA) { /* damaged: only its kind is known */
			int kind = out[i].kind;
			memset(&out[i], 0, sizeof(out[i]));
			out[i].kind = kind;
			sid_error_clear(err);
		} else if (found < 0) {
			rc = found;
			goto fail;
		}
		if (!found) { /* an embedding row of no entry (check names it) */
			sqlite3_stmt *ed = stmt(s, S_EMB_DEL);
			sqlite3_bind_int64(ed, 1, rows[i]);
			if ((rc = run(s, ed, err, "delete embedding")))
				goto fail;
			out[i].deleted = sqlite3_changes(s->db) > 0;
			continue;
		}
		/* its slot is not known (its codes may be what is damaged): a
		 * gap, unless its kind is no one's */
		if (known && (rc = gaps_mark(s, out[i].kind, err)))
			goto fail;
		if ((rc = delete_rid(s, rows[i], err)))
			goto fail;
		out[i].deleted = 1;
	}
	sqlite3_finalize(st);
	st = NULL;
	if ((rc = run(s, stmt(s, S_COMMIT), err, "commit")))
		goto fail;
	return file_check_now(s, err);
fail:
	sqlite3_finalize(st);
	rollback(s);
	return rc;
}

static int prepare_all(sqlite3 *db, sqlite3_stmt **st)
{
	for (int i = 0; i < S_COUNT; i++) {
		int rc = sqlite3_prepare_v3(db, stmt_sql[i], -1, SQLITE_PREPARE_PERSISTENT, &st[i],
					    NULL);
		if (rc)
			return rc;
	}
	return 0;
}

/* Replace the handle's connection by a new one to @name (a path, or a
 * "file:" URI with SQLITE_OPEN_URI) with @flags, or (@flags 0) by
 * reader_open's to the path @name for a process that may not write it; 0
 * when done, else the old one stays. */
static int reader_open(const char *path, int ro_shm, sqlite3 **db);

static int reconnect(struct sq *s, const char *name, int flags)
{
	sqlite3 *db = NULL;
	sqlite3_stmt *st[S_COUNT] = {0};

	if ((flags ? sqlite3_open_v2(name, &db, flags | SQLITE_OPEN_NOMUTEX, NULL)
		   : reader_open(name, 1, &db)) == SQLITE_OK &&
	    sqlite3_extended_result_codes(db, 1) == SQLITE_OK &&
	    sqlite3_busy_timeout(db, s->busy_ms) == SQLITE_OK &&
	    db_exec(s, db, "SELECT count(*) FROM sqlite_master") == SQLITE_OK &&
	    prepare_all(db, st) == SQLITE_OK) {
		for (int i = 0; i < S_COUNT; i++)
			sqlite3_finalize(s->st[i]);
		sqlite3_close(s->db);
		memcpy(s->st, st, sizeof(st));
		s->db = db;
		return 0;
	}
	for (int i = 0; i < S_COUNT; i++)
		sqlite3_finalize(st[i]);
	sqlite3_close(db);
	return -1;
}

/*
 * The bytes of the file @st (named @path) this process maps: the end of the
 * furthest mapping of it in /proc/self/maps, or 0 (none, or no /proc to
 * tell).  A -shm is mapped by every connection of this process to its store
 * (SQLite shares one mapping per file between them), from the start, as far
 * as its index reached when last mapped.  A mapping is known by its device
 * and inode, or, where those are another file system's (overlayfs shows
 * the layer's), by its inode and name.
 */
static off_t mapped_bytes(const char *path, const struct stat *st)
{
	const char *base = strrchr(path, '/') ? strrchr(path, '/') + 1 : path;
	char line[PATH_MAX + 128];
	off_t end = 0;
	FILE *f = fopen("/proc/self/maps", "re");

	if (!f)
		return 0;
	while (fgets(line, sizeof(line), f)) {
		unsigned long long lo, hi, off, ino;
		unsigned maj, mnr;
		int name = 0;
		const char *slash;

		if (sscanf(line, "%llx-%llx %*s %llx %x:%x %llu %n", &lo, &hi, &off, &maj, &mnr,
			   &ino, &name) < 6 ||
		    ino != (unsigned long long)st->st_ino)
			continue;
		slash = name ? strrchr(line + name, '/') : NULL;
		if ((maj != major(st->st_dev) || mnr != minor(st->st_dev)) &&
		    (!slash || strncmp(slash + 1, base, strlen(base)) ||
		     !strchr(" \n", slash[1 + strlen(base)])))
			continue;
		if ((off_t)(off + hi - lo) > end)
			end = (off_t)(off + hi - lo);
	}
	fclose(f);
	return end;
}

off_t (*sid__reg_shm_len_hook)(const char *shm, off_t len); /* registry.h */

/*
 * A -shm shorter than this process maps it: truncated while a connection of
 * ours had it open (": > reg.db-shm", or a torn copy put in its place; SQLite
 * never shortens the -shm while any connection has it open).  Every
 * connection of this process to the store shares that mapping, a new one
 * too, and the first touch of a page past the new end kills the process
 * with SIGBUS: so a store is not opened while its -shm is so (SID_EUNAVAIL,
 * @err set), and a handle that finds it so reads and writes no more
 * (shm_check).  0 when the -shm is not, or not mapped here.
 */
static int shm_short(const char *path, struct sid_error *err)
{
	char shm[PATH_MAX + 8];
	struct stat st, now;
	off_t mapped;
	int tries = 0;

	snprintf(shm, sizeof(shm), "%s-shm", path);
	/* The mapping first, the length after: the first connection of the
	 * process to a store grows a fresh -shm a page at a time, then maps
	 * it, so a length read before the mapping was a page beside the whole
	 * region, and a handle opening beside it was refused as truncated.
	 * Even so the last handle's close and a new first one can fall between
	 * the two reads: what looks short is looked at again, 2 ms later,
	 * twice; a truncation stays. */
	for (;;) {
		if (stat(shm, &st) || !(mapped = mapped_bytes(shm, &st)) || stat(shm, &now) ||
		    now.st_ino != st.st_ino)
			return 0; /* not mapped here, or another file now */
		if (sid__reg_shm_len_hook)
			now.st_size = sid__reg_shm_len_hook(shm, now.st_size);
		if (mapped <= now.st_size)
			return 0;
		if (++tries == 3)
			break;
		usleep(2000);
	}
	return sid_error_set(err, SID_EUNAVAIL,
			     "registry %s: %s is truncated: %lld bytes, shorter than the %lld of "
			     "its index that another handle of this process to the store has "
			     "mapped (reading it would kill the process with SIGBUS); close the "
			     "store everywhere in this process (restart semid-server) and the "
			     "next open rebuilds it",
			     path, shm, (long long)now.st_size, (long long)mapped);
}

static void immutable_uri(const char *p, char *uri, size_t len);

/*
 * A handle reading the file as immutable (reopen_immutable) goes back to a
 * normal read-only connection as soon as one can be had (the directory was
 * remounted read-write): from then on a writer may change the file, which
 * an immutable connection would never notice.  Tried at most once a second,
 * before a read; a writer only reaches the file itself at a checkpoint
 * (1000 pages of WAL), so the second in between reads a consistent file.
 * One that read_open guards (another user's store, read without making its
 * side files) is checked before every call: once a writer has the store
 * open (both side files there) it reads through them as an ordinary
 * read-only connection, which makes nothing then; a file a writer changed
 * and left is read anew as it now is.
 */
static void leave_immutable(struct sq *s)
{
	char wal[PATH_MAX + 8], shm[PATH_MAX + 8], uri[3 * PATH_MAX + 32];
	struct stat st;
	int64_t now;

	if (s->guarded) {
		/* (its path is shorter than PATH_MAX: read_open) */
		snprintf(wal, sizeof(wal), "%s-wal", s->base.label);
		snprintf(shm, sizeof(shm), "%s-shm", s->base.label);
		if (!access(wal, F_OK) && !access(shm, F_OK)) {
			/* a writer has the store open: read through its files
			 * (not a -shm that would kill the process: shm_short) */
			if (!shm_short(s->base.label, NULL) && !reconnect(s, s->base.label, 0))
				s->immutable = s->guarded = 0;
		} else if (!stat(s->base.label, &st) && st.st_dev == s->dev &&
			   st.st_ino == s->ino &&
			   (st.st_size != s->g_size || st.st_mtim.tv_sec != s->g_mtime.tv_sec ||
			    st.st_mtim.tv_nsec != s->g_mtime.tv_nsec)) {
			/* a writer came and went: the file as it left it */
			immutable_uri(s->base.label, uri, sizeof(uri));
			if (!reconnect(s, uri, SQLITE_OPEN_READONLY | SQLITE_OPEN_URI)) {
				s->g_size = st.st_size;
				s->g_mtime = st.st_mtim;
			}
		}
		return;
	}
	if (!s->immutable || (now = sid__reg_mono_ms()) < s->reopen_ms)
		return;
	s->reopen_ms = now + 1000;
	if (!shm_short(s->base.label, NULL) && !reconnect(s, s->base.label, SQLITE_OPEN_READONLY))
		s->immutable = 0;
}

/*
 * The -wal or -shm at the path is no longer the one this handle's
 * connections use (deleted or replaced), and nothing they hold is left to
 * copy into the file: from now on none of them may checkpoint, not even as
 * it closes.  The last connection to close a WAL store copies the WAL into
 * the file and deletes "<path>-wal" by name; with the WAL gone under it, it
 * read the index another process now writes against its deleted WAL,
 * copied those stale pages over the file (its own last commits went back)
 * and deleted the -wal holding every commit the other process had
 * acknowledged.  With the -shm gone, its index is stale the same way.
 */
static void stale_files(struct sq *s)
{
	s->no_ckpt = 1;
	ckpt_stop(s);
	if (s->db)
		sqlite3_db_config(s->db, SQLITE_DBCONFIG_NO_CKPT_ON_CLOSE, 1, NULL);
}

/* 1 when "<path><suffix>" (into @path) is the file @f first saw there, or
 * when none was seen yet (the first one seen is learned); 0 when it is gone,
 * another, or (@f->grow_only) shorter than it was while this process maps
 * it.  A -shm shorter than seen, the same file, while no connection of
 * this process is attached to it (none maps it) was rebuilt: the first
 * connection to attach after all had let it go truncates it and builds the
 * index anew from the -wal, as SQLite does, and a reader that may not write
 * it reads the -wal itself, unattached, meanwhile; it is learned again at
 * its new size.  Attached, a connection keeps every other from doing so:
 * shorter then, it was truncated under the mapping (shm_short). */
static int side_same(struct sq *s, const char *suffix, struct side_file *f, char path[PATH_MAX + 8])
{
	struct stat st;

	snprintf(path, PATH_MAX + 8, "%s%s", s->base.label, suffix);
	if (stat(path, &st))
		return !f->known;
	if (f->known && (st.st_dev != f->dev || st.st_ino != f->ino))
		return 0;
	if (f->known && f->grow_only && st.st_size < f->size) {
		if (mapped_bytes(path, &st) > 0)
			return 0;
		f->size = st.st_size;
	}
	f->dev = st.st_dev;
	f->ino = st.st_ino;
	if (st.st_size > f->size)
		f->size = st.st_size;
	f->known = 1;
	return 1;
}

/*
 * Copy the commits of the -wal found gone into the file, through the
 * connection that still has it open (@mode: FULL when found, which waits
 * the busy timeout for readers; PASSIVE at each later call, which does
 * not).  A reader of an older state (a long export) stops the copy at its
 * snapshot, and a partly copied file is not a consistent store without the
 * rest of its WAL: left so, those commits were gone, and the file was
 * corrupt, once the process died or closed the store while the reader
 * still had it open.  So the copy is tried again at every call, and as the
 * store is closed, until it is complete.  s->lost_err says how far it got.
 */
static void wal_rescue(struct sq *s, int mode)
{
	int rc, log = 0, done = 0;

	rc = sqlite3_wal_checkpoint_v2(s->db, NULL, mode, &log, &done);
	s->wal_pending = !(rc == SQLITE_OK && done == log);
	if (!s->wal_pending) {
		stale_files(s); /* all copied: another checkpoint could only do harm */
		sid_error_set(&s->lost_err, SID_EUNAVAIL,
			      "registry %s: %s-wal was deleted or replaced while in use; its "
			      "commits were copied into the file, and nothing more is written: "
			      "reopen the store (restart semid-server) to go on",
			      s->base.label, s->base.label);
	} else {
		sid_error_set(&s->lost_err, SID_EUNAVAIL,
			      "registry %s: %s-wal was deleted or replaced while in use, and its "
			      "commits could not all be copied into the file yet (%s: another "
			      "connection reads an older state); every call tries again, and so "
			      "does closing the store: until then the file alone is not a "
			      "consistent store",
			      s->base.label, s->base.label,
			      rc == SQLITE_OK ? "readers held them" : sqlite3_errmsg(s->db));
	}
}

/* 1 when the -wal is found gone (s->lost_err says what became of its
 * commits), else 0 */
static int wal_check(struct sq *s)
{
	char wal[PATH_MAX + 8];

	/* (none yet: SQLite makes it at the first read; an immutable
	 * connection has none) */
	if (s->immutable || !s->db || side_same(s, "-wal", &s->wal, wal))
		return 0;
	if (s->readonly) {
		sid_error_set(&s->lost_err, SID_EUNAVAIL,
			      "registry %s: %s was deleted or replaced while in use; nothing more "
			      "is read through the old one (later commits would be missed): "
			      "reopen the store (restart semid-server) to go on",
			      s->base.label, wal);
		return 1;
	}
	wal_rescue(s, SQLITE_CHECKPOINT_FULL);
	return 1;
}

/*
 * The -shm is the index of the WAL that every connection to the store maps
 * and shares, and it holds the locks that keep writers one at a time.
 * Deleted or replaced while the store is open (a cleanup of side files),
 * this handle's connections keep the old one, and a process that opens the
 * store then makes a new one from the -wal: two indexes of one WAL, and
 * two writers that no longer see each other's lock.  This handle then
 * wrote its commits over the other process's frames: both handed out the
 * same suffixes, and the other's acknowledged ids were gone.  Reads
 * through the old index miss the other's commits, or read frames it has
 * written over.  Truncated in place, it is still mapped in every process
 * that has the store open, and the next touch of a page past its new end
 * kills the process with SIGBUS; SQLite itself never shortens it while a
 * connection has it open (a -shm rebuilt while none of this process was
 * attached is no loss: side_same).  Found gone, replaced or shorter, the handle
 * reads and writes no more, and never checkpoints (stale_files): its
 * commits are in the -wal, where the next connection to open the store
 * finds them.
 */
static int shm_check(struct sq *s)
{
	char shm[PATH_MAX + 8];

	/* (an immutable connection has no -shm) */
	if (s->immutable || !s->db || side_same(s, "-shm", &s->shm, shm))
		return 0;
	sid_error_set(&s->lost_err, SID_EUNAVAIL,
		      "registry %s: %s was deleted, replaced or truncated while in use; nothing "
		      "more is read or written through it (its commits are in the -wal): "
		      "reopen the store (restart semid-server) to go on",
		      s->base.label, shm);
	stale_files(s);
	return 1;
}

/* The -wal and the -shm, sticky once either is found gone. */
static int side_check(struct sq *s, struct sid_error *err)
{
	if (s->wal_pending)
		wal_rescue(s, SQLITE_CHECKPOINT_PASSIVE);
	else if (!s->lost && !wal_check(s) && !shm_check(s))
		return 0;
	s->lost = 1;
	if (err)
		*err = s->lost_err;
	return SID_EUNAVAIL;
}

/* A guarded handle (read_open): SID_EUNAVAIL when the file is not as its
 * connection found it, which reads it without locks (a writer's checkpoint
 * changed pages under the read). */
static int guard_check(struct sq *s, struct sid_error *err)
{
	struct stat st;

	if (!s->guarded || stat(s->base.label, &st) ||
	    (st.st_size == s->g_size && st.st_mtim.tv_sec == s->g_mtime.tv_sec &&
	     st.st_mtim.tv_nsec == s->g_mtime.tv_nsec))
		return 0; /* (a file gone or replaced: file_check_now says so) */
	return sid_error_set(err, SID_EUNAVAIL,
			     "registry %s: a writer changed the file while it was read without "
			     "locks (this process may not write it, so it reads the file alone "
			     "while no -wal and -shm are beside it, which would be its to make "
			     "and leave): what was read may mix two states; run it again",
			     s->base.label);
}

/*
 * The path must still name the file this handle opened.  A connection keeps
 * its file open by descriptor, so after the file is deleted, moved away or
 * replaced (a restore copied over it by rename) SQLite goes on reading and
 * committing to the old inode without a word, and every assignment made
 * from then on is gone at the next start.  So every call first checks that
 * the path still leads to the same file (file_check: once per call, however
 * many ops it runs), and an assign checks again after its commit (the file
 * may go while it runs): when it does not, the call fails with SID_EUNAVAIL
 * and nothing more is written to the old file.  The connection is kept:
 * when the file is put back (renamed back) calls go on.  It is not switched
 * to another file found at the path: the -wal and -shm files beside it may
 * still be the old file's (held open here), and SQLite would apply them to
 * the new one; reopening the store (restarting the server) uses the new
 * file.
 *
 * The same holds for the WAL a writing handle commits to: deleted (a
 * cleanup of "stale" side files), it still takes commits, and every commit
 * not yet checkpointed is gone at the next start - all of them if the
 * process dies.  Found gone, it is checkpointed into the file at once (the
 * connection still reads it), and the handle writes no more, nor, once
 * that copy is complete, checkpoints again (stale_files): a new WAL needs
 * every connection to the file reopened.  A handle that writes looks at its
 * -wal once more as it closes, for the same reason.  A read-only handle
 * reads through its -wal as well: by the index a new writer keeps for
 * another WAL, it answered "not found" for stored ids; found gone, it reads
 * no more.
 */
static int file_check_now(struct sq *s, struct sid_error *err)
{
	struct stat st;
	int rc;

	leave_immutable(s);
	if ((rc = guard_check(s, err)))
		return rc;
	if (stat(s->base.label, &st) == 0) {
		if (st.st_dev == s->dev && st.st_ino == s->ino)
			return side_check(s, err);
		return sid_error_set(
		    err, SID_EUNAVAIL,
		    "registry %s: the file was replaced by another file while in "
		    "use; nothing more is written to the old one: reopen the store "
		    "(restart semid-server) to use the new file",
		    s->base.label);
	}
	if (errno == ENOENT || errno == ENOTDIR)
		return sid_error_set(err, SID_EUNAVAIL,
				     "registry %s: the file was deleted or moved away while in "
				     "use; nothing more is written to the old file (those commits "
				     "would be lost at the next start): put it back at %s",
				     s->base.label, s->base.label);
	return sid_error_set(err, SID_EUNAVAIL,
			     "registry %s: cannot check that the file is still there: %s",
			     s->base.label, strerror(errno));
}

/* file_check_now once per call: skipped when this call (r->calls, counted
 * by registry.c) already found the file in place.  A call may run several
 * ops (a lookup by sid reads the levels first) or one per id (an assign on
 * a read-only handle), and each check costs a stat or two. */
static int file_check(struct sq *s, struct sid_error *err)
{
	int rc;

	if (s->checked_call == s->base.calls)
		return 0;
	rc = file_check_now(s, err);
	if (!rc)
		s->checked_call = s->base.calls;
	return rc;
}

static int sq_get(struct sid_registry *r, int kind, const char *id, struct sid_reg_entry *out,
		  struct sid_error *err)
{
	int rc = file_check((struct sq *)r, err);

	if (rc)
		return rc;
	rc = get_row((struct sq *)r, kind, id, out, NULL, err);
	if (guard_check((struct sq *)r, err))
		return SID_EUNAVAIL;
	if (rc == 0)
		return sid_error_set(err, SID_ENOTFOUND, "%s id \"%s\": not found",
				     sid_tower_name(kind), id);
	return rc < 0 ? rc : 0;
}

static int sq_get_sid(struct sid_registry *r, int kind, const int32_t *codes, int L, int64_t suffix,
		      struct sid_reg_entry *out, struct sid_error *err)
{
	uint8_t packed[SID__REG_CODES_BYTES];
	char sid[SID_REG_SID_MAX];
	int rc = file_check((struct sq *)r, err);

	if (rc)
		return rc;
	sid__reg_codes_pack(codes, L, packed);
	rc = get_sid_row((struct sq *)r, kind, packed, L, suffix, out, err);
	if (guard_check((struct sq *)r, err))
		return SID_EUNAVAIL;
	if (rc == 0) {
		sid_reg_sid_format(codes, L, suffix, sid, sizeof(sid));
		return sid_error_set(err, SID_ENOTFOUND, "%s sid %s: not found",
				     sid_tower_name(kind), sid);
	}
	return rc < 0 ? rc : 0;
}

static int sq_get_many(struct sid_registry *r, int kind, const struct sid_reg_item *items, size_t n,
		       struct sid_reg_entry *out, size_t *missing, struct sid_error *err)
{
	struct sq *s = (struct sq *)r;
	int rc = file_check(s, err);

	if (rc)
		return rc;
	/* one read transaction: one snapshot for all of them */
	if ((rc = exec(s, "BEGIN", err, "begin")))
		return rc;
	for (size_t i = 0; i < n; i++) {
		rc = get_row(s, kind, items[i].id, &out[i], NULL, err);
		if (rc == 0) {
			*missing = i;
			rc = SID_ENOTFOUND;
		}
		if (rc != 1)
			break;
		rc = 0;
	}
	{
		int crc = exec(s, "COMMIT", rc ? NULL : err, "end the read");
		if (crc && !rc)
			rc = crc;
	}
	if (!sqlite3_get_autocommit(s->db))
		rollback(s);
	if (guard_check(s, err))
		return SID_EUNAVAIL;
	return rc;
}

static int sq_list(struct sid_registry *r, int kind, const uint8_t *lo, size_t lo_len,
		   const uint8_t *hi, size_t hi_len, const uint8_t *after, size_t after_len,
		   int64_t after_suffix, size_t limit, struct sid_reg_entry *out, size_t *n_out,
		   struct sid_error *err)
{
	struct sq *s = (struct sq *)r;
	sqlite3_stmt *st;
	size_t n = 0;
	int rc;

	if ((rc = file_check(s, err))) {
		*n_out = 0;
		return rc;
	}
	st = stmt(s, S_LIST);
	sqlite3_bind_int(st, 1, kind);
	sqlite3_bind_blob(st, 2, lo_len ? (const void *)lo : "", (int)lo_len, SQLITE_STATIC);
	sqlite3_bind_blob(st, 3, hi, (int)hi_len, SQLITE_STATIC);
	sqlite3_bind_blob(st, 4, after_len ? (const void *)after : "", (int)after_len,
			  SQLITE_STATIC);
	sqlite3_bind_int64(st, 5, after_suffix);
	sqlite3_bind_int64(st, 6, (sqlite3_int64)limit);
	while ((rc = step(s, st)) == SQLITE_ROW) {
		if (row_entry(s, st, SID__REG_ROW_ANY, &out[n], err)) {
			rc = SID_EDATA;
			break;
		}
		n++;
	}
	sqlite3_reset(st);
	*n_out = n;
	if (guard_check(s, err)) {
		*n_out = 0;
		return SID_EUNAVAIL;
	}
	if (rc == SID_EDATA)
		return rc;
	return rc == SQLITE_DONE ? 0 : sq_fail(s, rc, err, "list");
}

static int sq_levels(struct sid_registry *r, int kind, int *L, struct sid_error *err)
{
	int rc = file_check((struct sq *)r, err);
	return rc ? rc : levels_get((struct sq *)r, kind, L, err);
}

static int sq_ping(struct sid_registry *r, struct sid_error *err)
{
	int L, rc = file_check((struct sq *)r, err);
	return rc ? rc : levels_read((struct sq *)r, SID_TOWER_ITEM, &L, err);
}

/* The one number @sql selects (a table's largest rowid, a pragma's value;
 * 0 when there is none or it cannot be read). */
static int64_t select_int(struct sq *s, const char *sql)
{
	sqlite3_stmt *st = NULL;
	int64_t n = 0;

	if (prepare(s, sql, &st) == SQLITE_OK && step(s, st) == SQLITE_ROW)
		n = sqlite3_column_int64(st, 0);
	sqlite3_finalize(st);
	return n;
}

/*
 * A walk (in (kind, codes, suffix) order, each row then read by its rowid)
 * and the file check's look-ups of each row in the indexes go to pages all
 * over a large file, and a 2 MiB page cache misses at every other step: 64
 * MiB while they run (2x faster at a million entries, "PRAGMA
 * integrity_check" 1.7x), given back after.  Returns the size to restore.
 */
static int cache_raise(struct sq *s)
{
	int old = (int)select_int(s, "PRAGMA cache_size");

	sqlite3_exec(s->db, "PRAGMA cache_size = -65536", NULL, NULL, NULL);
	return old;
}

static void cache_restore(struct sq *s, int size)
{
	char sql[64];

	snprintf(sql, sizeof(sql), "PRAGMA cache_size = %d", size);
	sqlite3_exec(s->db, sql, NULL, NULL, NULL);
}

/* A row a tolerant walk cannot read (or its embedding), told to @bad; the
 * message is the one a walk stops with (in *err). */
static int sq_bad(sqlite3_stmt *st, enum sid_reg_problem problem, sid_reg_finding_fn bad, void *ctx,
		  const struct sid_error *err)
{
	const char *id = (const char *)sqlite3_column_text(st, 1);
	struct sid_reg_finding f = {problem, sqlite3_column_int(st, 0), sqlite3_column_int64(st, 8),
				    NULL, err->msg};

	if (id && !sid_reg_id_check(id, NULL))
		f.id = id;
	return bad(&f, ctx);
}

static int sq_foreach(struct sid_registry *r, int kind, int want_emb, sid_reg_foreach_fn fn,
		      sid_reg_finding_fn bad, void *ctx, struct sid_error *err)
{
	struct sq *s = (struct sq *)r;
	char sql[512];
	sqlite3_stmt *st = NULL;
	struct sid_reg_entry e;
	float *buf = NULL;
	int rc, cap = 0, codes_only, cache = 0, stopped = 0;

	if ((rc = file_check(s, err)))
		return rc;
	if (want_emb == SID__REG_WALK_CODES) /* the sid index alone covers it */
		snprintf(sql, sizeof(sql),
			 "SELECT a.kind, '', a.codes, a.suffix, '', 0, 0, 0, a.rid"
			 " FROM semid_assignment a %s ORDER BY a.kind, a.codes, a.suffix",
			 kind >= 0 ? "WHERE a.kind = ?1" : "");
	else
		snprintf(sql, sizeof(sql),
			 "SELECT a.kind, a.id, a.codes, a.suffix, a.model_version, a.created_ms,"
			 " a.updated_ms, a.emb_dim, a.rid%s FROM semid_assignment a%s %s"
			 " ORDER BY a.kind, a.codes, a.suffix",
			 want_emb ? ", e.emb" : "",
			 want_emb ? " LEFT JOIN semid_embedding e ON e.rid = a.rid" : "",
			 kind >= 0 ? "WHERE a.kind = ?1" : "");
	codes_only = want_emb == SID__REG_WALK_CODES;
	want_emb = want_emb == 1;
	rc = prepare(s, sql, &st);
	if (rc)
		return sq_fail(s, rc, err, "walk");
	if (kind >= 0)
		sqlite3_bind_int(st, 1, kind);
	if (!codes_only) /* (the codes alone come from the sid index, in order) */
		cache = cache_raise(s);
	while ((rc = step(s, st)) == SQLITE_ROW) {
		const float *emb = NULL;
		if (row_entry(s, st, codes_only ? SID__REG_ROW_CODES : SID__REG_ROW_ANY, &e, err)) {
			rc = SID_EDATA;
			if (bad && !(rc = sq_bad(st, SID_REG_P_UNREADABLE, bad, ctx, err)))
				continue;
			goto out;
		}
		if (bad && sid__reg_kind_bad(r, &e, sqlite3_column_int64(st, 8), bad, ctx, &rc)) {
			if (!rc)
				continue;
			goto out;
		}
		if (want_emb && sqlite3_column_type(st, 9) != SQLITE_NULL) {
			int bytes = sqlite3_column_bytes(st, 9);
			if (bytes != (int)sizeof(float) * e.D || e.D < 1 ||
			    sqlite3_column_type(st, 9) != SQLITE_BLOB) {
				rc = sid_error_set(err, SID_EDATA,
						   "registry %s: id %s: embedding of %d bytes%s, "
						   "want %d",
						   s->base.label, e.id, bytes,
						   sqlite3_column_type(st, 9) != SQLITE_BLOB
						       ? " stored as text or a number"
						       : "",
						   (int)sizeof(float) * e.D);
				if (bad && !(rc = sq_bad(st, SID_REG_P_EMBEDDING, bad, ctx, err)))
					continue;
				goto out;
			}
			if (e.D > cap) { /* copied: a blob need not be float-aligned */
				float *nb = realloc(buf, sizeof(float) * e.D);
				if (!nb) {
					rc = sid_error_set(err, SID_ENOMEM, "walk: out of memory");
					goto out;
				}
				buf = nb;
				cap = e.D;
			}
			memcpy(buf, sqlite3_column_blob(st, 9), bytes);
			emb = buf;
		}
		if ((rc = fn(&e, emb, ctx))) {
			stopped = 1;
			goto out;
		}
	}
	rc = rc == SQLITE_DONE ? 0 : sq_fail(s, rc, err, "walk");
out:
	/* read without locks: if the file changed meanwhile, that is the
	 * answer, whatever the pages read said (a "damaged" entry too) */
	if (!stopped && rc != SID_ENOMEM && guard_check(s, err))
		rc = SID_EUNAVAIL;
	sqlite3_finalize(st);
	if (!codes_only)
		cache_restore(s, cache);
	free(buf);
	return rc;
}

static int sq_count(struct sid_registry *r, int kind, int with_emb, uint64_t *n,
		    struct sid_error *err)
{
	struct sq *s = (struct sq *)r;
	sqlite3_stmt *st = NULL;
	char sql[160];
	int rc;

	if ((rc = file_check(s, err)))
		return rc;
	sid__reg_count_sql(sql, sizeof(sql), kind, with_emb, "?1");
	rc = prepare(s, sql, &st);
	if (!rc && kind >= 0)
		sqlite3_bind_int(st, 1, kind);
	if (!rc)
		rc = step(s, st);
	if (rc == SQLITE_ROW) {
		*n = (uint64_t)sqlite3_column_int64(st, 0);
		rc = 0;
	} else {
		rc = sq_fail(s, rc, err, "count");
	}
	sqlite3_finalize(st);
	/* (read without locks: a count of two states is none) */
	if (rc != SID_ENOMEM && guard_check(s, err))
		rc = SID_EUNAVAIL;
	return rc;
}

static int sq_import(struct sid_registry *r, const struct sid_reg_entry *e, const float *const *emb,
		     size_t n, int *status, struct sid_reg_entry *existing, struct sid_error *err)
{
	struct sq *s = (struct sq *)r;
	int rc;

	if ((rc = file_check(s, err)) || (rc = run(s, stmt(s, S_BEGIN), err, "begin")))
		return rc;
	for (size_t i = 0; i < n; i++) {
		uint8_t codes[SID__REG_CODES_BYTES];
		int found, diff;

		diff = levels_ensure(s, e[i].kind, e[i].L, err);
		if (diff < 0) {
			rc = diff;
			goto fail;
		}
		if (diff) {
			status[i] = SID__REG_IMPORT_CONFLICT_LEVELS;
			/* the stored IDs' levels, for the message */
			if ((rc = levels_get(s, e[i].kind, &existing[i].L, err)))
				goto fail;
			continue;
		}
		if (!s->levels[e[i].kind])
			s->levels[e[i].kind] = e[i].L; /* set in this transaction (rollback()
							* forgets it) */
		found = get_row(s, e[i].kind, e[i].id, &existing[i], NULL, err);
		if (found < 0) {
			rc = found;
			goto fail;
		}
		if (found) {
			status[i] =
			    existing[i].L == e[i].L && existing[i].suffix == e[i].suffix &&
				    !memcmp(existing[i].codes, e[i].codes, sizeof(int32_t) * e[i].L)
				? SID__REG_IMPORT_SAME
				: SID__REG_IMPORT_CONFLICT_ID;
			continue;
		}
		sid__reg_codes_pack(e[i].codes, e[i].L, codes);
		found = get_sid_row(s, e[i].kind, codes, e[i].L, e[i].suffix, &existing[i], err);
		if (found < 0) {
			rc = found;
			goto fail;
		}
		if (found) {
			status[i] = SID__REG_IMPORT_CONFLICT_SID;
			continue;
		}
		{
			int64_t max;
			rc = max_suffix(s, e[i].kind, codes, e[i].L, &max, err);
			if (!rc && e[i].suffix - 1 > max) /* max + 1 overflows at INT64_MAX */
				rc = gaps_mark(s, e[i].kind, err);
			if (rc)
				goto fail;
		}
		rc = insert_row(s, &e[i], codes, emb[i], err);
		if (rc)
			goto fail;
		status[i] = SID__REG_IMPORT_ADDED;
	}
	rc = run(s, stmt(s, S_COMMIT), err, "commit");
	if (!rc) /* committed to a file no longer there: not durable */
		return file_check_now(s, err);
fail:
	rollback(s);
	return rc;
}

static void last_close(const char *path);

static void sq_close(struct sid_registry *r)
{
	struct sq *s = (struct sq *)r;
	/* a handle idle since its -wal or -shm went finds it now (s->ino:
	 * opened); a copy of a -wal found gone that readers held up gets the
	 * busy timeout once more (SQLite's own checkpoint on close needs every
	 * other connection gone) */
	if (s->ino && !s->readonly)
		side_check(s, NULL);
	/* a reader whose close may remove the -wal and -shm (the last
	 * connection's does, by name): only the ones it used, beside the file
	 * it opened (known before the open, read_open: one that failed after
	 * SQLite made them removes them too) */
	if (s->tidy && s->db && (!s->ino || file_check_now(s, NULL)))
		sqlite3_db_config(s->db, SQLITE_DBCONFIG_NO_CKPT_ON_CLOSE, 1, NULL);
	if (s->owner_read &&
	    (!s->db || !s->ino || s->lost || s->immutable || file_check_now(s, NULL)))
		s->owner_read = 0;
	if (s->wal_pending)
		wal_rescue(s, SQLITE_CHECKPOINT_FULL);
	ckpt_stop(s);
	for (int i = 0; i < S_COUNT; i++)
		sqlite3_finalize(s->st[i]);
	sqlite3_close(s->db);
	if (s->owner_read)
		last_close(s->base.label);
	free(s->base.label);
	free(s);
}

/*
 * The backup: SQLite's online backup API, in steps of BACKUP_STEP pages so
 * that progress can be told.  A step copies what the source shows at that
 * moment, and a commit by another connection between steps would make the
 * next step start over (a busy server would never let it end), so a read
 * transaction is held on the source from the first step to the last: every
 * step sees the one snapshot, and writers go on (WAL), though the WAL cannot
 * be restarted behind it until it ends.  The copy needs no journal: it is
 * a temp file until its caller publishes it.
 */
#define BACKUP_STEP 1024

static int sq_backup(struct sid_registry *r, const char *dest, const char *final,
		     sid_reg_progress_fn fn, void *ctx, struct sid_error *err)
{
	struct sq *s = (struct sq *)r;
	/* what messages call @dest: "the temporary file for FINAL" */
	const char *tmp_for = final ? "the temporary file for " : "", *name = final ? final : dest;
	sqlite3 *d = NULL;
	sqlite3_backup *b = NULL;
	sqlite3_stmt *st = NULL;
	const char *ok;
	uint64_t page;
	int rc;

	if ((rc = file_check(s, err)))
		return rc;
	if ((rc = exec(s, "BEGIN", err, "backup")))
		return rc;
	/* the snapshot begins with the first read */
	if ((rc = exec(s, "SELECT count(*) FROM semid_meta", err, "backup")))
		goto out;
	if ((rc = sqlite3_prepare_v2(s->db, "PRAGMA page_size", -1, &st, NULL)) ||
	    sqlite3_step(st) != SQLITE_ROW) {
		rc = sq_fail(s, rc ? rc : sqlite3_errcode(s->db), err, "backup");
		goto out;
	}
	page = (uint64_t)sqlite3_column_int64(st, 0);
	sqlite3_finalize(st);
	st = NULL;
	rc = sqlite3_open_v2(dest, &d, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE, NULL);
	if (rc == SQLITE_OK)
		rc = sqlite3_exec(d, "PRAGMA journal_mode=OFF; PRAGMA synchronous=OFF", NULL, NULL,
				  NULL);
	if (rc == SQLITE_OK && !(b = sqlite3_backup_init(d, "main", s->db, "main")))
		rc = sqlite3_errcode(d);
	while (rc == SQLITE_OK) {
		rc = sqlite3_backup_step(b, BACKUP_STEP);
		if (fn && (rc == SQLITE_OK || rc == SQLITE_DONE)) {
			int total = sqlite3_backup_pagecount(b);
			fn(ctx, page * (uint64_t)(total - sqlite3_backup_remaining(b)),
			   page * (uint64_t)total);
		}
	}
	if (b && sqlite3_backup_finish(b) != SQLITE_OK && rc == SQLITE_DONE)
		rc = sqlite3_errcode(d);
	/* the copy's header says WAL, as the store's does: a rollback journal
	 * instead, so that reading the backup leaves no -wal and -shm beside
	 * it (a server opening it as its store switches it back) */
	if (rc == SQLITE_DONE &&
	    (rc = sqlite3_exec(d, "PRAGMA journal_mode=DELETE", NULL, NULL, NULL)) == SQLITE_OK)
		rc = SQLITE_DONE;
	if (rc != SQLITE_DONE) {
		char cause[128];
		rc = sid_error_set(err, rc == SQLITE_NOMEM ? SID_ENOMEM : SID_EIO,
				   "registry %s: backup to %s%s: %s%s", s->base.label, tmp_for,
				   name, d ? sqlite3_errmsg(d) : sqlite3_errstr(rc),
				   sys_cause(d, rc, cause, sizeof(cause)));
		goto out;
	}
	rc = sqlite3_prepare_v2(d, "PRAGMA quick_check", -1, &st, NULL);
	if (rc == SQLITE_OK)
		rc = sqlite3_step(st);
	ok = rc == SQLITE_ROW ? (const char *)sqlite3_column_text(st, 0) : NULL;
	if (!ok || strcmp(ok, "ok") != 0) {
		rc = sid_error_set(err, SID_EIO,
				   "registry %s: the backup in %s%s fails its check: %s",
				   s->base.label, tmp_for, name, ok ? ok : sqlite3_errmsg(d));
		goto out;
	}
	/* read without locks (another user's store): the copy is of one
	 * state only if no writer changed the file meanwhile */
	rc = guard_check(s, err);
out:
	sqlite3_finalize(st);
	if (d && sqlite3_close(d) != SQLITE_OK && !rc)
		rc = sid_error_set(err, SID_EIO, "registry %s: backup to %s%s: %s", s->base.label,
				   tmp_for, name, sqlite3_errmsg(d));
	run(s, stmt(s, S_ROLLBACK), NULL, "backup"); /* the read transaction */
	return rc;
}

int sid_registry_sqlite_fold_wal(const char *path, struct sid_error *err)
{
	sqlite3 *db = NULL;
	sqlite3_stmt *st = NULL;
	char cause[128];
	int rc;

	/* Read it first without the right to write: a read-write connection
	 * that cannot read the file still checkpoints the -wal into it and
	 * removes the -wal as it closes, which leaves an unreadable file
	 * changed and its commits gone. */
	rc = sqlite3_open_v2(path, &db, SQLITE_OPEN_READONLY, NULL);
	if (rc == SQLITE_OK)
		rc = sqlite3_prepare_v2(db, "SELECT count(*) FROM sqlite_master", -1, &st, NULL);
	if (rc == SQLITE_OK)
		rc = sqlite3_step(st);
	if (rc != SQLITE_ROW) {
		rc = sid_error_set(err, (rc & 0xff) == SQLITE_BUSY ? SID_EUNAVAIL : SID_EFORMAT,
				   "registry %s: cannot read it: %s%s", path,
				   db ? sqlite3_errmsg(db) : sqlite3_errstr(rc),
				   sys_cause(db, rc, cause, sizeof(cause)));
		sqlite3_finalize(st);
		sqlite3_close(db);
		return rc;
	}
	sqlite3_finalize(st);
	sqlite3_close(db);
	st = NULL;
	db = NULL;
	if (access(path, W_OK) != 0) /* before SQLite opens it and reads the -wal */
		return sid_error_set(err, SID_EIO, "registry %s: cannot write it: %s", path,
				     strerror(errno));
	rc = sqlite3_open_v2(path, &db, SQLITE_OPEN_READWRITE, NULL);
	if (rc == SQLITE_OK)
		rc = sqlite3_prepare_v2(db, "PRAGMA wal_checkpoint(TRUNCATE)", -1, &st, NULL);
	if (rc == SQLITE_OK)
		rc = sqlite3_step(st);
	if (rc == SQLITE_ROW && sqlite3_column_int(st, 0))
		rc = sid_error_set(err, SID_EUNAVAIL,
				   "registry %s: another process is using the store; stop it first",
				   path);
	else if (rc == SQLITE_ROW)
		rc = 0;
	else
		rc = sid_error_set(err, (rc & 0xff) == SQLITE_BUSY ? SID_EUNAVAIL : SID_EIO,
				   "registry %s: cannot copy its -wal into it: %s%s", path,
				   db ? sqlite3_errmsg(db) : sqlite3_errstr(rc),
				   sys_cause(db, rc, cause, sizeof(cause)));
	sqlite3_finalize(st);
	sqlite3_close(db);
	return rc;
}

/*
 * How far the file check got, for r->progress, in rows of the file's tables
 * (their largest rowids: no count of 10 million rows first): an estimate
 * from the instructions SQLite has run, about 34 an entry and 4 an
 * embedding row (SQLite 3.40, measured on stores of 2 000 and 1 000 000
 * entries), told every 100 000 and kept short of the total until the end.
 */
#define CHECK_OPS_ENTRY	    34
#define CHECK_OPS_EMBEDDING 4
#define CHECK_TICK	    100000

struct check_told {
	struct sq *s;
	int64_t rows, ops, ticks;
};

static int check_tell(void *p)
{
	struct check_told *t = p;
	int64_t done =
	    (int64_t)((double)++t->ticks * CHECK_TICK / (double)t->ops * (double)t->rows);

	t->s->base.progress(t->s->base.progress_ctx,
			    (uint64_t)(done < t->rows ? done : t->rows - 1), (uint64_t)t->rows);
	return 0;
}

/*
 * The file's own structure: PRAGMA integrity_check (every page, every
 * index against its table; its first 100 problems, one finding each), then
 * the embedding rows that belong to no entry, one finding each with its
 * row (sid_registry_delete_rows removes them).
 */
static int sq_check_store(struct sid_registry *r, sid_reg_finding_fn fn, void *ctx, int *checked,
			  char *how, size_t how_len, struct sid_error *err)
{
	static const char orphans[] =
	    "SELECT rid FROM semid_embedding e"
	    " WHERE NOT EXISTS (SELECT 1 FROM semid_assignment a WHERE a.rid = e.rid)"
	    " ORDER BY rid";
	struct sq *s = (struct sq *)r;
	struct sid_reg_finding f = {SID_REG_P_STORE, -1, -1, NULL, NULL};
	struct check_told told = {s, 0, 0, 0};
	sqlite3_stmt *st = NULL;
	char msg[SID_ERROR_MSG_MAX];
	int rc, cache;

	if ((rc = file_check(s, err)))
		return rc;
	*checked = 1; /* (a file too damaged to finish is found so) */
	snprintf(how, how_len, "PRAGMA integrity_check");
	cache = cache_raise(s);
	if (s->base.progress) {
		int64_t entries = select_int(s, "SELECT max(rid) FROM semid_assignment"),
			embeddings = select_int(s, "SELECT max(rid) FROM semid_embedding");
		told.rows = entries + embeddings + 1;
		told.ops = CHECK_OPS_ENTRY * entries + CHECK_OPS_EMBEDDING * embeddings + 1;
		sqlite3_progress_handler(s->db, CHECK_TICK, check_tell, &told);
	}
	if ((rc = prepare(s, "PRAGMA integrity_check", &st)))
		goto failed;
	while ((rc = step(s, st)) == SQLITE_ROW) {
		const char *what = (const char *)sqlite3_column_text(st, 0);
		if (!what || !strcmp(what, "ok"))
			continue;
		snprintf(msg, sizeof(msg), "registry %s: integrity_check: %s", s->base.label, what);
		f.message = msg;
		if ((rc = fn(&f, ctx)))
			goto out;
	}
	if (rc != SQLITE_DONE)
		goto failed;
	sqlite3_finalize(st);
	st = NULL;
	if ((rc = prepare(s, orphans, &st)))
		goto failed;
	while ((rc = step(s, st)) == SQLITE_ROW) {
		f.row = sqlite3_column_int64(st, 0);
		snprintf(msg, sizeof(msg),
			 "registry %s: row %lld of semid_embedding belongs to no entry (its "
			 "entry was deleted by hand): nothing reads it; semid registry "
			 "delete --rows %lld removes it",
			 s->base.label, (long long)f.row, (long long)f.row);
		f.message = msg;
		if ((rc = fn(&f, ctx)))
			goto out;
	}
	if (rc != SQLITE_DONE)
		goto failed;
	rc = 0;
	goto out;
failed:
	rc = sq_fail(s, rc, err, "check");
out:
	/* read without locks: "damage" in a file a writer changed meanwhile
	 * is the mix of two states, and so may an embedding "of no entry"
	 * be, whose entry's page was read before the writer's */
	if (rc != SID_ENOMEM && guard_check(s, err))
		rc = SID_EUNAVAIL;
	sqlite3_finalize(st);
	cache_restore(s, cache);
	if (told.rows) {
		sqlite3_progress_handler(s->db, 0, NULL, NULL);
		if (!rc)
			s->base.progress(s->base.progress_ctx, (uint64_t)told.rows,
					 (uint64_t)told.rows);
	}
	return rc;
}

static const struct sid__reg_ops sq_ops = {
    .name = "sqlite",
    .close = sq_close,
    .assign = sq_assign,
    .get = sq_get,
    .get_many = sq_get_many,
    .get_sid = sq_get_sid,
    .list = sq_list,
    .levels = sq_levels,
    .ping = sq_ping,
    .foreach = sq_foreach,
    .count = sq_count,
    .import = sq_import,
    .delete_ids = sq_delete,
    .delete_rows = sq_delete_rows,
    .check_store = sq_check_store,
    .backup = sq_backup,
};

/* The schema the registry's guarantees rest on is all there: a store whose
 * unique indexes were dropped would hand out one full ID twice without a
 * word.  (Run at open, after any migration.) */
static int schema_check(struct sq *s, struct sid_error *err)
{
#define TABLE "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?1"
#define UNIQUE                                                                                     \
	"SELECT 1 FROM pragma_index_list('semid_assignment') WHERE name = ?1 AND \"unique\" = 1"
	static const struct {
		const char *sql, *what, *name;
	} need[] = {
	    {TABLE, "the table", "semid_assignment"},
	    {TABLE, "the table", "semid_embedding"},
	    {UNIQUE, "the unique index", "semid_assignment_id"},
	    {UNIQUE, "the unique index", "semid_assignment_sid"},
	};
#undef TABLE
#undef UNIQUE
	sqlite3_stmt *st = NULL;
	int rc;

	for (size_t k = 0; k < sizeof(need) / sizeof(need[0]); k++) {
		rc = prepare(s, need[k].sql, &st);
		if (!rc)
			rc = sqlite3_bind_text(st, 1, need[k].name, -1, SQLITE_STATIC);
		if (!rc)
			rc = step(s, st);
		sqlite3_finalize(st);
		st = NULL;
		if (rc == SQLITE_DONE)
			return sid_error_set(
			    err, SID_EFORMAT,
			    "registry %s: damaged schema: %s %s is missing (restore a "
			    "backup, or import an export into a new store)",
			    s->base.label, need[k].what, need[k].name);
		if (rc != SQLITE_ROW)
			return sq_fail(s, rc, err, "open (schema check)");
	}
	return 0;
}

/* Create or migrate the schema under the write lock.  Its reads (and the
 * schema check's) are a reader's first: they wait out a -shm being rebuilt
 * by its writer as every read does (recovery_wait). */
static int migrate(struct sq *s, int readonly, struct sid_error *err)
{
	sqlite3_stmt *st = NULL;
	int rc, version = -1, tables = 0;

	if (!readonly) {
		rc = exec(s, "BEGIN IMMEDIATE", err, "open");
		if (rc)
			return rc;
	}
	rc = prepare(s,
		     "SELECT (SELECT count(*) FROM sqlite_master WHERE type = 'table'),"
		     " (SELECT count(*) FROM sqlite_master WHERE name = 'semid_meta')",
		     &st);
	if (rc || (rc = step(s, st)) != SQLITE_ROW) {
		rc = sq_fail(s, rc, err, "open");
		goto fail;
	}
	tables = sqlite3_column_int(st, 0);
	if (sqlite3_column_int(st, 1)) {
		sqlite3_finalize(st);
		st = NULL;
		rc = prepare(s, "SELECT value FROM semid_meta WHERE key = 'schema_version'", &st);
		if (rc || (rc = step(s, st)) != SQLITE_ROW) {
			rc = rc == SQLITE_DONE
				 ? sid_error_set(err, SID_EFORMAT,
						 "registry %s: semid_meta has no schema_version",
						 s->base.label)
				 : sq_fail(s, rc, err, "open");
			goto fail;
		}
		version = sid__reg_schema_parse((const char *)sqlite3_column_text(st, 0));
	} else if (tables == 0) {
		version = 0;
	} else {
		rc = sid_error_set(err, SID_EFORMAT,
				   "registry %s: a SQLite database, but not a semid registry (no "
				   "semid_meta table)",
				   s->base.label);
		goto fail;
	}
	sqlite3_finalize(st);
	st = NULL;
	if (version < 0) {
		rc = sid_error_set(err, SID_EFORMAT,
				   "registry %s: its schema_version is not a version number",
				   s->base.label);
		goto fail;
	}
	if (version > SCHEMA_VERSION) {
		rc = sid__reg_schema_ahead(err, s->base.label, version, SCHEMA_VERSION);
		goto fail;
	}
	if (version < SCHEMA_VERSION && readonly) {
		rc = sid_error_set(err, version ? SID_EFORMAT : SID_ENOTFOUND,
				   "registry %s: %s (opened read-only, so not %s)", s->base.label,
				   version ? "old schema" : "empty",
				   version ? "migrated" : "created");
		goto fail;
	}
	for (; version < SCHEMA_VERSION; version++) {
		char sql[96];
		rc = exec(s, migrations[version], err, "migrate");
		snprintf(sql, sizeof(sql),
			 "UPDATE semid_meta SET value = '%d' WHERE key = 'schema_version'",
			 version + 1);
		if (!rc)
			rc = exec(s, sql, err, "migrate");
		if (rc)
			goto fail;
	}
	if ((rc = schema_check(s, err)))
		goto fail;
	if (!readonly && (rc = exec(s, "COMMIT", err, "open")))
		goto fail;
	return 0;
fail:
	sqlite3_finalize(st);
	if (!sqlite3_get_autocommit(s->db))
		sqlite3_exec(s->db, "ROLLBACK", NULL, NULL, NULL);
	return rc;
}

/*
 * A read-only open in a directory this process cannot write (a read-only
 * mount, a volume mounted for reading): SQLite cannot create the -shm file
 * it reads the WAL index from, and refuses to open.  When no WAL with frames
 * lies beside the file (a clean close checkpoints and removes it), the file
 * alone holds every commit and can be opened "immutable" (no locks, no side
 * files).  With frames in a WAL that fallback would miss them, so the open
 * fails, naming the WAL.  An open that failed for another reason (no file
 * descriptor left, EMFILE) in a directory it may write is not this case:
 * its own error stands.  Returns 0 when reopened, 1 when the fallback does
 * not apply, or a SID_E* code with @err set.
 */
/* "file:@p?@query" into @uri (3 * PATH_MAX + 32 bytes; @p shorter than
 * PATH_MAX, @query at most 16 bytes). */
static void file_uri(const char *p, const char *query, char *uri, size_t len)
{
	size_t o = (size_t)snprintf(uri, len, "file:");

	for (; *p; p++) /* percent-encode all but unreserved characters and '/' */
		if ((*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z') ||
		    (*p >= '0' && *p <= '9') || strchr("/-._~", *p))
			uri[o++] = *p;
		else
			o += (size_t)snprintf(uri + o, 4, "%%%02X", (unsigned char)*p);
	snprintf(uri + o, len - o, "?%s", query);
}

/* "file:@p?immutable=1": SQLite reads the file alone, without locks or
 * side files. */
static void immutable_uri(const char *p, char *uri, size_t len)
{
	file_uri(p, "immutable=1", uri, len);
}

static int reopen_immutable(struct sq *s, struct sid_error *err)
{
	char wal[PATH_MAX + 8], uri[3 * PATH_MAX + 32];
	const char *p = s->base.label;
	int rc = sqlite3_extended_errcode(s->db), why = rc & 0xff, dir;
	struct stat st;

	/* (not a -shm its writer was rebuilding: a writer has the store
	 * open, whose commits the file alone would miss; waited for already) */
	if ((why != SQLITE_CANTOPEN && why != SQLITE_READONLY) || rc == SQLITE_READONLY_RECOVERY ||
	    strlen(p) >= PATH_MAX || !(dir = dir_trouble(p, sys_errno(s->db, rc))))
		return 1;
	snprintf(wal, sizeof(wal), "%s-wal", p);
	if (stat(wal, &st) == 0 && st.st_size > 0)
		return sid_error_set(err, SID_EIO,
				     "registry %s: cannot read it from %s while %s holds commits "
				     "not yet in the file (open it once with write access to "
				     "checkpoint them)",
				     p,
				     dir == EROFS ? "a read-only file system"
						  : "a directory this process cannot write",
				     wal);
	immutable_uri(p, uri, sizeof(uri));
	sqlite3_close(s->db);
	s->db = NULL;
	if ((rc = sqlite3_open_v2(uri, &s->db,
				  SQLITE_OPEN_READONLY | SQLITE_OPEN_URI | SQLITE_OPEN_NOMUTEX,
				  NULL)) != SQLITE_OK)
		return sq_fail(s, rc, err, "open (immutable, read-only directory)");
	sqlite3_extended_result_codes(s->db, 1);
	s->immutable = 1;
	s->reopen_ms = sid__reg_mono_ms() + 1000;
	return 0;
}

/*
 * A read-only connection through a writer's -wal and -shm must make neither:
 * made by a reader that may not write the store, they are its files, which
 * the store's owner cannot write, and its writer then fails ("the file is
 * read-only") until someone deletes them.  Both were seen there just before
 * the open, but a writer's clean close may remove them before the
 * connection's first read (it holds the file's exclusive lock as it does,
 * and the read waits for it), and SQLite then makes them anew for the
 * reader.  Once the read holds its shared lock no close can remove them, so
 * the connection is made never to create them: the -wal through
 * "semid-noside", the "unix" VFS whose opens of a -wal never create one,
 * the -shm, for a process that may not write the store, by readonly_shm=1
 * (opened for reading only, never made: such a reader could not write the
 * owner's -shm anyway; one that may write the store makes its own, as the
 * owner's or, for root, given to the owner by SQLite).  Files gone, the
 * first read fails SQLITE_CANTOPEN, and the caller decides again.
 */
static sqlite3_vfs noside_vfs;
static pthread_once_t noside_once = PTHREAD_ONCE_INIT;

static int noside_open(sqlite3_vfs *vfs, sqlite3_filename name, sqlite3_file *f, int flags,
		       int *out)
{
	sqlite3_vfs *unix_vfs = vfs->pAppData;

	if (flags & SQLITE_OPEN_WAL)
		flags &= ~SQLITE_OPEN_CREATE;
	return unix_vfs->xOpen(unix_vfs, name, f, flags, out);
}

static void noside_register(void)
{
	sqlite3_vfs *unix_vfs = sqlite3_vfs_find(NULL);

	if (!unix_vfs)
		return;
	noside_vfs = *unix_vfs;
	noside_vfs.pNext = NULL;
	noside_vfs.zName = "semid-noside";
	noside_vfs.pAppData = unix_vfs;
	noside_vfs.xOpen = noside_open;
	if (sqlite3_vfs_register(&noside_vfs, 0) != SQLITE_OK)
		noside_vfs.zName = NULL;
}

/*
 * Whether this process may write the store at @path (shorter than
 * PATH_MAX) as its owner does: the file, and the -wal and -shm beside it
 * that are there.  A connection that may write the file but not the -shm
 * (a member of the store's group, beside the -shm its owner's writer made
 * 0644) maps the -shm read-only, and can neither take part in its locks as
 * a writer's connection nor checkpoint and remove the files as it closes:
 * as the owner's read (read_open) it made the missing -wal, its own, which
 * the owner's writer could then not write, and left it.  Such a process
 * reads as one that may not write the store.
 */
static int may_write(const char *path)
{
	static const char *const sides[] = {"-wal", "-shm"};
	char side[PATH_MAX + 8];

	if (faccessat(AT_FDCWD, path, W_OK, AT_EACCESS))
		return 0;
	for (size_t k = 0; k < sizeof(sides) / sizeof(sides[0]); k++) {
		snprintf(side, sizeof(side), "%s%s", path, sides[k]);
		if (faccessat(AT_FDCWD, side, W_OK, AT_EACCESS) && errno != ENOENT)
			return 0;
	}
	return 1;
}

/*
 * An owner's read through a writer's -wal and -shm (read_open) outlives
 * the writer: the writer's close, not the last, left both, and a read-only
 * connection's close cannot copy the -wal into the file nor remove them
 * (that takes the file's exclusive lock, for writing).  So, its own
 * connection closed, the handle of a process that may write the store
 * opens a read-write one and closes it: the last connection to the store
 * then, it copies the -wal into the file and removes both, as the writer's
 * close would have; while another connection has the store open it only
 * closes.  (It never makes a -wal: semid-noside.)
 */
static void last_close(const char *path)
{
	sqlite3 *db = NULL;

	if (!noside_vfs.zName || !may_write(path))
		return;
	if (sqlite3_open_v2(path, &db, SQLITE_OPEN_READWRITE | SQLITE_OPEN_NOMUTEX,
			    "semid-noside") == SQLITE_OK)
		sqlite3_exec(db, "SELECT count(*) FROM sqlite_master", NULL, NULL, NULL);
	sqlite3_close(db);
}

/* Open @path (shorter than PATH_MAX) read-only through the -wal and -shm
 * beside it, making no -wal, nor (@ro_shm) a -shm (above); SQLite's result
 * code. */
static int reader_open(const char *path, int ro_shm, sqlite3 **db)
{
	char uri[3 * PATH_MAX + 32];

	pthread_once(&noside_once, noside_register);
	if (!noside_vfs.zName)
		return SQLITE_ERROR;
	file_uri(path, ro_shm ? "readonly_shm=1" : "mode=ro", uri, sizeof(uri));
	return sqlite3_open_v2(
	    uri, db, SQLITE_OPEN_READONLY | SQLITE_OPEN_URI | SQLITE_OPEN_NOMUTEX, "semid-noside");
}

/* The busy handler of s->db while the open runs: a lock held elsewhere is
 * waited for until s->open_deadline, what the open's earlier steps waited
 * taken from it (a busy timeout per step waited it out once for the first
 * read of the -wal, again for the schema check: twice in all). */
static int open_busy(void *p, int count)
{
	struct sq *s = p;
	int64_t left = s->open_deadline - sid__reg_mono_ms();

	(void)count;
	if (left <= 0)
		return 0;
	usleep((useconds_t)(left < 5 ? left : 5) * 1000);
	return 1;
}

/* s->db waits for a lock as the open may: until s->open_deadline. */
static void open_waits(struct sq *s)
{
	sqlite3_busy_handler(s->db, open_busy, s);
}

/* reader_open of @path for this process into s->db, and a first read: 1
 * when the -wal or -shm was gone by then (s->db closed: the caller decides
 * again; not on its @last try), else 0, or what the open failed with.  (A
 * first read that failed otherwise is the schema check's to tell.) */
static int reader_first(struct sq *s, const char *path, int last)
{
	int rc = reader_open(path, !may_write(path), &s->db);

	if (rc)
		return rc;
	/* (a writer's close holds the lock as it removes them: waited for;
	 * and a -shm a writer just made, which only it may initialise, is
	 * SQLITE_READONLY_RECOVERY to a reader that may not write it until
	 * it has: waited for as long, recovery_wait) */
	sqlite3_extended_result_codes(s->db, 1);
	open_waits(s);
	rc = db_exec(s, s->db, "SELECT count(*) FROM sqlite_master");
	if (last || (rc & 0xff) != SQLITE_CANTOPEN)
		return 0;
	sqlite3_close(s->db);
	s->db = NULL;
	return 1;
}

#define READ_TRIES 5 /* decisions of the way to read, in a row (reader_first) */

/*
 * SID_REG_PEEK: open @path for a read that leaves its directory as it was
 * and takes no lock a writer could wait for.  Any SQLite connection to a WAL
 * store, a read-only one too, makes "<path>-wal" and "<path>-shm" when they
 * are missing, and leaves them.  With both there (a process has the store
 * open, or one died), an ordinary read-only connection makes nothing and
 * only shares the locks readers share; with no WAL or an empty one (a clean
 * close checkpoints and removes it), the file alone holds every commit and
 * is read as immutable (no lock, no side file).  A WAL with commits but no
 * -shm cannot be read without making one: SID_EUNAVAIL.  Either way the
 * connection does not checkpoint as it closes (that takes the file's
 * exclusive lock).
 */
static int peek_open(struct sq *s, const char *path, struct sid_error *err)
{
	char wal[PATH_MAX + 8], shm[PATH_MAX + 8], uri[3 * PATH_MAX + 32];
	struct stat wst;
	int has_wal, has_shm, rc, tries = 0;

	if (strlen(path) >= PATH_MAX)
		return sid_error_set(err, SID_EINVAL, "registry %s: path too long", path);
	snprintf(wal, sizeof(wal), "%s-wal", path);
	snprintf(shm, sizeof(shm), "%s-shm", path);
again:
	has_wal = stat(wal, &wst) == 0;
	has_shm = access(shm, F_OK) == 0;
	if (has_wal && has_shm) {
		/* (gone before the first read: decide again) */
		if ((rc = reader_first(s, path, ++tries == READ_TRIES)) == 1)
			goto again;
	} else if (has_wal && wst.st_size > 0) {
		return sid_error_set(err, SID_EUNAVAIL,
				     "registry %s: %s holds commits and no %s is beside it: "
				     "reading them would make one (a writer that opens the store "
				     "recovers them)",
				     path, wal, shm);
	} else {
		immutable_uri(path, uri, sizeof(uri));
		rc = sqlite3_open_v2(uri, &s->db,
				     SQLITE_OPEN_READONLY | SQLITE_OPEN_URI | SQLITE_OPEN_NOMUTEX,
				     NULL);
		s->immutable = 1;
		s->reopen_ms = INT64_MAX; /* never leave_immutable: that makes them */
	}
	if (rc)
		return sq_fail(s, rc, err, "open");
	sqlite3_db_config(s->db, SQLITE_DBCONFIG_NO_CKPT_ON_CLOSE, 1, NULL);
	return 0;
}

/*
 * SID_REG_READONLY: open @path for reading, leaving its directory as it was
 * found.  A read-only connection to a WAL store makes "<path>-wal" and
 * "<path>-shm" when they are missing and leaves them as it closes (only a
 * connection that may write removes them, the last to close), owned by
 * whoever read: another user's then kept the store's own writer from opening
 * it.  SID_REG_PEEK's immutable read of a file without them is no answer for
 * every reader: it takes no lock, so a writer that opens the store meanwhile
 * (a server started during a long export) checkpoints into the file under
 * it, and it reads a mix of pages.  So:
 *   - both there (a writer has the store open, or died): a read-only
 *     connection that makes neither (reader_open), which reads the
 *     writer's commits through them (gone by its first read: decide again);
 *   - else, a store this process may write (may_write: its owner, root):
 *     a read-write connection that writes nothing (query_only), whose
 *     close, when it is the last, removes what it made, as a writer's clean
 *     close does (root's are given the file's owner by SQLite meanwhile);
 *   - else, in a directory it may write (another user's store): read as
 *     SID_REG_PEEK reads, immutable, the file guarded: a call that finds it
 *     changed since the open (a writer's checkpoint) fails SID_EUNAVAIL;
 *   - else (a read-only directory) an ordinary read-only connection, which
 *     cannot make them either (reopen_immutable then).
 */
static int read_open(struct sq *s, const char *path, struct sid_error *err)
{
	char wal[PATH_MAX + 8], shm[PATH_MAX + 8];
	struct stat st;
	int rc, tries = 0;

	snprintf(wal, sizeof(wal), "%s-wal", path);
	snprintf(shm, sizeof(shm), "%s-shm", path);
	if (strlen(path) >= PATH_MAX || dir_denied(path)) {
		if ((rc = sqlite3_open_v2(path, &s->db, SQLITE_OPEN_READONLY | SQLITE_OPEN_NOMUTEX,
					  NULL)))
			return sq_fail(s, rc, err, "open");
		return 0;
	}
again:
	if (!access(wal, F_OK) && !access(shm, F_OK)) {
		/* (gone before the first read: decide again) */
		if ((rc = reader_first(s, path, ++tries == READ_TRIES)) == 1)
			goto again;
		if (rc)
			return sq_fail(s, rc, err, "open");
		s->owner_read = may_write(path);
		return 0;
	}
	if (may_write(path)) {
		/* the file as opened, known before the open can fail: the
		 * close of a handle whose open failed after SQLite made the
		 * -wal and -shm removes them too, once it found them beside
		 * that file (sq_close) */
		if (stat(path, &st))
			return sid_error_set(err, SID_EIO, "registry %s: %s", path,
					     strerror(errno));
		s->dev = st.st_dev;
		s->ino = st.st_ino;
		rc = sqlite3_open_v2(path, &s->db, SQLITE_OPEN_READWRITE | SQLITE_OPEN_NOMUTEX,
				     NULL);
		if (rc)
			return sq_fail(s, rc, err, "open");
		s->tidy = 1;
		return exec(s, "PRAGMA query_only = ON", err, "open");
	}
	if (stat(path, &st))
		return sid_error_set(err, SID_EIO, "registry %s: %s", path, strerror(errno));
	if ((rc = peek_open(s, path, err)))
		return rc;
	if (s->immutable) {
		s->guarded = 1;
		s->g_size = st.st_size;
		s->g_mtime = st.st_mtim;
	}
	return 0;
}

/* Opening for writing a file this process may only read (any writer:
 * `semid registry delete` was told that assigning needs write access), or
 * that SQLite opened for reading because of where it is: a read-only file
 * system, a directory this process cannot write. */
static int read_only_file(const char *path, struct sid_error *err)
{
	int e = faccessat(AT_FDCWD, path, W_OK, AT_EACCESS) ? errno : 0;
	int dir = e ? 0 : dir_denied(path);

	if (e == EROFS || dir == EROFS)
		return sid_error_set(err, SID_EIO,
				     "registry %s: the file is on a read-only file system (a "
				     "writer, to assign, import, reassign or delete, needs write "
				     "access: mount it read-write)",
				     path);
	if (dir)
		return sid_error_set(err, SID_EIO,
				     "registry %s: this process cannot write its directory (the "
				     "file and its directory must be writable: WAL mode keeps "
				     "%s-wal and %s-shm beside it; a writer, to assign, import, "
				     "reassign or delete, needs write access)",
				     path, path, path);
	return sid_error_set(err, SID_EIO,
			     "registry %s: the file is read-only (a writer, to assign, import, "
			     "reassign or delete, needs write access)",
			     path);
}

/* The journal mode of the writer's connection into @mode (SQLite's name),
 * read or (@set) set to WAL first.  A read can answer SQLITE_BUSY without
 * consulting the busy handler while another connection recovers or resets
 * the WAL, so it is retried until @deadline. */
static int journal_mode(struct sq *s, int64_t deadline, int set, char mode[16],
			struct sid_error *err)
{
	sqlite3_stmt *st = NULL;
	int rc = sqlite3_prepare_v2(
	    s->db, set ? "PRAGMA journal_mode = WAL" : "PRAGMA journal_mode", -1, &st, NULL);

	while (!rc && (rc = sqlite3_step(st)) != SQLITE_ROW) {
		if (((rc & 0xff) != SQLITE_BUSY && (rc & 0xff) != SQLITE_LOCKED) ||
		    sid__reg_mono_ms() > deadline)
			break;
		sqlite3_reset(st);
		rc = 0;
		usleep(2000);
	}
	if (rc == SQLITE_ROW) {
		snprintf(mode, 16, "%s", (const char *)sqlite3_column_text(st, 0));
		rc = set && strcmp(mode, "wal")
			 ? sid_error_set(err, SID_EIO, "registry %s: cannot use WAL mode (got %s)",
					 s->base.label, mode)
			 : 0;
	} else if ((rc & 0xff) == SQLITE_READONLY) {
		rc = read_only_file(s->base.label, err);
	} else {
		rc = sq_fail(s, rc, err, set ? "open (set WAL mode)" : "open");
	}
	sqlite3_finalize(st);
	return rc;
}

int sid__reg_sqlite_open(const char *path, unsigned flags, int timeout_ms,
			 struct sid_registry **out, struct sid_error *err)
{
	int busy_ms = timeout_ms > 0 ? timeout_ms : BUSY_MS;
	/* every wait of the open, the retries below and each lock's (the
	 * first read, the journal mode, the schema check), ends here */
	int64_t deadline = sid__reg_mono_ms() + busy_ms;
	int readonly = flags & SID_REG_READONLY;
	struct sq *s = calloc(1, sizeof(*s));
	char mode[16] = "";
	int rc;

	if (!s || !(s->base.label = strdup(path))) {
		free(s);
		return sid_error_set(err, SID_ENOMEM, "registry %s: out of memory", path);
	}
	s->base.ops = &sq_ops;
	s->shm.grow_only = 1;
	s->busy_ms = busy_ms;
	s->open_deadline = deadline;
	s->checked_call = UINT64_MAX; /* none yet (registry.c counts calls from 1) */
	s->readonly = readonly;
	if (readonly && access(path, F_OK) != 0) {
		rc = sid_error_set(err, SID_ENOTFOUND,
				   "registry %s: no such file (nothing to read)", path);
		goto fail;
	}
	/* (before the first read, which would map it) */
	if (strlen(path) < PATH_MAX && (rc = shm_short(path, err)))
		goto fail;
	if (flags & SID_REG_PEEK) {
		if ((rc = peek_open(s, path, err)))
			goto fail;
	} else if (readonly) {
		if ((rc = read_open(s, path, err)))
			goto fail;
	} else if ((rc = sqlite3_open_v2(
			path, &s->db,
			SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_NOMUTEX, NULL))) {
		rc = sq_fail(s, rc, err, "open");
		goto fail;
	}
	sqlite3_extended_result_codes(s->db, 1);
	open_waits(s);
	if (!readonly && sqlite3_db_readonly(s->db, "main") == 1) {
		rc = read_only_file(path, err);
		goto fail;
	}
	if (!readonly) {
		/* the first statement that reads the file: garbage fails here */
		if ((rc = journal_mode(s, deadline, 0, mode, err)))
			goto fail;
		/* a file in another journal mode (another application's
		 * database, a backup, a new file) is switched to WAL, which
		 * is written in its header, only once migrate has found it
		 * ours: refused, it is left as it was */
		rc = exec(s, "PRAGMA synchronous = FULL", err, "open");
		/* a deleted row's bytes (an erased id, its embedding) are
		 * overwritten, not left in a free page: the default of Debian's
		 * build (SQLITE_SECURE_DELETE), made sure of for any other */
		if (!rc)
			rc = exec(s, "PRAGMA secure_delete = ON", err, "open");
		if (!rc) {
			char sql[64];
			snprintf(sql, sizeof(sql), "PRAGMA journal_size_limit = %d",
				 SID_REG_SQLITE_WAL_PAGES * 4096);
			rc = exec(s, sql, err, "open");
		}
		if (rc)
			goto fail;
	}
	for (;;) { /* the same for the schema check */
		rc = migrate(s, readonly, err);
		if (rc != SID_EUNAVAIL || sid__reg_mono_ms() > deadline)
			break;
		if ((sqlite3_extended_errcode(s->db) & 0xff) == SQLITE_READONLY) {
			/* a read-only file SQLite opened for reading, or (opening
			 * read-only) no -shm to be had: no retry helps; or a -shm
			 * its writer did not rebuild while the read waited */
			if (!readonly)
				rc = read_only_file(path, err);
			break;
		}
		usleep(2000);
	}
	if (rc && readonly && !(flags & SID_REG_PEEK)) {
		struct sid_error e;
		int r2 = reopen_immutable(s, &e);
		if (r2 == 0)
			rc = migrate(s, readonly, err);
		else if (r2 < 0) {
			*err = e;
			rc = r2;
		}
	}
	if (!rc && !readonly && strcmp(mode, "wal"))
		rc = journal_mode(s, deadline, 1, mode, err);
	if (rc)
		goto fail;
	{
		struct stat fst;
		if (stat(path, &fst)) {
			/* gone meanwhile, or never a file (":memory:") */
			rc =
			    sid_error_set(err, SID_EUNAVAIL,
					  "registry %s: cannot find the file just opened (%s); the "
					  "registry must be a file on disk",
					  path, strerror(errno));
			goto fail;
		}
		if (s->ino && (fst.st_dev != s->dev || fst.st_ino != s->ino)) {
			rc = sid_error_set(
			    err, SID_EUNAVAIL,
			    "registry %s: the file was replaced by another file while "
			    "it was opened; open it again",
			    path);
			goto fail;
		}
		s->dev = fst.st_dev;
		s->ino = fst.st_ino;
	}
	side_check(s, NULL); /* the -wal and -shm this handle uses, known from now on */
	rc = prepare_all(s->db, s->st);
	if (rc) {
		rc = sq_fail(s, rc, err, "prepare");
		goto fail;
	}
	/* opened: each call from now on waits up to busy_ms on its own */
	s->open_deadline = 0;
	sqlite3_busy_timeout(s->db, s->busy_ms);
	if (!readonly)
		ckpt_start(s);
	*out = &s->base;
	return 0;
fail:
	sq_close(&s->base);
	return rc;
}
