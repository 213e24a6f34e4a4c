/*
 * check_adam.c - tests for trainer/adam.c: AdamW steps against values
 * worked out by hand from the torch.optim.AdamW update (three steps of one
 * parameter, then many parameters at once), the global-norm clip factor and
 * the warm-up + cosine learning-rate schedule at known points.
 */
#include <check.h>
#include "check_main.h"
#include <math.h>
#include <stdlib.h>

#include "adam.h"

START_TEST(test_adamw_hand)
{
	/* p0 = 1, lr 0.1, b1 0.9, b2 0.999, eps 1e-8, wd 0.01; grads 0.5, -0.25, 2.
	 * step 1: p = 1*(1-0.001) = 0.999; m = 0.05, v = 0.00025; mhat = 0.5,
	 *         vhat = 0.25: p = 0.999 - 0.1 * 0.5/0.5 = 0.899
	 * step 2: p = 0.899*0.999 = 0.898101; m = 0.02, v = 0.00031225;
	 *         mhat = 0.02/0.19, vhat = 0.00031225/0.001999: p = 0.8714673
	 * step 3: m = 0.218, v = 0.00431193775: p = 0.8035311 */
	struct adamw_hparams h = {0.1f, 0.9f, 0.999f, 1e-8f, 0.01f};
	float p = 1, m = 0, v = 0, g;
	g = 0.5f;
	adamw_update(&p, &g, &m, &v, 1, &h, 1);
	ck_assert_float_eq_tol(p, 0.899f, 1e-6f);
	ck_assert_float_eq_tol(m, 0.05f, 1e-7f);
	ck_assert_float_eq_tol(v, 0.00025f, 1e-8f);
	g = -0.25f;
	adamw_update(&p, &g, &m, &v, 1, &h, 2);
	ck_assert_float_eq_tol(p, 0.8714673f, 1e-6f);
	ck_assert_float_eq_tol(m, 0.02f, 1e-7f);
	g = 2.0f;
	adamw_update(&p, &g, &m, &v, 1, &h, 3);
	ck_assert_float_eq_tol(p, 0.8035311f, 1e-6f);
	ck_assert_float_eq_tol(v, 0.00431193775f, 1e-7f); /* (1 - b2) rounds in float */
}
END_TEST

START_TEST(test_adamw_flat)
{
	/* a block of 37 (not a multiple of any vector width): each element
	 * follows the scalar rule; the first step moves every p by ~lr*sign(g) */
	enum { N = 37 };
	struct adamw_hparams h = {0.01f, 0.9f, 0.999f, 1e-8f, 0.0f};
	float p[N], g[N], m[N] = {0}, v[N] = {0};
	for (int i = 0; i < N; i++) {
		p[i] = (float)i;
		g[i] = (i % 3 == 0) ? -(float)(i + 1) : 0.5f * (float)(i + 1);
	}
	adamw_update(p, g, m, v, N, &h, 1);
	for (int i = 0; i < N; i++) {
		float want = (float)i - 0.01f * (g[i] > 0 ? 1.0f : -1.0f);
		ck_assert_float_eq_tol(p[i], want, 1e-6f);
	}
	/* zero gradient, zero state: only the decay acts */
	struct adamw_hparams hd = {0.5f, 0.9f, 0.999f, 1e-8f, 0.1f};
	float q = 2.0f, gz = 0, mz = 0, vz = 0;
	adamw_update(&q, &gz, &mz, &vz, 1, &hd, 1);
	ck_assert_float_eq_tol(q, 2.0f * (1.0f - 0.05f), 1e-6f);
}
END_TEST

START_TEST(test_clip)
{
	float g[19];
	for (int i = 0; i < 19; i++)
		g[i] = (i % 2 ? -1.0f : 1.0f) * (float)i;
	/* sum i^2, i=0..18 = 18*19*37/6 = 2109 */
	ck_assert_double_eq_tol(adam_sumsq(g, 19), 2109.0, 1e-9);
	double norm = sqrt(2109.0);
	float f = adam_clip_factor(norm, 1.0f);
	ck_assert_float_eq_tol(f, (float)(1.0 / (norm + 1e-6)), 1e-9f);
	adam_scale(g, 19, f);
	ck_assert_double_eq_tol(sqrt(adam_sumsq(g, 19)), 1.0, 1e-5);
	ck_assert_float_eq(adam_clip_factor(0.5, 1.0f), 1.0f);
	ck_assert_float_eq(adam_clip_factor(50.0, 0.0f), 1.0f);
}
END_TEST

START_TEST(test_schedule)
{
	/* warm-up 10, total 110, floor 0.1: span = 99 */
	ck_assert_float_eq_tol(adam_lr_at(0, 110, 10, 1.0f, 0.1f), 0.1f, 1e-7f);
	ck_assert_float_eq_tol(adam_lr_at(4, 110, 10, 1.0f, 0.1f), 0.5f, 1e-7f);
	ck_assert_float_eq_tol(adam_lr_at(9, 110, 10, 1.0f, 0.1f), 1.0f, 1e-7f);
	ck_assert_float_eq_tol(adam_lr_at(10, 110, 10, 1.0f, 0.1f), 1.0f, 1e-7f);
	/* t = 43: a third of the way, cos(pi/3) = 0.5: 0.1 + 0.9 * 0.75 */
	ck_assert_float_eq_tol(adam_lr_at(43, 110, 10, 1.0f, 0.1f), 0.775f, 1e-6f);
	/* halfway (t = 59.5 is not a step; t = 76: 2/3): 0.1 + 0.9 * 0.25 */
	ck_assert_float_eq_tol(adam_lr_at(76, 110, 10, 1.0f, 0.1f), 0.325f, 1e-6f);
	ck_assert_float_eq_tol(adam_lr_at(109, 110, 10, 1.0f, 0.1f), 0.1f, 1e-7f);
	ck_assert_float_eq_tol(adam_lr_at(500, 110, 10, 1.0f, 0.1f), 0.1f, 1e-7f);
	/* no warm-up */
	ck_assert_float_eq_tol(adam_lr_at(0, 110, 0, 2.0f, 0.0f), 2.0f, 1e-7f);
	/* monotone non-increasing after warm-up */
	for (long t = 10; t < 120; t++)
		ck_assert(adam_lr_at(t + 1, 110, 10, 1.0f, 0.1f) <=
			  adam_lr_at(t, 110, 10, 1.0f, 0.1f));
}
END_TEST

static Suite *adam_suite(void)
{
	Suite *s = suite_create("adam");
	TCase *tc = tcase_create("adam");
	tcase_set_timeout(tc, 30);
	tcase_add_test(tc, test_adamw_hand);
	tcase_add_test(tc, test_adamw_flat);
	tcase_add_test(tc, test_clip);
	tcase_add_test(tc, test_schedule);
	suite_add_tcase(s, tc);
	return s;
}

int main(void)
{
	return check_run(adam_suite());
}
