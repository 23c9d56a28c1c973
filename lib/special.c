/*
 * Special-purpose addresses (docs/special-ranges.md): which addresses are global,
 * how far a CIDR rule must narrow to open a special one, and which IPv4
 * addresses hide inside an IPv6 one.
 *
 * The table itself is lib/special_table.c, generated from the IANA
 * registries by tools/gen_special_table.py and sorted by family, network
 * address and prefix length.  Classification runs for every address of every
 * check, so it allocates nothing, takes no lock and touches only the rows
 * whose network address is not above the address being classified.
 */
#include "egress_private.h"

#include <pthread.h>
#include <stdatomic.h>

#include <string.h>

const char *egress_special_ranges_version(void) { return egress__special_version; }

static bool family_ok(uint8_t family) { return family == 4 || family == 6; }

/* Prefix containment on raw bytes; kept here rather than borrowed from ip.c
 * so that the hot path is a handful of byte compares with no call out. */
static bool block_contains(const egress__prefix_t *p, const egress__ip_t *ip) {
  unsigned full, rem;

  if (p->addr.family != ip->family) return false;
  if (p->len > (ip->family == 4 ? 32 : 128)) return false;
  full = p->len / 8u;
  rem = p->len % 8u;
  /* Most rows already differ in the first byte: reject those without a call. */
  if (full > 0 && p->addr.bytes[0] != ip->bytes[0]) return false;
  if (full > 1 && memcmp(p->addr.bytes + 1, ip->bytes + 1, full - 1) != 0) return false;
  if (rem != 0) {
    uint8_t mask = (uint8_t)(0xffu << (8u - rem));
    if ((p->addr.bytes[full] ^ ip->bytes[full]) & mask) return false;
  }
  return true;
}

/* Orders a row's network address against an address of the same family;
 * IPv4 rows and addresses keep bytes 4..15 zero, so 16 bytes compare fine
 * for both families.  A different family orders by family number. */
static int key_cmp(const egress__ip_t *row, const egress__ip_t *ip) {
  if (row->family != ip->family) return row->family < ip->family ? -1 : 1;
  return memcmp(row->bytes, ip->bytes, sizeof row->bytes);
}

/* First row whose key is greater than @p ip (upper bound), and first row of
 * @p ip's family (lower bound of the family), by binary search. */
static void table_bounds(const egress__ip_t *ip, size_t *begin, size_t *end) {
  size_t lo = 0, hi = egress__special_block_count;

  while (lo < hi) {
    size_t mid = lo + (hi - lo) / 2;
    if (egress__special_blocks[mid].prefix.addr.family < ip->family)
      lo = mid + 1;
    else
      hi = mid;
  }
  *begin = lo;

  hi = egress__special_block_count;
  while (lo < hi) {
    size_t mid = lo + (hi - lo) / 2;
    if (key_cmp(&egress__special_blocks[mid].prefix.addr, ip) <= 0)
      lo = mid + 1;
    else
      hi = mid;
  }
  *end = lo;
}

/*
 * Most addresses a worker meets are ordinary global unicast.  A bitmap per
 * family over the first 16 bits says whether any block touches that /16;
 * when none does, the answer is "global, no block" without a table search.
 * Global blocks count too, so that info->block stays exact.  (One octet
 * would not do for IPv6: 2000::/3 rows cover the first octets of every
 * global unicast address.)
 */
static uint8_t prefix16_special[2][65536 / 8];
static pthread_once_t prefix16_once = PTHREAD_ONCE_INIT;
/* Set (release) once the table is built: a classification then costs no
 * call into libc's pthread_once. */
static atomic_bool prefix16_ready;

static void prefix16_init(void) {
  for (size_t i = 0; i < egress__special_block_count; i++) {
    const egress__special_block_t *b = &egress__special_blocks[i];
    int fam = b->prefix.addr.family == 6;
    unsigned first = (unsigned)b->prefix.addr.bytes[0] << 8 | b->prefix.addr.bytes[1];
    unsigned span = b->prefix.len >= 16 ? 1u : 1u << (16 - b->prefix.len);
    for (unsigned v = first; v < first + span && v < 65536; v++)
      prefix16_special[fam][v >> 3] |= (uint8_t)(1u << (v & 7));
  }
  atomic_store_explicit(&prefix16_ready, true, memory_order_release);
}

void egress__special_classify(const egress__ip_t *ip, egress__special_info_t *info) {
  if (!atomic_load_explicit(&prefix16_ready, memory_order_acquire))
    pthread_once(&prefix16_once, prefix16_init);
  if (ip != NULL && family_ok(ip->family)) {
    unsigned v = (unsigned)ip->bytes[0] << 8 | ip->bytes[1];
    if (!(prefix16_special[ip->family == 6][v >> 3] & (1u << (v & 7)))) {
      info->global = true;
      info->block = NULL;
      info->open_len = 0;
      return;
    }
  }
  egress__special_classify_slow(ip, info);
}

void egress__special_classify_slow(const egress__ip_t *ip, egress__special_info_t *info) {
  const egress__special_block_t *inner = NULL;     /* most specific */
  const egress__special_block_t *outer = NULL;     /* outermost real non-global */
  const egress__special_block_t *synthetic = NULL; /* outermost synthetic */
  size_t begin, end;

  info->global = false;
  info->block = NULL;
  /* An address of no known family is never global and no rule can open it. */
  info->open_len = UINT8_MAX;
  if (ip == NULL || !family_ok(ip->family)) return;

  /* Every block containing the address starts at or below it, so only rows
   * up to the upper bound can contain it.  In table order (network address,
   * then length) enclosing blocks come before the blocks they enclose: the
   * first hit of a kind is the outermost, the last hit the most specific. */
  table_bounds(ip, &begin, &end);
  for (size_t i = begin; i < end; i++) {
    const egress__special_block_t *b = &egress__special_blocks[i];

    if (!block_contains(&b->prefix, ip)) continue;
    inner = b;
    if (b->synthetic) {
      if (synthetic == NULL) synthetic = b;
    } else if (!b->global && outer == NULL) {
      outer = b;
    }
  }

  info->block = inner;
  /* No block: unlisted IPv4 is global; IPv6 outside 2000::/3 is covered by
   * the synthetic blocks, so an unlisted IPv6 address is global unicast. */
  info->global = inner == NULL || inner->global;
  if (info->global) {
    info->open_len = 0;
    return;
  }
  /* A rule opens the address only if it lies inside the widest special
   * range around it: naming 10.0.0.0/8 or narrower opens 10.1.2.3, a wider
   * rule such as 0.0.0.0/0 does not. */
  if (outer != NULL)
    info->open_len = outer->prefix.len;
  else if (synthetic != NULL)
    info->open_len = synthetic->prefix.len;
  else
    info->open_len = inner->prefix.len;
}

/* ------------------------------------------------------------------------ */
/* Embedded IPv4                                                             */
/* ------------------------------------------------------------------------ */

static const uint8_t nat64_wkp[12] = { 0x00, 0x64, 0xff, 0x9b };              /* 64:ff9b::/96 */
static const uint8_t nat64_local[6] = { 0x00, 0x64, 0xff, 0x9b, 0x00, 0x01 }; /* 64:ff9b:1::/48 */

static bool is_rfc6052_len(uint8_t len) {
  return len == 32 || len == 40 || len == 48 || len == 56 || len == 64 || len == 96;
}

/* RFC 6052 section 2.2: the 32 IPv4 bits follow the prefix, stepping over
 * bits 64..71 (the "u" octet, byte 8), which every layout leaves out. */
static void rfc6052_extract(const egress__ip_t *ip6, uint8_t len, egress__ip_t *out) {
  size_t pos = len / 8u;

  memset(out, 0, sizeof *out);
  out->family = 4;
  for (size_t i = 0; i < 4; i++) {
    if (pos == 8) pos++;
    out->bytes[i] = ip6->bytes[pos++];
  }
}

static void set_v4(egress__ip_t *out, const uint8_t *b, uint8_t xor) {
  memset(out, 0, sizeof *out);
  out->family = 4;
  for (size_t i = 0; i < 4; i++) out->bytes[i] = (uint8_t)(b[i] ^ xor);
}

/* Adds @p v4 unless already present; returns the new count. */
static size_t add_unique(egress__ip_t out[2], size_t n, const egress__ip_t *v4) {
  for (size_t i = 0; i < n; i++)
    if (memcmp(out[i].bytes, v4->bytes, 4) == 0) return n;
  if (n >= 2) return n;
  out[n] = *v4;
  return n + 1;
}

size_t egress__embedded_ipv4(const egress__ip_t *ip6, const egress__prefix_t *pref64, size_t n_pref64,
                             egress__ip_t out[2]) {
  egress__ip_t v4;
  size_t n = 0;

  if (ip6 == NULL || out == NULL || ip6->family != 6) return 0;

  /* The well-known and registry prefixes are disjoint, so at most one of
   * these matches; Teredo is the only one carrying two addresses. */
  if (ip6->bytes[0] == 0x20 && ip6->bytes[1] == 0x01 && ip6->bytes[2] == 0 && ip6->bytes[3] == 0) {
    /* RFC 4380 section 4: server in bits 32..63, client obfuscated (bits
     * inverted) in the last 32 bits. */
    set_v4(&v4, &ip6->bytes[4], 0x00);
    n = add_unique(out, n, &v4);
    set_v4(&v4, &ip6->bytes[12], 0xff);
    n = add_unique(out, n, &v4);
  } else if (ip6->bytes[0] == 0x20 && ip6->bytes[1] == 0x02) {
    /* RFC 3056: 2002:V4ADDR::/48. */
    set_v4(&v4, &ip6->bytes[2], 0x00);
    n = add_unique(out, n, &v4);
  } else if (memcmp(ip6->bytes, nat64_wkp, sizeof nat64_wkp) == 0) {
    rfc6052_extract(ip6, 96, &v4);
    n = add_unique(out, n, &v4);
  } else if (memcmp(ip6->bytes, nat64_local, sizeof nat64_local) == 0) {
    rfc6052_extract(ip6, 48, &v4);
    n = add_unique(out, n, &v4);
  }

  /* Operator Pref64 prefixes.  The options code should reject ones that
   * overlap the prefixes above or each other; if they do anyway, the first
   * two distinct addresses win (out[] has two slots). */
  for (size_t i = 0; pref64 != NULL && i < n_pref64; i++) {
    if (pref64[i].addr.family != 6 || !is_rfc6052_len(pref64[i].len)) continue;
    if (!block_contains(&pref64[i], ip6)) continue;
    rfc6052_extract(ip6, pref64[i].len, &v4);
    n = add_unique(out, n, &v4);
  }
  return n;
}
