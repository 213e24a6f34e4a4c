/*
 * main.c - bin/semid: inspect model files and encode .npy embeddings into
 * semantic IDs.  Everything but this entry point lives in the other cli
 * sources (see cli.h) so the tests can link it.
 */
#include "cli.h"

int main(int argc, char **argv)
{
	return cli_main(argc, argv);
}
