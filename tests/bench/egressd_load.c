/*
 * egressd-load: the loopback upstream and the clients of the egressd
 * benchmark (tests/bench/egressd_bench.py), in C on plain epoll so that the
 * proxies, not the load, are what is measured.
 *
 *   egressd-load serve
 *       HTTP/1.1 server on 127.0.0.1 (a free port, "PORT <n>" on stdout)
 *       until stdin reaches EOF.  GET /bytes/N answers N bytes; any other
 *       request answers "ok".  Keep-alive unless the request says
 *       Connection: close; pipelined requests are answered in order.
 *
 *   egressd-load relay  UPSTREAM
 *       The floor of the setup figure: a bare CONNECT relay on 127.0.0.1
 *       ("PORT <n>" on stdout) that connects every tunnel to UPSTREAM, with
 *       no check and no log, until stdin reaches EOF.
 *
 *   egressd-load setup  TARGET --host H:P [--proxy] --count N
 *       N sequential setups, each: connect, (CONNECT H:P and its 200,)
 *       GET / and its whole response, close.  Prints the latency
 *       percentiles in microseconds.
 *   egressd-load setup-rr DIRECT --host H:P --count N --proxies P1[,P2...]
 *       The same setups, direct to DIRECT and through each proxy in turn,
 *       N rounds, each in a shuffled order; prints a JSON list of the percentiles: direct's first,
 *       then each proxy's in the order given.
 *   egressd-load rps    TARGET --host H:P [--proxy] --conns C --seconds S
 *       C connections, each sending GET (absolute-form through a proxy)
 *       and the next one as soon as the response is complete; a
 *       connection the far end closes (or answers Connection: close) is
 *       replaced.  Counts the responses and the connections opened over
 *       S seconds after a 0.5 s warm-up.
 *   egressd-load bulk   TARGET --host H:P [--proxy] --bytes N
 *       One connection (one CONNECT tunnel with --proxy): GET /bytes/N,
 *       timed from the request to the last byte; also the CPU time the
 *       receiving (this) process spent meanwhile.
 *   egressd-load idle   TARGET --host H:P --count N
 *       Opens N CONNECT tunnels (256 handshakes in flight at most), prints
 *       "READY <ok> <failed>", then holds them, idle, until stdin reaches
 *       EOF.
 *
 * TARGET is IP:PORT: the proxy with --proxy (and for idle), else the
 * upstream itself.  Results are one JSON object on stdout.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define IO_BUF (256 * 1024)

static struct sockaddr_in target;
static const char *host = "up.test:80"; /* authority asked for (CONNECT, Host, URI) */
static int via_proxy;
static char io_buf[IO_BUF]; /* body bytes served; receive buffer of setup and bulk */

static void die(const char *what) {
  fprintf(stderr, "egressd-load: %s\n", what);
  exit(1);
}

static void die_sys(const char *what) {
  fprintf(stderr, "egressd-load: %s: %s\n", what, strerror(errno));
  exit(1);
}

static double now_s(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static void parse_addr(const char *s, struct sockaddr_in *sa) {
  char ip[64];
  const char *colon = strrchr(s, ':');
  if (!colon || (size_t)(colon - s) >= sizeof ip) die("address must be IP:PORT");
  memcpy(ip, s, (size_t)(colon - s));
  ip[colon - s] = '\0';
  memset(sa, 0, sizeof *sa);
  sa->sin_family = AF_INET;
  sa->sin_port = htons((uint16_t)atoi(colon + 1));
  if (inet_pton(AF_INET, ip, &sa->sin_addr) != 1) die("bad IPv4 address");
}

/* The fd limit, raised to the hard limit: the idle tunnels need it. */
static void raise_nofile(void) {
  struct rlimit rl;
  if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
    rl.rlim_cur = rl.rlim_max;
    setrlimit(RLIMIT_NOFILE, &rl);
  }
}

/* ---- HTTP heads --------------------------------------------------------- */

/* Length of the head (through the blank line) in buf, 0 while incomplete. */
static size_t head_len(const char *buf, size_t len) {
  const char *end = memmem(buf, len, "\r\n\r\n", 4);
  return end ? (size_t)(end - buf) + 4 : 0;
}

static int status_of(const char *head) {
  const char *sp = strchr(head, ' ');
  return sp ? atoi(sp + 1) : 0;
}

/* The value of field NAME ("content-length") in a head, or NULL.  The head
 * must be NUL-terminated; names match case-insensitively at line starts. */
static const char *field(const char *head, size_t hlen, const char *name) {
  size_t n = strlen(name);
  for (const char *p = memchr(head, '\n', hlen); p && (size_t)(p - head) + n + 1 < hlen;
       p = memchr(p + 1, '\n', hlen - (size_t)(p + 1 - head))) {
    if (!strncasecmp(p + 1, name, n) && p[1 + n] == ':') {
      const char *v = p + 2 + n;
      while (*v == ' ' || *v == '\t') v++;
      return v;
    }
  }
  return NULL;
}

static int says_close(const char *head, size_t hlen) {
  const char *v = field(head, hlen, "connection");
  return v && !strncasecmp(v, "close", 5);
}

/* ---- blocking client steps (setup, bulk) ----------------------------------- */

static int dial_blocking(void) {
  int fd = socket(AF_INET, SOCK_STREAM, 0), one = 1;
  struct timeval tv = { 10, 0 };
  if (fd < 0) die_sys("socket");
  setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
  setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
  if (connect(fd, (struct sockaddr *)&target, sizeof target) != 0) die_sys("connect");
  return fd;
}

static void send_all(int fd, const char *s, size_t n) {
  while (n > 0) {
    ssize_t w = send(fd, s, n, MSG_NOSIGNAL);
    if (w <= 0) die_sys("send");
    s += w;
    n -= (size_t)w;
  }
}

/* Reads one response head into buf (NUL-terminated); returns its length and
 * sets *extra to the body bytes read past it. */
static size_t read_head(int fd, char *buf, size_t cap, size_t *extra) {
  size_t len = 0, h;
  while (!(h = head_len(buf, len))) {
    if (len + 1 >= cap) die("response head too long");
    ssize_t r = recv(fd, buf + len, cap - 1 - len, 0);
    if (r <= 0) die(r == 0 ? "connection closed before the response head" : "recv");
    len += (size_t)r;
    buf[len] = '\0';
  }
  *extra = len - h;
  return h;
}

static void tunnel_open(int fd) {
  char req[512], head[4096];
  size_t extra;
  int n = snprintf(req, sizeof req, "CONNECT %s HTTP/1.1\r\nHost: %s\r\n\r\n", host, host);
  send_all(fd, req, (size_t)n);
  read_head(fd, head, sizeof head, &extra);
  if (status_of(head) != 200) {
    fprintf(stderr, "egressd-load: CONNECT answered: %.200s\n", head);
    exit(1);
  }
  if (extra) die("bytes after the CONNECT answer");
}

/* GET PATH on an open connection; reads the whole response; returns the
 * body length. */
static uint64_t get(int fd, const char *path) {
  char req[512];
  size_t extra;
  int n = snprintf(req, sizeof req, "GET %s HTTP/1.1\r\nHost: %s\r\n\r\n", path, host);
  send_all(fd, req, (size_t)n);
  size_t h = read_head(fd, io_buf, sizeof io_buf, &extra);
  const char *cl = field(io_buf, h, "content-length");
  if (status_of(io_buf) != 200 || !cl) die("unexpected response");
  uint64_t want = strtoull(cl, NULL, 10), got = extra;
  while (got < want) {
    ssize_t r = recv(fd, io_buf, sizeof io_buf, 0);
    if (r <= 0) die("response body cut short");
    got += (uint64_t)r;
  }
  return want;
}

static int cmp_double(const void *a, const void *b) {
  double x = *(const double *)a, y = *(const double *)b;
  return (x > y) - (x < y);
}

static double one_setup(void) {
  double t0 = now_s();
  int fd = dial_blocking();
  if (via_proxy) tunnel_open(fd);
  get(fd, "/");
  double us = (now_s() - t0) * 1e6;
  close(fd);
  return us;
}

static void print_percentiles(double *lat, long count) {
  qsort(lat, (size_t)count, sizeof *lat, cmp_double);
  printf("{\"count\":%ld,\"p50_us\":%.1f,\"p90_us\":%.1f,\"p99_us\":%.1f,\"min_us\":%.1f}", count,
         lat[count / 2], lat[count * 9 / 10], lat[count * 99 / 100], lat[0]);
}

static int cmd_setup(long count) {
  double *lat = malloc((size_t)count * sizeof *lat);
  if (!lat) die("out of memory");
  for (long i = 0; i < count; i++) lat[i] = one_setup();
  print_percentiles(lat, count);
  putchar('\n');
  free(lat);
  return 0;
}

/* setup-rr: the direct target and each proxy take turns, one setup each,
 * so that a noisy neighbour's burst falls on all of them alike rather than
 * on whichever ran during it. */
enum { RR_MAX = 8 };

static int cmd_setup_rr(long count, const char *proxies) {
  struct sockaddr_in to[RR_MAX];
  int n = 1;
  to[0] = target;
  char list[512];
  if (strlen(proxies) >= sizeof list) die("--proxies too long");
  strcpy(list, proxies);
  for (char *save = NULL, *t = strtok_r(list, ",", &save); t; t = strtok_r(NULL, ",", &save)) {
    if (n == RR_MAX) die("too many proxies");
    parse_addr(t, &to[n++]);
  }
  double *lat = malloc((size_t)(count * n) * sizeof *lat);
  if (!lat) die("out of memory");
  /* Each round in a fresh order: what one target leaves behind after its
   * client is done (the proxy closing its side, writing its log) falls on
   * whichever runs next, so no target may always follow the same one. */
  srand(1);
  for (long i = 0; i < count; i++) {
    int order[RR_MAX];
    for (int k = 0; k < n; k++) order[k] = k;
    for (int k = n - 1; k > 0; k--) {
      int j = rand() % (k + 1), t = order[k];
      order[k] = order[j];
      order[j] = t;
    }
    for (int k = 0; k < n; k++) {
      target = to[order[k]];
      via_proxy = order[k] > 0;
      lat[order[k] * count + i] = one_setup();
    }
  }
  putchar('[');
  for (int k = 0; k < n; k++) {
    if (k) putchar(',');
    print_percentiles(lat + k * count, count);
  }
  puts("]");
  free(lat);
  return 0;
}

static double cpu_s(void) {
  struct rusage ru;
  getrusage(RUSAGE_SELF, &ru);
  return (double)(ru.ru_utime.tv_sec + ru.ru_stime.tv_sec) +
         (ru.ru_utime.tv_usec + ru.ru_stime.tv_usec) / 1e6;
}

static int cmd_bulk(uint64_t bytes) {
  char path[64];
  int fd = dial_blocking();
  if (via_proxy) tunnel_open(fd);
  snprintf(path, sizeof path, "/bytes/%llu", (unsigned long long)bytes);
  double t0 = now_s(), c0 = cpu_s();
  get(fd, path);
  double s = now_s() - t0, cpu = cpu_s() - c0;
  close(fd);
  printf("{\"bytes\":%llu,\"seconds\":%.4f,\"mib_per_s\":%.1f,\"receiver_cpu_s\":%.4f}\n",
         (unsigned long long)bytes, s, (double)bytes / s / (1 << 20), cpu);
  return 0;
}

/* ---- epoll clients (rps, idle) ------------------------------------------- */

typedef struct cconn {
  int fd, state; /* 0 connecting, 1 waiting for a response, 2 established tunnel */
  size_t len;
  char buf[8192];
} cconn_t;

static int ep;

static int dial_nonblocking(cconn_t *c) {
  int one = 1;
  c->fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK, 0);
  if (c->fd < 0) return -1;
  setsockopt(c->fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
  if (connect(c->fd, (struct sockaddr *)&target, sizeof target) != 0 && errno != EINPROGRESS) {
    close(c->fd);
    return -1;
  }
  c->state = 0;
  c->len = 0;
  struct epoll_event ev = { .events = EPOLLOUT, .data.ptr = c };
  return epoll_ctl(ep, EPOLL_CTL_ADD, c->fd, &ev);
}

/* Sends the request of c's mode; on the first call also switches the fd to
 * reading.  Returns -1 if the connection failed. */
static int send_request(cconn_t *c, const char *req, size_t n) {
  if (c->state == 0) {
    int err = 0;
    socklen_t el = sizeof err;
    getsockopt(c->fd, SOL_SOCKET, SO_ERROR, &err, &el);
    if (err) return -1;
    struct epoll_event ev = { .events = EPOLLIN, .data.ptr = c };
    epoll_ctl(ep, EPOLL_CTL_MOD, c->fd, &ev);
  }
  c->state = 1;
  /* Requests are a few dozen bytes: a socket with room for less is broken. */
  return send(c->fd, req, n, MSG_NOSIGNAL) == (ssize_t)n ? 0 : -1;
}

static int cmd_rps(long nconns, double seconds) {
  char req[512];
  int n = via_proxy ? snprintf(req, sizeof req, "GET http://%s/ HTTP/1.1\r\nHost: %s\r\n\r\n", host, host)
                    : snprintf(req, sizeof req, "GET / HTTP/1.1\r\nHost: %s\r\n\r\n", host);
  cconn_t *cs = calloc((size_t)nconns, sizeof *cs);
  struct epoll_event evs[256];
  uint64_t responses = 0, opened = 0, errors = 0;
  if (!cs || (ep = epoll_create1(0)) < 0) die("setup");
  for (long i = 0; i < nconns; i++)
    if (dial_nonblocking(&cs[i]) != 0) die_sys("connect");
  double start = now_s(), t_measure = start + 0.5, t_end = t_measure + seconds;
  int measuring = 0;
  for (;;) {
    double t = now_s();
    if (!measuring && t >= t_measure) {
      measuring = 1;
      responses = opened = errors = 0;
    }
    if (t >= t_end) break;
    int k = epoll_wait(ep, evs, 256, 100);
    for (int e = 0; e < k; e++) {
      cconn_t *c = evs[e].data.ptr;
      int reopen = 0;
      if (c->state == 0) {
        reopen = send_request(c, req, (size_t)n) != 0;
      } else {
        ssize_t r = recv(c->fd, c->buf + c->len, sizeof c->buf - 1 - c->len, 0);
        if (r <= 0) {
          if (r < 0 && errno == EAGAIN) continue;
          reopen = 1; /* closed or reset while a request was outstanding */
        } else {
          c->len += (size_t)r;
          c->buf[c->len] = '\0';
          size_t h = head_len(c->buf, c->len);
          const char *cl = h ? field(c->buf, h, "content-length") : NULL;
          if (h && !cl) {
            reopen = 1;
          } else if (h && c->len >= h + strtoull(cl, NULL, 10)) {
            int good = status_of(c->buf) == 200, close_it = !good || says_close(c->buf, h);
            responses += (uint64_t)good;
            errors += (uint64_t)!good;
            c->len = 0;
            if (close_it || send_request(c, req, (size_t)n) != 0) {
              close(c->fd);
              if (dial_nonblocking(c) != 0) die_sys("connect");
              opened++;
            }
            continue;
          } else if (c->len + 1 >= sizeof c->buf) {
            reopen = 1;
          }
        }
      }
      if (reopen) {
        errors++;
        close(c->fd);
        if (dial_nonblocking(c) != 0) die_sys("connect");
        opened++;
      }
    }
  }
  double s = now_s() - t_measure;
  /* The connections open at the start count too: with keep-alive they may
   * be all there ever were. */
  printf("{\"responses\":%llu,\"seconds\":%.3f,\"rps\":%.1f,\"connections\":%llu,\"errors\":%llu}\n",
         (unsigned long long)responses, s, (double)responses / s,
         (unsigned long long)(opened + (uint64_t)nconns), (unsigned long long)errors);
  for (long i = 0; i < nconns; i++) close(cs[i].fd);
  free(cs);
  close(ep);
  return 0;
}

static int cmd_idle(long count) {
  char req[512];
  int n = snprintf(req, sizeof req, "CONNECT %s HTTP/1.1\r\nHost: %s\r\n\r\n", host, host);
  cconn_t *cs = calloc((size_t)count, sizeof *cs);
  struct epoll_event evs[256];
  long started = 0, ok = 0, failed = 0, inflight = 0;
  if (!cs || (ep = epoll_create1(0)) < 0) die("setup");
  double deadline = now_s() + 120;
  while (ok + failed < count && now_s() < deadline) {
    while (inflight < 256 && started < count) {
      if (dial_nonblocking(&cs[started]) != 0) die_sys("connect");
      started++;
      inflight++;
    }
    int k = epoll_wait(ep, evs, 256, 100);
    for (int e = 0; e < k; e++) {
      cconn_t *c = evs[e].data.ptr;
      int done = 0, good = 0;
      if (c->state == 0) {
        done = send_request(c, req, (size_t)n) != 0;
      } else {
        ssize_t r = recv(c->fd, c->buf + c->len, sizeof c->buf - 1 - c->len, 0);
        if (r < 0 && errno == EAGAIN) continue;
        if (r <= 0) {
          done = 1;
        } else {
          c->len += (size_t)r;
          c->buf[c->len] = '\0';
          if (head_len(c->buf, c->len)) done = 1, good = status_of(c->buf) == 200;
        }
      }
      if (!done) continue;
      inflight--;
      epoll_ctl(ep, EPOLL_CTL_DEL, c->fd, NULL);
      if (good) {
        ok++;
        c->state = 2;
      } else {
        failed++;
        close(c->fd);
      }
    }
  }
  printf("READY %ld %ld\n", ok, failed + (count - ok - failed));
  fflush(stdout);
  char b;
  while (read(0, &b, 1) > 0) {}
  for (long i = 0; i < count; i++)
    if (cs[i].fd > 0) close(cs[i].fd);
  free(cs);
  return 0;
}

/* ---- the upstream --------------------------------------------------------- */

typedef struct sconn {
  int fd, close_after, want_out;
  uint64_t body_left; /* bytes of /bytes/N still to send */
  size_t in_len, out_len, out_off;
  char in[8192], out[256];
} sconn_t;

static void watch(sconn_t *s, int out) {
  if (s->want_out == out) return;
  struct epoll_event ev = { .events = out ? EPOLLOUT : EPOLLIN, .data.ptr = s };
  epoll_ctl(ep, EPOLL_CTL_MOD, s->fd, &ev);
  s->want_out = out;
}

/* Answers the requests in s->in, writing until the socket is full.
 * Returns -1 when s is to be closed. */
static int serve_step(sconn_t *s) {
  for (;;) {
    while (s->out_off < s->out_len) {
      ssize_t w = send(s->fd, s->out + s->out_off, s->out_len - s->out_off, MSG_NOSIGNAL);
      if (w < 0) return errno == EAGAIN ? (watch(s, 1), 0) : -1;
      s->out_off += (size_t)w;
    }
    while (s->body_left > 0) {
      size_t n = s->body_left < IO_BUF ? (size_t)s->body_left : IO_BUF;
      ssize_t w = send(s->fd, io_buf, n, MSG_NOSIGNAL);
      if (w < 0) return errno == EAGAIN ? (watch(s, 1), 0) : -1;
      s->body_left -= (uint64_t)w;
    }
    if (s->close_after) return -1;
    size_t h = head_len(s->in, s->in_len);
    if (!h) {
      watch(s, 0);
      return 0;
    }
    char save = s->in[h - 1];
    s->in[h - 1] = '\0';
    s->close_after = says_close(s->in, h);
    unsigned long long n = 0;
    int big =
        sscanf(s->in, "GET /bytes/%llu ", &n) == 1 || sscanf(s->in, "GET http://%*[^/]/bytes/%llu ", &n) == 1;
    s->in[h - 1] = save;
    s->out_off = 0;
    s->out_len =
        (size_t)snprintf(s->out, sizeof s->out, "HTTP/1.1 200 OK\r\nContent-Length: %llu\r\n%s\r\n%s",
                         big ? n : 2ULL, s->close_after ? "Connection: close\r\n" : "", big ? "" : "ok");
    s->body_left = big ? n : 0;
    memmove(s->in, s->in + h, s->in_len - h);
    s->in_len -= h;
  }
}

static int cmd_serve(void) {
  int lfd = socket(AF_INET, SOCK_STREAM, 0), one = 1;
  struct sockaddr_in sa = { .sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
  socklen_t sl = sizeof sa;
  struct epoll_event evs[256];
  if (lfd < 0 || bind(lfd, (struct sockaddr *)&sa, sizeof sa) != 0 || listen(lfd, 4096) != 0 ||
      getsockname(lfd, (struct sockaddr *)&sa, &sl) != 0 || (ep = epoll_create1(0)) < 0)
    die_sys("listen");
  memset(io_buf, 'x', sizeof io_buf);
  printf("PORT %d\n", ntohs(sa.sin_port));
  fflush(stdout);
  /* data.ptr NULL: the listener; &lfd: stdin, the lifeline. */
  struct epoll_event lev = { .events = EPOLLIN, .data.ptr = NULL },
                     sev = { .events = EPOLLIN, .data.ptr = &lfd };
  epoll_ctl(ep, EPOLL_CTL_ADD, lfd, &lev);
  epoll_ctl(ep, EPOLL_CTL_ADD, 0, &sev);
  for (;;) {
    int k = epoll_wait(ep, evs, 256, -1);
    for (int e = 0; e < k; e++) {
      if (evs[e].data.ptr == &lfd) return 0;
      if (!evs[e].data.ptr) {
        int fd = accept4(lfd, NULL, NULL, SOCK_NONBLOCK);
        if (fd < 0) continue;
        setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
        sconn_t *s = calloc(1, sizeof *s);
        if (!s) die("out of memory");
        s->fd = fd;
        struct epoll_event ev = { .events = EPOLLIN, .data.ptr = s };
        epoll_ctl(ep, EPOLL_CTL_ADD, fd, &ev);
        continue;
      }
      sconn_t *s = evs[e].data.ptr;
      int gone = 0;
      if (!s->want_out) {
        ssize_t r = recv(s->fd, s->in + s->in_len, sizeof s->in - 1 - s->in_len, 0);
        if (r < 0 && errno == EAGAIN) continue;
        gone = r <= 0;
        if (!gone) s->in_len += (size_t)r;
        if (s->in_len + 1 >= sizeof s->in) gone = 1; /* a head this long is no request of ours */
      }
      if (gone || serve_step(s) != 0) {
        close(s->fd);
        free(s);
      }
    }
  }
}

/* ---- relay: the floor -------------------------------------------------------- */

/* The least a CONNECT proxy can do, as a floor for the setup figure: accept,
 * read the head, connect (to the one upstream it knows, whatever the head
 * asks: no check, no log), answer 200, relay.  Blocking sockets read only
 * when epoll says so; one client at a time is what the setup figure needs. */
enum { RELAY_FDS = 1024 };
static int relay_peer[RELAY_FDS]; /* -1: a client still sending its head */
static size_t relay_head_len[RELAY_FDS];
static char relay_head[RELAY_FDS][1024];

static void relay_close(int fd) {
  int peer = relay_peer[fd];
  close(fd);
  if (peer >= 0) close(peer);
}

static void relay_watch(int fd) {
  struct epoll_event ev = { .events = EPOLLIN, .data.fd = fd };
  if (epoll_ctl(ep, EPOLL_CTL_ADD, fd, &ev) != 0) die_sys("epoll_ctl");
}

static void relay_head_bytes(int fd, struct sockaddr_in *up) {
  char *h = relay_head[fd];
  ssize_t n = read(fd, h + relay_head_len[fd], sizeof relay_head[0] - 1 - relay_head_len[fd]);
  if (n <= 0) {
    close(fd);
    return;
  }
  relay_head_len[fd] += (size_t)n;
  size_t hl = head_len(h, relay_head_len[fd]);
  if (!hl) {
    if (relay_head_len[fd] + 1 >= sizeof relay_head[0]) close(fd);
    return;
  }
  int u = socket(AF_INET, SOCK_STREAM, 0);
  if (u < 0 || u >= RELAY_FDS || connect(u, (struct sockaddr *)up, sizeof *up) != 0) {
    if (u >= 0) close(u);
    close(fd);
    return;
  }
  static const char ok[] = "HTTP/1.1 200 Connection established\r\n\r\n";
  send_all(fd, ok, sizeof ok - 1);
  if (relay_head_len[fd] > hl) send_all(u, h + hl, relay_head_len[fd] - hl);
  relay_peer[fd] = u;
  relay_peer[u] = fd;
  relay_watch(u);
}

static int cmd_relay(struct sockaddr_in *up) {
  int lfd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK, 0);
  struct sockaddr_in sa = { .sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
  socklen_t sl = sizeof sa;
  struct epoll_event evs[64];
  if (lfd < 0 || bind(lfd, (struct sockaddr *)&sa, sizeof sa) != 0 || listen(lfd, 4096) != 0 ||
      getsockname(lfd, (struct sockaddr *)&sa, &sl) != 0 || (ep = epoll_create1(0)) < 0)
    die_sys("listen");
  printf("PORT %d\n", ntohs(sa.sin_port));
  fflush(stdout);
  relay_watch(lfd);
  relay_watch(0); /* stdin: the lifeline */
  for (;;) {
    int n = epoll_wait(ep, evs, 64, -1);
    for (int i = 0; i < n; i++) {
      int fd = evs[i].data.fd;
      if (fd == 0) return 0;
      if (fd == lfd) {
        int c;
        while ((c = accept4(lfd, NULL, NULL, 0)) >= 0) {
          if (c >= RELAY_FDS) {
            close(c);
            continue;
          }
          relay_peer[c] = -1;
          relay_head_len[c] = 0;
          relay_watch(c);
        }
        continue;
      }
      if (relay_peer[fd] == -1) {
        relay_head_bytes(fd, up);
        continue;
      }
      ssize_t r = read(fd, io_buf, sizeof io_buf);
      if (r <= 0) {
        relay_close(fd);
        continue;
      }
      send_all(relay_peer[fd], io_buf, (size_t)r);
    }
  }
}

/* ---- main ------------------------------------------------------------------ */

int main(int argc, char **argv) {
  long count = 1000, conns = 50;
  double seconds = 3;
  const char *proxies = NULL;
  uint64_t bytes = 1ULL << 30;
  signal(SIGPIPE, SIG_IGN);
  raise_nofile();
  if (argc < 2)
    die("usage: egressd-load serve | relay|setup|setup-rr|rps|bulk|idle IP:PORT [options] (see the source)");
  const char *cmd = argv[1];
  if (!strcmp(cmd, "serve")) return cmd_serve();
  if (argc < 3) die("missing IP:PORT");
  parse_addr(argv[2], &target);
  if (!strcmp(cmd, "relay")) return cmd_relay(&target);
  for (int i = 3; i < argc; i++) {
    const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
    if (!strcmp(a, "--proxy")) {
      via_proxy = 1;
      continue;
    }
    if (!v) die("option without a value");
    i++;
    if (!strcmp(a, "--host"))
      host = v;
    else if (!strcmp(a, "--count"))
      count = atol(v);
    else if (!strcmp(a, "--conns"))
      conns = atol(v);
    else if (!strcmp(a, "--seconds"))
      seconds = atof(v);
    else if (!strcmp(a, "--proxies"))
      proxies = v;
    else if (!strcmp(a, "--bytes"))
      bytes = strtoull(v, NULL, 10);
    else
      die("unknown option");
  }
  if (count < 1 || conns < 1 || seconds <= 0) die("counts must be positive");
  if (!strcmp(cmd, "setup")) return cmd_setup(count);
  if (!strcmp(cmd, "setup-rr")) {
    if (!proxies) die("setup-rr needs --proxies");
    return cmd_setup_rr(count, proxies);
  }
  if (!strcmp(cmd, "rps")) return cmd_rps(conns, seconds);
  if (!strcmp(cmd, "bulk")) return cmd_bulk(bytes);
  if (!strcmp(cmd, "idle")) return cmd_idle(count);
  die("unknown command");
  return 1;
}
