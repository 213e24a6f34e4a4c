/*
 * proc.c - the process_* metrics of Prometheus's client libraries, read
 * from /proc/self at scrape time.  See proc.h.
 */
#include "proc.h"
#include "log.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <string.h>
#include <sys/resource.h>
#include <unistd.h>

static int is_digit(char c)
{
	return c >= '0' && c <= '9';
}

/* A decimal number at *@pp (< @end) into *@v, with a '-' sign allowed when
 * @neg_ok (its value is then of no use: *@v is 0).  -1 when none, or on
 * overflow. */
static int parse_ull(const char **pp, const char *end, unsigned long long *v, int neg_ok)
{
	const char *p = *pp;
	unsigned long long x = 0;
	int neg = 0;

	if (p < end && *p == '-' && neg_ok) {
		neg = 1;
		p++;
	}
	if (p == end || !is_digit(*p))
		return -1;
	for (; p < end && is_digit(*p); p++) {
		unsigned d = (unsigned)(*p - '0');
		if (x > (ULLONG_MAX - d) / 10)
			return -1;
		x = x * 10 + d;
	}
	*pp = p;
	*v = neg ? 0 : x;
	return 0;
}

/* Fields after "pid (comm) state" that the metrics use, by their place
 * after the state (field n of proc(5) is place n - 3); the others, such as
 * priority and nice, may be negative. */
enum { F_UTIME = 11, F_STIME = 12, F_THREADS = 17, F_START = 19, F_VSIZE = 20, F_RSS = 21 };

int srv_proc_parse_stat(const char *text, size_t len, struct srv_proc_stat *st)
{
	const char *p = text, *end = text + len, *close;
	unsigned long long v[F_RSS + 1];

	if (p == end || !is_digit(*p))
		return -1;
	while (p < end && is_digit(*p))
		p++;
	if (end - p < 2 || p[0] != ' ' || p[1] != '(')
		return -1;
	close = memrchr(p, ')', (size_t)(end - p));
	if (!close)
		return -1;
	p = close + 1;
	if (end - p < 2 || p[0] != ' ' ||
	    !((p[1] >= 'A' && p[1] <= 'Z') || (p[1] >= 'a' && p[1] <= 'z')))
		return -1;
	p += 2;
	for (int k = 1; k <= F_RSS; k++) {
		int used = k == F_UTIME || k == F_STIME || k == F_THREADS || k == F_START ||
			   k == F_VSIZE || k == F_RSS;
		if (p == end || *p != ' ')
			return -1;
		p++;
		if (parse_ull(&p, end, &v[k], !used) != 0)
			return -1;
	}
	if (p == end || (*p != ' ' && *p != '\n'))
		return -1; /* rsslim and more follow rss: a line cut short is no line */
	if (v[F_THREADS] == 0)
		return -1; /* a live process has a thread: not what it seems */
	st->utime = v[F_UTIME];
	st->stime = v[F_STIME];
	st->threads = v[F_THREADS];
	st->starttime = v[F_START];
	st->vsize = v[F_VSIZE];
	st->rss = v[F_RSS];
	return 0;
}

enum { BT_MATCH, BT_SKIP, BT_DIGITS, BT_FOUND, BT_BAD };

void srv_btime_scan_init(struct srv_btime_scan *s)
{
	memset(s, 0, sizeof(*s));
	s->state = BT_MATCH;
}

void srv_btime_scan_feed(struct srv_btime_scan *s, const char *p, size_t n)
{
	static const char key[] = "btime ";

	for (size_t i = 0; i < n && s->state != BT_FOUND && s->state != BT_BAD; i++) {
		char c = p[i];
		switch (s->state) {
		case BT_MATCH:
			if (c == key[s->pos]) {
				if (++s->pos == (int)sizeof(key) - 1) {
					s->state = BT_DIGITS;
					s->value = 0;
					s->digits = 0;
				}
			} else {
				s->pos = 0;
				if (c != '\n')
					s->state = BT_SKIP;
			}
			break;
		case BT_SKIP:
			if (c == '\n')
				s->state = BT_MATCH;
			break;
		case BT_DIGITS:
			if (is_digit(c)) {
				int d = c - '0';
				if (s->value > (LLONG_MAX - d) / 10) {
					s->state = BT_BAD;
					break;
				}
				s->value = s->value * 10 + d;
				s->digits++;
			} else {
				s->state = c == '\n' && s->digits ? BT_FOUND : BT_BAD;
			}
			break;
		}
	}
}

int srv_btime_scan_result(const struct srv_btime_scan *s, long long *btime)
{
	/* the kernel ends the line with '\n'; a last line without one counts */
	if ((s->state == BT_FOUND || (s->state == BT_DIGITS && s->digits)) && s->value > 0) {
		*btime = s->value;
		return 0;
	}
	return -1;
}

void srv_proc_init(struct srv_proc *p, const char *root)
{
	memset(p, 0, sizeof(*p));
	p->root = root ? root : "/proc";
}

/* Each source of values, whose first failure is logged. */
enum proc_src { SRC_STAT, SRC_BTIME, SRC_FD, SRC_NOFILE, SRC_AS, SRC_CLK, SRC_PAGE };

static const char *const src_metrics[] = {
    /* one string (clang's -Wstring-concatenation takes two lines for a
     * missing comma) */
    [SRC_STAT] = ("process_cpu_seconds_total, process_resident_memory_bytes, "
		  "process_virtual_memory_bytes, process_threads, process_start_time_seconds"),
    [SRC_BTIME] = "process_start_time_seconds",
    [SRC_FD] = "process_open_fds",
    [SRC_NOFILE] = "process_max_fds",
    [SRC_AS] = "process_virtual_memory_max_bytes",
    [SRC_CLK] = "process_cpu_seconds_total, process_start_time_seconds",
    [SRC_PAGE] = "process_resident_memory_bytes",
};

static void failed(struct srv_proc *p, enum proc_src src, const char *what, const char *why)
{
	int bit = 1 << src;

	if (__atomic_fetch_or(&p->logged, bit, __ATOMIC_RELAXED) & bit)
		return;
	srv_log(SRV_LOG_WARN, "metrics",
		"%s: %s; no %s in /metrics while it cannot be read (logged once)", what, why,
		src_metrics[src]);
}

/* Read all of a small file into @buf (@cap bytes, one kept free): NULL, or
 * why not. */
static const char *read_small(const char *path, char *buf, size_t cap, size_t *len)
{
	int fd = open(path, O_RDONLY | O_CLOEXEC);
	size_t n = 0;
	const char *why = NULL;

	if (fd < 0)
		return strerror(errno);
	while (n < cap - 1) {
		ssize_t r = read(fd, buf + n, cap - 1 - n);
		if (r < 0 && errno == EINTR)
			continue;
		if (r < 0) {
			why = strerror(errno);
			break;
		}
		if (r == 0)
			break;
		n += (size_t)r;
	}
	if (!why && n == cap - 1)
		why = "longer than expected";
	close(fd);
	*len = n;
	return why;
}

/* /proc/stat's btime, read once: 0 and *@btime, or -1 (logged). */
static int boot_time(struct srv_proc *p, long long *btime)
{
	char path[PATH_MAX], buf[4096];
	struct srv_btime_scan s;
	const char *why = NULL;
	int fd;

	*btime = __atomic_load_n(&p->btime, __ATOMIC_RELAXED);
	if (*btime > 0)
		return 0;
	snprintf(path, sizeof(path), "%s/stat", p->root);
	fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0) {
		failed(p, SRC_BTIME, path, strerror(errno));
		return -1;
	}
	srv_btime_scan_init(&s);
	for (;;) {
		ssize_t r = read(fd, buf, sizeof(buf));
		if (r < 0 && errno == EINTR)
			continue;
		if (r < 0)
			why = strerror(errno);
		if (r <= 0)
			break;
		srv_btime_scan_feed(&s, buf, (size_t)r);
		if (s.state == BT_FOUND || s.state == BT_BAD)
			break;
	}
	close(fd);
	if (!why && srv_btime_scan_result(&s, btime) != 0)
		why = "no valid btime line";
	if (why) {
		failed(p, SRC_BTIME, path, why);
		return -1;
	}
	__atomic_store_n(&p->btime, *btime, __ATOMIC_RELAXED);
	return 0;
}

/* Entries of /proc/self/fd but the directory's own descriptor: -1 (logged)
 * when it cannot be listed.  getdents64 into a buffer on the stack: no
 * allocation, however many descriptors are open. */
static long open_fds(struct srv_proc *p)
{
	char path[PATH_MAX], self[24];
	char buf[4096] __attribute__((aligned(8)));
	long count = 0;
	int fd;

	snprintf(path, sizeof(path), "%s/self/fd", p->root);
	fd = open(path, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (fd < 0) {
		failed(p, SRC_FD, path, strerror(errno));
		return -1;
	}
	snprintf(self, sizeof(self), "%d", fd);
	for (;;) {
		ssize_t n = getdents64(fd, buf, sizeof(buf));
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0) {
			failed(p, SRC_FD, path, strerror(errno));
			count = -1;
			break;
		}
		if (n == 0)
			break;
		for (ssize_t off = 0; off < n;) {
			const struct dirent64 *d = (const struct dirent64 *)(buf + off);
			if (d->d_name[0] != '.' && strcmp(d->d_name, self) != 0)
				count++;
			off += d->d_reclen;
		}
	}
	close(fd);
	return count;
}

/* @p's self/stat (its path in @path), parsed: NULL, or why it could not be. */
static const char *read_stat(const struct srv_proc *p, char path[PATH_MAX],
			     struct srv_proc_stat *st)
{
	char text[2048];
	size_t len = 0;
	const char *why;

	snprintf(path, PATH_MAX, "%s/self/stat", p->root);
	why = read_small(path, text, sizeof(text), &len);
	if (!why && srv_proc_parse_stat(text, len, st) != 0)
		why = "not a stat line";
	return why;
}

long long srv_proc_rss(const struct srv_proc *p)
{
	char path[PATH_MAX];
	struct srv_proc_stat st;
	long page = sysconf(_SC_PAGESIZE);

	if (page <= 0 || read_stat(p, path, &st))
		return -1;
	return (long long)st.rss * page;
}

static void family(struct srv_buf *out, const char *name, const char *type, const char *help)
{
	srv_buf_printf(out, "# HELP %s %s\n# TYPE %s %s\n", name, help, name, type);
}

void srv_proc_render(struct srv_proc *p, struct srv_buf *out)
{
	char path[PATH_MAX];
	struct srv_proc_stat st;
	const char *why = read_stat(p, path, &st);
	long tck = sysconf(_SC_CLK_TCK), page = sysconf(_SC_PAGESIZE), fds;
	long long btime = 0;
	unsigned long long rss;
	int have_stat, have_btime = 0;
	struct rlimit rl;

	if (why)
		failed(p, SRC_STAT, path, why);
	have_stat = !why;
	if (tck <= 0) {
		failed(p, SRC_CLK, "sysconf(_SC_CLK_TCK)", "no clock tick");
		tck = 0;
	}
	if (page <= 0) {
		failed(p, SRC_PAGE, "sysconf(_SC_PAGESIZE)", "no page size");
		page = 0;
	}
	if (have_stat && tck)
		have_btime = boot_time(p, &btime) == 0;

	family(out, "process_cpu_seconds_total", "counter",
	       "Total user and system CPU time spent in seconds.");
	if (have_stat && tck)
		srv_buf_printf(out, "process_cpu_seconds_total %.3f\n",
			       (double)(st.utime + st.stime) / (double)tck);
	family(out, "process_resident_memory_bytes", "gauge", "Resident memory size in bytes.");
	if (have_stat && page > 0 &&
	    !__builtin_mul_overflow(st.rss, (unsigned long long)page, &rss))
		srv_buf_printf(out, "process_resident_memory_bytes %llu\n", rss);
	family(out, "process_virtual_memory_bytes", "gauge", "Virtual memory size in bytes.");
	if (have_stat)
		srv_buf_printf(out, "process_virtual_memory_bytes %llu\n", st.vsize);
	family(out, "process_virtual_memory_max_bytes", "gauge",
	       "Maximum amount of virtual memory available in bytes.");
	if (getrlimit(RLIMIT_AS, &rl) != 0)
		failed(p, SRC_AS, "getrlimit(RLIMIT_AS)", strerror(errno));
	else if (rl.rlim_cur != RLIM_INFINITY) /* unlimited: no sample */
		srv_buf_printf(out, "process_virtual_memory_max_bytes %llu\n",
			       (unsigned long long)rl.rlim_cur);
	family(out, "process_open_fds", "gauge", "Number of open file descriptors.");
	fds = open_fds(p);
	if (fds >= 0)
		srv_buf_printf(out, "process_open_fds %ld\n", fds);
	family(out, "process_max_fds", "gauge", "Maximum number of open file descriptors.");
	if (getrlimit(RLIMIT_NOFILE, &rl) != 0)
		failed(p, SRC_NOFILE, "getrlimit(RLIMIT_NOFILE)", strerror(errno));
	else if (rl.rlim_cur != RLIM_INFINITY)
		srv_buf_printf(out, "process_max_fds %llu\n", (unsigned long long)rl.rlim_cur);
	family(out, "process_start_time_seconds", "gauge",
	       "Start time of the process since unix epoch in seconds.");
	if (have_btime)
		srv_buf_printf(out, "process_start_time_seconds %.3f\n",
			       (double)btime + (double)st.starttime / (double)tck);
	family(out, "process_threads", "gauge", "Number of OS threads in the process.");
	if (have_stat)
		srv_buf_printf(out, "process_threads %llu\n", st.threads);
}
