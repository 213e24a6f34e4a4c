/*
 * check_eval.c - tests for trainer/eval.c metrics on hand-made cases:
 * collision rate, utilization and perplexity of a few code tuples worked out
 * by hand, and Recall@10/@50 and NDCG@10 on rankings whose order is fixed by
 * construction (items on a circle, the user at angle 0), with train-item
 * exclusion, candidate subsets (cold ranking), ties and users without test
 * items.
 */
#include <check.h>
#include "check_main.h"
#include <math.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>

#include "eval.h"
#include "stop.h"

START_TEST(test_code_stats_by_hand)
{
	/* rows (0,1) (0,1) (1,2) (3,2), K = 4, 4 */
	int32_t codes[] = {0, 1, 0, 1, 1, 2, 3, 2};
	int K[2] = {4, 4};
	struct tr_code_stats s;
	struct sid_error err;
	ck_assert_int_eq(tr_code_stats(codes, 4, 2, K, &s, &err), 0);
	ck_assert_uint_eq(s.unique, 3);
	ck_assert_double_eq_tol(s.collision_rate, 0.25, 1e-12);
	ck_assert_double_eq_tol(s.utilization[0], 0.75, 1e-12); /* {0, 1, 3} */
	ck_assert_double_eq_tol(s.utilization[1], 0.5, 1e-12);	/* {1, 2} */
	/* level 0: p = 1/2, 1/4, 1/4 -> H = 1.5 ln 2 -> perplexity 2^1.5 */
	ck_assert_double_eq_tol(s.perplexity[0], 2.8284271247461903, 1e-9);
	ck_assert_double_eq_tol(s.perplexity[1], 2.0, 1e-12);

	/* all distinct, uniform: no collisions, perplexity = K */
	int32_t c2[] = {0, 1, 2, 3};
	int K1[1] = {4};
	ck_assert_int_eq(tr_code_stats(c2, 4, 1, K1, &s, &err), 0);
	ck_assert_double_eq_tol(s.collision_rate, 0, 1e-12);
	ck_assert_double_eq_tol(s.perplexity[0], 4.0, 1e-9);
	/* tuples differing only in the last level are distinct */
	int32_t c3[] = {5, 0, 5, 1, 5, 0};
	int K2[2] = {8, 2};
	ck_assert_int_eq(tr_code_stats(c3, 3, 2, K2, &s, &err), 0);
	ck_assert_uint_eq(s.unique, 2);
	ck_assert_double_eq_tol(s.collision_rate, 1.0 / 3, 1e-12);
	ck_assert_double_eq_tol(s.utilization[0], 1.0 / 8, 1e-12);
	/* a code out of range is refused with its row */
	int32_t c4[] = {0, 4};
	ck_assert_int_eq(tr_code_stats(c4, 2, 1, K1, &s, &err), SID_EINVAL);
	ck_assert_int_eq(err.index, 1);
}
END_TEST

/* Items on the unit circle at angle i * 0.01: cosine to (1, 0) falls with i,
 * so item i is ranked i-th (before exclusions). */
static float *circle(int n)
{
	float *v = malloc((size_t)n * 2 * sizeof(float));
	for (int i = 0; i < n; i++) {
		v[2 * i] = cosf(0.01f * i);
		v[2 * i + 1] = sinf(0.01f * i);
	}
	return v;
}

static double g(int rank0)
{
	return 1.0 / log2(rank0 + 2.0);
}

START_TEST(test_rank_by_hand)
{
	const int N = 80;
	float *items = circle(N), users[3 * 2] = {1, 0, 1, 0, 0, 1};
	int32_t cand[80];
	struct tr_csr truth, excl;
	struct tr_rank_metrics m;
	struct sid_error err;
	for (int i = 0; i < N; i++)
		cand[i] = i;
	/* user 0: train {0, 5}; test {3, 20, 70}.  After excluding 0 and 5 the
	 * ranking is 1,2,3,4,6,...: item 3 at rank 2, item 20 at rank 18 (20
	 * minus the two excluded before it), item 70 at rank 68 (> 50).
	 * user 1: no test items (not averaged).  user 2: vector (0, 1), the
	 * highest angle wins: item 79 first; test {79} -> rank 0. */
	int32_t tu[] = {0, 0, 0, 2}, ti[] = {20, 3, 70, 79};
	int32_t eu[] = {0, 0}, ei[] = {5, 0};
	ck_assert_int_eq(tr_csr_build(&truth, 3, tu, ti, 4, &err), 0);
	ck_assert_int_eq(tr_csr_build(&excl, 3, eu, ei, 2, &err), 0);
	ck_assert_int_eq(tr_rank_eval(users, 3, items, cand, N, 2, &excl, &truth, &m, &err), 0);
	ck_assert_int_eq(m.users, 2);
	double r10 = (1.0 / 3 + 1.0) / 2, r50 = (2.0 / 3 + 1.0) / 2;
	double nd0 = g(2) / (g(0) + g(1) + g(2)), nd2 = 1.0;
	ck_assert_double_eq_tol(m.recall10, r10, 1e-12);
	ck_assert_double_eq_tol(m.recall50, r50, 1e-12);
	ck_assert_double_eq_tol(m.ndcg10, (nd0 + nd2) / 2, 1e-12);

	/* without exclusion item 20 is at rank 20: outside the top 10 still,
	 * item 3 at rank 3 */
	ck_assert_int_eq(tr_rank_eval(users, 3, items, cand, N, 2, NULL, &truth, &m, &err), 0);
	ck_assert_double_eq_tol(m.ndcg10, (g(3) / (g(0) + g(1) + g(2)) + 1.0) / 2, 1e-12);

	/* excluding a test item makes it unreachable, but it still counts */
	int32_t eu2[] = {0}, ei2[] = {3};
	struct tr_csr excl2;
	ck_assert_int_eq(tr_csr_build(&excl2, 3, eu2, ei2, 1, &err), 0);
	ck_assert_int_eq(tr_rank_eval(users, 3, items, cand, N, 2, &excl2, &truth, &m, &err), 0);
	ck_assert_double_eq_tol(m.recall10, (0.0 + 1.0) / 2, 1e-12);
	ck_assert_double_eq_tol(m.recall50, (1.0 / 3 + 1.0) / 2, 1e-12);

	/* user 0 alone with twelve test items, at ranks 0..11: ten in the top
	 * 10 (rank 10 is the eleventh), all ten places of it hits, so NDCG@10 is
	 * 1 (the ideal DCG is of ten hits, not twelve) */
	int32_t tu3[12], ti3[12];
	struct tr_csr truth3;
	for (int i = 0; i < 12; i++) {
		tu3[i] = 0;
		ti3[i] = i;
	}
	ck_assert_int_eq(tr_csr_build(&truth3, 3, tu3, ti3, 12, &err), 0);
	ck_assert_int_eq(tr_rank_eval(users, 3, items, cand, N, 2, NULL, &truth3, &m, &err), 0);
	ck_assert_int_eq(m.users, 1);
	ck_assert_double_eq_tol(m.recall10, 10.0 / 12, 1e-12);
	ck_assert_double_eq_tol(m.recall50, 1.0, 1e-12);
	ck_assert_double_eq_tol(m.ndcg10, 1.0, 1e-12);

	tr_csr_release(&truth);
	tr_csr_release(&excl);
	tr_csr_release(&excl2);
	tr_csr_release(&truth3);
	free(items);
}
END_TEST

START_TEST(test_rank_subset_and_ties)
{
	/* cold ranking: candidates {10, 11, 12} only, packed vectors.  10 and 12
	 * tie exactly (same vector): each at rank 0 or 1, with chance 1/2. */
	float vec[3 * 2] = {0.6f, 0.8f, 1.0f, 0.0f, 0.6f, 0.8f};
	int32_t cand[3] = {10, 11, 12};
	float user[2] = {0.0f, 1.0f};
	int32_t tu[] = {0, 0}, ti[] = {12, 40}; /* 40 not a candidate: unreachable */
	struct tr_csr truth;
	struct tr_rank_metrics m;
	struct sid_error err;
	ck_assert_int_eq(tr_csr_build(&truth, 1, tu, ti, 2, &err), 0);
	ck_assert_int_eq(tr_rank_eval(user, 1, vec, cand, 3, 2, NULL, &truth, &m, &err), 0);
	/* ranking {10, 12}, 11: item 12 in the top 10 either way, its gain
	 * that of rank 0 or 1 */
	ck_assert_double_eq_tol(m.recall10, 0.5, 1e-12);
	ck_assert_double_eq_tol(m.recall50, 0.5, 1e-12);
	ck_assert_double_eq_tol(m.ndcg10, (g(0) + g(1)) / 2 / (g(0) + g(1)), 1e-12);
	tr_csr_release(&truth);

	/* duplicate test rows count once (10 at rank 0 or 1, as 12 above; the
	 * ideal DCG of one hit) */
	int32_t tu2[] = {0, 0}, ti2[] = {10, 10};
	ck_assert_int_eq(tr_csr_build(&truth, 1, tu2, ti2, 2, &err), 0);
	ck_assert_int_eq(tr_rank_eval(user, 1, vec, cand, 3, 2, NULL, &truth, &m, &err), 0);
	ck_assert_double_eq_tol(m.recall10, 1.0, 1e-12);
	ck_assert_double_eq_tol(m.ndcg10, (g(0) + g(1)) / 2, 1e-12);
	tr_csr_release(&truth);

	/* a zero user vector (no train items: an empty item-side profile) ties
	 * everything; ranked by id it used to score item 10 as a perfect hit */
	float two[2 * 2] = {0.0f, 0.0f, 0.0f, 1.0f};
	int32_t tu3[] = {0, 1}, ti3[] = {10, 12};
	ck_assert_int_eq(tr_csr_build(&truth, 2, tu3, ti3, 2, &err), 0);
	ck_assert_int_eq(tr_rank_eval(two, 2, vec, cand, 3, 2, NULL, &truth, &m, &err), 0);
	ck_assert_int_eq(m.users, 1); /* user 1 only: 12 at rank 0 or 1 */
	ck_assert_double_eq_tol(m.recall10, 1.0, 1e-12);
	ck_assert_double_eq_tol(m.ndcg10, (g(0) + g(1)) / 2, 1e-12);
	tr_csr_release(&truth);
}
END_TEST

/* Items of one semantic ID share a vector and tie.  A model whose every item
 * has one ID (a collapsed codebook: --levels 1 --codebook-size 2 on small
 * data) ranks nothing, and scored a user whose test item had a low id as a
 * hit; with a small codebook the figures changed with the items' numbering
 * (item-side warm Recall@50 0.31 to 0.44 on one model and data).  A tie is
 * now a random order: the figures of an exact tie are the expected ones. */
START_TEST(test_rank_ties_are_random_order)
{
	enum { N = 100 };
	float vec[N * 2], user[2] = {1.0f, 0.0f};
	int32_t cand[N], tu[] = {0}, ti[1];
	struct tr_csr truth;
	struct tr_rank_metrics m[2];
	struct sid_error err;
	double dcg = 0;

	for (int i = 0; i < N; i++) {
		vec[2 * i] = 0.6f; /* one vector: every candidate ties */
		vec[2 * i + 1] = 0.8f;
		cand[i] = i;
	}
	for (int r = 0; r < 10; r++)
		dcg += g(r) / N;
	for (int k = 0; k < 2; k++) { /* the first item, then the last: one figure */
		ti[0] = k ? N - 1 : 0;
		ck_assert_int_eq(tr_csr_build(&truth, 1, tu, ti, 1, &err), 0);
		ck_assert_int_eq(tr_rank_eval(user, 1, vec, cand, N, 2, NULL, &truth, &m[k], &err),
				 0);
		tr_csr_release(&truth);
		ck_assert_int_eq(m[k].users, 1);
		ck_assert_double_eq_tol(m[k].recall10, 10.0 / N, 1e-12);
		ck_assert_double_eq_tol(m[k].recall50, 50.0 / N, 1e-12);
		ck_assert_double_eq_tol(m[k].ndcg10, dcg, 1e-12);
	}

	/* a tie below other items: item 5 is above 40 tied ones (items 0..4 and
	 * 6..40 then share a vector, items 41.. a worse one); a test item among
	 * the tied is at rank 1..40, each with chance 1/40, and so are two */
	vec[10] = 1.0f;
	vec[11] = 0.0f;
	for (int i = 41; i < N; i++) {
		vec[2 * i] = 0.0f;
		vec[2 * i + 1] = 1.0f;
	}
	int32_t tu2[] = {0, 0}, ti2[] = {40, 3};
	ck_assert_int_eq(tr_csr_build(&truth, 1, tu2, ti2, 2, &err), 0);
	ck_assert_int_eq(tr_rank_eval(user, 1, vec, cand, N, 2, NULL, &truth, &m[0], &err), 0);
	tr_csr_release(&truth);
	dcg = 0;
	for (int r = 1; r < 10; r++)
		dcg += 2 * g(r) / 40;
	ck_assert_double_eq_tol(m[0].recall10, 9.0 / 40, 1e-12);
	ck_assert_double_eq_tol(m[0].recall50, 1.0, 1e-12);
	ck_assert_double_eq_tol(m[0].ndcg10, dcg / (g(0) + g(1)), 1e-12);
}
END_TEST

/* A stop asked for by a signal ends the ranking at its next block of users:
 * the trainer's final evaluation, an hour at the 1M scale, made a SIGTERM
 * wait for all of it. */
START_TEST(test_rank_stops_on_signal)
{
	const int N = 80;
	float *items = circle(N), users[2] = {1, 0};
	int32_t cand[80], tu[] = {0}, ti[] = {3};
	struct tr_csr truth;
	struct tr_rank_metrics m;
	struct tr_stop_saved saved;
	struct sid_error err;
	for (int i = 0; i < N; i++)
		cand[i] = i;
	ck_assert_int_eq(tr_csr_build(&truth, 1, tu, ti, 1, &err), 0);
	tr_stop_install(&saved);
	ck_assert_int_eq(tr_rank_eval(users, 1, items, cand, N, 2, NULL, &truth, &m, &err), 0);
	ck_assert_int_eq(m.users, 1);
	raise(SIGTERM);
	ck_assert_int_eq(tr_stop_signal(), SIGTERM);
	sid_error_clear(&err);
	ck_assert_int_lt(tr_rank_eval(users, 1, items, cand, N, 2, NULL, &truth, &m, &err), 0);
	ck_assert_ptr_nonnull(strstr(err.msg, "evaluation stopped by SIGTERM"));
	ck_assert_int_eq(m.users, 0);
	tr_stop_restore(&saved);
	tr_csr_release(&truth);
	free(items);
}
END_TEST

static Suite *eval_suite(void)
{
	Suite *s = suite_create("trainer_eval");
	TCase *tc = tcase_create("metrics");
	tcase_set_timeout(tc, 60);
	tcase_add_test(tc, test_code_stats_by_hand);
	tcase_add_test(tc, test_rank_by_hand);
	tcase_add_test(tc, test_rank_subset_and_ties);
	tcase_add_test(tc, test_rank_ties_are_random_order);
	tcase_add_test(tc, test_rank_stops_on_signal);
	suite_add_tcase(s, tc);
	return s;
}

int main(void)
{
	return check_run(eval_suite());
}
