/*
 * store.c - the registry store of semid-server: target resolution, lazy
 * opening with a retry interval, and health (see store.h).
 */
#include "store.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "fsutil.h"
#include "log.h"

#define RETRY_S 1.0

static double mono_now(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

/* The last attempt or call: up, or down with @msg (kept until the next
 * failure: GET /v1/model shows it while semid_registry_up is 0). */
static void set_health(struct srv_store *s, int up, const char *msg)
{
	pthread_mutex_lock(&s->mu);
	s->healthy = up;
	if (!up)
		snprintf(s->error, sizeof(s->error), "%s", msg);
	pthread_mutex_unlock(&s->mu);
}

/* The writer handles of a store (SQLite: one; PostgreSQL:
 * registry_connections). */
static int store_writers(const struct srv_config *cfg, int pg)
{
	int n = pg ? cfg->registry_connections : 1;

	return n < 1 || n > SRV_STORE_MAX_WRITERS ? 1 : n;
}

/* Open the handle in @role.  At start (@starting) a store that no retry
 * will open is not retried but returned, for srv_store_init to refuse. */
static int open_role(struct srv_store *s, int role, int starting, struct sid_error *err)
{
	unsigned flags = 0;
	struct sid_registry *h = NULL;
	int rc;

	if (!strcmp(s->backend, "postgresql"))
		flags |= SID_REG_LAZY;
	else if (role == SRV_STORE_READER)
		flags |= SID_REG_READONLY;
	sid_error_clear(err);
	/* (without s->mu: a PostgreSQL open may wait for its connect timeout,
	 * and /v1/model and the metrics read the health meanwhile) */
	rc = sid_registry_open_timeout(s->target, flags, s->timeout_ms, &h, err);
	if (rc == SID_EINVAL || (starting && sid_registry_error_schema_ahead(err)))
		return rc; /* no retry can open it: srv_store_init refuses it */
	if (rc) {
		s->open_err[role] = *err;
		s->retry_at[role] = mono_now() + RETRY_S;
		set_health(s, 0, err->msg);
		srv_log(SRV_LOG_WARN, "registry", "cannot open the %s handle: %s (retrying)",
			role == SRV_STORE_READER ? "reader" : "writer", err->msg);
		return rc;
	}
	s->h[role] = h;
	/* PostgreSQL's name for the store is its handle's label, as in every
	 * message: parsed by libpq, so no form of the password reaches it */
	pthread_mutex_lock(&s->mu);
	if (!s->label[0])
		snprintf(s->label, sizeof(s->label), "%s", sid_registry_label(h));
	pthread_mutex_unlock(&s->mu);
	/* a lazy handle (PostgreSQL) that could not connect: every call
	 * retries; until one gets through the store is down */
	if (err->code == SID_EUNAVAIL)
		set_health(s, 0, err->msg);
	else if (role != SRV_STORE_READER)
		set_health(s, 1, NULL);
	return 0;
}

/*
 * cfg->registry as a start resolves it into @target (@len bytes; "" for
 * "none"): the default beside the model, the refusal of a value that no
 * open can take (a directory, the model file), and the warnings about where
 * a password in it can be read and about a SQLite file on a network file
 * system.
 */
static int store_target(const struct srv_config *cfg, char *target, size_t len,
			struct sid_error *err)
{
	const char *netfs;
	int pg;

	target[0] = '\0';
	if (!strcasecmp(cfg->registry, "none")) /* "None" is no file name anyone means */
		return 0;
	if (cfg->registry[0])
		snprintf(target, len, "%s", cfg->registry);
	else if (sid_registry_default_path(cfg->model, target, len) >= (int)len)
		return sid_error_set(err, SID_EINVAL,
				     "registry: the default path beside %s is too "
				     "long",
				     cfg->model);
	pg = sid_registry_target_is_pg(target);
	if (!pg) {
		/* a directory never opens as a SQLite file: a bad config value
		 * (--registry /var/lib/semid/), not an outage to retry */
		struct stat st, ms;
		int has = stat(target, &st) == 0;
		if (has && S_ISDIR(st.st_mode))
			return sid_error_set(err, SID_EINVAL,
					     "registry %s is a directory; give the SQLite file's "
					     "path (%s%ssemid-registry.db, say)",
					     target, target,
					     target[strlen(target) - 1] == '/' ? "" : "/");
		/* the model file given for the store (a slip in a config):
		 * served on with every assign and lookup answered 503 */
		if (has && stat(cfg->model, &ms) == 0 && st.st_dev == ms.st_dev &&
		    st.st_ino == ms.st_ino)
			return sid_error_set(
			    err, SID_EINVAL,
			    "registry %s is the model file (--model %s); give the "
			    "SQLite store a path of its own, or leave registry out "
			    "for the default beside the model",
			    target, cfg->model);
	}
	/* a flag is in the process list for every user of the host to read
	 * while the server starts (srv_config_wipe_secret_args overwrites it
	 * then), and in whatever started it; a config file often is readable by
	 * all (deploy/systemd installs it 0644) */
	{
		unsigned mode = 0;
		int seen = srv_config_exposed(cfg, "registry", &mode);
		int secret = pg && seen && sid_registry_target_has_password(target);
		if (secret && seen == 1)
			srv_log(SRV_LOG_WARN, "registry",
				"the --registry connection string holds a password, which any "
				"user of this host can read in the process list (ps, "
				"/proc/PID/cmdline): give it in PGPASSWORD, a password file "
				"(PGPASSFILE, ~/.pgpass) or a service file (service=NAME, "
				"PGSERVICEFILE), or set registry in a --config file only the "
				"server's user can read");
		else if (secret)
			srv_log(SRV_LOG_WARN, "registry",
				"the config file %s gives registry a connection string that "
				"holds a password, and other users may read the file (mode "
				"%04o): chmod 600 it, or give the password in PGPASSWORD, a "
				"password file (PGPASSFILE, ~/.pgpass) or a service file "
				"(service=NAME, PGSERVICEFILE)",
				srv_config_source(cfg, "registry"), mode);
	}
	/* SQLite's WAL keeps its index in memory shared by the processes of
	 * one host: a second server on another host would corrupt the store */
	if (!pg && (netfs = sid_fs_network(target)))
		srv_log(SRV_LOG_WARN, "registry",
			"%s is on a network file system (%s): SQLite's write-ahead log needs "
			"every process that opens the store on this host, so only one "
			"server (and the semid commands) on this host may use it; servers on "
			"several hosts need a PostgreSQL registry (registry = "
			"postgresql://...)",
			target, netfs);
	return 0;
}

int srv_store_init(struct srv_store *s, const struct srv_config *cfg, struct sid_error *err)
{
	struct sid_error e;
	int pg, rc;

	memset(s, 0, sizeof(*s));
	for (int r = 0; r < SRV_STORE_SLOTS; r++)
		if (pthread_mutex_init(&s->open_mu[r], NULL))
			return sid_error_set(err, SID_ENOMEM, "registry: mutex");
	if (pthread_mutex_init(&s->mu, NULL))
		return sid_error_set(err, SID_ENOMEM, "registry: mutex");
	if ((rc = store_target(cfg, s->target, sizeof(s->target), err)))
		return rc;
	if (!s->target[0]) {
		s->disabled = 1;
		s->backend = "none";
		srv_log(SRV_LOG_INFO, "registry",
			"disabled (--registry none): assign, lookup and delete "
			"routes answer 501");
		return 0;
	}
	pg = sid_registry_target_is_pg(s->target);
	s->backend = pg ? "postgresql" : "sqlite";
	s->writers = store_writers(cfg, pg);
	s->timeout_ms = cfg->registry_timeout_ms;
	/* SQLite: as many as wait (one fsync for all); PostgreSQL: small enough
	 * that the writers' transactions run side by side */
	s->group_rows = pg ? SID_REG_PG_GROUP_IDS : 16384;
	if (!pg)
		snprintf(s->label, sizeof(s->label), "%s", s->target);
	/* Writer first: it creates or migrates the schema the reader expects.
	 * A store that did not answer the writer is not tried again for the
	 * reader now (one connect timeout at start, not two): the first lookup
	 * opens it. */
	rc = open_role(s, SRV_STORE_WRITER(0), 1, &e);
	if (rc == SID_EINVAL) {
		/* a connection string libpq cannot parse: a bad config value,
		 * not an outage to wait out */
		return sid_error_set(err, SID_EINVAL, "%s", e.msg);
	}
	if (rc && sid_registry_error_schema_ahead(&e))
		/* written by a newer semid: this build will never use it, and a
		 * rollback that replaced the fleet's newer servers with ones that
		 * answer every assign 503 would be an outage; stop it here */
		return sid_error_set(err, SID_EFORMAT, "%s", e.msg);
	if (rc == 0 && e.code == SID_EUNAVAIL) {
		srv_log(SRV_LOG_WARN, "registry",
			"%s (encode serves; assign and lookups answer 503, and each retries)",
			e.msg);
	} else if (s->h[SRV_STORE_WRITER(0)] && open_role(s, SRV_STORE_READER, 0, &e) == 0) {
		struct srv_logline l;
		srv_logline_begin(&l, SRV_LOG_INFO, "registry");
		srv_logline_str(&l, "backend", s->backend);
		srv_logline_str(&l, "store", sid_registry_label(s->h[SRV_STORE_WRITER(0)]));
		srv_logline_int(&l, "writers", s->writers);
		srv_logline_str(&l, "msg", "opened");
		srv_logline_end(&l);
	}
	return 0;
}

int srv_store_check(const struct srv_config *cfg, struct srv_store_check *out,
		    struct sid_error *err)
{
	struct sid_registry *h = NULL;
	struct sid_error e;
	char dir[PATH_MAX];
	int rc;

	memset(out, 0, sizeof(*out));
	out->backend = "none";
	if ((rc = store_target(cfg, out->target, sizeof(out->target), err)) || !out->target[0])
		return rc;
	out->pg = sid_registry_target_is_pg(out->target);
	out->backend = out->pg ? "postgresql" : "sqlite";
	out->writers = store_writers(cfg, out->pg);
	sid_error_clear(&e);
	rc = sid_registry_open_timeout(out->target, SID_REG_PEEK, cfg->registry_timeout_ms, &h, &e);
	/* what srv_store_init refuses */
	if (rc == SID_EINVAL || sid_registry_error_schema_ahead(&e))
		return sid_error_set(err, rc, "%s", e.msg);
	out->rc = rc;
	out->connected = !out->pg || rc != SID_EUNAVAIL;
	if (rc == 0) {
		out->found = 1;
		snprintf(out->label, sizeof(out->label), "%s", sid_registry_label(h));
		for (int k = 0; k < SID_TOWER_COUNT; k++)
			if (sid_registry_levels(h, (enum sid_tower_kind)k, &out->levels[k], &e))
				out->levels[k] = 0;
		sid_registry_close(h);
		return 0;
	}
	snprintf(out->why, sizeof(out->why), "%s", e.msg);
	/* none yet: a start creates it, if it can */
	if (rc == SID_ENOTFOUND && !out->pg) {
		if (sid_path_dir(out->target, dir) == 0 &&
		    faccessat(AT_FDCWD, dir, W_OK | X_OK, AT_EACCESS))
			snprintf(out->why, sizeof(out->why),
				 "no such file, and this user cannot create one in %.300s: %s", dir,
				 strerror(errno));
		else
			out->rc = 0;
	} else if (rc == SID_ENOTFOUND) {
		out->rc = 0;
	}
	return 0;
}

void srv_store_release(struct srv_store *s)
{
	for (int r = 0; r < SRV_STORE_SLOTS; r++)
		sid_registry_close(s->h[r]);
	pthread_mutex_destroy(&s->mu);
	for (int r = 0; r < SRV_STORE_SLOTS; r++)
		pthread_mutex_destroy(&s->open_mu[r]);
	memset(s, 0, sizeof(*s));
}

int srv_store_get(struct srv_store *s, int role, struct sid_registry **out, struct sid_error *err)
{
	int rc = 0;

	*out = NULL;
	if (s->disabled)
		return sid_error_set(err, SID_EUNAVAIL,
				     "the ID registry is disabled (semid-server --registry none)");
	/* each slot opens under its own mutex: with one for all, a silent
	 * PostgreSQL (a stopped host, a black-holed network) made every request
	 * wait out one connect timeout per handle opened before its own (8 s
	 * for a lookup at registry_timeout_ms 2000 with four writers) */
	pthread_mutex_lock(&s->open_mu[role]);
	if (!s->h[role]) {
		if (mono_now() < s->retry_at[role]) {
			rc = sid_error_set(err, SID_EUNAVAIL, "%s (retried at most once a second)",
					   s->open_err[role].msg);
		} else if (role == SRV_STORE_READER && strcmp(s->backend, "sqlite") == 0) {
			/* A read-only connection cannot create the file: lookups on a
			 * store that was never opened for writing find it missing.
			 * (The reader's mutex, then the writer's: nothing takes them
			 * the other way round.) */
			struct sid_error e;
			int w = SRV_STORE_WRITER(0), writable;
			sid_error_clear(&e);
			pthread_mutex_lock(&s->open_mu[w]);
			writable = s->h[w] || open_role(s, w, 0, &e) == 0;
			pthread_mutex_unlock(&s->open_mu[w]);
			if (writable || access(s->target, F_OK) == 0)
				rc = open_role(s, role, 0, err);
			else
				rc = sid_error_set(err, SID_EUNAVAIL, "%s", e.msg);
		} else {
			rc = open_role(s, role, 0, err);
		}
		if (rc)
			rc = SID_EUNAVAIL;
	}
	*out = s->h[role];
	pthread_mutex_unlock(&s->open_mu[role]);
	return rc;
}

int srv_store_is_outage(int rc)
{
	return rc == SID_EUNAVAIL || rc == SID_EIO || rc == SID_EFORMAT || rc == SID_ENOMEM;
}

void srv_store_note(struct srv_store *s, int rc, const struct sid_error *err)
{
	if (rc && !srv_store_is_outage(rc))
		return;
	set_health(s, rc == 0, rc ? err->msg : NULL);
}

int srv_store_healthy(struct srv_store *s)
{
	int up;

	pthread_mutex_lock(&s->mu);
	up = s->healthy;
	pthread_mutex_unlock(&s->mu);
	return up;
}

int srv_store_levels_note(struct srv_store *s, int kind, int L)
{
	int news;

	if (kind < 0 || kind >= SID_TOWER_COUNT || L <= 0)
		return 0;
	pthread_mutex_lock(&s->mu);
	news = s->levels[kind] != L;
	s->levels[kind] = L;
	pthread_mutex_unlock(&s->mu);
	return news;
}

int srv_store_levels(struct srv_store *s, int kind)
{
	int L;

	if (kind < 0 || kind >= SID_TOWER_COUNT)
		return 0;
	pthread_mutex_lock(&s->mu);
	L = s->levels[kind];
	pthread_mutex_unlock(&s->mu);
	return L;
}

int srv_store_levels_mismatch(struct srv_store *s, const struct sid_model *m, int kind)
{
	const struct sid_tower *t = m ? sid_model_tower(m, kind) : NULL;
	int L = t ? srv_store_levels(s, kind) : 0;

	return L > 0 && L != t->L;
}

void srv_store_health(struct srv_store *s, const char **status, const char **backend, char *label,
		      size_t label_len, char *error)
{
	error[0] = '\0';
	if (s->disabled) {
		*status = "disabled";
		*backend = NULL;
		if (label_len)
			label[0] = '\0';
		return;
	}
	pthread_mutex_lock(&s->mu);
	*status = s->healthy ? "ok" : "unavailable";
	*backend = s->backend;
	snprintf(label, label_len, "%s", s->label);
	snprintf(error, SID_ERROR_MSG_MAX, "%s", s->error);
	pthread_mutex_unlock(&s->mu);
}
