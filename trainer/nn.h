/*
 * nn.h - the layers and losses of the DAS model (das.c), each as a
 * _forward / _backward pair on caller memory, checked against finite
 * differences in tests/trainer/check_nn.c.
 *
 * Conventions (llm.c style): row-major float tensors with a batch of B rows;
 * a function that takes a leading dimension (lda, ...) reads row b at
 * a + b*lda, so a half of a wider row (the ICDM [interest | conformity]
 * rows) is passed as a pointer plus the full row width.  Losses are means
 * over the batch of per-row sums over dimensions; a backward takes @g, the
 * derivative of the total objective with respect to that loss, and
 * ACCUMULATES (+=) into parameter and input gradients unless it says
 * "overwrites".  Every matrix product (layers, codebook distances,
 * similarity matrices) is one cblas_sgemm.
 *
 * Thread-safety: functions touch only their arguments; a state struct
 * (nn_rq, nn_sim) belongs to one thread.
 */
#ifndef SID_TRAINER_NN_H
#define SID_TRAINER_NN_H

#include <stddef.h>
#include <stdint.h>

#include "model.h"

/* ---- linear layer: y = x W^T + b, W (out, in) as torch nn.Linear ---- */

/* y (B, out) overwritten; @b may be NULL. */
void nn_linear_forward(float *y, const float *x, const float *w, const float *b, int B, int in,
		       int out);
/* dx (B, in) OVERWRITTEN (NULL: not wanted); dw (out, in) and db (out)
 * accumulated (db NULL: no bias). */
void nn_linear_backward(float *dx, float *dw, float *db, const float *dy, const float *x,
			const float *w, int B, int in, int out);

/* ---- activations (torch definitions; gelu is the erf form) ---- */
void nn_act_forward(enum sid_act act, float *y, const float *x, size_t n);
/* dx OVERWRITTEN (may alias dy): dx = dy * act'(x). */
void nn_act_backward(enum sid_act act, float *dx, const float *dy, const float *x, size_t n);

/* ---- reconstruction: mean over B of ||xh_b - x_b||^2 ---- */
double nn_mse_forward(const float *xh, const float *x, int B, int D);
/* dxh (B, D) OVERWRITTEN with g * 2 (xh - x) / B. */
void nn_mse_backward(float *dxh, const float *xh, const float *x, int B, int D, float g);

/* ---- residual quantizer with straight-through estimator ----
 * r_0 = z, c_l = argmin_k ||r_l - C_l[k]||^2 (ties: lowest k),
 * e_l = C_l[c_l], r_{l+1} = r_l - e_l, q = sum_l e_l.
 * Outputs: z_dec = z + sg(q - z) (value q; gradient to z only) for the
 * decoder, and z_al = q + z - sg(z) (value q; gradient to the codewords AND
 * to z) for the alignment.
 * Loss over the first n rows: mean_b sum_l ||sg(r_l) - e_l||^2
 *   + beta ||r_l - sg(e_l)||^2, with r_l = z - sum_{m<l} e_m (so the
 * commitment term also reaches earlier codewords).
 * Every sg(.) operand is kept in its own buffer (r0, e0, q0, z0).  Normally a
 * forward refreshes them (and the codes); with @frozen set, a forward keeps
 * the codes and the sg operands of the previous forward, which makes the
 * whole objective a smooth function of every parameter, for finite-difference
 * tests of the full model. */
struct nn_rq {
	int B, E, L, K; /* capacity B; current rows in nn_rq_forward */
	int frozen;
	int32_t *codes; /* (B, L) */
	float *r, *e;	/* (B, L, E) residual entering level l; chosen codeword */
	float *q;	/* (B, E) */
	float *r0, *e0; /* (B, L, E) sg copies */
	float *q0, *z0; /* (B, E) sg copies */
	float *dist;	/* (B, K) scratch */
	float *cnorm;	/* (K) scratch */
};
int nn_rq_init(struct nn_rq *s, int B, int E, int L, int K); /* 0 or SID_ENOMEM */
void nn_rq_release(struct nn_rq *s);
/* C[l] is (K, E).  z_dec / z_al (n_rows, E) overwritten (either may be NULL). */
void nn_rq_forward(struct nn_rq *s, int n_rows, const float *z, const float *const *C, float *z_dec,
		   float *z_al);
/* The quantizer loss over the first @n rows (mean over n). */
double nn_rq_loss_forward(const struct nn_rq *s, int n, float beta);
/* dz (n_rows, E) OVERWRITTEN = dz_dec + dz_al + commitment terms (either
 * input may be NULL = zero; dz_dec may cover only the first n_dec rows);
 * dC[l] (K, E) accumulated with the codebook, commitment and alignment
 * terms.  @g scales the quantizer loss (not dz_dec / dz_al). */
void nn_rq_backward(const struct nn_rq *s, int n_rows, int n, float beta, float g,
		    const float *dz_dec, int n_dec, const float *dz_al, float *dz,
		    float *const *dC);

/* ---- similarity losses over a (B, B) matrix ----
 * A state holds the (B, B) matrix and the inputs' normalised copies between
 * forward and backward. */
struct nn_sim {
	int cap; /* B capacity */
	int B, E;
	float *S;	  /* (B, B) logits, then probabilities */
	float *an, *cn;	  /* (B, E) normalised inputs (InfoNCE) */
	float *dan, *dcn; /* (B, E) scratch */
	float *na, *nc;	  /* (B) norms */
	float *rs, *cs;	  /* (B) row / column sums */
	int32_t *pairs;	  /* (n_pairs, 2) masked (row, column) entries */
	int n_pairs;
	size_t cap_pairs;
	int64_t *keys;	    /* (B) scratch */
	const float *a, *c; /* inputs of the last forward */
	int lda, ldc;
	float tau;
};
/* Room for batches up to B rows of width up to E. 0 or SID_ENOMEM. */
int nn_sim_init(struct nn_sim *s, int B, int E);
void nn_sim_release(struct nn_sim *s);

/* The negatives mask: entry (b, j) is left out when j != b and (ku[b] ==
 * ku[j] or ki[b] == ki[j]) (a negative that is really a positive).  ku or ki
 * may be NULL (ignored); both NULL: no mask.  Kept as a sparse list of
 * pairs; stays until the next call.  0 or SID_ENOMEM (then no mask). */
int nn_sim_set_mask(struct nn_sim *s, int B, const int32_t *ku, const int32_t *ki);
/* Whether entry (b, j) is masked (a linear scan; for tests). */
int nn_sim_masked(const struct nn_sim *s, int b, int j);

/* Symmetric InfoNCE with in-batch negatives on cosine / tau:
 * S[b][j] = cos(a_b, c_j) / tau; loss = 1/2 (mean_b CE(row b, target b)
 * + mean_j CE(column j, target j)), masked entries left out of both. */
double nn_infonce_forward(struct nn_sim *s, const float *a, int lda, const float *c, int ldc, int B,
			  int E, float tau);
void nn_infonce_backward(struct nn_sim *s, float g, float *da, int ldda, float *dc, int lddc);

/* In-batch softmax click loss: logit[b][j] = <u_b, v_j> - corr_j (corr NULL:
 * none); loss = mean_b CE(row b, target b), masked entries left out. */
double nn_click_forward(struct nn_sim *s, const float *u, int ldu, const float *v, int ldv,
			const float *corr, int B, int E);
void nn_click_backward(struct nn_sim *s, float g, float *du, int lddu, float *dv, int lddv);

/* ---- bias head: pred_b = <w, h_b> + bias; loss = mean_b (pred_b - t_b)^2 ---- */
double nn_head_forward(float *pred, const float *h, int ldh, const float *w, const float *bias,
		       const float *t, int B, int E);
void nn_head_backward(float *dh, int lddh, float *dw, float *dbias, const float *pred,
		      const float *h, int ldh, const float *w, const float *t, int B, int E,
		      float g);

/* ---- orthogonality: mean_b cos^2(a_b, c_b) ---- */
double nn_cos2_forward(const float *a, const float *c, int ld, int B, int E);
void nn_cos2_backward(float *da, float *dc, int ldd, const float *a, const float *c, int ld, int B,
		      int E, float g);

/* exp with ~2 ulp error, vectorisable and identical on every run. */
void nn_exp_inplace(float *x, size_t n);

#endif
