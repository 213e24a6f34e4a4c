/*
 * data.h - the trainer's inputs: content embeddings (items.npy, users.npy),
 * interaction logs (train.tsv, test.tsv, cold_test.tsv), the cold-item list,
 * the indexes built from them (items of a user, users of an item, popularity
 * and activity counts) and deterministic mini-batching.
 *
 * Every file is hostile input.  A problem is reported through struct
 * sid_error with the file name and the 1-based line (tsv, txt) or 0-based row
 * (npy) at fault, err->index set to that line/row, and SID_EFORMAT; the
 * program turns that into exit status 2.  Rejected: a missing or empty file,
 * a ragged line (fewer than two tab-separated columns), a field that is not a
 * plain non-negative decimal integer, an index out of range, an embedding
 * row holding NaN or Inf, a training interaction with a cold item.  Further
 * tsv columns are ignored; a final line without a newline, CRLF line ends
 * and a leading UTF-8 byte-order mark are accepted; an empty line is an
 * error (it usually means a broken file), and so is UTF-16 text (a
 * byte-order mark FF FE or FE FF), named as such.
 *
 * Embeddings stay memory-mapped (so the 1M-row scale run does not need them
 * in RAM); rows are copied out as float32 on demand.  The whole file is
 * scanned once at open time for non-finite values.
 *
 * Batching: an epoch is a permutation of the training interactions drawn from
 * (seed, epoch) alone, cut into consecutive full batches (a batch size above
 * the data size gives one batch of everything); batch b of epoch e is a
 * pure function of (seed, e, b), so a resumed run sees exactly the batches an
 * uninterrupted one would.
 *
 * Thread-safety: all structures are read-only after loading and may be shared;
 * a struct tr_batch belongs to its caller.
 */
#ifndef TR_DATA_H
#define TR_DATA_H

#include <stddef.h>
#include <stdint.h>

#include "err.h"
#include "npy.h"

/* A memory-mapped (N, D) embedding matrix. */
struct tr_emb {
	struct sid_npy npy;
	char *path;    /* owned copy, for messages */
	size_t n;      /* N rows */
	int d;	       /* D columns */
	float max_abs; /* the largest |value|, at row max_row, column max_col */
	size_t max_row;
	int max_col;
	uint64_t fingerprint; /* of every value (as float32) in row order */
};

/* Largest |value| the trainer takes without input_norm l2: squares of
 * larger ones summed over a row overflow float (the loss becomes inf). */
#define TR_EMB_MAX_ABS 1e15f

/* Open @path, check it is a 2-D float array and that every value is finite;
 * records where its largest magnitude is (max_abs) and a fingerprint of
 * its values (--resume refuses a checkpoint trained on other ones).  This
 * and tr_inter_read give up on a stop asked for (stop.h, tr_stop_error). */
int tr_emb_open(struct tr_emb *e, const char *path, struct sid_error *err);
void tr_emb_close(struct tr_emb *e); /* zeroed: no-op */

/* Copy the rows listed in @idx (@n of them, each < e->n) into @dst ((n, D)). */
int tr_emb_gather(const struct tr_emb *e, const int32_t *idx, size_t n, float *dst,
		  struct sid_error *err);

/* Copy rows [row0, row0+n) into @dst ((n, D)). */
int tr_emb_rows(const struct tr_emb *e, size_t row0, size_t n, float *dst, struct sid_error *err);

/* A list of (user, item) interactions, in file order. */
struct tr_inter {
	size_t n;
	int32_t *user; /* (n) */
	int32_t *item; /* (n) */
};

/*
 * Read a `user<TAB>item[<TAB>...]` file.  Users must be < @n_users and items
 * < @n_items.  When @cold is non-NULL, an item with cold[item] set is an
 * error (training data must not hold cold items).  An empty file is an error.
 */
int tr_inter_read(const char *path, size_t n_users, size_t n_items, const uint8_t *cold,
		  struct tr_inter *out, struct sid_error *err);
void tr_inter_release(struct tr_inter *t);

/*
 * Read a cold-item list (one item index per line, < @n_items, no repeats)
 * into a fresh (n_items) flag array *out (1 = cold); *n_cold gets the count.
 */
int tr_cold_read(const char *path, size_t n_items, uint8_t **out, size_t *n_cold,
		 struct sid_error *err);

/* Compressed rows: the entries of row r are idx[off[r] .. off[r+1]). */
struct tr_csr {
	size_t rows;
	int64_t *off; /* (rows + 1) */
	int32_t *idx; /* (off[rows]) sorted ascending within a row */
};

/* Build rows of @cols indexed by @keys (n pairs); @keys < rows. */
int tr_csr_build(struct tr_csr *c, size_t rows, const int32_t *keys, const int32_t *cols, size_t n,
		 struct sid_error *err);
void tr_csr_release(struct tr_csr *c);
/* Whether row @r holds @v (binary search). */
int tr_csr_has(const struct tr_csr *c, size_t r, int32_t v);

/* Everything training needs, loaded together. */
struct tr_data {
	struct tr_emb items; /* (N_items, D_item) */
	struct tr_emb users; /* (N_users, D_user) */
	struct tr_inter train;
	char *train_path; /* owned copy, for messages */
	uint8_t *cold;	  /* (N_items) 1 for a cold item, or NULL without a list */
	size_t n_cold;
	struct tr_csr by_user; /* items each user clicked in train */
	struct tr_csr by_item; /* users who clicked each item in train */
	int64_t *item_pop;     /* (N_items) train clicks per item */
	int64_t *user_act;     /* (N_users) train clicks per user */
	size_t n_warm_items;   /* items with at least one train click */
};

/*
 * Load items, users, train and (when @cold_path is non-NULL) the cold list,
 * and build the indexes.  On failure everything is released and @err names
 * the file and line/row.
 */
int tr_data_load(struct tr_data *d, const char *items_path, const char *users_path,
		 const char *train_path, const char *cold_path, struct sid_error *err);
void tr_data_release(struct tr_data *d);

/*
 * Read a test file of interactions for @d (as tr_inter_read) and check that
 * it is on its side of the cold split, since the evaluation ranks cold items
 * apart: with @cold_side every item must be cold (in @d's cold list or,
 * without one, an item with no train click), otherwise no item may be in the
 * cold list.  A test file of the other side gave figures that looked real
 * (a warm test passed as the cold one, without a cold list, made its
 * trained items "cold").  Nor may a warm test line repeat a train pair:
 * the warm ranking leaves a user's train items out, so it could never be
 * a hit.  SID_EFORMAT names the file and line.
 */
int tr_test_read(const char *path, const struct tr_data *d, int cold_side, struct tr_inter *out,
		 struct sid_error *err);

/*
 * Both test files of a run or an evaluation, each as tr_test_read (@test,
 * @test_cold or both may be NULL: that list stays empty).  Without @d's
 * cold list the cold set is the items of @test_cold, which are then no
 * warm candidates: a @test line with one of them could never be a hit and
 * lowered the warm figures unsaid, so it is refused as a cold-list item
 * is (SID_EFORMAT naming the line of each file).  On failure both lists
 * are empty.
 */
int tr_tests_read(const struct tr_data *d, const char *test, const char *test_cold,
		  struct tr_inter *warm, struct tr_inter *cold, struct sid_error *err);

/* One mini-batch of training interactions. */
struct tr_batch {
	size_t B;	/* rows in this batch */
	int32_t *user;	/* (B) */
	int32_t *item;	/* (B) */
	int32_t *user2; /* (B) another user who clicked item[b], -1 when none */
	int32_t *item2; /* (B) another item user[b] clicked, -1 when none */
};

struct tr_batcher {
	const struct tr_data *data;
	size_t batch_size;
	uint64_t seed;
	int epoch;	/* epoch of the current permutation, -1 before the first */
	uint32_t *perm; /* (train.n) */
	struct tr_batch batch;
};

/* Fails (SID_EINVAL) with fewer than 2 interactions: a step needs a batch of
 * two or more. */
int tr_batcher_init(struct tr_batcher *bt, const struct tr_data *d, size_t batch_size,
		    uint64_t seed, struct sid_error *err);
void tr_batcher_release(struct tr_batcher *bt);
/* Batches per epoch: max(1, n / batch_size); the last partial batch is
 * dropped (its interactions come round in other epochs' permutations). */
size_t tr_batcher_count(const struct tr_batcher *bt);
/* Shuffle for @epoch (a pure function of seed and epoch). */
void tr_batcher_epoch(struct tr_batcher *bt, int epoch);
/* Fill and return batch @b of the current epoch (valid until the next call). */
const struct tr_batch *tr_batcher_get(struct tr_batcher *bt, size_t b);

/* Before opening an input: SID_EFORMAT naming @path when it exists but is
 * not a regular file (core's openers open first and check after, and
 * opening a FIFO blocks until a writer comes: a hang no signal could end,
 * the handler restarting the open); 0 otherwise, a missing file included,
 * for the opener to report. */
int tr_input_check(const char *path, struct sid_error *err);

/* Before any work, what would only fail once the output is written (after
 * hours of training), its messages starting "--out @out: ": SID_EINVAL when
 * @out's directory is missing or not a directory, or @out's file name is
 * longer than the directory takes; SID_EIO (the disk's state, not the
 * input's) when this process cannot write in it.  The directory goes into
 * @dir (@len bytes; "." for a bare name). */
int tr_out_dir_check(const char *out, char *dir, size_t len, struct sid_error *err);

#endif
