/* egressd: bulk tunnels' bytes moved by splice(2), never copied through
 * egressd; see egressd.h.
 *
 * tunnel.c hands a tunnel over once it has carried enough to be worth it
 * (short exchanges are cheaper through libuv).  From then on each
 * direction's bytes go socket -> pipe -> socket inside the kernel.  The
 * tunnel takes its two pipes at hand-over, from a small pool that they
 * return to when it closes empty; when none can be had (descriptors
 * short) the tunnel is not handed over and libuv goes on relaying it.
 *
 * libuv has no splice: the sockets are watched by poll handles on
 * duplicates of their descriptors while the stream handles stay idle
 * (their reads stopped, nothing in flight). */
#ifndef _GNU_SOURCE
#  define _GNU_SOURCE /* splice(2) */
#endif
#include "egressd.h"

#include <sys/socket.h>

typedef struct flow {
  int pipe[2];
  size_t queued; /* bytes in the pipe, read and not yet written */
  int eof, shut;
} flow_t;

struct splicer {
  uv_poll_t poll[2]; /* [0] the client's socket, [1] upstream's */
  int fd[2];
  flow_t flow[2];  /* [0] client -> upstream, [1] upstream -> client */
  int watching[2]; /* the events each poll handle was started with */
};

enum { PIPE_POOL_MAX = 64, PIPE_BYTES = 1024 * 1024, ROUNDS = 16, CLIENT_SNDBUF = 1024 * 1024 };
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

static void flow_release(flow_t *f) {
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

/* Moves what can be moved from SRC to DST without blocking.  Returns 0,
 * or -1 with *failed naming the side whose socket failed (0 src, 1 dst). */
static int pump(conn_t *c, flow_t *f, int src, int dst, uint64_t *count, int *failed) {
  for (int round = 0; round < ROUNDS; round++) {
    if (f->queued == 0 && !f->eof) {
      ssize_t n = splice(src, NULL, f->pipe[1], NULL, PIPE_BYTES, SPLICE_F_MOVE | SPLICE_F_NONBLOCK);
      if (n < 0 && (errno == EAGAIN || errno == EINTR)) break;
      if (n < 0) {
        *failed = 0;
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
      ssize_t m = splice(f->pipe[0], NULL, dst, NULL, f->queued, SPLICE_F_MOVE | SPLICE_F_NONBLOCK);
      if (m < 0 && (errno == EAGAIN || errno == EINTR)) break;
      if (m < 0) {
        *failed = 1;
        return -1;
      }
      f->queued -= (size_t)m;
      if (f->queued) break; /* dst is full: wait until it can take more */
    }
    if (f->eof) break;
  }
  if (f->eof && f->queued == 0 && !f->shut) {
    f->shut = 1;
    (void)shutdown(dst, SHUT_WR);
  }
  return 0;
}

static void watch(conn_t *c);

static void on_ready(uv_poll_t *h, int status, int events) {
  conn_t *c = h->data;
  splicer_t *s = c->splice;
  int side = h == &s->poll[0] ? 0 : 1;
  if (c->phase != PH_RELAY) return;
  if (status < 0) {
    conn_close(c, side == 0 ? "client_error" : "upstream_error");
    return;
  }
  int failed = 0;
  /* Readable: this side's bytes go to the other.  Writable: the other
   * side's waiting bytes come to this one. */
  if (events & (UV_READABLE | UV_DISCONNECT)) {
    if (pump(c, &s->flow[side], s->fd[side], s->fd[1 - side], side == 0 ? &c->up_bytes : &c->down_bytes,
             &failed) != 0) {
      int who = failed ? 1 - side : side;
      conn_close(c, who == 0 ? "client_error" : "upstream_error");
      return;
    }
  }
  if (events & UV_WRITABLE) {
    if (pump(c, &s->flow[1 - side], s->fd[1 - side], s->fd[side], side == 1 ? &c->up_bytes : &c->down_bytes,
             &failed) != 0) {
      int who = failed ? side : 1 - side;
      conn_close(c, who == 0 ? "client_error" : "upstream_error");
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
  splicer_t *s = c->splice;
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

void splice_watch(conn_t *c) { watch(c); }

int splice_start(conn_t *c) {
  splicer_t *s = calloc(1, sizeof *s);
  if (!s) return -1;
  int fd0 = -1, fd1 = -1, pipes = 0;
  uv_os_fd_t a, b;
  for (int i = 0; i < 2; i++) s->flow[i].pipe[0] = s->flow[i].pipe[1] = -1;
  while (pipes < 2 && pipe_get(s->flow[pipes].pipe) == 0) pipes++;
  if (pipes < 2 || uv_fileno((uv_handle_t *)&c->client.tcp, &a) != 0 ||
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
  /* Toward the client, a fixed send buffer (the kernel doubles it: 2 MiB)
   * rather than one that grows to 4 MiB: the client is near (the workloads
   * the gateway serves), 2 MiB covers its round trip many times over, and
   * bytes that wait less are still in cache when the client copies them.
   * Measured: 1 GiB through a tunnel 0.49-0.54x direct without it,
   * 0.56-0.58x with it, in turns; 2 MiB asked (4 MiB) gave nothing. */
  int sndbuf = CLIENT_SNDBUF;
  (void)setsockopt(fd0, SOL_SOCKET, SO_SNDBUF, &sndbuf, sizeof sndbuf);
  for (int i = 0; i < 2; i++) s->poll[i].data = c;
  c->splice = s;
  c->handles += 2;
  return 0;
}

void splice_stop(conn_t *c, uv_close_cb closed) {
  splicer_t *s = c->splice;
  if (!s) return;
  for (int i = 0; i < 2; i++) {
    flow_release(&s->flow[i]);
    uv_close((uv_handle_t *)&s->poll[i], closed);
    /* uv_close has stopped the watcher: the duplicate can go now. */
    close(s->fd[i]);
  }
}
