/*
 * Fuzz target: egress_check_url through a checker with a small fixed policy
 * that resolves from a fixed hosts file (no network).
 *
 * Invariant: an allow names a host and port the policy allows, under the
 * scheme of the URL entry that names them, and the host
 * the library checked is the host a plain reading of the URL's authority
 * gives (no parser confusion between the check and the caller's HTTP
 * client).  Every allowed address passed vetting.
 */
#include "egress_private.h"

#include "fuzz_common.h"

#include <ctype.h>
#include <strings.h>

static egress_checker_t *checker;

static const char *const allow_entries[] = {
  "api.example.com",                     /* 443 */
  "https://files.example.com/v1/upload", /* 443, path prefix */
  "*.svc.example.com:8443",
  "http://plain.example.com:8080",
  "203.0.113.0/24", /* documentation range, opened by naming it */
  "[2001:db8::]/32:443",
};
static const char *const deny_entries[] = { "bad.svc.example.com", "203.0.113.99" };

static const char hosts_text[] =
    "93.184.216.34 api.example.com\n"
    "93.184.216.35 files.example.com\n"
    "93.184.216.36 a.svc.example.com\n"
    "93.184.216.37 bad.svc.example.com\n"
    "127.0.0.1 loop.svc.example.com\n"
    "93.184.216.38 plain.example.com\n"
    "10.0.0.1 files.example.com\n"
    "93.184.216.39 evil.example.net\n";

static void setup(void) {
  egress_options_t *o = NULL;
  egress_policy_t *p = NULL;
  char err[EGRESS_ERRBUF_SIZE];
  if (egress_options_new(&o) != EGRESS_OK) abort();
  if (egress_options_set_hosts_file(o, fuzz_temp_file(hosts_text)) != EGRESS_OK ||
      egress_options_set_cache(o, 0, 5, 300, 5) != EGRESS_OK ||
      egress_options_set_mixed(o, EGRESS_MIXED_FILTER) != EGRESS_OK)
    abort();
  if (egress_policy_from_entries(allow_entries, sizeof allow_entries / sizeof *allow_entries, deny_entries,
                                 sizeof deny_entries / sizeof *deny_entries, &p, err,
                                 sizeof err) != EGRESS_OK ||
      egress_checker_new(p, o, &checker, err, sizeof err) != EGRESS_OK) {
    fprintf(stderr, "setup: %s\n", err);
    abort();
  }
  egress_policy_unref(p);
  egress_options_free(o);
}

/* A deliberately plain reading of "scheme://authority...": the host part
 * of the authority, lower-cased, one trailing dot dropped.  Returns false
 * when the URL is not of that shape or holds non-ASCII (IDNA is the
 * library's business). */
static bool plain_host(const char *url, char *out, size_t outlen) {
  const char *sep = strstr(url, "://");
  if (!sep) return false;
  const char *a = sep + 3;
  size_t n = strcspn(a, "/?#");
  if (n == 0 || n >= outlen) return false;
  memcpy(out, a, n);
  out[n] = '\0';
  if (out[0] == '[') {
    char *close = strchr(out, ']');
    if (!close) return false;
    close[1] = '\0';
  } else {
    char *colon = strrchr(out, ':');
    if (colon) *colon = '\0';
  }
  size_t len = strlen(out);
  for (size_t i = 0; i < len; i++) {
    if ((unsigned char)out[i] >= 0x80) return false;
    out[i] = (char)tolower((unsigned char)out[i]);
  }
  if (len && out[len - 1] == '.') out[len - 1] = '\0';
  return true;
}

static bool allowed_endpoint(const char *host, int32_t port) {
  if (!strcmp(host, "api.example.com") || !strcmp(host, "files.example.com")) return port == 443;
  if (!strcmp(host, "plain.example.com")) return port == 8080;
  size_t n = strlen(host);
  static const char svc[] = ".svc.example.com";
  if (n > sizeof svc - 1 && !strcmp(host + n - (sizeof svc - 1), svc)) {
    size_t label = n - (sizeof svc - 1);
    return port == 8443 && !memchr(host, '.', label) && strcmp(host, "bad.svc.example.com") != 0;
  }
  egress__ip_t ip;
  if (egress__ip4_parse(host, n, &ip))
    return ip.bytes[0] == 203 && ip.bytes[1] == 0 && ip.bytes[2] == 113 && ip.bytes[3] != 99;
  if (egress__ip6_parse(host, n, &ip))
    return port == 443 && ip.bytes[0] == 0x20 && ip.bytes[1] == 0x01 && ip.bytes[2] == 0x0d &&
           ip.bytes[3] == 0xb8;
  return false;
}

/* Reference path check, written apart from the library's: with "%2e" read
 * as '.' and dot segments resolved (RFC 3986 5.2.4), the path of the URL
 * must lie under @p prefix on a segment boundary.  A server may or may not
 * merge empty segments ("//") before resolving dot segments (nginx does), so
 * a fail-closed allow must hold under both readings: @p merge picks one. */
static bool path_under_as(const char *url, const char *prefix, bool merge) {
  const char *sep = strstr(url, "://");
  if (!sep) return false;
  const char *p = sep + 3 + strcspn(sep + 3, "/?#");
  size_t len = strcspn(p, "?#");
  /* Segment start offsets in out[]; out holds "/seg/seg...". */
  static size_t starts[8192];
  char out[8192 + 2];
  size_t nseg = 0, o = 0, i = 0;
  if (len && p[0] == '/') i = 1;
  while (i <= len) {
    size_t start = i;
    while (i < len && p[i] != '/') i++;
    size_t sl = 0, dots = 0;
    bool only_dots = true;
    for (size_t k = start; k < i; k++, sl++) {
      if (p[k] == '.') {
        dots++;
      } else if (k + 2 < i && p[k] == '%' && p[k + 1] == '2' && (p[k + 2] == 'e' || p[k + 2] == 'E')) {
        dots++;
        k += 2;
      } else {
        only_dots = false;
      }
    }
    size_t end = i;
    bool last = i >= len;
    i++;
    if (sl == 0 && merge && !last) continue;
    if (only_dots && sl > 0 && dots == 1) {
      if (last) {
        starts[nseg++] = o;
        out[o++] = '/';
      }
      continue;
    }
    if (only_dots && sl > 0 && dots == 2) {
      if (nseg) o = starts[--nseg];
      if (last) {
        starts[nseg++] = o;
        out[o++] = '/';
      }
      continue;
    }
    starts[nseg++] = o;
    out[o++] = '/';
    memcpy(out + o, p + start, end - start); /* the segment as written */
    o += end - start;
  }
  if (o == 0) out[o++] = '/';
  out[o] = '\0';
  size_t n = strlen(prefix);
  return !strncmp(out, prefix, n) && (out[n] == '\0' || out[n] == '/');
}

static bool path_under(const char *url, const char *prefix) {
  return path_under_as(url, prefix, true) && path_under_as(url, prefix, false);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  if (size > 8192) return 0;
  if (!checker) setup();
  char *url = fuzz_cstr(data, size);
  egress_decision_t *d = NULL;
  egress_status_t st = egress_check_url(checker, url, NULL, &d);
  FUZZ_REQUIRE(st == EGRESS_OK || st == EGRESS_ENOMEM || st == EGRESS_EINVAL, "status %d", (int)st);
  if (egress_decision_verdict(d) == EGRESS_VERDICT_ALLOW) {
    const char *host = egress_decision_host(d);
    int32_t port = egress_decision_port(d);
    FUZZ_REQUIRE(st == EGRESS_OK, "allow with status %d", (int)st);
    FUZZ_REQUIRE(host, "allow without a host: %s", url);
    FUZZ_REQUIRE(allowed_endpoint(host, port), "allowed %s port %d for URL \"%s\"", host, (int)port, url);
    char plain[512];
    if (plain_host(url, plain, sizeof plain) && plain[0] != '[') {
      egress__host_t h;
      const char *why = NULL;
      /* Compare canonical forms: the plain host may be an IPv4 literal in
       * a form canonicalization rejects, in which case no allow is right. */
      FUZZ_REQUIRE(egress__canon_host(plain, strlen(plain), &h, &why) == EGRESS_OK && !strcmp(h.text, host),
                   "URL \"%s\": library checked %s, authority says %s", url, host, plain);
    }
    if (!strcmp(host, "files.example.com")) {
      FUZZ_REQUIRE(path_under(url, "/v1/upload"), "files.example.com allowed outside /v1/upload: %s", url);
      FUZZ_REQUIRE(!strncasecmp(url, "https:", 6), "files.example.com allowed over plain http: %s", url);
    }
    if (!strcmp(host, "plain.example.com"))
      FUZZ_REQUIRE(!strncasecmp(url, "http:", 5), "plain.example.com allowed for another scheme: %s", url);
    size_t n = egress_decision_address_count(d), ok = 0;
    for (size_t i = 0; i < n; i++) {
      if (egress_decision_address_verdict(d, i) != EGRESS_VERDICT_ALLOW) continue;
      ok++;
      const char *a = egress_decision_address(d, i);
      FUZZ_REQUIRE(a && strcmp(a, "127.0.0.1") && strcmp(a, "10.0.0.1") && strcmp(a, "203.0.113.99"),
                   "forbidden address %s allowed for %s", a ? a : "(null)", url);
    }
    FUZZ_REQUIRE(ok > 0, "allow with no vetted address: %s", url);
  }
  egress_decision_free(d);
  free(url);
  return 0;
}
