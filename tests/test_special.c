/*
 * Special-purpose address table and classification (docs/special-ranges.md
 * and docs/check.md#vetting-addresses, embedded IPv4).
 *
 * The expectations below are written out by hand from the IANA registries
 * (the CSVs in tools/data/) and the rules of docs/special-ranges.md, independently of the generator:
 * the generated table must hold exactly these blocks, and classification is
 * compared with a brute-force reference over this list at every block edge
 * and at many pseudo-random addresses.
 */
#include "egress_private.h"

#include "testutil.h"

#include <arpa/inet.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct expect_block {
  const char *cidr;
  bool global;
  bool synthetic;
} expect_block_t;

/* Every registry row (one per prefix) and every block added by rule. */
static const expect_block_t expected[] = {
  /* IPv4 registry */
  { "0.0.0.0/8", false, false },
  { "0.0.0.0/32", false, false },
  { "10.0.0.0/8", false, false },
  { "100.64.0.0/10", false, false },
  { "127.0.0.0/8", false, false },
  { "169.254.0.0/16", false, false },
  { "172.16.0.0/12", false, false },
  { "192.0.0.0/24", false, false },
  { "192.0.0.0/29", false, false },
  { "192.0.0.8/32", false, false },
  { "192.0.0.9/32", true, false },
  { "192.0.0.10/32", true, false },
  { "192.0.0.170/32", false, false },
  { "192.0.0.171/32", false, false },
  { "192.0.2.0/24", false, false },
  { "192.31.196.0/24", true, false },
  { "192.52.193.0/24", true, false },
  { "192.88.99.0/24", false, false }, /* terminated */
  { "192.175.48.0/24", true, false },
  { "198.18.0.0/15", false, false },
  { "198.51.100.0/24", false, false },
  { "203.0.113.0/24", false, false },
  { "240.0.0.0/4", false, false },
  { "255.255.255.255/32", false, false },
  /* IPv4 by rule */
  { "192.168.0.0/16", false, false }, /* RFC 1918; the CSV snapshot lacks it */
  { "224.0.0.0/4", false, false },
  /* IPv6 registry */
  { "::1/128", false, false },
  { "::/128", false, false },
  { "::ffff:0:0/96", false, false },
  { "64:ff9b::/96", false, false },
  { "64:ff9b:1::/48", false, false },
  { "100::/64", false, false },
  { "100:0:0:1::/64", false, false },
  { "2001::/23", false, false },
  { "2001::/32", false, false }, /* Teredo: N/A, special here */
  { "2001:1::1/128", true, false },
  { "2001:1::2/128", true, false },
  { "2001:1::3/128", true, false },
  { "2001:2::/48", false, false },
  { "2001:3::/32", true, false },
  { "2001:4:112::/48", true, false },
  { "2001:10::/28", false, false }, /* ORCHID, terminated */
  { "2001:20::/28", false, false }, /* ORCHIDv2: identifiers, not routable */
  { "2001:30::/28", false, false }, /* DETs: ORCHIDv2-format identifiers */
  { "2001:db8::/32", false, false },
  { "2002::/16", false, false }, /* 6to4: N/A, special here */
  { "2620:4f:8000::/48", true, false },
  { "3fff::/20", false, false },
  { "5f00::/16", false, false },
  { "fc00::/7", false, false },
  { "fe80::/10", false, false },
  /* IPv6 by rule */
  { "ff00::/8", false, false },
  { "fec0::/10", false, false },
  { "::/96", false, false },
  { "::ffff:0:0:0/96", false, false },
  { "::/3", false, true },
  { "4000::/2", false, true },
  { "8000::/1", false, true },
};
#define N_EXPECTED (sizeof expected / sizeof expected[0])

/* ------------------------------------------------------------------------ */
/* helpers                                                                   */
/* ------------------------------------------------------------------------ */

static egress__ip_t ip_of(const char *text) {
  egress__ip_t ip;
  memset(&ip, 0, sizeof ip);
  if (strchr(text, ':') != NULL) {
    ip.family = 6;
    if (inet_pton(AF_INET6, text, ip.bytes) != 1) {
      fprintf(stderr, "bad test address %s\n", text);
      abort();
    }
  } else {
    ip.family = 4;
    if (inet_pton(AF_INET, text, ip.bytes) != 1) {
      fprintf(stderr, "bad test address %s\n", text);
      abort();
    }
  }
  return ip;
}

static egress__prefix_t prefix_of(const char *cidr) {
  char buf[64];
  const char *slash = strchr(cidr, '/');
  egress__prefix_t p;

  if (slash == NULL || (size_t)(slash - cidr) >= sizeof buf) abort();
  memcpy(buf, cidr, (size_t)(slash - cidr));
  buf[slash - cidr] = '\0';
  p.addr = ip_of(buf);
  p.len = (uint8_t)atoi(slash + 1);
  return p;
}

static unsigned bits_of(uint8_t family) { return family == 4 ? 32u : 128u; }

static bool contains(const egress__prefix_t *p, const egress__ip_t *ip) {
  if (p->addr.family != ip->family) return false;
  for (unsigned i = 0; i < p->len; i++) {
    unsigned byte = i / 8, bit = 7 - i % 8;
    if (((p->addr.bytes[byte] >> bit) & 1) != ((ip->bytes[byte] >> bit) & 1)) return false;
  }
  return true;
}

static egress__ip_t last_of(const egress__prefix_t *p) {
  egress__ip_t ip = p->addr;
  for (unsigned i = p->len; i < bits_of(ip.family); i++) ip.bytes[i / 8] |= (uint8_t)(1u << (7 - i % 8));
  return ip;
}

/* ip +/- 1 within its family; returns false on wrap-around. */
static bool step(egress__ip_t *ip, int dir) {
  int n = ip->family == 4 ? 4 : 16;
  for (int i = n - 1; i >= 0; i--) {
    if (dir > 0) {
      if (ip->bytes[i]++ != 0xff) return true;
    } else {
      if (ip->bytes[i]-- != 0x00) return true;
    }
  }
  return false;
}

static const char *fmt(const egress__ip_t *ip, char *buf) {
  inet_ntop(ip->family == 4 ? AF_INET : AF_INET6, ip->bytes, buf, INET6_ADDRSTRLEN);
  return buf;
}

/* The reference: most specific expected block decides global; open_len is
 * the length of the widest non-global real block, else of the synthetic one. */
typedef struct ref_info {
  bool global;
  int inner; /* index into expected[], -1 none */
  unsigned open_len;
} ref_info_t;

static ref_info_t ref_classify(const egress__ip_t *ip) {
  ref_info_t r = { true, -1, 0 };
  int outer = -1, synth = -1;
  for (size_t i = 0; i < N_EXPECTED; i++) {
    egress__prefix_t p = prefix_of(expected[i].cidr);
    if (!contains(&p, ip)) continue;
    if (r.inner < 0 || p.len > prefix_of(expected[r.inner].cidr).len) r.inner = (int)i;
    if (expected[i].synthetic) {
      synth = (int)i;
    } else if (!expected[i].global && (outer < 0 || p.len < prefix_of(expected[outer].cidr).len)) {
      outer = (int)i;
    }
  }
  r.global = r.inner < 0 || expected[r.inner].global;
  if (!r.global)
    r.open_len = outer >= 0 ? prefix_of(expected[outer].cidr).len : prefix_of(expected[synth].cidr).len;
  return r;
}

static int failures_shown;

/* Classify @p ip and compare with the reference; returns whether they agree. */
static bool agrees(const egress__ip_t *ip) {
  egress__special_info_t info;
  ref_info_t ref = ref_classify(ip);
  bool ok;

  memset(&info, 0xa5, sizeof info);
  egress__special_classify(ip, &info);
  ok = info.global == ref.global && info.open_len == ref.open_len;
  if (ref.inner < 0) {
    ok = ok && info.block == NULL;
  } else {
    egress__prefix_t p = prefix_of(expected[ref.inner].cidr);
    ok = ok && info.block != NULL && info.block->prefix.len == p.len && contains(&info.block->prefix, ip) &&
         contains(&p, &info.block->prefix.addr);
  }
  if (!ok && failures_shown++ < 20) {
    char buf[INET6_ADDRSTRLEN];
    fprintf(stderr, "mismatch %s: got global=%d open_len=%u, want global=%d open_len=%u (%s)\n", fmt(ip, buf),
            info.global, info.open_len, ref.global, ref.open_len,
            ref.inner < 0 ? "no block" : expected[ref.inner].cidr);
  }
  return ok;
}

static egress__special_info_t classify(const char *text) {
  egress__special_info_t info;
  egress__ip_t ip = ip_of(text);
  memset(&info, 0xa5, sizeof info);
  egress__special_classify(&ip, &info);
  return info;
}

static bool is_global(const char *text) { return classify(text).global; }

/* ------------------------------------------------------------------------ */
/* the generated table                                                       */
/* ------------------------------------------------------------------------ */

static int table_key_cmp(const egress__special_block_t *a, const egress__special_block_t *b) {
  int c;
  if (a->prefix.addr.family != b->prefix.addr.family)
    return a->prefix.addr.family < b->prefix.addr.family ? -1 : 1;
  c = memcmp(a->prefix.addr.bytes, b->prefix.addr.bytes, 16);
  if (c != 0) return c;
  return (int)a->prefix.len - (int)b->prefix.len;
}

static void test_table_well_formed(void) {
  CU_ASSERT_FATAL(egress__special_block_count > 0);
  for (size_t i = 0; i < egress__special_block_count; i++) {
    const egress__special_block_t *b = &egress__special_blocks[i];
    unsigned bits;

    CU_ASSERT_FATAL(b->prefix.addr.family == 4 || b->prefix.addr.family == 6);
    bits = bits_of(b->prefix.addr.family);
    CU_ASSERT(b->prefix.len <= bits);
    /* host bits zero, and IPv4 keeps bytes 4..15 zero */
    for (unsigned bit = b->prefix.len; bit < 128; bit++)
      CU_ASSERT((b->prefix.addr.bytes[bit / 8] >> (7 - bit % 8) & 1) == 0);
    CU_ASSERT(b->name != NULL && b->name[0] != '\0');
    CU_ASSERT(b->rfc != NULL && strstr(b->rfc, "RFC") != NULL);
    if (b->synthetic) {
      CU_ASSERT(b->by_rule);
      CU_ASSERT(!b->global);
      CU_ASSERT(b->prefix.addr.family == 6);
    }
    /* strictly sorted by family, address, length: the lookup depends on it */
    if (i > 0) CU_ASSERT(table_key_cmp(&egress__special_blocks[i - 1], b) < 0);
  }
}

static void test_table_matches_registry(void) {
  bool seen[N_EXPECTED] = { false };

  CU_ASSERT_EQUAL(egress__special_block_count, N_EXPECTED);
  for (size_t i = 0; i < egress__special_block_count; i++) {
    const egress__special_block_t *b = &egress__special_blocks[i];
    bool found = false;
    for (size_t j = 0; j < N_EXPECTED; j++) {
      egress__prefix_t p = prefix_of(expected[j].cidr);
      if (p.len == b->prefix.len && p.addr.family == b->prefix.addr.family &&
          memcmp(p.addr.bytes, b->prefix.addr.bytes, 16) == 0) {
        CU_ASSERT(!seen[j]);
        seen[j] = true;
        found = true;
        if (b->global != expected[j].global || b->synthetic != expected[j].synthetic)
          fprintf(stderr, "flag mismatch for %s\n", expected[j].cidr);
        CU_ASSERT_EQUAL(b->global, expected[j].global);
        CU_ASSERT_EQUAL(b->synthetic, expected[j].synthetic);
      }
    }
    CU_ASSERT(found);
  }
  for (size_t j = 0; j < N_EXPECTED; j++) {
    if (!seen[j]) fprintf(stderr, "missing block %s\n", expected[j].cidr);
    CU_ASSERT(seen[j]);
  }
}

static void test_version(void) {
  const char *v = egress_special_ranges_version();
  CU_ASSERT_PTR_NOT_NULL_FATAL(v);
  CU_ASSERT_PTR_EQUAL(v, egress__special_version);
  /* "iana-special-registry-YYYY-MM", the newest registry date; the CSVs kept
   * in the repository are the 2025-04 snapshot or newer. */
  CU_ASSERT_EQUAL_FATAL(strlen(v), strlen("iana-special-registry-2025-04"));
  CU_ASSERT(strncmp(v, "iana-special-registry-", 22) == 0);
  CU_ASSERT(strcmp(v + 22, "2025-04") >= 0);
  CU_ASSERT(v[26] == '-');
  for (int i = 22; i < 29; i++) CU_ASSERT(i == 26 || (v[i] >= '0' && v[i] <= '9'));
}

/* ------------------------------------------------------------------------ */
/* classification                                                            */
/* ------------------------------------------------------------------------ */

/* First, last and just-outside addresses of every block agree with the
 * reference (which also covers outside addresses that another block holds). */
static void test_block_edges(void) {
  size_t bad = 0;
  for (size_t i = 0; i < N_EXPECTED; i++) {
    egress__prefix_t p = prefix_of(expected[i].cidr);
    egress__ip_t first = p.addr, last = last_of(&p), ip;
    egress__special_info_t info;

    bad += !agrees(&first);
    bad += !agrees(&last);
    /* the block's own flag holds at its edges unless a nested block is there */
    egress__special_classify(&first, &info);
    CU_ASSERT_PTR_NOT_NULL(info.block);
    if (info.block != NULL && info.block->prefix.len == p.len)
      CU_ASSERT_EQUAL(info.global, expected[i].global);
    ip = first;
    if (step(&ip, -1)) bad += !agrees(&ip);
    ip = last;
    if (step(&ip, +1)) bad += !agrees(&ip);
    /* one more step out, and a step in from each edge */
    ip = first;
    if (step(&ip, +1)) bad += !agrees(&ip);
    ip = last;
    if (step(&ip, -1)) bad += !agrees(&ip);
  }
  CU_ASSERT_EQUAL(bad, 0);
}

static uint64_t rng_state = 0x9e3779b97f4a7c15ull;

static uint64_t rng(void) {
  rng_state ^= rng_state << 13;
  rng_state ^= rng_state >> 7;
  rng_state ^= rng_state << 17;
  return rng_state;
}

static void test_random_against_reference(void) {
  size_t bad = 0;
  for (int n = 0; n < 60000; n++) {
    egress__ip_t ip;
    uint64_t r = rng();
    memset(&ip, 0, sizeof ip);
    ip.family = (r & 1) ? 4 : 6;
    for (int i = 0; i < 16; i++) ip.bytes[i] = (uint8_t)rng();
    if (ip.family == 4) memset(ip.bytes + 4, 0, 12);
    if ((r >> 1) % 2 == 0) {
      /* inside a random block: keep the prefix bits, random host bits */
      egress__prefix_t p = prefix_of(expected[(r >> 8) % N_EXPECTED].cidr);
      ip.family = p.addr.family;
      if (ip.family == 4) memset(ip.bytes + 4, 0, 12);
      for (unsigned i = 0; i < p.len; i++) {
        uint8_t m = (uint8_t)(1u << (7 - i % 8));
        ip.bytes[i / 8] = (uint8_t)((ip.bytes[i / 8] & ~m) | (p.addr.bytes[i / 8] & m));
      }
    }
    bad += !agrees(&ip);
  }
  CU_ASSERT_EQUAL(bad, 0);
}

static void test_design_examples(void) {
  static const char *const special[] = {
    "169.254.169.254",
    "fd00:ec2::254",
    "10.1.2.3",
    "172.16.0.1",
    "172.31.255.255",
    "192.168.0.1",
    "192.168.255.255",
    "100.64.0.1",
    "127.0.0.1",
    "127.255.255.255",
    "0.0.0.0",
    "0.1.2.3",
    "255.255.255.255",
    "224.0.0.1",
    "239.255.255.255",
    "240.0.0.1",
    "192.0.2.1",
    "198.51.100.7",
    "203.0.113.9",
    "198.18.0.1",
    "198.19.255.255",
    "192.0.0.8",
    "192.0.0.170",
    "192.0.0.171",
    "192.88.99.1",
    "2001:db8::1",
    "3fff::1",
    "3fff:fff:ffff::1",
    "2001::1",
    "2001:0000:4136:e378:8000:63bf:3fff:fdd2",
    "2002:c000:221::1",
    "2002::",
    "2001:10::1",
    "2001:2::1",
    "2001:10::",
    "2001:1f:ffff:ffff:ffff:ffff:ffff:ffff",
    "2001:20::",
    "2001:20::1",
    "2001:2f:ffff:ffff:ffff:ffff:ffff:ffff",
    "2001:30::",
    "2001:30::1",
    "2001:3f:ffff:ffff:ffff:ffff:ffff:ffff",
    "::",
    "::1",
    "fc00::1",
    "fd12:3456::1",
    "fe80::1",
    "febf:ffff::1",
    "fec0::1",
    "feff::1",
    "ff02::1",
    "ff0e::1",
    "::1.2.3.4",
    "::ffff:0:1.2.3.4",
    "::ffff:1.2.3.4",
    "4000::1",
    "8000::1",
    "1000::1",
    "100::1",
    "100:0:0:1::1",
    "64:ff9b:1::1",
    "64:ff9b::8.8.8.8",
    "5f00::1",
    "64:ff9a::1",
    "1fff:ffff::1",
  };
  static const char *const global[] = {
    "8.8.8.8",
    "1.1.1.1",
    "192.0.0.9",
    "192.0.0.10",
    "192.31.196.1",
    "192.52.193.1",
    "192.175.48.1",
    "192.167.255.255",
    "192.169.0.0",
    "198.17.255.255",
    "198.20.0.0",
    "192.0.1.0",
    "100.63.255.255",
    "100.128.0.0",
    "11.0.0.0",
    "9.255.255.255",
    "223.255.255.255",
    "2606:4700::1111",
    "2001:4860:4860::8888",
    "2001:1::1",
    "2001:1::2",
    "2001:1::3",
    "2001:3::1",
    "2001:3:ffff:ffff:ffff:ffff:ffff:ffff",
    "2001:4:112::1",
    "2620:4f:8000::1",
    "2001:200::1",
    "2003::1",
    "3fff:1000::1",
    "2000::",
    "3fff:ffff::1",
  };
  for (size_t i = 0; i < sizeof special / sizeof special[0]; i++) {
    if (is_global(special[i])) fprintf(stderr, "%s classified global\n", special[i]);
    CU_ASSERT(!is_global(special[i]));
  }
  for (size_t i = 0; i < sizeof global / sizeof global[0]; i++) {
    if (!is_global(global[i])) fprintf(stderr, "%s classified special\n", global[i]);
    CU_ASSERT(is_global(global[i]));
  }
}

static void test_open_len(void) {
  static const struct {
    const char *addr;
    unsigned open_len;
  } cases[] = {
    { "10.1.2.3", 8 },
    { "192.0.0.170", 24 },
    { "192.0.0.8", 24 },
    { "192.0.0.1", 24 },
    { "127.0.0.1", 8 },
    { "192.168.1.1", 16 },
    { "169.254.169.254", 16 },
    { "0.0.0.0", 8 },
    { "255.255.255.255", 4 },
    { "224.0.0.1", 4 },
    { "198.18.5.5", 15 },
    { "100.64.0.1", 10 },
    { "fe80::1", 10 },
    { "fd00:ec2::254", 7 },
    { "::1", 96 },
    { "::", 96 },
    { "::1.2.3.4", 96 },
    { "4000::1", 2 },
    { "8000::1", 1 },
    { "1000::1", 3 },
    { "2001:db8::1", 32 },
    { "2001:2::1", 23 },
    { "2001::1", 23 },
    { "2002::1", 16 },
    { "ff02::1", 8 },
    { "100:0:0:1::1", 64 },
    { "64:ff9b:1::1", 48 },
    { "2001:20::1", 23 },
    { "2001:3f::1", 23 },
    { "8.8.8.8", 0 },
    { "192.0.0.9", 0 },
    { "2001:1::1", 0 },
    { "64:ff9b::1", 96 },
    { "2606:4700::1111", 0 },
  };
  for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
    egress__special_info_t info = classify(cases[i].addr);
    if (info.open_len != cases[i].open_len)
      fprintf(stderr, "%s: open_len %u, want %u\n", cases[i].addr, info.open_len, cases[i].open_len);
    CU_ASSERT_EQUAL(info.open_len, cases[i].open_len);
  }
}

/* A rule opens a special address iff its prefix length >= open_len; check
 * that every such rule lies inside a non-global block (never wider), so
 * "0.0.0.0/0" or "::/0" never opens special space. */
static void test_open_len_means_inside(void) {
  for (size_t i = 0; i < N_EXPECTED; i++) {
    egress__prefix_t p = prefix_of(expected[i].cidr);
    egress__ip_t ips[2] = { p.addr, last_of(&p) };
    for (int k = 0; k < 2; k++) {
      egress__special_info_t info;
      egress__special_classify(&ips[k], &info);
      if (info.global) {
        CU_ASSERT_EQUAL(info.open_len, 0);
        continue;
      }
      CU_ASSERT(info.open_len > 0);
      CU_ASSERT(info.open_len <= bits_of(ips[k].family));
      /* the rule of exactly open_len around the address is a listed block */
      bool listed = false;
      for (size_t j = 0; j < N_EXPECTED; j++) {
        egress__prefix_t q = prefix_of(expected[j].cidr);
        if (q.len == info.open_len && !expected[j].global && contains(&q, &ips[k])) listed = true;
      }
      CU_ASSERT(listed);
    }
  }
}

static void test_hostile_input(void) {
  egress__special_info_t info;
  egress__ip_t ip;

  /* unknown families: never global, nothing opens them */
  for (int fam = 0; fam < 256; fam++) {
    if (fam == 4 || fam == 6) continue;
    memset(&ip, 0, sizeof ip);
    ip.family = (uint8_t)fam;
    memset(&info, 0, sizeof info);
    info.global = true;
    egress__special_classify(&ip, &info);
    CU_ASSERT(!info.global);
    CU_ASSERT_EQUAL(info.open_len, UINT8_MAX);
    CU_ASSERT_PTR_NULL(info.block);
  }
  memset(&info, 0, sizeof info);
  info.global = true;
  egress__special_classify(NULL, &info);
  CU_ASSERT(!info.global);

  /* stray bytes after an IPv4 address do not change its class */
  ip = ip_of("10.1.2.3");
  memset(ip.bytes + 4, 0xff, 12);
  egress__special_classify(&ip, &info);
  CU_ASSERT(!info.global);
  CU_ASSERT_EQUAL(info.open_len, 8);
  ip = ip_of("8.8.8.8");
  memset(ip.bytes + 4, 0xff, 12);
  egress__special_classify(&ip, &info);
  CU_ASSERT(info.global);
  ip = ip_of("255.255.255.255");
  memset(ip.bytes + 4, 0xff, 12);
  egress__special_classify(&ip, &info);
  CU_ASSERT(!info.global);
}

/* Every IPv6 address outside 2000::/3 is covered, and none is global there,
 * not even the NAT64 prefix 64:ff9b::/96 that the registry marks reachable. */
static void test_outside_2000_3(void) {
  size_t bad = 0;
  for (int n = 0; n < 20000; n++) {
    egress__ip_t ip;
    egress__special_info_t info;
    memset(&ip, 0, sizeof ip);
    ip.family = 6;
    for (int i = 0; i < 16; i++) ip.bytes[i] = (uint8_t)rng();
    if ((ip.bytes[0] & 0xe0) == 0x20) ip.bytes[0] ^= 0x80;
    if (n % 4 == 0) /* near the NAT64 prefix */
      memcpy(ip.bytes, "\x00\x64\xff\x9b\x00\x00\x00\x00\x00\x00", 8 + (n % 3));
    egress__special_classify(&ip, &info);
    CU_ASSERT_PTR_NOT_NULL(info.block);
    if (info.global) bad++;
  }
  CU_ASSERT_EQUAL(bad, 0);
}

/* ------------------------------------------------------------------------ */
/* embedded IPv4                                                             */
/* ------------------------------------------------------------------------ */

static size_t embedded(const char *v6, const egress__prefix_t *pref, size_t n, char out[2][16]) {
  egress__ip_t ip = ip_of(v6), res[2];
  size_t k;
  memset(res, 0xa5, sizeof res);
  k = egress__embedded_ipv4(&ip, pref, n, res);
  CU_ASSERT(k <= 2);
  for (size_t i = 0; i < k && i < 2; i++) {
    CU_ASSERT_EQUAL(res[i].family, 4);
    for (int b = 4; b < 16; b++) CU_ASSERT_EQUAL(res[i].bytes[b], 0);
    inet_ntop(AF_INET, res[i].bytes, out[i], 16);
  }
  return k;
}

static void expect_one(const char *v6, const egress__prefix_t *pref, size_t n, const char *v4) {
  char out[2][16];
  size_t k = embedded(v6, pref, n, out);
  if (k != 1 || strcmp(out[0], v4) != 0)
    fprintf(stderr, "%s: got %zu (%s), want %s\n", v6, k, k ? out[0] : "-", v4);
  CU_ASSERT_EQUAL(k, 1);
  if (k == 1) CU_ASSERT_STRING_EQUAL(out[0], v4);
}

static void expect_none(const char *v6, const egress__prefix_t *pref, size_t n) {
  char out[2][16];
  size_t k = embedded(v6, pref, n, out);
  if (k != 0) fprintf(stderr, "%s: decoded %zu addresses, want none\n", v6, k);
  CU_ASSERT_EQUAL(k, 0);
}

/* RFC 6052 section 2.4, the 192.0.2.33 table. */
static void test_rfc6052_vectors(void) {
  static const struct {
    const char *prefix, *v6;
  } vec[] = {
    { "2001:db8::/32", "2001:db8:c000:221::" },
    { "2001:db8:100::/40", "2001:db8:1c0:2:21::" },
    { "2001:db8:122::/48", "2001:db8:122:c000:2:2100::" },
    { "2001:db8:122:300::/56", "2001:db8:122:3c0:0:221::" },
    { "2001:db8:122:344::/64", "2001:db8:122:344:c0:2:2100::" },
    { "2001:db8:122:344::/96", "2001:db8:122:344::192.0.2.33" },
  };
  for (size_t i = 0; i < sizeof vec / sizeof vec[0]; i++) {
    egress__prefix_t p = prefix_of(vec[i].prefix);
    expect_one(vec[i].v6, &p, 1, "192.0.2.33");
    /* not configured: nothing decoded */
    expect_none(vec[i].v6, NULL, 0);
  }
  /* well-known prefixes need no configuration */
  expect_one("64:ff9b::192.0.2.33", NULL, 0, "192.0.2.33");
  expect_one("64:ff9b::7f00:1", NULL, 0, "127.0.0.1");
  expect_one("64:ff9b::a9fe:a9fe", NULL, 0, "169.254.169.254");
  /* 64:ff9b:1::/48 uses the /48 layout (u-octet skipped) */
  expect_one("64:ff9b:1:c000:2:2100::", NULL, 0, "192.0.2.33");
  expect_one("64:ff9b:1:7f00:0:100::", NULL, 0, "127.0.0.1");
  /* a set u-octet or suffix does not hide the address */
  expect_one("64:ff9b:1:c000:ff02:21ff:ffff:ffff", NULL, 0, "192.0.2.33");
  /* near misses of the well-known prefixes */
  expect_none("64:ff9b:0:0:0:1:7f00:1", NULL, 0);
  expect_none("64:ff9a::7f00:1", NULL, 0);
  expect_none("64:ff9b:2::7f00:1", NULL, 0);
  expect_none("65:ff9b::7f00:1", NULL, 0);
}

static void test_pref64_layouts_roundtrip(void) {
  static const uint8_t lens[] = { 32, 40, 48, 56, 64, 96 };
  for (size_t li = 0; li < sizeof lens / sizeof lens[0]; li++) {
    for (int n = 0; n < 500; n++) {
      egress__prefix_t p;
      egress__ip_t ip, res[2];
      uint8_t v4[4];
      size_t pos, k;

      memset(&p, 0, sizeof p);
      p.addr.family = 6;
      p.len = lens[li];
      /* a prefix outside the well-known ones */
      p.addr.bytes[0] = 0x2a;
      for (unsigned i = 1; i < p.len / 8u; i++) p.addr.bytes[i] = (uint8_t)rng();
      ip = p.addr;
      for (int i = 0; i < 4; i++) v4[i] = (uint8_t)rng();
      pos = p.len / 8u;
      for (int i = 0; i < 4; i++) {
        if (pos == 8) pos++;
        ip.bytes[pos++] = v4[i];
      }
      k = egress__embedded_ipv4(&ip, &p, 1, res);
      CU_ASSERT_EQUAL_FATAL(k, 1);
      CU_ASSERT(memcmp(res[0].bytes, v4, 4) == 0);
      /* an address just outside the prefix decodes nothing */
      ip.bytes[p.len / 8u - 1] ^= 0x01;
      CU_ASSERT_EQUAL(egress__embedded_ipv4(&ip, &p, 1, res), 0);
    }
  }
}

static void test_pref64_invalid_ignored(void) {
  egress__prefix_t bad[4];
  bad[0] = prefix_of("2001:db8::/36"); /* not an RFC 6052 length */
  bad[1] = prefix_of("2001:db8::/128");
  bad[2] = prefix_of("2001:db8::/0");
  bad[3] = prefix_of("10.0.0.0/8"); /* wrong family */
  expect_none("2001:db8:c000:221::", bad, 4);
  expect_none("2001:db8::a00:1", bad, 4);
  /* a duplicate of the well-known prefix decodes once */
  egress__prefix_t dup = prefix_of("64:ff9b::/96");
  expect_one("64:ff9b::192.0.2.33", &dup, 1, "192.0.2.33");
  /* several configured prefixes: the one containing the address decodes */
  egress__prefix_t many[3];
  many[0] = prefix_of("2001:db8:aaaa::/48");
  many[1] = prefix_of("2001:db8:122:344::/96");
  many[2] = prefix_of("2001:db8:bbbb::/48");
  expect_one("2001:db8:122:344::a9fe:a9fe", many, 3, "169.254.169.254");
  /* IPv4 input decodes nothing */
  char out[2][16];
  egress__ip_t v4 = ip_of("192.0.2.33"), res[2];
  CU_ASSERT_EQUAL(egress__embedded_ipv4(&v4, many, 3, res), 0);
  CU_ASSERT_EQUAL(egress__embedded_ipv4(NULL, many, 3, res), 0);
  /* IPv4-mapped and IPv4-compatible are not decoded here */
  CU_ASSERT_EQUAL(embedded("::ffff:127.0.0.1", NULL, 0, out), 0);
  CU_ASSERT_EQUAL(embedded("::127.0.0.1", NULL, 0, out), 0);
}

static void test_6to4(void) {
  expect_one("2002:c000:221::1", NULL, 0, "192.0.2.33");
  expect_one("2002:7f00:1::", NULL, 0, "127.0.0.1");
  expect_one("2002:a00:1:ffff:ffff:ffff:ffff:ffff", NULL, 0, "10.0.0.1");
  expect_one("2002:808:808::1", NULL, 0, "8.8.8.8");
  expect_one("2002::", NULL, 0, "0.0.0.0");
  expect_none("2003:7f00:1::", NULL, 0);
  expect_none("2012:7f00:1::", NULL, 0);
}

static void test_teredo(void) {
  char out[2][16];
  size_t k;

  /* RFC 4380 example */
  k = embedded("2001:0000:4136:e378:8000:63bf:3fff:fdd2", NULL, 0, out);
  CU_ASSERT_EQUAL_FATAL(k, 2);
  CU_ASSERT_STRING_EQUAL(out[0], "65.54.227.120");
  CU_ASSERT_STRING_EQUAL(out[1], "192.0.2.45");
  /* client obfuscation hides loopback; server in private space */
  k = embedded("2001:0:a00:1::80ff:fffe", NULL, 0, out);
  CU_ASSERT_EQUAL_FATAL(k, 2);
  CU_ASSERT_STRING_EQUAL(out[0], "10.0.0.1");
  CU_ASSERT_STRING_EQUAL(out[1], "127.0.0.1");
  /* same server and client: reported once */
  k = embedded("2001:0:808:808::f7f7:f7f7", NULL, 0, out);
  CU_ASSERT_EQUAL(k, 1);
  CU_ASSERT_STRING_EQUAL(out[0], "8.8.8.8");
  /* inside 2001::/23 but not Teredo */
  expect_none("2001:1::1", NULL, 0);
  expect_none("2001:db8:7f00:1::", NULL, 0);
  expect_none("2001:100:7f00:1::", NULL, 0);
}

/* The first-16-bit bitmap shortcut must answer exactly as the full table
 * search: every /16 that starts or ends a block, its neighbours, and random
 * addresses in both families. */
static void expect_same(const egress__ip_t *ip, int *bad) {
  egress__special_info_t fast, slow;
  egress__special_classify(ip, &fast);
  egress__special_classify_slow(ip, &slow);
  if (fast.global != slow.global || fast.block != slow.block || fast.open_len != slow.open_len) (*bad)++;
}

static void test_shortcut_matches_table(void) {
  int bad = 0;
  unsigned long long seed = 0x9e3779b97f4a7c15ULL;
  for (size_t i = 0; i < egress__special_block_count; i++) {
    const egress__prefix_t *p = &egress__special_blocks[i].prefix;
    for (int delta = -2; delta <= 2; delta++) {
      egress__ip_t ip = p->addr;
      unsigned v = ((unsigned)ip.bytes[0] << 8 | ip.bytes[1]) + (unsigned)(delta + 65536);
      ip.bytes[0] = (uint8_t)(v >> 8);
      ip.bytes[1] = (uint8_t)v;
      expect_same(&ip, &bad);
      ip.bytes[ip.family == 6 ? 15 : 3] ^= 0xff;
      expect_same(&ip, &bad);
    }
  }
  for (int i = 0; i < 200000; i++) {
    egress__ip_t ip;
    memset(&ip, 0, sizeof ip);
    ip.family = (i & 1) ? 6 : 4;
    for (int b = 0; b < (ip.family == 6 ? 16 : 4); b++) {
      seed = seed * 6364136223846793005ULL + 1442695040888963407ULL;
      ip.bytes[b] = (uint8_t)(seed >> 56);
    }
    expect_same(&ip, &bad);
  }
  CU_ASSERT_EQUAL(bad, 0);
}

static CU_TestInfo table_tests[] = {
  { "table rows well formed and sorted", test_table_well_formed },
  { "table holds exactly the registry and rule blocks", test_table_matches_registry },
  { "version string", test_version },
  CU_TEST_INFO_NULL,
};

static CU_TestInfo classify_tests[] = {
  { "edges of every block", test_block_edges },
  { "random addresses against reference", test_random_against_reference },
  { "documented examples", test_design_examples },
  { "open_len values", test_open_len },
  { "open_len means inside the range", test_open_len_means_inside },
  { "hostile input", test_hostile_input },
  { "everything outside 2000::/3", test_outside_2000_3 },
  { "bitmap shortcut answers as the full table", test_shortcut_matches_table },
  CU_TEST_INFO_NULL,
};

static CU_TestInfo embedded_tests[] = {
  { "RFC 6052 vectors", test_rfc6052_vectors },
  { "Pref64 layouts round trip", test_pref64_layouts_roundtrip },
  { "invalid and multiple Pref64", test_pref64_invalid_ignored },
  { "6to4", test_6to4 },
  { "Teredo", test_teredo },
  CU_TEST_INFO_NULL,
};

int main(int argc, char **argv) {
  static const egress_test_suite_t suites[] = {
    { "special_table", NULL, NULL, table_tests },
    { "special_classify", NULL, NULL, classify_tests },
    { "special_embedded", NULL, NULL, embedded_tests },
    { NULL, NULL, NULL, NULL },
  };
  return egress_test_main(argc, argv, suites);
}
