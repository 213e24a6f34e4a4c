/*
 * train.c - the training loop (train.h): data -> das model -> epochs ->
 * checkpoints -> evaluation -> atomic publish.  The numbers live in das.c;
 * this file decides what data goes in, in which order, and what gets
 * written out.
 */
#include "train.h"

#include <cblas.h>
#include <errno.h>
#include <jansson.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "blas.h"
#include "das.h"
#include "data.h"
#include "eval.h"
#include "fsutil.h"
#include "lock.h"
#include "overcommit.h"
#include "model.h"
#include "progress.h"
#include "rng.h"
#include "safetensors.h"
#include "stop.h"

#define MAX_CKPT (64ull << 30)

int tr_ckpt_path(const char *out, char *buf, size_t len)
{
	int n = snprintf(buf, len, "%s.ckpt", out);
	return n < 0 || (size_t)n >= len ? -1 : 0;
}

/* Everything one run holds; released in one place. */
struct run {
	const struct tr_config *cfg;
	struct das_config dc;
	struct tr_data data;
	int have_data;
	struct tr_inter test, test_cold;
	float *pop_log, *act_log; /* (N_items), (N_users) */
	struct das_model *model;
	struct tr_batcher bt;
	/* batch content rows */
	float *ux, *ix, *u2x, *i2x; /* (B, D_user), (B, D_item), ... */
	char data_json[256];	    /* data_describe: what the checkpoint says it trained on */
	int epochs_done;
	int total_epochs;
	size_t stopped_at;	/* batches of the epoch run when a signal stopped it */
	const char *stopped_in; /* what a signal stopped before the epochs, or NULL */
	double epoch_seconds;	/* sum over the epochs this process ran */
	int epochs_timed;
	struct das_losses last; /* mean losses of the last epoch */
	/* the checkpoint file as this run last saw it: found at the start
	 * (ckpt_epochs -1 unless resumed from) or written after an epoch */
	int ckpt_have, ckpt_epochs;
	struct stat ckpt_st;
	struct tr_lock lock; /* --out's, held from before the data is read */
};

static void run_release(struct run *r)
{
	das_free(r->model);
	tr_batcher_release(&r->bt);
	if (r->have_data)
		tr_data_release(&r->data);
	tr_inter_release(&r->test);
	tr_inter_release(&r->test_cold);
	free(r->pop_log);
	free(r->act_log);
	free(r->ux);
	free(r->ix);
	free(r->u2x);
	free(r->i2x);
	tr_lock_release(&r->lock); /* last: nothing more is written */
}

/* Gather rows @idx of @e into @dst; entries < 0 become zero rows. */
static int gather(const struct tr_emb *e, const int32_t *idx, size_t n, float *dst,
		  struct sid_error *err)
{
	for (size_t k = 0; k < n; k++) {
		float *row = dst + k * (size_t)e->d;
		if (idx[k] < 0) {
			memset(row, 0, (size_t)e->d * sizeof(float));
			continue;
		}
		int rc = tr_emb_rows(e, (size_t)idx[k], 1, row, err);
		if (rc < 0)
			return rc;
	}
	return 0;
}

/* 0 when the regular file @path (@st) is empty or begins as a safetensors
 * file (a model or a checkpoint) does, or cannot be read to tell; else
 * SID_EFORMAT, @err naming the file and what it looks like instead. */
static int replaceable(const char *path, const struct stat *st, struct sid_error *err)
{
	unsigned char head[SID_FILE_HEAD_BYTES];
	ssize_t got;
	int rc;

	if (st->st_size == 0 || (got = sid_file_head(path, head, sizeof(head))) < 0 ||
	    (rc = sid_st_check_head(head, (size_t)got, (uint64_t)st->st_size, err)) == 0)
		return 0;
	sid_error_name_file(err, path);
	return rc;
}

/* SID_EINVAL when the file @so of @what (--out or a file beside it) is one
 * of the inputs, every --config file included: @how it would be lost. */
static int check_not_input(const struct tr_config *c, const char *what, const struct stat *so,
			   const char *how, struct sid_error *err)
{
	const char *in[] = {c->items, c->users, c->train, c->test, c->test_cold, c->cold_items};
	const char *flag[] = {"items", "users", "train", "test", "test-cold", "cold-items"};

	for (size_t i = 0; i < sizeof(in) / sizeof(in[0]); i++)
		if (in[i][0] && sid_same_file(in[i], so))
			return sid_error_set(err, SID_EINVAL,
					     "--out %s: %s is the --%s input %s; %s", c->out, what,
					     flag[i], in[i], how);
	for (int i = 0; i < c->n_config; i++)
		if (sid_same_file(c->config[i], so))
			return sid_error_set(err, SID_EINVAL,
					     "--out %s: %s is the --config input %s; %s", c->out,
					     what, c->config[i], how);
	return 0;
}

/*
 * Refuse, before any work, outputs that could only fail after training or
 * that would overwrite an input: --out in a missing directory or in one
 * this process cannot write (a read-only file system), a name (the model's
 * or its checkpoint's or lock file's, 5 bytes longer) the directory cannot
 * hold, --out or its checkpoint an existing non-regular file (a directory)
 * or a symbolic link, or any of the three the same file as an input
 * (publishing over items.npy destroys it), or a file of another kind than
 * a model or checkpoint (a typo's notes.txt or eval.json was replaced
 * without a word).  The lock file's other checks are tr_lock_take's.
 */
static int check_outputs(const struct tr_config *c, const char *ckpt, const char *lock,
			 struct sid_error *err)
{
	const char *outs[2] = {c->out, ckpt}, *cbase;
	char dir[TR_PATH_MAX];
	struct sid_error why;
	struct stat so;
	long name_max;
	int rc;

	if ((rc = tr_out_dir_check(c->out, dir, sizeof(dir), err)) < 0)
		return rc;
	/* the model's own name is checked there; its checkpoint's is 5 bytes longer */
	cbase = strrchr(ckpt, '/') ? strrchr(ckpt, '/') + 1 : ckpt;
	name_max = pathconf(dir, _PC_NAME_MAX);
	if (name_max > 0 && (long)strlen(cbase) > name_max)
		return sid_error_set(err, SID_EINVAL,
				     "--out %s: its checkpoint's file name is %zu bytes, longer "
				     "than the %ld this directory takes",
				     c->out, strlen(cbase), name_max);
	for (int k = 0; k < 2; k++) {
		if (lstat(outs[k], &so) < 0)
			continue;
		/* published by a rename: over a link, it would replace the link
		 * and leave the file the link names as it was (profile refuses
		 * it so too) */
		if (S_ISLNK(so.st_mode))
			return sid_error_set(err, SID_EINVAL,
					     "--out %s: %s is a symbolic link: give the file it "
					     "names (publishing would replace the link, not that "
					     "file)",
					     c->out, outs[k]);
		if (!S_ISREG(so.st_mode))
			return sid_error_set(err, SID_EINVAL,
					     "--out %s: %s exists and is not a "
					     "regular file",
					     c->out, outs[k]);
		if ((rc = check_not_input(c, outs[k], &so, "publishing would overwrite it", err)) <
		    0)
			return rc;
		if (replaceable(outs[k], &so, &why) < 0)
			return sid_error_set(err, SID_EINVAL,
					     "--out %s: %s (an existing file, not a safetensors "
					     "one: publishing would replace it; remove it or name "
					     "another file)",
					     c->out, why.msg);
	}
	if (lstat(lock, &so) == 0 &&
	    (rc = check_not_input(c, lock, &so, "the run's lock would overwrite it", err)) < 0)
		return rc;
	return 0;
}

/*
 * The data a checkpoint was trained on, as the JSON its "train_data"
 * metadata holds: the sizes, a fingerprint of every training interaction
 * in file order and of the cold list, and one of the two embedding files'
 * values (their widths are in the model config already), so --resume
 * refuses a checkpoint of other data.
 */
static void data_describe(const struct tr_data *d, char *buf, size_t len)
{
	uint64_t h = 0x7261696e64617461ull, s;
#define MIX(v) (s = h ^ (uint64_t)(v), h = tr_splitmix64(&s))
	MIX(d->items.n);
	MIX(d->users.n);
	MIX(d->train.n);
	for (size_t k = 0; k < d->train.n; k++)
		MIX((uint64_t)(uint32_t)d->train.user[k] << 32 | (uint32_t)d->train.item[k]);
	for (size_t i = 0; d->cold && i < d->items.n; i++)
		if (d->cold[i])
			MIX(i);
#undef MIX
	uint64_t emb = d->items.fingerprint,
		 s2 = emb ^ d->users.fingerprint * 0xbf58476d1ce4e5b9ull;
	emb = tr_splitmix64(&s2);
	snprintf(buf, len,
		 "{\"items\": %zu, \"users\": %zu, \"train\": %zu, \"cold_items\": %zu, "
		 "\"fingerprint\": \"%016llx\", \"embeddings\": \"%016llx\"}",
		 d->items.n, d->users.n, d->train.n, d->n_cold, (unsigned long long)h,
		 (unsigned long long)emb);
}

/* The input widths a config names (a model's config does: its D_user and
 * D_item) against the data's: a config copied from a model trained on
 * other embeddings would build towers of other widths. */
static int check_widths(const struct tr_config *c, const struct tr_data *d, struct sid_error *err)
{
	const struct {
		int want;
		const struct tr_emb *e;
		const char *key, *flag, *tower;
	} w[2] = {{c->das.D_user, &d->users, "D_user", "--users", "user"},
		  {c->das.D_item, &d->items, "D_item", "--items", "item"}};

	for (int k = 0; k < 2; k++)
		if (w[k].want && w[k].want != w[k].e->d)
			return sid_error_set(
			    err, SID_EINVAL,
			    "config key %s is %d, but %s %s has %d %s (the %s tower's input "
			    "width): that config is of a model trained on other embeddings; give "
			    "those, or delete the key",
			    w[k].key, w[k].want, w[k].flag, w[k].e->path, w[k].e->d,
			    sid_plural(w[k].e->d, "column", "columns"), w[k].tower);
	return 0;
}

static int load_inputs(struct run *r, const char *ckpt, const char *lock, struct sid_error *err)
{
	const struct tr_config *c = r->cfg;
	int rc;

	if (!c->items[0] || !c->users[0] || !c->train[0] || !c->out[0])
		return sid_error_set(err, SID_EINVAL,
				     "--items, --users, --train and --out are required");
	rc = check_outputs(c, ckpt, lock, err);
	if (rc < 0)
		return rc;
	/* before the data, which takes minutes at 1M users and items: a second
	 * run with this --out would share its checkpoint and race its publish */
	rc = tr_lock_take_or_say(&r->lock, lock, c->out, "semid-train", "training", err);
	if (rc < 0)
		return rc;
	rc = tr_data_load(&r->data, c->items, c->users, c->train,
			  c->cold_items[0] ? c->cold_items : NULL, err);
	if (rc < 0)
		return rc;
	r->have_data = 1;
	rc = check_widths(c, &r->data, err);
	if (rc < 0)
		return rc;
	data_describe(&r->data, r->data_json, sizeof(r->data_json));
	rc = tr_tests_read(&r->data, c->test[0] ? c->test : NULL,
			   c->test_cold[0] ? c->test_cold : NULL, &r->test, &r->test_cold, err);
	if (rc < 0)
		return rc;
	r->pop_log = malloc(r->data.items.n * sizeof(float));
	r->act_log = malloc(r->data.users.n * sizeof(float));
	if (!r->pop_log || !r->act_log)
		return sid_error_set(err, SID_ENOMEM, "out of memory");
	for (size_t i = 0; i < r->data.items.n; i++)
		r->pop_log[i] = (float)log1p((double)r->data.item_pop[i]);
	for (size_t u = 0; u < r->data.users.n; u++)
		r->act_log[u] = (float)log1p((double)r->data.user_act[u]);
	return 0;
}

/* Without input_norm l2 the content goes into the loss as it is: a value
 * whose square overflows float made the first step fail with "the loss is
 * not finite", naming neither the file nor the row. */
static int check_magnitudes(const struct run *r, struct sid_error *err)
{
	const struct tr_emb *e[2] = {&r->data.items, &r->data.users};
	if (r->dc.input_norm == SID_NORM_L2)
		return 0;
	for (int k = 0; k < 2; k++)
		if (e[k]->max_abs > TR_EMB_MAX_ABS)
			return sid_error_set_at(
			    err, SID_EFORMAT, (long)e[k]->max_row,
			    "%s: row %zu, column %d: %g is too large to train on without "
			    "input_norm l2 (|x| <= %g)",
			    e[k]->path, e[k]->max_row, e[k]->max_col, (double)e[k]->max_abs,
			    (double)TR_EMB_MAX_ABS);
	return 0;
}

/* Two values of a config alike: numbers of which either is a real compare
 * as float32 (the config's floats, which das_config_json wrote with %.9g
 * before it wrote the shortest decimal that reads back: 0.00100000005 and
 * 0.001 are one lr), lists element by element, the rest by json_equal. */
static int value_same(const json_t *a, const json_t *b)
{
	if (json_is_number(a) && json_is_number(b) && (json_is_real(a) || json_is_real(b)))
		return (float)json_number_value(a) == (float)json_number_value(b);
	if (json_is_array(a) && json_is_array(b)) {
		if (json_array_size(a) != json_array_size(b))
			return 0;
		for (size_t i = 0; i < json_array_size(a); i++)
			if (!value_same(json_array_get(a, i), json_array_get(b, i)))
				return 0;
		return 1;
	}
	return json_equal(a, b);
}

/* @v as a message shows it (a config's reals as the float32 they are),
 * into @buf; NULL is "no value".  @flag: as its flag takes it (a list
 * "1,1,0.25", a string bare), else as JSON ("[1, 1, 0.25]", "\"das\""). */
static const char *value_show(const json_t *v, int flag, char *buf, size_t len)
{
	char f[DAS_FLOAT_STR], *s;
	size_t used = 0;

	if (!v)
		snprintf(buf, len, "no value");
	else if (json_is_real(v))
		snprintf(buf, len, "%s", das_float_str((float)json_real_value(v), f));
	else if (json_is_array(v)) {
		used = (size_t)snprintf(buf, len, "%s", flag ? "" : "[");
		for (size_t i = 0; i < json_array_size(v) && used < len; i++) {
			const char *sep = flag ? "," : ", ";
			value_show(json_array_get(v, i), flag, f, sizeof(f));
			used += (size_t)snprintf(buf + used, len - used, "%s%s", i ? sep : "", f);
		}
		if (used < len && !flag)
			snprintf(buf + used, len - used, "]");
	} else if (flag && json_is_string(v)) {
		snprintf(buf, len, "%s", json_string_value(v));
	} else if ((s = json_dumps(v, JSON_ENCODE_ANY | JSON_COMPACT))) {
		snprintf(buf, len, "%s", s);
		free(s);
	} else {
		snprintf(buf, len, "?");
	}
	return buf;
}

/* Compare two JSON configs; name the first key whose value differs, and
 * its value in each (@va in @a, @vb in @b, each @vlen bytes; @fa, when
 * not NULL, @a's as its flag takes it, "" when @a has none).  With
 * @new_ok a key of @b only is no difference (@a, from a checkpoint of an
 * older version, did not record it). */
static int config_diff(const char *a, const char *b, int new_ok, char *key, size_t len, char *va,
		       char *vb, char *fa, size_t vlen)
{
	json_t *ja = json_loads(a, 0, NULL), *jb = json_loads(b, 0, NULL), *v;
	const char *k;
	int diff = 0;
	snprintf(key, len, "(unreadable)");
	snprintf(va, vlen, "?");
	snprintf(vb, vlen, "?");
	if (fa)
		fa[0] = 0;
	if (!ja || !jb) {
		diff = 1;
		goto done;
	}
	json_object_foreach(ja, k, v)
	{
		if (!value_same(v, json_object_get(jb, k))) {
			diff = 1;
			goto found;
		}
	}
	json_object_foreach(jb, k, v)
	{
		if (!new_ok && !json_object_get(ja, k)) {
			diff = 1;
			goto found;
		}
	}
	goto done;
found:
	snprintf(key, len, "%s", k);
	value_show(json_object_get(ja, k), 0, va, vlen);
	value_show(json_object_get(jb, k), 0, vb, vlen);
	if (fa && json_object_get(ja, k))
		value_show(json_object_get(ja, k), 1, fa, vlen);
done:
	json_decref(ja);
	json_decref(jb);
	return diff;
}

static int ckpt_write(struct run *r, const char *path, struct sid_error *err)
{
	struct sid_st_writer *w = sid_st_writer_new();
	int64_t ep = r->epochs_done, shape[1] = {1};
	char *run_json = tr_config_run_json(r->cfg);
	int rc;

	if (!w || !run_json) {
		rc = sid_error_set(err, SID_ENOMEM, "checkpoint: out of memory");
		goto fail;
	}
	rc = das_checkpoint_add(r->model, w, err);
	if (rc == 0)
		rc = sid_st_writer_add(w, "train.epoch", SID_ST_I64, 1, shape, &ep, err);
	if (rc == 0)
		rc = sid_st_writer_meta(w, "train_config", run_json, err);
	if (rc == 0)
		rc = sid_st_writer_meta(w, "train_data", r->data_json, err);
	if (rc < 0) {
		sid_error_prefix(err, "checkpoint %s", path);
		goto fail;
	}
	rc = sid_st_writer_publish(w, path, err);
	if (rc < 0) /* its message names the file */
		sid_error_prefix(err, "checkpoint");
fail:
	free(run_json);
	sid_st_writer_free(w);
	return rc;
}

/* Note the checkpoint file at @path as it is now (or that there is none),
 * holding @epochs of this run (-1: an earlier run's). */
static void ckpt_seen(struct run *r, const char *path, int epochs)
{
	r->ckpt_have = stat(path, &r->ckpt_st) == 0;
	r->ckpt_epochs = epochs;
}

/*
 * A checkpoint could not be written (a full disk, EIO, a directory made
 * read-only): say after @err's message what @path holds now, as the file
 * system has it, for --resume.  A failed publish leaves the file it was to
 * replace as it was; only a failed sync of the directory after the rename
 * leaves the new one.
 */
static void ckpt_write_failed(const struct run *r, const char *path, struct sid_error *err)
{
	struct stat now;

	if (stat(path, &now) != 0)
		sid_error_append(err, "; there is no checkpoint to --resume from");
	else if (!r->ckpt_have || now.st_dev != r->ckpt_st.st_dev ||
		 now.st_ino != r->ckpt_st.st_ino)
		sid_error_append(
		    err,
		    "; %s holds epoch %d/%d all the same (renamed into place, but its "
		    "directory was not synced: a crash may lose it): --resume continues "
		    "from there",
		    path, r->epochs_done, r->total_epochs);
	else if (r->ckpt_epochs >= 0)
		sid_error_append(
		    err, "; %s is as it was, holding epoch %d/%d: --resume continues from there",
		    path, r->ckpt_epochs, r->total_epochs);
	else
		sid_error_append(err,
				 "; %s is as it was, an earlier run's: it holds none of this run's "
				 "epochs",
				 path);
}

/* A checkpoint's first bytes, before it is read whole (up to MAX_CKPT): a
 * file of another kind at MODEL.ckpt is refused from its header. */
static int ckpt_head_check(int fd, const uint8_t *head, size_t n, uint64_t size,
			   struct sid_error *err)
{
	(void)fd;
	return sid_st_check_head(head, n, size, err);
}

static int ckpt_restore(struct run *r, const char *path, struct sid_error *err)
{
	uint8_t *buf = NULL;
	size_t len = 0;
	struct sid_st_file f = {0};
	const struct sid_st_tensor *t;
	const char *saved;
	char *mine = NULL, key[128], was[128], now[128], flag[128];
	int rc;

	rc = sid_file_read_checked(path, MAX_CKPT, ckpt_head_check, &buf, &len, err);
	if (rc == 0)
		rc = sid_st_parse(buf, len, &f, err);
	if (rc < 0)
		goto fail;
	saved = sid_st_meta_get(&f, "das_config");
	mine = das_config_json(das_config_of(r->model));
	if (!saved || !mine) {
		rc = sid_error_set(err, SID_EFORMAT, "metadata das_config missing");
		goto fail;
	}
	if (config_diff(saved, mine, 0, key, sizeof(key), was, now, flag, sizeof(was))) {
		/* the flag that gives the checkpoint's value: a run given no
		 * setting differs too, from the checkpoint of an earlier build
		 * whose default was another (views before 0.25 for 5 and 6) */
		char hint[sizeof(key) + sizeof(flag) + 80] = "";
		if (flag[0] && das_config_known(key) && strcmp(key, "D_user") &&
		    strcmp(key, "D_item")) {
			snprintf(hint, sizeof(hint),
				 " (--%s %s; an earlier build's checkpoint holds "
				 "that build's defaults)",
				 key, flag);
			for (char *p = hint + 3; *p != ' '; p++)
				*p = *p == '_' ? '-' : *p;
		}
		rc = sid_error_set(
		    err, SID_EINVAL,
		    "config key \"%s\" differs from this run's (%s in the checkpoint, "
		    "%s here); resume with the same settings%s",
		    key, was, now, hint);
		goto fail;
	}
	/* absent in checkpoints of older versions: nothing to compare then (nor
	 * the "embeddings" key, when an older one did not record it) */
	saved = sid_st_meta_get(&f, "train_data");
	if (saved &&
	    config_diff(saved, r->data_json, 1, key, sizeof(key), was, now, NULL, sizeof(was))) {
		rc = sid_error_set(err, SID_EINVAL,
				   "made on other data (train_data \"%s\" differs: %s there, "
				   "%s here); resume with the same --items, --users, --train "
				   "and --cold-items, or start again without --resume",
				   key, saved, r->data_json);
		goto fail;
	}
	t = sid_st_find(&f, "train.epoch");
	if (!t || t->dtype != SID_ST_I64 || t->nelem != 1) {
		rc = sid_error_set(err, SID_EFORMAT, "tensor train.epoch missing or not one I64");
		goto fail;
	}
	int64_t ep;
	memcpy(&ep, t->data, sizeof(ep));
	if (ep < 0 || ep > r->total_epochs) {
		rc = sid_error_set(err, SID_EFORMAT, "train.epoch = %lld out of range",
				   (long long)ep);
		goto fail;
	}
	rc = das_checkpoint_restore(r->model, &f, err);
	if (rc < 0)
		goto fail;
	r->epochs_done = (int)ep;
fail:
	if (rc < 0)
		sid_error_name_file(err, path);
	free(mine);
	sid_st_file_release(&f);
	free(buf);
	return rc;
}

/* A deterministic sample of up to @max rows: all of @pool when it fits,
 * else a partial Fisher-Yates of it. */
static int32_t *sample_rows(const int32_t *pool, size_t n, size_t max, uint64_t seed, size_t *out_n)
{
	int32_t *p = malloc((n ? n : 1) * sizeof(int32_t));
	uint64_t s = seed ^ 0xC0DEB00Cull;
	if (!p)
		return NULL;
	memcpy(p, pool, n * sizeof(int32_t));
	if (n > max) {
		for (size_t k = 0; k < max; k++) {
			size_t j = k + (size_t)(tr_splitmix64(&s) % (n - k));
			int32_t t = p[k];
			p[k] = p[j];
			p[j] = t;
		}
		n = max;
	}
	*out_n = n;
	return p;
}

/* k-means initialisation on warm items and all users; a stop asked for
 * during it fails it with r->stopped_in set. */
static int init_codebooks(struct run *r, struct sid_error *err)
{
	size_t ni = 0, nu = 0, n_i, n_u;
	int32_t *pool = malloc((r->data.items.n + r->data.users.n) * sizeof(int32_t));
	int32_t *si = NULL, *su = NULL;
	float *ix = NULL, *ux = NULL;
	size_t max = r->dc.kmeans_sample > 0 ? (size_t)r->dc.kmeans_sample : 1;
	int rc;

	if (!pool)
		return sid_error_set(err, SID_ENOMEM, "codebook init: out of memory");
	for (size_t i = 0; i < r->data.items.n; i++)
		if (r->data.item_pop[i] > 0)
			pool[ni++] = (int32_t)i;
	for (size_t u = 0; u < r->data.users.n; u++)
		pool[ni + nu++] = (int32_t)u;
	si = sample_rows(pool, ni, max, r->dc.seed, &n_i);
	su = sample_rows(pool + ni, nu, max, r->dc.seed + 1, &n_u);
	ix = si ? malloc(n_i * (size_t)r->data.items.d * sizeof(float)) : NULL;
	ux = su ? malloc(n_u * (size_t)r->data.users.d * sizeof(float)) : NULL;
	if (!ix || !ux) {
		rc = sid_error_set(err, SID_ENOMEM, "codebook init: out of memory");
		goto fail;
	}
	rc = gather(&r->data.items, si, n_i, ix, err);
	if (rc == 0)
		rc = gather(&r->data.users, su, n_u, ux, err);
	/* said before: at a large kmeans_sample and codebook_size it runs for
	 * minutes between the "mode" line and the first epoch's */
	if (rc == 0)
		fprintf(stderr,
			"codebook init: k-means++ on %zu user %s and %zu item %s, %d %s of %d "
			"codes\n",
			n_u, sid_plural(n_u, "row", "rows"), n_i, sid_plural(n_i, "row", "rows"),
			r->dc.L, sid_plural(r->dc.L, "level", "levels"), r->dc.K);
	if (rc == 0)
		rc = das_init_codebooks(r->model, ux, (int)n_u, ix, (int)n_i, err);
	/* k-means heeds a stop: at a large kmeans_sample and codebook_size it
	 * runs for minutes, and a SIGTERM waited for all of it */
	if (rc < 0 && tr_stop_signal())
		r->stopped_in = "in the codebooks' k-means initialisation";
fail:
	free(pool);
	free(si);
	free(su);
	free(ix);
	free(ux);
	return rc;
}

static void losses_add(struct das_losses *acc, const struct das_losses *l, int L)
{
	acc->total += l->total;
	acc->recon_user += l->recon_user;
	acc->recon_item += l->recon_item;
	acc->quant_user += l->quant_user;
	acc->quant_item += l->quant_item;
	acc->click += l->click;
	acc->bias_user += l->bias_user;
	acc->bias_item += l->bias_item;
	acc->orth_user += l->orth_user;
	acc->orth_item += l->orth_item;
	acc->icdm += l->icdm;
	for (int v = 0; v < DAS_N_VIEWS; v++)
		acc->view[v] += l->view[v];
	acc->align += l->align;
	acc->grad_norm += l->grad_norm;
	acc->lr = l->lr;
	for (int k = 0; k < L; k++) {
		acc->used_user[k] += l->used_user[k];
		acc->used_item[k] += l->used_item[k];
	}
	acc->resets += l->resets;
}

static void losses_scale(struct das_losses *a, double s, int L)
{
	a->total *= s;
	a->recon_user *= s;
	a->recon_item *= s;
	a->quant_user *= s;
	a->quant_item *= s;
	a->click *= s;
	a->bias_user *= s;
	a->bias_item *= s;
	a->orth_user *= s;
	a->orth_item *= s;
	a->icdm *= s;
	for (int v = 0; v < DAS_N_VIEWS; v++)
		a->view[v] *= s;
	a->align *= s;
	a->grad_norm *= s;
	for (int k = 0; k < L; k++) {
		a->used_user[k] = (int)lround(a->used_user[k] * s);
		a->used_item[k] = (int)lround(a->used_item[k] * s);
	}
}

static json_t *losses_json(const struct das_losses *l)
{
	json_t *v = json_array();
	for (int k = 0; k < DAS_N_VIEWS; k++)
		json_array_append_new(v, json_real(l->view[k]));
	return json_pack("{s:f, s:f, s:f, s:f, s:f, s:f, s:f, s:f, s:f, s:f, s:f, s:o, s:f, s:f}",
			 "total", l->total, "recon_user", l->recon_user, "recon_item",
			 l->recon_item, "quant_user", l->quant_user, "quant_item", l->quant_item,
			 "click", l->click, "bias_user", l->bias_user, "bias_item", l->bias_item,
			 "orth_user", l->orth_user, "orth_item", l->orth_item, "icdm", l->icdm,
			 "views", v, "align", l->align, "grad_norm", l->grad_norm);
}

/* One epoch; 0, 1 when --max-steps ended it early, or a negative code. */
static int run_epoch(struct run *r, int e, int tty, struct sid_error *err)
{
	size_t nb = tr_batcher_count(&r->bt);
	int need_u2 = das_needs_user_partner(r->model), need_i2 = das_needs_item_partner(r->model);
	struct das_losses acc;
	struct tr_progress pg;
	char label[48];
	int L = r->dc.L, phase = das_phase_get(r->model), rc;

	memset(&acc, 0, sizeof(acc));
	tr_progress_start(&pg, r->cfg->progress, tty, r->cfg->progress_every);
	snprintf(label, sizeof(label), "epoch %d/%d", e + 1, r->total_epochs);
	tr_batcher_epoch(&r->bt, e);
	for (size_t b = 0; b < nb; b++) {
		const struct tr_batch *tb = tr_batcher_get(&r->bt, b);
		struct das_batch db = {.B = (int)tb->B, .user = tb->user, .item = tb->item};
		struct das_losses l;
		rc = gather(&r->data.users, tb->user, tb->B, r->ux, err);
		if (rc == 0)
			rc = gather(&r->data.items, tb->item, tb->B, r->ix, err);
		if (rc == 0 && need_u2) {
			rc = gather(&r->data.users, tb->user2, tb->B, r->u2x, err);
			db.user2 = tb->user2;
			db.user2_x = r->u2x;
		}
		if (rc == 0 && need_i2) {
			rc = gather(&r->data.items, tb->item2, tb->B, r->i2x, err);
			db.item2 = tb->item2;
			db.item2_x = r->i2x;
		}
		db.user_x = r->ux;
		db.item_x = r->ix;
		if (rc == 0)
			rc = das_step(r->model, &db, &l, err);
		if (rc < 0) { /* its message starts a line, not the bar's end */
			tr_progress_clear(&pg);
			sid_error_prefix(err, "epoch %d batch %zu", e + 1, b);
			return rc;
		}
		losses_add(&acc, &l, L);
		/* the epoch is not finished: nothing of it is kept (after its last
		 * step it is: it is checkpointed, and the epoch loop stops then) */
		if (tr_stop_signal() && b + 1 < nb) {
			tr_progress_clear(&pg);
			r->stopped_at = b + 1;
			return 2;
		}
		/* a benchmark ends within its one epoch, however many steps it asked */
		if (r->cfg->max_steps > 0 && (b + 1 >= (size_t)r->cfg->max_steps || b + 1 == nb)) {
			double dt = tr_progress_elapsed(&pg);
			tr_progress_clear(&pg);
			fprintf(stderr,
				"benchmark: %zu %s in %.2fs (%.4f s/step, loss %.4f); a full "
				"epoch of %zu %s: about %.1fs\n",
				b + 1, sid_plural(b + 1, "step", "steps"), dt, dt / (double)(b + 1),
				acc.total / (double)(b + 1), nb, sid_plural(nb, "step", "steps"),
				dt / (double)(b + 1) * (double)nb);
			return 1;
		}
		if (b % (nb / 100 + 1) == 0 || b + 1 == nb)
			tr_progress_bar(&pg, label, (double)(b + 1), (double)nb);
		if (b + 1 < nb && tr_progress_line_due(&pg)) {
			/* a log line, for a trainer run by cron or a job */
			double dt = tr_progress_elapsed(&pg);
			fprintf(stderr,
				"epoch %d/%d: batch %zu/%zu (%d%%), loss %.4f, %.1fs, about %.0fs "
				"left in the epoch\n",
				e + 1, r->total_epochs, b + 1, nb, (int)((b + 1) * 100 / nb),
				acc.total / (double)(b + 1), dt,
				dt / (double)(b + 1) * (double)(nb - b - 1));
		}
	}
	losses_scale(&acc, 1.0 / (double)nb, L);
	double dt = tr_progress_elapsed(&pg);
	r->epoch_seconds += dt;
	r->epochs_timed++;
	r->last = acc;
	tr_progress_clear(&pg);
	fprintf(stderr,
		"epoch %d/%d %-5s loss %.4f recon u/i %.4f/%.4f quant u/i %.4f/%.4f icdm %.4f "
		"align %.4f lr %.2e codes/batch l0 u/i %d/%d resets %d %.2fs\n",
		e + 1, r->total_epochs, phase == DAS_PHASE_ICDM ? "icdm" : "joint", acc.total,
		acc.recon_user, acc.recon_item, acc.quant_user, acc.quant_item, acc.icdm, acc.align,
		acc.lr, acc.used_user[0], acc.used_item[0], acc.resets, dt);
	return 0;
}

/* UTC time as "20261128T172600Z" (@compact) or ISO 8601. */
static void utc_now(char *buf, size_t len, int compact)
{
	time_t t = time(NULL);
	struct tm tm;
	gmtime_r(&t, &tm);
	strftime(buf, len, compact ? "%Y%m%dT%H%M%SZ" : "%Y-%m-%dT%H:%M:%SZ", &tm);
}

/* The "semid" metadata JSON; @eval may be NULL. */
static char *semid_meta(struct run *r, const char *version, json_t *eval)
{
	const char *act = sid_act_name(r->dc.act), *norm = sid_norm_name(r->dc.input_norm);
	char *cfg = das_config_json(&r->dc), *run = tr_config_run_json(r->cfg), created[32], *s;
	json_t *o;

	utc_now(created, sizeof(created), 0);
	o = json_pack("{s:i, s:s, s:{s:{s:s, s:s}, s:{s:s, s:s}}, s:s}", "format_version",
		      SID_FORMAT_VERSION, "model_version", version, "towers", "item", "activation",
		      act, "input_norm", norm, "user", "activation", act, "input_norm", norm,
		      "created_at", created);
	if (!o || !cfg || !run) {
		free(cfg);
		free(run);
		json_decref(o);
		return NULL;
	}
	json_object_set_new(o, "config", json_loads(cfg, 0, NULL));
	json_object_set_new(o, "run", json_loads(run, 0, NULL));
	json_object_set_new(
	    o, "data",
	    json_pack("{s:I, s:I, s:i, s:i, s:I, s:I, s:I, s:I, s:I}", "items",
		      (json_int_t)r->data.items.n, "users", (json_int_t)r->data.users.n, "D_item",
		      r->data.items.d, "D_user", r->data.users.d, "train",
		      (json_int_t)r->data.train.n, "warm_items", (json_int_t)r->data.n_warm_items,
		      "cold_items", (json_int_t)r->data.n_cold, "test", (json_int_t)r->test.n,
		      "test_cold", (json_int_t)r->test_cold.n));
	json_object_set_new(o, "epochs_done", json_integer(r->epochs_done));
	json_object_set_new(o, "steps", json_integer(das_step_count(r->model)));
	json_object_set_new(o, "seconds_per_epoch",
			    r->epochs_timed ? json_real(r->epoch_seconds / r->epochs_timed)
					    : json_null());
	json_object_set_new(o, "final_losses",
			    r->epochs_timed ? losses_json(&r->last) : json_null());
	if (eval)
		json_object_set(o, "eval", eval);
	s = json_dumps(o, JSON_COMPACT | JSON_PRESERVE_ORDER | JSON_REAL_PRECISION(8));
	free(cfg);
	free(run);
	json_decref(o);
	return s;
}

/* A writer with the model tensors and the "semid" metadata. */
static int model_writer(struct run *r, const char *version, json_t *eval,
			struct sid_st_writer **out, struct sid_error *err)
{
	struct sid_st_writer *w = sid_st_writer_new();
	char *meta = semid_meta(r, version, eval);
	int rc;
	*out = NULL;
	if (!w || !meta) {
		rc = sid_error_set(err, SID_ENOMEM, "model: out of memory");
		goto fail;
	}
	rc = das_export(r->model, r->cfg->publish_tables, w, err);
	if (rc == 0)
		rc = sid_st_writer_meta(w, "semid", meta, err);
	if (rc < 0)
		goto fail;
	*out = w;
	w = NULL;
fail:
	free(meta);
	sid_st_writer_free(w);
	return rc;
}

/*
 * Asked by the model's publish once the file is written and synced, just
 * before the rename (sid_st_writer_publish_go): go on unless a stop was
 * asked for (a SIGTERM during a large model's write was heeded only after
 * it was published, with exit status 0).  From here a second signal waits
 * for the rename or the abort (tr_stop_release after the publish).
 */
static int publish_go(void *arg)
{
	(void)arg;
	tr__test_hook_sleep("SEMID_TEST_PUBLISH_DELAY_MS");
	tr_stop_hold();
	return !tr_stop_signal();
}

/* Evaluate the current model on the test sets (through a serialised copy, so
 * the figures are those of exactly the file that gets published). */
static int final_eval(struct run *r, const char *version, json_t **out, struct sid_error *err)
{
	struct sid_st_writer *w = NULL;
	struct sid_model *m = NULL;
	struct sid_st_file st = {0};
	uint8_t *buf = NULL;
	size_t len = 0;
	int rc;

	*out = NULL;
	rc = model_writer(r, version, NULL, &w, err);
	if (rc == 0)
		rc = sid_st_writer_serialize(w, &buf, &len, err);
	if (rc == 0)
		rc = sid_model_load_buffer(buf, len, &m, err);
	if (rc == 0)
		rc = sid_st_parse(buf, len, &st, err);
	if (rc < 0) {
		sid_error_prefix(err, "model for evaluation");
		goto fail;
	}
	struct tr_eval_input in = {
	    .model = m,
	    .st = &st,
	    .items = &r->data.items,
	    .users = &r->data.users,
	    .train_by_user = &r->data.by_user,
	    .test = r->test.n ? &r->test : NULL,
	    .test_cold = r->test_cold.n ? &r->test_cold : NULL,
	    .cold = r->data.cold,
	    .progress = {r->cfg->progress, isatty(2), r->cfg->progress_every},
	};
	rc = tr_eval_run(&in, out, err);
fail:
	sid_st_file_release(&st);
	sid_model_unref(m);
	free(buf);
	sid_st_writer_free(w);
	return rc;
}

/* Whether a stop asked for (stop.h) ends the run at a step before the
 * epochs, @what (the step failed because of it, or ended as it came). */
static int stopped_before(struct run *r, const char *what)
{
	if (!tr_stop_signal())
		return 0;
	r->stopped_in = what;
	return 1;
}

int tr_train_run(const struct tr_config *cfg, int resume, struct sid_error *err)
{
	struct run r;
	struct das_data dd;
	struct sid_st_writer *w = NULL;
	json_t *ev = NULL;
	char ckpt[TR_PATH_MAX + 8], lock[TR_PATH_MAX + 8], version[300], threads_note[300];
	const char *threads_from = "the threads setting";
	const char *mode;
	int tty = isatty(2), rc, two = 0, e = 0, trained = 0;
	struct stat sb;
	struct tr_stop_saved saved;

	memset(&r, 0, sizeof(r));
	r.cfg = cfg;
	r.dc = cfg->das;
	tr_stop_install(&saved);
	if (cfg->threads <= 0) /* chosen in main(), before any BLAS work */
		threads_from = sid_blas_default_threads_why();
	/* before the data: under a memory limit, OpenBLAS's buffers first */
	rc = tr_overcommit_ready(cfg->threads, threads_note, sizeof(threads_note), err);
	if (rc < 0)
		goto fail;
	if (tr_ckpt_path(cfg->out, ckpt, sizeof(ckpt)) < 0 ||
	    tr_lock_path(cfg->out, lock, sizeof(lock)) < 0) {
		rc = sid_error_set(err, SID_EINVAL, "--out: path too long");
		goto fail;
	}
	/* the settings before the data, which takes tens of seconds at 1M
	 * rows: only the towers' widths wait for it (0: the data's) */
	r.dc.D_user += !r.dc.D_user;
	r.dc.D_item += !r.dc.D_item;
	rc = das_config_check(&r.dc, err);
	if (rc < 0)
		goto fail;
	/* taken, as keys a mode ignores are (views, alpha under rqvae: every
	 * config holds them), but said: it asks for tensors, which rqvae has
	 * not, and a run whose model lacked them said nothing of it */
	if (cfg->publish_tables && r.dc.mode == DAS_MODE_RQVAE)
		fprintf(stderr, "semid-train: publish_tables true does nothing in mode rqvae, "
				"which trains no ICDM ID tables: the model file holds none (das "
				"and two-stage have them)\n");
	/* Each step below takes seconds at 1M items and users (tens at a
	 * larger D), and a stop heeded only at the first epoch came after all
	 * of them: past a Kubernetes grace period, as a SIGKILL. */
	rc = load_inputs(&r, ckpt, lock, err);
	if ((rc < 0 || tr_stop_signal()) && stopped_before(&r, "while loading the data"))
		goto stopped;
	if (rc < 0)
		goto fail;
	r.dc.D_user = r.data.users.d;
	r.dc.D_item = r.data.items.d;
	rc = das_config_check(&r.dc, err);
	if (rc < 0)
		goto fail;
	rc = check_magnitudes(&r, err);
	if (rc < 0)
		goto fail;
	two = r.dc.mode == DAS_MODE_TWO_STAGE;
	r.total_epochs = r.dc.epochs + (two ? r.dc.icdm_epochs : 0);
	dd.n_users = (int)r.data.users.n;
	dd.n_items = (int)r.data.items.n;
	dd.n_train = (long)r.data.train.n;
	dd.item_pop_log = r.pop_log;
	dd.user_act_log = r.act_log;
	rc = das_new(&r.dc, &dd, &r.model, err);
	if ((rc < 0 || tr_stop_signal()) && stopped_before(&r, "while setting up the model"))
		goto stopped;
	if (rc < 0)
		goto fail;
	rc = tr_batcher_init(&r.bt, &r.data, (size_t)r.dc.batch_size, r.dc.seed, err);
	if (rc < 0) {
		sid_error_name_file(err, cfg->train);
		goto fail;
	}
	size_t B = r.bt.batch_size;
	r.ux = malloc(B * r.data.users.d * sizeof(float));
	r.u2x = malloc(B * r.data.users.d * sizeof(float));
	r.ix = malloc(B * r.data.items.d * sizeof(float));
	r.i2x = malloc(B * r.data.items.d * sizeof(float));
	if (!r.ux || !r.u2x || !r.ix || !r.i2x) {
		rc = sid_error_set(err, SID_ENOMEM, "batch buffers: out of memory");
		goto fail;
	}
	if (resume) {
		if (stat(ckpt, &sb) == 0) {
			rc = ckpt_restore(&r, ckpt, err);
			if ((rc < 0 || tr_stop_signal()) &&
			    stopped_before(&r, "while reading the checkpoint"))
				goto stopped;
			if (rc < 0)
				goto fail;
			fprintf(stderr, "resumed from %s after epoch %d/%d\n", ckpt, r.epochs_done,
				r.total_epochs);
			ckpt_seen(&r, ckpt, r.epochs_done);
		} else {
			fprintf(stderr, "no checkpoint %s: starting from scratch\n", ckpt);
		}
	} else if (stat(ckpt, &sb) == 0) {
		/* not refused (a nightly job reuses its paths), but said: the first
		 * epoch of this run replaces it */
		fprintf(stderr,
			"semid-train: %s exists and is replaced after this run's first epoch "
			"(--resume continues it instead)\n",
			ckpt);
		ckpt_seen(&r, ckpt, -1);
	}
	/* a benchmark writes nothing: without an epoch to time it went on to
	 * evaluate and publish the model (--epochs 0, or --resume of a
	 * checkpoint holding every epoch) */
	if (cfg->max_steps > 0 && r.epochs_done >= r.total_epochs) {
		rc = sid_error_set(
		    err, SID_EINVAL, "--max-steps: no epoch left to time (%s); nothing written",
		    r.total_epochs ? "the checkpoint holds every epoch" : "0 epochs");
		goto fail;
	}
	mode = r.dc.mode == DAS_MODE_DAS     ? "das"
	       : r.dc.mode == DAS_MODE_RQVAE ? "rqvae"
					     : "two-stage";
	if (cfg->model_version[0]) {
		snprintf(version, sizeof(version), "%s", cfg->model_version);
	} else {
		/* a random part: two runs of one mode and seed started in the
		 * same second (a cron overlap, a sweep) named two different
		 * models alike, and the server, its metrics and the ID
		 * registry know a model by this name only */
		char ts[32];
		uint32_t nonce;
		if (getrandom(&nonce, sizeof(nonce), 0) != (ssize_t)sizeof(nonce)) {
			struct timespec now;
			clock_gettime(CLOCK_REALTIME, &now);
			nonce = (uint32_t)now.tv_nsec ^ (uint32_t)getpid() * 2654435761u;
		}
		utc_now(ts, sizeof(ts), 1);
		snprintf(version, sizeof(version), "%s-%s-%llu-%08x", mode, ts,
			 (unsigned long long)r.dc.seed, (unsigned)nonce);
	}
	fprintf(stderr, "semid-train: %d OpenBLAS %s from %s%s%s%s\n", openblas_get_num_threads(),
		sid_plural(openblas_get_num_threads(), "thread", "threads"), threads_from,
		threads_note[0] ? " (" : "", threads_note, threads_note[0] ? ")" : "");
	fprintf(stderr,
		"semid-train: mode %s, %zu %s (D %d), %zu %s (D %d), %zu train clicks, %zu %s of "
		"%zu per epoch, %d %s\n",
		mode, r.data.items.n, sid_plural(r.data.items.n, "item", "items"), r.data.items.d,
		r.data.users.n, sid_plural(r.data.users.n, "user", "users"), r.data.users.d,
		r.data.train.n, tr_batcher_count(&r.bt),
		sid_plural(tr_batcher_count(&r.bt), "batch", "batches"), B, r.total_epochs,
		sid_plural(r.total_epochs, "epoch", "epochs"));
	for (e = r.epochs_done; e < r.total_epochs; e++) {
		int joint = !two || e >= r.dc.icdm_epochs;
		if (tr_stop_signal())
			goto stopped;
		/* before an epoch, so that a resumed run already there trains none */
		if (cfg->stop_after > 0 && r.epochs_done >= cfg->stop_after) {
			fprintf(stderr,
				"stopped after epoch %d (--stop-after); continue with --resume\n",
				r.epochs_done);
			rc = 0;
			goto fail; /* a clean stop, nothing published */
		}
		if (joint && das_phase_get(r.model) != DAS_PHASE_JOINT) {
			rc = das_phase_set(r.model, DAS_PHASE_JOINT, err);
			if (rc < 0)
				goto fail;
		}
		if (joint && !das_codebooks_ready(r.model)) {
			rc = init_codebooks(&r, err);
			if (r.stopped_in)
				goto stopped;
			if (rc < 0)
				goto fail;
		}
		rc = run_epoch(&r, e, tty, err);
		if (rc < 0)
			goto fail;
		if (rc == 2)
			goto stopped;
		if (rc == 1) { /* --max-steps: timed, nothing to write */
			rc = 0;
			goto fail;
		}
		r.epochs_done = e + 1;
		rc = ckpt_write(&r, ckpt, err);
		if (rc < 0) {
			ckpt_write_failed(&r, ckpt, err);
			goto fail;
		}
		ckpt_seen(&r, ckpt, r.epochs_done);
	}
	trained = r.epochs_done > 0; /* and the checkpoint holds them all */
	if (tr_stop_signal())	     /* the last checkpoint is written: stop before the rest */
		goto stopped;
	if (!das_codebooks_ready(r.model)) { /* zero epochs: still a usable file */
		rc = init_codebooks(&r, err);
		if (r.stopped_in)
			goto stopped;
		if (rc < 0)
			goto fail;
	}
	if (cfg->eval && (r.test.n || r.test_cold.n)) {
		/* it says what it does, from its first line to its last */
		rc = final_eval(&r, version, &ev, err);
		if (rc < 0 && tr_stop_signal()) /* it stopped at its next block */
			goto stopped;
		if (rc < 0)
			goto fail;
	}
	if (tr_stop_signal())
		goto stopped;
	rc = model_writer(&r, version, ev, &w, err);
	if (rc < 0) {
		sid_error_prefix(err, "%s", cfg->out);
		goto fail;
	}
	rc = sid_st_writer_publish_go(w, cfg->out, publish_go, NULL, err); /* errors name it */
	tr_stop_release();
	if (rc == 1) { /* the checkpoint holds every epoch: --resume publishes it */
		r.stopped_in = "while writing the model";
		goto stopped;
	}
	if (rc < 0)
		goto fail;
	fprintf(stderr, "published %s (model_version %s)\n", cfg->out, version);
	if (ev) {
		char *s = json_dumps(ev, JSON_INDENT(2) | JSON_REAL_PRECISION(6));
		if (s)
			printf("%s\n", s);
		free(s);
	}
	goto fail;
stopped:
	rc = tr_stop_signal();
	fprintf(stderr, "semid-train: stopped by %s", tr_stop_name(rc));
	if (r.stopped_in)
		fprintf(stderr, " %s", r.stopped_in);
	if (r.stopped_at)
		fprintf(stderr, " in epoch %d/%d (batch %zu/%zu, not kept)", e + 1, r.total_epochs,
			r.stopped_at, tr_batcher_count(&r.bt));
	if (r.epochs_done)
		fprintf(stderr,
			"; nothing published; %s holds epoch %d/%d: continue with --resume\n", ckpt,
			r.epochs_done, r.total_epochs);
	else if (stat(ckpt, &sb) == 0) /* read or not, this run wrote none */
		fprintf(stderr, "; nothing published; %s is as it was\n", ckpt);
	else
		fprintf(stderr, "; nothing published, and no epoch finished to checkpoint\n");
fail:
	/* the model could not be evaluated or published (a full disk, memory):
	 * the training is not lost, and the message said nothing of it */
	if (rc < 0 && trained)
		sid_error_append(err,
				 "; nothing published; %s holds every epoch (%d/%d): --resume "
				 "publishes it without training again",
				 ckpt, r.epochs_done, r.total_epochs);
	json_decref(ev);
	sid_st_writer_free(w);
	run_release(&r); /* the lock released while a signal is still heeded (stop.h) */
	tr_stop_restore(&saved);
	return rc;
}
