/*
 * check_mlp.c - the deterministic panel GEMM of core/mlp.c: every element
 * must equal, to the bit, the scalar chain acc = fmaf(w[k], x[k], acc) in k
 * order, then + bias, then the activation, for every shape, panel count,
 * packed or unpacked weights, and both the vector and the portable kernels.
 * (The activations themselves are checked against double references in
 * check_encode.c.)
 */
#include <check.h>
#include "check_main.h"
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "mlp.h"

static uint64_t rng_state = 88172645463325252ull;

static float frand(void)
{
	rng_state ^= rng_state << 13;
	rng_state ^= rng_state >> 7;
	rng_state ^= rng_state << 17;
	return (float)((rng_state >> 11) * (1.0 / 9007199254740992.0)) * 2.0f - 1.0f;
}

static void *amalloc(size_t bytes)
{
	return aligned_alloc(64, (bytes + 63) & ~(size_t)63);
}

/* The reference: the chain mlp.h documents, written the obvious way. */
static float ref_elem(const float *w, const float *x, int k, float b, enum sid_act act)
{
	float acc = 0.0f;
	for (int kk = 0; kk < k; kk++)
		acc = fmaf(w[kk], x[kk], acc);
	return sid__act_apply(act, acc + b);
}

static void run_case(int n, int k, size_t B, int packed, int with_bias, enum sid_act act)
{
	size_t P = sid__panels(B);
	float *w = malloc(sizeof(float) * n * k), *b = malloc(sizeof(float) * n);
	float *xr = malloc(sizeof(float) * B * k);
	float *xp = amalloc(sizeof(float) * P * 16 * k);
	float *y = amalloc(sizeof(float) * P * 16 * n);
	float *wp = amalloc(sizeof(float) * (sid__gemm_pack_size(n, k) + 16));

	ck_assert(w && b && xr && xp && y && wp);
	for (int i = 0; i < n * k; i++)
		w[i] = frand();
	for (int i = 0; i < n; i++)
		b[i] = frand();
	for (size_t i = 0; i < B * (size_t)k; i++)
		xr[i] = frand() * 3.0f;
	memset(xp, 0, sizeof(float) * P * 16 * k);
	for (size_t i = 0; i < B; i++)
		for (int f = 0; f < k; f++)
			xp[(i / 16) * k * 16 + f * 16 + i % 16] = xr[i * k + f];
	if (packed)
		sid__gemm_pack(w, n, k, wp);
	for (int gen = 0; gen < 3; gen++) {
		sid__gemm_force(gen);
		memset(y, 0xff, sizeof(float) * P * 16 * n);
		sid__gemm_panels(w, packed ? wp : NULL, with_bias ? b : NULL, act, n, k, xp, B, y);
		for (size_t i = 0; i < B; i++)
			for (int j = 0; j < n; j++) {
				float want = ref_elem(w + (size_t)j * k, xr + i * k, k,
						      with_bias ? b[j] : 0.0f, act);
				float got = y[(i / 16) * n * 16 + j * 16 + i % 16];
				ck_assert_msg(
				    memcmp(&want, &got, sizeof(float)) == 0,
				    "n=%d k=%d B=%zu packed=%d kernel mode %d act=%d row %zu "
				    "col %d: %.9g != %.9g",
				    n, k, B, packed, gen, (int)act, i, j, got, want);
			}
	}
	sid__gemm_force(0);
	free(w);
	free(b);
	free(xr);
	free(xp);
	free(y);
	free(wp);
}

START_TEST(gemm_bit_exact_shapes)
{
	static const int ns[] = {1, 5, 12, 13, 24, 31};
	static const int ks[] = {1, 3, 16, 37, 64};
	static const size_t Bs[] = {1, 2, 3, 4, 5, 15, 16, 17, 33, 50};
	for (size_t a = 0; a < sizeof(ns) / sizeof(ns[0]); a++)
		for (size_t c = 0; c < sizeof(ks) / sizeof(ks[0]); c++)
			for (size_t d = 0; d < sizeof(Bs) / sizeof(Bs[0]); d++)
				run_case(ns[a], ks[c], Bs[d], (int)(d % 2), (int)(c % 2),
					 (a % 2) ? SID_ACT_RELU : SID_ACT_IDENTITY);
}
END_TEST

START_TEST(gemm_bit_exact_activations)
{
	run_case(13, 20, 35, 0, 1, SID_ACT_SILU);
	run_case(13, 20, 35, 1, 1, SID_ACT_GELU);
	run_case(25, 9, 3, 0, 1, SID_ACT_TANH);
	run_case(7, 200, 40, 1, 0, SID_ACT_RELU);
	run_case(20, 40, 2, 0, 1, SID_ACT_GELU); /* few-row kernel */
	run_case(33, 17, 4, 0, 1, SID_ACT_SILU);
}
END_TEST

/*
 * The in-register silu / gelu of the vector kernels against the scalar
 * sid__act_apply, bit for bit, over a dense grid and the edges (the erf
 * branch split, the exp clamps, zeros, huge values, infinities; a NaN stays
 * a NaN, relu's too, as in torch): a 1 x 1 layer with
 * weight 1 passes x through exactly (fma(1, x, +0) + 0 = x).
 */
START_TEST(activations_vector_equal_scalar)
{
	static const float edges[] = {
	    0.0f,    -0.0f,	 0.927734375f, -0.927734375f, 0.9277344f, -0.9277344f, 87.0f,
	    -87.0f,  88.0f,	 -88.0f,       89.0f,	      -89.0f,	  1e-30f,      -1e-30f,
	    1e30f,   -1e30f,	 3.9f,	       -3.9f,	      5.5f,	  -5.5f,       0.625f,
	    -0.625f, 0.6249999f, -0.6249999f,  44.0f,	      -44.0f,	  45.0f,       -45.0f,
	    NAN,     INFINITY,	 -INFINITY,    -3e38f,	      -1e4f};
	const size_t ne = sizeof(edges) / sizeof(edges[0]), ng = 40001, B = ng + ne;
	const size_t P = sid__panels(B);
	const float one = 1.0f;
	float *x = amalloc(sizeof(float) * P * 16), *y = amalloc(sizeof(float) * P * 16);
	static const enum sid_act acts[] = {SID_ACT_SILU, SID_ACT_GELU, SID_ACT_RELU, SID_ACT_TANH};

	memset(x, 0, sizeof(float) * P * 16);
	for (size_t i = 0; i < ng; i++)
		x[i] = ((float)i - 20000.0f) / 200.0f; /* -100 .. 100 */
	memcpy(x + ng, edges, sizeof(edges));
	for (size_t a = 0; a < 4; a++)
		for (int mode = 0; mode < 3; mode++) {
			sid__gemm_force(mode);
			for (size_t rows = 1; rows <= B; rows += B - 1) {
				sid__gemm_panels(&one, NULL, NULL, acts[a], 1, 1, x, rows, y);
				for (size_t i = 0; i < rows; i++) {
					float want = sid__act_apply(acts[a], x[i] + 0.0f);
					ck_assert_msg(!memcmp(&want, &y[i], sizeof(float)) ||
							  (isnan(want) && isnan(y[i])),
						      "act %d mode %d x %.9g: %.9g vs %.9g",
						      (int)acts[a], mode, x[i], y[i], want);
					/* silu far below zero is -0 (torch: at most a
					 * subnormal); x * 6e-39 from exp's clamp made
					 * -3e38 into -1.8 */
					if (acts[a] == SID_ACT_SILU && x[i] < -88.5f &&
					    isfinite(x[i]))
						ck_assert_msg(y[i] == 0.0f && signbit(y[i]),
							      "mode %d silu(%g) = %g", mode, x[i],
							      y[i]);
					/* an overflowed layer (NaN, +-inf) is not hidden
					 * as 0 or +-1 */
					if (!isfinite(x[i]))
						ck_assert_msg(isnan(y[i]),
							      "act %d mode %d: %g -> %g",
							      (int)acts[a], mode, x[i], y[i]);
					else
						ck_assert_msg(isfinite(y[i]),
							      "act %d mode %d: %.9g -> %g",
							      (int)acts[a], mode, x[i], y[i]);
				}
			}
			sid__gemm_force(0);
		}
	free(x);
	free(y);
}
END_TEST

/* Padding: a (3, 4) matrix packs into one block of (4, NR) with zero columns. */
START_TEST(gemm_pack_layout)
{
	float w[12], wp[4 * SID__NR];
	for (int i = 0; i < 12; i++)
		w[i] = (float)(i + 1);
	ck_assert_uint_eq(sid__gemm_pack_size(3, 4), 4 * SID__NR);
	ck_assert_uint_eq(sid__gemm_pack_size(13, 4), 2 * 4 * SID__NR);
	sid__gemm_pack(w, 3, 4, wp);
	for (int kk = 0; kk < 4; kk++)
		for (int jj = 0; jj < SID__NR; jj++)
			ck_assert_float_eq(wp[kk * SID__NR + jj], jj < 3 ? w[jj * 4 + kk] : 0.0f);
}
END_TEST

int main(void)
{
	Suite *s = suite_create("mlp");
	TCase *tc = tcase_create("core");

	tcase_set_timeout(tc, 120);
	tcase_add_test(tc, gemm_bit_exact_shapes);
	tcase_add_test(tc, gemm_bit_exact_activations);
	tcase_add_test(tc, gemm_pack_layout);
	tcase_add_test(tc, activations_vector_equal_scalar);
	suite_add_tcase(s, tc);
	return check_run(s);
}
