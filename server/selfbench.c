/* selfbench.c - in-process encode throughput baseline; see selfbench.h. */
#include "selfbench.h"

#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "batcher.h"
#include "encode.h"
#include "reload.h"

struct bench_thread {
	pthread_t th;
	const struct sid_tower *t;
	const float *x;
	int batch;
	double until;
	long long rows;
	int rc;
};

static void *bench_main(void *arg)
{
	struct bench_thread *b = arg;
	struct sid_workspace *ws = sid_workspace_new();
	int32_t *codes = malloc((size_t)b->batch * (size_t)b->t->L * sizeof(int32_t));
	float *dist = malloc((size_t)b->batch * sizeof(float));
	struct sid_encode_out o;

	b->rc = -1;
	if (!ws || !codes || !dist)
		goto done;
	memset(&o, 0, sizeof(o));
	o.codes = codes;
	o.dist = dist;
	/* one batch at least, however late the thread starts: on a loaded
	 * machine a short window (make bench-smoke's 0.05 s) could pass before
	 * any thread ran, and bench-http divided by 0 items/s */
	do {
		if (sid_encode(b->t, b->x, (size_t)b->batch, &o, ws, NULL))
			goto done;
		b->rows += b->batch;
	} while (srv_now() < b->until);
	b->rc = 0;
done:
	sid_workspace_free(ws);
	free(codes);
	free(dist);
	return NULL;
}

int srv_selfbench_run(const char *model_path, const char *tower, int batch, int threads,
		      double secs, struct srv_selfbench_result *out, struct sid_error *err)
{
	struct sid_model *m = NULL;
	const struct sid_tower *t;
	struct bench_thread *bt = NULL;
	float *x = NULL;
	int rc, kind = sid_tower_parse(tower), started = 0;
	unsigned long long s = 88172645463325252ull;
	double t0;

	memset(out, 0, sizeof(*out));
	if (kind < 0) /* main checks the numbers, not the tower */
		return sid_error_set(err, SID_EINVAL,
				     "--bench-encode: TOWER \"%s\" is not item or user", tower);
	if (batch < 1 || threads < 1)
		return sid_error_set(err, SID_EINVAL, "bench: bad batch or threads");
	rc = srv_model_load_checked(model_path, &m, err);
	if (rc)
		return rc;
	t = sid_model_tower(m, (enum sid_tower_kind)kind);
	if (!t) {
		rc = sid_error_set(err, SID_ENOTFOUND, "bench: the model has no %s tower", tower);
		goto fail;
	}
	x = malloc((size_t)batch * (size_t)t->D * sizeof(float));
	bt = calloc((size_t)threads, sizeof(*bt));
	if (!x || !bt) {
		rc = sid_error_set(err, SID_ENOMEM, "bench: out of memory");
		goto fail;
	}
	for (size_t i = 0; i < (size_t)batch * (size_t)t->D; i++) {
		s ^= s << 13, s ^= s >> 7, s ^= s << 17; /* xorshift64 */
		x[i] = (float)((double)(s >> 11) / 9007199254740992.0 * 2 - 1);
	}
	t0 = srv_now();
	for (int i = 0; i < threads; i++) {
		bt[i].t = t;
		bt[i].x = x;
		bt[i].batch = batch;
		bt[i].until = t0 + secs;
		if (pthread_create(&bt[i].th, NULL, bench_main, &bt[i]) != 0)
			break;
		started++;
	}
	for (int i = 0; i < started; i++) {
		pthread_join(bt[i].th, NULL);
		out->rows += bt[i].rows;
		if (bt[i].rc)
			rc = sid_error_set(err, SID_EINVAL, "bench: encode failed");
	}
	out->seconds = srv_now() - t0;
	out->items_per_s = (double)out->rows / out->seconds;
	if (started < threads)
		rc = sid_error_set(err, SID_ENOMEM, "bench: could not start %d threads", threads);
fail:
	free(x);
	free(bt);
	sid_model_unref(m);
	return rc;
}
