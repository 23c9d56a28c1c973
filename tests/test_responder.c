/*
 * Self-test of the loopback DNS responder (tests/dns/responder.c), driven for
 * real through c-ares 1.18.1, plus raw-socket checks of its wire format and of
 * its robustness against garbage.  The fault-mapping test pins how c-ares
 * turns each injected fault into an ares status, since the resolver's
 * decision reasons are built on that mapping.
 */
#include "responder.h"
#include "testutil.h"

#include <arpa/inet.h>
#include <ares.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/select.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

/* ---------- c-ares helpers ---------- */

static uint64_t now_ms(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

enum { CH_EDNS = 1, CH_IGNTC = 2, CH_USEVC = 4, CH_NOCHECKRESP = 8 };

static ares_channel make_channel(const char *servers_csv, int timeout_ms, int tries, int opts) {
  struct ares_options o;
  memset(&o, 0, sizeof(o));
  int mask = ARES_OPT_FLAGS | ARES_OPT_DOMAINS | ARES_OPT_TIMEOUTMS | ARES_OPT_TRIES | ARES_OPT_LOOKUPS;
  o.flags = ARES_FLAG_NOSEARCH;
  if (opts & CH_EDNS) {
    o.flags |= ARES_FLAG_EDNS;
    o.ednspsz = 4096;
    mask |= ARES_OPT_EDNSPSZ;
  }
  if (opts & CH_IGNTC) o.flags |= ARES_FLAG_IGNTC;
  if (opts & CH_USEVC) o.flags |= ARES_FLAG_USEVC;
  if (opts & CH_NOCHECKRESP) o.flags |= ARES_FLAG_NOCHECKRESP;
  o.domains = NULL;
  o.ndomains = 0;
  o.timeout = timeout_ms;
  o.tries = tries;
  o.lookups = (char *)"b"; /* DNS only: never /etc/hosts */
  ares_channel ch = NULL;
  if (ares_init_options(&ch, &o, mask) != ARES_SUCCESS) return NULL;
  if (ares_set_servers_ports_csv(ch, servers_csv) != ARES_SUCCESS) {
    ares_destroy(ch);
    return NULL;
  }
  return ch;
}

static ares_channel channel_for(egress_dns_responder_t *r, int timeout_ms, int tries, int opts) {
  char csv[64];
  return make_channel(egress_dns_server_csv(r, csv, sizeof(csv)), timeout_ms, tries, opts);
}

/* Run the channel until *pending reaches 0 (or 20 s pass: a hung test fails, never hangs). */
static void drive(ares_channel ch, const int *pending) {
  uint64_t start = now_ms();
  while (*pending > 0 && now_ms() - start < 20000) {
    fd_set rfds, wfds;
    FD_ZERO(&rfds);
    FD_ZERO(&wfds);
    int nfds = ares_fds(ch, &rfds, &wfds);
    struct timeval maxtv = { 0, 100000 }, tv;
    struct timeval *tvp = ares_timeout(ch, &maxtv, &tv);
    select(nfds, &rfds, &wfds, NULL, tvp);
    ares_process(ch, &rfds, &wfds);
  }
}

typedef struct gai {
  int *pending;
  int status;
  uint64_t done_ms;
  struct ares_addrinfo *res;
} gai_t;

static void gai_cb(void *arg, int status, int timeouts, struct ares_addrinfo *res) {
  gai_t *g = arg;
  (void)timeouts;
  g->status = status;
  g->res = res;
  g->done_ms = now_ms();
  (*g->pending)--;
}

static void gai_start(ares_channel ch, const char *name, int family, gai_t *g, int *pending) {
  struct ares_addrinfo_hints h;
  memset(&h, 0, sizeof(h));
  h.ai_family = family;
  h.ai_flags = ARES_AI_NOSORT;
  g->pending = pending;
  g->status = -1;
  g->res = NULL;
  (*pending)++;
  ares_getaddrinfo(ch, name, NULL, &h, gai_cb, g);
}

/* One getaddrinfo on a fresh channel; the caller frees *res (may be NULL). */
static int resolve_opts(egress_dns_responder_t *r, const char *name, int family, int timeout_ms, int tries,
                        int opts, struct ares_addrinfo **res) {
  ares_channel ch = channel_for(r, timeout_ms, tries, opts);
  CU_ASSERT_PTR_NOT_NULL_FATAL(ch);
  int pending = 0;
  gai_t g;
  gai_start(ch, name, family, &g, &pending);
  drive(ch, &pending);
  ares_destroy(ch);
  if (res)
    *res = g.res;
  else if (g.res)
    ares_freeaddrinfo(g.res);
  return g.status;
}

static int resolve(egress_dns_responder_t *r, const char *name, int family, struct ares_addrinfo **res) {
  return resolve_opts(r, name, family, 1000, 2, 0, res);
}

static size_t count_nodes(const struct ares_addrinfo *res, int family) {
  size_t n = 0;
  for (const struct ares_addrinfo_node *a = res ? res->nodes : NULL; a; a = a->ai_next)
    if (family == AF_UNSPEC || a->ai_family == family) n++;
  return n;
}

/* The TTL of the node with this address, or -1 when absent. */
static int node_ttl(const struct ares_addrinfo *res, const char *ip) {
  for (const struct ares_addrinfo_node *a = res ? res->nodes : NULL; a; a = a->ai_next) {
    char buf[INET6_ADDRSTRLEN];
    const void *src = a->ai_family == AF_INET ? (const void *)&((struct sockaddr_in *)a->ai_addr)->sin_addr
                                              : (const void *)&((struct sockaddr_in6 *)a->ai_addr)->sin6_addr;
    inet_ntop(a->ai_family, src, buf, sizeof(buf));
    if (!strcmp(buf, ip)) return a->ai_ttl;
  }
  return -1;
}

static const char *first_ipv4(const struct ares_addrinfo *res, char *buf, size_t len) {
  buf[0] = '\0';
  for (const struct ares_addrinfo_node *a = res ? res->nodes : NULL; a; a = a->ai_next)
    if (a->ai_family == AF_INET) {
      inet_ntop(AF_INET, &((struct sockaddr_in *)a->ai_addr)->sin_addr, buf, (socklen_t)len);
      break;
    }
  return buf;
}

typedef struct qres {
  int *pending;
  int status;
  int alen;
} qres_t;

static void query_cb(void *arg, int status, int timeouts, unsigned char *abuf, int alen) {
  qres_t *q = arg;
  (void)timeouts;
  (void)abuf;
  q->status = status;
  q->alen = alen;
  (*q->pending)--;
}

/* ares_query (no getaddrinfo logic on top) for one type. */
static int raw_ares_query(egress_dns_responder_t *r, const char *name, int type, int timeout_ms) {
  ares_channel ch = channel_for(r, timeout_ms, 1, 0);
  CU_ASSERT_PTR_NOT_NULL_FATAL(ch);
  int pending = 1;
  qres_t q = { &pending, -1, 0 };
  ares_query(ch, name, 1 /* IN */, type, query_cb, &q);
  drive(ch, &pending);
  ares_destroy(ch);
  return q.status;
}

static egress_dns_responder_t *R; /* the shared responder for the "cares" suite */

static int suite_init(void) {
  if (ares_library_init(ARES_LIB_INIT_ALL) != ARES_SUCCESS) return 1;
  R = egress_dns_start("127.0.0.1");
  return R ? 0 : 1;
}

static int suite_cleanup(void) {
  egress_dns_stop(R);
  R = NULL;
  ares_library_cleanup();
  return 0;
}

/* ---------- c-ares driven tests ---------- */

static void test_a_aaaa_ttl(void) {
  egress_dns_reset(R);
  CU_ASSERT_EQUAL(egress_dns_add_a(R, "www.example.test", "192.0.2.10", 300), 0);
  CU_ASSERT_EQUAL(egress_dns_add_a(R, "www.example.test", "192.0.2.11", 42), 0);
  CU_ASSERT_EQUAL(egress_dns_add_aaaa(R, "www.example.test", "2001:db8::1", 7), 0);
  struct ares_addrinfo *res = NULL;
  CU_ASSERT_EQUAL(resolve(R, "www.example.test", AF_UNSPEC, &res), ARES_SUCCESS);
  CU_ASSERT_EQUAL(count_nodes(res, AF_INET), 2);
  CU_ASSERT_EQUAL(count_nodes(res, AF_INET6), 1);
  CU_ASSERT_EQUAL(node_ttl(res, "192.0.2.10"), 300);
  CU_ASSERT_EQUAL(node_ttl(res, "192.0.2.11"), 42);
  CU_ASSERT_EQUAL(node_ttl(res, "2001:db8::1"), 7);
  ares_freeaddrinfo(res);
  CU_ASSERT_EQUAL(egress_dns_query_count(R, "www.example.test"), 2);
  CU_ASSERT_EQUAL(egress_dns_query_count_type(R, "www.example.test", 1), 1);
  CU_ASSERT_EQUAL(egress_dns_query_count_type(R, "www.example.test", 28), 1);
  CU_ASSERT_EQUAL(egress_dns_total_queries(R), 2);
  CU_ASSERT_EQUAL(egress_dns_tcp_queries(R), 0);

  /* AF_INET asks A only. */
  CU_ASSERT_EQUAL(resolve(R, "www.example.test", AF_INET, &res), ARES_SUCCESS);
  CU_ASSERT_EQUAL(count_nodes(res, AF_UNSPEC), 2);
  ares_freeaddrinfo(res);
  CU_ASSERT_EQUAL(egress_dns_query_count_type(R, "www.example.test", 1), 2);
  CU_ASSERT_EQUAL(egress_dns_query_count_type(R, "www.example.test", 28), 1);
}

static void test_case_and_trailing_dot(void) {
  egress_dns_reset(R);
  CU_ASSERT_EQUAL(egress_dns_add_a(R, "MiXeD.Example.TEST.", "192.0.2.20", 60), 0);
  struct ares_addrinfo *res = NULL;
  CU_ASSERT_EQUAL(resolve(R, "mixed.example.test", AF_INET, &res), ARES_SUCCESS);
  CU_ASSERT_EQUAL(count_nodes(res, AF_INET), 1);
  ares_freeaddrinfo(res);
  CU_ASSERT_EQUAL(resolve(R, "MIXED.EXAMPLE.TEST.", AF_INET, &res), ARES_SUCCESS);
  CU_ASSERT_EQUAL(count_nodes(res, AF_INET), 1);
  ares_freeaddrinfo(res);
  CU_ASSERT_EQUAL(egress_dns_query_count(R, "mixed.EXAMPLE.test."), 2);
  char last[256];
  CU_ASSERT_STRING_EQUAL(egress_dns_last_qname(R, last, sizeof(last)), "mixed.example.test");
  /* Bad scripted names are refused. */
  CU_ASSERT_EQUAL(egress_dns_add_a(R, "a..b", "192.0.2.1", 1), -1);
  CU_ASSERT_EQUAL(egress_dns_add_a(R, "x.test", "300.1.1.1", 1), -1);
  CU_ASSERT_EQUAL(egress_dns_add_aaaa(R, "x.test", "192.0.2.1", 1), -1);
  char longlabel[80];
  memset(longlabel, 'a', 64);
  strcpy(longlabel + 64, ".test");
  CU_ASSERT_EQUAL(egress_dns_add_a(R, longlabel, "192.0.2.1", 1), -1);
  CU_ASSERT_EQUAL(egress_dns_add_a(R, NULL, "192.0.2.1", 1), -1);
}

static void test_rcodes(void) {
  egress_dns_reset(R);
  CU_ASSERT_EQUAL(resolve(R, "unknown.example.test", AF_UNSPEC, NULL), ARES_ENOTFOUND);
  CU_ASSERT_EQUAL(egress_dns_query_count(R, "unknown.example.test"), 2);
  egress_dns_set_rcode(R, "nx.test", EGRESS_DNS_NXDOMAIN);
  egress_dns_set_rcode(R, "sf.test", EGRESS_DNS_SERVFAIL);
  egress_dns_set_rcode(R, "ref.test", EGRESS_DNS_REFUSED);
  egress_dns_set_rcode(R, "nodata.test", EGRESS_DNS_NOERROR);
  CU_ASSERT_EQUAL(resolve(R, "nx.test", AF_UNSPEC, NULL), ARES_ENOTFOUND);
  CU_ASSERT_EQUAL(resolve(R, "nodata.test", AF_UNSPEC, NULL), ARES_ENODATA);
  /* c-ares 1.18.1 treats SERVFAIL, REFUSED and NOTIMP as a broken server:
   * it retries (tries times), then gives up with ECONNREFUSED. */
  unsigned before = egress_dns_query_count_type(R, "sf.test", 1);
  CU_ASSERT_EQUAL(resolve_opts(R, "sf.test", AF_INET, 500, 3, 0, NULL), ARES_ECONNREFUSED);
  CU_ASSERT_EQUAL(egress_dns_query_count_type(R, "sf.test", 1) - before, 3);
  CU_ASSERT_EQUAL(resolve(R, "sf.test", AF_UNSPEC, NULL), ARES_ECONNREFUSED);
  CU_ASSERT_EQUAL(resolve(R, "ref.test", AF_UNSPEC, NULL), ARES_ECONNREFUSED);
  /* With ARES_FLAG_NOCHECKRESP the rcode comes through as its own status. */
  CU_ASSERT_EQUAL(resolve_opts(R, "sf.test", AF_UNSPEC, 500, 1, CH_NOCHECKRESP, NULL), ARES_ESERVFAIL);
  CU_ASSERT_EQUAL(resolve_opts(R, "ref.test", AF_UNSPEC, 500, 1, CH_NOCHECKRESP, NULL), ARES_EREFUSED);
  egress_dns_set_rcode(R, "notimp.test", EGRESS_DNS_NOTIMP);
  egress_dns_set_rcode(R, "formerr.test", EGRESS_DNS_FORMERR);
  CU_ASSERT_EQUAL(resolve_opts(R, "notimp.test", AF_UNSPEC, 500, 1, CH_NOCHECKRESP, NULL), ARES_ENOTIMP);
  CU_ASSERT_EQUAL(resolve_opts(R, "notimp.test", AF_UNSPEC, 500, 1, 0, NULL), ARES_ECONNREFUSED);
  CU_ASSERT_EQUAL(resolve_opts(R, "formerr.test", AF_UNSPEC, 500, 1, 0, NULL), ARES_EFORMERR);
  CU_ASSERT_EQUAL(resolve_opts(R, "nx.test", AF_UNSPEC, 500, 1, CH_NOCHECKRESP, NULL), ARES_ENOTFOUND);
  /* Only an A record: AF_UNSPEC succeeds with it, AF_INET6 is NODATA. */
  egress_dns_add_a(R, "v4only.test", "192.0.2.30", 60);
  struct ares_addrinfo *res = NULL;
  CU_ASSERT_EQUAL(resolve(R, "v4only.test", AF_UNSPEC, &res), ARES_SUCCESS);
  CU_ASSERT_EQUAL(count_nodes(res, AF_UNSPEC), 1);
  ares_freeaddrinfo(res);
  CU_ASSERT_EQUAL(resolve(R, "v4only.test", AF_INET6, NULL), ARES_ENODATA);
  /* The rcode wins over records. */
  egress_dns_add_a(R, "sf2.test", "192.0.2.31", 60);
  egress_dns_set_rcode(R, "sf2.test", EGRESS_DNS_SERVFAIL);
  CU_ASSERT_EQUAL(resolve_opts(R, "sf2.test", AF_INET, 500, 1, CH_NOCHECKRESP, NULL), ARES_ESERVFAIL);
  egress_dns_set_rcode(R, "sf2.test", -1);
  CU_ASSERT_EQUAL(resolve(R, "sf2.test", AF_INET, NULL), ARES_SUCCESS);
  /* Default rcode for unknown names. */
  egress_dns_set_default_rcode(R, EGRESS_DNS_SERVFAIL);
  CU_ASSERT_EQUAL(resolve_opts(R, "other.unknown.test", AF_UNSPEC, 500, 1, CH_NOCHECKRESP, NULL),
                  ARES_ESERVFAIL);
  egress_dns_set_default_rcode(R, EGRESS_DNS_REFUSED);
  CU_ASSERT_EQUAL(resolve_opts(R, "other.unknown.test", AF_UNSPEC, 500, 1, CH_NOCHECKRESP, NULL),
                  ARES_EREFUSED);
  egress_dns_reset(R);
  CU_ASSERT_EQUAL(resolve(R, "other.unknown.test", AF_UNSPEC, NULL), ARES_ENOTFOUND);
}

static void test_drop_timeout(void) {
  egress_dns_reset(R);
  egress_dns_set_drop(R, "drop.test", true);
  uint64_t t0 = now_ms();
  CU_ASSERT_EQUAL(resolve_opts(R, "drop.test", AF_UNSPEC, 200, 1, 0, NULL), ARES_ETIMEOUT);
  uint64_t took = now_ms() - t0;
  CU_ASSERT(took >= 150 && took < 3000);
  CU_ASSERT(egress_dns_query_count(R, "drop.test") >= 2);
  egress_dns_set_drop(R, "drop.test", false);
  egress_dns_add_a(R, "drop.test", "192.0.2.40", 60);
  CU_ASSERT_EQUAL(resolve(R, "drop.test", AF_INET, NULL), ARES_SUCCESS);
}

/* A delayed answer must not hold up the others. */
static void test_delay_does_not_block(void) {
  egress_dns_reset(R);
  egress_dns_add_a(R, "slow.test", "192.0.2.50", 60);
  egress_dns_set_delay_ms(R, "slow.test", 400);
  egress_dns_add_a(R, "fast.test", "192.0.2.51", 60);
  ares_channel ch = channel_for(R, 2000, 1, 0);
  CU_ASSERT_PTR_NOT_NULL_FATAL(ch);
  int pending = 0;
  gai_t slow, fast;
  uint64_t t0 = now_ms();
  gai_start(ch, "slow.test", AF_INET, &slow, &pending);
  gai_start(ch, "fast.test", AF_INET, &fast, &pending);
  drive(ch, &pending);
  ares_destroy(ch);
  CU_ASSERT_EQUAL(slow.status, ARES_SUCCESS);
  CU_ASSERT_EQUAL(fast.status, ARES_SUCCESS);
  CU_ASSERT(fast.done_ms - t0 < 200);
  CU_ASSERT(slow.done_ms - t0 >= 390);
  CU_ASSERT(slow.done_ms > fast.done_ms);
  if (slow.res) ares_freeaddrinfo(slow.res);
  if (fast.res) ares_freeaddrinfo(fast.res);
  /* A delay longer than the client's timeout is a timeout. */
  egress_dns_set_delay_ms(R, "slow.test", 600);
  CU_ASSERT_EQUAL(resolve_opts(R, "slow.test", AF_INET, 200, 1, 0, NULL), ARES_ETIMEOUT);
}

static void test_truncate_tcp_fallback(void) {
  egress_dns_reset(R);
  egress_dns_add_a(R, "tc.test", "192.0.2.60", 60);
  egress_dns_add_aaaa(R, "tc.test", "2001:db8::60", 60);
  egress_dns_set_truncate(R, "tc.test", true);
  struct ares_addrinfo *res = NULL;
  CU_ASSERT_EQUAL(resolve(R, "tc.test", AF_UNSPEC, &res), ARES_SUCCESS);
  CU_ASSERT_EQUAL(count_nodes(res, AF_INET), 1);
  CU_ASSERT_EQUAL(count_nodes(res, AF_INET6), 1);
  ares_freeaddrinfo(res);
  CU_ASSERT_EQUAL(egress_dns_tcp_queries(R), 2);
  CU_ASSERT_EQUAL(egress_dns_query_count(R, "tc.test"), 4); /* 2 over UDP, 2 over TCP */
}

static void test_truncate_tcp_broken(void) {
  egress_dns_reset(R);
  egress_dns_add_a(R, "tc.test", "192.0.2.61", 60);
  egress_dns_set_truncate(R, "tc.test", true);
  CU_ASSERT_EQUAL(egress_dns_set_tcp_mode(R, EGRESS_DNS_TCP_REFUSE), 0);
  CU_ASSERT_EQUAL(resolve_opts(R, "tc.test", AF_INET, 300, 1, 0, NULL), ARES_ECONNREFUSED);
  CU_ASSERT_EQUAL(egress_dns_tcp_queries(R), 0);
  CU_ASSERT_EQUAL(egress_dns_set_tcp_mode(R, EGRESS_DNS_TCP_CLOSE), 0);
  CU_ASSERT_EQUAL(resolve_opts(R, "tc.test", AF_INET, 300, 1, 0, NULL), ARES_ECONNREFUSED);
  CU_ASSERT_EQUAL(egress_dns_set_tcp_mode(R, EGRESS_DNS_TCP_SILENT), 0);
  CU_ASSERT_EQUAL(resolve_opts(R, "tc.test", AF_INET, 300, 1, 0, NULL), ARES_ETIMEOUT);
  CU_ASSERT_EQUAL(egress_dns_tcp_queries(R), 1); /* read and counted, never answered */
  /* Back to service on the same port. */
  CU_ASSERT_EQUAL(egress_dns_set_tcp_mode(R, EGRESS_DNS_TCP_SERVE), 0);
  CU_ASSERT_EQUAL(resolve_opts(R, "tc.test", AF_INET, 1000, 1, 0, NULL), ARES_SUCCESS);
  /* IGNTC: c-ares takes the empty truncated answer as it is. */
  CU_ASSERT_EQUAL(resolve_opts(R, "tc.test", AF_INET, 300, 1, CH_IGNTC, NULL), ARES_ENODATA);
}

static void test_cname_chain(void) {
  egress_dns_reset(R);
  egress_dns_add_cname(R, "alias.test", "mid.test", 100);
  egress_dns_add_cname(R, "mid.test", "Real.Test.", 50);
  egress_dns_add_a(R, "real.test", "192.0.2.70", 30);
  egress_dns_add_aaaa(R, "real.test", "2001:db8::70", 20);
  struct ares_addrinfo *res = NULL;
  CU_ASSERT_EQUAL(resolve(R, "alias.test", AF_UNSPEC, &res), ARES_SUCCESS);
  CU_ASSERT_EQUAL(count_nodes(res, AF_INET), 1);
  CU_ASSERT_EQUAL(count_nodes(res, AF_INET6), 1);
  CU_ASSERT_EQUAL(node_ttl(res, "192.0.2.70"), 30);
  size_t ncnames = 0;
  bool saw_alias = false, saw_mid = false;
  for (const struct ares_addrinfo_cname *c = res ? res->cnames : NULL; c; c = c->next) {
    ncnames++;
    if (!strcmp(c->alias, "alias.test") && !strcmp(c->name, "mid.test") && c->ttl == 100) saw_alias = true;
    if (!strcmp(c->alias, "mid.test") && !strcmp(c->name, "real.test") && c->ttl == 50) saw_mid = true;
  }
  CU_ASSERT_EQUAL(ncnames, 4); /* the chain once for A, once for AAAA */
  CU_ASSERT(saw_alias && saw_mid);
  ares_freeaddrinfo(res);
  /* Only the alias was asked: the responder follows the chain itself. */
  CU_ASSERT_EQUAL(egress_dns_query_count(R, "real.test"), 0);

  /* Dangling chain: NXDOMAIN with the chain, as a recursive resolver says. */
  egress_dns_add_cname(R, "dangling.test", "nowhere.test", 60);
  CU_ASSERT_EQUAL(resolve(R, "dangling.test", AF_UNSPEC, NULL), ARES_ENOTFOUND);
  /* A chain into a SERVFAIL name carries the SERVFAIL. */
  egress_dns_add_cname(R, "tofail.test", "sf.test", 60);
  egress_dns_set_rcode(R, "sf.test", EGRESS_DNS_SERVFAIL);
  CU_ASSERT_EQUAL(resolve_opts(R, "tofail.test", AF_UNSPEC, 500, 1, CH_NOCHECKRESP, NULL), ARES_ESERVFAIL);
  /* A loop ends; c-ares finds no address in it. */
  egress_dns_add_cname(R, "loop1.test", "loop2.test", 60);
  egress_dns_add_cname(R, "loop2.test", "loop1.test", 60);
  CU_ASSERT_EQUAL(resolve(R, "loop1.test", AF_UNSPEC, NULL), ARES_ENODATA);
}

static void test_many_addresses(void) {
  egress_dns_reset(R);
  for (int i = 0; i < 120; i++) {
    char ip[32];
    snprintf(ip, sizeof(ip), "10.1.%d.%d", i / 200, i % 200 + 1);
    CU_ASSERT_EQUAL(egress_dns_add_a(R, "big.test", ip, 60), 0);
  }
  struct ares_addrinfo *res = NULL;
  CU_ASSERT_EQUAL(resolve(R, "big.test", AF_INET, &res), ARES_SUCCESS);
  CU_ASSERT_EQUAL(count_nodes(res, AF_INET), 120);
  ares_freeaddrinfo(res);
  CU_ASSERT_EQUAL(egress_dns_tcp_queries(R), 1); /* 120*16 bytes do not fit 512: TC, then TCP */
  /* With EDNS (4096) the whole answer fits one datagram. */
  CU_ASSERT_EQUAL(resolve_opts(R, "big.test", AF_INET, 1000, 1, CH_EDNS, &res), ARES_SUCCESS);
  CU_ASSERT_EQUAL(count_nodes(res, AF_INET), 120);
  ares_freeaddrinfo(res);
  CU_ASSERT_EQUAL(egress_dns_tcp_queries(R), 1);
  /* TCP only (USEVC). */
  CU_ASSERT_EQUAL(resolve_opts(R, "big.test", AF_INET, 1000, 1, CH_USEVC, &res), ARES_SUCCESS);
  CU_ASSERT_EQUAL(count_nodes(res, AF_INET), 120);
  ares_freeaddrinfo(res);
  CU_ASSERT_EQUAL(egress_dns_tcp_queries(R), 2);
}

static void test_sequence(void) {
  egress_dns_reset(R);
  egress_dns_add_a(R, "rebind.test", "93.184.216.34", 1);
  CU_ASSERT_EQUAL(egress_dns_next_set(R, "rebind.test"), 1);
  egress_dns_add_a(R, "rebind.test", "127.0.0.1", 1);
  const char *expect[] = { "93.184.216.34", "127.0.0.1", "93.184.216.34", "127.0.0.1" };
  for (int i = 0; i < 4; i++) {
    struct ares_addrinfo *res = NULL;
    char ip[64];
    CU_ASSERT_EQUAL(resolve(R, "rebind.test", AF_UNSPEC, &res), ARES_SUCCESS);
    CU_ASSERT_STRING_EQUAL(first_ipv4(res, ip, sizeof(ip)), expect[i]);
    ares_freeaddrinfo(res);
  }
  /* Sticky: stays on the last set. */
  egress_dns_add_a(R, "sticky.test", "93.184.216.34", 1);
  egress_dns_next_set(R, "sticky.test");
  egress_dns_add_a(R, "sticky.test", "127.0.0.1", 1);
  egress_dns_set_sticky(R, "sticky.test", true);
  const char *expect2[] = { "93.184.216.34", "127.0.0.1", "127.0.0.1", "127.0.0.1" };
  for (int i = 0; i < 4; i++) {
    struct ares_addrinfo *res = NULL;
    char ip[64];
    CU_ASSERT_EQUAL(resolve(R, "sticky.test", AF_INET, &res), ARES_SUCCESS);
    CU_ASSERT_STRING_EQUAL(first_ipv4(res, ip, sizeof(ip)), expect2[i]);
    ares_freeaddrinfo(res);
  }
  /* Faults are per set: first SERVFAIL, then an answer. */
  egress_dns_set_rcode(R, "flaky.test", EGRESS_DNS_SERVFAIL);
  egress_dns_next_set(R, "flaky.test");
  egress_dns_add_a(R, "flaky.test", "192.0.2.80", 60);
  CU_ASSERT_EQUAL(resolve_opts(R, "flaky.test", AF_INET, 500, 1, CH_NOCHECKRESP, NULL), ARES_ESERVFAIL);
  CU_ASSERT_EQUAL(resolve_opts(R, "flaky.test", AF_INET, 500, 1, 0, NULL), ARES_SUCCESS);
  CU_ASSERT_EQUAL(egress_dns_query_count_type(R, "flaky.test", 1), 2);
}

typedef struct thread_arg {
  int index;
  int ok;
} thread_arg_t;

static void *thread_main(void *p) {
  thread_arg_t *a = p;
  ares_channel ch = channel_for(R, 2000, 2, 0);
  if (!ch) return NULL;
  int pending = 0;
  gai_t g[25];
  char names[25][64];
  for (int i = 0; i < 25; i++) {
    snprintf(names[i], sizeof(names[i]), "t%d-n%d.threads.test", a->index, i % 5);
    gai_start(ch, names[i], AF_UNSPEC, &g[i], &pending);
  }
  drive(ch, &pending);
  for (int i = 0; i < 25; i++) {
    char ip[64], want[64];
    snprintf(want, sizeof(want), "10.%d.%d.1", a->index, i % 5);
    if (g[i].status == ARES_SUCCESS && !strcmp(first_ipv4(g[i].res, ip, sizeof(ip)), want)) a->ok++;
    if (g[i].res) ares_freeaddrinfo(g[i].res);
  }
  ares_destroy(ch);
  return NULL;
}

static void test_threads(void) {
  egress_dns_reset(R);
  enum { NT = 8 };
  for (int t = 0; t < NT; t++)
    for (int i = 0; i < 5; i++) {
      char name[64], ip[64];
      snprintf(name, sizeof(name), "t%d-n%d.threads.test", t, i);
      snprintf(ip, sizeof(ip), "10.%d.%d.1", t, i);
      egress_dns_add_a(R, name, ip, 60);
      egress_dns_add_aaaa(R, name, "2001:db8::5", 60);
      if (i == 4) egress_dns_set_delay_ms(R, name, 50);
    }
  pthread_t th[NT];
  thread_arg_t args[NT];
  for (int t = 0; t < NT; t++) {
    args[t] = (thread_arg_t){ t, 0 };
    CU_ASSERT_EQUAL_FATAL(pthread_create(&th[t], NULL, thread_main, &args[t]), 0);
  }
  /* Scripting while queries fly must be safe. */
  for (int i = 0; i < 200; i++) {
    char name[64];
    snprintf(name, sizeof(name), "churn%d.test", i);
    egress_dns_add_a(R, name, "192.0.2.99", 1);
    egress_dns_query_count(R, "t0-n0.threads.test");
  }
  for (int t = 0; t < NT; t++) pthread_join(th[t], NULL);
  for (int t = 0; t < NT; t++) CU_ASSERT_EQUAL(args[t].ok, 25);
  CU_ASSERT_EQUAL(egress_dns_total_queries(R), NT * 25 * 2);
  CU_ASSERT_EQUAL(egress_dns_query_count(R, "t3-n2.threads.test"), 10);
}

static void test_ipv6_bind(void) {
  egress_dns_responder_t *r6 = egress_dns_start("::1");
  if (!r6 && (errno == EADDRNOTAVAIL || errno == EAFNOSUPPORT)) {
    printf("(no ::1 on this host: skipped) ");
    return;
  }
  CU_ASSERT_PTR_NOT_NULL_FATAL(r6);
  char csv[64];
  CU_ASSERT_EQUAL(strncmp(egress_dns_server_csv(r6, csv, sizeof(csv)), "[::1]:", 6), 0);
  egress_dns_add_aaaa(r6, "six.test", "2001:db8::6", 60);
  egress_dns_add_a(r6, "six.test", "192.0.2.6", 60);
  struct ares_addrinfo *res = NULL;
  CU_ASSERT_EQUAL(resolve(r6, "six.test", AF_UNSPEC, &res), ARES_SUCCESS);
  CU_ASSERT_EQUAL(count_nodes(res, AF_UNSPEC), 2);
  ares_freeaddrinfo(res);
  egress_dns_set_truncate(r6, "six.test", true);
  CU_ASSERT_EQUAL(resolve(r6, "six.test", AF_INET6, NULL), ARES_SUCCESS);
  CU_ASSERT_EQUAL(egress_dns_tcp_queries(r6), 1);
  egress_dns_stop(r6);
}

static int count_fds(void) {
  int n = 0;
  DIR *d = opendir("/proc/self/fd");
  if (!d) return -1;
  while (readdir(d)) n++;
  closedir(d);
  return n;
}

static void test_start_stop_many(void) {
  int before = count_fds();
  for (int i = 0; i < 150; i++) {
    egress_dns_responder_t *r = egress_dns_start(i % 2 ? "127.0.0.1" : NULL);
    CU_ASSERT_PTR_NOT_NULL_FATAL(r);
    CU_ASSERT(egress_dns_port(r) > 0);
    if (i % 10 == 0) {
      egress_dns_add_a(r, "s.test", "192.0.2.1", 60);
      egress_dns_set_delay_ms(r, "s.test", 5000); /* pending at stop: freed, not sent */
      CU_ASSERT_EQUAL(resolve_opts(r, "s.test", AF_INET, 100, 1, CH_USEVC, NULL), ARES_ETIMEOUT);
      egress_dns_set_tcp_mode(r, EGRESS_DNS_TCP_REFUSE);
    }
    egress_dns_stop(r);
  }
  CU_ASSERT_EQUAL(count_fds(), before);
  egress_dns_stop(NULL);
  errno = 0;
  CU_ASSERT_PTR_NULL(egress_dns_start("not-an-ip"));
  CU_ASSERT_PTR_NULL(egress_dns_start("192.0.2.1")); /* not ours: cannot bind */
  CU_ASSERT_EQUAL(count_fds(), before);
}

/* How c-ares 1.18.1 maps each fault; the resolver's reasons rest on this. */
static void test_fault_mapping(void) {
  egress_dns_reset(R);
  egress_dns_add_a(R, "ok.test", "192.0.2.90", 60);
  egress_dns_set_rcode(R, "nodata.test", 0);
  const char *faults[] = { "truncated-rr", "short", "loop", "bad-rdlen", "bad-label" };
  int want_gai[] = { ARES_EBADRESP, ARES_ETIMEOUT, ARES_EBADRESP, ARES_ENODATA, ARES_EBADRESP };
  for (int k = 0; k < 5; k++) {
    char name[64];
    snprintf(name, sizeof(name), "mal-%s.test", faults[k]);
    egress_dns_add_a(R, name, "192.0.2.91", 60);
    egress_dns_set_malformed(R, name, k + 1);
    int st = resolve_opts(R, name, AF_INET, 300, 1, 0, NULL);
    printf("\n    malformed %-13s getaddrinfo(AF_INET) -> %s", faults[k], ares_strerror(st));
    CU_ASSERT_EQUAL(st, want_gai[k]);
  }
  egress_dns_add_a(R, "wrongid.test", "192.0.2.92", 60);
  egress_dns_set_wrong_id(R, "wrongid.test", true);
  CU_ASSERT_EQUAL(resolve_opts(R, "wrongid.test", AF_INET, 300, 1, 0, NULL), ARES_ETIMEOUT);
  egress_dns_add_a(R, "wrongname.test", "192.0.2.93", 60);
  egress_dns_set_wrong_name(R, "wrongname.test", true);
  struct ares_addrinfo *res = NULL;
  int st = resolve_opts(R, "wrongname.test", AF_INET, 300, 1, 0, &res);
  printf("\n    wrong owner name getaddrinfo -> %s with %zu addresses", ares_strerror(st),
         count_nodes(res, AF_UNSPEC));
  CU_ASSERT_EQUAL(st, ARES_ENODATA);
  CU_ASSERT_EQUAL(count_nodes(res, AF_UNSPEC), 0);
  if (res) ares_freeaddrinfo(res);
  CU_ASSERT_EQUAL(resolve_opts(R, "nodata.test", AF_UNSPEC, 300, 1, 0, NULL), ARES_ENODATA);

  /* ares_query alone (no getaddrinfo on top). */
  CU_ASSERT_EQUAL(raw_ares_query(R, "ok.test", 1, 300), ARES_SUCCESS);
  CU_ASSERT_EQUAL(raw_ares_query(R, "nodata.test", 1, 300), ARES_ENODATA);
  CU_ASSERT_EQUAL(raw_ares_query(R, "mal-truncated-rr.test", 1, 300), ARES_SUCCESS);
  CU_ASSERT_EQUAL(raw_ares_query(R, "wrongid.test", 1, 300), ARES_ETIMEOUT);

  /* A closed port: ICMP port unreachable. */
  egress_dns_responder_t *tmp = egress_dns_start("127.0.0.1");
  CU_ASSERT_PTR_NOT_NULL_FATAL(tmp);
  char csv[64];
  egress_dns_server_csv(tmp, csv, sizeof(csv));
  egress_dns_stop(tmp);
  /* ares_query, and getaddrinfo with tries >= 2 or one family, report it as
   * ECONNREFUSED; getaddrinfo(AF_UNSPEC) with tries=1 has been seen to end in
   * ETIMEOUT instead (the A and AAAA queries share the socket). */
  const struct {
    int family, tries;
  } cases[] = { { AF_INET, 1 }, { AF_INET, 3 }, { AF_UNSPEC, 2 }, { AF_UNSPEC, 1 } };
  for (size_t i = 0; i < 4; i++) {
    ares_channel ch = make_channel(csv, 300, cases[i].tries, 0);
    CU_ASSERT_PTR_NOT_NULL_FATAL(ch);
    int pending = 0;
    gai_t g;
    gai_start(ch, "ok.test", cases[i].family, &g, &pending);
    drive(ch, &pending);
    ares_destroy(ch);
    printf("\n    closed port getaddrinfo(%s, tries=%d) -> %s",
           cases[i].family == AF_INET ? "AF_INET" : "AF_UNSPEC", cases[i].tries, ares_strerror(g.status));
    if (i < 3) {
      CU_ASSERT_EQUAL(g.status, ARES_ECONNREFUSED);
    } else {
      CU_ASSERT(g.status == ARES_ECONNREFUSED || g.status == ARES_ETIMEOUT);
    }
    if (g.res) ares_freeaddrinfo(g.res);
  }
  ares_channel ch = make_channel(csv, 300, 1, 0);
  CU_ASSERT_PTR_NOT_NULL_FATAL(ch);
  int pending = 1;
  qres_t q = { &pending, -1, 0 };
  ares_query(ch, "ok.test", 1, 1, query_cb, &q);
  drive(ch, &pending);
  ares_destroy(ch);
  CU_ASSERT_EQUAL(q.status, ARES_ECONNREFUSED);
  printf("\n    ");
}

/* ---------- raw wire tests ---------- */

static int udp_to(egress_dns_responder_t *r) {
  int fd = socket(AF_INET, SOCK_DGRAM, 0);
  struct sockaddr_in sin = { .sin_family = AF_INET, .sin_port = htons(egress_dns_port(r)) };
  inet_pton(AF_INET, "127.0.0.1", &sin.sin_addr);
  if (fd >= 0 && connect(fd, (struct sockaddr *)&sin, sizeof(sin)) != 0) {
    close(fd);
    return -1;
  }
  return fd;
}

static int tcp_to(egress_dns_responder_t *r) {
  int fd = socket(AF_INET, SOCK_STREAM, 0);
  struct sockaddr_in sin = { .sin_family = AF_INET, .sin_port = htons(egress_dns_port(r)) };
  inet_pton(AF_INET, "127.0.0.1", &sin.sin_addr);
  if (fd >= 0 && connect(fd, (struct sockaddr *)&sin, sizeof(sin)) != 0) {
    close(fd);
    return -1;
  }
  return fd;
}

/* Receive one datagram within ms; returns its length or -1. */
static int recv_wait(int fd, uint8_t *buf, size_t len, int ms) {
  struct pollfd p = { .fd = fd, .events = POLLIN };
  if (poll(&p, 1, ms) <= 0) return -1;
  return (int)recv(fd, buf, len, 0);
}

/* Read exactly len bytes from a stream within ms. */
static int recv_all(int fd, uint8_t *buf, size_t len, int ms) {
  size_t got = 0;
  uint64_t end = now_ms() + (uint64_t)ms;
  while (got < len) {
    uint64_t now = now_ms();
    if (now >= end) return -1;
    struct pollfd p = { .fd = fd, .events = POLLIN };
    if (poll(&p, 1, (int)(end - now)) <= 0) return -1;
    ssize_t n = recv(fd, buf + got, len - got, 0);
    if (n <= 0) return -1;
    got += (size_t)n;
  }
  return 0;
}

static size_t make_query(uint8_t *buf, unsigned id, unsigned flags, const char *name, unsigned qtype,
                         unsigned edns) {
  size_t n = 0;
  buf[n++] = (uint8_t)(id >> 8);
  buf[n++] = (uint8_t)id;
  buf[n++] = (uint8_t)(flags >> 8);
  buf[n++] = (uint8_t)flags;
  const uint8_t counts[8] = { 0, 1, 0, 0, 0, 0, 0, (uint8_t)(edns ? 1 : 0) };
  memcpy(buf + n, counts, 8);
  n += 8;
  const char *p = name;
  while (*p) {
    const char *dot = strchr(p, '.');
    size_t l = dot ? (size_t)(dot - p) : strlen(p);
    buf[n++] = (uint8_t)l;
    memcpy(buf + n, p, l);
    n += l;
    p += l + (dot ? 1 : 0);
  }
  buf[n++] = 0;
  buf[n++] = (uint8_t)(qtype >> 8);
  buf[n++] = (uint8_t)qtype;
  buf[n++] = 0;
  buf[n++] = 1;
  if (edns) {
    const uint8_t opt[11] = { 0, 0, 41, (uint8_t)(edns >> 8), (uint8_t)edns, 0, 0, 0, 0, 0, 0 };
    memcpy(buf + n, opt, 11);
    n += 11;
  }
  return n;
}

static unsigned u16(const uint8_t *p) { return ((unsigned)p[0] << 8) | p[1]; }

static void test_wire_format(void) {
  egress_dns_reset(R);
  egress_dns_add_a(R, "wire.test", "192.0.2.100", 1234);
  egress_dns_add_aaaa(R, "wire.test", "2001:db8::100", 99);
  int fd = udp_to(R);
  CU_ASSERT_FATAL(fd >= 0);
  uint8_t q[600], a[70000];
  size_t ql = make_query(q, 0xBEEF, 0x0100, "WiRe.test", 1, 0);
  send(fd, q, ql, 0);
  int n = recv_wait(fd, a, sizeof(a), 2000);
  CU_ASSERT_FATAL(n >= 12);
  CU_ASSERT_EQUAL(u16(a), 0xBEEF);
  unsigned fl = u16(a + 2);
  CU_ASSERT(fl & 0x8000);          /* QR */
  CU_ASSERT(fl & 0x0400);          /* AA */
  CU_ASSERT(fl & 0x0100);          /* RD copied */
  CU_ASSERT(fl & 0x0080);          /* RA */
  CU_ASSERT_EQUAL(fl & 0x020F, 0); /* no TC, NOERROR */
  CU_ASSERT_EQUAL(u16(a + 4), 1);
  CU_ASSERT_EQUAL(u16(a + 6), 1);
  CU_ASSERT_EQUAL(u16(a + 10), 0);
  CU_ASSERT_EQUAL_FATAL((size_t)n, ql + 16);
  CU_ASSERT_EQUAL(memcmp(a + 12, q + 12, ql - 12), 0); /* question echoed, case kept */
  const uint8_t rr[] = { 0xC0, 0x0C, 0, 1, 0, 1, 0, 0, 0x04, 0xD2, 0, 4, 192, 0, 2, 100 };
  CU_ASSERT_EQUAL(memcmp(a + ql, rr, sizeof(rr)), 0);

  /* RD=0 stays 0; EDNS is not echoed; ANY gets both records. */
  ql = make_query(q, 7, 0, "wire.test", 255, 1232);
  send(fd, q, ql, 0);
  n = recv_wait(fd, a, sizeof(a), 2000);
  CU_ASSERT_FATAL(n >= 12);
  CU_ASSERT_EQUAL(u16(a + 2) & 0x0100, 0);
  CU_ASSERT_EQUAL(u16(a + 6), 2);
  CU_ASSERT_EQUAL(u16(a + 10), 0);

  /* Another qtype for a known name: NODATA. */
  ql = make_query(q, 8, 0x0100, "wire.test", 15, 0);
  send(fd, q, ql, 0);
  n = recv_wait(fd, a, sizeof(a), 2000);
  CU_ASSERT_FATAL(n >= 12);
  CU_ASSERT_EQUAL(u16(a + 2) & 0x000F, 0);
  CU_ASSERT_EQUAL(u16(a + 6), 0);

  /* Wrong owner name: records owned by another name. */
  egress_dns_set_wrong_name(R, "wire.test", true);
  ql = make_query(q, 9, 0x0100, "wire.test", 1, 0);
  send(fd, q, ql, 0);
  n = recv_wait(fd, a, sizeof(a), 2000);
  CU_ASSERT_FATAL(n > (int)ql + 21);
  CU_ASSERT_EQUAL(memcmp(a + ql, "\x0bwrong-owner\x07invalid", 21), 0);
  egress_dns_set_wrong_name(R, "wire.test", false);

  /* Wrong id: differs from the query's. */
  egress_dns_set_wrong_id(R, "wire.test", true);
  ql = make_query(q, 10, 0x0100, "wire.test", 1, 0);
  send(fd, q, ql, 0);
  n = recv_wait(fd, a, sizeof(a), 2000);
  CU_ASSERT_FATAL(n >= 12);
  CU_ASSERT_NOT_EQUAL(u16(a), 10);
  egress_dns_set_wrong_id(R, "wire.test", false);

  /* 120 records: TC over plain UDP (<= 512), TC with EDNS 1232, whole with EDNS 4096. */
  for (int i = 0; i < 120; i++) {
    char ip[32];
    snprintf(ip, sizeof(ip), "10.2.0.%d", i + 1);
    egress_dns_add_a(R, "big.test", ip, 60);
  }
  const unsigned sizes[] = { 0, 1232, 4096 };
  for (int k = 0; k < 3; k++) {
    ql = make_query(q, 11, 0x0100, "big.test", 1, sizes[k]);
    send(fd, q, ql, 0);
    n = recv_wait(fd, a, sizeof(a), 2000);
    CU_ASSERT_FATAL(n >= 12);
    if (k < 2) {
      CU_ASSERT(u16(a + 2) & 0x0200);
      CU_ASSERT_EQUAL(u16(a + 6), 0);
      CU_ASSERT(n <= 512);
    } else {
      CU_ASSERT_EQUAL(u16(a + 2) & 0x0200, 0);
      CU_ASSERT_EQUAL(u16(a + 6), 120);
    }
  }
  close(fd);

  /* TCP: two queries in one write, then a third split byte by byte. */
  fd = tcp_to(R);
  CU_ASSERT_FATAL(fd >= 0);
  uint8_t two[1400];
  size_t l1 = make_query(two + 2, 21, 0x0100, "big.test", 1, 0);
  two[0] = (uint8_t)(l1 >> 8);
  two[1] = (uint8_t)l1;
  size_t l2 = make_query(two + 4 + l1, 22, 0x0100, "wire.test", 28, 0);
  two[2 + l1] = (uint8_t)(l2 >> 8);
  two[3 + l1] = (uint8_t)l2;
  CU_ASSERT_EQUAL(send(fd, two, 4 + l1 + l2, 0), (ssize_t)(4 + l1 + l2));
  for (int k = 0; k < 2; k++) {
    uint8_t lenb[2];
    CU_ASSERT_EQUAL_FATAL(recv_all(fd, lenb, 2, 2000), 0);
    size_t ml = u16(lenb);
    CU_ASSERT_EQUAL_FATAL(recv_all(fd, a, ml, 2000), 0);
    CU_ASSERT_EQUAL(u16(a), k == 0 ? 21u : 22u);
    CU_ASSERT_EQUAL(u16(a + 6), k == 0 ? 120u : 1u);
    CU_ASSERT_EQUAL(u16(a + 2) & 0x0200, 0);
  }
  for (size_t i = 0; i < 2 + l1; i++) {
    CU_ASSERT_EQUAL(send(fd, two + i, 1, 0), 1);
    usleep(200);
  }
  uint8_t lenb[2];
  CU_ASSERT_EQUAL_FATAL(recv_all(fd, lenb, 2, 2000), 0);
  CU_ASSERT_EQUAL_FATAL(recv_all(fd, a, u16(lenb), 2000), 0);
  CU_ASSERT_EQUAL(u16(a + 6), 120);
  close(fd);
}

/* Send datagram, and check whether a reply comes: returns its rcode, or -1 for none. */
static int udp_exchange(int fd, const uint8_t *q, size_t ql, int ms) {
  uint8_t a[2048];
  send(fd, q, ql, 0);
  int n = recv_wait(fd, a, sizeof(a), ms);
  if (n < 4) return -1;
  return (int)(u16(a + 2) & 0x000F);
}

static void test_hostile_queries(void) {
  egress_dns_reset(R);
  egress_dns_add_a(R, "alive.test", "192.0.2.110", 60);
  int fd = udp_to(R);
  CU_ASSERT_FATAL(fd >= 0);
  uint8_t q[600];
  size_t good_len = make_query(q, 0x1234, 0x0100, "alive.test", 1, 0);
  uint8_t good[600];
  memcpy(good, q, good_len);

  /* Shorter than a header: silence. */
  for (size_t l = 0; l < 12; l++) CU_ASSERT_EQUAL(udp_exchange(fd, good, l, 50), -1);
  /* A response (QR=1): silence, never a reply loop. */
  memcpy(q, good, good_len);
  q[2] |= 0x80;
  CU_ASSERT_EQUAL(udp_exchange(fd, q, good_len, 50), -1);
  /* Every truncation of the question: FORMERR. */
  for (size_t l = 12; l < good_len; l++) CU_ASSERT_EQUAL(udp_exchange(fd, good, l, 500), EGRESS_DNS_FORMERR);
  /* QDCOUNT 0 and 2. */
  memcpy(q, good, good_len);
  q[5] = 0;
  CU_ASSERT_EQUAL(udp_exchange(fd, q, good_len, 500), EGRESS_DNS_FORMERR);
  q[5] = 2;
  CU_ASSERT_EQUAL(udp_exchange(fd, q, good_len, 500), EGRESS_DNS_FORMERR);
  /* Label length 64 and the 0x40/0x80 label types. */
  const uint8_t bad_first[] = { 64, 0x40, 0x80 };
  for (size_t k = 0; k < sizeof(bad_first); k++) {
    memcpy(q, good, good_len);
    q[12] = bad_first[k];
    CU_ASSERT_EQUAL(udp_exchange(fd, q, good_len, 500), EGRESS_DNS_FORMERR);
  }
  /* A label running past the end. */
  memcpy(q, good, good_len);
  q[12] = 60;
  CU_ASSERT_EQUAL(udp_exchange(fd, q, good_len, 500), EGRESS_DNS_FORMERR);
  /* Compression pointer to itself, forwards, and to the end. */
  const uint16_t ptrs[] = { 0xC00C, 0xC00E, 0xC0FF, 0xFFFF };
  for (size_t k = 0; k < 4; k++) {
    memcpy(q, good, good_len);
    q[12] = (uint8_t)(ptrs[k] >> 8);
    q[13] = (uint8_t)ptrs[k];
    CU_ASSERT_EQUAL(udp_exchange(fd, q, good_len, 500), EGRESS_DNS_FORMERR);
  }
  /* A pointer as the last byte. */
  memcpy(q, good, 12);
  q[12] = 0xC0;
  CU_ASSERT_EQUAL(udp_exchange(fd, q, 13, 500), EGRESS_DNS_FORMERR);
  /* A name over 255 bytes: 5 labels of 63. */
  size_t n = 12;
  memcpy(q, good, 12);
  for (int k = 0; k < 5; k++) {
    q[n++] = 63;
    memset(q + n, 'a', 63);
    n += 63;
  }
  q[n++] = 0;
  memcpy(q + n, "\0\1\0\1", 4);
  n += 4;
  CU_ASSERT_EQUAL(udp_exchange(fd, q, n, 500), EGRESS_DNS_FORMERR);
  /* Garbage in the additional section only costs EDNS: still answered. */
  memcpy(q, good, good_len);
  q[11] = 3;
  memcpy(q + good_len, "\xC0\xC0\xC0", 3);
  CU_ASSERT_EQUAL(udp_exchange(fd, q, good_len + 3, 500), EGRESS_DNS_NOERROR);
  /* A name with odd bytes is answered (NXDOMAIN) and counted under an escaped name. */
  size_t ol = make_query(q, 5, 0x0100, "a.b", 1, 0);
  q[13] = '.';
  CU_ASSERT_EQUAL(udp_exchange(fd, q, ol, 500), EGRESS_DNS_NXDOMAIN);
  CU_ASSERT_EQUAL(egress_dns_query_count(R, "\\046.b"), 1);
  /* Opcode other than QUERY: NOTIMP. */
  memcpy(q, good, good_len);
  q[2] = (uint8_t)(q[2] | (2 << 3));
  CU_ASSERT_EQUAL(udp_exchange(fd, q, good_len, 500), EGRESS_DNS_NOTIMP);

  /* Random bytes, and random mutations of a good query. */
  unsigned seed = 12345;
  for (int i = 0; i < 3000; i++) {
    size_t l = (size_t)(rand_r(&seed) % 300);
    if (i % 2) {
      for (size_t k = 0; k < l; k++) q[k] = (uint8_t)rand_r(&seed);
    } else {
      memcpy(q, good, good_len);
      l = good_len;
      for (int m = 0; m < 3; m++) q[rand_r(&seed) % good_len] = (uint8_t)rand_r(&seed);
      q[2] &= 0x7F;
    }
    send(fd, q, l, 0);
    if (i % 100 == 0) { /* drain what came back */
      uint8_t a[2048];
      while (recv_wait(fd, a, sizeof(a), 20) >= 0) {}
    }
  }
  uint8_t a[2048];
  while (recv_wait(fd, a, sizeof(a), 50) >= 0) {}
  CU_ASSERT(egress_dns_bad_packets(R) > 1500);
  /* Still alive and right. */
  CU_ASSERT_EQUAL(udp_exchange(fd, good, good_len, 2000), EGRESS_DNS_NOERROR);
  close(fd);

  /* TCP: garbage messages, a zero length, a partial message then hang-up,
   * and many connections at once. */
  fd = tcp_to(R);
  CU_ASSERT_FATAL(fd >= 0);
  uint8_t junk[] = { 0, 0, 0, 3, 1, 2, 3, 0, 12, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0 };
  send(fd, junk, sizeof(junk), 0);
  uint8_t framed[602];
  framed[0] = 0;
  framed[1] = (uint8_t)good_len;
  memcpy(framed + 2, good, good_len);
  send(fd, framed, 2 + good_len, 0);
  /* Replies: FORMERR for the 12-byte zero header, then the answer. */
  uint8_t lenb[2];
  CU_ASSERT_EQUAL_FATAL(recv_all(fd, lenb, 2, 2000), 0);
  CU_ASSERT_EQUAL_FATAL(recv_all(fd, a, u16(lenb), 2000), 0);
  CU_ASSERT_EQUAL(u16(a + 2) & 0xF, EGRESS_DNS_FORMERR);
  CU_ASSERT_EQUAL_FATAL(recv_all(fd, lenb, 2, 2000), 0);
  CU_ASSERT_EQUAL_FATAL(recv_all(fd, a, u16(lenb), 2000), 0);
  CU_ASSERT_EQUAL(u16(a), 0x1234);
  CU_ASSERT_EQUAL(u16(a + 6), 1);
  send(fd, "\xff\xff\x01\x02", 4, 0); /* promises 65535 bytes, then leaves */
  close(fd);
  int fds[100];
  for (int i = 0; i < 100; i++) fds[i] = tcp_to(R);
  for (int i = 0; i < 100; i++)
    if (fds[i] >= 0) close(fds[i]);
  CU_ASSERT_EQUAL(udp_exchange(udp_to(R), good, good_len, 2000), EGRESS_DNS_NOERROR);
}

static void test_reset(void) {
  egress_dns_add_a(R, "gone.test", "192.0.2.120", 60);
  CU_ASSERT_EQUAL(resolve(R, "gone.test", AF_INET, NULL), ARES_SUCCESS);
  CU_ASSERT(egress_dns_total_queries(R) > 0);
  egress_dns_reset(R);
  CU_ASSERT_EQUAL(egress_dns_total_queries(R), 0);
  CU_ASSERT_EQUAL(egress_dns_query_count(R, "gone.test"), 0);
  CU_ASSERT_EQUAL(egress_dns_bad_packets(R), 0);
  CU_ASSERT_EQUAL(resolve(R, "gone.test", AF_INET, NULL), ARES_ENOTFOUND);
}

/* ---------- the standalone program ---------- */

static void test_standalone(void) {
  const char *bdir = getenv("EGRESS_TEST_BUILDDIR");
  char exe[1024];
  snprintf(exe, sizeof(exe), "%s/dns/egress-test-dns", bdir ? bdir : "tests");
  CU_ASSERT_EQUAL_FATAL(access(exe, X_OK), 0);
  char zone[] = "/tmp/egress-test-dns-zoneXXXXXX";
  int zfd = mkstemp(zone);
  CU_ASSERT_FATAL(zfd >= 0);
  const char *text =
      "# test zone\n"
      "www.zone.test A 192.0.2.130 77   # trailing comment\n"
      "www.zone.test AAAA 2001:db8::130\n"
      "alias.zone.test CNAME www.zone.test 5\n"
      "sf.zone.test RCODE SERVFAIL\n"
      "nodata.zone.test RCODE NODATA\n"
      "drop.zone.test DROP\n"
      "tc.zone.test A 192.0.2.131\n"
      "tc.zone.test TRUNCATE\n"
      "rebind.zone.test SEQUENCE A 93.184.216.34 | A 127.0.0.1\n"
      "seq2.zone.test SEQUENCE RCODE SERVFAIL|A 192.0.2.132 9|DROP\n"
      "\n"
      "* DEFAULT REFUSED\n";
  CU_ASSERT_EQUAL(write(zfd, text, strlen(text)), (ssize_t)strlen(text));
  close(zfd);

  int in[2], out[2], err[2];
  CU_ASSERT_FATAL(pipe(in) == 0 && pipe(out) == 0 && pipe(err) == 0);
  pid_t pid = fork();
  CU_ASSERT_FATAL(pid >= 0);
  if (pid == 0) {
    dup2(in[0], 0);
    dup2(out[1], 1);
    dup2(err[1], 2);
    close(in[1]);
    close(out[0]);
    close(err[0]);
    execl(exe, exe, "--zone", zone, "--stdin-lifeline", (char *)NULL);
    _exit(127);
  }
  close(in[0]);
  close(out[1]);
  close(err[1]);
  char line[64] = { 0 };
  size_t got = 0;
  while (got < sizeof(line) - 1) {
    struct pollfd p = { .fd = out[0], .events = POLLIN };
    if (poll(&p, 1, 5000) <= 0) break;
    ssize_t k = read(out[0], line + got, 1);
    if (k <= 0 || line[got] == '\n') break;
    got++;
  }
  unsigned port = 0;
  CU_ASSERT_EQUAL(sscanf(line, "PORT %u", &port), 1);
  if (port) {
    char csv[64];
    snprintf(csv, sizeof(csv), "127.0.0.1:%u", port);
    struct {
      const char *name;
      int family;
      int want;
    } cases[] = {
      { "www.zone.test", AF_UNSPEC, ARES_SUCCESS },        { "alias.zone.test", AF_UNSPEC, ARES_SUCCESS },
      { "sf.zone.test", AF_INET, ARES_ECONNREFUSED },      { "nodata.zone.test", AF_INET, ARES_ENODATA },
      { "drop.zone.test", AF_INET, ARES_ETIMEOUT },        { "tc.zone.test", AF_INET, ARES_SUCCESS },
      { "unknown.zone.test", AF_INET, ARES_ECONNREFUSED }, /* REFUSED: see test_rcodes */
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
      ares_channel ch = make_channel(csv, 300, 1, 0);
      CU_ASSERT_PTR_NOT_NULL_FATAL(ch);
      int pending = 0;
      gai_t g;
      gai_start(ch, cases[i].name, cases[i].family, &g, &pending);
      drive(ch, &pending);
      CU_ASSERT_EQUAL(g.status, cases[i].want);
      if (i == 0) {
        CU_ASSERT_EQUAL(count_nodes(g.res, AF_UNSPEC), 2);
        CU_ASSERT_EQUAL(node_ttl(g.res, "192.0.2.130"), 77);
        CU_ASSERT_EQUAL(node_ttl(g.res, "2001:db8::130"), 60);
      }
      if (g.res) ares_freeaddrinfo(g.res);
      ares_destroy(ch);
    }
    const char *seq[] = { "93.184.216.34", "127.0.0.1", "93.184.216.34" };
    for (int i = 0; i < 3; i++) {
      ares_channel ch = make_channel(csv, 500, 1, 0);
      CU_ASSERT_PTR_NOT_NULL_FATAL(ch);
      int pending = 0;
      gai_t g;
      char ip[64];
      gai_start(ch, "rebind.zone.test", AF_INET, &g, &pending);
      drive(ch, &pending);
      CU_ASSERT_STRING_EQUAL(first_ipv4(g.res, ip, sizeof(ip)), seq[i]);
      if (g.res) ares_freeaddrinfo(g.res);
      ares_destroy(ch);
    }
    /* seq2: SERVFAIL, then an answer with TTL 9, then silence, then round again. */
    const int want2[] = { ARES_ESERVFAIL, ARES_SUCCESS, ARES_ETIMEOUT, ARES_ESERVFAIL };
    for (int i = 0; i < 4; i++) {
      ares_channel ch = make_channel(csv, 200, 1, CH_NOCHECKRESP);
      CU_ASSERT_PTR_NOT_NULL_FATAL(ch);
      int pending = 0;
      gai_t g;
      gai_start(ch, "seq2.zone.test", AF_INET, &g, &pending);
      drive(ch, &pending);
      CU_ASSERT_EQUAL(g.status, want2[i]);
      if (i == 1) CU_ASSERT_EQUAL(node_ttl(g.res, "192.0.2.132"), 9);
      if (g.res) ares_freeaddrinfo(g.res);
      ares_destroy(ch);
    }
  }
  close(in[1]); /* the lifeline: EOF on its stdin ends it */
  int status = -1;
  uint64_t t0 = now_ms();
  while (waitpid(pid, &status, WNOHANG) == 0 && now_ms() - t0 < 5000) usleep(10000);
  if (now_ms() - t0 >= 5000) {
    kill(pid, SIGKILL);
    waitpid(pid, &status, 0);
  }
  CU_ASSERT(WIFEXITED(status) && WEXITSTATUS(status) == 0);
  char errbuf[4096] = { 0 };
  ssize_t el = read(err[0], errbuf, sizeof(errbuf) - 1);
  CU_ASSERT(el > 0 && strstr(errbuf, "www.zone.test 2 A 1 AAAA 1") != NULL);
  close(out[0]);
  close(err[0]);

  /* A bad zone line is fatal (exit 2), naming the line. */
  zfd = open(zone, O_WRONLY | O_TRUNC);
  CU_ASSERT_FATAL(zfd >= 0);
  const char *bad = "ok.test A 192.0.2.1\nbad.test A not-an-ip\n";
  CU_ASSERT_EQUAL(write(zfd, bad, strlen(bad)), (ssize_t)strlen(bad));
  close(zfd);
  pid = fork();
  CU_ASSERT_FATAL(pid >= 0);
  if (pid == 0) {
    int dn = open("/dev/null", O_RDWR);
    dup2(dn, 1);
    dup2(dn, 2);
    execl(exe, exe, "--zone", zone, (char *)NULL);
    _exit(127);
  }
  waitpid(pid, &status, 0);
  CU_ASSERT(WIFEXITED(status) && WEXITSTATUS(status) == 2);
  unlink(zone);
}

/* SIGTERM ends it cleanly. */
static void test_standalone_sigterm(void) {
  const char *bdir = getenv("EGRESS_TEST_BUILDDIR");
  char exe[1024];
  snprintf(exe, sizeof(exe), "%s/dns/egress-test-dns", bdir ? bdir : "tests");
  int out[2];
  CU_ASSERT_FATAL(pipe(out) == 0);
  pid_t pid = fork();
  CU_ASSERT_FATAL(pid >= 0);
  if (pid == 0) {
    int dn = open("/dev/null", O_RDWR);
    dup2(out[1], 1);
    dup2(dn, 2);
    close(out[0]);
    execl(exe, exe, "--bind", "127.0.0.1", (char *)NULL);
    _exit(127);
  }
  close(out[1]);
  char line[64] = { 0 };
  struct pollfd p = { .fd = out[0], .events = POLLIN };
  CU_ASSERT(poll(&p, 1, 5000) == 1);
  CU_ASSERT(read(out[0], line, sizeof(line) - 1) > 0);
  CU_ASSERT_EQUAL(strncmp(line, "PORT ", 5), 0);
  kill(pid, SIGTERM);
  int status = -1;
  waitpid(pid, &status, 0);
  CU_ASSERT(WIFEXITED(status) && WEXITSTATUS(status) == 0);
  close(out[0]);
}

static CU_TestInfo cares_tests[] = {
  { "a_aaaa_ttl", test_a_aaaa_ttl },
  { "case_and_trailing_dot", test_case_and_trailing_dot },
  { "rcodes", test_rcodes },
  { "drop_timeout", test_drop_timeout },
  { "delay_does_not_block", test_delay_does_not_block },
  { "truncate_tcp_fallback", test_truncate_tcp_fallback },
  { "truncate_tcp_broken", test_truncate_tcp_broken },
  { "cname_chain", test_cname_chain },
  { "many_addresses", test_many_addresses },
  { "sequence", test_sequence },
  { "threads", test_threads },
  { "ipv6_bind", test_ipv6_bind },
  { "start_stop_many", test_start_stop_many },
  { "fault_mapping", test_fault_mapping },
  { "reset", test_reset },
  CU_TEST_INFO_NULL,
};

static CU_TestInfo wire_tests[] = {
  { "wire_format", test_wire_format },
  { "hostile_queries", test_hostile_queries },
  CU_TEST_INFO_NULL,
};

static CU_TestInfo program_tests[] = {
  { "standalone", test_standalone },
  { "standalone_sigterm", test_standalone_sigterm },
  CU_TEST_INFO_NULL,
};

int main(int argc, char **argv) {
  signal(SIGPIPE, SIG_IGN);
  const egress_test_suite_t suites[] = {
    { "responder_cares", suite_init, suite_cleanup, cares_tests },
    { "responder_wire", suite_init, suite_cleanup, wire_tests },
    { "responder_program", suite_init, suite_cleanup, program_tests },
    { NULL, NULL, NULL, NULL },
  };
  return egress_test_main(argc, argv, suites);
}
