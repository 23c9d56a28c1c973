/* egressd: options, signals, events and main; see egressd.h. */
#include "egressd.h"

#include <time.h>

/* Attempt and connection events name the same source. */
#define EVENT_SOURCE     "egressd"
#define CLOSE_EVENT_TYPE "io.portarium.egress.connection"

config_t cfg = { "127.0.0.1:3128", NULL,  NULL,  NULL, NULL,         { { 0 } }, 0, 1024, 32 * 1024, 10000,
                 300000,           10000, 10000, -1,   RELAY_BUFFER, 16 };
uv_loop_t *loop;
egress_uv_t *checker_uv;
egress_checker_t *checker;
uv_tcp_t listener;
uv_signal_t sig_hup, sig_term, sig_int;
uv_timer_t drain_timer;
unsigned active;
int draining;
int events_fd = 1;
conn_t *conns;
ops_config_t ops_cfg;

/* In parts: ISO C bounds a string literal's length. */
static const char *const usage_text[] = {
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
  "    replies 200 and relays bytes both ways (bulk tunnels in large moves, see\n"
  "    --relay).  On deny it replies 403 with Proxy-Status (RFC 9209) and\n"
  "    X-Egress-Reason; a failed lookup is 502 dns_error, a refused connection\n"
  "    502 connection_refused, a timed-out one 504 connection_timeout.\n"
  "\n"
  "    Absolute-form HTTP/1.1 requests (GET http://host:port/path HTTP/1.1) are\n"
  "    checked as URLs (the method as context) and forwarded in origin-form to\n"
  "    a vetted address, with Via added.  Connections are kept alive: every\n"
  "    request on one is its own check and its own events; pipelined requests\n"
  "    are answered in order; the upstream connection serves the next request\n"
  "    only if that request's check vetted its address.  Hop-by-hop fields\n"
  "    (RFC 9110 7.6.1) are removed both ways; X-Egress-Run-Id and the other\n"
  "    X-Egress-* fields add to the check's context (never replacing\n"
  "    --context) and are not forwarded.  Refused with 400: origin-form,\n"
  "    https:// or userinfo in the URI, a Host field naming another authority,\n"
  "    Content-Length with Transfer-Encoding, repeated Content-Length, a coding\n"
  "    other than chunked, a folded field line, a field name that is not a\n"
  "    token, an unknown X-Egress-* field, HTTP/1.0.\n"
  "\n",
  "OPTIONS\n"
  "    --listen ADDR:PORT        where to listen (default 127.0.0.1:3128; port 0\n"
  "                              picks a free one).  Prints \"PORT <n>\" on stderr.\n"
  "    --port-file FILE          also write the bound port to FILE.\n"
  "    --policy FILE             policy file (required); reloaded on SIGHUP and\n"
  "                              when it changes (see RELOAD).\n"
  "    --dns-server IP:PORT      resolver to use instead of the system's (testing).\n"
  "    --dns-cache N             names the checker caches (0: none; each check asks).\n"
  "    --context KEY=VALUE       context of every check (workspaceId, agentId,\n"
  "                              machineId, runId, correlationId); repeatable.\n"
  "    --events-path FILE        append events (JSON Lines) to FILE (default stdout).\n"
  "    --max-connections N       client connections at once (default 1024); past\n"
  "                              it a client is answered 503.\n"
  "    --max-client-connections N\n"
  "                              connections (hence tunnels) at once from one\n"
  "                              client IP address, taken at accept (default 0:\n"
  "                              no such limit); past it 503 with Proxy-Status\n"
  "                              details=\"client connection limit\".\n"
  "    --admin ADDR:PORT         serve the admin endpoints there (default: none;\n"
  "                              port 0 picks a free one).  Prints\n"
  "                              \"ADMIN_PORT <n>\" on stderr.\n"
  "    --header-bytes N          request header block limit (default 32768); 431.\n"
  "    --header-timeout-ms N     time to send the request head (default 10000); 408.\n"
  "                              Also how long a kept-alive connection may wait\n"
  "                              for its next request (then closed, no answer).\n"
  "    --idle-timeout-ms N       tunnel and exchange idle limit (default 300000).\n"
  "    --connect-timeout-ms N    upstream connect limit over all addresses\n"
  "                              (default 10000); 504.\n"
  "    --drain-timeout-ms N      SIGTERM: time given to open tunnels (default 10000).\n"
  "    --relay buffer|splice|copy\n"
  "                              how bulk tunnels move bytes.  A tunnel starts\n"
  "                              with 64 KiB reads and writes; after 256 KiB it\n"
  "                              moves up to 4 MiB per read and write through a\n"
  "                              buffer held while the bytes wait (buffer, the\n"
  "                              default; the fastest measured), or through a\n"
  "                              pipe by splice(2), never copied into egressd\n"
  "                              (splice: less CPU, no buffers), or keeps its\n"
  "                              64 KiB moves (copy).\n"
  "    --bulk-buffers N          4 MiB buffers of --relay buffer at most (default\n"
  "                              16: 64 MiB); 0 to 1024.  A direction that finds\n"
  "                              none free moves 64 KiB at a time.\n"
  "    --help                    this text.\n"
  "\n",
  "ADMIN ENDPOINTS\n"
  "    A listener apart from the proxy's, with its own limit (64 connections\n"
  "    at once, 503 past it); a request must arrive within --header-timeout-ms\n"
  "    and within 8 KiB (431), its target within 1 KiB (414).  One GET a\n"
  "    connection, answered and closed:\n"
  "    GET /healthz   200 while the event loop runs.\n"
  "    GET /readyz    200 with a policy in force; 503 once draining (SIGTERM).\n"
  "    GET /metrics   Prometheus text format 0.0.4: the checker's counters\n"
  "                   (egress_*) and egressd's own (egressd_*): connections\n"
  "                   accepted, open, refused by limit; bytes each way; the\n"
  "                   duration histogram of tunnels and exchanges; upstream\n"
  "                   connect failures; requests by kind, status and ending;\n"
  "                   policy reloads and failures by trigger; the policy\n"
  "                   digest; whether draining.\n"
  "    Another path is 404, another method 405, a malformed request 400.\n"
  "\n",
  "RELOAD\n"
  "    SIGHUP, or a change in the policy file's directory that concerns the\n"
  "    file (the file itself, or the symlink it points through, as a\n"
  "    Kubernetes ConfigMap volume swaps \"..data\"; renaming a new file into\n"
  "    place), reads the file again once changes have settled for 100 ms.  A\n"
  "    file that does not load keeps the previous policy; a policy with the\n"
  "    digest of the one in force changes nothing (not counted; SIGHUP logs\n"
  "    \"policy unchanged\").  A reload that replaces the policy or fails is a\n"
  "    JSON line on stderr and counted in /metrics.  Write the file whole and\n"
  "    rename it into place: a file seen half written is refused.\n"
  "\n"
  "LOGS\n"
  "    JSON lines on stderr ({\"ts\",\"level\",\"msg\",...}): startup (addresses,\n"
  "    policy digest), reloads, drain, and connections refused by a limit, at\n"
  "    most one line a second per limit with the count since the last.\n"
  "\n"
  "EXIT STATUS\n"
  "    0 after SIGTERM/SIGINT, 64 usage error, 65 bad policy, 70 setup failed.\n",
};

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

void log_json_fields(const char *level, const char *msg, cJSON *fields) {
  cJSON *o = cJSON_CreateObject();
  struct timespec now;
  char ts[40] = "";
  if (clock_gettime(CLOCK_REALTIME, &now) == 0) {
    struct tm tm;
    gmtime_r(&now.tv_sec, &tm);
    size_t n = strftime(ts, sizeof ts, "%Y-%m-%dT%H:%M:%S", &tm);
    snprintf(ts + n, sizeof ts - n, ".%03dZ", (int)(now.tv_nsec / 1000000));
  }
  cJSON_AddStringToObject(o, "ts", ts);
  cJSON_AddStringToObject(o, "level", level);
  cJSON_AddStringToObject(o, "msg", msg);
  for (cJSON *f = fields ? fields->child : NULL; f; f = f->next)
    cJSON_AddItemReferenceToObject(o, f->string, f);
  char *s = cJSON_PrintUnformatted(o);
  if (s) write_line(2, s);
  cJSON_free(s);
  cJSON_Delete(o);
  cJSON_Delete(fields);
}

/* A JSON string of S (the host as the client wrote it may hold anything
 * the URL parser let through). */
static size_t json_str(char *out, size_t cap, const char *s) {
  size_t w = 0;
  if (cap < 3) return 0;
  out[w++] = '"';
  for (; *s && w + 8 < cap; s++) {
    unsigned char ch = (unsigned char)*s;
    if (ch == '"' || ch == '\\') {
      out[w++] = '\\';
      out[w++] = (char)ch;
    } else if (ch < 0x20 || ch == 0x7f) {
      w += (size_t)snprintf(out + w, cap - w, "\\u%04x", ch);
    } else {
      out[w++] = (char)ch;
    }
  }
  out[w++] = '"';
  out[w] = '\0';
  return w;
}

/* The connection event of a tunnel or exchange (docs/egressd.md, "Events"):
 * a CloudEvent of its own whose data names the attempt event it follows. */
void emit_close_event(conn_t *c) {
  stats_closed(c);
  if (!c->host[0]) return; /* no check was made: nothing to close */
  char host[2 * HEAD_HOST_MAX + 16], subject_raw[HEAD_HOST_MAX + 16], subject[2 * HEAD_HOST_MAX + 40];
  char address[160], attempt[48], id[37], when[32], line[1536];
  json_str(host, sizeof host, c->host);
  snprintf(subject_raw, sizeof subject_raw, strchr(c->host, ':') ? "[%s]:%d" : "%s:%d", c->host, c->port);
  json_str(subject, sizeof subject, subject_raw);
  if (c->used_upstream && c->connected_to[0])
    json_str(address, sizeof address, c->connected_to);
  else
    snprintf(address, sizeof address, "null");
  if (c->attempt_id[0])
    snprintf(attempt, sizeof attempt, "\"%s\"", c->attempt_id);
  else
    snprintf(attempt, sizeof attempt, "null");
  /* No randomness or clock: a CloudEvent needs its id; the attempt's
   * event, written before, stands for the exchange. */
  if (egress_event_stamp(id, when) != EGRESS_OK) return;
  int n = snprintf(
      line, sizeof line,
      "{\"specversion\":\"1.0\",\"type\":\"" CLOSE_EVENT_TYPE "\",\"source\":\"" EVENT_SOURCE
      "\",\"id\":\"%s\","
      "\"time\":\"%s\",\"datacontenttype\":\"application/json\",\"subject\":%s,\"data\":{\"attemptId\":%s,"
      "\"kind\":\"%s\",\"host\":%s,\"port\":%d,\"status\":%d,\"address\":%s,\"bytesUp\":%llu,"
      "\"bytesDown\":%llu,\"durationMs\":%llu,\"ended\":\"%s\"%s%s%s}}",
      id, when, subject, attempt, c->forward ? "forward" : "tunnel", host, c->port, c->status, address,
      (unsigned long long)c->up_bytes, (unsigned long long)c->down_bytes,
      (unsigned long long)(now_ms() - c->t0), c->ended ? c->ended : "closed",
      c->forward ? "" : ",\"relay\":\"", c->forward ? "" : bulk_relay_name(c), c->forward ? "" : "\"");
  if (n > 0 && (size_t)n < sizeof line) events_close_line(line, (size_t)n);
}

/* ---- signals and setup -------------------------------------------------------- */

/* What is still open at the deadline is closed (each with its close
 * event); the loop stops when the last of them is gone. */
static void on_drain_deadline(uv_timer_t *t) {
  (void)t;
  cJSON *f = cJSON_CreateObject();
  cJSON_AddNumberToObject(f, "open", active);
  log_json_fields("warn", "drain deadline: closing what is still open", f);
  for (conn_t *c = conns; c; c = c->next) conn_close(c, "drain_deadline");
}

static void on_term(uv_signal_t *s, int signum) {
  (void)s;
  if (draining) return;
  draining = 1;
  cJSON *f = cJSON_CreateObject();
  cJSON_AddStringToObject(f, "signal", signum == SIGTERM ? "SIGTERM" : "SIGINT");
  cJSON_AddNumberToObject(f, "open", active);
  cJSON_AddNumberToObject(f, "deadlineMs", cfg.drain_timeout_ms);
  log_json_fields("info", "draining", f);
  uv_close((uv_handle_t *)&listener, NULL);
  close_idle_connections();
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
  /* Each tunnel takes four descriptors (two sockets, two watched
   * duplicates) and a pipe per direction while bytes wait: the soft limit
   * (often 1024) is raised to the hard one, as other proxies do. */
  struct rlimit nofile;
  if (getrlimit(RLIMIT_NOFILE, &nofile) == 0 && nofile.rlim_cur < nofile.rlim_max) {
    nofile.rlim_cur = nofile.rlim_max;
    (void)setrlimit(RLIMIT_NOFILE, &nofile);
  }
  for (int i = 1; i < argc; i++) {
    const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
    unsigned *num = NULL;
    if (!strcmp(a, "--help")) {
      for (size_t k = 0; k < sizeof usage_text / sizeof usage_text[0]; k++) fputs(usage_text[k], stdout);
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
    else if (!strcmp(a, "--relay")) {
      if (!strcmp(v, "buffer"))
        cfg.relay = RELAY_BUFFER;
      else if (!strcmp(v, "splice"))
        cfg.relay = RELAY_SPLICE;
      else if (!strcmp(v, "copy"))
        cfg.relay = RELAY_COPY;
      else {
        fprintf(stderr, "egressd: --relay %s: want buffer, splice or copy\n", v);
        return EXIT_USAGE;
      }
    } else if (!strcmp(a, "--admin"))
      ops_cfg.admin = v;
    else if (!strcmp(a, "--max-client-connections"))
      num = &ops_cfg.max_client_connections;
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
    } else if (!strcmp(a, "--bulk-buffers")) {
      if (parse_uint(v, &cfg.bulk_buffers) || cfg.bulk_buffers > 1024) {
        fprintf(stderr, "egressd: --bulk-buffers %s: want a number from 0 to 1024\n", v);
        return EXIT_USAGE;
      }
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
  struct sockaddr_storage admin_addr;
  memset(&admin_addr, 0, sizeof admin_addr);
  if (ops_cfg.admin && parse_listen(ops_cfg.admin, &admin_addr) != 0) {
    fprintf(stderr, "egressd: --admin %s: want IP:PORT\n", ops_cfg.admin);
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
  if (st == EGRESS_OK) st = egress_options_set_event_source(opts, EVENT_SOURCE);
  if (st == EGRESS_OK) st = egress_options_set_event_callback(opts, events_attempt, NULL);
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
  if (ops_cfg.admin) {
    if ((rc = admin_start(loop, (const struct sockaddr *)&admin_addr)) != 0) {
      fprintf(stderr, "egressd: admin listen on %s: %s\n", ops_cfg.admin, uv_strerror(rc));
      return EXIT_SOFTWARE;
    }
    fprintf(stderr, "ADMIN_PORT %d\n", admin_port());
  }
  fflush(stderr);

  if ((rc = reload_start(loop)) != 0) {
    cJSON *f = cJSON_CreateObject();
    cJSON_AddStringToObject(f, "policy", cfg.policy_path);
    cJSON_AddStringToObject(f, "detail", uv_strerror(rc));
    log_json_fields("warn", "the policy file is not watched; SIGHUP reloads it", f);
  }
  uv_signal_init(loop, &sig_term);
  uv_signal_init(loop, &sig_int);
  uv_signal_start(&sig_term, on_term, SIGTERM);
  uv_signal_start(&sig_int, on_term, SIGINT);

  cJSON *f = cJSON_CreateObject();
  char where[160];
  snprintf(where, sizeof where, "%.*s:%d", (int)(strrchr(cfg.listen, ':') - cfg.listen), cfg.listen, port);
  cJSON_AddStringToObject(f, "listen", where);
  if (ops_cfg.admin) {
    snprintf(where, sizeof where, "%.*s:%d", (int)(strrchr(ops_cfg.admin, ':') - ops_cfg.admin),
             ops_cfg.admin, admin_port());
    cJSON_AddStringToObject(f, "admin", where);
  }
  cJSON_AddStringToObject(f, "policy", cfg.policy_path);
  egress_policy_t *in_force = egress_checker_policy(checker);
  cJSON_AddStringToObject(f, "digest", in_force ? egress_policy_digest(in_force) : "");
  egress_policy_unref(in_force);
  cJSON_AddNumberToObject(f, "maxConnections", cfg.max_connections);
  cJSON_AddNumberToObject(f, "maxClientConnections", ops_cfg.max_client_connections);
  log_json_fields("info", "listening", f);

  if (events_init() != 0) {
    fputs("egressd: cannot set up the events file's writer\n", stderr);
    return EXIT_SOFTWARE;
  }
  uv_run(loop, UV_RUN_DEFAULT);

  admin_stop();
  limits_flush();
  egress_uv_close(checker_uv, NULL, NULL);
  checker_uv = NULL; /* decisions still held are freed from now on */
  uv_walk(loop, close_any, NULL);
  uv_run(loop, UV_RUN_DEFAULT);
  (void)uv_loop_close(loop);
  egress_checker_free(checker);
  conn_end();
  events_end();
  if (events_fd != 1) close(events_fd);
  return 0;
}
