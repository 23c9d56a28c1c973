/* egressd: a request head, read and judged without I/O; see request.h. */
#include "request.h"

#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

int head_ieq(const char *a, size_t an, const char *b) { return an == strlen(b) && !strncasecmp(a, b, an); }

int head_status_bodiless(unsigned code) { return (code >= 100 && code < 200) || code == 204 || code == 304; }

/* ---- reading ------------------------------------------------------------- */

static int on_url(http_parser *p, const char *at, size_t len) {
  head_t *h = p->data;
  if (h->url_len + len >= sizeof h->url) {
    h->url_too_long = 1;
    return 1;
  }
  memcpy(h->url + h->url_len, at, len);
  h->url_len += len;
  h->url[h->url_len] = '\0';
  return 0;
}

/* A name or value split across reads arrives in pieces that are adjacent
 * in buf.  Pieces that are not adjacent are a folded line (obs-fold):
 * refused, as RFC 9112 5.2 allows, so that no CR LF ever reaches a value
 * that is copied upstream. */
static int extend(uint32_t *off, uint32_t *len, const head_t *h, const char *at, size_t n) {
  if (h->buf + *off + *len != at) return 1;
  *len += (uint32_t)n;
  return 0;
}

static int on_header_field(http_parser *p, const char *at, size_t len) {
  head_t *h = p->data;
  if (h->last_cb == 1) {
    head_field_t *f = &h->fields[h->n_fields - 1];
    if (extend(&f->name_off, &f->name_len, h, at, len)) return 1;
  } else if (h->n_fields == h->max_fields) {
    h->too_many_fields = 1;
    return 1;
  } else {
    h->fields[h->n_fields++] = (head_field_t){ (uint32_t)(at - h->buf), (uint32_t)len, 0, 0 };
  }
  h->last_cb = 1;
  return 0;
}

static int on_header_value(http_parser *p, const char *at, size_t len) {
  head_t *h = p->data;
  head_field_t *f = &h->fields[h->n_fields - 1];
  if (h->last_cb == 2) {
    if (extend(&f->value_off, &f->value_len, h, at, len)) return 1;
  } else {
    f->value_off = (uint32_t)(at - h->buf);
    f->value_len = (uint32_t)len;
  }
  h->last_cb = 2;
  return 0;
}

/* The parser stops at the end of the head: the body (if any) waits until
 * the request has been checked and upstream connected. */
static int on_headers_complete(http_parser *p) {
  head_t *h = p->data;
  h->done = 1;
  http_parser_pause(p, 1);
  /* A response to HEAD has no body whatever its fields say, nor has a 1xx,
   * 204 or 304 (RFC 9112 6.3): its Content-Length or Transfer-Encoding
   * must not make egressd read on into what comes next. */
  if (p->type == HTTP_RESPONSE && (h->skip_body || head_status_bodiless(p->status_code))) return 1;
  return 0;
}

static const http_parser_settings head_settings = {
  .on_url = on_url,
  .on_status = on_url, /* a response's reason phrase, kept where a request keeps its target */
  .on_header_field = on_header_field,
  .on_header_value = on_header_value,
  .on_headers_complete = on_headers_complete,
};

/* A head starts small and grows as bytes come: a connection that has sent
 * nothing, or a short head, does not cost the whole limit. */
enum { HEAD_INITIAL = 2048 };

head_t *head_new(size_t header_limit, size_t extra) {
  size_t max = header_limit + 1 + extra, cap = max < HEAD_INITIAL ? max : HEAD_INITIAL;
  head_t *h = malloc(sizeof *h + cap);
  if (!h) return NULL;
  memset(h, 0, sizeof *h);
  h->limit = header_limit;
  h->cap = cap;
  h->cap_max = max;
  h->max_fields = HEAD_FIELDS_READ;
  http_parser_init(&h->parser, HTTP_REQUEST);
  h->parser.data = h;
  return h;
}

head_t *head_reserve(head_t *h, size_t want) {
  size_t need = h->len + (want < h->cap_max - h->len ? want : h->cap_max - h->len);
  if (need <= h->cap) return h;
  size_t cap = h->cap;
  while (cap < need) cap *= 2;
  if (cap > h->cap_max) cap = h->cap_max;
  head_t *g = realloc(h, sizeof *g + cap);
  if (!g) return NULL;
  g->cap = cap;
  /* Offsets into buf stay right; the parser's way back to us moved. */
  g->parser.data = g;
  return g;
}

head_t *head_new_response(size_t header_limit, size_t extra, int to_head) {
  head_t *h = head_new(header_limit, extra);
  if (!h) return NULL;
  http_parser_init(&h->parser, HTTP_RESPONSE);
  h->parser.data = h;
  h->skip_body = to_head;
  return h;
}

head_status_t head_feed(head_t *h, size_t n) {
  size_t start = h->len;
  h->len += n;
  size_t took = http_parser_execute(&h->parser, &head_settings, h->buf + start, n);
  /* Paused by on_headers_complete, the parser stops on the head's last
   * byte (its LF) without taking it: the head ends one byte later. */
  h->used = start + took + (h->done && took < n && h->buf[start + took] == '\n');
  if (h->url_too_long) return HEAD_URI_LONG;
  if (h->too_many_fields) return HEAD_TOO_LARGE;
  if (h->done) return h->used > h->limit ? HEAD_TOO_LARGE : HEAD_DONE;
  if (HTTP_PARSER_ERRNO(&h->parser) != HPE_OK) return HEAD_BAD;
  if (h->len > h->limit) return HEAD_TOO_LARGE;
  return HEAD_MORE;
}

/* ---- judging ------------------------------------------------------------- */

static const head_field_t *field_at(const head_t *h, size_t i, const char **name, const char **value) {
  const head_field_t *f = &h->fields[i];
  *name = h->buf + f->name_off;
  *value = h->buf + f->value_off;
  return f;
}

/* X-Egress-Run-Id -> runId, as the bindings spell the context keys.
 * Returns 0 when the field names a context key and REQ took its value. */
static int set_context_field(egress_request_t *req, const char *n, size_t nl, const char *v, size_t vl) {
  char key[64], val[1025];
  size_t k = 0;
  int up = 0;
  for (size_t j = 9; j < nl; j++) {
    if (k + 1 >= sizeof key) return -1;
    if (n[j] == '-') {
      up = 1;
      continue;
    }
    key[k++] = up ? (char)(n[j] >= 'a' && n[j] <= 'z' ? n[j] - 32 : n[j])
                  : (char)(n[j] >= 'A' && n[j] <= 'Z' ? n[j] + 32 : n[j]);
    up = 0;
  }
  key[k] = '\0';
  if (vl >= sizeof val) return -1;
  memcpy(val, v, vl);
  val[vl] = '\0';
#define SET_CONTEXT(name, value, jkey)                                  \
  if (!strcmp(key, jkey) && EGRESS_FIELD_##name != EGRESS_FIELD_METHOD) \
    return egress_request_set(req, EGRESS_FIELD_##name, val) == EGRESS_OK ? 0 : -1;
  EGRESS_FIELD_MAP(SET_CONTEXT)
#undef SET_CONTEXT
  return -1;
}

/* The URI's authority as written there (brackets and port included). */
static void authority(const head_t *h, const struct http_parser_url *u, size_t *off, size_t *end) {
  size_t ao = u->field_data[UF_HOST].off, ae = ao + u->field_data[UF_HOST].len;
  if (ao > 0 && h->url[ao - 1] == '[') ao--, ae++;
  if (u->field_set & (1 << UF_PORT)) ae = u->field_data[UF_PORT].off + u->field_data[UF_PORT].len;
  *off = ao;
  *end = ae;
}

/* RFC 9110 5.6.2: a field name is a token.  http_parser lets some other
 * bytes through (a name that begins with a space), and such a name would
 * mean something else to the next parser. */
static int is_token(const char *s, size_t n) {
  static const char tchar[] = "!#$%&'*+-.^_`|~";
  if (n == 0) return 0;
  for (size_t i = 0; i < n; i++) {
    unsigned char ch = (unsigned char)s[i];
    if (!((ch >= '0' && ch <= '9') || (ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') ||
          (ch && strchr(tchar, ch))))
      return 0;
  }
  return 1;
}

/* Whether the path has a dot segment ("." or "..", also spelled %2e):
 * the check compares the path as RFC 3986 normalizes it, and an upstream
 * may resolve the segments or not, so that what it serves could differ
 * from what was checked. */
static int has_dot_segment(const char *p, size_t n) {
  size_t i = 0;
  while (i < n) {
    while (i < n && p[i] == '/') i++;
    size_t dots = 0, other = 0;
    while (i < n && p[i] != '/') {
      if (p[i] == '.') {
        dots++;
        i++;
      } else if (p[i] == '%' && i + 2 < n && p[i + 1] == '2' && (p[i + 2] == 'e' || p[i + 2] == 'E')) {
        dots++;
        i += 3;
      } else {
        other++;
        i++;
      }
    }
    if (!other && (dots == 1 || dots == 2)) return 1;
  }
  return 0;
}

/* Whether a Via field value names egressd's own pseudonym as a recipient
 * ("1.1 egressd"): the request went round through egressd already. */
static int via_names_egressd(const char *v, size_t n) {
  size_t i = 0;
  while (i < n) {
    /* one member: received-protocol RWS received-by [RWS comment] */
    while (i < n && (v[i] == ' ' || v[i] == '\t' || v[i] == ',')) i++;
    while (i < n && v[i] != ' ' && v[i] != '\t' && v[i] != ',') i++;
    while (i < n && (v[i] == ' ' || v[i] == '\t')) i++;
    size_t by = i;
    while (i < n && v[i] != ' ' && v[i] != '\t' && v[i] != ',') i++;
    if (head_ieq(v + by, i - by, "egressd")) return 1;
    int depth = 0;
    while (i < n && (depth || v[i] != ',')) {
      if (v[i] == '(') depth++;
      if (v[i] == ')' && depth) depth--;
      i++;
    }
  }
  return 0;
}

static int judge(const head_t *h, target_t *t, egress_request_t *req) {
  const http_parser *p = &h->parser;
  struct http_parser_url u;
  http_parser_url_init(&u);
  t->connect = p->method == HTTP_CONNECT;
  t->method = http_method_str((enum http_method)p->method);
  if (http_parser_parse_url(h->url, h->url_len, t->connect, &u) != 0 || !(u.field_set & (1 << UF_HOST)) ||
      u.field_data[UF_HOST].len >= sizeof t->host)
    return -1;
  if (t->connect) {
    /* authority-form: host:port and nothing else, in an HTTP/1.x request
     * line (without a version, http_parser reads HTTP/0.9) */
    if (!(u.field_set & (1 << UF_PORT))) return -1;
    if (p->http_major != 1 || p->http_minor > 1) {
      t->refusal = "no HTTP/1.x version";
      return -1;
    }
  } else {
    /* absolute-form http:// without userinfo, HTTP/1.1 only: HTTP/1.0
     * has no Host field and no chunked coding to frame a body with. */
    if (!(u.field_set & (1 << UF_SCHEMA)) || (u.field_set & (1 << UF_USERINFO)) ||
        !head_ieq(h->url + u.field_data[UF_SCHEMA].off, u.field_data[UF_SCHEMA].len, "http") ||
        p->http_major != 1 || p->http_minor != 1)
      return -1;
  }
  memcpy(t->host, h->url + u.field_data[UF_HOST].off, u.field_data[UF_HOST].len);
  t->host[u.field_data[UF_HOST].len] = '\0';
  t->has_port = (u.field_set & (1 << UF_PORT)) != 0;
  t->port = t->has_port ? u.port : 80;
  if (u.field_set & (1 << UF_PATH)) {
    t->path_off = u.field_data[UF_PATH].off;
    t->path_len = u.field_data[UF_PATH].len;
    if (!t->connect && has_dot_segment(h->url + t->path_off, t->path_len)) {
      t->refusal = "dot segment in path";
      return -1;
    }
  }
  if (u.field_set & (1 << UF_QUERY)) {
    /* path and query are adjacent in the URI, '?' between them */
    if (!t->path_len) t->path_off = u.field_data[UF_QUERY].off - 1;
    t->path_len = u.field_data[UF_QUERY].off + u.field_data[UF_QUERY].len - t->path_off;
  }
  t->chunked = (p->flags & F_CHUNKED) != 0;
  t->content_length = p->content_length;
  t->keep_alive = !t->connect && http_should_keep_alive(p);
  if (egress_request_set(req, EGRESS_FIELD_METHOD, t->method) != EGRESS_OK) return -1;
  t->max_forwards = -1;

  int hosts = 0, lengths = 0, codings = 0;
  for (size_t i = 0; i < h->n_fields; i++) {
    const char *n, *v;
    const head_field_t *f = field_at(h, i, &n, &v);
    size_t nl = f->name_len, vl = f->value_len;
    if (!is_token(n, nl)) return -1;
    if (head_ieq(n, nl, "host")) {
      /* The tunnel goes where the request line says; clients spell Host
       * of a CONNECT differently (with or without a default port), and
       * it reaches nobody.  A forwarded Host must name the URI's
       * authority: the upstream may route by it. */
      size_t ao, ae;
      authority(h, &u, &ao, &ae);
      if (++hosts > 1) return -1;
      if (!t->connect && !(vl == ae - ao && !strncasecmp(v, h->url + ao, vl))) return -1;
    } else if (head_ieq(n, nl, "content-length")) {
      lengths++;
    } else if (head_ieq(n, nl, "transfer-encoding")) {
      /* Only chunked alone: egressd re-frames the body in chunks itself,
       * and dropping another coding would change the content. */
      codings++;
      while (vl && (v[vl - 1] == ' ' || v[vl - 1] == '\t')) vl--;
      if (!head_ieq(v, vl, "chunked")) return -1;
    } else if (head_ieq(n, nl, "max-forwards") && p->method == HTTP_OPTIONS) {
      /* 1*DIGIT, trailing white space aside (RFC 9110 5.5); given twice,
       * or not a number, it is refused.  No bound on the digits: a value
       * past what one hop could ever count down is held at 999999999. */
      while (vl && (v[vl - 1] == ' ' || v[vl - 1] == '\t')) vl--;
      if (t->max_forwards >= 0 || !vl) return -1;
      long m = 0;
      for (size_t k = 0; k < vl; k++) {
        if (v[k] < '0' || v[k] > '9') return -1;
        if (m < 100000000)
          m = m * 10 + (v[k] - '0');
        else
          m = 999999999;
      }
      t->max_forwards = m;
    } else if (head_ieq(n, nl, "via")) {
      if (!t->connect && via_names_egressd(v, vl)) {
        t->loop = 1;
        t->refusal = "Via names egressd";
        return -1;
      }
    } else if (nl >= 9 && !strncasecmp(n, "x-egress-", 9)) {
      if (set_context_field(req, n, nl, v, vl) != 0) return -1;
    }
  }
  /* Both, or either twice: two parties could frame the body differently
   * (request smuggling), RFC 9112 6.3. */
  if (lengths > 1 || codings > 1 || (lengths && codings)) return -1;
  if (t->connect && (lengths || codings)) return -1;
  return 0;
}

int head_target(const head_t *h, target_t *t, egress_request_t *req) {
  memset(t, 0, sizeof *t);
  if (!h->done || judge(h, t, req) != 0) {
    t->host[0] = '\0';
    return -1;
  }
  return 0;
}

/* ---- the head sent upstream --------------------------------------------- */

/* Whether the Connection field lists NAME (RFC 9110 7.6.1). */
static int connection_lists(const head_t *h, const char *name, size_t nl) {
  for (size_t i = 0; i < h->n_fields; i++) {
    const char *n, *v;
    const head_field_t *f = field_at(h, i, &n, &v);
    if (!head_ieq(n, f->name_len, "connection")) continue;
    const char *end = v + f->value_len;
    while (v < end) {
      while (v < end && (*v == ' ' || *v == '\t' || *v == ',')) v++;
      const char *token = v;
      while (v < end && *v != ',' && *v != ' ' && *v != '\t') v++;
      if ((size_t)(v - token) == nl && !strncasecmp(token, name, nl)) return 1;
    }
  }
  return 0;
}

/* Fields egressd does not pass on: hop-by-hop ones, those egressd writes
 * itself (Host, framing), and the context it consumed. */
static int not_forwarded(const head_t *h, const char *n, size_t nl) {
  static const char *const fields[] = {
    "connection", "proxy-connection",    "keep-alive",        "te",   "trailer",
    "upgrade",    "proxy-authorization", "transfer-encoding", "host", "content-length"
  };
  for (size_t i = 0; i < sizeof fields / sizeof fields[0]; i++)
    if (head_ieq(n, nl, fields[i])) return 1;
  return (nl >= 9 && !strncasecmp(n, "x-egress-", 9)) || connection_lists(h, n, nl);
}

/* A field may grow by two bytes (": " for ":", CR LF for a bare LF); the
 * rest is the Host, framing and Via lines egressd writes itself. */
size_t head_render_size(const head_t *h) {
  return h->used + 2 * h->n_fields + h->url_len + HEAD_HOST_MAX + 160;
}

size_t head_render(const head_t *h, const target_t *t, char *out, size_t cap) {
  size_t w = 0;
#define PUT(...)                                      \
  do {                                                \
    int n_ = snprintf(out + w, cap - w, __VA_ARGS__); \
    if (n_ < 0 || (size_t)n_ >= cap - w) return 0;    \
    w += (size_t)n_;                                  \
  } while (0)
  int v6 = strchr(t->host, ':') != NULL;
  /* origin-form begins with '/': http://h?q is GET /?q */
  const char *path = h->url + t->path_off;
  PUT("%s %s%.*s HTTP/1.1\r\n", t->method, t->path_len && path[0] == '/' ? "" : "/", (int)t->path_len, path);
  PUT("Host: %s%s%s", v6 ? "[" : "", t->host, v6 ? "]" : "");
  if (t->has_port) PUT(":%d", t->port);
  PUT("\r\n");
  for (size_t i = 0; i < h->n_fields; i++) {
    const char *n, *v;
    const head_field_t *f = field_at(h, i, &n, &v);
    if (not_forwarded(h, n, f->name_len)) continue;
    if (t->max_forwards > 0 && head_ieq(n, f->name_len, "max-forwards")) {
      /* RFC 9110 7.6.2: each intermediary takes one off */
      PUT("Max-Forwards: %ld\r\n", t->max_forwards - 1);
      continue;
    }
    PUT("%.*s: %.*s\r\n", (int)f->name_len, n, (int)f->value_len, v);
  }
  if (t->chunked)
    PUT("Transfer-Encoding: chunked\r\n");
  else if (t->content_length != ULLONG_MAX && t->content_length > 0)
    PUT("Content-Length: %llu\r\n", (unsigned long long)t->content_length);
  /* RFC 9110 7.6.3: each intermediary adds itself. */
  PUT("Via: 1.1 egressd\r\n\r\n");
#undef PUT
  return w;
}

/* ---- responses -------------------------------------------------------------- */

int head_response_ok(const head_t *h) {
  int lengths = 0, codings = 0;
  for (size_t i = 0; i < h->n_fields; i++) {
    const char *n, *v;
    const head_field_t *f = field_at(h, i, &n, &v);
    if (!is_token(n, f->name_len)) return 0;
    if (head_ieq(n, f->name_len, "content-length")) lengths++;
    if (head_ieq(n, f->name_len, "transfer-encoding")) codings++;
  }
  /* Framing the client could read differently than egressd did. */
  return lengths + codings <= 1;
}

int head_response_framing(const head_t *h) {
  int r = 0;
  for (size_t i = 0; i < h->n_fields; i++) {
    const char *n, *v;
    const head_field_t *f = field_at(h, i, &n, &v);
    if (head_ieq(n, f->name_len, "content-length")) r |= 1;
    if (head_ieq(n, f->name_len, "transfer-encoding")) r |= 2;
  }
  return r;
}

int head_response_self_delimited(const head_t *h) {
  const http_parser *p = &h->parser;
  unsigned code = p->status_code;
  return h->skip_body || (p->flags & F_CHUNKED) || p->content_length != ULLONG_MAX ||
         (code >= 100 && code < 200) || code == 204 || code == 304;
}

size_t head_render_response(const head_t *h, int close, char *out, size_t cap) {
  static const char *const hop[] = { "connection", "proxy-connection", "keep-alive",
                                     "te",         "trailer",          "upgrade" };
  size_t w = 0;
#define PUT(...)                                      \
  do {                                                \
    int n_ = snprintf(out + w, cap - w, __VA_ARGS__); \
    if (n_ < 0 || (size_t)n_ >= cap - w) return 0;    \
    w += (size_t)n_;                                  \
  } while (0)
  PUT("HTTP/1.1 %u %.*s\r\n", h->parser.status_code, (int)h->url_len, h->url);
  for (size_t i = 0; i < h->n_fields; i++) {
    const char *n, *v;
    const head_field_t *f = field_at(h, i, &n, &v);
    /* Framing stays whatever Connection names: egressd read the body by
     * it, and the client must read it the same way (RFC 9110 7.6.1: a
     * field meant for every recipient is no connection option). */
    int framing = head_ieq(n, f->name_len, "content-length") || head_ieq(n, f->name_len, "transfer-encoding");
    int drop = !framing && connection_lists(h, n, f->name_len);
    for (size_t k = 0; !drop && k < sizeof hop / sizeof hop[0]; k++) drop = head_ieq(n, f->name_len, hop[k]);
    if (!drop) PUT("%.*s: %.*s\r\n", (int)f->name_len, n, (int)f->value_len, v);
  }
  PUT("Via: 1.1 egressd\r\n%s\r\n", close ? "Connection: close\r\n" : "");
#undef PUT
  return w;
}
