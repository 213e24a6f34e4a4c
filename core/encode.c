/*
 * encode.c - sid_encode: input checks, l2 normalisation, the MLP (mlp.h)
 * and residual quantisation (rq.h) over a batch, one chunk of rows at a
 * time so scratch stays cache-sized; plus the per-thread workspace and the
 * code formatter.  See encode.h for the contract.
 *
 * A batch is processed in chunks of CHUNK_ROWS rows.  Each chunk is turned
 * into the panel layout of mlp.h (normalising rows on the way), pushed
 * through the layers with the deterministic panel GEMM, quantised greedily in
 * place, and, when alternatives are wanted, handed to the beam search.
 * Every step is per-row arithmetic in a fixed order, so chunking, batch size
 * and threads never change a bit of the result.
 */
#include "encode.h"

#include <float.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "mlp.h"
#include "rq.h"

#ifndef CHUNK_ROWS
#define CHUNK_ROWS 256 /* rows per pass through the layers (16 panels) */
#endif
#ifndef PACK_MIN_ROWS
#define PACK_MIN_ROWS 1024 /* from this batch size on, weights are packed once per call */
#endif

struct sid_workspace {
	void *mem;  /* 64-byte aligned */
	size_t cap; /* bytes */
};

struct sid_workspace *sid_workspace_new(void)
{
	return calloc(1, sizeof(struct sid_workspace));
}

void sid_workspace_free(struct sid_workspace *ws)
{
	if (!ws)
		return;
	free(ws->mem);
	free(ws);
}

static int ws_reserve(struct sid_workspace *ws, size_t floats, struct sid_error *err)
{
	size_t bytes;

	if (floats > SIZE_MAX / sizeof(float) - 64)
		return sid_error_set(err, SID_ENOMEM, "encode workspace: size overflows");
	bytes = (floats * sizeof(float) + 63) & ~(size_t)63;
	if (ws->cap >= bytes)
		return 0;
	free(ws->mem);
	ws->cap = 0;
	ws->mem = aligned_alloc(64, bytes);
	if (!ws->mem)
		return sid_error_set(err, SID_ENOMEM, "encode workspace: cannot allocate %zu bytes",
				     bytes);
	ws->cap = bytes;
	return 0;
}

/* Shape checks on a tower (hand-built ones in tests and tools included). */
static int tower_check(const struct sid_tower *t, int *hmax, struct sid_error *err)
{
	if (!t || !t->present)
		return sid_error_set(err, SID_EINVAL, "encode: tower not present");
	if (t->n_layers < 1 || t->n_layers > SID_MAX_LAYERS || t->L < 1 || t->L > SID_MAX_LEVELS)
		return sid_error_set(err, SID_EINVAL, "encode: tower has %d layers and %d levels",
				     t->n_layers, t->L);
	*hmax = 0;
	for (int i = 0; i < t->n_layers; i++) {
		const struct sid_layer *ly = &t->layer[i];
		int want_in = i ? t->layer[i - 1].out : t->D;
		if (ly->in != want_in || ly->out < 1 || ly->out > SID_MAX_DIM || !ly->w)
			return sid_error_set(err, SID_EINVAL,
					     "encode: layer %d shape (%d, %d) invalid", i, ly->out,
					     ly->in);
		if (ly->out > *hmax)
			*hmax = ly->out;
	}
	if (t->D < 1 || t->D > SID_MAX_DIM || t->E != t->layer[t->n_layers - 1].out)
		return sid_error_set(err, SID_EINVAL, "encode: tower dims D=%d E=%d invalid", t->D,
				     t->E);
	for (int l = 0; l < t->L; l++)
		if (t->K[l] < 1 || t->K[l] > SID_MAX_CODEBOOK || !t->codebook[l] || !t->cnorm[l])
			return sid_error_set(err, SID_EINVAL, "encode: codebook %d invalid", l);
	return 0;
}

/* ||x||^2 of one row in double, eight interleaved partial sums combined in a
 * fixed tree (fast and still one fixed order). */
static double row_sqnorm(const float *x, int D)
{
	double a[8] = {0};
	int f = 0;
	for (; f + 8 <= D; f += 8)
		for (int j = 0; j < 8; j++)
			a[j] += (double)x[f + j] * (double)x[f + j];
	for (; f < D; f++)
		a[0] += (double)x[f] * (double)x[f];
	return ((a[0] + a[1]) + (a[2] + a[3])) + ((a[4] + a[5]) + (a[6] + a[7]));
}

float sid_l2_scale(double sqnorm)
{
	return (float)(1.0 / fmax(sqrt(sqnorm), 1e-12));
}

/* Rows [0, n) of @x ((n, D)) into panels @xp, l2-normalised when asked
 * (@scale: n floats of scratch). */
static void input_panels(const struct sid_tower *t, const float *x, size_t n, float *scale,
			 float *xp)
{
	for (size_t i = 0; i < n; i++) {
		scale[i] = 1.0f;
		if (t->input_norm == SID_NORM_L2) {
			scale[i] = sid_l2_scale(row_sqnorm(x + i * t->D, t->D));
		}
	}
	sid__rows_to_panels(x, (size_t)t->D, n, t->D, scale, xp);
}

static int out_check(const struct sid_encode_out *out, struct sid_error *err)
{
	if (!out || !out->codes)
		return sid_error_set(err, SID_EINVAL, "encode: no output buffer for codes");
	if (out->n_alt < 0 || out->n_alt > SID_TOPK_MAX - 1)
		return sid_error_set(err, SID_EINVAL, "encode: n_alt %d outside 0..%d", out->n_alt,
				     SID_TOPK_MAX - 1);
	if (out->n_alt > 0 && (!out->alt_codes || !out->alt_dist || !out->alt_count))
		return sid_error_set(err, SID_EINVAL,
				     "encode: n_alt %d needs alt_codes, alt_dist and alt_count",
				     out->n_alt);
	return 0;
}

long sid_encode_overflow(const float *dist, const float *alt_dist, const int *alt_count, int n_alt,
			 size_t B)
{
	for (size_t i = 0; i < B; i++) {
		int ok = isfinite(dist[i]);
		for (int k = 0; ok && alt_dist && k < alt_count[i]; k++)
			ok = isfinite(alt_dist[i * (size_t)n_alt + (size_t)k]);
		if (!ok)
			return (long)i;
	}
	return -1;
}

int sid_encode(const struct sid_tower *t, const float *x, size_t B, struct sid_encode_out *out,
	       struct sid_workspace *ws, struct sid_error *err)
{
	int hmax = 0, rc, col = 0;
	long bad;
	size_t ch, P, beam_rows = 0, beam_floats = 0, need;
	float *xp, *h[2], *s, *zrows, *beam, *scale, *wp[SID_MAX_LAYERS];

	if ((rc = tower_check(t, &hmax, err)) || (rc = out_check(out, err)))
		return rc;
	if (!ws)
		return sid_error_set(err, SID_EINVAL, "encode: no workspace");
	if (B == 0)
		return 0;
	if (!x)
		return sid_error_set(err, SID_EINVAL, "encode: no input");
	bad = sid__first_nonfinite(x, B, t->D, &col);
	if (bad >= 0)
		return sid_error_set_at(err, SID_EINVAL, bad,
					"input row %ld, column %d: value is not finite", bad, col);

	const int E = t->E, L = t->L, n_alt = out->n_alt;
	ch = B < CHUNK_ROWS ? B : CHUNK_ROWS;
	P = sid__panels(ch);
	if (n_alt > 0)
		beam_rows = sid__rq_beam_plan(t, n_alt, ch, &beam_floats);
	const size_t sz_x = P * SID__LANES * (size_t)t->D, sz_h = P * SID__LANES * (size_t)hmax;
	const size_t sz_s = sid__rq_greedy_scratch(t, ch), sz_z = ch * (size_t)E;
	size_t sz_pack[SID_MAX_LAYERS] = {0}, sz_packs = 0;
	if (B >= PACK_MIN_ROWS)
		for (int li = 0; li < t->n_layers; li++) {
			sz_pack[li] = sid__gemm_pack_size(t->layer[li].out, t->layer[li].in);
			sz_packs += (sz_pack[li] + 15) & ~(size_t)15;
		}
	need = sz_x + 2 * sz_h + sz_s + sz_z + beam_floats + sz_packs + ch + 7 * 16;
	if ((rc = ws_reserve(ws, need, err)))
		return rc;
	/* Carve, keeping each region 64-byte aligned. */
	{
		float *m = ws->mem;
		size_t off = 0;
#define CARVE(p, n)                                                                                \
	do {                                                                                       \
		(p) = m + off;                                                                     \
		off += ((n) + 15) & ~(size_t)15;                                                   \
	} while (0)
		CARVE(xp, sz_x);
		CARVE(h[0], sz_h);
		CARVE(h[1], sz_h);
		CARVE(s, sz_s);
		CARVE(zrows, sz_z);
		CARVE(beam, beam_floats);
		CARVE(scale, ch);
		for (int li = 0; li < t->n_layers; li++) {
			wp[li] = NULL;
			if (sz_pack[li]) {
				CARVE(wp[li], sz_pack[li]);
				sid__gemm_pack(t->layer[li].w, t->layer[li].out, t->layer[li].in,
					       wp[li]);
			}
		}
#undef CARVE
	}

	for (size_t i0 = 0; i0 < B; i0 += ch) {
		const size_t n = B - i0 < ch ? B - i0 : ch;
		const float *cur = xp;
		float *r = NULL;
		int32_t *codes = out->codes + i0 * L;

		input_panels(t, x + i0 * t->D, n, scale, xp);
		for (int li = 0; li < t->n_layers; li++) {
			const struct sid_layer *ly = &t->layer[li];
			int last = li == t->n_layers - 1;
			r = h[li & 1];
			sid__gemm_panels(ly->w, wp[li], ly->b, last ? SID_ACT_IDENTITY : t->act,
					 ly->out, ly->in, cur, n, r);
			cur = r;
		}
		if (out->latent || n_alt > 0) {
			for (size_t i = 0; i < n; i++)
				for (int e = 0; e < E; e++)
					zrows[i * E + e] =
					    r[(i / SID__LANES) * (size_t)E * SID__LANES +
					      (size_t)e * SID__LANES + i % SID__LANES];
			if (out->latent)
				memcpy(out->latent + i0 * E, zrows, sizeof(float) * n * E);
		}
		sid__rq_greedy(t, r, n, codes, s);
		if (out->dist)
			for (size_t i = 0; i < n; i++)
				out->dist[i0 + i] = sid__rq_sqnorm(
				    r + (i / SID__LANES) * (size_t)E * SID__LANES + i % SID__LANES,
				    E, SID__LANES);
		if (out->quant)
			sid__rq_quant(t, codes, n, out->quant + i0 * E);
		for (size_t j = 0; n_alt > 0 && j < n; j += beam_rows) {
			size_t m = n - j < beam_rows ? n - j : beam_rows;
			size_t row = i0 + j;
			sid__rq_beam(t, zrows + j * E, m, n_alt, codes + j * L,
				     out->alt_codes + row * n_alt * L, out->alt_dist + row * n_alt,
				     out->alt_count + row, beam);
		}
	}
	return 0;
}

/*
 * Which part of @t overflows float32 on the row @x: the index of the first
 * layer whose output (summed in double) does, or -1 when none does and the
 * codebook search is where it overflows; -2 out of memory.  Only for the
 * smoke encode's message, which named the tower alone.
 */
static int overflow_layer(const struct sid_tower *t, const float *x)
{
	int w = t->D > t->H_max ? t->D : t->H_max, at = -1;
	float *h = malloc(2 * (size_t)w * sizeof(float)), *y;

	if (!h)
		return -2;
	y = h + w;
	memcpy(h, x, (size_t)t->D * sizeof(float));
	for (int li = 0; li < t->n_layers && at < 0; li++) {
		const struct sid_layer *ly = &t->layer[li];
		for (int j = 0; j < ly->out && at < 0; j++) {
			double s = ly->b[j];
			for (int i = 0; i < ly->in; i++)
				s += (double)ly->w[(size_t)j * ly->in + i] * h[i];
			if (!(fabs(s) <= FLT_MAX))
				at = li;
			y[j] = li == t->n_layers - 1 ? (float)s : sid__act_apply(t->act, (float)s);
		}
		memcpy(h, y, (size_t)ly->out * sizeof(float));
	}
	free(h);
	return at;
}

int sid_model_smoke(const struct sid_model *m, struct sid_error *err)
{
	static const char *const row_name[3] = {"a zero row",
						"the unit-norm row with every value +1/sqrt(D)",
						"the unit-norm row with every value -1/sqrt(D)"};
	struct sid_workspace *ws = sid_workspace_new();
	float *x = NULL;
	int rc = 0;

	if (!ws)
		return sid_error_set(err, SID_ENOMEM, "smoke encode: out of memory");
	for (int k = 0; k < SID_TOWER_COUNT && !rc; k++) {
		const struct sid_tower *t = sid_model_tower(m, (enum sid_tower_kind)k);
		const char *tn = sid_tower_name((enum sid_tower_kind)k);
		int32_t codes[3 * SID_MAX_LEVELS];
		float dist[3], u;
		struct sid_encode_out o;

		if (!t)
			continue;
		free(x);
		if (!(x = malloc(3 * (size_t)t->D * sizeof(float)))) {
			rc = sid_error_set(err, SID_ENOMEM, "smoke encode: out of memory");
			break;
		}
		u = (float)(1.0 / sqrt((double)t->D));
		for (int d = 0; d < t->D; d++) {
			x[d] = 0.0f;
			x[t->D + d] = u;
			x[2 * t->D + d] = -u;
		}
		memset(&o, 0, sizeof(o));
		o.codes = codes;
		o.dist = dist;
		if ((rc = sid_encode(t, x, 3, &o, ws, err))) {
			sid_error_prefix(err, "smoke encode of the %s tower", tn);
			break;
		}
		for (int i = 0; i < 3 && !rc; i++) {
			for (int l = 0; l < t->L && !rc; l++)
				if (codes[i * t->L + l] < 0 || codes[i * t->L + l] >= t->K[l])
					rc = sid_error_set(err, SID_EFORMAT,
							   "smoke encode of the %s tower: %s gave "
							   "code %d at level %d (K = %d)",
							   tn, row_name[i],
							   (int)codes[i * t->L + l], l, t->K[l]);
			if (!rc && !isfinite(dist[i])) {
				int at = overflow_layer(t, x + (size_t)i * t->D);
				char where[160];
				if (at >= 0)
					snprintf(where, sizeof(where),
						 "at its layer %d (%s.encoder.%d.weight and .bias: "
						 "too large)",
						 at, tn, at);
				else
					snprintf(where, sizeof(where), "%s",
						 at == -1
						     ? "in the distances of the codebook search "
						       "(its latent or codebooks too large)"
						     : "in a layer or the codebook search");
				rc = sid_error_set(
				    err, SID_EFORMAT,
				    "smoke encode of the %s tower: %s overflows "
				    "float32 in the encoder, %s: every ordinary input "
				    "would be refused",
				    tn, row_name[i], where);
			}
		}
	}
	free(x);
	sid_workspace_free(ws);
	return rc;
}

double sid_encode_flops_per_row(const struct sid_tower *t)
{
	double f = 0.0;

	if (!t || !t->present)
		return 0.0;
	for (int i = 0; i < t->n_layers; i++)
		f += 2.0 * t->layer[i].in * t->layer[i].out;
	for (int l = 0; l < t->L; l++)
		f += 2.0 * t->E * t->K[l];
	return f;
}

/* @v in decimal at @o (at most 11 bytes); returns the bytes written. */
static int put_int(char *o, int32_t v)
{
	uint32_t u = v < 0 ? 0u - (uint32_t)v : (uint32_t)v;
	char rev[10];
	int n = 0, k = 0;

	do
		rev[n++] = (char)('0' + u % 10);
	while (u /= 10);
	if (v < 0)
		o[k++] = '-';
	while (n)
		o[k++] = rev[--n];
	return k;
}

int sid_codes_format(const int32_t *codes, int L, enum sid_sid_format fmt, char *buf, size_t len)
{
	size_t total = 0;

	if (!codes || L < 0 || L > SID_MAX_LEVELS || (!buf && len))
		return -1;
	if (len)
		buf[0] = '\0';
	/* No snprintf: the server writes a sid into every result it answers. */
	for (int l = 0; l < L; l++) {
		char piece[16];
		int k = 0;
		if (fmt == SID_FORMAT_TOKENS) {
			piece[k++] = '<';
			piece[k++] = (char)('a' + l);
			piece[k++] = '_';
			k += put_int(piece + k, codes[l]);
			piece[k++] = '>';
		} else {
			if (l)
				piece[k++] = '-';
			k += put_int(piece + k, codes[l]);
		}
		if (total < len) {
			size_t room = len - total;
			size_t copy = (size_t)k < room - 1 ? (size_t)k : room - 1;
			/* total < len only when len > 0, and then buf holds len bytes */
			/* NOLINTNEXTLINE(clang-analyzer-core.NonNullParamChecker) */
			memcpy(buf + total, piece, copy);
			buf[total + copy] = '\0';
		}
		total += (size_t)k;
	}
	return (int)total;
}
