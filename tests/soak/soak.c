/*
 * libegress soak test.  Run with tests/soak/run.sh; see README.md.
 *
 * Two worker threads drive one checker with a fixed number of checks drawn
 * from a mix of zone names, IP literals, hostile hosts, URLs and ports, while
 * a swapper thread replaces the checker's policy every few hundred
 * microseconds and an in-process loopback DNS responder serves a zone whose
 * names carry faults (rebinding answers, NXDOMAIN, SERVFAIL, REFUSED, drops,
 * delays, CNAMEs to forbidden addresses, truncation with TCP fallback,
 * malformed replies).
 *
 * Each name's DNS behaviour is fixed for the whole run and no delay is near
 * the timeout, so a decision is a function of (policy, input, options) alone;
 * the decision names its policy by digest.  After the run every decision is
 * compared with a reference made by a fresh, single-threaded checker with
 * that policy and the cache off: verdict, outcome, reason, canonical host,
 * matched rule, and every address with its verdict and reason.  The JSON
 * Lines event file must hold exactly one event per check, each parsable, with
 * unique ids and the decision's outcome, reason and policy digest.  RSS is
 * sampled after warm-up and must stay within a bound.
 *
 * The run has two phases of half the checks each: the default cache (4096
 * names) with deny-if-any, then a 16-name cache (constant eviction) with
 * mixed answers filtered.
 *
 * Usage: egress-soak [--checks N] [--seed S] [--threads T] [--events-dir DIR]
 *                    [--keep-events] [--rss-bound-mb M] [--timeout-ms MS]
 *                    [--skew-reference]
 * Exit status 0 only when every verification passed.
 */
#ifndef _GNU_SOURCE
#  define _GNU_SOURCE /* mkdtemp, getline */
#endif
#include "egress.h"
#include "responder.h"

#include <cjson/cJSON.h>
#include <errno.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#if defined(__SANITIZE_ADDRESS__)
#  define SOAK_ASAN 1
#elif defined(__has_feature)
#  if __has_feature(address_sanitizer)
#    define SOAK_ASAN 1
#  endif
#endif
#ifndef SOAK_ASAN
#  define SOAK_ASAN 0
#endif

#define NPHASES    2
#define NPOLICIES  4
#define MAXTHREADS 16
#define NSAMPLES   5
#define MAXPROBES  4096
#define TTL        60

static void die(const char *what) {
  fprintf(stderr, "egress-soak: %s\n", what);
  exit(2);
}

static double now_s(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static uint64_t rng_next(uint64_t *s) {
  /* xorshift64*: cheap, and good enough to pick probes. */
  uint64_t x = *s;
  x ^= x >> 12;
  x ^= x << 25;
  x ^= x >> 27;
  *s = x;
  return x * 0x2545F4914F6CDD1DULL;
}

static uint64_t fnv(uint64_t h, const char *s) {
  for (; s && *s; s++) h = (h ^ (uint8_t)*s) * 0x100000001b3ULL;
  return (h ^ 0xff) * 0x100000001b3ULL; /* field separator */
}

static long rss_kb(void) {
  FILE *f = fopen("/proc/self/status", "r");
  char line[256];
  long kb = -1;
  if (!f) return -1;
  while (fgets(line, sizeof line, f))
    if (!strncmp(line, "VmRSS:", 6)) {
      kb = strtol(line + 6, NULL, 10);
      break;
    }
  fclose(f);
  return kb;
}

/* ------------------------------------------------------------------------ */
/* Zone                                                                      */
/* ------------------------------------------------------------------------ */

/* Probe classes weigh how often a probe is drawn: timeouts are rare because
 * each costs the whole DNS budget of a worker. */
enum { W_COMMON = 100, W_FAULT = 40, W_SLOW = 5, W_DROP = 1 };

typedef struct hostdef {
  char host[300];
  int weight;
} hostdef_t;

static hostdef_t hosts[1024];
static size_t nhosts;

static void add_host(const char *h, int weight) {
  if (nhosts == sizeof hosts / sizeof hosts[0] || strlen(h) >= sizeof hosts[0].host) die("host table full");
  snprintf(hosts[nhosts].host, sizeof hosts[0].host, "%s", h);
  hosts[nhosts++].weight = weight;
}

static void must(int rc, const char *what) {
  if (rc != 0) {
    fprintf(stderr, "egress-soak: responder refused %s\n", what);
    exit(2);
  }
}

/* Addresses that rebinding names resolve to, one pattern per name. */
static const struct {
  const char *a1, *a2, *aaaa;
} rebind[] = {
  { "127.0.0.1", NULL, NULL },
  { "10.0.0.5", NULL, NULL },
  { "169.254.169.254", NULL, NULL },
  { NULL, NULL, "::1" },
  { "93.184.216.34", "127.0.0.1", NULL },
  { "93.184.216.34", NULL, "fd00::1" },
  { NULL, NULL, "::ffff:127.0.0.1" },
  { NULL, NULL, "64:ff9b::a9fe:a9fe" },
  { NULL, NULL, "2002:7f00:1::1" },
  { "0.0.0.0", NULL, NULL },
  { "100.64.0.1", NULL, NULL },
  { NULL, NULL, "fe80::1" },
  { "192.168.1.1", "8.8.8.8", NULL },
  { NULL, NULL, "2001:0:4136:e378:8000:63bf:3fff:fdd2" },
  { "10.1.2.3", NULL, "2606:2800:220:1::9" },
};

static void build_zone(egress_dns_responder_t *r) {
  char n[128], a[64];
  /* Public names, some dual-stack. */
  for (int i = 0; i < 60; i++) {
    snprintf(n, sizeof n, "pub-%d.pub.test", i);
    snprintf(a, sizeof a, "93.184.216.%d", i + 1);
    must(egress_dns_add_a(r, n, a, TTL), n);
    if (i % 3 == 0) {
      snprintf(a, sizeof a, "2606:2800:220:1::%x", i + 1);
      must(egress_dns_add_aaaa(r, n, a, TTL), n);
    }
    add_host(n, W_COMMON);
  }
  for (int i = 0; i < 10; i++) {
    snprintf(n, sizeof n, "l%d.svc-%d.deep.test", i % 3, i);
    snprintf(a, sizeof a, "8.8.%d.%d", i, i + 10);
    must(egress_dns_add_a(r, n, a, TTL), n);
    add_host(n, W_COMMON);
  }
  for (int i = 0; i < 20; i++) {
    snprintf(n, sizeof n, "node-%d.re.test", i);
    snprintf(a, sizeof a, "151.101.%d.1", i);
    must(egress_dns_add_a(r, n, a, TTL), n);
    add_host(n, W_COMMON);
  }
  /* Private database hosts: opened only by 10.0.0.0/8:5432 in policy A. */
  for (int i = 0; i < 10; i++) {
    snprintf(n, sizeof n, "db-%d.db.test", i);
    snprintf(a, sizeof a, "10.1.0.%d", i + 1);
    must(egress_dns_add_a(r, n, a, TTL), n);
    add_host(n, W_COMMON);
  }
  /* Rebinding to loopback, private, metadata, embedded IPv4, mixes. */
  for (int i = 0; i < 30; i++) {
    size_t k = (size_t)i % (sizeof rebind / sizeof rebind[0]);
    snprintf(n, sizeof n, "rb-%d.pub.test", i);
    if (rebind[k].a1) must(egress_dns_add_a(r, n, rebind[k].a1, TTL), n);
    if (rebind[k].a2) must(egress_dns_add_a(r, n, rebind[k].a2, TTL), n);
    if (rebind[k].aaaa) must(egress_dns_add_aaaa(r, n, rebind[k].aaaa, TTL), n);
    add_host(n, W_COMMON);
  }
  for (int i = 0; i < 15; i++) {
    snprintf(n, sizeof n, "nx-%d.pub.test", i);
    must(egress_dns_set_rcode(r, n, EGRESS_DNS_NXDOMAIN), n);
    add_host(n, W_FAULT);
  }
  for (int i = 0; i < 10; i++) { /* never scripted: the default NXDOMAIN */
    snprintf(n, sizeof n, "unknown-%d.pub.test", i);
    add_host(n, W_FAULT);
  }
  for (int i = 0; i < 5; i++) {
    snprintf(n, sizeof n, "nodata-%d.pub.test", i);
    must(egress_dns_set_rcode(r, n, EGRESS_DNS_NOERROR), n);
    add_host(n, W_FAULT);
  }
  for (int i = 0; i < 10; i++) {
    snprintf(n, sizeof n, "sf-%d.pub.test", i);
    must(egress_dns_set_rcode(r, n, EGRESS_DNS_SERVFAIL), n);
    add_host(n, W_FAULT);
  }
  for (int i = 0; i < 5; i++) {
    snprintf(n, sizeof n, "rf-%d.pub.test", i);
    must(egress_dns_set_rcode(r, n, EGRESS_DNS_REFUSED), n);
    add_host(n, W_FAULT);
  }
  /* Malformed replies that fail at once (not the ones that time out). */
  static const int malformed[] = { EGRESS_DNS_MALFORMED_TRUNCATED_RR, EGRESS_DNS_MALFORMED_LOOP,
                                   EGRESS_DNS_MALFORMED_BAD_RDLEN, EGRESS_DNS_MALFORMED_BAD_LABEL };
  for (int i = 0; i < 4; i++) {
    snprintf(n, sizeof n, "mal-%d.pub.test", i);
    must(egress_dns_add_a(r, n, "93.184.216.200", TTL), n);
    must(egress_dns_set_malformed(r, n, malformed[i]), n);
    add_host(n, W_FAULT);
  }
  for (int i = 0; i < 3; i++) {
    snprintf(n, sizeof n, "drop-%d.pub.test", i);
    must(egress_dns_set_drop(r, n, true), n);
    add_host(n, W_DROP);
  }
  /* Slow, far inside the budget (20 ms against 125 ms per try). */
  for (int i = 0; i < 5; i++) {
    snprintf(n, sizeof n, "slow-%d.pub.test", i);
    snprintf(a, sizeof a, "93.184.217.%d", i + 1);
    must(egress_dns_add_a(r, n, a, TTL), n);
    must(egress_dns_set_delay_ms(r, n, 20), n);
    add_host(n, W_SLOW);
  }
  /* CNAME chains: to public names, to metadata, to loopback, to nowhere, a loop. */
  must(egress_dns_add_a(r, "meta.int.test", "169.254.169.254", TTL), "meta");
  must(egress_dns_add_a(r, "lo.int.test", "127.0.0.1", TTL), "lo");
  must(egress_dns_add_aaaa(r, "lo6.int.test", "::1", TTL), "lo6");
  must(egress_dns_add_cname(r, "loop-a.int.test", "loop-b.int.test", TTL), "loop");
  must(egress_dns_add_cname(r, "loop-b.int.test", "loop-a.int.test", TTL), "loop");
  static const char *cname_targets[] = { "pub-7.pub.test", "meta.int.test", "lo.int.test",
                                         "lo6.int.test",   "gone.int.test", "loop-a.int.test" };
  for (int i = 0; i < 12; i++) {
    snprintf(n, sizeof n, "cn-%d.pub.test", i);
    must(egress_dns_add_cname(r, n, cname_targets[i % 6], TTL), n);
    add_host(n, W_COMMON);
  }
  /* UDP says TC=1; the whole answer comes over TCP. */
  for (int i = 0; i < 10; i++) {
    snprintf(n, sizeof n, "tc-%d.pub.test", i);
    snprintf(a, sizeof a, "93.184.218.%d", i + 1);
    must(egress_dns_add_a(r, n, a, TTL), n);
    if (i % 3 == 2) must(egress_dns_add_a(r, n, "10.2.3.4", TTL), n);
    if (i % 2) must(egress_dns_add_aaaa(r, n, "2606:2800:220:2::1", TTL), n);
    must(egress_dns_set_truncate(r, n, true), n);
    add_host(n, W_FAULT);
  }
  must(egress_dns_add_a(r, "url.test", "93.184.219.1", TTL), "url");
  must(egress_dns_add_a(r, "api.svc.test", "93.184.219.2", TTL), "api");
  must(egress_dns_add_aaaa(r, "api.svc.test", "2606:2800:220:3::2", TTL), "api");
  must(egress_dns_add_a(r, "blocked.pub.test", "93.184.219.3", TTL), "blocked");
  must(egress_dns_add_a(r, "a.evil.test", "93.184.219.4", TTL), "evil");
  must(egress_dns_add_a(r, "xn--bcher-kva.pub.test", "93.184.219.5", TTL), "idn");
  static const char *named[] = { "url.test",
                                 "api.svc.test",
                                 "blocked.pub.test",
                                 "a.evil.test",
                                 "b.a.evil.test",
                                 "xn--bcher-kva.pub.test",
                                 "b\xc3\xbc"
                                 "cher.pub.test",
                                 "B\xc3\x9c"
                                 "CHER.PUB.TEST",
                                 "PUB-3.Pub.Test.",
                                 "pub-4.pub.test.",
                                 "API.SVC.TEST",
                                 "localhost",
                                 "db.localhost",
                                 "pub.test",
                                 "x.deep.test",
                                 "not-listed.example",
                                 "_srv.pub.test",
                                 "node-x.re.test",
                                 "NODE-5.RE.TEST" };
  for (size_t i = 0; i < sizeof named / sizeof named[0]; i++) add_host(named[i], W_COMMON);

  /* IP literals: public, private, special, embedded IPv4 forms. */
  static const char *literals[] = { "8.8.8.8",
                                    "8.8.4.4",
                                    "1.1.1.1",
                                    "127.0.0.1",
                                    "127.0.0.1.",
                                    "10.1.2.3",
                                    "10.9.1.1",
                                    "169.254.169.254",
                                    "0.0.0.0",
                                    "255.255.255.255",
                                    "100.64.0.1",
                                    "192.0.0.9",
                                    "192.168.1.10",
                                    "203.0.113.5",
                                    "198.51.100.7",
                                    "93.184.216.34",
                                    "[::1]",
                                    "::1",
                                    "::ffff:127.0.0.1",
                                    "[::ffff:8.8.8.8]",
                                    "::ffff:10.1.2.3",
                                    "64:ff9b::a00:1",
                                    "64:ff9b::808:808",
                                    "2002:a00:1::1",
                                    "2002:808:808::1",
                                    "2001:4860:4860::8888",
                                    "[2001:4860:4860::8844]",
                                    "2001:db8::1",
                                    "fd00::1",
                                    "fd00:ec2::254",
                                    "fe80::1",
                                    "::",
                                    "2001:0:4136:e378:8000:63bf:3fff:fdd2",
                                    "[2606:2800:220:1::1]",
                                    "::127.0.0.1",
                                    "ff02::1" };
  for (size_t i = 0; i < sizeof literals / sizeof literals[0]; i++) add_host(literals[i], W_COMMON);

  /* Hosts that must be refused before any policy or DNS. */
  static const char *invalid[] = { "2130706433",
                                   "0x7f.1",
                                   "0177.0.0.1",
                                   "127.1",
                                   "0x7f000001",
                                   "foo.2.3.4",
                                   "203.0.113.08",
                                   "http://pub-1.pub.test",
                                   "pub-1.pub.test/x",
                                   "user@pub-1.pub.test",
                                   "pub-1.pub.test:443",
                                   "a b.pub.test",
                                   "",
                                   " ",
                                   "%70ub-1.pub.test",
                                   "pub-1\\.pub.test",
                                   "[127.0.0.1]",
                                   "fe80::1%eth0",
                                   "[fe80::1%25eth0]",
                                   "-bad.pub.test",
                                   "bad-.pub.test",
                                   "a..pub.test",
                                   "pub-1.pub.test..",
                                   ".pub-1.pub.test",
                                   "\xe2\x91\xa0\xe2\x91\xa1\xe2\x91\xa6.0.0.1",
                                   "pub-1.pub.test\x01",
                                   "\xff\xfe.pub.test",
                                   "xn--zz.pub.test",
                                   "[::1",
                                   "::1]",
                                   "1.2.3.4.5",
                                   "256.1.1.1",
                                   "1.1.1.01",
                                   "*.pub.test" };
  for (size_t i = 0; i < sizeof invalid / sizeof invalid[0]; i++) add_host(invalid[i], W_FAULT);
  char longlabel[80], longname[300];
  memset(longlabel, 'a', 64);
  snprintf(longlabel + 64, sizeof longlabel - 64, ".pub.test");
  add_host(longlabel, W_FAULT);
  size_t off = 0;
  while (off < 250) {
    memcpy(longname + off, "abcdefghi.", 10);
    off += 10;
  }
  snprintf(longname + off, sizeof longname - off, "pub.test");
  add_host(longname, W_FAULT);
}

/* ------------------------------------------------------------------------ */
/* Probes: one input (host and port, or URL) each                           */
/* ------------------------------------------------------------------------ */

typedef struct probe {
  const char *host; /* for a URL check: the URL */
  int32_t port;
  bool url;
  uint64_t cum; /* cumulative weight, for drawing */
} probe_t;

static probe_t probes[MAXPROBES];
static size_t nprobes;
static char url_store[64][200];

static void add_probe(const char *host, int32_t port, bool url, int weight) {
  if (nprobes == MAXPROBES) die("probe table full");
  probes[nprobes].host = host;
  probes[nprobes].port = port;
  probes[nprobes].url = url;
  probes[nprobes].cum = (nprobes ? probes[nprobes - 1].cum : 0) + (uint64_t)weight;
  nprobes++;
}

static void build_probes(uint64_t seed) {
  static const int32_t fixed[] = { 443, 80, 5432 };
  static const int32_t extra[] = { 8443, 22, 53, 0, 65535, 65536, -1, 1 };
  uint64_t s = seed | 1;
  for (size_t i = 0; i < nhosts; i++) {
    for (size_t k = 0; k < 3; k++) add_probe(hosts[i].host, fixed[k], false, hosts[i].weight);
    int32_t port = (rng_next(&s) % 4 == 0) ? extra[rng_next(&s) % 8] : (int32_t)(1 + rng_next(&s) % 65535);
    add_probe(hosts[i].host, port, false, hosts[i].weight);
  }
  static const char *urls[] = { "https://url.test/v1",
                                "https://url.test/v1/",
                                "https://url.test/v1/x/y",
                                "https://url.test/v10",
                                "https://url.test/v1/../admin",
                                "https://url.test/v1/%2e%2e/admin",
                                "https://url.test/v1//x",
                                "https://url.test/v1/a%2Fb",
                                "http://url.test/v2/a",
                                "http://url.test:80/v2",
                                "http://url.test/v1",
                                "https://url.test:8443/v1/x/z",
                                "https://url.test:8443/v1/y",
                                "https://URL.TEST/v1/ok",
                                "https://user@url.test/v1",
                                "ftp://url.test/v1",
                                "https://url.test/v1?q=1",
                                "https://url.test/v1#f",
                                "https://pub-2.pub.test/",
                                "https://pub-2.pub.test:80/",
                                "http://pub-2.pub.test/",
                                "https://rb-0.pub.test/",
                                "https://cn-1.pub.test/a",
                                "https://db-1.db.test:5432/",
                                "https://[::1]/",
                                "https://127.0.0.1/",
                                "https://8.8.8.8/",
                                "https://[2001:4860:4860::8888]/",
                                "https://10.1.2.3:5432/",
                                "https://2130706433/",
                                "https://api.svc.test",
                                "https://api.svc.test:444",
                                "https://url.test:0/v1",
                                "https://url.test:99999/v1",
                                "https:///v1",
                                "https://sf-1.pub.test/",
                                "https://nx-1.pub.test/",
                                "https://l1.svc-1.deep.test:9000/x" };
  for (size_t i = 0; i < sizeof urls / sizeof urls[0] && i < 64; i++) {
    snprintf(url_store[i], sizeof url_store[i], "%s", urls[i]);
    add_probe(url_store[i], 0, true, W_COMMON);
  }
}

static size_t draw_probe(uint64_t *s) {
  uint64_t x = rng_next(s) % probes[nprobes - 1].cum;
  size_t lo = 0, hi = nprobes - 1;
  while (lo < hi) {
    size_t mid = lo + (hi - lo) / 2;
    if (probes[mid].cum > x)
      hi = mid;
    else
      lo = mid + 1;
  }
  return lo;
}

/* ------------------------------------------------------------------------ */
/* Policies                                                                  */
/* ------------------------------------------------------------------------ */

static const char *pol_allow[NPOLICIES][16] = {
  { "*.pub.test", "*.pub.test:80", "**.deep.test:*", "re:^node-[0-9]+\\.re\\.test$", "*.db.test:5432",
    "10.0.0.0/8:5432", "https://url.test/v1", "http://url.test/v2", "api.svc.test:443", "8.8.8.0/24",
    "[2001:4860::]/32:443", "198.51.100.0/24:443", "100.64.0.0/10:443", NULL },
  { "*", "[fd00::]/8:*", "192.168.0.0/16:443", "0.0.0.0/0", "[2000::]/3:443", NULL },
  { "api.svc.test:443", "https://url.test:8443/v1/x", "pub-1.pub.test:1-65535",
    "re:^(rb|cn|tc|nx|sf)-[0-9]+\\.pub\\.test$", "2001:4860:4860::8888", "*.int.test", NULL },
  { NULL },
};
static const char *pol_deny[NPOLICIES][8] = {
  { "blocked.pub.test", "1.1.1.1", "10.9.0.0/16", "**.evil.test", NULL },
  { "**.deep.test", "8.8.4.4", "sf-0.pub.test:443", "rb-1.pub.test", NULL },
  { NULL },
  { "127.0.0.0/8", NULL },
};

static egress_policy_t *policies[NPOLICIES];

static size_t count_list(const char *const *l) {
  size_t n = 0;
  while (l[n]) n++;
  return n;
}

static void build_policies(void) {
  char err[EGRESS_ERRBUF_SIZE];
  for (int i = 0; i < NPOLICIES; i++) {
    if (egress_policy_from_entries(pol_allow[i], count_list(pol_allow[i]), pol_deny[i],
                                   count_list(pol_deny[i]), &policies[i], err, sizeof err) != EGRESS_OK) {
      fprintf(stderr, "egress-soak: policy %d: %s\n", i, err);
      exit(2);
    }
    for (int j = 0; j < i; j++)
      if (!strcmp(egress_policy_digest(policies[i]), egress_policy_digest(policies[j])))
        die("two policies share a digest");
  }
}

static int policy_index(const char *digest) {
  if (!digest) return -1;
  for (int i = 0; i < NPOLICIES; i++)
    if (!strcmp(digest, egress_policy_digest(policies[i]))) return i;
  return -1;
}

/* ------------------------------------------------------------------------ */
/* Decisions                                                                 */
/* ------------------------------------------------------------------------ */

typedef struct record {
  uint64_t sig;
  uint32_t probe;
  int8_t policy; /* -1: the decision named no known policy */
  uint8_t phase, verdict, outcome, reason, status, events;
} record_t;

/* Everything in a decision beyond verdict, outcome and reason that must not
 * depend on threads, cache or swaps: canonical host, matched rule, and every
 * address with its own verdict and reason (sorted: the order answers arrive
 * in may differ between a cached and a fresh lookup). */
static int cmp_str(const void *a, const void *b) {
  return strcmp(*(const char *const *)a, *(const char *const *)b);
}

static uint64_t decision_sig(const egress_decision_t *d, char *text, size_t textlen) {
  uint64_t h = 0xcbf29ce484222325ULL;
  char rule[64];
  h = fnv(h, egress_decision_host(d) ? egress_decision_host(d) : "(null)");
  if (egress_decision_has_rule(d))
    snprintf(rule, sizeof rule, "%s#%zu", egress_decision_rule_list(d) == EGRESS_LIST_DENY ? "deny" : "allow",
             egress_decision_rule_index(d));
  else
    snprintf(rule, sizeof rule, "-");
  h = fnv(h, rule);
  size_t n = egress_decision_address_count(d);
  char **a = n ? calloc(n, sizeof *a) : NULL;
  if (n && !a) die("out of memory");
  for (size_t i = 0; i < n; i++) {
    const char *addr = egress_decision_address(d, i);
    size_t len = (addr ? strlen(addr) : 6) + 48;
    if (!(a[i] = malloc(len))) die("out of memory");
    snprintf(a[i], len, "%s/%s/%s", addr ? addr : "(null)",
             egress_decision_address_verdict(d, i) == EGRESS_VERDICT_ALLOW ? "allow" : "deny",
             egress_reason_name(egress_decision_address_reason(d, i)));
  }
  if (n) qsort(a, n, sizeof *a, cmp_str);
  if (text) snprintf(text, textlen, "host=%s rule=%s addrs=", egress_decision_host(d), rule);
  for (size_t i = 0; i < n; i++) {
    h = fnv(h, a[i]);
    if (text) {
      size_t used = strlen(text);
      if (used < textlen) snprintf(text + used, textlen - used, "%s%s", i ? "," : "", a[i]);
    }
    free(a[i]);
  }
  free(a);
  return h;
}

/* ------------------------------------------------------------------------ */
/* The run                                                                   */
/* ------------------------------------------------------------------------ */

typedef struct run {
  egress_checker_t *checker;
  record_t *rec;
  size_t begin, end; /* global check indexes of this phase */
  atomic_size_t next;
  atomic_bool stop;
  size_t milestone[NSAMPLES];
  long rss[NSAMPLES]; /* shared across phases */
  atomic_ulong swaps;
  atomic_ulong bad_status;
  int phase;
  uint64_t seed;
} run_t;

static run_t g;

typedef struct worker {
  pthread_t tid;
  int id;
} worker_t;

static void *worker_main(void *arg) {
  worker_t *w = arg;
  uint64_t s = g.seed ^ (0x9E3779B97F4A7C15ULL * (uint64_t)(w->id + 1 + 17 * g.phase));
  egress_request_t *req = NULL;
  char corr[32];
  if (egress_request_new(&req) != EGRESS_OK) die("egress_request_new");
  if (egress_request_set(req, EGRESS_FIELD_RUN_ID, "soak") != EGRESS_OK) die("egress_request_set");
  for (;;) {
    size_t i = atomic_fetch_add(&g.next, 1);
    if (i >= g.end) break;
    for (int k = 0; k < NSAMPLES; k++)
      if (g.milestone[k] == i) g.rss[k] = rss_kb();
    size_t pi = draw_probe(&s);
    const probe_t *p = &probes[pi];
    snprintf(corr, sizeof corr, "%zu", i);
    if (egress_request_set(req, EGRESS_FIELD_CORRELATION_ID, corr) != EGRESS_OK) die("egress_request_set");
    egress_decision_t *d = NULL;
    egress_status_t st = p->url ? egress_check_url(g.checker, p->host, req, &d)
                                : egress_check_ex(g.checker, p->host, p->port, req, &d);
    record_t *r = &g.rec[i];
    r->probe = (uint32_t)pi;
    r->phase = (uint8_t)g.phase;
    r->status = (uint8_t)st;
    if (st != EGRESS_OK) atomic_fetch_add(&g.bad_status, 1);
    r->policy = (int8_t)policy_index(egress_decision_policy_digest(d));
    r->verdict = (uint8_t)egress_decision_verdict(d);
    r->outcome = (uint8_t)egress_decision_outcome(d);
    r->reason = (uint8_t)egress_decision_reason(d);
    r->sig = decision_sig(d, NULL, 0);
    egress_decision_free(d);
  }
  egress_request_free(req);
  return NULL;
}

static void *swapper_main(void *arg) {
  (void)arg;
  uint64_t s = g.seed ^ 0x5bd1e995ULL;
  /* The rich policies A and B come up twice as often as C and the empty D,
   * whose checks end early and would otherwise take most of the run. */
  static const unsigned order[] = { 0, 0, 1, 1, 2, 3 };
  unsigned k = 0;
  while (!atomic_load(&g.stop)) {
    unsigned next;
    do next = order[rng_next(&s) % (sizeof order / sizeof order[0])];
    while (next == k);
    k = next;
    if (egress_checker_set_policy(g.checker, policies[k]) != EGRESS_OK) die("egress_checker_set_policy");
    atomic_fetch_add(&g.swaps, 1);
    struct timespec ts = { 0, (long)(100000 + rng_next(&s) % 900000) }; /* 0.1-1 ms */
    nanosleep(&ts, NULL);
  }
  return NULL;
}

typedef struct phase_cfg {
  const char *name;
  uint32_t cache;
  egress_mixed_t mixed;
} phase_cfg_t;

static const phase_cfg_t phases[NPHASES] = {
  { "cache 4096, deny-if-any", 4096, EGRESS_MIXED_DENY },
  { "cache 16, filter", 16, EGRESS_MIXED_FILTER },
};

static egress_options_t *make_options(const phase_cfg_t *pc, const char *servers, uint32_t timeout_ms,
                                      bool cache, const char *events) {
  egress_options_t *o = NULL;
  if (egress_options_new(&o) != EGRESS_OK) die("egress_options_new");
  if (egress_options_set_dns_servers(o, servers) != EGRESS_OK ||
      egress_options_set_timeout_ms(o, timeout_ms) != EGRESS_OK ||
      egress_options_set_mixed(o, pc->mixed) != EGRESS_OK ||
      egress_options_set_cache(o, cache ? pc->cache : 0, 5, 300, 5) != EGRESS_OK ||
      (events && egress_options_set_event_path(o, events) != EGRESS_OK))
    die("setting options");
  return o;
}

/* Reference decisions, made afterwards, one probe at a time. */
typedef struct ref {
  bool done;
  uint8_t verdict, outcome, reason;
  uint64_t sig;
  char *host; /* canonical host, NULL when invalid */
  char *text;
} ref_t;

static ref_t *refs[NPHASES][NPOLICIES];
static bool skew_reference;

static ref_t *reference(int phase, int pol, size_t pi, const char *servers, uint32_t timeout_ms,
                        egress_checker_t **ref_checker) {
  ref_t *rf = &refs[phase][pol][pi];
  if (rf->done) return rf;
  if (!ref_checker[pol]) {
    char err[EGRESS_ERRBUF_SIZE];
    /* --skew-reference gives the reference the other phase's mixed-answer
     * mode: a way to watch the comparison fail. */
    egress_options_t *o =
        make_options(&phases[skew_reference ? NPHASES - 1 - phase : phase], servers, timeout_ms, false, NULL);
    if (egress_checker_new(policies[pol], o, &ref_checker[pol], err, sizeof err) != EGRESS_OK) die(err);
    egress_options_free(o);
  }
  const probe_t *p = &probes[pi];
  egress_decision_t *d = NULL;
  egress_status_t st = p->url ? egress_check_url(ref_checker[pol], p->host, NULL, &d)
                              : egress_check_ex(ref_checker[pol], p->host, p->port, NULL, &d);
  char text[2048];
  (void)st;
  rf->verdict = (uint8_t)egress_decision_verdict(d);
  rf->outcome = (uint8_t)egress_decision_outcome(d);
  rf->reason = (uint8_t)egress_decision_reason(d);
  rf->sig = decision_sig(d, text, sizeof text);
  rf->host = egress_decision_host(d) ? strdup(egress_decision_host(d)) : NULL;
  rf->text = strdup(text);
  if (!rf->text || (egress_decision_host(d) && !rf->host)) die("out of memory");
  egress_decision_free(d);
  rf->done = true;
  return rf;
}

static void print_escaped(FILE *f, const char *s) {
  for (; *s; s++) {
    unsigned char c = (unsigned char)*s;
    if (c < 0x20 || c >= 0x7f || c == '"' || c == '\\')
      fprintf(f, "\\x%02x", c);
    else
      fputc(c, f);
  }
}

/* ------------------------------------------------------------------------ */
/* Event verification                                                        */
/* ------------------------------------------------------------------------ */

typedef struct uuid128 {
  uint64_t hi, lo;
} uuid128_t;

static int cmp_uuid(const void *a, const void *b) {
  const uuid128_t *x = a, *y = b;
  if (x->hi != y->hi) return x->hi < y->hi ? -1 : 1;
  return x->lo < y->lo ? -1 : x->lo > y->lo;
}

static bool parse_uuid(const char *s, uuid128_t *u) {
  int nd = 0;
  u->hi = u->lo = 0;
  if (!s || strlen(s) != 36) return false;
  for (int i = 0; i < 36; i++) {
    char c = s[i];
    if (i == 8 || i == 13 || i == 18 || i == 23) {
      if (c != '-') return false;
      continue;
    }
    int v = (c >= '0' && c <= '9') ? c - '0' : (c >= 'a' && c <= 'f') ? c - 'a' + 10 : -1;
    if (v < 0) return false;
    if (nd < 16)
      u->hi = (u->hi << 4) | (uint64_t)v;
    else
      u->lo = (u->lo << 4) | (uint64_t)v;
    nd++;
  }
  return true;
}

static const char *jstr(const cJSON *o, const char *key) {
  const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, key);
  return cJSON_IsString(v) ? v->valuestring : NULL;
}

typedef struct evstats {
  size_t lines, bad_json, bad_fields, unknown_corr, dup_corr, dup_ids, bad_ids;
} evstats_t;

static int report_limit = 10;

static void ev_fail(size_t *counter, size_t line, const char *why) {
  (*counter)++;
  if (report_limit > 0) {
    report_limit--;
    fprintf(stderr, "event line %zu: %s\n", line, why);
  }
}

static void verify_events(const char *path, int phase, size_t begin, size_t end, evstats_t *es,
                          uuid128_t *ids, size_t *nids) {
  FILE *f = fopen(path, "r");
  char *line = NULL;
  size_t cap = 0;
  ssize_t len;
  if (!f) die("cannot open the event file");
  while ((len = getline(&line, &cap, f)) > 0) {
    size_t ln = ++es->lines;
    cJSON *ev = cJSON_ParseWithLength(line, (size_t)len);
    if (!ev) {
      ev_fail(&es->bad_json, ln, "not JSON");
      continue;
    }
    const cJSON *data = cJSON_GetObjectItemCaseSensitive(ev, "data");
    const char *corr = jstr(data, "correlationId");
    const char *id = jstr(ev, "id");
    char *endp = NULL;
    unsigned long long ci = corr ? strtoull(corr, &endp, 10) : 0;
    if (!corr || !endp || *endp || ci < begin || ci >= end) {
      ev_fail(&es->unknown_corr, ln, "correlationId names no check of this phase");
      cJSON_Delete(ev);
      continue;
    }
    record_t *r = &g.rec[ci];
    if (r->events++) ev_fail(&es->dup_corr, ln, "second event for one check");
    uuid128_t u;
    if (!parse_uuid(id, &u))
      ev_fail(&es->bad_ids, ln, "id is not a lower-case UUID");
    else
      ids[(*nids)++] = u;
    const probe_t *p = &probes[r->probe];
    const ref_t *rf = r->policy >= 0 ? &refs[phase][r->policy][r->probe] : NULL;
    const char *outcome = jstr(data, "outcome");
    const cJSON *reason = cJSON_GetObjectItemCaseSensitive(data, "denyReason");
    const char *digest = jstr(data, "policyDigest");
    const cJSON *port = cJSON_GetObjectItemCaseSensitive(data, "port");
    const char *host = jstr(data, "host");
    bool ok = outcome && !strcmp(outcome, egress_outcome_name((egress_outcome_t)r->outcome));
    if (r->outcome == EGRESS_OUTCOME_ALLOWED)
      ok = ok && cJSON_IsNull(reason);
    else
      ok = ok && cJSON_IsString(reason) &&
           !strcmp(reason->valuestring, egress_reason_name((egress_reason_t)r->reason));
    ok = ok && digest && r->policy >= 0 && !strcmp(digest, egress_policy_digest(policies[r->policy]));
    if (!p->url) ok = ok && cJSON_IsNumber(port) && (int32_t)port->valuedouble == p->port;
    if (rf && rf->done && rf->host) ok = ok && host && !strcmp(host, rf->host);
    const char *runid = jstr(data, "runId");
    ok = ok && runid && !strcmp(runid, "soak");
    if (!ok) {
      char why[512];
      snprintf(why, sizeof why, "fields differ from check %llu (outcome %s reason %s): %.300s", ci,
               egress_outcome_name((egress_outcome_t)r->outcome),
               egress_reason_name((egress_reason_t)r->reason), line);
      ev_fail(&es->bad_fields, ln, why);
    }
    cJSON_Delete(ev);
  }
  free(line);
  fclose(f);
}

/* ------------------------------------------------------------------------ */

static void usage(void) {
  fprintf(stderr,
          "usage: egress-soak [--checks N] [--seed S] [--threads T] [--events-dir DIR]\n"
          "                   [--keep-events] [--rss-bound-mb M] [--timeout-ms MS]\n"
          "                   [--skew-reference]\n");
  exit(64);
}

int main(int argc, char **argv) {
  size_t total = 200000;
  uint64_t seed = 0x50a4;
  int nthreads = 2;
  const char *events_dir = NULL;
  bool keep = false;
  double rss_bound_mb = 5.0;
  uint32_t timeout_ms = 250;
  for (int i = 1; i < argc; i++) {
    const char *a = argv[i];
    const char *v = i + 1 < argc ? argv[i + 1] : NULL;
    if (!strcmp(a, "--checks") && v)
      total = strtoull(v, NULL, 10), i++;
    else if (!strcmp(a, "--seed") && v)
      seed = strtoull(v, NULL, 0), i++;
    else if (!strcmp(a, "--threads") && v)
      nthreads = atoi(v), i++;
    else if (!strcmp(a, "--events-dir") && v)
      events_dir = v, i++;
    else if (!strcmp(a, "--keep-events"))
      keep = true;
    else if (!strcmp(a, "--skew-reference"))
      skew_reference = true;
    else if (!strcmp(a, "--rss-bound-mb") && v)
      rss_bound_mb = atof(v), i++;
    else if (!strcmp(a, "--timeout-ms") && v)
      timeout_ms = (uint32_t)strtoul(v, NULL, 10), i++;
    else
      usage();
  }
  if (total < 100 || nthreads < 1 || nthreads > MAXTHREADS || timeout_ms < 100) usage();

  char dirbuf[] = "/tmp/egress-soak.XXXXXX";
  bool made_dir = false;
  if (!events_dir) {
    if (!mkdtemp(dirbuf)) die("mkdtemp");
    events_dir = dirbuf;
    made_dir = true;
  }

  egress_dns_responder_t *dns = egress_dns_start("127.0.0.1");
  if (!dns) die("cannot start the DNS responder");
  char servers[64];
  egress_dns_server_csv(dns, servers, sizeof servers);
  build_zone(dns);
  build_probes(seed);
  build_policies();

  g.seed = seed;
  g.rec = calloc(total, sizeof *g.rec);
  if (!g.rec) die("out of memory");
  /* Make every page of the records resident before the RSS samples (a
   * memset to zero after calloc may be folded away by the compiler). */
  for (size_t i = 0; i < total; i++) g.rec[i].policy = -1;
  static const int pct[NSAMPLES] = { 10, 25, 50, 75, 100 };
  for (int k = 0; k < NSAMPLES; k++) {
    g.milestone[k] = pct[k] == 100 ? total - 1 : total * (size_t)pct[k] / 100;
    g.rss[k] = -1;
  }

  printf("egress-soak: libegress %s, %zu checks, %d worker threads, seed %#" PRIx64
         ", DNS %s, timeout %u ms\n",
         egress_version(), total, nthreads, seed, servers, timeout_ms);
  printf("zone: %zu hosts, %zu probes (host:port or URL), %d policies swapped every 0.1-1 ms\n", nhosts,
         nprobes, NPOLICIES);
  printf("events: %s\n", events_dir);

  char evpath[NPHASES][512];
  uint64_t counters[NPHASES][9];
  uint64_t by_reason[NPHASES][EGRESS_REASON_INTERNAL_ERROR + 1];
  uint64_t by_outcome_lib[NPHASES][3];
  unsigned long phase_swaps[NPHASES];
  double elapsed = 0;
  size_t phase_begin[NPHASES + 1];
  for (int ph = 0; ph < NPHASES; ph++) {
    phase_begin[ph] = total * (size_t)ph / NPHASES;
    phase_begin[ph + 1] = total * (size_t)(ph + 1) / NPHASES;
  }

  for (int ph = 0; ph < NPHASES; ph++) {
    char err[EGRESS_ERRBUF_SIZE];
    snprintf(evpath[ph], sizeof evpath[ph], "%s/events-%d.jsonl", events_dir, ph);
    unlink(evpath[ph]);
    egress_options_t *o = make_options(&phases[ph], servers, timeout_ms, true, evpath[ph]);
    if (egress_checker_new(policies[0], o, &g.checker, err, sizeof err) != EGRESS_OK) die(err);
    egress_options_free(o);
    g.phase = ph;
    g.begin = phase_begin[ph];
    g.end = phase_begin[ph + 1];
    atomic_store(&g.next, g.begin);
    atomic_store(&g.stop, false);
    unsigned long swaps0 = atomic_load(&g.swaps);

    worker_t w[MAXTHREADS];
    pthread_t swapper;
    double t0 = now_s();
    if (pthread_create(&swapper, NULL, swapper_main, NULL)) die("pthread_create");
    for (int t = 0; t < nthreads; t++) {
      w[t].id = t;
      if (pthread_create(&w[t].tid, NULL, worker_main, &w[t])) die("pthread_create");
    }
    for (int t = 0; t < nthreads; t++) pthread_join(w[t].tid, NULL);
    atomic_store(&g.stop, true);
    pthread_join(swapper, NULL);
    double dt = now_s() - t0;
    elapsed += dt;
    phase_swaps[ph] = atomic_load(&g.swaps) - swaps0;

    for (int c = 0; c < 9; c++) counters[ph][c] = egress_checker_counter(g.checker, (egress_counter_t)c);
    memset(by_reason[ph], 0, sizeof by_reason[ph]);
    for (int oc = 0; oc < 3; oc++) {
      by_outcome_lib[ph][oc] = 0;
      for (int rs = 0; rs <= EGRESS_REASON_INTERNAL_ERROR; rs++) {
        uint64_t n = egress_checker_checks_by(g.checker, (egress_outcome_t)oc, (egress_reason_t)rs);
        by_outcome_lib[ph][oc] += n;
        by_reason[ph][rs] += n;
      }
    }
    egress_checker_free(g.checker);
    g.checker = NULL;
    printf("phase %d (%s): %zu checks in %.2f s = %.0f checks/s, %lu swaps\n", ph, phases[ph].name,
           g.end - g.begin, dt, (double)(g.end - g.begin) / dt, phase_swaps[ph]);
  }
  double t_ref = now_s();

  /* ---------------- verification ---------------- */
  int failures = 0;

  /* RSS, before the verification allocates anything. */
  long rss_end = rss_kb();
  long warm = g.rss[0];
  long max_after = warm;
  for (int k = 1; k < NSAMPLES; k++)
    if (g.rss[k] > max_after) max_after = g.rss[k];
  double growth_mb = (double)(max_after - warm) / 1024.0;
  double bound_mb = rss_bound_mb;
  if ((double)warm / 1024.0 * 0.10 > bound_mb) bound_mb = (double)warm / 1024.0 * 0.10;
  bool rss_ok = warm > 0 && growth_mb < bound_mb;

  /* Decisions against the reference. */
  size_t mismatches = 0, no_policy = 0;
  size_t per_policy[NPHASES][NPOLICIES];
  size_t per_outcome[NPHASES][3];
  size_t per_reason[NPHASES][EGRESS_REASON_INTERNAL_ERROR + 1];
  memset(per_policy, 0, sizeof per_policy);
  memset(per_outcome, 0, sizeof per_outcome);
  memset(per_reason, 0, sizeof per_reason);
  for (int ph = 0; ph < NPHASES; ph++)
    for (int p = 0; p < NPOLICIES; p++)
      if (!(refs[ph][p] = calloc(nprobes, sizeof(ref_t)))) die("out of memory");
  for (int ph = 0; ph < NPHASES; ph++) {
    egress_checker_t *ref_checker[NPOLICIES] = { 0 };
    for (size_t i = phase_begin[ph]; i < phase_begin[ph + 1]; i++) {
      record_t *r = &g.rec[i];
      if (r->outcome < 3) per_outcome[ph][r->outcome]++;
      if (r->reason <= EGRESS_REASON_INTERNAL_ERROR) per_reason[ph][r->reason]++;
      if (r->policy < 0) {
        no_policy++;
        continue;
      }
      per_policy[ph][r->policy]++;
      const ref_t *rf = reference(ph, r->policy, r->probe, servers, timeout_ms, ref_checker);
      if (rf->verdict != r->verdict || rf->outcome != r->outcome || rf->reason != r->reason ||
          rf->sig != r->sig) {
        if (mismatches++ < 20) {
          printf("MISMATCH check %zu phase %d policy %d input \"", i, ph, r->policy);
          print_escaped(stdout, probes[r->probe].host);
          printf("\" port %d%s: got %s/%s sig %016" PRIx64 ", reference %s/%s %s\n", probes[r->probe].port,
                 probes[r->probe].url ? " (url)" : "", egress_outcome_name((egress_outcome_t)r->outcome),
                 egress_reason_name((egress_reason_t)r->reason), r->sig,
                 egress_outcome_name((egress_outcome_t)rf->outcome),
                 egress_reason_name((egress_reason_t)rf->reason), rf->text);
        }
      }
    }
    for (int p = 0; p < NPOLICIES; p++) egress_checker_free(ref_checker[p]);
  }
  double ref_s = now_s() - t_ref;

  /* Events. */
  evstats_t es = { 0 };
  size_t missing_events = 0;
  uuid128_t *ids = malloc(total * sizeof *ids);
  size_t nids = 0;
  if (!ids) die("out of memory");
  for (int ph = 0; ph < NPHASES; ph++)
    verify_events(evpath[ph], ph, phase_begin[ph], phase_begin[ph + 1], &es, ids, &nids);
  for (size_t i = 0; i < total; i++)
    if (g.rec[i].events == 0) missing_events++;
  qsort(ids, nids, sizeof *ids, cmp_uuid);
  for (size_t i = 1; i < nids; i++)
    if (!cmp_uuid(&ids[i - 1], &ids[i])) es.dup_ids++;
  free(ids);

  /* Library counters against what the workers saw. */
  size_t counter_errors = 0;
  unsigned long swaps_total = 0;
  for (int ph = 0; ph < NPHASES; ph++) {
    size_t n = phase_begin[ph + 1] - phase_begin[ph];
    swaps_total += phase_swaps[ph];
    if (counters[ph][EGRESS_COUNTER_CHECKS] != n) counter_errors++;
    if (counters[ph][EGRESS_COUNTER_EVENTS_EMITTED] != n) counter_errors++;
    if (counters[ph][EGRESS_COUNTER_EVENTS_FAILED] != 0) counter_errors++;
    if (counters[ph][EGRESS_COUNTER_POLICY_SWAPS] != phase_swaps[ph]) counter_errors++;
    for (int oc = 0; oc < 3; oc++)
      if (by_outcome_lib[ph][oc] != per_outcome[ph][oc]) counter_errors++;
    for (int rs = 0; rs <= EGRESS_REASON_INTERNAL_ERROR; rs++)
      if (by_reason[ph][rs] != per_reason[ph][rs]) counter_errors++;
  }

  /* ---------------- summary ---------------- */
  printf("\n== summary ==\n");
  printf("checks            %zu in %.2f s: %.0f checks/s (%d threads)\n", total, elapsed,
         (double)total / elapsed, nthreads);
  printf("policy swaps      %lu (phase 0 %lu, phase 1 %lu)\n", swaps_total, phase_swaps[0], phase_swaps[1]);
  for (int ph = 0; ph < NPHASES; ph++) {
    printf("phase %d counters  checks %" PRIu64 " dns_queries %" PRIu64 " dns_failures %" PRIu64
           " cache_hits %" PRIu64 " cache_misses %" PRIu64 " events %" PRIu64 " events_failed %" PRIu64
           " swaps %" PRIu64 "\n",
           ph, counters[ph][0], counters[ph][1], counters[ph][2], counters[ph][3], counters[ph][4],
           counters[ph][5], counters[ph][6], counters[ph][7]);
    printf("phase %d policies  A %zu  B %zu  C %zu  D(empty) %zu\n", ph, per_policy[ph][0], per_policy[ph][1],
           per_policy[ph][2], per_policy[ph][3]);
    printf("phase %d outcomes  allowed %zu  denied %zu  enforcement_unavailable %zu\n", ph,
           per_outcome[ph][EGRESS_OUTCOME_ALLOWED], per_outcome[ph][EGRESS_OUTCOME_DENIED],
           per_outcome[ph][EGRESS_OUTCOME_ENFORCEMENT_UNAVAILABLE]);
    printf("phase %d reasons  ", ph);
    for (int rs = 0; rs <= EGRESS_REASON_INTERNAL_ERROR; rs++)
      if (per_reason[ph][rs]) printf(" %s %zu", egress_reason_name((egress_reason_t)rs), per_reason[ph][rs]);
    printf("\n");
  }
  printf("reference         %.2f s, cache off, single thread\n", ref_s);
  printf("RSS (kB)          warm-up(10%%) %ld  25%% %ld  50%% %ld  75%% %ld  end %ld  (after run %ld)\n",
         g.rss[0], g.rss[1], g.rss[2], g.rss[3], g.rss[4], rss_end);
  printf("RSS growth        %.2f MB after warm-up, bound %.2f MB%s\n", growth_mb, bound_mb,
         SOAK_ASAN ? " (not judged under AddressSanitizer: its quarantine holds freed memory)" : "");

#define VERIFY(cond, fmt, ...)                                  \
  do {                                                          \
    bool ok_ = (cond);                                          \
    printf("%-4s " fmt "\n", ok_ ? "ok" : "FAIL", __VA_ARGS__); \
    if (!ok_) failures++;                                       \
  } while (0)

  printf("\n== verifications ==\n");
  VERIFY(atomic_load(&g.bad_status) == 0, "every check returned EGRESS_OK (%lu did not)",
         (unsigned long)atomic_load(&g.bad_status));
  VERIFY(no_policy == 0, "every decision names a known policy digest (%zu do not)", no_policy);
  VERIFY(mismatches == 0, "every decision equals the reference: %zu mismatches", mismatches);
  VERIFY(es.lines == total, "one event line per check: %zu lines for %zu checks", es.lines, total);
  VERIFY(missing_events == 0 && es.dup_corr == 0 && es.unknown_corr == 0,
         "each check has exactly one event: %zu missing, %zu duplicated, %zu unknown", missing_events,
         es.dup_corr, es.unknown_corr);
  VERIFY(es.bad_json == 0, "every event line parses as JSON (%zu do not)", es.bad_json);
  VERIFY(es.bad_ids == 0 && es.dup_ids == 0, "event ids are UUIDs and unique: %zu bad, %zu duplicated",
         es.bad_ids, es.dup_ids);
  VERIFY(es.bad_fields == 0,
         "event outcome/denyReason/policyDigest/host/port/runId equal the decision's (%zu differ)",
         es.bad_fields);
  VERIFY(counter_errors == 0,
         "library counters (checks, events, swaps, by outcome and reason) agree (%zu differ)",
         counter_errors);
  VERIFY(swaps_total >= 100, "policies were swapped during the run (%lu swaps)", swaps_total);
  bool all_policies = true;
  for (int ph = 0; ph < NPHASES; ph++)
    for (int p = 0; p < NPOLICIES; p++)
      if (per_policy[ph][p] == 0) all_policies = false;
  VERIFY(all_policies, "every policy decided checks in both phases%s", "");
  VERIFY(counters[0][EGRESS_COUNTER_CACHE_HITS] > 0 && counters[1][EGRESS_COUNTER_CACHE_MISSES] > 0,
         "cached and uncached paths both ran (phase 0 hits %" PRIu64 ", phase 1 misses %" PRIu64 ")",
         counters[0][EGRESS_COUNTER_CACHE_HITS], counters[1][EGRESS_COUNTER_CACHE_MISSES]);
  if (SOAK_ASAN)
    printf("%-4s RSS growth after warm-up %.2f MB (bound %.2f MB)\n", "skip", growth_mb, bound_mb);
  else
    VERIFY(rss_ok, "RSS growth after warm-up %.2f MB < %.2f MB", growth_mb, bound_mb);

  for (int ph = 0; ph < NPHASES; ph++)
    for (int p = 0; p < NPOLICIES; p++) {
      for (size_t i = 0; i < nprobes; i++) {
        free(refs[ph][p][i].host);
        free(refs[ph][p][i].text);
      }
      free(refs[ph][p]);
    }
  for (int p = 0; p < NPOLICIES; p++) egress_policy_unref(policies[p]);
  egress_dns_stop(dns);
  free(g.rec);
  if (!keep) {
    for (int ph = 0; ph < NPHASES; ph++) unlink(evpath[ph]);
    if (made_dir) rmdir(events_dir);
  }
  printf("\nresult: %s (%d failed verification%s)\n", failures ? "FAIL" : "PASS", failures,
         failures == 1 ? "" : "s");
  return failures ? 1 : 0;
}
