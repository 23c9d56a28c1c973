/*
 * A scriptable loopback DNS responder for tests and fault injection.
 *
 * egress_dns_start() binds UDP and TCP on the same free port of 127.0.0.1 or
 * ::1 and serves from its own thread.  Every scripting call below may be made
 * from any thread while the responder serves; the change applies to queries
 * that arrive after the call returns.
 *
 * Names are matched case-insensitively and a trailing dot is ignored
 * ("WWW.Example.TEST." and "www.example.test" are the same name).
 *
 * Answer sets.  Each name has a list of answer sets; a fresh name has one.
 * Records, rcode and fault flags always go to the name's *current* (last)
 * set.  egress_dns_next_set() appends a new set, so a name can be given a
 * sequence: the Nth A query of the name is answered from set N (counting from
 * 0) modulo the number of sets, and likewise the Nth AAAA query (A and AAAA
 * have separate counters so that one getaddrinfo(AF_UNSPEC), which asks both,
 * moves the sequence by one step).  With egress_dns_set_sticky() the last set
 * repeats forever instead of wrapping round (DNS-rebinding tests: first a
 * public address, then 127.0.0.1 for ever).
 *
 * Unknown names (no scripting call ever named them) get the default rcode
 * (NXDOMAIN unless changed) but are still counted.
 *
 * All functions returning int return 0 on success and -1 on a bad argument
 * (unparsable address, over-long name, NULL) or allocation failure.
 */
#ifndef EGRESS_TEST_DNS_RESPONDER_H
#define EGRESS_TEST_DNS_RESPONDER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

typedef struct egress_dns_responder egress_dns_responder_t;

/* DNS rcodes for egress_dns_set_rcode(); NODATA is NOERROR with no answer. */
enum {
  EGRESS_DNS_NOERROR = 0,
  EGRESS_DNS_FORMERR = 1,
  EGRESS_DNS_SERVFAIL = 2,
  EGRESS_DNS_NXDOMAIN = 3,
  EGRESS_DNS_NOTIMP = 4,
  EGRESS_DNS_REFUSED = 5,
};

/* Kinds of malformed reply for egress_dns_set_malformed(). */
typedef enum egress_dns_malformed {
  EGRESS_DNS_MALFORMED_NONE = 0,
  /* Valid header and question, ANCOUNT=1, the answer record cut off half way.
   * This is what `true` selects. */
  EGRESS_DNS_MALFORMED_TRUNCATED_RR = 1,
  /* Eight bytes: the right id and QR=1, then nothing (shorter than a header). */
  EGRESS_DNS_MALFORMED_SHORT = 2,
  /* Complete message whose answer owner name is a compression pointer to itself. */
  EGRESS_DNS_MALFORMED_LOOP = 3,
  /* An A (or AAAA) record whose RDLENGTH is 3 (wrong for the type). */
  EGRESS_DNS_MALFORMED_BAD_RDLEN = 4,
  /* Header and question fine, ANCOUNT=1, RR with a label length of 0x7f
   * running past the end of the message. */
  EGRESS_DNS_MALFORMED_BAD_LABEL = 5,
} egress_dns_malformed_t;

/* What the TCP side does; see egress_dns_set_tcp_mode(). */
typedef enum egress_dns_tcp_mode {
  EGRESS_DNS_TCP_SERVE = 0,  /* normal service (default) */
  EGRESS_DNS_TCP_REFUSE = 1, /* no listener: connect() gets ECONNREFUSED */
  EGRESS_DNS_TCP_CLOSE = 2,  /* accept, then close at once (client sees EOF) */
  EGRESS_DNS_TCP_SILENT = 3, /* accept and read, never answer (client times out) */
} egress_dns_tcp_mode_t;

/* Start a responder on bind_ip ("127.0.0.1" or "::1"; NULL means
 * "127.0.0.1") on a free port, UDP and TCP.  Caller owns the result (free
 * with egress_dns_stop()); NULL on failure (errno says why). */
egress_dns_responder_t *egress_dns_start(const char *bind_ip);

/* Same, on a given port (0 = pick a free one). */
egress_dns_responder_t *egress_dns_start_port(const char *bind_ip, uint16_t port);

/* Stop the thread, close every socket, drop pending replies, free.  NULL is
 * accepted. */
void egress_dns_stop(egress_dns_responder_t *r);

/* The port, in host byte order. */
uint16_t egress_dns_port(const egress_dns_responder_t *r);

/* "127.0.0.1:PORT" or "[::1]:PORT", the form ares_set_servers_ports_csv()
 * takes; written to buf (NUL-terminated, truncated to buflen). Returns buf. */
const char *egress_dns_server_csv(const egress_dns_responder_t *r, char *buf, size_t buflen);

/* Records.  Copied.  ttl in seconds. */
int egress_dns_add_a(egress_dns_responder_t *r, const char *name, const char *ipv4, uint32_t ttl);
int egress_dns_add_aaaa(egress_dns_responder_t *r, const char *name, const char *ipv6, uint32_t ttl);
/* A CNAME.  A or AAAA queries for name get the chain of CNAMEs (followed in the
 * responder's own data, at most 16 links, so a loop ends) and then the final
 * name's records of the asked type.  If the chain ends on an unknown name the
 * rcode is the default rcode (NXDOMAIN), as a recursive resolver says. */
int egress_dns_add_cname(egress_dns_responder_t *r, const char *name, const char *target, uint32_t ttl);

/* Explicit rcode for the current set: 2 SERVFAIL, 3 NXDOMAIN, 5 REFUSED, 0
 * NOERROR (NODATA when no records of the asked type); -1 clears (records, or
 * NODATA).  The answer section is left empty unless the rcode is NOERROR. */
int egress_dns_set_rcode(egress_dns_responder_t *r, const char *name, int rcode);
/* Answer after ms milliseconds without holding up other queries. */
int egress_dns_set_delay_ms(egress_dns_responder_t *r, const char *name, unsigned ms);
/* Never answer (the client times out). */
int egress_dns_set_drop(egress_dns_responder_t *r, const char *name, bool drop);
/* The same for queries of one type only (1 A, 28 AAAA): the other family
 * is answered. */
int egress_dns_set_drop_type(egress_dns_responder_t *r, const char *name, uint16_t qtype, bool drop);
/* UDP answers carry TC=1 and no records; TCP answers are whole. */
int egress_dns_set_truncate(egress_dns_responder_t *r, const char *name, bool truncate);
/* Reply with bytes that are not a valid DNS message (kind; true = TRUNCATED_RR). */
int egress_dns_set_malformed(egress_dns_responder_t *r, const char *name, int kind);
/* Reply with a different message id (the client should ignore it). */
int egress_dns_set_wrong_id(egress_dns_responder_t *r, const char *name, bool wrong_id);
/* Reply with the right question but answer records owned by another name
 * ("wrong-owner.invalid"). */
int egress_dns_set_wrong_name(egress_dns_responder_t *r, const char *name, bool wrong_name);

/* Append a new, empty answer set to name's sequence (see the header comment);
 * later calls for name fill the new set.  Returns the new set's index, or -1. */
int egress_dns_next_set(egress_dns_responder_t *r, const char *name);
/* Whether the sequence stops at its last set (true) or wraps round (false, default). */
int egress_dns_set_sticky(egress_dns_responder_t *r, const char *name, bool sticky);

/* rcode for names never scripted (default NXDOMAIN). */
void egress_dns_set_default_rcode(egress_dns_responder_t *r, int rcode);
/* Global TCP behaviour (default SERVE).  Returns -1 if SERVE could not be
 * restored after REFUSE because the port was taken in between. */
int egress_dns_set_tcp_mode(egress_dns_responder_t *r, egress_dns_tcp_mode_t mode);

/* Counters, kept on the responder side.  A "query" is a well-formed question
 * that reached the responder (dropped ones included), UDP or TCP. */
unsigned egress_dns_query_count(egress_dns_responder_t *r, const char *name);
/* Queries of name for one qtype (1 = A, 28 = AAAA, ...). */
unsigned egress_dns_query_count_type(egress_dns_responder_t *r, const char *name, uint16_t qtype);
unsigned egress_dns_total_queries(egress_dns_responder_t *r);
/* Queries that arrived over TCP. */
unsigned egress_dns_tcp_queries(egress_dns_responder_t *r);
/* Datagrams/messages that were not parsable queries (garbage, QR=1, ...). */
unsigned egress_dns_bad_packets(egress_dns_responder_t *r);
/* Name of the last well-formed query (lower case, no trailing dot), copied
 * into buf; "" if none yet.  Returns buf. */
const char *egress_dns_last_qname(egress_dns_responder_t *r, char *buf, size_t buflen);

/* Forget all names, records, faults and counters; default rcode back to
 * NXDOMAIN and TCP back to SERVE.  Replies already queued with a delay still go out. */
void egress_dns_reset(egress_dns_responder_t *r);

/* Print "name total A AAAA" lines for every name queried, to stream (a FILE *;
 * void * keeps <stdio.h> out of this header). */
void egress_dns_dump_counts(egress_dns_responder_t *r, void *stream);

#endif
