/* egressd: accepting clients within the limits, reading request heads,
 * the check, and connecting to the vetted addresses; see egressd.h. */
#include "egressd.h"

#include <poll.h>
#include <sys/socket.h>

static void connect_abandon(conn_t *c, uv_close_cb closed);

/* A decision done with goes back to the check loop, which fills it again
 * for a later check instead of allocating one; once the adapter is closed
 * (checker_uv NULL) it is freed. */
static void decision_done(egress_decision_t *d) {
  egress_loop_recycle(checker_uv ? egress_uv_driver(checker_uv) : NULL, d);
}

/* ---- connection lifetime ------------------------------------------------- */

static void on_handle_closed(uv_handle_t *h) {
  conn_t *c = h->data;
  if (--c->handles > 0) return;
  decision_done(c->decision);
  release_side_buffer(&c->client);
  release_side_buffer(&c->upstream);
  limits_release(c);
  if (c->prev)
    c->prev->next = c->next;
  else
    conns = c->next;
  if (c->next) c->next->prev = c->prev;
  free(c->head);
  free(c->rhead);
  free(c->pipelined);
  free(c->addrs);
  free(c->bulk);
  free(c);
  active--;
  if (draining && active == 0) uv_stop(loop);
}

void conn_close(conn_t *c, const char *ended) {
  if (c->phase == PH_CLOSING) return;
  if (!c->ended) c->ended = ended;
  emit_close_event(c);
  c->phase = PH_CLOSING;
  if (c->pending) {
    /* The callback runs with ECANCELLED and sees PH_CLOSING. */
    egress_pending_t *p = c->pending;
    c->pending = NULL;
    (void)egress_check_cancel(p);
  }
  bulk_stop(c, on_handle_closed);
  connect_abandon(c, on_handle_closed);
  uv_close((uv_handle_t *)&c->timer, on_handle_closed);
  uv_close((uv_handle_t *)&c->client.tcp, on_handle_closed);
  if (c->upstream.open) {
    c->upstream.open = 0;
    uv_close((uv_handle_t *)&c->upstream.tcp, on_handle_closed);
  }
}

/* Closes the upstream connection alone (the client's goes on). */
void drop_upstream(conn_t *c) {
  connect_abandon(c, on_handle_closed);
  if (!c->upstream.open) return;
  c->upstream.open = 0;
  c->upstream_idle = 0;
  c->upstream_reading = 0;
  uv_close((uv_handle_t *)&c->upstream.tcp, on_handle_closed);
}

/* After an error reply the client may still be sending (a header block
 * past the limit): closing with unread bytes would reset the connection
 * and could destroy the reply before the client reads it.  So the write
 * side is shut and what arrives is read and dropped, for a second at most. */
static void on_linger_done(uv_timer_t *t) { conn_close(t->data, NULL); }

static void drop_read(uv_stream_t *s, ssize_t nread, const uv_buf_t *buf) {
  (void)buf;
  conn_t *c = s->data;
  release_side_buffer(&c->client);
  if (nread < 0) conn_close(c, NULL);
}

typedef struct reply {
  uv_write_t w;
  conn_t *c;
  char text[512];
} reply_t;

static void on_reply_written(uv_write_t *w, int status) {
  reply_t *r = (reply_t *)w;
  conn_t *c = r->c;
  free(r);
  if (c->phase == PH_CLOSING) return;
  c->sreq_c.data = c;
  if (status != 0 || uv_shutdown(&c->sreq_c, (uv_stream_t *)&c->client.tcp, NULL) != 0 ||
      uv_read_start((uv_stream_t *)&c->client.tcp, alloc_side, drop_read) != 0) {
    conn_close(c, NULL);
    return;
  }
  uv_timer_start(&c->timer, on_linger_done, 1000, 0);
}

/* Answers the client and closes: every error path ends here. */
void reply_and_close(conn_t *c, int status, const char *text, const char *proxy_error, const char *reason,
                     const char *ended) {
  c->status = status;
  c->ended = ended;
  /* Nothing started before this (a connect, a check) may go on now. */
  c->phase = PH_REPLYING;
  uv_timer_stop(&c->timer);
  uv_read_stop((uv_stream_t *)&c->client.tcp);
  c->client_reading = 0;
  drop_upstream(c);
  reply_t *r = malloc(sizeof *r);
  if (!r) {
    conn_close(c, ended);
    return;
  }
  r->c = c;
  int n;
  if (proxy_error)
    n = snprintf(r->text, sizeof r->text,
                 "HTTP/1.1 %d %s\r\nProxy-Status: egressd; error=%s%s%s%s\r\n%s%s%s"
                 "Content-Length: 0\r\nConnection: close\r\n\r\n",
                 status, text, proxy_error, reason ? "; details=\"" : "", reason ? reason : "",
                 reason ? "\"" : "", reason ? "X-Egress-Reason: " : "", reason ? reason : "",
                 reason ? "\r\n" : "");
  else
    n = snprintf(r->text, sizeof r->text, "HTTP/1.1 %d %s\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
                 status, text);
  uv_buf_t b = uv_buf_init(r->text, (unsigned)n);
  if (uv_write(&r->w, (uv_stream_t *)&c->client.tcp, &b, 1, on_reply_written) != 0) {
    free(r);
    conn_close(c, ended);
  }
}

/* ---- upstream connect ----------------------------------------------------- */

static void try_next_address(conn_t *c);

static void on_connect_timeout(uv_timer_t *t) {
  conn_t *c = t->data;
  reply_and_close(c, 504, "Gateway Timeout", "connection_timeout", NULL, "connect_timeout");
}

static void on_closed_then_connect(uv_handle_t *h) {
  conn_t *c = h->data;
  if (c->phase != PH_CONNECT) {
    on_handle_closed(h);
    return;
  }
  c->handles--;
  try_next_address(c);
}

/* The connect under way, if any, is given up: its socket closed. */
static void connect_abandon(conn_t *c, uv_close_cb closed) {
  if (!c->connecting) return;
  c->connecting = 0;
  /* uv_close stops the watcher at once: the socket can go now. */
  uv_close((uv_handle_t *)&c->connect_poll, closed);
  close(c->connect_fd);
  c->connect_fd = -1;
}

/* FD, connected, becomes the upstream side. */
static void upstream_connected(conn_t *c, int fd) {
  uv_tcp_init(loop, &c->upstream.tcp);
  c->upstream.tcp.data = c;
  c->upstream.open = 1;
  c->handles++;
  int err = uv_tcp_open(&c->upstream.tcp, fd);
  if (err != 0) {
    close(fd);
    c->connect_error = err;
    c->upstream.open = 0;
    uv_close((uv_handle_t *)&c->upstream.tcp, on_closed_then_connect);
    return;
  }
  uv_timer_stop(&c->timer);
  free(c->addrs);
  c->addrs = NULL;
  c->connected_port = c->port;
  /* A new connection: nothing of the one before (its end, bytes it
   * should not have sent) holds for it. */
  c->upstream_spoiled = 0;
  c->upstream.eof = 0;
  c->used_upstream = 1;
  if (c->forward)
    start_forward(c);
  else
    start_relay(c);
}

/* The socket's pending error as a libuv error (0: connected). */
static int socket_error(int fd) {
  int err = 0;
  socklen_t len = sizeof err;
  if (getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &len) != 0) err = errno;
  return err ? -err : 0;
}

static void on_connect_ready(uv_poll_t *p, int status, int events) {
  (void)events;
  conn_t *c = p->data;
  if (c->phase != PH_CONNECT) {
    connect_abandon(c, on_handle_closed);
    return;
  }
  int fd = c->connect_fd;
  int err = status < 0 ? status : socket_error(fd);
  if (err == 0) {
    /* The socket is the upstream's now: only the watcher goes. */
    c->connecting = 0;
    c->connect_fd = -1;
    uv_close((uv_handle_t *)p, on_handle_closed);
    upstream_connected(c, fd);
    return;
  }
  c->connect_error = err;
  connect_abandon(c, on_closed_then_connect);
}

/* Connects to the next vetted address, or answers that none could be
 * reached.  egressd makes the connect itself rather than through
 * uv_tcp_connect, which always waits a turn of the loop for it: to
 * loopback and other near peers it has often completed by the time
 * connect(2) returns, and a socket found connected at once goes on in
 * this turn.  Only a connect still under way is watched; a socket is
 * handed to libuv once connected. */
static void try_next_address(conn_t *c) {
  while (c->next_addr < c->n_addrs) {
    const struct sockaddr *sa = (const struct sockaddr *)&c->addrs[c->next_addr++];
    socklen_t len = sa->sa_family == AF_INET6 ? sizeof(struct sockaddr_in6) : sizeof(struct sockaddr_in);
    if (sa->sa_family == AF_INET6)
      uv_ip6_name((const struct sockaddr_in6 *)sa, c->connected_to, sizeof c->connected_to);
    else
      uv_ip4_name((const struct sockaddr_in *)sa, c->connected_to, sizeof c->connected_to);
    int fd = socket(sa->sa_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0) {
      c->connect_error = -errno;
      continue;
    }
    if (connect(fd, sa, len) == 0) {
      upstream_connected(c, fd);
      return;
    }
    if (errno != EINPROGRESS) {
      c->connect_error = -errno;
      close(fd);
      continue;
    }
    struct pollfd now = { .fd = fd, .events = POLLOUT };
    if (poll(&now, 1, 0) == 1) {
      /* Refused or reset shows as POLLERR or POLLHUP besides POLLOUT. */
      int err = now.revents == POLLOUT ? 0 : socket_error(fd);
      if (err == 0) {
        upstream_connected(c, fd);
        return;
      }
      c->connect_error = err;
      close(fd);
      continue;
    }
    int err = uv_poll_init(loop, &c->connect_poll, fd);
    if (err != 0) {
      c->connect_error = err;
      close(fd);
      continue;
    }
    c->connect_poll.data = c;
    c->connect_fd = fd;
    c->connecting = 1;
    c->handles++;
    uv_poll_start(&c->connect_poll, UV_WRITABLE, on_connect_ready);
    return;
  }
  uv_timer_stop(&c->timer);
  if (c->connect_error == UV_EMFILE || c->connect_error == UV_ENFILE)
    reply_and_close(c, 503, "Service Unavailable", "proxy_internal_error", "descriptors exhausted",
                    "no_descriptors");
  else
    reply_and_close(c, 502, "Bad Gateway", "connection_refused", NULL, "connect_failed");
}

/* Only the addresses the check vetted, IPv6 and IPv4 taking turns. */
static int collect_addresses(conn_t *c) {
  size_t n = egress_decision_address_count(c->decision);
  size_t v6[MAX_ADDRS], v4[MAX_ADDRS], n6 = 0, n4 = 0;
  for (size_t i = 0; i < n; i++) {
    if (egress_decision_address_verdict(c->decision, i) != EGRESS_VERDICT_ALLOW) continue;
    size_t len = 0;
    const struct sockaddr *sa = egress_decision_address_sockaddr(c->decision, i, &len);
    if (!sa || len > sizeof(struct sockaddr_storage)) continue;
    if (sa->sa_family == AF_INET6 && n6 < MAX_ADDRS) v6[n6++] = i;
    if (sa->sa_family == AF_INET && n4 < MAX_ADDRS) v4[n4++] = i;
  }
  free(c->addrs);
  c->addrs = calloc(n6 + n4 + 1, sizeof *c->addrs);
  if (!c->addrs) return -1;
  c->n_addrs = 0;
  c->next_addr = 0;
  c->connect_error = 0;
  for (size_t k = 0; k < n6 || k < n4; k++) {
    size_t pick[2] = { k < n6 ? v6[k] : SIZE_MAX, k < n4 ? v4[k] : SIZE_MAX };
    for (int j = 0; j < 2; j++) {
      if (pick[j] == SIZE_MAX) continue;
      size_t len = 0;
      const void *sa = egress_decision_address_sockaddr(c->decision, pick[j], &len);
      memcpy(&c->addrs[c->n_addrs++], sa, len);
    }
  }
  return 0;
}

/* A kept-alive upstream connection serves the next request only if it is
 * to the same port and its address is one this request's check vetted. */
static int upstream_reusable(conn_t *c) {
  if (!c->upstream.open || !c->upstream_idle || c->upstream_spoiled || !c->forward ||
      c->connected_port != c->port)
    return 0;
  for (size_t i = 0; i < c->n_addrs; i++) {
    char name[64];
    const struct sockaddr *sa = (const struct sockaddr *)&c->addrs[i];
    if (sa->sa_family == AF_INET6)
      uv_ip6_name((const struct sockaddr_in6 *)sa, name, sizeof name);
    else
      uv_ip4_name((const struct sockaddr_in *)sa, name, sizeof name);
    if (!strcmp(name, c->connected_to)) return 1;
  }
  return 0;
}

/* ---- the check ------------------------------------------------------------ */

static void on_checked(egress_status_t status, egress_decision_t *d, void *user) {
  conn_t *c = user;
  c->pending = NULL;
  if (status == EGRESS_ECANCELLED || c->phase != PH_CHECK) {
    decision_done(d);
    return;
  }
  decision_done(c->decision);
  c->decision = d;
  const char *attempt = egress_decision_event_id(d);
  snprintf(c->attempt_id, sizeof c->attempt_id, "%s", attempt ? attempt : "");
  if (egress_decision_verdict(d) != EGRESS_VERDICT_ALLOW) {
    egress_reason_t r = egress_decision_reason(d);
    const char *token = egress_reason_name(r);
    switch (r) {
      case EGRESS_REASON_NO_SUCH_HOST:
      case EGRESS_REASON_DNS_UNAVAILABLE:
        reply_and_close(c, 502, "Bad Gateway", "dns_error", token, "denied");
        break;
      case EGRESS_REASON_SPECIAL_PURPOSE_ADDRESS:
      case EGRESS_REASON_RESOLVED_ADDRESS_FORBIDDEN:
        reply_and_close(c, 403, "Forbidden", "destination_ip_prohibited", token, "denied");
        break;
      case EGRESS_REASON_INVALID_HOST:
      case EGRESS_REASON_INVALID_PORT:
        reply_and_close(c, 400, "Bad Request", "http_request_error", token, "denied");
        break;
      case EGRESS_REASON_AUDIT_UNAVAILABLE:
      case EGRESS_REASON_INTERNAL_ERROR:
        reply_and_close(c, 500, "Internal Server Error", "proxy_internal_error", token, "denied");
        break;
      default: reply_and_close(c, 403, "Forbidden", "http_request_denied", token, "denied"); break;
    }
    return;
  }
  int collected = collect_addresses(c);
  /* The addresses are all a connection needs of the decision; an open
   * tunnel keeps nothing else of it. */
  decision_done(c->decision);
  c->decision = NULL;
  if (collected != 0) {
    reply_and_close(c, 500, "Internal Server Error", "proxy_internal_error", NULL, "internal_error");
    return;
  }
  if (upstream_reusable(c)) {
    /* still being read (forward.c): its bytes are this request's answer now */
    free(c->addrs);
    c->addrs = NULL;
    c->upstream_idle = 0;
    c->used_upstream = 1;
    start_forward(c);
    return;
  }
  c->phase = PH_CONNECT;
  uv_timer_stop(&c->timer);
  uv_timer_start(&c->timer, on_connect_timeout, cfg.connect_timeout_ms, 0);
  if (c->upstream.open) {
    /* A kept-alive connection this request may not use: closed first.
     * Its reads go with it: the next connection's must start anew. */
    c->upstream.open = 0;
    c->upstream_idle = 0;
    c->upstream_reading = 0;
    uv_close((uv_handle_t *)&c->upstream.tcp, on_closed_then_connect);
    return;
  }
  try_next_address(c);
}

/* One request context for every check: the check copies what it needs,
 * and egressd has one thread. */
static egress_request_t *context;

void conn_end(void) {
  egress_request_free(context);
  context = NULL;
}

static egress_request_t *check_context(void) {
  if (!context && egress_request_new(&context) != EGRESS_OK) return NULL;
    /* Nothing of the request before may reach this one's event.  The
     * method is the exception: every head sets it before its check (an
     * unchanged one costs nothing then). */
#define CLEAR_FIELD(name, value, key)             \
  if (EGRESS_FIELD_##name != EGRESS_FIELD_METHOD) \
    (void)egress_request_set(context, EGRESS_FIELD_##name, NULL);
  EGRESS_FIELD_MAP(CLEAR_FIELD)
#undef CLEAR_FIELD
  return context;
}

static void start_check(conn_t *c) {
  egress_request_t *req = check_context();
  if (!req) {
    reply_and_close(c, 500, "Internal Server Error", "proxy_internal_error", NULL, "internal_error");
    return;
  }
  target_t *t = &c->head->target;
  if (head_target(c->head, t, req) != 0) {
    c->host[0] = '\0';
    if (t->loop)
      reply_and_close(c, 508, "Loop Detected", "proxy_loop_detected", t->refusal, "bad_request");
    else
      reply_and_close(c, 400, "Bad Request", "http_request_error", t->refusal, "bad_request");
    return;
  }
  /* TRACE reflects the request back, fields included that the client did
   * not mean the response to show (RFC 9110 9.3.8): not forwarded. */
  /* An OPTIONS that may go no further is answered by egressd itself as its
   * final recipient (RFC 9110 7.6.2). */
  if (t->max_forwards == 0) {
    reply_and_close(c, 200, "OK", NULL, NULL, "completed");
    return;
  }
  if (c->head->parser.method == HTTP_TRACE) {
    reply_and_close(c, 405, "Method Not Allowed", "http_request_denied", "TRACE is not forwarded",
                    "bad_request");
    return;
  }
  /* The gateway's --context is the operator's word: a workload's
   * X-Egress-* field may add a key, never replace one. */
  for (int i = 0; i < cfg.n_context; i++) {
#define SET_FIELD(name, value, key) \
  if (!strcmp(cfg.context[i][0], key)) (void)egress_request_set(req, EGRESS_FIELD_##name, cfg.context[i][1]);
    EGRESS_FIELD_MAP(SET_FIELD)
#undef SET_FIELD
  }
  memcpy(c->host, t->host, sizeof c->host);
  c->port = t->port;
  c->forward = !t->connect;
  c->chunked = t->chunked;
  c->keep_alive = t->keep_alive;
  c->head_request = c->head->parser.method == HTTP_HEAD;
  c->phase = PH_CHECK;
  /* The check is bounded by the library's own deadline. */
  uv_timer_stop(&c->timer);
  /* A tunnel's bytes wait in the kernel until it is established. */
  if (!c->forward) client_reading(c, 0);
  egress_pending_t *p = NULL;
  c->attempt_id[0] = '\0';
  c->used_upstream = 0; /* until this request's exchange has an upstream */
  egress_status_t st = c->forward ? egress_uv_check_url(checker_uv, c->head->url, req, on_checked, c, &p)
                                  : egress_uv_check(checker_uv, c->host, c->port, req, on_checked, c, &p);
  /* The callback may already have run (a literal needs no DNS). */
  if (st != EGRESS_OK) {
    reply_and_close(c, 500, "Internal Server Error", "proxy_internal_error", NULL, "internal_error");
    return;
  }
  c->pending = p; /* NULL when the callback already ran */
}

/* ---- request heads ------------------------------------------------------- */

static void on_header_timeout(uv_timer_t *t) {
  conn_t *c = t->data;
  /* A kept-alive connection with nothing of a next request is simply
   * closed; a head begun and not finished is answered. */
  if (c->exchanges > 0 && (!c->head || c->head->len == 0)) {
    conn_close(c, "keepalive_idle");
    return;
  }
  reply_and_close(c, 408, "Request Timeout", NULL, NULL, "header_timeout");
}

static void alloc_head(uv_handle_t *h, size_t suggested, uv_buf_t *buf) {
  (void)suggested;
  conn_t *c = h->data;
  /* The head is made when its first bytes come: an idle connection holds
   * none. */
  if (!c->head) c->head = head_new(cfg.header_bytes, 0);
  head_t *g = c->head ? head_reserve(c->head, 16384) : NULL;
  if (!g) {
    /* UV_ENOBUFS: the connection ends */
    *buf = uv_buf_init(NULL, 0);
    return;
  }
  c->head = g;
  size_t room = g->cap - g->len;
  *buf = uv_buf_init(g->buf + g->len, (unsigned)(room < 65536 ? room : 65536));
}

static void on_head_bytes(conn_t *c, size_t n) {
  switch (head_feed(c->head, n)) {
    case HEAD_MORE: return;
    case HEAD_DONE: start_check(c); return;
    case HEAD_BAD: reply_and_close(c, 400, "Bad Request", "http_request_error", NULL, "bad_request"); return;
    case HEAD_URI_LONG:
      reply_and_close(c, 414, "URI Too Long", "http_request_error", NULL, "bad_request");
      return;
    case HEAD_TOO_LARGE:
      reply_and_close(c, 431, "Request Header Fields Too Large", "http_request_error", NULL,
                      "header_too_large");
      return;
  }
}

/* A client connection that forwards is read all along, whatever it is
 * waiting for (a head, the check, a connect, the response): stopping and
 * starting reads would cost kernel calls on every request.  What comes
 * while a request is under way is the next request: kept, up to the head
 * limit, after which reading pauses until it is needed. */
static void client_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *buf) {
  conn_t *c = h->data;
  if (c->phase == PH_HEADER)
    alloc_head(h, suggested, buf);
  else
    alloc_side(h, suggested, buf);
}

static void client_read(uv_stream_t *s, ssize_t nread, const uv_buf_t *buf) {
  conn_t *c = s->data;
  if (c->phase == PH_HEADER) {
    if (nread == 0) return;
    if (nread < 0) {
      conn_close(c, c->exchanges > 0 && (!c->head || c->head->len == 0) ? "completed" : "client_closed");
      return;
    }
    on_head_bytes(c, (size_t)nread);
    return;
  }
  if (c->phase == PH_RELAY && c->forward && !c->message_done) {
    forward_body_read(c, nread, buf);
    return;
  }
  if (nread == 0) {
    release_side_buffer(&c->client);
    return;
  }
  if (nread == UV_EOF) {
    /* The client has said all it will: the exchange under way finishes. */
    release_side_buffer(&c->client);
    c->client_eof = 1;
    client_reading(c, 0);
    return;
  }
  if (nread < 0) {
    conn_close(c, "client_closed");
    return;
  }
  int bad = keep_pipelined(c, buf->base, (size_t)nread);
  release_side_buffer(&c->client);
  if (bad) {
    conn_close(c, "internal_error");
    return;
  }
  if (c->pipelined_len >= cfg.header_bytes) client_reading(c, 0);
}

void client_reading(conn_t *c, int on) {
  if (c->client_reading == on) return;
  c->client_reading = on;
  if (on)
    uv_read_start((uv_stream_t *)&c->client.tcp, client_alloc, client_read);
  else
    uv_read_stop((uv_stream_t *)&c->client.tcp);
}

/* Bytes after the end of the request: the next request, kept for later. */
int keep_pipelined(conn_t *c, const char *data, size_t len) {
  if (!len) return 0;
  char *p = realloc(c->pipelined, c->pipelined_len + len);
  if (!p) return -1;
  memcpy(p + c->pipelined_len, data, len);
  c->pipelined = p;
  c->pipelined_len += len;
  return 0;
}

/* Waits for the next request head on the client connection, starting with
 * what the client already sent after the last one. */
void read_next_head(conn_t *c) {
  free(c->head);
  c->head = NULL;
  c->phase = PH_HEADER;
  c->host[0] = '\0';
  c->status = 0;
  c->ended = NULL;
  c->up_bytes = c->down_bytes = 0;
  c->t0 = now_ms();
  uv_timer_stop(&c->timer);
  uv_timer_start(&c->timer, on_header_timeout, cfg.header_timeout_ms, 0);
  if (c->pipelined_len) {
    size_t n = c->pipelined_len;
    head_t *h = head_new(cfg.header_bytes, n);
    head_t *g = h ? head_reserve(h, n) : NULL;
    if (!g) {
      free(h);
      conn_close(c, "internal_error");
      return;
    }
    c->head = g;
    memcpy(c->head->buf, c->pipelined, n);
    free(c->pipelined);
    c->pipelined = NULL;
    c->pipelined_len = 0;
    on_head_bytes(c, n);
    if (c->phase != PH_HEADER) return;
  }
  if (c->client_eof) {
    /* nothing more will come: an unfinished head is the end */
    conn_close(c, c->head && c->head->len ? "client_closed" : "completed");
    return;
  }
  client_reading(c, 1);
}

static void on_refusal_written(uv_write_t *w, int status) {
  (void)status;
  uv_close((uv_handle_t *)w->handle, (uv_close_cb)free);
  free(w);
}

/* Accepts a client only to answer it TEXT and close, without a connection
 * state: a flood past a limit costs one reply each.  SEEN (if any) sees
 * the accepted socket first. */
void refuse_at_accept(uv_stream_t *server, const char *text, size_t len, void (*seen)(uv_tcp_t *t)) {
  uv_tcp_t *t = malloc(sizeof *t);
  uv_write_t *w = malloc(sizeof *w);
  if (!t || !w || uv_tcp_init(loop, t) != 0) {
    free(t);
    free(w);
    return;
  }
  if (uv_accept(server, (uv_stream_t *)t) != 0) {
    free(w);
    uv_close((uv_handle_t *)t, (uv_close_cb)free);
    return;
  }
  if (seen) seen(t);
  uv_buf_t b = uv_buf_init((char *)text, (unsigned)len);
  if (uv_write(w, (uv_stream_t *)t, &b, 1, on_refusal_written) != 0) {
    free(w);
    uv_close((uv_handle_t *)t, (uv_close_cb)free);
  }
}

static void connection_limit_seen(uv_tcp_t *t) { limits_refused(LIMIT_CONNECTIONS, t); }

/* A client usually sends its request with the connection's first bytes,
 * so they are most often there by the time it is accepted: taken at once
 * (as if sent after a previous request), they save a turn of the loop and
 * its kernel calls on every tunnel's setup.  Nothing there, or an end or
 * error, is left for the reads that follow to find. */
static int read_sent_already(conn_t *c) {
  char buf[4096];
  uv_os_fd_t fd;
  if (uv_fileno((const uv_handle_t *)&c->client.tcp, &fd) != 0) return 0;
  ssize_t n;
  do {
    n = recv(fd, buf, sizeof buf, MSG_DONTWAIT);
  } while (n < 0 && errno == EINTR);
  if (n > 0 && keep_pipelined(c, buf, (size_t)n) != 0) {
    conn_close(c, "internal_error");
    return -1;
  }
  return 0;
}

void on_accept(uv_stream_t *server, int status) {
  if (status != 0) return;
  if (active >= cfg.max_connections) {
    static const char busy[] =
        "HTTP/1.1 503 Service Unavailable\r\nProxy-Status: egressd; error=proxy_internal_error; "
        "details=\"connection limit\"\r\nContent-Length: 0\r\nConnection: close\r\n\r\n";
    refuse_at_accept(server, busy, sizeof busy - 1, connection_limit_seen);
    return;
  }
  conn_t *c = calloc(1, sizeof *c);
  if (!c) return;
  active++;
  c->next = conns;
  if (conns) conns->prev = c;
  conns = c;
  uv_tcp_init(loop, &c->client.tcp);
  uv_timer_init(loop, &c->timer);
  c->client.tcp.data = c;
  c->timer.data = c;
  c->handles = 2;
  if (uv_accept(server, (uv_stream_t *)&c->client.tcp) != 0) {
    conn_close(c, "accept_failed");
    return;
  }
  if (limits_admit(c) != 0) return;
  if (read_sent_already(c) != 0) return;
  read_next_head(c);
}

/* Draining: a kept-alive connection waiting for its next request has
 * nothing in flight and is closed at once. */
void close_idle_connections(void) {
  for (conn_t *c = conns; c; c = c->next)
    if (c->phase == PH_HEADER && c->exchanges > 0 && (!c->head || c->head->len == 0))
      conn_close(c, "completed");
}
