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

void nn_act_forward(enum sid_act act, float *y, const float *x, size_t n)
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

void nn_act_backward(enum sid_act act, float *dx, const float *dy, const float *x, size_t n)
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

void nn_mse_backward(float *dxh, const float *xh, const float *x, int B, int D, float g)
{
	float k = 2.0f * g / (float)B;
	size_t n = (size_t)B * D;
	for (size_t i = 0; i < n; i++)
		dxh[i] = k * (xh[i] - x[i]);
}

/* ---------------- fast exp ---------------- */

/* Cephes expf: x = n ln2 + r, |r| <= ln2/2, degree-5 polynomial, 2^n by
 * exponent bits.  Written branch-free so loops over it vectorise. */
static inline float fast_exp(float x)
{
	x = x < -87.0f ? -87.0f : x;
	x = x > 88.0f ? 88.0f : x;
	float t = x * 1.44269504088896341f + 0.5f;
	float fl = (float)(int)t;
	fl = fl > t ? fl - 1.0f : fl; /* floor(t) = round(x / ln2) */
	float r = x - fl * 0.693359375f + fl * 2.12194440e-4f;
	float p = 1.9875691500e-4f;
	p = p * r + 1.3981999507e-3f;
	p = p * r + 8.3334519073e-3f;
	p = p * r + 4.1665795894e-2f;
	p = p * r + 1.6666665459e-1f;
	p = p * r + 5.0000001201e-1f;
	float y = p * r * r + r + 1.0f;
	union {
		int32_t i;
		float f;
	} u;
	u.i = ((int32_t)fl + 127) << 23;
	return y * u.f;
}

void nn_exp_inplace(float *x, size_t n)
{
	for (size_t i = 0; i < n; i++)
		x[i] = fast_exp(x[i]);
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
	s->mask = calloc((size_t)B * B, 1);
	s->an = malloc(sizeof(float) * (size_t)B * E);
	s->cn = malloc(sizeof(float) * (size_t)B * E);
	s->dan = malloc(sizeof(float) * (size_t)B * E);
	s->dcn = malloc(sizeof(float) * (size_t)B * E);
	s->na = malloc(sizeof(float) * (size_t)B);
	s->nc = malloc(sizeof(float) * (size_t)B);
	s->rs = malloc(sizeof(float) * (size_t)B);
	s->cs = malloc(sizeof(float) * (size_t)B);
	if (!s->S || !s->mask || !s->an || !s->cn || !s->dan || !s->dcn || !s->na || !s->nc ||
	    !s->rs || !s->cs) {
		nn_sim_release(s);
		return SID_ENOMEM;
	}
	return 0;
}

void nn_sim_release(struct nn_sim *s)
{
	free(s->S);
	free(s->mask);
	free(s->an);
	free(s->cn);
	free(s->dan);
	free(s->dcn);
	free(s->na);
	free(s->nc);
	free(s->rs);
	free(s->cs);
	memset(s, 0, sizeof(*s));
}

void nn_sim_set_mask(struct nn_sim *s, int B, const int32_t *ku, const int32_t *ki)
{
	for (int b = 0; b < B; b++) {
		uint8_t *m = s->mask + (size_t)b * B;
		for (int j = 0; j < B; j++)
			m[j] =
			    (uint8_t)(j != b && ((ku && ku[j] == ku[b]) || (ki && ki[j] == ki[b])));
	}
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
	for (int b = 0; b < B; b++) {
		diag += s->S[(size_t)b * B + b] - shift;
		s->cs[b] = 0;
	}
	for (int b = 0; b < B; b++) {
		float *row = s->S + (size_t)b * B;
		const uint8_t *m = s->mask + (size_t)b * B;
		for (int j = 0; j < B; j++)
			row[j] = m[j] ? -1e30f : row[j] - shift;
		nn_exp_inplace(row, (size_t)B);
		for (int j = 0; j < B; j++)
			row[j] = m[j] ? 0.0f : row[j];
		float rs = 0;
		for (int j = 0; j < B; j++) {
			rs += row[j];
			s->cs[j] += row[j];
		}
		s->rs[b] = rs;
	}
	double lr = 0, lc = 0;
	for (int b = 0; b < B; b++) {
		lr += log(s->rs[b]);
		lc += log(s->cs[b]);
	}
	return 0.5 * ((lr - diag) / B + (lc - diag) / B);
}

void nn_infonce_backward(struct nn_sim *s, float g, float *da, int ldda, float *dc, int lddc)
{
	const int B = s->B, E = s->E;
	const float k = 0.5f * g / (float)B;
	for (int b = 0; b < B; b++) {
		float *row = s->S + (size_t)b * B;
		float ir = 1.0f / s->rs[b];
		for (int j = 0; j < B; j++)
			row[j] = k * row[j] * (ir + 1.0f / s->cs[j]);
		row[b] -= 2.0f * k;
	}
	/* S now holds dL/dS; d an = dS cn / tau, d cn = dS^T an / tau */
	cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, B, E, B, 1.0f / s->tau, s->S, B,
		    s->cn, E, 0.0f, s->dan, E);
	cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, B, E, B, 1.0f / s->tau, s->S, B, s->an,
		    E, 0.0f, s->dcn, E);
	normalize_backward(da, ldda, s->dan, s->an, s->na, B, E);
	normalize_backward(dc, lddc, s->dcn, s->cn, s->nc, B, E);
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
	double tot = 0;
	for (int b = 0; b < B; b++) {
		float *row = s->S + (size_t)b * B;
		const uint8_t *m = s->mask + (size_t)b * B;
		float mx = -INFINITY;
		for (int j = 0; j < B; j++) {
			float x = corr ? row[j] - corr[j] : row[j];
			row[j] = x;
			if (!m[j] && x > mx)
				mx = x;
		}
		float diag = row[b] - mx;
		for (int j = 0; j < B; j++)
			row[j] = m[j] ? -1e30f : row[j] - mx;
		nn_exp_inplace(row, (size_t)B);
		float rs = 0;
		for (int j = 0; j < B; j++) {
			row[j] = m[j] ? 0.0f : row[j];
			rs += row[j];
		}
		s->rs[b] = rs;
		tot += log(rs) - diag;
	}
	return tot / B;
}

void nn_click_backward(struct nn_sim *s, float g, float *du, int lddu, float *dv, int lddv)
{
	const int B = s->B, E = s->E;
	const float k = g / (float)B;
	for (int b = 0; b < B; b++) {
		float *row = s->S + (size_t)b * B;
		float ir = k / s->rs[b];
		for (int j = 0; j < B; j++)
			row[j] *= ir;
		row[b] -= k;
	}
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
