/*
 * Decision events and sinks: golden CloudEvents JSON (tests/golden/, written
 * by hand from docs/events.md), the event schema, UUID v4 and RFC 3339 stamps,
 * UTF-8 sanitizing of hostile strings, and every sink with its failure
 * modes (EPIPE, ENOSPC, EBADF, EAGAIN, failing callbacks, unwritable paths,
 * concurrent writers).
 */
#include "egress_private.h"
#include "testutil.h"
#include "jsonw.h"

#include <cjson/cJSON.h>
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define DIGEST "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"

/* ------------------------------------------------------------------------ */
/* Decisions built by hand                                                   */
/* ------------------------------------------------------------------------ */

/* A check points a decision's text into one allocation of its own; a
 * decision built here hangs the test's own copies on those pointers
 * instead, and frees them here. */
static void free_text(const char *s) { egress__free((char *)s); }

static egress_decision_t *new_decision(const char *dest, int32_t port) {
  egress_decision_t *d = egress__calloc(1, sizeof *d);
  CU_ASSERT_FATAL(d != NULL);
  d->t.destination = dest ? egress__strdup(dest) : NULL;
  d->v.port = port;
  d->v.verdict = EGRESS_VERDICT_DENY;
  d->v.outcome = EGRESS_OUTCOME_DENIED;
  d->v.mode = EGRESS_MODE_ENFORCE;
  d->v.special_version = "test-ranges-1";
  memcpy(d->policy_digest, DIGEST, sizeof DIGEST);
  d->v.dns_ms = 1.23456;
  d->v.latency_ms = 2.5;
  CU_ASSERT_FATAL(egress__event_stamp(d) == EGRESS_OK);
  return d;
}

static void set_host(egress_decision_t *d, const char *canon, egress__host_kind_t kind) {
  d->v.has_host = true;
  d->host.kind = kind;
  d->host.len = strlen(canon);
  memcpy(d->host.text, canon, d->host.len + 1);
}

static void set_rule(egress_decision_t *d, egress_list_t list, size_t index, const char *text) {
  d->v.has_rule = true;
  d->v.rule_list = list;
  d->v.rule_index = index;
  d->t.rule_text = egress__strdup(text);
}

static void set_field(egress_decision_t *d, egress_field_t f, const char *v) {
  d->t.field[f] = egress__strdup(v);
}

static void add_addr(egress_decision_t *d, const char *text, egress_verdict_t v, egress_reason_t r,
                     int32_t ttl) {
  egress__addr_verdict_t *a = egress__realloc(d->v.addrs, (d->v.naddrs + 1) * sizeof *a);
  CU_ASSERT_FATAL(a != NULL);
  d->v.addrs = a;
  a = &d->v.addrs[d->v.naddrs++];
  memset(a, 0, sizeof *a);
  snprintf(a->text, sizeof a->text, "%s", text);
  a->verdict = v;
  a->reason = r;
  a->ttl = ttl;
}

static void free_decision(egress_decision_t *d) {
  if (!d) return;
  free_text(d->t.message);
  free_text(d->t.destination);
  egress__free(d->t.url);
  free_text(d->t.rule_text);
  egress__free(d->v.addrs);
  free_text(d->t.curl_resolve);
  egress__free(d->t.event_json);
  for (int i = 0; i < EGRESS__FIELD_COUNT; i++) free_text(d->t.field[i]);
  egress__free(d);
}

static egress_decision_t *case_allowed(void) {
  egress_decision_t *d = new_decision("API.Example.com.", 443);
  set_host(d, "api.example.com", EGRESS__HOST_NAME);
  d->v.verdict = EGRESS_VERDICT_ALLOW;
  d->v.outcome = EGRESS_OUTCOME_ALLOWED;
  d->v.reason = EGRESS_REASON_NONE;
  set_rule(d, EGRESS_LIST_ALLOW, 0, "https://api.example.com");
  add_addr(d, "93.184.216.34", EGRESS_VERDICT_ALLOW, EGRESS_REASON_NONE, 60);
  add_addr(d, "2606:2800:220:1:248:1893:25c8:1946", EGRESS_VERDICT_ALLOW, EGRESS_REASON_NONE, 300);
  set_field(d, EGRESS_FIELD_METHOD, "GET");
  set_field(d, EGRESS_FIELD_WORKSPACE_ID, "ws-1");
  set_field(d, EGRESS_FIELD_AGENT_ID, "agent-7");
  set_field(d, EGRESS_FIELD_MACHINE_ID, "machine-3");
  set_field(d, EGRESS_FIELD_RUN_ID, "run-42");
  set_field(d, EGRESS_FIELD_CORRELATION_ID, "corr-9");
  d->t.curl_resolve =
      egress__strdup("api.example.com:443:93.184.216.34,[2606:2800:220:1:248:1893:25c8:1946]");
  d->t.message = egress__strdup("allowed by rule 0 of egressAllowlist");
  return d;
}

static egress_decision_t *case_not_in_allowlist(void) {
  egress_decision_t *d = new_decision("evil.example.net", 443);
  set_host(d, "evil.example.net", EGRESS__HOST_NAME);
  d->v.reason = EGRESS_REASON_NOT_IN_ALLOWLIST;
  d->t.message = egress__strdup("evil.example.net matches no allowlist entry");
  return d;
}

static egress_decision_t *case_explicit_deny(void) {
  egress_decision_t *d = new_decision("2001:DB8::1", 8443);
  set_host(d, "2001:db8::1", EGRESS__HOST_IPV6);
  d->v.reason = EGRESS_REASON_EXPLICIT_DENY;
  set_rule(d, EGRESS_LIST_DENY, 2, "2001:db8::/32");
  add_addr(d, "2001:db8::1", EGRESS_VERDICT_DENY, EGRESS_REASON_EXPLICIT_DENY, -1);
  set_field(d, EGRESS_FIELD_METHOD, "POST");
  set_field(d, EGRESS_FIELD_WORKSPACE_ID, "ws-1");
  d->v.dns_ms = 0;
  return d;
}

static egress_decision_t *case_resolved_forbidden(void) {
  egress_decision_t *d = new_decision("rebind.example.com", 443);
  set_host(d, "rebind.example.com", EGRESS__HOST_NAME);
  d->v.reason = EGRESS_REASON_RESOLVED_ADDRESS_FORBIDDEN;
  set_rule(d, EGRESS_LIST_ALLOW, 1, "*.example.com");
  add_addr(d, "8.8.8.8", EGRESS_VERDICT_ALLOW, EGRESS_REASON_NONE, 30);
  add_addr(d, "10.0.0.5", EGRESS_VERDICT_DENY, EGRESS_REASON_SPECIAL_PURPOSE_ADDRESS, 30);
  add_addr(d, "169.254.169.254", EGRESS_VERDICT_DENY, EGRESS_REASON_EXPLICIT_DENY, 0);
  set_field(d, EGRESS_FIELD_CORRELATION_ID, "c-1");
  return d;
}

static egress_decision_t *case_unavailable(void) {
  egress_decision_t *d = new_decision("api.example.com", 443);
  set_host(d, "api.example.com", EGRESS__HOST_NAME);
  d->v.outcome = EGRESS_OUTCOME_ENFORCEMENT_UNAVAILABLE;
  d->v.reason = EGRESS_REASON_DNS_UNAVAILABLE;
  set_rule(d, EGRESS_LIST_ALLOW, 0, "https://api.example.com/v1");
  set_field(d, EGRESS_FIELD_METHOD, "GET");
  d->policy_digest[0] = '\0';
  d->t.url = egress__strdup("https://api.example.com/v1/items");
  return d;
}

static egress_decision_t *case_monitor(void) {
  egress_decision_t *d = new_decision("Other.Example.org", 80);
  set_host(d, "other.example.org", EGRESS__HOST_NAME);
  d->v.mode = EGRESS_MODE_MONITOR;
  d->v.verdict = EGRESS_VERDICT_ALLOW;
  d->v.would_deny = true;
  d->v.reason = EGRESS_REASON_NOT_IN_ALLOWLIST;
  set_field(d, EGRESS_FIELD_AGENT_ID, "agent-7");
  d->t.message = egress__strdup("other.example.org matches no allowlist entry");
  return d;
}

/* Control characters, a quote and a backslash, a byte that is never UTF-8,
 * an overlong '/', and a well-formed e-acute. */
#define HOSTILE_DEST "ev\x01il\n.com\xff\xc0\xaf\xc3\xa9\"\\x"

static egress_decision_t *case_invalid_host(void) {
  egress_decision_t *d = new_decision(HOSTILE_DEST, 443);
  d->v.reason = EGRESS_REASON_INVALID_HOST;
  d->v.dns_ms = 0;
  return d;
}

/* A caller's 300-byte host, invalid: reported as its first bytes (cut
 * before the two-byte e-acute that straddles byte 253) and the marker. */
static egress_decision_t *case_long_host(void) {
  char host[301];
  memset(host, 'x', 252);
  memcpy(host + 252, "\xc3\xa9", 2);
  memset(host + 254, 'z', 46);
  host[300] = '\0';
  egress_decision_t *d = new_decision(host, 8443);
  d->v.reason = EGRESS_REASON_INVALID_HOST;
  d->v.dns_ms = 0;
  return d;
}

/* A URL check of a 5000-byte host: the host cut at 253 bytes, the URL
 * (kept as the "url" member) at 4096. */
static egress_decision_t *case_long_url(void) {
  static char host[5001], url[5012];
  memset(host, 'y', 5000);
  host[5000] = '\0';
  snprintf(url, sizeof url, "https://%s/v1", host);
  egress_decision_t *d = new_decision(host, 443);
  d->v.reason = EGRESS_REASON_INVALID_HOST;
  d->v.dns_ms = 0;
  d->t.url = egress__strdup(url);
  return d;
}

typedef struct golden_case {
  const char *name;
  egress_decision_t *(*make)(void);
  const char *source;
} golden_case_t;

static const golden_case_t event_cases[] = {
  { "event_allowed", case_allowed, NULL },
  { "event_not_in_allowlist", case_not_in_allowlist, "/enforcement/worker-a" },
  { "event_explicit_deny", case_explicit_deny, NULL },
  { "event_resolved_address_forbidden", case_resolved_forbidden, NULL },
  { "event_enforcement_unavailable", case_unavailable, NULL },
  { "event_monitor", case_monitor, NULL },
  { "event_invalid_host", case_invalid_host, NULL },
  { "event_long_host", case_long_host, NULL },
  { "event_long_url", case_long_url, NULL },
};
#define N_EVENT_CASES (sizeof event_cases / sizeof event_cases[0])

/* ------------------------------------------------------------------------ */
/* Helpers                                                                   */
/* ------------------------------------------------------------------------ */

/* Strict UTF-8 check written independently of lib/event.c: decode each
 * sequence to a code point, then reject overlongs, surrogates and values
 * above U+10FFFF. */
static bool utf8_ok(const unsigned char *s, size_t len) {
  size_t i = 0;
  while (i < len) {
    unsigned c = s[i];
    size_t n;
    unsigned cp, min;
    if (c < 0x80) {
      i++;
      continue;
    }
    if ((c & 0xE0) == 0xC0) {
      n = 2;
      cp = c & 0x1F;
      min = 0x80;
    } else if ((c & 0xF0) == 0xE0) {
      n = 3;
      cp = c & 0x0F;
      min = 0x800;
    } else if ((c & 0xF8) == 0xF0) {
      n = 4;
      cp = c & 0x07;
      min = 0x10000;
    } else
      return false;
    if (i + n > len) return false;
    for (size_t k = 1; k < n; k++) {
      if ((s[i + k] & 0xC0) != 0x80) return false;
      cp = (cp << 6) | (s[i + k] & 0x3F);
    }
    if (cp < min || cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF)) return false;
    i += n;
  }
  return true;
}

/* One line of strict JSON text: valid UTF-8, no raw control characters. */
static bool json_line_ok(const char *text) {
  size_t len = strlen(text);
  for (size_t i = 0; i < len; i++)
    if ((unsigned char)text[i] < 0x20) return false;
  return utf8_ok((const unsigned char *)text, len);
}

static char *slurp(const char *path, size_t *len_out) {
  FILE *f = fopen(path, "rb");
  if (!f) return NULL;
  size_t cap = 4096, len = 0;
  char *buf = malloc(cap);
  size_t n;
  while (buf && (n = fread(buf + len, 1, cap - len - 1, f)) > 0) {
    len += n;
    if (cap - len - 1 == 0) {
      char *nb = realloc(buf, cap * 2);
      if (!nb) {
        free(buf);
        buf = NULL;
        break;
      }
      buf = nb;
      cap *= 2;
    }
  }
  fclose(f);
  if (buf) buf[len] = '\0';
  if (len_out) *len_out = len;
  return buf;
}

static cJSON *load_golden(const char *name) {
  char rel[256], path[1024];
  snprintf(rel, sizeof rel, "golden/%s.json", name);
  char *text = slurp(egress_test_path(rel, path, sizeof path), NULL);
  if (!text) {
    fprintf(stderr, "cannot read golden file %s\n", path);
    return NULL;
  }
  cJSON *j = cJSON_Parse(text);
  if (!j) fprintf(stderr, "golden file %s is not JSON\n", path);
  free(text);
  return j;
}

static void replace_with_string(cJSON *obj, const char *key, const char *mask) {
  CU_ASSERT_FATAL(cJSON_HasObjectItem(obj, key));
  cJSON_ReplaceItemInObjectCaseSensitive(obj, key, cJSON_CreateString(mask));
}

static double rounded_ms(double v) { return (double)(long long)(v * 1000.0 + 0.5) / 1000.0; }

static void compare_golden(const char *name, cJSON *got) {
  cJSON *want = load_golden(name);
  CU_ASSERT_PTR_NOT_NULL_FATAL(want);
  bool same = cJSON_Compare(got, want, 1);
  if (!same) {
    char *g = cJSON_Print(got), *w = cJSON_Print(want);
    fprintf(stderr, "\n%s: mismatch\n--- got:\n%s\n--- want:\n%s\n", name, g, w);
    cJSON_free(g);
    cJSON_free(w);
  }
  CU_ASSERT_TRUE(same);
  cJSON_Delete(want);
}

/* ------------------------------------------------------------------------ */
/* Reference builder                                                         */
/* ------------------------------------------------------------------------ */

/*
 * The same shapes as lib/event.c writes, built through cJSON's public API
 * from the same decision, and written independently of the library: every
 * text the library makes must parse to exactly this tree (cJSON_Compare).
 */

/* The reference runs on many threads at once, where CUnit's assertions
 * are not safe: it aborts on the impossible instead. */
static void *xmalloc(size_t n) {
  void *p = malloc(n);
  if (!p) abort();
  return p;
}

/* Whether s[0..k) is the start of some well-formed UTF-8 sequence: the
 * code points it can still become (any continuation bytes after it) must
 * meet those its length may encode, surrogates excluded. */
static bool ref_utf8_prefix(const unsigned char *s, size_t k, size_t *need) {
  unsigned c = s[0], cp;
  unsigned long min;
  if ((c & 0xE0) == 0xC0) {
    *need = 2;
    cp = c & 0x1F;
    min = 0x80;
  } else if ((c & 0xF0) == 0xE0) {
    *need = 3;
    cp = c & 0x0F;
    min = 0x800;
  } else if ((c & 0xF8) == 0xF0) {
    *need = 4;
    cp = c & 0x07;
    min = 0x10000;
  } else
    return false;
  if (k > *need) return false;
  for (size_t i = 1; i < k; i++) {
    if ((s[i] & 0xC0) != 0x80) return false;
    cp = (cp << 6) | (s[i] & 0x3F);
  }
  unsigned long lo = cp, hi = cp;
  for (size_t i = k; i < *need; i++) {
    lo = lo << 6;
    hi = (hi << 6) | 0x3F;
  }
  if (hi < min || lo > 0x10FFFF) return false;
  /* Only a range lying wholly inside the surrogates is unusable. */
  if (lo >= 0xD800 && hi <= 0xDFFF) return false;
  return true;
}

/* s[0..len) with each maximal ill-formed subpart replaced by U+FFFD: at
 * each byte, the longest prefix that can still start a sequence; a whole
 * sequence is kept, anything shorter (at least one byte) replaced. */
static char *ref_repair(const char *s, size_t len) {
  const unsigned char *u = (const unsigned char *)s;
  char *out = xmalloc(len * 3 + 1);
  size_t o = 0, i = 0;
  while (i < len) {
    if (u[i] < 0x80) {
      out[o++] = s[i++];
      continue;
    }
    size_t k = 0, need = 0;
    while (i + k < len && ref_utf8_prefix(u + i, k + 1, &need)) k++;
    if (k > 0 && k == need) {
      memcpy(out + o, s + i, k);
      o += k;
      i += k;
    } else {
      memcpy(out + o, "\xEF\xBF\xBD", 3);
      o += 3;
      i += k ? k : 1;
    }
  }
  out[o] = '\0';
  return out;
}

static cJSON *ref_str_n(const char *s, size_t len) {
  char *r = ref_repair(s, len);
  cJSON *j = cJSON_CreateString(r);
  free(r);
  return j;
}

static cJSON *ref_str(const char *s) { return s ? ref_str_n(s, strlen(s)) : cJSON_CreateNull(); }

/* @p s as reported: whole up to @p max bytes, else its first bytes (at most
 * max, cut before at most three UTF-8 continuation bytes) and the marker. */
static char *ref_cut(const char *s, size_t max) {
  size_t len = strlen(s);
  char *out = xmalloc(len + 64);
  if (len <= max) {
    memcpy(out, s, len + 1);
    return out;
  }
  size_t keep = max;
  for (int i = 0; i < 3 && keep > 0 && ((unsigned char)s[keep] & 0xC0) == 0x80; i++) keep--;
  memcpy(out, s, keep);
  snprintf(out + keep, 64, "\xE2\x80\xA6(truncated, %zu bytes)", len);
  return out;
}

static cJSON *ref_cut_str(const char *s, size_t max) {
  if (!s) return cJSON_CreateNull();
  char *c = ref_cut(s, max);
  cJSON *j = ref_str(c);
  free(c);
  return j;
}

static bool ref_dest_is_url(const egress_decision_t *d) {
  return d->t.url && d->v.port == 0 && d->t.destination && !strcmp(d->t.destination, d->t.url);
}

static size_t ref_dest_max(const egress_decision_t *d) {
  return d->v.has_host ? SIZE_MAX : ref_dest_is_url(d) ? 4096 : 253;
}

static cJSON *ref_host_port(const egress_decision_t *d) {
  const char *dest = d->t.destination ? d->t.destination : "";
  char *cut = ref_cut(dest, ref_dest_max(d));
  if (ref_dest_is_url(d)) {
    cJSON *j = ref_str(cut);
    free(cut);
    return j;
  }
  size_t n = strlen(cut) + 32;
  char *hp = xmalloc(n);
  bool bracket = d->v.has_host && dest[0] != '[' && strchr(cut, ':');
  snprintf(hp, n, "%s%s%s:%ld", bracket ? "[" : "", cut, bracket ? "]" : "", (long)d->v.port);
  cJSON *j = ref_str(hp);
  free(hp);
  free(cut);
  return j;
}

static double ref_ms(double v) {
  if (!(v >= 0) || v == 1.0 / 0.0) return 0;
  return v >= 1e12 ? v : rounded_ms(v);
}

static cJSON *ref_reason(const egress_decision_t *d) {
  if (d->v.outcome == EGRESS_OUTCOME_ALLOWED && d->v.reason == EGRESS_REASON_NONE) return cJSON_CreateNull();
  return cJSON_CreateString(egress_reason_name(d->v.reason));
}

static cJSON *ref_rule(const egress_decision_t *d) {
  if (!d->v.has_rule) return cJSON_CreateNull();
  cJSON *r = cJSON_CreateObject();
  cJSON_AddNumberToObject(r, "index", (double)d->v.rule_index);
  cJSON_AddStringToObject(r, "list", d->v.rule_list == EGRESS_LIST_DENY ? "deny" : "allow");
  cJSON_AddItemToObject(r, "text", ref_str(d->t.rule_text));
  return r;
}

static cJSON *ref_addresses(const egress_decision_t *d) {
  cJSON *arr = cJSON_CreateArray();
  for (size_t i = 0; d->v.addrs && i < d->v.naddrs; i++) {
    const egress__addr_verdict_t *a = &d->v.addrs[i];
    cJSON *o = cJSON_CreateObject();
    cJSON_AddItemToObject(o, "address", ref_str_n(a->text, strnlen(a->text, sizeof a->text - 1)));
    cJSON_AddStringToObject(o, "verdict", a->verdict == EGRESS_VERDICT_ALLOW ? "allow" : "deny");
    if (a->reason == EGRESS_REASON_NONE)
      cJSON_AddNullToObject(o, "reason");
    else
      cJSON_AddStringToObject(o, "reason", egress_reason_name(a->reason));
    if (a->ttl < 0)
      cJSON_AddNullToObject(o, "ttl");
    else
      cJSON_AddNumberToObject(o, "ttl", a->ttl);
    cJSON_AddItemToArray(arr, o);
  }
  return arr;
}

static cJSON *ref_event(const egress_decision_t *d, const char *source) {
  static const struct {
    const char *key;
    egress_field_t field;
  } ctx[] = { { "workspaceId", EGRESS_FIELD_WORKSPACE_ID },     { "agentId", EGRESS_FIELD_AGENT_ID },
              { "machineId", EGRESS_FIELD_MACHINE_ID },         { "runId", EGRESS_FIELD_RUN_ID },
              { "correlationId", EGRESS_FIELD_CORRELATION_ID }, { "method", EGRESS_FIELD_METHOD } };
  cJSON *root = cJSON_CreateObject();
  cJSON_AddStringToObject(root, "specversion", "1.0");
  cJSON_AddStringToObject(root, "type", "io.portarium.egress.attempt");
  cJSON_AddItemToObject(root, "source", ref_str(source ? source : "/enforcement/libegress"));
  cJSON_AddItemToObject(root, "id", ref_str(d->event_id));
  cJSON_AddItemToObject(root, "time", ref_str(d->time_rfc3339));
  cJSON_AddStringToObject(root, "datacontenttype", "application/json");
  cJSON_AddItemToObject(root, "subject", ref_host_port(d));
  cJSON *data = cJSON_AddObjectToObject(root, "data");
  for (size_t i = 0; i < sizeof ctx / sizeof ctx[0]; i++)
    cJSON_AddItemToObject(data, ctx[i].key, ref_str(d->t.field[ctx[i].field]));
  cJSON_AddItemToObject(data, "destination", ref_host_port(d));
  cJSON_AddItemToObject(data, "host", ref_str(d->v.has_host ? d->host.text : NULL));
  cJSON_AddNumberToObject(data, "port", d->v.port);
  cJSON_AddStringToObject(data, "outcome", egress_outcome_name(d->v.outcome));
  cJSON_AddItemToObject(data, "denyReason", ref_reason(d));
  cJSON_AddStringToObject(data, "enforcementMode", d->v.mode == EGRESS_MODE_MONITOR ? "monitor" : "enforce");
  cJSON_AddBoolToObject(data, "wouldDeny", d->v.outcome != EGRESS_OUTCOME_ALLOWED);
  cJSON_AddItemToObject(data, "matchedRule", ref_rule(d));
  cJSON_AddItemToObject(data, "addresses", ref_addresses(d));
  cJSON_AddNumberToObject(data, "dnsMs", ref_ms(d->v.dns_ms));
  cJSON_AddNumberToObject(data, "latencyMs", ref_ms(d->v.latency_ms));
  cJSON_AddItemToObject(data, "policyDigest", ref_str(d->policy_digest[0] ? d->policy_digest : NULL));
  cJSON_AddItemToObject(data, "specialRangesVersion",
                        ref_str(d->v.special_version ? d->v.special_version : egress__special_version));
  if (d->t.url) cJSON_AddItemToObject(data, "url", ref_cut_str(d->t.url, 4096));
  return root;
}

static cJSON *ref_decision(const egress_decision_t *d) {
  cJSON *root = cJSON_CreateObject();
  if (d->v.has_host || !d->t.destination)
    cJSON_AddItemToObject(root, "host", ref_str(d->v.has_host ? d->host.text : NULL));
  else
    cJSON_AddItemToObject(root, "host", ref_cut_str(d->t.destination, ref_dest_max(d)));
  cJSON_AddNumberToObject(root, "port", d->v.port);
  cJSON_AddStringToObject(root, "verdict", d->v.verdict == EGRESS_VERDICT_ALLOW ? "allow" : "deny");
  cJSON_AddStringToObject(root, "outcome", egress_outcome_name(d->v.outcome));
  cJSON_AddItemToObject(root, "reason", ref_reason(d));
  cJSON_AddItemToObject(root, "matchedRule", ref_rule(d));
  cJSON_AddItemToObject(root, "addresses", ref_addresses(d));
  cJSON_AddItemToObject(root, "message",
                        ref_str(d->t.message ? d->t.message : egress_reason_message(d->v.reason)));
  cJSON_AddStringToObject(root, "mode", d->v.mode == EGRESS_MODE_MONITOR ? "monitor" : "enforce");
  cJSON_AddBoolToObject(root, "wouldDeny", d->v.outcome != EGRESS_OUTCOME_ALLOWED);
  if (d->t.curl_resolve) cJSON_AddItemToObject(root, "curlResolve", ref_str(d->t.curl_resolve));
  if (d->t.url) cJSON_AddItemToObject(root, "url", ref_cut_str(d->t.url, 4096));
  return root;
}

/* The members of @p a in the same order as those of @p b, recursively:
 * cJSON_Compare ignores the order, the audit format does not. */
static bool same_order(const cJSON *a, const cJSON *b) {
  if (cJSON_IsObject(a) != cJSON_IsObject(b) || cJSON_IsArray(a) != cJSON_IsArray(b)) return false;
  if (!cJSON_IsObject(a) && !cJSON_IsArray(a)) return true;
  const cJSON *x = a->child, *y = b->child;
  for (; x && y; x = x->next, y = y->next) {
    if (cJSON_IsObject(a) && strcmp(x->string, y->string)) return false;
    if (!same_order(x, y)) return false;
  }
  return !x && !y;
}

/* Shared between threads: counts the texts compared, so that a test can
 * prove its texts went through here. */
static atomic_long ref_compared;

/* @p text must be one line of strict JSON that parses to @p ref, in the
 * same member order; takes @p ref. */
static bool matches_ref(const char *text, cJSON *ref, const char *what) {
  cJSON *got = cJSON_Parse(text);
  bool ok = got && json_line_ok(text) && cJSON_Compare(got, ref, 1) && same_order(got, ref);
  if (!ok) {
    char *w = cJSON_PrintUnformatted(ref);
    fprintf(stderr, "\n%s differs from the reference\n--- got:\n%s\n--- want:\n%s\n", what, text, w);
    cJSON_free(w);
  }
  cJSON_Delete(got);
  cJSON_Delete(ref);
  atomic_fetch_add(&ref_compared, 1);
  return ok;
}

/* The library's event for @p d, checked against the reference, through
 * both of its writers: the allocated copy and the per-thread print buffer
 * (NULL only when the event does not fit it). */
static char *event_checked(const egress_decision_t *d, const char *source) {
  char *text = egress__event_build(d, source);
  CU_ASSERT_PTR_NOT_NULL_FATAL(text);
  CU_ASSERT_TRUE(matches_ref(text, ref_event(d, source), "event"));
  size_t len = 0;
  const char *printed = egress__event_print(d, source, &len);
  if (printed) {
    CU_ASSERT_EQUAL(len, strlen(text));
    CU_ASSERT_STRING_EQUAL(printed, text);
  } else {
    CU_ASSERT_TRUE(strlen(text) >= 8192);
  }
  return text;
}

static char *decision_checked(const egress_decision_t *d) {
  char *text = egress__decision_json(d);
  CU_ASSERT_PTR_NOT_NULL_FATAL(text);
  CU_ASSERT_TRUE(matches_ref(text, ref_decision(d), "decision"));
  return text;
}

/* ------------------------------------------------------------------------ */
/* Golden tests                                                              */
/* ------------------------------------------------------------------------ */

static void test_golden_events(void) {
  for (size_t i = 0; i < N_EVENT_CASES; i++) {
    egress_decision_t *d = event_cases[i].make();
    char *text = event_checked(d, event_cases[i].source);
    CU_ASSERT_PTR_NOT_NULL_FATAL(text);
    CU_ASSERT_TRUE(json_line_ok(text));
    CU_ASSERT_PTR_NULL(strchr(text, '\n'));
    cJSON *j = cJSON_Parse(text);
    CU_ASSERT_PTR_NOT_NULL_FATAL(j);
    /* The masked values must be the decision's own before they are masked. */
    CU_ASSERT_STRING_EQUAL(cJSON_GetObjectItem(j, "id")->valuestring, d->event_id);
    CU_ASSERT_STRING_EQUAL(cJSON_GetObjectItem(j, "time")->valuestring, d->time_rfc3339);
    cJSON *data = cJSON_GetObjectItem(j, "data");
    CU_ASSERT_PTR_NOT_NULL_FATAL(data);
    CU_ASSERT_DOUBLE_EQUAL(cJSON_GetObjectItem(data, "dnsMs")->valuedouble, rounded_ms(d->v.dns_ms), 1e-9);
    CU_ASSERT_DOUBLE_EQUAL(cJSON_GetObjectItem(data, "latencyMs")->valuedouble, rounded_ms(d->v.latency_ms),
                           1e-9);
    replace_with_string(j, "id", "<id>");
    replace_with_string(j, "time", "<time>");
    replace_with_string(data, "dnsMs", "<ms>");
    replace_with_string(data, "latencyMs", "<ms>");
    compare_golden(event_cases[i].name, j);
    cJSON_Delete(j);
    egress__free(text);
    free_decision(d);
  }
}

static void test_golden_decisions(void) {
  static const golden_case_t cases[] = {
    { "decision_allowed", case_allowed, NULL },
    { "decision_monitor", case_monitor, NULL },
    { "decision_invalid_host", case_invalid_host, NULL },
    { "decision_long_host", case_long_host, NULL },
  };
  for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
    egress_decision_t *d = cases[i].make();
    char *text = decision_checked(d);
    CU_ASSERT_PTR_NOT_NULL_FATAL(text);
    CU_ASSERT_TRUE(json_line_ok(text));
    cJSON *j = cJSON_Parse(text);
    CU_ASSERT_PTR_NOT_NULL_FATAL(j);
    compare_golden(cases[i].name, j);
    cJSON_Delete(j);
    egress__free(text);
    free_decision(d);
  }
}

/* ------------------------------------------------------------------------ */
/* Schema                                                                    */
/* ------------------------------------------------------------------------ */

/* Type codes: S string, s string or null, N number, n number or null,
 * B bool, R matchedRule (object or null), A array. */
typedef struct field_spec {
  const char *name;
  char type;
} field_spec_t;

static bool type_ok(const cJSON *v, char t) {
  switch (t) {
    case 'S': return cJSON_IsString(v);
    case 's': return cJSON_IsString(v) || cJSON_IsNull(v);
    case 'N': return cJSON_IsNumber(v);
    case 'n': return cJSON_IsNumber(v) || cJSON_IsNull(v);
    case 'B': return cJSON_IsBool(v);
    case 'R': return cJSON_IsObject(v) || cJSON_IsNull(v);
    case 'A': return cJSON_IsArray(v);
    case 'O': return cJSON_IsObject(v);
    default: return false;
  }
}

/* Every listed field present with its type, and no other field except
 * those named in @p optional. */
static void check_fields(const cJSON *obj, const field_spec_t *spec, size_t n, const field_spec_t *optional,
                         size_t nopt, const char *where) {
  CU_ASSERT_FATAL(cJSON_IsObject(obj));
  for (size_t i = 0; i < n; i++) {
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(obj, spec[i].name);
    if (!v || !type_ok(v, spec[i].type)) {
      fprintf(stderr, "%s: field %s missing or of the wrong type\n", where, spec[i].name);
      CU_FAIL("schema");
    }
  }
  for (const cJSON *c = obj->child; c; c = c->next) {
    bool known = false;
    for (size_t i = 0; i < n && !known; i++) known = !strcmp(c->string, spec[i].name);
    for (size_t i = 0; i < nopt && !known; i++)
      known = !strcmp(c->string, optional[i].name) && type_ok(c, optional[i].type);
    if (!known) {
      fprintf(stderr, "%s: unexpected field %s\n", where, c->string);
      CU_FAIL("schema: unexpected field");
    }
  }
}

static void check_rule_and_addresses(const cJSON *obj) {
  static const field_spec_t rule[] = { { "index", 'N' }, { "list", 'S' }, { "text", 'S' } };
  static const field_spec_t addr[] = {
    { "address", 'S' }, { "verdict", 'S' }, { "reason", 's' }, { "ttl", 'n' }
  };
  const cJSON *r = cJSON_GetObjectItemCaseSensitive(obj, "matchedRule");
  if (cJSON_IsObject(r)) {
    check_fields(r, rule, 3, NULL, 0, "matchedRule");
    const char *l = cJSON_GetObjectItem(r, "list")->valuestring;
    CU_ASSERT_TRUE(!strcmp(l, "allow") || !strcmp(l, "deny"));
  }
  const cJSON *a;
  cJSON_ArrayForEach(a, cJSON_GetObjectItemCaseSensitive(obj, "addresses")) {
    check_fields(a, addr, 4, NULL, 0, "addresses[]");
    const char *v = cJSON_GetObjectItem(a, "verdict")->valuestring;
    CU_ASSERT_TRUE(!strcmp(v, "allow") || !strcmp(v, "deny"));
    /* A passed address has no reason; a failed one always has one. */
    CU_ASSERT_EQUAL(!strcmp(v, "allow"), cJSON_IsNull(cJSON_GetObjectItem(a, "reason")));
  }
}

static void test_schema(void) {
  static const field_spec_t top[] = { { "specversion", 'S' }, { "type", 'S' }, { "source", 'S' },
                                      { "id", 'S' },          { "time", 'S' }, { "datacontenttype", 'S' },
                                      { "subject", 'S' },     { "data", 'O' } };
  static const field_spec_t data[] = { { "workspaceId", 's' },
                                       { "agentId", 's' },
                                       { "machineId", 's' },
                                       { "runId", 's' },
                                       { "correlationId", 's' },
                                       { "method", 's' },
                                       { "destination", 'S' },
                                       { "host", 's' },
                                       { "port", 'N' },
                                       { "outcome", 'S' },
                                       { "denyReason", 's' },
                                       { "enforcementMode", 'S' },
                                       { "wouldDeny", 'B' },
                                       { "matchedRule", 'R' },
                                       { "addresses", 'A' },
                                       { "dnsMs", 'N' },
                                       { "latencyMs", 'N' },
                                       { "policyDigest", 's' },
                                       { "specialRangesVersion", 'S' } };
  static const field_spec_t data_opt[] = { { "url", 'S' } };
  static const field_spec_t dec[] = { { "host", 'S' },      { "port", 'N' },    { "verdict", 'S' },
                                      { "outcome", 'S' },   { "reason", 's' },  { "matchedRule", 'R' },
                                      { "addresses", 'A' }, { "message", 'S' }, { "mode", 'S' },
                                      { "wouldDeny", 'B' } };
  static const field_spec_t dec_opt[] = { { "curlResolve", 'S' }, { "url", 'S' } };

  for (size_t i = 0; i < N_EVENT_CASES; i++) {
    egress_decision_t *d = event_cases[i].make();
    char *text = event_checked(d, NULL);
    CU_ASSERT_PTR_NOT_NULL_FATAL(text);
    cJSON *j = cJSON_Parse(text);
    CU_ASSERT_PTR_NOT_NULL_FATAL(j);
    check_fields(j, top, sizeof top / sizeof top[0], NULL, 0, event_cases[i].name);
    CU_ASSERT_STRING_EQUAL(cJSON_GetObjectItem(j, "specversion")->valuestring, "1.0");
    CU_ASSERT_STRING_EQUAL(cJSON_GetObjectItem(j, "type")->valuestring, "io.portarium.egress.attempt");
    CU_ASSERT_STRING_EQUAL(cJSON_GetObjectItem(j, "source")->valuestring, "/enforcement/libegress");
    CU_ASSERT_STRING_EQUAL(cJSON_GetObjectItem(j, "datacontenttype")->valuestring, "application/json");
    cJSON *dj = cJSON_GetObjectItem(j, "data");
    check_fields(dj, data, sizeof data / sizeof data[0], data_opt, 1, event_cases[i].name);
    check_rule_and_addresses(dj);
    /* url appears exactly when the check was a URL check. */
    CU_ASSERT_EQUAL(cJSON_HasObjectItem(dj, "url") != 0, d->t.url != NULL);
    /* wouldDeny and denyReason agree with the outcome, in both modes. */
    bool allowed = d->v.outcome == EGRESS_OUTCOME_ALLOWED;
    CU_ASSERT_EQUAL(cJSON_IsTrue(cJSON_GetObjectItem(dj, "wouldDeny")), !allowed);
    CU_ASSERT_EQUAL(cJSON_IsNull(cJSON_GetObjectItem(dj, "denyReason")), allowed);
    CU_ASSERT_STRING_EQUAL(cJSON_GetObjectItem(j, "subject")->valuestring,
                           cJSON_GetObjectItem(dj, "destination")->valuestring);
    cJSON_Delete(j);
    egress__free(text);

    text = decision_checked(d);
    CU_ASSERT_PTR_NOT_NULL_FATAL(text);
    CU_ASSERT_TRUE(json_line_ok(text));
    j = cJSON_Parse(text);
    CU_ASSERT_PTR_NOT_NULL_FATAL(j);
    check_fields(j, dec, sizeof dec / sizeof dec[0], dec_opt, 2, event_cases[i].name);
    check_rule_and_addresses(j);
    CU_ASSERT_EQUAL(cJSON_HasObjectItem(j, "curlResolve") != 0, d->t.curl_resolve != NULL);
    CU_ASSERT_STRING_EQUAL(cJSON_GetObjectItem(j, "verdict")->valuestring,
                           d->v.verdict == EGRESS_VERDICT_ALLOW ? "allow" : "deny");
    cJSON_Delete(j);
    egress__free(text);
    free_decision(d);
  }
}

/* ------------------------------------------------------------------------ */
/* Stamps                                                                    */
/* ------------------------------------------------------------------------ */

static int cmp_str(const void *a, const void *b) { return strcmp((const char *)a, (const char *)b); }

static void test_uuid_v4(void) {
  enum { N = 10000 };
  char(*ids)[37] = calloc(N, sizeof *ids);
  CU_ASSERT_PTR_NOT_NULL_FATAL(ids);
  egress_decision_t d;
  memset(&d, 0, sizeof d);
  unsigned char seen_one[16] = { 0 }, seen_zero[16] = { 0 };
  bool format_ok = true;
  for (int i = 0; i < N; i++) {
    CU_ASSERT_EQUAL_FATAL(egress__event_stamp(&d), EGRESS_OK);
    const char *u = d.event_id;
    if (strlen(u) != 36) format_ok = false;
    unsigned char bytes[16];
    size_t b = 0;
    for (size_t k = 0; k < 36 && format_ok; k++) {
      if (k == 8 || k == 13 || k == 18 || k == 23) {
        if (u[k] != '-') format_ok = false;
        continue;
      }
      const char *hex = "0123456789abcdef";
      const char *p = u[k] ? strchr(hex, u[k]) : NULL;
      if (!p) {
        format_ok = false;
        break;
      }
      if (b % 2 == 0 && b / 2 < 16)
        bytes[b / 2] = (unsigned char)((p - hex) << 4);
      else
        bytes[b / 2] |= (unsigned char)(p - hex);
      b++;
    }
    if (!format_ok) {
      fprintf(stderr, "bad uuid: %s\n", u);
      break;
    }
    if (u[14] != '4' || !strchr("89ab", u[19])) format_ok = false;
    for (int k = 0; k < 16; k++) {
      seen_one[k] |= bytes[k];
      seen_zero[k] |= (unsigned char)~bytes[k];
    }
    memcpy(ids[i], u, 37);
  }
  CU_ASSERT_TRUE(format_ok);
  /* Every one of the 122 random bits took both values over 10000 ids; the
   * 6 fixed bits never changed. */
  for (int k = 0; k < 16; k++) {
    unsigned char fixed = k == 6 ? 0xF0 : k == 8 ? 0xC0 : 0;
    CU_ASSERT_EQUAL(seen_one[k] & seen_zero[k], (unsigned char)~fixed);
  }
  qsort(ids, N, sizeof *ids, cmp_str);
  int dups = 0;
  for (int i = 1; i < N; i++) dups += !strcmp(ids[i - 1], ids[i]);
  CU_ASSERT_EQUAL(dups, 0);
  free(ids);
  CU_ASSERT_EQUAL(egress__event_stamp(NULL), EGRESS_EINVAL);
}

static void test_rfc3339(void) {
  egress_decision_t d;
  memset(&d, 0, sizeof d);
  for (int i = 0; i < 200; i++) {
    /* The same clock the stamp reads: time() may lag it by a tick. */
    struct timespec b, a;
    clock_gettime(CLOCK_REALTIME, &b);
    CU_ASSERT_EQUAL_FATAL(egress__event_stamp(&d), EGRESS_OK);
    clock_gettime(CLOCK_REALTIME, &a);
    time_t before = b.tv_sec, after = a.tv_sec;
    const char *t = d.time_rfc3339;
    /* YYYY-MM-DDTHH:MM:SS.mmmZ */
    const char *pat = "dddd-dd-ddTdd:dd:dd.dddZ";
    CU_ASSERT_EQUAL_FATAL(strlen(t), strlen(pat));
    for (size_t k = 0; pat[k]; k++) {
      if (pat[k] == 'd') {
        CU_ASSERT_TRUE(t[k] >= '0' && t[k] <= '9');
      } else {
        CU_ASSERT_EQUAL(t[k], pat[k]);
      }
    }
    struct tm tm;
    memset(&tm, 0, sizeof tm);
    int ms = -1;
    CU_ASSERT_EQUAL(sscanf(t, "%4d-%2d-%2dT%2d:%2d:%2d.%3dZ", &tm.tm_year, &tm.tm_mon, &tm.tm_mday,
                           &tm.tm_hour, &tm.tm_min, &tm.tm_sec, &ms),
                    7);
    CU_ASSERT_TRUE(tm.tm_mon >= 1 && tm.tm_mon <= 12 && tm.tm_mday >= 1 && tm.tm_mday <= 31 &&
                   tm.tm_hour <= 23 && tm.tm_min <= 59 && tm.tm_sec <= 60 && ms >= 0 && ms <= 999);
    tm.tm_year -= 1900;
    tm.tm_mon -= 1;
    time_t when = timegm(&tm);
    /* UTC, not local time: the stamp lies between the two readings. */
    CU_ASSERT_TRUE(when >= before && when <= after);
  }
}

/* ------------------------------------------------------------------------ */
/* Hostile strings                                                           */
/* ------------------------------------------------------------------------ */

/* Host field of egressctl's output for an invalid destination, as bytes. */
static char *invalid_host_output(const char *dest) {
  egress_decision_t *d = new_decision(dest, 443);
  d->v.reason = EGRESS_REASON_INVALID_HOST;
  char *text = decision_checked(d);
  free_decision(d);
  CU_ASSERT_PTR_NOT_NULL_FATAL(text);
  CU_ASSERT_TRUE(json_line_ok(text));
  cJSON *j = cJSON_Parse(text);
  egress__free(text);
  CU_ASSERT_PTR_NOT_NULL_FATAL(j);
  char *host = strdup(cJSON_GetObjectItem(j, "host")->valuestring);
  cJSON_Delete(j);
  return host;
}

#define R "\xEF\xBF\xBD" /* U+FFFD */

static void test_utf8_replacement(void) {
  /* Unicode §3.9 Table 3-8 and the maximal-subpart rule: one U+FFFD per
   * maximal subpart of an ill-formed sequence. */
  static const struct {
    const char *in, *out;
  } cases[] = {
    { "a\x80z", "a" R "z" }, /* lone continuation */
    { "\xC0\xAF", R R },     /* overlong '/': C0 never leads */
    { "\xC1\xBF", R R },
    { "\xE0\x80\xAF", R R R },       /* overlong 3-byte */
    { "\xF0\x80\x80\xAF", R R R R }, /* overlong 4-byte */
    { "\xED\xA0\x80", R R R },       /* surrogate D800 */
    { "\xED\xBF\xBF", R R R },       /* surrogate DFFF */
    { "\xF4\x90\x80\x80", R R R R }, /* above U+10FFFF */
    { "\xF5\x80\x80\x80", R R R R },
    { "\xFE\xFF", R R },
    { "\xE2\x82", R },      /* truncated at end */
    { "\xE2\x82z", R "z" }, /* truncated, then ASCII */
    { "\xF0\x9F\x98", R },
    { "\xF0\x9F\x98\xF0\x9F\x98\x80", R "\xF0\x9F\x98\x80" },
    { "\x61\xF1\x80\x80\xE1\x80\xC2\x62\x80\x63\x80\xBF\x64",
      "a" R R R "b" R "c" R R "d" },            /* Unicode's own example */
    { "\xED\x9F\xBF", "\xED\x9F\xBF" },         /* U+D7FF: valid */
    { "\xEE\x80\x80", "\xEE\x80\x80" },         /* U+E000: valid */
    { "\xF4\x8F\xBF\xBF", "\xF4\x8F\xBF\xBF" }, /* U+10FFFF: valid */
    { "\xC2\x80", "\xC2\x80" },                 /* U+0080: valid */
    { "\xE2\x80\xA8", "\xE2\x80\xA8" },         /* U+2028: valid JSON */
    { "\x7F", "\x7F" },
  };
  for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
    char *got = invalid_host_output(cases[i].in);
    if (strcmp(got, cases[i].out)) fprintf(stderr, "utf8 case %zu differs\n", i);
    CU_ASSERT_STRING_EQUAL(got, cases[i].out);
    free(got);
  }
  /* Every control character survives as itself (escaped on the wire). */
  for (int c = 1; c < 0x20; c++) {
    char in[4] = { 'a', (char)c, 'b', 0 };
    char *got = invalid_host_output(in);
    CU_ASSERT_STRING_EQUAL(got, in);
    free(got);
  }
}

static unsigned long long rng_state = 0x9E3779B97F4A7C15ull;
static unsigned rnd(void) {
  rng_state ^= rng_state << 13;
  rng_state ^= rng_state >> 7;
  rng_state ^= rng_state << 17;
  return (unsigned)(rng_state >> 16);
}

static void random_string(char *buf, size_t cap) {
  static const char *pieces[] = {
    "\xC3\xA9", "\xE2\x82\xAC", "\xF0\x9F\x98\x80", "\"", "\\", "\n", "\x01", "\x7F",
    "\xFF",     "\xC0",         "\xED\xA0\x80",     ":",  "[",  "]",  "/",    "\\u0000",
    "%00",      "\xE2\x80\xA8"
  };
  size_t n = rnd() % 40, o = 0;
  for (size_t i = 0; i < n && o + 5 < cap; i++) {
    if (rnd() % 3 == 0) {
      const char *p = pieces[rnd() % (sizeof pieces / sizeof pieces[0])];
      size_t pl = strlen(p);
      memcpy(buf + o, p, pl);
      o += pl;
    } else {
      buf[o++] = (char)(1 + rnd() % 255);
    }
  }
  buf[o] = '\0';
}

static void test_hostile_strings(void) {
  char dest[256], other[256];
  int bad = 0, roundtrip_fail = 0;
  for (int iter = 0; iter < 4000; iter++) {
    random_string(dest, sizeof dest);
    egress_decision_t *d = new_decision(dest, (int32_t)(rnd() % 70000) - 100);
    d->v.reason = EGRESS_REASON_INVALID_HOST;
    for (int f = 0; f < EGRESS__FIELD_COUNT; f++) {
      random_string(other, sizeof other);
      set_field(d, (egress_field_t)f, other);
    }
    random_string(other, sizeof other);
    d->t.message = egress__strdup(other);
    random_string(other, sizeof other);
    d->t.url = egress__strdup(other);
    random_string(other, sizeof other);
    set_rule(d, EGRESS_LIST_DENY, rnd(), other);
    char *ev = event_checked(d, other);
    char *dj = decision_checked(d);
    CU_ASSERT_PTR_NOT_NULL_FATAL(ev);
    CU_ASSERT_PTR_NOT_NULL_FATAL(dj);
    if (!json_line_ok(ev) || !json_line_ok(dj)) bad++;
    cJSON *je = cJSON_Parse(ev), *jd = cJSON_Parse(dj);
    if (!je || !jd) {
      bad++;
    } else if (utf8_ok((const unsigned char *)dest, strlen(dest))) {
      /* Well-formed input comes back byte for byte. */
      char expect[300];
      snprintf(expect, sizeof expect, "%s:%ld", dest, (long)d->v.port);
      const char *got = cJSON_GetObjectItem(cJSON_GetObjectItem(je, "data"), "destination")->valuestring;
      if (strcmp(got, expect) || strcmp(cJSON_GetObjectItem(jd, "host")->valuestring, dest)) roundtrip_fail++;
    }
    cJSON_Delete(je);
    cJSON_Delete(jd);
    egress__free(ev);
    egress__free(dj);
    free_decision(d);
  }
  CU_ASSERT_EQUAL(bad, 0);
  CU_ASSERT_EQUAL(roundtrip_fail, 0);
}

static const char *event_subject(egress_decision_t *d, char *buf, size_t len) {
  char *text = event_checked(d, NULL);
  CU_ASSERT_PTR_NOT_NULL_FATAL(text);
  cJSON *j = cJSON_Parse(text);
  CU_ASSERT_PTR_NOT_NULL_FATAL(j);
  snprintf(buf, len, "%s", cJSON_GetObjectItem(j, "subject")->valuestring);
  cJSON_Delete(j);
  egress__free(text);
  return buf;
}

static void test_subject(void) {
  static const struct {
    const char *dest, *canon;
    egress__host_kind_t kind;
    int32_t port;
    const char *subject;
  } cases[] = {
    { "::1", "::1", EGRESS__HOST_IPV6, 443, "[::1]:443" },
    { "[::1]", "::1", EGRESS__HOST_IPV6, 443, "[::1]:443" },
    { "::ffff:1.2.3.4", "1.2.3.4", EGRESS__HOST_IPV4, 80, "[::ffff:1.2.3.4]:80" },
    { "203.0.113.7", "203.0.113.7", EGRESS__HOST_IPV4, 1, "203.0.113.7:1" },
    { "Example.COM", "example.com", EGRESS__HOST_NAME, 65535, "Example.COM:65535" },
    { "a:b", NULL, 0, 443, "a:b:443" }, /* invalid: left as given */
    { "[1.2.3.4]", NULL, 0, 443, "[1.2.3.4]:443" },
    { "", NULL, 0, 443, ":443" },
    { "example.com", "example.com", EGRESS__HOST_NAME, 0, "example.com:0" },
    { "example.com", "example.com", EGRESS__HOST_NAME, 70000, "example.com:70000" },
    { "example.com", "example.com", EGRESS__HOST_NAME, -1, "example.com:-1" },
    { NULL, NULL, 0, 443, ":443" },
  };
  char buf[256];
  for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
    egress_decision_t *d = new_decision(cases[i].dest, cases[i].port);
    if (cases[i].canon) set_host(d, cases[i].canon, cases[i].kind);
    CU_ASSERT_STRING_EQUAL(event_subject(d, buf, sizeof buf), cases[i].subject);
    free_decision(d);
  }
}

static void test_numbers(void) {
  egress_decision_t *d = case_allowed();
  d->v.port = 70000;
  d->v.dns_ms = 1.23456;
  d->v.latency_ms = 0.0004;
  d->v.rule_index = 4000000000u;
  char *text = event_checked(d, NULL);
  CU_ASSERT_PTR_NOT_NULL_FATAL(text);
  CU_ASSERT_PTR_NOT_NULL(strstr(text, "\"port\":70000,"));
  CU_ASSERT_PTR_NOT_NULL(strstr(text, "\"dnsMs\":1.235,"));
  CU_ASSERT_PTR_NOT_NULL(strstr(text, "\"latencyMs\":0,"));
  CU_ASSERT_PTR_NOT_NULL(strstr(text, "\"index\":4000000000,"));
  egress__free(text);

  /* Nonsense timings keep the field a number. */
  double weird[] = { -5.0, 0.0 / 0.0, 1.0 / 0.0 };
  for (size_t i = 0; i < 3; i++) {
    d->v.latency_ms = weird[i];
    text = event_checked(d, NULL);
    CU_ASSERT_PTR_NOT_NULL_FATAL(text);
    CU_ASSERT_PTR_NOT_NULL(strstr(text, "\"latencyMs\":0,"));
    egress__free(text);
  }
  free_decision(d);

  CU_ASSERT_PTR_NULL(egress__event_build(NULL, NULL));
  CU_ASSERT_PTR_NULL(egress__decision_json(NULL));
}

/* An event built on a thread of its own: its print buffer has never held
 * another event. */
typedef struct fresh_build {
  const egress_decision_t *d;
  char *text;
} fresh_build_t;

static void *fresh_build_thread(void *arg) {
  fresh_build_t *b = arg;
  size_t len = 0;
  const char *printed = egress__event_print(b->d, NULL, &len);
  b->text = printed ? egress__strndup(printed, len) : NULL;
  return NULL;
}

static char *event_print_fresh(const egress_decision_t *d) {
  fresh_build_t b = { d, NULL };
  pthread_t t;
  CU_ASSERT_EQUAL_FATAL(pthread_create(&t, NULL, fresh_build_thread, &b), 0);
  pthread_join(t, NULL);
  return b.text;
}

/* A thread prints every event into one buffer: whatever came before (a URL
 * member, a matched rule, eleven addresses, an ill-formed string), each
 * event must read exactly as one printed on a thread of its own. */
static void test_print_buffer_reuse(void) {
  egress_decision_t *d[N_EVENT_CASES + 1];
  char *fresh[N_EVENT_CASES + 1];
  size_t n = N_EVENT_CASES;
  for (size_t i = 0; i < N_EVENT_CASES; i++) d[i] = event_cases[i].make();
  /* One more shape: many addresses, a longer event than the others. */
  d[n] = case_resolved_forbidden();
  for (int k = 0; k < 9; k++)
    add_addr(d[n], "2001:db8::7", EGRESS_VERDICT_DENY, EGRESS_REASON_EXPLICIT_DENY, k);
  n++;
  for (size_t i = 0; i < n; i++) {
    fresh[i] = event_print_fresh(d[i]);
    CU_ASSERT_PTR_NOT_NULL_FATAL(fresh[i]);
  }
  unsigned seed = 12345;
  for (int round = 0; round < 2000; round++) {
    seed = seed * 1103515245u + 12345u;
    size_t i = (seed >> 16) % n;
    size_t len = 0;
    const char *text = egress__event_print(d[i], NULL, &len);
    CU_ASSERT_PTR_NOT_NULL_FATAL(text);
    if (len != strlen(fresh[i]) || strcmp(text, fresh[i])) {
      printf("\n  case %zu after reuse:\n  %s\n  fresh:\n  %s\n", i, text, fresh[i]);
      CU_FAIL("reused print buffer differs from a fresh one");
      break;
    }
  }
  for (size_t i = 0; i < n; i++) {
    CU_ASSERT_TRUE(matches_ref(fresh[i], ref_event(d[i], NULL), "printed event"));
    egress__free(fresh[i]);
    free_decision(d[i]);
  }
}

/* Every allocation of the writers fails in turn.  None is optional (the
 * first holds the text, the others grow it), so the Nth failing must give
 * NULL having tried no further, and every run past the last allocation the
 * full, correct text; never a partial one, and no leak (ASan builds).  The
 * long cases grow the buffer several times.  Printing for a sink allocates
 * nothing at all. */
static void test_alloc_failures(void) {
  for (size_t c = 0; c < N_EVENT_CASES; c++) {
    egress_decision_t *d = event_cases[c].make();
    char *ref[2] = { event_checked(d, NULL), decision_checked(d) };
    for (int which = 0; which < 2; which++) {
      long failures = 0;
      for (long n = 1; n < 100; n++) {
        egress__alloc_fail_at(n);
        char *text = which == 0 ? egress__event_build(d, NULL) : egress__decision_json(d);
        long used = egress__alloc_count();
        egress__alloc_fail_at(0);
        if (used >= n) {
          CU_ASSERT_PTR_NULL(text);
          CU_ASSERT_EQUAL(used, n);
          failures++;
        } else {
          CU_ASSERT_PTR_NOT_NULL(text);
          if (text) CU_ASSERT_STRING_EQUAL(text, ref[which]);
        }
        egress__free(text);
        if (used < n) break;
      }
      CU_ASSERT_TRUE(failures >= 1);
      /* An event past 4 KiB takes the first buffer and three growths. */
      if (which == 0 && strlen(ref[0]) > 4096) CU_ASSERT_TRUE(failures >= 4);
    }
    size_t len = 0;
    egress__alloc_fail_at(1);
    const char *printed = egress__event_print(d, NULL, &len);
    CU_ASSERT_EQUAL(egress__alloc_count(), 0);
    egress__alloc_fail_at(0);
    if (printed) CU_ASSERT_STRING_EQUAL(printed, ref[0]);
    egress__free(ref[0]);
    egress__free(ref[1]);
    free_decision(d);
  }
}

/* ------------------------------------------------------------------------ */
/* The writer                                                                */
/* ------------------------------------------------------------------------ */

/* Exact bytes on the wire: cJSON's escapes, nothing else changed. */
static void test_writer_escapes(void) {
  static const struct {
    const char *in, *out;
  } cases[] = {
    { "", "\"\"" },
    { "plain ascii ~", "\"plain ascii ~\"" },
    { "\"\\/", "\"\\\"\\\\/\"" },
    { "\b\f\n\r\t", "\"\\b\\f\\n\\r\\t\"" },
    { "\x01\x1f\x7f", "\"\\u0001\\u001f\x7f\"" },
    { "\xE2\x80\xA8\xE2\x80\xA9", "\"\xE2\x80\xA8\xE2\x80\xA9\"" }, /* U+2028/2029 as they are */
    { "\xF0\x9F\x98\x80", "\"\xF0\x9F\x98\x80\"" },
    { "a\xC0\xAF"
      "b",
      "\"a" R R "b\"" },
    { "\xED\xA0\x80\n", "\"" R R R "\\n\"" },
  };
  for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
    egress__jsonw_t w;
    egress__jsonw_heap(&w, 1);
    egress__jsonw_string(&w, cases[i].in);
    size_t len = 0;
    char *got = egress__jsonw_finish(&w, &len);
    CU_ASSERT_PTR_NOT_NULL_FATAL(got);
    CU_ASSERT_EQUAL(len, strlen(got));
    CU_ASSERT_STRING_EQUAL(got, cases[i].out);
    egress__free(got);
  }
  egress__jsonw_t w;
  egress__jsonw_heap(&w, 4);
  egress__jsonw_string(&w, NULL);
  EGRESS__JSONW_LIT(&w, ",");
  egress__jsonw_int(&w, INT64_MIN);
  EGRESS__JSONW_LIT(&w, ",");
  egress__jsonw_int(&w, INT64_MAX);
  EGRESS__JSONW_LIT(&w, ",");
  egress__jsonw_uint(&w, UINT64_MAX);
  EGRESS__JSONW_LIT(&w, ",");
  egress__jsonw_int(&w, 0);
  EGRESS__JSONW_LIT(&w, ",");
  egress__jsonw_bool(&w, true);
  EGRESS__JSONW_LIT(&w, ",");
  egress__jsonw_bool(&w, false);
  char *got = egress__jsonw_finish(&w, NULL);
  CU_ASSERT_PTR_NOT_NULL_FATAL(got);
  CU_ASSERT_STRING_EQUAL(got,
                         "null,-9223372036854775808,9223372036854775807,18446744073709551615,0,true,false");
  egress__free(got);
}

/* Plain text is skipped a word at a time: every byte that needs care must
 * be found wherever it falls in a word, and next to any other.  Strings of
 * tokens, each with its known escape, against the writer. */
static void test_writer_words(void) {
  static const struct {
    const char *in, *out;
  } tok[] = {
    { "a", "a" },
    { "Z", "Z" },
    { " ", " " },
    { "~", "~" },
    { "\"", "\\\"" },
    { "\\", "\\\\" },
    { "\n", "\\n" },
    { "\x01", "\\u0001" },
    { "\x1f", "\\u001f" },
    { "\x7f", "\x7f" },
    { "!", "!" },
    { "#", "#" },
    { "[", "[" },
    { "]", "]" },
    { "\xC3\xA9", "\xC3\xA9" },
    { "\xFF", R },
    { "\xF0\x9F\x98\x80", "\xF0\x9F\x98\x80" },
  };
  enum { NTOK = sizeof tok / sizeof tok[0] };
  unsigned seed = 12345;
  char in[256], want[1024];
  for (int round = 0; round < 20000; round++) {
    size_t il = 0, wl = 0;
    int count = (int)(rand_r(&seed) % 40);
    /* Mostly plain letters, so that whole plain words come up too. */
    for (int k = 0; k < count; k++) {
      int t = rand_r(&seed) % 3 ? (int)(rand_r(&seed) % 4) : (int)(rand_r(&seed) % NTOK);
      size_t a = strlen(tok[t].in), b = strlen(tok[t].out);
      memcpy(in + il, tok[t].in, a);
      memcpy(want + wl, tok[t].out, b);
      il += a;
      wl += b;
    }
    egress__jsonw_t w;
    egress__jsonw_heap(&w, 1);
    egress__jsonw_escape(&w, in, il);
    size_t len = 0;
    char *got = egress__jsonw_finish(&w, &len);
    CU_ASSERT_PTR_NOT_NULL_FATAL(got);
    CU_ASSERT_EQUAL_FATAL(len, wl);
    CU_ASSERT_FATAL(memcmp(got, want, wl) == 0);
    egress__free(got);
  }
}

/* Decimal digits two at a time, against snprintf, with zero padding. */
static void test_put_uint(void) {
  unsigned long long values[] = { 0,
                                  1,
                                  9,
                                  10,
                                  11,
                                  99,
                                  100,
                                  101,
                                  999,
                                  1000,
                                  4095,
                                  65535,
                                  99999,
                                  100000,
                                  1234567,
                                  4294967295ULL,
                                  4294967296ULL,
                                  999999999999ULL,
                                  UINT64_MAX - 1,
                                  UINT64_MAX };
  for (size_t i = 0; i < sizeof values / sizeof values[0]; i++) {
    for (int width = 0; width <= 24; width++) {
      char got[32], want[32];
      char *e = egress__put_uint(got, values[i], width);
      *e = '\0';
      snprintf(want, sizeof want, "%0*llu", width, values[i]);
      CU_ASSERT_STRING_EQUAL(got, want);
    }
  }
  unsigned seed = 7;
  for (int k = 0; k < 100000; k++) {
    unsigned long long v = ((unsigned long long)rand_r(&seed) << 33) ^
                           ((unsigned long long)rand_r(&seed) << 11) ^ (unsigned long long)rand_r(&seed);
    v >>= rand_r(&seed) % 64;
    char got[32], want[32];
    *egress__put_uint(got, v, 1) = '\0';
    snprintf(want, sizeof want, "%llu", v);
    CU_ASSERT_STRING_EQUAL_FATAL(got, want);
  }
}

/* A fixed buffer holds a text exactly when it has one byte more than the
 * text (for the NUL), and is never written past its capacity. */
static void test_writer_capacity(void) {
  const char *in = "x\"\x01\xE2\x82\xAC\xFFyz"; /* escapes, a 3-byte character, a repair */
  const char *want = "[\"x\\\"\\u0001\xE2\x82\xAC" R "yz\",-12]";
  size_t want_len = strlen(want);
  char buf[64];
  for (size_t cap = 0; cap <= want_len + 2; cap++) {
    memset(buf, '#', sizeof buf);
    egress__jsonw_t w;
    egress__jsonw_fixed(&w, buf, cap);
    EGRESS__JSONW_LIT(&w, "[");
    egress__jsonw_string(&w, in);
    EGRESS__JSONW_LIT(&w, ",");
    egress__jsonw_int(&w, -12);
    EGRESS__JSONW_LIT(&w, "]");
    size_t len = 99;
    char *got = egress__jsonw_finish(&w, &len);
    if (cap > want_len) {
      CU_ASSERT_PTR_EQUAL(got, buf);
      CU_ASSERT_EQUAL(len, want_len);
      if (got) CU_ASSERT_STRING_EQUAL(got, want);
    } else {
      CU_ASSERT_PTR_NULL(got);
      CU_ASSERT_EQUAL(len, 99);
    }
    for (size_t k = cap; k < sizeof buf; k++) CU_ASSERT_EQUAL_FATAL(buf[k], '#');
    /* Spent: nothing more goes in. */
    EGRESS__JSONW_LIT(&w, "more");
    CU_ASSERT_PTR_NULL(egress__jsonw_finish(&w, NULL));
  }
  /* A heap writer grows from one byte to a megabyte of escapes. */
  char *big = malloc(1 << 18);
  CU_ASSERT_FATAL(big != NULL);
  memset(big, '\x02', (1 << 18) - 1);
  big[(1 << 18) - 1] = '\0';
  egress__jsonw_t w;
  egress__jsonw_heap(&w, 1);
  egress__jsonw_string(&w, big);
  size_t len = 0;
  char *got = egress__jsonw_finish(&w, &len);
  CU_ASSERT_PTR_NOT_NULL_FATAL(got);
  CU_ASSERT_EQUAL(len, 6 * ((1u << 18) - 1) + 2);
  CU_ASSERT_EQUAL(memcmp(got + len - 7, "\\u0002\"", 7), 0);
  egress__free(got);
  free(big);
}

/* Every string of one and two bytes, and of three and four bytes over the
 * values where UTF-8's rules change: the writer's text parses back to the
 * reference repair of the input. */
static void test_writer_all_short_strings(void) {
  static const unsigned char edge[] = { 0x00, 0x01, 0x22, 0x41, 0x5C, 0x7F, 0x80, 0x8F,
                                        0x90, 0x9F, 0xA0, 0xBF, 0xC0, 0xC1, 0xC2, 0xDF,
                                        0xE0, 0xED, 0xEF, 0xF0, 0xF4, 0xF5, 0xFF };
  enum { NE = sizeof edge };
  long bad = 0, n = 0;
  unsigned char s[5];
  for (long k = 0; k < 256 + 65536 + NE * NE * NE + NE * NE * NE * NE; k++) {
    size_t len;
    if (k < 256) {
      s[0] = (unsigned char)k;
      len = 1;
    } else if (k < 256 + 65536) {
      s[0] = (unsigned char)((k - 256) >> 8);
      s[1] = (unsigned char)(k - 256);
      len = 2;
    } else if (k < 256 + 65536 + NE * NE * NE) {
      long v = k - 256 - 65536;
      for (int i = 0; i < 3; i++, v /= NE) s[i] = edge[v % NE];
      len = 3;
    } else {
      long v = k - 256 - 65536 - NE * NE * NE;
      for (int i = 0; i < 4; i++, v /= NE) s[i] = edge[v % NE];
      len = 4;
    }
    if (memchr(s, 0, len)) continue; /* strings here are NUL-terminated */
    s[len] = '\0';
    egress__jsonw_t w;
    char buf[64];
    egress__jsonw_fixed(&w, buf, sizeof buf);
    egress__jsonw_string(&w, (const char *)s);
    char *text = egress__jsonw_finish(&w, NULL);
    cJSON *got = text ? cJSON_Parse(text) : NULL;
    char *want = ref_repair((const char *)s, len);
    if (!text || !json_line_ok(text) || !cJSON_IsString(got) || strcmp(got->valuestring, want)) {
      if (bad++ < 5)
        fprintf(stderr, "string %02x %02x %02x %02x (%zu bytes) differs\n", s[0], s[1], s[2], s[3], len);
    }
    free(want);
    cJSON_Delete(got);
    n++;
  }
  CU_ASSERT_EQUAL(bad, 0);
  CU_ASSERT_TRUE(n > 300000);
}

/* ------------------------------------------------------------------------ */
/* Hostile strings in every field                                            */
/* ------------------------------------------------------------------------ */

/* The hostile strings: each control character, each kind of ill-formed
 * UTF-8 (lone continuation bytes, bytes that never lead, truncated
 * sequences at the end and before ASCII, overlong forms, UTF-16 surrogates,
 * code points above U+10FFFF), quotes and backslashes, escapes written as
 * text, U+2028/2029 and 4-byte characters. */
static size_t hostile_strings(char out[][16], size_t max) {
  static const char *const fixed[] = {
    "\"",
    "\\",
    "\\\"",
    "\"\\",
    "\\u0000",
    "\\n",
    "</script>",
    "\xE2\x80\xA8",
    "\xE2\x80\xA9",
    "\xF0\x9F\x98\x80",
    "\xF4\x8F\xBF\xBF",
    "\xF0\x90\x80\x80",
    "\xEF\xBF\xBD",
    "\xEF\xBB\xBF",
    "\xC0\x80",
    "\xC0\xAF",
    "\xC1\xBF",
    "\xE0\x80\xAF",
    "\xE0\x9F\xBF",
    "\xF0\x80\x80\xAF",
    "\xF0\x8F\xBF\xBF",
    "\xED\xA0\x80",
    "\xED\xAF\xBF",
    "\xED\xB0\x80",
    "\xED\xBF\xBF",
    "\xED\xA0\xBD\xED\xB8\x80",
    "\xF4\x90\x80\x80",
    "\xF7\xBF\xBF\xBF",
    "\xF8\x88\x80\x80\x80",
    "\xFC\x84\x80\x80\x80\x80",
    "\xFE",
    "\xFF",
    "\xC2",
    "\xE2\x82",
    "\xF0\x9F\x98",
    "\xC2z",
    "\xE2\x82z",
    "\xF0\x9F\x98z",
    "\x80",
    "\xBF",
    "\x80\x80\x80\x80",
    "\xE2\x82\xAC\x80",
  };
  size_t n = 0;
  for (int c = 1; c < 0x20 && n < max; c++) snprintf(out[n++], 16, "%c", c);
  snprintf(out[n++], 16, "\x7F");
  for (size_t i = 0; i < sizeof fixed / sizeof fixed[0] && n < max; i++)
    snprintf(out[n++], 16, "%s", fixed[i]);
  return n;
}

/* @p n bytes (no NUL) of @p piece repeated, cut anywhere. */
static char *repeat(const char *piece, size_t n) {
  char *s = malloc(n + 1);
  CU_ASSERT_FATAL(s != NULL);
  size_t pl = strlen(piece);
  for (size_t i = 0; i < n; i++) s[i] = piece[i % pl];
  s[n] = '\0';
  return s;
}

static void replace(const char **slot, char *v) {
  free_text(*slot);
  *slot = v;
}

static void replace_url(char **slot, char *v) {
  egress__free(*slot);
  *slot = v;
}

static void test_hostile_fields(void) {
  static char strings[128][16];
  size_t ns = hostile_strings(strings, 128);
  CU_ASSERT_TRUE(ns > 70);
  long compared = atomic_load(&ref_compared);
  for (size_t i = 0; i < ns; i++) {
    char text[64];
    snprintf(text, sizeof text, "a%.15sb%.15s", strings[i], strings[i]);
    /* Alone, and framed by ASCII, in every string field at once. */
    for (int framed = 0; framed < 2; framed++) {
      const char *s = framed ? text : strings[i];
      egress_decision_t *d = case_allowed();
      for (int f = 0; f < EGRESS__FIELD_COUNT; f++) replace(&d->t.field[f], egress__strdup(s));
      replace(&d->t.rule_text, egress__strdup(s));
      replace(&d->t.message, egress__strdup(s));
      replace(&d->t.curl_resolve, egress__strdup(s));
      replace_url(&d->t.url, egress__strdup(s));
      /* s is at most 2 * 15 + 2 bytes: it fits an address text. */
      memcpy(d->v.addrs[0].text, s, strlen(s) + 1);
      d->v.special_version = s;
      egress__free(event_checked(d, s));
      egress__free(decision_checked(d));
      /* As an invalid destination too, host:port and URL. */
      d->v.has_host = false;
      replace(&d->t.destination, egress__strdup(s));
      egress__free(event_checked(d, NULL));
      egress__free(decision_checked(d));
      d->v.port = 0;
      replace_url(&d->t.url, egress__strdup(s));
      egress__free(event_checked(d, NULL));
      egress__free(decision_checked(d));
      free_decision(d);
    }
  }
  /* The longest each field can be: context fields of 1024 bytes (the most
   * egress_request_set takes), destinations and URLs at and just past the
   * lengths where they are cut, each ending inside a multi-byte character
   * or not, and a rule text and a source longer than a print buffer. */
  static const char *const pieces[] = { "x", "\xE2\x82\xAC", "\xF0\x9F\x98\x80", "\"\\", "\x01" };
  static const size_t dest_lens[] = { 252, 253, 254, 255, 256, 1024 };
  static const size_t url_lens[] = { 4094, 4095, 4096, 4097, 4098, 9000 };
  for (size_t p = 0; p < sizeof pieces / sizeof pieces[0]; p++) {
    egress_decision_t *d = case_allowed();
    for (int f = 0; f < EGRESS__FIELD_COUNT; f++) replace(&d->t.field[f], repeat(pieces[p], 1024));
    replace(&d->t.rule_text, repeat(pieces[p], 9000));
    char *source = repeat(pieces[p], 300);
    egress__free(event_checked(d, source));
    egress__free(decision_checked(d));
    d->v.has_host = false;
    for (size_t k = 0; k < sizeof dest_lens / sizeof dest_lens[0]; k++) {
      replace(&d->t.destination, repeat(pieces[p], dest_lens[k]));
      egress__free(event_checked(d, source));
      egress__free(decision_checked(d));
    }
    d->v.port = 0;
    for (size_t k = 0; k < sizeof url_lens / sizeof url_lens[0]; k++) {
      replace_url(&d->t.url, repeat(pieces[p], url_lens[k]));
      replace(&d->t.destination, egress__strdup(d->t.url)); /* an unparsable URL */
      egress__free(event_checked(d, source));
      egress__free(decision_checked(d));
    }
    free(source);
    free_decision(d);
  }
  CU_ASSERT_TRUE(atomic_load(&ref_compared) - compared > 4 * 2 * 70);
}

/* Many threads, each with its own print buffer, writing hostile events at
 * once: every text equal to its reference. */
typedef struct event_thread {
  int id;
  long bad, done;
} event_thread_t;

static void *event_thread(void *arg) {
  event_thread_t *t = arg;
  char dest[96], other[96];
  unsigned seed = 2654435761u * (unsigned)(t->id + 1);
  for (int iter = 0; iter < 300; iter++) {
    size_t o = 0;
    for (int k = 0; k < 6; k++) {
      seed = seed * 1103515245u + 12345u;
      const char *piece = (seed >> 8) % 2    ? "ab\xE2\x82\xAC"
                          : (seed >> 12) % 2 ? "\"\x01\xFF"
                                             : "\xED\xA0\x80z";
      size_t pl = strlen(piece);
      memcpy(dest + o, piece, pl);
      o += pl;
    }
    dest[o] = '\0';
    snprintf(other, sizeof other, "t%d-%d\x02%s", t->id, iter, dest + (seed >> 20) % 4);
    egress_decision_t *d = egress__calloc(1, sizeof *d);
    if (!d) abort();
    d->t.destination = egress__strdup(dest);
    d->v.port = iter;
    d->v.reason = EGRESS_REASON_INVALID_HOST;
    d->v.outcome = EGRESS_OUTCOME_DENIED;
    d->v.dns_ms = iter / 7.0;
    d->t.field[EGRESS_FIELD_RUN_ID] = egress__strdup(other);
    d->t.url = iter % 3 ? NULL : egress__strdup(other);
    if (egress__event_stamp(d) != EGRESS_OK) abort();
    char *built = egress__event_build(d, other);
    size_t len = 0;
    const char *printed = egress__event_print(d, other, &len);
    char *dj = egress__decision_json(d);
    if (!built || !printed || !dj || strcmp(built, printed) ||
        !matches_ref(built, ref_event(d, other), "threaded event") ||
        !matches_ref(dj, ref_decision(d), "threaded decision"))
      t->bad++;
    t->done++;
    egress__free(built);
    egress__free(dj);
    free_text(d->t.destination);
    egress__free(d->t.url);
    free_text(d->t.field[EGRESS_FIELD_RUN_ID]);
    egress__free(d);
  }
  return NULL;
}

static void test_events_threads(void) {
  enum { NT = 8 };
  pthread_t th[NT];
  event_thread_t st[NT];
  for (int i = 0; i < NT; i++) {
    st[i] = (event_thread_t){ .id = i };
    CU_ASSERT_EQUAL_FATAL(pthread_create(&th[i], NULL, event_thread, &st[i]), 0);
  }
  for (int i = 0; i < NT; i++) {
    pthread_join(th[i], NULL);
    CU_ASSERT_EQUAL(st[i].bad, 0);
    CU_ASSERT_EQUAL(st[i].done, 300);
  }
}

/* ------------------------------------------------------------------------ */
/* Sinks                                                                     */
/* ------------------------------------------------------------------------ */

static char tmpdir[64];

static int sinks_init(void) {
  snprintf(tmpdir, sizeof tmpdir, "/tmp/egress-events-XXXXXX");
  return mkdtemp(tmpdir) ? 0 : -1;
}

static int sinks_cleanup(void) {
  char cmd[128];
  snprintf(cmd, sizeof cmd, "rm -rf '%s'", tmpdir);
  return system(cmd) == 0 ? 0 : -1;
}

static struct egress_options base_opts(void) {
  struct egress_options o;
  memset(&o, 0, sizeof o);
  o.event_fd = -1;
  return o;
}

static egress__sink_t *make_sink(const struct egress_options *o) {
  egress__sink_t *s = NULL;
  char err[EGRESS_ERRBUF_SIZE] = "";
  egress_status_t st = egress__sink_new(o, &s, err, sizeof err);
  if (st != EGRESS_OK) fprintf(stderr, "sink_new: %s\n", err);
  CU_ASSERT_EQUAL_FATAL(st, EGRESS_OK);
  CU_ASSERT_PTR_NOT_NULL_FATAL(s);
  return s;
}

static void test_sink_none(void) {
  egress__sink_t *s = make_sink(NULL);
  CU_ASSERT_FALSE(egress__sink_active(s));
  CU_ASSERT_EQUAL(egress__sink_deliver(s, "{}", 2, NULL), 0);
  egress__sink_free(s);
  struct egress_options o = base_opts();
  s = make_sink(&o);
  CU_ASSERT_FALSE(egress__sink_active(s));
  CU_ASSERT_EQUAL(egress__sink_deliver(s, "{}", 2, NULL), 0);
  egress__sink_free(s);
  CU_ASSERT_FALSE(egress__sink_active(NULL));
  CU_ASSERT_EQUAL(egress__sink_deliver(NULL, "{}", 2, NULL), 0);
  egress__sink_free(NULL);
  CU_ASSERT_EQUAL(egress__sink_new(NULL, NULL, NULL, 0), EGRESS_EINVAL);
}

static void test_sink_fd_pipe(void) {
  int p[2];
  CU_ASSERT_FATAL(pipe(p) == 0);
  struct egress_options o = base_opts();
  o.event_fd = p[1];
  egress__sink_t *s = make_sink(&o);
  CU_ASSERT_TRUE(egress__sink_active(s));
  egress_decision_t *d = case_allowed();
  char *ev = event_checked(d, NULL);
  CU_ASSERT_EQUAL(egress__sink_deliver(s, ev, strlen(ev), d), 0);
  CU_ASSERT_EQUAL(egress__sink_deliver(s, "{\"a\":1}xxxx", 7, d), 0); /* len is honoured */
  egress__sink_free(s);
  /* The sink does not own a descriptor it was given. */
  CU_ASSERT_TRUE(fcntl(p[1], F_GETFD) >= 0);
  close(p[1]);
  char buf[16384];
  size_t got = 0;
  ssize_t n;
  while ((n = read(p[0], buf + got, sizeof buf - 1 - got)) > 0) got += (size_t)n;
  buf[got] = '\0';
  close(p[0]);
  char expect[16384];
  snprintf(expect, sizeof expect, "%s\n{\"a\":1}\n", ev);
  CU_ASSERT_STRING_EQUAL(buf, expect);
  egress__free(ev);
  free_decision(d);
}

static void test_sink_path(void) {
  char path[128];
  snprintf(path, sizeof path, "%s/events.jsonl", tmpdir);
  FILE *f = fopen(path, "w");
  CU_ASSERT_PTR_NOT_NULL_FATAL(f);
  fputs("old\n", f);
  fclose(f);
  struct egress_options o = base_opts();
  o.event_path = path;
  egress__sink_t *s = make_sink(&o);
  CU_ASSERT_TRUE(egress__sink_active(s));
  CU_ASSERT_EQUAL(egress__sink_deliver(s, "{\"n\":1}", 7, NULL), 0);
  CU_ASSERT_EQUAL(egress__sink_deliver(s, "{\"n\":2}", 7, NULL), 0);
  egress__sink_free(s);
  char *text = slurp(path, NULL);
  CU_ASSERT_STRING_EQUAL(text, "old\n{\"n\":1}\n{\"n\":2}\n");
  free(text);

  /* A new file is created with no more than 0640. */
  snprintf(path, sizeof path, "%s/new.jsonl", tmpdir);
  s = make_sink(&o);
  CU_ASSERT_EQUAL(egress__sink_deliver(s, "{}", 2, NULL), 0);
  egress__sink_free(s);
  struct stat st;
  CU_ASSERT_EQUAL_FATAL(stat(path, &st), 0);
  CU_ASSERT_EQUAL(st.st_mode & 0137, 0);
  text = slurp(path, NULL);
  CU_ASSERT_STRING_EQUAL(text, "{}\n");
  free(text);
}

static void test_sink_bad_path(void) {
  char err[EGRESS_ERRBUF_SIZE];
  egress__sink_t *s = (egress__sink_t *)&s;
  struct egress_options o = base_opts();
  o.event_path = "/nonexistent-egress-dir/sub/events.jsonl";
  CU_ASSERT_EQUAL(egress__sink_new(&o, &s, err, sizeof err), EGRESS_EIO);
  CU_ASSERT_PTR_NULL(s);
  CU_ASSERT_PTR_NOT_NULL(strstr(err, o.event_path));
  CU_ASSERT_PTR_NOT_NULL(strstr(err, strerror(ENOENT)));

  /* A directory. */
  o.event_path = tmpdir;
  CU_ASSERT_EQUAL(egress__sink_new(&o, &s, err, sizeof err), EGRESS_EIO);
  CU_ASSERT_PTR_NULL(s);

  /* A FIFO nobody reads fails at once instead of hanging. */
  char fifo[128];
  snprintf(fifo, sizeof fifo, "%s/fifo", tmpdir);
  CU_ASSERT_EQUAL_FATAL(mkfifo(fifo, 0600), 0);
  o.event_path = fifo;
  CU_ASSERT_EQUAL(egress__sink_new(&o, &s, err, sizeof err), EGRESS_EIO);
  CU_ASSERT_PTR_NULL(s);

  /* An unwritable file (root may write anyway, so only checked otherwise). */
  if (geteuid() != 0) {
    char ro[128];
    snprintf(ro, sizeof ro, "%s/readonly.jsonl", tmpdir);
    int fd = open(ro, O_CREAT | O_WRONLY, 0400);
    CU_ASSERT_FATAL(fd >= 0);
    close(fd);
    o.event_path = ro;
    CU_ASSERT_EQUAL(egress__sink_new(&o, &s, err, sizeof err), EGRESS_EIO);
    CU_ASSERT_PTR_NOT_NULL(strstr(err, ro));
  }

  /* A bad descriptor is reported at construction. */
  int p[2];
  CU_ASSERT_FATAL(pipe(p) == 0);
  close(p[0]);
  close(p[1]);
  o = base_opts();
  o.event_fd = p[1];
  CU_ASSERT_EQUAL(egress__sink_new(&o, &s, err, sizeof err), EGRESS_EIO);
  CU_ASSERT_PTR_NULL(s);
}

typedef struct thread_arg {
  egress__sink_t *sink;
  int id;
  int failures;
} thread_arg_t;

enum { N_THREADS = 8, N_LINES = 2000 };

static void *writer(void *p) {
  thread_arg_t *a = p;
  static char pad[6001];
  memset(pad, 'x', sizeof pad - 1);
  char line[7000];
  for (int i = 0; i < N_LINES; i++) {
    /* Some lines longer than PIPE_BUF, where a split would show. */
    int padlen = i % 97 == 0 ? 6000 : (int)(i % 50);
    int n = snprintf(line, sizeof line, "{\"t\":%d,\"i\":%d,\"pad\":\"%.*s\"}", a->id, i, padlen, pad);
    if (egress__sink_deliver(a->sink, line, (size_t)n, NULL) != 0) a->failures++;
  }
  return NULL;
}

static void test_sink_threads(void) {
  char path[128];
  snprintf(path, sizeof path, "%s/threads.jsonl", tmpdir);
  struct egress_options o = base_opts();
  o.event_path = path;
  /* Half the threads share one sink, the others each open their own, as
   * separate processes appending to one file would. */
  egress__sink_t *shared = make_sink(&o);
  egress__sink_t *own[N_THREADS] = { 0 };
  pthread_t th[N_THREADS];
  thread_arg_t args[N_THREADS];
  for (int t = 0; t < N_THREADS; t++) {
    if (t >= N_THREADS / 2) own[t] = make_sink(&o);
    args[t] = (thread_arg_t){ t < N_THREADS / 2 ? shared : own[t], t, 0 };
    CU_ASSERT_EQUAL_FATAL(pthread_create(&th[t], NULL, writer, &args[t]), 0);
  }
  for (int t = 0; t < N_THREADS; t++) {
    pthread_join(th[t], NULL);
    CU_ASSERT_EQUAL(args[t].failures, 0);
    egress__sink_free(own[t]);
  }
  egress__sink_free(shared);

  size_t len;
  char *text = slurp(path, &len);
  CU_ASSERT_PTR_NOT_NULL_FATAL(text);
  static unsigned char seen[N_THREADS][N_LINES];
  memset(seen, 0, sizeof seen);
  int lines = 0, bad = 0;
  char *save = NULL;
  CU_ASSERT_EQUAL(text[len - 1], '\n');
  for (char *l = strtok_r(text, "\n", &save); l; l = strtok_r(NULL, "\n", &save)) {
    lines++;
    cJSON *j = cJSON_Parse(l);
    cJSON *t = j ? cJSON_GetObjectItem(j, "t") : NULL, *i = j ? cJSON_GetObjectItem(j, "i") : NULL;
    if (!cJSON_IsNumber(t) || !cJSON_IsNumber(i) || t->valueint < 0 || t->valueint >= N_THREADS ||
        i->valueint < 0 || i->valueint >= N_LINES)
      bad++;
    else
      seen[t->valueint][i->valueint]++;
    cJSON_Delete(j);
  }
  CU_ASSERT_EQUAL(bad, 0);
  CU_ASSERT_EQUAL(lines, N_THREADS * N_LINES);
  int wrong = 0;
  for (int t = 0; t < N_THREADS; t++)
    for (int i = 0; i < N_LINES; i++) wrong += seen[t][i] != 1;
  CU_ASSERT_EQUAL(wrong, 0);
  free(text);
}

static bool sigpipe_pending(void) {
  sigset_t s;
  sigemptyset(&s);
  sigpending(&s);
  return sigismember(&s, SIGPIPE) == 1;
}

static bool sigpipe_blocked(void) {
  sigset_t s;
  pthread_sigmask(SIG_SETMASK, NULL, &s);
  return sigismember(&s, SIGPIPE) == 1;
}

/* Runs in a child so that a regression (death by SIGPIPE) fails the test
 * instead of killing the whole suite. */
static void epipe_child(void) {
  signal(SIGPIPE, SIG_DFL);
  int p[2];
  if (pipe(p) != 0) _exit(10);
  close(p[0]);
  struct egress_options o = base_opts();
  o.event_fd = p[1];
  egress__sink_t *s = NULL;
  if (egress__sink_new(&o, &s, NULL, 0) != EGRESS_OK) _exit(11);
  /* 1. SIGPIPE unblocked: delivery fails, no signal kills us, mask restored. */
  if (egress__sink_deliver(s, "{}", 2, NULL) != -1) _exit(12);
  if (sigpipe_blocked() || sigpipe_pending()) _exit(13);
  /* 2. The caller blocks SIGPIPE itself: ours is consumed, mask kept. */
  sigset_t pipe_set, old;
  sigemptyset(&pipe_set);
  sigaddset(&pipe_set, SIGPIPE);
  pthread_sigmask(SIG_BLOCK, &pipe_set, &old);
  if (egress__sink_deliver(s, "{}", 2, NULL) != -1) _exit(14);
  if (!sigpipe_blocked() || sigpipe_pending()) _exit(15);
  /* 3. A SIGPIPE already pending is the application's: left pending. */
  raise(SIGPIPE);
  if (!sigpipe_pending()) _exit(16);
  if (egress__sink_deliver(s, "{}", 2, NULL) != -1) _exit(17);
  if (!sigpipe_pending()) _exit(18);
  struct timespec zero = { 0, 0 };
  if (sigtimedwait(&pipe_set, NULL, &zero) != SIGPIPE) _exit(19);
  pthread_sigmask(SIG_SETMASK, &old, NULL);
  egress__sink_free(s);
  close(p[1]);

  /* 4. A socket whose peer is gone: send(MSG_NOSIGNAL). */
  int sp[2];
  if (socketpair(AF_UNIX, SOCK_STREAM, 0, sp) != 0) _exit(20);
  close(sp[1]);
  o.event_fd = sp[0];
  if (egress__sink_new(&o, &s, NULL, 0) != EGRESS_OK) _exit(21);
  if (egress__sink_deliver(s, "{}", 2, NULL) != -1) _exit(22);
  if (egress__sink_deliver(s, "{}", 2, NULL) != -1) _exit(23);
  egress__sink_free(s);
  close(sp[0]);
  _exit(0);
}

static void test_sink_epipe(void) {
  pid_t pid = fork();
  CU_ASSERT_FATAL(pid >= 0);
  if (pid == 0) epipe_child();
  int status = 0;
  CU_ASSERT_EQUAL_FATAL(waitpid(pid, &status, 0), pid);
  if (!WIFEXITED(status) || WEXITSTATUS(status) != 0)
    fprintf(stderr, "epipe child: %s %d\n", WIFSIGNALED(status) ? "signal" : "exit",
            WIFSIGNALED(status) ? WTERMSIG(status) : WEXITSTATUS(status));
  CU_ASSERT_TRUE(WIFEXITED(status));
  CU_ASSERT_EQUAL(WIFEXITED(status) ? WEXITSTATUS(status) : -1, 0);
}

static void test_sink_enospc(void) {
  int fd = open("/dev/full", O_WRONLY | O_CLOEXEC);
  CU_ASSERT_FATAL(fd >= 0);
  struct egress_options o = base_opts();
  o.event_fd = fd;
  egress__sink_t *s = make_sink(&o);
  CU_ASSERT_EQUAL(egress__sink_deliver(s, "{}", 2, NULL), -1);
  egress__sink_free(s);
  close(fd);

  o = base_opts();
  o.event_path = "/dev/full";
  s = make_sink(&o);
  CU_ASSERT_EQUAL(egress__sink_deliver(s, "{}", 2, NULL), -1);
  egress__sink_free(s);
}

static void test_sink_ebadf_eagain(void) {
  int p[2];
  CU_ASSERT_FATAL(pipe(p) == 0);
  struct egress_options o = base_opts();
  o.event_fd = p[1];
  egress__sink_t *s = make_sink(&o);
  close(p[1]);
  CU_ASSERT_EQUAL(egress__sink_deliver(s, "{}", 2, NULL), -1); /* EBADF */
  egress__sink_free(s);
  close(p[0]);

  /* A full non-blocking pipe fails instead of blocking; a line that only
   * partly fits is a failure too (never completed by a second write). */
  CU_ASSERT_FATAL(pipe(p) == 0);
  CU_ASSERT_FATAL(fcntl(p[1], F_SETFL, O_NONBLOCK) == 0);
  o.event_fd = p[1];
  s = make_sink(&o);
  char chunk[4096];
  memset(chunk, 'x', sizeof chunk);
  size_t filled = 0;
  while (write(p[1], chunk, sizeof chunk) > 0) filled += sizeof chunk;
  CU_ASSERT_TRUE(filled > 0);
  CU_ASSERT_EQUAL(egress__sink_deliver(s, "{}", 2, NULL), -1); /* EAGAIN */
  /* Free 4 KiB and offer 8 KiB: the kernel takes part of it at most. */
  CU_ASSERT_EQUAL(read(p[0], chunk, sizeof chunk), (ssize_t)sizeof chunk);
  static char big[8192];
  memset(big, 'y', sizeof big);
  CU_ASSERT_EQUAL(egress__sink_deliver(s, big, sizeof big, NULL), -1);
  egress__sink_free(s);
  close(p[0]);
  close(p[1]);
}

typedef struct cb_state {
  int calls;
  int ret;
  const char *json;
  size_t len;
  const egress_decision_t *d;
} cb_state_t;

static int test_cb(const char *json, size_t len, const egress_decision_t *d, void *user) {
  cb_state_t *st = user;
  st->calls++;
  st->json = json;
  st->len = len;
  st->d = d;
  return st->ret;
}

static void test_sink_callback(void) {
  cb_state_t st = { 0, 0, NULL, 0, NULL };
  struct egress_options o = base_opts();
  o.event_cb = test_cb;
  o.event_cb_data = &st;
  o.event_fd = 1; /* the callback wins over other settings */
  egress__sink_t *s = make_sink(&o);
  CU_ASSERT_TRUE(egress__sink_active(s));
  egress_decision_t *d = case_allowed();
  const char *json = "{\"x\":1}";
  CU_ASSERT_EQUAL(egress__sink_deliver(s, json, 7, d), 0);
  CU_ASSERT_EQUAL(st.calls, 1);
  CU_ASSERT_PTR_EQUAL(st.json, json);
  CU_ASSERT_EQUAL(st.len, 7);
  CU_ASSERT_PTR_EQUAL(st.d, d);
  int rets[] = { 1, -1, 42, 0x7fffffff };
  for (size_t i = 0; i < 4; i++) {
    st.ret = rets[i];
    CU_ASSERT_EQUAL(egress__sink_deliver(s, json, 7, d), -1);
  }
  CU_ASSERT_EQUAL(st.calls, 5);
  st.ret = 0;
  CU_ASSERT_EQUAL(egress__sink_deliver(s, NULL, 0, d), -1); /* no event: failure */
  egress__sink_free(s);
  free_decision(d);
}

static void test_sink_alloc_failures(void) {
  char path[128];
  snprintf(path, sizeof path, "%s/alloc.jsonl", tmpdir);
  struct egress_options o = base_opts();
  o.event_path = path;
  int failures = 0;
  for (long n = 1; n < 20; n++) {
    egress__sink_t *s = NULL;
    egress__alloc_fail_at(n);
    egress_status_t st = egress__sink_new(&o, &s, NULL, 0);
    long used = egress__alloc_count();
    egress__alloc_fail_at(0);
    if (st != EGRESS_OK) {
      CU_ASSERT_EQUAL(st, EGRESS_ENOMEM);
      CU_ASSERT_PTR_NULL(s);
      failures++;
    } else {
      /* Delivery allocates nothing (one writev of line and newline), so
       * an exhausted allocator cannot lose an event. */
      egress__alloc_fail_at(1);
      CU_ASSERT_EQUAL(egress__sink_deliver(s, "{}", 2, NULL), 0);
      CU_ASSERT_EQUAL(egress__alloc_count(), 0);
      egress__alloc_fail_at(0);
      CU_ASSERT_EQUAL(egress__sink_deliver(s, "{}", 2, NULL), 0);
      egress__sink_free(s);
    }
    if (used < n) break;
  }
  CU_ASSERT_TRUE(failures >= 1);
  char *text = slurp(path, NULL);
  CU_ASSERT_PTR_NOT_NULL_FATAL(text);
  /* Failed deliveries wrote nothing, not even part of a line. */
  for (const char *p = text; *p; p += 3) CU_ASSERT_EQUAL(strncmp(p, "{}\n", 3), 0);
  free(text);
}

/* ------------------------------------------------------------------------ */
/* Events of real checks                                                     */
/* ------------------------------------------------------------------------ */

typedef struct checked_cb {
  long events, bad;
} checked_cb_t;

/* A callback sink: each event checked against the reference of the
 * decision it came with. */
static int compare_cb(const char *json, size_t len, const egress_decision_t *d, void *user) {
  checked_cb_t *st = user;
  st->events++;
  if (strlen(json) != len || !matches_ref(json, ref_event(d, "/enforcement/test-events"), "checker event"))
    st->bad++;
  return 0;
}

/* Hosts and URLs that need no DNS: IP literals allowed and refused, and
 * invalid hosts of every hostile kind. */
static const char *const check_hosts[] = {
  "203.0.113.7",      "[2001:db8::1]",      "2001:db8::1",     "10.0.0.1",     "169.254.169.254",
  "198.51.100.1",     "::ffff:203.0.113.7", "evil\x01host",    "a\"b\\c",      "\xC0\xAF.example",
  "\xED\xA0\x80.com", "\xF0\x9F\x98\x80",   "host with space", "\xE2\x80\xA8", "ab\xFF",
};
static const char *const check_urls[] = {
  "https://203.0.113.7/v1/x?q=\"1\"",
  "http://[2001:db8::1]:8080/a",
  "https://10.0.0.1/",
  "https://203.0.113.7/\xC0\xAF",
  "not a url \x01\xFF",
  "https://\xE2\x80\xA8/",
  "ftp://203.0.113.7/",
};

static egress_checker_t *events_checker(egress_options_t *o) {
  static const char *allow[] = { "203.0.113.0/24", "2001:db8::/32" };
  static const char *deny[] = { "198.51.100.0/24" };
  egress_policy_t *p = NULL;
  egress_checker_t *c = NULL;
  char err[EGRESS_ERRBUF_SIZE];
  CU_ASSERT_FATAL(egress_policy_from_entries(allow, 2, deny, 1, &p, err, sizeof err) == EGRESS_OK);
  CU_ASSERT_FATAL(egress_options_set_event_source(o, "/enforcement/test-events") == EGRESS_OK);
  CU_ASSERT_FATAL(egress_checker_new(p, o, &c, err, sizeof err) == EGRESS_OK);
  egress_policy_unref(p);
  return c;
}

static void test_checker_events(void) {
  checked_cb_t st = { 0, 0 };
  egress_options_t *o = NULL;
  CU_ASSERT_FATAL(egress_options_new(&o) == EGRESS_OK);
  CU_ASSERT_FATAL(egress_options_set_event_callback(o, compare_cb, &st) == EGRESS_OK);
  egress_checker_t *c = events_checker(o);
  egress_options_free(o);
  egress_request_t *req = NULL;
  CU_ASSERT_FATAL(egress_request_new(&req) == EGRESS_OK);
  CU_ASSERT_FATAL(egress_request_set(req, EGRESS_FIELD_METHOD, "PATCH") == EGRESS_OK);
  CU_ASSERT_FATAL(egress_request_set(req, EGRESS_FIELD_RUN_ID,
                                     "run \"7\" \\ \xE2\x82\xAC \xF0\x9F\x98\x80") == EGRESS_OK);
  char *long_field = repeat("\xE2\x82\xAC", 1023);
  CU_ASSERT_FATAL(egress_request_set(req, EGRESS_FIELD_AGENT_ID, long_field) == EGRESS_OK);
  free(long_field);
  egress_decision_t *into = NULL;
  CU_ASSERT_FATAL(egress_decision_new(&into) == EGRESS_OK);
  long expect = 0, allowed = 0;
  for (size_t i = 0; i < sizeof check_hosts / sizeof check_hosts[0]; i++) {
    int32_t ports[] = { 443, 0, 70000 };
    for (size_t k = 0; k < 3; k++) {
      allowed += egress_check(c, check_hosts[i], (uint16_t)ports[k]) == EGRESS_VERDICT_ALLOW;
      egress_decision_t *d = NULL;
      CU_ASSERT_EQUAL(egress_check_ex(c, check_hosts[i], ports[k], req, &d), EGRESS_OK);
      /* The decision's own event text is the one delivered. */
      const char *own = egress_decision_event_json(d);
      CU_ASSERT_PTR_NOT_NULL(own);
      if (own) CU_ASSERT_TRUE(matches_ref(own, ref_event(d, "/enforcement/test-events"), "decision event"));
      egress_decision_free(d);
      CU_ASSERT_EQUAL(egress_check_into(c, check_hosts[i], ports[k], i % 2 ? req : NULL, into), EGRESS_OK);
      expect += 3;
    }
  }
  for (size_t i = 0; i < sizeof check_urls / sizeof check_urls[0]; i++) {
    egress_decision_t *d = NULL;
    CU_ASSERT_EQUAL(egress_check_url(c, check_urls[i], req, &d), EGRESS_OK);
    egress_decision_free(d);
    expect++;
  }
  CU_ASSERT_EQUAL(st.events, expect);
  CU_ASSERT_EQUAL(st.bad, 0);
  CU_ASSERT_TRUE(allowed > 0 && allowed < expect / 3);
  egress_decision_free(into);
  egress_request_free(req);
  egress_checker_free(c);
}

/* The JSON Lines sink prints egress_check's events into the thread's
 * buffer: each line must equal the reference of the same check made with
 * egress_check_ex, once its id, time and timings are set aside. */
static void test_checker_jsonl_events(void) {
  char path[128];
  snprintf(path, sizeof path, "%s/check-events.jsonl", tmpdir);
  egress_options_t *o = NULL, *quiet_o = NULL;
  CU_ASSERT_FATAL(egress_options_new(&o) == EGRESS_OK);
  CU_ASSERT_FATAL(egress_options_set_event_path(o, path) == EGRESS_OK);
  egress_checker_t *c = events_checker(o);
  CU_ASSERT_FATAL(egress_options_new(&quiet_o) == EGRESS_OK);
  egress_checker_t *quiet = events_checker(quiet_o);
  egress_options_free(o);
  egress_options_free(quiet_o);
  size_t nh = sizeof check_hosts / sizeof check_hosts[0];
  size_t allowed = 0;
  for (size_t i = 0; i < nh; i++) allowed += egress_check(c, check_hosts[i], 443) == EGRESS_VERDICT_ALLOW;
  CU_ASSERT_TRUE(allowed > 0 && allowed < nh);
  egress_checker_free(c);

  char *text = slurp(path, NULL);
  CU_ASSERT_PTR_NOT_NULL_FATAL(text);
  char *line = text;
  size_t i = 0;
  for (; *line && i < nh; i++) {
    char *nl = strchr(line, '\n');
    CU_ASSERT_PTR_NOT_NULL_FATAL(nl);
    *nl = '\0';
    egress_decision_t *d = NULL;
    CU_ASSERT_EQUAL(egress_check_ex(quiet, check_hosts[i], 443, NULL, &d), EGRESS_OK);
    CU_ASSERT_PTR_NOT_NULL_FATAL(d);
    cJSON *got = cJSON_Parse(line);
    CU_ASSERT_PTR_NOT_NULL_FATAL(got);
    cJSON *gdata = cJSON_GetObjectItem(got, "data");
    strcpy(d->event_id, cJSON_GetObjectItem(got, "id")->valuestring);
    strcpy(d->time_rfc3339, cJSON_GetObjectItem(got, "time")->valuestring);
    d->v.dns_ms = cJSON_GetObjectItem(gdata, "dnsMs")->valuedouble;
    d->v.latency_ms = cJSON_GetObjectItem(gdata, "latencyMs")->valuedouble;
    cJSON_Delete(got);
    CU_ASSERT_TRUE(matches_ref(line, ref_event(d, "/enforcement/test-events"), "JSON Lines event"));
    egress_decision_free(d);
    line = nl + 1;
  }
  CU_ASSERT_EQUAL(i, nh);
  CU_ASSERT_EQUAL(*line, '\0');
  free(text);
  egress_checker_free(quiet);
}

/* ------------------------------------------------------------------------ */

static int count_event_cb(const char *json, size_t len, const egress_decision_t *d, void *user) {
  (void)json;
  (void)len;
  (void)d;
  (void)user;
  return 0;
}

/* egress_decision_event_id names the event the check made, and nothing
 * when it made none: a connection event refers to its attempt by it. */
static void test_event_id_accessor(void) {
  const char *allow[] = { "93.184.216.0/24" };
  egress_policy_t *p = NULL;
  egress_checker_t *c = NULL;
  CU_ASSERT_FATAL(egress_policy_from_entries(allow, 1, NULL, 0, &p, NULL, 0) == EGRESS_OK);
  CU_ASSERT_FATAL(egress_checker_new(p, NULL, &c, NULL, 0) == EGRESS_OK);
  CU_ASSERT_PTR_NULL(egress_decision_event_id(NULL));
  char previous[37] = "";
  for (int i = 0; i < 3; i++) {
    egress_decision_t *d = NULL;
    CU_ASSERT_FATAL(egress_check_ex(c, i == 1 ? "10.0.0.1" : "93.184.216.34", 443, NULL, &d) == EGRESS_OK);
    const char *id = egress_decision_event_id(d), *json = egress_decision_event_json(d);
    CU_ASSERT_PTR_NOT_NULL_FATAL(id);
    CU_ASSERT_PTR_NOT_NULL_FATAL(json);
    cJSON *ev = cJSON_Parse(json);
    const cJSON *jid = cJSON_GetObjectItemCaseSensitive(ev, "id");
    CU_ASSERT_TRUE(cJSON_IsString(jid) && !strcmp(jid->valuestring, id));
    CU_ASSERT_EQUAL(strlen(id), 36);
    CU_ASSERT_NOT_EQUAL(strcmp(id, previous), 0);
    snprintf(previous, sizeof previous, "%s", id);
    cJSON_Delete(ev);
    egress_decision_free(d);
  }
  /* A reused decision: with a sink it carries its event's id; then, from a
   * checker with none, no id, not the last check's left behind. */
  egress_options_t *o = NULL;
  egress_checker_t *with_sink = NULL;
  CU_ASSERT_FATAL(egress_options_new(&o) == EGRESS_OK);
  CU_ASSERT_FATAL(egress_options_set_event_callback(o, count_event_cb, NULL) == EGRESS_OK);
  CU_ASSERT_FATAL(egress_checker_new(p, o, &with_sink, NULL, 0) == EGRESS_OK);
  egress_decision_t *into = NULL;
  CU_ASSERT_FATAL(egress_decision_new(&into) == EGRESS_OK);
  CU_ASSERT_PTR_NULL(egress_decision_event_id(into));
  CU_ASSERT_EQUAL(egress_check_into(with_sink, "93.184.216.34", 443, NULL, into), EGRESS_OK);
  CU_ASSERT_PTR_NOT_NULL(egress_decision_event_id(into));
  CU_ASSERT_EQUAL(egress_check_into(c, "93.184.216.34", 443, NULL, into), EGRESS_OK);
  CU_ASSERT_PTR_NULL(egress_decision_event_id(into));
  CU_ASSERT_PTR_NULL(egress_decision_event_json(into));
  egress_decision_free(into);
  egress_checker_free(with_sink);
  egress_options_free(o);
  egress_checker_free(c);
  egress_policy_unref(p);
}

/* The public stamp is the events' own: same id and time formats, fresh
 * ids, refused buffers. */
static void test_public_stamp(void) {
  char id[37], when[32], last[37] = "";
  for (int i = 0; i < 1000; i++) {
    CU_ASSERT_EQUAL_FATAL(egress_event_stamp(id, when), EGRESS_OK);
    CU_ASSERT_EQUAL(strlen(id), 36);
    CU_ASSERT_EQUAL(id[14], '4');
    CU_ASSERT(strchr("89ab", id[19]) != NULL);
    CU_ASSERT_EQUAL(strlen(when), 24);
    CU_ASSERT_EQUAL(when[23], 'Z');
    CU_ASSERT_EQUAL(when[19], '.');
    CU_ASSERT_NOT_EQUAL(strcmp(id, last), 0);
    memcpy(last, id, sizeof last);
  }
  CU_ASSERT_EQUAL(egress_event_stamp(NULL, when), EGRESS_EINVAL);
  CU_ASSERT_EQUAL(egress_event_stamp(id, NULL), EGRESS_EINVAL);
}

static CU_TestInfo event_tests[] = {
  { "egress_event_stamp: the events' id and time", test_public_stamp },
  { "egress_decision_event_id names the check's event", test_event_id_accessor },
  { "golden events", test_golden_events },
  { "golden egressctl decisions", test_golden_decisions },
  { "schema: field names and types", test_schema },
  { "uuid v4 format, bits, uniqueness x10000", test_uuid_v4 },
  { "rfc3339 UTC milliseconds", test_rfc3339 },
  { "utf-8 maximal-subpart replacement", test_utf8_replacement },
  { "hostile strings yield valid JSON lines", test_hostile_strings },
  { "subject host:port bracketing", test_subject },
  { "numbers", test_numbers },
  { "allocation failures", test_alloc_failures },
  { "one print buffer per thread, reused in any order", test_print_buffer_reuse },
  { "writer: exact escapes and numbers", test_writer_escapes },
  { "writer: fixed capacity and growth", test_writer_capacity },
  { "writer: plain words skipped, every escape found", test_writer_words },
  { "writer: decimal digits two at a time", test_put_uint },
  { "writer: every short string against the reference", test_writer_all_short_strings },
  { "hostile strings in every field, longest fields", test_hostile_fields },
  { "8 threads of hostile events", test_events_threads },
  CU_TEST_INFO_NULL,
};

static CU_TestInfo sink_tests[] = {
  { "none", test_sink_none },
  { "fd sink into a pipe", test_sink_fd_pipe },
  { "path sink appends", test_sink_path },
  { "bad paths and descriptors", test_sink_bad_path },
  { "8 threads x 2000 lines, one file", test_sink_threads },
  { "checker events equal the reference (callback)", test_checker_events },
  { "checker events equal the reference (JSON Lines)", test_checker_jsonl_events },
  { "EPIPE never kills", test_sink_epipe },
  { "ENOSPC", test_sink_enospc },
  { "EBADF, EAGAIN, short write", test_sink_ebadf_eagain },
  { "callback", test_sink_callback },
  { "allocation failures", test_sink_alloc_failures },
  CU_TEST_INFO_NULL,
};

int main(int argc, char **argv) {
  static const egress_test_suite_t suites[] = {
    { "events", NULL, NULL, event_tests },
    { "sinks", sinks_init, sinks_cleanup, sink_tests },
    { NULL, NULL, NULL, NULL },
  };
  return egress_test_main(argc, argv, suites);
}
