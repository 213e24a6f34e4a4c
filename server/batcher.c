/*
 * batcher.c - dynamic batching on the libuv loop thread and encoding on the
 * libuv worker pool (see batcher.h for the design).
 *
 * Loop-thread state (pending queues, in-flight count, the deadline timer) is
 * touched only by the loop thread; the intake list and the admitted-rows
 * counter are the only things shared with the HTTP threads.
 */
#include "batcher.h"

#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/timerfd.h>
#include <time.h>
#include <unistd.h>

#include "cpus.h"
#include "log.h"

/* A job of this many rows (the encoder's panel height) or more is encoded in
 * place; smaller ones are gathered (encode_jobs). */
#define IN_PLACE_ROWS 16

struct pending {
	struct srv_job *head, *tail;
	size_t rows;
};

struct batch {
	uv_work_t work;
	struct srv_batcher *b;
	enum sid_tower_kind tower;
	struct srv_job *jobs;
	size_t n_jobs, B;
	int encode_rc;
	int32_t *codes; /* (coded, L): the codes answered, for the metrics */
	size_t coded;	/* rows of them: B less those of refused requests */
	int L;
	double *waits; /* (n_jobs) */
};

struct srv_batcher {
	uv_loop_t *loop;
	struct srv_batcher_opts o;

	/* Shared with submitters. */
	pthread_mutex_t mu;
	struct srv_job *in_head, *in_tail;
	long admitted; /* rows; atomic */
	int closed;

	/* Loop thread only. */
	uv_async_t async;
	uv_poll_t poll;
	int tfd;
	struct pending pending[SID_TOWER_COUNT];
	int busy;
	int draining;
	int next_tower; /* round robin between towers */
	double armed;	/* deadline the timerfd is set to (0: disarmed) */
	int handles_open;
	uv_work_t warm; /* starts the pool threads before the first request */
};

static pthread_key_t ws_key;
static pthread_once_t ws_once = PTHREAD_ONCE_INIT;

static void ws_destroy(void *p)
{
	sid_workspace_free(p);
}

static void ws_key_init(void)
{
	pthread_key_create(&ws_key, ws_destroy);
}

/* The calling worker thread's encode workspace (created on first use). */
static struct sid_workspace *thread_ws(void)
{
	struct sid_workspace *ws;
	pthread_once(&ws_once, ws_key_init);
	ws = pthread_getspecific(ws_key);
	if (!ws) {
		ws = sid_workspace_new();
		if (ws)
			pthread_setspecific(ws_key, ws);
	}
	return ws;
}

double srv_now(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

double (*srv__batcher_clock)(void);

/* The batcher's time: srv_now, or the test's clock. */
static double clock_now(void)
{
	return srv__batcher_clock ? srv__batcher_clock() : srv_now();
}

struct srv_job *srv_job_new(struct srv_encode_req *req, struct sid_model *model)
{
	struct srv_job *job = calloc(1, sizeof(*job));
	if (!job)
		return NULL;
	job->req = *req;
	memset(req, 0, sizeof(*req));
	job->model = sid_model_ref(model);
	job->encode_time = -1; /* not encoded (yet) */
	return job;
}

void srv_job_free(struct srv_job *job)
{
	if (!job)
		return;
	srv_encode_req_release(&job->req);
	sid_model_unref(job->model);
	free(job->codes);
	free(job->body);
	free(job);
}

static void schedule(struct srv_batcher *b);

/* @j's answer: the error body of @kind saying @msg, with its status. */
static void job_error(struct srv_job *j, enum srv_err kind, const char *msg)
{
	free(j->body);
	j->body = srv_api_error_body(kind, msg, &j->body_len, &j->status);
}

/* Answer the jobs of list @j (not admitted any more) 503 @msg (loop thread). */
static void answer_503(struct srv_batcher *b, struct srv_job *j, const char *msg)
{
	struct srv_job *next;

	for (; j; j = next) {
		next = j->next;
		j->next = NULL;
		__atomic_sub_fetch(&b->admitted, (long)j->req.B, __ATOMIC_RELAXED);
		job_error(j, SRV_ERR_UNAVAILABLE, msg);
		j->done(j);
	}
}

/* ---- intake (any thread) ---- */

int srv_batcher_submit(struct srv_batcher *b, struct srv_job *job)
{
	long rows = (long)job->req.B;
	int rc = 0;

	job->next = NULL;
	pthread_mutex_lock(&b->mu);
	/* The admission time is read under the mutex that orders the intake:
	 * a pending queue is then in t_admit order, and its head is its oldest
	 * job, whose wait the batch's deadline is reckoned from (deadline_of).
	 * Read before it, a thread that read the clock first could be queued
	 * behind one that read it later, and wait past max_delay_us by the
	 * difference. */
	job->t_admit = clock_now();
	/* admitted only grows under the mutex; it may shrink concurrently
	 * (answers), which can only make room. */
	if (b->closed || __atomic_load_n(&b->admitted, __ATOMIC_RELAXED) + rows > b->o.queue_rows) {
		rc = -1;
	} else {
		__atomic_add_fetch(&b->admitted, rows, __ATOMIC_RELAXED);
		if (b->in_tail)
			b->in_tail->next = job;
		else
			b->in_head = job;
		b->in_tail = job;
	}
	pthread_mutex_unlock(&b->mu);
	if (rc == 0)
		uv_async_send(&b->async);
	return rc;
}

long srv_batcher_admitted(struct srv_batcher *b)
{
	return __atomic_load_n(&b->admitted, __ATOMIC_RELAXED);
}

static void on_async(uv_async_t *h)
{
	struct srv_batcher *b = h->data;
	struct srv_job *j, *next;

	pthread_mutex_lock(&b->mu);
	j = b->in_head;
	b->in_head = b->in_tail = NULL;
	pthread_mutex_unlock(&b->mu);
	for (; j; j = next) {
		struct pending *p = &b->pending[j->req.tower];
		next = j->next;
		j->next = NULL;
		if (p->tail)
			p->tail->next = j;
		else
			p->head = j;
		p->tail = j;
		p->rows += j->req.B;
	}
	if (b->o.metrics)
		srv_metrics_queue_rows(b->o.metrics, srv_batcher_admitted(b));
	schedule(b);
}

/* ---- workers ---- */

static void batch_free(struct batch *bt)
{
	free(bt->codes);
	free(bt->waits);
	free(bt);
}

/* Every job of @bt answered @kind (500 for a bug, 503 for want of memory). */
static void fail_jobs(struct batch *bt, enum srv_err kind, const char *msg)
{
	for (struct srv_job *j = bt->jobs; j; j = j->next)
		job_error(j, kind, msg);
}

/* Rows [row, row + n) of the batch's outputs @all: sid_encode of @x there. */
static int encode_at(const struct sid_tower *t, const float *x, size_t n, size_t row,
		     const struct sid_encode_out *all, struct sid_workspace *ws,
		     struct sid_error *err)
{
	struct sid_encode_out o = *all;
	size_t na = (size_t)all->n_alt;

	o.codes += row * (size_t)t->L;
	o.dist += row;
	if (o.quant)
		o.quant += row * (size_t)t->E;
	if (na) {
		o.alt_codes += row * na * (size_t)t->L;
		o.alt_dist += row * na;
		o.alt_count += row;
	}
	return sid_encode(t, x, n, &o, ws, err);
}

/*
 * Encode the rows of @jobs into @out, in job order.  A job of a panel's rows
 * or more is encoded where its request left it; runs of smaller jobs (1-item
 * requests) are copied together first, so that they share panels.  Copying a
 * 64-item request into one large matrix cost as much as the copy into panels
 * that the encoder makes anyway, and per-row results do not depend on what
 * else is in the call.  A job with no rows has nothing encoded (api.c
 * refuses empty requests, but nothing here needs that: one beside a 1-row
 * job had that row copied into a buffer never allocated).
 */
static int encode_jobs(const struct sid_tower *t, struct srv_job *jobs,
		       const struct sid_encode_out *out, struct sid_workspace *ws,
		       struct sid_error *err)
{
	const size_t D = (size_t)t->D;
	struct srv_job *j = jobs, *k;
	size_t row = 0, small = 0;
	float *xbuf = NULL;
	int rc = 0;

	for (k = jobs; k; k = k->next)
		if (k->req.B < IN_PLACE_ROWS)
			small += k->req.B;
	if (small > 1 && !(xbuf = malloc(small * D * sizeof(float))))
		return sid_error_set(err, SID_ENOMEM, "out of memory for the batch");
	while (j && !rc) {
		size_t n = 0, with_rows = 0;
		/* the run of small jobs from j (up to k), and how many have rows */
		for (k = j; k && k->req.B < IN_PLACE_ROWS; k = k->next)
			with_rows += k->req.B > 0;
		if (with_rows < 2) { /* a large job, or a run of one with rows: in place */
			if (k == j)
				k = j->next;
			for (; j != k && !rc; j = j->next)
				if (j->req.B > 0) {
					rc = encode_at(t, j->req.x, j->req.B, row, out, ws, err);
					row += j->req.B;
				}
			continue;
		}
		for (; j != k; j = j->next) {
			if (!j->req.B)
				continue;
			/* two small jobs with rows are 2+ rows: xbuf is set */
			/* NOLINTNEXTLINE(clang-analyzer-core.NonNullParamChecker) */
			memcpy(xbuf + n * D, j->req.x, j->req.B * D * sizeof(float));
			n += j->req.B;
		}
		rc = encode_at(t, xbuf, n, row, out, ws, err);
		row += n;
	}
	free(xbuf);
	return rc;
}

/* The @n rows of codes from @row on were answered (or go to the registry):
 * keep them for the metrics, after those kept before (work_cb). */
static void keep_codes(struct batch *bt, size_t row, size_t n)
{
	memmove(bt->codes + bt->coded * (size_t)bt->L, bt->codes + row * (size_t)bt->L,
		n * (size_t)bt->L * sizeof(int32_t));
	bt->coded += n;
}

static void work_cb(uv_work_t *w)
{
	struct batch *bt = w->data;
	struct srv_job *j0 = bt->jobs, *j;
	const struct sid_tower *t = sid_model_tower(j0->model, bt->tower);
	struct sid_workspace *ws = thread_ws();
	struct sid_encode_out out;
	struct sid_error err;
	float *dist = NULL, *quant = NULL, *alt_dist = NULL;
	int32_t *alt_codes = NULL;
	int *alt_count = NULL;
	int want_q = 0, n_alt = j0->req.top_k - 1, encoded = 0;
	size_t B = bt->B, row, i;
	double start = clock_now();

	sid_error_clear(&err);
	for (j = bt->jobs, i = 0; j; j = j->next, i++) {
		j->queue_wait = start - j->t_admit;
		bt->waits[i] = j->queue_wait;
		want_q |= j->req.quantized;
	}
	if (!t || !ws) {
		fail_jobs(bt, !t ? SRV_ERR_INTERNAL : SRV_ERR_UNAVAILABLE,
			  !t ? "tower vanished from the model" : "out of memory");
		return;
	}
	bt->L = t->L;
	bt->codes = malloc(B * (size_t)t->L * sizeof(int32_t));
	dist = malloc(B * sizeof(float));
	if (want_q)
		quant = malloc(B * (size_t)t->E * sizeof(float));
	if (n_alt > 0) {
		alt_codes = malloc(B * (size_t)n_alt * (size_t)t->L * sizeof(int32_t));
		alt_dist = malloc(B * (size_t)n_alt * sizeof(float));
		alt_count = malloc(B * sizeof(int));
	}
	if (!bt->codes || !dist || (want_q && !quant) ||
	    (n_alt > 0 && (!alt_codes || !alt_dist || !alt_count))) {
		fail_jobs(bt, SRV_ERR_UNAVAILABLE, "out of memory for the batch");
		goto done;
	}
	memset(&out, 0, sizeof(out));
	out.codes = bt->codes;
	out.dist = dist;
	out.quant = quant;
	out.n_alt = n_alt;
	out.alt_codes = alt_codes;
	out.alt_dist = alt_dist;
	out.alt_count = alt_count;
	bt->encode_rc = encode_jobs(t, bt->jobs, &out, ws, &err);
	{
		double took = clock_now() - start;
		for (j = bt->jobs; j; j = j->next)
			j->encode_time = took;
	}
	if (bt->encode_rc) {
		char msg[600];
		snprintf(msg, sizeof(msg), "encode failed: %s", err.msg);
		fail_jobs(bt, err.code == SID_ENOMEM ? SRV_ERR_UNAVAILABLE : SRV_ERR_INTERNAL, msg);
		goto done;
	}
	encoded = 1;
	for (j = bt->jobs, row = 0; j; j = j->next) {
		struct srv_buf body = SRV_BUF_INIT;
		long bad = sid_encode_overflow(dist + row,
					       alt_dist ? alt_dist + row * (size_t)n_alt : NULL,
					       alt_count ? alt_count + row : NULL, n_alt, j->req.B);
		if (bad >= 0) { /* this job alone: the rows are encoded one by one */
			char msg[200];
			snprintf(msg, sizeof(msg),
				 "inputs[%ld] is too large for the model: its encoder overflows "
				 "float32 on its embedding (scale it down)",
				 bad);
			job_error(j, SRV_ERR_INVALID_ARGUMENT, msg);
			row += j->req.B; /* codes no one gets: not kept */
			continue;
		}
		if (j->assign) {
			/* The store call and the response come later (assign.c). */
			size_t nc = j->req.B * (size_t)t->L;
			j->L = t->L;
			j->codes = malloc(nc * sizeof(int32_t));
			if (j->codes) {
				memcpy(j->codes, bt->codes + row * (size_t)t->L,
				       nc * sizeof(int32_t));
			} else {
				job_error(j, SRV_ERR_UNAVAILABLE, "out of memory for the codes");
			}
			keep_codes(bt, row, j->req.B);
			row += j->req.B;
			continue;
		}
		struct srv_encode_res res = {
		    .L = t->L,
		    .E = t->E,
		    .codes = bt->codes + row * (size_t)t->L,
		    .dist = dist + row,
		    .quant = quant ? quant + row * (size_t)t->E : NULL,
		    .n_alt = n_alt,
		    .alt_codes = alt_codes ? alt_codes + row * (size_t)n_alt * (size_t)t->L : NULL,
		    .alt_dist = alt_dist ? alt_dist + row * (size_t)n_alt : NULL,
		    .alt_count = alt_count ? alt_count + row : NULL,
		};
		srv_encode_res_write(&body, j->model->version, &j->req, &res);
		j->body = srv_buf_detach(&body, &j->body_len);
		j->status = 200;
		if (!j->body)
			job_error(j, SRV_ERR_UNAVAILABLE, "out of memory writing the response");
		keep_codes(bt, row, j->req.B);
		row += j->req.B;
	}
done:
	if (!encoded) {
		free(bt->codes); /* no codes for the entropy window */
		bt->codes = NULL;
	}
	free(dist);
	free(quant);
	free(alt_codes);
	free(alt_dist);
	free(alt_count);
}

static void after_work_cb(uv_work_t *w, int status)
{
	struct batch *bt = w->data;
	struct srv_batcher *b = bt->b;
	struct srv_job *j, *next;

	(void)status; /* never cancelled: uv_cancel is not used */
	if (b->o.metrics)
		srv_metrics_batch(b->o.metrics, bt->tower, bt->codes ? bt->B : 0,
				  bt->jobs->model->sha256, bt->codes, bt->codes ? bt->coded : 0,
				  bt->L, bt->waits, bt->n_jobs);
	b->busy--;
	for (j = bt->jobs; j; j = next) {
		next = j->next;
		j->next = NULL;
		__atomic_sub_fetch(&b->admitted, (long)j->req.B, __ATOMIC_RELAXED);
		if (j->assign && !j->body && j->codes) {
			if (b->o.assign_handoff) {
				b->o.assign_handoff(b->o.assign_ctx, j);
				continue;
			}
			job_error(j, SRV_ERR_UNAVAILABLE, "the registry is disabled");
		}
		if (!j->body)
			job_error(j, SRV_ERR_INTERNAL, "no response was written");
		j->done(j);
	}
	if (b->o.metrics)
		srv_metrics_queue_rows(b->o.metrics, srv_batcher_admitted(b));
	batch_free(bt);
	schedule(b);
}

/* ---- scheduling (loop thread) ---- */

static int same_key(const struct srv_job *a, const struct srv_job *c)
{
	return a->model == c->model && a->req.top_k == c->req.top_k;
}

/* Take the head group of @p (same model and top_k, up to max_batch rows, at
 * least one job) and queue it on the pool. */
static void dispatch(struct srv_batcher *b, enum sid_tower_kind t)
{
	struct pending *p = &b->pending[t];
	struct srv_job *first = p->head, *last = first, *j;
	struct batch *bt = calloc(1, sizeof(*bt));
	size_t rows = first->req.B, n = 1;

	for (j = first->next; j && same_key(first, j) && rows + j->req.B <= (size_t)b->o.max_batch;
	     j = j->next) {
		rows += j->req.B;
		last = j;
		n++;
	}
	if (bt)
		bt->waits = calloc(n, sizeof(double));
	p->head = last->next;
	if (!p->head)
		p->tail = NULL;
	p->rows -= rows;
	last->next = NULL;
	if (!bt || !bt->waits) {
		answer_503(b, first, "out of memory"); /* rather than lose them */
		if (bt)
			free(bt);
		return;
	}
	bt->b = b;
	bt->tower = t;
	bt->jobs = first;
	bt->n_jobs = n;
	bt->B = rows;
	bt->work.data = bt;
	b->busy++;
	if (uv_queue_work(b->loop, &bt->work, work_cb, after_work_cb) != 0) {
		fail_jobs(bt, SRV_ERR_UNAVAILABLE, "could not queue the batch");
		after_work_cb(&bt->work, 0); /* answers the jobs, frees, busy-- */
	}
}

/* When the head job of @p (not empty) has waited max_delay_us: the one
 * expression the timer is armed for and due() compares with, so that the
 * timer firing at it finds the group due. */
static double deadline_of(const struct srv_batcher *b, const struct pending *p)
{
	return p->head->t_admit + (double)b->o.max_delay_us * 1e-6;
}

/* Is the head group of @p ready to go at @now? */
static int due(struct srv_batcher *b, const struct pending *p, double now)
{
	const struct srv_job *j;
	size_t rows = 0;

	if (!p->head)
		return 0;
	if (b->draining || p->rows >= (size_t)b->o.max_batch)
		return 1;
	if (now >= deadline_of(b, p))
		return 1;
	/* A different model or top_k behind the head group closes the group. */
	for (j = p->head; j; j = j->next) {
		if (!same_key(p->head, j))
			return 1;
		rows += j->req.B;
		if (rows >= (size_t)b->o.max_batch)
			return 1;
	}
	return 0;
}

static void arm_timer(struct srv_batcher *b, double deadline)
{
	struct itimerspec its;
	if (deadline == b->armed)
		return; /* one syscall saved per request at steady load */
	b->armed = deadline;
	memset(&its, 0, sizeof(its));
	if (deadline > 0) {
		double now = clock_now(), d = deadline - now;
		if (d < 1e-6)
			d = 1e-6; /* zero would disarm */
		its.it_value.tv_sec = (time_t)d;
		its.it_value.tv_nsec = (long)((d - (double)(time_t)d) * 1e9);
		if (!its.it_value.tv_sec && !its.it_value.tv_nsec)
			its.it_value.tv_nsec = 1000;
	}
	timerfd_settime(b->tfd, 0, &its, NULL);
}

static void schedule(struct srv_batcher *b)
{
	double now = clock_now(), deadline = 0;
	int progress = 1;

	while (progress && b->busy < b->o.workers) {
		progress = 0;
		for (int k = 0; k < SID_TOWER_COUNT && b->busy < b->o.workers; k++) {
			int t = (b->next_tower + k) % SID_TOWER_COUNT;
			if (due(b, &b->pending[t], now)) {
				dispatch(b, (enum sid_tower_kind)t);
				b->next_tower = (t + 1) % SID_TOWER_COUNT;
				progress = 1;
			}
		}
	}
	/* Wake at the earliest deadline still ahead (none when all workers are
	 * busy: a finishing batch calls schedule again). */
	if (b->busy < b->o.workers)
		for (int t = 0; t < SID_TOWER_COUNT; t++) {
			const struct pending *p = &b->pending[t];
			double d;
			if (!p->head)
				continue;
			d = deadline_of(b, p);
			if (!deadline || d < deadline)
				deadline = d;
		}
	arm_timer(b, deadline);
}

static void on_timer(uv_poll_t *h, int status, int events)
{
	struct srv_batcher *b = h->data;
	uint64_t ticks;
	(void)status;
	(void)events;
	while (read(b->tfd, &ticks, sizeof(ticks)) < 0 && errno == EINTR)
		;
	b->armed = 0; /* fired: a one-shot timer is disarmed now */
	schedule(b);
}

void srv_batcher_flush(struct srv_batcher *b)
{
	b->draining = 1;
	schedule(b);
}

static void warm_cb(uv_work_t *w)
{
	(void)w;
	thread_ws();
}

static void warm_after_cb(uv_work_t *w, int status)
{
	(void)w;
	(void)status;
}

/*
 * libuv starts its pool's threads (8 MiB stacks) at the first
 * uv_queue_work and abort()s when one cannot start (RLIMIT_NPROC, a memory
 * limit): the server died by SIGABRT (134) without a word.  @n threads of
 * that stack size are tried here first (sid_threads_try): one that cannot
 * start is said, and the start refused.
 */
static int pool_probe(int n, struct sid_error *err)
{
	int e, started = sid_threads_try(n, (size_t)8 << 20, &e); /* libuv's stacks */

	if (started < n)
		return sid_error_set(
		    err, SID_ENOMEM,
		    "cannot start the %d threads of the worker pool (%d did): %s "
		    "(the process or thread limit, RLIMIT_NPROC / LimitNPROC, or a "
		    "memory limit for their 8 MiB stacks)",
		    n, started, strerror(e));
	return 0;
}

int srv_batcher_new(uv_loop_t *loop, const struct srv_batcher_opts *opts, struct srv_batcher **out,
		    struct sid_error *err)
{
	struct srv_batcher *b;
	char n[16];

	*out = NULL;
	if (opts->workers < 1 || opts->max_batch < 1 || opts->queue_rows < 1)
		return sid_error_set(err, SID_EINVAL,
				     "batcher: workers, max_batch and queue_rows "
				     "must be positive");
	if (pool_probe(opts->workers + (opts->extra_threads > 0 ? opts->extra_threads : 0), err))
		return err->code;
	b = calloc(1, sizeof(*b));
	if (!b)
		return sid_error_set(err, SID_ENOMEM, "batcher: out of memory");
	b->loop = loop;
	b->o = *opts;
	b->tfd = -1;
	/* The pool size is read when libuv first starts its pool. */
	snprintf(n, sizeof(n), "%d",
		 opts->workers + (opts->extra_threads > 0 ? opts->extra_threads : 0));
	setenv("UV_THREADPOOL_SIZE", n, 1);
	if (pthread_mutex_init(&b->mu, NULL)) {
		free(b);
		return sid_error_set(err, SID_ENOMEM, "batcher: mutex");
	}
	b->tfd = timerfd_create(CLOCK_MONOTONIC, TFD_NONBLOCK | TFD_CLOEXEC);
	if (b->tfd < 0) {
		int e = errno;
		pthread_mutex_destroy(&b->mu);
		free(b);
		return sid_error_set(err, SID_EIO, "batcher: timerfd_create: %s", strerror(e));
	}
	uv_async_init(loop, &b->async, on_async);
	b->async.data = b;
	uv_poll_init(loop, &b->poll, b->tfd);
	b->poll.data = b;
	uv_poll_start(&b->poll, UV_READABLE, on_timer);
	b->handles_open = 2;
	/* libuv starts its pool on first use: do that now, not on the first
	 * request (it cost that request milliseconds). */
	uv_queue_work(loop, &b->warm, warm_cb, warm_after_cb);
	*out = b;
	return 0;
}

static void on_closed(uv_handle_t *h)
{
	struct srv_batcher *b = h->data;
	if (--b->handles_open > 0)
		return;
	close(b->tfd);
	b->tfd = -1;
}

void srv_batcher_free(struct srv_batcher *b)
{
	if (!b)
		return;
	pthread_mutex_destroy(&b->mu);
	free(b);
}

void srv_batcher_close(struct srv_batcher *b)
{
	struct srv_job *j;

	if (!b)
		return;
	pthread_mutex_lock(&b->mu);
	b->closed = 1;
	j = b->in_head; /* submitted after the drain's last look: answered here */
	b->in_head = b->in_tail = NULL;
	pthread_mutex_unlock(&b->mu);
	answer_503(b, j, SRV_MSG_SHUTTING_DOWN);
	uv_poll_stop(&b->poll);
	uv_close((uv_handle_t *)&b->async, on_closed);
	uv_close((uv_handle_t *)&b->poll, on_closed);
}
