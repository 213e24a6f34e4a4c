/*
 * mlp.h - the encoder's dense layers: a deterministic single-precision GEMM
 * over "panel" matrices, with bias and activation fused into its epilogue.
 * Internal to the library (sid__ prefix); encode.c and rq.c build on it.
 *
 * Why not cblas_sgemm: OpenBLAS picks kernels and blockings by matrix shape
 * and CPU (0.3.21 even gives different bits for identical rows inside one
 * call on Haswell kernels), so a row's result would depend on the batch it
 * came in.  The encoder promises it does not.  Here every output element is
 * one fixed chain acc = fma(w[k], x[k], acc) for k = 0, 1, .., in order,
 * starting from +0; then y = acc + b; then the activation.  Every code path
 * (AVX-512 micro-kernel, portable C, tails, any batch size, any thread)
 * evaluates exactly that chain, so results are bit-identical by construction.
 *
 * Panel layout: a (B, F) matrix is stored as ceil(B/16) panels of 16 rows,
 * each panel (F, 16) feature-major: element (i, f) lives at
 * p[(i / 16) * F * 16 + f * 16 + i % 16].  Rows past B in the last panel are
 * padding (kept finite, results ignored).  The kernel vectorises across the
 * 16 rows of a panel and broadcasts weights, so W is used in its natural
 * torch layout (out, in); for large batches it is first re-packed into
 * blocks of SID__NR output rows, (in, SID__NR) each, for contiguous reads.
 *
 * Thread-safety: all functions are pure over their arguments.
 */
#ifndef SID_MLP_H
#define SID_MLP_H

#include <stddef.h>

#include "model.h"

#define SID__LANES 16 /* rows per panel */
#define SID__NR	   12 /* output features per micro-kernel block */

/* Panels that hold @B rows: ceil(B / SID__LANES). */
static inline size_t sid__panels(size_t B)
{
	return (B + SID__LANES - 1) / SID__LANES;
}

/* Floats needed to pack a (n, k) weight matrix: ceil(n / NR) blocks of (k, NR). */
size_t sid__gemm_pack_size(int n, int k);

/* Pack @w ((n, k) row-major) into @wp: block jb holds rows jb*NR.. as (k, NR),
 * rows past n zero.  @wp has sid__gemm_pack_size(n, k) floats. */
void sid__gemm_pack(const float *w, int n, int k, float *wp);

/*
 * y = act(x . w^T + b) for @rows rows: @x is (rows, k) in panel layout
 * (sid__panels(rows) panels), @y is (rows, n) in panel layout (must not
 * overlap x).  @w is (n, k) row-major; @wp its packed form or NULL (then w is
 * read in place, which is cheaper for small batches).  @b is (n) or NULL for
 * zero.  @act is applied to every element (pass SID_ACT_IDENTITY for a last
 * layer or a score matrix).  Padding rows of y hold finite junk or zeros.
 * For a handful of rows a kernel vectorised across outputs is used (16x16
 * blocks of w transposed in registers); it evaluates the same chain.
 */
void sid__gemm_panels(const float *w, const float *wp, const float *b, enum sid_act act, int n,
		      int k, const float *x, size_t rows, float *y);

/*
 * Rows [0, rows) of @x ((rows, F), row stride @ld floats) into panels @p,
 * each value times its row's @scale ((rows), 1.0f for none); padding rows
 * zero.  One float multiply per value on every path, so exact and the same
 * everywhere.
 */
void sid__rows_to_panels(const float *x, size_t ld, size_t rows, int F, const float *scale,
			 float *p);

/* The first of @rows rows of @x ((rows, D)) holding NaN or +-Inf, with its
 * column in *@col; -1 when all are finite. */
long sid__first_nonfinite(const float *x, size_t rows, int D, int *col);

/* The activation of one value, exactly as the GEMM epilogue applies it
 * (relu: x > 0 ? x : 0; silu: x * (1 / (1 + exp(-x))); gelu: 0.5 x (1 +
 * erf(x / sqrt 2)); tanh; identity), for tests and references. */
float sid__act_apply(enum sid_act act, float v);

/* Which kernel the GEMM dispatches to on this CPU ("avx512", "avx2",
 * "generic"), for benchmark reports.  sid__gemm_force(1) makes it use the
 * portable path, (2) the portable path built for AVX2+FMA (when the CPU has
 * it), (0) the automatic choice; tests check all give identical bits.  Not
 * meant to be flipped while other threads encode. */
const char *sid__gemm_kernel_name(void);
void sid__gemm_force(int mode);

#endif
