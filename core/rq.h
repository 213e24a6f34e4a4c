/*
 * rq.h - residual quantisation of latents against a tower's codebooks:
 * the greedy code per row and, optionally, alternative code tuples from a
 * beam search.  Internal to the library (sid__ prefix); encode.c drives it
 * one chunk of rows at a time, on latents in the panel layout of mlp.h.
 *
 * Greedy, per level l: scores s_k = ||C_l[k]||^2 - 2 r.C_l[k] (the model's
 * cached norms; r.C_l from the deterministic panel GEMM), c_l = the lowest k
 * with the smallest s_k, then r -= C_l[c_l] elementwise in float.
 *
 * Beam (alternatives): width W = sid__rq_beam_width(n_alt).  Each row keeps
 * up to W partial tuples with their exact partial residuals.  At level l
 * every (tuple, k) extension is scored ||r||^2 + ||C_l[k]||^2 - 2 r.C_l[k]
 * (one GEMM over all beam residuals of the pass) and the best W are kept,
 * ties broken by the lexicographic order of the codes.  The residual of a
 * kept extension is its parent's minus C_l[k], computed exactly as the greedy
 * path does, and its ||r||^2 is recomputed from it.  After the last level
 * the kept tuples are ranked by their exact distance ||r_L||^2 (ties:
 * lexicographic codes), the greedy tuple is dropped, and the first n_alt
 * are the alternatives.  A beam search is a heuristic: an alternative may
 * even beat the greedy tuple, and with W smaller than the code space it may
 * miss a tuple that exhaustive search would rank higher; it is exact when W
 * is at least the number of prefixes of the first L - 1 levels (the product
 * of their K), since the last level then scores every full tuple.
 *
 * Thread-safety: pure functions over caller buffers.
 */
#ifndef SID_RQ_H
#define SID_RQ_H

#include <stddef.h>
#include <stdint.h>

#include "model.h"

/* Largest codebook of the tower. */
int sid__rq_kmax(const struct sid_tower *t);

/* Floats of scratch sid__rq_greedy needs for @n rows (codebooks are scored
 * in blocks of at most 2048 codewords, so this stays bounded for any K). */
size_t sid__rq_greedy_scratch(const struct sid_tower *t, size_t n);

/*
 * Greedy codes for @n rows whose residuals are in @r (panel layout, E
 * features, sid__panels(n) panels; updated in place to r_L).  @codes is
 * (n, L).  @s is scratch of sid__rq_greedy_scratch(t, n) floats.
 */
void sid__rq_greedy(const struct sid_tower *t, float *r, size_t n, int32_t *codes, float *s);

/* ||r||^2 of one residual of @E floats with element stride @stride, summed
 * in double in index order (the one definition of "distance"). */
float sid__rq_sqnorm(const float *r, int E, size_t stride);

/* q = C_0[c_0] + C_1[c_1] + .. (float adds in level order) for @n rows;
 * @quant is (n, E). */
void sid__rq_quant(const struct sid_tower *t, const int32_t *codes, size_t n, float *quant);

/* Beam width used for @n_alt alternatives: 2 * (n_alt + 1). */
int sid__rq_beam_width(int n_alt);

/*
 * Scratch sizing for the beam: at most @rows_max rows per pass; returns the
 * rows per pass actually used (>= 1, keeping the score matrix near 4 MiB) and
 * stores the floats of scratch that needs in *@floats.
 */
size_t sid__rq_beam_plan(const struct sid_tower *t, int n_alt, size_t rows_max, size_t *floats);

/*
 * Alternatives for @n rows (n <= the rows per pass of the plan) with latents
 * @z ((n, E) rows) and greedy codes @greedy ((n, L)).  Writes @alt_codes
 * ((n, n_alt, L)), @alt_dist ((n, n_alt)) and @alt_count ((n)); unused slots
 * get code -1 and distance +inf.  @scratch as sized by sid__rq_beam_plan.
 */
void sid__rq_beam(const struct sid_tower *t, const float *z, size_t n, int n_alt,
		  const int32_t *greedy, int32_t *alt_codes, float *alt_dist, int *alt_count,
		  float *scratch);

#endif
