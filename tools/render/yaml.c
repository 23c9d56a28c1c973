/*
 * A rendered document as YAML, written from the same cJSON tree as the
 * JSON text, so the two cannot say different things.
 *
 * Block style, two spaces per level, sequences indented under their key.
 * A string is written plain only when no YAML reader (1.1 or 1.2) can take
 * it for anything but that string: it starts with a letter, holds only
 * letters, digits and "._/-", and is not one of the words YAML 1.1 reads
 * as a boolean or null ("on", "yes", "n", "null", ...).  Everything else
 * ("443", "0755", "10.0.0.0/8", "*", "a: b", "", " x") is double-quoted,
 * with JSON's escapes, which YAML's double-quoted style shares.  Numbers
 * are written as JSON writes them.
 */
#include "egress_private.h"

#include "render.h"

#include <cjson/cJSON.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>

typedef struct ybuf {
  char *p;
  size_t len, cap;
  bool oom;
} ybuf_t;

static void put(ybuf_t *b, const char *s, size_t n) {
  if (b->oom) return;
  if (b->len + n + 1 > b->cap) {
    size_t cap = b->cap ? b->cap : 4096;
    while (cap < b->len + n + 1) {
      if (cap > SIZE_MAX / 2) {
        b->oom = true;
        return;
      }
      cap *= 2;
    }
    char *np = egress__realloc(b->p, cap);
    if (!np) {
      b->oom = true;
      return;
    }
    b->p = np;
    b->cap = cap;
  }
  memcpy(b->p + b->len, s, n);
  b->len += n;
  b->p[b->len] = '\0';
}

static void puts_(ybuf_t *b, const char *s) { put(b, s, strlen(s)); }

static void indent(ybuf_t *b, unsigned n) {
  static const char spaces[] = "                                ";
  while (n > 0) {
    unsigned k = n < sizeof spaces - 1 ? n : (unsigned)sizeof spaces - 1;
    put(b, spaces, k);
    n -= k;
  }
}

static bool plain_safe(const char *s) {
  /* YAML 1.1 booleans and null, in every case (quoting a harmless mixed
   * case costs nothing). */
  static const char *const words[] = { "y", "n", "yes", "no", "on", "off", "true", "false", "null" };
  if (!((s[0] >= 'a' && s[0] <= 'z') || (s[0] >= 'A' && s[0] <= 'Z'))) return false;
  for (const char *c = s; *c; c++)
    if (!((*c >= 'a' && *c <= 'z') || (*c >= 'A' && *c <= 'Z') || (*c >= '0' && *c <= '9') || *c == '.' ||
          *c == '_' || *c == '/' || *c == '-'))
      return false;
  for (size_t i = 0; i < sizeof words / sizeof words[0]; i++)
    if (!strcasecmp(s, words[i])) return false;
  return true;
}

/* Double-quoted.  Control characters, DEL and the C1 controls (which YAML
 * does not allow raw) are escaped; a byte that is not UTF-8 is escaped as
 * \xNN, so the text stays valid YAML. */
static void quoted(ybuf_t *b, const char *s) {
  const unsigned char *u = (const unsigned char *)s;
  char esc[8];
  put(b, "\"", 1);
  for (size_t i = 0; u[i];) {
    unsigned char ch = u[i];
    size_t n = ch < 0x80             ? 1
               : (ch & 0xE0) == 0xC0 ? 2
               : (ch & 0xF0) == 0xE0 ? 3
               : (ch & 0xF8) == 0xF0 ? 4
                                     : 0;
    for (size_t k = 1; k < n; k++)
      if ((u[i + k] & 0xC0) != 0x80) n = 0;
    /* Overlong forms, surrogates and code points past U+10FFFF are not
     * UTF-8 either (Unicode Table 3-7). */
    if (n == 0 || (n == 2 && ch < 0xC2) || (n == 4 && ch > 0xF4) ||
        (n == 3 && ch == 0xE0 && u[i + 1] < 0xA0) || (n == 3 && ch == 0xED && u[i + 1] >= 0xA0) ||
        (n == 4 && ch == 0xF0 && u[i + 1] < 0x90) || (n == 4 && ch == 0xF4 && u[i + 1] >= 0x90)) {
      snprintf(esc, sizeof esc, "\\x%02x", ch);
      puts_(b, esc);
      i++;
      continue;
    }
    if (ch == '"' || ch == '\\') {
      esc[0] = '\\';
      esc[1] = (char)ch;
      put(b, esc, 2);
    } else if (ch == '\n') {
      puts_(b, "\\n");
    } else if (ch == '\t') {
      puts_(b, "\\t");
    } else if (ch < 0x20 || ch == 0x7F || (ch == 0xC2 && u[i + 1] >= 0x80 && u[i + 1] <= 0x9F)) {
      snprintf(esc, sizeof esc, "\\u%04x", n == 2 ? u[i + 1] : ch);
      puts_(b, esc);
    } else if (n == 3 && ch == 0xEF && u[i + 1] == 0xBF && u[i + 2] >= 0xBE) {
      /* U+FFFE and U+FFFF: outside YAML's printable set, refused raw by
       * YAML readers (kubectl's among them). */
      puts_(b, u[i + 2] == 0xBE ? "\\ufffe" : "\\uffff");
    } else {
      put(b, s + i, n);
    }
    i += n;
  }
  put(b, "\"", 1);
}

static void scalar_text(ybuf_t *b, const char *s) {
  if (plain_safe(s))
    puts_(b, s);
  else
    quoted(b, s);
}

static bool is_empty_collection(const cJSON *v) {
  return (cJSON_IsObject(v) || cJSON_IsArray(v)) && !v->child;
}

static void node(ybuf_t *b, const cJSON *v, unsigned ind);

/* A scalar or an empty collection, on the current line. */
static void inline_value(ybuf_t *b, const cJSON *v) {
  char num[64];
  if (cJSON_IsString(v)) {
    scalar_text(b, v->valuestring);
  } else if (cJSON_IsNumber(v)) {
    double d = v->valuedouble;
    if (d == (double)(long long)d && d > -1e15 && d < 1e15)
      snprintf(num, sizeof num, "%lld", (long long)d);
    else
      snprintf(num, sizeof num, "%.17g", d);
    puts_(b, num);
  } else if (cJSON_IsTrue(v)) {
    puts_(b, "true");
  } else if (cJSON_IsFalse(v)) {
    puts_(b, "false");
  } else if (cJSON_IsObject(v)) {
    puts_(b, "{}");
  } else if (cJSON_IsArray(v)) {
    puts_(b, "[]");
  } else {
    puts_(b, "null");
  }
}

/* After "key:" or "- ": the value, and the newline that ends it. */
static void value_after(ybuf_t *b, const cJSON *v, unsigned ind) {
  if (is_empty_collection(v) || !(cJSON_IsObject(v) || cJSON_IsArray(v))) {
    put(b, " ", 1);
    inline_value(b, v);
    put(b, "\n", 1);
    return;
  }
  put(b, "\n", 1);
  node(b, v, ind + 2);
}

/* A non-empty collection at indentation @p ind, each entry on its own
 * line(s).  A sequence item that is a mapping starts on the "- " line. */
static void node(ybuf_t *b, const cJSON *v, unsigned ind) {
  for (const cJSON *it = v->child; it && !b->oom; it = it->next) {
    indent(b, ind);
    if (cJSON_IsObject(v)) {
      scalar_text(b, it->string);
      put(b, ":", 1);
      value_after(b, it, ind);
      continue;
    }
    put(b, "-", 1);
    if (cJSON_IsObject(it) && it->child) {
      for (const cJSON *kv = it->child; kv; kv = kv->next) {
        if (kv != it->child)
          indent(b, ind + 2);
        else
          put(b, " ", 1);
        scalar_text(b, kv->string);
        put(b, ":", 1);
        value_after(b, kv, ind + 2);
      }
    } else {
      value_after(b, it, ind);
    }
  }
}

char *egress__render_yaml(const cJSON *doc) {
  ybuf_t b = { NULL, 0, 0, false };
  if (is_empty_collection(doc) || !(cJSON_IsObject(doc) || cJSON_IsArray(doc))) {
    inline_value(&b, doc);
    put(&b, "\n", 1);
  } else {
    node(&b, doc, 0);
  }
  if (b.oom) {
    egress__free(b.p);
    return NULL;
  }
  return b.p;
}
