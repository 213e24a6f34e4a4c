/*
 * eval.c - model evaluation (eval.h): code statistics, decoder
 * reconstruction, and item-side / cross-tower retrieval metrics, with the raw
 * content embeddings as the reference.
 *
 * Everything is batched: towers are encoded 4096 rows at a time through
 * core/encode.h, and retrieval scores a block of users against all
 * candidates with one sgemm, then keeps a top-50 list per user.
 */
#include "eval.h"

#include <cblas.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "encode.h"
#include "fsutil.h"
#include "json.h"
#include "progress.h"
#include "stop.h"

#define ENC_BATCH	 4096
#define ENC_BATCH_VALUES (ENC_BATCH * 1024u) /* at most, per buffer */
#define SCORE_BLOCK	 (16u << 20)	     /* floats of scores per sgemm block */

/* ---- code statistics ---- */

static int cmp_tuple(const void *a, const void *b, void *L)
{
	return memcmp(a, b, (size_t) * (int *)L * sizeof(int32_t));
}

int tr_code_stats(const int32_t *codes, size_t N, int L, const int *K, struct tr_code_stats *out,
		  struct sid_error *err)
{
	int32_t *copy = NULL;
	double *cnt = NULL;
	int Kmax = 0;

	memset(out, 0, sizeof(*out));
	if (L < 1 || L > TR_EVAL_MAX_LEVELS)
		return sid_error_set(err, SID_EINVAL, "code stats: %d levels unsupported", L);
	for (int l = 0; l < L; l++)
		Kmax = K[l] > Kmax ? K[l] : Kmax;
	copy = malloc((N ? N : 1) * L * sizeof(int32_t));
	cnt = malloc((size_t)Kmax * sizeof(double));
	if (!copy || !cnt) {
		free(copy);
		free(cnt);
		return sid_error_set(err, SID_ENOMEM, "code stats: out of memory for %zu rows", N);
	}
	out->n = N;
	out->L = L;
	for (int l = 0; l < L; l++) {
		long used = 0;
		double h = 0;
		memset(cnt, 0, (size_t)K[l] * sizeof(double));
		for (size_t i = 0; i < N; i++) {
			int32_t c = codes[i * L + l];
			if (c < 0 || c >= K[l]) {
				free(copy);
				free(cnt);
				return sid_error_set_at(err, SID_EINVAL, (long)i,
							"code stats: row %zu level %d code %d not "
							"in [0, %d)",
							i, l, c, K[l]);
			}
			/* 0 <= c < K[l] <= Kmax here, so cnt has room */
			/* NOLINTNEXTLINE(clang-analyzer-unix.Malloc) */
			cnt[c]++;
		}
		for (int k = 0; k < K[l]; k++) {
			if (cnt[k] > 0) {
				double p = cnt[k] / (double)N;
				used++;
				h -= p * log(p);
			}
		}
		out->utilization[l] = (double)used / K[l];
		out->perplexity[l] = exp(h);
	}
	memcpy(copy, codes, N * L * sizeof(int32_t));
	qsort_r(copy, N, (size_t)L * sizeof(int32_t), cmp_tuple, &L);
	for (size_t i = 0; i < N; i++)
		if (i == 0 || memcmp(copy + i * L, copy + (i - 1) * L, L * sizeof(int32_t)))
			out->unique++;
	out->collision_rate = N ? (double)(N - out->unique) / (double)N : 0;
	free(copy);
	free(cnt);
	return 0;
}

/* ---- progress ---- */

/* The work of one evaluation, in rough multiply-adds, done and to do: an
 * hour at 1M users and items, where it said nothing between its first line
 * and its last. */
struct work {
	struct tr_progress pg;
	double done, total;
	char stage[64]; /* what it does now, for the lines */
};

static void work_done(struct work *w, double units)
{
	double f, dt;

	if (!w)
		return;
	w->done += units;
	tr_progress_bar(&w->pg, "evaluating", w->done, w->total);
	if (w->done < w->total && tr_progress_line_due(&w->pg)) {
		f = w->total > 0 ? w->done / w->total : 0;
		dt = tr_progress_elapsed(&w->pg);
		fprintf(stderr, "evaluating: %s, %d%% done, %.1fs, about %.0fs left\n", w->stage,
			(int)(w->done * 100 / w->total), dt, f > 0 ? dt / f * (1 - f) : 0);
	}
}

/* ---- ranking ---- */

/*
 * The hits of one user's ranking (@s (n_cand) its candidates' scores, -inf
 * for one left out) as expected when tied candidates come in a random
 * order: a test item of score v with a candidates above it and t at v (it
 * too) is at each rank a..a+t-1 with chance 1/t.  Ties are common (items
 * of one semantic ID have one vector), and putting the lower id first made
 * the figures of a small codebook depend on how the items were numbered.
 * @tv (m >= 1): the scores of the user's test items among the candidates,
 * ascending; @gt, @eq (m + 1): work space.  Adds to @h10, @h50 and @dcg.
 */
static void expected_hits(const float *s, size_t n_cand, const float *tv, int m, long *gt, long *eq,
			  double *h10, double *h50, double *dcg)
{
	long above = 0;

	memset(gt, 0, (size_t)(m + 1) * sizeof(*gt));
	memset(eq, 0, (size_t)(m + 1) * sizeof(*eq));
	for (size_t c = 0; c < n_cand; c++) {
		float x = s[c];
		int lo = 0, hi, mid;
		if (x < tv[0]) /* most of them: below every test item (-inf too) */
			continue;
		for (hi = m; lo < hi;) { /* the first test score >= x */
			mid = (lo + hi) / 2;
			if (tv[mid] < x)
				lo = mid + 1;
			else
				hi = mid;
		}
		gt[lo]++; /* above test items 0..lo-1 */
		if (lo < m && tv[lo] == x)
			eq[lo]++; /* at the score of the run of equal ones from lo */
	}
	/* run by run of equal test scores, from the top: the items of a run
	 * share the candidates above them and their tie */
	for (int j = m - 1, g; j >= 0; j = g - 1) {
		for (g = j; g > 0 && tv[g - 1] == tv[j];)
			g--;
		above += gt[j + 1]; /* (gt[g + 1..j] are 0: no score is between) */
		double a = (double)above, t = (double)eq[g], n = j - g + 1, d = 0;
		*h10 += n * (a >= 10 ? 0 : (10 - a) / t < 1 ? (10 - a) / t : 1);
		*h50 += n * (a >= 50 ? 0 : (50 - a) / t < 1 ? (50 - a) / t : 1);
		for (long r = above; r < 10 && r < above + eq[g]; r++)
			d += 1.0 / log2(r + 2.0);
		*dcg += n * d / t;
	}
}

static int cmp_float(const void *a, const void *b)
{
	float x = *(const float *)a, y = *(const float *)b;
	return (x > y) - (x < y);
}

/* Distinct entries of CSR row @r. */
static long row_distinct(const struct tr_csr *c, size_t r)
{
	long n = 0;
	for (int64_t k = c->off[r]; k < c->off[r + 1]; k++)
		n += k == c->off[r] || c->idx[k] != c->idx[k - 1];
	return n;
}

/* Compare two rows of E floats by their bytes (context: {rows, E}). */
struct rows_ctx {
	const float *v;
	int E;
};

static int cmp_rows(const void *a, const void *b, void *ctx)
{
	const struct rows_ctx *c = ctx;
	int32_t i = *(const int32_t *)a, j = *(const int32_t *)b;
	int r =
	    memcmp(c->v + (size_t)i * c->E, c->v + (size_t)j * c->E, (size_t)c->E * sizeof(float));
	return r ? r : (i > j) - (i < j);
}

/*
 * The distinct rows of @v ((n, E)) into a new (n_u, E) array, and @map
 * (n) from each row to its distinct row.  Scoring distinct rows only makes
 * items with identical vectors (same semantic ID) tie exactly, whatever
 * sgemm kernel computed their column, so ties always go to the lower id.
 */
static float *distinct_rows(const float *v, size_t n, int E, int32_t *map, size_t *n_u)
{
	int32_t *ord = malloc((n ? n : 1) * sizeof(int32_t));
	float *u = malloc((n ? n : 1) * (size_t)E * sizeof(float));
	struct rows_ctx ctx = {v, E};
	size_t k = 0;
	if (!ord || !u) {
		free(ord);
		free(u);
		return NULL;
	}
	for (size_t i = 0; i < n; i++)
		ord[i] = (int32_t)i;
	qsort_r(ord, n, sizeof(int32_t), cmp_rows, &ctx);
	for (size_t i = 0; i < n; i++) {
		const float *row = v + (size_t)ord[i] * E;
		if (i == 0 || memcmp(row, u + (k - 1) * E, (size_t)E * sizeof(float)))
			memcpy(u + k++ * E, row, (size_t)E * sizeof(float));
		map[ord[i]] = (int32_t)(k - 1);
	}
	free(ord);
	*n_u = k;
	return u;
}

/* tr_rank_eval, counting @units of work done in @w (NULL: none) as it goes. */
static int rank_eval(const float *user_vec, size_t n_users, const float *item_vec,
		     const int32_t *cand, size_t n_cand, int E, const struct tr_csr *exclude,
		     const struct tr_csr *truth, struct tr_rank_metrics *out, struct work *w,
		     double units, struct sid_error *err)
{
	size_t block, *users = NULL, n_eval = 0, n_u = 0;
	float *scores = NULL, *su = NULL, *uniq = NULL, *tv = NULL;
	int32_t *pos = NULL, *map = NULL;
	long *gt = NULL, *eq = NULL, max_truth = 0;
	int32_t max_id = 0;
	double r10 = 0, r50 = 0, nd = 0;
	int rc = 0;

	memset(out, 0, sizeof(*out));
	if (n_cand == 0) {
		work_done(w, units);
		return 0;
	}
	for (size_t c = 0; c < n_cand; c++)
		max_id = cand[c] > max_id ? cand[c] : max_id;
	if (exclude)
		for (size_t r = 0; r < exclude->rows; r++)
			for (int64_t k = exclude->off[r]; k < exclude->off[r + 1]; k++)
				max_id = exclude->idx[k] > max_id ? exclude->idx[k] : max_id;
	block = SCORE_BLOCK / n_cand;
	block = block < 1 ? 1 : block > 1024 ? 1024 : block;
	users = malloc((n_users ? n_users : 1) * sizeof(size_t));
	scores = malloc(block * n_cand * sizeof(float));
	pos = malloc(((size_t)max_id + 1) * sizeof(int32_t));
	map = malloc(n_cand * sizeof(int32_t));
	uniq = map ? distinct_rows(item_vec, n_cand, E, map, &n_u) : NULL;
	su = malloc(block * (n_u ? n_u : 1) * sizeof(float));
	for (size_t u = 0; u < n_users && u < truth->rows; u++)
		max_truth = row_distinct(truth, u) > max_truth ? row_distinct(truth, u) : max_truth;
	tv = malloc((size_t)(max_truth + 1) * sizeof(*tv));
	gt = malloc((size_t)(max_truth + 1) * sizeof(*gt));
	eq = malloc((size_t)(max_truth + 1) * sizeof(*eq));
	if (!users || !scores || !pos || !uniq || !su || !tv || !gt || !eq) {
		rc = sid_error_set(err, SID_ENOMEM, "ranking: out of memory for %zu candidates",
				   n_cand);
		goto fail;
	}
	/* candidate position of each item id, -1 when not a candidate */
	for (int32_t i = 0; i <= max_id; i++)
		pos[i] = -1;
	for (size_t c = 0; c < n_cand; c++)
		pos[cand[c]] = (int32_t)c;
	/* a zero vector (an item-side profile of a user without train items)
	 * ties every candidate: it ranks nothing (its figures would be
	 * chance's), so it is left out */
	for (size_t u = 0; u < n_users && u < truth->rows; u++) {
		int zero = 1;
		if (truth->off[u + 1] == truth->off[u])
			continue;
		out->truth_users++;
		for (int d = 0; d < E && zero; d++)
			zero = user_vec[u * E + d] == 0.0f;
		if (!zero)
			users[n_eval++] = u;
	}
	/* the evaluated users' vectors, packed per block */
	float *ub = malloc(block * (size_t)E * sizeof(float));
	if (!ub) {
		rc = sid_error_set(err, SID_ENOMEM, "ranking: out of memory");
		goto fail;
	}
	for (size_t b0 = 0; b0 < n_eval; b0 += block) {
		size_t nb = n_eval - b0 < block ? n_eval - b0 : block;
		if (tr_stop_signal()) { /* the final evaluation runs for an hour at 1M */
			rc = tr_stop_error(err, "evaluation");
			break;
		}
		for (size_t k = 0; k < nb; k++)
			memcpy(ub + k * E, user_vec + users[b0 + k] * E, (size_t)E * sizeof(float));
		cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, (int)nb, (int)n_u, E, 1.0f, ub,
			    E, uniq, E, 0.0f, su, (int)n_u);
		for (size_t k = 0; k < nb; k++) {
			size_t u = users[b0 + k];
			float *s = scores + k * n_cand;
			for (size_t c = 0; c < n_cand; c++)
				s[c] = su[k * n_u + (size_t)map[c]];
			long n_truth = row_distinct(truth, u);
			double hits10 = 0, hits50 = 0, dcg = 0, idcg = 0;
			int m = 0;
			if (exclude && u < exclude->rows)
				for (int64_t e = exclude->off[u]; e < exclude->off[u + 1]; e++)
					if (pos[exclude->idx[e]] >= 0)
						s[pos[exclude->idx[e]]] = -INFINITY;
			/* the test items it can rank: candidates, not left out */
			for (int64_t q = truth->off[u]; q < truth->off[u + 1]; q++) {
				int32_t it = truth->idx[q];
				if ((q > truth->off[u] && it == truth->idx[q - 1]) || it > max_id ||
				    pos[it] < 0 || s[pos[it]] == -INFINITY)
					continue;
				tv[m++] = s[pos[it]];
			}
			if (m) {
				qsort(tv, (size_t)m, sizeof(*tv), cmp_float);
				expected_hits(s, n_cand, tv, m, gt, eq, &hits10, &hits50, &dcg);
			}
			for (long r = 0; r < (n_truth < 10 ? n_truth : 10); r++)
				idcg += 1.0 / log2(r + 2.0);
			r10 += hits10 / n_truth;
			r50 += hits50 / n_truth;
			nd += dcg / idcg;
		}
		work_done(w, units * (double)nb / (double)n_eval);
	}
	if (!n_eval)
		work_done(w, units);
	free(ub);
	if (rc < 0)
		goto fail;
	out->users = (long)n_eval;
	if (n_eval) {
		out->recall10 = r10 / n_eval;
		out->recall50 = r50 / n_eval;
		out->ndcg10 = nd / n_eval;
	}
fail:
	free(users);
	free(scores);
	free(pos);
	free(map);
	free(uniq);
	free(su);
	free(tv);
	free(gt);
	free(eq);
	return rc;
}

int tr_rank_eval(const float *user_vec, size_t n_users, const float *item_vec, const int32_t *cand,
		 size_t n_cand, int E, const struct tr_csr *exclude, const struct tr_csr *truth,
		 struct tr_rank_metrics *out, struct sid_error *err)
{
	return rank_eval(user_vec, n_users, item_vec, cand, n_cand, E, exclude, truth, out, NULL, 0,
			 err);
}

/* ---- towers ---- */

static void act_apply(enum sid_act a, float *x, size_t n)
{
	for (size_t i = 0; i < n; i++) {
		float v = x[i];
		switch (a) {
		case SID_ACT_RELU:
			x[i] = v > 0 ? v : 0;
			break;
		case SID_ACT_SILU:
			x[i] = v / (1.0f + expf(-v));
			break;
		case SID_ACT_GELU:
			x[i] = 0.5f * v * (1.0f + erff(v * 0.70710678118654752f));
			break;
		case SID_ACT_TANH:
			x[i] = tanhf(v);
			break;
		case SID_ACT_IDENTITY:
			break;
		}
	}
}

#define MAX_DEC 16

/* The decoder of one tower, copied out of the file (NULL when absent). */
struct decoder {
	int n;
	int in[MAX_DEC], out[MAX_DEC];
	float *w[MAX_DEC]; /* (out, in) */
	float *b[MAX_DEC]; /* (out) */
};

static void decoder_release(struct decoder *d)
{
	for (int i = 0; i < d->n; i++) {
		free(d->w[i]);
		free(d->b[i]);
	}
	memset(d, 0, sizeof(*d));
}

static int decoder_load(struct decoder *d, const struct sid_st_file *st, const char *tower, int E,
			int D, struct sid_error *err)
{
	char name[96];
	memset(d, 0, sizeof(*d));
	if (!st)
		return 0;
	for (int i = 0; i < MAX_DEC; i++) {
		const struct sid_st_tensor *w, *b;
		snprintf(name, sizeof(name), "%s.decoder.%d.weight", tower, i);
		w = sid_st_find(st, name);
		if (!w)
			break;
		if (w->dtype != SID_ST_F32 || w->ndim != 2 ||
		    w->shape[1] != (i ? d->out[i - 1] : E))
			goto bad;
		d->in[i] = (int)w->shape[1];
		d->out[i] = (int)w->shape[0];
		d->w[i] = malloc(w->nelem * sizeof(float));
		d->b[i] = calloc((size_t)d->out[i], sizeof(float));
		d->n = i + 1;
		if (!d->w[i] || !d->b[i]) {
			decoder_release(d);
			return sid_error_set(err, SID_ENOMEM, "%s: out of memory", name);
		}
		memcpy(d->w[i], w->data, w->nelem * sizeof(float));
		snprintf(name, sizeof(name), "%s.decoder.%d.bias", tower, i);
		b = sid_st_find(st, name);
		if (b) {
			if (b->dtype != SID_ST_F32 || b->nelem != (uint64_t)d->out[i])
				goto bad;
			memcpy(d->b[i], b->data, b->nelem * sizeof(float));
		}
	}
	if (d->n && d->out[d->n - 1] != D) {
		snprintf(name, sizeof(name), "%s.decoder.%d.weight", tower, d->n - 1);
		goto bad;
	}
	return 0;
bad:
	decoder_release(d);
	return sid_error_set(err, SID_EFORMAT,
			     "tensor %s: not an F32 layer chaining latent %d -> input %d", name, E,
			     D);
}

/* The work of encoding one row with @t (its decoder, if any, about as much
 * again, is left out). */
static double encode_units(const struct sid_tower *t)
{
	double u = 0;
	for (int i = 0; i < t->n_layers; i++)
		u += (double)t->layer[i].in * t->layer[i].out;
	for (int l = 0; l < t->L; l++)
		u += (double)t->K[l] * t->E;
	return u;
}

/* Encode every row of @emb with tower @t (named @tower in messages):
 * codes (N, L), quant (N, E); with a decoder, also the reconstruction error
 * sums.  The work goes into @w. */
static int encode_all(const struct sid_tower *t, const char *tower, const struct tr_emb *emb,
		      const struct decoder *dec, int32_t *codes, float *quant, double *sse,
		      struct work *w, struct sid_error *err)
{
	struct sid_workspace *ws = sid_workspace_new();
	float *x = NULL, *dist = NULL, *h[2] = {NULL, NULL};
	int hmax = emb->d, rc = 0;
	size_t batch;
	long bad;

	*sse = 0;
	for (int i = 0; i < dec->n; i++)
		hmax = dec->out[i] > hmax ? dec->out[i] : hmax;
	/* ENC_BATCH rows up to 1024 wide, fewer of a wider tower, never more
	 * than the file's: 4096 rows of 65536 took 3 GiB of buffers for a file
	 * of 5 rows too ("encode: out of memory" under ulimit -v 2 GiB) */
	batch = ENC_BATCH_VALUES / (size_t)hmax;
	batch = batch < ENC_BATCH ? batch : ENC_BATCH;
	batch = batch < emb->n ? batch : emb->n;
	batch = batch ? batch : 1;
	x = malloc(batch * emb->d * sizeof(float));
	dist = malloc(batch * sizeof(float));
	h[0] = malloc(batch * hmax * sizeof(float));
	h[1] = malloc(batch * hmax * sizeof(float));
	if (!ws || !x || !dist || !h[0] || !h[1]) {
		rc = sid_error_set(err, SID_ENOMEM, "encode: out of memory");
		goto fail;
	}
	if (emb->d != t->D) {
		rc = sid_error_set(err, SID_EINVAL, "%s: %d %s, the model's %s tower takes %d",
				   emb->path, emb->d, sid_plural(emb->d, "column", "columns"),
				   tower, t->D);
		goto fail;
	}
	for (size_t r0 = 0; r0 < emb->n; r0 += batch) {
		size_t B = emb->n - r0 < batch ? emb->n - r0 : batch;
		struct sid_encode_out o = {0};
		if (tr_stop_signal()) { /* the final evaluation runs for an hour at 1M */
			rc = tr_stop_error(err, "evaluation");
			goto fail;
		}
		o.codes = codes + r0 * t->L;
		o.quant = quant + r0 * t->E;
		o.dist = dist;
		rc = tr_emb_rows(emb, r0, B, x, err);
		if (rc == 0)
			rc = sid_encode(t, x, B, &o, ws, err);
		if (rc < 0) {
			sid_error_prefix(err, "%s: rows %zu..", emb->path, r0);
			goto fail;
		}
		/* codes of an overflowed row mean nothing: no figures from them */
		if ((bad = sid_encode_overflow(dist, NULL, NULL, 0, B)) >= 0) {
			rc = sid_error_set(err, SID_EINVAL,
					   "%s: row %zu: values too large for the model: its "
					   "encoder overflows float32 on them",
					   emb->path, r0 + (size_t)bad);
			goto fail;
		}
		work_done(w, (double)B * encode_units(t));
		if (!dec->n)
			continue;
		const float *in = quant + r0 * t->E;
		for (int i = 0; i < dec->n; i++) {
			float *o2 = h[i & 1];
			for (size_t b = 0; b < B; b++)
				memcpy(o2 + b * dec->out[i], dec->b[i],
				       dec->out[i] * sizeof(float));
			cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, (int)B, dec->out[i],
				    dec->in[i], 1.0f, in, dec->in[i], dec->w[i], dec->in[i], 1.0f,
				    o2, dec->out[i]);
			if (i < dec->n - 1)
				act_apply(t->act, o2, B * dec->out[i]);
			in = o2;
		}
		for (size_t b = 0; b < B; b++) {
			const float *xr = x + b * emb->d, *xh = in + b * emb->d;
			double n2 = 0, s = 1, e2 = 0;
			if (t->input_norm == SID_NORM_L2) {
				for (int k = 0; k < emb->d; k++)
					n2 += (double)xr[k] * xr[k];
				s = sid_l2_scale(n2); /* as the encoder scaled it */
			}
			for (int k = 0; k < emb->d; k++) {
				double dlt = xr[k] * s - xh[k];
				e2 += dlt * dlt;
			}
			*sse += e2;
		}
	}
fail:
	sid_workspace_free(ws);
	free(x);
	free(dist);
	free(h[0]);
	free(h[1]);
	return rc;
}

/* Rows of @v ((n, E)) scaled to unit length (zero rows stay zero). */
static void normalise_rows(float *v, size_t n, int E)
{
	for (size_t i = 0; i < n; i++) {
		double n2 = 0;
		for (int k = 0; k < E; k++)
			n2 += (double)v[i * E + k] * v[i * E + k];
		if (n2 > 0) {
			float s = (float)(1.0 / sqrt(n2));
			for (int k = 0; k < E; k++)
				v[i * E + k] *= s;
		}
	}
}

/* User profiles: mean of the (unit) item vectors of each user's train items. */
static void profiles(const struct tr_csr *by_user, const float *item_unit, int E, float *out)
{
	for (size_t u = 0; u < by_user->rows; u++) {
		float *p = out + u * E;
		int64_t n = by_user->off[u + 1] - by_user->off[u];
		memset(p, 0, (size_t)E * sizeof(float));
		for (int64_t k = by_user->off[u]; k < by_user->off[u + 1]; k++) {
			const float *q = item_unit + (size_t)by_user->idx[k] * E;
			for (int d = 0; d < E; d++)
				p[d] += q[d];
		}
		if (n > 0)
			for (int d = 0; d < E; d++)
				p[d] /= (float)n;
	}
}

/* A ranking's figures; null with no user to average over, where 0 would
 * read as a model that retrieves nothing. */
static json_t *metrics_json(const struct tr_rank_metrics *m)
{
	if (!m->users)
		return json_pack("{s:n, s:n, s:n, s:I}", "recall@10", "recall@50", "ndcg@10",
				 "users", (json_int_t)0);
	return json_pack("{s:f, s:f, s:f, s:I}", "recall@10", m->recall10, "recall@50", m->recall50,
			 "ndcg@10", m->ndcg10, "users", (json_int_t)m->users);
}

static json_t *stats_json(const struct tr_code_stats *s, const int *K, double sse, int D, int dec)
{
	json_t *o = json_object(), *lv = json_array();
	/* the caller's cs is filled: encode_all answers 0 or < 0 */
	/* NOLINTNEXTLINE(clang-analyzer-core.CallAndMessage) */
	json_object_set_new(o, "n", json_integer((json_int_t)s->n));
	json_object_set_new(o, "unique_ids", json_integer((json_int_t)s->unique));
	json_object_set_new(o, "collision_rate", json_real(s->collision_rate));
	for (int l = 0; l < s->L; l++)
		json_array_append_new(lv,
				      json_pack("{s:i, s:f, s:f}", "K", K[l], "utilization",
						s->utilization[l], "perplexity", s->perplexity[l]));
	json_object_set_new(o, "levels", lv);
	if (dec) {
		double per_row = s->n ? sse / (double)s->n : 0;
		json_object_set_new(o, "recon_sse", json_real(per_row));
		json_object_set_new(o, "recon_mse", json_real(per_row / D));
	} else {
		json_object_set_new(o, "recon_sse", json_null());
		json_object_set_new(o, "recon_mse", json_null());
	}
	return o;
}

/* The four figures (warm/cold) of one ranking as {"warm": .., "cold": ..}. */
struct split {
	const struct tr_csr *warm_truth, *cold_truth;
	const int32_t *all, *cold_ids;
	size_t n_all, n_cold;
	size_t warm_lines, cold_lines; /* of --test, --test-cold */
};

/*
 * Why the ranking @name of @split ("warm": --test, "cold": --test-cold, of
 * @lines lines) averaged over no user, said on stderr: its figures are null,
 * which alone does not tell an empty test set from users it could not rank.
 * @train is the users' train items; @cross: the users' own vectors were
 * ranked with, of @raw content (the --users rows) or quantized.
 */
static void note_no_users(const char *name, const char *split, size_t lines,
			  const struct tr_rank_metrics *m, const struct tr_csr *truth,
			  const struct tr_csr *train, int cross, int raw)
{
	const char *file = strcmp(split, "warm") ? "--test-cold" : "--test";
	long untrained = 0;

	fprintf(stderr, "evaluating: %s %s has no figures (null, \"users\": 0): ", name, split);
	if (!m->truth_users) {
		fprintf(stderr, "%s has no test line\n", file);
		return;
	}
	fprintf(stderr, "the %ld %s of the %zu %s %s ", m->truth_users,
		sid_plural(m->truth_users, "user", "users"), lines, file,
		sid_plural(lines, "line", "lines"));
	if (cross) {
		fprintf(stderr, "%s all-zero vectors (%s)\n",
			sid_plural(m->truth_users, "has", "have"),
			raw ? "their --users rows" : "their quantized latents");
		return;
	}
	for (size_t u = 0; u < truth->rows; u++)
		if (truth->off[u + 1] > truth->off[u] &&
		    (!train || u >= train->rows || train->off[u + 1] == train->off[u]))
			untrained++;
	if (untrained == m->truth_users)
		fprintf(stderr,
			"%s no --train click, and an item-side profile is the mean of a user's "
			"train items\n",
			sid_plural(m->truth_users, "has", "have"));
	else
		fprintf(stderr,
			"%s all-zero item-side profiles (%ld without a --train click, the rest's "
			"train items' %s summing to zero)\n",
			sid_plural(m->truth_users, "has", "have"), untrained,
			raw ? "--items rows" : "quantized latents");
}

/* The work of ranking @n_cand candidates for @n_users users: their scores
 * (sgemm), then a pass over the scores of each. */
static double rank_units(size_t n_users, size_t n_cand, int E)
{
	return (double)n_users * (double)n_cand * (E + 4);
}

/* The work of rank_family: item-side, and cross-tower too with @cross. */
static double family_units(const struct split *sp, size_t n_users, int E, int cross)
{
	double u = (sp->warm_truth ? rank_units(n_users, sp->n_all, E) : 0) +
		   (sp->cold_truth && sp->n_cold ? rank_units(n_users, sp->n_cold, E) : 0);
	return cross ? 2 * u : u;
}

/* The rankings of @name ("item_side", ...), their work counted in @w. */
static int rank_both(const struct split *sp, const char *name, const float *uvec, size_t n_users,
		     const float *ivec_warm, const float *ivec_cold, int E,
		     const struct tr_csr *exclude, int cross, int raw, json_t **out, struct work *w,
		     struct sid_error *err)
{
	struct tr_rank_metrics m;
	json_t *o = json_object();
	int rc;
	if (sp->warm_truth) {
		snprintf(w->stage, sizeof(w->stage), "ranking %s warm", name);
		rc = rank_eval(uvec, n_users, ivec_warm, sp->all, sp->n_all, E, exclude,
			       sp->warm_truth, &m, w, rank_units(n_users, sp->n_all, E), err);
		if (rc < 0)
			goto fail;
		if (!m.users)
			note_no_users(name, "warm", sp->warm_lines, &m, sp->warm_truth, exclude,
				      cross, raw);
		json_object_set_new(o, "warm", metrics_json(&m));
	}
	if (sp->cold_truth && sp->n_cold) {
		snprintf(w->stage, sizeof(w->stage), "ranking %s cold", name);
		rc = rank_eval(uvec, n_users, ivec_cold, sp->cold_ids, sp->n_cold, E, NULL,
			       sp->cold_truth, &m, w, rank_units(n_users, sp->n_cold, E), err);
		if (rc < 0)
			goto fail;
		if (!m.users)
			note_no_users(name, "cold", sp->cold_lines, &m, sp->cold_truth, exclude,
				      cross, raw);
		json_object_set_new(o, "cold", metrics_json(&m));
	}
	*out = o;
	return 0;
fail:
	json_decref(o);
	return rc;
}

/* Rows @ids of @v ((., E)) packed into a new array. */
static float *pack_rows(const float *v, const int32_t *ids, size_t n, int E)
{
	float *o = malloc((n ? n : 1) * (size_t)E * sizeof(float));
	if (o)
		for (size_t i = 0; i < n; i++)
			memcpy(o + i * E, v + (size_t)ids[i] * E, (size_t)E * sizeof(float));
	return o;
}

/* One family of rankings (quantized or raw) into @res under @prefix:
 * item-side, and cross-tower when @user_unit (of width @E too) is given. */
static int rank_family(const struct split *sp, const struct tr_eval_input *in, float *item_unit,
		       int E_item, float *user_unit, const char *prefix, json_t *res,
		       struct work *w, struct sid_error *err)
{
	size_t NU = in->users->n;
	float *prof = malloc(NU * (size_t)E_item * sizeof(float));
	float *cold_vec = pack_rows(item_unit, sp->cold_ids, sp->n_cold, E_item);
	float *warm_vec = pack_rows(item_unit, sp->all, sp->n_all, E_item);
	json_t *j = NULL;
	char key[64];
	int rc = 0, raw = prefix[0] != '\0';

	if (!prof || !cold_vec || !warm_vec) {
		rc = sid_error_set(err, SID_ENOMEM, "eval: out of memory");
		goto fail;
	}
	profiles(in->train_by_user, item_unit, E_item, prof);
	snprintf(key, sizeof(key), "%sitem_side", prefix);
	rc = rank_both(sp, key, prof, NU, warm_vec, cold_vec, E_item, in->train_by_user, 0, raw, &j,
		       w, err);
	if (rc < 0)
		goto fail;
	json_object_set_new(res, key, j);
	if (user_unit) {
		snprintf(key, sizeof(key), "%scross_tower", prefix);
		rc = rank_both(sp, key, user_unit, NU, warm_vec, cold_vec, E_item,
			       in->train_by_user, 1, raw, &j, w, err);
		if (rc < 0)
			goto fail;
		json_object_set_new(res, key, j);
	}
fail:
	free(prof);
	free(cold_vec);
	free(warm_vec);
	return rc;
}

/* Every row of the (N, D) embedding file @e, as float32, into a new *@out:
 * 0, or the code of what failed (@err says it, when given). */
static int emb_all(const struct tr_emb *e, float **out, struct sid_error *err)
{
	float *v = malloc(e->n * (size_t)e->d * sizeof(float));
	int rc;

	*out = NULL;
	if (!v)
		return sid_error_set(err, SID_ENOMEM, "%s: out of memory", e->path);
	if ((rc = tr_emb_rows(e, 0, e->n, v, err)) < 0) {
		free(v);
		return rc;
	}
	*out = v;
	return 0;
}

/*
 * With no cold set, the items that no train line clicks (held-out cold
 * items, most often) are warm candidates, and the warm figures are lower
 * than those of a run given its --cold-items (0.360 against 0.393 on
 * lastfm-2k): said, since nothing else shows it.  @flags is scratch (NI).
 */
static void note_unclicked(const struct tr_csr *train, uint8_t *flags, size_t NI)
{
	size_t n = NI;

	memset(flags, 0, NI);
	for (int64_t k = 0; train && k < train->off[train->rows]; k++)
		if (!flags[train->idx[k]]) {
			flags[train->idx[k]] = 1;
			n--;
		}
	memset(flags, 0, NI);
	if (n)
		fprintf(stderr,
			"evaluating: no cold set (--cold-items, --test-cold): the %zu %s with no "
			"--train click %s ranked as warm candidates too; give the "
			"--cold-items of the training run to compare with its figures\n",
			n, sid_plural(n, "item", "items"), sid_plural(n, "is", "are"));
}

int tr_eval_run(const struct tr_eval_input *in, json_t **out, struct sid_error *err)
{
	const struct sid_tower *tw[2] = {sid_model_tower(in->model, SID_TOWER_ITEM),
					 sid_model_tower(in->model, SID_TOWER_USER)};
	const struct tr_emb *emb[2] = {in->items, in->users};
	const char *names[2] = {"item", "user"};
	int32_t *codes[2] = {NULL, NULL}, *all = NULL, *cold_ids = NULL;
	float *quant[2] = {NULL, NULL}, *raw[2] = {NULL, NULL};
	struct tr_csr warm_truth = {0}, cold_truth = {0};
	struct decoder dec = {0};
	struct split sp = {0};
	struct work w = {0};
	uint8_t *cold_flags = NULL;
	json_t *res;
	size_t NI, NU;
	int rc = 0, ranks = in->test || in->test_cold, cross_q = 0, cross_raw = 0;

	*out = NULL;
	if (!in->model || !in->items || !in->users)
		return sid_error_set(err, SID_EINVAL,
				     "eval: a model and both towers' embeddings are required");
	res = json_object();
	NI = in->items->n;
	NU = in->users->n;
	tr_progress_start(&w.pg, in->progress.on, in->progress.tty, in->progress.every);
	if (!res) {
		rc = sid_error_set(err, SID_ENOMEM, "eval: out of memory");
		goto fail;
	}
	/* before any encoding: at scale that takes minutes */
	if (ranks && !tw[0]) {
		rc = sid_error_set(err, SID_EINVAL,
				   "retrieval figures (--test, --test-cold) need an item tower, "
				   "and the model has none");
		goto fail;
	}
	/* said before, not only after: it ranks every test user against every
	 * item, hours at the 1M scale, where a log showed nothing */
	fprintf(stderr,
		"evaluating: %zu test and %zu cold-test interactions, %zu %s against %zu %s\n",
		in->test ? in->test->n : 0, in->test_cold ? in->test_cold->n : 0, NU,
		sid_plural(NU, "user", "users"), NI, sid_plural(NI, "item", "items"));
	json_object_set_new(res, "model_version", json_string(in->model->version));
	/* candidates: the warm items (every item not cold) and the cold items;
	 * before the towers, so that the work ahead is known from the start */
	if (ranks) {
		cold_flags = calloc(NI, 1);
		all = malloc(NI * sizeof(int32_t));
		cold_ids = malloc(NI * sizeof(int32_t));
		if (!cold_flags || !all || !cold_ids) {
			rc = sid_error_set(err, SID_ENOMEM, "eval: out of memory");
			goto fail;
		}
		if (in->cold)
			memcpy(cold_flags, in->cold, NI);
		else if (in->test_cold)
			for (size_t k = 0; k < in->test_cold->n; k++)
				cold_flags[in->test_cold->item[k]] = 1;
		for (size_t i = 0; i < NI; i++) {
			if (cold_flags[i])
				cold_ids[sp.n_cold++] = (int32_t)i;
			else
				all[sp.n_all++] = (int32_t)i;
		}
		sp.all = all;
		sp.cold_ids = cold_ids;
		if (in->test && !in->cold && !in->test_cold)
			note_unclicked(in->train_by_user, cold_flags, NI);
		if (in->test) {
			rc = tr_csr_build(&warm_truth, NU, in->test->user, in->test->item,
					  in->test->n, err);
			if (rc < 0)
				goto fail;
			sp.warm_truth = &warm_truth;
			sp.warm_lines = in->test->n;
		}
		if (in->test_cold) {
			rc = tr_csr_build(&cold_truth, NU, in->test_cold->user, in->test_cold->item,
					  in->test_cold->n, err);
			if (rc < 0)
				goto fail;
			sp.cold_truth = &cold_truth;
			sp.cold_lines = in->test_cold->n;
		}
		/* cross-tower: users' and items' vectors compared, of one width */
		cross_q = tw[1] && tw[1]->E == tw[0]->E;
		cross_raw = in->users->d == in->items->d;
		w.total += family_units(&sp, NU, tw[0]->E, cross_q) +
			   family_units(&sp, NU, in->items->d, cross_raw);
	}
	for (int t = 0; t < 2; t++)
		if (tw[t])
			w.total += (double)emb[t]->n * encode_units(tw[t]);
	/* towers: codes, quantized latents, statistics, reconstruction */
	for (int t = 0; t < 2; t++) {
		struct tr_code_stats cs;
		double sse = 0;
		if (!tw[t])
			continue;
		snprintf(w.stage, sizeof(w.stage), "encoding the %s tower", names[t]);
		codes[t] = malloc(emb[t]->n * (size_t)tw[t]->L * sizeof(int32_t));
		quant[t] = malloc(emb[t]->n * (size_t)tw[t]->E * sizeof(float));
		if (!codes[t] || !quant[t]) {
			rc = sid_error_set(err, SID_ENOMEM, "eval: out of memory");
			goto fail;
		}
		rc = decoder_load(&dec, in->st, names[t], tw[t]->E, tw[t]->D, err);
		if (rc == 0)
			rc = encode_all(tw[t], names[t], emb[t], &dec, codes[t], quant[t], &sse, &w,
					err);
		if (rc == 0)
			rc = tr_code_stats(codes[t], emb[t]->n, tw[t]->L, tw[t]->K, &cs, err);
		if (rc < 0)
			goto fail;
		json_object_set_new(res, names[t],
				    stats_json(&cs, tw[t]->K, sse, tw[t]->D, dec.n > 0));
		decoder_release(&dec);
		normalise_rows(quant[t], emb[t]->n, tw[t]->E);
	}
	if (!ranks)
		goto done;
	rc = rank_family(&sp, in, quant[0], tw[0]->E, cross_q ? quant[1] : NULL, "", res, &w, err);
	if (rc < 0)
		goto fail;
	if ((rc = emb_all(in->items, &raw[0], err)) < 0 ||
	    (rc = emb_all(in->users, &raw[1], err)) < 0)
		goto fail;
	normalise_rows(raw[0], NI, in->items->d);
	normalise_rows(raw[1], NU, in->users->d);
	rc = rank_family(&sp, in, raw[0], in->items->d, cross_raw ? raw[1] : NULL, "raw_", res, &w,
			 err);
	if (rc < 0)
		goto fail;
done:
	tr_progress_clear(&w.pg);
	fprintf(stderr, "evaluation: %.2fs\n", tr_progress_elapsed(&w.pg));
	*out = res;
	res = NULL;
fail:
	if (rc < 0) /* its message starts a line, not the bar's end */
		tr_progress_clear(&w.pg);
	json_decref(res);
	decoder_release(&dec);
	for (int t = 0; t < 2; t++) {
		free(codes[t]);
		free(quant[t]);
		free(raw[t]);
	}
	tr_csr_release(&warm_truth);
	tr_csr_release(&cold_truth);
	free(cold_flags);
	free(all);
	free(cold_ids);
	return rc;
}

int tr_eval_files(const char *model_path, const char *items, const char *users, const char *train,
		  const char *test, const char *test_cold, const char *cold_items,
		  const struct tr_eval_progress *progress, struct sid_error *err)
{
	struct sid_model *model = NULL;
	struct sid_st_file st = {0};
	struct tr_data d;
	struct tr_inter t_warm = {0}, t_cold = {0};
	uint8_t *buf = NULL;
	size_t len = 0;
	json_t *res = NULL;
	int rc, have_data = 0;

	rc = tr_input_check(model_path, err);
	/* the decoders' tensors from the bytes the model came from: read twice,
	 * a training publishing over the file in between (a fixed --out,
	 * renamed into place) gave codes of one model with the decoders of the
	 * next, or, their widths apart, "tensor item.decoder.0.weight: not an
	 * F32 layer chaining ...", exit 2 */
	if (rc == 0)
		rc = sid_model_load_bytes(model_path, &model, &buf, &len, err);
	tr__test_hook_sleep("SEMID_TEST_EVAL_LOADED_DELAY_MS");
	if (rc == 0) /* refused as the server would refuse it */
		rc = sid_model_smoke(model, err);
	if (rc == 0)
		rc = sid_st_parse(buf, len, &st, err);
	if (rc < 0) {
		sid_error_name_file(err, model_path);
		goto fail;
	}
	rc = tr_data_load(&d, items, users, train, cold_items, err);
	if (rc < 0)
		goto fail;
	have_data = 1;
	rc = tr_tests_read(&d, test, test_cold, &t_warm, &t_cold, err);
	if (rc < 0)
		goto fail;
	struct tr_eval_input in = {
	    .model = model,
	    .st = &st,
	    .items = &d.items,
	    .users = &d.users,
	    .train_by_user = &d.by_user,
	    .test = test ? &t_warm : NULL,
	    .test_cold = test_cold ? &t_cold : NULL,
	    .cold = d.cold,
	    .progress = *progress,
	};
	rc = tr_eval_run(&in, &res, err);
	if (rc < 0)
		goto fail;
	json_object_set_new(res, "model", sid_json_path(model_path));
	char *s = json_dumps(res, JSON_INDENT(2) | JSON_REAL_PRECISION(6));
	if (!s) {
		rc = sid_error_set(err, SID_ENOMEM, "eval: out of memory");
		goto fail;
	}
	puts(s);
	free(s);
fail:
	json_decref(res);
	tr_inter_release(&t_warm);
	tr_inter_release(&t_cold);
	if (have_data)
		tr_data_release(&d);
	sid_st_file_release(&st);
	free(buf);
	sid_model_unref(model);
	return rc;
}
