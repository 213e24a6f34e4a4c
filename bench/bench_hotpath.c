/*
 * bench_hotpath.c - the server's per-request work outside the encoder
 * (`make bench-hotpath`; figures go to bench/RESULTS.md): decoding
 * a 64-item request (base64 and JSON rows, 384-d), writing its response
 * (top_k 1; top_k 4 with return_quantized, E = 32), and the pieces they
 * are made of (srv_buf_float, srv_base64_decode), each beside
 * the printf-search float writer the server used before (a copy here);
 * and a request's log line, to a regular file and to a pipe a thread
 * drains (journald's case: there each line first asks poll() whether it
 * can be written without waiting, log.c).
 *
 * It uses only server/api.h and server/buf.h as they were before the
 * hot-path work, so the same file builds against an older tree: run the
 * two binaries one after the other to compare (bench/RESULTS.md
 * says how).  Times are per-thread CPU time, best of 5 runs.
 *
 *   bench_hotpath [seconds-per-measurement]   (default 0.2)
 *
 * SEMID_BENCH_SMOKE=1 (make bench-smoke): 1 ms per figure, and a first line
 * saying the figures are meaningless.
 */
#include <fcntl.h>
#include <math.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "../server/api.h"
#include "../server/log.h"
#include <unistd.h>
#include "../tests/server/float_ref.h"
#include "smoke.h"

#define B 64
#define D 384

static double secs = 0.2;

static double now(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
	return (double)ts.tv_sec + ts.tv_nsec * 1e-9;
}

static uint64_t rng = 0x2545F4914F6CDD1Dull;

static double urand(void)
{
	rng ^= rng << 13;
	rng ^= rng >> 7;
	rng ^= rng << 17;
	return (double)(rng >> 11) * 0x1p-53;
}

static float nrand(void)
{
	return (float)(sqrt(-2 * log(urand() + 1e-300)) * cos(6.283185307179586 * urand()));
}

/* The float writer before this work (printf search). */
static void old_float(struct srv_buf *b, float v)
{
	char best[32];
	srv_buf_append(b, best, (size_t)float_ref_printf(best, v));
}

static void b64_encode(struct srv_buf *out, const uint8_t *p, size_t n)
{
	static const char a[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
	for (size_t i = 0; i < n; i += 3) {
		uint32_t v = (uint32_t)p[i] << 16;
		char q[4];
		if (i + 1 < n)
			v |= (uint32_t)p[i + 1] << 8;
		if (i + 2 < n)
			v |= p[i + 2];
		q[0] = a[v >> 18];
		q[1] = a[v >> 12 & 63];
		q[2] = i + 1 < n ? a[v >> 6 & 63] : '=';
		q[3] = i + 2 < n ? a[v & 63] : '=';
		srv_buf_append(out, q, 4);
	}
}

/* Run @fn(@arg) repeatedly for about @secs; best of 5, seconds per call. */
static double timeit(void (*fn)(void *), void *arg)
{
	double best = 1e30;
	for (int r = 0; r < 5; r++) {
		long n = 0, batch = 1;
		double t0 = now(), t;
		do {
			for (long k = 0; k < batch; k++)
				fn(arg);
			n += batch;
			batch *= 2;
			t = now() - t0;
		} while (t < secs / 5);
		if (t / (double)n < best)
			best = t / (double)n;
	}
	return best;
}

struct floats {
	const float *v;
	size_t n;
	void (*put)(struct srv_buf *, float);
	struct srv_buf b;
};

static void run_floats(void *arg)
{
	struct floats *f = arg;
	f->b.len = 0;
	for (size_t i = 0; i < f->n; i++)
		f->put(&f->b, f->v[i]);
}

struct b64 {
	const char *s;
	size_t n;
	uint8_t *out;
	size_t cap;
};

static void run_b64(void *arg)
{
	struct b64 *a = arg;
	size_t bad;
	if (srv_base64_decode(a->s, a->n, a->out, a->cap, &bad) < 0)
		abort();
}

struct req {
	const char *body;
	size_t len;
	int width; /* the tower's: D; another, or -D for a body of bad values: a 400 */
};

static void run_req(void *arg)
{
	struct req *r = arg;
	struct srv_encode_req q;
	struct srv_api_error e;
	int width = r->width < 0 ? -r->width : r->width;
	/* counted as the server counts it (body_memory_bytes: the default) */
	static struct srv_budget budget = {0, (size_t)1 << 30};
	struct srv_hold hold = {&budget, 0};
	int rc = srv_encode_req_decode(r->body, r->len, SID_TOWER_ITEM, width, 4096, &hold, &q, &e);
	if ((rc != 0) != (r->width != D)) {
		fprintf(stderr, "bench_hotpath: %s\n",
			rc ? e.msg : "accepted a body of another width");
		abort();
	}
	if (rc == 0)
		srv_encode_req_release(&q);
}

struct res {
	struct srv_encode_req *q;
	struct srv_encode_res *r;
	struct srv_buf out;
};

static void run_res(void *arg)
{
	struct res *a = arg;
	a->out.len = 0;
	srv_encode_res_write(&a->out, "m-20260101-abcdef", a->q, a->r);
}

/* One request's log line, as http.c writes it. */
static void run_log(void *arg)
{
	struct srv_logline l;

	(void)arg;
	srv_logline_begin(&l, SRV_LOG_INFO, "request");
	srv_logline_str(&l, "method", "POST");
	srv_logline_str(&l, "route", "/v1/items:encode");
	srv_logline_int(&l, "status", 200);
	srv_logline_int(&l, "items", 64);
	srv_logline_int(&l, "us", 412);
	srv_logline_str(&l, "model_version", "das-20261130T211448Z-42");
	srv_logline_str(&l, "request_id", "14e1cc1b1e5e0aaa");
	srv_logline_end(&l);
}

static void *drain(void *arg)
{
	char buf[1 << 16];

	while (read(*(int *)arg, buf, sizeof(buf)) > 0)
		;
	return NULL;
}

static void print(const char *name, double t, double units, const char *unit, double ref_t)
{
	printf("%-34s %10.3f us  %10.1f %s", name, t * 1e6, units / t, unit);
	if (ref_t > 0)
		printf("   x%.2f vs the printf writer", ref_t / t);
	printf("\n");
}

int main(int argc, char **argv)
{
	static float dist[4096], quantv[4096], x[B * D];
	struct srv_buf body = SRV_BUF_INIT, body17 = SRV_BUF_INIT, b64body = SRV_BUF_INIT,
		       b64nan = SRV_BUF_INIT, one = SRV_BUF_INIT;
	struct floats f;
	double t_old, t_new;

	if (argc > 1)
		secs = atof(argv[1]);
	if (bench_smoke())
		secs = 0.001;

	/* Floats as responses carry them: squared distances and quantized
	 * values of an l2-normalised 32-d latent. */
	for (int i = 0; i < 4096; i++) {
		dist[i] = (float)(0.05 + 0.4 * urand());
		quantv[i] = nrand() * 0.18f;
	}
	for (int which = 0; which < 2; which++) {
		const float *v = which ? quantv : dist;
		memset(&f, 0, sizeof(f));
		f.v = v;
		f.n = 4096;
		f.put = old_float;
		t_old = timeit(run_floats, &f) / 4096;
		f.put = srv_buf_float;
		t_new = timeit(run_floats, &f) / 4096;
		srv_buf_release(&f.b);
		print(which ? "float: quantized (printf writer)"
			    : "float: distance (printf writer)",
		      t_old, 1e-6, "M floats/s", 0);
		print(which ? "float: quantized (srv_buf_float)"
			    : "float: distance (srv_buf_float)",
		      t_new, 1e-6, "M floats/s", t_old);
	}

	/* A 64-item request, base64 and JSON rows. */
	for (int i = 0; i < B * D; i++)
		x[i] = nrand() * 0.05f;
	srv_buf_puts(&b64body, "{\"inputs\": [");
	srv_buf_puts(&b64nan, "{\"inputs\": [");
	srv_buf_puts(&body, "{\"inputs\": [");
	srv_buf_puts(&body17, "{\"inputs\": [");
	for (int i = 0; i < B; i++) {
		srv_buf_printf(&b64body, "%s{\"id\": \"sku-%d\", \"embedding_b64\": \"",
			       i ? ", " : "", i);
		b64_encode(&b64body, (const uint8_t *)(x + (size_t)i * D), (size_t)D * 4);
		srv_buf_puts(&b64body, "\"}");
		{ /* the same row with a NaN first: a broken model upstream */
			float nanrow[D];
			memcpy(nanrow, x + (size_t)i * D, sizeof(nanrow));
			nanrow[0] = NAN;
			srv_buf_printf(&b64nan, "%s{\"id\": \"sku-%d\", \"embedding_b64\": \"",
				       i ? ", " : "", i);
			b64_encode(&b64nan, (const uint8_t *)nanrow, sizeof(nanrow));
			srv_buf_puts(&b64nan, "\"}");
		}
		srv_buf_printf(&body, "%s{\"id\": \"sku-%d\", \"embedding\": [", i ? ", " : "", i);
		srv_buf_printf(&body17, "%s{\"id\": \"sku-%d\", \"embedding\": [", i ? ", " : "",
			       i);
		for (int j = 0; j < D; j++) {
			if (j) {
				srv_buf_puts(&body, ", ");
				srv_buf_puts(&body17, ", ");
			}
			srv_buf_printf(&body, "%.9g", (double)x[(size_t)i * D + (size_t)j]);
			/* what json.dumps writes for a float32 turned into a Python float */
			srv_buf_printf(&body17, "%.17g", (double)x[(size_t)i * D + (size_t)j]);
		}
		srv_buf_puts(&body, "]}");
		srv_buf_puts(&body17, "]}");
	}
	srv_buf_puts(&b64body, "]}");
	srv_buf_puts(&b64nan, "]}");
	srv_buf_puts(&body, "]}");
	srv_buf_puts(&body17, "]}");
	if (body.oom || b64body.oom || body17.oom || b64nan.oom)
		return 1;
	{
		struct b64 a;
		static uint8_t out[D * 4 + 16];
		b64_encode(&one, (const uint8_t *)x, (size_t)D * 4);
		a.s = one.p;
		a.n = one.len;
		a.out = out;
		a.cap = sizeof(out);
		t_new = timeit(run_b64, &a);
		print("base64: one 384-d row (2048 chars)", t_new, (double)one.len * 1e-9,
		      "G chars/s", 0);
	}
	{
		/* the 400s: the same bodies sent to a 256-d tower, and base64 rows
		 * with a NaN */
		const struct {
			const char *name;
			struct srv_buf *body;
			int width;
		} reqs[] = {
		    {"request: 64 x 384 base64", &b64body, D},
		    {"request: 64 x 384 JSON numbers", &body, D},
		    {"request: 64 x 384 JSON, 17 digits", &body17, D},
		    {"400: 64 x 384 base64, 256-d tower", &b64body, 256},
		    {"400: 64 x 384 JSON, 256-d tower", &body17, 256},
		    {"400: 64 x 384 base64, NaN in each", &b64nan, -D},
		};
		for (size_t k = 0; k < sizeof(reqs) / sizeof(reqs[0]); k++) {
			struct req r = {reqs[k].body->p, reqs[k].body->len, reqs[k].width};
			t_new = timeit(run_req, &r);
			print(reqs[k].name, t_new, B * 1e-6, "M items/s", 0);
		}
	}
	{
		static int32_t codes[B * 3], alt[B * 3 * 3], cnt[B];
		static float d1[B], ad[B * 3], qv[B * 32];
		struct srv_encode_req q;
		struct srv_encode_res r = {3, 32, codes, d1, qv, 3, alt, ad, cnt};
		struct srv_api_error e;
		struct res a;
		struct req rq = {b64body.p, b64body.len, D};

		if (srv_encode_req_decode(rq.body, rq.len, SID_TOWER_ITEM, D, 4096, NULL, &q, &e) !=
		    0)
			return 1;
		for (int i = 0; i < B; i++) {
			d1[i] = dist[i];
			cnt[i] = 3;
			for (int l = 0; l < 3; l++)
				codes[i * 3 + l] = (int32_t)(urand() * 256);
		}
		for (int i = 0; i < B * 9; i++)
			alt[i] = (int32_t)(urand() * 256);
		for (int i = 0; i < B * 3; i++)
			ad[i] = dist[B + i];
		memcpy(qv, quantv, sizeof(qv));
		memset(&a, 0, sizeof(a));
		a.q = &q;
		a.r = &r;
		q.top_k = 1;
		q.quantized = 0;
		t_new = timeit(run_res, &a);
		print("response: 64 results, top_k 1", t_new, B * 1e-6, "M items/s", 0);
		q.top_k = 4;
		q.quantized = 1;
		t_new = timeit(run_res, &a);
		print("response: 64, top_k 4 + quantized", t_new, B * 1e-6, "M items/s", 0);
		srv_buf_release(&a.out);
		srv_encode_req_release(&q);
	}
	{
		/* the log line, to a file and to a pipe drained by a thread (the
		 * writer's CPU time: the reader's is not the server's) */
		char path[] = "/tmp/bench_hotpath.log.XXXXXX";
		int file = mkstemp(path), fds[2];
		pthread_t th;
		double t_file;

		if (file < 0 || pipe(fds) != 0 || pthread_create(&th, NULL, drain, &fds[0]))
			return 1;
		unlink(path);
		srv_log_set_fd(file);
		t_file = timeit(run_log, NULL);
		srv_log_set_fd(fds[1]);
		t_new = timeit(run_log, NULL);
		srv_log_set_fd(2);
		close(fds[1]);
		pthread_join(th, NULL);
		close(fds[0]);
		close(file);
		print("log line: to a file", t_file, 1e-6, "M lines/s", 0);
		printf("%-34s %10.3f us  %10.1f M lines/s   x%.2f the file's CPU time\n",
		       "log line: to a pipe (poll+write)", t_new * 1e6, 1e-6 / t_new,
		       t_new / t_file);
	}
	srv_buf_release(&body);
	srv_buf_release(&body17);
	srv_buf_release(&b64body);
	srv_buf_release(&b64nan);
	srv_buf_release(&one);
	return 0;
}
