/* check_json.c - tests for core/json.c: JSON as jansson lays it out, with
 * the shortest reals that read back (jansson's %.17g printed 0.1 as
 * 0.10000000000000001, in `semid inspect` and GET /v1/model). */
#include <check.h>
#include "check_main.h"
#include <jansson.h>
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "json.h"

/* Reals as typed: the shortest text that reads back as the same double
 * (jansson's %.17g printed 0.1 as 0.10000000000000001), in jansson's forms. */
START_TEST(test_real_str_is_shortest)
{
	static const struct {
		double v;
		const char *want;
	} cases[] = {
	    {0.1, "0.1"},
	    {1e-4, "0.0001"},
	    {5e-3, "0.005"},
	    {3e-4, "0.0003"},
	    {1e-5, "1e-5"},
	    {2.5e-7, "2.5e-7"},
	    {1e16, "1e16"},
	    {1e15, "1000000000000000.0"},
	    {9.5, "9.5"},
	    {-0.0, "-0.0"},
	    {1.5e300, "1.5e300"},
	    {-0.75, "-0.75"},
	    {1.0, "1.0"},
	    {0.0, "0.0"},
	    {100.0, "100.0"},
	    {123456789.0, "123456789.0"},
	    {0.1 + 0.2, "0.30000000000000004"}, /* 17 digits: no fewer read back */
	    {1.0 / 3, "0.3333333333333333"},
	    {1764574271.25, "1764574271.25"},
	    {5e-324, "5e-324"},
	    {1.7976931348623157e308, "1.7976931348623157e308"},
	};
	char b[SID_JSON_REAL_MAX], full[SID_JSON_REAL_MAX];
	uint64_t bits = 0x9e3779b97f4a7c15u;

	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++)
		ck_assert_str_eq(sid_json_real_str(cases[i].v, b), cases[i].want);
	/* any finite double reads back */
	for (int i = 0; i < 100000; i++) {
		double v;
		bits = bits * 6364136223846793005u + 1442695040888963407u;
		memcpy(&v, &bits, sizeof(v));
		if (!isfinite(v))
			continue;
		sid_json_real_str(v, b);
		snprintf(full, sizeof(full), "%.17g", v);
		ck_assert_msg(strtod(b, NULL) == v, "%s does not read back as %s", b, full);
	}
}
END_TEST

/* sid_json_dumps writes what json_dumps(JSON_INDENT(2)) does, reals apart. */
START_TEST(test_json_dumps_as_jansson_but_reals)
{
	static const char doc[] = "{\"a\": 1, \"b\": [], \"c\": {}, \"d\": [1, [2, {\"e\": null}], "
				  "\"x\\\"y/\\u00e9\\n\"],"
				  " \"f\": {\"g\": true, \"h\": false, \"k\\t\": -7}, \"\": \"\"}";
	json_error_t jerr;
	json_t *j = json_loads(doc, 0, &jerr), *r;
	char *want, *got;

	ck_assert_msg(j != NULL, "%s", jerr.text);
	want = json_dumps(j, JSON_INDENT(2) | JSON_PRESERVE_ORDER);
	got = sid_json_dumps(j);
	ck_assert_ptr_nonnull(want);
	ck_assert_ptr_nonnull(got);
	ck_assert_str_eq(got, want);
	free(got);
	free(want);
	json_decref(j);
	/* the reals: shortest, and nested as the rest */
	j = json_pack("{s:f,s:[f,f],s:{s:f}}", "lr", 0.1, "l", 1e-4, 5e-3, "o", "w", 2.0);
	got = sid_json_dumps(j);
	ck_assert_str_eq(got, "{\n  \"lr\": 0.1,\n  \"l\": [\n    0.0001,\n    0.005\n  ],\n"
			      "  \"o\": {\n    \"w\": 2.0\n  }\n}");
	r = json_loads(got, 0, &jerr);
	ck_assert_int_eq(json_equal(r, j), 1);
	free(got);
	json_decref(r);
	json_decref(j);
}
END_TEST

/* A file name that is not UTF-8 stays, its high bytes as '?' (json_string
 * refuses it, and the key was dropped); a UTF-8 one is kept as it is. */
START_TEST(test_path_kept_when_not_utf8)
{
	static const struct {
		const char *in, *want;
	} cases[] = {
	    {"models/m.safetensors", "models/m.safetensors"},
	    {"mod\xc3\xa8le/m", "mod\xc3\xa8le/m"},  /* UTF-8: as it is */
	    {"caf\xe9/train.tsv", "caf?/train.tsv"}, /* Latin-1 */
	    {"\xc3/x\xff\xfe", "?/x??"},	     /* a cut sequence, bytes never UTF-8 */
	    {"", ""},
	};

	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		json_t *j = sid_json_path(cases[i].in);
		ck_assert_ptr_nonnull(j);
		ck_assert_str_eq(json_string_value(j), cases[i].want);
		json_decref(j);
	}
}
END_TEST

int main(void)
{
	Suite *s = suite_create("json");
	TCase *tc = tcase_create("core");

	tcase_add_test(tc, test_real_str_is_shortest);
	tcase_add_test(tc, test_json_dumps_as_jansson_but_reals);
	tcase_add_test(tc, test_path_kept_when_not_utf8);
	suite_add_tcase(s, tc);
	return check_run(s);
}
