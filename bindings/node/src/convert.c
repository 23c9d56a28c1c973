/*
 * JS values to C: strings copied whole or refused, ports, request contexts
 * and options, and the errors thrown when an argument cannot be used.
 */
#include "addon.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ------------------------------------------------------------------------ */
/* Errors                                                                    */
/* ------------------------------------------------------------------------ */

/* Generated from the status list: a status added to egress.h has its code. */
const char *status_code(egress_status_t st) {
  switch (st) {
#define STATUS_CODE_(name, value, token, message) \
  case EGRESS_##name: return "EGRESS_" #name;
    EGRESS_STATUS_MAP(STATUS_CODE_)
#undef STATUS_CODE_
  }
  return "EGRESS_EINTERNAL";
}

napi_value throw_status(napi_env env, egress_status_t st, const char *msg) {
  napi_throw_error(env, status_code(st), msg && msg[0] ? msg : egress_strerror(st));
  return NULL;
}

napi_value throw_type(napi_env env, const char *msg) {
  napi_throw_type_error(env, "ERR_INVALID_ARG_TYPE", msg);
  return NULL;
}

void throw_napi_error(napi_env env) {
  const napi_extended_error_info *info = NULL;
  bool pending = false;
  napi_is_exception_pending(env, &pending);
  if (pending) return;
  napi_get_last_error_info(env, &info);
  napi_throw_error(env, "EGRESS_ENAPI",
                   info && info->error_message ? info->error_message : "Node-API call failed");
}

bool is_nullish(napi_env env, napi_value v) {
  napi_valuetype t;
  if (!v || napi_typeof(env, v, &t) != napi_ok) return true;
  return t == napi_undefined || t == napi_null;
}

/* ------------------------------------------------------------------------ */
/* Strings                                                                   */
/* ------------------------------------------------------------------------ */

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
static bool utf16_to_utf8(napi_env env, const char16_t *u, size_t n, char *out, size_t cap, size_t *len,
                          const char *what, bool decided) {
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
static bool recode_exact(napi_env env, napi_value v, const char *what, bool decided, char *s, size_t *len) {
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
    if ((size_t)(s + len - p) >= 3 && (unsigned char)p[1] == 0xBF && (unsigned char)p[2] == 0xBD) return true;
  return false;
}

/*
 * Copy @p v, which must be a string of at most @p max UTF-8 bytes, to a
 * malloc'ed C string; @p len_out (optional) receives its length.  Returns
 * NULL with an exception pending.
 */
char *js_string(napi_env env, napi_value v, const char *what, bool decided, size_t max, size_t *len_out) {
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
char *js_string_small(napi_env env, napi_value v, const char *what, bool decided, char small[SMALL_BYTES]) {
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

char *get_string(napi_env env, napi_value v, const char *what, bool decided) {
  return js_string(env, v, what, decided, MAX_STRING, NULL);
}

char *get_opt_string(napi_env env, napi_value obj, const char *key, bool *ok) {
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

bool get_opt_number(napi_env env, napi_value obj, const char *key, bool *present, double *out) {
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

bool get_opt_bool(napi_env env, napi_value obj, const char *key, bool *out) {
  napi_value v;
  *out = false;
  if (napi_get_named_property(env, obj, key, &v) != napi_ok) return false;
  if (is_nullish(env, v)) return true;
  return napi_get_value_bool(env, v, out) == napi_ok;
}

/* ------------------------------------------------------------------------ */
/* Numbers                                                                   */
/* ------------------------------------------------------------------------ */

bool get_port(napi_env env, napi_value v, int32_t *port, double *wide) {
  double d;
  /* napi_get_value_double refuses anything but a number. */
  if (napi_get_value_double(env, v, &d) != napi_ok) {
    throw_type(env, "port must be a number");
    return false;
  }
  /* NaN, infinities, fractions.  The cast only where int64_t holds the
   * value: beyond it, it is undefined (1e19 came out as a RangeError, not a
   * check), and every double of 2^53 or more is an integer anyway. */
  if (d != d || d - d != 0 ||
      (d > -9007199254740992.0 && d < 9007199254740992.0 && d != (double)(int64_t)d)) {
    napi_throw_range_error(env, "ERR_OUT_OF_RANGE", "port must be an integer");
    return false;
  }
  /* Every integer is decided (out of range is invalid_port).  One the
   * library's int32_t cannot carry is not clamped (2147483647 would be
   * recorded as if it were the port given): *wide keeps it, and the check
   * is refused as invalid_port with a message naming it (refuse_wide_port). */
  *wide = 0;
  if (d > 2147483647.0 || d < -2147483648.0) {
    *wide = d;
    *port = 0;
  } else {
    *port = (int32_t)d;
  }
  return true;
}

bool refuse_wide_port(napi_env env, double wide, egress_request_t **req) {
  char msg[400];
  if (wide == 0) return true;
  if (*req == NULL && egress_request_new(req) != EGRESS_OK) {
    throw_status(env, EGRESS_ENOMEM, NULL);
    return false;
  }
  snprintf(msg, sizeof msg, "port %.0f is out of range (must be between 1 and 65535)", wide);
  if (egress_request_refuse(*req, EGRESS_REASON_INVALID_PORT, msg) != EGRESS_OK) {
    throw_status(env, EGRESS_ENOMEM, NULL);
    return false;
  }
  return true;
}

/* ------------------------------------------------------------------------ */
/* Request context                                                           */
/* ------------------------------------------------------------------------ */

/* Generated from the field list.  Indexed by value: a value out of range
 * does not compile, and one given twice is an override warning (-Wextra). */
const char *const context_keys[CTX_FIELDS] = {
#define CONTEXT_KEY_(name, value, key) [EGRESS_FIELD_##name] = key,
  EGRESS_FIELD_MAP(CONTEXT_KEY_)
#undef CONTEXT_KEY_
};

bool make_request(napi_env env, napi_value ctx, egress_request_t **out) {
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
    snprintf(what, sizeof what, "ctx.%s", context_keys[i]);
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
