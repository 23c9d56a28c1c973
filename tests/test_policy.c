/*
 * Policy documents and the compiled matchers: document shapes, whole-policy
 * rejection, matching semantics (exact, *., **., *, regex, CIDR, ports) and
 * a differential test of the compiled matcher against a naive reference.
 */
#include "egress_private.h"
#include "testutil.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static egress_policy_t *must_policy(const char *const *allow, size_t na, const char *const *deny, size_t nd) {
  egress_policy_t *p = NULL;
  char err[EGRESS_ERRBUF_SIZE] = "";
  egress_status_t st = egress_policy_from_entries(allow, na, deny, nd, &p, err, sizeof err);
  if (st != EGRESS_OK) fprintf(stderr, "policy failed: %s\n", err);
  CU_ASSERT_EQUAL_FATAL(st, EGRESS_OK);
  return p;
}

static egress_status_t json_policy(const char *json, egress_policy_t **p, char *err) {
  return egress_policy_from_json(json, strlen(json), p, err, EGRESS_ERRBUF_SIZE);
}

/* Which allow rule (index) allows name:port; -1 none; -2 matched on another port. */
static long allowed_by(const egress_policy_t *p, const char *name, uint16_t port) {
  egress__match_t m;
  egress__match_name(p->matcher[EGRESS_LIST_ALLOW], name, strlen(name), port, &m);
  if (m.allowing) return (long)m.allowing->index;
  return m.any ? -2 : -1;
}

static long ip_allowed_by(const egress_policy_t *p, const char *ip, uint16_t port) {
  egress__ip_t a;
  egress__match_t m;
  bool ok = strchr(ip, ':') ? egress__ip6_parse(ip, strlen(ip), &a) : egress__ip4_parse(ip, strlen(ip), &a);
  CU_ASSERT_FATAL(ok);
  egress__match_ip(p->matcher[EGRESS_LIST_ALLOW], &a, port, 0, &m);
  if (m.allowing) return (long)m.allowing->index;
  return m.any ? -2 : -1;
}

static void test_wildcard_semantics(void) {
  const char *allow[] = { "*.example.com", "**.deep.example.org", "api.example.net" };
  egress_policy_t *p = must_policy(allow, 3, NULL, 0);
  /* *.x: exactly one label in front, never the apex. */
  CU_ASSERT_EQUAL(allowed_by(p, "a.example.com", 443), 0);
  CU_ASSERT_EQUAL(allowed_by(p, "example.com", 443), -1);
  CU_ASSERT_EQUAL(allowed_by(p, "a.b.example.com", 443), -1);
  CU_ASSERT_EQUAL(allowed_by(p, "aexample.com", 443), -1);
  CU_ASSERT_EQUAL(allowed_by(p, "a.example.com.evil.net", 443), -1);
  CU_ASSERT_EQUAL(allowed_by(p, "example.com.a", 443), -1);
  /* **.x: one or more labels, never the apex. */
  CU_ASSERT_EQUAL(allowed_by(p, "a.deep.example.org", 443), 1);
  CU_ASSERT_EQUAL(allowed_by(p, "a.b.c.deep.example.org", 443), 1);
  CU_ASSERT_EQUAL(allowed_by(p, "deep.example.org", 443), -1);
  CU_ASSERT_EQUAL(allowed_by(p, "xdeep.example.org", 443), -1);
  CU_ASSERT_EQUAL(allowed_by(p, "deep.example.org.evil", 443), -1);
  /* exact */
  CU_ASSERT_EQUAL(allowed_by(p, "api.example.net", 443), 2);
  CU_ASSERT_EQUAL(allowed_by(p, "api.example.net", 444), -2);
  CU_ASSERT_EQUAL(allowed_by(p, "x.api.example.net", 443), -1);
  egress_policy_unref(p);
  /* "*" matches any name, on its port only. */
  const char *any[] = { "*.example.com", "*:8080" };
  p = must_policy(any, 2, NULL, 0);
  CU_ASSERT_EQUAL(allowed_by(p, "anything.at.all", 8080), 1);
  CU_ASSERT_EQUAL(allowed_by(p, "anything.at.all", 443), -2);
  CU_ASSERT_EQUAL(allowed_by(p, "a.example.com", 8080), 1);
  CU_ASSERT_EQUAL(allowed_by(p, "a.example.com", 443), 0);
  CU_ASSERT_EQUAL(allowed_by(p, "example.com", 443), -2);
  egress_policy_unref(p);
}

static void test_ports(void) {
  const char *allow[] = {
    "a.example.com:8000-8999",       "b.example.com:*", "c.example.com",       "http://d.example.com",
    "https://e.example.com:8443/v1", "203.0.113.0/24",  "198.51.100.0/24:443", "[2001:db8::]/32:443-444"
  };
  egress_policy_t *p = must_policy(allow, 8, NULL, 0);
  CU_ASSERT_EQUAL(allowed_by(p, "a.example.com", 8000), 0);
  CU_ASSERT_EQUAL(allowed_by(p, "a.example.com", 8999), 0);
  CU_ASSERT_EQUAL(allowed_by(p, "a.example.com", 7999), -2);
  CU_ASSERT_EQUAL(allowed_by(p, "a.example.com", 9000), -2);
  CU_ASSERT_EQUAL(allowed_by(p, "b.example.com", 1), 1);
  CU_ASSERT_EQUAL(allowed_by(p, "b.example.com", 65535), 1);
  CU_ASSERT_EQUAL(allowed_by(p, "c.example.com", 443), 2);
  CU_ASSERT_EQUAL(allowed_by(p, "c.example.com", 80), -2);
  CU_ASSERT_EQUAL(allowed_by(p, "d.example.com", 80), 3);
  CU_ASSERT_EQUAL(allowed_by(p, "d.example.com", 443), -2);
  CU_ASSERT_EQUAL(allowed_by(p, "e.example.com", 8443), 4);
  CU_ASSERT_EQUAL(allowed_by(p, "e.example.com", 443), -2);
  CU_ASSERT_EQUAL(ip_allowed_by(p, "203.0.113.9", 1), 5);
  CU_ASSERT_EQUAL(ip_allowed_by(p, "203.0.113.9", 65535), 5);
  CU_ASSERT_EQUAL(ip_allowed_by(p, "203.0.114.9", 443), -1);
  CU_ASSERT_EQUAL(ip_allowed_by(p, "198.51.100.1", 443), 6);
  CU_ASSERT_EQUAL(ip_allowed_by(p, "198.51.100.1", 80), -2);
  CU_ASSERT_EQUAL(ip_allowed_by(p, "2001:db8:ffff::1", 444), 7);
  CU_ASSERT_EQUAL(ip_allowed_by(p, "2001:db8:ffff::1", 445), -2);
  CU_ASSERT_EQUAL(ip_allowed_by(p, "2001:db9::1", 443), -1);
  /* Host-name rules never match IP literals and CIDR rules never names. */
  CU_ASSERT_EQUAL(allowed_by(p, "203.0.113.9", 443), -1);
  egress_policy_unref(p);
}

static void test_regex(void) {
  const char *allow[] = { "re:^api-[0-9]+\\.example\\.com$", "re:svc\\.internal\\.example" };
  egress_policy_t *p = must_policy(allow, 2, NULL, 0);
  CU_ASSERT_EQUAL(allowed_by(p, "api-1.example.com", 443), 0);
  CU_ASSERT_EQUAL(allowed_by(p, "api-123.example.com", 443), 0);
  CU_ASSERT_EQUAL(allowed_by(p, "api-x.example.com", 443), -1);
  CU_ASSERT_EQUAL(allowed_by(p, "api-1.example.com.evil.net", 443), -1);
  CU_ASSERT_EQUAL(allowed_by(p, "xapi-1.example.com", 443), -1);
  /* Unanchored patterns are anchored against the whole name anyway. */
  CU_ASSERT_EQUAL(allowed_by(p, "svc.internal.example", 443), 1);
  CU_ASSERT_EQUAL(allowed_by(p, "a.svc.internal.example", 443), -1);
  CU_ASSERT_EQUAL(allowed_by(p, "svc.internal.example.com", 443), -1);
  CU_ASSERT_EQUAL(allowed_by(p, "api-1.example.com", 8443), -2);
  egress_policy_unref(p);
}

static void test_first_rule_wins(void) {
  const char *allow[] = { "x.example.com:80", "*.example.com:*", "**.example.com", "x.example.com" };
  egress_policy_t *p = must_policy(allow, 4, NULL, 0);
  CU_ASSERT_EQUAL(allowed_by(p, "x.example.com", 80), 0);
  CU_ASSERT_EQUAL(allowed_by(p, "x.example.com", 443), 1);
  CU_ASSERT_EQUAL(allowed_by(p, "y.example.com", 22), 1);
  CU_ASSERT_EQUAL(allowed_by(p, "a.y.example.com", 443), 2);
  CU_ASSERT_EQUAL(allowed_by(p, "a.y.example.com", 22), -2);
  egress_policy_unref(p);
}

static void test_shapes(void) {
  egress_policy_t *p = NULL;
  char err[EGRESS_ERRBUF_SIZE];
  CU_ASSERT_EQUAL(json_policy("{\"egressAllowlist\":[\"a.example.com\"]}", &p, err), EGRESS_OK);
  CU_ASSERT_EQUAL(egress_policy_rule_count(p, EGRESS_LIST_ALLOW), 1);
  CU_ASSERT_EQUAL(egress_policy_rule_count(p, EGRESS_LIST_DENY), 0);
  egress_policy_unref(p);
  CU_ASSERT_EQUAL(
      json_policy(
          "{\"isolationMode\":\"PerTenantWorker\",\"egressAllowlist\":[\"a.example.com\"],"
          "\"workloadIdentity\":\"Required\",\"egressDenylist\":[\"b.example.com\"],\"x\":{\"y\":[1,2]}}",
          &p, err),
      EGRESS_OK);
  CU_ASSERT_EQUAL(egress_policy_rule_count(p, EGRESS_LIST_DENY), 1);
  CU_ASSERT_STRING_EQUAL(egress_policy_rule_text(p, EGRESS_LIST_DENY, 0), "b.example.com");
  CU_ASSERT_PTR_NULL(egress_policy_rule_text(p, EGRESS_LIST_DENY, 1));
  egress_policy_unref(p);
  CU_ASSERT_EQUAL(
      json_policy("{\"schemaVersion\":1,\"machineId\":\"m\",\"executionPolicy\":{\"isolationMode\":\"x\","
                  "\"egressAllowlist\":[\"https://api.crm.example.com\",\"*.files.example.com\"]}}",
                  &p, err),
      EGRESS_OK);
  CU_ASSERT_EQUAL(egress_policy_rule_count(p, EGRESS_LIST_ALLOW), 2);
  egress_policy_unref(p);
  /* The example registration record handed to us loads as it is. */
  char path[512];
  egress_test_path("../examples/policies/machine-registration.json", path, sizeof path);
  CU_ASSERT_EQUAL(egress_policy_from_file(path, &p, err, sizeof err), EGRESS_OK);
  CU_ASSERT_EQUAL(egress_policy_rule_count(p, EGRESS_LIST_ALLOW), 4);
  egress_policy_unref(p);
  /* An empty allowlist is valid. */
  CU_ASSERT_EQUAL(json_policy("{\"egressAllowlist\":[]}", &p, err), EGRESS_OK);
  CU_ASSERT_EQUAL(egress_policy_rule_count(p, EGRESS_LIST_ALLOW), 0);
  egress_policy_unref(p);
}

typedef struct bad_doc {
  const char *json;
  const char *must_contain;
} bad_doc_t;

static void test_bad_documents(void) {
  static const bad_doc_t bad[] = {
    { "", "not valid JSON" },
    { "[]", "must be a JSON object" },
    { "\"x\"", "must be a JSON object" },
    { "{}", "egressAllowlist: missing" },
    { "{\"egressAllowlist\":{}}", "must be an array" },
    { "{\"egressAllowlist\":\"a.com\"}", "must be an array" },
    { "{\"egressAllowlist\":[1]}", "egressAllowlist[0] 1: entry must be a string, not a number" },
    { "{\"egressAllowlist\":[\"a.com\",null]}", "egressAllowlist[1] null: entry must be a string, not null" },
    { "{\"machineId\":\"a\",\"machineId\":\"b\",\"egressAllowlist\":[]}", "machineId: key appears 2 times" },
    { "{\"egressAllowlist\":[],\"x\":[{\"k\":1,\"k\":2}]}", "k: key appears 2 times" },
    { "{\"egressAllowlist\":[\"a.com\",[\"b.com\"]]}", "egressAllowlist[1]" },
    { "{\"egressAllowlist\":[\"a.com\"],\"egressDenylist\":[true]}", "egressDenylist[0]" },
    { "{\"egressAllowlist\":[\"a.com\"],\"egressDenylist\":\"x\"}", "egressDenylist: must be an array" },
    { "{\"egressAllowlist\":[\"a.com\"],\"egressAllowlist\":[\"*\"]}", "appears 2 times" },
    { "{\"egressAllowlist\":[\"a.com\\u0000.evil.com\"]}", "NUL" },
    { "{\"egressAllowlist\":[\"a.com\"]} trailing", "trailing data" },
    { "{\"egressAllowlist\":[\"a.com\"]}{}", "trailing data" },
    { "{\"egressAllowlist\":[\"a.com\"", "not valid JSON" },
    { "{\"executionPolicy\":[]}", "executionPolicy: must be an object" },
    { "{\"executionPolicy\":{}}", "egressAllowlist: missing" },
    { "{\"executionPolicy\":{\"egressAllowlist\":[]},\"egressAllowlist\":[\"*\"]}", "ambiguous" },
    { "{\"egressAllowlist\":[\"good.example.com\",\" bad.example.com\"]}", "egressAllowlist[1]" },
    { "{\"egressAllowlist\":[\"good.example.com\"],\"egressDenylist\":[\"a.com\",\"10.0.0.1/8\"]}",
      "egressDenylist[1] \"10.0.0.1/8\"" },
  };
  for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
    egress_policy_t *p = (egress_policy_t *)0x1;
    char err[EGRESS_ERRBUF_SIZE] = "";
    egress_status_t st = json_policy(bad[i].json, &p, err);
    CU_ASSERT_EQUAL(st, EGRESS_EPOLICY);
    CU_ASSERT_PTR_NULL(p);
    if (!strstr(err, bad[i].must_contain)) {
      fprintf(stderr, "doc %zu: error \"%s\" lacks \"%s\"\n", i, err, bad[i].must_contain);
      CU_FAIL("error message does not name the problem");
    }
  }
  /* A raw NUL byte inside the given length. */
  egress_policy_t *p = NULL;
  char err[EGRESS_ERRBUF_SIZE] = "";
  static const char with_nul[] = "{\"egressAllowlist\":[\"a.com\0.evil\"]}";
  CU_ASSERT_EQUAL(egress_policy_from_json(with_nul, sizeof with_nul - 1, &p, err, sizeof err),
                  EGRESS_EPOLICY);
  CU_ASSERT_PTR_NULL(p);
  /* Deep nesting is an error, not a stack overflow. */
  size_t depth = 200000;
  char *deep = malloc(depth * 2 + 64);
  CU_ASSERT_PTR_NOT_NULL_FATAL(deep);
  size_t o = (size_t)sprintf(deep, "{\"egressAllowlist\":[],\"x\":");
  for (size_t i = 0; i < depth; i++) deep[o++] = '[';
  for (size_t i = 0; i < depth; i++) deep[o++] = ']';
  deep[o++] = '}';
  CU_ASSERT_EQUAL(egress_policy_from_json(deep, o, &p, err, sizeof err), EGRESS_EPOLICY);
  free(deep);
  /* NULL arguments. */
  CU_ASSERT_EQUAL(egress_policy_from_json(NULL, 0, &p, err, sizeof err), EGRESS_EINVAL);
  CU_ASSERT_EQUAL(egress_policy_from_json("{}", 2, NULL, err, sizeof err), EGRESS_EINVAL);
  const char *one[] = { NULL };
  CU_ASSERT_EQUAL(egress_policy_from_entries(one, 1, NULL, 0, &p, err, sizeof err), EGRESS_EPOLICY);
  CU_ASSERT_EQUAL(egress_policy_from_entries(NULL, 1, NULL, 0, &p, err, sizeof err), EGRESS_EINVAL);
  CU_ASSERT_EQUAL(egress_policy_from_file("/nonexistent/policy.json", &p, err, sizeof err), EGRESS_EIO);
  CU_ASSERT_PTR_NOT_NULL(strstr(err, "/nonexistent/policy.json"));
}

static void test_error_names_entry(void) {
  egress_policy_t *p = NULL;
  char err[EGRESS_ERRBUF_SIZE] = "";
  const char *allow[] = { "a.example.com", "b.example.com", "https://user@c.example.com" };
  CU_ASSERT_EQUAL(egress_policy_from_entries(allow, 3, NULL, 0, &p, err, sizeof err), EGRESS_EPOLICY);
  CU_ASSERT_PTR_NOT_NULL(strstr(err, "egressAllowlist[2]"));
  CU_ASSERT_PTR_NOT_NULL(strstr(err, "https://user@c.example.com"));
  /* Control characters in the entry are escaped in the message. */
  const char *ctl[] = { "a.example.com\r\nX-Injected: 1" };
  CU_ASSERT_EQUAL(egress_policy_from_entries(ctl, 1, NULL, 0, &p, err, sizeof err), EGRESS_EPOLICY);
  CU_ASSERT_PTR_NULL(strchr(err, '\n'));
  CU_ASSERT_PTR_NULL(strchr(err, '\r'));
  CU_ASSERT_PTR_NOT_NULL(strstr(err, "\\x0d\\x0a"));
  /* Entries too long to be real. */
  char *huge = malloc(10000);
  memset(huge, 'a', 9999);
  huge[9999] = '\0';
  const char *h[] = { huge };
  CU_ASSERT_EQUAL(egress_policy_from_entries(h, 1, NULL, 0, &p, err, sizeof err), EGRESS_EPOLICY);
  CU_ASSERT(strlen(err) < 400);
  free(huge);
}

static void test_digest(void) {
  const char *a1[] = { "a.example.com", "b.example.com" };
  const char *a2[] = { "a.example.com", "b.example.com" };
  const char *a3[] = { "b.example.com", "a.example.com" };
  const char *a4[] = { "a.example.com" };
  const char *d4[] = { "b.example.com" };
  egress_policy_t *p1 = must_policy(a1, 2, NULL, 0), *p2 = must_policy(a2, 2, NULL, 0);
  egress_policy_t *p3 = must_policy(a3, 2, NULL, 0), *p4 = must_policy(a4, 1, d4, 1);
  CU_ASSERT_EQUAL(strlen(egress_policy_digest(p1)), 64);
  CU_ASSERT_STRING_EQUAL(egress_policy_digest(p1), egress_policy_digest(p2));
  CU_ASSERT_STRING_NOT_EQUAL(egress_policy_digest(p1), egress_policy_digest(p3));
  CU_ASSERT_STRING_NOT_EQUAL(egress_policy_digest(p1), egress_policy_digest(p4));
  /* Known answers, computed independently (python hashlib) from the
   * canonical form: "LIST:COUNT\n" then "LEN:ENTRY" per entry. */
  egress_policy_t *empty = must_policy(NULL, 0, NULL, 0);
  CU_ASSERT_STRING_EQUAL(egress_policy_digest(empty),
                         "f6c64cff716df2da9d6e46c46f4f2b4b2d1c2f916012a7bf453f9f08df53373c");
  CU_ASSERT_STRING_EQUAL(egress_policy_digest(p1),
                         "1cfd1e38501c0f390286e079b07114f9a15b2fb2e53736946ce4951a45a47656");
  egress_policy_unref(empty);
  /* ref/unref */
  CU_ASSERT_PTR_EQUAL(egress_policy_ref(p1), p1);
  egress_policy_unref(p1);
  egress_policy_unref(p1);
  egress_policy_unref(p2);
  egress_policy_unref(p3);
  egress_policy_unref(p4);
  egress_policy_unref(NULL);
  CU_ASSERT_PTR_NULL(egress_policy_ref(NULL));
}

/* ---- differential test: compiled matcher vs. a naive reference ---- */

static const char *const labels[] = { "a", "b", "api", "x-1", "svc_", "example", "com", "net" };

static void random_name(unsigned *seed, char *out, size_t cap, int min_labels) {
  int n = min_labels + rand_r(seed) % 4;
  size_t o = 0;
  for (int i = 0; i < n; i++) {
    const char *l = labels[rand_r(seed) % 8];
    o += (size_t)snprintf(out + o, cap - o, "%s%s", i ? "." : "", l);
  }
}

static bool ref_rule_matches(const char *entry, const char *name, uint16_t port) {
  /* Entries here are NAME[:PORT] with NAME exact, *.S, **.S or *. */
  char host[300];
  const char *colon = strchr(entry, ':');
  size_t hl = colon ? (size_t)(colon - entry) : strlen(entry);
  memcpy(host, entry, hl);
  host[hl] = '\0';
  long lo = 443, hi = 443;
  if (colon) {
    if (colon[1] == '*')
      lo = 1, hi = 65535;
    else
      lo = hi = strtol(colon + 1, NULL, 10);
  }
  if (port < lo || port > hi) return false;
  size_t nl = strlen(name);
  if (!strcmp(host, "*")) return true;
  if (!strncmp(host, "**.", 3)) {
    const char *s = host + 3;
    size_t sl = strlen(s);
    return nl > sl + 1 && !strcmp(name + nl - sl, s) && name[nl - sl - 1] == '.';
  }
  if (!strncmp(host, "*.", 2)) {
    const char *dot = strchr(name, '.');
    return dot && !strcmp(dot + 1, host + 2);
  }
  return !strcmp(host, name);
}

static void test_differential(void) {
  unsigned seed = 12345;
  for (int round = 0; round < 400; round++) {
    const char *entries[12];
    char buf[12][300];
    int n = 1 + rand_r(&seed) % 12;
    for (int i = 0; i < n; i++) {
      char name[250];
      int kind = rand_r(&seed) % 5;
      random_name(&seed, name, sizeof name, 1);
      const char *ports[] = { "", ":443", ":8443", ":*" };
      const char *port = ports[rand_r(&seed) % 4];
      if (kind == 0)
        snprintf(buf[i], sizeof buf[i], "*.%s%s", name, port);
      else if (kind == 1)
        snprintf(buf[i], sizeof buf[i], "**.%s%s", name, port);
      else if (kind == 2 && rand_r(&seed) % 5 == 0)
        snprintf(buf[i], sizeof buf[i], "*%s", port);
      else
        snprintf(buf[i], sizeof buf[i], "%s%s", name, port);
      entries[i] = buf[i];
    }
    egress_policy_t *p = must_policy(entries, (size_t)n, NULL, 0);
    for (int q = 0; q < 50; q++) {
      char name[250];
      random_name(&seed, name, sizeof name, 1);
      uint16_t port = rand_r(&seed) % 2 ? 443 : 8443;
      long expect = -1;
      bool any = false;
      for (int i = 0; i < n; i++) {
        if (ref_rule_matches(entries[i], name, port)) {
          expect = i;
          break;
        }
      }
      for (int i = 0; i < n && expect < 0; i++)
        if (ref_rule_matches(entries[i], name, 0) || ref_rule_matches(entries[i], name, 443) ||
            ref_rule_matches(entries[i], name, 8443))
          any = true;
      long got = allowed_by(p, name, port);
      long want = expect >= 0 ? expect : (any ? -2 : -1);
      if (got != want) {
        fprintf(stderr, "differential: %s:%u got %ld want %ld\n", name, port, got, want);
        for (int i = 0; i < n; i++) fprintf(stderr, "  [%d] %s\n", i, entries[i]);
      }
      CU_ASSERT_EQUAL(got, want);
    }
    egress_policy_unref(p);
  }
}

static void test_many_rules(void) {
  size_t n = 100000;
  char **buf = malloc(n * sizeof *buf);
  CU_ASSERT_PTR_NOT_NULL_FATAL(buf);
  for (size_t i = 0; i < n; i++) {
    buf[i] = malloc(64);
    if (i % 4 == 0)
      snprintf(buf[i], 64, "host%zu.example.com", i);
    else if (i % 4 == 1)
      snprintf(buf[i], 64, "*.zone%zu.example.net:*", i);
    else if (i % 4 == 2)
      snprintf(buf[i], 64, "203.%zu.%zu.0/24", (i >> 8) & 255, i & 255);
    else
      snprintf(buf[i], 64, "[2001:db8:%zx::]/48:443", i & 0xffff);
  }
  egress_policy_t *p = must_policy((const char *const *)buf, n, NULL, 0);
  CU_ASSERT_EQUAL(allowed_by(p, "host4000.example.com", 443), 4000);
  CU_ASSERT_EQUAL(allowed_by(p, "a.zone4001.example.net", 22), 4001);
  CU_ASSERT_EQUAL(allowed_by(p, "host4001.example.com", 443), -1);
  CU_ASSERT_EQUAL(ip_allowed_by(p, "203.15.162.77", 80), 4002);
  for (size_t i = 0; i < n; i++) free(buf[i]);
  free(buf);
  egress_policy_unref(p);
}

/* The one-rule relations that render, lint and URL checks use agree with
 * the compiled matcher, rule by rule, and keep the apex out of wildcards. */
static void test_rule_matches_name(void) {
  static const char *const names[] = { "example.com",      "a.example.com",
                                       "a.b.example.com",  "aexample.com",
                                       "example.com.evil", "x.api.example.com",
                                       "api.example.com",  "com" };
  static const char *const entries[] = { "example.com", "*.example.com",   "**.example.com", "*",
                                         "re:^a\\..*$", "api.example.com", "10.0.0.0/8" };
  for (size_t e = 0; e < sizeof entries / sizeof *entries; e++) {
    egress_policy_t *p = must_policy(&entries[e], 1, NULL, 0);
    const egress__rule_t *r = &p->rules[EGRESS_LIST_ALLOW][0];
    for (size_t i = 0; i < sizeof names / sizeof *names; i++) {
      bool want = allowed_by(p, names[i], r->port_lo) == 0;
      if (egress__rule_matches_name(r, names[i], strlen(names[i])) != want)
        fprintf(stderr, "rule %s name %s: want %d\n", entries[e], names[i], want);
      CU_ASSERT_EQUAL(egress__rule_matches_name(r, names[i], strlen(names[i])), want);
    }
    egress_policy_unref(p);
  }
  const char *s = "example.com";
  size_t sl = strlen(s);
#define N_(x) x, strlen(x)
  CU_ASSERT_TRUE(egress__name_in_wild1(N_("a.example.com"), s, sl));
  CU_ASSERT_FALSE(egress__name_in_wild1(N_("example.com"), s, sl));
  CU_ASSERT_FALSE(egress__name_in_wild1(N_("a.b.example.com"), s, sl));
  CU_ASSERT_FALSE(egress__name_in_wild1(N_("aexample.com"), s, sl));
  CU_ASSERT_TRUE(egress__name_in_wildn(N_("a.example.com"), s, sl));
  CU_ASSERT_TRUE(egress__name_in_wildn(N_("a.b.example.com"), s, sl));
  CU_ASSERT_FALSE(egress__name_in_wildn(N_("example.com"), s, sl));
  CU_ASSERT_FALSE(egress__name_in_wildn(N_("aexample.com"), s, sl));
  CU_ASSERT_FALSE(egress__name_in_wildn(N_("example.com.a"), s, sl));
  CU_ASSERT_FALSE(egress__name_in_wildn(N_("com"), s, sl));
#undef N_
}

static void vet(const egress_policy_t *p, const egress__prefix_t *pref64, size_t n, const char *addr,
                uint16_t port, egress__vet_t *v) {
  egress__ip_t ip;
  bool ok = strchr(addr, ':') ? egress__ip6_parse(addr, strlen(addr), &ip)
                              : egress__ip4_parse(addr, strlen(addr), &ip);
  CU_ASSERT_FATAL(ok);
  /* Garbage in the result must not survive into it. */
  memset(v, 0x5a, sizeof *v);
  egress__vet_address(p, pref64, n, &ip, port, v);
}

/* Deny-list CIDRs, special-purpose addresses opened only by a rule inside
 * their range and on the port, and IPv4 carried inside IPv6. */
static void test_vet_address(void) {
  const char *allow[] = { "0.0.0.0/0:*", "10.1.0.0/16:443", "[2001:db8:64::]/96:*", "::/0",
                          "[64:ff9b::]/96:443" };
  const char *deny[] = { "8.8.4.0/24:*" };
  egress_policy_t *p = must_policy(allow, 5, deny, 1);
  const egress__rule_t *A = p->rules[EGRESS_LIST_ALLOW], *D = p->rules[EGRESS_LIST_DENY];
  egress__vet_t v;

  vet(p, NULL, 0, "8.8.8.8", 443, &v);
  CU_ASSERT_EQUAL(v.reason, EGRESS_REASON_NONE);
  CU_ASSERT_PTR_NULL(v.opener);
  CU_ASSERT_PTR_NULL(v.rule);
  CU_ASSERT_STRING_EQUAL(v.detail, "");

  vet(p, NULL, 0, "8.8.4.4", 443, &v);
  CU_ASSERT_EQUAL(v.reason, EGRESS_REASON_EXPLICIT_DENY);
  CU_ASSERT_PTR_EQUAL(v.rule, &D[0]);

  /* Opened by the rule naming its range, on that rule's port only. */
  vet(p, NULL, 0, "10.1.2.3", 443, &v);
  CU_ASSERT_EQUAL(v.reason, EGRESS_REASON_NONE);
  CU_ASSERT_PTR_EQUAL(v.opener, &A[1]);
  CU_ASSERT_EQUAL(v.open_len, 8);
  vet(p, NULL, 0, "10.1.2.3", 80, &v);
  CU_ASSERT_EQUAL(v.reason, EGRESS_REASON_SPECIAL_PURPOSE_ADDRESS);
  CU_ASSERT_PTR_EQUAL(v.elsewhere, &A[1]);
  CU_ASSERT_STRING_EQUAL(v.detail, "Private-Use");
  /* 0.0.0.0/0 takes every port but never opens private space. */
  vet(p, NULL, 0, "10.2.0.1", 443, &v);
  CU_ASSERT_EQUAL(v.reason, EGRESS_REASON_SPECIAL_PURPOSE_ADDRESS);
  CU_ASSERT_PTR_NULL(v.elsewhere);
  CU_ASSERT_PTR_NULL(v.opener);

  /* NAT64 well-known prefix: outside 2000::/3, so special; ::/0 does not
   * open it, naming it does (on its ports), and the embedded IPv4 is vetted
   * as itself on top. */
  vet(p, NULL, 0, "64:ff9b::808:808", 80, &v);
  CU_ASSERT_EQUAL(v.reason, EGRESS_REASON_SPECIAL_PURPOSE_ADDRESS);
  CU_ASSERT_STRING_EQUAL(v.detail, "IPv4-IPv6 Translat.");
  vet(p, NULL, 0, "64:ff9b::808:808", 443, &v);
  CU_ASSERT_EQUAL(v.reason, EGRESS_REASON_NONE);
  CU_ASSERT_PTR_EQUAL(v.opener, &A[4]);
  vet(p, NULL, 0, "64:ff9b::808:404", 443, &v);
  CU_ASSERT_EQUAL(v.reason, EGRESS_REASON_EXPLICIT_DENY);
  CU_ASSERT_PTR_EQUAL(v.rule, &D[0]);
  CU_ASSERT_STRING_EQUAL(v.detail, "embedded IPv4 8.8.4.4: explicit_deny");
  vet(p, NULL, 0, "64:ff9b::a02:203", 443, &v);
  CU_ASSERT_EQUAL(v.reason, EGRESS_REASON_SPECIAL_PURPOSE_ADDRESS);
  CU_ASSERT_STRING_EQUAL(v.detail, "embedded IPv4 10.2.2.3: Private-Use");
  vet(p, NULL, 0, "64:ff9b::a01:203", 443, &v);
  CU_ASSERT_EQUAL(v.reason, EGRESS_REASON_NONE);

  /* A network-specific prefix counts only when the caller names it. */
  egress__prefix_t pref64 = { .len = 96 };
  CU_ASSERT_FATAL(egress__ip6_parse("2001:db8:64::", 13, &pref64.addr));
  vet(p, NULL, 0, "2001:db8:64::808:404", 443, &v);
  CU_ASSERT_EQUAL(v.reason, EGRESS_REASON_NONE);
  CU_ASSERT_PTR_EQUAL(v.opener, &A[2]);
  vet(p, &pref64, 1, "2001:db8:64::808:404", 443, &v);
  CU_ASSERT_EQUAL(v.reason, EGRESS_REASON_EXPLICIT_DENY);
  CU_ASSERT_STRING_EQUAL(v.detail, "embedded IPv4 8.8.4.4: explicit_deny");
  /* Outside the opened /96, the documentation range stays closed. */
  vet(p, &pref64, 1, "2001:db8:65::1", 443, &v);
  CU_ASSERT_EQUAL(v.reason, EGRESS_REASON_SPECIAL_PURPOSE_ADDRESS);
  egress_policy_unref(p);
}

static CU_TestInfo policy_tests[] = {
  { "wildcards: *. one label, **. one or more, never the apex", test_wildcard_semantics },
  { "ports: single, range, any, scheme defaults, CIDR default any", test_ports },
  { "regex rules are anchored and caseless", test_regex },
  { "first matching rule in policy order is reported", test_first_rule_wins },
  { "document shapes", test_shapes },
  { "bad documents are rejected whole with a named problem", test_bad_documents },
  { "errors name list, index and entry, safely quoted", test_error_names_entry },
  { "policy digest", test_digest },
  { "compiled matcher agrees with a naive reference", test_differential },
  { "100000 rules compile and match", test_many_rules },
  { "one rule against one name agrees with the matcher", test_rule_matches_name },
  { "address vetting: deny CIDRs, special-purpose, embedded IPv4", test_vet_address },
  CU_TEST_INFO_NULL,
};

int main(int argc, char **argv) {
  static const egress_test_suite_t suites[] = { { "policy", NULL, NULL, policy_tests },
                                                { NULL, NULL, NULL, NULL } };
  return egress_test_main(argc, argv, suites);
}
