/*
 * libegress-uv: the asynchronous check API of egress.h driven by a libuv
 * loop (egress_uv.h, docs/async.md).
 *
 * This file includes nothing of libegress but its public headers, so that a
 * program shipping its own libuv (Node) compiles it against that copy.
 *
 * The driver asks for descriptors to be watched (on_watch): each gets a
 * uv_poll_t, found again by its descriptor in a small table (a handful of
 * DNS sockets and the wake-up descriptor).  The driver's next deadline
 * (egress_loop_timeout) arms one uv_timer_t.
 *
 * The handles hold the loop only while a check is in flight, so uv_run()
 * returns when the last one is done.  That includes the wake-up poll: a
 * check that joined a lookup another thread leads has neither a DNS socket
 * nor a deadline on this loop, and the wake-up is the only way its answer
 * arrives.
 *
 * egress_loop_timeout() costs c-ares a walk over every query in flight, so
 * the timer is not re-armed after each call into the driver but once per
 * loop iteration, from a uv_prepare_t that runs just before the loop blocks
 * (starting 10 000 checks in one callback then costs one walk, not 10 000).
 * The same prepare step notices checks the application cancelled on the
 * driver directly (egress_check_cancel), which the adapter does not see.
 */
#include "egress_uv.h"

#include <stdlib.h>
#include <string.h>

typedef struct watch {
  uv_poll_t poll;
  egress_uv_t *uv;
  int fd;
} watch_t;

struct egress_uv {
  uv_loop_t *loop;
  egress_loop_t *drv; /* NULL once closing */
  uv_timer_t timer;
  uv_prepare_t prepare;

  watch_t **watches; /* polls started, in no order */
  size_t nwatches, capwatches;

  int wake_fd; /* reported while egress_loop_new ran; polled after */
  bool built;  /* egress_loop_new returned */
  bool held;   /* the handles hold the loop (a check is in flight) */
  bool rearm;  /* a call into the driver since the timer was armed */
  size_t last_pending;

  unsigned handles; /* initialised and not yet through their close callback */
  bool closing;
  void (*closed)(void *user);
  void *closed_user;
};

static void set_ref(uv_handle_t *h, bool on) {
  if (on)
    uv_ref(h);
  else
    uv_unref(h);
}

static void hold(egress_uv_t *uv, bool on) {
  if (uv->held == on) return;
  uv->held = on;
  set_ref((uv_handle_t *)&uv->timer, on);
  for (size_t i = 0; i < uv->nwatches; i++) set_ref((uv_handle_t *)&uv->watches[i]->poll, on);
}

/* After every call into the driver: the refs follow the checks in flight
 * at once (uv_run decides whether to go on before the prepare step), the
 * timer waits for the prepare step. */
static void touched(egress_uv_t *uv) {
  if (uv->closing) return;
  uv->last_pending = egress_loop_pending(uv->drv);
  hold(uv, uv->last_pending > 0);
  uv->rearm = true;
}

static void on_timer(uv_timer_t *t) {
  egress_uv_t *uv = t->data;
  if (uv->closing) return;
  (void)egress_loop_process(uv->drv, -1, false, false);
  touched(uv);
}

static void on_prepare(uv_prepare_t *p) {
  egress_uv_t *uv = p->data;
  if (uv->closing) return;
  size_t pending = egress_loop_pending(uv->drv);
  if (!uv->rearm && pending == uv->last_pending) return;
  uv->rearm = false;
  uv->last_pending = pending;
  hold(uv, pending > 0);
  int ms = egress_loop_timeout(uv->drv);
  if (ms < 0)
    (void)uv_timer_stop(&uv->timer);
  else
    (void)uv_timer_start(&uv->timer, on_timer, (uint64_t)ms, 0);
}

static void on_poll(uv_poll_t *h, int status, int events) {
  watch_t *w = h->data;
  egress_uv_t *uv = w->uv;
  if (uv->closing) return;
  /* An error is for the driver to find when it reads or writes.  The poll
   * may be closed inside the call: w is not touched after it. */
  bool failed = status < 0;
  (void)egress_loop_process(uv->drv, w->fd, failed || (events & UV_READABLE),
                            failed || (events & UV_WRITABLE));
  touched(uv);
}

static void release(egress_uv_t *uv) {
  void (*closed)(void *) = uv->closed;
  void *user = uv->closed_user;
  free(uv->watches);
  free(uv);
  if (closed) closed(user);
}

static void on_closed(uv_handle_t *h) {
  egress_uv_t *uv;
  if (h->type == UV_POLL) {
    watch_t *w = h->data;
    uv = w->uv;
    free(w);
  } else {
    uv = h->data;
  }
  if (--uv->handles == 0 && uv->closing) release(uv);
}

static size_t find(const egress_uv_t *uv, int fd) {
  size_t i = 0;
  while (i < uv->nwatches && uv->watches[i]->fd != fd) i++;
  return i;
}

static void unwatch_at(egress_uv_t *uv, size_t i) {
  watch_t *w = uv->watches[i];
  uv->watches[i] = uv->watches[--uv->nwatches];
  uv_close((uv_handle_t *)&w->poll, on_closed);
}

/* A poll for @p fd.  Without one (no memory, libuv refused the descriptor)
 * the driver's deadlines still end every check it would have served. */
static void watch_new(egress_uv_t *uv, int fd, int events) {
  if (uv->nwatches == uv->capwatches) {
    size_t cap = uv->capwatches ? uv->capwatches * 2 : 4;
    watch_t **grown = realloc(uv->watches, cap * sizeof(*grown));
    if (!grown) return;
    uv->watches = grown;
    uv->capwatches = cap;
  }
  watch_t *w = calloc(1, sizeof(*w));
  if (!w) return;
  if (uv_poll_init(uv->loop, &w->poll, fd) != 0) {
    free(w); /* a failed init leaves nothing for the loop to close */
    return;
  }
  w->uv = uv;
  w->fd = fd;
  w->poll.data = w;
  uv->handles++;
  uv->watches[uv->nwatches++] = w;
  set_ref((uv_handle_t *)&w->poll, uv->held);
  if (uv_poll_start(&w->poll, events, on_poll) != 0) unwatch_at(uv, uv->nwatches - 1);
}

static void on_watch(int fd, bool readable, bool writable, void *user) {
  egress_uv_t *uv = user;
  int events = (readable ? UV_READABLE : 0) | (writable ? UV_WRITABLE : 0);
  if (!uv->built) {
    /* The wake-up descriptor, reported from inside egress_loop_new: polled
     * once that has returned, so a failure there has nothing to close. */
    if (events) uv->wake_fd = fd;
    return;
  }
  size_t i = find(uv, fd);
  if (!events) {
    if (i < uv->nwatches) unwatch_at(uv, i);
  } else if (i < uv->nwatches) {
    if (uv_poll_start(&uv->watches[i]->poll, events, on_poll) != 0) unwatch_at(uv, i);
  } else if (!uv->closing) {
    watch_new(uv, fd, events);
  }
}

egress_status_t egress_uv_new(uv_loop_t *loop, egress_checker_t *checker, egress_uv_t **out) {
  if (!out) return EGRESS_EINVAL;
  *out = NULL;
  if (!loop || !checker) return EGRESS_EINVAL;
  egress_uv_t *uv = calloc(1, sizeof(*uv));
  if (!uv) return EGRESS_ENOMEM;
  uv->loop = loop;
  uv->wake_fd = -1;
  egress_status_t st = egress_loop_new(checker, on_watch, uv, &uv->drv);
  if (st != EGRESS_OK) {
    free(uv);
    return st;
  }
  uv->built = true;
  if (uv->wake_fd >= 0) watch_new(uv, uv->wake_fd, UV_READABLE);
  if (uv->nwatches == 0) {
    /* Without the wake-up, answers led by other threads would never come. */
    egress_loop_free(uv->drv);
    uv->drv = NULL;
    if (uv->handles) {
      uv->closing = true; /* a poll that failed to start is closing: its callback frees */
    } else {
      free(uv->watches);
      free(uv);
    }
    return EGRESS_EINTERNAL;
  }
  /* Neither fails in libuv; their handles are counted for the close. */
  (void)uv_timer_init(loop, &uv->timer);
  (void)uv_prepare_init(loop, &uv->prepare);
  uv->timer.data = uv->prepare.data = uv;
  uv->handles += 2;
  uv_unref((uv_handle_t *)&uv->timer);
  uv_unref((uv_handle_t *)&uv->prepare);
  (void)uv_prepare_start(&uv->prepare, on_prepare);
  *out = uv;
  return EGRESS_OK;
}

egress_loop_t *egress_uv_driver(egress_uv_t *uv) { return uv ? uv->drv : NULL; }

egress_status_t egress_uv_check(egress_uv_t *uv, const char *host, int32_t port, const egress_request_t *req,
                                egress_check_done_cb cb, void *user, egress_pending_t **pending) {
  if (pending) *pending = NULL;
  if (!uv || uv->closing) return EGRESS_EINVAL;
  egress_status_t st = egress_check_start(uv->drv, host, port, req, cb, user, pending);
  touched(uv);
  return st;
}

egress_status_t egress_uv_check_url(egress_uv_t *uv, const char *url, const egress_request_t *req,
                                    egress_check_done_cb cb, void *user, egress_pending_t **pending) {
  if (pending) *pending = NULL;
  if (!uv || uv->closing) return EGRESS_EINVAL;
  egress_status_t st = egress_check_url_start(uv->drv, url, req, cb, user, pending);
  touched(uv);
  return st;
}

void egress_uv_close(egress_uv_t *uv, void (*closed)(void *user), void *user) {
  if (!uv || uv->closing) return;
  uv->closing = true;
  uv->closed = closed;
  uv->closed_user = user;
  egress_loop_t *drv = uv->drv;
  uv->drv = NULL;
  /* The callbacks of the checks in flight run in here; the driver reports
   * its descriptors unwatched before it closes them (on_watch closes their
   * polls first), or, called from one of its own callbacks, when that
   * returns: the polls closed below are then already stopped. */
  egress_loop_free(drv);
  while (uv->nwatches) unwatch_at(uv, uv->nwatches - 1);
  uv_close((uv_handle_t *)&uv->timer, on_closed);
  uv_close((uv_handle_t *)&uv->prepare, on_closed);
}
