/*
 * URL checks: an http(s) URL taken apart into scheme, host, port and a
 * normalized path, refused when servers would read it differently, then
 * checked as its host and port with the path and scheme against URL
 * entries (README "The check").  Everything else of the check is check.c.
 */
#include "checker.h"

#include <string.h>
#include <strings.h>

/* A rule path "/v1" allows "/v1" and "/v1/..." but not "/v10". */
static bool path_allows(const char *rule_path, const char *path) {
  if (!rule_path) return true;
  size_t n = strlen(rule_path);
  return !strncmp(rule_path, path, n) && (path[n] == '\0' || path[n] == '/');
}

/* @p min_len: how long a CIDR rule must be to stand for this literal (the
 * open_len of a special-purpose address; 0 for a global one). */
static bool rule_matches_host(const egress__rule_t *r, const egress__host_t *h, uint16_t port,
                              uint8_t min_len) {
  if (port < r->port_lo || port > r->port_hi) return false;
  if (h->kind != EGRESS__HOST_NAME)
    return r->kind == EGRESS__RULE_CIDR && r->cidr.addr.family == h->ip.family && r->cidr.len >= min_len &&
           egress__prefix_contains(&r->cidr, &h->ip);
  return egress__rule_matches_name(r, h->text, h->len);
}

/* A URL entry allows only its own scheme: "https://h" must never let plain
 * http reach port 443.  Entries without a scheme take any. */
static bool rule_takes_url(const egress__rule_t *r, const egress__url_ctx_t *u) {
  return (r->scheme == EGRESS__SCHEME_NONE || r->scheme == u->scheme) && path_allows(r->path, u->path);
}

/* The compiled matchers know neither paths nor schemes; when the rule they
 * found does not take this URL, look for the first rule that does.  Only
 * URL checks come here.  *scheme_only tells whether some rule for this host
 * and port would have taken the path under another scheme. */
const egress__rule_t *egress__url_rule(const egress_policy_t *p, const egress__host_t *h, uint16_t port,
                                       uint8_t min_len, const egress__rule_t *found,
                                       const egress__url_ctx_t *u, bool *scheme_only) {
  *scheme_only = false;
  if (!u || rule_takes_url(found, u)) return found;
  for (size_t i = 0; i < p->nrules[EGRESS_LIST_ALLOW]; i++) {
    const egress__rule_t *r = &p->rules[EGRESS_LIST_ALLOW][i];
    if (!rule_matches_host(r, h, port, min_len)) continue;
    if (rule_takes_url(r, u)) return r;
    if (path_allows(r->path, u->path)) *scheme_only = true;
  }
  return NULL;
}

/*
 * Split an http(s) URL into host, port and a normalized path.  Userinfo is
 * refused outright: "https://allowed.example@evil.example/" is the classic
 * way to make a reader see the wrong host.  Dot segments (also spelled
 * %2e) are resolved as RFC 3986 §5.2.4 does, so "/v1/../admin" is checked
 * as "/admin", which is what an HTTP client sends.
 */
typedef struct url_parts {
  char *host; /* owned, brackets kept for IPv6 */
  int32_t port;
  char *path; /* owned, starts with '/' */
  egress__scheme_t scheme;
} url_parts_t;

static bool is_dot_segment(const char *s, size_t n, int dots) {
  /* Matches "." (dots == 1) or ".." (dots == 2), each dot possibly "%2e". */
  int seen = 0;
  size_t i = 0;
  while (i < n) {
    if (s[i] == '.')
      i++;
    else if (i + 2 < n + 0 && s[i] == '%' && s[i + 1] == '2' && (s[i + 2] == 'e' || s[i + 2] == 'E'))
      i += 3;
    else
      return false;
    seen++;
  }
  return seen == dots;
}

static char *normalize_path(const char *in, size_t len) {
  /* Output is never longer than the input plus a leading '/'. */
  char *out = egress__malloc(len + 2);
  if (!out) return NULL;
  size_t o = 0;
  size_t i = 0;
  if (len == 0 || in[0] != '/') out[o++] = '/';
  while (i < len) {
    if (in[i] == '/') i++;
    size_t start = i;
    while (i < len && in[i] != '/') i++;
    size_t seg = i - start;
    bool trailing = i >= len;
    if (is_dot_segment(in + start, seg, 1)) {
      if (trailing && (o == 0 || out[o - 1] != '/')) out[o++] = '/';
      continue;
    }
    if (is_dot_segment(in + start, seg, 2)) {
      /* Drop the last segment and the slash in front of it: "/a/b" -> "/a". */
      while (o > 0 && out[o - 1] != '/') o--;
      if (o > 0) o--;
      if (trailing || o == 0) out[o++] = '/';
      continue;
    }
    if (o == 0 || out[o - 1] != '/') out[o++] = '/';
    memcpy(out + o, in + start, seg);
    o += seg;
  }
  if (o == 0) out[o++] = '/';
  out[o] = '\0';
  return out;
}

static bool is_hex_digit(char ch) {
  return (ch >= '0' && ch <= '9') || (ch >= 'a' && ch <= 'f') || (ch >= 'A' && ch <= 'F');
}

/*
 * Paths that servers read differently are refused rather than guessed at:
 * an empty segment ("//": merged by nginx, kept by others), an encoded
 * slash or backslash ("%2F", "%5C": decoded before ".." by some servers),
 * a dot segment with parameters ("..;": ".." to Tomcat), and a '%' that is
 * not followed by two hex digits ("%u002e" is '.' to IIS, "%zz" and a
 * trailing '%' are kept, rejected or mangled depending on the server), which
 * is no percent-encoding at all (RFC 3986 section 2.1) and so cannot be
 * compared as a path.
 */
static const char *path_ambiguity(const char *p, size_t len) {
  for (size_t i = 0; i < len; i++) {
    if (p[i] == '%' && (i + 2 >= len || !is_hex_digit(p[i + 1]) || !is_hex_digit(p[i + 2])))
      return "URL path has a malformed percent-encoding (not %HH)";
    if (p[i] == '/' && i + 1 < len && p[i + 1] == '/') return "URL path has an empty segment (//)";
    if (p[i] == '%' && i + 2 < len &&
        ((p[i + 1] == '2' && (p[i + 2] == 'f' || p[i + 2] == 'F')) ||
         (p[i + 1] == '5' && (p[i + 2] == 'c' || p[i + 2] == 'C'))))
      return "URL path has an encoded slash or backslash";
    if (p[i] == ';') {
      /* Is the segment before the ';' a dot segment? */
      size_t start = i;
      while (start > 0 && p[start - 1] != '/') start--;
      if (is_dot_segment(p + start, i - start, 1) || is_dot_segment(p + start, i - start, 2))
        return "URL path has a dot segment with parameters";
    }
  }
  return NULL;
}

static int hex_value(char ch) { return ch <= '9' ? ch - '0' : (ch | 0x20) - 'a' + 10; }

static bool is_unreserved(unsigned char c) {
  return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '-' || c == '.' ||
         c == '_' || c == '~';
}

/* RFC 3986 section 6.2.2: percent-encoded unreserved characters decoded and
 * the hex digits of the rest upper-cased, so "/%76%31" is "/v1" and
 * "caf%c3%a9" is "caf%C3%A9", as entries are written (docs/policy.md).  In
 * place: the text only shrinks.  Every '%' is followed by two hex digits
 * (path_ambiguity has run). */
static size_t pct_normalize(char *p, size_t len) {
  size_t o = 0;
  for (size_t i = 0; i < len; i++) {
    if (p[i] != '%') {
      p[o++] = p[i];
      continue;
    }
    unsigned char c = (unsigned char)(hex_value(p[i + 1]) << 4 | hex_value(p[i + 2]));
    if (is_unreserved(c)) {
      p[o++] = (char)c;
    } else {
      p[o++] = '%';
      p[o++] = "0123456789ABCDEF"[c >> 4];
      p[o++] = "0123456789ABCDEF"[c & 15];
    }
    i += 2;
  }
  return o;
}

/* Code points some servers fold to '.' (Unicode compatibility forms, IIS
 * "best fit"): a segment spelled with them may become a dot segment after
 * the check. */
static size_t dot_like(const unsigned char *s, size_t n) {
  static const char *const alike[] = { "\xef\xbc\x8e", /* U+FF0E fullwidth full stop */
                                       "\xe2\x80\xa4", /* U+2024 one dot leader */
                                       "\xe2\x80\xa5", /* U+2025 two dot leader */
                                       "\xef\xb9\x92", /* U+FE52 small full stop */
                                       "\xe3\x80\x82", /* U+3002 ideographic full stop */
                                       "\xef\xbd\xa1" /* U+FF61 halfwidth ideographic full stop */ };
  if (n >= 1 && s[0] == '.') return 1;
  for (size_t k = 0; k < sizeof alike / sizeof alike[0]; k++)
    if (n >= 3 && !memcmp(s, alike[k], 3)) return 3;
  return 0;
}

/*
 * What the path says once a server decodes it, refused where servers part
 * ways: an encoded control character (a NUL ends the path for some, is
 * kept by others), bytes that are not UTF-8 (overlong "%C0%AE" is '.' to
 * lenient decoders), a dot segment with parameters however the ';' is
 * spelled ("..%3B"), and a segment of dots that is not plain "." or ".."
 * (dot look-alikes, "..%20": trailing dots and spaces are dropped from file
 * names on Windows).  @p p is pct_normalize'd.
 */
static const char *decoded_ambiguity(const char *p, size_t len, bool *nomem) {
  unsigned char *d = egress__malloc(len + 1);
  if (!d) {
    *nomem = true;
    return "out of memory";
  }
  size_t n = 0;
  for (size_t i = 0; i < len; i++) {
    if (p[i] == '%') {
      d[n++] = (unsigned char)(hex_value(p[i + 1]) << 4 | hex_value(p[i + 2]));
      i += 2;
    } else {
      d[n++] = (unsigned char)p[i];
    }
  }
  const char *why = NULL;
  for (size_t i = 0; i < n && !why;) {
    size_t bad = 0, k = d[i] < 0x80 ? 1 : egress__utf8_seq(d + i, n - i, &bad);
    if (d[i] < 0x20 || d[i] == 0x7f)
      why = "URL path has an encoded control character";
    else if (k == 0)
      why = "URL path has percent-encoded bytes that are not UTF-8";
    i += k;
  }
  for (size_t i = 0; i < n && !why;) {
    size_t start = i, end = i;
    while (end < n && d[end] != '/') end++;
    size_t stem = start; /* the segment up to its parameters */
    while (stem < end && d[stem] != ';') stem++;
    size_t dots = 0, other = 0, spaces = 0, ascii_dots = 0;
    for (size_t j = start; j < stem;) {
      size_t k = dot_like(d + j, stem - j);
      if (k) {
        dots++;
        ascii_dots += k == 1;
        j += k;
      } else {
        spaces += d[j] == ' ';
        other += d[j] != ' ';
        j++;
      }
    }
    if (dots > 0 && other == 0) {
      bool plain = spaces == 0 && ascii_dots == dots && dots <= 2;
      if (!plain)
        why = "URL path has a dot segment in another spelling";
      else if (stem < end)
        why = "URL path has a dot segment with parameters";
    }
    i = end + 1;
  }
  egress__free(d);
  return why;
}

static const char *parse_url(const char *url, url_parts_t *u, bool *nomem) {
  size_t len = strlen(url);
  size_t i = 0;
  *nomem = false;
  memset(u, 0, sizeof *u);
  for (size_t k = 0; k < len; k++)
    if ((unsigned char)url[k] <= 0x20 || url[k] == 0x7f || url[k] == '\\')
      return "URL contains white space, a control character or a backslash";
  int default_port;
  if (len >= 8 && !strncasecmp(url, "https://", 8)) {
    default_port = 443;
    u->scheme = EGRESS__SCHEME_HTTPS;
    i = 8;
  } else if (len >= 7 && !strncasecmp(url, "http://", 7)) {
    default_port = 80;
    u->scheme = EGRESS__SCHEME_HTTP;
    i = 7;
  } else {
    return "URL scheme must be http or https";
  }
  size_t auth_start = i;
  while (i < len && url[i] != '/' && url[i] != '?' && url[i] != '#') i++;
  size_t auth_end = i;
  if (memchr(url + auth_start, '@', auth_end - auth_start)) return "URL must not contain userinfo";
  if (auth_end == auth_start) return "URL has no host";
  size_t host_end = auth_end;
  const char *port_text = NULL;
  size_t port_len = 0;
  if (url[auth_start] == '[') {
    const char *close = memchr(url + auth_start, ']', auth_end - auth_start);
    if (!close) return "URL has an unbalanced '['";
    host_end = (size_t)(close - url) + 1;
    if (host_end < auth_end) {
      if (url[host_end] != ':') return "junk after ']' in URL host";
      port_text = url + host_end + 1;
      port_len = auth_end - host_end - 1;
    }
  } else {
    const char *colon = memchr(url + auth_start, ':', auth_end - auth_start);
    if (colon) {
      host_end = (size_t)(colon - url);
      port_text = colon + 1;
      port_len = auth_end - host_end - 1;
    }
  }
  u->port = default_port;
  if (port_text) {
    if (port_len == 0 || port_len > 5) return "URL port must be 1-65535";
    uint32_t v = 0;
    if (egress__parse_decimal(port_text, port_len, true, 99999, &v) != EGRESS__DEC_OK)
      return "URL port must be decimal digits";
    u->port = (int32_t)v; /* range is judged by the check as invalid_port */
  }
  size_t path_end = auth_end;
  while (path_end < len && url[path_end] != '?' && url[path_end] != '#') path_end++;
  u->host = egress__strndup(url + auth_start, host_end - auth_start);
  const char *ambiguous = path_ambiguity(url + auth_end, path_end - auth_end);
  if (ambiguous) return ambiguous;
  char *raw = egress__strndup(url + auth_end, path_end - auth_end);
  if (!u->host || !raw) {
    egress__free(raw);
    *nomem = true;
    return "out of memory";
  }
  size_t raw_len = pct_normalize(raw, path_end - auth_end);
  ambiguous = decoded_ambiguity(raw, raw_len, nomem);
  if (!ambiguous) u->path = normalize_path(raw, raw_len);
  egress__free(raw);
  if (ambiguous) return ambiguous;
  if (!u->path) {
    *nomem = true;
    return "out of memory";
  }
  return NULL;
}

void egress__url_prepare(const char *url, const egress_request_t *req, egress_decision_t *d,
                         egress__url_check_t *uc) {
  url_parts_t u;
  memset(&u, 0, sizeof u);
  uc->ctx = (egress__url_ctx_t){ .invalid = NULL, .nomem = false };
  /* A refused request is not parsed (its URL need not even be text): it is
   * recorded as given, at port 0, and refused in the check. */
  bool refused = req && req->refusal;
  if (!refused) uc->ctx.invalid = url ? parse_url(url, &u, &uc->ctx.nomem) : "URL is NULL";
  if (url && !(d->t.url = egress__strdup(url))) uc->ctx.nomem = true;
  uc->host_owned = u.host;
  uc->path_owned = u.path;
  if (refused || uc->ctx.invalid || uc->ctx.nomem) {
    /* Refused as given: the decision names the URL, at port 0. */
    uc->host = url;
    uc->port = 0;
  } else {
    /* The checked host is the URL's host without IPv6 brackets. */
    uc->ctx.path = u.path;
    uc->ctx.scheme = u.scheme;
    uc->host = u.host;
    uc->port = u.port;
  }
}

void egress__url_release(egress__url_check_t *uc) {
  egress__free(uc->host_owned);
  egress__free(uc->path_owned);
  uc->host_owned = uc->path_owned = NULL;
}

egress_status_t egress_check_url(egress_checker_t *checker, const char *url, const egress_request_t *req,
                                 egress_decision_t **out) {
  if (!out) return EGRESS_EINVAL;
  *out = NULL;
  egress_decision_t *d = egress__calloc(1, sizeof(*d));
  if (!d) return EGRESS_ENOMEM;
  *out = d;
  if (!checker) return egress__check_url_parts(NULL, NULL, 0, NULL, req, d);
  egress__url_check_t uc;
  egress__url_prepare(url, req, d, &uc);
  egress_status_t st = egress__check_url_parts(checker, uc.host, uc.port, &uc.ctx, req, d);
  egress__url_release(&uc);
  return st;
}
