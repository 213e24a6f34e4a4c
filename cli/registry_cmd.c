/*
 * registry_cmd.c - `semid registry ...` (see registry_cmd.h): offline bulk
 * assignment, export for downstream training, import, statistics, the churn a
 * new model would cause and the reassignment that makes it, lookups, and
 * backup and restore of a SQLite store.
 * A thin layer over core/registry.h: options in, one library call, JSON or
 * TSV out (restore, which moves files, is the one with more to do here).
 */
#include "registry_cmd.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <jansson.h>
#include <limits.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "cli.h"
#include "encode.h"
#include "fsutil.h"
#include "model.h"
#include "npy.h"
#include "registry.h"
#include "safetensors.h"

static const char usage[] =
    "usage: semid registry <command> [options]\n"
    "\n"
    "The ID registry gives every item (or user) one semantic ID that no other holds:\n"
    "its codes plus a suffix, \"12-7-200-0\", the smallest suffix free under those\n"
    "codes when the id was first seen.  A known id keeps its ID, even after a\n"
    "retrain, unless it is reassigned (proto/registry.md).\n"
    "\n"
    "commands:\n"
    "  assign --model M --input X.npy --ids IDS   assign the ids of IDS (one per line,\n"
    "                        the rows of X.npy in order) and print id<TAB>sid<TAB>created\n"
    "                        per line once each batch is committed (--reassign adds\n"
    "                        <TAB>moved<TAB>old_sid, the ID it left when moved,\n"
    "                        and counts on stderr); SIGINT, SIGTERM or SIGHUP\n"
    "                        stop it after the batch in flight (-o FILE then\n"
    "                        holds the lines of every batch committed)\n"
    "  export                every assignment, TSV (default) or JSON lines\n"
    "  import FILE|-         read an export back; idempotent, conflicts are reported;\n"
    "                        SIGINT, SIGTERM or SIGHUP stop it, the lines read\n"
    "                        committed\n"
    "  stats                 items, unique prefixes per level, largest suffix, suffix\n"
    "                        histogram (JSON)\n"
    "  diff --model NEW      how many stored IDs NEW would change, per level (JSON);\n"
    "                        needs the embeddings kept at assignment\n"
    "  reassign --model NEW  move every stored id whose codes NEW changes to them,\n"
    "                        from its stored embedding; logs\n"
    "                        id<TAB>old_sid<TAB>new_sid (TSV, with that header) per\n"
    "                        id moved as each batch commits (-o FILE is appended\n"
    "                        to); SIGINT, SIGTERM or SIGHUP stop it after the batch\n"
    "                        in flight, and a second run moves the rest\n"
    "  delete ID... | --ids FILE   remove the ids' assignments and stored embeddings\n"
    "                        (an erasure request, a catalogue removal; nothing of\n"
    "                        them is kept, and each slot is free for the next new\n"
    "                        id of its codes); prints id<TAB>sid<TAB>deleted per id\n"
    "                        once its batch is committed (an empty sid and 0: not\n"
    "                        stored, which an id given twice is by its second time;\n"
    "                        an empty sid and 1: an entry that could not be read,\n"
    "                        erased; -o FILE is appended to, so a failed run keeps\n"
    "                        the lines of the batches it committed); SIGINT,\n"
    "                        SIGTERM or SIGHUP stop it after the batch in flight\n"
    "  get ID | sid SID      one assignment (JSON)\n"
    "  list [--prefix P]     assignments under a code prefix such as 12-7, in order\n"
    "  check                 read every entry, past any that cannot be read, and\n"
    "                        (SQLite) the file's own structure: what is damaged,\n"
    "                        where (JSON; the ids it names can be deleted)\n"
    "  backup -o FILE        a consistent copy of a SQLite store, taken while servers\n"
    "                        go on writing, checked; FILE is itself a store\n"
    "  restore BACKUP        put a backup in place of a SQLite store that no process\n"
    "                        has open; the store it replaces is kept beside it as\n"
    "                        STORE.pre-restore.<UTC time>\n"
    "\n"
    "options (\"CMD, CMD:\" the only commands that take one, \"all but\" the ones that\n"
    "do not; a command refuses any other):\n"
    "  -d, --db STORE        a SQLite file or a PostgreSQL connection string\n"
    "                        (postgresql://... or host=... dbname=...); default: the\n"
    "                        file semid-registry.db next to --model\n"
    "  -m, --model MODEL     the model (assign: encodes; diff: the new model)\n"
    "  -t, --kind KIND       all but import, backup and restore: item (default) or\n"
    "                        user; export, check: all (default), item, user\n"
    "  -i, --input X.npy     assign: the embeddings (float32, float64 or float16, (N, D))\n"
    "      --ids FILE        assign, delete: ids, one per line (assign: N, the rows'\n"
    "                        ids; delete: the ids to delete, instead of operands)\n"
    "      --reassign        assign: move known ids to their new codes\n"
    "      --rows            delete: the operands are SQLite row numbers (check names\n"
    "                        so an entry whose id cannot be, one of another kind,\n"
    "                        and an embedding of no entry), not ids; prints\n"
    "                        row<TAB>deleted per row; a row whose entry its id\n"
    "                        can name is left (0, said on stderr)\n"
    "      --no-embeddings   assign: do not keep the embeddings (diff cannot use them;\n"
    "                        with --reassign, a known id's stored one is dropped)\n"
    "  -b, --batch N         assign, reassign, delete: ids per transaction (default\n"
    "                        64; reassign 1000, 128 on PostgreSQL; max 10000)\n"
    "  -f, --format F        export/import: tsv or jsonl (else from the file's name:\n"
    "                        .jsonl/.json, in any case, is JSON lines, else TSV)\n"
    "      --embeddings      export: include embedding_b64\n"
    "  -p, --prefix P        list: the code prefix (default: everything)\n"
    "  -n, --limit N         list, check: at most N entries (list: stderr says when\n"
    "                        more follow), or findings listed (check: all are\n"
    "                        counted); default 100\n"
    "      --progress        all but get, sid and list: a progress bar on stderr\n"
    "                        (default: when it is a terminal the rows do not go to);\n"
    "                        --no-progress: none\n"
    "      --max-rate MIB    backup, restore: copy at most MIB MiB a second, to leave\n"
    "                        a server writing to the same disk its bandwidth\n"
    "  -o, --output FILE     all but import and restore: where output goes (default\n"
    "                        - : stdout); a file (but reassign's and delete's logs,\n"
    "                        appended to, and a stopped assign's lines) gets its\n"
    "                        name only when complete: a failed or killed run\n"
    "                        leaves the old one and no temporary file (backup,\n"
    "                        and a file system without O_TMPFILE such as NFS:\n"
    "                        but for SIGKILL, which leaves FILE.tmp.PID.N)\n"
    "\n"
    "exit status: 0 ok; 1 store unavailable, I/O or internal error; 2 bad usage, bad\n"
    "input, unknown id or sid; 3 import finished but some lines conflicted, delete\n"
    "finished but some ids were not stored (--rows: some rows not there, or left as\n"
    "entries their ids name), diff could not compare some entries (no embedding\n"
    "stored, another width), or check found a problem; 141 the reader of stdout went\n"
    "away (| head -1), a quiet stop\n";

struct opts {
	const char *cmd, *db, *model, *input, *ids, *format, *prefix, *output, *arg;
	char *const *args; /* delete: its ID operands (nargs) */
	size_t nargs;
	int kind, kind_set; /* -1: all (export only) */
	int reassign, no_emb, with_emb, rows;
	long batch, limit;
	int batch_set;
	double max_rate; /* backup, restore: MiB a second, 0: no limit */
	int progress;	 /* 1: --progress, -1: --no-progress, 0: on a terminal */
};

static int fail_usage(const char *cmd, const char *msg, const char *arg)
{
	char who[64]; /* a command of the table below */

	snprintf(who, sizeof(who), "registry%s%s", cmd ? " " : "", cmd ? cmd : "");
	return cli_usage_error(who, "registry", "%s%s%s", msg, arg ? " " : "", arg ? arg : "");
}

static int exit_for(int code)
{
	switch (code) {
	case SID_EINVAL:
	case SID_EFORMAT:
	case SID_EDATA: /* a damaged stored entry: named, as bad input is */
	case SID_ENOTFOUND:
		return CLI_EXIT_INPUT;
	default:
		return CLI_EXIT_IO;
	}
}

static int report(const struct sid_error *err)
{
	sid_error_print(stderr, "semid", err->msg);
	return exit_for(err->code);
}

static long parse_long(const char *s, long lo, long hi)
{
	char *end;
	long v = strtol(s, &end, 10);
	if (!*s || *end || v < lo || v > hi)
		return lo - 1;
	return v;
}

/* The options each command uses (getopt values) and whether it takes an
 * operand (2: any number): any other is refused rather than silently
 * ignored. */
static const struct {
	const char *cmd, *opts;
	int operand;
} commands[] = {
    {"assign", "dmtiIRNboPQ", 0}, {"export", "dmtfEoPQ", 0}, {"import", "dmfPQ", 1},
    {"stats", "dmtoPQ", 0},	  {"diff", "dmtoPQ", 0},     {"reassign", "dmtboPQ", 0},
    {"get", "dmto", 1},		  {"sid", "dmto", 1},	     {"list", "dmtpno", 0},
    {"backup", "dmoMPQ", 0},	  {"restore", "dmMPQ", 1},   {"delete", "dmtIboPQW", 2},
    {"check", "dmtnoPQ", 0},
};

/* What @o->cmd cannot run without, if it is missing (a usage error, told
 * before any file is opened), else NULL. */
static const char *missing(const struct opts *o)
{
	const char *c = o->cmd;

	/* as encode says it: not "semid: : No such file or directory" */
	if (o->model && !*o->model)
		return "--model is empty";
	if (o->input && !*o->input)
		return "--input is empty";
	if (o->ids && !*o->ids)
		return "--ids is empty";
	if (o->arg && !*o->arg && (!strcmp(c, "import") || !strcmp(c, "restore")))
		return !strcmp(c, "import") ? "FILE is empty (- for stdin)" : "BACKUP is empty";
	if (!strcmp(c, "assign") && (!o->model || !o->input || !o->ids))
		return "needs --model, --input and --ids";
	if ((!strcmp(c, "diff") || !strcmp(c, "reassign")) && !o->model)
		return "needs --model NEW";
	if (!strcmp(c, "delete") && o->rows && (o->ids || !o->nargs))
		return "--rows takes the row numbers as operands";
	if (!strcmp(c, "delete") && !o->ids == !o->nargs)
		return o->ids ? "takes ID operands or --ids FILE, not both"
			      : "needs the IDs to delete, or --ids FILE";
	if (!strcmp(c, "backup") && !strcmp(o->output, "-"))
		return "needs --output FILE: the copy is a SQLite file, not a stream for stdout";
	if (o->arg)
		return NULL;
	if (!strcmp(c, "import"))
		return "needs a FILE (or - for stdin)";
	if (!strcmp(c, "restore"))
		return "needs the BACKUP file";
	if (!strcmp(c, "get"))
		return "needs an ID";
	if (!strcmp(c, "sid"))
		return "needs a SID";
	return NULL;
}

static int parse(int argc, char **argv, struct opts *o)
{
	static const struct option lo[] = {{"db", required_argument, NULL, 'd'},
					   {"model", required_argument, NULL, 'm'},
					   {"kind", required_argument, NULL, 't'},
					   {"input", required_argument, NULL, 'i'},
					   {"ids", required_argument, NULL, 'I'},
					   {"reassign", no_argument, NULL, 'R'},
					   {"no-embeddings", no_argument, NULL, 'N'},
					   {"batch", required_argument, NULL, 'b'},
					   {"format", required_argument, NULL, 'f'},
					   {"embeddings", no_argument, NULL, 'E'},
					   {"prefix", required_argument, NULL, 'p'},
					   {"limit", required_argument, NULL, 'n'},
					   {"output", required_argument, NULL, 'o'},
					   {"max-rate", required_argument, NULL, 'M'},
					   {"progress", no_argument, NULL, 'P'},
					   {"no-progress", no_argument, NULL, 'Q'},
					   {"rows", no_argument, NULL, 'W'},
					   {"help", no_argument, NULL, 'h'},
					   {NULL, 0, NULL, 0}};
	const char *used = NULL; /* the options of o->cmd */
	const char *need;
	int c, operand = 0;
	size_t k;

	memset(o, 0, sizeof(*o));
	o->batch = 64;
	o->limit = 100;
	o->output = "-";
	o->cmd = argv[1];
	if (!strcmp(o->cmd, "-h") || !strcmp(o->cmd, "--help") || !strcmp(o->cmd, "help"))
		return 1;
	for (k = 0; k < sizeof(commands) / sizeof(commands[0]); k++)
		if (!strcmp(o->cmd, commands[k].cmd)) {
			used = commands[k].opts;
			operand = commands[k].operand;
		}
	if (!used)
		return fail_usage(NULL, "unknown command", o->cmd);
	optind = 0; /* GNU: start afresh (the tests call this repeatedly) */
	opterr = 0;
	/* ':' first: a missing value is ':', told apart from an unknown option */
	while ((c = getopt_long(argc - 1, argv + 1, ":d:m:t:i:b:f:p:n:o:h", lo, NULL)) != -1) {
		if (c != 'h' && c != '?' && c != ':' && !strchr(used, c)) {
			char msg[64];
			for (k = 0; lo[k].name && lo[k].val != c; k++)
				;
			snprintf(msg, sizeof(msg), "--%s is not an option of %s", lo[k].name,
				 o->cmd);
			return fail_usage(o->cmd, msg, NULL);
		}
		switch (c) {
		case 'd':
			o->db = optarg;
			break;
		case 'm':
			o->model = optarg;
			break;
		case 't':
			o->kind_set = 1;
			if (!strcmp(optarg, "all"))
				o->kind = -1;
			else if ((o->kind = sid_tower_parse(optarg)) < 0)
				/* "all" only where it is taken: stats was told to
				 * try it, then that it was for export and check */
				return fail_usage(o->cmd,
						  !strcmp(o->cmd, "export") ||
							  !strcmp(o->cmd, "check")
						      ? "--kind must be item, user or all, not"
						      : "--kind must be item or user, not",
						  optarg);
			break;
		case 'i':
			o->input = optarg;
			break;
		case 'I':
			o->ids = optarg;
			break;
		case 'R':
			o->reassign = 1;
			break;
		case 'W':
			o->rows = 1;
			break;
		case 'N':
			o->no_emb = 1;
			break;
		case 'E':
			o->with_emb = 1;
			break;
		case 'b':
			if ((o->batch = parse_long(optarg, 1, 10000)) < 1)
				return fail_usage(o->cmd, "--batch must be 1..10000, not", optarg);
			o->batch_set = 1;
			break;
		case 'n':
			if ((o->limit = parse_long(optarg, 1, 1000000000L)) < 1)
				return fail_usage(o->cmd, "--limit must be a positive number, not",
						  optarg);
			break;
		case 'f':
			if (strcmp(optarg, "tsv") && strcmp(optarg, "jsonl"))
				return fail_usage(o->cmd, "--format must be tsv or jsonl, not",
						  optarg);
			o->format = optarg;
			break;
		case 'p':
			o->prefix = optarg;
			break;
		case 'o':
			o->output = optarg;
			break;
		case 'P':
		case 'Q':
			o->progress = c == 'P' ? 1 : -1;
			break;
		case 'M': {
			char *end;
			o->max_rate = strtod(optarg, &end);
			/* at least 1 KiB a second: a slower pace's waits overflow a
			 * time_t */
			if (!*optarg || *end || !(o->max_rate >= 0.001) || o->max_rate > 1e6)
				return fail_usage(
				    o->cmd,
				    "--max-rate must be MiB a second, 0.001 to 1000000, "
				    "not",
				    optarg);
			break;
		}
		case 'h':
			return 1;
		case ':': /* the option was the last argument (argv + 1 was parsed) */
			return fail_usage(o->cmd, argv[optind], "needs a value");
		default: {
			/* the argument just passed; a short option is optopt (optind
			 * may still be at its cluster, "-xP"), but so is the value
			 * of a long one given "=VALUE" it does not take */
			const char *prev = argv[optind];
			const char *eq = !strncmp(prev, "--", 2) ? strchr(prev, '=') : NULL;
			char bad[3] = {'-', (char)optopt, '\0'}, msg[64];
			for (k = 0; eq && optopt && lo[k].name; k++)
				if (lo[k].val == optopt &&
				    !strncmp(lo[k].name, prev + 2, (size_t)(eq - prev - 2))) {
					snprintf(msg, sizeof(msg), "--%s takes no value, not",
						 lo[k].name);
					return fail_usage(o->cmd, msg, prev);
				}
			return fail_usage(o->cmd, "unknown option", optopt ? bad : prev);
		}
		}
	}
	/* argv + 1 was parsed: its argv[0] is the command, operands follow */
	if (operand == 2) {
		o->args = argv + optind + 1;
		o->nargs = optind + 1 < argc ? (size_t)(argc - optind - 1) : 0;
	} else if (optind + 1 < argc)
		o->arg = argv[optind + 1];
	if ((operand < 2 && optind + 2 < argc) || (!operand && o->arg))
		return fail_usage(o->cmd, "unexpected argument",
				  argv[optind + (optind + 2 < argc && operand ? 2 : 1)]);
	if (!o->kind_set && (!strcmp(o->cmd, "export") || !strcmp(o->cmd, "check")))
		o->kind = -1; /* export, check: both kinds unless told */
	if (o->kind < 0 && strcmp(o->cmd, "export") && strcmp(o->cmd, "check"))
		return fail_usage(o->cmd, "--kind all is for export and check only", NULL);
	if ((need = missing(o)))
		return fail_usage(o->cmd, need, NULL);
	return 0;
}

/* The store: --db, or the SQLite file next to --model (in @path), which
 * must be there: import --model with a typo made and filled a store next
 * to no model, and a directory put it in the directory's parent. */
static int store_target(const struct opts *o, char path[4096], const char **target,
			struct sid_error *err)
{
	struct stat st;

	*target = o->db;
	if (o->db)
		return 0;
	if (!o->model)
		return sid_error_set(err, SID_EINVAL,
				     "no store: give --db STORE or --model MODEL (the store "
				     "is then the file next to it)");
	{
		int bad = stat(o->model, &st) != 0 ? errno : S_ISDIR(st.st_mode) ? EISDIR : 0;
		if (bad)
			return sid_error_set(err, bad == ENOENT ? SID_ENOTFOUND : SID_EINVAL,
					     "--model %s: %s; without --db the store is the "
					     "semid-registry.db next to the model, so name a model "
					     "file or give the store with --db",
					     o->model,
					     bad == EISDIR ? "a directory" : strerror(bad));
	}
	sid_registry_default_path(o->model, path, 4096);
	*target = path;
	return 0;
}

/* SQLite would say "disk I/O error" for a directory, and would put its
 * -wal and -shm files beside a device: SID_EINVAL for a SQLite @target that
 * exists and is not a regular file. */
static int store_file_check(const char *target, struct sid_error *err)
{
	struct stat st;

	if (*target && !sid_registry_target_is_pg(target) && stat(target, &st) == 0 &&
	    !S_ISREG(st.st_mode))
		return sid_error_set(err, SID_EINVAL, "registry %s: %s, not a registry file",
				     target, S_ISDIR(st.st_mode) ? "a directory" : "not a file");
	return 0;
}

static int store_open(const struct opts *o, struct sid_registry **r, struct sid_error *err)
{
	char path[4096];
	const char *target;
	struct stat st;
	int rc, readonly;

	if ((rc = store_target(o, path, &target, err)))
		return rc;
	/* an argument is in the process list for every user of the host, for
	 * as long as an export or a reassign runs (and in the shell's history) */
	if (o->db && sid_registry_target_has_password(o->db))
		fprintf(stderr,
			"semid: warning: the --db connection string holds a password, "
			"which any user of this host can read in the process list; give it "
			"in PGPASSWORD, a password file (PGPASSFILE, ~/.pgpass) or a service "
			"file (service=NAME, PGSERVICEFILE)\n");
	/* as restore does: before connecting, so that an unreachable server
	 * is not all a user learns */
	if (!strcmp(o->cmd, "backup") && sid_registry_target_is_pg(target))
		return sid_error_set(err, SID_EINVAL,
				     "backup copies a SQLite store's file; a PostgreSQL store is "
				     "backed up with PostgreSQL's own tools (pg_dump)");
	if ((rc = store_file_check(target, err)))
		return rc;
	/* reassign and delete write but have nothing to do in a new store: a
	 * --model NEW away from the store (releases/) must not make an empty
	 * one there */
	if ((!strcmp(o->cmd, "reassign") || !strcmp(o->cmd, "delete")) &&
	    !sid_registry_target_is_pg(target) && stat(target, &st) != 0)
		return sid_error_set(err, SID_EINVAL,
				     "registry %s: no such store (%s changes the ids of an "
				     "existing one%s)",
				     target, o->cmd, o->db ? "" : "; give it with --db");
	/* commands that only read open read-only: they work on a read-only
	 * mount and never create a store that is not there */
	readonly = strcmp(o->cmd, "assign") && strcmp(o->cmd, "import") &&
		   strcmp(o->cmd, "reassign") && strcmp(o->cmd, "delete");
	/* the default store of a --model NEW in releases/ is not the served
	 * one: say where the missing file was looked for, and how to name it */
	if (readonly && !o->db && !sid_registry_target_is_pg(target) && stat(target, &st) != 0 &&
	    errno == ENOENT)
		return sid_error_set(err, SID_ENOTFOUND,
				     "registry %s: no such file (nothing to read): without --db "
				     "the store is the semid-registry.db next to --model; give "
				     "the store to read with --db",
				     target);
	return sid_registry_open(target, readonly ? SID_REG_READONLY : 0, r, err);
}

/*
 * The files a command reads, which its --output must not replace: a SQLite
 * store and its -wal, -shm and -journal (a server's commits may be in the
 * -wal only), the model, the embeddings, the ids.
 */
struct inputs {
	char side[3][4096 + 16];
	const char *v[8]; /* NULL-terminated */
	int n_side;	  /* v[1..n_side] are the store's side files */
};

static void inputs_of(const struct opts *o, const char *store, struct inputs *in)
{
	static const char *const sfx[] = {"-wal", "-shm", "-journal"};
	char real[PATH_MAX];
	int n = 0;

	in->n_side = 0;
	if (store) {
		/* SQLite puts them beside the file the store's name resolves to
		 * (its links followed), whatever name it was given by */
		const char *file =
		    !sid_registry_target_is_pg(store) && realpath(store, real) ? real : store;
		in->v[n++] = store;
		for (int i = 0; i < 3 && !sid_registry_target_is_pg(store); i++) {
			snprintf(in->side[i], sizeof(in->side[i]), "%s%s", file, sfx[i]);
			in->v[n++] = in->side[i];
			in->n_side++;
		}
	}
	if (o->model)
		in->v[n++] = o->model;
	if (o->input)
		in->v[n++] = o->input;
	if (o->ids)
		in->v[n++] = o->ids;
	in->v[n] = NULL;
}

/* The file @path would write, in @buf (PATH_MAX bytes): its symbolic
 * links followed, a dangling one too (to the file it would create), and
 * its directory resolved, since the file itself need not exist; NULL when
 * the directory cannot be resolved (the output cannot be created there). */
static const char *output_resolved(const char *path, char *buf)
{
	char cur[PATH_MAX], to[PATH_MAX], dir[PATH_MAX];
	const char *slash;
	ssize_t n;

	if (snprintf(cur, sizeof(cur), "%s", path) >= (int)sizeof(cur))
		return NULL;
	for (int hop = 0; hop < 40 && (n = readlink(cur, to, sizeof(to) - 1)) > 0; hop++) {
		to[n] = '\0';
		slash = strrchr(cur, '/');
		if (to[0] == '/' || !slash) /* absolute, or relative to "." */
			memcpy(cur, to, (size_t)n + 1);
		else if (snprintf(buf, PATH_MAX, "%.*s/%s", (int)(slash - cur), cur, to) >=
			 PATH_MAX)
			return NULL;
		else
			memcpy(cur, buf, strlen(buf) + 1);
	}
	slash = strrchr(cur, '/');
	snprintf(to, sizeof(to), "%.*s", slash ? (int)(slash - cur) : 1, slash ? cur : ".");
	if (!realpath(to[0] ? to : "/", dir))
		return NULL;
	if (snprintf(buf, PATH_MAX, "%s/%s", strcmp(dir, "/") ? dir : "",
		     slash ? slash + 1 : cur) >= PATH_MAX)
		return NULL;
	return buf;
}

/* SID_EINVAL when --output names one of the store's side files: by name,
 * since they come and go, and SQLite would take a file found under such a
 * name for the store's own (the same file by another name is
 * cli_output_not_input's to find).  Names resolved (inputs_of,
 * output_resolved): ./STORE-wal, /abs/STORE-journal or a link to one is
 * that file all the same.  @what: "the backup", ... */
static int output_not_side_file(const char *output, const struct inputs *in, const char *what,
				struct sid_error *err)
{
	char real[PATH_MAX];
	const char *file = strcmp(output, "-") ? output_resolved(output, real) : NULL;

	for (int i = 1; i <= in->n_side; i++)
		/* in->v[1..n_side] are all set (struct inputs) */
		/* NOLINTNEXTLINE(clang-analyzer-core.NonNullParamChecker) */
		if (!strcmp(file ? file : output, in->v[i]))
			return sid_error_set(err, SID_EINVAL,
					     "--output %s is the store or one of its files; write "
					     "%s elsewhere",
					     output, what);
	return 0;
}

static int out_open(struct cli_output *w, const struct opts *o, struct sid_registry *r,
		    struct sid_error *err)
{
	struct inputs in;
	int rc;

	memset(w, 0, sizeof(*w)); /* ended: an abort after a refusal is a no-op */
	inputs_of(o, r ? sid_registry_label(r) : NULL, &in);
	if ((rc = output_not_side_file(o->output, &in, "the output", err)))
		return rc;
	return cli_output_open(w, o->output, stdout, in.v, err);
}

/* --output for messages: "stdout" for "-". */
static const char *output_name(const struct opts *o)
{
	return strcmp(o->output, "-") ? o->output : "stdout";
}

/* Finish (@ok) or abandon the output. */
static int out_close(struct cli_output *w, int ok, struct sid_error *err)
{
	if (ok)
		return cli_output_commit(w, err);
	cli_output_abort(w);
	return 0;
}

/* The commands' JSON reports.  Their one real, diff's changed_fraction, is
 * written with 15 significant digits, as a person reads it (0.907, where
 * the full 17 of a double give 0.90700000000000003). */
static int print_json(json_t *j, const struct opts *o, struct sid_registry *r,
		      struct sid_error *err)
{
	struct cli_output w = {0};
	char *s = json_dumps(j, JSON_INDENT(2) | JSON_PRESERVE_ORDER | JSON_REAL_PRECISION(15));
	int rc;

	json_decref(j);
	if (!s)
		return sid_error_set(err, SID_ENOMEM, "out of memory");
	rc = out_open(&w, o, r, err);
	if (!rc && fprintf(w.fp, "%s\n", s) < 0)
		rc = sid_error_set(err, SID_EIO, "%s: write failed: %m", output_name(o));
	free(s);
	if (rc) {
		out_close(&w, 0, err);
		return rc;
	}
	return out_close(&w, 1, err);
}

/* ---- progress ---- */

/* The bar on stderr: as told, else on a terminal, and not over rows a
 * command (@streams) writes to that same terminal. */
static int progress_on(const struct opts *o, int streams)
{
	if (o->progress)
		return o->progress > 0;
	if (!isatty(STDERR_FILENO))
		return 0;
	return !(streams && !strcmp(o->output, "-") && isatty(STDOUT_FILENO));
}

struct walk_bar {
	struct cli_progress bar; /* entries, then (check) rows of the file */
	uint64_t done;
	int file; /* the bar counts the rows of the file check */
};

static void walk_progress(void *ctx, uint64_t done, uint64_t total)
{
	struct walk_bar *w = ctx;

	if (total && !w->file) { /* check: its file check follows the walk */
		cli_progress_end(&w->bar, (size_t)w->done);
		cli_progress_begin(&w->bar, 1, (size_t)total, stderr);
		w->bar.unit = "file rows";
		w->file = 1;
	}
	w->done = done;
	cli_progress_update(&w->bar, (size_t)done);
}

/* A bar over the walks of @r that follow (the store's entries of @kind
 * counted first), until walk_bar_end. */
static void walk_bar_begin(struct walk_bar *w, const struct opts *o, struct sid_registry *r,
			   int kind, int streams)
{
	struct sid_error ignored;
	uint64_t n = 0;
	int on = progress_on(o, streams) && !sid_registry_count(r, kind, &n, &ignored);

	cli_progress_begin(&w->bar, on, (size_t)n, stderr);
	w->bar.unit = "entries";
	w->done = 0;
	w->file = 0;
	if (on)
		sid_registry_set_progress(r, walk_progress, w);
}

static void walk_bar_end(struct walk_bar *w, struct sid_registry *r)
{
	sid_registry_set_progress(r, NULL, NULL);
	cli_progress_end(&w->bar, (size_t)w->done);
}

/* ---- assign ---- */

static int cmp_id_line(const void *a, const void *b, void *ids)
{
	size_t i = *(const size_t *)a, j = *(const size_t *)b;
	int c = strcmp(((char **)ids)[i], ((char **)ids)[j]);
	return c ? c : (i > j) - (i < j);
}

/* An id given twice would get the first row's codes and drop the second's
 * embedding without a word: refuse it, naming both lines. */
static int ids_check_unique(const char *path, char **ids, size_t n, struct sid_error *err)
{
	size_t *order = malloc((n ? n : 1) * sizeof(*order)), i;
	int rc = 0;

	if (!order)
		return sid_error_set(err, SID_ENOMEM, "out of memory");
	for (i = 0; i < n; i++)
		order[i] = i;
	qsort_r(order, n, sizeof(*order), cmp_id_line, ids);
	for (i = 1; i < n; i++)
		if (!strcmp(ids[order[i - 1]], ids[order[i]])) {
			rc = sid_error_set(err, SID_EINVAL,
					   "%s: line %zu: id '%s' is already on line %zu", path,
					   order[i] + 1, ids[order[i]], order[i - 1] + 1);
			break;
		}
	free(order);
	return rc;
}

/* The longest --ids line read: an id over SID_REG_ID_MAX bytes but within
 * this gets sid_reg_id_check's message (its start, its length); a longer
 * line (a file with no newline) is refused having read only this far. */
#define IDS_LINE_MAX 4096

/* Read @n ids, the rows' (assign: an id twice is refused, ids_check_unique),
 * or IDS_ANY, as many as there are, *@got of them (delete: an id twice is
 * deleted by its first line and not found by its second, as it is given
 * twice as operands or to the server), one per line, into a malloc'ed array
 * of malloc'ed strings. */
#define IDS_ANY SIZE_MAX
static int ids_read(const char *path, size_t n, char ***out, size_t *got, struct sid_error *err)
{
	FILE *f = fopen(path, "re");
	size_t room = n == IDS_ANY ? 64 : n ? n : 1, cap = 0, k = 0, lineno = 0, blank = 0;
	char **ids = calloc(room, sizeof(*ids)), *line = NULL;
	ssize_t len;
	int rc = 0;

	if (!f || !ids) {
		rc = !f ? sid_error_set(err, SID_EINVAL, "%s: cannot open: %m", path)
			: sid_error_set(err, SID_ENOMEM, "out of memory");
		goto fail;
	}
	while ((len = sid_line_read(f, &line, &cap, IDS_LINE_MAX)) != -1) {
		lineno++;
		if (len == -3) {
			rc = sid_error_set(err, SID_ENOMEM, "out of memory");
			goto fail;
		}
		if (len == -2) {
			rc = sid_error_set(
			    err, SID_EINVAL,
			    "%s: line %zu: longer than %d bytes (an id is at most %d)", path,
			    lineno, IDS_LINE_MAX, SID_REG_ID_MAX);
			goto fail;
		}
		if (lineno == 1 && len > 0)
			len = sid_line_drop_bom(line, len);
		while (len && (line[len - 1] == '\n' || line[len - 1] == '\r'))
			line[--len] = '\0';
		if ((size_t)len != strlen(line)) { /* the id would end at it */
			rc = sid_error_set(err, SID_EINVAL, "%s: line %zu: NUL byte", path, lineno);
			goto fail;
		}
		if (!len) { /* blank lines at the end (an editor's) are no ids */
			if (!blank)
				blank = lineno;
			continue;
		}
		if (blank) {
			rc = sid_error_set(err, SID_EINVAL, "%s: line %zu: id is empty", path,
					   blank);
			goto fail;
		}
		if (k == n) {
			rc = sid_error_set(err, SID_EINVAL,
					   "%s: more than %zu ids (the rows of "
					   "the input)",
					   path, n);
			goto fail;
		}
		if ((rc = sid_reg_id_check(line, err))) {
			sid_error_prefix(err, "%s: line %zu", path, lineno);
			goto fail;
		}
		if (k == room) {
			char **more = realloc(ids, 2 * room * sizeof(*ids));
			if (!more) {
				rc = sid_error_set(err, SID_ENOMEM, "out of memory");
				goto fail;
			}
			ids = more;
			room *= 2;
		}
		if (!(ids[k++] = strdup(line))) {
			rc = sid_error_set(err, SID_ENOMEM, "out of memory");
			goto fail;
		}
	}
	if (ferror(f)) { /* a directory, an I/O error: not "0 ids" */
		rc = sid_error_set(err, SID_EINVAL, "%s: cannot read: %m", path);
		goto fail;
	}
	if (n != IDS_ANY && k != n) {
		rc = sid_error_set(err, SID_EINVAL, "%s: %zu ids for %zu input rows", path, k, n);
		goto fail;
	}
	if (n != IDS_ANY)
		rc = ids_check_unique(path, ids, k, err);
fail:
	free(line);
	if (f)
		fclose(f);
	if (rc) {
		for (size_t i = 0; ids && i < k; i++)
			free(ids[i]);
		free(ids);
		ids = NULL;
		k = 0;
	}
	*out = ids;
	if (got)
		*got = k;
	return rc;
}

/*
 * assign, import, reassign and delete commit as they go (and all but import
 * print or log what they commit).  registry_main catches SIGINT, SIGTERM and
 * SIGHUP for them from their start to their end (stop_catch, stop_restore):
 * the first sets stop_sig, and the work stops at its next step (before its
 * next batch, the lines of the one in flight written; stop_before_any before
 * the first), says so (stop_say) and ends as the signal would have once its
 * output is closed (stop_end).  A second one ends it at once, saying what
 * stop_again set: the lines of a batch blocked on a reader that stopped
 * reading held it until a SIGKILL.
 */
static volatile sig_atomic_t stop_sig;
static const int stop_sigs[3] = {SIGINT, SIGTERM, SIGHUP};

/* What a second signal says (stop_again); none (0 bytes): that the lines of
 * the last batch may be missing. */
static char again_said[4096 + 256];
static volatile sig_atomic_t again_len;

/* The stop signals' handler (async-signal-safe, as is all it calls): the
 * first is noted in stop_sig; a second removes an output's named temp file,
 * says what stop_again set and ends the process by @sig. */
static void on_stop(int sig)
{
	static const char again[] = "semid: stopped at once by a second signal; what was "
				    "committed stays committed, the lines of the last batch may "
				    "be missing\n";
	ssize_t n;

	if (!stop_sig) {
		stop_sig = sig;
		return;
	}
	sid_publish_unlink_temps(); /* an output's named temp file (fsutil.h) */
	signal(SIGPIPE, SIG_IGN);   /* a dead stderr: by @sig all the same */
	n = again_len ? write(STDERR_FILENO, again_said, (size_t)again_len)
		      : write(STDERR_FILENO, again, sizeof(again) - 1);
	(void)n;
	signal(sig, SIG_DFL);
	raise(sig); /* taken as this handler returns */
}

/* Catch the stop signals with on_stop, but one ignored (SIGHUP under nohup),
 * which stays ignored; the actions before go to @saved for stop_restore.
 * @flags: SA_RESTART, so that a line blocked on a full pipe still goes out
 * and a store's opening or creation is not cut short; 0 while a wait for
 * input must end (import's file opening, a FIFO waiting for a writer; its
 * lines read from a pipe or a terminal).  @saved NULL: the catch is in place
 * already, and only its @flags change. */
static void stop_catch(struct sigaction saved[3], int flags)
{
	struct sigaction sa, before[3];

	memset(&sa, 0, sizeof(sa));
	sa.sa_handler = on_stop;
	sa.sa_flags = flags;
	sigemptyset(&sa.sa_mask);
	for (int i = 0; i < 3; i++)
		sid_catch_unless_ignored(stop_sigs[i], &sa, saved ? &saved[i] : &before[i]);
}

/* The actions of before stop_catch back (an output opened after it puts its
 * own back first, as it closes). */
static void stop_restore(const struct sigaction saved[3])
{
	for (int i = 0; i < 3; i++)
		sigaction(stop_sigs[i], &saved[i], NULL);
}

/* What a second signal says from here: @fmt's line, or with @fmt NULL (or a
 * line too long) that the lines of the last batch may be missing.  The
 * length is 0 while the line is written, so that the handler never writes
 * half of one. */
__attribute__((format(printf, 1, 2))) static void stop_again(const char *fmt, ...)
{
	va_list ap;
	int k;

	again_len = 0;
	if (!fmt)
		return;
	va_start(ap, fmt);
	k = vsnprintf(again_said, sizeof(again_said), fmt, ap);
	va_end(ap);
	if (k > 0 && (size_t)k < sizeof(again_said))
		again_len = k;
}

/* The second signal's line from the start of a command to its first batch. */
#define AGAIN_BEFORE_ANY                                                                           \
	"semid: stopped at once by a second signal before any batch: nothing committed\n"

/* The second signal's line once assign's output (%s, its name) has the lines
 * of all the rows committed. */
#define AGAIN_CLOSED                                                                               \
	"semid: stopped at once by a second signal; what was committed stays committed, and "      \
	"the lines of its rows are in %s\n"

static const char *sig_name(int sig)
{
	return sig == SIGINT ? "SIGINT" : sig == SIGTERM ? "SIGTERM" : "SIGHUP";
}

static const char *stop_name(void)
{
	return sig_name(stop_sig);
}

/* Say on stderr (@fmt, which names the stop by stop_name) what a stopped
 * command committed, its output closed by then and the signal's end to
 * follow.  SIGPIPE is ignored first: a stderr whose reader went away (a log
 * pipe that died, a `2>&1 | tee` ended by the same Ctrl-C, when stdout's
 * reader is gone too and the command-wide catch would end it by SIGPIPE)
 * costs the line, not the status the signal gives, 143 for a SIGTERM, not
 * 141. */
__attribute__((format(printf, 1, 2))) static void stop_say(const char *fmt, ...)
{
	va_list ap;

	signal(SIGPIPE, SIG_IGN);
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
}

/* A signal caught ends the process as it would have ended it (the command's
 * store and output closed by then). */
static void stop_end(void)
{
	if (stop_sig) {
		signal(stop_sig, SIG_DFL);
		raise(stop_sig);
	}
}

/* Before a command's first batch: 1 when a stop came, said ("before any
 * batch: nothing committed"), for the command to end by it (stop_end), the
 * step under way (the model's load, --ids read, the store opened or
 * created) ended whole. */
static int stop_before_any(void)
{
	if (!stop_sig)
		return 0;
	stop_say("semid: stopped by %s before any batch: nothing committed\n", stop_name());
	return 1;
}

/* Asked by sid_registry_reassign_all during the walk and before each batch,
 * and by sid_registry_import_until after each line: when a signal asks to
 * stop, *@fired (an int, may be NULL) is set, so that the caller tells the
 * work it stopped from a store error of the same code (SID_EUNAVAIL). */
static int stop_asked(void *fired)
{
	if (!stop_sig)
		return 0;
	if (fired)
		*(int *)fired = 1;
	return SID_EUNAVAIL;
}

void (*cli__assign_closing)(void); /* registry_cmd.h */

static int cmd_assign(const struct opts *o, struct sid_error *err)
{
	struct sid_model *m = NULL;
	struct sid_registry *r = NULL;
	struct sid_workspace *ws = NULL;
	struct sid_npy x = {0};
	const struct sid_tower *t;
	struct cli_output w = {0};
	char **ids = NULL;
	float *buf = NULL, *dist = NULL;
	int32_t *codes = NULL;
	struct sid_reg_item *in = NULL;
	struct sid_reg_entry *res = NULL;
	struct cli_progress bar = {0};
	struct sigaction saved[3];
	size_t B = (size_t)o->batch, done = 0, committed = 0;
	uint64_t created = 0, moved = 0;
	long bad;
	int rc, caught = 0, stopped = 0; /* stopped: by a signal, with rows left */

	if ((rc = sid_model_load(o->model, &m, err)) || (rc = sid_model_smoke(m, err))) {
		sid_error_name_file(err, o->model);
		goto fail;
	}
	if (stop_before_any())
		goto fail;
	t = sid_model_tower(m, o->kind);
	if (!t) {
		rc = sid_error_set(err, SID_EINVAL, "%s: the model has no %s tower", o->model,
				   sid_tower_name(o->kind));
		goto fail;
	}
	if ((rc = sid_npy_open(o->input, &x, err))) {
		sid_error_name_file(err, o->input);
		goto fail;
	}
	cli_output_mapped_input(o->input);
	/* found before the store is opened, not at the read */
	if ((rc = sid_npy_check_float(&x, o->input, err)))
		goto fail;
	if (x.cols != (size_t)t->D) {
		rc = sid_error_set(err, SID_EINVAL, "%s: %zu columns, the %s tower takes %d",
				   o->input, x.cols, sid_tower_name(o->kind), t->D);
		goto fail;
	}
	if ((rc = ids_read(o->ids, x.rows, &ids, NULL, err)) || stop_before_any() ||
	    (rc = store_open(o, &r, err)) || stop_before_any())
		goto fail;
	ws = sid_workspace_new();
	buf = malloc(sizeof(float) * B * t->D);
	codes = malloc(sizeof(int32_t) * B * t->L);
	dist = malloc(sizeof(float) * B);
	in = calloc(B, sizeof(*in));
	res = calloc(B, sizeof(*res));
	if (!ws || !buf || !codes || !dist || !in || !res) {
		rc = sid_error_set(err, SID_ENOMEM, "out of memory");
		goto fail;
	}
	if ((rc = out_open(&w, o, r, err)))
		goto fail;
	/* a stop between batches: each one committed has its lines printed
	 * (on_stop over the output's handler, which saved registry_main's) */
	stop_catch(saved, SA_RESTART);
	caught = 1;
	if (w.kind == CLI_OUT_FILE)
		stop_again("semid: stopped at once by a second signal; what was committed stays "
			   "committed, but %s was not written (it gets its name only when "
			   "complete): the same command prints the IDs of the rows committed, "
			   "and assigns the rest\n",
			   output_name(o));
	else
		stop_again(NULL);
	cli_progress_begin(&bar, progress_on(o, 1), x.rows, stderr);
	for (size_t row = 0; row < x.rows; row += B) {
		size_t n = x.rows - row < B ? x.rows - row : B;
		struct sid_encode_out eo = {.codes = codes, .dist = dist};
		if (stop_sig) {
			stopped = 1;
			break;
		}
		if ((rc = sid_npy_read_f32(&x, row, n, buf, err))) {
			sid_error_prefix(err, "%s", o->input); /* "row R, column C ..." */
			goto fail;
		}
		rc = sid_encode(t, buf, n, &eo, ws, err);
		if (!rc && (bad = sid_encode_overflow(dist, NULL, NULL, 0, n)) >= 0)
			rc = sid_error_set_at(err, SID_EINVAL, bad,
					      "values too large for the model: its encoder "
					      "overflows float32 on them");
		if (rc) {
			if (err->index >= 0)
				sid_error_prefix(err, "%s: row %zu", o->input,
						 row + (size_t)err->index);
			else
				sid_error_prefix(err, "%s: rows %zu..%zu", o->input, row,
						 row + n - 1);
			goto fail;
		}
		for (size_t i = 0; i < n; i++)
			in[i] = (struct sid_reg_item){ids[row + i], codes + i * t->L,
						      o->no_emb ? NULL : buf + i * t->D};
		rc = sid_registry_assign(r, o->kind, in, n, t->L, t->D, m->version,
					 o->reassign ? SID_REG_REASSIGN : 0, res, err);
		if (rc) {
			if (err->index >= 0)
				err->index += (long)row;
			goto fail;
		}
		committed = row + n;
		/* committed: acknowledge the batch (with --reassign, whether each
		 * moved, and from which ID) */
		for (size_t i = 0; i < n; i++) {
			char sid[SID_REG_SID_MAX], from[SID_REG_SID_MAX] = "";
			sid_reg_sid_format(res[i].codes, res[i].L, res[i].suffix, sid, sizeof(sid));
			created += res[i].created != 0;
			moved += res[i].moved != 0;
			if (!o->reassign) {
				fprintf(w.fp, "%s\t%s\t%d\n", res[i].id, sid, res[i].created);
				continue;
			}
			if (res[i].moved)
				sid_reg_sid_format(res[i].from_codes, res[i].from_L,
						   res[i].from_suffix, from, sizeof(from));
			fprintf(w.fp, "%s\t%s\t%d\t%d\t%s\n", res[i].id, sid, res[i].created,
				res[i].moved, from);
		}
		if (fflush(w.fp)) {
			rc = sid_error_set(err, SID_EIO, "%s: write failed: %m", output_name(o));
			goto fail;
		}
		cli_progress_update(&bar, done = row + n);
	}
	if (stopped) {
		int file = w.kind == CLI_OUT_FILE;

		cli_progress_end(&bar, done);
		stop_restore(saved); /* before the output puts back its own */
		caught = 0;
		/* a file gets the lines of the rows committed, whole, renamed into
		 * place as a complete one is: the record of what the store now
		 * holds; none committed, it is left as it was */
		if ((rc = out_close(&w, committed || !file, err)))
			goto fail;
		if (committed) {
			stop_again(AGAIN_CLOSED, output_name(o));
			stop_say("semid: stopped by %s after rows 0..%zu of %zu were committed "
				 "(%llu created); their lines are in %s; their ids keep the IDs "
				 "given: the same command assigns the rest\n",
				 stop_name(), committed - 1, x.rows, (unsigned long long)created,
				 output_name(o));
		} else {
			stop_say("semid: stopped by %s before a row was committed: nothing "
				 "assigned%s%s%s\n",
				 stop_name(), file ? "; " : "", file ? output_name(o) : "",
				 file ? " not written" : "");
		}
		goto fail;
	}
	rc = out_close(&w, 1, err);
	/* the output closed put back registry_main's catch, on_stop too: a
	 * signal from here is noted, not said to have left the output
	 * unwritten by the output's handler that @saved holds, nor by a
	 * second signal */
	caught = 0;
	if (!rc)
		stop_again(AGAIN_CLOSED, output_name(o));
	if (!rc && o->reassign)
		fprintf(stderr,
			"semid: %zu %s inputs to model %s: %llu moved to new codes, %llu created, "
			"%llu kept their ID\n",
			x.rows, sid_tower_name(o->kind), m->version, (unsigned long long)moved,
			(unsigned long long)created,
			(unsigned long long)(x.rows - moved - created));
	else if (!rc) /* what only the third column said, row by row */
		fprintf(
		    stderr,
		    "semid: %zu %s inputs to model %s: %llu created, %llu known (kept their ID)\n",
		    x.rows, sid_tower_name(o->kind), m->version, (unsigned long long)created,
		    (unsigned long long)(x.rows - created));
fail:
	cli_progress_end(&bar, done); /* before a message; no-op when not drawn */
	if (caught)
		stop_restore(saved);
	if (rc)
		out_close(&w, 0, NULL);
	if (rc && committed) /* a full disk, a bad row: what is in the store */
		sid_error_append(err,
				 "; rows 0..%zu were committed before it, their ids keep the IDs "
				 "given: once that is fixed, the same command assigns the rest",
				 committed - 1);
	for (size_t i = 0; ids && i < x.rows; i++)
		free(ids[i]);
	free(ids);
	free(buf);
	free(dist);
	free(codes);
	free(in);
	free(res);
	sid_workspace_free(ws);
	cli_output_mapped_input(NULL);
	sid_npy_close(&x);
	if (cli__assign_closing)
		cli__assign_closing();
	sid_registry_close(r);
	sid_model_unref(m);
	return rc;
}

/* ---- delete ---- */

static FILE *log_open(const struct opts *o, struct sid_registry *r, const char *header,
		      const char *what, struct sid_error *err);
static int log_close(FILE *f, const char *name, struct sid_error *err);

/*
 * A delete's output could not take the lines of a committed batch of @k
 * @what: the caller writes them to stderr after the header said here, since
 * they may be the only record of what was erased.
 */
static int log_lost(const struct opts *o, size_t k, const char *what, const char *fields,
		    struct sid_error *err)
{
	int rc = sid_error_set(err, SID_EIO,
			       "%s: write failed: %s; the %zu %s of the batch were deleted all the "
			       "same: their lines were written to stderr above",
			       output_name(o), strerror(errno), k, what);
	fprintf(stderr,
		"semid: %s cannot be written; the lines of a committed batch (%s) follow:\n",
		output_name(o), fields);
	return rc;
}

void (*cli__delete_rows_window)(int); /* registry_cmd.h */

/* delete --rows: the SQLite rows of the operands, in one transaction.  A
 * stop before it deletes nothing, one that comes during it lets it end
 * whole; either is said, then ends it by the signal.  A row whose entry
 * its id names is left (sid_registry_delete_rows), said on stderr with its
 * kind and id.  Sets *@not_found when some rows were not there or left. */
static int delete_rows(const struct opts *o, int *not_found, struct sid_error *err)
{
	struct sid_registry *r = NULL;
	FILE *fp = NULL;
	int64_t *rows = calloc(o->nargs, sizeof(*rows));
	struct sid_reg_entry *res = calloc(o->nargs, sizeof(*res));
	size_t gone = 0, left = 0;
	int rc = 0, early = 0, committed = 0;

	if (!rows || !res)
		rc = sid_error_set(err, SID_ENOMEM, "out of memory");
	for (size_t i = 0; i < o->nargs && !rc; i++) {
		char *end;
		long long v = strtoll(o->args[i], &end, 10);
		if (!(o->args[i][0] >= '1' && o->args[i][0] <= '9') || *end || v < 1 ||
		    v == LLONG_MAX)
			rc = sid_error_set(err, SID_EINVAL,
					   "row operand %zu: \"%.64s\" is not a row number (1, 2, "
					   "...)",
					   i + 1, o->args[i]);
		rows[i] = v;
	}
	if (!rc && !(rc = store_open(o, &r, err)) &&
	    !(fp = log_open(o, r, NULL, "the output", err)))
		rc = err->code ? err->code : SID_EIO;
	if (!rc && cli__delete_rows_window)
		cli__delete_rows_window(0);
	if (!rc && !(early = stop_before_any())) {
		stop_again(NULL); /* a second signal from here: the batches' words */
		rc = sid_registry_delete_rows(r, rows, o->nargs, res, err);
		committed = !rc;
		if (!rc && cli__delete_rows_window)
			cli__delete_rows_window(1);
	}
	if (early) /* (the output's lines: none) */
		rc = 0;
	for (size_t i = 0; i < o->nargs && !rc && !early; i++) { /* committed */
		fprintf(fp, "%lld\t%d\n", (long long)rows[i], res[i].deleted);
		gone += res[i].deleted != 0;
	}
	if (!rc && (fflush(fp) != 0 || ferror(fp))) {
		rc = log_lost(o, o->nargs, "rows", "row, deleted", err);
		for (size_t i = 0; i < o->nargs; i++)
			fprintf(stderr, "%lld\t%d\n", (long long)rows[i], res[i].deleted);
	}
	for (size_t i = 0; i < o->nargs && committed; i++) {
		const struct sid_reg_entry *e = &res[i];
		char sid[SID_REG_SID_MAX];

		if (e->deleted || !e->id[0]) /* (deleted, or not there) */
			continue;
		left++;
		sid_reg_sid_format(e->codes, e->L, e->suffix, sid, sizeof(sid));
		fprintf(stderr,
			"semid: row %lld holds the %s entry of id \"%s\" (sid %s), readable "
			"and of a known kind, which its id names: left in place (the row a "
			"check named may have gone since, and its number been given to a new "
			"entry); if this entry is meant to go, delete it by its id: semid "
			"registry delete --kind %s ID\n",
			(long long)rows[i], sid_tower_name(e->kind), e->id, sid,
			sid_tower_name(e->kind));
	}
	if (fp) {
		int crc = log_close(fp, output_name(o), rc ? NULL : err);
		rc = rc ? rc : crc;
	}
	if (!rc && !early) {
		char more[96] = "";

		if (stop_sig)
			stop_say("semid: stopped by %s as the rows' one transaction ran: it "
				 "was committed whole; their lines are in %s\n",
				 stop_name(), output_name(o));
		if (left)
			snprintf(more, sizeof(more), ", %zu left in place (entries their ids name)",
				 left);
		fprintf(stderr, "semid: deleted %zu of %zu rows from %s; %zu not found%s\n", gone,
			o->nargs, sid_registry_label(r), o->nargs - gone - left, more);
		*not_found = gone < o->nargs;
	}
	free(rows);
	free(res);
	sid_registry_close(r);
	return rc;
}

/* delete's lines for @k results: id, the sid it had (none: not stored, or
 * a row that did not read), deleted 1/0. */
static void delete_lines(FILE *f, const struct sid_reg_entry *res, size_t k)
{
	for (size_t i = 0; i < k; i++) {
		char sid[SID_REG_SID_MAX] = "";
		if (res[i].deleted && res[i].L)
			sid_reg_sid_format(res[i].codes, res[i].L, res[i].suffix, sid, sizeof(sid));
		fprintf(f, "%s\t%s\t%d\n", res[i].id, sid, res[i].deleted);
	}
}

/* The ids (operands or --ids), checked before the store is opened, deleted
 * --batch at a time, a line each once its batch is committed: -o FILE is a
 * log appended to as reassign's moves are, not a file published at the
 * end, so that when a later batch fails the lines of those committed stay
 * (a second run reports them not found).  Sets *@not_found when some were
 * not stored. */
static int cmd_delete(const struct opts *o, int *not_found, struct sid_error *err)
{
	struct sid_registry *r = NULL;
	FILE *fp = NULL;
	struct cli_progress bar = {0};
	struct sid_reg_entry *res = NULL;
	char **file_ids = NULL, *const *ids = o->args;
	size_t n = o->nargs, B = (size_t)o->batch, done = 0;
	uint64_t deleted = 0;
	int rc = 0, stopped = 0, early = 0; /* stopped: by a signal, with ids left */

	if (o->ids)
		rc = ids_read(o->ids, IDS_ANY, &file_ids, &n, err);
	else
		for (size_t i = 0; i < n && !rc; i++)
			if ((rc = sid_reg_id_check(ids[i], err)))
				sid_error_prefix(err, "ID operand %zu", i + 1);
	if (rc || (early = stop_before_any()) || (rc = store_open(o, &r, err)) ||
	    (early = stop_before_any()))
		goto fail;
	if (file_ids)
		ids = file_ids;
	if (!(res = calloc(B, sizeof(*res)))) {
		rc = sid_error_set(err, SID_ENOMEM, "out of memory");
		goto fail;
	}
	if (!(fp = log_open(o, r, NULL, "the output", err))) {
		rc = err->code ? err->code : SID_EIO;
		goto fail;
	}
	stop_again(NULL); /* a second signal from here: the batches' words */
	cli_progress_begin(&bar, progress_on(o, 1), n, stderr);
	for (size_t at = 0; at < n; at += B) {
		size_t k = n - at < B ? n - at : B;
		if (stop_sig) {
			stopped = 1;
			break;
		}
		rc = sid_registry_delete(r, o->kind, (const char *const *)ids + at, k, res, err);
		if (rc)
			goto fail;
		for (size_t i = 0; i < k; i++) /* committed: acknowledge the batch */
			deleted += res[i].deleted != 0;
		delete_lines(fp, res, k);
		if (fflush(fp) != 0 || ferror(fp)) { /* line-buffered: a line's write failed */
			/* the batch is committed, and the log was the only record
			 * of the sids it erased: they go to stderr instead */
			rc = log_lost(o, k, "ids", "id, sid, deleted", err);
			delete_lines(stderr, res, k);
			goto fail;
		}
		cli_progress_update(&bar, done = at + k);
	}
	*not_found = deleted < n;
fail:
	cli_progress_end(&bar, done); /* before a message; no-op when not drawn */
	if (fp) {		      /* synced either way: its lines are of committed deletes */
		int crc = log_close(fp, output_name(o), rc ? NULL : err);
		rc = rc ? rc : crc;
	}
	if (!rc && stopped) {
		stop_say("semid: stopped by %s after %zu of %zu %s ids (%llu deleted); their lines "
			 "are in %s; run it again for the rest\n",
			 stop_name(), done, n, sid_tower_name(o->kind), (unsigned long long)deleted,
			 output_name(o));
	} else if (!rc && !early) {
		fprintf(stderr, "semid: deleted %llu of %zu %s ids from %s; %llu not found\n",
			(unsigned long long)deleted, n, sid_tower_name(o->kind),
			sid_registry_label(r), (unsigned long long)(n - deleted));
	}
	for (size_t i = 0; file_ids && i < n; i++)
		free(file_ids[i]);
	free(file_ids);
	free(res);
	sid_registry_close(r);
	return rc;
}

/* ---- export, import ---- */

/* --format, else the file's name: .jsonl or .json is JSON lines, anything
 * else (stdout too) TSV; the same rule for export's -o and import's file. */
static enum sid_reg_format format_of(const struct opts *o, const char *name)
{
	size_t len = name ? strlen(name) : 0;

	if (o->format)
		return strcmp(o->format, "jsonl") ? SID_REG_TSV : SID_REG_JSONL;
	/* in any case, as encode's .npy: EXPORT.JSONL is JSON lines too */
	if ((len > 6 && !strcasecmp(name + len - 6, ".jsonl")) ||
	    (len > 5 && !strcasecmp(name + len - 5, ".json")))
		return SID_REG_JSONL;
	return SID_REG_TSV;
}

static int cmd_export(const struct opts *o, struct sid_registry *r, struct sid_error *err)
{
	struct cli_output w = {0};
	struct walk_bar bar;
	int rc = out_open(&w, o, r, err);
	if (!rc) {
		walk_bar_begin(&bar, o, r, o->kind, 1);
		rc = sid_registry_export(r, o->kind, format_of(o, o->output), o->with_emb, w.fp,
					 err);
		walk_bar_end(&bar, r);
		/* "export: write failed": the library has no name for the file */
		if (rc && ferror(w.fp))
			sid_error_prefix(err, "%s", cli_output_name(&w));
	}
	if (rc) {
		out_close(&w, 0, NULL);
		return rc;
	}
	return out_close(&w, 1, err);
}

static void print_conflict(long line, const char *msg, void *ctx)
{
	char full[SID_ERROR_MSG_MAX + 64];

	snprintf(full, sizeof(full), "%s: line %ld: conflict: %s", (const char *)ctx, line, msg);
	sid_error_print(stderr, "semid", full);
}

/*
 * Open the file to import (before the store, so a missing or unreadable file
 * does not leave a new empty store behind): "-" is stdin.
 */
static int import_open(const struct opts *o, FILE **out, struct sid_error *err)
{
	const char *name = o->arg;
	struct stat st;
	FILE *f;

	*out = NULL;
	if (!strcmp(name, "-")) {
		*out = stdin;
		return 0;
	}
	f = fopen(name, "re");
	if (!f)
		return sid_error_set(err, SID_EINVAL, "%s: cannot open: %m", name);
	if (fstat(fileno(f), &st) == 0 && S_ISDIR(st.st_mode)) {
		fclose(f);
		return sid_error_set(err, SID_EINVAL, "%s: is a directory", name);
	}
	*out = f;
	return 0;
}

/* An import's input, read through a count of its bytes for the bar. */
struct counted {
	FILE *f;
	struct cli_progress bar; /* MiB */
	uint64_t n;
};

static ssize_t counted_read(void *cookie, char *buf, size_t len)
{
	struct counted *k = cookie;
	size_t got = fread(buf, 1, len, k->f);

	k->n += got;
	cli_progress_update(&k->bar, (size_t)(k->n >> 20));
	return !got && ferror(k->f) ? -1 : (ssize_t)got;
}

static int cmd_import(const struct opts *o, struct sid_registry *r, FILE *f, int *conflicts,
		      struct sid_error *err)
{
	struct counted k = {0};
	struct stat st;
	FILE *g = NULL;
	struct sid_reg_import_result res;
	enum sid_reg_format fmt = format_of(o, o->arg);
	const char *name = strcmp(o->arg, "-") ? o->arg : "stdin"; /* not "semid: -: line 3" */
	int rc;

	if (stop_before_any()) /* as the store opened (main ends it by the signal) */
		return 0;
	if (progress_on(o, 0) && fstat(fileno(f), &st) == 0 && S_ISREG(st.st_mode)) {
		cookie_io_functions_t io = {counted_read, NULL, NULL, NULL};
		k.f = f;
		cli_progress_begin(&k.bar, 1, (size_t)(st.st_size >> 20), stderr);
		k.bar.unit = "MiB";
		if (!(g = fopencookie(&k, "r", io)))
			return sid_error_set(err, SID_ENOMEM, "out of memory");
	}
	/* each transaction of lines stands on its own: a stop commits those
	 * read, at once when it comes as a read waits, and a second import of
	 * the file adds the rest */
	stop_catch(NULL, 0);
	stop_again(NULL);
	rc = sid_registry_import_until(r, fmt, g ? g : f, print_conflict, (void *)name, stop_asked,
				       NULL, &res, err);
	stop_catch(NULL, SA_RESTART);
	if (g) {
		cli_progress_end(&k.bar, (size_t)(k.n >> 20));
		fclose(g); /* not f: the cookie has no close */
	}
	if (rc == SID_EUNAVAIL && stop_sig) { /* (main ends it by the signal) */
		stop_say("semid: stopped by %s after line %ld of %s, committed: %llu added, %llu "
			 "already present, %llu conflicts; importing it again adds the rest\n",
			 stop_name(), res.lines, name, (unsigned long long)res.added,
			 (unsigned long long)res.same, (unsigned long long)res.conflicts);
		sid_error_clear(err);
		return 0;
	}
	if (rc)
		return sid_error_prefix(err, "%s", name);
	fprintf(stderr, "semid: imported %s: %llu added, %llu already present, %llu conflicts",
		name, (unsigned long long)res.added, (unsigned long long)res.same,
		(unsigned long long)res.conflicts);
	/* an export without --embeddings, the obvious way to move a store,
	 * drops them all, and only the next diff or reassign said so */
	if (res.added_bare)
		fprintf(stderr,
			"; %llu of the added have no embedding (%s), so diff and reassign cannot "
			"compare them",
			(unsigned long long)res.added_bare,
			/* some lines had one: the file was exported with them, and
			 * these had none in the store it came from */
			res.added_bare < res.added
			    ? "their lines have none: the store it was exported from kept none "
			      "for them"
			    : "the file has none: export with --embeddings to keep them");
	fputc('\n', stderr);
	*conflicts = res.conflicts > 0;
	return 0;
}

/* ---- backup ---- */

struct copy_pace {
	struct cli_progress bar; /* in MiB */
	double rate;		 /* bytes a second, 0: as fast as it goes */
};

static void backup_progress(void *ctx, uint64_t done, uint64_t total)
{
	struct copy_pace *c = ctx;
	double wait = cli_pace_delay(done, c->rate, cli_now() - c->bar.t0);

	c->bar.total = (size_t)(total >> 20);
	cli_progress_update(&c->bar, (size_t)(done >> 20));
	if (wait > 0) {
		struct timespec ts = {(time_t)wait, (long)((wait - (double)(time_t)wait) * 1e9)};
		nanosleep(&ts, NULL);
	}
}

/* Copy @src into @w's temp file (with a bar if @bar) at most @rate bytes a
 * second (0: no limit), its size for a message in @size.  Messages call the
 * temp file "the temporary file for FILE", as the publish's do: its own
 * name is gone once the command fails. */
static int copy_into(struct sid_registry *src, struct cli_output *w, int bar, double rate,
		     char *size, size_t len, struct sid_error *err)
{
	struct copy_pace c;
	struct stat st;
	int rc;

	cli_progress_begin(&c.bar, bar, 0, stderr);
	c.bar.unit = "MiB";
	c.rate = rate;
	rc = sid_registry_backup(src, w->pub.tmp, cli_output_file(w), backup_progress, &c, err);
	cli_progress_end(&c.bar, c.bar.total);
	if (!rc && stat(w->pub.tmp, &st) != 0)
		rc = sid_error_set(err, SID_EIO, "%s: stat the temporary file for it: %m",
				   cli_output_file(w));
	if (!rc)
		sid_size_str((double)st.st_size, size, len);
	return rc;
}

/* A side file beside @file that SQLite would apply to a new file of that
 * name: a -wal with frames or a -journal (a hot one rolls back into it).
 * 1 with its name in @side, else 0. */
static int stale_side_file(const char *file, char *side, size_t len)
{
	static const char *const sfx[] = {"-wal", "-journal"};
	struct stat st;

	for (int i = 0; i < 2; i++) {
		snprintf(side, len, "%s%s", file, sfx[i]);
		if (stat(side, &st) == 0 && st.st_size > 0)
			return 1;
	}
	return 0;
}

/* The process's umask (it is read by setting it, so set back at once). */
static mode_t umask_now(void)
{
	mode_t m = umask(077);

	umask(m);
	return m;
}

/* (below, with restore) */
static int refuse_if_open(const char *store, const char *then, struct sid_error *err);
#define RESTORE_THEN "stop it before restoring"

static int cmd_backup(const struct opts *o, struct sid_registry *r, struct sid_error *err)
{
	const char *store = sid_registry_label(r);
	char owal[4096 + 16], size[32];
	struct inputs in;
	struct cli_output w = {0};
	struct stat st;
	double t0 = cli_now();
	int rc;

	inputs_of(o, store, &in);
	if ((rc = output_not_side_file(o->output, &in, "the backup", err)) ||
	    (rc = cli_output_open_named(&w, o->output, in.v, err)))
		return rc;
	/* a store in use there: replaced, its process would go on with the
	 * old file unlinked, and every ID in it lost once it stops */
	if (stat(cli_output_file(&w), &st) == 0 && S_ISREG(st.st_mode) &&
	    (rc = refuse_if_open(cli_output_file(&w),
				 "a backup must not replace a store in use: name another file",
				 err))) {
		out_close(&w, 0, NULL);
		return rc;
	}
	/* beside the file replaced, which a link names */
	if (stale_side_file(cli_output_file(&w), owal, sizeof(owal))) {
		out_close(&w, 0, NULL);
		return sid_error_set(
		    err, SID_EINVAL,
		    "--output %s: %s beside it holds commits of the file it would "
		    "replace (a store used there), which SQLite would apply to the "
		    "backup; move both aside or name another file",
		    o->output, owal);
	}
	rc = copy_into(r, &w, progress_on(o, 0), o->max_rate * 1048576.0, size, sizeof(size), err);
	/* no more readable than the store (a copy of every ID and embedding),
	 * nor than the umask lets a new file be (umask 077 before a backup into
	 * a shared directory) */
	if (!rc && stat(store, &st) == 0 && chmod(w.pub.tmp, st.st_mode & 0777 & ~umask_now()) != 0)
		rc = sid_error_set(err, SID_EIO, "%s: chmod the temporary file for it: %m",
				   cli_output_file(&w));
	if (rc) {
		out_close(&w, 0, NULL);
		return rc;
	}
	if ((rc = out_close(&w, 1, err)))
		return rc;
	fprintf(stderr, "semid: backed up %s to %s: %s, checked, in %.1f s\n", store, o->output,
		size, cli_now() - t0);
	return 0;
}

/* ---- restore ---- */

/* The name of process @pid (/proc/PID/comm) in @comm, "?" when unknown. */
static void comm_of(pid_t pid, char *comm, size_t len)
{
	char path[64];
	FILE *c;

	snprintf(comm, len, "?");
	snprintf(path, sizeof(path), "/proc/%d/comm", (int)pid);
	if (pid > 0 && (c = fopen(path, "re"))) {
		if (fgets(comm, (int)len, c))
			comm[strcspn(comm, "\n")] = '\0';
		fclose(c);
	}
}

/* A process other than this one with the file at @file open (/proc/PID/fd):
 * its pid, or 0 when none is seen or there is no such file (only root sees
 * the processes of other users; lock_holder sees those). */
static pid_t holder_of(const char *file)
{
	DIR *proc, *fds;
	struct dirent *p, *f;
	char path[320];
	struct stat st, want;
	pid_t found = 0, self = getpid();

	if (stat(file, &want) != 0)
		return 0;
	proc = opendir("/proc");
	while (proc && !found && (p = readdir(proc))) {
		pid_t pid = (pid_t)atol(p->d_name);
		if (pid <= 0 || pid == self)
			continue;
		snprintf(path, sizeof(path), "/proc/%d/fd", (int)pid);
		if (!(fds = opendir(path)))
			continue;
		while (!found && (f = readdir(fds))) {
			snprintf(path, sizeof(path), "/proc/%d/fd/%s", (int)pid, f->d_name);
			if (f->d_name[0] != '.' && stat(path, &st) == 0 &&
			    st.st_dev == want.st_dev && st.st_ino == want.st_ino)
				found = pid;
		}
		closedir(fds);
	}
	if (proc)
		closedir(proc);
	return found;
}

/*
 * Whether another process has the SQLite store at @store open, seen by its
 * lock: a connection in WAL mode holds a read lock on the store's SHARED
 * byte range (bytes 1073741826-1073742335, in the lock-byte page of SQLite's
 * file format) for as long as it is open, whoever runs it.  1 with its pid in
 * *@pid (0 when it is in another PID namespace), 0 when no lock is held or
 * the file cannot be read.  Locks of this process are not seen, and closing
 * the descriptor would drop any this process held on the file: it is called
 * before this process opens the store.
 */
static int lock_holder(const char *store, pid_t *pid)
{
	struct flock fl = {.l_type = F_WRLCK,
			   .l_whence = SEEK_SET,
			   .l_start = 0x40000002, /* SQLite's SHARED_FIRST */
			   .l_len = 510};	  /* SHARED_SIZE */
	int fd = open(store, O_RDONLY | O_CLOEXEC), held;

	if (fd < 0)
		return 0;
	held = fcntl(fd, F_GETLK, &fl) == 0 && fl.l_type != F_UNLCK;
	close(fd);
	*pid = held ? fl.l_pid : 0;
	return held;
}

/* 1 when the file at @path (@st) begins as a model does. */
static int is_model_file(const char *path, const struct stat *st)
{
	unsigned char head[9];

	return sid_file_head(path, head, sizeof(head)) == (ssize_t)sizeof(head) &&
	       sid_st_sniff(head, (uint64_t)st->st_size);
}

/* SID_EUNAVAIL when another process has the store at @store or its -wal
 * open, naming it; else 0. */
static int refuse_if_open(const char *store, const char *then, struct sid_error *err)
{
	char file[4096 + 8], comm[64], who[32];
	pid_t pid;

	for (int i = 0; i < 2; i++) {
		snprintf(file, sizeof(file), "%s%s", store, i ? "-wal" : "");
		if ((pid = holder_of(file))) {
			comm_of(pid, comm, sizeof(comm));
			return sid_error_set(
			    err, SID_EUNAVAIL, "registry %s: %s open in process %d (%s); %s", store,
			    i ? "its -wal is" : "the store is", (int)pid, comm, then);
		}
	}
	if (lock_holder(store, &pid)) {
		comm_of(pid, comm, sizeof(comm));
		snprintf(who, sizeof(who), "%d", (int)pid);
		return sid_error_set(err, SID_EUNAVAIL,
				     "registry %s: the store is open in process %s (%s), which "
				     "holds its SQLite lock; %s",
				     store, pid > 0 ? who : "of another PID namespace", comm, then);
	}
	return 0;
}

/* Give the store at @store a second name, @aside: STORE.pre-restore.<UTC
 * time>, with .2, .3, ... after it when the name is taken. */
static int keep_aside(const char *store, char *aside, size_t len, struct sid_error *err)
{
	char stamp[32];
	time_t now = time(NULL);

	strftime(stamp, sizeof(stamp), "%Y%m%dT%H%M%SZ", gmtime(&now));
	for (int i = 1; i < 1000; i++) {
		if (i == 1)
			snprintf(aside, len, "%s.pre-restore.%s", store, stamp);
		else
			snprintf(aside, len, "%s.pre-restore.%s.%d", store, stamp, i);
		if (link(store, aside) == 0)
			return 0;
		if (errno != EEXIST)
			break;
	}
	return sid_error_set(err, SID_EIO, "registry %s: cannot keep it as %s: %m", store, aside);
}

void (*cli__restore_window)(void); /* registry_cmd.h */

/* The signal mask of before restore_hold (restore_let_go puts it back). */
static sigset_t restore_was;
static int restore_held;

/* Hold SIGINT, SIGTERM and SIGHUP from the old store's second name to the
 * copy's rename: stopped between, the store's name held the old file
 * without the -wal that had moved (its last commits apparently gone) while
 * the output's handler said nothing was written. */
static void restore_hold(void)
{
	sigset_t stops;

	sigemptyset(&stops);
	for (int i = 0; i < 3; i++)
		sigaddset(&stops, stop_sigs[i]);
	pthread_sigmask(SIG_BLOCK, &stops, &restore_was);
	restore_held = 1;
}

/* The stop signal held by restore_hold and pending, or 0. */
static int restore_stop_pending(void)
{
	sigset_t p;

	if (restore_held && sigpending(&p) == 0)
		for (int i = 0; i < 3; i++)
			if (sigismember(&p, stop_sigs[i]))
				return stop_sigs[i];
	return 0;
}

/* After restore's last line: a stop held ends the process now, by its
 * signal (the handlers of before the output's are back). */
static void restore_let_go(void)
{
	if (restore_held)
		pthread_sigmask(SIG_SETMASK, &restore_was, NULL);
	restore_held = 0;
}

/* Undo what a restore did to the old store at @store once it failed before
 * the copy took its name: the first @moved of @sides back from beside
 * @aside, and @aside, its second name, removed (the file is still the
 * store's).  0 when the store is as it was. */
static int restore_undo(const char *store, const char *aside, const char *const *sides, int moved,
			const struct stat *old)
{
	char from[4300], to[4400];
	int rc = 0;

	for (int i = 0; i < moved; i++) {
		snprintf(from, sizeof(from), "%s%s", store, sides[i]);
		snprintf(to, sizeof(to), "%s%s", aside, sides[i]);
		if (rename(to, from) != 0 && errno != ENOENT)
			rc = -1;
	}
	if (!rc && sid_same_file(store, old) && sid_same_file(aside, old))
		rc = unlink(aside);
	return rc;
}

/*
 * Put @o->arg, a backup, in place of the SQLite store.  The order keeps
 * every moment safe to crash in: the backup is copied (and checked) beside
 * the store under a temp name, and synced; nothing may have the store open,
 * before the copy and again after it; the old store's WAL is folded into
 * it; the old file gets a second name, STORE.pre-restore.<time>; only then
 * does the copy take the store's name, in one rename.  A store that cannot
 * be read (the reason for many restores) or written is not touched, and its
 * side files move beside its new name; from then to the rename, a few
 * renames with no sync between, the store's name holds the old file without
 * them: the stop signals are held across (restore_hold, let go by the
 * caller once it has said what was done), and a failure puts them back.
 * Nothing is deleted.
 */
static int cmd_restore(const struct opts *o, struct sid_error *err)
{
	static const char *const sides[] = {"-wal", "-shm", "-journal"};
	char path[4096], aside[4200], from[4300], to[4400], size[32];
	const char *store, *backup = o->arg, *inputs[] = {backup, NULL};
	struct sid_registry *b = NULL;
	struct cli_output w = {0};
	struct sid_error e2;
	struct stat old, st;
	double t0 = cli_now();
	int rc, have, fold = 0, moved = 0, kept = 0, stop;

	if ((rc = store_target(o, path, &store, err)))
		return rc;
	if (!*store) /* (cli_output_open_named would call it --output) */
		return sid_error_set(err, SID_EINVAL, "registry: no store given (--db is empty)");
	if (sid_registry_target_is_pg(store))
		return sid_error_set(
		    err, SID_EINVAL,
		    "restore replaces a SQLite store's file; a PostgreSQL store is "
		    "restored with PostgreSQL's own tools (pg_restore)");
	/* a directory: not SQLite's "disk I/O error", nor a rename over it */
	if ((rc = store_file_check(backup, err)) || (rc = store_file_check(store, err)))
		return rc;
	/* the link and the renames below would act on the link itself */
	if (lstat(store, &old) == 0 && S_ISLNK(old.st_mode))
		return sid_error_set(err, SID_EINVAL,
				     "registry %s is a symbolic link; restore into the file it "
				     "names",
				     store);
	have = stat(store, &old) == 0;
	/* by any name (cli_output_open_named would call it --output) */
	if (have && sid_same_file(backup, &old))
		return sid_error_set(err, SID_EINVAL,
				     "BACKUP %s is the store %s itself, not a backup of it; name "
				     "the backup to restore",
				     backup, store);
	/* --db MODEL: the model would be moved aside for a store, and the
	 * server watching it would find a store at its model's path */
	if (have && is_model_file(store, &old))
		return sid_error_set(err, SID_EINVAL,
				     "registry %s is a model file, not a store; restore replaces "
				     "a store (name it with --db, or give the model with --model "
				     "for the store next to it)",
				     store);
	if (!have && stale_side_file(store, from, sizeof(from)))
		return sid_error_set(err, SID_EINVAL,
				     "registry %s: there is no store, but %s holds commits of one "
				     "that was there, which SQLite would apply to the restored "
				     "copy; move it aside first",
				     store, from);
	if (have && (rc = refuse_if_open(store, RESTORE_THEN, err)))
		return rc;
	/* a store this semid reads: the schema is checked as it opens */
	if ((rc = sid_registry_open(backup, SID_REG_READONLY, &b, err)))
		return rc;
	if ((rc = cli_output_open_named(&w, store, inputs, err)))
		goto out;
	rc = copy_into(b, &w, progress_on(o, 0), o->max_rate * 1048576.0, size, sizeof(size), err);
	/* the mode and owner of the file it replaces (a restore run as root
	 * must not leave the server's user a store it cannot write), or the
	 * backup's mode as the umask lets a new file have it */
	if (!rc && (have || stat(backup, &st) == 0) &&
	    chmod(w.pub.tmp, have ? old.st_mode & 07777 : st.st_mode & 0777 & ~umask_now()) != 0)
		rc = sid_error_set(err, SID_EIO, "%s: chmod the temporary file for it: %m",
				   cli_output_file(&w));
	if (!rc && have && chown(w.pub.tmp, old.st_uid, old.st_gid) != 0 && errno != EPERM)
		rc = sid_error_set(err, SID_EIO, "%s: chown the temporary file for it: %m",
				   cli_output_file(&w));
	/* synced now, before the old store's side files move, and not by the
	 * rename's commit: their move to the rename is then a few renames */
	if (!rc && fsync(w.pub.fd) != 0)
		rc = sid_error_set(err, SID_EIO, "%s: fsync the temporary file for it: %m",
				   cli_output_file(&w));
	/* again: the copy may have taken minutes, and a process that opened
	 * the store meanwhile would go on writing into whatever has its name */
	if (!rc && have)
		rc = refuse_if_open(store, RESTORE_THEN, err);
	if (!rc && have) {
		fold = sid_registry_sqlite_fold_wal(store, &e2);
		if (fold == SID_EUNAVAIL) {
			*err = e2;
			rc = fold;
		} else {
			restore_hold();
			kept = !(rc = keep_aside(store, aside, sizeof(aside), err));
		}
		/* not folded: its side files go with it */
		for (int i = 0; i < 3 && !rc && fold; i++) {
			snprintf(from, sizeof(from), "%s%s", store, sides[i]);
			snprintf(to, sizeof(to), "%s%s", aside, sides[i]);
			if (rename(from, to) == 0)
				moved = i + 1;
			else if (errno != ENOENT)
				rc = sid_error_set(err, SID_EIO, "registry %s: cannot move %s: %m",
						   store, from);
		}
	}
	if (!rc && cli__restore_window)
		cli__restore_window();
	/* Nothing is removed after: the fold's close removed the emptied -wal
	 * and the -shm, and should a server have opened the new store at once,
	 * they would be its own. */
	if (!rc && (rc = out_close(&w, 1, err)) && have && !sid_same_file(store, &old)) {
		/* in place, its directory not synced */
		sid_error_prefix(err, "registry %s: restored, the store it replaced is %s%s", store,
				 aside, fold ? ", its side files beside it" : "");
		goto out;
	}
	if (rc) {
		out_close(&w, 0, NULL);
		if (kept && restore_undo(store, aside, sides, moved, &old) == 0)
			sid_error_append(err, "; the store %s was left as it was", store);
		else if (kept)
			sid_error_append(err,
					 "; the store it was to replace is kept as %s%s, and "
					 "is still %s",
					 aside, fold ? ", its side files beside it" : "", store);
		goto out;
	}
	fprintf(stderr, "semid: restored %s from %s: %s, checked, in %.1f s", store, backup, size,
		cli_now() - t0);
	if (!have)
		fprintf(stderr, " (there was no store)\n");
	else if (fold)
		fprintf(stderr,
			"; the store it replaced is %s, its -wal not folded in (%s) but "
			"beside it\n",
			aside, e2.msg);
	else
		fprintf(stderr, "; the store it replaced is %s\n", aside);
	if ((stop = restore_stop_pending()))
		fprintf(stderr,
			"semid: %s came while the store was being replaced and waited for it: "
			"the restore is complete\n",
			sig_name(stop));
out:
	sid_registry_close(b);
	return rc;
}

/* ---- stats, diff ---- */

/* diff, reassign: the model NEW given with --model. */
static int load_new(const struct opts *o, struct sid_model **m, struct sid_error *err)
{
	int rc;

	if ((rc = sid_model_load(o->model, m, err)) == 0 && (rc = sid_model_smoke(*m, err))) {
		sid_model_unref(*m);
		*m = NULL;
	}
	if (rc)
		sid_error_name_file(err, o->model);
	return rc;
}

static json_t *u64_array(const uint64_t *v, int n)
{
	json_t *a = json_array();
	for (int i = 0; i < n; i++)
		json_array_append_new(a, json_integer((json_int_t)v[i]));
	return a;
}

static int cmd_stats(const struct opts *o, struct sid_registry *r, struct sid_error *err)
{
	struct sid_reg_stats st;
	struct walk_bar bar;
	json_t *hist;
	int rc, last = -1;

	walk_bar_begin(&bar, o, r, o->kind, 0);
	rc = sid_registry_stats(r, o->kind, &st, err);
	walk_bar_end(&bar, r);
	if (rc)
		return rc;
	hist = json_array();
	for (int b = 0; b < SID_REG_HIST_BUCKETS; b++)
		if (st.suffix_hist[b])
			last = b;
	for (int b = 0; b <= last; b++) {
		int64_t lo = b ? (int64_t)1 << (b - 1) : 0, hi = b ? (int64_t)((1ull << b) - 1) : 0;
		json_array_append_new(hist, json_pack("{s:I, s:I, s:I}", "min", (json_int_t)lo,
						      "max", (json_int_t)hi, "count",
						      (json_int_t)st.suffix_hist[b]));
	}
	return print_json(json_pack("{s:s, s:s, s:s, s:I, s:i, s:o, s:I, s:o, s:I}", "backend",
				    sid_registry_backend(r), "store", sid_registry_label(r), "kind",
				    sid_tower_name(o->kind), "items", (json_int_t)st.items,
				    "levels", st.L, "unique_prefixes", u64_array(st.prefixes, st.L),
				    "max_suffix", (json_int_t)st.max_suffix, "suffix_histogram",
				    hist, "with_embedding", (json_int_t)st.with_embedding),
			  o, r, err);
}

/* ---- check ---- */

struct check_list {
	json_t *a;
	long limit;
	uint64_t left_out;
};

static int check_finding(const struct sid_reg_finding *f, void *ctx)
{
	struct check_list *c = ctx;
	json_t *j;

	if ((long)json_array_size(c->a) >= c->limit) {
		c->left_out++;
		return 0;
	}
	j = json_pack("{s:s, s:o, s:o, s:o, s:o}", "problem", sid_reg_problem_name(f->problem),
		      "kind",
		      f->kind == SID_TOWER_ITEM || f->kind == SID_TOWER_USER
			  ? json_string(sid_tower_name(f->kind))
		      : f->kind < 0 ? json_null()
				    : json_integer(f->kind),
		      "row", f->row >= 0 ? json_integer(f->row) : json_null(), "id",
		      f->id ? json_string(f->id) : json_null(), "message", json_string(f->message));
	if (!j) /* (the library's messages are UTF-8: out of memory) */
		return SID_ENOMEM;
	return json_array_append_new(c->a, j) ? SID_ENOMEM : 0;
}

/* Every entry read (past the damaged ones) and the store's own structure:
 * exit 3 when anything was found. */
static int cmd_check(const struct opts *o, struct sid_registry *r, int *found,
		     struct sid_error *err)
{
	struct check_list c = {json_array(), o->limit, 0};
	struct sid_reg_check res;
	struct walk_bar bar;
	json_t *counts = json_object();
	uint64_t total = 0;
	int rc;

	if (!c.a || !counts) {
		json_decref(c.a);
		json_decref(counts);
		return sid_error_set(err, SID_ENOMEM, "out of memory");
	}
	walk_bar_begin(&bar, o, r, o->kind, 0);
	rc = sid_registry_check(r, o->kind, check_finding, &c, &res, err);
	walk_bar_end(&bar, r);
	if (rc == SID_ENOMEM) /* (check_finding's, without a message) */
		rc = sid_error_set(err, SID_ENOMEM, "out of memory listing what check found");
	if (rc) {
		json_decref(c.a);
		json_decref(counts);
		return rc;
	}
	for (int p = 0; p < SID_REG_P_COUNT; p++) {
		json_object_set_new(counts, sid_reg_problem_name(p), json_integer(res.found[p]));
		total += res.found[p];
	}
	*found = total > 0;
	return print_json(json_pack("{s:s, s:s, s:s, s:I, s:b, s:s, s:I, s:o, s:o, s:I}", "backend",
				    sid_registry_backend(r), "store", sid_registry_label(r), "kind",
				    o->kind < 0 ? "all" : sid_tower_name(o->kind), "entries",
				    (json_int_t)res.entries, "store_checked", res.store_checked,
				    "store_check", res.store_how, "problems", (json_int_t)total,
				    "found", counts, "findings", c.a, "findings_left_out",
				    (json_int_t)c.left_out),
			  o, r, err);
}

/*
 * diff: exit 3 (@partial) when some entries could not be compared: a store
 * imported from an export without embeddings gave "changed": 0 and
 * "changed_fraction": 0.0 with exit 0, having compared nothing.  The
 * fraction is then null when none was compared, and stderr says how many
 * were left out and why.
 */
static int cmd_diff(const struct opts *o, struct sid_registry *r, int *partial,
		    struct sid_error *err)
{
	struct walk_bar bar;
	struct sid_model *m = NULL;
	struct sid_reg_diff d;
	int rc, Lmin;

	if ((rc = load_new(o, &m, err)))
		return rc;
	walk_bar_begin(&bar, o, r, o->kind, 0);
	rc = sid_registry_diff(r, o->kind, m, &d, err);
	walk_bar_end(&bar, r);
	if (!rc) {
		Lmin = d.L_old < d.L_new ? d.L_old : d.L_new;
		rc = print_json(
		    json_pack("{s:s, s:s, s:s, s:I, s:I, s:I, s:I, s:i, s:i, s:o, s:o, s:I, s:o}",
			      "kind", sid_tower_name(o->kind), "store", sid_registry_label(r),
			      "model_version", m->version, "items", (json_int_t)d.items, "compared",
			      (json_int_t)d.compared, "no_embedding", (json_int_t)d.no_embedding,
			      "wrong_dim", (json_int_t)d.wrong_dim, "levels_stored", d.L_old,
			      "levels_new", d.L_new, "level_changed",
			      u64_array(d.level_changed, Lmin), "prefix_changed",
			      u64_array(d.prefix_changed, Lmin), "changed", (json_int_t)d.changed,
			      "changed_fraction",
			      d.compared ? json_real((double)d.changed / d.compared) : json_null()),
		    o, r, err);
	}
	if (!rc && d.compared < d.items) {
		fprintf(stderr,
			"semid: %llu of %llu %s entries were not compared (%llu without a stored "
			"embedding, %llu of another width than the model's %d): \"changed\" counts "
			"only the %llu compared\n",
			(unsigned long long)(d.items - d.compared), (unsigned long long)d.items,
			sid_tower_name(o->kind), (unsigned long long)d.no_embedding,
			(unsigned long long)d.wrong_dim, sid_model_tower(m, o->kind)->D,
			(unsigned long long)d.compared);
		*partial = 1;
	}
	sid_model_unref(m);
	return rc;
}

/* ---- reassign ---- */

/*
 * The moves are a log of what was committed, not an output published when
 * complete: each line is written (line-buffered) as soon as its batch has
 * committed, a file is appended to (its header only when it is new), and
 * SIGINT, SIGTERM or SIGHUP stop the work before the next batch (stop_catch),
 * the lines of the batch in flight written, so that the log and the store
 * agree (short of SIGKILL between a commit and its lines) and a second run
 * appends the moves that are left.
 */

struct moves {
	FILE *fp;
	struct walk_bar walk;	      /* the first pass */
	struct sid_registry *r;	      /* whose walk it follows */
	struct cli_progress bar;      /* the second: ids moved */
	const struct sid_reg_diff *d; /* its changed count is the bar's total */
	uint64_t n;
	int stopped; /* the work ended at a stop a signal asked for */
};

static int print_move(const struct sid_reg_entry *before, const struct sid_reg_entry *after,
		      void *ctx)
{
	struct moves *mv = ctx;
	char a[SID_REG_SID_MAX], b[SID_REG_SID_MAX];

	sid_reg_sid_format(before->codes, before->L, before->suffix, a, sizeof(a));
	sid_reg_sid_format(after->codes, after->L, after->suffix, b, sizeof(b));
	if (!mv->n && mv->r) { /* the walk is over: its bar gives way */
		walk_bar_end(&mv->walk, mv->r);
		mv->r = NULL;
	}
	mv->bar.total = (size_t)mv->d->changed;
	cli_progress_update(&mv->bar, (size_t)++mv->n);
	if (fprintf(mv->fp, "%s\t%s\t%s\n", before->id, a, b) < 0)
		return SID_EIO;
	return 0;
}

/* A log of what was committed (reassign's moves, delete's ids): stdout, or
 * the file appended to, with @header (may be NULL) first on stdout or in a
 * new file; refused when it is the store or the model.  @what names it.  A
 * file's SIGPIPE is caught until log_close (a FIFO whose reader went: a
 * write error, said, not a silent death after a commit). */
static FILE *log_open(const struct opts *o, struct sid_registry *r, const char *header,
		      const char *what, struct sid_error *err)
{
	struct inputs in;
	struct stat st;
	FILE *f;
	int fd;

	if (!strcmp(o->output, "-")) {
		inputs_of(o, sid_registry_label(r), &in);
		if (cli_output_std_not_input(stdout, in.v, err) < 0)
			return NULL;
		setvbuf(stdout, NULL, _IOLBF, 0);
		if ((header && fputs(header, stdout) < 0) || fflush(stdout) != 0) {
			sid_error_set(err, SID_EIO, "stdout: cannot write %s: %m", what);
			return NULL;
		}
		return stdout;
	}
	if (!*o->output) { /* in cli_output_open's words */
		sid_error_set(err, SID_EINVAL, "--output is empty");
		return NULL;
	}
	inputs_of(o, sid_registry_label(r), &in);
	if (output_not_side_file(o->output, &in, what, err) ||
	    cli_output_fd_check(o->output, err) < 0)
		return NULL;
	fd = open(o->output, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC | O_NOCTTY, 0644);
	if (fd < 0) {
		sid_error_set(err, SID_EIO, "%s: cannot open %s: %m", o->output, what);
		return NULL;
	}
	if (fstat(fd, &st) != 0) {
		sid_error_set(err, SID_EIO, "%s: %m", o->output);
		close(fd);
		return NULL;
	}
	if (cli_output_not_input(o->output, &st, in.v, err) < 0) {
		close(fd);
		return NULL;
	}
	if (!(f = fdopen(fd, "a"))) {
		close(fd);
		sid_error_set(err, SID_ENOMEM, "out of memory");
		return NULL;
	}
	setvbuf(f, NULL, _IOLBF, 0);
	/* a log that cannot be written is found before anything is committed */
	if ((header && st.st_size == 0 && fputs(header, f) < 0) || fflush(f) != 0) {
		sid_error_set(err, SID_EIO, "%s: cannot write %s: %m", o->output, what);
		fclose(f);
		return NULL;
	}
	cli_output_pipe_catch();
	return f;
}

/* reassign's stop_asked, which notes in the moves that it fired. */
static int moves_stop(void *ctx)
{
	return stop_asked(&((struct moves *)ctx)->stopped);
}

/* The move log: see log_open. */
static FILE *moves_open(const struct opts *o, struct sid_registry *r, struct sid_error *err)
{
	return log_open(o, r, "id\told_sid\tnew_sid\n", "the move log", err);
}

/* Close a log of log_open: flushed, synced when a regular file, closed
 * (stdout is left open); @name for the message. */
static int log_close(FILE *f, const char *name, struct sid_error *err)
{
	int bad = fflush(f) != 0 || ferror(f);
	struct stat st;

	if (!bad && f != stdout && fstat(fileno(f), &st) == 0 && S_ISREG(st.st_mode))
		bad = fdatasync(fileno(f)) != 0;
	if (f != stdout) {
		bad |= fclose(f) != 0;
		cli_output_pipe_release(); /* caught by log_open */
	}
	return bad ? sid_error_set(err, SID_EIO, "%s: write failed: %m", name) : 0;
}

static int cmd_reassign(const struct opts *o, struct sid_registry *r, struct sid_error *err)
{
	struct sid_model *m = NULL;
	struct sid_reg_diff d;
	struct moves mv = {0};
	struct sid_error e2;
	uint64_t moved = 0, stale = 0;
	size_t batch;
	int rc = 0, crc;

	/* stopped as the store opened (main) or the model loaded: 0, and main
	 * ends it by the signal */
	if (stop_before_any() || (rc = load_new(o, &m, err)))
		return rc;
	if (stop_before_any()) {
		sid_model_unref(m);
		return 0;
	}
	/* refused before the log of moves is begun, not "stopped after
	 * reassigning 0 of 0" with an empty log a script would take for a run */
	if ((rc = sid_registry_reassign_check(r, o->kind, m, err))) {
		sid_model_unref(m);
		return rc;
	}
	if (!(mv.fp = moves_open(o, r, err))) {
		sid_model_unref(m);
		return err->code;
	}
	mv.d = &d;
	mv.r = r;
	stop_again(NULL); /* a second signal from here: the batches' words */
	walk_bar_begin(&mv.walk, o, r, o->kind, 1);
	cli_progress_begin(&mv.bar, mv.walk.bar.on, 0, stderr);
	mv.bar.unit = "ids moved";
	/* PostgreSQL: batches that still run beside a fleet's assigns (larger
	 * ones take the store's global lock) */
	batch = o->batch_set					? (size_t)o->batch
		: strcmp(sid_registry_backend(r), "postgresql") ? 1000
								: SID_REG_PG_GROUP_IDS;
	rc = sid_registry_reassign_all(r, o->kind, m, batch, print_move, moves_stop, &mv, &d,
				       &moved, &stale, err);
	if (mv.stopped) { /* its SID_EUNAVAIL, no store's: what it did is said below */
		rc = 0;
		sid_error_clear(err);
	}
	if (rc == SID_EIO && !err->msg[0])
		sid_error_set(err, SID_EIO, "%s: write failed: %m", output_name(o));
	if (mv.r)
		walk_bar_end(&mv.walk, r);
	cli_progress_end(&mv.bar, (size_t)mv.n);
	crc = log_close(mv.fp, output_name(o), &e2);
	if (!rc && crc) {
		*err = e2;
		rc = crc;
	}
	if (!rc && mv.stopped) {
		stop_say("semid: stopped by %s after reassigning %llu %s ids to model %s; "
			 "their moves are in %s; run it again to move the rest\n",
			 stop_name(), (unsigned long long)moved, sid_tower_name(o->kind),
			 m->version, output_name(o));
	} else {
		fprintf(stderr,
			"semid: %s %llu of %llu %s ids to model %s (%llu compared; %llu without "
			"an embedding, %llu of another width)\n",
			rc ? "stopped after reassigning" : "reassigned", (unsigned long long)moved,
			(unsigned long long)d.items, sid_tower_name(o->kind), m->version,
			(unsigned long long)d.compared, (unsigned long long)d.no_embedding,
			(unsigned long long)d.wrong_dim);
	}
	if (stale)
		fprintf(stderr,
			"semid: %llu ids were moved by another writer while this ran and were left "
			"as it left them; run it again to see whether they still differ\n",
			(unsigned long long)stale);
	sid_model_unref(m);
	return rc;
}

/* ---- lookups ---- */

/* @e as JSON in *@out, or an error naming it: a damaged model_version
 * (text that is not UTF-8), which get told as "out of memory" */
static int entry_json(struct sid_registry *r, const struct sid_reg_entry *e, json_t **out,
		      struct sid_error *err)
{
	if ((*out = sid_reg_entry_json(e, 0)))
		return 0;
	return sid_error_set(err, SID_EDATA,
			     "registry %s: the stored entry of id %.64s cannot be written as JSON "
			     "(text that is not UTF-8?); semid registry check lists such entries",
			     sid_registry_label(r), e->id);
}

static int cmd_lookup(const struct opts *o, struct sid_registry *r, struct sid_error *err)
{
	struct sid_reg_entry e;
	json_t *j;
	int rc;

	rc = strcmp(o->cmd, "get") ? sid_registry_get_sid(r, o->kind, o->arg, &e, err)
				   : sid_registry_get(r, o->kind, o->arg, &e, err);
	if (!rc)
		rc = entry_json(r, &e, &j, err);
	return rc ? rc : print_json(j, o, r, err);
}

static int cmd_list(const struct opts *o, struct sid_registry *r, struct sid_error *err)
{
	struct sid_reg_entry *page = malloc(sizeof(*page) * SID_REG_PAGE_MAX);
	char cursor[SID_REG_SID_MAX] = "", next[SID_REG_SID_MAX];
	json_t *a = json_array();
	long left = o->limit;
	int rc = 0;

	if (!page)
		return sid_error_set(err, SID_ENOMEM, "out of memory");
	do {
		size_t n, want = left < SID_REG_PAGE_MAX ? (size_t)left : SID_REG_PAGE_MAX;
		rc = sid_registry_list(r, o->kind, o->prefix ? o->prefix : "", cursor, want, page,
				       &n, next, err);
		if (rc)
			break;
		for (size_t i = 0; i < n && !rc; i++) {
			json_t *j;
			if (!(rc = entry_json(r, &page[i], &j, err)) && json_array_append_new(a, j))
				rc = sid_error_set(err, SID_ENOMEM, "out of memory");
		}
		if (rc)
			break;
		left -= (long)n;
		memcpy(cursor, next, sizeof(cursor));
	} while (cursor[0] && left > 0);
	/* --limit reached: stopped at 100 without a word, read as all of them */
	size_t more = 0;
	if (!rc && cursor[0] && left <= 0)
		rc = sid_registry_list(r, o->kind, o->prefix ? o->prefix : "", cursor, 1, page,
				       &more, next, err);
	free(page);
	if (rc) {
		json_decref(a);
		return rc;
	}
	rc = print_json(a, o, r, err);
	if (!rc && more) /* once the entries are out: not after a failed write */
		fprintf(
		    stderr,
		    "semid: the first %ld entries listed; more follow (raise --limit, or export "
		    "them all: semid registry export)\n",
		    o->limit);
	return rc;
}

/* Run command @o (but restore): 0 or an error code in @err; *@conflicts set
 * when it ends with CLI_REGISTRY_EXIT_CONFLICTS.  assign and delete open
 * the store themselves, the others are given it. */
static int run_cmd(const struct opts *o, int *conflicts, struct sid_error *err)
{
	struct sid_registry *r = NULL;
	FILE *in = NULL; /* import's file */
	int rc;

	if (!strcmp(o->cmd, "assign"))
		return cmd_assign(o, err);
	if (!strcmp(o->cmd, "delete"))
		return (o->rows ? delete_rows : cmd_delete)(o, conflicts, err);
	if (!strcmp(o->cmd, "import")) {
		rc = import_open(o, &in, err);
		if (stop_sig) { /* (an open interrupted: EINTR) */
			if (in && in != stdin)
				fclose(in);
			stop_say("semid: stopped by %s before any line: nothing imported\n",
				 stop_name());
			sid_error_clear(err);
			return 0;
		}
		if (rc)
			return rc;
		stop_catch(NULL, SA_RESTART); /* the store is opened (or created) whole */
	}
	if ((rc = store_open(o, &r, err))) {
		if (in && in != stdin)
			fclose(in);
		return rc;
	}
	if (!strcmp(o->cmd, "export"))
		rc = cmd_export(o, r, err);
	else if (!strcmp(o->cmd, "import"))
		rc = cmd_import(o, r, in, conflicts, err);
	else if (!strcmp(o->cmd, "stats"))
		rc = cmd_stats(o, r, err);
	else if (!strcmp(o->cmd, "diff"))
		rc = cmd_diff(o, r, conflicts, err);
	else if (!strcmp(o->cmd, "reassign"))
		rc = cmd_reassign(o, r, err);
	else if (!strcmp(o->cmd, "list"))
		rc = cmd_list(o, r, err);
	else if (!strcmp(o->cmd, "backup"))
		rc = cmd_backup(o, r, err);
	else if (!strcmp(o->cmd, "check"))
		rc = cmd_check(o, r, conflicts, err);
	else
		rc = cmd_lookup(o, r, err);
	sid_registry_close(r);
	if (in && in != stdin)
		fclose(in);
	return rc;
}

static int registry_main(int argc, char **argv)
{
	struct sid_error err;
	struct sigaction saved[3];
	struct opts o;
	int rc, conflicts = 0, stops;

	if (argc < 2) {
		fputs(usage, stderr);
		return CLI_EXIT_INPUT;
	}
	rc = parse(argc, argv, &o);
	if (rc == 1) {
		fputs(usage, stdout);
		return CLI_EXIT_OK;
	}
	if (rc)
		return rc;
	sid_error_clear(&err);
	stop_sig = 0; /* (tests run one command after another) */
	if (!strcmp(o.cmd, "restore")) {
		rc = cmd_restore(&o, &err);
		rc = rc ? report(&err) : CLI_EXIT_OK;
		restore_let_go(); /* a stop held ends it here, what was done said */
		return rc;
	}
	/* the commands that commit as they go are stopped at their next step,
	 * import's file opening at once (a FIFO waiting for a writer) */
	stops = !strcmp(o.cmd, "assign") || !strcmp(o.cmd, "delete") ||
		!strcmp(o.cmd, "reassign") || !strcmp(o.cmd, "import");
	if (stops) {
		stop_again(AGAIN_BEFORE_ANY);
		stop_catch(saved, strcmp(o.cmd, "import") ? SA_RESTART : 0);
	}
	rc = run_cmd(&o, &conflicts, &err);
	if (stops) {
		stop_restore(saved);
		if (!rc) /* stopped, said: ends by the signal (an error is told by its status) */
			stop_end();
	}
	if (rc)
		return report(&err);
	return conflicts ? CLI_REGISTRY_EXIT_CONFLICTS : CLI_EXIT_OK;
}

/*
 * The line a command ends with (what it committed, or why it failed) goes
 * to a stderr whose reader may be gone (a log pipe that died): its SIGPIPE
 * ended a command whose work was done by 141, as if it had failed.  The
 * line is lost instead, and the status is the command's; stdout's reader
 * gone is still the quiet stop of cli.h (on_sigpipe, output.c).
 */
int cli_registry_main(int argc, char **argv)
{
	int rc;

	cli_output_pipe_catch();
	rc = registry_main(argc, argv);
	cli_output_pipe_release();
	return rc;
}
