/*
 * store.h - the ID registry (core/registry.h) as semid-server uses it: which
 * store, its two handles, and whether it is healthy.
 *
 * The server keeps several handles on one store: writers for assign calls
 * and a reader for lookups (SQLite: one writer - the file has one writer at a
 * time anyway - and a read-only connection, so lookups never wait behind a
 * commit's fsync; PostgreSQL: cfg->registry_connections writer connections,
 * which commit groups in parallel, and one more for lookups).  The first
 * writer and the reader are opened at start, the other writers on first use;
 * a handle that cannot be opened (PostgreSQL down, a read-only or
 * corrupt SQLite file) is retried at most once a second by the next call that
 * needs it, so the server starts and encodes without its registry and
 * assigns again once the store is back.  Every call that touches the store
 * runs on a libuv worker thread (assign.c), never on the loop or HTTP
 * threads: opening and every registry call may block on I/O.
 *
 * Health: the result of the last open attempt or store call ("ok" or
 * "unavailable"), and the message of the last failure.  What GET /v1/model
 * and the semid_registry_up gauge say is metrics.h's verdict, which weighs
 * assigns and lookups apart (a lookup that reads does not say that an
 * assign can write: a full disk); the store's flag sets the gauge at start
 * and says when a probe finds the store back.  "disabled" with --registry
 * none.
 *
 * Levels: the number of levels L of the IDs the store holds, per kind, as
 * last read (a kind's L is fixed by its first assignment and never changes
 * after).  A served tower of another L cannot assign new ids of that kind
 * (409 levels_mismatch); GET /v1/model and semid_registry_levels_mismatch
 * compare the two.
 *
 * Thread-safety: every call is thread-safe (one mutex; held while a handle
 * is being opened).
 */
#ifndef SRV_STORE_H
#define SRV_STORE_H

#include <pthread.h>

#include "config.h"
#include "err.h"
#include "registry.h"

#define SRV_STORE_MAX_WRITERS 64
/* Handle slots: the reader, then the writers. */
#define SRV_STORE_READER    0
#define SRV_STORE_WRITER(i) (1 + (i))
#define SRV_STORE_SLOTS	    (1 + SRV_STORE_MAX_WRITERS)

struct srv_store {
	pthread_mutex_t mu; /* guards healthy, error, label (never held across an open) */
	/* one per slot: guards its h, retry_at and open_err, and is held across
	 * its open, so that a slot whose open waits out a silent store's connect
	 * timeout holds up no other slot's calls */
	pthread_mutex_t open_mu[SRV_STORE_SLOTS];
	int disabled;	     /* --registry none */
	char target[1024];   /* path or connection string (may hold a password) */
	char label[1024];    /* path, or the PostgreSQL handle's label ("" until open) */
	const char *backend; /* "sqlite" or "postgresql" */
	int writers;	     /* writer slots in use */
	int timeout_ms;	     /* cfg->registry_timeout_ms */
	size_t group_rows;   /* rows per assign call at most (one job may exceed it) */
	struct sid_registry *h[SRV_STORE_SLOTS]; /* NULL until opened */
	double retry_at[SRV_STORE_SLOTS];	 /* monotonic seconds: next open attempt */
	struct sid_error open_err[SRV_STORE_SLOTS];
	int healthy;		       /* last attempt or call went through */
	char error[SID_ERROR_MSG_MAX]; /* the last failure's message ("" none yet) */
	int levels[SID_TOWER_COUNT];   /* the store's L per kind; 0: none known yet */
};

/*
 * Resolve cfg->registry (default: beside cfg->model; "none": disabled) and
 * try to open both handles.  A store that cannot be opened now is not an
 * error (logged as event=registry; retried later); only a target no retry
 * can open (a connection string libpq cannot parse: SID_EINVAL; a store
 * whose schema is newer than this build's: SID_EFORMAT) and an
 * out-of-memory failure to set up are.
 */
int srv_store_init(struct srv_store *s, const struct srv_config *cfg, struct sid_error *err);
void srv_store_release(struct srv_store *s);

/* What srv_store_check found. */
struct srv_store_check {
	char target[1024];   /* as srv_store_init resolves it ("" for none) */
	const char *backend; /* "none", "sqlite" or "postgresql" */
	int pg;
	int writers;	  /* the writer handles a start keeps (srv_store.writers); 0: none */
	int connected;	  /* PostgreSQL: a connection was made */
	int rc;		  /* 0: read, or none yet and a start can make it; else why says */
	int found;	  /* a store of this build's schema was read (label, levels) */
	char label[1024]; /* when found: sid_registry_label (no password) */
	char why[SID_ERROR_MSG_MAX]; /* "none yet" (rc 0) or why it was not read */
	int levels[SID_TOWER_COUNT]; /* when found: each kind's L; 0 none stored yet */
};

/*
 * What srv_store_init checks at a start, and what a start would find: the
 * same resolution of cfg->registry (the same refusals and warnings), then
 * one open with SID_REG_PEEK (core/registry.h: creates, migrates and
 * writes nothing and takes no lock a writer waits for) bounded by
 * registry_timeout_ms; a PostgreSQL store is connected to.  Returns a start's
 * refusal (SID_EINVAL: a value no open can take; SID_EFORMAT: a schema a
 * newer semid wrote) in its words; anything a start would only log and
 * retry (unreachable, unreadable, cannot be created) is 0 with out->rc and
 * out->why set.  For --check-config.
 */
int srv_store_check(const struct srv_config *cfg, struct srv_store_check *out,
		    struct sid_error *err);

/*
 * The handle in @role: SRV_STORE_READER or SRV_STORE_WRITER(i), i < writers;
 * opened if needed (worker threads only: may block).
 * Returns 0, or SID_EUNAVAIL with @err saying why the store cannot be used
 * (disabled, or the last open failure and when it will be retried).
 */
int srv_store_get(struct srv_store *s, int role, struct sid_registry **out, struct sid_error *err);

/* Record the outcome of a store call: @rc 0, or a SID_E* code with @err.
 * Only store failures (SID_EUNAVAIL, SID_EIO, SID_EFORMAT, SID_ENOMEM) mark
 * the store unhealthy; bad input and not-found do not. */
void srv_store_note(struct srv_store *s, int rc, const struct sid_error *err);

/* Whether the last open or call went through (any thread). */
int srv_store_healthy(struct srv_store *s);

/* 1 for errors that are the store's fault (answered 503), 0 otherwise. */
int srv_store_is_outage(int rc);

/* Note that the store holds @kind's IDs with @L levels (@L > 0); returns 1
 * when that is news (not known before, or another value). */
int srv_store_levels_note(struct srv_store *s, int kind, int L);

/* The store's levels for @kind as last noted; 0 when none is known. */
int srv_store_levels(struct srv_store *s, int kind);

/* 1 when @m's tower of @kind gives another number of levels than the
 * store's IDs of that kind (as last noted) have: no new id of that kind
 * can be assigned.  0 without the tower, or with nothing known. */
int srv_store_levels_mismatch(struct srv_store *s, const struct sid_model *m, int kind);

/* A snapshot of the health: status is "ok", "unavailable" or "disabled"
 * (the last attempt or call); @error (SID_ERROR_MSG_MAX bytes) gets the
 * last failure's message, also once a call went through after it ("" for
 * none), for a caller that weighs the calls otherwise (metrics.h). */
void srv_store_health(struct srv_store *s, const char **status, const char **backend, char *label,
		      size_t label_len, char *error);

#endif
