/*
 * check_batcher.c - server/batcher.c through its API: jobs submitted
 * together are encoded in one batch on the pool, and each job's answer
 * holds the codes sid_encode gives its own rows alone.  encode_jobs
 * gathers runs of small jobs into one matrix; it took every job for one
 * with rows, and an empty one beside a 1-row job wrote into a buffer it
 * had not allocated (a crash).  With a clock of the tests' own
 * (srv__batcher_clock), when a batch falls due and how many are in flight.
 */
#include <check.h>
#include <jansson.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <uv.h>

#include "../../server/batcher.h" /* tests build with -Icore -Itests only */
#include "check_main.h"
#include "encode.h"
#include "model_builder.h"

#define MAX_JOBS 16

struct answer {
	int done, status;
	char *body;
	double queue_wait; /* the job's, as the batcher measured it */
};

static void on_done(struct srv_job *job)
{
	struct answer *a = job->ctx;

	a->done = 1;
	a->status = job->status;
	a->queue_wait = job->queue_wait;
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

/* One job of a batch: its rows, the model it came with (an index into
 * the models given), its top_k and return_quantized. */
struct jspec {
	size_t B;
	int model, top_k, quantized;
};

/* The float of a JSON number of a response. */
static float jfloat(const json_t *v)
{
	ck_assert_msg(json_is_number(v), "not a number");
	return (float)json_number_value(v);
}

/* Check @res, job @i's "results", against sid_encode of its rows @x alone
 * with its own model's tower @t and options @js. */
static void check_answer(const struct sid_tower *t, const struct jspec *js, int i, const float *x,
			 json_t *results, struct sid_workspace *ws)
{
	const size_t B = js->B, L = (size_t)t->L, E = (size_t)t->E;
	const int n_alt = js->top_k - 1;
	int32_t *codes = malloc((B + 1) * L * sizeof(int32_t));
	int32_t *alt_codes = malloc((B * (size_t)n_alt + 1) * L * sizeof(int32_t));
	float *dist = malloc((B + 1) * sizeof(float)), *quant = malloc((B + 1) * E * sizeof(float));
	float *alt_dist = malloc((B * (size_t)n_alt + 1) * sizeof(float));
	int *alt_count = malloc((B + 1) * sizeof(int));
	struct sid_encode_out out = {.codes = codes,
				     .dist = dist,
				     .quant = quant,
				     .n_alt = n_alt,
				     .alt_codes = alt_codes,
				     .alt_dist = alt_dist,
				     .alt_count = alt_count};
	struct sid_error err;

	ck_assert(codes && alt_codes && dist && quant && alt_dist && alt_count);
	if (B)
		ck_assert_int_eq(sid_encode(t, x, B, &out, ws, &err), 0);
	ck_assert_uint_eq(json_array_size(results), B);
	for (size_t r = 0; r < B; r++) {
		json_t *res = json_array_get(results, r);
		json_t *c = json_object_get(res, "codes"), *q = json_object_get(res, "quantized");
		json_t *alts = json_object_get(res, "alternatives");

		ck_assert_uint_eq(json_array_size(c), L);
		for (size_t l = 0; l < L; l++)
			ck_assert_msg(json_integer_value(json_array_get(c, l)) == codes[r * L + l],
				      "job %d row %zu level %zu", i, r, l);
		ck_assert_msg(jfloat(json_object_get(res, "distance")) == dist[r],
			      "job %d row %zu: distance", i, r);
		if (!js->quantized) {
			ck_assert_msg(q == NULL, "job %d row %zu: quantized not asked for", i, r);
		} else {
			ck_assert_msg(json_array_size(q) == E, "job %d row %zu: quantized", i, r);
			for (size_t e = 0; e < E; e++)
				ck_assert_msg(jfloat(json_array_get(q, e)) == quant[r * E + e],
					      "job %d row %zu: quantized[%zu]", i, r, e);
		}
		if (!n_alt) {
			ck_assert_msg(alts == NULL, "job %d row %zu: alternatives", i, r);
			continue;
		}
		ck_assert_msg(json_array_size(alts) == (size_t)alt_count[r],
			      "job %d row %zu: %zu alternatives, want %d", i, r,
			      json_array_size(alts), alt_count[r]);
		for (int a = 0; a < alt_count[r]; a++) {
			json_t *alt = json_array_get(alts, (size_t)a);
			json_t *ac = json_object_get(alt, "codes");
			size_t at = (r * (size_t)n_alt + (size_t)a);
			for (size_t l = 0; l < L; l++)
				ck_assert_msg(json_integer_value(json_array_get(ac, l)) ==
						  alt_codes[at * L + l],
					      "job %d row %zu alternative %d level %zu", i, r, a,
					      l);
			ck_assert_msg(jfloat(json_object_get(alt, "distance")) == alt_dist[at],
				      "job %d row %zu alternative %d: distance", i, r, a);
		}
	}
	free(codes);
	free(alt_codes);
	free(dist);
	free(quant);
	free(alt_dist);
	free(alt_count);
}

/* Submit to @b job @i of @js on tower @tower of @m, answered into @a. */
static void submit(struct srv_batcher *b, struct sid_model *m, enum sid_tower_kind tower,
		   const struct jspec *js, int i, struct answer *a)
{
	const struct sid_tower *t = sid_model_tower(m, tower);
	struct srv_encode_req req;
	struct srv_job *j;

	ck_assert_ptr_nonnull(t);
	memset(&req, 0, sizeof(req));
	req.tower = tower;
	req.B = js->B;
	req.D = t->D;
	req.x = rows_of(i, js->B, t->D);
	req.top_k = js->top_k;
	req.quantized = js->quantized;
	j = srv_job_new(&req, m);
	ck_assert_ptr_nonnull(j);
	j->done = on_done;
	j->ctx = a;
	ck_assert_int_eq(srv_batcher_submit(b, j), 0);
}

/* Submit the @n jobs @js together on the item towers of @models and check
 * each answer against sid_encode of its rows alone, with its own model and
 * options (codes, distances, quantized vectors and alternatives). */
static void check_jobs(struct sid_model *const *models, const struct jspec *js, int n)
{
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
	for (int i = 0; i < n; i++)
		submit(b, models[js[i].model], SID_TOWER_ITEM, &js[i], i, &ans[i]);
	while (left > 0) {
		uv_run(&loop, UV_RUN_ONCE);
		left = 0;
		for (int i = 0; i < n; i++)
			left += !ans[i].done;
	}
	for (int i = 0; i < n; i++) {
		const struct sid_tower *t = sid_model_tower(models[js[i].model], SID_TOWER_ITEM);
		float *x = rows_of(i, js[i].B, t->D);
		json_t *doc;
		json_error_t jerr;

		ck_assert_msg(ans[i].status == 200, "job %d (%zu rows): %d %s", i, js[i].B,
			      ans[i].status, ans[i].body ? ans[i].body : "");
		doc = json_loads(ans[i].body, 0, &jerr);
		ck_assert_msg(doc != NULL, "%s", jerr.text);
		check_answer(t, &js[i], i, x, json_object_get(doc, "results"), ws);
		json_decref(doc);
		free(x);
		free(ans[i].body);
	}
	srv_batcher_close(b);
	uv_run(&loop, UV_RUN_DEFAULT); /* the handles close */
	srv_batcher_free(b);
	ck_assert_int_eq(uv_loop_close(&loop), 0);
	sid_workspace_free(ws);
}

/* Jobs of @B[0..n) rows, top_k 1, on @m alone: check_jobs. */
static void check_batch(struct sid_model *m, const size_t *B, int n)
{
	struct jspec js[MAX_JOBS];

	ck_assert_int_le(n, MAX_JOBS);
	for (int i = 0; i < n; i++)
		js[i] = (struct jspec){.B = B[i], .model = 0, .top_k = 1};
	check_jobs(&m, js, n);
}

static struct sid_model *model_seeded(uint64_t seed)
{
	struct mb_spec s;
	struct sid_model *m = NULL;
	struct sid_error err;
	uint8_t *buf;
	size_t len;

	mb_spec_init(&s);
	s.seed = seed;
	ck_assert_msg(mb_build_buffer(&s, &buf, &len, &err) == 0, "%s", err.msg);
	ck_assert_msg(sid_model_load_buffer(buf, len, &m, &err) == 0, "%s", err.msg);
	free(buf);
	return m;
}

static struct sid_model *model(void)
{
	return model_seeded(1);
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

/* One batch holds one model: jobs of two models (a reload between their
 * requests) queued together are each encoded with their own.  A batch key
 * without the model gave the second model's jobs the first one's codes. */
START_TEST(test_jobs_keep_their_model)
{
	static const struct jspec js[] = {
	    {1, 0, 1, 0}, {2, 1, 1, 0}, {1, 0, 1, 0}, {20, 1, 1, 0}, {1, 1, 1, 0}};
	struct sid_model *m[2] = {model(), model_seeded(99)};

	check_jobs(m, js, 5);
	sid_model_unref(m[0]);
	sid_model_unref(m[1]);
}
END_TEST

/* Everything a batch of several jobs answers is each job's own: the
 * distances, the quantized vectors of the jobs that asked for them (a
 * batch where only the first did, or only the last), and the
 * alternatives with their distances, for small jobs gathered and large
 * ones in place. */
START_TEST(test_jobs_answer_their_own_outputs)
{
	static const struct jspec js[][5] = {
	    {{1, 0, 1, 1}, {2, 0, 1, 0}, {1, 0, 1, 0}},
	    {{1, 0, 1, 0}, {2, 0, 1, 0}, {17, 0, 1, 1}},
	    {{3, 0, 1, 0}, {17, 0, 1, 1}, {0, 0, 1, 0}, {1, 0, 1, 1}},
	    {{1, 0, 3, 0}, {2, 0, 3, 1}, {20, 0, 3, 0}, {1, 0, 3, 0}},
	    {{16, 0, 16, 0}, {1, 0, 16, 1}, {1, 0, 16, 0}},
	};
	static const int n[] = {3, 3, 4, 4, 3};
	struct sid_model *m = model();

	for (size_t p = 0; p < sizeof(n) / sizeof(n[0]); p++)
		check_jobs(&m, js[p], n[p]);
	sid_model_unref(m);
}
END_TEST

/* ---- the batcher's clock, set by the tests (srv__batcher_clock) ---- */

static pthread_mutex_t clk_mu = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t clk_cv = PTHREAD_COND_INITIALIZER;
static double clk_now;		   /* the time the batcher reads */
static pthread_t clk_loop;	   /* the test's thread, which runs the loop */
static long clk_loop_reads;	   /* reads on it: each schedule reads first */
static int clk_hold;		   /* while set, a worker's read waits (a batch held) */
static int clk_held, clk_held_max; /* batches held now, and at most at once */
static int sentinel_ran, sentinel_done;

static double test_clock(void)
{
	double t;

	pthread_mutex_lock(&clk_mu);
	if (pthread_equal(pthread_self(), clk_loop)) {
		clk_loop_reads++;
	} else if (clk_hold) { /* a worker starting a batch */
		if (++clk_held > clk_held_max)
			clk_held_max = clk_held;
		pthread_cond_broadcast(&clk_cv);
		while (clk_hold)
			pthread_cond_wait(&clk_cv, &clk_mu);
		clk_held--;
	}
	t = clk_now;
	pthread_mutex_unlock(&clk_mu);
	return t;
}

static void clock_start(double now, int hold)
{
	clk_now = now;
	clk_loop = pthread_self();
	clk_loop_reads = 0;
	clk_hold = hold;
	clk_held = clk_held_max = 0;
	sentinel_ran = sentinel_done = 0;
	srv__batcher_clock = test_clock;
}

static void clock_set(double now)
{
	pthread_mutex_lock(&clk_mu);
	clk_now = now;
	pthread_mutex_unlock(&clk_mu);
}

static long loop_reads(void)
{
	long n;

	pthread_mutex_lock(&clk_mu);
	n = clk_loop_reads;
	pthread_mutex_unlock(&clk_mu);
	return n;
}

/* Run @loop until the batcher has read the clock on it again: a schedule
 * ran, at the time the clock says now. */
static void run_until_scheduled(uv_loop_t *loop)
{
	long before = loop_reads();

	while (loop_reads() == before)
		uv_run(loop, UV_RUN_ONCE);
}

/* Work queued on the pool behind the batches dispatched so far. */
static void sentinel_cb(uv_work_t *w)
{
	(void)w;
	pthread_mutex_lock(&clk_mu);
	sentinel_ran = 1;
	pthread_cond_broadcast(&clk_cv);
	pthread_mutex_unlock(&clk_mu);
}

static void sentinel_after(uv_work_t *w, int status)
{
	(void)w;
	(void)status;
	sentinel_done = 1;
}

static void batcher_end(uv_loop_t *loop, struct srv_batcher *b)
{
	srv_batcher_close(b);
	uv_run(loop, UV_RUN_DEFAULT); /* the handles close */
	srv_batcher_free(b);
	ck_assert_int_eq(uv_loop_close(loop), 0);
	srv__batcher_clock = NULL;
}

/* A batch falls due when its oldest job has waited max_delay_us: not one
 * microsecond before, and exactly then.  The clock is the test's, so both
 * moments are exact; a batch dispatched early is caught behind work queued
 * on the pool's one thread after it (a sentinel: when its callback has run,
 * so has the batch's, which answers the job).  No test controlled the time
 * before, and a delay compared with > instead of >= went unnoticed. */
START_TEST(test_batch_due_at_the_delay)
{
	const int delay_us = 1000;
	const double t0 = 1000.0;
	struct srv_batcher_opts o = {
	    .workers = 1, .max_batch = 4096, .max_delay_us = delay_us, .queue_rows = 100000};
	const struct jspec js = {1, 0, 1, 0};
	struct sid_model *m = model();
	struct answer ans = {0};
	struct srv_batcher *b;
	struct sid_error err;
	uv_work_t sentinel;
	uv_loop_t loop;
	long reads;

	ck_assert_int_eq(uv_loop_init(&loop), 0);
	ck_assert_msg(srv_batcher_new(&loop, &o, &b, &err) == 0, "%s", err.msg);
	clock_start(t0, 0);
	submit(b, m, SID_TOWER_ITEM, &js, 0, &ans);
	run_until_scheduled(&loop); /* the intake: not due */

	/* one microsecond before: the timer fires, the batch is not due */
	clock_set(t0 + (double)(delay_us - 1) * 1e-6);
	run_until_scheduled(&loop);
	ck_assert_int_eq(uv_queue_work(&loop, &sentinel, sentinel_cb, sentinel_after), 0);
	while (!sentinel_done)
		uv_run(&loop, UV_RUN_ONCE);
	ck_assert_msg(!ans.done, "dispatched 1 us before its delay");

	/* at the delay: the next schedule dispatches it, and nothing else
	 * reads the clock on the loop until the batch is answered */
	clock_set(t0 + (double)delay_us * 1e-6);
	reads = loop_reads();
	while (!ans.done && loop_reads() - reads < 50)
		uv_run(&loop, UV_RUN_ONCE);
	ck_assert_msg(ans.done, "not dispatched at its delay (%ld clock reads)",
		      loop_reads() - reads);
	ck_assert_int_eq(ans.status, 200);
	free(ans.body);
	batcher_end(&loop, b);
	sid_model_unref(m);
}
END_TEST

/* Two submitters at once: X reads the clock (t0), then, before X is
 * admitted, Y reads it later (t0 + 500 us) and is admitted first.  The
 * batch falls due when its oldest job has waited max_delay_us: X's wait,
 * at t0 + delay.  The admission time was read before the intake's mutex,
 * so the queue held Y ahead of X and the deadline was Y's: X waited
 * 500 us past max_delay_us (as long as a submitter was preempted between
 * the two, on a busy machine).  X's first clock read waits, at most
 * 300 ms, for Y's submit to return: it returns at once when X's read is
 * outside the mutex, and is held up until the wait runs out when X holds
 * the mutex as it reads (then Y is admitted after X). */
static pthread_t ord_x;
static int ord_x_reading, ord_y_done, ord_x_read_done;

static double order_clock(void)
{
	double t;

	pthread_mutex_lock(&clk_mu); /* (ord_x is written under it) */
	if (!pthread_equal(pthread_self(), ord_x)) {
		pthread_mutex_unlock(&clk_mu);
		return test_clock();
	}
	t = clk_now;
	if (!ord_x_read_done) {
		struct timespec until;
		ord_x_read_done = 1;
		ord_x_reading = 1;
		pthread_cond_broadcast(&clk_cv);
		clock_gettime(CLOCK_REALTIME, &until);
		until.tv_nsec += 300 * 1000000L;
		if (until.tv_nsec >= 1000000000L) {
			until.tv_sec++;
			until.tv_nsec -= 1000000000L;
		}
		while (!ord_y_done)
			if (pthread_cond_timedwait(&clk_cv, &clk_mu, &until))
				break;
	}
	pthread_mutex_unlock(&clk_mu);
	return t;
}

struct ord_submit {
	struct srv_batcher *b;
	struct sid_model *m;
	struct answer *a;
};

static void *ord_submit_x(void *p)
{
	struct ord_submit *o = p;
	const struct jspec js = {1, 0, 1, 0};

	submit(o->b, o->m, SID_TOWER_ITEM, &js, 0, o->a);
	return NULL;
}

START_TEST(test_oldest_job_sets_the_deadline)
{
	const int delay_us = 1000;
	const double t0 = 1000.0;
	struct srv_batcher_opts o = {
	    .workers = 1, .max_batch = 4096, .max_delay_us = delay_us, .queue_rows = 100000};
	const struct jspec js = {1, 0, 1, 0};
	struct sid_model *m = model();
	struct answer ax = {0}, ay = {0};
	struct ord_submit os;
	struct srv_batcher *b;
	struct sid_error err;
	uv_loop_t loop;
	long reads;

	ck_assert_int_eq(uv_loop_init(&loop), 0);
	ck_assert_msg(srv_batcher_new(&loop, &o, &b, &err) == 0, "%s", err.msg);
	clock_start(t0, 0);
	ord_x_reading = ord_y_done = ord_x_read_done = 0;
	os.b = b;
	os.m = m;
	os.a = &ax;
	/* ord_x is set before the thread reads the clock: it is created
	 * holding clk_mu, which order_clock takes first for X */
	pthread_mutex_lock(&clk_mu);
	srv__batcher_clock = order_clock;
	ck_assert_int_eq(pthread_create(&ord_x, NULL, ord_submit_x, &os), 0);
	while (!ord_x_reading)
		pthread_cond_wait(&clk_cv, &clk_mu);
	clk_now = t0 + 500e-6; /* Y comes 500 us after X read the clock */
	pthread_mutex_unlock(&clk_mu);
	submit(b, m, SID_TOWER_ITEM, &js, 1, &ay);
	pthread_mutex_lock(&clk_mu);
	ord_y_done = 1;
	pthread_cond_broadcast(&clk_cv);
	pthread_mutex_unlock(&clk_mu);
	pthread_join(ord_x, NULL);
	run_until_scheduled(&loop); /* the intake: not due */
	ck_assert_msg(!ax.done && !ay.done, "dispatched before any delay");

	/* X's delay is up: the batch (X and Y: one model, one top_k) goes */
	clock_set(t0 + (double)delay_us * 1e-6);
	reads = loop_reads();
	while (!(ax.done && ay.done) && loop_reads() - reads < 50)
		uv_run(&loop, UV_RUN_ONCE);
	ck_assert_msg(ax.done,
		      "the first job admitted was not dispatched when it had waited "
		      "max_delay_us (%ld clock reads)",
		      loop_reads() - reads);
	ck_assert_int_eq(ax.status, 200);
	ck_assert_int_eq(ay.status, 200);
	ck_assert_msg(ax.queue_wait <= (double)delay_us * 1e-6 + 1e-9,
		      "queue wait %.6f s, past max_delay_us", ax.queue_wait);
	free(ax.body);
	free(ay.body);
	batcher_end(&loop, b);
	sid_model_unref(m);
}
END_TEST

/* At most `workers` batches are in flight, even when several groups are due
 * at once: with 1 worker and 2 pool threads (one extra, as assign's registry
 * calls have), two item groups (top_k 1 and 2: a batch is one top_k) and a
 * user group queued together encode one after the other.  Workers are held
 * as they start a batch (the clock they read), and work queued behind the
 * batches finds the other thread free.  A schedule that let busy pass
 * workers (its round robin comes back to the item tower, whose second group
 * is due) held two batches at once. */
START_TEST(test_batches_in_flight_within_workers)
{
	static const int K[] = {5, 7, 3};
	struct srv_batcher_opts o = {.workers = 1,
				     .max_batch = 4096,
				     .max_delay_us = 10000000,
				     .queue_rows = 100000,
				     .extra_threads = 1};
	static const struct jspec js[] = {{2, 0, 1, 0}, {1, 0, 2, 0}, {2, 0, 1, 0}};
	static const enum sid_tower_kind tower[] = {SID_TOWER_ITEM, SID_TOWER_ITEM, SID_TOWER_USER};
	struct answer ans[3] = {{0}};
	struct sid_model *m = NULL;
	struct srv_batcher *b;
	struct sid_error err;
	struct mb_spec s;
	uv_work_t sentinel;
	uv_loop_t loop;
	uint8_t *buf;
	size_t len;

	mb_spec_init(&s);
	mb_tower(&s, SID_TOWER_USER, 6, NULL, 0, 4, 3, K, "relu", "none", 1);
	ck_assert_msg(mb_build_buffer(&s, &buf, &len, &err) == 0, "%s", err.msg);
	ck_assert_msg(sid_model_load_buffer(buf, len, &m, &err) == 0, "%s", err.msg);
	free(buf);
	ck_assert_int_eq(uv_loop_init(&loop), 0);
	ck_assert_msg(srv_batcher_new(&loop, &o, &b, &err) == 0, "%s", err.msg);
	clock_start(1000.0, 1);
	srv_batcher_flush(b); /* every group due at once */
	for (int i = 0; i < 3; i++)
		submit(b, m, tower[i], &js[i], i, &ans[i]);
	run_until_scheduled(&loop); /* one intake, one schedule */
	ck_assert_int_eq(uv_queue_work(&loop, &sentinel, sentinel_cb, sentinel_after), 0);
	pthread_mutex_lock(&clk_mu);
	while (clk_held_max < 2 && !(sentinel_ran && clk_held == 1))
		pthread_cond_wait(&clk_cv, &clk_mu);
	ck_assert_msg(clk_held_max == 1, "%d batches in flight with 1 worker", clk_held_max);
	clk_hold = 0;
	pthread_cond_broadcast(&clk_cv);
	pthread_mutex_unlock(&clk_mu);
	while (!ans[0].done || !ans[1].done || !ans[2].done || !sentinel_done)
		uv_run(&loop, UV_RUN_ONCE);
	for (int i = 0; i < 3; i++) {
		ck_assert_msg(ans[i].status == 200, "job %d: %d %s", i, ans[i].status,
			      ans[i].body ? ans[i].body : "");
		free(ans[i].body);
	}
	batcher_end(&loop, b);
	sid_model_unref(m);
}
END_TEST

static void add(TCase *tc)
{
	tcase_add_test(tc, test_jobs_answer_their_own_rows);
	tcase_add_test(tc, test_empty_jobs_among_others);
	tcase_add_test(tc, test_jobs_keep_their_model);
	tcase_add_test(tc, test_jobs_answer_their_own_outputs);
	tcase_add_test(tc, test_batch_due_at_the_delay);
	tcase_add_test(tc, test_oldest_job_sets_the_deadline);
	tcase_add_test(tc, test_batches_in_flight_within_workers);
}

int main(void)
{
	return srv_check_run("batcher", add);
}
