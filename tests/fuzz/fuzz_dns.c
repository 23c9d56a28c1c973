/*
 * Fuzz target: DNS answer handling, through the path real answers take.
 *
 * The library resolves with ares_getaddrinfo on channels it creates itself.
 * This target links with -Wl,--wrap=ares_init_options, so every channel the
 * library makes gets socket functions (ares_set_socket_functions, c-ares
 * 1.18) that never touch the network: a "socket" is one end of an AF_UNIX
 * socketpair, and each query c-ares sends is answered at once, on the other
 * end, with bytes taken from the fuzz input (query id patched in).  A real
 * check then runs through the resolver, the answer parsing of c-ares, the
 * address vetting and the decision.
 *
 * Input: byte 0 is flags, then up to four segments, each a big-endian
 * 16-bit length and that many bytes (a short last segment takes what is
 * left).  The Nth query of the check (A, AAAA, TCP retries...) is answered
 * with segment N modulo the count; an empty segment is never answered.
 *   flags & 1: splice - the reply is the segment's 12-byte header, then the
 *              question of the query, then the rest of the segment (so the
 *              question always matches and the answer records are reached);
 *              otherwise the segment is sent verbatim.
 *   flags & 2: check through the checker in filter mode (else deny-if-any).
 *
 * Invariants: an allow has at least one address, every address it lets the
 * caller connect to is globally reachable and outside the deny list, and a
 * deny carries a DNS-phase reason; a deny-list denial (a denied address, or
 * a CNAME through the denied *.attacker.net) names a deny rule and refuses
 * every address.
 */
#include "egress_private.h"

#include "fuzz_common.h"

#include <ares.h>
#include <errno.h>
#include <fcntl.h>
#include <sys/socket.h>
#include <sys/uio.h>

#define MAX_SOCKS  64
#define MAX_SEGS   4
#define QUERY_NAME "fuzz.example.com"

typedef struct fake_sock {
  int fd, peer, type;
  struct sockaddr_storage server;
  socklen_t server_len;
  uint8_t tcp[4096];
  size_t tcp_len;
} fake_sock_t;

static fake_sock_t socks[MAX_SOCKS];
static unsigned long sockets_made;

/* The input being run. */
static const uint8_t *seg_data[MAX_SEGS];
static size_t seg_len[MAX_SEGS];
static size_t nsegs;
static unsigned flags;
static unsigned query_no;

static fake_sock_t *sock_find(int fd) {
  for (size_t i = 0; i < MAX_SOCKS; i++)
    if (socks[i].fd == fd && socks[i].peer >= 0) return &socks[i];
  return NULL;
}

static ares_socket_t fake_socket(int domain, int type, int protocol, void *user) {
  (void)domain;
  (void)protocol;
  (void)user;
  int base = type & (SOCK_STREAM | SOCK_DGRAM | SOCK_SEQPACKET);
  fake_sock_t *s = NULL;
  for (size_t i = 0; i < MAX_SOCKS && !s; i++)
    if (socks[i].peer < 0) s = &socks[i];
  if (!s) {
    errno = EMFILE;
    return ARES_SOCKET_BAD;
  }
  int sv[2];
  if (socketpair(AF_UNIX, base | SOCK_CLOEXEC, 0, sv) != 0) return ARES_SOCKET_BAD;
  fcntl(sv[1], F_SETFL, fcntl(sv[1], F_GETFL) | O_NONBLOCK);
  memset(s, 0, sizeof *s);
  s->fd = sv[0];
  s->peer = sv[1];
  s->type = base;
  sockets_made++;
  return sv[0];
}

static int fake_close(ares_socket_t fd, void *user) {
  (void)user;
  fake_sock_t *s = sock_find(fd);
  if (s) {
    close(s->peer);
    s->peer = -1;
    s->fd = -1;
  }
  return close(fd);
}

static int fake_connect(ares_socket_t fd, const struct sockaddr *sa, ares_socklen_t len, void *user) {
  (void)user;
  fake_sock_t *s = sock_find(fd);
  if (!s || len > sizeof s->server) {
    errno = EBADF;
    return -1;
  }
  memcpy(&s->server, sa, len);
  s->server_len = len;
  return 0;
}

/* Build and deliver the reply to one query. */
static void answer(fake_sock_t *s, const uint8_t *q, size_t qlen) {
  uint8_t reply[65535 + 2];
  size_t n = 0;
  if (nsegs == 0 || qlen < 12) return;
  const uint8_t *seg = seg_data[query_no % nsegs];
  size_t sl = seg_len[query_no % nsegs];
  query_no++;
  if (sl == 0) return; /* silence: the query times out */
  uint8_t *body = reply + 2;
  size_t room = sizeof reply - 2;
  if (flags & 1) {
    uint8_t head[12] = { 0 };
    memcpy(head, seg, sl < 12 ? sl : 12);
    head[4] = 0;
    head[5] = 1; /* QDCOUNT: the one question spliced in below */
    memcpy(body, head, 12);
    n = 12;
    size_t ql = qlen - 12;
    memcpy(body + n, q + 12, ql);
    n += ql;
    if (sl > 12) {
      size_t rest = sl - 12;
      if (rest > room - n) rest = room - n;
      memcpy(body + n, seg + 12, rest);
      n += rest;
    }
  } else {
    n = sl < room ? sl : room;
    memcpy(body, seg, n);
  }
  if (n >= 2) memcpy(body, q, 2); /* the query id */
  if (s->type == SOCK_DGRAM) {
    (void)send(s->peer, body, n, MSG_DONTWAIT);
  } else {
    reply[0] = (uint8_t)(n >> 8);
    reply[1] = (uint8_t)n;
    (void)send(s->peer, reply, n + 2, MSG_DONTWAIT | MSG_NOSIGNAL);
  }
}

static ares_ssize_t fake_sendv(ares_socket_t fd, const struct iovec *iov, int iovcnt, void *user) {
  (void)user;
  fake_sock_t *s = sock_find(fd);
  if (!s) {
    errno = EBADF;
    return -1;
  }
  uint8_t buf[4096];
  size_t total = 0;
  for (int i = 0; i < iovcnt; i++) {
    if (iov[i].iov_len > sizeof buf - total) {
      errno = EMSGSIZE;
      return -1;
    }
    memcpy(buf + total, iov[i].iov_base, iov[i].iov_len);
    total += iov[i].iov_len;
  }
  if (s->type == SOCK_DGRAM) {
    answer(s, buf, total);
    return (ares_ssize_t)total;
  }
  /* TCP: a stream of length-prefixed queries, possibly in pieces. */
  if (total > sizeof s->tcp - s->tcp_len) {
    errno = EMSGSIZE;
    return -1;
  }
  memcpy(s->tcp + s->tcp_len, buf, total);
  s->tcp_len += total;
  while (s->tcp_len >= 2) {
    size_t ql = (size_t)s->tcp[0] << 8 | s->tcp[1];
    if (s->tcp_len < ql + 2) break;
    answer(s, s->tcp + 2, ql);
    memmove(s->tcp, s->tcp + 2 + ql, s->tcp_len - ql - 2);
    s->tcp_len -= ql + 2;
  }
  return (ares_ssize_t)total;
}

static ares_ssize_t fake_recvfrom(ares_socket_t fd, void *buf, size_t len, int fl, struct sockaddr *from,
                                  ares_socklen_t *fromlen, void *user) {
  (void)user;
  fake_sock_t *s = sock_find(fd);
  ssize_t n = recv(fd, buf, len, fl | MSG_DONTWAIT);
  /* Replies come "from" the server the socket was connected to, or c-ares
   * would drop them as spoofed. */
  if (n >= 0 && s && from && fromlen) {
    socklen_t l = s->server_len < *fromlen ? s->server_len : *fromlen;
    memcpy(from, &s->server, l);
    *fromlen = s->server_len;
  }
  return n;
}

static const struct ares_socket_functions fake_funcs = { fake_socket, fake_close, fake_connect, fake_recvfrom,
                                                         fake_sendv };

int __real_ares_init_options(ares_channel *channel, struct ares_options *options, int optmask);
int __wrap_ares_init_options(ares_channel *channel, struct ares_options *options, int optmask);

int __wrap_ares_init_options(ares_channel *channel, struct ares_options *options, int optmask) {
  int st = __real_ares_init_options(channel, options, optmask);
  if (st == ARES_SUCCESS) ares_set_socket_functions(*channel, &fake_funcs, NULL);
  return st;
}

static egress_checker_t *checkers[2];

static void setup(void) {
  for (size_t i = 0; i < MAX_SOCKS; i++) socks[i].fd = socks[i].peer = -1;
  static const char *const allow[] = { QUERY_NAME, "*.example.com:8443" };
  static const char *const deny[] = { "93.184.216.0/24", "2606:2800:220::/48", "*.attacker.net" };
  char err[EGRESS_ERRBUF_SIZE];
  egress_policy_t *p = NULL;
  if (egress_policy_from_entries(allow, 2, deny, 3, &p, err, sizeof err) != EGRESS_OK) abort();
  const char *hosts = fuzz_temp_file("");
  for (int m = 0; m < 2; m++) {
    egress_options_t *o = NULL;
    if (egress_options_new(&o) != EGRESS_OK) abort();
    /* The server is never contacted: every socket is a fake one. */
    if (egress_options_set_dns_servers(o, "127.0.0.1:53") != EGRESS_OK ||
        egress_options_set_hosts_file(o, hosts) != EGRESS_OK ||
        egress_options_set_cache(o, 0, 5, 300, 5) != EGRESS_OK ||
        egress_options_set_timeout_ms(o, 10) != EGRESS_OK ||
        egress_options_set_mixed(o, m ? EGRESS_MIXED_FILTER : EGRESS_MIXED_DENY) != EGRESS_OK)
      abort();
    if (egress_checker_new(p, o, &checkers[m], err, sizeof err) != EGRESS_OK) {
      fprintf(stderr, "checker: %s\n", err);
      abort();
    }
    egress_options_free(o);
  }
  egress_policy_unref(p);
}

/* Stale replies must not leak into the next input. */
static void drain(void) {
  uint8_t buf[4096];
  for (size_t i = 0; i < MAX_SOCKS; i++) {
    if (socks[i].peer < 0) continue;
    while (recv(socks[i].fd, buf, sizeof buf, MSG_DONTWAIT) > 0) {}
    socks[i].tcp_len = 0;
  }
}

static void check_address(const egress_decision_t *d, size_t i) {
  const char *a = egress_decision_address(d, i);
  egress__ip_t ip;
  FUZZ_REQUIRE(a, "address %zu missing", i);
  bool v4 = egress__ip4_parse(a, strlen(a), &ip);
  FUZZ_REQUIRE(v4 || egress__ip6_parse(a, strlen(a), &ip), "address \"%s\" unparsable", a);
  egress__ip_unmap(&ip);
  egress__special_info_t info;
  egress__special_classify(&ip, &info);
  FUZZ_REQUIRE(info.global, "special-purpose address %s vetted", a);
  if (ip.family == 4)
    FUZZ_REQUIRE(!(ip.bytes[0] == 93 && ip.bytes[1] == 184 && ip.bytes[2] == 216), "denied address %s vetted",
                 a);
  else
    FUZZ_REQUIRE(!(ip.bytes[0] == 0x26 && ip.bytes[1] == 0x06 && ip.bytes[2] == 0x28 && ip.bytes[3] == 0x00 &&
                   ip.bytes[4] == 0x02 && ip.bytes[5] == 0x20),
                 "denied address %s vetted", a);
  size_t salen = 0;
  FUZZ_REQUIRE(egress_decision_address_sockaddr(d, i, &salen) && salen > 0, "no sockaddr for %s", a);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  if (size > 20000) return 0;
  if (!checkers[0]) setup();
  nsegs = 0;
  query_no = 0;
  flags = size ? data[0] : 0;
  size_t off = 1;
  while (off < size && nsegs < MAX_SEGS) {
    size_t l = off + 1 < size ? ((size_t)data[off] << 8 | data[off + 1]) : 0;
    off += 2;
    if (off > size) off = size;
    if (l > size - off) l = size - off;
    seg_data[nsegs] = data + off;
    seg_len[nsegs] = l;
    nsegs++;
    off += l;
  }

  egress_checker_t *c = checkers[(flags >> 1) & 1];
  egress_decision_t *d = NULL;
  egress_status_t st = egress_check_ex(c, QUERY_NAME, 443, NULL, &d);
  FUZZ_REQUIRE(st == EGRESS_OK || st == EGRESS_ENOMEM, "status %d", (int)st);
  FUZZ_REQUIRE(sockets_made > 0, "the socket override is not active: c-ares used real sockets");
  size_t n = egress_decision_address_count(d);
  if (egress_decision_verdict(d) == EGRESS_VERDICT_ALLOW) {
    FUZZ_REQUIRE(egress_decision_outcome(d) == EGRESS_OUTCOME_ALLOWED, "allow with outcome %d",
                 (int)egress_decision_outcome(d));
    size_t vetted = 0;
    for (size_t i = 0; i < n; i++) {
      if (egress_decision_address_verdict(d, i) != EGRESS_VERDICT_ALLOW) {
        FUZZ_REQUIRE((flags & 2) != 0, "deny-if-any allowed with forbidden address %s",
                     egress_decision_address(d, i));
        continue;
      }
      check_address(d, i);
      vetted++;
    }
    FUZZ_REQUIRE(vetted > 0, "allow without a vetted address");
    const char *cr = egress_decision_curl_resolve(d);
    FUZZ_REQUIRE(cr && !strncmp(cr, QUERY_NAME ":443:", sizeof QUERY_NAME + 4), "curl_resolve \"%s\"",
                 cr ? cr : "(null)");
  } else {
    egress_reason_t r = egress_decision_reason(d);
    FUZZ_REQUIRE(r == EGRESS_REASON_NO_SUCH_HOST || r == EGRESS_REASON_DNS_UNAVAILABLE ||
                     r == EGRESS_REASON_RESOLVED_ADDRESS_FORBIDDEN || r == EGRESS_REASON_EXPLICIT_DENY ||
                     r == EGRESS_REASON_INTERNAL_ERROR,
                 "deny with reason %s", egress_reason_name(r));
    FUZZ_REQUIRE(!egress_decision_curl_resolve(d), "curl_resolve on a deny");
    /* A deny-list denial names a deny rule (a CNAME through *.attacker.net
     * or a denied address); every address it lists is refused. */
    if (r == EGRESS_REASON_EXPLICIT_DENY || r == EGRESS_REASON_RESOLVED_ADDRESS_FORBIDDEN)
      for (size_t i = 0; i < n; i++)
        FUZZ_REQUIRE(egress_decision_address_verdict(d, i) == EGRESS_VERDICT_DENY,
                     "address %s allowed in a deny", egress_decision_address(d, i));
    if (r == EGRESS_REASON_EXPLICIT_DENY)
      FUZZ_REQUIRE(egress_decision_has_rule(d) && egress_decision_rule_list(d) == EGRESS_LIST_DENY,
                   "explicit_deny without a deny rule");
  }
  egress_decision_free(d);
  drain();
  return 0;
}
