/* cpus.c - the CPUs this process may use (affinity and cgroup CPU quota), its memory (cgroup
 * memory limits) and its threads (RLIMIT_NPROC, pids cgroup limits); see cpus.h. */
#include "cpus.h"

#include <dirent.h>
#include <errno.h>
#include <limits.h>
#include <pthread.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>
#include <unistd.h>

#include "fsutil.h"

#define CG_MAX 4096 /* longest path or line taken from /proc */

/* One cgroup hierarchy that may hold a CPU quota: v2's unified one, or v1's
 * with the cpu controller. */
struct hier {
	int v;		    /* 1 or 2 */
	int have_path;	    /* /proc/self/cgroup named the process's cgroup in it */
	char path[CG_MAX];  /* that cgroup, without a trailing '/' ("": the root) */
	int have_mount;	    /* a mount of it shows that cgroup */
	char point[CG_MAX]; /* the mount point, @root prefixed */
	size_t rootlen;	    /* length of the mount's root within @path (0 for "/") */
};

static int affinity_count(void)
{
	long n;

	/* A cpu_set_t holds CPU_SETSIZE (1024) CPUs; a kernel built for more
	 * possible CPUs refuses so small a mask (EINVAL): ask again, larger. */
	for (size_t bits = CPU_SETSIZE; bits <= (1u << 22); bits *= 2) {
		size_t size = CPU_ALLOC_SIZE(bits);
		cpu_set_t *set = CPU_ALLOC(bits);
		int rc, count = 0, e;

		if (!set)
			break;
		rc = sched_getaffinity(0, size, set);
		e = errno;
		if (rc == 0)
			count = CPU_COUNT_S(size, set);
		CPU_FREE(set);
		if (count > 0)
			return count;
		if (rc == 0 || e != EINVAL)
			break;
	}
	n = sysconf(_SC_NPROCESSORS_ONLN); /* no mask at all */
	return n > INT_MAX ? INT_MAX : n > 0 ? (int)n : 1;
}

/* Whether the comma-separated @list has @word (v1 "cpu,cpuacct": cpu, not cpuset). */
static int has_word(const char *list, const char *word)
{
	size_t n = strlen(word);

	for (const char *p = list; p;) {
		const char *comma = strchr(p, ',');
		size_t len = comma ? (size_t)(comma - p) : strlen(p);
		if (len == n && !strncmp(p, word, n))
			return 1;
		p = comma ? comma + 1 : NULL;
	}
	return 0;
}

static void chomp(char *s)
{
	size_t n = strlen(s);

	while (n && (s[n - 1] == '\n' || s[n - 1] == '/'))
		s[--n] = '\0';
}

/* What the lines of /proc/self/cgroup and mountinfo fill: the unified
 * hierarchy and v1's of controller @ctl ("cpu", "memory"). */
struct seen {
	const char *root, *ctl;
	struct hier *v2, *v1;
};

/* Call @fn on each line of @root/@name (NUL-terminated, newline kept) but
 * those over CG_MAX, which are skipped (a container's overlay mount line,
 * its lowerdir= naming every layer, runs longer, and comes first): -1 if
 * the file cannot be opened. */
static int each_line(const char *root, const char *name, void (*fn)(char *, struct seen *),
		     struct seen *s)
{
	char file[CG_MAX], *line = NULL;
	size_t cap = 0;
	ssize_t n;
	FILE *f;
	int c;

	snprintf(file, sizeof(file), "%s/%s", root, name);
	f = fopen(file, "re");
	if (!f)
		return -1;
	while ((n = sid_line_read(f, &line, &cap, CG_MAX - 1)) > 0 || n == -2) {
		if (n > 0) {
			fn(line, s);
			continue;
		}
		/* its first CG_MAX bytes were read (the last one may have
		 * been its newline): the rest */
		if (line[CG_MAX - 1] != '\n')
			while ((c = getc(f)) != EOF && c != '\n')
				;
	}
	free(line);
	fclose(f);
	return 0;
}

/* A line of /proc/self/cgroup: "0::/path" (v2) and "ID:cpu,cpuacct:/path"
 * (v1); the path is the rest of the line, colons and spaces included. */
static void cgroup_line(char *line, struct seen *s)
{
	char *c1 = strchr(line, ':'), *c2 = c1 ? strchr(c1 + 1, ':') : NULL;
	struct hier *h = NULL;

	if (!c2 || c2[1] != '/')
		return;
	*c1 = *c2 = '\0';
	if (!strcmp(line, "0") && c1 + 1 == c2)
		h = s->v2;
	else if (has_word(c1 + 1, s->ctl))
		h = s->v1;
	if (!h || h->have_path)
		return;
	snprintf(h->path, sizeof(h->path), "%s", c2 + 1);
	chomp(h->path);
	h->have_path = 1;
}

/* mountinfo escapes a space, tab, newline and backslash as \ and 3 octal digits. */
static void unescape(char *s)
{
	char *o = s;

	for (; *s; s++) {
		if (s[0] == '\\' && s[1] >= '0' && s[1] <= '3' && s[2] >= '0' && s[2] <= '7' &&
		    s[3] >= '0' && s[3] <= '7') {
			*o++ = (char)((s[1] - '0') << 6 | (s[2] - '0') << 3 | (s[3] - '0'));
			s += 3;
		} else {
			*o++ = *s;
		}
	}
	*o = '\0';
}

/* Take the mount (root @mroot at @point) for @h when it shows @h's cgroup. */
static void take_mount(const char *root, struct hier *h, const char *mroot, const char *point)
{
	size_t n = strlen(mroot);

	if (h->have_mount || !h->have_path)
		return;
	if (!strcmp(mroot, "/"))
		n = 0;
	else if (strncmp(h->path, mroot, n) || (h->path[n] && h->path[n] != '/'))
		return; /* a mount of another part of the tree */
	if ((size_t)snprintf(h->point, sizeof(h->point), "%s%s", root, point) >= sizeof(h->point))
		return;
	h->rootlen = n;
	h->have_mount = 1;
}

/* A line of /proc/self/mountinfo: "ID PARENT MAJ:MIN ROOT POINT OPTS
 * [TAGS...] - TYPE SOURCE SUPER", one space between fields, any of which
 * may be empty (a SOURCE of "": "- cgroup2  rw"). */
static void mount_line(char *line, struct seen *s)
{
	char *tok[64], *rest = line;
	int n = 0, dash = -1;

	line[strcspn(line, "\n")] = '\0';
	while (rest && n < 64)
		tok[n++] = strsep(&rest, " ");
	for (int i = 6; i < n && dash < 0; i++)
		if (!strcmp(tok[i], "-"))
			dash = i;
	if (dash < 0 || dash + 3 >= n)
		return;
	unescape(tok[3]);
	unescape(tok[4]);
	if (!strcmp(tok[dash + 1], "cgroup2"))
		take_mount(s->root, s->v2, tok[3], tok[4]);
	else if (!strcmp(tok[dash + 1], "cgroup") && has_word(tok[dash + 3], s->ctl))
		take_mount(s->root, s->v1, tok[3], tok[4]);
}

/* The first line of @dir/@name, without its newline, or -1. */
static int read_line(const char *dir, const char *name, char *out, size_t size)
{
	char file[CG_MAX + 32], *line = NULL;
	size_t cap = 0;
	FILE *f;
	int rc = -1;

	if ((size_t)snprintf(file, sizeof(file), "%s/%s", dir, name) >= sizeof(file))
		return -1;
	f = fopen(file, "re");
	if (!f)
		return -1;
	if (sid_line_read(f, &line, &cap, 255) > 0 && strlen(line) < size) {
		snprintf(out, size, "%s", line);
		out[strcspn(out, "\n")] = '\0';
		rc = 0;
	}
	free(line);
	fclose(f);
	return rc;
}

/* A decimal integer (an optional '-', digits) from *@s, which it moves past. */
static int parse_ll(const char **s, long long *v)
{
	char *end;

	if (!(**s >= '0' && **s <= '9') && !(**s == '-' && (*s)[1] >= '0' && (*s)[1] <= '9'))
		return -1;
	errno = 0;
	*v = strtoll(*s, &end, 10);
	if (errno)
		return -1;
	*s = end;
	return 0;
}

/* The quota at cgroup directory @dir: 1 with *@q / *@p, 0 for none (or no
 * file, or one that does not parse). */
static int quota_at(int v, const char *dir, long long *q, long long *p)
{
	char buf[256];
	const char *s = buf;

	if (v == 2) {
		/* "max 100000" or "200000 100000" */
		if (read_line(dir, "cpu.max", buf, sizeof(buf)) < 0)
			return 0;
		if (!strncmp(s, "max ", 4) || parse_ll(&s, q) < 0 || *s++ != ' ' ||
		    parse_ll(&s, p) < 0 || *s)
			return 0;
	} else {
		if (read_line(dir, "cpu.cfs_quota_us", buf, sizeof(buf)) < 0 ||
		    parse_ll(&s, q) < 0 || *s)
			return 0;
		s = buf;
		if (read_line(dir, "cpu.cfs_period_us", buf, sizeof(buf)) < 0 ||
		    parse_ll(&s, p) < 0 || *s)
			return 0;
	}
	return *q > 0 && *p > 0; /* v1's -1 is "none" */
}

/* Every level of @h's cgroup, from the leaf up to its mount's root: @at
 * called with the directory of each and the cgroup's path (@len bytes). */
static void walk_levels(struct hier *h, void (*at)(struct hier *, const char *, size_t, void *),
			void *ctx)
{
	char dir[2 * CG_MAX];
	size_t len = strlen(h->path);

	if (!h->have_mount)
		return;
	for (;;) {
		if ((size_t)snprintf(dir, sizeof(dir), "%s%.*s", h->point, (int)(len - h->rootlen),
				     h->path + h->rootlen) < sizeof(dir))
			at(h, dir, len, ctx);
		if (len <= h->rootlen)
			break;
		while (len > h->rootlen && h->path[len - 1] != '/')
			len--;
		if (len > 0)
			len--; /* the '/' */
	}
}

/* The tightest quota into @ctx (struct sid_cpus). */
static void quota_level(struct hier *h, const char *dir, size_t len, void *ctx)
{
	struct sid_cpus *c = ctx;
	long long q, p;

	if (quota_at(h->v, dir, &q, &p) &&
	    (!c->quota_cpus || (double)q / (double)p < (double)c->quota / (double)c->period)) {
		long long cpus = q / p + (q % p != 0);
		c->quota = q;
		c->period = p;
		c->quota_cpus = cpus > INT_MAX ? INT_MAX : (int)cpus;
		c->cgroup = h->v;
		/* (a precision of 0 would print nothing of "/") */
		snprintf(c->path, sizeof(c->path), "%.*s", len ? (int)len : 1, len ? h->path : "/");
	}
}

/* The hierarchies (@v2, and v1's of controller @ctl) of this process, from @root. */
static void hiers_find(const char *root, const char *ctl, struct hier *v2, struct hier *v1)
{
	struct seen seen = {root, ctl, v2, v1};

	v2->v = 2;
	v1->v = 1;
	each_line(root, "proc/self/cgroup", cgroup_line, &seen);
	/* without a mount table, cgroup v2 where it is usually mounted */
	if (each_line(root, "proc/self/mountinfo", mount_line, &seen) < 0)
		take_mount(root, v2, "/", "/sys/fs/cgroup");
}

int sid__cpus_at(const char *root, int affinity, struct sid_cpus *c)
{
	struct sid_cpus own;
	struct hier *v2 = calloc(2, sizeof(*v2)), *v1 = v2 ? v2 + 1 : NULL;

	if (!c)
		c = &own;
	memset(c, 0, sizeof(*c));
	c->affinity = affinity > 0 ? affinity : affinity_count();
	c->n = c->affinity;
	if (!v2)
		return c->n; /* out of memory: no quota seen */
	hiers_find(root, "cpu", v2, v1);
	walk_levels(v2, quota_level, c);
	walk_levels(v1, quota_level, c); /* a hybrid host: the cpu controller is in one */
	free(v2);
	if (c->quota_cpus > 0 && c->quota_cpus < c->n)
		c->n = c->quota_cpus;
	return c->n;
}

int sid_cpus_usable(struct sid_cpus *c)
{
	return sid__cpus_at("", 0, c);
}

const char *sid_cpus_why(const struct sid_cpus *c, char *buf, size_t size)
{
	if (!size)
		return buf;
	if (c->quota_cpus > 0 && c->quota_cpus < c->affinity)
		snprintf(buf, size, "cpu quota %lld/%lld at %s (cgroup v%d; affinity %d)", c->quota,
			 c->period, c->path, c->cgroup, c->affinity);
	else if (c->quota_cpus > 0)
		snprintf(buf, size, "affinity %d (cpu quota %lld/%lld at %s allows %d)",
			 c->affinity, c->quota, c->period, c->path, c->quota_cpus);
	else
		snprintf(buf, size, "affinity %d (no cpu quota)", c->affinity);
	return buf;
}

/* The tightest memory limit of a level into @ctx (double, bytes; 0: none
 * yet): v2's memory.max ("max" for none), v1's memory.limit_in_bytes (a
 * page-rounded 2^63 - 1 for none). */
static void memory_level(struct hier *h, const char *dir, size_t len, void *ctx)
{
	double *lim = ctx;
	char buf[256];
	const char *s = buf;
	long long v;

	(void)len;
	if (read_line(dir, h->v == 2 ? "memory.max" : "memory.limit_in_bytes", buf, sizeof(buf)) <
		0 ||
	    parse_ll(&s, &v) < 0 || *s || v <= 0 || v >= (1LL << 62))
		return;
	if (*lim == 0 || (double)v < *lim)
		*lim = (double)v;
}

double sid__memory_at(const char *root, double phys)
{
	struct hier *v2 = calloc(2, sizeof(*v2)), *v1 = v2 ? v2 + 1 : NULL;
	double lim = 0;

	if (v2) {
		hiers_find(root, "memory", v2, v1);
		walk_levels(v2, memory_level, &lim);
		walk_levels(v1, memory_level, &lim);
		free(v2);
	}
	return lim > 0 && (phys <= 0 || lim < phys) ? lim : phys;
}

double sid_memory_usable(void)
{
	long pages = sysconf(_SC_PHYS_PAGES), psz = sysconf(_SC_PAGESIZE);

	return sid__memory_at("", pages > 0 && psz > 0 ? (double)pages * (double)psz : 0);
}

/* What a level's pids limit is compared with (@ctx of pids_level). */
struct pids_room {
	long long want; /* threads the caller may start */
	int tight;	/* set: a level leaves fewer */
};

/* A finite pids.max at a level with fewer than room->want pids to spare
 * beside its pids.current (or no pids.current to tell) sets room->tight. */
static void pids_level(struct hier *h, const char *dir, size_t len, void *ctx)
{
	struct pids_room *room = ctx;
	char buf[64], cur[64];
	const char *s = buf, *c = cur;
	long long max, now;

	(void)h;
	(void)len;
	if (read_line(dir, "pids.max", buf, sizeof(buf)) < 0 || parse_ll(&s, &max) < 0 || *s)
		return; /* "max" for none */
	if (read_line(dir, "pids.current", cur, sizeof(cur)) < 0 || parse_ll(&c, &now) < 0 || *c ||
	    max - now < room->want)
		room->tight = 1;
}

/* Every task (thread) on the machine, from @root/proc/loadavg's
 * "running/total" field; -1 when unknown.  Any user's are among them. */
static long long tasks_all(const char *root)
{
	char dir[CG_MAX], buf[256];
	const char *s;
	long long n;

	snprintf(dir, sizeof(dir), "%s/proc", root);
	if (read_line(dir, "loadavg", buf, sizeof(buf)) < 0 || !(s = strchr(buf, '/')))
		return -1;
	s++;
	return parse_ll(&s, &n) == 0 && n > 0 ? n : -1;
}

/* The tasks (threads) of real user @uid, as RLIMIT_NPROC counts them: the
 * Threads: of each @root/proc/PID/status whose Uid: is @uid; -1 when none
 * is found (no /proc to read: the caller itself is one).  A read of every
 * process: only when the limit is near. */
static long long tasks_of_user(const char *root, uid_t uid)
{
	char dir[CG_MAX], file[CG_MAX + 300], line[256];
	struct dirent *d;
	long long n = 0;
	DIR *proc;

	snprintf(dir, sizeof(dir), "%s/proc", root);
	if (!(proc = opendir(dir)))
		return -1;
	while ((d = readdir(proc))) {
		long long real = -1, threads = 0;
		const char *s;
		FILE *f;

		if (d->d_name[0] < '1' || d->d_name[0] > '9' ||
		    (size_t)snprintf(file, sizeof(file), "%s/%s/status", dir, d->d_name) >=
			sizeof(file) ||
		    !(f = fopen(file, "re")))
			continue; /* not a process, or one that ended meanwhile */
		while (fgets(line, sizeof(line), f)) {
			s = line + strcspn(line, "\t ");
			s += strspn(s, "\t ");
			if (!strncmp(line, "Uid:", 4) && parse_ll(&s, &real) < 0)
				real = -1;
			else if (!strncmp(line, "Threads:", 8) && parse_ll(&s, &threads) < 0)
				threads = 0;
		}
		fclose(f);
		if (real == (long long)uid && threads > 0)
			n += threads;
	}
	closedir(proc);
	return n > 0 ? n : -1;
}

/* Does RLIMIT_NPROC leave fewer than @want threads to start?  The machine's
 * task count (one small read) settles it when the limit is above it by
 * @want; only nearer is every process of the user counted. */
static int nproc_tight(const char *root, long long want)
{
	struct rlimit r;
	long long lim, n;

	if (getrlimit(RLIMIT_NPROC, &r) != 0 || r.rlim_cur == RLIM_INFINITY)
		return 0;
	lim = r.rlim_cur > (rlim_t)LLONG_MAX ? LLONG_MAX : (long long)r.rlim_cur;
	n = tasks_all(root);
	if (n > 0 && lim - n >= want)
		return 0;
	n = tasks_of_user(root, getuid());
	return n < 0 || lim - n < want;
}

int sid__threads_limited_at(const char *root, int nproc_binds, long long want)
{
	struct pids_room room = {want, 0};
	struct hier *v2;

	if (nproc_binds && nproc_tight(root, want))
		return 1;
	if (!(v2 = calloc(2, sizeof(*v2))))
		return 1; /* cannot tell: as limited */
	hiers_find(root, "pids", v2, v2 + 1);
	walk_levels(v2, pids_level, &room);
	walk_levels(v2 + 1, pids_level, &room);
	free(v2);
	return room.tight;
}

int sid_threads_limited(void)
{
	long cpus = sysconf(_SC_NPROCESSORS_CONF);

	return sid__threads_limited_at("", getuid() != 0,
				       (cpus > 0 ? cpus : 1) + SID_THREADS_SPARE);
}

/* sid_threads_try's threads wait for the word to end, so that all hold
 * their place at once; each leaves its thread id (gettid) in its slot. */
struct try_gate {
	pthread_mutex_t mu;
	pthread_cond_t cv;
	int go;
};

struct try_slot {
	struct try_gate *g;
	pthread_t t;
	pid_t tid;
};

static void *try_thread(void *arg)
{
	struct try_slot *s = arg;

	s->tid = gettid();
	pthread_mutex_lock(&s->g->mu);
	while (!s->g->go)
		pthread_cond_wait(&s->g->cv, &s->g->mu);
	pthread_mutex_unlock(&s->g->mu);
	return NULL;
}

/*
 * pthread_join returns once the kernel has cleared the thread's id, which
 * it does before it releases the thread: until then the thread still counts
 * against RLIMIT_NPROC and a cgroup's pids.max, and a thread started at
 * once under a limit with no room to spare failed EAGAIN for it (the
 * server, with room for all its threads, could not start the drain's
 * watch).  Wait, up to 1 s in all, until each joined thread of @s has left
 * /proc/self/task, as it does when released.  Without /proc, no wait.
 */
static void try_released(const struct try_slot *s, int n)
{
	const struct timespec nap = {0, 200 * 1000};
	char path[64];
	int naps = 0;

	for (int i = 0; i < n; i++) {
		snprintf(path, sizeof(path), "/proc/self/task/%d", (int)s[i].tid);
		while (access(path, F_OK) == 0 && naps < 5000) {
			nanosleep(&nap, NULL);
			naps++;
		}
	}
}

int sid_threads_try(int n, size_t stack, int *e)
{
	struct try_gate g = {PTHREAD_MUTEX_INITIALIZER, PTHREAD_COND_INITIALIZER, 0};
	struct try_slot *s = n > 0 ? calloc((size_t)n, sizeof(*s)) : NULL;
	pthread_attr_t attr;
	int started = 0, err = 0;

	if (n > 0 && (!s || pthread_attr_init(&attr) != 0))
		err = ENOMEM;
	else if (n > 0) {
		if (stack)
			pthread_attr_setstacksize(&attr, stack);
		while (started < n) {
			s[started].g = &g;
			if ((err = pthread_create(&s[started].t, &attr, try_thread, &s[started])))
				break;
			started++;
		}
		pthread_attr_destroy(&attr);
	}
	pthread_mutex_lock(&g.mu);
	g.go = 1;
	pthread_cond_broadcast(&g.cv);
	pthread_mutex_unlock(&g.mu);
	for (int i = 0; i < started; i++)
		pthread_join(s[i].t, NULL);
	try_released(s, started);
	free(s);
	if (e)
		*e = err;
	return started;
}
