/*
 * model_builder.h - header-only test helper: write a valid random semid model
 * (the profile in proto/model-format.md) to a buffer or a file, with hooks to
 * break it on purpose.  Every function is static; include it from any test
 * (tests are compiled with -Itests): #include "model_builder.h".
 *
 * Usage:
 *
 *   struct mb_spec s;
 *   mb_spec_init(&s);                    // item tower 8 -> 16 -> 4, L=3, K={5,7,3}, relu
 *   int hidden[] = {32, 16};
 *   int K[] = {256, 256, 256};
 *   mb_tower(&s, SID_TOWER_ITEM, 64, hidden, 2, 8, 3, K, "gelu", "l2", 1);
 *   mb_tower(&s, SID_TOWER_USER, 48, NULL, 0, 8, 2, K, "relu", "none", 0);
 *   s.seed = 42;
 *   uint8_t *buf; size_t len;
 *   mb_build_buffer(&s, &buf, &len, &err);      // or mb_build_file(&s, path, &err)
 *   sid_model_load_buffer(buf, len, &m, &err);  ... free(buf);
 *
 * What gets written, per present tower T (tensors in this order):
 *   T.encoder.{i}.weight  F32 (out, in)  uniform(-1/sqrt(in), 1/sqrt(in)), as torch Linear
 *   T.encoder.{i}.bias    F32 (out)      same range; only when spec bias is on
 *   T.codebook.{l}        F32 (K_l, E)   uniform(-1, 1) * codebook_scale (default 1)
 * then, when extra_tensors is set, ignored tensors "decoder.0.weight" (F32),
 * "optimizer.step" (I64) and "item_collab.emb" (F16).  Layer widths: D ->
 * hidden[0] -> ... -> hidden[n_hidden-1] -> E.  Values come from a splitmix64
 * stream seeded by spec.seed, so the same spec always gives the same bytes.
 *
 * Metadata: "semid" = {"format_version":1,"model_version":<model_version>,
 * "towers":{T:{"activation":..,"input_norm":..}}} plus the members of
 * extra_semid_json (a JSON object text, e.g. "{\"train\":{\"epochs\":3}}")
 * merged in; semid_override replaces the whole "semid" string verbatim (to
 * write bad metadata), no_semid leaves it out.
 *
 * Hooks for malformed files:
 *   - hook(ctx, t): called for every tensor before it is added.  It may
 *     change t->name, t->dtype, t->ndim, t->shape and the data (t->data is
 *     malloc'ed, t->nbytes long; a hook that changes the byte size must
 *     free(t->data) and store a new malloc'ed buffer and nbytes, which must
 *     equal nelem * dtype size).  Return MB_KEEP, or MB_OMIT to drop it.
 *   - mb_build_writer gives the sid_st_writer before serialising, so a test
 *     can add more tensors or metadata (sid_st_writer_add / _meta).
 *   - mb_raw_file builds a safetensors file from a hand-written header JSON
 *     and data bytes, for container-level corruption (offsets, dtypes, ...).
 *   - mb_set_f32 pokes one float inside a serialized buffer by tensor name.
 *
 * Not thread-safe only in the sense that a spec belongs to one thread; all
 * functions are reentrant.
 */
#ifndef SID_TESTS_MODEL_BUILDER_H
#define SID_TESTS_MODEL_BUILDER_H

#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "err.h"
#include "fsutil.h"
#include "model.h"
#include "safetensors.h"

#define MB_FN static __attribute__((unused))

enum { MB_KEEP = 0, MB_OMIT = 1 };

struct mb_tower_spec {
	int present;
	int D;			    /* input width */
	int n_hidden;		    /* hidden layers; layers = n_hidden + 1 */
	int hidden[SID_MAX_LAYERS]; /* widths of hidden layers */
	int E;			    /* latent width */
	int L;			    /* codebook levels */
	int K[SID_MAX_LEVELS];	    /* codewords per level */
	const char *activation;	    /* "relu", "silu", "gelu", "tanh", "identity" */
	const char *input_norm;	    /* "none", "l2" */
	int bias;		    /* write .bias tensors */
	float codebook_scale;	    /* codebook values are uniform(-1,1) * this; 0 means 1 */
};

/* One tensor on its way into the writer (what a hook sees). */
struct mb_tensor {
	char name[128];
	enum sid_st_dtype dtype;
	int ndim;
	int64_t shape[SID_ST_MAX_NDIM];
	void *data; /* malloc'ed */
	size_t nbytes;
};

struct mb_spec {
	struct mb_tower_spec tower[SID_TOWER_COUNT];
	uint64_t seed;
	const char *model_version;    /* default "test-1" */
	const char *extra_semid_json; /* object whose members are merged into "semid", or NULL */
	const char *semid_override;   /* verbatim "semid" metadata string, or NULL */
	int no_semid;		      /* leave out the "semid" metadata key */
	int extra_tensors;	      /* add ignored non-encoder tensors */
	int (*hook)(void *ctx, struct mb_tensor *t);
	void *hook_ctx;
};

/* splitmix64: a tiny deterministic generator. */
MB_FN uint64_t mb_rand_u64(uint64_t *s)
{
	uint64_t z = (*s += 0x9e3779b97f4a7c15ull);
	z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
	z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
	return z ^ (z >> 31);
}

/* Uniform in [-1, 1). */
MB_FN float mb_rand_sym(uint64_t *s)
{
	return (float)((double)(mb_rand_u64(s) >> 11) * (2.0 / 9007199254740992.0) - 1.0);
}

/* Set tower @kind of @s (hidden may be NULL when n_hidden is 0). */
MB_FN void mb_tower(struct mb_spec *s, enum sid_tower_kind kind, int D, const int *hidden,
		    int n_hidden, int E, int L, const int *K, const char *activation,
		    const char *input_norm, int bias)
{
	struct mb_tower_spec *t = &s->tower[kind];
	memset(t, 0, sizeof(*t));
	t->present = 1;
	t->D = D;
	t->n_hidden = n_hidden;
	for (int i = 0; i < n_hidden && i < SID_MAX_LAYERS; i++)
		t->hidden[i] = hidden[i];
	t->E = E;
	t->L = L;
	for (int l = 0; l < L && l < SID_MAX_LEVELS; l++)
		t->K[l] = K[l];
	t->activation = activation;
	t->input_norm = input_norm;
	t->bias = bias;
}

/* Defaults: one item tower 8 -> 16 -> 4, L=3, K={5,7,3}, relu, no norm, bias, seed 1. */
MB_FN void mb_spec_init(struct mb_spec *s)
{
	static const int hidden[] = {16};
	static const int K[] = {5, 7, 3};
	memset(s, 0, sizeof(*s));
	s->seed = 1;
	s->model_version = "test-1";
	mb_tower(s, SID_TOWER_ITEM, 8, hidden, 1, 4, 3, K, "relu", "none", 1);
}

/* The "semid" metadata JSON text for @s (malloc'ed), or NULL. */
MB_FN char *mb_semid_json(const struct mb_spec *s)
{
	json_t *root = json_object(), *towers = json_object();
	char *out;

	json_object_set_new(root, "format_version", json_integer(SID_FORMAT_VERSION));
	json_object_set_new(root, "model_version",
			    json_string(s->model_version ? s->model_version : "test-1"));
	for (int k = 0; k < SID_TOWER_COUNT; k++) {
		const struct mb_tower_spec *t = &s->tower[k];
		if (!t->present)
			continue;
		json_object_set_new(towers, sid_tower_name((enum sid_tower_kind)k),
				    json_pack("{s:s, s:s}", "activation", t->activation,
					      "input_norm", t->input_norm));
	}
	json_object_set_new(root, "towers", towers);
	if (s->extra_semid_json) {
		json_t *extra = json_loads(s->extra_semid_json, 0, NULL);
		if (extra && json_is_object(extra))
			json_object_update(root, extra);
		json_decref(extra);
	}
	out = json_dumps(root, JSON_COMPACT | JSON_PRESERVE_ORDER);
	json_decref(root);
	return out;
}

/* Run the hook on @t and add it to @w; frees t->data. */
MB_FN int mb__add(const struct mb_spec *s, struct sid_st_writer *w, struct mb_tensor *t,
		  struct sid_error *err)
{
	int rc = 0;
	if (!s->hook || s->hook(s->hook_ctx, t) == MB_KEEP)
		rc = sid_st_writer_add(w, t->name, t->dtype, t->ndim, t->shape, t->data, err);
	free(t->data);
	t->data = NULL;
	return rc;
}

/* A random F32 tensor of @ndim (1 or 2) dims, values uniform(-scale, scale). */
MB_FN int mb__add_f32(const struct mb_spec *s, struct sid_st_writer *w, uint64_t *rng,
		      const char *name, int ndim, int64_t d0, int64_t d1, float scale,
		      struct sid_error *err)
{
	struct mb_tensor t;
	size_t n = (size_t)d0 * (size_t)(ndim == 2 ? d1 : 1);

	memset(&t, 0, sizeof(t));
	snprintf(t.name, sizeof(t.name), "%s", name);
	t.dtype = SID_ST_F32;
	t.ndim = ndim;
	t.shape[0] = d0;
	t.shape[1] = d1;
	t.nbytes = n * sizeof(float);
	t.data = malloc(t.nbytes ? t.nbytes : 1);
	if (!t.data)
		return sid_error_set(err, SID_ENOMEM, "model_builder: out of memory");
	for (size_t i = 0; i < n; i++)
		((float *)t.data)[i] = mb_rand_sym(rng) * scale;
	return mb__add(s, w, &t, err);
}

/* An all-zero tensor of any dtype (for the ignored extras). */
MB_FN int mb__add_zeros(const struct mb_spec *s, struct sid_st_writer *w, const char *name,
			enum sid_st_dtype dtype, int ndim, const int64_t *shape,
			struct sid_error *err)
{
	struct mb_tensor t;
	size_t n = 1;

	memset(&t, 0, sizeof(t));
	snprintf(t.name, sizeof(t.name), "%s", name);
	t.dtype = dtype;
	t.ndim = ndim;
	for (int d = 0; d < ndim; d++) {
		t.shape[d] = shape[d];
		n *= (size_t)shape[d];
	}
	t.nbytes = n * sid_st_dtype_size(dtype);
	t.data = calloc(1, t.nbytes ? t.nbytes : 1);
	if (!t.data)
		return sid_error_set(err, SID_ENOMEM, "model_builder: out of memory");
	return mb__add(s, w, &t, err);
}

/*
 * Build a writer holding the model of @s (caller frees it with
 * sid_st_writer_free).  0 or a SID_E* code from the writer.
 */
MB_FN int mb_build_writer(const struct mb_spec *s, struct sid_st_writer **out,
			  struct sid_error *err)
{
	struct sid_st_writer *w = sid_st_writer_new();
	uint64_t rng = s->seed;
	char name[128];
	int rc = 0;

	*out = NULL;
	if (!w)
		return sid_error_set(err, SID_ENOMEM, "model_builder: out of memory");
	for (int k = 0; k < SID_TOWER_COUNT && !rc; k++) {
		const struct mb_tower_spec *t = &s->tower[k];
		const char *tn = sid_tower_name((enum sid_tower_kind)k);
		int in = t->D;
		if (!t->present)
			continue;
		for (int i = 0; i <= t->n_hidden && !rc; i++) {
			int outw = i < t->n_hidden ? t->hidden[i] : t->E;
			float scale = (float)(1.0 / sqrt(in > 0 ? in : 1));
			snprintf(name, sizeof(name), "%s.encoder.%d.weight", tn, i);
			rc = mb__add_f32(s, w, &rng, name, 2, outw, in, scale, err);
			if (!rc && t->bias) {
				snprintf(name, sizeof(name), "%s.encoder.%d.bias", tn, i);
				rc = mb__add_f32(s, w, &rng, name, 1, outw, 0, scale, err);
			}
			in = outw;
		}
		for (int l = 0; l < t->L && !rc; l++) {
			snprintf(name, sizeof(name), "%s.codebook.%d", tn, l);
			rc = mb__add_f32(s, w, &rng, name, 2, t->K[l], t->E,
					 t->codebook_scale ? t->codebook_scale : 1.0f, err);
		}
	}
	if (!rc && s->extra_tensors) {
		static const int64_t none[1] = {0}, three[2] = {3, 3};
		rc = mb__add_f32(s, w, &rng, "decoder.0.weight", 2, 3, 5, 1.0f, err);
		if (!rc)
			rc = mb__add_zeros(s, w, "optimizer.step", SID_ST_I64, 0, none, err);
		if (!rc)
			rc = mb__add_zeros(s, w, "item_collab.emb", SID_ST_F16, 2, three, err);
	}
	if (!rc && !s->no_semid) {
		char *meta = s->semid_override ? NULL : mb_semid_json(s);
		const char *v = s->semid_override ? s->semid_override : meta;
		rc = v ? sid_st_writer_meta(w, "semid", v, err)
		       : sid_error_set(err, SID_ENOMEM, "model_builder: metadata");
		free(meta);
	}
	if (rc) {
		sid_st_writer_free(w);
		return rc;
	}
	*out = w;
	return 0;
}

/* Build the model of @s into a malloc'ed buffer (caller frees). */
MB_FN int mb_build_buffer(const struct mb_spec *s, uint8_t **buf, size_t *len,
			  struct sid_error *err)
{
	struct sid_st_writer *w;
	int rc = mb_build_writer(s, &w, err);
	*buf = NULL;
	*len = 0;
	if (rc)
		return rc;
	rc = sid_st_writer_serialize(w, buf, len, err);
	sid_st_writer_free(w);
	return rc;
}

/* Build the model of @s and publish it atomically at @path. */
MB_FN int mb_build_file(const struct mb_spec *s, const char *path, struct sid_error *err)
{
	struct sid_st_writer *w;
	int rc = mb_build_writer(s, &w, err);
	if (rc)
		return rc;
	rc = sid_st_writer_publish(w, path, err);
	sid_st_writer_free(w);
	return rc;
}

/*
 * A raw safetensors file: 8-byte little-endian length of @header_json (taken
 * as is, no padding), the header, then @data_len bytes of @data (NULL gives
 * zeros).  Returns a malloc'ed buffer and its length in *len, or NULL.
 */
MB_FN uint8_t *mb_raw_file(const char *header_json, const void *data, size_t data_len, size_t *len)
{
	size_t h = strlen(header_json);
	uint8_t *buf = calloc(1, 8 + h + data_len + 1);
	if (!buf)
		return NULL;
	for (int b = 0; b < 8; b++)
		buf[b] = (uint8_t)((uint64_t)h >> (8 * b));
	memcpy(buf + 8, header_json, h);
	if (data && data_len)
		memcpy(buf + 8 + h, data, data_len);
	*len = 8 + h + data_len;
	return buf;
}

/*
 * Overwrite element @index of F32 tensor @name inside a serialized file
 * @buf with @value.  Returns 0, or -1 when the file does not parse or the
 * tensor/index is not there.
 */
MB_FN int mb_set_f32(uint8_t *buf, size_t len, const char *name, size_t index, float value)
{
	struct sid_st_file f;
	const struct sid_st_tensor *t;
	int rc = -1;

	if (sid_st_parse(buf, len, &f, NULL))
		return -1;
	t = sid_st_find(&f, name);
	if (t && t->dtype == SID_ST_F32 && index < t->nelem) {
		static const char key[] = "\"" SID_ST_DATA_SHA256 "\":\"";
		size_t hlen = (size_t)(f.data - buf) - 8;
		uint8_t *at = memmem(buf + 8, hlen, key, sizeof(key) - 1);
		char hex[65];
		memcpy(buf + ((const uint8_t *)t->data - buf) + index * 4, &value, 4);
		/* keep the file whole: the writer's data checksum follows the edit */
		if (at) {
			sid_sha256_hex(f.data, (size_t)f.data_len, hex);
			memcpy(at + sizeof(key) - 1, hex, 64);
		}
		rc = 0;
	}
	sid_st_file_release(&f);
	return rc;
}

#endif
