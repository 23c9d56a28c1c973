/*
 * The public API surface: every status, reason and outcome has a unique
 * snake_case token and a message; every public function survives NULL
 * arguments and answers with an error or a deny; option setters refuse
 * values outside their documented ranges.
 */
#include "egress_private.h"
#include "resolve.h"
#include "testutil.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ------------------------------------------------------------------------ */
/* Names and messages                                                        */
/* ------------------------------------------------------------------------ */

static bool is_snake_token(const char *s) {
  if (!s || !*s || !(s[0] >= 'a' && s[0] <= 'z')) return false;
  size_t n = strlen(s);
  if (s[n - 1] == '_') return false;
  for (size_t i = 0; i < n; i++) {
    char c = s[i];
    if (!((c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '_')) return false;
    if (c == '_' && s[i + 1] == '_') return false;
  }
  return true;
}

static void test_status_names(void) {
  static const struct {
    egress_status_t st;
    int value;
    const char *token;
  } all[] = {
#define ROW_(name, value, token, message) { EGRESS_##name, value, token },
    EGRESS_STATUS_MAP(ROW_)
#undef ROW_
  };
  size_t n = sizeof all / sizeof all[0];
  CU_ASSERT_EQUAL(EGRESS_OK, 0);
  for (size_t i = 0; i < n; i++) {
    const char *name = egress_status_name(all[i].st);
    CU_ASSERT_EQUAL((int)all[i].st, all[i].value);
    CU_ASSERT_STRING_EQUAL(name, all[i].token);
    CU_ASSERT(is_snake_token(name));
    CU_ASSERT_STRING_NOT_EQUAL(name, "unknown");
    const char *msg = egress_strerror(all[i].st);
    CU_ASSERT_PTR_NOT_NULL_FATAL(msg);
    CU_ASSERT(strlen(msg) > 0);
    for (size_t j = 0; j < i; j++) {
      CU_ASSERT_STRING_NOT_EQUAL(name, egress_status_name(all[j].st));
      CU_ASSERT_STRING_NOT_EQUAL(msg, egress_strerror(all[j].st));
      CU_ASSERT_NOT_EQUAL((int)all[i].st, (int)all[j].st);
    }
  }
  /* Values are dense from 0: any value past the list is unknown. */
  const int bad[] = { -1, (int)n, (int)n + 1, 100, 0x7fffffff, -0x7fffffff };
  for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
    CU_ASSERT_STRING_EQUAL(egress_status_name((egress_status_t)bad[i]), "unknown");
    const char *msg = egress_strerror((egress_status_t)bad[i]);
    CU_ASSERT_PTR_NOT_NULL_FATAL(msg);
    CU_ASSERT(strlen(msg) > 0);
  }
}

static void test_reason_names(void) {
  static const struct {
    egress_reason_t r;
    int value;
    const char *token;
  } all[] = {
#define ROW_(name, value, token, message) { EGRESS_REASON_##name, value, token },
    EGRESS_REASON_MAP(ROW_)
#undef ROW_
  };
  int n = (int)(sizeof all / sizeof all[0]);
  CU_ASSERT_EQUAL(egress_reason_count(), n);
  /* The reason codes docs/check.md names, all present. */
  static const char *const design[] = { "invalid_host",
                                        "invalid_port",
                                        "empty_allowlist",
                                        "explicit_deny",
                                        "not_in_allowlist",
                                        "port_not_allowed",
                                        "special_purpose_address",
                                        "no_such_host",
                                        "resolved_address_forbidden",
                                        "dns_unavailable",
                                        "audit_unavailable" };
  for (size_t k = 0; k < sizeof design / sizeof design[0]; k++) {
    bool found = false;
    for (int r = 0; r < egress_reason_count(); r++)
      if (!strcmp(egress_reason_name((egress_reason_t)r), design[k])) found = true;
    CU_ASSERT(found);
    if (!found) printf("\nmissing reason %s\n", design[k]);
  }
  for (int i = 0; i < n; i++) {
    CU_ASSERT_EQUAL((int)all[i].r, i); /* dense: loops over 0..count-1 see every code */
    const char *name = egress_reason_name((egress_reason_t)i);
    CU_ASSERT_STRING_EQUAL(name, all[i].token);
    CU_ASSERT(is_snake_token(name));
    CU_ASSERT_STRING_NOT_EQUAL(name, "unknown");
    const char *msg = egress_reason_message((egress_reason_t)i);
    CU_ASSERT_PTR_NOT_NULL_FATAL(msg);
    CU_ASSERT(strlen(msg) > 0);
    for (int j = 0; j < i; j++) {
      CU_ASSERT_STRING_NOT_EQUAL(name, egress_reason_name((egress_reason_t)j));
      CU_ASSERT_STRING_NOT_EQUAL(msg, egress_reason_message((egress_reason_t)j));
    }
  }
  const int bad[] = { -1, n, n + 1, 255, 0x7fffffff };
  for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
    CU_ASSERT_STRING_EQUAL(egress_reason_name((egress_reason_t)bad[i]), "unknown");
    const char *msg = egress_reason_message((egress_reason_t)bad[i]);
    CU_ASSERT_PTR_NOT_NULL_FATAL(msg);
    CU_ASSERT(strlen(msg) > 0);
  }
}

static void test_outcome_names(void) {
  static const struct {
    egress_outcome_t o;
    const char *token;
  } all[] = {
#define ROW_(name, value, token) { EGRESS_OUTCOME_##name, token },
    EGRESS_OUTCOME_MAP(ROW_)
#undef ROW_
  };
  size_t n = sizeof all / sizeof all[0];
  CU_ASSERT_EQUAL(n, 3);
  CU_ASSERT_STRING_EQUAL(egress_outcome_name(EGRESS_OUTCOME_ALLOWED), "allowed");
  CU_ASSERT_STRING_EQUAL(egress_outcome_name(EGRESS_OUTCOME_DENIED), "denied");
  CU_ASSERT_STRING_EQUAL(egress_outcome_name(EGRESS_OUTCOME_ENFORCEMENT_UNAVAILABLE),
                         "enforcement_unavailable");
  for (size_t i = 0; i < n; i++) {
    CU_ASSERT_EQUAL((size_t)all[i].o, i);
    const char *name = egress_outcome_name(all[i].o);
    CU_ASSERT_STRING_EQUAL(name, all[i].token);
    CU_ASSERT(is_snake_token(name));
    for (size_t j = 0; j < i; j++) CU_ASSERT_STRING_NOT_EQUAL(name, egress_outcome_name(all[j].o));
  }
  const int bad[] = { -1, 3, 4, 1000 };
  for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++)
    CU_ASSERT_STRING_EQUAL(egress_outcome_name((egress_outcome_t)bad[i]), "unknown");
  /* Deny is the zero value so that zeroed memory means deny. */
  CU_ASSERT_EQUAL(EGRESS_VERDICT_DENY, 0);
  CU_ASSERT_EQUAL(EGRESS_MODE_ENFORCE, 0);
  CU_ASSERT_EQUAL(EGRESS_MIXED_DENY, 0);
}

static void test_version(void) {
  CU_ASSERT_PTR_NOT_NULL_FATAL(egress_version());
  CU_ASSERT_STRING_EQUAL(egress_version(), EGRESS_VERSION_STRING);
  char buf[64];
  snprintf(buf, sizeof buf, "%d.%d.%d", EGRESS_VERSION_MAJOR, EGRESS_VERSION_MINOR, EGRESS_VERSION_PATCH);
  CU_ASSERT_STRING_EQUAL(egress_version(), buf);
  const char *sv = egress_special_ranges_version();
  CU_ASSERT_PTR_NOT_NULL_FATAL(sv);
  CU_ASSERT(strlen(sv) > 0);
}

/* ------------------------------------------------------------------------ */
/* NULL arguments                                                            */
/* ------------------------------------------------------------------------ */

static egress_policy_t *small_policy(void) {
  const char *allow[] = { "api.example.com", "0.0.0.0/0" };
  egress_policy_t *p = NULL;
  CU_ASSERT_FATAL(egress_policy_from_entries(allow, 2, NULL, 0, &p, NULL, 0) == EGRESS_OK);
  return p;
}

static void assert_null_decision_reads_deny(const egress_decision_t *d) {
  CU_ASSERT_EQUAL(egress_decision_verdict(d), EGRESS_VERDICT_DENY);
  CU_ASSERT_NOT_EQUAL(egress_decision_outcome(d), EGRESS_OUTCOME_ALLOWED);
  CU_ASSERT_EQUAL(egress_decision_reason(d), EGRESS_REASON_INTERNAL_ERROR);
}

static void test_null_policy_calls(void) {
  char err[EGRESS_ERRBUF_SIZE];
  egress_policy_t *p = (egress_policy_t *)(uintptr_t)1;
  CU_ASSERT_EQUAL(egress_policy_from_json(NULL, 0, &p, err, sizeof err), EGRESS_EINVAL);
  CU_ASSERT_PTR_NULL(p);
  CU_ASSERT_EQUAL(egress_policy_from_json(NULL, 10, &p, NULL, 0), EGRESS_EINVAL);
  CU_ASSERT_PTR_NULL(p);
  CU_ASSERT_EQUAL(egress_policy_from_json("{}", 2, NULL, err, sizeof err), EGRESS_EINVAL);
  CU_ASSERT_EQUAL(egress_policy_from_json("{}", 2, NULL, NULL, 0), EGRESS_EINVAL);
  p = (egress_policy_t *)(uintptr_t)1;
  CU_ASSERT_NOT_EQUAL(egress_policy_from_file(NULL, &p, err, sizeof err), EGRESS_OK);
  CU_ASSERT_PTR_NULL(p);
  CU_ASSERT_EQUAL(egress_policy_from_file("/nonexistent", NULL, NULL, 0), EGRESS_EINVAL);
  p = (egress_policy_t *)(uintptr_t)1;
  CU_ASSERT_EQUAL(egress_policy_from_entries(NULL, 2, NULL, 0, &p, err, sizeof err), EGRESS_EINVAL);
  CU_ASSERT_PTR_NULL(p);
  const char *allow[] = { "api.example.com" };
  p = (egress_policy_t *)(uintptr_t)1;
  CU_ASSERT_EQUAL(egress_policy_from_entries(allow, 1, NULL, 3, &p, err, sizeof err), EGRESS_EINVAL);
  CU_ASSERT_PTR_NULL(p);
  CU_ASSERT_EQUAL(egress_policy_from_entries(allow, 1, NULL, 0, NULL, err, sizeof err), EGRESS_EINVAL);
  /* A NULL string inside the array is an invalid entry, not a crash. */
  const char *holes[] = { "api.example.com", NULL };
  p = (egress_policy_t *)(uintptr_t)1;
  CU_ASSERT_NOT_EQUAL(egress_policy_from_entries(holes, 2, NULL, 0, &p, err, sizeof err), EGRESS_OK);
  CU_ASSERT_PTR_NULL(p);
  p = (egress_policy_t *)(uintptr_t)1;
  CU_ASSERT_NOT_EQUAL(egress_policy_from_entries(allow, 1, holes + 1, 1, &p, err, sizeof err), EGRESS_OK);
  CU_ASSERT_PTR_NULL(p);

  CU_ASSERT_PTR_NULL(egress_policy_ref(NULL));
  egress_policy_unref(NULL);
  CU_ASSERT_EQUAL(egress_policy_rule_count(NULL, EGRESS_LIST_ALLOW), 0);
  CU_ASSERT_EQUAL(egress_policy_rule_count(NULL, EGRESS_LIST_DENY), 0);
  CU_ASSERT_PTR_NULL(egress_policy_rule_text(NULL, EGRESS_LIST_ALLOW, 0));
  CU_ASSERT_PTR_NULL(egress_policy_digest(NULL));

  p = small_policy();
  CU_ASSERT_EQUAL(egress_policy_rule_count(p, (egress_list_t)2), 0);
  CU_ASSERT_EQUAL(egress_policy_rule_count(p, (egress_list_t)-1), 0);
  CU_ASSERT_PTR_NULL(egress_policy_rule_text(p, EGRESS_LIST_ALLOW, 2));
  CU_ASSERT_PTR_NULL(egress_policy_rule_text(p, EGRESS_LIST_ALLOW, (size_t)-1));
  CU_ASSERT_PTR_NULL(egress_policy_rule_text(p, EGRESS_LIST_DENY, 0));
  CU_ASSERT_PTR_NULL(egress_policy_rule_text(p, (egress_list_t)7, 0));
  CU_ASSERT_STRING_EQUAL(egress_policy_rule_text(p, EGRESS_LIST_ALLOW, 1), "0.0.0.0/0");
  egress_policy_unref(p);
  egress_free(NULL);
}

static void test_null_options_calls(void) {
  CU_ASSERT_EQUAL(egress_options_new(NULL), EGRESS_EINVAL);
  egress_options_free(NULL);
  CU_ASSERT_EQUAL(egress_options_set_mode(NULL, EGRESS_MODE_MONITOR), EGRESS_EINVAL);
  CU_ASSERT_EQUAL(egress_options_set_mixed(NULL, EGRESS_MIXED_FILTER), EGRESS_EINVAL);
  CU_ASSERT_EQUAL(egress_options_set_dns_servers(NULL, "127.0.0.1"), EGRESS_EINVAL);
  CU_ASSERT_EQUAL(egress_options_set_hosts_file(NULL, "/etc/hosts"), EGRESS_EINVAL);
  CU_ASSERT_EQUAL(egress_options_set_timeout_ms(NULL, 100), EGRESS_EINVAL);
  CU_ASSERT_EQUAL(egress_options_set_cache(NULL, 1, 1, 2, 1), EGRESS_EINVAL);
  CU_ASSERT_EQUAL(egress_options_add_pref64(NULL, "64:ff9b::/96"), EGRESS_EINVAL);
  CU_ASSERT_EQUAL(egress_options_set_event_source(NULL, "/x"), EGRESS_EINVAL);
  CU_ASSERT_EQUAL(egress_options_set_event_callback(NULL, NULL, NULL), EGRESS_EINVAL);
  CU_ASSERT_EQUAL(egress_options_set_event_fd(NULL, 1), EGRESS_EINVAL);
  CU_ASSERT_EQUAL(egress_options_set_event_path(NULL, "/tmp/x"), EGRESS_EINVAL);
  CU_ASSERT_EQUAL(egress_options_set_audit_required(NULL, true), EGRESS_EINVAL);

  /* NULL values on a real object clear, they do not crash. */
  egress_options_t *o = NULL;
  CU_ASSERT_FATAL(egress_options_new(&o) == EGRESS_OK);
  CU_ASSERT_EQUAL(egress_options_set_dns_servers(o, NULL), EGRESS_OK);
  CU_ASSERT_EQUAL(egress_options_set_dns_servers(o, ""), EGRESS_OK);
  CU_ASSERT_EQUAL(egress_options_set_hosts_file(o, NULL), EGRESS_OK);
  CU_ASSERT_EQUAL(egress_options_set_event_source(o, NULL), EGRESS_OK);
  CU_ASSERT_EQUAL(egress_options_set_event_callback(o, NULL, NULL), EGRESS_OK);
  CU_ASSERT_EQUAL(egress_options_set_event_path(o, NULL), EGRESS_OK);
  CU_ASSERT_NOT_EQUAL(egress_options_add_pref64(o, NULL), EGRESS_OK);
  egress_options_free(o);
}

static void test_null_checker_calls(void) {
  char err[EGRESS_ERRBUF_SIZE];
  egress_policy_t *p = small_policy();
  egress_checker_t *c = (egress_checker_t *)(uintptr_t)1;
  err[0] = '\0';
  CU_ASSERT_EQUAL(egress_checker_new(NULL, NULL, &c, err, sizeof err), EGRESS_EINVAL);
  CU_ASSERT_PTR_NULL(c);
  CU_ASSERT(strlen(err) > 0);
  CU_ASSERT_EQUAL(egress_checker_new(p, NULL, NULL, err, sizeof err), EGRESS_EINVAL);
  CU_ASSERT_EQUAL(egress_checker_new(NULL, NULL, NULL, NULL, 0), EGRESS_EINVAL);
  egress_checker_free(NULL);
  CU_ASSERT_EQUAL(egress_checker_set_policy(NULL, p), EGRESS_EINVAL);
  bool changed = true;
  CU_ASSERT_EQUAL(egress_checker_reload_file(NULL, "/nonexistent", &changed, err, sizeof err), EGRESS_EINVAL);
  CU_ASSERT_FALSE(changed);
  CU_ASSERT_EQUAL(egress_checker_reload_file(NULL, NULL, NULL, NULL, 0), EGRESS_EINVAL);
  CU_ASSERT_PTR_NULL(egress_checker_policy(NULL));
  CU_ASSERT_EQUAL(egress_checker_counter(NULL, EGRESS_COUNTER_CHECKS), 0);
  CU_ASSERT_EQUAL(egress_checker_checks_by(NULL, EGRESS_OUTCOME_DENIED, EGRESS_REASON_INVALID_HOST), 0);
  CU_ASSERT_PTR_NULL(egress_checker_metrics(NULL));

  /* Checks without a checker deny. */
  CU_ASSERT_EQUAL(egress_check(NULL, "api.example.com", 443), EGRESS_VERDICT_DENY);
  CU_ASSERT_EQUAL(egress_check(NULL, NULL, 0), EGRESS_VERDICT_DENY);
  egress_decision_t *d = NULL;
  CU_ASSERT_NOT_EQUAL(egress_check_ex(NULL, "api.example.com", 443, NULL, &d), EGRESS_OK);
  CU_ASSERT_EQUAL(egress_decision_verdict(d), EGRESS_VERDICT_DENY);
  CU_ASSERT_NOT_EQUAL(egress_decision_outcome(d), EGRESS_OUTCOME_ALLOWED);
  egress_decision_free(d);
  d = NULL;
  CU_ASSERT_NOT_EQUAL(egress_check_url(NULL, "https://api.example.com/", NULL, &d), EGRESS_OK);
  CU_ASSERT_EQUAL(egress_decision_verdict(d), EGRESS_VERDICT_DENY);
  egress_decision_free(d);
  CU_ASSERT_EQUAL(egress_check_ex(NULL, "api.example.com", 443, NULL, NULL), EGRESS_EINVAL);
  CU_ASSERT_EQUAL(egress_check_url(NULL, "https://api.example.com/", NULL, NULL), EGRESS_EINVAL);

  /* A real checker: NULL host / URL / out / policy. */
  CU_ASSERT_FATAL(egress_checker_new(p, NULL, &c, err, sizeof err) == EGRESS_OK);
  CU_ASSERT_EQUAL(egress_checker_set_policy(c, NULL), EGRESS_EINVAL);
  changed = true;
  CU_ASSERT_EQUAL(egress_checker_reload_file(c, NULL, &changed, err, sizeof err), EGRESS_EINVAL);
  CU_ASSERT_FALSE(changed);
  CU_ASSERT_EQUAL(egress_check(c, NULL, 443), EGRESS_VERDICT_DENY);
  CU_ASSERT_EQUAL(egress_check_ex(c, "8.8.8.8", 443, NULL, NULL), EGRESS_EINVAL);
  CU_ASSERT_EQUAL(egress_check_url(c, "https://8.8.8.8/", NULL, NULL), EGRESS_EINVAL);
  d = NULL;
  CU_ASSERT_EQUAL(egress_check_ex(c, NULL, 443, NULL, &d), EGRESS_OK);
  CU_ASSERT_EQUAL(egress_decision_verdict(d), EGRESS_VERDICT_DENY);
  CU_ASSERT_EQUAL(egress_decision_reason(d), EGRESS_REASON_INVALID_HOST);
  CU_ASSERT_PTR_NULL(egress_decision_host(d));
  CU_ASSERT_PTR_NULL(egress_decision_destination_host(d));
  egress_decision_free(d);
  d = NULL;
  CU_ASSERT_EQUAL(egress_check_url(c, NULL, NULL, &d), EGRESS_OK);
  CU_ASSERT_EQUAL(egress_decision_verdict(d), EGRESS_VERDICT_DENY);
  CU_ASSERT_EQUAL(egress_decision_reason(d), EGRESS_REASON_INVALID_HOST);
  egress_decision_free(d);
  CU_ASSERT_EQUAL(egress_checker_counter(c, (egress_counter_t)-1), 0);
  CU_ASSERT_EQUAL(egress_checker_counter(c, (egress_counter_t)9), 0);
  CU_ASSERT_EQUAL(egress_checker_checks_by(c, (egress_outcome_t)3, EGRESS_REASON_NONE), 0);
  CU_ASSERT_EQUAL(egress_checker_checks_by(c, EGRESS_OUTCOME_DENIED, (egress_reason_t)-1), 0);
  CU_ASSERT_EQUAL(egress_checker_checks_by(c, EGRESS_OUTCOME_DENIED, (egress_reason_t)99), 0);
  egress_policy_t *cur = egress_checker_policy(c);
  CU_ASSERT_PTR_EQUAL(cur, p);
  egress_policy_unref(cur);
  egress_checker_free(c);
  egress_policy_unref(p);
}

static int count_events(const char *json, size_t len, const egress_decision_t *d, void *user) {
  (void)json;
  (void)len;
  (void)d;
  ++*(int *)user;
  return 0;
}

/* A decision checked into again keeps nothing of the check before: not its
 * rule, addresses, message, URL, context nor event. */
static void test_check_into_reuse(void) {
  const char *allow[] = { "8.8.8.8", "https://api.example.com/v1" };
  egress_policy_t *p = NULL;
  egress_checker_t *quiet = NULL, *loud = NULL;
  egress_options_t *o = NULL;
  egress_decision_t *d = NULL;
  egress_request_t *req = NULL;
  char err[256];
  int events = 0;
  CU_ASSERT_FATAL(egress_policy_from_entries(allow, 2, NULL, 0, &p, err, sizeof err) == EGRESS_OK);
  CU_ASSERT_FATAL(egress_checker_new(p, NULL, &quiet, err, sizeof err) == EGRESS_OK);
  CU_ASSERT_FATAL(egress_options_new(&o) == EGRESS_OK);
  CU_ASSERT_FATAL(egress_options_set_event_callback(o, count_events, &events) == EGRESS_OK);
  CU_ASSERT_FATAL(egress_checker_new(p, o, &loud, err, sizeof err) == EGRESS_OK);
  CU_ASSERT_FATAL(egress_request_new(&req) == EGRESS_OK);
  CU_ASSERT_FATAL(egress_request_set(req, EGRESS_FIELD_WORKSPACE_ID, "ws-reuse-1") == EGRESS_OK);

  CU_ASSERT_EQUAL(egress_decision_new(NULL), EGRESS_EINVAL);
  CU_ASSERT_FATAL(egress_decision_new(&d) == EGRESS_OK);
  /* Never checked: a deny. */
  CU_ASSERT_EQUAL(egress_decision_verdict(d), EGRESS_VERDICT_DENY);
  CU_ASSERT_EQUAL(egress_decision_reason(d), EGRESS_REASON_INTERNAL_ERROR);
  CU_ASSERT_NOT_EQUAL(egress_decision_outcome(d), EGRESS_OUTCOME_ALLOWED);

  CU_ASSERT_EQUAL(egress_check_into(quiet, "8.8.8.8", 443, req, NULL), EGRESS_EINVAL);
  CU_ASSERT_EQUAL(egress_check_into(quiet, "8.8.8.8", 443, req, d), EGRESS_OK);
  CU_ASSERT_EQUAL(egress_decision_verdict(d), EGRESS_VERDICT_ALLOW);
  CU_ASSERT(egress_decision_has_rule(d));
  CU_ASSERT_STRING_EQUAL(egress_decision_rule_text(d), "8.8.8.8");
  CU_ASSERT_EQUAL(egress_decision_address_count(d), 1);
  CU_ASSERT_PTR_NULL(egress_decision_url(d));
  /* No sink: no event text made. */
  CU_ASSERT_PTR_NULL(egress_decision_event_json(d));

  CU_ASSERT_EQUAL(egress_check_into(quiet, "bad host!", 443, NULL, d), EGRESS_OK);
  CU_ASSERT_EQUAL(egress_decision_verdict(d), EGRESS_VERDICT_DENY);
  CU_ASSERT_EQUAL(egress_decision_reason(d), EGRESS_REASON_INVALID_HOST);
  CU_ASSERT_FALSE(egress_decision_has_rule(d));
  CU_ASSERT_PTR_NULL(egress_decision_rule_text(d));
  CU_ASSERT_EQUAL(egress_decision_address_count(d), 0);
  CU_ASSERT_PTR_NULL(egress_decision_address(d, 0));
  CU_ASSERT_PTR_NULL(egress_decision_host(d));
  CU_ASSERT_STRING_EQUAL(egress_decision_destination_host(d), "bad host!");

  /* With a sink: one event per check, the decision's own text, and the
   * context of this check only. */
  CU_ASSERT_EQUAL(egress_check_into(loud, "8.8.8.8", 443, req, d), EGRESS_OK);
  CU_ASSERT_EQUAL(events, 1);
  CU_ASSERT_PTR_NOT_NULL_FATAL(egress_decision_event_json(d));
  CU_ASSERT_PTR_NOT_NULL(strstr(egress_decision_event_json(d), "ws-reuse-1"));
  CU_ASSERT_EQUAL(egress_check_into(loud, "8.8.4.4", 443, NULL, d), EGRESS_OK);
  CU_ASSERT_EQUAL(events, 2);
  CU_ASSERT_EQUAL(egress_decision_verdict(d), EGRESS_VERDICT_DENY);
  CU_ASSERT_EQUAL(egress_decision_reason(d), EGRESS_REASON_NOT_IN_ALLOWLIST);
  CU_ASSERT_PTR_NOT_NULL_FATAL(egress_decision_event_json(d));
  CU_ASSERT_PTR_NULL(strstr(egress_decision_event_json(d), "ws-reuse-1"));
  CU_ASSERT_PTR_NULL(strstr(egress_decision_event_json(d), "8.8.8.8"));

  /* No checker: a deny that says so, and nothing left of the allow before. */
  CU_ASSERT_EQUAL(egress_check_into(quiet, "8.8.8.8", 443, NULL, d), EGRESS_OK);
  CU_ASSERT_EQUAL(egress_decision_verdict(d), EGRESS_VERDICT_ALLOW);
  CU_ASSERT_EQUAL(egress_check_into(NULL, "8.8.8.8", 443, NULL, d), EGRESS_EINVAL);
  CU_ASSERT_EQUAL(egress_decision_verdict(d), EGRESS_VERDICT_DENY);
  CU_ASSERT_EQUAL(egress_decision_reason(d), EGRESS_REASON_INTERNAL_ERROR);
  CU_ASSERT_FALSE(egress_decision_has_rule(d));
  CU_ASSERT_EQUAL(egress_decision_address_count(d), 0);

  /* URL checks name their URL; a host check into the same decision does not. */
  egress_decision_t *u = NULL;
  CU_ASSERT_EQUAL(egress_check_url(quiet, "https://api.example.com/v1/x", NULL, &u), EGRESS_OK);
  CU_ASSERT_STRING_EQUAL(egress_decision_url(u), "https://api.example.com/v1/x");
  CU_ASSERT_PTR_NULL(egress_decision_url(NULL));
  egress_decision_free(u);

  egress_decision_free(d);
  egress_request_free(req);
  egress_checker_free(loud);
  egress_checker_free(quiet);
  egress_options_free(o);
  egress_policy_unref(p);
}

/* A request refused by the caller is denied as given, whatever the policy
 * says of its destination, and recorded: event and counters.  Lifting the
 * refusal makes the same request check normally again. */
static void test_request_refuse(void) {
  const char *allow[] = { "8.8.8.8", "https://api.example.com/v1" };
  egress_policy_t *p = NULL;
  egress_checker_t *c = NULL, *mon = NULL;
  egress_options_t *o = NULL;
  egress_decision_t *d = NULL;
  egress_request_t *req = NULL;
  char err[256];
  int events = 0;
  CU_ASSERT_FATAL(egress_policy_from_entries(allow, 2, NULL, 0, &p, err, sizeof err) == EGRESS_OK);
  CU_ASSERT_FATAL(egress_options_new(&o) == EGRESS_OK);
  CU_ASSERT_FATAL(egress_options_set_event_callback(o, count_events, &events) == EGRESS_OK);
  CU_ASSERT_FATAL(egress_checker_new(p, o, &c, err, sizeof err) == EGRESS_OK);
  CU_ASSERT_FATAL(egress_options_set_mode(o, EGRESS_MODE_MONITOR) == EGRESS_OK);
  CU_ASSERT_FATAL(egress_checker_new(p, o, &mon, err, sizeof err) == EGRESS_OK);
  CU_ASSERT_FATAL(egress_request_new(&req) == EGRESS_OK);
  CU_ASSERT_FATAL(egress_request_set(req, EGRESS_FIELD_RUN_ID, "run-7") == EGRESS_OK);

  CU_ASSERT_EQUAL(egress_request_refuse(NULL, EGRESS_REASON_INVALID_HOST, "x"), EGRESS_EINVAL);
  CU_ASSERT_EQUAL(egress_request_refuse(req, EGRESS_REASON_EXPLICIT_DENY, "x"), EGRESS_EINVAL);
  CU_ASSERT_EQUAL(egress_request_refuse(req, EGRESS_REASON_INVALID_HOST, "agentId is bad"), EGRESS_OK);

  /* An allowed destination, refused: deny, the caller's message, an event. */
  for (int m = 0; m < 2; m++) {
    CU_ASSERT_EQUAL(egress_check_ex(m ? mon : c, "8.8.8.8", 443, req, &d), EGRESS_OK);
    CU_ASSERT_EQUAL(egress_decision_verdict(d), EGRESS_VERDICT_DENY);
    CU_ASSERT_EQUAL(egress_decision_outcome(d), EGRESS_OUTCOME_DENIED);
    CU_ASSERT_EQUAL(egress_decision_reason(d), EGRESS_REASON_INVALID_HOST);
    CU_ASSERT_STRING_EQUAL(egress_decision_message(d), "agentId is bad");
    CU_ASSERT_EQUAL(egress_decision_address_count(d), 0);
    CU_ASSERT_FALSE(egress_decision_has_rule(d));
    CU_ASSERT_EQUAL(events, m + 1);
    CU_ASSERT_PTR_NOT_NULL_FATAL(egress_decision_event_json(d));
    CU_ASSERT_PTR_NOT_NULL(strstr(egress_decision_event_json(d), "\"8.8.8.8:443\""));
    CU_ASSERT_PTR_NOT_NULL(strstr(egress_decision_event_json(d), "run-7"));
    egress_decision_free(d);
  }
  CU_ASSERT_EQUAL(egress_checker_checks_by(c, EGRESS_OUTCOME_DENIED, EGRESS_REASON_INVALID_HOST), 1);
  CU_ASSERT_EQUAL(egress_checker_counter(c, EGRESS_COUNTER_CHECKS), 1);

  /* A URL is not even parsed: bytes that are not text are recorded. */
  CU_ASSERT_EQUAL(egress_request_refuse(req, EGRESS_REASON_INVALID_PORT, "port unreadable"), EGRESS_OK);
  CU_ASSERT_EQUAL(egress_check_url(c, "https://api.example.com/v1/\xff", req, &d), EGRESS_OK);
  CU_ASSERT_EQUAL(egress_decision_verdict(d), EGRESS_VERDICT_DENY);
  CU_ASSERT_EQUAL(egress_decision_reason(d), EGRESS_REASON_INVALID_PORT);
  CU_ASSERT_STRING_EQUAL(egress_decision_message(d), "port unreadable");
  CU_ASSERT_STRING_EQUAL(egress_decision_url(d), "https://api.example.com/v1/\xff");
  CU_ASSERT_EQUAL(events, 3);
  egress_decision_free(d);

  /* No destination at all. */
  CU_ASSERT_EQUAL(egress_check_ex(c, NULL, -1, req, &d), EGRESS_OK);
  CU_ASSERT_EQUAL(egress_decision_verdict(d), EGRESS_VERDICT_DENY);
  CU_ASSERT_EQUAL(egress_decision_reason(d), EGRESS_REASON_INVALID_PORT);
  egress_decision_free(d);

  /* Lifted: the same request is checked again. */
  CU_ASSERT_EQUAL(egress_request_refuse(req, EGRESS_REASON_INVALID_HOST, NULL), EGRESS_OK);
  CU_ASSERT_EQUAL(egress_check_ex(c, "8.8.8.8", 443, req, &d), EGRESS_OK);
  CU_ASSERT_EQUAL(egress_decision_verdict(d), EGRESS_VERDICT_ALLOW);
  egress_decision_free(d);
  CU_ASSERT_EQUAL(egress_check_url(c, "https://8.8.8.8/x", req, &d), EGRESS_OK);
  CU_ASSERT_EQUAL(egress_decision_verdict(d), EGRESS_VERDICT_ALLOW);
  egress_decision_free(d);

  egress_request_free(req);
  egress_checker_free(mon);
  egress_checker_free(c);
  egress_options_free(o);
  egress_policy_unref(p);
}

static void test_null_decision_accessors(void) {
  const egress_decision_t *d = NULL;
  assert_null_decision_reads_deny(d);
  CU_ASSERT_PTR_NOT_NULL(egress_decision_message(d));
  CU_ASSERT(strlen(egress_decision_message(d)) > 0);
  CU_ASSERT_PTR_NULL(egress_decision_destination_host(d));
  CU_ASSERT_PTR_NULL(egress_decision_host(d));
  CU_ASSERT_EQUAL(egress_decision_port(d), 0);
  CU_ASSERT_EQUAL(egress_decision_mode(d), EGRESS_MODE_ENFORCE);
  CU_ASSERT_FALSE(egress_decision_has_rule(d));
  CU_ASSERT_PTR_NULL(egress_decision_rule_text(d));
  (void)egress_decision_rule_list(d);
  (void)egress_decision_rule_index(d);
  CU_ASSERT_EQUAL(egress_decision_address_count(d), 0);
  CU_ASSERT_PTR_NULL(egress_decision_address(d, 0));
  CU_ASSERT_EQUAL(egress_decision_address_verdict(d, 0), EGRESS_VERDICT_DENY);
  CU_ASSERT_NOT_EQUAL(egress_decision_address_reason(d, 0), EGRESS_REASON_NONE);
  CU_ASSERT_EQUAL(egress_decision_address_ttl(d, 0), -1);
  size_t len = 99;
  CU_ASSERT_PTR_NULL(egress_decision_address_sockaddr(d, 0, &len));
  CU_ASSERT_EQUAL(len, 0);
  CU_ASSERT_PTR_NULL(egress_decision_address_sockaddr(d, 0, NULL));
  CU_ASSERT_PTR_NULL(egress_decision_curl_resolve(d));
  CU_ASSERT_EQUAL(egress_decision_dns_ms(d), 0.0);
  CU_ASSERT_EQUAL(egress_decision_latency_ms(d), 0.0);
  CU_ASSERT_PTR_NULL(egress_decision_policy_digest(d));
  CU_ASSERT_PTR_NULL(egress_decision_event_json(d));
  CU_ASSERT_PTR_NULL(egress_decision_to_json(d));
  egress_decision_free(NULL);

  /* A zeroed decision (what calloc gives) reads as deny too. */
  egress_decision_t zero;
  memset(&zero, 0, sizeof zero);
  CU_ASSERT_EQUAL(egress_decision_verdict(&zero), EGRESS_VERDICT_DENY);
  CU_ASSERT_PTR_NULL(egress_decision_curl_resolve(&zero));

  /* Out-of-range indexes on a real decision. */
  egress_policy_t *p = small_policy();
  egress_checker_t *c = NULL;
  CU_ASSERT_FATAL(egress_checker_new(p, NULL, &c, NULL, 0) == EGRESS_OK);
  egress_decision_t *real = NULL;
  CU_ASSERT_FATAL(egress_check_ex(c, "8.8.8.8", 443, NULL, &real) == EGRESS_OK);
  CU_ASSERT_EQUAL(egress_decision_verdict(real), EGRESS_VERDICT_ALLOW);
  CU_ASSERT_EQUAL(egress_decision_address_count(real), 1);
  const size_t bad[] = { 1, 2, 1000, (size_t)-1 };
  for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
    CU_ASSERT_PTR_NULL(egress_decision_address(real, bad[i]));
    CU_ASSERT_EQUAL(egress_decision_address_verdict(real, bad[i]), EGRESS_VERDICT_DENY);
    CU_ASSERT_EQUAL(egress_decision_address_ttl(real, bad[i]), -1);
    len = 99;
    CU_ASSERT_PTR_NULL(egress_decision_address_sockaddr(real, bad[i], &len));
    CU_ASSERT_EQUAL(len, 0);
  }
  char *json = egress_decision_to_json(real);
  CU_ASSERT_PTR_NOT_NULL(json);
  egress_free(json);
  egress_decision_free(real);
  egress_checker_free(c);
  egress_policy_unref(p);
}

static void test_null_request_calls(void) {
  CU_ASSERT_EQUAL(egress_request_new(NULL), EGRESS_EINVAL);
  egress_request_free(NULL);
  CU_ASSERT_EQUAL(egress_request_set(NULL, EGRESS_FIELD_METHOD, "GET"), EGRESS_EINVAL);
  egress_request_t *r = NULL;
  CU_ASSERT_FATAL(egress_request_new(&r) == EGRESS_OK);
  CU_ASSERT_EQUAL(egress_request_set(r, (egress_field_t)-1, "x"), EGRESS_EINVAL);
  CU_ASSERT_EQUAL(egress_request_set(r, (egress_field_t)6, "x"), EGRESS_EINVAL);
  CU_ASSERT_EQUAL(egress_request_set(r, (egress_field_t)1000, "x"), EGRESS_EINVAL);
  CU_ASSERT_EQUAL(egress_request_set(r, EGRESS_FIELD_METHOD, NULL), EGRESS_OK);
  CU_ASSERT_EQUAL(egress_request_set(r, EGRESS_FIELD_METHOD, "GET"), EGRESS_OK);
  CU_ASSERT_EQUAL(egress_request_set(r, EGRESS_FIELD_METHOD, NULL), EGRESS_OK);
  CU_ASSERT_EQUAL(egress_request_set(r, EGRESS_FIELD_RUN_ID, "run\n1"), EGRESS_EINVAL);
  CU_ASSERT_EQUAL(egress_request_set(r, EGRESS_FIELD_RUN_ID, "run\x7f"), EGRESS_EINVAL);
  CU_ASSERT_EQUAL(egress_request_set(r, EGRESS_FIELD_RUN_ID, "\x1b[31m"), EGRESS_EINVAL);
  char big[1026];
  memset(big, 'a', sizeof big - 1);
  big[1025] = '\0';
  CU_ASSERT_EQUAL(egress_request_set(r, EGRESS_FIELD_AGENT_ID, big), EGRESS_EINVAL);
  big[1024] = '\0';
  CU_ASSERT_EQUAL(egress_request_set(r, EGRESS_FIELD_AGENT_ID, big), EGRESS_OK);
  /* The same value again is kept as it is, with no allocation to fail;
   * another value is a new copy. */
  CU_ASSERT_EQUAL(egress_request_set(r, EGRESS_FIELD_METHOD, "GET"), EGRESS_OK);
  egress__alloc_fail_at(1);
  CU_ASSERT_EQUAL(egress_request_set(r, EGRESS_FIELD_METHOD, "GET"), EGRESS_OK);
  CU_ASSERT_EQUAL(egress_request_set(r, EGRESS_FIELD_METHOD, "POST"), EGRESS_ENOMEM);
  egress__alloc_fail_at(0);
  CU_ASSERT_EQUAL(egress_request_set(r, EGRESS_FIELD_METHOD, "GE"), EGRESS_OK);
  CU_ASSERT_EQUAL(egress_request_set(r, EGRESS_FIELD_METHOD, "GET"), EGRESS_OK);
  egress_request_t *copy = NULL;
  CU_ASSERT_FATAL(egress__request_copy(r, &copy) == EGRESS_OK && copy);
  CU_ASSERT_STRING_EQUAL(copy->field[EGRESS_FIELD_METHOD], "GET");
  egress_request_free(copy);
  egress_request_free(r);
}

/* ------------------------------------------------------------------------ */
/* Option setters                                                            */
/* ------------------------------------------------------------------------ */

static void test_option_ranges(void) {
  egress_options_t *o = NULL;
  CU_ASSERT_FATAL(egress_options_new(&o) == EGRESS_OK);
  CU_ASSERT_EQUAL(egress_options_set_timeout_ms(o, 0), EGRESS_EINVAL);
  CU_ASSERT_EQUAL(egress_options_set_timeout_ms(o, 600001), EGRESS_EINVAL);
  CU_ASSERT_EQUAL(egress_options_set_timeout_ms(o, UINT32_MAX), EGRESS_EINVAL);
  CU_ASSERT_EQUAL(egress_options_set_timeout_ms(o, 1), EGRESS_OK);
  CU_ASSERT_EQUAL(egress_options_set_timeout_ms(o, 600000), EGRESS_OK);
  CU_ASSERT_EQUAL(egress_options_set_cache(o, 10, 301, 300, 5), EGRESS_EINVAL);
  CU_ASSERT_EQUAL(egress_options_set_cache(o, 10, UINT32_MAX, 0, 5), EGRESS_EINVAL);
  CU_ASSERT_EQUAL(egress_options_set_cache(o, 10, 300, 300, 5), EGRESS_OK);
  CU_ASSERT_EQUAL(egress_options_set_cache(o, 0, 0, 0, 0), EGRESS_OK);
  CU_ASSERT_EQUAL(egress_options_set_mode(o, (egress_mode_t)2), EGRESS_EINVAL);
  CU_ASSERT_EQUAL(egress_options_set_mode(o, (egress_mode_t)-1), EGRESS_EINVAL);
  CU_ASSERT_EQUAL(egress_options_set_mode(o, (egress_mode_t)100), EGRESS_EINVAL);
  CU_ASSERT_EQUAL(egress_options_set_mode(o, EGRESS_MODE_MONITOR), EGRESS_OK);
  CU_ASSERT_EQUAL(egress_options_set_mode(o, EGRESS_MODE_ENFORCE), EGRESS_OK);
  CU_ASSERT_EQUAL(egress_options_set_mixed(o, (egress_mixed_t)2), EGRESS_EINVAL);
  CU_ASSERT_EQUAL(egress_options_set_mixed(o, (egress_mixed_t)-1), EGRESS_EINVAL);
  CU_ASSERT_EQUAL(egress_options_set_mixed(o, EGRESS_MIXED_FILTER), EGRESS_OK);
  CU_ASSERT_EQUAL(egress_options_set_event_fd(o, -2), EGRESS_EINVAL);
  CU_ASSERT_EQUAL(egress_options_set_event_fd(o, -1), EGRESS_OK);

  static const char *const bad_pref64[] = { "",
                                            "/96",
                                            "64:ff9b::",
                                            "64:ff9b::/",
                                            "64:ff9b::/95",
                                            "64:ff9b::/0",
                                            "64:ff9b::/128",
                                            "64:ff9b::/33",
                                            "64:ff9b::/097",
                                            "64:ff9b::/096",
                                            "64:ff9b::/96 ",
                                            " 64:ff9b::/96",
                                            "64:ff9b::/+96",
                                            "64:ff9b::/-96",
                                            "64:ff9b::/9a",
                                            "64:ff9b::/96/96",
                                            "64:ff9b::/0x60",
                                            "[64:ff9b::]/96",
                                            "64:ff9b::1/96",
                                            "64:ff9b:0:0:0:0:1::/96",
                                            "2001:db8::/32x",
                                            "2001:db8:1::/32",
                                            "1.2.3.4/96",
                                            "192.0.2.0/24",
                                            "64:ff9b::%eth0/96",
                                            "::ffff:1.2.3.4/96",
                                            "64:ff9b::/96\n",
                                            "gggg::/96",
                                            "64:ff9b:::/96",
                                            "2001:db8::/4294967392" };
  for (size_t i = 0; i < sizeof bad_pref64 / sizeof bad_pref64[0]; i++) {
    egress_status_t st = egress_options_add_pref64(o, bad_pref64[i]);
    CU_ASSERT_NOT_EQUAL(st, EGRESS_OK);
    if (st == EGRESS_OK) printf("\naccepted bad pref64 \"%s\"\n", bad_pref64[i]);
  }
  static const char *const good_pref64[] = { "2001:db8::/32",         "2001:db8:100::/40",
                                             "2001:db8:122::/48",     "2001:db8:122:300::/56",
                                             "2001:db8:122:344::/64", "64:ff9b::/96" };
  for (size_t i = 0; i < sizeof good_pref64 / sizeof good_pref64[0]; i++) {
    egress_status_t st = egress_options_add_pref64(o, good_pref64[i]);
    CU_ASSERT_EQUAL(st, EGRESS_OK);
    if (st != EGRESS_OK) printf("\nrefused good pref64 \"%s\"\n", good_pref64[i]);
  }
  /* A bounded table: adding without end must stop with an error, not grow. */
  egress_status_t st = EGRESS_OK;
  for (int i = 0; i < 100 && st == EGRESS_OK; i++) st = egress_options_add_pref64(o, "64:ff9b::/96");
  CU_ASSERT_NOT_EQUAL(st, EGRESS_OK);
  egress_options_free(o);
}

/* A DNS server list is refused whole, naming the entry: c-ares would take
 * " 53", "+53" and empty entries its own way. */
static void test_dns_servers_validated(void) {
  static const char *const hostile[] = { "127.0.0.1: 53",
                                         "127.0.0.1:+53",
                                         "127.0.0.1:-53",
                                         " 127.0.0.1",
                                         "127.0.0.1 ",
                                         "127.0.0.1,",
                                         ",127.0.0.1",
                                         "127.0.0.1,,[::1]:53",
                                         "127.0.0.01",
                                         "0x7f.0.0.1",
                                         "127.0.0.1:053x",
                                         "[::1]:",
                                         "[::1]x",
                                         "[127.0.0.1]:53",
                                         "fe80::1%eth0",
                                         "[fe80::1%eth0]:53",
                                         "127.0.0.1:99999999999999999999",
                                         "127.0.0.1:53:54",
                                         "127.0.0.1\n",
                                         "localhost:53",
                                         "127.0.0.1:53,bogus" };
  egress_policy_t *p = small_policy();
  char err[EGRESS_ERRBUF_SIZE];
  for (size_t i = 0; i < sizeof hostile / sizeof *hostile; i++) {
    egress_options_t *o = NULL;
    CU_ASSERT_FATAL(egress_options_new(&o) == EGRESS_OK);
    /* Refused by the setter itself, and nothing of it kept: the list set
     * before stays, and a checker made from the options works. */
    CU_ASSERT_EQUAL_FATAL(egress_options_set_dns_servers(o, "127.0.0.1:5353"), EGRESS_OK);
    egress_status_t st = egress_options_set_dns_servers(o, hostile[i]);
    if (st != EGRESS_EINVAL) printf("\naccepted DNS servers \"%s\"\n", hostile[i]);
    CU_ASSERT_EQUAL(st, EGRESS_EINVAL);
    egress_checker_t *c = NULL;
    err[0] = '\0';
    CU_ASSERT_EQUAL(egress_checker_new(p, o, &c, err, sizeof err), EGRESS_OK);
    CU_ASSERT_PTR_NOT_NULL(c);
    egress_checker_free(c);
    egress_options_free(o);
  }
  egress_policy_unref(p);
  static const char *const good[] = { "127.0.0.1", "127.0.0.1:53", "[::1]:53", "::1",
                                      "10.0.0.1:053,[2001:db8::1]:5353,192.0.2.1" };
  const char *why = NULL;
  size_t bad = 0, len = 0;
  for (size_t i = 0; i < sizeof good / sizeof *good; i++)
    CU_ASSERT_TRUE(egress__dns_servers_valid(good[i], &why, &bad, &len));
  /* The refusal names the entry it is about. */
  const char *list = "127.0.0.1,[::1]:53,10.0.0.1:+5,192.0.2.1";
  CU_ASSERT_FALSE(egress__dns_servers_valid(list, &why, &bad, &len));
  CU_ASSERT_EQUAL(bad, 19);
  CU_ASSERT_EQUAL(len, 11);
  CU_ASSERT_PTR_NOT_NULL(why);
}

static void test_bad_options_refuse_checker(void) {
  egress_policy_t *p = small_policy();
  char err[EGRESS_ERRBUF_SIZE];
  static const char *const bad_servers[] = { "bogus", "127.0.0.1:0", "127.0.0.1:65536", "1.2.3",
                                             "[::1",  "127.0.0.1,,", "::1:53x" };
  for (size_t i = 0; i < sizeof bad_servers / sizeof bad_servers[0]; i++) {
    egress_options_t *o = NULL;
    CU_ASSERT_FATAL(egress_options_new(&o) == EGRESS_OK);
    egress_status_t st = egress_options_set_dns_servers(o, bad_servers[i]);
    egress_checker_t *c = (egress_checker_t *)(uintptr_t)1;
    if (st == EGRESS_OK) {
      err[0] = '\0';
      st = egress_checker_new(p, o, &c, err, sizeof err);
      CU_ASSERT_PTR_NULL(c);
      CU_ASSERT(strlen(err) > 0);
    }
    CU_ASSERT_NOT_EQUAL(st, EGRESS_OK);
    if (st == EGRESS_OK) {
      printf("\naccepted DNS servers \"%s\"\n", bad_servers[i]);
      egress_checker_free(c);
    }
    egress_options_free(o);
  }
  /* An event file that cannot be opened fails checker creation with EIO. */
  egress_options_t *o = NULL;
  CU_ASSERT_FATAL(egress_options_new(&o) == EGRESS_OK);
  CU_ASSERT_EQUAL(egress_options_set_event_path(o, "/nonexistent-dir/events.jsonl"), EGRESS_OK);
  egress_checker_t *c = (egress_checker_t *)(uintptr_t)1;
  err[0] = '\0';
  CU_ASSERT_EQUAL(egress_checker_new(p, o, &c, err, sizeof err), EGRESS_EIO);
  CU_ASSERT_PTR_NULL(c);
  CU_ASSERT_PTR_NOT_NULL(strstr(err, "/nonexistent-dir/events.jsonl"));
  /* A closed descriptor likewise. */
  CU_ASSERT_EQUAL(egress_options_set_event_fd(o, 987), EGRESS_OK);
  c = (egress_checker_t *)(uintptr_t)1;
  CU_ASSERT_EQUAL(egress_checker_new(p, o, &c, err, sizeof err), EGRESS_EIO);
  CU_ASSERT_PTR_NULL(c);
  egress_options_free(o);
  egress_policy_unref(p);
}

/* Options are copied: changing or freeing them after egress_checker_new
 * does not change the checker. */
static void test_options_copied(void) {
  egress_policy_t *p = small_policy();
  egress_options_t *o = NULL;
  CU_ASSERT_FATAL(egress_options_new(&o) == EGRESS_OK);
  CU_ASSERT_EQUAL(egress_options_set_mode(o, EGRESS_MODE_MONITOR), EGRESS_OK);
  CU_ASSERT_EQUAL(egress_options_set_event_source(o, "/src/a"), EGRESS_OK);
  egress_checker_t *c = NULL;
  CU_ASSERT_FATAL(egress_checker_new(p, o, &c, NULL, 0) == EGRESS_OK);
  CU_ASSERT_EQUAL(egress_options_set_mode(o, EGRESS_MODE_ENFORCE), EGRESS_OK);
  CU_ASSERT_EQUAL(egress_options_set_event_source(o, "/src/b"), EGRESS_OK);
  egress_options_free(o);
  egress_decision_t *d = NULL;
  CU_ASSERT_FATAL(egress_check_ex(c, "8.8.4.4", 443, NULL, &d) == EGRESS_OK);
  CU_ASSERT_EQUAL(egress_decision_mode(d), EGRESS_MODE_MONITOR);
  CU_ASSERT_PTR_NOT_NULL_FATAL(egress_decision_event_json(d));
  CU_ASSERT_PTR_NOT_NULL(strstr(egress_decision_event_json(d), "\"/src/a\""));
  egress_decision_free(d);
  egress_checker_free(c);
  egress_policy_unref(p);
}

static CU_TestInfo names_tests[] = {
  { "status names", test_status_names },
  { "reason names", test_reason_names },
  { "outcome names", test_outcome_names },
  { "version", test_version },
  CU_TEST_INFO_NULL,
};

static CU_TestInfo null_tests[] = {
  { "policy calls", test_null_policy_calls },
  { "options calls", test_null_options_calls },
  { "checker and check calls", test_null_checker_calls },
  { "decision accessors", test_null_decision_accessors },
  { "check into a reused decision", test_check_into_reuse },
  { "request refused by the caller", test_request_refuse },
  { "request calls", test_null_request_calls },
  CU_TEST_INFO_NULL,
};

static CU_TestInfo option_tests[] = {
  { "setter ranges", test_option_ranges },
  { "bad options refuse the checker", test_bad_options_refuse_checker },
  { "DNS server lists are validated when set, refused whole", test_dns_servers_validated },
  { "options are copied", test_options_copied },
  CU_TEST_INFO_NULL,
};

int main(int argc, char **argv) {
  static const egress_test_suite_t suites[] = {
    { "api_names", NULL, NULL, names_tests },
    { "api_null_arguments", NULL, NULL, null_tests },
    { "api_options", NULL, NULL, option_tests },
    { NULL, NULL, NULL, NULL },
  };
  return egress_test_main(argc, argv, suites);
}
