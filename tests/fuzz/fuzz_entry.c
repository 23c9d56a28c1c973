/*
 * Fuzz target: the entry grammar (lib/entry.c).
 *
 * Each input is parsed as an entry of both lists.  A rejected entry must come
 * with a reason and leave the rule cleared; an accepted one must be
 * internally consistent (ports, canonical name, CIDR without host bits), and
 * a matcher compiled from it must match what its kind says it matches.
 * Regex rules are matched against hostile names to prove matching stays
 * bounded.
 */
#include "egress_private.h"

#include "fuzz_common.h"

static bool name_chars_ok(const char *s, size_t len) {
  for (size_t i = 0; i < len; i++) {
    char c = s[i];
    if (!((c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '-' || c == '_' || c == '.')) return false;
  }
  return true;
}

static void check_name_rule(const egress__rule_t *r) {
  FUZZ_REQUIRE(r->name != NULL, "kind %d without a name", (int)r->kind);
  FUZZ_REQUIRE(r->name_len == strlen(r->name) && r->name_len > 0 && r->name_len <= EGRESS__NAME_MAX,
               "name length %zu", r->name_len);
  FUZZ_REQUIRE(name_chars_ok(r->name, r->name_len), "name \"%s\" not canonical", r->name);
  egress__host_t again;
  const char *why = NULL;
  egress_status_t st = egress__canon_name(r->name, r->name_len, &again, &why);
  FUZZ_REQUIRE(st == EGRESS_OK, "canonical name \"%s\" rejected: %s", r->name, why ? why : "?");
  FUZZ_REQUIRE(again.len == r->name_len && !memcmp(again.text, r->name, r->name_len),
               "name \"%s\" re-canonicalizes to \"%s\"", r->name, again.text);
}

static void check_cidr_rule(const egress__rule_t *r) {
  unsigned bits = r->cidr.addr.family == 4 ? 32u : 128u;
  FUZZ_REQUIRE(r->cidr.addr.family == 4 || r->cidr.addr.family == 6, "family %u",
               (unsigned)r->cidr.addr.family);
  FUZZ_REQUIRE(r->cidr.len <= bits, "prefix length %u", (unsigned)r->cidr.len);
  for (unsigned i = r->cidr.len; i < bits; i++)
    FUZZ_REQUIRE(!(r->cidr.addr.bytes[i / 8] & (0x80u >> (i % 8))), "host bit %u set", i);
  if (r->cidr.addr.family == 4)
    for (unsigned i = 4; i < 16; i++) FUZZ_REQUIRE(!r->cidr.addr.bytes[i], "IPv4 tail byte set");
  FUZZ_REQUIRE(r->name == NULL && r->regex == NULL, "CIDR rule with a name or regex");
}

/* What a rule of each kind must do with names built around its own name. */
static void check_matcher(const egress__rule_t *r) {
  egress__matcher_t *m = NULL;
  egress_status_t st = egress__matcher_build(r, 1, &m);
  if (st == EGRESS_ENOMEM) return;
  FUZZ_REQUIRE(st == EGRESS_OK && m, "matcher_build: %d", (int)st);

  egress__match_t res;
  char buf[EGRESS__NAME_MAX + 16];
  uint16_t port = r->port_lo;
  switch (r->kind) {
    case EGRESS__RULE_EXACT:
      egress__match_name(m, r->name, r->name_len, port, &res);
      FUZZ_REQUIRE(res.allowing == r && res.any == r, "exact rule misses its own name");
      snprintf(buf, sizeof buf, "x.%s", r->name);
      egress__match_name(m, buf, strlen(buf), port, &res);
      FUZZ_REQUIRE(!res.any, "exact rule matches a subdomain");
      break;
    case EGRESS__RULE_WILD1:
    case EGRESS__RULE_WILDN:
      egress__match_name(m, r->name, r->name_len, port, &res);
      FUZZ_REQUIRE(!res.any, "wildcard rule matches its apex");
      snprintf(buf, sizeof buf, "x.%s", r->name);
      egress__match_name(m, buf, strlen(buf), port, &res);
      FUZZ_REQUIRE(res.allowing == r, "wildcard misses one label in front");
      snprintf(buf, sizeof buf, "x.y.%s", r->name);
      egress__match_name(m, buf, strlen(buf), port, &res);
      FUZZ_REQUIRE((res.allowing == r) == (r->kind == EGRESS__RULE_WILDN), "two labels in front: kind %d",
                   (int)r->kind);
      snprintf(buf, sizeof buf, "x%s", r->name);
      egress__match_name(m, buf, strlen(buf), port, &res);
      FUZZ_REQUIRE(!res.any, "wildcard matches a name that only ends with the suffix");
      break;
    case EGRESS__RULE_ANY:
      egress__match_name(m, "a.example", 9, port, &res);
      FUZZ_REQUIRE(res.allowing == r, "'*' misses a name");
      break;
    case EGRESS__RULE_REGEX: {
      /* Hostile subjects for catastrophic patterns: must return, whatever
       * the answer. */
      static const char *const subjects[] = {
        "api.example.com", "a", "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa!",
        "a.a.a.a.a.a.a.a.a.a.a.a.a.a.a.a.a.a.a.a.a.a.a.a.a.a.a.a.a.a.a.a.a.a.x", ""
      };
      for (size_t i = 0; i < sizeof subjects / sizeof *subjects; i++) {
        (void)egress__regex_match(r, subjects[i], strlen(subjects[i]));
        egress__match_name(m, subjects[i], strlen(subjects[i]), port, &res);
        FUZZ_REQUIRE(!res.allowing || res.allowing == r, "foreign rule");
      }
      break;
    }
    case EGRESS__RULE_CIDR:
      egress__match_ip(m, &r->cidr.addr, port, 0, &res);
      FUZZ_REQUIRE(res.allowing == r, "CIDR rule misses its own network address");
      egress__match_name(m, "a.example", 9, port, &res);
      FUZZ_REQUIRE(!res.any, "CIDR rule matches a name");
      break;
  }
  egress__matcher_free(m);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  if (size > 6000) return 0;
  const char *text = (const char *)data;
  for (int l = 0; l < 2; l++) {
    egress__rule_t rule;
    const char *why = NULL;
    egress_status_t st = egress__entry_parse(text, size, (egress_list_t)l, &rule, &why);
    if (st != EGRESS_OK) {
      FUZZ_REQUIRE(st == EGRESS_EPOLICY || st == EGRESS_ENOMEM, "status %d", (int)st);
      FUZZ_REQUIRE(why && *why, "rejected without a reason");
      FUZZ_REQUIRE(!rule.text && !rule.name && !rule.regex && !rule.path, "rule not cleared");
      egress__rule_clear(&rule);
      continue;
    }
    FUZZ_REQUIRE(size > 0 && size <= 4096, "accepted %zu bytes", size);
    FUZZ_REQUIRE(rule.text && strlen(rule.text) == size && !memcmp(rule.text, text, size),
                 "text not kept as written");
    for (size_t i = 0; i < size; i++)
      FUZZ_REQUIRE((unsigned char)text[i] >= 0x20 && text[i] != 0x7f, "control byte accepted");
    FUZZ_REQUIRE(rule.list == (egress_list_t)l, "list");
    FUZZ_REQUIRE(rule.port_lo >= 1 && rule.port_lo <= rule.port_hi, "ports %u-%u", (unsigned)rule.port_lo,
                 (unsigned)rule.port_hi);
    if (l == EGRESS_LIST_DENY && !memchr(text, ':', size))
      FUZZ_REQUIRE(rule.port_lo == 1 && rule.port_hi == 65535, "deny entry without a port");
    switch (rule.kind) {
      case EGRESS__RULE_EXACT:
      case EGRESS__RULE_WILD1:
      case EGRESS__RULE_WILDN: check_name_rule(&rule); break;
      case EGRESS__RULE_ANY: FUZZ_REQUIRE(!rule.name && !rule.regex, "'*' with name or regex"); break;
      case EGRESS__RULE_REGEX:
        FUZZ_REQUIRE(rule.regex && size > 3 && !memcmp(text, "re:", 3), "regex rule");
        break;
      case EGRESS__RULE_CIDR: check_cidr_rule(&rule); break;
      default: FUZZ_REQUIRE(0, "unknown kind %d", (int)rule.kind);
    }
    if (rule.path) {
      size_t pl = strlen(rule.path);
      FUZZ_REQUIRE(pl > 1 && rule.path[0] == '/' && rule.path[pl - 1] != '/', "path \"%s\"", rule.path);
      FUZZ_REQUIRE(!strstr(rule.path, "//") && !strstr(rule.path, "/../") && !strstr(rule.path, "/./"),
                   "path \"%s\" not normal", rule.path);
    }
    check_matcher(&rule);
    egress__rule_clear(&rule);
    FUZZ_REQUIRE(!rule.text && !rule.regex, "rule_clear left state");
  }
  return 0;
}
