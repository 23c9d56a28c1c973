/* egressd: absolute-form HTTP/1.1 forwarding; see egressd.h. */
#include "egressd.h"

/* ---- absolute-form forwarding --------------------------------------------- */

typedef struct out_write {
  uv_write_t w;
  char data[];
} out_write_t;

static void forward_read(uv_stream_t *s, ssize_t nread, const uv_buf_t *buf);

static void on_out_written(uv_write_t *w, int status) {
  conn_t *c = w->handle->data;
  free(w);
  if (c->phase != PH_RELAY) return;
  if (status != 0) {
    conn_close(c, "upstream_error");
    return;
  }
  if (!c->message_done && c->upstream.tcp.write_queue_size < UPSTREAM_QUEUE_MAX)
    uv_read_start((uv_stream_t *)&c->client.tcp, alloc_side, forward_read);
}

/* Copies and queues bytes to upstream; the client is read again only when
 * the queue has drained below its bound. */
static int send_upstream(conn_t *c, const char *data, size_t len) {
  out_write_t *o = malloc(sizeof *o + len);
  if (!o) return -1;
  memcpy(o->data, data, len);
  uv_buf_t b = uv_buf_init(o->data, (unsigned)len);
  if (uv_write(&o->w, (uv_stream_t *)&c->upstream.tcp, &b, 1, on_out_written) != 0) {
    free(o);
    return -1;
  }
  c->up_bytes += len;
  if (c->upstream.tcp.write_queue_size >= UPSTREAM_QUEUE_MAX) uv_read_stop((uv_stream_t *)&c->client.tcp);
  return 0;
}

int ieq(const char *a, size_t an, const char *b) { return an == strlen(b) && !strncasecmp(a, b, an); }

/* Whether the Connection field lists NAME (RFC 9110 7.6.1). */
static int connection_lists(conn_t *c, const char *name, size_t nl) {
  for (size_t i = 0; i < c->n_fields; i++) {
    if (!ieq(c->head + c->fields[i].no, c->fields[i].nl, "connection")) continue;
    const char *v = c->head + c->fields[i].vo, *end = v + c->fields[i].vl;
    while (v < end) {
      while (v < end && (*v == ' ' || *v == '\t' || *v == ',')) v++;
      const char *t = v;
      while (v < end && *v != ',' && *v != ' ' && *v != '\t') v++;
      if ((size_t)(v - t) == nl && !strncasecmp(t, name, nl)) return 1;
    }
  }
  return 0;
}

static int hop_by_hop(conn_t *c, const char *n, size_t nl) {
  static const char *const hop[] = {
    "connection", "proxy-connection",    "keep-alive",        "te",   "trailer",
    "upgrade",    "proxy-authorization", "transfer-encoding", "host", "content-length"
  };
  for (size_t i = 0; i < sizeof hop / sizeof hop[0]; i++)
    if (ieq(n, nl, hop[i])) return 1;
  return (nl > 9 && !strncasecmp(n, "x-egress-", 9)) || connection_lists(c, n, nl);
}

static int on_fwd_body(http_parser *p, const char *at, size_t len) {
  conn_t *c = p->data;
  if (c->phase != PH_RELAY) return 0;
  char size[32];
  if (c->chunked) {
    int n = snprintf(size, sizeof size, "%zx\r\n", len);
    if (send_upstream(c, size, (size_t)n) || send_upstream(c, at, len) || send_upstream(c, "\r\n", 2))
      return -1;
    return 0;
  }
  return send_upstream(c, at, len) ? -1 : 0;
}

static int on_fwd_message_complete(http_parser *p) {
  conn_t *c = p->data;
  if (c->phase != PH_RELAY) return 0;
  if (c->chunked && send_upstream(c, "0\r\n\r\n", 5)) return -1;
  c->message_done = 1;
  /* One request a connection: what follows (pipelined) is not read. */
  uv_read_stop((uv_stream_t *)&c->client.tcp);
  http_parser_pause(p, 1);
  return 0;
}

static void forward_read(uv_stream_t *s, ssize_t nread, const uv_buf_t *buf) {
  conn_t *c = s->data;
  if (nread == 0) return;
  if (nread < 0) {
    conn_close(c, "client_closed");
    return;
  }
  arm_idle(c);
  size_t used = http_parser_execute(&c->parser, &c->settings, buf->base, (size_t)nread);
  (void)used;
  enum http_errno e = HTTP_PARSER_ERRNO(&c->parser);
  if (e != HPE_OK && e != HPE_PAUSED) conn_close(c, "bad_body");
}

/* Sends the request head in origin-form, then the body as framed by the
 * parser. */
void start_forward(conn_t *c) {
  struct http_parser_url u;
  http_parser_url_init(&u);
  (void)http_parser_parse_url(c->url, c->url_len, 0, &u);
  size_t cap = c->head_used + 512;
  char *h = malloc(cap), *w = h;
  if (!h) {
    conn_close(c, "internal_error");
    return;
  }
  const char *path = "/";
  size_t pl = 1;
  if (u.field_set & (1 << UF_PATH)) {
    path = c->url + u.field_data[UF_PATH].off;
    pl = c->url_len - u.field_data[UF_PATH].off;
    if (u.field_set & (1 << UF_FRAGMENT)) pl = u.field_data[UF_FRAGMENT].off - 1 - u.field_data[UF_PATH].off;
  }
  w += snprintf(w, cap, "%s %.*s HTTP/1.1\r\nHost: %s", http_method_str((enum http_method)c->parser.method),
                (int)pl, path, c->host);
  if (u.field_set & (1 << UF_PORT)) w += sprintf(w, ":%d", c->port);
  w += sprintf(w, "\r\n");
  for (size_t i = 0; i < c->n_fields; i++) {
    const struct field *f = &c->fields[i];
    if (hop_by_hop(c, c->head + f->no, f->nl)) continue;
    memcpy(w, c->head + f->no, f->nl);
    w += f->nl;
    *w++ = ':';
    *w++ = ' ';
    memcpy(w, c->head + f->vo, f->vl);
    w += f->vl;
    *w++ = '\r';
    *w++ = '\n';
  }
  if (c->chunked)
    w += sprintf(w, "Transfer-Encoding: chunked\r\n");
  else if (c->parser.content_length != ULLONG_MAX && c->parser.content_length > 0)
    w += sprintf(w, "Content-Length: %llu\r\n", (unsigned long long)c->parser.content_length);
  w += sprintf(w, "Connection: close\r\n\r\n");
  c->phase = PH_RELAY;
  c->status = 0;
  http_parser_init(&c->resp, HTTP_RESPONSE);
  c->resp.data = c;
  uv_timer_stop(&c->timer);
  uv_timer_start(&c->timer, on_idle, cfg.idle_timeout_ms, cfg.idle_timeout_ms);
  int bad = send_upstream(c, h, (size_t)(w - h));
  free(h);
  if (bad) {
    conn_close(c, "upstream_error");
    return;
  }
  /* The body bytes that came with the head, then the rest as it comes. */
  http_parser_pause(&c->parser, 0);
  c->settings.on_body = on_fwd_body;
  c->settings.on_message_complete = on_fwd_message_complete;
  if (c->parser.content_length == 0 || (!c->chunked && c->parser.content_length == ULLONG_MAX)) {
    c->message_done = 1;
  } else {
    http_parser_execute(&c->parser, &c->settings, c->head + c->head_used, c->head_len - c->head_used);
    enum http_errno e = HTTP_PARSER_ERRNO(&c->parser);
    if (e != HPE_OK && e != HPE_PAUSED) {
      conn_close(c, "bad_body");
      return;
    }
    if (!c->message_done) uv_read_start((uv_stream_t *)&c->client.tcp, alloc_side, forward_read);
  }
  uv_read_start((uv_stream_t *)&c->upstream.tcp, alloc_side, relay_read);
}
