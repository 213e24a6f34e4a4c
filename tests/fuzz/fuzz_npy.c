/*
 * fuzz_npy.c - libFuzzer harness for the .npy reader (sid_npy_open and
 * sid_npy_read_f32), which `semid encode` and the trainer use on files from
 * users.
 *
 * The input is a whole .npy file, opened through a memfd (fuzz_file.h).  An
 * accepted file must have its data inside the mapping (every row is read, in
 * chunks, so ASan sees any row past the end); reading rows out of range must
 * fail; a non-finite value must fail naming its row.  A rejection must carry a
 * message.  Built and run by tests/fuzz.mk (make fuzz, make fuzz-smoke).
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "fuzz_file.h"
#include "npy.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define CHUNK 3 /* rows per read: small, so chunk boundaries get exercised */

static void fail(const char *what)
{
	fprintf(stderr, "fuzz_npy: %s\n", what);
	abort();
}

static void read_all(const struct sid_npy *f)
{
	struct sid_error err;
	float *buf;
	size_t esz = f->dtype == SID_NPY_F64 ? 8 : f->dtype == SID_NPY_F16 ? 2 : 4;

	if (f->cols && f->rows > (size_t)-1 / f->cols / esz)
		fail("accepted a shape whose size overflows");
	if (f->data < (const uint8_t *)f->map ||
	    f->rows * f->cols * esz > f->map_len - (size_t)(f->data - (const uint8_t *)f->map))
		fail("accepted data that runs past the file");
	sid_error_clear(&err);
	if (sid_npy_read_f32(f, f->rows, 1, NULL, &err) == 0)
		fail("reading a row past the end succeeded");
	/* (0, huge) is a valid empty array: nothing to read, and no row buffer */
	if (f->rows == 0 || f->cols == 0 || f->dtype == SID_NPY_I32) {
		float dummy;
		if (f->dtype == SID_NPY_I32 && sid_npy_read_f32(f, 0, 0, &dummy, &err) == 0)
			fail("int32 read as float");
		return;
	}
	buf = malloc(CHUNK * f->cols * sizeof(float));
	if (!buf)
		fail("out of memory");
	for (size_t r = 0; r < f->rows; r += CHUNK) {
		size_t n = f->rows - r < CHUNK ? f->rows - r : CHUNK;
		sid_error_clear(&err);
		if (sid_npy_read_f32(f, r, n, buf, &err) < 0) {
			if (err.code != SID_EINVAL || err.index < (long)r ||
			    err.index >= (long)(r + n))
				fail("a failed read does not name a row of its range");
			break;
		}
		sid_npy_release_rows(f, r, r + n);
	}
	free(buf);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct sid_npy f;
	struct sid_error err;
	char path[64];
	int fd = fuzz_file_new(data, size, path, sizeof(path));

	sid_error_clear(&err);
	if (sid_npy_open(path, &f, &err) < 0) {
		if (!err.msg[0] || f.map)
			fail("rejected without a message, or left mapped");
	} else {
		read_all(&f);
		sid_npy_close(&f);
	}
	close(fd);
	return 0;
}
