/*
 * kmeans.h - k-means++ seeding plus Lloyd iterations, used to initialise the
 * RQ-VAE codebooks on the first latents (das.c, level by level on
 * residuals).
 *
 * Deterministic: the result is a function of the data, K, the iteration cap
 * and the RNG state (and the OpenBLAS thread count, which fixes sgemm's
 * summation order).  Distances go through sgemm
 * (||x||^2 - 2 x.C^T + ||C||^2); ties go to the lowest index, as in the
 * encoder.  A cluster that goes empty is re-seeded with the point farthest
 * from its centroid.  With fewer distinct points than K the extra centroids
 * are copies of data points plus a small Gaussian jitter.
 *
 * Thread-safety: pure function of its arguments (the RNG is the caller's),
 * but for a stop asked for by a signal (stop.h), which it heeds between
 * k-means++ centres and between Lloyd iterations.
 */
#ifndef SID_TRAINER_KMEANS_H
#define SID_TRAINER_KMEANS_H

#include <stdint.h>

#include "err.h"
#include "rng.h"

/*
 * Cluster @n rows of @x ((n, E) row-major) into @K centroids ((K, E), written
 * to @cent).  @assign ((n) or NULL) receives each row's final cluster.
 * @iters is the Lloyd iteration cap (0: k-means++ seeding only); iteration
 * stops early when no assignment changes.  Returns 0, SID_EINVAL (n < 1,
 * K < 1, E < 1), SID_ENOMEM, or SID_EIO ("k-means stopped by SIGTERM")
 * when tr_stop_signal() is set (@cent then holds no usable codebook).  @inertia (or NULL) receives
 * the final sum of squared distances.
 */
int km_fit(const float *x, int n, int E, int K, int iters, struct rng *r, float *cent,
	   int32_t *assign, double *inertia, struct sid_error *err);

/*
 * Nearest centroid of each row (ties: lowest index) via sgemm; @d2 ((n) or
 * NULL) gets the squared distance (clamped at 0).  @work holds (n+1)*K floats.
 */
void km_assign(const float *x, int n, int E, const float *cent, int K, int32_t *assign, float *d2,
	       float *work);

#endif
