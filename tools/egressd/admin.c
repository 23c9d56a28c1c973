/* egressd: the admin listener (/healthz, /readyz, /metrics) and the
 * figures /metrics exposes; see admin.h.
 *
 * The admin side never shares the proxy's listener nor its limits: a
 * flood of proxy clients must not hide the gateway from its probes, nor a
 * scraper take a proxy slot.  Requests are framed by http_parser. */
#include "egressd.h"

#include <stdarg.h>

enum {
  ADMIN_MAX_CONNS = 64,  /* admin connections at once; past it, 503 */
  ADMIN_HEAD_MAX = 8192, /* request bytes; past it, 431 */
  ADMIN_URL_MAX = 1024,  /* request target; past it, 414 */
  MAX_OUTCOMES = 256     /* (kind, status, ended) kept apart; the last slot takes the rest */
};

const char *const limit_names[N_LIMITS] = { "connections", "client" };
const char *const trigger_names[N_TRIGGERS] = { "signal", "file" };

/* ---- figures -------------------------------------------------------------- */

/* Bucket bounds in seconds: tunnels live from milliseconds to hours. */
static const double bounds[] = { 0.005, 0.025, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 900, 3600 };
enum { N_BOUNDS = sizeof bounds / sizeof bounds[0] };

typedef struct histogram {
  uint64_t in[N_BOUNDS + 1]; /* per bucket, not cumulative; the last is +Inf */
  uint64_t count;
  double sum;
} histogram_t;

/* What a closed exchange is, as a label: no check was made (the request
 * was refused before one), a CONNECT tunnel, or a forwarded exchange. */
static const char *const kind_names[] = { "none", "tunnel", "forward" };

typedef struct outcome {
  int kind, status;
  char ended[32];
  uint64_t n;
} outcome_t;

static struct {
  uint64_t accepted, refused[N_LIMITS], bytes_up, bytes_down, connect_refused, connect_timeout;
  uint64_t reloads[N_TRIGGERS], reload_failures[N_TRIGGERS];
  histogram_t duration[3]; /* by kind; "none" stays empty */
  outcome_t outcomes[MAX_OUTCOMES];
  size_t n_outcomes;
} st;

void stats_accepted(void) { st.accepted++; }

void stats_refused(limit_kind_t limit) { st.refused[limit]++; }

void stats_reload(reload_trigger_t trigger, int ok) {
  if (ok)
    st.reloads[trigger]++;
  else
    st.reload_failures[trigger]++;
}

static void count_outcome(int kind, int status, const char *ended) {
  for (size_t i = 0; i < st.n_outcomes; i++) {
    outcome_t *o = &st.outcomes[i];
    if (o->kind == kind && o->status == status && !strcmp(o->ended, ended)) {
      o->n++;
      return;
    }
  }
  /* Upstream statuses are the upstream's choice: the set of labels stays
   * bounded however many it invents. */
  if (st.n_outcomes == MAX_OUTCOMES - 1) {
    outcome_t *rest = &st.outcomes[MAX_OUTCOMES - 1];
    rest->kind = -1;
    rest->n++;
    return;
  }
  outcome_t *o = &st.outcomes[st.n_outcomes++];
  o->kind = kind;
  o->status = status;
  snprintf(o->ended, sizeof o->ended, "%s", ended);
  o->n = 1;
}

void stats_closed(const conn_t *c) {
  int kind = !c->host[0] ? 0 : c->forward ? 2 : 1;
  const char *ended = c->ended ? c->ended : "closed";
  /* A connection that closed before asking anything made no request. */
  if (kind == 0 && c->status == 0) return;
  count_outcome(kind, c->status, ended);
  if (!strcmp(ended, "connect_timeout")) st.connect_timeout++;
  if (!strcmp(ended, "connect_failed")) st.connect_refused++;
  if (kind == 0) return;
  st.bytes_up += c->up_bytes;
  st.bytes_down += c->down_bytes;
  histogram_t *h = &st.duration[kind];
  double secs = (double)(now_ms() - c->t0) / 1000.0;
  size_t b = 0;
  while (b < N_BOUNDS && secs > bounds[b]) b++;
  h->in[b]++;
  h->count++;
  h->sum += secs;
}

/* ---- the exposition (text format 0.0.4) ------------------------------------ */

typedef struct text {
  char *s;
  size_t len, cap;
  int failed;
} text_t;

static void put(text_t *t, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void put(text_t *t, const char *fmt, ...) {
  if (t->failed) return;
  for (;;) {
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(t->s + t->len, t->cap - t->len, fmt, ap);
    va_end(ap);
    if (n < 0) {
      t->failed = 1;
      return;
    }
    if ((size_t)n < t->cap - t->len) {
      t->len += (size_t)n;
      return;
    }
    size_t cap = t->cap * 2 + (size_t)n;
    char *s = realloc(t->s, cap);
    if (!s) {
      t->failed = 1;
      return;
    }
    t->s = s;
    t->cap = cap;
  }
}

static void family(text_t *t, const char *name, const char *type, const char *help) {
  put(t, "# HELP %s %s\n# TYPE %s %s\n", name, help, name, type);
}

/* The checker's counters, then egressd's own; NULL when out of memory. */
static char *render_metrics(void) {
  text_t t = { malloc(4096), 0, 4096, 0 };
  if (!t.s) return NULL;
  t.s[0] = '\0';
  char *lib = egress_checker_metrics(checker);
  if (lib) put(&t, "%s", lib);
  egress_free(lib);

  family(&t, "egressd_connections_accepted_total", "counter",
         "Client connections accepted, those then refused by a limit included.");
  put(&t, "egressd_connections_accepted_total %llu\n", (unsigned long long)st.accepted);
  family(&t, "egressd_connections_open", "gauge", "Client connections open now.");
  put(&t, "egressd_connections_open %u\n", active);
  family(&t, "egressd_connections_refused_total", "counter",
         "Client connections refused with 503, by limit.");
  for (int i = 0; i < N_LIMITS; i++)
    put(&t, "egressd_connections_refused_total{limit=\"%s\"} %llu\n", limit_names[i],
        (unsigned long long)st.refused[i]);
  family(&t, "egressd_bytes_total", "counter",
         "Bytes relayed: up is client to upstream, down is upstream to client.");
  put(&t, "egressd_bytes_total{direction=\"up\"} %llu\negressd_bytes_total{direction=\"down\"} %llu\n",
      (unsigned long long)st.bytes_up, (unsigned long long)st.bytes_down);
  family(&t, "egressd_exchange_duration_seconds", "histogram",
         "Closed CONNECT tunnels and forwarded exchanges, from when the request was awaited to the end.");
  for (int k = 1; k <= 2; k++) {
    const histogram_t *h = &st.duration[k];
    uint64_t cumulative = 0;
    for (int b = 0; b <= N_BOUNDS; b++) {
      cumulative += h->in[b];
      if (b < N_BOUNDS)
        put(&t, "egressd_exchange_duration_seconds_bucket{kind=\"%s\",le=\"%g\"} %llu\n", kind_names[k],
            bounds[b], (unsigned long long)cumulative);
      else
        put(&t, "egressd_exchange_duration_seconds_bucket{kind=\"%s\",le=\"+Inf\"} %llu\n", kind_names[k],
            (unsigned long long)cumulative);
    }
    put(&t, "egressd_exchange_duration_seconds_sum{kind=\"%s\"} %.3f\n", kind_names[k], h->sum);
    put(&t, "egressd_exchange_duration_seconds_count{kind=\"%s\"} %llu\n", kind_names[k],
        (unsigned long long)h->count);
  }
  family(&t, "egressd_relay_buffers", "gauge",
         "4 MiB relay buffers of bulk tunnels made, in use or kept for reuse (at most --bulk-buffers).");
  put(&t, "egressd_relay_buffers %u\n", bulk_buffers_made());
  family(&t, "egressd_relay_buffer_shortfalls_total", "counter",
         "Times a bulk tunnel's direction, about to read, found no 4 MiB buffer free and moved 64 KiB at a "
         "time.");
  put(&t, "egressd_relay_buffer_shortfalls_total %llu\n", bulk_buffer_shortfalls());
  family(&t, "egressd_upstream_connect_failures_total", "counter",
         "Allowed destinations not reached: every vetted address refused, or the connect timeout.");
  put(&t,
      "egressd_upstream_connect_failures_total{reason=\"refused\"} %llu\n"
      "egressd_upstream_connect_failures_total{reason=\"timeout\"} %llu\n",
      (unsigned long long)st.connect_refused, (unsigned long long)st.connect_timeout);
  family(&t, "egressd_requests_total", "counter",
         "Requests by kind (tunnel, forward, none: refused before a check), status answered and how "
         "they ended.");
  for (size_t i = 0; i < MAX_OUTCOMES; i++) {
    const outcome_t *o = &st.outcomes[i];
    if (o->n == 0) continue;
    if (o->kind < 0)
      put(&t, "egressd_requests_total{kind=\"other\",status=\"other\",ended=\"other\"} %llu\n",
          (unsigned long long)o->n);
    else
      put(&t, "egressd_requests_total{kind=\"%s\",status=\"%d\",ended=\"%s\"} %llu\n", kind_names[o->kind],
          o->status, o->ended, (unsigned long long)o->n);
  }
  family(&t, "egressd_policy_reloads_total", "counter",
         "Reloads that replaced the policy, by trigger (a file that did not change it is none).");
  for (int i = 0; i < N_TRIGGERS; i++)
    put(&t, "egressd_policy_reloads_total{trigger=\"%s\"} %llu\n", trigger_names[i],
        (unsigned long long)st.reloads[i]);
  family(&t, "egressd_policy_reload_failures_total", "counter",
         "Reloads refused (the previous policy stays), by trigger.");
  for (int i = 0; i < N_TRIGGERS; i++)
    put(&t, "egressd_policy_reload_failures_total{trigger=\"%s\"} %llu\n", trigger_names[i],
        (unsigned long long)st.reload_failures[i]);
  egress_policy_t *p = egress_checker_policy(checker);
  family(&t, "egressd_policy_info", "gauge", "The policy in force, by its digest (SHA-256).");
  if (p) put(&t, "egressd_policy_info{digest=\"%s\"} 1\n", egress_policy_digest(p));
  egress_policy_unref(p);
  family(&t, "egressd_draining", "gauge", "1 after SIGTERM, while open connections drain.");
  put(&t, "egressd_draining %d\n", draining ? 1 : 0);
  if (t.failed) {
    free(t.s);
    return NULL;
  }
  return t.s;
}

/* ---- admin connections --------------------------------------------------------- */

typedef struct admin_conn {
  uv_tcp_t tcp;
  uv_timer_t timer;
  uv_write_t wreq;
  http_parser parser;
  char buf[2048];
  size_t received, url_len;
  char url[ADMIN_URL_MAX];
  int url_too_long, complete, answered, closing, handles;
  char *out;
  struct admin_conn *prev, *next;
} admin_conn_t;

static uv_tcp_t admin_listener;
static int admin_listening, admin_bound_port;
static admin_conn_t *admin_conns;
static unsigned admin_open;
static http_parser_settings admin_settings;

static void admin_handle_closed(uv_handle_t *h) {
  admin_conn_t *a = h->data;
  if (--a->handles > 0) return;
  if (a->prev)
    a->prev->next = a->next;
  else
    admin_conns = a->next;
  if (a->next) a->next->prev = a->prev;
  admin_open--;
  free(a->out);
  free(a);
}

static void admin_close(admin_conn_t *a) {
  if (a->closing) return;
  a->closing = 1;
  uv_close((uv_handle_t *)&a->timer, admin_handle_closed);
  uv_close((uv_handle_t *)&a->tcp, admin_handle_closed);
}

static void admin_written(uv_write_t *w, int status) {
  (void)status;
  admin_close(w->data);
}

/* One response a connection, then close: probes and scrapers reconnect. */
static void answer(admin_conn_t *a, int status, const char *reason, const char *type, const char *extra,
                   const char *body) {
  a->answered = 1;
  uv_read_stop((uv_stream_t *)&a->tcp);
  size_t blen = strlen(body), cap = blen + 256;
  if (!(a->out = malloc(cap))) {
    admin_close(a);
    return;
  }
  int n = snprintf(a->out, cap,
                   "HTTP/1.1 %d %s\r\nContent-Type: %s\r\nContent-Length: %zu\r\n%sConnection: close\r\n\r\n",
                   status, reason, type, blen, extra ? extra : "");
  if (n < 0 || (size_t)n + blen >= cap) {
    admin_close(a);
    return;
  }
  memcpy(a->out + n, body, blen);
  uv_buf_t b = uv_buf_init(a->out, (unsigned)((size_t)n + blen));
  a->wreq.data = a;
  if (uv_write(&a->wreq, (uv_stream_t *)&a->tcp, &b, 1, admin_written) != 0) admin_close(a);
}

static int is_path(const char *path, size_t len, const char *want) {
  return len == strlen(want) && !memcmp(path, want, len);
}

static void route(admin_conn_t *a) {
  static const char text[] = "text/plain; charset=utf-8";
  struct http_parser_url u;
  http_parser_url_init(&u);
  if (http_parser_parse_url(a->url, a->url_len, 0, &u) != 0 || !(u.field_set & (1 << UF_PATH)) ||
      (u.field_set & (1 << UF_HOST))) {
    answer(a, 400, "Bad Request", text, NULL, "bad request\n");
    return;
  }
  if (a->parser.method != HTTP_GET) {
    answer(a, 405, "Method Not Allowed", text, "Allow: GET\r\n", "method not allowed\n");
    return;
  }
  const char *path = a->url + u.field_data[UF_PATH].off;
  size_t pl = u.field_data[UF_PATH].len;
  if (is_path(path, pl, "/healthz")) {
    answer(a, 200, "OK", text, NULL, "ok\n");
  } else if (is_path(path, pl, "/readyz")) {
    egress_policy_t *p = egress_checker_policy(checker);
    int ready = p && !draining;
    egress_policy_unref(p);
    if (ready)
      answer(a, 200, "OK", text, NULL, "ready\n");
    else
      answer(a, 503, "Service Unavailable", text, NULL, draining ? "draining\n" : "no policy\n");
  } else if (is_path(path, pl, "/metrics")) {
    char *m = render_metrics();
    if (m)
      answer(a, 200, "OK", "text/plain; version=0.0.4", NULL, m);
    else
      answer(a, 500, "Internal Server Error", text, NULL, "out of memory\n");
    free(m);
  } else {
    answer(a, 404, "Not Found", text, NULL, "not found\n");
  }
}

static int admin_on_url(http_parser *p, const char *at, size_t len) {
  admin_conn_t *a = p->data;
  if (a->url_len + len >= sizeof a->url) {
    a->url_too_long = 1;
    return 1;
  }
  memcpy(a->url + a->url_len, at, len);
  a->url_len += len;
  return 0;
}

static int admin_on_complete(http_parser *p) {
  admin_conn_t *a = p->data;
  a->complete = 1;
  /* Pipelined requests after the first are not read. */
  http_parser_pause(p, 1);
  return 0;
}

static void admin_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *buf) {
  (void)suggested;
  admin_conn_t *a = h->data;
  *buf = uv_buf_init(a->buf, sizeof a->buf);
}

static void admin_read(uv_stream_t *s, ssize_t nread, const uv_buf_t *buf) {
  admin_conn_t *a = s->data;
  if (nread == 0 || a->answered) return;
  if (nread < 0) {
    admin_close(a);
    return;
  }
  static const char text[] = "text/plain; charset=utf-8";
  a->received += (size_t)nread;
  http_parser_execute(&a->parser, &admin_settings, buf->base, (size_t)nread);
  enum http_errno e = HTTP_PARSER_ERRNO(&a->parser);
  if (a->url_too_long)
    answer(a, 414, "URI Too Long", text, NULL, "uri too long\n");
  else if (a->complete)
    route(a);
  else if (e != HPE_OK)
    answer(a, 400, "Bad Request", text, NULL, "bad request\n");
  else if (a->received > ADMIN_HEAD_MAX)
    answer(a, 431, "Request Header Fields Too Large", text, NULL, "request too large\n");
}

/* A client that does not finish its request (or read its answer) within
 * --header-timeout-ms is dropped. */
static void admin_timeout(uv_timer_t *t) { admin_close(t->data); }

static void admin_accept(uv_stream_t *server, int status) {
  if (status != 0) return;
  if (admin_open >= ADMIN_MAX_CONNS) {
    /* Answered without a connection state, as the proxy's own limit. */
    static const char busy[] =
        "HTTP/1.1 503 Service Unavailable\r\nContent-Length: 0\r\nConnection: close\r\n\r\n";
    refuse_at_accept(server, busy, sizeof busy - 1, NULL);
    return;
  }
  admin_conn_t *a = calloc(1, sizeof *a);
  if (!a) return;
  admin_open++;
  a->next = admin_conns;
  if (admin_conns) admin_conns->prev = a;
  admin_conns = a;
  uv_tcp_init(loop, &a->tcp);
  uv_timer_init(loop, &a->timer);
  a->tcp.data = a->timer.data = a;
  a->handles = 2;
  if (uv_accept(server, (uv_stream_t *)&a->tcp) != 0) {
    admin_close(a);
    return;
  }
  http_parser_init(&a->parser, HTTP_REQUEST);
  a->parser.data = a;
  uv_timer_start(&a->timer, admin_timeout, cfg.header_timeout_ms, 0);
  uv_read_start((uv_stream_t *)&a->tcp, admin_alloc, admin_read);
}

int admin_start(uv_loop_t *l, const struct sockaddr *addr) {
  http_parser_settings_init(&admin_settings);
  admin_settings.on_url = admin_on_url;
  admin_settings.on_message_complete = admin_on_complete;
  int rc = uv_tcp_init(l, &admin_listener);
  if (rc != 0) return rc;
  admin_listening = 1;
  rc = uv_tcp_bind(&admin_listener, addr, 0);
  if (rc == 0) rc = uv_listen((uv_stream_t *)&admin_listener, 64, admin_accept);
  if (rc != 0) return rc;
  struct sockaddr_storage bound;
  int blen = sizeof bound;
  uv_tcp_getsockname(&admin_listener, (struct sockaddr *)&bound, &blen);
  admin_bound_port = ntohs(bound.ss_family == AF_INET6 ? ((struct sockaddr_in6 *)&bound)->sin6_port
                                                       : ((struct sockaddr_in *)&bound)->sin_port);
  return 0;
}

int admin_port(void) { return admin_bound_port; }

void admin_stop(void) {
  if (admin_listening && !uv_is_closing((uv_handle_t *)&admin_listener))
    uv_close((uv_handle_t *)&admin_listener, NULL);
  for (admin_conn_t *a = admin_conns; a; a = a->next) admin_close(a);
}
