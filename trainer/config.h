/*
 * config.h - the training configuration: defaults, a JSON config file
 * (jansson), and one command-line flag per key; flags override the file.
 *
 * Two kinds of keys share one namespace.  The run keys below (data paths,
 * output, model_version, threads, eval, progress) live here; every other key
 * is a model/optimisation key owned by das.h and set through das_config_set
 * (mode, seed, levels, codebook_size, latent_dim, hidden, epochs, batch_size,
 * lr, ...; the list is printed by tr_config_print_help).  A key `foo_bar` is
 * the flag `--foo-bar VALUE`, and may be spelt `foo-bar` in the JSON file
 * too (every key alike).  In the JSON file numbers, strings, booleans
 * and lists of numbers (`"hidden": [256, 128]`, on the command line
 * `--hidden 256,128`) are accepted.
 *
 * An unknown key, a bad value, or two keys of the file for one setting
 * ("batch_size" and "batch-size", "K" and "codebook_size") is an error
 * naming the key and the file (or flag); an unknown one, also the one key
 * near it, if one is ("did you mean").  Thread-safety: plain data, no
 * globals.
 */
#ifndef TR_CONFIG_H
#define TR_CONFIG_H

#include <stdint.h>
#include <stdio.h>

#include "das.h"
#include "err.h"

#define TR_PATH_MAX	    1024
#define TR_CONFIG_FILES_MAX 16 /* --config files in one run */

struct tr_config {
	char items[TR_PATH_MAX], users[TR_PATH_MAX], train[TR_PATH_MAX];
	char test[TR_PATH_MAX], test_cold[TR_PATH_MAX], cold_items[TR_PATH_MAX];
	char out[TR_PATH_MAX];
	char model_version[256]; /* empty: "<mode>-<utc>-<seed>-<random>" */
	int threads;		 /* OpenBLAS threads, 0 = sid_blas_default_threads */
	int eval;		 /* evaluate at the end when test is set (1) */
	int publish_tables;	 /* the ICDM ID tables go into the model file too (0) */
	int progress;		 /* progress bar when stderr is a terminal (1) */
	double progress_every;	 /* otherwise a progress line every this many seconds of
				    an epoch (30; 0 = after every batch) */
	int stop_after;		 /* stop once this many epochs are done (checkpoint, no
				    publish; 0 = run to the end): a time budget, resume later */
	int max_steps;		 /* benchmark: stop after this many steps of the first epoch
				    run, print the timing, write nothing (0 = off) */
	struct das_config das;	 /* everything else */

	/* the --config files read, in order, never written over: the caller's
	 * strings (argv), not copies, so a path of any length is compared whole */
	const char *config[TR_CONFIG_FILES_MAX];
	int n_config;
};

/* Fill @c with the defaults (das_config_defaults for the model keys). */
void tr_config_defaults(struct tr_config *c);

/* Apply the keys of the JSON object in file @path, and record @path (not
 * copied: it must outlive @c) in c->config; more than TR_CONFIG_FILES_MAX
 * files is SID_EINVAL. */
int tr_config_load_file(struct tr_config *c, const char *path, struct sid_error *err);

/* Apply the keys of a JSON object given as text (@what names it in messages). */
int tr_config_load_json(struct tr_config *c, const char *json, const char *what,
			struct sid_error *err);

/*
 * Apply one flag: @name without the leading "--" (dashes or underscores),
 * @value its argument (NULL when there is none).  Booleans take "true",
 * "false", "1" or "0"; `--no-eval` / `--no-progress` also work (value unused).
 * Returns 1 when @value was consumed, 0 when not, or a negative SID_E* code
 * with @err naming the flag.
 */
int tr_config_flag(struct tr_config *c, const char *name, const char *value, struct sid_error *err);

/* The run keys as a JSON object (malloc'ed; NULL on ENOMEM). */
char *tr_config_run_json(const struct tr_config *c);

/* Print the flags with a line of help each. */
void tr_config_print_help(FILE *f);

#endif
