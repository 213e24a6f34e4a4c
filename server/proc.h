/*
 * proc.h - the standard process metrics every Prometheus client library
 * exports (its "process collector"), read from /proc/self at scrape time:
 *
 *   process_cpu_seconds_total         counter  user + system CPU time
 *   process_resident_memory_bytes     gauge    RSS (/proc/self/stat rss * page size)
 *   process_virtual_memory_bytes      gauge    vsize (/proc/self/stat)
 *   process_virtual_memory_max_bytes  gauge    soft RLIMIT_AS; no sample when unlimited
 *   process_open_fds                  gauge    entries of /proc/self/fd (not counting
 *                                              the descriptor that lists them)
 *   process_max_fds                   gauge    soft RLIMIT_NOFILE
 *   process_start_time_seconds        gauge    /proc/stat btime + starttime ticks /
 *                                              sysconf(_SC_CLK_TCK), unix time
 *   process_threads                   gauge    num_threads (/proc/self/stat)
 *
 * A value whose source cannot be read or parsed (a sandbox without /proc, a
 * malformed line) has no sample in that scrape - its HELP and TYPE stay -
 * rather than a wrong one, and the first such failure of each source is
 * logged (event=metrics, level warn), once for the process's life.  A scrape
 * reads /proc/self/stat (one small read) and lists /proc/self/fd; /proc/stat
 * (whose btime never changes, and which is large on big machines) is read
 * at the first scrape only.  Nothing is allocated but the output buffer's
 * growth, whose failure the buffer records (buf.h).
 *
 * Thread-safety: srv_proc_render may run on several threads at once (the
 * cached btime and the logged flags are atomics); the parsers are pure.
 */
#ifndef SRV_PROC_H
#define SRV_PROC_H

#include <stddef.h>

#include "buf.h"

/* The fields of /proc/<pid>/stat the metrics use (proc(5) numbers them). */
struct srv_proc_stat {
	unsigned long long utime, stime; /* (14), (15): clock ticks */
	unsigned long long threads;	 /* (20) num_threads */
	unsigned long long starttime;	 /* (22): clock ticks after boot */
	unsigned long long vsize;	 /* (23): bytes */
	unsigned long long rss;		 /* (24): pages */
};

/* Parse the text of /proc/<pid>/stat (@len bytes, no NUL needed): 0, or -1
 * when it is not such a line (no "pid (comm) state" head, a field missing,
 * not a decimal number or out of range, a process with no thread).  comm may
 * hold spaces and parentheses: the fields start after the last ')'. */
int srv_proc_parse_stat(const char *text, size_t len, struct srv_proc_stat *st);

/*
 * Find /proc/stat's "btime SECONDS" line in text fed in pieces of any size
 * (the file is read in fixed chunks: its intr line alone can pass 10 KiB).
 * The first line starting "btime " counts; it must hold a positive decimal
 * number and nothing else.
 */
struct srv_btime_scan {
	int state;  /* internal */
	int pos;    /* chars of "btime " matched */
	int digits; /* digits read */
	long long value;
};
void srv_btime_scan_init(struct srv_btime_scan *s);
void srv_btime_scan_feed(struct srv_btime_scan *s, const char *p, size_t n);
/* After the last piece: 0 and *@btime, or -1 (no such line, or malformed). */
int srv_btime_scan_result(const struct srv_btime_scan *s, long long *btime);

struct srv_proc {
	const char *root; /* "/proc"; the unit tests point it at a tree of their own */
	long long btime;  /* /proc/stat's btime once read, 0 before (atomic) */
	int logged;	  /* a bit per source whose failure was logged (atomic) */
};

/* @root: "/proc" (NULL means it). */
void srv_proc_init(struct srv_proc *p, const char *root);
/* The resident size in bytes (@p's root/self/stat), -1 when it cannot be
 * read (not logged). */
long long srv_proc_rss(const struct srv_proc *p);
/* Append the process_* families (HELP, TYPE and each sample it could read). */
void srv_proc_render(struct srv_proc *p, struct srv_buf *out);

#endif
