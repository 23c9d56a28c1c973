/*
 * DNS fault matrix: every way a DNS answer can go wrong, through
 * the real resolver path against our loopback responder.  Each case states
 * the outcome and reason the check must reach, and a time bound.  The test
 * prints the matrix it ran so the figures can be quoted.
 */
#include "egress_private.h"
#include "responder.h"
#include "testutil.h"

#include <stdio.h>
#include <string.h>
#include <time.h>

#define TIMEOUT_MS 300
#define BOUND_MS   1500 /* generous for sanitizer and valgrind runs */

static egress_dns_responder_t *dns;
static egress_policy_t *policy;
static char dead_server[64];

static void setup_none(const char *n) { (void)n; }
static void setup_drop(const char *n) { egress_dns_set_drop(dns, n, true); }
static void setup_servfail(const char *n) { egress_dns_set_rcode(dns, n, EGRESS_DNS_SERVFAIL); }
static void setup_refused(const char *n) { egress_dns_set_rcode(dns, n, EGRESS_DNS_REFUSED); }
static void setup_nxdomain(const char *n) { egress_dns_set_rcode(dns, n, EGRESS_DNS_NXDOMAIN); }
static void setup_nodata(const char *n) { egress_dns_set_rcode(dns, n, 0); }
static void setup_tc_public(const char *n) {
  egress_dns_add_a(dns, n, "93.184.216.34", 60);
  egress_dns_set_truncate(dns, n, true);
}
static void setup_tc_private(const char *n) {
  egress_dns_add_a(dns, n, "93.184.216.34", 60);
  egress_dns_add_a(dns, n, "10.0.0.9", 60);
  egress_dns_set_truncate(dns, n, true);
}
static void setup_tc_no_tcp(const char *n) {
  setup_tc_public(n);
  egress_dns_set_tcp_mode(dns, EGRESS_DNS_TCP_REFUSE);
}
static void setup_tc_tcp_silent(const char *n) {
  setup_tc_public(n);
  egress_dns_set_tcp_mode(dns, EGRESS_DNS_TCP_SILENT);
}
static void setup_malformed_rr(const char *n) {
  egress_dns_add_a(dns, n, "93.184.216.34", 60);
  egress_dns_set_malformed(dns, n, EGRESS_DNS_MALFORMED_TRUNCATED_RR);
}
static void setup_malformed_short(const char *n) {
  egress_dns_add_a(dns, n, "93.184.216.34", 60);
  egress_dns_set_malformed(dns, n, EGRESS_DNS_MALFORMED_SHORT);
}
static void setup_malformed_loop(const char *n) {
  egress_dns_add_a(dns, n, "93.184.216.34", 60);
  egress_dns_set_malformed(dns, n, EGRESS_DNS_MALFORMED_LOOP);
}
static void setup_malformed_rdlen(const char *n) {
  egress_dns_add_a(dns, n, "93.184.216.34", 60);
  egress_dns_set_malformed(dns, n, EGRESS_DNS_MALFORMED_BAD_RDLEN);
}
static void setup_malformed_label(const char *n) {
  egress_dns_add_a(dns, n, "93.184.216.34", 60);
  egress_dns_set_malformed(dns, n, EGRESS_DNS_MALFORMED_BAD_LABEL);
}
static void setup_wrong_id(const char *n) {
  egress_dns_add_a(dns, n, "93.184.216.34", 60);
  egress_dns_set_wrong_id(dns, n, true);
}
static void setup_wrong_name(const char *n) {
  egress_dns_add_a(dns, n, "93.184.216.34", 60);
  egress_dns_set_wrong_name(dns, n, true);
}
static void setup_cname_forbidden(const char *n) {
  egress_dns_add_cname(dns, n, "hop1.elsewhere.test", 60);
  egress_dns_add_cname(dns, "hop1.elsewhere.test", "hop2.elsewhere.test", 60);
  egress_dns_add_a(dns, "hop2.elsewhere.test", "169.254.169.254", 60);
}
static void setup_cname_loop(const char *n) {
  egress_dns_add_cname(dns, n, "loop-b.elsewhere.test", 60);
  egress_dns_add_cname(dns, "loop-b.elsewhere.test", n, 60);
}
static void setup_many_public(const char *n) {
  char ip[32];
  for (int i = 0; i < 130; i++) {
    snprintf(ip, sizeof ip, "151.101.%d.%d", i / 200, i % 200 + 1);
    egress_dns_add_a(dns, n, ip, 60);
  }
}
static void setup_many_one_private(const char *n) {
  setup_many_public(n);
  egress_dns_add_a(dns, n, "192.168.7.7", 60);
}
static void setup_ttl0(const char *n) { egress_dns_add_a(dns, n, "93.184.216.34", 0); }
static void setup_slow(const char *n) {
  egress_dns_add_a(dns, n, "93.184.216.34", 60);
  egress_dns_set_delay_ms(dns, n, TIMEOUT_MS * 3);
}
static void setup_slow_within(const char *n) {
  egress_dns_add_a(dns, n, "93.184.216.34", 60);
  egress_dns_set_delay_ms(dns, n, TIMEOUT_MS / 5);
}
static void setup_only_aaaa(const char *n) { egress_dns_add_aaaa(dns, n, "2606:4700::6810:84e5", 60); }
static void setup_only_aaaa_loop(const char *n) { egress_dns_add_aaaa(dns, n, "::1", 60); }
static void setup_only_a(const char *n) { egress_dns_add_a(dns, n, "93.184.216.34", 60); }

typedef struct fault_case {
  const char *label;
  const char *name;
  void (*setup)(const char *name);
  bool unreachable; /* use a server nobody listens on */
  egress_outcome_t outcome;
  egress_reason_t reason;
} fault_case_t;

#define UNAVAILABLE EGRESS_OUTCOME_ENFORCEMENT_UNAVAILABLE, EGRESS_REASON_DNS_UNAVAILABLE
#define NO_HOST     EGRESS_OUTCOME_DENIED, EGRESS_REASON_NO_SUCH_HOST
#define FORBIDDEN   EGRESS_OUTCOME_DENIED, EGRESS_REASON_RESOLVED_ADDRESS_FORBIDDEN
#define ALLOWED     EGRESS_OUTCOME_ALLOWED, EGRESS_REASON_NONE

static const fault_case_t cases[] = {
  { "timeout (no answer)", "f-drop.example.com", setup_drop, false, UNAVAILABLE },
  { "SERVFAIL", "f-servfail.example.com", setup_servfail, false, UNAVAILABLE },
  { "REFUSED", "f-refused.example.com", setup_refused, false, UNAVAILABLE },
  { "NXDOMAIN", "f-nx.example.com", setup_nxdomain, false, NO_HOST },
  { "empty answer (NODATA)", "f-nodata.example.com", setup_nodata, false, NO_HOST },
  { "truncated, TCP fallback, public", "f-tc.example.com", setup_tc_public, false, ALLOWED },
  { "truncated, TCP fallback, private inside", "f-tc-priv.example.com", setup_tc_private, false, FORBIDDEN },
  { "truncated, no TCP service", "f-tc-notcp.example.com", setup_tc_no_tcp, false, UNAVAILABLE },
  { "truncated, TCP never answers", "f-tc-silent.example.com", setup_tc_tcp_silent, false, UNAVAILABLE },
  { "malformed: answer record cut off", "f-mal-rr.example.com", setup_malformed_rr, false, UNAVAILABLE },
  { "malformed: shorter than a header", "f-mal-short.example.com", setup_malformed_short, false,
    UNAVAILABLE },
  { "malformed: compression loop", "f-mal-loop.example.com", setup_malformed_loop, false, UNAVAILABLE },
  { "malformed: A record with RDLENGTH 3", "f-mal-rdlen.example.com", setup_malformed_rdlen, false, NO_HOST },
  { "malformed: bad label", "f-mal-label.example.com", setup_malformed_label, false, UNAVAILABLE },
  { "wrong query id", "f-wrongid.example.com", setup_wrong_id, false, UNAVAILABLE },
  { "answer for a different name", "f-wrongname.example.com", setup_wrong_name, false, NO_HOST },
  { "CNAME chain to the metadata address", "f-cname.example.com", setup_cname_forbidden, false, FORBIDDEN },
  { "CNAME loop", "f-cloop.example.com", setup_cname_loop, false, NO_HOST },
  { "130 public addresses", "f-many.example.com", setup_many_public, false, ALLOWED },
  { "130 public + 1 private address", "f-many-priv.example.com", setup_many_one_private, false, FORBIDDEN },
  { "TTL 0", "f-ttl0.example.com", setup_ttl0, false, ALLOWED },
  { "server unreachable", "f-unreach.example.com", setup_none, true, UNAVAILABLE },
  { "slow server, past the timeout", "f-slow.example.com", setup_slow, false, UNAVAILABLE },
  { "slow server, within the timeout", "f-slowok.example.com", setup_slow_within, false, ALLOWED },
  { "only AAAA, public", "f-aaaa.example.com", setup_only_aaaa, false, ALLOWED },
  { "only AAAA, loopback", "f-aaaa-lo.example.com", setup_only_aaaa_loop, false, FORBIDDEN },
  { "only A, public (AAAA NODATA)", "f-a-only.example.com", setup_only_a, false, ALLOWED },
};

static int suite_init(void) {
  dns = egress_dns_start("127.0.0.1");
  if (!dns) return 1;
  egress_dns_responder_t *gone = egress_dns_start("127.0.0.1");
  if (!gone) return 1;
  egress_dns_server_csv(gone, dead_server, sizeof dead_server);
  egress_dns_stop(gone);
  return 0;
}

static int suite_cleanup(void) {
  egress_dns_stop(dns);
  return 0;
}

static egress_checker_t *make_checker(const char *servers) {
  egress_options_t *opts = NULL;
  egress_checker_t *c = NULL;
  char err[EGRESS_ERRBUF_SIZE];
  if (!policy) {
    const char *allow[] = { "**.example.com" };
    if (egress_policy_from_entries(allow, 1, NULL, 0, &policy, err, sizeof err) != EGRESS_OK) return NULL;
  }
  if (egress_options_new(&opts) != EGRESS_OK) return NULL;
  egress_options_set_timeout_ms(opts, TIMEOUT_MS);
  egress_options_set_cache(opts, 0, 0, 0, 0); /* every check asks */
  egress_options_set_dns_servers(opts, servers);
  if (egress_checker_new(policy, opts, &c, err, sizeof err) != EGRESS_OK) c = NULL;
  egress_options_free(opts);
  return c;
}

static double now_ms(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec * 1000.0 + (double)ts.tv_nsec / 1e6;
}

static void test_matrix(void) {
  char servers[64];
  egress_dns_server_csv(dns, servers, sizeof servers);
  egress_checker_t *live = make_checker(servers);
  egress_checker_t *dead = make_checker(dead_server);
  CU_ASSERT_PTR_NOT_NULL_FATAL(live);
  CU_ASSERT_PTR_NOT_NULL_FATAL(dead);
  printf("\n%-42s %-26s %-28s %8s\n", "fault", "outcome", "reason", "ms");
  for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
    const fault_case_t *fc = &cases[i];
    egress_dns_reset(dns);
    egress_dns_set_tcp_mode(dns, EGRESS_DNS_TCP_SERVE);
    fc->setup(fc->name);
    /* Twice: the second run shows the outcome does not depend on state the
     * first left behind (no caching of failures, no stuck channel). */
    for (int round = 0; round < 2; round++) {
      egress_decision_t *d = NULL;
      double t0 = now_ms();
      egress_status_t st = egress_check_ex(fc->unreachable ? dead : live, fc->name, 443, NULL, &d);
      double ms = now_ms() - t0;
      CU_ASSERT_EQUAL(st, EGRESS_OK);
      CU_ASSERT_PTR_NOT_NULL_FATAL(d);
      bool ok = egress_decision_outcome(d) == fc->outcome && egress_decision_reason(d) == fc->reason;
      if (round == 0 || !ok)
        printf("%-42s %-26s %-28s %8.1f%s\n", fc->label, egress_outcome_name(egress_decision_outcome(d)),
               egress_reason_name(egress_decision_reason(d)), ms, ok ? "" : "   <-- WRONG");
      CU_ASSERT(ok);
      CU_ASSERT(ms < BOUND_MS);
      /* Fail closed in the types: anything but allowed is a deny. */
      CU_ASSERT_EQUAL(egress_decision_verdict(d), fc->outcome == EGRESS_OUTCOME_ALLOWED && ok
                                                      ? EGRESS_VERDICT_ALLOW
                                                      : EGRESS_VERDICT_DENY);
      egress_decision_free(d);
    }
  }
  egress_dns_set_tcp_mode(dns, EGRESS_DNS_TCP_SERVE);
  egress_checker_free(live);
  egress_checker_free(dead);
  egress_policy_unref(policy);
  policy = NULL;
}

static CU_TestInfo fault_tests[] = {
  { "DNS fault matrix: outcome, reason and time bound of every fault", test_matrix },
  CU_TEST_INFO_NULL,
};

int main(int argc, char **argv) {
  static const egress_test_suite_t suites[] = {
    { "faults", suite_init, suite_cleanup, fault_tests },
    { NULL, NULL, NULL, NULL },
  };
  return egress_test_main(argc, argv, suites);
}
