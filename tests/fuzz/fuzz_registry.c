/*
 * fuzz_registry.c - libFuzzer harness for what the ID registry parses from
 * users: sids, prefixes and ids (HTTP paths, query strings, CLI arguments)
 * and the files of `semid registry import`.
 *
 * The first byte picks what the rest is:
 *   0  a string: sid_reg_sid_parse, sid_reg_prefix_parse and sid_reg_id_check.
 *      An accepted sid or prefix must be canonical (formatting what was parsed
 *      gives the input back); sid_reg_id_check must agree with an independent
 *      UTF-8 and control-character check written here.
 *   1  a TSV import file, 2  a JSON-lines import file, into one SQLite store
 *      per process (in /dev/shm when it can, so fsync costs nothing).  An
 *      import either succeeds or fails with SID_EFORMAT naming a line of the
 *      file; a successful import run again adds nothing (idempotence), and
 *      sid_registry_check then finds nothing wrong with the store.
 * A rejection must carry a message.  Built and run by tests/fuzz.mk.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "registry.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void fail(const char *what, const char *detail)
{
	fprintf(stderr, "fuzz_registry: %s%s%s\n", what, detail ? ": " : "", detail ? detail : "");
	abort();
}

/* The rule of proto/registry.md, written independently of registry.c:
 * 1..SID_REG_ID_MAX bytes of well-formed UTF-8 (no overlong forms, no
 * surrogates, nothing above U+10FFFF) without U+0000..U+001F and U+007F. */
static int id_ok(const unsigned char *s, size_t n)
{
	if (n == 0 || n > SID_REG_ID_MAX)
		return 0;
	for (size_t i = 0; i < n;) {
		unsigned c = s[i], len, cp;
		if (c < 0x80) {
			if (c < 0x20 || c == 0x7f)
				return 0;
			i++;
			continue;
		}
		if (c >= 0xc2 && c <= 0xdf)
			len = 2, cp = c & 0x1f;
		else if (c >= 0xe0 && c <= 0xef)
			len = 3, cp = c & 0x0f;
		else if (c >= 0xf0 && c <= 0xf4)
			len = 4, cp = c & 0x07;
		else
			return 0;
		if (i + len > n)
			return 0;
		for (unsigned k = 1; k < len; k++) {
			if ((s[i + k] & 0xc0) != 0x80)
				return 0;
			cp = cp << 6 | (s[i + k] & 0x3f);
		}
		if ((len == 3 && cp < 0x800) || (len == 4 && (cp < 0x10000 || cp > 0x10ffff)) ||
		    (cp >= 0xd800 && cp <= 0xdfff))
			return 0;
		i += len;
	}
	return 1;
}

static void check_text(const char *s, size_t n)
{
	int32_t codes[SID_MAX_LEVELS];
	char back[SID_REG_SID_MAX + 32];
	struct sid_error err;
	int64_t suffix;
	int L, p, rc;

	sid_error_clear(&err);
	if (sid_reg_sid_parse(s, codes, &L, &suffix, &err) == 0) {
		if (L < 1 || L > SID_MAX_LEVELS || suffix < 0)
			fail("sid accepted with a bad shape", s);
		for (int l = 0; l < L; l++)
			if (codes[l] < 0 || codes[l] >= SID_MAX_CODEBOOK)
				fail("sid accepted with a code out of range", s);
		if (sid_reg_sid_format(codes, L, suffix, back, sizeof(back)) >= (int)sizeof(back) ||
		    strcmp(back, s))
			fail("accepted sid is not canonical", s);
	} else if (!err.msg[0] || err.code != SID_EINVAL) {
		fail("sid refused without SID_EINVAL and a message", s);
	}

	sid_error_clear(&err);
	if (sid_reg_prefix_parse(s, codes, &p, &err) == 0) {
		size_t len = 0;
		if (p < 0 || p > SID_MAX_LEVELS || (p == 0) != (n == 0))
			fail("prefix accepted with a bad length", s);
		back[0] = '\0';
		for (int l = 0; l < p; l++) {
			if (codes[l] < 0 || codes[l] >= SID_MAX_CODEBOOK)
				fail("prefix accepted with a code out of range", s);
			len += (size_t)snprintf(back + len, sizeof(back) - len, "%s%d",
						l ? "-" : "", (int)codes[l]);
		}
		if (strcmp(back, s))
			fail("accepted prefix is not canonical", s);
	} else if (!err.msg[0] || err.code != SID_EINVAL) {
		fail("prefix refused without SID_EINVAL and a message", s);
	}

	sid_error_clear(&err);
	rc = sid_reg_id_check(s, &err);
	if ((rc == 0) != id_ok((const unsigned char *)s, n))
		fail(rc == 0 ? "id accepted against the rule" : "id refused against the rule", s);
	if (rc && !err.msg[0])
		fail("id refused without a message", s);
}

static struct sid_registry *reg;
static char dir[64], path[96];

/* The store goes when the fuzzer exits (a crash leaves it for a look). */
static void store_remove(void)
{
	static const char *const ext[] = {"", "-wal", "-shm"};
	char p[128];

	sid_registry_close(reg);
	for (int i = 0; i < 3; i++) {
		snprintf(p, sizeof(p), "%s%s", path, ext[i]);
		unlink(p);
	}
	rmdir(dir);
}

static struct sid_registry *store(void)
{
	struct sid_error err;

	if (reg)
		return reg;
	snprintf(dir, sizeof(dir), "%s/fuzz_registry.XXXXXX",
		 access("/dev/shm", W_OK) == 0 ? "/dev/shm" : "/tmp");
	if (!mkdtemp(dir))
		fail("mkdtemp", dir);
	snprintf(path, sizeof(path), "%s/r.db", dir);
	sid_error_clear(&err);
	if (sid_registry_open(path, 0, &reg, &err))
		fail("cannot open the store", err.msg);
	atexit(store_remove);
	return reg;
}

static int import(enum sid_reg_format fmt, const uint8_t *data, size_t size,
		  struct sid_reg_import_result *res, struct sid_error *err)
{
	/* fmemopen refuses a size of 0: an empty file is /dev/null */
	FILE *f = size ? fmemopen((void *)data, size, "r") : fopen("/dev/null", "r");
	int rc;

	if (!f)
		fail("fmemopen", NULL);
	sid_error_clear(err);
	rc = sid_registry_import(store(), fmt, f, NULL, NULL, res, err);
	fclose(f);
	return rc;
}

static int check_found(const struct sid_reg_finding *f, void *ctx)
{
	fail("the check of an imported store found a problem", f->message);
	return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct sid_reg_import_result res, again;
	struct sid_error err;
	enum sid_reg_format fmt;
	int rc;

	if (size == 0)
		return 0;
	if (data[0] % 3 == 0) {
		char *s = malloc(size);
		if (!s)
			fail("out of memory", NULL);
		memcpy(s, data + 1, size - 1);
		s[size - 1] = '\0';
		check_text(s, strlen(s));
		free(s);
		return 0;
	}
	fmt = data[0] % 3 == 1 ? SID_REG_TSV : SID_REG_JSONL;
	rc = import(fmt, data + 1, size - 1, &res, &err);
	if (rc) {
		if (rc != SID_EFORMAT || err.index < 1 || !err.msg[0])
			fail("import failed other than on a malformed line", err.msg);
		return 0;
	}
	rc = import(fmt, data + 1, size - 1, &again, &err);
	if (rc)
		fail("a successful import failed when run again", err.msg);
	if (again.added || again.same + again.conflicts != res.added + res.same + res.conflicts)
		fail("importing the same file again changed the store", NULL);
	if (res.added) { /* nothing an import stores is damage to a check */
		struct sid_reg_check chk;
		if (sid_registry_check(store(), -1, check_found, NULL, &chk, &err))
			fail("the check of an imported store failed", err.msg);
	}
	return 0;
}
