#ifndef EGRESSD_H
#define EGRESSD_H
/*
 * egressd.h: what the parts of egressd share (main.c: options, signals,
 * events; conn.c: accepting, limits, the check, connecting; tunnel.c:
 * CONNECT tunnels; forward.c: absolute-form forwarding).
 *
 * egressd: the egress gateway for workloads that cannot link libegress.
 *
 * An HTTP proxy on libuv that answers CONNECT host:port and absolute-form
 * requests by asking the library's asynchronous check (include/egress_uv.h)
 * and, on allow, connecting only to the addresses that check vetted: the
 * gateway never resolves a name itself, so a name that rebinds between the
 * check and the connection cannot reach anything the check did not see.
 * Request framing is http_parser's; nothing here splits HTTP by hand.
 *
 * Each check writes the library's attempt event through the checker's
 * sink; each tunnel or exchange writes one close event (bytes each way,
 * duration, address, how it ended) to the same place.  See `egressd --help`.
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

extern config_t cfg;

extern uv_loop_t *loop;
extern egress_uv_t *checker_uv;
extern egress_checker_t *checker;
extern uv_tcp_t listener;
extern uv_signal_t sig_hup, sig_term, sig_int;
extern uv_timer_t drain_timer;
extern unsigned active;
extern int draining;
extern int events_fd;

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

extern conn_t *conns;

static inline uint64_t now_ms(void) { return uv_now(loop); }

void emit_close_event(conn_t *c);
void conn_close(conn_t *c, const char *ended);
int on_headers_complete(http_parser *p);
void on_accept(uv_stream_t *server, int status);
void relay_read(uv_stream_t *stream, ssize_t nread, const uv_buf_t *buf);
void alloc_side(uv_handle_t *h, size_t suggested, uv_buf_t *buf);
void arm_idle(conn_t *c);
void on_idle(uv_timer_t *t);
void start_relay(conn_t *c);
int ieq(const char *a, size_t an, const char *b);
void start_forward(conn_t *c);

#endif /* EGRESSD_H */
