/*
 * egressd: the egress gateway for workloads that cannot link libegress.
 *
 * An HTTP proxy on libuv that answers CONNECT host:port by asking the
 * library's asynchronous check (include/egress_uv.h) and, on allow,
 * connecting only to the addresses that check vetted: the gateway never
 * resolves a name itself, so a name that rebinds between the check and
 * the connection cannot reach anything the check did not see.  Request
 * framing is http_parser's; nothing here splits HTTP by hand.
 *
 * Each check writes the library's attempt event through the checker's
 * sink; each tunnel writes one close event (bytes each way, duration,
 * address, how it ended) to the same place.  See `egressd --help`.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <http_parser.h>
#include <signal.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

#include <cjson/cJSON.h>

#include "egress_uv.h"

enum { EXIT_USAGE = 64, EXIT_DATAERR = 65, EXIT_SOFTWARE = 70 };
enum { MAX_ADDRS = 32, RELAY_BUF = 64 * 1024, MAX_FIELDS = 128, UPSTREAM_QUEUE_MAX = 1 << 20 };

typedef struct config {
  const char *listen, *policy_path, *dns_server, *events_path, *port_file;
  const char *context[8][2];
  int n_context;
  unsigned max_connections, header_bytes, header_timeout_ms, idle_timeout_ms, connect_timeout_ms,
      drain_timeout_ms;
  long dns_cache; /* -1: the library's default */
} config_t;

static config_t cfg = { "127.0.0.1:3128", NULL,  NULL,   NULL,  NULL,  { { 0 } }, 0, 1024,
                        32 * 1024,        10000, 300000, 10000, 10000, -1 };

static uv_loop_t *loop;
static egress_uv_t *checker_uv;
static egress_checker_t *checker;
static uv_tcp_t listener;
static uv_signal_t sig_hup, sig_term, sig_int;
static uv_timer_t drain_timer;
static unsigned active;
static int draining;
static int events_fd = 1;

typedef enum phase { PH_HEADER, PH_CHECK, PH_CONNECT, PH_RELAY, PH_REPLYING, PH_CLOSING } phase_t;

typedef struct side {
  uv_tcp_t tcp;
  int open, eof, shut;
  uv_write_t wreq;
  int writing;
  char buf[RELAY_BUF];
} side_t;

typedef struct conn {
  side_t client, upstream;
  uv_timer_t timer;
  uv_connect_t creq;
  uv_shutdown_t sreq_c, sreq_u;
  http_parser parser;
  http_parser_settings settings;
  phase_t phase;
  char *head;
  size_t head_len, head_used;
  char url[2048];
  size_t url_len;
  int headers_done, url_too_long;
  egress_pending_t *pending;
  egress_decision_t *decision;
  struct sockaddr_storage addrs[MAX_ADDRS];
  size_t n_addrs, next_addr;
  char connected_to[64], host[300];
  int port, status;
  const char *ended;
  uint64_t up_bytes, down_bytes, t0;
  int handles;
  char reply[512];
  uv_write_t reply_req;
  /* Absolute-form forwarding: the head's fields as offsets into head. */
  int forward, chunked, message_done, too_many_fields, last_cb;
  struct field {
    size_t no, nl, vo, vl;
  } fields[MAX_FIELDS];
  size_t n_fields;
  egress_request_t *req;
  http_parser resp;         /* upstream's response, for its status code alone */
  struct conn *prev, *next; /* every open connection, for the drain deadline */
} conn_t;

static conn_t *conns;

static void conn_close(conn_t *c, const char *ended);

static const char *usage_text =
    "NAME\n"
    "    egressd - egress gateway: an HTTP proxy that applies libegress policy\n"
    "\n"
    "SYNOPSIS\n"
    "    egressd --policy FILE [options]\n"
    "\n"
    "DESCRIPTION\n"
    "    Answers CONNECT host:port requests.  Each is checked against the policy\n"
    "    with libegress; on allow, egressd connects only to the addresses that the\n"
    "    check vetted (IPv6 and IPv4 interleaved, each within the connect timeout),\n"
    "    replies 200 and relays bytes both ways.  On deny it replies 403 with\n"
    "    Proxy-Status (RFC 9209) and X-Egress-Reason; a failed lookup is 502\n"
    "    dns_error, a refused connection 502 connection_refused, a timed-out one\n"
    "    504 connection_timeout.\n"
    "\n"
    "    Absolute-form HTTP/1.1 requests (GET http://host:port/path HTTP/1.1) are\n"
    "    checked as URLs (the method as context) and forwarded in origin-form to\n"
    "    a vetted address, one request a connection (Connection: close both\n"
    "    ways; pipelined requests after the first are not read).  Hop-by-hop\n"
    "    fields (RFC 9110 7.6.1) are removed; X-Egress-Run-Id and the other\n"
    "    X-Egress-* fields become the check's context and are not forwarded.\n"
    "    Refused with 400: origin-form, https:// or userinfo in the URI, a Host\n"
    "    field naming another authority, Content-Length with Transfer-Encoding,\n"
    "    repeated Content-Length, an unknown X-Egress-* field.\n"
    "\n"
    "OPTIONS\n"
    "    --listen ADDR:PORT        where to listen (default 127.0.0.1:3128; port 0\n"
    "                              picks a free one).  Prints \"PORT <n>\" on stderr.\n"
    "    --port-file FILE          also write the bound port to FILE.\n"
    "    --policy FILE             policy file (required); SIGHUP reloads it.\n"
    "    --dns-server IP:PORT      resolver to use instead of the system's (testing).\n"
    "    --dns-cache N             names the checker caches (0: none; each check asks).\n"
    "    --context KEY=VALUE       context of every check (workspaceId, agentId,\n"
    "                              machineId, runId, correlationId); repeatable.\n"
    "    --events-path FILE        append events (JSON Lines) to FILE (default stdout).\n"
    "    --max-connections N       client connections at once (default 1024); past\n"
    "                              it a client is answered 503.\n"
    "    --header-bytes N          request header block limit (default 32768); 431.\n"
    "    --header-timeout-ms N     time to send the request head (default 10000); 408.\n"
    "    --idle-timeout-ms N       tunnel idle limit (default 300000).\n"
    "    --connect-timeout-ms N    upstream connect limit over all addresses\n"
    "                              (default 10000); 504.\n"
    "    --drain-timeout-ms N      SIGTERM: time given to open tunnels (default 10000).\n"
    "    --help                    this text.\n"
    "\n"
    "EXIT STATUS\n"
    "    0 after SIGTERM/SIGINT, 64 usage error, 65 bad policy, 70 setup failed.\n";

static uint64_t now_ms(void) { return uv_now(loop); }

/* ---- events -------------------------------------------------------------- */

static void write_line(int fd, const char *s) {
  size_t n = strlen(s);
  char *line = malloc(n + 2);
  if (!line) return;
  memcpy(line, s, n);
  line[n] = '\n';
  /* One write per line so lines of concurrent writers never interleave. */
  ssize_t w = write(fd, line, n + 1);
  (void)w;
  free(line);
}

static void log_json(const char *level, const char *msg, const char *detail) {
  cJSON *o = cJSON_CreateObject();
  cJSON_AddStringToObject(o, "level", level);
  cJSON_AddStringToObject(o, "msg", msg);
  if (detail) cJSON_AddStringToObject(o, "detail", detail);
  char *s = cJSON_PrintUnformatted(o);
  if (s) write_line(2, s);
  cJSON_free(s);
  cJSON_Delete(o);
}

static void emit_close_event(conn_t *c) {
  if (!c->host[0]) return; /* no check was made: nothing to close */
  cJSON *o = cJSON_CreateObject();
  cJSON_AddStringToObject(o, "event", "egressd.close");
  cJSON_AddStringToObject(o, "kind", c->forward ? "forward" : "tunnel");
  cJSON_AddStringToObject(o, "host", c->host);
  cJSON_AddNumberToObject(o, "port", c->port);
  cJSON_AddNumberToObject(o, "status", c->status);
  if (c->connected_to[0])
    cJSON_AddStringToObject(o, "address", c->connected_to);
  else
    cJSON_AddNullToObject(o, "address");
  cJSON_AddNumberToObject(o, "bytesUp", (double)c->up_bytes);
  cJSON_AddNumberToObject(o, "bytesDown", (double)c->down_bytes);
  cJSON_AddNumberToObject(o, "durationMs", (double)(now_ms() - c->t0));
  cJSON_AddStringToObject(o, "ended", c->ended ? c->ended : "closed");
  char *s = cJSON_PrintUnformatted(o);
  if (s) write_line(events_fd, s);
  cJSON_free(s);
  cJSON_Delete(o);
}

/* ---- connection lifetime ------------------------------------------------- */

static void on_handle_closed(uv_handle_t *h) {
  conn_t *c = h->data;
  if (--c->handles > 0) return;
  egress_decision_free(c->decision);
  egress_request_free(c->req);
  if (c->prev)
    c->prev->next = c->next;
  else
    conns = c->next;
  if (c->next) c->next->prev = c->prev;
  free(c->head);
  free(c);
  active--;
  if (draining && active == 0) uv_stop(loop);
}

static void conn_close(conn_t *c, const char *ended) {
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
  uv_close((uv_handle_t *)&c->timer, on_handle_closed);
  uv_close((uv_handle_t *)&c->client.tcp, on_handle_closed);
  if (c->upstream.open) uv_close((uv_handle_t *)&c->upstream.tcp, on_handle_closed);
}

/* After an error reply the client may still be sending (a header block
 * past the limit): closing with unread bytes would reset the connection
 * and could destroy the reply before the client reads it.  So the write
 * side is shut and what arrives is read and dropped, for a second at most. */
static void on_linger_done(uv_timer_t *t) { conn_close(t->data, NULL); }

static void alloc_drop(uv_handle_t *h, size_t suggested, uv_buf_t *buf) {
  (void)suggested;
  conn_t *c = h->data;
  *buf = uv_buf_init(c->client.buf, sizeof c->client.buf);
}

static void drop_read(uv_stream_t *s, ssize_t nread, const uv_buf_t *buf) {
  (void)buf;
  if (nread < 0) conn_close(s->data, NULL);
}

static void on_reply_written(uv_write_t *w, int status) {
  conn_t *c = w->data;
  if (c->phase == PH_CLOSING) return;
  c->sreq_c.data = c;
  if (status != 0 || uv_shutdown(&c->sreq_c, (uv_stream_t *)&c->client.tcp, NULL) != 0 ||
      uv_read_start((uv_stream_t *)&c->client.tcp, alloc_drop, drop_read) != 0) {
    conn_close(c, NULL);
    return;
  }
  uv_timer_start(&c->timer, on_linger_done, 1000, 0);
}

/* Answers the client and closes: every error path ends here. */
static void reply_and_close(conn_t *c, int status, const char *text, const char *proxy_error,
                            const char *reason, const char *ended) {
  c->status = status;
  c->ended = ended;
  /* Nothing started before this (a connect, a check) may go on now. */
  c->phase = PH_REPLYING;
  uv_timer_stop(&c->timer);
  uv_read_stop((uv_stream_t *)&c->client.tcp);
  int n;
  if (proxy_error)
    n = snprintf(c->reply, sizeof c->reply,
                 "HTTP/1.1 %d %s\r\nProxy-Status: egressd; error=%s%s%s%s\r\n%s%s%s"
                 "Content-Length: 0\r\nConnection: close\r\n\r\n",
                 status, text, proxy_error, reason ? "; details=\"" : "", reason ? reason : "",
                 reason ? "\"" : "", reason ? "X-Egress-Reason: " : "", reason ? reason : "",
                 reason ? "\r\n" : "");
  else
    n = snprintf(c->reply, sizeof c->reply,
                 "HTTP/1.1 %d %s\r\nContent-Length: 0\r\nConnection: close\r\n\r\n", status, text);
  uv_buf_t b = uv_buf_init(c->reply, (unsigned)n);
  c->reply_req.data = c;
  if (uv_write(&c->reply_req, (uv_stream_t *)&c->client.tcp, &b, 1, on_reply_written) != 0)
    conn_close(c, ended);
}

/* ---- relay --------------------------------------------------------------- */

static void relay_read(uv_stream_t *s, ssize_t nread, const uv_buf_t *buf);

static side_t *peer_of(conn_t *c, side_t *s) { return s == &c->client ? &c->upstream : &c->client; }
static conn_t *conn_of(side_t *s) { return s->tcp.data; }

static void alloc_side(uv_handle_t *h, size_t suggested, uv_buf_t *buf) {
  (void)suggested;
  conn_t *c = h->data;
  side_t *s = (uv_tcp_t *)h == &c->client.tcp ? &c->client : &c->upstream;
  *buf = uv_buf_init(s->buf, sizeof s->buf);
}

static void maybe_finish(conn_t *c) {
  if (c->client.eof && c->upstream.eof && !c->client.writing && !c->upstream.writing)
    conn_close(c, "completed");
}

static void arm_idle(conn_t *c) { uv_timer_again(&c->timer); }

static void on_idle(uv_timer_t *t) { conn_close(t->data, "idle_timeout"); }

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

static void relay_read(uv_stream_t *stream, ssize_t nread, const uv_buf_t *buf) {
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

static void start_relay(conn_t *c) {
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

static int ieq(const char *a, size_t an, const char *b) { return an == strlen(b) && !strncasecmp(a, b, an); }

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
static void start_forward(conn_t *c) {
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

/* ---- upstream connect ----------------------------------------------------- */

static void try_next_address(conn_t *c);

static void on_connect_timeout(uv_timer_t *t) {
  conn_t *c = t->data;
  reply_and_close(c, 504, "Gateway Timeout", "connection_timeout", NULL, "connect_timeout");
}

static void on_upstream_closed_retry(uv_handle_t *h) {
  conn_t *c = h->data;
  if (c->phase != PH_CONNECT) {
    on_handle_closed(h);
    return;
  }
  c->handles--;
  try_next_address(c);
}

static void on_connected(uv_connect_t *r, int status) {
  conn_t *c = r->data;
  if (c->phase != PH_CONNECT) return;
  if (status != 0) {
    c->upstream.open = 0;
    uv_close((uv_handle_t *)&c->upstream.tcp, on_upstream_closed_retry);
    return;
  }
  uv_timer_stop(&c->timer);
  if (c->forward)
    start_forward(c);
  else
    start_relay(c);
}

static void try_next_address(conn_t *c) {
  if (c->next_addr >= c->n_addrs) {
    uv_timer_stop(&c->timer);
    reply_and_close(c, 502, "Bad Gateway", "connection_refused", NULL, "connect_failed");
    return;
  }
  const struct sockaddr *sa = (const struct sockaddr *)&c->addrs[c->next_addr++];
  if (sa->sa_family == AF_INET6)
    uv_ip6_name((const struct sockaddr_in6 *)sa, c->connected_to, sizeof c->connected_to);
  else
    uv_ip4_name((const struct sockaddr_in *)sa, c->connected_to, sizeof c->connected_to);
  uv_tcp_init(loop, &c->upstream.tcp);
  c->upstream.tcp.data = c;
  c->upstream.open = 1;
  c->handles++;
  c->creq.data = c;
  if (uv_tcp_connect(&c->creq, &c->upstream.tcp, sa, on_connected) != 0) {
    c->upstream.open = 0;
    uv_close((uv_handle_t *)&c->upstream.tcp, on_upstream_closed_retry);
  }
}

/* Only the addresses the check vetted, IPv6 and IPv4 taking turns. */
static void collect_addresses(conn_t *c) {
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
  c->n_addrs = 0;
  for (size_t k = 0; (k < n6 || k < n4) && c->n_addrs < MAX_ADDRS; k++) {
    size_t pick[2] = { k < n6 ? v6[k] : SIZE_MAX, k < n4 ? v4[k] : SIZE_MAX };
    for (int j = 0; j < 2 && c->n_addrs < MAX_ADDRS; j++) {
      if (pick[j] == SIZE_MAX) continue;
      size_t len = 0;
      const void *sa = egress_decision_address_sockaddr(c->decision, pick[j], &len);
      memset(&c->addrs[c->n_addrs], 0, sizeof c->addrs[0]);
      memcpy(&c->addrs[c->n_addrs++], sa, len);
    }
  }
}

/* ---- the check ------------------------------------------------------------ */

static void on_checked(egress_status_t status, egress_decision_t *d, void *user) {
  conn_t *c = user;
  c->pending = NULL;
  if (status == EGRESS_ECANCELLED || c->phase != PH_CHECK) {
    egress_decision_free(d);
    return;
  }
  c->decision = d;
  if (egress_decision_verdict(d) != EGRESS_VERDICT_ALLOW) {
    egress_reason_t r = egress_decision_reason(d);
    const char *token = egress_reason_name(r);
    uv_timer_stop(&c->timer);
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
  collect_addresses(c);
  c->phase = PH_CONNECT;
  uv_timer_stop(&c->timer);
  uv_timer_start(&c->timer, on_connect_timeout, cfg.connect_timeout_ms, 0);
  try_next_address(c);
}

static void start_check(conn_t *c) {
  struct http_parser_url u;
  http_parser_url_init(&u);
  if (http_parser_parse_url(c->url, c->url_len, 1, &u) != 0 || !(u.field_set & (1 << UF_HOST)) ||
      u.field_data[UF_HOST].len >= sizeof c->host) {
    reply_and_close(c, 400, "Bad Request", "http_request_error", NULL, "bad_request");
    return;
  }
  memcpy(c->host, c->url + u.field_data[UF_HOST].off, u.field_data[UF_HOST].len);
  c->host[u.field_data[UF_HOST].len] = '\0';
  c->port = u.port;
  c->phase = PH_CHECK;
  /* The check is bounded by the library's own deadline. */
  uv_timer_stop(&c->timer);
  uv_read_stop((uv_stream_t *)&c->client.tcp);
  egress_request_t *req = NULL;
  if (egress_request_new(&req) != EGRESS_OK) {
    reply_and_close(c, 500, "Internal Server Error", "proxy_internal_error", NULL, "internal_error");
    return;
  }
  (void)egress_request_set(req, EGRESS_FIELD_METHOD, "CONNECT");
  for (int i = 0; i < cfg.n_context; i++) {
#define SET_FIELD(name, value, key) \
  if (!strcmp(cfg.context[i][0], key)) (void)egress_request_set(req, EGRESS_FIELD_##name, cfg.context[i][1]);
    EGRESS_FIELD_MAP(SET_FIELD)
#undef SET_FIELD
  }
  egress_pending_t *p = NULL;
  egress_status_t st = egress_uv_check(checker_uv, c->host, c->port, req, on_checked, c, &p);
  egress_request_free(req);
  /* The callback may already have run (a literal needs no DNS). */
  if (st != EGRESS_OK) {
    reply_and_close(c, 500, "Internal Server Error", "proxy_internal_error", NULL, "internal_error");
    return;
  }
  c->pending = p; /* NULL when the callback already ran */
}

/* Absolute-form request: refused (400) unless it is http://host[:port]/...
 * without userinfo, with a Host field (if any) naming the same authority,
 * and x-egress-* fields that name known context keys. */
static void start_forward_check(conn_t *c) {
  struct http_parser_url u;
  http_parser_url_init(&u);
  int ok = http_parser_parse_url(c->url, c->url_len, 0, &u) == 0 && (u.field_set & (1 << UF_SCHEMA)) &&
           (u.field_set & (1 << UF_HOST)) && !(u.field_set & (1 << UF_USERINFO)) &&
           ieq(c->url + u.field_data[UF_SCHEMA].off, u.field_data[UF_SCHEMA].len, "http") &&
           u.field_data[UF_HOST].len < sizeof c->host && c->parser.http_major == 1 &&
           c->parser.http_minor == 1;
  if (ok) {
    memcpy(c->host, c->url + u.field_data[UF_HOST].off, u.field_data[UF_HOST].len);
    c->host[u.field_data[UF_HOST].len] = '\0';
    c->port = (u.field_set & (1 << UF_PORT)) ? u.port : 80;
  }
  c->chunked = (c->parser.flags & F_CHUNKED) != 0;
  if (ok && egress_request_new(&c->req) != EGRESS_OK) ok = 0;
  if (ok)
    (void)egress_request_set(c->req, EGRESS_FIELD_METHOD,
                             http_method_str((enum http_method)c->parser.method));
  for (int i = 0; ok && i < cfg.n_context; i++) {
#define SET_FIELD2(name, value, key)   \
  if (!strcmp(cfg.context[i][0], key)) \
    (void)egress_request_set(c->req, EGRESS_FIELD_##name, cfg.context[i][1]);
    EGRESS_FIELD_MAP(SET_FIELD2)
#undef SET_FIELD2
  }
  int hosts = 0;
  for (size_t i = 0; ok && i < c->n_fields; i++) {
    const char *n = c->head + c->fields[i].no, *v = c->head + c->fields[i].vo;
    size_t nl = c->fields[i].nl, vl = c->fields[i].vl;
    if (ieq(n, nl, "host")) {
      /* The authority of the URI, as written there. */
      size_t ao = u.field_data[UF_HOST].off, ae = ao + u.field_data[UF_HOST].len;
      if (ao > 0 && c->url[ao - 1] == '[') ao--, ae++;
      if (u.field_set & (1 << UF_PORT)) ae = u.field_data[UF_PORT].off + u.field_data[UF_PORT].len;
      ok = ++hosts == 1 && vl == ae - ao && !strncasecmp(v, c->url + ao, vl);
    } else if (nl > 9 && !strncasecmp(n, "x-egress-", 9)) {
      /* x-egress-run-id -> runId, as the bindings map them. */
      char key[64], val[1025];
      size_t k = 0;
      int up = 0;
      for (size_t j = 9; j < nl && k + 1 < sizeof key; j++) {
        if (n[j] == '-') {
          up = 1;
          continue;
        }
        key[k++] = up ? (char)(n[j] >= 'a' && n[j] <= 'z' ? n[j] - 32 : n[j])
                      : (char)(n[j] >= 'A' && n[j] <= 'Z' ? n[j] + 32 : n[j]);
        up = 0;
      }
      key[k] = '\0';
      if (vl >= sizeof val) {
        ok = 0;
        break;
      }
      memcpy(val, v, vl);
      val[vl] = '\0';
      int known = 0;
#define SET_HDR(name, value, jkey)                                                \
  if (!known && !strcmp(key, jkey) && EGRESS_FIELD_##name != EGRESS_FIELD_METHOD) \
    known = egress_request_set(c->req, EGRESS_FIELD_##name, val) == EGRESS_OK;
      EGRESS_FIELD_MAP(SET_HDR)
#undef SET_HDR
      ok = known;
    }
  }
  if (!ok) {
    c->host[0] = '\0';
    reply_and_close(c, 400, "Bad Request", "http_request_error", NULL, "bad_request");
    return;
  }
  c->forward = 1;
  c->phase = PH_CHECK;
  uv_timer_stop(&c->timer);
  uv_read_stop((uv_stream_t *)&c->client.tcp);
  egress_pending_t *p = NULL;
  if (egress_uv_check_url(checker_uv, c->url, c->req, on_checked, c, &p) != EGRESS_OK) {
    reply_and_close(c, 500, "Internal Server Error", "proxy_internal_error", NULL, "internal_error");
    return;
  }
  c->pending = p;
}

/* ---- request head ---------------------------------------------------------- */

static int on_url(http_parser *p, const char *at, size_t len) {
  conn_t *c = p->data;
  if (c->url_len + len >= sizeof c->url) {
    c->url_too_long = 1;
    return 1;
  }
  memcpy(c->url + c->url_len, at, len);
  c->url_len += len;
  c->url[c->url_len] = '\0';
  return 0;
}

static int on_header_field(http_parser *p, const char *at, size_t len) {
  conn_t *c = p->data;
  /* A field split across reads is contiguous in head: extend it. */
  if (c->last_cb == 1) {
    c->fields[c->n_fields - 1].nl += len;
  } else if (c->n_fields == MAX_FIELDS) {
    c->too_many_fields = 1;
    return 1;
  } else {
    c->fields[c->n_fields++] = (struct field){ (size_t)(at - c->head), len, 0, 0 };
  }
  c->last_cb = 1;
  return 0;
}

static int on_header_value(http_parser *p, const char *at, size_t len) {
  conn_t *c = p->data;
  struct field *f = &c->fields[c->n_fields - 1];
  if (c->last_cb == 2)
    f->vl += len;
  else
    f->vo = (size_t)(at - c->head), f->vl = len;
  c->last_cb = 2;
  return 0;
}

static int on_headers_complete(http_parser *p) {
  conn_t *c = p->data;
  c->headers_done = 1;
  /* A forwarded request's body waits until upstream is connected. */
  if (p->method != HTTP_CONNECT) http_parser_pause(p, 1);
  return 0;
}

static void on_header_timeout(uv_timer_t *t) {
  reply_and_close(t->data, 408, "Request Timeout", NULL, NULL, "header_timeout");
}

static void alloc_head(uv_handle_t *h, size_t suggested, uv_buf_t *buf) {
  (void)suggested;
  conn_t *c = h->data;
  /* One byte more than the limit may arrive, so that "too large" is seen. */
  size_t room = cfg.header_bytes + 1 - c->head_len;
  *buf = uv_buf_init(c->head + c->head_len, (unsigned)(room < 65536 ? room : 65536));
}

static void head_read(uv_stream_t *s, ssize_t nread, const uv_buf_t *buf) {
  (void)buf;
  conn_t *c = s->data;
  if (nread == 0) return;
  if (nread < 0) {
    conn_close(c, "client_closed");
    return;
  }
  size_t start = c->head_len;
  c->head_len += (size_t)nread;
  size_t used = http_parser_execute(&c->parser, &c->settings, c->head + start, (size_t)nread);
  c->head_used = start + used;
  if (c->url_too_long) {
    reply_and_close(c, 414, "URI Too Long", "http_request_error", NULL, "bad_request");
  } else if (c->too_many_fields) {
    reply_and_close(c, 431, "Request Header Fields Too Large", "http_request_error", NULL,
                    "header_too_large");
  } else if (c->headers_done) {
    if (c->head_used > cfg.header_bytes) {
      reply_and_close(c, 431, "Request Header Fields Too Large", "http_request_error", NULL,
                      "header_too_large");
      return;
    }
    if (c->parser.method != HTTP_CONNECT) {
      start_forward_check(c);
      return;
    }
    if (c->head_used > cfg.header_bytes) {
      reply_and_close(c, 431, "Request Header Fields Too Large", "http_request_error", NULL,
                      "header_too_large");
      return;
    }
    start_check(c);
  } else if (HTTP_PARSER_ERRNO(&c->parser) != HPE_OK) {
    reply_and_close(c, 400, "Bad Request", "http_request_error", NULL, "bad_request");
  } else if (c->head_len > cfg.header_bytes) {
    reply_and_close(c, 431, "Request Header Fields Too Large", "http_request_error", NULL,
                    "header_too_large");
  }
}

static void on_over_limit_written(uv_write_t *w, int status) {
  (void)status;
  uv_close((uv_handle_t *)w->handle, (uv_close_cb)free);
  free(w);
}

static void on_accept(uv_stream_t *server, int status) {
  if (status != 0) return;
  if (active >= cfg.max_connections) {
    /* Answered without a connection state: a flood costs one reply each. */
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
    static const char busy[] =
        "HTTP/1.1 503 Service Unavailable\r\nProxy-Status: egressd; error=proxy_internal_error; "
        "details=\"connection limit\"\r\nContent-Length: 0\r\nConnection: close\r\n\r\n";
    uv_buf_t b = uv_buf_init((char *)busy, sizeof busy - 1);
    if (uv_write(w, (uv_stream_t *)t, &b, 1, on_over_limit_written) != 0) {
      free(w);
      uv_close((uv_handle_t *)t, (uv_close_cb)free);
    }
    return;
  }
  conn_t *c = calloc(1, sizeof *c);
  if (!c || !(c->head = malloc(cfg.header_bytes + 1))) {
    free(c);
    return;
  }
  active++;
  c->next = conns;
  if (conns) conns->prev = c;
  conns = c;
  c->t0 = now_ms();
  uv_tcp_init(loop, &c->client.tcp);
  uv_timer_init(loop, &c->timer);
  c->client.tcp.data = c;
  c->timer.data = c;
  c->client.open = 1;
  c->handles = 2;
  if (uv_accept(server, (uv_stream_t *)&c->client.tcp) != 0) {
    conn_close(c, "accept_failed");
    return;
  }
  http_parser_init(&c->parser, HTTP_REQUEST);
  c->parser.data = c;
  http_parser_settings_init(&c->settings);
  c->settings.on_url = on_url;
  c->settings.on_headers_complete = on_headers_complete;
  c->settings.on_header_field = on_header_field;
  c->settings.on_header_value = on_header_value;
  uv_timer_start(&c->timer, on_header_timeout, cfg.header_timeout_ms, 0);
  uv_read_start((uv_stream_t *)&c->client.tcp, alloc_head, head_read);
}

/* ---- signals and setup -------------------------------------------------------- */

static void on_hup(uv_signal_t *s, int signum) {
  (void)s;
  (void)signum;
  char err[512];
  egress_policy_t *p = NULL;
  if (egress_policy_from_file(cfg.policy_path, &p, err, sizeof err) != EGRESS_OK) {
    log_json("error", "policy reload failed; the previous policy stays", err);
    return;
  }
  egress_status_t st = egress_checker_set_policy(checker, p);
  if (st != EGRESS_OK)
    log_json("error", "policy reload failed; the previous policy stays", egress_status_name(st));
  else
    log_json("info", "policy reloaded", egress_policy_digest(p));
  egress_policy_unref(p);
}

/* What is still open at the deadline is closed (each with its close
 * event); the loop stops when the last of them is gone. */
static void on_drain_deadline(uv_timer_t *t) {
  (void)t;
  for (conn_t *c = conns; c; c = c->next) conn_close(c, "drain_deadline");
}

static void on_term(uv_signal_t *s, int signum) {
  (void)s;
  (void)signum;
  if (draining) return;
  draining = 1;
  log_json("info", "draining", NULL);
  uv_close((uv_handle_t *)&listener, NULL);
  if (active == 0) {
    uv_stop(loop);
    return;
  }
  uv_timer_init(loop, &drain_timer);
  uv_timer_start(&drain_timer, on_drain_deadline, cfg.drain_timeout_ms, 0);
  uv_unref((uv_handle_t *)&drain_timer);
}

static void close_any(uv_handle_t *h, void *arg) {
  (void)arg;
  if (!uv_is_closing(h)) uv_close(h, NULL);
}

static int parse_uint(const char *s, unsigned *out) {
  char *end;
  errno = 0;
  unsigned long v = strtoul(s, &end, 10);
  if (!*s || *end || errno || v > 0x7fffffffUL) return -1;
  *out = (unsigned)v;
  return 0;
}

static int parse_listen(const char *s, struct sockaddr_storage *ss) {
  char host[128];
  const char *colon = strrchr(s, ':');
  unsigned port;
  if (!colon || (size_t)(colon - s) >= sizeof host || parse_uint(colon + 1, &port) || port > 65535) return -1;
  memcpy(host, s, (size_t)(colon - s));
  host[colon - s] = '\0';
  if (host[0] == '[' && host[strlen(host) - 1] == ']') {
    host[strlen(host) - 1] = '\0';
    return uv_ip6_addr(host + 1, (int)port, (struct sockaddr_in6 *)ss);
  }
  return uv_ip4_addr(host, (int)port, (struct sockaddr_in *)ss);
}

int main(int argc, char **argv) {
  signal(SIGPIPE, SIG_IGN);
  for (int i = 1; i < argc; i++) {
    const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
    unsigned *num = NULL;
    if (!strcmp(a, "--help")) {
      fputs(usage_text, stdout);
      return 0;
    }
    if (!v) {
      fprintf(stderr, "egressd: %s: unknown option or missing value (see --help)\n", a);
      return EXIT_USAGE;
    }
    i++;
    if (!strcmp(a, "--listen"))
      cfg.listen = v;
    else if (!strcmp(a, "--policy"))
      cfg.policy_path = v;
    else if (!strcmp(a, "--dns-server"))
      cfg.dns_server = v;
    else if (!strcmp(a, "--events-path"))
      cfg.events_path = v;
    else if (!strcmp(a, "--port-file"))
      cfg.port_file = v;
    else if (!strcmp(a, "--context")) {
      const char *eq = strchr(v, '=');
      int known = 0;
#define KNOWN(name, value, key) \
  known |= eq && (size_t)(eq - v) == strlen(key) && !strncmp(v, key, strlen(key));
      EGRESS_FIELD_MAP(KNOWN)
#undef KNOWN
      if (!known || cfg.n_context == 8) {
        fprintf(stderr, "egressd: --context %s: want KEY=VALUE with a known key\n", v);
        return EXIT_USAGE;
      }
      static char keys[8][32];
      snprintf(keys[cfg.n_context], sizeof keys[0], "%.*s", (int)(eq - v), v);
      cfg.context[cfg.n_context][0] = keys[cfg.n_context];
      cfg.context[cfg.n_context++][1] = eq + 1;
    } else if (!strcmp(a, "--max-connections"))
      num = &cfg.max_connections;
    else if (!strcmp(a, "--header-bytes"))
      num = &cfg.header_bytes;
    else if (!strcmp(a, "--header-timeout-ms"))
      num = &cfg.header_timeout_ms;
    else if (!strcmp(a, "--idle-timeout-ms"))
      num = &cfg.idle_timeout_ms;
    else if (!strcmp(a, "--connect-timeout-ms"))
      num = &cfg.connect_timeout_ms;
    else if (!strcmp(a, "--dns-cache")) {
      unsigned n;
      if (parse_uint(v, &n)) {
        fprintf(stderr, "egressd: --dns-cache %s: want a number of names\n", v);
        return EXIT_USAGE;
      }
      cfg.dns_cache = n;
    } else if (!strcmp(a, "--drain-timeout-ms"))
      num = &cfg.drain_timeout_ms;
    else {
      fprintf(stderr, "egressd: %s: unknown option (see --help)\n", a);
      return EXIT_USAGE;
    }
    if (num && (parse_uint(v, num) || *num == 0)) {
      fprintf(stderr, "egressd: %s %s: want a positive number\n", a, v);
      return EXIT_USAGE;
    }
  }
  if (!cfg.policy_path) {
    fputs("egressd: --policy FILE is required (see --help)\n", stderr);
    return EXIT_USAGE;
  }
  struct sockaddr_storage bind_addr;
  memset(&bind_addr, 0, sizeof bind_addr);
  if (parse_listen(cfg.listen, &bind_addr) != 0) {
    fprintf(stderr, "egressd: --listen %s: want IP:PORT\n", cfg.listen);
    return EXIT_USAGE;
  }

  char err[512];
  egress_policy_t *policy = NULL;
  if (egress_policy_from_file(cfg.policy_path, &policy, err, sizeof err) != EGRESS_OK) {
    fprintf(stderr, "egressd: %s\n", err);
    return EXIT_DATAERR;
  }
  if (cfg.events_path) {
    events_fd = open(cfg.events_path, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0640);
    if (events_fd < 0) {
      fprintf(stderr, "egressd: %s: %s\n", cfg.events_path, strerror(errno));
      egress_policy_unref(policy);
      return EXIT_SOFTWARE;
    }
  }
  egress_options_t *opts = NULL;
  egress_status_t st = egress_options_new(&opts);
  if (st == EGRESS_OK && cfg.dns_server) st = egress_options_set_dns_servers(opts, cfg.dns_server);
  if (st == EGRESS_OK && cfg.dns_cache >= 0)
    st = egress_options_set_cache(opts, (uint32_t)cfg.dns_cache, 0, 86400, 60);
  if (st == EGRESS_OK) st = egress_options_set_event_source(opts, "egressd");
  if (st == EGRESS_OK) st = egress_options_set_event_fd(opts, events_fd);
  if (st == EGRESS_OK) st = egress_checker_new(policy, opts, &checker, err, sizeof err);
  egress_options_free(opts);
  egress_policy_unref(policy);
  if (st != EGRESS_OK) {
    fprintf(stderr, "egressd: checker: %s (%s)\n", egress_status_name(st), err);
    return EXIT_SOFTWARE;
  }

  loop = uv_default_loop();
  if (egress_uv_new(loop, checker, &checker_uv) != EGRESS_OK) {
    fputs("egressd: cannot attach the checker to the loop\n", stderr);
    return EXIT_SOFTWARE;
  }
  int rc = uv_tcp_init(loop, &listener);
  if (rc == 0) rc = uv_tcp_bind(&listener, (const struct sockaddr *)&bind_addr, 0);
  if (rc == 0) rc = uv_listen((uv_stream_t *)&listener, 511, on_accept);
  if (rc != 0) {
    fprintf(stderr, "egressd: listen on %s: %s\n", cfg.listen, uv_strerror(rc));
    return EXIT_SOFTWARE;
  }
  struct sockaddr_storage bound;
  int blen = sizeof bound;
  uv_tcp_getsockname(&listener, (struct sockaddr *)&bound, &blen);
  int port = ntohs(bound.ss_family == AF_INET6 ? ((struct sockaddr_in6 *)&bound)->sin6_port
                                               : ((struct sockaddr_in *)&bound)->sin_port);
  if (cfg.port_file) {
    FILE *pf = fopen(cfg.port_file, "w");
    if (!pf || fprintf(pf, "%d\n", port) < 0 || fclose(pf) != 0) {
      fprintf(stderr, "egressd: %s: cannot write the port\n", cfg.port_file);
      return EXIT_SOFTWARE;
    }
  }
  fprintf(stderr, "PORT %d\n", port);
  fflush(stderr);

  uv_signal_init(loop, &sig_hup);
  uv_signal_init(loop, &sig_term);
  uv_signal_init(loop, &sig_int);
  uv_signal_start(&sig_hup, on_hup, SIGHUP);
  uv_signal_start(&sig_term, on_term, SIGTERM);
  uv_signal_start(&sig_int, on_term, SIGINT);

  uv_run(loop, UV_RUN_DEFAULT);

  egress_uv_close(checker_uv, NULL, NULL);
  uv_walk(loop, close_any, NULL);
  uv_run(loop, UV_RUN_DEFAULT);
  (void)uv_loop_close(loop);
  egress_checker_free(checker);
  if (events_fd != 1) close(events_fd);
  return 0;
}
