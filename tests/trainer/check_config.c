/*
 * check_config.c - tests for trainer/config.c: the model defaults
 * `semid-train --help` prints are a config file as they stand, and read back
 * as the defaults; the towers' input widths, which a model's config names,
 * are taken; a model's whole metadata is no config.
 */
#include <check.h>
#include "check_main.h"
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "config.h"

/* The "Model defaults: {...}" line of the help text (malloc'ed). */
static char *help_defaults(void)
{
	char *text = NULL, *line, *end;
	size_t len = 0;
	FILE *f = open_memstream(&text, &len);

	ck_assert_ptr_nonnull(f);
	tr_config_print_help(f);
	fclose(f);
	line = strstr(text, "Model defaults: ");
	ck_assert_ptr_nonnull(line);
	line += strlen("Model defaults: ");
	end = strchr(line, '\n');
	ck_assert_ptr_nonnull(end);
	*end = 0;
	line = strdup(line);
	free(text);
	return line;
}

/* The printed defaults were no config file: D_user and D_item printed as 0,
 * which a config refuses ("0" is not an integer in [1, 65536]), and the
 * floats with float32 noise ("lr": 0.00100000005). */
START_TEST(test_help_defaults_are_a_config)
{
	struct tr_config a, b;
	struct sid_error err;
	char *defaults = help_defaults(), *ja, *jb;

	ck_assert_ptr_null(strstr(defaults, "D_user"));
	ck_assert_ptr_null(strstr(defaults, "D_item"));
	ck_assert_ptr_nonnull(strstr(defaults, "\"lr\": 0.001,"));
	ck_assert_ptr_nonnull(strstr(defaults, "\"tau\": 0.1,"));
	ck_assert_ptr_nonnull(strstr(defaults, "\"adam_eps\": 1e-08,"));
	tr_config_defaults(&a);
	tr_config_defaults(&b);
	ck_assert_msg(tr_config_load_json(&b, defaults, "defaults", &err) == 0, "%s", err.msg);
	/* the data's widths, as the loop sets them, then the whole config */
	a.das.D_user = b.das.D_user = 24;
	a.das.D_item = b.das.D_item = 16;
	ja = das_config_json(&a.das);
	jb = das_config_json(&b.das);
	ck_assert_str_eq(jb, ja);
	free(ja);
	free(jb);
	free(defaults);
}
END_TEST

/* A model's config names D_user and D_item, and was refused as a --config
 * for them: they are taken (train.c checks them against the data), in
 * their range; a model's whole metadata, or semid inspect's output, is
 * refused saying which object of it to give. */
START_TEST(test_input_widths_are_taken)
{
	struct tr_config c;
	struct sid_error err;

	tr_config_defaults(&c);
	ck_assert_int_eq(c.das.D_user, 0); /* not given: the data's */
	ck_assert_int_eq(c.das.D_item, 0);
	ck_assert_msg(tr_config_load_json(&c, "{\"D_user\": 24}", "c.json", &err) == 0, "%s",
		      err.msg);
	ck_assert_int_eq(tr_config_flag(&c, "D-item", "16", &err), 1);
	ck_assert_int_eq(c.das.D_user, 24);
	ck_assert_int_eq(c.das.D_item, 16);
	ck_assert_int_eq(tr_config_flag(&c, "D_user", "0", &err), SID_EINVAL);
	ck_assert_str_eq(err.msg, "--D_user: config key D_user: \"0\" is not an integer in [1, "
				  "65536]");
	ck_assert_int_eq(
	    tr_config_load_json(&c, "{\"D_user\": 24, \"D-user\": 24}", "c.json", &err),
	    SID_EFORMAT);
	ck_assert_str_eq(err.msg, "c.json: keys \"D_user\" and \"D-user\" set the same setting; "
				  "keep one");
	ck_assert_int_eq(tr_config_load_json(&c,
					     "{\"format_version\": 1, \"model_version\": \"m-1\", "
					     "\"config\": {\"seed\": 3}, \"run\": {}}",
					     "meta.json", &err),
			 SID_EFORMAT);
	ck_assert_str_eq(err.msg, "meta.json: a model's metadata, not a config: give its "
				  "\"config\" object alone (semid inspect MODEL | jq "
				  ".metadata.config)");
	ck_assert_str_eq(c.model_version, ""); /* nothing of it taken */
	ck_assert_int_eq(
	    tr_config_load_json(&c, "{\"version\": \"m-1\", \"metadata\": {\"config\": {}}}",
				"inspect.json", &err),
	    SID_EFORMAT);
	ck_assert_str_eq(err.msg, "inspect.json: the output of semid inspect, not a config: give "
				  "its \"config\" object alone (semid inspect MODEL | jq "
				  ".metadata.config)");
}
END_TEST

/* A --config file with a trailing comma was refused as "string or '}'
 * expected near '}'" on the line after it, with nothing on the comma. */
START_TEST(test_json_slip_is_said)
{
	struct tr_config c;
	struct sid_error err;

	tr_config_defaults(&c);
	ck_assert_int_eq(
	    tr_config_load_json(&c, "{\"epochs\": 5,\n \"seed\": 7,\n}", "c.json", &err),
	    SID_EFORMAT);
	ck_assert_str_eq(err.msg, "c.json:3: string or '}' expected near '}' (JSON allows no "
				  "comma after the last member)");
	ck_assert_int_eq(tr_config_load_json(&c, "{\"hidden\": [256, 128,]}", "c.json", &err),
			 SID_EFORMAT);
	ck_assert_str_eq(err.msg, "c.json:1: unexpected token near ']' (JSON allows no comma "
				  "after the last element)");
	/* and so in a --config file, which jansson parses first: its slips
	 * were said without the hint */
	{
		static const char *const cases[][2] = {
		    {"{\"epochs\": 5,\n \"seed\": 7, // the usual\n}\n",
		     "2: string or '}' expected near '/' (JSON has no comments)"},
		    {"{\"epochs\": 5,\n \"seed\": 7,\n}\n",
		     "3: string or '}' expected near '}' (JSON allows no comma after the last "
		     "member)"},
		};
		for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
			char path[] = "/tmp/check_config.XXXXXX", want[160];
			int fd = mkstemp(path);
			size_t n = strlen(cases[i][0]);
			int rc;

			ck_assert_int_ge(fd, 0);
			ck_assert_int_eq(write(fd, cases[i][0], n), (ssize_t)n);
			close(fd);
			tr_config_defaults(&c);
			rc = tr_config_load_file(&c, path, &err);
			unlink(path);
			ck_assert_int_eq(rc, SID_EFORMAT);
			snprintf(want, sizeof(want), "%s:%s", path, cases[i][1]);
			ck_assert_str_eq(err.msg, want);
		}
	}
}
END_TEST

static Suite *config_suite(void)
{
	Suite *s = suite_create("config");
	TCase *tc = tcase_create("config");
	tcase_add_test(tc, test_help_defaults_are_a_config);
	tcase_add_test(tc, test_input_widths_are_taken);
	tcase_add_test(tc, test_json_slip_is_said);
	suite_add_tcase(s, tc);
	return s;
}

int main(void)
{
	return check_run(config_suite());
}
