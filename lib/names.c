/*
 * Stable names and messages of statuses, reasons and outcomes, all generated
 * from the X-macro lists in egress.h so that no code can lack a string; and
 * the small text helpers that events and messages share.
 */
#include "egress_private.h"

#include <string.h>
#include <time.h>

const char *egress_status_name(egress_status_t status) {
  switch (status) {
#define EGRESS_NAME_CASE_(name, value, token, message) \
  case EGRESS_##name: return token;
    EGRESS_STATUS_MAP(EGRESS_NAME_CASE_)
#undef EGRESS_NAME_CASE_
  }
  return "unknown";
}

const char *egress_strerror(egress_status_t status) {
  switch (status) {
#define EGRESS_MSG_CASE_(name, value, token, message) \
  case EGRESS_##name: return message;
    EGRESS_STATUS_MAP(EGRESS_MSG_CASE_)
#undef EGRESS_MSG_CASE_
  }
  return "unknown status";
}

/*
 * Arrays are indexed by these values and sized by the counts: each list's
 * values must be exactly 0 .. count-1.  Every value below the count, with
 * no value twice (the bits of all values fill the low count bits only when
 * none repeats), proves it.
 */
#define EGRESS_VALUE_BIT_(name, value, ...) | (1ULL << (value))
#define EGRESS_DENSE_(map, count) \
  _Static_assert((0 map(EGRESS_VALUE_BIT_)) == (1ULL << (count)) - 1, #map " values must be 0 .. count-1")
EGRESS_DENSE_(EGRESS_STATUS_MAP, EGRESS__STATUS_COUNT);
EGRESS_DENSE_(EGRESS_OUTCOME_MAP, EGRESS__OUTCOME_COUNT);
EGRESS_DENSE_(EGRESS_REASON_MAP, EGRESS__REASON_COUNT);
EGRESS_DENSE_(EGRESS_LIST_MAP, EGRESS__LIST_COUNT);
EGRESS_DENSE_(EGRESS_FIELD_MAP, EGRESS__FIELD_COUNT);
EGRESS_DENSE_(EGRESS_COUNTER_MAP, EGRESS__COUNTER_COUNT);
#undef EGRESS_DENSE_
#undef EGRESS_VALUE_BIT_

#define EGRESS_FIELD_SAME_(name, value, key) \
  _Static_assert(EGRESS_FIELD_##name == (value), "egress_field_t disagrees with EGRESS_FIELD_MAP");
EGRESS_FIELD_MAP(EGRESS_FIELD_SAME_)
#undef EGRESS_FIELD_SAME_

#define EGRESS_LIST_KEY_(name, value, key) \
  _Static_assert(sizeof key <= EGRESS__LIST_KEY_MAX, "list key too long");
EGRESS_LIST_MAP(EGRESS_LIST_KEY_)
#undef EGRESS_LIST_KEY_

const char egress__list_keys[EGRESS__LIST_COUNT][EGRESS__LIST_KEY_MAX] = {
#define EGRESS_LIST_KEY_(name, value, key) [value] = key,
  EGRESS_LIST_MAP(EGRESS_LIST_KEY_)
#undef EGRESS_LIST_KEY_
};

int egress_reason_count(void) { return EGRESS__REASON_COUNT; }

const char *egress_reason_name(egress_reason_t reason) {
  switch (reason) {
#define EGRESS_RNAME_CASE_(name, value, token, message) \
  case EGRESS_REASON_##name: return token;
    EGRESS_REASON_MAP(EGRESS_RNAME_CASE_)
#undef EGRESS_RNAME_CASE_
  }
  return "unknown";
}

const char *egress_reason_message(egress_reason_t reason) {
  switch (reason) {
#define EGRESS_RMSG_CASE_(name, value, token, message) \
  case EGRESS_REASON_##name: return message;
    EGRESS_REASON_MAP(EGRESS_RMSG_CASE_)
#undef EGRESS_RMSG_CASE_
  }
  return "unknown reason";
}

const char *egress_outcome_name(egress_outcome_t outcome) {
  switch (outcome) {
#define EGRESS_ONAME_CASE_(name, value, token) \
  case EGRESS_OUTCOME_##name: return token;
    EGRESS_OUTCOME_MAP(EGRESS_ONAME_CASE_)
#undef EGRESS_ONAME_CASE_
  }
  return "unknown";
}

const char *egress_version(void) { return EGRESS_VERSION_STRING; }

/* Two digits a step: an event holds a dozen numbers (times, ports, TTLs,
 * addresses' octets), and a digit a step was a tenth of the
 * library's instructions per check. */
static const char digit_pairs[] =
    "00010203040506070809101112131415161718192021222324252627282930313233343536373839"
    "40414243444546474849505152535455565758596061626364656667686970717273747576777879"
    "8081828384858687888990919293949596979899";

char *egress__put_uint(char *p, unsigned long long v, int width) {
  char tmp[24];
  char *end = tmp + sizeof tmp, *s = end;
  while (v >= 100) {
    unsigned r = (unsigned)(v % 100);
    v /= 100;
    s -= 2;
    memcpy(s, digit_pairs + 2 * r, 2);
  }
  if (v >= 10) {
    s -= 2;
    memcpy(s, digit_pairs + 2 * v, 2);
  } else {
    *--s = (char)('0' + v);
  }
  while (end - s < width && s > tmp) *--s = '0';
  memcpy(p, s, (size_t)(end - s));
  return p + (end - s);
}

size_t egress__report_keep(const char *s, size_t len, size_t max) {
  if (len <= max) return len;
  size_t keep = max;
  /* A UTF-8 sequence is at most four bytes: step back over at most three
   * continuation bytes, so that ill-formed input cannot cut deeper. */
  for (int i = 0; i < 3 && keep > 0 && ((unsigned char)s[keep] & 0xC0) == 0x80; i++) keep--;
  return keep;
}

char *egress__report_mark(char *p, size_t len) {
  static const char head[] = "\xe2\x80\xa6(truncated, "; /* U+2026 */
  static const char tail[] = " bytes)";
  memcpy(p, head, sizeof head - 1);
  p = egress__put_uint(p + sizeof head - 1, len, 1);
  memcpy(p, tail, sizeof tail - 1);
  return p + sizeof tail - 1;
}

size_t egress__utf8_seq(const unsigned char *s, size_t len, size_t *bad) {
  unsigned char c = s[0];
  size_t need;
  unsigned char lo = 0x80, hi = 0xBF; /* allowed range of the second byte */

  *bad = 1;
  if (c < 0x80) return 1;
  if (c >= 0xC2 && c <= 0xDF) {
    need = 2;
  } else if (c >= 0xE0 && c <= 0xEF) {
    need = 3;
    if (c == 0xE0)
      lo = 0xA0; /* overlong */
    else if (c == 0xED)
      hi = 0x9F; /* surrogates */
  } else if (c >= 0xF0 && c <= 0xF4) {
    need = 4;
    if (c == 0xF0)
      lo = 0x90; /* overlong */
    else if (c == 0xF4)
      hi = 0x8F; /* above U+10FFFF */
  } else {
    return 0; /* 80..C1, F5..FF never start a sequence */
  }
  for (size_t i = 1; i < need; i++) {
    unsigned char min = i == 1 ? lo : 0x80, max = i == 1 ? hi : 0xBF;
    if (i >= len || s[i] < min || s[i] > max) {
      *bad = i;
      return 0;
    }
  }
  return need;
}

egress__dec_t egress__parse_decimal(const char *s, size_t len, bool leading_zeros, uint32_t max,
                                    uint32_t *out) {
  if (len == 0) return EGRESS__DEC_EMPTY;
  for (size_t i = 0; i < len; i++)
    if (s[i] < '0' || s[i] > '9') return EGRESS__DEC_NOT_DIGITS;
  if (!leading_zeros && len > 1 && s[0] == '0') return EGRESS__DEC_LEADING_ZERO;
  uint64_t v = 0;
  for (size_t i = 0; i < len; i++) {
    v = v * 10 + (uint64_t)(s[i] - '0');
    if (v > max) return EGRESS__DEC_TOO_BIG; /* also stops any overflow */
  }
  *out = (uint32_t)v;
  return EGRESS__DEC_OK;
}

double egress__mono_ms(bool coarse) {
  struct timespec ts;
  clock_gettime(coarse ? CLOCK_MONOTONIC_COARSE : CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec * 1000.0 + (double)ts.tv_nsec / 1e6;
}
