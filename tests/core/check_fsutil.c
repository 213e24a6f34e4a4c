/*
 * check_fsutil.c - tests for core/fsutil.c: SHA-256 against the FIPS 180-4 /
 * NIST vectors and padding-boundary lengths (expected digests from coreutils
 * sha256sum), atomic publish (content, overwrite, no temp files left, failure
 * paths and their messages, which name the destination, concurrent
 * publishers, each with O_TMPFILE and with a named temp file; a publisher killed mid-write leaves
 * the old file, and nothing else with O_TMPFILE; the streaming begin/commit/abort), capped reads,
 * capped line reads and read-only maps; the order of a publish's fsyncs and
 * rename (this file defines fsync and rename, which record and pass on, and
 * fsync and linkat fail when told to).
 */
#include <check.h>
#include "check_main.h"
#include <dirent.h>
#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "fsutil.h"
#include "kill_mid_write.h"

static char tmpdir[256];

static void setup(void)
{
	snprintf(tmpdir, sizeof(tmpdir), "/tmp/check_fsutil.XXXXXX");
	ck_assert_ptr_nonnull(mkdtemp(tmpdir));
}

static void rm_rf(const char *dir)
{
	DIR *d = opendir(dir);
	struct dirent *e;
	char p[512];
	if (!d)
		return;
	while ((e = readdir(d))) {
		if (!strcmp(e->d_name, ".") || !strcmp(e->d_name, ".."))
			continue;
		snprintf(p, sizeof(p), "%s/%s", dir, e->d_name);
		if (rmdir(p) != 0)
			unlink(p);
	}
	closedir(d);
	rmdir(dir);
}

static void teardown(void)
{
	rm_rf(tmpdir);
}

/* Entries in @dir whose name contains ".tmp." */
static int count_temps(const char *dir)
{
	DIR *d = opendir(dir);
	struct dirent *e;
	int n = 0;
	ck_assert_ptr_nonnull(d);
	while ((e = readdir(d)))
		if (strstr(e->d_name, ".tmp."))
			n++;
	closedir(d);
	return n;
}

/* stat the entry in @dir whose name starts with @prefix: 0, or -1 if none. */
static int stat_temp(const char *dir, const char *prefix, struct stat *st)
{
	DIR *d = opendir(dir);
	struct dirent *e;
	char p[512];
	int rc = -1;
	ck_assert_ptr_nonnull(d);
	while (rc != 0 && (e = readdir(d)))
		if (!strncmp(e->d_name, prefix, strlen(prefix))) {
			snprintf(p, sizeof(p), "%s/%s", dir, e->d_name);
			rc = stat(p, st);
		}
	closedir(d);
	return rc;
}

static void sha_of(const char *s, size_t len, char out[65])
{
	sid_sha256_hex(s, len, out);
}

/* The network file systems the SQLite registry warns about, by statfs's
 * f_type, and local ones that are not: this test directory (on a local disk
 * or tmpfs here), and a file not made yet, judged by its directory. */
START_TEST(test_network_fs)
{
	ck_assert_str_eq(sid__fs_network_name(0x6969), "nfs");
	ck_assert_str_eq(sid__fs_network_name(0xFF534D42), "cifs");
	ck_assert_str_eq(sid__fs_network_name(0xFE534D42), "smb2");
	ck_assert_str_eq(sid__fs_network_name(0x00C36400), "ceph");
	ck_assert_str_eq(sid__fs_network_name(0x01021997), "9p");
	ck_assert_ptr_null(sid__fs_network_name(0xEF53));     /* ext4 */
	ck_assert_ptr_null(sid__fs_network_name(0x58465342)); /* xfs */
	ck_assert_ptr_null(sid__fs_network_name(0x01021994)); /* tmpfs */
	ck_assert_ptr_null(sid__fs_network_name(0x794C7630)); /* overlayfs */
	ck_assert_ptr_null(sid__fs_network_name(0x65735546)); /* fuse: often local */
	ck_assert_ptr_null(sid_fs_network("/proc/self/status"));
	ck_assert_ptr_null(sid_fs_network("/tmp/not-made-yet.db"));
	ck_assert_ptr_null(sid_fs_network("/no/such/dir/x.db"));
}
END_TEST

START_TEST(test_path_dir)
{
	static const char *const cases[][2] = {{"models/m.st", "models"},
					       {"m.st", "."},
					       {"/m.st", "/"},
					       {"/var/lib/semid/r.db", "/var/lib/semid"}};
	char dir[PATH_MAX], *huge = malloc(PATH_MAX + 8);

	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		ck_assert_int_eq(sid_path_dir(cases[i][0], dir), 0);
		ck_assert_str_eq(dir, cases[i][1]);
	}
	ck_assert_ptr_nonnull(huge);
	memset(huge, 'a', PATH_MAX + 4);
	huge[PATH_MAX + 2] = '/';
	huge[PATH_MAX + 4] = '\0';
	ck_assert_int_eq(sid_path_dir(huge, dir), -1); /* its directory does not fit */
	free(huge);
}
END_TEST

START_TEST(test_sha256_vectors)
{
	char h[65];
	sha_of("", 0, h);
	ck_assert_str_eq(h, "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
	sha_of("abc", 3, h);
	ck_assert_str_eq(h, "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
	const char *m448 = "abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq";
	sha_of(m448, strlen(m448), h);
	ck_assert_str_eq(h, "248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1");
	const char *m896 =
	    "abcdefghbcdefghicdefghijdefghijkefghijklfghijklmghijklmnhijklmnoijklmnop"
	    "jklmnopqklmnopqrlmnopqrsmnopqrstnopqrstu";
	sha_of(m896, strlen(m896), h);
	ck_assert_str_eq(h, "cf5b16a778af8380036ce59e7b0492370b249b11e8f07a51afac45037afee9d1");
}
END_TEST

START_TEST(test_sha256_million_a)
{
	char *buf = malloc(1000000), h[65];
	ck_assert_ptr_nonnull(buf);
	memset(buf, 'a', 1000000);
	sid_sha256_hex(buf, 1000000, h);
	free(buf);
	ck_assert_str_eq(h, "cdc76e5c9914fb9281a1c7e284d73e67f1809a48a497200e046d39ccc7112cd0");
}
END_TEST

/* The million a's again, fed in pieces of every size from 1 to 130 bytes
 * (and one empty update): pending partial blocks must carry over. */
START_TEST(test_sha256_streaming)
{
	char *buf = malloc(1000000), h[65];
	struct sid_sha256 c;
	size_t at = 0, piece = 1;

	ck_assert_ptr_nonnull(buf);
	memset(buf, 'a', 1000000);
	sid_sha256_init(&c);
	sid_sha256_update(&c, buf, 0);
	while (at < 1000000) {
		size_t n = piece < 1000000 - at ? piece : 1000000 - at;
		sid_sha256_update(&c, buf + at, n);
		at += n;
		piece = piece % 130 + 1;
	}
	sid_sha256_final_hex(&c, h);
	free(buf);
	ck_assert_str_eq(h, "cdc76e5c9914fb9281a1c7e284d73e67f1809a48a497200e046d39ccc7112cd0");
}
END_TEST

/* Lengths around the one-or-two padding block boundary (55/56, 63/64/65, 119/120). */
START_TEST(test_sha256_padding_boundaries)
{
	static const struct {
		size_t n;
		const char *hex;
	} v[] = {
	    {55, "9f4390f8d30c2dd92ec9f095b65e2b9ae9b0a925a5258e241c9f1e910f734318"},
	    {56, "b35439a4ac6f0948b6d6f9e3c6af0f5f590ce20f1bde7090ef7970686ec6738a"},
	    {63, "7d3e74a05d7db15bce4ad9ec0658ea98e3f06eeecf16b4c6fff2da457ddc2f34"},
	    {64, "ffe054fe7ae0cb6dc65c3af9b61d5209f439851db43d0ba5997337df154668eb"},
	    {65, "635361c48bb9eab14198e76ea8ab7f1a41685d6ad62aa9146d301d4f17eb0ae0"},
	    {119, "31eba51c313a5c08226adf18d4a359cfdfd8d2e816b13f4af952f7ea6584dcfb"},
	    {120, "2f3d335432c70b580af0e8e1b3674a7c020d683aa5f73aaaedfdc55af904c21c"},
	};
	char buf[128], h[65];
	memset(buf, 'a', sizeof(buf));
	for (size_t i = 0; i < sizeof(v) / sizeof(v[0]); i++) {
		sid_sha256_hex(buf, v[i].n, h);
		ck_assert_msg(strcmp(h, v[i].hex) == 0, "length %zu: %s", v[i].n, h);
	}
}
END_TEST

/* What a publish asks of the disk, in order, while trace_on: "file" (fsync
 * of a regular file), "rename", "dir" (fsync of a directory).  The test
 * binary's own fsync and rename stand before libc's for libsemid.a too. */
static int trace_on;
static char trace[256];

static void trace_add(const char *what)
{
	if (trace_on && strlen(trace) + strlen(what) + 2 < sizeof(trace)) {
		if (trace[0])
			strcat(trace, " ");
		strcat(trace, what);
	}
}

/* Nonzero: the fsync of a regular file fails with EIO (a disk that
 * failed the flush), or linkat with ENOSPC (the name of an O_TMPFILE file). */
static int fail_fsync_file, fail_linkat;

int fsync(int fd)
{
	int (*next)(int) = (int (*)(int))dlsym(RTLD_NEXT, "fsync");
	struct stat st;

	if (fstat(fd, &st) == 0)
		trace_add(S_ISDIR(st.st_mode) ? "dir" : "file");
	if (fail_fsync_file && fstat(fd, &st) == 0 && S_ISREG(st.st_mode)) {
		errno = EIO;
		return -1;
	}
	return next(fd);
}

int linkat(int olddirfd, const char *oldpath, int newdirfd, const char *newpath, int flags)
{
	int (*next)(int, const char *, int, const char *, int) =
	    (int (*)(int, const char *, int, const char *, int))dlsym(RTLD_NEXT, "linkat");

	if (fail_linkat) {
		errno = ENOSPC;
		return -1;
	}
	return next(olddirfd, oldpath, newdirfd, newpath, flags);
}

int rename(const char *from, const char *to)
{
	int (*next)(const char *, const char *) =
	    (int (*)(const char *, const char *))dlsym(RTLD_NEXT, "rename");

	trace_add("rename");
	return next(from, to);
}

/* The data is on disk before its name is, and the name before the call
 * returns: fsync the file, rename, fsync the directory (a crash may
 * otherwise leave the new name on an empty or partial file). */
START_TEST(test_publish_syncs_before_rename)
{
	sid__fsutil_no_tmpfile = _i; /* loop 0: O_TMPFILE; 1: named temp */
	char path[512];
	struct sid_error err;

	snprintf(path, sizeof(path), "%s/out.bin", tmpdir);
	trace[0] = '\0';
	trace_on = 1;
	ck_assert_int_eq(sid_publish_atomic(path, "hello", 5, &err), 0);
	trace_on = 0;
	ck_assert_str_eq(trace, "file rename dir");
}
END_TEST

START_TEST(test_publish_and_read)
{
	sid__fsutil_no_tmpfile = _i; /* loop 0: O_TMPFILE; 1: named temp */
	char path[512];
	struct sid_error err;
	uint8_t *got;
	size_t len;
	snprintf(path, sizeof(path), "%s/out.bin", tmpdir);

	ck_assert_int_eq(sid_publish_atomic(path, "hello", 5, &err), 0);
	ck_assert_int_eq(sid_file_read(path, 100, &got, &len, &err), 0);
	ck_assert_uint_eq(len, 5);
	ck_assert_mem_eq(got, "hello", 5);
	ck_assert_int_eq(got[5], 0); /* NUL-terminated */
	free(got);

	/* Overwrite replaces the content entirely (shorter file). */
	ck_assert_int_eq(sid_publish_atomic(path, "xy", 2, &err), 0);
	ck_assert_int_eq(sid_file_read(path, 100, &got, &len, &err), 0);
	ck_assert_uint_eq(len, 2);
	ck_assert_mem_eq(got, "xy", 2);
	free(got);

	/* Empty content is allowed. */
	ck_assert_int_eq(sid_publish_atomic(path, NULL, 0, &err), 0);
	ck_assert_int_eq(sid_file_read(path, 100, &got, &len, &err), 0);
	ck_assert_uint_eq(len, 0);
	free(got);
	ck_assert_int_eq(count_temps(tmpdir), 0);

	/* Relative path (directory "."): works too. */
	char cwd[512];
	ck_assert_ptr_nonnull(getcwd(cwd, sizeof(cwd)));
	ck_assert_int_eq(chdir(tmpdir), 0);
	ck_assert_int_eq(sid_publish_atomic("rel.bin", "r", 1, &err), 0);
	ck_assert_int_eq(chdir(cwd), 0);
	snprintf(path, sizeof(path), "%s/rel.bin", tmpdir);
	ck_assert_int_eq(sid_file_read(path, 100, &got, &len, &err), 0);
	ck_assert_uint_eq(len, 1);
	free(got);
}
END_TEST

START_TEST(test_publish_failures)
{
	sid__fsutil_no_tmpfile = _i; /* loop 0: O_TMPFILE; 1: named temp */
	char path[512];
	struct sid_error err;

	/* Directory does not exist: the temp file cannot be created. */
	snprintf(path, sizeof(path), "%s/nodir/out.bin", tmpdir);
	sid_error_clear(&err);
	ck_assert_int_eq(sid_publish_atomic(path, "a", 1, &err), SID_EIO);
	ck_assert_ptr_nonnull(strstr(err.msg, path));
	ck_assert_ptr_nonnull(strstr(err.msg, "No such file"));
	/* the same under a long path (a deep mount): the path and its
	 * directory, each 400 bytes, pushed the reason out of the message */
	char deep[1024];
	int k = snprintf(deep, sizeof(deep), "%s/", tmpdir);
	memset(deep + k, 'd', 200);
	deep[k + 200] = '/';
	memset(deep + k + 201, 'e', 200);
	snprintf(deep + k + 401, sizeof(deep) - (size_t)k - 401, "/out.bin");
	sid_error_clear(&err);
	ck_assert_int_eq(sid_publish_atomic(deep, "a", 1, &err), SID_EIO);
	ck_assert_msg(strstr(err.msg, "eee/out.bin: ") && strstr(err.msg, "No such file"), "%s",
		      err.msg);

	/* Target is a non-empty directory: rename fails, the temp file is removed. */
	snprintf(path, sizeof(path), "%s/adir", tmpdir);
	ck_assert_int_eq(mkdir(path, 0755), 0);
	char inner[600];
	snprintf(inner, sizeof(inner), "%s/keep", path);
	ck_assert_int_eq(sid_publish_atomic(inner, "k", 1, &err), 0);
	sid_error_clear(&err);
	ck_assert_int_eq(sid_publish_atomic(path, "abc", 3, &err), SID_EIO);
	ck_assert_ptr_nonnull(strstr(err.msg, "rename"));
	ck_assert_ptr_nonnull(strstr(err.msg, path));
	ck_assert_int_eq(count_temps(tmpdir), 0);
	unlink(inner);
	rmdir(path);
}
END_TEST

/* A publish in a child process under a file-size limit of 100 bytes
 * (SIGXFSZ ignored: the write fails with EFBIG): 0 when its message was
 * exactly @want, else 1 (the message on stderr). */
static int publish_limited(const char *path, const char *want)
{
	struct rlimit rl = {100, 100};
	struct sid_error err;
	char buf[4096];
	int status;
	pid_t pid = fork();

	ck_assert_int_ge(pid, 0);
	if (pid == 0) {
		signal(SIGXFSZ, SIG_IGN);
		setrlimit(RLIMIT_FSIZE, &rl);
		memset(buf, 'x', sizeof(buf));
		sid_error_clear(&err);
		if (sid_publish_atomic(path, buf, sizeof(buf), &err) == SID_EIO &&
		    !strcmp(err.msg, want))
			_exit(0);
		fprintf(stderr, "got \"%s\"\nwant \"%s\"\n", err.msg, want);
		_exit(1);
	}
	ck_assert_int_eq(waitpid(pid, &status, 0), pid);
	return WIFEXITED(status) ? WEXITSTATUS(status) : 1;
}

/*
 * A failed publish names the file it was to publish and says "the
 * temporary file for it" of the step that failed on the temp file: it
 * named the temp file, "out.bin.tmp.123.0", a name that with O_TMPFILE
 * never existed (and without it was gone with the failure), where the
 * operator looks for the destination.  Each step: the write (a file-size
 * limit), the flush, the name an unnamed file is given (O_TMPFILE only),
 * the rename.  The file published before is intact, and no temp is left.
 */
START_TEST(test_publish_failure_names_the_destination)
{
	sid__fsutil_no_tmpfile = _i; /* loop 0: O_TMPFILE; 1: named temp */
	char path[512], want[700], adir[600];
	struct sid_error err;
	uint8_t *got;
	size_t len;

	snprintf(path, sizeof(path), "%s/out.bin", tmpdir);
	ck_assert_int_eq(sid_publish_atomic(path, "old", 3, NULL), 0);
	snprintf(want, sizeof(want), "%s: write the temporary file for it: File too large", path);
	ck_assert_int_eq(publish_limited(path, want), 0);

	fail_fsync_file = 1;
	sid_error_clear(&err);
	ck_assert_int_eq(sid_publish_atomic(path, "new", 3, &err), SID_EIO);
	fail_fsync_file = 0;
	snprintf(want, sizeof(want), "%s: fsync the temporary file for it: %s", path,
		 strerror(EIO));
	ck_assert_str_eq(err.msg, want);

	fail_linkat = 1;
	sid_error_clear(&err);
	ck_assert_int_eq(sid_publish_atomic(path, "new", 3, &err), _i ? 0 : SID_EIO);
	fail_linkat = 0;
	if (!_i) { /* a named temp file needs no link */
		snprintf(want, sizeof(want), "%s: name the temporary file for it: %s", path,
			 strerror(ENOSPC));
		ck_assert_str_eq(err.msg, want);
		ck_assert_int_eq(sid_publish_atomic(path, "new", 3, NULL), 0);
	}

	/* a non-empty directory in its place: the rename fails */
	snprintf(adir, sizeof(adir), "%s/adir", tmpdir);
	ck_assert_int_eq(mkdir(adir, 0755), 0);
	snprintf(want, sizeof(want), "%s/keep", adir);
	ck_assert_int_eq(sid_publish_atomic(want, "k", 1, NULL), 0);
	sid_error_clear(&err);
	ck_assert_int_eq(sid_publish_atomic(adir, "abc", 3, &err), SID_EIO);
	snprintf(want, sizeof(want), "%s: rename the temporary file for it into place: %s", adir,
		 strerror(EISDIR));
	ck_assert_str_eq(err.msg, want);
	snprintf(want, sizeof(want), "%s/keep", adir);
	unlink(want);
	rmdir(adir);

	ck_assert_int_eq(count_temps(tmpdir), 0);
	ck_assert_int_eq(sid_file_read(path, 100, &got, &len, NULL), 0);
	ck_assert_uint_eq(len, 3);
	ck_assert_mem_eq(got, "new", 3);
	free(got);
}
END_TEST

/* A name near NAME_MAX: the temp name "<name>.tmp.<pid>.<n>" would not fit
 * in a directory entry, and with an unnamed temp file that used to fail only
 * at the commit, after all the writing.  A name over NAME_MAX fails at once. */
START_TEST(test_publish_long_name)
{
	sid__fsutil_no_tmpfile = _i; /* loop 0: O_TMPFILE; 1: named temp */
	char path[1024], name[NAME_MAX + 2];
	struct sid_publish pub;
	struct sid_error err;
	uint8_t *got;
	size_t len;

	for (int n = NAME_MAX - 20; n <= NAME_MAX; n += 5) {
		memset(name, 'n', (size_t)n);
		name[n] = '\0';
		snprintf(path, sizeof(path), "%s/%s", tmpdir, name);
		ck_assert_msg(sid_publish_atomic(path, "long", 4, &err) == 0, "%d: %s", n, err.msg);
		ck_assert_int_eq(sid_file_read(path, 100, &got, &len, &err), 0);
		ck_assert_uint_eq(len, 4);
		ck_assert_mem_eq(got, "long", 4);
		free(got);
		unlink(path);
	}
	ck_assert_int_eq(count_temps(tmpdir), 0);
	memset(name, 'n', NAME_MAX + 1);
	name[NAME_MAX + 1] = '\0';
	snprintf(path, sizeof(path), "%s/%s", tmpdir, name);
	sid_error_clear(&err);
	ck_assert_int_eq(sid_publish_begin(&pub, path, &err), SID_EINVAL);
	ck_assert_msg(strstr(err.msg, "file name of 256 bytes, longer than 255"), "%s", err.msg);
	sid_publish_abort(&pub);
	snprintf(path, sizeof(path), "%s/", tmpdir); /* a directory: no name at all */
	ck_assert_int_eq(sid_publish_begin(&pub, path, &err), SID_EINVAL);
	ck_assert_msg(strstr(err.msg, "names a directory, not a file"), "%s", err.msg);
	ck_assert_int_eq(count_temps(tmpdir), 0);
}
END_TEST

struct pub_arg {
	const char *path;
	char fill;
};

static void *publisher(void *p)
{
	struct pub_arg *a = p;
	char buf[4096];
	memset(buf, a->fill, sizeof(buf));
	for (int i = 0; i < 20; i++)
		if (sid_publish_atomic(a->path, buf, sizeof(buf), NULL) != 0)
			return (void *)1;
	return NULL;
}

/* Readers never see a mix: the final file is one writer's content whole. */
START_TEST(test_publish_concurrent)
{
	sid__fsutil_no_tmpfile = _i; /* loop 0: O_TMPFILE; 1: named temp */
	char path[512];
	pthread_t th[4];
	struct pub_arg a[4];
	uint8_t *got;
	size_t len;
	snprintf(path, sizeof(path), "%s/shared.bin", tmpdir);
	for (int i = 0; i < 4; i++) {
		a[i].path = path;
		a[i].fill = (char)('A' + i);
		ck_assert_int_eq(pthread_create(&th[i], NULL, publisher, &a[i]), 0);
	}
	for (int i = 0; i < 4; i++) {
		void *r;
		pthread_join(th[i], &r);
		ck_assert_ptr_null(r);
	}
	ck_assert_int_eq(sid_file_read(path, 1 << 20, &got, &len, NULL), 0);
	ck_assert_uint_eq(len, 4096);
	for (size_t i = 1; i < len; i++)
		ck_assert_int_eq(got[i], got[0]);
	ck_assert(got[0] >= 'A' && got[0] <= 'D');
	free(got);
	ck_assert_int_eq(count_temps(tmpdir), 0);
}
END_TEST

START_TEST(test_file_read_cap_and_errors)
{
	char path[512];
	struct sid_error err;
	uint8_t *got = (uint8_t *)1;
	size_t len = 99;
	snprintf(path, sizeof(path), "%s/ten.bin", tmpdir);
	ck_assert_int_eq(sid_publish_atomic(path, "0123456789", 10, NULL), 0);

	ck_assert_int_eq(sid_file_read(path, 10, &got, &len, &err), 0);
	ck_assert_uint_eq(len, 10);
	free(got);

	ck_assert_int_eq(sid_file_read(path, 9, &got, &len, &err), SID_EFORMAT);
	ck_assert_ptr_null(got);
	ck_assert_uint_eq(len, 0);
	ck_assert_ptr_nonnull(strstr(err.msg, path));
	ck_assert_ptr_nonnull(strstr(err.msg, "cap"));

	snprintf(path, sizeof(path), "%s/missing.bin", tmpdir);
	ck_assert_int_eq(sid_file_read(path, 10, &got, &len, &err), SID_ENOTFOUND);
	ck_assert_ptr_nonnull(strstr(err.msg, path));

	ck_assert_int_eq(sid_file_read(tmpdir, 10, &got, &len, &err), SID_EIO);
	ck_assert_ptr_nonnull(strstr(err.msg, "not a regular file"));
}
END_TEST

/* Lines up to @max bytes with their newline come whole, the last one
 * without a newline too; a longer one gives -2 having read only @max + 1
 * bytes of it, and the buffer never grows past @max + 2. */
START_TEST(test_line_read_cap)
{
	static const char text[] = "abc\n"    /* 4 bytes: at the limit */
				   "abcdef\n" /* 7: over it */
				   "xy";      /* the last line, no newline */
	FILE *f = fmemopen((void *)text, sizeof(text) - 1, "r");
	char *buf = NULL;
	size_t cap = 0;

	ck_assert_ptr_nonnull(f);
	ck_assert_int_eq(sid_line_read(f, &buf, &cap, 4), 4);
	ck_assert_str_eq(buf, "abc\n");
	ck_assert_uint_eq(cap, 6);
	ck_assert_int_eq(sid_line_read(f, &buf, &cap, 4), -2);
	ck_assert_uint_eq(cap, 6);
	ck_assert_int_eq(fgetc(f), 'f'); /* "abcde" read, the rest not */
	ck_assert_int_eq(sid_line_read(f, &buf, &cap, 4), 1);
	ck_assert_int_eq(sid_line_read(f, &buf, &cap, 4), 2);
	ck_assert_str_eq(buf, "xy");
	ck_assert_int_eq(sid_line_read(f, &buf, &cap, 4), -1);
	ck_assert(!ferror(f));
	fclose(f);
	free(buf);
}
END_TEST

START_TEST(test_map)
{
	char path[512];
	struct sid_map m;
	struct sid_error err;

	snprintf(path, sizeof(path), "%s/map.bin", tmpdir);
	ck_assert_int_eq(sid_publish_atomic(path, "mapped!", 7, NULL), 0);
	ck_assert_int_eq(sid_map_open(path, &m, &err), 0);
	ck_assert_uint_eq(m.len, 7);
	ck_assert_mem_eq(m.addr, "mapped!", 7);
	sid_map_close(&m);
	ck_assert_ptr_null(m.addr);
	ck_assert_uint_eq(m.len, 0);
	sid_map_close(&m); /* closed map: no-op */
	sid_map_close(NULL);

	ck_assert_int_eq(sid_publish_atomic(path, NULL, 0, NULL), 0);
	m.addr = (void *)1;
	ck_assert_int_eq(sid_map_open(path, &m, &err), 0);
	ck_assert_ptr_null(m.addr);
	ck_assert_uint_eq(m.len, 0);
	sid_map_close(&m);

	snprintf(path, sizeof(path), "%s/none.bin", tmpdir);
	ck_assert_int_eq(sid_map_open(path, &m, &err), SID_ENOTFOUND);
	ck_assert_ptr_nonnull(strstr(err.msg, "none.bin"));
	ck_assert_ptr_null(m.addr);
}
END_TEST

/*
 * Temp names left by a process of the same PID (a container's PID 1 killed
 * while it published, on every run): all the names this process would try
 * first are taken, and a publish still goes through (a name taken at the
 * create, or at the link of the unnamed file, gets a random part), leaving
 * the taken names alone.  They used to fail it: "File exists".
 */
START_TEST(test_publish_temp_name_taken)
{
	sid__fsutil_no_tmpfile = _i; /* loop 0: O_TMPFILE, linked at commit; 1: named */
	struct sid_publish pub;
	struct sid_error err;
	char path[512], name[600];
	uint8_t *got;
	size_t len;

	snprintf(path, sizeof(path), "%s/t.bin", tmpdir);
	for (int k = 0; k < 200; k++) {
		FILE *f;
		snprintf(name, sizeof(name), "%s.tmp.%ld.%d", path, (long)getpid(), k);
		ck_assert_ptr_nonnull(f = fopen(name, "w"));
		fclose(f);
	}
	for (int named = 0; named < 2; named++) {
		ck_assert_msg((named ? sid_publish_begin_named(&pub, path, &err)
				     : sid_publish_begin(&pub, path, &err)) == 0,
			      "%s", err.msg);
		ck_assert_int_eq(write(pub.fd, "data", 4), 4);
		ck_assert_msg(sid_publish_commit(&pub, &err) == 0, "%s", err.msg);
		ck_assert_int_eq(sid_file_read(path, 100, &got, &len, &err), 0);
		ck_assert_mem_eq(got, "data", 4);
		free(got);
	}
	ck_assert_int_eq(count_temps(tmpdir), 200);
	sid__fsutil_no_tmpfile = 0;
}
END_TEST

/* The streaming publish: written through pub.fd, committed or aborted. */
START_TEST(test_publish_stream)
{
	sid__fsutil_no_tmpfile = _i; /* loop 0: O_TMPFILE; 1: named temp */
	struct sid_publish pub, zero;
	struct sid_error err;
	struct stat st;
	char path[512];
	uint8_t *got;
	size_t len;

	snprintf(path, sizeof(path), "%s/s.bin", tmpdir);
	/* asked for a name (a writer that opens it by name), it has one at once */
	ck_assert_int_eq(sid_publish_begin_named(&pub, path, &err), 0);
	ck_assert_int_eq(pub.named, 1);
	ck_assert_int_eq(access(pub.tmp, F_OK), 0);
	ck_assert_int_eq(stat(pub.tmp, &st), 0);
	ck_assert_int_eq(st.st_mode & 0777, 0600); /* no one else opens it meanwhile */
	sid_publish_abort(&pub);
	ck_assert_int_eq(count_temps(tmpdir), 0);
	ck_assert_int_ne(access(path, F_OK), 0);

	ck_assert_int_eq(sid_publish_begin(&pub, path, &err), 0);
	ck_assert_int_ge(pub.fd, 0);
	ck_assert_int_eq(pub.named, _i);
	ck_assert_int_eq(access(pub.tmp, F_OK) == 0, _i); /* named only without O_TMPFILE */
	ck_assert_int_eq(write(pub.fd, "stream", 6), 6);
	ck_assert_int_eq(sid_publish_commit(&pub, &err), 0);
	ck_assert_ptr_null(pub.path);
	sid_publish_abort(&pub); /* ended: no-op */
	ck_assert_int_eq(sid_file_read(path, 100, &got, &len, &err), 0);
	ck_assert_uint_eq(len, 6);
	ck_assert_mem_eq(got, "stream", 6);
	free(got);

	/* aborted: the old file stays, nothing else */
	ck_assert_int_eq(sid_publish_begin(&pub, path, &err), 0);
	ck_assert_int_eq(write(pub.fd, "new!", 4), 4);
	sid_publish_abort(&pub);
	ck_assert_int_eq(count_temps(tmpdir), 0);
	ck_assert_int_eq(sid_file_read(path, 100, &got, &len, &err), 0);
	ck_assert_uint_eq(len, 6);
	free(got);

	memset(&zero, 0, sizeof(zero));
	sid_publish_abort(&zero); /* zeroed: no-op (does not close fd 0) */
	sid_publish_abort(NULL);
	ck_assert_int_ne(fcntl(0, F_GETFD), -1);

	snprintf(path, sizeof(path), "%s/nodir/s.bin", tmpdir);
	ck_assert_int_eq(sid_publish_begin(&pub, path, &err), SID_EIO);
	ck_assert_ptr_nonnull(strstr(err.msg, "No such file"));
	sid_publish_abort(&pub); /* failed: no-op */
	ck_assert_int_eq(sid_publish_begin(&pub, "", &err), SID_EINVAL);
}
END_TEST

/*
 * A publisher killed (SIGKILL) in the middle of writing a file leaves the
 * published file as it was, the previous one whole.  With O_TMPFILE it leaves
 * nothing else either; with a named temp file that file stays (SIGKILL runs
 * no cleanup: fsutil.h promises nothing more there), cut at the byte where
 * the kill came.  kill_mid_write kills at a byte, not after a sleep: under
 * load a sleep lets the child die before it writes (the test proves nothing)
 * or finish first.
 */
START_TEST(test_publish_killed_leaves_nothing)
{
	enum { MB = 1 << 20, PIECES = 4, LIMIT = MB + MB / 2 }; /* killed in the second piece */
	struct sid_piece pc[PIECES];
	char path[512], tmp[600];
	struct stat st;
	uint8_t *got;
	size_t len;
	int status;
	pid_t pid;
	char *mb = malloc(MB);

	sid__fsutil_no_tmpfile = _i; /* loop 0: O_TMPFILE; 1: named temp */
	ck_assert_ptr_nonnull(mb);
	memset(mb, 'x', MB);
	for (int i = 0; i < PIECES; i++)
		pc[i] = (struct sid_piece){mb, MB};
	snprintf(path, sizeof(path), "%s/big.bin", tmpdir);
	ck_assert_int_eq(sid_publish_atomic(path, "old", 3, NULL), 0);
	pid = fork();
	ck_assert_int_ge(pid, 0);
	if (pid == 0) { /* the publish is all the child writes */
		kill_mid_write(LIMIT, SIGKILL);
		sid_publish_atomic_pieces(path, pc, PIECES, NULL);
		_exit(0);
	}
	ck_assert_int_eq(waitpid(pid, &status, 0), pid);
	ck_assert_msg(WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL,
		      "the publish was not killed mid-write (status 0x%x)", status);
	ck_assert_int_eq(count_temps(tmpdir), _i);
	if (_i) { /* the child's own temp file, as far as it got */
		snprintf(tmp, sizeof(tmp), "big.bin.tmp.%ld.", (long)pid);
		ck_assert_int_eq(stat_temp(tmpdir, tmp, &st), 0);
		ck_assert_int_eq(st.st_size, LIMIT);
	}
	ck_assert_int_eq(sid_file_read(path, 100, &got, &len, NULL), 0);
	ck_assert_uint_eq(len, 3);
	ck_assert_mem_eq(got, "old", 3);
	free(got);
	free(mb);
}
END_TEST

/* Sizes as people read them: the largest unit with at least 1 of it. */
START_TEST(test_size_str)
{
	char b[32];
	ck_assert_str_eq(sid_size_str(0, b, sizeof(b)), "0.0 KiB");
	ck_assert_str_eq(sid_size_str(36864, b, sizeof(b)), "36.0 KiB");
	ck_assert_str_eq(sid_size_str(1048576, b, sizeof(b)), "1.0 MiB");
	ck_assert_str_eq(sid_size_str(1.5 * 1073741824.0, b, sizeof(b)), "1.5 GiB");
	ck_assert_str_eq(sid_size_str(3.0 * 1099511627776.0, b, sizeof(b)), "3.0 TiB");
	ck_assert_str_eq(sid_size_str(2048.0 * 1099511627776.0, b, sizeof(b)), "2048.0 TiB");
	sid_size_str(1048576, b, 5); /* cut, NUL-terminated */
	ck_assert_str_eq(b, "1.0 ");
}
END_TEST

/* At each unit's top the figure shown, not the exact one, picks the unit:
 * 1023.96 MiB rounds to 1024.0, which is 1.0 GiB (it printed "1024.0
 * MiB").  TiB is the last unit: it goes on counting. */
START_TEST(test_size_str_rolls_over)
{
	static const char *const unit[] = {"KiB", "MiB", "GiB", "TiB"};
	char b[32], want[32];
	double one = 1024; /* 1 KiB, then 1 MiB, ... */

	/* the figures either side of 1023.95, a byte short of 1024, 1024 */
	for (int u = 0; u < 4; u++, one *= 1024) {
		snprintf(want, sizeof(want), "1023.9 %s", unit[u]);
		ck_assert_str_eq(sid_size_str(1023.94 * one, b, sizeof(b)), want);
		ck_assert_str_eq(sid_size_str(1023.9 * one, b, sizeof(b)), want);
		if (u < 3)
			snprintf(want, sizeof(want), "1.0 %s", unit[u + 1]);
		else
			snprintf(want, sizeof(want), "1024.0 TiB");
		ck_assert_str_eq(sid_size_str(1023.96 * one, b, sizeof(b)), want);
		ck_assert_str_eq(sid_size_str(1024 * one - 1, b, sizeof(b)), want);
		ck_assert_str_eq(sid_size_str(1024 * one, b, sizeof(b)), want);
	}
}
END_TEST

static Suite *fsutil_suite(void)
{
	Suite *s = suite_create("fsutil");
	TCase *tc = tcase_create("sha256");
	tcase_set_timeout(tc, 60);
	tcase_add_test(tc, test_path_dir);
	tcase_add_test(tc, test_sha256_vectors);
	tcase_add_test(tc, test_sha256_million_a);
	tcase_add_test(tc, test_sha256_streaming);
	tcase_add_test(tc, test_sha256_padding_boundaries);
	suite_add_tcase(s, tc);

	tc = tcase_create("files");
	tcase_set_timeout(tc, 60);
	tcase_add_checked_fixture(tc, setup, teardown);
	tcase_add_loop_test(tc, test_publish_and_read, 0, 2);
	tcase_add_loop_test(tc, test_publish_syncs_before_rename, 0, 2);
	tcase_add_loop_test(tc, test_publish_failures, 0, 2);
	tcase_add_loop_test(tc, test_publish_failure_names_the_destination, 0, 2);
	tcase_add_loop_test(tc, test_publish_long_name, 0, 2);
	tcase_add_loop_test(tc, test_publish_concurrent, 0, 2);
	tcase_add_loop_test(tc, test_publish_killed_leaves_nothing, 0, 2);
	tcase_add_loop_test(tc, test_publish_stream, 0, 2);
	tcase_add_loop_test(tc, test_publish_temp_name_taken, 0, 2);
	tcase_add_test(tc, test_file_read_cap_and_errors);
	tcase_add_test(tc, test_line_read_cap);
	tcase_add_test(tc, test_map);
	tcase_add_test(tc, test_network_fs);
	tcase_add_test(tc, test_size_str);
	tcase_add_test(tc, test_size_str_rolls_over);
	suite_add_tcase(s, tc);
	return s;
}

int main(void)
{
	return check_run(fsutil_suite());
}
