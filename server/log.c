/*
 * log.c - logfmt lines to stderr for semid-server (see log.h for the format).
 * Each line is assembled in a caller-owned buffer and written with a single
 * write(2), so concurrent threads never interleave partial lines.
 */
#include "log.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

static int log_level = SRV_LOG_INFO; /* read with relaxed atomics */
static int log_fd = 2;

static const char *const level_names[] = {"debug", "info", "warn", "error"};

int srv_log_level_parse(const char *name)
{
	for (int i = 0; i < 4; i++)
		if (name && strcmp(name, level_names[i]) == 0)
			return i;
	return -1;
}

const char *srv_log_level_name(enum srv_log_level level)
{
	return (unsigned)level < 4 ? level_names[level] : "?";
}

void srv_log_set_level(enum srv_log_level level)
{
	__atomic_store_n(&log_level, (int)level, __ATOMIC_RELAXED);
}

int srv_log_enabled(enum srv_log_level level)
{
	return (int)level >= __atomic_load_n(&log_level, __ATOMIC_RELAXED);
}

void srv_log_set_fd(int fd)
{
	__atomic_store_n(&log_fd, fd, __ATOMIC_RELAXED);
}

/* Append raw bytes, keeping room for "...\n" at the end. */
static void put(struct srv_logline *l, const char *s, size_t n)
{
	size_t room = sizeof(l->buf) - 5 - l->len;
	if (l->len > sizeof(l->buf) - 5)
		return;
	if (n > room) {
		memcpy(l->buf + l->len, s, room);
		l->len += room;
		memcpy(l->buf + l->len, "...", 3);
		l->len += 3; /* now sizeof - 2: full, later puts are dropped */
		return;
	}
	memcpy(l->buf + l->len, s, n);
	l->len += n;
}

static void putc_(struct srv_logline *l, char c)
{
	put(l, &c, 1);
}

void srv_logline_begin(struct srv_logline *l, enum srv_log_level level, const char *event)
{
	struct timeval tv;
	struct tm tm;
	char ts[64];

	l->len = 0;
	l->enabled = srv_log_enabled(level);
	if (!l->enabled)
		return;
	gettimeofday(&tv, NULL);
	gmtime_r(&tv.tv_sec, &tm);
	snprintf(ts, sizeof(ts), "%04d-%02d-%02dT%02d:%02d:%02d.%03dZ", tm.tm_year + 1900,
		 tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec,
		 (int)(tv.tv_usec / 1000));
	put(l, "ts=", 3);
	put(l, ts, strlen(ts));
	put(l, " level=", 7);
	put(l, level_names[level], strlen(level_names[level]));
	srv_logline_str(l, "event", event);
}

static int needs_quotes(const char *v)
{
	if (!*v)
		return 1;
	for (const unsigned char *p = (const unsigned char *)v; *p; p++)
		if (*p <= ' ' || *p == '"' || *p == '=' || *p == '\\' || *p == 0x7f)
			return 1;
	return 0;
}

void srv_logline_str(struct srv_logline *l, const char *key, const char *value)
{
	if (!l->enabled)
		return;
	if (!value)
		value = "";
	putc_(l, ' ');
	put(l, key, strlen(key));
	putc_(l, '=');
	if (!needs_quotes(value)) {
		put(l, value, strlen(value));
		return;
	}
	putc_(l, '"');
	for (const unsigned char *p = (const unsigned char *)value; *p; p++) {
		char esc[8];
		if (*p == '"' || *p == '\\') {
			esc[0] = '\\';
			esc[1] = (char)*p;
			put(l, esc, 2);
		} else if (*p == '\n') {
			put(l, "\\n", 2);
		} else if (*p == '\t') {
			put(l, "\\t", 2);
		} else if (*p < 0x20 || *p == 0x7f) {
			snprintf(esc, sizeof(esc), "\\u%04x", *p);
			put(l, esc, 6);
		} else {
			putc_(l, (char)*p);
		}
	}
	putc_(l, '"');
}

void srv_logline_int(struct srv_logline *l, const char *key, long long value)
{
	char v[32];
	if (!l->enabled)
		return;
	snprintf(v, sizeof(v), "%lld", value);
	srv_logline_str(l, key, v);
}

void srv_logline_num(struct srv_logline *l, const char *key, double value)
{
	char v[40];
	if (!l->enabled)
		return;
	snprintf(v, sizeof(v), "%.6g", value);
	srv_logline_str(l, key, v);
}

void srv_logline_end(struct srv_logline *l)
{
	const char *p;
	size_t n;
	if (!l->enabled)
		return;
	l->buf[l->len++] = '\n';
	p = l->buf;
	n = l->len;
	while (n > 0) {
		ssize_t w = write(__atomic_load_n(&log_fd, __ATOMIC_RELAXED), p, n);
		if (w < 0 && errno == EINTR)
			continue;
		if (w <= 0)
			break; /* nowhere to report a failing stderr */
		p += w;
		n -= (size_t)w;
	}
	l->enabled = 0;
}

void srv_log(enum srv_log_level level, const char *event, const char *fmt, ...)
{
	struct srv_logline l;
	char msg[1024];
	va_list ap;

	srv_logline_begin(&l, level, event);
	if (!l.enabled)
		return;
	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	srv_logline_str(&l, "msg", msg);
	srv_logline_end(&l);
}
