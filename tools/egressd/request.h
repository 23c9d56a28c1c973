#ifndef EGRESSD_REQUEST_H
#define EGRESSD_REQUEST_H
/*
 * request.h: a client's request head, read and judged without any I/O, so
 * that the same code runs in egressd and under the fuzzer
 * (tests/fuzz/fuzz_request.c).
 *
 * http_parser frames the head; this file only records where the URL and
 * the fields are, decides whether the request is one egressd serves
 * (CONNECT host:port, or absolute-form http:// HTTP/1.1), turns X-Egress-*
 * fields into the check's context and writes the origin-form head sent
 * upstream without the hop-by-hop fields (RFC 9110 7.6.1).
 */
#include <stddef.h>
#include <stdint.h>

#include <http_parser.h>

#include "egress.h"

/* A head egressd reads may have HEAD_FIELDS_READ fields, so that the one
 * it writes (Host, framing, Via added) stays within HEAD_FIELDS_MAX. */
enum {
  HEAD_URL_MAX = 2048,
  HEAD_FIELDS_MAX = 128,
  HEAD_FIELDS_READ = HEAD_FIELDS_MAX - 4,
  HEAD_HOST_MAX = 300
};

typedef struct head_field {
  uint32_t name_off, name_len, value_off, value_len;
} head_field_t;

/* What the request asks for, once judged. */
typedef struct target {
  int connect; /* CONNECT host:port; else absolute-form forwarding */
  char host[HEAD_HOST_MAX];
  int port;
  int has_port;            /* the URI named the port */
  int chunked;             /* request body in chunked coding */
  uint64_t content_length; /* ULLONG_MAX: none */
  int keep_alive;          /* the client will send another request after this */
  const char *method;
  size_t path_off, path_len; /* in url: origin-form target */
  /* Set by a refusal that has a more precise answer than a bare 400: why
   * (a static string, safe to quote), and whether it is a forwarding loop
   * (508: a Via field names egressd). */
  const char *refusal;
  int loop;
  /* OPTIONS with Max-Forwards (RFC 9110 7.6.2): its value (0: egressd
   * answers itself; more: forwarded one less); -1 otherwise. */
  long max_forwards;
} target_t;

/* One request head in one buffer: the bytes read so far (the head and
 * whatever followed it) and, once complete, the parser state to go on
 * with the body. */
typedef struct head {
  http_parser parser;
  size_t len;     /* bytes in buf */
  size_t used;    /* bytes of buf the parser took (the whole head, once done) */
  size_t limit;   /* the most bytes a head may take */
  size_t cap;     /* size of buf now */
  size_t cap_max; /* the most buf grows to: limit + 1 + what may follow in one read */
  int done, url_too_long, too_many_fields, last_cb;
  int skip_body;     /* a response to HEAD */
  size_t max_fields; /* HEAD_FIELDS_READ */
  size_t url_len;
  size_t n_fields;
  char url[HEAD_URL_MAX]; /* a request's target; a response's reason phrase */
  target_t target;        /* what a judged request head asks for (head_target) */
  head_field_t fields[HEAD_FIELDS_MAX];
  char buf[];
} head_t;

typedef enum head_status {
  HEAD_MORE,      /* incomplete: read more (head_reserve for room) */
  HEAD_DONE,      /* the head is complete; body bytes may follow at used */
  HEAD_BAD,       /* 400 */
  HEAD_URI_LONG,  /* 414 */
  HEAD_TOO_LARGE, /* 431 */
} head_status_t;

/* A head of at most HEADER_LIMIT bytes; its buffer grows (head_reserve)
 * up to one byte more (what shows a head too large) plus EXTRA (bytes that
 * may come in the same read).  NULL when out of memory.  free() it. */
head_t *head_new(size_t header_limit, size_t extra);

/* Room for WANT more bytes at buf + len, or as many as the head may still
 * take: H, or where it moved; NULL when out of memory (H is then still
 * valid). */
head_t *head_reserve(head_t *h, size_t want);

/* Takes N more bytes that the caller put at buf + len. */
head_status_t head_feed(head_t *h, size_t n);

/* Judges a complete head: 0 and T filled, the context (method, X-Egress-*
 * fields) set in REQ; or -1 (answer 400, or 508 when T->loop), with
 * T->host empty and T->refusal saying why when there is more to say.  T may be
 * &h->target, kept with the head for head_render. */
int head_target(const head_t *h, target_t *t, egress_request_t *req);

/* The head sent upstream (origin-form, hop-by-hop and X-Egress-* fields
 * removed, Via added).  Returns its length, or 0 when CAP is too small;
 * head_render_size() is always enough. */
size_t head_render(const head_t *h, const target_t *t, char *out, size_t cap);
size_t head_render_size(const head_t *h);

/* A response head from upstream, read the same way (the parser told
 * whether it answers HEAD, TO_HEAD).  Once complete: head_response_ok()
 * says whether it may be relayed (field names are tokens, framed once);
 * head_response_self_delimited() whether its end is known without the
 * connection closing; head_render_response() writes it for the client,
 * hop-by-hop fields removed, Via added, and "Connection: close" when
 * CLOSE.  Returns the length, or 0 when CAP (head_render_size) is short. */
head_t *head_new_response(size_t header_limit, size_t extra, int to_head);
int head_response_ok(const head_t *h);
int head_response_self_delimited(const head_t *h);
/* Whether the response head has a Content-Length (1) or a
 * Transfer-Encoding field (2), or both (3): a 1xx or 204 may have neither
 * (RFC 9110 8.6, RFC 9112 6.1). */
int head_response_framing(const head_t *h);
/* Whether a response with status CODE ends at its head whatever its fields
 * say: 1xx, 204, 304 (RFC 9112 6.3). */
int head_status_bodiless(unsigned code);
size_t head_render_response(const head_t *h, int close, char *out, size_t cap);

/* Case-insensitive equality of the N bytes at A and the string B. */
int head_ieq(const char *a, size_t an, const char *b);

#endif /* EGRESSD_REQUEST_H */
