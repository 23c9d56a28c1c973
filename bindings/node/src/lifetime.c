/*
 * A checker's native state, from its JS handle to the last event delivered.
 *
 * The state lives while anything can reach it: the JS handle (until close()
 * or the GC), a check in flight, the event loop adapter until libuv has
 * closed its handles, and, with an onEvent callback, the thread-safe
 * function until it has drained its queue (its finalizer lets go), because
 * queued events name it.  The native checker goes once it is closed, no
 * check is in flight and the adapter that borrows it is closed.
 *
 * Async checks (check(), checkUrl()) run on the environment's own libuv loop
 * through lib/uv/egress_uv.c, compiled into the addon against Node's uv.h:
 * no thread pool.  A check that needs no DNS completes inside the start call;
 * one that waits completes from the adapter's poll or timer callback.  Either
 * way its event (the one its decision carries) is handed to onEvent on the
 * JS thread just before its promise settles, so a caller awaiting the
 * decision finds its event delivered.  Only checkSync and checkUrlSync go
 * through the thread-safe function's queue.
 *
 * No JS runs inside a library call the addon makes from JS (starting a
 * check, closing): completions that run meanwhile are held on the checker
 * and settled when the call has returned.  Completions from the loop settle
 * at once, inside a callback scope, so that microtasks run after each as
 * after any Node callback.
 */
#include "addon.h"

#include <stdlib.h>
#include <string.h>

#define HANDLE_MAGIC 0x6567726573736e64ull /* "egressnd" */

_Thread_local bool sync_checking;

nchecker_t *get_checker(napi_env env, napi_value v) {
  void *p = NULL;
  /* napi_get_value_external refuses anything but an external. */
  if (napi_get_value_external(env, v, &p) != napi_ok || !p || ((nchecker_t *)p)->magic != HANDLE_MAGIC) {
    throw_type(env, "not a checker handle");
    return NULL;
  }
  nchecker_t *nc = p;
  if (nc->closed) {
    napi_throw_error(env, "EGRESS_CLOSED", "the checker is closed");
    return NULL;
  }
  return nc;
}

/* ------------------------------------------------------------------------ */
/* Checker lifetime                                                          */
/* ------------------------------------------------------------------------ */

/* The struct itself goes when nothing can reach it any more: not the JS
 * handle, not a queued event, not a check in flight. */
static void maybe_free_state(nchecker_t *nc) {
  if (nc->handle_alive || nc->tsfn || nc->works || nc->checker || nc->uv || nc->uv_closing) return;
  nc->magic = 0;
  free(nc);
}

/* Events still queued keep the loop alive until delivered, then let it go
 * (event_call_js): a checker with onEvent must not hold a process open on its
 * own, nor let it exit with decisions unreported. */
void sync_event_ref(napi_env env, nchecker_t *nc) {
  if (!nc->tsfn || nc->tsfn_reffed || atomic_load(&nc->pending) == 0) return;
  if (napi_ref_threadsafe_function(env, nc->tsfn) == napi_ok) nc->tsfn_reffed = true;
}

static void uv_closed(void *user);
static void settle_held(napi_env env, nchecker_t *nc);

/* Cancel what the adapter has in flight (each callback runs inside this
 * call) and let libuv close its handles; uv_closed() follows on the loop. */
static void close_uv(nchecker_t *nc) {
  egress_uv_t *uv = nc->uv;
  if (!uv) return;
  nc->uv = NULL;
  nc->uv_closing = true;
  nc->direct++;
  egress_uv_close(uv, uv_closed, nc);
  nc->direct--;
}

/* The native checker goes once it is closed and no check is in flight, and
 * after the adapter that borrows it. */
static void maybe_destroy(napi_env env, nchecker_t *nc) {
  if (!nc->closed || nc->works > 0) return;
  close_uv(nc);
  if (nc->uv_closing || !nc->checker) return;
  egress_checker_free(nc->checker);
  nc->checker = NULL;
  if (nc->actx) {
    napi_async_destroy(env, nc->actx);
    nc->actx = NULL;
  }
  if (nc->on_event) {
    napi_delete_reference(env, nc->on_event);
    nc->on_event = NULL;
  }
  if (nc->tsfn) {
    /* Deliver what is queued before the process may exit; the tsfn's
     * finalizer lets go of nc once the queue is drained. */
    sync_event_ref(env, nc);
    napi_release_threadsafe_function(nc->tsfn, napi_tsfn_release);
  }
}

static void handle_finalize(napi_env env, void *data, void *hint) {
  nchecker_t *nc = data;
  if (!nc) return;
  /* Checks in flight go on: their promises do not hold the handle. */
  nc->closed = true;
  nc->handle_alive = false;
  maybe_destroy(env, nc);
  maybe_free_state(nc);
}

/* ------------------------------------------------------------------------ */
/* Events: library callback (any thread) -> thread-safe function (JS thread) */
/* ------------------------------------------------------------------------ */

static int on_event(const char *json, size_t len, const egress_decision_t *d, void *user_data) {
  nchecker_t *nc = user_data;
  (void)d;
  if (!nc || !nc->tsfn || !json) return -1;
  /* An async check: settle() delivers the event its decision carries. */
  if (!sync_checking) return 0;
  char *copy = malloc(len + 1);
  if (!copy) return -1;
  memcpy(copy, json, len);
  copy[len] = '\0';
  atomic_fetch_add(&nc->pending, 1);
  /* Non-blocking: a full queue is a delivery failure (audit_required then
   * denies), never a worker thread stuck behind a busy JS thread. */
  if (napi_call_threadsafe_function(nc->tsfn, copy, napi_tsfn_nonblocking) != napi_ok) {
    atomic_fetch_sub(&nc->pending, 1);
    free(copy);
    return -1;
  }
  return 0;
}

static void event_call_js(napi_env env, napi_value js_cb, void *context, void *data) {
  nchecker_t *nc = context;
  char *json = data;
  if (env && js_cb && json) {
    napi_value undef, arg;
    if (napi_get_undefined(env, &undef) == napi_ok &&
        napi_create_string_utf8(env, json, NAPI_AUTO_LENGTH, &arg) == napi_ok)
      napi_call_function(env, undef, js_cb, 1, &arg, NULL);
  }
  free(json);
  if (atomic_fetch_sub(&nc->pending, 1) == 1 && env && nc->tsfn_reffed) {
    nc->tsfn_reffed = false;
    napi_unref_threadsafe_function(env, nc->tsfn);
  }
}

static void event_tsfn_finalize(napi_env env, void *data, void *hint) {
  nchecker_t *nc = data;
  nc->tsfn = NULL;
  maybe_free_state(nc);
}

/* ------------------------------------------------------------------------ */
/* The handle                                                                */
/* ------------------------------------------------------------------------ */

napi_value checker_handle_new(napi_env env, egress_policy_t *policy, egress_options_t *opts,
                              napi_value listener, size_t queue_size) {
  char err[EGRESS_ERRBUF_SIZE] = "";
  napi_value handle = NULL, name;
  egress_status_t st;
  nchecker_t *nc = calloc(1, sizeof *nc);
  if (!nc) return throw_status(env, EGRESS_ENOMEM, NULL);
  nc->magic = HANDLE_MAGIC;
  nc->env = env;
  nc->held_tail = &nc->held;
  atomic_init(&nc->pending, 0);
  if (listener) {
    if (napi_create_string_utf8(env, "egress.onEvent", NAPI_AUTO_LENGTH, &name) != napi_ok ||
        napi_create_threadsafe_function(env, listener, NULL, name, queue_size, 1, nc, event_tsfn_finalize, nc,
                                        event_call_js, &nc->tsfn) != napi_ok) {
      napi_throw_error(env, "EGRESS_ENAPI", "could not create the event queue");
      goto done;
    }
    napi_unref_threadsafe_function(env, nc->tsfn);
    if (napi_create_reference(env, listener, 1, &nc->on_event) != napi_ok) {
      napi_throw_error(env, "EGRESS_ENAPI", "could not keep the event callback");
      goto done;
    }
    egress_options_set_event_callback(opts, on_event, nc);
  }
  if ((st = egress_checker_new(policy, opts, &nc->checker, err, sizeof err)) != EGRESS_OK) {
    throw_status(env, st, err);
    goto done;
  }
  if (napi_create_external(env, nc, handle_finalize, NULL, &handle) != napi_ok) {
    egress_checker_free(nc->checker);
    nc->checker = NULL;
    handle = NULL;
    goto done;
  }
  nc->handle_alive = true;
  nc = NULL; /* owned by the handle now */
done:
  if (nc) {
    if (nc->on_event) napi_delete_reference(env, nc->on_event);
    nc->on_event = NULL;
    if (nc->tsfn) /* its finalizer frees nc */
      napi_release_threadsafe_function(nc->tsfn, napi_tsfn_abort);
    else
      maybe_free_state(nc);
  }
  return handle;
}

/* close(handle): idempotent; checks in flight are cancelled, each promise
 * rejected with EGRESS_CLOSED (settle). */
void checker_close(napi_env env, napi_value v) {
  void *p = NULL;
  if (napi_get_value_external(env, v, &p) != napi_ok || !p || ((nchecker_t *)p)->magic != HANDLE_MAGIC)
    return;
  nchecker_t *nc = p;
  nc->closed = true;
  close_uv(nc);
  settle_held(env, nc);
  maybe_destroy(env, nc);
}

/* ------------------------------------------------------------------------ */
/* Async checks on the environment's loop                                   */
/* ------------------------------------------------------------------------ */

static void reject(napi_env env, napi_deferred deferred, const char *code, const char *message) {
  napi_value err = NULL, c, m;
  if (napi_create_string_utf8(env, code, NAPI_AUTO_LENGTH, &c) == napi_ok &&
      napi_create_string_utf8(env, message, NAPI_AUTO_LENGTH, &m) == napi_ok)
    napi_create_error(env, c, m, &err);
  if (!err) napi_get_undefined(env, &err);
  napi_reject_deferred(env, deferred, err);
}

/* Hand a check's event to onEvent.  The JS wrapper catches what the
 * listener throws; anything still pending is raised as an uncaught
 * exception, as the thread-safe function would. */
static void deliver_event(napi_env env, nchecker_t *nc, const char *json) {
  napi_value fn, undef, arg, exc;
  bool pending = false;
  if (!json || !nc->on_event) return;
  if (napi_get_reference_value(env, nc->on_event, &fn) != napi_ok || !fn ||
      napi_get_undefined(env, &undef) != napi_ok ||
      napi_create_string_utf8(env, json, NAPI_AUTO_LENGTH, &arg) != napi_ok)
    return;
  napi_call_function(env, undef, fn, 1, &arg, NULL);
  if (napi_is_exception_pending(env, &pending) == napi_ok && pending &&
      napi_get_and_clear_last_exception(env, &exc) == napi_ok)
    napi_fatal_exception(env, exc);
}

/* Event first, then the promise: resolved with the decision as checkSync
 * builds it (even a deny after ENOMEM says why), rejected when close()
 * cancelled the check.  Frees @p w. */
static void settle(napi_env env, work_t *w) {
  nchecker_t *nc = w->nc;
  instance_t *inst = instance(env);
  napi_value value = NULL, exc;
  deliver_event(env, nc, egress_decision_event_json(w->d));
  if (w->st == EGRESS_ECANCELLED && nc->closed) {
    reject(env, w->deferred, "EGRESS_CLOSED", "checker closed while the check was in flight");
  } else {
    if (inst) value = emit_object(env, inst, w->d);
    if (value) {
      napi_resolve_deferred(env, w->deferred, value);
    } else {
      bool pending = false;
      napi_is_exception_pending(env, &pending);
      if (pending && napi_get_and_clear_last_exception(env, &exc) == napi_ok)
        napi_reject_deferred(env, w->deferred, exc);
      else
        reject(env, w->deferred, status_code(w->st == EGRESS_OK ? EGRESS_EINTERNAL : w->st),
               "the check could not complete: denied");
    }
  }
  egress_decision_free(w->d);
  free(w);
}

/* Settle the completions held while the addon was inside a library call;
 * JS they run may start and close checks, holding more. */
static void settle_held(napi_env env, nchecker_t *nc) {
  work_t *w;
  while (!nc->direct && (w = nc->held)) {
    if (!(nc->held = w->next)) nc->held_tail = &nc->held;
    settle(env, w);
  }
}

/* An environment going away settles nothing: no JS runs any more. */
static void drop(work_t *w) {
  egress_decision_free(w->d);
  free(w);
}

/* The adapter's callback (egress_check_done_cb), on the loop's thread. */
static void check_done(egress_status_t st, egress_decision_t *d, void *user) {
  work_t *w = user;
  nchecker_t *nc = w->nc;
  napi_env env = nc->env;
  w->st = st;
  w->d = d;
  nc->works--;
  if (nc->direct && w == nc->starting) {
    w->decided = true; /* inside check_start, which hands it over */
    return;
  }
  if (nc->tearing_down || w->orphan) {
    drop(w);
    return;
  }
  if (nc->direct) {
    w->next = NULL;
    *nc->held_tail = w;
    nc->held_tail = &w->next;
    return;
  }
  /* From the loop: a Node callback as MakeCallback makes one. */
  napi_handle_scope hs;
  napi_callback_scope cs;
  napi_value resource;
  if (napi_open_handle_scope(env, &hs) != napi_ok) {
    drop(w);
  } else {
    bool scoped = napi_create_object(env, &resource) == napi_ok &&
                  napi_open_callback_scope(env, resource, nc->actx, &cs) == napi_ok;
    settle(env, w);
    if (scoped) napi_close_callback_scope(env, cs);
    napi_close_handle_scope(env, hs);
  }
  maybe_destroy(env, nc);
  maybe_free_state(nc);
}

static void uv_closed(void *user) {
  nchecker_t *nc = user;
  nc->uv_closing = false;
  if (nc->cleanup) {
    napi_remove_async_cleanup_hook(nc->cleanup);
    nc->cleanup = NULL;
  }
  maybe_destroy(nc->env, nc);
  maybe_free_state(nc);
}

/* The environment is going (process exit, worker terminated) with the
 * adapter open: cancel what is in flight, dropping it, and close; Node runs
 * the loop until uv_closed() removes this hook. */
static void env_teardown(napi_async_cleanup_hook_handle handle, void *arg) {
  nchecker_t *nc = arg;
  (void)handle;
  nc->tearing_down = true;
  nc->closed = true;
  while (nc->held) {
    work_t *w = nc->held;
    nc->held = w->next;
    drop(w);
  }
  nc->held_tail = &nc->held;
  close_uv(nc);
}

/* The environment's loop, the first time a check needs it. */
static bool attach_loop(napi_env env, nchecker_t *nc) {
  uv_loop_t *loop = NULL;
  napi_value name;
  if (napi_get_uv_event_loop(env, &loop) != napi_ok || !loop) {
    napi_throw_error(env, "EGRESS_ENAPI", "could not get the event loop");
    return false;
  }
  if (!nc->actx && (napi_create_string_utf8(env, "egress.check", NAPI_AUTO_LENGTH, &name) != napi_ok ||
                    napi_async_init(env, NULL, name, &nc->actx) != napi_ok)) {
    napi_throw_error(env, "EGRESS_ENAPI", "could not make the checks' async context");
    return false;
  }
  egress_status_t st = egress_uv_new(loop, nc->checker, &nc->uv);
  if (st != EGRESS_OK) {
    nc->uv = NULL;
    throw_status(env, st, "could not attach the checker to the event loop");
    return false;
  }
  if (napi_add_async_cleanup_hook(env, env_teardown, nc, &nc->cleanup) != napi_ok) {
    nc->cleanup = NULL;
    close_uv(nc);
    napi_throw_error(env, "EGRESS_ENAPI", "could not watch the environment's teardown");
    return false;
  }
  return true;
}

napi_value check_start(napi_env env, nchecker_t *nc, const char *host, int32_t port, const char *url,
                       const egress_request_t *req) {
  napi_value result = NULL;
  if (!nc->uv && !attach_loop(env, nc)) return NULL;
  work_t *w = calloc(1, sizeof *w);
  if (!w) return throw_status(env, EGRESS_ENOMEM, NULL);
  w->nc = nc;
  work_t *outer = nc->starting;
  nc->starting = w;
  nc->works++;
  nc->direct++;
  egress_status_t st = url ? egress_uv_check_url(nc->uv, url, req, check_done, w, NULL)
                           : egress_uv_check(nc->uv, host, port, req, check_done, w, NULL);
  nc->direct--;
  nc->starting = outer;
  if (st != EGRESS_OK) {
    /* The callback never runs: no decision at all. */
    nc->works--;
    free(w);
    settle_held(env, nc);
    return throw_status(env, st, "the check could not start: denied");
  }
  if (w->decided) {
    /* No DNS needed: the decision as checkSync hands it over, no promise
     * made here (index.js resolves one).  Event and held completions first:
     * the JS they run may check, and the numbers must be this decision's. */
    deliver_event(env, nc, egress_decision_event_json(w->d));
    settle_held(env, nc);
    instance_t *inst = instance(env);
    result = inst ? emit_packed(env, inst, w->d) : throw_type(env, "setup() was not called");
    /* Copied out: the loop fills it again for the next check, with no
     * allocation.  nc->uv is NULL if the JS run above closed the checker:
     * the decision is freed then. */
    egress_loop_recycle(egress_uv_driver(nc->uv), w->d);
    free(w);
    return result;
  }
  if (napi_create_promise(env, &w->deferred, &result) != napi_ok) {
    w->orphan = true; /* decided later, settled never */
    throw_napi_error(env);
    result = NULL;
  }
  settle_held(env, nc);
  return result;
}
