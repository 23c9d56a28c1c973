/*
 * The check through real DNS: c-ares against our loopback responder.
 * Rebinding answers, fail-closed faults, no lookups for names outside the
 * policy, no search-list expansion, vetted addresses handed back.
 */
#include "egress_private.h"
#include "resolve.h"
#include "responder.h"
#include "testutil.h"

#include <arpa/inet.h>
#include <cjson/cJSON.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static egress_dns_responder_t *dns;
static char servers[128];

static int suite_init(void) {
  dns = egress_dns_start("127.0.0.1");
  if (!dns) return 1;
  egress_dns_server_csv(dns, servers, sizeof servers);
  return 0;
}

static int suite_cleanup(void) {
  egress_dns_stop(dns);
  return 0;
}

typedef struct fixture {
  egress_policy_t *policy;
  egress_checker_t *checker;
} fixture_t;

static void setup_opts(fixture_t *f, const char *const *allow, size_t na, const char *const *deny, size_t nd,
                       egress_options_t *opts) {
  char err[EGRESS_ERRBUF_SIZE] = "";
  CU_ASSERT_EQUAL_FATAL(egress_policy_from_entries(allow, na, deny, nd, &f->policy, err, sizeof err),
                        EGRESS_OK);
  CU_ASSERT_EQUAL_FATAL(egress_options_set_dns_servers(opts, servers), EGRESS_OK);
  egress_status_t st = egress_checker_new(f->policy, opts, &f->checker, err, sizeof err);
  if (st != EGRESS_OK) fprintf(stderr, "checker: %s\n", err);
  CU_ASSERT_EQUAL_FATAL(st, EGRESS_OK);
}

static void setup(fixture_t *f, const char *const *allow, size_t na, const char *const *deny, size_t nd) {
  egress_options_t *opts = NULL;
  CU_ASSERT_EQUAL_FATAL(egress_options_new(&opts), EGRESS_OK);
  egress_options_set_timeout_ms(opts, 400);
  setup_opts(f, allow, na, deny, nd, opts);
  egress_options_free(opts);
}

static void teardown(fixture_t *f) {
  egress_checker_free(f->checker);
  egress_policy_unref(f->policy);
}

static egress_decision_t *check(fixture_t *f, const char *host, int port) {
  egress_decision_t *d = NULL;
  egress_status_t st = egress_check_ex(f->checker, host, port, NULL, &d);
  CU_ASSERT_EQUAL(st, EGRESS_OK);
  CU_ASSERT_PTR_NOT_NULL_FATAL(d);
  return d;
}

static void expect(fixture_t *f, const char *host, int port, egress_outcome_t outcome,
                   egress_reason_t reason) {
  egress_decision_t *d = check(f, host, port);
  if (egress_decision_outcome(d) != outcome || egress_decision_reason(d) != reason)
    fprintf(stderr, "%s:%d -> %s/%s (%s), want %s/%s\n", host, port,
            egress_outcome_name(egress_decision_outcome(d)), egress_reason_name(egress_decision_reason(d)),
            egress_decision_message(d), egress_outcome_name(outcome), egress_reason_name(reason));
  CU_ASSERT_EQUAL(egress_decision_outcome(d), outcome);
  CU_ASSERT_EQUAL(egress_decision_reason(d), reason);
  CU_ASSERT_EQUAL(egress_decision_verdict(d),
                  outcome == EGRESS_OUTCOME_ALLOWED ? EGRESS_VERDICT_ALLOW : EGRESS_VERDICT_DENY);
  egress_decision_free(d);
}

static const char *const allow_all_example[] = { "**.example.com", "*.example.com:*", "**.example.net:5432" };

static void test_public_answer_allowed(void) {
  fixture_t f;
  setup(&f, allow_all_example, 3, NULL, 0);
  egress_dns_add_a(dns, "pub.example.com", "93.184.216.34", 120);
  egress_dns_add_aaaa(dns, "pub.example.com", "2606:2800:220:1:248:1893:25c8:1946", 60);
  egress_decision_t *d = check(&f, "PUB.Example.COM.", 443);
  CU_ASSERT_EQUAL(egress_decision_verdict(d), EGRESS_VERDICT_ALLOW);
  CU_ASSERT_STRING_EQUAL(egress_decision_host(d), "pub.example.com");
  CU_ASSERT_EQUAL(egress_decision_address_count(d), 2);
  bool saw4 = false, saw6 = false;
  for (size_t i = 0; i < egress_decision_address_count(d); i++) {
    const char *a = egress_decision_address(d, i);
    CU_ASSERT_EQUAL(egress_decision_address_verdict(d, i), EGRESS_VERDICT_ALLOW);
    size_t len = 0;
    const struct sockaddr *sa = egress_decision_address_sockaddr(d, i, &len);
    CU_ASSERT_PTR_NOT_NULL_FATAL(sa);
    if (!strcmp(a, "93.184.216.34")) {
      saw4 = true;
      CU_ASSERT_EQUAL(egress_decision_address_ttl(d, i), 120);
      CU_ASSERT_EQUAL(len, sizeof(struct sockaddr_in));
      CU_ASSERT_EQUAL(sa->sa_family, AF_INET);
      CU_ASSERT_EQUAL(ntohs(((const struct sockaddr_in *)(const void *)sa)->sin_port), 443);
    } else if (!strcmp(a, "2606:2800:220:1:248:1893:25c8:1946")) {
      saw6 = true;
      CU_ASSERT_EQUAL(egress_decision_address_ttl(d, i), 60);
      CU_ASSERT_EQUAL(sa->sa_family, AF_INET6);
      CU_ASSERT_EQUAL(ntohs(((const struct sockaddr_in6 *)(const void *)sa)->sin6_port), 443);
    }
  }
  CU_ASSERT(saw4 && saw6);
  const char *cr = egress_decision_curl_resolve(d);
  CU_ASSERT_PTR_NOT_NULL_FATAL(cr);
  CU_ASSERT_PTR_NOT_NULL(strstr(cr, "pub.example.com:443:"));
  CU_ASSERT_PTR_NOT_NULL(strstr(cr, "93.184.216.34"));
  CU_ASSERT_PTR_NOT_NULL(strstr(cr, "[2606:2800:220:1:248:1893:25c8:1946]"));
  CU_ASSERT_STRING_EQUAL(egress_decision_rule_text(d), "**.example.com");
  egress_decision_free(d);
  teardown(&f);
}

/* Every way an allowed name can point back inside. */
static void test_rebinding_denied(void) {
  static const struct {
    const char *name, *a, *aaaa;
  } cases[] = {
    { "loop4.example.com", "127.0.0.1", NULL },
    { "loop4b.example.com", "127.53.1.1", NULL },
    { "meta.example.com", "169.254.169.254", NULL },
    { "private10.example.com", "10.0.0.5", NULL },
    { "private172.example.com", "172.16.3.4", NULL },
    { "private192.example.com", "192.168.1.1", NULL },
    { "cgnat.example.com", "100.64.0.1", NULL },
    { "zero.example.com", "0.0.0.0", NULL },
    { "bcast.example.com", "255.255.255.255", NULL },
    { "mcast.example.com", "224.0.0.1", NULL },
    { "doc.example.com", "192.0.2.10", NULL },
    { "loop6.example.com", NULL, "::1" },
    { "unspec6.example.com", NULL, "::" },
    { "mapped.example.com", NULL, "::ffff:127.0.0.1" },
    { "mapped10.example.com", NULL, "::ffff:10.1.2.3" },
    { "ula.example.com", NULL, "fd00:ec2::254" },
    { "linklocal.example.com", NULL, "fe80::1" },
    { "sitelocal.example.com", NULL, "fec0::1" },
    { "compat.example.com", NULL, "::127.0.0.1" },
    { "nat64loop.example.com", NULL, "64:ff9b::7f00:1" },
    { "nat64meta.example.com", NULL, "64:ff9b::a9fe:a9fe" },
    { "sixtofour.example.com", NULL, "2002:7f00:1::1" },
    { "teredo.example.com", NULL, "2001:0:4136:e378:8000:63bf:80ff:fffe" },
    { "doc6.example.com", NULL, "2001:db8::1" },
    { "orchid2.example.com", NULL, "2001:20::1" },
    { "orchid2b.example.com", NULL, "2001:2f:ffff::1" },
    { "det.example.com", NULL, "2001:30::1" },
    { "orchid1.example.com", NULL, "2001:10::1" },
    { "mix.example.com", "93.184.216.34", "::1" },
    { "mix2.example.com", "10.0.0.1", "2606:4700::1111" },
  };
  fixture_t f;
  setup(&f, allow_all_example, 3, NULL, 0);
  for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
    if (cases[i].a) egress_dns_add_a(dns, cases[i].name, cases[i].a, 30);
    if (cases[i].aaaa) egress_dns_add_aaaa(dns, cases[i].name, cases[i].aaaa, 30);
    expect(&f, cases[i].name, 443, EGRESS_OUTCOME_DENIED, EGRESS_REASON_RESOLVED_ADDRESS_FORBIDDEN);
    egress_decision_t *d = check(&f, cases[i].name, 443);
    CU_ASSERT_PTR_NULL(egress_decision_curl_resolve(d));
    /* Deny-if-any: no address of the answer is handed out. */
    for (size_t k = 0; k < egress_decision_address_count(d); k++)
      CU_ASSERT_EQUAL(egress_decision_address_verdict(d, k), EGRESS_VERDICT_DENY);
    CU_ASSERT_PTR_NOT_NULL(strstr(egress_decision_message(d), "forbidden address"));
    egress_decision_free(d);
  }
  teardown(&f);
}

static void setup_cache(fixture_t *f, const char *const *allow, size_t na, uint32_t max, uint32_t min_ttl,
                        uint32_t max_ttl, uint32_t neg_ttl) {
  egress_options_t *opts = NULL;
  CU_ASSERT_EQUAL_FATAL(egress_options_new(&opts), EGRESS_OK);
  egress_options_set_timeout_ms(opts, 400);
  CU_ASSERT_EQUAL_FATAL(egress_options_set_cache(opts, max, min_ttl, max_ttl, neg_ttl), EGRESS_OK);
  setup_opts(f, allow, na, NULL, 0, opts);
  egress_options_free(opts);
}

static void test_rebinding_over_time(void) {
  fixture_t f;
  /* A TTL-0 answer is never cached when min_ttl is 0. */
  setup_cache(&f, allow_all_example, 3, 4096, 0, 300, 5);
  egress_dns_add_a(dns, "flip.example.com", "93.184.216.34", 0);
  egress_dns_next_set(dns, "flip.example.com");
  egress_dns_add_a(dns, "flip.example.com", "127.0.0.1", 0);
  egress_dns_set_sticky(dns, "flip.example.com", true);
  expect(&f, "flip.example.com", 443, EGRESS_OUTCOME_ALLOWED, EGRESS_REASON_NONE);
  /* The second answer points home; a fresh check (TTL 0) must see it. */
  expect(&f, "flip.example.com", 443, EGRESS_OUTCOME_DENIED, EGRESS_REASON_RESOLVED_ADDRESS_FORBIDDEN);
  expect(&f, "flip.example.com", 443, EGRESS_OUTCOME_DENIED, EGRESS_REASON_RESOLVED_ADDRESS_FORBIDDEN);
  teardown(&f);
}

static void test_filter_mode(void) {
  fixture_t f;
  egress_options_t *opts = NULL;
  CU_ASSERT_EQUAL_FATAL(egress_options_new(&opts), EGRESS_OK);
  egress_options_set_mixed(opts, EGRESS_MIXED_FILTER);
  egress_options_set_timeout_ms(opts, 400);
  setup_opts(&f, allow_all_example, 3, NULL, 0, opts);
  egress_options_free(opts);
  egress_dns_add_a(dns, "filt.example.com", "93.184.216.34", 30);
  egress_dns_add_a(dns, "filt.example.com", "10.9.9.9", 30);
  egress_dns_add_aaaa(dns, "filt.example.com", "::1", 30);
  egress_decision_t *d = check(&f, "filt.example.com", 443);
  CU_ASSERT_EQUAL(egress_decision_verdict(d), EGRESS_VERDICT_ALLOW);
  CU_ASSERT_EQUAL(egress_decision_address_count(d), 3);
  size_t allowed = 0;
  for (size_t i = 0; i < egress_decision_address_count(d); i++) {
    bool pub = !strcmp(egress_decision_address(d, i), "93.184.216.34");
    CU_ASSERT_EQUAL(egress_decision_address_verdict(d, i), pub ? EGRESS_VERDICT_ALLOW : EGRESS_VERDICT_DENY);
    if (!pub) CU_ASSERT_EQUAL(egress_decision_address_reason(d, i), EGRESS_REASON_SPECIAL_PURPOSE_ADDRESS);
    allowed += pub;
  }
  CU_ASSERT_EQUAL(allowed, 1);
  CU_ASSERT_STRING_EQUAL(egress_decision_curl_resolve(d), "filt.example.com:443:93.184.216.34");
  egress_decision_free(d);
  /* Nothing left after filtering: still denied. */
  egress_dns_add_a(dns, "allbad.example.com", "10.0.0.1", 30);
  egress_dns_add_aaaa(dns, "allbad.example.com", "::1", 30);
  expect(&f, "allbad.example.com", 443, EGRESS_OUTCOME_DENIED, EGRESS_REASON_RESOLVED_ADDRESS_FORBIDDEN);
  teardown(&f);
}

static void test_failures_fail_closed(void) {
  fixture_t f;
  setup(&f, allow_all_example, 3, NULL, 0);
  egress_dns_set_rcode(dns, "nx.example.com", EGRESS_DNS_NXDOMAIN);
  expect(&f, "nx.example.com", 443, EGRESS_OUTCOME_DENIED, EGRESS_REASON_NO_SUCH_HOST);
  egress_dns_set_rcode(dns, "nodata.example.com", 0);
  expect(&f, "nodata.example.com", 443, EGRESS_OUTCOME_DENIED, EGRESS_REASON_NO_SUCH_HOST);
  egress_dns_set_rcode(dns, "sf.example.com", EGRESS_DNS_SERVFAIL);
  expect(&f, "sf.example.com", 443, EGRESS_OUTCOME_ENFORCEMENT_UNAVAILABLE, EGRESS_REASON_DNS_UNAVAILABLE);
  egress_dns_set_rcode(dns, "ref.example.com", EGRESS_DNS_REFUSED);
  expect(&f, "ref.example.com", 443, EGRESS_OUTCOME_ENFORCEMENT_UNAVAILABLE, EGRESS_REASON_DNS_UNAVAILABLE);
  egress_dns_set_drop(dns, "drop.example.com", true);
  expect(&f, "drop.example.com", 443, EGRESS_OUTCOME_ENFORCEMENT_UNAVAILABLE, EGRESS_REASON_DNS_UNAVAILABLE);
  egress_dns_add_a(dns, "slow.example.com", "93.184.216.34", 30);
  egress_dns_set_delay_ms(dns, "slow.example.com", 1500);
  expect(&f, "slow.example.com", 443, EGRESS_OUTCOME_ENFORCEMENT_UNAVAILABLE, EGRESS_REASON_DNS_UNAVAILABLE);
  teardown(&f);
}

static void test_unreachable_server(void) {
  /* A port nobody listens on: ICMP port unreachable or timeout. */
  fixture_t f;
  char err[EGRESS_ERRBUF_SIZE];
  egress_options_t *opts = NULL;
  egress_dns_responder_t *gone = egress_dns_start("127.0.0.1");
  CU_ASSERT_PTR_NOT_NULL_FATAL(gone);
  char dead[64];
  egress_dns_server_csv(gone, dead, sizeof dead);
  egress_dns_stop(gone);
  CU_ASSERT_EQUAL_FATAL(egress_options_new(&opts), EGRESS_OK);
  egress_options_set_timeout_ms(opts, 300);
  egress_options_set_dns_servers(opts, dead);
  CU_ASSERT_EQUAL_FATAL(egress_policy_from_entries(allow_all_example, 3, NULL, 0, &f.policy, err, sizeof err),
                        EGRESS_OK);
  CU_ASSERT_EQUAL_FATAL(egress_checker_new(f.policy, opts, &f.checker, err, sizeof err), EGRESS_OK);
  egress_options_free(opts);
  expect(&f, "any.example.com", 443, EGRESS_OUTCOME_ENFORCEMENT_UNAVAILABLE, EGRESS_REASON_DNS_UNAVAILABLE);
  teardown(&f);
}

static void test_no_query_outside_policy(void) {
  fixture_t f;
  setup(&f, allow_all_example, 3, NULL, 0);
  egress_dns_reset(dns);
  egress_dns_add_a(dns, "leak.attacker.org", "93.184.216.34", 30);
  expect(&f, "leak.attacker.org", 443, EGRESS_OUTCOME_DENIED, EGRESS_REASON_NOT_IN_ALLOWLIST);
  expect(&f, "secret-data.attacker.org", 443, EGRESS_OUTCOME_DENIED, EGRESS_REASON_NOT_IN_ALLOWLIST);
  expect(&f, "example.com", 443, EGRESS_OUTCOME_DENIED, EGRESS_REASON_NOT_IN_ALLOWLIST);
  /* Allowed name on a port it is not allowed on: no query either. */
  expect(&f, "a.b.example.com", 22, EGRESS_OUTCOME_DENIED, EGRESS_REASON_PORT_NOT_ALLOWED);
  expect(&f, "0x7f.1", 443, EGRESS_OUTCOME_DENIED, EGRESS_REASON_INVALID_HOST);
  expect(&f, "2130706433", 443, EGRESS_OUTCOME_DENIED, EGRESS_REASON_INVALID_HOST);
  CU_ASSERT_EQUAL(egress_dns_total_queries(dns), 0);
  teardown(&f);
}

static void test_no_search_list(void) {
  /* A pod-style resolv.conf: ndots:5 and a cluster search list.  The name
   * checked must be the name resolved, never NAME.svc.cluster.local. */
  char path[] = "/tmp/egress-resolv-XXXXXX";
  int fd = mkstemp(path);
  CU_ASSERT_FATAL(fd >= 0);
  const char *conf =
      "nameserver 127.0.0.1\nsearch ns1.svc.cluster.local svc.cluster.local cluster.local\noptions ndots:5\n";
  CU_ASSERT_EQUAL((size_t)write(fd, conf, strlen(conf)), strlen(conf));
  close(fd);
  fixture_t f;
  egress_options_t *opts = NULL;
  CU_ASSERT_EQUAL_FATAL(egress_options_new(&opts), EGRESS_OK);
  egress__options_set_resolv_conf(opts, path);
  egress_options_set_timeout_ms(opts, 400);
  setup_opts(&f, allow_all_example, 3, NULL, 0, opts);
  egress_options_free(opts);
  egress_dns_reset(dns);
  egress_dns_set_rcode(dns, "api.example.com", EGRESS_DNS_NXDOMAIN);
  egress_dns_add_a(dns, "api.example.com.ns1.svc.cluster.local", "93.184.216.34", 30);
  egress_dns_add_a(dns, "api.example.com.svc.cluster.local", "93.184.216.34", 30);
  egress_dns_add_a(dns, "api.example.com.cluster.local", "93.184.216.34", 30);
  expect(&f, "api.example.com", 443, EGRESS_OUTCOME_DENIED, EGRESS_REASON_NO_SUCH_HOST);
  CU_ASSERT_EQUAL(egress_dns_query_count(dns, "api.example.com.ns1.svc.cluster.local"), 0);
  CU_ASSERT_EQUAL(egress_dns_query_count(dns, "api.example.com.svc.cluster.local"), 0);
  CU_ASSERT_EQUAL(egress_dns_query_count(dns, "api.example.com.cluster.local"), 0);
  CU_ASSERT(egress_dns_query_count(dns, "api.example.com") > 0);
  teardown(&f);
  unlink(path);
}

static void test_private_range_opened_by_name(void) {
  const char *allow[] = { "**.example.net:5432", "10.1.0.0/16:5432", "0.0.0.0/0", "::/0" };
  fixture_t f;
  setup(&f, allow, 4, NULL, 0);
  egress_dns_add_a(dns, "db.example.net", "10.1.2.3", 30);
  expect(&f, "db.example.net", 5432, EGRESS_OUTCOME_ALLOWED, EGRESS_REASON_NONE);
  egress_dns_add_a(dns, "db2.example.net", "10.2.0.1", 30);
  expect(&f, "db2.example.net", 5432, EGRESS_OUTCOME_DENIED, EGRESS_REASON_RESOLVED_ADDRESS_FORBIDDEN);
  /* 0.0.0.0/0 and ::/0 do not open special-purpose space. */
  expect(&f, "10.2.0.1", 443, EGRESS_OUTCOME_DENIED, EGRESS_REASON_SPECIAL_PURPOSE_ADDRESS);
  expect(&f, "127.0.0.1", 80, EGRESS_OUTCOME_DENIED, EGRESS_REASON_SPECIAL_PURPOSE_ADDRESS);
  expect(&f, "169.254.169.254", 80, EGRESS_OUTCOME_DENIED, EGRESS_REASON_SPECIAL_PURPOSE_ADDRESS);
  expect(&f, "::1", 80, EGRESS_OUTCOME_DENIED, EGRESS_REASON_SPECIAL_PURPOSE_ADDRESS);
  expect(&f, "[::ffff:127.0.0.1]", 80, EGRESS_OUTCOME_DENIED, EGRESS_REASON_SPECIAL_PURPOSE_ADDRESS);
  expect(&f, "10.1.2.3", 5432, EGRESS_OUTCOME_ALLOWED, EGRESS_REASON_NONE);
  expect(&f, "10.1.2.3", 5433, EGRESS_OUTCOME_DENIED, EGRESS_REASON_SPECIAL_PURPOSE_ADDRESS);
  expect(&f, "93.184.216.34", 443, EGRESS_OUTCOME_ALLOWED, EGRESS_REASON_NONE);
  /* NAT64 lies outside 2000::/3: ::/0 does not open it either... */
  expect(&f, "64:ff9b::5db8:d822", 443, EGRESS_OUTCOME_DENIED, EGRESS_REASON_SPECIAL_PURPOSE_ADDRESS);
  egress_dns_add_aaaa(dns, "nat64.example.net", "64:ff9b::5db8:d822", 30);
  expect(&f, "nat64.example.net", 5432, EGRESS_OUTCOME_DENIED, EGRESS_REASON_RESOLVED_ADDRESS_FORBIDDEN);
  teardown(&f);

  /* ... naming it does, and the IPv4 it carries is vetted on top. */
  const char *allow64[] = { "**.example.net:5432", "10.1.0.0/16:5432", "0.0.0.0/0", "[64:ff9b::]/96:*" };
  setup(&f, allow64, 4, NULL, 0);
  expect(&f, "64:ff9b::5db8:d822", 443, EGRESS_OUTCOME_ALLOWED, EGRESS_REASON_NONE);
  expect(&f, "nat64.example.net", 5432, EGRESS_OUTCOME_ALLOWED, EGRESS_REASON_NONE);
  expect(&f, "64:ff9b::a01:203", 5432, EGRESS_OUTCOME_ALLOWED, EGRESS_REASON_NONE);
  expect(&f, "64:ff9b::a02:1", 5432, EGRESS_OUTCOME_DENIED, EGRESS_REASON_SPECIAL_PURPOSE_ADDRESS);
  expect(&f, "64:ff9b::7f00:1", 443, EGRESS_OUTCOME_DENIED, EGRESS_REASON_SPECIAL_PURPOSE_ADDRESS);
  teardown(&f);
}

static void test_localhost_is_loopback(void) {
  const char *allow[] = { "*", "**.localhost" };
  fixture_t f;
  setup(&f, allow, 2, NULL, 0);
  egress_dns_reset(dns);
  /* Even if a DNS server claims otherwise, localhost is loopback (RFC 6761). */
  egress_dns_add_a(dns, "localhost", "93.184.216.34", 30);
  egress_dns_add_a(dns, "app.localhost", "93.184.216.34", 30);
  expect(&f, "localhost", 443, EGRESS_OUTCOME_DENIED, EGRESS_REASON_RESOLVED_ADDRESS_FORBIDDEN);
  expect(&f, "LOCALHOST.", 443, EGRESS_OUTCOME_DENIED, EGRESS_REASON_RESOLVED_ADDRESS_FORBIDDEN);
  expect(&f, "app.localhost", 443, EGRESS_OUTCOME_DENIED, EGRESS_REASON_RESOLVED_ADDRESS_FORBIDDEN);
  CU_ASSERT_EQUAL(egress_dns_total_queries(dns), 0);
  teardown(&f);
}

/* With DNS servers named explicitly, the system hosts file is not a source:
 * a name it lists must still come from the servers. */
static void test_servers_only(void) {
  char line[512], name[256] = "";
  FILE *f = fopen("/etc/hosts", "r");
  while (f && fgets(line, sizeof line, f)) {
    char addr[128], first[256];
    if (line[0] == '#' || sscanf(line, "%127s %255s", addr, first) != 2) continue;
    if (strcmp(first, "localhost") && !strstr(first, ".localhost") && strlen(first) > 3) {
      snprintf(name, sizeof name, "%s", first);
      break;
    }
  }
  if (f) fclose(f);
  if (!name[0]) snprintf(name, sizeof name, "ip6-loopback"); /* Debian's default entry */
  const char *allow[] = { "*" };
  fixture_t fx;
  setup(&fx, allow, 1, NULL, 0);
  egress_dns_reset(dns);
  egress_dns_set_rcode(dns, name, EGRESS_DNS_NXDOMAIN);
  expect(&fx, name, 443, EGRESS_OUTCOME_DENIED, EGRESS_REASON_NO_SUCH_HOST);
  CU_ASSERT(egress_dns_query_count(dns, name) > 0);
  teardown(&fx);
}

static void test_deny_list_on_addresses(void) {
  const char *allow[] = { "**.example.com", "0.0.0.0/0", "[64:ff9b::]/96" };
  const char *deny[] = { "93.184.216.0/24", "bad.example.com", "[2606:4700::]/32:443" };
  fixture_t f;
  setup(&f, allow, 3, deny, 3);
  egress_dns_add_a(dns, "deny1.example.com", "93.184.216.34", 30);
  egress_decision_t *d = check(&f, "deny1.example.com", 443);
  CU_ASSERT_EQUAL(egress_decision_reason(d), EGRESS_REASON_RESOLVED_ADDRESS_FORBIDDEN);
  CU_ASSERT_EQUAL(egress_decision_address_reason(d, 0), EGRESS_REASON_EXPLICIT_DENY);
  CU_ASSERT_EQUAL(egress_decision_rule_list(d), EGRESS_LIST_DENY);
  CU_ASSERT_STRING_EQUAL(egress_decision_rule_text(d), "93.184.216.0/24");
  egress_decision_free(d);
  egress_dns_add_aaaa(dns, "deny6.example.com", "2606:4700::1111", 30);
  expect(&f, "deny6.example.com", 443, EGRESS_OUTCOME_DENIED, EGRESS_REASON_RESOLVED_ADDRESS_FORBIDDEN);
  expect(&f, "deny6.example.com", 444, EGRESS_OUTCOME_DENIED, EGRESS_REASON_PORT_NOT_ALLOWED);
  expect(&f, "bad.example.com", 443, EGRESS_OUTCOME_DENIED, EGRESS_REASON_EXPLICIT_DENY);
  expect(&f, "93.184.216.34", 443, EGRESS_OUTCOME_DENIED, EGRESS_REASON_EXPLICIT_DENY);
  expect(&f, "93.184.217.34", 443, EGRESS_OUTCOME_ALLOWED, EGRESS_REASON_NONE);
  /* NAT64 wrapping of a denied IPv4 is denied too. */
  expect(&f, "64:ff9b::93.184.216.34", 443, EGRESS_OUTCOME_DENIED, EGRESS_REASON_EXPLICIT_DENY);
  teardown(&f);
}

static void test_cname_and_big_answers(void) {
  fixture_t f;
  setup(&f, allow_all_example, 3, NULL, 0);
  egress_dns_add_cname(dns, "alias.example.com", "target.elsewhere.org", 30);
  egress_dns_add_a(dns, "target.elsewhere.org", "127.0.0.1", 30);
  expect(&f, "alias.example.com", 443, EGRESS_OUTCOME_DENIED, EGRESS_REASON_RESOLVED_ADDRESS_FORBIDDEN);
  egress_dns_add_cname(dns, "alias2.example.com", "target2.elsewhere.org", 30);
  egress_dns_add_a(dns, "target2.elsewhere.org", "93.184.216.34", 30);
  expect(&f, "alias2.example.com", 443, EGRESS_OUTCOME_ALLOWED, EGRESS_REASON_NONE);
  /* 120 public addresses and one private one at the end. */
  char ip[32];
  for (int i = 0; i < 120; i++) {
    snprintf(ip, sizeof ip, "93.184.%d.%d", 200 + i / 100, i % 100 + 1);
    egress_dns_add_a(dns, "many.example.com", ip, 30);
  }
  egress_dns_add_a(dns, "many.example.com", "10.0.0.1", 30);
  egress_decision_t *d = check(&f, "many.example.com", 443);
  CU_ASSERT_EQUAL(egress_decision_reason(d), EGRESS_REASON_RESOLVED_ADDRESS_FORBIDDEN);
  CU_ASSERT_EQUAL(egress_decision_address_count(d), 121);
  egress_decision_free(d);
  teardown(&f);
}

/*
 * The deny list's name rules apply to every name of the CNAME chain that
 * c-ares reports for the answer (owner and target of each CNAME record of
 * the responses it used), so that "never talk to attacker.net" holds even
 * when an allowed name is an alias of a denied one.  Such a check is denied
 * explicit_deny, naming the deny rule, before any address is considered.
 */
static const char *const chain_allow[] = { "**.example.com:*", "**.example.org:*", "**.example.net:*" };
static const char *const chain_deny[] = { "*.attacker.net", "evil.example.org", "re:^.*\\.bad-cdn\\.io$",
                                          "**.porty.net:8443" };

static void chain_fixture(fixture_t *f, egress_options_t *opts, bool with_deny) {
  if (!opts) {
    CU_ASSERT_EQUAL_FATAL(egress_options_new(&opts), EGRESS_OK);
    egress_options_set_timeout_ms(opts, 400);
    egress_options_set_cache(opts, 0, 0, 0, 0);
  }
  setup_opts(f, chain_allow, 3, with_deny ? chain_deny : NULL, with_deny ? 4 : 0, opts);
  egress_options_free(opts);
}

static void chain_records(void) {
  egress_dns_add_cname(dns, "c1.example.com", "x.attacker.net", 60);
  egress_dns_add_a(dns, "x.attacker.net", "93.184.216.34", 60);
  egress_dns_add_aaaa(dns, "x.attacker.net", "2606:4700::1111", 60);
  /* two hops, the denied name last */
  egress_dns_add_cname(dns, "c2.example.com", "hop.example.org", 60);
  egress_dns_add_cname(dns, "hop.example.org", "y.attacker.net", 60);
  egress_dns_add_a(dns, "y.attacker.net", "93.184.216.35", 60);
  /* the denied name in the middle */
  egress_dns_add_cname(dns, "c3.example.com", "mid.attacker.net", 60);
  egress_dns_add_cname(dns, "mid.attacker.net", "final.example.org", 60);
  egress_dns_add_a(dns, "final.example.org", "93.184.216.36", 60);
  /* an exact deny entry (that the allowlist would allow) */
  egress_dns_add_cname(dns, "c4.example.com", "evil.example.org", 60);
  egress_dns_add_a(dns, "evil.example.org", "93.184.216.37", 60);
  /* a regex deny entry */
  egress_dns_add_cname(dns, "c5.example.com", "edge7.bad-cdn.io", 60);
  egress_dns_add_a(dns, "edge7.bad-cdn.io", "93.184.216.38", 60);
  /* upper case on the wire */
  egress_dns_add_cname(dns, "c6.example.com", "Z.ATTACKER.NET", 60);
  egress_dns_add_a(dns, "Z.ATTACKER.NET", "93.184.216.39", 60);
  /* a deny entry with a port */
  egress_dns_add_cname(dns, "c7.example.com", "a.b.porty.net", 60);
  egress_dns_add_a(dns, "a.b.porty.net", "93.184.216.40", 60);
  /* IPv6 only */
  egress_dns_add_cname(dns, "c8.example.com", "v6.attacker.net", 60);
  egress_dns_add_aaaa(dns, "v6.attacker.net", "2606:4700::2222", 60);
  /* controls: a clean chain, and the apex that "*.attacker.net" leaves out */
  egress_dns_add_cname(dns, "c9.example.com", "ok.cdn.example.net", 60);
  egress_dns_add_a(dns, "ok.cdn.example.net", "93.184.216.41", 60);
  egress_dns_add_cname(dns, "c10.example.com", "attacker.net", 60);
  egress_dns_add_a(dns, "attacker.net", "93.184.216.42", 60);
}

static const struct {
  const char *host;
  int port;
  long rule; /* deny rule expected, -1: allowed */
} chain_cases[] = {
  { "c1.example.com", 443, 0 },  { "c2.example.com", 443, 0 },   { "c3.example.com", 443, 0 },
  { "c4.example.com", 443, 1 },  { "c5.example.com", 443, 2 },   { "c6.example.com", 443, 0 },
  { "c7.example.com", 8443, 3 }, { "c7.example.com", 443, -1 },  { "c8.example.com", 443, 0 },
  { "c9.example.com", 443, -1 }, { "c10.example.com", 443, -1 },
};

static void expect_chain(fixture_t *f, const char *host, int port, long rule, egress_mode_t mode) {
  egress_decision_t *d = check(f, host, port);
  bool ok;
  if (rule < 0) {
    ok = egress_decision_outcome(d) == EGRESS_OUTCOME_ALLOWED;
  } else {
    ok = egress_decision_outcome(d) == EGRESS_OUTCOME_DENIED &&
         egress_decision_reason(d) == EGRESS_REASON_EXPLICIT_DENY && egress_decision_has_rule(d) &&
         egress_decision_rule_list(d) == EGRESS_LIST_DENY && (long)egress_decision_rule_index(d) == rule &&
         egress_decision_rule_text(d) && !strcmp(egress_decision_rule_text(d), chain_deny[rule]);
    /* Every address of the answer is listed, none to be used. */
    ok = ok && egress_decision_address_count(d) > 0 && !egress_decision_curl_resolve(d);
    for (size_t i = 0; i < egress_decision_address_count(d); i++)
      ok = ok && egress_decision_address_verdict(d, i) == EGRESS_VERDICT_DENY &&
           egress_decision_address_reason(d, i) == EGRESS_REASON_EXPLICIT_DENY;
    ok = ok && egress_decision_message(d) && strstr(egress_decision_message(d), "alias");
    /* The event names the deny rule too. */
    cJSON *ev = cJSON_Parse(egress_decision_event_json(d));
    const cJSON *mr =
        cJSON_GetObjectItemCaseSensitive(cJSON_GetObjectItemCaseSensitive(ev, "data"), "matchedRule");
    const cJSON *list = cJSON_GetObjectItemCaseSensitive(mr, "list");
    ok = ok && cJSON_IsString(list) && !strcmp(list->valuestring, "deny");
    cJSON_Delete(ev);
  }
  egress_verdict_t want =
      rule < 0 || mode == EGRESS_MODE_MONITOR ? EGRESS_VERDICT_ALLOW : EGRESS_VERDICT_DENY;
  ok = ok && egress_decision_verdict(d) == want;
  if (!ok)
    fprintf(
        stderr, "%s:%d -> %s/%s rule %s[%zu] (%s), want %s\n", host, port,
        egress_outcome_name(egress_decision_outcome(d)), egress_reason_name(egress_decision_reason(d)),
        egress_decision_has_rule(d) && egress_decision_rule_list(d) == EGRESS_LIST_DENY ? "deny" : "allow",
        egress_decision_rule_index(d), egress_decision_message(d), rule < 0 ? "allowed" : chain_deny[rule]);
  CU_ASSERT(ok);
  egress_decision_free(d);
  /* The plain call agrees. */
  CU_ASSERT_EQUAL(egress_check(f->checker, host, (uint16_t)port), want);
}

static void test_cname_chain_deny_list(void) {
  fixture_t f;
  egress_dns_reset(dns);
  chain_records();
  chain_fixture(&f, NULL, true);
  for (size_t i = 0; i < sizeof chain_cases / sizeof chain_cases[0]; i++)
    expect_chain(&f, chain_cases[i].host, chain_cases[i].port, chain_cases[i].rule, EGRESS_MODE_ENFORCE);
  teardown(&f);

  /* Filter mode cannot keep any address of an answer whose chain is denied. */
  egress_options_t *opts = NULL;
  CU_ASSERT_EQUAL_FATAL(egress_options_new(&opts), EGRESS_OK);
  egress_options_set_timeout_ms(opts, 400);
  egress_options_set_cache(opts, 0, 0, 0, 0);
  egress_options_set_mixed(opts, EGRESS_MIXED_FILTER);
  chain_fixture(&f, opts, true);
  for (size_t i = 0; i < sizeof chain_cases / sizeof chain_cases[0]; i++)
    expect_chain(&f, chain_cases[i].host, chain_cases[i].port, chain_cases[i].rule, EGRESS_MODE_ENFORCE);
  teardown(&f);

  /* Monitor mode: allowed, with the outcome enforce mode would give. */
  CU_ASSERT_EQUAL_FATAL(egress_options_new(&opts), EGRESS_OK);
  egress_options_set_timeout_ms(opts, 400);
  egress_options_set_cache(opts, 0, 0, 0, 0);
  egress_options_set_mode(opts, EGRESS_MODE_MONITOR);
  chain_fixture(&f, opts, true);
  for (size_t i = 0; i < sizeof chain_cases / sizeof chain_cases[0]; i++)
    expect_chain(&f, chain_cases[i].host, chain_cases[i].port, chain_cases[i].rule, EGRESS_MODE_MONITOR);
  teardown(&f);

  /* Without the deny list every chain above is allowed: the denials come
   * from the chain alone. */
  chain_fixture(&f, NULL, false);
  for (size_t i = 0; i < sizeof chain_cases / sizeof chain_cases[0]; i++)
    expect_chain(&f, chain_cases[i].host, chain_cases[i].port, -1, EGRESS_MODE_ENFORCE);
  teardown(&f);
}

/* A cached answer keeps its chain: a hit (shared cache, then the thread's
 * front copy) decides like the lookup, also after a swap to a policy whose
 * deny list names a name of the chain. */
static void test_cname_chain_cached(void) {
  fixture_t f;
  egress_dns_reset(dns);
  chain_records();
  egress_options_t *opts = NULL;
  CU_ASSERT_EQUAL_FATAL(egress_options_new(&opts), EGRESS_OK);
  egress_options_set_timeout_ms(opts, 400);
  egress_options_set_cache(opts, 4096, 60, 300, 5);
  chain_fixture(&f, opts, false);
  const char *names[] = { "c1.example.com", "c2.example.com", "c3.example.com", "c8.example.com" };
  for (int round = 0; round < 2; round++)
    for (size_t i = 0; i < 4; i++) expect_chain(&f, names[i], 443, -1, EGRESS_MODE_ENFORCE);
  egress_policy_t *denying = NULL;
  char err[EGRESS_ERRBUF_SIZE];
  CU_ASSERT_EQUAL_FATAL(egress_policy_from_entries(chain_allow, 3, chain_deny, 4, &denying, err, sizeof err),
                        EGRESS_OK);
  CU_ASSERT_EQUAL(egress_checker_set_policy(f.checker, denying), EGRESS_OK);
  unsigned long front_before = egress__cache_front_hits();
  for (int round = 0; round < 3; round++)
    for (size_t i = 0; i < 4; i++) expect_chain(&f, names[i], 443, 0, EGRESS_MODE_ENFORCE);
  CU_ASSERT(egress__cache_front_hits() > front_before);
  for (size_t i = 0; i < 4; i++) CU_ASSERT_EQUAL(egress_dns_query_count_type(dns, names[i], 1), 1);
  /* Back to the policy without a deny list: the same cached chains allow. */
  CU_ASSERT_EQUAL(egress_checker_set_policy(f.checker, f.policy), EGRESS_OK);
  for (size_t i = 0; i < 4; i++) expect_chain(&f, names[i], 443, -1, EGRESS_MODE_ENFORCE);
  egress_policy_unref(denying);
  teardown(&f);
}

/* An answer reached through a CNAME is no fresher than the CNAME: its
 * addresses carry the shortest TTL of the chain, and the cache keeps it no
 * longer, so a changed alias is seen when it expires. */
static void test_cname_chain_ttl(void) {
  fixture_t f;
  egress_dns_reset(dns);
  egress_dns_add_cname(dns, "shortalias.example.com", "long.example.net", 1);
  egress_dns_add_a(dns, "long.example.net", "93.184.216.34", 300);
  egress_options_t *opts = NULL;
  CU_ASSERT_EQUAL_FATAL(egress_options_new(&opts), EGRESS_OK);
  egress_options_set_timeout_ms(opts, 400);
  egress_options_set_cache(opts, 4096, 0, 300, 5);
  chain_fixture(&f, opts, true);
  egress_decision_t *d = check(&f, "shortalias.example.com", 443);
  CU_ASSERT_EQUAL(egress_decision_verdict(d), EGRESS_VERDICT_ALLOW);
  CU_ASSERT_EQUAL(egress_decision_address_ttl(d, 0), 1);
  egress_decision_free(d);
  /* The alias now points at a denied name: seen once the 1 s TTL is over. */
  egress_dns_reset(dns);
  egress_dns_add_cname(dns, "shortalias.example.com", "q.attacker.net", 1);
  egress_dns_add_a(dns, "q.attacker.net", "93.184.216.34", 300);
  usleep(1300 * 1000);
  expect_chain(&f, "shortalias.example.com", 443, 0, EGRESS_MODE_ENFORCE);
  teardown(&f);
}

typedef struct chain_sf_arg {
  fixture_t *f;
  egress_verdict_t verdict;
  egress_reason_t reason;
} chain_sf_arg_t;

static void *chain_sf_thread(void *p) {
  chain_sf_arg_t *a = p;
  egress_decision_t *d = NULL;
  if (egress_check_ex(a->f->checker, "slowchain.example.com", 443, NULL, &d) == EGRESS_OK) {
    a->verdict = egress_decision_verdict(d);
    a->reason = egress_decision_reason(d);
  }
  egress_decision_free(d);
  return NULL;
}

/* Checks that wait for another thread's lookup get its chain too. */
static void test_cname_chain_single_flight(void) {
  fixture_t f;
  egress_dns_reset(dns);
  egress_dns_add_cname(dns, "slowchain.example.com", "w.attacker.net", 60);
  egress_dns_add_a(dns, "w.attacker.net", "93.184.216.34", 60);
  egress_dns_set_delay_ms(dns, "slowchain.example.com", 300);
  egress_options_t *opts = NULL;
  CU_ASSERT_EQUAL_FATAL(egress_options_new(&opts), EGRESS_OK);
  egress_options_set_timeout_ms(opts, 3000);
  egress_options_set_cache(opts, 4096, 60, 300, 5);
  chain_fixture(&f, opts, true);
  enum { K = 8 };
  pthread_t th[K];
  chain_sf_arg_t args[K];
  for (int i = 0; i < K; i++) {
    args[i].f = &f;
    args[i].verdict = EGRESS_VERDICT_ALLOW;
    args[i].reason = EGRESS_REASON_NONE;
    CU_ASSERT_EQUAL_FATAL(pthread_create(&th[i], NULL, chain_sf_thread, &args[i]), 0);
  }
  for (int i = 0; i < K; i++) {
    pthread_join(th[i], NULL);
    CU_ASSERT_EQUAL(args[i].verdict, EGRESS_VERDICT_DENY);
    CU_ASSERT_EQUAL(args[i].reason, EGRESS_REASON_EXPLICIT_DENY);
  }
  CU_ASSERT(egress_dns_query_count_type(dns, "slowchain.example.com", 1) <= 2);
  teardown(&f);
}

/* Monitor mode for the deny reasons only DNS can produce. */
static void test_monitor_mode_dns_reasons(void) {
  fixture_t f;
  egress_options_t *opts = NULL;
  CU_ASSERT_EQUAL_FATAL(egress_options_new(&opts), EGRESS_OK);
  egress_options_set_timeout_ms(opts, 300);
  egress_options_set_mode(opts, EGRESS_MODE_MONITOR);
  egress_options_set_cache(opts, 0, 0, 0, 0);
  setup_opts(&f, allow_all_example, 3, NULL, 0, opts);
  egress_options_free(opts);
  egress_dns_add_a(dns, "mon-rebind.example.com", "127.0.0.1", 30);
  egress_dns_set_rcode(dns, "mon-nx.example.com", EGRESS_DNS_NXDOMAIN);
  egress_dns_set_rcode(dns, "mon-sf.example.com", EGRESS_DNS_SERVFAIL);
  egress_dns_set_drop(dns, "mon-drop.example.com", true);
  static const struct {
    const char *host;
    egress_outcome_t outcome;
    egress_reason_t reason;
  } cases[] = {
    { "mon-rebind.example.com", EGRESS_OUTCOME_DENIED, EGRESS_REASON_RESOLVED_ADDRESS_FORBIDDEN },
    { "mon-nx.example.com", EGRESS_OUTCOME_DENIED, EGRESS_REASON_NO_SUCH_HOST },
    { "mon-sf.example.com", EGRESS_OUTCOME_ENFORCEMENT_UNAVAILABLE, EGRESS_REASON_DNS_UNAVAILABLE },
    { "mon-drop.example.com", EGRESS_OUTCOME_ENFORCEMENT_UNAVAILABLE, EGRESS_REASON_DNS_UNAVAILABLE },
  };
  for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
    egress_decision_t *d = check(&f, cases[i].host, 443);
    CU_ASSERT_EQUAL(egress_decision_verdict(d), EGRESS_VERDICT_ALLOW);
    CU_ASSERT_EQUAL(egress_decision_outcome(d), cases[i].outcome);
    CU_ASSERT_EQUAL(egress_decision_reason(d), cases[i].reason);
    const char *ev = egress_decision_event_json(d);
    CU_ASSERT_PTR_NOT_NULL_FATAL(ev);
    CU_ASSERT_PTR_NOT_NULL(strstr(ev, "\"enforcementMode\":\"monitor\""));
    CU_ASSERT_PTR_NOT_NULL(strstr(ev, "\"wouldDeny\":true"));
    CU_ASSERT_PTR_NOT_NULL(strstr(ev, egress_reason_name(cases[i].reason)));
    /* Monitor mode still hands out no forbidden address. */
    CU_ASSERT_PTR_NULL(egress_decision_curl_resolve(d) ? strstr(egress_decision_curl_resolve(d), "127.0.0.1")
                                                       : NULL);
    egress_decision_free(d);
  }
  teardown(&f);
}

static CU_TestInfo resolve_tests[] = {
  { "monitor mode: DNS deny reasons allow with wouldDeny", test_monitor_mode_dns_reasons },
  { "public answers are allowed and handed back as sockaddrs and CURLOPT_RESOLVE",
    test_public_answer_allowed },
  { "rebinding answers are denied (loopback, private, metadata, embedded IPv4, mixed)",
    test_rebinding_denied },
  { "an answer that changes to loopback is denied on the next check", test_rebinding_over_time },
  { "filter mode drops forbidden addresses", test_filter_mode },
  { "NXDOMAIN, NODATA, SERVFAIL, REFUSED, timeout, slow server fail closed", test_failures_fail_closed },
  { "unreachable DNS server fails closed", test_unreachable_server },
  { "names outside the policy are never resolved", test_no_query_outside_policy },
  { "no search-list expansion with a pod resolv.conf", test_no_search_list },
  { "private ranges open only when named", test_private_range_opened_by_name },
  { "deny-list CIDRs apply to resolved and embedded addresses", test_deny_list_on_addresses },
  { "localhost and *.localhost are loopback without a query", test_localhost_is_loopback },
  { "named DNS servers are the only source (no /etc/hosts)", test_servers_only },
  { "CNAME chains and answers with 100+ addresses", test_cname_and_big_answers },
  { "the deny list applies to every name of the CNAME chain", test_cname_chain_deny_list },
  CU_TEST_INFO_NULL,
};

/* ---- DNS cache ---- */

static uint64_t counter(fixture_t *f, egress_counter_t c) { return egress_checker_counter(f->checker, c); }

static void test_cache_ttl(void) {
  fixture_t f;
  setup_cache(&f, allow_all_example, 3, 4096, 1, 2, 1);
  egress_dns_reset(dns);
  egress_dns_add_a(dns, "ttl.example.com", "93.184.216.34", 1);
  expect(&f, "ttl.example.com", 443, EGRESS_OUTCOME_ALLOWED, EGRESS_REASON_NONE);
  expect(&f, "ttl.example.com", 443, EGRESS_OUTCOME_ALLOWED, EGRESS_REASON_NONE);
  expect(&f, "ttl.example.com", 8443, EGRESS_OUTCOME_ALLOWED, EGRESS_REASON_NONE);
  /* One lookup (A + AAAA) served three checks. */
  CU_ASSERT_EQUAL(egress_dns_query_count_type(dns, "ttl.example.com", 1), 1);
  CU_ASSERT_EQUAL(counter(&f, EGRESS_COUNTER_CACHE_HITS), 2);
  CU_ASSERT_EQUAL(counter(&f, EGRESS_COUNTER_CACHE_MISSES), 1);
  CU_ASSERT_EQUAL(counter(&f, EGRESS_COUNTER_DNS_QUERIES), 1);
  egress_decision_t *d = check(&f, "ttl.example.com", 443);
  CU_ASSERT_EQUAL(egress_decision_dns_ms(d), 0.0);
  CU_ASSERT(egress_decision_address_ttl(d, 0) <= 1);
  egress_decision_free(d);
  usleep(1200 * 1000);
  expect(&f, "ttl.example.com", 443, EGRESS_OUTCOME_ALLOWED, EGRESS_REASON_NONE);
  CU_ASSERT_EQUAL(egress_dns_query_count_type(dns, "ttl.example.com", 1), 2);
  teardown(&f);
}

static void test_cache_clamp(void) {
  fixture_t f;
  /* TTL 3600 is clamped to max_ttl 1; TTL 0 is raised to min_ttl 1. */
  setup_cache(&f, allow_all_example, 3, 4096, 1, 1, 1);
  egress_dns_reset(dns);
  egress_dns_add_a(dns, "long.example.com", "93.184.216.34", 3600);
  egress_dns_add_a(dns, "zero.ttl.example.com", "93.184.216.34", 0);
  expect(&f, "long.example.com", 443, EGRESS_OUTCOME_ALLOWED, EGRESS_REASON_NONE);
  expect(&f, "zero.ttl.example.com", 443, EGRESS_OUTCOME_ALLOWED, EGRESS_REASON_NONE);
  expect(&f, "long.example.com", 443, EGRESS_OUTCOME_ALLOWED, EGRESS_REASON_NONE);
  expect(&f, "zero.ttl.example.com", 443, EGRESS_OUTCOME_ALLOWED, EGRESS_REASON_NONE);
  CU_ASSERT_EQUAL(egress_dns_query_count_type(dns, "long.example.com", 1), 1);
  CU_ASSERT_EQUAL(egress_dns_query_count_type(dns, "zero.ttl.example.com", 1), 1);
  usleep(1300 * 1000);
  expect(&f, "long.example.com", 443, EGRESS_OUTCOME_ALLOWED, EGRESS_REASON_NONE);
  expect(&f, "zero.ttl.example.com", 443, EGRESS_OUTCOME_ALLOWED, EGRESS_REASON_NONE);
  CU_ASSERT_EQUAL(egress_dns_query_count_type(dns, "long.example.com", 1), 2);
  CU_ASSERT_EQUAL(egress_dns_query_count_type(dns, "zero.ttl.example.com", 1), 2);
  teardown(&f);
}

static void test_cache_negative_and_failures(void) {
  fixture_t f;
  setup_cache(&f, allow_all_example, 3, 4096, 5, 300, 1);
  egress_dns_reset(dns);
  egress_dns_set_rcode(dns, "gone.example.com", EGRESS_DNS_NXDOMAIN);
  expect(&f, "gone.example.com", 443, EGRESS_OUTCOME_DENIED, EGRESS_REASON_NO_SUCH_HOST);
  expect(&f, "gone.example.com", 443, EGRESS_OUTCOME_DENIED, EGRESS_REASON_NO_SUCH_HOST);
  CU_ASSERT_EQUAL(egress_dns_query_count_type(dns, "gone.example.com", 1), 1);
  usleep(1200 * 1000);
  egress_dns_set_rcode(dns, "gone.example.com", -1);
  egress_dns_add_a(dns, "gone.example.com", "93.184.216.34", 60);
  expect(&f, "gone.example.com", 443, EGRESS_OUTCOME_ALLOWED, EGRESS_REASON_NONE);
  /* SERVFAIL is never cached: the next check asks again and sees the fix. */
  egress_dns_set_rcode(dns, "flaky.example.com", EGRESS_DNS_SERVFAIL);
  expect(&f, "flaky.example.com", 443, EGRESS_OUTCOME_ENFORCEMENT_UNAVAILABLE, EGRESS_REASON_DNS_UNAVAILABLE);
  egress_dns_set_rcode(dns, "flaky.example.com", -1);
  egress_dns_add_a(dns, "flaky.example.com", "93.184.216.34", 60);
  expect(&f, "flaky.example.com", 443, EGRESS_OUTCOME_ALLOWED, EGRESS_REASON_NONE);
  /* Timeouts are not cached either. */
  egress_dns_set_drop(dns, "slowpoke.example.com", true);
  expect(&f, "slowpoke.example.com", 443, EGRESS_OUTCOME_ENFORCEMENT_UNAVAILABLE,
         EGRESS_REASON_DNS_UNAVAILABLE);
  egress_dns_set_drop(dns, "slowpoke.example.com", false);
  egress_dns_add_a(dns, "slowpoke.example.com", "93.184.216.34", 60);
  expect(&f, "slowpoke.example.com", 443, EGRESS_OUTCOME_ALLOWED, EGRESS_REASON_NONE);
  teardown(&f);
}

typedef struct sf_arg {
  fixture_t *f;
  egress_verdict_t verdict;
} sf_arg_t;

static void *sf_thread(void *p) {
  sf_arg_t *a = p;
  a->verdict = egress_check(a->f->checker, "single.example.com", 443);
  return NULL;
}

static void test_single_flight(void) {
  fixture_t f;
  setup_cache(&f, allow_all_example, 3, 4096, 5, 300, 5);
  egress_options_t *opts = NULL;
  egress_checker_free(f.checker);
  CU_ASSERT_EQUAL_FATAL(egress_options_new(&opts), EGRESS_OK);
  egress_options_set_timeout_ms(opts, 3000);
  egress_options_set_dns_servers(opts, servers);
  char err[EGRESS_ERRBUF_SIZE];
  CU_ASSERT_EQUAL_FATAL(egress_checker_new(f.policy, opts, &f.checker, err, sizeof err), EGRESS_OK);
  egress_options_free(opts);
  egress_dns_reset(dns);
  egress_dns_add_a(dns, "single.example.com", "93.184.216.34", 60);
  egress_dns_set_delay_ms(dns, "single.example.com", 300);
  enum { K = 16 };
  pthread_t th[K];
  sf_arg_t args[K];
  for (int i = 0; i < K; i++) {
    args[i].f = &f;
    args[i].verdict = EGRESS_VERDICT_DENY;
    CU_ASSERT_EQUAL_FATAL(pthread_create(&th[i], NULL, sf_thread, &args[i]), 0);
  }
  for (int i = 0; i < K; i++) {
    pthread_join(th[i], NULL);
    CU_ASSERT_EQUAL(args[i].verdict, EGRESS_VERDICT_ALLOW);
  }
  /* K concurrent misses, one upstream lookup, counted by the server. */
  CU_ASSERT_EQUAL(egress_dns_query_count_type(dns, "single.example.com", 1), 1);
  CU_ASSERT_EQUAL(egress_dns_query_count_type(dns, "single.example.com", 28), 1);
  CU_ASSERT_EQUAL(counter(&f, EGRESS_COUNTER_DNS_QUERIES), 1);
  teardown(&f);
}

static void test_cache_revetted_after_swap(void) {
  fixture_t f;
  const char *wide[] = { "**.example.com", "10.0.0.0/8" };
  const char *narrow[] = { "**.example.com" };
  setup_cache(&f, wide, 2, 4096, 60, 300, 5);
  egress_dns_reset(dns);
  egress_dns_add_a(dns, "inside.example.com", "10.1.2.3", 300);
  expect(&f, "inside.example.com", 443, EGRESS_OUTCOME_ALLOWED, EGRESS_REASON_NONE);
  egress_policy_t *p2 = NULL;
  char err[EGRESS_ERRBUF_SIZE];
  CU_ASSERT_EQUAL_FATAL(egress_policy_from_entries(narrow, 1, NULL, 0, &p2, err, sizeof err), EGRESS_OK);
  CU_ASSERT_EQUAL(egress_checker_set_policy(f.checker, p2), EGRESS_OK);
  egress_policy_unref(p2);
  /* The cached 10.1.2.3 is vetted again under the new policy. */
  expect(&f, "inside.example.com", 443, EGRESS_OUTCOME_DENIED, EGRESS_REASON_RESOLVED_ADDRESS_FORBIDDEN);
  CU_ASSERT_EQUAL(egress_dns_query_count_type(dns, "inside.example.com", 1), 1);
  teardown(&f);
}

static void test_cache_lru_bound(void) {
  fixture_t f;
  setup_cache(&f, allow_all_example, 3, 3, 60, 300, 5);
  egress_dns_reset(dns);
  const char *names[] = { "l1.example.com", "l2.example.com", "l3.example.com", "l4.example.com" };
  for (int i = 0; i < 4; i++) egress_dns_add_a(dns, names[i], "93.184.216.34", 300);
  for (int i = 0; i < 3; i++) expect(&f, names[i], 443, EGRESS_OUTCOME_ALLOWED, EGRESS_REASON_NONE);
  expect(&f, names[0], 443, EGRESS_OUTCOME_ALLOWED, EGRESS_REASON_NONE); /* l1 becomes most recent */
  expect(&f, names[3], 443, EGRESS_OUTCOME_ALLOWED, EGRESS_REASON_NONE); /* evicts l2 */
  expect(&f, names[0], 443, EGRESS_OUTCOME_ALLOWED, EGRESS_REASON_NONE);
  expect(&f, names[2], 443, EGRESS_OUTCOME_ALLOWED, EGRESS_REASON_NONE);
  expect(&f, names[1], 443, EGRESS_OUTCOME_ALLOWED, EGRESS_REASON_NONE);
  CU_ASSERT_EQUAL(egress_dns_query_count_type(dns, "l1.example.com", 1), 1);
  CU_ASSERT_EQUAL(egress_dns_query_count_type(dns, "l2.example.com", 1), 2);
  CU_ASSERT_EQUAL(egress_dns_query_count_type(dns, "l3.example.com", 1), 1);
  CU_ASSERT_EQUAL(egress_dns_query_count_type(dns, "l4.example.com", 1), 1);
  teardown(&f);
}

static void test_cache_disabled(void) {
  fixture_t f;
  setup_cache(&f, allow_all_example, 3, 0, 5, 300, 5);
  egress_dns_reset(dns);
  egress_dns_add_a(dns, "nocache.example.com", "93.184.216.34", 300);
  expect(&f, "nocache.example.com", 443, EGRESS_OUTCOME_ALLOWED, EGRESS_REASON_NONE);
  expect(&f, "nocache.example.com", 443, EGRESS_OUTCOME_ALLOWED, EGRESS_REASON_NONE);
  CU_ASSERT_EQUAL(egress_dns_query_count_type(dns, "nocache.example.com", 1), 2);
  CU_ASSERT_EQUAL(counter(&f, EGRESS_COUNTER_CACHE_HITS), 0);
  teardown(&f);
}

/* Names that meet in one set of the per-thread front copy must all stay in
 * it (four ways), and a fifth must still get its own answer. */
static void test_cache_front_ways(void) {
  fixture_t f;
  setup_cache(&f, allow_all_example, 3, 4096, 60, 300, 5);
  egress_dns_reset(dns);
  char names[5][32];
  uint64_t set = UINT64_MAX;
  int found = 0;
  for (int k = 0; found < 5 && k < 100000; k++) {
    char name[32];
    snprintf(name, sizeof name, "f%d.example.com", k);
    uint64_t h = egress__name_hash(name, strlen(name));
    if (set == UINT64_MAX) set = h % 64;
    if (h % 64 != set) continue;
    snprintf(names[found], sizeof names[found], "%s", name);
    char addr[32];
    snprintf(addr, sizeof addr, "93.184.216.%d", 10 + found);
    egress_dns_add_a(dns, name, addr, 300);
    found++;
  }
  CU_ASSERT_EQUAL_FATAL(found, 5);
  /* The first check asks DNS, the second is a hit in the shared cache that
   * leaves a copy in front; from then on all four stay there. */
  for (int round = 0; round < 2; round++)
    for (int i = 0; i < 4; i++) expect(&f, names[i], 443, EGRESS_OUTCOME_ALLOWED, EGRESS_REASON_NONE);
  unsigned long before = egress__cache_front_hits();
  for (int round = 0; round < 5; round++)
    for (int i = 0; i < 4; i++) expect(&f, names[i], 443, EGRESS_OUTCOME_ALLOWED, EGRESS_REASON_NONE);
  unsigned long got = egress__cache_front_hits() - before;
  if (got != 20) printf("\n  front hits %lu, expected 20\n", got);
  CU_ASSERT_EQUAL(got, 20);
  /* A fifth name in the same set: every answer still its own. */
  for (int round = 0; round < 5; round++)
    for (int i = 0; i < 5; i++) {
      egress_decision_t *d = check(&f, names[i], 443);
      char want[32];
      snprintf(want, sizeof want, "93.184.216.%d", 10 + i);
      CU_ASSERT_EQUAL(egress_decision_verdict(d), EGRESS_VERDICT_ALLOW);
      CU_ASSERT_STRING_EQUAL(egress_decision_address(d, 0), want);
      egress_decision_free(d);
    }
  for (int i = 0; i < 5; i++) CU_ASSERT_EQUAL(egress_dns_query_count_type(dns, names[i], 1), 1);
  teardown(&f);
}

static CU_TestInfo cache_tests[] = {
  { "the per-thread front copy keeps four names of one set", test_cache_front_ways },
  { "answers are cached for their TTL and re-asked after it", test_cache_ttl },
  { "TTLs are clamped to [min_ttl, max_ttl]", test_cache_clamp },
  { "NXDOMAIN is cached for the negative TTL; SERVFAIL and timeouts never",
    test_cache_negative_and_failures },
  { "concurrent misses share one upstream query", test_single_flight },
  { "cached answers are vetted again after a policy swap", test_cache_revetted_after_swap },
  { "the cache is bounded, least recently used out first", test_cache_lru_bound },
  { "max_entries 0 disables the cache", test_cache_disabled },
  { "cached answers keep their CNAME chain", test_cname_chain_cached },
  { "a CNAME's TTL bounds the answer's", test_cname_chain_ttl },
  { "single-flight waiters get the CNAME chain", test_cname_chain_single_flight },
  CU_TEST_INFO_NULL,
};

int main(int argc, char **argv) {
  static const egress_test_suite_t suites[] = {
    { "resolve", suite_init, suite_cleanup, resolve_tests },
    { "cache", suite_init, suite_cleanup, cache_tests },
    { NULL, NULL, NULL, NULL },
  };
  return egress_test_main(argc, argv, suites);
}
