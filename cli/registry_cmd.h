/*
 * registry_cmd.h - `semid registry ...`: the ID registry (core/registry.h)
 * from the command line.
 *
 *   semid registry assign  --model M --input X.npy --ids IDS.txt [--db STORE]
 *   semid registry export  [--db STORE | --model M] [--format tsv|jsonl] ...
 *   semid registry import  [--db STORE | --model M] [--format ...] FILE|-
 *   semid registry stats   [--db STORE | --model M] [--kind item|user]
 *   semid registry diff    --model NEW [--db STORE] [--kind item|user]
 *   semid registry reassign --model NEW [--db STORE] [--kind ...] [-o MOVES.tsv]
 *   semid registry backup  [--db STORE | --model M] -o FILE [--max-rate MIB]
 *   semid registry restore [--db STORE | --model M] [--max-rate MIB] BACKUP
 *   semid registry get     [--db STORE | --model M] ID
 *   semid registry sid     [--db STORE | --model M] SID
 *   semid registry list    [--db STORE | --model M] [--prefix P] [--limit N]
 *   semid registry delete  [--db STORE | --model M] [--kind K] ID... | --ids FILE
 *
 * STORE is a SQLite file or a PostgreSQL connection string; without --db it
 * is the SQLite file next to --model (sid_registry_default_path).  Full help:
 * `semid registry --help` (the usage text below).
 *
 * Exit statuses: CLI_EXIT_OK 0; CLI_EXIT_IO 1 (store unavailable, I/O or
 * internal error); CLI_EXIT_INPUT 2 (bad usage, bad input file, unknown id or
 * sid); CLI_REGISTRY_EXIT_CONFLICTS 3 (import finished, some lines conflicted;
 * delete finished, some ids were not stored, or --rows: some rows were not
 * there or held an entry its id names, left; diff could not compare some
 * entries; check found a problem).
 *
 * Not thread-safe (uses getopt); call it once at a time.
 */
#ifndef SID_CLI_REGISTRY_CMD_H
#define SID_CLI_REGISTRY_CMD_H

#define CLI_REGISTRY_EXIT_CONFLICTS 3

/*
 * Run `semid registry ...`: argv[0] is "registry", argv[1] the subcommand.
 * Normal output goes to stdout (or --output), messages to stderr.  Returns
 * the exit status.
 */
int cli_registry_main(int argc, char **argv);

/* Tests: when set, `restore` calls it with SIGINT, SIGTERM and SIGHUP held,
 * once the old store's side files have moved (a store it could not fold
 * the -wal of) and before the copy takes the store's name. */
extern void (*cli__restore_window)(void);

/* Tests: when set, `assign` calls it as it ends, its output closed, before
 * the store closes. */
extern void (*cli__assign_closing)(void);

/* Tests: when set, `delete --rows` calls it with 0 once the store is open,
 * before its transaction, and with 1 once that is committed. */
extern void (*cli__delete_rows_window)(int);

#endif
