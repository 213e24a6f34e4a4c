/*
 * main.c - `semid-train`: argument parsing and wiring only.
 *
 *   semid-train [train] --items X --users U --train T --out MODEL [--config F]
 *               [--resume] [--KEY VALUE ...]      train (train.h)
 *   semid-train eval --model M --items X --users U --train T --test S
 *               [--test-cold C] [--cold-items F] [--progress-every S]
 *                                                 evaluate (eval.h)
 *   semid-train gen --out DIR --items N --users M --interactions I --dim D
 *               [--seed S] ...                    synthetic data (gen.h)
 *   semid-train profile --items X --train T --out USERS.npy [--n-users N]
 *                                                 user content profiles (profile.h)
 *
 * Exit status: 0 success, 2 bad input (files, flags, config), 75 when
 * another run holds --out's lock (SID_EUNAVAIL: try later), 128 + N when
 * signal N (SIGINT, SIGTERM, SIGHUP) stopped training, eval, gen or profile
 * cleanly, 141 when the reader of a stdout pipe went away (SIGPIPE, or where it is
 * ignored, sid_sigpipe_quiet_stdout), 1 otherwise (a failed write to stdout
 * included).  A stderr whose reader went away costs its lines, not the run
 * (pipe_catch).
 */
#include <errno.h>
#include <limits.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "blas.h"
#include "config.h"
#include "eval.h"
#include "fsutil.h"
#include "gen.h"
#include "overcommit.h"
#include "profile.h"
#include "stop.h"
#include "train.h"

/* 75: sysexits.h's EX_TEMPFAIL, "try again later", as cron wrappers and
 * supervisors know it */
static int exit_code(int rc)
{
	if (rc == SID_EUNAVAIL)
		return 75;
	return rc == SID_EFORMAT || rc == SID_EINVAL || rc == SID_ENOTFOUND ? 2 : 1;
}

static int fail(const char *what, struct sid_error *err)
{
	char prog[64];

	snprintf(prog, sizeof(prog), "semid-train%s%s", what ? " " : "", what ? what : "");
	sid_error_print(stderr, prog, err->msg);
	return exit_code(err->code);
}

static void usage(FILE *f)
{
	fprintf(f,
		"usage: semid-train [train] --items ITEMS.npy --users USERS.npy --train TRAIN.tsv\n"
		"                   --out MODEL [--config FILE.json] [--resume] [--KEY VALUE ...]\n"
		"       semid-train eval --model MODEL --items ITEMS.npy --users USERS.npy\n"
		"                   --train TRAIN.tsv [--test TEST.tsv] [--test-cold COLD.tsv]\n"
		"                   [--cold-items COLD.txt] [--progress-every S]\n"
		"       semid-train gen --out DIR [--items N] [--users M] [--interactions I]\n"
		"                   [--dim D] [--user-dim D] [--clusters G] [--seed S]\n"
		"                   [--cold-frac F] [--test-frac F] [--progress-every S]\n"
		"       semid-train profile --items ITEMS.npy --train TRAIN.tsv --out USERS.npy\n"
		"                   [--n-users N]\n"
		"       semid-train --version\n"
		"\n"
		"Trains dual-aligned user and item semantic IDs (DAS) from content embeddings\n"
		"and clicks, writes a semid model file atomically (checkpoint MODEL.ckpt after\n"
		"every epoch; --resume continues from it), and evaluates it on --test and\n"
		"--test-cold (eval without either: the code statistics only).\n"
		"A run holds MODEL.lock (an flock; the file removed at its end, harmless\n"
		"when a killed run leaves it) from before it reads the data: another\n"
		"training or --resume with the same --out is refused at once (exit 75);\n"
		"gen holds DIR/gen.lock so, and refuses another gen into DIR so.\n"
		"SIGINT, SIGTERM or SIGHUP stop it at the next step, publishing nothing (exit\n"
		"status 128 + the signal); the checkpoint keeps the finished epochs.  They\n"
		"stop eval and gen so too.\n"
		"eval and gen show their progress as training does: a bar on a terminal, else\n"
		"a line every --progress-every seconds (30).\n"
		"gen writes synthetic data into DIR; gen's defaults: 2000 items, 1000 users,\n"
		"40000 interactions, dim 64 (user-dim: dim), sqrt(items) clusters within\n"
		"8..1024, seed 1, cold-frac 0.1, test-frac 0.15.\n"
		"profile writes --users for data with item embeddings only: row u is the\n"
		"L2-normalised mean of the --items rows user u clicked in TRAIN (zeros for a\n"
		"user with none, or whose rows sum to zero), N rows (default: the largest\n"
		"user index + 1; at most %ld).\n"
		"\n"
		"exit status: 0 ok; 1 I/O or internal error (e.g. the model cannot be\n"
		"             published); 2 bad usage or bad input (an unknown flag or value, a\n"
		"             missing or malformed file, a checkpoint --resume refuses);\n"
		"             75 another run with the same --out holds its lock (try later);\n"
		"             128 + the signal when stopped by one (train, eval, gen,\n"
		"             profile); 141\n"
		"             quietly when the reader of a stdout pipe went away (| head).\n"
		"\n"
		"Flags override the JSON config file; every key is a flag:\n",
		TR_PROFILE_MAX_USERS);
	tr_config_print_help(f);
}

/* Split "--name=value" or "--name value"; returns the value (or NULL) and
 * sets *from_next to 1 when it came from the next argument.  A next argument
 * that is itself a flag ("--out --resume") is not a value: the flag then has
 * none (a value really starting with "--" can be given as --name=--value). */
static const char *flag_value(char *arg, int i, int argc, char **argv, int *from_next)
{
	char *eq = strchr(arg, '=');
	*from_next = 0;
	if (eq) {
		*eq = 0;
		return eq + 1;
	}
	if (i + 1 < argc && strncmp(argv[i + 1], "--", 2)) {
		*from_next = 1;
		return argv[i + 1];
	}
	return NULL;
}

/* A flag that takes no value given one ("--help=1", "--resume=yes"), said
 * so on stderr with @prog: 1 then, else 0.  @names: NULL-terminated.  (The
 * nearest-name hint said "unknown option --help (did you mean --help?)".) */
static int flag_takes_no_value(const char *prog, const char *a, const char *const *names)
{
	const char *sw = sid_switch_valued(a, names);

	if (sw)
		fprintf(stderr, "%s: %s takes no value, not %s\n", prog, sw, a);
	return sw != NULL;
}

static const char *const help_only[] = {"--help", NULL};

/*
 * NULL when @f is one of the NULL-terminated @flags ("--test-cold"); else a
 * hint for the message that refuses it: " (did you mean --X?)" naming the
 * one flag near it (err.h's sid_nearest_hint), or " (try --help)".
 */
static const char *flag_unknown(const char *f, const char *const *flags, char *buf, size_t len)
{
	char names[16][32];
	struct sid_nearest near;
	const char *name = strncmp(f, "--", 2) ? f : f + 2, *hint;
	size_t n;

	for (n = 0; flags[n]; n++)
		if (!strcmp(f, flags[n]))
			return NULL;
	sid_nearest_init(&near, name, strlen(name));
	for (size_t i = 0; i < n && i < sizeof(names) / sizeof(names[0]); i++) {
		snprintf(names[i], sizeof(names[i]), "%s", flags[i] + 2);
		for (char *p = names[i]; *p; p++)
			if (*p == '-')
				*p = '_';
		sid_nearest_add(&near, names[i]);
	}
	sid_nearest_add(&near, "help");
	hint = sid_nearest_hint(&near, 1, buf, len);
	return *hint ? hint : " (try --help)";
}

static int cmd_train(int argc, char **argv)
{
	static const char *const switches[] = {"--help", "--version", "--resume", NULL};
	struct tr_config cfg;
	struct sid_error err;
	int resume = 0, rc;

	sid_error_clear(&err);
	tr_config_defaults(&cfg);
	/* the config file first, so flags override it wherever they stand */
	for (int i = 0; i < argc; i++) {
		if (!strcmp(argv[i], "--config") || !strncmp(argv[i], "--config=", 9)) {
			const char *path = argv[i][8] == '=' ? argv[i] + 9 : argv[i + 1];
			if (!path) {
				fprintf(stderr, "semid-train: --config needs a file\n");
				return 2;
			}
			rc = tr_config_load_file(&cfg, path, &err);
			if (rc < 0)
				return fail(NULL, &err);
		}
	}
	for (int i = 0; i < argc; i++) {
		int from_next;
		const char *v;
		if (!strcmp(argv[i], "--help") || !strcmp(argv[i], "-h")) {
			usage(stdout);
			return 0;
		}
		if (flag_takes_no_value("semid-train", argv[i], switches))
			return 2;
		if (!strcmp(argv[i], "--resume")) {
			resume = 1;
			continue;
		}
		if (strncmp(argv[i], "--", 2)) {
			fprintf(stderr, "semid-train: unexpected argument \"%s\" (try --help)\n",
				argv[i]);
			return 2;
		}
		if (!strcmp(argv[i], "--config") || !strncmp(argv[i], "--config=", 9)) {
			i += argv[i][8] != '=';
			continue;
		}
		v = flag_value(argv[i], i, argc, argv, &from_next);
		rc = tr_config_flag(&cfg, argv[i] + 2, v, &err);
		if (rc < 0)
			return fail(NULL, &err);
		if (rc == 0 && v && !from_next) {
			/* "--eval=no" is not a switch left on (nor "--no-eval=1" off) */
			fprintf(stderr,
				"semid-train: --%s=%s: a switch takes true, false, 1 or 0 "
				"(--no-%s turns it off)\n",
				argv[i] + 2, v,
				strncmp(argv[i] + 2, "no-", 3) ? argv[i] + 2 : argv[i] + 5);
			return 2;
		}
		if (rc == 1 && from_next)
			i++;
	}
	rc = tr_train_run(&cfg, resume, &err);
	if (rc > 0) /* stopped by signal rc, cleanly: the shell's status for it */
		return 128 + rc;
	return rc < 0 ? fail(NULL, &err) : 0;
}

static int cmd_eval(int argc, char **argv)
{
	const char *model = NULL, *items = NULL, *users = NULL, *train = NULL, *test = NULL;
	const char *test_cold = NULL, *cold = NULL;
	static const char *const flags[] = {"--model",	    "--items",		"--users",
					    "--train",	    "--test",		"--test-cold",
					    "--cold-items", "--progress-every", NULL};
	const char **dst[] = {&model, &items, &users, &train, &test, &test_cold, &cold};
	struct tr_eval_progress progress;
	struct tr_stop_saved saved;
	struct tr_config cfg; /* progress_every: training's default and rules */
	struct sid_error err;
	int rc;

	sid_error_clear(&err);
	tr_config_defaults(&cfg);
	for (int i = 0; i < argc; i++) {
		size_t k;
		const char *v, *hint;
		char buf[64];
		int from_next;
		if (!strcmp(argv[i], "--help") || !strcmp(argv[i], "-h")) {
			usage(stdout);
			return 0;
		}
		if (flag_takes_no_value("semid-train eval", argv[i], help_only))
			return 2;
		/* --model=M as training takes it; "--test --model M" is no test file */
		v = flag_value(argv[i], i, argc, argv, &from_next);
		if ((hint = flag_unknown(argv[i], flags, buf, sizeof(buf)))) {
			fprintf(stderr, "semid-train eval: unknown option \"%s\"%s\n", argv[i],
				hint);
			return 2;
		}
		if (!v) {
			fprintf(stderr, "semid-train eval: missing value for \"%s\" (try --help)\n",
				argv[i]);
			return 2;
		}
		if (!strcmp(argv[i], "--progress-every")) {
			if (tr_config_flag(&cfg, "progress-every", v, &err) < 0)
				return fail("eval", &err);
		} else {
			for (k = 0; strcmp(argv[i], flags[k]); k++)
				;
			*dst[k] = v;
		}
		i += from_next;
	}
	if (!model || !items || !users || !train) {
		fprintf(stderr, "semid-train eval: --model, --items, --users and --train are "
				"required\n");
		return 2;
	}
	/* before the data: under a memory limit, OpenBLAS's buffers first */
	if (tr_overcommit_ready(0, NULL, 0, &err) < 0)
		return fail("eval", &err);
	/* an hour at 1M users and items: a signal ends it as it ends training
	 * and gen, saying so, rather than by the signal's default action */
	progress = (struct tr_eval_progress){1, isatty(2), cfg.progress_every};
	tr_stop_install(&saved);
	rc = tr_eval_files(model, items, users, train, test, test_cold, cold, &progress, &err);
	tr_stop_restore(&saved);
	if (rc < 0 && tr_stop_signal()) {
		fprintf(stderr, "semid-train eval: stopped by %s; nothing printed\n",
			tr_stop_name(tr_stop_signal()));
		return 128 + tr_stop_signal();
	}
	return rc < 0 ? fail("eval", &err) : 0;
}

/* A gen count: a plain decimal integer in [0, @max] (strtod used to take
 * "2.7" as 2 and "1e30" into undefined behaviour). */
static int gen_int(const char *cmd, const char *flag, const char *v, long max, long *out)
{
	char *end;
	long x;
	errno = 0;
	x = v[0] >= '0' && v[0] <= '9' ? strtol(v, &end, 10) : -1;
	if (x < 0 || *end || errno || x > max) {
		fprintf(stderr, "semid-train %s: %s: \"%s\" is not an integer in [0, %ld]\n", cmd,
			flag, v, max);
		return -1;
	}
	*out = x;
	return 0;
}

/* @s as a JSON string: the gen summary is read by scripts, and a directory
 * named with a quote or a backslash made it invalid JSON.  Other bytes go
 * out as they are (a path's bytes, whatever its encoding). */
static void print_json_string(const char *s)
{
	putchar('"');
	for (const unsigned char *p = (const unsigned char *)s; *p; p++) {
		if (*p == '"' || *p == '\\')
			printf("\\%c", *p);
		else if (*p < 0x20 || *p == 0x7f)
			printf("\\u%04x", *p);
		else
			putchar(*p);
	}
	putchar('"');
}

/* The count flags of gen: each sets a long or an int. */
struct gen_count {
	const char *flag;
	long *l;
	int *i;
};

static int gen_count_find(const struct gen_count *c, const char *flag)
{
	for (int k = 0; c[k].flag; k++)
		if (!strcmp(c[k].flag, flag))
			return k;
	return -1;
}

static int cmd_gen(int argc, char **argv)
{
	struct tr_gen_params p;
	struct tr_gen_stats st;
	struct sid_error err;
	const char *out = NULL;
	int rc;
	static const char *const flags[] = {
	    "--out",	   "--items",	  "--users",	      "--interactions",
	    "--dim",	   "--user-dim",  "--clusters",	      "--seed",
	    "--cold-frac", "--test-frac", "--progress-every", NULL};
	struct gen_count counts[] = {{"--items", &p.items, NULL},
				     {"--users", &p.users, NULL},
				     {"--interactions", &p.interactions, NULL},
				     {"--dim", NULL, &p.dim},
				     {"--user-dim", NULL, &p.user_dim},
				     {"--clusters", NULL, &p.clusters},
				     {NULL, NULL, NULL}};

	sid_error_clear(&err);
	tr_gen_defaults(&p);
	p.progress = isatty(2);
	for (int i = 0; i < argc; i++) {
		const char *f = argv[i], *v, *hint;
		char buf[64];
		long n;
		int k, from_next;
		if (!strcmp(f, "--help") || !strcmp(f, "-h")) {
			usage(stdout);
			return 0;
		}
		if (flag_takes_no_value("semid-train gen", f, help_only))
			return 2;
		/* --out=DIR as training takes it (it was "unknown option
		 * --out=DIR", and took the next flag for its value) */
		v = flag_value(argv[i], i, argc, argv, &from_next);
		if ((hint = flag_unknown(f, flags, buf, sizeof(buf)))) {
			fprintf(stderr, "semid-train gen: unknown option %s%s\n", f, hint);
			return 2;
		}
		if (!v) {
			fprintf(stderr, "semid-train gen: %s needs a value\n", f);
			return 2;
		}
		i += from_next;
		if (!strcmp(f, "--out")) {
			/* "" made no directory: "semid-train gen: : No such file
			 * or directory", exit 1 */
			if (!v[0]) {
				fprintf(stderr,
					"semid-train gen: --out: empty: give a directory\n");
				return 2;
			}
			out = v;
		} else if ((k = gen_count_find(counts, f)) >= 0) {
			if (gen_int("gen", f, v, counts[k].l ? LONG_MAX : INT_MAX, &n) < 0)
				return 2;
			/* 0 is tr_gen_params' "not given": an explicit 0 went
			 * unnoticed and gave the default (the other counts' 0 is
			 * refused by tr_gen_run, naming its range) */
			if (n == 0 && counts[k].i && counts[k].i != &p.dim) {
				fprintf(
				    stderr,
				    "semid-train gen: %s: 0 is not in [1, %d] (leave it out for "
				    "%s)\n",
				    f, counts[k].i == &p.user_dim ? 65536 : INT_MAX,
				    counts[k].i == &p.user_dim ? "--dim's"
							       : "sqrt(items) within 8..1024");
				return 2;
			}
			if (counts[k].l)
				*counts[k].l = n;
			else
				*counts[k].i = (int)n;
		} else if (!strcmp(f, "--seed")) {
			struct das_config dc; /* the trainer's own seed rules */
			if (das_config_set(&dc, "seed", v, &err) < 0) {
				sid_error_prefix(&err, "--seed");
				return fail("gen", &err);
			}
			p.seed = dc.seed;
		} else if (!strcmp(f, "--cold-frac") || !strcmp(f, "--test-frac")) {
			char *end;
			double d = strtod(v, &end);
			if (end == v || *end) {
				fprintf(stderr, "semid-train gen: %s: \"%s\" is not a number\n", f,
					v);
				return 2;
			}
			*(f[2] == 'c' ? &p.cold_frac : &p.test_frac) = d;
		} else if (!strcmp(f, "--progress-every")) {
			struct tr_config cfg; /* training's default and rules */
			tr_config_defaults(&cfg);
			if (tr_config_flag(&cfg, "progress-every", v, &err) < 0)
				return fail("gen", &err);
			p.progress_every = cfg.progress_every;
		}
	}
	if (!out) {
		fprintf(stderr, "semid-train gen: --out DIR is required\n");
		return 2;
	}
	rc = tr_gen_run(&p, out, &st, &err);
	if (rc > 0) /* stopped by signal rc, cleanly */
		return 128 + rc;
	if (rc < 0)
		return fail("gen", &err);
	printf("{\"dir\": ");
	print_json_string(out);
	printf(", \"items\": %ld, \"users\": %ld, \"dim\": %d, \"train\": %ld, \"test\": %ld, "
	       "\"cold_items\": %ld, \"cold_test\": %ld}\n",
	       p.items, p.users, p.dim, st.train, st.test, st.cold_items, st.cold_test);
	return 0;
}

static int cmd_profile(int argc, char **argv)
{
	static const char *const flags[] = {"--items", "--train", "--out", "--n-users", NULL};
	struct tr_profile_params p = {0};
	struct tr_profile_stats st;
	struct sid_error err;
	const char **path;
	int rc;

	sid_error_clear(&err);
	p.progress = isatty(2);
	for (int i = 0; i < argc; i++) {
		const char *f = argv[i], *v, *hint;
		char buf[64];
		int from_next;
		if (!strcmp(f, "--help") || !strcmp(f, "-h")) {
			usage(stdout);
			return 0;
		}
		if (flag_takes_no_value("semid-train profile", f, help_only))
			return 2;
		v = flag_value(argv[i], i, argc, argv, &from_next);
		if ((hint = flag_unknown(f, flags, buf, sizeof(buf)))) {
			fprintf(stderr, "semid-train profile: unknown option %s%s\n", f, hint);
			return 2;
		}
		path = !strcmp(f, "--items")   ? &p.items
		       : !strcmp(f, "--train") ? &p.train
		       : !strcmp(f, "--out")   ? &p.out
					       : NULL;
		if (!v) {
			fprintf(stderr, "semid-train profile: %s needs a value\n", f);
			return 2;
		}
		i += from_next;
		if (path) {
			*path = v;
		} else {
			/* 0 is tr_profile_params' "not given": an explicit 0 went
			 * unnoticed and wrote every user's row.  Above the bound,
			 * tr_profile_run says why it is one. */
			char *end;
			errno = 0;
			p.n_users = v[0] >= '0' && v[0] <= '9' ? strtol(v, &end, 10) : -1;
			if (p.n_users < 1 || *end || errno) {
				fprintf(
				    stderr,
				    "semid-train profile: --n-users: \"%s\" is not an integer in "
				    "[1, %ld] (leave it out for the largest user index + 1)\n",
				    v, TR_PROFILE_MAX_USERS);
				return 2;
			}
		}
	}
	if (!p.items || !p.train || !p.out) {
		fprintf(stderr, "semid-train profile: --items, --train and --out are required (try "
				"--help)\n");
		return 2;
	}
	rc = tr_profile_run(&p, &st, &err);
	if (rc > 0) {
		fprintf(stderr,
			"semid-train profile: stopped by %s; nothing written (%s is as it was)\n",
			tr_stop_name(rc), p.out);
		return 128 + rc;
	}
	if (rc < 0)
		return fail("profile", &err);
	if (st.empty)
		fprintf(stderr, "semid-train profile: %ld of %ld %s %s no click in %s: %s zeros\n",
			st.empty, st.users, sid_plural(st.users, "user", "users"),
			sid_plural(st.empty, "has", "have"), p.train,
			sid_plural(st.empty, "its row is", "their rows are"));
	if (st.zero_sum)
		fprintf(stderr,
			"semid-train profile: %ld of %ld %s %s clicks in %s whose item rows "
			"sum to zero: %s zeros\n",
			st.zero_sum, st.users, sid_plural(st.users, "user", "users"),
			sid_plural(st.zero_sum, "has", "have"), p.train,
			sid_plural(st.zero_sum, "its row is", "their rows are"));
	printf("{\"out\": ");
	print_json_string(p.out);
	printf(", \"users\": %ld, \"dim\": %d, \"interactions\": %ld, \"empty_users\": %ld, "
	       "\"zero_sum_users\": %ld}\n",
	       st.users, st.dim, st.interactions, st.empty, st.zero_sum);
	return 0;
}

static int dispatch(int argc, char **argv)
{
	if (argc < 2) {
		usage(stderr);
		return 2;
	}
	if (!strcmp(argv[1], "gen"))
		return cmd_gen(argc - 2, argv + 2);
	if (!strcmp(argv[1], "eval"))
		return cmd_eval(argc - 2, argv + 2);
	if (!strcmp(argv[1], "profile"))
		return cmd_profile(argc - 2, argv + 2);
	if (!strcmp(argv[1], "train"))
		return cmd_train(argc - 2, argv + 2);
	if (!strcmp(argv[1], "--help") || !strcmp(argv[1], "-h")) {
		usage(stdout);
		return 0;
	}
	if (!strcmp(argv[1], "--version")) {
		printf("semid-train %s (model format %d)\n", SID_VERSION, SID_FORMAT_VERSION);
		return 0;
	}
	return cmd_train(argc - 1, argv + 1);
}

/*
 * SIGPIPE from a line written to a stderr whose reader went away (a log
 * pipe that died; `2>&1 | tee log` whose tee the same Ctrl-C ended) ended
 * a run at once by the signal's default action: the epoch under way lost,
 * MODEL.lock (and a named temp file) left, the stop a SIGINT had asked for
 * never made.  While a command runs, such a line is lost instead and the
 * run goes on, as it already did where the parent ignores SIGPIPE (a
 * systemd unit).  Stdout is written at the end only: the parent's action
 * is back for that (pipe_release), so a reader of stdout gone is the quiet
 * stop of before.
 */
static struct sigaction pipe_saved;

static void on_pipe(int sig)
{
	(void)sig; /* the write fails with EPIPE: the line is lost */
}

static void pipe_catch(void)
{
	struct sigaction sa;

	memset(&sa, 0, sizeof(sa));
	sa.sa_handler = on_pipe;
	sa.sa_flags = SA_RESTART;
	sigemptyset(&sa.sa_mask);
	sigaction(SIGPIPE, &sa, &pipe_saved);
}

static void pipe_release(void)
{
	sigaction(SIGPIPE, &pipe_saved, NULL);
	sid_sigpipe_quiet_stdout(); /* `| head -1` where SIGPIPE is ignored: 141, quietly */
}

/*
 * Before OpenBLAS is initialised: a function in the executable's
 * .preinit_array runs before any shared library's constructor, and
 * OpenBLAS's starts its threads.  Under a limit on threads (ulimit -u) one
 * that could not start made OpenBLAS raise SIGINT there, and the trainer
 * died as if interrupted (exit 130) before main().  The re-execution
 * sid_blas_no_threads_at_load makes under a limit happens here, before
 * that; main() calls it again for a loader that runs no .preinit_array (a
 * no-op after a re-execution).
 */
static void blas_preinit(int argc, char **argv, char **envp)
{
	(void)argc;
	/* libc sets environ only after: getenv saw nothing, and a setenv
	 * made an environment of one variable */
	if (!environ)
		environ = envp;
	sid_blas_no_threads_at_load(argv);
}
__attribute__((section(".preinit_array"),
	       used)) static void (*const preinit)(int, char **, char **) = blas_preinit;

int main(int argc, char **argv)
{
	int status;
	char lost[128];

	sid_blas_tune(argv);		   /* may re-execute with OpenBLAS's faster kernels */
	sid_blas_no_threads_at_load(argv); /* under ulimit -v, -d or -u: may re-execute */
	/* after: the re-executed process is the one that runs; --threads,
	 * parsed later, wins */
	tr_overcommit_default_threads(); /* sid_blas_default_threads, kept */
	pipe_catch();			 /* after: an exec resets a handler, not SIG_IGN */
	/* ulimit -f reached: EFBIG ("File too large") naming the file, not a
	 * silent SIGXFSZ */
	signal(SIGXFSZ, SIG_IGN);
	status = dispatch(argc, argv);
	pipe_release();
	/* What went to stdout (the evaluation JSON, gen's summary) must have
	 * arrived: `> eval.json` on a full disk used to exit 0 with the file
	 * empty.  errno names the cause only when the flush itself failed. */
	if (sid_stdout_lost(lost, sizeof(lost)) && status == 0) {
		/* a write before pipe_release found stdout's reader gone: the
		 * quiet stop it would have been after it */
		if (sid_stdout_pipe_gone()) {
			raise(SIGPIPE);
			return 128 + SIGPIPE;
		}
		fprintf(stderr, "semid-train: stdout: write failed%s\n", lost);
		status = 1;
	}
	return status;
}
