/*
 * check_safetensors.c - tests for core/safetensors.c: every container-level
 * rejection (each bad file is written by hand here and must give SID_EFORMAT
 * with a message naming the tensor or field), a hand-assembled valid file,
 * writer -> parser round trips with exact bytes, writer argument errors, and
 * truncation / byte-flip loops that must never crash.
 */
#include <check.h>
#include "check_main.h"
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "fsutil.h"
#include "model_builder.h"
#include "safetensors.h"

/* Parse a hand-written file; assert SID_EFORMAT and that the message holds @want. */
static void expect_bad_raw(const uint8_t *buf, size_t len, const char *want, const char *what)
{
	struct sid_st_file f;
	struct sid_error err;
	sid_error_clear(&err);
	int rc = sid_st_parse(buf, len, &f, &err);
	ck_assert_msg(rc == SID_EFORMAT, "%s: rc %d (%s)", what, rc, err.msg);
	ck_assert_msg(strstr(err.msg, want) != NULL, "%s: message '%s' lacks '%s'", what, err.msg,
		      want);
	ck_assert_uint_eq(f.n_tensors, 0); /* left empty, safe to release */
	ck_assert_ptr_null(f.tensors);
	sid_st_file_release(&f);
}

static void expect_bad(const char *header, size_t data_len, const char *want)
{
	size_t len;
	uint8_t *buf = mb_raw_file(header, NULL, data_len, &len);
	ck_assert_ptr_nonnull(buf);
	expect_bad_raw(buf, len, want, header);
	free(buf);
}

START_TEST(test_bad_length_field)
{
	uint8_t small[7] = {0};
	expect_bad_raw(small, sizeof(small), "too short", "7 bytes");
	expect_bad_raw(small, 0, "too short", "empty");

	/* Header length above the cap (checked before it is compared with the file). */
	uint8_t buf[64] = {0};
	uint64_t n = (uint64_t)SID_ST_HEADER_MAX + 1;
	for (int b = 0; b < 8; b++)
		buf[b] = (uint8_t)(n >> (8 * b));
	expect_bad_raw(buf, sizeof(buf), "exceeds the cap", "header over cap");
	/* Huge length (would overflow 8 + n). */
	memset(buf, 0xff, 8);
	expect_bad_raw(buf, sizeof(buf), "exceeds the cap", "header 2^64-1");

	/* Header length longer than the file. */
	size_t len;
	uint8_t *f = mb_raw_file("{}", NULL, 0, &len);
	f[0] = 3;
	expect_bad_raw(f, len, "runs past the end", "header past end");
	free(f);
}
END_TEST

/* A file that is plainly something else (the files an operator mistakes for
 * a model: the embeddings, a PyTorch checkpoint, the ID registry, a
 * compressed copy) is named as such, beside the rule it breaks. */
START_TEST(test_foreign_files_named)
{
	static const struct {
		const char *head;
		size_t n;
		const char *rule, *want;
	} files[] = {
	    {"\x93NUMPY\x01\x00v\x00{'descr': '<f4', 'fortran_order': False, 'shape': (2, 4), }",
	     61, "exceeds the cap", "it looks like a .npy array, not a safetensors model"},
	    {"PK\x03\x04\x00\x00\x08\x08\x00\x00"
	     "archive/data.pkl",
	     26, "exceeds the cap",
	     "it looks like a zip archive (a PyTorch torch.save file?), not a safetensors model"},
	    {"\x80\x02\x8a\x0al\xfc\x9c"
	     "F\xf9 j\xa8P\x19.",
	     16, "exceeds the cap",
	     "it looks like a Python pickle (a PyTorch torch.save file?), not a safetensors model"},
	    {"SQLite format 3\x00\x10\x00\x02\x02\x00@  ", 24, "exceeds the cap",
	     "it looks like an SQLite database (the ID registry?), not a safetensors model"},
	    {"\x1f\x8b\x08\x00\x00\x00\x00\x00\x00\x03\xec\xbd", 12, "runs past the end",
	     "it looks like gzip-compressed data (decompress it first), not a safetensors model"},
	    {"(\xb5/\xfd\x04\x00\x00\x00\x00\x00\x00\x00", 12, "exceeds the cap",
	     "it looks like zstd-compressed data (decompress it first), not a safetensors model"},
	    /* text: an eval.json, a config, a TSV given for the model was
	     * "header length 8316006042217816699 exceeds the cap" alone */
	    {"{\n  \"epochs\": 1", 16, "exceeds the cap",
	     "it looks like a text file (JSON, TSV?), not a safetensors model"},
	    {"0\t0\n0\t49\n", 9, "exceeds the cap",
	     "it looks like a text file (JSON, TSV?), not a safetensors model"},
	};
	uint8_t buf[64];
	for (size_t i = 0; i < sizeof(files) / sizeof(files[0]); i++) {
		memset(buf, ' ', sizeof(buf));
		memcpy(buf, files[i].head, files[i].n);
		expect_bad_raw(buf, sizeof(buf), files[i].rule, files[i].head);
		expect_bad_raw(buf, sizeof(buf), files[i].want, files[i].head);
	}
	/* gzip's first 8 bytes give a header length of 559903: in a larger
	 * file, the third rule fails (the header does not start with '{'). */
	size_t big = 600000;
	uint8_t *gz = calloc(1, big);
	ck_assert_ptr_nonnull(gz);
	memcpy(gz, files[4].head, files[4].n);
	expect_bad_raw(gz, big, "header is not a JSON object", "a large gzip file");
	expect_bad_raw(gz, big, files[4].want, "a large gzip file");
	free(gz);
	/* A file none of these names keeps the bare rule. */
	memset(buf, 0x7f, sizeof(buf));
	struct sid_st_file f;
	struct sid_error err;
	sid_error_clear(&err);
	ck_assert_int_eq(sid_st_parse(buf, sizeof(buf), &f, &err), SID_EFORMAT);
	ck_assert_msg(strstr(err.msg, "exceeds the cap") && !strstr(err.msg, "looks like"), "%s",
		      err.msg);
}
END_TEST

/* sid_st_sniff: the first nine bytes and the size, judged as the parser's
 * first rules judge them. */
START_TEST(test_sniff)
{
	/* header length 2 ("{}"), then '{' */
	const unsigned char model[9] = {2, 0, 0, 0, 0, 0, 0, 0, '{'};
	const unsigned char sqlite[9] = "SQLite fo";
	const unsigned char list[9] = {2, 0, 0, 0, 0, 0, 0, 0, '['};
	const unsigned char huge[9] = {0, 0, 0, 0, 0, 0, 0, 1, '{'};

	ck_assert_int_eq(sid_st_sniff(model, 10), 1);
	ck_assert_int_eq(sid_st_sniff(model, 9), 0); /* the header runs past the end */
	ck_assert_int_eq(sid_st_sniff(sqlite, 4096), 0);
	ck_assert_int_eq(sid_st_sniff(list, 10), 0);
	ck_assert_int_eq(sid_st_sniff(huge, UINT64_MAX), 0); /* over the cap */
}
END_TEST

START_TEST(test_bad_json)
{
	expect_bad("{\"a\":", 0, "header JSON");
	expect_bad("[1, 2]", 0, "not a JSON object");
	expect_bad("  {}", 0, "not a JSON object"); /* must start with '{', as upstream */
	expect_bad("{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]},"
		   "\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[4,8]}}",
		   8, "duplicate");
	expect_bad("{\"__metadata__\":{\"k\":\"1\",\"k\":\"2\"}}", 0, "duplicate");
	/* Invalid UTF-8 in a key. */
	expect_bad("{\"\xff\":{}}", 0, "header JSON");
	/* Trailing garbage after the object. */
	expect_bad("{} x", 0, "header JSON");

	/* A NUL byte inside the header. */
	size_t len;
	uint8_t *buf = mb_raw_file("{\"a\" :{}}", NULL, 0, &len);
	buf[8 + 4] = 0;
	expect_bad_raw(buf, len, "NUL byte at byte offset 12", "nul");
	free(buf);
}
END_TEST

START_TEST(test_bad_tensor_fields)
{
	expect_bad("{\"w\":[1]}", 0, "tensor 'w': entry is not an object");
	expect_bad("{\"w\":{\"shape\":[1],\"data_offsets\":[0,4]}}", 4,
		   "tensor 'w': dtype missing");
	expect_bad("{\"w\":{\"dtype\":7,\"shape\":[1],\"data_offsets\":[0,4]}}", 4,
		   "tensor 'w': dtype missing or not a string");
	expect_bad("{\"w\":{\"dtype\":\"Q7\",\"shape\":[1],\"data_offsets\":[0,4]}}", 4,
		   "tensor 'w': unknown dtype 'Q7'");
	expect_bad("{\"w\":{\"dtype\":\"f32\",\"shape\":[1],\"data_offsets\":[0,4]}}", 4,
		   "tensor 'w': unknown dtype 'f32'");
	expect_bad("{\"w\":{\"dtype\":\"F32\",\"data_offsets\":[0,4]}}", 4,
		   "tensor 'w': shape missing");
	expect_bad("{\"w\":{\"dtype\":\"F32\",\"shape\":[1,1,1,1,1,1,1,1,1],"
		   "\"data_offsets\":[0,4]}}",
		   4, "tensor 'w': 9 dimensions, more than 8");
	expect_bad("{\"w\":{\"dtype\":\"F32\",\"shape\":[2,-1],\"data_offsets\":[0,4]}}", 4,
		   "tensor 'w': shape[1] is not a non-negative integer");
	expect_bad("{\"w\":{\"dtype\":\"F32\",\"shape\":[1.0],\"data_offsets\":[0,4]}}", 4,
		   "tensor 'w': shape[0] is not a non-negative integer");
	expect_bad("{\"w\":{\"dtype\":\"F32\",\"shape\":[\"1\"],\"data_offsets\":[0,4]}}", 4,
		   "tensor 'w': shape[0] is not a non-negative integer");
	expect_bad("{\"w\":{\"dtype\":\"F32\",\"shape\":[1]}}", 4,
		   "tensor 'w': data_offsets missing");
	expect_bad("{\"w\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4,8]}}", 4,
		   "tensor 'w': data_offsets missing or not a pair");
	expect_bad("{\"w\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[-4,0]}}", 4,
		   "tensor 'w': data_offsets are not non-negative integers");
	expect_bad("{\"w\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4.0]}}", 4,
		   "tensor 'w': data_offsets are not non-negative integers");
	expect_bad("{\"w\":{\"dtype\":\"F32\",\"shape\":[0],\"data_offsets\":[4,0]}}", 4,
		   "tensor 'w': data_offsets [4, 0) end before they begin");
	/* found by fuzz_safetensors: read, but the writer cannot write it back */
	expect_bad("{\"\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]}}", 4,
		   "a tensor has an empty name");
	/* A number too large for a 64-bit integer is a JSON-level error. */
	expect_bad("{\"w\":{\"dtype\":\"F32\",\"shape\":[99999999999999999999],"
		   "\"data_offsets\":[0,4]}}",
		   4, "header JSON");
}
END_TEST

START_TEST(test_bad_sizes)
{
	/* 2^32 * 2^32 overflows at the second dimension. */
	expect_bad("{\"big\":{\"dtype\":\"U8\",\"shape\":[4294967296,4294967296],"
		   "\"data_offsets\":[0,4]}}",
		   4, "tensor 'big': element count overflows at shape[1]");
	/* 2^61 elements of 8 bytes: the count fits, the byte size does not. */
	expect_bad("{\"big\":{\"dtype\":\"F64\",\"shape\":[2305843009213693952],"
		   "\"data_offsets\":[0,8]}}",
		   8, "tensor 'big': byte size overflows");
	/* Byte range not equal to nelem * dtype size. */
	expect_bad("{\"w\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,12]}}", 12,
		   "tensor 'w': data_offsets [0, 12) hold 12 bytes, but shape and dtype F32 "
		   "need 8");
	expect_bad("{\"w\":{\"dtype\":\"BF16\",\"shape\":[2,3],\"data_offsets\":[0,6]}}", 6,
		   "need 12");
	/* Scalar: nelem 1. */
	expect_bad("{\"s\":{\"dtype\":\"I64\",\"shape\":[],\"data_offsets\":[0,4]}}", 4,
		   "tensor 's': data_offsets [0, 4) hold 4 bytes, but shape and dtype I64 need 8");
}
END_TEST

START_TEST(test_bad_layout)
{
	expect_bad("{\"item.codebook.0\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]},"
		   "\"item.codebook.1\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[4,12]}}",
		   12, "tensor 'item.codebook.1': data_offsets [4, 12) overlap 'item.codebook.0'");
	/* Same in the other header order: the later begin is named. */
	expect_bad("{\"b\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[4,12]},"
		   "\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]}}",
		   12, "tensor 'b': data_offsets [4, 12) overlap 'a'");
	/* Exactly the same range twice. */
	expect_bad("{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]},"
		   "\"b\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]}}",
		   8, "overlap");
	/* A zero-size tensor inside another one. */
	expect_bad("{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]},"
		   "\"z\":{\"dtype\":\"F32\",\"shape\":[0],\"data_offsets\":[4,4]}}",
		   8, "tensor 'z': data_offsets [4, 4) overlap 'a'");
	expect_bad("{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]},"
		   "\"b\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[8,12]}}",
		   12, "tensor 'b': data_offsets [8, 12) leave a hole of 4 bytes");
	expect_bad("{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[4,8]}}", 8,
		   "tensor 'a': data_offsets [4, 8) leave a hole of 4 bytes");
	expect_bad("{\"a\":{\"dtype\":\"F32\",\"shape\":[3],\"data_offsets\":[0,12]}}", 8,
		   "tensor 'a': data_offsets [0, 12) run past the end of the 8-byte data section");
	expect_bad("{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]}}", 8,
		   "data section has 4 bytes after the last tensor 'a'");
	expect_bad("{}", 3, "data section has 3 bytes but no tensor covers them");
}
END_TEST

/* Names have any length, a message SID_ERROR_MSG_MAX bytes: a long name is
 * shown cut (between characters) with "...", and the reason stays.  Two
 * 600-byte names in an overlap message pushed the reason out entirely. */
START_TEST(test_long_names_keep_the_reason)
{
	static char header[4096], a[701], b[701], want[1024];
	int n;

	memset(a, 'a', 600);
	a[600] = '\0';
	/* 119 ASCII bytes, then 2-byte characters: byte 120 is inside one */
	memset(b, 'b', 119);
	for (int i = 119; i + 1 < 700; i += 2)
		memcpy(b + i, "\xc3\xa9", 2);
	b[699] = '\0';
	n = snprintf(header, sizeof(header),
		     "{\"%s\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]},"
		     "\"%s\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[4,12]}}",
		     a, b);
	ck_assert_int_lt(n, (int)sizeof(header));
	snprintf(want, sizeof(want), "tensor '%.119s...': data_offsets [4, 12) overlap '%.120s...'",
		 b, a);
	expect_bad(header, 12, want);
	snprintf(header, sizeof(header),
		 "{\"%s\":{\"dtype\":\"F8\",\"shape\":[2],\"data_offsets\":[0,8]}}", a);
	expect_bad(header, 8, "...': unknown dtype 'F8'");
	snprintf(header, sizeof(header), "{\"__metadata__\":{\"%s\":1}}", a);
	expect_bad(header, 0, "...': value is not a string");
	/* a dtype too is cut between characters: '%.32s' cut its 33rd byte's
	 * character in two, and the message was not UTF-8 */
	expect_bad("{\"w\":{\"dtype\":\"FFFFFFFFFFFFFFFFFFFFFFFFFFFFFFF\xc3\xa9\xc3\xa9\","
		   "\"shape\":[1],\"data_offsets\":[0,4]}}",
		   4,
		   "tensor 'w': unknown dtype 'FFFFFFFFFFFFFFFFFFFFFFFFFFFFFFF\xc3\xa9\xc3\xa9'");
	snprintf(header, sizeof(header),
		 "{\"w\":{\"dtype\":\"%s\",\"shape\":[1],\"data_offsets\":[0,4]}}", b);
	snprintf(want, sizeof(want), "tensor 'w': unknown dtype '%.119s...'", b);
	expect_bad(header, 4, want);
	/* a name of exactly SID_NAME_SHOWN bytes is shown whole */
	a[SID_NAME_SHOWN] = '\0';
	snprintf(header, sizeof(header),
		 "{\"%s\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]}}", a);
	snprintf(want, sizeof(want), "the last tensor '%s' (ends at 4 of 8)", a);
	expect_bad(header, 8, want);
}
END_TEST

START_TEST(test_bad_metadata)
{
	expect_bad("{\"__metadata__\":[\"x\"]}", 0, "__metadata__ is not an object of strings");
	expect_bad("{\"__metadata__\":\"x\"}", 0, "__metadata__ is not an object of strings");
	expect_bad("{\"__metadata__\":{\"a\":\"1\",\"n\":2}}", 0,
		   "__metadata__ key 'n': value is not a string");
	expect_bad("{\"__metadata__\":{\"o\":{}}}", 0,
		   "__metadata__ key 'o': value is not a string");
	expect_bad("{\"__metadata__\":{\"data_sha256\":\"ABC\"}}", 0,
		   "__metadata__ data_sha256 is not 64 lowercase hex digits");
}
END_TEST

/* A file assembled by hand from the format description, byte by byte. */
START_TEST(test_parse_handmade)
{
	const char *hdr = "{\"__metadata__\":{\"format\":\"pt\"},"
			  "\"b\":{\"dtype\":\"I16\",\"shape\":[],\"data_offsets\":[8,10]},"
			  "\"a\":{\"dtype\":\"F32\",\"shape\":[1,2],\"data_offsets\":[0,8]},"
			  "\"e\":{\"dtype\":\"F64\",\"shape\":[0,5],\"data_offsets\":[10,10]},"
			  "\"extra\":{\"dtype\":\"U8\",\"shape\":[2],\"data_offsets\":[10,12],"
			  "\"unknown_field\":1}}";
	uint8_t data[12];
	float two[2] = {1.5f, -2.25f};
	int16_t s = -7;
	memcpy(data, two, 8);
	memcpy(data + 8, &s, 2);
	data[10] = 200;
	data[11] = 1;
	size_t len;
	uint8_t *buf = mb_raw_file(hdr, data, sizeof(data), &len);
	struct sid_st_file f;
	struct sid_error err;

	ck_assert_int_eq(sid_st_parse(buf, len, &f, &err), 0);
	ck_assert_uint_eq(f.n_tensors, 4);
	ck_assert_str_eq(f.tensors[0].name, "b"); /* header order */
	ck_assert_str_eq(f.tensors[1].name, "a");
	ck_assert_str_eq(f.tensors[2].name, "e");
	ck_assert_int_eq(f.tensors[0].ndim, 0);
	ck_assert_uint_eq(f.tensors[0].nelem, 1);
	ck_assert_int_eq(f.tensors[0].dtype, SID_ST_I16);
	ck_assert_uint_eq(f.tensors[2].nelem, 0);
	ck_assert_uint_eq(f.data_len, 12);
	ck_assert_ptr_eq(f.data, buf + 8 + strlen(hdr));

	const struct sid_st_tensor *a = sid_st_find(&f, "a");
	ck_assert_ptr_nonnull(a);
	ck_assert_int_eq(a->dtype, SID_ST_F32);
	ck_assert_int_eq(a->ndim, 2);
	ck_assert_int_eq(a->shape[0], 1);
	ck_assert_int_eq(a->shape[1], 2);
	ck_assert_uint_eq(a->begin, 0);
	ck_assert_uint_eq(a->end, 8);
	ck_assert_mem_eq(a->data, two, 8);
	ck_assert_mem_eq(sid_st_find(&f, "b")->data, &s, 2);
	ck_assert_int_eq(((const uint8_t *)sid_st_find(&f, "extra")->data)[0], 200);
	ck_assert_ptr_null(sid_st_find(&f, "zz"));
	ck_assert_uint_eq(f.n_meta, 1);
	ck_assert_str_eq(sid_st_meta_get(&f, "format"), "pt");
	ck_assert_ptr_null(sid_st_meta_get(&f, "nope"));
	sid_st_file_release(&f);
	sid_st_file_release(&f); /* released twice: no-op */
	free(buf);

	/* Empty file {} with no data: valid, no tensors. */
	buf = mb_raw_file("{}", NULL, 0, &len);
	ck_assert_int_eq(sid_st_parse(buf, len, &f, &err), 0);
	ck_assert_uint_eq(f.n_tensors, 0);
	sid_st_file_release(&f);
	free(buf);
}
END_TEST

START_TEST(test_dtype_names)
{
	static const char *names[] = {"F64", "F32", "F16", "BF16", "I64",
				      "I32", "I16", "I8",  "U8",   "BOOL"};
	static const size_t sizes[] = {8, 4, 2, 2, 8, 4, 2, 1, 1, 1};
	for (int i = 0; i < SID_ST_DTYPE_COUNT; i++) {
		ck_assert_str_eq(sid_st_dtype_name((enum sid_st_dtype)i), names[i]);
		ck_assert_uint_eq(sid_st_dtype_size((enum sid_st_dtype)i), sizes[i]);
	}
	ck_assert_uint_eq(sid_st_dtype_size(SID_ST_DTYPE_COUNT), 0);
}
END_TEST

START_TEST(test_writer_round_trip)
{
	struct sid_st_writer *w = sid_st_writer_new();
	struct sid_error err;
	float m[2][3] = {{1, 2, 3}, {4, 5, -6.5f}};
	double d[3] = {1e300, -0.0, 3.25};
	int64_t step = 123456789012345ll;
	uint8_t bytes[5] = {1, 2, 3, 4, 5};
	int64_t sm[2] = {2, 3}, sd[1] = {3}, sb[1] = {5}, sz[2] = {0, 4};
	uint8_t *out, *out2;
	size_t len, len2;
	struct sid_st_file f;

	ck_assert_ptr_nonnull(w);
	ck_assert_int_eq(sid_st_writer_add(w, "m", SID_ST_F32, 2, sm, m, &err), 0);
	ck_assert_int_eq(sid_st_writer_add(w, "bytes", SID_ST_U8, 1, sb, bytes, &err), 0);
	ck_assert_int_eq(sid_st_writer_add(w, "d", SID_ST_F64, 1, sd, d, &err), 0);
	ck_assert_int_eq(sid_st_writer_add(w, "step", SID_ST_I64, 0, NULL, &step, &err), 0);
	ck_assert_int_eq(sid_st_writer_add(w, "empty", SID_ST_F32, 2, sz, NULL, &err), 0);
	ck_assert_int_eq(sid_st_writer_meta(w, "k", "old", &err), 0);
	ck_assert_int_eq(sid_st_writer_meta(w, "json", "{\"a\": [1, \"\\u00e9\"]}", &err), 0);
	ck_assert_int_eq(sid_st_writer_meta(w, "k", "v\xc3\xa9", &err), 0); /* later wins */
	m[0][0] = 99; /* data was copied at add time */

	ck_assert_int_eq(sid_st_writer_serialize(w, &out, &len, &err), 0);
	ck_assert_int_eq(sid_st_writer_serialize(w, &out2, &len2, &err), 0);
	ck_assert_uint_eq(len, len2);
	ck_assert_mem_eq(out, out2, len); /* deterministic */
	free(out2);

	uint64_t hlen = 0;
	for (int b = 7; b >= 0; b--)
		hlen = hlen << 8 | out[b];
	ck_assert_uint_eq(hlen % 8, 0);
	ck_assert_uint_eq(len, 8 + hlen + 24 + 5 + 24 + 8);
	ck_assert_int_eq(out[8], '{');
	ck_assert(out[8 + hlen - 1] == ' ' || out[8 + hlen - 1] == '}');

	ck_assert_int_eq(sid_st_parse(out, len, &f, &err), 0);
	ck_assert_uint_eq(f.n_tensors, 5);
	const char *order[] = {"m", "bytes", "d", "step", "empty"};
	uint64_t begin = 0;
	for (int i = 0; i < 5; i++) {
		ck_assert_str_eq(f.tensors[i].name, order[i]);
		ck_assert_uint_eq(f.tensors[i].begin, begin); /* order added, back to back */
		begin = f.tensors[i].end;
	}
	const struct sid_st_tensor *t = sid_st_find(&f, "m");
	float expect_m[6] = {1, 2, 3, 4, 5, -6.5f};
	ck_assert_int_eq(t->ndim, 2);
	ck_assert_int_eq(t->shape[0], 2);
	ck_assert_int_eq(t->shape[1], 3);
	ck_assert_mem_eq(t->data, expect_m, sizeof(expect_m));
	ck_assert_mem_eq(sid_st_find(&f, "d")->data, d, sizeof(d));
	ck_assert_mem_eq(sid_st_find(&f, "bytes")->data, bytes, 5);
	ck_assert_mem_eq(sid_st_find(&f, "step")->data, &step, 8);
	ck_assert_int_eq(sid_st_find(&f, "step")->ndim, 0);
	ck_assert_uint_eq(sid_st_find(&f, "empty")->nelem, 0);
	ck_assert_str_eq(sid_st_meta_get(&f, "k"), "v\xc3\xa9");
	ck_assert_str_eq(sid_st_meta_get(&f, "json"), "{\"a\": [1, \"\\u00e9\"]}");
	ck_assert_uint_eq(f.n_meta, 3);
	{ /* the writer's checksum: SHA-256 of the data section, computed here apart */
		char hex[65];
		sid_sha256_hex(f.data, (size_t)f.data_len, hex);
		ck_assert_str_eq(sid_st_meta_get(&f, SID_ST_DATA_SHA256), hex);
	}
	sid_st_file_release(&f);

	/* publish writes exactly the serialized bytes. */
	char dir[] = "/tmp/check_st.XXXXXX", path[128];
	ck_assert_ptr_nonnull(mkdtemp(dir));
	snprintf(path, sizeof(path), "%s/w.safetensors", dir);
	ck_assert_int_eq(sid_st_writer_publish(w, path, &err), 0);
	ck_assert_int_eq(sid_file_read(path, 1 << 20, &out2, &len2, &err), 0);
	ck_assert_uint_eq(len2, len);
	ck_assert_mem_eq(out2, out, len);
	free(out2);
	unlink(path);
	rmdir(dir);
	free(out);
	sid_st_writer_free(w);
	sid_st_writer_free(NULL);
}
END_TEST

START_TEST(test_writer_errors)
{
	struct sid_st_writer *w = sid_st_writer_new();
	struct sid_error err;
	float x[4] = {0};
	int64_t s1[1] = {4}, neg[1] = {-1}, nine[9] = {1, 1, 1, 1, 1, 1, 1, 1, 1};

	ck_assert_int_eq(sid_st_writer_add(w, "a", SID_ST_F32, 1, s1, x, &err), 0);
	ck_assert_int_eq(sid_st_writer_add(w, "a", SID_ST_F32, 1, s1, x, &err), SID_EINVAL);
	ck_assert_ptr_nonnull(strstr(err.msg, "'a' added twice"));
	ck_assert_int_eq(sid_st_writer_add(w, "__metadata__", SID_ST_F32, 1, s1, x, &err),
			 SID_EINVAL);
	ck_assert_int_eq(sid_st_writer_add(w, "", SID_ST_F32, 1, s1, x, &err), SID_EINVAL);
	ck_assert_int_eq(sid_st_writer_add(w, "n", SID_ST_F32, 1, neg, x, &err), SID_EINVAL);
	ck_assert_ptr_nonnull(strstr(err.msg, "'n'"));
	ck_assert_int_eq(sid_st_writer_add(w, "n", SID_ST_F32, 9, nine, x, &err), SID_EINVAL);
	ck_assert_int_eq(sid_st_writer_add(w, "n", SID_ST_DTYPE_COUNT, 1, s1, x, &err), SID_EINVAL);
	ck_assert_int_eq(sid_st_writer_add(w, "n", SID_ST_F32, 1, s1, NULL, &err), SID_EINVAL);
	/* Invalid UTF-8 in a name is caught when serialising. */
	ck_assert_int_eq(sid_st_writer_add(w, "bad\xff", SID_ST_F32, 1, s1, x, &err), 0);
	uint8_t *out;
	size_t len;
	ck_assert_int_eq(sid_st_writer_serialize(w, &out, &len, &err), SID_EINVAL);
	ck_assert_ptr_null(out);
	ck_assert_ptr_nonnull(strstr(err.msg, "not valid UTF-8"));
	/* the same code without an error record (it said out of memory) */
	ck_assert_int_eq(sid_st_writer_serialize(w, &out, &len, NULL), SID_EINVAL);
	ck_assert_ptr_null(out);
	/* publish names the file in every message, the header's faults too */
	ck_assert_int_eq(sid_st_writer_publish(w, "/nonexistent-dir/m.st", &err), SID_EINVAL);
	ck_assert_msg(!strncmp(err.msg, "/nonexistent-dir/m.st: ", 23) &&
			  strstr(err.msg, "not valid UTF-8"),
		      "%s", err.msg);
	sid_st_writer_free(w);
	w = sid_st_writer_new();
	ck_assert_int_eq(sid_st_writer_publish(w, "/nonexistent-dir/m.st", &err), SID_EIO);
	ck_assert_msg(!strncmp(err.msg, "/nonexistent-dir/m.st: ", 23), "%s", err.msg);
	sid_st_writer_free(w);
}
END_TEST

/* A borrowed tensor: same bytes as a copied one, read when serialising (so a
 * change after the add shows), never freed by the writer (valgrind/ASan
 * would see a double free of the stack buffer otherwise). */
START_TEST(test_writer_borrowed)
{
	struct sid_st_writer *a = sid_st_writer_new(), *b = sid_st_writer_new();
	struct sid_error err;
	float x[6] = {1, 2, 3, 4, 5, 6}, y[2] = {7, 8};
	int64_t sx[2] = {2, 3}, sy[1] = {2};
	uint8_t *oa, *ob;
	size_t la, lb;
	struct sid_st_file f;

	ck_assert_int_eq(sid_st_writer_add(a, "x", SID_ST_F32, 2, sx, x, &err), 0);
	ck_assert_int_eq(sid_st_writer_add(a, "y", SID_ST_F32, 1, sy, y, &err), 0);
	ck_assert_int_eq(sid_st_writer_add_borrowed(b, "x", SID_ST_F32, 2, sx, x, &err), 0);
	ck_assert_int_eq(sid_st_writer_add(b, "y", SID_ST_F32, 1, sy, y, &err), 0);
	ck_assert_int_eq(sid_st_writer_add_borrowed(b, "x", SID_ST_F32, 2, sx, x, &err),
			 SID_EINVAL); /* the same checks as a copied add */
	ck_assert_int_eq(sid_st_writer_add_borrowed(b, "z", SID_ST_F32, 1, sy, NULL, &err),
			 SID_EINVAL);
	{ /* an empty tensor needs no data, borrowed or copied */
		int64_t s0[1] = {0};
		ck_assert_int_eq(sid_st_writer_add(a, "e", SID_ST_F32, 1, s0, NULL, &err), 0);
		ck_assert_int_eq(sid_st_writer_add_borrowed(b, "e", SID_ST_F32, 1, s0, NULL, &err),
				 0);
	}
	ck_assert_int_eq(sid_st_writer_serialize(a, &oa, &la, &err), 0);
	ck_assert_int_eq(sid_st_writer_serialize(b, &ob, &lb, &err), 0);
	ck_assert_uint_eq(la, lb);
	ck_assert_mem_eq(oa, ob, la);
	free(ob);

	x[5] = -1; /* b reads x again; a has its copy */
	ck_assert_int_eq(sid_st_writer_serialize(b, &ob, &lb, &err), 0);
	ck_assert_int_eq(sid_st_parse(ob, lb, &f, &err), 0);
	ck_assert_float_eq(((const float *)sid_st_find(&f, "x")->data)[5], -1.0f);
	sid_st_file_release(&f);
	ck_assert_int_eq(sid_st_parse(oa, la, &f, &err), 0);
	ck_assert_float_eq(((const float *)sid_st_find(&f, "x")->data)[5], 6.0f);
	sid_st_file_release(&f);
	free(oa);
	free(ob);
	sid_st_writer_free(a);
	sid_st_writer_free(b);
}
END_TEST

/*
 * Every prefix of a valid file, and random byte flips: parse must return
 * 0 or SID_EFORMAT (never crash, never another code), and on success every
 * tensor's range must lie inside the buffer.
 */
START_TEST(test_truncate_and_flip)
{
	struct mb_spec s;
	struct sid_error err;
	uint8_t *buf, *copy;
	size_t len;
	struct sid_st_file f;
	uint64_t rng = 7;

	mb_spec_init(&s);
	s.extra_tensors = 1;
	ck_assert_int_eq(mb_build_buffer(&s, &buf, &len, &err), 0);
	copy = malloc(len);
	for (size_t n = 0; n < len; n++) {
		memcpy(copy, buf, n);
		int rc = sid_st_parse(copy, n, &f, &err);
		ck_assert_msg(rc == SID_EFORMAT, "prefix %zu of %zu: rc %d", n, len, rc);
		sid_st_file_release(&f);
	}
	int ok = 0;
	for (int iter = 0; iter < 20000; iter++) {
		memcpy(copy, buf, len);
		int flips = 1 + (int)(mb_rand_u64(&rng) % 4);
		for (int k = 0; k < flips; k++) {
			/* Mostly the header, where the structure is. */
			size_t hl = (size_t)buf[0] | (size_t)buf[1] << 8;
			size_t at = mb_rand_u64(&rng) % (iter % 4 ? hl + 8 : len);
			copy[at] ^= (uint8_t)(1 + mb_rand_u64(&rng) % 255);
		}
		int rc = sid_st_parse(copy, len, &f, &err);
		ck_assert_msg(rc == 0 || rc == SID_EFORMAT, "iter %d: rc %d", iter, rc);
		if (rc == 0) {
			ok++;
			for (size_t i = 0; i < f.n_tensors; i++) {
				const struct sid_st_tensor *t = &f.tensors[i];
				ck_assert((const uint8_t *)t->data >= copy);
				ck_assert((const uint8_t *)t->data + (t->end - t->begin) <=
					  copy + len);
			}
		}
		sid_st_file_release(&f);
	}
	(void)ok; /* structurally harmless flips exist (metadata text, padding) */
	/* Any flip in the data section is caught by the writer's data_sha256. */
	{
		size_t hl = (size_t)buf[0] | (size_t)buf[1] << 8;
		ck_assert_uint_gt(len, 8 + hl);
		for (size_t at = 8 + hl; at < len; at += 1 + (len - 8 - hl) / 97) {
			memcpy(copy, buf, len);
			copy[at] ^= (uint8_t)(1u << (at % 8));
			int rc = sid_st_parse(copy, len, &f, &err);
			ck_assert_msg(rc == SID_EFORMAT && strstr(err.msg, "data_sha256") &&
					  strstr(err.msg, "corrupt"),
				      "flip at %zu: rc %d %s", at, rc, err.msg);
		}
	}
	free(copy);
	free(buf);
}
END_TEST

static Suite *st_suite(void)
{
	Suite *s = suite_create("safetensors");
	TCase *tc = tcase_create("reject");
	tcase_set_timeout(tc, 60);
	tcase_add_test(tc, test_bad_length_field);
	tcase_add_test(tc, test_long_names_keep_the_reason);
	tcase_add_test(tc, test_foreign_files_named);
	tcase_add_test(tc, test_bad_json);
	tcase_add_test(tc, test_bad_tensor_fields);
	tcase_add_test(tc, test_bad_sizes);
	tcase_add_test(tc, test_bad_layout);
	tcase_add_test(tc, test_bad_metadata);
	suite_add_tcase(s, tc);

	tc = tcase_create("valid");
	tcase_set_timeout(tc, 60);
	tcase_add_test(tc, test_parse_handmade);
	tcase_add_test(tc, test_dtype_names);
	tcase_add_test(tc, test_writer_round_trip);
	tcase_add_test(tc, test_writer_errors);
	tcase_add_test(tc, test_writer_borrowed);
	tcase_add_test(tc, test_sniff);
	suite_add_tcase(s, tc);

	tc = tcase_create("fuzz");
	tcase_set_timeout(tc, 120);
	tcase_add_test(tc, test_truncate_and_flip);
	suite_add_tcase(s, tc);
	return s;
}

int main(void)
{
	return check_run(st_suite());
}
