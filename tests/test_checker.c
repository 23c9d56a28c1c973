/*
 * The checker end to end without a DNS server: IP literals, names denied
 * before DNS, and a temporary hosts file (c-ares reads it through
 * CARES_HOSTS) for the names that reach resolution.
 *
 * Decision semantics for every reason reachable without DNS faults
 * (docs/check.md), monitor mode, events through the checker, audit_required,
 * counters and Prometheus text, policy swap and reload (also under load),
 * and allocation failure driven through every N.
 */
#include "egress_private.h"
#include "testutil.h"

#include <arpa/inet.h>
#include <cjson/cJSON.h>
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

/* ------------------------------------------------------------------------ */
/* Fixtures                                                                  */
/* ------------------------------------------------------------------------ */

#define API_V4 "93.184.216.34"
#define API_V6 "2606:2800:220:1:248:1893:25c8:1946"

static char tmpdir[128];
static char hosts_path[256];

static const char hosts_text[] = "# test hosts file for test_checker\n" API_V4
                                 " api.example.com ports.example.com svc.example.com\n" API_V6
                                 " api.example.com\n"
                                 "127.0.0.1 loop.example.com\n"
                                 "10.0.0.1 private.example.com\n"
                                 "::1 loop6.example.com\n" API_V4
                                 " mixed.example.com\n"
                                 "10.0.0.2 mixed.example.com\n"
                                 "8.8.8.8 denied-addr.example.com\n";

static void write_file(const char *path, const char *text) {
  FILE *f = fopen(path, "w");
  CU_ASSERT_FATAL(f != NULL);
  fputs(text, f);
  CU_ASSERT_FATAL(fclose(f) == 0);
}

static int setup_tmp(void) {
  snprintf(tmpdir, sizeof tmpdir, "/tmp/egress-checker-XXXXXX");
  if (!mkdtemp(tmpdir)) return -1;
  snprintf(hosts_path, sizeof hosts_path, "%s/hosts", tmpdir);
  FILE *f = fopen(hosts_path, "w");
  if (!f) return -1;
  fputs(hosts_text, f);
  return fclose(f);
}

static void cleanup_tmp(void) {
  char cmd[300];
  if (!tmpdir[0]) return;
  snprintf(cmd, sizeof cmd, "rm -rf '%s'", tmpdir);
  if (system(cmd) != 0) fprintf(stderr, "could not remove %s\n", tmpdir);
}

static egress_policy_t *mkpolicy(const char *const *allow, size_t na, const char *const *deny, size_t nd) {
  egress_policy_t *p = NULL;
  char err[EGRESS_ERRBUF_SIZE] = "";
  egress_status_t st = egress_policy_from_entries(allow, na, deny, nd, &p, err, sizeof err);
  if (st != EGRESS_OK) printf("\npolicy rejected: %s\n", err);
  CU_ASSERT_FATAL(st == EGRESS_OK);
  return p;
}
#define NELEM(a)        (sizeof(a) / sizeof((a)[0]))
#define POLICY(a, d)    mkpolicy((a), NELEM(a), (d), NELEM(d))
#define POLICY_ALLOW(a) mkpolicy((a), NELEM(a), NULL, 0)

typedef struct ck_cfg {
  egress_mode_t mode;
  egress_mixed_t mixed;
  egress_event_cb cb;
  void *cb_data;
  const char *event_path;
  int event_fd; /* used when > 0 */
  bool audit;
  const char *pref64;
  bool nocache; /* every name check goes to the resolver */
} ck_cfg_t;

static egress_options_t *mkopts(const ck_cfg_t *cfg) {
  egress_options_t *o = NULL;
  CU_ASSERT_FATAL(egress_options_new(&o) == EGRESS_OK);
  CU_ASSERT_FATAL(egress_options_set_hosts_file(o, hosts_path) == EGRESS_OK);
  CU_ASSERT_FATAL(egress_options_set_timeout_ms(o, 2000) == EGRESS_OK);
  if (cfg) {
    CU_ASSERT_FATAL(egress_options_set_mode(o, cfg->mode) == EGRESS_OK);
    CU_ASSERT_FATAL(egress_options_set_mixed(o, cfg->mixed) == EGRESS_OK);
    if (cfg->cb) CU_ASSERT_FATAL(egress_options_set_event_callback(o, cfg->cb, cfg->cb_data) == EGRESS_OK);
    if (cfg->event_path) CU_ASSERT_FATAL(egress_options_set_event_path(o, cfg->event_path) == EGRESS_OK);
    if (cfg->event_fd > 0) CU_ASSERT_FATAL(egress_options_set_event_fd(o, cfg->event_fd) == EGRESS_OK);
    CU_ASSERT_FATAL(egress_options_set_audit_required(o, cfg->audit) == EGRESS_OK);
    if (cfg->pref64) CU_ASSERT_FATAL(egress_options_add_pref64(o, cfg->pref64) == EGRESS_OK);
    if (cfg->nocache) CU_ASSERT_FATAL(egress_options_set_cache(o, 0, 0, 0, 0) == EGRESS_OK);
  }
  return o;
}

static egress_checker_t *mkchecker(egress_policy_t *p, const ck_cfg_t *cfg) {
  egress_options_t *o = mkopts(cfg);
  egress_checker_t *c = NULL;
  char err[EGRESS_ERRBUF_SIZE] = "";
  egress_status_t st = egress_checker_new(p, o, &c, err, sizeof err);
  if (st != EGRESS_OK) printf("\nchecker_new: %s\n", err);
  CU_ASSERT_FATAL(st == EGRESS_OK);
  egress_options_free(o);
  return c;
}

static const char *jstr(const cJSON *o, const char *key) {
  const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, key);
  return cJSON_IsString(v) ? v->valuestring : NULL;
}

static bool jnull(const cJSON *o, const char *key) {
  return cJSON_IsNull(cJSON_GetObjectItemCaseSensitive(o, key));
}

/* What every decision must satisfy, whatever it says. */
static void invariants(egress_checker_t *c, const egress_decision_t *d) {
  egress_verdict_t v = egress_decision_verdict(d);
  egress_outcome_t oc = egress_decision_outcome(d);
  egress_reason_t r = egress_decision_reason(d);
  const char *msg = egress_decision_message(d);
  CU_ASSERT_PTR_NOT_NULL_FATAL(msg);
  CU_ASSERT(strlen(msg) > 0);
  CU_ASSERT_EQUAL(oc == EGRESS_OUTCOME_ALLOWED, r == EGRESS_REASON_NONE);
  if (egress_decision_mode(d) == EGRESS_MODE_ENFORCE)
    CU_ASSERT_EQUAL(v == EGRESS_VERDICT_ALLOW, oc == EGRESS_OUTCOME_ALLOWED);
  if (oc == EGRESS_OUTCOME_ALLOWED) CU_ASSERT_EQUAL(v, EGRESS_VERDICT_ALLOW);

  egress_policy_t *p = egress_checker_policy(c);
  if (egress_decision_has_rule(d)) {
    const char *t = egress_decision_rule_text(d);
    const char *pt = egress_policy_rule_text(p, egress_decision_rule_list(d), egress_decision_rule_index(d));
    CU_ASSERT_PTR_NOT_NULL_FATAL(t);
    CU_ASSERT_PTR_NOT_NULL_FATAL(pt);
    CU_ASSERT_STRING_EQUAL(t, pt);
  } else {
    CU_ASSERT_PTR_NULL(egress_decision_rule_text(d));
  }
  egress_policy_unref(p);

  /* Allowed: at least one address passed and curl_resolve names exactly
   * the vetted ones (for names). Denied: no address is to be used. */
  size_t n = egress_decision_address_count(d), passed = 0;
  for (size_t i = 0; i < n; i++) {
    CU_ASSERT_PTR_NOT_NULL(egress_decision_address(d, i));
    if (egress_decision_address_verdict(d, i) == EGRESS_VERDICT_ALLOW) {
      passed++;
      CU_ASSERT_EQUAL(egress_decision_address_reason(d, i), EGRESS_REASON_NONE);
    } else {
      CU_ASSERT_NOT_EQUAL(egress_decision_address_reason(d, i), EGRESS_REASON_INTERNAL_ERROR);
    }
  }
  if (oc == EGRESS_OUTCOME_ALLOWED) CU_ASSERT(passed > 0);
  if (oc != EGRESS_OUTCOME_ALLOWED) CU_ASSERT_EQUAL(passed, 0);
  if (v != EGRESS_VERDICT_ALLOW) CU_ASSERT_PTR_NULL(egress_decision_curl_resolve(d));

  /* The event JSON says the same as the accessors. */
  const char *ev = egress_decision_event_json(d);
  CU_ASSERT_PTR_NOT_NULL_FATAL(ev);
  cJSON *root = cJSON_Parse(ev);
  CU_ASSERT_PTR_NOT_NULL_FATAL(root);
  const cJSON *data = cJSON_GetObjectItemCaseSensitive(root, "data");
  CU_ASSERT_FATAL(cJSON_IsObject(data));
  CU_ASSERT_STRING_EQUAL(jstr(data, "outcome"), egress_outcome_name(oc));
  if (r == EGRESS_REASON_NONE) {
    CU_ASSERT(jnull(data, "denyReason"));
  } else if (jstr(data, "denyReason")) {
    CU_ASSERT_STRING_EQUAL(jstr(data, "denyReason"), egress_reason_name(r));
  } else {
    CU_FAIL("denyReason missing");
  }
  const cJSON *mr = cJSON_GetObjectItemCaseSensitive(data, "matchedRule");
  CU_ASSERT_EQUAL(cJSON_IsObject(mr), egress_decision_has_rule(d));
  if (cJSON_IsObject(mr) && egress_decision_has_rule(d)) {
    CU_ASSERT_STRING_EQUAL(jstr(mr, "text"), egress_decision_rule_text(d));
    CU_ASSERT_STRING_EQUAL(jstr(mr, "list"),
                           egress_decision_rule_list(d) == EGRESS_LIST_DENY ? "deny" : "allow");
    CU_ASSERT_EQUAL((size_t)cJSON_GetObjectItemCaseSensitive(mr, "index")->valuedouble,
                    egress_decision_rule_index(d));
  }
  const cJSON *addrs = cJSON_GetObjectItemCaseSensitive(data, "addresses");
  CU_ASSERT_EQUAL((size_t)cJSON_GetArraySize(addrs), n);
  const char *digest = egress_decision_policy_digest(d);
  CU_ASSERT_PTR_NOT_NULL(digest);
  if (digest && jstr(data, "policyDigest")) CU_ASSERT_STRING_EQUAL(jstr(data, "policyDigest"), digest);
  cJSON_Delete(root);
}

static egress_decision_t *check(egress_checker_t *c, const char *host, int32_t port) {
  egress_decision_t *d = NULL;
  egress_status_t st = egress_check_ex(c, host, port, NULL, &d);
  CU_ASSERT_EQUAL(st, EGRESS_OK);
  CU_ASSERT_PTR_NOT_NULL_FATAL(d);
  invariants(c, d);
  return d;
}

#define NO_RULE  (-1)
#define ANY_RULE (-2)

/* Check and compare with the expected outcome, reason and rule; print what
 * came instead so that a failure names its input. */
static egress_decision_t *expect(egress_checker_t *c, const char *host, int32_t port, egress_outcome_t oc,
                                 egress_reason_t r, int list, long index) {
  egress_decision_t *d = check(c, host, port);
  bool ok = egress_decision_outcome(d) == oc && egress_decision_reason(d) == r;
  if (list == NO_RULE) {
    ok = ok && !egress_decision_has_rule(d);
  } else if (list != ANY_RULE) {
    ok = ok && egress_decision_has_rule(d) && (int)egress_decision_rule_list(d) == list &&
         (long)egress_decision_rule_index(d) == index;
  }
  if (!ok)
    printf("\n  %s:%ld: expected %s/%s rule %d[%ld], got %s/%s rule %s[%zu] (%s)\n", host ? host : "(null)",
           (long)port, egress_outcome_name(oc), egress_reason_name(r), list, index,
           egress_outcome_name(egress_decision_outcome(d)), egress_reason_name(egress_decision_reason(d)),
           egress_decision_has_rule(d) ? (egress_decision_rule_list(d) ? "deny" : "allow") : "none",
           egress_decision_rule_index(d), egress_decision_message(d));
  CU_ASSERT(ok);
  return d;
}

static void expect_free(egress_checker_t *c, const char *host, int32_t port, egress_outcome_t oc,
                        egress_reason_t r, int list, long index) {
  egress_decision_free(expect(c, host, port, oc, r, list, index));
}

static bool contains(const char *hay, const char *needle) {
  return hay && needle && strstr(hay, needle) != NULL;
}

static bool has_address(const egress_decision_t *d, const char *text, egress_verdict_t v, egress_reason_t r) {
  for (size_t i = 0; i < egress_decision_address_count(d); i++)
    if (!strcmp(egress_decision_address(d, i), text))
      return egress_decision_address_verdict(d, i) == v && egress_decision_address_reason(d, i) == r;
  return false;
}

/* ------------------------------------------------------------------------ */
/* 1. Decision semantics                                                     */
/* ------------------------------------------------------------------------ */

static const char *const hostile_hosts[] = {
  /* numeric IPv4 spellings that inet_aton or a URL parser would read */
  "2130706433",
  "0x7f000001",
  "0x7f.1",
  "0x7f.0.0.1",
  "0177.0.0.1",
  "0177.1",
  "127.1",
  "127.0.1",
  "127.000.000.001",
  "127.0.0.01",
  "017700000001",
  "0",
  "0x0",
  "00",
  "1.2.3",
  "256.0.0.1",
  "1.2.3.4.5",
  "127.0.0.1.1",
  "0x7F.0x00.0x00.0x01",
  "0000000127.0.0.1",
  "4294967297",
  "0xffffffff",
  "foo.2.3.4",
  "example.123",
  "203.0.113.08",
  "api.example.0x10",
  /* userinfo, ports, schemes, paths */
  "user@api.example.com",
  "user:pass@api.example.com",
  "@api.example.com",
  "api.example.com@evil.example",
  "api.example.com:443",
  "api.example.com:",
  "127.0.0.1:443",
  "[::1]:443",
  "http://api.example.com",
  "https://api.example.com/",
  "//api.example.com",
  "api.example.com/path",
  "api.example.com?x=1",
  "api.example.com#frag",
  /* white space and control characters */
  "",
  " ",
  " api.example.com",
  "api.example.com ",
  "api .example.com",
  "api.example.com\r\n",
  "api\t.example.com",
  "api.example.com\n",
  "\x7f",
  "api.exa\x01mple.com",
  "api.example.com\x1b",
  /* percent, backslash, brackets, zone ids */
  "%61pi.example.com",
  "api.example.com%00",
  "api%2eexample.com",
  "[fe80::1%eth0]",
  "fe80::1%eth0",
  "fe80::1%25eth0",
  "[fe80::1%25eth0]",
  "api\\example.com",
  "api.example.com\\",
  "\\\\api.example.com",
  "[127.0.0.1]",
  "[api.example.com]",
  "[::1",
  "::1]",
  "[[::1]]",
  "[]",
  /* label and name syntax */
  "api..example.com",
  ".api.example.com",
  "api.example.com..",
  ".",
  "..",
  "*.example.com",
  "api*.example.com",
  "api,example.com",
  "api;example.com",
  "api\"example.com",
  "api'.example.com",
  "<api>.example.com",
  "api.example.com;rm -rf",
  "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa.example.com", /* 64-octet label */
  /* non-ASCII that maps to an IP literal, and invalid UTF-8 */
  "\xe2\x91\xa0\xe2\x91\xa1\xe2\x91\xa6.0.0.1",
  "\xff.example.com",
  "\xc0\xae.example.com",
  "api.example.com\xed\xa0\x80",
  /* IPv6 junk */
  ":::1",
  "1::2::3",
  "::ffff:127.0.0.1.1",
  "12345::1",
  "::g",
  "fe80::1/64",
};

static void test_invalid_host(void) {
  const char *allow[] = { "*", "**.example.com:*", "0.0.0.0/0", "::/0" };
  egress_policy_t *p = POLICY_ALLOW(allow);
  egress_checker_t *c = mkchecker(p, NULL);
  CU_ASSERT(NELEM(hostile_hosts) >= 40);
  for (size_t i = 0; i < NELEM(hostile_hosts); i++) {
    const char *h = hostile_hosts[i];
    egress_decision_t *d = expect(c, h, 443, EGRESS_OUTCOME_DENIED, EGRESS_REASON_INVALID_HOST, NO_RULE, 0);
    CU_ASSERT_EQUAL(egress_decision_verdict(d), EGRESS_VERDICT_DENY);
    CU_ASSERT_PTR_NULL(egress_decision_host(d));
    CU_ASSERT_EQUAL(egress_decision_address_count(d), 0);
    CU_ASSERT_PTR_NULL(egress_decision_curl_resolve(d));
    CU_ASSERT_PTR_NOT_NULL(egress_decision_destination_host(d));
    CU_ASSERT(contains(egress_decision_message(d), "invalid") ||
              contains(egress_decision_message(d), "host"));
    egress_decision_free(d);
    CU_ASSERT_EQUAL(egress_check(c, h, 443), EGRESS_VERDICT_DENY);
  }
  /* A 254-octet name. */
  char longname[300];
  size_t o = 0;
  while (o < 254) {
    memcpy(longname + o, "abcdefghi.", 10);
    o += 10;
  }
  longname[254] = '\0';
  longname[253] = 'x'; /* no trailing dot: 254 octets of name */
  expect_free(c, longname, 443, EGRESS_OUTCOME_DENIED, EGRESS_REASON_INVALID_HOST, NO_RULE, 0);
  expect_free(c, NULL, 443, EGRESS_OUTCOME_DENIED, EGRESS_REASON_INVALID_HOST, NO_RULE, 0);
  CU_ASSERT_EQUAL(egress_check(c, NULL, 443), EGRESS_VERDICT_DENY);
  /* Invalid hosts never reach DNS. */
  CU_ASSERT_EQUAL(egress_checker_counter(c, EGRESS_COUNTER_DNS_QUERIES), 0);
  /* Control: the same checker does allow well-formed hosts. */
  expect_free(c, "API.Example.COM.", 443, EGRESS_OUTCOME_ALLOWED, EGRESS_REASON_NONE, EGRESS_LIST_ALLOW, 0);
  expect_free(c, "[::ffff:8.8.8.8]", 443, EGRESS_OUTCOME_ALLOWED, EGRESS_REASON_NONE, EGRESS_LIST_ALLOW, 2);
  expect_free(c, "_srv.api.example.com", 443, EGRESS_OUTCOME_DENIED, EGRESS_REASON_NO_SUCH_HOST,
              EGRESS_LIST_ALLOW, 0);
  egress_checker_free(c);
  egress_policy_unref(p);
}

/* ------------------------------------------------------------------------ */
/* Over-long hosts are reported cut short                                    */
/* ------------------------------------------------------------------------ */

typedef struct ev_capture {
  char *last; /* copy of the last event */
  size_t max_len;
} ev_capture_t;

static int capture_cb(const char *json, size_t len, const egress_decision_t *d, void *user) {
  ev_capture_t *cap = user;
  (void)d;
  free(cap->last);
  cap->last = strndup(json, len);
  if (len > cap->max_len) cap->max_len = len;
  return 0;
}

/* The reported form of a host of @p len bytes whose first @p keep bytes are
 * kept: those bytes, then the marker naming the full length. */
static char *reported(const char *host, size_t keep, size_t len) {
  char *out = malloc(keep + 64);
  CU_ASSERT_FATAL(out != NULL);
  memcpy(out, host, keep);
  snprintf(out + keep, 64, "\xe2\x80\xa6(truncated, %zu bytes)", len);
  return out;
}

static char *repeat(const char *unit, size_t times) {
  size_t ul = strlen(unit);
  char *s = malloc(ul * times + 1);
  CU_ASSERT_FATAL(s != NULL);
  for (size_t i = 0; i < times; i++) memcpy(s + i * ul, unit, ul);
  s[ul * times] = '\0';
  return s;
}

static void expect_reported(const char *json, const char *dest_field, const char *host_field) {
  cJSON *root = cJSON_Parse(json);
  CU_ASSERT_PTR_NOT_NULL_FATAL(root);
  const cJSON *data = cJSON_GetObjectItemCaseSensitive(root, "data");
  CU_ASSERT_PTR_NOT_NULL_FATAL(data);
  const char *dest = jstr(data, "destination"), *subj = jstr(root, "subject");
  CU_ASSERT_PTR_NOT_NULL_FATAL(dest);
  CU_ASSERT_PTR_NOT_NULL_FATAL(subj);
  if (strcmp(dest, dest_field))
    printf("\n  destination %.80s... (%zu bytes), want %.80s... (%zu bytes)\n", dest, strlen(dest),
           dest_field, strlen(dest_field));
  CU_ASSERT_STRING_EQUAL(dest, dest_field);
  CU_ASSERT_STRING_EQUAL(subj, dest_field);
  if (host_field) {
    CU_ASSERT(jstr(data, "host") && !strcmp(jstr(data, "host"), host_field));
  } else {
    CU_ASSERT(jnull(data, "host"));
  }
  CU_ASSERT_STRING_EQUAL(jstr(data, "denyReason"), "invalid_host");
  cJSON_Delete(root);
}

static void test_long_host_truncated(void) {
  const char *allow[] = { "*", "0.0.0.0/0" };
  egress_policy_t *p = POLICY_ALLOW(allow);
  ev_capture_t cap = { NULL, 0 };
  ck_cfg_t cfg = { .cb = capture_cb, .cb_data = &cap };
  egress_checker_t *c = mkchecker(p, &cfg);

  char *huge = repeat("a", 200000);
  char *u254 = repeat("b", 254);
  char *u253 = repeat("c", 253);          /* invalid (label > 63), but short enough */
  char *utf8 = repeat("\xc3\xa9", 200);   /* 400 bytes: the cut backs off to 252 */
  char *dots = repeat("abcdefgh.", 1000); /* 9000 bytes of well-formed labels */
  const struct {
    const char *host;
    size_t keep; /* SIZE_MAX: reported whole */
  } cases[] = { { huge, 253 }, { u254, 253 }, { u253, SIZE_MAX }, { utf8, 252 }, { dots, 253 } };
  for (size_t i = 0; i < NELEM(cases); i++) {
    const char *h = cases[i].host;
    size_t len = strlen(h);
    char *rep = cases[i].keep == SIZE_MAX ? strdup(h) : reported(h, cases[i].keep, len);
    char want[1024];
    snprintf(want, sizeof want, "%s:443", rep);
    cap.max_len = 0;
    egress_decision_t *d = expect(c, h, 443, EGRESS_OUTCOME_DENIED, EGRESS_REASON_INVALID_HOST, NO_RULE, 0);
    /* The accessor still gives the host exactly as given. */
    CU_ASSERT_STRING_EQUAL(egress_decision_destination_host(d), h);
    CU_ASSERT_PTR_NOT_NULL_FATAL(cap.last);
    expect_reported(cap.last, want, NULL);
    expect_reported(egress_decision_event_json(d), want, NULL);
    CU_ASSERT(cap.max_len < 2048);
    /* The message names the host in the same cut form. */
    const char *msg = egress_decision_message(d);
    if (cases[i].keep != SIZE_MAX) {
      char mark[64];
      snprintf(mark, sizeof mark, "\xe2\x80\xa6(truncated, %zu bytes)", len);
      CU_ASSERT(contains(msg, mark));
      CU_ASSERT(strlen(msg) < 1200);
    }
    CU_ASSERT(contains(msg, "invalid host"));
    /* egressctl's line: "host" is the destination as reported. */
    char *line = egress_decision_to_json(d);
    CU_ASSERT_PTR_NOT_NULL_FATAL(line);
    cJSON *j = cJSON_Parse(line);
    CU_ASSERT_PTR_NOT_NULL_FATAL(j);
    CU_ASSERT(jstr(j, "host") && !strcmp(jstr(j, "host"), rep));
    CU_ASSERT(strlen(line) < 4096);
    cJSON_Delete(j);
    egress_free(line);
    egress_decision_free(d);
    /* egress_check prints into the thread's buffer: the same cut. */
    CU_ASSERT_EQUAL(egress_check(c, h, 443), EGRESS_VERDICT_DENY);
    expect_reported(cap.last, want, NULL);
    free(rep);
  }

  /* URL checks: the over-long host is cut, and so is the URL. */
  char *url = malloc(200100);
  CU_ASSERT_FATAL(url != NULL);
  snprintf(url, 200100, "https://%s/v1", huge);
  egress_decision_t *d = NULL;
  CU_ASSERT_EQUAL(egress_check_url(c, url, NULL, &d), EGRESS_OK);
  CU_ASSERT_EQUAL(egress_decision_reason(d), EGRESS_REASON_INVALID_HOST);
  char *rep = reported(huge, 253, 200000);
  char want[1024];
  snprintf(want, sizeof want, "%s:443", rep);
  expect_reported(cap.last, want, NULL);
  CU_ASSERT(cap.max_len < 8192);
  cJSON *root = cJSON_Parse(cap.last);
  const char *u = jstr(cJSON_GetObjectItemCaseSensitive(root, "data"), "url");
  char *urep = reported(url, 4096, strlen(url));
  CU_ASSERT(u && !strcmp(u, urep));
  cJSON_Delete(root);
  free(urep);
  egress_decision_free(d);
  /* A URL that does not parse is its own destination, cut the same way. */
  memcpy(url, "ftp:/", 5);
  CU_ASSERT_EQUAL(egress_check_url(c, url, NULL, &d), EGRESS_OK);
  CU_ASSERT_EQUAL(egress_decision_reason(d), EGRESS_REASON_INVALID_HOST);
  urep = reported(url, 4096, strlen(url));
  expect_reported(cap.last, urep, NULL);
  CU_ASSERT(cap.max_len < 16384);
  free(urep);
  egress_decision_free(d);
  free(rep);
  free(url);

  /* A host that canonicalized is reported exactly as given, even when the
   * spelling is longer than 253 bytes (a trailing dot, or a non-ASCII
   * spelling whose A-label form fits). */
  char valid[300];
  snprintf(valid, sizeof valid, "%s.%s.%s.%.61s.", u253 + 190, u253 + 190, u253 + 190, u253);
  CU_ASSERT_EQUAL(strlen(valid), 63 * 3 + 61 + 4);
  for (size_t k = 0; k < 3; k++) valid[k * 64] = 'd';
  d = check(c, valid, 443);
  CU_ASSERT_NOT_EQUAL(egress_decision_reason(d), EGRESS_REASON_INVALID_HOST);
  root = cJSON_Parse(cap.last);
  snprintf(want, sizeof want, "%s:443", valid);
  CU_ASSERT_STRING_EQUAL(jstr(cJSON_GetObjectItemCaseSensitive(root, "data"), "destination"), want);
  cJSON_Delete(root);
  egress_decision_free(d);
  char *wide_a = repeat("\xef\xbd\x81", 60), *wide_b = repeat("\xef\xbd\x82", 60); /* U+FF41, U+FF42 */
  char fullwidth[400];
  snprintf(fullwidth, sizeof fullwidth, "%s.%s.com", wide_a, wide_b);
  CU_ASSERT_EQUAL(strlen(fullwidth), 365);
  d = check(c, fullwidth, 443);
  CU_ASSERT_NOT_EQUAL(egress_decision_reason(d), EGRESS_REASON_INVALID_HOST);
  root = cJSON_Parse(cap.last);
  snprintf(want, sizeof want, "%s:443", fullwidth);
  CU_ASSERT_STRING_EQUAL(jstr(cJSON_GetObjectItemCaseSensitive(root, "data"), "destination"), want);
  cJSON_Delete(root);
  egress_decision_free(d);
  free(wide_a);
  free(wide_b);

  free(huge);
  free(u254);
  free(u253);
  free(utf8);
  free(dots);
  free(cap.last);
  egress_checker_free(c);
  egress_policy_unref(p);
}

static void test_invalid_port(void) {
  const char *allow[] = { "api.example.com:*", "0.0.0.0/0" };
  egress_policy_t *p = POLICY_ALLOW(allow);
  egress_checker_t *c = mkchecker(p, NULL);
  const int32_t bad[] = { 0, -1, 65536, 65537, 100000, INT32_MAX, INT32_MIN, -65535 };
  const char *hosts[] = { "api.example.com", "8.8.8.8", "0x7f.1" };
  for (size_t h = 0; h < NELEM(hosts); h++)
    for (size_t i = 0; i < NELEM(bad); i++) {
      egress_decision_t *d =
          expect(c, hosts[h], bad[i], EGRESS_OUTCOME_DENIED, EGRESS_REASON_INVALID_PORT, NO_RULE, 0);
      CU_ASSERT_EQUAL(egress_decision_port(d), bad[i]);
      CU_ASSERT_EQUAL(egress_decision_address_count(d), 0);
      CU_ASSERT(contains(egress_decision_message(d), "port"));
      egress_decision_free(d);
    }
  CU_ASSERT_EQUAL(egress_check(c, "api.example.com", 0), EGRESS_VERDICT_DENY);
  CU_ASSERT_EQUAL(egress_checker_counter(c, EGRESS_COUNTER_DNS_QUERIES), 0);
  /* Edges of the range are fine. */
  expect_free(c, "8.8.8.8", 1, EGRESS_OUTCOME_ALLOWED, EGRESS_REASON_NONE, EGRESS_LIST_ALLOW, 1);
  expect_free(c, "8.8.8.8", 65535, EGRESS_OUTCOME_ALLOWED, EGRESS_REASON_NONE, EGRESS_LIST_ALLOW, 1);
  CU_ASSERT_EQUAL(egress_check(c, "8.8.8.8", 65535), EGRESS_VERDICT_ALLOW);
  egress_checker_free(c);
  egress_policy_unref(p);
}

static void test_empty_allowlist(void) {
  const char *deny[] = { "10.0.0.0/8", "bad.example.com", "[2001:4860::]/32:443" };
  egress_policy_t *p = mkpolicy(NULL, 0, deny, NELEM(deny));
  egress_checker_t *c = mkchecker(p, NULL);
  const char *hosts[] = { "api.example.com", "8.8.8.8",          "127.0.0.1",        "::1",
                          "2606:4700::1111", "loop.example.com", "x.bad.example.com" };
  for (size_t i = 0; i < NELEM(hosts); i++) {
    egress_decision_t *d =
        expect(c, hosts[i], 443, EGRESS_OUTCOME_DENIED, EGRESS_REASON_EMPTY_ALLOWLIST, NO_RULE, 0);
    CU_ASSERT(contains(egress_decision_message(d), "empty"));
    egress_decision_free(d);
    CU_ASSERT_EQUAL(egress_check(c, hosts[i], 443), EGRESS_VERDICT_DENY);
  }
  /* The deny list is still reported first. */
  egress_decision_t *d =
      expect(c, "10.1.2.3", 443, EGRESS_OUTCOME_DENIED, EGRESS_REASON_EXPLICIT_DENY, EGRESS_LIST_DENY, 0);
  CU_ASSERT_STRING_EQUAL(egress_decision_rule_text(d), "10.0.0.0/8");
  CU_ASSERT(contains(egress_decision_message(d), "10.1.2.3"));
  egress_decision_free(d);
  expect_free(c, "::ffff:10.9.9.9", 80, EGRESS_OUTCOME_DENIED, EGRESS_REASON_EXPLICIT_DENY, EGRESS_LIST_DENY,
              0);
  expect_free(c, "BAD.example.com.", 80, EGRESS_OUTCOME_DENIED, EGRESS_REASON_EXPLICIT_DENY, EGRESS_LIST_DENY,
              1);
  expect_free(c, "[2001:4860::8888]", 443, EGRESS_OUTCOME_DENIED, EGRESS_REASON_EXPLICIT_DENY,
              EGRESS_LIST_DENY, 2);
  /* The deny entry with a port does not cover other ports: back to empty. */
  expect_free(c, "[2001:4860::8888]", 80, EGRESS_OUTCOME_DENIED, EGRESS_REASON_EMPTY_ALLOWLIST, NO_RULE, 0);
  /* Input errors come before everything. */
  expect_free(c, "0x7f.1", 443, EGRESS_OUTCOME_DENIED, EGRESS_REASON_INVALID_HOST, NO_RULE, 0);
  expect_free(c, "", 443, EGRESS_OUTCOME_DENIED, EGRESS_REASON_INVALID_HOST, NO_RULE, 0);
  expect_free(c, "api.example.com", 0, EGRESS_OUTCOME_DENIED, EGRESS_REASON_INVALID_PORT, NO_RULE, 0);
  CU_ASSERT_EQUAL(egress_checker_counter(c, EGRESS_COUNTER_DNS_QUERIES), 0);
  egress_checker_free(c);
  egress_policy_unref(p);

  /* The JSON form with an empty array is the same policy. */
  egress_policy_t *pj = NULL;
  const char *json = "{\"egressAllowlist\": []}";
  CU_ASSERT_FATAL(egress_policy_from_json(json, strlen(json), &pj, NULL, 0) == EGRESS_OK);
  c = mkchecker(pj, NULL);
  expect_free(c, "api.example.com", 443, EGRESS_OUTCOME_DENIED, EGRESS_REASON_EMPTY_ALLOWLIST, NO_RULE, 0);
  egress_checker_free(c);
  egress_policy_unref(pj);
}

static void test_explicit_deny(void) {
  const char *allow[] = { "api.example.com:*", "**.example.com:*", "0.0.0.0/0", "::/0", "*:*" };
  const char *deny[] = { "api.example.com",
                         "*.bad.example.com",
                         "8.8.8.0/24",
                         "[2001:4860::]/32",
                         "ports.example.com:8443",
                         "1.1.1.1:443",
                         "re:^evil-[0-9]+\\.example\\.com$" };
  egress_policy_t *p = POLICY(allow, deny);
  egress_checker_t *c = mkchecker(p, NULL);
  /* A deny entry without a port denies every port, even though the same
   * name is allowed on any port (deny overrides). */
  const int32_t ports[] = { 1, 80, 443, 8443, 65535 };
  for (size_t i = 0; i < NELEM(ports); i++) {
    egress_decision_t *d = expect(c, "api.example.com", ports[i], EGRESS_OUTCOME_DENIED,
                                  EGRESS_REASON_EXPLICIT_DENY, EGRESS_LIST_DENY, 0);
    CU_ASSERT_STRING_EQUAL(egress_decision_rule_text(d), "api.example.com");
    CU_ASSERT(contains(egress_decision_message(d), "api.example.com"));
    CU_ASSERT_EQUAL(egress_decision_address_count(d), 0);
    egress_decision_free(d);
    CU_ASSERT_EQUAL(egress_check(c, "api.example.com", (uint16_t)ports[i]), EGRESS_VERDICT_DENY);
    expect_free(c, "8.8.8.8", ports[i], EGRESS_OUTCOME_DENIED, EGRESS_REASON_EXPLICIT_DENY, EGRESS_LIST_DENY,
                2);
    expect_free(c, "2001:4860:4860::8888", ports[i], EGRESS_OUTCOME_DENIED, EGRESS_REASON_EXPLICIT_DENY,
                EGRESS_LIST_DENY, 3);
  }
  /* Spellings of the same name. */
  expect_free(c, "API.EXAMPLE.COM.", 443, EGRESS_OUTCOME_DENIED, EGRESS_REASON_EXPLICIT_DENY,
              EGRESS_LIST_DENY, 0);
  expect_free(c, "x.bad.example.com", 443, EGRESS_OUTCOME_DENIED, EGRESS_REASON_EXPLICIT_DENY,
              EGRESS_LIST_DENY, 1);
  expect_free(c, "evil-42.example.com", 443, EGRESS_OUTCOME_DENIED, EGRESS_REASON_EXPLICIT_DENY,
              EGRESS_LIST_DENY, 6);
  expect_free(c, "EVIL-7.Example.Com", 443, EGRESS_OUTCOME_DENIED, EGRESS_REASON_EXPLICIT_DENY,
              EGRESS_LIST_DENY, 6);
  /* IPv4-mapped and bracketed literals meet the same deny rules. */
  egress_decision_t *d = expect(c, "::ffff:8.8.8.8", 443, EGRESS_OUTCOME_DENIED, EGRESS_REASON_EXPLICIT_DENY,
                                EGRESS_LIST_DENY, 2);
  CU_ASSERT_EQUAL(egress_decision_address_count(d), 1);
  CU_ASSERT(has_address(d, "8.8.8.8", EGRESS_VERDICT_DENY, EGRESS_REASON_EXPLICIT_DENY));
  CU_ASSERT(contains(egress_decision_message(d), "8.8.8.8"));
  egress_decision_free(d);
  expect_free(c, "[::ffff:8.8.8.4]", 80, EGRESS_OUTCOME_DENIED, EGRESS_REASON_EXPLICIT_DENY, EGRESS_LIST_DENY,
              2);
  expect_free(c, "[2001:4860::1]", 80, EGRESS_OUTCOME_DENIED, EGRESS_REASON_EXPLICIT_DENY, EGRESS_LIST_DENY,
              3);
  /* A deny entry with a port covers only that port. */
  expect_free(c, "ports.example.com", 8443, EGRESS_OUTCOME_DENIED, EGRESS_REASON_EXPLICIT_DENY,
              EGRESS_LIST_DENY, 4);
  expect_free(c, "ports.example.com", 443, EGRESS_OUTCOME_ALLOWED, EGRESS_REASON_NONE, EGRESS_LIST_ALLOW, 1);
  expect_free(c, "1.1.1.1", 443, EGRESS_OUTCOME_DENIED, EGRESS_REASON_EXPLICIT_DENY, EGRESS_LIST_DENY, 5);
  expect_free(c, "1.1.1.1", 444, EGRESS_OUTCOME_ALLOWED, EGRESS_REASON_NONE, EGRESS_LIST_ALLOW, 2);
  expect_free(c, "1.1.1.2", 443, EGRESS_OUTCOME_ALLOWED, EGRESS_REASON_NONE, EGRESS_LIST_ALLOW, 2);
  /* Outside every deny entry. */
  expect_free(c, "bad.example.com", 443, EGRESS_OUTCOME_DENIED, EGRESS_REASON_NO_SUCH_HOST, EGRESS_LIST_ALLOW,
              1);
  expect_free(c, "evil-x.example.com", 443, EGRESS_OUTCOME_DENIED, EGRESS_REASON_NO_SUCH_HOST,
              EGRESS_LIST_ALLOW, 1);
  /* A name resolving into the deny list: the deny rule wins and is named. */
  d = expect(c, "denied-addr.example.com", 443, EGRESS_OUTCOME_DENIED,
             EGRESS_REASON_RESOLVED_ADDRESS_FORBIDDEN, EGRESS_LIST_DENY, 2);
  CU_ASSERT(has_address(d, "8.8.8.8", EGRESS_VERDICT_DENY, EGRESS_REASON_EXPLICIT_DENY));
  CU_ASSERT(contains(egress_decision_message(d), "8.8.8.8"));
  egress_decision_free(d);
  egress_checker_free(c);
  egress_policy_unref(p);
}

static void test_not_in_allowlist(void) {
  const char *allow[] = { "api.example.com", "*.example.org", "93.184.216.0/24:443", "[2606:2800::]/32:443" };
  egress_policy_t *p = POLICY_ALLOW(allow);
  egress_checker_t *c = mkchecker(p, NULL);
  const char *names[] = { "other.example.net", "example.org",
                          "a.b.example.org",   "api.example.com.evil.example",
                          "xapi.example.com",  "example.com",
                          "api.example.co",    "loop.example.com" };
  for (size_t i = 0; i < NELEM(names); i++) {
    egress_decision_t *d =
        expect(c, names[i], 443, EGRESS_OUTCOME_DENIED, EGRESS_REASON_NOT_IN_ALLOWLIST, NO_RULE, 0);
    CU_ASSERT(contains(egress_decision_message(d), names[i]));
    CU_ASSERT_EQUAL(egress_decision_address_count(d), 0);
    egress_decision_free(d);
  }
  /* Names outside the policy are never resolved. */
  CU_ASSERT_EQUAL(egress_checker_counter(c, EGRESS_COUNTER_DNS_QUERIES), 0);
  egress_decision_t *d =
      expect(c, "8.8.8.8", 443, EGRESS_OUTCOME_DENIED, EGRESS_REASON_NOT_IN_ALLOWLIST, NO_RULE, 0);
  CU_ASSERT(has_address(d, "8.8.8.8", EGRESS_VERDICT_DENY, EGRESS_REASON_NOT_IN_ALLOWLIST));
  CU_ASSERT(contains(egress_decision_message(d), "8.8.8.8"));
  egress_decision_free(d);
  expect_free(c, "2a00:1450::1", 443, EGRESS_OUTCOME_DENIED, EGRESS_REASON_NOT_IN_ALLOWLIST, NO_RULE, 0);
  expect_free(c, API_V4, 443, EGRESS_OUTCOME_ALLOWED, EGRESS_REASON_NONE, EGRESS_LIST_ALLOW, 2);
  egress_checker_free(c);
  egress_policy_unref(p);

  /* Host-name rules, even "*", never allow IP literals. */
  const char *names_only[] = { "*:*", "api.example.com", "**.example.com" };
  p = POLICY_ALLOW(names_only);
  c = mkchecker(p, NULL);
  const char *lits[] = { API_V4, API_V6, "[" API_V6 "]", "8.8.8.8", "::ffff:" API_V4 };
  for (size_t i = 0; i < NELEM(lits); i++)
    expect_free(c, lits[i], 443, EGRESS_OUTCOME_DENIED, EGRESS_REASON_NOT_IN_ALLOWLIST, NO_RULE, 0);
  expect_free(c, "api.example.com", 443, EGRESS_OUTCOME_ALLOWED, EGRESS_REASON_NONE, EGRESS_LIST_ALLOW, 0);
  egress_checker_free(c);
  egress_policy_unref(p);
}

static void test_port_not_allowed(void) {
  const char *allow[] = { "api.example.com", "svc.example.com:8000-8999", "93.184.216.0/24:443",
                          "https://ports.example.com:8443/v1" };
  egress_policy_t *p = POLICY_ALLOW(allow);
  egress_checker_t *c = mkchecker(p, NULL);
  const struct {
    const char *host;
    int32_t port;
    long rule;
  } cases[] = { { "api.example.com", 80, 0 },   { "api.example.com", 444, 0 },
                { "api.example.com", 1, 0 },    { "API.example.com.", 65535, 0 },
                { "svc.example.com", 7999, 1 }, { "svc.example.com", 9000, 1 },
                { "svc.example.com", 443, 1 },  { API_V4, 80, 2 },
                { "93.184.216.1", 8443, 2 },    { "ports.example.com", 443, 3 } };
  for (size_t i = 0; i < NELEM(cases); i++) {
    egress_decision_t *d = expect(c, cases[i].host, cases[i].port, EGRESS_OUTCOME_DENIED,
                                  EGRESS_REASON_PORT_NOT_ALLOWED, EGRESS_LIST_ALLOW, cases[i].rule);
    char portbuf[16];
    snprintf(portbuf, sizeof portbuf, "%ld", (long)cases[i].port);
    CU_ASSERT(contains(egress_decision_message(d), portbuf));
    egress_decision_free(d);
  }
  CU_ASSERT_EQUAL(egress_checker_counter(c, EGRESS_COUNTER_DNS_QUERIES), 0);
  expect_free(c, "svc.example.com", 8000, EGRESS_OUTCOME_ALLOWED, EGRESS_REASON_NONE, EGRESS_LIST_ALLOW, 1);
  expect_free(c, "svc.example.com", 8999, EGRESS_OUTCOME_ALLOWED, EGRESS_REASON_NONE, EGRESS_LIST_ALLOW, 1);
  expect_free(c, "ports.example.com", 8443, EGRESS_OUTCOME_ALLOWED, EGRESS_REASON_NONE, EGRESS_LIST_ALLOW, 3);
  egress_checker_free(c);
  egress_policy_unref(p);
}

/* Teredo: server IPv4 in bits 32-63, client IPv4 inverted in the last 32. */
static const char *const special_literals[] = {
  "127.0.0.1", "127.255.255.254", "10.0.0.1", "172.16.0.1", "192.168.1.1", "169.254.169.254", "::1",
  "fe80::1", "fd00::1", "fd00:ec2::254", "fec0::1", "[::ffff:10.0.0.1]", "::ffff:127.0.0.1", "0.0.0.0",
  "0.1.2.3", "255.255.255.255", "224.0.0.1", "239.255.255.250", "240.0.0.1", "192.0.2.1", "198.51.100.7",
  "203.0.113.7", "198.18.0.1", "100.64.0.1", "192.0.0.1", "2001:db8::1", "3fff::1", "2002:7f00:1::1",
  "2002:c0a8:101::1", "2001:0:4136:e378:8000:63bf:80ff:fffe", "64:ff9b::7f00:1", "64:ff9b::a00:1",
  "64:ff9b:1::1", "::", "::7f00:1", "::a00:1", "ff02::1", "100::1", "2001:10::1", "2001:2::1", "fc00::1",
  "4000::1", "::ffff:0:7f00:1",
  /* ORCHIDv2 and DETs: identifiers that are never routed, whatever the
     * registry's "globally reachable" column says */
  "2001:20::1", "2001:20::", "2001:2f:ffff:ffff:ffff:ffff:ffff:ffff", "2001:30::1",
  "2001:3f:ffff:ffff:ffff:ffff:ffff:ffff", "[2001:2a::1]"
};

static void test_special_purpose(void) {
  const char *allow[] = { "0.0.0.0/0", "::/0" };
  egress_policy_t *p = POLICY_ALLOW(allow);
  egress_checker_t *c = mkchecker(p, NULL);
  for (size_t i = 0; i < NELEM(special_literals); i++) {
    egress_decision_t *d = expect(c, special_literals[i], 443, EGRESS_OUTCOME_DENIED,
                                  EGRESS_REASON_SPECIAL_PURPOSE_ADDRESS, ANY_RULE, 0);
    CU_ASSERT_EQUAL(egress_decision_verdict(d), EGRESS_VERDICT_DENY);
    CU_ASSERT_EQUAL(egress_decision_address_count(d), 1);
    CU_ASSERT_EQUAL(egress_decision_address_verdict(d, 0), EGRESS_VERDICT_DENY);
    CU_ASSERT_EQUAL(egress_decision_address_reason(d, 0), EGRESS_REASON_SPECIAL_PURPOSE_ADDRESS);
    CU_ASSERT_EQUAL(egress_decision_address_ttl(d, 0), -1);
    CU_ASSERT_PTR_NOT_NULL(egress_decision_host(d));
    CU_ASSERT(contains(egress_decision_message(d), egress_decision_host(d)));
    CU_ASSERT(egress_decision_has_rule(d) == false || egress_decision_rule_list(d) == EGRESS_LIST_ALLOW);
    egress_decision_free(d);
    CU_ASSERT_EQUAL(egress_check(c, special_literals[i], 443), EGRESS_VERDICT_DENY);
  }
  /* Global addresses pass under the same policy: the special-purpose rule
   * is the only thing denying the cases above. */
  const char *global[] = { "8.8.8.8",   "1.1.1.1",         API_V4,
                           API_V6,      "2606:4700::1111", "::ffff:8.8.8.8",
                           "192.0.0.9", "192.0.0.10",      "2a00:1450:4001::1" };
  for (size_t i = 0; i < NELEM(global); i++) {
    egress_decision_t *d = expect(c, global[i], 443, EGRESS_OUTCOME_ALLOWED, EGRESS_REASON_NONE, ANY_RULE, 0);
    CU_ASSERT_EQUAL(egress_decision_rule_list(d), EGRESS_LIST_ALLOW);
    CU_ASSERT_EQUAL(egress_decision_address_count(d), 1);
    CU_ASSERT_EQUAL(egress_decision_address_verdict(d, 0), EGRESS_VERDICT_ALLOW);
    CU_ASSERT_PTR_NULL(egress_decision_curl_resolve(d)); /* literals: nothing to pin */
    size_t len = 0;
    const struct sockaddr *sa = egress_decision_address_sockaddr(d, 0, &len);
    CU_ASSERT_PTR_NOT_NULL_FATAL(sa);
    if (sa->sa_family == AF_INET) {
      CU_ASSERT_EQUAL(len, sizeof(struct sockaddr_in));
      CU_ASSERT_EQUAL(ntohs(((const struct sockaddr_in *)(const void *)sa)->sin_port), 443);
    } else {
      CU_ASSERT_EQUAL(sa->sa_family, AF_INET6);
      CU_ASSERT_EQUAL(len, sizeof(struct sockaddr_in6));
      CU_ASSERT_EQUAL(ntohs(((const struct sockaddr_in6 *)(const void *)sa)->sin6_port), 443);
    }
    egress_decision_free(d);
  }
  egress_checker_free(c);
  egress_policy_unref(p);

  /* A special range opens only by naming it, on the named ports; embedded
   * IPv4 of 6to4, NAT64 and Teredo is vetted even when the IPv6 range is
   * opened. */
  const char *open[] = { "10.1.0.0/16:5432", "0.0.0.0/0",       "::/0", "2002::/16", "64:ff9b::/96",
                         "2001::/32",        "2001:db8:64::/96" };
  p = POLICY_ALLOW(open);
  ck_cfg_t cfg = { .pref64 = "2001:db8:64::/96" };
  c = mkchecker(p, &cfg);
  expect_free(c, "10.1.2.3", 5432, EGRESS_OUTCOME_ALLOWED, EGRESS_REASON_NONE, EGRESS_LIST_ALLOW, 0);
  expect_free(c, "10.1.2.3", 443, EGRESS_OUTCOME_DENIED, EGRESS_REASON_SPECIAL_PURPOSE_ADDRESS, ANY_RULE, 0);
  expect_free(c, "10.2.0.1", 5432, EGRESS_OUTCOME_DENIED, EGRESS_REASON_SPECIAL_PURPOSE_ADDRESS, ANY_RULE, 0);
  expect_free(c, "::ffff:10.1.0.1", 5432, EGRESS_OUTCOME_ALLOWED, EGRESS_REASON_NONE, EGRESS_LIST_ALLOW, 0);
  const char *embedded_bad[] = { "2002:7f00:1::1",
                                 "2002:a00:1::1",
                                 "2002:c000:201::1",
                                 "64:ff9b::7f00:1",
                                 "64:ff9b::a9fe:a9fe",
                                 "64:ff9b::a00:1",
                                 "2001:0:4136:e378:8000:63bf:80ff:fffe", /* client 127.0.0.1 */
                                 "2001:0:7f00:1:8000:63bf:f7f7:f7f7",    /* server 127.0.0.1 */
                                 "2001:db8:64::7f00:1",
                                 "2001:db8:64::a00:1" };
  for (size_t i = 0; i < NELEM(embedded_bad); i++) {
    egress_decision_t *d = expect(c, embedded_bad[i], 443, EGRESS_OUTCOME_DENIED,
                                  EGRESS_REASON_SPECIAL_PURPOSE_ADDRESS, ANY_RULE, 0);
    CU_ASSERT(contains(egress_decision_message(d), "embedded") ||
              contains(egress_decision_message(d), "IPv4"));
    egress_decision_free(d);
  }
  const char *embedded_ok[] = { "2002:808:808::1", "64:ff9b::808:808",
                                "2001:0:4136:e378:8000:63bf:f7f7:f7f7" };
  for (size_t i = 0; i < NELEM(embedded_ok); i++)
    expect_free(c, embedded_ok[i], 443, EGRESS_OUTCOME_ALLOWED, EGRESS_REASON_NONE, ANY_RULE, 0);
  egress_checker_free(c);
  egress_policy_unref(p);

  /* Non-routable identifier blocks (ORCHIDv2, DETs) open like private
   * space: only by naming them. */
  const char *ids[] = { "::/0", "[2001:20::]/28:443", "[2001:30::7]:8443" };
  p = POLICY_ALLOW(ids);
  c = mkchecker(p, NULL);
  expect_free(c, "2001:20::1", 443, EGRESS_OUTCOME_ALLOWED, EGRESS_REASON_NONE, EGRESS_LIST_ALLOW, 1);
  expect_free(c, "2001:2f::9", 443, EGRESS_OUTCOME_ALLOWED, EGRESS_REASON_NONE, EGRESS_LIST_ALLOW, 1);
  expect_free(c, "2001:30::7", 8443, EGRESS_OUTCOME_ALLOWED, EGRESS_REASON_NONE, EGRESS_LIST_ALLOW, 2);
  expect_free(c, "2001:30::8", 8443, EGRESS_OUTCOME_DENIED, EGRESS_REASON_SPECIAL_PURPOSE_ADDRESS, NO_RULE,
              0);
  expect_free(c, "2001:31::1", 443, EGRESS_OUTCOME_DENIED, EGRESS_REASON_SPECIAL_PURPOSE_ADDRESS, NO_RULE, 0);
  egress_checker_free(c);
  egress_policy_unref(p);
}

/* Which reason a special-purpose literal gets when nothing opens it on the
 * port asked.  port_not_allowed means "allowed, on other ports": so only
 * when no CIDR rule holds this port for it and a rule inside its special
 * range opens it on another port (where it would pass).  Rules wider than
 * the range never open it, on any port, so they never turn the question
 * into one of ports; and where a rule does hold this port, what refuses
 * the address is its being special, not the port. */
static void test_special_literal_reason(void) {
  static const char *const never_opened[] = { "127.0.0.1",
                                              "10.1.2.3",
                                              "172.16.0.1",
                                              "192.168.1.1",
                                              "169.254.169.254",
                                              "100.64.0.1",
                                              "0.0.0.0",
                                              "255.255.255.255",
                                              "224.0.0.1",
                                              "198.18.0.1",
                                              "192.0.2.1",
                                              "::ffff:127.0.0.1",
                                              "::1",
                                              "fe80::1",
                                              "fd00:ec2::254",
                                              "2001:db8::1",
                                              "2001:20::1",
                                              "64:ff9b::7f00:1",
                                              "2002:7f00:1::1",
                                              "::" };
  static const int32_t ports[] = { 443, 8443, 80, 1, 65535 };
  /* Wide rules on one port, on a range, and on every port. */
  static const char *const wide_one[] = { "0.0.0.0/0:8443", "[::]/0:8443" };
  static const char *const wide_range[] = { "0.0.0.0/0:8000-9000", "[::]/0:8000-9000" };
  static const char *const wide_any[] = { "0.0.0.0/0", "::/0" };
  static const char *const narrow_other[] = { "203.0.113.0/24:8443", "[2606:4700::]/32:8443" };
  const char *const *policies[] = { wide_one, wide_range, wide_any, narrow_other };
  for (size_t k = 0; k < NELEM(policies); k++) {
    egress_policy_t *p = mkpolicy(policies[k], 2, NULL, 0);
    egress_checker_t *c = mkchecker(p, NULL);
    for (size_t i = 0; i < NELEM(never_opened); i++)
      for (size_t j = 0; j < NELEM(ports); j++) {
        egress_decision_t *d = expect(c, never_opened[i], ports[j], EGRESS_OUTCOME_DENIED,
                                      EGRESS_REASON_SPECIAL_PURPOSE_ADDRESS, NO_RULE, 0);
        CU_ASSERT_EQUAL(egress_decision_address_reason(d, 0), EGRESS_REASON_SPECIAL_PURPOSE_ADDRESS);
        egress_decision_free(d);
      }
    egress_checker_free(c);
    egress_policy_unref(p);
  }

  /* Opened on some port by a rule inside its range. */
  const char *open[] = { "0.0.0.0/0:8443",   "10.0.0.0/8:5432",          "[fd00::]/8:5432",    "[::]/0:8443",
                         "[2002::]/16:8443", "[2001:20::]/28:7000-7001", "[64:ff9b::]/96:5432" };
  egress_policy_t *p = POLICY_ALLOW(open);
  egress_checker_t *c = mkchecker(p, NULL);
  const struct {
    const char *host;
    int32_t port;
    egress_outcome_t oc;
    egress_reason_t r;
    int list;
    long rule;
  } cases[] = {
    { "10.1.2.3", 5432, EGRESS_OUTCOME_ALLOWED, EGRESS_REASON_NONE, EGRESS_LIST_ALLOW, 1 },
    { "10.1.2.3", 443, EGRESS_OUTCOME_DENIED, EGRESS_REASON_PORT_NOT_ALLOWED, EGRESS_LIST_ALLOW, 1 },
    { "10.1.2.3", 1, EGRESS_OUTCOME_DENIED, EGRESS_REASON_PORT_NOT_ALLOWED, EGRESS_LIST_ALLOW, 1 },
    { "::ffff:10.9.9.9", 80, EGRESS_OUTCOME_DENIED, EGRESS_REASON_PORT_NOT_ALLOWED, EGRESS_LIST_ALLOW, 1 },
    /* 0.0.0.0/0:8443 holds 8443 but cannot open private space there. */
    { "10.1.2.3", 8443, EGRESS_OUTCOME_DENIED, EGRESS_REASON_SPECIAL_PURPOSE_ADDRESS, NO_RULE, 0 },
    { "172.16.0.1", 5432, EGRESS_OUTCOME_DENIED, EGRESS_REASON_SPECIAL_PURPOSE_ADDRESS, NO_RULE, 0 },
    { "172.16.0.1", 443, EGRESS_OUTCOME_DENIED, EGRESS_REASON_SPECIAL_PURPOSE_ADDRESS, NO_RULE, 0 },
    { "127.0.0.1", 443, EGRESS_OUTCOME_DENIED, EGRESS_REASON_SPECIAL_PURPOSE_ADDRESS, NO_RULE, 0 },
    { "fd00::1", 443, EGRESS_OUTCOME_DENIED, EGRESS_REASON_PORT_NOT_ALLOWED, EGRESS_LIST_ALLOW, 2 },
    { "fd00::1", 5432, EGRESS_OUTCOME_ALLOWED, EGRESS_REASON_NONE, EGRESS_LIST_ALLOW, 2 },
    { "fd00::1", 8443, EGRESS_OUTCOME_DENIED, EGRESS_REASON_SPECIAL_PURPOSE_ADDRESS, NO_RULE, 0 },
    /* fc00::/8 is ULA too, but fd00::/8 does not contain it. */
    { "fc00::1", 443, EGRESS_OUTCOME_DENIED, EGRESS_REASON_SPECIAL_PURPOSE_ADDRESS, NO_RULE, 0 },
    { "2001:20::1", 443, EGRESS_OUTCOME_DENIED, EGRESS_REASON_PORT_NOT_ALLOWED, EGRESS_LIST_ALLOW, 5 },
    { "2001:20::1", 7001, EGRESS_OUTCOME_ALLOWED, EGRESS_REASON_NONE, EGRESS_LIST_ALLOW, 5 },
    /* 6to4 opened on 8443 (where [::]/0:8443 holds the port too, which is
       * no obstacle: the /16 opens it): a public embedded IPv4 is allowed
       * there and port_not_allowed elsewhere; an embedded loopback is
       * allowed on no port. */
    { "2002:808:808::1", 8443, EGRESS_OUTCOME_ALLOWED, EGRESS_REASON_NONE, EGRESS_LIST_ALLOW, 4 },
    { "2002:808:808::1", 443, EGRESS_OUTCOME_DENIED, EGRESS_REASON_PORT_NOT_ALLOWED, EGRESS_LIST_ALLOW, 4 },
    { "2002:7f00:1::1", 443, EGRESS_OUTCOME_DENIED, EGRESS_REASON_SPECIAL_PURPOSE_ADDRESS, NO_RULE, 0 },
    { "2002:7f00:1::1", 8443, EGRESS_OUTCOME_DENIED, EGRESS_REASON_SPECIAL_PURPOSE_ADDRESS, NO_RULE, 0 },
    /* NAT64 (global) carrying 10.1.2.3, which 10.0.0.0/8 opens on 5432
       * only, where the /96 rule holds the IPv6 address. */
    { "64:ff9b::a01:203", 5432, EGRESS_OUTCOME_ALLOWED, EGRESS_REASON_NONE, EGRESS_LIST_ALLOW, 6 },
    { "64:ff9b::a01:203", 443, EGRESS_OUTCOME_DENIED, EGRESS_REASON_PORT_NOT_ALLOWED, EGRESS_LIST_ALLOW, 6 },
    { "64:ff9b::ac10:1", 443, EGRESS_OUTCOME_DENIED, EGRESS_REASON_SPECIAL_PURPOSE_ADDRESS, NO_RULE, 0 },
  };
  for (size_t i = 0; i < NELEM(cases); i++) {
    egress_decision_t *d =
        expect(c, cases[i].host, cases[i].port, cases[i].oc, cases[i].r, cases[i].list, cases[i].rule);
    CU_ASSERT_EQUAL(egress_decision_address_reason(d, 0), cases[i].r);
    if (cases[i].r == EGRESS_REASON_PORT_NOT_ALLOWED) {
      char portbuf[16];
      snprintf(portbuf, sizeof portbuf, "%ld", (long)cases[i].port);
      CU_ASSERT(contains(egress_decision_message(d), portbuf));
    }
    egress_decision_free(d);
  }
  egress_checker_free(c);
  egress_policy_unref(p);
}

static void test_no_such_host(void) {
  const char *allow[] = { "*.example.com", "missing.example.net:*" };
  egress_policy_t *p = POLICY_ALLOW(allow);
  egress_checker_t *c = mkchecker(p, NULL);
  const char *names[] = { "missing.example.com", "nope.example.com", "missing.example.net" };
  for (size_t i = 0; i < NELEM(names); i++) {
    egress_decision_t *d = expect(c, names[i], 443, EGRESS_OUTCOME_DENIED, EGRESS_REASON_NO_SUCH_HOST,
                                  EGRESS_LIST_ALLOW, i < 2 ? 0 : 1);
    CU_ASSERT(contains(egress_decision_message(d), names[i]));
    CU_ASSERT_EQUAL(egress_decision_address_count(d), 0);
    CU_ASSERT_PTR_NULL(egress_decision_curl_resolve(d));
    CU_ASSERT_STRING_EQUAL(egress_decision_host(d), names[i]);
    egress_decision_free(d);
    CU_ASSERT_EQUAL(egress_check(c, names[i], 443), EGRESS_VERDICT_DENY);
  }
  CU_ASSERT(egress_checker_counter(c, EGRESS_COUNTER_DNS_QUERIES) >= 1);
  CU_ASSERT_EQUAL(egress_checker_counter(c, EGRESS_COUNTER_DNS_FAILURES), 0);
  egress_checker_free(c);
  egress_policy_unref(p);
}

static void test_resolved_forbidden(void) {
  const char *allow[] = { "*.example.com", "0.0.0.0/0", "::/0" };
  egress_policy_t *p = POLICY_ALLOW(allow);
  egress_checker_t *c = mkchecker(p, NULL);
  const struct {
    const char *name, *addr;
  } cases[] = { { "loop.example.com", "127.0.0.1" },
                { "private.example.com", "10.0.0.1" },
                { "loop6.example.com", "::1" },
                { "mixed.example.com", "10.0.0.2" } };
  for (size_t i = 0; i < NELEM(cases); i++) {
    egress_decision_t *d = expect(c, cases[i].name, 443, EGRESS_OUTCOME_DENIED,
                                  EGRESS_REASON_RESOLVED_ADDRESS_FORBIDDEN, EGRESS_LIST_ALLOW, 0);
    CU_ASSERT(has_address(d, cases[i].addr, EGRESS_VERDICT_DENY, EGRESS_REASON_SPECIAL_PURPOSE_ADDRESS));
    CU_ASSERT(contains(egress_decision_message(d), cases[i].addr));
    CU_ASSERT(contains(egress_decision_message(d), cases[i].name));
    CU_ASSERT_PTR_NULL(egress_decision_curl_resolve(d));
    for (size_t k = 0; k < egress_decision_address_count(d); k++)
      CU_ASSERT_EQUAL(egress_decision_address_verdict(d, k), EGRESS_VERDICT_DENY);
    egress_decision_free(d);
    CU_ASSERT_EQUAL(egress_check(c, cases[i].name, 443), EGRESS_VERDICT_DENY);
  }
  /* Deny-if-any lists the good address too, denied, with no reason of its own. */
  egress_decision_t *d = check(c, "mixed.example.com", 443);
  CU_ASSERT_EQUAL(egress_decision_address_count(d), 2);
  CU_ASSERT(has_address(d, API_V4, EGRESS_VERDICT_DENY, EGRESS_REASON_NONE));
  egress_decision_free(d);
  egress_checker_free(c);

  /* Filter mode drops the forbidden address and pins the rest. */
  ck_cfg_t cfg = { .mixed = EGRESS_MIXED_FILTER };
  c = mkchecker(p, &cfg);
  d = expect(c, "mixed.example.com", 443, EGRESS_OUTCOME_ALLOWED, EGRESS_REASON_NONE, EGRESS_LIST_ALLOW, 0);
  CU_ASSERT(has_address(d, API_V4, EGRESS_VERDICT_ALLOW, EGRESS_REASON_NONE));
  CU_ASSERT(has_address(d, "10.0.0.2", EGRESS_VERDICT_DENY, EGRESS_REASON_SPECIAL_PURPOSE_ADDRESS));
  CU_ASSERT_PTR_NOT_NULL(egress_decision_curl_resolve(d));
  if (egress_decision_curl_resolve(d))
    CU_ASSERT_STRING_EQUAL(egress_decision_curl_resolve(d), "mixed.example.com:443:" API_V4);
  egress_decision_free(d);
  /* ... but nothing left is still a deny. */
  expect_free(c, "loop.example.com", 443, EGRESS_OUTCOME_DENIED, EGRESS_REASON_RESOLVED_ADDRESS_FORBIDDEN,
              EGRESS_LIST_ALLOW, 0);
  egress_checker_free(c);
  egress_policy_unref(p);

  /* A name rule does not open special space; a CIDR rule inside it does. */
  const char *open[] = { "*.example.com", "10.0.0.0/24:443" };
  p = POLICY_ALLOW(open);
  c = mkchecker(p, NULL);
  expect_free(c, "private.example.com", 443, EGRESS_OUTCOME_ALLOWED, EGRESS_REASON_NONE, EGRESS_LIST_ALLOW,
              0);
  expect_free(c, "loop.example.com", 443, EGRESS_OUTCOME_DENIED, EGRESS_REASON_RESOLVED_ADDRESS_FORBIDDEN,
              EGRESS_LIST_ALLOW, 0);
  egress_checker_free(c);
  egress_policy_unref(p);
}

static void test_allowed(void) {
  const char *allow[] = { "api.example.com", "https://svc.example.com:8443/v1",
                          "https://svc.example.com:8443/caf%C3%A9" };
  egress_policy_t *p = POLICY_ALLOW(allow);
  egress_checker_t *c = mkchecker(p, NULL);
  egress_decision_t *d =
      expect(c, "API.Example.Com.", 443, EGRESS_OUTCOME_ALLOWED, EGRESS_REASON_NONE, EGRESS_LIST_ALLOW, 0);
  CU_ASSERT_EQUAL(egress_decision_verdict(d), EGRESS_VERDICT_ALLOW);
  CU_ASSERT_STRING_EQUAL(egress_decision_host(d), "api.example.com");
  CU_ASSERT_STRING_EQUAL(egress_decision_destination_host(d), "API.Example.Com.");
  CU_ASSERT_STRING_EQUAL(egress_decision_rule_text(d), "api.example.com");
  CU_ASSERT_EQUAL(egress_decision_port(d), 443);
  CU_ASSERT_STRING_EQUAL(egress_decision_policy_digest(d), egress_policy_digest(p));
  CU_ASSERT_EQUAL(egress_decision_address_count(d), 2);
  CU_ASSERT(has_address(d, API_V4, EGRESS_VERDICT_ALLOW, EGRESS_REASON_NONE));
  CU_ASSERT(has_address(d, API_V6, EGRESS_VERDICT_ALLOW, EGRESS_REASON_NONE));
  const char *cr = egress_decision_curl_resolve(d);
  CU_ASSERT_PTR_NOT_NULL_FATAL(cr);
  CU_ASSERT(!strcmp(cr, "api.example.com:443:" API_V4 ",[" API_V6 "]") ||
            !strcmp(cr, "api.example.com:443:[" API_V6 "]," API_V4));
  for (size_t i = 0; i < egress_decision_address_count(d); i++) {
    size_t len = 0;
    const struct sockaddr *sa = egress_decision_address_sockaddr(d, i, &len);
    CU_ASSERT_PTR_NOT_NULL_FATAL(sa);
    char text[INET6_ADDRSTRLEN];
    if (sa->sa_family == AF_INET) {
      const struct sockaddr_in *sin = (const void *)sa;
      CU_ASSERT_EQUAL(len, sizeof *sin);
      CU_ASSERT_EQUAL(ntohs(sin->sin_port), 443);
      inet_ntop(AF_INET, &sin->sin_addr, text, sizeof text);
    } else {
      const struct sockaddr_in6 *sin6 = (const void *)sa;
      CU_ASSERT_EQUAL_FATAL(sa->sa_family, AF_INET6);
      CU_ASSERT_EQUAL(len, sizeof *sin6);
      CU_ASSERT_EQUAL(ntohs(sin6->sin6_port), 443);
      inet_ntop(AF_INET6, &sin6->sin6_addr, text, sizeof text);
    }
    CU_ASSERT_STRING_EQUAL(text, egress_decision_address(d, i));
    CU_ASSERT(egress_decision_address_ttl(d, i) >= -1);
  }
  CU_ASSERT(egress_decision_latency_ms(d) >= 0.0);
  CU_ASSERT(egress_decision_dns_ms(d) >= 0.0);
  egress_decision_free(d);
  CU_ASSERT_EQUAL(egress_check(c, "api.example.com", 443), EGRESS_VERDICT_ALLOW);

  /* URL entry with a path: host:port checks ignore the path; URL checks
   * apply it on segment boundaries. */
  expect_free(c, "svc.example.com", 8443, EGRESS_OUTCOME_ALLOWED, EGRESS_REASON_NONE, EGRESS_LIST_ALLOW, 1);
  const struct {
    const char *url;
    egress_reason_t reason;
  } urls[] = { { "https://svc.example.com:8443/v1", EGRESS_REASON_NONE },
               { "https://svc.example.com:8443/v1/items?q=1", EGRESS_REASON_NONE },
               { "https://svc.example.com:8443/v10", EGRESS_REASON_NOT_IN_ALLOWLIST },
               { "https://svc.example.com:8443/v1/../admin", EGRESS_REASON_NOT_IN_ALLOWLIST },
               { "https://svc.example.com:8443/v1/%2e%2e/admin", EGRESS_REASON_NOT_IN_ALLOWLIST },
               /* ".." drops exactly one segment (RFC 3986 5.2.4): */
               { "https://svc.example.com:8443/v1/x/../items", EGRESS_REASON_NONE },
               { "https://svc.example.com:8443/v1/x/y/../../items", EGRESS_REASON_NONE },
               { "https://svc.example.com:8443/v1/x/../../items", EGRESS_REASON_NOT_IN_ALLOWLIST },
               { "https://svc.example.com:8443/v1/x/..", EGRESS_REASON_NONE },
               { "https://svc.example.com:8443/v1/./x/%2E/", EGRESS_REASON_NONE },
               { "https://svc.example.com:8443/admin/../v1/ok", EGRESS_REASON_NONE },
               { "https://svc.example.com:8443/../../v1", EGRESS_REASON_NONE },
               { "https://svc.example.com:8443/v1/..", EGRESS_REASON_NOT_IN_ALLOWLIST },
               { "https://svc.example.com:8443/v1/a..b/x", EGRESS_REASON_NONE },
               /* Compared as RFC 3986 6.2.2 normalizes: unreserved decoded,
                * hex digits in upper case (as entries are written). */
               { "https://svc.example.com:8443/%76%31/x", EGRESS_REASON_NONE },
               { "https://svc.example.com:8443/v1/%7Euser", EGRESS_REASON_NONE },
               { "https://svc.example.com:8443/caf%c3%a9/x", EGRESS_REASON_NONE },
               { "https://svc.example.com:8443/caf%C3%A9x", EGRESS_REASON_NOT_IN_ALLOWLIST },
               { "https://svc.example.com:8443/%76%31%2e%2e/x", EGRESS_REASON_NOT_IN_ALLOWLIST },
               /* What a server decodes into a dot segment, a NUL or bytes
                * that are not UTF-8 is refused: */
               { "https://svc.example.com:8443/v1/.../x", EGRESS_REASON_INVALID_HOST },
               { "https://svc.example.com:8443/v1/..%20/admin", EGRESS_REASON_INVALID_HOST },
               { "https://svc.example.com:8443/v1/..%3B/admin", EGRESS_REASON_INVALID_HOST },
               { "https://svc.example.com:8443/v1/%C0%AE%C0%AE/admin", EGRESS_REASON_INVALID_HOST },
               { "https://svc.example.com:8443/v1/%EF%BC%8E%EF%BC%8E/admin", EGRESS_REASON_INVALID_HOST },
               { "https://svc.example.com:8443/v1/\xe2\x80\xa5/admin", EGRESS_REASON_INVALID_HOST },
               { "https://svc.example.com:8443/v1/x%00.json", EGRESS_REASON_INVALID_HOST },
               { "https://svc.example.com:8443/v1/%e9", EGRESS_REASON_INVALID_HOST },
               /* Paths servers read differently are refused outright: */
               { "https://svc.example.com:8443/v1//items", EGRESS_REASON_INVALID_HOST },
               { "https://svc.example.com:8443/v1/x/../items//../", EGRESS_REASON_INVALID_HOST },
               { "https://svc.example.com:8443/v1/items/..%2f..%2fadmin", EGRESS_REASON_INVALID_HOST },
               { "https://svc.example.com:8443/v1/items/..%5C..%5Cadmin", EGRESS_REASON_INVALID_HOST },
               { "https://svc.example.com:8443/v1/items/..;/..;/admin", EGRESS_REASON_INVALID_HOST },
               { "https://svc.example.com:8443/v1/items/%2e%2E;x/admin", EGRESS_REASON_INVALID_HOST },
               { "https://svc.example.com:8443/v1/items;v=2", EGRESS_REASON_NONE },
               { "https://svc.example.com/v1", EGRESS_REASON_PORT_NOT_ALLOWED },
               { "https://api.example.com/anything", EGRESS_REASON_NONE },
               { "http://api.example.com/", EGRESS_REASON_PORT_NOT_ALLOWED },
               { "https://api.example.com@evil.example/", EGRESS_REASON_INVALID_HOST },
               { "https://user:pw@api.example.com/", EGRESS_REASON_INVALID_HOST },
               { "ftp://api.example.com/", EGRESS_REASON_INVALID_HOST },
               { "https://api.example.com:0/", EGRESS_REASON_INVALID_PORT },
               { "https://api.example.com:99999/", EGRESS_REASON_INVALID_PORT },
               { "https://0x7f.1/", EGRESS_REASON_INVALID_HOST },
               { "https://api.example.com\\@evil.example/", EGRESS_REASON_INVALID_HOST },
               { "https:///", EGRESS_REASON_INVALID_HOST } };
  for (size_t i = 0; i < NELEM(urls); i++) {
    egress_decision_t *u = NULL;
    CU_ASSERT_EQUAL(egress_check_url(c, urls[i].url, NULL, &u), EGRESS_OK);
    CU_ASSERT_PTR_NOT_NULL_FATAL(u);
    invariants(c, u);
    if (egress_decision_reason(u) != urls[i].reason)
      printf("\n  %s: expected %s, got %s (%s)\n", urls[i].url, egress_reason_name(urls[i].reason),
             egress_reason_name(egress_decision_reason(u)), egress_decision_message(u));
    CU_ASSERT_EQUAL(egress_decision_reason(u), urls[i].reason);
    CU_ASSERT_EQUAL(egress_decision_verdict(u) == EGRESS_VERDICT_ALLOW, urls[i].reason == EGRESS_REASON_NONE);
    egress_decision_free(u);
  }
  egress_checker_free(c);
  egress_policy_unref(p);
}

/* A URL entry's scheme is part of what it allows in URL checks: an https
 * entry never allows plain http to the same port (plain text to the TLS
 * port).  Entries without a scheme (names, wildcards, CIDRs) allow any
 * scheme; host:port checks have no scheme and are unchanged. */
static void url_case(egress_checker_t *c, const char *url, egress_reason_t reason, long rule) {
  egress_decision_t *u = NULL;
  CU_ASSERT_EQUAL(egress_check_url(c, url, NULL, &u), EGRESS_OK);
  CU_ASSERT_PTR_NOT_NULL_FATAL(u);
  invariants(c, u);
  bool ok = egress_decision_reason(u) == reason &&
            (egress_decision_verdict(u) == EGRESS_VERDICT_ALLOW) == (reason == EGRESS_REASON_NONE);
  if (rule >= 0)
    ok = ok && egress_decision_has_rule(u) && egress_decision_rule_list(u) == EGRESS_LIST_ALLOW &&
         (long)egress_decision_rule_index(u) == rule;
  if (!ok)
    printf("\n  %s: expected %s rule %ld, got %s rule %ld (%s)\n", url, egress_reason_name(reason), rule,
           egress_reason_name(egress_decision_reason(u)),
           egress_decision_has_rule(u) ? (long)egress_decision_rule_index(u) : -1L,
           egress_decision_message(u));
  CU_ASSERT(ok);
  egress_decision_free(u);
}

static void test_url_scheme(void) {
  const char *allow[] = { "https://api.example.com/v1",
                          "http://ports.example.com:8443",
                          "svc.example.com:*",
                          "https://" API_V4 ":8443",
                          "8.8.8.0/24:9000",
                          "*.example.com:7000" };
  egress_policy_t *p = POLICY_ALLOW(allow);
  egress_checker_t *c = mkchecker(p, NULL);
  url_case(c, "https://api.example.com/v1", EGRESS_REASON_NONE, 0);
  url_case(c, "https://api.example.com:443/v1/x", EGRESS_REASON_NONE, 0);
  url_case(c, "http://api.example.com:443/v1", EGRESS_REASON_NOT_IN_ALLOWLIST, -1);
  url_case(c, "HTTP://api.example.com:443/v1/x", EGRESS_REASON_NOT_IN_ALLOWLIST, -1);
  url_case(c, "http://api.example.com/v1", EGRESS_REASON_PORT_NOT_ALLOWED, 0);
  url_case(c, "http://ports.example.com:8443/", EGRESS_REASON_NONE, 1);
  url_case(c, "http://ports.example.com:8443/any/path", EGRESS_REASON_NONE, 1);
  url_case(c, "https://ports.example.com:8443/", EGRESS_REASON_NOT_IN_ALLOWLIST, -1);
  url_case(c, "http://svc.example.com:443/", EGRESS_REASON_NONE, 2);
  url_case(c, "https://svc.example.com:80/", EGRESS_REASON_NONE, 2);
  url_case(c, "https://" API_V4 ":8443/", EGRESS_REASON_NONE, 3);
  url_case(c, "http://" API_V4 ":8443/", EGRESS_REASON_NOT_IN_ALLOWLIST, -1);
  url_case(c, "http://8.8.8.8:9000/", EGRESS_REASON_NONE, 4);
  url_case(c, "https://8.8.8.8:9000/", EGRESS_REASON_NONE, 4);
  url_case(c, "http://svc.example.com:7000/", EGRESS_REASON_NONE, 2);
  url_case(c, "http://api.example.com:7000/", EGRESS_REASON_NONE, 5);
  /* Wrong scheme is decided without a DNS query. */
  CU_ASSERT_EQUAL(egress_check(c, "api.example.com", 443), EGRESS_VERDICT_ALLOW);
  CU_ASSERT_EQUAL(egress_check(c, "ports.example.com", 8443), EGRESS_VERDICT_ALLOW);
  CU_ASSERT_EQUAL(egress_check(c, API_V4, 8443), EGRESS_VERDICT_ALLOW);
  egress_checker_free(c);
  egress_policy_unref(p);

  /* The entry for the URL's scheme is found even behind one for another
   * scheme, and scheme and path must both fit the same entry. */
  const char *both[] = { "https://api.example.com:8080/v1", "http://api.example.com:8080/public",
                         "https://api.example.com/v1", "http://api.example.com:443/public" };
  p = POLICY_ALLOW(both);
  c = mkchecker(p, NULL);
  url_case(c, "https://api.example.com:8080/v1/a", EGRESS_REASON_NONE, 0);
  url_case(c, "http://api.example.com:8080/public/a", EGRESS_REASON_NONE, 1);
  url_case(c, "http://api.example.com:8080/v1/a", EGRESS_REASON_NOT_IN_ALLOWLIST, -1);
  url_case(c, "https://api.example.com:8080/public", EGRESS_REASON_NOT_IN_ALLOWLIST, -1);
  url_case(c, "http://api.example.com:443/public", EGRESS_REASON_NONE, 3);
  url_case(c, "http://api.example.com:443/v1", EGRESS_REASON_NOT_IN_ALLOWLIST, -1);
  url_case(c, "https://api.example.com/public", EGRESS_REASON_NOT_IN_ALLOWLIST, -1);
  egress_checker_free(c);
  egress_policy_unref(p);

  /* A private address named by a URL entry: neither another scheme nor
   * another path falls through to a rule too wide to open private space. */
  const char *priv[] = { "https://10.0.0.5:8443/v1", "0.0.0.0/0:8443" };
  p = POLICY_ALLOW(priv);
  c = mkchecker(p, NULL);
  url_case(c, "https://10.0.0.5:8443/v1/x", EGRESS_REASON_NONE, 0);
  url_case(c, "http://10.0.0.5:8443/v1/x", EGRESS_REASON_NOT_IN_ALLOWLIST, -1);
  url_case(c, "https://10.0.0.5:8443/admin", EGRESS_REASON_NOT_IN_ALLOWLIST, -1);
  url_case(c, "http://8.8.8.8:8443/anything", EGRESS_REASON_NONE, 1);
  egress_checker_free(c);
  egress_policy_unref(p);

  /* Deny-list URL entries deny whatever the scheme: the deny list errs on
   * the side of denying. */
  const char *allow2[] = { "*.example.com:*" };
  const char *deny2[] = { "http://ports.example.com" };
  p = POLICY(allow2, deny2);
  c = mkchecker(p, NULL);
  egress_decision_t *u = NULL;
  CU_ASSERT_EQUAL(egress_check_url(c, "https://ports.example.com/", NULL, &u), EGRESS_OK);
  CU_ASSERT_EQUAL(egress_decision_reason(u), EGRESS_REASON_EXPLICIT_DENY);
  egress_decision_free(u);
  egress_checker_free(c);
  egress_policy_unref(p);
}

/* A '%' in a URL path not followed by two hex digits is no percent-encoding
 * at all: servers disagree on it (IIS reads "%u002e" as '.', others keep
 * it), so the URL is refused rather than compared as a literal path. */
static void test_url_bad_percent(void) {
  const char *allow[] = { "https://api.example.com/v1", "svc.example.com:*" };
  egress_policy_t *p = POLICY_ALLOW(allow);
  egress_checker_t *c = mkchecker(p, NULL);
  static const char *const bad[] = { "https://api.example.com/v1/%u002e%u002e/admin",
                                     "https://api.example.com/v1/%U002E%U002E/",
                                     "https://api.example.com/v1/%zz",
                                     "https://api.example.com/v1/%4",
                                     "https://api.example.com/v1/x%",
                                     "https://api.example.com/v1/%",
                                     "https://api.example.com/v1/%2",
                                     "https://api.example.com/v1/%2/x",
                                     "https://api.example.com/v1/%%41",
                                     "https://api.example.com/v1/%g1",
                                     "https://api.example.com/v1/a%4?q=1",
                                     "https://api.example.com/v1/a%#f",
                                     "https://api.example.com/%zz/v1",
                                     "https://svc.example.com:8443/%zz",
                                     "http://svc.example.com/a/%u2215/b",
                                     "https://8.8.8.8/x%x1" };
  for (size_t i = 0; i < NELEM(bad); i++) {
    egress_decision_t *u = NULL;
    CU_ASSERT_EQUAL(egress_check_url(c, bad[i], NULL, &u), EGRESS_OK);
    CU_ASSERT_PTR_NOT_NULL_FATAL(u);
    invariants(c, u);
    if (egress_decision_reason(u) != EGRESS_REASON_INVALID_HOST)
      printf("\n  %s: expected invalid_host, got %s (%s)\n", bad[i],
             egress_reason_name(egress_decision_reason(u)), egress_decision_message(u));
    CU_ASSERT_EQUAL(egress_decision_reason(u), EGRESS_REASON_INVALID_HOST);
    CU_ASSERT_EQUAL(egress_decision_verdict(u), EGRESS_VERDICT_DENY);
    CU_ASSERT(contains(egress_decision_message(u), "percent"));
    egress_decision_free(u);
  }
  CU_ASSERT_EQUAL(egress_checker_counter(c, EGRESS_COUNTER_DNS_QUERIES), 0);
  /* Well-formed escapes, and anything after '?' or '#', are not judged. */
  url_case(c, "https://api.example.com/v1/%41%7e", EGRESS_REASON_NONE, 0);
  url_case(c, "https://api.example.com/v1/a%20b%2C", EGRESS_REASON_NONE, 0);
  url_case(c, "https://api.example.com/v1?q=%zz", EGRESS_REASON_NONE, 0);
  url_case(c, "https://api.example.com/v1#%", EGRESS_REASON_NONE, 0);
  url_case(c, "https://svc.example.com:9/%e2%82%ac", EGRESS_REASON_NONE, 1);
  egress_checker_free(c);
  egress_policy_unref(p);
}

/* ------------------------------------------------------------------------ */
/* 2. Monitor mode                                                           */
/* ------------------------------------------------------------------------ */

typedef struct mcase {
  bool empty_policy;
  const char *host;
  int32_t port;
  egress_outcome_t outcome;
  egress_reason_t reason;
} mcase_t;

static const mcase_t monitor_cases[] = {
  { false, "0x7f.1", 443, EGRESS_OUTCOME_DENIED, EGRESS_REASON_INVALID_HOST },
  { false, "user@api.example.com", 443, EGRESS_OUTCOME_DENIED, EGRESS_REASON_INVALID_HOST },
  { false, NULL, 443, EGRESS_OUTCOME_DENIED, EGRESS_REASON_INVALID_HOST },
  { false, "api.example.com", 0, EGRESS_OUTCOME_DENIED, EGRESS_REASON_INVALID_PORT },
  { false, "api.example.com", 70000, EGRESS_OUTCOME_DENIED, EGRESS_REASON_INVALID_PORT },
  { true, "api.example.com", 443, EGRESS_OUTCOME_DENIED, EGRESS_REASON_EMPTY_ALLOWLIST },
  { true, "8.8.8.8", 443, EGRESS_OUTCOME_DENIED, EGRESS_REASON_EMPTY_ALLOWLIST },
  { false, "blocked.example.com", 443, EGRESS_OUTCOME_DENIED, EGRESS_REASON_EXPLICIT_DENY },
  { false, "9.9.9.9", 443, EGRESS_OUTCOME_DENIED, EGRESS_REASON_EXPLICIT_DENY },
  { false, "other.example.org", 443, EGRESS_OUTCOME_DENIED, EGRESS_REASON_NOT_IN_ALLOWLIST },
  { false, "api.example.net", 80, EGRESS_OUTCOME_DENIED, EGRESS_REASON_PORT_NOT_ALLOWED },
  { false, "127.0.0.1", 443, EGRESS_OUTCOME_DENIED, EGRESS_REASON_SPECIAL_PURPOSE_ADDRESS },
  { false, "169.254.169.254", 80, EGRESS_OUTCOME_DENIED, EGRESS_REASON_SPECIAL_PURPOSE_ADDRESS },
  { false, "missing.example.com", 443, EGRESS_OUTCOME_DENIED, EGRESS_REASON_NO_SUCH_HOST },
  { false, "loop.example.com", 443, EGRESS_OUTCOME_DENIED, EGRESS_REASON_RESOLVED_ADDRESS_FORBIDDEN },
  { false, "api.example.com", 443, EGRESS_OUTCOME_ALLOWED, EGRESS_REASON_NONE },
  { false, "8.8.8.8", 443, EGRESS_OUTCOME_ALLOWED, EGRESS_REASON_NONE },
};

static void test_monitor_mode(void) {
  const char *allow[] = { "*.example.com", "api.example.net", "0.0.0.0/0", "::/0" };
  const char *deny[] = { "blocked.example.com", "9.9.9.9" };
  egress_policy_t *p = POLICY(allow, deny);
  egress_policy_t *empty = mkpolicy(NULL, 0, NULL, 0);
  ck_cfg_t mon = { .mode = EGRESS_MODE_MONITOR };
  egress_checker_t *checkers[2][2]; /* [empty][monitor] */
  checkers[0][0] = mkchecker(p, NULL);
  checkers[0][1] = mkchecker(p, &mon);
  checkers[1][0] = mkchecker(empty, NULL);
  checkers[1][1] = mkchecker(empty, &mon);

  for (size_t i = 0; i < NELEM(monitor_cases); i++) {
    const mcase_t *mc = &monitor_cases[i];
    bool input_error = mc->reason == EGRESS_REASON_INVALID_HOST || mc->reason == EGRESS_REASON_INVALID_PORT;
    for (int monitor = 0; monitor < 2; monitor++) {
      egress_checker_t *c = checkers[mc->empty_policy][monitor];
      egress_decision_t *d = expect(c, mc->host, mc->port, mc->outcome, mc->reason, ANY_RULE, 0);
      egress_verdict_t want = mc->outcome == EGRESS_OUTCOME_ALLOWED ? EGRESS_VERDICT_ALLOW
                              : monitor && !input_error             ? EGRESS_VERDICT_ALLOW
                                                                    : EGRESS_VERDICT_DENY;
      if (egress_decision_verdict(d) != want)
        printf("\n  %s:%ld %s mode: verdict %d, expected %d\n", mc->host ? mc->host : "(null)",
               (long)mc->port, monitor ? "monitor" : "enforce", egress_decision_verdict(d), want);
      CU_ASSERT_EQUAL(egress_decision_verdict(d), want);
      CU_ASSERT_EQUAL(egress_decision_mode(d), monitor ? EGRESS_MODE_MONITOR : EGRESS_MODE_ENFORCE);
      cJSON *ev = cJSON_Parse(egress_decision_event_json(d));
      CU_ASSERT_PTR_NOT_NULL_FATAL(ev);
      const cJSON *data = cJSON_GetObjectItemCaseSensitive(ev, "data");
      CU_ASSERT_STRING_EQUAL(jstr(data, "enforcementMode"), monitor ? "monitor" : "enforce");
      const cJSON *wd = cJSON_GetObjectItemCaseSensitive(data, "wouldDeny");
      CU_ASSERT(cJSON_IsBool(wd));
      CU_ASSERT_EQUAL(cJSON_IsTrue(wd), mc->outcome != EGRESS_OUTCOME_ALLOWED);
      CU_ASSERT_STRING_EQUAL(jstr(data, "outcome"), egress_outcome_name(mc->outcome));
      cJSON_Delete(ev);
      egress_decision_free(d);
      if (mc->port > 0 && mc->port < 65536)
        CU_ASSERT_EQUAL(egress_check(c, mc->host, (uint16_t)mc->port), want);
    }
  }
  for (int e = 0; e < 2; e++)
    for (int m = 0; m < 2; m++) egress_checker_free(checkers[e][m]);
  egress_policy_unref(p);
  egress_policy_unref(empty);
}

/* ------------------------------------------------------------------------ */
/* 3. Events through the checker                                             */
/* ------------------------------------------------------------------------ */

typedef struct cb_state {
  pthread_mutex_t lock;
  unsigned calls;
  int ret; /* what the callback returns */
  egress_verdict_t last_verdict;
  egress_reason_t last_reason;
  bool json_matches; /* every event parsed and agreed with its decision */
  const char *last_json_ptr;
} cb_state_t;

static int event_cb(const char *json, size_t len, const egress_decision_t *d, void *user) {
  cb_state_t *s = user;
  pthread_mutex_lock(&s->lock);
  s->calls++;
  s->last_verdict = egress_decision_verdict(d);
  s->last_reason = egress_decision_reason(d);
  s->last_json_ptr = json;
  cJSON *root = json && strlen(json) == len ? cJSON_Parse(json) : NULL;
  const cJSON *data = cJSON_GetObjectItemCaseSensitive(root, "data");
  if (!root || !data || !jstr(data, "outcome") ||
      strcmp(jstr(data, "outcome"), egress_outcome_name(egress_decision_outcome(d))))
    s->json_matches = false;
  cJSON_Delete(root);
  pthread_mutex_unlock(&s->lock);
  return s->ret;
}

static void cb_init(cb_state_t *s, int ret) {
  memset(s, 0, sizeof *s);
  pthread_mutex_init(&s->lock, NULL);
  s->ret = ret;
  s->json_matches = true;
}

static void test_events_callback(void) {
  const char *allow[] = { "api.example.com", "0.0.0.0/0" };
  egress_policy_t *p = POLICY_ALLOW(allow);
  cb_state_t s;
  cb_init(&s, 0);
  ck_cfg_t cfg = { .cb = event_cb, .cb_data = &s };
  egress_checker_t *c = mkchecker(p, &cfg);
  unsigned expected = 0;

  const struct {
    const char *host;
    int32_t port;
  } plain[] = { { "api.example.com", 443 }, { "8.8.8.8", 443 }, { "127.0.0.1", 443 },
                { "0x7f.1", 443 },          { NULL, 443 },      { "other.example.org", 443 },
                { "api.example.com", 0 } };
  for (size_t i = 0; i < NELEM(plain); i++) {
    egress_verdict_t v = egress_check(c, plain[i].host, (uint16_t)plain[i].port);
    expected++;
    CU_ASSERT_EQUAL(s.calls, expected);
    CU_ASSERT_EQUAL(s.last_verdict, v);
  }
  for (size_t i = 0; i < NELEM(plain); i++) {
    egress_decision_t *d = NULL;
    CU_ASSERT_EQUAL(egress_check_ex(c, plain[i].host, plain[i].port, NULL, &d), EGRESS_OK);
    expected++;
    CU_ASSERT_EQUAL(s.calls, expected);
    CU_ASSERT_EQUAL(s.last_verdict, egress_decision_verdict(d));
    CU_ASSERT_EQUAL(s.last_reason, egress_decision_reason(d));
    /* The callback saw the decision's own event text. */
    CU_ASSERT_PTR_EQUAL(s.last_json_ptr, egress_decision_event_json(d));
    egress_decision_free(d);
  }
  CU_ASSERT_EQUAL(egress_check_ex(c, "8.8.8.8", 65536, NULL, NULL), EGRESS_EINVAL);
  CU_ASSERT_EQUAL(s.calls, expected); /* no check ran: no event */
  const char *urls[] = { "https://api.example.com/",
                         "https://8.8.8.8/",
                         "ftp://x.example/",
                         "https://a@b.example/",
                         "https://api.example.com:0/",
                         NULL,
                         "" };
  for (size_t i = 0; i < NELEM(urls); i++) {
    egress_decision_t *d = NULL;
    CU_ASSERT_EQUAL(egress_check_url(c, urls[i], NULL, &d), EGRESS_OK);
    expected++;
    CU_ASSERT_EQUAL(s.calls, expected);
    CU_ASSERT_EQUAL(s.last_verdict, egress_decision_verdict(d));
    CU_ASSERT_EQUAL(s.last_reason, egress_decision_reason(d));
    egress_decision_free(d);
  }
  CU_ASSERT(s.json_matches);
  CU_ASSERT_EQUAL(egress_checker_counter(c, EGRESS_COUNTER_EVENTS_EMITTED), expected);
  CU_ASSERT_EQUAL(egress_checker_counter(c, EGRESS_COUNTER_EVENTS_FAILED), 0);
  CU_ASSERT_EQUAL(egress_checker_counter(c, EGRESS_COUNTER_CHECKS), expected);
  egress_checker_free(c);
  egress_policy_unref(p);
  pthread_mutex_destroy(&s.lock);
}

#define EV_THREADS 8
#define EV_CHECKS  500

typedef struct ev_thread {
  egress_checker_t *c;
  int id;
  int failures;
} ev_thread_t;

static const char *const mixed_hosts[] = { "api.example.com",    "8.8.8.8", "127.0.0.1",
                                           "other.example.org",  "0x7f.1",  "[::1]",
                                           "missing.example.com" };

static void *ev_worker(void *arg) {
  ev_thread_t *t = arg;
  egress_request_t *req = NULL;
  if (egress_request_new(&req) != EGRESS_OK) {
    t->failures++;
    return NULL;
  }
  char buf[64];
  snprintf(buf, sizeof buf, "ws-%d", t->id);
  if (egress_request_set(req, EGRESS_FIELD_WORKSPACE_ID, buf) != EGRESS_OK) t->failures++;
  snprintf(buf, sizeof buf, "agent-%d", t->id);
  if (egress_request_set(req, EGRESS_FIELD_AGENT_ID, buf) != EGRESS_OK) t->failures++;
  if (egress_request_set(req, EGRESS_FIELD_MACHINE_ID, "machine-1") != EGRESS_OK) t->failures++;
  if (egress_request_set(req, EGRESS_FIELD_RUN_ID, "run-7") != EGRESS_OK) t->failures++;
  if (egress_request_set(req, EGRESS_FIELD_METHOD, "POST") != EGRESS_OK) t->failures++;
  for (int i = 0; i < EV_CHECKS; i++) {
    const char *h = mixed_hosts[(size_t)(i + t->id) % NELEM(mixed_hosts)];
    if (i % 2 == 0) {
      snprintf(buf, sizeof buf, "t%d-%d", t->id, i);
      if (egress_request_set(req, EGRESS_FIELD_CORRELATION_ID, buf) != EGRESS_OK) t->failures++;
      egress_decision_t *d = NULL;
      if (egress_check_ex(t->c, h, 443, req, &d) != EGRESS_OK) t->failures++;
      egress_decision_free(d);
    } else {
      egress_verdict_t v = egress_check(t->c, h, 443);
      if (v == EGRESS_VERDICT_ALLOW && strcmp(h, "api.example.com") && strcmp(h, "8.8.8.8")) t->failures++;
    }
  }
  egress_request_free(req);
  return NULL;
}

static int cmp_str(const void *a, const void *b) { return strcmp(*(char *const *)a, *(char *const *)b); }

static void test_events_jsonl_threads(void) {
  const char *allow[] = { "api.example.com", "*.example.com", "0.0.0.0/0", "::/0" };
  egress_policy_t *p = POLICY_ALLOW(allow);
  char path[300];
  snprintf(path, sizeof path, "%s/events.jsonl", tmpdir);
  unlink(path);
  ck_cfg_t cfg = { .event_path = path };
  egress_checker_t *c = mkchecker(p, &cfg);
  pthread_t th[EV_THREADS];
  ev_thread_t args[EV_THREADS];
  for (int i = 0; i < EV_THREADS; i++) {
    args[i] = (ev_thread_t){ .c = c, .id = i };
    CU_ASSERT_FATAL(pthread_create(&th[i], NULL, ev_worker, &args[i]) == 0);
  }
  for (int i = 0; i < EV_THREADS; i++) {
    pthread_join(th[i], NULL);
    CU_ASSERT_EQUAL(args[i].failures, 0);
  }
  const unsigned total = EV_THREADS * EV_CHECKS;
  CU_ASSERT_EQUAL(egress_checker_counter(c, EGRESS_COUNTER_CHECKS), total);
  CU_ASSERT_EQUAL(egress_checker_counter(c, EGRESS_COUNTER_EVENTS_EMITTED), total);
  CU_ASSERT_EQUAL(egress_checker_counter(c, EGRESS_COUNTER_EVENTS_FAILED), 0);
  egress_checker_free(c);
  egress_policy_unref(p);

  FILE *f = fopen(path, "r");
  CU_ASSERT_PTR_NOT_NULL_FATAL(f);
  char *line = NULL;
  size_t cap = 0;
  ssize_t n;
  unsigned lines = 0, bad = 0, with_ctx = 0, without_ctx = 0;
  char **ids = calloc(total + 1, sizeof *ids);
  CU_ASSERT_PTR_NOT_NULL_FATAL(ids);
  while ((n = getline(&line, &cap, f)) > 0) {
    lines++;
    if (line[n - 1] != '\n') {
      bad++;
      continue;
    }
    cJSON *root = cJSON_Parse(line);
    const cJSON *data = cJSON_GetObjectItemCaseSensitive(root, "data");
    bool ok = root && cJSON_IsObject(data) && jstr(root, "specversion") &&
              !strcmp(jstr(root, "specversion"), "1.0") && jstr(root, "type") &&
              !strcmp(jstr(root, "type"), "io.portarium.egress.attempt") && jstr(root, "source") &&
              !strcmp(jstr(root, "source"), "/enforcement/libegress") && jstr(root, "id") &&
              strlen(jstr(root, "id")) == 36 && jstr(root, "time") &&
              jstr(root, "time")[strlen(jstr(root, "time")) - 1] == 'Z' && jstr(root, "datacontenttype") &&
              !strcmp(jstr(root, "datacontenttype"), "application/json") && jstr(root, "subject") &&
              jstr(data, "outcome") && jstr(data, "enforcementMode") && jstr(data, "policyDigest") &&
              jstr(data, "specialRangesVersion");
    if (ok && lines <= total) ids[lines - 1] = strdup(jstr(root, "id"));
    if (ok) {
      const char *corr = jstr(data, "correlationId");
      if (corr) {
        with_ctx++;
        int tid = -1, idx = -1;
        char ws[32], ag[32];
        ok = sscanf(corr, "t%d-%d", &tid, &idx) == 2 && idx % 2 == 0;
        snprintf(ws, sizeof ws, "ws-%d", tid);
        snprintf(ag, sizeof ag, "agent-%d", tid);
        ok = ok && jstr(data, "workspaceId") && !strcmp(jstr(data, "workspaceId"), ws) &&
             jstr(data, "agentId") && !strcmp(jstr(data, "agentId"), ag) && jstr(data, "machineId") &&
             !strcmp(jstr(data, "machineId"), "machine-1") && jstr(data, "runId") &&
             !strcmp(jstr(data, "runId"), "run-7") && jstr(data, "method") &&
             !strcmp(jstr(data, "method"), "POST");
      } else {
        without_ctx++;
        ok = jnull(data, "correlationId") && jnull(data, "workspaceId") && jnull(data, "agentId") &&
             jnull(data, "machineId") && jnull(data, "runId") && jnull(data, "method");
      }
    }
    if (!ok) {
      if (bad < 3) printf("\n  bad event line: %.300s\n", line);
      bad++;
    }
    cJSON_Delete(root);
  }
  free(line);
  fclose(f);
  CU_ASSERT_EQUAL(lines, total);
  CU_ASSERT_EQUAL(bad, 0);
  CU_ASSERT_EQUAL(with_ctx, total / 2);
  CU_ASSERT_EQUAL(without_ctx, total / 2);
  /* Event ids are unique. */
  size_t nids = 0;
  while (nids < total && ids[nids]) nids++;
  CU_ASSERT_EQUAL(nids, total);
  qsort(ids, nids, sizeof *ids, cmp_str);
  unsigned dups = 0;
  for (size_t i = 1; i < nids; i++)
    if (!strcmp(ids[i - 1], ids[i])) dups++;
  CU_ASSERT_EQUAL(dups, 0);
  for (size_t i = 0; i < nids; i++) free(ids[i]);
  free(ids);
}

/* ------------------------------------------------------------------------ */
/* 4. audit_required                                                         */
/* ------------------------------------------------------------------------ */

typedef enum { SINK_CB_FAIL, SINK_DEV_FULL, SINK_CLOSED_PIPE } failing_sink_t;

static void run_audit_case(failing_sink_t kind, bool audit, egress_mode_t mode) {
  const char *allow[] = { "api.example.com", "0.0.0.0/0" };
  egress_policy_t *p = POLICY_ALLOW(allow);
  cb_state_t s;
  cb_init(&s, -1);
  int fds[2] = { -1, -1 };
  ck_cfg_t cfg = { .mode = mode, .audit = audit };
  if (kind == SINK_CB_FAIL) {
    cfg.cb = event_cb;
    cfg.cb_data = &s;
  } else if (kind == SINK_DEV_FULL) {
    cfg.event_path = "/dev/full";
  } else {
    CU_ASSERT_FATAL(pipe(fds) == 0);
    close(fds[0]);
    cfg.event_fd = fds[1];
  }
  egress_checker_t *c = mkchecker(p, &cfg);
  const char *hosts[] = { "api.example.com", "8.8.8.8", "127.0.0.1", "other.example.org" };
  uint64_t checks = 0;
  for (size_t i = 0; i < NELEM(hosts); i++) {
    bool policy_allows = i < 2;
    egress_decision_t *d = NULL;
    CU_ASSERT_EQUAL(egress_check_ex(c, hosts[i], 443, NULL, &d), EGRESS_OK);
    checks++;
    CU_ASSERT_PTR_NOT_NULL_FATAL(d);
    if (audit) {
      if (egress_decision_verdict(d) != EGRESS_VERDICT_DENY ||
          egress_decision_reason(d) != EGRESS_REASON_AUDIT_UNAVAILABLE)
        printf("\n  audit kind %d mode %d %s: verdict %d reason %s\n", kind, mode, hosts[i],
               egress_decision_verdict(d), egress_reason_name(egress_decision_reason(d)));
      CU_ASSERT_EQUAL(egress_decision_verdict(d), EGRESS_VERDICT_DENY);
      CU_ASSERT_EQUAL(egress_decision_reason(d), EGRESS_REASON_AUDIT_UNAVAILABLE);
      CU_ASSERT_NOT_EQUAL(egress_decision_outcome(d), EGRESS_OUTCOME_ALLOWED);
      CU_ASSERT_PTR_NULL(egress_decision_curl_resolve(d));
      for (size_t k = 0; k < egress_decision_address_count(d); k++)
        CU_ASSERT_EQUAL(egress_decision_address_verdict(d, k), EGRESS_VERDICT_DENY);
      CU_ASSERT(strlen(egress_decision_message(d)) > 0);
    } else {
      egress_verdict_t want =
          policy_allows || mode == EGRESS_MODE_MONITOR ? EGRESS_VERDICT_ALLOW : EGRESS_VERDICT_DENY;
      CU_ASSERT_EQUAL(egress_decision_verdict(d), want);
      CU_ASSERT_EQUAL(egress_decision_outcome(d),
                      policy_allows ? EGRESS_OUTCOME_ALLOWED : EGRESS_OUTCOME_DENIED);
    }
    egress_decision_free(d);
    egress_verdict_t v = egress_check(c, hosts[i], 443);
    checks++;
    bool want_deny = audit || (!policy_allows && mode == EGRESS_MODE_ENFORCE);
    CU_ASSERT_EQUAL(v, want_deny ? EGRESS_VERDICT_DENY : EGRESS_VERDICT_ALLOW);
  }
  /* Invalid input still denies whatever the sink does. */
  CU_ASSERT_EQUAL(egress_check(c, "0x7f.1", 443), EGRESS_VERDICT_DENY);
  checks++;
  CU_ASSERT_EQUAL(egress_checker_counter(c, EGRESS_COUNTER_EVENTS_FAILED), checks);
  CU_ASSERT_EQUAL(egress_checker_counter(c, EGRESS_COUNTER_EVENTS_EMITTED), 0);
  CU_ASSERT_EQUAL(egress_checker_counter(c, EGRESS_COUNTER_CHECKS), checks);
  if (audit)
    CU_ASSERT(egress_checker_checks_by(c, EGRESS_OUTCOME_ENFORCEMENT_UNAVAILABLE,
                                       EGRESS_REASON_AUDIT_UNAVAILABLE) >= 8);
  if (kind == SINK_CB_FAIL) CU_ASSERT_EQUAL(s.calls, checks);
  egress_checker_free(c);
  if (fds[1] >= 0) close(fds[1]);
  egress_policy_unref(p);
  pthread_mutex_destroy(&s.lock);
}

static void test_audit_required(void) {
  for (int kind = SINK_CB_FAIL; kind <= SINK_CLOSED_PIPE; kind++)
    for (int audit = 0; audit < 2; audit++)
      for (int mode = EGRESS_MODE_ENFORCE; mode <= EGRESS_MODE_MONITOR; mode++)
        run_audit_case((failing_sink_t)kind, audit, (egress_mode_t)mode);
}

/* A working sink with audit_required changes nothing. */
static void test_audit_required_working_sink(void) {
  const char *allow[] = { "api.example.com" };
  egress_policy_t *p = POLICY_ALLOW(allow);
  cb_state_t s;
  cb_init(&s, 0);
  ck_cfg_t cfg = { .cb = event_cb, .cb_data = &s, .audit = true };
  egress_checker_t *c = mkchecker(p, &cfg);
  CU_ASSERT_EQUAL(egress_check(c, "api.example.com", 443), EGRESS_VERDICT_ALLOW);
  CU_ASSERT_EQUAL(egress_check(c, "other.example.com", 443), EGRESS_VERDICT_DENY);
  CU_ASSERT_EQUAL(egress_checker_counter(c, EGRESS_COUNTER_EVENTS_EMITTED), 2);
  CU_ASSERT_EQUAL(egress_checker_counter(c, EGRESS_COUNTER_EVENTS_FAILED), 0);
  /* No sink at all with audit_required: nothing to deliver, nothing fails. */
  egress_checker_free(c);
  ck_cfg_t none = { .audit = true };
  c = mkchecker(p, &none);
  CU_ASSERT_EQUAL(egress_check(c, "api.example.com", 443), EGRESS_VERDICT_ALLOW);
  CU_ASSERT_EQUAL(egress_checker_counter(c, EGRESS_COUNTER_EVENTS_FAILED), 0);
  egress_checker_free(c);
  egress_policy_unref(p);
  pthread_mutex_destroy(&s.lock);
}

/* ------------------------------------------------------------------------ */
/* 5. Counters and Prometheus text                                           */
/* ------------------------------------------------------------------------ */

static bool name_char(char ch, bool first) {
  return (ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') || ch == '_' || ch == ':' ||
         (!first && ch >= '0' && ch <= '9');
}

/* Validate Prometheus text exposition format; returns the number of
 * problems and prints the first few. */
static int prom_validate(const char *text) {
  int problems = 0;
  char typed[64][128];
  size_t ntyped = 0;
  char seen_done[64][128]; /* metric families already finished */
  size_t ndone = 0;
  char current[128] = "";
  const char *line = text;
  if (!text || !*text || text[strlen(text) - 1] != '\n') return 1;
  while (*line) {
    const char *end = strchr(line, '\n');
    size_t len = (size_t)(end - line);
    char buf[512];
    if (len >= sizeof buf) {
      problems++;
      line = end + 1;
      continue;
    }
    memcpy(buf, line, len);
    buf[len] = '\0';
    line = end + 1;
    if (buf[0] == '#') {
      char name[128], kind[32];
      if (!strncmp(buf, "# HELP ", 7)) continue;
      if (sscanf(buf, "# TYPE %127s %31s", name, kind) == 2) {
        if (strcmp(kind, "counter") && strcmp(kind, "gauge") && strcmp(kind, "untyped") &&
            strcmp(kind, "histogram") && strcmp(kind, "summary")) {
          problems++;
          printf("\n  bad TYPE kind: %s\n", buf);
        }
        for (size_t i = 0; i < ntyped; i++)
          if (!strcmp(typed[i], name)) {
            problems++;
            printf("\n  duplicate TYPE: %s\n", buf);
          }
        if (ntyped < 64) snprintf(typed[ntyped++], sizeof typed[0], "%s", name);
        continue;
      }
      problems++;
      printf("\n  bad comment line: %s\n", buf);
      continue;
    }
    /* name{labels} value */
    size_t i = 0;
    char name[128];
    while (buf[i] && name_char(buf[i], i == 0) && i < sizeof name - 1) i++;
    memcpy(name, buf, i);
    name[i] = '\0';
    bool ok = i > 0;
    if (ok && buf[i] == '{') {
      i++;
      bool first = true;
      while (ok && buf[i] != '}') {
        if (!first) {
          if (buf[i] != ',') {
            ok = false;
            break;
          }
          i++;
        }
        first = false;
        size_t s = i;
        while (buf[i] && name_char(buf[i], i == s)) i++;
        if (i == s || buf[i] != '=' || buf[i + 1] != '"') {
          ok = false;
          break;
        }
        i += 2;
        while (buf[i] && buf[i] != '"') {
          if (buf[i] == '\\') {
            if (buf[i + 1] != '\\' && buf[i + 1] != '"' && buf[i + 1] != 'n') {
              ok = false;
              break;
            }
            i++;
          }
          i++;
        }
        if (buf[i] != '"') {
          ok = false;
          break;
        }
        i++;
      }
      if (ok) i++;
    }
    if (ok && buf[i] != ' ') ok = false;
    if (ok) {
      char *endp = NULL;
      const char *v = buf + i + 1;
      (void)strtod(v, &endp);
      if (endp == v || (*endp != '\0' && *endp != ' ')) ok = false;
    }
    bool has_type = false;
    for (size_t k = 0; k < ntyped; k++)
      if (!strcmp(typed[k], name)) has_type = true;
    if (!has_type) ok = false;
    /* All samples of one metric family are contiguous. */
    if (strcmp(current, name)) {
      for (size_t k = 0; k < ndone; k++)
        if (!strcmp(seen_done[k], name)) ok = false;
      if (current[0] && ndone < 64) snprintf(seen_done[ndone++], sizeof seen_done[0], "%s", current);
      snprintf(current, sizeof current, "%s", name);
    }
    if (!ok) {
      problems++;
      if (problems < 5) printf("\n  bad sample line: %s\n", buf);
    }
  }
  return problems;
}

static uint64_t prom_value(const char *text, const char *sample) {
  /* sample is "name" or "name{...}", matched at a line start. */
  size_t n = strlen(sample);
  for (const char *l = text; l && *l; l = strchr(l, '\n') ? strchr(l, '\n') + 1 : NULL)
    if (!strncmp(l, sample, n) && l[n] == ' ') return strtoull(l + n + 1, NULL, 10);
  return UINT64_MAX;
}

static void test_counters(void) {
  const char *allow[] = { "api.example.com", "*.example.com", "0.0.0.0/0" };
  const char *deny[] = { "blocked.example.com" };
  egress_policy_t *p = POLICY(allow, deny);
  egress_checker_t *c = mkchecker(p, NULL);
  uint64_t tally[3][13];
  memset(tally, 0, sizeof tally);
  const struct {
    const char *host;
    int32_t port;
    bool dns;
  } cases[] = { { "api.example.com", 443, true },
                { "api.example.com", 443, true },
                { "8.8.8.8", 443, false },
                { "127.0.0.1", 443, false },
                { "blocked.example.com", 443, false },
                { "other.example.org", 443, false },
                { "api.example.com", 80, false },
                { "0x7f.1", 443, false },
                { "api.example.com", 0, false },
                { "missing.example.com", 443, true },
                { "loop.example.com", 443, true },
                { NULL, 443, false },
                { "other.example.org", 443, false } };
  uint64_t dns = 0;
  for (size_t i = 0; i < NELEM(cases); i++) {
    egress_decision_t *d = check(c, cases[i].host, cases[i].port);
    tally[egress_decision_outcome(d)][egress_decision_reason(d)]++;
    dns += cases[i].dns;
    egress_decision_free(d);
  }
  /* egress_check counts too. */
  CU_ASSERT_EQUAL(egress_check(c, "other.example.org", 443), EGRESS_VERDICT_DENY);
  tally[EGRESS_OUTCOME_DENIED][EGRESS_REASON_NOT_IN_ALLOWLIST]++;
  const uint64_t total = NELEM(cases) + 1;
  CU_ASSERT_EQUAL(egress_checker_counter(c, EGRESS_COUNTER_CHECKS), total);
  /* Every resolution is a cache hit or a miss; only misses query (the
   * cache keeps api.example.com's answer and the NXDOMAIN for a while). */
  uint64_t hits = egress_checker_counter(c, EGRESS_COUNTER_CACHE_HITS);
  uint64_t misses = egress_checker_counter(c, EGRESS_COUNTER_CACHE_MISSES);
  uint64_t queries = egress_checker_counter(c, EGRESS_COUNTER_DNS_QUERIES);
  CU_ASSERT_EQUAL(hits + misses, dns);
  CU_ASSERT_EQUAL(queries, misses);
  CU_ASSERT_EQUAL(misses, 3); /* api, missing, loop */
  CU_ASSERT_EQUAL(hits, 1);   /* api again */
  CU_ASSERT_EQUAL(egress_checker_counter(c, EGRESS_COUNTER_DNS_FAILURES), 0);
  CU_ASSERT_EQUAL(egress_checker_counter(c, EGRESS_COUNTER_POLICY_SWAPS), 0);
  CU_ASSERT_EQUAL(egress_checker_counter(c, EGRESS_COUNTER_EVENTS_FAILED), 0);
  uint64_t sum = 0;
  for (int o = 0; o < 3; o++)
    for (int r = 0; r < egress_reason_count(); r++) {
      CU_ASSERT_EQUAL(egress_checker_checks_by(c, (egress_outcome_t)o, (egress_reason_t)r), tally[o][r]);
      sum += egress_checker_checks_by(c, (egress_outcome_t)o, (egress_reason_t)r);
    }
  CU_ASSERT_EQUAL(sum, total);
  CU_ASSERT_EQUAL(tally[EGRESS_OUTCOME_ALLOWED][EGRESS_REASON_NONE], 3);
  CU_ASSERT_EQUAL(tally[EGRESS_OUTCOME_DENIED][EGRESS_REASON_NOT_IN_ALLOWLIST], 3);

  char *m = egress_checker_metrics(c);
  CU_ASSERT_PTR_NOT_NULL_FATAL(m);
  CU_ASSERT_EQUAL(prom_validate(m), 0);
  char sample[256];
  CU_ASSERT_EQUAL(prom_value(m, "egress_checks_total"), total);
  CU_ASSERT_EQUAL(prom_value(m, "egress_dns_queries_total"), queries);
  CU_ASSERT_EQUAL(prom_value(m, "egress_dns_cache_hits_total"), hits);
  CU_ASSERT_EQUAL(prom_value(m, "egress_dns_cache_misses_total"), misses);
  CU_ASSERT_EQUAL(prom_value(m, "egress_events_failed_total"), 0);
  for (int o = 0; o < 3; o++)
    for (int r = 1; r < egress_reason_count(); r++) {
      if (!tally[o][r]) continue;
      snprintf(sample, sizeof sample, "egress_checks_by_outcome_total{outcome=\"%s\",reason=\"%s\"}",
               egress_outcome_name((egress_outcome_t)o), egress_reason_name((egress_reason_t)r));
      CU_ASSERT_EQUAL(prom_value(m, sample), tally[o][r]);
      if (prom_value(m, sample) != tally[o][r]) printf("\n  missing %s\n%s", sample, m);
    }
  egress_free(m);
  /* The text grows as it is written: a failed growth gives NULL, not a
   * cut text, and leaks nothing. */
  size_t fails = 0;
  for (long k = 1; k <= 8; k++) {
    egress__alloc_fail_at(k);
    m = egress_checker_metrics(c);
    egress__alloc_fail_at(0);
    if (m) {
      CU_ASSERT_EQUAL(prom_validate(m), 0);
    } else {
      fails++;
    }
    egress_free(m);
  }
  CU_ASSERT(fails >= 2);
  egress_checker_free(c);
  egress_policy_unref(p);

  /* The validator itself rejects broken text (so the test can fail). */
  CU_ASSERT(prom_validate("egress_x 1\n") > 0);                   /* no TYPE */
  CU_ASSERT(prom_validate("# TYPE a counter\na{b=\"c} 1\n") > 0); /* bad label */
  CU_ASSERT(prom_validate("# TYPE a counter\na one\n") > 0);      /* bad value */
  CU_ASSERT(prom_validate("# TYPE a counter\na 1") > 0);          /* no newline */
  CU_ASSERT_EQUAL(prom_validate("# TYPE a counter\na{b=\"c\",d=\"\"} 1\n"), 0);
}

/* ------------------------------------------------------------------------ */
/* 6. Policy swap and reload                                                 */
/* ------------------------------------------------------------------------ */

static void test_set_policy(void) {
  const char *a[] = { "api.example.com" };
  const char *b[] = { "svc.example.com", "8.8.8.8" };
  egress_policy_t *pa = POLICY_ALLOW(a), *pb = POLICY_ALLOW(b);
  CU_ASSERT_STRING_NOT_EQUAL(egress_policy_digest(pa), egress_policy_digest(pb));
  egress_checker_t *c = mkchecker(pa, NULL);
  egress_decision_t *d =
      expect(c, "api.example.com", 443, EGRESS_OUTCOME_ALLOWED, EGRESS_REASON_NONE, EGRESS_LIST_ALLOW, 0);
  CU_ASSERT_STRING_EQUAL(egress_decision_policy_digest(d), egress_policy_digest(pa));
  egress_decision_free(d);
  CU_ASSERT_EQUAL(egress_checker_set_policy(c, pb), EGRESS_OK);
  egress_policy_unref(pb); /* the checker holds its own reference */
  d = expect(c, "api.example.com", 443, EGRESS_OUTCOME_DENIED, EGRESS_REASON_NOT_IN_ALLOWLIST, NO_RULE, 0);
  CU_ASSERT_STRING_NOT_EQUAL(egress_decision_policy_digest(d), egress_policy_digest(pa));
  egress_decision_free(d);
  expect_free(c, "svc.example.com", 443, EGRESS_OUTCOME_ALLOWED, EGRESS_REASON_NONE, EGRESS_LIST_ALLOW, 0);
  expect_free(c, "8.8.8.8", 1, EGRESS_OUTCOME_ALLOWED, EGRESS_REASON_NONE, EGRESS_LIST_ALLOW, 1);
  egress_policy_t *cur = egress_checker_policy(c);
  CU_ASSERT_PTR_NOT_NULL_FATAL(cur);
  CU_ASSERT_EQUAL(egress_policy_rule_count(cur, EGRESS_LIST_ALLOW), 2);
  egress_policy_unref(cur);
  CU_ASSERT_EQUAL(egress_checker_counter(c, EGRESS_COUNTER_POLICY_SWAPS), 1);
  /* Back to a: the old policy object is still alive through our ref. */
  CU_ASSERT_EQUAL(egress_checker_set_policy(c, pa), EGRESS_OK);
  expect_free(c, "api.example.com", 443, EGRESS_OUTCOME_ALLOWED, EGRESS_REASON_NONE, EGRESS_LIST_ALLOW, 0);
  CU_ASSERT_EQUAL(egress_checker_counter(c, EGRESS_COUNTER_POLICY_SWAPS), 2);
  egress_checker_free(c);
  egress_policy_unref(pa);
}

static void test_reload_file(void) {
  char path[300], err[EGRESS_ERRBUF_SIZE];
  snprintf(path, sizeof path, "%s/policy.json", tmpdir);
  const char *a[] = { "api.example.com" };
  egress_policy_t *pa = POLICY_ALLOW(a);
  egress_checker_t *c = mkchecker(pa, NULL);
  egress_policy_unref(pa);
  bool changed = false;

  write_file(path, "{\"egressAllowlist\": [\"svc.example.com\", \"8.8.8.8\"]}");
  CU_ASSERT_EQUAL(egress_checker_reload_file(c, path, &changed, err, sizeof err), EGRESS_OK);
  CU_ASSERT_TRUE(changed);
  expect_free(c, "api.example.com", 443, EGRESS_OUTCOME_DENIED, EGRESS_REASON_NOT_IN_ALLOWLIST, NO_RULE, 0);
  expect_free(c, "svc.example.com", 443, EGRESS_OUTCOME_ALLOWED, EGRESS_REASON_NONE, EGRESS_LIST_ALLOW, 0);
  uint64_t swaps = egress_checker_counter(c, EGRESS_COUNTER_POLICY_SWAPS);
  CU_ASSERT_EQUAL(swaps, 1);
  egress_policy_t *before = egress_checker_policy(c);

  /* Same content: a no-op, the very same policy object stays. */
  changed = true;
  CU_ASSERT_EQUAL(egress_checker_reload_file(c, path, &changed, err, sizeof err), EGRESS_OK);
  CU_ASSERT_FALSE(changed);
  CU_ASSERT_EQUAL(egress_checker_counter(c, EGRESS_COUNTER_POLICY_SWAPS), swaps);
  egress_policy_t *after = egress_checker_policy(c);
  CU_ASSERT_PTR_EQUAL(before, after);
  egress_policy_unref(after);

  /* Invalid file: the old policy stays, the error names the entry. */
  write_file(path, "{\"egressAllowlist\": [\"api.example.com\", \"10.0.0.1/8\"]}");
  changed = true;
  err[0] = '\0';
  egress_status_t st = egress_checker_reload_file(c, path, &changed, err, sizeof err);
  CU_ASSERT_EQUAL(st, EGRESS_EPOLICY);
  CU_ASSERT_FALSE(changed);
  CU_ASSERT(contains(err, "10.0.0.1/8"));
  CU_ASSERT(contains(err, "egressAllowlist"));
  CU_ASSERT(contains(err, "1"));
  CU_ASSERT_EQUAL(egress_checker_counter(c, EGRESS_COUNTER_POLICY_RELOAD_FAILURES), 1);
  CU_ASSERT_EQUAL(egress_checker_counter(c, EGRESS_COUNTER_POLICY_SWAPS), swaps);
  expect_free(c, "api.example.com", 443, EGRESS_OUTCOME_DENIED, EGRESS_REASON_NOT_IN_ALLOWLIST, NO_RULE, 0);
  expect_free(c, "svc.example.com", 443, EGRESS_OUTCOME_ALLOWED, EGRESS_REASON_NONE, EGRESS_LIST_ALLOW, 0);
  after = egress_checker_policy(c);
  CU_ASSERT_PTR_EQUAL(before, after);
  egress_policy_unref(after);

  /* Not JSON at all, and a control character in an entry. */
  write_file(path, "{\"egressAllowlist\": [\"api.example.com\"");
  CU_ASSERT_EQUAL(egress_checker_reload_file(c, path, &changed, err, sizeof err), EGRESS_EPOLICY);
  write_file(path, "{\"egressAllowlist\": [\"api.example.com\\u0000.evil\"]}");
  CU_ASSERT_EQUAL(egress_checker_reload_file(c, path, &changed, err, sizeof err), EGRESS_EPOLICY);
  CU_ASSERT_EQUAL(egress_checker_counter(c, EGRESS_COUNTER_POLICY_RELOAD_FAILURES), 3);

  /* Missing file. */
  char missing[320];
  snprintf(missing, sizeof missing, "%s/no-such-policy.json", tmpdir);
  changed = true;
  CU_ASSERT_EQUAL(egress_checker_reload_file(c, missing, &changed, err, sizeof err), EGRESS_EIO);
  CU_ASSERT_FALSE(changed);
  CU_ASSERT(contains(err, "no-such-policy.json"));
  CU_ASSERT_EQUAL(egress_checker_counter(c, EGRESS_COUNTER_POLICY_RELOAD_FAILURES), 4);
  expect_free(c, "svc.example.com", 443, EGRESS_OUTCOME_ALLOWED, EGRESS_REASON_NONE, EGRESS_LIST_ALLOW, 0);
  after = egress_checker_policy(c);
  CU_ASSERT_PTR_EQUAL(before, after);
  egress_policy_unref(after);
  egress_policy_unref(before);

  /* A different valid policy afterwards still takes. */
  write_file(path, "{\"egressAllowlist\": [\"api.example.com\"]}");
  CU_ASSERT_EQUAL(egress_checker_reload_file(c, path, &changed, err, sizeof err), EGRESS_OK);
  CU_ASSERT_TRUE(changed);
  expect_free(c, "api.example.com", 443, EGRESS_OUTCOME_ALLOWED, EGRESS_REASON_NONE, EGRESS_LIST_ALLOW, 0);
  egress_checker_free(c);
}

typedef struct answer {
  egress_verdict_t verdict;
  egress_outcome_t outcome;
  egress_reason_t reason;
  bool has_rule;
  egress_list_t list;
  size_t index;
  char rule_text[64];
} answer_t;

static void answer_of(const egress_decision_t *d, answer_t *a) {
  memset(a, 0, sizeof *a);
  a->verdict = egress_decision_verdict(d);
  a->outcome = egress_decision_outcome(d);
  a->reason = egress_decision_reason(d);
  a->has_rule = egress_decision_has_rule(d);
  if (a->has_rule) {
    a->list = egress_decision_rule_list(d);
    a->index = egress_decision_rule_index(d);
    snprintf(a->rule_text, sizeof a->rule_text, "%s", egress_decision_rule_text(d));
  }
}

static bool answer_eq(const answer_t *a, const answer_t *b) {
  return a->verdict == b->verdict && a->outcome == b->outcome && a->reason == b->reason &&
         a->has_rule == b->has_rule && a->list == b->list && a->index == b->index &&
         !strcmp(a->rule_text, b->rule_text);
}

static const struct {
  const char *host;
  int32_t port;
} swap_dests[] = { { "8.8.8.8", 443 },   { "8.8.8.8", 80 },         { "1.1.1.1", 443 },
                   { "1.1.1.1", 80 },    { "9.9.9.9", 53 },         { "api.example.com", 443 },
                   { "127.0.0.1", 443 }, { "svc.example.com", 443 } };
#define N_SWAP_DESTS (sizeof swap_dests / sizeof swap_dests[0])

typedef struct swap_ctx {
  egress_checker_t *c;
  answer_t want[2][N_SWAP_DESTS];
  char digest[2][65];
  atomic_bool stop;
  atomic_ulong decisions, mismatches, seen[2];
} swap_ctx_t;

static void *swap_checker_thread(void *arg) {
  swap_ctx_t *s = arg;
  size_t i = 0;
  while (!atomic_load(&s->stop)) {
    size_t k = i++ % N_SWAP_DESTS;
    egress_decision_t *d = NULL;
    egress_status_t st = egress_check_ex(s->c, swap_dests[k].host, swap_dests[k].port, NULL, &d);
    answer_t got;
    answer_of(d, &got);
    const char *dg = egress_decision_policy_digest(d);
    int which = dg && !strcmp(dg, s->digest[0]) ? 0 : dg && !strcmp(dg, s->digest[1]) ? 1 : -1;
    if (st != EGRESS_OK || which < 0 || !answer_eq(&got, &s->want[which][k])) {
      if (atomic_fetch_add(&s->mismatches, 1) < 3)
        printf("\n  swap mismatch %s:%ld policy %d: %s/%s\n", swap_dests[k].host, (long)swap_dests[k].port,
               which, egress_outcome_name(got.outcome), egress_reason_name(got.reason));
    } else {
      atomic_fetch_add(&s->seen[which], 1);
    }
    atomic_fetch_add(&s->decisions, 1);
    egress_decision_free(d);
    /* Under valgrind, which runs one thread at a time, a checker that never
     * yields starves the swapper; yielding now and then keeps swaps coming. */
    if (i % 256 == 0) sched_yield();
  }
  return NULL;
}

static void test_swap_under_load(void) {
  const char *a_allow[] = { "8.8.8.0/24:443", "1.1.1.1", "api.example.com" };
  const char *a_deny[] = { "9.9.9.9" };
  const char *b_allow[] = { "8.8.8.0/24:80", "9.9.9.9", "svc.example.com", "0.0.0.0/0:443" };
  const char *b_deny[] = { "1.1.1.0/24" };
  egress_policy_t *pol[2] = { POLICY(a_allow, a_deny), POLICY(b_allow, b_deny) };
  static swap_ctx_t s;
  memset(&s, 0, sizeof s);
  for (int w = 0; w < 2; w++) {
    snprintf(s.digest[w], sizeof s.digest[w], "%s", egress_policy_digest(pol[w]));
    egress_checker_t *ref = mkchecker(pol[w], NULL);
    for (size_t k = 0; k < N_SWAP_DESTS; k++) {
      egress_decision_t *d = check(ref, swap_dests[k].host, swap_dests[k].port);
      answer_of(d, &s.want[w][k]);
      egress_decision_free(d);
    }
    egress_checker_free(ref);
  }
  /* The two policies must disagree on most destinations for the test to
   * mean anything. */
  size_t differ = 0;
  for (size_t k = 0; k < N_SWAP_DESTS; k++) differ += !answer_eq(&s.want[0][k], &s.want[1][k]);
  CU_ASSERT(differ >= 6);

  s.c = mkchecker(pol[0], NULL);
  pthread_t th[2];
  for (int i = 0; i < 2; i++) CU_ASSERT_FATAL(pthread_create(&th[i], NULL, swap_checker_thread, &s) == 0);
  struct timespec start, now, ms = { 0, 1000000 };
  clock_gettime(CLOCK_MONOTONIC, &start);
  unsigned swaps = 0;
  do {
    CU_ASSERT_EQUAL(egress_checker_set_policy(s.c, pol[++swaps & 1]), EGRESS_OK);
    nanosleep(&ms, NULL);
    clock_gettime(CLOCK_MONOTONIC, &now);
    /* At least a second and at least 150 swaps (slow under valgrind, which
     * runs one thread at a time), but never more than 60 s. */
  } while ((((now.tv_sec - start.tv_sec) * 1000 + (now.tv_nsec - start.tv_nsec) / 1000000 < 1000) ||
            swaps < 150) &&
           (now.tv_sec - start.tv_sec) < 60);
  atomic_store(&s.stop, true);
  for (int i = 0; i < 2; i++) pthread_join(th[i], NULL);
  printf("\n  %u swaps, %lu decisions (%lu on a, %lu on b)\n", swaps, atomic_load(&s.decisions),
         atomic_load(&s.seen[0]), atomic_load(&s.seen[1]));
  CU_ASSERT_EQUAL(atomic_load(&s.mismatches), 0);
  CU_ASSERT(atomic_load(&s.decisions) > 100);
  CU_ASSERT(atomic_load(&s.seen[0]) > 0);
  CU_ASSERT(atomic_load(&s.seen[1]) > 0);
  CU_ASSERT(swaps >= 100);
  CU_ASSERT_EQUAL(egress_checker_counter(s.c, EGRESS_COUNTER_POLICY_SWAPS), swaps);
  egress_checker_free(s.c);
  egress_policy_unref(pol[0]);
  egress_policy_unref(pol[1]);
}

/* ------------------------------------------------------------------------ */
/* 7. Allocation failure                                                     */
/* ------------------------------------------------------------------------ */

#define ALLOC_MAX_N 100000L

static void test_alloc_policy_json(void) {
  const char *json =
      "{\"executionPolicy\": {\"isolationMode\": \"x\", \"egressAllowlist\": [\"api.example.com\", "
      "\"https://svc.example.com:8443/v1/items\", \"*.example.org\", \"**.example.net:8000-8999\", "
      "\"re:^api-[0-9]+\\\\.example\\\\.com$\", \"203.0.113.0/24\", \"[2001:db8::]/32:443\", \"*\"], "
      "\"egressDenylist\": [\"bad.example.com\", \"10.0.0.0/8\"]}}";
  long n;
  bool clean = false;
  for (n = 1; n < ALLOC_MAX_N && !clean; n++) {
    egress_policy_t *p = (egress_policy_t *)(uintptr_t)1;
    char err[EGRESS_ERRBUF_SIZE] = "";
    egress__alloc_fail_at(n);
    egress_status_t st = egress_policy_from_json(json, strlen(json), &p, err, sizeof err);
    long used = egress__alloc_count();
    egress__alloc_fail_at(0);
    clean = used < n;
    if (st == EGRESS_OK) {
      CU_ASSERT_PTR_NOT_NULL(p);
      CU_ASSERT_EQUAL(egress_policy_rule_count(p, EGRESS_LIST_ALLOW), 8);
      CU_ASSERT_EQUAL(egress_policy_rule_count(p, EGRESS_LIST_DENY), 2);
      egress_policy_unref(p);
    } else {
      if (st != EGRESS_ENOMEM) printf("\n  policy n=%ld: %s (%s)\n", n, egress_status_name(st), err);
      CU_ASSERT_EQUAL(st, EGRESS_ENOMEM);
      CU_ASSERT_PTR_NULL(p);
      CU_ASSERT_FALSE(clean);
    }
  }
  CU_ASSERT(clean);
  CU_ASSERT(n > 10);
}

static void test_alloc_options(void) {
  char evpath[300];
  snprintf(evpath, sizeof evpath, "%s/alloc-events.jsonl", tmpdir);
  bool clean = false;
  for (long n = 1; n < ALLOC_MAX_N && !clean; n++) {
    egress_options_t *o = NULL;
    egress_status_t st[8];
    int k = 0;
    egress__alloc_fail_at(n);
    st[k++] = egress_options_new(&o);
    if (st[0] == EGRESS_OK) {
      st[k++] = egress_options_set_hosts_file(o, hosts_path);
      st[k++] = egress_options_set_dns_servers(o, "127.0.0.1:5353,[::1]:53");
      st[k++] = egress_options_set_event_source(o, "/test/source");
      st[k++] = egress_options_add_pref64(o, "2001:db8:64::/96");
      st[k++] = egress_options_set_event_path(o, evpath);
      st[k++] = egress_options_set_mode(o, EGRESS_MODE_MONITOR);
    }
    long used = egress__alloc_count();
    egress__alloc_fail_at(0);
    clean = used < n;
    bool all_ok = true;
    for (int i = 0; i < k; i++) {
      CU_ASSERT(st[i] == EGRESS_OK || st[i] == EGRESS_ENOMEM);
      all_ok = all_ok && st[i] == EGRESS_OK;
    }
    if (st[0] != EGRESS_OK) CU_ASSERT_PTR_NULL(o);
    if (clean) CU_ASSERT(all_ok && k == 7);
    egress_options_free(o);
  }
  CU_ASSERT(clean);
}

static void test_alloc_checker_new(void) {
  const char *allow[] = { "api.example.com", "0.0.0.0/0" };
  egress_policy_t *p = POLICY_ALLOW(allow);
  char evpath[300];
  snprintf(evpath, sizeof evpath, "%s/alloc-events.jsonl", tmpdir);
  egress_options_t *o = mkopts(NULL);
  CU_ASSERT_FATAL(egress_options_set_event_path(o, evpath) == EGRESS_OK);
  CU_ASSERT_FATAL(egress_options_set_event_source(o, "/x") == EGRESS_OK);
  CU_ASSERT_FATAL(egress_options_set_dns_servers(o, "127.0.0.1:9") == EGRESS_OK);
  bool clean = false;
  for (long n = 1; n < ALLOC_MAX_N && !clean; n++) {
    egress_checker_t *c = (egress_checker_t *)(uintptr_t)1;
    char err[EGRESS_ERRBUF_SIZE] = "";
    egress__alloc_fail_at(n);
    egress_status_t st = egress_checker_new(p, o, &c, err, sizeof err);
    long used = egress__alloc_count();
    egress__alloc_fail_at(0);
    clean = used < n;
    if (st == EGRESS_OK) {
      CU_ASSERT_PTR_NOT_NULL_FATAL(c);
      CU_ASSERT_EQUAL(egress_check(c, "8.8.8.8", 443), EGRESS_VERDICT_ALLOW);
      egress_checker_free(c);
    } else {
      if (st != EGRESS_ENOMEM) printf("\n  checker_new n=%ld: %s (%s)\n", n, egress_status_name(st), err);
      CU_ASSERT_EQUAL(st, EGRESS_ENOMEM);
      CU_ASSERT_PTR_NULL(c);
      CU_ASSERT(strlen(err) > 0);
    }
  }
  CU_ASSERT(clean);
  egress_options_free(o);
  egress_policy_unref(p);
}

/* Drive the three check calls through every N on one checker. */
static long alloc_runs;

static void alloc_checks_on(egress_checker_t *c, bool expect_events) {
  const struct {
    const char *host;
    int32_t port;
    const char *url;
  } cases[] = { { "api.example.com", 443, "https://api.example.com/v1/x" },
                { "8.8.8.8", 443, "https://8.8.8.8/" },
                { "mixed.example.com", 443, "https://mixed.example.com/" },
                { "127.0.0.1", 443, "https://127.0.0.1/" },
                { "blocked.example.com", 443, "https://blocked.example.com/" },
                { "missing.example.com", 443, "https://missing.example.com/" },
                { "0x7f.1", 443, "ftp://api.example.com/" },
                { "api.example.com", 0, "https://api.example.com:0/" } };
  egress_request_t *req = NULL;
  CU_ASSERT_FATAL(egress_request_new(&req) == EGRESS_OK);
  CU_ASSERT_FATAL(egress_request_set(req, EGRESS_FIELD_RUN_ID, "run-1") == EGRESS_OK);
  CU_ASSERT_FATAL(egress_request_set(req, EGRESS_FIELD_CORRELATION_ID, "corr-1") == EGRESS_OK);
  for (size_t i = 0; i < NELEM(cases); i++) {
    for (int call = 0; call < 3; call++) {
      /* The clean answer first. */
      egress_verdict_t clean_v;
      egress_decision_t *d = NULL;
      if (call == 0) {
        clean_v = egress_check(c, cases[i].host, (uint16_t)cases[i].port);
      } else {
        egress_status_t st = call == 1 ? egress_check_ex(c, cases[i].host, cases[i].port, req, &d)
                                       : egress_check_url(c, cases[i].url, req, &d);
        CU_ASSERT_EQUAL(st, EGRESS_OK);
        clean_v = egress_decision_verdict(d);
        egress_decision_free(d);
      }
      bool clean = false;
      long n;
      for (n = 1; n < ALLOC_MAX_N && !clean; n++) {
        alloc_runs++;
        egress_status_t st = EGRESS_OK;
        egress_verdict_t v;
        d = NULL;
        egress__alloc_fail_at(n);
        if (call == 0) {
          v = egress_check(c, cases[i].host, (uint16_t)cases[i].port);
        } else {
          st = call == 1 ? egress_check_ex(c, cases[i].host, cases[i].port, req, &d)
                         : egress_check_url(c, cases[i].url, req, &d);
          v = egress_decision_verdict(d);
        }
        long used = egress__alloc_count();
        egress__alloc_fail_at(0);
        clean = used < n;
        /* Never an allow with a non-OK status, never an allow the clean
         * run would not give. */
        if (st != EGRESS_OK) {
          CU_ASSERT_EQUAL(v, EGRESS_VERDICT_DENY);
          CU_ASSERT(d == NULL || egress_decision_outcome(d) != EGRESS_OUTCOME_ALLOWED ||
                    egress_decision_verdict(d) == EGRESS_VERDICT_DENY);
        }
        if (v == EGRESS_VERDICT_ALLOW) CU_ASSERT_EQUAL(clean_v, EGRESS_VERDICT_ALLOW);
        if (v == EGRESS_VERDICT_ALLOW && d) CU_ASSERT_EQUAL(st, EGRESS_OK);
        if (v != clean_v && clean_v == EGRESS_VERDICT_ALLOW && st == EGRESS_OK && d)
          /* A deny with OK status where the clean run allowed must say why. */
          CU_ASSERT(egress_decision_reason(d) == EGRESS_REASON_AUDIT_UNAVAILABLE ||
                    egress_decision_reason(d) == EGRESS_REASON_INTERNAL_ERROR);
        if (clean) {
          CU_ASSERT_EQUAL(v, clean_v);
          CU_ASSERT_EQUAL(st, EGRESS_OK);
        }
        egress_decision_free(d);
      }
      CU_ASSERT(clean);
      CU_ASSERT(n > 1);
    }
  }
  egress_request_free(req);
  (void)expect_events;
}

static void test_alloc_checks(void) {
  const char *allow[] = { "api.example.com", "**.example.com", "0.0.0.0/0", "::/0",
                          "https://api.example.com/v1" };
  const char *deny[] = { "blocked.example.com" };
  egress_policy_t *p = POLICY(allow, deny);
  /* No sink, a callback sink, and a callback sink with audit required. */
  cb_state_t s;
  cb_init(&s, 0);
  ck_cfg_t cfgs[] = { { .mode = EGRESS_MODE_ENFORCE },
                      { .cb = event_cb, .cb_data = &s },
                      { .cb = event_cb, .cb_data = &s, .audit = true },
                      { .cb = event_cb, .cb_data = &s, .audit = true, .mode = EGRESS_MODE_MONITOR },
                      { .mixed = EGRESS_MIXED_FILTER, .nocache = true },
                      { .cb = event_cb, .cb_data = &s, .nocache = true } };
  for (size_t i = 0; i < NELEM(cfgs); i++) {
    egress_checker_t *c = mkchecker(p, &cfgs[i]);
    alloc_checks_on(c, cfgs[i].cb != NULL);
    egress_checker_free(c);
  }
  printf("\n  %ld injected runs\n", alloc_runs);
  CU_ASSERT(alloc_runs > 500);
  egress_policy_unref(p);
  pthread_mutex_destroy(&s.lock);
}

/* ------------------------------------------------------------------------ */

/* The public lists are what the library uses: every field is written under
 * its list key and in list order, every counter is exposed under its list
 * name, and the list keys name the lists in messages. */
static void test_lists(void) {
  static const char *const keys[] = {
#define KEY_(name, value, key) key,
    EGRESS_FIELD_MAP(KEY_)
#undef KEY_
  };
  static const egress_field_t fields[] = {
#define FIELD_(name, value, key) EGRESS_FIELD_##name,
    EGRESS_FIELD_MAP(FIELD_)
#undef FIELD_
  };
  const char *allow[] = { "93.184.216.34" };
  egress_policy_t *p = NULL;
  CU_ASSERT_FATAL(egress_policy_from_entries(allow, 1, NULL, 0, &p, NULL, 0) == EGRESS_OK);
  egress_checker_t *c = mkchecker(p, NULL);
  egress_request_t *req = NULL;
  CU_ASSERT_FATAL(egress_request_new(&req) == EGRESS_OK);
  size_t n = sizeof keys / sizeof *keys;
  CU_ASSERT_EQUAL(n, 6);
  for (size_t i = 0; i < n; i++) {
    char value[64];
    snprintf(value, sizeof value, "value-of-%s", keys[i]);
    CU_ASSERT_EQUAL(egress_request_set(req, fields[i], value), EGRESS_OK);
  }
  egress_decision_t *d = NULL;
  CU_ASSERT_EQUAL(egress_check_ex(c, "93.184.216.34", 443, req, &d), EGRESS_OK);
  CU_ASSERT_STRING_EQUAL(egress_decision_message(d), "allowed by egressAllowlist[0]");
  const char *json = egress_decision_event_json(d);
  CU_ASSERT_PTR_NOT_NULL_FATAL(json);
  cJSON *ev = cJSON_Parse(json);
  const cJSON *data = cJSON_GetObjectItemCaseSensitive(ev, "data");
  CU_ASSERT_PTR_NOT_NULL_FATAL(data);
  const char *prev = NULL;
  for (size_t i = 0; i < n; i++) {
    char value[64];
    snprintf(value, sizeof value, "value-of-%s", keys[i]);
    const char *got = jstr(data, keys[i]);
    CU_ASSERT_PTR_NOT_NULL(got);
    if (got) CU_ASSERT_STRING_EQUAL(got, value);
    /* In list order within the event text. */
    const char *at = strstr(json, keys[i]);
    CU_ASSERT(at && (!prev || at > prev));
    prev = at;
  }
  cJSON_Delete(ev);
  egress_decision_free(d);
  egress_request_free(req);

  char *m = egress_checker_metrics(c);
  CU_ASSERT_PTR_NOT_NULL_FATAL(m);
  size_t counters = 0;
#define COUNTER_(name, value, prom)                                                 \
  do {                                                                              \
    char line[128];                                                                 \
    snprintf(line, sizeof line, "\n%s %llu\n", prom,                                \
             (unsigned long long)egress_checker_counter(c, EGRESS_COUNTER_##name)); \
    CU_ASSERT_PTR_NOT_NULL(strstr(m, line));                                        \
    counters++;                                                                     \
  } while (0);
  EGRESS_COUNTER_MAP(COUNTER_)
#undef COUNTER_
  CU_ASSERT_EQUAL(counters, 9);
  CU_ASSERT_EQUAL(egress_checker_counter(c, EGRESS_COUNTER_CHECKS), 1);
  /* Past the end of the list: nothing, not a neighbour's count. */
  CU_ASSERT_EQUAL(egress_checker_counter(c, (egress_counter_t)counters), 0);
  egress_free(m);
  egress_checker_free(c);
  egress_policy_unref(p);
}

static CU_TestInfo decision_tests[] = {
  { "invalid_host: hostile spellings", test_invalid_host },
  { "invalid_port", test_invalid_port },
  { "empty_allowlist", test_empty_allowlist },
  { "explicit_deny and deny-overrides", test_explicit_deny },
  { "not_in_allowlist", test_not_in_allowlist },
  { "over-long hosts are reported cut short with a marker", test_long_host_truncated },
  { "port_not_allowed", test_port_not_allowed },
  { "special_purpose_address", test_special_purpose },
  { "special-purpose literal: port_not_allowed only when opened on another port",
    test_special_literal_reason },
  { "no_such_host", test_no_such_host },
  { "resolved_address_forbidden", test_resolved_forbidden },
  { "allowed", test_allowed },
  { "URL checks: a URL entry's scheme must match", test_url_scheme },
  { "URL checks: malformed percent-encoding in the path is an invalid URL", test_url_bad_percent },
  CU_TEST_INFO_NULL,
};

static CU_TestInfo monitor_tests[] = {
  { "monitor vs enforce for every reason", test_monitor_mode },
  CU_TEST_INFO_NULL,
};

static CU_TestInfo event_tests[] = {
  { "one callback event per check", test_events_callback },
  { "JSON Lines from many threads", test_events_jsonl_threads },
  { "audit_required with failing sinks", test_audit_required },
  { "audit_required with working or no sink", test_audit_required_working_sink },
  CU_TEST_INFO_NULL,
};

static CU_TestInfo counter_tests[] = {
  { "the public field, counter and list maps are what the library writes", test_lists },
  { "counters and Prometheus text", test_counters },
  CU_TEST_INFO_NULL,
};

static CU_TestInfo swap_tests[] = {
  { "set_policy", test_set_policy },
  { "reload_file", test_reload_file },
  { "swap under load", test_swap_under_load },
  CU_TEST_INFO_NULL,
};

static CU_TestInfo alloc_tests[] = {
  { "policy_from_json", test_alloc_policy_json },
  { "options", test_alloc_options },
  { "checker_new", test_alloc_checker_new },
  { "check, check_ex, check_url", test_alloc_checks },
  CU_TEST_INFO_NULL,
};

int main(int argc, char **argv) {
  /* A closed pipe must show up as EPIPE, never kill the test: the library
   * promises that itself, so SIGPIPE keeps its default disposition here. */
  if (setup_tmp() != 0) {
    perror("temporary directory");
    return 1;
  }
  static const egress_test_suite_t suites[] = {
    { "checker_decisions", NULL, NULL, decision_tests },
    { "checker_monitor", NULL, NULL, monitor_tests },
    { "checker_events", NULL, NULL, event_tests },
    { "checker_counters", NULL, NULL, counter_tests },
    { "checker_policy_swap", NULL, NULL, swap_tests },
    { "checker_alloc_failure", NULL, NULL, alloc_tests },
    { NULL, NULL, NULL, NULL },
  };
  int rc = egress_test_main(argc, argv, suites);
  cleanup_tmp();
  return rc;
}
