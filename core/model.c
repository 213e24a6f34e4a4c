/*
 * model.c - load a semid model file (the safetensors profile documented in
 * proto/model-format.md) into one immutable, reference-counted object whose
 * tensors live in a single 64-byte-aligned block, and describe it as JSON.
 *
 * Loading: read/map the file, sha256 it, parse the container (safetensors.c,
 * which checks the byte layout), then check the profile: the "semid"
 * metadata, tensor names, dtypes, shapes, chaining, caps, and that every used
 * value is finite.  The mapping is released before returning; the model owns
 * copies.  See model.h.
 */
#include "model.h"

#include <errno.h>
#include <float.h>
#include <jansson.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "fsutil.h"
#include "json.h"
#include "safetensors.h"

#define ALIGN 64

static const char *const tower_names[SID_TOWER_COUNT] = {"item", "user"};
static const char *const act_names[] = {"identity", "relu", "silu", "gelu", "tanh"};
static const char *const norm_names[] = {"none", "l2"};

#define N_ACT  (int)(sizeof(act_names) / sizeof(act_names[0]))
#define N_NORM (int)(sizeof(norm_names) / sizeof(norm_names[0]))

const char *sid_tower_name(enum sid_tower_kind kind)
{
	return (unsigned)kind < SID_TOWER_COUNT ? tower_names[kind] : "?";
}

static int name_parse(const char *const *names, int n, const char *s)
{
	if (!s)
		return -1;
	for (int i = 0; i < n; i++)
		if (strcmp(s, names[i]) == 0)
			return i;
	return -1;
}

int sid_tower_parse(const char *name)
{
	return name_parse(tower_names, SID_TOWER_COUNT, name);
}

const char *sid_act_name(enum sid_act act)
{
	return (unsigned)act < (unsigned)N_ACT ? act_names[act] : "?";
}

int sid_act_parse(const char *name)
{
	return name_parse(act_names, N_ACT, name);
}

const char *sid_norm_name(enum sid_norm norm)
{
	return (unsigned)norm < (unsigned)N_NORM ? norm_names[norm] : "?";
}

int sid_norm_parse(const char *name)
{
	return name_parse(norm_names, N_NORM, name);
}

const struct sid_tower *sid_model_tower(const struct sid_model *m, enum sid_tower_kind kind)
{
	if (!m || (unsigned)kind >= SID_TOWER_COUNT || !m->tower[kind].present)
		return NULL;
	return &m->tower[kind];
}

struct sid_model *sid_model_ref(struct sid_model *m)
{
	if (m)
		__atomic_add_fetch(&m->refs, 1, __ATOMIC_RELAXED);
	return m;
}

static void model_free(struct sid_model *m)
{
	free(m->version);
	free(m->semid_meta);
	free(m->path);
	free(m->block);
	free(m);
}

void sid_model_unref(struct sid_model *m)
{
	if (m && __atomic_sub_fetch(&m->refs, 1, __ATOMIC_ACQ_REL) == 0)
		model_free(m);
}

/* ---- the "semid" metadata ---- */

/*
 * The index of string member @field of tower object @tv among @names, or a
 * negative SID_E* code with a message naming towers.<tower>.<field>.
 */
static int tower_choice(const json_t *tv, const char *tname, const char *field,
			const char *const *names, int n, const char *allowed, struct sid_error *err)
{
	const json_t *s = json_object_get(tv, field);
	int v;

	if (!json_is_string(s))
		return sid_error_set(err, SID_EFORMAT, "metadata 'semid': towers.%s.%s %s", tname,
				     field, s ? "is not a string" : "missing");
	v = name_parse(names, n, json_string_value(s));
	if (v < 0)
		return sid_error_set(err, SID_EFORMAT,
				     "metadata 'semid': towers.%s.%s '" SID_NAME_FMT
				     "' unknown (%s)",
				     tname, field, SID_NAME_ARGS(json_string_value(s)), allowed);
	return v;
}

static int parse_semid_meta(const char *text, struct sid_model *m, struct sid_error *err)
{
	json_error_t jerr;
	json_t *root = json_loads(text, JSON_REJECT_DUPLICATES, &jerr);
	json_t *fv, *mv, *towers, *tv;
	const char *tname;
	int rc = 0;

	if (!root)
		return sid_error_set(err, SID_EFORMAT, "metadata 'semid': not JSON: %s (column %d)",
				     jerr.text, jerr.column);
	if (!json_is_object(root)) {
		rc = sid_error_set(err, SID_EFORMAT, "metadata 'semid': not a JSON object");
		goto fail;
	}
	fv = json_object_get(root, "format_version");
	if (!fv) {
		rc = sid_error_set(err, SID_EFORMAT, "metadata 'semid': format_version missing");
		goto fail;
	}
	if (!json_is_integer(fv)) {
		rc = sid_error_set(err, SID_EFORMAT,
				   "metadata 'semid': format_version is not an integer");
		goto fail;
	}
	if (json_integer_value(fv) != SID_FORMAT_VERSION) {
		rc = sid_error_set(err, SID_EFORMAT,
				   "metadata 'semid': format_version %lld is not supported "
				   "(this build reads %d)",
				   (long long)json_integer_value(fv), SID_FORMAT_VERSION);
		goto fail;
	}
	mv = json_object_get(root, "model_version");
	if (!json_is_string(mv) || !json_string_length(mv)) {
		rc = sid_error_set(err, SID_EFORMAT, "metadata 'semid': model_version %s",
				   !mv			 ? "missing"
				   : !json_is_string(mv) ? "is not a string"
							 : "is empty");
		goto fail;
	}
	/* what the registry stores with every ID, and logs and TSV carry
	 * (jansson itself refuses a NUL in it) */
	if ((rc = sid_model_version_check(json_string_value(mv), err))) {
		sid_error_prefix(err, "metadata 'semid'");
		if (err)
			err->code = SID_EFORMAT;
		rc = SID_EFORMAT;
		goto fail;
	}
	towers = json_object_get(root, "towers");
	if (!json_is_object(towers)) {
		rc = sid_error_set(err, SID_EFORMAT, "metadata 'semid': towers %s",
				   towers ? "is not an object" : "missing");
		goto fail;
	}
	if (json_object_size(towers) == 0) {
		rc = sid_error_set(err, SID_EFORMAT, "metadata 'semid': towers is empty");
		goto fail;
	}
	json_object_foreach(towers, tname, tv)
	{
		int k = sid_tower_parse(tname), v;
		if (k < 0) {
			rc = sid_error_set(err, SID_EFORMAT,
					   "metadata 'semid': unknown tower '" SID_NAME_FMT
					   "' (towers are 'item' and 'user')",
					   SID_NAME_ARGS(tname));
			goto fail;
		}
		if (!json_is_object(tv)) {
			rc = sid_error_set(err, SID_EFORMAT,
					   "metadata 'semid': towers.%s is not an object", tname);
			goto fail;
		}
		v = tower_choice(tv, tname, "activation", act_names, N_ACT,
				 "relu, silu, gelu, tanh, identity", err);
		if (v < 0) {
			rc = v;
			goto fail;
		}
		m->tower[k].act = (enum sid_act)v;
		v = tower_choice(tv, tname, "input_norm", norm_names, N_NORM, "none, l2", err);
		if (v < 0) {
			rc = v;
			goto fail;
		}
		m->tower[k].input_norm = (enum sid_norm)v;
		m->tower[k].present = 1;
	}
	m->version = strdup(json_string_value(mv));
	if (!m->version)
		rc = sid_error_set(err, SID_ENOMEM, "out of memory");
fail:
	json_decref(root);
	return rc;
}

/* ---- tensor names ---- */

/* The tensors of one tower, by slot, found in one pass over the file. */
struct gather {
	const struct sid_st_tensor *w[SID_MAX_LAYERS], *b[SID_MAX_LAYERS];
	const struct sid_st_tensor *cb[SID_MAX_LEVELS];
	int any; /* some tensor named "{tower}.encoder.*" or "{tower}.codebook.*" */
};

/*
 * Parse a decimal index without sign or leading zeros at *p; -1 when not
 * one, -2 when it is not below @cap.  Advances *p past the digits.
 */
static long parse_index(const char **p, long cap)
{
	const char *s = *p;
	long v = 0;

	if (*s < '0' || *s > '9' || (s[0] == '0' && s[1] >= '0' && s[1] <= '9'))
		return -1;
	while (*s >= '0' && *s <= '9') {
		if (v < 100000000)
			v = v * 10 + (*s - '0');
		s++;
	}
	*p = s;
	return v < cap ? v : -2;
}

/* Sort @t into @g when its name is one of the profile's; errors for bad names. */
static int classify(const struct sid_model *m, const struct sid_st_tensor *t,
		    struct gather g[SID_TOWER_COUNT], struct sid_error *err)
{
	const char *name = t->name, *dot = strchr(name, '.'), *p;
	int k, encoder;
	long i;

	if (!dot)
		return 0;
	for (k = 0; k < SID_TOWER_COUNT; k++)
		if ((size_t)(dot - name) == strlen(tower_names[k]) &&
		    strncmp(name, tower_names[k], (size_t)(dot - name)) == 0)
			break;
	if (k == SID_TOWER_COUNT)
		return 0;
	p = dot + 1;
	if (strncmp(p, "encoder.", 8) == 0) {
		encoder = 1;
		p += 8;
	} else if (strncmp(p, "codebook.", 9) == 0) {
		encoder = 0;
		p += 9;
	} else {
		return 0; /* e.g. item.decoder.*: not ours */
	}
	if (!m->tower[k].present)
		return sid_error_set(err, SID_EFORMAT,
				     "tensor '" SID_NAME_FMT
				     "': tower '%s' is not declared in the semid metadata",
				     SID_NAME_ARGS(name), tower_names[k]);
	g[k].any = 1;
	if (encoder) {
		i = parse_index(&p, SID_MAX_LAYERS);
		if (i == -2)
			return sid_error_set(err, SID_EFORMAT,
					     "tensor '" SID_NAME_FMT
					     "': layer index exceeds the cap of %d layers",
					     SID_NAME_ARGS(name), SID_MAX_LAYERS);
		if (i >= 0 && strcmp(p, ".weight") == 0) {
			g[k].w[i] = t;
			return 0;
		}
		if (i >= 0 && strcmp(p, ".bias") == 0) {
			g[k].b[i] = t;
			return 0;
		}
		return sid_error_set(err, SID_EFORMAT,
				     "tensor '" SID_NAME_FMT
				     "': unexpected name under '%s.encoder.' (expected "
				     "%s.encoder.<i>.weight or .bias)",
				     SID_NAME_ARGS(name), tower_names[k], tower_names[k]);
	}
	i = parse_index(&p, SID_MAX_LEVELS);
	if (i == -2)
		return sid_error_set(err, SID_EFORMAT,
				     "tensor '" SID_NAME_FMT
				     "': level index exceeds the cap of %d levels",
				     SID_NAME_ARGS(name), SID_MAX_LEVELS);
	if (i < 0 || *p)
		return sid_error_set(err, SID_EFORMAT,
				     "tensor '" SID_NAME_FMT
				     "': unexpected name under '%s.codebook.' (expected "
				     "%s.codebook.<l>)",
				     SID_NAME_ARGS(name), tower_names[k], tower_names[k]);
	g[k].cb[i] = t;
	return 0;
}

/* F32 with @ndim dims, each in [1, cap[d]]. */
static int check_f32(const struct sid_st_tensor *t, int ndim, const long *cap, const char *what,
		     struct sid_error *err)
{
	if (t->dtype != SID_ST_F32)
		return sid_error_set(err, SID_EFORMAT, "tensor '%s': dtype %s, expected F32",
				     t->name, sid_st_dtype_name(t->dtype));
	if (t->ndim != ndim)
		return sid_error_set(err, SID_EFORMAT, "tensor '%s': %d dimensions, expected %d %s",
				     t->name, t->ndim, ndim, what);
	for (int d = 0; d < ndim; d++) {
		if (t->shape[d] < 1)
			return sid_error_set(err, SID_EFORMAT, "tensor '%s': shape[%d] is %lld",
					     t->name, d, (long long)t->shape[d]);
		if (t->shape[d] > cap[d])
			return sid_error_set(err, SID_EFORMAT,
					     "tensor '%s': shape[%d] = %lld exceeds the cap of %ld",
					     t->name, d, (long long)t->shape[d], cap[d]);
	}
	return 0;
}

/* Check the tensors of tower @k against the profile and fill its shape fields. */
static int check_tower(struct sid_tower *tw, int k, const struct gather *g, struct sid_error *err)
{
	const char *tn = tower_names[k];
	static const long wcap[2] = {SID_MAX_DIM, SID_MAX_DIM};
	static const long cbcap[2] = {SID_MAX_CODEBOOK, SID_MAX_DIM};
	int n = 0, L = 0, rc;

	if (!g->any)
		return sid_error_set(
		    err, SID_EFORMAT,
		    "tower '%s' is declared in the semid metadata but the file has "
		    "no '%s.encoder.*' or '%s.codebook.*' tensors",
		    tn, tn, tn);
	while (n < SID_MAX_LAYERS && g->w[n])
		n++;
	for (int i = n; i < SID_MAX_LAYERS; i++) {
		const struct sid_st_tensor *t = g->w[i] ? g->w[i] : g->b[i];
		if (t)
			return sid_error_set(
			    err, SID_EFORMAT,
			    "tensor '%s': layer %d present but '%s.encoder.%d.weight' "
			    "is missing",
			    t->name, i, tn, n);
	}
	if (n == 0)
		return sid_error_set(
		    err, SID_EFORMAT,
		    "tower '%s': no encoder layers ('%s.encoder.0.weight' missing)", tn, tn);
	while (L < SID_MAX_LEVELS && g->cb[L])
		L++;
	for (int l = L; l < SID_MAX_LEVELS; l++)
		if (g->cb[l])
			return sid_error_set(
			    err, SID_EFORMAT,
			    "tensor '%s': level %d present but '%s.codebook.%d' is "
			    "missing",
			    g->cb[l]->name, l, tn, L);
	if (L == 0)
		return sid_error_set(err, SID_EFORMAT,
				     "tower '%s': no codebooks ('%s.codebook.0' missing)", tn, tn);

	tw->n_layers = n;
	tw->H_max = 0;
	for (int i = 0; i < n; i++) {
		const struct sid_st_tensor *w = g->w[i], *b = g->b[i];
		rc = check_f32(w, 2, wcap, "(out, in)", err);
		if (rc)
			return rc;
		tw->layer[i].out = (int)w->shape[0];
		tw->layer[i].in = (int)w->shape[1];
		if (i > 0 && tw->layer[i].in != tw->layer[i - 1].out)
			return sid_error_set(
			    err, SID_EFORMAT,
			    "tensor '%s': shape (%d, %d) does not chain: input %d, "
			    "but layer %d outputs %d",
			    w->name, tw->layer[i].out, tw->layer[i].in, tw->layer[i].in, i - 1,
			    tw->layer[i - 1].out);
		if (b) {
			rc = check_f32(b, 1, wcap, "(out)", err);
			if (rc)
				return rc;
			if (b->shape[0] != tw->layer[i].out)
				return sid_error_set(
				    err, SID_EFORMAT,
				    "tensor '%s': shape (%lld), expected (%d) to match "
				    "'%s'",
				    b->name, (long long)b->shape[0], tw->layer[i].out, w->name);
		}
		if (tw->layer[i].out > tw->H_max)
			tw->H_max = tw->layer[i].out;
	}
	tw->D = tw->layer[0].in;
	tw->E = tw->layer[n - 1].out;
	tw->L = L;
	for (int l = 0; l < L; l++) {
		const struct sid_st_tensor *c = g->cb[l];
		rc = check_f32(c, 2, cbcap, "(K, E)", err);
		if (rc)
			return rc;
		if (c->shape[1] != tw->E)
			return sid_error_set(
			    err, SID_EFORMAT,
			    "tensor '%s': shape (%lld, %lld), but the latent width "
			    "E (last layer output) is %d",
			    c->name, (long long)c->shape[0], (long long)c->shape[1], tw->E);
		tw->K[l] = (int)c->shape[0];
	}
	return 0;
}

/* Bytes of @nfloat floats rounded up to ALIGN, added to *total; -1 on overflow. */
static int reserve(size_t *total, uint64_t nfloat)
{
	uint64_t bytes;
	if (nfloat > SIZE_MAX / 8)
		return -1;
	bytes = (nfloat * sizeof(float) + ALIGN - 1) & ~(uint64_t)(ALIGN - 1);
	if (bytes > SIZE_MAX - *total)
		return -1;
	*total += (size_t)bytes;
	return 0;
}

/* Copy a checked F32 tensor into @dst (unaligned source), rejecting NaN/Inf. */
static int copy_finite(float *dst, const struct sid_st_tensor *t, struct sid_error *err)
{
	/* callers pass tensors check_tower found present (i < n_layers, l < L) */
	/* NOLINTNEXTLINE(clang-analyzer-core.NullDereference) */
	const uint8_t *src = t->data;
	memcpy(dst, src, (size_t)t->nelem * sizeof(float));
	for (uint64_t i = 0; i < t->nelem; i++)
		if (!isfinite(dst[i]))
			return sid_error_set(err, SID_EFORMAT, "tensor '%s': element %llu is %s",
					     t->name, (unsigned long long)i,
					     isnan(dst[i]) ? "NaN" : "infinite");
	return 0;
}

/* Lay out and fill the aligned block for every present tower. */
static int build_block(struct sid_model *m, const struct gather g[SID_TOWER_COUNT],
		       struct sid_error *err)
{
	size_t total = 0;
	uint8_t *at;
	int rc;

	for (int k = 0; k < SID_TOWER_COUNT; k++) {
		const struct sid_tower *tw = &m->tower[k];
		if (!tw->present)
			continue;
		for (int i = 0; i < tw->n_layers; i++)
			if (reserve(&total, (uint64_t)tw->layer[i].out * tw->layer[i].in) ||
			    reserve(&total, (uint64_t)tw->layer[i].out))
				goto toobig;
		for (int l = 0; l < tw->L; l++)
			if (reserve(&total, (uint64_t)tw->K[l] * tw->E) ||
			    reserve(&total, (uint64_t)tw->K[l]))
				goto toobig;
	}
	if (posix_memalign(&m->block, ALIGN, total ? total : ALIGN) != 0) {
		m->block = NULL;
		return sid_error_set(err, SID_ENOMEM, "out of memory for %zu bytes of tensors",
				     total);
	}
	at = m->block;
	for (int k = 0; k < SID_TOWER_COUNT; k++) {
		struct sid_tower *tw = &m->tower[k];
		if (!tw->present)
			continue;
		for (int i = 0; i < tw->n_layers; i++) {
			struct sid_layer *ly = &tw->layer[i];
			size_t nw = (size_t)ly->out * (size_t)ly->in;
			float *w = (float *)at, *b;
			at += (nw * sizeof(float) + ALIGN - 1) & ~(size_t)(ALIGN - 1);
			b = (float *)at;
			at += ((size_t)ly->out * sizeof(float) + ALIGN - 1) & ~(size_t)(ALIGN - 1);
			rc = copy_finite(w, g[k].w[i], err);
			if (rc)
				return rc;
			if (g[k].b[i]) {
				rc = copy_finite(b, g[k].b[i], err);
				if (rc)
					return rc;
			} else {
				memset(b, 0, (size_t)ly->out * sizeof(float));
			}
			ly->w = w;
			ly->b = b;
		}
		for (int l = 0; l < tw->L; l++) {
			size_t nc = (size_t)tw->K[l] * (size_t)tw->E;
			float *c = (float *)at, *cn;
			at += (nc * sizeof(float) + ALIGN - 1) & ~(size_t)(ALIGN - 1);
			cn = (float *)at;
			at += ((size_t)tw->K[l] * sizeof(float) + ALIGN - 1) & ~(size_t)(ALIGN - 1);
			rc = copy_finite(c, g[k].cb[l], err);
			if (rc)
				return rc;
			/* ||C_l[k]||^2: summed in double, then rounded once to float. */
			for (int j = 0; j < tw->K[l]; j++) {
				const float *row = c + (size_t)j * tw->E;
				double s = 0;
				for (int e = 0; e < tw->E; e++)
					s += (double)row[e] * row[e];
				cn[j] = (float)s;
				/* inf would make every distance to it inf: the search could
				 * then never pick anything but code 0.  And above FLT_MAX/4
				 * the search's cn - 2<r, c> overflows for inputs near the
				 * codeword itself (2<r, c> = 2|c|^2), where a CPU without
				 * FMA then refused what one with it answered. */
				if (!(s <= FLT_MAX / 4))
					return sid_error_set(
					    err, SID_EFORMAT,
					    "tensor '%s': row %d's squared norm %.3g is beyond "
					    "what distances to it can be computed with in float32 "
					    "(at most %.3g)",
					    g[k].cb[l]->name, j, s, (double)(FLT_MAX / 4));
			}
			tw->codebook[l] = c;
			tw->cnorm[l] = cn;
		}
	}
	return 0;
toobig: /* no file holds it: malformed, not a memory shortage to retry */
	return sid_error_set(err, SID_EFORMAT, "tensor storage size overflows");
}

/* A header longer than a semid model's can be (SID_MODEL_HEADER_MAX) is
 * refused before it is parsed. */
static int header_len_check(uint64_t hlen, struct sid_error *err)
{
	if (hlen <= SID_MODEL_HEADER_MAX)
		return 0;
	return sid_error_set(err, SID_EFORMAT,
			     "header of %llu bytes; a semid model's is at most %llu (semid writes "
			     "a few KiB): not a semid model file",
			     (unsigned long long)hlen, (unsigned long long)SID_MODEL_HEADER_MAX);
}

static int model_build(const void *buf, size_t len, const char *path, struct sid_model **out,
		       struct sid_error *err)
{
	struct sid_model *m;
	struct sid_st_file f;
	struct gather g[SID_TOWER_COUNT];
	struct timespec ts;
	const char *meta;
	int rc;

	*out = NULL;
	memset(&f, 0, sizeof(f));
	if (len >= 8 && (rc = header_len_check(sid_st_header_len(buf), err)))
		return rc;
	m = calloc(1, sizeof(*m));
	if (!m)
		return sid_error_set(err, SID_ENOMEM, "out of memory");
	m->refs = 1;
	m->file_size = len;
	sid_sha256_hex(buf, len, m->sha256);
	clock_gettime(CLOCK_REALTIME, &ts);
	m->loaded_at = (double)ts.tv_sec + ts.tv_nsec * 1e-9;
	if (path && !(m->path = strdup(path))) {
		rc = sid_error_set(err, SID_ENOMEM, "out of memory");
		goto fail;
	}

	rc = sid_st_parse(buf, len, &f, err);
	if (rc)
		goto fail;
	meta = sid_st_meta_get(&f, "semid");
	if (!meta) {
		rc = sid_error_set(err, SID_EFORMAT,
				   "__metadata__ has no 'semid' entry (not a semid model file)");
		goto fail;
	}
	rc = parse_semid_meta(meta, m, err);
	if (rc)
		goto fail;
	m->semid_meta = strdup(meta);
	if (!m->semid_meta) {
		rc = sid_error_set(err, SID_ENOMEM, "out of memory");
		goto fail;
	}
	memset(g, 0, sizeof(g));
	for (size_t i = 0; i < f.n_tensors; i++) {
		rc = classify(m, &f.tensors[i], g, err);
		if (rc)
			goto fail;
	}
	for (int k = 0; k < SID_TOWER_COUNT; k++) {
		if (!m->tower[k].present)
			continue;
		rc = check_tower(&m->tower[k], k, &g[k], err);
		if (rc)
			goto fail;
	}
	rc = build_block(m, g, err);
	if (rc)
		goto fail;
	sid_st_file_release(&f);
	*out = m;
	return 0;

fail:
	sid_st_file_release(&f);
	model_free(m);
	return rc;
}

int sid_model_load_buffer(const void *buf, size_t len, struct sid_model **out,
			  struct sid_error *err)
{
	if (!out)
		return sid_error_set(err, SID_EINVAL, "model: no output");
	return model_build(buf, len, NULL, out, err);
}

int sid_model_version_check(const char *v, struct sid_error *err)
{
	size_t n = strlen(v);

	if (n > SID_MODEL_VERSION_MAX)
		return sid_error_set(err, SID_EINVAL, "model_version is %zu bytes; at most %d", n,
				     SID_MODEL_VERSION_MAX);
	for (size_t i = 0; i < n; i++)
		if ((unsigned char)v[i] < 0x20 || v[i] == 0x7f)
			return sid_error_set(err, SID_EINVAL,
					     "model_version has a control character (0x%02x) at "
					     "byte offset %zu",
					     (unsigned char)v[i], i);
	/* UTF-8 as JSON takes it (jansson's rules are sid_utf8_len's), without
	 * the string json_string would allocate: export and check call this
	 * for every stored entry */
	for (size_t i = 0, k; i < n; i += k)
		if (!(k = sid_utf8_len((const unsigned char *)v + i, n - i)))
			return sid_error_set(err, SID_EINVAL, "model_version is not valid UTF-8");
	return 0;
}

/*
 * Before a model file is read whole: the header rules sid_st_parse begins
 * with (sid_st_check_head), then the header alone, read here, for the
 * 'semid' entry of its __metadata__, so that a checkpoint (MODEL.ckpt:
 * gigabytes of ID embeddings and Adam moments, beside the model) or any
 * other safetensors file copied over the model is refused from its header.
 * A header that cannot be read or parsed here is left to the full read to
 * name.
 */
static int model_head_check(int fd, const uint8_t *head, size_t n, uint64_t size,
			    struct sid_error *err)
{
	uint64_t hlen;
	size_t got = 0;
	json_t *root, *meta;
	char *hdr;
	int rc = sid_st_check_head(head, n, size, err);

	if (rc)
		return rc;
	hlen = sid_st_header_len(head);
	if ((rc = header_len_check(hlen, err)))
		return rc;
	if (!(hdr = malloc((size_t)hlen)))
		return 0;
	while (got < hlen) {
		ssize_t r = pread(fd, hdr + got, (size_t)hlen - got, (off_t)(8 + got));
		if (r < 0 && errno == EINTR)
			continue;
		if (r <= 0)
			break;
		got += (size_t)r;
	}
	root = got == hlen ? json_loadb(hdr, (size_t)hlen, 0, NULL) : NULL;
	free(hdr);
	meta = json_object_get(root, "__metadata__");
	if (root && (!meta || json_is_object(meta)) && !json_object_get(meta, "semid"))
		rc = sid_error_set(err, SID_EFORMAT,
				   "__metadata__ has no 'semid' entry (not a semid model file%s)",
				   json_object_get(meta, "das_config")
				       ? "; it looks like a semid-train checkpoint, MODEL.ckpt: "
					 "serve the MODEL beside it, which the run publishes as it "
					 "ends, a stopped run once resumed with --resume"
				       : "");
	json_decref(root);
	return rc;
}

int sid_model_load(const char *path, struct sid_model **out, struct sid_error *err)
{
	return sid_model_load_bytes(path, out, NULL, NULL, err);
}

int sid_model_load_bytes(const char *path, struct sid_model **out, uint8_t **bytes, size_t *nbytes,
			 struct sid_error *err)
{
	uint8_t *buf = NULL;
	size_t len = 0;
	int rc;

	if (bytes)
		*bytes = NULL;
	if (!out || (bytes && !nbytes))
		return sid_error_set(err, SID_EINVAL, "model: no output");
	*out = NULL;
	if (!path)
		return sid_error_set(err, SID_EINVAL, "model: no path");
	/*
	 * read(), not mmap(): a file truncated in place by someone else while
	 * we parse it must give a format error, not SIGBUS in a server that is
	 * hot-swapping.  The copy is transient; the tensors are copied into the
	 * model's aligned block anyway.
	 */
	rc = sid_file_read_checked(path, SID_MODEL_FILE_MAX, model_head_check, &buf, &len, err);
	if (!rc)
		rc = model_build(buf, len, path, out, err);
	if (!rc && bytes) {
		*bytes = buf;
		*nbytes = len;
	} else {
		free(buf);
	}
	if (rc && err)
		sid_error_name_file(err, path);
	return rc;
}

/* ---- description ---- */

static json_t *describe_tower(const struct sid_tower *t)
{
	json_t *o = json_object(), *layers = json_array(), *ks = json_array();

	if (!o || !layers || !ks) {
		json_decref(o);
		json_decref(layers);
		json_decref(ks);
		return NULL;
	}
	for (int i = 0; i < t->n_layers; i++)
		json_array_append_new(layers, json_pack("[ii]", t->layer[i].out, t->layer[i].in));
	for (int l = 0; l < t->L; l++)
		json_array_append_new(ks, json_integer(t->K[l]));
	json_object_set_new(o, "input_dim", json_integer(t->D));
	json_object_set_new(o, "latent_dim", json_integer(t->E));
	json_object_set_new(o, "activation", json_string(sid_act_name(t->act)));
	json_object_set_new(o, "input_norm", json_string(sid_norm_name(t->input_norm)));
	json_object_set_new(o, "layers", layers);
	json_object_set_new(o, "levels", json_integer(t->L));
	json_object_set_new(o, "codebook_sizes", ks);
	return o;
}

char *sid_model_describe_json(const struct sid_model *m)
{
	json_t *root, *towers, *meta;
	char *out = NULL;

	if (!m)
		return NULL;
	root = json_object();
	towers = json_object();
	meta = m->semid_meta ? json_loads(m->semid_meta, 0, NULL) : NULL;
	if (!root || !towers)
		goto done;
	json_object_set_new(root, "version", json_string(m->version ? m->version : ""));
	json_object_set_new(root, "path", m->path ? sid_json_path(m->path) : json_null());
	json_object_set_new(root, "sha256", json_string(m->sha256));
	json_object_set_new(root, "file_size", json_integer((json_int_t)m->file_size));
	json_object_set_new(root, "loaded_at", json_real(m->loaded_at));
	for (int k = 0; k < SID_TOWER_COUNT; k++) {
		if (!m->tower[k].present)
			continue;
		json_t *t = describe_tower(&m->tower[k]);
		if (!t)
			goto done;
		json_object_set_new(towers, tower_names[k], t);
	}
	json_object_set_new(root, "towers", towers);
	towers = NULL;
	json_object_set_new(root, "metadata", meta ? meta : json_object());
	meta = NULL;
	out = sid_json_dumps(root); /* reals as typed: 0.1, not 0.10000000000000001 */
done:
	json_decref(meta);
	json_decref(towers);
	json_decref(root);
	return out;
}
