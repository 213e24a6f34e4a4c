/*
 * gen.c - the synthetic data generator behind `semid-train gen` (gen.h).
 *
 * Independent random streams (one per part: clusters, items, users, clicks)
 * keep each part a function of the seed alone.  Embeddings go out through
 * the streaming .npy writer in chunks; clicks are drawn user by user and
 * written at once, so nothing grows with the number of interactions.
 */
#include "gen.h"

#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <unistd.h>

#include "cpus.h"
#include "fsutil.h"
#include "lock.h"
#include "npy.h"
#include "progress.h"
#include "rng.h"
#include "stop.h"

#define CHUNK	 4096 /* rows per .npy write */
#define MAX_FAV	 3    /* favourite groups per user */
#define PATH_LEN 4096

void tr_gen_defaults(struct tr_gen_params *p)
{
	memset(p, 0, sizeof(*p));
	p->items = 2000;
	p->users = 1000;
	p->interactions = 40000;
	p->dim = 64;
	p->seed = 1;
	p->cold_frac = 0.1;
	p->test_frac = 0.15;
	p->align = 0.7;
	p->explore = 0.1;
	p->pop_sigma = 1.0;
	p->act_sigma = 0.7;
	p->noise = 0.6;
	p->progress_every = 30;
}

/* Walker alias table over @n weights (Vose's method); prob/alias are (n). */
static void alias_build(const double *w, int n, float *prob, int32_t *alias, int32_t *work)
{
	double sum = 0;
	int *small = work, *large = work + n, ns = 0, nl = 0;
	for (int i = 0; i < n; i++)
		sum += w[i];
	for (int i = 0; i < n; i++) {
		prob[i] = (float)(w[i] * n / sum);
		alias[i] = i;
		if (prob[i] < 1.0f)
			small[ns++] = i;
		else
			large[nl++] = i;
	}
	while (ns && nl) {
		int s = small[--ns], l = large[--nl];
		alias[s] = l;
		prob[l] = prob[l] + prob[s] - 1.0f;
		if (prob[l] < 1.0f)
			small[ns++] = l;
		else
			large[nl++] = l;
	}
	while (nl)
		prob[large[--nl]] = 1.0f;
	while (ns)
		prob[small[--ns]] = 1.0f;
}

static void unit_normal_vec(struct rng *r, float *v, int d)
{
	double n2 = 0;
	for (int k = 0; k < d; k++) {
		v[k] = rng_normal(r);
		n2 += (double)v[k] * v[k];
	}
	float s = (float)(1.0 / sqrt(n2 > 0 ? n2 : 1));
	for (int k = 0; k < d; k++)
		v[k] *= s;
}

/* v = normalise(v + noise * N(0, I/d)) */
static void add_noise_normalise(struct rng *r, float *v, int d, double noise)
{
	double n2 = 0, s = noise / sqrt((double)d);
	for (int k = 0; k < d; k++) {
		v[k] += (float)(s * rng_normal(r));
		n2 += (double)v[k] * v[k];
	}
	float inv = (float)(1.0 / sqrt(n2 > 0 ? n2 : 1));
	for (int k = 0; k < d; k++)
		v[k] *= inv;
}

/* What the row fillers need. */
struct fill_ctx {
	const struct tr_gen_params *p;
	struct rng *rng;
	const float *centre; /* (G, d) */
	const int32_t *cl;   /* items: (N) cluster */
	const int32_t *fav;  /* users: (M, MAX_FAV) groups */
	const float *fav_w;  /* users: (M, MAX_FAV) weights */
	int d;
};

/* Item row: normalise(centre of its cluster + noise). */
static void fill_item(struct fill_ctx *c, long i, float *v)
{
	memcpy(v, c->centre + (size_t)c->cl[i] * c->d, (size_t)c->d * sizeof(float));
	add_noise_normalise(c->rng, v, c->d, c->p->noise);
}

/* User row: normalise(weighted favourite centres + noise). */
static void fill_user(struct fill_ctx *c, long u, float *v)
{
	memset(v, 0, (size_t)c->d * sizeof(float));
	for (int f = 0; f < MAX_FAV; f++) {
		const float *ce = c->centre + (size_t)c->fav[u * MAX_FAV + f] * c->d;
		float w = c->fav_w[u * MAX_FAV + f];
		for (int k = 0; k < c->d; k++)
			v[k] += w * ce[k];
	}
	add_noise_normalise(c->rng, v, c->d, c->p->noise);
}

/*
 * Progress of a phase: @done of @total @what.  A bar on a terminal; without
 * one (a job, a pipe), a line every progress_every seconds: at 10 million
 * items a run takes minutes, and said nothing until it ended.
 */
static void gen_progress(struct tr_progress *pg, const char *what, long done, long total)
{
	char label[32];

	snprintf(label, sizeof(label), "gen: %s", what);
	tr_progress_bar(pg, label, (double)done, (double)total);
	if (done < total && tr_progress_line_due(pg))
		fprintf(stderr, "gen: %s %ld/%ld (%d%%), %.1fs\n", what, done, total,
			(int)(done * 100 / total), tr_progress_elapsed(pg));
}

/* Stream @n rows of width @d made by @fill into @pub (.npy float32),
 * CHUNK rows at a time through @buf, their progress as @what on @pg.  1
 * when a signal asked to stop. */
static int write_rows(const struct sid_publish *pub, long n, int d,
		      void (*fill)(struct fill_ctx *, long, float *), struct fill_ctx *ctx,
		      float *buf, struct tr_progress *pg, const char *what, struct sid_error *err)
{
	struct sid_npy_writer *w = NULL;
	int rc;
	rc = sid_npy_writer_fdopen(pub->fd, pub->path, SID_NPY_F32, (size_t)n, (size_t)d, &w, err);
	for (long r0 = 0; rc == 0 && r0 < n; r0 += CHUNK) {
		long m = n - r0 < CHUNK ? n - r0 : CHUNK;
		if (tr_stop_signal()) {
			rc = 1;
			break;
		}
		for (long k = 0; k < m; k++)
			fill(ctx, r0 + k, buf + k * d);
		rc = sid_npy_writer_rows(w, buf, (size_t)m, err);
		gen_progress(pg, what, r0 + m, n);
	}
	if (w) {
		int rc2 = sid_npy_writer_close(w, rc == 0 ? err : NULL);
		rc = rc ? rc : rc2;
	}
	return rc;
}

static int cmp_i32(const void *a, const void *b)
{
	int32_t x = *(const int32_t *)a, y = *(const int32_t *)b;
	return (x > y) - (x < y);
}

/* Fast "u\ti\n" into a stdio stream. */
static void put_pair(FILE *f, long u, long i)
{
	char buf[32], *p = buf + sizeof(buf);
	*--p = '\n';
	do
		*--p = (char)('0' + i % 10);
	while ((i /= 10));
	*--p = '\t';
	do
		*--p = (char)('0' + u % 10);
	while ((u /= 10));
	fwrite(p, 1, (size_t)(buf + sizeof(buf) - p), f);
}

/*
 * The files gen writes.  Each is a publish of fsutil.h (a temp file beside
 * it, unnamed where the file system has O_TMPFILE, so even SIGKILL leaves
 * nothing behind), and all are committed once every one is complete, so an
 * interrupted or failed run leaves the directory's earlier files as they
 * were, never a mix or a partial file under a real name.
 */
enum { OUT_ITEMS, OUT_USERS, OUT_COLD, OUT_TRAIN, OUT_TEST, OUT_CTEST, OUT_COUNT };

static const char *const out_names[OUT_COUNT] = {"items.npy", "users.npy", "cold_items.txt",
						 "train.tsv", "test.tsv",  "cold_test.tsv"};

/* A stream on its own duplicate of @pub's descriptor: fclose leaves the
 * publish open for the commit. */
static FILE *open_out(const struct sid_publish *pub, struct sid_error *err)
{
	int fd = fcntl(pub->fd, F_DUPFD_CLOEXEC, 0);
	FILE *f = fd < 0 ? NULL : fdopen(fd, "w");
	if (!f) {
		sid_error_set(err, SID_EIO, "%s: %s", pub->path, strerror(errno));
		if (fd >= 0)
			close(fd);
		return NULL;
	}
	setvbuf(f, NULL, _IOFBF, 1 << 20);
	return f;
}

static int close_out(FILE *f, const char *path, struct sid_error *err)
{
	int bad = ferror(f);
	if (fclose(f) != 0 || bad)
		return sid_error_set(err, SID_EIO, "%s: write failed: %s", path, strerror(errno));
	return 0;
}

/* mkdir -p: create @dir and any missing parents (0755); 0 or -1 with errno. */
static int mkdir_parents(const char *dir)
{
	char path[4096];
	size_t n = strlen(dir);

	if (n == 0 || n >= sizeof(path)) {
		errno = n ? ENAMETOOLONG : ENOENT;
		return -1;
	}
	memcpy(path, dir, n + 1);
	for (char *p = path + 1; *p; p++) {
		if (*p != '/')
			continue;
		*p = '\0';
		if (mkdir(path, 0755) < 0 && errno != EEXIST)
			return -1;
		*p = '/';
	}
	if (mkdir(path, 0755) < 0 && errno != EEXIST)
		return -1;
	return 0;
}

/* Memory and disk for the run, checked before anything is made: 53 bytes
 * of tables per item and 32 per user held at once, the @G cluster centres
 * (float32, of --dim and of --user-dim), and the files' bytes (float32
 * rows; a click line is at most 24 bytes); the run used to take the
 * machine's memory (2^31 items: 24 GB in use, then the OOM killer), or
 * fill the disk at the end of hours. */
static int gen_fits(const struct tr_gen_params *p, int G, const char *out_dir,
		    struct sid_error *err)
{
	int du = p->user_dim ? p->user_dim : p->dim, wide = du > p->dim ? du : p->dim;
	/* --clusters 1000000 at --dim 65536: 244 GiB of centres, which failed
	 * as "out of memory", exit 1, --out made and left empty (or, where
	 * the allocation was granted, took the machine's memory) */
	double centres = 4.0 * G * (p->dim + (du != p->dim ? du : 0));
	double mem = 53.0 * p->items + 32.0 * p->users + 4.0 * CHUNK * wide + centres,
	       disk = 4.0 * p->items * p->dim + 4.0 * p->users * du + 24.0 * p->interactions,
	       have = sid_memory_usable(), free_b;
	char a[32], b[32], c[32], dir[4096];
	struct statvfs fs;

	if (have > 0 && mem > have && p->clusters > 0)
		return sid_error_set(
		    err, SID_EINVAL,
		    "%ld %s, %ld %s and %d %s need about %s of memory (the "
		    "centres %s), more than the %s here",
		    p->items, sid_plural(p->items, "item", "items"), p->users,
		    sid_plural(p->users, "user", "users"), G, sid_plural(G, "cluster", "clusters"),
		    sid_size_str(mem, a, sizeof(a)), sid_size_str(centres, c, sizeof(c)),
		    sid_size_str(have, b, sizeof(b)));
	if (have > 0 && mem > have)
		return sid_error_set(err, SID_EINVAL,
				     "%ld %s and %ld %s need about %s of memory, more "
				     "than the %s here",
				     p->items, sid_plural(p->items, "item", "items"), p->users,
				     sid_plural(p->users, "user", "users"),
				     sid_size_str(mem, a, sizeof(a)),
				     sid_size_str(have, b, sizeof(b)));
	/* @out_dir may not be made yet: the file system of its nearest
	 * ancestor that is, where mkdir -p will make it */
	snprintf(dir, sizeof(dir), "%s", out_dir);
	while (statvfs(dir, &fs) < 0 && errno == ENOENT && strcmp(dir, ".") && strcmp(dir, "/")) {
		char *slash = strrchr(dir, '/');
		if (!slash)
			snprintf(dir, sizeof(dir), ".");
		else
			slash[slash == dir] = '\0'; /* "/x" -> "/" */
	}
	if (statvfs(dir, &fs) == 0 && disk > (free_b = (double)fs.f_bavail * (double)fs.f_frsize))
		return sid_error_set(err, SID_EINVAL, "the files need up to %s; %s has %s free",
				     sid_size_str(disk, a, sizeof(a)), out_dir,
				     sid_size_str(free_b, b, sizeof(b)));
	return 0;
}

/* Between tr_gen_run's phases (seconds each at hundreds of millions of
 * items): a stop asked for ends the run there, nothing written. */
#define STOP_POINT()                                                                               \
	do {                                                                                       \
		if (tr_stop_signal()) {                                                            \
			rc = 1;                                                                    \
			goto fail;                                                                 \
		}                                                                                  \
	} while (0)

int tr_gen_run(const struct tr_gen_params *p, const char *out_dir, struct tr_gen_stats *st,
	       struct sid_error *err)
{
	const long N = p->items, M = p->users;
	const int D = p->dim, DU = p->user_dim ? p->user_dim : p->dim;
	int G = p->clusters;
	struct rng r_cl, r_it, r_us, r_ck;
	float *centre = NULL, *ucentre = NULL, *rows = NULL, *prob = NULL, *fav_w = NULL;
	int32_t *ccl = NULL, *grp = NULL, *alias = NULL, *goff = NULL, *gitem = NULL;
	int32_t *fav = NULL, *perm = NULL, *work = NULL, *clicks = NULL, *warm_list = NULL;
	double *pop = NULL, *act = NULL, *wtmp = NULL;
	uint8_t *cold = NULL;
	struct fill_ctx ictx, uctx;
	FILE *ftrain = NULL, *ftest = NULL, *fcold = NULL, *fctest = NULL;
	struct sid_publish pub[OUT_COUNT];
	struct tr_stop_saved saved;
	long n_cold, n_warm = 0, cap = 0;
	int32_t *hset = NULL;
	size_t hcap = 0;
	double sum_act = 0;
	int rc = SID_ENOMEM;
	struct stat sb;
	struct tr_progress pg;
	struct tr_lock lock = {0};
	char lock_path[PATH_LEN];

	memset(st, 0, sizeof(*st));
	tr_progress_start(&pg, 1, p->progress, p->progress_every);
	/* the caller names the command ("semid-train gen: "): none of these
	 * messages repeats it */
	/* a cold item and two warm ones: a user's warm clicks keep one in
	 * train, so with one warm item test.tsv was always empty and refused,
	 * told to raise a fraction, which cannot help */
	if (N < 3 || N > INT32_MAX)
		return sid_error_set(err, SID_EINVAL,
				     "items %ld is not in [3, 2^31-1] (a cold item, and warm ones "
				     "for a train and a test click)",
				     N);
	if (M < 1 || M > INT32_MAX)
		return sid_error_set(err, SID_EINVAL, "users %ld is not in [1, 2^31-1]", M);
	if (p->interactions < M)
		return sid_error_set(err, SID_EINVAL,
				     "interactions %ld is fewer than the %ld %s (each user "
				     "gets a click at least)",
				     p->interactions, M, sid_plural(M, "user", "users"));
	if (D < 1 || D > 65536)
		return sid_error_set(err, SID_EINVAL, "dim %d is not in [1, 65536]", D);
	if (DU < 1 || DU > 65536)
		return sid_error_set(err, SID_EINVAL, "user_dim %d is not in [1, 65536]", DU);
	if (!(p->cold_frac >= 0 && p->cold_frac < 1 && p->test_frac >= 0 && p->test_frac < 1))
		return sid_error_set(err, SID_EINVAL,
				     "cold_frac %g and test_frac %g must both be in [0, 1)",
				     p->cold_frac, p->test_frac);
	if (G <= 0) {
		G = (int)sqrt((double)N);
		G = G < 8 ? 8 : G > 1024 ? 1024 : G;
	}
	if (G > N)
		G = (int)N;
	/* before --out is made: a refused size leaves no empty directory */
	if ((rc = gen_fits(p, G, out_dir, err)))
		return rc;
	if (mkdir_parents(out_dir) < 0) /* ENOTDIR: a path component is a file */
		return sid_error_set(err, errno == ENOTDIR ? SID_EINVAL : SID_EIO, "%s: %s",
				     out_dir, strerror(errno));
	if (stat(out_dir, &sb) < 0 || !S_ISDIR(sb.st_mode))
		return sid_error_set(err, SID_EINVAL, "--out %s: not a directory", out_dir);
	/* a second gen into @out_dir would rename its files among this one's
	 * and leave a mix of two data sets */
	if (snprintf(lock_path, sizeof(lock_path), "%s/%s", out_dir, TR_GEN_LOCK) >=
	    (int)sizeof(lock_path))
		return sid_error_set(err, SID_EINVAL, "--out %s: path too long", out_dir);
	memset(pub, 0, sizeof(pub)); /* a zeroed publish aborts as a no-op */
	tr_stop_install(&saved);     /* before the lock: a signal then does not leave it */
	rc = tr_lock_take_or_say(&lock, lock_path, out_dir, "semid-train gen", "writing", err);
	if (rc < 0)
		goto fail;
	for (int k = 0; k < OUT_COUNT; k++) {
		char path[PATH_LEN];
		if (snprintf(path, sizeof(path), "%s/%s", out_dir, out_names[k]) >= PATH_LEN) {
			rc = sid_error_set(err, SID_EINVAL, "--out %s: path too long", out_dir);
			goto fail;
		}
		/* its rename would fail after others were made: none is, then */
		if (lstat(path, &sb) == 0 && !S_ISREG(sb.st_mode)) {
			rc = sid_error_set(err, SID_EINVAL,
					   "%s exists and is not a regular file; nothing written",
					   path);
			goto fail;
		}
		if ((rc = sid_publish_begin(&pub[k], path, err)) < 0)
			goto fail;
	}

	rng_seed(&r_cl, p->seed * 4 + 0);
	rng_seed(&r_it, p->seed * 4 + 1);
	rng_seed(&r_us, p->seed * 4 + 2);
	rng_seed(&r_ck, p->seed * 4 + 3);

	/* clusters */
	centre = malloc((size_t)G * D * sizeof(float));
	ucentre = DU == D ? centre : malloc((size_t)G * DU * sizeof(float));
	if (!centre || !ucentre)
		goto nomem;
	for (int g = 0; g < G; g++)
		unit_normal_vec(&r_cl, centre + (size_t)g * D, D);
	if (ucentre != centre)
		for (int g = 0; g < G; g++)
			unit_normal_vec(&r_cl, ucentre + (size_t)g * DU, DU);

	/* items: cluster, group, popularity, cold flag */
	ccl = malloc(N * sizeof(int32_t));
	grp = malloc(N * sizeof(int32_t));
	pop = malloc(N * sizeof(double));
	cold = calloc(N, 1);
	perm = malloc(N * sizeof(int32_t));
	if (!ccl || !grp || !pop || !cold || !perm)
		goto nomem;
	for (long i = 0; i < N; i++) {
		ccl[i] = (int32_t)rng_below(&r_it, (uint64_t)G);
		grp[i] = rng_double(&r_it) < p->align ? ccl[i] : (int32_t)rng_below(&r_it, G);
		pop[i] = exp(p->pop_sigma * rng_normal(&r_it));
		perm[i] = (int32_t)i;
	}
	n_cold = (long)floor(p->cold_frac * N + 0.5);
	if (n_cold > N - 1)
		n_cold = N - 1;
	for (long k = 0; k < n_cold; k++) { /* partial Fisher-Yates */
		long j = k + (long)rng_below(&r_it, (uint64_t)(N - k));
		int32_t t = perm[k];
		perm[k] = perm[j];
		perm[j] = t;
		cold[perm[k]] = 1;
	}
	STOP_POINT();
	warm_list = malloc(N * sizeof(int32_t));
	if (!warm_list)
		goto nomem;
	for (long i = 0; i < N; i++)
		if (!cold[i])
			warm_list[n_warm++] = (int32_t)i;

	/* items.npy, streamed */
	rows = malloc((size_t)CHUNK * (D > DU ? D : DU) * sizeof(float));
	if (!rows)
		goto nomem;
	ictx = (struct fill_ctx){.p = p, .rng = &r_it, .centre = centre, .cl = ccl, .d = D};
	rc = write_rows(&pub[OUT_ITEMS], N, D, fill_item, &ictx, rows, &pg, "items", err);
	if (rc)
		goto fail;

	/* alias tables per group, over all items (cold ones get clicks too) */
	STOP_POINT();

	goff = calloc((size_t)G + 1, sizeof(int32_t));
	gitem = malloc(N * sizeof(int32_t));
	prob = malloc(N * sizeof(float));
	alias = malloc(N * sizeof(int32_t));
	work = malloc(2 * N * sizeof(int32_t));
	wtmp = malloc(N * sizeof(double));
	if (!goff || !gitem || !prob || !alias || !work || !wtmp)
		goto nomem;
	for (long i = 0; i < N; i++)
		goff[grp[i] + 1]++;
	for (int g = 0; g < G; g++)
		goff[g + 1] += goff[g];
	{
		int32_t *fill = work;
		memcpy(fill, goff, G * sizeof(int32_t));
		for (long i = 0; i < N; i++)
			gitem[fill[grp[i]]++] = (int32_t)i;
	}
	for (int g = 0; g < G; g++) {
		int n = goff[g + 1] - goff[g];
		for (int k = 0; k < n; k++)
			wtmp[k] = pop[gitem[goff[g] + k]];
		if (n > 0)
			alias_build(wtmp, n, prob + goff[g], alias + goff[g], work);
	}

	/* users: favourite groups, activity; users.npy streamed */
	STOP_POINT();

	fav = malloc((size_t)M * MAX_FAV * sizeof(int32_t));
	fav_w = malloc((size_t)M * MAX_FAV * sizeof(float));
	act = malloc(M * sizeof(double));
	if (!fav || !fav_w || !act)
		goto nomem;
	for (long u = 0; u < M; u++) {
		int nf = 1 + (int)rng_below(&r_us, MAX_FAV);
		float ws = 0;
		for (int f = 0; f < MAX_FAV; f++) {
			int32_t g;
			/* a non-empty group, so every draw can find an item */
			do
				g = (int32_t)rng_below(&r_us, (uint64_t)G);
			while (goff[g + 1] == goff[g]);
			fav[u * MAX_FAV + f] = g;
			fav_w[u * MAX_FAV + f] = f < nf ? 0.2f + rng_float(&r_us) : 0.0f;
			ws += fav_w[u * MAX_FAV + f];
		}
		for (int f = 0; f < MAX_FAV; f++)
			fav_w[u * MAX_FAV + f] /= ws;
		act[u] = exp(p->act_sigma * rng_normal(&r_us));
		sum_act += act[u];
	}
	STOP_POINT();
	uctx = (struct fill_ctx){
	    .p = p, .rng = &r_us, .centre = ucentre, .fav = fav, .fav_w = fav_w, .d = DU};
	rc = write_rows(&pub[OUT_USERS], M, DU, fill_user, &uctx, rows, &pg, "users", err);
	if (rc)
		goto fail;

	/* cold_items.txt */
	rc = SID_EIO;
	fcold = open_out(&pub[OUT_COLD], err);
	if (!fcold)
		goto fail;
	for (long i = 0; i < N; i++)
		if (cold[i])
			fprintf(fcold, "%ld\n", i);
	rc = close_out(fcold, pub[OUT_COLD].path, err);
	fcold = NULL;
	if (rc < 0)
		goto fail;
	st->cold_items = n_cold;

	/* clicks, user by user */
	ftrain = open_out(&pub[OUT_TRAIN], err);
	ftest = ftrain ? open_out(&pub[OUT_TEST], err) : NULL;
	fctest = ftest ? open_out(&pub[OUT_CTEST], err) : NULL;
	if (!fctest) {
		rc = SID_EIO;
		goto fail;
	}
	for (long u = 0; u < M; u++) {
		long n = llround((double)p->interactions * act[u] / sum_act);
		long nw_u = 0, nc_u = 0, n_test;
		if (tr_stop_signal()) {
			rc = 1;
			goto fail;
		}
		if (n < 1)
			n = 1;
		if (n > N)
			n = N;
		if (n > cap) {
			free(clicks);
			cap = n * 2 > 64 ? n * 2 : 64;
			clicks = malloc((size_t)cap * 2 * sizeof(int32_t));
			if (!clicks)
				goto nomem;
		}
		/* distinct clicks: redraw repeats, up to 8n draws (tiny groups) */
		size_t hmask = 1;
		while (hmask < (size_t)n * 2)
			hmask <<= 1;
		if (hmask > hcap) {
			free(hset);
			hcap = hmask;
			hset = malloc(hcap * sizeof(int32_t));
			if (!hset)
				goto nomem;
		}
		memset(hset, 0xff, hmask * sizeof(int32_t));
		hmask--;
		long got = 0;
		for (long draw = 0; got < n && draw < 8 * n; draw++) {
			int32_t g;
			if (rng_double(&r_ck) < p->explore) {
				do
					g = (int32_t)rng_below(&r_ck, (uint64_t)G);
				while (goff[g + 1] == goff[g]);
			} else {
				double x = rng_double(&r_ck), acc = 0;
				int f = 0;
				for (; f < MAX_FAV - 1; f++) {
					acc += fav_w[u * MAX_FAV + f];
					if (x < acc)
						break;
				}
				g = fav[u * MAX_FAV + f];
			}
			int32_t ng = goff[g + 1] - goff[g];
			int32_t s = (int32_t)rng_below(&r_ck, (uint64_t)ng);
			if (rng_float(&r_ck) >= prob[goff[g] + s])
				s = alias[goff[g] + s];
			int32_t it = gitem[goff[g] + s];
			size_t h = ((uint32_t)it * 2654435761u) & hmask;
			while (hset[h] >= 0 && hset[h] != it)
				h = (h + 1) & hmask;
			if (hset[h] == it)
				continue;
			hset[h] = it;
			clicks[got++] = it;
		}
		n = got;
		qsort(clicks, (size_t)n, sizeof(int32_t), cmp_i32);
		/* dedupe; split warm (front of clicks + cap) and cold */
		int32_t *warm = clicks + cap;
		for (long k = 0; k < n; k++) {
			if (k > 0 && clicks[k] == clicks[k - 1])
				continue;
			if (cold[clicks[k]]) {
				put_pair(fctest, u, clicks[k]);
				nc_u++;
			} else {
				warm[nw_u++] = clicks[k];
			}
		}
		if (nw_u == 0) /* every user keeps a train click */
			warm[nw_u++] = warm_list[rng_below(&r_ck, (uint64_t)n_warm)];
		/* test: a random test_frac of the warm clicks, at least one stays */
		n_test = (long)floor(p->test_frac * nw_u);
		if (n_test > nw_u - 1)
			n_test = nw_u - 1;
		for (long k = 0; k < n_test; k++) {
			long j = k + (long)rng_below(&r_ck, (uint64_t)(nw_u - k));
			int32_t t = warm[k];
			warm[k] = warm[j];
			warm[j] = t;
		}
		qsort(warm, (size_t)n_test, sizeof(int32_t), cmp_i32);
		qsort(warm + n_test, (size_t)(nw_u - n_test), sizeof(int32_t), cmp_i32);
		for (long k = 0; k < n_test; k++)
			put_pair(ftest, u, warm[k]);
		for (long k = n_test; k < nw_u; k++)
			put_pair(ftrain, u, warm[k]);
		st->train += nw_u - n_test;
		st->test += n_test;
		st->cold_test += nc_u;
		if ((u + 1) % 1024 == 0 || u + 1 == M)
			gen_progress(&pg, "clicks of users", u + 1, M);
	}
	tr_progress_clear(&pg);
	rc = close_out(ftrain, pub[OUT_TRAIN].path, err);
	ftrain = NULL;
	if (rc == 0)
		rc = close_out(ftest, pub[OUT_TEST].path, err);
	ftest = NULL;
	if (rc == 0)
		rc = close_out(fctest, pub[OUT_CTEST].path, err);
	fctest = NULL;
	if (rc == 0 && tr_stop_signal())
		rc = 1;
	/* semid-train refuses an empty file (a malformed input): none is made */
	if (rc == 0 && (!st->cold_items || !st->test || !st->cold_test))
		rc = sid_error_set(err, SID_EINVAL,
				   "%s would be empty (%ld %s at --cold-frac %g, %ld test "
				   "%s at --test-frac %g): semid-train refuses an empty file; "
				   "raise the fraction, or the data's size",
				   !st->cold_items ? "cold_items.txt"
				   : !st->test	   ? "test.tsv"
						   : "cold_test.tsv",
				   st->cold_items, sid_plural(st->cold_items, "item", "items"),
				   p->cold_frac, st->test, sid_plural(st->test, "click", "clicks"),
				   p->test_frac);
	/* every user keeps a train click, so this is one user's data: how many
	 * depends on the draws, hence a check of the count, not of --users */
	if (rc == 0 && st->train < 2)
		rc = sid_error_set(err, SID_EINVAL,
				   "train.tsv would hold %ld %s (--users %ld: each user keeps "
				   "one in train, and its other warm clicks went to test.tsv at "
				   "--test-frac %g): semid-train needs 2 to train (a batch of 2: "
				   "each click's negatives are the batch's others); raise --users "
				   "or --interactions",
				   st->train, sid_plural(st->train, "click", "clicks"), M,
				   p->test_frac);
	/* All complete: into place.  Every file is synced before the first
	 * commit, so a late write error (ENOSPC, EIO at writeback) fails the
	 * run with no file replaced; each commit then syncs again (nothing
	 * left to write), renames and syncs the directory. */
	for (int k = 0; rc == 0 && k < OUT_COUNT; k++)
		if (fsync(pub[k].fd) != 0)
			rc = sid_error_set(err, SID_EIO, "%s: fsync: %s", pub[k].path,
					   strerror(errno));
	if (rc == 0 && tr_stop_signal()) /* the syncs take seconds at 1M */
		rc = 1;
	/* The six renames are one step: a second signal between two of them
	 * ended the process there and left new items.npy beside old
	 * train.tsv, a data set that never was. */
	if (rc == 0) {
		tr_stop_hold();
		for (int k = 0; rc == 0 && k < OUT_COUNT; k++) {
			if (k)
				tr__test_hook_sleep("SEMID_TEST_GEN_COMMIT_DELAY_MS");
			rc = sid_publish_commit(&pub[k], err);
		}
		/* before a signal held meanwhile ends the process: nothing more
		 * is written, and a lock file left would be a seventh file */
		tr_lock_release(&lock);
		tr_stop_release();
	}
	if (0) {
	nomem: /* every allocation failure lands here, then in the one cleanup */
		rc = sid_error_set(err, SID_ENOMEM, "out of memory");
	}
fail:
	if (ftrain)
		fclose(ftrain);
	if (ftest)
		fclose(ftest);
	if (fctest)
		fclose(fctest);
	if (fcold)
		fclose(fcold);
	for (int k = 0; k < OUT_COUNT; k++) /* what is left of this run (committed: no-op) */
		sid_publish_abort(&pub[k]);
	tr_lock_release(&lock); /* (held still if it stopped before the renames) */
	tr_progress_clear(&pg);
	if (rc == 1) {
		rc = tr_stop_signal();
		fprintf(stderr,
			"semid-train gen: stopped by %s; nothing written (%s keeps the files it "
			"had)\n",
			tr_stop_name(rc), out_dir);
	}
	tr_stop_restore(&saved);
	if (ucentre != centre)
		free(ucentre);
	free(centre);
	free(rows);
	free(prob);
	free(fav_w);
	free(ccl);
	free(grp);
	free(alias);
	free(goff);
	free(gitem);
	free(fav);
	free(perm);
	free(work);
	free(clicks);
	free(hset);
	free(warm_list);
	free(pop);
	free(act);
	free(wtmp);
	free(cold);
	return rc;
}
