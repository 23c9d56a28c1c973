/*
 * Decisions to JS.  A decision crosses the boundary through two reusable
 * containers that the JS loader hands over once (setup): a Float64Array for
 * every number and one string for every string field.  The addon fills them
 * and the JS builder turns them into a plain object literal.  Setting a
 * dozen named properties from C costs more than the check itself; a literal
 * built by JIT-compiled code does not.  Both containers are read back before
 * anything else can run on the JS thread, so one pair serves every checker
 * of an environment.
 *
 * The string fields are packed into one string, NUL-separated: one string
 * and one split cost far less than a JS property set per field.  Their
 * order, and the numbers' indexes, are the PACKED_NUMBERS and PACKED_STRINGS
 * tables of addon.h, which layout() hands to index.js.
 */
#include "addon.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

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
#define MEMO_SLOTS     64
#define MEMO_MAX_BYTES 1024

typedef struct memo {
  uint64_t tag; /* 0: empty */
  uint64_t hash;
  size_t len;
  char bytes[MEMO_MAX_BYTES];
} memo_t;

instance_t *instance(napi_env env) {
  void *data = NULL;
  if (napi_get_instance_data(env, &data) != napi_ok || !data) return NULL;
  return data;
}

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

napi_value instance_setup(napi_env env, napi_value builder, napi_value numbers) {
  napi_typedarray_type tt;
  size_t len = 0;
  void *data = NULL;
  if (napi_get_typedarray_info(env, numbers, &tt, &len, &data, NULL, NULL) != napi_ok ||
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
  if (napi_create_reference(env, builder, 1, &inst->builder) != napi_ok ||
      napi_create_reference(env, numbers, 1, &inst->numbers) != napi_ok ||
      napi_set_instance_data(env, inst, instance_free, NULL) != napi_ok) {
    instance_free(env, inst, NULL);
    napi_throw_error(env, "EGRESS_ENAPI", "setup failed");
    return NULL;
  }
  return NULL;
}

/* Names to indexes, one object per table, for index.js to compare with its
 * own: generated from the tables the addon packs by. */
napi_value packed_layout(napi_env env) {
  napi_value layout, numbers, strings, context, v;
  NAPI_CHECK(env, napi_create_object(env, &layout));
  NAPI_CHECK(env, napi_create_object(env, &numbers));
  NAPI_CHECK(env, napi_create_object(env, &strings));
#define LAYOUT_SET_(obj, name, index)                                \
  do {                                                               \
    NAPI_CHECK(env, napi_create_uint32(env, (index), &v));           \
    NAPI_CHECK(env, napi_set_named_property(env, (obj), (name), v)); \
  } while (0);
#define LAYOUT_N_(name) LAYOUT_SET_(numbers, "N_" #name, N_##name)
#define LAYOUT_S_(name) LAYOUT_SET_(strings, "S_" #name, S_##name)
  PACKED_NUMBERS(LAYOUT_N_)
  LAYOUT_SET_(numbers, "N_HEADER", N_HEADER)
  PACKED_STRINGS(LAYOUT_S_)
  LAYOUT_SET_(strings, "S_COUNT", S_COUNT)
#undef LAYOUT_N_
#undef LAYOUT_S_
#undef LAYOUT_SET_
  NAPI_CHECK(env, napi_create_array_with_length(env, CTX_FIELDS, &context));
  for (uint32_t i = 0; i < CTX_FIELDS; i++) {
    NAPI_CHECK(env, napi_create_string_utf8(env, context_keys[i], NAPI_AUTO_LENGTH, &v));
    NAPI_CHECK(env, napi_set_element(env, context, i, v));
  }
  NAPI_CHECK(env, napi_set_named_property(env, layout, "numbers", numbers));
  NAPI_CHECK(env, napi_set_named_property(env, layout, "strings", strings));
  NAPI_CHECK(env, napi_set_named_property(env, layout, "context", context));
  return layout;
}

/* ------------------------------------------------------------------------ */
/* Packing                                                                   */
/* ------------------------------------------------------------------------ */

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
  const size_t at[4] = { n / 4, n / 2, n / 4 * 3, n - 8 };
  for (int i = 0; i < 4; i++) {
    memcpy(&w, p + (at[i] + 8 <= n ? at[i] : n - 8), 8);
    h = (h ^ w) * 0xff51afd7ed558ccdull;
    h ^= h >> 29;
  }
  return h;
}

/* s[0..len) as a JS string.  Texts are ASCII but for what a caller gave
 * (context fields, an invalid host): V8 copies ASCII handed over as Latin-1
 * as it is, where UTF-8 is first scanned by its decoder, the larger cost
 * for an event's 800 bytes. */
static napi_status make_text(napi_env env, const char *s, size_t len, napi_value *out) {
  uint64_t high = 0, w;
  size_t i = 0;
  for (; i + 8 <= len; i += 8) {
    memcpy(&w, s + i, 8);
    high |= w;
  }
  for (; i < len; i++) high |= (unsigned char)s[i];
  if (high & 0x8080808080808080ull) return napi_create_string_utf8(env, s, len, out);
  return napi_create_string_latin1(env, s, len, out);
}

/* The packed fields in inst->buf (buf_len bytes) as a JS string, with
 * @p event after them; or, when a memo slot already holds the same fields
 * (N_MEMO_SLOT/N_MEMO_TAG say which), @p event alone or undefined.  The
 * event is never memoized: its id and time differ for every check. */
static napi_value packed_or_memo(napi_env env, instance_t *inst, const char *event, size_t event_len) {
  napi_value v;
  const char *b = inst->buf;
  size_t len = inst->buf_len;
  inst->nums[N_MEMO_SLOT] = -1;
  inst->nums[N_EVENT] = event ? EVENT_AFTER : EVENT_NONE;
  if (inst->memo && len <= MEMO_MAX_BYTES) {
    uint64_t h = memo_hash(b, len);
    memo_t *m = &inst->memo[h % MEMO_SLOTS];
    inst->nums[N_MEMO_SLOT] = (double)(size_t)(m - inst->memo);
    if (m->tag && m->hash == h && m->len == len && !memcmp(m->bytes, b, len)) {
      inst->nums[N_MEMO_TAG] = (double)m->tag;
      if (event) {
        inst->nums[N_EVENT] = EVENT_ALONE;
        NAPI_CHECK(env, make_text(env, event, event_len, &v));
      } else {
        NAPI_CHECK(env, napi_get_undefined(env, &v));
      }
      return v;
    }
    m->tag = ++inst->next_tag;
    m->hash = h;
    m->len = len;
    memcpy(m->bytes, b, len);
    inst->nums[N_MEMO_TAG] = (double)m->tag;
  }
  if (event) {
    /* Reserved by emit_packed: the event goes after the fields, which
     * lastPacked() still returns alone (buf_len). */
    inst->buf[len] = '\0';
    memcpy(inst->buf + len + 1, event, event_len);
    len += 1 + event_len;
  }
  NAPI_CHECK(env, make_text(env, b, len, &v));
  return v;
}

/* Fill the number array from @p d and return the packed string fields
 * (packed_or_memo says how). */
napi_value emit_packed(napi_env env, instance_t *inst, const egress_decision_t *d) {
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
  f[S_URL] = egress_decision_url(d);
  const char *event = egress_decision_event_json(d);
  size_t event_len = event ? strlen(event) : 0;

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
  if (!reserve(inst, total + 1 + event_len + 1)) return throw_status(env, EGRESS_ENOMEM, NULL);
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
                       (int)egress_decision_address_reason(d, k), (long)egress_decision_address_ttl(d, k));
      size_t used = (size_t)(o - inst->buf);
      if (w < 0 || !reserve(inst, used + (size_t)w + 1 + event_len + 1))
        return throw_status(env, EGRESS_ENOMEM, NULL);
      o = inst->buf + used;
      memcpy(o, num, (size_t)w);
      o += w;
    }
  }
  inst->buf_len = (size_t)(o - inst->buf);
  return packed_or_memo(env, inst, event, event_len);
}

/* The decision object, through the JS builder (async completions). */
napi_value emit_object(napi_env env, instance_t *inst, const egress_decision_t *d) {
  napi_value packed = emit_packed(env, inst, d), builder, undef, result;
  if (!packed) return NULL;
  NAPI_CHECK(env, napi_get_reference_value(env, inst->builder, &builder));
  NAPI_CHECK(env, napi_get_undefined(env, &undef));
  NAPI_CHECK(env, napi_call_function(env, undef, builder, 1, &packed, &result));
  return result;
}

napi_value last_packed(napi_env env, instance_t *inst) {
  napi_value v;
  if (!inst || !inst->buf) return throw_type(env, "no decision was packed yet");
  NAPI_CHECK(env, napi_create_string_utf8(env, inst->buf, inst->buf_len, &v));
  return v;
}
