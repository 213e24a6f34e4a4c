/*
 * fsutil.c - file helpers: atomic publish (temp + fsync + rename + fsync of
 * the directory, as redis rdbSave), capped whole-file and line reads,
 * read-only maps, and a hand-written FIPS 180-4 SHA-256 (no crypto library
 * dependency).  See fsutil.h.
 */
#include "fsutil.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <poll.h>
#include <stdio.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <sys/vfs.h>
#include <time.h>
#include <unistd.h>

static unsigned long publish_counter; /* atomic; makes temp names unique per process */

int sid__fsutil_no_tmpfile;

/* Write all of @buf to @fd, retrying short writes and EINTR. */
static int write_all(int fd, const uint8_t *p, size_t len)
{
	while (len > 0) {
		size_t chunk = len > (1u << 30) ? (1u << 30) : len;
		ssize_t n = write(fd, p, chunk);
		if (n < 0) {
			if (errno == EINTR)
				continue;
			return -1;
		}
		p += n;
		len -= (size_t)n;
	}
	return 0;
}

int sid_path_dir(const char *path, char *dir)
{
	const char *slash = strrchr(path, '/');
	if (!slash) {
		strcpy(dir, ".");
	} else if (slash == path) {
		strcpy(dir, "/");
	} else {
		size_t n = (size_t)(slash - path);
		if (n >= PATH_MAX)
			return -1;
		memcpy(dir, path, n);
		dir[n] = '\0';
	}
	return 0;
}

/* fsync the directory holding @path, so a rename into it is durable (a
 * directory that cannot be synced, EINVAL or EROFS, is not an error). */
static int fsync_parent(const char *path, struct sid_error *err)
{
	char dir[PATH_MAX];
	int fd, rc = 0;

	if (sid_path_dir(path, dir) < 0)
		return sid_error_set(err, SID_EIO, "%s: directory name too long", path);
	fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (fd < 0)
		return sid_error_set(err, SID_EIO, "%s: open directory %s: %s", path, dir,
				     strerror(errno));
	if (fsync(fd) != 0 && errno != EINVAL && errno != EROFS)
		rc = sid_error_set(err, SID_EIO, "%s: fsync directory %s: %s", path, dir,
				   strerror(errno));
	close(fd);
	return rc;
}

int sid_same_file(const char *path, const struct stat *st)
{
	struct stat ps;

	return stat(path, &ps) == 0 && ps.st_dev == st->st_dev && ps.st_ino == st->st_ino;
}

const char *sid__fs_network_name(unsigned long magic)
{
	/* linux/magic.h, and the file systems' own sources where it has none */
	static const struct {
		unsigned long magic;
		const char *name;
	} net[] = {
	    {0x6969, "nfs"},	   {0x517B, "smb"},	  {0xFF534D42, "cifs"},
	    {0xFE534D42, "smb2"},  {0x01021997, "9p"},	  {0x5346414F, "afs"},
	    {0x6B414653, "afs"},   {0x00C36400, "ceph"},  {0x73757245, "coda"},
	    {0x01161970, "gfs2"},  {0x7461636F, "ocfs2"}, {0x0BD00BD0, "lustre"},
	    {0x47504653, "gpfs"},  {0x013111A8, "ibrix"}, {0xAAD7AAEA, "panfs"},
	    {0x19830326, "fhgfs"}, {0x564C, "ncp"},	  {0x6E667364, "nfsd"},
	};

	for (size_t i = 0; i < sizeof(net) / sizeof(net[0]); i++)
		if (net[i].magic == (magic & 0xFFFFFFFFUL))
			return net[i].name;
	return NULL;
}

const char *sid_fs_network(const char *path)
{
	struct statfs st;
	char dir[PATH_MAX];

	if (statfs(path, &st) != 0) {
		if (sid_path_dir(path, dir) < 0 || statfs(dir, &st) != 0)
			return NULL;
	}
	return sid__fs_network_name((unsigned long)st.f_type);
}

ssize_t sid_file_head(const char *path, void *buf, size_t n)
{
	int fd = open(path, O_RDONLY | O_CLOEXEC | O_NONBLOCK);
	ssize_t got;

	if (fd < 0)
		return -1;
	while ((got = pread(fd, buf, n, 0)) < 0 && errno == EINTR)
		;
	close(fd);
	return got;
}

const char *sid_file_kind(const void *head, size_t n)
{
	static const struct {
		const char *magic;
		size_t n;
		const char *kind;
	} kinds[] = {
	    {"\x93NUMPY", 6, "a .npy array"},
	    {"PK\x03\x04", 4, "a zip archive (a PyTorch torch.save file?)"},
	    {"SQLite format 3", 16, "an SQLite database (the ID registry?)"},
	    {"\x1f\x8b", 2, "gzip-compressed data (decompress it first)"},
	    {"\x28\xb5\x2f\xfd", 4, "zstd-compressed data (decompress it first)"},
	    {"GGUF", 4, "a GGUF file"},
	    {"\x89HDF\r\n\x1a\n", 8, "an HDF5 file"},
	};
	const uint8_t *p = head;

	for (size_t i = 0; i < sizeof(kinds) / sizeof(kinds[0]); i++)
		if (n >= kinds[i].n && memcmp(p, kinds[i].magic, kinds[i].n) == 0)
			return kinds[i].kind;
	/* pickle protocols 2..5 open with PROTO n (the older torch.save format) */
	if (n >= 2 && p[0] == 0x80 && p[1] >= 2 && p[1] <= 5)
		return "a Python pickle (a PyTorch torch.save file?)";
	return NULL;
}

int sid_publish_atomic(const char *path, const void *buf, size_t len, struct sid_error *err)
{
	struct sid_piece one = {buf, len};
	return sid_publish_atomic_pieces(path, &one, 1, err);
}

int sid_publish_atomic_pieces(const char *path, const struct sid_piece *pc, size_t npc,
			      struct sid_error *err)
{
	return sid_publish_atomic_pieces_go(path, pc, npc, NULL, NULL, err);
}

int sid_publish_atomic_pieces_go(const char *path, const struct sid_piece *pc, size_t npc,
				 sid_publish_go go, void *arg, struct sid_error *err)
{
	struct sid_publish pub;
	int rc;

	if (!path || (!pc && npc))
		return sid_error_set(err, SID_EINVAL, "publish: no path or buffer");
	for (size_t i = 0; i < npc; i++)
		if (!pc[i].p && pc[i].len)
			return sid_error_set(err, SID_EINVAL, "publish: no path or buffer");
	if ((rc = sid_publish_begin(&pub, path, err)) < 0)
		return rc;
	for (size_t i = 0; i < npc; i++)
		if (write_all(pub.fd, pc[i].p, pc[i].len) != 0) {
			rc = sid_error_set(err, SID_EIO, "%s: write the temporary file for it: %s",
					   path, strerror(errno));
			sid_publish_abort(&pub);
			return rc;
		}
	if (go) {
		/* the long part of a large file's commit is its flush: done
		 * before @go is asked, the commit's own has nothing left */
		if (fsync(pub.fd) != 0) {
			rc = sid_error_set(err, SID_EIO, "%s: fsync the temporary file for it: %s",
					   path, strerror(errno));
			sid_publish_abort(&pub);
			return rc;
		}
		if (!go(arg)) {
			sid_publish_abort(&pub);
			return 1;
		}
	}
	return sid_publish_commit(&pub, err);
}

#define TMP_SUFFIX_MAX 64

/* The names sid_publish_unlink_temps removes: a slot is claimed, its path
 * written, then made live; a handler reads only live ones. */
#define WATCH_MAX 16
static struct {
	int claimed;
	volatile sig_atomic_t live;
	char path[PATH_MAX];
} watch[WATCH_MAX];

/* @pub's temp name is (@on) or is no longer one a signal handler removes. */
static void watch_name(struct sid_publish *pub, int on)
{
	int i = pub->watch - 1;

	if (i >= 0) {
		__atomic_store_n(&watch[i].live, 0, __ATOMIC_SEQ_CST);
		if (!on) {
			__atomic_store_n(&watch[i].claimed, 0, __ATOMIC_RELEASE);
			pub->watch = 0;
			return;
		}
	}
	if (!on || strlen(pub->tmp) >= PATH_MAX)
		return;
	for (int k = 0; i < 0 && k < WATCH_MAX; k++) {
		int free_slot = 0;
		if (__atomic_compare_exchange_n(&watch[k].claimed, &free_slot, 1, 0,
						__ATOMIC_ACQ_REL, __ATOMIC_RELAXED))
			i = k;
	}
	if (i < 0) /* all taken: this one is not covered */
		return;
	pub->watch = i + 1;
	memcpy(watch[i].path, pub->tmp, strlen(pub->tmp) + 1);
	__atomic_store_n(&watch[i].live, 1, __ATOMIC_SEQ_CST);
}

void sid_publish_unlink_temps(void)
{
	for (int i = 0; i < WATCH_MAX; i++)
		if (__atomic_load_n(&watch[i].live, __ATOMIC_SEQ_CST))
			unlink(watch[i].path);
}

/*
 * A temp name beside @pub->path into @pub->tmp: the name plus
 * ".tmp.PID.N" (N from a counter of this process), cut short where both
 * would not fit in one directory entry.  @again: a name like it was taken
 * (left by a process of the same PID, a container's PID 1 killed while it
 * published): a random part is added.
 */
static void tmp_name(struct sid_publish *pub, int again)
{
	char suffix[TMP_SUFFIX_MAX];
	const char *path = pub->path, *base = strrchr(path, '/') ? strrchr(path, '/') + 1 : path;
	unsigned long n = __atomic_fetch_add(&publish_counter, 1, __ATOMIC_RELAXED);
	uint32_t r = 0;
	size_t keep = strlen(base), slen;

	if (again && getrandom(&r, sizeof(r), 0) != (ssize_t)sizeof(r))
		r = (uint32_t)(n * 2654435761u) ^ (uint32_t)time(NULL);
	if (again)
		slen = (size_t)snprintf(suffix, sizeof(suffix), ".tmp.%ld.%lu.%08x", (long)getpid(),
					n, (unsigned)r);
	else
		slen = (size_t)snprintf(suffix, sizeof(suffix), ".tmp.%ld.%lu", (long)getpid(), n);
	if (keep + slen > pub->name_max)
		keep = pub->name_max > slen ? pub->name_max - slen : 0;
	snprintf(pub->tmp, strlen(path) + TMP_SUFFIX_MAX, "%.*s%s",
		 (int)((size_t)(base - path) + keep), path, suffix);
}

static int publish_begin(struct sid_publish *pub, const char *path, int named,
			 struct sid_error *err)
{
	char dir[PATH_MAX];
	const char *base;
	size_t name_max = NAME_MAX;
	long pc;
	int rc;

	pub->fd = -1;
	pub->named = 0;
	pub->path = NULL;
	pub->tmp = NULL;
	pub->watch = 0;
	if (!path || !*path)
		return sid_error_set(err, SID_EINVAL, "publish: no path");
	/* A name the directory cannot hold fails now, not at the rename after
	 * all the writing (an unnamed temp file needs no name until then). */
	base = strrchr(path, '/') ? strrchr(path, '/') + 1 : path;
	if (!*base)
		return sid_error_set(err, SID_EINVAL, "%s: names a directory, not a file", path);
	if (sid_path_dir(path, dir) == 0 && (pc = pathconf(dir, _PC_NAME_MAX)) > 0 &&
	    (size_t)pc < name_max)
		name_max = (size_t)pc; /* eCryptfs: 143 */
	if (strlen(base) > name_max)
		return sid_error_set(err, SID_EINVAL, "%s: file name of %zu bytes, longer than %zu",
				     path, strlen(base), name_max);
	pub->name_max = name_max;
	pub->path = strdup(path);
	pub->tmp = malloc(strlen(path) + TMP_SUFFIX_MAX);
	if (!pub->path || !pub->tmp) {
		rc = sid_error_set(err, SID_ENOMEM, "%s: out of memory", path);
		goto fail;
	}
	tmp_name(pub, 0);

	/* Unnamed until it is complete, where the file system can: a process
	 * killed while writing (SIGKILL, the OOM killer) then leaves nothing
	 * behind, not a temp file as large as a checkpoint. */
	if (!named && !sid__fsutil_no_tmpfile && sid_path_dir(path, dir) == 0)
		pub->fd = open(dir, O_TMPFILE | O_WRONLY | O_CLOEXEC, 0644);
	if (pub->fd < 0) { /* asked for, or no O_TMPFILE here (or the tests' switch) */
		sigset_t all, was;
		int e;

		/* A signal on this thread between the create and watch_name ran
		 * a handler that could not yet see the name, and left the file
		 * behind: held back until the name is watched. */
		sid_signals_async(&all);
		pthread_sigmask(SIG_BLOCK, &all, &was);
		for (int tries = 0;; tries++) {
			pub->fd = open(pub->tmp, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC,
				       named ? 0600 : 0644);
			if (pub->fd >= 0 || errno != EEXIST || tries == 10)
				break;
			tmp_name(pub, 1);
		}
		e = errno;
		if (pub->fd >= 0) {
			pub->named = 1;
			watch_name(pub, 1);
		}
		pthread_sigmask(SIG_SETMASK, &was, NULL);
		if (pub->fd < 0) {
			/* the directory missing: said of it, not of a temp name the
			 * user never gave */
			if ((e == ENOENT || e == ENOTDIR) && sid_path_dir(path, dir) == 0 &&
			    strlen(path) + strlen(dir) + strlen(strerror(e)) + 16 <
				SID_ERROR_MSG_MAX) {
				rc = sid_error_set(err, SID_EIO, "%s: directory %s: %s", path, dir,
						   strerror(e));
			} else if (e == ENOENT || e == ENOTDIR) {
				/* a long path (a deep mount) and its directory left
				 * no room for the reason: the directory unnamed, the
				 * path given up in the middle (sid_error_prefix) */
				sid_error_set(err, SID_EIO, "its directory: %s", strerror(e));
				rc = sid_error_prefix(err, "%s", path);
			} else {
				rc = sid_error_set(err, SID_EIO,
						   "%s: create the temporary file for it: %s", path,
						   strerror(e));
			}
			goto fail;
		}
	}
	return 0;

fail:
	free(pub->path);
	free(pub->tmp);
	pub->path = pub->tmp = NULL;
	return rc;
}

int sid_publish_begin(struct sid_publish *pub, const char *path, struct sid_error *err)
{
	return publish_begin(pub, path, 0, err);
}

int sid_publish_begin_named(struct sid_publish *pub, const char *path, struct sid_error *err)
{
	return publish_begin(pub, path, 1, err);
}

int sid_publish_commit(struct sid_publish *pub, struct sid_error *err)
{
	const char *path = pub->path, *tmp = pub->tmp;
	int rc;

	if (pub->fd < 0)
		return sid_error_set(err, SID_EINVAL, "publish: not open");
	if (fsync(pub->fd) != 0) {
		rc = sid_error_set(err, SID_EIO, "%s: fsync the temporary file for it: %s", path,
				   strerror(errno));
		goto fail;
	}
	if (!pub->named) { /* complete: give it the temp name, then rename it over @path */
		char proc[64];
		int ok = 0, e = 0;
		snprintf(proc, sizeof(proc), "/proc/self/fd/%d", pub->fd);
		for (int tries = 0; !ok && tries <= 10; tries++) {
			if (tries) /* the name was taken (a left temp file) */
				tmp_name(pub, 1);
			ok = linkat(AT_FDCWD, proc, AT_FDCWD, tmp, AT_SYMLINK_FOLLOW) == 0;
			e = errno;
			if (!ok && e != EEXIST) {
				ok = linkat(pub->fd, "", AT_FDCWD, tmp, AT_EMPTY_PATH) == 0;
				e = errno;
			}
			if (!ok && e != EEXIST)
				break;
		}
		if (!ok) {
			rc = sid_error_set(err, SID_EIO, "%s: name the temporary file for it: %s",
					   path, strerror(e));
			goto fail;
		}
		pub->named = 1;
		watch_name(pub, 1); /* not before: a name taken is another's file */
	}
	if (close(pub->fd) != 0) {
		pub->fd = -1;
		rc = sid_error_set(err, SID_EIO, "%s: close the temporary file for it: %s", path,
				   strerror(errno));
		goto fail;
	}
	pub->fd = -1;
	if (rename(tmp, path) != 0) {
		rc = sid_error_set(err, SID_EIO,
				   "%s: rename the temporary file for it into place: %s", path,
				   strerror(errno));
		goto fail;
	}
	pub->named = 0; /* the temp name is gone */
	watch_name(pub, 0);
	/* The data is in place; a failing directory fsync is still reported. */
	rc = fsync_parent(path, err);
	sid_publish_abort(pub); /* frees the names */
	return rc;

fail:
	sid_publish_abort(pub);
	return rc;
}

void sid_publish_abort(struct sid_publish *pub)
{
	if (!pub || !pub->path) /* zeroed, failed to begin, or finished */
		return;
	if (pub->fd >= 0)
		close(pub->fd);
	if (pub->named && pub->tmp)
		unlink(pub->tmp);
	watch_name(pub, 0);
	free(pub->path);
	free(pub->tmp);
	pub->fd = -1;
	pub->named = 0;
	pub->path = pub->tmp = NULL;
}

/* Open @path read-only and stat it; a negative SID_E* code unless a regular
 * file.  O_NONBLOCK until then: a FIFO put at a model's path blocked the
 * open, and a server's reloads with it, until a writer came. */
static int open_regular(const char *path, struct stat *st, struct sid_error *err)
{
	int fd = open(path, O_RDONLY | O_CLOEXEC | O_NONBLOCK);

	if (fd < 0)
		/* no descriptor or memory free: a shortage, as an allocation's,
		 * that a later try may not meet (the server retries a reload) */
		return sid_error_set(err,
				     errno == ENOENT ? SID_ENOTFOUND
				     : errno == EMFILE || errno == ENFILE || errno == ENOMEM
					 ? SID_ENOMEM
					 : SID_EIO,
				     "%s: %s", path, strerror(errno));
	if (fstat(fd, st) != 0) {
		int rc = sid_error_set(err, SID_EIO, "%s: stat: %s", path, strerror(errno));
		close(fd);
		return rc;
	}
	if (!S_ISREG(st->st_mode)) {
		close(fd);
		return sid_error_set(err, SID_EIO, "%s: not a regular file", path);
	}
	fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) & ~O_NONBLOCK);
	return fd;
}

int sid_file_read(const char *path, size_t max_len, uint8_t **out, size_t *out_len,
		  struct sid_error *err)
{
	return sid_file_read_checked(path, max_len, NULL, out, out_len, err);
}

int sid_file_read_checked(const char *path, size_t max_len, sid_file_head_check check,
			  uint8_t **out, size_t *out_len, struct sid_error *err)
{
	struct stat st;
	uint8_t *buf = NULL, head[SID_FILE_HEAD_BYTES];
	size_t got = 0, size;
	ssize_t n_head;
	int fd, rc;

	*out = NULL;
	*out_len = 0;
	fd = open_regular(path, &st, err);
	if (fd < 0)
		return fd;
	if ((uint64_t)st.st_size > max_len) {
		rc = sid_error_set(err, SID_EFORMAT, "%s: %lld bytes, larger than the cap of %zu",
				   path, (long long)st.st_size, max_len);
		goto fail;
	}
	if (check) {
		while ((n_head = pread(fd, head, sizeof(head), 0)) < 0 && errno == EINTR)
			;
		if (n_head < 0) {
			rc = sid_error_set(err, SID_EIO, "%s: read: %s", path, strerror(errno));
			goto fail;
		}
		if ((rc = check(fd, head, (size_t)n_head, (uint64_t)st.st_size, err))) {
			if (err)
				sid_error_name_file(err, path);
			goto fail;
		}
	}
	size = (size_t)st.st_size;
	buf = malloc(size + 1);
	if (!buf) {
		rc = sid_error_set(err, SID_ENOMEM, "%s: out of memory for %zu bytes", path, size);
		goto fail;
	}
	/* Read until EOF (the file may change size under us; never past the cap). */
	for (;;) {
		ssize_t n;
		if (got == size) {
			uint8_t probe;
			n = read(fd, &probe, 1);
			if (n < 0 && errno == EINTR)
				continue;
			if (n < 0) {
				rc = sid_error_set(err, SID_EIO, "%s: read: %s", path,
						   strerror(errno));
				goto fail;
			}
			if (n > 0) {
				rc = sid_error_set(err, SID_EIO, "%s: file grew while being read",
						   path);
				goto fail;
			}
			break;
		}
		n = read(fd, buf + got, size - got);
		if (n < 0) {
			if (errno == EINTR)
				continue;
			rc = sid_error_set(err, SID_EIO, "%s: read: %s", path, strerror(errno));
			goto fail;
		}
		if (n == 0)
			break; /* shrank: return what is there */
		got += (size_t)n;
	}
	close(fd);
	buf[got] = '\0';
	*out = buf;
	*out_len = got;
	return 0;

fail:
	free(buf);
	close(fd);
	return rc;
}

/* The buffer grows by doubling but never past @max + 2 (the byte that tells
 * a line is longer, and the NUL): doubling alone took twice the limit for a
 * line just over half of it. */
ssize_t sid_line_read(FILE *f, char **buf, size_t *cap, size_t max)
{
	size_t n = 0;
	int c = EOF;

	flockfile(f);
	while (n <= max && (c = getc_unlocked(f)) != EOF) {
		if (n + 2 > *cap) {
			size_t want = *cap ? *cap * 2 : 4096;
			char *p;
			if (want > max + 2)
				want = max + 2;
			p = realloc(*buf, want);
			if (!p) {
				funlockfile(f);
				return -3;
			}
			*buf = p;
			*cap = want;
		}
		(*buf)[n++] = (char)c;
		if (c == '\n')
			break;
	}
	funlockfile(f);
	if (n > max)
		return -2;
	if (!n)
		return -1;
	(*buf)[n] = '\0';
	return (ssize_t)n;
}

int sid_map_open(const char *path, struct sid_map *m, struct sid_error *err)
{
	struct stat st;
	void *addr;
	int fd, rc;

	m->addr = NULL;
	m->len = 0;
	fd = open_regular(path, &st, err);
	if (fd < 0)
		return fd;
	if ((uint64_t)st.st_size > SIZE_MAX) {
		rc = sid_error_set(err, SID_ENOMEM, "%s: too large to map", path);
		goto fail;
	}
	if (st.st_size == 0) {
		close(fd);
		return 0;
	}
	addr = mmap(NULL, (size_t)st.st_size, PROT_READ, MAP_PRIVATE, fd, 0);
	if (addr == MAP_FAILED) {
		rc = sid_error_set(err, SID_EIO, "%s: mmap: %s", path, strerror(errno));
		goto fail;
	}
	close(fd);
	m->addr = addr;
	m->len = (size_t)st.st_size;
	return 0;

fail:
	close(fd);
	return rc;
}

void sid_map_close(struct sid_map *m)
{
	if (!m)
		return;
	if (m->addr && m->len)
		munmap(m->addr, m->len);
	m->addr = NULL;
	m->len = 0;
}

/* ---- SHA-256, FIPS 180-4 section 6.2 ---- */

static const uint32_t sha_k[64] = {
    0x428a2f98, 0x71374491, 0xb5c0fbcf, 0xe9b5dba5, 0x3956c25b, 0x59f111f1, 0x923f82a4, 0xab1c5ed5,
    0xd807aa98, 0x12835b01, 0x243185be, 0x550c7dc3, 0x72be5d74, 0x80deb1fe, 0x9bdc06a7, 0xc19bf174,
    0xe49b69c1, 0xefbe4786, 0x0fc19dc6, 0x240ca1cc, 0x2de92c6f, 0x4a7484aa, 0x5cb0a9dc, 0x76f988da,
    0x983e5152, 0xa831c66d, 0xb00327c8, 0xbf597fc7, 0xc6e00bf3, 0xd5a79147, 0x06ca6351, 0x14292967,
    0x27b70a85, 0x2e1b2138, 0x4d2c6dfc, 0x53380d13, 0x650a7354, 0x766a0abb, 0x81c2c92e, 0x92722c85,
    0xa2bfe8a1, 0xa81a664b, 0xc24b8b70, 0xc76c51a3, 0xd192e819, 0xd6990624, 0xf40e3585, 0x106aa070,
    0x19a4c116, 0x1e376c08, 0x2748774c, 0x34b0bcb5, 0x391c0cb3, 0x4ed8aa4a, 0x5b9cca4f, 0x682e6ff3,
    0x748f82ee, 0x78a5636f, 0x84c87814, 0x8cc70208, 0x90befffa, 0xa4506ceb, 0xbef9a3f7, 0xc67178f2};

#define ROTR(x, n) (((x) >> (n)) | ((x) << (32 - (n))))

static void sha256_block(uint32_t h[8], const uint8_t *p)
{
	uint32_t w[64], a, b, c, d, e, f, g, hh;
	int t;

	for (t = 0; t < 16; t++)
		w[t] = (uint32_t)p[4 * t] << 24 | (uint32_t)p[4 * t + 1] << 16 |
		       (uint32_t)p[4 * t + 2] << 8 | (uint32_t)p[4 * t + 3];
	for (t = 16; t < 64; t++) {
		uint32_t s0 = ROTR(w[t - 15], 7) ^ ROTR(w[t - 15], 18) ^ (w[t - 15] >> 3);
		uint32_t s1 = ROTR(w[t - 2], 17) ^ ROTR(w[t - 2], 19) ^ (w[t - 2] >> 10);
		w[t] = w[t - 16] + s0 + w[t - 7] + s1;
	}
	a = h[0], b = h[1], c = h[2], d = h[3], e = h[4], f = h[5], g = h[6], hh = h[7];
	for (t = 0; t < 64; t++) {
		uint32_t S1 = ROTR(e, 6) ^ ROTR(e, 11) ^ ROTR(e, 25);
		uint32_t ch = (e & f) ^ (~e & g);
		uint32_t t1 = hh + S1 + ch + sha_k[t] + w[t];
		uint32_t S0 = ROTR(a, 2) ^ ROTR(a, 13) ^ ROTR(a, 22);
		uint32_t maj = (a & b) ^ (a & c) ^ (b & c);
		uint32_t t2 = S0 + maj;
		hh = g;
		g = f;
		f = e;
		e = d + t1;
		d = c;
		c = b;
		b = a;
		a = t1 + t2;
	}
	h[0] += a, h[1] += b, h[2] += c, h[3] += d;
	h[4] += e, h[5] += f, h[6] += g, h[7] += hh;
}

void sid_sha256_init(struct sid_sha256 *c)
{
	static const uint32_t h0[8] = {0x6a09e667, 0xbb67ae85, 0x3c6ef372, 0xa54ff53a,
				       0x510e527f, 0x9b05688c, 0x1f83d9ab, 0x5be0cd19};
	memcpy(c->h, h0, sizeof(h0));
	c->n = 0;
	c->total = 0;
}

void sid_sha256_update(struct sid_sha256 *c, const void *buf, size_t len)
{
	const uint8_t *p = buf;

	c->total += len;
	if (c->n) { /* fill the pending block first */
		size_t take = 64 - c->n < len ? 64 - c->n : len;
		memcpy(c->buf + c->n, p, take);
		c->n += take;
		p += take;
		len -= take;
		if (c->n < 64)
			return;
		sha256_block(c->h, c->buf);
		c->n = 0;
	}
	for (; len >= 64; p += 64, len -= 64)
		sha256_block(c->h, p);
	memcpy(c->buf, p, len);
	c->n = len;
}

void sid_sha256_final_hex(struct sid_sha256 *c, char out[65])
{
	static const char hex[] = "0123456789abcdef";
	uint8_t tail[128];
	uint64_t bits = c->total * 8;
	size_t ntail, i;

	/* Padding: 0x80, zeros, 64-bit big-endian bit length; one or two blocks. */
	memset(tail, 0, sizeof(tail));
	memcpy(tail, c->buf, c->n);
	tail[c->n] = 0x80;
	ntail = c->n + 1 + 8 <= 64 ? 64 : 128;
	for (i = 0; i < 8; i++)
		tail[ntail - 1 - i] = (uint8_t)(bits >> (8 * i));
	sha256_block(c->h, tail);
	if (ntail == 128)
		sha256_block(c->h, tail + 64);
	for (i = 0; i < 32; i++) {
		uint8_t byte = (uint8_t)(c->h[i / 4] >> (24 - 8 * (i % 4)));
		out[2 * i] = hex[byte >> 4];
		out[2 * i + 1] = hex[byte & 15];
	}
	out[64] = '\0';
}

void sid_sha256_hex(const void *buf, size_t len, char out[65])
{
	struct sid_sha256 c;
	sid_sha256_init(&c);
	sid_sha256_update(&c, buf, len);
	sid_sha256_final_hex(&c, out);
}

void sid_catch_unless_ignored(int sig, const struct sigaction *sa, struct sigaction *saved)
{
	if (sigaction(sig, NULL, saved) == 0 && saved->sa_handler != SIG_IGN)
		sigaction(sig, sa, NULL);
}

void sid_signals_async(sigset_t *set)
{
	sigfillset(set);
	sigdelset(set, SIGSEGV);
	sigdelset(set, SIGBUS);
	sigdelset(set, SIGFPE);
	sigdelset(set, SIGILL);
}

int sid_thread_start(pthread_t *t, void *(*fn)(void *), void *arg)
{
	sigset_t all, was;
	int e;

	sid_signals_async(&all);
	pthread_sigmask(SIG_BLOCK, &all, &was); /* the new thread's mask */
	e = pthread_create(t, NULL, fn, arg);
	pthread_sigmask(SIG_SETMASK, &was, NULL);
	return e;
}

/* A write into a pipe with no reader, SIGPIPE being ignored: when that pipe
 * is stdout, end as the signal's default action would have, with the status
 * a shell shows for it. */
int sid_stdout_pipe_gone(void)
{
	struct pollfd p = {.fd = STDOUT_FILENO, .events = POLLOUT};
	struct stat st;
	int saved = errno, gone;

	gone = fstat(STDOUT_FILENO, &st) == 0 && S_ISFIFO(st.st_mode) && poll(&p, 1, 0) == 1 &&
	       (p.revents & POLLERR);
	errno = saved;
	return gone;
}

int sid_stdout_lost(char *why, size_t len)
{
	int e = fflush(stdout) != 0 ? errno : 0;

	if (!e && !ferror(stdout))
		return 0;
	snprintf(why, len, "%s%s", e ? ": " : "", e ? strerror(e) : "");
	return 1;
}

static void on_sigpipe(int sig)
{
	if (sid_stdout_pipe_gone())
		_exit(128 + sig);
}

void sid_sigpipe_quiet_stdout(void)
{
	struct sigaction sa, old;

	if (sigaction(SIGPIPE, NULL, &old) != 0 || old.sa_handler != SIG_IGN)
		return;
	memset(&sa, 0, sizeof(sa));
	sa.sa_handler = on_sigpipe;
	sa.sa_flags = SA_RESTART;
	sigemptyset(&sa.sa_mask);
	sigaction(SIGPIPE, &sa, NULL);
}

ssize_t sid_line_drop_bom(char *line, ssize_t len)
{
	if (len < 3 || memcmp(line, "\xef\xbb\xbf", 3) != 0)
		return len;
	memmove(line, line + 3, (size_t)len - 2); /* with its NUL */
	return len - 3;
}

const char *sid_size_str(double bytes, char *buf, size_t len)
{
	static const char *const unit[] = {"KiB", "MiB", "GiB", "TiB"};
	char shown[32];
	int u = 0;

	/* the next unit once the figure shown reaches 1024: 1023.96 MiB was
	 * "1024.0 MiB" (rounded after the unit was chosen) */
	bytes /= 1024;
	for (;;) {
		snprintf(shown, sizeof(shown), "%.1f", bytes);
		if (u == 3 || strtod(shown, NULL) < 1024)
			break;
		bytes /= 1024;
		u++;
	}
	snprintf(buf, len, "%.1f %s", bytes, unit[u]);
	return buf;
}
