/*
 * Fuzz target: egressd's request head (tools/egressd/request.c), the bytes
 * a workload sends the gateway before anything is checked.
 *
 * The first input byte picks how the rest is cut into reads; the head is
 * also read whole, and both readings must agree (a request must not mean
 * one thing in one packet and another in three; which error answers a
 * refused one may differ).  For a head egressd
 * accepts:
 *  - the host it checks is the host of the request target;
 *  - the head it sends upstream parses cleanly as one HTTP/1.1 request
 *    with the same method, exactly one Host naming the checked authority,
 *    framing fields that egressd wrote itself (one of Content-Length or
 *    chunked, never both), no hop-by-hop field, no X-Egress-* field, and
 *    nothing after its end (no second request smuggled inside).
 * The same bytes are also read as a response from upstream: one accepted
 * is written for the client with its status and framing unchanged, no
 * hop-by-hop field, and "Connection: close" exactly when asked for.
 */
#include "fuzz_common.h"

#include <limits.h>
#include <strings.h>

#include "../../tools/egressd/request.h"

enum { LIMIT = 4096 };

typedef struct reading {
  head_status_t status;
  target_t target;
  int judged;
  size_t used;
} reading_t;

static void read_head(const uint8_t *data, size_t size, size_t cut, reading_t *out, head_t **keep) {
  head_t *h = head_new(LIMIT, 0);
  FUZZ_REQUIRE(h, "out of memory");
  size_t off = 0;
  head_status_t st = HEAD_MORE;
  while (st == HEAD_MORE && off < size) {
    h = head_reserve(h, cut);
    FUZZ_REQUIRE(h, "out of memory");
    size_t room = h->cap - h->len, n = size - off;
    if (n > cut) n = cut;
    if (n > room) n = room;
    memcpy(h->buf + h->len, data + off, n);
    off += n;
    st = head_feed(h, n);
  }
  memset(out, 0, sizeof *out);
  out->status = st;
  if (st == HEAD_DONE) {
    egress_request_t *req = NULL;
    FUZZ_REQUIRE(egress_request_new(&req) == EGRESS_OK, "request");
    out->judged = head_target(h, &out->target, req) == 0;
    egress_request_free(req);
    out->used = h->used;
    FUZZ_REQUIRE(h->used <= h->len && h->used <= LIMIT, "head of %zu bytes past its limit", h->used);
  }
  if (keep)
    *keep = h;
  else
    free(h);
}

/* What the rendered head turns out to hold, read back by http_parser. */
typedef struct reparse {
  head_t *h;
  int complete;
} reparse_t;

static void check_rendered(const head_t *h, const target_t *t) {
  size_t cap = head_render_size(h);
  char *out = malloc(cap);
  FUZZ_REQUIRE(out, "out of memory");
  size_t n = head_render(h, t, out, cap);
  FUZZ_REQUIRE(n > 0 && n < cap, "head_render_size too small (%zu)", cap);

  head_t *back = head_new(cap, 0);
  FUZZ_REQUIRE(back && (back = head_reserve(back, n)), "out of memory");
  back->max_fields = HEAD_FIELDS_MAX; /* what egressd writes may have a few more */
  memcpy(back->buf, out, n);
  head_status_t st = head_feed(back, n);
  FUZZ_REQUIRE(st == HEAD_DONE, "rendered head does not parse (%d): %.*s", (int)st, (int)n, out);
  FUZZ_REQUIRE(back->used == n, "bytes after the rendered head: %.*s", (int)n, out);
  FUZZ_REQUIRE(back->parser.method == h->parser.method, "method changed");
  FUZZ_REQUIRE(back->parser.http_major == 1 && back->parser.http_minor == 1, "not HTTP/1.1");
  FUZZ_REQUIRE(back->url_len > 0 && back->url[0] == '/', "not origin-form: %s", back->url);

  char want_host[HEAD_HOST_MAX + 16];
  int v6 = strchr(t->host, ':') != NULL;
  if (t->has_port)
    snprintf(want_host, sizeof want_host, "%s%s%s:%d", v6 ? "[" : "", t->host, v6 ? "]" : "", t->port);
  else
    snprintf(want_host, sizeof want_host, "%s%s%s", v6 ? "[" : "", t->host, v6 ? "]" : "");
  int hosts = 0, lengths = 0, codings = 0, vias = 0;
  static const char *const never[] = { "connection", "proxy-connection",    "keep-alive", "te",
                                       "trailer",    "proxy-authorization", "upgrade" };
  for (size_t i = 0; i < back->n_fields; i++) {
    const head_field_t *f = &back->fields[i];
    const char *name = back->buf + f->name_off, *value = back->buf + f->value_off;
    for (size_t k = 0; k < sizeof never / sizeof never[0]; k++)
      FUZZ_REQUIRE(!head_ieq(name, f->name_len, never[k]), "hop-by-hop field forwarded: %s", never[k]);
    FUZZ_REQUIRE(!(f->name_len >= 9 && !strncasecmp(name, "x-egress-", 9)), "X-Egress-* forwarded");
    for (size_t k = 0; k < f->value_len; k++)
      FUZZ_REQUIRE(value[k] != '\r' && value[k] != '\n', "CR or LF inside a forwarded value");
    if (head_ieq(name, f->name_len, "host")) {
      hosts++;
      FUZZ_REQUIRE(head_ieq(value, f->value_len, want_host), "Host %.*s is not the checked %s",
                   (int)f->value_len, value, want_host);
    }
    if (head_ieq(name, f->name_len, "content-length")) lengths++;
    if (head_ieq(name, f->name_len, "transfer-encoding")) {
      codings++;
      FUZZ_REQUIRE(head_ieq(value, f->value_len, "chunked"), "coding other than chunked");
    }
    if (head_ieq(name, f->name_len, "via")) vias++;
  }
  FUZZ_REQUIRE(hosts == 1, "%d Host fields", hosts);
  FUZZ_REQUIRE(lengths + codings <= 1, "body framed twice");
  FUZZ_REQUIRE(codings == (t->chunked ? 1 : 0), "chunked not kept");
  FUZZ_REQUIRE(vias >= 1, "no Via");
  FUZZ_REQUIRE(t->chunked || back->parser.content_length == t->content_length ||
                   (t->content_length == ULLONG_MAX && back->parser.content_length == ULLONG_MAX) ||
                   (t->content_length == 0 && back->parser.content_length == ULLONG_MAX),
               "Content-Length changed");
  free(back);
  free(out);
}

/* The same bytes as a response head from upstream: once accepted, what
 * the client is sent parses back with the same status and framing, and
 * without hop-by-hop fields. */
static void check_response(const uint8_t *data, size_t size, int to_head, int close) {
  head_t *h = head_new_response(LIMIT, 0, to_head);
  FUZZ_REQUIRE(h && (h = head_reserve(h, size)), "out of memory");
  size_t n = size < h->cap ? size : h->cap;
  memcpy(h->buf, data, n);
  if (head_feed(h, n) == HEAD_DONE && head_response_ok(h)) {
    size_t cap = head_render_size(h);
    char *out = malloc(cap);
    FUZZ_REQUIRE(out, "out of memory");
    size_t w = head_render_response(h, close, out, cap);
    FUZZ_REQUIRE(w > 0 && w < cap, "head_render_size too small for a response");
    head_t *back = head_new_response(cap, 0, to_head);
    FUZZ_REQUIRE(back && (back = head_reserve(back, w)), "out of memory");
    back->max_fields = HEAD_FIELDS_MAX;
    memcpy(back->buf, out, w);
    head_status_t st = head_feed(back, w);
    FUZZ_REQUIRE(st == HEAD_DONE && back->used == w, "rendered response does not parse (%d): %.*s", (int)st,
                 (int)w, out);
    FUZZ_REQUIRE(back->parser.status_code == h->parser.status_code, "status changed");
    FUZZ_REQUIRE(head_response_ok(back), "rendered response framed twice");
    FUZZ_REQUIRE(head_response_self_delimited(back) == head_response_self_delimited(h), "framing changed");
    FUZZ_REQUIRE(back->parser.content_length == h->parser.content_length, "Content-Length changed");
    int closes = 0;
    for (size_t i = 0; i < back->n_fields; i++) {
      const head_field_t *f = &back->fields[i];
      const char *name = back->buf + f->name_off;
      static const char *const hop[] = { "proxy-connection", "keep-alive", "te", "trailer", "upgrade" };
      for (size_t k = 0; k < sizeof hop / sizeof hop[0]; k++)
        FUZZ_REQUIRE(!head_ieq(name, f->name_len, hop[k]), "hop-by-hop field relayed: %s", hop[k]);
      if (head_ieq(name, f->name_len, "connection")) closes++;
    }
    FUZZ_REQUIRE(closes == close, "Connection fields: %d, want %d", closes, close);
    free(back);
    free(out);
  }
  free(h);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  if (size < 1) return 0;
  size_t cut = (size_t)(data[0] % 17) + 1;
  if (data[0] >= 240) cut = SIZE_MAX;
  data++;
  size--;

  reading_t whole, pieces;
  head_t *h = NULL;
  read_head(data, size, SIZE_MAX, &whole, NULL);
  read_head(data, size, cut, &pieces, &h);
  /* Which refusal may differ: http_parser hands over a field name at the
   * end of each read, so a 129th field can be seen (431) before a bad byte
   * further on (400).  Whether the head is refused, complete or unfinished
   * may not. */
#define KIND(st) ((st) == HEAD_MORE ? 0 : (st) == HEAD_DONE ? 1 : 2)
  FUZZ_REQUIRE(KIND(whole.status) == KIND(pieces.status), "read whole: %d, in pieces of %zu: %d",
               (int)whole.status, cut, (int)pieces.status);
#undef KIND
  FUZZ_REQUIRE(whole.judged == pieces.judged && whole.used == pieces.used, "judged differently in pieces");
  if (pieces.judged) {
    const target_t *a = &whole.target, *b = &pieces.target;
    FUZZ_REQUIRE(!strcmp(a->host, b->host) && a->port == b->port && a->connect == b->connect &&
                     a->chunked == b->chunked && a->content_length == b->content_length,
                 "target differs in pieces: %s:%d vs %s:%d", a->host, a->port, b->host, b->port);
    FUZZ_REQUIRE(b->host[0] && b->port >= 0 && b->port <= 65535, "no host or bad port");
    /* The host checked is the request target's, as a URL parser reads it. */
    struct http_parser_url u;
    http_parser_url_init(&u);
    FUZZ_REQUIRE(http_parser_parse_url(h->url, h->url_len, b->connect, &u) == 0, "target not a URL");
    FUZZ_REQUIRE(u.field_data[UF_HOST].len == strlen(b->host) &&
                     !memcmp(h->url + u.field_data[UF_HOST].off, b->host, strlen(b->host)),
                 "checked host %s is not the target's", b->host);
    if (!b->connect) check_rendered(h, b);
  }
  free(h);
  check_response(data, size, cut & 1, (cut >> 1) & 1);
  return 0;
}
