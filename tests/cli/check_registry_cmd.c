/*
 * check_registry_cmd.c - tests for `semid registry ...` (cli/registry_cmd.c),
 * called in-process through cli_registry_main on SQLite stores: usage errors,
 * a bulk assign from a model and a .npy built here (suffixes checked against
 * codes computed by the encoder directly), idempotent re-runs, export and
 * import round trips with conflicts (exit 3), stats and diff JSON against
 * hand counts, lookups, delete (by operands and --ids, not found: exit 3),
 * bad stores (exit 1 and 2), and an assign killed with
 * SIGKILL whose acknowledged lines must all be in the store afterwards, an
 * export killed mid-write that leaves its directory as it was, and an import
 * line or an --ids line over the limit refused in a child whose address
 * space is capped.
 */
#include <check.h>
#include "check_main.h"
#include "kill_after.h"
#include "kill_mid_write.h"
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <math.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "../../cli/cli.h" /* tests build with -Icore -Itests only */
#include "encode.h"
#include "fsutil.h"
#include "model.h"
#include "model_builder.h"
#include "npy.h"
#include "registry.h"
#include "../../cli/registry_cmd.h"
#include <sqlite3.h>

static char dir[] = "/tmp/check_registry_cmd.XXXXXX";
static char model[300], model2[300], npy[300], ids[300], db[300], out[300];

enum { N = 200 };
static float X[N * 8];

/* cli_registry_main on the NULL-terminated arguments from @first on. */
static int vrun(const char *first, va_list ap)
{
	char *argv[32];
	int argc = 0;
	for (const char *a = first; a && argc < 31; a = va_arg(ap, const char *))
		argv[argc++] = (char *)a;
	argv[argc] = NULL;
	return cli_registry_main(argc, argv);
}

static int run(const char *first, ...)
{
	va_list ap;
	int rc;
	va_start(ap, first);
	rc = vrun(first, ap);
	va_end(ap);
	return rc;
}

/* A file for a run's stderr (already unlinked), and what it holds, read
 * into @buf (NUL-terminated) as it is closed. */
static int stderr_file(void)
{
	char path[400];
	int fd;

	snprintf(path, sizeof(path), "%s/stderr.txt", dir);
	fd = open(path, O_RDWR | O_CREAT | O_TRUNC, 0644);
	ck_assert_int_ge(fd, 0);
	unlink(path);
	return fd;
}

static void stderr_read(int fd, char *buf, size_t cap)
{
	ssize_t n = pread(fd, buf, cap - 1, 0);
	buf[n > 0 ? n : 0] = '\0';
	close(fd);
}

/* Run with stderr captured into @buf (NUL-terminated); returns the status. */
static int run_err(char *buf, size_t cap, const char *first, ...)
{
	int rc, saved, fd = stderr_file();
	va_list ap;

	fflush(stderr);
	saved = dup(2);
	dup2(fd, 2);
	va_start(ap, first);
	rc = vrun(first, ap);
	va_end(ap);
	fflush(stderr);
	dup2(saved, 2);
	close(saved);
	stderr_read(fd, buf, cap);
	return rc;
}

#define ASSERT_HAS(buf, needle)                                                                    \
	ck_assert_msg(strstr(buf, needle) != NULL, "'%s' lacks '%s'", buf, needle)

/* Run in a child, as a process starts (SIGTERM's default action), after
 * @setup (a test hook) with stderr captured into @buf; returns its
 * waitpid status. */
static int run_forked(char *buf, size_t cap, void (*setup)(void), const char *first, ...)
{
	int status, efd = stderr_file();
	va_list ap;
	pid_t pid;

	fflush(NULL);
	pid = fork();
	ck_assert_int_ge(pid, 0);
	if (pid == 0) {
		dup2(efd, 2);
		signal(SIGTERM, SIG_DFL);
		setup();
		va_start(ap, first);
		_exit(vrun(first, ap));
	}
	ck_assert_int_eq(waitpid(pid, &status, 0), pid);
	stderr_read(efd, buf, cap);
	return status;
}

static json_t *load_json(const char *path)
{
	json_error_t je;
	json_t *j = json_load_file(path, 0, &je);
	ck_assert_msg(j != NULL, "%s: %s", path, je.text);
	return j;
}

static long count_lines(const char *path)
{
	FILE *f = fopen(path, "r");
	long n = 0;
	int c;
	ck_assert_ptr_nonnull(f);
	while ((c = fgetc(f)) != EOF)
		n += c == '\n';
	fclose(f);
	return n;
}

/* @n rows of 8 random floats (from @seed, in @x) to @npy, and ids item-0..
 * item-(n-1) to @idsf. */
static void write_inputs(const char *npy_path, const char *idsf, int n, uint64_t seed, float *x)
{
	struct sid_error err;
	FILE *f;

	for (int i = 0; i < n * 8; i++)
		x[i] = mb_rand_sym(&seed);
	ck_assert_int_eq(sid_npy_write(npy_path, SID_NPY_F32, (size_t)n, 8, x, &err), 0);
	f = fopen(idsf, "w");
	ck_assert_ptr_nonnull(f);
	for (int i = 0; i < n; i++)
		fprintf(f, "item-%d\n", i);
	fclose(f);
}

static void setup(void)
{
	struct mb_spec spec;
	struct sid_error err;

	ck_assert_ptr_nonnull(mkdtemp(dir));
	snprintf(model, sizeof(model), "%s/m.safetensors", dir);
	snprintf(model2, sizeof(model2), "%s/m2.safetensors", dir);
	snprintf(npy, sizeof(npy), "%s/x.npy", dir);
	snprintf(ids, sizeof(ids), "%s/ids.txt", dir);
	snprintf(db, sizeof(db), "%s/semid-registry.db", dir);
	snprintf(out, sizeof(out), "%s/out", dir);
	mb_spec_init(&spec); /* item: 8 -> 16 -> 4, L = 3, K = {5, 7, 3}: 105 code tuples */
	spec.model_version = "m-one";
	ck_assert_int_eq(mb_build_file(&spec, model, &err), 0);
	spec.seed = 2;
	spec.model_version = "m-two";
	ck_assert_int_eq(mb_build_file(&spec, model2, &err), 0);
	write_inputs(npy, ids, N, 5, X);
}

static void teardown(void)
{
	char cmd[400];
	snprintf(cmd, sizeof(cmd), "rm -rf %s", dir);
	ck_assert_int_eq(system(cmd), 0);
	strcpy(dir, "/tmp/check_registry_cmd.XXXXXX");
}

/* The codes @path's item tower gives the rows of X. */
static void encode_all(const char *path, int32_t *codes)
{
	struct sid_model *m;
	struct sid_error err;
	struct sid_workspace *ws = sid_workspace_new();
	struct sid_encode_out o = {.codes = codes};
	ck_assert_int_eq(sid_model_load(path, &m, &err), 0);
	ck_assert_int_eq(sid_encode(sid_model_tower(m, SID_TOWER_ITEM), X, N, &o, ws, &err), 0);
	sid_workspace_free(ws);
	sid_model_unref(m);
}

START_TEST(t_usage)
{
	ck_assert_int_eq(run("registry", NULL), CLI_EXIT_INPUT);
	ck_assert_int_eq(run("registry", "--help", NULL), CLI_EXIT_OK);
	ck_assert_int_eq(run("registry", "frobnicate", NULL), CLI_EXIT_INPUT);
	ck_assert_int_eq(run("registry", "stats", "--bogus", NULL), CLI_EXIT_INPUT);
	ck_assert_int_eq(run("registry", "stats", "--kind", "cat", "--db", db, NULL),
			 CLI_EXIT_INPUT);
	ck_assert_int_eq(run("registry", "stats", "--kind", "all", "--db", db, NULL),
			 CLI_EXIT_INPUT);
	ck_assert_int_eq(run("registry", "stats", NULL), CLI_EXIT_INPUT); /* no store */
	ck_assert_int_eq(run("registry", "assign", "--db", db, NULL), CLI_EXIT_INPUT);
	ck_assert_int_eq(run("registry", "export", "--format", "xml", "--db", db, NULL),
			 CLI_EXIT_INPUT);
	ck_assert_int_eq(run("registry", "get", "a", "b", "--db", db, NULL), CLI_EXIT_INPUT);
}
END_TEST

/* A usage error names the argument at fault, not a neighbour: the value
 * of an earlier option ("--db STORE -xP" and "-d STORE -Px" said "option
 * STORE"). */
START_TEST(t_usage_names_the_bad_option)
{
	static const struct {
		const char *a[4], *says;
	} cases[] = {
	    {{"--db", "DB", "-xP", NULL}, "unknown option -x"},
	    {{"-d", "DB", "-Px", NULL}, "unknown option -P"}, /* --progress has no -P */
	    {{"-d", "DB", "--no-progress", "-x"}, "unknown option -x"},
	    {{"-x", "--progress", "-d", "DB"}, "unknown option -x"},
	    {{"-d", "DB", "--bogus=3", NULL}, "unknown option --bogus=3"},
	    {{"-d", "DB", "-o", NULL}, "-o needs a value"},
	    {{"-d", "DB", "--output", NULL}, "--output needs a value"},
	    /* not "-P": getopt's optopt is then the long option's value */
	    {{"-d", "DB", "--progress=1", NULL}, "--progress takes no value, not --progress=1"},
	    {{"--no-progress", "-d", "DB", "-Qx"}, "unknown option -Q"},
	};
	char msg[2048];

	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		const char *a[4];
		for (int j = 0; j < 4; j++)
			a[j] = cases[i].a[j] && !strcmp(cases[i].a[j], "DB") ? db : cases[i].a[j];
		ck_assert_int_eq(
		    run_err(msg, sizeof(msg), "registry", "stats", a[0], a[1], a[2], a[3], NULL),
		    CLI_EXIT_INPUT);
		ck_assert_msg(strstr(msg, cases[i].says) != NULL, "case %zu: '%s' lacks '%s'", i,
			      msg, cases[i].says);
	}
}
END_TEST

/* 1 when files @a and @b hold the same bytes. */
static int same_bytes(const char *a, const char *b)
{
	char cmd[800];
	snprintf(cmd, sizeof(cmd), "cmp -s '%s' '%s'", a, b);
	return system(cmd) == 0;
}

START_TEST(t_assign_export_import)
{
	static int32_t codes[N * 3];
	static int seen[105 * N];
	char line[512], db2[320], exp1[320], exp2[320], bad[320];
	FILE *f;
	int n = 0;
	json_t *j;

	encode_all(model, codes);
	/* no --db: the store is the file next to the model */
	ck_assert_int_eq(run("registry", "assign", "--model", model, "--input", npy, "--ids", ids,
			     "--batch", "17", "--output", out, NULL),
			 CLI_EXIT_OK);
	ck_assert_int_eq(access(db, F_OK), 0);
	f = fopen(out, "r");
	ck_assert_ptr_nonnull(f);
	memset(seen, 0, sizeof(seen));
	while (fgets(line, sizeof(line), f)) {
		char id[64], sid[64];
		int created, c0, c1, c2, i;
		long suffix;
		ck_assert_int_eq(sscanf(line, "%63s %63s %d", id, sid, &created), 3);
		ck_assert_int_eq(sscanf(id, "item-%d", &i), 1);
		ck_assert_int_eq(i, n);
		ck_assert_int_eq(sscanf(sid, "%d-%d-%d-%ld", &c0, &c1, &c2, &suffix), 4);
		/* the encoder's codes, and suffixes 0, 1, ... in input order per tuple */
		ck_assert_int_eq(c0, codes[3 * i]);
		ck_assert_int_eq(c1, codes[3 * i + 1]);
		ck_assert_int_eq(c2, codes[3 * i + 2]);
		ck_assert_int_eq(suffix, seen[(c0 * 7 + c1) * 3 + c2]++);
		ck_assert_int_eq(created, 1);
		n++;
	}
	fclose(f);
	ck_assert_int_eq(n, N);
	/* again: nothing created, same output but the created column */
	ck_assert_int_eq(run("registry", "assign", "--model", model, "--input", npy, "--ids", ids,
			     "--db", db, "--output", out, NULL),
			 CLI_EXIT_OK);
	f = fopen(out, "r");
	while (fgets(line, sizeof(line), f))
		ck_assert_ptr_nonnull(strstr(line, "\t0\n"));
	fclose(f);

	/* stats by hand from the codes */
	ck_assert_int_eq(run("registry", "stats", "--db", db, "-o", out, NULL), CLI_EXIT_OK);
	j = load_json(out);
	{
		int tuples = 0, l0 = 0, maxs = 0, zero = 0;
		int first[5] = {0};
		for (int t = 0; t < 105; t++) {
			if (seen[t]) {
				tuples++;
				zero++;
				if (seen[t] - 1 > maxs)
					maxs = seen[t] - 1;
				first[t / 21] = 1;
			}
		}
		for (int c = 0; c < 5; c++)
			l0 += first[c];
		ck_assert_int_eq(json_integer_value(json_object_get(j, "items")), N);
		ck_assert_int_eq(json_integer_value(json_object_get(j, "levels")), 3);
		ck_assert_int_eq(
		    json_integer_value(json_array_get(json_object_get(j, "unique_prefixes"), 0)),
		    l0);
		ck_assert_int_eq(
		    json_integer_value(json_array_get(json_object_get(j, "unique_prefixes"), 2)),
		    tuples);
		ck_assert_int_eq(json_integer_value(json_object_get(j, "max_suffix")), maxs);
		ck_assert_int_eq(
		    json_integer_value(json_object_get(
			json_array_get(json_object_get(j, "suffix_histogram"), 0), "count")),
		    zero);
		ck_assert_int_eq(json_integer_value(json_object_get(j, "with_embedding")), N);
	}
	json_decref(j);

	/* export (with embeddings), import into a new store, export again: equal */
	snprintf(db2, sizeof(db2), "%s/two.db", dir);
	snprintf(exp1, sizeof(exp1), "%s/e1.jsonl", dir);
	snprintf(exp2, sizeof(exp2), "%s/e2.jsonl", dir);
	ck_assert_int_eq(run("registry", "export", "--db", db, "--format", "jsonl", "--embeddings",
			     "--output", exp1, NULL),
			 CLI_EXIT_OK);
	ck_assert_int_eq(count_lines(exp1), N);
	ck_assert_int_eq(run("registry", "import", exp1, "--db", db2, NULL), CLI_EXIT_OK);
	ck_assert_int_eq(run("registry", "import", exp1, "--db", db2, NULL), CLI_EXIT_OK);
	ck_assert_int_eq(run("registry", "export", "--db", db2, "--format", "jsonl", "--embeddings",
			     "--output", exp2, NULL),
			 CLI_EXIT_OK);
	{
		ck_assert_msg(same_bytes(exp1, exp2), "%s and %s differ", exp1, exp2);
	}
	/* TSV export: a header and a line per item (named: the .jsonl file's
	 * name alone would make it JSON lines) */
	ck_assert_int_eq(
	    run("registry", "export", "--db", db, "--format", "tsv", "--output", exp2, NULL),
	    CLI_EXIT_OK);
	ck_assert_int_eq(count_lines(exp2), N + 1);
	/* a conflicting file: exit 3, the good line still imported */
	snprintf(bad, sizeof(bad), "%s/bad.tsv", dir);
	f = fopen(bad, "w");
	fprintf(f,
		"item\titem-0\t4-4-2-9\tv\t2026-01-02T03:04:05.006Z\t2026-01-02T03:04:05.006Z\t\n"
		"item\tother\t4-4-2-9\tv\t2026-01-02T03:04:05.006Z\t2026-01-02T03:04:05.006Z\t\n");
	fclose(f);
	ck_assert_int_eq(run("registry", "import", bad, "--db", db2, NULL),
			 CLI_REGISTRY_EXIT_CONFLICTS);
	ck_assert_int_eq(run("registry", "get", "other", "--db", db2, "-o", out, NULL),
			 CLI_EXIT_OK);
	j = load_json(out);
	ck_assert_str_eq(json_string_value(json_object_get(j, "sid")), "4-4-2-9");
	json_decref(j);
	/* a malformed file: exit 2 */
	f = fopen(bad, "w");
	fprintf(f, "item\tx\t4--2-9\tv\t2026-01-02T03:04:05.006Z\t2026-01-02T03:04:05.006Z\t\n");
	fclose(f);
	ck_assert_int_eq(run("registry", "import", bad, "--db", db2, NULL), CLI_EXIT_INPUT);
}
END_TEST

START_TEST(t_diff_and_lookups)
{
	static int32_t c1[N * 3], c2[N * 3];
	static char sid1[N][64]; /* each id's sid after the first assign */
	long level[3] = {0}, prefix[3] = {0}, changed = 0;
	json_t *j, *a;
	char sid[64], msg[1024], want[128];

	encode_all(model, c1);
	encode_all(model2, c2);
	for (int i = 0; i < N; i++) {
		int any = 0;
		for (int l = 0; l < 3; l++) {
			if (c1[3 * i + l] != c2[3 * i + l]) {
				level[l]++;
				any = 1;
			}
			prefix[l] += any;
		}
		changed += any;
	}
	ck_assert_int_gt(changed, 0);
	ck_assert_int_eq(run("registry", "assign", "--model", model, "--input", npy, "--ids", ids,
			     "--output", out, NULL),
			 CLI_EXIT_OK);
	{
		FILE *f = fopen(out, "r");
		char line[256];
		int i = 0, k, cr;
		while (i < N && fgets(line, sizeof(line), f)) {
			ck_assert_int_eq(sscanf(line, "item-%d\t%63s\t%d", &k, sid1[i], &cr), 3);
			ck_assert_int_eq(k, i);
			ck_assert_int_eq(cr, 1);
			i++;
		}
		fclose(f);
		ck_assert_int_eq(i, N);
	}
	/* the same model: no churn */
	ck_assert_int_eq(run("registry", "diff", "--model", model, "--db", db, "-o", out, NULL),
			 CLI_EXIT_OK);
	j = load_json(out);
	ck_assert_int_eq(json_integer_value(json_object_get(j, "compared")), N);
	ck_assert_int_eq(json_integer_value(json_object_get(j, "changed")), 0);
	json_decref(j);
	/* another model: the counts from encoding both directly */
	ck_assert_int_eq(run("registry", "diff", "--model", model2, "--db", db, "-o", out, NULL),
			 CLI_EXIT_OK);
	j = load_json(out);
	ck_assert_str_eq(json_string_value(json_object_get(j, "model_version")), "m-two");
	ck_assert_int_eq(json_integer_value(json_object_get(j, "changed")), changed);
	a = json_object_get(j, "level_changed");
	for (int l = 0; l < 3; l++)
		ck_assert_int_eq(json_integer_value(json_array_get(a, l)), level[l]);
	a = json_object_get(j, "prefix_changed");
	for (int l = 0; l < 3; l++)
		ck_assert_int_eq(json_integer_value(json_array_get(a, l)), prefix[l]);
	json_decref(j);
	/* changed_fraction as a person reads it: its value, without the 17th-digit
	 * noise of a double printed in full ("0.18499999999999999" for 37/200) */
	{
		FILE *f = fopen(out, "r");
		char text[4096], *num, *end;
		size_t n = f ? fread(text, 1, sizeof(text) - 1, f) : 0;
		int digits = 0;
		if (f)
			fclose(f);
		text[n] = 0;
		num = strstr(text, "\"changed_fraction\": ");
		ck_assert_ptr_nonnull(num);
		num += strlen("\"changed_fraction\": ");
		ck_assert_double_eq_tol(strtod(num, &end), (double)changed / N, 1e-12);
		for (char *c = num; c < end && *c != 'e'; c++)
			digits += *c >= '0' && *c <= '9' && (digits || *c != '0');
		ck_assert_msg(digits <= 15, "changed_fraction printed as %.*s", (int)(end - num),
			      num);
	}

	/* reassign with the new model: afterwards the diff against it is empty and
	 * every printed sid carries model2's codes; each line says whether the id
	 * moved (exactly those whose codes model2 changes) and from which sid,
	 * and stderr how many moved */
	ck_assert_int_eq(run_err(msg, sizeof(msg), "registry", "assign", "--model", model2,
				 "--input", npy, "--ids", ids, "--reassign", "--output", out, NULL),
			 CLI_EXIT_OK);
	snprintf(want, sizeof(want),
		 "%d item inputs to model m-two: %ld moved to new codes, 0 created, %ld kept", N,
		 changed, N - changed);
	ASSERT_HAS(msg, want);
	{
		FILE *f = fopen(out, "r");
		char line[256];
		int i = 0;
		while (fgets(line, sizeof(line), f)) {
			int x0, x1, x2, created, moved, n = 0;
			int differs = memcmp(c1 + 3 * i, c2 + 3 * i, 3 * sizeof(int32_t)) != 0;
			char *from;
			ck_assert_int_eq(sscanf(line, "item-%*d\t%d-%d-%d-%*d\t%d\t%d\t%n", &x0,
						&x1, &x2, &created, &moved, &n),
					 5);
			ck_assert_int_gt(n, 0);
			ck_assert_int_eq(x0, c2[3 * i]);
			ck_assert_int_eq(x1, c2[3 * i + 1]);
			ck_assert_int_eq(x2, c2[3 * i + 2]);
			ck_assert_int_eq(created, 0);
			ck_assert_int_eq(moved, differs);
			from = line + n;
			from[strcspn(from, "\n")] = '\0';
			ck_assert_str_eq(from, differs ? sid1[i] : "");
			i++;
		}
		fclose(f);
		ck_assert_int_eq(i, N);
	}
	ck_assert_int_eq(run("registry", "diff", "--model", model2, "--db", db, "-o", out, NULL),
			 CLI_EXIT_OK);
	j = load_json(out);
	ck_assert_int_eq(json_integer_value(json_object_get(j, "changed")), 0);
	json_decref(j);
	/* back to the first model for the lookups below */
	ck_assert_int_eq(run("registry", "assign", "--model", model, "--input", npy, "--ids", ids,
			     "--reassign", "--output", out, NULL),
			 CLI_EXIT_OK);

	/* lookups */
	ck_assert_int_eq(run("registry", "get", "item-7", "--db", db, "-o", out, NULL),
			 CLI_EXIT_OK);
	j = load_json(out);
	ck_assert_int_eq(json_integer_value(json_array_get(json_object_get(j, "codes"), 0)),
			 c1[21]);
	ck_assert_str_eq(json_string_value(json_object_get(j, "model_version")), "m-one");
	snprintf(sid, sizeof(sid), "%s", json_string_value(json_object_get(j, "sid")));
	json_decref(j);
	ck_assert_int_eq(run("registry", "sid", sid, "--db", db, "-o", out, NULL), CLI_EXIT_OK);
	j = load_json(out);
	ck_assert_str_eq(json_string_value(json_object_get(j, "id")), "item-7");
	json_decref(j);
	snprintf(sid, sizeof(sid), "%d", c1[21]);
	ck_assert_int_eq(
	    run("registry", "list", "--prefix", sid, "--limit", "3", "--db", db, "-o", out, NULL),
	    CLI_EXIT_OK);
	j = load_json(out);
	ck_assert(json_array_size(j) >= 1 && json_array_size(j) <= 3);
	json_decref(j);
	ck_assert_int_eq(run("registry", "get", "nobody", "--db", db, NULL), CLI_EXIT_INPUT);
	ck_assert_int_eq(run("registry", "sid", "1--2-0", "--db", db, NULL), CLI_EXIT_INPUT);
	ck_assert_int_eq(run("registry", "list", "--prefix", "1-2-3-4", "--db", db, NULL),
			 CLI_EXIT_INPUT);
}
END_TEST

START_TEST(t_bad_stores)
{
	char msg[2048];
	FILE *f = fopen(db, "w");
	fputs("this is not a database, just some text that goes on for a while...........", f);
	fclose(f);
	ck_assert_int_eq(run("registry", "stats", "--db", db, NULL), CLI_EXIT_INPUT);
	ck_assert_int_eq(run("registry", "stats", "--db",
			     "host=127.0.0.1 port=1 dbname=x connect_timeout=2", NULL),
			 CLI_EXIT_IO);
	/* a password in --db: warned about (there was no word of it), never shown */
	ck_assert_int_eq(run_err(msg, sizeof(msg), "registry", "stats", "--db",
				 "postgresql://u:Pw-s3cret@127.0.0.1:1/x?connect_timeout=2", NULL),
			 CLI_EXIT_IO);
	ASSERT_HAS(msg, "warning: the --db connection string holds a password");
	ASSERT_HAS(msg, "postgresql://u@127.0.0.1:1/x");
	ck_assert_ptr_null(strstr(msg, "Pw-s3cret"));
	ck_assert_int_eq(run_err(msg, sizeof(msg), "registry", "stats", "--db",
				 "postgresql://u@127.0.0.1:1/x?connect_timeout=2", NULL),
			 CLI_EXIT_IO);
	ck_assert_ptr_null(strstr(msg, "warning"));
}
END_TEST

/* An --output that is the store, the model, the input or the ids file is
 * refused before anything is written: it would replace what is read. */
START_TEST(t_output_is_an_input)
{
	struct sid_model *m;
	struct sid_registry *r;
	struct sid_reg_stats st;
	struct sid_error err;

	ck_assert_int_eq(run("registry", "assign", "--model", model, "--input", npy, "--ids", ids,
			     "--output", out, NULL),
			 CLI_EXIT_OK);
	ck_assert_int_eq(run("registry", "export", "--db", db, "--output", db, NULL),
			 CLI_EXIT_INPUT);
	ck_assert_int_eq(run("registry", "stats", "--model", model, "-o", db, NULL),
			 CLI_EXIT_INPUT);
	ck_assert_int_eq(run("registry", "assign", "--model", model, "--input", npy, "--ids", ids,
			     "--output", ids, NULL),
			 CLI_EXIT_INPUT);
	ck_assert_int_eq(run("registry", "assign", "--model", model, "--input", npy, "--ids", ids,
			     "--output", npy, NULL),
			 CLI_EXIT_INPUT);
	ck_assert_int_eq(run("registry", "diff", "--model", model, "--db", db, "-o", model, NULL),
			 CLI_EXIT_INPUT);
	/* backup's --model only says where the store is, but is no less an input */
	ck_assert_int_eq(run("registry", "backup", "--model", model, "-o", model, NULL),
			 CLI_EXIT_INPUT);
	ck_assert_int_eq(sid_model_load(model, &m, &err), 0);
	sid_model_unref(m);
	ck_assert_int_eq(sid_registry_open(db, SID_REG_READONLY, &r, &err), 0);
	ck_assert_int_eq(sid_registry_stats(r, SID_TOWER_ITEM, &st, &err), 0);
	ck_assert_int_eq(st.items, N);
	sid_registry_close(r);
	ck_assert_int_eq(count_lines(ids), N);
	ck_assert_int_eq(run("registry", "diff", "--model", model, "--db", db, "-o", out, NULL),
			 CLI_EXIT_OK);
}
END_TEST

/*
 * Bad input found by the audit: each is exit 2 with a message naming the
 * file, line or option, and none leaves a new store behind.
 */
START_TEST(t_bad_inputs)
{
	char e[2048], db2[320], sub[320], p[340], once[800];
	FILE *f;

	snprintf(db2, sizeof(db2), "%s/new.db", dir);
	snprintf(sub, sizeof(sub), "%s/sub", dir);
	ck_assert_int_eq(mkdir(sub, 0755), 0);
	/* a directory is not a registry (was "disk I/O error", exit 1) */
	ck_assert_int_eq(run_err(e, sizeof(e), "registry", "stats", "--db", sub, NULL),
			 CLI_EXIT_INPUT);
	ASSERT_HAS(e, "a directory, not a registry file");
	/* a missing or directory import file: no empty store created for it */
	snprintf(p, sizeof(p), "%s/none.tsv", dir);
	ck_assert_int_eq(run_err(e, sizeof(e), "registry", "import", p, "--db", db2, NULL),
			 CLI_EXIT_INPUT);
	ASSERT_HAS(e, "none.tsv: cannot open");
	ck_assert_int_eq(run_err(e, sizeof(e), "registry", "import", sub, "--db", db2, NULL),
			 CLI_EXIT_INPUT);
	ASSERT_HAS(e, "sub: is a directory");
	ck_assert_int_eq(access(db2, F_OK), -1);
	/* operands and options a command does not take are not silently ignored */
	ck_assert_int_eq(run_err(e, sizeof(e), "registry", "stats", "--db", db, "extra", NULL),
			 CLI_EXIT_INPUT);
	ASSERT_HAS(e, "unexpected argument extra");
	ck_assert_int_eq(
	    run_err(e, sizeof(e), "registry", "stats", "--db", db, "--format", "jsonl", NULL),
	    CLI_EXIT_INPUT);
	ASSERT_HAS(e, "--format is not an option of stats");
	ck_assert_int_eq(
	    run_err(e, sizeof(e), "registry", "import", p, "--db", db2, "-o", "x", NULL),
	    CLI_EXIT_INPUT);
	ASSERT_HAS(e, "--output is not an option of import");
	/* the same id twice in --ids: its second row would be dropped unsaid */
	f = fopen(ids, "a");
	fputs("item-3\n", f);
	fclose(f);
	{
		float *x2 = malloc(sizeof(float) * (N + 1) * 8);
		struct sid_error err;
		memcpy(x2, X, sizeof(float) * N * 8);
		memcpy(x2 + N * 8, X, sizeof(float) * 8);
		ck_assert_int_eq(sid_npy_write(npy, SID_NPY_F32, N + 1, 8, x2, &err), 0);
		free(x2);
	}
	ck_assert_int_eq(run_err(e, sizeof(e), "registry", "assign", "--model", model, "--input",
				 npy, "--ids", ids, "--db", db2, NULL),
			 CLI_EXIT_INPUT);
	ASSERT_HAS(e, "line 201: id 'item-3' is already on line 4");
	/* --ids a directory: not "0 ids for N rows" */
	ck_assert_int_eq(run_err(e, sizeof(e), "registry", "assign", "--model", model, "--input",
				 npy, "--ids", sub, "--db", db2, NULL),
			 CLI_EXIT_INPUT);
	ASSERT_HAS(e, "sub: cannot read: Is a directory");
	/* int32 embeddings: named, found before any store is made */
	{
		int32_t zeros[8 * 4] = {0};
		struct sid_error err;
		snprintf(p, sizeof(p), "%s/i32.npy", dir);
		ck_assert_int_eq(sid_npy_write(p, SID_NPY_I32, 4, 8, zeros, &err), 0);
	}
	ck_assert_int_eq(run_err(e, sizeof(e), "registry", "assign", "--model", model, "--input", p,
				 "--ids", ids, "--db", db2, NULL),
			 CLI_EXIT_INPUT);
	snprintf(once, sizeof(once), "semid: %s: has dtype int32", p);
	ASSERT_HAS(e, once);
	ck_assert_int_eq(access(db2, F_OK), -1);
	/* a non-finite value: the file, row and column */
	X[7 * 8 + 3] = NAN;
	{
		struct sid_error err;
		ck_assert_int_eq(sid_npy_write(npy, SID_NPY_F32, N, 8, X, &err), 0);
	}
	f = fopen(ids, "w");
	for (int i = 0; i < N; i++)
		fprintf(f, "item-%d\n", i);
	fclose(f);
	ck_assert_int_eq(run_err(e, sizeof(e), "registry", "assign", "--model", model, "--input",
				 npy, "--ids", ids, "--db", db2, NULL),
			 CLI_EXIT_INPUT);
	snprintf(once, sizeof(once), "semid: %s: row 7, column 3 is not finite", npy);
	ASSERT_HAS(e, once);
	/* finite, but too large for the model's layers: its codes would mean
	 * nothing, and were stored */
	X[7 * 8 + 3] = 0.0f;
	for (int j = 0; j < 8; j++)
		X[9 * 8 + j] = j % 2 ? 3e38f : -3e38f;
	{
		struct sid_error err;
		ck_assert_int_eq(sid_npy_write(npy, SID_NPY_F32, N, 8, X, &err), 0);
	}
	ck_assert_int_eq(run_err(e, sizeof(e), "registry", "assign", "--model", model, "--input",
				 npy, "--ids", ids, "--db", db2, NULL),
			 CLI_EXIT_INPUT);
	snprintf(once, sizeof(once), "semid: %s: row 9", npy);
	ASSERT_HAS(e, once);
	ASSERT_HAS(e, "too large for the model");
	/* a bad model is named once, not "M: M: ..." (on a store that exists,
	 * so that the model is what fails) */
	ck_assert_int_eq(access(db2, F_OK), 0);
	ck_assert_int_eq(
	    run_err(e, sizeof(e), "registry", "diff", "--model", npy, "--db", db2, NULL),
	    CLI_EXIT_INPUT);
	snprintf(once, sizeof(once), "semid: %s: ", npy);
	ASSERT_HAS(e, once);
	snprintf(once, sizeof(once), "%s: %s", npy, npy);
	ck_assert_msg(strstr(e, once) == NULL, "named twice: %s", e);
}
END_TEST

/*
 * The input truncated while assign reads it (the first acknowledgement cuts
 * it): the rows not read yet fault (SIGBUS), which is reported naming the
 * input, exit 1, not a crash with a core dump.
 */
START_TEST(t_input_truncated_while_read)
{
	char errpath[400], want[600];
	int status, fd;
	pid_t pid;

	snprintf(errpath, sizeof(errpath), "%s/stderr", dir);
	pid = fork();
	ck_assert_int_ge(pid, 0);
	if (pid == 0) {
		fd = open(errpath, O_WRONLY | O_CREAT | O_TRUNC, 0600);
		if (fd < 0 || dup2(fd, STDERR_FILENO) < 0)
			_exit(98);
		close(fd);
		fd = open(npy, O_WRONLY);
		if (fd < 0) /* no truncation: the exit status would not prove a thing */
			_exit(99);
		stdout = truncating_stream(&fd);
		_exit(run("registry", "assign", "--model", model, "--input", npy, "--ids", ids,
			  "--batch", "1", NULL));
	}
	ck_assert_int_eq(waitpid(pid, &status, 0), pid);
	ck_assert_msg(WIFEXITED(status) && WEXITSTATUS(status) == CLI_EXIT_IO, "status 0x%x",
		      status);
	snprintf(want, sizeof(want),
		 "semid: %s: the file shrank or failed while being read (SIGBUS); stopped\n", npy);
	check_file_has(errpath, want);
}
END_TEST

START_TEST(t_sigkill)
{
	int fd[2], acked = 0;
	pid_t pid;
	static char buf[1 << 16];
	struct sid_registry *r;
	struct sid_error err;
	char *save = NULL, *line;

	ck_assert_int_eq(pipe(fd), 0);
	pid = fork();
	ck_assert_int_ge(pid, 0);
	if (pid == 0) {
		close(fd[0]);
		dup2(fd[1], 1);
		_exit(run("registry", "assign", "--model", model, "--input", npy, "--ids", ids,
			  "--batch", "1", NULL));
	}
	close(fd[1]);
	kill_after_lines(fd[0], pid, 25, buf, sizeof(buf));
	ck_assert_int_eq(sid_registry_open(db, 0, &r, &err), 0);
	acked = 0;
	for (line = strtok_r(buf, "\n", &save); line; line = strtok_r(NULL, "\n", &save)) {
		char id[64], sid[64], s[SID_REG_SID_MAX];
		struct sid_reg_entry e;
		ck_assert_int_eq(sscanf(line, "%63s %63s", id, sid), 2);
		ck_assert_msg(sid_registry_get(r, SID_TOWER_ITEM, id, &e, &err) == 0,
			      "acknowledged %s lost", id);
		sid_reg_sid_format(e.codes, e.L, e.suffix, s, sizeof(s));
		ck_assert_str_eq(s, sid);
		acked++;
	}
	ck_assert_int_ge(acked, 25);
	sid_registry_close(r);
}
END_TEST

/* Assign @m more ids (item-0.., rows from @seed in @x) into the store. */
static void assign_rows(int m, uint64_t seed, float *x)
{
	char x2[320], ids2[320];

	snprintf(x2, sizeof(x2), "%s/x2.npy", dir);
	snprintf(ids2, sizeof(ids2), "%s/ids2.txt", dir);
	write_inputs(x2, ids2, m, seed, x);
	ck_assert_int_eq(run("registry", "assign", "--model", model, "--input", x2, "--ids", ids2,
			     "--batch", "10000", "--output", out, NULL),
			 CLI_EXIT_OK);
}

/* Entries in @d. */
static int count_entries(const char *d)
{
	char cmd[400];
	FILE *p;
	int n = -1;

	snprintf(cmd, sizeof(cmd), "ls -A %s | wc -l", d);
	p = popen(cmd, "r");
	ck_assert_ptr_nonnull(p);
	ck_assert_int_eq(fscanf(p, "%d", &n), 1);
	pclose(p);
	return n;
}

/*
 * Run the registry command of the NULL-terminated arguments from @first in a
 * child killed by @sig once it has written 64 KB to a file (past SQLite's
 * 32 KB -shm), its temp file named from the start when @named: the output
 * @file, which held "old", still does, and @outdir holds what it held.
 */
static void killed_mid_write(const char *outdir, const char *file, int sig, int named,
			     const char *first, ...)
{
	char old[8] = "";
	int status, before;
	FILE *f;
	pid_t pid;

	f = fopen(file, "w");
	fputs("old", f);
	fclose(f);
	before = count_entries(outdir);
	pid = fork();
	ck_assert_int_ge(pid, 0);
	if (pid == 0) {
		va_list ap;
		sid__fsutil_no_tmpfile = named;
		kill_mid_write(65536, sig);
		va_start(ap, first);
		_exit(vrun(first, ap));
	}
	ck_assert_int_eq(waitpid(pid, &status, 0), pid);
	ck_assert_msg(WIFSIGNALED(status) && WTERMSIG(status) == sig,
		      "%s was not killed mid-write (status 0x%x)", file, status);
	ck_assert_int_eq(count_entries(outdir), before);
	f = fopen(file, "r");
	ck_assert_ptr_nonnull(f);
	ck_assert_ptr_nonnull(fgets(old, sizeof(old), f));
	fclose(f);
	ck_assert_str_eq(old, "old");
}

/*
 * An export killed in the middle of writing its file leaves the file's
 * directory as it was, the old export untouched: SIGKILL with the unnamed
 * temp file, and SIGTERM with the named one of a file system without
 * O_TMPFILE.  (The export directory is not the store's: SQLite leaves its
 * -wal and -shm files behind a killed reader, which is its business.)
 */
START_TEST(t_export_killed_mid_write)
{
	enum { M = 2000 }; /* about 400 KB of export, with embeddings */
	static float xm[M * 8];
	char edir[320], exp[340];
	int before, sig = _i == 0 ? SIGKILL : SIGTERM;

	assign_rows(M, 11, xm);
	snprintf(edir, sizeof(edir), "%s/exports", dir);
	ck_assert_int_eq(mkdir(edir, 0755), 0);
	snprintf(exp, sizeof(exp), "%s/e.jsonl", edir);
	killed_mid_write(edir, exp, sig, sig != SIGKILL, "registry", "export", "--db", db,
			 "--format", "jsonl", "--embeddings", "--output", exp, NULL);
	before = count_entries(edir);
	/* and unhindered, it writes the whole file */
	ck_assert_int_eq(run("registry", "export", "--db", db, "--format", "jsonl", "--embeddings",
			     "--output", exp, NULL),
			 CLI_EXIT_OK);
	ck_assert_int_eq(count_lines(exp), M);
	ck_assert_int_eq(count_entries(edir), before);
}
END_TEST

/*
 * `registry backup`: a copy that exports exactly as the store does and is a
 * store itself; refused to stdout, over the store or any of its side files
 * (existing or not), into a missing directory, and for PostgreSQL (core
 * check_registry); killed by SIGTERM mid-write it leaves its directory as it
 * was and the old backup untouched.
 */
START_TEST(t_backup)
{
	enum { M = 2000 }; /* a store of a few hundred KB */
	static float xm[M * 8];
	char bdir[320], bk[340], e1[340], e2[340], name[340], msg[2048];

	assign_rows(M, 5, xm);
	snprintf(bdir, sizeof(bdir), "%s/backups", dir);
	ck_assert_int_eq(mkdir(bdir, 0755), 0);
	snprintf(bk, sizeof(bk), "%s/bk.db", bdir);
	ck_assert_int_eq(chmod(db, 0600), 0); /* the copy is no more readable than the store */
	ck_assert_int_eq(
	    run_err(msg, sizeof(msg), "registry", "backup", "--db", db, "-o", bk, NULL),
	    CLI_EXIT_OK);
	ASSERT_HAS(msg, "backed up");
	{
		struct stat bst;
		ck_assert_int_eq(stat(bk, &bst), 0);
		ck_assert_int_eq(bst.st_mode & 0777, 0600);
	}
	ASSERT_HAS(msg, "checked");
	snprintf(e1, sizeof(e1), "%s/e1.jsonl", dir);
	snprintf(e2, sizeof(e2), "%s/e2.jsonl", dir);
	ck_assert_int_eq(run("registry", "export", "--db", db, "--format", "jsonl", "--embeddings",
			     "-o", e1, NULL),
			 CLI_EXIT_OK);
	ck_assert_int_eq(run("registry", "export", "--db", bk, "--format", "jsonl", "--embeddings",
			     "-o", e2, NULL),
			 CLI_EXIT_OK);
	ck_assert_int_eq(count_lines(e1), M);
	ck_assert_msg(same_bytes(e1, e2), "%s and %s differ", e1, e2);

	ck_assert_int_eq(run_err(msg, sizeof(msg), "registry", "backup", "--db", db, NULL),
			 CLI_EXIT_INPUT);
	ASSERT_HAS(msg, "semid registry backup: needs --output FILE");
	ck_assert_int_eq(run("registry", "backup", "--db", db, "-o", db, NULL), CLI_EXIT_INPUT);
	for (int i = 0; i < 3; i++) {
		static const char *side[] = {"-wal", "-shm", "-journal"};
		struct stat s0, s1;
		int had;
		snprintf(name, sizeof(name), "%s%s", db, side[i]);
		had = stat(name, &s0) == 0; /* a -wal and -shm a reader left, or none */
		ck_assert_int_eq(
		    run_err(msg, sizeof(msg), "registry", "backup", "--db", db, "-o", name, NULL),
		    CLI_EXIT_INPUT);
		ASSERT_HAS(msg, "is the store or one of its files");
		ck_assert_int_eq(stat(name, &s1) == 0, had);
		ck_assert(!had || s1.st_ino == s0.st_ino);
	}
	/* a directory: what encode and export say of one, and their status
	 * (it was "--output DIR is not a regular file; name a file", exit 2) */
	ck_assert_int_eq(
	    run_err(msg, sizeof(msg), "registry", "backup", "--db", db, "-o", bdir, NULL),
	    CLI_EXIT_IO);
	{
		char want[400];
		snprintf(want, sizeof(want),
			 "semid: %s: cannot create the output: it is a directory\n", bdir);
		ck_assert_str_eq(msg, want);
	}
	ck_assert_int_eq(run("registry", "backup", "--db", db, "-o", bk, "--max-rate", "0", NULL),
			 CLI_EXIT_INPUT);
	ck_assert_int_eq(run("registry", "backup", "--db", db, "-o", bk, "--max-rate", "x", NULL),
			 CLI_EXIT_INPUT);
	/* so slow that the wait before the first page overflowed a time_t (UB) */
	ck_assert_int_eq(run_err(msg, sizeof(msg), "registry", "backup", "--db", db, "-o", bk,
				 "--max-rate", "1e-300", NULL),
			 CLI_EXIT_INPUT);
	ASSERT_HAS(msg, "--max-rate must be MiB a second, 0.001 to 1000000, not 1e-300");
	/* capped (far above what this copy needs: no test of time) it copies the same */
	ck_assert_int_eq(
	    run("registry", "backup", "--db", db, "-o", bk, "--max-rate", "1000", NULL),
	    CLI_EXIT_OK);
	ck_assert_int_eq(run("registry", "export", "--db", bk, "--format", "jsonl", "--embeddings",
			     "-o", e2, NULL),
			 CLI_EXIT_OK);
	ck_assert_msg(same_bytes(e1, e2), "%s and %s differ", e1, e2);
	snprintf(name, sizeof(name), "%s/missing/bk.db", dir);
	ck_assert_int_eq(run("registry", "backup", "--db", db, "-o", name, NULL), CLI_EXIT_IO);

	/* the backup's temp file is named: a signal removes it */
	killed_mid_write(bdir, bk, SIGTERM, 1, "registry", "backup", "--db", db, "-o", bk, NULL);
}
END_TEST

/* A child that opens @db (as user and group @uid unless it is 0), commits
 * ids "late-0".."late-4" (with @commit), says so on a pipe and waits to be
 * killed: its pid, once it has said so. */
static pid_t open_and_wait(int commit, uid_t uid)
{
	int fd[2];
	char c;
	pid_t pid;

	ck_assert_int_eq(pipe(fd), 0);
	pid = fork();
	ck_assert_int_ge(pid, 0);
	if (pid == 0) {
		struct sid_registry *r;
		struct sid_reg_entry got[5];
		struct sid_error err;
		static int32_t codes[5][3];
		char idv[5][16];
		struct sid_reg_item in[5];
		close(fd[0]);
		if (uid && (setgid(uid) != 0 || setuid(uid) != 0))
			_exit(10);
		if (sid_registry_open(db, 0, &r, &err)) {
			dprintf(2, "open_and_wait: %s\n", err.msg);
			_exit(9);
		}
		for (int i = 0; i < 5; i++) {
			snprintf(idv[i], sizeof(idv[i]), "late-%d", i);
			in[i] = (struct sid_reg_item){idv[i], codes[i], NULL};
		}
		if (commit &&
		    sid_registry_assign(r, SID_TOWER_ITEM, in, 5, 3, 0, "late", 0, got, &err))
			_exit(8);
		if (write(fd[1], "k", 1) != 1)
			_exit(7);
		pause();
		_exit(0);
	}
	close(fd[1]);
	if (read(fd[0], &c, 1) != 1) {
		int status = 0;
		waitpid(pid, &status, 0);
		ck_abort_msg("the child that opens the store ended with status %d", status);
	}
	close(fd[0]);
	return pid;
}

static uint64_t items_in(const char *path)
{
	struct sid_registry *r;
	struct sid_reg_stats st;
	struct sid_error err;
	ck_assert_msg(sid_registry_open(path, SID_REG_READONLY, &r, &err) == 0, "%s", err.msg);
	ck_assert_int_eq(sid_registry_stats(r, SID_TOWER_ITEM, &st, &err), 0);
	sid_registry_close(r);
	return st.items;
}

/* Run @sql on the SQLite store @path, as a hand edit would. */
static void db_sql(const char *path, const char *sql)
{
	sqlite3 *h;

	ck_assert_int_eq(sqlite3_open(path, &h), SQLITE_OK);
	ck_assert_msg(sqlite3_exec(h, sql, NULL, NULL, NULL) == SQLITE_OK, "%s: %s", sql,
		      sqlite3_errmsg(h));
	sqlite3_close(h);
}

/* Run in a child with stdout on /dev/full and stderr into @msg: the exit
 * status. */
static int run_stdout_full(char *msg, size_t cap, const char *first, ...)
{
	int efd = stderr_file(), status;
	pid_t pid;
	va_list ap;

	fflush(stdout);
	fflush(stderr);
	pid = fork();
	ck_assert_int_ge(pid, 0);
	if (pid == 0) {
		int full = open("/dev/full", O_WRONLY);
		if (full < 0 || dup2(full, 1) < 0 || dup2(efd, 2) < 0)
			_exit(99);
		va_start(ap, first);
		status = vrun(first, ap);
		va_end(ap);
		fflush(stderr);
		_exit(status);
	}
	ck_assert_int_eq(waitpid(pid, &status, 0), pid);
	stderr_read(efd, msg, cap);
	ck_assert_msg(WIFEXITED(status), "ended by signal %d", WTERMSIG(status));
	return WEXITSTATUS(status);
}

/* A write to stdout that fails says "stdout", as every other command does,
 * not "-" (the --output given). */
START_TEST(t_stdout_write_failure_named)
{
	char msg[2048];

	ck_assert_int_eq(run("registry", "assign", "--model", model, "--input", npy, "--ids", ids,
			     "--output", out, NULL),
			 CLI_EXIT_OK);
	ck_assert_int_eq(run_stdout_full(msg, sizeof(msg), "registry", "assign", "--model", model,
					 "--input", npy, "--ids", ids, NULL),
			 CLI_EXIT_IO);
	ASSERT_HAS(msg, "semid: stdout: write failed: No space left on device");
	ck_assert_int_eq(
	    run_stdout_full(msg, sizeof(msg), "registry", "list", "--db", db, "-n", "200", NULL),
	    CLI_EXIT_IO);
	ASSERT_HAS(msg, "semid: stdout: write failed: No space left on device");
	ck_assert_int_eq(run_stdout_full(msg, sizeof(msg), "registry", "reassign", "--model",
					 model2, "--db", db, NULL),
			 CLI_EXIT_IO);
	ASSERT_HAS(msg, "semid: stdout:");
	ck_assert_msg(!strstr(msg, "semid: -:"), "%s", msg);
}
END_TEST

/*
 * No command's --output may be the store's -wal, -shm or -journal, by name
 * (they need not be there) or as the same file: an export written over the
 * -wal of a store a server has open lost the commits only that -wal held
 * once the server stopped uncleanly.  By any name: DIR/./STORE-journal,
 * through a link to the directory, a link to a -journal not there (a log
 * would create it), or the -wal of the file a --db link names (SQLite's):
 * the typed name was compared, and they were written over or made.
 */
START_TEST(t_output_not_a_store_file)
{
	static const char *const side[] = {"-wal", "-shm", "-journal"};
	static const char *const cmds[] = {"export", "stats",  "list",	   "get",
					   "diff",   "delete", "reassign", "backup"};
	char names[10][1024], dblink[340], alias[340], msg[2048];
	const char *base = strrchr(db, '/') + 1;
	struct stat s0, s1;
	pid_t pid;
	int status, n = 0;

	ck_assert_int_eq(run("registry", "assign", "--model", model, "--input", npy, "--ids", ids,
			     "--output", out, NULL),
			 CLI_EXIT_OK);
	pid = open_and_wait(1, 0); /* its 5 commits are in the -wal only */
	snprintf(names[0], sizeof(names[0]), "%s-wal", db);
	ck_assert_int_eq(stat(names[0], &s0), 0);
	for (int i = 0; i < 3; i++)
		snprintf(names[n++], sizeof(names[0]), "%s%s", db, side[i]);
	snprintf(names[n], sizeof(names[0]), "%s/wal-link", dir);
	ck_assert_int_eq(symlink(names[0], names[n++]), 0);
	snprintf(names[n++], sizeof(names[0]), "%s/./%s-journal", dir, base);
	snprintf(names[n++], sizeof(names[0]), "%s//%s-shm", dir, base);
	snprintf(alias, sizeof(alias), "%s/alias", dir);
	ck_assert_int_eq(symlink(dir, alias), 0);
	snprintf(names[n++], sizeof(names[0]), "%s/%s-wal", alias, base);
	snprintf(names[n++], sizeof(names[0]), "%s/../%s/%s-journal", alias, strrchr(dir, '/') + 1,
		 base);
	snprintf(names[n], sizeof(names[0]), "%s/journal-link", dir);
	snprintf(msg, sizeof(msg), "%s-journal", base); /* relative, and not there */
	ck_assert_int_eq(symlink(msg, names[n++]), 0);
	snprintf(dblink, sizeof(dblink), "%s/db-link.db", dir);
	ck_assert_int_eq(symlink(base, dblink), 0);
	for (int i = 0; i <= n; i++) {
		/* the last: the store by its link, the -wal of the file it names */
		const char *o = i < n ? names[i] : names[0], *store = i < n ? db : dblink;
		for (size_t c = 0; c < sizeof(cmds) / sizeof(cmds[0]); c++) {
			int rc = !strcmp(cmds[c], "get")
				     ? run_err(msg, sizeof(msg), "registry", "get", "item-1",
					       "--db", store, "-o", o, NULL)
				 : !strcmp(cmds[c], "delete")
				     ? run_err(msg, sizeof(msg), "registry", "delete", "item-1",
					       "--db", store, "-o", o, NULL)
				 : !strcmp(cmds[c], "diff") || !strcmp(cmds[c], "reassign")
				     ? run_err(msg, sizeof(msg), "registry", cmds[c], "--model",
					       model2, "--db", store, "-o", o, NULL)
				     : run_err(msg, sizeof(msg), "registry", cmds[c], "--db", store,
					       "-o", o, NULL);
			ck_assert_msg(rc == CLI_EXIT_INPUT, "%s --db %s -o %s: %d (%s)", cmds[c],
				      store, o, rc, msg);
			ck_assert_msg(strstr(msg, "is the store or one of its files") ||
					  strstr(msg, "is the input file"),
				      "%s", msg);
		}
	}
	snprintf(names[0], sizeof(names[0]), "%s-journal", db);
	ck_assert_int_ne(access(names[0], F_OK), 0);
	snprintf(names[0], sizeof(names[0]), "%s-wal", db);
	ck_assert_int_eq(stat(names[0], &s1), 0);
	ck_assert_int_eq(s1.st_ino, s0.st_ino);
	ck_assert_int_eq(items_in(dblink), N + 5); /* SQLite's -wal is the file's */
	kill(pid, SIGKILL);
	waitpid(pid, &status, 0);
	ck_assert_int_eq(items_in(db), N + 5);
}
END_TEST

/* -o '' is "--output is empty" (exit 2) for every command, as for stats:
 * delete's and reassign's logs said ": cannot open the output: No such file
 * or directory" (exit 1), backup "--output must name a file, not nothing";
 * nothing is deleted. */
START_TEST(t_output_empty)
{
	char want[256], msg[2048];

	ck_assert_int_eq(run("registry", "assign", "--model", model, "--input", npy, "--ids", ids,
			     "--output", out, NULL),
			 CLI_EXIT_OK);
	ck_assert_int_eq(
	    run_err(want, sizeof(want), "registry", "stats", "--db", db, "-o", "", NULL),
	    CLI_EXIT_INPUT);
	ck_assert_str_eq(want, "semid: --output is empty\n");
	ck_assert_int_eq(
	    run_err(msg, sizeof(msg), "registry", "delete", "item-1", "--db", db, "-o", "", NULL),
	    CLI_EXIT_INPUT);
	ck_assert_str_eq(msg, want);
	ck_assert_int_eq(run_err(msg, sizeof(msg), "registry", "delete", "--rows", "1", "--db", db,
				 "-o", "", NULL),
			 CLI_EXIT_INPUT);
	ck_assert_str_eq(msg, want);
	ck_assert_int_eq(run_err(msg, sizeof(msg), "registry", "reassign", "--model", model2,
				 "--db", db, "-o", "", NULL),
			 CLI_EXIT_INPUT);
	ck_assert_str_eq(msg, want);
	ck_assert_int_eq(
	    run_err(msg, sizeof(msg), "registry", "backup", "--db", db, "-o", "", NULL),
	    CLI_EXIT_INPUT);
	ck_assert_str_eq(msg, want);
	ck_assert_int_eq(items_in(db), N);
}
END_TEST

/*
 * `registry backup -o LINK`: a symbolic link is followed, as for every other
 * output, and the file it names replaced (the link stays); the check for a
 * -wal with commits is made beside that file, which SQLite would apply to
 * it; a link into /dev is not a file to back up into.
 */
START_TEST(t_backup_through_link)
{
	enum { M = 50 };
	static float xm[M * 8];
	char target[340], link[340], wal[350], msg[2048];
	struct stat st;
	FILE *f;

	assign_rows(M, 5, xm);
	snprintf(target, sizeof(target), "%s/target.db", dir);
	snprintf(link, sizeof(link), "%s/latest.db", dir);
	f = fopen(target, "w");
	ck_assert_ptr_nonnull(f);
	fputs("old", f);
	fclose(f);
	ck_assert_int_eq(symlink("target.db", link), 0);
	ck_assert_int_eq(
	    run_err(msg, sizeof(msg), "registry", "backup", "--db", db, "-o", link, NULL),
	    CLI_EXIT_OK);
	ck_assert_int_eq(lstat(link, &st), 0);
	ck_assert_msg(S_ISLNK(st.st_mode), "the link was replaced by a file");
	ck_assert_int_eq(items_in(target), items_in(db));

	/* a -wal beside the file the link names holds commits: refused */
	snprintf(wal, sizeof(wal), "%s-wal", target);
	f = fopen(wal, "w");
	ck_assert_ptr_nonnull(f);
	fputs("frames", f);
	fclose(f);
	ck_assert_int_eq(
	    run_err(msg, sizeof(msg), "registry", "backup", "--db", db, "-o", link, NULL),
	    CLI_EXIT_INPUT);
	ASSERT_HAS(msg, "holds commits");
	ck_assert_int_eq(unlink(wal), 0);

	ck_assert_int_eq(unlink(link), 0);
	ck_assert_int_eq(symlink("/dev/null", link), 0);
	ck_assert_int_eq(
	    run_err(msg, sizeof(msg), "registry", "backup", "--db", db, "-o", link, NULL),
	    CLI_EXIT_INPUT);
	ASSERT_HAS(msg, "not a regular file");
	ck_assert_int_eq(stat("/dev/null", &st), 0);
	ck_assert(S_ISCHR(st.st_mode));
	ck_assert_int_eq(lstat(link, &st), 0);
	ck_assert(S_ISLNK(st.st_mode));
}
END_TEST

/* How many names in directory @d hold @part. */
static int files_holding(const char *d, const char *part)
{
	DIR *dp = opendir(d);
	struct dirent *e;
	int n = 0;

	ck_assert_ptr_nonnull(dp);
	while ((e = readdir(dp)))
		n += strstr(e->d_name, part) != NULL;
	closedir(dp);
	return n;
}

/*
 * `registry backup` and `restore` into a new name honour the umask: a
 * backup run under umask 077 (into a shared directory, a mounted backup
 * volume) of a 0644 store was 0644, a copy of every ID and embedding for
 * every user to read, while an export under the same umask was 0600.  The
 * store's (or the backup's) mode still bounds it: no more readable than
 * that.
 */
START_TEST(t_backup_umask)
{
	char bk[320], name[320];
	struct stat st;
	mode_t saved;

	ck_assert_int_eq(run("registry", "assign", "--model", model, "--input", npy, "--ids", ids,
			     "--output", out, NULL),
			 CLI_EXIT_OK);
	ck_assert_int_eq(chmod(db, 0644), 0);
	snprintf(bk, sizeof(bk), "%s/bk.db", dir);
	snprintf(name, sizeof(name), "%s/new.db", dir);
	saved = umask(077);
	ck_assert_int_eq(run("registry", "backup", "--db", db, "-o", bk, NULL), CLI_EXIT_OK);
	ck_assert_int_eq(stat(bk, &st), 0);
	ck_assert_int_eq(st.st_mode & 0777, 0600);
	ck_assert_int_eq(chmod(bk, 0644), 0);
	ck_assert_int_eq(run("registry", "restore", bk, "--db", name, NULL), CLI_EXIT_OK);
	ck_assert_int_eq(stat(name, &st), 0);
	ck_assert_int_eq(st.st_mode & 0777, 0600);
	/* a looser umask gives no more than the store's mode */
	umask(022);
	ck_assert_int_eq(chmod(db, 0640), 0);
	ck_assert_int_eq(run("registry", "backup", "--db", db, "-o", bk, NULL), CLI_EXIT_OK);
	ck_assert_int_eq(stat(bk, &st), 0);
	ck_assert_int_eq(st.st_mode & 0777, 0640);
	umask(saved);
}
END_TEST

/*
 * `registry restore`: refused while another process has the store open and
 * for a file that is not a store, the store untouched, and for a model named
 * as the store, the model untouched; then the backup takes
 * the store's place, and the store it replaced, with commits that were only
 * in the -wal of a process killed with SIGKILL, is kept whole as
 * STORE.pre-restore.<time>, and the copy takes the old file's mode and
 * owner; into a new name it just publishes.  A backup
 * over a file whose -wal holds commits is refused.
 */
START_TEST(t_restore)
{
	char bk[320], wal[320], msg[2048], aside[400], *p;
	struct stat st;
	pid_t pid;
	ino_t ino;
	FILE *f;
	int status;

	ck_assert_int_eq(run("registry", "assign", "--model", model, "--input", npy, "--ids", ids,
			     "--output", out, NULL),
			 CLI_EXIT_OK);
	snprintf(bk, sizeof(bk), "%s/bk.db", dir);
	ck_assert_int_eq(run("registry", "backup", "--db", db, "-o", bk, NULL), CLI_EXIT_OK);
	pid = open_and_wait(1, 0);
	kill(pid, SIGKILL);
	ck_assert_int_eq(waitpid(pid, &status, 0), pid);
	snprintf(wal, sizeof(wal), "%s-wal", db);
	ck_assert_msg(stat(wal, &st) == 0 && st.st_size > 0, "the killed writer left no WAL");

	ck_assert_int_eq(run_err(msg, sizeof(msg), "registry", "restore", model, "--db", db, NULL),
			 CLI_EXIT_INPUT);
	ASSERT_HAS(msg, "not a SQLite database");
	/* the model named as the store (--db MODEL for --model MODEL): it
	 * stays where it is, not moved aside for the store */
	ck_assert_int_eq(stat(model, &st), 0);
	ino = st.st_ino;
	ck_assert_int_eq(run_err(msg, sizeof(msg), "registry", "restore", bk, "--db", model, NULL),
			 CLI_EXIT_INPUT);
	ASSERT_HAS(msg, "is a model file, not a store");
	ck_assert_int_eq(stat(model, &st), 0);
	ck_assert_msg(st.st_ino == ino, "the model was replaced");
	ck_assert_int_eq(files_holding(dir, ".pre-restore."), 0);
	/* a directory as the backup or as the store is said to be one, as
	 * --db DIR is for the other commands: the backup was SQLite's "open:
	 * disk I/O error" (exit 1), the store "--output DIR is not a regular
	 * file", an option restore has not */
	{
		char want[400];
		snprintf(want, sizeof(want), "semid: registry %s: a directory, not a registry file",
			 dir);
		ck_assert_int_eq(
		    run_err(msg, sizeof(msg), "registry", "restore", dir, "--db", db, NULL),
		    CLI_EXIT_INPUT);
		ASSERT_HAS(msg, want);
		ck_assert_int_eq(
		    run_err(msg, sizeof(msg), "registry", "restore", bk, "--db", dir, NULL),
		    CLI_EXIT_INPUT);
		ASSERT_HAS(msg, want);
		ck_assert_int_eq(files_holding(dir, ".pre-restore."), 0);
	}
	/* the store named as its own backup (by another name too), or no
	 * store: said so, in restore's words, not of an --output it has not */
	{
		char self[400];
		snprintf(self, sizeof(self), "%s/./%s", dir, strrchr(db, '/') + 1);
		for (int i = 0; i < 2; i++) {
			ck_assert_int_eq(run_err(msg, sizeof(msg), "registry", "restore",
						 i ? self : db, "--db", db, NULL),
					 CLI_EXIT_INPUT);
			ASSERT_HAS(msg, "is the store");
			ck_assert_msg(!strstr(msg, "--output"), "%s", msg);
		}
		ck_assert_int_eq(
		    run_err(msg, sizeof(msg), "registry", "restore", bk, "--db", "", NULL),
		    CLI_EXIT_INPUT);
		ASSERT_HAS(msg, "no store given");
		ck_assert_msg(!strstr(msg, "--output"), "%s", msg);
		ck_assert_int_eq(files_holding(dir, ".pre-restore."), 0);
	}
	pid = open_and_wait(0, 0);
	ck_assert_int_eq(run_err(msg, sizeof(msg), "registry", "restore", bk, "--db", db, NULL),
			 CLI_EXIT_IO);
	ASSERT_HAS(msg, "the store is open in process");
	ASSERT_HAS(msg, "stop it before restoring");
	/* nor may a backup be written over it: the process would go on with
	 * the old file unlinked (exit 0, every ID lost once it stopped) */
	ck_assert_int_eq(
	    run_err(msg, sizeof(msg), "registry", "backup", "--db", bk, "-o", db, NULL),
	    CLI_EXIT_IO);
	ASSERT_HAS(msg, "the store is open in process");
	ASSERT_HAS(msg, "a backup must not replace a store in use: name another file");
	kill(pid, SIGKILL);
	ck_assert_int_eq(waitpid(pid, &status, 0), pid);
	ck_assert_int_eq(items_in(db), N + 5);

	/* the restored file gets the old one's mode and (as root) owner */
	ck_assert_int_eq(chmod(db, 0640), 0);
	if (geteuid() == 0)
		ck_assert_int_eq(chown(db, 65534, 65534), 0);
	ck_assert_int_eq(run_err(msg, sizeof(msg), "registry", "restore", bk, "--db", db, NULL),
			 CLI_EXIT_OK);
	ck_assert_int_eq(stat(db, &st), 0);
	ck_assert_int_eq(st.st_mode & 07777, 0640);
	if (geteuid() == 0)
		ck_assert_int_eq(st.st_uid, 65534);
	ASSERT_HAS(msg, "the store it replaced is ");
	p = strstr(msg, "the store it replaced is ") + strlen("the store it replaced is ");
	snprintf(aside, sizeof(aside), "%.*s", (int)strcspn(p, " \n"), p);
	ck_assert_ptr_nonnull(strstr(aside, ".pre-restore."));
	ck_assert_int_eq(items_in(db), N);
	ck_assert_int_eq(items_in(aside), N + 5);
	ck_assert_msg(stat(wal, &st) != 0 || st.st_size == 0,
		      "a WAL with frames beside the restore");

	snprintf(msg, sizeof(msg), "%s/new.db", dir);
	ck_assert_int_eq(run("registry", "restore", bk, "--db", msg, NULL), CLI_EXIT_OK);
	ck_assert_int_eq(items_in(msg), N);

	/* a file whose -wal has frames is not written over by a backup */
	snprintf(wal, sizeof(wal), "%s/bk.db-wal", dir);
	f = fopen(wal, "w");
	fputs("frames", f);
	fclose(f);
	ck_assert_int_eq(
	    run_err(msg, sizeof(msg), "registry", "backup", "--db", db, "-o", bk, NULL),
	    CLI_EXIT_INPUT);
	ASSERT_HAS(msg, "holds commits of the file it would replace");
}
END_TEST

/*
 * backup and restore on a PostgreSQL store: refused before any connection
 * (here to a port nothing listens on, which would otherwise be the only
 * message), pointing at PostgreSQL's tools; nothing is written.
 */
START_TEST(t_backup_restore_pg)
{
	static const char pg[] = "postgresql://nobody@127.0.0.1:1/none";
	char bk[320], msg[2048];

	snprintf(bk, sizeof(bk), "%s/pg-bk.db", dir);
	ck_assert_int_eq(
	    run_err(msg, sizeof(msg), "registry", "backup", "--db", pg, "-o", bk, NULL),
	    CLI_EXIT_INPUT);
	ASSERT_HAS(msg, "pg_dump");
	ck_assert_ptr_null(strstr(msg, "connect"));
	ck_assert_int_ne(access(bk, F_OK), 0);
	ck_assert_int_eq(run_err(msg, sizeof(msg), "registry", "restore", bk, "--db", pg, NULL),
			 CLI_EXIT_INPUT);
	ASSERT_HAS(msg, "pg_restore");
}
END_TEST

/* cli_registry_main started in a child (as user and group @uid unless it
 * is 0), its stderr going to the file *@fd: its pid. */
static pid_t vspawn_cli(uid_t uid, int *fd, const char *first, va_list ap)
{
	pid_t pid;

	*fd = stderr_file();
	fflush(NULL);
	pid = fork();
	ck_assert_int_ge(pid, 0);
	if (pid == 0) {
		dup2(*fd, 2);
		if (uid && (setgid(uid) != 0 || setuid(uid) != 0))
			_exit(99);
		_exit(vrun(first, ap));
	}
	return pid;
}

static pid_t spawn_cli(uid_t uid, int *fd, const char *first, ...)
{
	pid_t pid;
	va_list ap;

	va_start(ap, first);
	pid = vspawn_cli(uid, fd, first, ap);
	va_end(ap);
	return pid;
}

/* The exit status of a spawned child @pid, its stderr (file @fd) in @buf. */
static int wait_cli(pid_t pid, int fd, char *buf, size_t cap)
{
	int status;

	ck_assert_int_eq(waitpid(pid, &status, 0), pid);
	stderr_read(fd, buf, cap);
	ck_assert_msg(WIFEXITED(status), "the child ended with status %d", status);
	return WEXITSTATUS(status);
}

/* cli_registry_main in a child running as user and group @uid, its stderr
 * in @buf: the child's exit status. */
static int run_as(uid_t uid, char *buf, size_t cap, const char *first, ...)
{
	int fd;
	pid_t pid;
	va_list ap;

	va_start(ap, first);
	pid = vspawn_cli(uid, &fd, first, ap);
	va_end(ap);
	return wait_cli(pid, fd, buf, cap);
}

/*
 * `registry restore` by one user while another user's process has the store
 * open: /proc/PID/fd of that process cannot be read, and the SQLite lock it
 * holds on the store is what refuses the restore.  Needs root, to be the
 * two users (nobody, 65534, and 65533); without it the test is skipped.
 */
START_TEST(t_restore_other_user)
{
	char bk[320], msg[2048], want[64];
	pid_t pid;
	int status;

	if (geteuid() != 0)
		CHECK_SKIP("not root: it runs processes as two other users");
	ck_assert_int_eq(run("registry", "assign", "--model", model, "--input", npy, "--ids", ids,
			     "--output", out, NULL),
			 CLI_EXIT_OK);
	snprintf(bk, sizeof(bk), "%s/bk.db", dir);
	ck_assert_int_eq(run("registry", "backup", "--db", db, "-o", bk, NULL), CLI_EXIT_OK);
	ck_assert_int_eq(chmod(dir, 0777), 0);
	ck_assert_int_eq(chmod(db, 0666), 0);
	for (int i = 0; i < 2; i++) { /* side files a root process left, if any */
		snprintf(msg, sizeof(msg), "%s%s", db, i ? "-shm" : "-wal");
		ck_assert(chmod(msg, 0666) == 0 || errno == ENOENT);
	}
	pid = open_and_wait(0, 65533);
	snprintf(want, sizeof(want), "the store is open in process %d (", (int)pid);
	ck_assert_int_eq(
	    run_as(65534, msg, sizeof(msg), "registry", "restore", bk, "--db", db, NULL),
	    CLI_EXIT_IO);
	ASSERT_HAS(msg, want);
	ASSERT_HAS(msg, "holds its SQLite lock");
	kill(pid, SIGKILL);
	ck_assert_int_eq(waitpid(pid, &status, 0), pid);
	/* once it is gone the same user may restore */
	ck_assert_int_eq(
	    run_as(65534, msg, sizeof(msg), "registry", "restore", bk, "--db", db, NULL),
	    CLI_EXIT_OK);
	ck_assert_int_eq(items_in(db), N);
}
END_TEST

/* @path's bytes copied to @to. */
static void copy_file(const char *path, const char *to)
{
	FILE *a = fopen(path, "rb"), *b = fopen(to, "wb");
	char buf[65536];
	size_t n;

	ck_assert_msg(a && b, "%s or %s", path, to);
	while ((n = fread(buf, 1, sizeof(buf), a)) > 0)
		ck_assert_uint_eq(fwrite(buf, 1, n, b), n);
	fclose(a);
	ck_assert_int_eq(fclose(b), 0);
}

/* The name after "the store it replaced is " in @msg, into @aside. */
static void replaced_name(const char *msg, char *aside, size_t len)
{
	const char *p = strstr(msg, "the store it replaced is ");
	ck_assert_msg(p != NULL, "no replaced store in '%s'", msg);
	p += strlen("the store it replaced is ");
	snprintf(aside, len, "%.*s", (int)strcspn(p, " ,\n"), p);
}

/* A store of N items backed up to @bk, then made unreadable with commits
 * only in its -wal: its bytes copied to @bdb, its -wal's to @bwal. */
static void unreadable_with_wal(char *bk, char *bdb, char *bwal, size_t len)
{
	char wal[320];
	pid_t pid;
	int status;
	FILE *f;

	ck_assert_int_eq(run("registry", "assign", "--model", model, "--input", npy, "--ids", ids,
			     "--output", out, NULL),
			 CLI_EXIT_OK);
	snprintf(bk, len, "%s/bk.db", dir);
	ck_assert_int_eq(run("registry", "backup", "--db", db, "-o", bk, NULL), CLI_EXIT_OK);
	snprintf(wal, sizeof(wal), "%s-wal", db);
	pid = open_and_wait(1, 0);
	kill(pid, SIGKILL);
	ck_assert_int_eq(waitpid(pid, &status, 0), pid);
	f = fopen(db, "r+b");
	ck_assert_ptr_nonnull(f);
	fputs("not a database!!", f); /* over the 16-byte header string */
	ck_assert_int_eq(fclose(f), 0);
	snprintf(bdb, len, "%s/before.db", dir);
	snprintf(bwal, len, "%s/before.db-wal", dir);
	copy_file(db, bdb);
	copy_file(wal, bwal);
}

/*
 * restore and the files around a store: an unreadable store keeps its bytes
 * and its -wal (nothing folded into it, nothing lost); the name kept for the
 * old store does not collide with one already there; with no store, a -wal
 * with commits left beside its name is refused (SQLite would apply it to the
 * copy), as is a store that is a symbolic link; a new store gets the
 * backup's mode; and a backup over a file with a -journal is refused.
 */
START_TEST(t_restore_side_files)
{
	char bk[320], wal[320], bdb[320], bwal[320], aside[400], name[420], msg[2048];
	char stamp[32];
	struct stat st;
	time_t now;
	pid_t pid;
	int status;
	FILE *f;

	/* unreadable, with commits only in its -wal */
	unreadable_with_wal(bk, bdb, bwal, sizeof(bk));
	snprintf(wal, sizeof(wal), "%s-wal", db);
	ck_assert_int_eq(run_err(msg, sizeof(msg), "registry", "restore", bk, "--db", db, NULL),
			 CLI_EXIT_OK);
	ASSERT_HAS(msg, "its -wal not folded in");
	replaced_name(msg, aside, sizeof(aside));
	ck_assert_msg(same_bytes(aside, bdb), "the unreadable store changed");
	snprintf(name, sizeof(name), "%s-wal", aside);
	ck_assert_msg(same_bytes(name, bwal), "its -wal was not kept as it was");
	ck_assert_msg(stat(wal, &st) != 0 || st.st_size == 0, "a -wal beside the restored store");
	ck_assert_int_eq(items_in(db), N);

	/* the kept names of this second and the next two are taken */
	now = time(NULL);
	for (int i = 0; i < 3; i++) {
		time_t t = now + i;
		strftime(stamp, sizeof(stamp), "%Y%m%dT%H%M%SZ", gmtime(&t));
		snprintf(name, sizeof(name), "%s.pre-restore.%s", db, stamp);
		f = fopen(name, "a");
		ck_assert_ptr_nonnull(f);
		fclose(f);
	}
	ck_assert_int_eq(run_err(msg, sizeof(msg), "registry", "restore", bk, "--db", db, NULL),
			 CLI_EXIT_OK);
	replaced_name(msg, aside, sizeof(aside));
	ck_assert_msg(strlen(aside) > 2 && !strcmp(aside + strlen(aside) - 2, ".2"), "kept as %s",
		      aside);
	ck_assert_int_eq(items_in(aside), N);

	/* no store, but its -wal with commits */
	pid = open_and_wait(1, 0);
	kill(pid, SIGKILL);
	ck_assert_int_eq(waitpid(pid, &status, 0), pid);
	ck_assert_int_eq(unlink(db), 0);
	ck_assert_int_eq(run_err(msg, sizeof(msg), "registry", "restore", bk, "--db", db, NULL),
			 CLI_EXIT_INPUT);
	ASSERT_HAS(msg, "there is no store, but");
	ASSERT_HAS(msg, wal);
	ck_assert_int_ne(stat(db, &st), 0);
	ck_assert_int_eq(unlink(wal), 0);

	/* a symbolic link */
	ck_assert_int_eq(run("registry", "restore", bk, "--db", db, NULL), CLI_EXIT_OK);
	snprintf(name, sizeof(name), "%s/link.db", dir);
	ck_assert_int_eq(symlink(db, name), 0);
	ck_assert_int_eq(run_err(msg, sizeof(msg), "registry", "restore", bk, "--db", name, NULL),
			 CLI_EXIT_INPUT);
	ASSERT_HAS(msg, "is a symbolic link");
	ck_assert_int_eq(lstat(name, &st), 0);
	ck_assert(S_ISLNK(st.st_mode));

	/* into a new name: the backup's mode */
	ck_assert_int_eq(chmod(bk, 0600), 0);
	snprintf(name, sizeof(name), "%s/new.db", dir);
	ck_assert_int_eq(run("registry", "restore", bk, "--db", name, NULL), CLI_EXIT_OK);
	ck_assert_int_eq(stat(name, &st), 0);
	ck_assert_int_eq(st.st_mode & 0777, 0600);

	/* a backup over a file with a -journal */
	snprintf(name, sizeof(name), "%s/new.db-journal", dir);
	f = fopen(name, "w");
	fputs("a journal", f);
	fclose(f);
	snprintf(name, sizeof(name), "%s/new.db", dir);
	ck_assert_int_eq(
	    run_err(msg, sizeof(msg), "registry", "backup", "--db", db, "-o", name, NULL),
	    CLI_EXIT_INPUT);
	ASSERT_HAS(msg, "new.db-journal beside it holds commits");
}
END_TEST

static void raise_sigterm(void)
{
	raise(SIGTERM);
}

static void restore_window_raise(void)
{
	cli__restore_window = raise_sigterm;
}

static void assign_closing_raise(void)
{
	cli__assign_closing = raise_sigterm;
}

static void raise_sigterm_twice(void)
{
	raise(SIGTERM);
	raise(SIGTERM);
}

static void assign_closing_raise_twice(void)
{
	cli__assign_closing = raise_sigterm_twice;
}

/*
 * A restore stopped by SIGTERM once the side files of a store it could not
 * fold the -wal of have moved beside its second name, before the copy took
 * the store's name (cli__restore_window): the signal waits for the rename,
 * and the messages say the restore is complete; the store is the backup's,
 * and the old one is whole beside it.  It ended with the store's name on
 * the old file without its -wal, said to be "nothing written".
 */
START_TEST(t_restore_stopped_in_the_renames)
{
	char bk[320], bdb[320], bwal[320], aside[400], name[420], msg[2048];
	int status;

	unreadable_with_wal(bk, bdb, bwal, sizeof(bk));

	/* as a process starts (the assign above left its handlers) */
	status = run_forked(msg, sizeof(msg), restore_window_raise, "registry", "restore", bk,
			    "--db", db, NULL);
	ck_assert_msg(WIFSIGNALED(status) && WTERMSIG(status) == SIGTERM, "status %d, stderr '%s'",
		      status, msg);
	ASSERT_HAS(msg, "semid: restored ");
	ASSERT_HAS(msg, "SIGTERM came while the store was being replaced and waited for it: the "
			"restore is complete");
	ck_assert_msg(!strstr(msg, "nothing written"), "'%s'", msg);
	ck_assert_int_eq(items_in(db), N);
	replaced_name(msg, aside, sizeof(aside));
	ck_assert_msg(same_bytes(aside, bdb), "the old store changed");
	snprintf(name, sizeof(name), "%s-wal", aside);
	ck_assert_msg(same_bytes(name, bwal), "its -wal was not kept beside it");
}
END_TEST

/*
 * An assign -o FILE with a SIGTERM as the store closes, FILE written
 * (cli__assign_closing): it ends by the signal without saying FILE was not
 * written.  The output's handler was put back after the output closed, and
 * said "nothing written to FILE" of a complete FILE.
 */
START_TEST(t_assign_stopped_as_the_store_closes)
{
	char msg[2048];
	int status;

	status = run_forked(msg, sizeof(msg), assign_closing_raise, "registry", "assign", "--model",
			    model, "--input", npy, "--ids", ids, "--output", out, NULL);
	ck_assert_msg(WIFSIGNALED(status) && WTERMSIG(status) == SIGTERM, "status %d, stderr '%s'",
		      status, msg);
	ASSERT_HAS(msg, "created");
	ck_assert_msg(!strstr(msg, "nothing written"), "'%s'", msg);
	ck_assert_int_eq(items_in(db), N);
	ck_assert_int_eq(count_lines(out), N);
}
END_TEST

/*
 * The same with two SIGTERMs: the second ends it at once, saying FILE holds
 * the lines of the rows committed.  It said FILE "was not written (it gets
 * its name only when complete)" of a complete FILE, as of one a stop left
 * unwritten.
 */
START_TEST(t_assign_stopped_twice_as_the_store_closes)
{
	char msg[2048], want[600];
	int status;

	status = run_forked(msg, sizeof(msg), assign_closing_raise_twice, "registry", "assign",
			    "--model", model, "--input", npy, "--ids", ids, "--output", out, NULL);
	ck_assert_msg(WIFSIGNALED(status) && WTERMSIG(status) == SIGTERM, "status %d, stderr '%s'",
		      status, msg);
	ASSERT_HAS(msg, "created");
	snprintf(want, sizeof(want),
		 "semid: stopped at once by a second signal; what was committed stays "
		 "committed, and the lines of its rows are in %s\n",
		 out);
	ASSERT_HAS(msg, want);
	ck_assert_msg(!strstr(msg, "not written"), "'%s'", msg);
	ck_assert_int_eq(items_in(db), N);
	ck_assert_int_eq(count_lines(out), N);
}
END_TEST

static int delete_rows_at = -1;

static void raise_sigterm_at(int at)
{
	if (at == delete_rows_at)
		raise(SIGTERM);
}

static void delete_rows_window_raise(void)
{
	cli__delete_rows_window = raise_sigterm_at;
}

/*
 * delete --rows stopped by SIGTERM before its one transaction, and during
 * it (cli__delete_rows_window): it says it deleted nothing, or all, and
 * ends by the signal; it died without a word either way.  (Rows 1 and 2
 * have their ids damaged: what delete --rows erases.)
 */
START_TEST(t_delete_rows_stopped)
{
	char msg[2048];
	int status;

	ck_assert_int_eq(run("registry", "assign", "--model", model, "--input", npy, "--ids", ids,
			     "--output", out, NULL),
			 CLI_EXIT_OK);
	db_sql(db, "UPDATE semid_assignment SET id = x'ff' || rid WHERE rid IN (1, 2)");
	for (int at = 0; at < 2; at++) {
		delete_rows_at = at;
		status = run_forked(msg, sizeof(msg), delete_rows_window_raise, "registry",
				    "delete", "--rows", "--db", db, "-o", out, "1", "2", NULL);
		ck_assert_msg(WIFSIGNALED(status) && WTERMSIG(status) == SIGTERM,
			      "status %d, stderr '%s'", status, msg);
		if (at == 0) {
			ck_assert_str_eq(
			    msg, "semid: stopped by SIGTERM before any batch: nothing committed\n");
			ck_assert_int_eq(items_in(db), N);
		} else {
			ASSERT_HAS(msg, "semid: stopped by SIGTERM as the rows' one transaction "
					"ran: it was committed whole");
			ASSERT_HAS(msg, "semid: deleted 2 of 2 rows from ");
			ck_assert_int_eq(items_in(db), N - 2);
		}
	}
}
END_TEST

/*
 * A process that opens the store while restore copies the backup: restore
 * looks again before it touches the store, and refuses.  The copy is slowed
 * (--max-rate) and the process opens the store once the progress bar shows
 * the copy started, after the first look.
 */
START_TEST(t_restore_opened_meanwhile)
{
	char bk[320], msg[2048], bar[256];
	pid_t pid, cli;
	int status, fd;

	ck_assert_int_eq(run("registry", "assign", "--model", model, "--input", npy, "--ids", ids,
			     "--output", out, NULL),
			 CLI_EXIT_OK);
	snprintf(bk, sizeof(bk), "%s/bk.db", dir);
	ck_assert_int_eq(run("registry", "backup", "--db", db, "-o", bk, NULL), CLI_EXIT_OK);
	cli = spawn_cli(0, &fd, "registry", "restore", bk, "--db", db, "--max-rate", "0.02",
			"--progress", NULL);
	for (int i = 0; i < 2000 && pread(fd, bar, sizeof(bar), 0) <= 0; i++)
		usleep(5000);
	pid = open_and_wait(0, 0);
	ck_assert_int_eq(wait_cli(cli, fd, msg, sizeof(msg)), CLI_EXIT_IO);
	ASSERT_HAS(msg, "the store is open in process");
	kill(pid, SIGKILL);
	ck_assert_int_eq(waitpid(pid, &status, 0), pid);
	ck_assert_int_eq(items_in(db), N);
}
END_TEST

/*
 * `registry reassign --model NEW`: one line per id whose codes NEW changes,
 * with its sid before (as assign gave it) and after (NEW's codes); every
 * other id keeps its sid; run again it moves nothing.
 */
START_TEST(t_reassign)
{
	static int32_t c1[N * 3], c2[N * 3];
	static char old_sid[N][64];
	char line[512], moves[320], msg[1024];
	long changed = 0, lines = 0;
	FILE *f;

	encode_all(model, c1);
	encode_all(model2, c2);
	for (int i = 0; i < N; i++)
		changed += memcmp(c1 + 3 * i, c2 + 3 * i, sizeof(int32_t) * 3) != 0;
	ck_assert_int_gt(changed, 0);
	ck_assert_int_eq(run("registry", "assign", "--model", model, "--input", npy, "--ids", ids,
			     "--output", out, NULL),
			 CLI_EXIT_OK);
	f = fopen(out, "r");
	for (int i = 0; i < N && fgets(line, sizeof(line), f); i++)
		ck_assert_int_eq(sscanf(line, "%*s %63s", old_sid[i]), 1);
	fclose(f);

	/* the log is appended to, but never the store or the model */
	ck_assert_int_eq(run_err(msg, sizeof(msg), "registry", "reassign", "--model", model2,
				 "--db", db, "-o", db, NULL),
			 CLI_EXIT_INPUT);
	ASSERT_HAS(msg, "is the input file");
	ck_assert_int_eq(
	    run("registry", "reassign", "--model", model2, "--db", db, "-o", model2, NULL),
	    CLI_EXIT_INPUT);
	snprintf(moves, sizeof(moves), "%s-wal", db); /* by name: none is there now */
	ck_assert_int_eq(run_err(msg, sizeof(msg), "registry", "reassign", "--model", model2,
				 "--db", db, "-o", moves, NULL),
			 CLI_EXIT_INPUT);
	ASSERT_HAS(msg, "is the store or one of its files");
	ck_assert_int_ne(access(moves, F_OK), 0);
	/* a model whose IDs have another length: refused before the log of
	 * moves is begun (it said "stopped after reassigning 0 of 0" and
	 * left a log with its header, as a run that moved nothing does) */
	{
		static const int hidden[] = {16}, K2[] = {5, 7};
		struct mb_spec spec;
		struct sid_error err;
		char two[300];

		mb_spec_init(&spec);
		mb_tower(&spec, SID_TOWER_ITEM, 8, hidden, 1, 4, 2, K2, "relu", "none", 1);
		spec.model_version = "m-2-levels";
		snprintf(two, sizeof(two), "%s/two.safetensors", dir);
		ck_assert_int_eq(mb_build_file(&spec, two, &err), 0);
		snprintf(moves, sizeof(moves), "%s/moves-2.tsv", dir);
		ck_assert_int_eq(run_err(msg, sizeof(msg), "registry", "reassign", "--model", two,
					 "--db", db, "-o", moves, NULL),
				 CLI_EXIT_INPUT);
		ck_assert_str_eq(msg,
				 "semid: reassign: the store's item IDs have 3 levels and model "
				 "m-2-levels gives 2; IDs of another length need a store of "
				 "their own\n");
		ck_assert_int_ne(access(moves, F_OK), 0);
	}
	snprintf(moves, sizeof(moves), "%s/moves.tsv", dir);
	ck_assert_int_eq(run_err(msg, sizeof(msg), "registry", "reassign", "--model", model2,
				 "--db", db, "-o", moves, "--batch", "13", NULL),
			 CLI_EXIT_OK);
	ASSERT_HAS(msg, "reassigned");
	f = fopen(moves, "r");
	ck_assert_ptr_nonnull(fgets(line, sizeof(line), f));
	ck_assert_str_eq(line, "id\told_sid\tnew_sid\n");
	while (fgets(line, sizeof(line), f)) {
		char id[64], a[64], b[64];
		int i, k[3];
		long suffix;
		ck_assert_int_eq(sscanf(line, "%63s %63s %63s", id, a, b), 3);
		ck_assert_int_eq(sscanf(id, "item-%d", &i), 1);
		ck_assert_str_eq(a, old_sid[i]);
		ck_assert_int_eq(sscanf(b, "%d-%d-%d-%ld", &k[0], &k[1], &k[2], &suffix), 4);
		for (int l = 0; l < 3; l++)
			ck_assert_int_eq(k[l], c2[3 * i + l]);
		lines++;
	}
	fclose(f);
	ck_assert_int_eq(lines, changed);
	{ /* every id now holds NEW's codes; those that kept them, their sid */
		struct sid_registry *r;
		struct sid_reg_entry e;
		struct sid_error err;
		char id[32], sid[SID_REG_SID_MAX];
		ck_assert_int_eq(sid_registry_open(db, SID_REG_READONLY, &r, &err), 0);
		for (int i = 0; i < N; i++) {
			snprintf(id, sizeof(id), "item-%d", i);
			ck_assert_int_eq(sid_registry_get(r, SID_TOWER_ITEM, id, &e, &err), 0);
			ck_assert_mem_eq(e.codes, c2 + 3 * i, sizeof(int32_t) * 3);
			sid_reg_sid_format(e.codes, 3, e.suffix, sid, sizeof(sid));
			if (!memcmp(c1 + 3 * i, c2 + 3 * i, sizeof(int32_t) * 3))
				ck_assert_str_eq(sid, old_sid[i]);
		}
		sid_registry_close(r);
	}
	ck_assert_int_eq(run_err(msg, sizeof(msg), "registry", "reassign", "--model", model2,
				 "--db", db, "-o", moves, NULL),
			 CLI_EXIT_OK);
	ASSERT_HAS(msg, "reassigned 0 of");
	ck_assert_int_eq(count_lines(moves), lines + 1); /* a log: appended to, nothing added */
	ck_assert_int_eq(run("registry", "reassign", "--db", db, NULL), CLI_EXIT_INPUT);
	{ /* NEW elsewhere and no --db: no store is made beside NEW */
		char rel[320], store[340];
		snprintf(rel, sizeof(rel), "%s/releases", dir);
		ck_assert_int_eq(mkdir(rel, 0755), 0);
		snprintf(store, sizeof(store), "%s/new.safetensors", rel);
		ck_assert_int_eq(link(model2, store), 0);
		ck_assert_int_eq(
		    run_err(msg, sizeof(msg), "registry", "reassign", "--model", store, NULL),
		    CLI_EXIT_INPUT);
		ASSERT_HAS(msg, "no such store");
		/* diff, the step before a reassign (deploy/README.md), and the
		 * other readers: told where the store was looked for and how to
		 * name the served one */
		static const char *const readers[] = {"diff", "export", "stats"};
		for (int i = 0; i < 3; i++) {
			ck_assert_int_eq(run_err(msg, sizeof(msg), "registry", readers[i],
						 "--model", store, NULL),
					 CLI_EXIT_INPUT);
			ASSERT_HAS(msg, "releases/semid-registry.db: no such file");
			ASSERT_HAS(msg, "without --db the store is the semid-registry.db next "
					"to --model; give the store to read with --db");
		}
		snprintf(store, sizeof(store), "%s/semid-registry.db", rel);
		ck_assert_int_ne(access(store, F_OK), 0);
	}
}
END_TEST

/* Until child @pid is in system call @nr (SYS_write, ...: the number its
 * /proc/PID/syscall line starts with), for up to 5 s. */
static void wait_in_syscall(pid_t pid, long nr)
{
	char want[24];
	snprintf(want, sizeof(want), "%ld ", nr);
	for (int i = 0; i < 5000; i++) {
		char path[64], sc[16] = "";
		FILE *p;
		snprintf(path, sizeof(path), "/proc/%d/syscall", (int)pid);
		if ((p = fopen(path, "r"))) {
			if (!fgets(sc, sizeof(sc), p))
				sc[0] = '\0';
			fclose(p);
		}
		if (!strncmp(sc, want, strlen(want)))
			return;
		usleep(1000);
	}
}

/* run_signalled's @how: SIGHUP ignored in the child (nohup); the pipe is
 * the child's descriptor 3 (-o /dev/fd/3: its stdout left as it is, so
 * that its reader is not the one gone) and its reader goes away as the
 * signal is sent, nothing more read from it. */
enum { SIGNALLED_IGNORE_HUP = 1, SIGNALLED_READER_GONE = 2 };

/*
 * The registry command of the NULL-terminated arguments from @first in a
 * child (as @how says, its stderr in @errname of dir) whose log, its
 * stdout, is a 4 KiB pipe: @lines lines are read, then, once the child
 * blocks writing to the full pipe (so that no line may be lost to EINTR),
 * it is sent @sig and the rest is read into @buf (NUL-terminated, its
 * length in *@lenp).  Returns the child's wait status.
 */
static int run_signalled(int sig, int how, int lines, const char *errname, char *buf, size_t cap,
			 size_t *lenp, const char *first, ...)
{
	int fd[2], status, got = 0;
	size_t len = 0;
	ssize_t n;
	pid_t pid;

	ck_assert_int_eq(pipe(fd), 0);
	ck_assert_int_ge(fcntl(fd[1], F_SETPIPE_SZ, 4096), 4096);
	pid = fork();
	ck_assert_int_ge(pid, 0);
	if (pid == 0) {
		char errf[320];
		va_list ap;
		int e;
		snprintf(errf, sizeof(errf), "%s/%s", dir, errname);
		e = open(errf, O_WRONLY | O_CREAT | O_TRUNC, 0600);
		close(fd[0]);
		dup2(fd[1], how & SIGNALLED_READER_GONE ? 3 : 1);
		dup2(e, 2); /* what it says, for the test */
		/* as a shell starts it (Check's runner catches SIGINT and SIGTERM
		 * to kill the test's process group) */
		signal(SIGINT, SIG_DFL);
		signal(SIGTERM, SIG_DFL);
		signal(SIGHUP, how & SIGNALLED_IGNORE_HUP ? SIG_IGN : SIG_DFL);
		va_start(ap, first);
		_exit(vrun(first, ap));
	}
	close(fd[1]);
	while (got < lines && (n = read(fd[0], buf + len, 1)) == 1)
		got += buf[len++] == '\n';
	wait_in_syscall(pid, SYS_write); /* until it blocks writing */
	kill(pid, sig);
	while (!(how & SIGNALLED_READER_GONE) && (n = read(fd[0], buf + len, cap - 1 - len)) > 0)
		len += (size_t)n;
	close(fd[0]);
	buf[len] = '\0';
	*lenp = len;
	ck_assert_int_eq(waitpid(pid, &status, 0), pid);
	return status;
}

/* The file @name of dir into @buf (NUL-terminated, at most @cap - 1 bytes). */
static void dir_file_read(const char *name, char *buf, size_t cap)
{
	char path[400];
	FILE *f;

	snprintf(path, sizeof(path), "%s/%s", dir, name);
	f = fopen(path, "r");
	ck_assert_msg(f != NULL, "%s: %s", path, strerror(errno));
	buf[fread(buf, 1, cap - 1, f)] = '\0';
	fclose(f);
}

/* `registry reassign --model model2 --db db --batch 1` in run_signalled,
 * after its header and five moves, its stderr in reassign.err. */
static int reassign_signalled(int sig, int ignore_hup, char *buf, size_t cap, size_t *lenp)
{
	return run_signalled(sig, ignore_hup ? SIGNALLED_IGNORE_HUP : 0, 6, "reassign.err", buf,
			     cap, lenp, "registry", "reassign", "--model", model2, "--db", db,
			     "--batch", "1", NULL);
}

/*
 * A reassign run with SIGHUP ignored (nohup) keeps it ignored: a hangup
 * while it runs (it is blocked writing its log to a full pipe then) does not
 * stop it, and every move is logged.  And a move log that cannot be written
 * (/dev/full) is found before any id moves.
 */
START_TEST(t_reassign_hup_ignored)
{
	enum { M = 2000 };
	static float xm[M * 8];
	static char buf[1 << 20];
	char msg[1024];
	int status, lines = 0;
	size_t len = 0;
	struct sid_registry *r;
	struct sid_reg_diff d;
	struct sid_model *m2;
	struct sid_error err;

	assign_rows(M, 21, xm);
	ck_assert_int_eq(sid_model_load(model2, &m2, &err), 0);
	ck_assert_int_eq(sid_registry_open(db, SID_REG_READONLY, &r, &err), 0);
	ck_assert_int_eq(sid_registry_diff(r, SID_TOWER_ITEM, m2, &d, &err), 0);
	sid_registry_close(r);
	ck_assert_uint_gt(d.changed, 100);

	ck_assert_int_eq(run_err(msg, sizeof(msg), "registry", "reassign", "--model", model2,
				 "--db", db, "-o", "/dev/full", NULL),
			 CLI_EXIT_IO);
	ASSERT_HAS(msg, "cannot write the move log");
	ck_assert_int_eq(sid_registry_open(db, SID_REG_READONLY, &r, &err), 0);
	ck_assert_int_eq(sid_registry_diff(r, SID_TOWER_ITEM, m2, &d, &err), 0);
	sid_registry_close(r);
	ck_assert_uint_gt(d.changed, 100); /* nothing moved */

	status = reassign_signalled(SIGHUP, 1, buf, sizeof(buf), &len);
	ck_assert_msg(WIFEXITED(status) && WEXITSTATUS(status) == CLI_EXIT_OK,
		      "the reassign did not run to its end (status 0x%x)", status);
	for (size_t i = 0; i < len; i++)
		lines += buf[i] == '\n';
	ck_assert_int_eq(lines, (int)d.changed + 1);
	sid_model_unref(m2);
}
END_TEST

/* @text into the file @path. */
static void write_text(const char *path, const char *text)
{
	FILE *f = fopen(path, "w");
	ck_assert_ptr_nonnull(f);
	fputs(text, f);
	ck_assert_int_eq(fclose(f), 0);
}

/*
 * Import takes only what export writes: a model_version that is not UTF-8
 * (stored, it broke every JSON view of the entry), a time that is no real
 * time (February 31, a sign in a field; normalised to another date), a
 * JSON "suffix" of -1 (read as absent) and a JSON key export never writes
 * (a misspelt one was ignored) are refused with their line; and
 * export -o FILE.jsonl writes JSON lines, as import reads that name.
 */
START_TEST(t_import_strict)
{
	static const char *const bad[] = {
	    "item\tA\t1-2-0\tv\xff\t2026-01-02T03:04:05.006Z\t2026-01-02T03:04:05.006Z\n",
	    "item\tA\t1-2-0\tv\t2026-02-31T03:04:05.006Z\t2026-01-02T03:04:05.006Z\n",
	    "item\tA\t1-2-0\tv\t2026-+1-02T03:04:05.006Z\t2026-01-02T03:04:05.006Z\n",
	    "item\tA\t1-2-0\tv\t2026-01-02T23:59:60.006Z\t2026-01-02T03:04:05.006Z\n",
	};
	char in[320], x[320], db3[320], msg[2048], head[8] = "";
	FILE *f;

	snprintf(in, sizeof(in), "%s/in.tsv", dir);
	snprintf(db3, sizeof(db3), "%s/strict.db", dir);
	for (size_t k = 0; k < sizeof(bad) / sizeof(bad[0]); k++) {
		write_text(in, bad[k]);
		ck_assert_int_eq(
		    run_err(msg, sizeof(msg), "registry", "import", in, "--db", db3, NULL),
		    CLI_EXIT_INPUT);
		ck_assert_msg(strstr(msg, "line 1"), "case %zu: %s", k, msg);
	}
	/* the message says what a line may have: 6 fields are taken too */
	write_text(in, "item\tA\t1-2-0\tv\t2026-01-02T03:04:05.006Z\n");
	ck_assert_int_eq(run_err(msg, sizeof(msg), "registry", "import", in, "--db", db3, NULL),
			 CLI_EXIT_INPUT);
	ASSERT_HAS(msg, "5 tab-separated fields, want 6 or 7");
	write_text(in, "item\tA\t1-2-0\tv\t2026-01-02T03:04:05.006Z\t2026-01-02T03:04:05.006Z"
		       "\t\tx\ty\n");
	ck_assert_int_eq(run_err(msg, sizeof(msg), "registry", "import", in, "--db", db3, NULL),
			 CLI_EXIT_INPUT);
	ASSERT_HAS(msg, "more than 7 tab-separated fields, want 6 or 7");
	snprintf(in, sizeof(in), "%s/in.jsonl", dir);
	write_text(in, "{\"kind\":\"item\",\"id\":\"A\",\"sid\":\"1-2-0\",\"model_version\":"
		       "\"v\",\"created_at\":\"2026-01-02T03:04:05.006Z\",\"updated_at\":"
		       "\"2026-01-02T03:04:05.006Z\",\"suffix\":-1}\n");
	ck_assert_int_eq(run_err(msg, sizeof(msg), "registry", "import", in, "--db", db3, NULL),
			 CLI_EXIT_INPUT);
	ASSERT_HAS(msg, "\"suffix\" disagrees");
	/* a key export never writes (here a misspelt embedding: it was dropped) */
	write_text(in, "{\"kind\":\"item\",\"id\":\"A\",\"sid\":\"1-2-0\",\"model_version\":"
		       "\"v\",\"created_at\":\"2026-01-02T03:04:05.006Z\",\"updated_at\":"
		       "\"2026-01-02T03:04:05.006Z\",\"embeding_b64\":\"AAAAAA==\"}\n");
	ck_assert_int_eq(run_err(msg, sizeof(msg), "registry", "import", in, "--db", db3, NULL),
			 CLI_EXIT_INPUT);
	ASSERT_HAS(msg, "embeding_b64");

	ck_assert_int_eq(run("registry", "assign", "--model", model, "--input", npy, "--ids", ids,
			     "--output", out, NULL),
			 CLI_EXIT_OK);
	snprintf(x, sizeof(x), "%s/x.jsonl", dir);
	ck_assert_int_eq(run("registry", "export", "--db", db, "-o", x, NULL), CLI_EXIT_OK);
	f = fopen(x, "r");
	ck_assert_ptr_nonnull(f);
	ck_assert_ptr_nonnull(fgets(head, sizeof(head), f));
	fclose(f);
	ck_assert_int_eq(head[0], '{');
	ck_assert_int_eq(run("registry", "import", x, "--db", db3, NULL), CLI_EXIT_OK);
	ck_assert_int_eq(items_in(db3), N);
	/* two TSV exports of different ids one after the other, into a new
	 * store: the second header is skipped, and every line of both is in */
	snprintf(x, sizeof(x), "%s/x.tsv", dir);
	ck_assert_int_eq(run("registry", "export", "--db", db, "-o", x, NULL), CLI_EXIT_OK);
	{
		char both[340], db4[340], cmd[1400];
		snprintf(both, sizeof(both), "%s/both.tsv", dir);
		snprintf(db4, sizeof(db4), "%s/both.db", dir);
		/* the second: the same lines under other ids and codes */
		snprintf(
		    cmd, sizeof(cmd),
		    "cat %s > %s && sed -e 's/\titem-/\tother-/' -e 's/\t\\([0-9]*\\)-/\t9\\1-/' "
		    "%s >> %s",
		    x, both, x, both);
		ck_assert_int_eq(system(cmd), 0);
		ck_assert_int_eq(count_lines(both), 2 * (N + 1));
		ck_assert_int_eq(run("registry", "import", both, "--db", db4, NULL), CLI_EXIT_OK);
		ck_assert_int_eq(items_in(db4), 2 * N);
	}
}
END_TEST

/*
 * An empty path is refused as encode refuses one, naming the option: an
 * import given --model "" (an unset variable) created and filled
 * ./semid-registry.db, the store "next to" no model, and the others said
 * "semid: : No such file or directory".
 */
START_TEST(t_empty_paths)
{
	char msg[2048], cwd[320], in[340], before[4096];
	struct stat st;

	ck_assert_ptr_nonnull(getcwd(before, sizeof(before)));
	snprintf(cwd, sizeof(cwd), "%s/empty-paths", dir);
	ck_assert_int_eq(mkdir(cwd, 0755), 0);
	ck_assert_int_eq(chdir(cwd), 0);
	snprintf(in, sizeof(in), "%s/in.tsv", cwd);
	write_text(in, "item\tA\t1-2-0\tv\t2026-01-02T03:04:05.006Z\t2026-01-02T03:04:05.006Z\n");
	ck_assert_int_eq(run_err(msg, sizeof(msg), "registry", "import", "--model", "", in, NULL),
			 CLI_EXIT_INPUT);
	ASSERT_HAS(msg, "--model is empty");
	ck_assert_int_ne(stat("semid-registry.db", &st), 0);
	ck_assert_int_eq(run_err(msg, sizeof(msg), "registry", "assign", "--model", model,
				 "--input", npy, "--ids", "", "--db", "x.db", NULL),
			 CLI_EXIT_INPUT);
	ASSERT_HAS(msg, "--ids is empty");
	ck_assert_int_eq(run_err(msg, sizeof(msg), "registry", "assign", "--model", model,
				 "--input", "", "--ids", ids, "--db", "x.db", NULL),
			 CLI_EXIT_INPUT);
	ASSERT_HAS(msg, "--input is empty");
	ck_assert_int_eq(run_err(msg, sizeof(msg), "registry", "import", "--db", "x.db", "", NULL),
			 CLI_EXIT_INPUT);
	ASSERT_HAS(msg, "FILE is empty");
	ck_assert_int_eq(run_err(msg, sizeof(msg), "registry", "restore", "--db", "x.db", "", NULL),
			 CLI_EXIT_INPUT);
	ASSERT_HAS(msg, "BACKUP is empty");
	ck_assert_int_ne(stat("x.db", &st), 0);
	ck_assert_int_eq(chdir(before), 0);
}
END_TEST

/*
 * Without --db the store is found next to --model, which must be there: an
 * import with a typo in --model made and filled a store next to no model,
 * and --model DIR put it in DIR's parent.  Refused, naming the model, with
 * no store made.
 */
START_TEST(t_model_must_exist)
{
	char msg[2048], typo[320], in[340], store[340], mdir[320], parent_store[340];
	struct stat st;

	snprintf(in, sizeof(in), "%s/mx.tsv", dir);
	write_text(in, "item\tA\t1-2-0\tv\t2026-01-02T03:04:05.006Z\t2026-01-02T03:04:05.006Z\n");
	snprintf(typo, sizeof(typo), "%s/mx-sub/typo.safetensors", dir);
	snprintf(mdir, sizeof(mdir), "%s/mx-sub", dir);
	ck_assert_int_eq(mkdir(mdir, 0755), 0);
	snprintf(store, sizeof(store), "%s/semid-registry.db", mdir);
	snprintf(parent_store, sizeof(parent_store), "%s/semid-registry.db", dir);
	unlink(parent_store);
	ck_assert_int_eq(run_err(msg, sizeof(msg), "registry", "import", "--model", typo, in, NULL),
			 CLI_EXIT_INPUT);
	ASSERT_HAS(msg, "--model ");
	ASSERT_HAS(msg, "typo.safetensors: No such file or directory; without --db the store is "
			"the semid-registry.db next to the model");
	ck_assert_int_ne(stat(store, &st), 0);
	ck_assert_int_eq(run_err(msg, sizeof(msg), "registry", "import", "--model", mdir, in, NULL),
			 CLI_EXIT_INPUT);
	ASSERT_HAS(msg, "mx-sub: a directory; without --db");
	ck_assert_int_ne(stat(parent_store, &st), 0);
	/* a read of the store next to a missing model says the same */
	ck_assert_int_eq(run_err(msg, sizeof(msg), "registry", "stats", "--model", typo, NULL),
			 CLI_EXIT_INPUT);
	ASSERT_HAS(msg, "typo.safetensors: No such file or directory");
}
END_TEST

/*
 * The format from a file's name is matched in any case, as encode's .npy:
 * export -o X.JSONL wrote TSV into it, and import of a JSON lines file
 * named Y.JSON read it as TSV ("1 tab-separated fields").
 */
START_TEST(t_format_name_any_case)
{
	char x[320], y[320], db5[320], cmd[800], head[8] = "";
	FILE *f;

	ck_assert_int_eq(run("registry", "assign", "--model", model, "--input", npy, "--ids", ids,
			     "--output", out, NULL),
			 CLI_EXIT_OK);
	snprintf(x, sizeof(x), "%s/X.JSONL", dir);
	ck_assert_int_eq(run("registry", "export", "--db", db, "-o", x, NULL), CLI_EXIT_OK);
	f = fopen(x, "r");
	ck_assert_ptr_nonnull(f);
	ck_assert_ptr_nonnull(fgets(head, sizeof(head), f));
	fclose(f);
	ck_assert_int_eq(head[0], '{');
	snprintf(y, sizeof(y), "%s/Y.Json", dir);
	snprintf(cmd, sizeof(cmd), "cp %s %s", x, y);
	ck_assert_int_eq(system(cmd), 0);
	snprintf(db5, sizeof(db5), "%s/anycase.db", dir);
	unlink(db5);
	ck_assert_int_eq(run("registry", "import", y, "--db", db5, NULL), CLI_EXIT_OK);
	ck_assert_int_eq(items_in(db5), N);
}
END_TEST

/*
 * Bad base64 in an import says what is wrong and where, as the server
 * does: a character counted from 1 (as the line is) and shown, the length,
 * or the index of a value not finite.  It said only "embedding_b64 is not
 * base64 of finite little-endian float32", wherever the fault was.
 */
START_TEST(t_import_bad_base64)
{
	static const struct {
		const char *b64, *says;
	} cases[] = {
	    {"AACA*w==", "line 1: embedding_b64 is not valid base64 (character 5, '*')"},
	    {"AACAPw\xc3\xa9",
	     "line 1: embedding_b64 is not valid base64 (character 7, byte 0xc3)"},
	    {"AA=APw==", "line 1: embedding_b64 is not valid base64 (character 3, '=')"},
	    {"AACAPw=",
	     "line 1: embedding_b64 is not valid base64 (length 7, not a multiple of 4)"},
	    {"AACA", "line 1: embedding_b64 decodes to 3 bytes; an embedding is 1 to"},
	    {"AACAPwAAgH8=", "line 1: embedding_b64 holds a non-finite float32 at index 1"},
	};
	char in[320], db3[320], line[512], msg[2048];

	snprintf(in, sizeof(in), "%s/b64.tsv", dir);
	snprintf(db3, sizeof(db3), "%s/b64.db", dir);
	for (size_t k = 0; k < sizeof(cases) / sizeof(cases[0]); k++) {
		snprintf(line, sizeof(line),
			 "item\tA\t1-2-0\tv\t2026-01-02T03:04:05.006Z\t2026-01-02T03:04:05.006Z"
			 "\t%s\n",
			 cases[k].b64);
		write_text(in, line);
		ck_assert_int_eq(
		    run_err(msg, sizeof(msg), "registry", "import", in, "--db", db3, NULL),
		    CLI_EXIT_INPUT);
		ck_assert_msg(strstr(msg, cases[k].says), "case %zu: '%s' lacks '%s'", k, msg,
			      cases[k].says);
	}
	/* and the one that is right goes in */
	snprintf(line, sizeof(line),
		 "item\tA\t1-2-0\tv\t2026-01-02T03:04:05.006Z\t2026-01-02T03:04:05.006Z"
		 "\tAACAPw==\n");
	write_text(in, line);
	ck_assert_int_eq(run("registry", "import", in, "--db", db3, NULL), CLI_EXIT_OK);
}
END_TEST

/* VmPeak of this process, in bytes (0 when /proc does not say). */
static unsigned long long vm_peak(void)
{
	FILE *f = fopen("/proc/self/status", "r");
	char line[256];
	unsigned long long kib = 0;

	while (f && fgets(line, sizeof(line), f))
		if (sscanf(line, "VmPeak: %llu kB", &kib) == 1)
			break;
	if (f)
		fclose(f);
	return kib * 1024;
}

/* Run `semid` with the NULL-terminated arguments from @first on in a
 * child, its address space capped at @as bytes (0: not capped) and its
 * stderr into @msg; returns its exit status.  With @peak, the child's VmPeak
 * after the run goes there. */
static int capped_run(unsigned long long as, char *msg, size_t len, unsigned long long *peak,
		      const char *first, ...)
{
	int fd[2], status, efd = stderr_file();
	pid_t pid;

	ck_assert_int_eq(pipe(fd), 0);
	fflush(NULL);
	pid = fork();
	ck_assert_int_ge(pid, 0);
	if (pid == 0) {
		struct rlimit rl = {as, as};
		unsigned long long p;
		va_list ap;
		int rc;
		close(fd[0]);
		dup2(efd, 2);
		if (as && setrlimit(RLIMIT_AS, &rl))
			_exit(99);
		va_start(ap, first);
		rc = vrun(first, ap);
		va_end(ap);
		p = vm_peak();
		if (write(fd[1], &p, sizeof(p)) != (ssize_t)sizeof(p))
			_exit(98);
		_exit(rc);
	}
	close(fd[1]);
	ck_assert_int_eq(waitpid(pid, &status, 0), pid);
	if (peak)
		ck_assert_int_eq(read(fd[0], peak, sizeof(*peak)), (ssize_t)sizeof(*peak));
	close(fd[0]);
	stderr_read(efd, msg, len);
	ck_assert_msg(WIFEXITED(status), "status 0x%x: %s", status, msg);
	return WEXITSTATUS(status);
}

/* `semid registry import @in --db @store` through capped_run. */
static int import_child(const char *in, const char *store, unsigned long long as, char *msg,
			size_t len, unsigned long long *peak)
{
	return capped_run(as, msg, len, peak, "registry", "import", in, "--db", store, NULL);
}

/*
 * An import line far over the 64 MiB limit (96 MiB with no newline: a sparse
 * file, so no disk) is refused naming the file and the line, with no more
 * than the limit in memory: the child runs with its address space capped at
 * what importing the first line alone took, plus the limit and 32 MiB.  The
 * reader doubled its buffer past the limit, to 128 MiB, and so failed there
 * for want of memory instead.  (Sanitizers reserve terabytes of address
 * space: their builds check the message only.)
 */
START_TEST(t_import_line_limit_memory)
{
	static const char first[] =
	    "item\tA\t1-2-0\tv\t2026-01-02T03:04:05.006Z\t2026-01-02T03:04:05.006Z\n";
	char small[320], big[320], db1[320], db2[320], msg[2048], want[400];
	unsigned long long peak = 0, cap = 0;
	int fd;

	snprintf(small, sizeof(small), "%s/first.tsv", dir);
	snprintf(big, sizeof(big), "%s/huge-line.tsv", dir);
	snprintf(db1, sizeof(db1), "%s/first.db", dir);
	snprintf(db2, sizeof(db2), "%s/huge.db", dir);
	write_text(small, first);
	write_text(big, first);
	fd = open(big, O_WRONLY);
	ck_assert_int_ge(fd, 0);
	ck_assert_int_eq(ftruncate(fd, (off_t)(96u << 20)), 0);
	close(fd);

	ck_assert_int_eq(import_child(small, db1, 0, msg, sizeof(msg), &peak), CLI_EXIT_OK);
	ck_assert_msg(peak > 0, "no VmPeak in /proc/self/status");
#if !defined(__SANITIZE_ADDRESS__) && !defined(__SANITIZE_THREAD__)
	cap = peak + (64ull << 20) + (32ull << 20);
#endif
	ck_assert_int_eq(import_child(big, db2, cap, msg, sizeof(msg), NULL), CLI_EXIT_INPUT);
	snprintf(want, sizeof(want), "semid: %s: line 2: longer than %u bytes", big, 64u << 20);
	ASSERT_HAS(msg, want);
}
END_TEST

/*
 * An --ids line far over the id limit (64 MiB with no newline, sparse) is
 * refused naming the file and the line, having read 4 KiB and a byte of
 * it: the child runs with its address space capped at what a whole assign
 * took plus 16 MiB.  ids_read used getline, which took the whole line into
 * memory before the id's length was checked; under the cap getline failed
 * and the ids read so far were taken for the whole file ("1 ids for 200
 * input rows"; without the cap the line, all NULs, gave "id is empty").
 * An id just over the limit still gets the id check's own message.
 * (Sanitizers reserve terabytes of address space: their builds check the
 * message only.)
 */
START_TEST(t_assign_ids_line_limit_memory)
{
	char big[320], db1[320], db2[320], msg[2048], want[400];
	char id[SID_REG_ID_MAX + 2], text[SID_REG_ID_MAX + 16];
	unsigned long long peak = 0, cap = 0;
	int fd;

	snprintf(big, sizeof(big), "%s/huge-ids.txt", dir);
	snprintf(db1, sizeof(db1), "%s/first.db", dir);
	snprintf(db2, sizeof(db2), "%s/huge.db", dir);
	write_text(big, "item-0\n");
	fd = open(big, O_WRONLY);
	ck_assert_int_ge(fd, 0);
	ck_assert_int_eq(ftruncate(fd, (off_t)(64u << 20)), 0);
	close(fd);

	ck_assert_int_eq(capped_run(0, msg, sizeof(msg), &peak, "registry", "assign", "--model",
				    model, "--input", npy, "--ids", ids, "--db", db1, "--output",
				    out, NULL),
			 CLI_EXIT_OK);
	ck_assert_msg(peak > 0, "no VmPeak in /proc/self/status");
#if !defined(__SANITIZE_ADDRESS__) && !defined(__SANITIZE_THREAD__)
	cap = peak + (16ull << 20);
#endif
	ck_assert_int_eq(capped_run(cap, msg, sizeof(msg), NULL, "registry", "assign", "--model",
				    model, "--input", npy, "--ids", big, "--db", db2, NULL),
			 CLI_EXIT_INPUT);
	snprintf(want, sizeof(want),
		 "semid: %s: line 2: longer than 4096 bytes (an id is at most %d)", big,
		 SID_REG_ID_MAX);
	ASSERT_HAS(msg, want);
	ck_assert_int_eq(access(db2, F_OK), -1); /* refused before the store is opened */

	/* an id one byte over, with a CRLF line end: the id check names it */
	memset(id, 'x', SID_REG_ID_MAX + 1);
	id[SID_REG_ID_MAX + 1] = '\0';
	snprintf(text, sizeof(text), "item-0\n%s\r\n", id);
	write_text(big, text);
	ck_assert_int_eq(run_err(msg, sizeof(msg), "registry", "assign", "--model", model,
				 "--input", npy, "--ids", big, "--db", db2, NULL),
			 CLI_EXIT_INPUT);
	snprintf(want, sizeof(want), "semid: %s: line 2: id \"", big);
	ASSERT_HAS(msg, want);
	snprintf(want, sizeof(want), "is %d bytes, the limit is %d", SID_REG_ID_MAX + 1,
		 SID_REG_ID_MAX);
	ASSERT_HAS(msg, want);
}
END_TEST

/*
 * A NUL byte in an --ids line is refused with its line: the id was cut at
 * it ("item-1<NUL>x" assigned as item-1, exit 0), where import refuses the
 * same byte.
 */
START_TEST(t_assign_ids_nul)
{
	char msg[2048], want[400];
	FILE *f = fopen(ids, "w");

	ck_assert_ptr_nonnull(f);
	for (int i = 0; i < N; i++)
		if (i == 1)
			ck_assert_int_eq(fwrite("item-1\0x\n", 1, 9, f), 9);
		else
			fprintf(f, "item-%d\n", i);
	ck_assert_int_eq(fclose(f), 0);
	ck_assert_int_eq(run_err(msg, sizeof(msg), "registry", "assign", "--model", model,
				 "--input", npy, "--ids", ids, "--db", db, NULL),
			 CLI_EXIT_INPUT);
	snprintf(want, sizeof(want), "semid: %s: line 2: NUL byte", ids);
	ASSERT_HAS(msg, want);
	ck_assert_int_eq(access(db, F_OK), -1);
}
END_TEST

/*
 * Long registry jobs draw a bar on stderr when told (--progress; by default
 * only on a terminal, which a test's stderr is not): rows for assign,
 * entries walked for export, stats and diff (counted first), MiB for import
 * and backup, entries then ids moved for reassign; --no-progress and the
 * default here draw nothing.
 */
START_TEST(t_progress)
{
	char msg[8192], want[64], rows[64], exp[320], moves[320], bk[320];

	ck_assert_int_eq(run_err(msg, sizeof(msg), "registry", "assign", "--model", model,
				 "--input", npy, "--ids", ids, "--output", out, "--progress", NULL),
			 CLI_EXIT_OK);
	snprintf(want, sizeof(want), "100.0%%  %d/%d rows", N, N);
	ASSERT_HAS(msg, want);
	snprintf(want, sizeof(want), "100.0%%  %d/%d entries", N, N);
	snprintf(exp, sizeof(exp), "%s/e.tsv", dir);
	ck_assert_int_eq(run_err(msg, sizeof(msg), "registry", "export", "--db", db, "-o", exp,
				 "--progress", NULL),
			 CLI_EXIT_OK);
	ASSERT_HAS(msg, want);
	ck_assert_int_eq(run_err(msg, sizeof(msg), "registry", "stats", "--db", db, "-o", out,
				 "--progress", NULL),
			 CLI_EXIT_OK);
	ASSERT_HAS(msg, want);
	/* check: the walk, then the file check over its tables' rows (the
	 * entries, their embeddings, one for the rest) */
	ck_assert_int_eq(run_err(msg, sizeof(msg), "registry", "check", "--db", db, "-o", out,
				 "--progress", NULL),
			 CLI_EXIT_OK);
	ASSERT_HAS(msg, want);
	snprintf(rows, sizeof(rows), "100.0%%  %d/%d file rows", 2 * N + 1, 2 * N + 1);
	ASSERT_HAS(msg, rows);
	ck_assert_int_eq(run_err(msg, sizeof(msg), "registry", "diff", "--model", model2, "--db",
				 db, "-o", out, "--progress", NULL),
			 CLI_EXIT_OK);
	ASSERT_HAS(msg, want);
	snprintf(moves, sizeof(moves), "%s/moves.tsv", dir);
	ck_assert_int_eq(run_err(msg, sizeof(msg), "registry", "reassign", "--model", model2,
				 "--db", db, "-o", moves, "--progress", NULL),
			 CLI_EXIT_OK);
	ASSERT_HAS(msg, want);
	snprintf(want, sizeof(want), "100.0%%  %ld/%ld ids moved", count_lines(moves) - 1,
		 count_lines(moves) - 1);
	ASSERT_HAS(msg, want);
	snprintf(bk, sizeof(bk), "%s/bk.db", dir);
	ck_assert_int_eq(run_err(msg, sizeof(msg), "registry", "backup", "--db", db, "-o", bk,
				 "--progress", NULL),
			 CLI_EXIT_OK);
	ASSERT_HAS(msg, "100.0%  0/0 MiB"); /* a small store: under 1 MiB */
	snprintf(bk, sizeof(bk), "%s/imported.db", dir);
	ck_assert_int_eq(
	    run_err(msg, sizeof(msg), "registry", "import", exp, "--db", bk, "--progress", NULL),
	    CLI_EXIT_OK);
	ASSERT_HAS(msg, "100.0%  0/0 MiB");
	/* told not to, and by default off a terminal: no bar */
	ck_assert_int_eq(run_err(msg, sizeof(msg), "registry", "stats", "--db", db, "-o", out,
				 "--no-progress", NULL),
			 CLI_EXIT_OK);
	ck_assert_ptr_null(strstr(msg, "entries"));
	ck_assert_int_eq(
	    run_err(msg, sizeof(msg), "registry", "export", "--db", db, "-o", exp, NULL),
	    CLI_EXIT_OK);
	ck_assert_ptr_null(strstr(msg, "entries"));
	ck_assert_int_eq(run("registry", "get", "x", "--db", db, "--progress", NULL),
			 CLI_EXIT_INPUT);
}
END_TEST

/*
 * A reassign stopped by SIGTERM ends after the batch in flight, its moves
 * logged: here its log is a pipe (4 KiB) the test stops reading after five
 * lines, and the signal comes once the child blocks writing to it (no line
 * may be lost to EINTR); the test then reads on to the end.  A second run appends the rest to the
 * same log: it then holds every id that moved exactly once, each with the sid the store holds, and
 * nothing is left to move.  It says which signal stopped it by name (it said
 * "signal 15").
 */
START_TEST(t_reassign_stopped)
{
	enum { M = 2000 };
	static float xm[M * 8];
	static char seen[M], buf[1 << 20];
	char moves[320], line[512];
	int status, lines = 0;
	size_t len = 0;
	FILE *f;

	assign_rows(M, 21, xm);
	status = reassign_signalled(SIGTERM, 0, buf, sizeof(buf), &len);
	ck_assert_msg(WIFSIGNALED(status) && WTERMSIG(status) == SIGTERM,
		      "the reassign was not stopped by the signal (status 0x%x)", status);
	{
		char said[1024];
		dir_file_read("reassign.err", said, sizeof(said));
		ASSERT_HAS(said, "semid: stopped by SIGTERM after reassigning ");
		ASSERT_HAS(said, " item ids to model m-two; their moves are in stdout; run it "
				 "again to move the rest\n");
	}
	snprintf(moves, sizeof(moves), "%s/moves.tsv", dir);
	f = fopen(moves, "w");
	ck_assert_int_eq(fwrite(buf, 1, len, f), len);
	fclose(f);
	ck_assert_int_eq(
	    run("registry", "reassign", "--model", model2, "--db", db, "-o", moves, NULL),
	    CLI_EXIT_OK);
	{
		struct sid_registry *r;
		struct sid_reg_entry e;
		struct sid_error err;
		ck_assert_int_eq(sid_registry_open(db, SID_REG_READONLY, &r, &err), 0);
		f = fopen(moves, "r");
		ck_assert_ptr_nonnull(fgets(line, sizeof(line), f));
		ck_assert_str_eq(line, "id\told_sid\tnew_sid\n"); /* once, at the top */
		while (fgets(line, sizeof(line), f)) {
			char id[64], a[64], b[64], sid[SID_REG_SID_MAX];
			int i;
			ck_assert_int_eq(sscanf(line, "%63s %63s %63s", id, a, b), 3);
			ck_assert_int_eq(sscanf(id, "item-%d", &i), 1);
			ck_assert_msg(!seen[i]++, "%s logged twice", id);
			ck_assert_int_eq(sid_registry_get(r, SID_TOWER_ITEM, id, &e, &err), 0);
			sid_reg_sid_format(e.codes, e.L, e.suffix, sid, sizeof(sid));
			ck_assert_str_eq(sid, b);
			lines++;
		}
		fclose(f);
		for (int i = 0; i < M; i++) { /* and every id that moved is there */
			char id[32];
			snprintf(id, sizeof(id), "item-%d", i);
			ck_assert_int_eq(sid_registry_get(r, SID_TOWER_ITEM, id, &e, &err), 0);
			ck_assert_msg(strcmp(e.model_version, "m-two") || seen[i],
				      "%s moved but is not in the log", id);
		}
		sid_registry_close(r);
	}
	ck_assert_int_eq(run("registry", "diff", "--model", model2, "--db", db, "-o", out, NULL),
			 CLI_EXIT_OK);
	{
		json_t *j = load_json(out);
		ck_assert_int_eq(json_integer_value(json_object_get(j, "changed")), 0);
		json_decref(j);
	}
	ck_assert_int_gt(lines, 200);
}
END_TEST

/* A run_signalled @status of a command that failed with exit 1, its stderr
 * (@errname of dir) holding @want and no "stopped by". */
static void assert_error_kept(int status, const char *errname, const char *want)
{
	char said[4096];

	dir_file_read(errname, said, sizeof(said));
	ck_assert_msg(WIFEXITED(status) && WEXITSTATUS(status) == CLI_EXIT_IO,
		      "status 0x%x, not exit 1: %s", status, said);
	ASSERT_HAS(said, want);
	ck_assert_msg(!strstr(said, "stopped by"), "%s", said);
}

/*
 * A reassign or a delete whose log fails (-o /dev/fd/3, a pipe whose reader
 * goes away) as a signal asks it to stop keeps its error, exit 1.  The
 * reassign said "stopped by SIGTERM ... their moves are in /dev/fd/3", the
 * delete only that the lines of its committed batch follow, and both ended
 * by the signal, the write error never told.
 */
START_TEST(t_error_with_a_stop)
{
	enum { M = 2000 };
	static float xm[M * 8];
	static char buf[1 << 20];
	char ids2[320];
	size_t len = 0;
	int status;

	assign_rows(M, 21, xm);
	status = run_signalled(SIGTERM, SIGNALLED_READER_GONE, 6, "reassign.err", buf, sizeof(buf),
			       &len, "registry", "reassign", "--model", model2, "--db", db,
			       "--batch", "1", "-o", "/dev/fd/3", NULL);
	assert_error_kept(status, "reassign.err", "semid: /dev/fd/3: write failed");
	snprintf(ids2, sizeof(ids2), "%s/ids2.txt", dir);
	status = run_signalled(SIGINT, SIGNALLED_READER_GONE, 5, "delete.err", buf, sizeof(buf),
			       &len, "registry", "delete", "--db", db, "--ids", ids2, "--batch",
			       "1", "-o", "/dev/fd/3", NULL);
	assert_error_kept(status, "delete.err",
			  "semid: /dev/fd/3: write failed: Broken pipe; the 1 ids of the batch "
			  "were deleted all the same");
}
END_TEST

/*
 * A SIGTERM that comes after the last batch has committed (one batch here,
 * its moves blocked on the log's full pipe) stops nothing: it said
 * "stopped by SIGTERM after reassigning N ...; run it again to move the
 * rest" with nothing left to move.  It now says it reassigned them, then
 * ends by the signal.
 */
START_TEST(t_reassign_signal_after_the_work)
{
	enum { M = 2000 };
	static float xm[M * 8];
	static char buf[1 << 20];
	char said[4096], want[128];
	size_t len = 0;
	int status, lines = 0;

	assign_rows(M, 21, xm);
	status = run_signalled(SIGTERM, 0, 6, "reassign.err", buf, sizeof(buf), &len, "registry",
			       "reassign", "--model", model2, "--db", db, "--batch", "10000", NULL);
	dir_file_read("reassign.err", said, sizeof(said));
	ck_assert_msg(WIFSIGNALED(status) && WTERMSIG(status) == SIGTERM, "status 0x%x: %s", status,
		      said);
	for (size_t i = 0; i < len; i++)
		lines += buf[i] == '\n';
	ck_assert_int_gt(lines, 200);
	snprintf(want, sizeof(want), "semid: reassigned %d of %d item ids to model m-two (",
		 lines - 1, M);
	ck_assert_msg(!strncmp(said, want, strlen(want)), "'%s' does not begin '%s'", said, want);
	ck_assert_int_eq(run("registry", "diff", "--model", model2, "--db", db, "-o", out, NULL),
			 CLI_EXIT_OK);
	{
		json_t *j = load_json(out);
		ck_assert_int_eq(json_integer_value(json_object_get(j, "changed")), 0);
		json_decref(j);
	}
}
END_TEST

/* The whole of file @path (malloc'ed, NUL-terminated). */
static char *read_all(const char *path)
{
	FILE *f = fopen(path, "r");
	char *buf = calloc(1, 1 << 16);
	size_t n;
	ck_assert_ptr_nonnull(f);
	n = fread(buf, 1, (1 << 16) - 1, f);
	buf[n] = '\0';
	fclose(f);
	return buf;
}

/* Assign the test's ids to the store, and the sid @id got into @sid. */
static void assign_all_sid_of(const char *id, char *sid, size_t cap)
{
	json_t *j;

	ck_assert_int_eq(run("registry", "assign", "--model", model, "--input", npy, "--ids", ids,
			     "--output", out, NULL),
			 CLI_EXIT_OK);
	ck_assert_int_eq(run("registry", "get", id, "--db", db, "-o", out, NULL), CLI_EXIT_OK);
	j = load_json(out);
	snprintf(sid, cap, "%s", json_string_value(json_object_get(j, "sid")));
	json_decref(j);
}

/* delete: by operands and by --ids, a line per id with the sid it held (or
 * an empty sid and 0 when not stored, as an id given twice is by its second
 * time), the counts on stderr, exit 3 when some were not stored; the ids
 * are gone and their slots free; bad usage
 * and a bad id are refused (exit 2) before the store is touched. */
START_TEST(t_delete)
{
	char msg[2048], sid3[64], line[128], idsf[400];
	char *text;
	json_t *j;

	assign_all_sid_of("item-3", sid3, sizeof(sid3));
	/* usage: no ids, both forms, an option it does not take, a bad id */
	ck_assert_int_eq(run_err(msg, sizeof(msg), "registry", "delete", "--db", db, NULL),
			 CLI_EXIT_INPUT);
	ASSERT_HAS(msg, "needs the IDs to delete");
	ck_assert_int_eq(run_err(msg, sizeof(msg), "registry", "delete", "--db", db, "--ids", ids,
				 "item-1", NULL),
			 CLI_EXIT_INPUT);
	ASSERT_HAS(msg, "not both");
	ck_assert_int_eq(run_err(msg, sizeof(msg), "registry", "delete", "--db", db, "--reassign",
				 "item-1", NULL),
			 CLI_EXIT_INPUT);
	ck_assert_int_eq(run_err(msg, sizeof(msg), "registry", "delete", "--db", db, "item-1",
				 "bad\x01id", NULL),
			 CLI_EXIT_INPUT);
	ASSERT_HAS(msg, "ID operand 2");
	ck_assert_int_eq(run("registry", "get", "item-1", "--db", db, "-o", out, NULL),
			 CLI_EXIT_OK); /* nothing deleted */
	/* a store that is not there is not made */
	snprintf(idsf, sizeof(idsf), "%s/none.db", dir);
	ck_assert_int_eq(run_err(msg, sizeof(msg), "registry", "delete", "--db", idsf, "a", NULL),
			 CLI_EXIT_INPUT);
	ck_assert_int_ne(access(idsf, F_OK), 0);
	/* by operands: all found (-o is a log appended to: a fresh one) */
	unlink(out);
	ck_assert_int_eq(run_err(msg, sizeof(msg), "registry", "delete", "--db", db, "item-3",
				 "item-4", "-o", out, NULL),
			 CLI_EXIT_OK);
	ASSERT_HAS(msg, "deleted 2 of 2 item ids");
	text = read_all(out);
	snprintf(line, sizeof(line), "item-3\t%s\t1\n", sid3);
	ck_assert_msg(!strncmp(text, line, strlen(line)), "'%s' does not start '%s'", text, line);
	ck_assert_int_eq(count_lines(out), 2);
	free(text);
	ck_assert_int_eq(run("registry", "get", "item-3", "--db", db, NULL), CLI_EXIT_INPUT);
	ck_assert_int_eq(run("registry", "sid", sid3, "--db", db, NULL), CLI_EXIT_INPUT);
	/* by file, some not stored: exit 3, and each says so */
	snprintf(idsf, sizeof(idsf), "%s/del.txt", dir);
	write_text(idsf, "item-5\nitem-3\nnobody\nitem-6\n");
	unlink(out);
	ck_assert_int_eq(run_err(msg, sizeof(msg), "registry", "delete", "--db", db, "--ids", idsf,
				 "--batch", "3", "-o", out, NULL),
			 CLI_REGISTRY_EXIT_CONFLICTS);
	ASSERT_HAS(msg, "deleted 2 of 4 item ids");
	ASSERT_HAS(msg, "2 not found");
	text = read_all(out);
	ASSERT_HAS(text, "item-3\t\t0\n");
	ASSERT_HAS(text, "nobody\t\t0\n");
	ASSERT_HAS(text, "item-6\t");
	free(text);
	ck_assert_int_eq(count_lines(out), 4);
	/* a user id is another space: not stored */
	ck_assert_int_eq(
	    run("registry", "delete", "--db", db, "--kind", "user", "item-1", "-o", out, NULL),
	    CLI_REGISTRY_EXIT_CONFLICTS);
	/* an id given twice, in an --ids file (whatever the batches) as among
	 * the operands, is deleted by its first and not stored by its second
	 * (exit 3), as the server answers it: the file was refused ("already
	 * on line 1", exit 2) where the operands were not */
	for (int form = 0; form < 3; form++) {
		const char *id = form == 0 ? "item-7" : form == 1 ? "item-8" : "item-9";
		char want[160];
		const char *sid;
		ck_assert_int_eq(run("registry", "get", id, "--db", db, "-o", out, NULL),
				 CLI_EXIT_OK);
		j = load_json(out);
		sid = json_string_value(json_object_get(j, "sid"));
		snprintf(want, sizeof(want), "%s\t%s\t1\n%s\t\t0\n", id, sid, id);
		json_decref(j);
		snprintf(line, sizeof(line), "%s\n%s\n", id, id);
		write_text(idsf, line);
		unlink(out);
		ck_assert_int_eq(form == 2 ? run_err(msg, sizeof(msg), "registry", "delete", "--db",
						     db, id, id, "-o", out, NULL)
					   : run_err(msg, sizeof(msg), "registry", "delete", "--db",
						     db, "--ids", idsf, "--batch", form ? "1" : "2",
						     "-o", out, NULL),
				 CLI_REGISTRY_EXIT_CONFLICTS);
		ASSERT_HAS(msg, "deleted 1 of 2 item ids");
		text = read_all(out);
		ck_assert_str_eq(text, want);
		free(text);
		ck_assert_int_eq(run("registry", "get", id, "--db", db, NULL), CLI_EXIT_INPUT);
	}
	/* the store counts what is left; assigning again fills the freed slots */
	ck_assert_int_eq(run("registry", "stats", "--db", db, "-o", out, NULL), CLI_EXIT_OK);
	j = load_json(out);
	ck_assert_int_eq(json_integer_value(json_object_get(j, "items")), N - 7);
	json_decref(j);
	ck_assert_int_eq(run("registry", "assign", "--model", model, "--input", npy, "--ids", ids,
			     "--output", out, NULL),
			 CLI_EXIT_OK);
	snprintf(line, sizeof(line), "item-3\t%s\t1\n", sid3);
	text = read_all(out);
	ASSERT_HAS(text, line); /* created again, in its old slot (the smallest free) */
	free(text);
}
END_TEST

/* diff over ids stored without their embeddings compared nothing, and
 * said "changed": 0, "changed_fraction": 0.0 with exit 0: a retrain that
 * moves 90% of the IDs read as one that moves none.  Now the fraction is
 * null, stderr says what was left out, and it exits 3; once the
 * embeddings are there, 0 again. */
START_TEST(t_diff_without_embeddings)
{
	char msg[2048], want[300];
	json_t *j;

	ck_assert_int_eq(run("registry", "assign", "--model", model, "--input", npy, "--ids", ids,
			     "--no-embeddings", "--output", out, NULL),
			 CLI_EXIT_OK);
	ck_assert_int_eq(run_err(msg, sizeof(msg), "registry", "diff", "--model", model2, "--db",
				 db, "-o", out, NULL),
			 CLI_REGISTRY_EXIT_CONFLICTS);
	snprintf(want, sizeof(want),
		 "semid: %d of %d item entries were not compared (%d without a stored "
		 "embedding, 0 of another width than the model's %d): \"changed\" counts only "
		 "the 0 compared\n",
		 N, N, N, 8);
	ck_assert_str_eq(msg, want);
	j = load_json(out);
	ck_assert_int_eq(json_integer_value(json_object_get(j, "compared")), 0);
	ck_assert_int_eq(json_integer_value(json_object_get(j, "no_embedding")), N);
	ck_assert(json_is_null(json_object_get(j, "changed_fraction")));
	json_decref(j);
	ck_assert_int_eq(run("registry", "assign", "--model", model, "--input", npy, "--ids", ids,
			     "--reassign", "--output", out, NULL),
			 CLI_EXIT_OK);
	ck_assert_int_eq(run("registry", "diff", "--model", model2, "--db", db, "-o", out, NULL),
			 CLI_EXIT_OK);
	j = load_json(out);
	ck_assert_int_eq(json_integer_value(json_object_get(j, "compared")), N);
	ck_assert(json_is_real(json_object_get(j, "changed_fraction")));
	json_decref(j);
}
END_TEST

/* list stopped at --limit (100 by default) without a word: 100 of 200
 * entries read as the whole store.  Now stderr says more follow, and only
 * when more do (not at a limit of exactly the count). */
START_TEST(t_list_says_when_more_follow)
{
	char msg[1024], sid[64];
	json_t *j;
	static const char note[] = "semid: the first %d entries listed; more follow (raise "
				   "--limit, or export them all: semid registry export)\n";
	char want[300];

	assign_all_sid_of("item-1", sid, sizeof(sid));
	ck_assert_int_eq(run_err(msg, sizeof(msg), "registry", "list", "--db", db, "-o", out, NULL),
			 CLI_EXIT_OK);
	snprintf(want, sizeof(want), note, 100);
	ck_assert_str_eq(msg, want);
	j = load_json(out);
	ck_assert_int_eq(json_array_size(j), 100);
	json_decref(j);
	ck_assert_int_eq(
	    run_err(msg, sizeof(msg), "registry", "list", "--db", db, "-n", "199", "-o", out, NULL),
	    CLI_EXIT_OK);
	snprintf(want, sizeof(want), note, 199);
	ck_assert_str_eq(msg, want);
	for (int n = N; n <= N + 1; n++) {
		char lim[16];
		snprintf(lim, sizeof(lim), "%d", n);
		ck_assert_int_eq(run_err(msg, sizeof(msg), "registry", "list", "--db", db, "-n",
					 lim, "-o", out, NULL),
				 CLI_EXIT_OK);
		ck_assert_str_eq(msg, "");
		j = load_json(out);
		ck_assert_int_eq(json_array_size(j), N);
		json_decref(j);
	}
}
END_TEST

/* An entry that cannot be read: get says so and exits 2; delete erases
 * it all the same, its line with an empty sid and 1 (it failed the run, so
 * the id stayed until a repair by hand). */
START_TEST(t_delete_damaged)
{
	char msg[2048], sql[200], log[400], sid[64];
	char *text;
	sqlite3 *h;

	assign_all_sid_of("item-2", sid, sizeof(sid));
	ck_assert_int_eq(sqlite3_open(db, &h), SQLITE_OK);
	snprintf(sql, sizeof(sql),
		 "UPDATE semid_assignment SET codes = x'01' WHERE kind = %d AND id = 'item-2'",
		 (int)SID_TOWER_ITEM);
	ck_assert_int_eq(sqlite3_exec(h, sql, NULL, NULL, NULL), SQLITE_OK);
	ck_assert_int_eq(sqlite3_changes(h), 1);
	sqlite3_close(h);
	ck_assert_int_eq(run_err(msg, sizeof(msg), "registry", "get", "item-2", "--db", db, NULL),
			 CLI_EXIT_INPUT);
	ASSERT_HAS(msg, "(id \"item-2\") cannot be read");
	snprintf(log, sizeof(log), "%s/deleted.tsv", dir);
	ck_assert_int_eq(run("registry", "delete", "--db", db, "item-2", "-o", log, NULL),
			 CLI_EXIT_OK);
	text = read_all(log);
	ck_assert_str_eq(text, "item-2\t\t1\n");
	free(text);
	ck_assert_int_eq(run_err(msg, sizeof(msg), "registry", "get", "item-2", "--db", db, NULL),
			 CLI_EXIT_INPUT);
	ASSERT_HAS(msg, "not found");
}
END_TEST

/* The finding of @id (NULL: the one with a null id) in check's report. */
static json_t *finding_named(json_t *report, const char *id)
{
	json_t *f;
	size_t i;

	json_array_foreach(json_object_get(report, "findings"), i, f)
	{
		json_t *v = json_object_get(f, "id");
		if (id ? json_is_string(v) && !strcmp(json_string_value(v), id) : json_is_null(v))
			return f;
	}
	ck_abort_msg("no finding of id %s", id ? id : "null");
	return NULL;
}

/* The count of @problem in check's report's "found". */
static json_int_t found_of(json_t *report, const char *problem)
{
	return json_integer_value(json_object_get(json_object_get(report, "found"), problem));
}

/* `registry check` of the test's store, which finds @n unreadable entries
 * (CLI_REGISTRY_EXIT_CONFLICTS): its report. */
static json_t *check_finds_unreadable(int n)
{
	json_t *j;

	ck_assert_int_eq(run("registry", "check", "--db", db, "-o", out, NULL),
			 CLI_REGISTRY_EXIT_CONFLICTS);
	j = load_json(out);
	ck_assert_int_eq(found_of(j, "unreadable"), n);
	return j;
}

/* A model_version import refuses (a tab, bytes that are not UTF-8: a hand
 * edit, an older bug) is a damaged entry, as a damaged id or codes are:
 * check passed both (exit 0), a TSV export of them succeeded with a line
 * of 8 fields that import then refused (exit 2), and get and the JSON
 * export failed as "out of memory".  Now check lists both as unreadable,
 * export stops at the first naming it, get names it, and delete by id
 * erases both. */
START_TEST(t_check_damaged_model_version)
{
	char msg[2048], sid[64], tsv[400];
	json_t *j;

	assign_all_sid_of("item-2", sid, sizeof(sid));
	db_sql(db, "UPDATE semid_assignment SET model_version = 'v' || char(9) || '1' WHERE id = "
		   "'item-2';"
		   "UPDATE semid_assignment SET model_version = CAST(x'76ff' AS TEXT) WHERE id = "
		   "'item-3'");
	j = check_finds_unreadable(2);
	ck_assert_str_eq(json_string_value(json_object_get(finding_named(j, "item-2"), "problem")),
			 "unreadable");
	ck_assert_str_eq(json_string_value(json_object_get(finding_named(j, "item-3"), "problem")),
			 "unreadable");
	ASSERT_HAS(json_string_value(json_object_get(finding_named(j, "item-3"), "message")),
		   "its model_version is damaged (model_version is not valid UTF-8)");
	json_decref(j);
	snprintf(tsv, sizeof(tsv), "%s/damaged.tsv", dir);
	ck_assert_int_eq(
	    run_err(msg, sizeof(msg), "registry", "export", "--db", db, "-o", tsv, NULL),
	    CLI_EXIT_INPUT);
	/* (item-2's or item-3's, whichever comes first in sid order) */
	ASSERT_HAS(msg, "cannot be exported: its model_version is damaged (model_version ");
	ck_assert_int_ne(access(tsv, F_OK), 0);
	ck_assert_int_eq(run_err(msg, sizeof(msg), "registry", "export", "--db", db, "--format",
				 "jsonl", "-o", tsv, NULL),
			 CLI_EXIT_INPUT);
	ASSERT_HAS(msg, "its model_version is damaged");
	ck_assert_int_eq(run_err(msg, sizeof(msg), "registry", "get", "item-3", "--db", db, NULL),
			 CLI_EXIT_INPUT);
	ASSERT_HAS(msg, "the stored entry of id item-3 cannot be written as JSON");
	/* list, as get: the same message and status */
	ck_assert_int_eq(run_err(msg, sizeof(msg), "registry", "list", "--db", db, NULL),
			 CLI_EXIT_INPUT);
	ASSERT_HAS(msg, "the stored entry of id item-3 cannot be written as JSON");
	ck_assert_int_eq(run("registry", "delete", "--db", db, "item-2", "item-3", "-o", tsv, NULL),
			 CLI_EXIT_OK);
	ck_assert_int_eq(run("registry", "check", "--db", db, "-o", out, NULL), CLI_EXIT_OK);
	ck_assert_int_eq(run("registry", "export", "--db", db, "-o", out, NULL), CLI_EXIT_OK);
}
END_TEST

/* An embedding with a value that is not finite (stored by hand: assign and
 * import refuse one) was exported as base64 with exit 0, and import then
 * refused the line (exit 2): export --embeddings now stops at it, naming
 * the id, as it stops at any damaged entry; without --embeddings it is not
 * written, and the export imports. */
START_TEST(t_export_nonfinite_embedding)
{
	char msg[2048], sid[64], tsv[400], db2[400];

	assign_all_sid_of("item-2", sid, sizeof(sid));
	/* 0x7fc00000 little-endian: a NaN as the first value */
	db_sql(db, "UPDATE semid_embedding SET emb = CAST(x'0000c07f' || substr(emb, 5) AS BLOB) "
		   "WHERE rid = "
		   "(SELECT rid FROM semid_assignment WHERE id = 'item-2')");
	snprintf(tsv, sizeof(tsv), "%s/nan.tsv", dir);
	ck_assert_int_eq(run_err(msg, sizeof(msg), "registry", "export", "--embeddings", "--db", db,
				 "-o", tsv, NULL),
			 CLI_EXIT_INPUT);
	ASSERT_HAS(msg, "the stored embedding of id \"item-2\" cannot be exported: value 0 is not "
			"finite");
	ck_assert_int_ne(access(tsv, F_OK), 0);
	ck_assert_int_eq(run("registry", "export", "--db", db, "-o", tsv, NULL), CLI_EXIT_OK);
	snprintf(db2, sizeof(db2), "%s/nan2.db", dir);
	ck_assert_int_eq(run("registry", "import", "--db", db2, tsv, NULL), CLI_EXIT_OK);
}
END_TEST

/* A time stored out of export's range (by hand: -1 ms, the year 10000)
 * was exported as "1970-01-01T00:00:00.-01Z" or "10000-01-01T...", exit 0,
 * lines import refused, and check found nothing: now check lists both and
 * export stops at the first, naming it; once they are deleted it exports
 * and imports. */
START_TEST(t_export_time_out_of_range)
{
	char msg[2048], sid[64], tsv[400], db2[400];
	json_t *j;

	assign_all_sid_of("item-2", sid, sizeof(sid));
	db_sql(db, "UPDATE semid_assignment SET created_ms = -1 WHERE id = 'item-2';"
		   "UPDATE semid_assignment SET updated_ms = 253402300800000 WHERE id = 'item-3'");
	j = check_finds_unreadable(2);
	ASSERT_HAS(json_string_value(json_object_get(finding_named(j, "item-2"), "message")),
		   "its created_ms (-1) or updated_ms (");
	ASSERT_HAS(json_string_value(json_object_get(finding_named(j, "item-3"), "message")),
		   "updated_ms (253402300800000) is not a time from 1970 to 9999");
	json_decref(j);
	snprintf(tsv, sizeof(tsv), "%s/times.tsv", dir);
	ck_assert_int_eq(run_err(msg, sizeof(msg), "registry", "export", "--db", db, "--format",
				 "jsonl", "-o", tsv, NULL),
			 CLI_EXIT_INPUT);
	ASSERT_HAS(msg, "cannot be exported: its ");
	ASSERT_HAS(msg, "is not a time from 1970 to 9999");
	ck_assert_int_ne(access(tsv, F_OK), 0);
	ck_assert_int_eq(run("registry", "delete", "--db", db, "item-2", "item-3", "-o", out, NULL),
			 CLI_EXIT_OK);
	ck_assert_int_eq(run("registry", "export", "--db", db, "-o", tsv, NULL), CLI_EXIT_OK);
	snprintf(db2, sizeof(db2), "%s/times2.db", dir);
	ck_assert_int_eq(run("registry", "import", "--db", db2, tsv, NULL), CLI_EXIT_OK);
}
END_TEST

/* check: a clean store's report (exit 0), then one with an entry whose codes
 * are damaged, one whose id is (named by its row), and an embedding of the
 * wrong size: each listed with its problem (exit 3), --limit bounding the
 * list but not the counts. */
START_TEST(t_check)
{
	char msg[2048], sql[300], log[400];
	char *text;
	json_t *j, *f;
	sqlite3 *h;

	assign_all_sid_of("item-2", sql, sizeof(sql));
	ck_assert_int_eq(run("registry", "check", "--db", db, "-o", out, NULL), CLI_EXIT_OK);
	j = load_json(out);
	ck_assert_str_eq(json_string_value(json_object_get(j, "kind")), "all");
	ck_assert_int_eq(json_integer_value(json_object_get(j, "entries")), N);
	ck_assert_int_eq(json_integer_value(json_object_get(j, "problems")), 0);
	ck_assert(json_is_true(json_object_get(j, "store_checked")));
	ck_assert_str_eq(json_string_value(json_object_get(j, "store_check")),
			 "PRAGMA integrity_check");
	ck_assert_int_eq(json_array_size(json_object_get(j, "findings")), 0);
	json_decref(j);

	ck_assert_int_eq(sqlite3_open(db, &h), SQLITE_OK);
	snprintf(sql, sizeof(sql),
		 "UPDATE semid_assignment SET codes = x'01' WHERE id = 'item-2';"
		 "UPDATE semid_assignment SET id = x'ff41' WHERE id = 'item-3';"
		 "UPDATE semid_embedding SET emb = x'00' WHERE rid = (SELECT rid FROM "
		 "semid_assignment WHERE id = 'item-4')");
	ck_assert_int_eq(sqlite3_exec(h, sql, NULL, NULL, NULL), SQLITE_OK);
	sqlite3_close(h);
	ck_assert_int_eq(run_err(msg, sizeof(msg), "registry", "stats", "--db", db, NULL),
			 CLI_EXIT_INPUT);
	ASSERT_HAS(msg, "row 3 cannot be read: its codes are damaged (semid registry check names "
			"its id)");
	ck_assert_int_eq(run("registry", "check", "--db", db, "-o", out, "--limit", "2", NULL),
			 CLI_REGISTRY_EXIT_CONFLICTS);
	j = load_json(out);
	ck_assert_int_eq(json_integer_value(json_object_get(j, "entries")), N);
	ck_assert_int_eq(json_integer_value(json_object_get(j, "problems")), 3);
	ck_assert_int_eq(found_of(j, "unreadable"), 2);
	ck_assert_int_eq(found_of(j, "embedding"), 1);
	ck_assert_int_eq(json_array_size(json_object_get(j, "findings")), 2);
	ck_assert_int_eq(json_integer_value(json_object_get(j, "findings_left_out")), 1);
	json_decref(j);

	ck_assert_int_eq(run("registry", "check", "--db", db, "-o", out, NULL),
			 CLI_REGISTRY_EXIT_CONFLICTS);
	j = load_json(out);
	ck_assert_int_eq(json_array_size(json_object_get(j, "findings")), 3);
	f = finding_named(j, "item-2");
	ck_assert_str_eq(json_string_value(json_object_get(f, "problem")), "unreadable");
	ck_assert_str_eq(json_string_value(json_object_get(f, "kind")), "item");
	ck_assert(json_is_integer(json_object_get(f, "row")));
	ASSERT_HAS(json_string_value(json_object_get(f, "message")), "cannot be read");
	f = finding_named(j, NULL);
	ck_assert_str_eq(json_string_value(json_object_get(f, "problem")), "unreadable");
	ck_assert_int_eq(json_integer_value(json_object_get(f, "row")), 4); /* item-3's */
	ASSERT_HAS(json_string_value(json_object_get(f, "message")), "its id is damaged");
	f = finding_named(j, "item-4");
	ck_assert_str_eq(json_string_value(json_object_get(f, "problem")), "embedding");
	json_decref(j);

	/* the one no id names goes by its row, the other by its id: clean */
	snprintf(log, sizeof(log), "%s/rows.tsv", dir);
	ck_assert_int_eq(run("registry", "delete", "--db", db, "--rows", "4", "-o", log, NULL),
			 CLI_EXIT_OK);
	text = read_all(log);
	ck_assert_str_eq(text, "4\t1\n");
	free(text);
	ck_assert_int_eq(run("registry", "delete", "--db", db, "--rows", "4", "-o", log, NULL),
			 CLI_REGISTRY_EXIT_CONFLICTS); /* not there any more */
	ck_assert_int_eq(run("registry", "delete", "--db", db, "item-2", "-o", log, NULL),
			 CLI_EXIT_OK);
	ck_assert_int_eq(
	    run_err(msg, sizeof(msg), "registry", "delete", "--db", db, "--rows", "x4", NULL),
	    CLI_EXIT_INPUT);
	ASSERT_HAS(msg, "row operand 1: \"x4\" is not a row number");
	ck_assert_int_eq(run("registry", "check", "--db", db, "-o", out, NULL),
			 CLI_REGISTRY_EXIT_CONFLICTS);
	j = load_json(out);
	ck_assert_int_eq(json_integer_value(json_object_get(j, "problems")), 1); /* item-4's */
	ck_assert_int_eq(json_integer_value(json_object_get(j, "entries")), N - 2);
	json_decref(j);

	/* one kind: no user is stored, and the file is sound */
	ck_assert_int_eq(run("registry", "check", "--db", db, "--kind", "user", "-o", out, NULL),
			 CLI_EXIT_OK);
	ck_assert_int_eq(
	    run_err(msg, sizeof(msg), "registry", "stats", "--db", db, "--kind", "all", NULL),
	    CLI_EXIT_INPUT);
	ASSERT_HAS(msg, "--kind all is for export and check only");
	/* a bad kind is told the values its command takes: stats was told
	 * "item, user or all", then that all was not for it */
	ck_assert_int_eq(
	    run_err(msg, sizeof(msg), "registry", "stats", "--db", db, "--kind", "users", NULL),
	    CLI_EXIT_INPUT);
	ASSERT_HAS(msg, "--kind must be item or user, not users");
	ck_assert_int_eq(
	    run_err(msg, sizeof(msg), "registry", "check", "--db", db, "--kind", "users", NULL),
	    CLI_EXIT_INPUT);
	ASSERT_HAS(msg, "--kind must be item, user or all, not users");
	ck_assert_int_eq(
	    run_err(msg, sizeof(msg), "registry", "check", "--db", db, "--batch", "3", NULL),
	    CLI_EXIT_INPUT);
	ASSERT_HAS(msg, "--batch is not an option of check");
}
END_TEST

/* delete -o FILE when a later batch fails: the lines of the batches that
 * committed stay in the file (it was published only at the end, so the
 * record of what the run erased went with the failure, and a second run
 * said "not found" for them); an earlier file is appended to. */
START_TEST(t_delete_log_kept_on_failure)
{
	char msg[2048], sid1[64], line[160], idsf[400], sql[200];
	char *text;
	sqlite3 *h;

	assign_all_sid_of("item-1", sid1, sizeof(sid1));
	/* item-2's row will not go: the second batch fails (an unreadable row
	 * did until it was erased all the same) */
	ck_assert_int_eq(sqlite3_open(db, &h), SQLITE_OK);
	snprintf(sql, sizeof(sql),
		 "CREATE TRIGGER keep BEFORE DELETE ON semid_assignment WHEN old.kind = %d AND "
		 "old.id = 'item-2' BEGIN SELECT RAISE(ABORT, 'kept by a trigger'); END",
		 (int)SID_TOWER_ITEM);
	ck_assert_int_eq(sqlite3_exec(h, sql, NULL, NULL, NULL), SQLITE_OK);
	sqlite3_close(h);
	snprintf(idsf, sizeof(idsf), "%s/del.txt", dir);
	write_text(idsf, "item-1\nitem-2\nitem-3\n");
	write_text(out, "earlier\n");
	ck_assert_int_ne(run_err(msg, sizeof(msg), "registry", "delete", "--db", db, "--ids", idsf,
				 "--batch", "1", "-o", out, NULL),
			 CLI_EXIT_OK);
	ASSERT_HAS(msg, "kept by a trigger");
	ck_assert_int_eq(run("registry", "get", "item-1", "--db", db, NULL), CLI_EXIT_INPUT);
	text = read_all(out);
	snprintf(line, sizeof(line), "earlier\nitem-1\t%s\t1\n", sid1);
	ck_assert_str_eq(text, line);
	free(text);
}
END_TEST

/* A log that cannot take a committed batch's lines (stdout on a full
 * device) was the only record of the sids erased, and they were lost with
 * exit 1: they now go to stderr, with a message saying the ids were
 * deleted all the same. */
START_TEST(t_delete_lines_to_stderr_when_the_log_fails)
{
	char msg[4096], sid1[64], sid2[64], line[200];

	assign_all_sid_of("item-1", sid1, sizeof(sid1));
	assign_all_sid_of("item-2", sid2, sizeof(sid2));
	ck_assert_int_eq(run_stdout_full(msg, sizeof(msg), "registry", "delete", "--db", db,
					 "item-1", "nope", "item-2", NULL),
			 CLI_EXIT_IO);
	ck_assert_int_eq(run("registry", "get", "item-1", "--db", db, NULL), CLI_EXIT_INPUT);
	ASSERT_HAS(msg, "semid: stdout cannot be written; the lines of a committed batch (id, "
			"sid, deleted) follow:\n");
	snprintf(line, sizeof(line), "\nitem-1\t%s\t1\nnope\t\t0\nitem-2\t%s\t1\n", sid1, sid2);
	ASSERT_HAS(msg, line);
	ASSERT_HAS(msg,
		   "semid: stdout: write failed: No space left on device; the 3 ids of the "
		   "batch were deleted all the same: their lines were written to stderr above");
}
END_TEST

/* The same for delete --rows: its log on a full device failed with "write
 * failed" alone, as if nothing had been deleted.  (item-1's id damaged:
 * what delete --rows erases.) */
START_TEST(t_delete_rows_lines_to_stderr_when_the_log_fails)
{
	char msg[4096], sid1[64], row[32], lines[200];
	sqlite3 *h;
	sqlite3_stmt *st;

	assign_all_sid_of("item-1", sid1, sizeof(sid1));
	ck_assert_int_eq(sqlite3_open(db, &h), SQLITE_OK);
	ck_assert_int_eq(
	    sqlite3_prepare_v2(h, "SELECT rowid FROM semid_assignment WHERE id = 'item-1'", -1, &st,
			       NULL),
	    SQLITE_OK);
	ck_assert_int_eq(sqlite3_step(st), SQLITE_ROW);
	snprintf(row, sizeof(row), "%lld", (long long)sqlite3_column_int64(st, 0));
	sqlite3_finalize(st);
	sqlite3_close(h);
	db_sql(db, "UPDATE semid_assignment SET id = x'ff' || id WHERE id = 'item-1'");
	ck_assert_int_eq(run_stdout_full(msg, sizeof(msg), "registry", "delete", "--db", db,
					 "--rows", row, "999999", NULL),
			 CLI_EXIT_IO);
	ck_assert_int_eq(items_in(db), N - 1);
	snprintf(lines, sizeof(lines),
		 "semid: stdout cannot be written; the lines of a committed batch (row, deleted) "
		 "follow:\n%s\t1\n999999\t0\n",
		 row);
	ASSERT_HAS(msg, lines);
	ASSERT_HAS(msg,
		   "semid: stdout: write failed: No space left on device; the 2 rows of the "
		   "batch were deleted all the same: their lines were written to stderr above");
}
END_TEST

/* delete --rows erased whatever entry held the row: a row check named
 * whose entry went since (deleted by another means) and whose rowid SQLite
 * gave to a new assignment lost that healthy entry.  An entry its id names
 * is left, its line ROW<TAB>0, stderr naming its row, kind, id and sid and
 * how to delete it by id; exit 3 as for a row not found; a damaged row
 * beside it still goes. */
START_TEST(t_delete_rows_leaves_healthy)
{
	char msg[4096], sid1[64], sid[64], want[512], log[400], *text;
	long long r1, r2;
	json_t *j;
	sqlite3 *h;
	sqlite3_stmt *st;

	assign_all_sid_of("item-1", sid1, sizeof(sid1));
	ck_assert_int_eq(sqlite3_open(db, &h), SQLITE_OK);
	ck_assert_int_eq(sqlite3_prepare_v2(h,
					    "SELECT (SELECT rowid FROM semid_assignment WHERE id = "
					    "'item-1'), (SELECT rowid FROM semid_assignment WHERE "
					    "id = 'item-2')",
					    -1, &st, NULL),
			 SQLITE_OK);
	ck_assert_int_eq(sqlite3_step(st), SQLITE_ROW);
	r1 = sqlite3_column_int64(st, 0);
	r2 = sqlite3_column_int64(st, 1);
	sqlite3_finalize(st);
	sqlite3_close(h);
	db_sql(db, "UPDATE semid_assignment SET id = x'ff' || id WHERE id = 'item-2'");
	snprintf(log, sizeof(log), "%s/rows.tsv", dir);
	snprintf(sid, sizeof(sid), "%lld", r1);
	snprintf(want, sizeof(want), "%lld", r2);
	ck_assert_int_eq(run_err(msg, sizeof(msg), "registry", "delete", "--db", db, "--rows", sid,
				 want, "-o", log, NULL),
			 CLI_REGISTRY_EXIT_CONFLICTS);
	text = read_all(log);
	snprintf(want, sizeof(want), "%lld\t0\n%lld\t1\n", r1, r2);
	ck_assert_str_eq(text, want);
	free(text);
	snprintf(want, sizeof(want),
		 "semid: row %lld holds the item entry of id \"item-1\" (sid %s), readable and "
		 "of a known kind, which its id names: left in place",
		 r1, sid1);
	ASSERT_HAS(msg, want);
	ASSERT_HAS(msg, "delete it by its id: semid registry delete --kind item ID\n");
	ASSERT_HAS(msg, "; 0 not found, 1 left in place (entries their ids name)\n");
	ASSERT_HAS(msg, "semid: deleted 1 of 2 rows from ");
	ck_assert_int_eq(items_in(db), N - 1);
	ck_assert_int_eq(run("registry", "get", "item-1", "--db", db, "-o", out, NULL),
			 CLI_EXIT_OK);
	j = load_json(out);
	ck_assert_str_eq(json_string_value(json_object_get(j, "sid")), sid1);
	json_decref(j);
}
END_TEST

/*
 * A delete stopped by SIGINT ends after the batch in flight and logs every
 * id it deleted: its log is a pipe the test stops reading after five lines,
 * and the signal comes while it blocks writing there, just after a commit
 * (it used to die there, at times with its last delete committed but never
 * logged, and said nothing).  The
 * ids of the log are exactly those gone from the store; a second run
 * appended to the same file deletes the rest, and the file then holds each
 * id once.
 */
START_TEST(t_delete_stopped)
{
	enum { M = 2000 };
	static float xm[M * 8];
	static char seen[M], buf[1 << 20];
	char ids2[320], log[320], line[512], said[1024];
	struct sid_registry *r;
	struct sid_reg_entry e;
	struct sid_error err;
	int status, logged = 0, stored = 0;
	size_t len = 0;
	FILE *f;

	assign_rows(M, 21, xm);
	snprintf(ids2, sizeof(ids2), "%s/ids2.txt", dir);
	status = run_signalled(SIGINT, 0, 5, "delete.err", buf, sizeof(buf), &len, "registry",
			       "delete", "--db", db, "--ids", ids2, "--batch", "1", NULL);
	ck_assert_msg(WIFSIGNALED(status) && WTERMSIG(status) == SIGINT,
		      "the delete was not stopped by the signal (status 0x%x)", status);
	dir_file_read("delete.err", said, sizeof(said));
	ASSERT_HAS(said, "semid: stopped by SIGINT after ");
	ASSERT_HAS(said, " of 2000 item ids (");
	ASSERT_HAS(said, " deleted); their lines are in stdout; run it again for the rest\n");
	snprintf(log, sizeof(log), "%s/deleted.tsv", dir);
	f = fopen(log, "w");
	ck_assert_int_eq(fwrite(buf, 1, len, f), len);
	fclose(f);
	ck_assert_int_eq(sid_registry_open(db, SID_REG_READONLY, &r, &err), 0);
	for (char *p = buf; *p;) { /* every line: an id deleted, gone from the store */
		char id[64], sid[64];
		int i, d;
		char *nl = strchr(p, '\n');
		ck_assert_ptr_nonnull(nl);
		*nl = '\0';
		ck_assert_int_eq(sscanf(p, "item-%d\t%63s\t%d", &i, sid, &d), 3);
		ck_assert_int_eq(d, 1);
		ck_assert_msg(!seen[i]++, "item-%d logged twice", i);
		snprintf(id, sizeof(id), "item-%d", i);
		ck_assert_int_eq(sid_registry_get(r, SID_TOWER_ITEM, id, &e, &err), SID_ENOTFOUND);
		logged++;
		p = nl + 1;
	}
	for (int i = 0; i < M; i++) { /* and nothing else is gone */
		char id[32];
		snprintf(id, sizeof(id), "item-%d", i);
		stored += sid_registry_get(r, SID_TOWER_ITEM, id, &e, &err) == 0;
	}
	sid_registry_close(r);
	ck_assert_int_ge(logged, 5);
	ck_assert_int_eq(logged + stored, M);
	ck_assert_int_gt(stored, 0);
	/* the rest, appended to the same log */
	ck_assert_int_eq(run("registry", "delete", "--db", db, "--ids", ids2, "-o", log, NULL),
			 CLI_REGISTRY_EXIT_CONFLICTS); /* those of the first run: not found */
	memset(seen, 0, sizeof(seen));
	f = fopen(log, "r");
	ck_assert_ptr_nonnull(f);
	logged = 0;
	while (fgets(line, sizeof(line), f)) {
		int i, d;
		char sid[64];
		if (sscanf(line, "item-%d\t%63s\t%d", &i, sid, &d) != 3)
			continue; /* "item-N\t\t0": not found in the second run */
		ck_assert_int_eq(d, 1);
		ck_assert_msg(!seen[i]++, "item-%d deleted twice", i);
		logged++;
	}
	fclose(f);
	ck_assert_int_eq(logged, M);
}
END_TEST

/*
 * An assign stopped by SIGTERM ends after the batch in flight: its stdout is
 * a pipe the test stops reading after five lines, and the signal comes while
 * it blocks writing there, after a commit.  It died there by the signal,
 * without a word, at times with a batch committed but its lines never
 * printed.  Now every row committed has its line, the store holds those ids
 * and no other, and it says which rows were committed.  The same command
 * then assigns the rest, the first ids keeping their IDs.
 */
START_TEST(t_assign_stopped)
{
	enum { M = 2000 };
	static float xm[M * 8];
	static char buf[1 << 20];
	char x2[320], ids2[320], db3[320], said[1024], want[256];
	struct sid_registry *r;
	struct sid_reg_entry e;
	struct sid_error err;
	int status, lines = 0, stored = 0;
	size_t len = 0;

	snprintf(x2, sizeof(x2), "%s/x2.npy", dir);
	snprintf(ids2, sizeof(ids2), "%s/ids2.txt", dir);
	snprintf(db3, sizeof(db3), "%s/stopped.db", dir);
	write_inputs(x2, ids2, M, 23, xm);
	status = run_signalled(SIGTERM, 0, 5, "assign.err", buf, sizeof(buf), &len, "registry",
			       "assign", "--model", model, "--input", x2, "--ids", ids2, "--db",
			       db3, "--batch", "1", NULL);
	ck_assert_msg(WIFSIGNALED(status) && WTERMSIG(status) == SIGTERM,
		      "the assign was not stopped by the signal (status 0x%x)", status);
	ck_assert_int_eq(sid_registry_open(db3, SID_REG_READONLY, &r, &err), 0);
	for (char *p = buf; *p; lines++) { /* line N: row N, committed with that sid */
		char id[64], sid[64], got[SID_REG_SID_MAX];
		int created;
		char *nl = strchr(p, '\n');
		ck_assert_ptr_nonnull(nl);
		*nl = '\0';
		ck_assert_int_eq(sscanf(p, "%63s\t%63s\t%d", id, sid, &created), 3);
		snprintf(want, sizeof(want), "item-%d", lines);
		ck_assert_str_eq(id, want);
		ck_assert_int_eq(created, 1);
		ck_assert_int_eq(sid_registry_get(r, SID_TOWER_ITEM, id, &e, &err), 0);
		sid_reg_sid_format(e.codes, e.L, e.suffix, got, sizeof(got));
		ck_assert_str_eq(got, sid);
		p = nl + 1;
	}
	for (int i = 0; i < M; i++) { /* and nothing else is stored */
		char id[32];
		snprintf(id, sizeof(id), "item-%d", i);
		stored += sid_registry_get(r, SID_TOWER_ITEM, id, &e, &err) == 0;
	}
	sid_registry_close(r);
	ck_assert_int_ge(lines, 5);
	ck_assert_int_lt(lines, M);
	ck_assert_int_eq(stored, lines);
	dir_file_read("assign.err", said, sizeof(said));
	snprintf(want, sizeof(want),
		 "semid: stopped by SIGTERM after rows 0..%d of %d were committed (%d created); "
		 "their lines are in stdout; their ids keep the IDs given: the same command "
		 "assigns the rest\n",
		 lines - 1, M, lines);
	ck_assert_str_eq(said, want);
	/* the rest: the first ids known, with the IDs printed */
	ck_assert_int_eq(run("registry", "assign", "--model", model, "--input", x2, "--ids", ids2,
			     "--db", db3, "--output", out, NULL),
			 CLI_EXIT_OK);
	{
		char line[256], *p = buf;
		FILE *f = fopen(out, "r");
		int n = 0;
		ck_assert_ptr_nonnull(f);
		while (fgets(line, sizeof(line), f)) {
			char *tab = strrchr(line, '\t');
			ck_assert_ptr_nonnull(tab);
			ck_assert_int_eq(tab[1], n < lines ? '0' : '1');
			if (n < lines) { /* same id and sid as the stopped run printed */
				ck_assert_int_eq(strncmp(line, p, (size_t)(tab - line)), 0);
				p += strlen(p) + 1;
			}
			n++;
		}
		fclose(f);
		ck_assert_int_eq(n, M);
	}
}
END_TEST

/* 1 once process @pid has the file at @path open (/proc/PID/fd). */
static int has_open(pid_t pid, const char *path)
{
	char fds[64], link[320], to[400];
	struct dirent *f;
	DIR *d;
	ssize_t n;
	int found = 0;

	snprintf(fds, sizeof(fds), "/proc/%d/fd", (int)pid);
	if (!(d = opendir(fds)))
		return 0;
	while (!found && (f = readdir(d))) {
		snprintf(link, sizeof(link), "%s/%s", fds, f->d_name);
		n = readlink(link, to, sizeof(to) - 1);
		found = n > 0 && (size_t)n == strlen(path) && !memcmp(to, path, (size_t)n);
	}
	closedir(d);
	return found;
}

/* A process that holds the write lock of the SQLite store at @path (no
 * connection of this one is carried over a fork) until lock_give; *@go
 * lets it go. */
static pid_t lock_take(const char *path, int *go)
{
	int held[2], let[2];
	char c;
	pid_t pid;

	ck_assert_int_eq(pipe(held), 0);
	ck_assert_int_eq(pipe(let), 0);
	pid = fork();
	ck_assert_int_ge(pid, 0);
	if (pid == 0) {
		sqlite3 *h;
		if (sqlite3_open(path, &h) != SQLITE_OK ||
		    sqlite3_exec(h, "BEGIN IMMEDIATE", NULL, NULL, NULL) != SQLITE_OK ||
		    write(held[1], "k", 1) != 1 || read(let[0], &c, 1) != 1)
			_exit(1);
		sqlite3_exec(h, "ROLLBACK", NULL, NULL, NULL);
		sqlite3_close(h);
		_exit(0);
	}
	close(held[1]);
	close(let[0]);
	ck_assert_int_eq(read(held[0], &c, 1), 1);
	close(held[0]);
	*go = let[1];
	return pid;
}

static void lock_give(pid_t pid, int go)
{
	int status;

	ck_assert_int_eq(write(go, "k", 1), 1);
	close(go);
	ck_assert_int_eq(waitpid(pid, &status, 0), pid);
	ck_assert_int_eq(status, 0);
}

/*
 * assign, delete, reassign and import stopped by SIGTERM before their first
 * batch (while --ids is read from a FIFO, or the store opens) died by the signal
 * without a word, where the help promises a line saying what was committed.
 * Now they say "before any batch: nothing committed" and end by the signal;
 * an assign stopped before its new store was opened leaves none, and the
 * same command then assigns every row.
 */
START_TEST(t_stopped_before_any_batch)
{
	static const char said[] =
	    "semid: stopped by SIGTERM before any batch: nothing committed\n";
	const char *cmds[] = {"assign", "delete"};
	char fifo[320], db3[320], out3[320], msg[2048], text[8192];
	struct stat st;
	pid_t pid, locker;
	int status, efd, wfd, unread, go;
	FILE *f;
	size_t len;

	ck_assert_int_eq(run("registry", "assign", "--model", model, "--input", npy, "--ids", ids,
			     "--output", out, NULL),
			 CLI_EXIT_OK);
	signal(SIGTERM, SIG_DFL); /* as a process starts, whatever the run left */
	snprintf(fifo, sizeof(fifo), "%s/ids.fifo", dir);
	snprintf(db3, sizeof(db3), "%s/new.db", dir);
	snprintf(out3, sizeof(out3), "%s/new.tsv", dir);
	ck_assert_int_eq(mkfifo(fifo, 0600), 0);
	f = fopen(ids, "r");
	ck_assert_ptr_nonnull(f);
	len = fread(text, 1, sizeof(text), f);
	fclose(f);
	signal(SIGPIPE, SIG_IGN); /* a child that died reads no more */
	for (int c = 0; c < 2; c++) {
		/* the signal once the child has read the first line */
		if (c == 0)
			pid = spawn_cli(0, &efd, "registry", "assign", "--model", model, "--input",
					npy, "--ids", fifo, "--db", db3, "-o", out3, NULL);
		else
			pid = spawn_cli(0, &efd, "registry", "delete", "--ids", fifo, "--db", db,
					NULL);
		wfd = open(fifo, O_WRONLY);
		ck_assert_int_ge(wfd, 0);
		ck_assert_int_eq(write(wfd, text, 7), 7); /* "item-0\n" */
		for (int i = 0; i < 2000 && ioctl(wfd, FIONREAD, &unread) == 0 && unread; i++)
			usleep(1000);
		kill(pid, SIGTERM);
		ck_assert_int_eq(write(wfd, text + 7, len - 7) >= 0 || errno == EPIPE, 1);
		close(wfd);
		ck_assert_int_eq(waitpid(pid, &status, 0), pid);
		stderr_read(efd, msg, sizeof(msg));
		ck_assert_msg(WIFSIGNALED(status) && WTERMSIG(status) == SIGTERM,
			      "%s: status 0x%x, stderr '%s'", cmds[c], status, msg);
		ck_assert_str_eq(msg, said);
	}
	ck_assert_int_ne(stat(db3, &st), 0); /* no store was created */
	ck_assert_int_ne(stat(out3, &st), 0);
	ck_assert_uint_eq(items_in(db), N); /* nothing deleted */
	ck_assert_int_eq(run("registry", "assign", "--model", model, "--input", npy, "--ids", ids,
			     "--db", db3, "-o", out3, NULL),
			 CLI_EXIT_OK);
	ck_assert_uint_eq(items_in(db3), N);

	/* reassign and import: the signal while the store opens, its write
	 * lock held by another process */
	for (int c = 0; c < 2; c++) {
		locker = lock_take(db, &go);
		if (c == 0)
			pid = spawn_cli(0, &efd, "registry", "reassign", "--model", model2, "--db",
					db, "-o", out3, NULL);
		else /* (no export, but never read: the stop comes first) */
			pid = spawn_cli(0, &efd, "registry", "import", "--db", db, out3, NULL);
		for (int i = 0; i < 2000 && !has_open(pid, db); i++)
			usleep(1000);
		kill(pid, SIGTERM);
		lock_give(locker, go);
		ck_assert_int_eq(waitpid(pid, &status, 0), pid);
		stderr_read(efd, msg, sizeof(msg));
		ck_assert_msg(WIFSIGNALED(status) && WTERMSIG(status) == SIGTERM,
			      "%s: status 0x%x, stderr '%s'", c ? "import" : "reassign", status,
			      msg);
		ck_assert_str_eq(msg, said);
	}
	ck_assert_int_eq(count_lines(out3), N); /* the assign's lines: no move log begun */
}
END_TEST

/* The entries of the store open on @h, -1 while it cannot tell (no schema
 * yet). */
static int stored_items(sqlite3 *h)
{
	sqlite3_stmt *st = NULL;
	int n = -1;

	if (sqlite3_prepare_v2(h, "SELECT count(*) FROM semid_assignment", -1, &st, NULL) ==
		SQLITE_OK &&
	    sqlite3_step(st) == SQLITE_ROW)
		n = sqlite3_column_int(st, 0);
	sqlite3_finalize(st);
	return n;
}

/*
 * An assign to -o FILE stopped by a signal wrote no FILE, although the rows
 * it had committed stay in the store: the record of the IDs it gave was
 * lost.  FILE now holds the line of every row committed, whole, renamed
 * into place as a complete file is (the old one replaced, no temp file
 * left), and the message says which rows.  The test takes the store's write
 * lock once five rows are in, so that the SIGTERM comes with a batch
 * waiting on it: that batch commits once the lock goes, and no other.
 * (_i 1) A second SIGTERM while that batch waits ends it at once: FILE is
 * left as it was, and the message, which said only that "the lines of the
 * last batch may be missing", says so.
 */
START_TEST(t_assign_stopped_file)
{
	enum { M = 100000 }; /* more than it commits before the test looks */
	static float xm[M * 8];
	char x2[320], ids2[320], db3[320], outf[320], errf[320], said[1024], want[1024];
	char line[256];
	struct sid_registry *r;
	struct sid_reg_entry e;
	struct sid_error err;
	int status, lines = 0, stored = -1;
	sqlite3 *h = NULL;
	pid_t pid;
	FILE *f;

	snprintf(x2, sizeof(x2), "%s/x2.npy", dir);
	snprintf(ids2, sizeof(ids2), "%s/ids2.txt", dir);
	snprintf(db3, sizeof(db3), "%s/stopped-file.db", dir);
	snprintf(outf, sizeof(outf), "%s/assigned.tsv", dir);
	snprintf(errf, sizeof(errf), "%s/assign-file.err", dir);
	write_inputs(x2, ids2, M, 23, xm);
	write_text(outf, "a previous run's lines\n");
	pid = fork();
	ck_assert_int_ge(pid, 0);
	if (pid == 0) {
		int fd = open(errf, O_WRONLY | O_CREAT | O_TRUNC, 0600);
		dup2(fd, 2);
		signal(SIGTERM, SIG_DFL); /* as a shell starts it */
		_exit(run("registry", "assign", "--model", model, "--input", x2, "--ids", ids2,
			  "--db", db3, "--batch", "1", "-o", outf, NULL));
	}
	for (int i = 0; i < 30000 && stored < 5; i++) { /* five rows in */
		if (!h && sqlite3_open_v2(db3, &h, SQLITE_OPEN_READWRITE, NULL) != SQLITE_OK) {
			sqlite3_close(h);
			h = NULL;
		}
		if (h) {
			sqlite3_busy_timeout(h, 10000);
			stored = stored_items(h);
		}
		if (stored < 5)
			usleep(1000);
	}
	ck_assert_int_ge(stored, 5);
	ck_assert_int_eq(sqlite3_exec(h, "BEGIN IMMEDIATE", NULL, NULL, NULL), SQLITE_OK);
	stored = stored_items(h);
	if (_i == 1) /* the next batch waits on the lock (SQLite's sleep) */
		wait_in_syscall(pid, SYS_clock_nanosleep);
	kill(pid, SIGTERM);
	if (_i == 1) {
		usleep(100 * 1000);
		ck_assert_int_eq(waitpid(pid, &status, WNOHANG), 0); /* the first: it waits */
		kill(pid, SIGTERM);
		ck_assert_int_eq(waitpid(pid, &status, 0), pid);
	}
	ck_assert_int_eq(sqlite3_exec(h, "ROLLBACK", NULL, NULL, NULL), SQLITE_OK);
	sqlite3_close(h);
	if (_i == 0)
		ck_assert_int_eq(waitpid(pid, &status, 0), pid);
	dir_file_read("assign-file.err", said, sizeof(said));
	ck_assert_msg(WIFSIGNALED(status) && WTERMSIG(status) == SIGTERM, "status 0x%x: %s", status,
		      said);
	if (_i == 1) {
		snprintf(want, sizeof(want),
			 "semid: stopped at once by a second signal; what was committed stays "
			 "committed, but %s was not written (it gets its name only when "
			 "complete): the same command prints the IDs of the rows committed, and "
			 "assigns the rest\n",
			 outf);
		ck_assert_str_eq(said, want);
		dir_file_read("assigned.tsv", said, sizeof(said));
		ck_assert_str_eq(said, "a previous run's lines\n");
		h = NULL;
		ck_assert_int_eq(sqlite3_open_v2(db3, &h, SQLITE_OPEN_READONLY, NULL), SQLITE_OK);
		ck_assert_int_eq(stored_items(h), stored); /* the batch that waited: not in */
		sqlite3_close(h);
		return;
	}

	ck_assert_int_eq(sid_registry_open(db3, SID_REG_READONLY, &r, &err), 0);
	f = fopen(outf, "r");
	ck_assert_ptr_nonnull(f);
	while (fgets(line, sizeof(line), f)) { /* line N: row N, with the sid stored */
		char id[64], sid[64], got[SID_REG_SID_MAX];
		int created;
		ck_assert_int_eq(sscanf(line, "%63s\t%63s\t%d", id, sid, &created), 3);
		snprintf(want, sizeof(want), "item-%d", lines++);
		ck_assert_str_eq(id, want);
		ck_assert_int_eq(created, 1);
		ck_assert_int_eq(sid_registry_get(r, SID_TOWER_ITEM, id, &e, &err), 0);
		sid_reg_sid_format(e.codes, e.L, e.suffix, got, sizeof(got));
		ck_assert_str_eq(got, sid);
	}
	fclose(f);
	sid_registry_close(r);
	/* every row stored has its line: the five or more in when the lock was
	 * taken, and at most the one batch that waited on it */
	ck_assert_int_ge(lines, stored);
	ck_assert_int_le(lines, stored + 1);
	h = NULL;
	ck_assert_int_eq(sqlite3_open_v2(db3, &h, SQLITE_OPEN_READONLY, NULL), SQLITE_OK);
	ck_assert_int_eq(stored_items(h), lines);
	sqlite3_close(h);
	snprintf(want, sizeof(want),
		 "semid: stopped by SIGTERM after rows 0..%d of %d were committed (%d created); "
		 "their lines are in %s; their ids keep the IDs given: the same command assigns "
		 "the rest\n",
		 lines - 1, M, lines, outf);
	ck_assert_str_eq(said, want);
	{ /* no temp file beside it */
		DIR *d = opendir(dir);
		struct dirent *de;
		ck_assert_ptr_nonnull(d);
		while ((de = readdir(d)))
			ck_assert_msg(strncmp(de->d_name, "assigned.tsv.", 13), "left: %s",
				      de->d_name);
		closedir(d);
	}
}
END_TEST

/*
 * An import stopped by SIGTERM while it waits for more lines on stdin (a
 * pipe the test wrote the header and 1499 entries into: a transaction of
 * 1000 committed, 499 read): it died by the signal with the 499 dropped and
 * said nothing, so that no one knew what the store held.  Now it commits
 * the lines read, says how far it got, and ends by the signal; the store
 * holds exactly those entries, and importing the whole file again adds the
 * rest.
 */
START_TEST(t_import_stopped)
{
	enum { M = 2000, SENT = 1500 };
	static float xm[M * 8];
	static char text[1 << 20];
	char exp[320], db3[320], errf[320], said[1024], msg[1024], want[512];
	struct sid_registry *r;
	struct sid_reg_entry e;
	struct sid_error err;
	int fd[2], status, stored = 0, nl = 0;
	size_t len, at = 0;
	pid_t pid;
	FILE *f;

	assign_rows(M, 29, xm);
	snprintf(exp, sizeof(exp), "%s/all.tsv", dir);
	snprintf(db3, sizeof(db3), "%s/imported-stopped.db", dir);
	snprintf(errf, sizeof(errf), "%s/import.err", dir);
	ck_assert_int_eq(run("registry", "export", "--db", db, "-o", exp, NULL), CLI_EXIT_OK);
	f = fopen(exp, "r");
	ck_assert_ptr_nonnull(f);
	len = fread(text, 1, sizeof(text) - 1, f);
	fclose(f);
	while (at < len && nl < SENT) /* the header and SENT - 1 entries */
		nl += text[at++] == '\n';
	ck_assert_int_eq(nl, SENT);
	ck_assert_int_eq(pipe(fd), 0);
	pid = fork();
	ck_assert_int_ge(pid, 0);
	if (pid == 0) {
		int e2 = open(errf, O_WRONLY | O_CREAT | O_TRUNC, 0600);
		close(fd[1]);
		dup2(fd[0], 0);
		dup2(e2, 2);
		signal(SIGTERM, SIG_DFL); /* as a shell starts it */
		_exit(run("registry", "import", "-", "--db", db3, NULL));
	}
	close(fd[0]);
	for (size_t w = 0; w < at;) {
		ssize_t n = write(fd[1], text + w, at - w);
		ck_assert_int_gt(n, 0);
		w += (size_t)n;
	}
	wait_in_syscall(pid, SYS_read); /* until it waits for more */
	kill(pid, SIGTERM);
	ck_assert_int_eq(waitpid(pid, &status, 0), pid);
	close(fd[1]);
	ck_assert_msg(WIFSIGNALED(status) && WTERMSIG(status) == SIGTERM,
		      "the import was not stopped by the signal (status 0x%x)", status);
	dir_file_read("import.err", said, sizeof(said));
	snprintf(want, sizeof(want),
		 "semid: stopped by SIGTERM after line %d of stdin, committed: %d added, 0 "
		 "already present, 0 conflicts; importing it again adds the rest\n",
		 SENT, SENT - 1);
	ck_assert_str_eq(said, want);
	ck_assert_int_eq(sid_registry_open(db3, SID_REG_READONLY, &r, &err), 0);
	for (char *p = strchr(text, '\n') + 1; p < text + at; p = strchr(p, '\n') + 1) {
		char id[64];
		ck_assert_int_eq(sscanf(p, "item\t%63s", id), 1);
		ck_assert_int_eq(sid_registry_get(r, SID_TOWER_ITEM, id, &e, &err), 0);
		stored++;
	}
	{ /* and nothing else */
		uint64_t n = 0;
		ck_assert_int_eq(sid_registry_count(r, -1, &n, &err), 0);
		ck_assert_int_eq(n, SENT - 1);
	}
	sid_registry_close(r);
	ck_assert_int_eq(stored, SENT - 1);
	/* the whole file again: the rest added, the first ones known */
	ck_assert_int_eq(run_err(msg, sizeof(msg), "registry", "import", exp, "--db", db3, NULL),
			 CLI_EXIT_OK);
	snprintf(want, sizeof(want),
		 "semid: imported %s: %d added, %d already present, 0 conflicts", exp,
		 M - (SENT - 1), SENT - 1);
	ASSERT_HAS(msg, want);
}
END_TEST

/*
 * A second signal ends an assign at once.  The first asks it to stop after
 * the batch in flight, whose lines wait here on a stdout pipe that no one
 * reads: it went on waiting, however many signals came, until a SIGKILL.
 * The store keeps what was committed.  (_i 1) So does a delete, whose
 * words are those of its batches, not those of a stop before the first.
 */
START_TEST(t_assign_stopped_twice)
{
	enum { M = 2000 };
	static float xm[M * 8];
	char x2[320], ids2[320], db3[320], errf[320], said[1024];
	struct sid_registry *r;
	struct sid_error err;
	uint64_t stored = 0;
	int fd[2], status = 0;
	pid_t pid, done = 0;
	const char *san = getenv("SEMID_SANITIZE");

	/* ThreadSanitizer holds a signal that comes during a write() it
	 * intercepts until the write returns, and this one never does (a pipe
	 * no one reads): the second signal is never taken under it, whatever
	 * the program does. */
	if (san && !strcmp(san, "thread"))
		CHECK_SKIP("ThreadSanitizer defers a signal taken in a blocked write()");

	snprintf(x2, sizeof(x2), "%s/x2.npy", dir);
	snprintf(ids2, sizeof(ids2), "%s/ids2.txt", dir);
	snprintf(db3, sizeof(db3), "%s/twice.db", dir);
	snprintf(errf, sizeof(errf), "%s/twice.err", dir);
	write_inputs(x2, ids2, M, 31, xm);
	if (_i == 1)
		ck_assert_int_eq(run("registry", "assign", "--model", model, "--input", x2, "--ids",
				     ids2, "--db", db3, "-o", out, NULL),
				 CLI_EXIT_OK);
	ck_assert_int_eq(pipe(fd), 0);
	ck_assert_int_ge(fcntl(fd[1], F_SETPIPE_SZ, 4096), 4096);
	pid = fork();
	ck_assert_int_ge(pid, 0);
	if (pid == 0) {
		int e = open(errf, O_WRONLY | O_CREAT | O_TRUNC, 0600);
		close(fd[0]);
		dup2(fd[1], 1);
		dup2(e, 2);
		signal(SIGTERM, SIG_DFL); /* as a shell starts it */
		if (_i == 1)
			_exit(run("registry", "delete", "--ids", ids2, "--db", db3, "--batch", "1",
				  NULL));
		_exit(run("registry", "assign", "--model", model, "--input", x2, "--ids", ids2,
			  "--db", db3, "--batch", "1", NULL));
	}
	close(fd[1]);
	wait_in_syscall(pid, SYS_write); /* blocked on the full pipe */
	kill(pid, SIGTERM);
	usleep(100 * 1000);
	ck_assert_int_eq(waitpid(pid, &status, WNOHANG), 0); /* the first: it waits */
	kill(pid, SIGTERM);
	for (int i = 0; i < 1000 && !done; i++) {
		done = waitpid(pid, &status, WNOHANG);
		if (!done)
			usleep(10 * 1000);
	}
	if (!done) {
		kill(pid, SIGKILL);
		waitpid(pid, &status, 0);
	}
	close(fd[0]);
	ck_assert_msg(done == pid, "a second SIGTERM did not end the assign within 10 s");
	ck_assert_msg(WIFSIGNALED(status) && WTERMSIG(status) == SIGTERM, "status 0x%x", status);
	dir_file_read("twice.err", said, sizeof(said));
	ck_assert_str_eq(said, "semid: stopped at once by a second signal; what was committed "
			       "stays committed, the lines of the last batch may be missing\n");
	ck_assert_int_eq(sid_registry_open(db3, SID_REG_READONLY, &r, &err), 0);
	ck_assert_int_eq(sid_registry_count(r, -1, &stored, &err), 0);
	sid_registry_close(r);
	ck_assert_int_gt(stored, 0);
	ck_assert_int_lt(stored, M);
}
END_TEST

static Suite *registry_cmd_suite(void)
{
	Suite *s = suite_create("registry_cmd");
	TCase *tc = tcase_create("cli");
	tcase_set_timeout(tc, 120);
	tcase_add_checked_fixture(tc, setup, teardown);
	tcase_add_test(tc, t_usage);
	tcase_add_test(tc, t_usage_names_the_bad_option);
	tcase_add_test(tc, t_delete);
	tcase_add_test(tc, t_delete_log_kept_on_failure);
	tcase_add_test(tc, t_delete_lines_to_stderr_when_the_log_fails);
	tcase_add_test(tc, t_delete_rows_lines_to_stderr_when_the_log_fails);
	tcase_add_test(tc, t_delete_rows_leaves_healthy);
	tcase_add_test(tc, t_diff_without_embeddings);
	tcase_add_test(tc, t_list_says_when_more_follow);
	tcase_add_test(tc, t_delete_damaged);
	tcase_add_test(tc, t_check);
	tcase_add_test(tc, t_check_damaged_model_version);
	tcase_add_test(tc, t_export_nonfinite_embedding);
	tcase_add_test(tc, t_export_time_out_of_range);
	tcase_add_test(tc, t_delete_stopped);
	tcase_add_test(tc, t_assign_stopped);
	tcase_add_loop_test(tc, t_assign_stopped_file, 0, 2);
	tcase_add_test(tc, t_import_stopped);
	tcase_add_loop_test(tc, t_assign_stopped_twice, 0, 2);
	tcase_add_test(tc, t_assign_export_import);
	tcase_add_test(tc, t_diff_and_lookups);
	tcase_add_test(tc, t_bad_stores);
	tcase_add_test(tc, t_sigkill);
	tcase_add_test(tc, t_output_is_an_input);
	tcase_add_test(tc, t_bad_inputs);
	tcase_add_test(tc, t_input_truncated_while_read);
	tcase_add_loop_test(tc, t_export_killed_mid_write, 0, 2);
	tcase_add_test(tc, t_backup);
	tcase_add_test(tc, t_backup_through_link);
	tcase_add_test(tc, t_output_not_a_store_file);
	tcase_add_test(tc, t_stdout_write_failure_named);
	tcase_add_test(tc, t_restore);
	tcase_add_test(tc, t_backup_umask);
	tcase_add_test(tc, t_backup_restore_pg);
	tcase_add_test(tc, t_restore_other_user);
	tcase_add_test(tc, t_restore_side_files);
	tcase_add_test(tc, t_restore_stopped_in_the_renames);
	tcase_add_test(tc, t_assign_stopped_as_the_store_closes);
	tcase_add_test(tc, t_assign_stopped_twice_as_the_store_closes);
	tcase_add_test(tc, t_delete_rows_stopped);
	tcase_add_test(tc, t_stopped_before_any_batch);
	tcase_add_test(tc, t_output_empty);
	tcase_add_test(tc, t_restore_opened_meanwhile);
	tcase_add_test(tc, t_import_strict);
	tcase_add_test(tc, t_format_name_any_case);
	tcase_add_test(tc, t_empty_paths);
	tcase_add_test(tc, t_model_must_exist);
	tcase_add_test(tc, t_import_bad_base64);
	tcase_add_test(tc, t_import_line_limit_memory);
	tcase_add_test(tc, t_assign_ids_line_limit_memory);
	tcase_add_test(tc, t_assign_ids_nul);
	tcase_add_test(tc, t_reassign);
	tcase_add_test(tc, t_reassign_stopped);
	tcase_add_test(tc, t_error_with_a_stop);
	tcase_add_test(tc, t_reassign_signal_after_the_work);
	tcase_add_test(tc, t_reassign_hup_ignored);
	tcase_add_test(tc, t_progress);
	suite_add_tcase(s, tc);
	return s;
}

int main(void)
{
	return check_run(registry_cmd_suite());
}
