/*
 * fuzz_safetensors.c - libFuzzer harness for the safetensors parser
 * (sid_st_parse), the layer under the model loader and the trainer's
 * checkpoints.
 *
 * An accepted file must describe itself consistently: every tensor's byte
 * range lies inside the data section and matches its shape and dtype, the
 * ranges tile the section, and look-ups by name find each tensor and
 * metadata key.  Every tensor's bytes are read (so ASan sees any range that
 * runs past the buffer), and the file is written back with the writer and
 * parsed again.  A rejection must carry a message.
 * Built and run by tests/fuzz.mk (make fuzz, make fuzz-smoke).
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "safetensors.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void fail(const char *what)
{
	fprintf(stderr, "fuzz_safetensors: %s\n", what);
	abort();
}

static void check_file(const struct sid_st_file *f, const uint8_t *buf, size_t size)
{
	uint64_t covered = 0;
	volatile uint8_t sink = 0;

	if (f->data < buf || f->data_len > size || (size_t)(f->data - buf) > size - f->data_len)
		fail("data section outside the buffer");
	for (size_t i = 0; i < f->n_tensors; i++) {
		const struct sid_st_tensor *t = &f->tensors[i];
		uint64_t n = 1;
		if (t->ndim < 0 || t->ndim > SID_ST_MAX_NDIM || (int)t->dtype < 0 ||
		    t->dtype >= SID_ST_DTYPE_COUNT)
			fail("bad ndim or dtype accepted");
		for (int d = 0; d < t->ndim; d++) {
			if (t->shape[d] < 0)
				fail("negative dimension accepted");
			n *= (uint64_t)t->shape[d];
		}
		if (n != t->nelem || t->begin > t->end || t->end > f->data_len ||
		    t->end - t->begin != n * sid_st_dtype_size(t->dtype))
			fail("tensor range does not match its shape");
		if (t->data != f->data + t->begin)
			fail("tensor data pointer is not data + begin");
		for (uint64_t b = 0; b < t->end - t->begin; b++)
			sink ^= ((const uint8_t *)t->data)[b];
		covered += t->end - t->begin;
		if (sid_st_find(f, t->name) != t)
			fail("find does not return the tensor by its name");
	}
	if (covered != f->data_len)
		fail("tensors do not tile the data section");
	for (size_t i = 0; i < f->n_meta; i++) {
		const char *v = sid_st_meta_get(f, f->meta[i].key);
		if (!v || strcmp(v, f->meta[i].value) != 0)
			fail("meta_get does not return the value");
	}
	(void)sink;
}

/* Write the parsed file back and parse the result: it must hold the same. */
static void round_trip(const struct sid_st_file *f)
{
	struct sid_st_writer *w = sid_st_writer_new();
	struct sid_st_file g;
	struct sid_error err;
	uint8_t *out = NULL;
	size_t out_len = 0;

	if (!w)
		fail("out of memory");
	sid_error_clear(&err);
	for (size_t i = 0; i < f->n_tensors; i++) {
		const struct sid_st_tensor *t = &f->tensors[i];
		if (sid_st_writer_add(w, t->name, t->dtype, t->ndim, t->shape, t->data, &err) < 0)
			fail(err.msg);
	}
	for (size_t i = 0; i < f->n_meta; i++)
		if (sid_st_writer_meta(w, f->meta[i].key, f->meta[i].value, &err) < 0)
			fail(err.msg);
	if (sid_st_writer_serialize(w, &out, &out_len, &err) < 0)
		fail(err.msg);
	if (sid_st_parse(out, out_len, &g, &err) < 0) {
		fprintf(stderr, "fuzz_safetensors: re-parse: %s\n", err.msg);
		fail("the writer's output does not parse");
	}
	if (g.n_tensors != f->n_tensors)
		fail("round trip changed the tensor count");
	for (size_t i = 0; i < g.n_tensors; i++) {
		const struct sid_st_tensor *a = &f->tensors[i], *b = &g.tensors[i];
		if (strcmp(a->name, b->name) != 0 || a->dtype != b->dtype || a->ndim != b->ndim ||
		    a->nelem != b->nelem || a->end - a->begin != b->end - b->begin ||
		    memcmp(a->data, b->data, a->end - a->begin) != 0)
			fail("round trip changed a tensor");
	}
	sid_st_file_release(&g);
	free(out);
	sid_st_writer_free(w);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct sid_st_file f;
	struct sid_error err;

	sid_error_clear(&err);
	if (sid_st_parse(data, size, &f, &err) < 0) {
		if (!err.msg[0])
			fail("rejected without a message");
		sid_st_file_release(&f);
		return 0;
	}
	check_file(&f, data, size);
	round_trip(&f);
	sid_st_file_release(&f);
	return 0;
}
