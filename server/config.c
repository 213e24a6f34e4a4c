/*
 * config.c - the table of semid-server settings and the three ways to fill
 * it: defaults, a JSON file (jansson) and flags.  One table drives parsing,
 * range checks, error messages and --help, so the file keys and the flags can
 * never drift apart.  See config.h.
 */
#include "config.h"

#include <errno.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "cpus.h"
#include "env.h"
#include "log.h"
#include "registry.h"

enum key_type { K_STR, K_INT, K_LONG, K_BOOL, K_LEVEL };

struct key {
	const char *name;
	enum key_type type;
	size_t off;
	size_t size; /* K_STR: buffer size */
	long min, max;
	const char *help;
};

static int is_digit(char c)
{
	return c >= '0' && c <= '9';
}

/* The checks of one string value, by itself: key_set runs them as a value
 * is set, so that a refusal names its source, and srv_config_validate again
 * on the whole config. */
static int listen_check(const char *name, const char *v, struct sid_error *err)
{
	const char *colon = strrchr(v, ':');
	long port;

	if (!strncmp(v, "unix:", 5) || v[0] == '/')
		return sid_error_set(err, SID_EINVAL,
				     "%s \"%s\": a unix socket is not supported; give HOST:PORT",
				     name, v);
	/* "[]:8080" too: no host, which getaddrinfo takes for every address */
	if (!colon || colon == v || (colon == v + 2 && !strncmp(v, "[]", 2)))
		return sid_error_set(err, SID_EINVAL,
				     "%s \"%s\" must be HOST:PORT (127.0.0.1:8080, [::1]:8080)",
				     name, v);
	if (sid_whole_parse(colon + 1, 0, 65535, &port))
		return sid_error_set(err, SID_EINVAL,
				     "%s \"%s\": bad port (digits 0..65535 after the last ':')",
				     name, v);
	return 0;
}

/* The first control character of @v, or -1. */
static long ctl_at(const char *v)
{
	for (const char *p = v; *p; p++)
		if ((unsigned char)*p < 0x20 || *p == 0x7f)
			return p - v;
	return -1;
}

static int token_check(const char *t, struct sid_error *err)
{
	size_t n = strlen(t);
	long at = ctl_at(t);

	if (at >= 0)
		return sid_error_set(
		    err, SID_EINVAL,
		    "admin_token has a control character (at byte offset %ld), which "
		    "no Authorization header can carry",
		    at);
	if (n && (t[0] == ' ' || t[n - 1] == ' '))
		return sid_error_set(err, SID_EINVAL,
				     "admin_token starts or ends with a space, which HTTP strips "
				     "from the Authorization header: no request could match it");
	return 0;
}

/* model and registry: a control character is no file name or connection
 * string anyone means, most often the newline that ends the file a Secret
 * was made from (a SQLite file named "x.db\n" would be created, or an
 * sslmode "require\n" retried for ever). */
static int path_check(const char *name, const char *v, struct sid_error *err)
{
	long at = ctl_at(v);

	if (at >= 0)
		return sid_error_set(
		    err, SID_EINVAL,
		    "%s has a control character (0x%02x at byte offset %ld); a value "
		    "read from a file that ends in a newline?",
		    name, (unsigned char)v[at], at);
	return 0;
}

/* The check of one string key's value by itself, 0 when it has none. */
static int value_check(size_t off, const char *v, struct sid_error *err)
{
	if (off == offsetof(struct srv_config, listen))
		return listen_check("listen", v, err);
	if (off == offsetof(struct srv_config, ops_listen))
		return v[0] ? listen_check("ops_listen", v, err) : 0; /* "": no ops port */
	if (off == offsetof(struct srv_config, admin_token))
		return token_check(v, err);
	if (off == offsetof(struct srv_config, model))
		return path_check("model", v, err);
	if (off == offsetof(struct srv_config, registry))
		return path_check("registry", v, err);
	return 0;
}

#define F(field) offsetof(struct srv_config, field), sizeof(((struct srv_config *)0)->field)

static const struct key keys[] = {
    {"listen", K_STR, F(listen), 0, 0, "HOST:PORT to listen on (port 0: any free port)"},
    {"ops_listen", K_STR, F(ops_listen), 0, 0,
     "HOST:PORT of the operations port: /healthz, /readyz, /metrics, /v1/model (empty: none)"},
    {"model", K_STR, F(model), 0, 0, "model file (safetensors, proto/model-format.md)"},
    {"allow_empty", K_BOOL, F(allow_empty), 0, 1,
     "start without a model; /readyz 503 until one loads"},
    {"watch", K_BOOL, F(watch), 0, 1, "reload when the model file is replaced"},
    {"reload_debounce_ms", K_INT, F(reload_debounce_ms), 0, 60000,
     "quiet time before a watched reload"},
    {"watch_poll_ms", K_INT, F(watch_poll_ms), 0, 3600000,
     "with watch, also stat the model path this often (0: events only)"},
    {"workers", K_INT, F(workers), 0, 256,
     "encode worker threads (0: one per CPU this process may use, at most 64)"},
    {"http_threads", K_INT, F(http_threads), 1, 64, "HTTP polling threads"},
    {"max_batch", K_INT, F(max_batch), 1, 65536, "rows per encode batch"},
    {"max_delay_us", K_INT, F(max_delay_us), 0, 1000000, "longest wait for a batch to fill"},
    {"queue_rows", K_INT, F(queue_rows), 1, 100000000, "rows admitted before 503"},
    {"max_body_bytes", K_LONG, F(max_body_bytes), 64, 1L << 34, "request body cap (413 above)"},
    {"body_memory_bytes", K_LONG, F(body_memory_bytes), 64, 1L << 40,
     "bytes of request bodies, decoded requests and answers held at once (503 above)"},
    {"memory_trim_s", K_INT, F(memory_trim_s), 0, 3600,
     "give the heap's free memory back to the system after this many seconds without a request "
     "(0: never)"},
    {"max_inputs", K_INT, F(max_inputs), 1, 1000000,
     "inputs per request, and ids per POST /v1/{items,users}:delete (413 above)"},
    {"admin_token", K_STR, F(admin_token), 0, 0,
     "bearer token for /v1/admin/reload and the delete routes (empty: SEMID_ADMIN_TOKEN, else "
     "disabled)"},
    {"shutdown_timeout_ms", K_INT, F(shutdown_timeout_ms), 0, 3600000, "drain time on SIGTERM"},
    {"connection_timeout_s", K_INT, F(connection_timeout_s), 0, 3600, "idle connection timeout"},
    {"connection_limit", K_INT, F(connection_limit), 1, 1000000, "open connections at most"},
    {"retry_after_s", K_INT, F(retry_after_s), 0, 3600, "Retry-After on 503"},
    {"entropy_window", K_INT, F(entropy_window), 1, 10000000, "rows in the code-entropy window"},
    {"log_level", K_LEVEL, F(log_level), 0, 0, "debug|info|warn|error"},
    {"registry", K_STR, F(registry), 0, 0,
     "ID registry: SQLite path, postgresql:// string, none (default: beside the model)"},
    {"registry_embeddings", K_BOOL, F(registry_embeddings), 0, 1,
     "keep each newly assigned id's embedding (for semid registry diff)"},
    {"registry_connections", K_INT, F(registry_connections), 1, 64,
     "PostgreSQL connections committing assigns at once"},
    {"registry_probe_s", K_INT, F(registry_probe_s), 0, 3600,
     "read the store after this many seconds without a call, so an idle server sees an outage "
     "(0: never)"},
    {"registry_timeout_ms", K_INT, F(registry_timeout_ms), 100, 3600000,
     "longest wait on the registry store before a call answers 503"},
};
#define N_KEYS (sizeof(keys) / sizeof(keys[0]))
_Static_assert(N_KEYS <= SRV_CONFIG_KEYS, "srv_config.from has no room for every key");

/* workers: the CPUs this process may use (core/cpus.h): its affinity
 * (taskset, a container's cpuset, Kubernetes' static CPU manager), of which
 * the online CPUs can be many times more, or fewer under a cgroup CPU quota
 * (--cpus, a Kubernetes CPU limit, CPUQuota=): a pod limited to 2 CPUs on a
 * 64-core node runs 2 workers, not 64 threads the kernel throttles. */
void srv_config_defaults(struct srv_config *c)
{
	struct sid_cpus cpus;
	int ncpu = sid_cpus_usable(&cpus);

	memset(c, 0, sizeof(*c));
	snprintf(c->listen, sizeof(c->listen), "127.0.0.1:8080");
	c->watch = 1;
	c->reload_debounce_ms = 200;
	c->watch_poll_ms = 2000;
	c->workers = c->workers_auto = ncpu > 64 ? 64 : ncpu;
	sid_cpus_why(&cpus, c->workers_default, sizeof(c->workers_default));
	if (ncpu > 64)
		snprintf(c->workers_default + strlen(c->workers_default),
			 sizeof(c->workers_default) - strlen(c->workers_default), "; at most 64");
	c->http_threads = 2;
	c->max_batch = 256;
	c->max_delay_us = 0;
	c->queue_rows = 65536;
	c->max_body_bytes = 64L << 20;
	c->body_memory_bytes = 1L << 30;
	c->memory_trim_s = 10;
	c->max_inputs = 4096;
	c->shutdown_timeout_ms = 10000;
	c->connection_timeout_s = 30;
	c->connection_limit = 1024;
	c->retry_after_s = 1;
	c->entropy_window = 10000;
	c->log_level = SRV_LOG_INFO;
	c->registry_embeddings = 1;
	c->registry_connections = 4;
	c->registry_timeout_ms = 5000;
	c->registry_probe_s = 10;
}

/* Find by name; '-' in @name matches '_' (flags use dashes). */
static const struct key *key_find(const char *name, size_t len)
{
	for (size_t i = 0; i < N_KEYS; i++) {
		const char *k = keys[i].name;
		size_t j;
		if (strlen(k) != len)
			continue;
		for (j = 0; j < len; j++)
			if (!(k[j] == name[j] || (k[j] == '_' && name[j] == '-')))
				break;
		if (j == len)
			return &keys[i];
	}
	return NULL;
}

/* For a name that is no key: " (did you mean ...?)" (sid_nearest_hint),
 * written as a flag or as a file key; "" when no one key is that close. */
static const char *key_hint(const char *name, size_t len, int as_flag, char *buf, size_t n)
{
	struct sid_nearest near;

	sid_nearest_init(&near, name, len);
	for (size_t i = 0; i < N_KEYS; i++)
		sid_nearest_add(&near, keys[i].name);
	return sid_nearest_hint(&near, as_flag, buf, n);
}

static int parse_bool(const char *v)
{
	if (!strcmp(v, "true") || !strcmp(v, "1") || !strcmp(v, "yes") || !strcmp(v, "on"))
		return 1;
	if (!strcmp(v, "false") || !strcmp(v, "0") || !strcmp(v, "no") || !strcmp(v, "off"))
		return 0;
	return -1;
}

/* What @k takes, for messages: "an integer in [1, 256]", "true or false". */
static const char *key_allowed(const struct key *k, char *buf, size_t len)
{
	switch (k->type) {
	case K_STR:
		return "a string";
	case K_BOOL:
		return "true or false";
	case K_LEVEL:
		return "debug, info, warn or error";
	case K_INT:
	case K_LONG:
		break;
	}
	snprintf(buf, len, "an integer in [%ld, %ld]", k->min, k->max);
	return buf;
}

/* Set @k from @value; @source names it in a message. */
static int key_parse(struct srv_config *c, const struct key *k, const char *value,
		     const char *source, struct sid_error *err)
{
	char allowed[64];
	char *p = (char *)c + k->off;
	char *end;
	long long n;
	int b;

	switch (k->type) {
	case K_STR:
		if (strlen(value) >= k->size)
			return sid_error_set(err, SID_EINVAL, "%s: %s is longer than %zu bytes",
					     source, k->name, k->size - 1);
		if (value_check(k->off, value, err))
			return sid_error_prefix(err, "%s", source);
		memcpy(p, value, strlen(value) + 1);
		return 0;
	case K_BOOL:
		b = parse_bool(value);
		if (b < 0)
			return sid_error_set(err, SID_EINVAL,
					     "%s: %s must be true or false, not \"%s\"", source,
					     k->name, value);
		*(int *)p = b;
		return 0;
	case K_LEVEL:
		b = srv_log_level_parse(value);
		if (b < 0)
			return sid_error_set(
			    err, SID_EINVAL,
			    "%s: %s must be debug, info, warn or error, not \"%s\"", source,
			    k->name, value);
		*(int *)p = b;
		return 0;
	case K_INT:
	case K_LONG:
		/* digits with an optional '-': strtoll would also take leading
		 * space and '+' */
		errno = 0;
		n = strtoll(value, &end, 10);
		if (!is_digit(value[value[0] == '-']) || *end)
			return sid_error_set(err, SID_EINVAL, "%s: %s must be %s, not \"%s\"",
					     source, k->name,
					     key_allowed(k, allowed, sizeof(allowed)), value);
		if (errno == ERANGE) /* digits past what a long long holds */
			return sid_error_set(err, SID_EINVAL,
					     "%s: %s = %s is out of range [%ld, %ld]", source,
					     k->name, value, k->min, k->max);
		if (n < k->min || n > k->max)
			return sid_error_set(err, SID_EINVAL,
					     "%s: %s = %lld is out of range [%ld, %ld]", source,
					     k->name, n, k->min, k->max);
		if (k->type == K_INT)
			*(int *)p = (int)n;
		else
			*(long *)p = (long)n;
		return 0;
	}
	return sid_error_set(err, SID_EINVAL, "%s: %s: bad key type", source, k->name);
}

/* key_parse, and @from (outliving @c) kept in c->from. */
static int key_set(struct srv_config *c, const struct key *k, const char *value, const char *source,
		   const char *from, struct sid_error *err)
{
	int rc = key_parse(c, k, value, source, err);

	if (rc)
		return rc;
	c->from[k - keys] = from;
	/* workers 0 (a config file that names every key but wants the
	 * default, as the image's does): the count srv_config_defaults chose */
	if (k->off == offsetof(struct srv_config, workers)) {
		c->workers_zero = c->workers == 0;
		if (c->workers_zero)
			c->workers = c->workers_auto;
	}
	return 0;
}

int srv_config_set(struct srv_config *c, const char *key, const char *value, const char *source,
		   struct sid_error *err)
{
	const struct key *k = key_find(key, strlen(key));
	char hint[80];

	if (!k)
		return sid_error_set(err, SID_EINVAL, "%s: unknown setting \"%s\"%s", source, key,
				     key_hint(key, strlen(key), 0, hint, sizeof(hint)));
	return key_set(c, k, value, source, source, err);
}

const char *srv_config_files_changed(const struct srv_config_file *files, int n)
{
	/* tests: a stat as slow as on a hung NFS, as the model watch's */
	long delay_ms = sid_env_test_ms(getenv("SEMID_TEST_STAT_DELAY_MS"));
	struct stat st;

	for (int i = 0; i < n; i++) {
		const struct srv_config_file *f = &files[i];
		if (delay_ms > 0)
			usleep((useconds_t)delay_ms * 1000);
		if (stat(f->path, &st) != 0 || st.st_dev != f->dev || st.st_ino != f->ino ||
		    st.st_size != f->size || st.st_mtim.tv_sec != f->mtime.tv_sec ||
		    st.st_mtim.tv_nsec != f->mtime.tv_nsec)
			return f->path;
	}
	return NULL;
}

const char *srv_config_source(const struct srv_config *c, const char *key)
{
	const struct key *k = key_find(key, strlen(key));
	return k ? c->from[k - keys] : NULL;
}

int srv_config_exposed(const struct srv_config *c, const char *key, unsigned *mode)
{
	const char *from = srv_config_source(c, key);
	struct stat st;

	if (!from)
		return 0;
	if (from[0] == '-')
		return 1;
	if (stat(from, &st) != 0 || !(st.st_mode & 077))
		return 0;
	*mode = (unsigned)(st.st_mode & 07777);
	return 2;
}

const char *srv_config_workers_from(const struct srv_config *c)
{
	const char *from = srv_config_source(c, "workers");
	return from && !c->workers_zero ? from
	       : c->workers_default[0]	? c->workers_default
					: "default";
}

/* Whether @k holds a secret that no message may show: the admin token, or
 * the registry, whose connection string may hold a password. */
static int key_secret(const struct key *k)
{
	return k->off == offsetof(struct srv_config, admin_token) ||
	       k->off == offsetof(struct srv_config, registry);
}

/*
 * When jansson's message @text quotes ("near '...'") the start of a secret
 * key's value in @buf (@n bytes, the error at byte @pos), that key's name,
 * else NULL: a file of mode 600 with a slip in its token ("admin_token":
 * "s3cret\q...) had the token's first bytes (up to 19) on stderr, in the
 * journal.
 */
static const char *near_secret(const char *buf, size_t n, size_t pos, const char *text)
{
	const char *near = strstr(text, " near '"), *end;
	size_t len, at;

	if (!near)
		return NULL;
	near += 7;
	end = strrchr(near, '\'');
	if (!end || end == near || (len = (size_t)(end - near)) > n)
		return NULL;
	/* the quoted token ends where the lexer stopped, at @pos or just before */
	for (at = pos < n - len ? pos : n - len;; at--) {
		if (!memcmp(buf + at, near, len)) {
			size_t p = at;

			while (p && strchr(" \t\r\n", buf[p - 1]))
				p--;
			if (!p || buf[--p] != ':')
				return NULL;
			while (p && strchr(" \t\r\n", buf[p - 1]))
				p--;
			if (!p || buf[--p] != '"')
				return NULL;
			for (size_t i = 0; i < N_KEYS; i++) {
				size_t kl = strlen(keys[i].name);
				if (key_secret(&keys[i]) && p >= kl + 1 && buf[p - kl - 1] == '"' &&
				    !memcmp(buf + p - kl, keys[i].name, kl))
					return keys[i].name;
			}
			return NULL;
		}
		if (!at)
			return NULL;
	}
}

/* A config file of every key at its longest is about 6 KiB. */
#define CONFIG_FILE_MAX (1 << 20)

int srv_config_load_file(struct srv_config *c, const char *path, struct sid_error *err)
{
	json_error_t jerr;
	json_t *root, *v;
	const char *name, *secret;
	struct stat st;
	size_t len, cap, skip;
	char *buf;
	FILE *f;
	int rc = 0, rerr;

	/* Opened and read here, not by json_load_file: a directory opens and
	 * then reads as an empty file, and a read error as the file's end,
	 * which jansson reports as "'[' or '{' expected near end of file" (a
	 * ConfigMap's mount directory given for the file inside it). */
	/* each one kept for the SIGHUP warning and --check-config's summary,
	 * which left out those past the 4th while taking their keys */
	if (c->n_files == SRV_CONFIG_FILES_MAX)
		return sid_error_set(err, SID_EINVAL,
				     "config file: %s: more than %d --config files; merge some",
				     path, SRV_CONFIG_FILES_MAX);
	f = fopen(path, "rb");
	if (!f)
		return sid_error_set(err, SID_EINVAL, "config file: unable to open %s: %s", path,
				     strerror(errno));
	if (fstat(fileno(f), &st) == 0 && S_ISDIR(st.st_mode)) {
		fclose(f);
		return sid_error_set(err, SID_EINVAL,
				     "config file: %s is a directory; give the JSON file in it",
				     path);
	}
	c->files[c->n_files++] =
	    (struct srv_config_file){path, st.st_dev, st.st_ino, st.st_size, st.st_mtim};
	/* grown as the file is read (most are a few hundred bytes), to one
	 * byte over the cap at most */
	len = cap = 0;
	buf = NULL;
	rerr = 0;
	errno = 0;
	while (len <= CONFIG_FILE_MAX) {
		if (len == cap) {
			size_t want = cap ? 2 * cap : 4096;
			char *p =
			    realloc(buf, cap = want > CONFIG_FILE_MAX ? CONFIG_FILE_MAX + 1 : want);
			if (!p) {
				free(buf);
				fclose(f);
				return sid_error_set(err, SID_ENOMEM, "config file: out of memory");
			}
			buf = p;
		}
		len += fread(buf + len, 1, cap - len, f);
		if (ferror(f)) {
			rerr = errno ? errno : EIO;
			break;
		}
		if (feof(f))
			break;
	}
	fclose(f);
	if (rerr || len > CONFIG_FILE_MAX) {
		free(buf);
		if (rerr)
			return sid_error_set(err, SID_EINVAL, "config file: cannot read %s: %s",
					     path, strerror(rerr));
		return sid_error_set(err, SID_EINVAL,
				     "config file: %s is over %d bytes, so not a config file (one "
				     "with every key is a few KiB)",
				     path, CONFIG_FILE_MAX);
	}
	/* A UTF-8 byte order mark (Windows editors write one) may be skipped
	 * (RFC 8259, 8.1); jansson reports it as an invisible bad token. */
	skip = len >= 3 && !memcmp(buf, "\xef\xbb\xbf", 3) ? 3 : 0;
	if (len == skip) { /* a write that failed, an empty ConfigMap key */
		free(buf);
		return sid_error_set(err, SID_EINVAL,
				     "config file: %s is empty (a config of no settings is {})",
				     path);
	}
	root = json_loadb(buf + skip, len - skip, JSON_REJECT_DUPLICATES, &jerr);
	if (!root &&
	    (secret = near_secret(buf + skip, len - skip, (size_t)jerr.position, jerr.text))) {
		const char *hint = sid_json_error_hint(jerr.text);
		char *near = strstr(jerr.text, " near '");
		free(buf);
		*near = '\0';
		return sid_error_set(err, SID_EINVAL, "%s:%d:%d: %s in %s's value (not shown)%s",
				     path, jerr.line, jerr.column, jerr.text, secret, hint);
	}
	free(buf);
	if (!root && jerr.line < 1)
		return sid_error_set(err, SID_EINVAL, "%s: %s%s", path, jerr.text,
				     sid_json_error_hint(jerr.text));
	if (!root)
		return sid_error_set(err, SID_EINVAL, "%s:%d:%d: %s%s", path, jerr.line,
				     jerr.column, jerr.text, sid_json_error_hint(jerr.text));
	if (!json_is_object(root)) {
		rc = sid_error_set(err, SID_EINVAL, "%s: the config must be a JSON object", path);
		goto fail;
	}
	json_object_foreach(root, name, v)
	{
		const struct key *k = key_find(name, strlen(name));
		char text[64];
		const char *value = text;

		if (k && strchr(name, '-')) { /* dashes are for flags */
			rc = sid_error_set(err, SID_EINVAL,
					   "%s: unknown setting \"%s\" (the file spells it \"%s\")",
					   path, name, k->name);
			goto fail;
		}
		if (!k) {
			rc = sid_error_set(err, SID_EINVAL, "%s: unknown setting \"%s\"%s", path,
					   name,
					   key_hint(name, strlen(name), 0, text, sizeof(text)));
			goto fail;
		}
		switch (k->type) {
		case K_STR:
		case K_LEVEL:
			value = json_string_value(v); /* NULL unless a string */
			break;
		case K_BOOL:
			value = json_is_boolean(v) ? (json_is_true(v) ? "true" : "false") : NULL;
			break;
		case K_INT:
		case K_LONG:
			if (json_is_integer(v))
				snprintf(text, sizeof(text), "%" JSON_INTEGER_FORMAT,
					 json_integer_value(v));
			else
				value = NULL;
			break;
		}
		if (!value) {
			/* the value as written, so that 1.5 and "10" are told from 10
			 * (ASCII: cut at any byte, it stays whole characters) */
			char *given =
			    json_dumps(v, JSON_ENCODE_ANY | JSON_COMPACT | JSON_ENSURE_ASCII);
			const char *shown = given ? given : "that";
			/* a secret's value is its type alone: a token written
			 * as a number, or inside brackets, is still the token */
			if (key_secret(k))
				shown = json_is_array(v)    ? "an array (not shown)"
					: json_is_object(v) ? "an object (not shown)"
					: json_is_number(v) ? "a number (not shown)"
							    : shown;
			int n = (int)strlen(shown);
			rc = sid_error_set(err, SID_EINVAL, "%s: %s must be %s, not %.*s%s", path,
					   name, key_allowed(k, text, sizeof(text)),
					   n > 40 ? 40 : n, shown, n > 40 ? "..." : "");
			free(given);
			goto fail;
		}
		rc = key_set(c, k, value, path, path, err);
		if (rc)
			goto fail;
	}
fail:
	json_decref(root);
	return rc;
}

void srv_config_wipe_secret_args(struct srv_config *c)
{
	for (int i = 0; i < c->n_secret_args; i++)
		memset(c->secret_args[i], 'x', strlen(c->secret_args[i]));
	c->n_secret_args = 0;
}

/* Whether @arg is a boolean key's flag without "=value" (--watch). */
static int bare_bool_flag(const char *arg)
{
	const struct key *k;

	if (strncmp(arg, "--", 2) != 0 || strchr(arg, '='))
		return 0;
	k = key_find(arg + 2, strlen(arg + 2));
	return k && k->type == K_BOOL;
}

int srv_config_from_args(struct srv_config *c, int argc, char **argv, int *help, int *version,
			 int *check, struct sid_error *err)
{
	static const char *const switches[] = {"--help", "--version", "--check-config", NULL};
	int i, rc;

	/* --config first, so flags override the file wherever they appear. */
	for (i = 1; i < argc; i++) {
		const char *a = argv[i];
		if (!strcmp(a, "--config")) {
			if (i + 1 >= argc)
				return sid_error_set(err, SID_EINVAL, "--config needs a file");
			rc = srv_config_load_file(c, argv[++i], err);
			if (rc)
				return rc;
		} else if (!strncmp(a, "--config=", 9)) {
			rc = srv_config_load_file(c, a + 9, err);
			if (rc)
				return rc;
		}
	}
	for (i = 1; i < argc; i++) {
		const char *a = argv[i], *eq, *value, *sw;
		const struct key *k;
		char flag[80];

		if (!strcmp(a, "--config")) {
			i++;
			continue;
		}
		if (!strncmp(a, "--config=", 9))
			continue;
		if ((!strcmp(a, "--help") || !strcmp(a, "-h")) && help) {
			*help = 1;
			continue;
		}
		if (!strcmp(a, "--version") && version) {
			*version = 1;
			continue;
		}
		if (!strcmp(a, "--check-config") && check) {
			*check = 1;
			continue;
		}
		if (strncmp(a, "--", 2) != 0 && i > 1 && parse_bool(a) >= 0 &&
		    bare_bool_flag(argv[i - 1])) /* --watch false: the flag alone meant true */
			return sid_error_set(err, SID_EINVAL,
					     "unexpected argument \"%s\" after %s: a boolean flag "
					     "takes its value after '=' (%s=%s)",
					     a, argv[i - 1], argv[i - 1], a);
		if (strncmp(a, "--", 2) != 0)
			return sid_error_set(err, SID_EINVAL,
					     "unexpected argument \"%s\" (flags start with --)", a);
		eq = strchr(a, '=');
		/* "--check-config=true" was an "unknown flag \"--check-config\"" */
		if ((sw = sid_switch_valued(a, switches)))
			return sid_error_set(err, SID_EINVAL, "%s takes no value, not %s", sw, a);
		k = key_find(a + 2, eq ? (size_t)(eq - a - 2) : strlen(a + 2));
		if (!k) {
			size_t n = eq ? (size_t)(eq - a) : strlen(a);
			return sid_error_set(err, SID_EINVAL, "unknown flag \"%.*s\"%s", (int)n, a,
					     key_hint(a + 2, n - 2, 1, flag, sizeof(flag)));
		}
		snprintf(flag, sizeof(flag), "--%s", k->name);
		for (char *p = flag; *p; p++)
			if (*p == '_')
				*p = '-';
		if (eq) {
			value = eq + 1;
		} else if (k->type == K_BOOL) {
			value = "true";
		} else {
			if (i + 1 >= argc)
				return sid_error_set(err, SID_EINVAL, "%s needs a value", flag);
			value = argv[++i];
		}
		rc = key_set(c, k, value, flag, a, err);
		if (rc)
			return rc;
		/* argv's own bytes (value points into it), for the wipe */
		if (key_secret(k) &&
		    (k->off != offsetof(struct srv_config, registry) ||
		     sid_registry_target_has_password(value)) &&
		    c->n_secret_args < SRV_CONFIG_FILES_MAX)
			c->secret_args[c->n_secret_args++] = eq ? argv[i] + (eq - a) + 1 : argv[i];
	}
	if ((help && *help) || (version && *version))
		return 0;
	/* the token from the environment when the file and flags left it
	 * empty ("" in a file is no token, as the default): a command line is readable by every
	 * user of the host, an environment (a Kubernetes Secret's) only by the process's own */
	const char *t = getenv("SEMID_ADMIN_TOKEN");
	if (!c->admin_token[0] && t) {
		if (strlen(t) >= sizeof(c->admin_token))
			return sid_error_set(err, SID_EINVAL,
					     "SEMID_ADMIN_TOKEN is longer than %zu bytes",
					     sizeof(c->admin_token) - 1);
		/* a Secret made from a file often ends in a newline: the message
		 * names the variable, which no config file or flag shows */
		if (token_check(t, err))
			return sid_error_prefix(err, "SEMID_ADMIN_TOKEN");
		snprintf(c->admin_token, sizeof(c->admin_token), "%s", t);
		/* not the config file that left it "" (srv_config_exposed) */
		c->from[key_find("admin_token", strlen("admin_token")) - keys] = NULL;
	}
	return srv_config_validate(c, err);
}

/* " (a from X, b from Y)" naming the file or flag that set each of keys @a
 * and @b, leaving out one not set so (a default); "" for neither. */
static const char *from_note(const struct srv_config *c, const char *a, const char *b, char *buf,
			     size_t n)
{
	const char *names[2] = {a, b};
	size_t off = 0;

	buf[0] = '\0';
	for (int i = 0; i < 2 && off < n; i++) {
		const char *f = srv_config_source(c, names[i]);
		const char *eq = f && f[0] == '-' ? strchr(f, '=') : NULL; /* --key=value */
		if (f)
			off += (size_t)snprintf(buf + off, n - off, "%s%s from %.*s",
						off ? ", " : " (", names[i],
						eq ? (int)(eq - f) : (int)strlen(f), f);
	}
	if (off && off < n)
		snprintf(buf + off, n - off, ")");
	return buf;
}

int srv_config_validate(const struct srv_config *c, struct sid_error *err)
{
	char note[SID_ERROR_MSG_MAX];

	for (size_t i = 0; i < N_KEYS; i++) {
		int rc = keys[i].type == K_STR
			     ? value_check(keys[i].off, (const char *)c + keys[i].off, err)
			     : 0;
		if (rc)
			return rc;
	}
	if (!c->model[0])
		return sid_error_set(err, SID_EINVAL,
				     "no model: give --model PATH (with --allow-empty the server "
				     "waits for the file to appear)");
	if (c->body_memory_bytes < c->max_body_bytes)
		return sid_error_set(
		    err, SID_EINVAL,
		    "body_memory_bytes (%ld) must be at least max_body_bytes (%ld), "
		    "or a body of the largest size accepted could never be read%s",
		    c->body_memory_bytes, c->max_body_bytes,
		    from_note(c, "body_memory_bytes", "max_body_bytes", note, sizeof(note)));
	if (c->queue_rows < c->max_inputs)
		return sid_error_set(err, SID_EINVAL,
				     "queue_rows (%d) must be at least max_inputs (%d), or a full "
				     "request could never be admitted%s",
				     c->queue_rows, c->max_inputs,
				     from_note(c, "queue_rows", "max_inputs", note, sizeof(note)));
	return 0;
}

/* @k's value in @c as text, into @buf. */
static const char *key_text(const struct srv_config *c, const struct key *k, char *buf, size_t len)
{
	const char *p = (const char *)c + k->off;

	switch (k->type) {
	case K_STR:
		snprintf(buf, len, "\"%s\"", p);
		break;
	case K_BOOL:
		snprintf(buf, len, "%s", *(const int *)p ? "true" : "false");
		break;
	case K_LEVEL:
		snprintf(buf, len, "%s", srv_log_level_name((enum srv_log_level) * (const int *)p));
		break;
	case K_INT:
		snprintf(buf, len, "%d", *(const int *)p);
		break;
	case K_LONG:
		snprintf(buf, len, "%ld", *(const long *)p);
		break;
	}
	return buf;
}

void srv_config_print(const struct srv_config *c, FILE *f)
{
	static struct srv_config d; /* the defaults (large: not on the stack) */
	char v[1100], dv[1100];

	srv_config_defaults(&d);
	for (size_t i = 0; i < N_KEYS; i++) {
		const struct key *k = &keys[i];
		const char *from = c->from[i];
		const char *eq = from && from[0] == '-' ? strchr(from, '=') : NULL; /* its value */
		int secret = k->off == offsetof(struct srv_config, admin_token) ||
			     (k->off == offsetof(struct srv_config, registry) &&
			      sid_registry_target_has_password(c->registry));
		int dflt;

		key_text(c, k, v, sizeof(v));
		dflt = !strcmp(v, key_text(&d, k, dv, sizeof(dv)));
		if (!from && dflt && k->off != offsetof(struct srv_config, workers))
			continue;
		if (secret && k->type == K_STR)
			snprintf(v, sizeof(v), "(%zu bytes, not shown)",
				 strlen((const char *)c + k->off));
		fprintf(f, "  %-22s %s", k->name, v);
		if (k->off == offsetof(struct srv_config, workers))
			fprintf(f, "  (%s)\n", srv_config_workers_from(c));
		else if (from) /* a copy of semid-server.json gives every key: which changed */
			fprintf(f, "  (%.*s%s)\n", eq ? (int)(eq - from) : (int)strlen(from), from,
				dflt ? ", the default" : "");
		else if (k->off == offsetof(struct srv_config, admin_token))
			fprintf(f, "  (SEMID_ADMIN_TOKEN)\n");
		else
			fprintf(f, "  (set at start: see the warn lines)\n");
	}
}

void srv_config_usage(char *buf, size_t len)
{
	size_t off = 0;
	for (size_t i = 0; i < N_KEYS && off < len; i++) {
		char flag[64];
		const char *arg = keys[i].type == K_BOOL    ? ""
				  : keys[i].type == K_STR   ? " TEXT"
				  : keys[i].type == K_LEVEL ? " LEVEL"
							    : " N";
		snprintf(flag, sizeof(flag), "--%s%s", keys[i].name, arg);
		for (char *p = flag; *p; p++)
			if (*p == '_')
				*p = '-';
		off += (size_t)snprintf(buf + off, len - off, "  %-28s %s\n", flag, keys[i].help);
	}
}
