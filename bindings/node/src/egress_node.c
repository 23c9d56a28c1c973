/*
 * egress_node: the Node-API addon behind bindings/node/index.js.
 *
 * The JS side owns the API shape; this file only moves values across.
 *
 * Decisions cross the boundary through two reusable containers that the JS
 * loader hands over once (setup): a Float64Array for every number and an
 * Array for every string.  The addon fills them and the JS builder turns them
 * into a plain object literal.  Setting a dozen named properties from C costs
 * more than the check itself; a literal built by JIT-compiled code does not.
 * Both containers are read back before anything else can run on the JS
 * thread, so one pair serves every checker of an environment.
 *
 * Lifetime: a checker's native state is reference counted on the JS thread:
 * one reference for the JS handle (dropped by close() or by the GC) and one
 * per async check in flight, so egress_checker_free() never races a check.
 * With an onEvent callback the state itself lives until the thread-safe
 * function has drained its queue (its finalizer frees it), because queued
 * events name it.
 *
 * Event order: the event of an async check (check(), checkUrl()) is held by
 * its work and handed to onEvent on the JS thread just before the promise
 * settles, so a caller awaiting the decision finds its event delivered.
 * Only checks made on the JS thread (checkSync, checkUrlSync) go through the
 * thread-safe function's queue.
 */
#include <node_api.h>

#include <stdarg.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "egress.h"

/* Layout of the shared number array; index.js mirrors it. */
enum {
  N_VERDICT = 0,
  N_OUTCOME,
  N_REASON,
  N_PORT,
  N_HAS_RULE,
  N_RULE_LIST,
  N_RULE_INDEX,
  N_NADDRS,
  N_DNS_MS,
  N_LATENCY_MS,
  N_MODE,
  N_ADDR_OVERFLOW, /* 1: per-address numbers follow the strings instead */
  N_NULLS,         /* bit i set: string field i is null */
  N_MEMO_SLOT,     /* string memo slot of this decision, -1: none */
  N_MEMO_TAG,      /* the slot's tag (see memo_t) */
  N_HEADER = 16,   /* then 3 numbers per address: verdict, reason, ttl */
};

/* The string fields, in the order they are packed into one string separated
 * by NUL characters (no field can hold a NUL: they come from C strings).
 * One string and one split cost far less than a JS property set per field. */
enum {
  S_MESSAGE = 0,
  S_HOST,
  S_RULE_TEXT,
  S_ADDRESSES, /* comma-separated address texts */
  S_CURL_RESOLVE,
  S_DIGEST,    /* "" when it is the digest of the previous decision */
  S_EVENT,
  S_URL,
  S_COUNT
};

#define CTX_FIELDS 6
#define MAX_STRING (64 * 1024)          /* hosts, URLs, paths, options */
#define MAX_POLICY (256u * 1024 * 1024) /* policy documents */
#define HANDLE_MAGIC 0x6567726573736e64ull /* "egressnd" */

/*
 * Memo of packed string fields.  A worker checks the same few destinations
 * over and over, and their string fields (message, host, rule text,
 * addresses, curl resolve line) come out byte for byte the same every time:
 * making the JS string and splitting it again costs more than the check.
 * When the bytes equal what a slot last held, the addon returns no string
 * and the builder reuses the fields it split for that slot.  Each store gets
 * a new tag; the builder compares tags, so a slot it never saw filled can
 * only cost a fresh copy (lastPacked), never a wrong field.
 */
#define MEMO_SLOTS 64
#define MEMO_MAX_BYTES 1024

typedef struct memo {
  uint64_t tag;                  /* 0: empty */
  uint64_t hash;
  size_t len;
  char bytes[MEMO_MAX_BYTES];
} memo_t;

typedef struct instance {
  napi_ref builder;     /* function (packed) -> decision object */
  napi_ref numbers;     /* the Float64Array */
  double *nums;         /* data of the Float64Array */
  size_t nums_len;
  char last_digest[65]; /* the builder remembers the digest last sent */
  char *buf;            /* packing buffer, reused */
  size_t buf_cap;
  size_t buf_len;       /* bytes of the last decision packed */
  uint64_t next_tag;
  memo_t *memo;         /* MEMO_SLOTS, allocated with the instance */
  egress_decision_t *sync_decision; /* reused by every checkSync: no
                                       allocation per check.  Safe: no JS
                                       runs during a check (events reach JS
                                       through the thread-safe function) */
} instance_t;

/* All fields but pending are touched on the JS thread only. */
typedef struct nchecker {
  uint64_t magic;
  egress_checker_t *checker;     /* freed once closed with no work in flight */
  unsigned works;                /* async checks in flight */
  bool closed;                   /* close() called or handle collected */
  bool handle_alive;             /* the JS external still points here */
  napi_threadsafe_function tsfn; /* onEvent, or NULL once finalized */
  napi_ref on_event;             /* onEvent for async checks' events */
  bool tsfn_reffed;
  atomic_uint pending;           /* events queued and not yet delivered */
} nchecker_t;

typedef struct work {
  napi_async_work aw;
  napi_deferred deferred;
  nchecker_t *nc;
  char *host;
  char *url;
  int32_t port;
  egress_request_t *req;
  egress_decision_t *d;
  egress_status_t st;
  char *event;   /* the check's event JSON, delivered before the promise settles */
  size_t event_len;
  bool event_seen;
} work_t;

/* The async check running on this thread pool thread, if any: its event is
 * kept with the work instead of queued (see on_event). */
static _Thread_local work_t *tl_work;

/* ------------------------------------------------------------------------ */
/* Small helpers                                                             */
/* ------------------------------------------------------------------------ */

static const char *status_code(egress_status_t st) {
  switch (st) {
  case EGRESS_OK: return "EGRESS_OK";
  case EGRESS_ENOMEM: return "EGRESS_ENOMEM";
  case EGRESS_EINVAL: return "EGRESS_EINVAL";
  case EGRESS_EPOLICY: return "EGRESS_EPOLICY";
  case EGRESS_EIO: return "EGRESS_EIO";
  case EGRESS_ERESOLVER: return "EGRESS_ERESOLVER";
  case EGRESS_ERANGE: return "EGRESS_ERANGE";
  case EGRESS_EINTERNAL: return "EGRESS_EINTERNAL";
  }
  return "EGRESS_EINTERNAL";
}

/* Throw an Error carrying the library's message (or its status text) and a
 * code naming the status.  Returns NULL for the caller to return. */
static napi_value throw_status(napi_env env, egress_status_t st, const char *msg) {
  napi_throw_error(env, status_code(st), msg && msg[0] ? msg : egress_strerror(st));
  return NULL;
}

static napi_value throw_type(napi_env env, const char *msg) {
  napi_throw_type_error(env, "ERR_INVALID_ARG_TYPE", msg);
  return NULL;
}

#define NAPI_CHECK(env, call)                                                  \
  do {                                                                         \
    if ((call) != napi_ok) {                                                   \
      const napi_extended_error_info *info_ = NULL;                           \
      bool pending_ = false;                                                   \
      napi_is_exception_pending((env), &pending_);                             \
      if (!pending_) {                                                         \
        napi_get_last_error_info((env), &info_);                               \
        napi_throw_error((env), "EGRESS_ENAPI",                                \
                         info_ && info_->error_message ? info_->error_message \
                                                       : "Node-API call failed"); \
      }                                                                        \
      return NULL;                                                             \
    }                                                                          \
  } while (0)

static bool is_nullish(napi_env env, napi_value v) {
  napi_valuetype t;
  if (!v || napi_typeof(env, v, &t) != napi_ok) return true;
  return t == napi_undefined || t == napi_null;
}

/*
 * JS strings reach C whole or not at all.  Node-API never splits a UTF-8
 * sequence: a UTF-8 copy into a buffer too small for the string stops early
 * at a character boundary, up to three bytes before the end, and a host cut
 * short there is another, shorter host (one the policy may allow).  So a
 * string is measured before it is copied and the copy must come out at the
 * measured length; the hot path copies UTF-16 code units instead, which are
 * copied one for one.
 *
 * Two things a C string cannot carry: a NUL (C would stop there) and a lone
 * surrogate (UTF-8 has no form for it; Node-API writes U+FFFD instead).  A
 * destination (host, URL: @p decided) holding either is still decided, with
 * U+0001 in their place: a control character the library always refuses, so
 * the check denies it invalid_host and its event records the attempt.  Any
 * other argument holding either is a TypeError.  A destination longer than
 * the copy limit is likewise decided as a U+0001 stand-in naming its length
 * (invalid_host, with its event); any other argument that long is a
 * RangeError.
 */
typedef enum { ERR_TYPE, ERR_RANGE, ERR_PLAIN } err_kind_t;

static void throw_arg(napi_env env, err_kind_t kind, const char *code, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
static void throw_arg(napi_env env, err_kind_t kind, const char *code, const char *fmt, ...) {
  char msg[160];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(msg, sizeof msg, fmt, ap);
  va_end(ap);
  if (kind == ERR_TYPE)
    napi_throw_type_error(env, code, msg);
  else if (kind == ERR_RANGE)
    napi_throw_range_error(env, code, msg);
  else
    napi_throw_error(env, code, msg);
}

static bool is_lead(uint32_t u) { return u >= 0xD800 && u <= 0xDBFF; }
static bool is_trail(uint32_t u) { return u >= 0xDC00 && u <= 0xDFFF; }

/* @p n UTF-16 code units to UTF-8 in @p out (@p cap bytes, room for the NUL
 * included), with NULs and lone surrogates marked or refused as above.
 * Returns false with an exception pending. */
static bool utf16_to_utf8(napi_env env, const char16_t *u, size_t n, char *out, size_t cap,
                          size_t *len, const char *what, bool decided) {
  size_t o = 0;
  for (size_t i = 0; i < n; i++) {
    uint32_t c = u[i];
    if (c - 1 < 0x7F && o + 1 < cap) { /* printable ASCII and controls but NUL */
      out[o++] = (char)c;
      continue;
    }
    if (is_lead(c) && i + 1 < n && is_trail(u[i + 1])) {
      c = 0x10000 + ((c - 0xD800) << 10) + (u[++i] - 0xDC00u);
    } else if (c == 0 || is_lead(c) || is_trail(c)) {
      if (!decided) {
        if (c == 0)
          throw_arg(env, ERR_TYPE, "ERR_INVALID_ARG_VALUE", "%s must not contain NUL characters", what);
        else
          throw_arg(env, ERR_TYPE, "ERR_INVALID_ARG_VALUE",
                    "%s must be well-formed Unicode (it holds a lone surrogate)", what);
        return false;
      }
      c = 0x01;
    }
    size_t need = c < 0x80 ? 1 : c < 0x800 ? 2 : c < 0x10000 ? 3 : 4;
    if (o + need >= cap) {
      throw_arg(env, ERR_PLAIN, "EGRESS_EINTERNAL", "%s could not be read whole", what);
      return false;
    }
    if (need == 1) {
      out[o++] = (char)c;
    } else if (need == 2) {
      out[o++] = (char)(0xC0 | (c >> 6));
      out[o++] = (char)(0x80 | (c & 0x3F));
    } else if (need == 3) {
      out[o++] = (char)(0xE0 | (c >> 12));
      out[o++] = (char)(0x80 | ((c >> 6) & 0x3F));
      out[o++] = (char)(0x80 | (c & 0x3F));
    } else {
      out[o++] = (char)(0xF0 | (c >> 18));
      out[o++] = (char)(0x80 | ((c >> 12) & 0x3F));
      out[o++] = (char)(0x80 | ((c >> 6) & 0x3F));
      out[o++] = (char)(0x80 | (c & 0x3F));
    }
  }
  out[o] = '\0';
  *len = o;
  return true;
}

/* Read @p v again as UTF-16 and re-encode it into @p s (the Node-API copy
 * of @p len bytes).  Never longer than that copy: a mark takes one byte
 * where Node-API wrote one (NUL) or three (U+FFFD). */
static bool recode_exact(napi_env env, napi_value v, const char *what, bool decided, char *s,
                         size_t *len) {
  size_t n = 0, got = 0;
  if (napi_get_value_string_utf16(env, v, NULL, 0, &n) != napi_ok) {
    throw_arg(env, ERR_PLAIN, "EGRESS_ENAPI", "%s could not be read", what);
    return false;
  }
  char16_t *u = malloc((n + 1) * sizeof *u);
  if (!u) {
    throw_status(env, EGRESS_ENOMEM, NULL);
    return false;
  }
  bool ok = false;
  if (napi_get_value_string_utf16(env, v, u, n + 1, &got) != napi_ok || got != n)
    throw_arg(env, ERR_PLAIN, "EGRESS_EINTERNAL", "%s could not be read whole", what);
  else
    ok = utf16_to_utf8(env, u, n, s, *len + 1, len, what, decided);
  free(u);
  return ok;
}

/* Did Node-API write a NUL, or a U+FFFD that may stand for a lone
 * surrogate?  Only then is the string read again as UTF-16. */
static bool needs_recode(const char *s, size_t len) {
  if (memchr(s, '\0', len)) return true;
  for (const char *p = s; (p = memchr(p, 0xEF, len - (size_t)(p - s))) != NULL; p++)
    if ((size_t)(s + len - p) >= 3 && (unsigned char)p[1] == 0xBF && (unsigned char)p[2] == 0xBD)
      return true;
  return false;
}

/*
 * Copy @p v, which must be a string of at most @p max UTF-8 bytes, to a
 * malloc'ed C string; @p len_out (optional) receives its length.  Returns
 * NULL with an exception pending.
 */
static char *js_string(napi_env env, napi_value v, const char *what, bool decided, size_t max,
                       size_t *len_out) {
  size_t len = 0, got = 0;
  napi_status st = napi_get_value_string_utf8(env, v, NULL, 0, &len);
  if (st == napi_string_expected) {
    throw_arg(env, ERR_TYPE, "ERR_INVALID_ARG_TYPE", "%s must be a string", what);
    return NULL;
  }
  if (st != napi_ok) {
    throw_arg(env, ERR_PLAIN, "EGRESS_ENAPI", "%s could not be read", what);
    return NULL;
  }
  if (len > max && decided) {
    /* Too long to copy, and no prefix of it may be decided in its place:
     * decide a stand-in the library refuses (it starts with U+0001) and
     * that says what was refused, so the attempt is denied with an event. */
    char *stand_in = malloc(96);
    if (!stand_in) {
      throw_status(env, EGRESS_ENOMEM, NULL);
      return NULL;
    }
    snprintf(stand_in, 96, "\x01(%s of %zu UTF-8 bytes, over the %zu-byte limit)", what, len, max);
    if (len_out) *len_out = strlen(stand_in);
    return stand_in;
  }
  if (len > max) {
    throw_arg(env, ERR_RANGE, "ERR_OUT_OF_RANGE", "%s is longer than %zu bytes", what, max);
    return NULL;
  }
  char *s = malloc(len + 1);
  if (!s) {
    throw_status(env, EGRESS_ENOMEM, NULL);
    return NULL;
  }
  if (napi_get_value_string_utf8(env, v, s, len + 1, &got) != napi_ok || got != len) {
    throw_arg(env, ERR_PLAIN, "EGRESS_EINTERNAL", "%s could not be read whole", what);
    goto fail;
  }
  if (needs_recode(s, len) && !recode_exact(env, v, what, decided, s, &len)) goto fail;
  if (len_out) *len_out = len;
  return s;
fail:
  free(s);
  return NULL;
}

/*
 * js_string for the hot path (checkSync's host), in one Node-API call and no
 * allocation: the string's own UTF-16 code units are copied to the stack (a
 * plain copy of min(length, room) units: it never stops early at a
 * character), and when they fit they are the whole string, encoded here.
 * Longer strings take js_string.  The result is @p small or must be freed.
 */
#define SMALL_UNITS 128
#define SMALL_BYTES (3 * (SMALL_UNITS - 1) + 1)

static char *js_string_small(napi_env env, napi_value v, const char *what, bool decided,
                             char small[SMALL_BYTES]) {
  char16_t u[SMALL_UNITS];
  size_t n = 0, len = 0;
  napi_status st = napi_get_value_string_utf16(env, v, u, SMALL_UNITS, &n);
  if (st == napi_string_expected) {
    throw_arg(env, ERR_TYPE, "ERR_INVALID_ARG_TYPE", "%s must be a string", what);
    return NULL;
  }
  if (st != napi_ok) {
    throw_arg(env, ERR_PLAIN, "EGRESS_ENAPI", "%s could not be read", what);
    return NULL;
  }
  if (n + 1 >= SMALL_UNITS) return js_string(env, v, what, decided, MAX_STRING, NULL);
  return utf16_to_utf8(env, u, n, small, SMALL_BYTES, &len, what, decided) ? small : NULL;
}

static char *get_string(napi_env env, napi_value v, const char *what, bool decided) {
  return js_string(env, v, what, decided, MAX_STRING, NULL);
}

static char *get_opt_string(napi_env env, napi_value obj, const char *key, bool *ok) {
  napi_value v;
  *ok = false;
  if (napi_get_named_property(env, obj, key, &v) != napi_ok) return NULL;
  if (is_nullish(env, v)) {
    *ok = true;
    return NULL;
  }
  char *s = get_string(env, v, key, false);
  *ok = s != NULL;
  return s;
}

static bool get_opt_number(napi_env env, napi_value obj, const char *key, bool *present,
                           double *out) {
  napi_value v;
  napi_valuetype t;
  *present = false;
  if (napi_get_named_property(env, obj, key, &v) != napi_ok) return false;
  if (is_nullish(env, v)) return true;
  if (napi_typeof(env, v, &t) != napi_ok || t != napi_number) {
    char msg[96];
    snprintf(msg, sizeof msg, "%s must be a number", key);
    throw_type(env, msg);
    return false;
  }
  *present = true;
  return napi_get_value_double(env, v, out) == napi_ok;
}

static bool get_opt_bool(napi_env env, napi_value obj, const char *key, bool *out) {
  napi_value v;
  *out = false;
  if (napi_get_named_property(env, obj, key, &v) != napi_ok) return false;
  if (is_nullish(env, v)) return true;
  return napi_get_value_bool(env, v, out) == napi_ok;
}

static instance_t *instance(napi_env env) {
  void *data = NULL;
  if (napi_get_instance_data(env, &data) != napi_ok || !data) return NULL;
  return data;
}

static nchecker_t *get_checker(napi_env env, napi_value v) {
  void *p = NULL;
  /* napi_get_value_external refuses anything but an external. */
  if (napi_get_value_external(env, v, &p) != napi_ok || !p ||
      ((nchecker_t *)p)->magic != HANDLE_MAGIC) {
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
static void sync_event_ref(napi_env env, nchecker_t *nc) {
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
/* Decision -> shared containers -> JS builder                               */
/* ------------------------------------------------------------------------ */

static napi_status set_str(napi_env env, napi_value arr, uint32_t i, const char *s) {
  napi_value v;
  napi_status st = s ? napi_create_string_utf8(env, s, NAPI_AUTO_LENGTH, &v) : napi_get_null(env, &v);
  return st == napi_ok ? napi_set_element(env, arr, i, v) : st;
}

static bool reserve(instance_t *inst, size_t need) {
  if (need <= inst->buf_cap) return true;
  size_t cap = inst->buf_cap ? inst->buf_cap : 1024;
  while (cap < need) cap *= 2;
  char *b = realloc(inst->buf, cap);
  if (!b) return false;
  inst->buf = b;
  inst->buf_cap = cap;
  return true;
}

/* The slot only has to spread destinations; memcmp decides equality.  Four
 * words spread over the bytes (host, rule, addresses) are enough. */
static uint64_t memo_hash(const char *p, size_t n) {
  uint64_t h = 0x9e3779b97f4a7c15ull ^ n, w = 0;
  if (n < 8) {
    memcpy(&w, p, n);
    return (h ^ w) * 0xff51afd7ed558ccdull;
  }
  const size_t at[4] = {n / 4, n / 2, n / 4 * 3, n - 8};
  for (int i = 0; i < 4; i++) {
    memcpy(&w, p + (at[i] + 8 <= n ? at[i] : n - 8), 8);
    h = (h ^ w) * 0xff51afd7ed558ccdull;
    h ^= h >> 29;
  }
  return h;
}

/* The packed fields in inst->buf as a JS string, or undefined when a memo
 * slot already holds the same bytes (N_MEMO_SLOT/N_MEMO_TAG say which). */
static napi_value packed_or_memo(napi_env env, instance_t *inst) {
  napi_value v;
  const char *b = inst->buf;
  size_t len = inst->buf_len;
  inst->nums[N_MEMO_SLOT] = -1;
  if (inst->memo && len <= MEMO_MAX_BYTES) {
    uint64_t h = memo_hash(b, len);
    memo_t *m = &inst->memo[h % MEMO_SLOTS];
    inst->nums[N_MEMO_SLOT] = (double)(size_t)(m - inst->memo);
    if (m->tag && m->hash == h && m->len == len && !memcmp(m->bytes, b, len)) {
      inst->nums[N_MEMO_TAG] = (double)m->tag;
      NAPI_CHECK(env, napi_get_undefined(env, &v));
      return v;
    }
    m->tag = ++inst->next_tag;
    m->hash = h;
    m->len = len;
    memcpy(m->bytes, b, len);
    inst->nums[N_MEMO_TAG] = (double)m->tag;
  }
  NAPI_CHECK(env, napi_create_string_utf8(env, b, len, &v));
  return v;
}

/* Fill the number array from @p d and return the packed string fields. */
static napi_value emit_packed(napi_env env, instance_t *inst, const egress_decision_t *d) {
  double *n = inst->nums;
  size_t naddrs = egress_decision_address_count(d);
  const char *f[S_COUNT];
  size_t len[S_COUNT];
  uint32_t nulls = 0;
  n[N_VERDICT] = egress_decision_verdict(d);
  n[N_OUTCOME] = egress_decision_outcome(d);
  n[N_REASON] = egress_decision_reason(d);
  n[N_PORT] = egress_decision_port(d);
  n[N_HAS_RULE] = egress_decision_has_rule(d);
  n[N_RULE_LIST] = egress_decision_rule_list(d);
  n[N_RULE_INDEX] = (double)egress_decision_rule_index(d);
  n[N_NADDRS] = (double)naddrs;
  n[N_DNS_MS] = egress_decision_dns_ms(d);
  n[N_LATENCY_MS] = egress_decision_latency_ms(d);
  n[N_MODE] = egress_decision_mode(d);
  n[N_ADDR_OVERFLOW] = naddrs > (inst->nums_len - N_HEADER) / 3;

  f[S_MESSAGE] = egress_decision_message(d);
  if (!f[S_MESSAGE]) f[S_MESSAGE] = egress_reason_message(egress_decision_reason(d));
  f[S_HOST] = egress_decision_host(d);
  if (!f[S_HOST]) f[S_HOST] = egress_decision_destination_host(d);
  f[S_RULE_TEXT] = egress_decision_has_rule(d) ? egress_decision_rule_text(d) : NULL;
  f[S_ADDRESSES] = "";
  f[S_CURL_RESOLVE] = egress_decision_curl_resolve(d);
  f[S_DIGEST] = egress_decision_policy_digest(d);
  if (f[S_DIGEST] && !f[S_DIGEST][0]) f[S_DIGEST] = NULL;
  if (f[S_DIGEST] && !strcmp(f[S_DIGEST], inst->last_digest))
    f[S_DIGEST] = "";
  else if (f[S_DIGEST])
    snprintf(inst->last_digest, sizeof inst->last_digest, "%s", f[S_DIGEST]);
  f[S_EVENT] = egress_decision_event_json(d);
  f[S_URL] = egress_decision_url(d);

  size_t total = S_COUNT;
  for (size_t k = 0; k < naddrs; k++) {
    const char *a = egress_decision_address(d, k);
    total += (a ? strlen(a) : 0) + 1;
  }
  for (int i = 0; i < S_COUNT; i++) {
    if (!f[i]) nulls |= 1u << i;
    len[i] = f[i] ? strlen(f[i]) : 0;
    total += len[i];
  }
  n[N_NULLS] = nulls;
  if (!reserve(inst, total + 1)) return throw_status(env, EGRESS_ENOMEM, NULL);
  char *o = inst->buf;
  for (int i = 0; i < S_COUNT; i++) {
    if (i) *o++ = '\0';
    if (i == S_ADDRESSES) {
      /* Per-address numbers go to the number array, or (too many) after
       * the strings as "verdict,reason,ttl" fields. */
      double *an = n + N_HEADER;
      for (size_t k = 0; k < naddrs; k++) {
        const char *a = egress_decision_address(d, k);
        size_t al = a ? strlen(a) : 0;
        if (k) *o++ = ',';
        memcpy(o, a ? a : "", al);
        o += al;
        if (!n[N_ADDR_OVERFLOW]) {
          an[3 * k] = egress_decision_address_verdict(d, k);
          an[3 * k + 1] = egress_decision_address_reason(d, k);
          an[3 * k + 2] = egress_decision_address_ttl(d, k);
        }
      }
      continue;
    }
    memcpy(o, f[i] ? f[i] : "", len[i]);
    o += len[i];
  }
  if (n[N_ADDR_OVERFLOW]) {
    for (size_t k = 0; k < naddrs; k++) {
      char num[48];
      int w = snprintf(num, sizeof num, "%c%d,%d,%ld", '\0', (int)egress_decision_address_verdict(d, k),
                       (int)egress_decision_address_reason(d, k),
                       (long)egress_decision_address_ttl(d, k));
      size_t used = (size_t)(o - inst->buf);
      if (w < 0 || !reserve(inst, used + (size_t)w + 1)) return throw_status(env, EGRESS_ENOMEM, NULL);
      o = inst->buf + used;
      memcpy(o, num, (size_t)w);
      o += w;
    }
  }
  inst->buf_len = (size_t)(o - inst->buf);
  return packed_or_memo(env, inst);
}

/* The decision object, through the JS builder (async completions). */
static napi_value emit_object(napi_env env, instance_t *inst, const egress_decision_t *d) {
  napi_value packed = emit_packed(env, inst, d), builder, undef, result;
  if (!packed) return NULL;
  NAPI_CHECK(env, napi_get_reference_value(env, inst->builder, &builder));
  NAPI_CHECK(env, napi_get_undefined(env, &undef));
  NAPI_CHECK(env, napi_call_function(env, undef, builder, 1, &packed, &result));
  return result;
}

/* ------------------------------------------------------------------------ */
/* Exported functions                                                        */
/* ------------------------------------------------------------------------ */

static void instance_free(napi_env env, void *data, void *hint) {
  instance_t *inst = data;
  if (!inst) return;
  if (inst->builder) napi_delete_reference(env, inst->builder);
  if (inst->numbers) napi_delete_reference(env, inst->numbers);
  free(inst->buf);
  free(inst->memo);
  egress_decision_free(inst->sync_decision);
  free(inst);
}

/* setup(builder, numbers: Float64Array) */
static napi_value js_setup(napi_env env, napi_callback_info info) {
  size_t argc = 2;
  napi_value argv[2];
  napi_typedarray_type tt;
  size_t len = 0;
  void *data = NULL;
  napi_valuetype t;
  NAPI_CHECK(env, napi_get_cb_info(env, info, &argc, argv, NULL, NULL));
  if (argc < 2 || napi_typeof(env, argv[0], &t) != napi_ok || t != napi_function)
    return throw_type(env, "setup(builder, numbers)");
  if (napi_get_typedarray_info(env, argv[1], &tt, &len, &data, NULL, NULL) != napi_ok ||
      tt != napi_float64_array || len < N_HEADER + 3)
    return throw_type(env, "numbers must be a Float64Array");
  if (instance(env)) {
    napi_throw_error(env, "EGRESS_SETUP", "setup() was already called");
    return NULL;
  }
  instance_t *inst = calloc(1, sizeof *inst);
  if (!inst) return throw_status(env, EGRESS_ENOMEM, NULL);
  inst->nums = data;
  inst->nums_len = len;
  /* Without the memo every decision simply carries its strings. */
  inst->memo = calloc(MEMO_SLOTS, sizeof *inst->memo);
  if (egress_decision_new(&inst->sync_decision) != EGRESS_OK) {
    instance_free(env, inst, NULL);
    return throw_status(env, EGRESS_ENOMEM, NULL);
  }
  if (napi_create_reference(env, argv[0], 1, &inst->builder) != napi_ok ||
      napi_create_reference(env, argv[1], 1, &inst->numbers) != napi_ok ||
      napi_set_instance_data(env, inst, instance_free, NULL) != napi_ok) {
    instance_free(env, inst, NULL);
    napi_throw_error(env, "EGRESS_ENAPI", "setup failed");
    return NULL;
  }
  return NULL;
}

static egress_status_t apply_options(napi_env env, napi_value o, egress_options_t *opts,
                                     char *err, size_t errlen, bool *js_error) {
  bool ok, present, b;
  double num;
  char *s = NULL;
  egress_status_t st = EGRESS_OK;
  *js_error = true;
#define STR_OPT(key, setter)                                                   \
  do {                                                                         \
    s = get_opt_string(env, o, key, &ok);                                      \
    if (!ok) return EGRESS_EINVAL;                                             \
    if (s) {                                                                   \
      st = setter(opts, s);                                                    \
      free(s);                                                                 \
      s = NULL;                                                                \
      if (st != EGRESS_OK) {                                                   \
        snprintf(err, errlen, "invalid %s", key);                              \
        *js_error = false;                                                     \
        return st;                                                             \
      }                                                                        \
    }                                                                          \
  } while (0)
  STR_OPT("dnsServers", egress_options_set_dns_servers);
  STR_OPT("hostsFile", egress_options_set_hosts_file);
  STR_OPT("eventSource", egress_options_set_event_source);
  STR_OPT("eventsPath", egress_options_set_event_path);
#undef STR_OPT
  if (!get_opt_bool(env, o, "monitor", &b)) return EGRESS_EINVAL;
  egress_options_set_mode(opts, b ? EGRESS_MODE_MONITOR : EGRESS_MODE_ENFORCE);
  if (!get_opt_bool(env, o, "filter", &b)) return EGRESS_EINVAL;
  egress_options_set_mixed(opts, b ? EGRESS_MIXED_FILTER : EGRESS_MIXED_DENY);
  if (!get_opt_bool(env, o, "auditRequired", &b)) return EGRESS_EINVAL;
  egress_options_set_audit_required(opts, b);
  if (!get_opt_number(env, o, "timeoutMs", &present, &num)) return EGRESS_EINVAL;
  if (present) {
    if (!(num >= 1 && num <= 600000)) {
      snprintf(err, errlen, "timeoutMs must be between 1 and 600000");
      *js_error = false;
      return EGRESS_EINVAL;
    }
    egress_options_set_timeout_ms(opts, (uint32_t)num);
  }
  /* cache: [maxEntries, minTtl, maxTtl, negativeTtl], validated by index.js */
  napi_value cache;
  bool is_arr = false;
  if (napi_get_named_property(env, o, "cache", &cache) != napi_ok) return EGRESS_EINVAL;
  if (!is_nullish(env, cache) && napi_is_array(env, cache, &is_arr) == napi_ok && is_arr) {
    uint32_t c[4];
    for (uint32_t i = 0; i < 4; i++) {
      napi_value v;
      if (napi_get_element(env, cache, i, &v) != napi_ok ||
          napi_get_value_uint32(env, v, &c[i]) != napi_ok)
        return EGRESS_EINVAL;
    }
    if ((st = egress_options_set_cache(opts, c[0], c[1], c[2], c[3])) != EGRESS_OK) {
      snprintf(err, errlen, "invalid cache options: minTtl must not exceed maxTtl");
      *js_error = false;
      return st;
    }
  }
  napi_value pref;
  if (napi_get_named_property(env, o, "pref64", &pref) != napi_ok) return EGRESS_EINVAL;
  if (!is_nullish(env, pref) && napi_is_array(env, pref, &is_arr) == napi_ok && is_arr) {
    uint32_t n = 0;
    if (napi_get_array_length(env, pref, &n) != napi_ok) return EGRESS_EINVAL;
    for (uint32_t i = 0; i < n; i++) {
      napi_value v;
      if (napi_get_element(env, pref, i, &v) != napi_ok) return EGRESS_EINVAL;
      if (!(s = get_string(env, v, "pref64 entry", false))) return EGRESS_EINVAL;
      st = egress_options_add_pref64(opts, s);
      if (st != EGRESS_OK) {
        snprintf(err, errlen, "invalid pref64 prefix \"%.100s\"%s", s,
                 st == EGRESS_ERANGE ? ": at most 8 prefixes" : "");
        free(s);
        *js_error = false;
        return st;
      }
      free(s);
    }
  }
  *js_error = false;
  return EGRESS_OK;
}

/*
 * create({policyJson?, policyFile?, monitor, filter, dnsServers, hostsFile,
 *         timeoutMs, cache, pref64, auditRequired, eventSource, eventsPath,
 *         eventQueueSize}, onEvent?) -> handle
 */
static napi_value js_create(napi_env env, napi_callback_info info) {
  size_t argc = 2;
  napi_value argv[2], handle = NULL;
  char err[EGRESS_ERRBUF_SIZE] = "";
  egress_policy_t *policy = NULL;
  egress_options_t *opts = NULL;
  nchecker_t *nc = NULL;
  egress_status_t st;
  bool ok, js_error = false;
  char *json = NULL, *file = NULL;
  size_t json_len = 0;
  NAPI_CHECK(env, napi_get_cb_info(env, info, &argc, argv, NULL, NULL));
  if (argc < 1 || is_nullish(env, argv[0])) return throw_type(env, "options are required");

  napi_value pj;
  if (napi_get_named_property(env, argv[0], "policyJson", &pj) != napi_ok) goto done;
  if (!is_nullish(env, pj) &&
      !(json = js_string(env, pj, "policy", false, MAX_POLICY, &json_len)))
    goto done;
  file = get_opt_string(env, argv[0], "policyFile", &ok);
  if (!ok) goto done;
  if (json)
    st = egress_policy_from_json(json, json_len, &policy, err, sizeof err);
  else if (file)
    st = egress_policy_from_file(file, &policy, err, sizeof err);
  else {
    throw_type(env, "a policy or a policyFile is required");
    goto done;
  }
  if (st != EGRESS_OK) {
    throw_status(env, st, err);
    goto done;
  }
  if ((st = egress_options_new(&opts)) != EGRESS_OK) {
    throw_status(env, st, NULL);
    goto done;
  }
  st = apply_options(env, argv[0], opts, err, sizeof err, &js_error);
  if (st != EGRESS_OK || js_error) {
    if (!js_error) throw_status(env, st, err);
    goto done;
  }
  if (!(nc = calloc(1, sizeof *nc))) {
    throw_status(env, EGRESS_ENOMEM, NULL);
    goto done;
  }
  nc->magic = HANDLE_MAGIC;
  atomic_init(&nc->pending, 0);
  napi_valuetype t = napi_undefined;
  if (argc >= 2) napi_typeof(env, argv[1], &t);
  if (t == napi_function) {
    bool present;
    double qsize = 65536;
    napi_value name;
    if (!get_opt_number(env, argv[0], "eventQueueSize", &present, &qsize)) goto done;
    if (!present) qsize = 65536;
    if (napi_create_string_utf8(env, "egress.onEvent", NAPI_AUTO_LENGTH, &name) != napi_ok ||
        napi_create_threadsafe_function(env, argv[1], NULL, name, (size_t)qsize, 1, nc,
                                        event_tsfn_finalize, nc, event_call_js,
                                        &nc->tsfn) != napi_ok) {
      napi_throw_error(env, "EGRESS_ENAPI", "could not create the event queue");
      goto done;
    }
    napi_unref_threadsafe_function(env, nc->tsfn);
    if (napi_create_reference(env, argv[1], 1, &nc->on_event) != napi_ok) {
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
  egress_options_free(opts);
  egress_policy_unref(policy);
  free(json);
  free(file);
  return handle;
}

/* ctx: undefined or an array of CTX_FIELDS strings/undefined, in
 * egress_field_t order. */
static bool make_request(napi_env env, napi_value ctx, egress_request_t **out) {
  static const char *const names[CTX_FIELDS] = {"method", "workspaceId", "agentId",
                                                "machineId", "runId", "correlationId"};
  bool is_arr = false;
  *out = NULL;
  if (is_nullish(env, ctx)) return true;
  if (napi_is_array(env, ctx, &is_arr) != napi_ok || !is_arr) {
    throw_type(env, "ctx must be an object");
    return false;
  }
  egress_request_t *req = NULL;
  if (egress_request_new(&req) != EGRESS_OK) {
    throw_status(env, EGRESS_ENOMEM, NULL);
    return false;
  }
  for (uint32_t i = 0; i < CTX_FIELDS; i++) {
    napi_value v;
    if (napi_get_element(env, ctx, i, &v) != napi_ok) goto fail;
    if (is_nullish(env, v)) continue;
    char what[48];
    snprintf(what, sizeof what, "ctx.%s", names[i]);
    char *s = get_string(env, v, what, false);
    if (!s) goto fail;
    egress_status_t st = egress_request_set(req, (egress_field_t)i, s);
    free(s);
    if (st != EGRESS_OK) {
      char msg[128];
      snprintf(msg, sizeof msg, "%s must be at most 1024 bytes without control characters", what);
      napi_throw_type_error(env, "ERR_INVALID_ARG_VALUE", msg);
      goto fail;
    }
  }
  *out = req;
  return true;
fail:
  egress_request_free(req);
  return false;
}

static bool get_port(napi_env env, napi_value v, int32_t *port) {
  double d;
  /* napi_get_value_double refuses anything but a number. */
  if (napi_get_value_double(env, v, &d) != napi_ok) {
    throw_type(env, "port must be a number");
    return false;
  }
  /* Every integer is decided (out of range is invalid_port); beyond int32
   * it is clamped, which stays out of range. */
  if (d != d || d != (double)(int64_t)d) {
    napi_throw_range_error(env, "ERR_OUT_OF_RANGE", "port must be an integer");
    return false;
  }
  *port = d > 2147483647.0 ? INT32_MAX : d < -2147483648.0 ? INT32_MIN : (int32_t)d;
  return true;
}

/* checkSync(handle, host, port, ctx) -> packed string fields (numbers filled) */
static napi_value js_check_sync(napi_env env, napi_callback_info info) {
  size_t argc = 4;
  napi_value argv[4], result = NULL;
  egress_request_t *req = NULL;
  char small[SMALL_BYTES];
  char *host = NULL;
  int32_t port;
  NAPI_CHECK(env, napi_get_cb_info(env, info, &argc, argv, NULL, NULL));
  instance_t *inst = instance(env);
  nchecker_t *nc = argc >= 3 ? get_checker(env, argv[0]) : NULL;
  if (!nc || !inst) goto done;
  if (!(host = js_string_small(env, argv[1], "host", true, small)) ||
      !get_port(env, argv[2], &port))
    goto done;
  if (argc >= 4 && !make_request(env, argv[3], &req)) goto done;
  egress_status_t st = egress_check_into(nc->checker, host, port, req, inst->sync_decision);
  sync_event_ref(env, nc);
  /* A check that failed still left a deny in the decision, which says why. */
  if (st != EGRESS_OK && egress_decision_verdict(inst->sync_decision) != EGRESS_VERDICT_DENY)
    throw_status(env, st, NULL);
  else
    result = emit_packed(env, inst, inst->sync_decision);
done:
  egress_request_free(req);
  if (host != small) free(host);
  return result;
}

/* lastPacked() -> the packed string fields of the last decision, for a
 * builder whose memo slot does not hold the tag the addon named. */
static napi_value js_last_packed(napi_env env, napi_callback_info info) {
  (void)info;
  instance_t *inst = instance(env);
  napi_value v;
  if (!inst || !inst->buf) return throw_type(env, "no decision was packed yet");
  NAPI_CHECK(env, napi_create_string_utf8(env, inst->buf, inst->buf_len, &v));
  return v;
}

/* checkUrlSync(handle, url, ctx) -> packed string fields (numbers filled) */
static napi_value js_check_url_sync(napi_env env, napi_callback_info info) {
  size_t argc = 3;
  napi_value argv[3], result = NULL;
  egress_request_t *req = NULL;
  egress_decision_t *d = NULL;
  char *url = NULL;
  NAPI_CHECK(env, napi_get_cb_info(env, info, &argc, argv, NULL, NULL));
  instance_t *inst = instance(env);
  nchecker_t *nc = argc >= 2 ? get_checker(env, argv[0]) : NULL;
  if (!nc || !inst) goto done;
  if (!(url = get_string(env, argv[1], "url", true))) goto done;
  if (argc >= 3 && !make_request(env, argv[2], &req)) goto done;
  egress_status_t st = egress_check_url(nc->checker, url, req, &d);
  sync_event_ref(env, nc);
  if (!d) {
    throw_status(env, st, "could not allocate the decision: denied");
    goto done;
  }
  result = emit_packed(env, inst, d);
done:
  egress_decision_free(d);
  egress_request_free(req);
  free(url);
  return result;
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

static void work_free(napi_env env, work_t *w) {
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

/* checkAsync(handle, host|null, port, ctx, url|undefined) -> Promise */
static napi_value js_check_async(napi_env env, napi_callback_info info) {
  size_t argc = 5;
  napi_value argv[5], promise = NULL, name;
  NAPI_CHECK(env, napi_get_cb_info(env, info, &argc, argv, NULL, NULL));
  if (argc < 5) return throw_type(env, "checkAsync(handle, host, port, ctx, url)");
  nchecker_t *nc = get_checker(env, argv[0]);
  if (!nc) return NULL;
  work_t *w = calloc(1, sizeof *w);
  if (!w) return throw_status(env, EGRESS_ENOMEM, NULL);
  w->nc = nc;
  if (!is_nullish(env, argv[4])) {
    if (!(w->url = get_string(env, argv[4], "url", true))) goto fail;
  } else {
    if (!(w->host = get_string(env, argv[1], "host", true)) || !get_port(env, argv[2], &w->port))
      goto fail;
  }
  if (!make_request(env, argv[3], &w->req)) goto fail;
  if (napi_create_string_utf8(env, "egress.check", NAPI_AUTO_LENGTH, &name) != napi_ok ||
      napi_create_async_work(env, NULL, name, work_execute, work_complete, w, &w->aw) != napi_ok ||
      napi_create_promise(env, &w->deferred, &promise) != napi_ok)
    goto fail;
  if (napi_queue_async_work(env, w->aw) != napi_ok) {
    /* The deferred must be settled; reject it. */
    napi_value err, msg;
    napi_create_string_utf8(env, "could not queue the check: denied", NAPI_AUTO_LENGTH, &msg);
    napi_create_error(env, NULL, msg, &err);
    napi_reject_deferred(env, w->deferred, err);
    work_free(env, w);
    return promise;
  }
  nc->works++;
  return promise;
fail:
  work_free(env, w);
  return NULL;
}

/* setPolicy(handle, json) */
static napi_value js_set_policy(napi_env env, napi_callback_info info) {
  size_t argc = 2;
  napi_value argv[2];
  char err[EGRESS_ERRBUF_SIZE] = "";
  egress_policy_t *p = NULL;
  NAPI_CHECK(env, napi_get_cb_info(env, info, &argc, argv, NULL, NULL));
  nchecker_t *nc = argc >= 2 ? get_checker(env, argv[0]) : NULL;
  if (!nc) return NULL;
  size_t json_len = 0;
  char *json = js_string(env, argv[1], "policy", false, MAX_POLICY, &json_len);
  if (!json) return NULL;
  egress_status_t st = egress_policy_from_json(json, json_len, &p, err, sizeof err);
  free(json);
  if (st != EGRESS_OK) return throw_status(env, st, err);
  st = egress_checker_set_policy(nc->checker, p);
  egress_policy_unref(p);
  if (st != EGRESS_OK) return throw_status(env, st, NULL);
  return NULL;
}

/* reloadFile(handle, path) -> changed */
static napi_value js_reload_file(napi_env env, napi_callback_info info) {
  size_t argc = 2;
  napi_value argv[2], result;
  char err[EGRESS_ERRBUF_SIZE] = "";
  bool changed = false;
  NAPI_CHECK(env, napi_get_cb_info(env, info, &argc, argv, NULL, NULL));
  nchecker_t *nc = argc >= 2 ? get_checker(env, argv[0]) : NULL;
  if (!nc) return NULL;
  char *path = get_string(env, argv[1], "path", false);
  if (!path) return NULL;
  egress_status_t st = egress_checker_reload_file(nc->checker, path, &changed, err, sizeof err);
  free(path);
  if (st != EGRESS_OK) return throw_status(env, st, err);
  NAPI_CHECK(env, napi_get_boolean(env, changed, &result));
  return result;
}

/* policyInfo(handle) -> [digest, allowRules[], denyRules[]] */
static napi_value js_policy_info(napi_env env, napi_callback_info info) {
  size_t argc = 1;
  napi_value argv[1], result = NULL, v, lists[2];
  NAPI_CHECK(env, napi_get_cb_info(env, info, &argc, argv, NULL, NULL));
  nchecker_t *nc = argc >= 1 ? get_checker(env, argv[0]) : NULL;
  if (!nc) return NULL;
  egress_policy_t *p = egress_checker_policy(nc->checker);
  if (!p) return throw_status(env, EGRESS_EINTERNAL, NULL);
  if (napi_create_array_with_length(env, 3, &result) != napi_ok) goto fail;
  if (napi_create_string_utf8(env, egress_policy_digest(p), NAPI_AUTO_LENGTH, &v) != napi_ok ||
      napi_set_element(env, result, 0, v) != napi_ok)
    goto fail;
  for (int l = 0; l < 2; l++) {
    size_t n = egress_policy_rule_count(p, (egress_list_t)l);
    if (napi_create_array_with_length(env, n, &lists[l]) != napi_ok) goto fail;
    for (size_t i = 0; i < n; i++)
      if (set_str(env, lists[l], (uint32_t)i, egress_policy_rule_text(p, (egress_list_t)l, i)) != napi_ok)
        goto fail;
    if (napi_set_element(env, result, (uint32_t)(1 + l), lists[l]) != napi_ok) goto fail;
  }
  egress_policy_unref(p);
  return result;
fail:
  egress_policy_unref(p);
  return NULL;
}

/* counters(handle) -> [9 counters..., then outcome x reason counts] */
static napi_value js_counters(napi_env env, napi_callback_info info) {
  size_t argc = 1;
  napi_value argv[1], result, v;
  NAPI_CHECK(env, napi_get_cb_info(env, info, &argc, argv, NULL, NULL));
  nchecker_t *nc = argc >= 1 ? get_checker(env, argv[0]) : NULL;
  if (!nc) return NULL;
  int nreasons = egress_reason_count();
  uint32_t k = 0;
  NAPI_CHECK(env, napi_create_array(env, &result));
  for (int c = 0; c <= EGRESS_COUNTER_POLICY_RELOAD_FAILURES; c++) {
    NAPI_CHECK(env, napi_create_double(env, (double)egress_checker_counter(nc->checker, (egress_counter_t)c), &v));
    NAPI_CHECK(env, napi_set_element(env, result, k++, v));
  }
  for (int o = 0; o <= EGRESS_OUTCOME_ENFORCEMENT_UNAVAILABLE; o++)
    for (int r = 0; r < nreasons; r++) {
      uint64_t n = egress_checker_checks_by(nc->checker, (egress_outcome_t)o, (egress_reason_t)r);
      NAPI_CHECK(env, napi_create_double(env, (double)n, &v));
      NAPI_CHECK(env, napi_set_element(env, result, k++, v));
    }
  return result;
}

static napi_value js_metrics(napi_env env, napi_callback_info info) {
  size_t argc = 1;
  napi_value argv[1], result;
  NAPI_CHECK(env, napi_get_cb_info(env, info, &argc, argv, NULL, NULL));
  nchecker_t *nc = argc >= 1 ? get_checker(env, argv[0]) : NULL;
  if (!nc) return NULL;
  char *text = egress_checker_metrics(nc->checker);
  if (!text) return throw_status(env, EGRESS_ENOMEM, NULL);
  napi_status st = napi_create_string_utf8(env, text, NAPI_AUTO_LENGTH, &result);
  egress_free(text);
  NAPI_CHECK(env, st);
  return result;
}

/* close(handle): idempotent; checks in flight finish on the live checker. */
static napi_value js_close(napi_env env, napi_callback_info info) {
  size_t argc = 1;
  napi_value argv[1];
  void *p = NULL;
  NAPI_CHECK(env, napi_get_cb_info(env, info, &argc, argv, NULL, NULL));
  if (argc < 1 || napi_get_value_external(env, argv[0], &p) != napi_ok || !p ||
      ((nchecker_t *)p)->magic != HANDLE_MAGIC)
    return NULL;
  nchecker_t *nc = p;
  nc->closed = true;
  maybe_destroy(env, nc);
  return NULL;
}

/* tables() -> [reasons[], outcomes[], version, specialRangesVersion, statuses[]] */
static napi_value js_tables(napi_env env, napi_callback_info info) {
  napi_value result, reasons, outcomes;
  int n = egress_reason_count();
  NAPI_CHECK(env, napi_create_array(env, &result));
  NAPI_CHECK(env, napi_create_array(env, &reasons));
  NAPI_CHECK(env, napi_create_array(env, &outcomes));
  for (int i = 0; i < n; i++) {
    NAPI_CHECK(env, set_str(env, reasons, (uint32_t)i, egress_reason_name((egress_reason_t)i)));
  }
  for (int i = 0; i <= EGRESS_OUTCOME_ENFORCEMENT_UNAVAILABLE; i++)
    NAPI_CHECK(env, set_str(env, outcomes, (uint32_t)i, egress_outcome_name((egress_outcome_t)i)));
  NAPI_CHECK(env, napi_set_element(env, result, 0, reasons));
  NAPI_CHECK(env, napi_set_element(env, result, 1, outcomes));
  NAPI_CHECK(env, set_str(env, result, 2, egress_version()));
  NAPI_CHECK(env, set_str(env, result, 3, egress_special_ranges_version()));
  /* [code, name] of each status: EGRESS_EPOLICY -> "invalid_policy", ... */
  napi_value statuses;
  NAPI_CHECK(env, napi_create_array(env, &statuses));
  for (int i = EGRESS_OK; i <= EGRESS_EINTERNAL; i++) {
    napi_value pair;
    NAPI_CHECK(env, napi_create_array(env, &pair));
    NAPI_CHECK(env, set_str(env, pair, 0, status_code((egress_status_t)i)));
    NAPI_CHECK(env, set_str(env, pair, 1, egress_status_name((egress_status_t)i)));
    NAPI_CHECK(env, napi_set_element(env, statuses, (uint32_t)i, pair));
  }
  NAPI_CHECK(env, napi_set_element(env, result, 4, statuses));
  return result;
}

static napi_value init(napi_env env, napi_value exports) {
  static const struct {
    const char *name;
    napi_callback cb;
  } fns[] = {
      {"setup", js_setup},           {"create", js_create},
      {"checkSync", js_check_sync},  {"checkUrlSync", js_check_url_sync},
      {"checkAsync", js_check_async}, {"setPolicy", js_set_policy},
      {"reloadFile", js_reload_file}, {"policyInfo", js_policy_info},
      {"counters", js_counters},     {"metrics", js_metrics},
      {"close", js_close},           {"tables", js_tables},
      {"lastPacked", js_last_packed},
  };
  for (size_t i = 0; i < sizeof fns / sizeof fns[0]; i++) {
    napi_value fn;
    NAPI_CHECK(env, napi_create_function(env, fns[i].name, NAPI_AUTO_LENGTH, fns[i].cb, NULL, &fn));
    NAPI_CHECK(env, napi_set_named_property(env, exports, fns[i].name, fn));
  }
  return exports;
}

NAPI_MODULE_INIT() { return init(env, exports); }
