/*
 * check_model.c - tests for core/model.c: every profile rejection (bad files
 * built here with tests/model_builder.h hooks; each must give SID_EFORMAT and
 * a message naming the tensor or field), happy paths (two towers, one tower,
 * no bias, non-uniform K, ignored extra tensors), exact copies, 64-byte
 * alignment, cached codeword norms against hand-computed values, reference
 * counting from several threads, describe_json, and truncation / byte-flip
 * loops that must end in an error or a valid model, never a crash.
 */
#include <check.h>
#include "check_main.h"
#include <jansson.h>
#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include "fsutil.h"
#include "model.h"
#include "model_builder.h"
#include "safetensors.h"

/* ---- edits applied by the builder hook ---- */

enum edit_op { ED_OMIT, ED_OMIT_PREFIX, ED_RENAME, ED_DTYPE, ED_RESHAPE, ED_SET };

struct edit {
	enum edit_op op;
	const char *name; /* tensor (or prefix for ED_OMIT_PREFIX) */
	const char *new_name;
	enum sid_st_dtype dtype;
	int ndim;
	int64_t shape[SID_ST_MAX_NDIM];
	size_t index;
	float value;
};

struct edits {
	int n;
	struct edit e[6];
};

static int edit_hook(void *ctx, struct mb_tensor *t)
{
	struct edits *ed = ctx;
	for (int i = 0; i < ed->n; i++) {
		const struct edit *e = &ed->e[i];
		if (e->op == ED_OMIT_PREFIX) {
			if (strncmp(t->name, e->name, strlen(e->name)) == 0)
				return MB_OMIT;
			continue;
		}
		if (strcmp(t->name, e->name) != 0)
			continue;
		switch (e->op) {
		case ED_OMIT:
			return MB_OMIT;
		case ED_RENAME:
			snprintf(t->name, sizeof(t->name), "%s", e->new_name);
			break;
		case ED_DTYPE:
			t->dtype = e->dtype;
			break;
		case ED_RESHAPE: {
			size_t n = 1;
			t->ndim = e->ndim;
			for (int d = 0; d < e->ndim; d++) {
				t->shape[d] = e->shape[d];
				n *= (size_t)e->shape[d];
			}
			if (n * 4 != t->nbytes) {
				free(t->data);
				t->nbytes = n * 4;
				t->data = malloc(t->nbytes ? t->nbytes : 1);
				for (size_t k = 0; k < n; k++)
					((float *)t->data)[k] = 0.25f;
			}
			break;
		}
		case ED_SET:
			((float *)t->data)[e->index] = e->value;
			break;
		default:
			break;
		}
	}
	return MB_KEEP;
}

static void spec_with(struct mb_spec *s, struct edits *ed)
{
	s->hook = edit_hook;
	s->hook_ctx = ed;
}

/* Default spec plus a 3-layer item tower 8 -> 16 -> 12 -> 4, L=3, K={5,7,3}. */
static void spec_three_layers(struct mb_spec *s)
{
	static const int hidden[] = {16, 12};
	static const int K[] = {5, 7, 3};
	mb_spec_init(s);
	mb_tower(s, SID_TOWER_ITEM, 8, hidden, 2, 4, 3, K, "relu", "none", 1);
}

/* Build @s, load it; assert SID_EFORMAT with @want in the message. */
static void expect_reject(const struct mb_spec *s, const char *want, int line)
{
	uint8_t *buf;
	size_t len;
	struct sid_error err;
	struct sid_model *m = (struct sid_model *)1;
	ck_assert_msg(mb_build_buffer(s, &buf, &len, &err) == 0, "line %d: build: %s", line,
		      err.msg);
	sid_error_clear(&err);
	int rc = sid_model_load_buffer(buf, len, &m, &err);
	free(buf);
	ck_assert_msg(rc == SID_EFORMAT, "line %d: rc %d (%s)", line, rc, err.msg);
	ck_assert_ptr_null(m);
	ck_assert_msg(strstr(err.msg, want) != NULL, "line %d: message '%s' lacks '%s'", line,
		      err.msg, want);
}
#define REJECT(s, want) expect_reject((s), (want), __LINE__)

static struct sid_model *load_ok(const struct mb_spec *s, uint8_t **bufp, size_t *lenp)
{
	uint8_t *buf;
	size_t len;
	struct sid_error err;
	struct sid_model *m = NULL;
	ck_assert_msg(mb_build_buffer(s, &buf, &len, &err) == 0, "build: %s", err.msg);
	ck_assert_msg(sid_model_load_buffer(buf, len, &m, &err) == 0, "load: %s", err.msg);
	ck_assert_ptr_nonnull(m);
	if (bufp) {
		*bufp = buf;
		*lenp = len;
	} else {
		free(buf);
	}
	return m;
}

/* ---- metadata ---- */

static void reject_meta(const char *semid, const char *want, int line)
{
	struct mb_spec s;
	mb_spec_init(&s);
	s.semid_override = semid;
	expect_reject(&s, want, line);
}
#define REJECT_META(j, want) reject_meta((j), (want), __LINE__)

#define TOWERS_OK "\"towers\":{\"item\":{\"activation\":\"relu\",\"input_norm\":\"none\"}}"

START_TEST(test_meta_rejects)
{
	struct mb_spec s;
	mb_spec_init(&s);
	s.no_semid = 1;
	REJECT(&s, "__metadata__ has no 'semid' entry");

	REJECT_META("{not json", "metadata 'semid': not JSON");
	REJECT_META("[1]", "metadata 'semid': not a JSON object");
	REJECT_META("{\"model_version\":\"v\"," TOWERS_OK "}",
		    "metadata 'semid': format_version missing");
	REJECT_META("{\"format_version\":\"1\",\"model_version\":\"v\"," TOWERS_OK "}",
		    "metadata 'semid': format_version is not an integer");
	REJECT_META("{\"format_version\":1.0,\"model_version\":\"v\"," TOWERS_OK "}",
		    "format_version is not an integer");
	REJECT_META("{\"format_version\":2,\"model_version\":\"v\"," TOWERS_OK "}",
		    "metadata 'semid': format_version 2 is not supported (this build reads 1)");
	REJECT_META("{\"format_version\":0,\"model_version\":\"v\"," TOWERS_OK "}",
		    "format_version 0 is not supported");
	REJECT_META("{\"format_version\":1," TOWERS_OK "}",
		    "metadata 'semid': model_version missing");
	REJECT_META("{\"format_version\":1,\"model_version\":3," TOWERS_OK "}",
		    "metadata 'semid': model_version is not a string");
	/* no version to report, store with the IDs, or tell two models by */
	REJECT_META("{\"format_version\":1,\"model_version\":\"\"," TOWERS_OK "}",
		    "metadata 'semid': model_version is empty");
	/* what the registry could not store: every assign would fail */
	REJECT_META(
	    "{\"format_version\":1,\"model_version\":\"a\\tb\"," TOWERS_OK "}",
	    "metadata 'semid': model_version has a control character (0x09) at byte offset 1");
	REJECT_META("{\"format_version\":1,\"model_version\":\"a\\u0000b\"," TOWERS_OK "}",
		    "\\u0000 is not allowed"); /* jansson's own refusal */
	{
		static char j[600];
		snprintf(j, sizeof(j),
			 "{\"format_version\":1,\"model_version\":\"%0256d\"," TOWERS_OK "}", 0);
		REJECT_META(j, "metadata 'semid': model_version is 256 bytes; at most 255");
		snprintf(j, sizeof(j),
			 "{\"format_version\":1,\"model_version\":\"%0255d\"," TOWERS_OK "}", 0);
		{ /* 255 bytes load */
			struct mb_spec ok;
			struct sid_model *m = NULL;
			struct sid_error e;
			uint8_t *buf;
			size_t len;
			mb_spec_init(&ok);
			ok.semid_override = j;
			ck_assert_int_eq(mb_build_buffer(&ok, &buf, &len, &e), 0);
			ck_assert_msg(sid_model_load_buffer(buf, len, &m, &e) == 0, "%s", e.msg);
			ck_assert_uint_eq(strlen(m->version), 255);
			sid_model_unref(m);
			free(buf);
		}
	}
	REJECT_META("{\"format_version\":1,\"model_version\":\"v\"}",
		    "metadata 'semid': towers missing");
	REJECT_META("{\"format_version\":1,\"model_version\":\"v\",\"towers\":[]}",
		    "metadata 'semid': towers is not an object");
	REJECT_META("{\"format_version\":1,\"model_version\":\"v\",\"towers\":{}}",
		    "metadata 'semid': towers is empty");
	REJECT_META("{\"format_version\":1,\"model_version\":\"v\",\"towers\":{\"item\":{"
		    "\"activation\":\"relu\",\"input_norm\":\"none\"},\"movie\":{}}}",
		    "metadata 'semid': unknown tower 'movie'");
	/* cut between characters, as names are: '%.64s' and '%.32s' split a
	 * character, and the message was not UTF-8 */
	REJECT_META(
	    "{\"format_version\":1,\"model_version\":\"v\",\"towers\":{\"item\":{"
	    "\"activation\":\"relu\",\"input_norm\":\"none\"},"
	    "\"xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx\xc3\xa9\":{}}}",
	    "metadata 'semid': unknown tower "
	    "'xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx\xc3\xa9' "
	    "(towers are 'item' and 'user')");
	REJECT_META(
	    "{\"format_version\":1,\"model_version\":\"v\",\"towers\":{\"item\":{"
	    "\"activation\":\"rrrrrrrrrrrrrrrrrrrrrrrrrrrrrrr\xc3\xa9\",\"input_norm\":\"none\"}}}",
	    "metadata 'semid': towers.item.activation 'rrrrrrrrrrrrrrrrrrrrrrrrrrrrrrr\xc3\xa9' "
	    "unknown");
	REJECT_META("{\"format_version\":1,\"model_version\":\"v\",\"towers\":{\"item\":\"relu\"}}",
		    "metadata 'semid': towers.item is not an object");
	REJECT_META("{\"format_version\":1,\"model_version\":\"v\",\"towers\":{\"item\":{"
		    "\"input_norm\":\"none\"}}}",
		    "metadata 'semid': towers.item.activation missing");
	REJECT_META("{\"format_version\":1,\"model_version\":\"v\",\"towers\":{\"item\":{"
		    "\"activation\":1,\"input_norm\":\"none\"}}}",
		    "towers.item.activation is not a string");
	REJECT_META("{\"format_version\":1,\"model_version\":\"v\",\"towers\":{\"item\":{"
		    "\"activation\":\"swish\",\"input_norm\":\"none\"}}}",
		    "metadata 'semid': towers.item.activation 'swish' unknown");
	REJECT_META("{\"format_version\":1,\"model_version\":\"v\",\"towers\":{\"item\":{"
		    "\"activation\":\"ReLU\",\"input_norm\":\"none\"}}}",
		    "towers.item.activation 'ReLU' unknown");
	REJECT_META("{\"format_version\":1,\"model_version\":\"v\",\"towers\":{\"item\":{"
		    "\"activation\":\"relu\"}}}",
		    "metadata 'semid': towers.item.input_norm missing");
	REJECT_META("{\"format_version\":1,\"model_version\":\"v\",\"towers\":{\"item\":{"
		    "\"activation\":\"relu\",\"input_norm\":\"l1\"}}}",
		    "metadata 'semid': towers.item.input_norm 'l1' unknown");
	REJECT_META("{\"format_version\":1,\"format_version\":1,\"model_version\":\"v\"," TOWERS_OK
		    "}",
		    "duplicate");
}
END_TEST

/* ---- tensors ---- */

START_TEST(test_tower_presence)
{
	struct mb_spec s;
	struct edits ed = {0};

	/* Metadata declares user, the file has no user.* tensors. */
	mb_spec_init(&s);
	s.semid_override = "{\"format_version\":1,\"model_version\":\"v\",\"towers\":{"
			   "\"item\":{\"activation\":\"relu\",\"input_norm\":\"none\"},"
			   "\"user\":{\"activation\":\"relu\",\"input_norm\":\"none\"}}}";
	REJECT(&s, "tower 'user' is declared in the semid metadata but the file has no "
		   "'user.encoder.*' or 'user.codebook.*' tensors");

	/* user.* tensors present, metadata declares only item. */
	static const int K[] = {4};
	mb_spec_init(&s);
	mb_tower(&s, SID_TOWER_USER, 6, NULL, 0, 4, 1, K, "relu", "none", 1);
	s.semid_override = "{\"format_version\":1,\"model_version\":\"v\"," TOWERS_OK "}";
	REJECT(&s, "tensor 'user.encoder.0.weight': tower 'user' is not declared in the semid "
		   "metadata");
	/* Only a stray codebook of the undeclared tower. */
	mb_spec_init(&s);
	ed.n = 1;
	ed.e[0] = (struct edit){
	    .op = ED_RENAME, .name = "item.codebook.2", .new_name = "user.codebook.0"};
	spec_with(&s, &ed);
	s.semid_override = "{\"format_version\":1,\"model_version\":\"v\"," TOWERS_OK "}";
	REJECT(&s, "tensor 'user.codebook.0': tower 'user' is not declared");
}
END_TEST

START_TEST(test_layer_gaps)
{
	struct mb_spec s;
	struct edits ed = {0};

	spec_three_layers(&s);
	spec_with(&s, &ed);
	ed.n = 2;
	ed.e[0] = (struct edit){.op = ED_OMIT, .name = "item.encoder.1.weight"};
	ed.e[1] = (struct edit){.op = ED_OMIT, .name = "item.encoder.1.bias"};
	REJECT(&s, "tensor 'item.encoder.2.weight': layer 2 present but 'item.encoder.1.weight' "
		   "is missing");

	/* A bias whose weight is missing. */
	ed.n = 1;
	ed.e[0] = (struct edit){.op = ED_OMIT, .name = "item.encoder.2.weight"};
	REJECT(&s, "tensor 'item.encoder.2.bias': layer 2 present but 'item.encoder.2.weight' "
		   "is missing");

	ed.n = 1;
	ed.e[0] = (struct edit){.op = ED_OMIT_PREFIX, .name = "item.encoder."};
	REJECT(&s, "tower 'item': no encoder layers ('item.encoder.0.weight' missing)");

	ed.n = 1;
	ed.e[0] = (struct edit){.op = ED_OMIT, .name = "item.codebook.1"};
	REJECT(&s, "tensor 'item.codebook.2': level 2 present but 'item.codebook.1' is missing");

	ed.n = 1;
	ed.e[0] = (struct edit){.op = ED_OMIT_PREFIX, .name = "item.codebook."};
	REJECT(&s, "tower 'item': no codebooks ('item.codebook.0' missing)");

	/* Layer 0's weight missing: its own bias is the first thing past the gap. */
	ed.n = 1;
	ed.e[0] = (struct edit){.op = ED_OMIT, .name = "item.encoder.0.weight"};
	REJECT(&s, "tensor 'item.encoder.0.bias': layer 0 present but 'item.encoder.0.weight' is "
		   "missing");
}
END_TEST

START_TEST(test_bad_names)
{
	struct mb_spec s;
	struct edits ed = {0};
	static const struct {
		const char *from, *to, *want;
	} cases[] = {
	    {"item.encoder.0.weight", "item.encoder.00.weight",
	     "tensor 'item.encoder.00.weight': unexpected name under 'item.encoder.'"},
	    {"item.encoder.0.bias", "item.encoder.0.weight_orig",
	     "tensor 'item.encoder.0.weight_orig': unexpected name"},
	    {"item.encoder.0.bias", "item.encoder.norm.weight",
	     "tensor 'item.encoder.norm.weight': unexpected name"},
	    {"item.encoder.0.bias", "item.encoder.-1.bias", "unexpected name"},
	    {"item.codebook.2", "item.codebook.x",
	     "tensor 'item.codebook.x': unexpected name under 'item.codebook.'"},
	    {"item.codebook.2", "item.codebook.2.weight",
	     "tensor 'item.codebook.2.weight': unexpected name"},
	    {"item.codebook.2", "item.codebook.02", "unexpected name"},
	    {"item.encoder.1.bias", "item.encoder.16.bias",
	     "tensor 'item.encoder.16.bias': layer index exceeds the cap of 16 layers"},
	    {"item.encoder.1.bias", "item.encoder.99999999999999999999.bias",
	     "layer index exceeds the cap"},
	    {"item.codebook.2", "item.codebook.16",
	     "tensor 'item.codebook.16': level index exceeds the cap of 16 levels"},
	};
	spec_three_layers(&s);
	spec_with(&s, &ed);
	ed.n = 1;
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		ed.e[0] =
		    (struct edit){.op = ED_RENAME, .name = cases[i].from, .new_name = cases[i].to};
		expect_reject(&s, cases[i].want, (int)(1000 + i));
	}
	/* Names of any length: shown cut with "...", the reason kept (a
	 * 600-byte one pushed it out of the message). */
	{
		static char name[700], want[300];
		snprintf(name, sizeof(name), "item.encoder.0.%0600d", 7);
		ed.e[0] =
		    (struct edit){.op = ED_RENAME, .name = "item.encoder.0.bias", .new_name = name};
		snprintf(want, sizeof(want),
			 "tensor '%.120s...': unexpected name under 'item.encoder.' (expected "
			 "item.encoder.<i>.weight or .bias)",
			 name);
		expect_reject(&s, want, 2000);
		memcpy(name, "item.codebook.", 14);
		memset(name + 14, '9', 600);
		name[614] = '\0';
		ed.e[0] =
		    (struct edit){.op = ED_RENAME, .name = "item.codebook.2", .new_name = name};
		snprintf(want, sizeof(want),
			 "tensor '%.120s...': level index exceeds the cap of 16 levels", name);
		expect_reject(&s, want, 2001);
	}
}
END_TEST

START_TEST(test_bad_shapes)
{
	struct mb_spec s;
	struct edits ed = {0};

	spec_three_layers(&s); /* 8 -> 16 -> 12 -> 4, codebooks (5,4) (7,4) (3,4) */
	spec_with(&s, &ed);
	ed.n = 1;

	ed.e[0] =
	    (struct edit){.op = ED_DTYPE, .name = "item.encoder.1.weight", .dtype = SID_ST_I32};
	REJECT(&s, "tensor 'item.encoder.1.weight': dtype I32, expected F32");
	ed.e[0] = (struct edit){.op = ED_DTYPE, .name = "item.codebook.0", .dtype = SID_ST_I32};
	REJECT(&s, "tensor 'item.codebook.0': dtype I32, expected F32");
	ed.e[0] = (struct edit){.op = ED_DTYPE, .name = "item.encoder.0.bias", .dtype = SID_ST_I32};
	REJECT(&s, "tensor 'item.encoder.0.bias': dtype I32, expected F32");

	ed.e[0] = (struct edit){
	    .op = ED_RESHAPE, .name = "item.encoder.0.weight", .ndim = 1, .shape = {128}};
	REJECT(&s, "tensor 'item.encoder.0.weight': 1 dimensions, expected 2 (out, in)");
	ed.e[0] = (struct edit){
	    .op = ED_RESHAPE, .name = "item.encoder.0.weight", .ndim = 3, .shape = {2, 8, 8}};
	REJECT(&s, "tensor 'item.encoder.0.weight': 3 dimensions, expected 2");

	/* Layer 1 reads 12 instead of 16: does not chain. */
	ed.e[0] = (struct edit){
	    .op = ED_RESHAPE, .name = "item.encoder.1.weight", .ndim = 2, .shape = {12, 12}};
	REJECT(&s, "tensor 'item.encoder.1.weight': shape (12, 12) does not chain: input 12, "
		   "but layer 0 outputs 16");
	/* First layer can take any D, but then the last layer must give E = codebook width. */
	ed.e[0] = (struct edit){
	    .op = ED_RESHAPE, .name = "item.encoder.2.weight", .ndim = 2, .shape = {6, 12}};
	ed.n = 2;
	ed.e[1] =
	    (struct edit){.op = ED_RESHAPE, .name = "item.encoder.2.bias", .ndim = 1, .shape = {6}};
	REJECT(&s, "tensor 'item.codebook.0': shape (5, 4), but the latent width E (last layer "
		   "output) is 6");
	ed.n = 1;

	ed.e[0] = (struct edit){
	    .op = ED_RESHAPE, .name = "item.encoder.0.bias", .ndim = 1, .shape = {15}};
	REJECT(&s, "tensor 'item.encoder.0.bias': shape (15), expected (16) to match "
		   "'item.encoder.0.weight'");
	ed.e[0] = (struct edit){
	    .op = ED_RESHAPE, .name = "item.encoder.0.bias", .ndim = 1, .shape = {17}};
	REJECT(&s, "tensor 'item.encoder.0.bias': shape (17), expected (16)");
	ed.e[0] = (struct edit){
	    .op = ED_RESHAPE, .name = "item.encoder.0.bias", .ndim = 2, .shape = {1, 16}};
	REJECT(&s, "tensor 'item.encoder.0.bias': 2 dimensions, expected 1 (out)");

	ed.e[0] =
	    (struct edit){.op = ED_RESHAPE, .name = "item.codebook.1", .ndim = 2, .shape = {14, 2}};
	REJECT(&s, "tensor 'item.codebook.1': shape (14, 2), but the latent width E");
	ed.e[0] =
	    (struct edit){.op = ED_RESHAPE, .name = "item.codebook.1", .ndim = 1, .shape = {28}};
	REJECT(&s, "tensor 'item.codebook.1': 1 dimensions, expected 2 (K, E)");
	ed.e[0] =
	    (struct edit){.op = ED_RESHAPE, .name = "item.codebook.1", .ndim = 2, .shape = {0, 4}};
	REJECT(&s, "tensor 'item.codebook.1': shape[0] is 0");
	ed.e[0] = (struct edit){
	    .op = ED_RESHAPE, .name = "item.encoder.0.weight", .ndim = 2, .shape = {16, 0}};
	REJECT(&s, "tensor 'item.encoder.0.weight': shape[1] is 0");
}
END_TEST

START_TEST(test_caps)
{
	struct mb_spec s;
	struct edits ed = {0};

	mb_spec_init(&s);
	spec_with(&s, &ed);
	ed.n = 1;
	/* Input width above SID_MAX_DIM. */
	ed.e[0] = (struct edit){.op = ED_RESHAPE,
				.name = "item.encoder.0.weight",
				.ndim = 2,
				.shape = {16, SID_MAX_DIM + 1}};
	REJECT(&s, "tensor 'item.encoder.0.weight': shape[1] = 65537 exceeds the cap of 65536");
	ed.e[0] = (struct edit){
	    .op = ED_RESHAPE, .name = "item.codebook.0", .ndim = 2, .shape = {1, SID_MAX_DIM + 1}};
	REJECT(&s, "tensor 'item.codebook.0': shape[1] = 65537 exceeds the cap of 65536");
	/* Codewords above SID_MAX_CODEBOOK. */
	ed.e[0] = (struct edit){.op = ED_RESHAPE,
				.name = "item.codebook.0",
				.ndim = 2,
				.shape = {SID_MAX_CODEBOOK + 1, 1}};
	REJECT(&s, "tensor 'item.codebook.0': shape[0] = 1048577 exceeds the cap of 1048576");

	/* Exactly SID_MAX_LAYERS layers and SID_MAX_LEVELS levels load. */
	int hidden[SID_MAX_LAYERS - 1], K[SID_MAX_LEVELS];
	for (int i = 0; i < SID_MAX_LAYERS - 1; i++)
		hidden[i] = 3;
	for (int l = 0; l < SID_MAX_LEVELS; l++)
		K[l] = 2;
	mb_spec_init(&s);
	mb_tower(&s, SID_TOWER_ITEM, 3, hidden, SID_MAX_LAYERS - 1, 2, SID_MAX_LEVELS, K, "tanh",
		 "l2", 1);
	struct sid_model *m = load_ok(&s, NULL, NULL);
	ck_assert_int_eq(m->tower[SID_TOWER_ITEM].n_layers, SID_MAX_LAYERS);
	ck_assert_int_eq(m->tower[SID_TOWER_ITEM].L, SID_MAX_LEVELS);
	sid_model_unref(m);
}
END_TEST

START_TEST(test_non_finite)
{
	struct mb_spec s;
	struct edits ed = {0};

	spec_three_layers(&s);
	s.extra_tensors = 1;
	spec_with(&s, &ed);
	ed.n = 1;
	ed.e[0] =
	    (struct edit){.op = ED_SET, .name = "item.encoder.0.weight", .index = 5, .value = NAN};
	REJECT(&s, "tensor 'item.encoder.0.weight': element 5 is NaN");
	ed.e[0] = (struct edit){
	    .op = ED_SET, .name = "item.encoder.2.bias", .index = 3, .value = -INFINITY};
	REJECT(&s, "tensor 'item.encoder.2.bias': element 3 is infinite");
	ed.e[0] =
	    (struct edit){.op = ED_SET, .name = "item.codebook.1", .index = 27, .value = INFINITY};
	REJECT(&s, "tensor 'item.codebook.1': element 27 is infinite");
	ed.e[0] = (struct edit){.op = ED_SET, .name = "item.codebook.0", .index = 0, .value = NAN};
	REJECT(&s, "tensor 'item.codebook.0': element 0 is NaN");
	/* finite, but its squared norm is not: every distance to it would be
	 * inf, and the search would give code 0 whatever the input */
	ed.e[0] =
	    (struct edit){.op = ED_SET, .name = "item.codebook.0", .index = 0, .value = 1e20f};
	REJECT(&s, "tensor 'item.codebook.0': row 0's squared norm 1e+40 is beyond what "
		   "distances to it can be computed with in float32 (at most 8.51e+37)");
	/* finite, but 2<r, c> overflows for an input near it */
	ed.e[0] =
	    (struct edit){.op = ED_SET, .name = "item.codebook.2", .index = 8, .value = 1e19f};
	REJECT(&s, "tensor 'item.codebook.2': row 2's squared norm 1e+38 is beyond what");
	/* NaN in a tensor the encoder ignores is fine. */
	ed.e[0] = (struct edit){.op = ED_SET, .name = "decoder.0.weight", .index = 1, .value = NAN};
	sid_model_unref(load_ok(&s, NULL, NULL));
}
END_TEST

START_TEST(test_container_errors_propagate)
{
	struct mb_spec s;
	uint8_t *buf;
	size_t len;
	struct sid_error err;
	struct sid_model *m;

	mb_spec_init(&s);
	ck_assert_int_eq(mb_build_buffer(&s, &buf, &len, &err), 0);
	ck_assert_int_eq(sid_model_load_buffer(buf, len - 1, &m, &err), SID_EFORMAT);
	ck_assert_ptr_null(m);
	ck_assert_ptr_nonnull(strstr(err.msg, "run past the end"));
	ck_assert_ptr_nonnull(strstr(err.msg, "item.codebook.2"));
	free(buf);

	/* A safetensors file that is valid but not a semid model. */
	size_t n;
	uint8_t *raw = mb_raw_file(
	    "{\"w\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]}}", NULL, 4, &n);
	ck_assert_int_eq(sid_model_load_buffer(raw, n, &m, &err), SID_EFORMAT);
	ck_assert_ptr_nonnull(strstr(err.msg, "no 'semid' entry"));
	free(raw);
}
END_TEST

/* ---- happy paths ---- */

/* Every pointer of @t is 64-aligned and inside @m's block. */
static void check_alignment(const struct sid_model *m, const struct sid_tower *t)
{
	const char *lo = m->block;
	for (int i = 0; i < t->n_layers; i++) {
		ck_assert_uint_eq((uintptr_t)t->layer[i].w % 64, 0);
		ck_assert_uint_eq((uintptr_t)t->layer[i].b % 64, 0);
		ck_assert((const char *)t->layer[i].w >= lo);
		ck_assert((const char *)t->layer[i].b >= lo);
	}
	for (int l = 0; l < t->L; l++) {
		ck_assert_uint_eq((uintptr_t)t->codebook[l] % 64, 0);
		ck_assert_uint_eq((uintptr_t)t->cnorm[l] % 64, 0);
		ck_assert((const char *)t->codebook[l] >= lo);
	}
}

/* Tower tensors equal the file bytes exactly; missing biases are zeros. */
static void check_copies(const struct sid_tower *t, const char *tn, const uint8_t *buf, size_t len)
{
	struct sid_st_file f;
	char name[128];
	ck_assert_int_eq(sid_st_parse(buf, len, &f, NULL), 0);
	for (int i = 0; i < t->n_layers; i++) {
		snprintf(name, sizeof(name), "%s.encoder.%d.weight", tn, i);
		const struct sid_st_tensor *w = sid_st_find(&f, name);
		ck_assert_ptr_nonnull(w);
		ck_assert_int_eq(t->layer[i].out, w->shape[0]);
		ck_assert_int_eq(t->layer[i].in, w->shape[1]);
		ck_assert_mem_eq(t->layer[i].w, w->data, w->end - w->begin);
		snprintf(name, sizeof(name), "%s.encoder.%d.bias", tn, i);
		const struct sid_st_tensor *b = sid_st_find(&f, name);
		if (b) {
			ck_assert_mem_eq(t->layer[i].b, b->data, b->end - b->begin);
		} else {
			for (int o = 0; o < t->layer[i].out; o++)
				ck_assert(t->layer[i].b[o] == 0.0f && !signbit(t->layer[i].b[o]));
		}
	}
	for (int l = 0; l < t->L; l++) {
		snprintf(name, sizeof(name), "%s.codebook.%d", tn, l);
		const struct sid_st_tensor *c = sid_st_find(&f, name);
		ck_assert_ptr_nonnull(c);
		ck_assert_int_eq(t->K[l], c->shape[0]);
		ck_assert_mem_eq(t->codebook[l], c->data, c->end - c->begin);
	}
	sid_st_file_release(&f);
}

START_TEST(test_two_towers)
{
	struct mb_spec s;
	static const int ih[] = {32, 16}, iK[] = {8, 6, 4};
	static const int uh[] = {10}, uK[] = {3, 9};
	uint8_t *buf;
	size_t len;
	char sha[65];

	mb_spec_init(&s);
	s.model_version = "2026-11-28.a";
	s.extra_tensors = 1;
	s.seed = 99;
	mb_tower(&s, SID_TOWER_ITEM, 24, ih, 2, 5, 3, iK, "gelu", "l2", 1);
	mb_tower(&s, SID_TOWER_USER, 7, uh, 1, 5, 2, uK, "silu", "none", 0);
	struct sid_model *m = load_ok(&s, &buf, &len);

	ck_assert_int_eq(m->refs, 1);
	ck_assert_str_eq(m->version, "2026-11-28.a");
	ck_assert_ptr_null(m->path);
	ck_assert_uint_eq(m->file_size, len);
	sid_sha256_hex(buf, len, sha);
	ck_assert_str_eq(m->sha256, sha);
	ck_assert(m->loaded_at > 1.7e9);
	ck_assert_ptr_nonnull(m->semid_meta);
	ck_assert_uint_eq((uintptr_t)m->block % 64, 0);

	const struct sid_tower *it = sid_model_tower(m, SID_TOWER_ITEM);
	ck_assert_ptr_nonnull(it);
	ck_assert_int_eq(it->present, 1);
	ck_assert_int_eq(it->act, SID_ACT_GELU);
	ck_assert_int_eq(it->input_norm, SID_NORM_L2);
	ck_assert_int_eq(it->D, 24);
	ck_assert_int_eq(it->E, 5);
	ck_assert_int_eq(it->H_max, 32);
	ck_assert_int_eq(it->n_layers, 3);
	ck_assert_int_eq(it->layer[0].in, 24);
	ck_assert_int_eq(it->layer[0].out, 32);
	ck_assert_int_eq(it->layer[1].in, 32);
	ck_assert_int_eq(it->layer[1].out, 16);
	ck_assert_int_eq(it->layer[2].in, 16);
	ck_assert_int_eq(it->layer[2].out, 5);
	ck_assert_int_eq(it->L, 3);
	ck_assert_int_eq(it->K[0], 8);
	ck_assert_int_eq(it->K[1], 6);
	ck_assert_int_eq(it->K[2], 4);

	const struct sid_tower *ut = sid_model_tower(m, SID_TOWER_USER);
	ck_assert_ptr_nonnull(ut);
	ck_assert_int_eq(ut->act, SID_ACT_SILU);
	ck_assert_int_eq(ut->input_norm, SID_NORM_NONE);
	ck_assert_int_eq(ut->D, 7);
	ck_assert_int_eq(ut->E, 5);
	ck_assert_int_eq(ut->H_max, 10);
	ck_assert_int_eq(ut->n_layers, 2);
	ck_assert_int_eq(ut->L, 2);
	ck_assert_int_eq(ut->K[0], 3);
	ck_assert_int_eq(ut->K[1], 9);

	check_alignment(m, it);
	check_alignment(m, ut);
	check_copies(it, "item", buf, len);
	check_copies(ut, "user", buf, len); /* no bias: zeros */
	ck_assert_ptr_null(sid_model_tower(m, SID_TOWER_COUNT));
	free(buf);
	sid_model_unref(m);
}
END_TEST

START_TEST(test_one_tower_user_only)
{
	struct mb_spec s;
	static const int K[] = {2, 3, 5, 7};
	uint8_t *buf;
	size_t len;

	memset(&s, 0, sizeof(s));
	s.seed = 5;
	mb_tower(&s, SID_TOWER_USER, 3, NULL, 0, 3, 4, K, "identity", "none", 1);
	struct sid_model *m = load_ok(&s, &buf, &len);
	ck_assert_ptr_null(sid_model_tower(m, SID_TOWER_ITEM));
	ck_assert_int_eq(m->tower[SID_TOWER_ITEM].present, 0);
	const struct sid_tower *t = sid_model_tower(m, SID_TOWER_USER);
	ck_assert_int_eq(t->n_layers, 1);
	ck_assert_int_eq(t->H_max, 3);
	ck_assert_int_eq(t->L, 4);
	for (int l = 0; l < 4; l++)
		ck_assert_int_eq(t->K[l], K[l]);
	ck_assert_str_eq(m->version, "test-1");
	check_alignment(m, t);
	check_copies(t, "user", buf, len);
	free(buf);
	sid_model_unref(m);
}
END_TEST

/* Ignored tensors: decoder, other dtypes, item.decoder.*, names that only look close. */
START_TEST(test_extra_tensors_ignored)
{
	struct mb_spec s;
	struct sid_st_writer *w;
	struct sid_error err;
	uint8_t *buf;
	size_t len;
	struct sid_model *m;
	float x[6] = {NAN, 1, 2, 3, 4, 5};
	int64_t sh[1] = {6};

	mb_spec_init(&s);
	s.extra_tensors = 1;
	ck_assert_int_eq(mb_build_writer(&s, &w, &err), 0);
	ck_assert_int_eq(sid_st_writer_add(w, "item.decoder.0.weight", SID_ST_F32, 1, sh, x, &err),
			 0);
	ck_assert_int_eq(sid_st_writer_add(w, "item.encoderx", SID_ST_F32, 1, sh, x, &err), 0);
	ck_assert_int_eq(sid_st_writer_add(w, "items.encoder.0.weight", SID_ST_F32, 1, sh, x, &err),
			 0);
	ck_assert_int_eq(
	    sid_st_writer_add(w, "optim.item.encoder.0.weight.exp_avg", SID_ST_F32, 1, sh, x, &err),
	    0);
	ck_assert_int_eq(
	    sid_st_writer_add(w, "user_collab.encoder.0.weight", SID_ST_F32, 1, sh, x, &err), 0);
	ck_assert_int_eq(sid_st_writer_meta(w, "format", "pt", &err), 0);
	ck_assert_int_eq(sid_st_writer_serialize(w, &buf, &len, &err), 0);
	sid_st_writer_free(w);
	ck_assert_msg(sid_model_load_buffer(buf, len, &m, &err) == 0, "%s", err.msg);
	ck_assert_int_eq(m->tower[SID_TOWER_ITEM].n_layers, 2);
	ck_assert_int_eq(m->tower[SID_TOWER_USER].present, 0);
	sid_model_unref(m);
	free(buf);
}
END_TEST

/* ||C_l[k]||^2 against values worked out by hand, and the double-sum contract. */
START_TEST(test_cnorm)
{
	struct mb_spec s;
	static const int K[] = {4, 2};
	mb_spec_init(&s);
	mb_tower(&s, SID_TOWER_ITEM, 4, NULL, 0, 4, 2, K, "relu", "none", 0);
	/* codebook.0 rows: (1,2,2,0) -> 9, (0.5,0.5,0.5,0.5) -> 1, (3,-4,0,0) -> 25,
	 * (1e-3, 0, 0, 0) -> 1e-6. */
	static const float rows[16] = {1, 2,  2, 0, 0.5f,  0.5f, 0.5f, 0.5f,
				       3, -4, 0, 0, 1e-3f, 0,	 0,    0};
	struct sid_error err;
	uint8_t *buf;
	size_t len;
	ck_assert_int_eq(mb_build_buffer(&s, &buf, &len, &err), 0);
	for (int i = 0; i < 16; i++)
		ck_assert_int_eq(mb_set_f32(buf, len, "item.codebook.0", (size_t)i, rows[i]), 0);
	/* codebook.1 row 0: 1 + 2^-12 four times: float sums would lose the tail. */
	const float a = 1.0f + 0x1p-12f;
	for (int i = 0; i < 4; i++)
		ck_assert_int_eq(mb_set_f32(buf, len, "item.codebook.1", (size_t)i, a), 0);
	struct sid_model *m;
	ck_assert_int_eq(sid_model_load_buffer(buf, len, &m, &err), 0);
	const struct sid_tower *t = sid_model_tower(m, SID_TOWER_ITEM);
	ck_assert(t->cnorm[0][0] == 9.0f);
	ck_assert(t->cnorm[0][1] == 1.0f);
	ck_assert(t->cnorm[0][2] == 25.0f);
	ck_assert(t->cnorm[0][3] == (float)(1e-3f * (double)1e-3f));
	/* 4 * (1 + 2^-12)^2 = 4 + 2^-9 + 2^-22, exact in double, rounded once. */
	ck_assert(t->cnorm[1][0] == (float)(4.0 + 0x1p-9 + 0x1p-22));
	/* Row 1 of codebook.1 is random: compare with a double sum. */
	double sum = 0;
	for (int e = 0; e < 4; e++)
		sum += (double)t->codebook[1][4 + e] * t->codebook[1][4 + e];
	ck_assert(t->cnorm[1][1] == (float)sum);
	sid_model_unref(m);
	free(buf);
}
END_TEST

START_TEST(test_load_file)
{
	struct mb_spec s;
	struct sid_error err;
	struct sid_model *m;
	char dir[] = "/tmp/check_model.XXXXXX", path[128], sha[65];
	uint8_t *bytes;
	size_t len;

	ck_assert_ptr_nonnull(mkdtemp(dir));
	snprintf(path, sizeof(path), "%s/m.safetensors", dir);
	mb_spec_init(&s);
	ck_assert_int_eq(mb_build_file(&s, path, &err), 0);
	ck_assert_msg(sid_model_load(path, &m, &err) == 0, "%s", err.msg);
	ck_assert_str_eq(m->path, path);
	ck_assert_int_eq(sid_file_read(path, 1 << 20, &bytes, &len, &err), 0);
	sid_sha256_hex(bytes, len, sha);
	ck_assert_str_eq(m->sha256, sha);
	ck_assert_uint_eq(m->file_size, len);
	check_copies(sid_model_tower(m, SID_TOWER_ITEM), "item", bytes, len);
	free(bytes);
	sid_model_unref(m);

	/* A bad file: the message starts with the path. */
	s.semid_override = "{}";
	ck_assert_int_eq(mb_build_file(&s, path, &err), 0);
	ck_assert_int_eq(sid_model_load(path, &m, &err), SID_EFORMAT);
	ck_assert_ptr_null(m);
	ck_assert_int_eq(strncmp(err.msg, path, strlen(path)), 0);
	ck_assert_ptr_nonnull(strstr(err.msg, "format_version missing"));
	unlink(path);

	ck_assert_int_eq(sid_model_load(path, &m, &err), SID_ENOTFOUND);
	ck_assert_ptr_nonnull(strstr(err.msg, path));
	/* An empty file. */
	ck_assert_int_eq(sid_publish_atomic(path, NULL, 0, NULL), 0);
	ck_assert_int_eq(sid_model_load(path, &m, &err), SID_EFORMAT);
	ck_assert_ptr_nonnull(strstr(err.msg, "too short"));
	unlink(path);
	rmdir(dir);
}
END_TEST

/* Files a model's path may come to name by mistake are refused as they
 * are: a FIFO at once (its open blocked until a writer came, and a
 * server's reloads with it), and a file of
 * another kind from its first bytes, not after all of it was read into
 * memory (a sparse 60 GiB .npy or checkpoint: the read asked for 60 GiB,
 * and said it was out of memory, or took it). */
START_TEST(test_load_refuses_from_the_start)
{
	static const char npy[] = "\x93NUMPY\x01\x00v\x00{'descr': '<f4'";
	char dir[] = "/tmp/check_model.XXXXXX", path[128];
	struct sid_error err;
	struct sid_model *m;
	int fd;

	ck_assert_ptr_nonnull(mkdtemp(dir));
	snprintf(path, sizeof(path), "%s/m.safetensors", dir);
	ck_assert_int_eq(mkfifo(path, 0600), 0);
	alarm(30); /* a blocked open ends the test (SIGALRM), not the run */
	ck_assert_int_eq(sid_model_load(path, &m, &err), SID_EIO);
	alarm(0);
	ck_assert_ptr_null(m);
	ck_assert_str_eq(err.msg + strlen(path), ": not a regular file");
	ck_assert_int_eq(strncmp(err.msg, path, strlen(path)), 0);
	unlink(path);

	fd = open(path, O_WRONLY | O_CREAT | O_EXCL, 0600);
	ck_assert_int_ge(fd, 0);
	ck_assert_int_eq(write(fd, npy, sizeof(npy) - 1), (ssize_t)sizeof(npy) - 1);
	ck_assert_int_eq(ftruncate(fd, (off_t)60 << 30), 0);
	close(fd);
	ck_assert_int_eq(sid_model_load(path, &m, &err), SID_EFORMAT);
	ck_assert_ptr_null(m);
	ck_assert_int_eq(strncmp(err.msg, path, strlen(path)), 0);
	ck_assert_msg(strstr(err.msg + strlen(path),
			     ": header length 379676406402707 exceeds the cap of 104857600; "
			     "it looks like a .npy array, not a safetensors model"),
		      "%s", err.msg);
	unlink(path);

	/* a safetensors file that is no model, a trainer's checkpoint (60 GiB
	 * of parameters, sparse here): refused from its header */
	{
		static const char hdr[] =
		    "{\"__metadata__\":{\"das_config\":\"{}\"},\"das.params\":{\"dtype\":\"F32\","
		    "\"shape\":[16106127360],\"data_offsets\":[0,64424509440]}}";
		uint8_t len8[8];
		uint64_t hl = sizeof(hdr) - 1;

		for (int b = 0; b < 8; b++)
			len8[b] = (uint8_t)(hl >> (8 * b));
		fd = open(path, O_WRONLY | O_CREAT | O_EXCL, 0600);
		ck_assert_int_ge(fd, 0);
		ck_assert_int_eq(write(fd, len8, 8), 8);
		ck_assert_int_eq(write(fd, hdr, hl), (ssize_t)hl);
		ck_assert_int_eq(ftruncate(fd, (off_t)(8 + hl + 64424509440ULL)), 0);
		close(fd);
		ck_assert_int_eq(sid_model_load(path, &m, &err), SID_EFORMAT);
		ck_assert_ptr_null(m);
		ck_assert_int_eq(strncmp(err.msg, path, strlen(path)), 0);
		ck_assert_str_eq(
		    err.msg + strlen(path),
		    ": __metadata__ has no 'semid' entry (not a semid model file; it "
		    "looks like a semid-train checkpoint, MODEL.ckpt: serve the MODEL "
		    "beside it, which the run publishes as it ends, a stopped run once "
		    "resumed with --resume)");
		unlink(path);
	}

	/* a header longer than a semid model's can be: refused before it is
	 * parsed (18x its size in memory), from a file and from a buffer; one
	 * of the largest length allowed is parsed, and refused for what it
	 * holds */
	for (int over = 1; over >= 0; over--) {
		static const char hdr[] = "{\"__metadata__\":{\"semid\":\"{}\"}}";
		uint64_t hl = SID_MODEL_HEADER_MAX + (over ? 8 : 0);
		uint8_t *buf = malloc(8 + hl);
		char want[160];

		ck_assert_ptr_nonnull(buf);
		for (int b = 0; b < 8; b++)
			buf[b] = (uint8_t)(hl >> (8 * b));
		memset(buf + 8, ' ', hl);
		memcpy(buf + 8, hdr, sizeof(hdr) - 1);
		fd = open(path, O_WRONLY | O_CREAT | O_EXCL, 0600);
		ck_assert_int_ge(fd, 0);
		ck_assert_int_eq(write(fd, buf, 8 + hl), (ssize_t)(8 + hl));
		close(fd);
		if (over)
			snprintf(want, sizeof(want),
				 ": header of %llu bytes; a semid model's is at most %llu (semid "
				 "writes a few KiB): not a semid model file",
				 (unsigned long long)hl, (unsigned long long)SID_MODEL_HEADER_MAX);
		else
			snprintf(want, sizeof(want), ": metadata 'semid': format_version missing");
		ck_assert_int_eq(sid_model_load(path, &m, &err), SID_EFORMAT);
		ck_assert_ptr_null(m);
		ck_assert_str_eq(err.msg + strlen(path), want);
		ck_assert_int_eq(sid_model_load_buffer(buf, 8 + hl, &m, &err), SID_EFORMAT);
		ck_assert_ptr_null(m);
		ck_assert_str_eq(err.msg, want + 2);
		free(buf);
		unlink(path);
	}
	rmdir(dir);
}
END_TEST

static void *ref_worker(void *p)
{
	struct sid_model *m = p;
	for (int i = 0; i < 200000; i++) {
		struct sid_model *r = sid_model_ref(m);
		if (r != m)
			return (void *)1;
		sid_model_unref(r);
	}
	return NULL;
}

START_TEST(test_refcount_threads)
{
	struct mb_spec s;
	pthread_t th[4];
	mb_spec_init(&s);
	struct sid_model *m = load_ok(&s, NULL, NULL);
	/* Each thread holds an extra reference, dropped by the thread at the end. */
	for (int i = 0; i < 4; i++)
		ck_assert_int_eq(pthread_create(&th[i], NULL, ref_worker, m), 0);
	for (int i = 0; i < 4; i++) {
		void *r;
		pthread_join(th[i], &r);
		ck_assert_ptr_null(r);
	}
	ck_assert_int_eq(__atomic_load_n(&m->refs, __ATOMIC_SEQ_CST), 1);
	sid_model_ref(m);
	ck_assert_int_eq(m->refs, 2);
	sid_model_unref(m);
	ck_assert_int_eq(m->refs, 1);
	sid_model_unref(m); /* frees (ASan/valgrind would see a leak otherwise) */
	sid_model_unref(NULL);
	ck_assert_ptr_null(sid_model_ref(NULL));
}
END_TEST

START_TEST(test_describe_json)
{
	struct mb_spec s;
	static const int ih[] = {16}, iK[] = {5, 7, 3}, uK[] = {4};
	uint8_t *buf;
	size_t len;
	mb_spec_init(&s);
	s.model_version = "v-42";
	s.extra_semid_json = "{\"train\":{\"epochs\":3,\"lr\":0.001},\"created_at\":\"today\"}";
	mb_tower(&s, SID_TOWER_ITEM, 8, ih, 1, 4, 3, iK, "tanh", "l2", 1);
	mb_tower(&s, SID_TOWER_USER, 6, NULL, 0, 2, 1, uK, "identity", "none", 0);
	struct sid_model *m = load_ok(&s, &buf, &len);
	char *text = sid_model_describe_json(m);
	ck_assert_ptr_nonnull(text);
	json_error_t je;
	json_t *j = json_loads(text, JSON_REJECT_DUPLICATES, &je);
	ck_assert_msg(j != NULL, "%s", je.text);
	ck_assert_str_eq(json_string_value(json_object_get(j, "version")), "v-42");
	ck_assert(json_is_null(json_object_get(j, "path")));
	ck_assert_str_eq(json_string_value(json_object_get(j, "sha256")), m->sha256);
	ck_assert_int_eq(json_integer_value(json_object_get(j, "file_size")), (json_int_t)len);
	ck_assert(json_real_value(json_object_get(j, "loaded_at")) == m->loaded_at);

	json_t *it = json_object_get(json_object_get(j, "towers"), "item");
	ck_assert_int_eq(json_integer_value(json_object_get(it, "input_dim")), 8);
	ck_assert_int_eq(json_integer_value(json_object_get(it, "latent_dim")), 4);
	ck_assert_str_eq(json_string_value(json_object_get(it, "activation")), "tanh");
	ck_assert_str_eq(json_string_value(json_object_get(it, "input_norm")), "l2");
	ck_assert_int_eq(json_integer_value(json_object_get(it, "levels")), 3);
	json_t *expect_layers = json_loads("[[16,8],[4,16]]", 0, NULL);
	ck_assert(json_equal(json_object_get(it, "layers"), expect_layers));
	json_decref(expect_layers);
	json_t *expect_k = json_loads("[5,7,3]", 0, NULL);
	ck_assert(json_equal(json_object_get(it, "codebook_sizes"), expect_k));
	json_decref(expect_k);
	json_t *ut = json_object_get(json_object_get(j, "towers"), "user");
	ck_assert_str_eq(json_string_value(json_object_get(ut, "activation")), "identity");
	ck_assert_int_eq(json_integer_value(json_object_get(ut, "latent_dim")), 2);
	ck_assert_uint_eq(json_object_size(json_object_get(j, "towers")), 2);

	json_t *meta = json_object_get(j, "metadata");
	ck_assert_int_eq(json_integer_value(json_object_get(meta, "format_version")), 1);
	ck_assert_int_eq(
	    json_integer_value(json_object_get(json_object_get(meta, "train"), "epochs")), 3);
	ck_assert_str_eq(json_string_value(json_object_get(meta, "created_at")), "today");
	ck_assert_str_eq(
	    json_string_value(json_object_get(
		json_object_get(json_object_get(meta, "towers"), "user"), "activation")),
	    "identity");
	json_decref(j);
	free(text);
	free(buf);
	sid_model_unref(m);
	ck_assert_ptr_null(sid_model_describe_json(NULL));
}
END_TEST

START_TEST(test_names)
{
	ck_assert_str_eq(sid_tower_name(SID_TOWER_ITEM), "item");
	ck_assert_str_eq(sid_tower_name(SID_TOWER_USER), "user");
	ck_assert_int_eq(sid_tower_parse("item"), SID_TOWER_ITEM);
	ck_assert_int_eq(sid_tower_parse("user"), SID_TOWER_USER);
	ck_assert_int_eq(sid_tower_parse("Item"), -1);
	ck_assert_int_eq(sid_tower_parse(NULL), -1);
	static const char *acts[] = {"identity", "relu", "silu", "gelu", "tanh"};
	for (int a = SID_ACT_IDENTITY; a <= SID_ACT_TANH; a++) {
		ck_assert_str_eq(sid_act_name((enum sid_act)a), acts[a]);
		ck_assert_int_eq(sid_act_parse(acts[a]), a);
	}
	ck_assert_int_eq(sid_act_parse("swish"), -1);
	ck_assert_str_eq(sid_norm_name(SID_NORM_NONE), "none");
	ck_assert_str_eq(sid_norm_name(SID_NORM_L2), "l2");
	ck_assert_int_eq(sid_norm_parse("l2"), SID_NORM_L2);
	ck_assert_int_eq(sid_norm_parse("none"), SID_NORM_NONE);
	ck_assert_int_eq(sid_norm_parse("L2"), -1);
}
END_TEST

/* Check a model that loaded from a damaged file is internally consistent. */
static void check_sane(const struct sid_model *m)
{
	int towers = 0;
	for (int k = 0; k < SID_TOWER_COUNT; k++) {
		const struct sid_tower *t = sid_model_tower(m, (enum sid_tower_kind)k);
		if (!t)
			continue;
		towers++;
		ck_assert(t->n_layers >= 1 && t->n_layers <= SID_MAX_LAYERS);
		ck_assert(t->L >= 1 && t->L <= SID_MAX_LEVELS);
		ck_assert_int_eq(t->D, t->layer[0].in);
		ck_assert_int_eq(t->E, t->layer[t->n_layers - 1].out);
		for (int i = 0; i < t->n_layers; i++) {
			if (i)
				ck_assert_int_eq(t->layer[i].in, t->layer[i - 1].out);
			for (long j = 0; j < (long)t->layer[i].in * t->layer[i].out; j++)
				ck_assert(isfinite(t->layer[i].w[j]));
		}
		for (int l = 0; l < t->L; l++)
			for (long j = 0; j < (long)t->K[l] * t->E; j++)
				ck_assert(isfinite(t->codebook[l][j]));
	}
	ck_assert_int_gt(towers, 0);
}

START_TEST(test_truncate_and_flip)
{
	struct mb_spec s;
	static const int uK[] = {3, 2};
	struct sid_error err;
	struct sid_model *m;
	uint8_t *buf, *copy;
	size_t len;
	uint64_t rng = 1234;

	mb_spec_init(&s);
	s.extra_tensors = 1;
	mb_tower(&s, SID_TOWER_USER, 5, NULL, 0, 4, 2, uK, "silu", "l2", 0);
	ck_assert_int_eq(mb_build_buffer(&s, &buf, &len, &err), 0);
	copy = malloc(len);
	/* Every prefix is invalid (the last tensor always runs past the end). */
	for (size_t n = 0; n < len; n++) {
		memcpy(copy, buf, n);
		int rc = sid_model_load_buffer(copy, n, &m, &err);
		ck_assert_msg(rc == SID_EFORMAT, "prefix %zu: rc %d", n, rc);
		ck_assert_ptr_null(m);
	}
	int ok = 0, bad = 0;
	size_t hl = (size_t)buf[0] | (size_t)buf[1] << 8;
	for (int iter = 0; iter < 20000; iter++) {
		memcpy(copy, buf, len);
		int flips = 1 + (int)(mb_rand_u64(&rng) % 3);
		for (int k = 0; k < flips; k++) {
			size_t at = mb_rand_u64(&rng) % (iter % 3 ? hl + 8 : len);
			copy[at] ^= (uint8_t)(1u << (mb_rand_u64(&rng) % 8));
		}
		int rc = sid_model_load_buffer(copy, len, &m, &err);
		ck_assert_msg(rc == 0 || rc == SID_EFORMAT, "iter %d: rc %d %s", iter, rc, err.msg);
		if (rc == 0) {
			ok++;
			check_sane(m);
			sid_model_unref(m);
		} else {
			bad++;
			ck_assert_ptr_null(m);
			ck_assert(err.msg[0] != '\0');
		}
	}
	ck_assert_int_gt(ok, 0);
	ck_assert_int_gt(bad, 0);
	free(copy);
	free(buf);
}
END_TEST

/* model_version's text rules (RFC 3629 UTF-8, no control character), on
 * byte strings written out by hand: each well-formed sequence length, and
 * each way a sequence is malformed. */
START_TEST(test_model_version_check)
{
	static const char *const good[] = {"das-20261203T183611Z-1-0c58db35",
					   "",
					   "caf\xc3\xa9",
					   "\xe2\x82\xac"
					   "1",
					   "\xf0\x9f\x98\x80",
					   "\xf4\x8f\xbf\xbf"};
	static const char *const not_utf8[] = {
	    "v\xff",		/* never in UTF-8 */
	    "\x80v",		/* a continuation byte alone */
	    "\xc0\x80",		/* overlong NUL */
	    "\xe0\x80\xaf",	/* overlong '/' */
	    "\xed\xa0\x80",	/* a surrogate, U+D800 */
	    "\xf4\x90\x80\x80", /* past U+10FFFF */
	    "v\xe2\x82",	/* cut short */
	};
	char longest[SID_MODEL_VERSION_MAX + 2];
	struct sid_error err;

	for (size_t i = 0; i < sizeof(good) / sizeof(good[0]); i++)
		ck_assert_msg(sid_model_version_check(good[i], &err) == 0, "%zu: %s", i, err.msg);
	for (size_t i = 0; i < sizeof(not_utf8) / sizeof(not_utf8[0]); i++) {
		ck_assert_msg(sid_model_version_check(not_utf8[i], &err) == SID_EINVAL, "%zu", i);
		ck_assert_str_eq(err.msg, "model_version is not valid UTF-8");
	}
	ck_assert_int_eq(sid_model_version_check("a\tb", &err), SID_EINVAL);
	ck_assert_str_eq(err.msg, "model_version has a control character (0x09) at byte offset 1");
	ck_assert_int_eq(sid_model_version_check("a\x7f", &err), SID_EINVAL);
	ck_assert_str_eq(err.msg, "model_version has a control character (0x7f) at byte offset 1");
	memset(longest, 'v', sizeof(longest) - 1);
	longest[SID_MODEL_VERSION_MAX] = '\0';
	ck_assert_int_eq(sid_model_version_check(longest, &err), 0);
	longest[SID_MODEL_VERSION_MAX] = 'v';
	longest[SID_MODEL_VERSION_MAX + 1] = '\0';
	ck_assert_int_eq(sid_model_version_check(longest, &err), SID_EINVAL);
	ck_assert_str_eq(err.msg, "model_version is 256 bytes; at most 255");
}
END_TEST

static Suite *model_suite(void)
{
	Suite *s = suite_create("model");
	TCase *tc = tcase_create("reject");
	tcase_set_timeout(tc, 120);
	tcase_add_test(tc, test_meta_rejects);
	tcase_add_test(tc, test_tower_presence);
	tcase_add_test(tc, test_layer_gaps);
	tcase_add_test(tc, test_bad_names);
	tcase_add_test(tc, test_bad_shapes);
	tcase_add_test(tc, test_caps);
	tcase_add_test(tc, test_non_finite);
	tcase_add_test(tc, test_container_errors_propagate);
	suite_add_tcase(s, tc);

	tc = tcase_create("load");
	tcase_set_timeout(tc, 120);
	tcase_add_test(tc, test_two_towers);
	tcase_add_test(tc, test_one_tower_user_only);
	tcase_add_test(tc, test_extra_tensors_ignored);
	tcase_add_test(tc, test_cnorm);
	tcase_add_test(tc, test_load_file);
	tcase_add_test(tc, test_load_refuses_from_the_start);
	tcase_add_test(tc, test_refcount_threads);
	tcase_add_test(tc, test_describe_json);
	tcase_add_test(tc, test_names);
	tcase_add_test(tc, test_model_version_check);
	suite_add_tcase(s, tc);

	tc = tcase_create("fuzz");
	tcase_set_timeout(tc, 240);
	tcase_add_test(tc, test_truncate_and_flip);
	suite_add_tcase(s, tc);
	return s;
}

int main(void)
{
	return check_run(model_suite());
}
