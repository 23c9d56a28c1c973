/*
 * What the files of the egress_node addon share.  Internal to the addon: the
 * JS side reaches none of it but through the functions module.c registers.
 *
 *   convert.c   JS values to C: strings copied whole or refused, ports,
 *               request contexts, option readers, the errors thrown for them
 *   packed.c    decisions to JS: the number array and packed string fields
 *               that index.js builds a decision from, the string memo
 *   lifetime.c  a checker's native state: its handle, finalizers, the
 *               thread-safe function for events, async checks on Node's
 *               own event loop (lib/uv/egress_uv.c, compiled in)
 *   module.c    the exported functions and the module's registration
 *
 * Only the public egress.h and egress_uv.h are used.  Every function here runs on the JS
 * thread unless its comment says otherwise.
 */
#ifndef EGRESS_NODE_ADDON_H
#define EGRESS_NODE_ADDON_H

#include <node_api.h>

#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "egress.h"
#include "egress_uv.h" /* against Node's own uv.h: never a second libuv */

#define MAX_STRING (64 * 1024)          /* hosts, URLs, paths, options */
#define MAX_POLICY (256u * 1024 * 1024) /* policy documents */

/* Returns NULL from the calling function, with an exception pending, when a
 * Node-API call fails. */
#define NAPI_CHECK(env, call) \
  do {                        \
    if ((call) != napi_ok) {  \
      throw_napi_error(env);  \
      return NULL;            \
    }                         \
  } while (0)

/* ------------------------------------------------------------------------ */
/* The packed decision layout (packed.c), named on both sides.               */
/* ------------------------------------------------------------------------ */

/*
 * Decisions cross to JS as numbers in a shared Float64Array and string
 * fields packed into one string.  index.js reads them by the same names
 * (N_VERDICT, S_HOST, ...); the addon's layout() hands it these tables and
 * index.js refuses an addon whose layout differs from its own.
 */
#define PACKED_NUMBERS(X)                                                  \
  X(VERDICT)                                                               \
  X(OUTCOME)                                                               \
  X(REASON)                                                                \
  X(PORT)                                                                  \
  X(HAS_RULE)                                                              \
  X(RULE_LIST)                                                             \
  X(RULE_INDEX)                                                            \
  X(NADDRS)                                                                \
  X(DNS_MS)                                                                \
  X(LATENCY_MS)                                                            \
  X(MODE)                                                                  \
  X(ADDR_OVERFLOW) /* 1: per-address numbers follow the strings instead */ \
  X(NULLS)         /* bit i set: string field i is null */                 \
  X(MEMO_SLOT)     /* string memo slot of this decision, -1: none */       \
  X(MEMO_TAG)      /* the slot's tag (see packed.c) */                     \
  X(EVENT)         /* the event text: EVENT_NONE, _AFTER or _ALONE */

/* The string fields, in the order they are packed into one string separated
 * by NUL characters (no field can hold a NUL: they come from C strings). */
#define PACKED_STRINGS(X)                                           \
  X(MESSAGE)                                                        \
  X(HOST)                                                           \
  X(RULE_TEXT)                                                      \
  X(ADDRESSES) /* comma-separated address texts */                  \
  X(CURL_RESOLVE)                                                   \
  X(DIGEST) /* "" when it is the digest of the previous decision */ \
  X(URL)

/* Where N_EVENT says the event text is.  It is not one of the packed
 * fields: it differs for every check (id, time), and the fields around it
 * are the same for every check of one destination (the memo, packed.c). */
enum {
  EVENT_NONE = 0,  /* the decision has none (checkSync without a sink) */
  EVENT_AFTER = 1, /* after the packed fields, NUL-separated, last */
  EVENT_ALONE = 2  /* the whole string returned: the fields are memoized */
};

#define PACKED_ENUM_N_(name) N_##name,
#define PACKED_ENUM_S_(name) S_##name,
enum {
  PACKED_NUMBERS(PACKED_ENUM_N_) N_HEADER = 16 /* then 3 numbers per address: verdict, reason, ttl */
};
enum { PACKED_STRINGS(PACKED_ENUM_S_) S_COUNT };
#undef PACKED_ENUM_N_
#undef PACKED_ENUM_S_
#define PACKED_ONE_(name) +1
_Static_assert(0 PACKED_NUMBERS(PACKED_ONE_) <= N_HEADER, "the numbers overrun N_HEADER");
#undef PACKED_ONE_
_Static_assert(S_COUNT <= 32, "N_NULLS holds one bit per string field");

/* ------------------------------------------------------------------------ */
/* Native state (lifetime.c, packed.c)                                       */
/* ------------------------------------------------------------------------ */

typedef struct memo memo_t;

/* Per Node environment (main thread or worker): set up once by setup(). */
typedef struct instance {
  napi_ref builder; /* function (packed) -> decision object */
  napi_ref numbers; /* the Float64Array */
  double *nums;     /* data of the Float64Array */
  size_t nums_len;
  char last_digest[65]; /* the builder remembers the digest last sent */
  char *buf;            /* packing buffer, reused */
  size_t buf_cap;
  size_t buf_len; /* bytes of the last decision packed */
  uint64_t next_tag;
  memo_t *memo;                     /* MEMO_SLOTS, allocated with the instance */
  egress_decision_t *sync_decision; /* reused by every checkSync: no
                                       allocation per check.  Safe: no JS
                                       runs during a check (events reach JS
                                       through the thread-safe function) */
} instance_t;

typedef struct work work_t;

/* A checker as the JS handle holds it.  All fields but pending are touched
 * on the JS thread only. */
typedef struct nchecker {
  uint64_t magic;
  napi_env env;
  egress_checker_t *checker;     /* freed once closed with no work in flight */
  unsigned works;                /* async checks whose callback has not run */
  bool closed;                   /* close() called or handle collected */
  bool handle_alive;             /* the JS external still points here */
  napi_threadsafe_function tsfn; /* onEvent, or NULL once finalized */
  napi_ref on_event;             /* onEvent for async checks' events */
  bool tsfn_reffed;
  atomic_uint pending; /* events queued and not yet delivered */
  /* Async checks run on the environment's own libuv loop: */
  egress_uv_t *uv;                        /* attached at the first check() */
  bool uv_closing;                        /* egress_uv_close()'d, not yet closed */
  bool tearing_down;                      /* the environment is going: no JS */
  napi_async_context actx;                /* completions' async context */
  napi_async_cleanup_hook_handle cleanup; /* until the adapter is closed */
  unsigned direct;                        /* inside a library call made from JS */
  work_t *starting;                       /* the check check_start() is starting */
  work_t *held, **held_tail;              /* completions that ran meanwhile */
} nchecker_t;

/* An async check: from check() to its promise settled. */
struct work {
  napi_deferred deferred;
  nchecker_t *nc;
  egress_status_t st;
  egress_decision_t *d;
  bool decided; /* inside the start call: check_start() hands it over */
  bool orphan;  /* no promise could be made: dropped when decided */
  work_t *next; /* in nc->held */
};

/* Set on the JS thread while checkSync / checkUrlSync run: their events go
 * through the thread-safe function; an async check's event is the one its
 * decision carries, delivered before its promise settles. */
extern _Thread_local bool sync_checking;

/* ------------------------------------------------------------------------ */
/* convert.c                                                                 */
/* ------------------------------------------------------------------------ */

/* "EGRESS_EPOLICY", ...: the error code naming @p st. */
const char *status_code(egress_status_t st);
/* Throw an Error carrying the library's message (or its status text) and a
 * code naming the status.  Return NULL for the caller to return. */
napi_value throw_status(napi_env env, egress_status_t st, const char *msg);
napi_value throw_type(napi_env env, const char *msg);
/* NAPI_CHECK's error: the pending exception, else Node-API's last error. */
void throw_napi_error(napi_env env);

bool is_nullish(napi_env env, napi_value v);

/* Copy @p v, which must be a string of at most @p max UTF-8 bytes, whole to
 * a malloc'ed C string; @p decided: a destination, which is decided even
 * when it cannot be copied as it is (see convert.c).  NULL with an
 * exception pending. */
char *js_string(napi_env env, napi_value v, const char *what, bool decided, size_t max, size_t *len_out);
/* js_string(..., MAX_STRING, NULL). */
char *get_string(napi_env env, napi_value v, const char *what, bool decided);

/* js_string for the hot path: the result is @p small or must be freed. */
#define SMALL_UNITS 128
#define SMALL_BYTES (3 * (SMALL_UNITS - 1) + 1)
char *js_string_small(napi_env env, napi_value v, const char *what, bool decided, char small[SMALL_BYTES]);

/* Optional properties of an options object: absent, undefined or null is
 * no value.  false with an exception pending when present but unusable. */
char *get_opt_string(napi_env env, napi_value obj, const char *key, bool *ok);
bool get_opt_number(napi_env env, napi_value obj, const char *key, bool *present, double *out);
bool get_opt_bool(napi_env env, napi_value obj, const char *key, bool *out);

/* A port as the check takes it; one beyond int32_t leaves *port 0 and its
 * value in *wide (else 0) for refuse_wide_port(), which refuses the check
 * (creating *req if need be) as invalid_port naming the value. */
bool get_port(napi_env env, napi_value v, int32_t *port, double *wide);
bool refuse_wide_port(napi_env env, double wide, egress_request_t **req);

/* The request context keys, the events' own, by egress_field_t value. */
#define CTX_ONE_(name, value, key) +1
enum { CTX_FIELDS = 0 EGRESS_FIELD_MAP(CTX_ONE_) };
#undef CTX_ONE_
extern const char *const context_keys[CTX_FIELDS];
/* @p ctx: undefined or an array of CTX_FIELDS strings/undefined, in
 * egress_field_t order.  *out is NULL for no context. */
bool make_request(napi_env env, napi_value ctx, egress_request_t **out);

/* ------------------------------------------------------------------------ */
/* packed.c                                                                  */
/* ------------------------------------------------------------------------ */

/* The environment's instance, or NULL before setup(). */
instance_t *instance(napi_env env);
/* setup(): keep @p builder and @p numbers (a Float64Array) for decisions. */
napi_value instance_setup(napi_env env, napi_value builder, napi_value numbers);
/* { numbers: {N_VERDICT: 0, ...}, strings: {S_MESSAGE: 0, ...},
 *   context: ['method', ...] } */
napi_value packed_layout(napi_env env);
/* Fill the number array from @p d and return the packed string fields (the
 * event text after them), or, when the builder has the fields memoized, the
 * event text alone or undefined; N_EVENT says which. */
napi_value emit_packed(napi_env env, instance_t *inst, const egress_decision_t *d);
/* The decision object, through the JS builder (async completions). */
napi_value emit_object(napi_env env, instance_t *inst, const egress_decision_t *d);
/* The packed string fields of the last decision (lastPacked()). */
napi_value last_packed(napi_env env, instance_t *inst);

/* ------------------------------------------------------------------------ */
/* lifetime.c                                                                */
/* ------------------------------------------------------------------------ */

/* The checker behind a handle; NULL with an exception pending when @p v is
 * not a handle or its checker is closed. */
nchecker_t *get_checker(napi_env env, napi_value v);
/* A handle for a new checker (policy and options stay the caller's), with
 * @p on_event (NULL: none) called with each event's JSON through a queue of
 * @p queue_size.  NULL with an exception pending, or none if Node-API could
 * not make the external. */
napi_value checker_handle_new(napi_env env, egress_policy_t *policy, egress_options_t *opts,
                              napi_value on_event, size_t queue_size);
/* Close the checker behind @p v if it is a handle; idempotent. */
void checker_close(napi_env env, napi_value v);
/* After a check on the JS thread: keep the loop alive for queued events. */
void sync_event_ref(napi_env env, nchecker_t *nc);

/* check(): start egress_check_ex (@p url NULL) or egress_check_url on the
 * environment's loop; the strings and @p req are the caller's and copied.
 * The promise of its decision when it waits for DNS; decided at once, its
 * packed string fields (numbers filled) as checkSync returns them; NULL with
 * an exception pending. */
napi_value check_start(napi_env env, nchecker_t *nc, const char *host, int32_t port, const char *url,
                       const egress_request_t *req);

#endif
