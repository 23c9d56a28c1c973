#ifndef EGRESSD_H
#define EGRESSD_H
/*
 * egressd.h: what the parts of egressd share (main.c: options, signals,
 * events; conn.c: accepting, limits, the check, connecting; request.c: the
 * request head, without I/O; tunnel.c: CONNECT tunnels and relay buffers;
 * bulk.c: bulk tunnels, relayed through large buffers or splice(2);
 * forward.c: absolute-form forwarding on kept-alive connections).
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
 * duration, address, how it ended) to the same place.  docs/egressd.md says
 * what the gateway promises and why; `egressd --help` how to run it.
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
#include <sys/resource.h>
#include <unistd.h>

#include <cjson/cJSON.h>

#include "egress_uv.h"
#include "request.h"

enum { EXIT_USAGE = 64, EXIT_DATAERR = 65, EXIT_SOFTWARE = 70 };
enum { MAX_ADDRS = 32, RELAY_BUF = 64 * 1024, UPSTREAM_QUEUE_MAX = 1 << 20 };

/* --relay: buffer and splice take a tunnel over after 256 KiB (bulk.c);
 * copy leaves every tunnel with libuv's 64 KiB reads and writes. */
typedef enum relay { RELAY_BUFFER, RELAY_SPLICE, RELAY_COPY } relay_t;

typedef struct config {
  const char *listen, *policy_path, *dns_server, *events_path, *port_file;
  const char *context[8][2];
  int n_context;
  unsigned max_connections, header_bytes, header_timeout_ms, idle_timeout_ms, connect_timeout_ms,
      drain_timeout_ms;
  long dns_cache;        /* -1: the library's default */
  relay_t relay;         /* --relay: how bulk tunnels move bytes (bulk.c) */
  unsigned bulk_buffers; /* --bulk-buffers: large relay buffers at most */
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

typedef enum phase {
  PH_HEADER,   /* reading a request head (the first, or the next on a kept-alive connection) */
  PH_CHECK,    /* the library's check is running */
  PH_CONNECT,  /* connecting to the vetted addresses in turn */
  PH_RELAY,    /* tunnel bytes, or a forwarded exchange, under way */
  PH_REPLYING, /* an error answer is being written; the connection ends after it */
  PH_CLOSING
} phase_t;

/* One direction's socket.  A relay buffer is held only while bytes are in
 * flight (read and not yet written on): an idle tunnel holds none. */
typedef struct side {
  uv_tcp_t tcp;
  int open; /* upstream: a socket is there (the client's always is) */
  int eof, writing;
  uv_write_t wreq;
  char *buf;
} side_t;

typedef struct bulk bulk_t;

typedef struct conn {
  side_t client, upstream;
  bulk_t *bulk; /* a bulk tunnel's relay outside the stream handles (bulk.c) */
  uv_timer_t timer;
  uv_poll_t connect_poll;     /* a connect under way: its socket's writability */
  int connecting, connect_fd; /* connect_poll is open; the socket it watches */
  uv_shutdown_t sreq_c, sreq_u;
  phase_t phase;
  head_t *head;    /* while a request head is read, checked and sent */
  char *pipelined; /* bytes the client sent after the current request */
  size_t pipelined_len;
  http_parser parser; /* a forwarded request, from its body on */
  head_t *rhead;      /* upstream's response head, while it is read */
  http_parser resp;   /* upstream's response body: where it ends */
  egress_pending_t *pending;
  egress_decision_t *decision;
  struct sockaddr_storage *addrs; /* the vetted addresses, while connecting */
  size_t n_addrs, next_addr;
  char connected_to[64], host[HEAD_HOST_MAX];
  char attempt_id[37]; /* the check's attempt event, named by the close event */
  int used_upstream;   /* this exchange went to connected_to (the close event's address) */
  int port, status, connected_port;
  int connect_error; /* the last connect's libuv error */
  /* forwarding */
  int forward, chunked, head_request, keep_alive, message_done, response_done, response_sent, upstream_idle,
      upstream_spoiled, client_close, client_writes, interims, upstream_reading, client_reading, client_eof;
  int response_chunked; /* the response body is chunked: egressd writes the chunks anew */
  unsigned exchanges;
  const char *ended;
  uint64_t up_bytes, down_bytes, t0;
  int handles;
  struct conn *prev, *next; /* every open connection, for the drain deadline */
  /* Its client's count of connections (limits.c); NULL when not counted. */
  struct client *client_slot;
} conn_t;

extern conn_t *conns;

static inline uint64_t now_ms(void) { return uv_now(loop); }

/* main.c */
void emit_close_event(conn_t *c);

/* events.c: attempt lines written at once (the library's sink), close
 * lines after them in order, at the latest when the loop turn ends */
int events_init(void);
int events_attempt(const char *json, size_t len, const egress_decision_t *d, void *user);
void events_close_line(const char *line, size_t len);
void events_end(void);

/* conn.c */
void on_accept(uv_stream_t *server, int status);
void conn_end(void);
void refuse_at_accept(uv_stream_t *server, const char *text, size_t len, void (*seen)(uv_tcp_t *t));
void conn_close(conn_t *c, const char *ended);
void reply_and_close(conn_t *c, int status, const char *text, const char *proxy_error, const char *reason,
                     const char *ended);
void read_next_head(conn_t *c);
void client_reading(conn_t *c, int on);
int keep_pipelined(conn_t *c, const char *data, size_t len);
void drop_upstream(conn_t *c);
void close_idle_connections(void);

/* tunnel.c: relaying and the relay buffers */
char *relay_buffer_get(void); /* RELAY_BUF bytes, or NULL */
void relay_buffer_put(char *buf);
void alloc_side(uv_handle_t *h, size_t suggested, uv_buf_t *buf);
void release_side_buffer(side_t *s);
void arm_idle(conn_t *c);
void on_idle(uv_timer_t *t);
void start_relay(conn_t *c);

/* bulk.c: a bulk tunnel's bytes moved outside libuv's stream handles.
 * bulk_start once nothing is in flight through them (their reads
 * stopped), then bulk_watch.  bulk_relay_name: "buffer", "splice" or
 * "copy" (never handed over), for the close event. */
int bulk_start(conn_t *c);
void bulk_watch(conn_t *c);
void bulk_stop(conn_t *c, uv_close_cb closed);
const char *bulk_relay_name(const conn_t *c);
/* For /metrics: the 4 MiB buffers made (kept for reuse: memory held), and
 * the times a direction about to read found none free (--bulk-buffers). */
unsigned bulk_buffers_made(void);
unsigned long long bulk_buffer_shortfalls(void);

/* forward.c */
void start_forward(conn_t *c);
void forward_body_read(conn_t *c, ssize_t nread, const uv_buf_t *buf);

#include "admin.h" /* admin listener, metrics, per-client limit, reloads */

#endif /* EGRESSD_H */
