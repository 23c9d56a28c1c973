/*
 * Fuzz target: host canonicalization (lib/canon.c).
 *
 * Invariants for an accepted host: the canonical text is short, holds only
 * [a-z0-9_.-] for names, never ends in a numeric label (that is an IPv4
 * attempt), has labels of 1-63 octets, and canonicalizes to itself; IP
 * literals print back to the address they carry.  egress__canon_name
 * accepts a subset of what egress__canon_host accepts, with the same result.
 */
#include "egress_private.h"

#include "fuzz_common.h"

static bool is_hex_digit(char c) { return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f'); }

static void check_name(const egress__host_t *h) {
  FUZZ_REQUIRE(h->len > 0 && h->len <= EGRESS__NAME_MAX, "name length %zu", h->len);
  FUZZ_REQUIRE(h->text[h->len - 1] != '.' && h->text[0] != '.', "dot at an end: \"%s\"", h->text);
  size_t label = 0, last_start = 0;
  for (size_t i = 0; i < h->len; i++) {
    char c = h->text[i];
    FUZZ_REQUIRE((c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '-' || c == '_' || c == '.',
                 "byte 0x%02x in \"%s\"", (unsigned)(unsigned char)c, h->text);
    if (c == '.') {
      FUZZ_REQUIRE(label >= 1 && label <= EGRESS__LABEL_MAX, "label length %zu in \"%s\"", label, h->text);
      label = 0;
      last_start = i + 1;
    } else {
      label++;
    }
  }
  FUZZ_REQUIRE(label >= 1 && label <= EGRESS__LABEL_MAX, "last label length %zu", label);
  const char *last = h->text + last_start;
  size_t ll = h->len - last_start;
  bool digits = true;
  for (size_t i = 0; i < ll; i++)
    if (last[i] < '0' || last[i] > '9') digits = false;
  FUZZ_REQUIRE(!digits, "name \"%s\" ends in a numeric label", h->text);
  if (ll >= 2 && last[0] == '0' && last[1] == 'x') {
    bool hex = true;
    for (size_t i = 2; i < ll; i++)
      if (!is_hex_digit(last[i])) hex = false;
    FUZZ_REQUIRE(!hex, "name \"%s\" ends in a hex label", h->text);
  }
}

static void check_host(const egress__host_t *h) {
  FUZZ_REQUIRE(h->len == strlen(h->text), "len %zu vs text \"%s\"", h->len, h->text);
  egress__ip_t ip;
  char buf[EGRESS__IPSTR_MAX];
  switch (h->kind) {
    case EGRESS__HOST_NAME: check_name(h); break;
    case EGRESS__HOST_IPV4:
      FUZZ_REQUIRE(h->ip.family == 4, "IPv4 host with family %u", (unsigned)h->ip.family);
      FUZZ_REQUIRE(egress__ip4_parse(h->text, h->len, &ip) && !memcmp(ip.bytes, h->ip.bytes, 4),
                   "IPv4 text \"%s\" does not parse back", h->text);
      egress__ip_format(&h->ip, buf, sizeof buf);
      FUZZ_REQUIRE(!strcmp(buf, h->text), "IPv4 \"%s\" formats as \"%s\"", h->text, buf);
      break;
    case EGRESS__HOST_IPV6:
      FUZZ_REQUIRE(h->ip.family == 6, "IPv6 host with family %u", (unsigned)h->ip.family);
      FUZZ_REQUIRE(egress__ip6_parse(h->text, h->len, &ip) && !memcmp(ip.bytes, h->ip.bytes, 16),
                   "IPv6 text \"%s\" does not parse back", h->text);
      egress__ip_format(&h->ip, buf, sizeof buf);
      FUZZ_REQUIRE(!strcmp(buf, h->text), "IPv6 \"%s\" formats as \"%s\"", h->text, buf);
      {
        egress__ip_t copy = h->ip;
        FUZZ_REQUIRE(!egress__ip_unmap(&copy), "IPv4-mapped \"%s\" not judged as IPv4", h->text);
      }
      break;
    default: FUZZ_REQUIRE(0, "kind %d", (int)h->kind);
  }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  if (size > 4096) return 0;
  const char *in = (const char *)data;
  egress__host_t h, again, n;
  const char *why = NULL;

  egress_status_t st = egress__canon_host(in, size, &h, &why);
  if (st == EGRESS_OK) {
    check_host(&h);
    FUZZ_REQUIRE(!memchr(in, '\0', size), "NUL accepted");
    /* Canonical output is a fixed point. */
    st = egress__canon_host(h.text, h.len, &again, &why);
    FUZZ_REQUIRE(st == EGRESS_OK, "canonical \"%s\" rejected: %s", h.text, why ? why : "?");
    FUZZ_REQUIRE(again.kind == h.kind && again.len == h.len && !strcmp(again.text, h.text) &&
                     !memcmp(again.ip.bytes, h.ip.bytes, 16),
                 "\"%s\" re-canonicalizes to \"%s\"", h.text, again.text);
  } else {
    FUZZ_REQUIRE(st == EGRESS_EINVAL || st == EGRESS_ENOMEM, "status %d", (int)st);
    FUZZ_REQUIRE(why && *why, "rejected without a reason");
  }

  why = NULL;
  egress_status_t nst = egress__canon_name(in, size, &n, &why);
  if (nst == EGRESS_OK) {
    FUZZ_REQUIRE(n.kind == EGRESS__HOST_NAME, "canon_name returned kind %d", (int)n.kind);
    check_host(&n);
    FUZZ_REQUIRE(st == EGRESS_OK && h.kind == EGRESS__HOST_NAME && !strcmp(h.text, n.text),
                 "canon_name accepted \"%s\" but canon_host %s", n.text,
                 st == EGRESS_OK ? h.text : "rejected it");
    st = egress__canon_name(n.text, n.len, &again, &why);
    FUZZ_REQUIRE(st == EGRESS_OK && !strcmp(again.text, n.text), "name not a fixed point");
  } else {
    FUZZ_REQUIRE(nst == EGRESS_EINVAL || nst == EGRESS_ENOMEM, "status %d", (int)nst);
    FUZZ_REQUIRE(why && *why, "rejected without a reason");
    /* Names canon_host accepts as names must also be names to canon_name,
     * unless they needed brackets (which a name never has). */
    if (st == EGRESS_OK && h.kind == EGRESS__HOST_NAME && !memchr(in, '[', size))
      FUZZ_REQUIRE(0, "canon_host accepts name \"%s\" that canon_name rejects: %s", h.text, why);
  }
  return 0;
}
