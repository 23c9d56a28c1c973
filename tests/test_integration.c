/*
 * Integration: the public API against a real DNS server, dnsmasq.
 *
 * Each suite starts its own dnsmasq on a free 127.0.0.1 port, in the
 * foreground as a child process, with the records it needs given on the
 * command line and every query logged to a file.  The log is how these tests
 * prove that names outside the policy never reach DNS.
 *
 * dnsmasq flags, and why:
 *   --keep-in-foreground   no fork, so the pid we hold is the server's
 *   --conf-file=/dev/null  ignore /etc/dnsmasq.conf and /etc/dnsmasq.d
 *   --no-resolv --no-poll  no upstream servers: nothing ever leaves the host
 *   --no-hosts             ignore /etc/hosts
 *   --bind-interfaces --listen-address=127.0.0.1 --port=N
 *                          bind exactly one loopback socket pair (UDP+TCP)
 *   --pid-file=            no pid file (non-root cannot write /run)
 *   --user=<our user> --group=<our group>
 *                          dnsmasq drops to nobody/dip by default; naming the
 *                          user and group we already are (root in CI) keeps
 *                          it from changing credentials, which would fail for
 *                          a normal user and clear PR_SET_PDEATHSIG for root
 *   --log-queries --log-facility=FILE   every query, one line each
 *   --local=/example.com/ --local=/acme.example/
 *                          makes dnsmasq answer for these zones itself:
 *                          NXDOMAIN for unknown names, NODATA for a missing
 *                          family.  Without it (and with no upstream) dnsmasq
 *                          answers REFUSED, which the library must treat as
 *                          dns_unavailable; example.net is left out on purpose
 *                          to test exactly that.
 *   --local-ttl=30         TTL of configured records (dnsmasq's default is 0)
 *
 * If dnsmasq is missing the executable is skipped (exit 77), unless
 * EGRESS_TEST_NO_SKIP=1 (CI), when a missing dnsmasq is a failure.
 * The child is killed on suite cleanup, at exit, on a fatal signal, and by
 * the kernel (PR_SET_PDEATHSIG) if this process dies any other way.
 */
#include "egress.h"
#include "testutil.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <grp.h>
#include <pwd.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>
#ifdef __linux__
#  include <sys/prctl.h>
#endif

/* ------------------------------------------------------------------------ */
/* dnsmasq as a child process                                                */
/* ------------------------------------------------------------------------ */

#define MAX_CHILDREN 4
#define MAX_ARGS     512

/* Read by the signal handler and the atexit hook: plain pids, no locks. */
static volatile pid_t children[MAX_CHILDREN];
static bool hooks_installed;

typedef struct dnsmasq {
  pid_t pid;
  int slot;
  int port;
  char dir[512];
  char log_path[600];
  char err_path[600];
  char servers[64]; /* "127.0.0.1:PORT" for egress_options_set_dns_servers */
} dnsmasq_t;

static double now_ms(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec * 1000.0 + (double)ts.tv_nsec / 1e6;
}

static void sleep_ms(int ms) {
  struct timespec ts = { .tv_sec = ms / 1000, .tv_nsec = (long)(ms % 1000) * 1000000L };
  while (nanosleep(&ts, &ts) != 0 && errno == EINTR) {}
}

static const char *dnsmasq_binary(void) {
  static const char *const candidates[] = { "/usr/sbin/dnsmasq", "/usr/bin/dnsmasq", "/sbin/dnsmasq" };
  const char *env = getenv("EGRESS_DNSMASQ");
  if (env && *env) return access(env, X_OK) == 0 ? env : NULL;
  for (size_t i = 0; i < sizeof candidates / sizeof candidates[0]; i++)
    if (access(candidates[i], X_OK) == 0) return candidates[i];
  return NULL;
}

/* Async-signal-safe: kill() only.  SIGCONT too, because a server stopped
 * with SIGSTOP would otherwise never act on the SIGTERM. */
static void kill_children_now(void) {
  for (int i = 0; i < MAX_CHILDREN; i++) {
    pid_t p = children[i];
    if (p > 0) {
      kill(p, SIGTERM);
      kill(p, SIGCONT);
    }
  }
}

/* Async-signal-safe reaping (waitpid, nanosleep, kill only): a dead parent
 * is not always followed by an init that reaps. */
static void reap_children_now(void) {
  for (int i = 0; i < MAX_CHILDREN; i++) {
    pid_t p = children[i];
    if (p <= 0) continue;
    int tries = 0;
    while (waitpid(p, NULL, WNOHANG) == 0) {
      if (++tries > 100) {
        kill(p, SIGKILL);
        waitpid(p, NULL, 0);
        break;
      }
      struct timespec ts = { 0, 10 * 1000 * 1000 };
      nanosleep(&ts, NULL);
    }
    children[i] = 0;
  }
}

static void on_fatal_signal(int sig) {
  kill_children_now();
  reap_children_now();
  signal(sig, SIG_DFL);
  raise(sig);
}

static void reap(pid_t pid) {
  double deadline = now_ms() + 2000;
  for (;;) {
    pid_t r = waitpid(pid, NULL, WNOHANG);
    if (r == pid || (r < 0 && errno != EINTR)) return;
    if (now_ms() > deadline) {
      kill(pid, SIGKILL);
      while (waitpid(pid, NULL, 0) < 0 && errno == EINTR) {}
      return;
    }
    sleep_ms(5);
  }
}

static void at_exit_cleanup(void) {
  kill_children_now();
  for (int i = 0; i < MAX_CHILDREN; i++)
    if (children[i] > 0) {
      reap(children[i]);
      children[i] = 0;
    }
}

static void install_hooks(void) {
  if (hooks_installed) return;
  hooks_installed = true;
  atexit(at_exit_cleanup);
  static const int sigs[] = { SIGINT, SIGTERM, SIGHUP, SIGABRT, SIGSEGV, SIGBUS, SIGFPE, SIGILL };
  for (size_t i = 0; i < sizeof sigs / sizeof sigs[0]; i++) {
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_fatal_signal;
    sigemptyset(&sa.sa_mask);
    sa.sa_flags = SA_RESETHAND;
    sigaction(sigs[i], &sa, NULL);
  }
}

/* A port free for both UDP and TCP on 127.0.0.1 right now. */
static int pick_port(void) {
  int u = -1, t = -1, port = -1;
  struct sockaddr_in a;
  socklen_t len = sizeof a;
  memset(&a, 0, sizeof a);
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  if ((u = socket(AF_INET, SOCK_DGRAM, 0)) < 0) goto done;
  if (bind(u, (struct sockaddr *)&a, sizeof a) != 0) goto done;
  if (getsockname(u, (struct sockaddr *)&a, &len) != 0) goto done;
  if ((t = socket(AF_INET, SOCK_STREAM, 0)) < 0) goto done;
  if (bind(t, (struct sockaddr *)&a, sizeof a) != 0) goto done;
  port = ntohs(a.sin_port);
done:
  if (u >= 0) close(u);
  if (t >= 0) close(t);
  return port;
}

/* One raw A query; true when a reply with our id came back in time. */
static bool probe(int port, int timeout_ms) {
  static const unsigned char query[] = { 0x4e, 0x71, 0x01, 0x00, 0x00, 0x01, 0x00, 0x00, 0x00,
                                         0x00, 0x00, 0x00, 5,    'r',  'e',  'a',  'd',  'y',
                                         7,    'e',  'x',  'a',  'm',  'p',  'l',  'e',  3,
                                         'c',  'o',  'm',  0,    0x00, 0x01, 0x00, 0x01 };
  bool ok = false;
  int s = socket(AF_INET, SOCK_DGRAM, 0);
  if (s < 0) return false;
  struct sockaddr_in a;
  memset(&a, 0, sizeof a);
  a.sin_family = AF_INET;
  a.sin_port = htons((uint16_t)port);
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  if (sendto(s, query, sizeof query, 0, (struct sockaddr *)&a, sizeof a) != (ssize_t)sizeof query) goto done;
  struct pollfd p = { .fd = s, .events = POLLIN };
  if (poll(&p, 1, timeout_ms) == 1) {
    unsigned char buf[512];
    ssize_t n = recv(s, buf, sizeof buf, 0);
    ok = n >= 12 && buf[0] == 0x4e && buf[1] == 0x71 && (buf[2] & 0x80);
  }
done:
  close(s);
  return ok;
}

static void print_file(const char *path) {
  FILE *f = fopen(path, "r");
  if (!f) return;
  char line[512];
  while (fgets(line, sizeof line, f)) fprintf(stderr, "  | %s", line);
  fclose(f);
}

/* Start dnsmasq with @p records (NULL-terminated extra arguments).
 * Returns 0 when it answers queries, -1 otherwise (reason on stderr). */
static int dnsmasq_start(dnsmasq_t *d, const char *const *records) {
  const char *bin = dnsmasq_binary();
  memset(d, 0, sizeof *d);
  d->slot = -1;
  if (!bin) return -1;
  install_hooks();
  for (int i = 0; i < MAX_CHILDREN; i++)
    if (children[i] == 0) {
      d->slot = i;
      break;
    }
  if (d->slot < 0) return -1;
  /* Under the build directory when meson runs us, so that the logs of a run
   * that crashed are left where the build's other logs are. */
  const char *base = getenv("EGRESS_TEST_BUILDDIR");
  if (!base || !*base || strlen(base) > 400) base = "/tmp";
  snprintf(d->dir, sizeof d->dir, "%s/egress-dnsmasq-XXXXXX", base);
  if (!mkdtemp(d->dir)) {
    fprintf(stderr, "mkdtemp: %s\n", strerror(errno));
    return -1;
  }
  snprintf(d->log_path, sizeof d->log_path, "%s/queries.log", d->dir);
  snprintf(d->err_path, sizeof d->err_path, "%s/stderr.log", d->dir);

  /* Name ourselves: root in CI keeps root, a normal user keeps itself.  The
   * group too: as root dnsmasq otherwise switches to group "dip", and any
   * credential change clears PR_SET_PDEATHSIG. */
  char user_arg[300], group_arg[300];
  struct passwd *pw = getpwuid(geteuid());
  struct group *gr = getgrgid(getegid());
  snprintf(user_arg, sizeof user_arg, "--user=%s", pw && pw->pw_name ? pw->pw_name : "root");
  snprintf(group_arg, sizeof group_arg, "--group=%s", gr && gr->gr_name ? gr->gr_name : "root");

  for (int attempt = 0; attempt < 5; attempt++) {
    int port = pick_port();
    if (port <= 0) continue;
    char port_arg[32], log_arg[700];
    snprintf(port_arg, sizeof port_arg, "--port=%d", port);
    snprintf(log_arg, sizeof log_arg, "--log-facility=%s", d->log_path);
    const char *argv[MAX_ARGS];
    size_t n = 0;
    argv[n++] = bin;
    argv[n++] = "--keep-in-foreground";
    argv[n++] = "--conf-file=/dev/null";
    argv[n++] = "--no-resolv";
    argv[n++] = "--no-hosts";
    argv[n++] = "--no-poll";
    argv[n++] = "--bind-interfaces";
    argv[n++] = "--listen-address=127.0.0.1";
    argv[n++] = port_arg;
    argv[n++] = "--pid-file=";
    argv[n++] = user_arg;
    argv[n++] = group_arg;
    argv[n++] = "--log-queries";
    argv[n++] = log_arg;
    argv[n++] = "--local-ttl=30";
    for (size_t i = 0; records && records[i] && n < MAX_ARGS - 1; i++) argv[n++] = records[i];
    argv[n] = NULL;
    unlink(d->log_path);

    pid_t parent = getpid();
    pid_t pid = fork();
    if (pid < 0) {
      fprintf(stderr, "fork: %s\n", strerror(errno));
      return -1;
    }
    if (pid == 0) {
#ifdef __linux__
      /* SIGKILL: a server frozen by SIGSTOP would sit on a SIGTERM. */
      prctl(PR_SET_PDEATHSIG, SIGKILL);
#endif
      if (getppid() != parent) _exit(127);
      int in = open("/dev/null", O_RDONLY);
      int err = open(d->err_path, O_WRONLY | O_CREAT | O_TRUNC, 0600);
      if (in >= 0) dup2(in, 0);
      if (err >= 0) {
        dup2(err, 1);
        dup2(err, 2);
      }
      execv(bin, (char *const *)argv);
      _exit(127);
    }
    d->pid = pid;
    children[d->slot] = pid;
    d->port = port;
    snprintf(d->servers, sizeof d->servers, "127.0.0.1:%d", port);

    double deadline = now_ms() + 5000;
    bool exited = false;
    while (now_ms() < deadline) {
      if (waitpid(pid, NULL, WNOHANG) == pid) {
        exited = true;
        break;
      }
      if (probe(port, 100)) return 0;
    }
    if (!exited) {
      kill(pid, SIGTERM);
      reap(pid);
    }
    children[d->slot] = 0;
    d->pid = 0;
    fprintf(stderr, "dnsmasq on port %d did not come up (attempt %d):\n", port, attempt + 1);
    print_file(d->err_path);
    print_file(d->log_path);
  }
  return -1;
}

static void dnsmasq_stop(dnsmasq_t *d) {
  if (d->pid > 0) {
    kill(d->pid, SIGTERM);
    kill(d->pid, SIGCONT);
    reap(d->pid);
  }
  if (d->slot >= 0) children[d->slot] = 0;
  d->pid = 0;
}

static void dnsmasq_remove_files(dnsmasq_t *d) {
  if (!d->dir[0]) return;
  unlink(d->log_path);
  unlink(d->err_path);
  rmdir(d->dir);
  d->dir[0] = '\0';
}

/* The query log as a NUL-terminated string (Caller owns: free()). */
static char *read_log(const dnsmasq_t *d) {
  FILE *f = fopen(d->log_path, "r");
  if (!f) return NULL;
  size_t cap = 4096, len = 0;
  char *buf = malloc(cap);
  while (buf) {
    if (cap - len < 2048) {
      char *nb = realloc(buf, cap * 2);
      if (!nb) {
        free(buf);
        buf = NULL;
        break;
      }
      buf = nb;
      cap *= 2;
    }
    size_t got = fread(buf + len, 1, cap - len - 1, f);
    len += got;
    if (got == 0) break;
  }
  fclose(f);
  if (buf) buf[len] = '\0';
  return buf;
}

static size_t count_in(const char *hay, const char *needle) {
  size_t n = 0;
  if (!hay) return 0;
  for (const char *p = strstr(hay, needle); p; p = strstr(p + 1, needle)) n++;
  return n;
}

/* dnsmasq writes its log from its main loop; wait until @p needle shows. */
static bool wait_for_log(const dnsmasq_t *d, const char *needle, int timeout_ms) {
  double deadline = now_ms() + timeout_ms;
  do {
    char *log = read_log(d);
    bool found = log && strstr(log, needle);
    free(log);
    if (found) return true;
    sleep_ms(10);
  } while (now_ms() < deadline);
  return false;
}

/* ------------------------------------------------------------------------ */
/* Checkers and assertions                                                   */
/* ------------------------------------------------------------------------ */

static dnsmasq_t main_dns;
static bool main_up;

/* Global addresses only: documentation ranges (203.0.113.0/24, 2001:db8::/32)
 * are special-purpose and would be forbidden. */
#define PUB4 "93.184.216.34"
#define PUB6 "2606:2800:220:1:248:1893:25c8:1946"

static const char *const main_records[] = {
  "--local=/example.com/",
  "--local=/acme.example/",
  "--host-record=pub.example.com," PUB4 "," PUB6 ",60",
  "--host-record=v4only.example.com,8.8.8.8",
  "--host-record=loop4.example.com,127.0.0.1",
  "--host-record=rfc1918.example.com,10.20.30.40",
  "--host-record=metadata.example.com,169.254.169.254",
  "--host-record=cgnat.example.com,100.64.0.1",
  "--host-record=loop6.example.com,::1",
  "--host-record=ula.example.com,fd00::1",
  "--host-record=ec2v6.example.com,fd00:ec2::254",
  "--host-record=mapped.example.com,::ffff:127.0.0.1",
  "--host-record=nat64.example.com,64:ff9b::7f00:1",
  "--host-record=sixtofour.example.com,2002:a00:1::1",
  "--host-record=linklocal6.example.com,fe80::1",
  "--host-record=mix.example.com,1.1.1.1",
  "--host-record=mix.example.com,10.0.0.1",
  "--host-record=mix.example.com,2001:4860:4860::8888",
  "--host-record=mix6.example.com,8.8.8.8,fd12:3456::1",
  "--cname=alias.example.com,db.internal.example.com",
  "--host-record=db.internal.example.com,10.9.8.7",
  "--cname=www.example.com,pub.example.com",
  "--txt-record=txtonly.example.com,hello",
  "--host-record=db.example.com,10.1.2.3",
  "--host-record=db-outside.example.com,10.2.0.1",
  "--host-record=denied-addr.example.com,8.8.4.4",
  "--host-record=api.crm.example.com,1.0.0.1",
  "--host-record=login.crm.example.com,1.0.0.2",
  "--host-record=eu.files.crm.example.com,1.0.0.3,2606:4700:4700::1111",
  "--host-record=evil.files.crm.example.com,192.168.1.1",
  "--host-record=erp.acme.example,9.9.9.9",
  "--host-record=control.example.com,8.8.8.8",
  "--host-record=cached.example.com,1.1.1.1",
  "--host-record=canary1.example.com,1.1.1.1",
  "--host-record=canary2.example.com,1.1.1.1",
  "--host-record=canary3.example.com,1.1.1.1",
  "--host-record=canary4.example.com,1.1.1.1",
  NULL,
};

/* Answers of many addresses: around the library's inline sizes and past
 * 512 bytes, where dnsmasq truncates the UDP reply (TC=1) and c-ares must
 * ask again over TCP.  "countNbad" has a private address last, which only
 * the full (TCP) answer carries. */
typedef struct big_name {
  int n;
  bool bad;
} big_name_t;

static const big_name_t big_names[] = { { 3, false }, { 4, false },   { 5, false }, { 8, false },
                                        { 9, false }, { 100, false }, { 4, true },  { 5, true },
                                        { 9, true },  { 100, true } };
#define N_BIG_NAMES     (sizeof big_names / sizeof big_names[0])
#define MAX_BIG_RECORDS 300

static char big_record_text[MAX_BIG_RECORDS][128];
static const char *all_main_records[MAX_BIG_RECORDS + sizeof main_records / sizeof main_records[0]];

static void big_name_of(const big_name_t *b, char *buf, size_t len) {
  snprintf(buf, len, "count%d%s.example.com", b->n, b->bad ? "bad" : "");
}

/* Address i of big name b: public, except the last of a "bad" one. */
static void big_addr_of(const big_name_t *b, int i, char *buf, size_t len) {
  if (b->bad && i == b->n - 1)
    snprintf(buf, len, "10.0.%d.1", b->n);
  else
    snprintf(buf, len, "8.8.%d.%d", b->n, i + 1);
}

static const char *const *build_main_records(void) {
  size_t k = 0, r = 0;
  for (; main_records[k]; k++) all_main_records[k] = main_records[k];
  for (size_t b = 0; b < N_BIG_NAMES; b++)
    for (int i = 0; i < big_names[b].n && r < MAX_BIG_RECORDS; i++, r++) {
      char name[64], addr[32];
      big_name_of(&big_names[b], name, sizeof name);
      big_addr_of(&big_names[b], i, addr, sizeof addr);
      snprintf(big_record_text[r], sizeof big_record_text[r], "--host-record=%s,%s", name, addr);
      all_main_records[k++] = big_record_text[r];
    }
  all_main_records[k] = NULL;
  return all_main_records;
}

static int main_init(void) {
  if (!dnsmasq_binary()) {
    egress_test_skip("dnsmasq not installed");
    return 1;
  }
  main_up = dnsmasq_start(&main_dns, build_main_records()) == 0;
  return main_up ? 0 : 1;
}

static int main_cleanup(void) {
  dnsmasq_stop(&main_dns);
  dnsmasq_remove_files(&main_dns);
  return 0;
}

typedef struct checker_cfg {
  egress_mode_t mode;
  egress_mixed_t mixed;
  uint32_t timeout_ms;
  const char *servers;
  bool no_cache;
} checker_cfg_t;

static egress_checker_t *make_checker_from(egress_policy_t *policy, const checker_cfg_t *cfg) {
  egress_options_t *opts = NULL;
  egress_checker_t *c = NULL;
  char err[EGRESS_ERRBUF_SIZE] = "";
  CU_ASSERT_EQUAL_FATAL(egress_options_new(&opts), EGRESS_OK);
  CU_ASSERT_EQUAL(egress_options_set_mode(opts, cfg ? cfg->mode : EGRESS_MODE_ENFORCE), EGRESS_OK);
  CU_ASSERT_EQUAL(egress_options_set_mixed(opts, cfg ? cfg->mixed : EGRESS_MIXED_DENY), EGRESS_OK);
  CU_ASSERT_EQUAL(egress_options_set_timeout_ms(opts, cfg && cfg->timeout_ms ? cfg->timeout_ms : 2000),
                  EGRESS_OK);
  CU_ASSERT_EQUAL(egress_options_set_dns_servers(opts, cfg && cfg->servers ? cfg->servers : main_dns.servers),
                  EGRESS_OK);
  if (cfg && cfg->no_cache) CU_ASSERT_EQUAL(egress_options_set_cache(opts, 0, 5, 300, 5), EGRESS_OK);
  egress_status_t st = egress_checker_new(policy, opts, &c, err, sizeof err);
  egress_options_free(opts);
  if (st != EGRESS_OK) fprintf(stderr, "egress_checker_new: %s\n", err);
  CU_ASSERT_EQUAL_FATAL(st, EGRESS_OK);
  return c;
}

/* Policy from a JSON document (the path every real worker takes). */
static egress_policy_t *policy_json(const char *json) {
  egress_policy_t *p = NULL;
  char err[EGRESS_ERRBUF_SIZE] = "";
  egress_status_t st = egress_policy_from_json(json, strlen(json), &p, err, sizeof err);
  if (st != EGRESS_OK) fprintf(stderr, "policy %s: %s\n", json, err);
  CU_ASSERT_EQUAL_FATAL(st, EGRESS_OK);
  return p;
}

static egress_checker_t *make_checker(const char *json, const checker_cfg_t *cfg) {
  egress_policy_t *p = policy_json(json);
  egress_checker_t *c = make_checker_from(p, cfg);
  egress_policy_unref(p);
  return c;
}

static egress_decision_t *check(egress_checker_t *c, const char *host, int32_t port) {
  egress_decision_t *d = NULL;
  CU_ASSERT_EQUAL(egress_check_ex(c, host, port, NULL, &d), EGRESS_OK);
  CU_ASSERT_PTR_NOT_NULL_FATAL(d);
  return d;
}

static egress_decision_t *check_url(egress_checker_t *c, const char *url) {
  egress_decision_t *d = NULL;
  CU_ASSERT_EQUAL(egress_check_url(c, url, NULL, &d), EGRESS_OK);
  CU_ASSERT_PTR_NOT_NULL_FATAL(d);
  return d;
}

static bool expect_decision(egress_decision_t *d, const char *what, egress_verdict_t verdict,
                            egress_outcome_t outcome, egress_reason_t reason) {
  bool ok = egress_decision_verdict(d) == verdict && egress_decision_outcome(d) == outcome &&
            egress_decision_reason(d) == reason;
  if (!ok)
    fprintf(stderr, "\n  %s -> %s/%s/%s (%s); want %s/%s/%s\n", what,
            egress_decision_verdict(d) == EGRESS_VERDICT_ALLOW ? "allow" : "deny",
            egress_outcome_name(egress_decision_outcome(d)), egress_reason_name(egress_decision_reason(d)),
            egress_decision_message(d), verdict == EGRESS_VERDICT_ALLOW ? "allow" : "deny",
            egress_outcome_name(outcome), egress_reason_name(reason));
  CU_ASSERT_EQUAL(egress_decision_verdict(d), verdict);
  CU_ASSERT_EQUAL(egress_decision_outcome(d), outcome);
  CU_ASSERT_EQUAL(egress_decision_reason(d), reason);
  return ok;
}

/* Enforce-mode expectation: the verdict follows the outcome. */
static void expect(egress_checker_t *c, const char *host, int32_t port, egress_outcome_t outcome,
                   egress_reason_t reason) {
  char what[300];
  snprintf(what, sizeof what, "%s:%ld", host, (long)port);
  egress_decision_t *d = check(c, host, port);
  expect_decision(d, what, outcome == EGRESS_OUTCOME_ALLOWED ? EGRESS_VERDICT_ALLOW : EGRESS_VERDICT_DENY,
                  outcome, reason);
  if (outcome != EGRESS_OUTCOME_ALLOWED) CU_ASSERT_PTR_NULL(egress_decision_curl_resolve(d));
  egress_decision_free(d);
}

static void expect_url(egress_checker_t *c, const char *url, egress_outcome_t outcome,
                       egress_reason_t reason) {
  egress_decision_t *d = check_url(c, url);
  expect_decision(d, url, outcome == EGRESS_OUTCOME_ALLOWED ? EGRESS_VERDICT_ALLOW : EGRESS_VERDICT_DENY,
                  outcome, reason);
  egress_decision_free(d);
}

static bool has_address(const egress_decision_t *d, const char *addr, egress_verdict_t verdict) {
  for (size_t i = 0; i < egress_decision_address_count(d); i++) {
    const char *a = egress_decision_address(d, i);
    if (a && !strcmp(a, addr)) return egress_decision_address_verdict(d, i) == verdict;
  }
  return false;
}

/* The CURLOPT_RESOLVE entry, compared as "host:port:" plus a set of
 * addresses: c-ares hands back A and AAAA answers in arrival order. */
static bool curl_resolve_is(const char *got, const char *prefix, const char *const *addrs, size_t n) {
  if (!got) return false;
  size_t pl = strlen(prefix);
  if (strncmp(got, prefix, pl)) return false;
  const char *list = got + pl;
  size_t items = 1;
  for (const char *p = list; *p; p++) items += *p == ',';
  if (items != n) return false;
  for (size_t i = 0; i < n; i++) {
    size_t al = strlen(addrs[i]);
    bool found = false;
    for (const char *p = list; *p;) {
      const char *end = strchr(p, ',');
      size_t len = end ? (size_t)(end - p) : strlen(p);
      if (len == al && !memcmp(p, addrs[i], al)) found = true;
      p += len;
      if (*p == ',') p++;
    }
    if (!found) return false;
  }
  return true;
}

/* ------------------------------------------------------------------------ */
/* Tests: answers from a real server                                         */
/* ------------------------------------------------------------------------ */

static void test_public_answer_allowed(void) {
  egress_checker_t *c = make_checker("{\"egressAllowlist\":[\"pub.example.com\",\"www.example.com\"]}", NULL);
  egress_decision_t *d = check(c, "pub.example.com", 443);
  expect_decision(d, "pub.example.com:443", EGRESS_VERDICT_ALLOW, EGRESS_OUTCOME_ALLOWED, EGRESS_REASON_NONE);
  CU_ASSERT_EQUAL(egress_decision_address_count(d), 2);
  CU_ASSERT_TRUE(has_address(d, PUB4, EGRESS_VERDICT_ALLOW));
  CU_ASSERT_TRUE(has_address(d, PUB6, EGRESS_VERDICT_ALLOW));
  static const char *const want[] = { PUB4, "[" PUB6 "]" };
  const char *cr = egress_decision_curl_resolve(d);
  if (!curl_resolve_is(cr, "pub.example.com:443:", want, 2))
    fprintf(stderr, "\n  curl_resolve: %s\n", cr ? cr : "(null)");
  CU_ASSERT_TRUE(curl_resolve_is(cr, "pub.example.com:443:", want, 2));
  CU_ASSERT_TRUE(egress_decision_has_rule(d));
  CU_ASSERT_EQUAL(egress_decision_rule_index(d), 0);
  CU_ASSERT_STRING_EQUAL(egress_decision_rule_text(d), "pub.example.com");
  for (size_t i = 0; i < egress_decision_address_count(d); i++) {
    /* The record carries TTL 60. */
    int32_t ttl = egress_decision_address_ttl(d, i);
    CU_ASSERT_TRUE(ttl > 0 && ttl <= 60);
    size_t len = 0;
    const struct sockaddr *sa = egress_decision_address_sockaddr(d, i, &len);
    CU_ASSERT_PTR_NOT_NULL_FATAL(sa);
    char text[INET6_ADDRSTRLEN] = "";
    if (sa->sa_family == AF_INET) {
      const struct sockaddr_in *s4 = (const void *)sa;
      CU_ASSERT_EQUAL(len, sizeof *s4);
      CU_ASSERT_EQUAL(ntohs(s4->sin_port), 443);
      inet_ntop(AF_INET, &s4->sin_addr, text, sizeof text);
      CU_ASSERT_STRING_EQUAL(text, PUB4);
    } else {
      const struct sockaddr_in6 *s6 = (const void *)sa;
      CU_ASSERT_EQUAL(sa->sa_family, AF_INET6);
      CU_ASSERT_EQUAL(len, sizeof *s6);
      CU_ASSERT_EQUAL(ntohs(s6->sin6_port), 443);
      inet_ntop(AF_INET6, &s6->sin6_addr, text, sizeof text);
      CU_ASSERT_STRING_EQUAL(text, PUB6);
    }
  }
  egress_decision_free(d);

  /* Canonicalized before resolving: case and one trailing dot. */
  d = check(c, "PUB.Example.COM.", 443);
  expect_decision(d, "PUB.Example.COM.", EGRESS_VERDICT_ALLOW, EGRESS_OUTCOME_ALLOWED, EGRESS_REASON_NONE);
  CU_ASSERT_STRING_EQUAL(egress_decision_host(d), "pub.example.com");
  CU_ASSERT_TRUE(curl_resolve_is(egress_decision_curl_resolve(d), "pub.example.com:443:", want, 2));
  egress_decision_free(d);

  /* A CNAME between two allowed-looking names is fine: the final addresses
   * are what count, and the entry is for the name that was checked. */
  d = check(c, "www.example.com", 443);
  expect_decision(d, "www.example.com", EGRESS_VERDICT_ALLOW, EGRESS_OUTCOME_ALLOWED, EGRESS_REASON_NONE);
  CU_ASSERT_TRUE(curl_resolve_is(egress_decision_curl_resolve(d), "www.example.com:443:", want, 2));
  egress_decision_free(d);

  CU_ASSERT_EQUAL(egress_check(c, "pub.example.com", 443), EGRESS_VERDICT_ALLOW);
  CU_ASSERT_EQUAL(egress_check(c, "pub.example.com", 80), EGRESS_VERDICT_DENY);
  egress_checker_free(c);
}

static void test_single_family_answers(void) {
  egress_checker_t *c = make_checker("{\"egressAllowlist\":[\"*.example.com\"]}", NULL);
  /* A only: AAAA is NODATA under --local, and the check allows with the A. */
  egress_decision_t *d = check(c, "v4only.example.com", 443);
  expect_decision(d, "v4only", EGRESS_VERDICT_ALLOW, EGRESS_OUTCOME_ALLOWED, EGRESS_REASON_NONE);
  CU_ASSERT_EQUAL(egress_decision_address_count(d), 1);
  CU_ASSERT_STRING_EQUAL(egress_decision_curl_resolve(d), "v4only.example.com:443:8.8.8.8");
  egress_decision_free(d);
  egress_checker_free(c);
}

typedef struct forbidden_case {
  const char *host;
  const char *addr_in_message; /* the address the denial must name */
} forbidden_case_t;

static void test_forbidden_answers(void) {
  static const forbidden_case_t cases[] = {
    { "loop4.example.com", "127.0.0.1" },
    { "rfc1918.example.com", "10.20.30.40" },
    { "metadata.example.com", "169.254.169.254" },
    { "cgnat.example.com", "100.64.0.1" },
    { "loop6.example.com", "::1" },
    { "ula.example.com", "fd00::1" },
    { "ec2v6.example.com", "fd00:ec2::254" },
    { "mapped.example.com", "127.0.0.1" },        /* ::ffff:127.0.0.1 judged as 127.0.0.1 */
    { "nat64.example.com", "64:ff9b::7f00:1" },   /* NAT64 of 127.0.0.1 */
    { "sixtofour.example.com", "2002:a00:1::1" }, /* 6to4 of 10.0.0.1 */
    { "linklocal6.example.com", "fe80::1" },
    { "mix.example.com", "10.0.0.1" }, /* public + private: deny-if-any */
    { "mix6.example.com", "fd12:3456::1" },
  };
  egress_checker_t *c =
      make_checker("{\"egressAllowlist\":[\"*.example.com:*\", \"0.0.0.0/0\", \"::/0\"]}", NULL);
  for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
    egress_decision_t *d = check(c, cases[i].host, 443);
    expect_decision(d, cases[i].host, EGRESS_VERDICT_DENY, EGRESS_OUTCOME_DENIED,
                    EGRESS_REASON_RESOLVED_ADDRESS_FORBIDDEN);
    CU_ASSERT_PTR_NULL(egress_decision_curl_resolve(d));
    CU_ASSERT_TRUE(egress_decision_address_count(d) >= 1);
    /* Deny-if-any: not one address of the answer may be used. */
    for (size_t k = 0; k < egress_decision_address_count(d); k++)
      CU_ASSERT_EQUAL(egress_decision_address_verdict(d, k), EGRESS_VERDICT_DENY);
    const char *msg = egress_decision_message(d);
    if (!msg || !strstr(msg, cases[i].addr_in_message))
      fprintf(stderr, "\n  %s: message \"%s\" does not name %s\n", cases[i].host, msg ? msg : "(null)",
              cases[i].addr_in_message);
    CU_ASSERT_TRUE(msg && strstr(msg, cases[i].addr_in_message));
    egress_decision_free(d);
    CU_ASSERT_EQUAL(egress_check(c, cases[i].host, 443), EGRESS_VERDICT_DENY);
  }
  egress_checker_free(c);
}

static void test_mixed_filter(void) {
  checker_cfg_t cfg = { .mixed = EGRESS_MIXED_FILTER };
  egress_checker_t *c = make_checker("{\"egressAllowlist\":[\"*.example.com\"]}", &cfg);
  egress_decision_t *d = check(c, "mix.example.com", 443);
  expect_decision(d, "mix (filter)", EGRESS_VERDICT_ALLOW, EGRESS_OUTCOME_ALLOWED, EGRESS_REASON_NONE);
  CU_ASSERT_EQUAL(egress_decision_address_count(d), 3);
  CU_ASSERT_TRUE(has_address(d, "1.1.1.1", EGRESS_VERDICT_ALLOW));
  CU_ASSERT_TRUE(has_address(d, "2001:4860:4860::8888", EGRESS_VERDICT_ALLOW));
  CU_ASSERT_TRUE(has_address(d, "10.0.0.1", EGRESS_VERDICT_DENY));
  static const char *const want[] = { "1.1.1.1", "[2001:4860:4860::8888]" };
  CU_ASSERT_TRUE(curl_resolve_is(egress_decision_curl_resolve(d), "mix.example.com:443:", want, 2));
  egress_decision_free(d);
  /* Nothing left after filtering: still denied. */
  expect(c, "rfc1918.example.com", 443, EGRESS_OUTCOME_DENIED, EGRESS_REASON_RESOLVED_ADDRESS_FORBIDDEN);
  expect(c, "loop6.example.com", 443, EGRESS_OUTCOME_DENIED, EGRESS_REASON_RESOLVED_ADDRESS_FORBIDDEN);
  egress_checker_free(c);
}

static void test_cname_to_private(void) {
  /* Only the alias is listed; its CNAME target is neither listed nor public. */
  egress_checker_t *c = make_checker("{\"egressAllowlist\":[\"alias.example.com\"]}", NULL);
  egress_decision_t *d = check(c, "alias.example.com", 443);
  expect_decision(d, "alias.example.com", EGRESS_VERDICT_DENY, EGRESS_OUTCOME_DENIED,
                  EGRESS_REASON_RESOLVED_ADDRESS_FORBIDDEN);
  CU_ASSERT_TRUE(has_address(d, "10.9.8.7", EGRESS_VERDICT_DENY));
  CU_ASSERT_PTR_NULL(egress_decision_curl_resolve(d));
  egress_decision_free(d);
  /* The target itself is not in the allowlist. */
  expect(c, "db.internal.example.com", 443, EGRESS_OUTCOME_DENIED, EGRESS_REASON_NOT_IN_ALLOWLIST);
  egress_checker_free(c);
}

static void test_missing_names(void) {
  egress_checker_t *c = make_checker("{\"egressAllowlist\":[\"*.example.com\", \"*.example.net\"]}", NULL);
  /* dnsmasq answers NXDOMAIN inside a --local zone: the name does not exist. */
  expect(c, "nosuch.example.com", 443, EGRESS_OUTCOME_DENIED, EGRESS_REASON_NO_SUCH_HOST);
  /* The name exists but has neither A nor AAAA (NODATA twice): no address. */
  expect(c, "txtonly.example.com", 443, EGRESS_OUTCOME_DENIED, EGRESS_REASON_NO_SUCH_HOST);
  /* Outside every --local zone and with no upstream, dnsmasq answers
   * REFUSED ("config error is REFUSED" in its log).  REFUSED says nothing
   * about the name, so the check cannot be enforced: dns_unavailable. */
  expect(c, "anything.example.net", 443, EGRESS_OUTCOME_ENFORCEMENT_UNAVAILABLE,
         EGRESS_REASON_DNS_UNAVAILABLE);
  egress_checker_free(c);
}

static void test_deny_list_on_resolved_address(void) {
  egress_checker_t *c = make_checker(
      "{\"egressAllowlist\":[\"*.example.com\"],\"egressDenylist\":[\"8.8.4.4\",\"canary3.example.com\"]}",
      NULL);
  egress_decision_t *d = check(c, "denied-addr.example.com", 443);
  expect_decision(d, "denied-addr", EGRESS_VERDICT_DENY, EGRESS_OUTCOME_DENIED,
                  EGRESS_REASON_RESOLVED_ADDRESS_FORBIDDEN);
  CU_ASSERT_TRUE(has_address(d, "8.8.4.4", EGRESS_VERDICT_DENY));
  /* The rule that won is the deny entry. */
  CU_ASSERT_TRUE(egress_decision_has_rule(d));
  CU_ASSERT_EQUAL(egress_decision_rule_list(d), EGRESS_LIST_DENY);
  CU_ASSERT_STRING_EQUAL(egress_decision_rule_text(d), "8.8.4.4");
  egress_decision_free(d);
  expect(c, "control.example.com", 443, EGRESS_OUTCOME_ALLOWED, EGRESS_REASON_NONE);
  egress_checker_free(c);
}

/* Names the policy does not open are never sent to DNS: the server's own
 * query log is the witness. */
static void test_no_dns_leak(void) {
  egress_checker_t *c = make_checker(
      "{\"egressAllowlist\":[\"control.example.com\",\"canary2.example.com\",\"*.canary3.example.com\","
      "\"canary3.example.com\",\"https://canary4.example.com/"
      "public\",\"re:^canary1[0-9]\\\\.example\\\\.org$\"],"
      "\"egressDenylist\":[\"canary3.example.com\"]}",
      NULL);
  expect(c, "canary1.example.com", 443, EGRESS_OUTCOME_DENIED, EGRESS_REASON_NOT_IN_ALLOWLIST);
  expect(c, "canary1.example.org", 443, EGRESS_OUTCOME_DENIED, EGRESS_REASON_NOT_IN_ALLOWLIST);
  expect(c, "a.b.canary3.example.com", 443, EGRESS_OUTCOME_DENIED, EGRESS_REASON_NOT_IN_ALLOWLIST);
  expect(c, "canary2.example.com", 8443, EGRESS_OUTCOME_DENIED, EGRESS_REASON_PORT_NOT_ALLOWED);
  expect(c, "canary3.example.com", 443, EGRESS_OUTCOME_DENIED, EGRESS_REASON_EXPLICIT_DENY);
  expect_url(c, "https://canary4.example.com/private/x", EGRESS_OUTCOME_DENIED,
             EGRESS_REASON_NOT_IN_ALLOWLIST);
  expect(c, "canary5.example.com:443", 443, EGRESS_OUTCOME_DENIED, EGRESS_REASON_INVALID_HOST);
  expect(c, "http://canary6.example.com", 443, EGRESS_OUTCOME_DENIED, EGRESS_REASON_INVALID_HOST);
  expect(c, "canary7.example.com/x", 443, EGRESS_OUTCOME_DENIED, EGRESS_REASON_INVALID_HOST);
  expect(c, "canary8.example.com", 0, EGRESS_OUTCOME_DENIED, EGRESS_REASON_INVALID_PORT);
  expect(c, "canary9.example.com", 70000, EGRESS_OUTCOME_DENIED, EGRESS_REASON_INVALID_PORT);
  expect(c, "canary10.2.3.4", 443, EGRESS_OUTCOME_DENIED, EGRESS_REASON_INVALID_HOST);
  /* Positive control: a listed name is resolved and logged. */
  expect(c, "control.example.com", 443, EGRESS_OUTCOME_ALLOWED, EGRESS_REASON_NONE);
  egress_checker_free(c);

  CU_ASSERT_TRUE(wait_for_log(&main_dns, "query[A] control.example.com from", 3000));
  char *log = read_log(&main_dns);
  if (!log) {
    CU_FAIL("cannot read the dnsmasq query log");
    return;
  }
  if (strstr(log, "canary")) fprintf(stderr, "\n  DNS leak, query log:\n%s\n", log);
  CU_ASSERT_PTR_NULL(strstr(log, "canary"));
  free(log);
}

static void test_registration_example(void) {
  char path[1024];
  egress_policy_t *p = NULL;
  char err[EGRESS_ERRBUF_SIZE] = "";
  egress_status_t st = egress_policy_from_file(
      egress_test_path("../examples/policies/machine-registration.json", path, sizeof path), &p, err,
      sizeof err);
  if (st != EGRESS_OK) fprintf(stderr, "%s: %s\n", path, err);
  CU_ASSERT_EQUAL_FATAL(st, EGRESS_OK);
  CU_ASSERT_EQUAL(egress_policy_rule_count(p, EGRESS_LIST_ALLOW), 4);
  egress_checker_t *c = make_checker_from(p, NULL);
  egress_policy_unref(p);

  expect(c, "api.crm.example.com", 443, EGRESS_OUTCOME_ALLOWED, EGRESS_REASON_NONE);
  expect(c, "login.crm.example.com", 443, EGRESS_OUTCOME_ALLOWED, EGRESS_REASON_NONE);
  expect(c, "eu.files.crm.example.com", 443, EGRESS_OUTCOME_ALLOWED, EGRESS_REASON_NONE);
  expect(c, "erp.acme.example", 8443, EGRESS_OUTCOME_ALLOWED, EGRESS_REASON_NONE);
  expect(c, "api.crm.example.com", 80, EGRESS_OUTCOME_DENIED, EGRESS_REASON_PORT_NOT_ALLOWED);
  expect(c, "erp.acme.example", 443, EGRESS_OUTCOME_DENIED, EGRESS_REASON_PORT_NOT_ALLOWED);
  expect(c, "files.crm.example.com", 443, EGRESS_OUTCOME_DENIED, EGRESS_REASON_NOT_IN_ALLOWLIST);
  expect(c, "a.eu.files.crm.example.com", 443, EGRESS_OUTCOME_DENIED, EGRESS_REASON_NOT_IN_ALLOWLIST);
  expect(c, "crm.example.com", 443, EGRESS_OUTCOME_DENIED, EGRESS_REASON_NOT_IN_ALLOWLIST);
  expect(c, "evil.files.crm.example.com", 443, EGRESS_OUTCOME_DENIED,
         EGRESS_REASON_RESOLVED_ADDRESS_FORBIDDEN);
  expect(c, "gone.files.crm.example.com", 443, EGRESS_OUTCOME_DENIED, EGRESS_REASON_NO_SUCH_HOST);
  expect(c, "1.0.0.1", 443, EGRESS_OUTCOME_DENIED, EGRESS_REASON_NOT_IN_ALLOWLIST);

  egress_decision_t *d = check(c, "eu.files.crm.example.com", 443);
  static const char *const want[] = { "1.0.0.3", "[2606:4700:4700::1111]" };
  CU_ASSERT_TRUE(curl_resolve_is(egress_decision_curl_resolve(d), "eu.files.crm.example.com:443:", want, 2));
  CU_ASSERT_STRING_EQUAL(egress_decision_rule_text(d), "*.files.crm.example.com");
  CU_ASSERT_EQUAL(egress_decision_rule_index(d), 2);
  egress_decision_free(d);
  egress_checker_free(c);
}

static void test_url_paths(void) {
  char path[1024];
  egress_policy_t *p = NULL;
  char err[EGRESS_ERRBUF_SIZE] = "";
  CU_ASSERT_EQUAL_FATAL(
      egress_policy_from_file(
          egress_test_path("../examples/policies/machine-registration.json", path, sizeof path), &p, err,
          sizeof err),
      EGRESS_OK);
  egress_checker_t *c = make_checker_from(p, NULL);
  egress_policy_unref(p);

  expect_url(c, "https://login.crm.example.com/oauth2", EGRESS_OUTCOME_ALLOWED, EGRESS_REASON_NONE);
  expect_url(c, "https://login.crm.example.com/oauth2/token?x=1", EGRESS_OUTCOME_ALLOWED, EGRESS_REASON_NONE);
  expect_url(c, "https://login.crm.example.com:443/oauth2/", EGRESS_OUTCOME_ALLOWED, EGRESS_REASON_NONE);
  expect_url(c, "https://login.crm.example.com/x/../oauth2/token", EGRESS_OUTCOME_ALLOWED,
             EGRESS_REASON_NONE);
  expect_url(c, "https://login.crm.example.com/oauth2x", EGRESS_OUTCOME_DENIED,
             EGRESS_REASON_NOT_IN_ALLOWLIST);
  expect_url(c, "https://login.crm.example.com/", EGRESS_OUTCOME_DENIED, EGRESS_REASON_NOT_IN_ALLOWLIST);
  expect_url(c, "https://login.crm.example.com/oauth2/../admin", EGRESS_OUTCOME_DENIED,
             EGRESS_REASON_NOT_IN_ALLOWLIST);
  expect_url(c, "https://login.crm.example.com/OAUTH2", EGRESS_OUTCOME_DENIED,
             EGRESS_REASON_NOT_IN_ALLOWLIST);
  expect_url(c, "http://login.crm.example.com/oauth2", EGRESS_OUTCOME_DENIED, EGRESS_REASON_PORT_NOT_ALLOWED);
  expect_url(c, "https://api.crm.example.com/anything/at/all", EGRESS_OUTCOME_ALLOWED, EGRESS_REASON_NONE);
  expect_url(c, "https://erp.acme.example:8443/api", EGRESS_OUTCOME_ALLOWED, EGRESS_REASON_NONE);
  expect_url(c, "https://erp.acme.example:8443/api/v2/orders", EGRESS_OUTCOME_ALLOWED, EGRESS_REASON_NONE);
  expect_url(c, "https://erp.acme.example:8443/apiv2", EGRESS_OUTCOME_DENIED, EGRESS_REASON_NOT_IN_ALLOWLIST);
  expect_url(c, "https://erp.acme.example/api", EGRESS_OUTCOME_DENIED, EGRESS_REASON_PORT_NOT_ALLOWED);
  expect_url(c, "https://eu.files.crm.example.com/report.csv", EGRESS_OUTCOME_ALLOWED, EGRESS_REASON_NONE);
  expect_url(c, "https://evil.files.crm.example.com/", EGRESS_OUTCOME_DENIED,
             EGRESS_REASON_RESOLVED_ADDRESS_FORBIDDEN);
  expect_url(c, "https://user@api.crm.example.com/", EGRESS_OUTCOME_DENIED, EGRESS_REASON_INVALID_HOST);

  /* The allowed URL hands back the vetted addresses for its own port. */
  egress_decision_t *d = check_url(c, "https://erp.acme.example:8443/api/x");
  CU_ASSERT_STRING_EQUAL(egress_decision_curl_resolve(d), "erp.acme.example:8443:9.9.9.9");
  egress_decision_free(d);
  egress_checker_free(c);
}

static void test_private_cidr_opens_port(void) {
  egress_checker_t *c = make_checker(
      "{\"egressAllowlist\":[\"db.example.com:5432\",\"db.example.com:6000\",\"db-outside.example.com:5432\","
      "\"10.1.0.0/16:5432\"]}",
      NULL);
  egress_decision_t *d = check(c, "db.example.com", 5432);
  expect_decision(d, "db:5432", EGRESS_VERDICT_ALLOW, EGRESS_OUTCOME_ALLOWED, EGRESS_REASON_NONE);
  CU_ASSERT_STRING_EQUAL(egress_decision_curl_resolve(d), "db.example.com:5432:10.1.2.3");
  egress_decision_free(d);
  /* The host rule holds 6000 but the CIDR rule opens 10.1/16 on 5432 only. */
  expect(c, "db.example.com", 6000, EGRESS_OUTCOME_DENIED, EGRESS_REASON_RESOLVED_ADDRESS_FORBIDDEN);
  expect(c, "db.example.com", 5433, EGRESS_OUTCOME_DENIED, EGRESS_REASON_PORT_NOT_ALLOWED);
  /* 10.2.0.1 is outside the named range. */
  expect(c, "db-outside.example.com", 5432, EGRESS_OUTCOME_DENIED, EGRESS_REASON_RESOLVED_ADDRESS_FORBIDDEN);
  expect(c, "10.1.2.3", 5432, EGRESS_OUTCOME_ALLOWED, EGRESS_REASON_NONE);
  CU_ASSERT_EQUAL(egress_check(c, "10.1.2.3", 5433), EGRESS_VERDICT_DENY);
  egress_checker_free(c);

  /* 0.0.0.0/0 never opens private space. */
  c = make_checker("{\"egressAllowlist\":[\"db.example.com:5432\",\"0.0.0.0/0\"]}", NULL);
  expect(c, "db.example.com", 5432, EGRESS_OUTCOME_DENIED, EGRESS_REASON_RESOLVED_ADDRESS_FORBIDDEN);
  egress_checker_free(c);
}

static void test_monitor_mode(void) {
  checker_cfg_t cfg = { .mode = EGRESS_MODE_MONITOR };
  egress_checker_t *c = make_checker("{\"egressAllowlist\":[\"*.example.com\"]}", &cfg);
  egress_decision_t *d = check(c, "rfc1918.example.com", 443);
  expect_decision(d, "monitor rfc1918", EGRESS_VERDICT_ALLOW, EGRESS_OUTCOME_DENIED,
                  EGRESS_REASON_RESOLVED_ADDRESS_FORBIDDEN);
  CU_ASSERT_EQUAL(egress_decision_mode(d), EGRESS_MODE_MONITOR);
  const char *ev = egress_decision_event_json(d);
  CU_ASSERT_PTR_NOT_NULL_FATAL(ev);
  CU_ASSERT_PTR_NOT_NULL(strstr(ev, "\"wouldDeny\":true"));
  CU_ASSERT_PTR_NOT_NULL(strstr(ev, "\"enforcementMode\":\"monitor\""));
  CU_ASSERT_PTR_NOT_NULL(strstr(ev, "\"denyReason\":\"resolved_address_forbidden\""));
  CU_ASSERT_PTR_NOT_NULL(strstr(ev, "10.20.30.40"));
  egress_decision_free(d);

  d = check(c, "outside.example.org", 443);
  expect_decision(d, "monitor outside", EGRESS_VERDICT_ALLOW, EGRESS_OUTCOME_DENIED,
                  EGRESS_REASON_NOT_IN_ALLOWLIST);
  egress_decision_free(d);
  d = check(c, "nosuch.example.com", 443);
  expect_decision(d, "monitor nxdomain", EGRESS_VERDICT_ALLOW, EGRESS_OUTCOME_DENIED,
                  EGRESS_REASON_NO_SUCH_HOST);
  egress_decision_free(d);

  d = check(c, "pub.example.com", 443);
  expect_decision(d, "monitor pub", EGRESS_VERDICT_ALLOW, EGRESS_OUTCOME_ALLOWED, EGRESS_REASON_NONE);
  ev = egress_decision_event_json(d);
  CU_ASSERT_PTR_NOT_NULL_FATAL(ev);
  CU_ASSERT_PTR_NOT_NULL(strstr(ev, "\"wouldDeny\":false"));
  egress_decision_free(d);
  CU_ASSERT_EQUAL(egress_check(c, "metadata.example.com", 80), EGRESS_VERDICT_ALLOW);
  CU_ASSERT_EQUAL(
      egress_checker_checks_by(c, EGRESS_OUTCOME_DENIED, EGRESS_REASON_RESOLVED_ADDRESS_FORBIDDEN), 1);
  egress_checker_free(c);
}

static size_t curl_items(const char *cr) {
  if (!cr) return 0;
  size_t colons = 0, items = 1;
  const char *p = cr;
  /* Skip "host:port:"; IPv6 items are bracketed, so commas split items. */
  while (*p && colons < 2) colons += *p++ == ':';
  for (; *p; p++) items += *p == ',';
  return items;
}

static void test_large_answers(void) {
  egress_checker_t *c = make_checker("{\"egressAllowlist\":[\"*.example.com\"]}", NULL);
  checker_cfg_t filter_cfg = { .mixed = EGRESS_MIXED_FILTER };
  egress_checker_t *f = make_checker("{\"egressAllowlist\":[\"*.example.com\"]}", &filter_cfg);
  for (size_t b = 0; b < N_BIG_NAMES; b++) {
    const big_name_t *bn = &big_names[b];
    char name[64], bad_addr[32];
    big_name_of(bn, name, sizeof name);
    big_addr_of(bn, bn->n - 1, bad_addr, sizeof bad_addr);
    /* Twice: the second answer comes from the cache. */
    for (int round = 0; round < 2; round++) {
      char what[100];
      snprintf(what, sizeof what, "%s (round %d)", name, round);
      egress_decision_t *d = check(c, name, 443);
      if (bn->bad) {
        expect_decision(d, what, EGRESS_VERDICT_DENY, EGRESS_OUTCOME_DENIED,
                        EGRESS_REASON_RESOLVED_ADDRESS_FORBIDDEN);
        CU_ASSERT_TRUE(has_address(d, bad_addr, EGRESS_VERDICT_DENY));
        CU_ASSERT_PTR_NULL(egress_decision_curl_resolve(d));
        const char *msg = egress_decision_message(d);
        CU_ASSERT_TRUE(msg && strstr(msg, bad_addr));
      } else {
        expect_decision(d, what, EGRESS_VERDICT_ALLOW, EGRESS_OUTCOME_ALLOWED, EGRESS_REASON_NONE);
        CU_ASSERT_EQUAL(curl_items(egress_decision_curl_resolve(d)), (size_t)bn->n);
      }
      if (egress_decision_address_count(d) != (size_t)bn->n)
        fprintf(stderr, "\n  %s: %zu addresses, want %d\n", what, egress_decision_address_count(d), bn->n);
      CU_ASSERT_EQUAL(egress_decision_address_count(d), (size_t)bn->n);
      for (int i = 0; i < bn->n; i++) {
        char addr[32];
        big_addr_of(bn, i, addr, sizeof addr);
        CU_ASSERT_TRUE(has_address(d, addr, bn->bad ? EGRESS_VERDICT_DENY : EGRESS_VERDICT_ALLOW));
      }
      egress_decision_free(d);

      /* Filter mode keeps every public address and drops the private one. */
      d = check(f, name, 443);
      expect_decision(d, what, EGRESS_VERDICT_ALLOW, EGRESS_OUTCOME_ALLOWED, EGRESS_REASON_NONE);
      CU_ASSERT_EQUAL(curl_items(egress_decision_curl_resolve(d)), (size_t)(bn->bad ? bn->n - 1 : bn->n));
      if (bn->bad) {
        CU_ASSERT_TRUE(has_address(d, bad_addr, EGRESS_VERDICT_DENY));
        const char *cr = egress_decision_curl_resolve(d);
        CU_ASSERT_TRUE(cr && !strstr(cr, bad_addr));
      }
      egress_decision_free(d);
    }
  }
  egress_checker_free(c);
  egress_checker_free(f);
}

/* docs/runtime.md: answers are cached for their TTL, so a second check of the
 * same name inside the TTL asks the server nothing. */
static void test_cache_answers_within_ttl(void) {
  egress_checker_t *c = make_checker("{\"egressAllowlist\":[\"*.example.com\"]}", NULL);
  expect(c, "cached.example.com", 443, EGRESS_OUTCOME_ALLOWED, EGRESS_REASON_NONE);
  egress_decision_t *d = check(c, "cached.example.com", 443);
  expect_decision(d, "cached (2nd)", EGRESS_VERDICT_ALLOW, EGRESS_OUTCOME_ALLOWED, EGRESS_REASON_NONE);
  CU_ASSERT_STRING_EQUAL(egress_decision_curl_resolve(d), "cached.example.com:443:1.1.1.1");
  CU_ASSERT_EQUAL(egress_decision_dns_ms(d), 0.0);
  egress_decision_free(d);
  expect(c, "cached.example.com", 8443, EGRESS_OUTCOME_DENIED, EGRESS_REASON_PORT_NOT_ALLOWED);
  CU_ASSERT_TRUE(egress_checker_counter(c, EGRESS_COUNTER_CACHE_HITS) >= 1);
  /* Negative answers are cached too (5 s by default). */
  expect(c, "nx-cached.example.com", 443, EGRESS_OUTCOME_DENIED, EGRESS_REASON_NO_SUCH_HOST);
  expect(c, "nx-cached.example.com", 443, EGRESS_OUTCOME_DENIED, EGRESS_REASON_NO_SUCH_HOST);
  expect(c, "control.example.com", 443, EGRESS_OUTCOME_ALLOWED, EGRESS_REASON_NONE);
  egress_checker_free(c);

  CU_ASSERT_TRUE(wait_for_log(&main_dns, "query[A] control.example.com from", 3000));
  char *log = read_log(&main_dns);
  if (!log) {
    CU_FAIL("cannot read the dnsmasq query log");
    return;
  }
  size_t pos = count_in(log, "query[A] cached.example.com from");
  size_t neg = count_in(log, "query[A] nx-cached.example.com from");
  if (pos != 1 || neg != 1)
    fprintf(stderr, "\n  queries: cached=%zu nx-cached=%zu (want 1 each)\n", pos, neg);
  CU_ASSERT_EQUAL(pos, 1);
  CU_ASSERT_EQUAL(neg, 1);
  free(log);
}

/* ------------------------------------------------------------------------ */
/* One checker, many threads                                                 */
/* ------------------------------------------------------------------------ */

typedef struct thread_case {
  const char *host;
  int32_t port;
  egress_reason_t reason; /* what the single-threaded baseline must say */
} thread_case_t;

#define R_(x) EGRESS_REASON_##x
static const thread_case_t thread_cases[] = {
  { "pub.example.com", 443, R_(NONE) },
  { "PUB.example.com.", 443, R_(NONE) },
  { "pub.example.com", 80, R_(PORT_NOT_ALLOWED) },
  { "loop4.example.com", 443, R_(RESOLVED_ADDRESS_FORBIDDEN) },
  { "mix.example.com", 443, R_(RESOLVED_ADDRESS_FORBIDDEN) },
  { "nosuch.example.com", 443, R_(NO_SUCH_HOST) },
  { "other.example.org", 443, R_(NOT_IN_ALLOWLIST) },
  { "a.b.example.com", 443, R_(NOT_IN_ALLOWLIST) },
  { "10.0.0.1", 443, R_(SPECIAL_PURPOSE_ADDRESS) },
  { "8.8.8.8", 443, R_(NONE) },
  { "v4only.example.com", 443, R_(NONE) },
  { "alias.example.com", 443, R_(RESOLVED_ADDRESS_FORBIDDEN) },
  { "bad host", 443, R_(INVALID_HOST) },
  { "www.example.com", 443, R_(NONE) },
  { "mapped.example.com", 443, R_(RESOLVED_ADDRESS_FORBIDDEN) },
  { "metadata.example.com", 443, R_(RESOLVED_ADDRESS_FORBIDDEN) },
  { "db.example.com", 5432, R_(NONE) },
  { "txtonly.example.com", 443, R_(NO_SUCH_HOST) },
  { "count9.example.com", 443, R_(NONE) },
  { "count9bad.example.com", 443, R_(RESOLVED_ADDRESS_FORBIDDEN) },
};
#undef R_
#define N_THREAD_CASES    (sizeof thread_cases / sizeof thread_cases[0])
#define N_THREADS         4
#define CHECKS_PER_THREAD 200

static int cmp_str(const void *a, const void *b) {
  return strcmp(*(const char *const *)a, *(const char *const *)b);
}

/* Everything a caller acts on, with addresses as a sorted set. */
static void signature(const egress_decision_t *d, char *buf, size_t len) {
  const char *addrs[16];
  char av[16][80];
  size_t n = egress_decision_address_count(d);
  if (n > 16) n = 16;
  for (size_t i = 0; i < n; i++) {
    snprintf(av[i], sizeof av[i], "%s=%d/%d", egress_decision_address(d, i),
             (int)egress_decision_address_verdict(d, i), (int)egress_decision_address_reason(d, i));
    addrs[i] = av[i];
  }
  qsort(addrs, n, sizeof addrs[0], cmp_str);
  const char *cr = egress_decision_curl_resolve(d);
  int o = snprintf(buf, len, "%d|%d|%d|rule=%s|curl=%zu|", (int)egress_decision_verdict(d),
                   (int)egress_decision_outcome(d), (int)egress_decision_reason(d),
                   egress_decision_has_rule(d) ? egress_decision_rule_text(d) : "-", cr ? strlen(cr) : 0);
  for (size_t i = 0; i < n && o > 0 && (size_t)o < len; i++)
    o += snprintf(buf + o, len - (size_t)o, "%s,", addrs[i]);
}

typedef struct thread_arg {
  egress_checker_t *checker;
  char (*expected)[512];
  int id;
  int mismatches;
  int errors;
  char first_bad[1100];
} thread_arg_t;

static void *thread_run(void *p) {
  thread_arg_t *a = p;
  for (int i = 0; i < CHECKS_PER_THREAD; i++) {
    size_t k = ((size_t)i * 7 + (size_t)a->id * 3) % N_THREAD_CASES;
    egress_decision_t *d = NULL;
    if (egress_check_ex(a->checker, thread_cases[k].host, thread_cases[k].port, NULL, &d) != EGRESS_OK ||
        !d) {
      a->errors++;
      egress_decision_free(d);
      continue;
    }
    char sig[512];
    signature(d, sig, sizeof sig);
    if (strcmp(sig, a->expected[k])) {
      if (!a->mismatches)
        snprintf(a->first_bad, sizeof a->first_bad, "%s: got %s want %s", thread_cases[k].host, sig,
                 a->expected[k]);
      a->mismatches++;
    }
    /* egress_check() must agree with the full decision. */
    if (egress_check(a->checker, thread_cases[k].host, (uint16_t)thread_cases[k].port) !=
        egress_decision_verdict(d))
      a->mismatches++;
    egress_decision_free(d);
  }
  return NULL;
}

#define THREAD_POLICY \
  "{\"egressAllowlist\":[\"*.example.com\",\"8.8.8.8/32\",\"db.example.com:5432\",\"10.1.0.0/16:5432\"]}"

/* Run N_THREADS x CHECKS_PER_THREAD checks on @p c; compare with @p expected. */
static void run_threads(egress_checker_t *c, char (*expected)[512], const char *label) {
  thread_arg_t args[N_THREADS];
  pthread_t th[N_THREADS];
  memset(args, 0, sizeof args);
  uint64_t checks_before = egress_checker_counter(c, EGRESS_COUNTER_CHECKS);
  for (int t = 0; t < N_THREADS; t++) {
    args[t].checker = c;
    args[t].expected = expected;
    args[t].id = t;
    CU_ASSERT_EQUAL_FATAL(pthread_create(&th[t], NULL, thread_run, &args[t]), 0);
  }
  for (int t = 0; t < N_THREADS; t++) pthread_join(th[t], NULL);
  for (int t = 0; t < N_THREADS; t++) {
    if (args[t].mismatches || args[t].errors)
      fprintf(stderr, "\n  %s thread %d: %d mismatches, %d errors; first: %s\n", label, t, args[t].mismatches,
              args[t].errors, args[t].first_bad);
    CU_ASSERT_EQUAL(args[t].mismatches, 0);
    CU_ASSERT_EQUAL(args[t].errors, 0);
  }
  CU_ASSERT_EQUAL(egress_checker_counter(c, EGRESS_COUNTER_CHECKS) - checks_before,
                  (uint64_t)N_THREADS * CHECKS_PER_THREAD * 2);
}

/* The same decisions from a cold cache (concurrent first lookups of one
 * name share a query) and with no cache at all (every check goes to
 * dnsmasq at once from four threads). */
static void test_threads_cold_and_uncached(void) {
  egress_checker_t *base = make_checker(THREAD_POLICY, NULL);
  static char expected[N_THREAD_CASES][512];
  for (size_t k = 0; k < N_THREAD_CASES; k++) {
    egress_decision_t *d = check(base, thread_cases[k].host, thread_cases[k].port);
    signature(d, expected[k], sizeof expected[k]);
    egress_decision_free(d);
  }
  egress_checker_free(base);
  egress_checker_t *cold = make_checker(THREAD_POLICY, NULL);
  run_threads(cold, expected, "cold");
  egress_checker_free(cold);
  checker_cfg_t cfg = { .no_cache = true };
  egress_checker_t *uncached = make_checker(THREAD_POLICY, &cfg);
  run_threads(uncached, expected, "uncached");
  CU_ASSERT_EQUAL(egress_checker_counter(uncached, EGRESS_COUNTER_CACHE_HITS), 0);
  egress_checker_free(uncached);
}

static void test_threads_agree(void) {
  egress_checker_t *c = make_checker(THREAD_POLICY, NULL);
  static char expected[N_THREAD_CASES][512];
  for (size_t k = 0; k < N_THREAD_CASES; k++) {
    egress_decision_t *d = check(c, thread_cases[k].host, thread_cases[k].port);
    /* The single-threaded baseline itself must be right. */
    egress_reason_t r = thread_cases[k].reason;
    expect_decision(d, thread_cases[k].host,
                    r == EGRESS_REASON_NONE ? EGRESS_VERDICT_ALLOW : EGRESS_VERDICT_DENY,
                    r == EGRESS_REASON_NONE ? EGRESS_OUTCOME_ALLOWED : EGRESS_OUTCOME_DENIED, r);
    signature(d, expected[k], sizeof expected[k]);
    egress_decision_free(d);
  }
  CU_ASSERT_STRING_EQUAL(expected[0], expected[1]);

  run_threads(c, expected, "warm");
  egress_checker_free(c);
}

/* ------------------------------------------------------------------------ */
/* A server that stops mid-suite                                             */
/* ------------------------------------------------------------------------ */

static dnsmasq_t outage_dns;

static const char *const outage_records[] = {
  "--local=/example.com/",
  "--host-record=up1.example.com,8.8.8.8",
  "--host-record=frozen.example.com,8.8.8.8",
  "--host-record=thawed.example.com,8.8.8.8",
  "--host-record=gone.example.com,8.8.8.8",
  NULL,
};

static int outage_init(void) {
  if (!dnsmasq_binary()) {
    egress_test_skip("dnsmasq not installed");
    return 1;
  }
  return dnsmasq_start(&outage_dns, outage_records) == 0 ? 0 : 1;
}

static int outage_cleanup(void) {
  dnsmasq_stop(&outage_dns);
  dnsmasq_remove_files(&outage_dns);
  return 0;
}

static void expect_unavailable_fast(egress_checker_t *c, const char *host) {
  double t0 = now_ms();
  egress_decision_t *d = check(c, host, 443);
  double took = now_ms() - t0;
  expect_decision(d, host, EGRESS_VERDICT_DENY, EGRESS_OUTCOME_ENFORCEMENT_UNAVAILABLE,
                  EGRESS_REASON_DNS_UNAVAILABLE);
  CU_ASSERT_PTR_NULL(egress_decision_curl_resolve(d));
  CU_ASSERT_EQUAL(egress_decision_address_count(d), 0);
  /* Timeout 300 ms: the check ends near it, not after c-ares's defaults. */
  if (took > 1000) fprintf(stderr, "\n  %s took %.0f ms\n", host, took);
  CU_ASSERT_TRUE(took < 1000);
  egress_decision_free(d);
  CU_ASSERT_EQUAL(egress_check(c, host, 443), EGRESS_VERDICT_DENY);
}

static void test_server_stops(void) {
  CU_ASSERT_FATAL(outage_dns.pid > 0);
  checker_cfg_t cfg = { .timeout_ms = 300, .servers = outage_dns.servers };
  egress_checker_t *c = make_checker("{\"egressAllowlist\":[\"*.example.com\"]}", &cfg);
  expect(c, "up1.example.com", 443, EGRESS_OUTCOME_ALLOWED, EGRESS_REASON_NONE);

  /* Frozen: queries go unanswered until the deadline. */
  CU_ASSERT_EQUAL_FATAL(kill(outage_dns.pid, SIGSTOP), 0);
  expect_unavailable_fast(c, "frozen.example.com");
  CU_ASSERT_TRUE(egress_checker_counter(c, EGRESS_COUNTER_DNS_FAILURES) >= 1);
  CU_ASSERT_EQUAL(kill(outage_dns.pid, SIGCONT), 0);

  /* Back again: failures are not cached, so the same name now resolves. */
  CU_ASSERT_TRUE(probe(outage_dns.port, 1000));
  expect(c, "frozen.example.com", 443, EGRESS_OUTCOME_ALLOWED, EGRESS_REASON_NONE);
  expect(c, "thawed.example.com", 443, EGRESS_OUTCOME_ALLOWED, EGRESS_REASON_NONE);

  /* Gone: nothing listens on the port any more. */
  dnsmasq_stop(&outage_dns);
  CU_ASSERT_FALSE(probe(outage_dns.port, 100));
  expect_unavailable_fast(c, "gone.example.com");
  /* Still fail closed for a name never seen. */
  expect_unavailable_fast(c, "never-seen.example.com");
  egress_checker_free(c);

  /* A fresh checker against the dead server also fails closed. */
  c = make_checker("{\"egressAllowlist\":[\"*.example.com\"]}", &cfg);
  expect_unavailable_fast(c, "up1.example.com");
  egress_checker_free(c);
}

/* ------------------------------------------------------------------------ */

static CU_TestInfo main_tests[] = {
  { "public_answer_allowed", test_public_answer_allowed },
  { "single_family_answers", test_single_family_answers },
  { "forbidden_answers", test_forbidden_answers },
  { "large_answers", test_large_answers },
  { "mixed_filter", test_mixed_filter },
  { "cname_to_private", test_cname_to_private },
  { "missing_names", test_missing_names },
  { "deny_list_on_resolved_address", test_deny_list_on_resolved_address },
  { "no_dns_leak", test_no_dns_leak },
  { "registration_example", test_registration_example },
  { "url_paths", test_url_paths },
  { "private_cidr_opens_port", test_private_cidr_opens_port },
  { "monitor_mode", test_monitor_mode },
  { "threads_agree", test_threads_agree },
  { "threads_cold_and_uncached", test_threads_cold_and_uncached },
  { "cache_answers_within_ttl", test_cache_answers_within_ttl },
  CU_TEST_INFO_NULL,
};

static CU_TestInfo outage_tests[] = {
  { "server_stops", test_server_stops },
  CU_TEST_INFO_NULL,
};

int main(int argc, char **argv) {
  static const egress_test_suite_t suites[] = {
    { "dnsmasq", main_init, main_cleanup, main_tests },
    { "dnsmasq_outage", outage_init, outage_cleanup, outage_tests },
    { NULL, NULL, NULL, NULL },
  };
  return egress_test_main(argc, argv, suites);
}
