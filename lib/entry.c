/*
 * The policy entry grammar (docs/policy.md#entries): one string becomes one rule.
 *
 * A security policy must mean one thing, so the grammar accepts exactly one
 * spelling of each thing and rejects everything else with a short static
 * message naming the problem.  The policy loader wraps that message with
 * the list, index and entry text.
 *
 * Choices the design leaves open, made here:
 *  - URL schemes are compared case-insensitively (RFC 3986 §3.1): "HTTPS://"
 *    means https.  Only http and https are accepted.
 *  - A URL whose host is an IP literal (dotted quad or bracketed IPv6)
 *    becomes a /32 or /128 CIDR rule with the URL's port.
 *  - A URL port is one decimal number (no range, no '*'); a URL names one
 *    endpoint.  Wildcard hosts are allowed in URLs with the same meaning as
 *    the bare forms ("https://" then "*.example.com").
 *  - Ports, port ranges and prefix lengths are plain decimal: no sign, no
 *    white space, no leading zeros ("0443" and "/08" are errors), so that a
 *    number has one spelling.  Ranges need lo <= hi.
 *  - URL paths: RFC 3986 path characters only; '\\', white space and raw
 *    non-ASCII are errors; empty segments ("//") and dot segments ("." or
 *    "..") are errors; percent-encoding must be %HH, may not encode an
 *    unreserved character (so "%2e" cannot hide a dot segment and each path
 *    has one spelling), '/', '\\' or a control character; hex digits are
 *    stored upper-case.  One trailing '/' is dropped; "/" means no path.
 *  - "::ffff:a.b.c.d/N" (IPv4-mapped, N >= 96) becomes the IPv4 CIDR
 *    a.b.c.d/(N-96), because checks judge mapped addresses as the IPv4
 *    address they carry.
 *  - A wildcard over a single-label suffix ("*.com") is legal grammar; it is
 *    for the linter to warn about.
 *  - A regex port suffix follows the pattern's final '$'
 *    ("re:^a\.example\.com$:8443").  A pattern without a final '$' that ends
 *    in ":PORT" is an error, since a canonical name never holds ':' and the
 *    author surely meant a port.  Regexes must be ASCII (names are matched as
 *    A-labels) and hold no white space (no name does; (?x) layout is not
 *    worth the ambiguity).
 *  - Entries longer than ENTRY_MAX bytes are errors.
 */
#include "egress_private.h"

#define PCRE2_CODE_UNIT_WIDTH 8
#include <pcre2.h>

#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#define ENTRY_MAX 4096

/* Limits for one regex match.  A policy author can write a catastrophic
 * pattern; a hostile host name must not be able to turn it into a denial of
 * service, so matching stops early and the rule fails closed. */
#define REGEX_MATCH_LIMIT    100000u
#define REGEX_DEPTH_LIMIT    1000u
#define REGEX_HEAP_LIMIT_KIB 1024u

#define MSG_NOMEM "out of memory"

/* ------------------------------------------------------------------------ */
/* PCRE2 contexts.                                                           */
/* ------------------------------------------------------------------------ */

typedef struct regex_env {
  pcre2_general_context *gen;
  pcre2_compile_context *comp;
  pcre2_match_context *match;
} regex_env_t;

/* Created once per process on first use and never freed: the contexts are
 * read-only after setup, so every thread can share them, and a lazy atomic
 * setup retries on a later call if an allocation failed. */
static _Atomic(regex_env_t *) regex_env;

static void *regex_malloc(PCRE2_SIZE size, void *data) {
  (void)data;
  return egress__malloc(size);
}

static void regex_free(void *ptr, void *data) {
  (void)data;
  egress__free(ptr);
}

static void regex_env_free(regex_env_t *env) {
  if (!env) return;
  pcre2_match_context_free(env->match);
  pcre2_compile_context_free(env->comp);
  pcre2_general_context_free(env->gen);
  egress__free(env);
}

static regex_env_t *regex_env_get(void) {
  regex_env_t *env = atomic_load_explicit(&regex_env, memory_order_acquire);
  if (env) return env;

  regex_env_t *fresh = egress__calloc(1, sizeof *fresh);
  if (!fresh) return NULL;
  fresh->gen = pcre2_general_context_create(regex_malloc, regex_free, NULL);
  if (!fresh->gen) goto fail;
  fresh->comp = pcre2_compile_context_create(fresh->gen);
  if (!fresh->comp) goto fail;
  fresh->match = pcre2_match_context_create(fresh->gen);
  if (!fresh->match) goto fail;
  if (pcre2_set_max_pattern_length(fresh->comp, ENTRY_MAX) != 0) goto fail;
  if (pcre2_set_match_limit(fresh->match, REGEX_MATCH_LIMIT) != 0) goto fail;
  if (pcre2_set_depth_limit(fresh->match, REGEX_DEPTH_LIMIT) != 0) goto fail;
  if (pcre2_set_heap_limit(fresh->match, REGEX_HEAP_LIMIT_KIB) != 0) goto fail;

  regex_env_t *expected = NULL;
  if (atomic_compare_exchange_strong_explicit(&regex_env, &expected, fresh, memory_order_acq_rel,
                                              memory_order_acquire))
    return fresh;
  /* Another thread won the race; use its contexts. */
  regex_env_free(fresh);
  return expected;

fail:
  regex_env_free(fresh);
  return NULL;
}

/* Compile errors carry PCRE2's own text and offset, which a static string
 * cannot hold.  The caller formats *why right after the call on the same
 * thread, so a thread-local buffer keeps the interface's "static message"
 * contract without a lock. */
static _Thread_local char regex_errmsg[200];

/* ------------------------------------------------------------------------ */
/* Small lexical helpers; all take explicit lengths.                         */
/* ------------------------------------------------------------------------ */

static bool is_digit(char ch) { return ch >= '0' && ch <= '9'; }

static bool is_alpha(char ch) { return (ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z'); }

static bool is_hex(char ch) { return is_digit(ch) || (ch >= 'a' && ch <= 'f') || (ch >= 'A' && ch <= 'F'); }

static unsigned hex_val(char ch) {
  if (is_digit(ch)) return (unsigned)(ch - '0');
  if (ch >= 'a' && ch <= 'f') return (unsigned)(ch - 'a' + 10);
  return (unsigned)(ch - 'A' + 10);
}

static bool is_space(char ch) {
  return ch == ' ' || ch == '\t' || ch == '\n' || ch == '\r' || ch == '\v' || ch == '\f';
}

static const char *find_byte(const char *s, size_t len, char ch) { return len ? memchr(s, ch, len) : NULL; }

static size_t count_byte(const char *s, size_t len, char ch) {
  size_t n = 0;
  for (size_t i = 0; i < len; i++)
    if (s[i] == ch) n++;
  return n;
}

/* Decimal number without sign or leading zeros, at most @p max; msg[] names
 * an empty, non-digit, zero-led and too large number. */
static const char *parse_decimal(const char *s, size_t len, uint32_t max, uint32_t *out,
                                 const char *const msg[4]) {
  egress__dec_t r = egress__parse_decimal(s, len, false, max, out);
  return r == EGRESS__DEC_OK ? NULL : msg[r - 1];
}

static const char *parse_port(const char *s, size_t len, uint16_t *out) {
  uint32_t v = 0;
  static const char *const msg[4] = { "empty port",
                                      "invalid port (a port is decimal 1-65535, a range N-M or '*')",
                                      "port must not have leading zeros", "port out of range 1-65535" };
  const char *why = parse_decimal(s, len, 65535, &v, msg);
  if (why) return why;
  if (v == 0) return "port out of range 1-65535";
  *out = (uint16_t)v;
  return NULL;
}

/* "N", "N-M" (N <= M) or "*" (1-65535). */
static const char *parse_port_spec(const char *s, size_t len, uint16_t *lo, uint16_t *hi) {
  if (len == 1 && s[0] == '*') {
    *lo = 1;
    *hi = 65535;
    return NULL;
  }
  const char *dash = find_byte(s, len, '-');
  if (!dash) {
    const char *why = parse_port(s, len, lo);
    if (!why) *hi = *lo;
    return why;
  }
  size_t l1 = (size_t)(dash - s);
  uint16_t a = 0, b = 0;
  const char *why = parse_port(s, l1, &a);
  if (!why) why = parse_port(dash + 1, len - l1 - 1, &b);
  if (why) return why;
  if (a > b) return "port range is reversed (low > high)";
  *lo = a;
  *hi = b;
  return NULL;
}

static const char *parse_prefix_len(const char *s, size_t len, unsigned max, uint8_t *out) {
  uint32_t v = 0;
  static const char *const msg4[4] = { "missing CIDR prefix length",
                                       "invalid CIDR prefix length (decimal digits only)",
                                       "CIDR prefix length must not have leading zeros",
                                       "IPv4 prefix length out of range 0-32" };
  static const char *const msg6[4] = { "missing CIDR prefix length",
                                       "invalid CIDR prefix length (decimal digits only)",
                                       "CIDR prefix length must not have leading zeros",
                                       "IPv6 prefix length out of range 0-128" };
  const char *why = parse_decimal(s, len, max, &v, max == 32 ? msg4 : msg6);
  if (why) return why;
  *out = (uint8_t)v;
  return NULL;
}

/* ------------------------------------------------------------------------ */
/* Parser state.                                                             */
/* ------------------------------------------------------------------------ */

typedef struct entry_ctx {
  egress__rule_t *rule;
  egress__host_t host; /* canonical name for EXACT / WILD1 / WILDN */
  bool has_name;
  bool has_port; /* written explicitly in the entry */
  bool is_url;
  uint16_t url_port; /* scheme default */
  const char *path;  /* URL path as written (validated), or NULL */
  size_t path_len;
} entry_ctx_t;

static const char *set_cidr(entry_ctx_t *c, const egress__ip_t *ip, unsigned len) {
  unsigned bits = ip->family == 4 ? 32 : 128;
  if (len > bits) return "prefix length out of range";
  for (unsigned i = len; i < bits; i++)
    if (ip->bytes[i / 8] & (0x80u >> (i % 8))) return "CIDR has host bits set";

  egress__prefix_t p;
  memset(&p, 0, sizeof p);
  p.addr = *ip;
  p.len = (uint8_t)len;
  static const uint8_t mapped[12] = { 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff };
  if (ip->family == 6 && len >= 96 && memcmp(ip->bytes, mapped, 12) == 0) {
    /* Checks judge ::ffff:a.b.c.d as a.b.c.d, so the rule must be IPv4. */
    memset(&p.addr, 0, sizeof p.addr);
    p.addr.family = 4;
    memcpy(p.addr.bytes, ip->bytes + 12, 4);
    p.len = (uint8_t)(len - 96);
  }
  c->rule->kind = EGRESS__RULE_CIDR;
  c->rule->cidr = p;
  return NULL;
}

static bool jit_disabled(void) {
  const char *v = getenv("EGRESS_PCRE2_NO_JIT");
  return v && v[0] == '1' && v[1] == '\0';
}

static egress_status_t canon(entry_ctx_t *c, const char *s, size_t len, const char **why) {
  const char *cwhy = NULL;
  egress_status_t st = egress__canon_name(s, len, &c->host, &cwhy);
  if (st == EGRESS_ENOMEM) {
    *why = MSG_NOMEM;
    return st;
  }
  if (st != EGRESS_OK) {
    *why = cwhy ? cwhy : "invalid host name";
    return EGRESS_EPOLICY;
  }
  if (c->host.kind != EGRESS__HOST_NAME || c->host.len == 0 || c->host.len > EGRESS__NAME_MAX) {
    *why = "invalid host name";
    return EGRESS_EPOLICY;
  }
  c->has_name = true;
  return EGRESS_OK;
}

#define FAIL_POLICY(msg)   \
  do {                     \
    *why = (msg);          \
    return EGRESS_EPOLICY; \
  } while (0)

/* A host part without brackets or port: "*", "*.name", "**.name", a name,
 * or (when @p allow_ip4) a dotted quad. */
static egress_status_t parse_host(entry_ctx_t *c, const char *h, size_t n, const char **why) {
  if (n == 0) FAIL_POLICY("empty host");
  if (find_byte(h, n, '%')) FAIL_POLICY("percent-encoding is not allowed in a host");
  if (find_byte(h, n, '[') || find_byte(h, n, ']'))
    FAIL_POLICY("brackets are only allowed around a whole IPv6 address");
  if (find_byte(h, n, '/')) FAIL_POLICY("a path is only allowed in a URL entry");
  if (find_byte(h, n, ':')) FAIL_POLICY("unexpected ':' in host");

  if (h[0] == '*') {
    size_t skip;
    egress__rule_kind_t kind;
    if (n == 1) {
      c->rule->kind = EGRESS__RULE_ANY;
      return EGRESS_OK;
    }
    if (h[1] == '.') {
      skip = 2;
      kind = EGRESS__RULE_WILD1;
    } else if (n >= 3 && h[1] == '*' && h[2] == '.') {
      skip = 3;
      kind = EGRESS__RULE_WILDN;
    } else {
      FAIL_POLICY("'*' must be a whole first label: '*', '*.name' or '**.name'");
    }
    if (n == skip) FAIL_POLICY("wildcard needs a name after '*.'");
    if (find_byte(h + skip, n - skip, '*')) FAIL_POLICY("'*' is only allowed as the first label");
    if (h[skip] == '.') FAIL_POLICY("empty label after wildcard");
    egress_status_t st = canon(c, h + skip, n - skip, why);
    if (st != EGRESS_OK) return st;
    c->rule->kind = kind;
    return EGRESS_OK;
  }
  if (find_byte(h, n, '*')) FAIL_POLICY("'*' is only allowed as the first label");

  egress__ip_t ip;
  memset(&ip, 0, sizeof ip);
  if (egress__ip4_parse(h, n, &ip)) {
    const char *w = set_cidr(c, &ip, 32);
    if (w) FAIL_POLICY(w);
    return EGRESS_OK;
  }
  egress_status_t st = canon(c, h, n, why);
  if (st != EGRESS_OK) return st;
  c->rule->kind = EGRESS__RULE_EXACT;
  return EGRESS_OK;
}

/* The text between '[' and ']'. */
static const char *parse_ip6_inner(const char *s, size_t n, egress__ip_t *ip) {
  if (n == 0) return "empty brackets";
  if (find_byte(s, n, '%')) return "IPv6 zone ids are not allowed";
  if (find_byte(s, n, '/')) return "CIDR prefix length goes after ']'";
  egress__ip_t v4;
  if (egress__ip4_parse(s, n, &v4)) return "brackets are only for IPv6 addresses";
  if (!egress__ip6_parse(s, n, ip)) return "invalid IPv6 address";
  return NULL;
}

/* "[v6]", "[v6]/len", "[v6]:ports", "[v6]/len:ports". */
static egress_status_t parse_bracketed(entry_ctx_t *c, const char *s, size_t n, const char **why) {
  const char *close = find_byte(s, n, ']');
  if (!close) FAIL_POLICY("missing ']' after IPv6 address");
  size_t inner = (size_t)(close - s) - 1;
  egress__ip_t ip;
  memset(&ip, 0, sizeof ip);
  const char *w = parse_ip6_inner(s + 1, inner, &ip);
  if (w) FAIL_POLICY(w);

  const char *p = close + 1;
  size_t rest = n - inner - 2;
  unsigned plen = 128;
  if (rest > 0 && p[0] == '/') {
    const char *colon = find_byte(p, rest, ':');
    size_t ln = colon ? (size_t)(colon - p) - 1 : rest - 1;
    uint8_t v = 0;
    w = parse_prefix_len(p + 1, ln, 128, &v);
    if (w) FAIL_POLICY(w);
    plen = v;
    p += ln + 1;
    rest -= ln + 1;
  }
  if (rest > 0) {
    if (p[0] != ':') FAIL_POLICY("unexpected text after ']'");
    w = parse_port_spec(p + 1, rest - 1, &c->rule->port_lo, &c->rule->port_hi);
    if (w) FAIL_POLICY(w);
    c->has_port = true;
  }
  w = set_cidr(c, &ip, plen);
  if (w) FAIL_POLICY(w);
  return EGRESS_OK;
}

/* Unbracketed IPv6, optionally "/len"; never a port. */
static egress_status_t parse_ip6_bare(entry_ctx_t *c, const char *s, size_t n, const char **why) {
  if (find_byte(s, n, '%')) FAIL_POLICY("IPv6 zone ids are not allowed");
  if (find_byte(s, n, ']')) FAIL_POLICY("unbalanced ']'");
  const char *slash = find_byte(s, n, '/');
  size_t an = slash ? (size_t)(slash - s) : n;
  unsigned plen = 128;
  if (slash) {
    const char *pl = slash + 1;
    size_t pn = n - an - 1;
    if (find_byte(pl, pn, ':'))
      FAIL_POLICY(
          "an unbracketed IPv6 address cannot carry a port; "
          "write [addr]/len:port");
    uint8_t v = 0;
    const char *w = parse_prefix_len(pl, pn, 128, &v);
    if (w) FAIL_POLICY(w);
    plen = v;
  }
  egress__ip_t ip;
  memset(&ip, 0, sizeof ip);
  if (!egress__ip6_parse(s, an, &ip)) FAIL_POLICY("invalid IPv6 address (or a name with more than one ':')");
  const char *w = set_cidr(c, &ip, plen);
  if (w) FAIL_POLICY(w);
  return EGRESS_OK;
}

/* Anything that is not a regex, URL or bracketed address:
 * HOST[:PORTS] or A.B.C.D/LEN[:PORTS]. */
static egress_status_t parse_plain(entry_ctx_t *c, const char *s, size_t n, const char **why) {
  if (count_byte(s, n, ':') >= 2) return parse_ip6_bare(c, s, n, why);
  if (find_byte(s, n, ']')) FAIL_POLICY("unbalanced ']'");

  const char *colon = find_byte(s, n, ':');
  size_t hn = colon ? (size_t)(colon - s) : n;
  if (colon) {
    const char *w = parse_port_spec(colon + 1, n - hn - 1, &c->rule->port_lo, &c->rule->port_hi);
    if (w) FAIL_POLICY(w);
    c->has_port = true;
  }
  if (hn == 0) FAIL_POLICY("empty host");

  const char *slash = find_byte(s, hn, '/');
  if (!slash) return parse_host(c, s, hn, why);

  size_t an = (size_t)(slash - s);
  egress__ip_t ip;
  memset(&ip, 0, sizeof ip);
  if (!egress__ip4_parse(s, an, &ip)) {
    bool numeric = an > 0;
    for (size_t i = 0; i < an; i++)
      if (!is_digit(s[i]) && s[i] != '.') numeric = false;
    if (numeric) FAIL_POLICY("invalid IPv4 address (a canonical dotted quad is required)");
    FAIL_POLICY("a path is only allowed in a URL entry");
  }
  uint8_t plen = 0;
  const char *w = parse_prefix_len(slash + 1, hn - an - 1, 32, &plen);
  if (w) FAIL_POLICY(w);
  w = set_cidr(c, &ip, plen);
  if (w) FAIL_POLICY(w);
  return EGRESS_OK;
}

/* ------------------------------------------------------------------------ */
/* URLs.                                                                     */
/* ------------------------------------------------------------------------ */

static bool is_unreserved(unsigned ch) {
  return (ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') || (ch >= '0' && ch <= '9') || ch == '-' ||
         ch == '.' || ch == '_' || ch == '~';
}

static bool is_path_char(char ch) {
  return is_unreserved((unsigned char)ch) || (ch != '\0' && strchr("!$&'()*+,;=:", ch) != NULL);
}

/* Validate the path (starting with '/'); sets c->path to the part kept. */
static egress_status_t check_path(entry_ctx_t *c, const char *p, size_t n, const char **why) {
  size_t seg_start = 1;
  for (size_t i = 1; i <= n; i++) {
    if (i == n || p[i] == '/') {
      size_t sl = i - seg_start;
      const char *seg = p + seg_start;
      if (sl == 0 && i < n) FAIL_POLICY("URL path has an empty segment ('//')");
      if ((sl == 1 && seg[0] == '.') || (sl == 2 && seg[0] == '.' && seg[1] == '.'))
        FAIL_POLICY("URL path must not contain dot segments");
      seg_start = i + 1;
      continue;
    }
    char ch = p[i];
    if (ch == '%') {
      if (i + 2 >= n || !is_hex(p[i + 1]) || !is_hex(p[i + 2]))
        FAIL_POLICY("URL path has a malformed percent-encoding");
      unsigned v = hex_val(p[i + 1]) * 16 + hex_val(p[i + 2]);
      if (v == '.') FAIL_POLICY("URL path must not percent-encode '.' (dot segments)");
      if (is_unreserved(v)) FAIL_POLICY("URL path must not percent-encode an unreserved character");
      if (v == '/' || v == '\\') FAIL_POLICY("URL path must not percent-encode '/' or '\\'");
      if (v < 0x20 || v == 0x7f) FAIL_POLICY("URL path must not percent-encode a control character");
      i += 2;
      continue;
    }
    if (ch == '\\') FAIL_POLICY("URL must not contain '\\'");
    if (is_space(ch)) FAIL_POLICY("URL path must not contain white space");
    if (!is_path_char(ch)) FAIL_POLICY("URL path has a character that must be percent-encoded");
  }
  /* One trailing '/' is the same prefix as none. */
  if (n > 0 && p[n - 1] == '/') n--;
  if (n > 0) {
    c->path = p;
    c->path_len = n;
  }
  return EGRESS_OK;
}

static egress_status_t parse_url(entry_ctx_t *c, const char *s, size_t n, size_t sep, const char **why) {
  if (sep == 0) FAIL_POLICY("URL has no scheme");
  if (!is_alpha(s[0])) FAIL_POLICY("invalid URL scheme");
  for (size_t i = 1; i < sep; i++)
    if (!is_alpha(s[i]) && !is_digit(s[i]) && s[i] != '+' && s[i] != '-' && s[i] != '.')
      FAIL_POLICY("invalid URL scheme");
  if (sep == 5 && strncasecmp(s, "https", 5) == 0) {
    c->url_port = 443;
    c->rule->scheme = EGRESS__SCHEME_HTTPS;
  } else if (sep == 4 && strncasecmp(s, "http", 4) == 0) {
    c->url_port = 80;
    c->rule->scheme = EGRESS__SCHEME_HTTP;
  } else
    FAIL_POLICY("unsupported URL scheme (only http and https)");
  c->is_url = true;

  const char *r = s + sep + 3;
  size_t rn = n - sep - 3;
  if (find_byte(r, rn, '@')) FAIL_POLICY("URL must not contain userinfo ('@')");
  if (find_byte(r, rn, '?')) FAIL_POLICY("URL must not contain a query ('?')");
  if (find_byte(r, rn, '#')) FAIL_POLICY("URL must not contain a fragment ('#')");
  if (find_byte(r, rn, '\\')) FAIL_POLICY("URL must not contain '\\'");
  for (size_t i = 0; i < rn; i++)
    if (is_space(r[i])) FAIL_POLICY("URL must not contain white space");

  const char *slash = find_byte(r, rn, '/');
  size_t an = slash ? (size_t)(slash - r) : rn;
  if (an == 0) FAIL_POLICY("URL has an empty host");

  const char *portp = NULL;
  size_t portn = 0;
  egress_status_t st;
  if (r[0] == '[') {
    const char *close = find_byte(r, an, ']');
    if (!close) FAIL_POLICY("missing ']' after IPv6 address");
    size_t inner = (size_t)(close - r) - 1;
    egress__ip_t ip;
    memset(&ip, 0, sizeof ip);
    const char *w = parse_ip6_inner(r + 1, inner, &ip);
    if (w) FAIL_POLICY(w);
    size_t after = an - inner - 2;
    if (after > 0) {
      if (close[1] != ':') FAIL_POLICY("unexpected text after ']'");
      portp = close + 2;
      portn = after - 1;
    }
    w = set_cidr(c, &ip, 128);
    if (w) FAIL_POLICY(w);
  } else {
    const char *colon = find_byte(r, an, ':');
    size_t hn = colon ? (size_t)(colon - r) : an;
    if (colon) {
      portp = colon + 1;
      portn = an - hn - 1;
    }
    if (hn == 0) FAIL_POLICY("URL has an empty host");
    st = parse_host(c, r, hn, why);
    if (st != EGRESS_OK) return st;
  }
  if (portp) {
    if (find_byte(portp, portn, ':')) FAIL_POLICY("unexpected ':' in URL port");
    if (find_byte(portp, portn, '*') || find_byte(portp, portn, '-'))
      FAIL_POLICY("a URL port must be a single number");
    uint16_t port = 0;
    const char *w = parse_port(portp, portn, &port);
    if (w) FAIL_POLICY(w);
    c->rule->port_lo = c->rule->port_hi = port;
    c->has_port = true;
  }
  if (slash) return check_path(c, slash, rn - an, why);
  return EGRESS_OK;
}

/* ------------------------------------------------------------------------ */
/* Regular expressions.                                                      */
/* ------------------------------------------------------------------------ */

/* Compile options, each for a reason:
 *  ANCHORED|ENDANCHORED  the pattern must match the whole name, whether or
 *                        not the author wrote ^ and $ ("re:api\.x\.com" must
 *                        not match "api.x.com.evil.com");
 *  CASELESS              names are case-insensitive;
 *  DOLLAR_ENDONLY        '$' never matches before a final newline;
 *  NEVER_BACKSLASH_C     \C could match inside a code unit sequence;
 *  NEVER_UTF|NEVER_UCP   names are ASCII A-labels: byte semantics, and the
 *                        pattern cannot switch to (*UTF)/(*UCP) itself. */
#define REGEX_OPTIONS                                                                                     \
  (PCRE2_ANCHORED | PCRE2_ENDANCHORED | PCRE2_CASELESS | PCRE2_DOLLAR_ENDONLY | PCRE2_NEVER_BACKSLASH_C | \
   PCRE2_NEVER_UTF | PCRE2_NEVER_UCP)

static egress_status_t parse_regex(entry_ctx_t *c, const char *s, size_t n, const char **why) {
  size_t pn = n;
  const char *dollar = NULL;
  for (size_t i = n; i > 0; i--)
    if (s[i - 1] == '$') {
      dollar = s + i - 1;
      break;
    }
  if (dollar && (size_t)(dollar - s) + 1 < n && dollar[1] == ':') {
    pn = (size_t)(dollar - s) + 1;
    const char *w = parse_port_spec(dollar + 2, n - pn - 1, &c->rule->port_lo, &c->rule->port_hi);
    if (w) FAIL_POLICY(w);
    c->has_port = true;
  } else {
    const char *colon = NULL;
    for (size_t i = n; i > 0; i--)
      if (s[i - 1] == ':') {
        colon = s + i - 1;
        break;
      }
    uint16_t lo, hi;
    if (colon && (size_t)(colon - s) + 1 < n &&
        !parse_port_spec(colon + 1, n - (size_t)(colon - s) - 1, &lo, &hi))
      FAIL_POLICY("a regex port suffix must follow a final '$' (re:PATTERN$:PORT)");
  }
  if (pn == 0) FAIL_POLICY("empty regular expression");
  for (size_t i = 0; i < pn; i++) {
    if ((unsigned char)s[i] >= 0x80)
      FAIL_POLICY("regular expression must be ASCII (names are matched as A-labels)");
    if (is_space(s[i])) FAIL_POLICY("regular expression must not contain white space");
  }

  regex_env_t *env = regex_env_get();
  if (!env) {
    *why = MSG_NOMEM;
    return EGRESS_ENOMEM;
  }
  int err = 0;
  PCRE2_SIZE off = 0;
  pcre2_code *code = pcre2_compile((PCRE2_SPTR)s, pn, REGEX_OPTIONS, &err, &off, env->comp);
  if (!code) {
    if (err == PCRE2_ERROR_HEAP_FAILED || err == PCRE2_ERROR_NOMEMORY) {
      *why = MSG_NOMEM;
      return EGRESS_ENOMEM;
    }
    PCRE2_UCHAR text[120];
    if (pcre2_get_error_message(err, text, sizeof text) < 0)
      snprintf((char *)text, sizeof text, "error %d", err);
    snprintf(regex_errmsg, sizeof regex_errmsg, "invalid regular expression at offset %zu: %s", (size_t)off,
             (const char *)text);
    *why = regex_errmsg;
    return EGRESS_EPOLICY;
  }
  /* JIT is an optimisation only; without it (no JIT support, no executable
   * memory) pcre2_match interprets the pattern under the same limits.
   * EGRESS_PCRE2_NO_JIT=1 turns it off: JIT code reads registers memcheck
   * believes uninitialised, so the valgrind test setup runs without it. */
  if (!jit_disabled()) (void)pcre2_jit_compile(code, PCRE2_JIT_COMPLETE);
  c->rule->regex = code;
  c->rule->kind = EGRESS__RULE_REGEX;
  return EGRESS_OK;
}

bool egress__regex_match(const egress__rule_t *rule, const char *name, size_t len) {
  if (!rule) return false;
  /* Any failure to decide counts as a match in the deny list and as no match
   * in the allowlist: both deny. */
  bool fail_closed = rule->list == EGRESS_LIST_DENY;
  if (rule->kind != EGRESS__RULE_REGEX || !rule->regex || (!name && len)) return fail_closed;

  regex_env_t *env = regex_env_get();
  if (!env) return fail_closed;
  /* One pair is enough: only whether it matched matters, and a match with
   * more groups than pairs still returns 0 (success). */
  pcre2_match_data *md = pcre2_match_data_create(1, env->gen);
  if (!md) return fail_closed;
  int rc =
      pcre2_match((const pcre2_code *)rule->regex, (PCRE2_SPTR)(name ? name : ""), len, 0, 0, md, env->match);
  pcre2_match_data_free(md);
  if (rc >= 0) return true;
  if (rc == PCRE2_ERROR_NOMATCH) return false;
  return fail_closed;
}

/* ------------------------------------------------------------------------ */
/* Entry point.                                                              */
/* ------------------------------------------------------------------------ */

void egress__rule_clear(egress__rule_t *rule) {
  if (!rule) return;
  egress__free(rule->text);
  egress__free(rule->name);
  egress__free(rule->path);
  if (rule->regex) pcre2_code_free((pcre2_code *)rule->regex);
  memset(rule, 0, sizeof *rule);
}

static const char *check_bytes(const char *s, size_t n) {
  if (n == 0) return "empty entry";
  if (n > ENTRY_MAX) return "entry too long";
  if (is_space(s[0]) || is_space(s[n - 1])) return "entry has leading or trailing white space";
  for (size_t i = 0; i < n; i++) {
    unsigned char ch = (unsigned char)s[i];
    if (ch == 0) return "entry contains a NUL byte";
    if (ch < 0x20 || ch == 0x7f) return "entry contains a control character";
  }
  return NULL;
}

static size_t find_scheme_sep(const char *s, size_t n) {
  for (size_t i = 0; i + 3 <= n; i++)
    if (s[i] == ':' && s[i + 1] == '/' && s[i + 2] == '/') return i;
  return n;
}

egress_status_t egress__entry_parse(const char *text, size_t len, egress_list_t list, egress__rule_t *rule,
                                    const char **why) {
  const char *dummy = NULL;
  if (!why) why = &dummy;
  *why = NULL;
  if (!rule) {
    *why = "no rule to fill";
    return EGRESS_EINVAL;
  }
  memset(rule, 0, sizeof *rule);
  if (!text && len) {
    *why = "no entry text";
    return EGRESS_EINVAL;
  }
  if (list != EGRESS_LIST_ALLOW && list != EGRESS_LIST_DENY) {
    *why = "unknown list";
    return EGRESS_EINVAL;
  }

  egress_status_t st = EGRESS_OK;
  entry_ctx_t c;
  memset(&c, 0, sizeof c);
  c.rule = rule;
  rule->list = list;

  const char *w = check_bytes(text, len);
  if (w) {
    *why = w;
    st = EGRESS_EPOLICY;
    goto fail;
  }

  size_t sep;
  if (len >= 3 && memcmp(text, "re:", 3) == 0)
    st = parse_regex(&c, text + 3, len - 3, why);
  else if ((sep = find_scheme_sep(text, len)) < len)
    st = parse_url(&c, text, len, sep, why);
  else if (text[0] == '[')
    st = parse_bracketed(&c, text, len, why);
  else
    st = parse_plain(&c, text, len, why);
  if (st != EGRESS_OK) goto fail;

  if (!c.has_port) {
    if (list == EGRESS_LIST_DENY || (rule->kind == EGRESS__RULE_CIDR && !c.is_url)) {
      rule->port_lo = 1;
      rule->port_hi = 65535;
    } else {
      rule->port_lo = rule->port_hi = c.is_url ? c.url_port : 443;
    }
  }

  st = EGRESS_ENOMEM;
  *why = MSG_NOMEM;
  rule->text = egress__strndup(text, len);
  if (!rule->text) goto fail;
  if (c.has_name) {
    rule->name = egress__strndup(c.host.text, c.host.len);
    if (!rule->name) goto fail;
    rule->name_len = c.host.len;
  }
  if (c.path) {
    rule->path = egress__strndup(c.path, c.path_len);
    if (!rule->path) goto fail;
    for (size_t i = 0; i < c.path_len; i++)
      if (rule->path[i] == '%') {
        for (size_t k = i + 1; k <= i + 2; k++)
          if (rule->path[k] >= 'a' && rule->path[k] <= 'f') rule->path[k] -= 'a' - 'A';
        i += 2;
      }
  }
  *why = NULL;
  return EGRESS_OK;

fail:
  egress__rule_clear(rule);
  if (!*why) *why = "invalid entry";
  return st;
}
