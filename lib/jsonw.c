/*
 * The JSON writer of jsonw.h.
 *
 * Strings are the only part that needs care: they hold whatever a caller
 * passed (a destination that failed to canonicalize, context fields, a
 * URL), and one raw control byte or stray non-UTF-8 byte would make a whole
 * audit line unreadable for a strict JSON reader.  Runs of bytes that need
 * nothing are copied in one piece; the rest goes one character at a time.
 */
#include "jsonw.h"

#include <stdint.h>

void egress__jsonw_fixed(egress__jsonw_t *w, char *buf, size_t cap) {
  *w = (egress__jsonw_t){ .buf = buf, .cap = cap, .failed = cap == 0 };
}

void egress__jsonw_heap(egress__jsonw_t *w, size_t cap) {
  if (cap == 0) cap = 1;
  char *buf = egress__malloc(cap);
  *w = (egress__jsonw_t){ .buf = buf, .cap = buf ? cap : 0, .grows = true, .failed = !buf };
}

/* Stop for good.  A heap buffer is freed at once; either way nothing fits
 * any more, which makes every later append a no-op. */
static bool fail(egress__jsonw_t *w) {
  if (w->grows) {
    egress__free(w->buf);
    w->buf = NULL;
    w->len = 0;
  }
  w->cap = w->len;
  w->failed = true;
  return false;
}

bool egress__jsonw_reserve(egress__jsonw_t *w, size_t n) {
  if (w->failed) return false;
  if (w->cap - w->len > n) return true;
  if (!w->grows || n >= SIZE_MAX / 2 - w->len) return fail(w);
  /* Double, so that a long text costs O(log n) reallocations. */
  size_t want = w->len + n + 1;
  size_t cap = w->cap * 2;
  if (cap < want) cap = want;
  char *buf = egress__realloc(w->buf, cap);
  if (!buf) return fail(w);
  w->buf = buf;
  w->cap = cap;
  return true;
}

/* What a byte needs inside a JSON string: 0 nothing, 1 an escape, 2 the
 * start of a multi-byte (or ill-formed) UTF-8 sequence. */
static const unsigned char byte_class[256] = {
  /* 0x00-0x1F: control characters */
  1, 1, 1, 1, 1, 1,         1,          1,          1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1,
  1, 1, 1, 1, 1, ['"'] = 1, ['\\'] = 1, [0x80] = 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2,
  2, 2, 2, 2, 2, 2,         2,          2,          2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2,
  2, 2, 2, 2, 2, 2,         2,          2,          2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2,
  2, 2, 2, 2, 2, 2,         2,          2,          2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2,
  2, 2, 2, 2, 2, 2,         2,          2,          2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2,
};

/* The escape of an ASCII byte of class 1 into out (at most 6 bytes). */
static size_t escape_ascii(unsigned char c, char *out) {
  static const char hex[] = "0123456789abcdef";
  out[0] = '\\';
  switch (c) {
    case '"': out[1] = '"'; return 2;
    case '\\': out[1] = '\\'; return 2;
    case '\b': out[1] = 'b'; return 2;
    case '\f': out[1] = 'f'; return 2;
    case '\n': out[1] = 'n'; return 2;
    case '\r': out[1] = 'r'; return 2;
    case '\t': out[1] = 't'; return 2;
    default:
      memcpy(out + 1, "u00", 3);
      out[4] = hex[c >> 4];
      out[5] = hex[c & 0x0F];
      return 6;
  }
}

/* Whether any of the eight bytes of X needs more than a copy: a control
 * byte (below 0x20), '"', '\\' or a byte of a multi-byte sequence (0x80 and
 * up).  The classic "has a zero byte" test, (v - 0x01..) & ~v & 0x80..,
 * may mark the wrong byte of a word but never misses one, and a marked
 * word only goes to the byte-by-byte scan: that is all it decides. */
static inline bool word_needs_care(uint64_t x) {
  const uint64_t ones = 0x0101010101010101u, highs = 0x8080808080808080u;
  uint64_t quote = x ^ (ones * '"'), backslash = x ^ (ones * '\\');
  uint64_t control = (x - ones * 0x20) & ~x;
  uint64_t zq = (quote - ones) & ~quote, zb = (backslash - ones) & ~backslash;
  return ((control | zq | zb) & highs) != 0 || (x & highs) != 0;
}

void egress__jsonw_escape(egress__jsonw_t *w, const char *s, size_t n) {
  const unsigned char *u = (const unsigned char *)s;
  size_t i = 0;
  while (i < n) {
    /* The longest run that goes out as it is: plain ASCII, and well-formed
     * multi-byte sequences.  Plain text is skipped a word at a time. */
    size_t j = i;
    for (;;) {
      for (uint64_t x; j + 8 <= n; j += 8) {
        memcpy(&x, u + j, 8);
        if (word_needs_care(x)) break;
      }
      while (j < n && byte_class[u[j]] == 0) j++;
      if (j == n || byte_class[u[j]] == 1) break;
      size_t bad, k = egress__utf8_seq(u + j, n - j, &bad);
      if (!k) break;
      j += k;
    }
    if (j > i) {
      egress__jsonw_raw(w, s + i, j - i);
      i = j;
      if (i == n) break;
    }
    char esc[6];
    if (byte_class[u[i]] == 1) {
      egress__jsonw_raw(w, esc, escape_ascii(u[i], esc));
      i++;
    } else {
      size_t bad;
      (void)egress__utf8_seq(u + i, n - i, &bad);
      EGRESS__JSONW_LIT(w, "\xEF\xBF\xBD"); /* U+FFFD */
      i += bad;
    }
  }
}

void egress__jsonw_string(egress__jsonw_t *w, const char *s) {
  if (!s) {
    egress__jsonw_null(w);
    return;
  }
  EGRESS__JSONW_LIT(w, "\"");
  egress__jsonw_escape(w, s, strlen(s));
  EGRESS__JSONW_LIT(w, "\"");
}

void egress__jsonw_uint(egress__jsonw_t *w, unsigned long long v) {
  /* Formatted aside, so that a fixed buffer holds exactly what fits. */
  char digits[24];
  egress__jsonw_raw(w, digits, (size_t)(egress__put_uint(digits, v, 1) - digits));
}

void egress__jsonw_int(egress__jsonw_t *w, long long v) {
  if (v < 0) {
    EGRESS__JSONW_LIT(w, "-");
    egress__jsonw_uint(w, 0ULL - (unsigned long long)v);
  } else {
    egress__jsonw_uint(w, (unsigned long long)v);
  }
}

char *egress__jsonw_finish(egress__jsonw_t *w, size_t *len) {
  if (w->failed) return NULL; /* a heap buffer is already freed */
  w->buf[w->len] = '\0';
  if (len) *len = w->len;
  char *out = w->buf;
  w->buf = NULL;
  w->cap = w->len = 0;
  w->failed = true;
  return out;
}
