/*
 * check_das.c - tests for trainer/das.c: every loss of a step against
 * proto/das.md's formulas computed by hand from the tensors, two steps
 * against its AdamW by hand, the full training-step gradient against
 * finite differences of the total loss, phase and mode gradient masks, a
 * tiny training run (losses fall, codebooks used), bit-exact determinism
 * and checkpoint resume, the exported model file (loaded by the core loader
 * and encoded by the core encoder), config keys and bad batches.
 *
 * The full-gradient check: the straight-through estimator makes the analytic
 * gradient differ from the true derivative of the loss (the codes are
 * piecewise constant).  das_debug_freeze keeps the codes and every
 * stop-gradient operand (sg(z), sg(r_l), sg(e_l), sg(q)) at their values
 * from the base point, so each sg(x) becomes a constant and the total loss a
 * smooth function of every parameter whose exact gradient is what das_grad
 * computes.  At the base point the frozen forward equals the normal one, so
 * the check covers the real step's gradient; the pieces (quantizer with and
 * without freezing) are also checked in check_nn.c.
 */
#include <check.h>
#include "check_main.h"
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "das.h"
#include "encode.h"
#include "model.h"
#include "rng.h"
#include "safetensors.h"

/* ------------------------------------------------------------ a tiny world */

struct world {
	int n_users, n_items, Du, Di;
	float *ux, *ix;	  /* content */
	float *pop, *act; /* log(1 + clicks) */
	int32_t *pu, *pi; /* interactions */
	int n_inter;
	int32_t *u_items[64]; /* per-user item lists (for partners) */
	int u_n[64];
	int32_t *i_users[64];
	int i_n[64];
};

/* Users and items live in 4 taste clusters; a user clicks items of its
 * cluster (popular ones more often). */
static void world_make(struct world *w, int n_users, int n_items, int Du, int Di, int per_user,
		       uint64_t seed)
{
	struct rng r;
	rng_seed(&r, seed);
	memset(w, 0, sizeof(*w));
	w->n_users = n_users;
	w->n_items = n_items;
	w->Du = Du;
	w->Di = Di;
	w->ux = malloc(sizeof(float) * n_users * Du);
	w->ix = malloc(sizeof(float) * n_items * Di);
	w->pop = calloc(n_items, sizeof(float));
	w->act = calloc(n_users, sizeof(float));
	float cu[4][64], ci[4][64];
	for (int k = 0; k < 4; k++) {
		for (int j = 0; j < Du; j++)
			cu[k][j] = rng_normal(&r);
		for (int j = 0; j < Di; j++)
			ci[k][j] = rng_normal(&r);
	}
	for (int u = 0; u < n_users; u++)
		for (int j = 0; j < Du; j++)
			w->ux[u * Du + j] = cu[u % 4][j] + 0.3f * rng_normal(&r);
	for (int i = 0; i < n_items; i++)
		for (int j = 0; j < Di; j++)
			w->ix[i * Di + j] = ci[i % 4][j] + 0.3f * rng_normal(&r);
	w->n_inter = n_users * per_user;
	w->pu = malloc(sizeof(int32_t) * w->n_inter);
	w->pi = malloc(sizeof(int32_t) * w->n_inter);
	int *cnt_i = calloc(n_items, sizeof(int)), *cnt_u = calloc(n_users, sizeof(int));
	for (int u = 0; u < n_users; u++) {
		w->u_items[u] = malloc(sizeof(int32_t) * per_user);
		for (int k = 0; k < per_user; k++) {
			/* items of cluster u%4: i = u%4 + 4*m, skewed toward small m */
			int nm = (n_items - u % 4 + 3) / 4;
			double x = rng_double(&r);
			int mm = (int)(x * x * nm);
			int it = u % 4 + 4 * mm;
			w->pu[u * per_user + k] = u;
			w->pi[u * per_user + k] = it;
			w->u_items[u][k] = it;
			cnt_i[it]++;
			cnt_u[u]++;
		}
		w->u_n[u] = per_user;
	}
	for (int i = 0; i < n_items; i++) {
		w->pop[i] = logf(1.0f + (float)cnt_i[i]);
		w->i_users[i] = malloc(sizeof(int32_t) * (cnt_i[i] + 1));
		w->i_n[i] = 0;
	}
	for (int u = 0; u < n_users; u++)
		w->act[u] = logf(1.0f + (float)cnt_u[u]);
	for (int k = 0; k < w->n_inter; k++)
		w->i_users[w->pi[k]][w->i_n[w->pi[k]]++] = w->pu[k];
	free(cnt_i);
	free(cnt_u);
}

static void world_free(struct world *w)
{
	for (int u = 0; u < w->n_users; u++)
		free(w->u_items[u]);
	for (int i = 0; i < w->n_items; i++)
		free(w->i_users[i]);
	free(w->ux);
	free(w->ix);
	free(w->pop);
	free(w->act);
	free(w->pu);
	free(w->pi);
}

struct batchbuf {
	struct das_batch b;
	int32_t u[256], i[256], u2[256], i2[256];
	float *ux, *ix, *u2x, *i2x;
};

/* Batch @k of size B from a fixed permutation; partners picked by @r. */
static void batch_make(struct batchbuf *bb, const struct world *w, const int32_t *perm, int k,
		       int B, struct rng *r)
{
	if (!bb->ux) {
		bb->ux = malloc(sizeof(float) * 256 * w->Du);
		bb->u2x = malloc(sizeof(float) * 256 * w->Du);
		bb->ix = malloc(sizeof(float) * 256 * w->Di);
		bb->i2x = malloc(sizeof(float) * 256 * w->Di);
	}
	for (int b = 0; b < B; b++) {
		int e = perm[(k * B + b) % w->n_inter];
		int u = w->pu[e], it = w->pi[e];
		bb->u[b] = u;
		bb->i[b] = it;
		int u2 = w->i_users[it][rng_below(r, w->i_n[it])];
		int i2 = w->u_items[u][rng_below(r, w->u_n[u])];
		bb->u2[b] = u2 == u ? -1 : u2;
		bb->i2[b] = i2 == it ? -1 : i2;
		memcpy(bb->ux + b * w->Du, w->ux + u * w->Du, sizeof(float) * w->Du);
		memcpy(bb->ix + b * w->Di, w->ix + it * w->Di, sizeof(float) * w->Di);
		memcpy(bb->u2x + b * w->Du, w->ux + (u2 < 0 ? 0 : u2) * w->Du,
		       sizeof(float) * w->Du);
		memcpy(bb->i2x + b * w->Di, w->ix + (i2 < 0 ? 0 : i2) * w->Di,
		       sizeof(float) * w->Di);
	}
	bb->b =
	    (struct das_batch){B, bb->u, bb->i, bb->ux, bb->ix, bb->u2, bb->u2x, bb->i2, bb->i2x};
}

static void batch_free(struct batchbuf *bb)
{
	free(bb->ux);
	free(bb->ix);
	free(bb->u2x);
	free(bb->i2x);
}

static void tiny_config(struct das_config *c, const struct world *w, enum das_mode mode)
{
	das_config_defaults(c);
	c->mode = mode;
	c->D_user = w->Du;
	c->D_item = w->Di;
	c->n_hidden = 1;
	c->hidden[0] = 7;
	c->E = 4;
	c->L = 2;
	c->K = 4;
	c->act = SID_ACT_TANH;
	c->batch_size = 8;
	c->epochs = 2;
	c->icdm_epochs = 1;
	c->warmup_steps = 2;
	c->init_std_table = 0.5f;
}

static struct das_model *model_new(const struct das_config *c, const struct world *w)
{
	struct das_data d = {w->n_users, w->n_items, w->n_inter, w->pop, w->act};
	struct das_model *m = NULL;
	struct sid_error err;
	int rc = das_new(c, &d, &m, &err);
	ck_assert_msg(rc == 0, "das_new: %s", err.msg);
	return m;
}

static void init_cb(struct das_model *m, const struct world *w)
{
	struct sid_error err;
	int rc = das_init_codebooks(m, w->ux, w->n_users, w->ix, w->n_items, &err);
	ck_assert_msg(rc == 0, "init codebooks: %s", err.msg);
}

/* ------------------------------------------------------------ gradient check */

struct fd_ctx {
	struct das_model *m;
	const struct das_batch *b;
};

static double total_loss(struct fd_ctx *c)
{
	struct das_losses l;
	struct sid_error err;
	int rc = das_eval_losses(c->m, c->b, &l, &err);
	ck_assert_msg(rc == 0, "eval: %s", err.msg);
	return l.total;
}

/* Check every parameter of @m below @limit (the frozen ICDM side of
 * two-stage's second phase is left out: it moves the loss but is not trained);
 * returns how many had a non-zero gradient. */
static int full_fd_upto(struct das_model *m, const struct das_batch *b, const char *what,
			size_t limit)
{
	struct das_losses l0, l1;
	struct sid_error err;
	size_t n = das_params_count(m);
	float *g = malloc(sizeof(float) * n);
	ck_assert_int_eq(das_grad(m, b, &l0, &err), 0);
	das_debug_freeze(m, 1);
	ck_assert_int_eq(das_grad(m, b, &l1, &err), 0);
	/* at the base point the frozen forward is the real one */
	ck_assert_double_eq_tol(l0.total, l1.total, 1e-5 * fabs(l0.total) + 1e-6);
	memcpy(g, das_grads(m), sizeof(float) * n);
	float *p = das_params(m);
	struct fd_ctx c = {m, b};
	int nonzero = 0;
	double worst = 0, wa = 0, wn = 0;
	size_t wi = 0;
	const float eps = 1e-3f;
	for (size_t i = 0; i < n && i < limit; i++) {
		float keep = p[i];
		p[i] = keep + eps;
		double fp = total_loss(&c);
		p[i] = keep - eps;
		double fm = total_loss(&c);
		p[i] = keep;
		double num = (fp - fm) / (2.0 * eps);
		double tol = 3e-3 + 2e-2 * fmax(fabs(num), fabs(g[i]));
		double bad = fabs(num - g[i]) / tol;
		nonzero += g[i] != 0;
		if (bad > worst) {
			worst = bad;
			wi = i;
			wa = g[i];
			wn = num;
		}
	}
	ck_assert_msg(worst <= 1.0, "%s: parameter %zu: analytic %.6g vs numeric %.6g", what, wi,
		      wa, wn);
	das_debug_freeze(m, 0);
	free(g);
	return nonzero;
}

static int full_fd(struct das_model *m, const struct das_batch *b, const char *what)
{
	return full_fd_upto(m, b, what, das_params_count(m));
}

/* Is the gradient of tensor @name entirely zero? */
static int tensor_grad_zero(struct das_model *m, const char *name)
{
	size_t n;
	long off = das_tensor_find(m, name, &n);
	ck_assert_msg(off >= 0, "no tensor %s", name);
	for (size_t i = 0; i < n; i++)
		if (das_grads(m)[off + i] != 0)
			return 0;
	return 1;
}

START_TEST(test_full_gradient_das)
{
	struct world w;
	struct das_config c;
	struct batchbuf bb = {0};
	struct rng r;
	world_make(&w, 10, 12, 6, 5, 3, 1);
	tiny_config(&c, &w, DAS_MODE_DAS);
	c.w_bias = 0.7f; /* unequal weights so each part is scaled by its own */
	c.view_w[2] = 0.6f;
	struct das_model *m = model_new(&c, &w);
	init_cb(m, &w);
	int32_t perm[30];
	for (int i = 0; i < 30; i++)
		perm[i] = (i * 7) % 30;
	rng_seed(&r, 2);
	batch_make(&bb, &w, perm, 0, 8, &r);
	ck_assert(das_needs_user_partner(m) && das_needs_item_partner(m));
	int nz = full_fd(m, &bb.b, "das");
	/* every part contributed: encoder, decoder, codebooks, heads, tables */
	ck_assert(!tensor_grad_zero(m, "user.encoder.0.weight"));
	ck_assert(!tensor_grad_zero(m, "item.decoder.1.weight"));
	ck_assert(!tensor_grad_zero(m, "user.codebook.1"));
	ck_assert(!tensor_grad_zero(m, "item.codebook.0"));
	ck_assert(!tensor_grad_zero(m, "icdm.head.user.weight"));
	ck_assert(!tensor_grad_zero(m, "icdm.item"));
	ck_assert_int_gt(nz, (int)das_params_count(m) / 2);
	das_free(m);
	batch_free(&bb);
	world_free(&w);
}
END_TEST

START_TEST(test_full_gradient_variants)
{
	struct world w;
	struct das_config c;
	struct batchbuf bb = {0};
	struct rng r;
	struct sid_error err;
	struct das_losses l;
	world_make(&w, 10, 12, 6, 5, 3, 2);
	int32_t perm[30];
	for (int i = 0; i < 30; i++)
		perm[i] = (i * 11) % 30;
	rng_seed(&r, 3);
	batch_make(&bb, &w, perm, 1, 8, &r);

	/* rqvae: semantic loss only, no ICDM tensors at all */
	tiny_config(&c, &w, DAS_MODE_RQVAE);
	c.act = SID_ACT_GELU;
	c.input_norm = SID_NORM_L2;
	struct das_model *m = model_new(&c, &w);
	ck_assert_int_lt(das_tensor_find(m, "icdm.user", NULL), 0);
	init_cb(m, &w);
	full_fd(m, &bb.b, "rqvae");
	ck_assert_int_eq(das_grad(m, &bb.b, &l, &err), 0);
	ck_assert_double_eq(l.align, 0);
	ck_assert_double_eq(l.icdm, 0);
	ck_assert_double_gt(l.recon_item, 0);
	das_free(m);

	/* two-stage, phase 1: only the ICDM side has gradients */
	tiny_config(&c, &w, DAS_MODE_TWO_STAGE);
	c.pop_correction = 0;
	c.mask_duplicates = 0;
	m = model_new(&c, &w);
	ck_assert_int_eq(das_phase_get(m), DAS_PHASE_ICDM);
	ck_assert(!das_needs_user_partner(m));
	full_fd(m, &bb.b, "two-stage icdm");
	ck_assert(tensor_grad_zero(m, "user.encoder.0.weight"));
	ck_assert(!tensor_grad_zero(m, "icdm.user"));
	/* phase 2: towers and alignment train, the frozen ICDM side gets nothing */
	ck_assert_int_eq(das_phase_set(m, DAS_PHASE_JOINT, &err), 0);
	init_cb(m, &w);
	full_fd_upto(m, &bb.b, "two-stage joint",
		     (size_t)das_tensor_find(m, "icdm.head.user.weight", NULL));
	ck_assert(tensor_grad_zero(m, "icdm.user"));
	ck_assert(tensor_grad_zero(m, "icdm.head.item.weight"));
	ck_assert(!tensor_grad_zero(m, "item.encoder.0.weight"));
	ck_assert_int_eq(das_grad(m, &bb.b, &l, &err), 0);
	ck_assert_double_gt(l.align, 0);
	ck_assert_double_eq(l.click, 0);
	das_free(m);

	/* das with views 5 and 6 off and lazy tables */
	tiny_config(&c, &w, DAS_MODE_DAS);
	c.view_on[4] = c.view_on[5] = 0;
	c.table_update = DAS_TABLE_LAZY;
	m = model_new(&c, &w);
	ck_assert(!das_needs_user_partner(m) && !das_needs_item_partner(m));
	init_cb(m, &w);
	bb.b.user2 = bb.b.item2 = NULL;
	full_fd(m, &bb.b, "das views 1-4 lazy");
	das_free(m);
	batch_free(&bb);
	world_free(&w);
}
END_TEST

START_TEST(test_lazy_tables)
{
	/* lazy and dense table updates agree on the rows a step touched; rows it
	 * did not touch stay put (lazy) or only decay (dense, first step: m = v = 0) */
	struct world w;
	struct das_config c;
	struct batchbuf bb = {0};
	struct rng r;
	struct sid_error err;
	world_make(&w, 10, 12, 6, 5, 3, 9);
	tiny_config(&c, &w, DAS_MODE_DAS);
	c.weight_decay = 0.1f;
	c.clip_norm =
	    0; /* the clip factor would differ: dense counts no extra rows, but keep it simple */
	struct das_model *md = model_new(&c, &w);
	c.table_update = DAS_TABLE_LAZY;
	struct das_model *ml = model_new(&c, &w);
	init_cb(md, &w);
	init_cb(ml, &w);
	ck_assert_mem_eq(das_params(md), das_params(ml), das_params_count(md) * sizeof(float));
	int32_t perm[30];
	for (int i = 0; i < 30; i++)
		perm[i] = i;
	rng_seed(&r, 4);
	batch_make(&bb, &w, perm, 0, 8, &r);
	size_t n;
	long off = das_tensor_find(md, "icdm.user", &n);
	float *before = malloc(sizeof(float) * n);
	memcpy(before, das_params(md) + off, sizeof(float) * n);
	struct das_losses l;
	ck_assert_int_eq(das_step(md, &bb.b, &l, &err), 0);
	ck_assert_int_eq(das_step(ml, &bb.b, &l, &err), 0);
	const float *pd = das_params(md) + off, *pl = das_params(ml) + off;
	int touched[10] = {0};
	for (int b = 0; b < 8; b++)
		touched[bb.u[b]] = 1;
	for (int u = 0; u < 10; u++)
		for (int j = 0; j < 8; j++) {
			size_t k = (size_t)u * 8 + j;
			if (touched[u]) {
				ck_assert_float_eq(pd[k], pl[k]);
				ck_assert_float_ne(pl[k], before[k]);
			} else {
				ck_assert_float_eq(pl[k], before[k]);
				ck_assert_float_eq_tol(pd[k],
						       before[k] *
							   (1.0f - 0.5f * c.lr * c.lr_icdm_mult *
								       0.1f) /* warm-up: lr/2 */,
						       1e-7f);
			}
		}
	/* a forward-only evaluation between steps changes nothing */
	struct das_model *ma = model_new(&c, &w), *mb = model_new(&c, &w);
	init_cb(ma, &w);
	init_cb(mb, &w);
	struct batchbuf b2 = {0};
	batch_make(&b2, &w, perm, 1, 8, &r);
	ck_assert_int_eq(das_step(ma, &bb.b, &l, &err), 0);
	ck_assert_int_eq(das_step(mb, &bb.b, &l, &err), 0);
	ck_assert_int_eq(das_eval_losses(ma, &b2.b, &l, &err), 0);
	ck_assert_int_eq(das_step(ma, &b2.b, &l, &err), 0);
	ck_assert_int_eq(das_step(mb, &b2.b, &l, &err), 0);
	ck_assert_mem_eq(das_params(ma), das_params(mb), das_params_count(ma) * sizeof(float));
	das_free(ma);
	das_free(mb);
	batch_free(&b2);
	/* the towers are the same in both */
	long oe = das_tensor_find(md, "item.encoder.0.weight", &n);
	ck_assert_mem_eq(das_params(md) + oe, das_params(ml) + oe, n * sizeof(float));
	free(before);
	das_free(md);
	das_free(ml);
	batch_free(&bb);
	world_free(&w);
}
END_TEST

/* ------------------------------------------------------------ training */

static void train(struct das_model *m, const struct world *w, const int32_t *perm, int k0, int k1,
		  int B, struct rng *r, struct das_losses *first, struct das_losses *last)
{
	struct batchbuf bb = {0};
	struct sid_error err;
	struct das_losses l;
	for (int k = k0; k < k1; k++) {
		batch_make(&bb, w, perm, k, B, r);
		int rc = das_step(m, &bb.b, &l, &err);
		ck_assert_msg(rc == 0, "step %d: %s", k, err.msg);
		ck_assert(isfinite(l.total));
		if (k == k0 && first)
			*first = l;
		if (last)
			*last = l;
	}
	batch_free(&bb);
}

START_TEST(test_training_run)
{
	struct world w;
	struct das_config c;
	struct rng r;
	world_make(&w, 40, 48, 16, 12, 8, 4);
	das_config_defaults(&c);
	c.D_user = 16;
	c.D_item = 12;
	c.n_hidden = 1;
	c.hidden[0] = 24;
	c.E = 8;
	c.L = 2;
	c.K = 8;
	c.batch_size = 32;
	c.epochs = 20;
	c.warmup_steps = 5;
	c.lr = 3e-3f;
	c.dead_steps = 10;
	struct das_model *m = model_new(&c, &w);
	init_cb(m, &w);
	int32_t perm[320];
	for (int i = 0; i < 320; i++)
		perm[i] = i;
	rng_seed(&r, 5);
	rng_shuffle_i32(&r, perm, 320);
	/* average the first and last 10 steps */
	struct das_losses a, z;
	double t0 = 0, t1 = 0, click0 = 0, click1 = 0, rec0 = 0, rec1 = 0;
	for (int k = 0; k < 10; k++) {
		train(m, &w, perm, k, k + 1, 32, &r, &a, &z);
		t0 += a.total;
		click0 += a.click;
		rec0 += a.recon_item;
	}
	train(m, &w, perm, 10, 190, 32, &r, NULL, NULL);
	int used = 0;
	for (int k = 190; k < 200; k++) {
		train(m, &w, perm, k, k + 1, 32, &r, &a, &z);
		t1 += a.total;
		click1 += a.click;
		rec1 += a.recon_item;
		used = a.used_item[0] > used ? a.used_item[0] : used;
	}
	ck_assert_msg(t1 < 0.8 * t0, "total loss %g -> %g", t0 / 10, t1 / 10);
	ck_assert_msg(click1 < click0, "click loss %g -> %g", click0 / 10, click1 / 10);
	ck_assert_msg(rec1 < rec0, "recon %g -> %g", rec0 / 10, rec1 / 10);
	ck_assert_int_gt(used, 1);
	ck_assert_int_gt(a.used_user[0], 1);
	ck_assert_int_eq(das_step_count(m), 200);
	das_free(m);
	world_free(&w);
}
END_TEST

START_TEST(test_resume_bit_exact)
{
	struct world w;
	struct das_config c;
	struct rng r1, r2;
	struct sid_error err;
	world_make(&w, 20, 24, 6, 5, 6, 6);
	tiny_config(&c, &w, DAS_MODE_DAS);
	c.batch_size = 16;
	c.dead_steps = 3; /* make resets (and their RNG draws) happen */
	int32_t perm[120];
	for (int i = 0; i < 120; i++)
		perm[i] = (i * 37) % 120;

	struct das_model *a = model_new(&c, &w);
	init_cb(a, &w);
	rng_seed(&r1, 9);
	train(a, &w, perm, 0, 12, 16, &r1, NULL, NULL);

	struct das_model *b = model_new(&c, &w);
	init_cb(b, &w);
	rng_seed(&r2, 9);
	train(b, &w, perm, 0, 6, 16, &r2, NULL, NULL);
	struct sid_st_writer *wr = sid_st_writer_new();
	ck_assert_int_eq(das_checkpoint_add(b, wr, &err), 0);
	uint8_t *buf;
	size_t len;
	ck_assert_int_eq(sid_st_writer_serialize(wr, &buf, &len, &err), 0);
	sid_st_writer_free(wr);
	das_free(b);

	/* a fresh model (different seed even) restored from the checkpoint */
	c.seed = 999;
	struct das_model *b2 = model_new(&c, &w);
	struct sid_st_file f;
	ck_assert_int_eq(sid_st_parse(buf, len, &f, &err), 0);
	ck_assert_int_eq(das_checkpoint_restore(b2, &f, &err), 0);
	ck_assert_ptr_nonnull(sid_st_meta_get(&f, "das_config"));
	sid_st_file_release(&f);
	free(buf);
	ck_assert(das_codebooks_ready(b2));
	train(b2, &w, perm, 6, 12, 16, &r2, NULL, NULL);
	ck_assert_int_eq(das_step_count(b2), 12);
	size_t n = das_params_count(a);
	ck_assert_mem_eq(das_params(a), das_params(b2), n * sizeof(float));
	ck_assert_mem_eq(das_adam_m(a), das_adam_m(b2), n * sizeof(float));
	ck_assert_mem_eq(das_adam_v(a), das_adam_v(b2), n * sizeof(float));

	/* a checkpoint for another shape is refused, naming the tensor */
	c.K = 5;
	struct das_model *o = model_new(&c, &w);
	wr = sid_st_writer_new();
	ck_assert_int_eq(das_checkpoint_add(a, wr, &err), 0);
	ck_assert_int_eq(sid_st_writer_serialize(wr, &buf, &len, &err), 0);
	sid_st_writer_free(wr);
	ck_assert_int_eq(sid_st_parse(buf, len, &f, &err), 0);
	ck_assert_int_eq(das_checkpoint_restore(o, &f, &err), SID_EFORMAT);
	ck_assert_ptr_nonnull(strstr(err.msg, "das.params"));
	sid_st_file_release(&f);
	free(buf);
	das_free(o);
	das_free(a);
	das_free(b2);
	world_free(&w);
}
END_TEST

/* A checkpoint whose Adam moments hold a NaN (or an Inf, or a negative
 * second moment, a mean of squares) resumed, and training failed steps
 * later with "the loss is not finite", naming neither the file nor the
 * tensor: refused at restore, naming the tensor and the element, the model
 * untouched.  Loop _i: das.params, das.adam_m, das.adam_v; each with NaN,
 * Inf, and -1 (a refusal for the second moment only). */
START_TEST(test_checkpoint_values_checked)
{
	static const char *names[3] = {"das.params", "das.adam_m", "das.adam_v"};
	const float bad[3] = {NAN, INFINITY, -1.0f};
	struct world w;
	struct das_config c;
	struct rng r;
	struct sid_error err;
	int32_t perm[120];

	world_make(&w, 20, 24, 6, 5, 6, 6);
	tiny_config(&c, &w, DAS_MODE_DAS);
	c.batch_size = 16;
	for (int i = 0; i < 120; i++)
		perm[i] = (i * 37) % 120;
	struct das_model *a = model_new(&c, &w);
	init_cb(a, &w);
	rng_seed(&r, 9);
	train(a, &w, perm, 0, 3, 16, &r, NULL, NULL); /* moments not all zero */
	size_t n = das_params_count(a);
	for (int b = 0; b < 3; b++) {
		struct sid_st_writer *wr = sid_st_writer_new();
		struct sid_st_file f;
		uint8_t *buf;
		size_t len, at = n / 2;
		char want[96];
		ck_assert_int_eq(das_checkpoint_add(a, wr, &err), 0);
		ck_assert_int_eq(sid_st_writer_serialize(wr, &buf, &len, &err), 0);
		sid_st_writer_free(wr);
		ck_assert_int_eq(sid_st_parse(buf, len, &f, &err), 0);
		const struct sid_st_tensor *t = sid_st_find(&f, names[_i]);
		ck_assert_ptr_nonnull(t);
		/* the parsed tensor points into buf, which is ours */
		memcpy((uint8_t *)buf + ((const uint8_t *)t->data - buf) + at * sizeof(float),
		       &bad[b], sizeof(float));

		struct das_model *o = model_new(&c, &w);
		float before = das_adam_v(o)[0];
		int rc = das_checkpoint_restore(o, &f, &err);
		if (b == 2 && _i != 2) { /* a negative parameter or first moment is fine */
			ck_assert_msg(rc == 0, "%s = -1 refused: %s", names[_i], err.msg);
		} else {
			ck_assert_int_eq(rc, SID_EFORMAT);
			snprintf(want, sizeof(want), "checkpoint: tensor %s: element %zu is %s",
				 names[_i], at, b == 2 ? "negative" : "not finite");
			ck_assert_msg(strstr(err.msg, want), "\"%s\" not in \"%s\"", want, err.msg);
			ck_assert_int_eq(err.index, (long)at);
			ck_assert(das_adam_v(o)[0] == before); /* nothing restored */
			ck_assert_int_eq(das_step_count(o), 0);
		}
		das_free(o);
		sid_st_file_release(&f);
		free(buf);
	}
	das_free(a);
	world_free(&w);
}
END_TEST

/* ------------------------------------------------------------ export */

START_TEST(test_export_loads_and_encodes)
{
	struct world w;
	struct das_config c;
	struct rng r;
	struct sid_error err;
	world_make(&w, 20, 24, 6, 5, 6, 7);
	tiny_config(&c, &w, DAS_MODE_DAS);
	c.batch_size = 16;
	struct das_model *m = model_new(&c, &w);
	init_cb(m, &w);
	int32_t perm[120];
	for (int i = 0; i < 120; i++)
		perm[i] = i;
	rng_seed(&r, 1);
	train(m, &w, perm, 0, 5, 16, &r, NULL, NULL);
	struct sid_st_writer *wr = sid_st_writer_new();
	ck_assert_int_eq(das_export(m, 0, wr, &err), 0);
	ck_assert_int_eq(
	    sid_st_writer_meta(wr, "semid",
			       "{\"format_version\": 1, \"model_version\": \"t\", \"towers\": "
			       "{\"item\": {\"activation\": \"tanh\", \"input_norm\": \"none\"}, "
			       "\"user\": {\"activation\": \"tanh\", \"input_norm\": \"none\"}}}",
			       &err),
	    0);
	uint8_t *buf;
	size_t len;
	ck_assert_int_eq(sid_st_writer_serialize(wr, &buf, &len, &err), 0);
	sid_st_writer_free(wr);
	struct sid_model *sm = NULL;
	int rc = sid_model_load_buffer(buf, len, &sm, &err);
	ck_assert_msg(rc == 0, "load: %s", err.msg);
	const struct sid_tower *ti = sid_model_tower(sm, SID_TOWER_ITEM);
	ck_assert_ptr_nonnull(ti);
	ck_assert_int_eq(ti->D, 5);
	ck_assert_int_eq(ti->E, 4);
	ck_assert_int_eq(ti->n_layers, 2);
	ck_assert_int_eq(ti->L, 2);
	ck_assert_int_eq(ti->K[1], 4);
	size_t n;
	long off = das_tensor_find(m, "item.codebook.1", &n);
	ck_assert_mem_eq(ti->codebook[1], das_params(m) + off, n * sizeof(float));
	off = das_tensor_find(m, "item.encoder.0.weight", &n);
	ck_assert_mem_eq(ti->layer[0].w, das_params(m) + off, n * sizeof(float));
	/* the extra tensors are in the file too, but the ID tables only when
	 * asked for */
	struct sid_st_file f;
	ck_assert_int_eq(sid_st_parse(buf, len, &f, &err), 0);
	ck_assert_ptr_null(sid_st_find(&f, "icdm.item"));
	ck_assert_ptr_null(sid_st_find(&f, "icdm.user"));
	ck_assert_ptr_nonnull(sid_st_find(&f, "icdm.head.item.weight"));
	ck_assert_ptr_nonnull(sid_st_find(&f, "user.decoder.1.weight"));
	sid_st_file_release(&f);
	{
		uint8_t *buf2;
		size_t len2;
		struct sid_st_writer *w2 = sid_st_writer_new();
		ck_assert_int_eq(das_export(m, 1, w2, &err), 0);
		ck_assert_int_eq(sid_st_writer_serialize(w2, &buf2, &len2, &err), 0);
		sid_st_writer_free(w2);
		ck_assert_int_eq(sid_st_parse(buf2, len2, &f, &err), 0);
		const struct sid_st_tensor *t = sid_st_find(&f, "icdm.item");
		ck_assert_ptr_nonnull(t);
		ck_assert_int_eq(t->shape[0], 24);
		ck_assert_int_eq(t->shape[1], 8);
		ck_assert_ptr_nonnull(sid_st_find(&f, "icdm.user"));
		sid_st_file_release(&f);
		free(buf2);
	}

	/* codes from the core encoder = a greedy quantisation done here by hand */
	struct sid_workspace *ws = sid_workspace_new();
	int32_t codes[24 * 2];
	float quant[24 * 4], lat[24 * 4];
	struct sid_encode_out eo = {.codes = codes, .quant = quant, .latent = lat};
	ck_assert_int_eq(sid_encode(ti, w.ix, 24, &eo, ws, &err), 0);
	for (int i = 0; i < 24; i++) {
		float res[4];
		memcpy(res, lat + i * 4, sizeof(res));
		for (int l = 0; l < 2; l++) {
			int best = 0;
			double bd = INFINITY;
			for (int k = 0; k < 4; k++) {
				double d = 0;
				for (int j = 0; j < 4; j++)
					d += pow(res[j] - ti->codebook[l][k * 4 + j], 2);
				if (d < bd) {
					bd = d;
					best = k;
				}
			}
			ck_assert_int_eq(codes[i * 2 + l], best);
			for (int j = 0; j < 4; j++)
				res[j] -= ti->codebook[l][best * 4 + j];
		}
	}
	sid_workspace_free(ws);
	sid_model_unref(sm);
	free(buf);
	das_free(m);
	world_free(&w);
}
END_TEST

/* ------------------------------------------------------------ config, errors */

START_TEST(test_config_keys)
{
	struct das_config c;
	struct sid_error err;
	das_config_defaults(&c);
	ck_assert_int_eq(c.E, 32);
	ck_assert_int_eq(c.L, 3);
	ck_assert_int_eq(c.K, 64);
	ck_assert_float_eq(c.beta, 0.25f);
	ck_assert_int_eq(das_config_set(&c, "mode", "two-stage", &err), 0);
	ck_assert_int_eq(c.mode, DAS_MODE_TWO_STAGE);
	ck_assert_int_eq(das_config_set(&c, "latent-dim", "16", &err), 0);
	ck_assert_int_eq(c.E, 16);
	ck_assert_int_eq(das_config_set(&c, "hidden", "512, 64,8", &err), 0);
	ck_assert_int_eq(c.n_hidden, 3);
	ck_assert_int_eq(c.hidden[2], 8);
	ck_assert_int_eq(das_config_set(&c, "hidden", "", &err), 0);
	ck_assert_int_eq(c.n_hidden, 0);
	ck_assert_int_eq(das_config_set(&c, "view3", "0", &err), 0);
	ck_assert_int_eq(c.view_on[2], 0);
	ck_assert_int_eq(das_config_set(&c, "pop_correction", "false", &err), 0);
	ck_assert_int_eq(c.pop_correction, 0);
	ck_assert_int_eq(das_config_set(&c, "seed", "9223372036854775807", &err), 0);
	ck_assert_uint_eq(c.seed, INT64_MAX);
	/* 2^63 and above: a resume could not read the config back, and the
	 * model's metadata lost it */
	ck_assert_int_eq(das_config_set(&c, "seed", "9223372036854775808", &err), SID_EINVAL);
	ck_assert_ptr_nonnull(strstr(err.msg, "[0, 2^63)"));
	ck_assert_int_eq(das_config_set(&c, "seed", "18446744073709551615", &err), SID_EINVAL);
	ck_assert_int_eq(das_config_set(&c, "activation", "gelu", &err), 0);
	ck_assert_int_eq(c.act, SID_ACT_GELU);
	ck_assert_int_eq(das_config_set(&c, "codebook_size", "1", &err), SID_EINVAL);
	ck_assert_ptr_nonnull(strstr(err.msg, "codebook_size"));
	ck_assert_int_eq(das_config_set(&c, "lr", "fast", &err), SID_EINVAL);
	ck_assert_ptr_nonnull(strstr(err.msg, "lr"));
	ck_assert_int_eq(das_config_set(&c, "nonsense", "1", &err), SID_EINVAL);
	ck_assert_str_eq(err.msg, "config key \"nonsense\": unknown");
	/* a misspelt key is told the one near it, by its first name (not K) */
	ck_assert_int_eq(das_config_set(&c, "codebok-size", "1", &err), SID_EINVAL);
	ck_assert_str_eq(err.msg,
			 "config key \"codebok_size\": unknown (did you mean \"codebook_size\"?)");
	ck_assert_int_eq(das_config_set(&c, "view0", "1", &err), SID_EINVAL);
	ck_assert_str_eq(err.msg, "config key \"view0\": unknown");
	ck_assert_int_eq(das_config_set(&c, "mode", "tiger", &err), SID_EINVAL);
	ck_assert_int_eq(das_config_set(&c, "hidden", "12,x", &err), SID_EINVAL);
	/* D_user / D_item unset: check fails naming them */
	ck_assert_int_eq(das_config_check(&c, &err), SID_EINVAL);
	ck_assert_ptr_nonnull(strstr(err.msg, "D_user"));
	c.D_user = c.D_item = 10;
	ck_assert_int_eq(das_config_check(&c, &err), 0);
	c.tau = 0;
	ck_assert_int_eq(das_config_check(&c, &err), SID_EINVAL);
	c.tau = 0.1f;
	char *j = das_config_json(&c);
	ck_assert_ptr_nonnull(j);
	ck_assert_ptr_nonnull(strstr(j, "\"mode\": \"two-stage\""));
	ck_assert_ptr_nonnull(strstr(j, "\"hidden\": []"));
	ck_assert_ptr_nonnull(strstr(j, "\"views\": [1, 1, 0, 1, 0.25, 0.25]"));
	free(j);
	ck_assert_int_eq(das_config_set(&c, "views", "0.5, 0,1,1,2,1", &err), 0);
	ck_assert_float_eq(c.view_w[0], 0.5f);
	ck_assert_int_eq(c.view_on[1], 0);
	ck_assert_int_eq(c.view_on[2], 1);
	ck_assert_float_eq(c.view_w[4], 2.0f);
	ck_assert_int_eq(das_config_set(&c, "views", "1,1,1", &err), SID_EINVAL);
	ck_assert_ptr_nonnull(strstr(err.msg, "views"));
	ck_assert_int_eq(das_config_set(&c, "views", "1,1,1,1,1,1,1", &err), SID_EINVAL);
}
END_TEST

/* input_norm l2 scales a row by 1 / max(||x||, 1e-12), as core/encode.c
 * does for the served model: a row of norm below 1e-12 is scaled by 1e12
 * (it was made unit length, so training saw other inputs than serving), and
 * a row of denormals stays finite (1 / ||x|| was inf: a non-finite loss,
 * every step refused). */
START_TEST(test_l2_tiny_rows)
{
	struct world w;
	struct batchbuf bb = {0};
	struct das_config c;
	struct das_losses la, lb;
	struct sid_error err;
	struct rng r;
	int32_t perm[30];
	world_make(&w, 10, 12, 6, 5, 3, 2);
	for (int i = 0; i < 30; i++)
		perm[i] = i;
	for (int k = 0; k < w.n_users * w.Du; k++)
		w.ux[k] *= 1e-3f; /* rows of norm about 3e-3: y */
	for (int k = 0; k < w.n_items * w.Di; k++)
		w.ix[k] *= 1e-3f;
	rng_seed(&r, 3);
	batch_make(&bb, &w, perm, 0, 8, &r);
	tiny_config(&c, &w, DAS_MODE_RQVAE);
	struct das_model *a = model_new(&c, &w); /* no norm, rows y */
	init_cb(a, &w);
	ck_assert_int_eq(das_eval_losses(a, &bb.b, &la, &err), 0);
	/* l2 on rows y * 1e-12 (norm below 1e-12): scaled back to y */
	float *xs[4] = {bb.ux, bb.ix, bb.u2x, bb.i2x};
	int ds[4] = {w.Du, w.Di, w.Du, w.Di};
	for (int t = 0; t < 4; t++)
		for (int k = 0; k < 8 * ds[t]; k++)
			xs[t][k] *= 1e-12f;
	for (int k = 0; k < w.n_users * w.Du; k++)
		w.ux[k] *= 1e-12f;
	for (int k = 0; k < w.n_items * w.Di; k++)
		w.ix[k] *= 1e-12f;
	c.input_norm = SID_NORM_L2;
	struct das_model *b = model_new(&c, &w);
	init_cb(b, &w);
	ck_assert_int_eq(das_eval_losses(b, &bb.b, &lb, &err), 0);
	ck_assert_msg(fabs(lb.recon_item - la.recon_item) <= 1e-4 * la.recon_item &&
			  fabs(lb.recon_user - la.recon_user) <= 1e-4 * la.recon_user,
		      "recon with l2 %g/%g, of the scaled rows %g/%g", lb.recon_user, lb.recon_item,
		      la.recon_user, la.recon_item);
	/* denormal rows: a finite step */
	for (int t = 0; t < 4; t++)
		for (int k = 0; k < 8 * ds[t]; k++)
			xs[t][k] = 1e-45f;
	ck_assert_msg(das_step(b, &bb.b, &lb, &err) == 0, "%s", err.msg);
	ck_assert(isfinite(lb.total));
	das_free(a);
	das_free(b);
	batch_free(&bb);
	world_free(&w);
}
END_TEST

/* Values that used to slip through: a seed that overflows or carries a sign
 * behind a space (strtoull saturates / negates), a trailing comma in hidden,
 * a boolean for a count. */
START_TEST(test_config_bad_values)
{
	struct das_config c;
	struct sid_error err;
	static const char *bad_seeds[] = {
	    "18446744073709551616", "99999999999999999999999", " -1", "-1", " 1", "+1", "1.5", ""};
	das_config_defaults(&c);
	for (size_t k = 0; k < sizeof(bad_seeds) / sizeof(bad_seeds[0]); k++) {
		ck_assert_msg(das_config_set(&c, "seed", bad_seeds[k], &err) == SID_EINVAL,
			      "seed \"%s\" accepted", bad_seeds[k]);
		ck_assert_ptr_nonnull(strstr(err.msg, "seed"));
		ck_assert_uint_eq(c.seed, 42);
	}
	ck_assert_int_eq(das_config_set(&c, "hidden", "16,", &err), SID_EINVAL);
	ck_assert_ptr_nonnull(strstr(err.msg, "hidden"));
	ck_assert_int_eq(das_config_set(&c, "hidden", "256,,128", &err), SID_EINVAL);
	ck_assert_int_eq(das_config_set(&c, "hidden", "-1", &err), SID_EINVAL);
	ck_assert_int_eq(c.n_hidden, 2);
	ck_assert_int_eq(das_config_set(&c, "levels", "true", &err), SID_EINVAL);
	ck_assert_ptr_nonnull(strstr(err.msg, "levels"));
	ck_assert_int_eq(das_config_set(&c, "kmeans_iters", "false", &err), SID_EINVAL);
	ck_assert_int_eq(das_config_set(&c, "epochs", "99999999999999999999", &err), SID_EINVAL);
	ck_assert_int_eq(c.L, 3);
	ck_assert_int_eq(c.kmeans_iters, 25);
	/* the 0/1 switches still take JSON booleans */
	ck_assert_int_eq(das_config_set(&c, "mask_duplicates", "false", &err), 0);
	ck_assert_int_eq(c.mask_duplicates, 0);
}
END_TEST

/* Floats in the config JSON: the shortest decimal that reads back (the
 * defaults printed as "lr": 0.00100000005), and always one that reads back. */
START_TEST(test_float_str)
{
	static const struct {
		float v;
		const char *s;
	} cases[] = {{0.001f, "0.001"},
		     {0.1f, "0.1"},
		     {1e-8f, "1e-08"},
		     {30.0f, "30"},
		     {0.25f, "0.25"},
		     {0.999f, "0.999"},
		     {0.0f, "0"},
		     {-2.5f, "-2.5"},
		     {1.0f / 3, "0.33333334"},
		     {16777217.0f, "16777216"}};
	char buf[DAS_FLOAT_STR];
	struct rng r;

	for (size_t k = 0; k < sizeof(cases) / sizeof(cases[0]); k++)
		ck_assert_str_eq(das_float_str(cases[k].v, buf), cases[k].s);
	rng_seed(&r, 11);
	for (int k = 0; k < 200000; k++) {
		uint32_t bits = (uint32_t)rng_u64(&r);
		float v, back;
		char nine[DAS_FLOAT_STR];
		memcpy(&v, &bits, sizeof(v));
		if (!isfinite(v))
			continue;
		das_float_str(v, buf);
		back = strtof(buf, NULL);
		ck_assert_msg(memcmp(&back, &v, sizeof(v)) == 0, "%s does not read back as %.9g",
			      buf, (double)v);
		snprintf(nine, sizeof(nine), "%.9g", (double)v);
		ck_assert_msg(strlen(buf) <= strlen(nine), "%s longer than %s", buf, nine);
	}
}
END_TEST

/* A model too big for this machine is refused before anything is allocated,
 * with the size named (it used to calloc, and on a large enough machine be
 * OOM-killed later); a batch size above the data's size reserves a
 * workspace for the data's size, not the B x B similarity matrix of 2^20
 * rows (4 TiB). */
START_TEST(test_memory_limits)
{
	struct das_config c;
	struct das_data d = {.n_users = 2000000000, .n_items = 1, .n_train = 10};
	struct das_model *m = NULL;
	struct sid_error err;
	das_config_defaults(&c);
	c.D_user = c.D_item = 8;
	c.E = 4096; /* ID tables: 2e9 x 8192 floats, four times: 244 TiB */
	sid_error_clear(&err);
	ck_assert_int_eq(das_new(&c, &d, &m, &err), SID_EINVAL);
	ck_assert_ptr_null(m);
	ck_assert_msg(strstr(err.msg, "GiB") && strstr(err.msg, "latent_dim"), "%s", err.msg);
	das_config_defaults(&c);
	c.D_user = c.D_item = 8;
	c.E = 4;
	c.K = 4;
	c.n_hidden = 0;
	c.batch_size = 1 << 20;
	d.n_users = d.n_items = 5;
	ck_assert_msg(das_new(&c, &d, &m, &err) == 0, "%s", err.msg);
	das_free(m);
	/* k-means over 2^26 sampled rows and 65536 codes: (n, K) distances of
	 * 16 TiB, allocated only at codebook init, after the model (whose own
	 * 8 GiB is far smaller) */
	c.K = 65536;
	c.batch_size = 64;
	c.kmeans_sample = 1 << 30;
	d.n_users = d.n_items = 1 << 26;
	m = NULL;
	ck_assert_int_eq(das_new(&c, &d, &m, &err), SID_EINVAL);
	ck_assert_ptr_null(m);
	{ /* refused for the init, on any machine of less than 16 TiB */
		const char *p = strstr(err.msg, "codebook init ");
		ck_assert_msg(p && strtod(p + 14, NULL) > 16000 && strstr(err.msg, "kmeans_sample"),
			      "%s", err.msg);
	}
}
END_TEST

START_TEST(test_bad_batches)
{
	struct world w;
	struct das_config c;
	struct batchbuf bb = {0};
	struct rng r;
	struct sid_error err;
	struct das_losses l;
	world_make(&w, 10, 12, 6, 5, 3, 8);
	tiny_config(&c, &w, DAS_MODE_DAS);
	struct das_model *m = model_new(&c, &w);
	int32_t perm[30];
	for (int i = 0; i < 30; i++)
		perm[i] = i;
	rng_seed(&r, 1);
	batch_make(&bb, &w, perm, 0, 8, &r);
	/* before codebook init */
	ck_assert_int_eq(das_step(m, &bb.b, &l, &err), SID_EINVAL);
	ck_assert_ptr_nonnull(strstr(err.msg, "codebooks"));
	init_cb(m, &w);
	size_t n = das_params_count(m);
	float *before = malloc(sizeof(float) * n);
	memcpy(before, das_params(m), sizeof(float) * n);
	bb.i[3] = 12;
	ck_assert_int_eq(das_step(m, &bb.b, &l, &err), SID_EINVAL);
	ck_assert_int_eq(err.index, 3);
	ck_assert_ptr_nonnull(strstr(err.msg, "item 12"));
	bb.i[3] = 2;
	bb.ux[5 * 6 + 2] = NAN;
	ck_assert_int_eq(das_step(m, &bb.b, &l, &err), SID_EINVAL);
	ck_assert_int_eq(err.index, 5);
	ck_assert_ptr_nonnull(strstr(err.msg, "user_x"));
	bb.ux[5 * 6 + 2] = 0;
	bb.b.item2 = NULL;
	ck_assert_int_eq(das_step(m, &bb.b, &l, &err), SID_EINVAL);
	ck_assert_ptr_nonnull(strstr(err.msg, "view 6"));
	/* nothing changed by the refused steps */
	ck_assert_mem_eq(before, das_params(m), sizeof(float) * n);
	ck_assert_int_eq(das_step_count(m), 0);
	/* phase misuse */
	ck_assert_int_eq(das_phase_set(m, DAS_PHASE_ICDM, &err), SID_EINVAL);
	free(before);
	das_free(m);
	batch_free(&bb);
	world_free(&w);
}
END_TEST

/* Dead-code reset (proto/das.md, "Codebook initialisation and dead codes")
 * against a hand-made case: an identity encoder (z = x), one level of 16
 * codewords on a circle of radius 10, the users' rows at codes 0 and 4 and
 * every other code dead at dead_steps 1.  A missing partner (user2 -1) is
 * no row of the batch: the content the batch holds for it (here at code 12)
 * must neither keep its code alive nor be a reset's residual.  So every code
 * but 0 and 4 is reset, each to the residual (z, = x to 1e-3) of a real row,
 * with its Adam moments zeroed. */
START_TEST(test_dead_codes_ignore_missing_partners)
{
	enum { B = 8, KC = 16 };
	struct das_config c;
	struct sid_error err;
	struct das_losses l;
	float pop[B], act[B], ux[B * 2], ix[B * 2], u2x[B * 2], i2x[B * 2];
	int32_t user[B], item[B], user2[B], item2[B];
	das_config_defaults(&c);
	c.D_user = c.D_item = 2;
	c.n_hidden = 0;
	c.E = 2;
	c.L = 1;
	c.K = KC;
	c.batch_size = B;
	c.dead_steps = 1;
	c.kmeans_iters = 0;
	c.lr = 1e-6f; /* the encoder stays the identity to 1e-3 over the two steps */
	c.view_w[DAS_VIEW_IZ_IZ] = 0; /* the item tower encodes its B rows only */
	c.view_on[DAS_VIEW_IZ_IZ] = 0;
	for (int b = 0; b < B; b++) {
		pop[b] = act[b] = logf(2.0f);
		user[b] = item[b] = b;
		item2[b] = -1;
		/* users at code 0, their partners (rows 0, 2, ...) at code 4,
		 * the missing partners' content at code 12 */
		ux[2 * b] = 10.0f;
		ux[2 * b + 1] = 0.1f * (float)b;
		user2[b] = b % 2 ? -1 : (b + 1) % B;
		u2x[2 * b] = b % 2 ? 0.1f * (float)b : -0.1f * (float)b;
		u2x[2 * b + 1] = b % 2 ? -10.0f : 10.0f;
		ix[2 * b] = 10.0f;
		ix[2 * b + 1] = -0.1f * (float)b;
		i2x[2 * b] = i2x[2 * b + 1] = 0;
	}
	struct das_data d = {B, B, B, pop, act};
	struct das_model *m = NULL;
	ck_assert_msg(das_new(&c, &d, &m, &err) == 0, "das_new: %s", err.msg);
	ck_assert_msg(das_init_codebooks(m, ux, B, ix, B, &err) == 0, "init: %s", err.msg);
	float *p = das_params(m);
	for (int t = 0; t < 2; t++) {
		const char *tw = t ? "item" : "user";
		char name[64];
		snprintf(name, sizeof(name), "%s.encoder.0.weight", tw);
		long w = das_tensor_find(m, name, NULL);
		snprintf(name, sizeof(name), "%s.encoder.0.bias", tw);
		long bias = das_tensor_find(m, name, NULL);
		snprintf(name, sizeof(name), "%s.codebook.0", tw);
		long cb = das_tensor_find(m, name, NULL);
		ck_assert(w >= 0 && bias >= 0 && cb >= 0);
		p[w] = p[w + 3] = 1;
		p[w + 1] = p[w + 2] = p[bias] = p[bias + 1] = 0;
		for (int k = 0; k < KC; k++) {
			p[cb + 2 * k] = 10.0f * cosf(6.2831853f * (float)k / KC);
			p[cb + 2 * k + 1] = 10.0f * sinf(6.2831853f * (float)k / KC);
		}
	}
	struct das_batch bt = {B, user, item, ux, ix, user2, u2x, item2, i2x};
	ck_assert(das_needs_user_partner(m) && !das_needs_item_partner(m));
	/* the first step stamps the codes it uses at step 0, as the init did:
	 * nothing is dead yet; the second resets every code unused in it */
	ck_assert_msg(das_step(m, &bt, &l, &err) == 0, "step: %s", err.msg);
	ck_assert_int_eq(l.resets, 0);
	ck_assert_int_eq(l.used_user[0], 2); /* codes 0 and 4, not 12 */
	ck_assert_int_eq(l.used_item[0], 1);
	ck_assert_msg(das_step(m, &bt, &l, &err) == 0, "step: %s", err.msg);
	ck_assert_int_eq(l.used_user[0], 2);
	ck_assert_int_eq(l.resets, (KC - 2) + (KC - 1));
	long cb = das_tensor_find(m, "user.codebook.0", NULL);
	for (int k = 0; k < KC; k++) {
		if (k == 0 || k == 4)
			continue;
		const float *e = p + cb + 2 * k;
		int real = 0;
		for (int b = 0; b < B && !real; b++)
			real = (fabsf(e[0] - ux[2 * b]) < 1e-3f &&
				fabsf(e[1] - ux[2 * b + 1]) < 1e-3f) ||
			       (user2[b] >= 0 && fabsf(e[0] - u2x[2 * b]) < 1e-3f &&
				fabsf(e[1] - u2x[2 * b + 1]) < 1e-3f);
		ck_assert_msg(real, "user code %d = (%g, %g): not the residual of a batch row", k,
			      (double)e[0], (double)e[1]);
		ck_assert(das_adam_m(m)[cb + 2 * k] == 0 && das_adam_v(m)[cb + 2 * k + 1] == 0);
	}
	das_free(m);
}
END_TEST

/* ------------------------------------------------ the formulas of das.md */

/* Tensor "@tw.@what" of @m, e.g. ("user", "encoder.0.weight"). */
static const float *ref_tensor(struct das_model *m, const char *tw, const char *what)
{
	char name[64];
	snprintf(name, sizeof(name), "%s%s%s", tw, *tw ? "." : "", what);
	long off = das_tensor_find(m, name, NULL);
	ck_assert_msg(off >= 0, "no tensor %s", name);
	return das_params(m) + off;
}

/* y = W x + b, W (out, in) as torch nn.Linear; tanh after it when @act. */
static void ref_linear(double *y, const double *x, const float *w, const float *b, int in, int out,
		       int act)
{
	for (int o = 0; o < out; o++) {
		double s = b[o];
		for (int i = 0; i < in; i++)
			s += (double)w[(size_t)o * in + i] * x[i];
		y[o] = act ? tanh(s) : s;
	}
}

/* One tower of the tiny config (one hidden layer, tanh, no input norm) on
 * @n rows of @x (D): q (n, E) into @q, and the RQVAE loss terms summed over
 * the rows into *@rec and *@quant. */
static void ref_tower(struct das_model *m, const char *tw, const float *x, int n, int D, double *q,
		      double *rec, double *quant)
{
	const struct das_config *c = das_config_of(m);
	const int H = c->hidden[0], E = c->E;
	double xin[16], h[16], r[16], xh[16];
	*rec = *quant = 0;
	for (int b = 0; b < n; b++) {
		double *qb = q + (size_t)b * E;
		for (int j = 0; j < D; j++)
			xin[j] = x[(size_t)b * D + j];
		ref_linear(h, xin, ref_tensor(m, tw, "encoder.0.weight"),
			   ref_tensor(m, tw, "encoder.0.bias"), D, H, 1);
		ref_linear(r, h, ref_tensor(m, tw, "encoder.1.weight"),
			   ref_tensor(m, tw, "encoder.1.bias"), H, E, 0);
		memset(qb, 0, sizeof(double) * E);
		for (int l = 0; l < c->L; l++) {
			char name[32];
			snprintf(name, sizeof(name), "codebook.%d", l);
			const float *C = ref_tensor(m, tw, name);
			int best = 0;
			double bd = INFINITY;
			for (int k = 0; k < c->K; k++) {
				double d2 = 0;
				for (int j = 0; j < E; j++)
					d2 += (r[j] - C[k * E + j]) * (r[j] - C[k * E + j]);
				if (d2 < bd) {
					bd = d2;
					best = k;
				}
			}
			/* ||sg(r) - e||^2 + beta ||r - sg(e)||^2: one value */
			*quant += (1.0 + c->beta) * bd;
			for (int j = 0; j < E; j++) {
				qb[j] += C[best * E + j];
				r[j] -= C[best * E + j];
			}
		}
		ref_linear(h, qb, ref_tensor(m, tw, "decoder.0.weight"),
			   ref_tensor(m, tw, "decoder.0.bias"), E, H, 1);
		ref_linear(xh, h, ref_tensor(m, tw, "decoder.1.weight"),
			   ref_tensor(m, tw, "decoder.1.bias"), H, D, 0);
		for (int j = 0; j < D; j++)
			*rec += (xin[j] - xh[j]) * (xin[j] - xh[j]);
	}
}

static double ref_cos(const double *a, const double *c, int E)
{
	double ac = 0, aa = 0, cc = 0;
	for (int j = 0; j < E; j++) {
		ac += a[j] * c[j];
		aa += a[j] * a[j];
		cc += c[j] * c[j];
	}
	return ac / (fmax(sqrt(aa), 1e-8) * fmax(sqrt(cc), 1e-8));
}

/* Entry (b, j) is left out: another row of b's user or item. */
static int ref_masked(const int32_t *u, const int32_t *it, int b, int j)
{
	return j != b && (u[j] == u[b] || it[j] == it[b]);
}

/* NCE(a, c) of @n paired rows (@lda / @ldc apart), masked by the rows'
 * users @u and items @it. */
static double ref_nce(const double *a, int lda, const double *c, int ldc, const int32_t *u,
		      const int32_t *it, int n, int E, double tau)
{
	double rows = 0, cols = 0;
	for (int b = 0; b < n; b++) {
		double sr = 0, sc = 0;
		for (int j = 0; j < n; j++) {
			if (ref_masked(u, it, b, j))
				continue;
			sr += exp(ref_cos(a + b * lda, c + j * ldc, E) / tau);
			sc += exp(ref_cos(a + j * lda, c + b * ldc, E) / tau);
		}
		double diag = ref_cos(a + b * lda, c + b * ldc, E) / tau;
		rows += log(sr) - diag;
		cols += log(sc) - diag;
	}
	return 0.5 * (rows / n + cols / n);
}

static void ref_close(const char *what, double got, double want)
{
	ck_assert_msg(fabs(got - want) <= 1e-4 * fmax(1.0, fabs(want)), "%s: %.7g, by hand %.7g",
		      what, got, want);
}

/* Every loss of das_eval_losses against proto/das.md's formulas computed
 * here from the tensors by name: the gradient check only shows that the
 * step differentiates whatever the forward computes, not that a view reads
 * the tensors the table names, or the correction has its sign. */
START_TEST(test_losses_are_the_documented_formulas)
{
	enum { B = 8 };
	struct world w;
	struct das_config c;
	struct das_losses l;
	struct sid_error err;
	world_make(&w, 10, 12, 6, 5, 3, 4);
	tiny_config(&c, &w, DAS_MODE_DAS);
	c.alpha = 1.3f;
	c.beta_align = 0.7f;
	c.w_click = 0.9f;
	c.w_bias = 1.1f;
	c.w_orth = 0.8f;
	c.tau = 0.5f;
	for (int v = 0; v < DAS_N_VIEWS; v++)
		c.view_w[v] = 0.3f + 0.2f * (float)v;
	struct das_model *m = model_new(&c, &w);
	init_cb(m, &w);
	/* users 0 and 1 twice each: masked entries */
	static const int pick[B] = {0, 1, 3, 4, 6, 9, 12, 15};
	int32_t bu[B], bi[B], bu2[B], bi2[B];
	float ux[B * 6], ix[B * 5], u2x[B * 6] = {0}, i2x[B * 5] = {0};
	int dup = 0;
	for (int b = 0; b < B; b++) {
		int u = w.pu[pick[b]], it = w.pi[pick[b]];
		bu[b] = u;
		bi[b] = it;
		bu2[b] = bi2[b] = -1;
		for (int k = 0; k < w.i_n[it]; k++)
			if (w.i_users[it][k] != u)
				bu2[b] = w.i_users[it][k];
		for (int k = 0; k < w.u_n[u]; k++)
			if (w.u_items[u][k] != it)
				bi2[b] = w.u_items[u][k];
		memcpy(ux + b * 6, w.ux + u * 6, sizeof(float) * 6);
		memcpy(ix + b * 5, w.ix + it * 5, sizeof(float) * 5);
		if (bu2[b] >= 0)
			memcpy(u2x + b * 6, w.ux + bu2[b] * 6, sizeof(float) * 6);
		if (bi2[b] >= 0)
			memcpy(i2x + b * 5, w.ix + bi2[b] * 5, sizeof(float) * 5);
		for (int j = 0; j < b; j++)
			dup += ref_masked(bu, bi, b, j);
	}
	ck_assert_int_gt(dup, 0);
	/* a missing partner keeps the content the batch holds in its place */
	bu2[1] = bi2[2] = -1;
	struct das_batch bt = {B, bu, bi, ux, ix, bu2, u2x, bi2, i2x};
	ck_assert_msg(das_eval_losses(m, &bt, &l, &err) == 0, "eval: %s", err.msg);

	const int E = c.E, E2 = 2 * E;
	double qu[B * 4], qi[B * 4], q2[B * 4], a[B * 4], rec, quant, total = 0;
	ref_tower(m, "user", ux, B, 6, qu, &rec, &quant);
	ref_close("recon_user", l.recon_user, rec / B);
	ref_close("quant_user", l.quant_user, quant / B);
	total += (rec + quant) / B;
	ref_tower(m, "item", ix, B, 5, qi, &rec, &quant);
	ref_close("recon_item", l.recon_item, rec / B);
	ref_close("quant_item", l.quant_item, quant / B);
	total += (rec + quant) / B;

	/* ICDM on the gathered rows [p | c] and [t | o] */
	const float *tu = ref_tensor(m, "", "icdm.user"), *ti = ref_tensor(m, "", "icdm.item");
	double U[B * 8], I[B * 8];
	for (int b = 0; b < B; b++)
		for (int j = 0; j < E2; j++) {
			U[b * E2 + j] = tu[bu[b] * E2 + j];
			I[b * E2 + j] = ti[bi[b] * E2 + j];
		}
	double click = 0, bias_u = 0, bias_i = 0, orth_u = 0, orth_i = 0;
	const float *hw_u = ref_tensor(m, "", "icdm.head.user.weight"),
		    *hb_u = ref_tensor(m, "", "icdm.head.user.bias"),
		    *hw_i = ref_tensor(m, "", "icdm.head.item.weight"),
		    *hb_i = ref_tensor(m, "", "icdm.head.item.bias");
	for (int b = 0; b < B; b++) {
		double sum = 0, diag = 0;
		for (int j = 0; j < B; j++) {
			double s = -(double)w.pop[bi[j]]; /* - log(1 + n_i): minus */
			for (int k = 0; k < E2; k++)
				s += U[b * E2 + k] * I[j * E2 + k];
			if (j == b)
				diag = s;
			if (!ref_masked(bu, bi, b, j))
				sum += exp(s);
		}
		click += log(sum) - diag;
		double pu = hb_u[0], pi = hb_i[0];
		for (int k = 0; k < E; k++) {
			pu += hw_u[k] * U[b * E2 + E + k];
			pi += hw_i[k] * I[b * E2 + E + k];
		}
		bias_u += (pu - w.act[bu[b]]) * (pu - w.act[bu[b]]);
		bias_i += (pi - w.pop[bi[b]]) * (pi - w.pop[bi[b]]);
		orth_u += pow(ref_cos(U + b * E2, U + b * E2 + E, E), 2);
		orth_i += pow(ref_cos(I + b * E2, I + b * E2 + E, E), 2);
	}
	ref_close("click", l.click, click / B);
	ref_close("bias_user", l.bias_user, bias_u / B);
	ref_close("bias_item", l.bias_item, bias_i / B);
	ref_close("orth_user", l.orth_user, orth_u / B);
	ref_close("orth_item", l.orth_item, orth_i / B);
	double icdm = c.w_click * click / B + c.w_bias * (bias_u + bias_i) / B +
		      c.w_orth * (orth_u + orth_i) / B;
	ref_close("icdm", l.icdm, icdm);
	total += c.alpha * icdm;

	/* the views of the table: interest p and content t are the first halves */
	double view[DAS_N_VIEWS], align = 0;
	view[0] = ref_nce(qu, E, I, E2, bu, bi, B, E, c.tau);
	view[1] = ref_nce(U, E2, qi, E, bu, bi, B, E, c.tau);
	view[2] = ref_nce(qu, E, U, E2, bu, bi, B, E, c.tau);
	view[3] = ref_nce(qi, E, I, E2, bu, bi, B, E, c.tau);
	for (int v = 4; v < 6; v++) {
		const int32_t *part = v == 4 ? bu2 : bi2;
		const double *qq = v == 4 ? qu : qi;
		const float *px = v == 4 ? u2x : i2x;
		int D = v == 4 ? 6 : 5, n = 0;
		int32_t ku[B], ki[B];
		float xs[B * 6];
		for (int b = 0; b < B; b++)
			if (part[b] >= 0) {
				memcpy(a + n * E, qq + b * E, sizeof(double) * E);
				memcpy(xs + n * D, px + b * D, sizeof(float) * D);
				ku[n] = bu[b];
				ki[n++] = bi[b];
			}
		ck_assert_int_ge(n, 2);
		ref_tower(m, v == 4 ? "user" : "item", xs, n, D, q2, &rec, &quant);
		view[v] = ref_nce(a, E, q2, E, ku, ki, n, E, c.tau);
	}
	for (int v = 0; v < DAS_N_VIEWS; v++) {
		char what[16];
		snprintf(what, sizeof(what), "view %d", v + 1);
		ref_close(what, l.view[v], view[v]);
		align += c.view_w[v] * view[v];
	}
	ref_close("align", l.align, align);
	total += c.beta_align * align;
	ref_close("total", l.total, total);
	das_free(m);
	world_free(&w);
}
END_TEST

/* Two steps against proto/das.md's AdamW by hand: the clip factor from the
 * global norm, the warm-up lr, lr x lr_icdm_mult from the heads on (the
 * tables and heads) and lr before them, decoupled decay on every parameter,
 * bias correction by the step count. */
START_TEST(test_step_is_the_documented_adamw)
{
	struct world w;
	struct das_config c;
	struct batchbuf bb = {0};
	struct das_losses l;
	struct sid_error err;
	struct rng r;
	world_make(&w, 10, 12, 6, 5, 3, 5);
	tiny_config(&c, &w, DAS_MODE_DAS);
	c.lr = 0.01f;
	c.weight_decay = 0.5f; /* large enough to be seen in two steps */
	c.clip_norm = 0.5f;
	struct das_model *m = model_new(&c, &w);
	init_cb(m, &w);
	int32_t perm[30];
	for (int i = 0; i < 30; i++)
		perm[i] = (i * 7) % 30;
	rng_seed(&r, 6);
	batch_make(&bb, &w, perm, 0, 8, &r);
	size_t n = das_params_count(m);
	long icdm = das_tensor_find(m, "icdm.head.user.weight", NULL);
	double *p = malloc(sizeof(double) * n), *mm = calloc(n, sizeof(double)),
	       *vv = calloc(n, sizeof(double));
	float *g = malloc(sizeof(float) * n);
	ck_assert(icdm > 0 && p && mm && vv && g);
	for (size_t i = 0; i < n; i++)
		p[i] = das_params(m)[i];
	for (int t = 0; t < 2; t++) {
		ck_assert_msg(das_grad(m, &bb.b, &l, &err) == 0, "grad: %s", err.msg);
		memcpy(g, das_grads(m), sizeof(float) * n);
		double ss = 0;
		for (size_t i = 0; i < n; i++)
			ss += (double)g[i] * g[i];
		double norm = sqrt(ss), clip = norm > c.clip_norm ? c.clip_norm / (norm + 1e-6) : 1;
		ck_assert_double_gt(norm, c.clip_norm);	     /* the clip is exercised */
		double lr = c.lr * (t + 1) / c.warmup_steps; /* warm-up */
		ck_assert_msg(das_step(m, &bb.b, &l, &err) == 0, "step: %s", err.msg);
		ref_close("grad_norm", l.grad_norm, norm);
		ref_close("lr", l.lr, lr);
		for (size_t i = 0; i < n; i++) {
			double lri = (long)i >= icdm ? lr * c.lr_icdm_mult : lr, gi = g[i] * clip;
			mm[i] = c.adam_b1 * mm[i] + (1 - c.adam_b1) * gi;
			vv[i] = c.adam_b2 * vv[i] + (1 - c.adam_b2) * gi * gi;
			double mh = mm[i] / (1 - pow(c.adam_b1, t + 1)),
			       vh = vv[i] / (1 - pow(c.adam_b2, t + 1));
			p[i] =
			    p[i] * (1 - lri * c.weight_decay) - lri * mh / (sqrt(vh) + c.adam_eps);
			float got = das_params(m)[i];
			ck_assert_msg(fabs(got - p[i]) <= 1e-5 * (fabs(p[i]) + 1e-2),
				      "step %d: parameter %zu: %.8g, by hand %.8g", t, i,
				      (double)got, p[i]);
		}
	}
	free(p);
	free(mm);
	free(vv);
	free(g);
	das_free(m);
	batch_free(&bb);
	world_free(&w);
}
END_TEST

static Suite *das_suite(void)
{
	Suite *s = suite_create("das");
	TCase *tc = tcase_create("das");
	tcase_set_timeout(tc, 120);
	tcase_add_test(tc, test_config_keys);
	tcase_add_test(tc, test_config_bad_values);
	tcase_add_test(tc, test_float_str);
	tcase_add_test(tc, test_l2_tiny_rows);
	tcase_add_test(tc, test_memory_limits);
	tcase_add_test(tc, test_bad_batches);
	tcase_add_test(tc, test_losses_are_the_documented_formulas);
	tcase_add_test(tc, test_step_is_the_documented_adamw);
	tcase_add_test(tc, test_full_gradient_das);
	tcase_add_test(tc, test_full_gradient_variants);
	tcase_add_test(tc, test_lazy_tables);
	tcase_add_test(tc, test_training_run);
	tcase_add_test(tc, test_dead_codes_ignore_missing_partners);
	tcase_add_test(tc, test_resume_bit_exact);
	tcase_add_loop_test(tc, test_checkpoint_values_checked, 0, 3);
	tcase_add_test(tc, test_export_loads_and_encodes);
	suite_add_tcase(s, tc);
	return s;
}

int main(void)
{
	return check_run(das_suite());
}
