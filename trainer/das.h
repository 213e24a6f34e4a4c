/*
 * das.h - the DAS model: two RQ-VAE towers (user, item), the collaborative
 * ICDM tables, the MDAM alignment views, and one training step
 * (forward + backward + clip + AdamW).  The exact formulas are in
 * proto/das.md; this header is the contract the training loop (main.c and
 * friends) codes against.
 *
 * Division of labour: the loop owns data (loading, shuffling, gathering the
 * content rows of a batch, finding partners for views 5/6), evaluation,
 * files and metadata.  This file owns the numbers: parameters, gradients,
 * optimizer state, codebook initialisation, dead-code reset, the step.
 *
 * Memory: parameters, gradients, Adam m and Adam v are each ONE contiguous
 * float block of das_params_count() floats, with every named tensor a view at
 * a fixed offset (the same offset in all four blocks).
 *
 * Determinism: for a given config (seed included), data order and OpenBLAS
 * thread count, every step is bit-for-bit reproducible, and a model restored
 * from a checkpoint continues exactly as the uninterrupted one would.
 *
 * Thread-safety: a struct das_model belongs to one thread; parallelism is
 * inside OpenBLAS (set its thread count before training).
 *
 * Errors: calls return 0 or a negative SID_E* code and fill the optional
 * struct sid_error (err.h).
 */
#ifndef SID_TRAINER_DAS_H
#define SID_TRAINER_DAS_H

#include <stddef.h>
#include <stdint.h>

#include "err.h"
#include "model.h"
#include "safetensors.h"

#define DAS_MAX_HIDDEN 8
#define DAS_MAX_LEVELS 8
#define DAS_N_VIEWS    6

enum das_mode {
	DAS_MODE_DAS,	    /* everything, one stage */
	DAS_MODE_RQVAE,	    /* RQ-VAE losses only (no collaborative side at all) */
	DAS_MODE_TWO_STAGE, /* ICDM alone first, then frozen; RQ-VAE + views */
};

/* What das_step trains right now.  das: always DAS_PHASE_JOINT.  rqvae:
 * always DAS_PHASE_JOINT (with no ICDM).  two-stage: DAS_PHASE_ICDM for
 * icdm_epochs, then DAS_PHASE_JOINT with the ICDM tables and heads frozen. */
enum das_phase { DAS_PHASE_ICDM, DAS_PHASE_JOINT };

/* How the (large) ICDM embedding tables are updated. */
enum das_table_update {
	DAS_TABLE_AUTO,	 /* DENSE when both tables together hold <= 4M floats, else LAZY */
	DAS_TABLE_DENSE, /* plain AdamW on every row every step (as torch nn.Embedding) */
	DAS_TABLE_LAZY,	 /* only rows in the batch are updated (as torch SparseAdam) */
};

/* Alignment views (MDAM), index into das_config.view_w / view_on. */
enum das_view {
	DAS_VIEW_UZ_ICONTENT = 0, /* (1) z_user        <-> content half of the clicked item */
	DAS_VIEW_UINTEREST_IZ,	  /* (2) interest half  <-> z_item of the clicked item */
	DAS_VIEW_UZ_UINTEREST,	  /* (3) z_user        <-> interest half, same user */
	DAS_VIEW_IZ_ICONTENT,	  /* (4) z_item        <-> content half, same item */
	DAS_VIEW_UZ_UZ,		  /* (5) z_user(u)     <-> z_user(u2), u and u2 clicked the item */
	DAS_VIEW_IZ_IZ,		  /* (6) z_item(i)     <-> z_item(i2), both clicked by the user */
};

struct das_config {
	enum das_mode mode;
	/* towers: D_user / D_item are the content widths (from the .npy files) */
	int D_user, D_item;
	int n_hidden;		    /* 0..DAS_MAX_HIDDEN */
	int hidden[DAS_MAX_HIDDEN]; /* encoder widths D -> hidden[0] -> ... -> E; the decoder
				       mirrors them back E -> ... -> hidden[0] -> D */
	int E;			    /* latent width = size of each ICDM half */
	int L;			    /* levels, 1..DAS_MAX_LEVELS */
	int K;			    /* codewords per level */
	enum sid_act act;	    /* after every layer but the last (encoder and decoder) */
	enum sid_norm input_norm;   /* applied to content rows before the encoder */
	/* loss weights */
	float beta;		       /* commitment, 0.25 */
	float alpha;		       /* ICDM, 1 */
	float beta_align;	       /* alignment, 0.5 */
	float tau;		       /* InfoNCE temperature, 0.1 */
	float w_click, w_bias, w_orth; /* inside ICDM: 1, 1, 1 */
	float view_w[DAS_N_VIEWS];     /* 1, 1, 1, 1, 0.25, 0.25 (proto/das.md) */
	int view_on[DAS_N_VIEWS];      /* 1 each */
	int pop_correction;	       /* subtract log-popularity from click logits: 1 */
	int mask_duplicates;	       /* mask in-batch negatives sharing the user or item: 1 */
	/* optimisation */
	float lr;			  /* 1e-3, peak */
	float lr_icdm_mult;		  /* the ICDM tables and heads use lr * this: 30 */
	float lr_min_ratio;		  /* cosine floor as a fraction of lr: 0.1 */
	int warmup_steps;		  /* linear warm-up: 50 */
	float weight_decay;		  /* decoupled (AdamW): 1e-4 */
	float adam_b1, adam_b2, adam_eps; /* 0.9, 0.999, 1e-8 */
	float clip_norm;		  /* global grad-norm clip, 1.0; <= 0 disables */
	float init_std_table;		  /* ICDM table init N(0, s^2): 0.1 */
	enum das_table_update table_update;
	/* schedule (the loop drives epochs; the lr schedule needs them) */
	int epochs;	 /* joint phase: 20 */
	int icdm_epochs; /* two-stage phase 1: 10 */
	int batch_size;	 /* 1024 */
	/* codebooks */
	int kmeans_iters;  /* Lloyd iterations at init: 25 */
	int kmeans_sample; /* at most this many rows per tower for the init: 65536 */
	int dead_steps;	   /* reset a code unused for this many steps; 0 disables: 40 */
	uint64_t seed;	   /* 42 */
};

/* Fill @c with the defaults above (the reference-run setting of issue 4, with
 * D_user = D_item = 0: the loop sets them from its data). */
void das_config_defaults(struct das_config *c);

/*
 * Set one config key from a string, as given in a config file or as a
 * command-line flag (--key value).  Keys are the field names above, plus
 * "mode" (das|rqvae|two-stage), "hidden" ("256,128", or "" for none),
 * "activation" (relu|silu|gelu|tanh|identity), "input_norm" (none|l2),
 * "latent_dim" (= E), "levels" (= L), "codebook_size" (= K),
 * "view1".."view6" (weight; 0 switches the view off), "views" (all six,
 * "1,1,0,1,1,1", as das_config_json writes them),
 * "table_update" (auto|dense|lazy).  D_user and D_item, which a model's
 * config names, are the widths of the data's embeddings: set, the loop
 * checks them against its data (0, as das_config_defaults leaves them: it
 * takes the data's).  Unknown keys and bad values fail with SID_EINVAL
 * naming the key.
 */
int das_config_set(struct das_config *c, const char *key, const char *value, struct sid_error *err);
/* 1 when @key (spelt with '_') is one of das_config_set's keys. */
int das_config_known(const char *key);
/* Offer every key of das_config_set to @n (err.h's "did you mean"), each
 * setting by its first name (latent_dim, not E). */
void das_config_names(struct sid_nearest *n);
/* The name of the setting @key (spelt with '_') sets: "latent_dim" for
 * "E", "levels" for "L", "codebook_size" for "K"; @key itself otherwise. */
const char *das_config_canonical(const char *key);

/* Check ranges and consistency (dims > 0, K >= 2, tau > 0, ...).  0 or SID_EINVAL. */
int das_config_check(const struct das_config *c, struct sid_error *err);

/* The config as a JSON object (malloc'ed NUL-terminated; NULL on ENOMEM),
 * for the model metadata and checkpoints.  Floats are written as the
 * shortest decimal that reads back as the same float (das_float_str). */
char *das_config_json(const struct das_config *c);
/* The same without D_user and D_item: the settings, every key of it one
 * das_config_set takes (`semid-train --help`'s "Model defaults", a valid
 * --config file). */
char *das_config_settings_json(const struct das_config *c);

/* @v as the shortest string of %.6g to %.9g that strtof reads back as @v:
 * "0.001" for 0.001f, not %.9g's "0.00100000005".  Returns @buf. */
#define DAS_FLOAT_STR 24
const char *das_float_str(float v, char buf[DAS_FLOAT_STR]);

/* Per-data facts the model needs. */
struct das_data {
	int n_users, n_items;
	long n_train;		   /* interactions; steps per epoch = max(1, n_train / batch_size)
				      (the loop drops the last partial batch) */
	const float *item_pop_log; /* (n_items) log(1 + train clicks of the item) */
	const float *user_act_log; /* (n_users) log(1 + train clicks of the user) */
};

struct das_model;

/* Build a model with freshly initialised parameters (deterministic in
 * c->seed).  Copies what it needs from @c and @d.  Codebooks start at zero
 * until das_init_codebooks.  A model whose parameter blocks, batch
 * workspace (for min(batch_size, n_train) rows) and codebook initialisation
 * (k-means on up to kmeans_sample rows per tower) would not fit in this
 * machine's memory (or its cgroup limit) is refused with SID_EINVAL and the
 * sizes in the message, before anything large is allocated.  A stop asked
 * for (stop.h) while it fills the ICDM tables fails it (tr_stop_error). */
int das_new(const struct das_config *c, const struct das_data *d, struct das_model **out,
	    struct sid_error *err);
void das_free(struct das_model *m); /* NULL: no-op */

const struct das_config *das_config_of(const struct das_model *m);

/*
 * k-means++ + Lloyd codebook initialisation for both towers on the first
 * latents (the current encoder's outputs): level 0 on the latents, level l on
 * the residuals after level l-1.  @user_x is (n_user_rows, D_user), @item_x
 * (n_item_rows, D_item): a sample of content rows the loop picked (up to
 * kmeans_sample each; all rows when the data is small).  Rows need not be
 * distinct.  Call once before the first joint step (in two-stage: after
 * switching to DAS_PHASE_JOINT).  das_step refuses to train the RQ-VAE before
 * it (SID_EINVAL).  Fewer rows than K is fine (codes are then duplicated rows
 * plus jitter).
 */
int das_init_codebooks(struct das_model *m, const float *user_x, int n_user_rows,
		       const float *item_x, int n_item_rows, struct sid_error *err);
int das_codebooks_ready(const struct das_model *m);

/* Phase control (two-stage).  Switching to DAS_PHASE_JOINT freezes the ICDM
 * tables and heads (their Adam state is kept but no longer used) and restarts
 * the lr schedule.  das and rqvae start (and stay) in DAS_PHASE_JOINT;
 * two-stage starts in DAS_PHASE_ICDM. */
int das_phase_set(struct das_model *m, enum das_phase p, struct sid_error *err);
enum das_phase das_phase_get(const struct das_model *m);

/* Whether das_step needs the partner fields (views 5 / 6) of a batch. */
int das_needs_user_partner(const struct das_model *m);
int das_needs_item_partner(const struct das_model *m);

/*
 * One batch of B training interactions (user[b] clicked item[b]) with the
 * content rows gathered by the loop.  B may be anything from 2 up; the
 * schedule assumes batch_size.  Partner fields: user2[b] is another user who
 * clicked item[b] (or -1 when there is none: row b then drops out of view 5),
 * item2[b] another item user[b] clicked (or -1: out of view 6); they are only
 * read when das_needs_*_partner says so, and may be NULL otherwise.
 * Content rows are read for every mode (in DAS_PHASE_ICDM they are ignored).
 */
struct das_batch {
	int B;
	const int32_t *user;  /* (B) */
	const int32_t *item;  /* (B) */
	const float *user_x;  /* (B, D_user) content of user[b] */
	const float *item_x;  /* (B, D_item) content of item[b] */
	const int32_t *user2; /* (B) or NULL */
	const float *user2_x; /* (B, D_user); rows with user2[b] < 0 may hold anything finite */
	const int32_t *item2; /* (B) or NULL */
	const float *item2_x; /* (B, D_item) */
};

/* Loss components of one step (means over the batch; 0 for parts not used). */
struct das_losses {
	double total;
	double recon_user, recon_item;	    /* ||x - x_hat||^2 */
	double quant_user, quant_item;	    /* sum_l codebook + beta * commitment */
	double click, bias_user, bias_item; /* ICDM parts (unweighted) */
	double orth_user, orth_item;	    /* mean cos^2 */
	double icdm;			    /* w_click*click + w_bias*(..) + w_orth*(..) */
	double view[DAS_N_VIEWS];	    /* symmetric InfoNCE of each view (unweighted) */
	double align;			    /* sum_v view_w[v] * view[v] */
	double grad_norm;		    /* before clipping */
	double lr;			    /* used in this step */
	int used_user[DAS_MAX_LEVELS];	    /* distinct codes in this batch, per level */
	int used_item[DAS_MAX_LEVELS];
	int resets; /* dead codes re-seeded after this step */
};

/*
 * Forward, backward, global-norm clip, AdamW update and dead-code reset on one
 * batch.  Fails (SID_EINVAL, nothing changed) on an index out of range or a
 * non-finite content value (err->index = the batch row), or when the loss
 * becomes non-finite (then the parameters are left as before the step).
 */
int das_step(struct das_model *m, const struct das_batch *b, struct das_losses *out,
	     struct sid_error *err);

/* Forward only, no update: the same losses das_step would report for @b. */
int das_eval_losses(struct das_model *m, const struct das_batch *b, struct das_losses *out,
		    struct sid_error *err);

/* Steps taken so far (all phases). */
long das_step_count(const struct das_model *m);

/* Length of the current phase's lr schedule: steps per epoch (n_train /
 * batch_size, at least 1) times epochs (or icdm_epochs in DAS_PHASE_ICDM). */
long das_steps_per_phase(const struct das_model *m);

/*
 * Write the trained model into @w in the model-file profile
 * (proto/model-format.md): user.encoder.{i}.weight (out, in) / .bias (out),
 * user.codebook.{l} (K, E), the same for item; plus extra tensors the
 * encoder ignores: {tower}.decoder.{i}.weight/bias, icdm.user (n_users, 2E:
 * [interest | conformity]), icdm.item (n_items, 2E: [content | popularity]),
 * icdm.head.{user,item}.weight (E) / .bias (1).  The two ID tables go in
 * only with @tables (they grow with the data: 512 MB at 1M users and 1M
 * items, which a server would read on every swap for nothing; the
 * checkpoint always has them).  In rqvae mode the icdm.* tensors are left
 * out.  The "semid" metadata is the caller's to add.
 */
int das_export(const struct das_model *m, int tables, struct sid_st_writer *w,
	       struct sid_error *err);

/*
 * Checkpoints.  das_checkpoint_add puts everything needed to resume bit for
 * bit into @w: "das.params", "das.adam_m", "das.adam_v" (F32, flat blocks),
 * "das.state" (I64: step counters, phase, codebook-ready flag, RNG state,
 * ...), "das.code_last_used" (I64) and the config as metadata "das_config".
 * The three blocks are borrowed (sid_st_writer_add_borrowed), not copied:
 * @m must outlive @w and not train while @w holds them.  The caller adds
 * its own tensors/metadata (epoch, data RNG) and publishes.
 * das_checkpoint_restore loads them into a model created by das_new with the
 * same config and data sizes; a mismatch fails with SID_EFORMAT naming the
 * tensor.
 */
int das_checkpoint_add(const struct das_model *m, struct sid_st_writer *w, struct sid_error *err);
int das_checkpoint_restore(struct das_model *m, const struct sid_st_file *f, struct sid_error *err);

/*
 * Test hooks.  das_grad runs forward and backward only: the (unclipped)
 * gradient of the total loss is left in das_grads(), nothing is updated.
 * das_debug_freeze(m, 1) makes later forwards keep the codes and every
 * stop-gradient operand of the last forward (see nn.h, struct nn_rq), so the
 * total loss becomes a smooth function of all parameters and das_grad's
 * result can be checked by finite differences; das_step refuses to run while
 * frozen.
 */
int das_grad(struct das_model *m, const struct das_batch *b, struct das_losses *out,
	     struct sid_error *err);
void das_debug_freeze(struct das_model *m, int on);

/* Raw access (tests, tools): the flat blocks of das_params_count() floats. */
size_t das_params_count(const struct das_model *m);
float *das_params(struct das_model *m);
float *das_grads(struct das_model *m);
float *das_adam_m(struct das_model *m);
float *das_adam_v(struct das_model *m);

/* A named tensor view (e.g. "item.encoder.0.weight", "icdm.user",
 * "user.codebook.1"): offset into the blocks and element count; -1 if absent. */
long das_tensor_find(const struct das_model *m, const char *name, size_t *n);

#endif
