/* egressd: CONNECT tunnels, bytes relayed both ways (bulk.c takes over
 * bulk ones); see egressd.h. */
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

/* ---- tunnels ------------------------------------------------------------ */

void alloc_side(uv_handle_t *h, size_t suggested, uv_buf_t *buf) {
  (void)suggested;
  conn_t *c = h->data;
  side_t *s = (uv_tcp_t *)h == &c->client.tcp ? &c->client : &c->upstream;
  if (!s->buf) s->buf = relay_buffer_get();
  /* No buffer: libuv reports UV_ENOBUFS, which ends the connection. */
  *buf = uv_buf_init(s->buf, s->buf ? RELAY_BUF : 0);
}

void arm_idle(conn_t *c) { uv_timer_again(&c->timer); }

void on_idle(uv_timer_t *t) { conn_close(t->data, "idle_timeout"); }

/* A tunnel starts relayed through libuv (a read, a write that almost
 * always completes at once): cheapest for the short exchanges most tunnels
 * carry.  Once it has moved BULK_AFTER bytes it is handed to bulk.c,
 * whose large moves and extra descriptors pay off only on bulk transfers. */
enum { BULK_AFTER = 256 * 1024 };

static void relay_read(uv_stream_t *stream, ssize_t nread, const uv_buf_t *buf);

static void start_reading(conn_t *c) {
  if (!c->client.eof) uv_read_start((uv_stream_t *)&c->client.tcp, alloc_side, relay_read);
  if (!c->upstream.eof) uv_read_start((uv_stream_t *)&c->upstream.tcp, alloc_side, relay_read);
}

/* Between reads with nothing in flight either way, nothing goes through
 * the stream handles any more: the kernel can take over. */
static void maybe_bulk(conn_t *c) {
  if (cfg.relay == RELAY_COPY || c->up_bytes + c->down_bytes < BULK_AFTER || c->client.writing ||
      c->upstream.writing || c->client.eof || c->upstream.eof || c->client.tcp.write_queue_size ||
      c->upstream.tcp.write_queue_size)
    return;
  uv_read_stop((uv_stream_t *)&c->client.tcp);
  uv_read_stop((uv_stream_t *)&c->upstream.tcp);
  release_side_buffer(&c->client);
  release_side_buffer(&c->upstream);
  if (bulk_start(c) == 0)
    bulk_watch(c);
  else
    start_reading(c); /* descriptors short: libuv goes on relaying */
}

static void maybe_finish(conn_t *c) {
  if (c->client.eof && c->upstream.eof && !c->client.writing && !c->upstream.writing)
    conn_close(c, "completed");
}

static void on_shutdown(uv_shutdown_t *r, int status) {
  (void)status;
  conn_t *c = r->data;
  if (c->phase == PH_RELAY) maybe_finish(c);
}

/* Nothing queued for TO: its write side is shut at once, without the
 * poll for writability (two kernel calls) uv_shutdown goes through.  A
 * failure shows on the next read. */
static void shut_write(conn_t *c, side_t *to) {
  uv_os_fd_t fd;
  if (to->tcp.write_queue_size == 0 && uv_fileno((uv_handle_t *)&to->tcp, &fd) == 0) {
    (void)shutdown(fd, SHUT_WR);
    return;
  }
  uv_shutdown_t *sr = to == &c->client ? &c->sreq_c : &c->sreq_u;
  sr->data = c;
  if (uv_shutdown(sr, (uv_stream_t *)&to->tcp, on_shutdown) != 0) conn_close(c, "completed");
}

static void on_relay_written(uv_write_t *w, int status) {
  side_t *from = w->data;
  conn_t *c = from->tcp.data;
  from->writing = 0;
  release_side_buffer(from);
  if (c->phase != PH_RELAY) return;
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
  side_t *to = from == &c->client ? &c->upstream : &c->client;
  if (nread == 0) {
    release_side_buffer(from);
    return;
  }
  if (nread == UV_EOF) {
    /* Half-close passed on; the tunnel ends when both sides have.  The
     * other side has already ended and its last bytes are written (its
     * reads stop while a write is in flight): closing sends the last FIN
     * and nothing is left unread to turn it into a reset. */
    from->eof = 1;
    release_side_buffer(from);
    uv_read_stop(stream);
    if (to->eof && !c->client.tcp.write_queue_size && !c->upstream.tcp.write_queue_size) {
      conn_close(c, "completed");
      return;
    }
    shut_write(c, to);
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
  /* Most writes complete at once: the buffer is then free again and
   * reading goes on without a turn of the loop. */
  uv_buf_t b = uv_buf_init(from->buf, (unsigned)nread);
  int wrote = to->tcp.write_queue_size == 0 ? uv_try_write((uv_stream_t *)&to->tcp, &b, 1) : 0;
  if (wrote == nread) {
    maybe_bulk(c);
    return;
  }
  if (wrote < 0 && wrote != UV_EAGAIN) {
    conn_close(c, from == &c->client ? "upstream_error" : "client_error");
    return;
  }
  if (wrote > 0) b = uv_buf_init(from->buf + wrote, (unsigned)(nread - wrote));
  /* The rest waits in the reader's own buffer: reading resumes only when
   * it is written, which is the whole of the backpressure. */
  uv_read_stop(stream);
  from->writing = 1;
  from->wreq.data = from;
  if (uv_write(&from->wreq, (uv_stream_t *)&to->tcp, &b, 1, on_relay_written) != 0) {
    from->writing = 0;
    conn_close(c, from == &c->client ? "upstream_error" : "client_error");
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
  /* The bytes that followed the client's head may still be on their way. */
  if (!c->client.writing) start_reading(c);
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
    start_reading(c);
}

void start_relay(conn_t *c) {
  head_t *h = c->head;
  c->head = NULL;
  c->status = 200;
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
