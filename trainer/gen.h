/*
 * gen.h - synthetic training data in the lastfm-2k layout, for tests, demos
 * and the scale benchmark (`semid-train gen`).
 *
 * The world: G clusters with unit centres in R^D.  Item i belongs to content
 * cluster c(i); its embedding is normalise(centre[c(i)] + noise).  Clicks
 * come from a latent preference model: each item also has a collaborative
 * group g(i) (= c(i) with probability `align`, else a random cluster, so the
 * content only partly predicts clicks and collaborative alignment has
 * something to add), each user a few favourite groups with weights, and a
 * popularity weight per item (log-normal, so a few items get most clicks).
 * A click of user u draws a group from u's preferences (a random one with
 * probability `explore`) and then an item of that group in proportion to
 * popularity (alias tables, O(1) per click).  User activity is log-normal
 * too.  A user's content embedding is normalise(weighted sum of the
 * favourite groups' centres + noise): a content profile, as in lastfm.
 *
 * Files written into @out_dir (created if needed): items.npy (N, D) float32,
 * users.npy (M, D_user) float32, train.tsv, test.tsv (the last test_frac of
 * each user's warm clicks, at least one click stays in train), cold_items.txt
 * (cold_frac of the items, ascending), cold_test.tsv (every click on a cold
 * item).  Duplicate (user, item) clicks are removed.  Every user keeps at
 * least one train click.  Data the trainer would refuse is not written: an
 * empty file, or a train.tsv of fewer than 2 clicks (one user's).  Output
 * is streamed: memory is O(N + M) plus one user's clicks, never
 * O(interactions) or O(N * D).
 *
 * The result is a pure function of the parameters.  A run holds the lock
 * @out_dir/gen.lock (lock.h: an flock, the file removed at its end) from
 * before it writes anything: a second run into the same directory, which
 * would rename its files among the first's and leave a mix of two data
 * sets, is refused (SID_EUNAVAIL, naming the holder's pid).  Not
 * thread-safe (one call at a time per output directory).
 */
#ifndef TR_GEN_H
#define TR_GEN_H

#include <stdint.h>

#include "err.h"

struct tr_gen_params {
	long items, users, interactions; /* N, M, total clicks before dedup */
	int dim, user_dim;		 /* D (items), D_user (0: = dim) */
	int clusters;			 /* G (0: about sqrt(N), 8..1024) */
	uint64_t seed;
	double cold_frac;      /* 0.1 */
	double test_frac;      /* 0.15 */
	double align;	       /* 0.7 */
	double explore;	       /* 0.1 */
	double pop_sigma;      /* log-normal popularity spread, 1.0 */
	double act_sigma;      /* log-normal activity spread, 0.7 */
	double noise;	       /* content noise norm, 0.6 */
	int progress;	       /* stderr is a terminal: a bar; else a line every progress_every s */
	double progress_every; /* 30 */
};

void tr_gen_defaults(struct tr_gen_params *p);

/* The lock file's name in the output directory. */
#define TR_GEN_LOCK "gen.lock"

/* Counts written (after dedup), for the caller to print. */
struct tr_gen_stats {
	long train, test, cold_test, cold_items;
};

/* Write the data set into @out_dir (made if missing): 0; a negative SID_E*
 * code with @err (SID_EUNAVAIL: another run holds the directory's lock);
 * or, stopped by SIGINT / SIGTERM / SIGHUP (stop.h), that signal's number.
 * The files are renamed into place only once all are complete and synced
 * (fsutil.h's publish, the directory synced too), so a run failed, stopped
 * or killed while writing leaves the directory as it was.  The renames
 * themselves are one file after another: a failure or a kill among them
 * leaves the files renamed so far new and the rest old. */
int tr_gen_run(const struct tr_gen_params *p, const char *out_dir, struct tr_gen_stats *st,
	       struct sid_error *err);

#endif
