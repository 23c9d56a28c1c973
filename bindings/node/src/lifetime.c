/*
 * A checker's native state, from its JS handle to the last event delivered.
 *
 * The state is reference counted on the JS thread: one reference for the JS
 * handle (dropped by close() or by the GC) and one per async check in
 * flight, so egress_checker_free() never races a check.  With an onEvent
 * callback the state itself lives until the thread-safe function has
 * drained its queue (its finalizer frees it), because queued events name it.
 *
 * Event order: the event of an async check (check(), checkUrl()) is held by
 * its work and handed to onEvent on the JS thread just before the promise
 * settles, so a caller awaiting the decision finds its event delivered.
 * Only checks made on the JS thread (checkSync, checkUrlSync) go through the
 * thread-safe function's queue.
 */
#include "addon.h"

#include <stdlib.h>
#include <string.h>

#define HANDLE_MAGIC 0x6567726573736e64ull /* "egressnd" */

/* The async check running on this thread pool thread, if any: its event is
 * kept with the work instead of queued (see on_event). */
static _Thread_local work_t *tl_work;

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
  if (nc->handle_alive || nc->tsfn || nc->works || nc->checker) return;
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

/* The native checker goes once it is closed and no check is in flight, so
 * egress_checker_free() never races a check on a worker thread. */
static void maybe_destroy(napi_env env, nchecker_t *nc) {
  if (!nc->closed || nc->works > 0 || !nc->checker) return;
  egress_checker_free(nc->checker);
  nc->checker = NULL;
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
  if (!nc || !nc->tsfn || !json) return -1;
  char *copy = malloc(len + 1);
  if (!copy) return -1;
  memcpy(copy, json, len);
  copy[len] = '\0';
  work_t *w = tl_work;
  if (w && w->nc == nc && !w->event_seen) {
    /* An async check: work_complete delivers it before settling. */
    w->event = copy;
    w->event_len = len;
    w->event_seen = true;
    return 0;
  }
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

/* close(handle): idempotent; checks in flight finish on the live checker. */
void checker_close(napi_env env, napi_value v) {
  void *p = NULL;
  if (napi_get_value_external(env, v, &p) != napi_ok || !p || ((nchecker_t *)p)->magic != HANDLE_MAGIC)
    return;
  nchecker_t *nc = p;
  nc->closed = true;
  maybe_destroy(env, nc);
}

/* ------------------------------------------------------------------------ */
/* Async checks                                                              */
/* ------------------------------------------------------------------------ */

work_t *work_new(nchecker_t *nc) {
  work_t *w = calloc(1, sizeof *w);
  if (w) w->nc = nc;
  return w;
}

static void work_execute(napi_env env, void *data) {
  work_t *w = data;
  tl_work = w;
  if (w->url)
    w->st = egress_check_url(w->nc->checker, w->url, w->req, &w->d);
  else
    w->st = egress_check_ex(w->nc->checker, w->host, w->port, w->req, &w->d);
  tl_work = NULL;
}

void work_free(napi_env env, work_t *w) {
  if (w->aw) napi_delete_async_work(env, w->aw);
  egress_decision_free(w->d);
  egress_request_free(w->req);
  free(w->host);
  free(w->url);
  free(w->event);
  free(w);
}

/* Hand the event an async check kept to onEvent, on the JS thread.  The
 * JS wrapper catches what the listener throws; anything still pending is
 * raised as an uncaught exception, as the thread-safe function would. */
static void deliver_held_event(napi_env env, work_t *w) {
  napi_value fn, undef, arg, exc;
  bool pending = false;
  if (!w->event || !w->nc->on_event) return;
  if (napi_get_reference_value(env, w->nc->on_event, &fn) != napi_ok || !fn ||
      napi_get_undefined(env, &undef) != napi_ok ||
      napi_create_string_utf8(env, w->event, w->event_len, &arg) != napi_ok)
    return;
  napi_call_function(env, undef, fn, 1, &arg, NULL);
  if (napi_is_exception_pending(env, &pending) == napi_ok && pending &&
      napi_get_and_clear_last_exception(env, &exc) == napi_ok)
    napi_fatal_exception(env, exc);
}

static void work_complete(napi_env env, napi_status status, void *data) {
  work_t *w = data;
  instance_t *inst = instance(env);
  napi_value value = NULL, exc;
  sync_event_ref(env, w->nc);
  deliver_held_event(env, w);
  if (status == napi_ok && w->d && inst) value = emit_object(env, inst, w->d);
  if (value) {
    napi_resolve_deferred(env, w->deferred, value);
  } else {
    bool pending = false;
    napi_is_exception_pending(env, &pending);
    if (!pending) {
      napi_throw_error(env, status_code(w->st == EGRESS_OK ? EGRESS_EINTERNAL : w->st),
                       "the check could not complete: denied");
    }
    if (napi_get_and_clear_last_exception(env, &exc) == napi_ok) napi_reject_deferred(env, w->deferred, exc);
  }
  nchecker_t *nc = w->nc;
  nc->works--;
  work_free(env, w);
  maybe_destroy(env, nc);
  maybe_free_state(nc);
}

napi_value work_queue(napi_env env, work_t *w) {
  napi_value promise = NULL, name;
  if (napi_create_string_utf8(env, "egress.check", NAPI_AUTO_LENGTH, &name) != napi_ok ||
      napi_create_async_work(env, NULL, name, work_execute, work_complete, w, &w->aw) != napi_ok ||
      napi_create_promise(env, &w->deferred, &promise) != napi_ok) {
    work_free(env, w);
    return NULL;
  }
  if (napi_queue_async_work(env, w->aw) != napi_ok) {
    /* The deferred must be settled; reject it. */
    napi_value err, msg;
    napi_create_string_utf8(env, "could not queue the check: denied", NAPI_AUTO_LENGTH, &msg);
    napi_create_error(env, NULL, msg, &err);
    napi_reject_deferred(env, w->deferred, err);
    work_free(env, w);
    return promise;
  }
  w->nc->works++;
  return promise;
}
