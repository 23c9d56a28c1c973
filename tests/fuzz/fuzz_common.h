/*
 * Shared by the fuzz targets.  Each target is built twice: with libFuzzer
 * (clang, -Dfuzz=true) and, in every build, linked with replay.c so that the
 * normal test suite replays the seed corpus through the same code.
 *
 * Invariant failures abort() with a message rather than assert(): release
 * builds define NDEBUG, and the replay must be able to fail there too.
 */
#ifndef EGRESS_FUZZ_COMMON_H
#define EGRESS_FUZZ_COMMON_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define FUZZ_REQUIRE(cond, ...)                                                    \
  do {                                                                             \
    if (!(cond)) {                                                                 \
      fprintf(stderr, "%s:%d: invariant failed: %s: ", __FILE__, __LINE__, #cond); \
      fprintf(stderr, __VA_ARGS__);                                                \
      fputc('\n', stderr);                                                         \
      abort();                                                                     \
    }                                                                              \
  } while (0)

/* A NUL-terminated copy of the input (C-string APIs); caller frees. */
static inline char *fuzz_cstr(const uint8_t *data, size_t size) {
  char *s = malloc(size + 1);
  if (!s) abort();
  if (size) memcpy(s, data, size);
  s[size] = '\0';
  return s;
}

/* Temporary files made by fuzz_temp_file(), removed at exit. */
static char fuzz_temp_paths[4][256];

static inline void fuzz_temp_cleanup(void) {
  for (size_t i = 0; i < 4; i++)
    if (fuzz_temp_paths[i][0]) unlink(fuzz_temp_paths[i]);
}

/* Write @p text to a fresh temporary file and return its path (valid until
 * exit, when the file is removed).  Used for hosts files, so that lookups
 * read a file and never reach the network. */
static inline const char *fuzz_temp_file(const char *text) {
  size_t slot = 0;
  while (slot < 4 && fuzz_temp_paths[slot][0]) slot++;
  if (slot == 4) abort();
  char *buf = fuzz_temp_paths[slot];
  const char *tmp = getenv("TMPDIR");
  snprintf(buf, sizeof fuzz_temp_paths[slot], "%s/egress-fuzz-XXXXXX", tmp && *tmp ? tmp : "/tmp");
  int fd = mkstemp(buf);
  if (fd < 0) abort();
  size_t len = strlen(text);
  if (len && write(fd, text, len) != (ssize_t)len) abort();
  close(fd);
  if (slot == 0) atexit(fuzz_temp_cleanup);
  return buf;
}

#endif
