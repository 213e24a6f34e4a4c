/* check_http.c - server/http.c: the parts testable without a socket (the
 * admin bearer check); tests/server/test_*.py drive the rest over HTTP. */
#include <check.h>

#include "check_main.h"
#include "../../server/http.h"

START_TEST(test_bearer)
{
	static const struct {
		const char *header, *token;
		int ok;
	} cases[] = {
	    {"Bearer tok", "tok", 1},
	    /* RFC 9110: the scheme is case-insensitive, one or more spaces follow */
	    {"bearer tok", "tok", 1},
	    {"BEARER tok", "tok", 1},
	    {"Bearer   tok", "tok", 1},
	    {"Bearer a b", "a b", 1},
	    /* wrong scheme, separator, token, length; nothing configured */
	    {"Basic tok", "tok", 0},
	    {"Bearertok", "tok", 0},
	    {"Bearer\ttok", "tok", 0},
	    {"Bearer tok2", "tok", 0},
	    {"Bearer to", "tok", 0},
	    {"Bearer TOK", "tok", 0},
	    {"Bearer ", "tok", 0},
	    {"Bearer", "tok", 0},
	    {NULL, "tok", 0},
	    {"Bearer ", "", 0},
	};
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++)
		ck_assert_msg(srv_http_bearer_ok(cases[i].header, cases[i].token) == cases[i].ok,
			      "case %zu: \"%s\" with token \"%s\"", i,
			      cases[i].header ? cases[i].header : "(none)", cases[i].token);
}
END_TEST

static void add_tests(TCase *tc)
{
	tcase_add_test(tc, test_bearer);
}

int main(void)
{
	return srv_check_run("http", add_tests);
}
