/*
 * Fuzz target: policy documents (egress_policy_from_json) and checks under
 * the policy the input makes.
 *
 * A rejected document must say why and return no policy.  An accepted one is
 * swapped into a checker that resolves from an empty hosts file (so no check
 * can reach the network), and then:
 *  - every IP literal it allows lies in an allowlist CIDR rule holding the
 *    port, in no deny-list rule, and, if special-purpose, in a rule that
 *    lies inside the special range;
 *  - no host name is ever allowed (nothing resolves);
 *  - numeric names that a URL parser would read as IPv4 are invalid_host;
 *  - every event is valid JSON.
 */
#include "egress_private.h"

#include "fuzz_common.h"

#include <cjson/cJSON.h>

static egress_checker_t *checker;
static unsigned long events_bad;

static int on_event(const char *json, size_t len, const egress_decision_t *d, void *data) {
  (void)d;
  (void)data;
  cJSON *doc = cJSON_ParseWithLength(json, len);
  if (!doc || !cJSON_IsObject(doc) || strlen(json) != len) events_bad++;
  cJSON_Delete(doc);
  return 0;
}

static void setup(void) {
  egress_options_t *o = NULL;
  egress_policy_t *empty = NULL;
  char err[EGRESS_ERRBUF_SIZE];
  if (egress_options_new(&o) != EGRESS_OK) abort();
  if (egress_options_set_hosts_file(o, fuzz_temp_file("")) != EGRESS_OK ||
      egress_options_set_cache(o, 0, 5, 300, 5) != EGRESS_OK ||
      egress_options_set_timeout_ms(o, 500) != EGRESS_OK ||
      egress_options_set_event_callback(o, on_event, NULL) != EGRESS_OK)
    abort();
  if (egress_policy_from_entries(NULL, 0, NULL, 0, &empty, err, sizeof err) != EGRESS_OK) abort();
  if (egress_checker_new(empty, o, &checker, err, sizeof err) != EGRESS_OK) {
    fprintf(stderr, "checker: %s\n", err);
    abort();
  }
  egress_policy_unref(empty);
  egress_options_free(o);
}

static bool port_in(const egress__rule_t *r, uint16_t port) {
  return port >= r->port_lo && port <= r->port_hi;
}

/* The reference: which CIDR rules of @p list hold ip:port. */
static const egress__rule_t *cidr_rule(const egress_policy_t *p, egress_list_t list, const egress__ip_t *ip,
                                       uint16_t port, unsigned min_len) {
  for (size_t i = 0; i < p->nrules[list]; i++) {
    const egress__rule_t *r = &p->rules[list][i];
    if (r->kind == EGRESS__RULE_CIDR && r->cidr.addr.family == ip->family && r->cidr.len >= min_len &&
        port_in(r, port) && egress__prefix_contains(&r->cidr, ip))
      return r;
  }
  return NULL;
}

static void check_literal(const egress_policy_t *p, const char *host, uint16_t port) {
  egress_decision_t *d = NULL;
  egress_status_t st = egress_check_ex(checker, host, port, NULL, &d);
  FUZZ_REQUIRE(st == EGRESS_OK || st == EGRESS_ENOMEM, "check_ex status %d", (int)st);
  if (egress_decision_verdict(d) == EGRESS_VERDICT_ALLOW) {
    egress__host_t h;
    const char *why = NULL;
    FUZZ_REQUIRE(st == EGRESS_OK, "allow with status %d", (int)st);
    FUZZ_REQUIRE(egress__canon_host(host, strlen(host), &h, &why) == EGRESS_OK && h.kind != EGRESS__HOST_NAME,
                 "literal %s", host);
    egress__ip_t ip = h.ip;
    egress__ip_unmap(&ip);
    egress__special_info_t info;
    egress__special_classify(&ip, &info);
    FUZZ_REQUIRE(cidr_rule(p, EGRESS_LIST_ALLOW, &ip, port, info.global ? 0 : info.open_len),
                 "%s:%u allowed by no CIDR rule (rule %s)", host, (unsigned)port,
                 egress_decision_rule_text(d) ? egress_decision_rule_text(d) : "none");
    FUZZ_REQUIRE(!cidr_rule(p, EGRESS_LIST_DENY, &ip, port, 0), "%s:%u allowed but denied by a rule", host,
                 (unsigned)port);
    FUZZ_REQUIRE(egress_decision_has_rule(d) && egress_decision_rule_list(d) == EGRESS_LIST_ALLOW,
                 "allow names no allow rule");
  }
  egress_decision_free(d);
}

static void check_name(const char *host, uint16_t port, bool must_be_invalid) {
  egress_decision_t *d = NULL;
  egress_status_t st = egress_check_ex(checker, host, port, NULL, &d);
  FUZZ_REQUIRE(st == EGRESS_OK || st == EGRESS_ENOMEM, "check_ex status %d", (int)st);
  FUZZ_REQUIRE(egress_decision_verdict(d) == EGRESS_VERDICT_DENY,
               "name %s:%u allowed with nothing resolvable (rule %s)", host, (unsigned)port,
               egress_decision_rule_text(d) ? egress_decision_rule_text(d) : "none");
  if (must_be_invalid)
    FUZZ_REQUIRE(egress_decision_reason(d) == EGRESS_REASON_INVALID_HOST, "%s: reason %s", host,
                 egress_reason_name(egress_decision_reason(d)));
  egress_decision_free(d);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  static const char *const literals[] = { "93.184.216.34",
                                          "127.0.0.1",
                                          "10.1.2.3",
                                          "169.254.169.254",
                                          "100.64.0.1",
                                          "203.0.113.7",
                                          "0.0.0.0",
                                          "255.255.255.255",
                                          "192.0.0.9",
                                          "::1",
                                          "[2001:db8::1]",
                                          "::ffff:127.0.0.1",
                                          "::ffff:93.184.216.34",
                                          "64:ff9b::7f00:1",
                                          "2002:7f00:1::1",
                                          "2606:4700::1111",
                                          "fd00:ec2::254",
                                          "[fe80::1]" };
  static const char *const numeric[] = { "2130706433", "0x7f.1",       "0177.0.0.1", "127.1",
                                         "foo.2.3.4",  "203.0.113.08", "1.2.3.4.5" };
  static const char *const names[] = { "api.example.com", "localhost", "a.b.c.example.org",
                                       "xn--bcher-kva.example", "metadata.google.internal" };
  static const uint16_t ports[] = { 443, 80, 5432 };
  char err[EGRESS_ERRBUF_SIZE];
  egress_policy_t *p = NULL;

  if (size > 1 << 20) return 0;
  if (!checker) setup();
  err[0] = '\0';
  egress_status_t st = egress_policy_from_json((const char *)data, size, &p, err, sizeof err);
  if (st != EGRESS_OK) {
    FUZZ_REQUIRE(st == EGRESS_EPOLICY || st == EGRESS_ENOMEM, "status %d", (int)st);
    FUZZ_REQUIRE(p == NULL, "policy returned with an error");
    FUZZ_REQUIRE(err[0] != '\0', "rejected without a message");
    FUZZ_REQUIRE(strlen(err) < sizeof err, "message not terminated");
    return 0;
  }
  FUZZ_REQUIRE(p != NULL, "OK without a policy");

  const char *digest = egress_policy_digest(p);
  FUZZ_REQUIRE(digest && strlen(digest) == 64 && strspn(digest, "0123456789abcdef") == 64, "digest \"%s\"",
               digest ? digest : "(null)");
  for (int l = 0; l < 2; l++) {
    size_t n = egress_policy_rule_count(p, (egress_list_t)l);
    for (size_t i = 0; i < n; i++)
      FUZZ_REQUIRE(egress_policy_rule_text(p, (egress_list_t)l, i), "rule %zu has no text", i);
    FUZZ_REQUIRE(!egress_policy_rule_text(p, (egress_list_t)l, n), "text past the end");
  }
  egress_policy_t *again = NULL;
  if (egress_policy_from_json((const char *)data, size, &again, NULL, 0) == EGRESS_OK) {
    FUZZ_REQUIRE(!strcmp(egress_policy_digest(again), digest), "digest not deterministic");
    egress_policy_unref(again);
  }

  FUZZ_REQUIRE(egress_checker_set_policy(checker, p) == EGRESS_OK, "set_policy");
  for (size_t k = 0; k < sizeof ports / sizeof *ports; k++) {
    for (size_t i = 0; i < sizeof literals / sizeof *literals; i++) check_literal(p, literals[i], ports[k]);
    for (size_t i = 0; i < sizeof numeric / sizeof *numeric; i++) check_name(numeric[i], ports[k], true);
    for (size_t i = 0; i < sizeof names / sizeof *names; i++) check_name(names[i], ports[k], false);
  }
  /* Names the policy itself mentions, at each rule's own port: the ones most
   * likely to pass the name match and reach the (empty) hosts file. */
  const egress__rule_t *rules = p->rules[EGRESS_LIST_ALLOW];
  for (size_t i = 0; i < p->nrules[EGRESS_LIST_ALLOW] && i < 16; i++) {
    char host[EGRESS__NAME_MAX + 8];
    const egress__rule_t *r = &rules[i];
    if (r->kind == EGRESS__RULE_EXACT)
      snprintf(host, sizeof host, "%s", r->name);
    else if ((r->kind == EGRESS__RULE_WILD1 || r->kind == EGRESS__RULE_WILDN) && r->name_len < 250)
      snprintf(host, sizeof host, "x.%s", r->name);
    else
      continue;
    check_name(host, r->port_lo, false);
  }
  FUZZ_REQUIRE(events_bad == 0, "%lu events were not valid JSON", events_bad);

  /* Leave the checker on an empty policy so this one is freed now. */
  egress_policy_t *empty = NULL;
  if (egress_policy_from_entries(NULL, 0, NULL, 0, &empty, NULL, 0) == EGRESS_OK) {
    (void)egress_checker_set_policy(checker, empty);
    egress_policy_unref(empty);
  }
  egress_policy_unref(p);
  return 0;
}
