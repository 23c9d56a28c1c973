/* egressd: absolute-form HTTP/1.1 forwarding; see egressd.h.
 *
 * One exchange at a time on a client connection: the request head is sent
 * upstream in origin-form, the body follows as http_parser frames it; the
 * response head is written anew for the client and its body relayed as it
 * comes, parsed only to find its end.  When both ends asked to keep the connection, the next request
 * is read (it may already be here: pipelined bytes wait in order) and gets
 * its own check and its own events; the upstream connection serves it only
 * if that check vetted the address it is connected to. */
#include "egressd.h"

typedef struct out_write {
  uv_write_t w;
  char data[];
} out_write_t;

static void response_read(uv_stream_t *s, ssize_t nread, const uv_buf_t *buf);

/* ---- the request, to upstream ---------------------------------------------- */

static void on_out_written(uv_write_t *w, int status) {
  conn_t *c = w->handle->data;
  free(w);
  if (c->phase != PH_RELAY) return;
  if (status != 0) {
    conn_close(c, "upstream_error");
    return;
  }
  if (c->upstream.tcp.write_queue_size < UPSTREAM_QUEUE_MAX && !c->client_eof &&
      c->pipelined_len < cfg.header_bytes)
    client_reading(c, 1);
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
  if (c->upstream.tcp.write_queue_size >= UPSTREAM_QUEUE_MAX) client_reading(c, 0);
  return 0;
}

static int on_body(http_parser *p, const char *at, size_t len) {
  conn_t *c = p->data;
  if (c->phase != PH_RELAY) return 0;
  if (c->chunked) {
    char size[32];
    int n = snprintf(size, sizeof size, "%zx\r\n", len);
    if (send_upstream(c, size, (size_t)n) || send_upstream(c, at, len) || send_upstream(c, "\r\n", 2))
      return -1;
    return 0;
  }
  return send_upstream(c, at, len) ? -1 : 0;
}

static int on_message_complete(http_parser *p) {
  conn_t *c = p->data;
  if (c->phase != PH_RELAY) return 0;
  if (c->chunked && send_upstream(c, "0\r\n\r\n", 5)) return -1;
  c->message_done = 1;
  /* What follows is the next request, kept until this exchange is over. */
  http_parser_pause(p, 1);
  return 0;
}

static const http_parser_settings body_settings = {
  .on_body = on_body,
  .on_message_complete = on_message_complete,
};

/* Parses body bytes; what follows the request's end is kept. */
static int take_body(conn_t *c, const char *data, size_t len) {
  size_t took = http_parser_execute(&c->parser, &body_settings, data, len);
  enum http_errno e = HTTP_PARSER_ERRNO(&c->parser);
  if (e != HPE_OK && e != HPE_PAUSED) return -1;
  if (c->phase != PH_RELAY) return -1;
  if (c->message_done) return keep_pipelined(c, data + took, len - took);
  return 0;
}

/* The request body could not be taken.  A body the parser refused is the
 * client's error: answered 400 while no response has gone to the client
 * (upstream, which has part of the request, is dropped); otherwise, or
 * when egressd itself failed, the connection ends. */
static void body_failed(conn_t *c) {
  if (c->phase != PH_RELAY) return;
  enum http_errno e = HTTP_PARSER_ERRNO(&c->parser);
  if (!c->response_sent && e > HPE_CB_chunk_complete && e != HPE_PAUSED)
    reply_and_close(c, 400, "Bad Request", "http_request_error", "malformed request body", "bad_body");
  else
    conn_close(c, "bad_body");
}

void forward_body_read(conn_t *c, ssize_t nread, const uv_buf_t *buf) {
  if (nread == 0) {
    release_side_buffer(&c->client);
    return;
  }
  if (nread < 0) {
    conn_close(c, "client_closed");
    return;
  }
  arm_idle(c);
  int bad = take_body(c, buf->base, (size_t)nread);
  release_side_buffer(&c->client);
  if (bad) body_failed(c);
}

/* ---- the response, to the client ------------------------------------------ */

/* The response's head is read whole and written anew (hop-by-hop fields
 * removed, Via added, Connection: close when this is the connection's last
 * exchange); its body is relayed as it comes, parsed only for its end. */

/* A chunked response body is written anew, chunk by chunk as http_parser
 * read it (extensions and trailers dropped): http_parser lets loose framing
 * through (chunk data not followed by CR LF, a bare CR), which the client
 * could read otherwise, and egressd would then have relayed a response
 * boundary the client does not see.  The chunks parsed from one read are
 * written here, then to the client. */
static char *reframed;
static size_t reframed_len, reframed_cap;

static int reframe_put(const char *data, size_t len) {
  if (reframed_len + len > reframed_cap) {
    size_t cap = reframed_cap ? reframed_cap : RELAY_BUF + 256;
    while (cap < reframed_len + len) cap *= 2;
    char *r = realloc(reframed, cap);
    if (!r) return -1;
    reframed = r;
    reframed_cap = cap;
  }
  memcpy(reframed + reframed_len, data, len);
  reframed_len += len;
  return 0;
}

static int on_response_body(http_parser *p, const char *at, size_t len) {
  conn_t *c = p->data;
  if (!c->response_chunked) return 0;
  char size[32];
  int n = snprintf(size, sizeof size, "%zx\r\n", len);
  return reframe_put(size, (size_t)n) || reframe_put(at, len) || reframe_put("\r\n", 2) ? -1 : 0;
}

static int on_response_complete(http_parser *p) {
  conn_t *c = p->data;
  if (c->response_chunked && reframe_put("0\r\n\r\n", 5)) return -1;
  c->response_done = 1;
  if (!http_should_keep_alive(p)) c->upstream_spoiled = 1;
  http_parser_pause(p, 1);
  return 0;
}

static const http_parser_settings response_settings = {
  .on_body = on_response_body,
  .on_message_complete = on_response_complete,
};

/* The upstream connection is read from its first response on, also while
 * it waits, kept alive, for the next request: stopping and starting reads
 * costs the kernel calls that a kept-alive exchange is meant to save. */
static void upstream_read(uv_stream_t *s, ssize_t nread, const uv_buf_t *buf) {
  conn_t *c = s->data;
  if (!c->upstream_idle) {
    response_read(s, nread, buf);
    return;
  }
  release_side_buffer(&c->upstream);
  /* Anything from an idle upstream (its close, or bytes nobody asked
   * for) ends it; the client connection goes on. */
  if (nread != 0) drop_upstream(c);
}

static void upstream_reading(conn_t *c, int on) {
  if (c->upstream_reading == on || !c->upstream.open) return;
  c->upstream_reading = on;
  if (on)
    uv_read_start((uv_stream_t *)&c->upstream.tcp, alloc_side, upstream_read);
  else
    uv_read_stop((uv_stream_t *)&c->upstream.tcp);
}

/* The exchange is over (request sent, response relayed): the close event,
 * then the next request on the same connection, or the end. */
static void exchange_done(conn_t *c) {
  c->exchanges++;
  int again = c->keep_alive && c->message_done && !c->client_close && !draining &&
              !(c->client_eof && !c->pipelined_len);
  if (!again) {
    conn_close(c, "completed");
    return;
  }
  c->ended = "completed";
  emit_close_event(c);
  if (c->upstream.open && !c->upstream.eof && !c->upstream_spoiled) {
    c->upstream_idle = 1;
    upstream_reading(c, 1);
  } else {
    drop_upstream(c);
  }
  read_next_head(c);
}

/* Upstream failed the exchange: 502 while no final response has gone to
 * the client (1xx ones may have), else the client connection ends. */
static void upstream_failed_as(conn_t *c, const char *ended, const char *error, const char *details) {
  if (!c->response_sent)
    reply_and_close(c, 502, "Bad Gateway", error, details, ended);
  else
    conn_close(c, ended);
}

static void upstream_failed(conn_t *c, const char *ended) {
  upstream_failed_as(c, ended, "connection_terminated", NULL);
}

/* After each write to the client: the exchange ends when the response is
 * complete and the last of its writes is done. */
static void after_client_write(conn_t *c, int status) {
  c->client_writes--;
  if (c->phase != PH_RELAY) return;
  if (status != 0) {
    conn_close(c, "client_error");
    return;
  }
  if (c->client_writes) return;
  if (c->response_done)
    exchange_done(c);
  else if (c->upstream.eof)
    conn_close(c, "upstream_closed");
  else
    upstream_reading(c, 1);
}

static void on_body_written(uv_write_t *w, int status) {
  conn_t *c = w->data;
  c->upstream.writing = 0;
  release_side_buffer(&c->upstream);
  after_client_write(c, status);
}

static void on_head_written(uv_write_t *w, int status) {
  conn_t *c = w->handle->data;
  free(w);
  after_client_write(c, status);
}

/* Writes at once what the client takes (in order: only when nothing
 * waits before it); the rest is queued.  Returns 0, or -1. */
static int write_client(conn_t *c, const char *head, size_t hl, const char *body, size_t bl) {
  uv_buf_t parts[2] = { uv_buf_init((char *)head, (unsigned)hl), uv_buf_init((char *)body, (unsigned)bl) };
  int n = bl ? 2 : 1, wrote = 0;
  c->down_bytes += hl + bl;
  if (c->client.tcp.write_queue_size == 0) {
    wrote = uv_try_write((uv_stream_t *)&c->client.tcp, parts, (unsigned)n);
    if (wrote == (int)(hl + bl)) return 0;
    if (wrote < 0 && wrote != UV_EAGAIN) return -1;
    if (wrote < 0) wrote = 0;
  }
  size_t rest = hl + bl - (size_t)wrote;
  out_write_t *o = malloc(sizeof *o + rest);
  if (!o) return -1;
  size_t skip = (size_t)wrote, k = 0;
  for (int i = 0; i < n; i++) {
    size_t len = parts[i].len, from = skip < len ? skip : len;
    skip -= from;
    memcpy(o->data + k, parts[i].base + from, len - from);
    k += len - from;
  }
  uv_buf_t b = uv_buf_init(o->data, (unsigned)rest);
  if (uv_write(&o->w, (uv_stream_t *)&c->client.tcp, &b, 1, on_head_written) != 0) {
    free(o);
    return -1;
  }
  c->client_writes++;
  return 0;
}

enum { INTERIMS_MAX = 8 };

/* Response head bytes; returns -1 when the connection was closed. */
static int response_head_bytes(conn_t *c, const char *data, size_t n) {
  head_t *h = head_reserve(c->rhead, n);
  if (!h || n > h->cap - h->len) {
    upstream_failed(c, "bad_response");
    return -1;
  }
  c->rhead = h;
  memcpy(h->buf + h->len, data, n);
  head_status_t st = head_feed(h, n);
  if (st == HEAD_MORE) return 0;
  if (st != HEAD_DONE || !head_response_ok(h)) {
    upstream_failed(c, "bad_response");
    return -1;
  }
  unsigned code = h->parser.status_code;
  /* RFC 9110 15: a status is three digits, 100 to 599. */
  if (code < 100 || code > 599) {
    upstream_failed_as(c, "bad_response", "http_protocol_error", "invalid status code");
    return -1;
  }
  /* egressd does not forward Upgrade: a switch of protocols is one it can
   * neither relay as HTTP nor honour. */
  if (code == 101) {
    upstream_failed_as(c, "bad_response", "http_upgrade_failed", "upstream switched protocols");
    return -1;
  }
  int interim = code < 200;
  if (interim && ++c->interims > INTERIMS_MAX) {
    upstream_failed_as(c, "bad_response", "http_protocol_error", "too many interim responses");
    return -1;
  }
  /* A 1xx, 204 or 304 ends at its head (request.c).  One that announces
   * a body anyway (a 304 may give the length of the body it stands for)
   * may be followed by one: its connection is not used again. */
  int framing = head_status_bodiless(code) ? head_response_framing(h) : 0;
  if (framing && !(code == 304 && framing == 1)) c->upstream_spoiled = 1;
  if (!interim) {
    c->status = (int)code;
    /* ... and a client that believed the field would read on: told the
     * connection ends there. */
    c->client_close =
        !(c->keep_alive && head_response_self_delimited(h)) || draining || (framing && code == 204);
    c->response_chunked = (h->parser.flags & F_CHUNKED) && !h->skip_body && !head_status_bodiless(code);
  }
  size_t cap = head_render_size(h);
  char *out = malloc(cap);
  size_t hl = out ? head_render_response(h, interim ? 0 : c->client_close, out, cap) : 0;
  const char *rest = h->buf + h->used;
  size_t rest_len = h->len - h->used, body = 0;
  int bad = !hl;
  if (!bad && interim) {
    /* 100 Continue and the like are passed on; the final head follows,
     * perhaps in the bytes already read. */
    bad = write_client(c, out, hl, NULL, 0) != 0 ||
          !(c->rhead = head_new_response(cfg.header_bytes, RELAY_BUF, c->head_request));
    free(out);
    if (bad) {
      c->rhead = NULL;
      free(h);
      conn_close(c, "internal_error");
      return -1;
    }
    int r = rest_len ? response_head_bytes(c, rest, rest_len) : 0;
    free(h);
    return r;
  }
  c->rhead = NULL;
  if (!bad) {
    /* The final head: the body bytes that came with it go out with it. */
    c->resp = h->parser;
    c->resp.data = c;
    http_parser_pause(&c->resp, 0);
    reframed_len = 0;
    size_t took = http_parser_execute(&c->resp, &response_settings, rest - 1, rest_len + 1);
    enum http_errno e = HTTP_PARSER_ERRNO(&c->resp);
    if (e != HPE_OK && e != HPE_PAUSED) {
      free(out);
      free(h);
      upstream_failed_as(c, "bad_response", "http_protocol_error", "malformed response body");
      return -1;
    }
    body = took ? took - 1 : 0;
    if (rest_len > body) c->upstream_spoiled = 1;
    c->response_sent = 1;
    if (c->response_chunked)
      bad = write_client(c, out, hl, reframed, reframed_len) != 0;
    else
      bad = write_client(c, out, hl, rest, body) != 0;
  }
  free(out);
  free(h);
  if (bad) {
    conn_close(c, "internal_error");
    return -1;
  }
  return 0;
}

static void response_read(uv_stream_t *s, ssize_t nread, const uv_buf_t *buf) {
  conn_t *c = s->data;
  if (nread == 0) {
    release_side_buffer(&c->upstream);
    return;
  }
  if (nread < 0) {
    release_side_buffer(&c->upstream);
    c->upstream.eof = 1;
    c->upstream_spoiled = 1;
    /* A body that runs to the connection's end ends here. */
    reframed_len = 0;
    if (nread == UV_EOF && !c->rhead) http_parser_execute(&c->resp, &response_settings, NULL, 0);
    if (c->response_done) {
      if (!c->client_writes) exchange_done(c);
    } else {
      upstream_failed(c, nread == UV_EOF ? "upstream_closed" : "upstream_error");
    }
    return;
  }
  arm_idle(c);
  if (c->rhead) {
    int closed = response_head_bytes(c, buf->base, (size_t)nread);
    release_side_buffer(&c->upstream);
    if (!closed && c->response_done && !c->client_writes) exchange_done(c);
    return;
  }
  reframed_len = 0;
  size_t took = http_parser_execute(&c->resp, &response_settings, buf->base, (size_t)nread);
  enum http_errno e = HTTP_PARSER_ERRNO(&c->resp);
  if (e != HPE_OK && e != HPE_PAUSED) {
    release_side_buffer(&c->upstream);
    upstream_failed_as(c, "bad_response", "http_protocol_error", "malformed response body");
    return;
  }
  /* Bytes past the response's end were not asked for: dropped, and the
   * connection is not used again. */
  if ((size_t)nread > took) c->upstream_spoiled = 1;
  if (c->response_chunked) {
    /* The chunks written anew go out as the head does; upstream is read
     * again once the client has taken them. */
    release_side_buffer(&c->upstream);
    if (reframed_len && write_client(c, reframed, reframed_len, NULL, 0) != 0) {
      conn_close(c, "client_error");
      return;
    }
    if (c->client_writes)
      upstream_reading(c, 0);
    else if (c->response_done)
      exchange_done(c);
    return;
  }
  c->down_bytes += took;
  c->response_sent = 1;
  uv_buf_t b = uv_buf_init(buf->base, (unsigned)took);
  int wrote = c->client.tcp.write_queue_size == 0 ? uv_try_write((uv_stream_t *)&c->client.tcp, &b, 1) : 0;
  if (wrote == (int)took) {
    release_side_buffer(&c->upstream);
    if (c->response_done && !c->client_writes) exchange_done(c);
    return;
  }
  if (wrote < 0 && wrote != UV_EAGAIN) {
    conn_close(c, "client_error");
    return;
  }
  if (wrote > 0) b = uv_buf_init(buf->base + wrote, (unsigned)(took - (size_t)wrote));
  /* The rest waits in the read buffer; upstream is read again once the
   * client has taken it. */
  upstream_reading(c, 0);
  c->upstream.writing = 1;
  c->upstream.wreq.data = c;
  c->client_writes++;
  if (uv_write(&c->upstream.wreq, (uv_stream_t *)&c->client.tcp, &b, 1, on_body_written) != 0) {
    c->upstream.writing = 0;
    c->client_writes--;
    conn_close(c, "client_error");
  }
}

/* ---- one exchange ----------------------------------------------------------- */

/* Sends the request head in origin-form, then the body as framed by the
 * parser, and relays the response. */
void start_forward(conn_t *c) {
  head_t *h = c->head;
  const target_t *t = &h->target;
  size_t cap = head_render_size(h);
  char *out = malloc(cap);
  size_t n = out ? head_render(h, t, out, cap) : 0;
  c->phase = PH_RELAY;
  c->status = 0;
  c->message_done = c->response_done = c->response_sent = c->client_close = c->interims = 0;
  c->response_chunked = 0;
  free(c->rhead);
  c->rhead = head_new_response(cfg.header_bytes, RELAY_BUF, c->head_request);
  uv_timer_stop(&c->timer);
  uv_timer_start(&c->timer, on_idle, cfg.idle_timeout_ms, cfg.idle_timeout_ms);
  if (!n || !c->rhead || send_upstream(c, out, n) != 0) {
    free(out);
    conn_close(c, "internal_error");
    return;
  }
  free(out);
  /* The body bytes that came with the head, then the rest as it comes. */
  c->parser = h->parser;
  c->parser.data = c;
  http_parser_pause(&c->parser, 0);
  const char *rest = h->buf + h->used;
  size_t rest_len = h->len - h->used;
  int no_body = !c->chunked && (t->content_length == 0 || t->content_length == ULLONG_MAX);
  /* What the client sent while the request was checked and connected
   * came after what came with the head. */
  char *early = c->pipelined;
  size_t early_len = c->pipelined_len;
  c->pipelined = NULL;
  c->pipelined_len = 0;
  int bad;
  if (no_body) {
    c->message_done = 1;
    bad = keep_pipelined(c, rest, rest_len);
  } else {
    /* The paused parser has yet to take the head's last byte. */
    bad = take_body(c, rest - 1, rest_len + 1);
  }
  if (!bad && early_len)
    bad = c->message_done ? keep_pipelined(c, early, early_len) : take_body(c, early, early_len);
  free(early);
  c->head = NULL;
  free(h);
  if (bad) {
    body_failed(c);
    return;
  }
  upstream_reading(c, 1);
  /* Reading may have paused while the head limit's worth waited. */
  if (!c->message_done && !c->client_eof) client_reading(c, 1);
}
