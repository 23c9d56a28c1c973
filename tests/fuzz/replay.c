/*
 * Corpus replay without libFuzzer: feeds every file of the directories (or
 * the files) named on the command line to the target's
 * LLVMFuzzerTestOneInput, in name order so that runs are reproducible.  A
 * crash or a failed invariant aborts the process and so fails the test.
 *
 *   replay_NAME NAME DIR_OR_FILE...
 */
#define _GNU_SOURCE 1
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <dirent.h>
#include <errno.h>
#include <sys/stat.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static int replay_file(const char *path) {
  FILE *f = fopen(path, "rb");
  if (!f) {
    fprintf(stderr, "replay: %s: %s\n", path, strerror(errno));
    return -1;
  }
  size_t cap = 4096, len = 0;
  uint8_t *buf = malloc(cap);
  if (!buf) abort();
  for (;;) {
    if (len == cap) {
      cap *= 2;
      uint8_t *grown = realloc(buf, cap);
      if (!grown) abort();
      buf = grown;
    }
    size_t n = fread(buf + len, 1, cap - len, f);
    if (n == 0) break;
    len += n;
  }
  int err = ferror(f);
  fclose(f);
  if (err) {
    fprintf(stderr, "replay: %s: read error\n", path);
    free(buf);
    return -1;
  }
  /* An exact-size copy, as libFuzzer hands over, so that ASan sees any read
   * past the end of the input. */
  uint8_t *exact = malloc(len ? len : 1);
  if (!exact) abort();
  if (len) memcpy(exact, buf, len);
  free(buf);
  LLVMFuzzerTestOneInput(exact, len);
  free(exact);
  return 0;
}

static int by_name(const struct dirent **a, const struct dirent **b) {
  return strcmp((*a)->d_name, (*b)->d_name);
}

int main(int argc, char **argv) {
  long passed = 0, failed = 0;
  if (argc < 3) {
    fprintf(stderr, "usage: %s NAME DIR_OR_FILE...\n", argv[0]);
    return 64;
  }
  for (int i = 2; i < argc; i++) {
    struct stat st;
    if (stat(argv[i], &st) != 0) {
      fprintf(stderr, "replay: %s: %s\n", argv[i], strerror(errno));
      failed++;
      continue;
    }
    if (!S_ISDIR(st.st_mode)) {
      if (replay_file(argv[i]) == 0)
        passed++;
      else
        failed++;
      continue;
    }
    struct dirent **names = NULL;
    int n = scandir(argv[i], &names, NULL, by_name);
    if (n < 0) {
      fprintf(stderr, "replay: %s: %s\n", argv[i], strerror(errno));
      failed++;
      continue;
    }
    for (int k = 0; k < n; k++) {
      char path[4096];
      if (names[k]->d_name[0] != '.') {
        snprintf(path, sizeof path, "%s/%s", argv[i], names[k]->d_name);
        if (stat(path, &st) == 0 && S_ISREG(st.st_mode)) {
          if (replay_file(path) == 0)
            passed++;
          else
            failed++;
        }
      }
      free(names[k]);
    }
    free(names);
  }
  /* An empty corpus proves nothing: count it as a failure. */
  if (passed == 0 && failed == 0) failed = 1;
  printf("EGRESS-TESTS: replay-%s passed=%ld failed=%ld\n", argv[1], passed, failed);
  return failed ? 1 : 0;
}
