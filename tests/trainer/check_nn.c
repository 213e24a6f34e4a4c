/*
 * check_nn.c - tests for trainer/nn.c: every layer's and loss's backward
 * against central finite differences of a scalar objective, plus forward
 * values against hand-computed numbers (brute-force argmin for the
 * quantizer, libm exp for the fast exp).
 *
 * Method: J = g * loss + sum(R (.) outputs) with fixed random R, evaluated in
 * double from the float forward; the analytic gradient comes from the
 * backward with output gradients R.  Each parameter element is moved by
 * +-eps and (J+ - J-) / 2 eps compared with a relative-plus-absolute
 * tolerance sized for float forwards.  Inputs stay away from kinks (relu at 0,
 * quantizer decision boundaries) so the differences are of a smooth function.
 */
#include <check.h>
#include "check_main.h"
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "nn.h"
#include "rng.h"

static struct rng R;

static void fill(float *x, size_t n, float scale)
{
	for (size_t i = 0; i < n; i++)
		x[i] = scale * rng_normal(&R);
}

static double dotd(const float *a, const float *b, size_t n)
{
	double s = 0;
	for (size_t i = 0; i < n; i++)
		s += (double)a[i] * b[i];
	return s;
}

typedef double (*objective)(void *ctx);

/* Compare grad[0..n) with central differences of f over p[0..n). */
static void fd_check(const char *what, float *p, size_t n, const float *grad, objective f,
		     void *ctx, float eps, double rtol, double atol)
{
	double worst = 0;
	size_t worst_i = 0;
	double num_w = 0, ana_w = 0;
	for (size_t i = 0; i < n; i++) {
		float keep = p[i];
		p[i] = keep + eps;
		double fp = f(ctx);
		p[i] = keep - eps;
		double fm = f(ctx);
		p[i] = keep;
		double num = (fp - fm) / (2.0 * eps);
		double ana = grad[i];
		double tol = atol + rtol * fmax(fabs(num), fabs(ana));
		double bad = fabs(num - ana) / tol;
		if (bad > worst) {
			worst = bad;
			worst_i = i;
			num_w = num;
			ana_w = ana;
		}
	}
	ck_assert_msg(worst <= 1.0, "%s: element %zu: analytic %.7g vs numeric %.7g", what, worst_i,
		      ana_w, num_w);
}

/* ------------------------------------------------------------ linear + act */

struct lin_ctx {
	float *x, *w, *b, *y, *h, *R;
	int B, in, out;
	enum sid_act act;
};

static double lin_obj(void *p)
{
	struct lin_ctx *c = p;
	nn_linear_forward(c->h, c->x, c->w, c->b, c->B, c->in, c->out);
	nn_act_forward(c->act, c->y, c->h, (size_t)c->B * c->out);
	return dotd(c->y, c->R, (size_t)c->B * c->out);
}

static void check_linear_act(enum sid_act act, const char *name)
{
	struct lin_ctx c = {.B = 5, .in = 7, .out = 4, .act = act};
	size_t nx = (size_t)c.B * c.in, nw = (size_t)c.out * c.in, ny = (size_t)c.B * c.out;
	c.x = malloc(sizeof(float) * nx);
	c.w = malloc(sizeof(float) * nw);
	c.b = malloc(sizeof(float) * c.out);
	c.y = malloc(sizeof(float) * ny);
	c.h = malloc(sizeof(float) * ny);
	c.R = malloc(sizeof(float) * ny);
	float *dx = malloc(sizeof(float) * nx), *dw = calloc(nw, sizeof(float));
	float *db = calloc(c.out, sizeof(float)), *dh = malloc(sizeof(float) * ny);
	fill(c.x, nx, 1);
	fill(c.w, nw, 0.5f);
	fill(c.b, c.out, 0.5f);
	fill(c.R, ny, 1);
	lin_obj(&c);
	if (act == SID_ACT_RELU) /* keep pre-activations away from the kink */
		for (size_t i = 0; i < ny; i++)
			if (fabsf(c.h[i]) < 0.05f)
				c.b[i % c.out] += 0.2f;
	lin_obj(&c);
	nn_act_backward(act, dh, c.R, c.h, ny);
	/* accumulation: start dw at a known value */
	for (size_t i = 0; i < nw; i++)
		dw[i] = 1.0f;
	nn_linear_backward(dx, dw, db, dh, c.x, c.w, c.B, c.in, c.out);
	for (size_t i = 0; i < nw; i++)
		dw[i] -= 1.0f;
	fd_check(name, c.x, nx, dx, lin_obj, &c, 1e-3f, 1e-2, 1e-3);
	fd_check(name, c.w, nw, dw, lin_obj, &c, 1e-3f, 1e-2, 1e-3);
	fd_check(name, c.b, c.out, db, lin_obj, &c, 1e-3f, 1e-2, 1e-3);
	free(c.x);
	free(c.w);
	free(c.b);
	free(c.y);
	free(c.h);
	free(c.R);
	free(dx);
	free(dw);
	free(db);
	free(dh);
}

START_TEST(test_linear_activations)
{
	rng_seed(&R, 1);
	check_linear_act(SID_ACT_IDENTITY, "linear");
	check_linear_act(SID_ACT_RELU, "linear+relu");
	check_linear_act(SID_ACT_SILU, "linear+silu");
	check_linear_act(SID_ACT_GELU, "linear+gelu");
	check_linear_act(SID_ACT_TANH, "linear+tanh");
}
END_TEST

START_TEST(test_linear_values)
{
	/* y = x W^T + b by hand: x (1,2) = [1 2], W (2,2) = [[1 0],[3 -1]], b = [0.5 -1] */
	float x[2] = {1, 2}, w[4] = {1, 0, 3, -1}, b[2] = {0.5f, -1}, y[2];
	nn_linear_forward(y, x, w, b, 1, 2, 2);
	ck_assert_float_eq_tol(y[0], 1.5f, 1e-6f);
	ck_assert_float_eq_tol(y[1], 0.0f, 1e-6f);
	float a[3] = {-1, 0.5f, 2}, o[3];
	nn_act_forward(SID_ACT_GELU, o, a, 3);
	/* torch.nn.functional.gelu: -0.15865526, 0.34573123, 1.9544997 */
	ck_assert_float_eq_tol(o[0], -0.15865526f, 1e-6f);
	ck_assert_float_eq_tol(o[1], 0.34573123f, 1e-6f);
	ck_assert_float_eq_tol(o[2], 1.9544997f, 1e-6f);
	nn_act_forward(SID_ACT_SILU, o, a, 3);
	/* torch.nn.functional.silu: -0.26894142, 0.31122968, 1.7615942 */
	ck_assert_float_eq_tol(o[0], -0.26894142f, 1e-6f);
	ck_assert_float_eq_tol(o[1], 0.31122968f, 1e-6f);
	ck_assert_float_eq_tol(o[2], 1.7615942f, 1e-6f);
}
END_TEST

/* ------------------------------------------------------------ mse */

struct mse_ctx {
	float *xh, *x;
	int B, D;
};
static double mse_obj(void *p)
{
	struct mse_ctx *c = p;
	return 0.7 * nn_mse_forward(c->xh, c->x, c->B, c->D);
}

START_TEST(test_mse)
{
	rng_seed(&R, 2);
	struct mse_ctx c = {.B = 3, .D = 5};
	float xh[15], x[15], d[15];
	c.xh = xh;
	c.x = x;
	fill(xh, 15, 1);
	fill(x, 15, 1);
	/* value: summed over D, averaged over B */
	double want = 0;
	for (int i = 0; i < 15; i++)
		want += (double)(xh[i] - x[i]) * (xh[i] - x[i]);
	ck_assert_double_eq_tol(nn_mse_forward(xh, x, 3, 5), want / 3, 1e-5);
	nn_mse_backward(d, xh, x, 3, 5, 0.7f);
	fd_check("mse", xh, 15, d, mse_obj, &c, 1e-3f, 1e-3, 1e-4);
}
END_TEST

/* ------------------------------------------------------------ quantizer */

struct rq_ctx {
	struct nn_rq s;
	float *z, *C[3], *zd, *za, *R1, *R2;
	int n, nloss;
	float beta, g;
};

static double rq_obj(void *p)
{
	struct rq_ctx *c = p;
	const float *C[3] = {c->C[0], c->C[1], c->C[2]};
	nn_rq_forward(&c->s, c->n, c->z, C, c->zd, c->za);
	size_t ne = (size_t)c->n * c->s.E;
	return c->g * nn_rq_loss_forward(&c->s, c->nloss, c->beta) + dotd(c->zd, c->R1, ne) +
	       dotd(c->za, c->R2, ne);
}

START_TEST(test_rq)
{
	const int n = 6, E = 4, L = 3, K = 5;
	struct rq_ctx c = {.n = n, .nloss = 4, .beta = 0.25f, .g = 0.9f};
	rng_seed(&R, 3);
	ck_assert_int_eq(nn_rq_init(&c.s, 8, E, L, K), 0);
	c.z = malloc(sizeof(float) * n * E);
	c.zd = malloc(sizeof(float) * n * E);
	c.za = malloc(sizeof(float) * n * E);
	c.R1 = malloc(sizeof(float) * n * E);
	c.R2 = malloc(sizeof(float) * n * E);
	float *dz = malloc(sizeof(float) * n * E);
	float *dC[3];
	for (int l = 0; l < L; l++) {
		c.C[l] = malloc(sizeof(float) * K * E);
		dC[l] = calloc((size_t)K * E, sizeof(float));
		fill(c.C[l], (size_t)K * E, 1.0f / (float)(l + 1));
	}
	fill(c.z, (size_t)n * E, 1);
	fill(c.R1, (size_t)n * E, 1);
	fill(c.R2, (size_t)n * E, 1);

	/* forward: codes are the brute-force greedy argmin; outputs equal q exactly */
	const float *Cc[3] = {c.C[0], c.C[1], c.C[2]};
	nn_rq_forward(&c.s, n, c.z, Cc, c.zd, c.za);
	for (int b = 0; b < n; b++) {
		float r[4], q[4] = {0};
		memcpy(r, c.z + b * E, sizeof(r));
		for (int l = 0; l < L; l++) {
			int best = 0;
			double bd = INFINITY;
			for (int k = 0; k < K; k++) {
				double d = 0;
				for (int j = 0; j < E; j++)
					d += pow(r[j] - c.C[l][k * E + j], 2);
				if (d < bd) {
					bd = d;
					best = k;
				}
			}
			ck_assert_int_eq(c.s.codes[b * L + l], best);
			for (int j = 0; j < E; j++) {
				r[j] -= c.C[l][best * E + j];
				q[j] += c.C[l][best * E + j];
			}
		}
		for (int j = 0; j < E; j++) {
			ck_assert_float_eq_tol(c.zd[b * E + j], q[j], 1e-6f);
			ck_assert_float_eq(c.zd[b * E + j], c.za[b * E + j]);
		}
	}
	/* the loss value: (1 + beta) * mean over the first nloss rows of sum_l ||r_l - e_l||^2 */
	double want = 0;
	for (int b = 0; b < c.nloss; b++)
		for (int l = 0; l < L; l++)
			for (int j = 0; j < E; j++) {
				double d = c.s.r[(b * L + l) * E + j] - c.s.e[(b * L + l) * E + j];
				want += (1 + c.beta) * d * d;
			}
	ck_assert_double_eq_tol(nn_rq_loss_forward(&c.s, c.nloss, c.beta), want / c.nloss, 1e-5);

	/* backward vs finite differences with the stop-gradient operands frozen */
	nn_rq_backward(&c.s, n, c.nloss, c.beta, c.g, c.R1, n, c.R2, dz, dC);
	c.s.frozen = 1;
	fd_check("rq dz", c.z, (size_t)n * E, dz, rq_obj, &c, 1e-3f, 1e-2, 2e-3);
	for (int l = 0; l < L; l++)
		fd_check("rq dC", c.C[l], (size_t)K * E, dC[l], rq_obj, &c, 1e-3f, 1e-2, 2e-3);

	/* STE: with zero quantizer loss, dz is exactly dz_dec + dz_al */
	for (int l = 0; l < L; l++)
		memset(dC[l], 0, sizeof(float) * K * E);
	nn_rq_backward(&c.s, n, c.nloss, c.beta, 0.0f, c.R1, 2, c.R2, dz, dC);
	for (int b = 0; b < n; b++)
		for (int j = 0; j < E; j++)
			ck_assert_float_eq_tol(
			    dz[b * E + j], (b < 2 ? c.R1[b * E + j] : 0) + c.R2[b * E + j], 1e-6f);
	nn_rq_release(&c.s);
	for (int l = 0; l < L; l++) {
		free(c.C[l]);
		free(dC[l]);
	}
	free(c.z);
	free(c.zd);
	free(c.za);
	free(c.R1);
	free(c.R2);
	free(dz);
}
END_TEST

/* ------------------------------------------------------------ similarity losses */

struct sim_ctx {
	struct nn_sim s;
	float *a, *c, *corr;
	int B, E, lda, ldc, click;
	float tau;
};

static double sim_obj(void *p)
{
	struct sim_ctx *c = p;
	if (c->click)
		return 1.3 *
		       nn_click_forward(&c->s, c->a, c->lda, c->c, c->ldc, c->corr, c->B, c->E);
	return 1.3 * nn_infonce_forward(&c->s, c->a, c->lda, c->c, c->ldc, c->B, c->E, c->tau);
}

/* Reference InfoNCE in double, straight from the definition. */
static double infonce_ref(const struct sim_ctx *c, const int32_t *ku, const int32_t *ki)
{
	int B = c->B, E = c->E;
	double *S = malloc(sizeof(double) * B * B);
	for (int b = 0; b < B; b++)
		for (int j = 0; j < B; j++) {
			double ab = 0, aa = 0, cc = 0;
			for (int k = 0; k < E; k++) {
				double x = c->a[b * c->lda + k], y = c->c[j * c->ldc + k];
				ab += x * y;
				aa += x * x;
				cc += y * y;
			}
			S[b * B + j] = ab / sqrt(aa) / sqrt(cc) / c->tau;
		}
	double lr = 0, lc = 0;
	for (int b = 0; b < B; b++) {
		double zr = 0, zc = 0;
		for (int j = 0; j < B; j++) {
			int mr = j != b && (ku[j] == ku[b] || ki[j] == ki[b]);
			if (!mr) {
				zr += exp(S[b * B + j]);
				zc += exp(S[j * B + b]);
			}
		}
		lr += log(zr) - S[b * B + b];
		lc += log(zc) - S[b * B + b];
	}
	free(S);
	return 0.5 * (lr / B + lc / B);
}

START_TEST(test_infonce)
{
	struct sim_ctx c = {.B = 7, .E = 5, .lda = 8, .ldc = 5, .tau = 0.2f};
	int32_t ku[7] = {0, 1, 2, 0, 3, 4, 5}, ki[7] = {0, 1, 2, 3, 4, 1, 6};
	rng_seed(&R, 4);
	ck_assert_int_eq(nn_sim_init(&c.s, 8, 8), 0);
	c.a = malloc(sizeof(float) * c.B * c.lda);
	c.c = malloc(sizeof(float) * c.B * c.ldc);
	fill(c.a, (size_t)c.B * c.lda, 1);
	fill(c.c, (size_t)c.B * c.ldc, 1);
	nn_sim_set_mask(&c.s, c.B, ku, ki);
	/* rows 0/3 share a user and 1/5 an item: those pairs are masked */
	ck_assert_int_eq(nn_sim_masked(&c.s, 0, 3), 1);
	ck_assert_int_eq(nn_sim_masked(&c.s, 3, 0), 1);
	ck_assert_int_eq(nn_sim_masked(&c.s, 5, 1), 1);
	ck_assert_int_eq(nn_sim_masked(&c.s, 0, 0), 0);
	ck_assert_int_eq(nn_sim_masked(&c.s, 0, 1), 0);
	ck_assert_int_eq(c.s.n_pairs, 4);
	double l = nn_infonce_forward(&c.s, c.a, c.lda, c.c, c.ldc, c.B, c.E, c.tau);
	ck_assert_double_eq_tol(l, infonce_ref(&c, ku, ki), 1e-4);
	float *da = calloc((size_t)c.B * c.lda, sizeof(float));
	float *dc = calloc((size_t)c.B * c.ldc, sizeof(float));
	nn_infonce_backward(&c.s, 1.3f, da, c.lda, dc, c.ldc);
	/* columns beyond E of the strided input get nothing */
	for (int b = 0; b < c.B; b++)
		for (int k = c.E; k < c.lda; k++)
			ck_assert_float_eq(da[b * c.lda + k], 0.0f);
	fd_check("infonce da", c.a, (size_t)c.B * c.lda, da, sim_obj, &c, 1e-3f, 1e-2, 1e-3);
	fd_check("infonce dc", c.c, (size_t)c.B * c.ldc, dc, sim_obj, &c, 1e-3f, 1e-2, 1e-3);
	nn_sim_release(&c.s);
	free(c.a);
	free(c.c);
	free(da);
	free(dc);
}
END_TEST

START_TEST(test_click)
{
	struct sim_ctx c = {.B = 6, .E = 6, .lda = 6, .ldc = 6, .click = 1};
	int32_t ku[6] = {0, 1, 2, 3, 4, 1}, ki[6] = {0, 1, 2, 3, 4, 5};
	float corr[6] = {0.1f, 2.0f, 0.5f, 1.5f, 0.0f, 3.0f};
	rng_seed(&R, 5);
	ck_assert_int_eq(nn_sim_init(&c.s, 6, 6), 0);
	c.a = malloc(sizeof(float) * 36);
	c.c = malloc(sizeof(float) * 36);
	c.corr = corr;
	fill(c.a, 36, 1);
	fill(c.c, 36, 1);
	nn_sim_set_mask(&c.s, 6, ku, ki);
	double l = nn_click_forward(&c.s, c.a, 6, c.c, 6, corr, 6, 6);
	/* reference: logits <u_b, v_j> - corr_j, row softmax, masked (1,5) and (5,1) */
	double want = 0;
	for (int b = 0; b < 6; b++) {
		double z = 0, pos = 0;
		for (int j = 0; j < 6; j++) {
			double s = dotd(c.a + b * 6, c.c + j * 6, 6) - corr[j];
			if (j == b)
				pos = s;
			if (j == b || ku[j] != ku[b])
				z += exp(s);
		}
		want += log(z) - pos;
	}
	ck_assert_double_eq_tol(l, want / 6, 1e-4);
	float du[36] = {0}, dv[36] = {0};
	nn_click_backward(&c.s, 1.3f, du, 6, dv, 6);
	fd_check("click du", c.a, 36, du, sim_obj, &c, 1e-3f, 1e-2, 1e-3);
	fd_check("click dv", c.c, 36, dv, sim_obj, &c, 1e-3f, 1e-2, 1e-3);
	nn_sim_release(&c.s);
	free(c.a);
	free(c.c);
}
END_TEST

/* ------------------------------------------------------------ head, cos^2 */

struct hc_ctx {
	float *h, *w, *b, *t, *pred;
	int B, E, ld;
};
static double head_obj(void *p)
{
	struct hc_ctx *c = p;
	return 0.8 * nn_head_forward(c->pred, c->h, c->ld, c->w, c->b, c->t, c->B, c->E);
}
static double cos2_obj(void *p)
{
	struct hc_ctx *c = p;
	return 0.8 * nn_cos2_forward(c->h, c->h + c->E, c->ld, c->B, c->E);
}

START_TEST(test_head_cos2)
{
	struct hc_ctx c = {.B = 5, .E = 4, .ld = 8};
	float h[40], w[4], b[1], t[5], pred[5];
	float dh[40] = {0}, dw[4] = {0}, db[1] = {0};
	rng_seed(&R, 6);
	fill(h, 40, 1);
	fill(w, 4, 1);
	fill(b, 1, 1);
	fill(t, 5, 2);
	c.h = h;
	c.w = w;
	c.b = b;
	c.t = t;
	c.pred = pred;
	/* head reads columns 4..7 (the second half) */
	c.h = h + 4;
	double l = nn_head_forward(pred, c.h, 8, w, b, t, 5, 4);
	double want = 0;
	for (int i = 0; i < 5; i++) {
		double p = b[0] + dotd(w, h + 4 + 8 * i, 4);
		want += (p - t[i]) * (p - t[i]);
	}
	ck_assert_double_eq_tol(l, want / 5, 1e-5);
	nn_head_backward(dh + 4, 8, dw, db, pred, c.h, 8, w, t, 5, 4, 0.8f);
	fd_check("head dh", h, 40, dh, head_obj, &c, 1e-3f, 1e-2, 1e-4);
	fd_check("head dw", w, 4, dw, head_obj, &c, 1e-3f, 1e-2, 1e-4);
	fd_check("head db", b, 1, db, head_obj, &c, 1e-3f, 1e-2, 1e-4);

	/* cos^2 between columns 0..3 and 4..7 of each row */
	c.h = h;
	memset(dh, 0, sizeof(dh));
	double want2 = 0;
	for (int i = 0; i < 5; i++) {
		double ab = dotd(h + 8 * i, h + 8 * i + 4, 4);
		double aa = dotd(h + 8 * i, h + 8 * i, 4),
		       bb = dotd(h + 8 * i + 4, h + 8 * i + 4, 4);
		want2 += ab * ab / (aa * bb);
	}
	ck_assert_double_eq_tol(nn_cos2_forward(h, h + 4, 8, 5, 4), want2 / 5, 1e-5);
	nn_cos2_backward(dh, dh + 4, 8, h, h + 4, 8, 5, 4, 0.8f);
	fd_check("cos2", h, 40, dh, cos2_obj, &c, 1e-3f, 1e-2, 1e-4);
}
END_TEST

START_TEST(test_fast_exp)
{
	float x[2001];
	for (int i = 0; i < 2001; i++)
		x[i] = -80.0f + 0.045f * (float)i;
	float y[2001];
	memcpy(y, x, sizeof(x));
	nn_exp_inplace(y, 2001);
	for (int i = 0; i < 2001; i++) {
		double e = exp((double)x[i]);
		ck_assert_msg(fabs(y[i] - e) <= 4e-7 * e, "exp(%g) = %g, want %g", (double)x[i],
			      (double)y[i], e);
	}
}
END_TEST

static Suite *nn_suite(void)
{
	Suite *s = suite_create("nn");
	TCase *tc = tcase_create("layers");
	tcase_set_timeout(tc, 60);
	tcase_add_test(tc, test_linear_values);
	tcase_add_test(tc, test_linear_activations);
	tcase_add_test(tc, test_mse);
	tcase_add_test(tc, test_rq);
	tcase_add_test(tc, test_infonce);
	tcase_add_test(tc, test_click);
	tcase_add_test(tc, test_head_cos2);
	tcase_add_test(tc, test_fast_exp);
	suite_add_tcase(s, tc);
	return s;
}

int main(void)
{
	return check_run(nn_suite());
}
