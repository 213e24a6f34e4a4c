/*
 * nn.c - layers and losses for das.c; see nn.h for the contracts and
 * proto/das.md for the formulas.
 */
#include "nn.h"

#include <cblas.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "err.h"

#define NORM_EPS 1e-8f

/* Hot loops are compiled for AVX-512 / AVX2 / baseline and picked once at
 * load time (GCC function multi-versioning), so the default -O2 build still
 * runs vector code.  One machine always takes the same clone, so results
 * stay reproducible run to run. */
#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__) &&                             \
    !defined(__SANITIZE_ADDRESS__)
#define HOT                                                                                        \
	__attribute__((optimize("O3", "no-math-errno"),                                            \
		       target_clones("arch=x86-64-v4", "arch=x86-64-v3", "default")))
#else
#define HOT
#endif

/* ---------------- linear ---------------- */

void nn_linear_forward(float *y, const float *x, const float *w, const float *b, int B, int in,
		       int out)
{
	if (b) {
		for (int i = 0; i < B; i++)
			memcpy(y + (size_t)i * out, b, sizeof(float) * out);
	}
	cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, B, out, in, 1.0f, x, in, w, in,
		    b ? 1.0f : 0.0f, y, out);
}

void nn_linear_backward(float *dx, float *dw, float *db, const float *dy, const float *x,
			const float *w, int B, int in, int out)
{
	cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, out, in, B, 1.0f, dy, out, x, in, 1.0f,
		    dw, in);
	if (db) {
		for (int i = 0; i < B; i++) {
			const float *r = dy + (size_t)i * out;
			for (int j = 0; j < out; j++)
				db[j] += r[j];
		}
	}
	if (dx)
		cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, B, in, out, 1.0f, dy, out, w,
			    in, 0.0f, dx, in);
}

/* ---------------- activations ---------------- */

HOT void nn_act_forward(enum sid_act act, float *y, const float *x, size_t n)
{
	switch (act) {
	case SID_ACT_RELU:
		for (size_t i = 0; i < n; i++)
			y[i] = x[i] > 0 ? x[i] : 0;
		break;
	case SID_ACT_SILU:
		for (size_t i = 0; i < n; i++)
			y[i] = x[i] / (1.0f + expf(-x[i]));
		break;
	case SID_ACT_GELU:
		for (size_t i = 0; i < n; i++)
			y[i] = 0.5f * x[i] * (1.0f + erff(x[i] * 0.70710678118654752f));
		break;
	case SID_ACT_TANH:
		for (size_t i = 0; i < n; i++)
			y[i] = tanhf(x[i]);
		break;
	case SID_ACT_IDENTITY:
	default:
		if (y != x)
			memmove(y, x, sizeof(float) * n);
		break;
	}
}

HOT void nn_act_backward(enum sid_act act, float *dx, const float *dy, const float *x, size_t n)
{
	switch (act) {
	case SID_ACT_RELU:
		for (size_t i = 0; i < n; i++)
			dx[i] = x[i] > 0 ? dy[i] : 0;
		break;
	case SID_ACT_SILU:
		for (size_t i = 0; i < n; i++) {
			float s = 1.0f / (1.0f + expf(-x[i]));
			dx[i] = dy[i] * s * (1.0f + x[i] * (1.0f - s));
		}
		break;
	case SID_ACT_GELU:
		for (size_t i = 0; i < n; i++) {
			float cdf = 0.5f * (1.0f + erff(x[i] * 0.70710678118654752f));
			float pdf = 0.39894228040143268f * expf(-0.5f * x[i] * x[i]);
			dx[i] = dy[i] * (cdf + x[i] * pdf);
		}
		break;
	case SID_ACT_TANH:
		for (size_t i = 0; i < n; i++) {
			float t = tanhf(x[i]);
			dx[i] = dy[i] * (1.0f - t * t);
		}
		break;
	case SID_ACT_IDENTITY:
	default:
		if (dx != dy)
			memmove(dx, dy, sizeof(float) * n);
		break;
	}
}

/* ---------------- reconstruction ---------------- */

double nn_mse_forward(const float *xh, const float *x, int B, int D)
{
	double tot = 0;
	for (int b = 0; b < B; b++) {
		float s = 0;
		const float *p = xh + (size_t)b * D, *t = x + (size_t)b * D;
		for (int j = 0; j < D; j++) {
			float d = p[j] - t[j];
			s += d * d;
		}
		tot += s;
	}
	return tot / B;
}

HOT void nn_mse_backward(float *dxh, const float *xh, const float *x, int B, int D, float g)
{
	float k = 2.0f * g / (float)B;
	size_t n = (size_t)B * D;
	for (size_t i = 0; i < n; i++)
		dxh[i] = k * (xh[i] - x[i]);
}

/* ---------------- fast exp and row kernels ---------------- */

typedef float v8f __attribute__((vector_size(32)));
typedef int32_t v8i __attribute__((vector_size(32)));

/* Cephes expf: x = n ln2 + r, |r| <= ln2/2, degree-5 polynomial, 2^n by
 * exponent bits; relative error ~2e-7.  Eight lanes at a time. */
static inline __attribute__((always_inline)) void vexp(v8f *px)
{
	v8f x = *px;
	const v8f lo = {-87, -87, -87, -87, -87, -87, -87, -87};
	const v8f hi = {88, 88, 88, 88, 88, 88, 88, 88};
	const v8f one = {1, 1, 1, 1, 1, 1, 1, 1};
	v8i m = x < lo;
	x = (v8f)(((v8i)x & ~m) | ((v8i)lo & m));
	m = x > hi;
	x = (v8f)(((v8i)x & ~m) | ((v8i)hi & m));
	v8f t = x * 1.44269504088896341f + 0.5f;
	v8f fl = __builtin_convertvector(__builtin_convertvector(t, v8i), v8f);
	fl = fl - (v8f)((v8i)one & (fl > t)); /* floor(t) = round(x / ln2) */
	v8f r = x - fl * 0.693359375f + fl * 2.12194440e-4f;
	v8f p = r * 1.9875691500e-4f + 1.3981999507e-3f;
	p = p * r + 8.3334519073e-3f;
	p = p * r + 4.1665795894e-2f;
	p = p * r + 1.6666665459e-1f;
	p = p * r + 5.0000001201e-1f;
	v8f y = p * r * r + r + one;
	v8i e = (__builtin_convertvector(fl, v8i) + 127) << 23;
	*px = y * (v8f)e;
}

/* x[i] = exp(x[i] - shift) over n floats (the tail through one padded
 * vector, so every element takes the same arithmetic). */
HOT static void exp_shift(float *x, size_t n, float shift)
{
	size_t i = 0;
	v8f s = {shift, shift, shift, shift, shift, shift, shift, shift};
	for (; i + 8 <= n; i += 8) {
		v8f v;
		__builtin_memcpy(&v, x + i, sizeof(v));
		v = v - s;
		vexp(&v);
		__builtin_memcpy(x + i, &v, sizeof(v));
	}
	if (i < n) {
		float tmp[8] = {0};
		__builtin_memcpy(tmp, x + i, sizeof(float) * (n - i));
		v8f v;
		__builtin_memcpy(&v, tmp, sizeof(v));
		v = v - s;
		vexp(&v);
		__builtin_memcpy(tmp, &v, sizeof(v));
		__builtin_memcpy(x + i, tmp, sizeof(float) * (n - i));
	}
}

void nn_exp_inplace(float *x, size_t n)
{
	exp_shift(x, n, 0.0f);
}

/* Row sums into rs (B) and column sums into cs (B) of a (B, B) matrix, each
 * in a fixed order. */
HOT static void row_col_sums(const float *S, int B, float *rs, float *cs)
{
	for (int j = 0; j < B; j++)
		cs[j] = 0;
	for (int b = 0; b < B; b++) {
		const float *row = S + (size_t)b * B;
		float acc[16] = {0};
		int j = 0;
		for (; j + 16 <= B; j += 16)
			for (int k = 0; k < 16; k++)
				acc[k] += row[j + k];
		float t = 0;
		for (; j < B; j++)
			t += row[j];
		for (int k = 0; k < 16; k++)
			t += acc[k];
		rs[b] = t;
		for (j = 0; j < B; j++)
			cs[j] += row[j];
	}
}

/* Zero the masked entries of a (B, B) matrix. */
static void apply_mask(const struct nn_sim *s, float *S, int B)
{
	for (int k = 0; k < s->n_pairs; k++)
		S[(size_t)s->pairs[2 * k] * B + s->pairs[2 * k + 1]] = 0.0f;
}

/* ---------------- residual quantizer ---------------- */

int nn_rq_init(struct nn_rq *s, int B, int E, int L, int K)
{
	memset(s, 0, sizeof(*s));
	s->B = B;
	s->E = E;
	s->L = L;
	s->K = K;
	size_t ble = (size_t)B * L * E, be = (size_t)B * E;
	s->codes = malloc(sizeof(int32_t) * (size_t)B * L);
	s->r = malloc(sizeof(float) * ble);
	s->e = malloc(sizeof(float) * ble);
	s->r0 = malloc(sizeof(float) * ble);
	s->e0 = malloc(sizeof(float) * ble);
	s->q = malloc(sizeof(float) * be);
	s->q0 = malloc(sizeof(float) * be);
	s->z0 = malloc(sizeof(float) * be);
	s->dist = malloc(sizeof(float) * (size_t)B * K);
	s->cnorm = malloc(sizeof(float) * (size_t)K);
	if (!s->codes || !s->r || !s->e || !s->r0 || !s->e0 || !s->q || !s->q0 || !s->z0 ||
	    !s->dist || !s->cnorm) {
		nn_rq_release(s);
		return SID_ENOMEM;
	}
	memset(s->codes, 0, sizeof(int32_t) * (size_t)B * L);
	return 0;
}

void nn_rq_release(struct nn_rq *s)
{
	free(s->codes);
	free(s->r);
	free(s->e);
	free(s->r0);
	free(s->e0);
	free(s->q);
	free(s->q0);
	free(s->z0);
	free(s->dist);
	free(s->cnorm);
	memset(s, 0, sizeof(*s));
}

void nn_rq_forward(struct nn_rq *s, int n_rows, const float *z, const float *const *C, float *z_dec,
		   float *z_al)
{
	const int E = s->E, L = s->L, K = s->K;
	const size_t LE = (size_t)L * E;
	for (int b = 0; b < n_rows; b++)
		memcpy(s->r + b * LE, z + (size_t)b * E, sizeof(float) * E);
	for (int l = 0; l < L; l++) {
		const float *Cl = C[l];
		if (!s->frozen) {
			for (int k = 0; k < K; k++) {
				float a = 0;
				for (int j = 0; j < E; j++)
					a += Cl[(size_t)k * E + j] * Cl[(size_t)k * E + j];
				s->cnorm[k] = a;
			}
			cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, n_rows, K, E, 1.0f,
				    s->r + (size_t)l * E, (int)LE, Cl, E, 0.0f, s->dist, K);
			for (int b = 0; b < n_rows; b++) {
				const float *d = s->dist + (size_t)b * K;
				int best = 0;
				float bd = INFINITY;
				for (int k = 0; k < K; k++) {
					float v = s->cnorm[k] - 2.0f * d[k];
					if (v < bd) {
						bd = v;
						best = k;
					}
				}
				s->codes[(size_t)b * L + l] = best;
			}
		}
		for (int b = 0; b < n_rows; b++) {
			const float *cw = Cl + (size_t)s->codes[(size_t)b * L + l] * E;
			float *rl = s->r + b * LE + (size_t)l * E;
			float *el = s->e + b * LE + (size_t)l * E;
			memcpy(el, cw, sizeof(float) * E);
			if (l + 1 < L)
				for (int j = 0; j < E; j++)
					rl[E + j] = rl[j] - el[j];
		}
	}
	for (int b = 0; b < n_rows; b++) {
		float *qb = s->q + (size_t)b * E;
		memset(qb, 0, sizeof(float) * E);
		for (int l = 0; l < L; l++)
			for (int j = 0; j < E; j++)
				qb[j] += s->e[b * LE + (size_t)l * E + j];
	}
	if (!s->frozen) {
		memcpy(s->r0, s->r, sizeof(float) * n_rows * LE);
		memcpy(s->e0, s->e, sizeof(float) * n_rows * LE);
		memcpy(s->q0, s->q, sizeof(float) * (size_t)n_rows * E);
		memcpy(s->z0, z, sizeof(float) * (size_t)n_rows * E);
		if (z_dec)
			memcpy(z_dec, s->q, sizeof(float) * (size_t)n_rows * E);
		if (z_al)
			memcpy(z_al, s->q, sizeof(float) * (size_t)n_rows * E);
		return;
	}
	size_t n = (size_t)n_rows * E;
	for (size_t i = 0; i < n; i++) {
		if (z_dec)
			z_dec[i] = z[i] + (s->q0[i] - s->z0[i]);
		if (z_al)
			z_al[i] = s->q[i] + (z[i] - s->z0[i]);
	}
}

double nn_rq_loss_forward(const struct nn_rq *s, int n, float beta)
{
	const int E = s->E;
	const size_t LE = (size_t)s->L * E;
	double tot = 0;
	for (int b = 0; b < n; b++) {
		float a = 0, c = 0;
		for (size_t i = b * LE; i < (b + 1) * LE; i++) {
			float d1 = s->r0[i] - s->e[i], d2 = s->r[i] - s->e0[i];
			a += d1 * d1;
			c += d2 * d2;
		}
		tot += a + beta * c;
	}
	return tot / n;
}

void nn_rq_backward(const struct nn_rq *s, int n_rows, int n, float beta, float g,
		    const float *dz_dec, int n_dec, const float *dz_al, float *dz, float *const *dC)
{
	const int E = s->E, L = s->L;
	const size_t LE = (size_t)L * E;
	const float kc = 2.0f * g / (float)n, kk = 2.0f * beta * g / (float)n;
	for (int b = 0; b < n_rows; b++) {
		float *d = dz + (size_t)b * E;
		const int32_t *cb = s->codes + (size_t)b * L;
		memset(d, 0, sizeof(float) * E);
		if (dz_dec && b < n_dec)
			for (int j = 0; j < E; j++)
				d[j] += dz_dec[(size_t)b * E + j];
		if (dz_al) {
			const float *a = dz_al + (size_t)b * E;
			for (int j = 0; j < E; j++)
				d[j] += a[j];
			for (int l = 0; l < L; l++) {
				float *dc = dC[l] + (size_t)cb[l] * E;
				for (int j = 0; j < E; j++)
					dc[j] += a[j];
			}
		}
		if (b >= n)
			continue;
		for (int l = 0; l < L; l++) {
			const float *r = s->r + b * LE + (size_t)l * E;
			const float *e = s->e + b * LE + (size_t)l * E;
			const float *r0 = s->r0 + b * LE + (size_t)l * E;
			const float *e0 = s->e0 + b * LE + (size_t)l * E;
			float *dc = dC[l] + (size_t)cb[l] * E;
			for (int j = 0; j < E; j++) {
				float dr = kk * (r[j] - e0[j]);
				dc[j] += kc * (e[j] - r0[j]);
				d[j] += dr;
				for (int m = 0; m < l; m++)
					dC[m][(size_t)cb[m] * E + j] -= dr;
			}
		}
	}
}

/* ---------------- similarity losses ---------------- */

int nn_sim_init(struct nn_sim *s, int B, int E)
{
	memset(s, 0, sizeof(*s));
	s->cap = B;
	s->E = E;
	s->S = malloc(sizeof(float) * (size_t)B * B);
	s->an = malloc(sizeof(float) * (size_t)B * E);
	s->cn = malloc(sizeof(float) * (size_t)B * E);
	s->dan = malloc(sizeof(float) * (size_t)B * E);
	s->dcn = malloc(sizeof(float) * (size_t)B * E);
	s->na = malloc(sizeof(float) * (size_t)B);
	s->nc = malloc(sizeof(float) * (size_t)B);
	s->rs = malloc(sizeof(float) * (size_t)B);
	s->cs = malloc(sizeof(float) * (size_t)B);
	s->keys = malloc(sizeof(int64_t) * (size_t)B);
	if (!s->S || !s->an || !s->cn || !s->dan || !s->dcn || !s->na || !s->nc || !s->rs ||
	    !s->cs || !s->keys) {
		nn_sim_release(s);
		return SID_ENOMEM;
	}
	return 0;
}

void nn_sim_release(struct nn_sim *s)
{
	free(s->S);
	free(s->an);
	free(s->cn);
	free(s->dan);
	free(s->dcn);
	free(s->na);
	free(s->nc);
	free(s->rs);
	free(s->cs);
	free(s->keys);
	free(s->pairs);
	memset(s, 0, sizeof(*s));
}

static int cmp_i64(const void *a, const void *b)
{
	int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;
	return (x > y) - (x < y);
}

/* Append every ordered pair (b, j), b != j, of rows with equal keys. */
static int add_pairs(struct nn_sim *s, int B, const int32_t *key)
{
	/* key in the high 32 bits, row in the low: one sort groups equal keys by row */
	for (int b = 0; b < B; b++)
		s->keys[b] = ((int64_t)key[b] << 32) | (uint32_t)b;
	qsort(s->keys, (size_t)B, sizeof(int64_t), cmp_i64);
	for (int g0 = 0; g0 < B;) {
		int g1 = g0 + 1;
		while (g1 < B && (s->keys[g1] >> 32) == (s->keys[g0] >> 32))
			g1++;
		size_t need = (size_t)s->n_pairs + (size_t)(g1 - g0) * (g1 - g0 - 1);
		if (need > s->cap_pairs) {
			size_t nc = need * 2 + 64;
			int32_t *p = realloc(s->pairs, sizeof(int32_t) * 2 * nc);
			if (!p)
				return SID_ENOMEM;
			s->pairs = p;
			s->cap_pairs = nc;
		}
		for (int x = g0; x < g1; x++)
			for (int y = g0; y < g1; y++)
				if (x != y) {
					s->pairs[2 * s->n_pairs] =
					    (int32_t)(s->keys[x] & 0xffffffff);
					s->pairs[2 * s->n_pairs + 1] =
					    (int32_t)(s->keys[y] & 0xffffffff);
					s->n_pairs++;
				}
		g0 = g1;
	}
	return 0;
}

int nn_sim_set_mask(struct nn_sim *s, int B, const int32_t *ku, const int32_t *ki)
{
	int rc = 0;
	s->n_pairs = 0;
	if (ku)
		rc = add_pairs(s, B, ku);
	if (!rc && ki)
		rc = add_pairs(s, B, ki);
	if (rc)
		s->n_pairs = 0;
	return rc;
}

int nn_sim_masked(const struct nn_sim *s, int b, int j)
{
	for (int k = 0; k < s->n_pairs; k++)
		if (s->pairs[2 * k] == b && s->pairs[2 * k + 1] == j)
			return 1;
	return 0;
}

static void normalize_rows(float *out, float *norms, const float *in, int ld, int B, int E)
{
	for (int b = 0; b < B; b++) {
		const float *x = in + (size_t)b * ld;
		float s = 0;
		for (int j = 0; j < E; j++)
			s += x[j] * x[j];
		float n = sqrtf(s);
		n = n > NORM_EPS ? n : NORM_EPS;
		norms[b] = n;
		float inv = 1.0f / n;
		for (int j = 0; j < E; j++)
			out[(size_t)b * E + j] = x[j] * inv;
	}
}

/* d(x / ||x||) backward: dx += (dy - y (y . dy)) / ||x||  (y = x / ||x||) */
static void normalize_backward(float *dx, int ldd, const float *dy, const float *y,
			       const float *norms, int B, int E)
{
	for (int b = 0; b < B; b++) {
		const float *yb = y + (size_t)b * E, *gb = dy + (size_t)b * E;
		float dot = 0;
		for (int j = 0; j < E; j++)
			dot += yb[j] * gb[j];
		float inv = 1.0f / norms[b];
		float *d = dx + (size_t)b * ldd;
		for (int j = 0; j < E; j++)
			d[j] += (gb[j] - yb[j] * dot) * inv;
	}
}

double nn_infonce_forward(struct nn_sim *s, const float *a, int lda, const float *c, int ldc, int B,
			  int E, float tau)
{
	s->B = B;
	s->E = E;
	s->a = a;
	s->c = c;
	s->lda = lda;
	s->ldc = ldc;
	s->tau = tau;
	normalize_rows(s->an, s->na, a, lda, B, E);
	normalize_rows(s->cn, s->nc, c, ldc, B, E);
	cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, B, B, E, 1.0f / tau, s->an, E, s->cn,
		    E, 0.0f, s->S, B);
	/* cos <= 1, so S - 1/tau <= 0 (up to rounding): one shift serves rows and columns */
	const float shift = 1.0f / tau;
	double diag = 0;
	for (int b = 0; b < B; b++)
		diag += s->S[(size_t)b * B + b] - shift;
	exp_shift(s->S, (size_t)B * B, shift);
	apply_mask(s, s->S, B);
	row_col_sums(s->S, B, s->rs, s->cs);
	double lr = 0, lc = 0;
	for (int b = 0; b < B; b++) {
		lr += log((double)s->rs[b]);
		lc += log((double)s->cs[b]);
	}
	return 0.5 * ((lr - diag) / B + (lc - diag) / B);
}

/* S[b][j] = k * S[b][j] * (1/rs[b] + ics[j]) - 2k [b == j] */
HOT static void infonce_dS(float *S, int B, const float *rs, const float *ics, float k)
{
	for (int b = 0; b < B; b++) {
		float *row = S + (size_t)b * B;
		float ir = 1.0f / rs[b];
		for (int j = 0; j < B; j++)
			row[j] = k * row[j] * (ir + ics[j]);
		row[b] -= 2.0f * k;
	}
}

void nn_infonce_backward(struct nn_sim *s, float g, float *da, int ldda, float *dc, int lddc)
{
	const int B = s->B, E = s->E;
	const float k = 0.5f * g / (float)B;
	for (int j = 0; j < B; j++)
		s->cs[j] = 1.0f / s->cs[j];
	infonce_dS(s->S, B, s->rs, s->cs, k);
	/* S now holds dL/dS; d an = dS cn / tau, d cn = dS^T an / tau */
	cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, B, E, B, 1.0f / s->tau, s->S, B,
		    s->cn, E, 0.0f, s->dan, E);
	cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, B, E, B, 1.0f / s->tau, s->S, B, s->an,
		    E, 0.0f, s->dcn, E);
	normalize_backward(da, ldda, s->dan, s->an, s->na, B, E);
	normalize_backward(dc, lddc, s->dcn, s->cn, s->nc, B, E);
}

/* Subtract corr (B) from every row, then each row's max (over all entries:
 * any shift is exact for a softmax), exponentiate; returns the diagonal
 * logits minus their shifts, summed. */
HOT static double click_exp(float *S, int B, const float *corr, float *diag_out)
{
	double diag = 0;
	for (int b = 0; b < B; b++) {
		float *row = S + (size_t)b * B;
		float mx = -INFINITY;
		if (corr)
			for (int j = 0; j < B; j++)
				row[j] -= corr[j];
		for (int j = 0; j < B; j++)
			mx = row[j] > mx ? row[j] : mx;
		diag_out[b] = row[b] - mx;
		diag += diag_out[b];
		exp_shift(row, (size_t)B, mx);
	}
	return diag;
}

double nn_click_forward(struct nn_sim *s, const float *u, int ldu, const float *v, int ldv,
			const float *corr, int B, int E)
{
	s->B = B;
	s->E = E;
	s->a = u;
	s->c = v;
	s->lda = ldu;
	s->ldc = ldv;
	cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, B, B, E, 1.0f, u, ldu, v, ldv, 0.0f,
		    s->S, B);
	double diag = click_exp(s->S, B, corr, s->na);
	apply_mask(s, s->S, B);
	row_col_sums(s->S, B, s->rs, s->cs);
	double tot = 0;
	for (int b = 0; b < B; b++)
		tot += log((double)s->rs[b]);
	return (tot - diag) / B;
}

HOT static void click_dS(float *S, int B, const float *rs, float k)
{
	for (int b = 0; b < B; b++) {
		float *row = S + (size_t)b * B;
		float ir = k / rs[b];
		for (int j = 0; j < B; j++)
			row[j] *= ir;
		row[b] -= k;
	}
}

void nn_click_backward(struct nn_sim *s, float g, float *du, int lddu, float *dv, int lddv)
{
	const int B = s->B, E = s->E;
	click_dS(s->S, B, s->rs, g / (float)B);
	cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, B, E, B, 1.0f, s->S, B, s->c, s->ldc,
		    1.0f, du, lddu);
	cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, B, E, B, 1.0f, s->S, B, s->a, s->lda,
		    1.0f, dv, lddv);
}

/* ---------------- bias head ---------------- */

double nn_head_forward(float *pred, const float *h, int ldh, const float *w, const float *bias,
		       const float *t, int B, int E)
{
	double tot = 0;
	for (int b = 0; b < B; b++) {
		const float *x = h + (size_t)b * ldh;
		float p = bias[0];
		for (int j = 0; j < E; j++)
			p += w[j] * x[j];
		pred[b] = p;
		tot += (double)(p - t[b]) * (p - t[b]);
	}
	return tot / B;
}

void nn_head_backward(float *dh, int lddh, float *dw, float *dbias, const float *pred,
		      const float *h, int ldh, const float *w, const float *t, int B, int E,
		      float g)
{
	for (int b = 0; b < B; b++) {
		float r = 2.0f * g * (pred[b] - t[b]) / (float)B;
		const float *x = h + (size_t)b * ldh;
		float *d = dh + (size_t)b * lddh;
		for (int j = 0; j < E; j++) {
			d[j] += r * w[j];
			dw[j] += r * x[j];
		}
		dbias[0] += r;
	}
}

/* ---------------- orthogonality ---------------- */

double nn_cos2_forward(const float *a, const float *c, int ld, int B, int E)
{
	double tot = 0;
	for (int b = 0; b < B; b++) {
		const float *x = a + (size_t)b * ld, *y = c + (size_t)b * ld;
		float xy = 0, xx = 0, yy = 0;
		for (int j = 0; j < E; j++) {
			xy += x[j] * y[j];
			xx += x[j] * x[j];
			yy += y[j] * y[j];
		}
		float nx = fmaxf(sqrtf(xx), NORM_EPS), ny = fmaxf(sqrtf(yy), NORM_EPS);
		float cs = xy / (nx * ny);
		tot += (double)cs * cs;
	}
	return tot / B;
}

void nn_cos2_backward(float *da, float *dc, int ldd, const float *a, const float *c, int ld, int B,
		      int E, float g)
{
	for (int b = 0; b < B; b++) {
		const float *x = a + (size_t)b * ld, *y = c + (size_t)b * ld;
		float xy = 0, xx = 0, yy = 0;
		for (int j = 0; j < E; j++) {
			xy += x[j] * y[j];
			xx += x[j] * x[j];
			yy += y[j] * y[j];
		}
		float nx = fmaxf(sqrtf(xx), NORM_EPS), ny = fmaxf(sqrtf(yy), NORM_EPS);
		float cs = xy / (nx * ny);
		float k = 2.0f * g * cs / (float)B;
		float *gx = da + (size_t)b * ldd, *gy = dc + (size_t)b * ldd;
		for (int j = 0; j < E; j++) {
			gx[j] += k * (y[j] / (nx * ny) - cs * x[j] / (nx * nx));
			gy[j] += k * (x[j] / (nx * ny) - cs * y[j] / (ny * ny));
		}
	}
}
