/*
 * Differential target: the compiled matcher (hash tables, suffix walk, CIDR
 * set) against a deliberately simple reference written here.
 *
 * The input is decoded into up to 8 allowlist entries - exact names,
 * "*.", "**.", "*", IPv4 and IPv6 CIDRs and anchored regexes with the same
 * meaning as the name forms, each with an optional port, port range or "*"
 * - and one destination (a name or an address) with a port.  Entry names
 * are written in mixed case, sometimes with a trailing dot or as a U-label,
 * so canonicalization is part of what is compared.
 *
 * Compared: which rule allows (host and port) and which rule matches the
 * host at all, as the lowest index in each case.  Regex rules are tried by
 * the matcher only when nothing cheaper allows, so when a regex rule is
 * involved only "some rule allows" and "the rule named really matches" are
 * compared; without regex rules the indexes must be equal.
 */
#include "egress_private.h"

#include "fuzz_common.h"

#include <ctype.h>

#define MAX_ENTRIES 8

/* Label vocabulary: [0] is how an entry may spell it, [1] its canonical
 * form (what destinations use). */
static const char *const labels[][2] = {
  { "a", "a" },
  { "b", "b" },
  { "api", "api" },
  { "example", "example" },
  { "com", "com" },
  { "x-y", "x-y" },
  { "_srv", "_srv" },
  { "b\xc3\xbc"
    "cher",
    "xn--bcher-kva" },
  { "xn--bcher-kva", "xn--bcher-kva" },
  { "c0", "c0" },
  { "org", "org" },
  { "z", "z" },
};
#define NLABELS (sizeof labels / sizeof *labels)

typedef enum {
  R_EXACT,
  R_WILD1,
  R_WILDN,
  R_ANY,
  R_CIDR4,
  R_CIDR6,
  R_RE_EXACT,
  R_RE_WILD1,
  R_RE_WILDN
} rkind_t;

typedef struct ref_rule {
  rkind_t kind;
  char name[128];          /* canonical name / suffix */
  egress__prefix_t prefix; /* CIDR */
  uint16_t lo, hi;
} ref_rule_t;

typedef struct reader {
  const uint8_t *p;
  size_t n;
} reader_t;

static unsigned next(reader_t *r) {
  if (!r->n) return 0;
  r->n--;
  return *r->p++;
}

/* 1..4 labels; entry spelling into @p spell, canonical into @p canon. */
static void gen_name(reader_t *r, char *spell, size_t sl, char *canon, size_t cl) {
  unsigned nl = 1 + next(r) % 4;
  spell[0] = canon[0] = '\0';
  unsigned upper = next(r);
  for (unsigned i = 0; i < nl; i++) {
    unsigned k = next(r) % NLABELS;
    if (i) {
      strncat(spell, ".", sl - strlen(spell) - 1);
      strncat(canon, ".", cl - strlen(canon) - 1);
    }
    size_t at = strlen(spell);
    strncat(spell, labels[k][0], sl - strlen(spell) - 1);
    if (upper & (1u << i))
      for (char *c = spell + at; *c; c++) *c = (char)toupper((unsigned char)*c);
    strncat(canon, labels[k][1], cl - strlen(canon) - 1);
  }
}

static void gen_ports(reader_t *r, ref_rule_t *rule, bool *has, char *out, size_t outlen) {
  unsigned k = next(r) % 6;
  static const uint16_t single[] = { 80, 443, 8443 };
  *has = true;
  switch (k) {
    case 0:
      *has = false;
      out[0] = '\0';
      return;
    case 1:
    case 2:
      rule->lo = rule->hi = single[next(r) % 3];
      snprintf(out, outlen, ":%u", rule->lo);
      return;
    case 3:
      rule->lo = 400;
      rule->hi = 500;
      snprintf(out, outlen, ":400-500");
      return;
    case 4:
      rule->lo = 8000;
      rule->hi = 8999;
      snprintf(out, outlen, ":8000-8999");
      return;
    default:
      rule->lo = 1;
      rule->hi = 65535;
      snprintf(out, outlen, ":*");
      return;
  }
}

/* Regex text for a canonical name: dots escaped. */
static void re_escape(const char *name, char *out, size_t outlen) {
  size_t o = 0;
  for (const char *c = name; *c && o + 3 < outlen; c++) {
    if (*c == '.') out[o++] = '\\';
    out[o++] = *c;
  }
  out[o] = '\0';
}

static void gen_prefix(reader_t *r, ref_rule_t *rule, char *out, size_t outlen) {
  egress__ip_t ip;
  memset(&ip, 0, sizeof ip);
  bool v6 = rule->kind == R_CIDR6;
  unsigned bits = v6 ? 128 : 32;
  ip.family = v6 ? 6 : 4;
  /* Few distinct prefixes so that destinations hit them: the first bytes
   * come from a small set, the rest from the input. */
  unsigned style = next(r);
  for (unsigned i = 0; i < sizeof ip.bytes && i < bits / 8; i++) ip.bytes[i] = (uint8_t)next(r);
  if (!v6) {
    static const uint8_t firsts[] = { 93, 203, 10, 1 };
    ip.bytes[0] = firsts[style % 4];
  } else {
    ip.bytes[0] = 0x20;
    ip.bytes[1] = (style & 1) ? 0x01 : 0x06;
  }
  unsigned len = next(r) % (bits + 1);
  for (unsigned i = len; i < bits; i++) ip.bytes[i / 8] &= (uint8_t) ~(0x80u >> (i % 8));
  rule->prefix.addr = ip;
  rule->prefix.len = (uint8_t)len;
  char text[EGRESS__IPSTR_MAX];
  egress__ip_format(&ip, text, sizeof text);
  if (v6)
    snprintf(out, outlen, "[%s]/%u", text, len);
  else
    snprintf(out, outlen, "%s/%u", text, len);
}

static bool ends_with_label_suffix(const char *host, const char *suffix, size_t *front) {
  size_t h = strlen(host), s = strlen(suffix);
  if (h < s + 2 || strcmp(host + h - s, suffix) || host[h - s - 1] != '.') return false;
  *front = h - s - 1;
  return true;
}

static bool ref_match_name(const ref_rule_t *r, const char *host) {
  size_t front;
  switch (r->kind) {
    case R_EXACT:
    case R_RE_EXACT: return !strcmp(host, r->name);
    case R_WILD1:
    case R_RE_WILD1: return ends_with_label_suffix(host, r->name, &front) && !memchr(host, '.', front);
    case R_WILDN:
    case R_RE_WILDN: return ends_with_label_suffix(host, r->name, &front);
    case R_ANY: return true;
    default: return false;
  }
}

static bool ref_match_ip(const ref_rule_t *r, const egress__ip_t *ip, unsigned min_len) {
  if (r->kind != R_CIDR4 && r->kind != R_CIDR6) return false;
  if (r->prefix.addr.family != ip->family || r->prefix.len < min_len) return false;
  unsigned len = r->prefix.len;
  for (unsigned i = 0; i < len; i++) {
    unsigned m = 0x80u >> (i % 8);
    if ((ip->bytes[i / 8] & m) != (r->prefix.addr.bytes[i / 8] & m)) return false;
  }
  return true;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  reader_t rd = { data, size };
  ref_rule_t rules[MAX_ENTRIES];
  char texts[MAX_ENTRIES][420];
  const char *entries[MAX_ENTRIES];
  bool any_regex = false;
  if (size > 512) return 0;

  unsigned n = 1 + next(&rd) % MAX_ENTRIES;
  for (unsigned i = 0; i < n; i++) {
    ref_rule_t *r = &rules[i];
    char spell[128], canon[128], ports[16], base[400];
    bool has_port;
    memset(r, 0, sizeof *r);
    r->kind = (rkind_t)(next(&rd) % 9);
    gen_name(&rd, spell, sizeof spell, canon, sizeof canon);
    gen_ports(&rd, r, &has_port, ports, sizeof ports);
    if (!has_port) r->lo = r->hi = 443;
    switch (r->kind) {
      case R_EXACT: snprintf(base, sizeof base, "%s%s", spell, (next(&rd) & 1) ? "." : ""); break;
      case R_WILD1: snprintf(base, sizeof base, "*.%s", spell); break;
      case R_WILDN: snprintf(base, sizeof base, "**.%s", spell); break;
      case R_ANY: snprintf(base, sizeof base, "*"); break;
      case R_CIDR4:
      case R_CIDR6:
        gen_prefix(&rd, r, base, sizeof base);
        if (!has_port) {
          r->lo = 1;
          r->hi = 65535;
        }
        break;
      case R_RE_EXACT:
      case R_RE_WILD1:
      case R_RE_WILDN: {
        char esc[260];
        re_escape(canon, esc, sizeof esc);
        static const char *const front[] = { "", "[^.]+\\.", ".+\\." };
        snprintf(base, sizeof base, "re:^%s%s$", front[r->kind - R_RE_EXACT], esc);
        any_regex = true;
        break;
      }
    }
    snprintf(r->name, sizeof r->name, "%s", canon);
    snprintf(texts[i], sizeof texts[i], "%s%s", base, ports);
    entries[i] = texts[i];
  }

  char err[EGRESS_ERRBUF_SIZE];
  egress_policy_t *p = NULL;
  egress_status_t st = egress_policy_from_entries(entries, n, NULL, 0, &p, err, sizeof err);
  if (st == EGRESS_ENOMEM) return 0;
  FUZZ_REQUIRE(st == EGRESS_OK, "valid entries rejected: %s", err);
  const egress__matcher_t *m = p->matcher[EGRESS_LIST_ALLOW];

  /* The destination. */
  unsigned dk = next(&rd) % 4;
  static const uint16_t dports[] = { 443, 80, 8443, 450, 8080, 1, 65535, 22 };
  uint16_t port = dports[next(&rd) % 8];
  egress__match_t got;
  int ref_allow = -1, ref_any = -1;
  char host[300];
  egress__ip_t ip;
  unsigned min_len = 0;
  memset(&ip, 0, sizeof ip);
  if (dk < 2) {
    char spell[128];
    if (dk == 0 && n > 0) {
      /* Built around a rule's own name: that is where the edges are. */
      const ref_rule_t *r = &rules[next(&rd) % n];
      static const char *const pre[] = { "", "a.", "a.b.", "xn--bcher-kva.", "ab" };
      snprintf(host, sizeof host, "%s%s", pre[next(&rd) % 5], r->name);
    } else {
      gen_name(&rd, spell, sizeof spell, host, sizeof host);
    }
    for (unsigned i = 0; i < n; i++) {
      if (!ref_match_name(&rules[i], host)) continue;
      if (ref_any < 0) ref_any = (int)i;
      if (ref_allow < 0 && port >= rules[i].lo && port <= rules[i].hi) ref_allow = (int)i;
    }
    egress__match_name(m, host, strlen(host), port, &got);
  } else {
    ip.family = dk == 2 ? 4 : 6;
    unsigned style = next(&rd);
    for (unsigned i = 0; i < (ip.family == 4 ? 4u : 16u); i++) ip.bytes[i] = (uint8_t)next(&rd);
    if (ip.family == 4) {
      static const uint8_t firsts[] = { 93, 203, 10, 1 };
      ip.bytes[0] = firsts[style % 4];
    } else {
      ip.bytes[0] = 0x20;
      ip.bytes[1] = (style & 1) ? 0x01 : 0x06;
    }
    /* Sometimes a destination inside a rule's prefix. */
    if ((style & 6) && n > 0) {
      const ref_rule_t *r = &rules[next(&rd) % n];
      if ((r->kind == R_CIDR4 || r->kind == R_CIDR6) && r->prefix.addr.family == ip.family)
        for (unsigned i = 0; i < r->prefix.len; i++) {
          unsigned b = 0x80u >> (i % 8);
          ip.bytes[i / 8] = (uint8_t)((ip.bytes[i / 8] & ~b) | (r->prefix.addr.bytes[i / 8] & b));
        }
    }
    min_len = (style & 8) ? next(&rd) % (ip.family == 4 ? 33u : 129u) : 0;
    for (unsigned i = 0; i < n; i++) {
      if (!ref_match_ip(&rules[i], &ip, min_len)) continue;
      if (ref_any < 0) ref_any = (int)i;
      if (ref_allow < 0 && port >= rules[i].lo && port <= rules[i].hi) ref_allow = (int)i;
    }
    egress__match_ip(m, &ip, port, (uint8_t)min_len, &got);
    egress__ip_format(&ip, host, sizeof host);
  }

  int got_allow = got.allowing ? (int)got.allowing->index : -1;
  int got_any = got.any ? (int)got.any->index : -1;
  if (got_allow >= 0) {
    FUZZ_REQUIRE(got_allow < (int)n, "index %d", got_allow);
    const ref_rule_t *r = &rules[got_allow];
    bool matches = dk < 2 ? ref_match_name(r, host) : ref_match_ip(r, &ip, min_len);
    FUZZ_REQUIRE(matches && port >= r->lo && port <= r->hi,
                 "%s:%u allowed by rule %d \"%s\" which does not hold it", host, (unsigned)port, got_allow,
                 entries[got_allow]);
  }
  if (got_any >= 0) {
    const ref_rule_t *r = &rules[got_any];
    bool matches = dk < 2 ? ref_match_name(r, host) : ref_match_ip(r, &ip, min_len);
    FUZZ_REQUIRE(matches, "%s: rule %d \"%s\" reported as matching", host, got_any, entries[got_any]);
  }
  FUZZ_REQUIRE((got_allow >= 0) == (ref_allow >= 0), "%s:%u: matcher allow %d, reference %d (%s)", host,
               (unsigned)port, got_allow, ref_allow, ref_allow >= 0 ? entries[ref_allow] : "-");
  FUZZ_REQUIRE((got_any >= 0) == (ref_any >= 0), "%s:%u: matcher any %d, reference %d", host, (unsigned)port,
               got_any, ref_any);
  if (!any_regex || ref_allow < 0) {
    FUZZ_REQUIRE(got_allow == ref_allow, "%s:%u: matcher allows by %d, reference by %d", host, (unsigned)port,
                 got_allow, ref_allow);
    if (!any_regex)
      FUZZ_REQUIRE(got_any == ref_any, "%s:%u: matcher any %d, reference %d", host, (unsigned)port, got_any,
                   ref_any);
  }
  egress_policy_unref(p);
  return 0;
}
