/*
 * profile.c - user content profiles from clicks, behind `semid-train profile`
 * (profile.h).
 *
 * The interactions are read and checked as training reads them (data.h), put
 * in rows by user (CSR), and each user's row is summed in double from the
 * mapped items file, normalised, and streamed out in chunks.
 */
#include "profile.h"

#include <errno.h>
#include <limits.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "data.h"
#include "fsutil.h"
#include "npy.h"
#include "stop.h"

#define CHUNK 1024 /* rows per .npy write */

/* Row @u of the output into @dst: the normalised sum of its items' rows
 * (@row, @acc: D floats / doubles of scratch).  1 when the row is zero. */
static int profile_row(const struct tr_emb *items, const struct tr_csr *by_user, size_t u,
		       float *row, double *acc, float *dst, struct sid_error *err)
{
	int d = items->d;
	double sq = 0;

	memset(acc, 0, (size_t)d * sizeof(double));
	for (int64_t k = by_user->off[u]; k < by_user->off[u + 1]; k++) {
		if (tr_emb_gather(items, &by_user->idx[k], 1, row, err) < 0)
			return -1;
		for (int j = 0; j < d; j++)
			acc[j] += row[j];
	}
	for (int j = 0; j < d; j++)
		sq += acc[j] * acc[j];
	if (!(sq > 0)) {
		memset(dst, 0, (size_t)d * sizeof(float));
		return 1;
	}
	sq = 1.0 / sqrt(sq);
	for (int j = 0; j < d; j++)
		dst[j] = (float)(acc[j] * sq);
	return 0;
}

/* GiB of index (struct tr_csr's offsets, and its fill counts while it is
 * built) for @rows users. */
static double index_gib(size_t rows)
{
	return (double)rows * 2 * sizeof(int64_t) / (double)(1 << 30);
}

/* Before any work, as training checks its --out: a missing directory, one
 * this process cannot write in, a name too long for it (all of which failed
 * only once the profiles were computed, naming a temp file).  And @out
 * must not name an input: publishing over it would replace the data this
 * run reads (and the user's only copy of it). */
static int out_check(const struct tr_profile_params *p, struct sid_error *err)
{
	struct stat so;
	const char *in[2] = {p->items, p->train};
	char dir[PATH_MAX];
	int rc;

	if ((rc = tr_out_dir_check(p->out, dir, sizeof(dir), err)) < 0)
		return rc;
	if (lstat(p->out, &so) < 0)
		return errno == ENOENT
			   ? 0
			   : sid_error_set(err, SID_EIO, "%s: %s", p->out, strerror(errno));
	/* the file is renamed into place: over a link, it would replace the
	 * link and leave the file the link names as it was */
	if (S_ISLNK(so.st_mode))
		return sid_error_set(err, SID_EINVAL,
				     "--out %s is a symbolic link: give the file it names (the "
				     "output would replace the link, not that file)",
				     p->out);
	if (!S_ISREG(so.st_mode))
		return sid_error_set(err, SID_EINVAL, "--out %s exists and is not a regular file",
				     p->out);
	for (int k = 0; k < 2; k++)
		if (sid_same_file(in[k], &so))
			return sid_error_set(err, SID_EINVAL,
					     "--out %s is the input %s: it would be replaced",
					     p->out, in[k]);
	/* an existing file that is not a .npy (a typo's train.tsv.bak, notes)
	 * was replaced without a word; an empty one, or a .npy, is replaced */
	if (so.st_size > 0) {
		unsigned char head[SID_FILE_HEAD_BYTES];
		ssize_t got = sid_file_head(p->out, head, sizeof(head));
		if (got > 0 && (got < 6 || memcmp(head, "\x93NUMPY", 6) != 0))
			return sid_error_set(
			    err, SID_EINVAL,
			    "--out %s: an existing file that is not a .npy array: "
			    "profile would replace it; remove it or name another file",
			    p->out);
	}
	return 0;
}

int tr_profile_run(const struct tr_profile_params *p, struct tr_profile_stats *st,
		   struct sid_error *err)
{
	struct tr_emb items = {0};
	struct tr_inter in = {0};
	struct tr_csr by_user = {0};
	struct sid_publish pub;
	struct sid_npy_writer *w = NULL;
	struct tr_stop_saved saved;
	float *row = NULL, *buf = NULL;
	double *acc = NULL;
	size_t n_users;
	int rc;

	memset(st, 0, sizeof(*st));
	memset(&pub, 0, sizeof(pub)); /* a zeroed publish aborts as a no-op */
	if (p->n_users < 0 || p->n_users > TR_PROFILE_MAX_USERS)
		return sid_error_set(err, SID_EINVAL,
				     "--n-users %ld: not in [1, %ld], the users profile writes "
				     "(%ld rows take %.1f GiB of index)",
				     p->n_users, TR_PROFILE_MAX_USERS, p->n_users,
				     index_gib(p->n_users > 0 ? (size_t)p->n_users : 0));
	if ((rc = out_check(p, err)) < 0)
		return rc;
	tr_stop_install(&saved);
	if ((rc = tr_emb_open(&items, p->items, err)) < 0)
		goto done;
	/* without --n-users any index training would take goes; the rows are
	 * then the largest + 1 */
	rc = tr_inter_read(p->train, p->n_users ? (size_t)p->n_users : (size_t)INT32_MAX + 1,
			   items.n, NULL, &in, err);
	if (rc < 0)
		goto done;
	n_users = (size_t)p->n_users;
	for (size_t i = 0; !p->n_users && i < in.n; i++) {
		size_t u = (size_t)in.user[i];
		/* one interaction a line, no blank line: line i + 1 */
		if (u >= (size_t)TR_PROFILE_MAX_USERS) {
			rc = sid_error_set_at(
			    err, SID_EFORMAT, (long)i + 1,
			    "%s:%zu: user %zu: above %ld, the largest user index profile takes "
			    "(%zu rows would take %.1f GiB of index); is it a 0-based row "
			    "number, not an id?",
			    p->train, i + 1, u, TR_PROFILE_MAX_USERS - 1, u + 1, index_gib(u + 1));
			goto done;
		}
		if (u + 1 > n_users)
			n_users = u + 1;
	}
	if ((rc = tr_csr_build(&by_user, n_users, in.user, in.item, in.n, err)) < 0)
		goto done;
	st->users = (long)n_users;
	st->interactions = (long)in.n;
	st->dim = items.d;
	tr_inter_release(&in);

	row = malloc((size_t)items.d * sizeof(float));
	acc = malloc((size_t)items.d * sizeof(double));
	buf = malloc((size_t)CHUNK * (size_t)items.d * sizeof(float));
	if (!row || !acc || !buf) {
		rc = sid_error_set(err, SID_ENOMEM, "profile: out of memory");
		goto done;
	}
	if ((rc = sid_publish_begin(&pub, p->out, err)) < 0)
		goto done;
	rc = sid_npy_writer_fdopen(pub.fd, p->out, SID_NPY_F32, n_users, (size_t)items.d, &w, err);
	for (size_t u0 = 0; rc == 0 && u0 < n_users; u0 += CHUNK) {
		size_t m = n_users - u0 < CHUNK ? n_users - u0 : CHUNK;
		if (tr_stop_signal()) {
			rc = tr_stop_error(err, "writing the profiles");
			break;
		}
		for (size_t k = 0; rc == 0 && k < m; k++) {
			size_t u = u0 + k;
			int z = profile_row(&items, &by_user, u, row, acc,
					    buf + k * (size_t)items.d, err);
			int clicks = by_user.off[u + 1] > by_user.off[u];
			if (z < 0)
				rc = -1;
			/* a click is a line: a user with some whose rows cancel out
			 * (or are zero) has clicks all the same */
			st->empty += z > 0 && !clicks;
			st->zero_sum += z > 0 && clicks;
		}
		if (rc == 0)
			rc = sid_npy_writer_rows(w, buf, m, err);
		if (p->progress)
			fprintf(stderr, "\rprofile: users %zu/%zu", u0 + m, n_users);
	}
	if (p->progress)
		fprintf(stderr, "\n");
	if (w) {
		int rc2 = sid_npy_writer_close(w, rc == 0 ? err : NULL);
		rc = rc ? rc : rc2;
	}
	if (rc == 0 && tr_stop_signal())
		rc = tr_stop_error(err, "writing the profiles");
	if (rc == 0) {
		tr_stop_hold();
		rc = sid_publish_commit(&pub, err);
		tr_stop_release();
	}
done:
	sid_publish_abort(&pub);
	if (rc < 0 && tr_stop_signal())
		rc = tr_stop_signal();
	tr_stop_restore(&saved);
	free(row);
	free(acc);
	free(buf);
	tr_csr_release(&by_user);
	tr_inter_release(&in);
	tr_emb_close(&items);
	return rc;
}
