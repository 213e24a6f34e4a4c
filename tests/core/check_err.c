/* check_err.c - tests for core/err.c: the error record every core call fills. */
#include <check.h>
#include <stdio.h>
#include <string.h>

#include "check_main.h"
#include "err.h"

START_TEST(test_set_and_clear)
{
	struct sid_error e;

	sid_error_clear(&e);
	ck_assert_int_eq(e.code, SID_OK);
	ck_assert_int_eq(e.index, -1);
	ck_assert_str_eq(e.msg, "");
	ck_assert_int_eq(sid_error_set(&e, SID_EFORMAT, "tensor '%s': bad", "item.codebook.0"),
			 SID_EFORMAT);
	ck_assert_str_eq(e.msg, "tensor 'item.codebook.0': bad");
	ck_assert_int_eq(e.index, -1); /* set leaves the index alone */
	ck_assert_int_eq(sid_error_set_at(&e, SID_EINVAL, 57, "row %d", 57), SID_EINVAL);
	ck_assert_int_eq(e.index, 57);
	ck_assert_str_eq(e.msg, "row 57");
	/* an empty format still leaves a message */
	sid_error_set(&e, SID_EIO, "%s", "");
	ck_assert_str_eq(e.msg, "i/o error");
	/* NULL records are allowed everywhere */
	sid_error_clear(NULL);
	ck_assert_int_eq(sid_error_set(NULL, SID_ENOMEM, "x"), SID_ENOMEM);
	ck_assert_int_eq(sid_error_set_at(NULL, SID_EINVAL, 3, "x"), SID_EINVAL);
	ck_assert_int_eq(sid_error_prefix(NULL, "x"), SID_EINVAL);
}
END_TEST

START_TEST(test_prefix)
{
	struct sid_error e;

	sid_error_clear(&e);
	sid_error_set(&e, SID_EFORMAT, "header too large");
	ck_assert_int_eq(sid_error_prefix(&e, "%s", "m.safetensors"), SID_EFORMAT);
	ck_assert_str_eq(e.msg, "m.safetensors: header too large");
}
END_TEST

START_TEST(test_append)
{
	struct sid_error e;

	sid_error_clear(&e);
	sid_error_set_at(&e, SID_EIO, 7, "write failed");
	ck_assert_int_eq(sid_error_append(&e, "; rows 0..%d were committed", 41), SID_EIO);
	ck_assert_str_eq(e.msg, "write failed; rows 0..41 were committed");
	ck_assert_int_eq(e.code, SID_EIO);
	ck_assert_int_eq(e.index, 7);
	ck_assert_int_eq(sid_error_append(NULL, "x"), SID_EINVAL);
}
END_TEST

/* The file's name goes in front once: not again when the message already
 * starts with "path:", but when it only starts with the same characters. */
START_TEST(test_name_file)
{
	struct sid_error e;

	sid_error_clear(&e);
	sid_error_set(&e, SID_EFORMAT, "row 3: not finite");
	ck_assert_int_eq(sid_error_name_file(&e, "x.npy"), SID_EFORMAT);
	ck_assert_str_eq(e.msg, "x.npy: row 3: not finite");
	ck_assert_int_eq(sid_error_name_file(&e, "x.npy"), SID_EFORMAT);
	ck_assert_str_eq(e.msg, "x.npy: row 3: not finite");
	sid_error_set(&e, SID_EIO, "x.npy.tmp: short write");
	sid_error_name_file(&e, "x.npy");
	ck_assert_str_eq(e.msg, "x.npy: x.npy.tmp: short write");
	ck_assert_int_eq(sid_error_name_file(NULL, "x.npy"), SID_EINVAL);
}
END_TEST

START_TEST(test_prefix_truncates_long_messages)
{
	struct sid_error e;
	char head[SID_ERROR_MSG_MAX + 100];

	/* a long old message is cut, never overflowed, and stays NUL-terminated */
	sid_error_clear(&e);
	memset(e.msg, 'o', sizeof(e.msg) - 1);
	e.msg[sizeof(e.msg) - 1] = '\0';
	e.code = SID_EFORMAT;
	sid_error_prefix(&e, "path");
	ck_assert_uint_eq(strlen(e.msg), SID_ERROR_MSG_MAX - 1);
	ck_assert(strncmp(e.msg, "path: ooo", 9) == 0);
	/* so is a prefix longer than the record */
	memset(head, 'h', sizeof(head) - 1);
	head[sizeof(head) - 1] = '\0';
	sid_error_set(&e, SID_EIO, "tail");
	sid_error_prefix(&e, "%s", head);
	ck_assert_uint_eq(strlen(e.msg), SID_ERROR_MSG_MAX - 1);
	ck_assert_int_eq(e.msg[0], 'h');
	/* whose middle gives way to the message it prefixes: the reason */
	ck_assert_str_eq(e.msg + strlen(e.msg) - 9, "hhh: tail");
	ck_assert_ptr_nonnull(strstr(e.msg, "h...h"));
}
END_TEST

/* A long path in front of a reason (a model under a deep directory): the
 * reason stays whole, and the path keeps its start and its file name, its
 * middle given up; the reason past half the record is cut instead. */
START_TEST(test_prefix_keeps_the_reason)
{
	static const char reason[] = "tensor 'item.encoder.0.weight' holds a non-finite value "
				     "(nan) at element 17";
	char path[500], want_end[200], *dots;
	struct sid_error e;
	size_t n;

	memset(path, 'd', sizeof(path));
	memcpy(path, "/srv/", 5);
	path[240] = path[480] = '/';
	snprintf(path + 481, sizeof(path) - 481, "model.st");
	sid_error_set(&e, SID_EFORMAT, "%s", reason);
	sid_error_prefix(&e, "%s", path);
	n = strlen(e.msg);
	ck_assert_uint_le(n, SID_ERROR_MSG_MAX - 1);
	ck_assert_uint_ge(n, SID_ERROR_MSG_MAX - 4);
	snprintf(want_end, sizeof(want_end), "/model.st: %s", reason);
	ck_assert_str_eq(e.msg + n - strlen(want_end), want_end);
	ck_assert_int_eq(strncmp(e.msg, "/srv/ddd", 8), 0);
	ck_assert_ptr_nonnull(dots = strstr(e.msg, "..."));
	ck_assert_ptr_null(strstr(dots + 3, "..."));

	/* sid_error_name_file with that path: the message names it already,
	 * with its middle given up, and is kept (semid encode -m of a path
	 * of 425 bytes printed the path twice and no reason at all) */
	char before[SID_ERROR_MSG_MAX];
	memcpy(before, e.msg, sizeof(before));
	ck_assert_int_eq(sid_error_name_file(&e, path), SID_EFORMAT);
	ck_assert_str_eq(e.msg, before);
	/* a message of another file that ends as this one does is named */
	path[0] = 'X';
	sid_error_name_file(&e, path);
	ck_assert_int_eq(strncmp(e.msg, "X", 1), 0);
	path[0] = '/';

	/* a short prefix is left as it is */
	sid_error_set(&e, SID_EFORMAT, "%s", reason);
	sid_error_prefix(&e, "%s", "m.st");
	ck_assert_str_eq(e.msg + 6, reason);
}
END_TEST

/* sid_utf8_len against the well-formed byte sequences of the Unicode
 * standard (table 3-7): each boundary in, each one past it out. */
START_TEST(test_utf8_len)
{
	static const struct {
		const char *s;
		size_t n, want;
	} cases[] = {
	    {"a", 1, 1},
	    {"\x7f", 1, 1},
	    {"\x80", 1, 0},		/* a continuation byte alone */
	    {"\xc1\xbf", 2, 0},		/* overlong (U+007F) */
	    {"\xc2\x80", 2, 2},		/* U+0080 */
	    {"\xdf\xbf", 2, 2},		/* U+07FF */
	    {"\xc2\x41", 2, 0},		/* not a continuation */
	    {"\xe0\x9f\xbf", 3, 0},	/* overlong (U+07FF) */
	    {"\xe0\xa0\x80", 3, 3},	/* U+0800 */
	    {"\xed\x9f\xbf", 3, 3},	/* U+D7FF */
	    {"\xed\xa0\x80", 3, 0},	/* U+D800, a surrogate */
	    {"\xed\xbf\xbf", 3, 0},	/* U+DFFF */
	    {"\xee\x80\x80", 3, 3},	/* U+E000 */
	    {"\xef\xbf\xbf", 3, 3},	/* U+FFFF */
	    {"\xf0\x8f\xbf\xbf", 4, 0}, /* overlong (U+FFFF) */
	    {"\xf0\x90\x80\x80", 4, 4}, /* U+10000 */
	    {"\xf4\x8f\xbf\xbf", 4, 4}, /* U+10FFFF */
	    {"\xf4\x90\x80\x80", 4, 0}, /* U+110000 */
	    {"\xf5\x80\x80\x80", 4, 0},
	    {"\xf0\x90\x80\x80", 3, 0}, /* cut short by n */
	    {"\xe2\x82", 2, 0},
	    {"\xe2\x82\x00", 3, 0}, /* a NUL ends it */
	};

	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++)
		ck_assert_msg(sid_utf8_len((const unsigned char *)cases[i].s, cases[i].n) ==
				  cases[i].want,
			      "case %zu", i);
}
END_TEST

/* Whether @s is all well-formed UTF-8. */
static int utf8_ok(const char *s)
{
	size_t n = strlen(s), i = 0, k;

	while (i < n) {
		if (!(k = sid_utf8_len((const unsigned char *)s + i, n - i)))
			return 0;
		i += k;
	}
	return 1;
}

/* A message cut at the record's size never ends inside a character, from
 * sid_error_set or from sid_error_prefix (either part cut), whatever the
 * characters' widths and where the cut falls. */
START_TEST(test_cut_messages_stay_utf8)
{
	static const char *const chars[] = {"\xc3\xa9", "\xe2\x82\xac", "\xf0\x9f\x98\x80"};
	char text[2 * SID_ERROR_MSG_MAX];
	struct sid_error e;

	for (int c = 0; c < 3; c++)
		for (size_t lead = 0; lead < 4; lead++) {
			size_t w = strlen(chars[c]), n = lead;
			memset(text, 'a', lead);
			while (n + w < sizeof(text))
				n += (size_t)snprintf(text + n, sizeof(text) - n, "%s", chars[c]);
			text[n] = '\0';
			sid_error_set(&e, SID_EINVAL, "%s", text);
			ck_assert_msg(utf8_ok(e.msg), "set: width %zu, lead %zu", w, lead);
			ck_assert_uint_ge(strlen(e.msg), SID_ERROR_MSG_MAX - 4);
			sid_error_set(&e, SID_EINVAL, "x%.*s", (int)lead, "abc");
			sid_error_prefix(&e, "%s", text);
			ck_assert_msg(utf8_ok(e.msg), "prefix head: width %zu, lead %zu", w, lead);
			sid_error_set(&e, SID_EINVAL, "%s", text + lead);
			sid_error_prefix(&e, "%.*s", (int)lead + 1, "file");
			ck_assert_msg(utf8_ok(e.msg), "prefix tail: width %zu, lead %zu", w, lead);
		}
}
END_TEST

/* Messages quote what came in (ids, sids, file names): their control
 * characters are shown, not sent to the terminal (an OSC title sequence in
 * an id rewrote it); tabs and other UTF-8 stay as they are. */
START_TEST(test_error_print_shows_control_characters)
{
	char buf[256] = "";
	FILE *f = fmemopen(buf, sizeof(buf) - 1, "w");

	ck_assert_ptr_nonnull(f);
	sid_error_print(f, "semid",
			"id \"x\x1b]0;pwned\x07y\": bad\tcaf\xc3\xa9 \xc2\x9b"
			"2J \x7f\n");
	fclose(f);
	ck_assert_str_eq(buf, "semid: id \"x\\x1b]0;pwned\\x07y\": bad\tcaf\xc3\xa9 \\u009b2J "
			      "\\x7f\\x0a\n");
}
END_TEST

START_TEST(test_strerror_names_every_code)
{
	ck_assert_str_eq(sid_strerror(SID_OK), "ok");
	ck_assert_str_eq(sid_strerror(SID_EINVAL), "invalid argument");
	ck_assert_str_eq(sid_strerror(SID_EFORMAT), "bad format");
	ck_assert_str_eq(sid_strerror(SID_ENOMEM), "out of memory");
	ck_assert_str_eq(sid_strerror(SID_EIO), "i/o error");
	ck_assert_str_eq(sid_strerror(SID_ENOTFOUND), "not found");
	ck_assert_str_eq(sid_strerror(SID_EUNAVAIL), "unavailable");
	ck_assert_str_eq(sid_strerror(SID_EDATA), "damaged record");
	ck_assert_str_eq(sid_strerror(-99), "unknown error");
}
END_TEST

/* "Did you mean": the one key at edit distance 1 or 2 (1 for short names),
 * '-' read as '_'; else the one key the name begins; else nothing.  The
 * server's flags and config keys and the trainer's share it. */
START_TEST(test_nearest_hint)
{
	static const char *const keys[] = {"max_batch", "max_wait_us", "max_body",
					   "workers",	"listen",      "shutdown_timeout_ms",
					   "lr",	"tau"};
	static const struct {
		const char *name;
		int as_flag;
		const char *hint;
	} cases[] = {
	    {"max-bach", 1, " (did you mean --max-batch?)"},
	    {"workres", 0, " (did you mean \"workers\"?)"}, /* a swap: distance 2 */
	    {"lsten", 1, " (did you mean --listen?)"},
	    {"shutdown_timeout", 0, " (did you mean \"shutdown_timeout_ms\"?)"}, /* a prefix */
	    {"max", 1, ""},   /* begins three keys */
	    {"max_b", 1, ""}, /* begins two */
	    {"ta", 1, " (did you mean --tau?)"},
	    {"tu", 1, " (did you mean --tau?)"},
	    {"lx", 1, " (did you mean --lr?)"},
	    {"ab", 1, ""}, /* short: distance 2 is too far */
	    {"x", 1, ""},
	};
	char buf[64];

	for (size_t c = 0; c < sizeof(cases) / sizeof(cases[0]); c++) {
		struct sid_nearest n;
		sid_nearest_init(&n, cases[c].name, strlen(cases[c].name));
		for (size_t k = 0; k < sizeof(keys) / sizeof(keys[0]); k++)
			sid_nearest_add(&n, keys[k]);
		ck_assert_msg(!strcmp(sid_nearest_hint(&n, cases[c].as_flag, buf, sizeof(buf)),
				      cases[c].hint),
			      "%s: \"%s\"", cases[c].name,
			      sid_nearest_hint(&n, cases[c].as_flag, buf, sizeof(buf)));
	}
}
END_TEST

/* jansson's own words for the slips of a hand-edited JSON file; any other
 * message (or none) gets no hint */
/* A switch given a value is named; a flag that only begins like one, a
 * switch without '=', and one not in the list are not. */
START_TEST(test_switch_valued)
{
	static const char *const sw[] = {"--help", "--resume", NULL};

	ck_assert_str_eq(sid_switch_valued("--resume=1", sw), "--resume");
	ck_assert_str_eq(sid_switch_valued("--help=", sw), "--help");
	ck_assert_ptr_null(sid_switch_valued("--resume", sw));
	ck_assert_ptr_null(sid_switch_valued("--resumed=1", sw));
	ck_assert_ptr_null(sid_switch_valued("--res=1", sw));
	ck_assert_ptr_null(sid_switch_valued("--version=1", sw));
}
END_TEST

START_TEST(test_json_error_hint)
{
	ck_assert_str_eq(sid_json_error_hint("string or '}' expected near '}'"),
			 " (JSON allows no comma after the last member)");
	ck_assert_str_eq(sid_json_error_hint("unexpected token near ']'"),
			 " (JSON allows no comma after the last element)");
	ck_assert_str_eq(sid_json_error_hint("'}' expected near '\"b\"'"),
			 " (a comma missing before this member?)");
	ck_assert_str_eq(sid_json_error_hint("string or '}' expected near 'a'"),
			 " (a key is a string in double quotes)");
	/* a comment, which JSON has not: "// ..." where a key goes was told
	 * "a key is a string in double quotes" */
	ck_assert_str_eq(sid_json_error_hint("string or '}' expected near '/'"),
			 " (JSON has no comments)");
	ck_assert_str_eq(sid_json_error_hint("string or '}' expected near '#'"),
			 " (JSON has no comments)");
	ck_assert_str_eq(sid_json_error_hint("invalid token near '/'"), " (JSON has no comments)");
	ck_assert_str_eq(sid_json_error_hint("'[' or '{' expected near '#'"),
			 " (JSON has no comments)");
	ck_assert_str_eq(sid_json_error_hint("end of file expected near '/'"),
			 " (JSON has no comments)");
	ck_assert_str_eq(sid_json_error_hint("'}' expected near '3'"), "");
	ck_assert_str_eq(sid_json_error_hint("end of file expected near 'x'"), "");
	ck_assert_str_eq(sid_json_error_hint(""), "");
	ck_assert_str_eq(sid_json_error_hint(NULL), "");
}
END_TEST

int main(void)
{
	Suite *s = suite_create("err");
	TCase *tc = tcase_create("core");

	tcase_add_test(tc, test_set_and_clear);
	tcase_add_test(tc, test_prefix);
	tcase_add_test(tc, test_append);
	tcase_add_test(tc, test_name_file);
	tcase_add_test(tc, test_prefix_truncates_long_messages);
	tcase_add_test(tc, test_prefix_keeps_the_reason);
	tcase_add_test(tc, test_strerror_names_every_code);
	tcase_add_test(tc, test_error_print_shows_control_characters);
	tcase_add_test(tc, test_utf8_len);
	tcase_add_test(tc, test_cut_messages_stay_utf8);
	tcase_add_test(tc, test_nearest_hint);
	tcase_add_test(tc, test_json_error_hint);
	tcase_add_test(tc, test_switch_valued);
	suite_add_tcase(s, tc);
	return check_run(s);
}
