/*
 * check_data.c - tests for trainer/data.c: interaction and cold-list parsing
 * (good files, and every malformed case with the file name, the line and
 * err->index), embedding checks (NaN row named), the per-user / per-item
 * indexes and counts, and the batcher (every interaction once per epoch,
 * same batches for the same seed and epoch, valid view partners).
 */
#include <check.h>
#include "check_main.h"
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "data.h"
#include "npy.h"

static char tmpdir[256];

static void setup(void)
{
	snprintf(tmpdir, sizeof(tmpdir), "/tmp/check_data.XXXXXX");
	ck_assert_ptr_nonnull(mkdtemp(tmpdir));
}

static void teardown(void)
{
	char cmd[300];
	snprintf(cmd, sizeof(cmd), "rm -rf %s", tmpdir);
	ck_assert_int_eq(system(cmd), 0);
}

/* Write @text to a file in tmpdir; returns its path (static buffer per slot). */
static const char *write_file(const char *name, const char *text, size_t len)
{
	static char paths[8][300];
	static int slot;
	char *p = paths[slot++ % 8];
	snprintf(p, 300, "%s/%s", tmpdir, name);
	FILE *f = fopen(p, "wb");
	ck_assert_ptr_nonnull(f);
	ck_assert_uint_eq(fwrite(text, 1, len, f), len);
	fclose(f);
	return p;
}

#define WRITE(name, lit) write_file(name, lit, sizeof(lit) - 1)

START_TEST(test_inter_good)
{
	struct tr_inter t;
	struct sid_error err;
	/* extra columns ignored, CRLF accepted, no final newline accepted */
	const char *p = WRITE("good.tsv", "0\t1\n2\t0\t5\tfoo\r\n1\t3");
	ck_assert_int_eq(tr_inter_read(p, 3, 4, NULL, &t, &err), 0);
	ck_assert_uint_eq(t.n, 3);
	ck_assert_int_eq(t.user[0], 0);
	ck_assert_int_eq(t.item[0], 1);
	ck_assert_int_eq(t.user[1], 2);
	ck_assert_int_eq(t.item[1], 0);
	ck_assert_int_eq(t.user[2], 1);
	ck_assert_int_eq(t.item[2], 3);
	tr_inter_release(&t);
	/* a UTF-8 byte-order mark (Excel, PowerShell) is not part of line 1 */
	p = WRITE("bom.tsv", "\xef\xbb\xbf"
			     "2\t3\r\n0\t1\r\n");
	ck_assert_int_eq(tr_inter_read(p, 3, 4, NULL, &t, &err), 0);
	ck_assert_uint_eq(t.n, 2);
	ck_assert_int_eq(t.user[0], 2);
	ck_assert_int_eq(t.item[0], 3);
	tr_inter_release(&t);
}
END_TEST

/* A header line, as most exports write one, was "not a non-negative
 * integer" and nothing more; said to be one on line 1 only. */
START_TEST(test_inter_header_line)
{
	struct tr_inter t;
	struct sid_error err;
	char want[400];
	const char *p = WRITE("hdr.tsv", "userID\titemID\trating\n0\t1\t1\n");

	ck_assert_int_eq(tr_inter_read(p, 3, 4, NULL, &t, &err), SID_EFORMAT);
	snprintf(want, sizeof(want),
		 "%s:1: user field of \"userID\\titemID\\trating\" is not a non-negative "
		 "integer (a header line? the file has none: drop it, tail -n +2)",
		 p);
	ck_assert_str_eq(err.msg, want);
	p = WRITE("mid.tsv", "0\t1\nuser\titem\n");
	ck_assert_int_eq(tr_inter_read(p, 3, 4, NULL, &t, &err), SID_EFORMAT);
	snprintf(want, sizeof(want),
		 "%s:2: user field of \"user\\titem\" is not a non-negative integer", p);
	ck_assert_str_eq(err.msg, want);
	p = WRITE("neg.tsv", "-1\t1\n");
	ck_assert_int_eq(tr_inter_read(p, 3, 4, NULL, &t, &err), SID_EFORMAT);
	ck_assert_ptr_null(strstr(err.msg, "header"));
}
END_TEST

struct bad_case {
	const char *text;
	long line;
	const char *needle;
};

START_TEST(test_inter_malformed)
{
	static const struct bad_case cases[] = {
	    {"0\t1\n2\n", 2, "ragged"},
	    {"0\t1\n1 2\n", 2, "ragged"},
	    {"a\t1\n", 1, "user field"},
	    {"0\t1\n0\t1.5\n", 2, "item field"},
	    {"0\t1\n-1\t2\n", 2, "user field"},
	    {"0\t\n", 1, "item field"},
	    {"0\t1\n0\t1\n3\t0\n", 3, "user 3 out of range"},
	    {"0\t4\n", 1, "item 4 out of range"},
	    {"0\t99999999999\n", 1, "item field"},
	    {"0\t1\n2147483648\t1\n", 2, "user field of \"2147483648\\t1\" is above 2147483647"},
	    {"0\t1\n\n1\t2\n", 2, "empty line"},
	    {"", 0, "empty file"},
	};
	for (size_t k = 0; k < sizeof(cases) / sizeof(cases[0]); k++) {
		struct tr_inter t;
		struct sid_error err;
		char expect[400];
		const char *p = write_file("bad.tsv", cases[k].text, strlen(cases[k].text));
		sid_error_clear(&err);
		ck_assert_int_eq(tr_inter_read(p, 3, 4, NULL, &t, &err), SID_EFORMAT);
		ck_assert_msg(strstr(err.msg, cases[k].needle), "case %zu: %s", k, err.msg);
		if (cases[k].line > 0) {
			snprintf(expect, sizeof(expect), "%s:%ld:", p, cases[k].line);
			ck_assert_msg(strstr(err.msg, expect), "case %zu: %s lacks %s", k, err.msg,
				      expect);
			ck_assert_int_eq(err.index, cases[k].line);
		} else {
			ck_assert_msg(strstr(err.msg, p), "case %zu: %s", k, err.msg);
		}
		ck_assert_uint_eq(t.n, 0);
	}
	/* a missing file names itself */
	struct tr_inter t;
	struct sid_error err;
	ck_assert_int_lt(tr_inter_read("/nonexistent/x.tsv", 3, 4, NULL, &t, &err), 0);
	ck_assert_ptr_nonnull(strstr(err.msg, "/nonexistent/x.tsv"));
}
END_TEST

START_TEST(test_inter_cold_in_train)
{
	uint8_t cold[4] = {0, 0, 1, 0};
	struct tr_inter t;
	struct sid_error err;
	const char *p = WRITE("train.tsv", "0\t1\n1\t2\n");
	ck_assert_int_eq(tr_inter_read(p, 3, 4, cold, &t, &err), SID_EFORMAT);
	ck_assert_ptr_nonnull(strstr(err.msg, ":2: item 2 is in the cold-item list"));
}
END_TEST

START_TEST(test_cold_list)
{
	uint8_t *cold;
	size_t n;
	struct sid_error err;
	const char *p = WRITE("cold.txt", "3\n1\n");
	ck_assert_int_eq(tr_cold_read(p, 5, &cold, &n, &err), 0);
	ck_assert_uint_eq(n, 2);
	ck_assert_int_eq(cold[0] + cold[2] + cold[4], 0);
	ck_assert_int_eq(cold[1] & cold[3], 1);
	free(cold);

	p = WRITE("cold.txt", "3\n3\n");
	ck_assert_int_eq(tr_cold_read(p, 5, &cold, &n, &err), SID_EFORMAT);
	ck_assert_ptr_nonnull(strstr(err.msg, ":2: item 3 listed twice"));
	ck_assert_ptr_null(cold);
	p = WRITE("cold.txt", "1\n5\n");
	ck_assert_int_eq(tr_cold_read(p, 5, &cold, &n, &err), SID_EFORMAT);
	ck_assert_ptr_nonnull(strstr(err.msg, ":2: item 5 out of range"));
	p = WRITE("cold.txt", "1\t2\n");
	ck_assert_int_eq(tr_cold_read(p, 5, &cold, &n, &err), SID_EFORMAT);
	ck_assert_ptr_nonnull(strstr(err.msg, ":1: \"1\\t2\" is not an item index"));
	p = WRITE("cold.txt", "");
	ck_assert_int_eq(tr_cold_read(p, 5, &cold, &n, &err), SID_EFORMAT);
	ck_assert_ptr_nonnull(strstr(err.msg, "empty file"));
	/* a byte-order mark is skipped; one alone is still an empty file */
	p = WRITE("cold.txt", "\xef\xbb\xbf"
			      "4\n");
	ck_assert_int_eq(tr_cold_read(p, 5, &cold, &n, &err), 0);
	ck_assert_uint_eq(n, 1);
	ck_assert_int_eq(cold[4], 1);
	free(cold);
	p = WRITE("cold.txt", "\xef\xbb\xbf");
	ck_assert_int_eq(tr_cold_read(p, 5, &cold, &n, &err), SID_EFORMAT);
	ck_assert_ptr_nonnull(strstr(err.msg, "empty file"));
}
END_TEST

START_TEST(test_emb_checks)
{
	struct tr_emb e;
	struct sid_error err;
	char p[300];
	float x[4 * 3];
	int32_t ints[6] = {0};
	for (int i = 0; i < 12; i++)
		x[i] = (float)i;
	snprintf(p, sizeof(p), "%s/e.npy", tmpdir);
	ck_assert_int_eq(sid_npy_write(p, SID_NPY_F32, 4, 3, x, &err), 0);
	ck_assert_int_eq(tr_emb_open(&e, p, &err), 0);
	ck_assert_uint_eq(e.n, 4);
	ck_assert_int_eq(e.d, 3);
	int32_t idx[2] = {3, 1};
	float out[6];
	ck_assert_int_eq(tr_emb_gather(&e, idx, 2, out, &err), 0);
	ck_assert(out[0] == 9 && out[2] == 11 && out[3] == 3 && out[5] == 5);
	idx[1] = 4;
	ck_assert_int_lt(tr_emb_gather(&e, idx, 2, out, &err), 0);
	tr_emb_close(&e);

	x[2 * 3 + 1] = NAN; /* row 2 */
	ck_assert_int_eq(sid_npy_write(p, SID_NPY_F32, 4, 3, x, &err), 0);
	sid_error_clear(&err);
	ck_assert_int_eq(tr_emb_open(&e, p, &err), SID_EFORMAT);
	ck_assert_msg(strstr(err.msg, p) && strstr(err.msg, "row 2"), "%s", err.msg);
	ck_assert_int_eq(err.index, 2);

	ck_assert_int_eq(sid_npy_write(p, SID_NPY_I32, 2, 3, ints, &err), 0);
	ck_assert_int_eq(tr_emb_open(&e, p, &err), SID_EFORMAT);
	ck_assert_msg(strstr(err.msg, "int32"), "%s", err.msg);

	const char *bad = WRITE("bad.npy", "not an npy file at all");
	ck_assert_int_eq(tr_emb_open(&e, bad, &err), SID_EFORMAT);
	ck_assert_msg(strstr(err.msg, bad), "%s", err.msg);
}
END_TEST

/* A small data set on disk: 4 users, 5 items (item 4 cold). */
static void small_data(struct tr_data *d, const char *train)
{
	char pi[300], pu[300];
	float xi[5 * 2], xu[4 * 2];
	struct sid_error err;
	for (int i = 0; i < 10; i++)
		xi[i] = (float)i;
	for (int i = 0; i < 8; i++)
		xu[i] = (float)-i;
	snprintf(pi, sizeof(pi), "%s/items.npy", tmpdir);
	snprintf(pu, sizeof(pu), "%s/users.npy", tmpdir);
	ck_assert_int_eq(sid_npy_write(pi, SID_NPY_F32, 5, 2, xi, &err), 0);
	ck_assert_int_eq(sid_npy_write(pu, SID_NPY_F32, 4, 2, xu, &err), 0);
	const char *pt = write_file("train.tsv", train, strlen(train));
	const char *pc = WRITE("cold.txt", "4\n");
	ck_assert_msg(tr_data_load(d, pi, pu, pt, pc, &err) == 0, "%s", err.msg);
}

START_TEST(test_indexes)
{
	struct tr_data d;
	small_data(&d, "0\t3\n0\t1\n1\t1\n2\t0\n2\t1\n2\t2\n3\t1\n");
	ck_assert_uint_eq(d.train.n, 7);
	ck_assert_uint_eq(d.n_cold, 1);
	ck_assert_uint_eq(d.n_warm_items, 4);
	/* by_user row 0 = {1, 3} sorted */
	ck_assert_int_eq(d.by_user.off[1] - d.by_user.off[0], 2);
	ck_assert_int_eq(d.by_user.idx[0], 1);
	ck_assert_int_eq(d.by_user.idx[1], 3);
	ck_assert(tr_csr_has(&d.by_user, 2, 2));
	ck_assert(!tr_csr_has(&d.by_user, 1, 0));
	ck_assert(tr_csr_has(&d.by_item, 1, 3));
	int64_t pop[5] = {1, 4, 1, 1, 0}, act[4] = {2, 1, 3, 1};
	for (int i = 0; i < 5; i++)
		ck_assert_int_eq(d.item_pop[i], pop[i]);
	for (int u = 0; u < 4; u++)
		ck_assert_int_eq(d.user_act[u], act[u]);
	tr_data_release(&d);
}
END_TEST

START_TEST(test_batcher)
{
	struct tr_data d;
	struct tr_batcher bt, bt2;
	struct sid_error err;
	int seen[12];
	int32_t first[2][12];
	/* 12 interactions: every (u, i) with u < 4, i < 3 */
	char text[256] = "";
	for (int u = 0; u < 4; u++)
		for (int i = 0; i < 3; i++)
			snprintf(text + strlen(text), sizeof(text) - strlen(text), "%d\t%d\n", u,
				 i);
	small_data(&d, text);
	ck_assert_int_eq(tr_batcher_init(&bt, &d, 4, 7, &err), 0);
	ck_assert_int_eq(tr_batcher_init(&bt2, &d, 4, 7, &err), 0);
	ck_assert_uint_eq(tr_batcher_count(&bt), 3);
	for (int e = 0; e < 2; e++) {
		memset(seen, 0, sizeof(seen));
		tr_batcher_epoch(&bt, e);
		for (size_t b = 0; b < 3; b++) {
			const struct tr_batch *tb = tr_batcher_get(&bt, b);
			ck_assert_uint_eq(tb->B, 4);
			for (size_t k = 0; k < 4; k++) {
				int u = tb->user[k], i = tb->item[k];
				seen[u * 3 + i]++;
				first[e][b * 4 + k] = u * 3 + i;
				/* partners: another user of the item, another item of the user */
				ck_assert(tb->user2[k] >= 0 && tb->user2[k] != u);
				ck_assert(tr_csr_has(&d.by_item, (size_t)i, tb->user2[k]));
				ck_assert(tb->item2[k] >= 0 && tb->item2[k] != i);
				ck_assert(tr_csr_has(&d.by_user, (size_t)u, tb->item2[k]));
			}
		}
		for (int k = 0; k < 12; k++)
			ck_assert_int_eq(seen[k], 1);
	}
	/* epochs differ; the same (seed, epoch, batch) gives the same batch */
	ck_assert(memcmp(first[0], first[1], sizeof(first[0])) != 0);
	tr_batcher_epoch(&bt2, 1);
	tr_batcher_epoch(&bt, 1);
	for (size_t b = 0; b < 3; b++) {
		const struct tr_batch *x = tr_batcher_get(&bt, b);
		int32_t u[4], i[4], u2[4], i2[4];
		memcpy(u, x->user, sizeof(u));
		memcpy(i, x->item, sizeof(i));
		memcpy(u2, x->user2, sizeof(u2));
		memcpy(i2, x->item2, sizeof(i2));
		const struct tr_batch *y = tr_batcher_get(&bt2, 2 - b); /* other order */
		y = tr_batcher_get(&bt2, b);
		ck_assert(!memcmp(u, y->user, sizeof(u)) && !memcmp(i, y->item, sizeof(i)));
		ck_assert(!memcmp(u2, y->user2, sizeof(u2)) && !memcmp(i2, y->item2, sizeof(i2)));
	}
	tr_batcher_release(&bt);
	tr_batcher_release(&bt2);
	tr_data_release(&d);

	/* a user with one item and an item with one user have no partner: -1 */
	small_data(&d, "0\t0\n1\t1\n1\t2\n");
	ck_assert_int_eq(tr_batcher_init(&bt, &d, 3, 1, &err), 0);
	tr_batcher_epoch(&bt, 0);
	const struct tr_batch *tb = tr_batcher_get(&bt, 0);
	for (size_t k = 0; k < 3; k++) {
		ck_assert_int_eq(tb->user2[k], -1);
		if (tb->user[k] == 0)
			ck_assert_int_eq(tb->item2[k], -1);
		else
			ck_assert_int_eq(tb->item2[k], 3 - tb->item[k]);
	}
	tr_batcher_release(&bt);
	tr_data_release(&d);

	/* one interaction cannot make a batch of two: refused here, naming the
	 * train data, not in the middle of the first epoch */
	small_data(&d, "0\t1\n");
	ck_assert_int_eq(tr_batcher_init(&bt, &d, 8, 1, &err), SID_EINVAL);
	ck_assert_msg(strstr(err.msg, "1 interaction; training needs 2"), "%s", err.msg);
	tr_batcher_release(&bt);
	tr_data_release(&d);
}
END_TEST

static Suite *data_suite(void)
{
	Suite *s = suite_create("trainer_data");
	TCase *tc = tcase_create("data");
	tcase_set_timeout(tc, 60);
	tcase_add_checked_fixture(tc, setup, teardown);
	tcase_add_test(tc, test_inter_good);
	tcase_add_test(tc, test_inter_header_line);
	tcase_add_test(tc, test_inter_malformed);
	tcase_add_test(tc, test_inter_cold_in_train);
	tcase_add_test(tc, test_cold_list);
	tcase_add_test(tc, test_emb_checks);
	tcase_add_test(tc, test_indexes);
	tcase_add_test(tc, test_batcher);
	suite_add_tcase(s, tc);
	return s;
}

int main(void)
{
	return check_run(data_suite());
}
