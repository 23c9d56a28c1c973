/* egressd: CONNECT tunnels, bytes relayed both ways; see egressd.h. */
#include "egressd.h"

/* ---- relay buffers -------------------------------------------------------- */

/* A side holds a buffer from the moment libuv has bytes for it until they
 * are written on; the buffers are kept for reuse, a few, so that a busy
 * gateway does not go to malloc for every read and an idle one holds
 * nothing per connection. */
enum { POOL_MAX = 64 };
static char *pool[POOL_MAX];
static int pooled;

char *relay_buffer_get(void) { return pooled ? pool[--pooled] : malloc(RELAY_BUF); }

void relay_buffer_put(char *buf) {
  if (pooled < POOL_MAX)
    pool[pooled++] = buf;
  else
    free(buf);
}

void release_side_buffer(side_t *s) {
  if (!s->buf || s->writing) return;
  relay_buffer_put(s->buf);
  s->buf = NULL;
}

/* ---- relay --------------------------------------------------------------- */

static void relay_read(uv_stream_t *stream, ssize_t nread, const uv_buf_t *buf);

static side_t *peer_of(conn_t *c, side_t *s) { return s == &c->client ? &c->upstream : &c->client; }

void alloc_side(uv_handle_t *h, size_t suggested, uv_buf_t *buf) {
  (void)suggested;
  conn_t *c = h->data;
  side_t *s = (uv_tcp_t *)h == &c->client.tcp ? &c->client : &c->upstream;
  if (!s->buf) s->buf = relay_buffer_get();
  /* No buffer: libuv reports UV_ENOBUFS, which ends the connection. */
  *buf = uv_buf_init(s->buf, s->buf ? RELAY_BUF : 0);
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
  conn_t *c = from->tcp.data;
  from->writing = 0;
  release_side_buffer(from);
  if (c->phase == PH_CLOSING) return;
  if (status != 0) {
    conn_close(c, from == &c->client ? "upstream_error" : "client_error");
    return;
  }
  uv_read_start((uv_stream_t *)&from->tcp, alloc_side, relay_read);
}

static void relay_read(uv_stream_t *stream, ssize_t nread, const uv_buf_t *buf) {
  (void)buf;
  conn_t *c = stream->data;
  side_t *from = (uv_tcp_t *)stream == &c->client.tcp ? &c->client : &c->upstream;
  side_t *to = peer_of(c, from);
  if (nread == 0) {
    release_side_buffer(from);
    return;
  }
  if (nread == UV_EOF) {
    from->eof = 1;
    release_side_buffer(from);
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

typedef struct leftover {
  uv_write_t w;
  conn_t *c;
  char data[];
} leftover_t;

static void on_leftover_written(uv_write_t *w, int status) {
  leftover_t *l = (leftover_t *)w;
  conn_t *c = l->c;
  free(l);
  c->client.writing = 0;
  if (c->phase == PH_CLOSING) return;
  if (status != 0)
    conn_close(c, "upstream_error");
  else if (c->phase == PH_RELAY)
    uv_read_start((uv_stream_t *)&c->client.tcp, alloc_side, relay_read);
}

void start_relay(conn_t *c) {
  c->status = 200;
  head_t *h = c->head;
  c->head = NULL;
  /* Bytes the client sent after the request head go first, in order; the
   * client is read again once they are written. */
  if (h->used < h->len) {
    size_t n = h->len - h->used;
    leftover_t *l = malloc(sizeof *l + n);
    if (!l) {
      free(h);
      conn_close(c, "internal_error");
      return;
    }
    l->c = c;
    memcpy(l->data, h->buf + h->used, n);
    c->up_bytes += n;
    c->client.writing = 1;
    uv_buf_t lb = uv_buf_init(l->data, (unsigned)n);
    if (uv_write(&l->w, (uv_stream_t *)&c->upstream.tcp, &lb, 1, on_leftover_written) != 0) {
      free(l);
      free(h);
      c->client.writing = 0;
      conn_close(c, "upstream_error");
      return;
    }
  }
  free(h);
  static const char ok[] = "HTTP/1.1 200 Connection established\r\n\r\n";
  uv_buf_t b = uv_buf_init((char *)ok, sizeof ok - 1);
  c->upstream.wreq.data = c;
  if (uv_write(&c->upstream.wreq, (uv_stream_t *)&c->client.tcp, &b, 1, on_established_written) != 0)
    conn_close(c, "client_error");
}
