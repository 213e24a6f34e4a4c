/*
 * adam.h - AdamW over a flat float block, global-norm gradient clipping and
 * the learning-rate schedule (linear warm-up, then cosine decay to a floor).
 *
 * The update is torch.optim.AdamW's, element by element (decoupled weight
 * decay first, then the bias-corrected Adam step):
 *   p <- p - lr*wd*p
 *   m <- b1*m + (1-b1)*g ;  v <- b2*v + (1-b2)*g^2
 *   p <- p - lr * (m / (1-b1^t)) / (sqrt(v / (1-b2^t)) + eps)
 * with t the 1-based step.  Parameters, gradients, m and v are parallel
 * blocks, so one call updates any contiguous range of named tensors.
 *
 * Thread-safety: pure functions on caller memory.
 */
#ifndef SID_TRAINER_ADAM_H
#define SID_TRAINER_ADAM_H

#include <stddef.h>

struct adamw_hparams {
	float lr, b1, b2, eps, weight_decay;
};

/* One AdamW step (step t >= 1) on @n elements. */
void adamw_update(float *p, const float *g, float *m, float *v, size_t n,
		  const struct adamw_hparams *h, long t);

/* Sum of squares of @n floats, accumulated in double (a fixed order). */
double adam_sumsq(const float *g, size_t n);

/* Multiply @n floats by @s. */
void adam_scale(float *g, size_t n, float s);

/*
 * The factor that clips a gradient of global norm @norm to @max_norm
 * (torch clip_grad_norm_: max_norm / (norm + 1e-6) when norm > max_norm,
 * else 1; max_norm <= 0 means no clipping).
 */
float adam_clip_factor(double norm, float max_norm);

/*
 * Learning rate at 0-based step @t of @total: lr*(t+1)/warmup during the
 * first @warmup steps, then cosine from lr down to lr*min_ratio at step
 * total-1, and lr*min_ratio after that.
 */
float adam_lr_at(long t, long total, long warmup, float lr, float min_ratio);

#endif
