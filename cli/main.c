/*
 * main.c - bin/semid: inspect model files and encode .npy embeddings into
 * semantic IDs.  Everything but this entry point lives in the other cli
 * sources (see cli.h) so the tests can link it.
 */
#include "cli.h"

#include <signal.h>

int main(int argc, char **argv)
{
	/* A file size limit (ulimit -f) reached ended the process by SIGXFSZ,
	 * without a word and leaving a backup's temp file: ignored, the write
	 * fails with EFBIG ("File too large"), told as any failed write. */
	signal(SIGXFSZ, SIG_IGN);
	/* Their default action ends the process: a log-rotation tool sending
	 * SIGUSR1 to every process killed a bulk encode.  Ignored, as
	 * semid-train and semid-server do (a handler would cut reads and
	 * waits short; nothing here has a use for them). */
	signal(SIGUSR1, SIG_IGN);
	signal(SIGUSR2, SIG_IGN);
	return cli_main(argc, argv);
}
