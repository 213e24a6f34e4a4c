/*
 * eval.h - evaluation of a trained model (`semid-train eval` and the figures
 * training writes into the model metadata).
 *
 * Per tower: collision rate (N - distinct full IDs) / N, per level the
 * utilization (codes used / K) and perplexity exp(-sum p log p) of the code
 * distribution, and the reconstruction error of the file's decoder
 * ({tower}.decoder.{i}.weight/bias, same activation as the encoder, none
 * after the last layer) applied to the quantized latent, against the encoder
 * input (after input_norm): recon_sse = mean over rows of ||x - x_hat||^2
 * (the training loss), recon_mse = the same divided by D.
 *
 * Retrieval on test interactions: Recall@10, Recall@50 (hits in the top K /
 * the user's distinct test items) and NDCG@10 (binary gains, ideal DCG over
 * min(|test|, 10) hits), averaged over users with at least one test item
 * (and, item-side, at least one train item: see tr_rank_eval).
 * Warm: every item outside the cold set is ranked, the user's train items
 * excluded (cold items are never warm positives; this is the protocol of the
 * issue's reference figures: raw MiniLM item-side Recall@50 0.366 on
 * lastfm-2k, 0.337 with the cold items left in).  Cold: only the cold items
 * are ranked.  Scores are cosines; tied items (one semantic ID gives one
 * vector) count as in a random order of them: a test item with a items
 * above it and t at its score (itself too) is at each rank a..a+t-1 with
 * chance 1/t, and the figures are those expected, so they do not depend on
 * how the items are numbered.  Rankings:
 *   item_side   user profile = mean of the unit quantized embeddings of the
 *               user's train items, items by their unit quantized embedding;
 *   cross_tower the user's unit quantized embedding against the items';
 *   raw_item_side / raw_cross_tower the same with the raw content
 *               embeddings (cross only when the towers share D).
 * Quantized embeddings come from core/encode.h (out.quant), scores from
 * sgemm in blocks of users.
 *
 * Figures are deterministic for a given OpenBLAS thread count (sgemm may
 * round differently with another, which can swap items at a near-tie).
 *
 * It says on stderr what it does, as the epochs do (progress.h): a line
 * before ("evaluating: 12 test and 3 cold-test interactions, 300 users
 * against 600 items"; with --test but no cold set, one more counting the
 * items without a train click, ranked as warm) and one after ("evaluation:
 * 1.23s"), and between
 * them, as struct tr_eval_progress asks, a bar on a terminal or else a line
 * every so many seconds ("evaluating: ranking item_side warm, 40% done,
 * 12.3s, about 18s left"), its percent of the work in multiply-adds (the
 * ranking's grow with users x items; the encoding's with rows).
 *
 * A stop asked for by a signal (stop.h, while the trainer has it installed)
 * ends the ranking and the encoding at their next block of rows with an
 * error; the caller tells it apart by tr_stop_signal().
 *
 * Thread-safety: pure functions of their inputs; OpenBLAS threading is the
 * caller's.
 */
#ifndef TR_EVAL_H
#define TR_EVAL_H

#include <jansson.h>
#include <stddef.h>
#include <stdint.h>

#include "data.h"
#include "err.h"
#include "model.h"
#include "safetensors.h"

#define TR_EVAL_MAX_LEVELS 16

struct tr_code_stats {
	size_t n;
	size_t unique; /* distinct full code tuples */
	double collision_rate;
	int L;
	double utilization[TR_EVAL_MAX_LEVELS];
	double perplexity[TR_EVAL_MAX_LEVELS];
};

/* Statistics of @codes ((N, L) row-major, code l < K[l]). */
int tr_code_stats(const int32_t *codes, size_t N, int L, const int *K, struct tr_code_stats *out,
		  struct sid_error *err);

struct tr_rank_metrics {
	double recall10, recall50, ndcg10;
	long users;	  /* users averaged over (0: the figures are undefined) */
	long truth_users; /* users with a test item: those not averaged over had an
			     all-zero vector */
};

/*
 * Rank @n_cand candidate items (ids @cand, vectors @item_vec (n_cand, E),
 * which should be unit length for cosine) for each user (vectors @user_vec
 * (n_users, E)) and score against @truth (test items per user).  Items in
 * @exclude's row for the user (train items; may be NULL) are never ranked.
 * Truth items outside the candidates still count in the denominator.  A
 * user whose vector is all zeros (an item-side profile without train items)
 * ties every candidate, so has no ranking: it is left out (not in ->users,
 * in ->truth_users).  With ->users 0 the figures are 0 and mean nothing: the
 * evaluation JSON gives them as null.
 */
int tr_rank_eval(const float *user_vec, size_t n_users, const float *item_vec, const int32_t *cand,
		 size_t n_cand, int E, const struct tr_csr *exclude, const struct tr_csr *truth,
		 struct tr_rank_metrics *out, struct sid_error *err);

/* The progress between the first line and the last. */
struct tr_eval_progress {
	int on;	      /* the `progress` setting: 0 says the two lines only */
	int tty;      /* stderr is a terminal: a bar */
	double every; /* else a line every this many seconds (0: every block) */
};

/* What one evaluation reads; test, test_cold and cold may be NULL. */
struct tr_eval_input {
	const struct sid_model *model;
	const struct sid_st_file *st; /* the parsed model file, for decoder tensors; or NULL */
	const struct tr_emb *items, *users;
	const struct tr_csr *train_by_user; /* (N_users rows) */
	const struct tr_inter *test;	    /* warm test interactions */
	const struct tr_inter *test_cold;   /* cold-item test interactions */
	const uint8_t *cold;		    /* (N_items) cold flags; NULL: the items of test_cold */
	struct tr_eval_progress progress;
};

/* Run everything above; *out gets a new JSON object (caller decrefs). */
int tr_eval_run(const struct tr_eval_input *in, json_t **out, struct sid_error *err);

/*
 * `semid-train eval` body: load @model_path and the data files, evaluate and
 * print the JSON to stdout.  Paths @test_cold and @cold_items may be NULL.
 */
int tr_eval_files(const char *model_path, const char *items, const char *users, const char *train,
		  const char *test, const char *test_cold, const char *cold_items,
		  const struct tr_eval_progress *progress, struct sid_error *err);

#endif
