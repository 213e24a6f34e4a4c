/*
 * data.c - loading and checking the trainer's input files, the per-user and
 * per-item indexes, and deterministic mini-batches.  See data.h.
 *
 * Text files are memory-mapped and parsed in place (20M lines in a couple of
 * seconds, no line-length limit to get wrong); embeddings stay mapped.
 */
#include "data.h"

#include <errno.h>
#include <limits.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "fsutil.h"
#include "rng.h"
#include "stop.h"

/* values converted at a time while scanning an .npy: 4096 rows of 1024, and
 * as many rows of a wider file as fit (4096 rows of 65536 took 1 GiB, for a
 * file of 5 rows too: "out of memory" under ulimit -v 900 MiB) */
#define CHUNK_VALUES (4096u * 1024u)

int tr_input_check(const char *path, struct sid_error *err)
{
	struct stat st;
	if (stat(path, &st) == 0 && !S_ISREG(st.st_mode))
		return sid_error_set(err, SID_EFORMAT, "%s: not a regular file", path);
	return 0;
}

int tr_out_dir_check(const char *out, char *dir, size_t len, struct sid_error *err)
{
	const char *base = strrchr(out, '/') ? strrchr(out, '/') + 1 : out;
	struct stat st;
	char *slash;
	long name_max;

	if ((size_t)snprintf(dir, len, "%s", out) >= len)
		return sid_error_set(err, SID_EINVAL, "--out %s: path longer than %zu bytes", out,
				     len - 1);
	slash = strrchr(dir, '/');
	if (!slash)
		snprintf(dir, len, ".");
	else
		slash[slash == dir] = 0; /* "/m.st" -> "/" */
	if (stat(dir, &st) < 0)
		return sid_error_set(err, SID_EINVAL, "--out %s: directory %s: %s", out, dir,
				     strerror(errno));
	if (!S_ISDIR(st.st_mode))
		return sid_error_set(err, SID_EINVAL, "--out %s: %s is not a directory", out, dir);
	if (access(dir, W_OK | X_OK) != 0)
		return sid_error_set(err, SID_EIO, "--out %s: cannot write in %s: %s", out, dir,
				     strerror(errno));
	/* A sticky directory (/tmp, a shared drop) lets only a file's owner
	 * (or the directory's) rename over it: the publish failed with EPERM
	 * after the whole training.  Root may. */
	if ((st.st_mode & S_ISVTX) && geteuid() != 0 && st.st_uid != geteuid()) {
		char f[PATH_MAX + 8];
		struct stat fs;

		for (int i = 0; i < 2; i++) {
			snprintf(f, sizeof(f), "%s%s", out, i ? ".ckpt" : "");
			if (lstat(f, &fs) == 0 && fs.st_uid != geteuid())
				return sid_error_set(
				    err, SID_EIO,
				    "--out %s: %s belongs to uid %u and %s is sticky: this user "
				    "cannot replace it; name another file",
				    out, f, (unsigned)fs.st_uid, dir);
		}
	}
	name_max = pathconf(dir, _PC_NAME_MAX);
	if (name_max > 0 && (long)strlen(base) > name_max)
		return sid_error_set(err, SID_EINVAL,
				     "--out %s: the file name is %zu bytes, longer than the %ld "
				     "this directory takes",
				     out, strlen(base), name_max);
	return 0;
}

/* Uniform in [0, n) without modulo bias worth caring about (n < 2^32). */
static uint64_t rand_below(uint64_t *s, uint64_t n)
{
	return (uint64_t)(((unsigned __int128)tr_splitmix64(s) * n) >> 64);
}

int tr_emb_open(struct tr_emb *e, const char *path, struct sid_error *err)
{
	float *buf = NULL;
	uint64_t h = 0xcbf29ce484222325ull;
	size_t chunk;
	int rc;

	memset(e, 0, sizeof(*e));
	rc = tr_input_check(path, err);
	if (rc < 0)
		return rc;
	rc = sid_npy_open(path, &e->npy, err);
	if (rc < 0) {
		sid_error_name_file(err, path);
		if (err)
			err->code = SID_EFORMAT;
		return SID_EFORMAT;
	}
	e->path = strdup(path);
	if (!e->path) {
		rc = sid_error_set(err, SID_ENOMEM, "%s: out of memory", path);
		goto fail;
	}
	if ((rc = sid_npy_check_float(&e->npy, path, err)))
		goto fail;
	if (e->npy.rows == 0 || e->npy.cols == 0) {
		rc = sid_error_set(err, SID_EFORMAT, "%s: empty array (%zu, %zu)", path,
				   e->npy.rows, e->npy.cols);
		goto fail;
	}
	if (e->npy.rows > INT32_MAX || e->npy.cols > 65536) {
		rc = sid_error_set(err, SID_EFORMAT,
				   "%s: shape (%zu, %zu) too large (at most 2147483647 rows of "
				   "65536 columns)",
				   path, e->npy.rows, e->npy.cols);
		goto fail;
	}
	e->n = e->npy.rows;
	e->d = (int)e->npy.cols;
	chunk = CHUNK_VALUES / e->npy.cols; /* >= 64: at most 65536 columns */
	chunk = chunk < e->n ? chunk : e->n;
	buf = malloc(chunk * e->npy.cols * sizeof(float));
	if (!buf) {
		rc = sid_error_set(err, SID_ENOMEM, "%s: out of memory", path);
		goto fail;
	}
	/* sid_npy_read_f32 rejects non-finite values naming the row. */
	for (size_t r = 0; r < e->n; r += chunk) {
		size_t n = e->n - r < chunk ? e->n - r : chunk;
		if (tr_stop_signal()) { /* 3 GB at 1M rows of 768 */
			rc = tr_stop_error(err, "reading the embeddings");
			goto fail;
		}
		rc = sid_npy_read_f32(&e->npy, r, n, buf, err);
		if (rc < 0) {
			sid_error_name_file(err, path);
			if (err)
				err->code = SID_EFORMAT;
			rc = SID_EFORMAT;
			goto fail;
		}
		for (size_t k = 0; k < n * (size_t)e->d; k++) {
			uint32_t bits;
			memcpy(&bits, &buf[k], sizeof(bits));
			h = (h ^ bits) * 0x100000001b3ull; /* FNV-1a on 32-bit words */
			if (fabsf(buf[k]) > e->max_abs) {
				e->max_abs = fabsf(buf[k]);
				e->max_row = r + k / (size_t)e->d;
				e->max_col = (int)(k % (size_t)e->d);
			}
		}
	}
	h ^= (uint64_t)e->n * 0x9e3779b97f4a7c15ull ^ (uint64_t)e->d;
	e->fingerprint = tr_splitmix64(&h);
	free(buf);
	return 0;
fail:
	free(buf);
	tr_emb_close(e);
	return rc;
}

void tr_emb_close(struct tr_emb *e)
{
	if (!e)
		return;
	sid_npy_close(&e->npy);
	free(e->path);
	memset(e, 0, sizeof(*e));
}

int tr_emb_gather(const struct tr_emb *e, const int32_t *idx, size_t n, float *dst,
		  struct sid_error *err)
{
	for (size_t i = 0; i < n; i++) {
		if (idx[i] < 0 || (size_t)idx[i] >= e->n)
			return sid_error_set(err, SID_EINVAL, "%s: row %d out of range (%zu rows)",
					     e->path, idx[i], e->n);
		int rc = sid_npy_read_f32(&e->npy, (size_t)idx[i], 1, dst + i * (size_t)e->d, err);
		if (rc < 0)
			return rc;
	}
	return 0;
}

int tr_emb_rows(const struct tr_emb *e, size_t row0, size_t n, float *dst, struct sid_error *err)
{
	if (row0 > e->n || n > e->n - row0)
		return sid_error_set(err, SID_EINVAL, "%s: rows %zu..%zu out of range (%zu rows)",
				     e->path, row0, row0 + n, e->n);
	/* checked as it was opened; a value that is bad now changed since */
	if (sid_npy_read_f32(&e->npy, row0, n, dst, err) < 0)
		return sid_error_prefix(err, "%s (changed while training?)", e->path);
	return 0;
}

/* ---- text files ---- */

/* Line cursor over a mapped text file. */
struct lines {
	const char *p, *end;
	long lineno; /* 1-based number of the line last returned */
};

/* Next line as [*s, *e) without its "\n" or "\r\n"; 0 at the end. */
static int lines_next(struct lines *ln, const char **s, const char **e)
{
	if (ln->p >= ln->end)
		return 0;
	const char *nl = memchr(ln->p, '\n', (size_t)(ln->end - ln->p));
	const char *stop = nl ? nl : ln->end;
	*s = ln->p;
	*e = stop;
	if (*e > *s && (*e)[-1] == '\r')
		(*e)--;
	ln->p = nl ? nl + 1 : ln->end;
	ln->lineno++;
	return 1;
}

/*
 * Parse a non-negative decimal integer field from *p up to a tab or @e.
 * Returns 0 and advances *p past the field; -1 when it is not one (empty,
 * sign, other characters), -2 when it is one above INT32_MAX.
 */
static int parse_index(const char **p, const char *e, int64_t *out)
{
	const char *q = *p;
	int64_t v = 0;
	if (q >= e || *q < '0' || *q > '9')
		return -1;
	while (q < e && *q != '\t') {
		if (*q < '0' || *q > '9')
			return -1;
		if (v <= INT32_MAX) /* past it, only the digits still matter */
			v = v * 10 + (*q - '0');
		q++;
	}
	if (v > INT32_MAX)
		return -2;
	*p = q;
	*out = v;
	return 0;
}

/* A short, printable quote of a line for messages. */
static void quote_line(const char *s, const char *e, char *buf, size_t len)
{
	size_t n = (size_t)(e - s), j = 0;
	for (size_t i = 0; i < n && j + 5 < len; i++) {
		unsigned char c = (unsigned char)s[i];
		if (c == '\t') {
			buf[j++] = '\\';
			buf[j++] = 't';
		} else if (c < 32 || c > 126) {
			buf[j++] = '?';
		} else {
			buf[j++] = (char)c;
		}
		if (i + 1 < n && j + 5 >= len) {
			buf[j++] = '.';
			buf[j++] = '.';
			buf[j++] = '.';
		}
	}
	buf[j] = 0;
}

static int open_text(const char *path, struct sid_map *m, struct lines *ln, struct sid_error *err)
{
	const char *kind;
	int rc = tr_input_check(path, err);
	if (rc < 0)
		return rc;
	rc = sid_map_open(path, m, err);
	if (rc < 0) {
		sid_error_name_file(err, path);
		if (err) /* a missing or unreadable input is the user's to fix */
			err->code = SID_ENOTFOUND;
		return SID_ENOTFOUND;
	}
	if (m->len == 0) { /* an empty file maps to NULL: no pointer arithmetic on it */
		sid_map_close(m);
		return sid_error_set_at(err, SID_EFORMAT, 0, "%s: empty file", path);
	}
	/* a gzip'd TSV given by mistake was quoted as binary garbage, "not a
	 * non-negative integer"; the embeddings as "a ragged line" */
	if ((kind = sid_file_kind(m->addr, m->len))) {
		rc = sid_error_set_at(err, SID_EFORMAT, 0, "%s: not a text file: it looks like %s",
				      path, kind);
		sid_map_close(m);
		return rc;
	}
	/* "Unicode text" as Windows tools save it: every other byte a NUL, each
	 * field quoted as "??0?" and "not a non-negative integer" */
	const uint8_t *b = m->addr;
	if (m->len >= 2 && ((b[0] == 0xff && b[1] == 0xfe) || (b[0] == 0xfe && b[1] == 0xff))) {
		rc = sid_error_set_at(err, SID_EFORMAT, 0,
				      "%s: UTF-16 text (byte-order mark %02X %02X); the trainer "
				      "reads UTF-8: convert it (iconv -f UTF-16 -t UTF-8)",
				      path, b[0], b[1]);
		sid_map_close(m);
		return rc;
	}
	ln->p = m->addr;
	ln->end = ln->p + m->len;
	ln->lineno = 0;
	/* a UTF-8 byte-order mark, as Windows tools write it: not data (it was
	 * quoted as "???0\t1", not a non-negative integer) */
	if (m->len >= 3 && !memcmp(ln->p, "\xef\xbb\xbf", 3))
		ln->p += 3;
	if (ln->p == ln->end) {
		sid_map_close(m);
		return sid_error_set_at(err, SID_EFORMAT, 0,
					"%s: empty file (a byte-order mark only)", path);
	}
	return 0;
}

int tr_inter_read(const char *path, size_t n_users, size_t n_items, const uint8_t *cold,
		  struct tr_inter *out, struct sid_error *err)
{
	struct sid_map m = {0};
	struct lines ln;
	size_t cap = 0;
	const char *s, *e;
	char q[80];
	int rc;

	memset(out, 0, sizeof(*out));
	rc = open_text(path, &m, &ln, err);
	if (rc < 0)
		return rc;
	/* One interaction per newline is a good upper bound for the arrays. */
	for (const char *p = ln.p; (p = memchr(p, '\n', (size_t)(ln.end - p))); p++)
		cap++;
	cap++;
	out->user = malloc(cap * sizeof(int32_t));
	out->item = malloc(cap * sizeof(int32_t));
	if (!out->user || !out->item) {
		rc = sid_error_set(err, SID_ENOMEM, "%s: out of memory for %zu lines", path, cap);
		goto fail;
	}
	while (lines_next(&ln, &s, &e)) {
		const char *p = s;
		int64_t u, it;
		if (!(ln.lineno & 0xffff) && tr_stop_signal()) { /* 20M lines at 1M */
			rc = tr_stop_error(err, "reading the interactions");
			goto fail;
		}
		if (s == e) {
			rc = sid_error_set_at(err, SID_EFORMAT, ln.lineno, "%s:%ld: empty line",
					      path, ln.lineno);
			goto fail;
		}
		quote_line(s, e, q, sizeof(q));
		if (!memchr(s, '\t', (size_t)(e - s))) {
			rc = sid_error_set_at(err, SID_EFORMAT, ln.lineno,
					      "%s:%ld: ragged line \"%s\": expected user<TAB>item",
					      path, ln.lineno, q);
			goto fail;
		}
		for (int f = 0; f < 2; f++) {
			int prc = parse_index(&p, e, f ? &it : &u);
			if (prc < 0) {
				/* column names, as most exports write them first */
				int header = prc == -1 && ln.lineno == 1 && (*s | 0x20) >= 'a' &&
					     (*s | 0x20) <= 'z';
				rc = sid_error_set_at(
				    err, SID_EFORMAT, ln.lineno,
				    "%s:%ld: %s field of \"%s\" is %s%s", path, ln.lineno,
				    f ? "item" : "user", q,
				    prc == -2 ? "above 2147483647" : "not a non-negative integer",
				    header
					? " (a header line? the file has none: drop it, tail -n +2)"
					: "");
				goto fail;
			}
			p += !f; /* the tab between the fields */
		}
		if ((uint64_t)u >= n_users) {
			rc = sid_error_set_at(err, SID_EFORMAT, ln.lineno,
					      "%s:%ld: user %lld out of range (%zu %s)", path,
					      ln.lineno, (long long)u, n_users,
					      sid_plural(n_users, "user", "users"));
			goto fail;
		}
		if ((uint64_t)it >= n_items) {
			rc = sid_error_set_at(err, SID_EFORMAT, ln.lineno,
					      "%s:%ld: item %lld out of range (%zu %s)", path,
					      ln.lineno, (long long)it, n_items,
					      sid_plural(n_items, "item", "items"));
			goto fail;
		}
		if (cold && cold[it]) {
			rc = sid_error_set_at(err, SID_EFORMAT, ln.lineno,
					      "%s:%ld: item %lld is in the cold-item list", path,
					      ln.lineno, (long long)it);
			goto fail;
		}
		out->user[out->n] = (int32_t)u;
		out->item[out->n] = (int32_t)it;
		out->n++;
	}
	sid_map_close(&m);
	return 0;
fail:
	sid_map_close(&m);
	tr_inter_release(out);
	return rc;
}

/* The 1-based line of (@u, @it) in @t, one interaction a line (no blank
 * line); 0 when there is none. */
static size_t train_line(const struct tr_inter *t, int32_t u, int32_t it)
{
	for (size_t k = 0; k < t->n; k++)
		if (t->user[k] == u && t->item[k] == it)
			return k + 1;
	return 0;
}

int tr_test_read(const char *path, const struct tr_data *d, int cold_side, struct tr_inter *out,
		 struct sid_error *err)
{
	int rc = tr_inter_read(path, d->users.n, d->items.n, NULL, out, err);
	if (rc < 0)
		return rc;
	for (size_t k = 0; k < out->n; k++) {
		int32_t it = out->item[k];
		long line = (long)k + 1; /* one interaction a line, no blank line */
		if (cold_side && d->cold && !d->cold[it])
			rc =
			    sid_error_set_at(err, SID_EFORMAT, line,
					     "%s:%ld: item %d is not in the cold-item list; a cold "
					     "test holds cold items only (is it the warm test?)",
					     path, line, it);
		else if (cold_side && !d->cold && d->item_pop[it] > 0)
			rc = sid_error_set_at(
			    err, SID_EFORMAT, line,
			    "%s:%ld: item %d has %lld train clicks, so is not cold; "
			    "give the cold-item list (--cold-items), or is it the "
			    "warm test?",
			    path, line, it, (long long)d->item_pop[it]);
		else if (!cold_side && d->cold && d->cold[it])
			rc = sid_error_set_at(
			    err, SID_EFORMAT, line,
			    "%s:%ld: item %d is in the cold-item list; it belongs in "
			    "the cold test (--test-cold)",
			    path, line, it);
		else if (!cold_side && tr_csr_has(&d->by_user, (size_t)out->user[k], it))
			rc = sid_error_set_at(
			    err, SID_EFORMAT, line,
			    "%s:%ld: user %d clicked item %d in %s too (line %zu); the warm "
			    "ranking leaves a user's train items out, so it could never be a "
			    "hit: drop the test pairs that are in the train file",
			    path, line, out->user[k], it, d->train_path,
			    train_line(&d->train, out->user[k], it));
		if (rc < 0) {
			tr_inter_release(out);
			return rc;
		}
	}
	return 0;
}

int tr_tests_read(const struct tr_data *d, const char *test, const char *test_cold,
		  struct tr_inter *warm, struct tr_inter *cold, struct sid_error *err)
{
	int32_t *first = NULL; /* (N_items) 1-based line of an item's first cold test line */
	int rc = 0;

	memset(warm, 0, sizeof(*warm));
	memset(cold, 0, sizeof(*cold));
	if (test && (rc = tr_test_read(test, d, 0, warm, err)) < 0)
		return rc;
	if (test_cold && (rc = tr_test_read(test_cold, d, 1, cold, err)) < 0)
		goto fail;
	if (d->cold || !warm->n || !cold->n)
		return 0;
	first = calloc(d->items.n, sizeof(int32_t));
	if (!first) {
		rc = sid_error_set(err, SID_ENOMEM, "%s: out of memory", test_cold);
		goto fail;
	}
	for (size_t k = cold->n; k-- > 0;) /* one interaction a line, no blank line */
		first[cold->item[k]] = (int32_t)(k + 1 > INT32_MAX ? INT32_MAX : k + 1);
	for (size_t k = 0; k < warm->n; k++) {
		int32_t it = warm->item[k];
		if (first[it]) {
			rc = sid_error_set_at(err, SID_EFORMAT, (long)k + 1,
					      "%s:%ld: item %d is in the cold test %s (line %d), "
					      "so is no warm candidate (is it a cold item?); drop "
					      "the line from one of the two",
					      test, (long)k + 1, it, test_cold, first[it]);
			goto fail;
		}
	}
	free(first);
	return 0;
fail:
	free(first);
	tr_inter_release(warm);
	tr_inter_release(cold);
	return rc;
}

void tr_inter_release(struct tr_inter *t)
{
	if (!t)
		return;
	free(t->user);
	free(t->item);
	memset(t, 0, sizeof(*t));
}

int tr_cold_read(const char *path, size_t n_items, uint8_t **out, size_t *n_cold,
		 struct sid_error *err)
{
	struct sid_map m = {0};
	struct lines ln;
	uint8_t *cold = NULL;
	const char *s, *e;
	int rc;

	*out = NULL;
	*n_cold = 0;
	rc = open_text(path, &m, &ln, err);
	if (rc < 0)
		return rc;
	cold = calloc(n_items ? n_items : 1, 1);
	if (!cold) {
		rc = sid_error_set(err, SID_ENOMEM, "%s: out of memory", path);
		goto fail;
	}
	while (lines_next(&ln, &s, &e)) {
		const char *p = s;
		int64_t it;
		char q[80];
		quote_line(s, e, q, sizeof(q));
		if (parse_index(&p, e, &it) < 0 || p != e) {
			rc = sid_error_set_at(err, SID_EFORMAT, ln.lineno,
					      "%s:%ld: \"%s\" is not an item index", path,
					      ln.lineno, q);
			goto fail;
		}
		if ((uint64_t)it >= n_items) {
			rc = sid_error_set_at(err, SID_EFORMAT, ln.lineno,
					      "%s:%ld: item %lld out of range (%zu %s)", path,
					      ln.lineno, (long long)it, n_items,
					      sid_plural(n_items, "item", "items"));
			goto fail;
		}
		if (cold[it]) {
			rc = sid_error_set_at(err, SID_EFORMAT, ln.lineno,
					      "%s:%ld: item %lld listed twice", path, ln.lineno,
					      (long long)it);
			goto fail;
		}
		cold[it] = 1;
		(*n_cold)++;
	}
	sid_map_close(&m);
	*out = cold;
	return 0;
fail:
	sid_map_close(&m);
	free(cold);
	*n_cold = 0;
	return rc;
}

/* ---- indexes ---- */

static int cmp_i32(const void *a, const void *b)
{
	int32_t x = *(const int32_t *)a, y = *(const int32_t *)b;
	return (x > y) - (x < y);
}

int tr_csr_build(struct tr_csr *c, size_t rows, const int32_t *keys, const int32_t *cols, size_t n,
		 struct sid_error *err)
{
	int64_t *fill = NULL;

	memset(c, 0, sizeof(*c));
	c->rows = rows;
	c->off = calloc(rows + 1, sizeof(int64_t));
	c->idx = malloc((n ? n : 1) * sizeof(int32_t));
	fill = malloc((rows ? rows : 1) * sizeof(int64_t));
	if (!c->off || !c->idx || !fill) {
		free(fill);
		tr_csr_release(c);
		return sid_error_set(err, SID_ENOMEM, "index: out of memory for %zu rows", rows);
	}
	for (size_t i = 0; i < n; i++)
		c->off[(size_t)keys[i] + 1]++; /* not keys[i] + 1: INT32_MAX + 1 overflows */
	for (size_t r = 0; r < rows; r++)
		c->off[r + 1] += c->off[r];
	memcpy(fill, c->off, rows * sizeof(int64_t));
	for (size_t i = 0; i < n; i++)
		c->idx[fill[keys[i]]++] = cols[i];
	for (size_t r = 0; r < rows; r++)
		qsort(c->idx + c->off[r], (size_t)(c->off[r + 1] - c->off[r]), sizeof(int32_t),
		      cmp_i32);
	free(fill);
	return 0;
}

void tr_csr_release(struct tr_csr *c)
{
	if (!c)
		return;
	free(c->off);
	free(c->idx);
	memset(c, 0, sizeof(*c));
}

int tr_csr_has(const struct tr_csr *c, size_t r, int32_t v)
{
	int64_t lo = c->off[r], hi = c->off[r + 1];
	while (lo < hi) {
		int64_t mid = lo + (hi - lo) / 2;
		if (c->idx[mid] < v)
			lo = mid + 1;
		else
			hi = mid;
	}
	return lo < c->off[r + 1] && c->idx[lo] == v;
}

int tr_data_load(struct tr_data *d, const char *items_path, const char *users_path,
		 const char *train_path, const char *cold_path, struct sid_error *err)
{
	int rc;

	memset(d, 0, sizeof(*d));
	rc = tr_emb_open(&d->items, items_path, err);
	if (rc < 0)
		goto fail;
	rc = tr_emb_open(&d->users, users_path, err);
	if (rc < 0)
		goto fail;
	if (cold_path) {
		rc = tr_cold_read(cold_path, d->items.n, &d->cold, &d->n_cold, err);
		if (rc < 0)
			goto fail;
	}
	rc = tr_inter_read(train_path, d->users.n, d->items.n, d->cold, &d->train, err);
	if (rc < 0)
		goto fail;
	d->train_path = strdup(train_path);
	if (!d->train_path) {
		rc = sid_error_set(err, SID_ENOMEM, "%s: out of memory", train_path);
		goto fail;
	}
	rc = tr_csr_build(&d->by_user, d->users.n, d->train.user, d->train.item, d->train.n, err);
	if (rc < 0)
		goto fail;
	rc = tr_csr_build(&d->by_item, d->items.n, d->train.item, d->train.user, d->train.n, err);
	if (rc < 0)
		goto fail;
	d->item_pop = malloc(d->items.n * sizeof(int64_t));
	d->user_act = malloc(d->users.n * sizeof(int64_t));
	if (!d->item_pop || !d->user_act) {
		rc = sid_error_set(err, SID_ENOMEM, "counts: out of memory");
		goto fail;
	}
	for (size_t i = 0; i < d->items.n; i++) {
		d->item_pop[i] = d->by_item.off[i + 1] - d->by_item.off[i];
		d->n_warm_items += d->item_pop[i] > 0;
	}
	for (size_t u = 0; u < d->users.n; u++)
		d->user_act[u] = d->by_user.off[u + 1] - d->by_user.off[u];
	return 0;
fail:
	tr_data_release(d);
	return rc;
}

void tr_data_release(struct tr_data *d)
{
	if (!d)
		return;
	tr_emb_close(&d->items);
	tr_emb_close(&d->users);
	tr_inter_release(&d->train);
	free(d->train_path);
	free(d->cold);
	tr_csr_release(&d->by_user);
	tr_csr_release(&d->by_item);
	free(d->item_pop);
	free(d->user_act);
	memset(d, 0, sizeof(*d));
}

/* ---- batching ---- */

int tr_batcher_init(struct tr_batcher *bt, const struct tr_data *d, size_t batch_size,
		    uint64_t seed, struct sid_error *err)
{
	memset(bt, 0, sizeof(*bt));
	if (batch_size == 0)
		return sid_error_set(err, SID_EINVAL, "batch_size: must be at least 1");
	if (d->train.n < 2 || d->train.n > UINT32_MAX) /* das_step needs B >= 2 */
		return sid_error_set(err, SID_EINVAL, "%zu %s; training needs 2 to %u", d->train.n,
				     sid_plural(d->train.n, "interaction", "interactions"),
				     UINT32_MAX);
	bt->data = d;
	bt->batch_size = batch_size < d->train.n ? batch_size : d->train.n;
	bt->seed = seed;
	bt->epoch = -1;
	bt->perm = malloc(d->train.n * sizeof(uint32_t));
	bt->batch.user = malloc(bt->batch_size * sizeof(int32_t));
	bt->batch.item = malloc(bt->batch_size * sizeof(int32_t));
	bt->batch.user2 = malloc(bt->batch_size * sizeof(int32_t));
	bt->batch.item2 = malloc(bt->batch_size * sizeof(int32_t));
	if (!bt->perm || !bt->batch.user || !bt->batch.item || !bt->batch.user2 ||
	    !bt->batch.item2) {
		tr_batcher_release(bt);
		return sid_error_set(err, SID_ENOMEM, "batcher: out of memory");
	}
	return 0;
}

void tr_batcher_release(struct tr_batcher *bt)
{
	if (!bt)
		return;
	free(bt->perm);
	free(bt->batch.user);
	free(bt->batch.item);
	free(bt->batch.user2);
	free(bt->batch.item2);
	memset(bt, 0, sizeof(*bt));
}

size_t tr_batcher_count(const struct tr_batcher *bt)
{
	size_t n = bt->data->train.n / bt->batch_size;
	return n ? n : 1;
}

void tr_batcher_epoch(struct tr_batcher *bt, int epoch)
{
	size_t n = bt->data->train.n;
	uint64_t s =
	    bt->seed * 0x9e3779b97f4a7c15ull ^ ((uint64_t)(uint32_t)epoch << 32) ^ 0x5eed5eedull;
	for (size_t i = 0; i < n; i++)
		bt->perm[i] = (uint32_t)i;
	for (size_t i = n - 1; i > 0; i--) {
		size_t j = (size_t)rand_below(&s, i + 1);
		uint32_t t = bt->perm[i];
		bt->perm[i] = bt->perm[j];
		bt->perm[j] = t;
	}
	bt->epoch = epoch;
}

/* A random entry of CSR row @r other than @self, or -1 when there is none. */
static int32_t pick_other(const struct tr_csr *c, size_t r, int32_t self, uint64_t *s)
{
	int64_t lo = c->off[r], n = c->off[r + 1] - lo;
	if (n <= 1)
		return -1;
	for (int tries = 0; tries < 4; tries++) {
		int32_t v = c->idx[lo + (int64_t)rand_below(s, (uint64_t)n)];
		if (v != self)
			return v;
	}
	/* Mostly the same entry repeated: scan for any other. */
	for (int64_t k = 0; k < n; k++)
		if (c->idx[lo + k] != self)
			return c->idx[lo + k];
	return -1;
}

const struct tr_batch *tr_batcher_get(struct tr_batcher *bt, size_t b)
{
	const struct tr_data *d = bt->data;
	size_t start = b * bt->batch_size;
	size_t B = d->train.n - start < bt->batch_size ? d->train.n - start : bt->batch_size;
	uint64_t s = (bt->seed + 0x1234567ull) * 0xbf58476d1ce4e5b9ull ^
		     ((uint64_t)(uint32_t)bt->epoch << 40) ^ (uint64_t)b;

	bt->batch.B = B;
	for (size_t k = 0; k < B; k++) {
		uint32_t j = bt->perm[start + k];
		int32_t u = d->train.user[j], it = d->train.item[j];
		bt->batch.user[k] = u;
		bt->batch.item[k] = it;
		bt->batch.user2[k] = pick_other(&d->by_item, (size_t)it, u, &s);
		bt->batch.item2[k] = pick_other(&d->by_user, (size_t)u, it, &s);
	}
	return &bt->batch;
}
