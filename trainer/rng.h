/*
 * rng.h - a small deterministic PRNG for training (xoshiro256** seeded
 * through splitmix64).  Every random choice the trainer makes (initial
 * weights, k-means++ seeding, dead-code reset, shuffling) draws from one of
 * these, so a run is a pure function of its seed.  The state is four u64s:
 * checkpoints save and restore it verbatim.
 *
 * Thread-safety: a struct rng belongs to one thread.
 */
#ifndef SID_TRAINER_RNG_H
#define SID_TRAINER_RNG_H

#include <stdint.h>

struct rng {
	uint64_t s[4];
};

/* One splitmix64 step (Vigna): advances *@state, returns its next output.
 * Seeds the generator below, and is the trainer's generator for shuffles
 * and its fingerprints. */
uint64_t tr_splitmix64(uint64_t *state);

/* Seed from one u64 (any value, 0 included). */
void rng_seed(struct rng *r, uint64_t seed);
uint64_t rng_u64(struct rng *r);
/* Uniform in [0, 1) with 24 (float) / 53 (double) random bits. */
float rng_float(struct rng *r);
double rng_double(struct rng *r);
/* Uniform integer in [0, n), n >= 1, without modulo bias. */
uint64_t rng_below(struct rng *r, uint64_t n);
/* Standard normal (Box-Muller, one value per call: deterministic, no cache). */
float rng_normal(struct rng *r);
/* Fisher-Yates shuffle of @n int32s. */
void rng_shuffle_i32(struct rng *r, int32_t *a, long n);

#endif
