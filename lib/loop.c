/*
 * Checks on a caller's event loop (docs/async.md).
 *
 * A check runs the steps of the blocking one (check.c); only the wait for
 * DNS differs.  A miss joins the checker's flight for the name (cache.c),
 * which a blocking thread or a loop may lead; a flight this loop leads is a
 * c-ares query on the loop's own channel, whose sockets the caller's loop
 * watches.  When a flight's answer is in, each waiting check is queued on
 * its loop (from any thread: then the wake-up descriptor is written) and
 * finished there.
 *
 * Every lookup of a loop has the same time budget, so lookups started in
 * order expire in order: one list, oldest first, gives the next deadline.
 */
#include "checker.h"

#include <errno.h>
#include <pthread.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <unistd.h>

/* A flight this loop resolves. */
typedef struct lookup {
  egress_loop_t *loop;
  egress__flight_t *flight; /* NULL once its deadline passed (abandoned) */
  double deadline;
  bool sent; /* on the channel; an unsent lookup waits for room */
  struct lookup *prev, *next;
  char name[]; /* the flight's; an unsent lookup may outlive its checks */
} lookup_t;

/* Queries on the channel at once are bounded by its socket's receive buffer:
 * answers that arrive together past it are dropped by the kernel and would
 * end, after the time-out, as dns_unavailable.  About 4 KiB of buffer per
 * lookup (an A and an AAAA answer, each a few hundred bytes of kernel
 * overhead), never fewer than LOOKUPS_MIN nor more than LOOKUPS_MAX. */
#define LOOKUP_BUFFER_BYTES 4096
#define LOOKUPS_MIN         64
#define LOOKUPS_MAX         4096

struct egress_pending {
  egress__waiter_t w; /* first: the cache hands back the waiter */
  egress_loop_t *loop;
  egress_pending_t *prev, *next;   /* the loop's checks in flight */
  egress_pending_t *qprev, *qnext; /* the loop's ready queue */
  bool queued;                     /* in the ready queue (qlock) */
  bool *finished;                  /* set when the callback has run */
  egress__check_t k;
  egress_check_done_cb cb;
  void *user;
  char *host; /* copy of a host:port check's host */
  egress__url_check_t url;
  bool is_url;
  egress_request_t *req; /* copy */
};

/* One spare serves a caller that copies each decision out in its callback
 * and hands it back; a few more cover callbacks that hold one a while. */
#define LOOP_SPARES 4

struct egress_loop {
  egress_checker_t *checker;
  egress_watch_cb watch;
  void *user;
  void *channel;
  int wake_fd;
  pthread_t thread;

  /* The ready queue: written by any thread that publishes an answer. */
  pthread_mutex_t qlock;
  egress_pending_t *qhead, *qtail;
  bool wake_armed; /* a wake-up was written and not read yet */

  egress_pending_t *pending;
  size_t npending;
  lookup_t *lhead, *ltail; /* by deadline; the unsent ones are a suffix */
  lookup_t *lunsent;       /* first lookup not on the channel yet */
  size_t nsent, maxsent;   /* lookups on the channel; the bound on them */
  bool pumping;
  int *fds; /* DNS sockets watched now */
  size_t nfds, capfds;

  unsigned depth; /* calls into the driver on the stack */
  bool closing;

  /* Decisions handed back (egress_loop_recycle), released and reset. */
  egress_decision_t *spare[LOOP_SPARES];
  size_t nspare;
};

static double now_ms(void) { return egress__mono_ms(false); }

static void sock_state(void *arg, int fd, int readable, int writable) {
  egress_loop_t *l = arg;
  size_t i = 0;
  while (i < l->nfds && l->fds[i] != fd) i++;
  if (readable || writable) {
    if (i == l->nfds) {
      if (l->nfds == l->capfds) {
        size_t cap = l->capfds ? l->capfds * 2 : 8;
        int *fds = egress__realloc(l->fds, cap * sizeof(*fds));
        /* Without room the socket is still reported; only the final
         * unwatch at free would miss it, and c-ares reports that itself. */
        if (fds) {
          l->fds = fds;
          l->capfds = cap;
        }
      }
      if (l->nfds < l->capfds) l->fds[l->nfds++] = fd;
      int type = 0, rcvbuf = 0;
      socklen_t tlen = sizeof type, rlen = sizeof rcvbuf;
      if (getsockopt(fd, SOL_SOCKET, SO_TYPE, &type, &tlen) == 0 && type == SOCK_DGRAM &&
          getsockopt(fd, SOL_SOCKET, SO_RCVBUF, &rcvbuf, &rlen) == 0 && rcvbuf > 0) {
        size_t room = (size_t)rcvbuf / LOOKUP_BUFFER_BYTES;
        l->maxsent = room < LOOKUPS_MIN ? LOOKUPS_MIN : room > LOOKUPS_MAX ? LOOKUPS_MAX : room;
      }
    }
  } else if (i < l->nfds) {
    l->fds[i] = l->fds[--l->nfds];
  }
  l->watch(fd, readable != 0, writable != 0, l->user);
}

/* Runs under the flight's lock on the publishing thread; the write happens
 * before it returns, so a loop that saw its check leave the flight knows
 * no other thread still touches it. */
static void on_ready(egress__waiter_t *w) {
  egress_pending_t *p = (egress_pending_t *)w;
  egress_loop_t *l = p->loop;
  pthread_mutex_lock(&l->qlock);
  p->qnext = NULL;
  p->qprev = l->qtail;
  if (l->qtail)
    l->qtail->qnext = p;
  else
    l->qhead = p;
  l->qtail = p;
  p->queued = true;
  /* No wake-up is needed only when this very call chain will drain the
   * queue before it returns: on the loop's own thread, inside one of its
   * calls.  Another loop driven by the same thread (its answer published
   * while that other loop processes) must still be woken. */
  bool will_drain = pthread_equal(pthread_self(), l->thread) && l->depth > 0;
  if (!l->wake_armed && !will_drain) {
    uint64_t one = 1;
    l->wake_armed = write(l->wake_fd, &one, sizeof one) == (ssize_t)sizeof one;
  }
  pthread_mutex_unlock(&l->qlock);
}

/* qlock held. */
static void queue_unlink(egress_loop_t *l, egress_pending_t *p) {
  if (p->qprev)
    p->qprev->qnext = p->qnext;
  else
    l->qhead = p->qnext;
  if (p->qnext)
    p->qnext->qprev = p->qprev;
  else
    l->qtail = p->qprev;
  p->qprev = p->qnext = NULL;
  p->queued = false;
}

static void pending_free(egress_pending_t *p) {
  egress__free(p->host);
  if (p->is_url) egress__url_release(&p->url);
  egress_request_free(p->req);
  egress__free(p);
}

/* The end of a check in flight: decided from its flight's answer, or
 * cancelled.  The callback runs last, when the loop no longer knows the
 * check, so that it may do anything with the loop. */
static void complete(egress_pending_t *p, bool cancelled) {
  egress_loop_t *l = p->loop;
  if (cancelled) {
    egress__check_cancelled(&p->k);
  } else {
    egress__answer_t ans;
    egress_status_t got = egress__cache_take(&p->w, &ans);
    egress__check_answer(&p->k, got, &ans);
    egress__answer_clear(&ans);
  }
  egress_status_t st = egress__check_end(&p->k);
  if (cancelled) st = EGRESS_ECANCELLED;
  if (p->prev)
    p->prev->next = p->next;
  else
    l->pending = p->next;
  if (p->next) p->next->prev = p->prev;
  l->npending--;
  if (p->finished) *p->finished = true;
  egress_decision_t *d = p->k.d;
  egress_check_done_cb cb = p->cb;
  void *user = p->user;
  pending_free(p);
  cb(st, d, user);
}

static void drain(egress_loop_t *l) {
  for (;;) {
    pthread_mutex_lock(&l->qlock);
    egress_pending_t *p = l->qhead;
    if (p) queue_unlink(l, p);
    pthread_mutex_unlock(&l->qlock);
    if (!p) return;
    complete(p, false);
  }
}

static void lookup_unlink(egress_loop_t *l, lookup_t *lk) {
  if (l->lunsent == lk) l->lunsent = lk->next;
  if (lk->prev)
    lk->prev->next = lk->next;
  else
    l->lhead = lk->next;
  if (lk->next)
    lk->next->prev = lk->prev;
  else
    l->ltail = lk->prev;
  lk->prev = lk->next = NULL;
}

static void pump(egress_loop_t *l);

static void on_lookup(void *arg, egress_status_t st, egress__answer_t *ans) {
  lookup_t *lk = arg;
  egress_loop_t *l = lk->loop;
  l->nsent--;
  if (lk->flight) {
    lookup_unlink(l, lk);
    egress__cache_publish(l->checker->cache, lk->flight, st, ans);
  }
  egress__free(lk);
  pump(l);
}

/* Puts waiting lookups on the channel while there is room.  A lookup c-ares
 * ends inside ares_getaddrinfo calls on_lookup, which calls back here: the
 * flag keeps that to this one loop. */
static void pump(egress_loop_t *l) {
  if (l->pumping) return;
  l->pumping = true;
  while (l->lunsent && l->nsent < l->maxsent) {
    lookup_t *lk = l->lunsent;
    l->lunsent = lk->next;
    lk->sent = true;
    l->nsent++;
    egress__resolve_start(l->checker->resolver, l->channel, lk->name, on_lookup, lk);
  }
  l->pumping = false;
}

/* Ends @p lk's flight as timed out; a lookup on the channel stays for
 * c-ares to end (on_lookup frees it), an unsent one goes now. */
static void abandon(egress_loop_t *l, lookup_t *lk) {
  lookup_unlink(l, lk);
  egress__flight_t *f = lk->flight;
  lk->flight = NULL;
  if (!lk->sent) egress__free(lk);
  egress__answer_t ans;
  egress__answer_timed_out(&ans, (double)egress__resolver_timeout_ms(l->checker->resolver));
  egress__cache_publish(l->checker->cache, f, EGRESS_OK, &ans);
}

/* Lookups past their deadline end as the blocking call's would: timed out.
 * c-ares keeps the query (there is no cancelling one query in 1.18); its
 * answer, when it comes, is dropped. */
static void expire(egress_loop_t *l) {
  double now = now_ms();
  while (l->lhead && l->lhead->deadline <= now) abandon(l, l->lhead);
}

static void destroy(egress_loop_t *l) {
  /* Ends every lookup still on the channel (their callbacks run inside):
   * checks of other loops and blocking threads waiting on a flight this
   * loop led get a DNS failure, never a hang. */
  l->pumping = true;
  egress__channel_free(l->channel);
  while (l->lunsent) abandon(l, l->lunsent);
  while (l->nfds) sock_state(l, l->fds[l->nfds - 1], 0, 0);
  l->watch(l->wake_fd, false, false, l->user);
  close(l->wake_fd);
  pthread_mutex_destroy(&l->qlock);
  egress__free(l->fds);
  while (l->nspare) egress__free(l->spare[--l->nspare]);
  egress__free(l);
}

static void enter(egress_loop_t *l) { l->depth++; }

static void leave(egress_loop_t *l) {
  if (--l->depth == 0 && l->closing) destroy(l);
}

egress_status_t egress_loop_new(egress_checker_t *checker, egress_watch_cb watch, void *user,
                                egress_loop_t **out) {
  if (!out) return EGRESS_EINVAL;
  *out = NULL;
  if (!checker || !watch) return EGRESS_EINVAL;
  egress_loop_t *l = egress__calloc(1, sizeof(*l));
  if (!l) return EGRESS_ENOMEM;
  l->checker = checker;
  l->watch = watch;
  l->user = user;
  l->thread = pthread_self();
  l->maxsent = LOOKUPS_MIN;
  l->wake_fd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
  if (l->wake_fd < 0) {
    egress_status_t st = errno == ENOMEM ? EGRESS_ENOMEM : EGRESS_EINTERNAL;
    egress__free(l);
    return st;
  }
  egress_status_t st = egress__resolver_channel(checker->resolver, sock_state, l, &l->channel);
  if (st != EGRESS_OK) {
    close(l->wake_fd);
    egress__free(l);
    return st;
  }
  pthread_mutex_init(&l->qlock, NULL);
  watch(l->wake_fd, true, false, user);
  *out = l;
  return EGRESS_OK;
}

/* Cancel @p p: out of its flight, or out of the ready queue if the answer
 * got there first. */
static void cancel(egress_pending_t *p) {
  egress_loop_t *l = p->loop;
  pthread_mutex_lock(&l->qlock);
  bool queued = p->queued;
  if (queued) queue_unlink(l, p);
  pthread_mutex_unlock(&l->qlock);
  if (!queued && !egress__cache_leave(&p->w)) {
    /* The answer came between: on_ready has queued it and returned. */
    pthread_mutex_lock(&l->qlock);
    queue_unlink(l, p);
    pthread_mutex_unlock(&l->qlock);
    queued = true;
  }
  if (queued) egress__cache_drop(&p->w);
  complete(p, true);
}

void egress_loop_free(egress_loop_t *l) {
  if (!l || l->closing) return;
  l->closing = true;
  enter(l);
  while (l->pending) cancel(l->pending);
  leave(l);
}

egress_status_t egress_check_cancel(egress_pending_t *p) {
  if (!p) return EGRESS_EINVAL;
  egress_loop_t *l = p->loop;
  enter(l);
  cancel(p);
  leave(l);
  return EGRESS_OK;
}

size_t egress_loop_pending(const egress_loop_t *l) { return l ? l->npending : 0; }

void egress_loop_recycle(egress_loop_t *l, egress_decision_t *d) {
  if (!d) return;
  if (!l || l->closing || l->nspare == LOOP_SPARES) {
    egress_decision_free(d);
    return;
  }
  /* Released and reset here, as egress_check_into() readies a decision:
   * nothing of this check survives into the next. */
  egress__decision_release(d);
  egress__decision_reset(d);
  l->spare[l->nspare++] = d;
}

int egress_loop_timeout(egress_loop_t *l) {
  if (!l) return -1;
  int next = -1;
  if (l->lhead) {
    double left = l->lhead->deadline - now_ms();
    next = left <= 0 ? 0 : (int)left + 1;
  }
  return egress__channel_timeout_ms(l->channel, next);
}

egress_status_t egress_loop_process(egress_loop_t *l, int fd, bool readable, bool writable) {
  if (!l) return EGRESS_EINVAL;
  enter(l);
  if (fd >= 0 && fd == l->wake_fd) {
    uint64_t n;
    pthread_mutex_lock(&l->qlock);
    while (read(l->wake_fd, &n, sizeof n) == (ssize_t)sizeof n) continue;
    l->wake_armed = false;
    pthread_mutex_unlock(&l->qlock);
  } else if (fd >= 0) {
    bool watched = false;
    for (size_t i = 0; i < l->nfds && !watched; i++) watched = l->fds[i] == fd;
    if (watched) egress__channel_process(l->channel, fd, readable, writable);
  } else {
    egress__channel_process(l->channel, -1, false, false);
  }
  expire(l);
  drain(l);
  leave(l);
  return EGRESS_OK;
}

/* A check that waits for DNS: from here on it owns copies of what the
 * caller lent (host, URL parts, request) and a reference to its policy. */
static egress_pending_t *pending_new(egress_loop_t *l, const egress__check_t *k, egress__url_check_t *url,
                                     egress_check_done_cb cb, void *user) {
  egress_pending_t *p = egress__calloc(1, sizeof(*p));
  if (!p) return NULL;
  p->loop = l;
  p->k = *k;
  p->cb = cb;
  p->user = user;
  p->w.ready = on_ready;
  bool ok = egress__request_copy(k->req, &p->req) == EGRESS_OK;
  if (!url && k->host) ok = ok && (p->host = egress__strdup(k->host)) != NULL;
  if (!ok) {
    pending_free(p);
    return NULL;
  }
  p->k.req = p->req;
  if (url) {
    p->url = *url;
    p->is_url = true;
    url->host_owned = url->path_owned = NULL; /* moved */
    p->k.url = &p->url.ctx;
    p->k.host = p->url.host;
  } else {
    p->k.host = p->host;
  }
  egress__check_hold(&p->k);
  return p;
}

static egress_status_t start(egress_loop_t *l, const char *host, int32_t port, egress__url_check_t *url,
                             const egress_request_t *req, egress_check_done_cb cb, void *user,
                             egress_decision_t *d, egress_pending_t **handle) {
  egress_checker_t *c = l->checker;
  egress__check_t k;
  egress__answer_t ans;
  egress__cache_stats_t cs = { 0, 0, 0 };
  egress_status_t st;
  enter(l);
  if (egress__check_begin(&k, c, host, port, url ? &url->ctx : NULL, req, d, true, true)) {
    st = egress__check_end(&k);
    cb(st, d, user);
    goto out;
  }
  egress_pending_t *p = pending_new(l, &k, url, cb, user);
  if (!p) {
    egress__answer_reset(&ans);
    ans.result = EGRESS__DNS_NOMEM;
    egress__check_answer(&k, EGRESS_ENOMEM, &ans);
    st = egress__check_end(&k);
    cb(st, d, user);
    goto out;
  }
  const char *name = d->host.text;
  egress__flight_t *lead = NULL;
  if (egress__name_is_localhost(name)) {
    /* Answered without DNS: no wait, as in the blocking call. */
    st = egress__cache_fetch(c->cache, c->resolver, name, d->host.len, k.name_hash, &ans, &cs);
  } else {
    st = egress__cache_join(c->cache, name, d->host.len, k.name_hash, &p->w, &ans, &cs, &lead);
  }
  egress__check_count_cache(&p->k, &cs);
  if (!p->w.flight) {
    /* Answered now (cached, localhost) or no memory to wait. */
    egress__check_answer(&p->k, st, &ans);
    egress__answer_clear(&ans);
    st = egress__check_end(&p->k);
    pending_free(p);
    cb(st, d, user);
    goto out;
  }
  p->next = l->pending;
  if (l->pending) l->pending->prev = p;
  l->pending = p;
  l->npending++;
  bool finished = false;
  p->finished = &finished;
  if (lead) {
    lookup_t *lk = egress__calloc(1, sizeof(*lk) + d->host.len + 1);
    if (!lk) {
      egress__answer_reset(&ans);
      ans.result = EGRESS__DNS_NOMEM;
      egress__cache_publish(c->cache, lead, EGRESS_ENOMEM, &ans);
    } else {
      lk->loop = l;
      lk->flight = lead;
      memcpy(lk->name, name, d->host.len);
      lk->deadline = now_ms() + (double)egress__resolver_timeout_ms(c->resolver);
      lk->prev = l->ltail;
      if (l->ltail)
        l->ltail->next = lk;
      else
        l->lhead = lk;
      l->ltail = lk;
      if (!l->lunsent) l->lunsent = lk;
      pump(l);
    }
  }
  /* c-ares may answer inside the call (a hosts file, a failure): finish
   * what is ready now rather than on the next wake-up. */
  drain(l);
  if (!finished) {
    p->finished = NULL;
    if (handle) *handle = p;
  }
out:
  leave(l);
  return EGRESS_OK;
}

static egress_decision_t *decision_for(egress_loop_t *l) {
  if (l->nspare) return l->spare[--l->nspare];
  egress_decision_t *d = egress__calloc(1, sizeof(*d));
  if (!d) egress__count(l->checker, EGRESS_COUNTER_EVENTS_FAILED);
  return d;
}

egress_status_t egress_check_start(egress_loop_t *l, const char *host, int32_t port,
                                   const egress_request_t *req, egress_check_done_cb cb, void *user,
                                   egress_pending_t **pending) {
  if (pending) *pending = NULL;
  if (!l || !cb || l->closing) return EGRESS_EINVAL;
  egress_decision_t *d = decision_for(l);
  if (!d) return EGRESS_ENOMEM;
  return start(l, host, port, NULL, req, cb, user, d, pending);
}

egress_status_t egress_check_url_start(egress_loop_t *l, const char *url, const egress_request_t *req,
                                       egress_check_done_cb cb, void *user, egress_pending_t **pending) {
  if (pending) *pending = NULL;
  if (!l || !cb || l->closing) return EGRESS_EINVAL;
  egress_decision_t *d = decision_for(l);
  if (!d) return EGRESS_ENOMEM;
  egress__url_check_t uc;
  egress__url_prepare(url, req, d, &uc);
  egress_status_t st = start(l, uc.host, uc.port, &uc, req, cb, user, d, pending);
  egress__url_release(&uc); /* what the check did not take */
  return st;
}
