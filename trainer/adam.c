/*
 * adam.c - AdamW, clipping and schedule; see adam.h.  The loops are plain
 * and branch-free so the compiler vectorises them.
 */
#include "adam.h"

#include <math.h>

void adamw_update(float *p, const float *g, float *m, float *v, size_t n,
		  const struct adamw_hparams *h, long t)
{
	const float b1 = h->b1, b2 = h->b2, eps = h->eps;
	const float bc1 = (float)(1.0 - pow(b1, (double)t));
	const float bc2 = (float)(1.0 - pow(b2, (double)t));
	const float decay = 1.0f - h->lr * h->weight_decay;
	const float step = h->lr / bc1;
	const float rbc2 = 1.0f / bc2;
	for (size_t i = 0; i < n; i++) {
		float gi = g[i];
		float mi = b1 * m[i] + (1.0f - b1) * gi;
		float vi = b2 * v[i] + (1.0f - b2) * gi * gi;
		m[i] = mi;
		v[i] = vi;
		p[i] = p[i] * decay - step * mi / (sqrtf(vi * rbc2) + eps);
	}
}

double adam_sumsq(const float *g, size_t n)
{
	/* 8 partial sums: vectorisable and still a fixed order */
	double s[8] = {0};
	size_t i = 0;
	for (; i + 8 <= n; i += 8)
		for (int k = 0; k < 8; k++)
			s[k] += (double)g[i + k] * g[i + k];
	for (; i < n; i++)
		s[0] += (double)g[i] * g[i];
	return ((s[0] + s[1]) + (s[2] + s[3])) + ((s[4] + s[5]) + (s[6] + s[7]));
}

void adam_scale(float *g, size_t n, float s)
{
	for (size_t i = 0; i < n; i++)
		g[i] *= s;
}

float adam_clip_factor(double norm, float max_norm)
{
	if (max_norm <= 0 || !(norm > max_norm))
		return 1.0f;
	return (float)(max_norm / (norm + 1e-6));
}

float adam_lr_at(long t, long total, long warmup, float lr, float min_ratio)
{
	if (t < warmup)
		return lr * (float)(t + 1) / (float)warmup;
	long span = total - 1 - warmup;
	if (span <= 0 || t >= total - 1)
		return t >= total - 1 && span > 0 ? lr * min_ratio : lr;
	double frac = (double)(t - warmup) / (double)span;
	double c = 0.5 * (1.0 + cos(3.141592653589793 * frac));
	return (float)(lr * (min_ratio + (1.0 - min_ratio) * c));
}
