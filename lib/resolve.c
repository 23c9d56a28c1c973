/*
 * Name resolution with c-ares.
 *
 * c-ares 1.18 channels are not thread-safe, so the resolver keeps a pool of
 * channels: a check borrows one, resolves on it alone, and gives it back.
 * Threads never share a channel and never wait for each other's queries.
 *
 * Names are always resolved exactly as checked: no search list, no
 * HOSTALIASES, so "api.example.com" can never become
 * "api.example.com.<ns>.svc.cluster.local" inside a pod.
 */
#include "resolve.h"

#include <ares.h>
#include <errno.h>
#include <poll.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define POOL_MAX 64

struct egress__resolver {
  pthread_mutex_t lock;
  ares_channel pool[POOL_MAX];
  size_t npool;
  char *servers;     /* NULL: system configuration */
  char *resolv_conf; /* tests only */
  char lookups[4];   /* "" (c-ares default), "f", "fb" */
  bool env_hosts;
  uint32_t timeout_ms;
};

static pthread_once_t library_once = PTHREAD_ONCE_INIT;
static int library_status = ARES_SUCCESS;

static void library_init(void) { library_status = ares_library_init(ARES_LIB_INIT_ALL); }

static double now_ms(void) { return egress__mono_ms(false); }

/* A channel as the resolver's configuration says; @p sock_cb (may be NULL)
 * hears of every socket the channel opens and closes (a caller's loop). */
static int channel_new_cb(const egress__resolver_t *r, ares_sock_state_cb sock_cb, void *sock_arg,
                          ares_channel *out) {
  struct ares_options o;
  int mask = ARES_OPT_FLAGS | ARES_OPT_TIMEOUTMS | ARES_OPT_TRIES | ARES_OPT_NDOTS | ARES_OPT_DOMAINS;
  memset(&o, 0, sizeof o);
  if (sock_cb) {
    mask |= ARES_OPT_SOCK_STATE_CB;
    o.sock_state_cb = sock_cb;
    o.sock_state_cb_data = sock_arg;
    /* A loop keeps thousands of queries on one UDP socket, and their answers
     * arrive together: the default buffer (about 200 small datagrams) drops
     * the rest, which would end as dns_unavailable after the time-out.  The
     * kernel caps the request at net.core.rmem_max. */
    mask |= ARES_OPT_SOCK_RCVBUF;
    o.socket_receive_buffer_size = 8 << 20;
  }
  o.flags = ARES_FLAG_NOSEARCH | ARES_FLAG_NOALIASES;
  /* Two tries inside the budget; the caller's deadline cancels the rest. */
  uint32_t per_try = r->timeout_ms / 2;
  o.timeout = (int)(per_try < 50 ? 50 : per_try);
  o.tries = 2;
  o.ndots = 1;
  o.domains = NULL;
  o.ndomains = 0;
  if (r->lookups[0]) {
    mask |= ARES_OPT_LOOKUPS;
    o.lookups = (char *)r->lookups;
  }
  if (r->resolv_conf) {
    mask |= ARES_OPT_RESOLVCONF;
    o.resolvconf_path = r->resolv_conf;
  }
  int st = ares_init_options(out, &o, mask);
  if (st != ARES_SUCCESS) return st;
  if (r->servers) {
    st = ares_set_servers_ports_csv(*out, r->servers);
    if (st != ARES_SUCCESS) {
      ares_destroy(*out);
      *out = NULL;
    }
  }
  return st;
}

static int channel_new(const egress__resolver_t *r, ares_channel *out) {
  return channel_new_cb(r, NULL, NULL, out);
}

bool egress__dns_servers_valid(const char *csv, const char **why, size_t *bad, size_t *bad_len) {
  const char *p = csv;
  *bad = *bad_len = 0;
  if (!*p) {
    *why = "empty DNS server list";
    return false;
  }
  for (;;) {
    const char *end = strchr(p, ',');
    size_t len = end ? (size_t)(end - p) : strlen(p);
    *bad = (size_t)(p - csv);
    *bad_len = len;
    char item[80];
    egress__ip_t ip;
    if (len == 0 || len >= sizeof item) {
      *why = "empty or over-long DNS server entry";
      return false;
    }
    memcpy(item, p, len);
    item[len] = '\0';
    const char *host = item, *port = NULL;
    if (item[0] == '[') {
      char *close = strchr(item, ']');
      if (!close) {
        *why = "unbalanced '[' in DNS server";
        return false;
      }
      *close = '\0';
      host = item + 1;
      if (close[1] == ':')
        port = close + 2;
      else if (close[1]) {
        *why = "junk after ']' in DNS server";
        return false;
      }
      if (!egress__ip6_parse(host, strlen(host), &ip)) {
        *why = "DNS server is not an IPv6 address";
        return false;
      }
    } else {
      char *colon = strchr(item, ':');
      if (colon && strchr(colon + 1, ':')) {
        if (!egress__ip6_parse(item, len, &ip)) {
          *why = "DNS server is not an IP address";
          return false;
        }
      } else {
        if (colon) {
          *colon = '\0';
          port = colon + 1;
        }
        if (!egress__ip4_parse(host, strlen(host), &ip)) {
          *why = "DNS server is not an IP address";
          return false;
        }
      }
    }
    uint32_t v = 0;
    if (port) {
      /* Digits only: strtol() would also take " 53" and "+53". */
      if (egress__parse_decimal(port, strlen(port), true, 65535, &v) != EGRESS__DEC_OK || v == 0) {
        *why = "DNS server port must be 1-65535";
        return false;
      }
    }
    if (!end) return true;
    p = end + 1; /* a trailing ',' leaves an empty last entry: refused */
  }
}

egress_status_t egress__resolver_new(const egress_options_t *opts, egress__resolver_t **out, char *errbuf,
                                     size_t errlen) {
  egress_status_t st = EGRESS_ENOMEM;
  egress__resolver_t *r = NULL;
  *out = NULL;
  pthread_once(&library_once, library_init);
  if (library_status != ARES_SUCCESS)
    return egress__errf(errbuf, errlen, EGRESS_ERESOLVER, "c-ares: %s", ares_strerror(library_status));
  r = egress__calloc(1, sizeof(*r));
  if (!r) goto fail;
  pthread_mutex_init(&r->lock, NULL);
  r->timeout_ms = opts ? opts->timeout_ms : 2000;
  if (opts && opts->dns_servers && opts->dns_servers[0]) {
    const char *why = NULL;
    size_t bad, bad_len;
    if (!egress__dns_servers_valid(opts->dns_servers, &why, &bad, &bad_len)) {
      st = egress__errf(errbuf, errlen, EGRESS_EINVAL, "DNS server \"%.*s\": %s",
                        (int)(bad_len < 200 ? bad_len : 200), opts->dns_servers + bad, why);
      goto fail;
    }
    if (!(r->servers = egress__strdup(opts->dns_servers))) goto fail;
  }
  if (opts && opts->resolv_conf && !(r->resolv_conf = egress__strdup(opts->resolv_conf))) goto fail;
  if (opts && opts->hosts_file) {
    /* c-ares 1.18 reads another hosts file only through CARES_HOSTS with
     * ARES_AI_ENVHOSTS: process-wide, documented on the option. */
    if (setenv("CARES_HOSTS", opts->hosts_file, 1) != 0) {
      st = egress__errf(errbuf, errlen, EGRESS_ENOMEM, "cannot set CARES_HOSTS");
      goto fail;
    }
    r->env_hosts = true;
    snprintf(r->lookups, sizeof r->lookups, "%s", r->servers ? "fb" : "f");
  } else if (r->servers) {
    /* Servers named explicitly are the only source: the system's
     * /etc/hosts is not consulted behind the operator's back. */
    snprintf(r->lookups, sizeof r->lookups, "b");
  }
  /* Build one channel now so that a bad configuration fails here, not on
   * the first check. */
  int ast = channel_new(r, &r->pool[0]);
  if (ast != ARES_SUCCESS) {
    st = egress__errf(errbuf, errlen, ast == ARES_ENOMEM ? EGRESS_ENOMEM : EGRESS_ERESOLVER,
                      "c-ares channel: %s", ares_strerror(ast));
    goto fail;
  }
  r->npool = 1;
  *out = r;
  return EGRESS_OK;
fail:
  egress__resolver_free(r);
  if (st == EGRESS_ENOMEM) egress__errf(errbuf, errlen, st, "out of memory creating the resolver");
  return st;
}

void egress__resolver_free(egress__resolver_t *r) {
  if (!r) return;
  for (size_t i = 0; i < r->npool; i++) ares_destroy(r->pool[i]);
  pthread_mutex_destroy(&r->lock);
  egress__free(r->servers);
  egress__free(r->resolv_conf);
  egress__free(r);
}

static int channel_get(egress__resolver_t *r, ares_channel *ch) {
  pthread_mutex_lock(&r->lock);
  if (r->npool) {
    *ch = r->pool[--r->npool];
    pthread_mutex_unlock(&r->lock);
    return ARES_SUCCESS;
  }
  pthread_mutex_unlock(&r->lock);
  return channel_new(r, ch);
}

static void channel_put(egress__resolver_t *r, ares_channel ch) {
  pthread_mutex_lock(&r->lock);
  if (r->npool < POOL_MAX) {
    r->pool[r->npool++] = ch;
    ch = NULL;
  }
  pthread_mutex_unlock(&r->lock);
  if (ch) ares_destroy(ch);
}

typedef struct lookup_state {
  bool done;
  int status;
  egress__answer_t *ans;
  const char *name; /* the name asked for */
  bool nomem;
  bool timed_out; /* the deadline came first */
} lookup_state_t;

static bool answer_has(const egress__answer_t *ans, const egress__ip_t *ip) {
  for (size_t i = 0; i < ans->n; i++)
    if (!memcmp(&ans->ips[i], ip, sizeof *ip)) return true;
  return false;
}

/* One name of a CNAME record as the deny list sees names: lower case, one
 * trailing dot dropped.  Returns its length in @p out (which has room for
 * strlen(in) + 1 bytes). */
static size_t chain_name(const char *in, char *out) {
  size_t n = strlen(in);
  if (n > 0 && in[n - 1] == '.') n--;
  for (size_t i = 0; i < n; i++) {
    char ch = in[i];
    out[i] = ch >= 'A' && ch <= 'Z' ? (char)(ch - 'A' + 'a') : ch;
  }
  out[n] = '\0';
  return n;
}

/*
 * Keep the names of the CNAME records c-ares reports.  In c-ares 1.18 that
 * list holds every CNAME record of the answer section of each response it
 * used (the A and the AAAA response, so most chains come twice), owner and
 * target, in the order of the records; a CNAME record c-ares followed moves
 * the name whose addresses it takes, so every one of them may have steered
 * the answer.  It does not hold names of the authority or additional
 * sections, of a response it did not use (a CNAME-only answer is ENODATA
 * and its records are dropped), nor, without ARES_AI_CANONNAME, any alias
 * from a hosts file (operator configuration, not an answer from the
 * network).  The queried name itself was checked before the lookup.
 */
static bool keep_chain(lookup_state_t *s, const struct ares_addrinfo_cname *cnames) {
  size_t cap = 0, count = 0;
  for (const struct ares_addrinfo_cname *c = cnames; c; c = c->next) {
    if (c->alias) cap += strlen(c->alias) + 1;
    if (c->name) cap += strlen(c->name) + 1;
    count += 2;
  }
  if (cap == 0) return true;
  char *buf = cap <= sizeof s->ans->inline_chain ? s->ans->inline_chain : egress__malloc(cap);
  struct {
    uint64_t hash;
    size_t off, len;
  } *kept = egress__malloc(count * sizeof *kept);
  if (!buf || !kept) {
    if (buf != s->ans->inline_chain) egress__free(buf);
    egress__free(kept);
    return false;
  }
  size_t used = 0, nkept = 0, qlen = strlen(s->name);
  for (const struct ares_addrinfo_cname *c = cnames; c; c = c->next) {
    const char *both[2] = { c->alias, c->name };
    for (int k = 0; k < 2; k++) {
      if (!both[k]) continue;
      char *out = buf + used;
      size_t n = chain_name(both[k], out);
      if (n == 0 || (n == qlen && !memcmp(out, s->name, n))) continue;
      uint64_t h = egress__name_hash(out, n);
      bool seen = false;
      /* Hash and length first: a hostile response may hold thousands of
       * records, and this keeps the pass cheap. */
      for (size_t i = 0; i < nkept && !seen; i++)
        seen = kept[i].hash == h && kept[i].len == n && !memcmp(buf + kept[i].off, out, n);
      if (seen) continue;
      kept[nkept].hash = h;
      kept[nkept].off = used;
      kept[nkept].len = n;
      nkept++;
      used += n + 1;
    }
  }
  egress__free(kept);
  if (used == 0) {
    if (buf != s->ans->inline_chain) egress__free(buf);
    return true;
  }
  s->ans->chain = buf;
  s->ans->chain_len = used;
  return true;
}

/* The shortest TTL of the chain: an address is only as fresh as the
 * aliases that led to it, so a cached answer must not outlive them. */
static int chain_ttl(const struct ares_addrinfo_cname *cnames) {
  int ttl = INT32_MAX;
  for (const struct ares_addrinfo_cname *c = cnames; c; c = c->next)
    if (c->ttl < ttl) ttl = c->ttl < 0 ? 0 : c->ttl;
  return ttl;
}

static void on_addrinfo(void *arg, int status, int timeouts, struct ares_addrinfo *res) {
  lookup_state_t *s = arg;
  (void)timeouts;
  s->done = true;
  s->status = status;
  if (status == ARES_SUCCESS && res) {
    size_t count = 0;
    for (struct ares_addrinfo_node *n = res->nodes; n; n = n->ai_next) count++;
    s->ans->ips = egress__calloc(count + 1, sizeof(*s->ans->ips));
    s->ans->ttls = egress__calloc(count + 1, sizeof(*s->ans->ttls));
    if (!s->ans->ips || !s->ans->ttls || !keep_chain(s, res->cnames)) {
      s->nomem = true;
    } else {
      int cttl = chain_ttl(res->cnames);
      for (struct ares_addrinfo_node *n = res->nodes; n; n = n->ai_next) {
        egress__ip_t ip;
        memset(&ip, 0, sizeof ip);
        if (n->ai_family == AF_INET && n->ai_addr) {
          ip.family = 4;
          memcpy(ip.bytes, &((struct sockaddr_in *)(void *)n->ai_addr)->sin_addr, 4);
        } else if (n->ai_family == AF_INET6 && n->ai_addr) {
          ip.family = 6;
          memcpy(ip.bytes, &((struct sockaddr_in6 *)(void *)n->ai_addr)->sin6_addr, 16);
        } else {
          continue;
        }
        if (answer_has(s->ans, &ip)) continue;
        s->ans->ips[s->ans->n] = ip;
        s->ans->ttls[s->ans->n] = n->ai_ttl < cttl ? n->ai_ttl : cttl;
        s->ans->n++;
      }
    }
  }
  if (res) ares_freeaddrinfo(res);
}

/* Drive the channel with poll() (never select(): workers may hold file
 * descriptors above FD_SETSIZE) until the lookup ends or the deadline
 * passes, when every query on the channel is cancelled. */
static void run_until_done(ares_channel ch, lookup_state_t *s, double deadline) {
  while (!s->done) {
    ares_socket_t socks[ARES_GETSOCK_MAXNUM];
    struct pollfd pfd[ARES_GETSOCK_MAXNUM];
    int bits = ares_getsock(ch, socks, ARES_GETSOCK_MAXNUM);
    nfds_t nfds = 0;
    for (int i = 0; i < ARES_GETSOCK_MAXNUM; i++) {
      short ev = 0;
      /* c-ares' ARES_GETSOCK_* macros shift a signed 1 into bit 31, which
       * is undefined behaviour; test the bits in unsigned arithmetic. */
      if (((unsigned)bits >> i) & 1u) ev |= POLLIN;
      if (((unsigned)bits >> (i + ARES_GETSOCK_MAXNUM)) & 1u) ev |= POLLOUT;
      if (!ev) continue;
      pfd[nfds].fd = socks[i];
      pfd[nfds].events = ev;
      pfd[nfds].revents = 0;
      nfds++;
    }
    double left = deadline - now_ms();
    if (left <= 0) {
      s->timed_out = true;
      ares_cancel(ch);
      break;
    }
    struct timeval maxtv = { .tv_sec = (time_t)(left / 1000),
                             .tv_usec = (suseconds_t)((long)left % 1000) * 1000 };
    struct timeval tv, *tvp = ares_timeout(ch, &maxtv, &tv);
    int wait_ms = tvp ? (int)(tvp->tv_sec * 1000 + (tvp->tv_usec + 999) / 1000) : (int)left;
    if (wait_ms < 1) wait_ms = 1;
    int n = poll(pfd, nfds, wait_ms);
    if (n < 0 && errno != EINTR) {
      ares_cancel(ch);
      break;
    }
    if (n <= 0) {
      ares_process_fd(ch, ARES_SOCKET_BAD, ARES_SOCKET_BAD);
      continue;
    }
    for (nfds_t i = 0; i < nfds; i++) {
      ares_socket_t rfd = (pfd[i].revents & (POLLIN | POLLERR | POLLHUP)) ? pfd[i].fd : ARES_SOCKET_BAD;
      ares_socket_t wfd = (pfd[i].revents & (POLLOUT | POLLERR | POLLHUP)) ? pfd[i].fd : ARES_SOCKET_BAD;
      if (rfd != ARES_SOCKET_BAD || wfd != ARES_SOCKET_BAD) ares_process_fd(ch, rfd, wfd);
    }
  }
  if (!s->done) {
    /* ares_cancel runs the callback with ARES_ECANCELLED. */
    s->done = true;
    s->status = ARES_ETIMEOUT;
  }
}

static egress__dns_result_t dns_result_of(int ares_status) {
  switch (ares_status) {
    case ARES_SUCCESS: return EGRESS__DNS_OK;
    case ARES_ENOTFOUND:
    case ARES_ENODATA:
    case ARES_ENONAME: return EGRESS__DNS_NO_SUCH_HOST;
    case ARES_ENOMEM: return EGRESS__DNS_NOMEM;
    default: return EGRESS__DNS_UNAVAILABLE;
  }
}

/* "localhost" and every name under it are loopback (RFC 6761 §6.3): answer
 * them here.  Asking c-ares would be no better, and its 1.18 built-in
 * localhost fallback leaks a copy of the name on every lookup. */
static bool is_localhost(const char *name) {
  size_t n = strlen(name);
  return !strcmp(name, "localhost") || (n > 10 && !strcmp(name + n - 10, ".localhost"));
}

static egress_status_t answer_localhost(egress__answer_t *ans) {
  static const egress__ip_t loopback[2] = {
    { .family = 4, .bytes = { 127, 0, 0, 1 } },
    { .family = 6, .bytes = { 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1 } },
  };
  ans->ips = egress__calloc(2, sizeof(*ans->ips));
  ans->ttls = egress__calloc(2, sizeof(*ans->ttls));
  if (!ans->ips || !ans->ttls) {
    egress__answer_clear(ans);
    ans->result = EGRESS__DNS_NOMEM;
    return EGRESS_ENOMEM;
  }
  memcpy(ans->ips, loopback, sizeof loopback);
  ans->n = 2;
  ans->result = EGRESS__DNS_OK;
  ans->detail = "localhost is loopback (RFC 6761)";
  return EGRESS_OK;
}

/* What a finished lookup says, as every caller reads it: the answer's
 * result, detail and time.  EGRESS_ENOMEM (answer cleared) when the reply
 * could not be kept. */
static egress_status_t lookup_finish(const egress__resolver_t *r, lookup_state_t *s, double start) {
  egress__answer_t *ans = s->ans;
  ans->ms = now_ms() - start;
  if (s->status == ARES_ECANCELLED || s->status == ARES_EDESTRUCTION) s->status = ARES_ETIMEOUT;
  if (s->timed_out) {
    /* Cancelled at the deadline, c-ares 1.18 still reports success with
     * the family that had answered.  A lookup that timed out is a time-out
     * (dns_unavailable) whatever part of it came back, as on a loop, whose
     * lookups are given up at their deadline (docs/check.md). */
    egress__answer_clear(ans);
    s->status = ARES_ETIMEOUT;
  }
  ans->ares_status = s->status;
  ans->detail = ares_strerror(s->status);
  if (s->nomem) {
    ans->result = EGRESS__DNS_NOMEM;
  } else {
    ans->result = dns_result_of(s->status);
    /* With only a hosts file to consult, c-ares 1.18 ends a lookup that
     * found nothing with ARES_ECONNREFUSED: there is no server to fail, so
     * the name simply does not exist. */
    if (s->status == ARES_ECONNREFUSED && !strcmp(r->lookups, "f")) {
      ans->result = EGRESS__DNS_NO_SUCH_HOST;
      ans->detail = "not in the hosts file";
    }
    if (ans->result == EGRESS__DNS_OK && ans->n == 0) ans->result = EGRESS__DNS_NO_SUCH_HOST;
  }
  if (ans->result == EGRESS__DNS_NOMEM) {
    egress__answer_clear(ans);
    ans->result = EGRESS__DNS_NOMEM;
    return EGRESS_ENOMEM;
  }
  return EGRESS_OK;
}

static void lookup_hints(const egress__resolver_t *r, struct ares_addrinfo_hints *hints) {
  memset(hints, 0, sizeof *hints);
  hints->ai_family = AF_UNSPEC;
  hints->ai_flags = ARES_AI_NOSORT | (r->env_hosts ? ARES_AI_ENVHOSTS : 0);
}

bool egress__name_is_localhost(const char *name) { return is_localhost(name); }

egress_status_t egress__resolve(egress__resolver_t *r, const char *name, egress__answer_t *ans) {
  ares_channel ch = NULL;
  egress__answer_reset(ans);
  if (is_localhost(name)) return answer_localhost(ans);
  double start = now_ms();
  int ast = channel_get(r, &ch);
  if (ast != ARES_SUCCESS) {
    ans->result = ast == ARES_ENOMEM ? EGRESS__DNS_NOMEM : EGRESS__DNS_UNAVAILABLE;
    ans->detail = ares_strerror(ast);
    ans->ms = now_ms() - start;
    return ast == ARES_ENOMEM ? EGRESS_ENOMEM : EGRESS_OK;
  }
  struct ares_addrinfo_hints hints;
  lookup_hints(r, &hints);
  lookup_state_t s = { .ans = ans, .name = name };
  ares_getaddrinfo(ch, name, NULL, &hints, on_addrinfo, &s);
  run_until_done(ch, &s, start + (double)r->timeout_ms);
  egress_status_t st = lookup_finish(r, &s, start);
  /* A channel whose lookup was cancelled or failed oddly may hold half-open
   * state; only reuse channels that finished cleanly. */
  if (s.status == ARES_SUCCESS || ans->result == EGRESS__DNS_NO_SUCH_HOST)
    channel_put(r, ch);
  else
    ares_destroy(ch);
  return st;
}

/* ------------------------------------------------------------------------ */
/* Lookups on a channel a caller's loop drives (loop.c).                     */
/* ------------------------------------------------------------------------ */

egress_status_t egress__resolver_channel(const egress__resolver_t *r, egress__sock_cb sock_cb, void *sock_arg,
                                         void **channel) {
  ares_channel ch = NULL;
  int ast = channel_new_cb(r, sock_cb, sock_arg, &ch);
  *channel = ch;
  if (ast == ARES_SUCCESS) return EGRESS_OK;
  return ast == ARES_ENOMEM ? EGRESS_ENOMEM : EGRESS_ERESOLVER;
}

void egress__channel_free(void *channel) {
  if (channel) ares_destroy(channel);
}

typedef struct async_lookup {
  lookup_state_t s;
  egress__answer_t ans;
  const egress__resolver_t *r;
  double start;
  egress__lookup_cb cb;
  void *arg;
  char name[];
} async_lookup_t;

static void on_async_addrinfo(void *arg, int status, int timeouts, struct ares_addrinfo *res) {
  async_lookup_t *l = arg;
  on_addrinfo(&l->s, status, timeouts, res);
  egress_status_t st = lookup_finish(l->r, &l->s, l->start);
  l->cb(l->arg, st, &l->ans);
  egress__answer_clear(&l->ans);
  egress__free(l);
}

void egress__resolve_start(const egress__resolver_t *r, void *channel, const char *name, egress__lookup_cb cb,
                           void *arg) {
  size_t n = strlen(name) + 1;
  async_lookup_t *l = egress__malloc(sizeof *l + n);
  if (!l) {
    egress__answer_t ans;
    egress__answer_reset(&ans);
    ans.result = EGRESS__DNS_NOMEM;
    cb(arg, EGRESS_ENOMEM, &ans);
    return;
  }
  memcpy(l->name, name, n);
  egress__answer_reset(&l->ans);
  l->s = (lookup_state_t){ .ans = &l->ans, .name = l->name };
  l->r = r;
  l->start = now_ms();
  l->cb = cb;
  l->arg = arg;
  struct ares_addrinfo_hints hints;
  lookup_hints(r, &hints);
  ares_getaddrinfo(channel, l->name, NULL, &hints, on_async_addrinfo, l);
}

int egress__channel_timeout_ms(void *channel, int max_ms) {
  struct timeval maxtv = { .tv_sec = max_ms / 1000, .tv_usec = (suseconds_t)(max_ms % 1000) * 1000 };
  struct timeval tv, *tvp = ares_timeout(channel, max_ms >= 0 ? &maxtv : NULL, &tv);
  if (!tvp) return -1;
  long ms = (long)tvp->tv_sec * 1000 + (tvp->tv_usec + 999) / 1000;
  return ms > INT32_MAX ? INT32_MAX : (int)ms;
}

void egress__channel_process(void *channel, int fd, bool readable, bool writable) {
  ares_process_fd(channel, readable ? fd : ARES_SOCKET_BAD, writable ? fd : ARES_SOCKET_BAD);
}

void egress__answer_clear(egress__answer_t *ans) {
  if (!ans) return;
  if (ans->ips != ans->inline_ips) egress__free(ans->ips);
  if (ans->ttls != ans->inline_ttls) egress__free(ans->ttls);
  if (ans->chain != ans->inline_chain) egress__free(ans->chain);
  ans->ips = NULL;
  ans->ttls = NULL;
  ans->n = 0;
  ans->chain = NULL;
  ans->chain_len = 0;
}

uint32_t egress__resolver_timeout_ms(const egress__resolver_t *r) { return r->timeout_ms; }

void egress__answer_timed_out(egress__answer_t *ans, double ms) {
  egress__answer_reset(ans);
  ans->result = EGRESS__DNS_UNAVAILABLE;
  ans->ares_status = ARES_ETIMEOUT;
  ans->detail = ares_strerror(ARES_ETIMEOUT);
  ans->ms = ms;
}
