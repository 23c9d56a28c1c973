/* egressd: the per-client connection limit (--max-client-connections) and
 * the rate-limited log of refusals; see admin.h.
 *
 * A client is its IP address as accepted (the port is the client's to
 * change).  One workload that opens connections without bound would
 * otherwise take every slot of --max-connections from its neighbours. */
#include "egressd.h"

enum { CLIENT_BUCKETS = 1024, LOG_INTERVAL_MS = 1000 };

typedef struct client {
  struct client *next;
  unsigned char addr[16];
  size_t addr_len, bucket;
  unsigned conns;
} client_t;

static client_t *clients[CLIENT_BUCKETS];

/* The address bytes of a peer (4 or 16) and its text; 0 on failure. */
static size_t peer_of(const uv_tcp_t *t, unsigned char addr[16], char *text, size_t text_len) {
  struct sockaddr_storage ss;
  int len = sizeof ss;
  if (uv_tcp_getpeername(t, (struct sockaddr *)&ss, &len) != 0) return 0;
  if (ss.ss_family == AF_INET) {
    const struct sockaddr_in *in = (const struct sockaddr_in *)&ss;
    memcpy(addr, &in->sin_addr, 4);
    if (text) uv_ip4_name(in, text, text_len);
    return 4;
  }
  if (ss.ss_family == AF_INET6) {
    const struct sockaddr_in6 *in6 = (const struct sockaddr_in6 *)&ss;
    memcpy(addr, &in6->sin6_addr, 16);
    if (text) uv_ip6_name(in6, text, text_len);
    return 16;
  }
  return 0;
}

static size_t bucket_of(const unsigned char *addr, size_t len) {
  uint32_t h = 2166136261u; /* FNV-1a */
  for (size_t i = 0; i < len; i++) h = (h ^ addr[i]) * 16777619u;
  return h % CLIENT_BUCKETS;
}

/* ---- the log of refusals --------------------------------------------------- */

/* A flood of refused connections is one line a second per limit, with
 * the count since the last line and the latest client. */
static struct refusal_log {
  uv_timer_t timer;
  int timer_ready, logged;
  uint64_t last_ms, pending;
  char client[64];
} rlog[N_LIMITS];

static void log_refusals(limit_kind_t k) {
  struct refusal_log *r = &rlog[k];
  cJSON *f = cJSON_CreateObject();
  cJSON_AddStringToObject(f, "limit", limit_names[k]);
  cJSON_AddNumberToObject(f, "max", k == LIMIT_CLIENT ? ops_cfg.max_client_connections : cfg.max_connections);
  cJSON_AddNumberToObject(f, "refused", (double)r->pending);
  cJSON_AddStringToObject(f, "lastClient", r->client);
  log_json_fields("warn", "connections refused by a limit", f);
  r->pending = 0;
  r->logged = 1;
  r->last_ms = now_ms();
}

static void on_log_interval(uv_timer_t *t) {
  limit_kind_t k = (limit_kind_t)(intptr_t)t->data;
  if (rlog[k].pending) log_refusals(k);
}

void limits_refused(limit_kind_t k, const uv_tcp_t *client) {
  struct refusal_log *r = &rlog[k];
  unsigned char addr[16];
  /* Over the client limit, the connection was counted in limits_admit. */
  if (k == LIMIT_CONNECTIONS) stats_accepted();
  stats_refused(k);
  r->pending++;
  if (!peer_of(client, addr, r->client, sizeof r->client)) snprintf(r->client, sizeof r->client, "unknown");
  uint64_t now = now_ms();
  if (!r->logged || now - r->last_ms >= LOG_INTERVAL_MS) {
    log_refusals(k);
    return;
  }
  if (!r->timer_ready) {
    uv_timer_init(loop, &r->timer);
    uv_unref((uv_handle_t *)&r->timer);
    r->timer.data = (void *)(intptr_t)k;
    r->timer_ready = 1;
  }
  if (!uv_is_active((uv_handle_t *)&r->timer))
    uv_timer_start(&r->timer, on_log_interval, r->last_ms + LOG_INTERVAL_MS - now, 0);
}

void limits_flush(void) {
  for (int k = 0; k < N_LIMITS; k++)
    if (rlog[k].pending) log_refusals((limit_kind_t)k);
}

/* ---- refusing a client over its limit ---------------------------------------- */

/* Closed as soon as the 503 is written, without the second of lingering
 * that conn.c gives its error replies: a refused connection keeps its
 * slot of --max-connections while it is open, and a client flooding past
 * its own limit must not fill the gateway's with refusals.  (What the
 * client sent meanwhile may reset the connection after the 503, as with
 * --max-connections.) */
static void on_refusal_written(uv_write_t *w, int status) {
  (void)status;
  conn_t *c = w->data;
  free(w);
  conn_close(c, NULL);
}

/* The 503 of a client over its limit; the connection ends after it. */
static void refuse(conn_t *c) {
  static const char busy[] =
      "HTTP/1.1 503 Service Unavailable\r\nProxy-Status: egressd; error=proxy_internal_error; "
      "details=\"client connection limit\"\r\nContent-Length: 0\r\nConnection: close\r\n\r\n";
  limits_refused(LIMIT_CLIENT, &c->client.tcp);
  c->phase = PH_REPLYING;
  c->status = 503;
  c->ended = "client_limit";
  uv_write_t *w = malloc(sizeof *w);
  uv_buf_t buf = uv_buf_init((char *)busy, sizeof busy - 1);
  if (w) w->data = c;
  if (!w || uv_write(w, (uv_stream_t *)&c->client.tcp, &buf, 1, on_refusal_written) != 0) {
    free(w);
    conn_close(c, NULL);
  }
}

int limits_admit(conn_t *c) {
  stats_accepted();
  if (!ops_cfg.max_client_connections) return 0;
  unsigned char addr[16];
  size_t len = peer_of(&c->client.tcp, addr, NULL, 0);
  /* A peer already gone has no address; its connection ends on its own. */
  if (!len) return 0;
  size_t b = bucket_of(addr, len);
  client_t *cl = clients[b];
  while (cl && !(cl->addr_len == len && !memcmp(cl->addr, addr, len))) cl = cl->next;
  if (cl && cl->conns >= ops_cfg.max_client_connections) {
    refuse(c);
    return -1;
  }
  if (!cl) {
    if (!(cl = calloc(1, sizeof *cl))) return 0;
    memcpy(cl->addr, addr, len);
    cl->addr_len = len;
    cl->bucket = b;
    cl->next = clients[b];
    clients[b] = cl;
  }
  cl->conns++;
  c->client_slot = cl;
  return 0;
}

void limits_release(conn_t *c) {
  client_t *cl = c->client_slot;
  if (!cl) return;
  c->client_slot = NULL;
  if (--cl->conns > 0) return;
  client_t **p = &clients[cl->bucket];
  while (*p != cl) p = &(*p)->next;
  *p = cl->next;
  free(cl);
}
