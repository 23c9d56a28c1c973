/*
 * Checks on a caller's event loop (egress_loop_*, egress_check_start;
 * docs/async.md), driven by a plain poll() loop of this file, against the
 * loopback responder:
 *
 *  - differential: every input of the held corpora and of a hostile list
 *    gets the same status, decision and event (apart from id, time and
 *    timings) from egress_check_start as from egress_check_ex, and from
 *    egress_check_url_start as from egress_check_url, DNS faults included;
 *  - single flight between an asynchronous and a blocking miss, both ways
 *    round, counted at the responder;
 *  - cancellation in every state, from inside callbacks, loop free with
 *    checks in flight (also more than the driver puts on the wire at once);
 *  - one callback and one event per started check, always.
 */
#include "egress.h"
#include "responder.h"
#include "testutil.h"

#include <cjson/cJSON.h>
#include <dirent.h>
#include <math.h>
#include <poll.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

static egress_dns_responder_t *dns;
static char dns_csv[64];
static atomic_int events; /* events the checkers emitted */

static double now_ms(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec * 1e3 + (double)ts.tv_nsec / 1e6;
}

/* ---------- the zone ---------- */

/* A name the responder answers with a public address after @p delay_ms. */
static void slow_name(const char *name, unsigned delay_ms) {
  egress_dns_add_a(dns, name, "93.184.216.34", 60);
  if (delay_ms) egress_dns_set_delay_ms(dns, name, delay_ms);
}

static void zone(void) {
  egress_dns_add_a(dns, "pub.ok.test", "93.184.216.34", 60);
  egress_dns_add_aaaa(dns, "pub.ok.test", "2606:2800:220:1:248:1893:25c8:1946", 300);
  egress_dns_add_a(dns, "priv.ok.test", "10.0.0.5", 60);
  egress_dns_add_a(dns, "lo.ok.test", "127.0.0.1", 60);
  egress_dns_add_a(dns, "meta.ok.test", "169.254.169.254", 60);
  egress_dns_add_a(dns, "mixed.ok.test", "8.8.8.8", 60);
  egress_dns_add_a(dns, "mixed.ok.test", "10.1.2.3", 60);
  egress_dns_add_aaaa(dns, "v6lo.ok.test", "::1", 60);
  egress_dns_add_aaaa(dns, "mapped.ok.test", "::ffff:127.0.0.1", 60);
  egress_dns_add_cname(dns, "alias.ok.test", "lo.ok.test", 60);
  egress_dns_add_a(dns, "api.ok.test", "93.184.216.35", 60);
  egress_dns_set_rcode(dns, "servfail.ok.test", EGRESS_DNS_SERVFAIL);
  egress_dns_set_rcode(dns, "nx.ok.test", EGRESS_DNS_NXDOMAIN);
  egress_dns_set_rcode(dns, "refused.ok.test", EGRESS_DNS_REFUSED);
  egress_dns_add_a(dns, "silent.ok.test", "93.184.216.34", 60);
  egress_dns_set_drop(dns, "silent.ok.test", true);
  egress_dns_add_a(dns, "trunc.ok.test", "93.184.216.34", 60);
  egress_dns_set_truncate(dns, "trunc.ok.test", true);
  egress_dns_add_a(dns, "bad.ok.test", "93.184.216.34", 60);
  egress_dns_set_malformed(dns, "bad.ok.test", EGRESS_DNS_MALFORMED_LOOP);
  egress_dns_add_a(dns, "wrongid.ok.test", "93.184.216.34", 60);
  egress_dns_set_wrong_id(dns, "wrongid.ok.test", true);
  egress_dns_add_a(dns, "wrongname.ok.test", "93.184.216.34", 60);
  egress_dns_set_wrong_name(dns, "wrongname.ok.test", true);
  slow_name("slowfail.ok.test", 5000);
  /* More addresses than a decision holds inline: a heap array. */
  for (int i = 1; i <= 6; i++) {
    char a[16];
    snprintf(a, sizeof a, "10.6.0.%d", i);
    egress_dns_add_a(dns, "many.ok.test", a, 60);
  }
}

static int init_suite(void) {
  dns = egress_dns_start("127.0.0.1");
  if (!dns) return -1;
  egress_dns_server_csv(dns, dns_csv, sizeof dns_csv);
  zone();
  return 0;
}

static int clean_suite(void) {
  egress_dns_stop(dns);
  return 0;
}

static int count_event(const char *json, size_t len, const egress_decision_t *d, void *user) {
  (void)json, (void)len, (void)d, (void)user;
  atomic_fetch_add(&events, 1);
  return 0;
}

static egress_checker_t *checker_new(uint32_t timeout_ms, uint32_t cache_entries, egress_mode_t mode) {
  const char *allow[] = { "**.ok.test", "https://api.ok.test", "10.0.0.0/8:443", "*.ok.test:8443",
                          "2001:db8::/32" };
  const char *deny[] = { "deny.ok.test", "169.254.0.0/16" };
  egress_policy_t *p = NULL;
  egress_options_t *o = NULL;
  egress_checker_t *c = NULL;
  char err[256];
  if (egress_policy_from_entries(allow, 5, deny, 2, &p, err, sizeof err) != EGRESS_OK) {
    fprintf(stderr, "policy: %s\n", err);
    return NULL;
  }
  if (egress_options_new(&o) == EGRESS_OK && egress_options_set_dns_servers(o, dns_csv) == EGRESS_OK &&
      egress_options_set_timeout_ms(o, timeout_ms) == EGRESS_OK &&
      egress_options_set_cache(o, cache_entries, 5, 300, 5) == EGRESS_OK &&
      egress_options_set_mode(o, mode) == EGRESS_OK &&
      egress_options_set_event_callback(o, count_event, NULL) == EGRESS_OK) {
    if (egress_checker_new(p, o, &c, err, sizeof err) != EGRESS_OK) c = NULL;
  }
  egress_options_free(o);
  egress_policy_unref(p);
  return c;
}

/* ---------- a poll() loop ---------- */

#define MAXFDS 64

typedef struct driver {
  egress_loop_t *loop;
  struct pollfd fds[MAXFDS];
  int nfds;
  int watch_calls;
} driver_t;

static void on_watch(int fd, bool readable, bool writable, void *user) {
  driver_t *d = user;
  d->watch_calls++;
  int i = 0;
  while (i < d->nfds && d->fds[i].fd != fd) i++;
  if (!readable && !writable) {
    CU_ASSERT(i < d->nfds); /* never unwatch what was not watched */
    if (i < d->nfds) d->fds[i] = d->fds[--d->nfds];
    return;
  }
  if (i == d->nfds) {
    CU_ASSERT_FATAL(d->nfds < MAXFDS);
    d->nfds++;
  }
  d->fds[i] =
      (struct pollfd){ .fd = fd, .events = (short)((readable ? POLLIN : 0) | (writable ? POLLOUT : 0)) };
}

static void driver_open(driver_t *d, egress_checker_t *c) {
  memset(d, 0, sizeof *d);
  CU_ASSERT_FATAL(egress_loop_new(c, on_watch, d, &d->loop) == EGRESS_OK);
  CU_ASSERT_EQUAL(d->nfds, 1); /* the wake-up descriptor, at once */
}

static void driver_free(driver_t *d) {
  egress_loop_free(d->loop);
  d->loop = NULL;
  CU_ASSERT_EQUAL(d->nfds, 0); /* everything it watched, unwatched */
}

/* A checker (3 s DNS time-out) and a driver on it; fixture_close frees both. */
static egress_checker_t *fixture_open(driver_t *drv) {
  egress_checker_t *c = checker_new(3000, 64, EGRESS_MODE_ENFORCE);
  CU_ASSERT_FATAL(c != NULL);
  driver_open(drv, c);
  return c;
}

static void fixture_close(driver_t *drv, egress_checker_t *c) {
  if (drv->loop) driver_free(drv);
  egress_checker_free(c);
}

/* One turn: wait for what the driver asked, report it.  Returns false when
 * the driver waits for nothing (no timeout, no check). */
static bool driver_turn(driver_t *d, int max_wait_ms) {
  int t = egress_loop_timeout(d->loop);
  if (t < 0 && egress_loop_pending(d->loop) == 0) return false;
  int wait = t < 0 || t > max_wait_ms ? max_wait_ms : t;
  struct pollfd fds[MAXFDS];
  int n = d->nfds;
  memcpy(fds, d->fds, sizeof fds[0] * (size_t)n);
  int got = poll(fds, (nfds_t)n, wait);
  CU_ASSERT(got >= 0);
  for (int i = 0; i < n && got > 0; i++) {
    if (!fds[i].revents) continue;
    bool err = fds[i].revents & (POLLERR | POLLHUP | POLLNVAL);
    CU_ASSERT(egress_loop_process(d->loop, fds[i].fd, err || (fds[i].revents & POLLIN),
                                  err || (fds[i].revents & POLLOUT)) == EGRESS_OK);
    if (!d->loop) return false; /* a callback freed it */
  }
  if (got == 0 && d->loop) CU_ASSERT(egress_loop_process(d->loop, -1, false, false) == EGRESS_OK);
  return d->loop != NULL;
}

/* Drive until no check is pending or @p max_ms passed; true when done. */
static bool drive(driver_t *d, double max_ms) {
  double end = now_ms() + max_ms;
  while (d->loop && egress_loop_pending(d->loop) > 0 && now_ms() < end) driver_turn(d, 50);
  return !d->loop || egress_loop_pending(d->loop) == 0;
}

/* ---------- callbacks ---------- */

typedef struct slot {
  int calls;
  egress_status_t status;
  egress_decision_t *d; /* kept when keep is set */
  bool keep;
  egress_reason_t reason;
  egress_verdict_t verdict;
  void (*then)(struct slot *);
  void *arg;
} slot_t;

static void on_done(egress_status_t st, egress_decision_t *d, void *user) {
  slot_t *s = user;
  CU_ASSERT_PTR_NOT_NULL_FATAL(d);
  s->calls++;
  s->status = st;
  s->reason = egress_decision_reason(d);
  s->verdict = egress_decision_verdict(d);
  if (s->keep && !s->d)
    s->d = d;
  else
    egress_decision_free(d);
  if (s->then) s->then(s);
}

/* ---------- differential ---------- */

/* Equal JSON apart from the fields that say when or how long: id, time,
 * dnsMs, latencyMs; a TTL may have ticked by one second in between. */
static bool same_json(const cJSON *a, const cJSON *b, const char *key) {
  if (key &&
      (!strcmp(key, "id") || !strcmp(key, "time") || !strcmp(key, "dnsMs") || !strcmp(key, "latencyMs")))
    return true;
  if (key && !strcmp(key, "ttl") && cJSON_IsNumber(a) && cJSON_IsNumber(b))
    return fabs(a->valuedouble - b->valuedouble) <= 1.0;
  if ((a->type & 0xff) != (b->type & 0xff)) return false;
  if (cJSON_IsObject(a) || cJSON_IsArray(a)) {
    if (cJSON_GetArraySize(a) != cJSON_GetArraySize(b)) return false;
    const cJSON *y = b->child;
    for (const cJSON *x = a->child; x; x = x->next, y = y->next) {
      if (cJSON_IsObject(a) && strcmp(x->string, y->string) != 0) return false;
      if (!same_json(x, y, cJSON_IsObject(a) ? x->string : NULL)) return false;
    }
    return true;
  }
  return cJSON_Compare(a, b, true);
}

static bool same_text(const char *a, const char *b) {
  if (!a || !b) return a == b;
  cJSON *ja = cJSON_Parse(a), *jb = cJSON_Parse(b);
  bool same = ja && jb && same_json(ja, jb, NULL);
  cJSON_Delete(ja);
  cJSON_Delete(jb);
  return same;
}

typedef struct diff {
  egress_checker_t *blocking, *async;
  driver_t drv;
  egress_request_t *req;
  size_t inputs, mismatches;
} diff_t;

static void compare_one(diff_t *df, const char *host, int32_t port, const char *url) {
  egress_decision_t *bd = NULL;
  egress_status_t bst = url ? egress_check_url(df->blocking, url, df->req, &bd)
                            : egress_check_ex(df->blocking, host, port, df->req, &bd);
  slot_t s = { .keep = true };
  egress_pending_t *pending = NULL;
  egress_status_t st = url ? egress_check_url_start(df->drv.loop, url, df->req, on_done, &s, &pending)
                           : egress_check_start(df->drv.loop, host, port, df->req, on_done, &s, &pending);
  CU_ASSERT_EQUAL(st, EGRESS_OK);
  CU_ASSERT((s.calls == 1) == (pending == NULL)); /* handle only while in flight */
  CU_ASSERT(drive(&df->drv, 10000));
  CU_ASSERT_EQUAL(s.calls, 1);
  df->inputs++;
  bool same = s.calls == 1 && s.status == bst && s.d && bd &&
              same_text(egress_decision_event_json(s.d), egress_decision_event_json(bd));
  char *aj = s.d ? egress_decision_to_json(s.d) : NULL, *bj = bd ? egress_decision_to_json(bd) : NULL;
  same = same && same_text(aj, bj);
  if (!same) {
    df->mismatches++;
    if (df->mismatches <= 5)
      fprintf(stderr, "async differs from blocking for %s%s (port %d):\n  async    %s\n  blocking %s\n",
              url ? "URL " : "", url ? url : host, (int)port,
              s.d ? egress_decision_event_json(s.d) : "(none)",
              bd ? egress_decision_event_json(bd) : "(none)");
  }
  egress_free(aj);
  egress_free(bj);
  egress_decision_free(s.d);
  egress_decision_free(bd);
}

/* The held corpus files of a fuzz target, each as one input. */
static void compare_corpus(diff_t *df, const char *dir, bool as_url) {
  char path[1024], file[1300];
  egress_test_path(dir, path, sizeof path);
  DIR *dh = opendir(path);
  CU_ASSERT_PTR_NOT_NULL_FATAL(dh);
  size_t files = 0;
  for (struct dirent *e; (e = readdir(dh));) {
    if (e->d_name[0] == '.') continue;
    snprintf(file, sizeof file, "%s/%s", path, e->d_name);
    FILE *f = fopen(file, "rb");
    if (!f) continue;
    char buf[4096];
    size_t n = fread(buf, 1, sizeof buf - 1, f);
    fclose(f);
    buf[n] = '\0';
    files++;
    if (as_url) {
      compare_one(df, NULL, 0, buf);
    } else {
      compare_one(df, buf, 443, NULL);
      compare_one(df, buf, 8443, NULL);
    }
  }
  closedir(dh);
  CU_ASSERT(files > 50); /* the corpus is there */
}

static const char *hostile_hosts[] = {
  "pub.ok.test",
  "PUB.OK.TEST.",
  "priv.ok.test",
  "lo.ok.test",
  "meta.ok.test",
  "mixed.ok.test",
  "v6lo.ok.test",
  "mapped.ok.test",
  "alias.ok.test",
  "api.ok.test",
  "deny.ok.test",
  "nx.ok.test",
  "servfail.ok.test",
  "refused.ok.test",
  "trunc.ok.test",
  "bad.ok.test",
  "wrongid.ok.test",
  "wrongname.ok.test",
  "silent.ok.test",
  "other.test",
  "localhost",
  "LOCALHOST.",
  "x.localhost",
  "127.0.0.1",
  "0x7f.1",
  "2130706433",
  "0177.0.0.1",
  "127.1",
  "10.0.0.5",
  "10.0.0.5 ",
  "169.254.169.254",
  "[::1]",
  "::1",
  "::ffff:10.0.0.5",
  "[2001:db8::1]",
  "2001:db8::1",
  "fe80::1%eth0",
  "0.0.0.0",
  "",
  "a..ok.test",
  "-a.ok.test",
  "a_b.ok.test",
  "xn--nxasmq6b.ok.test",
  "\xce\xb2\xce\xb5.ok.test",
  "pub.ok.test:443",
  "user@pub.ok.test",
  "pub.ok.test/path",
  "pub.ok.test\r\nX: y",
  "pub.ok.test\x7f",
  "*.ok.test",
  "%70ub.ok.test",
  NULL,
};

static const char *hostile_urls[] = {
  "https://api.ok.test/",
  "https://api.ok.test:8443/x",
  "http://api.ok.test/",
  "https://pub.ok.test/a?b#c",
  "https://user:pw@pub.ok.test/",
  "https://[::1]/",
  "https://127.0.0.1/",
  "https://lo.ok.test/",
  "https://169.254.169.254/latest/meta-data",
  "https://pub.ok.test%2f@evil.test/",
  "https://pub.ok.test\\@evil.test/",
  "ftp://pub.ok.test/",
  "https:///",
  "https://pub.ok.test:0/",
  "https://pub.ok.test:99999/",
  "//pub.ok.test/",
  "https://silent.ok.test/",
  "https://nx.ok.test/",
  "",
  NULL,
};

static void diff_open(diff_t *df, uint32_t timeout_ms, egress_mode_t mode) {
  memset(df, 0, sizeof *df);
  df->blocking = checker_new(timeout_ms, 0, mode);
  df->async = checker_new(timeout_ms, 0, mode);
  CU_ASSERT_FATAL(df->blocking && df->async);
  driver_open(&df->drv, df->async);
  CU_ASSERT_FATAL(egress_request_new(&df->req) == EGRESS_OK);
  CU_ASSERT(egress_request_set(df->req, EGRESS_FIELD_CORRELATION_ID, "c-1") == EGRESS_OK);
  CU_ASSERT(egress_request_set(df->req, EGRESS_FIELD_METHOD, "POST") == EGRESS_OK);
}

static void diff_close(diff_t *df) {
  driver_free(&df->drv);
  egress_request_free(df->req);
  egress_checker_free(df->blocking);
  egress_checker_free(df->async);
  CU_ASSERT_EQUAL(df->mismatches, 0);
}

static void test_differential_hostile(void) {
  const int32_t ports[] = { 443, 8443, 80, 0, -1, 65536 };
  egress_mode_t modes[] = { EGRESS_MODE_ENFORCE, EGRESS_MODE_MONITOR };
  for (int m = 0; m < 2; m++) {
    diff_t df;
    diff_open(&df, 600, modes[m]);
    for (size_t i = 0; hostile_hosts[i]; i++)
      for (size_t p = 0; p < sizeof ports / sizeof ports[0]; p++)
        compare_one(&df, hostile_hosts[i], ports[p], NULL);
    for (size_t i = 0; hostile_urls[i]; i++) compare_one(&df, NULL, 0, hostile_urls[i]);
    /* A request the caller refused is recorded, never resolved. */
    CU_ASSERT(egress_request_refuse(df.req, EGRESS_REASON_INVALID_HOST, "refused by the worker") ==
              EGRESS_OK);
    compare_one(&df, "pub.ok.test", 443, NULL);
    compare_one(&df, NULL, 0, "https://api.ok.test/");
    compare_one(&df, NULL, 443, NULL);
    CU_ASSERT(df.inputs > 300);
    diff_close(&df);
  }
}

static void test_differential_corpora(void) {
  diff_t df;
  diff_open(&df, 600, EGRESS_MODE_ENFORCE);
  compare_corpus(&df, "fuzz/corpus/url", true);
  compare_corpus(&df, "fuzz/corpus/canon", false);
  diff_close(&df);
}

/* The differential compares like with like; a test of the comparison
 * itself shows it notices a different decision. */
static void test_differential_notices(void) {
  CU_ASSERT_TRUE(same_text("{\"a\":1,\"id\":\"x\",\"data\":{\"ttl\":5,\"dnsMs\":3}}",
                           "{\"a\":1,\"id\":\"y\",\"data\":{\"ttl\":4,\"dnsMs\":9}}"));
  CU_ASSERT_FALSE(same_text("{\"a\":1}", "{\"a\":2}"));
  CU_ASSERT_FALSE(same_text("{\"data\":{\"ttl\":5}}", "{\"data\":{\"ttl\":7}}"));
  CU_ASSERT_FALSE(same_text("{\"a\":[1,2]}", "{\"a\":[1]}"));
  CU_ASSERT_FALSE(same_text("{\"a\":1,\"b\":2}", "{\"b\":2,\"a\":1}"));
}

/* ---------- DNS faults ---------- */

static void test_dns_faults(void) {
  static const char *faults[] = { "servfail.ok.test", "refused.ok.test", "nx.ok.test",
                                  "bad.ok.test",      "wrongid.ok.test", "wrongname.ok.test",
                                  "silent.ok.test",   "slowfail.ok.test" };
  egress_checker_t *c = checker_new(500, 64, EGRESS_MODE_ENFORCE);
  CU_ASSERT_FATAL(c != NULL);
  driver_t drv;
  driver_open(&drv, c);
  for (size_t i = 0; i < sizeof faults / sizeof faults[0]; i++) {
    slot_t s = { 0 };
    double t0 = now_ms();
    CU_ASSERT_EQUAL(egress_check_start(drv.loop, faults[i], 443, NULL, on_done, &s, NULL), EGRESS_OK);
    CU_ASSERT(drive(&drv, 3000));
    double took = now_ms() - t0;
    CU_ASSERT_EQUAL(s.calls, 1);
    CU_ASSERT_EQUAL(s.status, EGRESS_OK);
    CU_ASSERT_EQUAL(s.verdict, EGRESS_VERDICT_DENY); /* fails closed */
    CU_ASSERT(s.reason == EGRESS_REASON_DNS_UNAVAILABLE || s.reason == EGRESS_REASON_NO_SUCH_HOST);
    CU_ASSERT(took < 500 + 400); /* the check's deadline, not c-ares's */
    if (s.verdict != EGRESS_VERDICT_DENY) fprintf(stderr, "fault %s allowed\n", faults[i]);
  }
  /* A cached failure answers inline the second time, still a deny. */
  slot_t s = { 0 };
  egress_pending_t *pending = (egress_pending_t *)&s;
  CU_ASSERT_EQUAL(egress_check_start(drv.loop, "nx.ok.test", 443, NULL, on_done, &s, &pending), EGRESS_OK);
  CU_ASSERT_EQUAL(s.calls, 1);
  CU_ASSERT_PTR_NULL(pending);
  CU_ASSERT_EQUAL(s.reason, EGRESS_REASON_NO_SUCH_HOST);
  fixture_close(&drv, c);
}

/* ---------- the fast path ---------- */

static void test_inline_completion(void) {
  egress_checker_t *c = checker_new(2000, 64, EGRESS_MODE_ENFORCE);
  CU_ASSERT_FATAL(c != NULL);
  driver_t drv;
  driver_open(&drv, c);
  egress_decision_t *warm = NULL;
  CU_ASSERT(egress_check_ex(c, "pub.ok.test", 443, NULL, &warm) == EGRESS_OK);
  CU_ASSERT_EQUAL(egress_decision_verdict(warm), EGRESS_VERDICT_ALLOW);
  egress_decision_free(warm);
  unsigned queries = egress_dns_total_queries(dns);
  struct {
    const char *host;
    int32_t port;
    egress_verdict_t verdict;
  } inline_cases[] = {
    { "pub.ok.test", 443, EGRESS_VERDICT_ALLOW },  /* cached */
    { "93.184.216.34", 443, EGRESS_VERDICT_DENY }, /* literal outside the CIDRs */
    { "10.9.9.9", 443, EGRESS_VERDICT_ALLOW },     /* literal inside one */
    { "deny.ok.test", 443, EGRESS_VERDICT_DENY },  /* policy denial */
    { "other.test", 443, EGRESS_VERDICT_DENY },    /* not listed */
    { "pub.ok.test", 0, EGRESS_VERDICT_DENY },     /* bad port */
    { "a..ok.test", 443, EGRESS_VERDICT_DENY },    /* bad host */
    { "localhost", 443, EGRESS_VERDICT_DENY },     /* never asked of DNS */
  };
  for (size_t i = 0; i < sizeof inline_cases / sizeof inline_cases[0]; i++) {
    slot_t s = { 0 };
    egress_pending_t *pending = (egress_pending_t *)&s;
    CU_ASSERT_EQUAL(
        egress_check_start(drv.loop, inline_cases[i].host, inline_cases[i].port, NULL, on_done, &s, &pending),
        EGRESS_OK);
    CU_ASSERT_EQUAL(s.calls, 1);
    CU_ASSERT_PTR_NULL(pending);
    CU_ASSERT_EQUAL(s.verdict, inline_cases[i].verdict);
  }
  CU_ASSERT_EQUAL(egress_dns_total_queries(dns), queries); /* none needed DNS */
  CU_ASSERT_EQUAL(egress_loop_pending(drv.loop), 0);
  CU_ASSERT_EQUAL(egress_loop_timeout(drv.loop), -1);
  /* Bad arguments: refused, and the callback never runs. */
  slot_t s = { 0 };
  CU_ASSERT_EQUAL(egress_check_start(NULL, "pub.ok.test", 443, NULL, on_done, &s, NULL), EGRESS_EINVAL);
  CU_ASSERT_EQUAL(egress_check_start(drv.loop, "pub.ok.test", 443, NULL, NULL, &s, NULL), EGRESS_EINVAL);
  CU_ASSERT_EQUAL(egress_check_url_start(drv.loop, "https://pub.ok.test/", NULL, NULL, &s, NULL),
                  EGRESS_EINVAL);
  CU_ASSERT_EQUAL(egress_check_cancel(NULL), EGRESS_EINVAL);
  CU_ASSERT_EQUAL(egress_loop_process(NULL, -1, false, false), EGRESS_EINVAL);
  CU_ASSERT_EQUAL(egress_loop_timeout(NULL), -1);
  CU_ASSERT_EQUAL(s.calls, 0);
  fixture_close(&drv, c);
}

/* ---------- recycled decisions ---------- */

/* The decision a blocking check of the same input makes, as JSON. */
static char *blocking_json(egress_checker_t *c, const char *host, int32_t port, const char *url) {
  egress_decision_t *d = NULL;
  egress_status_t st = url ? egress_check_url(c, url, NULL, &d) : egress_check_ex(c, host, port, NULL, &d);
  CU_ASSERT_EQUAL(st, EGRESS_OK);
  char *json = egress_decision_to_json(d);
  egress_decision_free(d);
  return json;
}

/* Start one inline check; the decision, kept. */
static egress_decision_t *start_kept(driver_t *drv, const char *host, int32_t port, const char *url) {
  slot_t s = { .keep = true };
  egress_status_t st = url ? egress_check_url_start(drv->loop, url, NULL, on_done, &s, NULL)
                           : egress_check_start(drv->loop, host, port, NULL, on_done, &s, NULL);
  CU_ASSERT_EQUAL(st, EGRESS_OK);
  CU_ASSERT_EQUAL(s.calls, 1);
  CU_ASSERT_PTR_NOT_NULL_FATAL(s.d);
  return s.d;
}

static void test_recycle(void) {
  driver_t drv;
  egress_checker_t *c = fixture_open(&drv);
  egress_decision_t *warm = NULL;
  CU_ASSERT(egress_check_ex(c, "many.ok.test", 443, NULL, &warm) == EGRESS_OK);
  CU_ASSERT_EQUAL(egress_decision_address_count(warm), 6);
  egress_decision_free(warm);

  /* A decision full of a URL check and six addresses, handed back, comes
   * back for the next check with nothing of it left: every field and the
   * event as a fresh decision's. */
  egress_decision_t *first = start_kept(&drv, NULL, 0, "https://many.ok.test/v1?q=1");
  CU_ASSERT_EQUAL(egress_decision_address_count(first), 6);
  CU_ASSERT_PTR_NOT_NULL(egress_decision_url(first));
  cJSON *first_event = cJSON_Parse(egress_decision_event_json(first));
  CU_ASSERT_PTR_NOT_NULL_FATAL(first_event);
  egress_loop_recycle(drv.loop, first);
  const struct {
    const char *host;
    int32_t port;
    const char *url;
  } next[] = {
    { "93.184.216.34", 443, NULL },       /* a literal outside the policy */
    { "10.9.9.9", 443, NULL },            /* a literal inside it */
    { "a..ok.test", 443, NULL },          /* an invalid host */
    { "many.ok.test", 8443, NULL },       /* six addresses again */
    { NULL, 0, "https://10.1.2.3:443/x" } /* a URL */
  };
  for (size_t i = 0; i < sizeof next / sizeof next[0]; i++) {
    egress_decision_t *d = start_kept(&drv, next[i].host, next[i].port, next[i].url);
    CU_ASSERT_PTR_EQUAL(d, first); /* the one handed back, filled again */
    char *got = egress_decision_to_json(d), *want = blocking_json(c, next[i].host, next[i].port, next[i].url);
    CU_ASSERT_PTR_NOT_NULL_FATAL(got);
    CU_ASSERT_PTR_NOT_NULL_FATAL(want);
    CU_ASSERT(same_text(got, want)); /* remaining TTLs may tick down a second between the two */
    free(got);
    free(want);
    cJSON *ev = cJSON_Parse(egress_decision_event_json(d));
    CU_ASSERT_PTR_NOT_NULL_FATAL(ev);
    cJSON *data = cJSON_GetObjectItemCaseSensitive(ev, "data");
    CU_ASSERT_EQUAL(cJSON_GetObjectItemCaseSensitive(data, "url") != NULL, next[i].url != NULL);
    CU_ASSERT_STRING_NOT_EQUAL(cJSON_GetObjectItemCaseSensitive(ev, "id")->valuestring,
                               cJSON_GetObjectItemCaseSensitive(first_event, "id")->valuestring);
    cJSON_Delete(ev);
    egress_loop_recycle(drv.loop, d);
  }
  cJSON_Delete(first_event);

  /* Any decision of the library will do.  With the one handed back above
   * the loop is given seven: it keeps four, frees three at once (the leak
   * checks of the sanitizer and valgrind runs see one lost), and hands the
   * four out before it makes a new one. */
  egress_decision_t *given[6] = { 0 };
  for (int i = 0; i < 6; i++) CU_ASSERT_FATAL(egress_decision_new(&given[i]) == EGRESS_OK);
  for (int i = 0; i < 6; i++) egress_loop_recycle(drv.loop, given[i]);
  egress_decision_t *out[4];
  for (int i = 0; i < 4; i++) {
    out[i] = start_kept(&drv, "10.9.9.9", 443, NULL);
    bool handed = out[i] == first;
    for (int k = 0; k < 3; k++) handed = handed || out[i] == given[k];
    CU_ASSERT(handed);
    CU_ASSERT_EQUAL(egress_decision_verdict(out[i]), EGRESS_VERDICT_ALLOW);
  }
  egress_decision_t *fresh = start_kept(&drv, "10.9.9.9", 443, NULL);
  for (int i = 0; i < 4; i++) CU_ASSERT_PTR_NOT_EQUAL(fresh, out[i]);
  for (int i = 0; i < 4; i++) egress_decision_free(out[i]);

  /* NULL decision: nothing; NULL loop: freed. */
  egress_loop_recycle(drv.loop, NULL);
  egress_loop_recycle(NULL, NULL);
  egress_loop_recycle(NULL, fresh);

  /* Spares still held go with the loop. */
  egress_loop_recycle(drv.loop, start_kept(&drv, "10.9.9.9", 443, NULL));
  fixture_close(&drv, c);
}

/* ---------- single flight ---------- */

typedef struct blocking_call {
  egress_checker_t *c;
  const char *host;
  egress_verdict_t verdict;
} blocking_call_t;

static void *blocking_thread(void *arg) {
  blocking_call_t *b = arg;
  egress_decision_t *d = NULL;
  if (egress_check_ex(b->c, b->host, 443, NULL, &d) == EGRESS_OK) b->verdict = egress_decision_verdict(d);
  egress_decision_free(d);
  return NULL;
}

static void wait_for_query(const char *name, unsigned n) {
  for (int i = 0; i < 400 && egress_dns_query_count_type(dns, name, 1) < n; i++) usleep(5000);
  CU_ASSERT_EQUAL(egress_dns_query_count_type(dns, name, 1), n);
}

/* The asynchronous miss leads; a blocking miss on the same name joins it. */
static void test_single_flight_async_leads(void) {
  const char *name = "sf1.ok.test";
  slow_name(name, 300);
  driver_t drv;
  egress_checker_t *c = fixture_open(&drv);
  slot_t s = { 0 };
  CU_ASSERT_EQUAL(egress_check_start(drv.loop, name, 443, NULL, on_done, &s, NULL), EGRESS_OK);
  CU_ASSERT_EQUAL(s.calls, 0);
  /* Put the query on the wire before the blocking caller comes. */
  for (int i = 0; i < 5; i++) driver_turn(&drv, 10);
  wait_for_query(name, 1);
  blocking_call_t b = { .c = c, .host = name, .verdict = EGRESS_VERDICT_DENY };
  pthread_t t;
  CU_ASSERT_FATAL(pthread_create(&t, NULL, blocking_thread, &b) == 0);
  CU_ASSERT(drive(&drv, 5000));
  pthread_join(t, NULL);
  CU_ASSERT_EQUAL(s.calls, 1);
  CU_ASSERT_EQUAL(s.verdict, EGRESS_VERDICT_ALLOW);
  CU_ASSERT_EQUAL(b.verdict, EGRESS_VERDICT_ALLOW);
  CU_ASSERT_EQUAL(egress_dns_query_count_type(dns, name, 1), 1); /* one A query for both */
  fixture_close(&drv, c);
}

/* A blocking miss leads; the asynchronous check joins it, and its answer
 * reaches the loop through the wake-up descriptor. */
static void test_single_flight_blocking_leads(void) {
  const char *name = "sf2.ok.test";
  slow_name(name, 300);
  driver_t drv;
  egress_checker_t *c = fixture_open(&drv);
  blocking_call_t b = { .c = c, .host = name, .verdict = EGRESS_VERDICT_DENY };
  pthread_t t;
  CU_ASSERT_FATAL(pthread_create(&t, NULL, blocking_thread, &b) == 0);
  wait_for_query(name, 1);
  slot_t s[3] = { { 0 } };
  for (int i = 0; i < 3; i++)
    CU_ASSERT_EQUAL(egress_check_start(drv.loop, name, 443, NULL, on_done, &s[i], NULL), EGRESS_OK);
  CU_ASSERT(drive(&drv, 5000));
  pthread_join(t, NULL);
  for (int i = 0; i < 3; i++) {
    CU_ASSERT_EQUAL(s[i].calls, 1);
    CU_ASSERT_EQUAL(s[i].verdict, EGRESS_VERDICT_ALLOW);
  }
  CU_ASSERT_EQUAL(b.verdict, EGRESS_VERDICT_ALLOW);
  CU_ASSERT_EQUAL(egress_dns_query_count_type(dns, name, 1), 1);
  fixture_close(&drv, c);
}

/* A blocking check made on the thread that drives the loop leading the
 * same name's lookup cannot be answered while it waits (nothing drives the
 * loop): it must end at its own deadline, dns_unavailable, not hang; the
 * loop's check still gets its answer afterwards. */
static void test_blocking_join_on_loop_thread(void) {
  const char *name = "selfjoin.ok.test";
  slow_name(name, 300);
  egress_checker_t *c = checker_new(1000, 64, EGRESS_MODE_ENFORCE);
  CU_ASSERT_FATAL(c != NULL);
  driver_t drv;
  driver_open(&drv, c);
  slot_t s = { 0 };
  CU_ASSERT_EQUAL(egress_check_start(drv.loop, name, 443, NULL, on_done, &s, NULL), EGRESS_OK);
  for (int i = 0; i < 5; i++) driver_turn(&drv, 10);
  wait_for_query(name, 1);
  double t0 = now_ms();
  egress_decision_t *d = NULL;
  CU_ASSERT_EQUAL(egress_check_ex(c, name, 443, NULL, &d), EGRESS_OK);
  double took = now_ms() - t0;
  CU_ASSERT_EQUAL(egress_decision_reason(d), EGRESS_REASON_DNS_UNAVAILABLE);
  CU_ASSERT_EQUAL(egress_decision_verdict(d), EGRESS_VERDICT_DENY);
  CU_ASSERT(took >= 900 && took < 2500);
  egress_decision_free(d);
  CU_ASSERT(drive(&drv, 5000));
  CU_ASSERT_EQUAL(s.calls, 1);
  CU_ASSERT_EQUAL(s.verdict, EGRESS_VERDICT_ALLOW);
  driver_free(&drv);
  egress_checker_free(c);
}

/* Two loops on one thread share a checker; the second's check joins the
 * first's lookup.  The answer comes in while the first loop processes, on
 * the thread that also drives the second: the second must still be woken. */
static void test_two_loops_one_thread(void) {
  const char *name = "twoloops.ok.test";
  slow_name(name, 200);
  driver_t a, b;
  egress_checker_t *c = fixture_open(&a);
  driver_open(&b, c);
  slot_t sa = { 0 }, sb = { 0 };
  CU_ASSERT_EQUAL(egress_check_start(a.loop, name, 443, NULL, on_done, &sa, NULL), EGRESS_OK);
  CU_ASSERT_EQUAL(egress_check_start(b.loop, name, 443, NULL, on_done, &sb, NULL), EGRESS_OK);
  double end = now_ms() + 2500;
  while ((sa.calls == 0 || sb.calls == 0) && now_ms() < end) {
    driver_turn(&a, 20);
    driver_turn(&b, 20);
  }
  CU_ASSERT_EQUAL(sa.calls, 1);
  CU_ASSERT_EQUAL(sb.calls, 1);
  CU_ASSERT_EQUAL(sa.verdict, EGRESS_VERDICT_ALLOW);
  CU_ASSERT_EQUAL(sb.verdict, EGRESS_VERDICT_ALLOW);
  CU_ASSERT_EQUAL(egress_dns_query_count_type(dns, name, 1), 1);
  driver_free(&b);
  fixture_close(&a, c);
}

/* One family answers, the other never does: at the deadline the lookup is
 * a time-out, blocking and on a loop alike (the blocking call used to keep
 * the family that had answered). */
static void test_one_family_times_out(void) {
  const char *name = "halfsilent.ok.test";
  egress_dns_add_a(dns, name, "93.184.216.34", 60);
  egress_dns_set_drop_type(dns, name, 28, true);
  egress_checker_t *c = checker_new(600, 64, EGRESS_MODE_ENFORCE);
  CU_ASSERT_FATAL(c != NULL);
  egress_decision_t *d = NULL;
  CU_ASSERT_EQUAL(egress_check_ex(c, name, 443, NULL, &d), EGRESS_OK);
  CU_ASSERT_EQUAL(egress_decision_reason(d), EGRESS_REASON_DNS_UNAVAILABLE);
  egress_decision_free(d);
  driver_t drv;
  driver_open(&drv, c);
  slot_t s = { 0 };
  CU_ASSERT_EQUAL(egress_check_start(drv.loop, name, 443, NULL, on_done, &s, NULL), EGRESS_OK);
  CU_ASSERT(drive(&drv, 3000));
  CU_ASSERT_EQUAL(s.calls, 1);
  CU_ASSERT_EQUAL(s.reason, EGRESS_REASON_DNS_UNAVAILABLE);
  driver_free(&drv);
  egress_checker_free(c);
}

/* ---------- cancellation ---------- */

static void assert_cancelled(const slot_t *s) {
  CU_ASSERT_EQUAL(s->calls, 1);
  CU_ASSERT_EQUAL(s->status, EGRESS_ECANCELLED);
  CU_ASSERT_EQUAL(s->verdict, EGRESS_VERDICT_DENY);
  CU_ASSERT_EQUAL(s->reason, EGRESS_REASON_INTERNAL_ERROR);
}

/* Before the answer, alone and on a shared flight (the other check still
 * gets its answer from the one query). */
static void test_cancel_in_flight(void) {
  const char *name = "cx1.ok.test";
  slow_name(name, 200);
  driver_t drv;
  egress_checker_t *c = fixture_open(&drv);
  int ev0 = atomic_load(&events);
  slot_t a = { 0 }, b = { 0 }, lone = { 0 };
  egress_pending_t *pa = NULL, *pl = NULL;
  CU_ASSERT_EQUAL(egress_check_start(drv.loop, name, 443, NULL, on_done, &a, &pa), EGRESS_OK);
  CU_ASSERT_EQUAL(egress_check_start(drv.loop, name, 443, NULL, on_done, &b, NULL), EGRESS_OK);
  CU_ASSERT_EQUAL(egress_check_start(drv.loop, "cx-lone.ok.test", 443, NULL, on_done, &lone, &pl), EGRESS_OK);
  CU_ASSERT_PTR_NOT_NULL_FATAL(pa);
  CU_ASSERT_PTR_NOT_NULL_FATAL(pl);
  CU_ASSERT_EQUAL(egress_loop_pending(drv.loop), 3);
  CU_ASSERT_EQUAL(egress_check_cancel(pa), EGRESS_OK);
  CU_ASSERT_EQUAL(egress_check_cancel(pl), EGRESS_OK);
  assert_cancelled(&a);
  assert_cancelled(&lone);
  CU_ASSERT_EQUAL(b.calls, 0);
  CU_ASSERT_EQUAL(egress_loop_pending(drv.loop), 1);
  CU_ASSERT(drive(&drv, 3000));
  CU_ASSERT_EQUAL(a.calls, 1);
  CU_ASSERT_EQUAL(lone.calls, 1);
  CU_ASSERT_EQUAL(b.calls, 1);
  CU_ASSERT_EQUAL(b.verdict, EGRESS_VERDICT_ALLOW);
  CU_ASSERT_EQUAL(egress_dns_query_count_type(dns, name, 1), 1);
  CU_ASSERT_EQUAL(atomic_load(&events) - ev0, 3); /* cancelled checks emit their event too */
  fixture_close(&drv, c);
}

/* After the answer came (a blocking leader published it to the loop's ready
 * queue) and before the loop ran: the cancel wins, exactly once. */
static void test_cancel_after_answer_queued(void) {
  const char *name = "cx2.ok.test";
  slow_name(name, 150);
  driver_t drv;
  egress_checker_t *c = fixture_open(&drv);
  blocking_call_t b = { .c = c, .host = name, .verdict = EGRESS_VERDICT_DENY };
  pthread_t t;
  CU_ASSERT_FATAL(pthread_create(&t, NULL, blocking_thread, &b) == 0);
  wait_for_query(name, 1);
  slot_t s = { 0 };
  egress_pending_t *p = NULL;
  CU_ASSERT_EQUAL(egress_check_start(drv.loop, name, 443, NULL, on_done, &s, &p), EGRESS_OK);
  CU_ASSERT_PTR_NOT_NULL_FATAL(p);
  pthread_join(t, NULL); /* answered and handed to this loop, not yet run */
  CU_ASSERT_EQUAL(b.verdict, EGRESS_VERDICT_ALLOW);
  struct pollfd wake = drv.fds[0];
  CU_ASSERT_EQUAL(poll(&wake, 1, 0), 1); /* the wake-up is pending */
  CU_ASSERT_EQUAL(s.calls, 0);
  CU_ASSERT_EQUAL(egress_check_cancel(p), EGRESS_OK);
  assert_cancelled(&s);
  for (int i = 0; i < 5; i++) driver_turn(&drv, 10);
  CU_ASSERT_EQUAL(s.calls, 1);
  fixture_close(&drv, c);
}

typedef struct chain {
  driver_t *drv;
  egress_pending_t *victim;
  slot_t *started;
  const char *start_host;
} chain_t;

static void cancel_other(slot_t *s) {
  chain_t *ch = s->arg;
  if (ch->victim) CU_ASSERT_EQUAL(egress_check_cancel(ch->victim), EGRESS_OK);
  ch->victim = NULL;
}

static void start_another(slot_t *s) {
  chain_t *ch = s->arg;
  CU_ASSERT_EQUAL(egress_check_start(ch->drv->loop, ch->start_host, 443, NULL, on_done, ch->started, NULL),
                  EGRESS_OK);
}

static void free_loop(slot_t *s) {
  chain_t *ch = s->arg;
  egress_loop_free(ch->drv->loop);
  ch->drv->loop = NULL;
}

/* From inside callbacks: cancel another check, start one (inline and one
 * that waits), free the loop with checks still in flight. */
static void test_callbacks_reenter(void) {
  egress_dns_add_a(dns, "re1.ok.test", "93.184.216.34", 60);
  slow_name("re2.ok.test", 400);
  egress_dns_add_a(dns, "re3.ok.test", "93.184.216.34", 60);
  slow_name("re4.ok.test", 1000);
  driver_t drv;
  egress_checker_t *c = fixture_open(&drv);

  /* re1 answers first; its callback cancels re2 and starts re3. */
  slot_t s1 = { 0 }, s2 = { 0 }, s3 = { 0 };
  chain_t ch = { .drv = &drv, .started = &s3, .start_host = "re3.ok.test" };
  s1.then = cancel_other;
  s1.arg = &ch;
  CU_ASSERT_EQUAL(egress_check_start(drv.loop, "re1.ok.test", 443, NULL, on_done, &s1, NULL), EGRESS_OK);
  CU_ASSERT_EQUAL(egress_check_start(drv.loop, "re2.ok.test", 443, NULL, on_done, &s2, &ch.victim),
                  EGRESS_OK);
  CU_ASSERT(drive(&drv, 3000));
  CU_ASSERT_EQUAL(s1.calls, 1);
  CU_ASSERT_EQUAL(s1.verdict, EGRESS_VERDICT_ALLOW);
  assert_cancelled(&s2);

  /* A callback starts a check: one that waits, then (cached now) one inline. */
  slot_t s5 = { 0 }, s6 = { 0 };
  chain_t ch2 = { .drv = &drv, .started = &s3, .start_host = "re3.ok.test" };
  s5.then = start_another;
  s5.arg = &ch2;
  CU_ASSERT_EQUAL(egress_check_start(drv.loop, "pub.ok.test", 443, NULL, on_done, &s5, NULL), EGRESS_OK);
  CU_ASSERT(drive(&drv, 3000));
  CU_ASSERT_EQUAL(s3.calls, 1);
  CU_ASSERT_EQUAL(s3.verdict, EGRESS_VERDICT_ALLOW);
  chain_t ch3 = { .drv = &drv, .started = &s6, .start_host = "re3.ok.test" };
  slot_t s7 = { .then = start_another, .arg = &ch3 };
  CU_ASSERT_EQUAL(egress_check_start(drv.loop, "re3.ok.test", 443, NULL, on_done, &s7, NULL), EGRESS_OK);
  CU_ASSERT_EQUAL(s7.calls, 1); /* cached: inline, and so is the one it started */
  CU_ASSERT_EQUAL(s6.calls, 1);

  /* A callback frees the loop while re4 still waits: re4 is cancelled
   * inside that call, the loop goes when the driver call returns. */
  slot_t s8 = { 0 }, s9 = { 0 };
  chain_t ch4 = { .drv = &drv };
  s8.then = free_loop;
  s8.arg = &ch4;
  CU_ASSERT_EQUAL(egress_check_start(drv.loop, "re4.ok.test", 443, NULL, on_done, &s9, NULL), EGRESS_OK);
  CU_ASSERT_EQUAL(egress_check_start(drv.loop, "re1.ok.test", 8443, NULL, on_done, &s8, NULL), EGRESS_OK);
  /* re1 is cached: s8 ran inline and freed the loop from inside the start. */
  CU_ASSERT_EQUAL(s8.calls, 1);
  CU_ASSERT_PTR_NULL(drv.loop);
  assert_cancelled(&s9);
  CU_ASSERT_EQUAL(drv.nfds, 0);
  egress_checker_free(c);
}

/* Free with many checks in flight, more than the driver puts on the wire
 * at once: every callback runs once, inside the free, cancelled; nothing
 * runs later; ASan and TSan see no leak and no race. */
static void test_free_with_many_in_flight(void) {
  enum { N = 5000 };
  char name[64];
  for (int i = 0; i < N; i++) {
    snprintf(name, sizeof name, "many%d.ok.test", i);
    egress_dns_add_a(dns, name, "93.184.216.34", 60);
    egress_dns_set_delay_ms(dns, name, 2000);
  }
  egress_checker_t *c = checker_new(3000, 8192, EGRESS_MODE_ENFORCE);
  CU_ASSERT_FATAL(c != NULL);
  driver_t drv;
  driver_open(&drv, c);
  int ev0 = atomic_load(&events);
  slot_t *s = calloc(N, sizeof *s);
  CU_ASSERT_FATAL(s != NULL);
  for (int i = 0; i < N; i++) {
    snprintf(name, sizeof name, "many%d.ok.test", i);
    CU_ASSERT_EQUAL(egress_check_start(drv.loop, name, 443, NULL, on_done, &s[i], NULL), EGRESS_OK);
  }
  for (int i = 0; i < 3; i++) driver_turn(&drv, 20);
  CU_ASSERT_EQUAL(egress_loop_pending(drv.loop), (size_t)N);
  driver_free(&drv);
  int wrong = 0;
  for (int i = 0; i < N; i++) wrong += s[i].calls != 1 || s[i].status != EGRESS_ECANCELLED;
  CU_ASSERT_EQUAL(wrong, 0);
  CU_ASSERT_EQUAL(atomic_load(&events) - ev0, N);
  free(s);
  egress_checker_free(c);
}

/* Checks past their deadline end as dns_unavailable at the deadline, also
 * those still waiting for room on the wire; then they answer from the
 * responder a second run, all of them, none lost. */
static void test_deadline_and_window(void) {
  enum { N = 6000 };
  char name[64];
  for (int i = 0; i < N; i++) {
    snprintf(name, sizeof name, "win%d.ok.test", i);
    egress_dns_add_a(dns, name, i % 10 ? "93.184.216.34" : "127.0.0.9", 60);
    egress_dns_set_delay_ms(dns, name, 3000);
  }
  egress_checker_t *c = checker_new(400, 8192, EGRESS_MODE_ENFORCE);
  CU_ASSERT_FATAL(c != NULL);
  driver_t drv;
  driver_open(&drv, c);
  slot_t *s = calloc(N, sizeof *s);
  CU_ASSERT_FATAL(s != NULL);
  double t0 = now_ms();
  for (int i = 0; i < N; i++) {
    snprintf(name, sizeof name, "win%d.ok.test", i);
    CU_ASSERT_EQUAL(egress_check_start(drv.loop, name, 443, NULL, on_done, &s[i], NULL), EGRESS_OK);
  }
  CU_ASSERT(drive(&drv, 5000));
  double took = now_ms() - t0;
  int wrong = 0;
  for (int i = 0; i < N; i++)
    wrong += s[i].calls != 1 || s[i].status != EGRESS_OK || s[i].reason != EGRESS_REASON_DNS_UNAVAILABLE;
  CU_ASSERT_EQUAL(wrong, 0);
  CU_ASSERT(took < 2500);
  driver_free(&drv);
  egress_checker_free(c);

  /* Now answered at once: all N in flight, every answer arrives. */
  for (int i = 0; i < N; i++) {
    snprintf(name, sizeof name, "win%d.ok.test", i);
    egress_dns_set_delay_ms(dns, name, 0);
  }
  c = checker_new(5000, 8192, EGRESS_MODE_ENFORCE);
  CU_ASSERT_FATAL(c != NULL);
  driver_open(&drv, c);
  memset(s, 0, N * sizeof *s);
  for (int i = 0; i < N; i++) {
    snprintf(name, sizeof name, "win%d.ok.test", i);
    CU_ASSERT_EQUAL(egress_check_start(drv.loop, name, 443, NULL, on_done, &s[i], NULL), EGRESS_OK);
  }
  CU_ASSERT(drive(&drv, 20000));
  int allowed = 0, special = 0, other = 0;
  for (int i = 0; i < N; i++) {
    if (s[i].calls != 1)
      other++;
    else if (s[i].verdict == EGRESS_VERDICT_ALLOW)
      allowed++;
    else if (s[i].reason == EGRESS_REASON_SPECIAL_PURPOSE_ADDRESS ||
             s[i].reason == EGRESS_REASON_RESOLVED_ADDRESS_FORBIDDEN)
      special++;
    else
      other++;
  }
  CU_ASSERT_EQUAL(other, 0);
  CU_ASSERT_EQUAL(special, N / 10);
  CU_ASSERT_EQUAL(allowed, N - N / 10);
  driver_free(&drv);
  free(s);
  egress_checker_free(c);
}

static CU_TestInfo tests[] = {
  { "differential: hostile hosts, URLs, ports, modes", test_differential_hostile },
  { "differential: held corpora", test_differential_corpora },
  { "differential: the comparison notices", test_differential_notices },
  { "DNS faults fail closed by the deadline", test_dns_faults },
  { "no DNS needed: completes inline", test_inline_completion },
  { "decisions handed back are filled again, nothing left of them", test_recycle },
  { "single flight: async leads, blocking joins", test_single_flight_async_leads },
  { "single flight: blocking leads, async joins", test_single_flight_blocking_leads },
  { "a blocking check on the loop's own thread joining its lookup ends at its deadline",
    test_blocking_join_on_loop_thread },
  { "two loops on one thread sharing a checker are both woken", test_two_loops_one_thread },
  { "one family unanswered: a time-out, blocking and async alike", test_one_family_times_out },
  { "cancel in flight, alone and shared", test_cancel_in_flight },
  { "cancel after the answer was queued", test_cancel_after_answer_queued },
  { "callbacks cancel, start, free", test_callbacks_reenter },
  { "free with 5000 in flight", test_free_with_many_in_flight },
  { "deadlines and the wire window", test_deadline_and_window },
  CU_TEST_INFO_NULL,
};

int main(int argc, char **argv) {
  egress_test_suite_t suites[] = {
    { "async", init_suite, clean_suite, tests },
    { NULL, NULL, NULL, NULL },
  };
  return egress_test_main(argc, argv, suites);
}
