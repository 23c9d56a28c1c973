/*
 * IP addresses: strict parsing, canonical text, prefixes and sockaddrs.
 *
 * The parsers are deliberately narrower than inet_aton(): a security policy
 * and a check must each read an address one way only, so IPv4 is accepted
 * solely as a canonical dotted quad.  Everything here works on explicit
 * lengths and fixed buffers; nothing allocates.
 */
#include "egress_private.h"

#include <arpa/inet.h>
#include <stdio.h>
#include <string.h>

/* Longest valid IPv6 text: eight 4-digit groups written with a trailing
 * dotted quad, "0000:0000:0000:0000:0000:0000:255.255.255.255" (45). */
#define IP6_TEXT_MAX 45

bool egress__ip4_parse(const char *s, size_t len, egress__ip_t *out) {
  uint8_t parts[4];
  size_t i = 0;
  int nparts = 0;

  if (!s || len < 7 || len > 15) return false;
  while (nparts < 4) {
    unsigned value = 0;
    size_t start = i;
    while (i < len && s[i] >= '0' && s[i] <= '9' && i - start < 3) {
      value = value * 10 + (unsigned)(s[i] - '0');
      i++;
    }
    size_t ndigits = i - start;
    /* A leading zero would make inet_aton() read the part as octal, so a
     * multi-digit part starting with '0' has no single meaning. */
    if (ndigits == 0 || value > 255 || (ndigits > 1 && s[start] == '0')) return false;
    parts[nparts++] = (uint8_t)value;
    if (nparts < 4) {
      if (i >= len || s[i] != '.') return false;
      i++;
    }
  }
  if (i != len) return false;
  if (out) {
    memset(out, 0, sizeof(*out));
    out->family = 4;
    memcpy(out->bytes, parts, 4);
  }
  return true;
}

bool egress__ip6_parse(const char *s, size_t len, egress__ip_t *out) {
  char buf[IP6_TEXT_MAX + 1];
  struct in6_addr a;

  if (!s || len < 2 || len > IP6_TEXT_MAX) return false;
  /* Only hex digits, ':' and '.' may appear: this rejects zone ids ('%'),
   * brackets, white space and NUL before inet_pton() sees a copy that we
   * NUL-terminate ourselves.  inet_pton() (glibc) already rejects leading
   * zeros, octal and short forms in an embedded dotted quad. */
  for (size_t i = 0; i < len; i++) {
    char c = s[i];
    bool ok =
        (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f') || (c >= 'A' && c <= 'F') || c == ':' || c == '.';
    if (!ok) return false;
  }
  memcpy(buf, s, len);
  buf[len] = '\0';
  if (inet_pton(AF_INET6, buf, &a) != 1) return false;
  if (out) {
    memset(out, 0, sizeof(*out));
    out->family = 6;
    memcpy(out->bytes, &a, 16);
  }
  return true;
}

static bool is_v4mapped(const egress__ip_t *ip) {
  static const uint8_t prefix[12] = { 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff };
  return ip->family == 6 && memcmp(ip->bytes, prefix, sizeof(prefix)) == 0;
}

/* A dotted quad from four bytes; returns the end (no terminator). */
static char *put_quad(char *p, const uint8_t *b) {
  for (int i = 0; i < 4; i++) {
    unsigned v = b[i];
    if (v >= 100) *p++ = (char)('0' + v / 100);
    if (v >= 10) *p++ = (char)('0' + v / 10 % 10);
    *p++ = (char)('0' + v % 10);
    if (i < 3) *p++ = '.';
  }
  return p;
}

/* A group in lower-case hex without leading zeros (RFC 5952 §4.1, §4.3). */
static char *put_group(char *p, unsigned g) {
  static const char hex[] = "0123456789abcdef";
  int shift = 12;
  while (shift > 0 && !(g >> shift)) shift -= 4;
  for (; shift >= 0; shift -= 4) *p++ = hex[(g >> shift) & 0xf];
  return p;
}

/* RFC 5952: lower-case hex without leading zeros; the longest run of two or
 * more zero groups (the first of equal runs) becomes "::"; IPv4-mapped
 * addresses end in a dotted quad (section 5).  glibc's inet_ntop() also
 * writes "::a.b.c.d" for any address with six leading zero groups (for
 * example "::2:3" becomes "::0.2.0.3"), which is not what RFC 5952 asks for
 * and not what other tools print, so the text is built here.
 *
 * By hand, like IPv4 below: every AAAA address of every decision with text
 * is formatted, and snprintf cost more than the rest of a cached check. */
static void format6(const uint8_t *b, char *buf, size_t buflen) {
  char tmp[IP6_TEXT_MAX + 1];
  char *p = tmp;
  unsigned groups[8];
  int best = -1, best_len = 0;

  /* A mapped address prints its last 32 bits as a dotted quad, so only the
   * first six groups take part in "::" compression. */
  bool mapped = memcmp(b, "\0\0\0\0\0\0\0\0\0\0\xff\xff", 12) == 0;
  int ngroups = mapped ? 6 : 8;
  for (int i = 0; i < 8; i++) groups[i] = (unsigned)b[2 * i] << 8 | b[2 * i + 1];
  for (int i = 0; i < ngroups;) {
    if (groups[i] != 0) {
      i++;
      continue;
    }
    int j = i;
    while (j < ngroups && groups[j] == 0) j++;
    if (j - i > best_len) {
      best = i;
      best_len = j - i;
    }
    i = j;
  }
  if (best_len < 2) best = -1;

  for (int i = 0; i < ngroups; i++) {
    if (i == best) {
      *p++ = ':';
      *p++ = ':';
      i += best_len - 1;
      continue;
    }
    if (i > 0 && i != best + best_len) *p++ = ':';
    p = put_group(p, groups[i]);
  }
  if (mapped) {
    if (p > tmp && p[-1] != ':') *p++ = ':';
    p = put_quad(p, b + 12);
  }
  size_t n = (size_t)(p - tmp);
  if (n >= buflen) n = buflen - 1;
  memcpy(buf, tmp, n);
  buf[n] = '\0';
}

void egress__ip_format(const egress__ip_t *ip, char *buf, size_t buflen) {
  if (!buf || buflen == 0) return;
  buf[0] = '\0';
  if (!ip) return;
  if (ip->family == 4 && buflen >= 16) {
    /* By hand: this runs for every address of every decision with text. */
    *put_quad(buf, ip->bytes) = '\0';
  } else if (ip->family == 6)
    format6(ip->bytes, buf, buflen);
}

bool egress__prefix_contains(const egress__prefix_t *prefix, const egress__ip_t *ip) {
  if (!prefix || !ip || prefix->addr.family != ip->family) return false;
  unsigned bits = ip->family == 4 ? 32u : ip->family == 6 ? 128u : 0u;
  if (bits == 0 || prefix->len > bits) return false;
  unsigned whole = prefix->len / 8u, rest = prefix->len % 8u;
  if (memcmp(prefix->addr.bytes, ip->bytes, whole) != 0) return false;
  if (rest) {
    uint8_t mask = (uint8_t)(0xffu << (8u - rest));
    if ((prefix->addr.bytes[whole] & mask) != (ip->bytes[whole] & mask)) return false;
  }
  return true;
}

bool egress__ip_unmap(egress__ip_t *ip) {
  if (!ip || !is_v4mapped(ip)) return false;
  uint8_t v4[4];
  memcpy(v4, ip->bytes + 12, 4);
  memset(ip->bytes, 0, sizeof(ip->bytes));
  memcpy(ip->bytes, v4, 4);
  ip->family = 4;
  return true;
}

socklen_t egress__ip_sockaddr(const egress__ip_t *ip, uint16_t port, egress__sockaddr_t *ss) {
  if (!ip || !ss) return 0;
  memset(ss, 0, sizeof(*ss));
  if (ip->family == 4) {
    struct sockaddr_in *sin = &ss->sin;
    sin->sin_family = AF_INET;
    sin->sin_port = htons(port);
    memcpy(&sin->sin_addr, ip->bytes, 4);
    return (socklen_t)sizeof(*sin);
  }
  if (ip->family == 6) {
    struct sockaddr_in6 *sin6 = &ss->sin6;
    sin6->sin6_family = AF_INET6;
    sin6->sin6_port = htons(port);
    memcpy(&sin6->sin6_addr, ip->bytes, 16);
    return (socklen_t)sizeof(*sin6);
  }
  return 0;
}
