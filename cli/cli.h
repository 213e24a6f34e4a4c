/*
 * cli.h - the pieces of bin/semid, kept out of cli/main.c so the Check tests
 * in tests/cli/ can link them: command dispatch and help (commands.c), the
 * `encode` pipeline (encode_cmd.c) and the terminal progress bar
 * (progress.c).
 *
 * Outputs of every command go through output.c.
 *
 * Exit statuses used everywhere: CLI_EXIT_OK 0, CLI_EXIT_IO 1 (internal or
 * output I/O error, out of memory), CLI_EXIT_INPUT 2 (bad usage or bad input:
 * a missing, unreadable or malformed model or data file, a wrong shape or
 * dtype, a non-finite value).  A reader of stdout that goes away ends the
 * process at once and quietly: SIGPIPE's default action, or, where the
 * parent ignores SIGPIPE, exit 141 (128 + SIGPIPE) (sid_sigpipe_quiet_stdout).
 * The reader of a named output (-o FIFO) that goes away is an output I/O
 * error like a full disk: one line naming the path, exit 1.
 *
 * Thread-safety: none of these functions is meant to run twice at once in one
 * process (the encode pipeline starts and joins its own worker threads).
 */
#ifndef SID_CLI_H
#define SID_CLI_H

#include <signal.h>
#include <stddef.h>
#include <stdio.h>
#include <sys/stat.h>

#include "encode.h"
#include "err.h"
#include "fsutil.h"

#define SEMID_VERSION SID_VERSION

enum { CLI_EXIT_OK = 0, CLI_EXIT_IO = 1, CLI_EXIT_INPUT = 2 };

/* The whole program: `semid <command> ...`.  Returns the exit status. */
int cli_main(int argc, char **argv);

/*
 * A usage error, as every command reports one: "semid CMD: MESSAGE" and
 * "run 'semid HELP --help' for the options" on stderr, two lines, not the
 * whole help text (that is for a command given no arguments at all).  @cmd
 * says who speaks ("encode", "registry assign"; NULL: semid itself), @help
 * whose help to read (NULL: semid's, "for the commands").  Returns
 * CLI_EXIT_INPUT.
 */
int cli_usage_error(const char *cmd, const char *help, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* ---- encode ------------------------------------------------------------- */

#define CLI_BATCH_DEFAULT 1024
#define CLI_BATCH_MAX	  (1u << 20)
#define CLI_THREADS_MAX	  256

enum cli_progress_mode { CLI_PROGRESS_AUTO, CLI_PROGRESS_ALWAYS, CLI_PROGRESS_NEVER };

struct cli_encode_opts {
	const char *model;  /* --model, required */
	const char *tower;  /* --tower, default "item" */
	const char *input;  /* --input, required: a 2-D float32/float64/float16 .npy */
	const char *output; /* --output, required: *.npy, "-" (TSV on stdout), or a TSV path */
	size_t batch;	    /* --batch, rows per batch, 1..CLI_BATCH_MAX */
	int threads;	    /* --threads, 0 = cli_encode_default_threads() */
	int top_k;	    /* --top-k, 1..SID_TOPK_MAX: 1 + alternatives per row */
	enum sid_sid_format format;	 /* --format dash|tokens (TSV only) */
	int format_given;		 /* --format was given */
	enum cli_progress_mode progress; /* --progress / --no-progress, default auto (isatty) */
};

/*
 * Parse the arguments after "encode" (argv[0] is the first option).  Sets
 * defaults first.  Returns 0, 1 when --help was asked for, or SID_EINVAL
 * with a message naming the bad option.
 */
int cli_encode_parse(int argc, char **argv, struct cli_encode_opts *o, struct sid_error *err);

/*
 * Run an encode.  TSV for output "-" goes to @tsv_out.  Returns an exit
 * status (CLI_EXIT_*); on failure @err holds the message (already naming
 * the file at fault) and no output file is left behind.
 */
int cli_encode_run(const struct cli_encode_opts *o, FILE *tsv_out, struct sid_error *err);

/* The threads without --threads: the CPUs this process may use (its
 * affinity, or fewer under a cgroup CPU quota; core/cpus.h), at most
 * CLI_THREADS_MAX.  Not every online CPU: `semid encode` in a container
 * limited to 2 CPUs on a 64-core host ran 64 threads, throttled. */
int cli_encode_default_threads(void);

/* ---- outputs ------------------------------------------------------------ */

enum cli_output_kind {
	CLI_OUT_STDOUT, /* "-" */
	CLI_OUT_FILE,	/* a regular file, published atomically */
	CLI_OUT_DEVICE	/* an existing non-regular file (/dev/null, a FIFO): in place */
};

#define CLI_OUTPUT_SIGNALS 4

struct cli_output {
	const char *path;  /* as given */
	char target[4096]; /* a symbolic link's file, which is replaced (not the link) */
	enum cli_output_kind kind;
	FILE *fp;     /* write here */
	int fd;	      /* the descriptor it writes to (-1: none) */
	int borrowed; /* fp is the caller's stream of no descriptor: not closed */
	struct sid_publish pub;
	struct sigaction saved[CLI_OUTPUT_SIGNALS];
	int signals_on;
	int pipe_on; /* a device's: SIGPIPE handled, see output.c */
};

/*
 * Open the output @path: "-" is @std; a regular file or a new name is
 * written unnamed (O_TMPFILE) and renamed into place by cli_output_commit,
 * so a process killed at any moment, even by SIGKILL, leaves the old file
 * or the new one and no temp file, the new one with the old one's mode (and
 * owner, where allowed); an existing non-regular file is written
 * in place, and so is a name of this process's descriptor (/dev/stdout,
 * /dev/fd/N, or a link to them), through that descriptor (SID_EIO when it
 * is not open for writing, cli_output_fd_check); any other
 * symbolic link is followed, and the file it names is replaced.  Refuses (SID_EINVAL) a path
 * that is the same file as one of the NULL-terminated @inputs (may be NULL), and (SID_EIO) a
 * directory or a file that cannot be created, with a message naming @path.  Until commit or abort,
 * SIGINT/SIGTERM/SIGHUP/SIGBUS handlers remove a named temp file (file systems without O_TMPFILE),
 * say on stderr what the stop leaves of the output,
 * before the process dies.  Written in place (stdout, a device, a FIFO), @w->fp writes whole
 * lines only, each in one write(2) of at most PIPE_BUF bytes (output.c): a process ended at any
 * moment, even by SIGKILL, leaves its reader no line cut short.  One output open at a time per
 * process.
 */
int cli_output_open(struct cli_output *w, const char *path, FILE *std, const char *const *inputs,
		    struct sid_error *err);
/* The same for a writer that opens the file itself by the name
 * @w->pub.tmp (SQLite): a regular file or a new name only (SID_EINVAL for
 * "-" or anything else; a symbolic link is followed, and the file it names
 * replaced, see cli_output_file), @w->fp stays NULL, and the temp file has a name
 * from the start (the signals above remove it; SIGKILL leaves it). */
int cli_output_open_named(struct cli_output *w, const char *path, const char *const *inputs,
			  struct sid_error *err);
/* SID_EINVAL, naming both, when the file at @path (@st: its stat) is one of
 * the NULL-terminated @inputs (the same device and inode); else 0.  For an
 * output opened otherwise (an append-only log). */
int cli_output_not_input(const char *path, const struct stat *st, const char *const *inputs,
			 struct sid_error *err);
/* The same for "-": @std (stdout) when its descriptor is a regular file
 * that is one of @inputs (a shell's 1<>FILE). */
int cli_output_std_not_input(FILE *std, const char *const *inputs, struct sid_error *err);
/* SID_EIO, naming @path, when it names a descriptor of this process
 * (/dev/stdout, /dev/fd/N, or a link to them) that is not open for writing;
 * else 0.  Opening such a name anew reaches whatever holds the number: the
 * /dev/null, read-only, that stands in for a stdout the caller closed
 * (cli_main), which took the output without a word.  cli_output_open
 * checks; for an output opened otherwise (an append-only log). */
int cli_output_fd_check(const char *path, struct sid_error *err);
/* Flush, and publish a file output.  Ends the output either way; on failure
 * the old file is untouched. */
int cli_output_commit(struct cli_output *w, struct sid_error *err);
/* Give up: a file output is dropped (the old file untouched), what stdout
 * or a device was given is written.  No-op on an output zeroed or already
 * ended. */
void cli_output_abort(struct cli_output *w);
/* For a file written otherwise, in place (reassign's append-only log), that
 * may be a FIFO: until _release, a reader of it that goes away fails the
 * write with EPIPE, to be reported with its name, instead of SIGPIPE ending
 * the process without a word; stdout's own reader gone still ends it
 * quietly.  cli_output_open does this for a device output.  Nested: the
 * action of before is back at the _release of the first _catch. */
void cli_output_pipe_catch(void);
void cli_output_pipe_release(void);
/* The memory-mapped input file (a .npy) that the SIGBUS message of
 * cli_output_open's handlers names: a fault reading it means it shrank or
 * failed under the command.  Kept until replaced; NULL forgets it. */
void cli_output_mapped_input(const char *path);
/* @w's path for messages ("stdout" for "-"). */
const char *cli_output_name(const struct cli_output *w);
/* The file an open file output replaces: the one a symbolic link names, or
 * the path as given. */
const char *cli_output_file(const struct cli_output *w);

/* ---- progress bar --------------------------------------------------------- */

struct cli_progress {
	int on;
	size_t total;
	double t0, last; /* monotonic seconds */
	FILE *fp;
	const char *unit; /* what is counted: "rows" unless set after begin */
};

/* Start a bar for @total rows on @fp (drawn only when @on). */
void cli_progress_begin(struct cli_progress *p, int on, size_t total, FILE *fp);
/* Report @done rows; redraws at most ten times a second. */
void cli_progress_update(struct cli_progress *p, size_t done);
/* Seconds to wait so that @done units after @elapsed seconds go no faster
 * than @rate units a second (0 when @rate <= 0 or already behind). */
double cli_pace_delay(uint64_t done, double rate, double elapsed);
/* Final redraw and newline (only when something was drawn). */
void cli_progress_end(struct cli_progress *p, size_t done);

/*
 * One bar line, e.g. "[#########-----------]  45.0%  450000/1000000 rows
 * 123.4k rows/s  ETA 0:04" for @done of @total rows after @elapsed seconds.
 * Returns the length (snprintf semantics).
 */
int cli_progress_format(char *buf, size_t len, size_t done, size_t total, double elapsed);

/* Monotonic clock in seconds. */
double cli_now(void);

#endif
