/*
 * profile.h - user content embeddings from clicks (`semid-train profile`).
 *
 * DAS trains a user tower on content embeddings of users, which a team with
 * only item embeddings and a click log does not have.  The usual stand-in
 * (and how lastfm-2k's users.npy was made) is a content profile: user u's
 * row is the L2-normalised mean of the embeddings of the items u clicked in
 * the training interactions, each line counting once (a repeated line
 * counts again, as a repeated click does).  A user with no line (no click),
 * or whose clicked rows sum to the zero vector, gets a row of zeros.  At
 * serving time the same recipe over a user's history gives /v1/users:encode
 * its input.
 *
 * The output is (n_users, D) float32, D the items' width, n_users the
 * largest user index in the file plus one unless given, at most
 * TR_PROFILE_MAX_USERS (a larger one is refused before anything is
 * allocated: an index of 16 bytes a user).  Memory is
 * O(interactions + n_users); the items file is read row by row from its
 * mapping.  The file is written through fsutil.h's publish (a temp file
 * beside it, synced, renamed into place, the directory synced), so a run
 * that fails, is stopped or is killed leaves an earlier file untouched.
 */
#ifndef TR_PROFILE_H
#define TR_PROFILE_H

#include <stddef.h>

#include "err.h"

/* Rows profile writes at most: 1 GiB of index while it runs, and 256 MiB a
 * column of output.  An index above it is rather an id that is not a
 * 0-based row number (a hash, a database key) than a user count. */
#define TR_PROFILE_MAX_USERS (1L << 26)

struct tr_profile_params {
	const char *items; /* (N, D) float .npy */
	const char *train; /* user<TAB>item lines, 0-based */
	const char *out;   /* USERS.npy to publish */
	long n_users;	   /* rows to write, <= TR_PROFILE_MAX_USERS; 0: the largest
			      user index + 1 */
	int progress;	   /* progress on stderr */
};

struct tr_profile_stats {
	long users, interactions; /* rows written; lines read */
	long empty;		  /* users with no click (no line): zero rows */
	long zero_sum;		  /* users whose clicked rows sum to zero: zero rows too */
	int dim;
};

/* 0 with @st filled; a negative SID_E* code with @err (SID_EFORMAT /
 * SID_EINVAL for bad input, such as too many users or an --out in a
 * missing directory, refused before any work; SID_EIO for a directory it
 * cannot write in); or, stopped by SIGINT / SIGTERM / SIGHUP
 * (stop.h), that signal's number, nothing written. */
int tr_profile_run(const struct tr_profile_params *p, struct tr_profile_stats *st,
		   struct sid_error *err);

#endif
