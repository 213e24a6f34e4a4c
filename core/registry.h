/*
 * registry.h - the ID registry: stable, unique, durable semantic IDs.
 *
 * An encoder gives an item its codes (c_0..c_{L-1}); two items may share
 * them.  The registry turns codes into an ID no other item holds by adding a
 * suffix, and remembers it, so the item keeps that ID across retrains:
 *
 *   full ID (sid) = codes + suffix, written "12-7-200-0" (dash form, the
 *   suffix last).  The first time an id is assigned it takes the smallest
 *   suffix not held by another id with the same codes (0 first).  Assigning a
 *   known id returns its stored ID unchanged, even when its codes differ now,
 *   unless SID_REG_REASSIGN is given: then it moves to the new codes with the
 *   smallest free suffix there and its old slot becomes free.  Every
 *   assignment is committed (durable) before the call returns.
 *   sid_registry_delete removes ids (and their embeddings) for good, their
 *   slots freed as a reassign frees one.
 *
 * Items and users (enum sid_tower_kind) are separate ID spaces in one store.
 * The codes of one kind all have the same number of levels L, fixed by the
 * first assignment (assigning a new id, or reassigning, with another L fails
 * with SID_EINVAL; known ids are still answered).
 *
 * Backends, chosen by the target string given to sid_registry_open:
 *   - SQLite (a file path): WAL mode, synchronous=FULL, one file (plus the
 *     -wal and -shm files SQLite keeps beside it while open).
 *   - PostgreSQL (a libpq connection string: "postgresql://...",
 *     "postgres://..." or key=value form such as "host=... dbname=..."):
 *     many processes may assign at once; ordered advisory locks make writers
 *     of the same ids or codes queue, and unique constraints on (kind, id)
 *     and (kind, codes, suffix) stay as the last defence (a loser retries).
 * Both create their schema on first open and migrate older schema versions;
 * proto/registry.md has the schema, the suffix rule and the export formats.
 *
 * Embeddings: when an assignment is given the input embedding, the registry
 * keeps it (D little-endian float32, 4*D bytes per item: 3 KiB at D = 768),
 * so sid_registry_diff can re-encode every stored item with a new model and
 * count how many IDs a retrain would change.  Pass NULL to keep none.
 *
 * Errors: 0 or a negative SID_E* code, with a message naming the path, id,
 * sid or input index at fault.  SID_EINVAL: bad input (malformed id, sid or
 * prefix, wrong level count); SID_ENOTFOUND: unknown id or sid;
 * SID_EUNAVAIL: the store cannot be reached, is locked past the busy
 * timeout, is out of space, or lost a race too many times - retry later
 * (HTTP 503; encoding itself is unaffected); SID_EFORMAT: the file is not a
 * registry, is corrupt, or has a newer schema; SID_EIO: the store cannot be
 * opened for writing (read-only file or directory) or another failure.
 *
 * Thread-safety: a handle may be used from many threads; its calls are
 * serialised on one connection, except that assign calls arriving while
 * another is being committed are queued and then committed together in one
 * transaction (group commit: one fsync for many calls, each call still
 * answered on its own).  Other handles, threads or processes may use the same
 * store at once (SQLite serialises writers on its file lock; PostgreSQL runs
 * them concurrently).  A SQLite handle runs a background thread that
 * checkpoints the WAL (so commits rarely pay for it; one commit in every
 * SID_REG_SQLITE_WAL_PAGES / 2 pages restarts it); like any SQLite
 * connection, a handle must not be carried across fork() - open it in the
 * process that uses it.
 */
#ifndef SID_REGISTRY_H
#define SID_REGISTRY_H

#include <pthread.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <sys/types.h>

#include "err.h"
#include "model.h"

#define SID_REG_ID_MAX	     256		   /* bytes in an id */
#define SID_REG_VERSION_MAX  SID_MODEL_VERSION_MAX /* bytes in a model_version */
#define SID_REG_SID_MAX	     192		   /* a formatted sid fits in this, with its NUL */
#define SID_REG_PAGE_MAX     1000		   /* entries per sid_registry_list page */
#define SID_REG_HIST_BUCKETS 64
/* SQLite: the WAL is checkpointed and restarted before it holds more than
 * this many pages (4 KiB each) plus the transaction being committed, however
 * steady the stream of commits; see registry_sqlite.c. */
#define SID_REG_SQLITE_WAL_PAGES 4000
/* PostgreSQL: the most new ids a transaction writes while it still runs
 * beside other writers.  Each new id takes two advisory locks (its id and
 * its code tuple), and above 256 locks a transaction takes the store's
 * global lock exclusive instead (registry_pg.c, lock_keys), so a caller that
 * groups calls (semid-server) keeps groups at most this large. */
#define SID_REG_PG_GROUP_IDS 128

/* sid_registry_open flags */
#define SID_REG_READONLY                                                                           \
	1u /* open read-only, never create or migrate (SQLite: the                                 \
	    * file; PostgreSQL: the schema, and its sessions are                                   \
	    * default_transaction_read_only, and it takes no                                       \
	    * schema lock); SQLite: leaves no -wal or -shm it made                                 \
	    * (proto/registry.md, "Read-only stores");                                             \
	    * import fails with SID_EINVAL; an assign call whose ids                               \
	    * are all known (no reassign) is answered from reads,                                  \
	    * any other with SID_EUNAVAIL (it needs a write) */
#define SID_REG_LAZY                                                                               \
	2u /* PostgreSQL: return a handle even when the server is                                  \
	    * down (*err then holds SID_EUNAVAIL and why); calls answer                            \
	    * SID_EUNAVAIL until it is back */
#define SID_REG_PEEK                                                                               \
	4u /* SID_REG_READONLY, and leave no trace even while open:                                \
	    * no file made beside a SQLite store, not for a moment (a                              \
	    * store without its -wal and -shm is read as immutable,                                \
	    * fit for a quick check, not a long walk a writer may                                  \
	    * start beside) and no lock a writer could wait for (not                               \
	    * even the checkpoint on close); SID_EUNAVAIL for a SQLite                             \
	    * WAL that holds commits with no -shm beside it, which no                              \
	    * read can use without making one.  For a check of the store (semid-server             \
	    * --check-config); PostgreSQL: as SID_REG_READONLY */

/* sid_registry_assign flags.  SID_REG_REASSIGN: move known ids to the codes
 * given (see the top of this file).  A moved or re-noted id's stored
 * embedding is the input its codes came from: replaced by the one given,
 * or dropped when given none (diff and reassign_all would otherwise encode
 * an input the stored codes no longer come from, and move the id back) -
 * unless SID_REG_STORED_EMB says the codes were encoded from the stored
 * embedding itself (sid_registry_reassign_all), which then stays. */
#define SID_REG_REASSIGN   1u
#define SID_REG_STORED_EMB 2u

struct sid_registry;

/* One input to assign. */
struct sid_reg_item {
	const char *id;	      /* 1..SID_REG_ID_MAX bytes of UTF-8, no control characters */
	const int32_t *codes; /* (L) from the encoder */
	const float *emb;     /* (D) the input embedding to keep, or NULL */
};

/* One stored assignment (caller storage; nothing to release). */
struct sid_reg_entry {
	int kind; /* enum sid_tower_kind */
	char id[SID_REG_ID_MAX + 1];
	int L;
	int32_t codes[SID_MAX_LEVELS]; /* (L) */
	int64_t suffix;
	char model_version[SID_REG_VERSION_MAX + 1]; /* the model that gave the codes */
	int64_t created_ms, updated_ms;		     /* unix milliseconds */
	int D;	     /* width of the stored embedding, 0 when none */
	int created; /* assign: this call created the row */
	int moved;   /* assign with SID_REG_REASSIGN: this call changed its codes */
	int stale;   /* assign with expect (sid_reg_call): not as expected, left */
	int deleted; /* delete: this call removed it (else it was not stored) */
	/* when moved: the ID it left, from_codes (from_L) + from_suffix (from_L
	 * is 0 otherwise) */
	int from_L;
	int32_t from_codes[SID_MAX_LEVELS];
	int64_t from_suffix;
};

/*
 * Open (creating or migrating the schema when needed) the store named by
 * @target: a SQLite file path or a PostgreSQL connection string (above).
 * On success *out is a handle for sid_registry_close.
 */
int sid_registry_open(const char *target, unsigned flags, struct sid_registry **out,
		      struct sid_error *err);

/*
 * sid_registry_open with every wait on the store bounded by @timeout_ms
 * (> 0; 0 gives sid_registry_open's defaults), for callers that must answer
 * in time (semid-server's registry_timeout_ms):
 *   - SQLite: the busy timeout, how long a call waits for another writer's
 *     lock (default 5000 ms);
 *   - PostgreSQL: the sessions' statement_timeout, so that the server cancels
 *     a statement that runs or waits for a lock longer (unless the connection
 *     string, role or database sets a nonzero one: answers are then waited
 *     for that long instead); and an answer that has not come 1000 ms after
 *     that (a stopped backend, a host that keeps the TCP connection and never
 *     answers) is given up: the connection is dropped and the call fails with
 *     SID_EUNAVAIL, or runs once more on a new connection if its connection
 *     was not made in this call.  A call that met such a timeout fails its
 *     remaining work at once (an assign of many calls waits once).  By default
 *     PostgreSQL answers are waited for without bound, on a blocking
 *     connection (a long export or stats pass).
 * PostgreSQL's connect_timeout becomes @timeout_ms rounded up to whole
 * seconds (at least 2) instead of the default 5 s, unless PGCONNECT_TIMEOUT
 * or the connection string sets it (registry_pg.c).
 */
int sid_registry_open_timeout(const char *target, unsigned flags, int timeout_ms,
			      struct sid_registry **out, struct sid_error *err);
void sid_registry_close(struct sid_registry *r); /* NULL: no-op */

/* 1 when sid_registry_open would take @target for a PostgreSQL connection
 * string (postgresql://..., postgres://..., key=value words libpq parses, or
 * any string with host=, dbname=, service= or password=), 0 for a SQLite
 * path. */
int sid_registry_target_is_pg(const char *target);

/* 1 when @err is an open's refusal of a store whose schema version is newer
 * than this build's (SID_EFORMAT: a newer semid created or migrated it), a
 * store no retry of this build will open. */
int sid_registry_error_schema_ahead(const struct sid_error *err);

/* 1 when @target is a PostgreSQL connection string that holds a password
 * (password=..., ?password=..., or user:password@ in a URI), as libpq parses
 * it; 0 otherwise (a path, no password, or one libpq cannot parse). */
int sid_registry_target_has_password(const char *target);

/* "sqlite" or "postgresql", and the store for messages: the SQLite path or
 * "postgresql://user@host:port/dbname" (never the password; with
 * "?service=NAME" after it when the string names a service). */
const char *sid_registry_backend(const struct sid_registry *r);
const char *sid_registry_label(const struct sid_registry *r);

/* The default SQLite file next to a model: "<dir of model_path>/semid-registry.db".
 * Returns the length (snprintf semantics). */
int sid_registry_default_path(const char *model_path, char *buf, size_t len);

/*
 * Assign @n ids of @kind (see the top of this file) in one transaction.
 * @L: levels of every items[i].codes; @D: width of the embeddings given
 * (ignored when all are NULL); @model_version: stored with new or moved rows.
 * out[i] (n entries) receives the assignment of items[i], in input order.  An
 * id given twice in one call is treated as two calls in input order.  A bad
 * input fails the whole call with SID_EINVAL and err->index = its position;
 * nothing is then written.  A call that returns SID_EUNAVAIL may or may not
 * have been committed; retrying it is safe (assign is idempotent).
 */
int sid_registry_assign(struct sid_registry *r, enum sid_tower_kind kind,
			const struct sid_reg_item *items, size_t n, int L, int D,
			const char *model_version, unsigned flags, struct sid_reg_entry *out,
			struct sid_error *err);

/*
 * Several independent assign calls at once (e.g. every assign request in one
 * encode batch of the server), committed in as few transactions as the group
 * limits allow; each call behaves exactly as sid_registry_assign with its own
 * arguments and gets its own result in rc and err.  Returns 0 when all
 * succeeded, else the first failing call's code.
 */
struct sid_reg_call {
	enum sid_tower_kind kind;
	const struct sid_reg_item *items;
	size_t n;
	int L, D;
	const char *model_version;
	unsigned flags;
	struct sid_reg_entry *out; /* (n) */
	int rc;			   /* out: 0 or a SID_E* code */
	struct sid_error err;	   /* out: the message when rc != 0 */
	/* (n) or NULL.  With SID_REG_REASSIGN: the entry each id is expected
	 * to have, as read before (its L, codes and suffix, and the
	 * model_version and updated_ms of its last write); one that holds
	 * another ID, was written since (even to the same codes, with another
	 * embedding) or is not stored is left as it is and its out entry says
	 * stale. */
	const struct sid_reg_entry *expect;
};
int sid_registry_assign_calls(struct sid_registry *r, struct sid_reg_call *calls, size_t n);

/*
 * Delete @n ids of @kind in one transaction (durable before the call
 * returns): each id's assignment and its stored embedding are removed, and
 * nothing of it is kept (no tombstone: an erasure request must leave no
 * trace of the id).  Its slot (codes + suffix) becomes free as a
 * reassign's old slot does: the next new id with those codes takes it if it
 * is the smallest free suffix.  out[i] (n entries) receives what
 * ids[i] held, with deleted = 1, or only kind and id with deleted = 0 when
 * it was not stored (not an error).  A stored row that cannot be read
 * (SID_EDATA to every other call) is deleted all the same: its out[i] has
 * only kind and id (L 0) and deleted = 1.  An id given twice is deleted by its
 * first occurrence (the second says not stored).  A malformed id fails the
 * whole call with SID_EINVAL and err->index = its position; nothing is then
 * deleted.  A read-only handle fails with SID_EUNAVAIL.  A call that
 * returns SID_EUNAVAIL may or may not have been committed; retrying is safe
 * (what the first try deleted is then reported as not stored).
 */
int sid_registry_delete(struct sid_registry *r, enum sid_tower_kind kind, const char *const *ids,
			size_t n, struct sid_reg_entry *out, struct sid_error *err);

/*
 * SQLite: delete, in one transaction, the entries of rowids @rows that no
 * delete of an id reaches, as sid_registry_check names them by their row:
 * one whose id, codes or model_version cannot be read, or of a kind other
 * than item and user, with its embedding; and an embedding row of no
 * entry.  out[i] (n entries) is, for rows[i]:
 *  - deleted 1: it was erased; out[i] holds the entry as it read (a
 *    damaged one: only its kind, id "");
 *  - deleted 0, id "": no such row (or it came twice);
 *  - deleted 0, id not "": refused, left in place: an entry check finds
 *    nothing wrong with by those tests (its id, codes and model_version
 *    read, of kind item or user), out[i] as sid_registry_get gives it.
 *    A row number is only as good as the check that gave it: that row may
 *    have gone since and SQLite given its rowid to a new assignment; an
 *    entry that is meant to go is deleted by its id (sid_registry_delete).
 * The slots of the entries erased are not known: their kinds' gaps flags
 * are set.  PostgreSQL: SID_EINVAL (its entries have no row number).
 */
int sid_registry_delete_rows(struct sid_registry *r, const int64_t *rows, size_t n,
			     struct sid_reg_entry *out, struct sid_error *err);

/* The assignment of @id, or SID_ENOTFOUND. */
int sid_registry_get(struct sid_registry *r, enum sid_tower_kind kind, const char *id,
		     struct sid_reg_entry *out, struct sid_error *err);

/* The item holding the full ID @sid ("12-7-200-0"), or SID_ENOTFOUND;
 * SID_EINVAL when @sid is malformed or has the wrong number of levels. */
int sid_registry_get_sid(struct sid_registry *r, enum sid_tower_kind kind, const char *sid,
			 struct sid_reg_entry *out, struct sid_error *err);

/*
 * A page of the entries whose codes start with @prefix ("12-7": 1..L codes;
 * "" for all), ordered by (codes, suffix).  @cursor is "" for the first page,
 * then the *next_cursor of the previous page; @limit 1..SID_REG_PAGE_MAX.
 * Fills out[0..*n_out) and next_cursor (SID_REG_SID_MAX bytes), which is ""
 * after the last page.  A cursor is the sid of the last entry returned.
 */
int sid_registry_list(struct sid_registry *r, enum sid_tower_kind kind, const char *prefix,
		      const char *cursor, size_t limit, struct sid_reg_entry *out, size_t *n_out,
		      char *next_cursor, struct sid_error *err);

/* Levels of @kind's codes in the store, 0 while it holds none. */
int sid_registry_levels(struct sid_registry *r, enum sid_tower_kind kind, int *L,
			struct sid_error *err);

/* One read of the store itself (a row of its metadata), whatever the
 * handle has cached, under the same checks and bounded waits as any call:
 * 0 when it answers.  For health probes (semid-server's registry_probe_s). */
int sid_registry_ping(struct sid_registry *r, struct sid_error *err);

/*
 * Call @fn for every entry of @kind (-1: both kinds) in (kind, codes, suffix)
 * order, with its embedding ((e->D) floats) when @want_emb and it has one,
 * else NULL.  A non-zero return from @fn stops the walk and is returned.
 * @fn must not call back into @r.
 */
typedef int (*sid_reg_foreach_fn)(const struct sid_reg_entry *e, const float *emb, void *ctx);
int sid_registry_foreach(struct sid_registry *r, int kind, int want_emb, sid_reg_foreach_fn fn,
			 void *ctx, struct sid_error *err);

/* Entries of @kind (-1: both kinds) in the store. */
int sid_registry_count(struct sid_registry *r, int kind, uint64_t *n, struct sid_error *err);

/*
 * Hear of every walk over the store (foreach, and so stats, diff, export,
 * check and reassign_all's first pass): @fn(ctx, entries walked so far, 0)
 * every 4096 entries and once at the end of the walk.  sid_registry_check's
 * file check (SQLite) then goes on with @fn(ctx, rows checked, rows of the
 * file's tables) now and then (an estimate, kept short of the total) and
 * once with both the total at its end.  NULL stops it.  Not thread-safe
 * against calls in flight: set it before them.
 */
typedef void (*sid_reg_progress_fn)(void *ctx, uint64_t done, uint64_t total);
void sid_registry_set_progress(struct sid_registry *r, sid_reg_progress_fn fn, void *ctx);

struct sid_reg_stats {
	uint64_t items;
	int L;				   /* 0 when empty */
	uint64_t prefixes[SID_MAX_LEVELS]; /* distinct codes[0..l] tuples, l < L */
	int64_t max_suffix;		   /* -1 when empty */
	uint64_t
	    suffix_hist[SID_REG_HIST_BUCKETS]; /* [0]: suffix 0; [b]: 2^(b-1) <= suffix < 2^b */
	uint64_t with_embedding;
};

/*
 * What a handle ran into since the last call, for metrics: copied to *out
 * and reset to zero (thread-safe; each event is counted once however many
 * threads take them).  SQLite counts only busy timeouts: its one writer
 * never races and never takes advisory locks.
 */
struct sid_reg_events {
	uint64_t retries;	  /* transactions run again after a lost race (PostgreSQL:
				   * serialization failure, deadlock, unique violation) */
	uint64_t global_locks;	  /* PostgreSQL: transactions that ran alone under the
				   * store's global lock, having too many keys to lock
				   * one by one (an import; groups stay below it) */
	uint64_t lock_table_full; /* PostgreSQL: ... because the lock table was full
				   * (raise max_locks_per_transaction) */
	/* waits that ran out (sid_registry_open_timeout) */
	uint64_t busy_timeouts;	     /* SQLite: another writer held the lock */
	uint64_t rebuild_timeouts;   /* SQLite: to a reader that may not write the -shm,
				      * its writer did not rebuild the index there */
	uint64_t statement_timeouts; /* PostgreSQL: statement_timeout cancelled one */
	uint64_t answer_timeouts;    /* PostgreSQL: no answer came; connection dropped */
};
void sid_registry_events_take(struct sid_registry *r, struct sid_reg_events *out);

/* Statistics of @kind (one ordered pass over the store). */
int sid_registry_stats(struct sid_registry *r, enum sid_tower_kind kind, struct sid_reg_stats *st,
		       struct sid_error *err);

struct sid_reg_diff {
	uint64_t items;	       /* stored entries of the kind */
	uint64_t compared;     /* with an embedding the new tower accepts */
	uint64_t no_embedding; /* stored without an embedding: not compared */
	uint64_t wrong_dim;    /* embedding width != the new tower's D: not compared */
	int L_old, L_new;      /* stored levels, new model's levels */
	uint64_t level_changed[SID_MAX_LEVELS]; /* code at level l differs, l < min(L_old, L_new) */
	uint64_t prefix_changed[SID_MAX_LEVELS]; /* some code in levels 0..l differs */
	uint64_t changed; /* codes differ (all of them when L differs): their IDs would
			   * change if reassigned */
};

/*
 * Re-encode every stored embedding of @kind with @m's tower and count how
 * many codes would change.  The store is not modified.  SID_EINVAL, naming
 * the id, when a stored embedding is too large for the tower (its encoder
 * overflows float32, sid_encode_overflow): its codes would mean nothing.
 */
int sid_registry_diff(struct sid_registry *r, enum sid_tower_kind kind, const struct sid_model *m,
		      struct sid_reg_diff *d, struct sid_error *err);

/*
 * Check a store: read every entry of @kind (-1: both kinds), with its
 * embedding, going on past the ones a walk would stop at, and the store's
 * own structure (res->store_how says how, or why not).  Each problem found
 * is told to @fn (may be NULL) and counted in res->found[its problem]; a
 * non-zero return from @fn stops the check and is returned.  0 when the
 * check ran to its end, whatever it found; an error (SID_EUNAVAIL,
 * SID_EFORMAT, ...) when it could not.  Reads only: an export, diff or
 * reassign that stops at a damaged entry is told which ones there are, and
 * `semid registry delete` erases those whose id can be read.  The walk is
 * told to sid_registry_set_progress.
 */
enum sid_reg_problem {
	SID_REG_P_UNREADABLE, /* its id, codes or model_version cannot be read */
	SID_REG_P_KIND,	      /* a kind that is neither item (0) nor user (1) */
	SID_REG_P_LEVELS,     /* codes of another number of levels than its kind's */
	SID_REG_P_EMBEDDING,  /* embedding of the wrong size, not finite, or missing */
	SID_REG_P_STORE,      /* the store itself (SQLite: PRAGMA integrity_check, or
			       * an embedding row that belongs to no entry;
			       * PostgreSQL: amcheck's index and heap checks) */
	SID_REG_P_COUNT
};
const char *sid_reg_problem_name(enum sid_reg_problem p); /* "unreadable", ... */

struct sid_reg_finding {
	enum sid_reg_problem problem;
	int kind;	     /* as stored; -1 for a problem of the store itself */
	int64_t row;	     /* SQLite: the rowid of an entry unreadable or of another kind
			      * (or of an embedding of no entry); else -1 */
	const char *id;	     /* the id as stored, when it is a valid id; else NULL */
	const char *message; /* what is wrong, naming the entry */
};
typedef int (*sid_reg_finding_fn)(const struct sid_reg_finding *f, void *ctx);

struct sid_reg_check {
	uint64_t entries; /* entries walked, readable or not */
	uint64_t found[SID_REG_P_COUNT];
	int store_checked;   /* the store's own structure was checked */
	char store_how[256]; /* by what, or why not: SQLite's PRAGMA integrity_check;
			      * PostgreSQL's amcheck extension when the database has
			      * it and the user may run it */
};
int sid_registry_check(struct sid_registry *r, int kind, sid_reg_finding_fn fn, void *ctx,
		       struct sid_reg_check *res, struct sid_error *err);

/*
 * Copy the whole store into the SQLite file @dest (an empty file, or none
 * yet; any other content is overwritten): a consistent snapshot, the store
 * as one moment left it, taken while other processes (a running
 * semid-server) go on writing.  The copy is checked (PRAGMA quick_check)
 * and is itself a store sid_registry_open takes, but it is not synced:
 * publish it with fsutil.h.  @final (may be NULL) is the file a temp @dest
 * is to become: messages then name "the temporary file for @final", not
 * @dest, a name gone once the caller drops it (fsutil.h's publish says so
 * too).  @fn (may be NULL) hears of the bytes copied so far out of the
 * total after every step of 1024 pages, and may sleep there to pace the
 * copy.  SQLite only: a PostgreSQL store fails with SID_EINVAL (pg_dump
 * backs it up).
 */
int sid_registry_backup(struct sid_registry *r, const char *dest, const char *final,
			sid_reg_progress_fn fn, void *ctx, struct sid_error *err);

/*
 * Copy the commits the WAL beside the SQLite store @path holds into the file
 * and empty the WAL (a TRUNCATE checkpoint), as a clean close does, before
 * the file is moved or replaced.  0 when no frame is left in a WAL;
 * SID_EUNAVAIL when another connection's transaction stops it; SID_EFORMAT
 * when the file cannot be read as a database, SID_EIO when it can be read
 * but not written: then nothing was written and its -wal, -shm and -journal
 * are as they were.  An idle connection elsewhere does not stop it: callers
 * that replace the file must make sure nothing has it open.
 */
int sid_registry_sqlite_fold_wal(const char *path, struct sid_error *err);

/*
 * Move every stored id of @kind whose codes @m's tower changes to those
 * codes, from its stored embedding: what a request with "reassign": true
 * would do to each, for a whole store after a retrain (sid_registry_diff
 * first says how many).  Two passes: a walk encodes every embedding and
 * writes the entries that change to an unnamed spool file in $TMPDIR (else
 * /tmp; about 300 bytes each), then they are reassigned @batch at a time
 * (1..10000, else SID_EINVAL), in the walk's (codes, suffix) order, one
 * transaction each, so the new suffixes do not depend on timing; the stored
 * embeddings stay as they are.  Ids whose codes stay keep their ID (and
 * their model_version); ids without an embedding, or with one of another
 * width, are counted in @d and left alone.  @fn (may be NULL) is called for each id moved, with the
 * entry before (id, codes, suffix) and after, as soon as its batch is
 * committed; a non-zero return stops the work after that batch (@fn still
 * hears of all its moves) and is returned.  @stop (may be NULL) is asked
 * during the walk and before each batch; a non-zero answer ends the work
 * there, with nothing more written, and is returned.  Each id moves only
 * if it is still as the walk read it (sid_reg_call's expect): one that
 * another writer moved, or reassigned to the codes it had (a new
 * embedding), meanwhile is left as that writer left it and counted in
 * *@stale.  *@moved counts the ids moved; @d is the walk's diff.
 * Stopped midway (an error, a signal), the ids moved so far stay moved, and
 * running it again moves the rest.  SID_EINVAL when the store's IDs have
 * another number of levels than the tower gives.
 */
typedef int (*sid_reg_moved_fn)(const struct sid_reg_entry *before,
				const struct sid_reg_entry *after, void *ctx);
typedef int (*sid_reg_stop_fn)(void *ctx);
int sid_registry_reassign_all(struct sid_registry *r, enum sid_tower_kind kind,
			      const struct sid_model *m, size_t batch, sid_reg_moved_fn fn,
			      sid_reg_stop_fn stop, void *ctx, struct sid_reg_diff *d,
			      uint64_t *moved, uint64_t *stale, struct sid_error *err);
/* What sid_registry_reassign_all refuses before it begins (the model has no
 * such tower, the store's IDs have another number of levels): 0, or its
 * error, so that a caller can say so before it writes a log of moves. */
int sid_registry_reassign_check(struct sid_registry *r, enum sid_tower_kind kind,
				const struct sid_model *m, struct sid_error *err);

/* Export and import: a line per entry, TSV (with a header line) or JSON lines
 * (proto/registry.md has the columns and keys). */
enum sid_reg_format { SID_REG_TSV, SID_REG_JSONL };

/* Write @kind's entries (-1: both) to @f; embeddings too when @with_emb. */
int sid_registry_export(struct sid_registry *r, int kind, enum sid_reg_format fmt, int with_emb,
			FILE *f, struct sid_error *err);

struct sid_reg_import_result {
	uint64_t added;	     /* new ids stored */
	uint64_t same;	     /* already stored with the same ID: nothing to do */
	uint64_t conflicts;  /* id stored with another ID, or its ID held by another id */
	uint64_t added_bare; /* of the added, those whose line had no embedding */
	long lines;	     /* lines taken (counted above), header and blank ones too */
};

/* Called for each conflict with the 1-based line number and a message. */
typedef void (*sid_reg_conflict_fn)(long line, const char *msg, void *ctx);

/*
 * Read entries from @f (@fmt; the TSV header line is optional) and store the
 * new ones with their sids, model versions, times and embeddings, in
 * transactions of up to 1000 lines.  Idempotent: importing a file twice adds
 * nothing the second time.  Conflicts are counted, reported to @on_conflict
 * (may be NULL) and skipped.  A malformed line fails with SID_EFORMAT and
 * err->index = its line number; lines before its transaction stay imported.
 * A line longer than 64 MiB is malformed: it is read only that far, and
 * that is all of it ever held in memory.
 */
int sid_registry_import(struct sid_registry *r, enum sid_reg_format fmt, FILE *f,
			sid_reg_conflict_fn on_conflict, void *ctx,
			struct sid_reg_import_result *res, struct sid_error *err);

/*
 * sid_registry_import, and @stop (may be NULL) asked with @stop_ctx after
 * each line is read: a non-zero answer commits the lines before that one
 * (res->lines of them; the one just read is not taken: a signal that
 * interrupted its read may have cut it short) and is returned.
 */
int sid_registry_import_until(struct sid_registry *r, enum sid_reg_format fmt, FILE *f,
			      sid_reg_conflict_fn on_conflict, void *ctx, sid_reg_stop_fn stop,
			      void *stop_ctx, struct sid_reg_import_result *res,
			      struct sid_error *err);

/*
 * An entry as JSON, the shape the CLI prints and the HTTP API returns:
 * {"kind", "id", "codes", "suffix", "sid", "model_version", "created_at",
 * "updated_at", "embedding_dim"} (times in ISO 8601 UTC with milliseconds),
 * plus "created" and "moved" (booleans) when @assign.  Returns a new
 * reference (jansson json_t *), NULL when out of memory.  Thread-safe.
 */
struct json_t;
struct json_t *sid_reg_entry_json(const struct sid_reg_entry *e, int assign);

/* ---- ids and sids (no store needed; thread-safe) ---- */

/* Check an id: 1..SID_REG_ID_MAX bytes of valid UTF-8 without control characters. */
int sid_reg_id_check(const char *id, struct sid_error *err);
/* The same, with a message that never quotes the id (its length, or the
 * offset of its fault): for a request log that must never hold one, as
 * an erasure's (semid-server's lookups and deletes). */
int sid_reg_id_check_unnamed(const char *id, struct sid_error *err);

/*
 * Parse a full ID "c0-c1-...-c{L-1}-suffix" (2..SID_MAX_LEVELS+1 decimal
 * fields, canonical: no sign, no leading zero, codes < SID_MAX_CODEBOOK,
 * suffix <= INT64_MAX).  Fills codes (SID_MAX_LEVELS), *L and *suffix.
 */
int sid_reg_sid_parse(const char *s, int32_t *codes, int *L, int64_t *suffix,
		      struct sid_error *err);

/* Parse a prefix "c0-...-c{p-1}" (1..SID_MAX_LEVELS codes; "" gives p = 0). */
int sid_reg_prefix_parse(const char *s, int32_t *codes, int *p, struct sid_error *err);

/* Format "12-7-200-0" into @buf; returns the length (snprintf semantics). */
int sid_reg_sid_format(const int32_t *codes, int L, int64_t suffix, char *buf, size_t len);

/* ---- internal: the backend interface (registry_sqlite.c, registry_pg.c) ---- */

enum sid__reg_import_status {
	SID__REG_IMPORT_ADDED,
	SID__REG_IMPORT_SAME,
	SID__REG_IMPORT_CONFLICT_ID,  /* id stored with another ID: existing[i] */
	SID__REG_IMPORT_CONFLICT_SID, /* its ID held by another id: existing[i] */
	SID__REG_IMPORT_CONFLICT_LEVELS
};

#define SID__REG_WALK_CODES 2

/* What a backend's row reader is given: any stored row (its id is checked
 * as an id), one found by the id asked for (so its id is that valid id: not
 * checked again, on the assign path), or a walk's kind, codes and suffix
 * alone (the rest blank). */
enum sid__reg_row { SID__REG_ROW_ANY, SID__REG_ROW_BY_ID, SID__REG_ROW_CODES };

/* Big-endian uint32 per level: memcmp order is the order of code tuples. */
#define SID__REG_CODES_BYTES (4 * SID_MAX_LEVELS)

/* One sid_registry_assign call waiting to be committed. */
struct sid__reg_req {
	int kind, L, D;
	const struct sid_reg_item *items;
	size_t n;
	const char *version;
	unsigned flags;
	struct sid_reg_entry *out;	    /* (n) */
	const struct sid_reg_entry *expect; /* (n) or NULL: sid_reg_call's */
	int rc;				    /* result */
	struct sid_error err;		    /* its message when rc != 0 */
	int done;			    /* registry.c: answered */
	struct sid__reg_req *next;	    /* registry.c: queue */
};

struct sid__reg_ops {
	const char *name;
	void (*close)(struct sid_registry *r);
	/*
	 * Run a group of validated assign calls, committed together (group
	 * commit).  Calls whose ids are all known and that do not reassign are
	 * answered without a write.  The others share one transaction; a call
	 * that fails on its own (SID_EINVAL: levels) is rolled back alone to a
	 * savepoint.  Sets every q->rc (and q->err on failure).
	 */
	void (*assign)(struct sid_registry *r, struct sid__reg_req *const *q, size_t nq,
		       int64_t now_ms);
	int (*get)(struct sid_registry *r, int kind, const char *id, struct sid_reg_entry *out,
		   struct sid_error *err);
	int (*get_sid)(struct sid_registry *r, int kind, const int32_t *codes, int L,
		       int64_t suffix, struct sid_reg_entry *out, struct sid_error *err);
	/* the stored entries of @n validated ids, all read from one state of
	 * the store (a read-only handle's assign of known ids: read one at a
	 * time, a commit in between could give two of them one sid): 0 when
	 * every one is stored, SID_ENOTFOUND with *missing the first that is
	 * not (err not set), or an error */
	int (*get_many)(struct sid_registry *r, int kind, const struct sid_reg_item *items,
			size_t n, struct sid_reg_entry *out, size_t *missing,
			struct sid_error *err);
	/* entries with codes in [lo, hi) (byte strings) and (codes, suffix) >
	 * (after, after_suffix), at most @limit */
	int (*list)(struct sid_registry *r, int kind, const uint8_t *lo, size_t lo_len,
		    const uint8_t *hi, size_t hi_len, const uint8_t *after, size_t after_len,
		    int64_t after_suffix, size_t limit, struct sid_reg_entry *out, size_t *n_out,
		    struct sid_error *err);
	int (*levels)(struct sid_registry *r, int kind, int *L, struct sid_error *err);
	/* a read of the store itself, whatever is cached */
	int (*ping)(struct sid_registry *r, struct sid_error *err);
	/* want_emb: 0, 1 (as sid_registry_foreach) or SID__REG_WALK_CODES:
	 * only kind, codes and suffix are filled (an index-only walk).  @bad
	 * NULL: stop at an entry (or embedding) that cannot be read with
	 * SID_EDATA; else tell it to @bad (SID_REG_P_UNREADABLE or
	 * SID_REG_P_EMBEDDING, same @ctx) and go on */
	int (*foreach)(struct sid_registry *r, int kind, int want_emb, sid_reg_foreach_fn fn,
		       sid_reg_finding_fn bad, void *ctx, struct sid_error *err);
	/* entries of @kind (-1: both), only those with an embedding if @with_emb */
	int (*count)(struct sid_registry *r, int kind, int with_emb, uint64_t *n,
		     struct sid_error *err);
	/* store e[i] unless it conflicts; status[i] and, on conflict, existing[i] */
	int (*import)(struct sid_registry *r, const struct sid_reg_entry *e,
		      const float *const *emb, size_t n, int *status,
		      struct sid_reg_entry *existing, struct sid_error *err);
	/* sid_registry_delete of validated ids, in one transaction: out[i]
	 * filled and deleted set for each id removed, the others
	 * sid__reg_absent */
	int (*delete_ids)(struct sid_registry *r, int kind, const char *const *ids, size_t n,
			  struct sid_reg_entry *out, struct sid_error *err);
	/* sid_registry_delete_rows; NULL: the backend has no row numbers */
	int (*delete_rows)(struct sid_registry *r, const int64_t *rows, size_t n,
			   struct sid_reg_entry *out, struct sid_error *err);
	/* the store's own structure, for sid_registry_check: each problem to
	 * @fn (SID_REG_P_STORE); *checked and @how (@how_len bytes) say whether
	 * it could be checked, and how or why not */
	int (*check_store)(struct sid_registry *r, sid_reg_finding_fn fn, void *ctx, int *checked,
			   char *how, size_t how_len, struct sid_error *err);
	/* sid_registry_backup; NULL: the backend has none */
	int (*backup)(struct sid_registry *r, const char *dest, const char *final,
		      sid_reg_progress_fn fn, void *ctx, struct sid_error *err);
};

/* The common head of every backend's handle. */
struct sid_registry {
	const struct sid__reg_ops *ops;
	char *label;	      /* path, or the connection string without its password */
	unsigned open_flags;  /* SID_REG_READONLY, SID_REG_LAZY as opened */
	pthread_mutex_t lock; /* serialises calls */
	/* calls so far: registry.c counts one each time it takes lock (for one
	 * public call, or one group of assign calls), however many backend ops
	 * then run under it, so that a backend can do its once-per-call work
	 * once (SQLite: the file check) */
	uint64_t calls;
	/* group commit: concurrent assign calls queue here; one of them (the
	 * leader) takes the whole queue to the backend at once */
	pthread_mutex_t q_lock;
	pthread_cond_t q_cond;
	struct sid__reg_req *q_head, *q_tail;
	int q_leader;
	struct sid_reg_events events; /* updated with __atomic_add_fetch */
	sid_reg_progress_fn progress; /* sid_registry_set_progress */
	void *progress_ctx;
};

/* The backends' opens, which sid_registry_open_timeout picks between
 * (@timeout_ms as it has it, 0 for the defaults): *out a handle whose head
 * is a struct sid_registry, or an error (registry_sqlite.c, registry_pg.c). */
int sid__reg_sqlite_open(const char *path, unsigned flags, int timeout_ms,
			 struct sid_registry **out, struct sid_error *err);
int sid__reg_pg_open(const char *conninfo, unsigned flags, int timeout_ms,
		     struct sid_registry **out, struct sid_error *err);

/* Tests: the length of @shm the SQLite -shm check reads, after it read
 * this process's mappings of it, is this hook's answer (each look, up to
 * three). */
extern off_t (*sid__reg_shm_len_hook)(const char *shm, off_t len);

/* The schema_version text of semid_meta as a number: digits only, at most
 * 9999; -1 for anything else (a store whose version cannot be read is not
 * migrated, nor read as empty). */
int sid__reg_schema_parse(const char *text);

/* The levels.<kind> text of semid_meta (@kind a tower kind) as *@L: 0, or
 * SID_EFORMAT naming the store @label when it is not a level count 1..
 * SID_MAX_LEVELS (a damaged store: its IDs' length cannot be known). */
int sid__reg_levels_parse(const char *label, int kind, const char *text, int *L,
			  struct sid_error *err);

/* A walked entry @e of a kind other than item or user (no request reaches
 * it) told to @bad (a tolerant walk's, or sid_registry_check's own) as a
 * SID_REG_P_KIND finding whose message says how to erase it: by its SQLite
 * @row (semid registry delete --rows), or with @row -1 by SQL naming its kind
 * and id; 1 then, with @bad's answer in *@rc.  0 for an item or a user. */
int sid__reg_kind_bad(struct sid_registry *r, const struct sid_reg_entry *e, int64_t row,
		      sid_reg_finding_fn bad, void *ctx, int *rc);

/* 1 when libpq parses @t as a connection string. */
int sid__reg_pg_conninfo_parses(const char *t);

/* Refuse a store whose schema @version is newer than this build's @known:
 * SID_EFORMAT with the message sid_registry_error_schema_ahead knows. */
int sid__reg_schema_ahead(struct sid_error *err, const char *label, int version, int known);

/* codes (L) <-> big-endian bytes (4L); decode checks the length and range. */
void sid__reg_codes_pack(const int32_t *codes, int L, uint8_t *buf);
int sid__reg_codes_unpack(const void *buf, size_t len, int32_t *codes, int *L);
/* Reassign with an expectation (sid_reg_call's expect): 1 when the entry
 * @e found for @id (@found: it is stored) is not the ID @want expects (same
 * L, codes and suffix) or was written since (another model_version or
 * updated_ms), after marking @e stale (an id not stored gets its
 * kind and id): the caller leaves that id.  0 otherwise; a NULL @want
 * expects anything. */
int sid__reg_stale(struct sid_reg_entry *e, int found, int kind, const char *id,
		   const struct sid_reg_entry *want);
/* @e for an id not stored: its kind and id, the rest zero. */
void sid__reg_absent(struct sid_reg_entry *e, int kind, const char *id);
/* Reassign: @e, as stored, is about to move; keep its ID as from_*. */
void sid__reg_moving(struct sid_reg_entry *e);

/* Smallest free suffix, fed the used suffixes of one codes tuple in
 * increasing order: init, feed each until it returns 1, then take ->next. */
struct sid__reg_gap {
	int64_t next;
};
void sid__reg_gap_init(struct sid__reg_gap *g);
int sid__reg_gap_feed(struct sid__reg_gap *g, int64_t used);

/* The count op's query: entries of @kind (-1: both kinds, and no parameter;
 * else its one parameter is spelled @param, "?1" or "$1"), only those with
 * an embedding if @with_emb. */
void sid__reg_count_sql(char *buf, size_t len, int kind, int with_emb, const char *param);
int64_t sid__reg_now_ms(void);	/* unix milliseconds */
int64_t sid__reg_mono_ms(void); /* monotonic milliseconds, for deadlines */

#endif
