/*
 * npy.h - NumPy .npy files: a streaming, memory-mapped reader for 2-D arrays
 * and a writer.
 *
 * The reader maps the file read-only and converts rows on request, so inputs
 * larger than RAM are fine.  It accepts format versions 1.0, 2.0 and 3.0,
 * little-endian float32 ('<f4'), float64 ('<f8'), float16 ('<f2') and int32
 * ('<i4'), C order, 2-D shapes (a 1-D shape is rejected with a message that says so).
 * The header is hostile input: its size, dict syntax and the data length
 * against the shape are all checked.
 *
 * Thread-safety: an open reader may be read from many threads at once.
 */
#ifndef SID_NPY_H
#define SID_NPY_H

#include <stddef.h>
#include <stdint.h>

#include "err.h"

/* SID_NPY_F16 is read only (sid_npy_read_f32); the writers refuse it. */
enum sid_npy_dtype { SID_NPY_F32, SID_NPY_F64, SID_NPY_I32, SID_NPY_F16 };

struct sid_npy {
	enum sid_npy_dtype dtype;
	size_t rows, cols;
	const uint8_t *data; /* first element */
	void *map;	     /* private */
	size_t map_len;	     /* private */
};

/* Open and validate; on failure @out is zeroed and @err names the problem. */
int sid_npy_open(const char *path, struct sid_npy *out, struct sid_error *err);
void sid_npy_close(struct sid_npy *f); /* zeroed: no-op */

/*
 * Copy rows [row0, row0+n) into @dst as float32 ((n, cols) row-major),
 * converting float64 (rounded to nearest) and float16 (exactly: every
 * float16 value, subnormals too, is a float32).  A non-finite value fails with SID_EINVAL and
 * err->index = the absolute row (message names row and column).
 * int32 files are rejected here.
 */
int sid_npy_read_f32(const struct sid_npy *f, size_t row0, size_t n, float *dst,
		     struct sid_error *err);

/*
 * 0 when @f holds floats (what sid_npy_read_f32 reads); else SID_EFORMAT,
 * "PATH: has dtype int32 ('<i4'); embeddings must be ...": for readers that
 * want embeddings to refuse an int32 file before any other work.
 */
int sid_npy_check_float(const struct sid_npy *f, const char *path, struct sid_error *err);

/*
 * Hint that rows [0, @row_end) will not be read again: the whole pages from
 * the one holding row @row0 up to the one holding @row_end are dropped from
 * this process's resident set (madvise), so streaming a file larger than RAM
 * keeps the footprint flat.  Callers walking the file pass the previous
 * @row_end as @row0, so each page is released once.  Rows may still be
 * re-read (they fault back in from the file).  Safe to call from any thread.
 */
void sid_npy_release_rows(const struct sid_npy *f, size_t row0, size_t row_end);

/*
 * Write a complete 2-D array to @path (not atomically: for outputs).
 * @data is (rows, cols) of the given dtype.
 */
int sid_npy_write(const char *path, enum sid_npy_dtype dtype, size_t rows, size_t cols,
		  const void *data, struct sid_error *err);

/*
 * Streaming writer for outputs larger than memory: the header (with the final
 * row count) goes first, then rows in order.  sid_npy_writer_close checks that
 * exactly @rows rows were written.
 */
struct sid_npy_writer;
int sid_npy_writer_open(const char *path, enum sid_npy_dtype dtype, size_t rows, size_t cols,
			struct sid_npy_writer **out, struct sid_error *err);
/*
 * The same on an open descriptor, e.g. sid_publish_begin's (fsutil.h): the
 * writer writes through its own duplicate of @fd, never fsyncs it, and
 * neither close nor abort touches @fd or any file name; @name is only for
 * messages.
 */
int sid_npy_writer_fdopen(int fd, const char *name, enum sid_npy_dtype dtype, size_t rows,
			  size_t cols, struct sid_npy_writer **out, struct sid_error *err);
/* Append @n rows (@data: (n, cols) of the dtype); rows beyond the declared
 * count fail with SID_EINVAL and write nothing. */
int sid_npy_writer_rows(struct sid_npy_writer *w, const void *data, size_t n,
			struct sid_error *err);
/* Flush, fsync (a writer opened on a path) and close, freeing @w whatever
 * happens: SID_EINVAL when fewer rows than declared were written (the file
 * is left as written: abort is what removes one), SID_EIO when a write,
 * sync or close failed.  NULL is a no-op. */
int sid_npy_writer_close(struct sid_npy_writer *w, struct sid_error *err);

/* Give up on a writer: close it and remove its file (for failed outputs;
 * an fd writer removes nothing).  NULL is a no-op. */
void sid_npy_writer_abort(struct sid_npy_writer *w);

#endif
