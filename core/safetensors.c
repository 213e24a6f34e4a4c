/*
 * safetensors.c - the safetensors container: a parser that treats its input
 * as hostile (every rule of upstream's `validate` plus a few of ours) and a
 * deterministic writer.  Knows nothing about semid models; model.c and the
 * trainer's checkpoints build on it.  See safetensors.h.
 */
#include "safetensors.h"

#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fsutil.h"

static const struct {
	const char *name;
	size_t size;
} dtype_info[SID_ST_DTYPE_COUNT] = {
    [SID_ST_F64] = {"F64", 8},	 [SID_ST_F32] = {"F32", 4}, [SID_ST_F16] = {"F16", 2},
    [SID_ST_BF16] = {"BF16", 2}, [SID_ST_I64] = {"I64", 8}, [SID_ST_I32] = {"I32", 4},
    [SID_ST_I16] = {"I16", 2},	 [SID_ST_I8] = {"I8", 1},   [SID_ST_U8] = {"U8", 1},
    [SID_ST_BOOL] = {"BOOL", 1},
};

size_t sid_st_dtype_size(enum sid_st_dtype dt)
{
	if ((unsigned)dt >= SID_ST_DTYPE_COUNT)
		return 0;
	return dtype_info[dt].size;
}

const char *sid_st_dtype_name(enum sid_st_dtype dt)
{
	if ((unsigned)dt >= SID_ST_DTYPE_COUNT)
		return "?";
	return dtype_info[dt].name;
}

static int dtype_parse(const char *s)
{
	for (int i = 0; i < SID_ST_DTYPE_COUNT; i++)
		if (strcmp(s, dtype_info[i].name) == 0)
			return i;
	return -1;
}

void sid_st_file_release(struct sid_st_file *f)
{
	if (!f)
		return;
	for (size_t i = 0; i < f->n_tensors; i++)
		free(f->tensors[i].name);
	for (size_t i = 0; i < f->n_meta; i++) {
		free(f->meta[i].key);
		free(f->meta[i].value);
	}
	free(f->tensors);
	free(f->meta);
	memset(f, 0, sizeof(*f));
}

/* Non-negative JSON integer, or -1 (jansson caps integers at long long). */
static int64_t json_nonneg(const json_t *v)
{
	if (!json_is_integer(v))
		return -1;
	json_int_t x = json_integer_value(v);
	return x < 0 ? -1 : (int64_t)x;
}

static int parse_metadata(const json_t *obj, struct sid_st_file *out, struct sid_error *err)
{
	const char *key;
	json_t *val;
	size_t n = json_object_size(obj), i = 0;

	if (!json_is_object(obj))
		return sid_error_set(err, SID_EFORMAT, "__metadata__ is not an object of strings");
	out->meta = calloc(n ? n : 1, sizeof(*out->meta));
	if (!out->meta)
		return sid_error_set(err, SID_ENOMEM, "__metadata__: out of memory");
	json_object_foreach((json_t *)obj, key, val)
	{
		if (!json_is_string(val))
			return sid_error_set(err, SID_EFORMAT,
					     "__metadata__ key '" SID_NAME_FMT
					     "': value is not a string",
					     SID_NAME_ARGS(key));
		out->meta[i].key = strdup(key);
		out->meta[i].value = strdup(json_string_value(val));
		out->n_meta = ++i;
		if (!out->meta[i - 1].key || !out->meta[i - 1].value)
			return sid_error_set(err, SID_ENOMEM, "__metadata__: out of memory");
	}
	return 0;
}

static int parse_tensor(const char *name, const json_t *obj, struct sid_st_tensor *t,
			struct sid_error *err)
{
	const json_t *dt = json_object_get(obj, "dtype");
	const json_t *shape = json_object_get(obj, "shape");
	const json_t *offs = json_object_get(obj, "data_offsets");
	uint64_t nelem = 1, nbytes;
	int code;

	if (!json_is_object(obj))
		return sid_error_set(err, SID_EFORMAT,
				     "tensor '" SID_NAME_FMT "': entry is not an object",
				     SID_NAME_ARGS(name));
	if (!json_is_string(dt))
		return sid_error_set(err, SID_EFORMAT,
				     "tensor '" SID_NAME_FMT "': dtype missing or not a string",
				     SID_NAME_ARGS(name));
	code = dtype_parse(json_string_value(dt));
	if (code < 0)
		return sid_error_set(err, SID_EFORMAT,
				     "tensor '" SID_NAME_FMT "': unknown dtype '" SID_NAME_FMT "'",
				     SID_NAME_ARGS(name), SID_NAME_ARGS(json_string_value(dt)));
	t->dtype = (enum sid_st_dtype)code;

	if (!json_is_array(shape))
		return sid_error_set(err, SID_EFORMAT,
				     "tensor '" SID_NAME_FMT "': shape missing or not an array",
				     SID_NAME_ARGS(name));
	if (json_array_size(shape) > SID_ST_MAX_NDIM)
		return sid_error_set(err, SID_EFORMAT,
				     "tensor '" SID_NAME_FMT "': %zu dimensions, more than %d",
				     SID_NAME_ARGS(name), json_array_size(shape), SID_ST_MAX_NDIM);
	t->ndim = (int)json_array_size(shape);
	for (int d = 0; d < t->ndim; d++) {
		int64_t v = json_nonneg(json_array_get(shape, (size_t)d));
		if (v < 0)
			return sid_error_set(err, SID_EFORMAT,
					     "tensor '" SID_NAME_FMT
					     "': shape[%d] is not a non-negative integer",
					     SID_NAME_ARGS(name), d);
		t->shape[d] = v;
		if (__builtin_mul_overflow(nelem, (uint64_t)v, &nelem))
			return sid_error_set(err, SID_EFORMAT,
					     "tensor '" SID_NAME_FMT
					     "': element count overflows at shape[%d]",
					     SID_NAME_ARGS(name), d);
	}
	t->nelem = nelem;
	if (__builtin_mul_overflow(nelem, (uint64_t)sid_st_dtype_size(t->dtype), &nbytes))
		return sid_error_set(err, SID_EFORMAT,
				     "tensor '" SID_NAME_FMT "': byte size overflows",
				     SID_NAME_ARGS(name));

	if (!json_is_array(offs) || json_array_size(offs) != 2)
		return sid_error_set(err, SID_EFORMAT,
				     "tensor '" SID_NAME_FMT
				     "': data_offsets missing or not a pair",
				     SID_NAME_ARGS(name));
	int64_t b = json_nonneg(json_array_get(offs, 0));
	int64_t e = json_nonneg(json_array_get(offs, 1));
	if (b < 0 || e < 0)
		return sid_error_set(err, SID_EFORMAT,
				     "tensor '" SID_NAME_FMT
				     "': data_offsets are not non-negative integers",
				     SID_NAME_ARGS(name));
	if (e < b)
		return sid_error_set(err, SID_EFORMAT,
				     "tensor '" SID_NAME_FMT
				     "': data_offsets [%lld, %lld) end before they begin",
				     SID_NAME_ARGS(name), (long long)b, (long long)e);
	t->begin = (uint64_t)b;
	t->end = (uint64_t)e;
	if (t->end - t->begin != nbytes)
		return sid_error_set(
		    err, SID_EFORMAT,
		    "tensor '" SID_NAME_FMT "': data_offsets [%llu, %llu) hold %llu bytes, but "
		    "shape and dtype %s need %llu",
		    SID_NAME_ARGS(name), (unsigned long long)t->begin, (unsigned long long)t->end,
		    (unsigned long long)(t->end - t->begin), sid_st_dtype_name(t->dtype),
		    (unsigned long long)nbytes);
	return 0;
}

static int cmp_by_offset(const void *a, const void *b)
{
	const struct sid_st_tensor *x = *(const struct sid_st_tensor *const *)a;
	const struct sid_st_tensor *y = *(const struct sid_st_tensor *const *)b;
	if (x->begin != y->begin)
		return x->begin < y->begin ? -1 : 1;
	if (x->end != y->end)
		return x->end < y->end ? -1 : 1;
	return 0;
}

/*
 * The tensors sorted by begin must tile [0, data_len) exactly, as upstream's
 * validate requires: no overlap, no hole, nothing past the end, no trailing
 * bytes.
 */
static int check_tiling(struct sid_st_file *f, struct sid_error *err)
{
	struct sid_st_tensor **order;
	uint64_t at = 0;
	const struct sid_st_tensor *prev = NULL;
	int rc = 0;

	if (f->n_tensors == 0) {
		if (f->data_len != 0)
			return sid_error_set(
			    err, SID_EFORMAT,
			    "data section has %llu bytes but no tensor covers them",
			    (unsigned long long)f->data_len);
		return 0;
	}
	order = malloc(f->n_tensors * sizeof(struct sid_st_tensor *));
	if (!order)
		return sid_error_set(err, SID_ENOMEM, "out of memory sorting %zu tensors",
				     f->n_tensors);
	for (size_t i = 0; i < f->n_tensors; i++)
		order[i] = &f->tensors[i];
	qsort(order, f->n_tensors, sizeof(struct sid_st_tensor *), cmp_by_offset);
	for (size_t i = 0; i < f->n_tensors; i++) {
		const struct sid_st_tensor *t = order[i];
		if (t->begin < at) {
			rc =
			    sid_error_set(err, SID_EFORMAT,
					  "tensor '" SID_NAME_FMT
					  "': data_offsets [%llu, %llu) overlap '" SID_NAME_FMT "'",
					  SID_NAME_ARGS(t->name), (unsigned long long)t->begin,
					  (unsigned long long)t->end, SID_NAME_ARGS(prev->name));
			goto fail;
		}
		if (t->begin > at) {
			rc = sid_error_set(
			    err, SID_EFORMAT,
			    "tensor '" SID_NAME_FMT
			    "': data_offsets [%llu, %llu) leave a hole of %llu bytes "
			    "before it",
			    SID_NAME_ARGS(t->name), (unsigned long long)t->begin,
			    (unsigned long long)t->end, (unsigned long long)(t->begin - at));
			goto fail;
		}
		if (t->end > f->data_len) {
			rc = sid_error_set(
			    err, SID_EFORMAT,
			    "tensor '" SID_NAME_FMT "': data_offsets [%llu, %llu) run past the end "
			    "of the %llu-byte data section",
			    SID_NAME_ARGS(t->name), (unsigned long long)t->begin,
			    (unsigned long long)t->end, (unsigned long long)f->data_len);
			goto fail;
		}
		at = t->end; /* begin == at, so end >= at */
		prev = t;
	}
	if (at != f->data_len)
		rc = sid_error_set(
		    err, SID_EFORMAT,
		    "data section has %llu bytes after the last tensor '" SID_NAME_FMT "' (ends at "
		    "%llu of %llu)",
		    (unsigned long long)(f->data_len - at), SID_NAME_ARGS(prev->name),
		    (unsigned long long)at, (unsigned long long)f->data_len);
fail:
	free(order);
	return rc;
}

/*
 * "data_sha256" in __metadata__ (written by sid_st_writer; optional for
 * files from elsewhere): the SHA-256 of the data section.  A file whose
 * data no longer matches it (a flipped bit, a partial copy padded out) is
 * refused; without the key nothing is checked.
 */
static int check_data_sha256(const struct sid_st_file *f, struct sid_error *err)
{
	const char *want = sid_st_meta_get(f, SID_ST_DATA_SHA256);
	char got[65];

	if (!want)
		return 0;
	if (strlen(want) != 64 || strspn(want, "0123456789abcdef") != 64)
		return sid_error_set(err, SID_EFORMAT,
				     "__metadata__ %s is not 64 lowercase hex digits",
				     SID_ST_DATA_SHA256);
	sid_sha256_hex(f->data, (size_t)f->data_len, got);
	if (strcmp(got, want) != 0)
		return sid_error_set(err, SID_EFORMAT,
				     "the data section's SHA-256 is %.12s..., not the %.12s... its "
				     "__metadata__ %s records: the file is corrupt",
				     got, want, SID_ST_DATA_SHA256);
	return 0;
}

/* Whether the 8 bytes of the header length are text (printable ASCII, tab,
 * CR, LF): an eval.json, a config or a TSV given for the model.  A real
 * length, at most SID_ST_HEADER_MAX, has zero high bytes, so is never text. */
static int head_is_text(const uint8_t *p, size_t len)
{
	if (len < 8)
		return 0;
	for (size_t i = 0; i < 8; i++)
		if (!((p[i] >= 0x20 && p[i] < 0x7f) || p[i] == '\t' || p[i] == '\n' ||
		      p[i] == '\r'))
			return 0;
	return 1;
}

/* "; it looks like ..., not a safetensors model" (sid_file_kind, or text)
 * into @hint for the message of a file that fails the first structural
 * rules, or "".  (Text is no sid_file_kind: the trainer takes text.) */
static const char *foreign_hint(const uint8_t *p, size_t len, char *hint, size_t size)
{
	const char *kind = sid_file_kind(p, len);

	if (!kind && head_is_text(p, len))
		kind = "a text file (JSON, TSV?)";
	if (kind)
		snprintf(hint, size, "; it looks like %s, not a safetensors model", kind);
	else
		hint[0] = '\0';
	return hint;
}

uint64_t sid_st_header_len(const uint8_t head[8])
{
	uint64_t n = 0;

	for (int b = 7; b >= 0; b--)
		n = n << 8 | head[b];
	return n;
}

int sid_st_check_head(const uint8_t *head, size_t n, uint64_t size, struct sid_error *err)
{
	uint64_t hlen;
	char hint[128];

	if (size < 8 || n < 8)
		return sid_error_set(err, SID_EFORMAT,
				     "file is %llu bytes, too short for the 8-byte header length",
				     (unsigned long long)size);
	hlen = sid_st_header_len(head);
	if (hlen > SID_ST_HEADER_MAX)
		return sid_error_set(err, SID_EFORMAT, "header length %llu exceeds the cap of %u%s",
				     (unsigned long long)hlen, SID_ST_HEADER_MAX,
				     foreign_hint(head, n, hint, sizeof(hint)));
	if (hlen > size - 8)
		return sid_error_set(err, SID_EFORMAT,
				     "header length %llu runs past the end of the %llu-byte file%s",
				     (unsigned long long)hlen, (unsigned long long)size,
				     foreign_hint(head, n, hint, sizeof(hint)));
	if (hlen < 2 || n < 9 || head[8] != '{')
		return sid_error_set(err, SID_EFORMAT, "header is not a JSON object%s",
				     foreign_hint(head, n, hint, sizeof(hint)));
	return 0;
}

int sid_st_sniff(const unsigned char head[9], uint64_t size)
{
	return sid_st_check_head(head, 9, size, NULL) == 0;
}

int sid_st_parse(const void *buf, size_t len, struct sid_st_file *out, struct sid_error *err)
{
	const uint8_t *p = buf;
	uint64_t hlen;
	json_t *root = NULL;
	json_error_t jerr;
	const char *key;
	json_t *val;
	size_t n, i = 0;
	int rc;

	memset(out, 0, sizeof(*out));
	if (!buf && len)
		return sid_error_set(err, SID_EINVAL, "no buffer");
	if ((rc = sid_st_check_head(p, len, len, err)))
		return rc;
	hlen = sid_st_header_len(p);
	if (memchr(p + 8, '\0', (size_t)hlen))
		return sid_error_set(
		    err, SID_EFORMAT, "header holds a NUL byte at byte offset %zu",
		    (size_t)((const uint8_t *)memchr(p + 8, '\0', (size_t)hlen) - p));

	root = json_loadb((const char *)p + 8, (size_t)hlen, JSON_REJECT_DUPLICATES, &jerr);
	if (!root)
		return sid_error_set(err, SID_EFORMAT, "header JSON: %s (line %d, column %d)",
				     jerr.text, jerr.line, jerr.column);
	if (!json_is_object(root)) {
		rc = sid_error_set(err, SID_EFORMAT, "header is not a JSON object");
		goto fail;
	}
	out->data = p + 8 + hlen;
	out->data_len = (uint64_t)(len - 8 - hlen);

	n = json_object_size(root);
	out->tensors = calloc(n ? n : 1, sizeof(*out->tensors));
	if (!out->tensors) {
		rc = sid_error_set(err, SID_ENOMEM, "out of memory for %zu tensors", n);
		goto fail;
	}
	json_object_foreach(root, key, val)
	{
		if (strcmp(key, "__metadata__") == 0) {
			rc = parse_metadata(val, out, err);
			if (rc)
				goto fail;
			continue;
		}
		struct sid_st_tensor *t = &out->tensors[i];
		if (!*key) {
			/* a tensor no one can ask for by name (and the writer refuses) */
			rc = sid_error_set(err, SID_EFORMAT, "a tensor has an empty name");
			goto fail;
		}
		rc = parse_tensor(key, val, t, err);
		if (rc)
			goto fail;
		t->name = strdup(key);
		if (!t->name) {
			rc = sid_error_set(err, SID_ENOMEM, "out of memory");
			goto fail;
		}
		out->n_tensors = ++i;
	}
	rc = check_tiling(out, err);
	if (rc)
		goto fail;
	rc = check_data_sha256(out, err);
	if (rc)
		goto fail;
	for (i = 0; i < out->n_tensors; i++)
		out->tensors[i].data = out->data + out->tensors[i].begin;
	json_decref(root);
	return 0;

fail:
	json_decref(root);
	sid_st_file_release(out);
	return rc;
}

const struct sid_st_tensor *sid_st_find(const struct sid_st_file *f, const char *name)
{
	for (size_t i = 0; i < f->n_tensors; i++)
		if (strcmp(f->tensors[i].name, name) == 0)
			return &f->tensors[i];
	return NULL;
}

const char *sid_st_meta_get(const struct sid_st_file *f, const char *key)
{
	for (size_t i = 0; i < f->n_meta; i++)
		if (strcmp(f->meta[i].key, key) == 0)
			return f->meta[i].value;
	return NULL;
}

/* ---- writer ---- */

struct st_entry {
	char *name;
	enum sid_st_dtype dtype;
	int ndim;
	int64_t shape[SID_ST_MAX_NDIM];
	uint64_t nbytes;
	void *data;
	int owned; /* 0: borrowed from the caller (sid_st_writer_add_borrowed) */
};

struct sid_st_writer {
	size_t n, cap;
	struct st_entry *t;
	size_t n_meta, cap_meta;
	struct sid_st_meta *meta;
};

struct sid_st_writer *sid_st_writer_new(void)
{
	return calloc(1, sizeof(struct sid_st_writer));
}

void sid_st_writer_free(struct sid_st_writer *w)
{
	if (!w)
		return;
	for (size_t i = 0; i < w->n; i++) {
		free(w->t[i].name);
		if (w->t[i].owned)
			free(w->t[i].data);
	}
	for (size_t i = 0; i < w->n_meta; i++) {
		free(w->meta[i].key);
		free(w->meta[i].value);
	}
	free(w->t);
	free(w->meta);
	free(w);
}

static int writer_add(struct sid_st_writer *w, const char *name, enum sid_st_dtype dtype, int ndim,
		      const int64_t *shape, const void *data, int borrow, struct sid_error *err)
{
	struct st_entry e = {0};
	uint64_t nelem = 1;

	if (!w || !name || !*name)
		return sid_error_set(err, SID_EINVAL, "writer: tensor without a name");
	if (strcmp(name, "__metadata__") == 0)
		return sid_error_set(err, SID_EINVAL,
				     "writer: '__metadata__' is not a tensor name");
	if ((unsigned)dtype >= SID_ST_DTYPE_COUNT)
		return sid_error_set(err, SID_EINVAL, "writer: tensor '%s': bad dtype %d", name,
				     (int)dtype);
	if (ndim < 0 || ndim > SID_ST_MAX_NDIM || (ndim > 0 && !shape))
		return sid_error_set(err, SID_EINVAL, "writer: tensor '%s': bad ndim %d", name,
				     ndim);
	for (size_t i = 0; i < w->n; i++)
		if (strcmp(w->t[i].name, name) == 0)
			return sid_error_set(err, SID_EINVAL, "writer: tensor '%s' added twice",
					     name);
	for (int d = 0; d < ndim; d++) {
		if (shape[d] < 0)
			return sid_error_set(err, SID_EINVAL,
					     "writer: tensor '%s': shape[%d] is negative", name, d);
		if (__builtin_mul_overflow(nelem, (uint64_t)shape[d], &nelem))
			return sid_error_set(err, SID_ENOMEM,
					     "writer: tensor '%s': element count overflows", name);
		e.shape[d] = shape[d];
	}
	if (__builtin_mul_overflow(nelem, (uint64_t)sid_st_dtype_size(dtype), &e.nbytes) ||
	    e.nbytes > SIZE_MAX / 2)
		return sid_error_set(err, SID_ENOMEM, "writer: tensor '%s': too large", name);
	if (e.nbytes && !data)
		return sid_error_set(err, SID_EINVAL, "writer: tensor '%s': no data", name);
	if (w->n == w->cap) {
		size_t cap = w->cap ? 2 * w->cap : 16;
		struct st_entry *t = realloc(w->t, cap * sizeof(*t));
		if (!t)
			return sid_error_set(err, SID_ENOMEM, "writer: out of memory");
		w->t = t;
		w->cap = cap;
	}
	e.name = strdup(name);
	e.owned = !borrow;
	/* an empty tensor may come without data: any non-null pointer will do */
	e.data = borrow ? (void *)(data ? data : w) : malloc(e.nbytes ? (size_t)e.nbytes : 1);
	if (!e.name || !e.data) {
		free(e.name);
		if (e.owned)
			free(e.data);
		return sid_error_set(err, SID_ENOMEM, "writer: tensor '%s': out of memory", name);
	}
	if (e.nbytes && e.owned)
		memcpy(e.data, data, (size_t)e.nbytes);
	e.dtype = dtype;
	e.ndim = ndim;
	w->t[w->n++] = e;
	return 0;
}

int sid_st_writer_add(struct sid_st_writer *w, const char *name, enum sid_st_dtype dtype, int ndim,
		      const int64_t *shape, const void *data, struct sid_error *err)
{
	return writer_add(w, name, dtype, ndim, shape, data, 0, err);
}

int sid_st_writer_add_borrowed(struct sid_st_writer *w, const char *name, enum sid_st_dtype dtype,
			       int ndim, const int64_t *shape, const void *data,
			       struct sid_error *err)
{
	return writer_add(w, name, dtype, ndim, shape, data, 1, err);
}

int sid_st_writer_meta(struct sid_st_writer *w, const char *key, const char *value,
		       struct sid_error *err)
{
	char *v;

	if (!w || !key || !value)
		return sid_error_set(err, SID_EINVAL, "writer: metadata without key or value");
	v = strdup(value);
	if (!v)
		return sid_error_set(err, SID_ENOMEM, "writer: out of memory");
	for (size_t i = 0; i < w->n_meta; i++) {
		if (strcmp(w->meta[i].key, key) == 0) { /* later value wins */
			free(w->meta[i].value);
			w->meta[i].value = v;
			return 0;
		}
	}
	if (w->n_meta == w->cap_meta) {
		size_t cap = w->cap_meta ? 2 * w->cap_meta : 8;
		struct sid_st_meta *m = realloc(w->meta, cap * sizeof(*m));
		if (!m) {
			free(v);
			return sid_error_set(err, SID_ENOMEM, "writer: out of memory");
		}
		w->meta = m;
		w->cap_meta = cap;
	}
	w->meta[w->n_meta].key = strdup(key);
	if (!w->meta[w->n_meta].key) {
		free(v);
		return sid_error_set(err, SID_ENOMEM, "writer: out of memory");
	}
	w->meta[w->n_meta++].value = v;
	return 0;
}

/* The header JSON into *@out: "__metadata__" first, then tensors in the
 * order added.  0, or the error's code (also when @err is NULL). */
static int writer_header(const struct sid_st_writer *w, json_t **out, struct sid_error *err)
{
	json_t *root = json_object(), *meta = json_object();
	struct sid_sha256 c;
	char hex[65];
	uint64_t at = 0;
	int rc;

	*out = NULL;
	if (!root || !meta || json_object_set_new(root, "__metadata__", meta)) {
		if (!root)
			json_decref(meta);
		goto nomem;
	}
	for (size_t i = 0; i < w->n_meta; i++) {
		json_t *s;
		if (strcmp(w->meta[i].key, SID_ST_DATA_SHA256) == 0)
			continue; /* the writer's own, below */
		s = json_string(w->meta[i].value);
		if (!s) {
			rc = sid_error_set(err, SID_EINVAL,
					   "writer: metadata '%s': value is not valid UTF-8",
					   w->meta[i].key);
			goto fail;
		}
		if (json_object_set_new(meta, w->meta[i].key, s)) {
			rc = sid_error_set(err, SID_EINVAL,
					   "writer: metadata key '%s' is not valid UTF-8",
					   w->meta[i].key);
			goto fail;
		}
	}
	sid_sha256_init(&c);
	for (size_t i = 0; i < w->n; i++)
		if (w->t[i].nbytes)
			sid_sha256_update(&c, w->t[i].data, (size_t)w->t[i].nbytes);
	sid_sha256_final_hex(&c, hex);
	if (json_object_set_new(meta, SID_ST_DATA_SHA256, json_string(hex)))
		goto nomem;
	for (size_t i = 0; i < w->n; i++) {
		const struct st_entry *e = &w->t[i];
		json_t *t = json_object(), *shape = json_array();
		if (!t || !shape ||
		    json_object_set_new(t, "dtype", json_string(sid_st_dtype_name(e->dtype)))) {
			json_decref(t);
			json_decref(shape);
			goto nomem;
		}
		if (json_object_set_new(t, "shape", shape)) {
			json_decref(t);
			goto nomem;
		}
		for (int d = 0; d < e->ndim; d++)
			if (json_array_append_new(shape, json_integer(e->shape[d]))) {
				json_decref(t);
				goto nomem;
			}
		if (json_object_set_new(t, "data_offsets",
					json_pack("[II]", (json_int_t)at,
						  (json_int_t)at + (json_int_t)e->nbytes))) {
			json_decref(t);
			goto nomem;
		}
		at += e->nbytes;
		if (json_object_set_new(root, e->name, t)) {
			rc = sid_error_set(err, SID_EINVAL,
					   "writer: tensor name '%s' is not valid UTF-8", e->name);
			goto fail;
		}
	}
	*out = root;
	return 0;
nomem:
	rc = sid_error_set(err, SID_ENOMEM, "writer: out of memory building the header");
fail:
	json_decref(root);
	return rc;
}

/*
 * The bytes before the data section: the 8-byte header length, the header
 * JSON and its padding (*prefix, malloc'ed), and the data section's length.
 */
static int writer_prefix(const struct sid_st_writer *w, uint8_t **prefix, size_t *prefix_len,
			 uint64_t *data_len, struct sid_error *err)
{
	json_t *root;
	char *hdr;
	uint8_t *buf;
	size_t hlen, padded;
	int rc;

	*prefix = NULL;
	if (!w)
		return sid_error_set(err, SID_EINVAL, "writer: NULL");
	if ((rc = writer_header(w, &root, err)))
		return rc;
	hdr = json_dumps(root, JSON_COMPACT | JSON_PRESERVE_ORDER);
	json_decref(root);
	if (!hdr)
		return sid_error_set(err, SID_ENOMEM, "writer: out of memory dumping the header");
	hlen = strlen(hdr);
	padded = (hlen + 7) & ~(size_t)7; /* data section starts 8-aligned */
	if (padded > SID_ST_HEADER_MAX) {
		free(hdr);
		return sid_error_set(err, SID_EINVAL, "writer: header of %zu bytes exceeds the cap",
				     padded);
	}
	*data_len = 0;
	for (size_t i = 0; i < w->n; i++)
		*data_len += w->t[i].nbytes;
	if (*data_len > SIZE_MAX - 8 - padded) {
		free(hdr);
		return sid_error_set(err, SID_ENOMEM, "writer: file too large");
	}
	buf = malloc(8 + padded);
	if (!buf) {
		free(hdr);
		return sid_error_set(err, SID_ENOMEM, "writer: out of memory for the header");
	}
	for (int b = 0; b < 8; b++)
		buf[b] = (uint8_t)((uint64_t)padded >> (8 * b));
	memcpy(buf + 8, hdr, hlen);
	memset(buf + 8 + hlen, ' ', padded - hlen);
	free(hdr);
	*prefix = buf;
	*prefix_len = 8 + padded;
	return 0;
}

int sid_st_writer_serialize(const struct sid_st_writer *w, uint8_t **out, size_t *out_len,
			    struct sid_error *err)
{
	uint8_t *prefix, *buf, *p;
	size_t plen, total;
	uint64_t data_len;
	int rc;

	*out = NULL;
	*out_len = 0;
	rc = writer_prefix(w, &prefix, &plen, &data_len, err);
	if (rc)
		return rc;
	total = plen + (size_t)data_len;
	buf = malloc(total);
	if (!buf) {
		free(prefix);
		return sid_error_set(err, SID_ENOMEM, "writer: out of memory for %zu bytes", total);
	}
	memcpy(buf, prefix, plen);
	free(prefix);
	p = buf + plen;
	for (size_t i = 0; i < w->n; i++) {
		if (w->t[i].nbytes)
			memcpy(p, w->t[i].data, (size_t)w->t[i].nbytes);
		p += w->t[i].nbytes;
	}
	*out = buf;
	*out_len = total;
	return 0;
}

/* Written piece by piece from the writer's tensors: no second copy of a
 * checkpoint's gigabytes in memory. */
int sid_st_writer_publish(const struct sid_st_writer *w, const char *path, struct sid_error *err)
{
	return sid_st_writer_publish_go(w, path, NULL, NULL, err);
}

int sid_st_writer_publish_go(const struct sid_st_writer *w, const char *path, int (*go)(void *arg),
			     void *arg, struct sid_error *err)
{
	struct sid_piece *pc;
	uint8_t *prefix;
	size_t plen;
	uint64_t data_len;
	int rc = writer_prefix(w, &prefix, &plen, &data_len, err);

	if (rc) {
		sid_error_prefix(err, "%s", path);
		return rc;
	}
	pc = malloc((w->n + 1) * sizeof(*pc));
	if (!pc) {
		free(prefix);
		return sid_error_set(err, SID_ENOMEM, "%s: writer: out of memory", path);
	}
	pc[0] = (struct sid_piece){prefix, plen};
	for (size_t i = 0; i < w->n; i++)
		pc[i + 1] = (struct sid_piece){w->t[i].data, (size_t)w->t[i].nbytes};
	rc = sid_publish_atomic_pieces_go(path, pc, w->n + 1, go, arg, err);
	free(pc);
	free(prefix);
	return rc;
}
