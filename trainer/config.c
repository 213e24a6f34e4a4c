/*
 * config.c - config file and flags (config.h).  The run keys are a small
 * table here; anything else is handed to das_config_set as a string, so a
 * JSON file and the command line go through the same checks.
 */
#include "config.h"

#include <jansson.h>
#include <math.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>

#include "data.h"
#include "json.h"

enum ktype { K_STR, K_INT, K_BOOL, K_SECS };

struct key {
	const char *name;
	enum ktype type;
	size_t off, size;
	const char *help;
};

#define OFF(f) offsetof(struct tr_config, f)
#define SZ(f)  sizeof(((struct tr_config *)0)->f)

static const struct key keys[] = {
    {"items", K_STR, OFF(items), SZ(items), "item content embeddings, float (N_items, D) .npy"},
    {"users", K_STR, OFF(users), SZ(users), "user content embeddings, float (N_users, D) .npy"},
    {"train", K_STR, OFF(train), SZ(train),
     "training interactions, user<TAB>item per line: 0-based rows of --users, --items; no "
     "header; further columns are ignored (a rating or a split label too: filter first)"},
    {"test", K_STR, OFF(test), SZ(test), "warm test interactions, as --train (final evaluation)"},
    {"test_cold", K_STR, OFF(test_cold), SZ(test_cold), "cold-item test interactions, as --train"},
    {"cold_items", K_STR, OFF(cold_items), SZ(cold_items),
     "cold item list, one --items row per line: kept out of training, ranked apart"},
    {"out", K_STR, OFF(out), SZ(out), "model file to publish (checkpoint: OUT.ckpt)"},
    {"model_version", K_STR, OFF(model_version), SZ(model_version),
     "model_version in the metadata [<mode>-<utc>-<seed>-<8 random hex digits>]"},
    {"threads", K_INT, OFF(threads), 0,
     "OpenBLAS threads [the CPUs it may use: affinity, or fewer under a cgroup CPU quota; "
     "the first of OPENBLAS_NUM_THREADS, GOTO_NUM_THREADS, OMP_NUM_THREADS and "
     "OPENBLAS_DEFAULT_NUM_THREADS set to a positive number, as OpenBLAS reads them]"},
    {"eval", K_BOOL, OFF(eval), 0,
     "evaluate at the end when --test or --test-cold is given [true]"},
    {"publish_tables", K_BOOL, OFF(publish_tables), 0,
     "also write the ICDM ID tables (n x 2E each) into the model file (das, two-stage: "
     "rqvae has none) [false]"},
    {"progress", K_BOOL, OFF(progress), 0,
     "progress: a bar on a terminal, else a line every progress_every seconds (false: neither) "
     "[true]"},
    {"progress_every", K_SECS, OFF(progress_every), 0,
     "without a terminal, a progress line every S seconds of an epoch [30]; 0 = every batch"},
    {"stop_after", K_INT, OFF(stop_after), 0,
     "stop after N >= 1 epochs in all (checkpoint written, no publish; resume later); N at or "
     "past epochs: the run ends and publishes as without it"},
    {"max_steps", K_INT, OFF(max_steps), 0,
     "benchmark: time N >= 1 steps of one epoch, then exit writing nothing"},
};
#define N_KEYS (sizeof(keys) / sizeof(keys[0]))

/* The model keys of das.h, for the help text only (das_config_set decides). */
static const char *das_help[][2] = {
    {"mode", "das | rqvae | two-stage"},
    {"seed", "random seed"},
    {"levels", "codebook levels L (alias L)"},
    {"codebook_size", "codewords per level K (alias K)"},
    {"latent_dim", "latent width E (= each collaborative half; alias E)"},
    {"hidden", "encoder hidden widths, e.g. 256,128 (decoder mirrors)"},
    {"activation", "relu | silu | gelu | tanh | identity"},
    {"input_norm", "none | l2"},
    {"epochs", "epochs (two-stage: of the joint phase)"},
    {"icdm_epochs", "two-stage: epochs of ICDM alone"},
    {"batch_size", "interactions per batch"},
    {"lr", "peak learning rate"},
    {"lr_min_ratio", "cosine floor as a fraction of lr"},
    {"lr_icdm_mult", "learning-rate multiple for the ICDM tables and heads (lr x it < 10)"},
    {"warmup_steps", "linear warm-up steps"},
    {"weight_decay", "AdamW decoupled weight decay (lr x it < 1; das, two-stage: lr x "
		     "lr_icdm_mult x it < 1 too)"},
    {"adam_b1 / adam_b2 / adam_eps", "Adam moments"},
    {"clip_norm", "global gradient-norm clip, <= 0 off"},
    {"beta", "commitment weight"},
    {"alpha", "ICDM weight"},
    {"beta_align", "alignment weight"},
    {"tau", "InfoNCE temperature"},
    {"w_click / w_bias / w_orth", "weights inside ICDM"},
    {"view1 .. view6", "alignment view weights, 0 = off"},
    {"views", "all six view weights at once, e.g. 1,1,1,1,0.25,0.25"},
    {"pop_correction", "log-popularity correction of click logits (0/1)"},
    {"mask_duplicates", "mask in-batch negatives sharing user/item (0/1)"},
    {"init_std_table", "ICDM table init std"},
    {"table_update", "auto | dense | lazy"},
    {"kmeans_iters", "Lloyd iterations for codebook init"},
    {"kmeans_sample", "rows per tower for codebook init"},
    {"dead_steps", "steps unused before a code is re-seeded, 0 = never"},
    {"D_user / D_item",
     "checked: the columns of --users / --items (a model's config names them) [the data's]"},
};

void tr_config_defaults(struct tr_config *c)
{
	memset(c, 0, sizeof(*c));
	c->eval = 1;
	c->progress = 1;
	c->progress_every = 30;
	das_config_defaults(&c->das);
}

/* The run key @name, spelt with '_' or, as its flag, '-': das_config_set
 * takes both for the model keys, and a config file holding "stop-after"
 * was refused as 'config key "stop_after": unknown'. */
static const struct key *key_find(const char *name)
{
	for (size_t i = 0; i < N_KEYS; i++) {
		const char *a = name, *b = keys[i].name;
		while (*a && (*a == '-' ? '_' : *a) == *b)
			a++, b++;
		if (!*a && !*b)
			return &keys[i];
	}
	return NULL;
}

/* @name with '-' written '_' (as das_config_set spells keys), into @buf. */
static const char *underscored(const char *name, char *buf, size_t len)
{
	size_t i = 0;
	for (; name[i] && i + 1 < len; i++)
		buf[i] = name[i] == '-' ? '_' : name[i];
	buf[i] = 0;
	return buf;
}

/* For a name that is no key: " (did you mean ...?)" naming the one key
 * near it (err.h's sid_nearest_hint), or ""; as a flag (@as_flag) the
 * --no- switches and the flags main.c takes itself are candidates too. */
static const char *key_hint(const char *name, int as_flag, char *buf, size_t len)
{
	static const char *const cmdline[] = {"config", "resume", "help"};
	char no[N_KEYS][32];
	struct sid_nearest near;

	sid_nearest_init(&near, name, strlen(name));
	for (size_t i = 0; i < N_KEYS; i++) {
		sid_nearest_add(&near, keys[i].name);
		if (as_flag && keys[i].type == K_BOOL) {
			snprintf(no[i], sizeof(no[i]), "no_%s", keys[i].name);
			sid_nearest_add(&near, no[i]);
		}
	}
	das_config_names(&near);
	for (size_t i = 0; as_flag && i < sizeof(cmdline) / sizeof(cmdline[0]); i++)
		sid_nearest_add(&near, cmdline[i]);
	return sid_nearest_hint(&near, as_flag, buf, len);
}

/* Set a run key from a string. */
static int key_set(struct tr_config *c, const struct key *k, const char *value, const char *what,
		   struct sid_error *err)
{
	void *dst = (char *)c + k->off;
	char *end;
	long v;

	switch (k->type) {
	case K_STR:
		/* "" is what leaving it out gives: `--test "$TEST"` with TEST
		 * unset trained and published without evaluating, exit 0
		 * (--cold-items "" dropped the cold split), where eval refuses
		 * an empty path */
		if (!value[0])
			return sid_error_set(
			    err, SID_EINVAL, "%s: %s: empty: give %s (or leave it out%s)", what,
			    k->name, strcmp(k->name, "model_version") ? "a file" : "a name",
			    strcmp(k->name, "model_version") ? "" : " for the default");
		if (strlen(value) >= k->size)
			return sid_error_set(err, SID_EINVAL, "%s: %s longer than %zu bytes", what,
					     k->name, k->size - 1);
		/* a model whose model_version breaks the rule is refused where
		 * it is loaded */
		if (!strcmp(k->name, "model_version") && sid_model_version_check(value, err))
			return sid_error_prefix(err, "%s", what);
		strcpy(dst, value);
		return 0;
	case K_INT:
		v = strtol(value, &end, 10);
		if (end == value || *end || v < 0 || v > 1000000)
			return sid_error_set(err, SID_EINVAL,
					     "%s: %s: \"%s\" is not an integer in [0, 1000000]",
					     what, k->name, value);
		/* 0 is what leaving them out gives: a full run, published over
		 * --out, where a stop or a benchmark that writes nothing was
		 * asked for */
		if (v == 0 && !strcmp(k->name, "stop_after"))
			return sid_error_set(err, SID_EINVAL,
					     "%s: %s: 0 would stop before the first epoch, with "
					     "nothing to resume from: give 1 or more (leave it out "
					     "to train every epoch)",
					     what, k->name);
		if (v == 0 && !strcmp(k->name, "max_steps"))
			return sid_error_set(err, SID_EINVAL,
					     "%s: %s: 0 would time no step: give 1 or more (leave "
					     "it out to train and publish)",
					     what, k->name);
		*(int *)dst = (int)v;
		return 0;
	case K_SECS: {
		double d = strtod(value, &end);
		if (end == value || *end || !(d >= 0 && d <= 86400))
			return sid_error_set(
			    err, SID_EINVAL,
			    "%s: %s: \"%s\" is not a number of seconds in [0, 86400]", what,
			    k->name, value);
		*(double *)dst = d;
		return 0;
	}
	case K_BOOL:
		if (!strcmp(value, "true") || !strcmp(value, "1"))
			*(int *)dst = 1;
		else if (!strcmp(value, "false") || !strcmp(value, "0"))
			*(int *)dst = 0;
		else
			return sid_error_set(err, SID_EINVAL, "%s: %s: \"%s\" is not true/false",
					     what, k->name, value);
		return 0;
	}
	return sid_error_set(err, SID_EINVAL, "%s: %s: bad key", what, k->name);
}

/* Any key, from a string. */
static int set_any(struct tr_config *c, const char *name, const char *value, const char *what,
		   struct sid_error *err)
{
	const struct key *k = key_find(name);
	char key[64], hint[96];
	int rc;
	if (k)
		return key_set(c, k, value, what, err);
	/* before das_config_set, whose hint knows its own keys only */
	if (!das_config_known(underscored(name, key, sizeof(key))))
		return sid_error_set(err, SID_EINVAL, "%s: config key \"%s\": unknown%s", what,
				     name, key_hint(name, 0, hint, sizeof(hint)));
	rc = das_config_set(&c->das, name, value, err);
	if (rc < 0)
		sid_error_prefix(err, "%s", what);
	return rc;
}

/* A JSON scalar or list of numbers as the string the setters take. */
static int json_to_string(const json_t *v, char *buf, size_t len)
{
	size_t used = 0;
	switch (json_typeof(v)) {
	case JSON_STRING:
		return snprintf(buf, len, "%s", json_string_value(v)) < (int)len ? 0 : -1;
	case JSON_INTEGER:
		snprintf(buf, len, "%" JSON_INTEGER_FORMAT, json_integer_value(v));
		return 0;
	case JSON_REAL:
		snprintf(buf, len, "%.17g", json_real_value(v));
		return 0;
	case JSON_TRUE:
	case JSON_FALSE:
		/* as words, so only boolean keys take them ("levels": true is an error) */
		snprintf(buf, len, "%s", json_is_true(v) ? "true" : "false");
		return 0;
	case JSON_ARRAY:
		buf[0] = 0;
		for (size_t i = 0; i < json_array_size(v); i++) {
			char one[64];
			const json_t *e = json_array_get(v, i);
			if (!json_is_number(e) || json_to_string(e, one, sizeof(one)) < 0)
				return -1;
			int n = snprintf(buf + used, len - used, "%s%s", i ? "," : "", one);
			if (n < 0 || (size_t)n >= len - used)
				return -1;
			used += (size_t)n;
		}
		return 0;
	default:
		return -1;
	}
}

/* The setting key @name (any spelling) sets, into @buf. */
static const char *setting_of(const char *name, char *buf, size_t len)
{
	return das_config_canonical(underscored(name, buf, len));
}

/* A key of the file naming a setting an earlier key set ("batch-size" after
 * "batch_size", "K" after "codebook_size"): which one won depended on the
 * order of the keys, the ambiguity JSON_REJECT_DUPLICATES refuses for two
 * keys spelt alike.  Its earlier name, or NULL. */
static int is_view_n(const char *s)
{
	return !strncmp(s, "view", 4) && s[4] >= '1' && s[4] <= '6' && !s[5];
}

static const char *same_setting(json_t *root, const char *name)
{
	char a[64], b[64];
	const char *sa = setting_of(name, a, sizeof(a)), *other, *so;
	json_t *v;
	json_object_foreach(root, other, v)
	{
		if (other == name || !strcmp(other, name))
			return NULL; /* only the keys before it */
		so = setting_of(other, b, sizeof(b));
		/* "views" sets all six "viewN" weights */
		if (!strcmp(so, sa) || (!strcmp(so, "views") && is_view_n(sa)) ||
		    (is_view_n(so) && !strcmp(sa, "views")))
			return other;
	}
	return NULL;
}

/*
 * A model's whole "semid" metadata, or `semid inspect`'s output holding it,
 * given for a config: its "config" object is the model's settings, the
 * rest is the run that made it (its paths and --out, its model_version,
 * which a new model must not take) and what it measured (data sizes,
 * losses, evaluation).  Refused, saying which object to give, rather than
 * as its first key unknown; 0 for any other object.
 */
static int model_metadata(json_t *root, const char *what, struct sid_error *err)
{
	json_t *meta = json_object_get(root, "metadata");
	int inspect = json_is_object(meta) && json_is_object(json_object_get(meta, "config"));

	if (!inspect && !json_is_object(json_object_get(root, "config")))
		return 0;
	return sid_error_set(err, SID_EFORMAT,
			     "%s: %s, not a config: give its \"config\" object alone (semid "
			     "inspect MODEL | jq .metadata.config)",
			     what, inspect ? "the output of semid inspect" : "a model's metadata");
}

int tr_config_load_json(struct tr_config *c, const char *json, const char *what,
			struct sid_error *err)
{
	json_error_t je;
	json_t *root = json_loads(json, JSON_REJECT_DUPLICATES, &je), *v;
	const char *name, *prev;
	const struct key *k;
	char value[TR_PATH_MAX];
	int rc = 0;

	if (!root)
		return sid_error_set_at(err, SID_EFORMAT, je.line, "%s:%d: %s%s", what, je.line,
					je.text, sid_json_error_hint(je.text));
	if (!json_is_object(root)) {
		json_decref(root);
		return sid_error_set(err, SID_EFORMAT, "%s: top level must be a JSON object", what);
	}
	if ((rc = model_metadata(root, what, err)) < 0) {
		json_decref(root);
		return rc;
	}
	json_object_foreach(root, name, v)
	{
		if (json_is_string(v) && json_string_length(v) >= sizeof(value)) {
			rc = sid_error_set(err, SID_EFORMAT,
					   "%s: key \"%s\": string longer than %zu bytes", what,
					   name, sizeof(value) - 1);
			break;
		}
		if (json_is_array(v) && strcmp(name, "hidden") && strcmp(name, "views")) {
			/* "levels": [2] used to be taken as 2, "lr": [1, 2] as "1,2" */
			rc = sid_error_set(err, SID_EFORMAT,
					   "%s: key \"%s\": a list is only for hidden and views",
					   what, name);
			break;
		}
		if ((json_is_boolean(v) || json_is_number(v)) && (k = key_find(name)) &&
		    k->type == K_STR) {
			/* {"out": false} published a model named ./false */
			rc = sid_error_set(err, SID_EFORMAT,
					   "%s: key \"%s\": value must be a string, not %s", what,
					   name, json_is_boolean(v) ? "a boolean" : "a number");
			break;
		}
		if (json_to_string(v, value, sizeof(value)) < 0) {
			rc = sid_error_set(err, SID_EFORMAT,
					   "%s: key \"%s\": value must be a string, number, "
					   "boolean or list of numbers",
					   what, name);
			break;
		}
		rc = set_any(c, name, value, what, err);
		if (rc < 0) {
			if (err)
				err->code = SID_EFORMAT;
			rc = SID_EFORMAT;
			break;
		}
		if ((prev = same_setting(root, name))) {
			rc = sid_error_set(
			    err, SID_EFORMAT,
			    "%s: keys \"%s\" and \"%s\" set the same setting; keep one", what, prev,
			    name);
			break;
		}
	}
	json_decref(root);
	return rc;
}

int tr_config_load_file(struct tr_config *c, const char *path, struct sid_error *err)
{
	json_error_t je;
	json_t *root;
	char *text;
	int rc = tr_input_check(path, err);

	if (rc < 0)
		return rc;
	if (c->n_config == TR_CONFIG_FILES_MAX)
		return sid_error_set(err, SID_EINVAL, "--config %s: more than %d config files",
				     path, TR_CONFIG_FILES_MAX);
	root = json_load_file(path, JSON_REJECT_DUPLICATES, &je);
	if (!root && je.line < 1) /* not opened: no line to name */
		return sid_error_set(err, SID_EFORMAT, "--config %s: %s", path, je.text);
	if (!root) /* the slip's hint too: tr_config_load_json never sees the text */
		return sid_error_set_at(err, SID_EFORMAT, je.line, "%s:%d: %s%s", path, je.line,
					je.text, sid_json_error_hint(je.text));
	text = json_dumps(root, JSON_COMPACT | JSON_PRESERVE_ORDER);
	json_decref(root);
	if (!text)
		return sid_error_set(err, SID_ENOMEM, "%s: out of memory", path);
	rc = tr_config_load_json(c, text, path, err);
	free(text);
	/* every file read, not the last only: --out may name none of them */
	if (rc == 0)
		c->config[c->n_config++] = path;
	return rc;
}

int tr_config_flag(struct tr_config *c, const char *name, const char *value, struct sid_error *err)
{
	char key[64], what[80], hint[96];
	const struct key *k;
	int rc;

	if (strlen(name) >= sizeof(key))
		return sid_error_set(err, SID_EINVAL, "unknown option --%.40s...", name);
	underscored(name, key, sizeof(key));
	snprintf(what, sizeof(what), "--%s", name);
	k = key_find(key);
	if (!k && !strncmp(key, "no_", 3) && (k = key_find(key + 3)) && k->type == K_BOOL) {
		*(int *)((char *)c + k->off) = 0;
		return 0;
	}
	if (k && k->type == K_BOOL) {
		if (value && (!strcmp(value, "true") || !strcmp(value, "false") ||
			      !strcmp(value, "1") || !strcmp(value, "0"))) {
			rc = key_set(c, k, value, what, err);
			return rc < 0 ? rc : 1;
		}
		*(int *)((char *)c + k->off) = 1;
		return 0;
	}
	if (!k && !das_config_known(key)) {
		/* no flag near it: where to look, as eval, gen and the server say */
		const char *h = key_hint(name, 1, hint, sizeof(hint));
		return sid_error_set(err, SID_EINVAL, "unknown option %s%s", what,
				     *h ? h : " (try --help)");
	}
	if (!value)
		return sid_error_set(err, SID_EINVAL, "%s needs a value", what);
	rc = set_any(c, key, value, what, err);
	return rc < 0 ? rc : 1;
}

char *tr_config_run_json(const struct tr_config *c)
{
	json_t *o = json_object();
	char *s;
	if (!o)
		return NULL;
	for (size_t i = 0; i < N_KEYS; i++) {
		const void *src = (const char *)c + keys[i].off;
		json_t *v = keys[i].type == K_STR    ? sid_json_path(src)
			    : keys[i].type == K_INT  ? json_integer(*(const int *)src)
			    : keys[i].type == K_SECS ? json_real(*(const double *)src)
						     : json_boolean(*(const int *)src);
		json_object_set_new(o, keys[i].name, v);
	}
	s = json_dumps(o, JSON_COMPACT | JSON_PRESERVE_ORDER);
	json_decref(o);
	return s;
}

static void print_flag(FILE *f, const char *name, const char *help)
{
	char flag[64];
	snprintf(flag, sizeof(flag), "--%s", name);
	for (char *p = flag + 2; *p; p++)
		if (*p == '_')
			*p = '-';
	fprintf(f, "  %-30s %s\n", flag, help);
}

void tr_config_print_help(FILE *f)
{
	struct das_config d;
	char *dj;
	for (size_t i = 0; i < N_KEYS; i++)
		print_flag(f, keys[i].name, keys[i].help);
	for (size_t i = 0; i < sizeof(das_help) / sizeof(das_help[0]); i++)
		print_flag(f, das_help[i][0], das_help[i][1]);
	das_config_defaults(&d);
	dj = das_config_settings_json(&d);
	if (dj)
		fprintf(
		    f,
		    "The defaults below are a --config file as they stand, and so is a model's\n"
		    "config (`semid inspect MODEL | jq .metadata.config`).  The towers' input\n"
		    "widths (D_user, D_item) are the columns of --users and --items: a config\n"
		    "naming other ones is refused.\n"
		    "Model defaults: %s\n",
		    dj);
	free(dj);
}
