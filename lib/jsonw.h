/*
 * A JSON text writer for output of a fixed shape (jsonw.c): the decision
 * events and egressctl's decision lines.  The caller writes keys and
 * punctuation as literals and values through the typed appends; the writer
 * escapes strings (RFC 8259) and repairs ill-formed UTF-8 with U+FFFD, so
 * the text is valid JSON whatever bytes a caller passed.
 *
 * Errors are sticky: an append that does not fit (a fixed buffer is full, or
 * growing failed) marks the writer failed and every later append is a
 * no-op, so a builder writes its whole shape and checks once, at
 * egress__jsonw_finish().  Private to the library; never installed.
 */
#ifndef EGRESS_JSONW_H
#define EGRESS_JSONW_H

#include "egress_private.h"

#include <string.h>

typedef struct egress__jsonw {
  char *buf;
  size_t len;  /* bytes written */
  size_t cap;  /* bytes of buf; one is always kept for the final NUL */
  bool grows;  /* buf comes from egress__malloc and may be reallocated */
  bool failed; /* something did not fit: the text is incomplete */
} egress__jsonw_t;

/* A writer into the caller's @p buf of @p cap bytes, which it never grows. */
void egress__jsonw_fixed(egress__jsonw_t *w, char *buf, size_t cap);
/* A writer into an egress__malloc() buffer of @p cap bytes to start with,
 * grown (egress__realloc) as needed.  When that first allocation fails the
 * writer starts failed, which shows at egress__jsonw_finish(). */
void egress__jsonw_heap(egress__jsonw_t *w, size_t cap);

/* Make room for @p n more bytes; false (and the writer failed) when it
 * cannot.  Callers of the low-level appends below use it once for a run of
 * small writes. */
bool egress__jsonw_reserve(egress__jsonw_t *w, size_t n);

/* @p n bytes of JSON text as they are: punctuation, keys, literals. */
static inline void egress__jsonw_raw(egress__jsonw_t *w, const char *s, size_t n) {
  if (w->cap - w->len <= n && !egress__jsonw_reserve(w, n)) return;
  memcpy(w->buf + w->len, s, n);
  w->len += n;
}
/* A string literal of the source: its bytes as JSON text. */
#define EGRESS__JSONW_LIT(w, lit) egress__jsonw_raw((w), "" lit, sizeof(lit) - 1)

/* The body of a JSON string (no quotes): s[0..n) escaped, ill-formed UTF-8
 * replaced by U+FFFD per maximal subpart.  Escapes are those of cJSON's
 * printer (\" \\ \b \f \n \r \t, other controls \u00xx), so events keep
 * the exact bytes they have always had; everything else is copied, U+2028
 * and U+2029 included (RFC 8259 does not ask for their escape). */
void egress__jsonw_escape(egress__jsonw_t *w, const char *s, size_t n);
/* A quoted string of the NUL-terminated @p s, or null when @p s is NULL. */
void egress__jsonw_string(egress__jsonw_t *w, const char *s);
/* Decimal integers. */
void egress__jsonw_int(egress__jsonw_t *w, long long v);
void egress__jsonw_uint(egress__jsonw_t *w, unsigned long long v);
static inline void egress__jsonw_null(egress__jsonw_t *w) { EGRESS__JSONW_LIT(w, "null"); }
static inline void egress__jsonw_bool(egress__jsonw_t *w, bool v) {
  if (v)
    EGRESS__JSONW_LIT(w, "true");
  else
    EGRESS__JSONW_LIT(w, "false");
}

/* The NUL-terminated text and its length, or NULL when any append failed.
 * A heap writer hands its buffer over (the caller frees it with
 * egress__free) or, on failure, frees it; a fixed writer returns the
 * caller's buffer.  Either way the writer is spent. */
char *egress__jsonw_finish(egress__jsonw_t *w, size_t *len);

#endif
