/*
 * Policy documents: JSON shapes of docs/policy.md, entry lists, compilation into
 * matchers, and the digest that names a policy in events.
 *
 * A policy is all-or-nothing: any bad entry rejects the whole document with
 * a message naming the list, the index, the entry and the problem.
 */
#include "egress_private.h"

#include <cjson/cJSON.h>
#include <errno.h>
#include <fcntl.h>
#include <nettle/sha2.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

/* Large enough for any real allowlist, small enough that a hostile file
 * cannot make the loader allocate without bound. */
#define POLICY_MAX_BYTES (64u * 1024u * 1024u)
#define ENTRY_MAX_BYTES  4096u

/* Quote an entry for an error message: printable ASCII kept, everything else
 * escaped, long entries cut, so the message itself is safe to log. */
static void quote_entry(const char *s, size_t len, char *out, size_t outlen) {
  size_t o = 0;
  for (size_t i = 0; i < len && o + 8 < outlen; i++) {
    unsigned char c = (unsigned char)s[i];
    if (i >= 80) {
      o += (size_t)snprintf(out + o, outlen - o, "...");
      break;
    }
    if (c >= 0x20 && c < 0x7f && c != '"' && c != '\\')
      out[o++] = (char)c;
    else
      o += (size_t)snprintf(out + o, outlen - o, "\\x%02x", c);
  }
  out[o < outlen ? o : outlen - 1] = '\0';
}

static void rules_free(egress__rule_t *rules, size_t n) {
  for (size_t i = 0; i < n; i++) egress__rule_clear(&rules[i]);
  egress__free(rules);
}

static void policy_free(egress_policy_t *p) {
  if (!p) return;
  for (int l = 0; l < 2; l++) {
    egress__matcher_free(p->matcher[l]);
    rules_free(p->rules[l], p->nrules[l]);
  }
  egress__free(p);
}

egress_policy_t *egress_policy_ref(egress_policy_t *policy) {
  if (policy) atomic_fetch_add_explicit(&policy->refs, 1, memory_order_relaxed);
  return policy;
}

void egress_policy_unref(egress_policy_t *policy) {
  if (!policy) return;
  if (atomic_fetch_sub_explicit(&policy->refs, 1, memory_order_acq_rel) == 1) policy_free(policy);
}

size_t egress_policy_rule_count(const egress_policy_t *policy, egress_list_t list) {
  if (!policy || (list != EGRESS_LIST_ALLOW && list != EGRESS_LIST_DENY)) return 0;
  return policy->nrules[list];
}

const char *egress_policy_rule_text(const egress_policy_t *policy, egress_list_t list, size_t index) {
  if (index >= egress_policy_rule_count(policy, list)) return NULL;
  return policy->rules[list][index].text;
}

const char *egress_policy_digest(const egress_policy_t *policy) { return policy ? policy->digest : NULL; }

/* The digest covers both lists, each entry length-prefixed, so that no two
 * different policies share a canonical form. */
static void policy_digest(egress_policy_t *p) {
  struct sha256_ctx ctx;
  uint8_t digest[SHA256_DIGEST_SIZE];
  sha256_init(&ctx);
  for (int l = 0; l < 2; l++) {
    char head[64];
    int n = snprintf(head, sizeof head, "%s:%zu\n", egress__list_keys[l], p->nrules[l]);
    sha256_update(&ctx, (size_t)n, (const uint8_t *)head);
    for (size_t i = 0; i < p->nrules[l]; i++) {
      const char *t = p->rules[l][i].text;
      size_t tlen = strlen(t);
      n = snprintf(head, sizeof head, "%zu:", tlen);
      sha256_update(&ctx, (size_t)n, (const uint8_t *)head);
      sha256_update(&ctx, tlen, (const uint8_t *)t);
    }
  }
  sha256_digest(&ctx, sizeof digest, digest);
  for (size_t i = 0; i < sizeof digest; i++) snprintf(p->digest + 2 * i, 3, "%02x", digest[i]);
}

typedef struct entry_src {
  const char *text;
  size_t len;
} entry_src_t;

/* Each invalid entry reported through @p errs when given (lint), else the
 * first one fails. */
static egress_status_t parse_list(egress_policy_t *p, egress_list_t list, const entry_src_t *src, size_t n,
                                  egress__entry_errors_t *errs, char *errbuf, size_t errlen) {
  if (n == 0) return EGRESS_OK;
  p->rules[list] = egress__calloc(n, sizeof(egress__rule_t));
  if (!p->rules[list]) return EGRESS_ENOMEM;
  for (size_t i = 0; i < n; i++) {
    const char *why = "invalid entry";
    char quoted[400];
    egress_status_t st;
    if (!src[i].text) continue; /* not a string: reported already */
    if (src[i].len > ENTRY_MAX_BYTES) {
      st = EGRESS_EPOLICY;
      why = "entry longer than 4096 bytes";
    } else {
      st = egress__entry_parse(src[i].text, src[i].len, list, &p->rules[list][i], &why);
    }
    if (st == EGRESS_ENOMEM) return st;
    if (st != EGRESS_OK) {
      quote_entry(src[i].text, src[i].len, quoted, sizeof quoted);
      egress__errf(errbuf, errlen, EGRESS_EPOLICY, "%s[%zu] \"%s\": %s", egress__list_keys[list], i, quoted,
                   why ? why : "invalid entry");
      if (!errs) return EGRESS_EPOLICY;
      errs->report(errs->user, errbuf);
      errs->count++;
      continue;
    }
    p->rules[list][i].list = list;
    p->rules[list][i].index = i;
    p->nrules[list] = i + 1;
  }
  return EGRESS_OK;
}

static egress_status_t policy_build(const entry_src_t *allow, size_t n_allow, const entry_src_t *deny,
                                    size_t n_deny, egress__entry_errors_t *errs, egress_policy_t **out,
                                    char *errbuf, size_t errlen) {
  egress_status_t st = EGRESS_ENOMEM;
  egress_policy_t *p = egress__calloc(1, sizeof(*p));
  if (!p) goto fail;
  atomic_init(&p->refs, 1);
  if ((st = parse_list(p, EGRESS_LIST_ALLOW, allow, n_allow, errs, errbuf, errlen)) != EGRESS_OK) goto fail;
  if ((st = parse_list(p, EGRESS_LIST_DENY, deny, n_deny, errs, errbuf, errlen)) != EGRESS_OK) goto fail;
  if (errs && errs->count) {
    st = egress__errf(errbuf, errlen, EGRESS_EPOLICY, "%zu invalid entries", errs->count);
    goto fail;
  }
  for (int l = 0; l < 2; l++)
    if ((st = egress__matcher_build(p->rules[l], p->nrules[l], &p->matcher[l])) != EGRESS_OK) goto fail;
  policy_digest(p);
  *out = p;
  return EGRESS_OK;
fail:
  policy_free(p);
  if (st == EGRESS_ENOMEM) egress__errf(errbuf, errlen, st, "out of memory while compiling the policy");
  return st;
}

egress_status_t egress_policy_from_entries(const char *const *allow, size_t n_allow, const char *const *deny,
                                           size_t n_deny, egress_policy_t **out, char *errbuf,
                                           size_t errlen) {
  egress_status_t st = EGRESS_ENOMEM;
  entry_src_t *src = NULL;
  if (!out) return egress__errf(errbuf, errlen, EGRESS_EINVAL, "out must not be NULL");
  *out = NULL;
  if ((n_allow && !allow) || (n_deny && !deny) || n_allow > SIZE_MAX / 2 - n_deny)
    return egress__errf(errbuf, errlen, EGRESS_EINVAL, "entry array is NULL");
  src = egress__calloc(n_allow + n_deny + 1, sizeof(*src));
  if (!src) goto done;
  for (size_t i = 0; i < n_allow + n_deny; i++) {
    const char *t = i < n_allow ? allow[i] : deny[i - n_allow];
    if (!t) {
      st = egress__errf(errbuf, errlen, EGRESS_EPOLICY, "%s[%zu]: entry is NULL",
                        egress__list_keys[i >= n_allow], i < n_allow ? i : i - n_allow);
      goto done;
    }
    src[i].text = t;
    src[i].len = strlen(t);
  }
  st = policy_build(src, n_allow, src + n_allow, n_deny, NULL, out, errbuf, errlen);
done:
  egress__free(src);
  if (st == EGRESS_ENOMEM) egress__errf(errbuf, errlen, st, "out of memory");
  return st;
}

/* cJSON turns "\u0000" into a NUL that silently cuts the string; a policy
 * must never mean something shorter than what it says, so any NUL escape in
 * the document rejects it before parsing. */
static bool has_nul_escape(const char *json, size_t len) {
  for (size_t i = 0; i + 5 < len; i++) {
    if (json[i] != '\\') continue;
    size_t run = 0;
    while (i + run < len && json[i + run] == '\\') run++;
    i += run - 1;
    if (run % 2 == 1 && i + 5 < len && json[i + 1] == 'u' && json[i + 2] == '0' && json[i + 3] == '0' &&
        json[i + 4] == '0' && json[i + 5] == '0')
      return true;
  }
  return false;
}

static int key_order(const void *a, const void *b) {
  return strcmp(*(const char *const *)a, *(const char *const *)b);
}

/* A key written twice in any object of the document, with its count (0:
 * none; -1: out of memory).  JSON readers disagree on which one counts
 * (cJSON takes the first, most others the last), so a document a worker's
 * other tools would read differently is refused.  Keys are sorted, not
 * compared pairwise: a document of many keys costs n log n, not n^2.
 * cJSON caps nesting (CJSON_NESTING_LIMIT), which bounds the recursion. */
static int duplicate_key(const cJSON *node, const char **key) {
  if (cJSON_IsObject(node)) {
    size_t n = 0;
    for (const cJSON *it = node->child; it; it = it->next) n++;
    if (n > 1) {
      const char **keys = egress__calloc(n, sizeof *keys);
      if (!keys) return -1;
      size_t k = 0;
      for (const cJSON *it = node->child; it; it = it->next) keys[k++] = it->string ? it->string : "";
      qsort(keys, n, sizeof *keys, key_order);
      int dup = 0;
      for (size_t i = 1; i < n && !dup; i++) {
        if (strcmp(keys[i - 1], keys[i])) continue;
        size_t run = 2;
        while (i + 1 < n && !strcmp(keys[i], keys[i + 1])) run++, i++;
        *key = keys[i];
        dup = run > INT32_MAX ? INT32_MAX : (int)run;
      }
      egress__free(keys);
      if (dup) return dup;
    }
  }
  if (cJSON_IsObject(node) || cJSON_IsArray(node))
    for (const cJSON *it = node->child; it; it = it->next) {
      int dup = duplicate_key(it, key);
      if (dup) return dup;
    }
  return 0;
}

static const char *json_kind(const cJSON *it) {
  if (cJSON_IsNumber(it)) return "a number";
  if (cJSON_IsBool(it)) return "a boolean";
  if (cJSON_IsNull(it)) return "null";
  if (cJSON_IsArray(it)) return "an array";
  if (cJSON_IsObject(it)) return "an object";
  return "not a string";
}

static int count_key(const cJSON *obj, const char *key) {
  int n = 0;
  for (const cJSON *it = obj->child; it; it = it->next)
    if (it->string && !strcmp(it->string, key)) n++;
  return n;
}

static egress_status_t collect_list(const cJSON *obj, egress_list_t list, bool required, entry_src_t **src,
                                    size_t *n, egress__entry_errors_t *errs, char *errbuf, size_t errlen) {
  const char *key = egress__list_keys[list];
  *src = NULL;
  *n = 0;
  int count = count_key(obj, key);
  if (count > 1) return egress__errf(errbuf, errlen, EGRESS_EPOLICY, "%s: key appears %d times", key, count);
  const cJSON *arr = cJSON_GetObjectItemCaseSensitive(obj, key);
  if (!arr) {
    if (!required) return EGRESS_OK;
    return egress__errf(errbuf, errlen, EGRESS_EPOLICY, "%s: missing (an empty list [] denies everything)",
                        key);
  }
  if (!cJSON_IsArray(arr))
    return egress__errf(errbuf, errlen, EGRESS_EPOLICY, "%s: must be an array of strings", key);
  size_t total = (size_t)cJSON_GetArraySize(arr);
  *src = egress__calloc(total + 1, sizeof(**src));
  if (!*src) return EGRESS_ENOMEM;
  size_t i = 0;
  for (const cJSON *it = arr->child; it; it = it->next, i++) {
    if (!cJSON_IsString(it) || !it->valuestring) {
      /* Name the value as written (cut, escaped) so the operator finds it. */
      char quoted[400], *shown = cJSON_PrintUnformatted(it);
      quote_entry(shown ? shown : "", shown ? strlen(shown) : 0, quoted, sizeof quoted);
      cJSON_free(shown);
      egress__errf(errbuf, errlen, EGRESS_EPOLICY, "%s[%zu] %s: entry must be a string, not %s", key, i,
                   quoted, json_kind(it));
      if (!errs) return EGRESS_EPOLICY;
      errs->report(errs->user, errbuf);
      errs->count++;
      continue;
    }
    (*src)[i].text = it->valuestring;
    (*src)[i].len = strlen(it->valuestring);
  }
  *n = i;
  return EGRESS_OK;
}

static egress_status_t policy_from_json(const char *json, size_t len, egress__entry_errors_t *errs,
                                        egress_policy_t **out, char *errbuf, size_t errlen) {
  egress_status_t st = EGRESS_EPOLICY;
  cJSON *root = NULL;
  entry_src_t *allow = NULL, *deny = NULL;
  size_t n_allow = 0, n_deny = 0;
  if (!out) return egress__errf(errbuf, errlen, EGRESS_EINVAL, "out must not be NULL");
  *out = NULL;
  if (!json) return egress__errf(errbuf, errlen, EGRESS_EINVAL, "document is NULL");
  if (len > POLICY_MAX_BYTES) {
    st = egress__errf(errbuf, errlen, EGRESS_EPOLICY, "policy document larger than %u bytes",
                      POLICY_MAX_BYTES);
    goto done;
  }
  if (memchr(json, '\0', len)) {
    st = egress__errf(errbuf, errlen, EGRESS_EPOLICY, "policy document contains a NUL byte");
    goto done;
  }
  if (has_nul_escape(json, len)) {
    st = egress__errf(errbuf, errlen, EGRESS_EPOLICY, "policy document contains a NUL character (\\u0000)");
    goto done;
  }
  const char *end = NULL;
  root = cJSON_ParseWithLengthOpts(json, len, &end, false);
  if (!root) {
    /* cJSON cannot tell a parse error from an allocation failure; treat it
     * as a parse error and name the offset, which is right in practice. */
    const char *at = cJSON_GetErrorPtr();
    size_t off = (at && at >= json && at <= json + len) ? (size_t)(at - json) : 0;
    st = egress__errf(errbuf, errlen, EGRESS_EPOLICY, "policy is not valid JSON (near byte %zu)", off);
    goto done;
  }
  for (; end && end < json + len; end++) {
    if (*end != ' ' && *end != '\t' && *end != '\n' && *end != '\r') {
      st = egress__errf(errbuf, errlen, EGRESS_EPOLICY, "trailing data after the JSON document at byte %zu",
                        (size_t)(end - json));
      goto done;
    }
  }
  if (!cJSON_IsObject(root)) {
    st = egress__errf(errbuf, errlen, EGRESS_EPOLICY, "policy must be a JSON object");
    goto done;
  }
  const char *dup_key = NULL;
  int dups = duplicate_key(root, &dup_key);
  if (dups < 0) {
    st = EGRESS_ENOMEM;
    goto done;
  }
  if (dups > 0) {
    char quoted[400];
    quote_entry(dup_key, strlen(dup_key), quoted, sizeof quoted);
    st = egress__errf(errbuf, errlen, EGRESS_EPOLICY, "%s: key appears %d times", quoted, dups);
    goto done;
  }
  const cJSON *pol = root;
  int n_exec = count_key(root, "executionPolicy");
  if (n_exec > 1) {
    st = egress__errf(errbuf, errlen, EGRESS_EPOLICY, "executionPolicy: key appears %d times", n_exec);
    goto done;
  }
  if (n_exec == 1) {
    if (count_key(root, egress__list_keys[EGRESS_LIST_ALLOW]) ||
        count_key(root, egress__list_keys[EGRESS_LIST_DENY])) {
      st = egress__errf(errbuf, errlen, EGRESS_EPOLICY,
                        "both executionPolicy and a top-level %s/%s: ambiguous",
                        egress__list_keys[EGRESS_LIST_ALLOW], egress__list_keys[EGRESS_LIST_DENY]);
      goto done;
    }
    pol = cJSON_GetObjectItemCaseSensitive(root, "executionPolicy");
    if (!cJSON_IsObject(pol)) {
      st = egress__errf(errbuf, errlen, EGRESS_EPOLICY, "executionPolicy: must be an object");
      goto done;
    }
  }
  if ((st = collect_list(pol, EGRESS_LIST_ALLOW, true, &allow, &n_allow, errs, errbuf, errlen)) != EGRESS_OK)
    goto done;
  if ((st = collect_list(pol, EGRESS_LIST_DENY, false, &deny, &n_deny, errs, errbuf, errlen)) != EGRESS_OK)
    goto done;
  st = policy_build(allow, n_allow, deny, n_deny, errs, out, errbuf, errlen);
done:
  cJSON_Delete(root);
  egress__free(allow);
  egress__free(deny);
  if (st == EGRESS_ENOMEM) egress__errf(errbuf, errlen, st, "out of memory");
  return st;
}

egress_status_t egress_policy_from_json(const char *json, size_t len, egress_policy_t **out, char *errbuf,
                                        size_t errlen) {
  return policy_from_json(json, len, NULL, out, errbuf, errlen);
}

static egress_status_t read_file(const char *path, char **data, size_t *len, char *errbuf, size_t errlen) {
  egress_status_t st = EGRESS_EIO;
  char *buf = NULL;
  size_t used = 0, cap = 0;
  *data = NULL;
  *len = 0;
  if (!path) return egress__errf(errbuf, errlen, EGRESS_EINVAL, "path is NULL");
  int fd = open(path, O_RDONLY | O_CLOEXEC);
  char ebuf[128];
  if (fd < 0)
    return egress__errf(errbuf, errlen, EGRESS_EIO, "%s: %s", path,
                        egress__strerror(errno, ebuf, sizeof ebuf));
  for (;;) {
    if (used == cap) {
      if (cap >= POLICY_MAX_BYTES) {
        st = egress__errf(errbuf, errlen, EGRESS_EPOLICY, "%s: larger than %u bytes", path, POLICY_MAX_BYTES);
        goto fail;
      }
      size_t ncap = cap ? cap * 2 : 65536;
      char *grown = egress__realloc(buf, ncap + 1);
      if (!grown) {
        st = egress__errf(errbuf, errlen, EGRESS_ENOMEM, "out of memory reading %s", path);
        goto fail;
      }
      buf = grown;
      cap = ncap;
    }
    ssize_t n = read(fd, buf + used, cap - used);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) {
      st = egress__errf(errbuf, errlen, EGRESS_EIO, "%s: %s", path,
                        egress__strerror(errno, ebuf, sizeof ebuf));
      goto fail;
    }
    if (n == 0) break;
    used += (size_t)n;
  }
  close(fd);
  if (!buf) {
    buf = egress__malloc(1);
    if (!buf) return egress__errf(errbuf, errlen, EGRESS_ENOMEM, "out of memory reading %s", path);
  }
  buf[used] = '\0';
  *data = buf;
  *len = used;
  return EGRESS_OK;
fail:
  close(fd);
  egress__free(buf);
  return st;
}

egress_status_t egress__policy_from_file_all(const char *path, egress__entry_errors_t *errs,
                                             egress_policy_t **out, char *errbuf, size_t errlen) {
  char *data = NULL;
  size_t len = 0;
  if (!out) return egress__errf(errbuf, errlen, EGRESS_EINVAL, "out must not be NULL");
  *out = NULL;
  egress_status_t st = read_file(path, &data, &len, errbuf, errlen);
  if (st != EGRESS_OK) return st;
  char inner[EGRESS_ERRBUF_SIZE];
  st = policy_from_json(data, len, errs, out, inner, sizeof inner);
  if (st != EGRESS_OK) egress__errf(errbuf, errlen, st, "%s: %s", path, inner);
  egress__free(data);
  return st;
}

egress_status_t egress_policy_from_file(const char *path, egress_policy_t **out, char *errbuf,
                                        size_t errlen) {
  return egress__policy_from_file_all(path, NULL, out, errbuf, errlen);
}
