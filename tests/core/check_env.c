/* check_env.c - tests for core/env.c: numbers from the environment, read
 * strictly (atoi took "8x" for 8 and "99999999999" for what its overflow
 * made of it). */
#include <check.h>
#include "check_main.h"
#include <limits.h>
#include <stdlib.h>
#include <string.h>

#include "env.h"

START_TEST(test_whole_parse)
{
	static const char *const bad[] = {"",	 "8x",	"-1", "+2",  " 2",  "2 ", "0x2",
					  "2.0", "1e3", "x",  "\t7", "7\n", "٣"};
	long v = -5;

	ck_assert_int_eq(sid_whole_parse("0", 0, 10, &v), 0);
	ck_assert_int_eq(v, 0);
	ck_assert_int_eq(sid_whole_parse("10", 0, 10, &v), 0);
	ck_assert_int_eq(v, 10);
	ck_assert_int_eq(sid_whole_parse("007", 0, 10, &v), 0);
	ck_assert_int_eq(v, 7);
	ck_assert_int_eq(sid_whole_parse("2147483647", 1, INT_MAX, &v), 0);
	ck_assert_int_eq(v, INT_MAX);
	ck_assert_int_eq(sid_whole_parse("9223372036854775807", 0, LONG_MAX, &v), 0);
	ck_assert(v == LONG_MAX);
	/* out of the bounds, however far: *v untouched */
	v = -5;
	ck_assert_int_eq(sid_whole_parse("11", 0, 10, &v), -1);
	ck_assert_int_eq(sid_whole_parse("0", 1, 10, &v), -1);
	ck_assert_int_eq(sid_whole_parse("2147483648", 1, INT_MAX, &v), -1);
	ck_assert_int_eq(sid_whole_parse("99999999999", 1, INT_MAX, &v), -1);
	ck_assert_int_eq(sid_whole_parse("9223372036854775808", 0, LONG_MAX, &v), -1);
	ck_assert_int_eq(sid_whole_parse("99999999999999999999999", 0, LONG_MAX, &v), -1);
	ck_assert_int_eq(sid_whole_parse("9", 0, 5, &v), -1);
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
		ck_assert_msg(sid_whole_parse(bad[i], 0, 100, &v) == -1, "\"%s\" was taken",
			      bad[i]);
	ck_assert_int_eq(sid_whole_parse(NULL, 0, 100, &v), -1);
	ck_assert_int_eq(v, -5);
}
END_TEST

/* A test hook's milliseconds: garbage, or more than 10 minutes, is none
 * (atoi took "99999999999" for a sleep of minutes). */
START_TEST(test_env_test_ms)
{
	ck_assert_int_eq(sid_env_test_ms("42"), 42);
	ck_assert_int_eq(sid_env_test_ms("600000"), 600000);
	ck_assert_int_eq(sid_env_test_ms("600001"), 0);
	ck_assert_int_eq(sid_env_test_ms("99999999999"), 0);
	ck_assert_int_eq(sid_env_test_ms("-5"), 0);
	ck_assert_int_eq(sid_env_test_ms("5x"), 0);
	ck_assert_int_eq(sid_env_test_ms(""), 0);
	ck_assert_int_eq(sid_env_test_ms(NULL), 0);
}
END_TEST

START_TEST(test_env_shown)
{
	char b[SID_ENV_SHOWN_MAX], long_value[100];

	ck_assert_str_eq(sid_env_shown("8x", b), "\"8x\"");
	ck_assert_str_eq(sid_env_shown("", b), "\"\"");
	ck_assert_str_eq(sid_env_shown(NULL, b), "\"\"");
	ck_assert_str_eq(sid_env_shown("a\"b\\c\nd\x7f\xc3\xa9", b), "\"a?b?c?d???\"");
	memset(long_value, '7', sizeof(long_value) - 1);
	long_value[sizeof(long_value) - 1] = '\0';
	ck_assert_str_eq(sid_env_shown(long_value, b),
			 "\"7777777777777777777777777777777777777777\"...");
	long_value[40] = '\0'; /* exactly 40: all of it */
	ck_assert_str_eq(sid_env_shown(long_value, b),
			 "\"7777777777777777777777777777777777777777\"");
}
END_TEST

int main(void)
{
	Suite *s = suite_create("env");
	TCase *tc = tcase_create("core");

	tcase_add_test(tc, test_whole_parse);
	tcase_add_test(tc, test_env_test_ms);
	tcase_add_test(tc, test_env_shown);
	suite_add_tcase(s, tc);
	return check_run(s);
}
