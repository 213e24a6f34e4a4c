/*
 * config.h - semid-server settings: defaults, a JSON config file, and
 * command-line flags, all through one table of keys (config/README.md lists
 * them; config/semid-server.json is a complete example).
 *
 * Every key can be set in the file as "key": value and on the command line
 * as --key VALUE or --key=VALUE, with '_' written as '-' (--max-batch 64).
 * Boolean keys also accept a bare flag (--allow-empty) meaning true.  Flags
 * override the file regardless of their order relative to --config.  Several
 * --config files are read in the order given, a later one's keys winning.
 *
 * Errors name the key and the source (file path or flag).  Nothing here
 * exits; the caller prints the message and refuses to start.
 * Thread-safety: a config is filled once at start and then only read.
 */
#ifndef SRV_CONFIG_H
#define SRV_CONFIG_H

#include <limits.h>
#include <stddef.h>
#include <stdio.h>
#include <sys/stat.h>

#include "err.h"

#define SRV_PATH_MAX	     4096
#define SRV_CONFIG_KEYS	     32 /* room in srv_config.from for every key */
#define SRV_CONFIG_FILES_MAX 16 /* --config files at most */

struct srv_config {
	char listen[256];	  /* "host:port"; port 0 picks a free one */
	char ops_listen[256];	  /* the operations port, as listen; "": none */
	char model[SRV_PATH_MAX]; /* model file path */
	int allow_empty;	  /* start with no model; /readyz 503 until one loads */
	int watch;		  /* watch the model file's directory for a new file */
	int reload_debounce_ms;	  /* quiet time after the last file event before reloading */
	int watch_poll_ms;	  /* with watch: also stat the model path this often (0: never) */
	int workers;		  /* encode threads (UV_THREADPOOL_SIZE) */
	int http_threads;	  /* libmicrohttpd polling threads */
	int max_batch;		  /* rows per encode batch */
	int max_delay_us;	  /* longest a row waits for its batch to fill */
	int queue_rows;		  /* rows admitted (queued or encoding) before 503 */
	long max_body_bytes;	  /* request body cap (413 above) */
	long body_memory_bytes;	  /* all bodies being read, decoded requests and answers
				   * being sent, at once (503 above; budget.h) */
	int memory_trim_s;	  /* give free heap memory back after this long
				   * without a request (0: never) */
	int max_inputs;		  /* inputs per request (413 above) */
	char admin_token[256];	  /* bearer token for /v1/admin/ *; empty disables */
	int shutdown_timeout_ms;  /* drain time on SIGTERM/SIGINT */
	int connection_timeout_s;
	int connection_limit;
	int retry_after_s;  /* Retry-After on 503 */
	int entropy_window; /* recent rows per tower in semid_code_entropy_bits */
	int log_level;	    /* enum srv_log_level */
	/* The ID registry store (proto/registry.md): a SQLite file path, a
	 * PostgreSQL connection string, "" for the default SQLite file beside
	 * the model (sid_registry_default_path), or "none" (assign, lookup and
	 * delete routes answer 501). */
	char registry[1024];
	int registry_embeddings;  /* keep each new assignment's input embedding */
	int registry_connections; /* PostgreSQL: writer connections (groups committed at once) */
	int registry_timeout_ms;  /* bound on each wait on the store (sid_registry_open_timeout) */
	int registry_probe_s;	  /* read the store after this long without a call (0: never) */
	/* Where each key (config.c's table order) was last set: the file's
	 * path or the flag's argument as given, or NULL (the default, or set
	 * directly); borrowed, for messages about keys that disagree. */
	const char *from[SRV_CONFIG_KEYS];
	/* How srv_config_defaults chose workers (sid_cpus_why: the affinity,
	 * or the cgroup's CPU quota), for the listening line. */
	char workers_default[640];
	int workers_auto; /* that count, for a workers of 0 */
	int workers_zero; /* workers was set to 0, so it is workers_auto */
	/* The --config files read (more are refused), as they were then, for
	 * srv_config_files_changed and --check-config's summary; paths borrowed
	 * as from[] is. */
	struct srv_config_file {
		const char *path;
		dev_t dev;
		ino_t ino;
		off_t size;
		struct timespec mtime;
	} files[SRV_CONFIG_FILES_MAX];
	int n_files;
	/* The values in argv of flags that carry a secret (--admin-token, a
	 * --registry with a password), for srv_config_wipe_secret_args: the
	 * first SRV_CONFIG_FILES_MAX of them. */
	char *secret_args[SRV_CONFIG_FILES_MAX];
	int n_secret_args;
};

/* Fill @c with the defaults (listen 127.0.0.1:8080, workers = the CPUs this
 * process may use, at most 64: its affinity, or fewer under a cgroup CPU
 * quota; core/cpus.h). */
void srv_config_defaults(struct srv_config *c);

/* Set one key from its text form (flag value).  @source names where it came
 * from for the message ("--max-batch", "file.json"); it is kept in c->from,
 * so it must outlive @c. */
int srv_config_set(struct srv_config *c, const char *key, const char *value, const char *source,
		   struct sid_error *err);

/* Where key @key was last set: the config file's path, the flag's argument
 * as given ("--registry=...", or "--registry" when the value followed it),
 * or NULL (the default, SEMID_ADMIN_TOKEN's value, or an unknown key). */
const char *srv_config_source(const struct srv_config *c, const char *key);
/* The path of the first of @n --config files (srv_config.files, or a copy
 * of it) that now names another file, or has another size or mtime, than
 * when it was read (or cannot be looked at), else NULL: the server reads
 * them once, and a SIGHUP reloads the model only. */
const char *srv_config_files_changed(const struct srv_config_file *files, int n);

/* Where key @key's value can be read by other users of the host: 1 when a
 * flag set it (the process list, /proc/PID/cmdline, shows it to all), 2
 * when a config file that group or others may read did (its mode in
 * *@mode), else 0 (a default, the environment, a private file).  For the
 * start's warnings about secrets (admin_token, a registry password). */
int srv_config_exposed(const struct srv_config *c, const char *key, unsigned *mode);

/* Where workers came from, for the listening line: the flag or config file
 * that set it (srv_config_source), else how the default was chosen ("cpu
 * quota 200000/100000 at /kubepods/... (cgroup v2; affinity 64)",
 * "affinity 8 (no cpu quota)"). */
const char *srv_config_workers_from(const struct srv_config *c);

/* Apply a JSON config file (an object of key: value); unknown keys, wrong
 * types and out-of-range values are errors naming the key.  @path is kept
 * in c->from, so it must outlive @c. */
int srv_config_load_file(struct srv_config *c, const char *path, struct sid_error *err);

/*
 * Overwrite with 'x' the values in argv of the flags that carry a secret
 * (--admin-token, a --registry connection string with a password), which
 * srv_config_from_args copied into @c and noted, so that the process list
 * (ps, /proc/PID/cmdline) shows them only while the server starts.
 */
void srv_config_wipe_secret_args(struct srv_config *c);

/*
 * Parse argv: --config FILE is applied first, then every other flag in
 * order.  Non-config flags handled here are every key of the table; --help,
 * --version and --check-config set *@help / *@version / *@check (each may
 * be NULL to reject it).  Then validates (srv_config_validate).
 */
int srv_config_from_args(struct srv_config *c, int argc, char **argv, int *help, int *version,
			 int *check, struct sid_error *err);

/* Cross-key checks (a model unless allow_empty, queue_rows >= max_inputs, ...). */
int srv_config_validate(const struct srv_config *c, struct sid_error *err);

/* The settings of @c given by a file, a flag or the environment, or that
 * differ from the defaults, and workers always, to @f: a line each, "  key
 * value  (where it came from)"; a secret (admin_token, a registry
 * connection string that holds a password) as its length only.  For
 * --check-config. */
void srv_config_print(const struct srv_config *c, FILE *f);

/* The flag list with one line of help per key, for --help. */
void srv_config_usage(char *buf, size_t len);

#endif
