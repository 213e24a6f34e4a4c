/*
 * encode_example.c - a program built against an installed libsemid, the way
 * a user's own program would be (tests/meta/test_install.py builds it):
 *
 *   make install
 *   cc encode_example.c $(pkg-config --cflags --libs semid) -o encode_example
 *   ./encode_example model.safetensors x.npy
 *
 * Encodes the rows of x.npy (float32, float64 or float16, (N, D)) with the model's
 * item tower and prints row<TAB>sid per line, as `semid encode -o -` does.
 */
#include <semid/encode.h>
#include <semid/model.h>
#include <semid/npy.h>
#include <stdio.h>
#include <stdlib.h>

int main(int argc, char **argv)
{
	struct sid_model *m = NULL;
	struct sid_npy x = {0};
	struct sid_workspace *ws = NULL;
	struct sid_error err;
	const struct sid_tower *t;
	float *row = NULL;
	int32_t codes[SID_MAX_LEVELS];
	char sid[256];
	int rc = 1;

	sid_error_clear(&err);
	if (argc != 3) {
		fprintf(stderr, "usage: %s MODEL X.npy\n", argv[0]);
		return 2;
	}
	if (sid_model_load(argv[1], &m, &err) || sid_npy_open(argv[2], &x, &err))
		goto out;
	t = sid_model_tower(m, SID_TOWER_ITEM);
	if (!t || (int)x.cols != t->D) {
		fprintf(stderr, "%s: no item tower of width %zu\n", argv[1], x.cols);
		goto out;
	}
	ws = sid_workspace_new();
	row = malloc(x.cols * sizeof(*row));
	if (!ws || !row)
		goto out;
	for (size_t i = 0; i < x.rows; i++) {
		struct sid_encode_out o = {.codes = codes};
		if (sid_npy_read_f32(&x, i, 1, row, &err) || sid_encode(t, row, 1, &o, ws, &err))
			goto out;
		sid_codes_format(codes, t->L, SID_FORMAT_DASH, sid, sizeof(sid));
		printf("%zu\t%s\n", i, sid);
	}
	rc = 0;
out:
	if (rc && err.msg[0])
		fprintf(stderr, "encode_example: %s\n", err.msg);
	free(row);
	sid_workspace_free(ws);
	sid_npy_close(&x);
	sid_model_unref(m);
	return rc;
}
