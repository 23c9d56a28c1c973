/*
 * curl-pinned: fetch a URL with libcurl only if the egress policy allows it,
 * and connect exactly to the addresses the check vetted.
 *
 *   curl-pinned --policy FILE [--hosts FILE] [--dns-server LIST]
 *               [--timeout-ms N] URL
 *
 * The check resolves the URL's host and vets every address; handing curl
 * the URL alone would let curl resolve the name a second time and connect to
 * whatever that answer says (DNS rebinding: public address for the check,
 * 127.0.0.1 for the connect).  So the vetted addresses go to curl through
 * CURLOPT_RESOLVE (egress_decision_curl_resolve() is a ready entry), and
 * three more doors are shut:
 *
 *  - the URL is parsed once by curl (CURLU) and the host and port curl will
 *    use must be the ones the check decided on; a parser disagreement is
 *    refused rather than guessed about;
 *  - CURLOPT_OPENSOCKETFUNCTION refuses any address that is not one of the
 *    decision's vetted socket addresses, so a name curl would resolve by
 *    itself (or a proxy from the environment) still cannot be connected to;
 *  - redirects are not followed (CURLOPT_FOLLOWLOCATION off): a Location
 *    header names a new destination that was never checked.  A worker that
 *    wants to follow it must check that URL too; this program prints it.
 *
 * Only http and https are allowed, also for redirects.  Proxies from the
 * environment are turned off: through a proxy the connection would go to the
 * proxy, not to the checked destination.
 *
 * Prints "allow URL -> ADDRESSES" then "status N bytes M" on standard output.
 *
 * Exit status: 0 fetched (any HTTP status), 1 denied, 2 enforcement
 * unavailable, 3 the transfer failed, 64 usage error, 65 invalid policy,
 * 66 unreadable policy or hosts file, 70 internal error.
 */
#include <arpa/inet.h>
#include <getopt.h>
#include <netinet/in.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>

#include <curl/curl.h>

#include "egress.h"

enum {
  EXIT_DENIED = 1,
  EXIT_UNAVAILABLE = 2,
  EXIT_TRANSFER = 3,
  EXIT_USAGE = 64,
  EXIT_DATAERR = 65,
  EXIT_NOINPUT = 66,
  EXIT_SOFTWARE = 70
};

typedef struct args {
  const char *policy_path;
  const char *hosts_path;
  const char *dns_servers;
  const char *url;
  unsigned long timeout_ms;
} args_t;

/* What the socket-open callback may connect to: the decision's vetted
 * addresses, each with the checked port. */
typedef struct pin {
  const egress_decision_t *decision;
  unsigned refused;
} pin_t;

static void usage(FILE *to) {
  fputs(
      "usage: curl-pinned --policy FILE [--hosts FILE] [--dns-server LIST]\n"
      "                   [--timeout-ms N] URL\n"
      "\n"
      "Check URL against the egress policy; when it is allowed, fetch it with\n"
      "libcurl connected only to the addresses the check vetted, and print the\n"
      "HTTP status and the body size.  Redirects are reported, not followed.\n",
      to);
}

static int parse_args(int argc, char **argv, args_t *a) {
  static const struct option longopts[] = { { "policy", required_argument, NULL, 'p' },
                                            { "hosts", required_argument, NULL, 'H' },
                                            { "dns-server", required_argument, NULL, 'd' },
                                            { "timeout-ms", required_argument, NULL, 't' },
                                            { "help", no_argument, NULL, 'h' },
                                            { NULL, 0, NULL, 0 } };
  int c;

  memset(a, 0, sizeof *a);
  while ((c = getopt_long(argc, argv, "", longopts, NULL)) != -1) {
    switch (c) {
      case 'p': a->policy_path = optarg; break;
      case 'H': a->hosts_path = optarg; break;
      case 'd': a->dns_servers = optarg; break;
      case 't': {
        char *end;
        a->timeout_ms = strtoul(optarg, &end, 10);
        if (optarg[0] < '0' || optarg[0] > '9' || *end != '\0' || a->timeout_ms == 0 ||
            a->timeout_ms > 600000) {
          fprintf(stderr, "curl-pinned: --timeout-ms must be 1..600000\n");
          return EXIT_USAGE;
        }
        break;
      }
      case 'h': usage(stdout); exit(0);
      default: usage(stderr); return EXIT_USAGE;
    }
  }
  if (a->policy_path == NULL || optind != argc - 1) {
    usage(stderr);
    return EXIT_USAGE;
  }
  a->url = argv[optind];
  return 0;
}

static int make_checker(const args_t *a, egress_checker_t **out) {
  char errbuf[EGRESS_ERRBUF_SIZE];
  egress_policy_t *policy = NULL;
  egress_options_t *opts = NULL;
  egress_status_t st;
  int rc = EXIT_SOFTWARE;

  *out = NULL;
  st = egress_policy_from_file(a->policy_path, &policy, errbuf, sizeof errbuf);
  if (st != EGRESS_OK) {
    fprintf(stderr, "curl-pinned: %s\n", errbuf);
    rc = st == EGRESS_EPOLICY ? EXIT_DATAERR : st == EGRESS_EIO ? EXIT_NOINPUT : EXIT_SOFTWARE;
    goto done;
  }
  if (egress_options_new(&opts) != EGRESS_OK) goto done;
  if (a->hosts_path != NULL && egress_options_set_hosts_file(opts, a->hosts_path) != EGRESS_OK) goto done;
  if (a->dns_servers != NULL && egress_options_set_dns_servers(opts, a->dns_servers) != EGRESS_OK) {
    fprintf(stderr, "curl-pinned: bad --dns-server list: %s\n", a->dns_servers);
    rc = EXIT_USAGE;
    goto done;
  }
  if (a->timeout_ms != 0 && egress_options_set_timeout_ms(opts, (uint32_t)a->timeout_ms) != EGRESS_OK)
    goto done;
  st = egress_checker_new(policy, opts, out, errbuf, sizeof errbuf);
  if (st != EGRESS_OK) {
    fprintf(stderr, "curl-pinned: %s\n", errbuf);
    rc = st == EGRESS_EIO ? EXIT_NOINPUT : EXIT_SOFTWARE;
    goto done;
  }
  rc = 0;

done:
  egress_options_free(opts);
  egress_policy_unref(policy);
  return rc;
}

/* Whether @p sa (as curl is about to connect to it) is one of the vetted
 * addresses of the decision, port included. */
static bool is_vetted(const egress_decision_t *d, const struct sockaddr *sa, size_t salen) {
  size_t n = egress_decision_address_count(d);

  for (size_t i = 0; i < n; i++) {
    size_t len = 0;
    const struct sockaddr *v;

    if (egress_decision_address_verdict(d, i) != EGRESS_VERDICT_ALLOW) continue;
    v = egress_decision_address_sockaddr(d, i, &len);
    if (v == NULL || v->sa_family != sa->sa_family) continue;
    if (sa->sa_family == AF_INET && salen >= sizeof(struct sockaddr_in) &&
        len >= sizeof(struct sockaddr_in)) {
      const struct sockaddr_in *a = (const struct sockaddr_in *)(const void *)sa;
      const struct sockaddr_in *b = (const struct sockaddr_in *)(const void *)v;
      if (a->sin_port == b->sin_port && memcmp(&a->sin_addr, &b->sin_addr, sizeof a->sin_addr) == 0)
        return true;
    } else if (sa->sa_family == AF_INET6 && salen >= sizeof(struct sockaddr_in6) &&
               len >= sizeof(struct sockaddr_in6)) {
      const struct sockaddr_in6 *a = (const struct sockaddr_in6 *)(const void *)sa;
      const struct sockaddr_in6 *b = (const struct sockaddr_in6 *)(const void *)v;
      if (a->sin6_port == b->sin6_port && memcmp(&a->sin6_addr, &b->sin6_addr, sizeof a->sin6_addr) == 0)
        return true;
    }
  }
  return false;
}

/* The last gate: curl asks us for every socket it connects with. */
static curl_socket_t open_pinned(void *clientp, curlsocktype purpose, struct curl_sockaddr *address) {
  pin_t *pin = clientp;
  char text[INET6_ADDRSTRLEN] = "?";

  if (purpose == CURLSOCKTYPE_IPCXN && is_vetted(pin->decision, &address->addr, address->addrlen))
    return socket(address->family, address->socktype, address->protocol);
  if (address->family == AF_INET)
    inet_ntop(AF_INET, &((struct sockaddr_in *)(void *)&address->addr)->sin_addr, text, sizeof text);
  else if (address->family == AF_INET6)
    inet_ntop(AF_INET6, &((struct sockaddr_in6 *)(void *)&address->addr)->sin6_addr, text, sizeof text);
  fprintf(stderr, "curl-pinned: refusing to connect to %s: not a vetted address\n", text);
  pin->refused++;
  return CURL_SOCKET_BAD;
}

static size_t count_body(char *data, size_t size, size_t nmemb, void *userp) {
  (void)data;
  *(size_t *)userp += size * nmemb;
  return size * nmemb;
}

/* Host names compare without case, brackets or one trailing dot. */
static bool same_host(const char *curl_host, const char *checked) {
  size_t n = strlen(curl_host), m = strlen(checked);

  if (n >= 2 && curl_host[0] == '[' && curl_host[n - 1] == ']') {
    curl_host++;
    n -= 2;
  }
  if (n > 0 && curl_host[n - 1] == '.') n--;
  return n == m && strncasecmp(curl_host, checked, n) == 0;
}

/* Parse the URL with curl and make sure curl will go where the check said. */
static int parse_for_curl(const char *url, const egress_decision_t *d, CURLU **out) {
  CURLU *u = curl_url();
  char *host = NULL, *port = NULL;
  unsigned int flags = CURLU_DEFAULT_PORT | CURLU_NON_SUPPORT_SCHEME;
  int rc = EXIT_SOFTWARE;

  *out = NULL;
  if (u == NULL) goto done;
#ifdef CURLU_PUNYCODE
  flags |= CURLU_PUNYCODE;
#endif
  if (curl_url_set(u, CURLUPART_URL, url, CURLU_NON_SUPPORT_SCHEME) != CURLUE_OK ||
      curl_url_get(u, CURLUPART_HOST, &host, flags) != CURLUE_OK ||
      curl_url_get(u, CURLUPART_PORT, &port, flags) != CURLUE_OK) {
    fprintf(stderr, "curl-pinned: libcurl cannot parse the URL the check allowed\n");
    rc = EXIT_DENIED;
    goto done;
  }
  if (egress_decision_host(d) == NULL || !same_host(host, egress_decision_host(d)) ||
      strtol(port, NULL, 10) != (long)egress_decision_port(d)) {
    fprintf(stderr,
            "curl-pinned: libcurl reads the URL as %s port %s, the check as %s port %ld:"
            " refusing\n",
            host, port, egress_decision_host(d) ? egress_decision_host(d) : "?",
            (long)egress_decision_port(d));
    rc = EXIT_DENIED;
    goto done;
  }
  *out = u;
  u = NULL;
  rc = 0;

done:
  curl_free(host);
  curl_free(port);
  curl_url_cleanup(u);
  return rc;
}

static int fetch(const char *url, const egress_decision_t *d) {
  CURL *curl = NULL;
  CURLU *u = NULL;
  struct curl_slist *resolve = NULL;
  const char *entry = egress_decision_curl_resolve(d);
  pin_t pin = { d, 0 };
  size_t body = 0;
  long status = 0;
  char *location = NULL;
  CURLcode cc;
  int rc;

  rc = parse_for_curl(url, d, &u);
  if (rc != 0) goto done;
  rc = EXIT_SOFTWARE;
  if ((curl = curl_easy_init()) == NULL) goto done;
  /* A name gets its vetted addresses pinned; an IP literal needs no entry
   * (the open-socket gate still checks it). */
  if (entry != NULL && (resolve = curl_slist_append(NULL, entry)) == NULL) goto done;
  if (curl_easy_setopt(curl, CURLOPT_CURLU, u) != CURLE_OK ||
      curl_easy_setopt(curl, CURLOPT_RESOLVE, resolve) != CURLE_OK ||
      curl_easy_setopt(curl, CURLOPT_PROTOCOLS_STR, "http,https") != CURLE_OK ||
      curl_easy_setopt(curl, CURLOPT_REDIR_PROTOCOLS_STR, "http,https") != CURLE_OK ||
      curl_easy_setopt(curl, CURLOPT_FOLLOWLOCATION, 0L) != CURLE_OK ||
      curl_easy_setopt(curl, CURLOPT_PROXY, "") != CURLE_OK ||
      curl_easy_setopt(curl, CURLOPT_OPENSOCKETFUNCTION, open_pinned) != CURLE_OK ||
      curl_easy_setopt(curl, CURLOPT_OPENSOCKETDATA, &pin) != CURLE_OK ||
      curl_easy_setopt(curl, CURLOPT_WRITEFUNCTION, count_body) != CURLE_OK ||
      curl_easy_setopt(curl, CURLOPT_WRITEDATA, &body) != CURLE_OK ||
      curl_easy_setopt(curl, CURLOPT_NOSIGNAL, 1L) != CURLE_OK ||
      curl_easy_setopt(curl, CURLOPT_CONNECTTIMEOUT_MS, 10000L) != CURLE_OK ||
      curl_easy_setopt(curl, CURLOPT_TIMEOUT_MS, 60000L) != CURLE_OK) {
    fprintf(stderr, "curl-pinned: libcurl lacks a required option (needs 7.85 or later)\n");
    goto done;
  }
  cc = curl_easy_perform(curl);
  if (cc != CURLE_OK) {
    fprintf(stderr, "curl-pinned: transfer failed: %s%s\n", curl_easy_strerror(cc),
            pin.refused ? " (an unvetted address was refused)" : "");
    rc = EXIT_TRANSFER;
    goto done;
  }
  curl_easy_getinfo(curl, CURLINFO_RESPONSE_CODE, &status);
  printf("status %ld bytes %zu\n", status, body);
  if (curl_easy_getinfo(curl, CURLINFO_REDIRECT_URL, &location) == CURLE_OK && location != NULL)
    printf("redirect %s not followed: it is a new destination and needs its own check\n", location);
  rc = 0;

done:
  curl_easy_cleanup(curl);
  curl_url_cleanup(u);
  curl_slist_free_all(resolve);
  return rc;
}

int main(int argc, char **argv) {
  args_t a;
  egress_checker_t *checker = NULL;
  egress_decision_t *d = NULL;
  egress_status_t st;
  int rc;

  rc = parse_args(argc, argv, &a);
  if (rc != 0) return rc;
  if (curl_global_init(CURL_GLOBAL_DEFAULT) != CURLE_OK) {
    fprintf(stderr, "curl-pinned: curl_global_init failed\n");
    return EXIT_SOFTWARE;
  }
  rc = make_checker(&a, &checker);
  if (rc != 0) goto done;

  st = egress_check_url(checker, a.url, NULL, &d);
  if (egress_decision_verdict(d) != EGRESS_VERDICT_ALLOW) {
    printf("deny %s: %s\n", egress_reason_name(egress_decision_reason(d)), egress_decision_message(d));
    rc = egress_decision_outcome(d) == EGRESS_OUTCOME_ENFORCEMENT_UNAVAILABLE || st != EGRESS_OK
             ? EXIT_UNAVAILABLE
             : EXIT_DENIED;
    goto done;
  }
  printf("allow %s ->", a.url);
  for (size_t i = 0; i < egress_decision_address_count(d); i++)
    if (egress_decision_address_verdict(d, i) == EGRESS_VERDICT_ALLOW)
      printf(" %s", egress_decision_address(d, i));
  putchar('\n');
  fflush(stdout);
  rc = fetch(a.url, d);

done:
  egress_decision_free(d);
  egress_checker_free(checker);
  curl_global_cleanup();
  if (fflush(stdout) != 0 && rc == 0) rc = EXIT_SOFTWARE;
  return rc;
}
