/*
 * log.c - logfmt lines to stderr for semid-server (see log.h for the format).
 * Each line is assembled in a caller-owned buffer and written with a single
 * writev(2) (with a '\n' before it when the disk cut the last line short),
 * so concurrent threads never interleave partial lines.
 */
#include "log.h"

#include <errno.h>
#include <poll.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/uio.h>
#include <time.h>
#include <unistd.h>

#include "buf.h"
#include "err.h"

static int log_level = SRV_LOG_INFO; /* read with relaxed atomics */
static int log_fd = 2;
static int block_fd = -1;	   /* (may_block, below) */
static int torn;		   /* the last write stopped mid-line (emit, below) */
static long long exit_deadline_ms; /* srv_log_exiting: 0, or until when lines wait */

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
	if (level == SRV_LOG_ALWAYS)
		return level_names[SRV_LOG_INFO];
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
	__atomic_store_n(&block_fd, -1, __ATOMIC_RELAXED); /* another file, maybe by that number */
	__atomic_store_n(&torn, 0, __ATOMIC_RELAXED);	   /* ... not the one a line was cut in */
	__atomic_store_n(&exit_deadline_ms, 0, __ATOMIC_RELAXED);
}

/* Append raw bytes, keeping room for a cut's "...", a closing quote and the
 * '\n' at the end.  @whole: an escape, never split. */
static void put_bytes(struct srv_logline *l, const char *s, size_t n, int whole)
{
	size_t room = sizeof(l->buf) - 5 - l->len;
	if (l->cut)
		return;
	if (n > room) {
		if (whole)
			room = 0;
		/* not in the middle of a UTF-8 sequence */
		while (room > 0 && ((unsigned char)s[room] & 0xc0) == 0x80)
			room--;
		memcpy(l->buf + l->len, s, room);
		l->len += room;
		memcpy(l->buf + l->len, "...", 3);
		l->len += 3;
		if (l->quoted)
			l->buf[l->len++] = '"'; /* now at most sizeof - 1 */
		l->cut = 1;
		return;
	}
	memcpy(l->buf + l->len, s, n);
	l->len += n;
}

static void put(struct srv_logline *l, const char *s, size_t n)
{
	put_bytes(l, s, n, 0);
}

static void putc_(struct srv_logline *l, char c)
{
	put(l, &c, 1);
}

static void digits(char *o, long v, int n)
{
	while (n-- > 0) {
		o[n] = (char)('0' + v % 10);
		v /= 10;
	}
}

size_t srv_log_format_ts(char out[SRV_LOG_TS_LEN + 1], long long sec, int ms)
{
	/* days since 1970-01-01 to a civil date (proleptic Gregorian; H. Hinnant's
	 * days_from_civil inverse), in plain arithmetic: no gmtime_r, no locale */
	long long days = sec / 86400, sod = sec % 86400;
	if (sod < 0) {
		sod += 86400;
		days--;
	}
	long long z = days + 719468, era = (z >= 0 ? z : z - 146096) / 146097;
	long long doe = z - era * 146097;
	long long yoe = (doe - doe / 1460 + doe / 36524 - doe / 146096) / 365;
	long long doy = doe - (365 * yoe + yoe / 4 - yoe / 100), mp = (5 * doy + 2) / 153;
	long long d = doy - (153 * mp + 2) / 5 + 1, m = mp < 10 ? mp + 3 : mp - 9;
	long long y = yoe + era * 400 + (m <= 2);

	if (y < 0 || y > 9999)
		y = y < 0 ? 0 : 9999; /* four digits, as the format promises */
	digits(out, (long)y, 4);
	out[4] = '-';
	digits(out + 5, (long)m, 2);
	out[7] = '-';
	digits(out + 8, (long)d, 2);
	out[10] = 'T';
	digits(out + 11, (long)(sod / 3600), 2);
	out[13] = ':';
	digits(out + 14, (long)(sod / 60 % 60), 2);
	out[16] = ':';
	digits(out + 17, (long)(sod % 60), 2);
	out[19] = '.';
	digits(out + 20, ms, 3);
	out[23] = 'Z';
	out[24] = '\0';
	return SRV_LOG_TS_LEN;
}

void srv_logline_begin(struct srv_logline *l, enum srv_log_level level, const char *event)
{
	struct timespec now;
	char ts[SRV_LOG_TS_LEN + 1];

	l->len = 0;
	l->quoted = l->cut = 0;
	l->enabled = srv_log_enabled(level);
	if (!l->enabled)
		return;
	clock_gettime(CLOCK_REALTIME, &now);
	put(l, "ts=", 3);
	put(l, ts, srv_log_format_ts(ts, (long long)now.tv_sec, (int)(now.tv_nsec / 1000000)));
	put(l, " level=", 7);
	put(l, srv_log_level_name(level), strlen(srv_log_level_name(level)));
	srv_logline_str(l, "event", event);
}

static int needs_quotes(const char *v)
{
	if (!*v)
		return 1;
	for (const unsigned char *p = (const unsigned char *)v; *p; p++) {
		if (*p <= ' ' || *p == '"' || *p == '=' || *p == '\\' || *p == 0x7f)
			return 1;
		if (*p >= 0x80) {
			size_t n = sid_utf8_len(p, 4);
			if (!n)
				return 1;
			p += n - 1;
		}
	}
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
	l->quoted = 1;
	for (const unsigned char *p = (const unsigned char *)value; *p; p++) {
		char esc[8];
		if (*p == '"' || *p == '\\') {
			esc[0] = '\\';
			esc[1] = (char)*p;
			put_bytes(l, esc, 2, 1);
		} else if (*p == '\n') {
			put_bytes(l, "\\n", 2, 1);
		} else if (*p == '\t') {
			put_bytes(l, "\\t", 2, 1);
		} else if (*p < 0x20 || *p == 0x7f) {
			/* esc goes out with its length (put_bytes) */
			/* NOLINTNEXTLINE(bugprone-not-null-terminated-result) */
			memcpy(esc, "\\u00", 4);
			esc[4] = "0123456789abcdef"[*p >> 4];
			esc[5] = "0123456789abcdef"[*p & 15];
			put_bytes(l, esc, 6, 1);
		} else if (*p >= 0x80) {
			/* a client's bytes (a path, a header) need not be UTF-8;
			 * the log stays valid UTF-8 for whatever reads it */
			size_t n = sid_utf8_len(p, 4);
			if (n) {
				put(l, (const char *)p, n);
				p += n - 1;
			} else {
				/* esc goes out with its length (put_bytes) */
				/* NOLINTNEXTLINE(bugprone-not-null-terminated-result) */
				memcpy(esc, "\\x", 2);
				esc[2] = "0123456789abcdef"[*p >> 4];
				esc[3] = "0123456789abcdef"[*p & 15];
				put_bytes(l, esc, 4, 1);
			}
		} else {
			putc_(l, (char)*p);
		}
	}
	putc_(l, '"');
	l->quoted = 0;
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

/*
 * A reader of stderr that stops reading (a stalled journald or log
 * shipper) fills its pipe or socket, and then every write waits: the
 * threads that answer requests and the event loop with them.  Where a write
 * can wait (not a regular file), a line that cannot be written now is
 * dropped and counted, and the next line that can be is preceded by the
 * count: serving never waits for its log.  A file is written as ever.
 *
 * A write that fails or stops short (a regular file on a full disk:
 * ENOSPC, or past RLIMIT_FSIZE) loses its line too: it is counted the same
 * way, the count is said with the write's error once a line can be written
 * again, and a line cut short is ended by a '\n' at the start of the next
 * write, so that no two lines join.  (Two threads writing at the very
 * moment a line is cut may still join; the file system was full.)
 */
static int block_may;		    /* whether block_fd (log_fd, once asked) can block */
static unsigned long dropped;	    /* lines dropped since the last count written */
static unsigned long dropped_total; /* and since the start */
static int drop_errno;		    /* a failed write's errno since then; 0: none failed */

unsigned long srv_log_dropped_total(void)
{
	return __atomic_load_n(&dropped_total, __ATOMIC_RELAXED);
}

static long long now_ms(void)
{
	struct timespec t;

	clock_gettime(CLOCK_MONOTONIC, &t);
	return (long long)t.tv_sec * 1000 + t.tv_nsec / 1000000;
}

void srv_log_exiting(int ms)
{
	__atomic_store_n(&exit_deadline_ms, now_ms() + (ms > 0 ? ms : 0), __ATOMIC_RELAXED);
}

/* Whether @fd takes a write now; once exiting, waits for that up to the
 * exit deadline. */
static int fd_writable(int fd)
{
	struct pollfd p = {.fd = fd, .events = POLLOUT};
	long long until = __atomic_load_n(&exit_deadline_ms, __ATOMIC_RELAXED), wait;
	int r;

	do {
		wait = until ? until - now_ms() : 0;
		r = poll(&p, 1, wait > 0 ? (int)wait : 0);
	} while (r < 0 && errno == EINTR);
	return r == 1 && (p.revents & POLLOUT);
}

static int may_block(int fd)
{
	struct stat st;

	if (__atomic_load_n(&block_fd, __ATOMIC_RELAXED) != fd) {
		__atomic_store_n(&block_may, fstat(fd, &st) != 0 || !S_ISREG(st.st_mode),
				 __ATOMIC_RELAXED);
		__atomic_store_n(&block_fd, fd, __ATOMIC_RELAXED);
	}
	return __atomic_load_n(&block_may, __ATOMIC_RELAXED);
}

/* Count a line lost: @err, the failed write's errno, or 0 when it was
 * never tried (the reader was not reading). */
static void count_dropped(int err)
{
	if (err)
		__atomic_store_n(&drop_errno, err, __ATOMIC_RELAXED);
	__atomic_add_fetch(&dropped, 1, __ATOMIC_RELAXED);
	__atomic_add_fetch(&dropped_total, 1, __ATOMIC_RELAXED);
}

/* Write @n bytes of a line, after a '\n' that ends the line the last write
 * cut short.  Returns 0 when all were written, else the errno of the write
 * that failed (EIO for one that wrote nothing and said nothing); a line cut
 * short leaves the '\n' to the next write. */
static int emit(int fd, const char *p, size_t n)
{
	static char newline = '\n';
	struct iovec iov[2] = {{.iov_base = &newline, .iov_len = 1},
			       {.iov_base = (void *)p, .iov_len = n}};
	int nl = __atomic_exchange_n(&torn, 0, __ATOMIC_RELAXED), cnt = 1 + nl, err = 0;
	struct iovec *v = iov + !nl;
	size_t done = 0, want = n + (size_t)nl;

	while (done < want) {
		ssize_t w = writev(fd, v, cnt);
		if (w < 0 && errno == EINTR)
			continue;
		if (w <= 0) {
			err = w < 0 ? errno : EIO;
			break;
		}
		done += (size_t)w;
		/* torn is 0 or 1, so cnt stops v at the array's end */
		/* NOLINTNEXTLINE(clang-analyzer-core.UndefinedBinaryOperatorResult) */
		for (; cnt > 0 && (size_t)w >= v->iov_len; v++, cnt--)
			w -= (ssize_t)v->iov_len;
		if (cnt > 0) {
			v->iov_base = (char *)v->iov_base + w;
			v->iov_len -= (size_t)w;
		}
	}
	/* unended: part of the line written, or not even the '\n' owed */
	if (done < want && done != (size_t)nl)
		__atomic_store_n(&torn, 1, __ATOMIC_RELAXED);
	return err;
}

/* The note before the first line written after @n were dropped: why they
 * were (the reader, or a write's error).  Returns as emit does. */
static int emit_dropped(int fd, unsigned long n)
{
	int err = __atomic_exchange_n(&drop_errno, 0, __ATOMIC_RELAXED), rc;
	struct srv_logline d;

	srv_logline_begin(&d, SRV_LOG_WARN, "log");
	if (!d.enabled)
		return 0; /* (log_level error) */
	srv_logline_int(&d, "dropped", (long long)n);
	if (err) {
		/* strerrordesc_np, not strerror: no locale, async-signal-safe */
		const char *why = strerrordesc_np(err);
		srv_logline_str(&d, "msg", "lines dropped: writing the log failed");
		if (why)
			srv_logline_str(&d, "error", why);
		else
			srv_logline_int(&d, "errno", err);
	} else {
		srv_logline_str(&d, "msg",
				"lines dropped: the log's reader was not reading (serving "
				"does not wait for it)");
	}
	d.buf[d.len++] = '\n';
	if ((rc = emit(fd, d.buf, d.len)) && err)
		__atomic_store_n(&drop_errno, err, __ATOMIC_RELAXED); /* said next time */
	return rc;
}

void srv_logline_end(struct srv_logline *l)
{
	int fd = __atomic_load_n(&log_fd, __ATOMIC_RELAXED), err;
	unsigned long n;

	if (!l->enabled)
		return;
	l->buf[l->len++] = '\n';
	l->enabled = 0;
	if (may_block(fd) && !fd_writable(fd)) {
		count_dropped(0);
		return;
	}
	if ((n = __atomic_exchange_n(&dropped, 0, __ATOMIC_RELAXED)) &&
	    (err = emit_dropped(fd, n))) {
		__atomic_add_fetch(&dropped, n, __ATOMIC_RELAXED); /* said with the next */
		count_dropped(err);
		return;
	}
	if ((err = emit(fd, l->buf, l->len)))
		count_dropped(err);
}

void srv_log(enum srv_log_level level, const char *event, const char *fmt, ...)
{
	struct srv_logline l;
	char msg[SRV_LOG_LINE_MAX]; /* longer than what the line holds: cut there, with "..." */
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
