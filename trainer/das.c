/*
 * das.c - the DAS model and its training step; see das.h for the contract
 * and proto/das.md for the formulas.
 *
 * Layout of the flat blocks (params, grads, adam m, adam v share offsets):
 *   [user tower: encoder w/b..., decoder w/b..., codebooks]
 *   [item tower: the same]                                  <- "dense" prefix
 *   [icdm heads: user w (E), user b (1), item w (E), item b (1)]
 *   [icdm.user (n_users, 2E)] [icdm.item (n_items, 2E)]     <- ICDM suffix
 * so a phase that freezes one side updates one contiguous range.
 *
 * A step: gather -> tower forwards (encoder, quantizer, decoder) -> each
 * loss leaf's forward immediately followed by its backward (they only
 * accumulate into gradient buffers) -> decoder, quantizer, encoder
 * backwards -> scatter table-row gradients -> clip -> AdamW -> dead codes.
 */
#include "das.h"

#include <ctype.h>
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "adam.h"
#include "cpus.h"
#include "encode.h"
#include "kmeans.h"
#include "nn.h"
#include "rng.h"
#include "stop.h"

#define MAX_LAYERS    (DAS_MAX_HIDDEN + 1)
#define MAX_TENSORS   (2 * (4 * MAX_LAYERS + DAS_MAX_LEVELS) + 8)
#define LAZY_AUTO_MAX (4u << 20)
#define N_STATE	      16

enum { TW_USER, TW_ITEM };

struct tensor_ref {
	char name[48];
	size_t off, n;
	int rows, cols; /* 2-D shape (rows 0: 1-D of cols) */
};

struct tower {
	int D, n_enc; /* encoder layers = n_dec */
	int enc_in[MAX_LAYERS], enc_out[MAX_LAYERS];
	int dec_in[MAX_LAYERS], dec_out[MAX_LAYERS];
	size_t enc_w[MAX_LAYERS], enc_b[MAX_LAYERS], dec_w[MAX_LAYERS], dec_b[MAX_LAYERS];
	size_t cb[DAS_MAX_LEVELS]; /* (K, E) */
	/* activations, capacity 2*cap rows for the encoder/quantizer, cap for the decoder */
	float *x;		    /* (2B, D) input rows */
	float *enc_pre[MAX_LAYERS]; /* (2B, out_i) */
	float *enc_act[MAX_LAYERS]; /* (2B, out_i); the last is z (= pre) */
	float *z_dec;		    /* (2B, E) decoder input (first B rows used) */
	float *z_al;		    /* (2B, E) */
	float *dec_pre[MAX_LAYERS]; /* (B, out_i) */
	float *dec_act[MAX_LAYERS]; /* (B, out_i); the last is x_hat */
	float *dz_al, *dz;	    /* (2B, E) */
	float *dz_dec;		    /* (B, E) */
	float *dxh;		    /* (B, D) */
	float *g1, *g2;		    /* (2B, H_max) backward ping-pong */
	struct nn_rq rq;	    /* capacity 2B */
	int64_t *last_used;	    /* (L, K) step a code was last chosen */
	int n_rows;		    /* rows through the encoder in the last forward */
	int32_t *real;		    /* (2B) of those, the batch's rows: not a missing partner's */
	int n_real;
};

struct das_model {
	struct das_config c;
	int n_users, n_items;
	long n_train, steps_per_epoch;
	float *item_pop_log, *user_act_log; /* (n_items), (n_users) */
	int has_icdm, lazy;
	size_t n_params, n_dense;
	size_t off_hu_w, off_hu_b, off_hi_w, off_hi_b, off_tu, off_ti;
	float *params, *grads, *am, *av;
	struct tensor_ref t[MAX_TENSORS];
	int n_t;
	struct tower tw[2];
	enum das_phase phase;
	long step, phase_step;
	int cb_ready, frozen;
	struct rng rng;
	/* workspace, capacity cap rows */
	int cap;
	float *U, *I, *dU, *dI;		       /* (B, 2E) gathered table rows and their grads */
	float *predu, *predi, *tu, *ti, *corr; /* (B) */
	float *va, *vc, *vda, *vdc;	       /* (B, E) compacted rows for views 5/6 */
	int32_t *vidx, *vku, *vki;	       /* (B) */
	struct nn_sim sim;
	int32_t *stamp_u, *stamp_i; /* (n_users), (n_items) last run that touched a row */
	int32_t *rows_u, *rows_i;   /* (B) distinct rows touched in the last run */
	int n_rows_u, n_rows_i;
	int32_t run_id;
	int32_t *code_stamp; /* (K) */
};

/* ------------------------------------------------------------------ config */

void das_config_defaults(struct das_config *c)
{
	memset(c, 0, sizeof(*c));
	c->mode = DAS_MODE_DAS;
	c->n_hidden = 2;
	c->hidden[0] = 256;
	c->hidden[1] = 128;
	c->E = 32;
	c->L = 3;
	c->K = 64;
	c->act = SID_ACT_RELU;
	c->input_norm = SID_NORM_NONE;
	c->beta = 0.25f;
	c->alpha = 1.0f;
	c->beta_align = 0.5f;
	c->tau = 0.1f;
	c->w_click = c->w_bias = c->w_orth = 1.0f;
	for (int v = 0; v < DAS_N_VIEWS; v++) {
		/* the partner views (5, 6) at 1 pull co-clicked items onto one
		 * full ID: proto/das.md, "View weights" */
		c->view_w[v] = v >= 4 ? 0.25f : 1.0f;
		c->view_on[v] = 1;
	}
	c->pop_correction = 1;
	c->mask_duplicates = 1;
	c->lr = 1e-3f;
	c->lr_icdm_mult = 30.0f;
	c->lr_min_ratio = 0.1f;
	c->warmup_steps = 50;
	c->weight_decay = 1e-4f;
	c->adam_b1 = 0.9f;
	c->adam_b2 = 0.999f;
	c->adam_eps = 1e-8f;
	c->clip_norm = 1.0f;
	c->init_std_table = 0.1f;
	c->table_update = DAS_TABLE_AUTO;
	c->epochs = 20;
	c->icdm_epochs = 10;
	c->batch_size = 1024;
	c->kmeans_iters = 25;
	c->kmeans_sample = 65536;
	c->dead_steps = 40;
	c->seed = 42;
}

static const char *mode_names[] = {"das", "rqvae", "two-stage"};
static const char *table_names[] = {"auto", "dense", "lazy"};

static int parse_long(const char *s, long lo, long hi, long *out)
{
	char *end;
	if (!s || !*s)
		return -1;
	/* true / false only for the 0/1 switches: "levels": true is a type error */
	if (!strcmp(s, "true") || !strcmp(s, "false")) {
		*out = s[0] == 't';
		return lo == 0 && hi == 1 ? 0 : -1;
	}
	/* an overflow gives LONG_MIN or LONG_MAX, out of every key's range */
	long v = strtol(s, &end, 10);
	if (*end || v < lo || v > hi)
		return -1;
	*out = v;
	return 0;
}

static int parse_float(const char *s, float *out)
{
	char *end;
	if (!s || !*s)
		return -1;
	float v = strtof(s, &end);
	if (*end || !isfinite(v))
		return -1;
	*out = v;
	return 0;
}

struct fkey {
	const char *name;
	size_t off;
};
#define FK(n, f)                                                                                   \
	{                                                                                          \
		n, offsetof(struct das_config, f)                                                  \
	}
static const struct fkey float_keys[] = {
    FK("beta", beta),
    FK("alpha", alpha),
    FK("beta_align", beta_align),
    FK("tau", tau),
    FK("w_click", w_click),
    FK("w_bias", w_bias),
    FK("w_orth", w_orth),
    FK("lr", lr),
    FK("lr_min_ratio", lr_min_ratio),
    FK("lr_icdm_mult", lr_icdm_mult),
    FK("weight_decay", weight_decay),
    FK("adam_b1", adam_b1),
    FK("adam_b2", adam_b2),
    FK("adam_eps", adam_eps),
    FK("clip_norm", clip_norm),
    FK("init_std_table", init_std_table),
};
struct ikey {
	const char *name;
	size_t off;
	long lo, hi;
};
#define IK(n, f, lo, hi)                                                                           \
	{                                                                                          \
		n, offsetof(struct das_config, f), lo, hi                                          \
	}
static const struct ikey int_keys[] = {
    /* the data's widths: a model's config names them (das_config_set) */
    IK("D_user", D_user, 1, SID_MAX_DIM),
    IK("D_item", D_item, 1, SID_MAX_DIM),
    IK("latent_dim", E, 1, 4096),
    IK("E", E, 1, 4096),
    IK("levels", L, 1, DAS_MAX_LEVELS),
    IK("L", L, 1, DAS_MAX_LEVELS),
    IK("codebook_size", K, 2, 65536),
    IK("K", K, 2, 65536),
    IK("pop_correction", pop_correction, 0, 1),
    IK("mask_duplicates", mask_duplicates, 0, 1),
    IK("warmup_steps", warmup_steps, 0, 100000000),
    IK("epochs", epochs, 0, 1000000),
    IK("icdm_epochs", icdm_epochs, 0, 1000000),
    IK("batch_size", batch_size, 2, 1 << 20),
    IK("kmeans_iters", kmeans_iters, 0, 100000),
    IK("kmeans_sample", kmeans_sample, 1, 1 << 30),
    IK("dead_steps", dead_steps, 0, 1000000000),
};

const char *das_config_canonical(const char *key)
{
	size_t n = sizeof(int_keys) / sizeof(int_keys[0]);
	for (size_t i = 0; i < n; i++)
		if (!strcmp(key, int_keys[i].name))
			for (size_t j = 0; j <= i; j++) /* the first name of its field */
				if (int_keys[j].off == int_keys[i].off)
					return int_keys[j].name;
	return key;
}

/* The keys das_config_set takes besides the float, int and view ones. */
static const char *const other_keys[] = {"seed",       "mode",	 "table_update", "activation",
					 "input_norm", "hidden", "views"};
#define N_OTHER_SETTINGS (sizeof(other_keys) / sizeof(other_keys[0]))

void das_config_names(struct sid_nearest *n)
{
	static const char *const views[] = {"view1", "view2", "view3", "view4", "view5", "view6"};
	size_t i;
	for (i = 0; i < sizeof(float_keys) / sizeof(float_keys[0]); i++)
		sid_nearest_add(n, float_keys[i].name);
	for (i = 0; i < sizeof(int_keys) / sizeof(int_keys[0]); i++)
		if (das_config_canonical(int_keys[i].name) == int_keys[i].name) /* no alias */
			sid_nearest_add(n, int_keys[i].name);
	for (i = 0; i < N_OTHER_SETTINGS; i++)
		sid_nearest_add(n, other_keys[i]);
	for (i = 0; i < DAS_N_VIEWS; i++)
		sid_nearest_add(n, views[i]);
}

int das_config_known(const char *key)
{
	size_t i;
	for (i = 0; i < sizeof(float_keys) / sizeof(float_keys[0]); i++)
		if (!strcmp(key, float_keys[i].name))
			return 1;
	for (i = 0; i < sizeof(int_keys) / sizeof(int_keys[0]); i++)
		if (!strcmp(key, int_keys[i].name))
			return 1;
	for (i = 0; i < sizeof(other_keys) / sizeof(other_keys[0]); i++)
		if (!strcmp(key, other_keys[i]))
			return 1;
	return !strncmp(key, "view", 4) && key[4] >= '1' && key[4] <= '6' && !key[5];
}

int das_config_set(struct das_config *c, const char *key_in, const char *value,
		   struct sid_error *err)
{
	char key[64];
	size_t i;
	long lv;
	float fv;

	if (!key_in || strlen(key_in) >= sizeof(key))
		return sid_error_set(err, SID_EINVAL, "config key \"%.60s\": unknown",
				     key_in ? key_in : "(null)");
	for (i = 0; key_in[i]; i++)
		key[i] = key_in[i] == '-' ? '_' : key_in[i];
	key[i] = 0;
	if (!value)
		return sid_error_set(err, SID_EINVAL, "config key %s: needs a value", key);
	for (i = 0; i < sizeof(float_keys) / sizeof(float_keys[0]); i++) {
		if (strcmp(key, float_keys[i].name))
			continue;
		if (parse_float(value, &fv))
			return sid_error_set(err, SID_EINVAL,
					     "config key %s: \"%s\" is not a number", key, value);
		*(float *)((char *)c + float_keys[i].off) = fv;
		return 0;
	}
	for (i = 0; i < sizeof(int_keys) / sizeof(int_keys[0]); i++) {
		if (strcmp(key, int_keys[i].name))
			continue;
		if (parse_long(value, int_keys[i].lo, int_keys[i].hi, &lv))
			return sid_error_set(
			    err, SID_EINVAL,
			    "config key %s: \"%s\" is not an integer in [%ld, %ld]", key, value,
			    int_keys[i].lo, int_keys[i].hi);
		*(int *)((char *)c + int_keys[i].off) = (int)lv;
		return 0;
	}
	if (!strcmp(key, "seed")) {
		char *end;
		unsigned long long s;
		errno = 0;
		s = strtoull(value, &end, 10);
		/* digits only: strtoull would take " -1" as 2^64 - 1 and saturate
		 * an overflow silently */
		/* below 2^63: the config the checkpoint and the model's metadata
		 * keep is JSON, whose integers jansson reads as int64 */
		if (*value < '0' || *value > '9' || *end || errno == ERANGE || s > INT64_MAX)
			return sid_error_set(err, SID_EINVAL,
					     "config key seed: \"%s\" is not an "
					     "integer in [0, 2^63)",
					     value);
		c->seed = s;
		return 0;
	}
	if (!strcmp(key, "mode")) {
		for (i = 0; i < 3; i++)
			if (!strcmp(value, mode_names[i])) {
				c->mode = (enum das_mode)i;
				return 0;
			}
		if (!strcmp(value, "two_stage")) {
			c->mode = DAS_MODE_TWO_STAGE;
			return 0;
		}
		return sid_error_set(err, SID_EINVAL,
				     "config key mode: \"%s\" is not das, rqvae or two-stage",
				     value);
	}
	if (!strcmp(key, "table_update")) {
		for (i = 0; i < 3; i++)
			if (!strcmp(value, table_names[i])) {
				c->table_update = (enum das_table_update)i;
				return 0;
			}
		return sid_error_set(err, SID_EINVAL,
				     "config key table_update: \"%s\" is not auto, dense or lazy",
				     value);
	}
	if (!strcmp(key, "activation")) {
		int a = sid_act_parse(value);
		if (a < 0)
			return sid_error_set(err, SID_EINVAL,
					     "config key activation: unknown \"%s\"", value);
		c->act = (enum sid_act)a;
		return 0;
	}
	if (!strcmp(key, "input_norm")) {
		int a = sid_norm_parse(value);
		if (a < 0)
			return sid_error_set(err, SID_EINVAL,
					     "config key input_norm: \"%s\" is not none or l2",
					     value);
		c->input_norm = (enum sid_norm)a;
		return 0;
	}
	if (!strcmp(key, "hidden")) {
		int n = 0;
		const char *p = value;
		int h[DAS_MAX_HIDDEN];
		while (*p) {
			char *end;
			long v = strtol(p, &end, 10);
			if (end == p)
				return sid_error_set(
				    err, SID_EINVAL,
				    "config key hidden: \"%s\" is not a list of up "
				    "to %d widths like 256,128",
				    value, DAS_MAX_HIDDEN);
			/* the fault itself, not the list's shape: "100000,100000"
			 * is a list, of widths too wide */
			if (n == DAS_MAX_HIDDEN)
				return sid_error_set(
				    err, SID_EINVAL,
				    "config key hidden: \"%s\": more than %d widths", value,
				    DAS_MAX_HIDDEN);
			/* "32.5", "1e2": the width at fault, not a "bad separator" */
			char *fend;
			(void)strtod(p, &fend);
			if (fend > end) {
				while (*p == ' ')
					p++;
				return sid_error_set(
				    err, SID_EINVAL,
				    "config key hidden: \"%s\": width %.*s is not an integer",
				    value, (int)(fend - p), p);
			}
			if (v < 1 || v > SID_MAX_DIM) {
				while (*p == ' ')
					p++;
				return sid_error_set(
				    err, SID_EINVAL,
				    "config key hidden: \"%s\": width %.*s is not in [1, %d]",
				    value, (int)(end - p), p, SID_MAX_DIM);
			}
			h[n++] = (int)v;
			p = end;
			while (*p == ' ')
				p++;
			if (*p == ',' && p[1])
				p++;
			else if (*p)
				return sid_error_set(err, SID_EINVAL,
						     "config key hidden: \"%s\": bad separator",
						     value);
		}
		c->n_hidden = n;
		memcpy(c->hidden, h, sizeof(int) * n);
		return 0;
	}
	if (!strcmp(key, "views")) {
		/* six weights, as das_config_json writes them: "1,1,0,1,1,1" */
		float w[DAS_N_VIEWS];
		const char *p = value;
		for (int v = 0; v < DAS_N_VIEWS; v++) {
			char *end;
			w[v] = strtof(p, &end);
			if (end == p || !isfinite(w[v]) || w[v] < 0)
				return sid_error_set(
				    err, SID_EINVAL,
				    "config key views: \"%s\" is not %d weights >= 0", value,
				    DAS_N_VIEWS);
			p = end;
			while (*p == ' ')
				p++;
			if (v + 1 < DAS_N_VIEWS && *p++ != ',')
				return sid_error_set(
				    err, SID_EINVAL,
				    "config key views: \"%s\" is not %d weights >= 0", value,
				    DAS_N_VIEWS);
		}
		if (*p)
			return sid_error_set(err, SID_EINVAL,
					     "config key views: \"%s\" is not %d weights >= 0",
					     value, DAS_N_VIEWS);
		for (int v = 0; v < DAS_N_VIEWS; v++) {
			c->view_w[v] = w[v];
			c->view_on[v] = w[v] > 0;
		}
		return 0;
	}
	if (!strncmp(key, "view", 4) && key[4] >= '1' && key[4] <= '6' && !key[5]) {
		int v = key[4] - '1';
		if (parse_float(value, &fv) || fv < 0)
			return sid_error_set(err, SID_EINVAL,
					     "config key %s: \"%s\" is not a weight >= 0", key,
					     value);
		c->view_w[v] = fv;
		c->view_on[v] = fv > 0;
		return 0;
	}
	struct sid_nearest near;
	char hint[96];
	sid_nearest_init(&near, key, strlen(key));
	das_config_names(&near);
	return sid_error_set(err, SID_EINVAL, "config key \"%s\": unknown%s", key,
			     sid_nearest_hint(&near, 0, hint, sizeof(hint)));
}

int das_config_check(const struct das_config *c, struct sid_error *err)
{
	if (c->mode < DAS_MODE_DAS || c->mode > DAS_MODE_TWO_STAGE)
		return sid_error_set(err, SID_EINVAL, "config: mode out of range");
	if (c->D_user < 1 || c->D_item < 1 || c->D_user > SID_MAX_DIM || c->D_item > SID_MAX_DIM)
		return sid_error_set(err, SID_EINVAL, "config: D_user %d / D_item %d out of range",
				     c->D_user, c->D_item);
	if (c->n_hidden < 0 || c->n_hidden > DAS_MAX_HIDDEN)
		return sid_error_set(err, SID_EINVAL, "config: hidden: %d layers (max %d)",
				     c->n_hidden, DAS_MAX_HIDDEN);
	for (int i = 0; i < c->n_hidden; i++)
		if (c->hidden[i] < 1 || c->hidden[i] > SID_MAX_DIM)
			return sid_error_set(err, SID_EINVAL, "config: hidden[%d] = %d", i,
					     c->hidden[i]);
	if (c->E < 1 || c->E > 4096)
		return sid_error_set(err, SID_EINVAL, "config: latent_dim %d out of range", c->E);
	if (c->L < 1 || c->L > DAS_MAX_LEVELS)
		return sid_error_set(err, SID_EINVAL, "config: levels %d not in 1..%d", c->L,
				     DAS_MAX_LEVELS);
	if (c->K < 2 || c->K > 65536)
		return sid_error_set(err, SID_EINVAL, "config: codebook_size %d not in 2..65536",
				     c->K);
	if ((unsigned)c->act > SID_ACT_TANH || (unsigned)c->input_norm > SID_NORM_L2)
		return sid_error_set(err, SID_EINVAL, "config: activation / input_norm unknown");
	if (!(c->tau >= 0.05f && c->tau <= 100.0f))
		return sid_error_set(err, SID_EINVAL, "config: tau %g not in [0.05, 100]",
				     (double)c->tau);
	const struct {
		const char *name;
		float v;
	} w[] = {{"beta", c->beta},	  {"alpha", c->alpha},	   {"beta_align", c->beta_align},
		 {"w_click", c->w_click}, {"w_bias", c->w_bias},   {"w_orth", c->w_orth},
		 {"view1", c->view_w[0]}, {"view2", c->view_w[1]}, {"view3", c->view_w[2]},
		 {"view4", c->view_w[3]}, {"view5", c->view_w[4]}, {"view6", c->view_w[5]}};
	char f[DAS_FLOAT_STR];
	for (size_t k = 0; k < sizeof(w) / sizeof(w[0]); k++)
		if (!(w[k].v >= 0)) /* the key and its value, not "loss weights" */
			return sid_error_set(err, SID_EINVAL, "config: %s %s is not >= 0",
					     w[k].name, das_float_str(w[k].v, f));
	if (!(c->lr > 0 && c->lr < 10))
		return sid_error_set(err, SID_EINVAL, "config: lr %g not in (0, 10)",
				     (double)c->lr);
	if (!(c->lr_icdm_mult > 0 && c->lr * c->lr_icdm_mult < 10))
		return sid_error_set(err, SID_EINVAL,
				     "config: lr_icdm_mult %g must be > 0 with lr x lr_icdm_mult "
				     "(%g) < 10",
				     (double)c->lr_icdm_mult, (double)(c->lr * c->lr_icdm_mult));
	if (!(c->lr_min_ratio >= 0 && c->lr_min_ratio <= 1))
		return sid_error_set(err, SID_EINVAL, "config: lr_min_ratio %s is not in [0, 1]",
				     das_float_str(c->lr_min_ratio, f));
	if (!(c->weight_decay >= 0 && c->weight_decay * c->lr < 1))
		return sid_error_set(err, SID_EINVAL,
				     "config: weight_decay %s must be >= 0 with lr x weight_decay "
				     "(%g) < 1",
				     das_float_str(c->weight_decay, f),
				     (double)(c->lr * c->weight_decay));
	/* the ICDM tables and heads step at lr x lr_icdm_mult, and decay by
	 * 1 - that x weight_decay: --lr 0.01 --weight-decay 50 passed the
	 * check above, flipped their sign and grew them 14-fold each step
	 * (an ICDM loss of 5e48 by the third epoch, published with exit 0) */
	if (c->mode != DAS_MODE_RQVAE && !(c->weight_decay * c->lr * c->lr_icdm_mult < 1))
		return sid_error_set(
		    err, SID_EINVAL,
		    "config: weight_decay %s must be >= 0 with lr x lr_icdm_mult x "
		    "weight_decay (%g) < 1: the ICDM tables step at lr x "
		    "lr_icdm_mult (%g)",
		    das_float_str(c->weight_decay, f),
		    (double)c->lr * c->lr_icdm_mult * c->weight_decay,
		    (double)c->lr * c->lr_icdm_mult);
	if (!(c->adam_b1 >= 0 && c->adam_b1 < 1))
		return sid_error_set(err, SID_EINVAL, "config: adam_b1 %s is not in [0, 1)",
				     das_float_str(c->adam_b1, f));
	if (!(c->adam_b2 >= 0 && c->adam_b2 < 1))
		return sid_error_set(err, SID_EINVAL, "config: adam_b2 %s is not in [0, 1)",
				     das_float_str(c->adam_b2, f));
	if (!(c->adam_eps > 0))
		return sid_error_set(err, SID_EINVAL, "config: adam_eps %s is not > 0",
				     das_float_str(c->adam_eps, f));
	if (!(c->init_std_table > 0))
		return sid_error_set(err, SID_EINVAL, "config: init_std_table %s is not > 0",
				     das_float_str(c->init_std_table, f));
	if (c->batch_size < 2)
		return sid_error_set(err, SID_EINVAL, "config: batch_size %d < 2", c->batch_size);
	if (c->epochs < 0 || c->icdm_epochs < 0 || c->warmup_steps < 0 || c->kmeans_iters < 0 ||
	    c->kmeans_sample < 1 || c->dead_steps < 0)
		return sid_error_set(err, SID_EINVAL, "config: negative count");
	if ((unsigned)c->table_update > DAS_TABLE_LAZY)
		return sid_error_set(err, SID_EINVAL, "config: table_update unknown");
	return 0;
}

const char *das_float_str(float v, char buf[DAS_FLOAT_STR])
{
	/* %.9g always reads back; fewer digits often do (0.001f is
	 * 0.00100000005 at 9).  The shortest string of those that do: fewer
	 * digits can be more characters (8.4433664e+08 against 844336640). */
	char try[DAS_FLOAT_STR];
	buf[0] = 0;
	for (int p = 6; p <= 9; p++) {
		snprintf(try, sizeof(try), "%.*g", p, (double)v);
		if (strtof(try, NULL) == v && (!buf[0] || strlen(try) < strlen(buf)))
			strcpy(buf, try);
	}
	return buf;
}

/* das_config_json, with the data's widths (@dims) or without them (the
 * settings). */
static char *config_json(const struct das_config *c, int dims)
{
	char hid[DAS_MAX_HIDDEN * 12 + 4] = "[";
	char views[DAS_N_VIEWS * (DAS_FLOAT_STR + 2) + 4] = "[";
	char dim[64] = "", f[16][DAS_FLOAT_STR], vf[DAS_FLOAT_STR];
	size_t n;
	for (int i = 0; i < c->n_hidden; i++) {
		n = strlen(hid);
		snprintf(hid + n, sizeof(hid) - n, "%s%d", i ? ", " : "", c->hidden[i]);
	}
	strcat(hid, "]");
	for (int v = 0; v < DAS_N_VIEWS; v++) {
		n = strlen(views);
		snprintf(views + n, sizeof(views) - n, "%s%s", v ? ", " : "",
			 das_float_str(c->view_on[v] ? c->view_w[v] : 0.0f, vf));
	}
	strcat(views, "]");
	if (dims)
		snprintf(dim, sizeof(dim), "\"D_user\": %d, \"D_item\": %d, ", c->D_user,
			 c->D_item);
	const char *fmt =
	    "{\"mode\": \"%s\", %s\"hidden\": %s, "
	    "\"latent_dim\": %d, \"levels\": %d, \"codebook_size\": %d, \"activation\": \"%s\", "
	    "\"input_norm\": \"%s\", \"beta\": %s, \"alpha\": %s, \"beta_align\": %s, "
	    "\"tau\": %s, \"w_click\": %s, \"w_bias\": %s, \"w_orth\": %s, "
	    "\"views\": %s, \"pop_correction\": %d, \"mask_duplicates\": %d, \"lr\": %s, "
	    "\"lr_min_ratio\": %s, \"lr_icdm_mult\": %s, \"warmup_steps\": %d, "
	    "\"weight_decay\": %s, "
	    "\"adam_b1\": %s, \"adam_b2\": %s, \"adam_eps\": %s, \"clip_norm\": %s, "
	    "\"init_std_table\": %s, \"table_update\": \"%s\", \"epochs\": %d, "
	    "\"icdm_epochs\": %d, \"batch_size\": %d, \"kmeans_iters\": %d, "
	    "\"kmeans_sample\": %d, \"dead_steps\": %d, \"seed\": %llu}";
	/* each float its own buffer: all of them are arguments of one call */
#define F(field, i) das_float_str(c->field, f[i])
#define CONFIG_ARGS                                                                                \
	mode_names[c->mode], dim, hid, c->E, c->L, c->K, sid_act_name(c->act),                     \
	    sid_norm_name(c->input_norm), F(beta, 0), F(alpha, 1), F(beta_align, 2), F(tau, 3),    \
	    F(w_click, 4), F(w_bias, 5), F(w_orth, 6), views, c->pop_correction,                   \
	    c->mask_duplicates, F(lr, 7), F(lr_min_ratio, 8), F(lr_icdm_mult, 9), c->warmup_steps, \
	    F(weight_decay, 10), F(adam_b1, 11), F(adam_b2, 12), F(adam_eps, 13),                  \
	    F(clip_norm, 14), F(init_std_table, 15), table_names[c->table_update], c->epochs,      \
	    c->icdm_epochs, c->batch_size, c->kmeans_iters, c->kmeans_sample, c->dead_steps,       \
	    (unsigned long long)c->seed
	int len = snprintf(NULL, 0, fmt, CONFIG_ARGS);
	if (len < 0)
		return NULL;
	char *s = malloc((size_t)len + 1);
	if (s)
		snprintf(s, (size_t)len + 1, fmt, CONFIG_ARGS);
#undef CONFIG_ARGS
#undef F
	return s;
}

char *das_config_json(const struct das_config *c)
{
	return config_json(c, 1);
}

char *das_config_settings_json(const struct das_config *c)
{
	return config_json(c, 0);
}

/* ------------------------------------------------------------------ layout */

static size_t add_tensor(struct das_model *m, size_t *off, const char *name, int rows, int cols)
{
	struct tensor_ref *t = &m->t[m->n_t++];
	snprintf(t->name, sizeof(t->name), "%s", name);
	t->off = *off;
	t->rows = rows;
	t->cols = cols;
	t->n = (size_t)(rows ? rows : 1) * cols;
	/* 16-float alignment keeps every tensor's rows vector-friendly */
	*off += (t->n + 15) & ~(size_t)15;
	return t->off;
}

static void layout_tower(struct das_model *m, int which, size_t *off)
{
	const struct das_config *c = &m->c;
	struct tower *tw = &m->tw[which];
	const char *tn = which == TW_USER ? "user" : "item";
	char name[48];
	int nl = c->n_hidden + 1;
	tw->D = which == TW_USER ? c->D_user : c->D_item;
	tw->n_enc = nl;
	for (int i = 0; i < nl; i++) {
		tw->enc_in[i] = i == 0 ? tw->D : c->hidden[i - 1];
		tw->enc_out[i] = i == nl - 1 ? c->E : c->hidden[i];
		/* decoder mirrors: E -> hidden[n-1] -> ... -> hidden[0] -> D */
		tw->dec_in[i] = i == 0 ? c->E : c->hidden[c->n_hidden - i];
		tw->dec_out[i] = i == nl - 1 ? tw->D : c->hidden[c->n_hidden - 1 - i];
	}
	for (int i = 0; i < nl; i++) {
		snprintf(name, sizeof(name), "%s.encoder.%d.weight", tn, i);
		tw->enc_w[i] = add_tensor(m, off, name, tw->enc_out[i], tw->enc_in[i]);
		snprintf(name, sizeof(name), "%s.encoder.%d.bias", tn, i);
		tw->enc_b[i] = add_tensor(m, off, name, 0, tw->enc_out[i]);
	}
	for (int i = 0; i < nl; i++) {
		snprintf(name, sizeof(name), "%s.decoder.%d.weight", tn, i);
		tw->dec_w[i] = add_tensor(m, off, name, tw->dec_out[i], tw->dec_in[i]);
		snprintf(name, sizeof(name), "%s.decoder.%d.bias", tn, i);
		tw->dec_b[i] = add_tensor(m, off, name, 0, tw->dec_out[i]);
	}
	for (int l = 0; l < c->L; l++) {
		snprintf(name, sizeof(name), "%s.codebook.%d", tn, l);
		tw->cb[l] = add_tensor(m, off, name, c->K, c->E);
	}
}

long das_tensor_find(const struct das_model *m, const char *name, size_t *n)
{
	for (int i = 0; i < m->n_t; i++)
		if (!strcmp(m->t[i].name, name)) {
			if (n)
				*n = m->t[i].n;
			return (long)m->t[i].off;
		}
	return -1;
}

static void init_linear(struct das_model *m, size_t w, size_t b, int in, int out)
{
	/* torch nn.Linear: U(-1/sqrt(in), 1/sqrt(in)) for weight and bias */
	float bound = 1.0f / sqrtf((float)in);
	for (size_t i = 0; i < (size_t)in * out; i++)
		m->params[w + i] = (2.0f * rng_float(&m->rng) - 1.0f) * bound;
	for (int i = 0; i < out; i++)
		m->params[b + i] = (2.0f * rng_float(&m->rng) - 1.0f) * bound;
}

/* ------------------------------------------------------------------ workspace */

static void tower_ws_free(struct tower *tw)
{
	free(tw->x);
	for (int i = 0; i < MAX_LAYERS; i++) {
		free(tw->enc_pre[i]);
		free(tw->enc_act[i]);
		free(tw->dec_pre[i]);
		free(tw->dec_act[i]);
		tw->enc_pre[i] = tw->enc_act[i] = tw->dec_pre[i] = tw->dec_act[i] = NULL;
	}
	free(tw->z_dec);
	free(tw->z_al);
	free(tw->dz_al);
	free(tw->dz);
	free(tw->dz_dec);
	free(tw->dxh);
	free(tw->g1);
	free(tw->g2);
	free(tw->real);
	tw->real = NULL;
	tw->x = tw->z_dec = tw->z_al = tw->dz_al = tw->dz = tw->dz_dec = tw->dxh = NULL;
	tw->g1 = tw->g2 = NULL;
	nn_rq_release(&tw->rq);
}

static float *falloc(size_t n)
{
	return malloc(sizeof(float) * (n ? n : 1));
}

static int tower_ws_alloc(struct das_model *m, struct tower *tw, int B)
{
	const int E = m->c.E;
	size_t B2 = 2 * (size_t)B;
	int hmax = tw->D > E ? tw->D : E;
	for (int i = 0; i < m->c.n_hidden; i++)
		hmax = m->c.hidden[i] > hmax ? m->c.hidden[i] : hmax;
	tw->x = falloc(B2 * tw->D);
	for (int i = 0; i < tw->n_enc; i++) {
		tw->enc_pre[i] = falloc(B2 * tw->enc_out[i]);
		tw->enc_act[i] = falloc(B2 * tw->enc_out[i]);
		tw->dec_pre[i] = falloc((size_t)B * tw->dec_out[i]);
		tw->dec_act[i] = falloc((size_t)B * tw->dec_out[i]);
		if (!tw->enc_pre[i] || !tw->enc_act[i] || !tw->dec_pre[i] || !tw->dec_act[i])
			return SID_ENOMEM;
	}
	tw->z_dec = falloc(B2 * E); /* the quantizer writes every row; the decoder reads B */
	tw->z_al = falloc(B2 * E);
	tw->dz_al = falloc(B2 * E);
	tw->dz = falloc(B2 * E);
	tw->dz_dec = falloc((size_t)B * E);
	tw->dxh = falloc((size_t)B * tw->D);
	tw->g1 = falloc(B2 * hmax);
	tw->g2 = falloc(B2 * hmax);
	tw->real = malloc(sizeof(int32_t) * B2);
	if (!tw->x || !tw->z_dec || !tw->z_al || !tw->dz_al || !tw->dz || !tw->dz_dec || !tw->dxh ||
	    !tw->g1 || !tw->g2 || !tw->real)
		return SID_ENOMEM;
	return nn_rq_init(&tw->rq, (int)B2, E, m->c.L, m->c.K);
}

static void ws_free(struct das_model *m)
{
	for (int t = 0; t < 2; t++)
		tower_ws_free(&m->tw[t]);
	free(m->U);
	free(m->I);
	free(m->dU);
	free(m->dI);
	free(m->predu);
	free(m->predi);
	free(m->tu);
	free(m->ti);
	free(m->corr);
	free(m->va);
	free(m->vc);
	free(m->vda);
	free(m->vdc);
	free(m->vidx);
	free(m->vku);
	free(m->vki);
	free(m->rows_u);
	free(m->rows_i);
	m->U = m->I = m->dU = m->dI = m->predu = m->predi = m->tu = m->ti = m->corr = NULL;
	m->va = m->vc = m->vda = m->vdc = NULL;
	m->vidx = m->vku = m->vki = m->rows_u = m->rows_i = NULL;
	nn_sim_release(&m->sim);
	m->cap = 0;
}

/* Grow the workspace to @B rows (frozen sg state does not survive a grow). */
static int ws_reserve(struct das_model *m, int B, struct sid_error *err)
{
	if (B <= m->cap)
		return 0;
	/* keep the dirty-row lists: copy them out first */
	int nu = m->n_rows_u, ni = m->n_rows_i;
	int32_t *ru = NULL, *ri = NULL;
	if (nu || ni) {
		ru = malloc(sizeof(int32_t) * (nu + 1));
		ri = malloc(sizeof(int32_t) * (ni + 1));
		if (!ru || !ri) {
			free(ru);
			free(ri);
			return sid_error_set(err, SID_ENOMEM, "das: out of memory");
		}
		memcpy(ru, m->rows_u, sizeof(int32_t) * nu);
		memcpy(ri, m->rows_i, sizeof(int32_t) * ni);
	}
	ws_free(m);
	const int E = m->c.E, E2 = 2 * E;
	int rc = 0;
	for (int t = 0; t < 2 && !rc; t++)
		rc = tower_ws_alloc(m, &m->tw[t], B);
	m->U = falloc((size_t)B * E2);
	m->I = falloc((size_t)B * E2);
	m->dU = falloc((size_t)B * E2);
	m->dI = falloc((size_t)B * E2);
	m->predu = falloc(B);
	m->predi = falloc(B);
	m->tu = falloc(B);
	m->ti = falloc(B);
	m->corr = falloc(B);
	m->va = falloc((size_t)B * E);
	m->vc = falloc((size_t)B * E);
	m->vda = falloc((size_t)B * E);
	m->vdc = falloc((size_t)B * E);
	m->vidx = malloc(sizeof(int32_t) * B);
	m->vku = malloc(sizeof(int32_t) * B);
	m->vki = malloc(sizeof(int32_t) * B);
	m->rows_u = malloc(sizeof(int32_t) * B);
	m->rows_i = malloc(sizeof(int32_t) * B);
	if (!rc)
		rc = nn_sim_init(&m->sim, B, E2);
	if (rc || !m->U || !m->I || !m->dU || !m->dI || !m->predu || !m->predi || !m->tu ||
	    !m->ti || !m->corr || !m->va || !m->vc || !m->vda || !m->vdc || !m->vidx || !m->vku ||
	    !m->vki || !m->rows_u || !m->rows_i) {
		free(ru);
		free(ri);
		ws_free(m);
		return sid_error_set(err, SID_ENOMEM, "das: out of memory for batch %d", B);
	}
	m->cap = B;
	if (ru) {
		memcpy(m->rows_u, ru, sizeof(int32_t) * nu);
		memcpy(m->rows_i, ri, sizeof(int32_t) * ni);
	}
	free(ru);
	free(ri);
	return 0;
}

/* ------------------------------------------------------------------ new/free */

/* Mean of t = log(1 + clicks) over clicks: sum (e^t - 1) t / sum (e^t - 1). */
static float click_weighted_mean(const float *t, int n)
{
	double s = 0, w = 0;
	for (int i = 0; i < n; i++) {
		double c = expm1((double)t[i]);
		if (c > 0) {
			s += c * t[i];
			w += c;
		}
	}
	return w > 0 ? (float)(s / w) : 0.0f;
}

/* Bytes a laid-out model will hold at its peak: the four parameter-sized
 * blocks (*blocks), the batch workspace of ws_reserve for @B rows (its large
 * terms), and the codebook initialisation (*init: the loop's sample of up to
 * kmeans_sample content rows per tower, their latents and k-means' (n, K)
 * distances), in double so that no configuration can overflow the sum. */
static double bytes_needed(const struct das_model *m, int B, double *blocks, double *init)
{
	const struct das_config *c = &m->c;
	double b = B, b2 = 2.0 * B, E = c->E, ws = 0, kmeans = 0;
	*blocks = 4.0 * sizeof(float) * (double)m->n_params;
	*init = 0;
	for (int t = 0; t < 2; t++) {
		double rows = t == TW_USER ? m->n_users : m->n_items;
		double n = rows < c->kmeans_sample ? rows : c->kmeans_sample;
		double one = n * E + (n + 1) * c->K + 3 * n + 2.0 * c->K * E;
		*init += n * m->tw[t].D * sizeof(float);
		kmeans = one > kmeans ? one : kmeans;
	}
	*init += kmeans * sizeof(float);
	for (int t = 0; t < 2; t++) {
		const struct tower *tw = &m->tw[t];
		double hmax = tw->D > c->E ? tw->D : c->E;
		for (int i = 0; i < tw->n_enc; i++) {
			ws += 2 * b2 * tw->enc_out[i] + 2 * b * tw->dec_out[i];
			hmax = tw->enc_out[i] > hmax ? tw->enc_out[i] : hmax;
		}
		ws += b2 * tw->D + b * tw->D + 4 * b2 * E + b * E + 2 * b2 * hmax;
		ws += 4 * b2 * c->L * E + 3 * b2 * E + b2 * c->K; /* nn_rq */
	}
	ws += 4 * b * 2 * E + 4 * b * E + b * b + 4 * b * 2 * E; /* U, I, views, nn_sim */
	return *blocks + *init + ws * sizeof(float) +
	       (double)(m->n_users + m->n_items) * 2 * sizeof(int32_t);
}

int das_new(const struct das_config *c, const struct das_data *d, struct das_model **out,
	    struct sid_error *err)
{
	struct das_model *m = NULL;
	int rc;
	*out = NULL;
	if ((rc = das_config_check(c, err)) < 0)
		return rc;
	if (!d || d->n_users < 1 || d->n_items < 1 || d->n_train < 1)
		return sid_error_set(err, SID_EINVAL, "das: need n_users, n_items, n_train >= 1");
	m = calloc(1, sizeof(*m));
	if (!m)
		return sid_error_set(err, SID_ENOMEM, "das: out of memory");
	m->c = *c;
	m->n_users = d->n_users;
	m->n_items = d->n_items;
	m->n_train = d->n_train;
	m->steps_per_epoch = d->n_train / c->batch_size;
	if (m->steps_per_epoch < 1)
		m->steps_per_epoch = 1;
	m->has_icdm = c->mode != DAS_MODE_RQVAE;
	m->phase = c->mode == DAS_MODE_TWO_STAGE ? DAS_PHASE_ICDM : DAS_PHASE_JOINT;
	rng_seed(&m->rng, c->seed);

	size_t off = 0;
	layout_tower(m, TW_USER, &off);
	layout_tower(m, TW_ITEM, &off);
	m->n_dense = off;
	if (m->has_icdm) {
		m->off_hu_w = add_tensor(m, &off, "icdm.head.user.weight", 0, c->E);
		m->off_hu_b = add_tensor(m, &off, "icdm.head.user.bias", 0, 1);
		m->off_hi_w = add_tensor(m, &off, "icdm.head.item.weight", 0, c->E);
		m->off_hi_b = add_tensor(m, &off, "icdm.head.item.bias", 0, 1);
		m->off_tu = add_tensor(m, &off, "icdm.user", d->n_users, 2 * c->E);
		m->off_ti = add_tensor(m, &off, "icdm.item", d->n_items, 2 * c->E);
		size_t tab = ((size_t)d->n_users + d->n_items) * 2 * c->E;
		m->lazy = c->table_update == DAS_TABLE_LAZY ||
			  (c->table_update == DAS_TABLE_AUTO && tab > LAZY_AUTO_MAX);
	}
	m->n_params = off;
	/* a batch never holds more rows than there are interactions */
	int B0 = (long)c->batch_size < d->n_train ? c->batch_size : (int)d->n_train;
	double blocks, init, need = bytes_needed(m, B0, &blocks, &init), have = sid_memory_usable();
	if (have > 0 && need > have) {
		const double G = 1073741824.0;
		rc = sid_error_set(err, SID_EINVAL,
				   "das: this model needs about %.1f GiB (parameters, gradients "
				   "and Adam state %.1f GiB, codebook init %.1f GiB, batch "
				   "workspace %.1f GiB), more than the %.1f GiB of memory here; "
				   "lower latent_dim, codebook_size, kmeans_sample, hidden or "
				   "batch_size, or train on less data",
				   need / G, blocks / G, init / G, (need - blocks - init) / G,
				   have / G);
		goto fail;
	}
	m->params = calloc(off, sizeof(float));
	m->grads = calloc(off, sizeof(float));
	m->am = calloc(off, sizeof(float));
	m->av = calloc(off, sizeof(float));
	m->item_pop_log = falloc(d->n_items);
	m->user_act_log = falloc(d->n_users);
	m->stamp_u = calloc(d->n_users, sizeof(int32_t));
	m->stamp_i = calloc(d->n_items, sizeof(int32_t));
	m->code_stamp = calloc(c->K, sizeof(int32_t));
	for (int t = 0; t < 2; t++)
		m->tw[t].last_used = calloc((size_t)c->L * c->K, sizeof(int64_t));
	if (!m->params || !m->grads || !m->am || !m->av || !m->item_pop_log || !m->user_act_log ||
	    !m->stamp_u || !m->stamp_i || !m->code_stamp || !m->tw[0].last_used ||
	    !m->tw[1].last_used) {
		rc = sid_error_set(err, SID_ENOMEM, "das: out of memory for %zu parameters", off);
		goto fail;
	}
	for (int i = 0; i < d->n_items; i++) {
		float v = d->item_pop_log ? d->item_pop_log[i] : 0.0f;
		if (!isfinite(v)) {
			rc = sid_error_set_at(err, SID_EINVAL, i,
					      "das: item_pop_log[%d] not finite", i);
			goto fail;
		}
		m->item_pop_log[i] = v;
	}
	for (int i = 0; i < d->n_users; i++) {
		float v = d->user_act_log ? d->user_act_log[i] : 0.0f;
		if (!isfinite(v)) {
			rc = sid_error_set_at(err, SID_EINVAL, i,
					      "das: user_act_log[%d] not finite", i);
			goto fail;
		}
		m->user_act_log[i] = v;
	}
	/* initial values, in a fixed order */
	for (int t = 0; t < 2; t++) {
		struct tower *tw = &m->tw[t];
		for (int i = 0; i < tw->n_enc; i++)
			init_linear(m, tw->enc_w[i], tw->enc_b[i], tw->enc_in[i], tw->enc_out[i]);
		for (int i = 0; i < tw->n_enc; i++)
			init_linear(m, tw->dec_w[i], tw->dec_b[i], tw->dec_in[i], tw->dec_out[i]);
	}
	if (m->has_icdm) {
		init_linear(m, m->off_hu_w, m->off_hu_b, c->E, 1);
		init_linear(m, m->off_hi_w, m->off_hi_b, c->E, 1);
		/* the heads start at the click-weighted mean of their targets, so the
		 * bias loss starts at the targets' variance instead of waiting
		 * thousands of small Adam steps for the bias to climb to ~4 */
		m->params[m->off_hu_b] = click_weighted_mean(m->user_act_log, d->n_users);
		m->params[m->off_hi_b] = click_weighted_mean(m->item_pop_log, d->n_items);
		size_t n = ((size_t)d->n_users + d->n_items) * 2 * c->E;
		for (size_t i = 0; i < n; i++) { /* the two tables are adjacent */
			/* 10 s at 1M users and items */
			if (!(i & 0xfffff) && tr_stop_signal()) {
				rc = tr_stop_error(err, "model set-up");
				goto fail;
			}
			m->params[m->off_tu + i] = c->init_std_table * rng_normal(&m->rng);
		}
	}
	if ((rc = ws_reserve(m, B0, err)) < 0)
		goto fail;
	*out = m;
	return 0;
fail:
	das_free(m);
	return rc;
}

void das_free(struct das_model *m)
{
	if (!m)
		return;
	ws_free(m);
	for (int t = 0; t < 2; t++)
		free(m->tw[t].last_used);
	free(m->code_stamp);
	free(m->stamp_u);
	free(m->stamp_i);
	free(m->item_pop_log);
	free(m->user_act_log);
	free(m->params);
	free(m->grads);
	free(m->am);
	free(m->av);
	free(m);
}

const struct das_config *das_config_of(const struct das_model *m)
{
	return &m->c;
}
size_t das_params_count(const struct das_model *m)
{
	return m->n_params;
}
float *das_params(struct das_model *m)
{
	return m->params;
}
float *das_grads(struct das_model *m)
{
	return m->grads;
}
float *das_adam_m(struct das_model *m)
{
	return m->am;
}
float *das_adam_v(struct das_model *m)
{
	return m->av;
}
long das_step_count(const struct das_model *m)
{
	return m->step;
}
int das_codebooks_ready(const struct das_model *m)
{
	return m->cb_ready;
}
enum das_phase das_phase_get(const struct das_model *m)
{
	return m->phase;
}

int das_phase_set(struct das_model *m, enum das_phase p, struct sid_error *err)
{
	if (p != DAS_PHASE_ICDM && p != DAS_PHASE_JOINT)
		return sid_error_set(err, SID_EINVAL, "das: unknown phase %d", (int)p);
	if (p == DAS_PHASE_ICDM && m->c.mode != DAS_MODE_TWO_STAGE)
		return sid_error_set(err, SID_EINVAL,
				     "das: the ICDM-only phase exists in two-stage mode only");
	if (p != m->phase) {
		m->phase = p;
		m->phase_step = 0;
	}
	return 0;
}

static int views_active(const struct das_model *m)
{
	return m->has_icdm && m->phase == DAS_PHASE_JOINT && m->c.beta_align > 0;
}

int das_needs_user_partner(const struct das_model *m)
{
	return views_active(m) && m->c.view_on[DAS_VIEW_UZ_UZ] && m->c.view_w[DAS_VIEW_UZ_UZ] > 0;
}

int das_needs_item_partner(const struct das_model *m)
{
	return views_active(m) && m->c.view_on[DAS_VIEW_IZ_IZ] && m->c.view_w[DAS_VIEW_IZ_IZ] > 0;
}

static int view_used(const struct das_model *m, int v)
{
	return views_active(m) && m->c.view_on[v] && m->c.view_w[v] > 0;
}

/* The ICDM losses train in das mode (joint) and in two-stage phase 1. */
static int icdm_trains(const struct das_model *m)
{
	return m->has_icdm && (m->c.mode == DAS_MODE_DAS || m->phase == DAS_PHASE_ICDM);
}

static int towers_train(const struct das_model *m)
{
	return m->phase == DAS_PHASE_JOINT;
}

/* ------------------------------------------------------------------ towers */

static void prep_input(const struct das_model *m, float *dst, const float *src, int n, int D)
{
	memcpy(dst, src, sizeof(float) * (size_t)n * D);
	if (m->c.input_norm != SID_NORM_L2)
		return;
	for (int b = 0; b < n; b++) {
		float *x = dst + (size_t)b * D;
		double s = 0;
		for (int j = 0; j < D; j++)
			s += (double)x[j] * x[j];
		/* not 1 / ||x||: for a row of denormals that is inf (a non-finite
		 * loss), and below 1e-12 it differs from what the server does */
		float inv = sid_l2_scale(s);
		for (int j = 0; j < D; j++)
			x[j] *= inv;
	}
}

/* Encoder over tw->x's first @n rows; z ends in tw->enc_act[last]. */
static void encoder_forward(struct das_model *m, struct tower *tw, int n)
{
	const float *in = tw->x;
	for (int i = 0; i < tw->n_enc; i++) {
		/* the last layer has no activation: it writes its output directly */
		int last = i == tw->n_enc - 1;
		nn_linear_forward(last ? tw->enc_act[i] : tw->enc_pre[i], in,
				  m->params + tw->enc_w[i], m->params + tw->enc_b[i], n,
				  tw->enc_in[i], tw->enc_out[i]);
		if (!last)
			nn_act_forward(m->c.act, tw->enc_act[i], tw->enc_pre[i],
				       (size_t)n * tw->enc_out[i]);
		in = tw->enc_act[i];
	}
}

static const float *tower_z(const struct tower *tw)
{
	return tw->enc_act[tw->n_enc - 1];
}

static void decoder_forward(struct das_model *m, struct tower *tw, int n)
{
	const float *in = tw->z_dec;
	for (int i = 0; i < tw->n_enc; i++) {
		/* the last layer has no activation: it writes its output directly */
		int last = i == tw->n_enc - 1;
		nn_linear_forward(last ? tw->dec_act[i] : tw->dec_pre[i], in,
				  m->params + tw->dec_w[i], m->params + tw->dec_b[i], n,
				  tw->dec_in[i], tw->dec_out[i]);
		if (!last)
			nn_act_forward(m->c.act, tw->dec_act[i], tw->dec_pre[i],
				       (size_t)n * tw->dec_out[i]);
		in = tw->dec_act[i];
	}
}

/* Backward through an MLP whose output gradient is @dy (n, out_last);
 * writes the input gradient to @dx when non-NULL. */
static void mlp_backward(struct das_model *m, struct tower *tw, int n, int dec, const float *dy,
			 float *dx)
{
	const int nl = tw->n_enc;
	const int *lin = dec ? tw->dec_in : tw->enc_in, *lout = dec ? tw->dec_out : tw->enc_out;
	const size_t *ow = dec ? tw->dec_w : tw->enc_w, *ob = dec ? tw->dec_b : tw->enc_b;
	float *const *pre = dec ? tw->dec_pre : tw->enc_pre;
	float *const *act = dec ? tw->dec_act : tw->enc_act;
	const float *input0 = dec ? tw->z_dec : tw->x;
	const float *g = dy;
	float *bufs[2] = {tw->g1, tw->g2};
	for (int i = nl - 1; i >= 0; i--) {
		const float *xin = i ? act[i - 1] : input0;
		float *gx = i ? bufs[i & 1] : dx;
		nn_linear_backward(gx, m->grads + ow[i], m->grads + ob[i], g, xin,
				   m->params + ow[i], n, lin[i], lout[i]);
		if (i) {
			nn_act_backward(m->c.act, gx, gx, pre[i - 1], (size_t)n * lin[i]);
			g = gx;
		}
	}
}

static void codebook_ptrs(struct das_model *m, const struct tower *tw, const float **C, float **dC)
{
	for (int l = 0; l < m->c.L; l++) {
		C[l] = m->params + tw->cb[l];
		dC[l] = m->grads + tw->cb[l];
	}
}

/* ------------------------------------------------------------------ the step */

static int check_batch(const struct das_model *m, const struct das_batch *b, int need_u2,
		       int need_i2, struct sid_error *err)
{
	if (!b || b->B < 2 || !b->user || !b->item)
		return sid_error_set(err, SID_EINVAL, "das: a batch needs B >= 2, user and item");
	for (int i = 0; i < b->B; i++) {
		if (b->user[i] < 0 || b->user[i] >= m->n_users)
			return sid_error_set_at(err, SID_EINVAL, i,
						"das: batch row %d: user %d out of range [0, %d)",
						i, b->user[i], m->n_users);
		if (b->item[i] < 0 || b->item[i] >= m->n_items)
			return sid_error_set_at(err, SID_EINVAL, i,
						"das: batch row %d: item %d out of range [0, %d)",
						i, b->item[i], m->n_items);
		if (need_u2 && (b->user2[i] < -1 || b->user2[i] >= m->n_users))
			return sid_error_set_at(err, SID_EINVAL, i,
						"das: batch row %d: user2 %d out of range", i,
						b->user2[i]);
		if (need_i2 && (b->item2[i] < -1 || b->item2[i] >= m->n_items))
			return sid_error_set_at(err, SID_EINVAL, i,
						"das: batch row %d: item2 %d out of range", i,
						b->item2[i]);
	}
	if (!towers_train(m))
		return 0;
	struct {
		const float *x;
		int D;
		const char *what;
	} rows[4] = {{b->user_x, m->c.D_user, "user_x"},
		     {b->item_x, m->c.D_item, "item_x"},
		     {need_u2 ? b->user2_x : NULL, m->c.D_user, "user2_x"},
		     {need_i2 ? b->item2_x : NULL, m->c.D_item, "item2_x"}};
	for (int k = 0; k < 4; k++) {
		if (!rows[k].x) {
			if (k < 2)
				return sid_error_set(err, SID_EINVAL, "das: batch has no %s",
						     rows[k].what);
			continue;
		}
		for (int i = 0; i < b->B; i++)
			for (int j = 0; j < rows[k].D; j++)
				if (!isfinite(rows[k].x[(size_t)i * rows[k].D + j]))
					return sid_error_set_at(
					    err, SID_EINVAL, i,
					    "das: batch row %d: %s column %d is not finite", i,
					    rows[k].what, j);
	}
	return 0;
}

/* Zero the gradients the previous run may have left. */
static void zero_grads(struct das_model *m)
{
	const int E2 = 2 * m->c.E;
	if (!m->has_icdm || !m->lazy) {
		memset(m->grads, 0, sizeof(float) * m->n_params);
		return;
	}
	memset(m->grads, 0, sizeof(float) * (m->off_tu));
	for (int k = 0; k < m->n_rows_u; k++)
		memset(m->grads + m->off_tu + (size_t)m->rows_u[k] * E2, 0, sizeof(float) * E2);
	for (int k = 0; k < m->n_rows_i; k++)
		memset(m->grads + m->off_ti + (size_t)m->rows_i[k] * E2, 0, sizeof(float) * E2);
}

/* Distinct rows of @idx, in order of first appearance. */
static int distinct_rows(struct das_model *m, const int32_t *idx, int B, int32_t *stamp,
			 int32_t *rows)
{
	int n = 0;
	for (int b = 0; b < B; b++)
		if (stamp[idx[b]] != m->run_id) {
			stamp[idx[b]] = m->run_id;
			rows[n++] = idx[b];
		}
	return n;
}

/* One tower's forward (input rows, encoder, quantizer, decoder) on B primary
 * rows plus @n2 partner rows (@partner[i] < 0: row B + i is no partner's, only
 * what the batch holds in its place). Returns the losses through *recon /
 * *quant. */
static void tower_forward(struct das_model *m, int which, const float *x, const float *x2,
			  const int32_t *partner, int B, int n2, double *recon, double *quant)
{
	struct tower *tw = &m->tw[which];
	const float *C[DAS_MAX_LEVELS];
	float *dC[DAS_MAX_LEVELS];
	int n = B + n2;
	prep_input(m, tw->x, x, B, tw->D);
	if (n2)
		prep_input(m, tw->x + (size_t)B * tw->D, x2, n2, tw->D);
	tw->n_rows = n;
	/* the rows whose codes count as used and may seed a dead code: a
	 * missing partner's row is encoded (its place in the block) but is
	 * none of the batch's */
	tw->n_real = 0;
	for (int r = 0; r < n; r++)
		if (r < B || partner[r - B] >= 0)
			tw->real[tw->n_real++] = r;
	encoder_forward(m, tw, n);
	codebook_ptrs(m, tw, C, dC);
	tw->rq.frozen = m->frozen;
	nn_rq_forward(&tw->rq, n, tower_z(tw), C, tw->z_dec, tw->z_al);
	decoder_forward(m, tw, B);
	const float *xin = tw->x;
	*recon = nn_mse_forward(tw->dec_act[tw->n_enc - 1], xin, B, tw->D);
	*quant = nn_rq_loss_forward(&tw->rq, B, m->c.beta);
}

static void tower_backward(struct das_model *m, int which, int B)
{
	struct tower *tw = &m->tw[which];
	const float *C[DAS_MAX_LEVELS];
	float *dC[DAS_MAX_LEVELS];
	int n = tw->n_rows;
	nn_mse_backward(tw->dxh, tw->dec_act[tw->n_enc - 1], tw->x, B, tw->D, 1.0f);
	mlp_backward(m, tw, B, 1, tw->dxh, tw->dz_dec);
	codebook_ptrs(m, tw, C, dC);
	nn_rq_backward(&tw->rq, n, B, m->c.beta, 1.0f, tw->dz_dec, B, tw->dz_al, tw->dz, dC);
	mlp_backward(m, tw, n, 0, tw->dz, NULL);
}

/* InfoNCE of one view on rows a (lda) / c (ldc), accumulating into da / dc. */
static double view_run(struct das_model *m, int v, const float *a, int lda, const float *c, int ldc,
		       float *da, int ldda, float *dc, int lddc, int B, int backward)
{
	const float w = m->c.beta_align * m->c.view_w[v];
	double l = nn_infonce_forward(&m->sim, a, lda, c, ldc, B, m->c.E, m->c.tau);
	if (backward)
		nn_infonce_backward(&m->sim, w, da, ldda, dc, lddc);
	return l;
}

/* Views 5 / 6: the rows with a partner, compacted, then scattered back. */
static double view_pairs(struct das_model *m, int v, struct tower *tw, const struct das_batch *b,
			 const int32_t *partner, int B, int backward)
{
	const int E = m->c.E;
	int n = 0;
	for (int i = 0; i < B; i++)
		if (partner[i] >= 0) {
			m->vidx[n] = i;
			m->vku[n] = b->user[i];
			m->vki[n] = b->item[i];
			memcpy(m->va + (size_t)n * E, tw->z_al + (size_t)i * E, sizeof(float) * E);
			memcpy(m->vc + (size_t)n * E, tw->z_al + (size_t)(B + i) * E,
			       sizeof(float) * E);
			n++;
		}
	if (n < 2)
		return 0;
	if (nn_sim_set_mask(&m->sim, n, m->c.mask_duplicates ? m->vku : NULL,
			    m->c.mask_duplicates ? m->vki : NULL) < 0)
		return NAN; /* out of memory: the step reports a non-finite loss */
	memset(m->vda, 0, sizeof(float) * (size_t)n * E);
	memset(m->vdc, 0, sizeof(float) * (size_t)n * E);
	double l = view_run(m, v, m->va, E, m->vc, E, m->vda, E, m->vdc, E, n, backward);
	if (backward)
		for (int k = 0; k < n; k++) {
			int i = m->vidx[k];
			float *d1 = tw->dz_al + (size_t)i * E,
			      *d2 = tw->dz_al + (size_t)(B + i) * E;
			for (int j = 0; j < E; j++) {
				d1[j] += m->vda[(size_t)k * E + j];
				d2[j] += m->vdc[(size_t)k * E + j];
			}
		}
	return l;
}

static int run(struct das_model *m, const struct das_batch *b, struct das_losses *out, int backward,
	       struct sid_error *err)
{
	const struct das_config *c = &m->c;
	const int E = c->E, E2 = 2 * E;
	int rc;
	int nu2 = das_needs_user_partner(m), ni2 = das_needs_item_partner(m);
	if (nu2 && (!b || !b->user2 || !b->user2_x))
		return sid_error_set(err, SID_EINVAL, "das: view 5 needs user2 / user2_x");
	if (ni2 && (!b || !b->item2 || !b->item2_x))
		return sid_error_set(err, SID_EINVAL, "das: view 6 needs item2 / item2_x");
	if ((rc = check_batch(m, b, nu2, ni2, err)) < 0)
		return rc;
	if (towers_train(m) && !m->cb_ready)
		return sid_error_set(err, SID_EINVAL,
				     "das: codebooks not initialised (call das_init_codebooks)");
	const int B = b->B;
	if (B > m->cap && m->frozen)
		return sid_error_set(err, SID_EINVAL, "das: frozen model cannot grow its batch");
	if ((rc = ws_reserve(m, B, err)) < 0)
		return rc;
	memset(out, 0, sizeof(*out));
	if (backward) {
		zero_grads(m);
		m->n_rows_u = m->n_rows_i = 0; /* only now: an eval must not forget dirty rows */
	}
	m->run_id++;

	/* semantic side */
	if (towers_train(m)) {
		tower_forward(m, TW_USER, b->user_x, nu2 ? b->user2_x : NULL, nu2 ? b->user2 : NULL,
			      B, nu2 ? B : 0, &out->recon_user, &out->quant_user);
		tower_forward(m, TW_ITEM, b->item_x, ni2 ? b->item2_x : NULL, ni2 ? b->item2 : NULL,
			      B, ni2 ? B : 0, &out->recon_item, &out->quant_item);
		for (int t = 0; t < 2; t++)
			memset(m->tw[t].dz_al, 0, sizeof(float) * (size_t)m->tw[t].n_rows * E);
	}

	/* collaborative side */
	int need_tables = icdm_trains(m) || views_active(m);
	if (need_tables) {
		for (int i = 0; i < B; i++) {
			memcpy(m->U + (size_t)i * E2,
			       m->params + m->off_tu + (size_t)b->user[i] * E2, sizeof(float) * E2);
			memcpy(m->I + (size_t)i * E2,
			       m->params + m->off_ti + (size_t)b->item[i] * E2, sizeof(float) * E2);
		}
		memset(m->dU, 0, sizeof(float) * (size_t)B * E2);
		memset(m->dI, 0, sizeof(float) * (size_t)B * E2);
		if (nn_sim_set_mask(&m->sim, B, c->mask_duplicates ? b->user : NULL,
				    c->mask_duplicates ? b->item : NULL) < 0)
			return sid_error_set(err, SID_ENOMEM, "das: out of memory for the mask");
	}
	if (icdm_trains(m)) {
		const float g_click = c->alpha * c->w_click, g_bias = c->alpha * c->w_bias,
			    g_orth = c->alpha * c->w_orth;
		for (int i = 0; i < B; i++) {
			m->corr[i] = c->pop_correction ? m->item_pop_log[b->item[i]] : 0.0f;
			m->tu[i] = m->user_act_log[b->user[i]];
			m->ti[i] = m->item_pop_log[b->item[i]];
		}
		out->click = nn_click_forward(&m->sim, m->U, E2, m->I, E2, m->corr, B, E2);
		if (backward)
			nn_click_backward(&m->sim, g_click, m->dU, E2, m->dI, E2);
		/* bias heads read the conformity / popularity halves */
		out->bias_user = nn_head_forward(m->predu, m->U + E, E2, m->params + m->off_hu_w,
						 m->params + m->off_hu_b, m->tu, B, E);
		out->bias_item = nn_head_forward(m->predi, m->I + E, E2, m->params + m->off_hi_w,
						 m->params + m->off_hi_b, m->ti, B, E);
		out->orth_user = nn_cos2_forward(m->U, m->U + E, E2, B, E);
		out->orth_item = nn_cos2_forward(m->I, m->I + E, E2, B, E);
		if (backward) {
			nn_head_backward(m->dU + E, E2, m->grads + m->off_hu_w,
					 m->grads + m->off_hu_b, m->predu, m->U + E, E2,
					 m->params + m->off_hu_w, m->tu, B, E, g_bias);
			nn_head_backward(m->dI + E, E2, m->grads + m->off_hi_w,
					 m->grads + m->off_hi_b, m->predi, m->I + E, E2,
					 m->params + m->off_hi_w, m->ti, B, E, g_bias);
			nn_cos2_backward(m->dU, m->dU + E, E2, m->U, m->U + E, E2, B, E, g_orth);
			nn_cos2_backward(m->dI, m->dI + E, E2, m->I, m->I + E, E2, B, E, g_orth);
		}
		out->icdm = c->w_click * out->click +
			    c->w_bias * (out->bias_user + out->bias_item) +
			    c->w_orth * (out->orth_user + out->orth_item);
	}

	/* alignment views (the interest / content halves are the first E columns) */
	if (views_active(m)) {
		struct tower *tu = &m->tw[TW_USER], *ti = &m->tw[TW_ITEM];
		if (view_used(m, DAS_VIEW_UZ_ICONTENT))
			out->view[0] = view_run(m, 0, tu->z_al, E, m->I, E2, tu->dz_al, E, m->dI,
						E2, B, backward);
		if (view_used(m, DAS_VIEW_UINTEREST_IZ))
			out->view[1] = view_run(m, 1, m->U, E2, ti->z_al, E, m->dU, E2, ti->dz_al,
						E, B, backward);
		if (view_used(m, DAS_VIEW_UZ_UINTEREST))
			out->view[2] = view_run(m, 2, tu->z_al, E, m->U, E2, tu->dz_al, E, m->dU,
						E2, B, backward);
		if (view_used(m, DAS_VIEW_IZ_ICONTENT))
			out->view[3] = view_run(m, 3, ti->z_al, E, m->I, E2, ti->dz_al, E, m->dI,
						E2, B, backward);
		if (nu2)
			out->view[4] = view_pairs(m, 4, tu, b, b->user2, B, backward);
		if (ni2)
			out->view[5] = view_pairs(m, 5, ti, b, b->item2, B, backward);
		for (int v = 0; v < DAS_N_VIEWS; v++)
			if (view_used(m, v))
				out->align += c->view_w[v] * out->view[v];
	}
	out->total = out->recon_user + out->quant_user + out->recon_item + out->quant_item +
		     c->alpha * out->icdm + c->beta_align * out->align;
	if (towers_train(m)) {
		for (int t = 0; t < 2; t++) {
			struct tower *tw = &m->tw[t];
			int *used = t == TW_USER ? out->used_user : out->used_item;
			for (int l = 0; l < c->L; l++) {
				int nu = 0;
				m->run_id++;
				for (int j = 0; j < tw->n_real; j++) {
					int k = tw->rq.codes[(size_t)tw->real[j] * c->L + l];
					if (m->code_stamp[k] != m->run_id) {
						m->code_stamp[k] = m->run_id;
						nu++;
					}
				}
				used[l] = nu;
			}
		}
		m->run_id++;
	}
	if (!backward)
		return 0;

	if (towers_train(m)) {
		tower_backward(m, TW_USER, B);
		tower_backward(m, TW_ITEM, B);
	}
	/* table rows: trainable in das mode and in two-stage phase 1 */
	if (need_tables && icdm_trains(m)) {
		for (int i = 0; i < B; i++) {
			float *gu = m->grads + m->off_tu + (size_t)b->user[i] * E2;
			float *gi = m->grads + m->off_ti + (size_t)b->item[i] * E2;
			const float *su = m->dU + (size_t)i * E2, *si = m->dI + (size_t)i * E2;
			for (int j = 0; j < E2; j++) {
				gu[j] += su[j];
				gi[j] += si[j];
			}
		}
		m->n_rows_u = distinct_rows(m, b->user, B, m->stamp_u, m->rows_u);
		m->n_rows_i = distinct_rows(m, b->item, B, m->stamp_i, m->rows_i);
		m->run_id++;
	}
	return 0;
}

int das_eval_losses(struct das_model *m, const struct das_batch *b, struct das_losses *out,
		    struct sid_error *err)
{
	struct das_losses tmp;
	return run(m, b, out ? out : &tmp, 0, err);
}

int das_grad(struct das_model *m, const struct das_batch *b, struct das_losses *out,
	     struct sid_error *err)
{
	struct das_losses tmp;
	return run(m, b, out ? out : &tmp, 1, err);
}

void das_debug_freeze(struct das_model *m, int on)
{
	m->frozen = on;
}

/* Apply @fn-style updates over the trainable ranges. */
static double trainable_sumsq(struct das_model *m)
{
	const size_t E2 = 2 * (size_t)m->c.E;
	double s = 0;
	if (towers_train(m))
		s += adam_sumsq(m->grads, m->n_dense);
	if (icdm_trains(m)) {
		s += adam_sumsq(m->grads + m->n_dense, m->off_tu - m->n_dense);
		if (!m->lazy) {
			s += adam_sumsq(m->grads + m->off_tu, m->n_params - m->off_tu);
		} else {
			for (int k = 0; k < m->n_rows_u; k++)
				s += adam_sumsq(m->grads + m->off_tu + m->rows_u[k] * E2, E2);
			for (int k = 0; k < m->n_rows_i; k++)
				s += adam_sumsq(m->grads + m->off_ti + m->rows_i[k] * E2, E2);
		}
	}
	return s;
}

static void range_update(struct das_model *m, size_t off, size_t n, float clip,
			 const struct adamw_hparams *h, long t)
{
	if (clip != 1.0f)
		adam_scale(m->grads + off, n, clip);
	adamw_update(m->params + off, m->grads + off, m->am + off, m->av + off, n, h, t);
}

static void optimizer_step(struct das_model *m, float clip, float lr)
{
	const size_t E2 = 2 * (size_t)m->c.E;
	struct adamw_hparams h = {lr, m->c.adam_b1, m->c.adam_b2, m->c.adam_eps, m->c.weight_decay};
	long t = m->phase_step + 1;
	if (towers_train(m))
		range_update(m, 0, m->n_dense, clip, &h, t);
	h.lr = lr * m->c.lr_icdm_mult;
	if (icdm_trains(m)) {
		range_update(m, m->n_dense, m->off_tu - m->n_dense, clip, &h, t);
		if (!m->lazy) {
			range_update(m, m->off_tu, m->n_params - m->off_tu, clip, &h, t);
		} else {
			for (int k = 0; k < m->n_rows_u; k++)
				range_update(m, m->off_tu + m->rows_u[k] * E2, E2, clip, &h, t);
			for (int k = 0; k < m->n_rows_i; k++)
				range_update(m, m->off_ti + m->rows_i[k] * E2, E2, clip, &h, t);
		}
	}
}

/* Codes unused for dead_steps steps take the residual of a random batch row
 * (primary or partner: a missing partner's row is neither). */
static int dead_code_reset(struct das_model *m)
{
	const int E = m->c.E, L = m->c.L, K = m->c.K;
	int resets = 0;
	for (int t = 0; t < 2; t++) {
		struct tower *tw = &m->tw[t];
		for (int j = 0; j < tw->n_real; j++)
			for (int l = 0; l < L; l++)
				tw->last_used[(size_t)l * K +
					      tw->rq.codes[(size_t)tw->real[j] * L + l]] = m->step;
		if (m->c.dead_steps <= 0)
			continue;
		for (int l = 0; l < L; l++)
			for (int k = 0; k < K; k++) {
				int64_t *lu = &tw->last_used[(size_t)l * K + k];
				if (m->step - *lu < m->c.dead_steps)
					continue;
				int r = tw->real[rng_below(&m->rng, (uint64_t)tw->n_real)];
				size_t off = tw->cb[l] + (size_t)k * E;
				memcpy(m->params + off, tw->rq.r + ((size_t)r * L + l) * E,
				       sizeof(float) * E);
				memset(m->am + off, 0, sizeof(float) * E);
				memset(m->av + off, 0, sizeof(float) * E);
				*lu = m->step;
				resets++;
			}
	}
	return resets;
}

long das_steps_per_phase(const struct das_model *m)
{
	int ep = m->phase == DAS_PHASE_ICDM ? m->c.icdm_epochs : m->c.epochs;
	return m->steps_per_epoch * (ep > 0 ? ep : 1);
}

int das_step(struct das_model *m, const struct das_batch *b, struct das_losses *out,
	     struct sid_error *err)
{
	struct das_losses tmp;
	if (!out)
		out = &tmp;
	if (m->frozen)
		return sid_error_set(err, SID_EINVAL, "das: model is frozen for testing");
	int rc = run(m, b, out, 1, err);
	if (rc < 0)
		return rc;
	double ss = trainable_sumsq(m);
	out->grad_norm = sqrt(ss);
	if (!isfinite(out->total) || !isfinite(ss)) {
		zero_grads(m);
		return sid_error_set(err, SID_EINVAL,
				     "das: step %ld: the loss is not finite (total %g, grad norm "
				     "%g); parameters left unchanged",
				     m->step, out->total, out->grad_norm);
	}
	float clip = adam_clip_factor(out->grad_norm, m->c.clip_norm);
	float lr = adam_lr_at(m->phase_step, das_steps_per_phase(m), m->c.warmup_steps, m->c.lr,
			      m->c.lr_min_ratio);
	out->lr = lr;
	optimizer_step(m, clip, lr);
	if (towers_train(m))
		out->resets = dead_code_reset(m);
	m->step++;
	m->phase_step++;
	return 0;
}

/* ------------------------------------------------------------------ codebook init */

int das_init_codebooks(struct das_model *m, const float *user_x, int n_user_rows,
		       const float *item_x, int n_item_rows, struct sid_error *err)
{
	const int E = m->c.E, K = m->c.K, L = m->c.L;
	const float *xs[2] = {user_x, item_x};
	const int ns[2] = {n_user_rows, n_item_rows};
	float *z = NULL, *c0 = NULL;
	int32_t *as = NULL;
	int rc = 0;
	if (m->frozen)
		return sid_error_set(err, SID_EINVAL, "das: model is frozen for testing");
	for (int t = 0; t < 2; t++) {
		struct tower *tw = &m->tw[t];
		int n = ns[t];
		if (!xs[t] || n < 1) {
			rc = sid_error_set(err, SID_EINVAL, "das: codebook init needs %s rows",
					   t == TW_USER ? "user" : "item");
			goto fail;
		}
		for (size_t i = 0; i < (size_t)n * tw->D; i++)
			if (!isfinite(xs[t][i])) {
				long row = (long)(i / tw->D);
				rc =
				    sid_error_set_at(err, SID_EINVAL, row,
						     "das: codebook init: %s row %ld is not finite",
						     t == TW_USER ? "user" : "item", row);
				goto fail;
			}
	}
	for (int t = 0; t < 2; t++) {
		struct tower *tw = &m->tw[t];
		int n = ns[t];
		free(z);
		free(as);
		z = malloc(sizeof(float) * (size_t)n * E);
		as = malloc(sizeof(int32_t) * (size_t)n);
		if (!z || !as) {
			rc = sid_error_set(err, SID_ENOMEM, "das: out of memory for codebook init");
			goto fail;
		}
		/* latents in chunks of the workspace's 2*cap rows */
		int chunk = 2 * m->cap;
		for (int r0 = 0; r0 < n; r0 += chunk) {
			int k = n - r0 < chunk ? n - r0 : chunk;
			prep_input(m, tw->x, xs[t] + (size_t)r0 * tw->D, k, tw->D);
			encoder_forward(m, tw, k);
			memcpy(z + (size_t)r0 * E, tower_z(tw), sizeof(float) * (size_t)k * E);
		}
		for (int l = 0; l < L; l++) {
			float *C = m->params + tw->cb[l];
			rc = km_fit(z, n, E, K, m->c.kmeans_iters, &m->rng, C, as, NULL, err);
			if (rc < 0)
				goto fail;
			for (int i = 0; i < n; i++)
				for (int j = 0; j < E; j++)
					z[(size_t)i * E + j] -= C[(size_t)as[i] * E + j];
			memset(m->am + tw->cb[l], 0, sizeof(float) * (size_t)K * E);
			memset(m->av + tw->cb[l], 0, sizeof(float) * (size_t)K * E);
		}
		for (size_t i = 0; i < (size_t)L * K; i++)
			tw->last_used[i] = m->step;
	}
	m->cb_ready = 1;
fail:
	free(c0);
	free(z);
	free(as);
	return rc;
}

/* ------------------------------------------------------------------ export */

static int add_view(const struct das_model *m, struct sid_st_writer *w, const char *name,
		    const char *as, struct sid_error *err)
{
	for (int i = 0; i < m->n_t; i++) {
		const struct tensor_ref *t = &m->t[i];
		if (strcmp(t->name, name))
			continue;
		int64_t shape[2];
		int nd = 0;
		if (t->rows)
			shape[nd++] = t->rows;
		shape[nd++] = t->cols;
		return sid_st_writer_add(w, as ? as : name, SID_ST_F32, nd, shape,
					 m->params + t->off, err);
	}
	return sid_error_set(err, SID_ENOTFOUND, "das: no tensor %s", name);
}

int das_export(const struct das_model *m, int tables, struct sid_st_writer *w,
	       struct sid_error *err)
{
	int rc;
	/* the encoder tensors first (what semid reads), then the rest */
	for (int t = 0; t < m->n_t; t++)
		if (strstr(m->t[t].name, ".encoder.") || strstr(m->t[t].name, ".codebook."))
			if ((rc = add_view(m, w, m->t[t].name, NULL, err)) < 0)
				return rc;
	for (int t = 0; t < m->n_t; t++) {
		const char *n = m->t[t].name;
		if (strstr(n, ".encoder.") || strstr(n, ".codebook."))
			continue;
		if (!tables && (!strcmp(n, "icdm.user") || !strcmp(n, "icdm.item")))
			continue;
		if ((rc = add_view(m, w, n, NULL, err)) < 0)
			return rc;
	}
	return 0;
}

/* ------------------------------------------------------------------ checkpoints */

int das_checkpoint_add(const struct das_model *m, struct sid_st_writer *w, struct sid_error *err)
{
	int rc;
	int64_t shape[1] = {(int64_t)m->n_params};
	int64_t st[N_STATE] = {0};
	char *cj = NULL;
	/* Borrowed, not copied: at 1M users and items these are 3 x 514 MB. */
	const struct {
		const char *name;
		const float *data;
	} big[] = {{"das.params", m->params}, {"das.adam_m", m->am}, {"das.adam_v", m->av}};
	for (int i = 0; i < 3; i++)
		if ((rc = sid_st_writer_add_borrowed(w, big[i].name, SID_ST_F32, 1, shape,
						     big[i].data, err)) < 0)
			return rc;
	st[0] = m->step;
	st[1] = m->phase_step;
	st[2] = m->phase;
	st[3] = m->cb_ready;
	for (int i = 0; i < 4; i++)
		memcpy(&st[4 + i], &m->rng.s[i], sizeof(int64_t));
	st[8] = (int64_t)m->n_params;
	st[9] = m->n_users;
	st[10] = m->n_items;
	int64_t sshape[1] = {N_STATE};
	if ((rc = sid_st_writer_add(w, "das.state", SID_ST_I64, 1, sshape, st, err)) < 0)
		return rc;
	size_t lk = (size_t)m->c.L * m->c.K;
	int64_t *lu = malloc(sizeof(int64_t) * 2 * lk);
	if (!lu)
		return sid_error_set(err, SID_ENOMEM, "das: out of memory");
	memcpy(lu, m->tw[0].last_used, sizeof(int64_t) * lk);
	memcpy(lu + lk, m->tw[1].last_used, sizeof(int64_t) * lk);
	int64_t lshape[1] = {(int64_t)(2 * lk)};
	rc = sid_st_writer_add(w, "das.code_last_used", SID_ST_I64, 1, lshape, lu, err);
	free(lu);
	if (rc < 0)
		return rc;
	cj = das_config_json(&m->c);
	if (!cj)
		return sid_error_set(err, SID_ENOMEM, "das: out of memory");
	rc = sid_st_writer_meta(w, "das_config", cj, err);
	free(cj);
	return rc;
}

static const struct sid_st_tensor *ck_find(const struct sid_st_file *f, const char *name,
					   enum sid_st_dtype dt, uint64_t n, struct sid_error *err)
{
	const struct sid_st_tensor *t = sid_st_find(f, name);
	if (!t) {
		sid_error_set(err, SID_EFORMAT, "checkpoint: tensor %s missing", name);
		return NULL;
	}
	if (t->dtype != dt || t->nelem != n) {
		sid_error_set(err, SID_EFORMAT,
			      "checkpoint: tensor %s: %s with %llu %s, expected %s with %llu "
			      "(a different config or data?)",
			      name, sid_st_dtype_name(t->dtype), (unsigned long long)t->nelem,
			      sid_plural(t->nelem, "element", "elements"), sid_st_dtype_name(dt),
			      (unsigned long long)n);
		return NULL;
	}
	return t;
}

int das_checkpoint_restore(struct das_model *m, const struct sid_st_file *f, struct sid_error *err)
{
	const struct sid_st_tensor *tp, *tm, *tv, *ts, *tl;
	size_t lk = (size_t)m->c.L * m->c.K;
	int64_t st[N_STATE];
	if (!(tp = ck_find(f, "das.params", SID_ST_F32, m->n_params, err)) ||
	    !(tm = ck_find(f, "das.adam_m", SID_ST_F32, m->n_params, err)) ||
	    !(tv = ck_find(f, "das.adam_v", SID_ST_F32, m->n_params, err)) ||
	    !(ts = ck_find(f, "das.state", SID_ST_I64, N_STATE, err)) ||
	    !(tl = ck_find(f, "das.code_last_used", SID_ST_I64, 2 * lk, err)))
		return SID_EFORMAT;
	memcpy(st, ts->data, sizeof(st));
	if (st[8] != (int64_t)m->n_params || st[9] != m->n_users || st[10] != m->n_items ||
	    (st[2] != DAS_PHASE_ICDM && st[2] != DAS_PHASE_JOINT) || st[0] < 0 || st[1] < 0 ||
	    (st[3] != 0 && st[3] != 1))
		return sid_error_set(err, SID_EFORMAT,
				     "checkpoint: tensor das.state does not match this model");
	/* the moments too: a NaN there resumed, then failed steps later as
	 * "the loss is not finite", naming neither the checkpoint nor the
	 * tensor; a second moment is a mean of squares, never negative */
	const struct sid_st_tensor *tf[3] = {tp, tm, tv};
	for (int k = 0; k < 3; k++) {
		const float *fp = tf[k]->data;
		for (size_t i = 0; i < m->n_params; i++)
			if (!isfinite(fp[i]) || (tf[k] == tv && fp[i] < 0))
				return sid_error_set_at(
				    err, SID_EFORMAT, (long)i,
				    "checkpoint: tensor %s: element %zu is %s", tf[k]->name, i,
				    isfinite(fp[i]) ? "negative" : "not finite");
	}
	memcpy(m->params, tp->data, sizeof(float) * m->n_params);
	memcpy(m->am, tm->data, sizeof(float) * m->n_params);
	memcpy(m->av, tv->data, sizeof(float) * m->n_params);
	memcpy(m->tw[0].last_used, tl->data, sizeof(int64_t) * lk);
	memcpy(m->tw[1].last_used, (const int64_t *)tl->data + lk, sizeof(int64_t) * lk);
	m->step = st[0];
	m->phase_step = st[1];
	m->phase = (enum das_phase)st[2];
	m->cb_ready = (int)st[3];
	for (int i = 0; i < 4; i++)
		memcpy(&m->rng.s[i], &st[4 + i], sizeof(int64_t));
	memset(m->grads, 0, sizeof(float) * m->n_params);
	m->n_rows_u = m->n_rows_i = 0;
	return 0;
}
