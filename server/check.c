/*
 * check.c - the checks a start makes that semid-server --check-config
 * repeats without starting anything (the open files limit, the admin
 * token's warnings, the threads a start needs beside its pool, which
 * --check-config tries with the pool's and the rest a start runs), and
 * --check-config itself; see check.h.
 */
#include "check.h"

#include <stdio.h>
#include <string.h>
#include <sys/resource.h>

#include "batcher.h"
#include "config.h"
#include "cpus.h"
#include "fsutil.h"
#include "http.h"
#include "log.h"
#include "metrics.h"
#include "reload.h"
#include "sockact.h"
#include "store.h"

/* Below this many bytes an admin token draws a warning at start. */
#define ADMIN_TOKEN_MIN 16
/* srv_check_fd_limit's descriptors kept for all but connections, and the
 * fewest connections it may leave. */
#define FD_RESERVE	   256 /* the ops port, the registry, reloads, libuv, stdio */
#define FD_MIN_CONNECTIONS 16

int srv_check_fd_limit(struct srv_config *cfg)
{
	struct rlimit rl;
	rlim_t need = (rlim_t)srv_http_mhd_limit(cfg->connection_limit) + FD_RESERVE;
	long fit;

	if (getrlimit(RLIMIT_NOFILE, &rl) != 0)
		return 0;
	if (rl.rlim_cur < rl.rlim_max && rl.rlim_cur < need) {
		rl.rlim_cur = rl.rlim_max;
		if (setrlimit(RLIMIT_NOFILE, &rl) != 0)
			getrlimit(RLIMIT_NOFILE, &rl);
	}
	if (rl.rlim_cur == RLIM_INFINITY || rl.rlim_cur >= need)
		return 0;
	/* the largest limit whose srv_http_mhd_limit fits beside the reserve */
	fit = ((long)rl.rlim_cur - srv_http_mhd_limit(0) - FD_RESERVE) * 8 / 9;
	while (fit > 0 && (rlim_t)srv_http_mhd_limit((int)fit) + FD_RESERVE > rl.rlim_cur)
		fit--;
	if (fit < FD_MIN_CONNECTIONS) {
		fprintf(stderr,
			"semid-server: open files limit %llu leaves room for fewer than %d "
			"connections (%d descriptors are kept for the rest); raise LimitNOFILE / "
			"ulimit -n to %d at least\n",
			(unsigned long long)rl.rlim_cur, FD_MIN_CONNECTIONS,
			srv_http_mhd_limit(0) + FD_RESERVE,
			srv_http_mhd_limit(FD_MIN_CONNECTIONS) + FD_RESERVE);
		return -1;
	}
	srv_log(SRV_LOG_WARN, "startup",
		"open files limit %llu is low for connection_limit %d (want %llu): "
		"connection_limit lowered to %ld, so that connections over it are answered 503; "
		"raise LimitNOFILE / ulimit -n",
		(unsigned long long)rl.rlim_cur, cfg->connection_limit, (unsigned long long)need,
		fit);
	cfg->connection_limit = (int)fit;
	return 0;
}

/* The threads a running server starts beside its worker pool (check.h),
 * and in *@http those of the HTTP ports among them. */
static int threads_beside(const struct srv_config *cfg, const struct srv_sockact *sa, int *http)
{
	int ops = cfg->ops_listen[0] || sa->ops_fd >= 0;

	/* the ports': libmicrohttpd's, a sweeper, a passed socket's acceptor */
	*http = cfg->http_threads + 1 + (sa->main_fd >= 0) + (ops ? 2 + (sa->ops_fd >= 0) : 0);
	return *http + 2; /* a reload's, the drain's watch */
}

/* The refusal of a start whose threads beside the worker pool's @pool
 * (threads_beside) could not all start (@got did, the next failing with
 * @e), on stderr. */
static void threads_refused(const struct srv_config *cfg, const struct srv_sockact *sa, int pool,
			    int got, int e)
{
	int http, need = threads_beside(cfg, sa, &http);

	fprintf(stderr,
		"semid-server: cannot start the %d threads it needs beside the worker pool's "
		"%d (%d did): %s; they are the HTTP ports' %d (http_threads %d%s, a connection "
		"sweeper each%s), a model reload's and the drain's watch: the limit on the "
		"user's processes and threads (ulimit -u, LimitNPROC=) or a cgroup's pids.max "
		"leaves no room for them; raise it, or lower workers or http_threads\n",
		need, pool, got, strerror(e), http, cfg->http_threads,
		cfg->ops_listen[0] || sa->ops_fd >= 0 ? ", 1 for the operations port" : "",
		sa->main_fd >= 0 || sa->ops_fd >= 0 ? ", an acceptor for each socket passed" : "");
}

int srv_check_threads(const struct srv_config *cfg, const struct srv_sockact *sa, int pool)
{
	int http, need = threads_beside(cfg, sa, &http), e, got;

	got = sid_threads_try(need, 0, &e);
	if (got == need)
		return 0;
	threads_refused(cfg, sa, pool, got, e);
	return -1;
}

void srv_check_admin_token(const struct srv_config *cfg)
{
	unsigned mode = 0;
	int seen;

	if (!cfg->admin_token[0])
		return;
	/* the admin routes have no lockout: a short token is a guessable one
	 * (the k8s Secret template's CHANGE-ME is 9 bytes) */
	if (strlen(cfg->admin_token) < ADMIN_TOKEN_MIN)
		srv_log(SRV_LOG_WARN, "startup",
			"admin_token is %zu bytes: the admin routes have no lockout, so a short "
			"token can be guessed; use %d or more random ones (openssl rand -hex 16)",
			strlen(cfg->admin_token), ADMIN_TOKEN_MIN);
	/* whoever reads the token has the admin routes: a flag is in the
	 * process list for every user of the host while the server starts
	 * (srv_config_wipe_secret_args overwrites it then), and in whatever
	 * started it (a unit file, a script), and a config file often is readable by all
	 * (deploy/systemd installs it 0644) */
	seen = srv_config_exposed(cfg, "admin_token", &mode);
	if (seen == 1)
		srv_log(SRV_LOG_WARN, "startup",
			"the admin token is given by --admin-token, which any user of this "
			"host can read in the process list (ps, /proc/PID/cmdline) and "
			"then call the admin routes with: give it in SEMID_ADMIN_TOKEN, or "
			"set admin_token in a --config file only the server's user can read");
	else if (seen == 2)
		srv_log(SRV_LOG_WARN, "startup",
			"the config file %s gives admin_token, and other users may read the "
			"file (mode %04o): chmod 600 it, or give the token in "
			"SEMID_ADMIN_TOKEN",
			srv_config_source(cfg, "admin_token"), mode);
}

/* A step of --check-config that a start would refuse: said on stderr in
 * the start's words; returns 1. */
static int check_refused(const struct sid_error *err)
{
	fprintf(stderr, "semid-server: %s\n", err->msg);
	return 1;
}

/* --check-config's lines about listen (or ops_listen, @key) at @addr. */
static void check_print_listen(const char *key, const char *addr, int inherited)
{
	if (inherited)
		printf("%-11s not bound: the service manager passes its socket\n", key);
	else if (addr[0])
		printf("%-11s %s: resolves, and this host has the address; the port is not "
		       "tested (the running server holds it)\n",
		       key, addr);
}

/* --check-config's lines about the model @m loaded in @secs. */
static void check_print_model(const struct sid_model *m, const char *path, double secs)
{
	printf("model       %s: model_version \"%s\", sha256 %.12s..., loaded and "
	       "smoke-encoded in %.0f ms\n",
	       path, m->version, m->sha256, secs * 1e3);
	for (int k = 0; k < SID_TOWER_COUNT; k++) {
		const struct sid_tower *t = sid_model_tower(m, (enum sid_tower_kind)k);
		if (!t)
			continue;
		printf("  %s tower: D %d, %d layers, L %d levels, K", k ? "user" : "item", t->D,
		       t->n_layers, t->L);
		for (int l = 0; l < t->L; l++)
			printf("%s%d", l ? "/" : " ", t->K[l]);
		printf("\n");
	}
}

/* --check-config's lines about the registry, beside the model @m (or NULL). */
static void check_print_store(const struct srv_store_check *st, const struct sid_model *m)
{
	if (!st->target[0]) {
		printf("registry    none: assign, lookups and deletes answer 501\n");
		return;
	}
	if (st->found) {
		printf("registry    %s %s: read (schema this build reads; nothing created, "
		       "migrated or locked)%s\n",
		       st->backend, st->label,
		       st->pg ? ", connected within registry_timeout_ms" : "");
		for (int k = 0; k < SID_TOWER_COUNT; k++) {
			const struct sid_tower *t =
			    m ? sid_model_tower(m, (enum sid_tower_kind)k) : NULL;
			if (!st->levels[k])
				continue;
			printf("  %s ids: %d levels%s\n", k ? "user" : "item", st->levels[k],
			       t && t->L != st->levels[k] ? ": NOT the model's; new ids of this "
							    "kind would be refused (409)"
							  : "");
		}
		return;
	}
	if (!st->rc) {
		printf("registry    %s %s: none yet; a start creates it\n", st->backend,
		       st->pg ? "(the database holds no semid registry)" : st->target);
		return;
	}
	/* what a start logs and retries: not a refusal.  A SQLite store is
	 * named by its path (a PostgreSQL one is not: its string may hold a
	 * password), as the lines above name it when it is read. */
	printf("registry    %s%s%s: %s: %s; a start serves without it (assign and lookup answer "
	       "503) and retries\n",
	       st->backend, st->pg ? "" : " ", st->pg ? "" : st->target,
	       st->pg && !st->connected ? "not reached" : "cannot be read", st->why);
}

/*
 * --check-config's look at the thread limits: every thread a start has
 * running when it checks them (srv_check_threads), beside this one, tried
 * at once, in the order a start starts them: the model watch's (watch), a
 * SQLite registry's checkpointer (when a start would open the store: @st),
 * the worker pool's (workers, and one per store writer and one for lookups,
 * as main.c sizes it), then those srv_check_threads tries.  All with the
 * pool's 8 MiB stacks (the usual default too).  A shortfall is said in the
 * words of the start's refusal it would meet first; returns 1 then, else 0.
 */
static int check_threads(const struct srv_config *cfg, const struct srv_sockact *sa,
			 const struct srv_store_check *st)
{
	int watch = cfg->watch != 0, ckpt = st->target[0] && !st->pg && !st->rc;
	int pool = cfg->workers + st->writers + 1, http, need = threads_beside(cfg, sa, &http);
	int before = watch + ckpt + pool, e, got;

	got = sid_threads_try(before + need, (size_t)8 << 20, &e);
	if (got == before + need) {
		printf("threads     the %d a start runs beside its main thread start under the "
		       "limit on threads: the worker pool's %d, the %d beside it%s%s\n",
		       before + need, pool, need, watch ? ", the model watch's" : "",
		       ckpt ? ", the registry's checkpointer" : "");
		return 0;
	}
	if (got < watch)
		fprintf(stderr, "semid-server: cannot start the thread that checks %s\n",
			cfg->model);
	else if (got < before) /* (a checkpointer that cannot start is done without) */
		fprintf(stderr,
			"semid-server: cannot start the %d threads of the worker pool (%d did): "
			"%s (the process or thread limit, RLIMIT_NPROC / LimitNPROC, or a memory "
			"limit for their 8 MiB stacks)\n",
			pool, got - watch - ckpt > 0 ? got - watch - ckpt : 0, strerror(e));
	else
		threads_refused(cfg, sa, pool, got - before, e);
	return 1;
}

int srv_check_config(struct srv_config *cfg, const struct srv_sockact *sa)
{
	struct srv_store_check st;
	struct sid_model *m = NULL;
	struct sid_error err, why;
	int refused = 0, listen_bad = 0;
	char lost[128];
	double t0;

	printf("semid-server %s --check-config: nothing is started, bound, created or "
	       "written\n",
	       SRV_VERSION);
	for (int i = 0; i < cfg->n_files; i++)
		printf("config      %s\n", cfg->files[i].path);
	if (srv_http_listen_check(cfg, sa, 1, &err))
		listen_bad = check_refused(&err);
	if (srv_check_fd_limit(cfg)) /* (it may lower connection_limit) */
		refused++;
	srv_check_admin_token(cfg);
	printf("settings given, or not at their defaults:\n");
	srv_config_print(cfg, stdout);
	if (!listen_bad) {
		check_print_listen("listen", cfg->listen, sa->main_fd >= 0);
		check_print_listen("ops_listen", cfg->ops_listen, sa->ops_fd >= 0);
	}
	refused += listen_bad;
	t0 = srv_now();
	if (srv_reload_check(cfg, &m, &why, &err))
		refused += check_refused(&err);
	else if (!m)
		printf("model       %s: not loaded (%s); allow_empty: a start serves no model "
		       "(/readyz and encode answer 503) until a good file appears\n",
		       cfg->model, why.msg);
	else
		check_print_model(m, cfg->model, srv_now() - t0);
	if (srv_store_check(cfg, &st, &err))
		refused += check_refused(&err);
	else
		check_print_store(&st, m);
	sid_model_unref(m);
	refused += check_threads(cfg, sa, &st);
	if (refused)
		printf("result      REFUSED: a start would exit 2 (%d problem%s, said on stderr)\n",
		       refused, refused > 1 ? "s" : "");
	else
		printf("result      OK: a start would succeed\n");
	/* A summary lost (a full disk) beside exit 0 read as a pass with an
	 * empty report; a reader that went away (| head) took what it wanted. */
	if (sid_stdout_lost(lost, sizeof(lost)) && !sid_stdout_pipe_gone()) {
		fprintf(
		    stderr,
		    "semid-server: --check-config: stdout: the summary could not be written%s\n",
		    lost);
		return refused ? 2 : 1;
	}
	return refused ? 2 : 0;
}
