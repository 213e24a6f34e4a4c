/*
 * rq.c - greedy residual quantisation and the beam search for alternative
 * code tuples; see rq.h for the exact rules.  Scores come from the
 * deterministic panel GEMM of mlp.h, everything else is per-row arithmetic
 * in a fixed order, so a row's result never depends on its neighbours.
 */
#include "rq.h"

#include <float.h>
#include <math.h>
#include <string.h>

#include "mlp.h"

#define BEAM_SCORE_FLOATS (1u << 20) /* aim for a 4 MiB score matrix per pass */
#define KBLOCK		  2048	     /* codewords scored per GEMM call */

int sid__rq_kmax(const struct sid_tower *t)
{
	int kmax = 1;
	for (int l = 0; l < t->L; l++)
		if (t->K[l] > kmax)
			kmax = t->K[l];
	return kmax;
}

/* Codewords per score block: the largest codebook, capped at KBLOCK. */
static size_t kblock(const struct sid_tower *t)
{
	int kmax = sid__rq_kmax(t);
	return (size_t)(kmax < KBLOCK ? kmax : KBLOCK);
}

size_t sid__rq_greedy_scratch(const struct sid_tower *t, size_t n)
{
	/* scores, then running best value and index per row */
	return sid__panels(n) * SID__LANES * (kblock(t) + 2);
}

float sid__rq_sqnorm(const float *r, int E, size_t stride)
{
	double s = 0.0;
	for (int e = 0; e < E; e++) {
		double v = r[(size_t)e * stride];
		s += v * v;
	}
	return (float)s;
}

/*
 * Per lane of one panel's score block @sp ((K, 16), codewords k0 ..
 * k0+K-1): fold cn[k] - 2 sp[k] into the running minimum @best / @idx,
 * keeping the lower k on equal scores (blocks come in ascending k).  2 * s
 * is exact, so this is the score of rq.h; comparisons are exact, so the
 * vector and the scalar version agree.  Unless 2 * s overflows (an FMA
 * may then not): sid__rq_greedy refuses a row whose best score is not
 * finite, the only trace such an overflow leaves.
 */
static void argmin_panel_generic(const float *sp, const float *cn, int K, int32_t k0,
				 float best[SID__LANES], int32_t idx[SID__LANES])
{
	for (int k = 0; k < K; k++) {
		const float *row = sp + (size_t)k * SID__LANES;
		for (int l = 0; l < SID__LANES; l++) {
			float v = cn[k] - 2.0f * row[l];
			if (v < best[l]) {
				best[l] = v;
				idx[l] = k0 + k;
			}
		}
	}
}

#if defined(__x86_64__) && defined(__GNUC__)
#include <immintrin.h>

__attribute__((target("avx512f"))) static void argmin_panel_avx512(const float *sp, const float *cn,
								   int K, int32_t k0,
								   float best[SID__LANES],
								   int32_t idx[SID__LANES])
{
	/* Two interleaved streams (even and odd k) break the compare chain;
	 * merged so that equal scores keep the lower k. */
	__m512 b0 = _mm512_loadu_ps(best), b1 = _mm512_set1_ps(INFINITY);
	__m512i i0 = _mm512_loadu_si512((const void *)idx), i1 = _mm512_set1_epi32(INT32_MAX);
	const __m512 two = _mm512_set1_ps(2.0f);
	int k = 0;

	for (; k + 2 <= K; k += 2) {
		__m512 v0 = _mm512_sub_ps(_mm512_set1_ps(cn[k]),
					  _mm512_mul_ps(two, _mm512_loadu_ps(sp + (size_t)k * 16)));
		__m512 v1 =
		    _mm512_sub_ps(_mm512_set1_ps(cn[k + 1]),
				  _mm512_mul_ps(two, _mm512_loadu_ps(sp + (size_t)(k + 1) * 16)));
		__mmask16 m0 = _mm512_cmp_ps_mask(v0, b0, _CMP_LT_OQ);
		__mmask16 m1 = _mm512_cmp_ps_mask(v1, b1, _CMP_LT_OQ);
		b0 = _mm512_mask_mov_ps(b0, m0, v0);
		i0 = _mm512_mask_mov_epi32(i0, m0, _mm512_set1_epi32(k0 + k));
		b1 = _mm512_mask_mov_ps(b1, m1, v1);
		i1 = _mm512_mask_mov_epi32(i1, m1, _mm512_set1_epi32(k0 + k + 1));
	}
	if (k < K) {
		__m512 v0 = _mm512_sub_ps(_mm512_set1_ps(cn[k]),
					  _mm512_mul_ps(two, _mm512_loadu_ps(sp + (size_t)k * 16)));
		__mmask16 m0 = _mm512_cmp_ps_mask(v0, b0, _CMP_LT_OQ);
		b0 = _mm512_mask_mov_ps(b0, m0, v0);
		i0 = _mm512_mask_mov_epi32(i0, m0, _mm512_set1_epi32(k0 + k));
	}
	/* Take stream 1 where it is strictly better, or equal with a lower k. */
	__mmask16 lt = _mm512_cmp_ps_mask(b1, b0, _CMP_LT_OQ);
	__mmask16 eq = _mm512_cmp_ps_mask(b1, b0, _CMP_EQ_OQ);
	__mmask16 lower = _mm512_cmp_epi32_mask(i1, i0, _MM_CMPINT_LT);
	__mmask16 take = lt | (eq & lower);
	_mm512_storeu_ps(best, _mm512_mask_mov_ps(b0, take, b1));
	_mm512_storeu_si512((void *)idx, _mm512_mask_mov_epi32(i0, take, i1));
}
#endif

static void argmin_panel(const float *sp, const float *cn, int K, int32_t k0,
			 float best[SID__LANES], int32_t idx[SID__LANES])
{
#if defined(__x86_64__) && defined(__GNUC__)
	if (!strcmp(sid__gemm_kernel_name(), "avx512")) {
		argmin_panel_avx512(sp, cn, K, k0, best, idx);
		return;
	}
#endif
	argmin_panel_generic(sp, cn, K, k0, best, idx);
}

void sid__rq_greedy(const struct sid_tower *t, float *r, size_t n, int32_t *codes, float *s)
{
	const int E = t->E, L = t->L;
	const size_t P = sid__panels(n), pstride = (size_t)E * SID__LANES, kb = kblock(t);
	float *best = s + P * SID__LANES * kb;
	int32_t *idx = (int32_t *)(void *)(best + P * SID__LANES);

	for (int l = 0; l < L; l++) {
		const int K = t->K[l];
		const float *C = t->codebook[l];

		for (size_t i = 0; i < P * SID__LANES; i++) {
			best[i] = INFINITY;
			idx[i] = 0;
		}
		for (int k0 = 0; k0 < K; k0 += (int)kb) {
			const int kn = K - k0 < (int)kb ? K - k0 : (int)kb;
			sid__gemm_panels(C + (size_t)k0 * E, NULL, NULL, SID_ACT_IDENTITY, kn, E, r,
					 n, s);
			for (size_t p = 0; p < P; p++)
				argmin_panel(s + p * (size_t)kn * SID__LANES, t->cnorm[l] + k0, kn,
					     k0, best + p * SID__LANES, idx + p * SID__LANES);
		}
		for (size_t p = 0; p < P; p++) {
			const int32_t *ip = idx + p * SID__LANES;
			float *rp = r + p * pstride;
			size_t rows = n - p * SID__LANES;

			if (rows > SID__LANES)
				rows = SID__LANES;
			for (size_t lane = 0; lane < rows; lane++)
				codes[(p * SID__LANES + lane) * L + l] = ip[lane];
			for (int lane = 0; lane < SID__LANES; lane++) {
				const float *cw = C + (size_t)ip[lane] * E;
				/* -inf: cn - 2<r, c> overflowed, and codewords tied
				 * there (the code was the lowest of them, not the
				 * nearest); +inf: every score did.  The row's residual,
				 * and so its distance, becomes NaN: refused by
				 * sid_encode_overflow, as a layer's overflow is. */
				int sound = fabsf(best[p * SID__LANES + lane]) <= FLT_MAX;
				for (int e = 0; e < E; e++)
					rp[(size_t)e * SID__LANES + lane] =
					    sound ? rp[(size_t)e * SID__LANES + lane] - cw[e] : NAN;
			}
		}
	}
}

void sid__rq_quant(const struct sid_tower *t, const int32_t *codes, size_t n, float *quant)
{
	const int E = t->E, L = t->L;

	for (size_t i = 0; i < n; i++) {
		float *q = quant + i * E;
		const int32_t *c = codes + i * L;
		memcpy(q, t->codebook[0] + (size_t)c[0] * E, sizeof(float) * E);
		for (int l = 1; l < L; l++) {
			const float *cw = t->codebook[l] + (size_t)c[l] * E;
			for (int e = 0; e < E; e++)
				q[e] += cw[e];
		}
	}
}

/* ---- beam search ---------------------------------------------------------- */

int sid__rq_beam_width(int n_alt)
{
	return 2 * (n_alt + 1);
}

static size_t round16(size_t n)
{
	return (n + 15) & ~(size_t)15;
}

/* Scratch carve-up for @rows rows of width W. */
struct beam_buf {
	float *r[2];	/* (rows*W, E) panel layout: beam residuals, current and next */
	float *s;	/* (rows*W, kmax) panel layout: scores */
	float *nrm[2];	/* (rows*W) ||r||^2 of each beam entry */
	int32_t *c[2];	/* (rows*W, L) codes of each beam entry */
	float *cscore;	/* (rows, W) candidate scores, sorted per row */
	int32_t *cpar;	/* (rows, W) candidate parent entry */
	int32_t *ck;	/* (rows, W) candidate code at this level */
	int32_t *ccnt;	/* (rows) candidates kept */
	int32_t *order; /* (W) final ranking */
};

static size_t beam_layout(const struct sid_tower *t, int W, size_t rows, float *base,
			  struct beam_buf *bb)
{
	const size_t nv = rows * (size_t)W, pv = sid__panels(nv) * SID__LANES;
	const size_t kmax = kblock(t);
	struct beam_buf o;
	size_t off = 0;

	memset(&o, 0, sizeof(o));
#define TAKE(ptr, type, count)                                                                     \
	do {                                                                                       \
		if (base)                                                                          \
			(ptr) = (type *)(void *)(base + off);                                      \
		off += round16(count);                                                             \
	} while (0)
	TAKE(o.r[0], float, pv * t->E);
	TAKE(o.r[1], float, pv * t->E);
	TAKE(o.s, float, pv *kmax);
	TAKE(o.nrm[0], float, nv);
	TAKE(o.nrm[1], float, nv);
	TAKE(o.c[0], int32_t, nv * t->L);
	TAKE(o.c[1], int32_t, nv * t->L);
	TAKE(o.cscore, float, nv);
	TAKE(o.cpar, int32_t, nv);
	TAKE(o.ck, int32_t, nv);
	TAKE(o.ccnt, int32_t, rows);
	TAKE(o.order, int32_t, (size_t)W);
#undef TAKE
	if (bb)
		*bb = o;
	return off;
}

size_t sid__rq_beam_plan(const struct sid_tower *t, int n_alt, size_t rows_max, size_t *floats)
{
	const int W = sid__rq_beam_width(n_alt);
	size_t per_row = (size_t)W * kblock(t);
	size_t rows = BEAM_SCORE_FLOATS / per_row;

	if (rows < 1)
		rows = 1;
	if (rows > rows_max)
		rows = rows_max;
	*floats = beam_layout(t, W, rows, NULL, NULL);
	return rows;
}

/* Lexicographic compare of (a[0..l-1], ka) and (b[0..l-1], kb). */
static int lex_cmp(const int32_t *a, int32_t ka, const int32_t *b, int32_t kb, int l)
{
	for (int i = 0; i < l; i++)
		if (a[i] != b[i])
			return a[i] < b[i] ? -1 : 1;
	if (ka != kb)
		return ka < kb ? -1 : 1;
	return 0;
}

/* Zero the padding lanes past @nv of a panel matrix with @F features. */
static void zero_padding(float *x, size_t nv, int F)
{
	size_t P = sid__panels(nv);
	if (nv == P * SID__LANES)
		return;
	float *last = x + (P - 1) * (size_t)F * SID__LANES;
	for (int f = 0; f < F; f++)
		for (size_t lane = nv % SID__LANES; lane < SID__LANES; lane++)
			last[(size_t)f * SID__LANES + lane] = 0.0f;
}

static inline float *panel_at(float *x, size_t v, int F)
{
	return x + (v / SID__LANES) * (size_t)F * SID__LANES + v % SID__LANES;
}

void sid__rq_beam(const struct sid_tower *t, const float *z, size_t n, int n_alt,
		  const int32_t *greedy, int32_t *alt_codes, float *alt_dist, int *alt_count,
		  float *scratch)
{
	const int W = sid__rq_beam_width(n_alt), E = t->E, L = t->L;
	const size_t kb = kblock(t);
	struct beam_buf bb;
	int cur = 0;
	size_t nb = 1;

	beam_layout(t, W, n, scratch, &bb);

	/* Level 0 beam: the latent itself. */
	for (size_t i = 0; i < n; i++) {
		float *dst = panel_at(bb.r[0], i, E);
		for (int e = 0; e < E; e++)
			dst[(size_t)e * SID__LANES] = z[i * E + e];
		/* beam_layout leaves NULLs only when sizing, without scratch */
		/* NOLINTNEXTLINE(clang-analyzer-core.NullDereference) */
		bb.nrm[0][i] = sid__rq_sqnorm(z + i * E, E, 1);
	}
	zero_padding(bb.r[0], n, E);

	for (int l = 0; l < L; l++) {
		const int K = t->K[l];
		const float *C = t->codebook[l], *cn = t->cnorm[l];
		const size_t nv = n * nb;
		size_t nb_next = nb * (size_t)K < (size_t)W ? nb * (size_t)K : (size_t)W;
		const int nxt = cur ^ 1;

		for (size_t i = 0; i < n; i++)
			bb.ccnt[i] = 0;
		for (int k0 = 0; k0 < K; k0 += (int)kb) {
			const int kn = K - k0 < (int)kb ? K - k0 : (int)kb;
			sid__gemm_panels(C + (size_t)k0 * E, NULL, NULL, SID_ACT_IDENTITY, kn, E,
					 bb.r[cur], nv, bb.s);
			for (size_t i = 0; i < n; i++) {
				float *cscore = bb.cscore + i * W;
				int32_t *cpar = bb.cpar + i * W, *ck = bb.ck + i * W;
				size_t cnt = (size_t)bb.ccnt[i];
				for (size_t b = 0; b < nb; b++) {
					const size_t v = i * nb + b;
					const float *sp = panel_at(bb.s, v, kn);
					const int32_t *pc = bb.c[cur] + v * L;
					const float nrm = bb.nrm[cur][v];
					for (int kk = 0; kk < kn; kk++) {
						const int k = k0 + kk;
						float sc =
						    nrm +
						    (cn[k] - 2.0f * sp[(size_t)kk * SID__LANES]);
						size_t pos = cnt;
						/* Insertion into the sorted candidate list; the
						 * order is total, so the kept set does not depend
						 * on the order candidates arrive in. */
						while (pos > 0) {
							size_t q = pos - 1;
							int before;
							if (sc != cscore[q])
								before = sc < cscore[q];
							else
								before =
								    lex_cmp(pc, k,
									    bb.c[cur] +
										(i * nb + cpar[q]) *
										    L,
									    ck[q], l) < 0;
							if (!before)
								break;
							pos = q;
						}
						if (pos >= nb_next)
							continue;
						size_t last = cnt < nb_next ? cnt : nb_next - 1;
						for (size_t q = last; q > pos; q--) {
							cscore[q] = cscore[q - 1];
							cpar[q] = cpar[q - 1];
							ck[q] = ck[q - 1];
						}
						cscore[pos] = sc;
						cpar[pos] = (int32_t)b;
						ck[pos] = k;
						if (cnt < nb_next)
							cnt++;
					}
				}
				bb.ccnt[i] = (int32_t)cnt;
			}
		}
		for (size_t i = 0; i < n; i++) {
			const size_t cnt = (size_t)bb.ccnt[i];
			const int32_t *cpar = bb.cpar + i * W, *ck = bb.ck + i * W;
			/* Children: exact residuals, exactly as the greedy path. */
			for (size_t c = 0; c < cnt; c++) {
				const size_t v = i * nb + cpar[c], u = i * nb_next + c;
				const float *src = panel_at(bb.r[cur], v, E);
				float *dst = panel_at(bb.r[nxt], u, E);
				const float *cw = C + (size_t)ck[c] * E;
				for (int e = 0; e < E; e++)
					dst[(size_t)e * SID__LANES] =
					    src[(size_t)e * SID__LANES] - cw[e];
				bb.nrm[nxt][u] = sid__rq_sqnorm(dst, E, SID__LANES);
				memcpy(bb.c[nxt] + u * L, bb.c[cur] + v * L, sizeof(int32_t) * l);
				bb.c[nxt][u * L + l] = ck[c];
			}
		}
		zero_padding(bb.r[nxt], n * nb_next, E);
		nb = nb_next;
		cur = nxt;
	}

	/* Rank the final tuples by exact distance, drop the greedy one. */
	for (size_t i = 0; i < n; i++) {
		const int32_t *codes = bb.c[cur] + i * nb * L;
		const float *dist = bb.nrm[cur] + i * nb;
		int m = 0;

		for (size_t c = 0; c < nb; c++) {
			size_t pos = c;
			while (pos > 0) {
				int q = bb.order[pos - 1];
				int before = dist[c] != dist[q]
						 ? dist[c] < dist[q]
						 : lex_cmp(codes + c * L, 0, codes + (size_t)q * L,
							   0, L) < 0;
				if (!before)
					break;
				bb.order[pos] = q;
				pos--;
			}
			bb.order[pos] = (int32_t)c;
		}
		for (size_t c = 0; c < nb && m < n_alt; c++) {
			const int32_t *tc = codes + (size_t)bb.order[c] * L;
			if (!memcmp(tc, greedy + i * L, sizeof(int32_t) * L))
				continue;
			memcpy(alt_codes + (i * n_alt + m) * L, tc, sizeof(int32_t) * L);
			alt_dist[i * n_alt + m] = dist[bb.order[c]];
			m++;
		}
		alt_count[i] = m;
		for (int s = m; s < n_alt; s++) {
			for (int l = 0; l < L; l++)
				alt_codes[(i * n_alt + s) * L + l] = -1;
			alt_dist[i * n_alt + s] = INFINITY;
		}
	}
}
