/*
 * log.h - structured log lines for semid-server, one line per event, to
 * stderr, in logfmt (key=value pairs separated by spaces):
 *
 *   ts=2026-11-28T17:30:00.123Z level=info event=request method=POST
 *   route=/v1/items:encode status=200 items=1 us=412 model_version=v1
 *
 * Values that are empty or hold a space, '"', '=' or a control character are
 * double-quoted with \" \\ \n \t and \u00XX escapes, so each line parses with
 * any logfmt reader.  Every line starts with ts, level and event.
 *
 * Build a line with srv_logline_begin, add fields, and srv_logline_end writes
 * it with one write (lines from different threads never interleave).  A
 * line longer than SRV_LOG_LINE_MAX is cut and ends in "..." (inside a
 * quoted value, in ..." with the quote closed, and never in half an escape
 * or a UTF-8 sequence), so that even a cut line parses.
 *
 * Thread-safety: all calls are thread-safe; the level is a process global set
 * once at start (srv_log_set_level).  srv_logline_begin, _str and _end are
 * also async-signal-safe (no locks, no allocation, no stdio): a signal
 * handler may log with them.
 */
#ifndef SRV_LOG_H
#define SRV_LOG_H

#include <stddef.h>

/* SRV_LOG_ALWAYS: a line of level info written whatever the level set: an
 * operator running at warn or error must still see where the server listens
 * and which model it serves (event=listening, the start-up reload).  Not a
 * level log_level can name. */
enum srv_log_level { SRV_LOG_DEBUG, SRV_LOG_INFO, SRV_LOG_WARN, SRV_LOG_ERROR, SRV_LOG_ALWAYS };

#define SRV_LOG_LINE_MAX 2048

struct srv_logline {
	int enabled; /* 0 when below the level: every add is a no-op */
	int quoted;  /* inside a quoted value: a cut closes the quote */
	int cut;     /* the line was cut: later adds are dropped */
	size_t len;
	char buf[SRV_LOG_LINE_MAX];
};

/* "debug", "info", "warn", "error"; parse returns -1 for anything else. */
int srv_log_level_parse(const char *name);
const char *srv_log_level_name(enum srv_log_level level);

void srv_log_set_level(enum srv_log_level level);
int srv_log_enabled(enum srv_log_level level);

/* Redirect output to @fd (default 2), not exiting (srv_log_exiting); for tests. */
void srv_log_set_fd(int fd);

/* The process is about to end: from now on a line that cannot be written
 * at once waits for the log's reader up to @ms milliseconds in all (not
 * each), instead of being dropped, so that the last lines (why it exits 1,
 * or that it drained) reach a reader that is only slow.  Serving is over,
 * so the wait holds up nothing but the exit. */
void srv_log_exiting(int ms);
#define SRV_LOG_EXIT_WAIT_MS 2000 /* what the server's exits give it */

/* Lines dropped since the start because the log's reader was not reading,
 * or because their write failed or stopped short (a file on a full disk)
 * (semid_log_lines_dropped_total).  The next line written is preceded by
 * an event=log line with the count (and the write's error), and a line cut
 * short is ended by a '\n' first: lines never join. */
unsigned long srv_log_dropped_total(void);

/* "2026-11-28T17:30:00.123Z" for @sec seconds since the epoch and @ms
 * milliseconds, UTC; returns SRV_LOG_TS_LEN.  Async-signal-safe. */
#define SRV_LOG_TS_LEN 24
size_t srv_log_format_ts(char out[SRV_LOG_TS_LEN + 1], long long sec, int ms);

void srv_logline_begin(struct srv_logline *l, enum srv_log_level level, const char *event);
void srv_logline_str(struct srv_logline *l, const char *key, const char *value);
void srv_logline_int(struct srv_logline *l, const char *key, long long value);
void srv_logline_num(struct srv_logline *l, const char *key, double value);
/* Terminate with '\n' and write (no-op when disabled). */
void srv_logline_end(struct srv_logline *l);

/* One-shot: a line with event and msg=@fmt... */
void srv_log(enum srv_log_level level, const char *event, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

#endif
