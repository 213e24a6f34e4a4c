/*
 * fuzz_trainer_data.c - libFuzzer harness for the trainer's input readers
 * (trainer/data.h): the interaction tsv (tr_inter_read), the cold-item list
 * (tr_cold_read), the indexes built from them (tr_csr_build) and, for an
 * input that starts with the .npy magic, the embedding reader (tr_emb_open,
 * which scans the whole file for non-finite values, and tr_emb_gather).
 *
 * The input goes into a memfd (fuzz_file.h) and is read as every kind of
 * file, with 16 users and 16 items of which 13..15 are cold.  Accepted data
 * must respect those bounds (every index in range, no cold item in the
 * interactions, the index rows sorted); a rejection must name a line or row
 * (err->index) and carry a message.
 * Built and run by tests/fuzz.mk (make fuzz, make fuzz-smoke).
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "data.h"
#include "fuzz_file.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define N_USERS 16
#define N_ITEMS 16

static void fail(const char *what)
{
	fprintf(stderr, "fuzz_trainer_data: %s\n", what);
	abort();
}

static void check_csr(const struct tr_csr *c, size_t rows, size_t n, size_t cols)
{
	if (c->rows != rows || c->off[0] != 0 || (size_t)c->off[rows] != n)
		fail("index offsets do not cover the interactions");
	for (size_t r = 0; r < rows; r++) {
		if (c->off[r] > c->off[r + 1])
			fail("index offsets decrease");
		for (int64_t k = c->off[r]; k < c->off[r + 1]; k++) {
			if (c->idx[k] < 0 || (size_t)c->idx[k] >= cols)
				fail("index entry out of range");
			if (k > c->off[r] && c->idx[k - 1] > c->idx[k])
				fail("index row not sorted");
			if (!tr_csr_has(c, r, c->idx[k]))
				fail("tr_csr_has misses an entry");
		}
	}
}

static void read_inter(const char *path, const uint8_t *cold)
{
	struct tr_inter t;
	struct tr_csr by_user = {0}, by_item = {0};
	struct sid_error err;

	sid_error_clear(&err);
	if (tr_inter_read(path, N_USERS, N_ITEMS, cold, &t, &err) < 0) {
		if (!err.msg[0] || t.user || t.n)
			fail("interactions rejected without a message, or not released");
		return;
	}
	if (t.n == 0)
		fail("accepted a file with no interactions");
	for (size_t i = 0; i < t.n; i++)
		if (t.user[i] < 0 || t.user[i] >= N_USERS || t.item[i] < 0 ||
		    t.item[i] >= N_ITEMS || (cold && cold[t.item[i]]))
			fail("accepted an interaction out of range or with a cold item");
	if (tr_csr_build(&by_user, N_USERS, t.user, t.item, t.n, &err) < 0 ||
	    tr_csr_build(&by_item, N_ITEMS, t.item, t.user, t.n, &err) < 0)
		fail(err.msg);
	check_csr(&by_user, N_USERS, t.n, N_ITEMS);
	check_csr(&by_item, N_ITEMS, t.n, N_USERS);
	tr_csr_release(&by_user);
	tr_csr_release(&by_item);
	tr_inter_release(&t);
}

static void read_cold(const char *path)
{
	struct sid_error err;
	uint8_t *cold = NULL;
	size_t n_cold = 0, seen = 0;

	sid_error_clear(&err);
	if (tr_cold_read(path, N_ITEMS, &cold, &n_cold, &err) < 0) {
		if (!err.msg[0] || cold)
			fail("cold list rejected without a message, or not released");
		return;
	}
	for (size_t i = 0; i < N_ITEMS; i++)
		seen += cold[i] != 0;
	if (seen != n_cold)
		fail("cold count does not match the flags");
	free(cold);
}

static void read_emb(const char *path)
{
	struct tr_emb e;
	struct sid_error err;
	int32_t idx[3];
	float *dst;

	sid_error_clear(&err);
	if (tr_emb_open(&e, path, &err) < 0) {
		if (!err.msg[0] || e.path)
			fail("embeddings rejected without a message, or not released");
		return;
	}
	if (e.n == 0 || e.d <= 0)
		fail("accepted an empty embedding matrix");
	idx[0] = 0;
	idx[1] = (int32_t)(e.n - 1);
	idx[2] = (int32_t)(e.n / 2);
	dst = malloc(3 * (size_t)e.d * sizeof(float));
	if (!dst)
		fail("out of memory");
	if (tr_emb_gather(&e, idx, 3, dst, &err) < 0)
		fail("gather of rows in range failed after a full scan accepted them");
	idx[0] = (int32_t)e.n;
	if (tr_emb_gather(&e, idx, 1, dst, &err) == 0)
		fail("gather of a row out of range succeeded");
	free(dst);
	tr_emb_close(&e);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static const uint8_t cold[N_ITEMS] = {[13] = 1, [14] = 1, [15] = 1};
	char path[64];
	int fd = fuzz_file_new(data, size, path, sizeof(path));

	if (size >= 6 && memcmp(data, "\x93NUMPY", 6) == 0) {
		read_emb(path);
	} else {
		read_inter(path, cold);
		read_inter(path, NULL);
		read_cold(path);
	}
	close(fd);
	return 0;
}
