/*
 * Allocation wrappers.  Everything the library allocates goes through here so
 * that the tests can fail the Nth allocation and prove that every failure
 * path ends in an error status and a deny, never a crash or an allow.
 */
#include "egress_private.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Injection state is process-wide and only touched by tests; relaxed atomics
 * keep it race-free when a test drives several threads. */
static atomic_long fail_at; /* 0: no injection */
static atomic_long alloc_count;

void egress__alloc_fail_at(long nth) {
  atomic_store_explicit(&alloc_count, 0, memory_order_relaxed);
  atomic_store_explicit(&fail_at, nth, memory_order_relaxed);
}

long egress__alloc_count(void) { return atomic_load_explicit(&alloc_count, memory_order_relaxed); }

static bool should_fail(void) {
  long n = atomic_fetch_add_explicit(&alloc_count, 1, memory_order_relaxed) + 1;
  long target = atomic_load_explicit(&fail_at, memory_order_relaxed);
  return target > 0 && n == target;
}

void *egress__malloc(size_t size) {
  if (should_fail()) return NULL;
  return malloc(size ? size : 1);
}

void *egress__calloc(size_t nmemb, size_t size) {
  if (should_fail()) return NULL;
  /* calloc checks nmemb * size for overflow itself. */
  return calloc(nmemb ? nmemb : 1, size ? size : 1);
}

void *egress__realloc(void *ptr, size_t size) {
  if (should_fail()) return NULL;
  return realloc(ptr, size ? size : 1);
}

void *egress__aligned_calloc(size_t alignment, size_t size) {
  if (should_fail()) return NULL;
  /* aligned_alloc wants a size that is a multiple of the alignment. */
  size_t rounded = (size ? size : 1) + alignment - 1;
  if (rounded < size) return NULL;
  rounded -= rounded % alignment;
  void *p = aligned_alloc(alignment, rounded);
  if (p) memset(p, 0, rounded);
  return p;
}

void egress__free(void *ptr) { free(ptr); }

char *egress__strndup(const char *s, size_t len) {
  if (!s || len == SIZE_MAX) return NULL;
  char *copy = egress__malloc(len + 1);
  if (!copy) return NULL;
  memcpy(copy, s, len);
  copy[len] = '\0';
  return copy;
}

char *egress__strdup(const char *s) { return s ? egress__strndup(s, strlen(s)) : NULL; }

void egress_free(void *ptr) { egress__free(ptr); }

egress_status_t egress__errf(char *errbuf, size_t errlen, egress_status_t status, const char *fmt, ...) {
  if (errbuf && errlen) {
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(errbuf, errlen, fmt, ap);
    va_end(ap);
  }
  return status;
}

const char *egress__strerror(int err, char *buf, size_t len) {
  /* The GNU strerror_r (_GNU_SOURCE): returns the text, in buf or static. */
  return strerror_r(err, buf, len);
}
