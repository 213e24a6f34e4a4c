/*
 * kmeans.c - k-means++ and Lloyd; see kmeans.h.
 */
#include "kmeans.h"

#include <cblas.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "stop.h"

static float sqnorm(const float *a, int E)
{
	float s = 0;
	for (int j = 0; j < E; j++)
		s += a[j] * a[j];
	return s;
}

static float sqdist(const float *a, const float *b, int E)
{
	float s = 0;
	for (int j = 0; j < E; j++) {
		float d = a[j] - b[j];
		s += d * d;
	}
	return s;
}

void km_assign(const float *x, int n, int E, const float *cent, int K, int32_t *assign, float *d2,
	       float *work)
{
	/* work = x . C^T  (n, K) */
	cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, n, K, E, 1.0f, x, E, cent, E, 0.0f,
		    work, K);
	float *cn = work + (size_t)n * K;
	for (int k = 0; k < K; k++)
		cn[k] = sqnorm(cent + (size_t)k * E, E);
	for (int i = 0; i < n; i++) {
		const float *row = work + (size_t)i * K;
		int best = 0;
		float bd = INFINITY;
		for (int k = 0; k < K; k++) {
			float d = cn[k] - 2.0f * row[k];
			if (d < bd) {
				bd = d;
				best = k;
			}
		}
		assign[i] = best;
		if (d2) {
			float v = bd + sqnorm(x + (size_t)i * E, E);
			d2[i] = v > 0 ? v : 0;
		}
	}
}

/* k-means++: first centre uniform, then each next one with probability
 * proportional to the squared distance to the nearest centre so far.
 * Returns 0, or the signal that asked for a stop (stop.h) before the last
 * centre: each centre is a pass over every row, and at a large
 * kmeans_sample and codebook_size the seeding alone runs for minutes. */
static int seed_pp(const float *x, int n, int E, int K, struct rng *r, float *cent, float *mind)
{
	float scale = 0;
	int first = (int)rng_below(r, (uint64_t)n);
	memcpy(cent, x + (size_t)first * E, sizeof(float) * E);
	for (int i = 0; i < n; i++) {
		mind[i] = sqdist(x + (size_t)i * E, cent, E);
		if (mind[i] > scale)
			scale = mind[i];
	}
	for (int k = 1; k < K; k++) {
		double tot = 0;
		if (tr_stop_signal())
			return tr_stop_signal();
		for (int i = 0; i < n; i++)
			tot += mind[i];
		float *c = cent + (size_t)k * E;
		if (tot <= 0) {
			/* fewer distinct points than K: a jittered copy of a random row */
			int pick = (int)rng_below(r, (uint64_t)n);
			float s = 1e-3f * (scale > 0 ? sqrtf(scale) : 1.0f);
			for (int j = 0; j < E; j++)
				c[j] = x[(size_t)pick * E + j] + s * rng_normal(r);
		} else {
			double u = rng_double(r) * tot, acc = 0;
			int pick = n - 1;
			for (int i = 0; i < n; i++) {
				acc += mind[i];
				if (acc > u && mind[i] > 0) {
					pick = i;
					break;
				}
			}
			while (pick > 0 && mind[pick] <= 0) /* u rounded past the end */
				pick--;
			memcpy(c, x + (size_t)pick * E, sizeof(float) * E);
		}
		for (int i = 0; i < n; i++) {
			float d = sqdist(x + (size_t)i * E, c, E);
			if (d < mind[i])
				mind[i] = d;
		}
	}
	return 0;
}

int km_fit(const float *x, int n, int E, int K, int iters, struct rng *r, float *cent,
	   int32_t *assign, double *inertia, struct sid_error *err)
{
	int rc = 0;
	float *work = NULL, *d2 = NULL;
	int32_t *as = NULL, *cnt = NULL, *old = NULL;
	double *sum = NULL;

	if (n < 1 || K < 1 || E < 1)
		return sid_error_set(err, SID_EINVAL, "k-means: need n, K, E >= 1 (got %d, %d, %d)",
				     n, K, E);
	work = malloc(sizeof(float) * ((size_t)n + 1) * K);
	old = malloc(sizeof(int32_t) * (size_t)n);
	d2 = malloc(sizeof(float) * (size_t)n);
	as = malloc(sizeof(int32_t) * (size_t)n);
	cnt = malloc(sizeof(int32_t) * (size_t)K);
	sum = malloc(sizeof(double) * (size_t)K * E);
	if (!work || !old || !d2 || !as || !cnt || !sum) {
		rc = sid_error_set(err, SID_ENOMEM, "k-means: out of memory (n %d, K %d)", n, K);
		goto fail;
	}
	if (seed_pp(x, n, E, K, r, cent, d2)) {
		rc = tr_stop_error(err, "k-means");
		goto fail;
	}
	km_assign(x, n, E, cent, K, as, d2, work);
	for (int it = 0; it < iters; it++) {
		if (tr_stop_signal()) {
			rc = tr_stop_error(err, "k-means");
			goto fail;
		}
		memset(cnt, 0, sizeof(int32_t) * (size_t)K);
		memset(sum, 0, sizeof(double) * (size_t)K * E);
		for (int i = 0; i < n; i++) {
			cnt[as[i]]++;
			double *s = sum + (size_t)as[i] * E;
			for (int j = 0; j < E; j++)
				s[j] += x[(size_t)i * E + j];
		}
		for (int k = 0; k < K; k++) {
			float *c = cent + (size_t)k * E;
			if (cnt[k] > 0) {
				for (int j = 0; j < E; j++)
					c[j] = (float)(sum[(size_t)k * E + j] / cnt[k]);
				continue;
			}
			/* empty: take the point farthest from its centroid */
			int far = 0;
			for (int i = 1; i < n; i++)
				if (d2[i] > d2[far])
					far = i;
			memcpy(c, x + (size_t)far * E, sizeof(float) * E);
			d2[far] = 0;
		}
		int changed = 0;
		memcpy(old, as, sizeof(int32_t) * (size_t)n);
		km_assign(x, n, E, cent, K, as, d2, work);
		for (int i = 0; i < n; i++)
			changed |= old[i] != as[i];
		if (!changed)
			break;
	}
	if (assign)
		memcpy(assign, as, sizeof(int32_t) * (size_t)n);
	if (inertia) {
		double s = 0;
		for (int i = 0; i < n; i++)
			s += d2[i];
		*inertia = s;
	}
fail:
	free(sum);
	free(cnt);
	free(as);
	free(d2);
	free(old);
	free(work);
	return rc;
}
