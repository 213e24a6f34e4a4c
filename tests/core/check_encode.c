/*
 * check_encode.c - sid_encode against independent expectations: tiny towers
 * whose answers are worked out by hand, double-precision references for the
 * MLP, exhaustive enumeration of every code tuple for the alternatives, and
 * bit-identity of every output across batch sizes, batch splits, kernels
 * and threads.  Towers are built by hand (struct sid_tower is public); one
 * test also goes through a real model file from tests/model_builder.h.
 */
#include <check.h>
#include "check_main.h"
#include <math.h>
#include <pthread.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "encode.h"
#include "mlp.h"
#include "model.h"
#include "model_builder.h"

/* ---- hand-built towers ---------------------------------------------------- */

struct tt {
	struct sid_tower t;
	void *mem[2 * SID_MAX_LAYERS + 2 * SID_MAX_LEVELS];
	int n_mem;
};

static float *tt_copy(struct tt *x, const float *src, size_t n)
{
	float *p = aligned_alloc(64, ((n * sizeof(float)) + 63) & ~(size_t)63);
	ck_assert(p);
	if (src)
		memcpy(p, src, n * sizeof(float));
	else
		memset(p, 0, n * sizeof(float));
	x->mem[x->n_mem++] = p;
	return p;
}

static void tt_init(struct tt *x, int D, enum sid_act act, enum sid_norm norm)
{
	memset(x, 0, sizeof(*x));
	x->t.present = 1;
	x->t.D = D;
	x->t.act = act;
	x->t.input_norm = norm;
}

/* Append a layer (w: (out, in); b may be NULL for zeros). */
static void tt_layer(struct tt *x, int out, const float *w, const float *b)
{
	struct sid_tower *t = &x->t;
	struct sid_layer *ly = &t->layer[t->n_layers];
	ly->in = t->n_layers ? t->layer[t->n_layers - 1].out : t->D;
	ly->out = out;
	ly->w = tt_copy(x, w, (size_t)out * ly->in);
	ly->b = tt_copy(x, b, (size_t)out);
	t->n_layers++;
	t->E = out;
	if (out > t->H_max)
		t->H_max = out;
}

/* Append a level (C: (K, E)); the norms as a loader would cache them. */
static void tt_level(struct tt *x, int K, const float *C)
{
	struct sid_tower *t = &x->t;
	const float *c = tt_copy(x, C, (size_t)K * t->E);
	float *cn = tt_copy(x, NULL, (size_t)K);
	for (int k = 0; k < K; k++) {
		double s = 0;
		for (int e = 0; e < t->E; e++)
			s += (double)c[k * t->E + e] * c[k * t->E + e];
		cn[k] = (float)s;
	}
	t->codebook[t->L] = c;
	t->cnorm[t->L] = cn;
	t->K[t->L] = K;
	t->L++;
}

static void tt_free(struct tt *x)
{
	for (int i = 0; i < x->n_mem; i++)
		free(x->mem[i]);
	x->n_mem = 0;
}

static uint64_t rng = 0x9E3779B97F4A7C15ull;

static float frand(void)
{
	rng ^= rng << 13;
	rng ^= rng >> 7;
	rng ^= rng << 17;
	return (float)((rng >> 11) * (1.0 / 9007199254740992.0)) * 2.0f - 1.0f;
}

static float *rand_vec(size_t n, float scale)
{
	float *v = malloc(n * sizeof(float));
	ck_assert(v);
	for (size_t i = 0; i < n; i++)
		v[i] = frand() * scale;
	return v;
}

/* A random tower D -> hidden.. -> E with levels K[], torch-like init. */
static void tt_random(struct tt *x, int D, const int *widths, int n_layers, const int *K, int L,
		      enum sid_act act, enum sid_norm norm)
{
	tt_init(x, D, act, norm);
	int in = D;
	for (int i = 0; i < n_layers; i++) {
		float *w = rand_vec((size_t)widths[i] * in, 1.0f / sqrtf((float)in));
		float *b = rand_vec((size_t)widths[i], 0.1f);
		tt_layer(x, widths[i], w, b);
		free(w);
		free(b);
		in = widths[i];
	}
	for (int l = 0; l < L; l++) {
		float *c = rand_vec((size_t)K[l] * in, 1.0f / (float)(1 << l));
		tt_level(x, K[l], c);
		free(c);
	}
}

/* All outputs of one encode, owned. */
struct res {
	size_t B;
	int L, E, n_alt;
	int32_t *codes, *alt_codes;
	float *dist, *quant, *latent, *alt_dist;
	int *alt_count;
};

static void res_alloc(struct res *r, const struct sid_tower *t, size_t B, int n_alt)
{
	memset(r, 0, sizeof(*r));
	r->B = B;
	r->L = t->L;
	r->E = t->E;
	r->n_alt = n_alt;
	r->codes = malloc(sizeof(int32_t) * (B * t->L + 1));
	r->dist = malloc(sizeof(float) * (B + 1));
	r->quant = malloc(sizeof(float) * (B * t->E + 1));
	r->latent = malloc(sizeof(float) * (B * t->E + 1));
	r->alt_codes = malloc(sizeof(int32_t) * (B * (n_alt + 1) * t->L + 1));
	r->alt_dist = malloc(sizeof(float) * (B * (n_alt + 1) + 1));
	r->alt_count = malloc(sizeof(int) * (B + 1));
	ck_assert(r->codes && r->dist && r->quant && r->latent && r->alt_codes && r->alt_dist &&
		  r->alt_count);
}

static void res_free(struct res *r)
{
	free(r->codes);
	free(r->dist);
	free(r->quant);
	free(r->latent);
	free(r->alt_codes);
	free(r->alt_dist);
	free(r->alt_count);
}

/* Encode rows [row0, row0 + n) of x into the matching rows of r. */
static int encode_rows(const struct sid_tower *t, const float *x, size_t row0, size_t n,
		       struct res *r, struct sid_workspace *ws, struct sid_error *err)
{
	struct sid_encode_out o = {
	    .codes = r->codes + row0 * r->L,
	    .dist = r->dist + row0,
	    .quant = r->quant + row0 * r->E,
	    .latent = r->latent + row0 * r->E,
	    .n_alt = r->n_alt,
	    .alt_codes = r->alt_codes + row0 * r->n_alt * r->L,
	    .alt_dist = r->alt_dist + row0 * r->n_alt,
	    .alt_count = r->alt_count + row0,
	};
	return sid_encode(t, x + row0 * t->D, n, &o, ws, err);
}

static void encode_all(const struct sid_tower *t, const float *x, size_t B, int n_alt,
		       struct res *r)
{
	struct sid_workspace *ws = sid_workspace_new();
	struct sid_error err;
	sid_error_clear(&err);
	res_alloc(r, t, B, n_alt);
	ck_assert_int_eq(encode_rows(t, x, 0, B, r, ws, &err), 0);
	sid_workspace_free(ws);
}

static void res_assert_equal(const struct res *a, const struct res *b, const char *what)
{
	size_t B = a->B;
	ck_assert_msg(!memcmp(a->codes, b->codes, sizeof(int32_t) * B * a->L), "%s: codes", what);
	ck_assert_msg(!memcmp(a->dist, b->dist, sizeof(float) * B), "%s: dist", what);
	ck_assert_msg(!memcmp(a->quant, b->quant, sizeof(float) * B * a->E), "%s: quant", what);
	ck_assert_msg(!memcmp(a->latent, b->latent, sizeof(float) * B * a->E), "%s: latent", what);
	if (a->n_alt) {
		ck_assert_msg(!memcmp(a->alt_count, b->alt_count, sizeof(int) * B), "%s: count",
			      what);
		ck_assert_msg(
		    !memcmp(a->alt_codes, b->alt_codes, sizeof(int32_t) * B * a->n_alt * a->L),
		    "%s: alt codes", what);
		ck_assert_msg(!memcmp(a->alt_dist, b->alt_dist, sizeof(float) * B * a->n_alt),
			      "%s: alt dist", what);
	}
}

/* ---- hand-computed towers --------------------------------------------------- */

static const float I2[4] = {1, 0, 0, 1};

/* 2-D latents, identity layer: the nearest codewords by hand. */
START_TEST(greedy_by_hand)
{
	/* Level 0: (0,0) (1,0) (0,1) (-1,-1); level 1: (0,0) (.25,0) (0,.25). */
	static const float C0[] = {0, 0, 1, 0, 0, 1, -1, -1};
	static const float C1[] = {0, 0, 0.25f, 0, 0, 0.25f};
	static const float x[] = {0.875f, 0.25f, -0.75f, -1.0f, 0.0f, 1.25f};
	/* Row 0: c0 = 1 (d^2 .078), r = (-.125, .25), c1 = 2, r = (-.125, 0).
	 * Row 1: c0 = 3, r = (.25, 0), c1 = 1, r = 0.
	 * Row 2: c0 = 2, r = (0, .25), c1 = 2, r = 0. */
	static const int32_t want[] = {1, 2, 3, 1, 2, 2};
	static const float want_dist[] = {0.015625f, 0.0f, 0.0f};
	static const float want_q[] = {1.0f, 0.25f, -0.75f, -1.0f, 0.0f, 1.25f};
	struct tt x2;
	struct res r;

	tt_init(&x2, 2, SID_ACT_IDENTITY, SID_NORM_NONE);
	tt_layer(&x2, 2, I2, NULL);
	tt_level(&x2, 4, C0);
	tt_level(&x2, 3, C1);
	encode_all(&x2.t, x, 3, 0, &r);
	for (int i = 0; i < 6; i++) {
		ck_assert_int_eq(r.codes[i], want[i]);
		ck_assert_float_eq(r.quant[i], want_q[i]);
		ck_assert_float_eq(r.latent[i], x[i]);
	}
	for (int i = 0; i < 3; i++)
		ck_assert_float_eq(r.dist[i], want_dist[i]);
	res_free(&r);
	tt_free(&x2);
}
END_TEST

/* Two layers with bias and relu, worked by hand. */
START_TEST(mlp_by_hand)
{
	/* Layer 0 (3 -> 2): rows (1, 2, 0) and (0, -1, 1), bias (0.5, -1), relu.
	 * Layer 1 (2 -> 2): rows (1, 1) and (2, -1), bias (0, 0.25), no act. */
	static const float W0[] = {1, 2, 0, 0, -1, 1}, b0[] = {0.5f, -1};
	static const float W1[] = {1, 1, 2, -1}, b1[] = {0, 0.25f};
	static const float C0[] = {0, 0, 4, 8, 5, 10};
	static const float x[] = {1, 1, 1, 2, -1, 3};
	/* Row 0: h = relu(3.5, -1) = (3.5, 0); z = (3.5, 7.25); nearest (4, 8).
	 * Row 1: h = relu(0.5, 3) = (0.5, 3); z = (3.5, -1.75); nearest (0, 0). */
	static const float want_z[] = {3.5f, 7.25f, 3.5f, -1.75f};
	struct tt x2;
	struct res r;

	tt_init(&x2, 3, SID_ACT_RELU, SID_NORM_NONE);
	tt_layer(&x2, 2, W0, b0);
	tt_layer(&x2, 2, W1, b1);
	tt_level(&x2, 3, C0);
	encode_all(&x2.t, x, 2, 0, &r);
	for (int i = 0; i < 4; i++)
		ck_assert_float_eq(r.latent[i], want_z[i]);
	ck_assert_int_eq(r.codes[0], 1);
	ck_assert_int_eq(r.codes[1], 0);
	ck_assert_float_eq(r.dist[0], 0.25f + 0.5625f);
	ck_assert_float_eq(r.dist[1], 12.25f + 3.0625f);
	res_free(&r);
	tt_free(&x2);
}
END_TEST

static double ref_act(enum sid_act act, double v)
{
	switch (act) {
	case SID_ACT_RELU:
		return v > 0 ? v : 0;
	case SID_ACT_SILU:
		return v / (1.0 + exp(-v));
	case SID_ACT_GELU:
		return 0.5 * v * (1.0 + erf(v / sqrt(2.0)));
	case SID_ACT_TANH:
		return tanh(v);
	case SID_ACT_IDENTITY:
		break;
	}
	return v;
}

START_TEST(activations_match_double_reference)
{
	static const enum sid_act acts[] = {SID_ACT_RELU, SID_ACT_SILU, SID_ACT_GELU, SID_ACT_TANH,
					    SID_ACT_IDENTITY};
	for (size_t a = 0; a < 5; a++)
		for (int i = -4000; i <= 4000; i++) {
			float v = (float)i / 400.0f; /* -10 .. 10 */
			double want = ref_act(acts[a], v);
			float got = sid__act_apply(acts[a], v);
			ck_assert_msg(fabs(got - want) <= 1e-6 + 4e-7 * fabs(want),
				      "act %d at %g: %.9g vs %.9g", (int)acts[a], v, got, want);
		}
	/* Known values. */
	ck_assert_float_eq_tol(sid__act_apply(SID_ACT_GELU, 1.0f), 0.8413447f, 1e-6f);
	ck_assert_float_eq_tol(sid__act_apply(SID_ACT_GELU, -1.0f), -0.1586553f, 1e-6f);
	ck_assert_float_eq_tol(sid__act_apply(SID_ACT_SILU, 1.0f), 0.7310586f, 1e-6f);
	ck_assert_float_eq_tol(sid__act_apply(SID_ACT_SILU, -100.0f), 0.0f, 1e-30f);
	ck_assert_float_eq(sid__act_apply(SID_ACT_RELU, -0.5f), 0.0f);
	ck_assert_float_eq(sid__act_apply(SID_ACT_RELU, 0.5f), 0.5f);
}
END_TEST

/* Each activation, through a random 3-layer tower, against double maths. */
START_TEST(each_activation_vs_double_reference)
{
	static const enum sid_act acts[] = {SID_ACT_RELU, SID_ACT_SILU, SID_ACT_GELU, SID_ACT_TANH,
					    SID_ACT_IDENTITY};
	static const int widths[] = {19, 11, 6};
	static const int K[] = {4};
	const size_t B = 40;

	for (size_t a = 0; a < 5; a++) {
		for (int norm = 0; norm < 2; norm++) {
			struct tt tw;
			struct res r;
			float *x = rand_vec(B * 9, 2.0f);
			tt_random(&tw, 9, widths, 3, K, 1, acts[a],
				  norm ? SID_NORM_L2 : SID_NORM_NONE);
			encode_all(&tw.t, x, B, 0, &r);
			for (size_t i = 0; i < B; i++) {
				double h[32], g[32], ss = 0;
				int in = 9;
				for (int f = 0; f < 9; f++) {
					h[f] = x[i * 9 + f];
					ss += h[f] * h[f];
				}
				if (norm)
					for (int f = 0; f < 9; f++)
						h[f] /= sqrt(ss);
				for (int li = 0; li < 3; li++) {
					const struct sid_layer *ly = &tw.t.layer[li];
					for (int j = 0; j < ly->out; j++) {
						double s = ly->b[j];
						for (int f = 0; f < in; f++)
							s += (double)ly->w[j * in + f] * h[f];
						g[j] = li < 2 ? ref_act(acts[a], s) : s;
					}
					in = ly->out;
					memcpy(h, g, sizeof(double) * in);
				}
				for (int e = 0; e < 6; e++)
					ck_assert_msg(fabs(r.latent[i * 6 + e] - h[e]) < 2e-5,
						      "act %d norm %d row %zu e %d: %.9g vs %.9g",
						      (int)acts[a], norm, i, e, r.latent[i * 6 + e],
						      h[e]);
			}
			free(x);
			res_free(&r);
			tt_free(&tw);
		}
	}
}
END_TEST

/*
 * One level of @K 2-d codewords @C0 behind an identity layer: the codes of
 * the @B rows @x are @want (and the distances @want_dist, unless NULL) with
 * every kernel; the generic argmin serves where AVX-512 is missing.
 */
static void check_codes_every_kernel(const float *C0, int K, const float *x, int B,
				     const int32_t *want, const float *want_dist)
{
	struct tt x2;
	struct res r;

	tt_init(&x2, 2, SID_ACT_IDENTITY, SID_NORM_NONE);
	tt_layer(&x2, 2, I2, NULL);
	tt_level(&x2, K, C0);
	for (int mode = 0; mode <= 2; mode++) {
		sid__gemm_force(mode);
		encode_all(&x2.t, x, (size_t)B, 0, &r);
		sid__gemm_force(0);
		for (int i = 0; i < B; i++) {
			ck_assert_msg(r.codes[i] == want[i], "mode %d row %d: code %d, want %d",
				      mode, i, (int)r.codes[i], (int)want[i]);
			if (want_dist)
				ck_assert_float_eq(r.dist[i], want_dist[i]);
		}
		res_free(&r);
	}
	tt_free(&x2);
}

/* Exact duplicates and exactly equidistant codewords: the lowest k wins. */
START_TEST(ties_lowest_k)
{
	/* Codewords 1 and 3 are the same point; 0 and 2 are equidistant from (0,0)
	 * as are 4 and 5 from (3,0) (both at distance 1). */
	static const float C0[] = {1, 0, 0.5f, 0.5f, 0, 1, 0.5f, 0.5f, 3, 1, 3, -1};
	static const float x[] = {0.5f, 0.5f, 0, 0, 3, 0, 0.6f, 0.4f};
	/* exact hit on 1 and 3; (0,0): 0, 2 at 1, 1, 3 at .5 -> 1; (3,0): 4
	 * and 5 tie; (.6,.4): nearest 1 (and its twin 3) */
	static const int32_t want[] = {1, 1, 4, 1};

	check_codes_every_kernel(C0, 6, x, 4, want, NULL);
}
END_TEST

/* Distinct codewords at exactly the same distance: the lowest k wins. */
START_TEST(ties_equidistant_pair)
{
	static const float C0[] = {1, 0, 0, 1, -1, 0, 0, -1};
	static const float x[] = {0, 0, 0.25f, 0.25f};
	/* all four at distance 1; 0 and 1 tie at .75^2 + .25^2 = .625 */
	static const int32_t want[] = {0, 0};
	static const float want_dist[] = {1.0f, 0.625f};

	check_codes_every_kernel(C0, 4, x, 2, want, want_dist);
}
END_TEST

/* Equal scores where the lower k is odd and the higher even: the AVX-512
 * argmin keeps even and odd k apart and merges them, and had it taken the
 * even stream on every tie, (1, 0) would have been code 2. */
START_TEST(ties_odd_k_before_even_k)
{
	/* Codewords 1 and 2 are the same point, as are 3 and 4; 0 and 5 far. */
	static const float C0[] = {9, 9, 1, 0, 1, 0, -2, 1, -2, 1, 9, -9};
	static const float x[] = {1, 0, 0.75f, 0.25f, -2, 1, -1.5f, 0.5f};
	static const int32_t want[] = {1, 1, 3, 3};

	check_codes_every_kernel(C0, 6, x, 4, want, NULL);
}
END_TEST

START_TEST(l2_input_norm)
{
	static const float x[] = {3, 4, 0, 0, -30, 40, 1e-10f, 0, 1e-13f, -1e-13f};
	static const float C0[] = {0.6f, 0.8f, 0, 0};
	struct tt x2;
	struct res r;

	tt_init(&x2, 2, SID_ACT_IDENTITY, SID_NORM_L2);
	tt_layer(&x2, 2, I2, NULL);
	tt_level(&x2, 2, C0);
	encode_all(&x2.t, x, 5, 0, &r);
	ck_assert_float_eq_tol(r.latent[0], 0.6f, 1e-7f);
	ck_assert_float_eq_tol(r.latent[1], 0.8f, 1e-7f);
	/* The zero vector stays zero (no NaN). */
	ck_assert_float_eq(r.latent[2], 0.0f);
	ck_assert_float_eq(r.latent[3], 0.0f);
	ck_assert_int_eq(r.codes[1], 1);
	ck_assert_float_eq(r.dist[1], 0.0f);
	ck_assert_float_eq_tol(r.latent[4], -0.6f, 1e-7f);
	ck_assert_float_eq_tol(r.latent[5], 0.8f, 1e-7f);
	/* Small rows normalise to unit length; below 1e-12 the divisor is
	 * 1e-12 (torch F.normalize's eps). */
	ck_assert_float_eq_tol(r.latent[6], 1.0f, 3e-7f);
	ck_assert_float_eq_tol(r.latent[8], 0.1f, 1e-7f);
	ck_assert_float_eq_tol(r.latent[9], -0.1f, 1e-7f);
	ck_assert_int_eq(r.codes[0], 0);
	ck_assert_float_eq_tol(r.dist[0], 0.0f, 1e-12f);
	res_free(&r);
	tt_free(&x2);
}
END_TEST

/* dist = ||z - q||^2 and q = the sum of the chosen codewords, on a random tower. */
START_TEST(dist_and_quant)
{
	static const int widths[] = {24, 8};
	static const int K[] = {16, 9, 33, 5};
	const size_t B = 70;
	struct tt tw;
	struct res r;
	float *x = rand_vec(B * 20, 1.0f);

	tt_random(&tw, 20, widths, 2, K, 4, SID_ACT_GELU, SID_NORM_NONE);
	encode_all(&tw.t, x, B, 0, &r);
	for (size_t i = 0; i < B; i++) {
		double d = 0;
		for (int e = 0; e < 8; e++) {
			double q = 0;
			for (int l = 0; l < 4; l++) {
				int c = r.codes[i * 4 + l];
				ck_assert(c >= 0 && c < K[l]);
				q += tw.t.codebook[l][c * 8 + e];
			}
			ck_assert_float_eq_tol(r.quant[i * 8 + e], q, 1e-6);
			d += (r.latent[i * 8 + e] - q) * (r.latent[i * 8 + e] - q);
		}
		ck_assert_float_eq_tol(r.dist[i], d, 1e-5 * (1 + d));
		/* Greedy: at every level the chosen code is the nearest to the residual. */
		double res_[8];
		for (int e = 0; e < 8; e++)
			res_[e] = r.latent[i * 8 + e];
		for (int l = 0; l < 4; l++) {
			int c = r.codes[i * 4 + l];
			double best = INFINITY, got = 0;
			for (int k = 0; k < K[l]; k++) {
				double s = 0;
				for (int e = 0; e < 8; e++) {
					double v = res_[e] - tw.t.codebook[l][k * 8 + e];
					s += v * v;
				}
				if (s < best)
					best = s;
				if (k == c)
					got = s;
			}
			ck_assert_msg(got <= best + 1e-5, "row %zu level %d not nearest", i, l);
			for (int e = 0; e < 8; e++)
				res_[e] -= tw.t.codebook[l][c * 8 + e];
		}
	}
	free(x);
	res_free(&r);
	tt_free(&tw);
}
END_TEST

/* ---- alternatives vs brute force ------------------------------------------- */

struct tuple {
	int32_t c[3];
	float d;
};

static int tuple_cmp(const void *pa, const void *pb)
{
	const struct tuple *a = pa, *b = pb;
	if (a->d != b->d)
		return a->d < b->d ? -1 : 1;
	for (int l = 0; l < 3; l++)
		if (a->c[l] != b->c[l])
			return a->c[l] < b->c[l] ? -1 : 1;
	return 0;
}

/*
 * Every tuple of a 3-level code space (K0 x K1 x K2), its distance computed
 * exactly as rq.h defines it (residual r - C_l[c_l] in float, level by
 * level; ||r||^2 summed in double), sorted by (distance, codes).
 */
static int brute_force(const struct sid_tower *t, const float *z, struct tuple *out)
{
	int n = 0, E = t->E;
	for (int a = 0; a < t->K[0]; a++)
		for (int b = 0; b < t->K[1]; b++)
			for (int c = 0; c < t->K[2]; c++) {
				float r[8];
				double s = 0;
				int32_t cc[3] = {a, b, c};
				memcpy(r, z, sizeof(float) * E);
				for (int l = 0; l < 3; l++)
					for (int e = 0; e < E; e++)
						r[e] -= t->codebook[l][cc[l] * E + e];
				for (int e = 0; e < E; e++)
					s += (double)r[e] * r[e];
				memcpy(out[n].c, cc, sizeof(cc));
				out[n].d = (float)s;
				n++;
			}
	qsort(out, n, sizeof(*out), tuple_cmp);
	return n;
}

static void check_alternatives(const struct tt *tw, const float *x, size_t B, int n_alt)
{
	struct res r;
	struct tuple all[1000];
	int checked = 0;

	encode_all(&tw->t, x, B, n_alt, &r);
	for (size_t i = 0; i < B; i++) {
		int n = brute_force(&tw->t, r.latent + i * tw->t.E, all), m = 0;
		int space = n - 1;
		ck_assert_int_eq(r.alt_count[i], space < n_alt ? space : n_alt);
		for (int j = 0; j < n && m < r.alt_count[i]; j++) {
			if (!memcmp(all[j].c, r.codes + i * 3, sizeof(all[j].c)))
				continue; /* the greedy tuple is never an alternative */
			const int32_t *got = r.alt_codes + (i * n_alt + m) * 3;
			{
				ck_assert_msg(
				    !memcmp(got, all[j].c, sizeof(all[j].c)),
				    "row %zu alt %d: (%d %d %d) vs brute force (%d %d %d)", i, m,
				    got[0], got[1], got[2], all[j].c[0], all[j].c[1], all[j].c[2]);
				ck_assert_msg(r.alt_dist[i * n_alt + m] == all[j].d,
					      "row %zu alt %d: dist %.9g vs %.9g", i, m,
					      r.alt_dist[i * n_alt + m], all[j].d);
				checked++;
			}
			m++;
		}
		for (int s = r.alt_count[i]; s < n_alt; s++) {
			ck_assert_int_eq(r.alt_codes[(i * n_alt + s) * 3], -1);
			ck_assert(isinf(r.alt_dist[i * n_alt + s]));
		}
	}
	ck_assert_int_gt(checked, 0);
	res_free(&r);
}

/* Width 2 * top_k >= every prefix count: the beam is exhaustive, so it must
 * agree with brute force on every alternative, in order, to the bit. */
START_TEST(alternatives_exhaustive_beam)
{
	static const int K[] = {5, 5, 5};
	struct tt tw;
	float *x = rand_vec(30 * 3, 1.0f);

	tt_init(&tw, 3, SID_ACT_IDENTITY, SID_NORM_NONE);
	{
		static const float I3[9] = {1, 0, 0, 0, 1, 0, 0, 0, 1};
		tt_layer(&tw, 3, I3, NULL);
	}
	for (int l = 0; l < 3; l++) {
		float *c = rand_vec(5 * 3, 1.0f);
		tt_level(&tw, K[l], c);
		free(c);
	}
	check_alternatives(&tw, x, 30, 15); /* W = 32 >= 25 prefixes */
	check_alternatives(&tw, x, 30, 12); /* W = 26 */
	free(x);
	tt_free(&tw);
}
END_TEST

/* Coarse-to-fine codebooks (level scale 1, 1/8, 1/64) on a random tower:
 * a narrow beam (n_alt 3, W = 8 < 25) still finds the true best tuples. */
START_TEST(alternatives_narrow_beam_hierarchical)
{
	static const int widths[] = {10, 4};
	static const int K[] = {5, 6, 4};
	struct tt tw;
	float *x = rand_vec(60 * 7, 1.0f);

	tt_init(&tw, 7, SID_ACT_RELU, SID_NORM_L2);
	{
		int in = 7;
		for (int i = 0; i < 2; i++) {
			float *w = rand_vec((size_t)widths[i] * in, 1.0f);
			tt_layer(&tw, widths[i], w, NULL);
			free(w);
			in = widths[i];
		}
	}
	for (int l = 0; l < 3; l++) {
		float *c = rand_vec((size_t)K[l] * 4, 1.0f / (float)(1 << (3 * l)));
		tt_level(&tw, K[l], c);
		free(c);
	}
	check_alternatives(&tw, x, 60, 3);
	check_alternatives(&tw, x, 60, 1);
	free(x);
	tt_free(&tw);
}
END_TEST

/* A code space of 2 x 2 x 1 = 4 tuples: 10 alternatives asked, 3 exist. */
START_TEST(alternatives_more_than_space)
{
	static const int K[] = {2, 2, 1};
	struct tt tw;
	float *x = rand_vec(9 * 2, 1.0f);

	tt_init(&tw, 2, SID_ACT_IDENTITY, SID_NORM_NONE);
	tt_layer(&tw, 2, I2, NULL);
	for (int l = 0; l < 3; l++) {
		float *c = rand_vec((size_t)K[l] * 2, 1.0f);
		tt_level(&tw, K[l], c);
		free(c);
	}
	check_alternatives(&tw, x, 9, 10);
	check_alternatives(&tw, x, 9, SID_TOPK_MAX - 1);
	free(x);
	tt_free(&tw);
}
END_TEST

/* A codebook larger than one score block (2048 codewords): greedy and the
 * alternatives against brute force, and a tie across the block boundary. */
START_TEST(codebook_larger_than_block)
{
	static const float I4[16] = {1, 0, 0, 0, 0, 1, 0, 0, 0, 0, 1, 0, 0, 0, 0, 1};
	const int K = 2500, E = 4, n_alt = 5;
	const size_t B = 20;
	struct tt tw;
	struct res r;
	float *c = rand_vec((size_t)K * E, 1.0f), *x = rand_vec(B * E, 1.0f);

	memcpy(c + 2100 * E, c + 100 * E, sizeof(float) * E); /* twins 100 and 2100 */
	memcpy(x, c + 100 * E, sizeof(float) * E);	      /* row 0 sits on them */
	tt_init(&tw, E, SID_ACT_IDENTITY, SID_NORM_NONE);
	tt_layer(&tw, E, I4, NULL);
	tt_level(&tw, K, c);
	encode_all(&tw.t, x, B, n_alt, &r);
	ck_assert_int_eq(r.codes[0], 100);
	ck_assert_int_eq(r.alt_codes[0], 2100);
	ck_assert_float_eq(r.alt_dist[0], 0.0f);
	for (size_t i = 0; i < B; i++) {
		/* Exact distances as rq.h defines them, ranked (distance, k). */
		struct tuple *all = malloc(sizeof(*all) * K);
		for (int k = 0; k < K; k++) {
			float rr[4];
			double d = 0;
			for (int e = 0; e < E; e++) {
				rr[e] = x[i * E + e] - c[k * E + e];
				d += (double)rr[e] * rr[e];
			}
			all[k].c[0] = k;
			all[k].c[1] = all[k].c[2] = 0;
			all[k].d = (float)d;
		}
		qsort(all, K, sizeof(*all), tuple_cmp);
		ck_assert_int_eq(r.codes[i], all[0].c[0]);
		ck_assert_int_eq(r.alt_count[i], n_alt);
		for (int m = 0; m < n_alt; m++) {
			ck_assert_int_eq(r.alt_codes[i * n_alt + m], all[m + 1].c[0]);
			ck_assert(r.alt_dist[i * n_alt + m] == all[m + 1].d);
		}
		free(all);
	}
	/* Batch of one gives the same. */
	{
		struct res one;
		struct sid_workspace *ws = sid_workspace_new();
		struct sid_error err;
		res_alloc(&one, &tw.t, B, n_alt);
		for (size_t i = 0; i < B; i++)
			ck_assert_int_eq(encode_rows(&tw.t, x, i, 1, &one, ws, &err), 0);
		res_assert_equal(&r, &one, "large codebook, batch of one");
		res_free(&one);
		sid_workspace_free(ws);
	}
	res_free(&r);
	free(c);
	free(x);
	tt_free(&tw);
}
END_TEST

/* ---- invariance: batch size, splits, kernels, threads ---------------------- */

static void random_big_tower(struct tt *tw, enum sid_act act)
{
	static const int widths[] = {50, 29, 12};
	static const int K[] = {7, 300, 13};
	tt_random(tw, 37, widths, 3, K, 3, act, SID_NORM_L2);
}

START_TEST(batch_size_invariance)
{
	static const size_t splits[] = {1, 2, 15, 16, 17, 31, 100, 255, 256, 257, 3};
	const size_t B = 700;
	const int n_alt = 4;

	for (int a = 0; a < 2; a++) {
		struct tt tw;
		struct res all, one, part;
		struct sid_workspace *ws = sid_workspace_new();
		struct sid_error err;
		float *x = rand_vec(B * 37, 1.5f);

		random_big_tower(&tw, a ? SID_ACT_GELU : SID_ACT_RELU);
		encode_all(&tw.t, x, B, n_alt, &all);

		res_alloc(&one, &tw.t, B, n_alt);
		for (size_t i = 0; i < B; i++)
			ck_assert_int_eq(encode_rows(&tw.t, x, i, 1, &one, ws, &err), 0);
		res_assert_equal(&all, &one, "batch of one");

		res_alloc(&part, &tw.t, B, n_alt);
		for (size_t i = 0, s = 0; i < B; s++) {
			size_t n = splits[s % (sizeof(splits) / sizeof(splits[0]))];
			if (n > B - i)
				n = B - i;
			ck_assert_int_eq(encode_rows(&tw.t, x, i, n, &part, ws, &err), 0);
			i += n;
		}
		res_assert_equal(&all, &part, "uneven splits");

		/* The portable kernels give the same bits. */
		for (int mode = 1; mode <= 2; mode++) {
			struct res g;
			sid__gemm_force(mode);
			encode_all(&tw.t, x, B, n_alt, &g);
			sid__gemm_force(0);
			res_assert_equal(&all, &g, mode == 1 ? "generic kernel" : "avx2 kernel");
			res_free(&g);
		}
		/* Without alternatives, the greedy outputs do not change. */
		{
			struct res g;
			encode_all(&tw.t, x, B, 0, &g);
			g.n_alt = 0;
			all.n_alt = 0;
			res_assert_equal(&all, &g, "n_alt 0");
			all.n_alt = n_alt;
			res_free(&g);
		}
		res_free(&all);
		res_free(&one);
		res_free(&part);
		free(x);
		sid_workspace_free(ws);
		tt_free(&tw);
	}
}
END_TEST

struct thr {
	int id;
	const struct sid_tower *t;
	const float *x;
	size_t B;
	struct res r;
	int rc;
};

static void *thr_main(void *arg)
{
	struct thr *th = arg;
	struct sid_workspace *ws = sid_workspace_new();
	struct sid_error err;
	th->rc = 0;
	/* Different batch sizes per thread, several rounds each. */
	for (int round = 0; round < 3 && !th->rc; round++) {
		size_t step = 1 + (size_t)th->id * 37 + (size_t)round * 50;
		for (size_t i = 0; i < th->B && !th->rc; i += step) {
			size_t n = th->B - i < step ? th->B - i : step;
			th->rc = encode_rows(th->t, th->x, i, n, &th->r, ws, &err);
		}
	}
	sid_workspace_free(ws);
	return NULL;
}

START_TEST(threads_bit_identical)
{
	const size_t B = 500;
	struct tt tw;
	struct res ref;
	struct thr th[4];
	pthread_t tid[4];
	float *x = rand_vec(B * 37, 1.0f);

	random_big_tower(&tw, SID_ACT_SILU);
	encode_all(&tw.t, x, B, 2, &ref);
	for (int i = 0; i < 4; i++) {
		th[i].id = i;
		th[i].t = &tw.t;
		th[i].x = x;
		th[i].B = B;
		res_alloc(&th[i].r, &tw.t, B, 2);
		ck_assert_int_eq(pthread_create(&tid[i], NULL, thr_main, &th[i]), 0);
	}
	for (int i = 0; i < 4; i++) {
		pthread_join(tid[i], NULL);
		ck_assert_int_eq(th[i].rc, 0);
		res_assert_equal(&ref, &th[i].r, "thread");
		res_free(&th[i].r);
	}
	res_free(&ref);
	free(x);
	tt_free(&tw);
}
END_TEST

/* ---- a model read from a file ---------------------------------------------- */

START_TEST(loaded_model_batch_invariance)
{
	struct mb_spec s;
	int hidden[] = {40, 24};
	int K[] = {64, 17, 128};
	uint8_t *buf = NULL;
	size_t len = 0;
	struct sid_model *m = NULL;
	struct sid_error err;
	const size_t B = 300;
	struct res all, one;
	struct sid_workspace *ws = sid_workspace_new();

	mb_spec_init(&s);
	mb_tower(&s, SID_TOWER_ITEM, 48, hidden, 2, 16, 3, K, "gelu", "l2", 1);
	mb_tower(&s, SID_TOWER_USER, 10, NULL, 0, 16, 2, K, "relu", "none", 0);
	s.seed = 7;
	ck_assert_int_eq(mb_build_buffer(&s, &buf, &len, &err), 0);
	ck_assert_msg(sid_model_load_buffer(buf, len, &m, &err) == 0, "%s", err.msg);
	for (int kind = 0; kind < SID_TOWER_COUNT; kind++) {
		const struct sid_tower *t = sid_model_tower(m, kind);
		ck_assert(t);
		float *x = rand_vec(B * t->D, 2.0f);
		encode_all(t, x, B, 3, &all);
		res_alloc(&one, t, B, 3);
		for (size_t i = 0; i < B; i++)
			ck_assert_int_eq(encode_rows(t, x, i, 1, &one, ws, &err), 0);
		res_assert_equal(&all, &one, "loaded model, batch of one");
		/* The chosen code is the nearest codeword to z at level 0. */
		for (size_t i = 0; i < B; i++) {
			double best = INFINITY;
			int arg = -1;
			for (int k = 0; k < t->K[0]; k++) {
				double d = 0;
				for (int e = 0; e < t->E; e++) {
					double v =
					    all.latent[i * t->E + e] - t->codebook[0][k * t->E + e];
					d += v * v;
				}
				if (d < best - 1e-9) {
					best = d;
					arg = k;
				}
			}
			ck_assert_int_eq(all.codes[i * t->L], arg);
		}
		res_free(&all);
		res_free(&one);
		free(x);
	}
	sid_model_unref(m);
	free(buf);
	sid_workspace_free(ws);
}
END_TEST

/* ---- errors ---------------------------------------------------------------- */

START_TEST(nonfinite_rejected_with_row)
{
	static const float C0[] = {0, 0, 1, 1};
	const float bads[] = {NAN, INFINITY, -INFINITY};
	struct tt x2;
	struct sid_workspace *ws = sid_workspace_new();

	tt_init(&x2, 2, SID_ACT_IDENTITY, SID_NORM_L2);
	tt_layer(&x2, 2, I2, NULL);
	tt_level(&x2, 2, C0);
	for (int b = 0; b < 3; b++)
		for (int row = 0; row < 5; row++) {
			float x[10];
			int32_t codes[5];
			float dist[5];
			struct sid_error err;
			struct sid_encode_out o = {.codes = codes, .dist = dist};
			for (int i = 0; i < 10; i++)
				x[i] = (float)i * 0.1f;
			x[row * 2 + (row & 1)] = bads[b];
			memset(codes, 0x5a, sizeof(codes));
			memset(dist, 0x5a, sizeof(dist));
			sid_error_clear(&err);
			ck_assert_int_eq(sid_encode(&x2.t, x, 5, &o, ws, &err), SID_EINVAL);
			ck_assert_int_eq(err.code, SID_EINVAL);
			ck_assert_int_eq(err.index, row);
			ck_assert_msg(strstr(err.msg, "row") != NULL, "%s", err.msg);
			for (int i = 0; i < 5; i++) {
				ck_assert_int_eq(codes[i], 0x5a5a5a5a);
				uint32_t u;
				memcpy(&u, &dist[i], 4);
				ck_assert_uint_eq(u, 0x5a5a5a5au);
			}
		}
	/* A wide tower: the bad value inside a vector block and in the tail. */
	{
		struct tt tw;
		static const int widths[] = {8};
		static const int K[] = {3};
		const int cols[] = {0, 20, 31, 32, 36};
		tt_random(&tw, 37, widths, 1, K, 1, SID_ACT_RELU, SID_NORM_NONE);
		for (int mode = 0; mode < 2; mode++)
			for (size_t c = 0; c < sizeof(cols) / sizeof(cols[0]); c++) {
				float *xw = rand_vec(10 * 37, 1.0f);
				int32_t codes[10];
				struct sid_error err;
				struct sid_encode_out o = {.codes = codes};
				xw[7 * 37 + cols[c]] = c % 2 ? NAN : -INFINITY;
				sid__gemm_force(mode);
				ck_assert_int_eq(sid_encode(&tw.t, xw, 10, &o, ws, &err),
						 SID_EINVAL);
				sid__gemm_force(0);
				ck_assert_int_eq(err.index, 7);
				ck_assert_msg(strstr(err.msg, "column") != NULL, "%s", err.msg);
				free(xw);
			}
		tt_free(&tw);
	}
	/* Huge but finite values are fine (no overflow into a false alarm). */
	{
		float x[2] = {3e38f, -3e38f};
		int32_t codes[1];
		struct sid_encode_out o = {.codes = codes};
		ck_assert_int_eq(sid_encode(&x2.t, x, 1, &o, ws, NULL), 0);
	}
	sid_workspace_free(ws);
	tt_free(&x2);
}
END_TEST

/*
 * A hidden layer that overflows on the way to a finite value: 4 -> 1 (sum
 * of the inputs) -> 4, no normalisation.  [-3e38, -3e38, 3e38, 3.4e38]
 * sums to 4e37 exactly, but summed in order float32 reaches -inf after
 * the first two terms; relu made that a 0 and tanh a -1, and the row had a
 * sound-looking wrong code (relu: 3, the zero codeword, at distance 0).
 * Each row now gets the code exact arithmetic gives, or a distance that is
 * not finite, which every caller refuses (sid_encode_overflow; a path that
 * sums in another order may not overflow); where the exact distance itself
 * overflows (relu, silu, gelu of 4e37), only the latter.
 */
START_TEST(hidden_overflow_rejected_with_row)
{
	static const float W0[] = {1, 1, 1, 1}, W1[] = {1, 0, -1, 0};
	static const float C[] = {1, 0, -1, 0, -1, 0, 1, 0, 0, 1, 0, -1, 0, 0, 0, 0};
	static const float rows[3][4] = {
	    {1, 2, 3, 4}, {-3e38f, -3e38f, 3e38f, 3.4e38f}, {3e38f, 3e38f, -3e38f, -3.4e38f}};
	static const enum sid_act acts[] = {SID_ACT_RELU, SID_ACT_TANH, SID_ACT_SILU, SID_ACT_GELU};
	/* exact codes per activation and row; -1: the exact distance overflows */
	static const int want[4][3] = {{0, -1, 3}, {0, 0, 1}, {0, -1, 3}, {0, -1, 3}};
	struct sid_workspace *ws = sid_workspace_new();

	for (size_t a = 0; a < sizeof(acts) / sizeof(acts[0]); a++) {
		struct tt tw;
		tt_init(&tw, 4, acts[a], SID_NORM_NONE);
		tt_layer(&tw, 1, W0, NULL);
		tt_layer(&tw, 4, W1, NULL);
		tt_level(&tw, 4, C);
		for (int mode = 0; mode < 3; mode++)
			for (int r = 0; r < 3; r++) {
				int32_t codes[1] = {-7};
				float dist[1];
				struct sid_encode_out o = {.codes = codes, .dist = dist};
				struct sid_error err;
				sid_error_clear(&err);
				sid__gemm_force(mode);
				int rc = sid_encode(&tw.t, rows[r], 1, &o, ws, &err);
				sid__gemm_force(0);
				ck_assert_msg(rc == 0, "%s", err.msg);
				if (r > 0 && sid_encode_overflow(dist, NULL, NULL, 0, 1) == 0)
					continue; /* refused by every caller */
				ck_assert_msg(
				    codes[0] == want[a][r],
				    "act %d mode %d row %d: code %d (distance %g), want %d",
				    (int)acts[a], mode, r, codes[0], dist[0], want[a][r]);
			}
		tt_free(&tw);
	}
	sid_workspace_free(ws);
}
END_TEST

/*
 * Scores that overflow in the search: codewords of squared norm 2.3e38 and
 * 2.9e38 (beyond what a model file may hold now, so the tower is built
 * here) and an input equal to the second.  cn - 2<r, c> is -inf for both
 * without an FMA; the lower code won the tie, at a finite distance of
 * 2.9e36, where an FMA gave the exact code 1 at 0.  Every path now gives
 * the exact code or a distance that is not finite (refused), never the
 * tied one; a row near the small codewords keeps its code.
 */
START_TEST(codeword_score_overflow_refused)
{
	static const float C[] = {7.65e18f, 7.65e18f, 7.65e18f, 7.65e18f, 8.5e18f, 8.5e18f,
				  8.5e18f,  8.5e18f,  -1,	-1,	  -1,	   -1,
				  1,	    1,	      1,	1};
	static const float rows[2][4] = {{8.5e18f, 8.5e18f, 8.5e18f, 8.5e18f}, {1, 1, 1, 0.5f}};
	static const float I4[] = {1, 0, 0, 0, 0, 1, 0, 0, 0, 0, 1, 0, 0, 0, 0, 1};
	struct sid_workspace *ws = sid_workspace_new();
	struct tt tw;

	tt_init(&tw, 4, SID_ACT_IDENTITY, SID_NORM_NONE);
	tt_layer(&tw, 4, I4, NULL);
	tt_level(&tw, 4, C);
	for (int mode = 0; mode < 3; mode++)
		for (int r = 0; r < 2; r++) {
			int32_t codes[1] = {-7};
			float dist[1];
			struct sid_encode_out o = {.codes = codes, .dist = dist};
			sid__gemm_force(mode);
			ck_assert_int_eq(sid_encode(&tw.t, rows[r], 1, &o, ws, NULL), 0);
			sid__gemm_force(0);
			if (r == 0 && !isfinite(dist[0]))
				continue; /* refused */
			ck_assert_msg(codes[0] == (r == 0 ? 1 : 3),
				      "mode %d row %d: code %d at distance %g", mode, r, codes[0],
				      dist[0]);
			ck_assert_float_eq(dist[0], r == 0 ? 0.0f : 0.25f);
		}
	tt_free(&tw);
	sid_workspace_free(ws);
}
END_TEST

/* A row is refused when its distance or one of its alternatives' is not
 * finite; the padding past alt_count (INFINITY) is not an alternative. */
START_TEST(overflow_rows)
{
	float dist[3] = {1, 2, 3};
	/* (3, 2): row 1 has one alternative and padding, row 2 an infinite one */
	float alt[6] = {1.5f, 2.5f, 2.5f, INFINITY, 3.5f, INFINITY};
	int cnt[3] = {2, 1, 2};

	ck_assert_int_eq(sid_encode_overflow(dist, alt, cnt, 2, 2), -1);
	ck_assert_int_eq(sid_encode_overflow(dist, alt, cnt, 2, 3), 2);
	ck_assert_int_eq(sid_encode_overflow(dist, NULL, NULL, 0, 3), -1);
	dist[1] = NAN;
	ck_assert_int_eq(sid_encode_overflow(dist, alt, cnt, 2, 3), 1);
	ck_assert_int_eq(sid_encode_overflow(dist, NULL, NULL, 0, 3), 1);
}
END_TEST

START_TEST(argument_errors)
{
	static const float C0[] = {0, 0, 1, 1};
	float x[2] = {1, 2};
	int32_t codes[1], ac[16];
	float ad[16];
	int cnt[1];
	struct tt x2;
	struct sid_error err;
	struct sid_workspace *ws = sid_workspace_new();
	struct sid_encode_out o = {.codes = codes};

	tt_init(&x2, 2, SID_ACT_IDENTITY, SID_NORM_NONE);
	tt_layer(&x2, 2, I2, NULL);
	tt_level(&x2, 2, C0);
	ck_assert_int_eq(sid_encode(&x2.t, x, 1, &o, NULL, &err), SID_EINVAL);
	ck_assert_int_eq(sid_encode(&x2.t, NULL, 1, &o, ws, &err), SID_EINVAL);
	ck_assert_int_eq(sid_encode(&x2.t, NULL, 0, &o, ws, &err), 0);
	o.n_alt = 1;
	ck_assert_int_eq(sid_encode(&x2.t, x, 1, &o, ws, &err), SID_EINVAL);
	ck_assert_msg(strstr(err.msg, "needs alt_codes") != NULL, "%s", err.msg);
	/* each of the three missing alone is refused, not written through */
	o.alt_codes = ac;
	o.alt_dist = ad;
	ck_assert_int_eq(sid_encode(&x2.t, x, 1, &o, ws, &err), SID_EINVAL);
	ck_assert_msg(strstr(err.msg, "needs alt_codes") != NULL, "%s", err.msg);
	o.alt_count = cnt;
	o.alt_dist = NULL;
	ck_assert_int_eq(sid_encode(&x2.t, x, 1, &o, ws, &err), SID_EINVAL);
	o.alt_dist = ad;
	/* top_k SID_TOPK_MAX + 1, with room for its alternatives: still refused */
	o.n_alt = SID_TOPK_MAX;
	ck_assert_int_eq(sid_encode(&x2.t, x, 1, &o, ws, &err), SID_EINVAL);
	ck_assert_msg(strstr(err.msg, "n_alt 16 outside 0..15") != NULL, "%s", err.msg);
	o.n_alt = 1;
	ck_assert_int_eq(sid_encode(&x2.t, x, 1, &o, ws, &err), 0);
	ck_assert_int_eq(cnt[0], 1);
	o.codes = NULL;
	ck_assert_int_eq(sid_encode(&x2.t, x, 1, &o, ws, &err), SID_EINVAL);
	o.codes = codes;
	x2.t.present = 0;
	ck_assert_int_eq(sid_encode(&x2.t, x, 1, &o, ws, &err), SID_EINVAL);
	x2.t.present = 1;
	x2.t.layer[0].in = 3; /* does not chain from D */
	ck_assert_int_eq(sid_encode(&x2.t, x, 1, &o, ws, &err), SID_EINVAL);
	ck_assert_msg(strstr(err.msg, "layer 0") != NULL, "%s", err.msg);
	x2.t.layer[0].in = 2;
	sid_workspace_free(ws);
	sid_workspace_free(NULL);
	tt_free(&x2);
}
END_TEST

/* The largest tower the limits of model.h allow encodes (a bound of "<"
 * where "<=" is meant refused it): SID_MAX_LEVELS levels, layers
 * SID_MAX_DIM wide, a codebook of SID_MAX_CODEBOOK codewords; one past
 * each is refused. */
START_TEST(tower_at_the_limits)
{
	const int W = SID_MAX_DIM, K = SID_MAX_CODEBOOK;
	struct sid_workspace *ws = sid_workspace_new();
	struct sid_error err;
	struct tt tw;
	int32_t codes[SID_MAX_LEVELS];
	float dist[1], *w, *c;
	struct sid_encode_out o = {.codes = codes, .dist = dist};

	/* SID_MAX_LEVELS levels of {0, 2^-l} on a 1-d latent: the codes are
	 * the binary digits of x; 1.5 is 1.1 in binary. */
	{
		const float x[] = {1.5f};
		tt_init(&tw, 1, SID_ACT_IDENTITY, SID_NORM_NONE);
		tt_layer(&tw, 1, I2, NULL);
		for (int l = 0; l < SID_MAX_LEVELS; l++) {
			const float cb[2] = {0.0f, ldexpf(1.0f, -l)};
			tt_level(&tw, 2, cb);
		}
		ck_assert_int_eq(sid_encode(&tw.t, x, 1, &o, ws, &err), 0);
		for (int l = 0; l < SID_MAX_LEVELS; l++)
			ck_assert_int_eq(codes[l], l < 2);
		ck_assert_float_eq(dist[0], 0.0f);
		tw.t.L = SID_MAX_LEVELS + 1;
		ck_assert_int_eq(sid_encode(&tw.t, x, 1, &o, ws, &err), SID_EINVAL);
		tt_free(&tw);
	}
	/* An input SID_MAX_DIM wide, averaged: all ones give 1. */
	{
		float *x = malloc(sizeof(float) * (size_t)W);
		const float cb[2] = {0, 1};
		ck_assert_ptr_nonnull(x);
		w = malloc(sizeof(float) * (size_t)W);
		ck_assert_ptr_nonnull(w);
		for (int i = 0; i < W; i++) {
			x[i] = 1.0f;
			w[i] = 1.0f / (float)W;
		}
		tt_init(&tw, W, SID_ACT_IDENTITY, SID_NORM_NONE);
		tt_layer(&tw, 1, w, NULL);
		tt_level(&tw, 2, cb);
		ck_assert_msg(sid_encode(&tw.t, x, 1, &o, ws, &err) == 0, "%s", err.msg);
		ck_assert_int_eq(codes[0], 1);
		ck_assert_float_eq(dist[0], 0.0f);
		tt_free(&tw);
		/* a hidden layer SID_MAX_DIM wide: 1 -> W (ones) -> 1 (1/W) */
		tt_init(&tw, 1, SID_ACT_RELU, SID_NORM_NONE);
		tt_layer(&tw, W, x, NULL);
		tt_layer(&tw, 1, w, NULL);
		tt_level(&tw, 2, cb);
		ck_assert_msg(sid_encode(&tw.t, x, 1, &o, ws, &err) == 0, "%s", err.msg);
		ck_assert_int_eq(codes[0], 1);
		ck_assert_float_eq(dist[0], 0.0f);
		tw.t.layer[0].out = W + 1;
		tw.t.layer[1].in = W + 1;
		ck_assert_int_eq(sid_encode(&tw.t, x, 1, &o, ws, &err), SID_EINVAL);
		tt_free(&tw);
		free(w);
		free(x);
	}
	/* SID_MAX_CODEBOOK codewords, the nearest the last. */
	{
		const float x[] = {0.5f};
		c = malloc(sizeof(float) * (size_t)K);
		ck_assert_ptr_nonnull(c);
		for (int k = 0; k < K - 1; k++)
			c[k] = 1000.0f + (float)k;
		c[K - 1] = 0.5f;
		tt_init(&tw, 1, SID_ACT_IDENTITY, SID_NORM_NONE);
		tt_layer(&tw, 1, I2, NULL);
		tt_level(&tw, K, c);
		ck_assert_msg(sid_encode(&tw.t, x, 1, &o, ws, &err) == 0, "%s", err.msg);
		ck_assert_int_eq(codes[0], K - 1);
		ck_assert_float_eq(dist[0], 0.0f);
		tw.t.K[0] = K + 1;
		ck_assert_int_eq(sid_encode(&tw.t, x, 1, &o, ws, &err), SID_EINVAL);
		ck_assert_msg(strstr(err.msg, "codebook 0") != NULL, "%s", err.msg);
		tt_free(&tw);
		free(c);
	}
	sid_workspace_free(ws);
}
END_TEST

START_TEST(codes_format)
{
	const int32_t c[] = {12, 7, 200, 0};
	char buf[64];

	ck_assert_int_eq(sid_codes_format(c, 3, SID_FORMAT_DASH, buf, sizeof(buf)), 8);
	ck_assert_str_eq(buf, "12-7-200");
	ck_assert_int_eq(sid_codes_format(c, 3, SID_FORMAT_TOKENS, buf, sizeof(buf)), 18);
	ck_assert_str_eq(buf, "<a_12><b_7><c_200>");
	ck_assert_int_eq(sid_codes_format(c, 1, SID_FORMAT_DASH, buf, sizeof(buf)), 2);
	ck_assert_str_eq(buf, "12");
	ck_assert_int_eq(sid_codes_format(c, 0, SID_FORMAT_DASH, buf, sizeof(buf)), 0);
	ck_assert_str_eq(buf, "");
	/* snprintf semantics: truncated, NUL-terminated, full length returned. */
	ck_assert_int_eq(sid_codes_format(c, 3, SID_FORMAT_DASH, buf, 5), 8);
	ck_assert_str_eq(buf, "12-7");
	ck_assert_int_eq(sid_codes_format(c, 3, SID_FORMAT_TOKENS, NULL, 0), 18);
	{
		int32_t many[SID_MAX_LEVELS];
		char big[256];
		for (int l = 0; l < SID_MAX_LEVELS; l++)
			many[l] = l;
		sid_codes_format(many, SID_MAX_LEVELS, SID_FORMAT_TOKENS, big, sizeof(big));
		ck_assert(strstr(big, "<o_14><p_15>") != NULL);
	}
	ck_assert_int_lt(sid_codes_format(c, SID_MAX_LEVELS + 1, SID_FORMAT_DASH, buf, 64), 0);
	/* any int32, against printf's %d (negative codes never come from a
	 * model, but the function takes int32) */
	{
		static const int32_t edge[] = {0, 9, 10, -1, -10, 2147483647, -2147483647 - 1};
		for (size_t i = 0; i < sizeof(edge) / sizeof(edge[0]); i++) {
			int32_t two[2] = {edge[i], edge[(i + 3) % 7]};
			char want[64];
			snprintf(want, sizeof(want), "<a_%d><b_%d>", (int)two[0], (int)two[1]);
			ck_assert_int_eq(
			    sid_codes_format(two, 2, SID_FORMAT_TOKENS, buf, sizeof(buf)),
			    (int)strlen(want));
			ck_assert_str_eq(buf, want);
			snprintf(want, sizeof(want), "%d-%d", (int)two[0], (int)two[1]);
			ck_assert_int_eq(
			    sid_codes_format(two, 2, SID_FORMAT_DASH, buf, sizeof(buf)),
			    (int)strlen(want));
			ck_assert_str_eq(buf, want);
		}
	}
}
END_TEST

START_TEST(flops_per_row)
{
	/* TIGER: 768 -> 512 -> 256 -> 128 -> 32, 3 x 256. */
	struct sid_tower t;
	memset(&t, 0, sizeof(t));
	t.present = 1;
	int dims[] = {768, 512, 256, 128, 32};
	t.n_layers = 4;
	for (int i = 0; i < 4; i++) {
		t.layer[i].in = dims[i];
		t.layer[i].out = dims[i + 1];
	}
	t.E = 32;
	t.L = 3;
	t.K[0] = t.K[1] = t.K[2] = 256;
	ck_assert_double_eq(sid_encode_flops_per_row(&t),
			    2.0 * (768 * 512 + 512 * 256 + 256 * 128 + 128 * 32) +
				2.0 * 3 * 256 * 32);
	t.present = 0;
	ck_assert_double_eq(sid_encode_flops_per_row(&t), 0.0);
}
END_TEST

int main(void)
{
	Suite *s = suite_create("encode");
	TCase *tc = tcase_create("core");

	tcase_set_timeout(tc, 300);
	tcase_add_test(tc, greedy_by_hand);
	tcase_add_test(tc, mlp_by_hand);
	tcase_add_test(tc, activations_match_double_reference);
	tcase_add_test(tc, each_activation_vs_double_reference);
	tcase_add_test(tc, ties_lowest_k);
	tcase_add_test(tc, ties_equidistant_pair);
	tcase_add_test(tc, ties_odd_k_before_even_k);
	tcase_add_test(tc, l2_input_norm);
	tcase_add_test(tc, dist_and_quant);
	tcase_add_test(tc, alternatives_exhaustive_beam);
	tcase_add_test(tc, alternatives_narrow_beam_hierarchical);
	tcase_add_test(tc, alternatives_more_than_space);
	tcase_add_test(tc, codebook_larger_than_block);
	tcase_add_test(tc, batch_size_invariance);
	tcase_add_test(tc, threads_bit_identical);
	tcase_add_test(tc, loaded_model_batch_invariance);
	tcase_add_test(tc, nonfinite_rejected_with_row);
	tcase_add_test(tc, overflow_rows);
	tcase_add_test(tc, hidden_overflow_rejected_with_row);
	tcase_add_test(tc, codeword_score_overflow_refused);
	tcase_add_test(tc, argument_errors);
	tcase_add_test(tc, tower_at_the_limits);
	tcase_add_test(tc, codes_format);
	tcase_add_test(tc, flops_per_row);
	suite_add_tcase(s, tc);
	return check_run(s);
}
