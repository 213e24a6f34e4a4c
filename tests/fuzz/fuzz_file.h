/*
 * fuzz_file.h - for harnesses whose target opens a path (the .npy reader and
 * the trainer's text readers map their files): the input goes into an
 * anonymous memory file (memfd) reached as /proc/self/fd/N, so the real
 * open/fstat/mmap path runs with nothing written to disk.  Header-only; one
 * harness per program.
 */
#ifndef FUZZ_FILE_H
#define FUZZ_FILE_H

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <unistd.h>

/* Write @data to a new memfd; *path gets its /proc name.  Returns the fd. */
static int fuzz_file_new(const uint8_t *data, size_t size, char *path, size_t cap)
{
	int fd = memfd_create("fuzz-input", MFD_CLOEXEC);
	size_t off = 0;

	if (fd < 0) {
		perror("memfd_create");
		abort();
	}
	while (off < size) {
		ssize_t n = write(fd, data + off, size - off);
		if (n <= 0) {
			perror("write memfd");
			abort();
		}
		off += (size_t)n;
	}
	snprintf(path, cap, "/proc/self/fd/%d", fd);
	return fd;
}

#endif
