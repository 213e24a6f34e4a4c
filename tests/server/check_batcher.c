/*
 * check_batcher.c - server/batcher.c through its API: jobs submitted
 * together are encoded in one batch on the pool, and each job's answer
 * holds the codes sid_encode gives its own rows alone.  encode_jobs
 * gathers runs of small jobs into one matrix; it took every job for one
 * with rows, and an empty one beside a 1-row job wrote into a buffer it
 * had not allocated (a crash).
 */
#include <check.h>
#include <jansson.h>
#include <stdlib.h>
#include <string.h>
#include <uv.h>

#include "../../server/batcher.h" /* tests build with -Icore -Itests only */
#include "check_main.h"
#include "encode.h"
#include "model_builder.h"

#define MAX_JOBS 16

struct answer {
	int done, status;
	char *body;
};

static void on_done(struct srv_job *job)
{
	struct answer *a = job->ctx;

	a->done = 1;
	a->status = job->status;
	a->body = job->body;
	job->body = NULL;
	srv_job_free(job);
}

/* Rows of job @i: (B, D), each value from a stream of its own. */
static float *rows_of(int i, size_t B, int D)
{
	uint64_t s = 1000 + (uint64_t)i;
	float *x = B ? malloc(B * (size_t)D * sizeof(float)) : NULL;

	for (size_t k = 0; k < B * (size_t)D; k++)
		x[k] = mb_rand_sym(&s);
	return x;
}

/* Submit jobs of @B[0..n) rows together on @m's item tower and check each
 * answer against sid_encode of its rows alone. */
static void check_batch(struct sid_model *m, const size_t *B, int n)
{
	const struct sid_tower *t = sid_model_tower(m, SID_TOWER_ITEM);
	struct srv_batcher_opts o = {
	    .workers = 1, .max_batch = 4096, .max_delay_us = 10000000, .queue_rows = 100000};
	struct answer ans[MAX_JOBS] = {{0}};
	struct sid_workspace *ws = sid_workspace_new();
	struct srv_batcher *b;
	struct sid_error err;
	uv_loop_t loop;
	int left = n;

	ck_assert_int_le(n, MAX_JOBS);
	ck_assert_ptr_nonnull(ws);
	ck_assert_int_eq(uv_loop_init(&loop), 0);
	ck_assert_msg(srv_batcher_new(&loop, &o, &b, &err) == 0, "%s", err.msg);
	srv_batcher_flush(b); /* each intake is dispatched at once, as one batch */
	for (int i = 0; i < n; i++) {
		struct srv_encode_req req;
		struct srv_job *j;
		memset(&req, 0, sizeof(req));
		req.tower = SID_TOWER_ITEM;
		req.B = B[i];
		req.D = t->D;
		req.x = rows_of(i, B[i], t->D);
		req.top_k = 1;
		j = srv_job_new(&req, m);
		ck_assert_ptr_nonnull(j);
		j->done = on_done;
		j->ctx = &ans[i];
		ck_assert_int_eq(srv_batcher_submit(b, j), 0);
	}
	while (left > 0) {
		uv_run(&loop, UV_RUN_ONCE);
		left = 0;
		for (int i = 0; i < n; i++)
			left += !ans[i].done;
	}
	for (int i = 0; i < n; i++) {
		float *x = rows_of(i, B[i], t->D);
		int32_t *want = malloc((B[i] + 1) * (size_t)t->L * sizeof(int32_t));
		struct sid_encode_out out = {.codes = want};
		json_t *doc, *results;
		json_error_t jerr;

		ck_assert_msg(ans[i].status == 200, "job %d (%zu rows): %d %s", i, B[i],
			      ans[i].status, ans[i].body ? ans[i].body : "");
		if (B[i])
			ck_assert_int_eq(sid_encode(t, x, B[i], &out, ws, &err), 0);
		doc = json_loads(ans[i].body, 0, &jerr);
		ck_assert_msg(doc != NULL, "%s", jerr.text);
		results = json_object_get(doc, "results");
		ck_assert_uint_eq(json_array_size(results), B[i]);
		for (size_t r = 0; r < B[i]; r++) {
			json_t *codes = json_object_get(json_array_get(results, r), "codes");
			ck_assert_uint_eq(json_array_size(codes), (size_t)t->L);
			for (int l = 0; l < t->L; l++)
				ck_assert_msg(
				    json_integer_value(json_array_get(codes, (size_t)l)) ==
					want[r * (size_t)t->L + (size_t)l],
				    "job %d row %zu level %d", i, r, l);
		}
		json_decref(doc);
		free(want);
		free(x);
		free(ans[i].body);
	}
	srv_batcher_close(b);
	uv_run(&loop, UV_RUN_DEFAULT); /* the handles close */
	srv_batcher_free(b);
	ck_assert_int_eq(uv_loop_close(&loop), 0);
	sid_workspace_free(ws);
}

static struct sid_model *model(void)
{
	struct mb_spec s;
	struct sid_model *m = NULL;
	struct sid_error err;
	uint8_t *buf;
	size_t len;

	mb_spec_init(&s);
	ck_assert_msg(mb_build_buffer(&s, &buf, &len, &err) == 0, "%s", err.msg);
	ck_assert_msg(sid_model_load_buffer(buf, len, &m, &err) == 0, "%s", err.msg);
	free(buf);
	return m;
}

/* Small jobs gathered, large ones in place, in every order. */
START_TEST(test_jobs_answer_their_own_rows)
{
	static const size_t patterns[][6] = {
	    {1, 0}, {1, 1, 0}, {2, 3, 0}, {20, 0}, {1, 20, 1, 1, 0}, {15, 16, 15, 15, 17, 1},
	};
	static const int n[] = {1, 2, 2, 1, 4, 6};
	struct sid_model *m = model();

	for (size_t p = 0; p < sizeof(n) / sizeof(n[0]); p++)
		check_batch(m, patterns[p], n[p]);
	sid_model_unref(m);
}
END_TEST

/* Empty jobs among others: none of their rows, the others' unchanged.  An
 * empty job beside a 1-row one made encode_jobs copy that row into a
 * buffer it had not allocated. */
START_TEST(test_empty_jobs_among_others)
{
	static const size_t patterns[][7] = {
	    {0},       {0, 0},	     {0, 1},	      {1, 0},	   {0, 1, 0},
	    {1, 0, 1}, {0, 2, 0, 3}, {20, 0, 1},      {0, 20, 0},  {1, 0, 20, 0, 1},
	    {0, 0, 1}, {3, 0, 0, 0}, {0, 1, 0, 1, 0}, {16, 0, 16}, {0, 15, 0, 1, 0, 20, 0},
	};
	static const int n[] = {1, 2, 2, 2, 3, 3, 4, 3, 3, 5, 3, 4, 5, 3, 7};
	struct sid_model *m = model();

	for (size_t p = 0; p < sizeof(n) / sizeof(n[0]); p++)
		check_batch(m, patterns[p], n[p]);
	sid_model_unref(m);
}
END_TEST

static void add(TCase *tc)
{
	tcase_add_test(tc, test_jobs_answer_their_own_rows);
	tcase_add_test(tc, test_empty_jobs_among_others);
}

int main(void)
{
	return srv_check_run("batcher", add);
}
