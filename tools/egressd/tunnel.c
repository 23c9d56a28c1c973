/* egressd: CONNECT tunnels, bytes relayed both ways; see egressd.h. */
#include "egressd.h"

/* ---- relay --------------------------------------------------------------- */

static side_t *peer_of(conn_t *c, side_t *s) { return s == &c->client ? &c->upstream : &c->client; }
static conn_t *conn_of(side_t *s) { return s->tcp.data; }

void alloc_side(uv_handle_t *h, size_t suggested, uv_buf_t *buf) {
  (void)suggested;
  conn_t *c = h->data;
  side_t *s = (uv_tcp_t *)h == &c->client.tcp ? &c->client : &c->upstream;
  *buf = uv_buf_init(s->buf, sizeof s->buf);
}

static void maybe_finish(conn_t *c) {
  if (c->client.eof && c->upstream.eof && !c->client.writing && !c->upstream.writing)
    conn_close(c, "completed");
}

void arm_idle(conn_t *c) { uv_timer_again(&c->timer); }

void on_idle(uv_timer_t *t) { conn_close(t->data, "idle_timeout"); }

static void on_shutdown(uv_shutdown_t *r, int status) {
  (void)status;
  maybe_finish(r->data);
}

/* The buffer written is the reader's own: reading resumes only when the
 * write is done, which is the whole of the backpressure. */
static void on_relay_written(uv_write_t *w, int status) {
  side_t *from = w->data;
  conn_t *c = conn_of(from);
  from->writing = 0;
  if (c->phase == PH_CLOSING) return;
  if (status != 0) {
    conn_close(c, from == &c->client ? "upstream_error" : "client_error");
    return;
  }
  uv_read_start((uv_stream_t *)&from->tcp, alloc_side, relay_read);
}

static int on_resp_head(http_parser *p) {
  conn_t *c = p->data;
  c->status = (int)p->status_code;
  return 1;
}

void relay_read(uv_stream_t *stream, ssize_t nread, const uv_buf_t *buf) {
  (void)buf;
  conn_t *c = stream->data;
  side_t *from = (uv_tcp_t *)stream == &c->client.tcp ? &c->client : &c->upstream;
  side_t *to = peer_of(c, from);
  if (nread == 0) return;
  if (nread == UV_EOF && c->forward) {
    /* Upstream was asked to close after its response: that is the end. */
    if (from == &c->upstream)
      conn_close(c, "completed");
    else
      conn_close(c, c->message_done ? "completed" : "client_closed");
    return;
  }
  if (nread == UV_EOF) {
    from->eof = 1;
    uv_read_stop(stream);
    uv_shutdown_t *sr = to == &c->client ? &c->sreq_c : &c->sreq_u;
    sr->data = c;
    if (uv_shutdown(sr, (uv_stream_t *)&to->tcp, on_shutdown) != 0) conn_close(c, "completed");
    return;
  }
  if (nread < 0) {
    conn_close(c, from == &c->client ? "client_error" : "upstream_error");
    return;
  }
  arm_idle(c);
  if (c->forward && !c->status) {
    static http_parser_settings resp_settings;
    resp_settings.on_headers_complete = on_resp_head;
    http_parser_execute(&c->resp, &resp_settings, from->buf, (size_t)nread);
  }
  if (from == &c->client)
    c->up_bytes += (uint64_t)nread;
  else
    c->down_bytes += (uint64_t)nread;
  uv_read_stop(stream);
  from->writing = 1;
  from->wreq.data = from;
  uv_buf_t b = uv_buf_init(from->buf, (unsigned)nread);
  if (uv_write(&from->wreq, (uv_stream_t *)&to->tcp, &b, 1, on_relay_written) != 0) {
    from->writing = 0;
    conn_close(c, "upstream_error");
  }
}

static void on_established_written(uv_write_t *w, int status) {
  conn_t *c = w->data;
  if (c->phase == PH_CLOSING) return;
  if (status != 0) {
    conn_close(c, "client_error");
    return;
  }
  c->phase = PH_RELAY;
  uv_timer_stop(&c->timer);
  uv_timer_start(&c->timer, on_idle, cfg.idle_timeout_ms, cfg.idle_timeout_ms);
  /* The client's buffer may still carry the bytes that followed its head. */
  if (!c->client.writing) uv_read_start((uv_stream_t *)&c->client.tcp, alloc_side, relay_read);
  uv_read_start((uv_stream_t *)&c->upstream.tcp, alloc_side, relay_read);
}

static void on_leftover_written(uv_write_t *w, int status) {
  conn_t *c = w->data;
  c->client.writing = 0;
  if (c->phase == PH_CLOSING) return;
  if (status != 0)
    conn_close(c, "upstream_error");
  else if (c->phase == PH_RELAY)
    uv_read_start((uv_stream_t *)&c->client.tcp, alloc_side, relay_read);
}

void start_relay(conn_t *c) {
  c->status = 200;
  /* Bytes the client sent after the request head go first, in order. */
  if (c->head_used < c->head_len) {
    size_t n = c->head_len - c->head_used;
    if (n > sizeof c->client.buf) n = sizeof c->client.buf;
    memcpy(c->client.buf, c->head + c->head_used, n);
    c->up_bytes += n;
    c->client.writing = 1;
    c->client.wreq.data = c;
    uv_buf_t lb = uv_buf_init(c->client.buf, (unsigned)n);
    if (uv_write(&c->client.wreq, (uv_stream_t *)&c->upstream.tcp, &lb, 1, on_leftover_written) != 0) {
      conn_close(c, "upstream_error");
      return;
    }
  }
  static const char ok[] = "HTTP/1.1 200 Connection established\r\n\r\n";
  uv_buf_t b = uv_buf_init((char *)ok, sizeof ok - 1);
  c->reply_req.data = c;
  if (uv_write(&c->reply_req, (uv_stream_t *)&c->client.tcp, &b, 1, on_established_written) != 0)
    conn_close(c, "client_error");
}
