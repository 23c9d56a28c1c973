/* egressd: accepting clients within the limits, reading the request head,
 * the check, and connecting to the vetted addresses; see egressd.h. */
#include "egressd.h"

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

int on_headers_complete(http_parser *p) {
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

void on_accept(uv_stream_t *server, int status) {
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
