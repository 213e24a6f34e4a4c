/*
 * encode.h - embeddings to semantic IDs (the exact semantics are in
 * proto/model-format.md, "Encoding").
 *
 * For a tower: x (D floats) -> l2-normalise if input_norm is l2 -> MLP -> z
 * (E floats) -> greedy residual quantisation over L levels: c_l = argmin_k
 * ||r_l - C_l[k]||^2 (ties: the lowest k), r_{l+1} = r_l - C_l[c_l].  The
 * result is the codes, the quantised latent q = sum of chosen codewords, and
 * ||r_L||^2.  Optionally up to top_k - 1 alternatives: the next best full code
 * tuples by final distance from a beam search over levels (beam width >=
 * top_k), never repeating the greedy tuple.
 *
 * Batches run through a single-precision GEMM (layers; distances via
 * ||C||^2 - 2 r.C^T with the model's cached codeword norms), not per-item
 * loops.  The GEMM is the library's own (core/mlp.h), not OpenBLAS: every
 * output element is one fused multiply-add chain in a fixed order, so results
 * for a row do not depend on the batch it came in, on the thread that ran it
 * or on the CPU's vector width (OpenBLAS sgemm gives different bits for the
 * same row at different batch sizes).
 *
 * Thread-safety: sid_encode may run concurrently on one model; each thread
 * needs its own workspace.  One call runs on the calling thread only (it does
 * not use OpenBLAS threads); use several threads with a workspace each to
 * use several cores, as `semid encode` and the server do.
 */
#ifndef SID_ENCODE_H
#define SID_ENCODE_H

#include <stddef.h>
#include <stdint.h>

#include "err.h"
#include "model.h"

#define SID_TOPK_MAX 16

struct sid_encode_out {
	int32_t *codes;	    /* (B, L), required */
	float *dist;	    /* (B) ||z - q||^2, or NULL */
	float *quant;	    /* (B, E) q, or NULL */
	float *latent;	    /* (B, E) z before quantisation, or NULL */
	int n_alt;	    /* alternatives wanted per row: top_k - 1, 0..SID_TOPK_MAX-1 */
	int32_t *alt_codes; /* (B, n_alt, L), best first; needed when n_alt > 0 */
	float *alt_dist;    /* (B, n_alt) */
	int *alt_count;	    /* (B) alternatives found (< n_alt when the code space is small) */
};

/* Per-thread scratch, grown on demand; new gives NULL when out of memory,
 * and sid_workspace_free(NULL) is a no-op. */
struct sid_workspace;
struct sid_workspace *sid_workspace_new(void);
void sid_workspace_free(struct sid_workspace *ws);

/*
 * Encode @B rows of @x ((B, D) row-major) with tower @t.  Rows holding a
 * non-finite value make it fail with SID_EINVAL, err->index = the row within
 * this batch, and nothing written.  Returns 0 or a negative SID_E* code.
 */
int sid_encode(const struct sid_tower *t, const float *x, size_t B, struct sid_encode_out *out,
	       struct sid_workspace *ws, struct sid_error *err);

/*
 * The first of @B rows of an encode whose distance @dist[i] (or one of its
 * @alt_count[i] alternatives' in @alt_dist, (B, n_alt), when given) is not
 * finite, or -1.  Such a row's input is finite, but so large that the
 * tower's layers overflowed float32 on it: its codes mean nothing, and the
 * caller refuses it (the input is too large for the model).
 */
long sid_encode_overflow(const float *dist, const float *alt_dist, const int *alt_count, int n_alt,
			 size_t B);

/*
 * Encode a few ordinary rows with every tower of @m: a zero row and the two
 * unit-norm rows with every value +1/sqrt(D) and -1/sqrt(D).  0 when each
 * gives codes in range and a finite distance; else SID_EFORMAT, @err naming
 * the tower and the row.  A model that overflows float32 on a unit-norm row
 * (finite but huge weights, as from a diverged training run) would refuse
 * every ordinary input, so whoever loads a model to use it runs this first
 * (the server before a swap, `semid inspect`, `encode`, `registry`, and
 * `semid-train eval`).  Any thread: it only reads @m.
 */
int sid_model_smoke(const struct sid_model *m, struct sid_error *err);

/* The input_norm l2 factor of a row with squared norm @sqnorm:
 * 1 / max(||x||, 1e-12) as float, as torch's F.normalize.  The trainer uses
 * it too, so that training sees the rows the served model will. */
float sid_l2_scale(double sqnorm);

/* Floating-point operations one row costs (MLP + codebook search at top_k 1),
 * for throughput reporting. */
double sid_encode_flops_per_row(const struct sid_tower *t);

/* Format codes as "12-7-200" (dash) or "<a_12><b_7><c_200>" (tokens; level
 * letters a..p).  Returns the length written (snprintf semantics: the full
 * length even when cut short to fit @len), or -1 when @codes is NULL, @L is
 * not 0..SID_MAX_LEVELS, or @buf is NULL with a nonzero @len. */
enum sid_sid_format { SID_FORMAT_DASH, SID_FORMAT_TOKENS };
int sid_codes_format(const int32_t *codes, int L, enum sid_sid_format fmt, char *buf, size_t len);

#endif
