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
  /* The bytes that followed the client's head may still be on their way;
   * once they are written nothing goes through the stream handles. */
  if (!c->client.writing) splice_watch(c);
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
    splice_watch(c);
}

void start_relay(conn_t *c) {
  head_t *h = c->head;
  c->head = NULL;
  if (splice_start(c) != 0) {
    free(h);
    reply_and_close(c, 503, "Service Unavailable", "proxy_internal_error", "descriptors exhausted",
                    "no_descriptors");
    return;
  }
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
