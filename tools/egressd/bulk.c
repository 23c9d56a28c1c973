/* egressd: bulk tunnels, relayed outside libuv's stream handles; see
 * egressd.h.
 *
 * tunnel.c hands a tunnel over once it has carried enough to be worth it
 * (short exchanges are cheaper through libuv's reads and writes).  From then
 * on each direction moves its bytes one of two ways (--relay):
 *
 *   buffer (the default): read(2) as much as the socket holds, up to 4 MiB,
 *     into a buffer held only while those bytes wait, then write(2) them
 *     on.  Few, large moves, and the bytes the far side copies out were
 *     written a moment ago from egressd's cache: measured faster than
 *     splice on loopback (README, Performance).  At most --bulk-buffers such
 *     buffers exist at once, so slow readers cannot make egressd hold
 *     unbounded memory; past that a direction reads 64 KiB at a time.
 *   splice: socket -> pipe -> socket by splice(2) inside the kernel, never
 *     copied into egressd; two pipes from a small pool, taken at hand-over
 *     (with none to be had the tunnel is not handed over and libuv goes on
 *     relaying it).
 *
 * libuv cannot do either: the sockets are watched by poll handles on
 * duplicates of their descriptors while the stream handles stay idle
 * (their reads stopped, nothing in flight). */
#ifndef _GNU_SOURCE
#  define _GNU_SOURCE /* splice(2) */
#endif
#include "egressd.h"

#include <sys/socket.h>

typedef struct flow {
  int pipe[2]; /* splice */
  char *buf;   /* buffer: held while bytes wait in it */
  size_t cap, off;
  size_t queued; /* bytes read and not yet written (in the pipe or buf) */
  int eof, shut;
} flow_t;

struct bulk {
  uv_poll_t poll[2]; /* [0] the client's socket, [1] upstream's */
  int fd[2];
  flow_t flow[2];  /* [0] client -> upstream, [1] upstream -> client */
  int watching[2]; /* the events each poll handle was started with */
};

enum {
  PIPE_POOL_MAX = 64,
  PIPE_BYTES = 1024 * 1024,
  BULK_BUF = 4 * 1024 * 1024,
  /* A wake-up moves at most this much one way, so that one fast tunnel
   * cannot hold the loop while others wait. */
  PUMP_MAX = 16 * 1024 * 1024,
  CLIENT_SNDBUF = 1024 * 1024
};

/* ---- pipes (splice) ----------------------------------------------------- */

static int pipe_pool[PIPE_POOL_MAX][2];
static int pipes_pooled;

static int pipe_get(int p[2]) {
  if (pipes_pooled) {
    pipes_pooled--;
    p[0] = pipe_pool[pipes_pooled][0];
    p[1] = pipe_pool[pipes_pooled][1];
    return 0;
  }
  if (pipe2(p, O_NONBLOCK | O_CLOEXEC) != 0) return -1;
  /* Fewer, larger moves (1 MiB is the default ceiling for a pipe, and
   * past a user's share the kernel gives less); 64 KiB also works. */
  (void)fcntl(p[1], F_SETPIPE_SZ, PIPE_BYTES);
  return 0;
}

static void pipe_put(int p[2]) {
  if (pipes_pooled < PIPE_POOL_MAX) {
    pipe_pool[pipes_pooled][0] = p[0];
    pipe_pool[pipes_pooled][1] = p[1];
    pipes_pooled++;
  } else {
    close(p[0]);
    close(p[1]);
  }
  p[0] = p[1] = -1;
}

/* ---- buffers (buffer) ----------------------------------------------------- */

/* Large buffers are made on demand up to --bulk-buffers and kept for reuse
 * (the pages of a 4 MiB buffer are faulted in once, not per transfer). */
static char **big_pool;
static unsigned big_pooled, big_made;
static unsigned long long big_shortfalls; /* a direction about to read found none free */

static int flow_buffer_get(flow_t *f) {
  if (f->buf) return 0;
  if (big_pooled) {
    f->buf = big_pool[--big_pooled];
    f->cap = BULK_BUF;
  } else if (big_made < cfg.bulk_buffers) {
    if (!big_pool && !(big_pool = calloc(cfg.bulk_buffers, sizeof *big_pool))) return -1;
    if (!(f->buf = malloc(BULK_BUF))) return -1;
    big_made++;
    f->cap = BULK_BUF;
  } else {
    big_shortfalls++;
    if (!(f->buf = relay_buffer_get())) return -1;
    f->cap = RELAY_BUF;
  }
  return 0;
}

static void flow_buffer_put(flow_t *f) {
  if (!f->buf) return;
  if (f->cap == BULK_BUF)
    big_pool[big_pooled++] = f->buf;
  else
    relay_buffer_put(f->buf);
  f->buf = NULL;
}

static void flow_release(flow_t *f) {
  flow_buffer_put(f);
  if (f->pipe[0] < 0) return;
  if (f->queued == 0) {
    pipe_put(f->pipe);
  } else {
    /* Bytes left in a pipe belong to a tunnel that is gone. */
    close(f->pipe[0]);
    close(f->pipe[1]);
  }
  f->pipe[0] = f->pipe[1] = -1;
}

/* ---- moving bytes --------------------------------------------------------- */

static int would_block(void) { return errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR; }

/* Reads from SRC into the flow's pipe or buffer: > 0 bytes, 0 at the end,
 * -1 with errno. */
static ssize_t flow_read(flow_t *f, int src) {
  if (f->pipe[0] >= 0)
    return splice(src, NULL, f->pipe[1], NULL, PIPE_BYTES, SPLICE_F_MOVE | SPLICE_F_NONBLOCK);
  if (flow_buffer_get(f) != 0) {
    errno = ENOMEM;
    return -1;
  }
  f->off = 0;
  return read(src, f->buf, f->cap);
}

static ssize_t flow_write(flow_t *f, int dst) {
  if (f->pipe[0] >= 0)
    return splice(f->pipe[0], NULL, dst, NULL, f->queued, SPLICE_F_MOVE | SPLICE_F_NONBLOCK);
  ssize_t m = send(dst, f->buf + f->off, f->queued, MSG_NOSIGNAL);
  if (m > 0) f->off += (size_t)m;
  return m;
}

/* Moves what can be moved from SRC to DST without blocking.  Returns 0,
 * or -1 with *failed saying what failed: 0 src's socket, 1 dst's, 2 memory
 * for a buffer. */
static int pump(conn_t *c, flow_t *f, int src, int dst, uint64_t *count, int *failed) {
  for (size_t moved = 0; moved < PUMP_MAX;) {
    if (f->queued == 0 && !f->eof) {
      ssize_t n = flow_read(f, src);
      if (n < 0 && would_block()) break;
      if (n < 0) {
        *failed = errno == ENOMEM && !f->buf && f->pipe[0] < 0 ? 2 : 0;
        return -1;
      }
      if (n == 0)
        f->eof = 1;
      else {
        f->queued = (size_t)n;
        *count += (uint64_t)n;
        arm_idle(c);
      }
    }
    if (f->queued) {
      ssize_t m = flow_write(f, dst);
      if (m < 0 && would_block()) break;
      if (m < 0) {
        *failed = 1;
        return -1;
      }
      f->queued -= (size_t)m;
      moved += (size_t)m;
      if (f->queued) break; /* dst is full: wait until it can take more */
    }
    if (f->eof) break;
  }
  /* A buffer with nothing waiting in it goes back: an idle bulk tunnel
   * holds none. */
  if (f->queued == 0) flow_buffer_put(f);
  if (f->eof && f->queued == 0 && !f->shut) {
    f->shut = 1;
    (void)shutdown(dst, SHUT_WR);
  }
  return 0;
}

static void watch(conn_t *c);

static void on_ready(uv_poll_t *h, int status, int events) {
  conn_t *c = h->data;
  bulk_t *s = c->bulk;
  int side = h == &s->poll[0] ? 0 : 1;
  if (c->phase != PH_RELAY) return;
  if (status < 0) {
    conn_close(c, side == 0 ? "client_error" : "upstream_error");
    return;
  }
  static const char *const why[2][3] = { { "client_error", "upstream_error", "internal_error" },
                                         { "upstream_error", "client_error", "internal_error" } };
  int failed = 0;
  /* Readable: this side's bytes go to the other.  Writable: the other
   * side's waiting bytes come to this one. */
  if (events & (UV_READABLE | UV_DISCONNECT)) {
    if (pump(c, &s->flow[side], s->fd[side], s->fd[1 - side], side == 0 ? &c->up_bytes : &c->down_bytes,
             &failed) != 0) {
      conn_close(c, why[side][failed]);
      return;
    }
  }
  if (events & UV_WRITABLE) {
    if (pump(c, &s->flow[1 - side], s->fd[1 - side], s->fd[side], side == 1 ? &c->up_bytes : &c->down_bytes,
             &failed) != 0) {
      conn_close(c, why[1 - side][failed]);
      return;
    }
  }
  if (s->flow[0].shut && s->flow[1].shut) {
    conn_close(c, "completed");
    return;
  }
  watch(c);
}

/* uv_poll_start re-registers the descriptor with the kernel even when the
 * events are the same: it is called only when they change. */
static void watch(conn_t *c) {
  bulk_t *s = c->bulk;
  for (int i = 0; i < 2; i++) {
    int ev = 0;
    if (!s->flow[i].eof && s->flow[i].queued == 0) ev |= UV_READABLE;
    if (s->flow[1 - i].queued) ev |= UV_WRITABLE;
    if (ev == s->watching[i]) continue;
    s->watching[i] = ev;
    if (ev)
      uv_poll_start(&s->poll[i], ev, on_ready);
    else
      uv_poll_stop(&s->poll[i]);
  }
}

void bulk_watch(conn_t *c) { watch(c); }

int bulk_start(conn_t *c) {
  bulk_t *s = calloc(1, sizeof *s);
  if (!s) return -1;
  int fd0 = -1, fd1 = -1, pipes = 0, want_pipes = cfg.relay == RELAY_SPLICE ? 2 : 0;
  uv_os_fd_t a, b;
  for (int i = 0; i < 2; i++) s->flow[i].pipe[0] = s->flow[i].pipe[1] = -1;
  while (pipes < want_pipes && pipe_get(s->flow[pipes].pipe) == 0) pipes++;
  if (pipes < want_pipes || uv_fileno((uv_handle_t *)&c->client.tcp, &a) != 0 ||
      uv_fileno((uv_handle_t *)&c->upstream.tcp, &b) != 0 || (fd0 = fcntl(a, F_DUPFD_CLOEXEC, 0)) < 0 ||
      (fd1 = fcntl(b, F_DUPFD_CLOEXEC, 0)) < 0 || uv_poll_init(loop, &s->poll[0], fd0) != 0) {
    if (fd0 >= 0) close(fd0);
    if (fd1 >= 0) close(fd1);
    for (int i = 0; i < 2; i++) flow_release(&s->flow[i]);
    free(s);
    return -1;
  }
  if (uv_poll_init(loop, &s->poll[1], fd1) != 0) {
    for (int i = 0; i < 2; i++) flow_release(&s->flow[i]);
    /* poll[0] is the first member: its close callback frees s */
    uv_close((uv_handle_t *)&s->poll[0], (uv_close_cb)free);
    close(fd0);
    close(fd1);
    return -1;
  }
  s->fd[0] = fd0;
  s->fd[1] = fd1;
  if (cfg.relay == RELAY_SPLICE) {
    /* Toward the client, a fixed send buffer (the kernel doubles it:
     * 2 MiB) rather than one that grows to 4 MiB: the client is near (the
     * workloads the gateway serves), 2 MiB covers its round trip many
     * times over, and spliced bytes that wait less are still in cache when
     * the client copies them.  Measured: 1 GiB through a tunnel 0.49-0.54x
     * direct without it, 0.56-0.58x with it, in turns. */
    int sndbuf = CLIENT_SNDBUF;
    (void)setsockopt(fd0, SOL_SOCKET, SO_SNDBUF, &sndbuf, sizeof sndbuf);
  }
  for (int i = 0; i < 2; i++) s->poll[i].data = c;
  c->bulk = s;
  c->handles += 2;
  return 0;
}

unsigned bulk_buffers_made(void) { return big_made; }

unsigned long long bulk_buffer_shortfalls(void) { return big_shortfalls; }

const char *bulk_relay_name(const conn_t *c) {
  if (!c->bulk) return "copy";
  return c->bulk->flow[0].pipe[0] >= 0 ? "splice" : "buffer";
}

void bulk_stop(conn_t *c, uv_close_cb closed) {
  bulk_t *s = c->bulk;
  if (!s) return;
  for (int i = 0; i < 2; i++) {
    flow_release(&s->flow[i]);
    uv_close((uv_handle_t *)&s->poll[i], closed);
    /* uv_close has stopped the watcher: the duplicate can go now. */
    close(s->fd[i]);
  }
}
