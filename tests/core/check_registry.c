/*
 * check_registry.c - tests for the ID registry (core/registry*.c).
 *
 * The behaviour tests run twice, on SQLite (a fresh file each) and on
 * PostgreSQL (a fresh database each, in a throwaway cluster this program
 * starts with initdb/pg_ctl as the postgres user and removes at the end; or
 * an existing server named by SEMID_TEST_PG, an admin connection string).
 * Without root or without PostgreSQL binaries the PostgreSQL cases are
 * skipped with a message.  Covered: a connection string libpq cannot parse
 * (its message shows no password), the suffix rule and idempotence, ids
 * repeated in a batch, reassign, lookups by id / sid / prefix with paging,
 * levels, stats against hand counts, diff against a hand-built model,
 * export/import round trips and conflicts, bad input, several threads and
 * several processes assigning colliding codes at once, a child killed with
 * SIGKILL mid-stream, and on SQLite a corrupt file, a foreign database, a
 * newer schema, a read-only file and directory, a read-only file system,
 * file descriptors running out (the OS's reason said, not taken for a
 * directory that cannot be written), a held write lock and a
 * held read transaction (commits do not wait for it), the file deleted,
 * moved or replaced under open handles, its -wal deleted (with another
 * process writing on, or a reader holding an older state), its -shm
 * deleted or truncated, or its header torn under a reader that may not
 * write it (the read waits for the writer to rebuild it), the file
 * checked once per call, not per op or id, and a backup taken while another
 * connection commits; on PostgreSQL a server that
 * stops and comes back, eight processes creating the schema at once (also
 * in a database whose sessions default to REPEATABLE READ or SERIALIZABLE,
 * where an assign that waited for another writer's locks runs once), a
 * newer schema met on a lazy first connection and
 * on a reconnect, a role that may not create the schema, a first
 * transaction run again after a lost race (its levels are not kept), a
 * reassign whose COMMIT's answer was lost (a relay drops it), and
 * databases in LATIN1 (refused) and SQL_ASCII and sessions told to use
 * another client encoding (ids stored as UTF-8 all the same).
 */
#include <check.h>
#include "check_main.h"
#include "kill_after.h"
#include <dlfcn.h>
#include <ctype.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <jansson.h>
#include <libpq-fe.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <pwd.h>
#include <signal.h>
#include <sqlite3.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "encode.h"
#include "model.h"
#include "model_builder.h"
#include "registry.h"

#define PGBIN "/usr/lib/postgresql/15/bin"

/* ---- backends ---- */

static int g_pg; /* this test case runs on PostgreSQL */

static struct {
	int up;
	char skip[512];
	char dir[256];
	char admin[512]; /* connection string to the "postgres" database */
	char start_cmd[1024], stop_cmd[512];
	int own; /* started here */
} pg;

static int sh(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static int sh(const char *fmt, ...)
{
	char cmd[2048];
	va_list ap;
	int st;
	va_start(ap, fmt);
	vsnprintf(cmd, sizeof(cmd), fmt, ap);
	va_end(ap);
	st = system(cmd);
	return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
}

static int free_port(void)
{
	struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
	socklen_t len = sizeof(a);
	int fd = socket(AF_INET, SOCK_STREAM, 0), port = -1;
	if (fd >= 0 && !bind(fd, (struct sockaddr *)&a, sizeof(a)) &&
	    !getsockname(fd, (struct sockaddr *)&a, &len))
		port = ntohs(a.sin_port);
	close(fd);
	return port;
}

static void pg_start(void)
{
	const char *ext = getenv("SEMID_TEST_PG");
	struct passwd *pw;
	int port;

	if (ext && *ext) {
		snprintf(pg.admin, sizeof(pg.admin), "%s", ext);
		pg.up = 1;
		return;
	}
	if (geteuid() != 0) {
		snprintf(pg.skip, sizeof(pg.skip), "not root (the tests run initdb as postgres)");
		goto skip;
	}
	pw = getpwnam("postgres");
	if (access(PGBIN "/initdb", X_OK) || access(PGBIN "/pg_ctl", X_OK) || !pw) {
		snprintf(pg.skip, sizeof(pg.skip), "PostgreSQL 15 is not installed (%s)", PGBIN);
		goto skip;
	}
	snprintf(pg.dir, sizeof(pg.dir), "/tmp/semid-pg.XXXXXX");
	if (!mkdtemp(pg.dir) || chown(pg.dir, pw->pw_uid, pw->pw_gid)) {
		snprintf(pg.skip, sizeof(pg.skip), "cannot make a temp dir");
		goto fail;
	}
	if (sh("runuser -u postgres -- " PGBIN "/initdb -D %s/data -A trust -U postgres "
	       "--no-sync -E UTF8 >%s/initdb.log 2>&1",
	       pg.dir, pg.dir)) {
		snprintf(pg.skip, sizeof(pg.skip), "initdb failed (see %s/initdb.log)", pg.dir);
		goto fail;
	}
	snprintf(pg.stop_cmd, sizeof(pg.stop_cmd),
		 "runuser -u postgres -- " PGBIN "/pg_ctl -D %s/data -m immediate -w stop "
		 ">/dev/null 2>&1",
		 pg.dir);
	/* The port is free when picked, but a suite running beside this one may
	 * bind it (a client socket's ephemeral port, say) before postgres does:
	 * then pick another. */
	for (int attempt = 0;; attempt++) {
		port = free_port();
		snprintf(pg.start_cmd, sizeof(pg.start_cmd),
			 "runuser -u postgres -- " PGBIN "/pg_ctl -D %s/data -l %s/pg.log -w -t 60 "
			 "-o \"-p %d -k %s -c listen_addresses=127.0.0.1 -c fsync=off\" start "
			 ">/dev/null",
			 pg.dir, pg.dir, port, pg.dir);
		if (!sh("%s", pg.start_cmd))
			break;
		if (attempt == 4 || sh("grep -q 'already in use' %s/pg.log", pg.dir)) {
			snprintf(pg.skip, sizeof(pg.skip), "pg_ctl start failed (see %s/pg.log)",
				 pg.dir);
			goto fail;
		}
	}
	snprintf(pg.admin, sizeof(pg.admin), "host=127.0.0.1 port=%d dbname=postgres user=postgres",
		 port);
	pg.own = 1;
	pg.up = 1;
	return;
fail:
	fprintf(stderr, "check_registry: FAILED to start PostgreSQL: %s\n", pg.skip);
	pg.up = -1; /* root with binaries present: the cases fail rather than skip */
	return;
skip:
	fprintf(stderr, "check_registry: PostgreSQL cases SKIPPED: %s\n", pg.skip);
}

static void pg_stop(void)
{
	if (pg.own) {
		sh("%s", pg.stop_cmd);
		sh("rm -rf %s", pg.dir);
	}
	pg.own = pg.up = 0;
}

static char tmpdir[256];
static char target[600];

static void pg_sql(const char *conninfo, const char *sql);

static void use_sqlite(void)
{
	g_pg = 0;
	snprintf(tmpdir, sizeof(tmpdir), "/tmp/check_registry.XXXXXX");
	ck_assert_ptr_nonnull(mkdtemp(tmpdir));
	snprintf(target, sizeof(target), "%s/reg.db", tmpdir);
}

static void done_sqlite(void)
{
	sh("rm -rf %s", tmpdir);
}

static void new_pg_db(char *out, size_t len)
{
	static int n;
	char sql[128], name[64];
	PGconn *c = PQconnectdb(pg.admin);
	PGresult *res;

	ck_assert_msg(PQstatus(c) == CONNECTION_OK, "admin connect: %s", PQerrorMessage(c));
	snprintf(name, sizeof(name), "semid_t%d_%d", (int)getpid(), n++);
	snprintf(sql, sizeof(sql), "CREATE DATABASE %s", name);
	res = PQexec(c, sql);
	ck_assert_msg(PQresultStatus(res) == PGRES_COMMAND_OK, "%s", PQerrorMessage(c));
	PQclear(res);
	PQfinish(c);
	snprintf(out, len, "%s dbname=%s", pg.admin, name); /* later dbname wins */
}

static void use_pg(void)
{
	g_pg = 1;
	snprintf(tmpdir, sizeof(tmpdir), "/tmp/check_registry.XXXXXX");
	ck_assert_ptr_nonnull(mkdtemp(tmpdir));
	ck_assert_msg(pg.up >= 0, "PostgreSQL did not start: %s", pg.skip);
	if (pg.up)
		new_pg_db(target, sizeof(target));
}

/* The first statement of every test that runs on PostgreSQL: it is skipped
 * when pg_start has no server to give (not root, or no PostgreSQL binaries). */
#define NEED_STORE()                                                                               \
	do {                                                                                       \
		if (g_pg && !pg.up)                                                                \
			CHECK_SKIP("PostgreSQL: %s", pg.skip);                                     \
	} while (0)

static double now_s(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec + ts.tv_nsec * 1e-9;
}

static struct sid_registry *reg_open(void)
{
	struct sid_registry *r = NULL;
	struct sid_error err;
	sid_error_clear(&err);
	ck_assert_msg(sid_registry_open(target, 0, &r, &err) == 0, "open %s: %s", target, err.msg);
	return r;
}

/* Assign one id with codes (a, b, c). */
static int assign1(struct sid_registry *r, const char *id, int a, int b, int c, unsigned flags,
		   struct sid_reg_entry *e)
{
	int32_t codes[3] = {a, b, c};
	struct sid_reg_item it = {id, codes, NULL};
	struct sid_error err;
	int rc = sid_registry_assign(r, SID_TOWER_ITEM, &it, 1, 3, 0, "v1", flags, e, &err);
	ck_assert_msg(rc == 0, "assign %s: %s", id, err.msg);
	return rc;
}

static void sidstr(const struct sid_reg_entry *e, char *buf)
{
	sid_reg_sid_format(e->codes, e->L, e->suffix, buf, SID_REG_SID_MAX);
}

/* ---- parsing (no store) ---- */

START_TEST(t_sid_parse)
{
	int32_t c[SID_MAX_LEVELS];
	int L;
	int64_t s;
	char buf[SID_REG_SID_MAX];
	struct sid_error err;
	static const char *bad[] = {"",
				    "12--7",
				    "a-b",
				    "-1-0",
				    "1-2-",
				    "12",
				    "1-+2",
				    "1-02",
				    "1- 2",
				    "1048576-0",
				    "1-9223372036854775808",
				    "1-2-3-4-5-6-7-8-9-10-11-12-13-14-15-16-17-18",
				    "1.5-2"};

	ck_assert_int_eq(sid_reg_sid_parse("12-7-200-0", c, &L, &s, &err), 0);
	ck_assert_int_eq(L, 3);
	ck_assert_int_eq(c[0], 12);
	ck_assert_int_eq(c[1], 7);
	ck_assert_int_eq(c[2], 200);
	ck_assert_int_eq(s, 0);
	ck_assert_int_eq(sid_reg_sid_parse("0-9223372036854775807", c, &L, &s, &err), 0);
	ck_assert_int_eq(L, 1);
	ck_assert(s == INT64_MAX);
	ck_assert_int_eq(
	    sid_reg_sid_parse("1048575-1-2-3-4-5-6-7-8-9-10-11-12-13-14-15-16", c, &L, &s, &err),
	    0);
	ck_assert_int_eq(L, 16);
	ck_assert_int_eq(c[0], 1048575);
	ck_assert_int_eq(s, 16);
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		sid_error_clear(&err);
		ck_assert_msg(sid_reg_sid_parse(bad[i], c, &L, &s, &err) == SID_EINVAL, "%s",
			      bad[i]);
		ck_assert_msg(err.msg[0], "no message for %s", bad[i]);
		if (*bad[i])
			ck_assert_msg(strstr(err.msg, bad[i]) || strlen(bad[i]) > 40,
				      "message for %s does not name it: %s", bad[i], err.msg);
	}
	sid_reg_sid_parse("12--7", c, &L, &s, &err);
	ck_assert_ptr_nonnull(strstr(err.msg, "field 2 is empty"));
	sid_reg_sid_parse("1-9223372036854775808", c, &L, &s, &err);
	ck_assert_ptr_nonnull(strstr(err.msg, "overflows"));
	sid_reg_sid_parse("1048576-0", c, &L, &s, &err);
	ck_assert_ptr_nonnull(strstr(err.msg, "out of range"));
	/* a number alone: the code of a 1-level ID, when it can be one */
	ck_assert_int_eq(sid_reg_sid_parse("1048575", c, &L, &s, &err), SID_EINVAL);
	ck_assert_str_eq(err.msg, "sid \"1048575\" needs at least one code and a suffix (a code "
				  "alone? the first ID under it is 1048575-0)");
	ck_assert_int_eq(sid_reg_sid_parse("1048576", c, &L, &s, &err), SID_EINVAL);
	ck_assert_str_eq(err.msg, "sid \"1048576\" needs at least one code and a suffix");

	ck_assert_int_eq(sid_reg_prefix_parse("12-7", c, &L, &err), 0);
	ck_assert_int_eq(L, 2);
	ck_assert_int_eq(c[1], 7);
	ck_assert_int_eq(sid_reg_prefix_parse("", c, &L, &err), 0);
	ck_assert_int_eq(L, 0);
	ck_assert_int_eq(sid_reg_prefix_parse("12-", c, &L, &err), SID_EINVAL);
	ck_assert_int_eq(sid_reg_prefix_parse("x", c, &L, &err), SID_EINVAL);
	ck_assert_int_eq(
	    sid_reg_prefix_parse("1-2-3-4-5-6-7-8-9-10-11-12-13-14-15-16-17", c, &L, &err),
	    SID_EINVAL);
	ck_assert_ptr_nonnull(strstr(err.msg, "too many"));

	c[0] = 12, c[1] = 7, c[2] = 200;
	ck_assert_int_eq(sid_reg_sid_format(c, 3, 0, buf, sizeof(buf)), 10);
	ck_assert_str_eq(buf, "12-7-200-0");
	ck_assert_int_eq(sid_reg_sid_format(c, 3, 123456789012LL, buf, 8), 21);
	ck_assert_str_eq(buf, "12-7-20");
}
END_TEST

/* @s is valid UTF-8 (jansson refuses anything else). */
static int utf8_valid(const char *s)
{
	json_t *j = json_string(s);
	json_decref(j);
	return j != NULL;
}

START_TEST(t_id_check)
{
	struct sid_error err;
	char big[SID_REG_ID_MAX + 2];

	ck_assert_int_eq(sid_reg_id_check("sku-1", &err), 0);
	ck_assert_int_eq(sid_reg_id_check("caf\xc3\xa9 \xe2\x82\xac \xf0\x9f\x98\x80", &err), 0);
	ck_assert_int_eq(sid_reg_id_check("", &err), SID_EINVAL);
	ck_assert_int_eq(sid_reg_id_check("a\tb", &err), SID_EINVAL);
	ck_assert_ptr_nonnull(strstr(err.msg, "control character 0x09 at byte offset 1"));
	ck_assert_int_eq(sid_reg_id_check("a\x7f", &err), SID_EINVAL);
	ck_assert_int_eq(sid_reg_id_check("\xc3", &err), SID_EINVAL);	      /* truncated */
	ck_assert_int_eq(sid_reg_id_check("\xc0\xaf", &err), SID_EINVAL);     /* overlong */
	ck_assert_int_eq(sid_reg_id_check("\xed\xa0\x80", &err), SID_EINVAL); /* surrogate */
	ck_assert_int_eq(sid_reg_id_check("\xf4\x90\x80\x80", &err), SID_EINVAL);
	ck_assert_int_eq(sid_reg_id_check("ab\xff", &err), SID_EINVAL);
	ck_assert_ptr_nonnull(strstr(err.msg, "invalid UTF-8 at byte offset 2"));
	memset(big, 'x', SID_REG_ID_MAX);
	big[SID_REG_ID_MAX] = '\0';
	ck_assert_int_eq(sid_reg_id_check(big, &err), 0);
	big[SID_REG_ID_MAX] = 'x';
	big[SID_REG_ID_MAX + 1] = '\0';
	ck_assert_int_eq(sid_reg_id_check(big, &err), SID_EINVAL);
	ck_assert_ptr_nonnull(strstr(err.msg, "257 bytes"));
	/* unnamed: the same verdicts, and no byte of the id in the message */
	ck_assert_int_eq(sid_reg_id_check_unnamed(big, &err), SID_EINVAL);
	ck_assert_str_eq(err.msg, "id is 257 bytes, the limit is 256");
	ck_assert_int_eq(sid_reg_id_check_unnamed("ann@x\r", &err), SID_EINVAL);
	ck_assert_str_eq(err.msg, "id: control character 0x0d at byte offset 5");
	ck_assert_int_eq(sid_reg_id_check_unnamed("ann\xff", &err), SID_EINVAL);
	ck_assert_str_eq(err.msg, "id: invalid UTF-8 at byte offset 3");
	ck_assert_int_eq(sid_reg_id_check_unnamed("", &err), SID_EINVAL);
	ck_assert_str_eq(err.msg, "id is empty");
	ck_assert_int_eq(sid_reg_id_check_unnamed("ann@x", &err), 0);
	/* multibyte ids at the limit: 64 four-byte characters fit, one more
	 * byte does not; messages quote a prefix of whole characters (they used
	 * to cut one in two, and a JSON error body or a terminal got a broken
	 * sequence) */
	{
		char emoji[4 * 64 + 2] = "", euro[3 * 30 + 2] = "", over[4 * 64 + 2] = "a";
		int32_t codes[SID_MAX_LEVELS];
		int L;
		int64_t sfx;
		for (int k = 0; k < 64; k++)
			strcat(emoji, "\xf0\x9f\x98\x80");
		ck_assert_int_eq(sid_reg_id_check(emoji, &err), 0);
		strcat(over, emoji);
		ck_assert_int_eq(sid_reg_id_check(over, &err), SID_EINVAL);
		ck_assert_msg(strstr(err.msg, "257 bytes") && utf8_valid(err.msg), "%s", err.msg);
		for (int k = 0; k < 30; k++)
			strcat(euro, "\xe2\x82\xac");
		strcat(euro, "\x01");
		ck_assert_int_eq(sid_reg_id_check(euro, &err), SID_EINVAL);
		ck_assert_msg(utf8_valid(err.msg), "%s", err.msg);
		ck_assert_int_eq(sid_reg_sid_parse(euro, codes, &L, &sfx, &err), SID_EINVAL);
		ck_assert_msg(utf8_valid(err.msg), "%s", err.msg);
	}
}
END_TEST

/* A connection string libpq cannot parse is refused with libpq's reason,
 * which quotes what it stumbled on: the password itself, or the whole URI
 * with it, reached the CLI's stderr and semid-server's log.  Now only
 * option names and single characters stay quoted.  Nothing is connected
 * to: parsing fails first. */
START_TEST(t_pg_bad_conninfo_hides_password)
{
	static const struct {
		const char *conninfo, *kept;
	} bad[] = {
	    {"postgresql://u:hun%zzter2@127.0.0.1:1/db", "percent-encoded"},
	    {"postgresql://u:hunter2@[::1/db", "IPv6"},
	    {"postgresql://u:hunter2@127.0.0.1:1/db?password=hunter2%zz", "percent-encoded"},
	    {"postgresql://u:hunter2@127.0.0.1:1/db?passwrd=hunter2", "\"passwrd\""},
	    {"host=127.0.0.1 password=x hunter2", "missing \"=\""},
	    {"host=127.0.0.1 port=1 dbname", "after \"dbname\""},
	    {"host=127.0.0.1 passwrd=hunter2", "\"passwrd\""},
	    /* a password with quotes in it */
	    {"postgresql://u:host\" hunter2\"%zz@127.0.0.1:1/db", "percent-encoded"},
	    {"postgresql://u:x\"hunter2%zz@127.0.0.1:1/db", "percent-encoded"},
	};
	struct sid_registry *r = NULL;
	struct sid_error err;

	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		ck_assert_int_eq(sid_registry_open(bad[i].conninfo, SID_REG_LAZY, &r, &err),
				 SID_EINVAL);
		ck_assert_msg(strstr(err.msg, "bad connection string") &&
				  strstr(err.msg, bad[i].kept) && !strstr(err.msg, "hunter2") &&
				  !strstr(err.msg, "hun%zz") && !strchr(err.msg, '\n'),
			      "%s: %s", bad[i].conninfo, err.msg);
	}
}
END_TEST

/* Option values libpq checks only as it connects ("sslmode=requir",
 * "port=abc") passed the parse, so a server started with one and retried a
 * connection that could never be made.  Now the open refuses each value
 * libpq itself refuses, naming the option and never the value, and takes
 * each it takes: libpq is asked about each string (connecting to a closed
 * loopback port, so it gets as far as its checks of TCP options), which is
 * the expectation. */
START_TEST(t_pg_conninfo_values)
{
	/* the option string, and what a refusal names */
	static const char *const opts[][2] = {
	    {"sslmode=requir", "sslmode"},
	    {"sslmode=REQUIRE", "sslmode"},
	    {"sslmode=", "sslmode"},
	    {"sslmode=require", NULL},
	    {"sslmode=verify-full", NULL},
	    {"port=abc", "port"},
	    {"port=0", "port"},
	    {"port=65536", "port"},
	    {"port=99999999999", "port"},
	    {"port=' 1 '", NULL},
	    {"port=+1", NULL},
	    {"port=1x", "port"},
	    {"port=", NULL},
	    {"port=1,2", "port"},
	    {"host=127.0.0.1,127.0.0.1 port=1,2", NULL},
	    {"host=127.0.0.1,127.0.0.1 port=1,", NULL},
	    {"host=127.0.0.1,127.0.0.1 port=1,abc", "port"},
	    {"host=127.0.0.1,127.0.0.1 port=1,2,3", "port"},
	    {"host=127.0.0.1,127.0.0.1 hostaddr=127.0.0.1 port=1", "hostaddr"},
	    {"hostaddr=127.0.0.1,127.0.0.1 host=127.0.0.1,127.0.0.1 port=1,1", NULL},
	    {"gssencmode=Prefer", "gssencmode"},
	    {"gssencmode=disable", NULL},
	    {"channel_binding=x", "channel_binding"},
	    {"channel_binding=prefer", NULL},
	    {"target_session_attrs=READ-WRITE", "target_session_attrs"},
	    {"target_session_attrs=read-only", NULL},
	    {"target_session_attrs=", "target_session_attrs"},
	    {"ssl_min_protocol_version=tlsv1.2", NULL},
	    {"ssl_min_protocol_version=TLSv9", "ssl_min_protocol_version"},
	    {"ssl_max_protocol_version=", NULL},
	    {"connect_timeout=abc", "connect_timeout"},
	    {"connect_timeout=-5", NULL},
	    {"connect_timeout=' 3 '", NULL},
	    {"connect_timeout=", "connect_timeout"},
	    {"keepalives=x", "keepalives"},
	    {"keepalives=1", NULL},
	    {"keepalives_idle=2x", "keepalives_idle"},
	    {"keepalives_interval=hunter2", "keepalives_interval"},
	    {"keepalives_count=3", NULL},
	    {"tcp_user_timeout=99999999999", "tcp_user_timeout"},
	    {"postgresql://u:hunter2@127.0.0.1:abc/db", "port"},
	    {"postgresql://u:hunter2@127.0.0.1:1/db?sslmode=hunter2", "sslmode"},
	    {"postgresql://u:hunter2@127.0.0.1:1/db?connect_timeout=1", NULL}};

	for (size_t i = 0; i < sizeof(opts) / sizeof(opts[0]); i++) {
		char conninfo[256], said[512];
		struct sid_registry *r = NULL;
		struct sid_error err;
		PGconn *c;
		int libpq_no, rc;

		if (!strncmp(opts[i][0], "postgresql://", 13))
			snprintf(conninfo, sizeof(conninfo), "%s", opts[i][0]);
		else
			snprintf(conninfo, sizeof(conninfo),
				 "host=127.0.0.1 port=1 dbname=x connect_timeout=2 %s", opts[i][0]);
		c = PQconnectdb(conninfo);
		ck_assert_int_ne(PQstatus(c), CONNECTION_OK);
		snprintf(said, sizeof(said), "%s", PQerrorMessage(c));
		PQfinish(c);
		libpq_no = strstr(said, "invalid ") || strstr(said, "could not match");
		/* the table says what libpq answers: it is asked, not assumed */
		ck_assert_msg(libpq_no == (opts[i][1] != NULL), "%s: libpq said %s", conninfo,
			      said);
		sid_error_clear(&err);
		rc = sid_registry_open(conninfo, SID_REG_LAZY, &r, &err);
		if (!opts[i][1]) {
			ck_assert_msg(rc == 0, "%s: libpq takes it, refused: %s", conninfo,
				      err.msg);
			sid_registry_close(r);
			continue;
		}
		ck_assert_msg(rc == SID_EINVAL, "%s: libpq refuses it (%s), open gave %d", conninfo,
			      said, rc);
		ck_assert_msg(strstr(err.msg, "registry: bad connection string: ") &&
				  strstr(err.msg, opts[i][1]) && !strstr(err.msg, "hunter2") &&
				  !strstr(err.msg, "requir\"") && !strstr(err.msg, "abc"),
			      "%s: %s", conninfo, err.msg);
	}
}
END_TEST

START_TEST(t_gap_and_paths)
{
	struct sid__reg_gap g;
	static const int64_t used[] = {0, 1, 2, 4, 5};
	char buf[256];
	size_t i = 0;

	sid__reg_gap_init(&g);
	ck_assert_int_eq(g.next, 0);
	while (i < 5 && !sid__reg_gap_feed(&g, used[i]))
		i++;
	ck_assert_int_eq(g.next, 3);
	sid__reg_gap_init(&g);
	for (i = 0; i < 3; i++)
		ck_assert_int_eq(sid__reg_gap_feed(&g, used[i]), 0);
	ck_assert_int_eq(g.next, 3); /* no gap: one past the end */
	sid__reg_gap_init(&g);
	ck_assert_int_eq(sid__reg_gap_feed(&g, 2), 1);
	ck_assert_int_eq(g.next, 0);

	ck_assert_int_eq(sid_registry_target_is_pg("postgresql://u@h/db"), 1);
	ck_assert_int_eq(sid_registry_target_is_pg("postgres://h/db"), 1);
	ck_assert_int_eq(sid_registry_target_is_pg("host=/tmp dbname=x"), 1);
	ck_assert_int_eq(sid_registry_target_is_pg("/var/lib/semid/registry.db"), 0);
	ck_assert_int_eq(sid_registry_target_is_pg("registry.db"), 0);
	/* the host from PGHOST: once a SQLite file of this name, shown everywhere */
	ck_assert_int_eq(sid_registry_target_is_pg("user=semid password=hunter2 port=5432"), 1);
	ck_assert_int_eq(sid_registry_target_is_pg("user=semid password=hunter2 x"), 1);
	ck_assert_int_eq(sid_registry_target_is_pg("sslmode=require"), 1);
	ck_assert_int_eq(sid_registry_target_is_pg("/srv/a=b/registry.db"), 0);
	ck_assert_int_eq(sid_registry_target_is_pg("run=2.db"), 0);
	sid_registry_default_path("/srv/models/item.safetensors", buf, sizeof(buf));
	ck_assert_str_eq(buf, "/srv/models/semid-registry.db");
	sid_registry_default_path("m.safetensors", buf, sizeof(buf));
	ck_assert_str_eq(buf, "semid-registry.db");
}
END_TEST

START_TEST(t_entry_json)
{
	struct sid_reg_entry e = {.kind = SID_TOWER_ITEM,
				  .id = "sku-1",
				  .L = 3,
				  .codes = {12, 7, 200},
				  .suffix = 0,
				  .model_version = "v1",
				  .created_ms = 1767323045006LL,
				  .updated_ms = 1767323045006LL,
				  .created = 1};
	json_t *j = sid_reg_entry_json(&e, 1);
	char *s = json_dumps(j, JSON_COMPACT | JSON_PRESERVE_ORDER);

	ck_assert_str_eq(s, "{\"kind\":\"item\",\"id\":\"sku-1\",\"codes\":[12,7,200],"
			    "\"suffix\":0,\"sid\":\"12-7-200-0\",\"model_version\":\"v1\","
			    "\"created_at\":\"2026-01-02T03:04:05.006Z\","
			    "\"updated_at\":\"2026-01-02T03:04:05.006Z\",\"embedding_dim\":0,"
			    "\"created\":true,\"moved\":false}");
	free(s);
	json_decref(j);
	j = sid_reg_entry_json(&e, 0);
	ck_assert_ptr_null(json_object_get(j, "created"));
	json_decref(j);
}
END_TEST

/* ---- behaviour on both backends ---- */

START_TEST(t_assign_suffixes)
{
	struct sid_registry *r;
	struct sid_reg_entry e[5];
	int32_t A[3] = {1, 2, 3}, B[3] = {1, 2, 4}, C[3] = {9, 9, 9};
	struct sid_reg_item in[5] = {
	    {"a", A, NULL}, {"b", A, NULL}, {"c", B, NULL}, {"d", A, NULL}, {"a", C, NULL}};
	struct sid_error err;
	int64_t t0 = sid__reg_now_ms(), t1;
	char s[SID_REG_SID_MAX];

	NEED_STORE();
	r = reg_open();
	ck_assert_int_eq(sid_registry_assign(r, SID_TOWER_ITEM, in, 5, 3, 0, "m-1", 0, e, &err), 0);
	t1 = sid__reg_now_ms();
	ck_assert_int_eq(e[0].suffix, 0);
	ck_assert_int_eq(e[1].suffix, 1);
	ck_assert_int_eq(e[2].suffix, 0);
	ck_assert_int_eq(e[3].suffix, 2);
	/* "a" again in the same call: its stored ID, not C */
	ck_assert_int_eq(e[4].created, 0);
	sidstr(&e[4], s);
	ck_assert_str_eq(s, "1-2-3-0");
	for (int i = 0; i < 4; i++) {
		ck_assert_int_eq(e[i].created, 1);
		ck_assert_int_eq(e[i].moved, 0);
		ck_assert_str_eq(e[i].model_version, "m-1");
		ck_assert_int_eq(e[i].L, 3);
		ck_assert(e[i].created_ms >= t0 && e[i].created_ms <= t1);
		ck_assert_str_eq(e[i].id, in[i].id);
	}
	/* again, with other codes and another model: unchanged */
	in[0].codes = C;
	in[1].codes = B;
	ck_assert_int_eq(sid_registry_assign(r, SID_TOWER_ITEM, in, 4, 3, 0, "m-2", 0, e, &err), 0);
	sidstr(&e[0], s);
	ck_assert_str_eq(s, "1-2-3-0");
	sidstr(&e[1], s);
	ck_assert_str_eq(s, "1-2-3-1");
	sidstr(&e[3], s);
	ck_assert_str_eq(s, "1-2-3-2");
	for (int i = 0; i < 4; i++) {
		ck_assert_int_eq(e[i].created, 0);
		ck_assert_str_eq(e[i].model_version, "m-1");
	}
	/* ids with characters that need quoting in a PostgreSQL array literal */
	{
		static const char *odd[] = {"q\"u,o{t}e\\", "NULL", " sp ace ", "\xc3\xa9"};
		for (int k = 0; k < 2; k++)
			for (int i = 0; i < 4; i++) {
				in[0].id = odd[i];
				ck_assert_int_eq(sid_registry_assign(r, SID_TOWER_ITEM, in, 1, 3, 0,
								     "m-2", 0, e, &err),
						 0);
				ck_assert_int_eq(e[0].created, k == 0);
				ck_assert_str_eq(e[0].id, odd[i]);
			}
		in[0].id = "a";
	}
	/* users are another ID space */
	ck_assert_int_eq(sid_registry_assign(r, SID_TOWER_USER, in, 1, 3, 0, "m-2", 0, e, &err), 0);
	ck_assert_int_eq(e[0].created, 1);
	sidstr(&e[0], s);
	ck_assert_str_eq(s, "9-9-9-0");
	sid_registry_close(r);

	/* durable: a new handle sees the same */
	r = reg_open();
	ck_assert_int_eq(sid_registry_get(r, SID_TOWER_ITEM, "d", &e[0], &err), 0);
	sidstr(&e[0], s);
	ck_assert_str_eq(s, "1-2-3-2");
	ck_assert_int_eq(sid_registry_get(r, SID_TOWER_USER, "a", &e[0], &err), 0);
	sidstr(&e[0], s);
	ck_assert_str_eq(s, "9-9-9-0");
	sid_registry_close(r);
}
END_TEST

START_TEST(t_reassign)
{
	struct sid_registry *r;
	struct sid_reg_entry e, g;
	struct sid_error err;
	char s[SID_REG_SID_MAX];
	int32_t B[3] = {5, 5, 5};
	float emb[4] = {1, 2, 3, 4};
	struct sid_reg_item it = {"x", B, emb};

	NEED_STORE();
	r = reg_open();
	assign1(r, "x", 1, 1, 1, 0, &e);
	assign1(r, "y", 1, 1, 1, 0, &e);
	assign1(r, "w", 5, 5, 5, 0, &e);
	ck_assert_int_eq(e.suffix, 0);
	/* x moves to 5-5-5: smallest free there is 1; its old slot 1-1-1-0 frees */
	ck_assert_int_eq(
	    sid_registry_assign(r, SID_TOWER_ITEM, &it, 1, 3, 4, "v2", SID_REG_REASSIGN, &e, &err),
	    0);
	ck_assert_int_eq(e.moved, 1);
	ck_assert_int_eq(e.created, 0);
	ck_assert_int_eq(e.D, 4);
	sidstr(&e, s);
	ck_assert_str_eq(s, "5-5-5-1");
	/* and says which ID it left */
	sid_reg_sid_format(e.from_codes, e.from_L, e.from_suffix, s, sizeof(s));
	ck_assert_str_eq(s, "1-1-1-0");
	ck_assert_str_eq(e.model_version, "v2");
	ck_assert_int_eq(sid_registry_get_sid(r, SID_TOWER_ITEM, "1-1-1-0", &g, &err),
			 SID_ENOTFOUND);
	assign1(r, "z", 1, 1, 1, 0, &e);
	sidstr(&e, s);
	ck_assert_str_eq(s, "1-1-1-0");
	/* reassign to the same codes keeps the slot, notes the model */
	assign1(r, "y", 1, 1, 1, SID_REG_REASSIGN, &e);
	ck_assert_int_eq(e.moved, 0);
	ck_assert_int_eq(e.from_L, 0);
	ck_assert_int_eq(e.suffix, 1);
	/* reassign of an unknown id creates it */
	assign1(r, "new", 1, 1, 1, SID_REG_REASSIGN, &e);
	ck_assert_int_eq(e.created, 1);
	ck_assert_int_eq(e.suffix, 2);
	ck_assert_int_eq(sid_registry_get(r, SID_TOWER_ITEM, "x", &g, &err), 0);
	sidstr(&g, s);
	ck_assert_str_eq(s, "5-5-5-1");
	ck_assert_int_eq(g.D, 4);
	ck_assert_str_eq(g.model_version, "v2");
	ck_assert(g.updated_ms >= g.created_ms);
	sid_registry_close(r);
}
END_TEST

/* A reassign takes the smallest free suffix under its codes when a move
 * has left a gap below the largest: an id it creates, and an id it moves
 * back (PostgreSQL took one past the largest on both of those paths
 * without a test noticing; a plain assign's path had one). */
START_TEST(t_reassign_fills_gaps)
{
	struct sid_registry *r;
	struct sid_reg_entry e;
	char s[SID_REG_SID_MAX];

	NEED_STORE();
	r = reg_open();
	assign1(r, "a", 1, 1, 1, 0, &e);
	assign1(r, "b", 1, 1, 1, 0, &e);
	assign1(r, "c", 1, 1, 1, 0, &e);
	ck_assert_int_eq(e.suffix, 2);
	assign1(r, "a", 2, 2, 2, SID_REG_REASSIGN, &e); /* 1-1-1-0 is free now */
	sidstr(&e, s);
	ck_assert_str_eq(s, "2-2-2-0");
	assign1(r, "d", 1, 1, 1, SID_REG_REASSIGN, &e); /* created there */
	ck_assert_int_eq(e.created, 1);
	sidstr(&e, s);
	ck_assert_str_eq(s, "1-1-1-0");
	assign1(r, "b", 2, 2, 2, SID_REG_REASSIGN, &e); /* 1-1-1-1 is free now */
	sidstr(&e, s);
	ck_assert_str_eq(s, "2-2-2-1");
	assign1(r, "a", 1, 1, 1, SID_REG_REASSIGN, &e); /* moved back, into the gap */
	ck_assert_int_eq(e.moved, 1);
	sidstr(&e, s);
	ck_assert_str_eq(s, "1-1-1-1");
	assign1(r, "e", 2, 2, 2, 0, &e); /* 2-2-2-0, which a left */
	sidstr(&e, s);
	ck_assert_str_eq(s, "2-2-2-0");
	sid_registry_close(r);
}
END_TEST

START_TEST(t_lookups)
{
	struct sid_registry *r;
	struct sid_reg_entry e;
	struct sid_error err;
	int L;

	NEED_STORE();
	r = reg_open();
	ck_assert_int_eq(sid_registry_levels(r, SID_TOWER_ITEM, &L, &err), 0);
	ck_assert_int_eq(L, 0);
	ck_assert_int_eq(sid_registry_get_sid(r, SID_TOWER_ITEM, "1-2-3-0", &e, &err),
			 SID_ENOTFOUND);
	assign1(r, "sku-1", 12, 7, 200, 0, &e);
	assign1(r, "sku-2", 12, 7, 200, 0, &e);
	ck_assert_int_eq(sid_registry_levels(r, SID_TOWER_ITEM, &L, &err), 0);
	ck_assert_int_eq(L, 3);
	ck_assert_int_eq(sid_registry_get_sid(r, SID_TOWER_ITEM, "12-7-200-1", &e, &err), 0);
	ck_assert_str_eq(e.id, "sku-2");
	ck_assert_int_eq(sid_registry_get_sid(r, SID_TOWER_ITEM, "12-7-200-2", &e, &err),
			 SID_ENOTFOUND);
	ck_assert_ptr_nonnull(strstr(err.msg, "12-7-200-2"));
	ck_assert_int_eq(sid_registry_get_sid(r, SID_TOWER_USER, "12-7-200-0", &e, &err),
			 SID_ENOTFOUND);
	ck_assert_int_eq(sid_registry_get_sid(r, SID_TOWER_ITEM, "12-7-0", &e, &err), SID_EINVAL);
	ck_assert_ptr_nonnull(strstr(err.msg, "has 2 levels"));
	/* the codes alone, as an encode answers them, are said to be so */
	ck_assert_int_eq(sid_registry_get_sid(r, SID_TOWER_ITEM, "12-7-200", &e, &err), SID_EINVAL);
	ck_assert_str_eq(err.msg, "sid \"12-7-200\" has 2 levels and a suffix; item IDs have 3 "
				  "levels and a suffix (codes alone? the first ID under them is "
				  "12-7-200-0)");
	ck_assert_int_eq(sid_registry_get_sid(r, SID_TOWER_ITEM, "12-7-200-0-0", &e, &err),
			 SID_EINVAL);
	ck_assert_str_eq(err.msg, "sid \"12-7-200-0-0\" has 4 levels and a suffix; item IDs "
				  "have 3 levels and a suffix");
	/* 1-level IDs (--levels 1): "1 level", and a number alone, the code an
	 * encode answers as its sid, is said to be one as for more levels */
	{
		int32_t one[1] = {5};
		struct sid_reg_item ann = {"ann", one, NULL};
		ck_assert_int_eq(
		    sid_registry_assign(r, SID_TOWER_USER, &ann, 1, 1, 0, "v1", 0, &e, &err), 0);
		ck_assert_int_eq(sid_registry_get_sid(r, SID_TOWER_USER, "5-0-0", &e, &err),
				 SID_EINVAL);
		ck_assert_str_eq(err.msg, "sid \"5-0-0\" has 2 levels and a suffix; user IDs have "
					  "1 level and a suffix");
		ck_assert_int_eq(sid_registry_get_sid(r, SID_TOWER_USER, "5", &e, &err),
				 SID_EINVAL);
		ck_assert_str_eq(err.msg, "sid \"5\" needs at least one code and a suffix (a code "
					  "alone? the first ID under it is 5-0)");
		ck_assert_int_eq(sid_registry_get_sid(r, SID_TOWER_USER, "5-0", &e, &err), 0);
		ck_assert_str_eq(e.id, "ann");
	}
	ck_assert_int_eq(sid_registry_get_sid(r, SID_TOWER_ITEM, "12--7", &e, &err), SID_EINVAL);
	ck_assert_int_eq(sid_registry_get(r, SID_TOWER_ITEM, "nope", &e, &err), SID_ENOTFOUND);
	ck_assert_ptr_nonnull(strstr(err.msg, "\"nope\""));
	ck_assert_int_eq(sid_registry_get(r, SID_TOWER_ITEM, "", &e, &err), SID_EINVAL);
	ck_assert_int_eq(sid_registry_get(r, SID_TOWER_USER, "sku-1", &e, &err), SID_ENOTFOUND);
	/* a new id with another level count is refused; a known one answered */
	{
		int32_t two[2] = {1, 1};
		struct sid_reg_item it[2] = {{"sku-1", two, NULL}, {"sku-9", two, NULL}};
		struct sid_reg_entry out[2];
		ck_assert_int_eq(
		    sid_registry_assign(r, SID_TOWER_ITEM, it, 1, 2, 0, "v9", 0, out, &err), 0);
		ck_assert_int_eq(out[0].L, 3);
		ck_assert_int_eq(
		    sid_registry_assign(r, SID_TOWER_ITEM, it, 2, 2, 0, "v9", 0, out, &err),
		    SID_EINVAL);
		ck_assert_int_eq(err.index, 1);
		ck_assert_ptr_nonnull(strstr(err.msg, "2 levels"));
		ck_assert_int_eq(sid_registry_get(r, SID_TOWER_ITEM, "sku-9", &e, &err),
				 SID_ENOTFOUND);
	}
	sid_registry_close(r);
}
END_TEST

START_TEST(t_bad_input)
{
	struct sid_registry *r;
	struct sid_reg_entry e[3];
	struct sid_error err;
	int32_t ok[3] = {1, 2, 3}, neg[3] = {1, -2, 3}, big[3] = {1, SID_MAX_CODEBOOK, 3};
	struct sid_reg_item in[3] = {{"a", ok, NULL}, {"b\n", ok, NULL}, {"c", ok, NULL}};

	NEED_STORE();
	r = reg_open();
	ck_assert_int_eq(sid_registry_assign(r, SID_TOWER_ITEM, in, 3, 3, 0, "v", 0, e, &err),
			 SID_EINVAL);
	ck_assert_int_eq(err.index, 1);
	ck_assert_ptr_nonnull(strstr(err.msg, "input 1"));
	in[1].id = "b";
	in[2].codes = neg;
	ck_assert_int_eq(sid_registry_assign(r, SID_TOWER_ITEM, in, 3, 3, 0, "v", 0, e, &err),
			 SID_EINVAL);
	ck_assert_int_eq(err.index, 2);
	in[2].codes = big;
	ck_assert_int_eq(sid_registry_assign(r, SID_TOWER_ITEM, in, 3, 3, 0, "v", 0, e, &err),
			 SID_EINVAL);
	in[2].codes = ok;
	ck_assert_int_eq(sid_registry_assign(r, SID_TOWER_ITEM, in, 3, 0, 0, "v", 0, e, &err),
			 SID_EINVAL);
	ck_assert_int_eq(sid_registry_assign(r, SID_TOWER_ITEM, in, 3, 3, 0, "v\t1", 0, e, &err),
			 SID_EINVAL);
	ck_assert_int_eq(sid_registry_assign(r, 7, in, 3, 3, 0, "v", 0, e, &err), SID_EINVAL);
	/* nothing was written by the failed calls */
	ck_assert_int_eq(sid_registry_get(r, SID_TOWER_ITEM, "a", e, &err), SID_ENOTFOUND);
	sid_registry_close(r);
}
END_TEST

/* Calls committed together (sid_registry_assign_calls): one call's own error
 * (levels, or a bad id caught before the store) leaves the others in; an
 * all-known call is answered from reads. */
START_TEST(t_group)
{
	struct sid_registry *r;
	struct sid_reg_entry oa[2], ob[1], oc[1], od[1], oe[1], e;
	int32_t c3[3] = {4, 4, 4}, c2[2] = {4, 4};
	struct sid_reg_item ia[2] = {{"a1", c3, NULL}, {"a2", c3, NULL}};
	struct sid_reg_item ib[1] = {{"b1", c2, NULL}}, ic[1] = {{"c1", c3, NULL}};
	struct sid_reg_item id[1] = {{"known", c3, NULL}}, ie[1] = {{"bad\n", c3, NULL}};
	struct sid_reg_call calls[5] = {
	    {SID_TOWER_ITEM, id, 1, 3, 0, "g", 0, od, 0, {0}, NULL},
	    {SID_TOWER_ITEM, ia, 2, 3, 0, "g", 0, oa, 0, {0}, NULL},
	    {SID_TOWER_ITEM, ib, 1, 2, 0, "g", 0, ob, 0, {0}, NULL},
	    {SID_TOWER_ITEM, ie, 1, 3, 0, "g", 0, oe, 0, {0}, NULL},
	    {SID_TOWER_ITEM, ic, 1, 3, 0, "g", 0, oc, 0, {0}, NULL},
	};
	struct sid_error err;
	char s[SID_REG_SID_MAX];

	NEED_STORE();
	r = reg_open();
	assign1(r, "known", 4, 4, 4, 0, &e);
	ck_assert_int_eq(sid_registry_assign_calls(r, calls, 5), SID_EINVAL);
	ck_assert_int_eq(calls[0].rc, 0);
	ck_assert_int_eq(od[0].created, 0);
	ck_assert_int_eq(calls[1].rc, 0);
	ck_assert_int_eq(calls[2].rc, SID_EINVAL);
	ck_assert_int_eq(calls[2].err.index, 0);
	ck_assert_ptr_nonnull(strstr(calls[2].err.msg, "2 levels"));
	ck_assert_int_eq(calls[3].rc, SID_EINVAL);
	ck_assert_ptr_nonnull(strstr(calls[3].err.msg, "control character"));
	ck_assert_int_eq(calls[4].rc, 0);
	/* suffixes in call order across the group: known 0, a1 1, a2 2, c1 3 */
	ck_assert_int_eq(oa[0].suffix, 1);
	ck_assert_int_eq(oa[1].suffix, 2);
	ck_assert_int_eq(oc[0].suffix, 3);
	ck_assert_int_eq(oc[0].created, 1);
	ck_assert_int_eq(sid_registry_get(r, SID_TOWER_ITEM, "c1", &e, &err), 0);
	sidstr(&e, s);
	ck_assert_str_eq(s, "4-4-4-3");
	ck_assert_int_eq(sid_registry_get(r, SID_TOWER_ITEM, "b1", &e, &err), SID_ENOTFOUND);
	sid_registry_close(r);
}
END_TEST

/* A group met across a model swap to another level count: the second call's
 * id is created by the first, so it is answered as known without a level
 * check.  The handle once cached the levels of every call it committed,
 * this one's 2 among them, and then stored 2-level codes in a 3-level
 * store.  The levels stay the store's: 3. */
START_TEST(t_group_levels_known)
{
	struct sid_registry *r;
	struct sid_reg_entry oa[1], ob[1], e;
	int32_t c3[3] = {4, 4, 4}, c2[2] = {4, 4};
	struct sid_reg_item ia[1] = {{"x", c3, NULL}}, ib[1] = {{"x", c2, NULL}};
	struct sid_reg_item iy = {"y", c2, NULL};
	struct sid_reg_call calls[2] = {
	    {SID_TOWER_ITEM, ia, 1, 3, 0, "old", 0, oa, 0, {0}, NULL},
	    {SID_TOWER_ITEM, ib, 1, 2, 0, "new", 0, ob, 0, {0}, NULL},
	};
	struct sid_error err;
	int L;

	NEED_STORE();
	r = reg_open();
	ck_assert_int_eq(sid_registry_assign_calls(r, calls, 2), 0);
	ck_assert_int_eq(oa[0].created, 1);
	ck_assert_int_eq(ob[0].created, 0);
	ck_assert_int_eq(ob[0].L, 3);
	ck_assert_int_eq(sid_registry_levels(r, SID_TOWER_ITEM, &L, &err), 0);
	ck_assert_int_eq(L, 3);
	ck_assert_int_eq(sid_registry_assign(r, SID_TOWER_ITEM, &iy, 1, 2, 0, "new", 0, &e, &err),
			 SID_EINVAL);
	ck_assert_msg(strstr(err.msg, "2 levels") && strstr(err.msg, "have 3"), "%s", err.msg);
	sid_registry_close(r);
}
END_TEST

/* A transaction that marked the gaps flag and then failed (here a trigger
 * refuses another call's insert) took the flag with it; the handle used to
 * keep it cached as set, so the next reassign left a gap without the flag,
 * and other handles then skipped the free slot (suffix 2 instead of 0). */
START_TEST(t_gaps_flag_rolled_back)
{
	struct sid_registry *r;
	struct sid_reg_entry e, ox[1], ob[1];
	int32_t c2[3] = {2, 2, 2}, c3[3] = {3, 3, 3};
	struct sid_reg_item ix[1] = {{"x", c2, NULL}}, ib[1] = {{"boom", c3, NULL}};
	struct sid_reg_call calls[2] = {
	    {SID_TOWER_ITEM, ix, 1, 3, 0, "v", SID_REG_REASSIGN, ox, 0, {0}, NULL},
	    {SID_TOWER_ITEM, ib, 1, 3, 0, "v", 0, ob, 0, {0}, NULL},
	};

	NEED_STORE();
	r = reg_open();
	assign1(r, "x", 1, 1, 1, 0, &e);
	assign1(r, "y", 1, 1, 1, 0, &e);
	if (g_pg) {
		pg_sql(target, "CREATE FUNCTION boom() RETURNS trigger LANGUAGE plpgsql AS"
			       " $$BEGIN IF NEW.id = 'boom' THEN RAISE EXCEPTION 'boom'; END IF;"
			       " RETURN NEW; END$$");
		pg_sql(target, "CREATE TRIGGER boom BEFORE INSERT ON semid_assignment"
			       " FOR EACH ROW EXECUTE FUNCTION boom()");
	} else {
		sqlite3 *db;
		ck_assert_int_eq(sqlite3_open(target, &db), SQLITE_OK);
		ck_assert_int_eq(sqlite3_exec(db,
					      "CREATE TRIGGER boom BEFORE INSERT ON"
					      " semid_assignment WHEN NEW.id = 'boom'"
					      " BEGIN SELECT RAISE(ABORT, 'boom'); END",
					      NULL, NULL, NULL),
				 SQLITE_OK);
		sqlite3_close(db);
	}
	ck_assert_int_ne(sid_registry_assign_calls(r, calls, 2), 0);
	ck_assert_int_ne(calls[0].rc, 0);		/* the group failed as one */
	assign1(r, "x", 2, 2, 2, SID_REG_REASSIGN, &e); /* leaves 1-1-1-0 free */
	ck_assert_int_eq(e.moved, 1);
	sid_registry_close(r);
	r = reg_open();
	assign1(r, "z", 1, 1, 1, 0, &e);
	ck_assert_int_eq(e.suffix, 0);
	sid_registry_close(r);
}
END_TEST

/* One call with 12000 new ids: more locks than PostgreSQL's lock table holds
 * if taken one per key, and many pipeline chunks. */
START_TEST(t_big_batch)
{
	enum { NB = 12000 };
	static struct sid_reg_item in[NB];
	static struct sid_reg_entry out[NB];
	static int32_t codes[NB][3];
	static char ids[NB][16];
	struct sid_registry *r;
	struct sid_reg_stats st;
	struct sid_error err;

	NEED_STORE();
	for (int i = 0; i < NB; i++) {
		codes[i][0] = i % 50; /* 6000 tuples of two ids each */
		codes[i][1] = (i / 50) % 120;
		codes[i][2] = 1;
		snprintf(ids[i], sizeof(ids[i]), "big%d", i);
		in[i] = (struct sid_reg_item){ids[i], codes[i], NULL};
	}
	r = reg_open();
	ck_assert_msg(sid_registry_assign(r, SID_TOWER_ITEM, in, NB, 3, 0, "v", 0, out, &err) == 0,
		      "%s", err.msg);
	for (int i = 0; i < NB; i++) {
		ck_assert_int_eq(out[i].suffix, i / 6000); /* input order within each tuple */
		ck_assert_int_eq(out[i].created, 1);
	}
	ck_assert_int_eq(sid_registry_stats(r, SID_TOWER_ITEM, &st, &err), 0);
	ck_assert_int_eq(st.items, NB);
	ck_assert_int_eq(st.prefixes[0], 50);
	ck_assert_int_eq(st.prefixes[2], 6000);
	ck_assert_int_eq(st.max_suffix, 1);
	sid_registry_close(r);
}
END_TEST

static int cmp_entry(const void *a, const void *b)
{
	const struct sid_reg_entry *x = a, *y = b;
	for (int l = 0; l < 3; l++)
		if (x->codes[l] != y->codes[l])
			return x->codes[l] < y->codes[l] ? -1 : 1;
	return x->suffix < y->suffix ? -1 : x->suffix > y->suffix;
}

START_TEST(t_list_paging)
{
	struct sid_registry *r;
	struct sid_reg_entry all[60], want[60], page[7];
	struct sid_reg_item in[60];
	int32_t codes[60][3];
	char ids[60][16], cursor[SID_REG_SID_MAX], next[SID_REG_SID_MAX];
	struct sid_error err;
	size_t n, got = 0, nw = 0;
	int pages = 0;

	NEED_STORE();
	r = reg_open();
	for (int i = 0; i < 60; i++) {
		/* codes (i%3, i%4, 256 + i%2): collisions in every group */
		codes[i][0] = i % 3;
		codes[i][1] = i % 4;
		codes[i][2] = 256 + i % 2;
		snprintf(ids[i], sizeof(ids[i]), "i%02d", i);
		in[i] = (struct sid_reg_item){ids[i], codes[i], NULL};
	}
	ck_assert_int_eq(sid_registry_assign(r, SID_TOWER_ITEM, in, 60, 3, 0, "v", 0, all, &err),
			 0);
	/* expected: the entries with codes[0] == 1, by (codes, suffix) */
	for (int i = 0; i < 60; i++)
		if (all[i].codes[0] == 1)
			want[nw++] = all[i];
	ck_assert_int_eq(nw, 20);
	qsort(want, nw, sizeof(want[0]), cmp_entry);
	cursor[0] = '\0';
	do {
		ck_assert_int_eq(
		    sid_registry_list(r, SID_TOWER_ITEM, "1", cursor, 7, page, &n, next, &err), 0);
		for (size_t i = 0; i < n; i++, got++) {
			ck_assert_str_eq(page[i].id, want[got].id);
			ck_assert_int_eq(page[i].suffix, want[got].suffix);
		}
		strcpy(cursor, next);
		pages++;
	} while (cursor[0]);
	ck_assert_int_eq(got, 20);
	ck_assert_int_eq(pages, 3);
	/* a two-level prefix: (1, 2) holds i with i%3==1, i%4==2: 10, 22, 34, 46, 58 */
	ck_assert_int_eq(sid_registry_list(r, SID_TOWER_ITEM, "1-2", "", 7, page, &n, next, &err),
			 0);
	ck_assert_int_eq(n, 5);
	ck_assert_str_eq(next, "");
	for (size_t i = 0; i < n; i++) {
		ck_assert_int_eq(page[i].codes[0], 1);
		ck_assert_int_eq(page[i].codes[1], 2);
	}
	/* the same five in a page of five: it is the last page, no cursor */
	ck_assert_int_eq(sid_registry_list(r, SID_TOWER_ITEM, "1-2", "", 5, page, &n, next, &err),
			 0);
	ck_assert_int_eq(n, 5);
	ck_assert_str_eq(next, "");
	/* the whole store in pages of 7 */
	got = 0;
	cursor[0] = '\0';
	do {
		ck_assert_int_eq(
		    sid_registry_list(r, SID_TOWER_ITEM, "", cursor, 7, page, &n, next, &err), 0);
		got += n;
		strcpy(cursor, next);
	} while (cursor[0]);
	ck_assert_int_eq(got, 60);
	/* a full sid as prefix, a missing prefix, bad ones */
	ck_assert_int_eq(
	    sid_registry_list(r, SID_TOWER_ITEM, "1-2-256", "", 7, page, &n, next, &err), 0);
	ck_assert_int_eq(n, 5); /* i % 4 == 2: all even */
	ck_assert_int_eq(
	    sid_registry_list(r, SID_TOWER_ITEM, "1-2-257", "", 7, page, &n, next, &err), 0);
	ck_assert_int_eq(n, 0);
	ck_assert_int_eq(sid_registry_list(r, SID_TOWER_ITEM, "7", "", 7, page, &n, next, &err), 0);
	ck_assert_int_eq(n, 0);
	ck_assert_int_eq(
	    sid_registry_list(r, SID_TOWER_ITEM, "1-2-3-4", "", 7, page, &n, next, &err),
	    SID_EINVAL);
	ck_assert_ptr_nonnull(strstr(err.msg, "4 levels"));
	/* a full ID given as a prefix: the suffix is said to be no part of one */
	ck_assert_str_eq(err.msg, "prefix \"1-2-3-4\" has 4 levels; item IDs have 3 (a prefix is "
				  "codes only, without the suffix)");
	ck_assert_int_eq(
	    sid_registry_list(r, SID_TOWER_ITEM, "1-2-3-4-5", "", 7, page, &n, next, &err),
	    SID_EINVAL);
	ck_assert_str_eq(err.msg, "prefix \"1-2-3-4-5\" has 5 levels; item IDs have 3");
	ck_assert_int_eq(sid_registry_list(r, SID_TOWER_ITEM, "1--2", "", 7, page, &n, next, &err),
			 SID_EINVAL);
	ck_assert_int_eq(sid_registry_list(r, SID_TOWER_ITEM, "1", "1-2", 7, page, &n, next, &err),
			 SID_EINVAL);
	ck_assert_int_eq(sid_registry_list(r, SID_TOWER_ITEM, "1", "", 0, page, &n, next, &err),
			 SID_EINVAL);
	sid_registry_close(r);
}
END_TEST

/* Paging while others write: between pages, new ids land before and after
 * the cursor, and ids move out (freeing slots behind and ahead) and back in.
 * Every id that stays put meanwhile is listed exactly once (the cursor is a
 * position, not an entry that must still exist). */
START_TEST(t_list_paging_while_writing)
{
	struct sid_registry *r;
	struct sid_reg_entry out[4], page[5];
	struct sid_reg_item in[4];
	int32_t codes[4][3];
	char ids[4][16], cursor[SID_REG_SID_MAX] = "", next[SID_REG_SID_MAX];
	struct sid_error err;
	int seen[40] = {0}, pages = 0;
	size_t n;

	NEED_STORE();
	r = reg_open();
	for (int i = 0; i < 40; i++) { /* i%5 ids in each of 8 tuples 1-(i%8)-0 */
		char id[16];
		snprintf(id, sizeof(id), "p%02d", i);
		assign1(r, id, 1, i % 8, 0, 0, &out[0]);
	}
	do {
		ck_assert_int_eq(
		    sid_registry_list(r, SID_TOWER_ITEM, "1", cursor, 5, page, &n, next, &err), 0);
		for (size_t k = 0; k < n; k++)
			if (page[k].id[0] == 'p')
				seen[atoi(page[k].id + 1)]++;
		/* new ids in the first and last tuples; p(pages) moves out of the
		 * prefix for good (it does not stay put: not counted) */
		for (int j = 0; j < 4; j++) {
			snprintf(ids[j], sizeof(ids[j]), "n%d-%d", pages, j);
			codes[j][0] = 1;
			codes[j][1] = j % 2 ? 7 : 0;
			codes[j][2] = 0;
			in[j] = (struct sid_reg_item){ids[j], codes[j], NULL};
		}
		ck_assert_int_eq(
		    sid_registry_assign(r, SID_TOWER_ITEM, in, 4, 3, 0, "v", 0, out, &err), 0);
		{
			char id[16];
			snprintf(id, sizeof(id), "p%02d", 39 - pages);
			assign1(r, id, 2, 0, 0, SID_REG_REASSIGN, &out[0]);
			seen[39 - pages] = -100; /* moved: excluded */
		}
		memcpy(cursor, next, sizeof(cursor));
		ck_assert_int_lt(++pages, 40);
	} while (cursor[0]);
	for (int i = 0; i < 40; i++)
		if (seen[i] >= 0)
			ck_assert_msg(seen[i] == 1, "p%02d listed %d times", i, seen[i]);
	sid_registry_close(r);
}
END_TEST

START_TEST(t_stats)
{
	struct sid_registry *r;
	struct sid_reg_stats st;
	struct sid_reg_entry e;
	struct sid_error err;
	float emb[2] = {1, 2};
	int32_t c[3] = {2, 0, 0};
	struct sid_reg_item it = {"f", c, emb};

	NEED_STORE();
	r = reg_open();
	ck_assert_int_eq(sid_registry_stats(r, SID_TOWER_ITEM, &st, &err), 0);
	ck_assert_int_eq(st.items, 0);
	ck_assert_int_eq(st.max_suffix, -1);
	assign1(r, "a", 1, 2, 3, 0, &e);
	assign1(r, "b", 1, 2, 3, 0, &e);
	assign1(r, "c", 1, 2, 3, 0, &e);
	assign1(r, "d", 1, 2, 4, 0, &e);
	assign1(r, "e", 1, 5, 0, 0, &e);
	ck_assert_int_eq(sid_registry_assign(r, SID_TOWER_ITEM, &it, 1, 3, 2, "v", 0, &e, &err), 0);
	assign1(r, "g", 1, 2, 3, 0, &e); /* suffix 3 */
	ck_assert_int_eq(sid_registry_stats(r, SID_TOWER_ITEM, &st, &err), 0);
	/* by hand: level 0 {1, 2}; level 1 {1-2, 1-5, 2-0}; level 2 {1-2-3, 1-2-4, 1-5-0, 2-0-0} */
	ck_assert_int_eq(st.items, 7);
	ck_assert_int_eq(st.L, 3);
	ck_assert_int_eq(st.prefixes[0], 2);
	ck_assert_int_eq(st.prefixes[1], 3);
	ck_assert_int_eq(st.prefixes[2], 4);
	ck_assert_int_eq(st.max_suffix, 3);
	ck_assert_int_eq(st.suffix_hist[0], 4); /* a d e f */
	ck_assert_int_eq(st.suffix_hist[1], 1); /* b */
	ck_assert_int_eq(st.suffix_hist[2], 2); /* c (2), g (3) */
	ck_assert_int_eq(st.suffix_hist[3], 0);
	ck_assert_int_eq(st.with_embedding, 1);
	ck_assert_int_eq(sid_registry_stats(r, SID_TOWER_USER, &st, &err), 0);
	ck_assert_int_eq(st.items, 0);
	sid_registry_close(r);
}
END_TEST

/* A writer that sends 64 MiB + 1 bytes with no newline, then keeps its end
 * of the pipe open (until the test closes it). */
struct endless {
	int fd;
	int done;
};

static void *endless_write(void *p)
{
	struct endless *w = p;
	static char chunk[1 << 16];
	size_t left = (64u << 20) + 1;

	memset(chunk, 'a', sizeof(chunk));
	while (left) {
		size_t n = left < sizeof(chunk) ? left : sizeof(chunk);
		ssize_t k = write(w->fd, chunk, n);
		if (k <= 0)
			break;
		left -= (size_t)k;
	}
	while (!__atomic_load_n(&w->done, __ATOMIC_ACQUIRE))
		usleep(1000);
	close(w->fd);
	return NULL;
}

/* An import line longer than 64 MiB is refused once that much is read, not
 * after the whole line: here the writer never ends it (nor closes the
 * pipe), and getline used to wait for ever, holding all of it in memory. */
START_TEST(t_import_line_bounded)
{
	struct sid_registry *r;
	struct sid_reg_import_result res;
	struct sid_error err;
	struct endless w = {0};
	pthread_t th;
	int fd[2];
	FILE *f;

	NEED_STORE();
	r = reg_open();
	ck_assert_int_eq(pipe(fd), 0);
	w.fd = fd[1];
	ck_assert_int_eq(pthread_create(&th, NULL, endless_write, &w), 0);
	f = fdopen(fd[0], "r");
	ck_assert_int_eq(sid_registry_import(r, SID_REG_TSV, f, NULL, NULL, &res, &err),
			 SID_EFORMAT);
	ck_assert_msg(strstr(err.msg, "line 1: longer than"), "%s", err.msg);
	__atomic_store_n(&w.done, 1, __ATOMIC_RELEASE);
	pthread_join(th, NULL);
	fclose(f);
	sid_registry_close(r);
}
END_TEST

/* ---- diff against a model built here ---- */

/* model_builder's default model: item tower 8 -> 16 -> 4, L = 3, K = {5, 7, 3}. */
static struct sid_model *default_model(void)
{
	struct mb_spec spec;
	struct sid_model *m = NULL;
	struct sid_error err;
	uint8_t *buf;
	size_t len;

	mb_spec_init(&spec);
	ck_assert_int_eq(mb_build_buffer(&spec, &buf, &len, &err), 0);
	ck_assert_int_eq(sid_model_load_buffer(buf, len, &m, &err), 0);
	free(buf);
	return m;
}

/* A stored embedding too large for the new model's layers (finite, but the
 * encoder overflows on it): diff, and so reassign, refuse naming its id
 * rather than count (and move) it by codes that mean nothing. */
START_TEST(t_diff_overflow)
{
	static float big[8], ok[8];
	int32_t c[3] = {0, 0, 0};
	struct sid_reg_item in[2] = {{"fine", c, ok}, {"huge", c, big}};
	struct sid_reg_entry out[2];
	struct sid_registry *r;
	struct sid_model *m;
	struct sid_reg_diff d;
	struct sid_error err;
	uint64_t moved, stale;

	NEED_STORE();
	for (int j = 0; j < 8; j++) {
		big[j] = j % 2 ? 3e38f : -3e38f;
		ok[j] = 0.25f;
	}
	m = default_model();
	r = reg_open();
	ck_assert_int_eq(sid_registry_assign(r, SID_TOWER_ITEM, in, 2, 3, 8, "v", 0, out, &err), 0);
	ck_assert_int_eq(sid_registry_diff(r, SID_TOWER_ITEM, m, &d, &err), SID_EINVAL);
	ck_assert_msg(strstr(err.msg, "id huge") && strstr(err.msg, "too large for the new model"),
		      "%s", err.msg);
	ck_assert_int_eq(sid_registry_reassign_all(r, SID_TOWER_ITEM, m, 100, NULL, NULL, NULL, &d,
						   &moved, &stale, &err),
			 SID_EINVAL);
	ck_assert_uint_eq(moved, 0);
	sid_model_unref(m);
	sid_registry_close(r);
}
END_TEST

START_TEST(t_diff)
{
	struct sid_registry *r;
	struct mb_spec spec;
	struct sid_model *m = NULL;
	struct sid_error err;
	struct sid_workspace *ws = sid_workspace_new();
	struct sid_reg_diff d;
	uint8_t *buf;
	size_t len;
	enum { N = 300 };
	static float x[N * 8];
	static int32_t codes[N * 3];
	static char ids[N][16];
	static struct sid_reg_item in[N + 2];
	static struct sid_reg_entry out[N + 2];
	struct sid_encode_out o = {.codes = codes};
	uint64_t rng = 99;
	int32_t extra[3] = {0, 0, 0};

	NEED_STORE();
	mb_spec_init(&spec); /* item tower 8 -> 16 -> 4, L = 3, K = {5, 7, 3} */
	ck_assert_int_eq(mb_build_buffer(&spec, &buf, &len, &err), 0);
	ck_assert_msg(sid_model_load_buffer(buf, len, &m, &err) == 0, "%s", err.msg);
	free(buf);
	for (int i = 0; i < N * 8; i++)
		x[i] = mb_rand_sym(&rng);
	ck_assert_int_eq(sid_encode(sid_model_tower(m, SID_TOWER_ITEM), x, N, &o, ws, &err), 0);
	/* store the model's own codes, except: rows 0..9 get level 2 changed, rows
	 * 10..13 level 0 changed, rows 14..15 levels 1 and 2 changed */
	for (int i = 0; i < N; i++) {
		int32_t *c = codes + 3 * i;
		if (i < 10)
			c[2] = (c[2] + 1) % 3;
		else if (i < 14)
			c[0] = (c[0] + 1) % 5;
		else if (i < 16) {
			c[1] = (c[1] + 1) % 7;
			c[2] = (c[2] + 1) % 3;
		}
		snprintf(ids[i], sizeof(ids[i]), "it%d", i);
		in[i] = (struct sid_reg_item){ids[i], c, x + 8 * i};
	}
	in[N] = (struct sid_reg_item){"noemb", extra, NULL};
	r = reg_open();
	ck_assert_int_eq(
	    sid_registry_assign(r, SID_TOWER_ITEM, in, N + 1, 3, 8, "test-1", 0, out, &err), 0);
	{ /* an embedding of another width */
		float w[5] = {1, 2, 3, 4, 5};
		struct sid_reg_item it = {"wide", extra, w};
		ck_assert_int_eq(
		    sid_registry_assign(r, SID_TOWER_ITEM, &it, 1, 3, 5, "x", 0, out, &err), 0);
	}
	ck_assert_msg(sid_registry_diff(r, SID_TOWER_ITEM, m, &d, &err) == 0, "%s", err.msg);
	ck_assert_int_eq(d.items, N + 2);
	ck_assert_int_eq(d.compared, N);
	ck_assert_int_eq(d.no_embedding, 1);
	ck_assert_int_eq(d.wrong_dim, 1);
	ck_assert_int_eq(d.L_old, 3);
	ck_assert_int_eq(d.L_new, 3);
	ck_assert_int_eq(d.level_changed[0], 4);
	ck_assert_int_eq(d.level_changed[1], 2);
	ck_assert_int_eq(d.level_changed[2], 12);
	ck_assert_int_eq(d.prefix_changed[0], 4);
	ck_assert_int_eq(d.prefix_changed[1], 6);
	ck_assert_int_eq(d.prefix_changed[2], 16);
	ck_assert_int_eq(d.changed, 16);
	/* no user tower in the model */
	ck_assert_int_eq(sid_registry_diff(r, SID_TOWER_USER, m, &d, &err), SID_ENOTFOUND);
	sid_model_unref(m);

	/* a model with 2 levels: every compared ID changes */
	{
		static const int hidden[] = {16};
		static const int K[] = {5, 7};
		mb_tower(&spec, SID_TOWER_ITEM, 8, hidden, 1, 4, 2, K, "relu", "none", 1);
		ck_assert_int_eq(mb_build_buffer(&spec, &buf, &len, &err), 0);
		ck_assert_int_eq(sid_model_load_buffer(buf, len, &m, &err), 0);
		free(buf);
		ck_assert_int_eq(sid_registry_diff(r, SID_TOWER_ITEM, m, &d, &err), 0);
		ck_assert_int_eq(d.L_new, 2);
		ck_assert_int_eq(d.changed, N);
		ck_assert_int_eq(d.level_changed[0], 4);
		ck_assert_int_eq(d.level_changed[1], 2);
		sid_model_unref(m);
	}
	sid_workspace_free(ws);
	sid_registry_close(r);
}
END_TEST

/* ---- reassign_all ---- */

struct moved_seen {
	int n;
	char id[32][16];
	int32_t before[32][3], after[32][3];
};

static int on_moved(const struct sid_reg_entry *b, const struct sid_reg_entry *a, void *ctx)
{
	struct moved_seen *m = ctx;
	ck_assert_int_lt(m->n, 32);
	ck_assert_str_eq(b->id, a->id);
	snprintf(m->id[m->n], sizeof(m->id[0]), "%.15s", b->id);
	memcpy(m->before[m->n], b->codes, sizeof(m->before[0]));
	memcpy(m->after[m->n], a->codes, sizeof(m->after[0]));
	m->n++;
	return 0;
}

/* The store of t_diff (the model's codes but for 16 rows; one id without an
 * embedding, one with another width): reassign_all moves exactly those 16
 * to the model's codes, tells each move with the codes before and after,
 * leaves every other id as it was, and keeps every sid unique; again, it
 * moves nothing; a model of 2 levels is refused and changes nothing. */
START_TEST(t_reassign_all)
{
	enum { N = 300 };
	static float x[N * 8];
	static int32_t codes[N * 3], mine[N * 3];
	static char ids[N][16];
	static struct sid_reg_item in[N + 1];
	static struct sid_reg_entry out[N + 1], before[N];
	static struct moved_seen seen;
	struct sid_registry *r;
	struct mb_spec spec;
	struct sid_model *m = NULL, *m2 = NULL;
	struct sid_error err;
	struct sid_workspace *ws = sid_workspace_new();
	struct sid_encode_out o = {.codes = mine};
	struct sid_reg_diff d;
	struct sid_reg_entry e;
	struct sid_reg_stats st;
	uint8_t *buf;
	size_t len;
	uint64_t moved, stale, rng = 99;
	int32_t extra[3] = {0, 0, 0};

	NEED_STORE();
	mb_spec_init(&spec);
	ck_assert_int_eq(mb_build_buffer(&spec, &buf, &len, &err), 0);
	ck_assert_int_eq(sid_model_load_buffer(buf, len, &m, &err), 0);
	free(buf);
	for (int i = 0; i < N * 8; i++)
		x[i] = mb_rand_sym(&rng);
	ck_assert_int_eq(sid_encode(sid_model_tower(m, SID_TOWER_ITEM), x, N, &o, ws, &err), 0);
	memcpy(codes, mine, sizeof(codes));
	for (int i = 0; i < 16; i++) /* stored under other codes */
		codes[3 * i + (i % 3)] = (codes[3 * i + (i % 3)] + 1) % (i % 3 == 0   ? 5
									 : i % 3 == 1 ? 7
										      : 3);
	for (int i = 0; i < N; i++) {
		snprintf(ids[i], sizeof(ids[i]), "it%d", i);
		in[i] = (struct sid_reg_item){ids[i], codes + 3 * i, x + 8 * i};
	}
	in[N] = (struct sid_reg_item){"noemb", extra, NULL};
	r = reg_open();
	ck_assert_int_eq(
	    sid_registry_assign(r, SID_TOWER_ITEM, in, N + 1, 3, 8, "test-1", 0, out, &err), 0);
	for (int i = 0; i < N; i++)
		before[i] = out[i];
	{ /* the count behind the CLI's progress bars */
		uint64_t n;
		ck_assert_int_eq(sid_registry_count(r, -1, &n, &err), 0);
		ck_assert_uint_eq(n, N + 1);
		ck_assert_int_eq(sid_registry_count(r, SID_TOWER_ITEM, &n, &err), 0);
		ck_assert_uint_eq(n, N + 1);
		ck_assert_int_eq(sid_registry_count(r, SID_TOWER_USER, &n, &err), 0);
		ck_assert_uint_eq(n, 0);
	}

	memset(&seen, 0, sizeof(seen));
	ck_assert_msg(sid_registry_reassign_all(r, SID_TOWER_ITEM, m, 7, on_moved, NULL, &seen, &d,
						&moved, &stale, &err) == 0,
		      "%s", err.msg);
	ck_assert_uint_eq(moved, 16);
	ck_assert_int_eq(seen.n, 16);
	ck_assert_uint_eq(d.changed, 16);
	ck_assert_uint_eq(d.no_embedding, 1);
	for (int k = 0; k < seen.n; k++) {
		int i = atoi(seen.id[k] + 2);
		ck_assert_int_lt(i, 16);
		ck_assert_mem_eq(seen.before[k], codes + 3 * i, sizeof(seen.before[k]));
		ck_assert_mem_eq(seen.after[k], mine + 3 * i, sizeof(seen.after[k]));
	}
	for (int i = 0; i < N; i++) {
		ck_assert_int_eq(sid_registry_get(r, SID_TOWER_ITEM, ids[i], &e, &err), 0);
		ck_assert_mem_eq(e.codes, mine + 3 * i, sizeof(int32_t) * 3);
		ck_assert_int_eq(e.D, 8); /* the stored embedding stays */
		if (i >= 16) {		  /* untouched: same suffix, same model_version */
			ck_assert_int_eq(e.suffix, before[i].suffix);
			ck_assert_str_eq(e.model_version, "test-1");
		} else {
			ck_assert_str_eq(e.model_version, m->version);
		}
	}
	ck_assert_int_eq(sid_registry_get(r, SID_TOWER_ITEM, "noemb", &e, &err), 0);
	ck_assert_mem_eq(e.codes, extra, sizeof(extra));
	/* unique: every sid resolves to its own id */
	for (int i = 0; i < N; i++) {
		struct sid_reg_entry g, h;
		char sid[SID_REG_SID_MAX];
		ck_assert_int_eq(sid_registry_get(r, SID_TOWER_ITEM, ids[i], &g, &err), 0);
		sid_reg_sid_format(g.codes, 3, g.suffix, sid, sizeof(sid));
		ck_assert_int_eq(sid_registry_get_sid(r, SID_TOWER_ITEM, sid, &h, &err), 0);
		ck_assert_str_eq(h.id, ids[i]);
	}
	ck_assert_int_eq(sid_registry_diff(r, SID_TOWER_ITEM, m, &d, &err), 0);
	ck_assert_uint_eq(d.changed, 0);
	ck_assert_uint_eq(d.compared, N); /* every embedding still there, as it was */
	ck_assert_int_eq(sid_registry_reassign_all(r, SID_TOWER_ITEM, m, 1000, NULL, NULL, NULL, &d,
						   &moved, &stale, &err),
			 0);
	ck_assert_uint_eq(moved, 0);

	{ /* another number of levels: refused, nothing moved */
		static const int hidden[] = {16};
		static const int K[] = {5, 7};
		mb_tower(&spec, SID_TOWER_ITEM, 8, hidden, 1, 4, 2, K, "relu", "none", 1);
		ck_assert_int_eq(mb_build_buffer(&spec, &buf, &len, &err), 0);
		ck_assert_int_eq(sid_model_load_buffer(buf, len, &m2, &err), 0);
		free(buf);
		ck_assert_int_eq(sid_registry_reassign_all(r, SID_TOWER_ITEM, m2, 100, NULL, NULL,
							   NULL, &d, &moved, &stale, &err),
				 SID_EINVAL);
		ck_assert_ptr_nonnull(strstr(err.msg, "levels"));
		ck_assert_int_eq(sid_registry_stats(r, SID_TOWER_ITEM, &st, &err), 0);
		ck_assert_int_eq(st.L, 3);
		sid_model_unref(m2);
	}
	ck_assert_int_eq(sid_registry_reassign_all(r, SID_TOWER_USER, m, 100, NULL, NULL, NULL, &d,
						   &moved, &stale, &err),
			 SID_ENOTFOUND);
	sid_model_unref(m);
	sid_workspace_free(ws);
	sid_registry_close(r);
}
END_TEST

/* Store @n ids "<prefix><i>" under codes one off what @m gives their rows. */
static void store_off_codes(struct sid_registry *r, const struct sid_model *m, const char *prefix,
			    int n, float *x, uint64_t seed)
{
	static int32_t codes[1000 * 3];
	static char ids[1000][24];
	static struct sid_reg_item in[1000];
	static struct sid_reg_entry out[1000];
	struct sid_workspace *ws = sid_workspace_new();
	struct sid_encode_out o = {.codes = codes};
	struct sid_error err;

	ck_assert_int_le(n, 1000);
	for (int i = 0; i < n * 8; i++)
		x[i] = mb_rand_sym(&seed);
	ck_assert_int_eq(sid_encode(sid_model_tower(m, SID_TOWER_ITEM), x, n, &o, ws, &err), 0);
	for (int i = 0; i < n; i++) {
		codes[3 * i + 2] = (codes[3 * i + 2] + 1) % 3;
		snprintf(ids[i], sizeof(ids[i]), "%s%d", prefix, i);
		in[i] = (struct sid_reg_item){ids[i], codes + 3 * i, x + 8 * i};
	}
	ck_assert_int_eq(sid_registry_assign(r, SID_TOWER_ITEM, in, n, 3, 8, "old", 0, out, &err),
			 0);
	sid_workspace_free(ws);
}

/* A writer that moves ids while reassign_all runs: after the first batch of
 * 100 is told, it reassigns five ids still waiting: to codes 0-0-i, or with
 * @x, to the codes they have with another row of @x as the embedding (a
 * request to a server on the same model: their ID stays the one the walk
 * read, but the walk's new codes came from an embedding they no longer
 * have). */
struct meddler {
	struct sid_registry *r;
	const float *x;
	int told;
	char seen[300];
	char moved_ids[5][24];
	struct sid_reg_entry kept[5]; /* with @x: as they were */
	int nmoved;
	int stops;
};

static int meddle(const struct sid_reg_entry *b, const struct sid_reg_entry *a, void *ctx)
{
	struct meddler *m = ctx;
	static int32_t codes[5][3];
	struct sid_reg_item in[5];
	struct sid_reg_entry out[5];
	struct sid_error err;

	m->seen[atoi(b->id + 1)] = 1;
	if (++m->told != 100)
		return 0;
	if (m->x)
		usleep(2000); /* a later millisecond than the walk read */
	for (int i = 0; i < 300 && m->nmoved < 5; i++)
		if (!m->seen[i]) {
			int k = m->nmoved++;
			snprintf(m->moved_ids[k], sizeof(m->moved_ids[0]), "a%d", i);
			codes[k][2] = k;
			in[k] = (struct sid_reg_item){m->moved_ids[k], codes[k], NULL};
			if (!m->x)
				continue;
			ck_assert_int_eq(sid_registry_get(m->r, SID_TOWER_ITEM, m->moved_ids[k],
							  &m->kept[k], &err),
					 0);
			in[k].codes = m->kept[k].codes;
			in[k].emb = m->x + 8 * (size_t)(299 - i);
		}
	ck_assert_int_eq(m->nmoved, 5);
	ck_assert_int_eq(sid_registry_assign(m->r, SID_TOWER_ITEM, in, 5, 3, 8,
					     m->x ? "old" : "meddler", SID_REG_REASSIGN, out, &err),
			 0);
	for (int i = 0; i < 5; i++) {
		ck_assert_int_eq(out[i].moved, !m->x);
		if (m->x)
			ck_assert_int_eq(out[i].suffix, m->kept[i].suffix);
	}
	return 0;
}

static int stop_at_once(void *ctx)
{
	return SID_EUNAVAIL;
}

static int count_stops(void *ctx)
{
	((struct meddler *)ctx)->stops++;
	return 0;
}

/* reassign_all over 300 ids stored off their codes (5 of them at one
 * tuple), with the meddler moving (@x NULL) or reassigning in place five
 * ids between the walk and their batch: they are counted stale, the other
 * 295 move. */
static void reassign_meddled(struct sid_registry *r, const struct sid_model *m, struct meddler *md,
			     float *x, sid_reg_stop_fn stop)
{
	struct sid_reg_diff d;
	struct sid_error err;
	uint64_t moved, stale;

	memset(md, 0, sizeof(*md));
	md->r = r;
	md->x = x;
	ck_assert_msg(sid_registry_reassign_all(r, SID_TOWER_ITEM, m, 100, meddle, stop, md, &d,
						&moved, &stale, &err) == 0,
		      "%s", err.msg);
	ck_assert_uint_eq(d.changed, 300);
	ck_assert_uint_eq(moved, 295);
	ck_assert_uint_eq(stale, 5);
}

/* reassign_all moves an id only from the ID its walk read: five ids another
 * writer moved between the walk and their batch keep what that writer gave
 * them, and are counted stale; the other 295 move.  Its stop question is
 * asked before each of the three batches at least; answered at once, nothing
 * moves. */
START_TEST(t_reassign_all_expect)
{
	static float x[300 * 8];
	static struct meddler md;
	struct sid_registry *r;
	struct sid_model *m = NULL;
	struct sid_reg_diff d;
	struct sid_reg_entry e;
	struct sid_error err;
	uint64_t moved, stale;

	NEED_STORE();
	m = default_model();
	r = reg_open();
	store_off_codes(r, m, "a", 300, x, 5);
	/* told to stop at once: nothing moves */
	ck_assert_int_eq(sid_registry_reassign_all(r, SID_TOWER_ITEM, m, 100, NULL, stop_at_once,
						   NULL, &d, &moved, &stale, &err),
			 SID_EUNAVAIL);
	ck_assert_uint_eq(moved, 0);
	ck_assert_int_eq(sid_registry_diff(r, SID_TOWER_ITEM, m, &d, &err), 0);
	ck_assert_uint_eq(d.changed, 300);
	reassign_meddled(r, m, &md, NULL, count_stops);
	ck_assert_int_ge(md.stops, 3);
	for (int i = 0; i < 5; i++) {
		ck_assert_int_eq(sid_registry_get(r, SID_TOWER_ITEM, md.moved_ids[i], &e, &err), 0);
		ck_assert_str_eq(e.model_version, "meddler");
		ck_assert_int_eq(e.codes[0], 0);
		ck_assert_int_eq(e.codes[1], 0);
		ck_assert_int_eq(e.codes[2], i);
	}
	sid_model_unref(m);
	sid_registry_close(r);
}
END_TEST

/* reassign_all leaves an id another writer reassigned since the walk even
 * when that writer kept its codes: it keeps what that writer gave it and is
 * counted stale (before, it was moved to codes encoded from the embedding
 * the writer had replaced, and the request's answer went stale). */
START_TEST(t_reassign_all_expect_touched)
{
	static float x[300 * 8];
	static struct meddler md;
	struct sid_registry *r;
	struct sid_model *m = NULL;
	struct sid_reg_entry e;
	struct sid_error err;

	NEED_STORE();
	m = default_model();
	r = reg_open();
	store_off_codes(r, m, "a", 300, x, 5);
	reassign_meddled(r, m, &md, x, NULL);
	for (int i = 0; i < 5; i++) {
		ck_assert_int_eq(sid_registry_get(r, SID_TOWER_ITEM, md.moved_ids[i], &e, &err), 0);
		ck_assert_str_eq(e.model_version, "old");
		ck_assert_int_eq(e.suffix, md.kept[i].suffix);
		ck_assert_mem_eq(e.codes, md.kept[i].codes, 3 * sizeof(int32_t));
	}
	sid_model_unref(m);
	sid_registry_close(r);
}
END_TEST

/* A server on the old model assigns a new id while reassign_all runs (after
 * its first batch): the walk never saw it, so it keeps the old model's codes
 * and version; diff counts it, and a second run moves it. */
struct late {
	struct sid_registry *r;
	struct sid_reg_item in;
	int told;
};

static int assign_late(const struct sid_reg_entry *b, const struct sid_reg_entry *a, void *ctx)
{
	struct late *l = ctx;
	struct sid_reg_entry e;
	struct sid_error err;

	if (++l->told == 1)
		ck_assert_int_eq(
		    sid_registry_assign(l->r, SID_TOWER_ITEM, &l->in, 1, 3, 8, "old", 0, &e, &err),
		    0);
	return 0;
}

START_TEST(t_reassign_all_late_ids)
{
	static float x[300 * 8];
	struct sid_registry *r;
	struct sid_model *m = NULL;
	struct sid_reg_entry e, a0;
	struct sid_reg_diff d;
	struct sid_error err;
	struct late l = {0};
	uint64_t moved, stale;

	NEED_STORE();
	m = default_model();
	r = reg_open();
	store_off_codes(r, m, "a", 300, x, 5);
	ck_assert_int_eq(sid_registry_get(r, SID_TOWER_ITEM, "a0", &a0, &err), 0);
	/* a0's input and old codes, under another id */
	l = (struct late){r, {"late", a0.codes, x}, 0};
	ck_assert_int_eq(sid_registry_reassign_all(r, SID_TOWER_ITEM, m, 100, assign_late, NULL, &l,
						   &d, &moved, &stale, &err),
			 0);
	ck_assert_uint_eq(moved, 300);
	ck_assert_int_eq(sid_registry_get(r, SID_TOWER_ITEM, "late", &e, &err), 0);
	ck_assert_mem_eq(e.codes, a0.codes, sizeof(int32_t) * 3);
	ck_assert_str_eq(e.model_version, "old");
	ck_assert_int_eq(sid_registry_diff(r, SID_TOWER_ITEM, m, &d, &err), 0);
	ck_assert_uint_eq(d.changed, 1);
	ck_assert_int_eq(sid_registry_reassign_all(r, SID_TOWER_ITEM, m, 100, NULL, NULL, NULL, &d,
						   &moved, &stale, &err),
			 0);
	ck_assert_uint_eq(moved, 1);
	ck_assert_int_eq(sid_registry_get(r, SID_TOWER_ITEM, "late", &e, &err), 0);
	ck_assert_str_ne(e.model_version, "old");
	sid_model_unref(m);
	sid_registry_close(r);
}
END_TEST

/* A reassign given no embedding (registry_embeddings false, `assign
 * --reassign --no-embeddings`) moves an id to codes its stored embedding did
 * not give: the store drops that embedding (D 0), so that diff does not
 * count the id and reassign_all does not move it back from the old input,
 * undoing the request.  One with an embedding keeps the new one. */
START_TEST(t_reassign_drops_embedding)
{
	static float x[2 * 8];
	struct sid_registry *r;
	struct sid_model *m = NULL;
	struct sid_workspace *ws = sid_workspace_new();
	int32_t codes[2 * 3], other[2][3];
	struct sid_encode_out o = {.codes = codes};
	struct sid_reg_item in[2] = {{"x", codes, x}, {"y", codes + 3, x + 8}};
	struct sid_reg_entry e[2];
	struct sid_reg_diff d;
	struct sid_error err;
	uint64_t moved, stale, seed = 11;

	NEED_STORE();
	m = default_model();
	r = reg_open();
	for (int i = 0; i < 16; i++)
		x[i] = mb_rand_sym(&seed);
	ck_assert_int_eq(sid_encode(sid_model_tower(m, SID_TOWER_ITEM), x, 2, &o, ws, &err), 0);
	ck_assert_int_eq(sid_registry_assign(r, SID_TOWER_ITEM, in, 2, 3, 8, "m", 0, e, &err), 0);
	ck_assert_int_eq(e[0].D, 8);
	/* both move to other codes: x without an embedding, y with its own */
	for (int i = 0; i < 2; i++) {
		memcpy(other[i], codes + 3 * i, sizeof(other[i]));
		other[i][2] = (other[i][2] + 1) % 3;
		in[i].codes = other[i];
	}
	in[0].emb = NULL;
	ck_assert_int_eq(
	    sid_registry_assign(r, SID_TOWER_ITEM, in, 2, 3, 8, "req", SID_REG_REASSIGN, e, &err),
	    0);
	ck_assert(e[0].moved && e[1].moved);
	ck_assert_int_eq(e[0].D, 0);
	ck_assert_int_eq(e[1].D, 8);
	ck_assert_int_eq(sid_registry_get(r, SID_TOWER_ITEM, "x", &e[0], &err), 0);
	ck_assert_int_eq(e[0].D, 0);
	ck_assert_int_eq(sid_registry_diff(r, SID_TOWER_ITEM, m, &d, &err), 0);
	ck_assert_uint_eq(d.no_embedding, 1);
	ck_assert_uint_eq(d.compared, 1);
	/* y moves back (its embedding gives its first codes); x stays */
	ck_assert_int_eq(sid_registry_reassign_all(r, SID_TOWER_ITEM, m, 100, NULL, NULL, NULL, &d,
						   &moved, &stale, &err),
			 0);
	ck_assert_uint_eq(moved, 1);
	ck_assert_int_eq(sid_registry_get(r, SID_TOWER_ITEM, "x", &e[0], &err), 0);
	ck_assert_mem_eq(e[0].codes, other[0], sizeof(other[0]));
	ck_assert_str_eq(e[0].model_version, "req");
	ck_assert_int_eq(sid_registry_get(r, SID_TOWER_ITEM, "y", &e[1], &err), 0);
	ck_assert_mem_eq(e[1].codes, codes + 3, sizeof(other[1]));
	ck_assert_int_eq(e[1].D, 8); /* reassign_all kept the embedding it moved from */
	sid_workspace_free(ws);
	sid_model_unref(m);
	sid_registry_close(r);
}
END_TEST

/* Why `semid registry reassign` moves 128 ids a transaction on PostgreSQL:
 * batches of SID_REG_PG_GROUP_IDS take no global lock (they run beside a
 * fleet's assigns), batches of 1000 do; SQLite takes none either way. */
START_TEST(t_reassign_all_batches)
{
	static float x[300 * 8];
	struct sid_registry *r;
	struct sid_model *m = NULL;
	struct sid_reg_events ev;
	struct sid_reg_diff d;
	struct sid_error err;
	uint64_t moved, stale;

	NEED_STORE();
	m = default_model();
	r = reg_open();
	store_off_codes(r, m, "a", 300, x, 5);
	sid_registry_events_take(r, &ev);
	ck_assert_int_eq(sid_registry_reassign_all(r, SID_TOWER_ITEM, m, SID_REG_PG_GROUP_IDS, NULL,
						   NULL, NULL, &d, &moved, &stale, &err),
			 0);
	ck_assert_uint_eq(moved, 300);
	sid_registry_events_take(r, &ev);
	ck_assert_uint_eq(ev.global_locks + ev.lock_table_full, 0);
	store_off_codes(r, m, "b", 300, x, 6);
	ck_assert_int_eq(sid_registry_reassign_all(r, SID_TOWER_ITEM, m, 1000, NULL, NULL, NULL, &d,
						   &moved, &stale, &err),
			 0);
	ck_assert_uint_eq(moved, 300);
	sid_registry_events_take(r, &ev);
	if (g_pg)
		ck_assert_uint_ge(ev.global_locks, 1);
	else
		ck_assert_uint_eq(ev.global_locks, 0);
	sid_model_unref(m);
	sid_registry_close(r);
}
END_TEST

/* ---- export and import ---- */

static char *slurp(const char *path)
{
	FILE *f = fopen(path, "rb");
	long n;
	char *s;
	ck_assert_ptr_nonnull(f);
	fseek(f, 0, SEEK_END);
	n = ftell(f);
	rewind(f);
	s = calloc(1, n + 1);
	ck_assert_int_eq(fread(s, 1, n, f), n);
	fclose(f);
	return s;
}

struct conflicts {
	int n;
	long line[8];
	char msg[8][600];
};

static void on_conflict(long line, const char *msg, void *ctx)
{
	struct conflicts *c = ctx;
	if (c->n < 8) {
		c->line[c->n] = line;
		snprintf(c->msg[c->n], sizeof(c->msg[0]), "%s", msg);
	}
	c->n++;
}

static void export_to(struct sid_registry *r, enum sid_reg_format fmt, const char *path)
{
	struct sid_error err;
	FILE *f = fopen(path, "w");
	ck_assert_ptr_nonnull(f);
	ck_assert_msg(sid_registry_export(r, -1, fmt, 1, f, &err) == 0, "%s", err.msg);
	fclose(f);
}

static void import_from(struct sid_registry *r, enum sid_reg_format fmt, const char *path,
			struct sid_reg_import_result *res, struct conflicts *c)
{
	struct sid_error err;
	FILE *f = fopen(path, "r");
	ck_assert_ptr_nonnull(f);
	ck_assert_msg(sid_registry_import(r, fmt, f, on_conflict, c, res, &err) == 0,
		      "import %s: %s", path, err.msg);
	fclose(f);
}

static void fill_store(struct sid_registry *r, int n)
{
	struct sid_error err;
	for (int i = 0; i < n; i++) {
		char id[32];
		int32_t c[3] = {i % 4, i % 3, 7};
		float emb[3] = {(float)i, -0.5f, 1e-7f * i};
		struct sid_reg_item it = {id, c, i % 2 ? emb : NULL};
		struct sid_reg_entry e;
		snprintf(id, sizeof(id), "id-%d-\xc3\xa9", i);
		ck_assert_int_eq(sid_registry_assign(r, i % 5 ? SID_TOWER_ITEM : SID_TOWER_USER,
						     &it, 1, 3, 3, "v\"1", 0, &e, &err),
				 0);
	}
}

START_TEST(t_export_import)
{
	struct sid_registry *r, *r2;
	struct sid_reg_import_result res;
	struct conflicts c = {0};
	char p1[300], p2[300], p3[300], p4[300], t2[600];
	char *a, *b;
	struct sid_reg_entry e;
	struct sid_error err;

	NEED_STORE();
	snprintf(p1, sizeof(p1), "%s/a.tsv", tmpdir);
	snprintf(p2, sizeof(p2), "%s/b.tsv", tmpdir);
	snprintf(p3, sizeof(p3), "%s/a.jsonl", tmpdir);
	snprintf(p4, sizeof(p4), "%s/b.jsonl", tmpdir);
	r = reg_open();
	fill_store(r, 40);
	export_to(r, SID_REG_TSV, p1);
	export_to(r, SID_REG_JSONL, p3);

	if (g_pg)
		new_pg_db(t2, sizeof(t2));
	else
		snprintf(t2, sizeof(t2), "%s/two.db", tmpdir);
	ck_assert_int_eq(sid_registry_open(t2, 0, &r2, &err), 0);
	import_from(r2, SID_REG_TSV, p1, &res, &c);
	ck_assert_int_eq(res.added, 40);
	ck_assert_int_eq(res.conflicts, 0);
	export_to(r2, SID_REG_TSV, p2);
	a = slurp(p1);
	b = slurp(p2);
	ck_assert_str_eq(a, b); /* ids, sids, versions, times and embeddings survive */
	free(b);
	/* the JSON lines export of the copy equals the original's */
	export_to(r2, SID_REG_JSONL, p4);
	free(a);
	a = slurp(p3);
	b = slurp(p4);
	ck_assert_str_eq(a, b);
	free(b);
	/* idempotent */
	import_from(r2, SID_REG_JSONL, p3, &res, &c);
	ck_assert_int_eq(res.added, 0);
	ck_assert_int_eq(res.same, 40);
	ck_assert_int_eq(c.n, 0);
	ck_assert_int_eq(sid_registry_get(r2, SID_TOWER_ITEM, "id-1-\xc3\xa9", &e, &err), 0);
	ck_assert_int_eq(e.D, 3);
	ck_assert_str_eq(e.model_version, "v\"1");
	free(a);

	/* conflicts: an id stored with another ID, a sid held by another id */
	{
		FILE *f = fopen(p2, "w");
		ck_assert_ptr_nonnull(f);
		/* id-1: stored 1-1-7-0 */
		fprintf(f, "kind\tid\tsid\tmodel_version\tcreated_at\tupdated_at\tembedding_b64\n");
		fprintf(f, "item\tid-1-\xc3\xa9\t1-1-7-5\tv\t2026-01-02T03:04:05.006Z\t"
			   "2026-01-02T03:04:05.006Z\t\n");
		fprintf(f, "item\tfresh\t1-1-7-0\tv\t2026-01-02T03:04:05.006Z\t"
			   "2026-01-02T03:04:05.006Z\t\n");
		fprintf(f, "item\tfresh2\t3-3-3-3\tv\t2026-01-02T03:04:05.006Z\t"
			   "2026-01-02T03:04:05.006Z\tAACAPwAAAEA=\n");
		fprintf(f, "item\tshort\t3-3-3\tv\t2026-01-02T03:04:05.006Z\t"
			   "2026-01-02T03:04:05.006Z\t\n");
		fclose(f);
		memset(&c, 0, sizeof(c));
		import_from(r2, SID_REG_TSV, p2, &res, &c);
		ck_assert_int_eq(res.added, 1);
		ck_assert_int_eq(res.conflicts, 3);
		ck_assert_int_eq(c.n, 3);
		ck_assert_int_eq(c.line[0], 2);
		ck_assert_ptr_nonnull(strstr(c.msg[0], "stored as 1-1-7-0, the file says 1-1-7-5"));
		ck_assert_int_eq(c.line[1], 3);
		ck_assert_ptr_nonnull(strstr(c.msg[1], "held by id \"id-1-\xc3\xa9\""));
		ck_assert_int_eq(c.line[2], 5);
		/* both numbers (it said "another number") */
		ck_assert_str_eq(c.msg[2], "item id \"short\": sid 3-3-3 has 2 levels, the stored "
					   "item IDs have 3");
		ck_assert_int_eq(sid_registry_get(r2, SID_TOWER_ITEM, "fresh2", &e, &err), 0);
		ck_assert_int_eq(e.suffix, 3);
		ck_assert_int_eq(e.D, 2);
		ck_assert_int_eq(e.created_ms, 1767323045006LL);
		/* the import left 3-3-3-0..2 free: new ids take them, then 4 */
		for (int k = 0; k < 4; k++) {
			char nid[16];
			snprintf(nid, sizeof(nid), "n%d", k);
			assign1(r2, nid, 3, 3, 3, 0, &e);
			ck_assert_int_eq(e.suffix, k < 3 ? k : 4);
		}
		/* the largest suffix a sid holds, then one below it: the check
		 * for a gap computed max + 1 past INT64_MAX (undefined; UBSan,
		 * in make test-sanitize, reported it) */
		f = fopen(p2, "w");
		ck_assert_ptr_nonnull(f);
		fprintf(f, "kind\tid\tsid\tmodel_version\tcreated_at\tupdated_at\t"
			   "embedding_b64\n");
		fprintf(f, "item\tbig\t3-3-3-9223372036854775807\tv\t2026-01-02T03:04:05.006Z\t"
			   "2026-01-02T03:04:05.006Z\t\n");
		fprintf(f, "item\tafter\t3-3-3-9\tv\t2026-01-02T03:04:05.006Z\t"
			   "2026-01-02T03:04:05.006Z\t\n");
		fclose(f);
		memset(&c, 0, sizeof(c));
		import_from(r2, SID_REG_TSV, p2, &res, &c);
		ck_assert_int_eq(res.added, 2);
		assign1(r2, "n4", 3, 3, 3, 0, &e);
		ck_assert_int_eq(e.suffix, 5);
	}
	/* malformed lines: the line number is reported */
	{
		static const char *bad[] = {
		    "item\tx\t1-2-3-0\tv\t2026-01-02T03:04:05.006Z\n",
		    "thing\tx\t1-2-3-0\tv\t2026-01-02T03:04:05.006Z\t2026-01-02T03:04:05.006Z\t\n",
		    "item\tx\t1--3-0\tv\t2026-01-02T03:04:05.006Z\t2026-01-02T03:04:05.006Z\t\n",
		    "item\tx\t1-2-3-0\tv\t2026-13-02T03:04:05.006Z\t2026-01-02T03:04:05.006Z\t\n",
		    "item\tx\t1-2-3-0\tv\t2026-01-02T03:04:05.006Z\t2026-01-02T03:04:05.006Z\t"
		    "AAAA\n",
		    "item\tx\t1-2-3-0\tv\t2026-01-02T03:04:05.006Z\t2026-01-02T03:04:05.006Z\t"
		    "AACAfw==\n", /* +inf */
		};
		for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
			FILE *f = fopen(p2, "w");
			fprintf(f,
				"item\tok%zu\t0-0-1-0\tv\t2026-01-02T03:04:05.006Z\t"
				"2026-01-02T03:04:05.006Z\t\n%s",
				i, bad[i]);
			fclose(f);
			f = fopen(p2, "r");
			ck_assert_msg(sid_registry_import(r2, SID_REG_TSV, f, NULL, NULL, &res,
							  &err) == SID_EFORMAT,
				      "bad line %zu accepted", i);
			ck_assert_int_eq(err.index, 2);
			ck_assert_msg(!strncmp(err.msg, "line 2: ", 8), "%s", err.msg);
			fclose(f);
		}
		{
			FILE *f = fopen(p4, "w");
			fprintf(f, "{\"kind\": \"item\", \"id\": \"q\"}\n");
			fclose(f);
			f = fopen(p4, "r");
			ck_assert_int_eq(
			    sid_registry_import(r2, SID_REG_JSONL, f, NULL, NULL, &res, &err),
			    SID_EFORMAT);
			ck_assert_int_eq(err.index, 1);
			fclose(f);
		}
	}
	sid_registry_close(r2);
	sid_registry_close(r);
}
END_TEST

/* ---- concurrency ---- */

enum { CN = 120, CW = 4, CG = 5 };

struct worker {
	int k;
	struct sid_registry *shared; /* or NULL: open its own handle */
	char sid[CN][SID_REG_SID_MAX];
	int created[CN];
	int rc;
	char msg[SID_ERROR_MSG_MAX];
};

static void *worker_run(void *p)
{
	struct worker *w = p;
	struct sid_registry *r = w->shared;
	struct sid_error err;
	int order[CN];

	if (!r && sid_registry_open(target, 0, &r, &err)) {
		w->rc = err.code;
		snprintf(w->msg, sizeof(w->msg), "%s", err.msg);
		return NULL;
	}
	static const int mult[CW] = {1, 7, 11, 13}; /* coprime with CN */
	for (int i = 0; i < CN; i++)		    /* each worker its own order */
		order[i] = (i * mult[w->k] + 17 * w->k) % CN;
	for (int i = 0; i < CN; i += 8) {
		struct sid_reg_item in[8];
		struct sid_reg_entry out[8];
		char ids[8][16];
		int32_t codes[8][3];
		for (int j = 0; j < 8; j++) {
			int id = order[i + j];
			snprintf(ids[j], sizeof(ids[j]), "c%d", id);
			codes[j][0] = id % CG; /* 24 ids per codes tuple */
			codes[j][1] = 3;
			codes[j][2] = 3;
			in[j] = (struct sid_reg_item){ids[j], codes[j], NULL};
		}
		if (sid_registry_assign(r, SID_TOWER_ITEM, in, 8, 3, 0, "v", 0, out, &err)) {
			w->rc = err.code;
			snprintf(w->msg, sizeof(w->msg), "%s", err.msg);
			break;
		}
		for (int j = 0; j < 8; j++) {
			sidstr(&out[j], w->sid[order[i + j]]);
			w->created[order[i + j]] = out[j].created;
		}
	}
	if (!w->shared)
		sid_registry_close(r);
	return NULL;
}

/* Every id one sid, the same in every worker; no sid twice; dense suffixes;
 * each id created exactly once. */
static void check_workers(struct worker *w, int nw)
{
	static int seen[CG][CN / CG];
	memset(seen, 0, sizeof(seen));
	for (int i = 0; i < CN; i++) {
		int32_t c[SID_MAX_LEVELS];
		int L, created = 0;
		int64_t s;
		for (int k = 0; k < nw; k++) {
			ck_assert_str_eq(w[k].sid[i], w[0].sid[i]);
			created += w[k].created[i];
		}
		ck_assert_int_eq(created, 1);
		ck_assert_int_eq(sid_reg_sid_parse(w[0].sid[i], c, &L, &s, NULL), 0);
		ck_assert_int_eq(c[0], i % CG);
		ck_assert_int_lt(s, CN / CG);
		ck_assert_msg(!seen[c[0]][s], "sid %s given twice", w[0].sid[i]);
		seen[c[0]][s] = 1;
	}
}

static void run_threads(int shared)
{
	static struct worker w[CW];
	pthread_t th[CW];
	struct sid_registry *r = NULL;

	if (shared)
		r = reg_open();
	else /* create the schema first so workers race on assigns, not on creation */
		sid_registry_close(reg_open());
	memset(w, 0, sizeof(w));
	for (int k = 0; k < CW; k++) {
		w[k].k = k;
		w[k].shared = r;
		ck_assert_int_eq(pthread_create(&th[k], NULL, worker_run, &w[k]), 0);
	}
	for (int k = 0; k < CW; k++) {
		pthread_join(th[k], NULL);
		ck_assert_msg(w[k].rc == 0, "worker %d: %s", k, w[k].msg);
	}
	check_workers(w, CW);
	sid_registry_close(r);
}

START_TEST(t_threads_own_handles)
{
	NEED_STORE();
	run_threads(0);
}
END_TEST

/* What a handle reports for metrics (sid_registry_events_take): a group of
 * more ids than PostgreSQL's per-transaction lock budget runs under the
 * global lock, once; SQLite never locks keys; taking resets the counts. */
START_TEST(t_events)
{
	enum { N = SID_REG_PG_GROUP_IDS + 50 };
	static char ids[N][16];
	static int32_t codes[N][3];
	struct sid_reg_item it[N];
	static struct sid_reg_entry out[N];
	struct sid_reg_events ev;
	struct sid_error err;
	struct sid_registry *r;

	NEED_STORE();
	r = reg_open();
	for (int i = 0; i < N; i++) {
		snprintf(ids[i], sizeof(ids[i]), "ev%03d", i);
		codes[i][0] = i % 7, codes[i][1] = i % 5, codes[i][2] = i;
		it[i] = (struct sid_reg_item){ids[i], codes[i], NULL};
	}
	assign1(r, "small", 1, 2, 3, 0, &out[0]);
	sid_registry_events_take(r, &ev);
	ck_assert_uint_eq(ev.global_locks + ev.lock_table_full + ev.retries, 0);
	ck_assert_int_eq(sid_registry_assign(r, SID_TOWER_ITEM, it, N, 3, 0, "v", 0, out, &err), 0);
	sid_registry_events_take(r, &ev);
	ck_assert_uint_eq(ev.global_locks, g_pg ? 1 : 0);
	ck_assert_uint_eq(ev.lock_table_full + ev.retries, 0);
	sid_registry_events_take(r, &ev);
	ck_assert_uint_eq(ev.global_locks + ev.lock_table_full + ev.retries, 0);
	sid_registry_close(r);
}
END_TEST

START_TEST(t_threads_shared_handle)
{
	NEED_STORE();
	run_threads(1);
}
END_TEST

START_TEST(t_processes)
{
	static struct worker w[CW];
	pid_t pid[CW];

	NEED_STORE();
	memset(w, 0, sizeof(w));
	for (int k = 0; k < CW; k++) {
		pid[k] = fork();
		ck_assert_int_ge(pid[k], 0);
		if (pid[k] == 0) {
			char path[300];
			FILE *f;
			w[k].k = k;
			worker_run(&w[k]);
			snprintf(path, sizeof(path), "%s/w%d", tmpdir, k);
			f = fopen(path, "wb");
			if (!f || fwrite(&w[k], sizeof(w[k]), 1, f) != 1)
				_exit(3);
			fclose(f);
			_exit(0);
		}
	}
	for (int k = 0; k < CW; k++) {
		int st;
		char path[300];
		FILE *f;
		ck_assert_int_eq(waitpid(pid[k], &st, 0), pid[k]);
		ck_assert(WIFEXITED(st) && WEXITSTATUS(st) == 0);
		snprintf(path, sizeof(path), "%s/w%d", tmpdir, k);
		f = fopen(path, "rb");
		ck_assert_ptr_nonnull(f);
		ck_assert_int_eq(fread(&w[k], sizeof(w[k]), 1, f), 1);
		fclose(f);
		ck_assert_msg(w[k].rc == 0, "process %d: %s", k, w[k].msg);
	}
	check_workers(w, CW);
	{
		struct sid_registry *r = reg_open();
		struct sid_reg_stats st;
		struct sid_error err;
		ck_assert_int_eq(sid_registry_stats(r, SID_TOWER_ITEM, &st, &err), 0);
		ck_assert_int_eq(st.items, CN);
		ck_assert_int_eq(st.prefixes[2], CG);
		ck_assert_int_eq(st.max_suffix, CN / CG - 1);
		sid_registry_close(r);
	}
}
END_TEST

/* ---- durability: a child assigning one id at a time, killed with SIGKILL ---- */

START_TEST(t_sigkill)
{
	int fd[2];
	pid_t pid;
	char buf[65536];

	NEED_STORE();
	sid_registry_close(reg_open());
	ck_assert_int_eq(pipe(fd), 0);
	pid = fork();
	ck_assert_int_ge(pid, 0);
	if (pid == 0) {
		struct sid_registry *r;
		struct sid_error err;
		close(fd[0]);
		if (sid_registry_open(target, 0, &r, &err))
			_exit(3);
		for (int i = 0;; i++) {
			char id[32], line[300], s[SID_REG_SID_MAX];
			int32_t c[3] = {i % 3, 1, 1};
			struct sid_reg_item it = {id, c, NULL};
			struct sid_reg_entry e;
			snprintf(id, sizeof(id), "k%d", i);
			if (sid_registry_assign(r, SID_TOWER_ITEM, &it, 1, 3, 0, "v", 0, &e, &err))
				_exit(4);
			sidstr(&e, s);
			snprintf(line, sizeof(line), "%s %s\n", id, s);
			if (write(fd[1], line, strlen(line)) < 0)
				_exit(5);
		}
	}
	close(fd[1]);
	kill_after_lines(fd[0], pid, 40, buf, sizeof(buf));
	{
		struct sid_registry *r = reg_open();
		struct sid_reg_stats st;
		struct sid_error err;
		char *save = NULL, *line;
		int n = 0;
		for (line = strtok_r(buf, "\n", &save); line; line = strtok_r(NULL, "\n", &save)) {
			char *sp = strchr(line, ' '), s[SID_REG_SID_MAX];
			struct sid_reg_entry e;
			ck_assert_ptr_nonnull(sp);
			*sp = '\0';
			ck_assert_msg(sid_registry_get(r, SID_TOWER_ITEM, line, &e, &err) == 0,
				      "acknowledged %s lost: %s", line, err.msg);
			sidstr(&e, s);
			ck_assert_str_eq(s, sp + 1);
			n++;
		}
		ck_assert_int_ge(n, 40);
		/* nothing duplicated: suffixes dense per codes group */
		ck_assert_int_eq(sid_registry_stats(r, SID_TOWER_ITEM, &st, &err), 0);
		ck_assert_int_ge(st.items, (uint64_t)n);
		ck_assert_int_le(st.items, (uint64_t)n + 1); /* the one in flight may be there */
		ck_assert_int_eq(st.prefixes[2], 3);
		ck_assert_int_eq(st.max_suffix, ((int64_t)st.items - 1) / 3);
		sid_registry_close(r);
	}
}
END_TEST

/* ---- SQLite files ---- */

static void write_file(const char *path, const void *buf, size_t len, long offset)
{
	int fd = open(path, O_WRONLY | O_CREAT, 0644);
	ck_assert_int_ge(fd, 0);
	ck_assert_int_eq(pwrite(fd, buf, len, offset), (ssize_t)len);
	close(fd);
}

static void expect_open_fails(const char *path, int code, const char *needle)
{
	struct sid_registry *r = NULL;
	struct sid_error err;
	sid_error_clear(&err);
	ck_assert_int_eq(sid_registry_open(path, 0, &r, &err), code);
	ck_assert_ptr_null(r);
	ck_assert_msg(strstr(err.msg, path), "message does not name %s: %s", path, err.msg);
	ck_assert_msg(strstr(err.msg, needle), "want \"%s\" in: %s", needle, err.msg);
}

/* Write @version as the SQLite store @path's schema_version. */
static void sqlite_schema_set(const char *path, const char *version)
{
	char sql[120];
	sqlite3 *db;

	snprintf(sql, sizeof(sql),
		 "UPDATE semid_meta SET value = '%s' WHERE key = 'schema_version'", version);
	ck_assert_int_eq(sqlite3_open(path, &db), SQLITE_OK);
	ck_assert_int_eq(sqlite3_exec(db, sql, NULL, NULL, NULL), SQLITE_OK);
	sqlite3_close(db);
}

START_TEST(t_sqlite_corrupt)
{
	char garbage[8192];
	struct sid_registry *r;
	struct sid_reg_entry e;
	struct sid_error err;
	sqlite3 *db;
	int rc;

	for (size_t i = 0; i < sizeof(garbage); i++)
		garbage[i] = (char)('a' + i * 7 % 26);
	write_file(target, garbage, sizeof(garbage), 0);
	expect_open_fails(target, SID_EFORMAT, "not a SQLite database or is corrupt");
	unlink(target);

	/* another application's database */
	ck_assert_int_eq(sqlite3_open(target, &db), SQLITE_OK);
	ck_assert_int_eq(sqlite3_exec(db, "CREATE TABLE t (x)", NULL, NULL, NULL), SQLITE_OK);
	sqlite3_close(db);
	expect_open_fails(target, SID_EFORMAT, "not a semid registry");
	unlink(target);

	/* a newer schema */
	sid_registry_close(reg_open());
	sqlite_schema_set(target, "99");
	expect_open_fails(target, SID_EFORMAT, "schema version 99");
	unlink(target);

	/* a damaged schema: the registry's uniqueness rests on its indexes */
	{
		static const char *const drops[][2] = {
		    {"DROP INDEX semid_assignment_sid", "the unique index semid_assignment_sid"},
		    {"DROP INDEX semid_assignment_id", "the unique index semid_assignment_id"},
		    {"DROP INDEX semid_assignment_id; CREATE INDEX semid_assignment_id ON "
		     "semid_assignment (kind, id)",
		     "the unique index semid_assignment_id"},
		    {"DROP TABLE semid_embedding", "the table semid_embedding"},
		};
		for (size_t k = 0; k < sizeof(drops) / sizeof(drops[0]); k++) {
			r = reg_open();
			fill_store(r, 20);
			sid_registry_close(r);
			ck_assert_int_eq(sqlite3_open(target, &db), SQLITE_OK);
			ck_assert_int_eq(sqlite3_exec(db, drops[k][0], NULL, NULL, NULL),
					 SQLITE_OK);
			sqlite3_close(db);
			expect_open_fails(target, SID_EFORMAT, drops[k][1]);
			unlink(target);
		}
	}

	/* a schema_version that is no version number: never migrated from */
	for (int k = 0; k < 2; k++) {
		sid_registry_close(reg_open());
		sqlite_schema_set(target, k ? "abc" : "-1");
		expect_open_fails(target, SID_EFORMAT, "schema_version is not a version number");
		unlink(target);
	}

	/* a registry whose pages were overwritten */
	r = reg_open();
	fill_store(r, 200);
	sid_registry_close(r);
	memset(garbage, 0xab, sizeof(garbage));
	write_file(target, garbage, sizeof(garbage), 4096);
	r = NULL;
	rc = sid_registry_open(target, 0, &r, &err);
	if (rc == 0) {
		rc = sid_registry_get(r, SID_TOWER_ITEM, "id-1-\xc3\xa9", &e, &err);
		if (rc == 0) {
			struct sid_reg_stats st;
			rc = sid_registry_stats(r, SID_TOWER_ITEM, &st, &err);
		}
		sid_registry_close(r);
	}
	ck_assert_int_eq(rc, SID_EFORMAT);
	ck_assert_msg(strstr(err.msg, target), "%s", err.msg);
}
END_TEST

/* Open @path as user nobody in a child and assign an id, or with
 * SID_REG_READONLY look up "old"; returns the code and the message (the sid
 * found, on a successful lookup). */
static int open_as_nobody(const char *path, unsigned flags, char *msg, size_t len)
{
	int fd[2], code = 0;
	pid_t pid;
	ssize_t n;

	ck_assert_int_eq(pipe(fd), 0);
	pid = fork();
	ck_assert_int_ge(pid, 0);
	if (pid == 0) {
		struct sid_registry *r;
		struct sid_error err;
		char out[SID_ERROR_MSG_MAX + 16];
		close(fd[0]);
		if (geteuid() == 0 && (setgid(65534) || setuid(65534)))
			_exit(3);
		sid_error_clear(&err);
		code = sid_registry_open(path, flags, &r, &err);
		if (!code && (flags & SID_REG_READONLY)) {
			struct sid_reg_entry e;
			code = sid_registry_get(r, SID_TOWER_ITEM, "old", &e, &err);
			if (!code)
				sidstr(&e, err.msg);
			sid_registry_close(r);
		} else if (!code) {
			int32_t c[3] = {1, 1, 1};
			struct sid_reg_item it = {"x", c, NULL};
			struct sid_reg_entry e;
			code =
			    sid_registry_assign(r, SID_TOWER_ITEM, &it, 1, 3, 0, "v", 0, &e, &err);
			sid_registry_close(r);
		}
		snprintf(out, sizeof(out), "%d %s", code, err.msg);
		if (write(fd[1], out, strlen(out)) < 0)
			_exit(4);
		_exit(0);
	}
	close(fd[1]);
	n = read(fd[0], msg, len - 1);
	close(fd[0]);
	waitpid(pid, NULL, 0);
	ck_assert_int_gt(n, 0);
	msg[n] = '\0';
	code = atoi(msg);
	memmove(msg, strchr(msg, ' ') + 1, strlen(strchr(msg, ' ')));
	return code;
}

/* Leave a commit of @id in @path's -wal, as a writer killed would: a child
 * assigns it and exits without closing.  Returns its exit status (0: done). */
static int commit_in_wal(const char *path, const char *id)
{
	struct sid_reg_entry e;
	int status = -1;
	pid_t pid = fork();

	if (pid == 0) {
		struct sid_registry *w;
		struct sid_error err;
		if (sid_registry_open(path, 0, &w, &err))
			_exit(1);
		assign1(w, id, 4, 5, 6, 0, &e);
		_exit(0); /* no close: the commit stays in the WAL */
	}
	if (pid < 0 || waitpid(pid, &status, 0) != pid)
		return -1;
	return status;
}

START_TEST(t_sqlite_readonly)
{
	char msg[SID_ERROR_MSG_MAX + 16];
	int code;

	struct sid_reg_entry e;
	struct sid_registry *r;

	chmod(tmpdir, 0755);
	r = reg_open();
	assign1(r, "old", 1, 2, 3, 0, &e);
	sid_registry_close(r);
	/* a read-only file */
	ck_assert_int_eq(chmod(target, 0444), 0);
	code = open_as_nobody(target, 0, msg, sizeof(msg));
	ck_assert_msg(code == SID_EIO, "code %d: %s", code, msg);
	ck_assert_msg(strstr(msg, target) && strstr(msg, "read-only"), "%s", msg);
	/* not only assign writes: the message is for delete too */
	ck_assert_msg(strstr(msg, "delete"), "%s", msg);
	/* a writable file in a read-only directory (WAL needs its side files) */
	ck_assert_int_eq(chmod(target, 0666), 0);
	ck_assert_int_eq(chmod(tmpdir, 0555), 0);
	code = open_as_nobody(target, 0, msg, sizeof(msg));
	ck_assert_msg(code == SID_EIO, "code %d: %s", code, msg);
	ck_assert_msg(strstr(msg, target), "%s", msg);
	/* which is the directory's fault, not the file's */
	ck_assert_msg(strstr(msg, "directory") && strstr(msg, "must be writable") &&
			  !strstr(msg, "file is read-only"),
		      "%s", msg);
	/* ... where lookups still work: no -shm can be made there, so the file
	 * is read as immutable */
	code = open_as_nobody(target, SID_REG_READONLY, msg, sizeof(msg));
	ck_assert_msg(code == 0, "code %d: %s", code, msg);
	ck_assert_str_eq(msg, "1-2-3-0");
	/* unless a WAL with commits lies beside it (a writer killed, its -shm
	 * gone): reading the file alone would miss them */
	chmod(tmpdir, 0755);
	ck_assert_int_eq(commit_in_wal(target, "late"), 0);
	{
		char shm[sizeof(target) + 8];
		snprintf(shm, sizeof(shm), "%s-shm", target);
		ck_assert_int_eq(unlink(shm), 0);
	}
	ck_assert_int_eq(chmod(tmpdir, 0555), 0);
	code = open_as_nobody(target, SID_REG_READONLY, msg, sizeof(msg));
	chmod(tmpdir, 0755);
	ck_assert_msg(code == SID_EIO, "code %d: %s", code, msg);
	ck_assert_msg(strstr(msg, "-wal") && strstr(msg, "not yet in the file"), "%s", msg);
}
END_TEST

/* A read-only handle that fell back to an immutable read (no -shm could be
 * made) sees later commits once the directory is writable again: it goes
 * back to a normal connection within a second. */
START_TEST(t_sqlite_immutable_recovers)
{
	struct sid_registry *r = reg_open();
	struct sid_reg_entry e;
	int go[2], done[2], status;
	char buf[SID_ERROR_MSG_MAX + 16] = "";
	ssize_t n;
	pid_t pid;

	assign1(r, "old", 1, 2, 3, 0, &e);
	sid_registry_close(r);
	ck_assert_int_eq(chmod(target, 0666), 0); /* its -wal and -shm get the same mode */
	ck_assert_int_eq(chmod(tmpdir, 0555), 0);
	ck_assert_int_eq(pipe(go), 0);
	ck_assert_int_eq(pipe(done), 0);
	pid = fork();
	ck_assert_int_ge(pid, 0);
	if (pid == 0) {
		struct sid_registry *ro;
		struct sid_error err;
		char sid[SID_REG_SID_MAX], out[sizeof(buf)], c;
		int rc;
		if (geteuid() == 0 && (setgid(65534) || setuid(65534)))
			_exit(3);
		rc = sid_registry_open(target, SID_REG_READONLY, &ro, &err);
		if (!rc)
			rc = sid_registry_get(ro, SID_TOWER_ITEM, "old", &e, &err);
		snprintf(out, sizeof(out), "%d %s", rc, rc ? err.msg : "");
		if (write(done[1], out, strlen(out)) < 0 || rc)
			_exit(4);
		if (read(go[0], &c, 1) != 1) /* the parent wrote "fresh" */
			_exit(5);
		usleep(1100 * 1000);
		rc = sid_registry_get(ro, SID_TOWER_ITEM, "fresh", &e, &err);
		if (!rc)
			sidstr(&e, sid);
		snprintf(out, sizeof(out), "%d %s", rc, rc ? err.msg : sid);
		if (write(done[1], out, strlen(out)) < 0)
			_exit(6);
		sid_registry_close(ro);
		_exit(0);
	}
	n = read(done[0], buf, sizeof(buf) - 1);
	ck_assert_int_gt(n, 0);
	buf[n] = '\0';
	ck_assert_msg(!strcmp(buf, "0 "), "immutable open as nobody: %s", buf);
	ck_assert_int_eq(chmod(tmpdir, 0777), 0); /* remounted read-write */
	r = reg_open();
	assign1(r, "fresh", 4, 5, 6, 0, &e);
	ck_assert_int_eq(write(go[1], "x", 1), 1);
	n = read(done[0], buf, sizeof(buf) - 1);
	ck_assert_int_gt(n, 0);
	buf[n] = '\0';
	ck_assert_int_eq(waitpid(pid, &status, 0), pid);
	sid_registry_close(r);
	chmod(tmpdir, 0755);
	ck_assert_msg(!strcmp(buf, "0 4-5-6-0"), "after the directory became writable: %s", buf);
	ck_assert_int_eq(status, 0);
}
END_TEST

/* Run @fn in a child process (the limits it sets stay there) and return in
 * @out what it wrote to the fd it is given, NUL-terminated. */
static void run_child(void (*fn)(int fd), char *out, size_t len)
{
	size_t n = 0;
	ssize_t got;
	int fd[2], status;
	pid_t pid;

	ck_assert_int_eq(pipe(fd), 0);
	pid = fork();
	ck_assert_int_ge(pid, 0);
	if (pid == 0) {
		close(fd[0]);
		fn(fd[1]);
		_exit(0);
	}
	close(fd[1]);
	while (n + 1 < len && (got = read(fd[0], out + n, len - 1 - n)) > 0)
		n += (size_t)got;
	out[n] = '\0';
	close(fd[0]);
	ck_assert_int_eq(waitpid(pid, &status, 0), pid);
	ck_assert_msg(WIFEXITED(status) && WEXITSTATUS(status) == 0, "child: status %d; wrote: %s",
		      status, out);
}

/* The lowest file descriptor free: with RLIMIT_NOFILE there, no file opens. */
static rlim_t fd_free(void)
{
	int fd = dup(0);
	close(fd);
	return fd < 0 ? 0 : (rlim_t)fd;
}

/* Opens the store, read-only then for writing, under ever higher limits on
 * file descriptors, from none left up: one line a failure, "<flags>
 * <code> <message>"; then a backup with no descriptor left, "backup <code>
 * <message>". */
static void open_under_fd_limits(int out)
{
	static const unsigned modes[] = {SID_REG_READONLY, 0};
	struct rlimit old, rl;
	struct sid_error err;
	struct sid_registry *r;
	char dest[sizeof(target) + 16];
	rlim_t base = fd_free();
	int rc;

	if (getrlimit(RLIMIT_NOFILE, &old))
		_exit(2);
	for (size_t m = 0; m < 2; m++)
		for (rlim_t k = 0; k < 12; k++) {
			rl = old;
			rl.rlim_cur = base + k;
			if (setrlimit(RLIMIT_NOFILE, &rl))
				_exit(3);
			sid_error_clear(&err);
			r = NULL;
			rc = sid_registry_open(target, modes[m], &r, &err);
			if (!rc && modes[m]) {
				struct sid_reg_entry e;
				rc = sid_registry_get(r, SID_TOWER_ITEM, "old", &e, &err);
			} else if (!rc) {
				int32_t c[3] = {1, 1, 1};
				struct sid_reg_item it = {"x", c, NULL};
				struct sid_reg_entry e;
				rc = sid_registry_assign(r, SID_TOWER_ITEM, &it, 1, 3, 0, "v", 0,
							 &e, &err);
			}
			sid_registry_close(r);
			setrlimit(RLIMIT_NOFILE, &old);
			if (rc)
				dprintf(out, "%u %d %s\n", modes[m], rc, err.msg);
		}
	snprintf(dest, sizeof(dest), "%s.backup", target);
	if (sid_registry_open(target, SID_REG_READONLY, &r, &err))
		_exit(4);
	rl = old;
	rl.rlim_cur = fd_free();
	if (setrlimit(RLIMIT_NOFILE, &rl))
		_exit(5);
	rc = sid_registry_backup(r, dest, NULL, NULL, NULL, &err);
	setrlimit(RLIMIT_NOFILE, &old);
	dprintf(out, "backup %d %s\n", rc, rc ? err.msg : "");
	sid_registry_close(r);
}

/* Out of file descriptors (EMFILE, a low `ulimit -n`), an open says so: it
 * was taken for a directory that must be writable, and a reader with a -wal
 * beside the file for a read-only directory, and a backup said "unable to
 * open database file" with no cause.  The store's directory is writable
 * here and a -wal holds commits (a writer that is still running). */
START_TEST(t_sqlite_fd_limit)
{
	char out[16384], *line, *save = NULL;
	int ro = 0, rw = 0, backup = 0;

	ck_assert_int_eq(commit_in_wal(target, "old"), 0);
	run_child(open_under_fd_limits, out, sizeof(out));
	for (line = strtok_r(out, "\n", &save); line; line = strtok_r(NULL, "\n", &save)) {
		ck_assert_msg(strstr(line, target), "does not name the store: %s", line);
		ck_assert_msg(strstr(line, "Too many open files"), "no cause: %s", line);
		ck_assert_msg(!strstr(line, "writable") && !strstr(line, "cannot write") &&
				  !strstr(line, "read-only"),
			      "blames the directory: %s", line);
		if (!strncmp(line, "backup ", 7)) {
			ck_assert_msg(strstr(line, ".backup"), "does not name the copy: %s", line);
			backup++;
		} else {
			*(line[0] == '0' ? &rw : &ro) += 1;
		}
	}
	/* some limits are too low, and higher ones are enough */
	ck_assert_msg(ro >= 1 && ro < 12, "%d read-only opens failed", ro);
	ck_assert_msg(rw >= 1 && rw < 12, "%d opens for writing failed", rw);
	ck_assert_int_eq(backup, 1);
}
END_TEST

/* What opening @path gives: the code and the message, or with
 * SID_REG_READONLY and success the result of a lookup of "old". */
static int open_msg(const char *path, unsigned flags, char *msg, size_t len)
{
	struct sid_registry *r = NULL;
	struct sid_reg_entry e;
	struct sid_error err;
	int rc;

	sid_error_clear(&err);
	rc = sid_registry_open(path, flags, &r, &err);
	if (!rc && (flags & SID_REG_READONLY))
		rc = sid_registry_get(r, SID_TOWER_ITEM, "old", &e, &err);
	sid_registry_close(r);
	snprintf(msg, len, "%s", rc ? err.msg : "");
	return rc;
}

/* A store on a read-only file system (the file's mode lets it be written):
 * a writer is told the file system is read-only, not that the file is;
 * a reader reads a file closed cleanly, and one whose -wal holds commits is
 * refused, also naming the read-only file system (not a directory this
 * process cannot write); a file to be created there too.  A tmpfs of its
 * own, remounted read-only: root only. */
START_TEST(t_sqlite_read_only_fs)
{
	char dir[sizeof(tmpdir) + 8], a[sizeof(dir) + 8], b[sizeof(dir) + 8], c[sizeof(dir) + 8];
	char m_w[SID_ERROR_MSG_MAX], m_r[SID_ERROR_MSG_MAX], m_wal[SID_ERROR_MSG_MAX],
	    m_new[SID_ERROR_MSG_MAX];
	int rc_w, rc_r, rc_wal, rc_new, status;
	struct sid_reg_entry e;
	struct sid_registry *r;
	struct sid_error err;

	if (geteuid() != 0)
		CHECK_SKIP("not root (mounts a tmpfs)");
	snprintf(dir, sizeof(dir), "%s/ro", tmpdir);
	ck_assert_int_eq(mkdir(dir, 0755), 0);
	if (mount("tmpfs", dir, "tmpfs", 0, "size=1m,mode=0755"))
		CHECK_SKIP("cannot mount a tmpfs: %s", strerror(errno));
	snprintf(a, sizeof(a), "%s/a.db", dir);
	snprintf(b, sizeof(b), "%s/b.db", dir);
	snprintf(c, sizeof(c), "%s/c.db", dir);
	rc_w = sid_registry_open(a, 0, &r, &err);
	if (!rc_w) {
		assign1(r, "old", 1, 2, 3, 0, &e);
		sid_registry_close(r);
	}
	status = commit_in_wal(b, "old");
	strcat(strcpy(m_wal, b), "-shm");
	if (rc_w || status || unlink(m_wal) ||
	    mount("tmpfs", dir, "tmpfs", MS_REMOUNT | MS_RDONLY, "size=1m,mode=0755")) {
		umount2(dir, MNT_DETACH);
		ck_abort_msg("setting up the read-only file system failed: %s",
			     rc_w ? err.msg : strerror(errno));
	}
	rc_w = open_msg(a, 0, m_w, sizeof(m_w));
	rc_r = open_msg(a, SID_REG_READONLY, m_r, sizeof(m_r));
	rc_wal = open_msg(b, SID_REG_READONLY, m_wal, sizeof(m_wal));
	rc_new = open_msg(c, 0, m_new, sizeof(m_new));
	ck_assert_int_eq(umount2(dir, MNT_DETACH), 0);

	ck_assert_msg(rc_w == SID_EIO, "writer: %d %s", rc_w, m_w);
	ck_assert_msg(strstr(m_w, a) && strstr(m_w, "read-only file system"), "writer: %s", m_w);
	ck_assert_msg(rc_r == 0, "reader: %d %s", rc_r, m_r);
	ck_assert_msg(rc_wal == SID_EIO, "reader, -wal: %d %s", rc_wal, m_wal);
	ck_assert_msg(strstr(m_wal, b) && strstr(m_wal, "-wal") &&
			  strstr(m_wal, "read-only file system") && !strstr(m_wal, "directory"),
		      "reader, -wal: %s", m_wal);
	ck_assert_msg(rc_new == SID_EIO, "new file: %d %s", rc_new, m_new);
	ck_assert_msg(strstr(m_new, c) && strstr(m_new, "read-only file system"), "new file: %s",
		      m_new);
}
END_TEST

START_TEST(t_sqlite_readonly_flag)
{
	struct sid_registry *r = reg_open();
	struct sid_reg_entry e;
	struct sid_error err;
	int32_t c[3] = {1, 1, 1};
	struct sid_reg_item it = {"new", c, NULL};
	FILE *f = tmpfile();

	assign1(r, "old", 1, 1, 1, 0, &e);
	sid_registry_close(r);
	ck_assert_int_eq(sid_registry_open(target, SID_REG_READONLY, &r, &err), 0);
	ck_assert_int_eq(sid_registry_get(r, SID_TOWER_ITEM, "old", &e, &err), 0);
	ck_assert_int_eq(sid_registry_assign(r, SID_TOWER_ITEM, &it, 1, 3, 0, "v", 0, &e, &err),
			 SID_EUNAVAIL);
	ck_assert_ptr_nonnull(strstr(err.msg, "read-only"));
	ck_assert_ptr_nonnull(strstr(err.msg, "not assigned yet"));
	/* known ids are answered from reads, unchanged; a reassign needs a write */
	{
		int32_t other[3] = {7, 7, 7};
		struct sid_reg_item known[1] = {{"old", other, NULL}};
		char s[SID_REG_SID_MAX];
		ck_assert_int_eq(
		    sid_registry_assign(r, SID_TOWER_ITEM, known, 1, 3, 0, "v", 0, &e, &err), 0);
		sidstr(&e, s);
		ck_assert_str_eq(s, "1-1-1-0");
		ck_assert_int_eq(e.created, 0);
		ck_assert_int_eq(sid_registry_assign(r, SID_TOWER_ITEM, known, 1, 3, 0, "v",
						     SID_REG_REASSIGN, &e, &err),
				 SID_EUNAVAIL);
		ck_assert_ptr_nonnull(strstr(err.msg, "read-only"));
	}
	{
		struct sid_reg_import_result res;
		ck_assert_int_eq(sid_registry_import(r, SID_REG_TSV, f, NULL, NULL, &res, &err),
				 SID_EINVAL);
	}
	fclose(f);
	sid_registry_close(r);
	/* a missing file read-only: nothing to read */
	unlink(target);
	r = NULL;
	ck_assert_int_eq(sid_registry_open(target, SID_REG_READONLY, &r, &err), SID_ENOTFOUND);
	ck_assert_msg(strstr(err.msg, target) && strstr(err.msg, "no such file"), "%s", err.msg);
	ck_assert_ptr_null(r);
}
END_TEST

/* The names in tmpdir, sorted, space-separated, into @buf. */
static const char *dir_names(char *buf, size_t len)
{
	char cmd[700];
	FILE *f;
	size_t n;

	snprintf(cmd, sizeof(cmd), "ls -A %s | tr '\\n' ' '", tmpdir);
	f = popen(cmd, "r");
	ck_assert_ptr_nonnull(f);
	n = fread(buf, 1, len - 1, f);
	buf[n] = '\0';
	pclose(f);
	return buf;
}

/* The bytes of @path, their count in *@n (the caller frees them). */
static char *file_bytes(const char *path, size_t *n)
{
	struct stat st;
	char *buf;
	int fd = open(path, O_RDONLY);

	ck_assert_int_ge(fd, 0);
	ck_assert_int_eq(fstat(fd, &st), 0);
	buf = malloc((size_t)st.st_size + 1);
	ck_assert_ptr_nonnull(buf);
	ck_assert_int_eq(pread(fd, buf, (size_t)st.st_size, 0), st.st_size);
	close(fd);
	*n = (size_t)st.st_size;
	return buf;
}

/* A writer's open of a database it then refuses (another application's, a
 * semid store of a newer or damaged schema, a backup: rollback-journal
 * files) leaves it as it was: the switch to WAL mode is written in the
 * file's header, and the open made it before looking at the schema, so
 * another application's database was left in WAL mode (its own programs
 * then met a -wal and -shm beside it, or failed where they may not make
 * them).  Nor is a -wal or -shm left beside it, in either mode. */
START_TEST(t_sqlite_refused_untouched)
{
	static const char *const cases[][3] = {
	    /* how the file is made, its journal mode, what the open says */
	    {"CREATE TABLE t (x); INSERT INTO t VALUES (1)", "delete", "not a semid registry"},
	    {"CREATE TABLE t (x); INSERT INTO t VALUES (1)", "wal", "not a semid registry"},
	    {"UPDATE semid_meta SET value = '99' WHERE key = 'schema_version'", "delete",
	     "schema version 99"},
	    {"DROP INDEX semid_assignment_sid", "delete", "semid_assignment_sid"},
	    {"DROP INDEX semid_assignment_sid", "truncate", "semid_assignment_sid"},
	};
	char names[256], sql[700];
	size_t n0, n1;
	char *before, *after;
	sqlite3 *db;

	for (size_t k = 0; k < sizeof(cases) / sizeof(cases[0]); k++) {
		if (strstr(cases[k][0], "semid_"))
			sid_registry_close(reg_open());
		ck_assert_int_eq(sqlite3_open(target, &db), SQLITE_OK);
		snprintf(sql, sizeof(sql), "PRAGMA journal_mode = %s; %s", cases[k][1],
			 cases[k][0]);
		ck_assert_int_eq(sqlite3_exec(db, sql, NULL, NULL, NULL), SQLITE_OK);
		sqlite3_close(db);
		snprintf(sql, sizeof(sql), "%s-journal", target);
		unlink(sql); /* (the empty one truncate mode keeps) */
		ck_assert_str_eq(dir_names(names, sizeof(names)), "reg.db ");
		before = file_bytes(target, &n0);
		expect_open_fails(target, SID_EFORMAT, cases[k][2]);
		after = file_bytes(target, &n1);
		ck_assert_msg(n0 == n1 && !memcmp(before, after, n0),
			      "case %zu (%s): the file was changed (journal mode byte %d -> %d)", k,
			      cases[k][1], n0 > 18 ? before[18] : -1, n1 > 18 ? after[18] : -1);
		ck_assert_str_eq(dir_names(names, sizeof(names)), "reg.db ");
		free(before);
		free(after);
		unlink(target);
	}
}
END_TEST

/* An open that fails after SQLite made the -wal and -shm of a WAL store
 * (the schema is newer or damaged) leaves none that were not there: the
 * owner's read-only open (a connection that may write, whose close, the
 * last, removes them) closed without looking, and left both. */
START_TEST(t_sqlite_failed_open_tidy)
{
	static const char *const cases[][2] = {
	    {"UPDATE semid_meta SET value = '99' WHERE key = 'schema_version'",
	     "schema version 99"},
	    {"DROP INDEX semid_assignment_id", "semid_assignment_id"},
	};
	static const unsigned flags[] = {SID_REG_READONLY, SID_REG_PEEK | SID_REG_READONLY, 0};
	struct sid_registry *r;
	struct sid_error err;
	char names[256];
	sqlite3 *db;

	for (size_t k = 0; k < sizeof(cases) / sizeof(cases[0]); k++) {
		r = reg_open();
		fill_store(r, 5);
		sid_registry_close(r);
		ck_assert_int_eq(sqlite3_open(target, &db), SQLITE_OK);
		ck_assert_int_eq(sqlite3_exec(db, cases[k][0], NULL, NULL, NULL), SQLITE_OK);
		sqlite3_close(db);
		for (size_t f = 0; f < sizeof(flags) / sizeof(flags[0]); f++) {
			ck_assert_str_eq(dir_names(names, sizeof(names)), "reg.db ");
			r = NULL;
			ck_assert_int_eq(sid_registry_open(target, flags[f], &r, &err),
					 SID_EFORMAT);
			ck_assert_msg(strstr(err.msg, cases[k][1]), "%s", err.msg);
			ck_assert_msg(!strcmp(dir_names(names, sizeof(names)), "reg.db "),
				      "case %zu, flags %u: left %s", k, flags[f], names);
		}
		unlink(target);
	}
}
END_TEST

/* The owner's read through a writer's -wal and -shm, closed after the
 * writer: the writer's close, not the last, left both (the read held
 * them), and the read's, the last, being read-only, left them too: a
 * -wal of commits beside a store no process has open, until the next
 * writer.  A read that may write the store closes as the writer would
 * have: the commits copied into the file, both files removed.  Not a
 * peek (it takes no lock a writer could wait for), nor while a writer
 * still has the store open. */
START_TEST(t_sqlite_read_outlives_writer)
{
	struct sid_registry *w = reg_open(), *r, *pk;
	struct sid_reg_entry e;
	struct sid_error err;
	char names[300];

	assign1(w, "old", 1, 2, 3, 0, &e);
	ck_assert_int_eq(sid_registry_open(target, SID_REG_READONLY, &r, &err), 0);
	ck_assert_int_eq(sid_registry_open(target, SID_REG_PEEK | SID_REG_READONLY, &pk, &err), 0);
	assign1(w, "new", 1, 2, 3, 0, &e);
	sid_registry_close(w);
	ck_assert_str_eq(dir_names(names, sizeof(names)), "reg.db reg.db-shm reg.db-wal ");
	ck_assert_int_eq(sid_registry_get(r, SID_TOWER_ITEM, "new", &e, &err), 0);
	sid_registry_close(r); /* the peek still has them open */
	ck_assert_str_eq(dir_names(names, sizeof(names)), "reg.db reg.db-shm reg.db-wal ");
	ck_assert_int_eq(sid_registry_open(target, SID_REG_READONLY, &r, &err), 0);
	sid_registry_close(pk);
	ck_assert_str_eq(dir_names(names, sizeof(names)), "reg.db reg.db-shm reg.db-wal ");
	sid_registry_close(r);
	ck_assert_str_eq(dir_names(names, sizeof(names)), "reg.db ");
	r = reg_open();
	ck_assert_int_eq(sid_registry_get(r, SID_TOWER_ITEM, "new", &e, &err), 0);
	ck_assert_int_eq(e.suffix, 1);
	sid_registry_close(r);
}
END_TEST

/* SID_REG_PEEK reads the store and leaves its directory as it found it: a
 * read-only open made reg.db-wal and reg.db-shm beside a store closed
 * cleanly, and left them. */
START_TEST(t_sqlite_peek)
{
	struct sid_registry *w = reg_open(), *r = NULL;
	struct sid_reg_entry e;
	struct sid_error err;
	char before[256], after[256], cmd[3000];

	assign1(w, "old", 1, 2, 3, 0, &e);
	sid_registry_close(w);
	dir_names(before, sizeof(before));
	ck_assert_str_eq(before, "reg.db ");
	ck_assert_int_eq(sid_registry_open(target, SID_REG_PEEK, &r, &err), 0);
	ck_assert_int_eq(sid_registry_get(r, SID_TOWER_ITEM, "old", &e, &err), 0);
	ck_assert_int_eq(e.codes[2], 3);
	sid_registry_close(r);
	ck_assert_str_eq(dir_names(after, sizeof(after)), before);

	/* beside a writer (a running server): read through its -wal and -shm,
	 * its commits not yet in the file included, and they stay */
	w = reg_open();
	assign1(w, "new", 4, 5, 6, 0, &e);
	dir_names(before, sizeof(before));
	ck_assert_str_eq(before, "reg.db reg.db-shm reg.db-wal ");
	ck_assert_int_eq(sid_registry_open(target, SID_REG_PEEK, &r, &err), 0);
	ck_assert_int_eq(sid_registry_get(r, SID_TOWER_ITEM, "new", &e, &err), 0);
	sid_registry_close(r);
	ck_assert_str_eq(dir_names(after, sizeof(after)), before);
	assign1(w, "newer", 4, 5, 6, 0, &e); /* the writer goes on */

	/* a WAL of commits without its -shm (copied while the writer had it) */
	snprintf(cmd, sizeof(cmd), "cp %s %s/copy.db && cp %s-wal %s/copy.db-wal", target, tmpdir,
		 target, tmpdir);
	ck_assert_int_eq(sh("%s", cmd), 0);
	sid_registry_close(w);
	snprintf(cmd, sizeof(cmd), "%s/copy.db", tmpdir);
	dir_names(before, sizeof(before));
	ck_assert_int_eq(sid_registry_open(cmd, SID_REG_PEEK, &r, &err), SID_EUNAVAIL);
	ck_assert_msg(strstr(err.msg, "holds commits") && strstr(err.msg, "copy.db-shm"), "%s",
		      err.msg);
	ck_assert_ptr_null(r);
	ck_assert_str_eq(dir_names(after, sizeof(after)), before);
	unlink(cmd);
	snprintf(cmd, sizeof(cmd), "%s/copy.db-wal", tmpdir);
	unlink(cmd);

	/* a newer schema: the open's refusal, in its words */
	sqlite_schema_set(target, "99");
	dir_names(before, sizeof(before));
	ck_assert_str_eq(before, "reg.db ");
	ck_assert_int_eq(sid_registry_open(target, SID_REG_PEEK, &r, &err), SID_EFORMAT);
	ck_assert_msg(sid_registry_error_schema_ahead(&err), "%s", err.msg);
	ck_assert_str_eq(dir_names(after, sizeof(after)), before);

	/* none: nothing to read, and nothing made */
	unlink(target);
	ck_assert_int_eq(sid_registry_open(target, SID_REG_PEEK, &r, &err), SID_ENOTFOUND);
	ck_assert_str_eq(dir_names(after, sizeof(after)), "");
}
END_TEST

/* A read-only open (the `semid registry` read commands) leaves the directory
 * as it found it, and still reads what a writer commits meanwhile.  It made
 * reg.db-wal and reg.db-shm beside a store closed cleanly and left them,
 * owned by the reader: another user's then kept the store's owner from
 * opening it. */
START_TEST(t_sqlite_read_leaves_none)
{
	struct sid_registry *w = reg_open(), *r = NULL;
	struct sid_reg_entry e;
	struct sid_error err;
	char before[256], after[256], msg[SID_ERROR_MSG_MAX + 16];
	int code;

	assign1(w, "old", 1, 2, 3, 0, &e);
	sid_registry_close(w);
	ck_assert_str_eq(dir_names(before, sizeof(before)), "reg.db ");
	ck_assert_int_eq(sid_registry_open(target, SID_REG_READONLY, &r, &err), 0);
	ck_assert_int_eq(sid_registry_get(r, SID_TOWER_ITEM, "old", &e, &err), 0);
	sid_registry_close(r);
	ck_assert_str_eq(dir_names(after, sizeof(after)), "reg.db ");
	ck_assert_int_eq(sid_registry_open(target, SID_REG_READONLY, &r, &err), 0);
	ck_assert_int_eq(sid_registry_get(r, SID_TOWER_ITEM, "old", &e, &err), 0);
	/* a writer opens the store while it is read: the reader sees its
	 * commits, and closing first leaves the writer's files to it */
	w = reg_open();
	assign1(w, "new", 4, 5, 6, 0, &e);
	ck_assert_int_eq(sid_registry_get(r, SID_TOWER_ITEM, "new", &e, &err), 0);
	sid_registry_close(r);
	ck_assert_str_eq(dir_names(after, sizeof(after)), "reg.db reg.db-shm reg.db-wal ");
	assign1(w, "newer", 4, 5, 6, 0, &e);
	ck_assert_int_eq(e.suffix, 1);
	/* beside a running writer: read through its -wal and -shm, which stay */
	ck_assert_int_eq(sid_registry_open(target, SID_REG_READONLY, &r, &err), 0);
	ck_assert_int_eq(sid_registry_get(r, SID_TOWER_ITEM, "newer", &e, &err), 0);
	assign1(w, "newest", 4, 5, 6, 0, &e);
	ck_assert_int_eq(sid_registry_get(r, SID_TOWER_ITEM, "newest", &e, &err), 0);
	sid_registry_close(r);
	ck_assert_str_eq(dir_names(after, sizeof(after)), "reg.db reg.db-shm reg.db-wal ");
	sid_registry_close(w);
	ck_assert_str_eq(dir_names(after, sizeof(after)), "reg.db ");

	/* another user, who may read the file but not write it, in a
	 * directory it may write: nothing of its own is left there */
	ck_assert_int_eq(chmod(target, 0644), 0);
	ck_assert_int_eq(chmod(tmpdir, 0777), 0);
	code = open_as_nobody(target, SID_REG_READONLY, msg, sizeof(msg));
	chmod(tmpdir, 0700);
	ck_assert_msg(code == 0, "code %d: %s", code, msg);
	ck_assert_str_eq(msg, "1-2-3-0");
	ck_assert_str_eq(dir_names(after, sizeof(after)), "reg.db ");
}
END_TEST

/* The pipes between t_sqlite_read_guarded and its reader. */
static int guard_go[2], guard_done[2];

/* Tell the parent a step is done (@what), and wait for its go. */
static int guard_step(const char *what)
{
	char c;
	if (write(guard_done[1], what, strlen(what)) < 0 || read(guard_go[0], &c, 1) != 1)
		_exit(5);
	return 0;
}

/* guard_step with a call's result: "RC" and its message when it failed. */
static void guard_tell(int rc, const struct sid_error *err)
{
	char out[SID_ERROR_MSG_MAX + 16];

	snprintf(out, sizeof(out), "%d %s", rc, rc ? err->msg : "");
	guard_step(out);
}

static int guard_walk(const struct sid_reg_entry *e, const float *emb, void *ctx)
{
	(void)e;
	(void)emb;
	if (!*(int *)ctx) {
		*(int *)ctx = 1;
		guard_step("0 walking");
	}
	return 0;
}

static void guard_progress(void *ctx, uint64_t done, uint64_t total)
{
	(void)done;
	(void)total;
	if (!*(int *)ctx) {
		*(int *)ctx = 1;
		guard_step("0 copying");
	}
}

/* Read the next answer of the reader into @buf. */
static void guard_read(char *buf, size_t len)
{
	ssize_t n = read(guard_done[0], buf, len - 1);
	ck_assert_int_gt(n, 0);
	buf[n] = '\0';
}

/* A writer commits @id and closes (its checkpoint writes the file); then
 * the reader goes on, and its next answer is read into @buf. */
static void guard_commit(const char *id, char *buf, size_t len)
{
	struct sid_registry *w = reg_open();
	struct sid_reg_entry e;

	assign1(w, id, 4, 5, 6, 0, &e);
	sid_registry_close(w);
	ck_assert_int_eq(write(guard_go[1], "x", 1), 1);
	guard_read(buf, len);
}

/* The reader goes on to its next step, which waits with @mark; a writer
 * commits @id meanwhile (guard_commit), and the step's answer is read into
 * @buf. */
static void guard_during(const char *mark, const char *id, char *buf, size_t len)
{
	ck_assert_int_eq(write(guard_go[1], "x", 1), 1);
	guard_read(buf, len);
	ck_assert_str_eq(buf, mark);
	guard_commit(id, buf, len);
}

/* @buf, the answer of a step of @what: the file changed under it. */
static void guard_changed(const char *buf, const char *what)
{
	ck_assert_msg(atoi(buf) == SID_EUNAVAIL &&
			  strstr(buf, "changed the file while it was read"),
		      "%s: %s", what, buf);
}

/* The store, made another user's (0644, its directory 0777), and a reader
 * forked to read it as the user nobody: 0 in the reader, else its pid. */
static pid_t guard_fork(void)
{
	pid_t pid;

	ck_assert_int_eq(chmod(target, 0644), 0);
	ck_assert_int_eq(chmod(tmpdir, 0777), 0);
	ck_assert_int_eq(pipe(guard_go), 0);
	ck_assert_int_eq(pipe(guard_done), 0);
	pid = fork();
	ck_assert_int_ge(pid, 0);
	if (pid == 0 && (setgid(65534) || setuid(65534)))
		_exit(3);
	return pid;
}

/* Let the reader end; its exit status. */
static int guard_wait(pid_t pid)
{
	int status;

	ck_assert_int_eq(write(guard_go[1], "x", 1), 1);
	ck_assert_int_eq(waitpid(pid, &status, 0), pid);
	chmod(tmpdir, 0700);
	return status;
}

/* Another user's read makes no file beside the store, so it reads the file
 * alone, without a lock: a writer that opens the store meanwhile, and
 * copies its commits into the file as it closes, changes pages under it.
 * A later call reads the file anew (the writer's commits included); a walk
 * during which it changed fails, rather than answer from a mix of pages. */
START_TEST(t_sqlite_read_guarded)
{
	struct sid_registry *w = reg_open();
	struct sid_reg_entry e;
	char buf[SID_ERROR_MSG_MAX + 16] = "", names[300];
	pid_t pid;

	if (geteuid() != 0)
		CHECK_SKIP("needs root (reads as user nobody)");
	assign1(w, "old", 1, 2, 3, 0, &e);
	sid_registry_close(w);
	if ((pid = guard_fork()) == 0) {
		struct sid_registry *ro;
		struct sid_error err;
		char out[sizeof(buf)];
		int rc, walking = 0;
		rc = sid_registry_open(target, SID_REG_READONLY, &ro, &err);
		if (!rc)
			rc = sid_registry_get(ro, SID_TOWER_ITEM, "old", &e, &err);
		guard_tell(rc, &err);
		rc = sid_registry_get(ro, SID_TOWER_ITEM, "fresh", &e, &err);
		guard_tell(rc, &err);
		rc = sid_registry_foreach(ro, SID_TOWER_ITEM, 0, guard_walk, &walking, &err);
		guard_tell(rc, &err);
		walking = 0;
		snprintf(out, sizeof(out), "%s/copy.db", tmpdir);
		rc = sid_registry_backup(ro, out, NULL, guard_progress, &walking, &err);
		guard_tell(rc, &err);
		sid_registry_close(ro);
		_exit(0);
	}
	guard_read(buf, sizeof(buf));
	ck_assert_msg(!strcmp(buf, "0 "), "read as nobody: %s", buf);
	ck_assert_str_eq(dir_names(names, sizeof(names)), "reg.db ");
	guard_commit("fresh", buf, sizeof(buf));
	ck_assert_msg(!strcmp(buf, "0 "), "the writer's commit: %s", buf);
	guard_during("0 walking", "fresher", buf, sizeof(buf));
	guard_changed(buf, "walk");
	/* and a backup: the copy would not be of one state */
	guard_during("0 copying", "freshest", buf, sizeof(buf));
	guard_changed(buf, "backup");
	ck_assert_int_eq(guard_wait(pid), 0);
	snprintf(names, sizeof(names), "%s/copy.db", tmpdir);
	unlink(names);
	ck_assert_str_eq(dir_names(names, sizeof(names)), "reg.db ");
}
END_TEST

/* Another user's read through the -wal and -shm a killed writer left: it
 * may not write the -shm, and with no connection attached to it reads the
 * -wal itself, the -shm unmapped.  The next writer to open the store, the
 * first to attach, truncates the -shm and rebuilds it, as SQLite does:
 * the reader took the shorter -shm it saw for one truncated under it, and
 * failed every call from then on ("deleted, replaced or truncated"), a
 * false alarm.  It reads on, the writer's new commits too. */
START_TEST(t_sqlite_shm_rebuilt_reader)
{
	struct sid_registry *w = reg_open();
	struct sid_reg_entry e;
	char buf[SID_ERROR_MSG_MAX + 16] = "", shm[700];
	pid_t pid;

	if (geteuid() != 0)
		CHECK_SKIP("needs root (reads as user nobody)");
	assign1(w, "old", 1, 2, 3, 0, &e);
	sid_registry_close(w);
	ck_assert_int_eq(commit_in_wal(target, "late"), 0);
	snprintf(shm, sizeof(shm), "%s-shm", target);
	ck_assert_int_eq(chmod(shm, 0644), 0);
	if ((pid = guard_fork()) == 0) {
		static const char *const ids[] = {"late", "late", "fresh"};
		struct sid_registry *ro;
		struct sid_error err;
		int rc = sid_registry_open(target, SID_REG_READONLY, &ro, &err);
		for (size_t k = 0; k < 3; k++) {
			if (!rc)
				rc = sid_registry_get(ro, SID_TOWER_ITEM, ids[k], &e, &err);
			guard_tell(rc, &err);
		}
		if (!rc)
			sid_registry_close(ro);
		_exit(0);
	}
	guard_read(buf, sizeof(buf));
	ck_assert_msg(!strcmp(buf, "0 "), "read as nobody: %s", buf);
	/* what the first writer to attach does first (SQLite's
	 * unixLockSharedMemory), while no connection is attached */
	ck_assert_int_eq(truncate(shm, 3), 0);
	ck_assert_int_eq(write(guard_go[1], "x", 1), 1);
	guard_read(buf, sizeof(buf));
	ck_assert_msg(!strcmp(buf, "0 "), "read beside a -shm being rebuilt: %s", buf);
	/* and the writer rebuilds it, and commits */
	w = reg_open();
	assign1(w, "fresh", 4, 5, 6, 0, &e);
	ck_assert_int_eq(write(guard_go[1], "x", 1), 1);
	guard_read(buf, sizeof(buf));
	ck_assert_msg(!strcmp(buf, "0 "), "read beside the writer: %s", buf);
	sid_registry_close(w);
	ck_assert_int_eq(guard_wait(pid), 0);
}
END_TEST

/* A store of daemon's, group staff, that the group may write, read by
 * nobody in the group: it may write the file, but not the -shm daemon's
 * writer made (mode 0644, as a store made group-writable after its writer
 * started leaves it).  Such a reader took itself for the owner, whose
 * read-write connection makes the missing -wal, and cannot remove it (that
 * takes the -shm): nobody's -wal was left, which daemon's writer cannot
 * write, and it failed from then on ("the file is read-only").  It reads
 * as another user does, making nothing; with both files there, through
 * them, read-only. */
START_TEST(t_sqlite_read_group_shm)
{
	struct sid_registry *w;
	struct sid_reg_entry e;
	char names[300], before[300], side[700];
	int status;
	pid_t pid;

	if (geteuid() != 0)
		CHECK_SKIP("needs root (reads as user nobody)");
	w = reg_open();
	assign1(w, "old", 1, 2, 3, 0, &e);
	sid_registry_close(w);
	ck_assert_int_eq(chmod(tmpdir, 0777), 0);
	for (int both = 0; both < 2; both++) {
		ck_assert_int_eq(commit_in_wal(target, "late"), 0); /* daemon's, killed */
		snprintf(side, sizeof(side), "%s-wal", target);
		if (!both)
			ck_assert_int_eq(unlink(side), 0); /* a -shm alone */
		else
			ck_assert_int_eq(chown(side, 1, 50), 0);
		ck_assert_int_eq(chown(target, 1, 50), 0);
		ck_assert_int_eq(chmod(target, 0664), 0);
		snprintf(side, sizeof(side), "%s-shm", target);
		ck_assert_int_eq(chown(side, 1, 50), 0);
		ck_assert_int_eq(chmod(side, 0644), 0);
		dir_names(before, sizeof(before));
		pid = fork();
		ck_assert_int_ge(pid, 0);
		if (pid == 0) {
			gid_t staff = 50;
			struct sid_registry *ro;
			struct sid_error err;
			int rc;
			if (setgroups(1, &staff) || setgid(65534) || setuid(65534))
				_exit(3);
			rc = sid_registry_open(target, SID_REG_READONLY, &ro, &err);
			if (!rc)
				rc = sid_registry_get(ro, SID_TOWER_ITEM, both ? "late" : "old", &e,
						      &err);
			if (rc)
				fprintf(stderr, "read as nobody of group staff: %s\n", err.msg);
			else
				sid_registry_close(ro);
			_exit(rc ? 1 : 0);
		}
		ck_assert_int_eq(waitpid(pid, &status, 0), pid);
		ck_assert_msg(WIFEXITED(status) && WEXITSTATUS(status) == 0, "status %d", status);
		ck_assert_str_eq(dir_names(names, sizeof(names)), before);
		/* daemon's writer goes on */
		pid = fork();
		ck_assert_int_ge(pid, 0);
		if (pid == 0) {
			int32_t c[3] = {1, 2, 4};
			struct sid_reg_item it = {both ? "w1" : "w0", c, NULL};
			struct sid_registry *dw;
			struct sid_error err;
			int rc;
			if (setgroups(0, NULL) || setgid(50) || setuid(1))
				_exit(3);
			rc = sid_registry_open(target, 0, &dw, &err);
			if (!rc) {
				rc = sid_registry_assign(dw, SID_TOWER_ITEM, &it, 1, 3, 0, "v", 0,
							 &e, &err);
				sid_registry_close(dw);
			}
			if (rc)
				fprintf(stderr, "daemon's writer: %s\n", err.msg);
			_exit(rc ? 1 : 0);
		}
		ck_assert_int_eq(waitpid(pid, &status, 0), pid);
		ck_assert_msg(WIFEXITED(status) && WEXITSTATUS(status) == 0, "status %d", status);
		ck_assert_str_eq(dir_names(names, sizeof(names)), "reg.db ");
	}
	chmod(tmpdir, 0700);
}
END_TEST

#define GUARD_N 6000 /* entries: PRAGMA integrity_check tells its progress */

/* The progress of the reader of t_sqlite_read_guarded_more: it waits for
 * the parent once, at the point *ctx names (1: the end of stats' walk, which
 * counts the embeddings next; 2: the first report of the file's check). */
static void guard_pause(void *ctx, uint64_t done, uint64_t total)
{
	int *when = ctx;

	if ((*when == 1 && done == GUARD_N && !total) || (*when == 2 && total)) {
		*when = 0;
		guard_step("0 paused");
	}
}

/* The rest of a guarded read (t_sqlite_read_guarded): stats' count of
 * embeddings and check's own look at the file (PRAGMA integrity_check, the
 * embeddings of no entry) read it without locks as a walk does, and a
 * writer that changed it meanwhile is SID_EUNAVAIL there too.  They
 * answered from the mixed pages: a check could name an embedding whose
 * entry it had not seen "of no entry", to be deleted. */
START_TEST(t_sqlite_read_guarded_more)
{
	struct sid_registry *w = reg_open();
	struct sid_reg_item *it = calloc(GUARD_N, sizeof(*it));
	struct sid_reg_entry *out = calloc(GUARD_N, sizeof(*out));
	static char ids[GUARD_N][8];
	static int32_t codes[GUARD_N][3];
	float emb[2] = {1, 2};
	struct sid_error err;
	char buf[SID_ERROR_MSG_MAX + 16] = "", names[300];
	pid_t pid;

	if (geteuid() != 0)
		CHECK_SKIP("needs root (reads as user nobody)");
	ck_assert_ptr_nonnull(it);
	ck_assert_ptr_nonnull(out);
	for (int k = 0; k < GUARD_N; k++) {
		snprintf(ids[k], sizeof(ids[k]), "g%d", k);
		codes[k][0] = k % 16;
		codes[k][1] = k / 16 % 16;
		codes[k][2] = k / 256;
		it[k] = (struct sid_reg_item){ids[k], codes[k], emb};
	}
	ck_assert_msg(
	    sid_registry_assign(w, SID_TOWER_ITEM, it, GUARD_N, 3, 2, "v1", 0, out, &err) == 0,
	    "%s", err.msg);
	sid_registry_close(w);
	free(it);
	free(out);
	if ((pid = guard_fork()) == 0) {
		struct sid_registry *ro;
		struct sid_reg_stats st;
		struct sid_reg_check res;
		char msg[sizeof(buf)];
		int rc, when = 1;
		rc = sid_registry_open(target, SID_REG_READONLY, &ro, &err);
		if (rc) {
			snprintf(msg, sizeof(msg), "%d %s", rc, err.msg);
			guard_step(msg);
			_exit(4);
		}
		sid_registry_set_progress(ro, guard_pause, &when);
		rc = sid_registry_stats(ro, SID_TOWER_ITEM, &st, &err);
		guard_tell(rc, &err);
		when = 2;
		rc = sid_registry_check(ro, -1, NULL, NULL, &res, &err);
		guard_tell(rc, &err);
		sid_registry_close(ro);
		_exit(0);
	}
	/* stats: the writer commits between its walk and its count */
	guard_read(buf, sizeof(buf));
	ck_assert_str_eq(buf, "0 paused");
	guard_commit("fresh", buf, sizeof(buf));
	guard_changed(buf, "stats");
	/* check: the writer commits while PRAGMA integrity_check reads */
	guard_during("0 paused", "fresher", buf, sizeof(buf));
	guard_changed(buf, "check");
	ck_assert_int_eq(guard_wait(pid), 0);
	ck_assert_str_eq(dir_names(names, sizeof(names)), "reg.db ");
}
END_TEST

/* Zero both copies of the WAL index's header at the start of the -shm
 * (open as @fd), as a reader finds it while a writer has just made the
 * -shm anew, or is writing the header: only a writer rebuilds it, at its
 * next read or write. */
static void shm_header_zero(int fd)
{
	static const char zero[96]; /* two copies of 48 bytes */

	ck_assert_int_eq(pwrite(fd, zero, sizeof(zero), 0), (ssize_t)sizeof(zero));
}

/* Whether @buf tells a reader's wait for its writer to rebuild the -shm
 * (@shm) ran out after the tests' 300 ms, in sq_fail's words. */
static int rebuild_wait_said(const char *buf, const char *shm)
{
	return strstr(buf, shm) && strstr(buf, "was being rebuilt by its writer") &&
	       strstr(buf, "waited up to 300 ms: registry_timeout_ms");
}

/* The store holding "old", and a reader forked to read it as the user
 * nobody before a writer opens it (a child would have its -shm): 0 in the
 * reader, which goes on at the parent's next go; else its pid, the writer
 * opened into *w and its -shm (named into @shm) opened for writing into
 * *fd, to be kept open until the writer has closed (closing a descriptor
 * of the -shm drops every lock this process holds on it, SQLite's too). */
static pid_t torn_fork(struct sid_registry **w, int *fd, char *shm, size_t len)
{
	struct sid_reg_entry e;
	char buf[64];
	pid_t pid;

	*w = reg_open();
	assign1(*w, "old", 1, 2, 3, 0, &e);
	sid_registry_close(*w);
	if ((pid = guard_fork()) == 0) {
		guard_step("0 forked");
		return 0;
	}
	guard_read(buf, sizeof(buf));
	ck_assert_str_eq(buf, "0 forked");
	*w = reg_open();
	snprintf(shm, len, "%s-shm", target);
	*fd = open(shm, O_WRONLY);
	ck_assert_int_ge(*fd, 0);
	return pid;
}

/* A reader that may not write the store's -shm cannot rebuild the WAL's
 * index there, and a read it begins while the index's header is not valid
 * fails SQLITE_READONLY_RECOVERY until a writer has.  Only a handle's first
 * read waited for that; a later one, on a reader that stayed open while a
 * writer made the -shm anew or was seen writing its header (a test of
 * readers beside a writer under ThreadSanitizer), failed at once, saying
 * "attempt to write a readonly database".  Now every read waits for the
 * writer up to the handle's timeout, and one that waited in vain says so. */
START_TEST(t_sqlite_read_shm_torn)
{
	struct sid_registry *w;
	struct sid_reg_entry e;
	struct sid_error err;
	char buf[SID_ERROR_MSG_MAX + 16] = "", shm[700];
	unsigned long long counted = 0, slow_counted = 0;
	long waited = 0;
	int code = 0, fd;
	pid_t pid;

	if (geteuid() != 0)
		CHECK_SKIP("needs root (reads as user nobody)");
	if ((pid = torn_fork(&w, &fd, shm, sizeof(shm))) == 0) {
		struct sid_registry *slow = NULL, *quick = NULL;
		struct sid_reg_events qev, sev;
		char out[sizeof(buf)];
		double t0;
		int rc;
		rc = sid_registry_open_timeout(target, SID_REG_READONLY, 10000, &slow, &err);
		if (!rc)
			rc = sid_registry_open_timeout(target, SID_REG_READONLY, 300, &quick, &err);
		if (!rc)
			rc = sid_registry_get(slow, SID_TOWER_ITEM, "old", &e, &err);
		if (!rc)
			rc = sid_registry_get(quick, SID_TOWER_ITEM, "old", &e, &err);
		guard_tell(rc, &err);
		/* the header torn, and rebuilt by the writer meanwhile */
		if (write(guard_done[1], "0 reading", 9) != 9)
			_exit(4);
		rc = sid_registry_get(slow, SID_TOWER_ITEM, "old", &e, &err);
		guard_tell(rc, &err);
		/* torn, and no writer rebuilds it within the timeout */
		t0 = now_s();
		rc = sid_registry_get(quick, SID_TOWER_ITEM, "old", &e, &err);
		/* (a wait that ran out is counted, as a lock's is; one that
		 * ended in a read is not) */
		sid_registry_events_take(quick, &qev);
		sid_registry_events_take(slow, &sev);
		snprintf(out, sizeof(out), "%d %ld %llu %llu %s", rc, (long)((now_s() - t0) * 1000),
			 (unsigned long long)qev.rebuild_timeouts,
			 (unsigned long long)(sev.rebuild_timeouts + sev.busy_timeouts),
			 rc ? err.msg : "");
		guard_step(out);
		/* rebuilt since (the wait counted once) */
		rc = sid_registry_get(quick, SID_TOWER_ITEM, "old", &e, &err);
		sid_registry_events_take(quick, &qev);
		if (!rc && qev.rebuild_timeouts)
			rc = sid_error_set(&err, SID_EIO, "%llu more rebuild waits counted",
					   (unsigned long long)qev.rebuild_timeouts);
		guard_tell(rc, &err);
		sid_registry_close(quick);
		sid_registry_close(slow);
		_exit(0);
	}
	ck_assert_int_eq(write(guard_go[1], "x", 1), 1);
	guard_read(buf, sizeof(buf));
	ck_assert_msg(!strcmp(buf, "0 "), "read as nobody beside the writer: %s", buf);

	shm_header_zero(fd);
	ck_assert_int_eq(write(guard_go[1], "x", 1), 1);
	guard_read(buf, sizeof(buf));
	ck_assert_str_eq(buf, "0 reading");
	usleep(200000);
	ck_assert_int_eq(sid_registry_get(w, SID_TOWER_ITEM, "old", &e, &err), 0);
	guard_read(buf, sizeof(buf));
	ck_assert_msg(!strcmp(buf, "0 "), "read while the writer rebuilt the -shm: %s", buf);

	shm_header_zero(fd);
	ck_assert_int_eq(write(guard_go[1], "x", 1), 1);
	guard_read(buf, sizeof(buf));
	ck_assert_msg(
	    sscanf(buf, "%d %ld %llu %llu", &code, &waited, &counted, &slow_counted) == 4 &&
		code == SID_EUNAVAIL && waited >= 290 && counted == 1 && slow_counted == 0 &&
		rebuild_wait_said(buf, shm) && !strstr(buf, "readonly database"),
	    "read while no writer rebuilt the -shm: %s", buf);
	ck_assert_int_eq(sid_registry_get(w, SID_TOWER_ITEM, "old", &e, &err), 0);
	ck_assert_int_eq(write(guard_go[1], "x", 1), 1);
	guard_read(buf, sizeof(buf));
	ck_assert_msg(!strcmp(buf, "0 "), "read once the writer rebuilt it: %s", buf);
	ck_assert_int_eq(guard_wait(pid), 0);
	sid_registry_close(w);
	close(fd);
}
END_TEST

/* The open-time analogue of t_sqlite_read_shm_torn: a reader that may not
 * write the store's -shm meets the index's header torn at its open's first
 * reads (migrate, the schema check; here in a directory it may not write,
 * where those are its first reads at all).  The open failed at once, and
 * with the directory's trouble: as if no writer had the store open, it
 * fell back to reading the file alone, and, with commits in the WAL,
 * failed "cannot read it from a directory this process cannot write".  Now
 * it waits for the writer as any read does, and one that waited in vain
 * says so. */
START_TEST(t_sqlite_open_shm_torn)
{
	struct sid_registry *w;
	struct sid_reg_entry e;
	struct sid_error err;
	char buf[SID_ERROR_MSG_MAX + 16] = "", shm[700];
	int fd;
	pid_t pid;

	if (geteuid() != 0)
		CHECK_SKIP("needs root (reads as user nobody)");
	if ((pid = torn_fork(&w, &fd, shm, sizeof(shm))) == 0) {
		struct sid_registry *ro = NULL;
		int rc;
		rc = sid_registry_open_timeout(target, SID_REG_READONLY, 300, &ro, &err);
		if (!rc)
			sid_registry_close(ro);
		guard_tell(rc, &err);
		if (write(guard_done[1], "0 opening", 9) != 9)
			_exit(4);
		rc = sid_registry_open_timeout(target, SID_REG_READONLY, 10000, &ro, &err);
		if (!rc) {
			rc = sid_registry_get(ro, SID_TOWER_ITEM, "new", &e, &err);
			sid_registry_close(ro);
		}
		guard_tell(rc, &err);
		_exit(0);
	}
	assign1(w, "new", 4, 5, 6, 0, &e); /* in the WAL: not to be missed */
	ck_assert_int_eq(chmod(tmpdir, 0755), 0);

	/* torn, and no writer rebuilds it within the timeout */
	shm_header_zero(fd);
	ck_assert_int_eq(write(guard_go[1], "x", 1), 1);
	guard_read(buf, sizeof(buf));
	ck_assert_msg(atoi(buf) == SID_EUNAVAIL && rebuild_wait_said(buf, shm) &&
			  !strstr(buf, "not yet in the file"),
		      "open while no writer rebuilt the -shm: %s", buf);

	/* torn, and rebuilt by the writer meanwhile */
	ck_assert_int_eq(write(guard_go[1], "x", 1), 1);
	guard_read(buf, sizeof(buf));
	ck_assert_str_eq(buf, "0 opening");
	usleep(200000);
	ck_assert_int_eq(sid_registry_get(w, SID_TOWER_ITEM, "old", &e, &err), 0);
	guard_read(buf, sizeof(buf));
	ck_assert_msg(!strcmp(buf, "0 "), "open while the writer rebuilt the -shm: %s", buf);
	ck_assert_int_eq(guard_wait(pid), 0);
	sid_registry_close(w);
	close(fd);
}
END_TEST

START_TEST(t_sqlite_locked)
{
	struct sid_registry *r = reg_open();
	struct sid_reg_entry e;
	struct sid_error err;
	int32_t c[3] = {1, 1, 1};
	struct sid_reg_item it = {"new", c, NULL};
	sqlite3 *db;

	struct sid_registry *quick = NULL;
	double t0;

	assign1(r, "old", 1, 1, 1, 0, &e);
	ck_assert_int_eq(sid_registry_open_timeout(target, 0, -1, &quick, &err), SID_EINVAL);
	ck_assert_int_eq(sid_registry_open_timeout(target, 0, 300, &quick, &err), 0);
	ck_assert_int_eq(sqlite3_open(target, &db), SQLITE_OK);
	ck_assert_int_eq(sqlite3_exec(db, "BEGIN IMMEDIATE", NULL, NULL, NULL), SQLITE_OK);
	/* writes wait for the busy timeout (5 s, or the handle's own), then
	 * answer "unavailable" */
	t0 = now_s();
	ck_assert_int_eq(sid_registry_assign(r, SID_TOWER_ITEM, &it, 1, 3, 0, "v", 0, &e, &err),
			 SID_EUNAVAIL);
	ck_assert_msg(now_s() - t0 > 4.5, "gave up after %.2f s, not 5", now_s() - t0);
	ck_assert_msg(strstr(err.msg, target) && strstr(err.msg, "locked"), "%s", err.msg);
	/* whose lock, and how long it waited (it said "database is locked") */
	ck_assert_msg(strstr(err.msg, "another connection, another process's most likely, held "
				      "the store's lock; waited up to 5000 ms"),
		      "%s", err.msg);
	t0 = now_s();
	ck_assert_int_eq(sid_registry_assign(quick, SID_TOWER_ITEM, &it, 1, 3, 0, "v", 0, &e, &err),
			 SID_EUNAVAIL);
	ck_assert_msg(now_s() - t0 > 0.25 && now_s() - t0 < 4, "gave up after %.2f s, not 0.3",
		      now_s() - t0);
	ck_assert_msg(strstr(err.msg, "locked") && strstr(err.msg, "waited up to 300 ms"), "%s",
		      err.msg);
	{ /* each wait that ran out is counted, once */
		struct sid_reg_events ev;
		sid_registry_events_take(r, &ev);
		ck_assert_int_eq(ev.busy_timeouts, 1);
		sid_registry_events_take(quick, &ev);
		ck_assert_int_eq(ev.busy_timeouts, 1);
		sid_registry_events_take(quick, &ev);
		ck_assert_int_eq(ev.busy_timeouts, 0);
	}
	sid_registry_close(quick);
	/* reads and known ids keep working */
	it.id = "old";
	ck_assert_int_eq(sid_registry_assign(r, SID_TOWER_ITEM, &it, 1, 3, 0, "v", 0, &e, &err), 0);
	ck_assert_int_eq(sid_registry_get(r, SID_TOWER_ITEM, "old", &e, &err), 0);
	sqlite3_exec(db, "ROLLBACK", NULL, NULL, NULL);
	sqlite3_close(db);
	it.id = "new";
	ck_assert_int_eq(sid_registry_assign(r, SID_TOWER_ITEM, &it, 1, 3, 0, "v", 0, &e, &err), 0);
	ck_assert_int_eq(e.suffix, 1);
	sid_registry_close(r);
}
END_TEST

/* assign @id (codes 1-1-1) on @r: its return code */
static int assign_rc(struct sid_registry *r, const char *id, struct sid_error *err)
{
	int32_t c[3] = {1, 1, 1};
	struct sid_reg_item it = {id, c, NULL};
	struct sid_reg_entry e;

	return sid_registry_assign(r, SID_TOWER_ITEM, &it, 1, 3, 0, "v", 0, &e, err);
}

/* A read-only open (semid registry stats, check or export beside a server,
 * the server's lookups handle, --check-config's peek) of a store whose
 * file another connection holds locked (a writer in exclusive locking
 * mode: no reader gets in) waited the handle's timeout for its first read
 * through the -wal and -shm, then as long again for the schema check: it
 * gave up after twice registry_timeout_ms.  Every wait of the open now
 * ends at one deadline, the timeout after it began; a writer's open too. */
START_TEST(t_sqlite_read_open_waits_once)
{
	static const unsigned flags[] = {SID_REG_READONLY, SID_REG_READONLY | SID_REG_PEEK, 0};
	struct sid_registry *r = reg_open(), *rd = NULL;
	struct sid_reg_entry e;
	struct sid_error err;
	char side[700];
	sqlite3 *db;
	double t0, took;

	assign1(r, "old", 1, 2, 3, 0, &e);
	sid_registry_close(r);
	ck_assert_int_eq(sqlite3_open(target, &db), SQLITE_OK);
	/* its -wal and -shm made as a server's are, then the file's lock */
	ck_assert_int_eq(
	    sqlite3_exec(db, "SELECT count(*) FROM semid_assignment", NULL, NULL, NULL), SQLITE_OK);
	ck_assert_int_eq(sqlite3_exec(db,
				      "PRAGMA locking_mode = EXCLUSIVE; BEGIN EXCLUSIVE;"
				      "INSERT INTO semid_meta VALUES ('x', 'y')",
				      NULL, NULL, NULL),
			 SQLITE_OK);
	snprintf(side, sizeof(side), "%s-wal", target);
	ck_assert_int_eq(access(side, F_OK), 0);
	snprintf(side, sizeof(side), "%s-shm", target);
	ck_assert_int_eq(access(side, F_OK), 0);
	for (size_t i = 0; i < sizeof(flags) / sizeof(flags[0]); i++) {
		t0 = now_s();
		ck_assert_int_eq(sid_registry_open_timeout(target, flags[i], 1000, &rd, &err),
				 SID_EUNAVAIL);
		took = now_s() - t0;
		ck_assert_msg(strstr(err.msg, "locked") && strstr(err.msg, "waited up to 1000 ms"),
			      "flags %u: %s", flags[i], err.msg);
		/* (it did wait; the old open, twice: 2 s; the margin is for a
		 * loaded machine or a sanitizer, not a measure of speed) */
		ck_assert_msg(took > 0.95 && took < 1.7,
			      "flags %u: gave up after %.2f s, not once 1 s", flags[i], took);
	}
	ck_assert_int_eq(sqlite3_exec(db, "ROLLBACK", NULL, NULL, NULL), SQLITE_OK);
	sqlite3_close(db);
	/* opened, each call waits the timeout on its own again: an assign
	 * behind another writer's transaction */
	ck_assert_int_eq(sid_registry_open_timeout(target, 0, 600, &rd, &err), 0);
	ck_assert_int_eq(sqlite3_open(target, &db), SQLITE_OK);
	ck_assert_int_eq(sqlite3_exec(db, "BEGIN IMMEDIATE", NULL, NULL, NULL), SQLITE_OK);
	t0 = now_s();
	ck_assert_int_eq(assign_rc(rd, "new", &err), SID_EUNAVAIL);
	took = now_s() - t0;
	ck_assert_msg(took > 0.55 && took < 3, "gave up after %.2f s, not 0.6 s", took);
	sqlite3_exec(db, "ROLLBACK", NULL, NULL, NULL);
	sqlite3_close(db);
	ck_assert_int_eq(assign_rc(rd, "new", &err), 0);
	sid_registry_close(rd);
}
END_TEST

/* Rename the store and its -wal and -shm (to @to, or back from it). */
static void move_store(const char *from, const char *to)
{
	static const char *const side[] = {"", "-wal", "-shm"};
	for (int k = 0; k < 3; k++) {
		char a[700], b[700];
		snprintf(a, sizeof(a), "%s%s", from, side[k]);
		snprintf(b, sizeof(b), "%s%s", to, side[k]);
		ck_assert_msg(rename(a, b) == 0 || errno == ENOENT, "rename %s: %s", a,
			      strerror(errno));
	}
}

/* The file deleted, moved away or replaced while handles are open: a
 * connection would go on committing to the old inode, lost at the next
 * start; every call instead answers "unavailable", naming the file, until
 * the file is back. */
START_TEST(t_sqlite_file_replaced)
{
	struct sid_registry *r = reg_open(), *rd = NULL, *other;
	struct sid_reg_import_result res;
	struct sid_reg_entry e;
	struct sid_error err;
	int32_t c[3] = {1, 1, 1};
	struct sid_reg_item it = {"b", c, NULL};
	char moved[700], spare[700];
	FILE *f;

	ck_assert_int_eq(sid_registry_open(target, SID_REG_READONLY, &rd, &err), 0);
	assign1(r, "a", 1, 1, 1, 0, &e);
	snprintf(moved, sizeof(moved), "%s.moved", target);
	ck_assert_int_eq(sid_registry_ping(rd, &err), 0);
	move_store(target, moved);
	ck_assert_int_eq(sid_registry_assign(r, SID_TOWER_ITEM, &it, 1, 3, 0, "v", 0, &e, &err),
			 SID_EUNAVAIL);
	ck_assert_msg(strstr(err.msg, target) && strstr(err.msg, "deleted or moved"), "%s",
		      err.msg);
	ck_assert_int_eq(sid_registry_ping(rd, &err), SID_EUNAVAIL);
	it.id = "a"; /* known ids too: the answer would come from a file not there */
	ck_assert_int_eq(sid_registry_assign(r, SID_TOWER_ITEM, &it, 1, 3, 0, "v", 0, &e, &err),
			 SID_EUNAVAIL);
	ck_assert_int_eq(sid_registry_get(rd, SID_TOWER_ITEM, "a", &e, &err), SID_EUNAVAIL);
	f = tmpfile();
	fputs("kind\tid\tsid\tmodel_version\tcreated_at\tupdated_at\n"
	      "item\tz\t9-9-9-0\tv\t2026-01-02T03:04:05.006Z\t2026-01-02T03:04:05.006Z\n",
	      f);
	rewind(f);
	ck_assert_int_eq(sid_registry_import(r, SID_REG_TSV, f, NULL, NULL, &res, &err),
			 SID_EUNAVAIL);
	/* put back: both handles go on, and what is answered is stored */
	move_store(moved, target);
	ck_assert_msg(sid_registry_ping(rd, &err) == 0, "%s", err.msg);
	it.id = "b";
	ck_assert_msg(sid_registry_assign(r, SID_TOWER_ITEM, &it, 1, 3, 0, "v", 0, &e, &err) == 0,
		      "%s", err.msg);
	ck_assert_int_eq(e.suffix, 1);
	rewind(f);
	ck_assert_msg(sid_registry_import(r, SID_REG_TSV, f, NULL, NULL, &res, &err) == 0, "%s",
		      err.msg);
	fclose(f);
	ck_assert_int_eq(sid_registry_get(rd, SID_TOWER_ITEM, "b", &e, &err), 0);
	/* deleted outright */
	ck_assert_int_eq(link(target, moved), 0);
	ck_assert_int_eq(unlink(target), 0);
	it.id = "c";
	ck_assert_int_eq(sid_registry_assign(r, SID_TOWER_ITEM, &it, 1, 3, 0, "v", 0, &e, &err),
			 SID_EUNAVAIL);
	ck_assert_int_eq(rename(moved, target), 0);
	/* replaced by another registry (a restore: the old file and its -wal
	 * moved aside, the new one renamed into place) */
	snprintf(spare, sizeof(spare), "%s/spare.db", tmpdir);
	ck_assert_int_eq(sid_registry_open(spare, 0, &other, &err), 0);
	assign1(other, "s", 2, 2, 2, 0, &e);
	sid_registry_close(other);
	move_store(target, moved);
	ck_assert_int_eq(rename(spare, target), 0);
	ck_assert_int_eq(sid_registry_assign(r, SID_TOWER_ITEM, &it, 1, 3, 0, "v", 0, &e, &err),
			 SID_EUNAVAIL);
	ck_assert_msg(strstr(err.msg, "replaced"), "%s", err.msg);
	ck_assert_int_eq(sid_registry_get(rd, SID_TOWER_ITEM, "s", &e, &err), SID_EUNAVAIL);
	sid_registry_close(rd);
	sid_registry_close(r);
	/* reopened, the store is the file now there */
	r = reg_open();
	ck_assert_int_eq(sid_registry_get(r, SID_TOWER_ITEM, "s", &e, &err), 0);
	ck_assert_int_eq(sid_registry_get(r, SID_TOWER_ITEM, "a", &e, &err), SID_ENOTFOUND);
	sid_registry_close(r);
}
END_TEST

/* Run @body in a child process that then exits with its return value
 * without closing anything, as a process that dies; it must return 0. */
static void in_child(int (*body)(void))
{
	int status;
	pid_t pid = fork();

	ck_assert_int_ge(pid, 0);
	if (pid == 0)
		_exit(body());
	ck_assert_int_eq(waitpid(pid, &status, 0), pid);
	ck_assert_msg(WIFEXITED(status) && WEXITSTATUS(status) == 0, "child: %d", status);
}

static int wal_deleted_child(void)
{
	struct sid_registry *r;
	struct sid_reg_entry e;
	struct sid_error err;
	int32_t c[3] = {1, 1, 1};
	struct sid_reg_item it = {"b", c, NULL};
	char wal[700];

	if (sid_registry_open(target, 0, &r, &err) ||
	    sid_registry_assign(r, SID_TOWER_ITEM, &it, 1, 3, 0, "v", 0, &e, &err))
		return 1;
	it.id = "a";
	if (sid_registry_assign(r, SID_TOWER_ITEM, &it, 1, 3, 0, "v", 0, &e, &err))
		return 2;
	snprintf(wal, sizeof(wal), "%s-wal", target);
	if (unlink(wal))
		return 3;
	it.id = "c";
	if (sid_registry_assign(r, SID_TOWER_ITEM, &it, 1, 3, 0, "v", 0, &e, &err) != SID_EUNAVAIL)
		return 4;
	if (!strstr(err.msg, wal) || !strstr(err.msg, "copied into the file"))
		return 5;
	it.id = "a"; /* known ids are still answered from reads */
	if (sid_registry_assign(r, SID_TOWER_ITEM, &it, 1, 3, 0, "v", 0, &e, &err) != SID_EUNAVAIL)
		return 6;
	return 0;
}

/* The -wal deleted under a writing handle (a cleanup of side files): the
 * connection would go on committing to it, and everything not yet
 * checkpointed would be gone at the next start, all of it if the process
 * died.  The commits it holds are copied into the file at once and the
 * handle writes no more; a process that dies then loses nothing. */
START_TEST(t_sqlite_wal_deleted)
{
	struct sid_reg_entry e;
	struct sid_registry *r;

	in_child(wal_deleted_child);
	r = reg_open();
	ck_assert_int_eq(sid_registry_get(r, SID_TOWER_ITEM, "a", &e, NULL), 0);
	ck_assert_int_eq(e.suffix, 1);
	ck_assert_int_eq(sid_registry_get(r, SID_TOWER_ITEM, "c", &e, NULL), SID_ENOTFOUND);
	sid_registry_close(r);
}
END_TEST

/* A second process for the side-file tests, forked before this one opens
 * the store (a SQLite connection must not cross fork(), and a child would
 * share this process's mapping of the -shm): once told to go it opens the
 * store, assigns "<pfx>0".."<pfx>{n-1}" one call each under (1, 1, 1),
 * closes it and sends each suffix back (-1 for a failed call). */
struct peer {
	pid_t pid;
	int go, back;
	int n;
};

static void peer_start(struct peer *p, const char *pfx, int n)
{
	int go[2], back[2];

	ck_assert_int_eq(pipe(go), 0);
	ck_assert_int_eq(pipe(back), 0);
	p->n = n;
	p->pid = fork();
	ck_assert_int_ge(p->pid, 0);
	if (p->pid == 0) {
		struct sid_registry *r;
		struct sid_error err;
		char c;
		close(go[1]);
		close(back[0]);
		if (read(go[0], &c, 1) != 1)
			_exit(1);
		if (sid_registry_open(target, 0, &r, &err))
			_exit(2);
		for (int i = 0; i < n; i++) {
			char id[32];
			int32_t codes[3] = {1, 1, 1};
			struct sid_reg_item it = {id, codes, NULL};
			struct sid_reg_entry e;
			int64_t suffix = -1;
			snprintf(id, sizeof(id), "%s%d", pfx, i);
			if (!sid_registry_assign(r, SID_TOWER_ITEM, &it, 1, 3, 0, "v", 0, &e, &err))
				suffix = e.suffix;
			if (write(back[1], &suffix, sizeof(suffix)) != sizeof(suffix))
				_exit(3);
		}
		sid_registry_close(r);
		_exit(0);
	}
	close(go[0]);
	close(back[1]);
	p->go = go[1];
	p->back = back[0];
}

/* Let the peer run to its end: its ids must get suffixes @first, @first + 1... */
static void peer_run(struct peer *p, int64_t first)
{
	int status;

	ck_assert_int_eq(write(p->go, "g", 1), 1);
	for (int i = 0; i < p->n; i++) {
		int64_t suffix;
		ck_assert_int_eq(read(p->back, &suffix, sizeof(suffix)), sizeof(suffix));
		ck_assert_int_eq(suffix, first + i);
	}
	ck_assert_int_eq(waitpid(p->pid, &status, 0), p->pid);
	ck_assert_msg(WIFEXITED(status) && WEXITSTATUS(status) == 0, "peer: %d", status);
	close(p->go);
	close(p->back);
}

/* Assign "<pfx><first>".."<pfx><first+n-1>" under (1, 1, 1), one call each. */
static void assign_run(struct sid_registry *r, const char *pfx, int first, int n)
{
	for (int i = first; i < first + n; i++) {
		char id[32];
		struct sid_reg_entry e;
		snprintf(id, sizeof(id), "%s%d", pfx, i);
		assign1(r, id, 1, 1, 1, 0, &e);
	}
}

/* Ids "<pfx>0".."<pfx>{n-1}" are stored under (1, 1, 1) with suffixes
 * first, first + 1, ... */
static void expect_run(struct sid_registry *r, const char *pfx, int n, int64_t first)
{
	for (int i = 0; i < n; i++) {
		char id[32];
		struct sid_reg_entry e;
		struct sid_error err;
		snprintf(id, sizeof(id), "%s%d", pfx, i);
		ck_assert_msg(sid_registry_get(r, SID_TOWER_ITEM, id, &e, &err) == 0,
			      "acknowledged %s lost: %s", id, err.msg);
		ck_assert_int_eq(e.suffix, first + i);
	}
}

/* Reopened, the store holds "a0".."a{n-1}" with suffixes 0.., "b0".."b{n-1}"
 * with n.., and nothing else. */
static void expect_a_then_b(int n)
{
	struct sid_registry *r = reg_open();
	struct sid_reg_stats st;
	struct sid_error err;

	expect_run(r, "a", n, 0);
	expect_run(r, "b", n, n);
	ck_assert_int_eq(sid_registry_stats(r, SID_TOWER_ITEM, &st, &err), 0);
	ck_assert_int_eq(st.items, 2 * n);
	sid_registry_close(r);
}

/* The -wal deleted while another process goes on with the store: the
 * handle that found it gone copied its commits into the file and writes
 * no more; closing, it must not checkpoint again either.  Its WAL is a
 * deleted file read through an index the other process now writes: a
 * checkpoint at close copied stale pages over the file (its own last
 * acknowledged commits were gone) and deleted the other process's -wal by
 * name, with every commit that process had acknowledged. */
START_TEST(t_sqlite_wal_deleted_peer)
{
	struct sid_registry *r, *rd;
	struct sid_reg_entry e;
	struct sid_error err;
	int32_t c[3] = {1, 1, 1};
	struct sid_reg_item it = {"q", c, NULL};
	struct peer p;
	char wal[700];

	peer_start(&p, "b", 20);
	r = reg_open();
	ck_assert_int_eq(sid_registry_open(target, SID_REG_READONLY, &rd, &err), 0);
	assign_run(r, "a", 0, 20);
	ck_assert_int_eq(sid_registry_get(rd, SID_TOWER_ITEM, "a19", &e, &err), 0);
	snprintf(wal, sizeof(wal), "%s-wal", target);
	ck_assert_int_eq(unlink(wal), 0);
	ck_assert_int_eq(sid_registry_assign(r, SID_TOWER_ITEM, &it, 1, 3, 0, "v", 0, &e, &err),
			 SID_EUNAVAIL);
	peer_run(&p, 20);
	/* a read-only handle reads through the deleted -wal too, by the index
	 * the peer wrote: it said "a19" and the peer's ids were not found */
	ck_assert_int_eq(sid_registry_get(rd, SID_TOWER_ITEM, "a19", &e, &err), SID_EUNAVAIL);
	ck_assert_msg(strstr(err.msg, wal) && strstr(err.msg, "deleted or replaced"), "%s",
		      err.msg);
	ck_assert_int_eq(sid_registry_get(rd, SID_TOWER_ITEM, "b0", &e, &err), SID_EUNAVAIL);
	sid_registry_close(rd);
	sid_registry_close(r);
	expect_a_then_b(20);
}
END_TEST

static int wal_deleted_reader_child(void)
{
	struct sid_registry *r;
	struct sid_reg_entry e;
	struct sid_error err;
	int32_t c[3] = {1, 1, 1};
	struct sid_reg_item it = {"q", c, NULL};
	sqlite3 *rdb = NULL;
	char wal[700];

	if (sid_registry_open_timeout(target, 0, 200, &r, &err))
		return 1;
	assign_run(r, "a", 0, 5);
	if (sqlite3_open_v2(target, &rdb, SQLITE_OPEN_READONLY, NULL) ||
	    sqlite3_exec(rdb, "BEGIN; SELECT count(*) FROM semid_assignment", NULL, NULL, NULL))
		return 2;
	assign_run(r, "a", 5, 5); /* past the reader's snapshot */
	snprintf(wal, sizeof(wal), "%s-wal", target);
	if (unlink(wal))
		return 3;
	if (sid_registry_assign(r, SID_TOWER_ITEM, &it, 1, 3, 0, "v", 0, &e, &err) !=
		SID_EUNAVAIL ||
	    !strstr(err.msg, "could not all be copied"))
		return 4;
	if (sqlite3_exec(rdb, "COMMIT", NULL, NULL, NULL) || sqlite3_close(rdb))
		return 5;
	if (sid_registry_assign(r, SID_TOWER_ITEM, &it, 1, 3, 0, "v", 0, &e, &err) !=
		SID_EUNAVAIL ||
	    !strstr(err.msg, "copied into the file"))
		return 6;
	return 0;
}

/* The -wal deleted while a reader holds an older snapshot (a long export):
 * the commits after it cannot all be copied at once, and were then never
 * copied, whatever the reader did next: when the process died (or closed
 * while that reader still had the store open) the file was left partly
 * checkpointed, "malformed" without the rest of its WAL.  The copy is
 * completed as soon as the reader lets go, at the next call. */
/* A read-only handle that may remove the side files as it closes (the
 * store's owner reading: SQLite's last connection copies the WAL into the
 * file and removes both, by name) does not when they were deleted under it
 * (a cleanup of side files) and a writer made new ones: it copied its own
 * stale WAL and removed the new -wal, with the writer's commits in it. */
START_TEST(t_sqlite_read_close_stale)
{
	struct sid_registry *w = reg_open(), *r = NULL;
	struct sid_reg_entry e;
	struct sid_error err;
	char side[700], names[300];
	struct peer p;

	assign1(w, "old", 1, 1, 1, 0, &e);
	sid_registry_close(w);
	peer_start(&p, "b", 3);
	ck_assert_int_eq(sid_registry_open(target, SID_REG_READONLY, &r, &err), 0);
	ck_assert_int_eq(sid_registry_get(r, SID_TOWER_ITEM, "old", &e, &err), 0);
	snprintf(side, sizeof(side), "%s-wal", target);
	ck_assert_int_eq(unlink(side), 0);
	snprintf(side, sizeof(side), "%s-shm", target);
	ck_assert_int_eq(unlink(side), 0);
	peer_run(&p, 1); /* new ones, its commits in the -wal (the reader is open) */
	sid_registry_close(r);
	ck_assert_str_eq(dir_names(names, sizeof(names)), "reg.db reg.db-shm reg.db-wal ");
	w = reg_open();
	expect_run(w, "b", 3, 1);
	sid_registry_close(w);
}
END_TEST

START_TEST(t_sqlite_wal_deleted_reader)
{
	struct sid_reg_entry e;
	struct sid_registry *r;

	in_child(wal_deleted_reader_child);
	r = reg_open();
	expect_run(r, "a", 10, 0);
	ck_assert_int_eq(sid_registry_get(r, SID_TOWER_ITEM, "q", &e, NULL), SID_ENOTFOUND);
	sid_registry_close(r);
}
END_TEST

/* The -shm deleted while the store is open (a cleanup of side files): the
 * handle's connections keep the old one mapped, and a process that opens
 * the store then makes a new one from the -wal: two indexes of one WAL, and
 * two writers that no longer see each other's lock.  The handle went on
 * committing over the other process's frames: both handed out 1-1-1-20 to
 * 1-1-1-39, and the other's 20 acknowledged ids were gone.  Found gone, the
 * handle (and a read-only one beside it) reads and writes no more, and
 * closes without a checkpoint; every acknowledged id is then there. */
/* After its -shm went: a new id "c" on @r and lookups on @r and on the
 * read-only handle @rd beside it fail as unavailable, the first naming the
 * -shm and saying @what; both handles are closed. */
static void expect_shm_lost(struct sid_registry *r, struct sid_registry *rd, const char *what)
{
	struct sid_reg_entry e;
	struct sid_error err;
	int32_t c[3] = {1, 1, 1};
	struct sid_reg_item it = {"c", c, NULL};
	char shm[700];

	snprintf(shm, sizeof(shm), "%s-shm", target);
	ck_assert_int_eq(sid_registry_assign(r, SID_TOWER_ITEM, &it, 1, 3, 0, "v", 0, &e, &err),
			 SID_EUNAVAIL);
	ck_assert_msg(strstr(err.msg, shm) && strstr(err.msg, what), "%s", err.msg);
	ck_assert_int_eq(sid_registry_get(r, SID_TOWER_ITEM, "a0", &e, &err), SID_EUNAVAIL);
	ck_assert_int_eq(sid_registry_get(rd, SID_TOWER_ITEM, "a0", &e, &err), SID_EUNAVAIL);
	sid_registry_close(rd);
	sid_registry_close(r);
}

START_TEST(t_sqlite_shm_deleted)
{
	struct sid_registry *r, *rd;
	struct sid_reg_entry e;
	struct sid_error err;
	struct peer p;
	char shm[700];

	peer_start(&p, "b", 20);
	r = reg_open();
	ck_assert_int_eq(sid_registry_open(target, SID_REG_READONLY, &rd, &err), 0);
	assign_run(r, "a", 0, 20);
	ck_assert_int_eq(sid_registry_get(rd, SID_TOWER_ITEM, "a19", &e, &err), 0);
	snprintf(shm, sizeof(shm), "%s-shm", target);
	ck_assert_int_eq(unlink(shm), 0);
	peer_run(&p, 20);
	expect_shm_lost(r, rd, "deleted");
	expect_a_then_b(20); /* and no "c" */
}
END_TEST

/* The -shm truncated in place while the store is open (": > reg.db-shm"):
 * every connection has it mapped, and the next touch of a page past its
 * new end killed the process with SIGBUS.  Found shorter than it was, the
 * handle touches it no more (a read-only one beside it too): its calls
 * fail, naming it, and its commits are there at the next open. */
START_TEST(t_sqlite_shm_truncated)
{
	struct sid_registry *r, *rd;
	struct sid_reg_entry e;
	struct sid_error err;
	char shm[700];

	r = reg_open();
	ck_assert_int_eq(sid_registry_open(target, SID_REG_READONLY, &rd, &err), 0);
	assign_run(r, "a", 0, 5);
	snprintf(shm, sizeof(shm), "%s-shm", target);
	ck_assert_int_eq(truncate(shm, 0), 0);
	expect_shm_lost(r, rd, "truncated");
	r = reg_open();
	expect_run(r, "a", 5, 0);
	ck_assert_int_eq(sid_registry_get(r, SID_TOWER_ITEM, "c", &e, &err), SID_ENOTFOUND);
	sid_registry_close(r);
}
END_TEST

/* A store opened while this process still maps its -shm (another handle
 * has it open) and the -shm was truncated meanwhile (": > reg.db-shm", a
 * torn copy put back): the new connection shares the mapping of the old
 * size, and its first read touched a page past the new end: SIGBUS killed
 * the process as it opened the store.  Every kind of open fails instead,
 * naming the -shm, and the handle open already fails its calls. */
START_TEST(t_sqlite_shm_truncated_open)
{
	static const unsigned flags[] = {SID_REG_READONLY, SID_REG_PEEK | SID_REG_READONLY, 0};
	static const off_t sizes[] = {0, 100, 4096};
	struct sid_registry *r, *rd;
	struct sid_reg_entry e;
	struct sid_error err;
	char shm[700];

	snprintf(shm, sizeof(shm), "%s-shm", target);
	for (size_t k = 0; k < sizeof(sizes) / sizeof(sizes[0]); k++) {
		r = reg_open();
		assign_run(r, "a", 0, 5);
		ck_assert_int_eq(truncate(shm, sizes[k]), 0);
		for (size_t f = 0; f < sizeof(flags) / sizeof(flags[0]); f++) {
			rd = NULL;
			sid_error_clear(&err);
			ck_assert_int_eq(sid_registry_open(target, flags[f], &rd, &err),
					 SID_EUNAVAIL);
			ck_assert_ptr_null(rd);
			ck_assert_msg(strstr(err.msg, shm) && strstr(err.msg, "truncated"), "%s",
				      err.msg);
		}
		ck_assert_int_eq(sid_registry_get(r, SID_TOWER_ITEM, "a0", &e, &err), SID_EUNAVAIL);
		sid_registry_close(r);
		/* the last handle gone, the next open rebuilds the index */
		r = reg_open();
		expect_run(r, "a", 5, 0);
		sid_registry_close(r);
		unlink(target);
	}
}
END_TEST

/* The -shm short for a moment only: another handle of this process opening
 * as its first (a fresh -shm grown a page at a time, then mapped) or its
 * last closing and a new first one opening, between the check's reading of
 * the mappings and of the length.  Played by a hook that makes the check's
 * first look at the length read one page: the open took that look for a
 * truncation and refused the store ("is truncated ... restart
 * semid-server"; a thread of t_threads_own_handles met it); it looks again
 * and opens.  A length that stays short still refuses it. */
static char short_shm[700];
static int short_looks, short_always;

static off_t shm_short_once(const char *shm, off_t len)
{
	if (strcmp(shm, short_shm))
		return len;
	return short_looks++ == 0 || short_always ? 4096 : len;
}

START_TEST(t_sqlite_shm_short_for_a_moment)
{
	struct sid_registry *r, *r2;
	struct sid_reg_entry e;
	struct sid_error err;
	struct stat st;

	r = reg_open();
	assign_run(r, "a", 0, 5);
	snprintf(short_shm, sizeof(short_shm), "%s-shm", target);
	ck_assert_int_eq(stat(short_shm, &st), 0);
	ck_assert_int_gt(st.st_size, 4096); /* the index's region, mapped */
	sid__reg_shm_len_hook = shm_short_once;
	for (short_always = 0; short_always < 2; short_always++) {
		short_looks = 0;
		r2 = NULL;
		sid_error_clear(&err);
		if (!short_always) {
			ck_assert_msg(sid_registry_open(target, 0, &r2, &err) == 0, "%s", err.msg);
			ck_assert_int_eq(short_looks, 2);
			ck_assert_int_eq(sid_registry_get(r2, SID_TOWER_ITEM, "a4", &e, &err), 0);
			sid_registry_close(r2);
		} else {
			ck_assert_int_eq(sid_registry_open(target, 0, &r2, &err), SID_EUNAVAIL);
			ck_assert_msg(strstr(err.msg, "is truncated: 4096 bytes"), "%s", err.msg);
			ck_assert_int_eq(short_looks, 3);
		}
	}
	sid__reg_shm_len_hook = NULL;
	ck_assert_int_eq(sid_registry_get(r, SID_TOWER_ITEM, "a0", &e, &err), 0);
	sid_registry_close(r);
}
END_TEST

/* This program's sqlite3_step, which the registry calls: with step_hook set,
 * the first row of a lookup by id calls it once (then the lookup goes on). */
static void (*step_hook)(void);

int sqlite3_step(sqlite3_stmt *st)
{
	static int (*real)(sqlite3_stmt *);
	const char *sql;
	int rc;

	if (!real)
		real = (int (*)(sqlite3_stmt *))dlsym(RTLD_NEXT, "sqlite3_step");
	rc = real(st);
	if (rc == SQLITE_ROW && step_hook && (sql = sqlite3_sql(st)) &&
	    strstr(sql, "WHERE kind = ?1 AND id = ?2")) {
		void (*hook)(void) = step_hook;
		step_hook = NULL;
		hook();
	}
	return rc;
}

/* Another process's reassign, committed between the reads of "x" and "y":
 * x leaves 1-1-1-0 for 2-2-2, and y takes the slot x left. */
static void swap_slots(void)
{
	struct sid_registry *r2 = reg_open();
	int32_t B[3] = {2, 2, 2}, A[3] = {1, 1, 1};
	struct sid_reg_item in[2] = {{"x", B, NULL}, {"y", A, NULL}};
	struct sid_reg_entry e[2];
	struct sid_error err;

	ck_assert_int_eq(
	    sid_registry_assign(r2, SID_TOWER_ITEM, in, 2, 3, 0, "v2", SID_REG_REASSIGN, e, &err),
	    0);
	ck_assert_int_eq(e[1].suffix, 0); /* y now holds 1-1-1-0 */
	sid_registry_close(r2);
}

/* An assign of known ids is answered from one snapshot of the store: read
 * one statement at a time, a commit between two reads gave x and y the same
 * sid in one answer ("no other id shares it").  _i 1: the same on a
 * read-only handle (semid-server's reader, which answers assigns of known
 * ids while its writer cannot open the store), which read each id on its
 * own. */
START_TEST(t_sqlite_known_one_snapshot)
{
	struct sid_registry *r, *h;
	struct sid_reg_entry e[2];
	struct sid_error err;
	int32_t A[3] = {1, 1, 1}, C[3] = {3, 3, 3};
	struct sid_reg_item in[2] = {{"x", A, NULL}, {"y", C, NULL}};
	char s1[SID_REG_SID_MAX], s2[SID_REG_SID_MAX];

	r = h = reg_open();
	ck_assert_int_eq(sid_registry_assign(r, SID_TOWER_ITEM, in, 2, 3, 0, "v1", 0, e, &err), 0);
	if (_i)
		ck_assert_msg(sid_registry_open(target, SID_REG_READONLY, &h, &err) == 0, "%s",
			      err.msg);
	step_hook = swap_slots;
	ck_assert_msg(sid_registry_assign(h, SID_TOWER_ITEM, in, 2, 3, 0, "v1", 0, e, &err) == 0,
		      "%s", err.msg);
	ck_assert_ptr_null(step_hook); /* the other writer ran */
	sidstr(&e[0], s1);
	sidstr(&e[1], s2);
	ck_assert_msg(strcmp(s1, s2), "x and y both answered %s", s1);
	ck_assert_str_eq(s1, "1-1-1-0");
	ck_assert_str_eq(s2, "3-3-3-0");
	ck_assert_int_eq(e[0].created || e[1].created || e[0].moved || e[1].moved, 0);
	/* the next call sees the commit */
	ck_assert_int_eq(sid_registry_assign(h, SID_TOWER_ITEM, in, 2, 3, 0, "v1", 0, e, &err), 0);
	sidstr(&e[0], s1);
	sidstr(&e[1], s2);
	ck_assert_str_eq(s1, "2-2-2-0");
	ck_assert_str_eq(s2, "1-1-1-0");
	if (_i) {
		/* an id not stored: unavailable for a handle that may not write,
		 * naming its input */
		in[1].id = "z";
		ck_assert_int_eq(
		    sid_registry_assign(h, SID_TOWER_ITEM, in, 2, 3, 0, "v1", 0, e, &err),
		    SID_EUNAVAIL);
		ck_assert_msg(strstr(err.msg, "input 1 (id z) is not assigned yet"), "%s", err.msg);
		sid_registry_close(h);
	}
	sid_registry_close(r);
}
END_TEST

/* SQLite's file check is a stat of the store's path, of its -shm and of
 * its -wal.  This program's stat, which the
 * registry calls, counts those of the test's store while stat_watch is
 * set; the counts are asserted exactly, so a check made some other way
 * fails the test instead of passing at 0. */
static int stat_watch;
static long stat_db, stat_wal, stat_shm;

int stat(const char *path, struct stat *st)
{
	static int (*real)(const char *, struct stat *);
	size_t n = strlen(target);

	if (!real)
		real = (int (*)(const char *, struct stat *))dlsym(RTLD_NEXT, "stat");
	if (stat_watch && !strncmp(path, target, n)) {
		stat_db += path[n] == '\0';
		stat_wal += !strcmp(path + n, "-wal");
		stat_shm += !strcmp(path + n, "-shm");
	}
	return real(path, st);
}

static void stat_watch_start(void)
{
	stat_db = stat_wal = stat_shm = 0;
	stat_watch = 1;
}

/* @db checks of the store, each with one of its -shm, and @wal of its -wal */
static void stat_watch_expect(const char *what, long db, long wal)
{
	stat_watch = 0;
	ck_assert_msg(stat_db == db && stat_wal == wal && stat_shm == db,
		      "%s: %ld stat calls of the store, %ld of its -wal and %ld of its -shm, "
		      "want %ld, %ld and %ld",
		      what, stat_db, stat_wal, stat_shm, db, wal, db);
}

/* Syncs of a -wal file while sync_watch is set: SQLite's fsync and
 * fdatasync calls reach this program's, which count and pass them on. */
static int sync_watch;
static long sync_wal;

static void sync_count(int fd)
{
	char link[64], path[4096];
	ssize_t n;

	if (!sync_watch)
		return;
	snprintf(link, sizeof(link), "/proc/self/fd/%d", fd);
	n = readlink(link, path, sizeof(path) - 1);
	if (n > 4 && !memcmp(path + n - 4, "-wal", 4))
		sync_wal++;
}

int fsync(int fd)
{
	int (*next)(int) = (int (*)(int))dlsym(RTLD_NEXT, "fsync");
	sync_count(fd);
	return next(fd);
}

int fdatasync(int fd)
{
	int (*next)(int) = (int (*)(int))dlsym(RTLD_NEXT, "fdatasync");
	sync_count(fd);
	return next(fd);
}

/* An assign is answered once its commit is on disk: the store runs with
 * synchronous=FULL, so the commit syncs the WAL (NORMAL syncs it only at a
 * checkpoint, and a power cut loses answered assignments). */
START_TEST(t_sqlite_commit_synced)
{
	struct sid_registry *r = reg_open();
	struct sid_reg_entry e;

	assign1(r, "first", 1, 2, 3, 0, &e); /* the schema, the levels */
	sync_wal = 0;
	sync_watch = 1;
	assign1(r, "second", 1, 2, 4, 0, &e);
	sync_watch = 0;
	ck_assert_msg(sync_wal >= 1, "the commit of an assign synced no -wal file");
	sid_registry_close(r);
}
END_TEST

/* The mask of thread @tid of this process (SigBlk) once the thread sleeps
 * (state S), for up to 5 s: a thread pthread_create has only just made starts
 * with every signal blocked and sets its own mask as it runs.  0 when it
 * never slept or is gone. */
static int sleeping_thread_mask(const char *tid, unsigned long long *blk)
{
	char path[300], line[256];
	double until = now_s() + 5;

	do {
		char state = 0;
		int got = 0;
		FILE *f;

		snprintf(path, sizeof(path), "/proc/self/task/%s/stat", tid);
		if (!(f = fopen(path, "r")))
			return 0;
		if (fgets(line, sizeof(line), f) && strrchr(line, ')'))
			sscanf(strrchr(line, ')') + 1, " %c", &state);
		fclose(f);
		if (state != 'S') {
			usleep(1000);
			continue;
		}
		snprintf(path, sizeof(path), "/proc/self/task/%s/status", tid);
		if (!(f = fopen(path, "r")))
			return 0;
		while (fgets(line, sizeof(line), f))
			got |= sscanf(line, "SigBlk: %llx", blk) == 1;
		fclose(f);
		return got;
	} while (now_s() < until);
	return 0;
}

/* A writable store's checkpointer thread holds back the stop signals: a
 * SIGTERM the kernel gave it was handled there, and `semid registry import -`,
 * asleep in read(2) on its main thread for the next line, never saw the
 * EINTR that stops it (a 60 s hang in CI).  Every thread of the process but
 * this one (the checkpointer, and a sanitizer's own that was there before)
 * must block SIGINT, SIGTERM and SIGHUP; this thread's own mask is as it
 * was. */
START_TEST(t_sqlite_checkpointer_takes_no_signal)
{
	struct sid_registry *r;
	sigset_t before, after;
	int others = 0, there = 0;
	DIR *d;
	struct dirent *e;

	ck_assert_ptr_nonnull(d = opendir("/proc/self/task"));
	while ((e = readdir(d)))
		there += e->d_name[0] != '.';
	closedir(d);
	pthread_sigmask(SIG_SETMASK, NULL, &before);
	r = reg_open();
	pthread_sigmask(SIG_SETMASK, NULL, &after);
	for (int sig = 1; sig < SIGRTMIN; sig++)
		ck_assert_int_eq(sigismember(&after, sig), sigismember(&before, sig));
	ck_assert_ptr_nonnull(d = opendir("/proc/self/task"));
	while ((e = readdir(d))) {
		unsigned long long blk = 0;

		if (e->d_name[0] == '.' || atoi(e->d_name) == (int)gettid())
			continue;
		ck_assert_msg(sleeping_thread_mask(e->d_name, &blk),
			      "thread %s of an open store never waited", e->d_name);
		others++;
		for (int i = 0; i < 3; i++) {
			int sig = (int[]){SIGINT, SIGTERM, SIGHUP}[i];
			ck_assert_msg(blk >> (sig - 1) & 1,
				      "thread %s of an open store takes signal %d (SigBlk %llx)",
				      e->d_name, sig, blk);
		}
	}
	closedir(d);
	ck_assert_int_eq(others, there); /* this one's place taken by the checkpointer */
	sid_registry_close(r);
}
END_TEST

/* The file check runs once per call however many ids or backend ops the
 * call takes (a read-only assign reads id by id; a lookup by sid reads the
 * levels first), plus once after a commit. */
START_TEST(t_sqlite_checked_once)
{
	enum { NK = 1000 };
	static struct sid_reg_item in[NK];
	static struct sid_reg_entry out[NK];
	static int32_t codes[NK][3];
	static char ids[NK][16];
	struct sid_registry *r = reg_open(), *rd;
	struct sid_reg_entry e, page[10];
	struct sid_reg_stats st;
	struct sid_error err;
	char next[SID_REG_SID_MAX];
	size_t n;

	for (int i = 0; i < NK; i++) {
		codes[i][0] = i % 7;
		codes[i][1] = i % 11;
		codes[i][2] = 1;
		snprintf(ids[i], sizeof(ids[i]), "k%d", i);
		in[i] = (struct sid_reg_item){ids[i], codes[i], NULL};
	}
	ck_assert_msg(sid_registry_assign(r, SID_TOWER_ITEM, in, NK, 3, 0, "v", 0, out, &err) == 0,
		      "%s", err.msg);
	ck_assert_int_eq(sid_registry_open(target, SID_REG_READONLY, &rd, &err), 0);

	stat_watch_start();
	ck_assert_int_eq(sid_registry_assign(r, SID_TOWER_ITEM, in, NK, 3, 0, "v", 0, out, &err),
			 0);
	stat_watch_expect("assign of known ids", 1, 1);
	stat_watch_start();
	assign1(r, "new", 1, 2, 3, 0, &e);
	stat_watch_expect("assign of a new id (checked again after its commit)", 2, 2);
	stat_watch_start();
	ck_assert_int_eq(sid_registry_get_sid(r, SID_TOWER_ITEM, "1-2-3-0", &e, &err), 0);
	stat_watch_expect("get_sid", 1, 1);
	stat_watch_start();
	ck_assert_int_eq(sid_registry_list(r, SID_TOWER_ITEM, "1", "", 10, page, &n, next, &err),
			 0);
	stat_watch_expect("list", 1, 1);
	stat_watch_start();
	ck_assert_int_eq(sid_registry_stats(r, SID_TOWER_ITEM, &st, &err), 0);
	stat_watch_expect("stats", 1, 1);
	/* a read-only handle reads through its -wal too */
	stat_watch_start();
	ck_assert_int_eq(sid_registry_assign(rd, SID_TOWER_ITEM, in, NK, 3, 0, "v", 0, out, &err),
			 0);
	stat_watch_expect("read-only assign of known ids", 1, 1);
	stat_watch_start();
	ck_assert_int_eq(sid_registry_get_sid(rd, SID_TOWER_ITEM, "1-2-3-0", &e, &err), 0);
	stat_watch_expect("read-only get_sid", 1, 1);
	sid_registry_close(rd);
	sid_registry_close(r);
}
END_TEST

/* A steady stream of group-committed writes (two writers on one handle, a
 * reader on another, as in the server) must not grow the WAL without bound:
 * it is checkpointed and restarted before it passes SID_REG_SQLITE_WAL_PAGES
 * (plus one transaction).  ~50 MiB of embeddings go through it. */
enum { WAL_D = 384, WAL_N = 64, WAL_CALLS = 260 };

/* Commit @n ids "<pfx>-<i>-<j>" (j < n) under codes (j, c1, c2), each with row
 * j of @emb (@D floats a row; NULL: no embeddings) in one call: its code, the
 * message in @err.  No ck_assert: the writer threads call it too. */
static int assign_block(struct sid_registry *r, const char *pfx, int i, int n, int c1, int c2,
			const float *emb, int D, struct sid_error *err)
{
	struct sid_reg_item *in = calloc((size_t)n, sizeof(*in));
	struct sid_reg_entry *out = calloc((size_t)n, sizeof(*out));
	int32_t(*codes)[3] = calloc((size_t)n, sizeof(*codes));
	char(*ids)[48] = calloc((size_t)n, sizeof(*ids));
	int rc = SID_ENOMEM;

	if (in && out && codes && ids) {
		for (int j = 0; j < n; j++) {
			snprintf(ids[j], sizeof(ids[j]), "%s-%d-%d", pfx, i, j);
			codes[j][0] = j;
			codes[j][1] = c1;
			codes[j][2] = c2;
			in[j] = (struct sid_reg_item){ids[j], codes[j],
						      emb ? emb + (size_t)j * D : NULL};
		}
		rc = sid_registry_assign(r, SID_TOWER_ITEM, in, (size_t)n, 3, D, "v", 0, out, err);
	}
	free(in);
	free(out);
	free(codes);
	free(ids);
	return rc;
}

struct wal_writer {
	struct sid_registry *r;
	int k, rc;
	long max_wal; /* bytes seen after a commit */
	char msg[SID_ERROR_MSG_MAX];
};

static int wal_stop;		    /* atomic */
static float wal_emb[WAL_N][WAL_D]; /* filled before the threads start */

static long file_size(const char *path)
{
	struct stat st;
	return stat(path, &st) ? 0 : (long)st.st_size;
}

static void *wal_write(void *p)
{
	struct wal_writer *w = p;
	char walpath[700], pfx[8];
	struct sid_error err;

	snprintf(walpath, sizeof(walpath), "%s-wal", target);
	snprintf(pfx, sizeof(pfx), "w%d", w->k);
	for (int i = 0; i < WAL_CALLS && !w->rc; i++) {
		if (assign_block(w->r, pfx, i, WAL_N, i % 7, w->k, wal_emb[0], WAL_D, &err)) {
			w->rc = err.code;
			snprintf(w->msg, sizeof(w->msg), "%s", err.msg);
		}
		long sz = file_size(walpath);
		if (sz > w->max_wal)
			w->max_wal = sz;
	}
	return NULL;
}

static void *wal_read(void *p)
{
	struct sid_registry *r = p;
	struct sid_reg_entry e;
	struct sid_error err;
	for (int i = 0; !__atomic_load_n(&wal_stop, __ATOMIC_RELAXED); i++) {
		char id[24];
		snprintf(id, sizeof(id), "w%d-%d-%d", i % 2, i % 50, i % WAL_N);
		sid_registry_get(r, SID_TOWER_ITEM, id, &e, &err);
	}
	return NULL;
}

START_TEST(t_sqlite_wal_bounded)
{
	struct sid_registry *r = reg_open(), *rd = reg_open();
	struct wal_writer w[2] = {{r, 0, 0, 0, ""}, {r, 1, 0, 0, ""}};
	pthread_t th[2], reader;
	struct sid_reg_stats st;
	struct sid_error err;
	/* one call's frames: 64 rows + 64 embeddings (1.5 KiB each) and index pages */
	long frame = 24 + 4096, per_call = (WAL_N / 2 + 16) * frame;
	long bound = 32 + (SID_REG_SQLITE_WAL_PAGES * frame) + 2 * per_call;

	for (int j = 0; j < WAL_N; j++)
		for (int d = 0; d < WAL_D; d++)
			wal_emb[j][d] = (float)(j + d) / WAL_D;
	__atomic_store_n(&wal_stop, 0, __ATOMIC_RELAXED);
	ck_assert_int_eq(pthread_create(&reader, NULL, wal_read, rd), 0);
	for (int k = 0; k < 2; k++)
		ck_assert_int_eq(pthread_create(&th[k], NULL, wal_write, &w[k]), 0);
	for (int k = 0; k < 2; k++)
		pthread_join(th[k], NULL);
	__atomic_store_n(&wal_stop, 1, __ATOMIC_RELAXED);
	pthread_join(reader, NULL);
	for (int k = 0; k < 2; k++) {
		ck_assert_msg(w[k].rc == 0, "writer %d: %s", k, w[k].msg);
		ck_assert_msg(w[k].max_wal <= bound, "WAL reached %ld bytes (bound %ld)",
			      w[k].max_wal, bound);
	}
	ck_assert_int_eq(sid_registry_stats(r, SID_TOWER_ITEM, &st, &err), 0);
	ck_assert_int_eq(st.items, 2 * WAL_CALLS * WAL_N);
	sid_registry_close(rd);
	sid_registry_close(r);
}
END_TEST

/* A read transaction another connection keeps open (a long export) stops
 * the WAL from restarting; commits must go on without waiting for it.  They
 * used to wait out the 5 s busy timeout each, once the WAL held half its
 * bound: these 40 would take 200 s, past the case's timeout. */
START_TEST(t_sqlite_wal_reader_held)
{
	enum { D = 1024, N = 64, CALLS = 72 };
	struct sid_registry *r = reg_open();
	static float emb[N][D];
	struct sid_reg_entry out[1];
	struct sid_error err;
	sqlite3 *db;

	assign1(r, "first", 0, 0, 0, 0, &out[0]);
	ck_assert_int_eq(sqlite3_open(target, &db), SQLITE_OK);
	ck_assert_int_eq(
	    sqlite3_exec(db, "BEGIN; SELECT count(*) FROM semid_assignment", NULL, NULL, NULL),
	    SQLITE_OK);
	for (int i = 0; i < CALLS; i++) /* ~64 pages each: past 2000 after ~32 */
		ck_assert_msg(assign_block(r, "h", i, N, i, 1, emb[0], D, &err) == 0, "call %d: %s",
			      i, err.msg);
	/* the reader still sees its snapshot; once it ends the WAL restarts */
	ck_assert_int_eq(sqlite3_exec(db, "COMMIT", NULL, NULL, NULL), SQLITE_OK);
	sqlite3_close(db);
	assign1(r, "last", 0, 0, 0, 0, &out[0]);
	ck_assert_int_eq(out[0].suffix, 1);
	sid_registry_close(r);
}
END_TEST

/* ---- backup ---- */

enum { BK_D = 512, BK_N = 50, BK_FILL_CALLS = 80 };
static float bk_emb[BK_N][BK_D];
static int bk_stop, bk_commits; /* atomic */

/* Another connection (a server) committing BK_N new ids at a time, for at
 * most three seconds. */
static void *bk_write(void *p)
{
	struct sid_registry *r = p;
	struct sid_error err;
	time_t t0 = time(NULL);

	for (int i = 0; !__atomic_load_n(&bk_stop, __ATOMIC_RELAXED) && time(NULL) - t0 < 3; i++) {
		if (assign_block(r, "live", i, BK_N, i % 64, 7, bk_emb[0], BK_D, &err))
			break;
		__atomic_add_fetch(&bk_commits, 1, __ATOMIC_RELAXED);
	}
	return NULL;
}

struct bk_seen {
	uint64_t done[4096], total[4096];
	int n;
	int commits_at_first; /* the writer's commits when the copy began */
};

static void bk_progress(void *ctx, uint64_t done, uint64_t total)
{
	struct bk_seen *b = ctx;
	if (!b->n)
		b->commits_at_first = __atomic_load_n(&bk_commits, __ATOMIC_RELAXED);
	if (b->n < 4096) {
		b->done[b->n] = done;
		b->total[b->n] = total;
		b->n++;
	}
}

struct bk_cmp {
	struct sid_registry *src;
	uint64_t n;
	char msg[256];
};

static int bk_compare(const struct sid_reg_entry *e, const float *emb, void *ctx)
{
	struct bk_cmp *c = ctx;
	struct sid_reg_entry o;
	struct sid_error err;

	c->n++;
	if (sid_registry_get(c->src, SID_TOWER_ITEM, e->id, &o, &err) || o.suffix != e->suffix ||
	    memcmp(o.codes, e->codes, sizeof(int32_t) * 3) ||
	    (emb && memcmp(emb, bk_emb[atoi(strrchr(e->id, '-') + 1)], sizeof(bk_emb[0])))) {
		snprintf(c->msg, sizeof(c->msg), "id %.200s differs from the store", e->id);
		return 1;
	}
	return 0;
}

/* A backup taken while another connection keeps committing is one
 * snapshot: it copies in steps without starting over (it did, on every
 * commit between two steps, without the read transaction it holds), holds
 * whole transactions only (the fill, then groups of BK_N), each entry as
 * the store has it, embeddings included, and is a store itself. */
START_TEST(t_sqlite_backup_while_writing)
{
	struct sid_registry *r = reg_open(), *w = reg_open(), *b;
	static struct bk_seen seen;
	struct bk_cmp cmp = {0};
	struct sid_reg_stats st;
	struct sid_error err;
	char dest[700];
	pthread_t th;

	for (int j = 0; j < BK_N; j++)
		for (int d = 0; d < BK_D; d++)
			bk_emb[j][d] = (float)(j * BK_D + d);
	for (int i = 0; i < BK_FILL_CALLS; i++) /* ~4000 pages: four steps or more */
		ck_assert_int_eq(assign_block(r, "fill", i, BK_N, i, 1, bk_emb[0], BK_D, &err), 0);
	memset(&seen, 0, sizeof(seen));
	__atomic_store_n(&bk_stop, 0, __ATOMIC_RELAXED);
	__atomic_store_n(&bk_commits, 0, __ATOMIC_RELAXED);
	ck_assert_int_eq(pthread_create(&th, NULL, bk_write, w), 0);
	while (__atomic_load_n(&bk_commits, __ATOMIC_RELAXED) < 2)
		usleep(1000);
	snprintf(dest, sizeof(dest), "%s/backup.db", tmpdir);
	ck_assert_msg(sid_registry_backup(r, dest, NULL, bk_progress, &seen, &err) == 0, "%s",
		      err.msg);
	__atomic_store_n(&bk_stop, 1, __ATOMIC_RELAXED);
	pthread_join(th, NULL);

	ck_assert_int_ge(seen.n, 4);
	ck_assert_msg(__atomic_load_n(&bk_commits, __ATOMIC_RELAXED) > seen.commits_at_first,
		      "the writer committed nothing while the copy ran; the test proves nothing");
	for (int i = 1; i < seen.n; i++) {
		ck_assert_msg(seen.done[i] > seen.done[i - 1],
			      "step %d: %llu pages done after %llu: the copy started over", i,
			      (unsigned long long)seen.done[i],
			      (unsigned long long)seen.done[i - 1]);
		ck_assert(seen.total[i] == seen.total[0]);
	}
	ck_assert(seen.done[seen.n - 1] == seen.total[0]);
	ck_assert_int_ne(access(strcat(strcpy((char[800]){0}, dest), "-journal"), F_OK), 0);

	ck_assert_int_eq(sid_registry_open(dest, SID_REG_READONLY, &b, &err), 0);
	ck_assert_int_eq(sid_registry_stats(b, SID_TOWER_ITEM, &st, &err), 0);
	ck_assert_uint_ge(st.items, (uint64_t)BK_FILL_CALLS * BK_N);
	ck_assert_uint_eq((st.items - (uint64_t)BK_FILL_CALLS * BK_N) % BK_N, 0);
	ck_assert_uint_eq(st.with_embedding, st.items);
	cmp.src = r;
	ck_assert_msg(sid_registry_foreach(b, SID_TOWER_ITEM, 1, bk_compare, &cmp, &err) == 0, "%s",
		      cmp.msg);
	ck_assert_uint_eq(cmp.n, st.items);
	sid_registry_close(b);
	sid_registry_close(w);
	sid_registry_close(r);
}
END_TEST

/* PostgreSQL has pg_dump: the backup says so and writes nothing. */
START_TEST(t_pg_backup_refused)
{
	struct sid_registry *r;
	struct sid_error err;
	char dest[700];

	NEED_STORE();
	r = reg_open();
	snprintf(dest, sizeof(dest), "/tmp/check_registry_pg_backup.%d.db", (int)getpid());
	ck_assert_int_eq(sid_registry_backup(r, dest, NULL, NULL, NULL, &err), SID_EINVAL);
	ck_assert_ptr_nonnull(strstr(err.msg, "pg_dump"));
	ck_assert_int_ne(access(dest, F_OK), 0);
	sid_registry_close(r);
}
END_TEST

/* ---- PostgreSQL availability ---- */

START_TEST(t_pg_unavailable)
{
	struct sid_registry *r;
	struct sid_reg_entry e;
	struct sid_error err;
	int32_t c[3] = {1, 1, 1};
	struct sid_reg_item it = {"a", c, NULL};
	char dead[128];

	NEED_STORE();
	/* nothing listens: plain open fails, a lazy one answers "unavailable" */
	snprintf(dead, sizeof(dead),
		 "host=127.0.0.1 port=%d dbname=x user=postgres "
		 "connect_timeout=2",
		 free_port());
	r = NULL;
	ck_assert_int_eq(sid_registry_open(dead, 0, &r, &err), SID_EUNAVAIL);
	ck_assert_ptr_nonnull(strstr(err.msg, "cannot connect"));
	ck_assert_int_eq(sid_registry_open(dead, SID_REG_LAZY, &r, &err), 0);
	ck_assert_int_eq(sid_registry_assign(r, SID_TOWER_ITEM, &it, 1, 3, 0, "v", 0, &e, &err),
			 SID_EUNAVAIL);
	ck_assert_int_eq(sid_registry_get(r, SID_TOWER_ITEM, "a", &e, &err), SID_EUNAVAIL);
	ck_assert_int_eq(sid_registry_ping(r, &err), SID_EUNAVAIL);
	sid_registry_close(r);
	if (!pg.own)
		return; /* an external server is not ours to stop */
	/* the server goes away and comes back: the handle reconnects; a ping
	 * asks the server, though the levels it reads are cached */
	r = reg_open();
	assign1(r, "a", 1, 1, 1, 0, &e);
	ck_assert_int_eq(sid_registry_ping(r, &err), 0);
	ck_assert_int_eq(sh("%s", pg.stop_cmd), 0);
	ck_assert_int_eq(sid_registry_ping(r, &err), SID_EUNAVAIL);
	it.id = "b";
	ck_assert_int_eq(sid_registry_assign(r, SID_TOWER_ITEM, &it, 1, 3, 0, "v", 0, &e, &err),
			 SID_EUNAVAIL);
	ck_assert_msg(strstr(err.msg, "postgresql://"), "%s", err.msg);
	ck_assert_int_eq(sh("%s", pg.start_cmd), 0);
	ck_assert_msg(sid_registry_assign(r, SID_TOWER_ITEM, &it, 1, 3, 0, "v", 0, &e, &err) == 0,
		      "%s", err.msg);
	ck_assert_int_eq(e.suffix, 1);
	sid_registry_close(r);
}
END_TEST

/* Run @sql on the store (PostgreSQL), as another client. */
static void pg_sql(const char *conninfo, const char *sql)
{
	PGconn *c = PQconnectdb(conninfo);
	PGresult *res;

	ck_assert_msg(PQstatus(c) == CONNECTION_OK, "connect: %s", PQerrorMessage(c));
	res = PQexec(c, sql);
	ck_assert_msg(PQresultStatus(res) == PGRES_COMMAND_OK ||
			  PQresultStatus(res) == PGRES_TUPLES_OK,
		      "%s: %s", sql, PQerrorMessage(c));
	PQclear(res);
	PQfinish(c);
}

/* A session whose search_path misses the registry's schema (a role or a
 * server of the fleet configured apart) created a second, empty registry
 * in its own schema and gave out IDs the first held.  Refused, naming the
 * schema that holds it; nothing is created. */
START_TEST(t_pg_registry_in_another_schema)
{
	struct sid_registry *r = NULL;
	struct sid_reg_entry e;
	struct sid_error err;
	char other[700];
	PGconn *c;
	PGresult *res;

	NEED_STORE();
	r = reg_open();
	assign1(r, "a", 1, 2, 3, 0, &e);
	sid_registry_close(r);
	pg_sql(target, "CREATE SCHEMA elsewhere");
	snprintf(other, sizeof(other), "%s options=-csearch_path=elsewhere", target);
	r = NULL;
	ck_assert_int_eq(sid_registry_open(other, 0, &r, &err), SID_EFORMAT);
	ck_assert_ptr_null(r);
	ck_assert_msg(strstr(err.msg, "no semid registry on this session's search_path "
				      "(elsewhere), but schema public of the database holds one"),
		      "%s", err.msg);
	c = PQconnectdb(target);
	res = PQexec(c, "SELECT count(*) FROM pg_tables WHERE schemaname = 'elsewhere'");
	ck_assert_str_eq(PQgetvalue(res, 0, 0), "0");
	PQclear(res);
	PQfinish(c);
	/* with it on the path, the same store */
	snprintf(other, sizeof(other), "%s options=-csearch_path=elsewhere,public", target);
	ck_assert_int_eq(sid_registry_open(other, 0, &r, &err), 0);
	ck_assert_int_eq(sid_registry_get(r, SID_TOWER_ITEM, "a", &e, &err), 0);
	sid_registry_close(r);
}
END_TEST

/* A registry in a schema the role may not use (no USAGE: an admin made it,
 * the GRANT was forgotten) is invisible to the session even with the schema
 * on its search_path.  The refusal said "no semid registry on this session's
 * search_path (reg), but schema reg of the database holds one; put it on the
 * search_path", which it was; it now names the missing privilege. */
START_TEST(t_pg_registry_schema_no_usage)
{
	struct sid_registry *r = NULL;
	struct sid_reg_entry e;
	struct sid_error err;
	char admin[700], app[760], role[32], sql[300];

	NEED_STORE();
	pg_sql(target, "CREATE SCHEMA reg");
	snprintf(admin, sizeof(admin), "%s options=-csearch_path=reg", target);
	ck_assert_int_eq(sid_registry_open(admin, 0, &r, &err), 0);
	assign1(r, "a", 1, 2, 3, 0, &e);
	sid_registry_close(r);
	snprintf(role, sizeof(role), "semid_nousage_%d", (int)getpid());
	snprintf(sql, sizeof(sql), "CREATE ROLE %s LOGIN", role);
	pg_sql(target, sql);
	snprintf(app, sizeof(app), "%s user=%s", admin, role);
	r = NULL;
	ck_assert_int_eq(sid_registry_open(app, 0, &r, &err), SID_EIO);
	ck_assert_ptr_null(r);
	ck_assert_msg(strstr(err.msg, "schema reg of the database holds a semid registry, but "
				      "role ") &&
			  strstr(err.msg, role) && strstr(err.msg, "GRANT USAGE ON SCHEMA reg") &&
			  !strstr(err.msg, "put it on the search_path"),
		      "%s", err.msg);
	/* granted, the same store */
	snprintf(sql, sizeof(sql),
		 "GRANT USAGE ON SCHEMA reg TO %s; GRANT SELECT, INSERT, UPDATE, DELETE ON ALL "
		 "TABLES IN SCHEMA reg TO %s",
		 role, role);
	pg_sql(target, sql);
	ck_assert_msg(sid_registry_open(app, 0, &r, &err) == 0, "%s", err.msg);
	ck_assert_int_eq(sid_registry_get(r, SID_TOWER_ITEM, "a", &e, &err), 0);
	sid_registry_close(r);
	snprintf(sql, sizeof(sql), "DROP OWNED BY %s; DROP ROLE %s", role, role);
	pg_sql(target, sql);
}
END_TEST

/* A schema written by a newer semid is refused on every connection: met
 * when a lazy handle first connects (the server started before the
 * database was there) and when a handle reconnects after the schema moved
 * on.  Once, the refused connection was kept and the next call wrote into
 * the newer schema. */
START_TEST(t_pg_schema_ahead)
{
	struct sid_registry *r = NULL, *w;
	struct sid_reg_entry e;
	struct sid_error err;
	int32_t c[3] = {1, 1, 1};
	struct sid_reg_item it = {"a", c, NULL};
	char name[64], sql[160];

	NEED_STORE();
	snprintf(name, sizeof(name), "semid_later_%d", (int)getpid());
	snprintf(target, sizeof(target), "%s dbname=%s", pg.admin, name);
	ck_assert_int_eq(sid_registry_open(target, SID_REG_LAZY, &r, &err), 0);
	ck_assert_int_eq(sid_registry_assign(r, SID_TOWER_ITEM, &it, 1, 3, 0, "v", 0, &e, &err),
			 SID_EUNAVAIL);
	snprintf(sql, sizeof(sql), "CREATE DATABASE %s", name);
	pg_sql(pg.admin, sql);
	w = reg_open(); /* creates the schema */
	sid_registry_close(w);
	pg_sql(target, "UPDATE semid_meta SET value = '2' WHERE key = 'schema_version'");
	for (int k = 0; k < 2; k++) {
		ck_assert_int_eq(
		    sid_registry_assign(r, SID_TOWER_ITEM, &it, 1, 3, 0, "v", 0, &e, &err),
		    SID_EFORMAT);
		ck_assert_msg(strstr(err.msg, "schema version 2") && strstr(err.msg, name), "%s",
			      err.msg);
	}
	pg_sql(target, "UPDATE semid_meta SET value = '1' WHERE key = 'schema_version'");
	ck_assert_msg(sid_registry_assign(r, SID_TOWER_ITEM, &it, 1, 3, 0, "v", 0, &e, &err) == 0,
		      "%s", err.msg);
	/* connected, then the schema moves on and the connection is lost */
	pg_sql(target, "UPDATE semid_meta SET value = '2' WHERE key = 'schema_version'");
	pg_sql(target, "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
		       " WHERE datname = current_database() AND pid <> pg_backend_pid()");
	it.id = "b";
	ck_assert_int_eq(sid_registry_assign(r, SID_TOWER_ITEM, &it, 1, 3, 0, "v", 0, &e, &err),
			 SID_EFORMAT);
	sid_registry_close(r);
}
END_TEST

/* A schema_version that is no version number ("-1", "abc"): refused; "-1"
 * used to index migrations[-1] and run whatever lay before it as SQL, and
 * "abc" read as 0, an empty store to create again. */
START_TEST(t_pg_schema_unreadable)
{
	static const char *const bad[] = {"-1", "abc"};
	struct sid_registry *r;
	struct sid_error err;
	char sql[120];

	NEED_STORE();
	sid_registry_close(reg_open());
	for (int k = 0; k < 2; k++) {
		snprintf(sql, sizeof(sql),
			 "UPDATE semid_meta SET value = '%s' WHERE key = 'schema_version'", bad[k]);
		pg_sql(target, sql);
		ck_assert_int_eq(sid_registry_open(target, 0, &r, &err), SID_EFORMAT);
		ck_assert_msg(strstr(err.msg, "schema_version is not a version number"), "%s",
			      err.msg);
	}
}
END_TEST

/* A store that lost a unique constraint would give one full ID twice: it is
 * refused at open, naming the constraint. */
START_TEST(t_pg_schema_damaged)
{
	static const char *const drop[] = {"semid_assignment_sid", "semid_assignment_id"};
	struct sid_registry *r;
	struct sid_error err;
	char sql[160];

	NEED_STORE();
	for (int k = 0; k < 2; k++) {
		sid_registry_close(reg_open());
		snprintf(sql, sizeof(sql), "ALTER TABLE semid_assignment DROP CONSTRAINT %s",
			 drop[k]);
		pg_sql(target, sql);
		ck_assert_int_eq(sid_registry_open(target, 0, &r, &err), SID_EFORMAT);
		ck_assert_msg(strstr(err.msg, "damaged schema: the unique constraint") &&
				  strstr(err.msg, drop[k]),
			      "%s", err.msg);
		pg_sql(target, "DROP TABLE semid_assignment; DROP TABLE semid_meta");
	}
}
END_TEST

/* Causes PostgreSQL's own words do not give, named: a full disk on its
 * server (SQLSTATE 53100, raised here by a trigger with the words
 * PostgreSQL uses for a short write); a database that takes no writes (a
 * standby; here the database's default_transaction_read_only), of which it
 * says only "cannot execute INSERT in a read-only transaction". */
START_TEST(t_pg_cause_named)
{
	struct sid_registry *r;
	struct sid_reg_entry e;
	struct sid_error err;
	int32_t c[3] = {1, 1, 1};
	struct sid_reg_item it = {"a", c, NULL};

	NEED_STORE();
	r = reg_open();
	pg_sql(target, "CREATE FUNCTION full_disk() RETURNS trigger LANGUAGE plpgsql AS"
		       " $$BEGIN RAISE EXCEPTION 'could not extend file \"base/5/16391\": wrote"
		       " only 4096 of 8192 bytes at block 2034' USING ERRCODE = 'disk_full';"
		       " END$$");
	pg_sql(target, "CREATE TRIGGER full_disk BEFORE INSERT ON semid_assignment"
		       " FOR EACH ROW EXECUTE FUNCTION full_disk()");
	ck_assert_int_eq(sid_registry_assign(r, SID_TOWER_ITEM, &it, 1, 3, 0, "v", 0, &e, &err),
			 SID_EUNAVAIL);
	ck_assert_msg(strstr(err.msg, "wrote only 4096 of 8192 bytes") &&
			  strstr(err.msg, "(the PostgreSQL server's disk is full)"),
		      "%s", err.msg);
	pg_sql(target, "DROP TRIGGER full_disk ON semid_assignment");
	assign1(r, "a", 1, 1, 1, 0, &e); /* space again: the same handle writes */
	sid_registry_close(r);

	pg_sql(target, "DO $$BEGIN EXECUTE format('ALTER DATABASE %I SET"
		       " default_transaction_read_only = on', current_database()); END$$");
	r = reg_open();
	it.id = "b";
	ck_assert_int_ne(sid_registry_assign(r, SID_TOWER_ITEM, &it, 1, 3, 0, "v", 0, &e, &err), 0);
	ck_assert_msg(strstr(err.msg, "read-only transaction") &&
			  strstr(err.msg, "(the database takes no writes: a standby in recovery, "
					  "or default_transaction_read_only"),
		      "%s", err.msg);
	sid_registry_close(r);
}
END_TEST

/* A store whose assignment table was dropped (semid_meta still there) is
 * refused at open, naming the table: it was said to have lost its first
 * unique constraint. */
START_TEST(t_pg_schema_table_dropped)
{
	struct sid_registry *r;
	struct sid_error err;

	NEED_STORE();
	sid_registry_close(reg_open());
	pg_sql(target, "DROP TABLE semid_assignment");
	ck_assert_int_eq(sid_registry_open(target, 0, &r, &err), SID_EFORMAT);
	ck_assert_msg(strstr(err.msg, "damaged schema: the table semid_assignment is missing"),
		      "%s", err.msg);
	ck_assert_ptr_null(strstr(err.msg, "constraint"));
	pg_sql(target, "DROP TABLE semid_meta");
}
END_TEST

/* "t" or "f": does the store's database have the registry's meta table? */
static char pg_has_schema(void)
{
	PGconn *c = PQconnectdb(target);
	PGresult *res = PQexec(c, "SELECT to_regclass('semid_meta') IS NOT NULL");
	char v;
	ck_assert_int_eq(PQresultStatus(res), PGRES_TUPLES_OK);
	v = PQgetvalue(res, 0, 0)[0];
	PQclear(res);
	PQfinish(c);
	return v;
}

/* A read-only handle (semid registry stats, export, get, list, diff) never
 * creates the schema, as with SQLite; on a store that has one it reads, and
 * anything that needs a write is refused. */
START_TEST(t_pg_readonly_flag)
{
	struct sid_registry *r = NULL, *w;
	struct sid_reg_entry e;
	struct sid_error err;
	int32_t c[3] = {4, 5, 6};
	struct sid_reg_item it = {"new", c, NULL};

	NEED_STORE();
	ck_assert_int_eq(sid_registry_open(target, SID_REG_READONLY, &r, &err), SID_ENOTFOUND);
	ck_assert_msg(strstr(err.msg, "no semid registry") && strstr(err.msg, "postgresql://"),
		      "%s", err.msg);
	ck_assert_int_eq(pg_has_schema(), 'f');
	w = reg_open();
	assign1(w, "a", 1, 2, 3, 0, &e);
	sid_registry_close(w);
	ck_assert_msg(sid_registry_open(target, SID_REG_READONLY, &r, &err) == 0, "%s", err.msg);
	ck_assert_int_eq(sid_registry_get(r, SID_TOWER_ITEM, "a", &e, &err), 0);
	ck_assert_int_eq(e.codes[2], 3);
	ck_assert_int_eq(sid_registry_assign(r, SID_TOWER_ITEM, &it, 1, 3, 0, "v", 0, &e, &err),
			 SID_EUNAVAIL);
	sid_registry_close(r);
	ck_assert_int_eq(sid_registry_get(w = reg_open(), SID_TOWER_ITEM, "new", &e, &err),
			 SID_ENOTFOUND);
	sid_registry_close(w);
}
END_TEST

/* A read-only open (`semid registry stats`) takes no schema lock: while a
 * writer holds it (a server creating or migrating the schema) the open
 * still reads, where it used to wait for the lock (here until its
 * statement timeout cancelled the wait); and a newer schema committed
 * meanwhile is refused, as with the lock. */
START_TEST(t_pg_readonly_no_lock)
{
	struct sid_registry *r = NULL, *w;
	struct sid_reg_entry e = {0};
	struct sid_error err, err2;
	PGconn *raw;
	PGresult *res;
	int rc, rc2;

	NEED_STORE();
	w = reg_open();
	assign1(w, "a", 1, 2, 3, 0, &e);
	sid_registry_close(w);
	memset(&e, 0, sizeof(e));
	raw = PQconnectdb(target);
	ck_assert_int_eq(PQstatus(raw), CONNECTION_OK);
	res = PQexec(raw, "BEGIN; SELECT pg_advisory_xact_lock(7305853201)"); /* LOCK_KEY */
	ck_assert_msg(PQresultStatus(res) == PGRES_TUPLES_OK, "%s", PQerrorMessage(raw));
	PQclear(res);
	sid_error_clear(&err);
	rc = sid_registry_open_timeout(target, SID_REG_READONLY, 1000, &r, &err);
	if (!rc)
		rc = sid_registry_get(r, SID_TOWER_ITEM, "a", &e, &err);
	sid_registry_close(r);
	r = NULL;
	pg_sql(target, "UPDATE semid_meta SET value = '2' WHERE key = 'schema_version'");
	rc2 = sid_registry_open_timeout(target, SID_REG_READONLY, 1000, &r, &err2);
	sid_registry_close(r);
	res = PQexec(raw, "ROLLBACK");
	PQclear(res);
	PQfinish(raw);
	ck_assert_msg(rc == 0, "%s", err.msg);
	ck_assert_int_eq(e.codes[2], 3);
	ck_assert_msg(rc2 == SID_EFORMAT && sid_registry_error_schema_ahead(&err2), "%d %s", rc2,
		      err2.msg);
}
END_TEST

/* A role that may not create the schema: the message gives PostgreSQL's
 * reason (it used to quote the whole CREATE statement, cut off before it). */
START_TEST(t_pg_no_privilege)
{
	struct sid_registry *r = NULL;
	struct sid_error err;
	char role[64], sql[128], weak[700];
	int rc;

	NEED_STORE();
	snprintf(role, sizeof(role), "semid_weak_%d", (int)getpid());
	snprintf(sql, sizeof(sql), "CREATE ROLE %s LOGIN", role);
	pg_sql(pg.admin, sql);
	snprintf(weak, sizeof(weak), "%s user=%s", target, role);
	rc = sid_registry_open(weak, 0, &r, &err);
	snprintf(sql, sizeof(sql), "DROP ROLE %s", role);
	pg_sql(pg.admin, sql);
	ck_assert_int_eq(rc, SID_EIO);
	ck_assert_msg(strstr(err.msg, role) && strstr(err.msg, "create the schema") &&
			  strstr(err.msg, "permission denied"),
		      "%s", err.msg);
}
END_TEST

/* The first column of the first row of @sql on @conninfo, into @buf. */
static void pg_value(const char *conninfo, const char *sql, char *buf, size_t len)
{
	PGconn *c = PQconnectdb(conninfo);
	PGresult *res;

	ck_assert_msg(PQstatus(c) == CONNECTION_OK, "connect: %s", PQerrorMessage(c));
	res = PQexec(c, sql);
	ck_assert_msg(PQresultStatus(res) == PGRES_TUPLES_OK && PQntuples(res) == 1, "%s: %s", sql,
		      PQerrorMessage(c));
	snprintf(buf, len, "%s", PQgetvalue(res, 0, 0));
	PQclear(res);
	PQfinish(c);
}

/* Servers of a fleet started at once on an empty database.  Creating the
 * schema is one process at a time (an advisory lock, MIGRATE_KEY): here
 * another session holds that lock until all eight processes wait for it
 * (each inside its open), so that they go on in one burst; every open
 * succeeds, the schema is made once, and each process's id under the one
 * code tuple gets its own suffix, 0..7.  Without the lock, processes that
 * met in CREATE TABLE failed their open ("duplicate key value violates
 * unique constraint "pg_type_typname_nsp_index""). */
#define MIGRATE_KEY "7305853201" /* LOCK_KEY in core/registry_pg.c */

/* @isolation: the database's default_transaction_isolation (NULL: as
 * PostgreSQL has it, read committed) */
static void schema_race(const char *isolation)
{
	enum { P = 8 };
	pid_t pid[P];
	int seen[P] = {0}, status[P] = {0}, waiting = 0;
	int ended = 0; /* 1 + the index of a process that ended while held */
	struct sid_registry *r;
	struct sid_reg_stats st;
	struct sid_error err;
	PGconn *holder;
	PGresult *res;
	char n[16];

	if (isolation) {
		char sql[300];
		snprintf(sql, sizeof(sql),
			 "DO $$BEGIN EXECUTE format('ALTER DATABASE %%I SET "
			 "default_transaction_isolation = %%L', current_database(), '%s'); END$$",
			 isolation);
		pg_sql(target, sql);
	}
	holder = PQconnectdb(target);
	ck_assert_msg(PQstatus(holder) == CONNECTION_OK, "%s", PQerrorMessage(holder));
	res = PQexec(holder, "BEGIN; SELECT pg_advisory_xact_lock(" MIGRATE_KEY ")");
	ck_assert_int_eq(PQresultStatus(res), PGRES_TUPLES_OK);
	PQclear(res);
	for (int k = 0; k < P; k++) {
		pid[k] = fork();
		ck_assert_int_ge(pid[k], 0);
		if (pid[k] == 0) {
			struct sid_registry *h = NULL;
			struct sid_reg_entry e;
			int32_t c[3] = {4, 4, 4};
			char id[16];
			struct sid_reg_item it = {id, c, NULL};
			snprintf(id, sizeof(id), "race%d", k);
			if (sid_registry_open(target, 0, &h, &err) ||
			    sid_registry_assign(h, SID_TOWER_ITEM, &it, 1, 3, 0, "v", 0, &e,
						&err)) {
				fprintf(stderr, "process %d: %s\n", k, err.msg);
				_exit(1);
			}
			sid_registry_close(h);
			_exit(e.suffix < P ? 10 + (int)e.suffix : 2);
		}
	}
	/* until all wait, or one ends: it was not held up by the lock */
	for (int t = 0; t < 300 && waiting < P && !ended; t++) {
		for (int k = 0; k < P && !ended; k++)
			ended = waitpid(pid[k], &status[k], WNOHANG) == pid[k] ? k + 1 : 0;
		pg_value(target,
			 "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND NOT granted"
			 " AND database = (SELECT oid FROM pg_database WHERE datname = "
			 "current_database())",
			 n, sizeof(n));
		waiting = atoi(n);
		if (waiting < P && !ended)
			usleep(100 * 1000);
	}
	res = PQexec(holder, "COMMIT");
	PQclear(res);
	PQfinish(holder);
	for (int k = 0; k < P; k++)
		if (k + 1 != ended)
			ck_assert_int_eq(waitpid(pid[k], &status[k], 0), pid[k]);
	ck_assert_msg(!ended, "process %d went on while the lock was held (status %d)", ended - 1,
		      ended ? status[ended - 1] : 0);
	ck_assert_int_eq(waiting, P);
	for (int k = 0; k < P; k++) {
		ck_assert_msg(WIFEXITED(status[k]) && WEXITSTATUS(status[k]) >= 10,
			      "process %d: status %d (its message is above)", k, status[k]);
		ck_assert_msg(!seen[WEXITSTATUS(status[k]) - 10]++, "suffix %d given twice",
			      WEXITSTATUS(status[k]) - 10);
	}
	r = reg_open();
	ck_assert_int_eq(sid_registry_stats(r, SID_TOWER_ITEM, &st, &err), 0);
	ck_assert_int_eq(st.items, P);
	ck_assert_int_eq(st.max_suffix, P - 1);
	sid_registry_close(r);
}

START_TEST(t_pg_schema_race)
{
	NEED_STORE();
	schema_race(NULL);
}
END_TEST

/* The same race in a database whose sessions default to REPEATABLE READ
 * (or SERIALIZABLE): semid's transactions still run at READ COMMITTED.
 * They took the database's level, so a process that had waited for the
 * migration lock read semid_meta with the snapshot of its first statement,
 * taken before the lock was granted: it saw the table but not its row, and
 * its open failed with "semid_meta has no schema_version". */
START_TEST(t_pg_schema_race_repeatable_read)
{
	NEED_STORE();
	schema_race("repeatable read");
}
END_TEST

START_TEST(t_pg_schema_race_serializable)
{
	NEED_STORE();
	schema_race("serializable");
}
END_TEST

/* "é-日本€" in UTF-8: 2 + 1 + 3 + 3 + 3 bytes; no single-byte encoding has
 * all of it, and it is no valid EUC_JP. */
#define WIDE_ID "\xc3\xa9-\xe6\x97\xa5\xe6\x9c\xac\xe2\x82\xac"

/*
 * The database's encoding.  A LATIN1 one (any but UTF8 and SQL_ASCII) is
 * refused when connecting, naming the encoding, before the schema is
 * created; it used to be taken, and an id with a character LATIN1 lacks
 * then failed its whole assign group (the client here in UTF8, as
 * PGCLIENTENCODING says), or was stored as other characters.  The session
 * speaks UTF8 whatever PGCLIENTENCODING or the connection string say: with
 * the client declared EUC_JP, one such id used to fail every call of its
 * group, and with LATIN1 it was stored as the LATIN1 reading of its bytes.
 * SQL_ASCII stores the bytes as they are.
 */
/* A new database of the test cluster in @encoding: its name (64 bytes) into
 * @name, a connection string for it (700 bytes) into @db. */
static void pg_new_db(const char *encoding, char *name, char *db)
{
	char sql[256];

	snprintf(name, 64, "semid_%s_%d", encoding, (int)getpid());
	for (char *p = name; *p; p++)
		*p = (char)tolower((unsigned char)*p);
	snprintf(sql, sizeof(sql),
		 "CREATE DATABASE %s ENCODING '%s' TEMPLATE template0 LC_COLLATE 'C' LC_CTYPE 'C'",
		 name, encoding);
	pg_sql(pg.admin, sql);
	snprintf(db, 700, "%s dbname=%s", pg.admin, name);
}

START_TEST(t_pg_encoding)
{
	struct sid_registry *r = NULL;
	struct sid_reg_entry e, out[2];
	struct sid_error err;
	int32_t c0[3] = {1, 2, 3}, c1[3] = {1, 2, 3};
	struct sid_reg_item plain = {"plain", c0, NULL}, wide = {WIDE_ID, c1, NULL};
	struct sid_reg_call calls[2] = {
	    {.kind = SID_TOWER_ITEM,
	     .items = &plain,
	     .n = 1,
	     .L = 3,
	     .model_version = "v",
	     .out = &out[0]},
	    {.kind = SID_TOWER_ITEM,
	     .items = &wide,
	     .n = 1,
	     .L = 3,
	     .model_version = "v",
	     .out = &out[1]},
	};
	char name[64], db[700], raw[800], v[64];

	NEED_STORE();
	/* LATIN1: refused, for writing and for reading, and nothing created */
	setenv("PGCLIENTENCODING", "UTF8", 1);
	pg_new_db("LATIN1", name, db);
	ck_assert_int_eq(sid_registry_open(db, 0, &r, &err), SID_EFORMAT);
	ck_assert_msg(strstr(err.msg, "encoding is LATIN1") && strstr(err.msg, "ENCODING 'UTF8'") &&
			  strstr(err.msg, name),
		      "%s", err.msg);
	ck_assert_int_eq(sid_registry_open(db, SID_REG_READONLY, &r, &err), SID_EFORMAT);
	pg_value(db, "SELECT to_regclass('semid_meta') IS NULL", v, sizeof(v));
	ck_assert_str_eq(v, "t");

	/* UTF8, the client declared EUC_JP: both calls of the group go through */
	setenv("PGCLIENTENCODING", "EUC_JP", 1);
	r = reg_open();
	ck_assert_int_eq(sid_registry_assign_calls(r, calls, 2), 0);
	ck_assert_msg(calls[0].rc == 0 && calls[1].rc == 0, "%s / %s", calls[0].err.msg,
		      calls[1].err.msg);
	ck_assert_str_eq(out[1].id, WIDE_ID);
	ck_assert_int_eq(out[0].suffix + out[1].suffix, 1);
	sid_registry_close(r);
	unsetenv("PGCLIENTENCODING");
	/* ... the client declared LATIN1 in the connection string: stored as sent */
	snprintf(db, sizeof(db), "%s client_encoding=LATIN1", target);
	ck_assert_msg(sid_registry_open(db, 0, &r, &err) == 0, "%s", err.msg);
	ck_assert_int_eq(sid_registry_get(r, SID_TOWER_ITEM, WIDE_ID, &e, &err), 0);
	wide.id = "x-" WIDE_ID;
	ck_assert_int_eq(sid_registry_assign(r, SID_TOWER_ITEM, &wide, 1, 3, 0, "v", 0, &e, &err),
			 0);
	sid_registry_close(r);
	snprintf(raw, sizeof(raw), "%s client_encoding=UTF8", target);
	pg_value(raw,
		 "SELECT string_agg(octet_length(id)::text, ',' ORDER BY octet_length(id))"
		 " FROM semid_assignment WHERE id IN ('" WIDE_ID "', 'x-" WIDE_ID "')",
		 v, sizeof(v));
	ck_assert_str_eq(v, "12,14");

	/* SQL_ASCII: taken; the bytes are stored and read back as they are */
	pg_new_db("SQL_ASCII", name, db);
	wide.id = WIDE_ID;
	ck_assert_msg(sid_registry_open(db, 0, &r, &err) == 0, "%s", err.msg);
	ck_assert_int_eq(sid_registry_assign_calls(r, calls, 2), 0);
	ck_assert_int_eq(sid_registry_get(r, SID_TOWER_ITEM, WIDE_ID, &e, &err), 0);
	ck_assert_str_eq(e.id, WIDE_ID);
	sid_registry_close(r);
	pg_value(db, "SELECT octet_length(id) FROM semid_assignment WHERE id = '" WIDE_ID "'", v,
		 sizeof(v));
	ck_assert_str_eq(v, "12");
}
END_TEST

struct retry_arg {
	struct sid_registry *r;
	const char *id; /* reassign_to_222's */
	int rc;
	struct sid_reg_entry e;
	struct sid_error err;
};

static void *assign_x(void *p)
{
	struct retry_arg *a = p;
	int32_t c[3] = {1, 1, 1};
	struct sid_reg_item it = {"x", c, NULL};
	a->rc = sid_registry_assign(a->r, SID_TOWER_ITEM, &it, 1, 3, 0, "v", 0, &a->e, &a->err);
	return NULL;
}

/* Whether a session of the store's database comes to wait for a lock within
 * 30 s (polled every 10 ms): the window a test holds open has begun. */
static int lock_waiter_seen(void)
{
	for (int k = 0; k < 3000; k++) {
		PGconn *c = PQconnectdb(target);
		PGresult *res = PQexec(c, "SELECT count(*) FROM pg_stat_activity WHERE datname ="
					  " current_database() AND wait_event_type = 'Lock'");
		int waiting =
		    PQresultStatus(res) == PGRES_TUPLES_OK && atoi(PQgetvalue(res, 0, 0)) > 0;
		PQclear(res);
		PQfinish(c);
		if (waiting)
			return 1;
		usleep(10000);
	}
	return 0;
}

/* The first assignment of a kind stores its levels; when that transaction
 * is rolled back and run again (here: a writer that takes no advisory locks
 * inserts the same id first), the levels it had cached went with the
 * rollback.  They used to stay cached, so the retry stored nothing, the
 * store had no levels, and a model with other levels could add ids. */
START_TEST(t_pg_retry_forgets_levels)
{
	struct sid_registry *r;
	struct retry_arg a = {0};
	struct sid_error err;
	PGconn *raw;
	PGresult *res;
	pthread_t th;
	int waiting, L = -1;

	NEED_STORE();
	r = reg_open();
	raw = PQconnectdb(target);
	ck_assert_int_eq(PQstatus(raw), CONNECTION_OK);
	res = PQexec(raw, "BEGIN; INSERT INTO semid_assignment (kind, id, codes, suffix,"
			  " model_version, created_ms, updated_ms) VALUES (0, 'x',"
			  " '\\x000000010000000100000001'::bytea, 0, 'raw', 0, 0)");
	ck_assert_msg(PQresultStatus(res) == PGRES_COMMAND_OK, "%s", PQerrorMessage(raw));
	PQclear(res);
	a.r = r;
	ck_assert_int_eq(pthread_create(&th, NULL, assign_x, &a), 0);
	/* until the assign waits for the raw row (its levels already written) */
	waiting = lock_waiter_seen();
	res = PQexec(raw, "COMMIT");
	PQclear(res);
	PQfinish(raw);
	pthread_join(th, NULL);
	ck_assert_msg(waiting, "the assign never waited for the raw insert");
	ck_assert_msg(a.rc == 0, "%s", a.err.msg);
	ck_assert_int_eq(a.e.created, 0); /* the retry found it */
	/* what the handle believes is what the store holds */
	ck_assert_int_eq(sid_registry_levels(r, SID_TOWER_ITEM, &L, &err), 0);
	sid_registry_close(r);
	{
		struct sid_registry *fresh = reg_open();
		int L2 = -1;
		ck_assert_int_eq(sid_registry_levels(fresh, SID_TOWER_ITEM, &L2, &err), 0);
		ck_assert_int_eq(L, L2);
		sid_registry_close(fresh);
	}
}
END_TEST

/* An assign in a database whose sessions default to REPEATABLE READ, behind
 * a writer that holds the store's global lock (GLOBAL_KEY in
 * core/registry_pg.c) and adds y to tuple 1-1-1: once that commits, x takes
 * suffix 1 in one go, as at READ COMMITTED.  It used to run at the
 * database's level: the snapshot its lock statement took before the wait
 * did not see y, so it chose suffix 0, met y's row there, failed with a
 * serialization error and ran again (a retry per wait: under load a hot
 * tuple's assigns ran out of retries and answered 503). */
START_TEST(t_pg_assign_repeatable_read)
{
	struct sid_registry *r;
	struct retry_arg a = {0};
	struct sid_reg_events ev;
	PGconn *raw;
	PGresult *res;
	pthread_t th;
	int waiting;

	NEED_STORE();
	pg_sql(target, "DO $$BEGIN EXECUTE format('ALTER DATABASE %I SET "
		       "default_transaction_isolation = ''repeatable read''', "
		       "current_database()); END$$");
	r = reg_open();
	raw = PQconnectdb(target);
	ck_assert_int_eq(PQstatus(raw), CONNECTION_OK);
	res = PQexec(raw, "BEGIN; SELECT pg_advisory_xact_lock(7305853202);" /* GLOBAL_KEY */
			  " INSERT INTO semid_assignment (kind, id, codes, suffix, model_version,"
			  " created_ms, updated_ms) VALUES (0, 'y',"
			  " '\\x000000010000000100000001'::bytea, 0, 'raw', 0, 0)");
	ck_assert_msg(PQresultStatus(res) == PGRES_COMMAND_OK, "%s", PQerrorMessage(raw));
	PQclear(res);
	sid_registry_events_take(r, &ev); /* from here on */
	a.r = r;
	ck_assert_int_eq(pthread_create(&th, NULL, assign_x, &a), 0);
	waiting = lock_waiter_seen(); /* x waits for the global lock */
	PQclear(PQexec(raw, "COMMIT"));
	PQfinish(raw);
	pthread_join(th, NULL);
	ck_assert_msg(waiting, "the assign never waited for the global lock");
	ck_assert_msg(a.rc == 0, "%s", a.err.msg);
	ck_assert_int_eq(a.e.created, 1);
	ck_assert_int_eq(a.e.suffix, 1);
	sid_registry_events_take(r, &ev);
	ck_assert_uint_eq(ev.retries, 0);
	sid_registry_close(r);
}
END_TEST

/* Move a->id to tuple 2-2-2. */
static void *reassign_to_222(void *p)
{
	struct retry_arg *a = p;
	int32_t c[3] = {2, 2, 2};
	struct sid_reg_item it = {a->id, c, NULL};
	a->rc = sid_registry_assign(a->r, SID_TOWER_ITEM, &it, 1, 3, 0, "v", SID_REG_REASSIGN,
				    &a->e, &a->err);
	return NULL;
}

/* A raw connection holding a row lock on @id's entry until its COMMIT. */
static PGconn *row_lock_hold(const char *id)
{
	char sql[128];
	PGconn *raw = PQconnectdb(target);
	PGresult *res;

	ck_assert_int_eq(PQstatus(raw), CONNECTION_OK);
	snprintf(sql, sizeof(sql),
		 "BEGIN; SELECT 1 FROM semid_assignment WHERE id = '%s' FOR UPDATE", id);
	res = PQexec(raw, sql);
	ck_assert_msg(PQresultStatus(res) == PGRES_TUPLES_OK, "%s", PQerrorMessage(raw));
	PQclear(res);
	return raw;
}

static void row_lock_release(PGconn *raw)
{
	PQclear(PQexec(raw, "COMMIT"));
	PQfinish(raw);
}

/* A reassign moves the last id of tuple 1-1-1 (suffix 1) out while another
 * handle adds a new id there: the new id, not seeing the move yet, takes 2,
 * and once both commit 1 is free below the tuple's largest suffix.  The
 * mover used to set the gaps flag only when it left from below the largest
 * suffix it saw, so here the flag stayed off and the free slot was never
 * used again (the next new id took 3).  The window is held open by a row
 * lock on y taken from a raw connection. */
START_TEST(t_pg_move_out_gap)
{
	struct sid_registry *r, *r2;
	struct retry_arg a = {0};
	struct sid_reg_entry e;
	PGconn *raw;
	pthread_t th;
	int waiting;

	NEED_STORE();
	r = reg_open();
	r2 = reg_open();
	assign1(r, "x", 1, 1, 1, 0, &e);
	assign1(r, "y", 1, 1, 1, 0, &e);
	ck_assert_int_eq(e.suffix, 1);
	raw = row_lock_hold("y");
	a.r = r;
	a.id = "y";
	ck_assert_int_eq(pthread_create(&th, NULL, reassign_to_222, &a), 0);
	/* until the reassign waits for the row lock, its look at 1-1-1 done */
	waiting = lock_waiter_seen();
	assign1(r2, "z", 1, 1, 1, 0, &e); /* beside the move in flight */
	row_lock_release(raw);
	pthread_join(th, NULL);
	ck_assert_msg(waiting, "the reassign never waited for the row lock");
	ck_assert_int_eq(e.suffix, 2);
	ck_assert_msg(a.rc == 0, "%s", a.err.msg);
	ck_assert_int_eq(a.e.moved, 1);
	assign1(r2, "w", 1, 1, 1, 0, &e);
	ck_assert_int_eq(e.suffix, 1); /* the free slot */
	sid_registry_close(r);
	sid_registry_close(r2);
}
END_TEST

/* The smallest suffix of tuple (c, c, c) no stored id of @ids holds. */
static int64_t smallest_free(struct sid_registry *r, const char *const *ids, int n, int c)
{
	int64_t s = 0;
	for (int again = 1; again;) {
		again = 0;
		for (int i = 0; i < n; i++) {
			struct sid_reg_entry e;
			struct sid_error err;
			ck_assert_int_eq(sid_registry_get(r, SID_TOWER_ITEM, ids[i], &e, &err), 0);
			if (e.codes[0] == c && e.suffix == s) {
				s++;
				again = 1;
			}
		}
	}
	return s;
}

/* A reassign locks its id and the tuple it moves to, not the one it leaves
 * (the review asked whether that races).  Here two moves cross while both
 * are in flight: x leaves A (1-1-1) for B (2-2-2), held after its locks and
 * its look at B by a row lock on x from a raw connection, while another
 * handle moves z from B to A and commits, seeing x still in A.  Neither waits
 * for the other, both succeed with distinct IDs, and the slots each left are
 * found again: a new id in either tuple takes its smallest free suffix,
 * computed here from what is stored (the gaps flag each move set). */
START_TEST(t_pg_moves_cross)
{
	static const char *const ids[] = {"x", "z", "q", "w1", "w2"};
	struct sid_registry *r, *r2;
	struct retry_arg a = {0};
	struct sid_reg_entry e, ex, ez, eq;
	struct sid_error err;
	int64_t want;
	PGconn *raw;
	pthread_t th;
	int waiting;

	NEED_STORE();
	r = reg_open();
	ck_assert_int_eq(sid_registry_open_timeout(target, 0, 5000, &r2, &err), 0);
	/* a first move sets the kind's gaps flag (its first writer is the one
	 * point where movers queue: the flag's row, until that commits) */
	assign1(r, "p", 3, 3, 3, 0, &e);
	assign1(r, "p", 4, 4, 4, SID_REG_REASSIGN, &e);
	assign1(r, "x", 1, 1, 1, 0, &e); /* A-0 */
	assign1(r, "q", 1, 1, 1, 0, &e); /* A-1 */
	assign1(r, "z", 2, 2, 2, 0, &e); /* B-0 */
	raw = row_lock_hold("x");
	a.r = r;
	a.id = "x";
	ck_assert_int_eq(pthread_create(&th, NULL, reassign_to_222, &a), 0);
	waiting = lock_waiter_seen(); /* x's move waits, its suffix in B chosen */
	assign1(r2, "z", 1, 1, 1, SID_REG_REASSIGN, &ez); /* committed meanwhile */
	ck_assert_int_eq(ez.moved, 1);
	row_lock_release(raw);
	pthread_join(th, NULL);
	ck_assert_msg(waiting, "the reassign never waited for the row lock");
	ck_assert_msg(a.rc == 0, "%s", a.err.msg);
	ck_assert_int_eq(a.e.moved, 1);
	ck_assert_int_eq(sid_registry_get(r, SID_TOWER_ITEM, "x", &ex, &err), 0);
	ck_assert_int_eq(sid_registry_get(r, SID_TOWER_ITEM, "z", &ez, &err), 0);
	ck_assert_int_eq(sid_registry_get(r, SID_TOWER_ITEM, "q", &eq, &err), 0);
	ck_assert_int_eq(ex.codes[0], 2);
	ck_assert_int_eq(ez.codes[0], 1);
	ck_assert_int_eq(eq.codes[0], 1);
	ck_assert_int_ne(ez.suffix, eq.suffix);
	want = smallest_free(r, ids, 3, 1);
	assign1(r2, "w1", 1, 1, 1, 0, &e);
	ck_assert_int_eq(e.suffix, want);
	want = smallest_free(r, ids, 4, 2);
	assign1(r, "w2", 2, 2, 2, 0, &e);
	ck_assert_int_eq(e.suffix, want);
	for (int i = 0; i < 5; i++) /* every ID once */
		for (int j = 0; j < i; j++) {
			struct sid_reg_entry ei, ej;
			ck_assert_int_eq(sid_registry_get(r, SID_TOWER_ITEM, ids[i], &ei, &err), 0);
			ck_assert_int_eq(sid_registry_get(r, SID_TOWER_ITEM, ids[j], &ej, &err), 0);
			ck_assert(ei.codes[0] != ej.codes[0] || ei.suffix != ej.suffix);
		}
	sid_registry_close(r);
	sid_registry_close(r2);
}
END_TEST

/* An insert that loses every time (a trigger drops the row, as a writer
 * without our locks taking the id first would look): after its retries the
 * call fails SID_EUNAVAIL with a message, by both paths (a new id, and a
 * reassign of an id not stored yet).  The second used to give up with no
 * error set, so the group's calls were answered as if they had succeeded. */
START_TEST(t_pg_lost_race_fails)
{
	struct sid_registry *r;
	struct sid_reg_entry e;
	int32_t c[3] = {4, 4, 4};
	struct sid_reg_item it = {"ghost", c, NULL};
	struct sid_error err;

	NEED_STORE();
	r = reg_open();
	assign1(r, "seed", 1, 1, 1, 0, &e); /* the schema and the levels */
	pg_sql(target, "CREATE FUNCTION drop_ghost() RETURNS trigger LANGUAGE plpgsql AS"
		       " $$BEGIN IF NEW.id = 'ghost' THEN RETURN NULL; END IF;"
		       " RETURN NEW; END$$");
	pg_sql(target, "CREATE TRIGGER drop_ghost BEFORE INSERT ON semid_assignment"
		       " FOR EACH ROW EXECUTE FUNCTION drop_ghost()");
	for (int k = 0; k < 2; k++) {
		int rc;
		sid_error_clear(&err);
		rc = sid_registry_assign(r, SID_TOWER_ITEM, &it, 1, 3, 0, "v",
					 k ? SID_REG_REASSIGN : 0, &e, &err);
		ck_assert_msg(rc == SID_EUNAVAIL, "flags %d: rc %d (%s)", k, rc, err.msg);
		ck_assert_msg(err.msg[0] != '\0', "flags %d: no message", k);
	}
	ck_assert_int_eq(sid_registry_get(r, SID_TOWER_ITEM, "ghost", &e, &err), SID_ENOTFOUND);
	sid_registry_close(r);
}
END_TEST

/*
 * A TCP relay between the registry and PostgreSQL that loses one answer:
 * on its first connection, once the client has sent @drop_at COMMITs, the
 * next bytes the server sends (the answer to that COMMIT, which the server
 * has then carried out) are dropped and both sides closed.  Later
 * connections are relayed whole.
 */
struct lossy {
	int lfd, port, up_port, drop_at;
	pthread_t th;
};

static void *lossy_main(void *p)
{
	struct lossy *x = p;

	for (int conn = 0;; conn++) {
		struct sockaddr_in a = {.sin_family = AF_INET,
					.sin_port = htons((uint16_t)x->up_port),
					.sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
		int c = accept(x->lfd, NULL, NULL), u, commits = 0;
		if (c < 0)
			return NULL;
		u = socket(AF_INET, SOCK_STREAM, 0);
		if (u < 0 || connect(u, (struct sockaddr *)&a, sizeof(a))) {
			close(c);
			close(u);
			continue;
		}
		for (;;) {
			struct pollfd f[2] = {{c, POLLIN, 0}, {u, POLLIN, 0}};
			char buf[65536];
			ssize_t n;
			if (poll(f, 2, -1) < 0)
				break;
			if (f[0].revents) {
				if ((n = read(c, buf, sizeof(buf))) <= 0 || write(u, buf, n) != n)
					break;
				if (conn == 0 && memmem(buf, n, "COMMIT", 6))
					commits++;
			}
			if (f[1].revents) {
				if ((n = read(u, buf, sizeof(buf))) <= 0 || commits == x->drop_at ||
				    write(c, buf, n) != n)
					break;
			}
		}
		close(c);
		close(u);
	}
}

/* Start a relay to the test server, or return 0 when it is not on TCP. */
static int lossy_start(struct lossy *x, int drop_at, char *conninfo, size_t len)
{
	struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
	socklen_t alen = sizeof(a);
	PQconninfoOption *o = PQconninfoParse(target, NULL);
	const char *host = "", *port = "5432";

	for (PQconninfoOption *k = o; k && k->keyword; k++) {
		if (k->val && !strcmp(k->keyword, "host"))
			host = k->val;
		if (k->val && !strcmp(k->keyword, "port"))
			port = k->val;
	}
	if (strcmp(host, "127.0.0.1") && strcmp(host, "localhost")) {
		PQconninfoFree(o);
		return 0;
	}
	x->up_port = atoi(port);
	PQconninfoFree(o);
	x->drop_at = drop_at;
	x->lfd = socket(AF_INET, SOCK_STREAM, 0);
	ck_assert_int_ge(x->lfd, 0);
	ck_assert_int_eq(bind(x->lfd, (struct sockaddr *)&a, sizeof(a)), 0);
	ck_assert_int_eq(getsockname(x->lfd, (struct sockaddr *)&a, &alen), 0);
	ck_assert_int_eq(listen(x->lfd, 4), 0);
	x->port = ntohs(a.sin_port);
	ck_assert_int_eq(pthread_create(&x->th, NULL, lossy_main, x), 0);
	snprintf(conninfo, len, "%s port=%d", target, x->port); /* the later port wins */
	return 1;
}

static void lossy_stop(struct lossy *x)
{
	shutdown(x->lfd, SHUT_RDWR);
	close(x->lfd);
	pthread_join(x->th, NULL);
}

/* Store @id (codes 1-1-1) in the test store as *@e, then open the store
 * through a relay that loses the answer to the first call's COMMIT (the
 * second the connection sends: its setup's is the first).  NULL when the
 * test server is not on TCP. */
static struct sid_registry *lossy_open(struct lossy *x, const char *id, struct sid_reg_entry *e)
{
	struct sid_registry *r = reg_open();
	struct sid_error err;
	char via[1024];

	assign1(r, id, 1, 1, 1, 0, e);
	sid_registry_close(r);
	if (!lossy_start(x, 2, via, sizeof(via)))
		return NULL;
	ck_assert_msg(sid_registry_open(via, 0, &r, &err) == 0, "%s", err.msg);
	return r;
}

/* A reassign with an expectation (reassign_all's batches) whose COMMIT went
 * through while its answer was lost: the call runs again on a new
 * connection, and found the id no longer where it expected it, so it said
 * "stale", not "moved", and reassign_all's log never had that move. */
START_TEST(t_pg_reassign_answer_lost)
{
	struct sid_registry *r;
	struct sid_reg_entry before, after, e;
	struct sid_error err;
	int32_t c[3] = {2, 2, 2};
	struct sid_reg_item it = {"x", c, NULL};
	struct sid_reg_call call = {.kind = SID_TOWER_ITEM,
				    .items = &it,
				    .n = 1,
				    .L = 3,
				    .model_version = "v2",
				    .flags = SID_REG_REASSIGN,
				    .out = &after,
				    .expect = &before};
	struct lossy x;

	NEED_STORE();
	if (!(r = lossy_open(&x, "x", &before)))
		CHECK_SKIP("the test server is not on TCP at 127.0.0.1");
	ck_assert_msg(sid_registry_assign_calls(r, &call, 1) == 0, "%s", call.err.msg);
	sid_registry_close(r);
	lossy_stop(&x);
	ck_assert_msg(after.moved && !after.stale, "moved %d, stale %d", after.moved, after.stale);
	ck_assert_int_eq(after.codes[0], 2);
	ck_assert_int_eq(after.suffix, 0);
	r = reg_open();
	ck_assert_int_eq(sid_registry_get(r, SID_TOWER_ITEM, "x", &e, &err), 0);
	ck_assert_int_eq(e.codes[0], 2);
	ck_assert_str_eq(e.model_version, "v2");
	sid_registry_close(r);
}
END_TEST

/* An assign of a new id whose COMMIT went through while its answer was
 * lost: the call runs again on a new connection and finds the id stored.
 * It was stored by this very call, so the answer says created, as the lost
 * one would have; an id stored before stays created false, and so does an
 * id's second occurrence in the call. */
START_TEST(t_pg_create_answer_lost)
{
	struct sid_registry *r;
	struct sid_reg_entry out[3], e;
	struct sid_error err;
	int32_t c[3] = {3, 3, 3};
	struct sid_reg_item it[3] = {{"fresh", c, NULL}, {"seed", c, NULL}, {"fresh", c, NULL}};
	struct lossy x;
	int rc;

	NEED_STORE();
	if (!(r = lossy_open(&x, "seed", &e)))
		CHECK_SKIP("the test server is not on TCP at 127.0.0.1");
	rc = sid_registry_assign(r, SID_TOWER_ITEM, it, 3, 3, 0, "v2", 0, out, &err);
	ck_assert_msg(rc == 0, "%s", err.msg);
	sid_registry_close(r);
	lossy_stop(&x);
	ck_assert_int_eq(out[0].created, 1);
	ck_assert_int_eq(out[1].created, 0);
	ck_assert_int_eq(out[2].created, 0);
	ck_assert_int_eq(out[0].suffix, 0);
	ck_assert_int_eq(out[2].suffix, 0);
	r = reg_open();
	ck_assert_int_eq(sid_registry_get(r, SID_TOWER_ITEM, "fresh", &e, &err), 0);
	ck_assert_int_eq(e.codes[0], 3);
	ck_assert_str_eq(e.model_version, "v2");
	sid_registry_close(r);
}
END_TEST

/* Two calls committed together (two requests of one group in the server),
 * both holding a new id, whose COMMIT went through while its answer was
 * lost: run again, each call found the id stored with this group's codes,
 * model and time, and both said created, though only the first stored it
 * (the second found it stored, as its first run had said). */
START_TEST(t_pg_create_answer_lost_group)
{
	struct sid_registry *r;
	struct sid_reg_entry out0[1], out1[2], e;
	int32_t c[3] = {3, 3, 3};
	struct sid_reg_item a[1] = {{"fresh", c, NULL}};
	struct sid_reg_item b[2] = {{"fresh", c, NULL}, {"other", c, NULL}};
	struct sid_reg_call calls[2] = {{.kind = SID_TOWER_ITEM,
					 .items = a,
					 .n = 1,
					 .L = 3,
					 .model_version = "v2",
					 .out = out0},
					{.kind = SID_TOWER_ITEM,
					 .items = b,
					 .n = 2,
					 .L = 3,
					 .model_version = "v2",
					 .out = out1}};
	struct lossy x;
	int rc;

	NEED_STORE();
	if (!(r = lossy_open(&x, "seed", &e)))
		CHECK_SKIP("the test server is not on TCP at 127.0.0.1");
	rc = sid_registry_assign_calls(r, calls, 2);
	ck_assert_msg(rc == 0, "%s / %s", calls[0].err.msg, calls[1].err.msg);
	sid_registry_close(r);
	lossy_stop(&x);
	ck_assert_int_eq(out0[0].created, 1);
	ck_assert_int_eq(out1[0].created, 0);
	ck_assert_int_eq(out1[1].created, 1);
	ck_assert_int_eq(out0[0].suffix, 0);
	ck_assert_int_eq(out1[0].suffix, 0);
	ck_assert_int_eq(out1[1].suffix, 1);
}
END_TEST

/* ---- delete ---- */

/* One number from the store itself, as another client (@sqlite_sql on
 * SQLite, @pg_sql on PostgreSQL). */
static long store_value(const char *sqlite_sql, const char *pg_query)
{
	char buf[64];
	sqlite3 *db;
	sqlite3_stmt *st;
	long v;

	if (g_pg) {
		pg_value(target, pg_query, buf, sizeof(buf));
		return atol(buf);
	}
	ck_assert_int_eq(sqlite3_open(target, &db), SQLITE_OK);
	ck_assert_int_eq(sqlite3_prepare_v2(db, sqlite_sql, -1, &st, NULL), SQLITE_OK);
	ck_assert_int_eq(sqlite3_step(st), SQLITE_ROW);
	v = (long)sqlite3_column_int64(st, 0);
	sqlite3_finalize(st);
	sqlite3_close(db);
	return v;
}

/* How many stored embeddings the store holds. */
static long embeddings_stored(void)
{
	return store_value("SELECT count(*) FROM semid_embedding",
			   "SELECT count(*) FROM semid_assignment WHERE embedding IS NOT NULL");
}

/* Make @id's stored codes unreadable (one byte), as another client would. */
static void damage_codes(const char *id)
{
	char lite[200], postgres[200];

	snprintf(lite, sizeof(lite),
		 "UPDATE semid_assignment SET codes = x'01' WHERE id = '%s' RETURNING 1", id);
	snprintf(postgres, sizeof(postgres),
		 "WITH u AS (UPDATE semid_assignment SET codes = '\\x01'::bytea WHERE id = '%s' "
		 "RETURNING 1) SELECT count(*) FROM u",
		 id);
	ck_assert_int_eq(store_value(lite, postgres), 1);
}

static void delete_ok(struct sid_registry *r, enum sid_tower_kind kind, const char *const *ids,
		      size_t n, struct sid_reg_entry *out)
{
	struct sid_error err;
	int rc = sid_registry_delete(r, kind, ids, n, out, &err);
	ck_assert_msg(rc == 0, "delete: %s", err.msg);
}

/* Deleting takes the assignment and its embedding away and frees the slot
 * for the next new id of those codes (the smallest free suffix, holes
 * first, on a store that had no gap before); lookups by id, sid and prefix
 * no longer see it; unknown ids (and an id's second occurrence) say not
 * stored; assigning a deleted id again creates it anew. */
START_TEST(t_delete)
{
	struct sid_registry *r, *ro;
	struct sid_reg_entry e, out[4], page[8];
	struct sid_error err;
	char s[SID_REG_SID_MAX], next[SID_REG_SID_MAX];
	const char *names[] = {"a", "b", "c", "d", "e"};
	const char *del[] = {"b", "nope", "d", "b"};
	int32_t codes[3] = {1, 1, 1};
	float emb[4] = {1, 2, 3, 4};
	size_t n;

	NEED_STORE();
	r = reg_open();
	for (int i = 0; i < 5; i++) {
		struct sid_reg_item it = {names[i], codes, i == 1 || i == 4 ? emb : NULL};
		ck_assert_int_eq(
		    sid_registry_assign(r, SID_TOWER_ITEM, &it, 1, 3, 4, "v1", 0, &e, &err), 0);
		ck_assert_int_eq(e.suffix, i);
	}
	ck_assert_int_eq(embeddings_stored(), 2);
	delete_ok(r, SID_TOWER_ITEM, del, 4, out);
	ck_assert_int_eq(out[0].deleted, 1);
	sidstr(&out[0], s);
	ck_assert_str_eq(s, "1-1-1-1");
	ck_assert_str_eq(out[0].id, "b");
	ck_assert_int_eq(out[0].D, 4);
	ck_assert_int_eq(out[1].deleted, 0);
	ck_assert_str_eq(out[1].id, "nope");
	ck_assert_int_eq(out[1].kind, SID_TOWER_ITEM);
	ck_assert_int_eq(out[2].deleted, 1);
	ck_assert_int_eq(out[2].suffix, 3);
	ck_assert_int_eq(out[3].deleted, 0); /* b's second occurrence: gone already */
	ck_assert_int_eq(sid_registry_get(r, SID_TOWER_ITEM, "b", &e, &err), SID_ENOTFOUND);
	ck_assert_int_eq(sid_registry_get_sid(r, SID_TOWER_ITEM, "1-1-1-1", &e, &err),
			 SID_ENOTFOUND);
	ck_assert_int_eq(sid_registry_get_sid(r, SID_TOWER_ITEM, "1-1-1-3", &e, &err),
			 SID_ENOTFOUND);
	ck_assert_int_eq(sid_registry_list(r, SID_TOWER_ITEM, "1-1", "", 8, page, &n, next, &err),
			 0);
	ck_assert_int_eq(n, 3);
	ck_assert_str_eq(page[0].id, "a");
	ck_assert_str_eq(page[1].id, "c");
	ck_assert_str_eq(page[2].id, "e");
	/* the embedding row went with it; e's stays */
	ck_assert_int_eq(embeddings_stored(), 1);
	ck_assert_int_eq(store_value("SELECT count(*) FROM semid_assignment WHERE id = 'b'",
				     "SELECT count(*) FROM semid_assignment WHERE id = 'b'"),
			 0);
	/* holes 1 and 3: the smallest first, then the other, then past the end */
	assign1(r, "f", 1, 1, 1, 0, &e);
	ck_assert_int_eq(e.suffix, 1);
	assign1(r, "g", 1, 1, 1, 0, &e);
	ck_assert_int_eq(e.suffix, 3);
	assign1(r, "h", 1, 1, 1, 0, &e);
	ck_assert_int_eq(e.suffix, 5);
	/* the largest suffix freed is taken again */
	delete_ok(r, SID_TOWER_ITEM, (const char *const[]){"h"}, 1, out);
	ck_assert_int_eq(out[0].deleted, 1);
	assign1(r, "i", 1, 1, 1, 0, &e);
	ck_assert_int_eq(e.suffix, 5);
	/* a deleted id assigned again is new: created, the smallest free slot */
	delete_ok(r, SID_TOWER_ITEM, (const char *const[]){"a"}, 1, out);
	assign1(r, "b", 2, 2, 2, 0, &e);
	ck_assert_int_eq(e.created, 1);
	sidstr(&e, s);
	ck_assert_str_eq(s, "2-2-2-0");
	assign1(r, "a", 1, 1, 1, 0, &e);
	ck_assert_int_eq(e.created, 1);
	ck_assert_int_eq(e.suffix, 0);
	/* the other kind is another ID space; bad ids fail the call whole */
	delete_ok(r, SID_TOWER_USER, (const char *const[]){"a"}, 1, out);
	ck_assert_int_eq(out[0].deleted, 0);
	ck_assert_int_eq(
	    sid_registry_delete(r, SID_TOWER_ITEM, (const char *const[]){"c", ""}, 2, out, &err),
	    SID_EINVAL);
	ck_assert_int_eq(err.index, 1);
	ck_assert_int_eq(sid_registry_get(r, SID_TOWER_ITEM, "c", &e, &err), 0);
	ck_assert_int_eq(sid_registry_delete(r, 7, (const char *const[]){"c"}, 1, out, &err),
			 SID_EINVAL);
	delete_ok(r, SID_TOWER_ITEM, NULL, 0, NULL);
	/* a read-only handle does not write */
	ck_assert_msg(sid_registry_open(target, SID_REG_READONLY, &ro, &err) == 0, "%s", err.msg);
	ck_assert_int_eq(
	    sid_registry_delete(ro, SID_TOWER_ITEM, (const char *const[]){"c"}, 1, out, &err),
	    SID_EUNAVAIL);
	sid_registry_close(ro);
	ck_assert_int_eq(sid_registry_get(r, SID_TOWER_ITEM, "c", &e, &err), 0);
	sid_registry_close(r);
}
END_TEST

/* A stored row that cannot be read (its codes damaged by hand, a bug of
 * an older version) is SID_EDATA, which fails only the calls that meet it:
 * in a group, an assign call naming it fails alone and the others commit
 * (SID_EFORMAT, a damaged file, failed the whole group, and the server
 * answered every request of it 503).  It is erased all the same, with the
 * others of the call: its entry has its kind and id only, its embedding
 * goes with it, and its slot, not known, is found as a gap by the next new
 * id of its tuple (it failed the whole delete, so an erasure waited for a
 * repair by hand). */
START_TEST(t_unreadable_entry)
{
	struct sid_registry *r;
	struct sid_reg_entry e, out[2], outs[4][2];
	struct sid_error err;
	int32_t c2[3] = {2, 2, 2};
	struct sid_reg_item mixed[2] = {{"x", c2, NULL}, {"b", c2, NULL}},
			    fresh[1] = {{"y", c2, NULL}}, known[1] = {{"b", c2, NULL}};
	const struct sid_reg_item *its[4] = {mixed, fresh, known, known};
	struct sid_reg_call calls[4];
	float emb[4] = {1, 2, 3, 4};
	int32_t codes[3] = {1, 1, 1};
	const char *names[] = {"a", "b", "c"};

	for (int i = 0; i < 4; i++)
		calls[i] = (struct sid_reg_call){.kind = SID_TOWER_ITEM,
						 .items = its[i],
						 .n = i == 0 ? 2 : 1,
						 .L = 3,
						 .model_version = "v2",
						 .flags = i == 3 ? SID_REG_REASSIGN : 0u,
						 .out = outs[i]};
	NEED_STORE();
	r = reg_open();
	for (int i = 0; i < 3; i++) {
		struct sid_reg_item it = {names[i], codes, emb};
		ck_assert_int_eq(
		    sid_registry_assign(r, SID_TOWER_ITEM, &it, 1, 3, 4, "v1", 0, &e, &err), 0);
		ck_assert_int_eq(e.suffix, i);
	}
	damage_codes("b");
	ck_assert_int_eq(sid_registry_get(r, SID_TOWER_ITEM, "b", &e, &err), SID_EDATA);
	ck_assert_msg(strstr(err.msg, "\"b\") cannot be read") ||
			  strstr(err.msg, "\"b\" cannot be read"),
		      "%s", err.msg);
	/* a new id and b in one call, a new id alone, b alone, b reassigned
	 * (always a write): all but the second fail, the second commits */
	ck_assert_int_eq(sid_registry_assign_calls(r, calls, 4), SID_EDATA);
	ck_assert_int_eq(calls[0].rc, SID_EDATA);
	ck_assert_int_eq(calls[1].rc, 0);
	ck_assert_int_eq(calls[2].rc, SID_EDATA);
	ck_assert_int_eq(calls[3].rc, SID_EDATA);
	ck_assert_int_eq(outs[1][0].created, 1);
	ck_assert_int_eq(sid_registry_get(r, SID_TOWER_ITEM, "y", &e, &err), 0);
	ck_assert_int_eq(sid_registry_get(r, SID_TOWER_ITEM, "x", &e, &err), SID_ENOTFOUND);
	delete_ok(r, SID_TOWER_ITEM, (const char *const[]){"b", "c"}, 2, out);
	ck_assert_int_eq(out[0].deleted, 1);
	ck_assert_str_eq(out[0].id, "b");
	ck_assert_int_eq(out[0].kind, SID_TOWER_ITEM);
	ck_assert_int_eq(out[0].L, 0);
	ck_assert_int_eq(out[1].deleted, 1);
	ck_assert_int_eq(out[1].suffix, 2);
	ck_assert_int_eq(sid_registry_get(r, SID_TOWER_ITEM, "b", &e, &err), SID_ENOTFOUND);
	ck_assert_int_eq(store_value("SELECT count(*) FROM semid_assignment",
				     "SELECT count(*) FROM semid_assignment"),
			 2); /* a and y */
	ck_assert_int_eq(embeddings_stored(), 1);
	/* suffixes 1 and 2 are free: 1, then 2 (one past the largest, 0) */
	assign1(r, "d", 1, 1, 1, 0, &e);
	ck_assert_int_eq(e.suffix, 1);
	assign1(r, "e", 1, 1, 1, 0, &e);
	ck_assert_int_eq(e.suffix, 2);
	sid_registry_close(r);
}
END_TEST

/* A call undone alone (ROLLBACK TO its savepoint: here a reassign that
 * moved an id out of the middle of its tuple, then met an entry that cannot
 * be read) takes the gaps flag it wrote with it; the handle must not go on
 * believing the flag stored, or the next gap it makes (a delete in the
 * middle) is never stored and another handle's next new id of the tuple
 * skips it (suffix 3, not 1). */
START_TEST(t_savepoint_forgets_gaps)
{
	struct sid_registry *r, *r2;
	struct sid_reg_entry e, outs[2], del[1];
	struct sid_error err;
	int32_t c2[3] = {2, 2, 2};
	struct sid_reg_item moves[2] = {{"m", c2, NULL}, {"d", c2, NULL}};
	struct sid_reg_call call = {.kind = SID_TOWER_ITEM,
				    .items = moves,
				    .n = 2,
				    .L = 3,
				    .model_version = "v2",
				    .flags = SID_REG_REASSIGN,
				    .out = outs};

	NEED_STORE();
	r = reg_open();
	assign1(r, "a", 1, 1, 1, 0, &e);
	assign1(r, "m", 1, 1, 1, 0, &e);
	assign1(r, "z", 1, 1, 1, 0, &e);
	assign1(r, "d", 3, 3, 3, 0, &e);
	damage_codes("d");
	ck_assert_int_eq(sid_registry_assign_calls(r, &call, 1), SID_EDATA);
	ck_assert_int_eq(sid_registry_get(r, SID_TOWER_ITEM, "m", &e, &err), 0);
	ck_assert_int_eq(e.suffix, 1); /* the move was undone */
	delete_ok(r, SID_TOWER_ITEM, (const char *const[]){"m"}, 1, del);
	ck_assert_int_eq(del[0].deleted, 1);
	r2 = reg_open(); /* another handle: what the store says */
	assign1(r2, "n", 1, 1, 1, 0, &e);
	ck_assert_int_eq(e.suffix, 1);
	sid_registry_close(r2);
	sid_registry_close(r);
}
END_TEST

/* A delete at the end of a tuple leaves no gap: the fast path (one past the
 * largest) stays right.  One in the middle, the first gap of the store,
 * must be found by the next new id. */
START_TEST(t_delete_first_gap)
{
	struct sid_registry *r;
	struct sid_reg_entry e, out[1];

	NEED_STORE();
	r = reg_open();
	assign1(r, "x0", 2, 2, 2, 0, &e);
	assign1(r, "x1", 2, 2, 2, 0, &e);
	assign1(r, "x2", 2, 2, 2, 0, &e);
	delete_ok(r, SID_TOWER_ITEM, (const char *const[]){"x2"}, 1, out);
	assign1(r, "x3", 2, 2, 2, 0, &e);
	ck_assert_int_eq(e.suffix, 2);
	delete_ok(r, SID_TOWER_ITEM, (const char *const[]){"x1"}, 1, out);
	ck_assert_int_eq(out[0].suffix, 1);
	sid_registry_close(r);
	r = reg_open(); /* from the store, not a handle's cache */
	assign1(r, "x4", 2, 2, 2, 0, &e);
	ck_assert_int_eq(e.suffix, 1);
	assign1(r, "x5", 2, 2, 2, 0, &e);
	ck_assert_int_eq(e.suffix, 3);
	sid_registry_close(r);
}
END_TEST

#define FREE_M 24 /* ids first in the tuple 8-8-8 */
#define FREE_K 12 /* new ids each adder brings while slots are freed */

struct free_racer {
	int me; /* 0: the freer; 1, 2: adders */
	int64_t suffix[FREE_K];
	int rc;
	struct sid_error err;
};

/* The freer frees the odd slots of 8-8-8 in turn, deleting one id and
 * reassigning the next away to 9-9-9; each adder assigns its new ids there
 * meanwhile, one call each. */
static void *free_race(void *p)
{
	struct free_racer *d = p;
	struct sid_registry *r = NULL;

	if ((d->rc = sid_registry_open(target, 0, &r, &d->err)))
		return NULL;
	for (int k = 0; k < (d->me ? FREE_K : FREE_M / 2) && !d->rc; k++) {
		char id[16];
		int32_t here[3] = {8, 8, 8}, away[3] = {9, 9, 9};
		struct sid_reg_entry e;
		if (d->me) {
			struct sid_reg_item it = {id, here, NULL};
			snprintf(id, sizeof(id), "a%d-%d", d->me, k);
			d->rc = sid_registry_assign(r, SID_TOWER_ITEM, &it, 1, 3, 0, "v1", 0, &e,
						    &d->err);
			d->suffix[k] = e.suffix;
		} else if (k % 2) {
			struct sid_reg_item it = {id, away, NULL};
			snprintf(id, sizeof(id), "s%d", 2 * k + 1);
			d->rc = sid_registry_assign(r, SID_TOWER_ITEM, &it, 1, 3, 0, "v2",
						    SID_REG_REASSIGN, &e, &d->err);
		} else {
			const char *ids[1] = {id};
			snprintf(id, sizeof(id), "s%d", 2 * k + 1);
			d->rc = sid_registry_delete(r, SID_TOWER_ITEM, ids, 1, &e, &d->err);
		}
	}
	sid_registry_close(r);
	return NULL;
}

/* Issue 5's rule, that a new id takes the smallest suffix free under its
 * codes, after deletes and reassigns freed slots while other handles added
 * ids to the same codes: every id is where its answer put it, no slot is
 * held twice, and then new ids fill every free slot below the largest, in
 * order, before the next past it (the gaps flag was left set however the
 * writers interleaved).  The same expectation on both backends. */
START_TEST(t_free_slots_concurrent)
{
	struct free_racer d[3] = {{.me = 0}, {.me = 1}, {.me = 2}};
	pthread_t th[3];
	struct sid_registry *r;
	struct sid_reg_entry e;
	struct sid_error err;
	char used[FREE_M + 2 * FREE_K + 1] = {0};
	int64_t max = -1;

	NEED_STORE();
	r = reg_open();
	for (int i = 0; i < FREE_M; i++) {
		char id[16];
		snprintf(id, sizeof(id), "s%d", i);
		assign1(r, id, 8, 8, 8, 0, &e);
		ck_assert_int_eq(e.suffix, i);
	}
	for (int i = 0; i < 3; i++)
		ck_assert_int_eq(pthread_create(&th[i], NULL, free_race, &d[i]), 0);
	for (int i = 0; i < 3; i++)
		pthread_join(th[i], NULL);
	for (int i = 0; i < 3; i++)
		ck_assert_msg(d[i].rc == 0, "racer %d: %s", i, d[i].err.msg);
	for (int i = 0; i < FREE_M; i++) { /* the even ones stay */
		char id[16];
		int rc;
		snprintf(id, sizeof(id), "s%d", i);
		rc = sid_registry_get(r, SID_TOWER_ITEM, id, &e, &err);
		if (i % 2 == 0 || (i / 2) % 2 == 0) {
			ck_assert_int_eq(rc, i % 2 ? SID_ENOTFOUND : 0);
			if (rc)
				continue;
			ck_assert_int_eq(e.suffix, i);
		} else { /* moved away */
			ck_assert_int_eq(rc, 0);
			ck_assert_int_eq(e.codes[0], 9);
			continue;
		}
		used[e.suffix] = 1;
		max = e.suffix > max ? e.suffix : max;
	}
	for (int m = 1; m < 3; m++)
		for (int k = 0; k < FREE_K; k++) {
			char id[16];
			snprintf(id, sizeof(id), "a%d-%d", m, k);
			ck_assert_int_eq(sid_registry_get(r, SID_TOWER_ITEM, id, &e, &err), 0);
			ck_assert_int_eq(e.suffix, d[m].suffix[k]);
			ck_assert_int_lt(e.suffix, (int64_t)sizeof(used));
			ck_assert_msg(!used[e.suffix], "suffix %lld twice", (long long)e.suffix);
			used[e.suffix] = 1;
			max = e.suffix > max ? e.suffix : max;
		}
	sid_registry_close(r);
	r = reg_open(); /* from the store, not a handle's cache */
	for (int64_t want = 0; want <= max + 1; want++) {
		char id[32];
		if (want <= max && used[want])
			continue;
		snprintf(id, sizeof(id), "f%lld", (long long)want);
		assign1(r, id, 8, 8, 8, 0, &e);
		ck_assert_int_eq(e.suffix, want);
	}
	sid_registry_close(r);
}
END_TEST

#define RACE_N 60

struct delete_racer {
	int me;
	int64_t suffix[RACE_N]; /* the slot each of its ids was answered */
	int deleted[2][RACE_N]; /* ids of racer 0 and 1 this one deleted */
	int rc;
	struct sid_error err;
};

/* Assign "t<me>-<k>" under one code tuple, and after each odd k delete the
 * previous id of both racers in one call (so both try to delete it). */
static void *delete_race(void *p)
{
	struct delete_racer *d = p;
	struct sid_registry *r = NULL;

	if ((d->rc = sid_registry_open(target, 0, &r, &d->err)))
		return NULL;
	for (int k = 0; k < RACE_N && !d->rc; k++) {
		char id[16], a[16], b[16];
		const char *ids[2] = {a, b};
		int32_t codes[3] = {7, 7, 7};
		struct sid_reg_item it = {id, codes, NULL};
		struct sid_reg_entry e, out[2];
		snprintf(id, sizeof(id), "t%d-%d", d->me, k);
		d->rc = sid_registry_assign(r, SID_TOWER_ITEM, &it, 1, 3, 0, "v1", 0, &e, &d->err);
		d->suffix[k] = e.suffix;
		if (d->rc || !(k % 2))
			continue;
		snprintf(a, sizeof(a), "t0-%d", k - 1);
		snprintf(b, sizeof(b), "t1-%d", k - 1);
		d->rc = sid_registry_delete(r, SID_TOWER_ITEM, ids, 2, out, &d->err);
		d->deleted[0][k - 1] = out[0].deleted;
		d->deleted[1][k - 1] = out[1].deleted;
	}
	sid_registry_close(r);
	return NULL;
}

/* PostgreSQL: deletes racing new ids of the same codes from two
 * connections.  Every call succeeds; each id is deleted once; no two live
 * ids were answered one slot, each live id is where its answer put it, and
 * the next new id takes the smallest free suffix left. */
START_TEST(t_pg_delete_race)
{
	struct delete_racer d[2] = {{.me = 0}, {.me = 1}};
	pthread_t th[2];
	struct sid_registry *r;
	struct sid_reg_entry e;
	struct sid_error err;
	char used[4 * RACE_N] = {0};
	uint64_t count;
	size_t live = 0;
	int64_t smallest = -1;

	NEED_STORE();
	r = reg_open();
	assign1(r, "seed", 7, 7, 7, 0, &e); /* the schema and the levels */
	used[0] = 1;
	for (int i = 0; i < 2; i++)
		ck_assert_int_eq(pthread_create(&th[i], NULL, delete_race, &d[i]), 0);
	for (int i = 0; i < 2; i++)
		pthread_join(th[i], NULL);
	for (int i = 0; i < 2; i++)
		ck_assert_msg(d[i].rc == 0, "racer %d: %s", i, d[i].err.msg);
	for (int i = 0; i < 2; i++)
		for (int k = 0; k < RACE_N; k++) {
			char id[16];
			int dels = d[0].deleted[i][k] + d[1].deleted[i][k];
			int rc;
			snprintf(id, sizeof(id), "t%d-%d", i, k);
			ck_assert_msg(dels == (k % 2 == 0 && k + 1 < RACE_N), "%s deleted %d times",
				      id, dels);
			rc = sid_registry_get(r, SID_TOWER_ITEM, id, &e, &err);
			ck_assert_int_eq(rc, dels ? SID_ENOTFOUND : 0);
			if (rc)
				continue;
			live++;
			ck_assert_int_eq(e.suffix, d[i].suffix[k]);
			ck_assert_int_lt(e.suffix, (int64_t)sizeof(used));
			ck_assert_msg(!used[e.suffix], "suffix %lld twice", (long long)e.suffix);
			used[e.suffix] = 1;
		}
	ck_assert_int_eq(sid_registry_count(r, SID_TOWER_ITEM, &count, &err), 0);
	ck_assert_int_eq(count, live + 1);
	while (used[++smallest])
		;
	assign1(r, "last", 7, 7, 7, 0, &e);
	ck_assert_int_eq(e.suffix, smallest);
	sid_registry_close(r);
}
END_TEST

/* 1 when file @path holds the @len bytes @needle. */
static int file_holds(const char *path, const void *needle, size_t len)
{
	FILE *f = fopen(path, "rb");
	char *buf;
	long n;
	int found;

	if (!f)
		return 0;
	fseek(f, 0, SEEK_END);
	n = ftell(f);
	rewind(f);
	buf = malloc((size_t)n + 1);
	ck_assert_ptr_nonnull(buf);
	ck_assert_int_eq(fread(buf, 1, (size_t)n, f), (size_t)n);
	fclose(f);
	found = memmem(buf, (size_t)n, needle, len) != NULL;
	free(buf);
	return found;
}

/* SQLite: an erased id and its embedding leave no bytes in the store's
 * file or its WAL (secure_delete), while another id's stay. */
START_TEST(t_sqlite_delete_erases)
{
	static const char *const gone = "erase-me-7f3a9c", *kept = "keep-me-51d2e0";
	struct sid_registry *r;
	struct sid_reg_entry e, out[1];
	struct sid_error err;
	char wal[700];
	float emb[64], other[64];
	int32_t c[3] = {1, 2, 3};

	for (int i = 0; i < 64; i++) {
		emb[i] = 1000.0f + 0.37f * (float)i;
		other[i] = -2000.0f - 0.41f * (float)i;
	}
	r = reg_open();
	{
		struct sid_reg_item it[2] = {{gone, c, emb}, {kept, c, other}};
		struct sid_reg_entry res[2];
		ck_assert_int_eq(
		    sid_registry_assign(r, SID_TOWER_ITEM, it, 2, 3, 64, "v1", 0, res, &err), 0);
	}
	sid_registry_close(r); /* checkpointed into the file */
	ck_assert(file_holds(target, emb, sizeof(emb)));
	ck_assert(file_holds(target, gone, strlen(gone)));
	r = reg_open();
	delete_ok(r, SID_TOWER_ITEM, (const char *const[]){gone}, 1, out);
	ck_assert_int_eq(out[0].deleted, 1);
	snprintf(wal, sizeof(wal), "%s-wal", target);
	ck_assert(!file_holds(wal, emb, sizeof(emb))); /* nothing was written with them */
	sid_registry_close(r);
	ck_assert(!file_holds(target, emb, sizeof(emb)));
	ck_assert(!file_holds(target, gone, strlen(gone)));
	ck_assert(file_holds(target, other, sizeof(other)));
	ck_assert(file_holds(target, kept, strlen(kept)));
	r = reg_open();
	ck_assert_int_eq(sid_registry_get(r, SID_TOWER_ITEM, kept, &e, &err), 0);
	ck_assert_int_eq(e.D, 64);
	sid_registry_close(r);
}
END_TEST

/* ---- check ---- */

struct findings {
	int n;
	struct {
		enum sid_reg_problem problem;
		int kind;
		int64_t row;
		char id[SID_REG_ID_MAX + 1]; /* "" when the finding had none */
		char message[SID_ERROR_MSG_MAX];
	} f[16];
	int stop_at;			/* return 1 from this finding on (0: never) */
	uint64_t progress;		/* the walk's last word */
	uint64_t file_done, file_total; /* the file check's */
};

static int note_finding(const struct sid_reg_finding *f, void *ctx)
{
	struct findings *c = ctx;
	ck_assert_int_lt(c->n, 16);
	c->f[c->n].problem = f->problem;
	c->f[c->n].kind = f->kind;
	c->f[c->n].row = f->row;
	snprintf(c->f[c->n].id, sizeof(c->f[0].id), "%s", f->id ? f->id : "");
	snprintf(c->f[c->n].message, sizeof(c->f[0].message), "%s", f->message);
	c->n++;
	return c->stop_at && c->n >= c->stop_at;
}

static void note_progress(void *ctx, uint64_t done, uint64_t total)
{
	struct findings *c = ctx;

	if (!total) {
		ck_assert_uint_eq(c->file_total, 0); /* the walk comes first */
		c->progress = done;
		return;
	}
	ck_assert_uint_le(done, total);
	c->file_done = done;
	c->file_total = total;
}

/* The finding about @id (the first; there must be one). */
static int finding_of(const struct findings *c, const char *id)
{
	for (int i = 0; i < c->n; i++)
		if (!strcmp(c->f[i].id, id))
			return i;
	ck_abort_msg("no finding names id %s", id);
	return -1;
}

static void check_ok(struct sid_registry *r, int kind, struct findings *c,
		     struct sid_reg_check *res)
{
	struct sid_error err;
	int rc;

	sid_error_clear(&err);
	c->n = 0;
	rc = sid_registry_check(r, kind, note_finding, c, res, &err);
	ck_assert_msg(rc == 0, "check: %s", err.msg);
}

/* Every way an entry can be damaged, each found once, named by its id (an
 * id that is itself damaged, a control character in it: by its SQLite row)
 * and counted under its problem; the walk goes on past each to the end
 * (every entry is counted), where a walk (export) stops at the first.  A
 * store without damage has no finding. */
START_TEST(t_check)
{
	static const char *const lite[] = {
	    "UPDATE semid_assignment SET codes = x'0000000100000002' WHERE id = 'lv'",
	    "UPDATE semid_assignment SET kind = 7, id = 'k''d' WHERE id = 'kd'",
	    "UPDATE semid_embedding SET emb = x'0000' WHERE rid = "
	    "(SELECT rid FROM semid_assignment WHERE id = 'sz')",
	    "DELETE FROM semid_embedding WHERE rid = (SELECT rid FROM semid_assignment WHERE id = "
	    "'gone')",
	    "UPDATE semid_assignment SET id = 'z' || char(1) WHERE id = 'z'"};
	static const char *const postgres[] = {
	    "UPDATE semid_assignment SET codes = '\\x0000000100000002'::bytea WHERE id = 'lv'",
	    "UPDATE semid_assignment SET kind = 7, id = 'k''d' WHERE id = 'kd'",
	    "UPDATE semid_assignment SET embedding = '\\x0000'::bytea WHERE id = 'sz'",
	    "UPDATE semid_assignment SET embedding = NULL WHERE id = 'gone'",
	    "UPDATE semid_assignment SET id = 'z' || chr(1) WHERE id = 'z'"};
	static const char *const ids[] = {"a", "cd", "lv", "kd", "sz", "gone", "nan", "z"};
	struct sid_registry *r;
	struct sid_reg_check res;
	struct sid_reg_stats st;
	struct sid_reg_entry out[8];
	struct sid_reg_item it[8];
	struct findings c = {0};
	struct sid_error err;
	int32_t codes[8][3];
	float emb[8][4];
	char q_lite[300], q_pg[300];
	FILE *devnull;
	char kind_fix[SID_ERROR_MSG_MAX]; /* the kind finding's message */
	int64_t kind_row;
	int i;

	NEED_STORE();
	r = reg_open();
	for (i = 0; i < 8; i++) {
		codes[i][0] = i;
		codes[i][1] = codes[i][2] = 1;
		for (int d = 0; d < 4; d++)
			emb[i][d] = (float)(i + d);
		it[i] = (struct sid_reg_item){ids[i], codes[i], emb[i]};
	}
	emb[6][2] = NAN;
	ck_assert_int_eq(sid_registry_assign(r, SID_TOWER_ITEM, it, 8, 3, 4, "v1", 0, out, &err),
			 0);
	check_ok(r, -1, &c, &res);
	ck_assert_int_eq(res.entries, 8);
	ck_assert_int_eq(c.n, 1); /* the one stored so */
	ck_assert_int_eq(c.f[0].problem, SID_REG_P_EMBEDDING);
	ck_assert_str_eq(c.f[0].id, "nan");
	ck_assert_msg(strstr(c.f[0].message, "value 2 of its embedding is not finite"), "%s",
		      c.f[0].message);
	ck_assert_int_eq(res.store_checked, !g_pg);
	ck_assert_str_eq(res.store_how, g_pg ? "not checked: the database has no amcheck extension "
					       "(CREATE EXTENSION amcheck, as a superuser, lets "
					       "check use it)"
					     : "PRAGMA integrity_check");

	damage_codes("cd");
	for (i = 0; i < 5; i++) {
		snprintf(q_lite, sizeof(q_lite), "%s RETURNING 1", lite[i]);
		snprintf(q_pg, sizeof(q_pg), "WITH u AS (%s RETURNING 1) SELECT count(*) FROM u",
			 postgres[i]);
		ck_assert_int_eq(store_value(q_lite, q_pg), 1);
	}
	ck_assert_ptr_nonnull(devnull = fopen("/dev/null", "w"));
	ck_assert_int_eq(sid_registry_export(r, -1, SID_REG_TSV, 0, devnull, &err),
			 SID_EDATA); /* (a walk stops at the first) */
	fclose(devnull);
	ck_assert_int_eq(sid_registry_stats(r, SID_TOWER_ITEM, &st, &err), SID_EDATA);
	ck_assert_msg(strstr(err.msg, "cannot be read: its codes are damaged (semid registry check "
				      "names its id)"),
		      "%s", err.msg);
	sid_registry_set_progress(r, note_progress, &c);
	check_ok(r, -1, &c, &res);
	sid_registry_set_progress(r, NULL, NULL);
	ck_assert_int_eq(res.entries, 8);
	ck_assert_uint_eq(c.progress, 8);
	/* SQLite's file check: its rows (8 entries, 7 embeddings of rowids up
	 * to 8, one more), all done at the end */
	ck_assert_uint_eq(c.file_total, g_pg ? 0 : 17);
	ck_assert_uint_eq(c.file_done, c.file_total);
	ck_assert_int_eq(c.n, 7);
	ck_assert_int_eq(res.found[SID_REG_P_UNREADABLE], 2);
	ck_assert_int_eq(res.found[SID_REG_P_KIND], 1);
	ck_assert_int_eq(res.found[SID_REG_P_LEVELS], 1);
	ck_assert_int_eq(res.found[SID_REG_P_EMBEDDING], 3);
	ck_assert_int_eq(res.found[SID_REG_P_STORE], 0);
	i = finding_of(&c, "cd");
	ck_assert_int_eq(c.f[i].problem, SID_REG_P_UNREADABLE);
	ck_assert_int_eq(c.f[i].kind, SID_TOWER_ITEM);
	ck_assert_msg(strstr(c.f[i].message, "cannot be read"), "%s", c.f[i].message);
	ck_assert(g_pg ? c.f[i].row == -1 : c.f[i].row == 2); /* rowid: second stored */
	i = finding_of(&c, ""); /* z, whose id no request can name now: its row only */
	ck_assert_int_eq(c.f[i].problem, SID_REG_P_UNREADABLE);
	ck_assert_int_eq(c.f[i].kind, SID_TOWER_ITEM);
	ck_assert_msg(strstr(c.f[i].message, "cannot be read: its id is damaged"), "%s",
		      c.f[i].message);
	ck_assert(g_pg ? c.f[i].row == -1 : c.f[i].row == 8);
	i = finding_of(&c, "lv");
	ck_assert_int_eq(c.f[i].problem, SID_REG_P_LEVELS);
	ck_assert_msg(strstr(c.f[i].message, "2 levels of codes, where the item IDs have 3"), "%s",
		      c.f[i].message);
	/* of kind 7, so no delete of an item or a user reaches it: the finding
	 * says what erases it (its row, or SQL naming it), and that does */
	i = finding_of(&c, "k'd");
	ck_assert_int_eq(c.f[i].problem, SID_REG_P_KIND);
	ck_assert_int_eq(c.f[i].kind, 7);
	ck_assert(g_pg ? c.f[i].row == -1 : c.f[i].row == 4); /* rowid: fourth stored */
	ck_assert_msg(strstr(c.f[i].message,
			     g_pg ? "\"k'd\": kind 7 is neither item (0) nor user (1), so no "
				    "request reaches it (DELETE FROM semid_assignment WHERE kind = "
				    "7 AND id = 'k''d' erases it)"
				  : "\"k'd\" (row 4): kind 7 is neither item (0) nor user (1), so "
				    "no request reaches it (semid registry delete --rows 4 erases "
				    "it)"),
		      "%s", c.f[i].message);
	snprintf(kind_fix, sizeof(kind_fix), "%s", c.f[i].message);
	kind_row = c.f[i].row;
	i = finding_of(&c, "sz");
	ck_assert_int_eq(c.f[i].problem, SID_REG_P_EMBEDDING);
	ck_assert_msg(strstr(c.f[i].message, "embedding of 2 bytes"), "%s", c.f[i].message);
	i = finding_of(&c, "gone");
	ck_assert_int_eq(c.f[i].problem, SID_REG_P_EMBEDDING);
	ck_assert_msg(strstr(c.f[i].message, "embedding of 4 floats is kept, and none is"), "%s",
		      c.f[i].message);
	ck_assert_int_eq(c.f[finding_of(&c, "nan")].problem, SID_REG_P_EMBEDDING);

	/* one kind: the users (none) */
	check_ok(r, SID_TOWER_USER, &c, &res);
	ck_assert_int_eq(res.entries, 0);
	ck_assert_int_eq(c.n, 0);
	/* the callback stops it, and its answer is returned */
	c.n = 0;
	c.stop_at = 2;
	ck_assert_int_eq(sid_registry_check(r, -1, note_finding, &c, &res, &err), 1);
	ck_assert_int_eq(c.n, 2);
	ck_assert_int_eq(sid_registry_check(r, 5, NULL, NULL, &res, &err), SID_EINVAL);
	if (g_pg) { /* no row numbers: its damaged ids are named in SQL */
		int64_t row = 1;
		struct sid_reg_entry gone;
		ck_assert_int_eq(sid_registry_delete_rows(r, &row, 1, &gone, &err), SID_EINVAL);
		ck_assert_msg(strstr(err.msg, "entries have no row numbers"), "%s", err.msg);
	}
	if (g_pg) { /* the SQL the finding gives, as it gives it */
		char sql[SID_ERROR_MSG_MAX + 64], *q = strstr(kind_fix, "(DELETE");
		ck_assert_ptr_nonnull(q);
		*strstr(q, " erases it)") = '\0';
		snprintf(sql, sizeof(sql), "WITH u AS (%s RETURNING 1) SELECT count(*) FROM u",
			 q + 1);
		ck_assert_int_eq(store_value(NULL, sql), 1);
	} else {
		struct sid_reg_entry gone;
		ck_assert_int_eq(sid_registry_delete_rows(r, &kind_row, 1, &gone, &err), 0);
		ck_assert_int_eq(gone.deleted, 1);
		ck_assert_int_eq(gone.kind, 7);
		ck_assert_str_eq(gone.id, "k'd");
	}
	c.stop_at = 0;
	check_ok(r, -1, &c, &res); /* gone, and on SQLite its embedding with it */
	ck_assert_int_eq(res.entries, 7);
	ck_assert_int_eq(res.found[SID_REG_P_KIND], 0);
	ck_assert_int_eq(res.found[SID_REG_P_STORE], 0);
	ck_assert_int_eq(res.found[SID_REG_P_UNREADABLE], 2);
	sid_registry_close(r);
}
END_TEST

/* A damaged levels.<kind> (a hand edit, a bug of an older version) is
 * refused by name wherever the IDs' length is needed: it was read as
 * atoi's number, so "abc" or "0" meant "no IDs yet" and new ids were given
 * the model's length beside the stored ones, "17" a length no ID has. */
START_TEST(t_levels_damaged)
{
	static const char *const bad[] = {"abc", "0", "17", "", "3x", "-3"};
	int32_t codes[3] = {4, 5, 6};
	struct sid_reg_item it = {"new", codes, NULL};
	struct sid_reg_entry e;
	struct sid_registry *r;
	struct sid_error err;
	char q_lite[200], q_pg[240], want[200];
	int L;

	NEED_STORE();
	r = reg_open();
	assign1(r, "a", 1, 2, 3, 0, &e);
	sid_registry_close(r);
	for (size_t k = 0; k <= sizeof(bad) / sizeof(bad[0]); k++) {
		const char *v = k < sizeof(bad) / sizeof(bad[0]) ? bad[k] : "3";
		snprintf(q_lite, sizeof(q_lite),
			 "UPDATE semid_meta SET value = '%s' WHERE key = 'levels.item' RETURNING 1",
			 v);
		snprintf(q_pg, sizeof(q_pg),
			 "WITH u AS (UPDATE semid_meta SET value = '%s' WHERE key = 'levels.item' "
			 "RETURNING 1) SELECT count(*) FROM u",
			 v);
		ck_assert_int_eq(store_value(q_lite, q_pg), 1);
		r = reg_open();
		sid_error_clear(&err);
		if (!strcmp(v, "3")) { /* mended: as before */
			ck_assert_int_eq(sid_registry_levels(r, SID_TOWER_ITEM, &L, &err), 0);
			ck_assert_int_eq(L, 3);
			assign1(r, "new", 4, 5, 6, 0, &e);
			sid_registry_close(r);
			break;
		}
		snprintf(want, sizeof(want),
			 "damaged metadata: levels.item in semid_meta is \"%s\", not a level "
			 "count 1..16",
			 v);
		ck_assert_int_eq(sid_registry_levels(r, SID_TOWER_ITEM, &L, &err), SID_EFORMAT);
		ck_assert_msg(strstr(err.msg, want), "%s", err.msg);
		sid_error_clear(&err);
		ck_assert_int_eq(
		    sid_registry_assign(r, SID_TOWER_ITEM, &it, 1, 3, 0, "v1", 0, &e, &err),
		    SID_EFORMAT);
		ck_assert_msg(strstr(err.msg, want), "%s", err.msg);
		/* the user kind, whose levels are not set, is untouched */
		ck_assert_int_eq(sid_registry_levels(r, SID_TOWER_USER, &L, &err), 0);
		ck_assert_int_eq(L, 0);
		sid_registry_close(r);
	}
}
END_TEST

/* Run @sql on the SQLite store as another client would. */
static void sqlite_run(const char *sql)
{
	sqlite3 *db;
	ck_assert_int_eq(sqlite3_open(target, &db), SQLITE_OK);
	ck_assert_msg(sqlite3_exec(db, sql, NULL, NULL, NULL) == SQLITE_OK, "%s: %s", sql,
		      sqlite3_errmsg(db));
	sqlite3_close(db);
}

/* An embedding row of no entry (its entry deleted by hand with SQL) at
 * the rowid the next new entry takes: that entry, given no embedding, was
 * read as holding it (embedding_dim 0 and 4 bytes: every walk with
 * embeddings, export --embeddings, diff, check, stopped at it), and check
 * said only how many such rows there were.  Now a new entry leaves none at
 * its row, and check names each, by row, for delete --rows. */
static int count_emb(const struct sid_reg_entry *e, const float *emb, void *ctx)
{
	(void)e;
	*(int *)ctx += emb != NULL;
	return 0;
}

START_TEST(t_sqlite_orphan_embedding)
{
	struct sid_registry *r = reg_open();
	struct sid_reg_check res;
	struct sid_reg_entry e;
	struct findings c = {0};
	struct sid_error err;
	int with_emb = 0;

	assign1(r, "a", 1, 2, 3, 0, &e);
	assign1(r, "b", 1, 2, 4, 0, &e);
	sid_registry_close(r);
	sqlite_run("INSERT INTO semid_embedding VALUES (3, x'0000803f');"
		   "INSERT INTO semid_embedding VALUES (9, x'0000803f')");
	r = reg_open();
	check_ok(r, -1, &c, &res);
	ck_assert_int_eq(c.n, 2);
	ck_assert_int_eq(c.f[0].row, 3);
	ck_assert_int_eq(c.f[1].row, 9);
	assign1(r, "c", 1, 2, 5, 0, &e); /* row 3, no embedding given */
	ck_assert_int_eq(store_value("SELECT rid FROM semid_assignment WHERE id = 'c'", NULL), 3);
	ck_assert_int_eq(sid_registry_get(r, SID_TOWER_ITEM, "c", &e, &err), 0);
	ck_assert_int_eq(e.D, 0);
	ck_assert_msg(sid_registry_foreach(r, SID_TOWER_ITEM, 1, count_emb, &with_emb, &err) == 0,
		      "%s", err.msg);
	ck_assert_int_eq(with_emb, 0);
	check_ok(r, -1, &c, &res);
	ck_assert_int_eq(res.entries, 3);
	ck_assert_int_eq(c.n, 1); /* row 9 is still no one's */
	ck_assert_int_eq(c.f[0].problem, SID_REG_P_STORE);
	ck_assert_int_eq(c.f[0].row, 9);
	sid_registry_close(r);
}
END_TEST

/* The problems only SQLite can have: an id no request can name (found by
 * its rowid, and deleted by it), an embedding of no entry, an index that
 * disagrees with its table (PRAGMA integrity_check), and a page so damaged
 * the walk cannot go on: each a finding, and the check still ends (0). */
START_TEST(t_sqlite_check_file)
{
	struct sid_registry *r;
	struct sid_reg_check res;
	struct sid_reg_entry e;
	struct findings c = {0};
	unsigned char page[4096];
	int root, fd, cell;

	r = reg_open();
	assign1(r, "a", 1, 2, 3, 0, &e);
	assign1(r, "b", 1, 2, 4, 0, &e);
	assign1(r, "c", 1, 2, 5, 0, &e);
	sid_registry_close(r);
	sqlite_run("UPDATE semid_assignment SET id = x'ff41' WHERE id = 'b';"
		   "INSERT INTO semid_embedding VALUES (77, x'00000000')");
	r = reg_open();
	check_ok(r, -1, &c, &res);
	ck_assert_int_eq(res.entries, 3);
	ck_assert_int_eq(res.store_checked, 1);
	ck_assert_int_eq(c.n, 2);
	ck_assert_int_eq(c.f[0].problem, SID_REG_P_UNREADABLE);
	ck_assert_int_eq(c.f[0].row, 2);
	ck_assert_str_eq(c.f[0].id, "");
	ck_assert_msg(strstr(c.f[0].message, "row 2 cannot be read: its id is damaged"), "%s",
		      c.f[0].message);
	ck_assert_int_eq(c.f[1].problem, SID_REG_P_STORE);
	ck_assert_int_eq(c.f[1].kind, -1);
	ck_assert_int_eq(c.f[1].row, 77);
	ck_assert_msg(strstr(c.f[1].message, "row 77 of semid_embedding belongs to no entry") &&
			  strstr(c.f[1].message, "delete --rows 77 removes it"),
		      "%s", c.f[1].message);
	/* the entry no id names goes by its row (again: not there), and so
	 * does the embedding of no entry: its slot, not known, is found as a
	 * gap */
	{
		int64_t rows[4] = {2, 2, 77, 77};
		struct sid_reg_entry gone[4];
		struct sid_error derr;
		ck_assert_int_eq(sid_registry_delete_rows(r, rows, 4, gone, &derr), 0);
		ck_assert(gone[0].deleted == 1 && gone[1].deleted == 0 && gone[2].deleted == 1 &&
			  gone[3].deleted == 0);
		ck_assert(!gone[0].id[0] && !gone[1].id[0] && !gone[2].id[0] && !gone[3].id[0]);
	}
	ck_assert_int_eq(store_value("SELECT count(*) FROM semid_embedding", NULL), 0);
	ck_assert_int_eq(
	    store_value("SELECT count(*) FROM semid_meta WHERE key = 'gaps.item'", NULL), 1);
	check_ok(r, -1, &c, &res);
	ck_assert_int_eq(res.entries, 2);
	ck_assert_int_eq(res.found[SID_REG_P_UNREADABLE], 0);
	assign1(r, "b2", 1, 2, 4, 0, &e); /* three entries again, b2 at row 4 */
	ck_assert_int_eq(e.suffix, 0);
	sid_registry_close(r);

	/* the sid index (one leaf page here): its first entry's last code
	 * byte changed, so it no longer matches its row */
	sqlite_run("DELETE FROM semid_embedding");
	root = (int)store_value("SELECT rootpage FROM sqlite_master WHERE name = "
				"'semid_assignment_sid'",
				NULL);
	ck_assert_int_ge(fd = open(target, O_RDWR), 0);
	ck_assert_int_eq(pread(fd, page, sizeof(page), (off_t)(root - 1) * 4096), 4096);
	ck_assert_int_eq(page[0], 0x0a); /* a leaf of an index */
	cell = page[8] << 8 | page[9];
	/* payload length, header length 5, kind 0, a 12-byte blob, suffix 0,
	 * rowid 1: the codes are bytes 6..17 */
	ck_assert_int_eq(page[cell + 1], 5);
	ck_assert_int_eq(page[cell + 3], 36);
	page[cell + 17] ^= 0x40;
	ck_assert_int_eq(pwrite(fd, page, sizeof(page), (off_t)(root - 1) * 4096), 4096);
	r = reg_open();
	check_ok(r, -1, &c, &res);
	ck_assert_int_eq(res.entries, 3);
	ck_assert_int_eq(res.found[SID_REG_P_STORE], c.n);
	ck_assert_int_ge(c.n, 1);
	ck_assert_msg(strstr(c.f[0].message,
			     "integrity_check: row 1 missing from index semid_assignment_sid"),
		      "%s", c.f[0].message);
	sid_registry_close(r);

	/* the page all garbage: the walk (through that index) stops, the
	 * check goes on and says so */
	memset(page, 0xff, sizeof(page));
	ck_assert_int_eq(pwrite(fd, page, sizeof(page), (off_t)(root - 1) * 4096), 4096);
	close(fd);
	r = reg_open();
	check_ok(r, -1, &c, &res);
	ck_assert_int_eq(res.store_checked, 1);
	ck_assert_int_ge(c.n, 2);
	ck_assert_int_eq(res.found[SID_REG_P_STORE], c.n);
	ck_assert_msg(strstr(c.f[0].message, "malformed") &&
			  strstr(c.f[0].message, "the walk stopped there, after 0 entries"),
		      "%s", c.f[0].message);
	snprintf((char *)page, sizeof(page), "Page %d: ", root);
	ck_assert_msg(strstr(c.f[1].message, "integrity_check: ") &&
			  strstr(c.f[1].message, (char *)page),
		      "%s", c.f[1].message);
	sid_registry_close(r);
}
END_TEST

/* rowid of the stored item @id (SQLite) */
static int64_t rowid_of(const char *id)
{
	char sql[128];
	snprintf(sql, sizeof(sql), "SELECT rid FROM semid_assignment WHERE id = '%s'", id);
	return store_value(sql, NULL);
}

/* delete --rows erased whatever entry held the row given: one a check
 * named, gone since by other means, whose rowid SQLite gave (the largest
 * plus one) to the next new assignment, then lost that healthy entry.  An
 * entry its id names is now refused, left whole (out[i] filled, deleted 0);
 * what only a row names (a damaged id, codes or model_version, a kind no
 * one has, an embedding of no entry) is still deleted. */
START_TEST(t_sqlite_delete_rows_refuses_healthy)
{
	struct sid_registry *r;
	struct sid_reg_entry e, a, got[7];
	struct sid_reg_check res;
	struct findings c = {0};
	struct sid_error err;
	int64_t rows[7], bad_row;

	r = reg_open();
	assign1(r, "a", 1, 2, 3, 0, &a);
	assign1(r, "b", 1, 2, 4, 0, &e);
	assign1(r, "c", 1, 2, 5, 0, &e);
	assign1(r, "d", 1, 2, 6, 0, &e);
	assign1(r, "v", 1, 2, 7, 0, &e);
	sid_registry_close(r);
	sqlite_run("UPDATE semid_assignment SET id = x'ff41' WHERE id = 'b';"
		   "UPDATE semid_assignment SET codes = x'01' WHERE id = 'c';"
		   "UPDATE semid_assignment SET kind = 7 WHERE id = 'd';"
		   "UPDATE semid_assignment SET model_version = hex(zeroblob(2000)) WHERE id = 'v';"
		   "INSERT INTO semid_embedding VALUES (77, x'00000000')");
	r = reg_open();
	rows[0] = rowid_of("a");
	rows[1] = 2; /* b's, its id now unreadable */
	rows[2] = rowid_of("c");
	rows[3] = rowid_of("d");
	rows[4] = rowid_of("v");
	rows[5] = 77;
	rows[6] = 999;
	ck_assert_int_eq(sid_registry_delete_rows(r, rows, 7, got, &err), 0);
	/* a: refused, as a get gives it */
	ck_assert_int_eq(got[0].deleted, 0);
	ck_assert_int_eq(got[0].kind, SID_TOWER_ITEM);
	ck_assert_str_eq(got[0].id, "a");
	ck_assert_int_eq(got[0].L, 3);
	ck_assert(got[0].codes[0] == 1 && got[0].codes[1] == 2 && got[0].codes[2] == 3);
	ck_assert_int_eq(got[0].suffix, a.suffix);
	for (int i = 1; i <= 5; i++)
		ck_assert_msg(got[i].deleted == 1, "row %lld", (long long)rows[i]);
	ck_assert_str_eq(got[1].id, "");
	ck_assert_str_eq(got[3].id, "d"); /* readable: as it was */
	ck_assert_int_eq(got[3].kind, 7);
	ck_assert(got[6].deleted == 0 && !got[6].id[0]); /* no such row */
	ck_assert_int_eq(store_value("SELECT count(*) FROM semid_assignment", NULL), 1);
	ck_assert_int_eq(store_value("SELECT count(*) FROM semid_embedding", NULL), 0);
	ck_assert_int_eq(sid_registry_get(r, SID_TOWER_ITEM, "a", &e, &err), 0);
	ck_assert_int_eq(e.suffix, a.suffix);
	check_ok(r, -1, &c, &res);
	ck_assert_int_eq(res.entries, 1);
	ck_assert_int_eq(c.n, 0);

	/* the reuse: x's id damaged, named by check at the largest row; it
	 * goes by other means, y takes its rowid; the delete by that row
	 * finds y, and leaves it */
	assign1(r, "x", 1, 2, 8, 0, &e);
	sid_registry_close(r);
	sqlite_run("UPDATE semid_assignment SET id = x'ff42' WHERE id = 'x'");
	r = reg_open();
	check_ok(r, -1, &c, &res);
	ck_assert_int_eq(c.n, 1);
	ck_assert_int_eq(c.f[0].problem, SID_REG_P_UNREADABLE);
	bad_row = c.f[0].row;
	ck_assert_int_eq(bad_row, store_value("SELECT max(rid) FROM semid_assignment", NULL));
	sid_registry_close(r);
	sqlite_run("DELETE FROM semid_assignment WHERE id = x'ff42'");
	r = reg_open();
	assign1(r, "y", 1, 2, 9, 0, &e);
	ck_assert_int_eq(rowid_of("y"), bad_row); /* SQLite gave it x's rowid */
	ck_assert_int_eq(sid_registry_delete_rows(r, &bad_row, 1, got, &err), 0);
	ck_assert_int_eq(got[0].deleted, 0);
	ck_assert_str_eq(got[0].id, "y");
	ck_assert_int_eq(sid_registry_get(r, SID_TOWER_ITEM, "y", &a, &err), 0);
	ck_assert_int_eq(a.suffix, e.suffix);
	ck_assert_int_eq(store_value("SELECT count(*) FROM semid_assignment", NULL), 2);
	sid_registry_close(r);
}
END_TEST

/* PostgreSQL: the store itself is checked with amcheck once the database
 * has it (bt_index_check of both indexes, verify_heapam of the table); an
 * amcheck the session cannot call (in another schema), or a user who may
 * read the store but not run amcheck, is told so, the store then not
 * checked (the entries still are). */
START_TEST(t_pg_check_amcheck)
{
	struct sid_registry *r = NULL;
	struct sid_reg_check res;
	struct sid_reg_entry e;
	struct findings c = {0};
	struct sid_error err;
	char role[64], sql[200], weak[700];
	int rc;

	NEED_STORE();
	r = reg_open();
	assign1(r, "a", 1, 2, 3, 0, &e);
	assign1(r, "b", 1, 2, 3, 0, &e);
	/* in a schema the session does not search: told so */
	pg_sql(target, "CREATE SCHEMA elsewhere");
	pg_sql(target, "CREATE EXTENSION amcheck SCHEMA elsewhere");
	check_ok(r, -1, &c, &res);
	ck_assert_int_eq(res.store_checked, 0);
	ck_assert_msg(strstr(res.store_how, "or in a schema not on this user's search_path"), "%s",
		      res.store_how);
	pg_sql(target, "DROP EXTENSION amcheck");
	pg_sql(target, "CREATE EXTENSION amcheck");
	check_ok(r, -1, &c, &res);
	ck_assert_int_eq(res.entries, 2);
	ck_assert_int_eq(c.n, 0);
	ck_assert_int_eq(res.store_checked, 1);
	ck_assert_msg(strstr(res.store_how, "amcheck ") == res.store_how &&
			  strstr(res.store_how,
				 ": bt_index_check (heapallindexed) of both indexes, "
				 "verify_heapam of the table"),
		      "%s", res.store_how);
	sid_registry_close(r);

	snprintf(role, sizeof(role), "semid_reader_%d", (int)getpid());
	snprintf(sql, sizeof(sql), "CREATE ROLE %s LOGIN", role);
	pg_sql(pg.admin, sql);
	snprintf(sql, sizeof(sql), "GRANT SELECT ON semid_meta, semid_assignment TO %s", role);
	pg_sql(target, sql);
	snprintf(weak, sizeof(weak), "%s user=%s", target, role);
	r = NULL;
	rc = sid_registry_open(weak, SID_REG_READONLY, &r, &err);
	if (!rc) {
		c.n = 0;
		rc = sid_registry_check(r, -1, note_finding, &c, &res, &err);
		sid_registry_close(r);
	}
	snprintf(sql, sizeof(sql), "DROP OWNED BY %s", role);
	pg_sql(target, sql);
	snprintf(sql, sizeof(sql), "DROP ROLE %s", role);
	pg_sql(pg.admin, sql);
	ck_assert_msg(rc == 0, "%s", err.msg);
	ck_assert_int_eq(res.entries, 2);
	ck_assert_int_eq(res.store_checked, 0);
	ck_assert_msg(strstr(res.store_how, "this user may not run it (GRANT EXECUTE"), "%s",
		      res.store_how);
}
END_TEST

static void add_behaviour(TCase *tc)
{
	tcase_add_test(tc, t_check);
	tcase_add_test(tc, t_levels_damaged);
	tcase_add_test(tc, t_assign_suffixes);
	tcase_add_test(tc, t_reassign);
	tcase_add_test(tc, t_reassign_fills_gaps);
	tcase_add_test(tc, t_lookups);
	tcase_add_test(tc, t_bad_input);
	tcase_add_test(tc, t_group);
	tcase_add_test(tc, t_group_levels_known);
	tcase_add_test(tc, t_gaps_flag_rolled_back);
	tcase_add_test(tc, t_big_batch);
	tcase_add_test(tc, t_list_paging);
	tcase_add_test(tc, t_list_paging_while_writing);
	tcase_add_test(tc, t_stats);
	tcase_add_test(tc, t_diff);
	tcase_add_test(tc, t_diff_overflow);
	tcase_add_test(tc, t_import_line_bounded);
	tcase_add_test(tc, t_reassign_all);
	tcase_add_test(tc, t_reassign_all_batches);
	tcase_add_test(tc, t_reassign_all_expect);
	tcase_add_test(tc, t_reassign_all_expect_touched);
	tcase_add_test(tc, t_reassign_drops_embedding);
	tcase_add_test(tc, t_reassign_all_late_ids);
	tcase_add_test(tc, t_export_import);
	tcase_add_test(tc, t_threads_own_handles);
	tcase_add_test(tc, t_threads_shared_handle);
	tcase_add_test(tc, t_events);
	tcase_add_test(tc, t_processes);
	tcase_add_test(tc, t_sigkill);
	tcase_add_test(tc, t_delete);
	tcase_add_test(tc, t_delete_first_gap);
	tcase_add_test(tc, t_free_slots_concurrent);
	tcase_add_test(tc, t_unreadable_entry);
	tcase_add_test(tc, t_savepoint_forgets_gaps);
}

static Suite *registry_suite(void)
{
	Suite *s = suite_create("registry");
	TCase *tc = tcase_create("ids");
	tcase_add_test(tc, t_sid_parse);
	tcase_add_test(tc, t_id_check);
	tcase_add_test(tc, t_gap_and_paths);
	tcase_add_test(tc, t_pg_bad_conninfo_hides_password);
	tcase_add_test(tc, t_pg_conninfo_values);
	tcase_add_test(tc, t_entry_json);
	suite_add_tcase(s, tc);

	tc = tcase_create("sqlite");
	tcase_set_timeout(tc, 120);
	tcase_add_checked_fixture(tc, use_sqlite, done_sqlite);
	add_behaviour(tc);
	tcase_add_test(tc, t_sqlite_corrupt);
	tcase_add_test(tc, t_sqlite_refused_untouched);
	tcase_add_test(tc, t_sqlite_failed_open_tidy);
	tcase_add_test(tc, t_sqlite_read_outlives_writer);
	tcase_add_test(tc, t_sqlite_readonly);
	tcase_add_test(tc, t_sqlite_readonly_flag);
	tcase_add_test(tc, t_sqlite_peek);
	tcase_add_test(tc, t_sqlite_read_leaves_none);
	tcase_add_test(tc, t_sqlite_read_guarded);
	tcase_add_test(tc, t_sqlite_read_guarded_more);
	tcase_add_test(tc, t_sqlite_read_shm_torn);
	tcase_add_test(tc, t_sqlite_open_shm_torn);
	tcase_add_test(tc, t_sqlite_read_group_shm);
	tcase_add_test(tc, t_sqlite_shm_rebuilt_reader);
	tcase_add_test(tc, t_sqlite_immutable_recovers);
	tcase_add_test(tc, t_sqlite_fd_limit);
	tcase_add_test(tc, t_sqlite_read_only_fs);
	tcase_add_test(tc, t_sqlite_locked);
	tcase_add_test(tc, t_sqlite_read_open_waits_once);
	tcase_add_test(tc, t_sqlite_file_replaced);
	tcase_add_test(tc, t_sqlite_wal_deleted);
	tcase_add_test(tc, t_sqlite_wal_deleted_peer);
	tcase_add_test(tc, t_sqlite_wal_deleted_reader);
	tcase_add_test(tc, t_sqlite_read_close_stale);
	tcase_add_test(tc, t_sqlite_shm_deleted);
	tcase_add_test(tc, t_sqlite_shm_truncated);
	tcase_add_test(tc, t_sqlite_shm_truncated_open);
	tcase_add_test(tc, t_sqlite_shm_short_for_a_moment);
	tcase_add_test(tc, t_sqlite_checked_once);
	tcase_add_test(tc, t_sqlite_checkpointer_takes_no_signal);
	tcase_add_test(tc, t_sqlite_commit_synced);
	tcase_add_loop_test(tc, t_sqlite_known_one_snapshot, 0, 2);
	tcase_add_test(tc, t_sqlite_wal_bounded);
	tcase_add_test(tc, t_sqlite_wal_reader_held);
	tcase_add_test(tc, t_sqlite_backup_while_writing);
	tcase_add_test(tc, t_sqlite_delete_erases);
	tcase_add_test(tc, t_sqlite_check_file);
	tcase_add_test(tc, t_sqlite_delete_rows_refuses_healthy);
	tcase_add_test(tc, t_sqlite_orphan_embedding);
	suite_add_tcase(s, tc);

	tc = tcase_create("postgresql");
	tcase_set_timeout(tc, 120);
	tcase_add_unchecked_fixture(tc, pg_start, pg_stop);
	tcase_add_checked_fixture(tc, use_pg, done_sqlite);
	add_behaviour(tc);
	tcase_add_test(tc, t_pg_unavailable);
	tcase_add_test(tc, t_pg_schema_ahead);
	tcase_add_test(tc, t_pg_registry_in_another_schema);
	tcase_add_test(tc, t_pg_registry_schema_no_usage);
	tcase_add_test(tc, t_pg_schema_race);
	tcase_add_test(tc, t_pg_schema_race_repeatable_read);
	tcase_add_test(tc, t_pg_schema_race_serializable);
	tcase_add_test(tc, t_pg_schema_damaged);
	tcase_add_test(tc, t_pg_schema_table_dropped);
	tcase_add_test(tc, t_pg_cause_named);
	tcase_add_test(tc, t_pg_readonly_flag);
	tcase_add_test(tc, t_pg_readonly_no_lock);
	tcase_add_test(tc, t_pg_no_privilege);
	tcase_add_test(tc, t_pg_check_amcheck);
	tcase_add_test(tc, t_pg_retry_forgets_levels);
	tcase_add_test(tc, t_pg_assign_repeatable_read);
	tcase_add_test(tc, t_pg_move_out_gap);
	tcase_add_test(tc, t_pg_moves_cross);
	tcase_add_test(tc, t_pg_lost_race_fails);
	tcase_add_test(tc, t_pg_reassign_answer_lost);
	tcase_add_test(tc, t_pg_create_answer_lost);
	tcase_add_test(tc, t_pg_create_answer_lost_group);
	tcase_add_test(tc, t_pg_schema_unreadable);
	tcase_add_test(tc, t_pg_backup_refused);
	tcase_add_test(tc, t_pg_encoding);
	tcase_add_test(tc, t_pg_delete_race);
	suite_add_tcase(s, tc);
	return s;
}

int main(void)
{
	return check_run(registry_suite());
}
