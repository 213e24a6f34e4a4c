/*
 * safetensors.h - hostile-input parser and writer for the safetensors format.
 *
 * A safetensors file is: u64 little-endian header length N, N bytes of JSON
 * (an object mapping tensor name -> {"dtype", "shape", "data_offsets"} plus an
 * optional "__metadata__" object of string -> string), then the raw
 * little-endian tensor bytes.  This layer knows nothing about semid models; the
 * model loader (model.h) and the trainer's checkpoints build on it.
 *
 * The parser treats its input as hostile: it caps the header size, rejects
 * duplicate keys, unknown dtypes, shapes whose element count overflows or does
 * not match the byte range, offsets that overlap, leave holes or run past the
 * end of the buffer.  Every rejection fills @err with a message naming the
 * tensor or field and returns SID_EFORMAT.
 *
 * Thread-safety: a parsed struct sid_st_file is read-only and may be shared;
 * a writer belongs to one thread.
 */
#ifndef SID_SAFETENSORS_H
#define SID_SAFETENSORS_H

#include <stddef.h>
#include <stdint.h>

#include "err.h"

#define SID_ST_HEADER_MAX (100u << 20) /* header JSON cap, as upstream */
#define SID_ST_MAX_NDIM	  8

enum sid_st_dtype {
	SID_ST_F64,
	SID_ST_F32,
	SID_ST_F16,
	SID_ST_BF16,
	SID_ST_I64,
	SID_ST_I32,
	SID_ST_I16,
	SID_ST_I8,
	SID_ST_U8,
	SID_ST_BOOL,
	SID_ST_DTYPE_COUNT
};

struct sid_st_tensor {
	char *name; /* owned by the file */
	enum sid_st_dtype dtype;
	int ndim; /* 0 (scalar) .. SID_ST_MAX_NDIM */
	int64_t shape[SID_ST_MAX_NDIM];
	uint64_t nelem;	     /* product of shape (1 for a scalar) */
	uint64_t begin, end; /* byte range inside the data section */
	const void *data;    /* points into the parsed buffer */
};

struct sid_st_meta {
	char *key, *value; /* owned by the file */
};

/*
 * The metadata key under which the writer records the SHA-256 (64 lowercase
 * hex digits) of the data section, and which sid_st_parse checks when a file
 * has it (files written elsewhere need not).
 */
#define SID_ST_DATA_SHA256 "data_sha256"

struct sid_st_file {
	size_t n_tensors;
	struct sid_st_tensor *tensors; /* in header order */
	size_t n_meta;
	struct sid_st_meta *meta; /* "__metadata__" entries, in header order */
	const uint8_t *data;	  /* start of the data section inside the buffer */
	uint64_t data_len;
};

/* Bytes per element of @dt, and its safetensors name ("F32", ...). */
size_t sid_st_dtype_size(enum sid_st_dtype dt);
const char *sid_st_dtype_name(enum sid_st_dtype dt);

/*
 * Parse @buf (@len bytes).  On success @out refers into @buf, which must
 * outlive it; release with sid_st_file_release.  On failure @out is left
 * empty (safe to release) and a message is in @err.
 */
int sid_st_parse(const void *buf, size_t len, struct sid_st_file *out, struct sid_error *err);

/*
 * The first rules sid_st_parse applies, to a file's first @n bytes @head
 * (16, SID_FILE_HEAD_BYTES, are enough for the message's guess at what else
 * the file is) and its size: a header length that fits the file and the
 * cap, then '{'.  0, or SID_EFORMAT with the message sid_st_parse would
 * give; so that a file of another kind is refused before it is read whole.
 */
int sid_st_check_head(const uint8_t *head, size_t n, uint64_t size, struct sid_error *err);
/* The header's length in bytes: a file's first 8, little-endian (the JSON
 * follows). */
uint64_t sid_st_header_len(const uint8_t head[8]);

/*
 * 1 when a file of @size bytes whose first 9 bytes are @head passes the
 * first rules sid_st_parse applies (a header length that fits the file and
 * the cap, then '{'): a model, or meant as one.  A file of another kind (a
 * store, even one with a damaged header) does not.
 */
int sid_st_sniff(const unsigned char head[9], uint64_t size);
/* Free what sid_st_parse allocated (not the buffer) and empty @f; NULL and
 * an empty file are no-ops. */
void sid_st_file_release(struct sid_st_file *f);

/* Look-ups; NULL when absent. */
const struct sid_st_tensor *sid_st_find(const struct sid_st_file *f, const char *name);
const char *sid_st_meta_get(const struct sid_st_file *f, const char *key);

/*
 * Writer: collect tensors and metadata, then serialise.  Tensor data is
 * copied at add time (sid_st_writer_add), so callers may reuse their buffers,
 * or borrowed (sid_st_writer_add_borrowed).  Tensors are laid
 * out in the order added, back to back (no padding between them: the parser,
 * like upstream, requires the data section to be tiled exactly); the header
 * is space-padded so the data section starts 8-aligned, as upstream does.
 * The output is deterministic: the same calls give the same bytes.  Adding
 * the same metadata key twice keeps the later value; adding a tensor name
 * twice is an error.
 */
struct sid_st_writer;

/* A new, empty writer (NULL when out of memory); free(NULL) is a no-op. */
struct sid_st_writer *sid_st_writer_new(void);
void sid_st_writer_free(struct sid_st_writer *w);
/* A tensor of @ndim dimensions @shape and @dtype, its bytes copied from
 * @data (the product of the shape times the dtype's size). */
int sid_st_writer_add(struct sid_st_writer *w, const char *name, enum sid_st_dtype dtype, int ndim,
		      const int64_t *shape, const void *data, struct sid_error *err);
/*
 * The same without the copy: the writer keeps @data itself, which must stay
 * valid and unchanged until the writer is freed (it is read when the writer
 * serialises or publishes, never written or freed).  For large tensors the
 * caller owns anyway, such as a trainer's parameters and optimizer state.
 */
int sid_st_writer_add_borrowed(struct sid_st_writer *w, const char *name, enum sid_st_dtype dtype,
			       int ndim, const int64_t *shape, const void *data,
			       struct sid_error *err);
/* A "__metadata__" entry @key = @value, both copied (a key given twice
 * keeps the later value; SID_ST_DATA_SHA256 is the writer's own). */
int sid_st_writer_meta(struct sid_st_writer *w, const char *key, const char *value,
		       struct sid_error *err);

/* Serialise into a malloc'ed buffer (*out, *out_len); caller frees. */
int sid_st_writer_serialize(const struct sid_st_writer *w, uint8_t **out, size_t *out_len,
			    struct sid_error *err);

/*
 * Publish to @path atomically (temp file in the same directory, fsync,
 * rename, fsync of the directory; see fsutil.h), so a reader never sees a
 * partial file.  Every error message starts with @path.
 */
int sid_st_writer_publish(const struct sid_st_writer *w, const char *path, struct sid_error *err);
/* The same, with @go asked before the rename (sid_publish_atomic_pieces_go):
 * 1, nothing published, when it says no. */
int sid_st_writer_publish_go(const struct sid_st_writer *w, const char *path, int (*go)(void *arg),
			     void *arg, struct sid_error *err);

#endif
