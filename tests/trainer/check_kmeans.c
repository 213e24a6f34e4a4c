/*
 * check_kmeans.c - tests for trainer/kmeans.c and trainer/rng.c: k-means on
 * data with known, well-separated clusters (every cluster recovered, centroids
 * at the true means), determinism per seed, the fewer-points-than-K case, and
 * the PRNG against the published xoshiro256** / splitmix64 outputs.
 */
#include <check.h>
#include "check_main.h"
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "kmeans.h"
#include "rng.h"

START_TEST(test_rng_vectors)
{
	/* splitmix64 seeded with 0 yields 0xe220a8397b1dcdaf first (Vigna's
	 * reference splitmix64.c); xoshiro256** from state {1, 2, 3, 4} gives
	 * 11520, 0, 1509978240, 1215971899390074240 (reference xoshiro256starstar.c) */
	struct rng r;
	rng_seed(&r, 0);
	ck_assert_uint_eq(r.s[0], 0xe220a8397b1dcdafULL);
	r.s[0] = 1;
	r.s[1] = 2;
	r.s[2] = 3;
	r.s[3] = 4;
	ck_assert_uint_eq(rng_u64(&r), 11520ULL);
	ck_assert_uint_eq(rng_u64(&r), 0ULL);
	ck_assert_uint_eq(rng_u64(&r), 1509978240ULL);
	ck_assert_uint_eq(rng_u64(&r), 1215971899390074240ULL);
	/* below() stays in range and hits every value */
	int seen[7] = {0};
	rng_seed(&r, 9);
	for (int i = 0; i < 1000; i++) {
		uint64_t x = rng_below(&r, 7);
		ck_assert_uint_lt(x, 7);
		seen[x]++;
	}
	for (int i = 0; i < 7; i++)
		ck_assert_int_gt(seen[i], 100);
	/* normal: mean ~0, variance ~1 over 20000 draws */
	double s = 0, ss = 0;
	for (int i = 0; i < 20000; i++) {
		double x = rng_normal(&r);
		s += x;
		ss += x * x;
	}
	ck_assert_double_lt(fabs(s / 20000), 0.03);
	ck_assert_double_lt(fabs(ss / 20000 - 1), 0.05);
}
END_TEST

/* K true centres far apart (distance ~ 20), points with noise 0.1 */
static float *make_clusters(int K, int per, int E, float *centres, int32_t *label, uint64_t seed)
{
	struct rng r;
	rng_seed(&r, seed);
	for (int k = 0; k < K; k++)
		for (int j = 0; j < E; j++)
			centres[k * E + j] = 10.0f * rng_normal(&r);
	float *x = malloc(sizeof(float) * K * per * E);
	/* interleave the clusters so no cluster sits in one block */
	for (int i = 0; i < K * per; i++) {
		int k = i % K;
		label[i] = k;
		for (int j = 0; j < E; j++)
			x[i * E + j] = centres[k * E + j] + 0.1f * rng_normal(&r);
	}
	return x;
}

START_TEST(test_recovers_clusters)
{
	enum { K = 8, PER = 50, E = 5, N = K * PER };
	float centres[K * E], cent[K * E];
	int32_t label[N], as[N];
	float *x = make_clusters(K, PER, E, centres, label, 77);
	struct rng r;
	struct sid_error err;
	double inertia;
	rng_seed(&r, 5);
	ck_assert_int_eq(km_fit(x, N, E, K, 50, &r, cent, as, &inertia, &err), 0);
	/* one-to-one mapping between found and true clusters */
	int map[K];
	for (int k = 0; k < K; k++)
		map[k] = -1;
	for (int i = 0; i < N; i++) {
		if (map[label[i]] < 0)
			map[label[i]] = as[i];
		ck_assert_int_eq(as[i], map[label[i]]);
	}
	for (int a = 0; a < K; a++)
		for (int b = a + 1; b < K; b++)
			ck_assert_int_ne(map[a], map[b]);
	/* centroids at the true centres (mean of 50 points, noise 0.1 -> ~0.015) */
	for (int k = 0; k < K; k++)
		for (int j = 0; j < E; j++)
			ck_assert_float_eq_tol(cent[map[k] * E + j], centres[k * E + j], 0.08f);
	/* inertia ~ N * E * 0.01 */
	ck_assert_double_lt(inertia, N * E * 0.01 * 1.5);
	free(x);
}
END_TEST

START_TEST(test_deterministic)
{
	enum { K = 6, PER = 40, E = 4, N = K * PER };
	float centres[K * E], c1[16 * E], c2[16 * E], c3[16 * E];
	int32_t label[N];
	/* 16 clusters on 6 true blobs: the seeding choices matter */
	float *x = make_clusters(K, PER, E, centres, label, 3);
	struct rng r;
	rng_seed(&r, 11);
	ck_assert_int_eq(km_fit(x, N, E, 16, 0, &r, c1, NULL, NULL, NULL), 0);
	rng_seed(&r, 11);
	ck_assert_int_eq(km_fit(x, N, E, 16, 0, &r, c2, NULL, NULL, NULL), 0);
	ck_assert_mem_eq(c1, c2, sizeof(c1));
	rng_seed(&r, 12);
	ck_assert_int_eq(km_fit(x, N, E, 16, 0, &r, c3, NULL, NULL, NULL), 0);
	ck_assert(memcmp(c1, c3, sizeof(c1)) != 0);
	/* seeding alone (iters 0) returns data points */
	for (int k = 0; k < 16; k++) {
		int found = 0;
		for (int i = 0; i < N && !found; i++)
			found = !memcmp(c1 + k * E, x + i * E, sizeof(float) * E);
		ck_assert_msg(found, "centre %d is not a data point", k);
	}
	/* with Lloyd too, same seed -> same bits */
	rng_seed(&r, 11);
	ck_assert_int_eq(km_fit(x, N, E, 16, 20, &r, c1, NULL, NULL, NULL), 0);
	rng_seed(&r, 11);
	ck_assert_int_eq(km_fit(x, N, E, 16, 20, &r, c2, NULL, NULL, NULL), 0);
	ck_assert_mem_eq(c1, c2, sizeof(c1));
	free(x);
}
END_TEST

START_TEST(test_few_points)
{
	/* 3 points, K 5: three centres are the points, the rest are close copies */
	float x[6] = {0, 0, 10, 0, 0, 10}, cent[10];
	int32_t as[3];
	struct rng r;
	struct sid_error err;
	rng_seed(&r, 1);
	ck_assert_int_eq(km_fit(x, 3, 2, 5, 10, &r, cent, as, NULL, &err), 0);
	for (int i = 0; i < 3; i++)
		ck_assert_float_eq_tol(cent[as[i] * 2] - x[i * 2], 0, 1e-6f);
	for (int k = 0; k < 5; k++)
		ck_assert(isfinite(cent[2 * k]) && isfinite(cent[2 * k + 1]));
	ck_assert_int_eq(km_fit(x, 0, 2, 5, 10, &r, cent, as, NULL, &err), SID_EINVAL);
	ck_assert_ptr_nonnull(strstr(err.msg, "k-means"));
}
END_TEST

static Suite *km_suite(void)
{
	Suite *s = suite_create("kmeans");
	TCase *tc = tcase_create("kmeans");
	tcase_set_timeout(tc, 60);
	tcase_add_test(tc, test_rng_vectors);
	tcase_add_test(tc, test_recovers_clusters);
	tcase_add_test(tc, test_deterministic);
	tcase_add_test(tc, test_few_points);
	suite_add_tcase(s, tc);
	return s;
}

int main(void)
{
	return check_run(km_suite());
}
