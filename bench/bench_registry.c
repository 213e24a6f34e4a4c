/*
 * bench_registry.c - ID registry benchmarks (figures go to
 * bench/RESULTS.md; run by `make bench-registry`, bench/registry.mk).
 *
 *   bench_registry encode STORE SECS
 *       baseline: 1 and 2 workers encoding 64-row batches with a TIGER-sized
 *       item tower (768 -> 512 -> 256 -> 128 -> 32, 3 x 256), items/s; then
 *       the same workers each assigning every batch they encode (new ids,
 *       embeddings kept) through one shared handle: the work of POST
 *       /v1/items:assign minus HTTP.
 *   bench_registry assign STORE SECS
 *       store level: new ids with random codes (L = 3, K = 256), batches of 1
 *       and 64, without and with a 768-d embedding kept; known ids (batch 64);
 *       2 threads with their own handles; 1 and 8 threads sharing one handle
 *       (group commit) with batches of 1 and 64.
 *   bench_registry fill STORE N
 *       N new ids (batches of 10000, no embeddings), then the store's size and
 *       the latency of 20000 random lookups by id, by sid and by prefix page.
 *   bench_registry lookup STORE
 *       the lookups alone on an existing store (and the time of one stats pass);
 *       fill and lookup end with the time of a check (sid_registry_check: the
 *       walk and the file check apart) against a stats pass.
 *
 * STORE is a SQLite path or a PostgreSQL connection string.  Ids are
 * "b<run>-<n>" with a per-run random tag, so runs never see each other's ids.
 * BENCH_REGISTRY_TIMEOUT_MS=N opens the store as semid-server does with
 * registry_timeout_ms N (sid_registry_open_timeout; PostgreSQL then waits in
 * poll on a non-blocking connection); unset, as the CLI does.
 * SEMID_BENCH_SMOKE=1 (make bench-smoke): at most 0.02 s per case, at most
 * 3000 items filled and 300 lookups of each kind, and a first line saying
 * the figures are meaningless.
 */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "encode.h"
#include "model.h"
#include "model_builder.h"
#include "registry.h"
#include "smoke.h"

void openblas_set_num_threads(int n);

#define D_EMB 768

static double now(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec + ts.tv_nsec * 1e-9;
}

static unsigned run_tag;

static void die(const char *what, const struct sid_error *err)
{
	fprintf(stderr, "bench_registry: %s: %s\n", what, err ? err->msg : "");
	exit(1);
}

static struct sid_registry *open_store(const char *target)
{
	struct sid_registry *r;
	struct sid_error err;
	const char *t = getenv("BENCH_REGISTRY_TIMEOUT_MS");
	if (sid_registry_open_timeout(target, 0, t ? atoi(t) : 0, &r, &err))
		die("open", &err);
	return r;
}

/* A batch of @B new ids starting at *@next with random codes. */
struct batch {
	size_t B;
	char (*ids)[40];
	int32_t *codes; /* (B, 3) */
	float *emb;	/* (B, D_EMB) */
	struct sid_reg_item *in;
	struct sid_reg_entry *out;
};

static void batch_init(struct batch *b, size_t B)
{
	b->B = B;
	b->ids = malloc(B * sizeof(*b->ids));
	b->codes = malloc(B * 3 * sizeof(int32_t));
	b->emb = malloc(B * D_EMB * sizeof(float));
	b->in = malloc(B * sizeof(*b->in));
	b->out = malloc(B * sizeof(*b->out));
	for (size_t i = 0; i < B * D_EMB; i++)
		b->emb[i] = (float)((i * 2654435761u) % 1000) / 1000.0f;
}

static void batch_fill(struct batch *b, uint64_t *next, uint64_t *rng, int with_emb)
{
	for (size_t i = 0; i < b->B; i++) {
		uint64_t r = mb_rand_u64(rng);
		snprintf(b->ids[i], sizeof(b->ids[i]), "b%x-%llu", run_tag,
			 (unsigned long long)(*next)++);
		b->codes[3 * i] = r & 255;
		b->codes[3 * i + 1] = (r >> 8) & 255;
		b->codes[3 * i + 2] = (r >> 16) & 255;
		b->in[i] = (struct sid_reg_item){b->ids[i], b->codes + 3 * i,
						 with_emb ? b->emb + (size_t)i * D_EMB : NULL};
	}
}

static void batch_free(struct batch *b)
{
	free(b->ids);
	free(b->codes);
	free(b->emb);
	free(b->in);
	free(b->out);
}

/* Assign new ids in batches of @B for @secs; returns items/s. */
static double assign_rate(struct sid_registry *r, size_t B, int with_emb, double secs,
			  uint64_t *next, uint64_t seed, double *call_ms)
{
	struct batch b;
	struct sid_error err;
	uint64_t rng = seed;
	size_t items = 0, calls = 0;
	double t0 = now(), t;

	batch_init(&b, B);
	do {
		batch_fill(&b, next, &rng, with_emb);
		if (sid_registry_assign(r, SID_TOWER_ITEM, b.in, B, 3, D_EMB, "bench", 0, b.out,
					&err))
			die("assign", &err);
		items += B;
		calls++;
		t = now() - t0;
	} while (t < secs);
	batch_free(&b);
	*call_ms = 1e3 * t / calls;
	return items / t;
}

struct thr {
	const char *target;
	struct sid_registry *shared; /* or NULL: own handle */
	size_t B;
	double secs, rate;
	uint64_t next;
	int k;
};

static void *thr_run(void *p)
{
	struct thr *t = p;
	struct sid_registry *r = t->shared ? t->shared : open_store(t->target);
	double ms;
	t->next = (uint64_t)(t->k + 1) << 40;
	t->rate = assign_rate(r, t->B, 0, t->secs, &t->next, 1000 + t->k, &ms);
	if (!t->shared)
		sid_registry_close(r);
	return NULL;
}

/* @T threads assigning batches of @B; returns the total items/s. */
static double threads_rate(const char *target, struct sid_registry *shared, int T, size_t B,
			   double secs)
{
	struct thr th[16];
	pthread_t id[16];
	double total = 0;
	static int round;
	round++;
	for (int k = 0; k < T; k++) {
		th[k] = (struct thr){target, shared, B, secs, 0, 0, k + 16 * round};
		pthread_create(&id[k], NULL, thr_run, &th[k]);
	}
	for (int k = 0; k < T; k++) {
		pthread_join(id[k], NULL);
		total += th[k].rate;
	}
	return total;
}

static int cmd_assign(const char *target, double secs)
{
	struct sid_registry *r = open_store(target);
	uint64_t next = 0;
	double ms, rate;
	struct batch b;
	struct sid_error err;

	printf("# store: %s (%s)\n", sid_registry_label(r), sid_registry_backend(r));
	printf("%-44s %12s %10s\n", "case", "assigns/s", "ms/call");
	for (int e = 0; e < 2; e++)
		for (size_t B = 1; B <= 64; B *= 64) {
			char name[64];
			rate = assign_rate(r, B, e, secs, &next, 7 + B + e, &ms);
			snprintf(name, sizeof(name), "new ids, batch %zu%s", B,
				 e ? ", 768-d embedding kept" : "");
			printf("%-44s %12.0f %10.3f\n", name, rate, ms);
			fflush(stdout);
		}
	/* known ids: the first 64 ids of this run, again and again */
	batch_init(&b, 64);
	{
		uint64_t first = 0, rng = 7 + 1, calls = 0;
		double t0 = now(), t;
		batch_fill(&b, &first, &rng, 0);
		do {
			if (sid_registry_assign(r, SID_TOWER_ITEM, b.in, 64, 3, 0, "bench", 0,
						b.out, &err))
				die("assign", &err);
			calls++;
			t = now() - t0;
		} while (t < secs);
		printf("%-44s %12.0f %10.3f\n", "known ids, batch 64", 64 * calls / t,
		       1e3 * t / calls);
	}
	batch_free(&b);
	sid_registry_close(r);
	for (int T = 2; T <= 2; T++)
		printf("%-44s %12.0f\n", "new ids, batch 64, 2 threads, own handles",
		       threads_rate(target, NULL, T, 64, secs));
	r = open_store(target);
	for (int T = 1; T <= 8; T *= 8) {
		char name[64];
		snprintf(name, sizeof(name), "new ids, batch 1, %d thread%s, one handle", T,
			 T > 1 ? "s" : "");
		printf("%-44s %12.0f\n", name, threads_rate(target, r, T, 1, secs));
		snprintf(name, sizeof(name), "new ids, batch 64, %d thread%s, one handle", T,
			 T > 1 ? "s" : "");
		printf("%-44s %12.0f\n", name, threads_rate(target, r, T, 64, secs));
	}
	sid_registry_close(r);
	return 0;
}

static struct sid_model *tiger_model(void)
{
	struct mb_spec s;
	struct sid_model *m;
	struct sid_error err;
	static const int hidden[] = {512, 256, 128};
	static const int K[] = {256, 256, 256};
	uint8_t *buf;
	size_t len;

	mb_spec_init(&s);
	mb_tower(&s, SID_TOWER_ITEM, D_EMB, hidden, 3, 32, 3, K, "relu", "none", 1);
	if (mb_build_buffer(&s, &buf, &len, &err) || sid_model_load_buffer(buf, len, &m, &err))
		die("model", &err);
	free(buf);
	return m;
}

struct enc_worker {
	const struct sid_tower *tw;
	struct sid_registry *r; /* NULL: encode only */
	const char *version;
	double secs, rate;
	int k, keep_emb;
};

/* Encode 64-row batches (and assign them, when r is set) for secs. */
static void *enc_run(void *p)
{
	struct enc_worker *w = p;
	struct sid_workspace *ws = sid_workspace_new();
	struct sid_error err;
	struct batch b;
	uint64_t rng = 3 + w->k, next = 0;
	size_t items = 0;
	double t0, t;

	batch_init(&b, 64);
	for (size_t i = 0; i < 64 * D_EMB; i++)
		b.emb[i] = mb_rand_sym(&rng);
	t0 = now();
	do {
		struct sid_encode_out o = {.codes = b.codes};
		if (sid_encode(w->tw, b.emb, 64, &o, ws, &err))
			die("encode", &err);
		if (w->r) {
			for (size_t i = 0; i < 64; i++) {
				snprintf(b.ids[i], sizeof(b.ids[i]), "e%x-%d-%llu", run_tag, w->k,
					 (unsigned long long)next++);
				b.in[i] =
				    (struct sid_reg_item){b.ids[i], b.codes + 3 * i,
							  w->keep_emb ? b.emb + i * D_EMB : NULL};
			}
			if (sid_registry_assign(w->r, SID_TOWER_ITEM, b.in, 64, 3, D_EMB,
						w->version, 0, b.out, &err))
				die("assign", &err);
		}
		items += 64;
		t = now() - t0;
	} while (t < w->secs);
	w->rate = items / t;
	batch_free(&b);
	sid_workspace_free(ws);
	return NULL;
}

static double enc_rate(const struct sid_tower *tw, struct sid_registry *r, const char *version,
		       int W, int keep_emb, double secs)
{
	struct enc_worker w[8];
	pthread_t id[8];
	double total = 0;
	static int round;
	round++;
	for (int k = 0; k < W; k++) {
		w[k] = (struct enc_worker){tw, r, version, secs, 0, k + 8 * round, keep_emb};
		pthread_create(&id[k], NULL, enc_run, &w[k]);
	}
	for (int k = 0; k < W; k++) {
		pthread_join(id[k], NULL);
		total += w[k].rate;
	}
	return total;
}

static int cmd_encode(const char *target, double secs)
{
	struct sid_model *m = tiger_model();
	const struct sid_tower *tw = sid_model_tower(m, SID_TOWER_ITEM);
	struct sid_registry *r = open_store(target);

	openblas_set_num_threads(1);
	printf("# TIGER-sized item tower 768-512-256-128-32, 3 x 256; OpenBLAS 1 thread per "
	       "worker, batch 64;\n# assign: new ids, one %s handle shared by the workers\n",
	       sid_registry_backend(r));
	enc_rate(tw, NULL, m->version, 1, 1, secs / 2); /* warm up */
	for (int W = 1; W <= 2; W++) {
		double enc = enc_rate(tw, NULL, m->version, W, 1, secs);
		double both = enc_rate(tw, r, m->version, W, 1, secs);
		double lean = enc_rate(tw, r, m->version, W, 0, secs);
		printf("%d worker%s: encode %8.0f items/s; encode + assign %8.0f items/s (%.0f%%), "
		       "without keeping embeddings %8.0f (%.0f%%)\n",
		       W, W > 1 ? "s" : " ", enc, both, 100 * both / enc, lean, 100 * lean / enc);
		fflush(stdout);
	}
	sid_registry_close(r);
	sid_model_unref(m);
	return 0;
}

static int cmp_d(const void *a, const void *b)
{
	double x = *(const double *)a, y = *(const double *)b;
	return x < y ? -1 : x > y;
}

static void lat_report(const char *name, double *v, size_t n)
{
	double sum = 0;
	for (size_t i = 0; i < n; i++)
		sum += v[i];
	qsort(v, n, sizeof(*v), cmp_d);
	printf("%-30s mean %8.1f us  p50 %8.1f us  p99 %8.1f us\n", name, 1e6 * sum / n,
	       1e6 * v[n / 2], 1e6 * v[n * 99 / 100]);
}

static long long file_size(const char *path)
{
	struct stat st;
	return stat(path, &st) ? -1 : (long long)st.st_size;
}

/* Time Q random lookups of each kind; the entries are sampled first through
 * one-entry pages under random 2-level prefixes (the fill's codes are
 * uniform over 256 x 256 x 256).  A store of no @items has nothing to look
 * up (the sampling would never end). */
static void lookups(struct sid_registry *r, uint64_t items)
{
	enum { Q_MAX = 20000 };
	static double lat[Q_MAX];
	static char sids[Q_MAX][SID_REG_SID_MAX], prefixes[Q_MAX][32],
	    qids[Q_MAX][SID_REG_ID_MAX + 1];
	const size_t Q = bench_smoke() ? 300 : Q_MAX;
	struct sid_reg_entry e, *page;
	struct sid_error err;
	char nextc[SID_REG_SID_MAX];
	uint64_t rng = 77;
	size_t n, q = 0;

	if (!items) {
		printf("no items: no lookups\n");
		return;
	}
	page = malloc(100 * sizeof(*page));

	while (q < Q) {
		uint64_t x = mb_rand_u64(&rng);
		snprintf(prefixes[q], sizeof(prefixes[q]), "%d-%d", (int)(x & 255),
			 (int)((x >> 8) & 255));
		if (sid_registry_list(r, SID_TOWER_ITEM, prefixes[q], "", 1, page, &n, nextc, &err))
			die("list", &err);
		if (!n)
			continue;
		snprintf(qids[q], sizeof(qids[q]), "%s", page[0].id);
		sid_reg_sid_format(page[0].codes, page[0].L, page[0].suffix, sids[q],
				   sizeof(sids[q]));
		q++;
	}
	for (size_t i = 0; i < Q; i++) { /* a random permutation of the samples */
		size_t k = i + mb_rand_u64(&rng) % (Q - i);
		char t[SID_REG_ID_MAX + 1];
		memcpy(t, qids[i], sizeof(t));
		memcpy(qids[i], qids[k], sizeof(t));
		memcpy(qids[k], t, sizeof(t));
	}
	for (size_t i = 0; i < Q; i++) {
		double t = now();
		if (sid_registry_get(r, SID_TOWER_ITEM, qids[i], &e, &err))
			die("get", &err);
		lat[i] = now() - t;
	}
	lat_report("get by id", lat, Q);
	for (size_t i = 0; i < Q; i++) {
		double t = now();
		if (sid_registry_get_sid(r, SID_TOWER_ITEM, sids[(i * 7919) % Q], &e, &err))
			die("get_sid", &err);
		lat[i] = now() - t;
	}
	lat_report("get by sid", lat, Q);
	for (size_t i = 0; i < Q; i++) {
		double t = now();
		if (sid_registry_list(r, SID_TOWER_ITEM, prefixes[(i * 7919) % Q], "", 100, page,
				      &n, nextc, &err))
			die("list", &err);
		lat[i] = now() - t;
	}
	lat_report("list 2-level prefix (<=100)", lat, Q);
	free(page);
}

/* When sid_registry_check's walk ended (its file check's first word). */
static void walk_ended(void *ctx, uint64_t done, uint64_t total)
{
	double *t = ctx;
	if (total && !*t)
		*t = now();
}

/* semid registry check's time, the walk and the file check apart, against
 * one stats pass (an ordered walk of the codes) in the same run. */
static void check_report(const char *target)
{
	struct sid_registry *r = open_store(target);
	struct sid_reg_check res;
	struct sid_reg_stats st;
	struct sid_error err;
	double t0 = now(), ts, tw = 0, tc;

	if (sid_registry_stats(r, SID_TOWER_ITEM, &st, &err))
		die("stats", &err);
	ts = now() - t0;
	sid_registry_set_progress(r, walk_ended, &tw);
	t0 = now();
	if (sid_registry_check(r, -1, NULL, NULL, &res, &err))
		die("check", &err);
	tc = now() - t0;
	printf("check of %llu entries: %.1f s (walk %.1f s, file check %.1f s), %.1fx one stats "
	       "pass (%.1f s); %llu problems\n",
	       (unsigned long long)res.entries, tc, tw ? tw - t0 : tc, tw ? now() - tw : 0.0,
	       tc / ts, ts,
	       (unsigned long long)(res.found[0] + res.found[1] + res.found[2] + res.found[3] +
				    res.found[4]));
	sid_registry_close(r);
}

static int cmd_lookup(const char *target)
{
	struct sid_registry *r = open_store(target);
	struct sid_reg_stats st;
	struct sid_error err;
	double t0 = now();
	if (sid_registry_stats(r, SID_TOWER_ITEM, &st, &err))
		die("stats", &err);
	printf("# store: %s, %llu items; stats (one ordered pass) took %.1f s\n",
	       sid_registry_label(r), (unsigned long long)st.items, now() - t0);
	lookups(r, st.items);
	sid_registry_close(r);
	check_report(target);
	return 0;
}

static int cmd_fill(const char *target, uint64_t N)
{
	struct sid_registry *r = open_store(target);
	struct sid_error err;
	struct batch b;
	uint64_t rng = 11, next = 0, done = 0;
	double t0 = now(), tl = t0;

	printf("# store: %s (%s), filling %llu items in batches of 10000\n", sid_registry_label(r),
	       sid_registry_backend(r), (unsigned long long)N);
	batch_init(&b, 10000);
	while (done < N) {
		size_t B = N - done < 10000 ? N - done : 10000;
		b.B = B;
		batch_fill(&b, &next, &rng, 0);
		if (sid_registry_assign(r, SID_TOWER_ITEM, b.in, B, 3, 0, "bench", 0, b.out, &err))
			die("assign", &err);
		done += B;
		if (now() - tl > 30 || done == N) {
			tl = now();
			printf("  %llu items, %.0f s, %.0f assigns/s overall\n",
			       (unsigned long long)done, tl - t0, done / (tl - t0));
			fflush(stdout);
		}
	}
	batch_free(&b);
	lookups(r, N);
	sid_registry_close(r); /* SQLite: checkpoints the WAL into the file */
	if (strncmp(target, "postgres", 8) && !strstr(target, "host=")) {
		long long sz = file_size(target);
		printf("file size after checkpoint: %lld bytes (%.1f MiB), %.1f bytes/item\n", sz,
		       sz / 1048576.0, N ? (double)sz / N : 0.0);
	}
	check_report(target);
	return 0;
}

int main(int argc, char **argv)
{
	int smoke = bench_smoke();
	double secs = argc == 4 ? atof(argv[3]) : 0;
	uint64_t n = argc == 4 ? strtoull(argv[3], NULL, 10) : 0;

	run_tag = (unsigned)time(NULL) ^ ((unsigned)getpid() << 16);
	if (smoke && secs > 0.02)
		secs = 0.02;
	if (smoke && n > 3000)
		n = 3000;
	if (argc == 4 && !strcmp(argv[1], "encode"))
		return cmd_encode(argv[2], secs);
	if (argc == 4 && !strcmp(argv[1], "assign"))
		return cmd_assign(argv[2], secs);
	if (argc == 3 && !strcmp(argv[1], "lookup"))
		return cmd_lookup(argv[2]);
	if (argc == 4 && !strcmp(argv[1], "fill"))
		return cmd_fill(argv[2], n);
	fprintf(stderr,
		"usage: bench_registry encode STORE SECS | assign STORE SECS | fill STORE N | "
		"lookup STORE\n");
	return 2;
}
