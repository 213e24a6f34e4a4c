/*
 * bench_encode.c - encoder throughput against OpenBLAS sgemm on the same
 * shapes, in the same run (`make bench`; figures go to bench/RESULTS.md).
 *
 * Towers (random weights, relu, no input norm):
 *   TIGER  768 -> 512 -> 256 -> 128 -> 32, 3 levels x 256 codewords
 *   DAS   1024 -> 512 -> 256 -> 32,        3 levels x 512 codewords
 * For batch 1, 16, 256, 4096, on 1 thread and on all cores:
 *   encoder: sid_encode, one workspace per thread, each thread encoding its
 *            own batches (the way the CLI and the server use it);
 *   sgemm:   cblas_sgemm over the same matrix shapes (every layer, then one
 *            (B, E) x (E, K) product per level), OpenBLAS threads = cores.
 * GFLOP/s counts the same sid_encode_flops_per_row for both; the ratio is
 * encoder / sgemm.  Batch 1 also reports per-item latency (median, p99).
 * Each figure is the best of a few short timed runs (the machine is shared);
 * 1-thread figures use per-thread CPU time for both sides, all-core figures
 * wall time, and the load average is printed so a busy machine shows.
 *
 *   bench_encode [seconds-per-measurement]   (default 0.25)
 *
 * SEMID_BENCH_SMOKE=1 (make bench-smoke): batches 1, 16 and 256 only, 1 ms
 * per run, 100 latency calls, and a first line saying the figures are
 * meaningless: it checks that the benchmark still runs and reports.
 */
#include <cblas.h>
#include <math.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "encode.h"
#include "mlp.h"
#include "smoke.h"

extern char *openblas_get_corename(void);

/* The clock every timing uses: per-thread CPU time for single-thread runs
 * (robust on a shared machine: time spent descheduled is not counted), wall
 * time for multi-thread runs and for latency. */
static __thread clockid_t bench_clock = CLOCK_MONOTONIC;

static double now(void)
{
	struct timespec ts;
	clock_gettime(bench_clock, &ts);
	return (double)ts.tv_sec + ts.tv_nsec * 1e-9;
}

static double wall(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + ts.tv_nsec * 1e-9;
}

static uint64_t rng = 0x2545F4914F6CDD1Dull;

static float frand(void)
{
	rng ^= rng << 13;
	rng ^= rng >> 7;
	rng ^= rng << 17;
	return (float)((rng >> 11) * (1.0 / 9007199254740992.0)) * 2.0f - 1.0f;
}

static float *rand_buf(size_t n, float scale)
{
	float *p = aligned_alloc(64, (n * sizeof(float) + 63) & ~(size_t)63);
	if (!p) {
		fprintf(stderr, "bench_encode: out of memory\n");
		exit(1);
	}
	for (size_t i = 0; i < n; i++)
		p[i] = frand() * scale;
	return p;
}

static void tower_build(struct sid_tower *t, const int *dims, int n_layers, int L, int K)
{
	memset(t, 0, sizeof(*t));
	t->present = 1;
	t->act = SID_ACT_RELU;
	t->input_norm = SID_NORM_NONE;
	t->D = dims[0];
	t->n_layers = n_layers;
	for (int i = 0; i < n_layers; i++) {
		t->layer[i].in = dims[i];
		t->layer[i].out = dims[i + 1];
		t->layer[i].w = rand_buf((size_t)dims[i] * dims[i + 1], 1.0f / sqrtf(dims[i]));
		t->layer[i].b = rand_buf((size_t)dims[i + 1], 0.05f);
		if (dims[i + 1] > t->H_max)
			t->H_max = dims[i + 1];
	}
	t->E = dims[n_layers];
	t->L = L;
	for (int l = 0; l < L; l++) {
		float *c = rand_buf((size_t)K * t->E, 1.0f / (float)(1 << l));
		float *cn = rand_buf((size_t)K, 0.0f);
		for (int k = 0; k < K; k++) {
			double s = 0;
			for (int e = 0; e < t->E; e++)
				s += (double)c[k * t->E + e] * c[k * t->E + e];
			cn[k] = (float)s;
		}
		t->K[l] = K;
		t->codebook[l] = c;
		t->cnorm[l] = cn;
	}
}

static void tower_free(struct sid_tower *t)
{
	for (int i = 0; i < t->n_layers; i++) {
		free((void *)t->layer[i].w);
		free((void *)t->layer[i].b);
	}
	for (int l = 0; l < t->L; l++) {
		free((void *)t->codebook[l]);
		free((void *)t->cnorm[l]);
	}
}

/* ---- encoder runs ---------------------------------------------------------- */

struct job {
	const struct sid_tower *t;
	size_t B;
	double secs;
	float *x;
	int32_t *codes;
	float *dist;
	struct sid_workspace *ws;
	size_t rows; /* out: rows encoded */
	double elapsed;
	int cpu_clock;
	pthread_barrier_t *bar;
};

static void *enc_thread(void *arg)
{
	struct job *j = arg;
	struct sid_encode_out o = {.codes = j->codes, .dist = j->dist};
	struct sid_error err;
	double t0, t;

	if (j->cpu_clock)
		bench_clock = CLOCK_THREAD_CPUTIME_ID;
	/* Warm the workspace and the caches. */
	if (sid_encode(j->t, j->x, j->B, &o, j->ws, &err)) {
		fprintf(stderr, "bench_encode: %s\n", err.msg);
		exit(1);
	}
	pthread_barrier_wait(j->bar);
	j->rows = 0;
	t0 = now();
	do {
		sid_encode(j->t, j->x, j->B, &o, j->ws, &err);
		j->rows += j->B;
		t = now() - t0;
	} while (t < j->secs);
	j->elapsed = t;
	return NULL;
}

/* Rows per second over @threads threads. */
static double enc_rate(const struct sid_tower *t, size_t B, int threads, double secs)
{
	struct job jobs[64];
	pthread_t tid[64];
	pthread_barrier_t bar;
	double rate = 0;

	pthread_barrier_init(&bar, NULL, (unsigned)threads);
	for (int i = 0; i < threads; i++) {
		struct job *j = &jobs[i];
		j->t = t;
		j->B = B;
		j->secs = secs;
		j->x = rand_buf(B * t->D, 1.0f);
		j->codes = malloc(sizeof(int32_t) * B * t->L);
		j->dist = malloc(sizeof(float) * B);
		j->ws = sid_workspace_new();
		j->bar = &bar;
		j->cpu_clock = threads == 1;
		pthread_create(&tid[i], NULL, enc_thread, j);
	}
	for (int i = 0; i < threads; i++) {
		pthread_join(tid[i], NULL);
		rate += jobs[i].rows / jobs[i].elapsed;
		free(jobs[i].x);
		free(jobs[i].codes);
		free(jobs[i].dist);
		sid_workspace_free(jobs[i].ws);
	}
	pthread_barrier_destroy(&bar);
	return rate;
}

/* ---- sgemm baseline --------------------------------------------------------- */

/* Rows per second of the bare sgemm chain at batch @B (OpenBLAS threads set
 * by the caller). */
static double sgemm_rate(const struct sid_tower *t, size_t B, double secs)
{
	size_t wmax = (size_t)(t->D > t->H_max ? t->D : t->H_max);
	int kmax = 0;
	for (int l = 0; l < t->L; l++)
		kmax = t->K[l] > kmax ? t->K[l] : kmax;
	if ((size_t)kmax > wmax)
		wmax = kmax;
	float *a = rand_buf(B * wmax, 1.0f), *b = rand_buf(B * wmax, 1.0f);
	size_t rows = 0;
	double t0, el;
	int warm = 1;

	t0 = now();
	do {
		for (int i = 0; i < t->n_layers; i++) {
			const struct sid_layer *ly = &t->layer[i];
			cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, (int)B, ly->out,
				    ly->in, 1.0f, i % 2 ? b : a, ly->in, ly->w, ly->in, 0.0f,
				    i % 2 ? a : b, ly->out);
		}
		for (int l = 0; l < t->L; l++)
			cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, (int)B, t->K[l], t->E,
				    1.0f, a, t->E, t->codebook[l], t->E, 0.0f, b, t->K[l]);
		if (warm) {
			warm = 0;
			t0 = now();
			continue;
		}
		rows += B;
		el = now() - t0;
	} while (rows == 0 || el < secs);
	free(a);
	free(b);
	return rows / el;
}

static double best_of(int n, double (*f)(const struct sid_tower *, size_t, int, double),
		      const struct sid_tower *t, size_t B, int threads, double secs)
{
	double best = 0;
	for (int i = 0; i < n; i++) {
		double r = f(t, B, threads, secs);
		best = r > best ? r : best;
	}
	return best;
}

static double sgemm_rate_thr(const struct sid_tower *t, size_t B, int threads, double secs)
{
	double r;
	openblas_set_num_threads(threads);
	bench_clock = threads == 1 ? CLOCK_THREAD_CPUTIME_ID : CLOCK_MONOTONIC;
	r = sgemm_rate(t, B, secs);
	bench_clock = CLOCK_MONOTONIC;
	return r;
}

static int cmp_double(const void *a, const void *b)
{
	double x = *(const double *)a, y = *(const double *)b;
	return x < y ? -1 : x > y;
}

/* Batch-1 latency, microseconds: median and p99 over @n calls, by thread
 * CPU time (@cpu) or wall time. */
static void latency(const struct sid_tower *t, int n, int cpu, double *med, double *p99)
{
	double *lat = malloc(sizeof(double) * n);
	double (*clk)(void) = cpu ? now : wall;
	float *x = rand_buf((size_t)t->D * 64, 1.0f);
	int32_t codes[SID_MAX_LEVELS];
	float dist;
	struct sid_encode_out o = {.codes = codes, .dist = &dist};
	struct sid_workspace *ws = sid_workspace_new();

	for (int i = -20; i < n; i++) {
		double t0 = clk();
		sid_encode(t, x + (size_t)((i + 20) % 64) * t->D, 1, &o, ws, NULL);
		if (i >= 0)
			lat[i] = (clk() - t0) * 1e6;
	}
	qsort(lat, n, sizeof(double), cmp_double);
	*med = lat[n / 2];
	*p99 = lat[(int)(n * 0.99)];
	free(lat);
	free(x);
	sid_workspace_free(ws);
}

int main(int argc, char **argv)
{
	double secs = argc > 1 ? atof(argv[1]) : 0.25;
	int cores = (int)sysconf(_SC_NPROCESSORS_ONLN);
	static const int tiger[] = {768, 512, 256, 128, 32}, das[] = {1024, 512, 256, 32};
	static const size_t batches[] = {1, 16, 256, 4096};
	int smoke = bench_smoke();
	size_t n_batches = smoke ? 3 : sizeof(batches) / sizeof(batches[0]);
	int n_lat = smoke ? 100 : 2000;
	struct {
		const char *name;
		struct sid_tower t;
	} towers[2];

	if (secs <= 0)
		secs = 0.25;
	if (smoke)
		secs = 0.001;
	if (cores < 1)
		cores = 1;
	towers[0].name = "TIGER";
	tower_build(&towers[0].t, tiger, 4, 3, 256);
	towers[1].name = "DAS";
	tower_build(&towers[1].t, das, 3, 3, 512);

	{
		double la[3] = {0, 0, 0};
		FILE *f = fopen("/proc/loadavg", "r");
		if (f) {
			if (fscanf(f, "%lf %lf %lf", &la[0], &la[1], &la[2]) != 3)
				la[0] = -1;
			fclose(f);
		}
		printf("# encoder kernel: %s; OpenBLAS core: %s; cores: %d; %.2f s per run, best "
		       "of 3; load average %.2f\n",
		       sid__gemm_kernel_name(), openblas_get_corename(), cores, secs, la[0]);
		printf("# 1-thread rows timed by thread CPU time, all-core rows by wall time\n");
	}
	printf("%-6s %5s %7s %12s %9s %9s %7s\n", "tower", "batch", "threads", "items/s",
	       "enc GF/s", "sgemm GF/s", "ratio");
	for (int ti = 0; ti < 2; ti++) {
		const struct sid_tower *t = &towers[ti].t;
		double fpr = sid_encode_flops_per_row(t);
		for (size_t bi = 0; bi < n_batches; bi++) {
			for (int thr = 1; thr <= cores; thr = thr == cores ? cores + 1 : cores) {
				size_t B = batches[bi];
				/* Short batches: enough repetitions in the time budget anyway. */
				double enc = best_of(3, enc_rate, t, B, thr, secs);
				double base = best_of(3, sgemm_rate_thr, t, B, thr, secs);
				printf("%-6s %5zu %7d %12.0f %9.1f %9.1f %6.0f%%\n",
				       towers[ti].name, B, thr, enc, enc * fpr / 1e9,
				       base * fpr / 1e9, 100.0 * enc / base);
				fflush(stdout);
			}
		}
		double med, p99, wmed, wp99;
		bench_clock = CLOCK_THREAD_CPUTIME_ID;
		latency(t, n_lat, 1, &med, &p99);
		bench_clock = CLOCK_MONOTONIC;
		latency(t, n_lat, 0, &wmed, &wp99);
		printf("%-6s batch-1 latency (1 thread): CPU time median %.1f us, p99 %.1f us; "
		       "wall median %.1f us, p99 %.1f us\n",
		       towers[ti].name, med, p99, wmed, wp99);
	}
	tower_free(&towers[0].t);
	tower_free(&towers[1].t);
	return 0;
}
