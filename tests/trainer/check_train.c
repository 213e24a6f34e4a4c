/*
 * check_train.c - tests for trainer/train.c run in process on a small
 * generated data set: a checkpoint write that fails mid-run says what
 * OUT.ckpt holds now, and that is what it holds.  This file defines fsync,
 * which fails with EIO, when told to, after a number of flushes of regular
 * files or of directories (a disk failing between two epochs).
 */
#include <check.h>
#include "check_main.h"
#include <dlfcn.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "config.h"
#include "fsutil.h"
#include "gen.h"
#include "safetensors.h"
#include "train.h"

static char dir[] = "/tmp/check_train.XXXXXX";

/* -1: fsync as it is; n >= 0: n more of that kind succeed, then each fails */
static int file_syncs_left = -1, dir_syncs_left = -1;

int fsync(int fd)
{
	int (*next)(int) = (int (*)(int))dlsym(RTLD_NEXT, "fsync");
	struct stat st;
	int *left = fstat(fd, &st) != 0	  ? NULL
		    : S_ISDIR(st.st_mode) ? &dir_syncs_left
					  : &file_syncs_left;

	if (left && *left == 0) {
		errno = EIO;
		return -1;
	}
	if (left && *left > 0)
		(*left)--;
	return next(fd);
}

static void setup(void)
{
	struct tr_gen_params p;
	struct tr_gen_stats st;
	struct sid_error err;
	char data[64];

	strcpy(dir, "/tmp/check_train.XXXXXX");
	ck_assert_ptr_nonnull(mkdtemp(dir));
	tr_gen_defaults(&p);
	p.items = 300;
	p.users = 200;
	p.interactions = 3000;
	p.dim = 16;
	p.progress = 0;
	snprintf(data, sizeof(data), "%s/data", dir);
	ck_assert_msg(tr_gen_run(&p, data, &st, &err) == 0, "%s", err.msg);
}

static void teardown(void)
{
	char cmd[64];
	file_syncs_left = dir_syncs_left = -1;
	snprintf(cmd, sizeof(cmd), "rm -rf %s", dir);
	ck_assert_int_eq(system(cmd), 0);
}

/* A small, fast training of @epochs into dir/m.st. */
static void small_config(struct tr_config *c, int epochs)
{
	static const char *const flags[][2] = {
	    {"batch-size", "128"},  {"hidden", "16"},	   {"latent-dim", "8"},
	    {"codebook-size", "8"}, {"levels", "2"},	   {"threads", "1"},
	    {"kmeans-iters", "3"},  {"no-progress", NULL}, {"no-eval", NULL},
	};
	struct sid_error err;
	char n[16];

	tr_config_defaults(c);
	snprintf(c->items, sizeof(c->items), "%s/data/items.npy", dir);
	snprintf(c->users, sizeof(c->users), "%s/data/users.npy", dir);
	snprintf(c->train, sizeof(c->train), "%s/data/train.tsv", dir);
	snprintf(c->out, sizeof(c->out), "%s/m.st", dir);
	for (size_t i = 0; i < sizeof(flags) / sizeof(flags[0]); i++)
		ck_assert_msg(tr_config_flag(c, flags[i][0], flags[i][1], &err) >= 0, "%s",
			      err.msg);
	snprintf(n, sizeof(n), "%d", epochs);
	ck_assert_int_eq(tr_config_flag(c, "epochs", n, &err), 1);
}

/* The epochs the checkpoint @path holds (its train.epoch), or -1 if none. */
static long ckpt_epoch(const char *path)
{
	struct sid_st_file f = {0};
	const struct sid_st_tensor *t;
	uint8_t *buf;
	size_t len;
	int64_t ep = -1;

	if (sid_file_read(path, 1 << 28, &buf, &len, NULL) != 0)
		return -1;
	ck_assert_int_eq(sid_st_parse(buf, len, &f, NULL), 0);
	t = sid_st_find(&f, "train.epoch");
	ck_assert_ptr_nonnull(t);
	memcpy(&ep, t->data, sizeof(ep));
	sid_st_file_release(&f);
	free(buf);
	return (long)ep;
}

/*
 * The checkpoint of epoch 2 of 3 fails (the flush of its file: the rename
 * never happens), after each of the three pasts OUT.ckpt can have: this
 * run wrote epoch 1 (loop 0); an earlier run's is there (1); none is (2).
 * The run fails with the flush's error, then says what OUT.ckpt holds:
 * that epoch 1, intact, which --resume continues from; the earlier run's,
 * as it was; or none.  It said only the error, and named a temp file.
 */
START_TEST(test_failed_checkpoint_says_what_is_left)
{
	struct tr_config c;
	struct sid_error err;
	char ckpt[TR_PATH_MAX + 8], want[3 * TR_PATH_MAX];
	struct stat before, after;

	small_config(&c, 3);
	ck_assert_int_eq(tr_ckpt_path(c.out, ckpt, sizeof(ckpt)), 0);
	if (_i == 1) { /* an earlier run stopped after one epoch left its checkpoint */
		c.stop_after = 1;
		ck_assert_msg(tr_train_run(&c, 0, &err) == 0, "%s", err.msg);
		c.stop_after = 0;
		ck_assert_int_eq(stat(ckpt, &before), 0);
	}
	file_syncs_left = _i == 0 ? 1 : 0; /* loop 0: the first checkpoint goes through */
	sid_error_clear(&err);
	ck_assert_int_eq(tr_train_run(&c, 0, &err), SID_EIO);
	file_syncs_left = -1;
	if (_i == 0)
		snprintf(want, sizeof(want),
			 "checkpoint: %s: fsync the temporary file for it: %s; %s is as it was, "
			 "holding epoch 1/3: --resume continues from there",
			 ckpt, strerror(EIO), ckpt);
	else if (_i == 1)
		snprintf(want, sizeof(want),
			 "checkpoint: %s: fsync the temporary file for it: %s; %s is as it was, "
			 "an earlier run's: it holds none of this run's epochs",
			 ckpt, strerror(EIO), ckpt);
	else
		snprintf(want, sizeof(want),
			 "checkpoint: %s: fsync the temporary file for it: %s; there is no "
			 "checkpoint to --resume from",
			 ckpt, strerror(EIO));
	ck_assert_str_eq(err.msg, want);
	ck_assert_int_eq(ckpt_epoch(ckpt), _i == 2 ? -1 : 1);
	if (_i == 1) { /* the very file it was */
		ck_assert_int_eq(stat(ckpt, &after), 0);
		ck_assert_int_eq(after.st_ino, before.st_ino);
		ck_assert_int_eq(after.st_mtime, before.st_mtime);
	}
	ck_assert_int_ne(access(c.out, F_OK), 0); /* nothing published */
	if (_i == 0) {				  /* and --resume goes on from it to the end */
		ck_assert_msg(tr_train_run(&c, 1, &err) == 0, "%s", err.msg);
		ck_assert_int_eq(ckpt_epoch(ckpt), 3);
		ck_assert_int_eq(access(c.out, F_OK), 0);
	}
}
END_TEST

/*
 * The checkpoint of epoch 2 is renamed into place, then the flush of its
 * directory fails: the message says that OUT.ckpt holds epoch 2 (not that
 * it is as it was), and it does.
 */
START_TEST(test_checkpoint_renamed_but_directory_not_synced)
{
	struct tr_config c;
	struct sid_error err;
	char ckpt[TR_PATH_MAX + 8], want[3 * TR_PATH_MAX];

	small_config(&c, 3);
	ck_assert_int_eq(tr_ckpt_path(c.out, ckpt, sizeof(ckpt)), 0);
	dir_syncs_left = 1;
	sid_error_clear(&err);
	ck_assert_int_eq(tr_train_run(&c, 0, &err), SID_EIO);
	dir_syncs_left = -1;
	snprintf(want, sizeof(want),
		 "checkpoint: %s: fsync directory %s: %s; %s holds epoch 2/3 all the same "
		 "(renamed into place, but its directory was not synced: a crash may lose it): "
		 "--resume continues from there",
		 ckpt, dir, strerror(EIO), ckpt);
	ck_assert_str_eq(err.msg, want);
	ck_assert_int_eq(ckpt_epoch(ckpt), 2);
}
END_TEST

static Suite *train_suite(void)
{
	Suite *s = suite_create("train");
	TCase *tc = tcase_create("checkpoint");
	tcase_set_timeout(tc, 120);
	tcase_add_checked_fixture(tc, setup, teardown);
	tcase_add_loop_test(tc, test_failed_checkpoint_says_what_is_left, 0, 3);
	tcase_add_test(tc, test_checkpoint_renamed_but_directory_not_synced);
	suite_add_tcase(s, tc);
	return s;
}

int main(void)
{
	return check_run(train_suite());
}
