/*
 * batcher.h - the scheduler of semid-server: dynamic batching on a libuv
 * loop thread, encoding on a libuv worker pool.
 *
 * HTTP threads hand finished, validated requests ("jobs") to
 * srv_batcher_submit, which appends them to a mutex-protected intake list and
 * wakes the loop with uv_async_send.  The loop thread keeps one pending queue
 * per tower and dispatches a batch with uv_queue_work when
 *   - the queue holds max_batch rows, or
 *   - its oldest job has waited max_delay_us (a timerfd watched by uv_poll:
 *     uv_timer only has millisecond resolution), or
 *   - the next job needs a different model or top_k (a batch is one model,
 *     one top_k), or the server is draining,
 * and a worker is free: at most `workers` batches are in flight, so under
 * load rows keep gathering while every worker is busy (bigger batches, as
 * Triton's dynamic batcher does).  A job is never split across batches.
 *
 * Workers (UV_THREADPOOL_SIZE = workers, each single-threaded) run sid_encode on the batch and
 * write each job's response body.  The after-work callback, back on the loop thread, records
 * metrics and calls each job's done() (which resumes its HTTP connection).
 *
 * Back-pressure: at most queue_rows rows may be admitted (queued or
 * encoding); srv_batcher_submit refuses a job beyond that at once, and the
 * HTTP layer answers 503 with Retry-After.
 *
 * Assign jobs are batched with encode jobs of the same model (an assign is
 * an encode plus a store call); a worker leaves their codes in the job and
 * the after-work callback hands them on (opts.assign_handoff) instead of
 * answering them.
 *
 * Hot swap: a job holds its own reference to the model it was validated
 * against and is batched only with jobs on the same model, so a swap while
 * it waits or encodes changes nothing for it; it reports that model's
 * version.
 *
 * Thread-safety: srv_batcher_submit and srv_batcher_admitted may be called
 * from any thread; everything else from the loop thread.
 */
#ifndef SRV_BATCHER_H
#define SRV_BATCHER_H

#include <pthread.h>
#include <stdint.h>
#include <uv.h>

#include "api.h"
#include "err.h"
#include "metrics.h"
#include "model.h"

struct srv_job;
typedef void (*srv_job_done_fn)(struct srv_job *job);

struct srv_job {
	struct srv_job *next;	   /* private */
	struct srv_encode_req req; /* owned by the job */
	struct sid_model *model;   /* one reference, owned by the job */
	double t_admit;		   /* srv_now() at submit */
	double queue_wait;	   /* seconds from submit to encode start */
	double encode_time;	   /* seconds its batch took to encode; < 0: not encoded */
	/* The response, written by a worker: */
	int status; /* 200, or 500 when the encoder failed */
	char *body; /* malloc'ed */
	size_t body_len;
	srv_job_done_fn done; /* called on the loop thread; takes over the job */
	void *ctx;
	/* Assign jobs (POST /v1/{items,users}:assign): encoded like any job,
	 * then handed to opts.assign_handoff with their codes instead of a
	 * response (assign.c stores them and writes the response). */
	int assign;
	int L;
	int32_t *codes; /* (B, L) after the encode; owned by the job */
};

/* Monotonic seconds. */
double srv_now(void);

/* Tests: when set, the batcher's clock instead of srv_now (the time a job
 * is admitted at, the time a batch falls due by and a worker starts it at),
 * so that a test can put a job's wait exactly at max_delay_us.  Called from
 * any thread.  Production code leaves it NULL. */
extern double (*srv__batcher_clock)(void);

/* A job for @req (moved in: @req is left empty) on @model (a reference is
 * taken).  NULL when out of memory. */
struct srv_job *srv_job_new(struct srv_encode_req *req, struct sid_model *model);
void srv_job_free(struct srv_job *job); /* drops the model reference; NULL: no-op */

struct srv_batcher_opts {
	int workers;
	int max_batch;
	int max_delay_us;
	long queue_rows;
	struct srv_metrics *metrics; /* may be NULL */
	/* Where encoded assign jobs go (loop thread; takes over the job).  NULL:
	 * assign jobs are answered 503. */
	void (*assign_handoff)(void *ctx, struct srv_job *job);
	void *assign_ctx;
	/* Pool threads beyond `workers` for others' work on the same pool (the
	 * registry calls of assign.c), so they never wait behind an encode. */
	int extra_threads;
};

struct srv_batcher;

/*
 * Create the scheduler on @loop (sets UV_THREADPOOL_SIZE, so call it before
 * anything else in the process uses the libuv thread pool).
 */
int srv_batcher_new(uv_loop_t *loop, const struct srv_batcher_opts *opts, struct srv_batcher **out,
		    struct sid_error *err);

/* Admit @job (any thread).  Returns 0, or -1 when the queue is full or the
 * batcher is closed (the job stays the caller's). */
int srv_batcher_submit(struct srv_batcher *b, struct srv_job *job);

/* Rows admitted and not yet answered (any thread). */
long srv_batcher_admitted(struct srv_batcher *b);

/* Dispatch everything now, without waiting for batches to fill (drain). */
void srv_batcher_flush(struct srv_batcher *b);

/* Close the loop handles (loop thread, after the last job is answered);
 * from then on srv_batcher_submit refuses.  The HTTP threads may still call
 * it until the daemon stops: srv_batcher_free, after that, frees. */
void srv_batcher_close(struct srv_batcher *b);
void srv_batcher_free(struct srv_batcher *b);

#endif
