/*
 * fuzz_config.c - libFuzzer harness for semid-server's config file reader
 * (server/config.h: srv_config_load_file, then srv_config_validate), which
 * reads an operator's JSON file and must refuse a bad one with a message
 * naming the key, never exit or crash.
 *
 * The input is the file (through a memfd, fuzz_file.h), applied over the
 * defaults.  An accepted file must leave every string field NUL-terminated
 * inside its array; a rejection must carry a message.
 * Built and run by tests/fuzz.mk (make fuzz, make fuzz-smoke).
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "config.h"
#include "fuzz_file.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void fail(const char *what)
{
	fprintf(stderr, "fuzz_config: %s\n", what);
	abort();
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct srv_config c;
	struct sid_error err;
	char path[64];
	int fd = fuzz_file_new(data, size, path, sizeof(path));

	srv_config_defaults(&c);
	sid_error_clear(&err);
	if (srv_config_load_file(&c, path, &err) < 0) {
		if (!err.msg[0])
			fail("file rejected without a message");
	} else {
		if (!memchr(c.listen, 0, sizeof(c.listen)) ||
		    !memchr(c.model, 0, sizeof(c.model)) ||
		    !memchr(c.admin_token, 0, sizeof(c.admin_token)) ||
		    !memchr(c.registry, 0, sizeof(c.registry)))
			fail("a string setting is not terminated inside its field");
		sid_error_clear(&err);
		if (srv_config_validate(&c, &err) < 0 && !err.msg[0])
			fail("config refused without a message");
	}
	close(fd);
	return 0;
}
