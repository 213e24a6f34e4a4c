/*
 * commands.c - `semid` command dispatch, help texts, and the small commands
 * (inspect, version).  The encode pipeline is in encode_cmd.c.
 */
#include "cli.h"

#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "encode.h"
#include "model.h"
#include "registry_cmd.h"

static const char usage_main[] =
    "usage: semid <command> [options]\n"
    "\n"
    "Encode embeddings into semantic IDs with an RQ-VAE model (a safetensors file).\n"
    "\n"
    "commands:\n"
    "  inspect MODEL          print a JSON summary of a model file, or why it is invalid\n"
    "  encode [options]       turn a .npy of embeddings into semantic IDs\n"
    "  registry <command>     the durable ID registry: assign, export, import, stats,\n"
    "                         diff, reassign, delete, get, sid, list, check,\n"
    "                         backup, restore\n"
    "                         ('semid help registry')\n"
    "  version                print the program and model-format versions\n"
    "  help [COMMAND]         this text, or the help of one command\n"
    "\n"
    "exit status: 0 ok, 1 internal or I/O error (e.g. cannot write the output),\n"
    "             2 bad usage or bad input (missing or malformed model or data file,\n"
    "               wrong shape or dtype, a non-finite value),\n"
    "             3 registry import finished but some lines conflicted, delete\n"
    "               some ids not stored (--rows: rows not there or left),\n"
    "               diff could not compare some entries, check found a problem,\n"
    "             141 (128 + SIGPIPE) the reader of stdout went away (| head -1):\n"
    "               a quiet stop, as for cat, also where SIGPIPE is ignored\n"
    "\n"
    "Run 'semid help encode' for the encode options.\n";

static const char usage_inspect[] =
    "usage: semid inspect MODEL\n"
    "\n"
    "Validate MODEL (a semid safetensors file, see proto/model-format.md), encode a\n"
    "zero and two unit-norm rows with each tower as the server does before serving\n"
    "it, and print a JSON summary on stdout: model version, file sha256 and size, and per tower "
    "the\n"
    "input dimension, layer shapes, activation, input norm, levels, codebook sizes,\n"
    "and the metadata.  An invalid file prints 'semid: MODEL: <reason>' on stderr.\n"
    "\n"
    "exit status: 0 valid, 2 missing or invalid file, 1 internal error\n";

static const char usage_encode[] =
    "usage: semid encode --model MODEL --input X.npy --output OUT [options]\n"
    "\n"
    "Encode every row of X.npy, a 2-D C-order float32, float64 or float16 array of\n"
    "shape (N, D) with D the tower's input dimension, into semantic IDs.  The input is\n"
    "memory-mapped and streamed in batches, so files larger than RAM are fine; rows\n"
    "are encoded on all cores and written in input order.\n"
    "\n"
    "  -m, --model MODEL     the model file (required)\n"
    "  -t, --tower NAME      item (default) or user\n"
    "  -i, --input X.npy     the embeddings (required)\n"
    "  -o, --output OUT      where the IDs go (required):\n"
    "                          *.npy  int32 array (N, L), a code per level; .NPY too\n"
    "                          -      TSV on stdout: row<TAB>c0-c1-c2 per line\n"
    "                          other  the same TSV into that file\n"
    "  -b, --batch N         rows per batch, 1..1048576 (default 1024; output does not\n"
    "                        depend on it)\n"
    "  -j, --threads N       worker threads, 0..256 (default, or 0: the CPUs it may use,\n"
    "                        fewer than the host's under a taskset, cpuset or CPU\n"
    "                        quota; 1: none, the rows are encoded by the thread that\n"
    "                        writes them; output does not depend on it)\n"
    "  -k, --top-k K         1..16: also give up to K-1 alternative IDs per row, next best\n"
    "                        by distance (default 1): TSV gets one more column each; .npy\n"
    "                        is (N, K*L) with -1 where a row has fewer alternatives\n"
    "  -f, --format F        TSV ID format: dash (12-7-200, default) or tokens\n"
    "                        (<a_12><b_7><c_200>)\n"
    "      --progress        always draw the progress bar on stderr\n"
    "      --no-progress     never draw it (default: only when stderr is a terminal\n"
    "                        and the TSV rows are not going to that terminal too)\n"
    "\n"
    "A file output is written unnamed and given its name only when complete, so\n"
    "an error or a kill (even SIGKILL) leaves the old file, or none, and no\n"
    "temporary file (on a file system without O_TMPFILE, such as NFS, a temp file\n"
    "beside OUT, which only SIGKILL leaves).  An existing device or FIFO\n"
    "(/dev/null) is written in place.\n"
    "OUT may not be the input or the model file (exit status 2).\n"
    "TSV on stdout may hold the rows before the failing batch; written in place,\n"
    "it goes out in whole lines, so a kill (even SIGKILL) cuts no row short.\n"
    "\n"
    "exit status: 0 ok; 1 internal or output I/O error; 2 bad usage or bad input:\n"
    "missing/invalid model, no such tower, input not a 2-D float .npy, wrong number\n"
    "of columns, or a non-finite value (the message names its row and column).\n";

static int is_help(const char *arg)
{
	return strcmp(arg, "-h") == 0 || strcmp(arg, "--help") == 0;
}

static void print_error(const char *msg)
{
	sid_error_print(stderr, "semid", msg);
}

int cli_usage_error(const char *cmd, const char *help, const char *fmt, ...)
{
	va_list ap;

	fprintf(stderr, "semid%s%s: ", cmd ? " " : "", cmd ? cmd : "");
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fprintf(stderr, "\nrun 'semid%s%s --help' for the %s\n", help ? " " : "", help ? help : "",
		help ? "options" : "commands");
	return CLI_EXIT_INPUT;
}

static int cmd_inspect(int argc, char **argv)
{
	struct sid_model *m = NULL;
	struct sid_error err;
	char *desc = NULL;
	int rc, status = CLI_EXIT_IO;

	for (int i = 0; i < argc; i++)
		if (is_help(argv[i])) {
			fputs(usage_inspect, stdout);
			return CLI_EXIT_OK;
		}
	if (argc == 0) {
		fputs(usage_inspect, stderr);
		return CLI_EXIT_INPUT;
	}
	if (!argv[0][0])
		return cli_usage_error("inspect", "inspect", "MODEL is empty");
	if (argv[0][0] == '-')
		return cli_usage_error("inspect", "inspect", "unknown option '%s'", argv[0]);
	if (argc > 1)
		return cli_usage_error("inspect", "inspect",
				       "unexpected argument '%s' (one MODEL only)", argv[1]);
	sid_error_clear(&err);
	if ((rc = sid_model_load(argv[0], &m, &err)) < 0 || (rc = sid_model_smoke(m, &err)) < 0) {
		sid_model_unref(m);
		sid_error_name_file(&err, argv[0]);
		print_error(err.msg);
		return rc == SID_ENOMEM ? CLI_EXIT_IO : CLI_EXIT_INPUT;
	}
	desc = sid_model_describe_json(m); /* reals as typed (0.1): json.h */
	if (!desc) {
		print_error("out of memory describing the model");
		goto fail;
	}
	fputs(desc, stdout);
	fputc('\n', stdout);
	if (fflush(stdout) != 0) { /* errno says why */
		fprintf(stderr, "semid: stdout: write failed: %s\n", strerror(errno));
		goto fail;
	}
	if (ferror(stdout)) {
		print_error("stdout: write failed");
		goto fail;
	}
	status = CLI_EXIT_OK;
fail: /* success comes through here too */
	free(desc);
	sid_model_unref(m);
	return status;
}

static int cmd_encode(int argc, char **argv)
{
	struct cli_encode_opts o;
	struct sid_error err;
	int rc;

	sid_error_clear(&err);
	rc = cli_encode_parse(argc, argv, &o, &err);
	if (rc == 1) {
		fputs(usage_encode, stdout);
		return CLI_EXIT_OK;
	}
	if (rc < 0 && argc == 0) { /* a bare `semid encode`: what it takes */
		fputs(usage_encode, stderr);
		return CLI_EXIT_INPUT;
	}
	if (rc < 0)
		return cli_usage_error("encode", "encode", "%s", err.msg);
	rc = cli_encode_run(&o, stdout, &err);
	if (rc != CLI_EXIT_OK)
		print_error(err.msg);
	return rc;
}

static int cmd_version(int argc, char **argv)
{
	if (argc == 1 && is_help(argv[0])) { /* it has no options: semid's help */
		fputs(usage_main, stdout);
		return CLI_EXIT_OK;
	}
	if (argc > 0)
		return cli_usage_error("version", NULL, "unexpected argument '%s'", argv[0]);
	printf("semid %s (model format %d)\n", SEMID_VERSION, SID_FORMAT_VERSION);
	return CLI_EXIT_OK;
}

static int cmd_help(int argc, char **argv)
{
	if (argc > 1)
		return cli_usage_error("help", NULL, "unexpected argument '%s'", argv[1]);
	if (argc == 0 || is_help(argv[0])) {
		fputs(usage_main, stdout);
		return CLI_EXIT_OK;
	}
	if (strcmp(argv[0], "encode") == 0) {
		fputs(usage_encode, stdout);
		return CLI_EXIT_OK;
	}
	if (strcmp(argv[0], "inspect") == 0) {
		fputs(usage_inspect, stdout);
		return CLI_EXIT_OK;
	}
	if (strcmp(argv[0], "registry") == 0) {
		char *args[] = {"registry", "--help", NULL};
		return cli_registry_main(2, args);
	}
	if (strcmp(argv[0], "version") == 0 || strcmp(argv[0], "help") == 0) {
		fputs(usage_main, stdout);
		return CLI_EXIT_OK;
	}
	return cli_usage_error("help", NULL, "no command '%s'", argv[0]);
}

static int dispatch(int argc, char **argv)
{
	const char *cmd;

	if (argc < 2) {
		fputs(usage_main, stderr);
		return CLI_EXIT_INPUT;
	}
	cmd = argv[1];
	if (strcmp(cmd, "inspect") == 0)
		return cmd_inspect(argc - 2, argv + 2);
	if (strcmp(cmd, "encode") == 0)
		return cmd_encode(argc - 2, argv + 2);
	if (strcmp(cmd, "registry") == 0)
		return cli_registry_main(argc - 1, argv + 1);
	if (strcmp(cmd, "version") == 0 || strcmp(cmd, "--version") == 0)
		return cmd_version(argc - 2, argv + 2);
	if (strcmp(cmd, "help") == 0)
		return cmd_help(argc - 2, argv + 2);
	if (is_help(cmd))
		return cmd_help(argc - 2, argv + 2);
	return cli_usage_error(NULL, NULL, "unknown command '%s'", cmd);
}

/*
 * A standard descriptor the caller left closed (a daemon's child) gets
 * /dev/null, opened the wrong way round: the files this process opens then
 * cannot take its number (a progress bar for stderr went into the output
 * file, an import of stdin read whatever SQLite had put at 0), and using it
 * still fails as the closed one did, instead of reading an empty stdin or
 * writing stdout into a quiet sink.
 */
static void std_fds_hold(void)
{
	for (int fd = 0; fd < 3; fd++) {
		int nul;
		if (fcntl(fd, F_GETFD) >= 0 || errno != EBADF)
			continue;
		nul = open("/dev/null", fd == 0 ? O_WRONLY : O_RDONLY);
		if (nul >= 0 && nul != fd) { /* the lower ones are open: only in case */
			dup2(nul, fd);
			close(nul);
		}
	}
}

int cli_main(int argc, char **argv)
{
	int status;
	char lost[128];

	std_fds_hold();
	sid_sigpipe_quiet_stdout(); /* `| head -1`: 141, quietly (fsutil.h) */
	status = dispatch(argc, argv);
	/* Whatever a command printed on stdout must have arrived (a full disk,
	 * a closed pipe); the commands that check for themselves have said so
	 * and failed already. */
	if (sid_stdout_lost(lost, sizeof(lost)) && status == CLI_EXIT_OK) {
		fprintf(stderr, "semid: stdout: write failed%s\n", lost);
		status = CLI_EXIT_IO;
	}
	return status;
}
