/*
 * Host canonicalization (docs/check.md#canonical-hosts) and the IP helpers under it.
 *
 * The table holds hostile and ordinary spellings with the one result each
 * must have; the property tests then push random bytes through both entry
 * points and check the invariants every accepted host must satisfy.
 */
#include "egress_private.h"
#include "testutil.h"

#include <arpa/inet.h>
#include <pthread.h>
#include <stdio.h>
#include <string.h>

#define BADK (-1)

typedef struct canon_row {
  const char *in;
  size_t len;
  int kind;         /* BADK or an egress__host_kind_t */
  const char *text; /* canonical text when valid */
} canon_row_t;

/* sizeof keeps embedded NUL bytes inside the length. */
#define BAD(s) \
  { s, sizeof(s) - 1, BADK, NULL }
#define NM(s, t) \
  { s, sizeof(s) - 1, EGRESS__HOST_NAME, t }
#define V4(s, t) \
  { s, sizeof(s) - 1, EGRESS__HOST_IPV4, t }
#define V6(s, t) \
  { s, sizeof(s) - 1, EGRESS__HOST_IPV6, t }

static const canon_row_t rows[] = {
  /* --- ordinary names --- */
  NM("example.com", "example.com"),
  NM("EXAMPLE.COM", "example.com"),
  NM("Api.Example.Com", "api.example.com"),
  NM("example.com.", "example.com"),
  NM("LOCALHOST.", "localhost"),
  NM("localhost", "localhost"),
  NM("localhost.localdomain", "localhost.localdomain"),
  NM("a", "a"),
  NM("com", "com"),
  NM("x.y.z", "x.y.z"),
  NM("exa-mple.com", "exa-mple.com"),
  NM("_dmarc.example.com", "_dmarc.example.com"),
  NM("a_b.example.com", "a_b.example.com"),
  NM("_", "_"),
  NM("ab--cd.example.com", "ab--cd.example.com"),
  NM("r3---sn-4g5e6nsz.googlevideo.com", "r3---sn-4g5e6nsz.googlevideo.com"),
  NM("1e100.net", "1e100.net"),
  NM("0x.example", "0x.example"),
  NM("0x7f.example", "0x7f.example"),
  NM("123.example.com", "123.example.com"),
  NM("127.0.0.1.example.com", "127.0.0.1.example.com"),
  NM("1a", "1a"),
  NM("1.2.3.4a", "1.2.3.4a"),
  NM("foo.0xg", "foo.0xg"),
  NM("foo.1x", "foo.1x"),
  NM("9gag.com", "9gag.com"),
  NM("xn--bcher-kva.de", "xn--bcher-kva.de"),
  NM("XN--BCHER-KVA.DE", "xn--bcher-kva.de"),
  NM("xn--zca.de", "xn--zca.de"),
  NM("xn--pple-43d.com", "xn--pple-43d.com"),
  NM("xn--55qx5d.cn", "xn--55qx5d.cn"),

  /* --- numeric IPv4 spellings: only the canonical dotted quad is an address --- */
  V4("127.0.0.1", "127.0.0.1"),
  V4("0.0.0.0", "0.0.0.0"),
  V4("255.255.255.255", "255.255.255.255"),
  V4("203.0.113.7", "203.0.113.7"),
  V4("10.0.0.1", "10.0.0.1"),
  V4("169.254.169.254", "169.254.169.254"),
  V4("127.0.0.1.", "127.0.0.1"),
  BAD("127.0.0.1.."),
  BAD("2130706433"),
  BAD("2130706433."),
  BAD("0x7f000001"),
  BAD("0X7F000001"),
  BAD("0x7f.1"),
  BAD("0x7F.1"),
  BAD("0x7f.0.0.1"),
  BAD("0x7f.0x0.0x0.0x1"),
  BAD("0x7f.0.0.1."),
  BAD("0177.0.0.1"),
  BAD("0177.1"),
  BAD("017700000001"),
  BAD("127.1"),
  BAD("127.1."),
  BAD("127.0.1"),
  BAD("127.000.000.001"),
  BAD("127.0.0.01"),
  BAD("010.0.0.1"),
  BAD("00.0.0.0"),
  BAD("0.0.0.00"),
  BAD("0"),
  BAD("00"),
  BAD("0x"),
  BAD("0X"),
  BAD("256.0.0.1"),
  BAD("1.2.3.256"),
  BAD("999.1.1.1"),
  BAD("1.2.3.4.5"),
  BAD("1.2.3"),
  BAD("1.2"),
  BAD("4294967295"),
  BAD("4294967296"),
  BAD("0x100000000"),
  BAD("0xffffffff"),
  BAD("-1.2.3.4"),
  BAD("1.2.3.-4"),
  BAD("+1.2.3.4"),
  BAD("1.2.3.+4"),
  BAD("1.2.3.4 "),
  BAD(" 1.2.3.4"),
  BAD("127.0.0x0.1"),
  BAD("1.2.3.0x"),
  BAD("a.0x1f"),
  BAD("foo.0x"),
  BAD("foo.0X0"),
  BAD("foo.2.3.4"),
  BAD("203.0.113.08"),
  BAD("1.2.3.09"),
  BAD("example.123"),
  BAD("example.com.127"),
  BAD("1..2.3"),
  BAD("1.2.3.4:80"),

  /* --- IPv6 --- */
  V6("::1", "::1"),
  V6("[::1]", "::1"),
  V6("0:0:0:0:0:0:0:1", "::1"),
  V6("::", "::"),
  V6("[::]", "::"),
  V6("2001:DB8::1", "2001:db8::1"),
  V6("2001:0db8:0000:0000:0000:0000:0000:0001", "2001:db8::1"),
  V6("[2001:db8::1]", "2001:db8::1"),
  V6("2001:db8:0:0:1:0:0:1", "2001:db8::1:0:0:1"),
  V6("1:0:0:2:0:0:0:3", "1:0:0:2::3"),
  V6("1:0:2:3:4:5:6:7", "1:0:2:3:4:5:6:7"),
  V6("1:2:3:4:5:6:7::", "1:2:3:4:5:6:7:0"),
  V6("FE80::1", "fe80::1"),
  V6("[fe80::1]", "fe80::1"),
  V6("fd00:ec2::254", "fd00:ec2::254"),
  V6("::127.0.0.1", "::7f00:1"),
  V6("::2:3", "::2:3"),
  V6("::ffff:0:7f00:1", "::ffff:0:7f00:1"),
  V6("64:ff9b::127.0.0.1", "64:ff9b::7f00:1"),
  V6("2002:7f00:1::", "2002:7f00:1::"),
  V4("::ffff:127.0.0.1", "127.0.0.1"),
  V4("[::ffff:127.0.0.1]", "127.0.0.1"),
  V4("::ffff:7f00:1", "127.0.0.1"),
  V4("::FFFF:7F00:0001", "127.0.0.1"),
  V4("0:0:0:0:0:ffff:169.254.169.254", "169.254.169.254"),
  V4("[::FFFF:1.2.3.4]", "1.2.3.4"),
  V4("::ffff:0.0.0.0", "0.0.0.0"),
  BAD("fe80::1%eth0"),
  BAD("fe80::1%25eth0"),
  BAD("[fe80::1%25eth0]"),
  BAD("[fe80::1%eth0]"),
  BAD("::ffff:1.2.3.4%eth0"),
  BAD("[::1]:80"),
  BAD("[::1]:"),
  BAD("[::1]."),
  BAD("[[::1]]"),
  BAD("[::1"),
  BAD("::1]"),
  BAD("[]"),
  BAD("["),
  BAD("]"),
  BAD("[1.2.3.4]"),
  BAD("[127.0.0.1]"),
  BAD("[example.com]"),
  BAD("[localhost]"),
  BAD("x[::1]"),
  BAD("[::1]x"),
  BAD("::ffff:127.0.0.01"),
  BAD("::ffff:127.1"),
  BAD("::ffff:0x7f.0.0.1"),
  BAD("::ffff:0177.0.0.1"),
  BAD(":::1"),
  BAD("1::2::3"),
  BAD("1:2:3:4:5:6:7:8:9"),
  BAD("12345::"),
  BAD("g::1"),
  BAD("::1 "),
  BAD("2001:db8::1."),
  BAD("example.com:443"),
  BAD("127.0.0.1:80"),
  BAD("localhost:80"),
  BAD(":80"),
  BAD(":"),
  BAD("::1/128"),
  BAD("::\xef\xbc\x91"),                       /* "::" + FULLWIDTH DIGIT ONE */
  BAD("\xef\xbc\x9a\xef\xbc\x9a\xef\xbc\x91"), /* fullwidth "::1" */
  BAD("\xef\xbc\xbb::1\xef\xbc\xbd"),          /* fullwidth brackets */
  BAD("\xef\xbc\xbb"
      "example.com\xef\xbc\xbd"),

  /* --- IDN: mappings, confusables, deviations --- */
  NM("b\xc3\xbc"
     "cher.de",
     "xn--bcher-kva.de"), /* bücher */
  NM("B\xc3\x9c"
     "CHER.DE",
     "xn--bcher-kva.de"),                             /* BÜCHER */
  NM("\xc3\x84\xc3\x96\xc3\x9c.DE", "xn--4ca0bs.de"), /* ÄÖÜ */
  NM("fa\xc3\x9f.de", "xn--fa-hia.de"),               /* faß: kept */
  NM("\xcf\x82.com", "xn--3xa.com"),                  /* final sigma: kept */
  NM("\xce\xa3.com", "xn--4xa.com"),                  /* capital sigma */
  NM("\xd0\xb0pple.com", "xn--pple-43d.com"),         /* Cyrillic a */
  NM("\xd1\x80\xd0\xb0\xd1\x83\xd1\x80\xd0\xb0l.com", "xn--l-7sba6dbr.com"),
  NM("ex\xd0\xb0mple.com", "xn--exmple-4nf.com"),
  NM("\xe5\x85\xac\xe5\x8f\xb8.cn", "xn--55qx5d.cn"), /* 公司 */
  NM("\xef\xbd\x85\xef\xbd\x98\xef\xbd\x81\xef\xbd\x8d\xef\xbd\x90\xef\xbd\x8c\xef\xbd\x85.com",
     "example.com"), /* fullwidth letters */
  NM("example\xe3\x80\x82"
     "com",
     "example.com"), /* U+3002 */
  NM("example\xef\xbc\x8e"
     "com",
     "example.com"), /* U+FF0E */
  NM("example\xef\xbd\xa1"
     "com",
     "example.com"),                            /* U+FF61 */
  NM("exa\xe2\x80\x8bmple.com", "example.com"), /* U+200B ignored */
  NM("ex\xc2\xad"
     "ample.com",
     "example.com"),                            /* soft hyphen ignored */
  NM("exa\xef\xbb\xbfmple.com", "example.com"), /* U+FEFF ignored */
  NM("a\xe2\x80\x8d"
     "b.com",
     "ab.com"), /* ZWJ: transitional fallback */
  NM("a\xe2\x80\x8c"
     "b.com",
     "ab.com"),                      /* ZWNJ: transitional fallback */
  NM("\xe2\x85\xab.com", "xii.com"), /* Roman numeral twelve */
  NM("\xef\xac\x80.com", "ff.com"),  /* ligature ff */
  NM("\xe2\x84\xa1.com", "tel.com"), /* TELEPHONE SIGN */
  NM("\xc3\xbc.", "xn--tda"),
  NM("\xc3\xbc\xe3\x80\x82", "xn--tda"),
  NM("_dmarc.b\xc3\xbc"
     "cher.de",
     "_dmarc.xn--bcher-kva.de"),
  NM("xn--zca.\xc3\xbc", "xn--zca.xn--tda"),
  BAD("\xe2\x91\xa0\xe2\x91\xa1\xe2\x91\xa6.0.0.1"), /* ①②⑦.0.0.1 */
  BAD("\xef\xbc\x91\xef\xbc\x92\xef\xbc\x97\xef\xbc\x8e\xef\xbc\x90\xef\xbc\x8e"
      "\xef\xbc\x90\xef\xbc\x8e\xef\xbc\x91"), /* １２７．０．０．１ */
  BAD("127\xe3\x80\x82"
      "0\xe3\x80\x82"
      "0\xe3\x80\x82"
      "1"), /* 127。0。0。1 */
  BAD("127\xef\xbd\xa1"
      "0.0.1"),                                              /* 127｡0.0.1 */
  BAD("1.2.3.\xef\xbc\x94"),                                 /* fullwidth 4 */
  BAD("\xef\xbc\x90\xef\xbd\x98\xef\xbc\x97\xef\xbd\x86.1"), /* ０ｘ７ｆ.1 */
  BAD("\xc3\xbc.0x1"),                                       /* numeric last label */
  BAD("\xd9\xa1\xd9\xa2\xd9\xa7.0.0.1"),                     /* Arabic-Indic 127 */
  BAD("\xf0\x9f\x92\xa9.la"),                                /* emoji: not IDNA2008 */
  BAD("\xc2\xbd.com"),                                       /* ½ */
  BAD("b\xc3\xbc\xe2\x80\x8e.de"),                           /* LRM */
  BAD("\xe2\x80\xae"
      "example.com"), /* RLO */
  BAD("\xe2\x80\x8f"
      "example.com"), /* RLM */
  BAD("\xcc\x81"
      "a.com"),            /* leading combining */
  BAD("\xe2\x92\x88.com"), /* ⒈ (digit full stop) */
  BAD("a\xef\xbc\x9a"
      "80.b\xc3\xbc"), /* fullwidth ':' */
  BAD("a\xef\xbc\x8f"
      "b.b\xc3\xbc"), /* fullwidth '/' */
  BAD("a\xef\xbc\xa0"
      "b.b\xc3\xbc"), /* fullwidth '@' */
  BAD("a\xef\xbc\x85"
      "2e.b\xc3\xbc"), /* fullwidth '%' */
  BAD("a\xe3\x80\x80"
      "b.b\xc3\xbc"), /* ideographic space */
  BAD("a\xc2\xa0"
      "b.com"), /* no-break space */
  BAD("a\xe2\x80\xa8"
      "b.com"), /* line separator */
  BAD("\xc3\xbc..de"),
  BAD(".\xc3\xbc"),
  BAD("\xc3\xbc.."),
  BAD("-\xc3\xbc.de"),
  BAD("\xc3\xbc-.de"),
  BAD("\xe3\x80\x82"), /* just U+3002 */
  /* invalid UTF-8 */
  BAD("\xc0\xae"), /* overlong '.' */
  BAD("example\xc0\xae"
      "com"),
  BAD("example\xe0\x80\xae"
      "com"), /* 3-byte overlong '.' */
  BAD("example\xf0\x80\x80\xae"
      "com"), /* 4-byte overlong '.' */
  BAD("\xc1\xbf.com"),
  BAD("\xff.com"),
  BAD("\xfe.com"),
  BAD("b\xc3"), /* truncated */
  BAD("b\xc3.de"),
  BAD("\x80.com"),                 /* lone continuation */
  BAD("\xed\xa0\x80.com"),         /* surrogate */
  BAD("\xf4\x90\x80\x80.com"),     /* above U+10FFFF */
  BAD("\xf8\x88\x80\x80\x80.com"), /* 5-byte form */
  BAD("\xc2\x85.com"),             /* NEL (C1 control) */
  BAD("a\xc2\x9b"
      "b.com"), /* CSI (C1 control) */
  /* A-labels that must not survive */
  BAD("xn--zz.com"),
  BAD("xn--.com"),
  BAD("xn--"),
  BAD("xn--abc-.com"),
  BAD("xn--a.com"),
  BAD("xn--127-.com"),    /* punycode of "127" */
  BAD("xn--orhcp.0.0.1"), /* numeric last label */
  BAD("xn--orhcp.com"),   /* ①②⑦: maps to ASCII */
  BAD("xn--8g7ccp.com"),  /* fullwidth １２７ */
  BAD("xn--ls8h.la"),     /* emoji */
  BAD("xn--a.b-"),
  BAD("xn--mi7chab1aes7c.com"), /* fullwidth "example" */

  /* --- malformed hosts --- */
  BAD(""),
  BAD("."),
  BAD(".."),
  BAD("..."),
  BAD(".example.com"),
  BAD("example..com"),
  BAD("example.com.."),
  BAD("-example.com"),
  BAD("example-.com"),
  BAD("a.-b.com"),
  BAD("a.b-.com"),
  BAD("example.com-"),
  BAD(" example.com"),
  BAD("example.com "),
  BAD("exa mple.com"),
  BAD("\texample.com"),
  BAD("example.com\t"),
  BAD("example.com\n"),
  BAD("a.com\r\nHost: x"),
  BAD("a.com\rx"),
  BAD("a\x0b"
      "b.com"),
  BAD("a\x0c"
      "b.com"),
  BAD("a\x00"
      "b.com"),
  BAD("example.com\x00"),
  BAD("\x00"
      "example.com"),
  BAD("127.0.0.1\x00.evil.com"),
  BAD("a\x7f"
      ".com"),
  BAD("a\x1b"
      "b.com"),
  BAD("%2e"),
  BAD("example%2ecom"),
  BAD("exa%41mple.com"),
  BAD("%31%32%37.0.0.1"),
  BAD("a\\b.com"),
  BAD("evil.com\\@good.com"),
  BAD("evil.com@good.com"),
  BAD("user:pass@good.com"),
  BAD("@good.com"),
  BAD("good.com#@evil.com"),
  BAD("good.com#"),
  BAD("good.com?x"),
  BAD("good.com?"),
  BAD("http://x"),
  BAD("https://example.com"),
  BAD("HTTP://EXAMPLE.COM"),
  BAD("//example.com"),
  BAD("x/y"),
  BAD("example.com/"),
  BAD("*.example.com"),
  BAD("*"),
  BAD("exa*mple.com"),
  BAD("example.com,evil.com"),
  BAD("exa'mple.com"),
  BAD("a;b.com"),
  BAD("a\"b.com"),
  BAD("a<b.com"),
  BAD("a>b.com"),
  BAD("a=b.com"),
  BAD("a+b.com"),
  BAD("a!b.com"),
  BAD("a$b.com"),
  BAD("a&b.com"),
  BAD("a(b).com"),
  BAD("a~b.com"),
  BAD("a|b.com"),
  BAD("a^b.com"),
  BAD("a`b.com"),
  BAD("a{b}.com"),
};

static const char *kind_name(int kind) {
  switch (kind) {
    case BADK: return "invalid";
    case EGRESS__HOST_NAME: return "name";
    case EGRESS__HOST_IPV4: return "ipv4";
    case EGRESS__HOST_IPV6: return "ipv6";
    default: return "?";
  }
}

/* Render a byte string printably for failure messages. */
static const char *show(const char *s, size_t len, char *buf, size_t buflen) {
  size_t o = 0;
  for (size_t i = 0; i < len && o + 5 < buflen; i++) {
    unsigned char c = (unsigned char)s[i];
    if (c >= 0x20 && c < 0x7f && c != '\\')
      buf[o++] = (char)c;
    else
      o += (size_t)snprintf(buf + o, buflen - o, "\\x%02x", c);
  }
  buf[o] = '\0';
  return buf;
}

/* Checks one result against an expectation; returns whether it matched and
 * prints the row on mismatch so a failing CI log names the input. */
static bool expect(const char *what, const char *in, size_t len, egress_status_t st, const egress__host_t *h,
                   const char *why, int kind, const char *text) {
  char buf[512];
  bool ok;
  if (kind == BADK) {
    ok = st == EGRESS_EINVAL && why != NULL && why[0] != '\0' && h->len == 0 && h->text[0] == '\0';
  } else {
    ok = st == EGRESS_OK && (int)h->kind == kind && strcmp(h->text, text) == 0 && h->len == strlen(text) &&
         why == NULL;
  }
  if (!ok)
    printf("\n  %s(\"%s\"): expected %s \"%s\", got status %d kind %s \"%s\" (%s)\n", what,
           show(in, len, buf, sizeof(buf)), kind_name(kind), text ? text : "", (int)st,
           st == EGRESS_OK ? kind_name((int)h->kind) : "invalid", h->text, why ? why : "");
  return ok;
}

static void test_table_host(void) {
  size_t n = sizeof(rows) / sizeof(rows[0]);
  size_t failed = 0;
  CU_ASSERT(n >= 150);
  for (size_t i = 0; i < n; i++) {
    egress__host_t h;
    const char *why = "unset";
    egress_status_t st = egress__canon_host(rows[i].in, rows[i].len, &h, &why);
    if (!expect("canon_host", rows[i].in, rows[i].len, st, &h, why, rows[i].kind, rows[i].text)) failed++;
  }
  CU_ASSERT_EQUAL(failed, 0);
}

/* canon_name is canon_host restricted to names: every IP literal (and any
 * bracket) is invalid, every name is canonicalized identically. */
static void test_table_name(void) {
  size_t n = sizeof(rows) / sizeof(rows[0]);
  size_t failed = 0;
  for (size_t i = 0; i < n; i++) {
    egress__host_t h;
    const char *why = "unset";
    int kind = rows[i].kind == EGRESS__HOST_NAME ? EGRESS__HOST_NAME : BADK;
    egress_status_t st = egress__canon_name(rows[i].in, rows[i].len, &h, &why);
    if (!expect("canon_name", rows[i].in, rows[i].len, st, &h, why, kind, kind == BADK ? NULL : rows[i].text))
      failed++;
  }
  CU_ASSERT_EQUAL(failed, 0);
}

/* Every valid row's output is a fixed point of both functions. */
static void test_idempotent(void) {
  size_t n = sizeof(rows) / sizeof(rows[0]);
  for (size_t i = 0; i < n; i++) {
    if (rows[i].kind == BADK) continue;
    egress__host_t a, b;
    const char *why;
    CU_ASSERT_EQUAL_FATAL(egress__canon_host(rows[i].in, rows[i].len, &a, &why), EGRESS_OK);
    CU_ASSERT_EQUAL(egress__canon_host(a.text, a.len, &b, &why), EGRESS_OK);
    CU_ASSERT_EQUAL(a.kind, b.kind);
    CU_ASSERT_STRING_EQUAL(a.text, b.text);
    CU_ASSERT_EQUAL(memcmp(&a.ip, &b.ip, sizeof(a.ip)), 0);
    if (a.kind == EGRESS__HOST_IPV6) {
      /* ... and in brackets too. */
      char br[sizeof(a.text) + 2];
      snprintf(br, sizeof(br), "[%s]", a.text);
      CU_ASSERT_EQUAL(egress__canon_host(br, strlen(br), &b, &why), EGRESS_OK);
      CU_ASSERT_STRING_EQUAL(a.text, b.text);
    }
  }
}

static void fill(char *buf, char c, size_t n) { memset(buf, c, n); }

static void test_lengths(void) {
  char buf[600];
  egress__host_t h;
  const char *why;

  /* One label of exactly 63 octets is valid; 64 is not. */
  fill(buf, 'a', 63);
  memcpy(buf + 63, ".com", 4);
  CU_ASSERT_EQUAL(egress__canon_host(buf, 67, &h, &why), EGRESS_OK);
  CU_ASSERT_EQUAL(h.len, 67);
  fill(buf, 'a', 64);
  memcpy(buf + 64, ".com", 4);
  CU_ASSERT_EQUAL(egress__canon_host(buf, 68, &h, &why), EGRESS_EINVAL);
  CU_ASSERT_EQUAL(egress__canon_name(buf, 68, &h, &why), EGRESS_EINVAL);

  /* 253 octets: 63+1+63+1+63+1+61 = 253 valid; with a trailing dot too. */
  size_t o = 0;
  for (int l = 0; l < 3; l++) {
    fill(buf + o, (char)('a' + l), 63);
    o += 63;
    buf[o++] = '.';
  }
  fill(buf + o, 'D', 61);
  o += 61;
  CU_ASSERT_EQUAL(o, 253);
  CU_ASSERT_EQUAL(egress__canon_host(buf, o, &h, &why), EGRESS_OK);
  CU_ASSERT_EQUAL(h.len, 253);
  CU_ASSERT_EQUAL(h.text[252], 'd');
  buf[o] = '.';
  CU_ASSERT_EQUAL(egress__canon_host(buf, o + 1, &h, &why), EGRESS_OK);
  CU_ASSERT_EQUAL(h.len, 253);
  CU_ASSERT_EQUAL(egress__canon_name(buf, o + 1, &h, &why), EGRESS_OK);
  /* 254 octets is too long, with or without a trailing dot. */
  buf[o] = 'd';
  CU_ASSERT_EQUAL(egress__canon_host(buf, o + 1, &h, &why), EGRESS_EINVAL);
  buf[o + 1] = '.';
  CU_ASSERT_EQUAL(egress__canon_host(buf, o + 2, &h, &why), EGRESS_EINVAL);

  /* Many one-octet labels. */
  o = 0;
  while (o + 2 <= 253) {
    buf[o++] = 'x';
    buf[o++] = '.';
  }
  buf[o++] = 'x';
  CU_ASSERT_EQUAL(o, 253);
  CU_ASSERT_EQUAL(egress__canon_host(buf, o, &h, &why), EGRESS_OK);

  /* A non-ASCII name whose A-label form exceeds 253 octets. */
  o = 0;
  for (int l = 0; l < 10; l++) {
    for (int k = 0; k < 25; k++) {
      buf[o++] = '\xc3';
      buf[o++] = '\xbc';
    }
    buf[o++] = '.';
  }
  buf[o++] = 'd';
  buf[o++] = 'e';
  CU_ASSERT_EQUAL(egress__canon_host(buf, o, &h, &why), EGRESS_EINVAL);
  /* A non-ASCII label whose A-label exceeds 63 octets. */
  o = 0;
  for (int k = 0; k < 60; k++) {
    buf[o++] = '\xc3';
    buf[o++] = '\xbc';
  }
  memcpy(buf + o, ".de", 3);
  CU_ASSERT_EQUAL(egress__canon_host(buf, o + 3, &h, &why), EGRESS_EINVAL);

  /* Absurdly long input is refused without reading past len. */
  fill(buf, 'a', sizeof(buf));
  CU_ASSERT_EQUAL(egress__canon_host(buf, sizeof(buf), &h, &why), EGRESS_EINVAL);
}

/* Input is read only within len: a prefix of a longer buffer is judged on
 * its own, and bytes beyond len never matter. */
static void test_explicit_length(void) {
  egress__host_t h;
  const char *why;
  const char *s = "example.com:443/path";
  CU_ASSERT_EQUAL(egress__canon_host(s, 11, &h, &why), EGRESS_OK);
  CU_ASSERT_STRING_EQUAL(h.text, "example.com");
  CU_ASSERT_EQUAL(egress__canon_host("127.0.0.1xyz", 9, &h, &why), EGRESS_OK);
  CU_ASSERT_EQUAL(h.kind, EGRESS__HOST_IPV4);
  CU_ASSERT_EQUAL(egress__canon_host("::1]", 3, &h, &why), EGRESS_OK);
  CU_ASSERT_STRING_EQUAL(h.text, "::1");
  CU_ASSERT_EQUAL(egress__canon_host("b\xc3\xbc"
                                     "cher.de!!",
                                     10, &h, &why),
                  EGRESS_OK);
  CU_ASSERT_STRING_EQUAL(h.text, "xn--bcher-kva.de");
  /* A len shorter than strlen that cuts a UTF-8 sequence. */
  CU_ASSERT_EQUAL(egress__canon_host("b\xc3\xbc", 2, &h, &why), EGRESS_EINVAL);
}

static void test_null_args(void) {
  egress__host_t h;
  const char *why = NULL;
  CU_ASSERT_EQUAL(egress__canon_host(NULL, 3, &h, &why), EGRESS_EINVAL);
  CU_ASSERT_PTR_NOT_NULL(why);
  CU_ASSERT_EQUAL(egress__canon_host("a", 1, NULL, &why), EGRESS_EINVAL);
  CU_ASSERT_EQUAL(egress__canon_host("a", 1, &h, NULL), EGRESS_OK);
  CU_ASSERT_EQUAL(egress__canon_host("a b", 3, &h, NULL), EGRESS_EINVAL);
  CU_ASSERT_EQUAL(egress__canon_name(NULL, 0, &h, &why), EGRESS_EINVAL);
}

/* The messages name the problem. */
static void test_messages(void) {
  static const struct {
    const char *in;
    const char *needle;
  } m[] = {
    { "a\rb", "control" },
    { "a b", "white space" },
    { "a%2e", "%" },
    { "a\\b", "backslash" },
    { "u@h", "@" },
    { "h/p", "/" },
    { "h?q", "?" },
    { "h#f", "#" },
    { "http://h", "scheme" },
    { "h:80", ":" },
    { "[h]", "IPv6" },
    { "a..b", "empty label" },
    { "127.1", "dotted-quad" },
    { "-a", "-" },
    { "\xc0\xae", "UTF-8" },
    { "xn--zz", "A-label" },
    { "[::1]:80", "port" },
    { "\xe2\x91\xa0.0.0.1", "IP" },
  };
  for (size_t i = 0; i < sizeof(m) / sizeof(m[0]); i++) {
    egress__host_t h;
    const char *why = NULL;
    CU_ASSERT_EQUAL(egress__canon_host(m[i].in, strlen(m[i].in), &h, &why), EGRESS_EINVAL);
    CU_ASSERT_PTR_NOT_NULL_FATAL(why);
    if (!strstr(why, m[i].needle)) {
      printf("\n  message for \"%s\" is \"%s\", expected it to mention \"%s\"\n", m[i].in, why, m[i].needle);
      CU_FAIL("message does not name the problem");
    }
  }
  egress__host_t h;
  const char *why = NULL;
  CU_ASSERT_EQUAL(egress__canon_name("1.2.3.4", 7, &h, &why), EGRESS_EINVAL);
  CU_ASSERT_PTR_NOT_NULL(why);
  CU_ASSERT_EQUAL(egress__canon_name("::1", 3, &h, &why), EGRESS_EINVAL);
  CU_ASSERT_EQUAL(egress__canon_name("[::1]", 5, &h, &why), EGRESS_EINVAL);
}

/* Every label ending in a number makes the whole host an IPv4 attempt,
 * checked exhaustively over short numeric labels and a few name shapes. */
static void test_numeric_last_label_rule(void) {
  static const char *heads[] = { "foo.", "a.b.", "1.2.3.", "0x7f.", "", "xn--bcher-kva." };
  static const char *tails[] = { "0",   "1",          "00",          "08",         "255",
                                 "256", "4294967296", "0x",          "0X",         "0x0",
                                 "0xf", "0XAb",       "0x100000000", "0x7f000001", "99999999999999999999" };
  for (size_t i = 0; i < sizeof(heads) / sizeof(heads[0]); i++) {
    for (size_t j = 0; j < sizeof(tails) / sizeof(tails[0]); j++) {
      char buf[128];
      int n = snprintf(buf, sizeof(buf), "%s%s", heads[i], tails[j]);
      egress__host_t h;
      const char *why;
      egress_status_t st = egress__canon_host(buf, (size_t)n, &h, &why);
      /* The only acceptable outcome is a canonical dotted quad. */
      if (st == EGRESS_OK) {
        CU_ASSERT_EQUAL(h.kind, EGRESS__HOST_IPV4);
        CU_ASSERT_STRING_EQUAL(h.text, buf);
      }
      CU_ASSERT_EQUAL(egress__canon_name(buf, (size_t)n, &h, &why), EGRESS_EINVAL);
      /* With one trailing dot nothing changes; with two it is invalid. */
      buf[n] = '.';
      buf[n + 1] = '.';
      egress__host_t h2;
      egress_status_t st2 = egress__canon_host(buf, (size_t)n + 1, &h2, &why);
      CU_ASSERT_EQUAL(st2, st);
      CU_ASSERT_EQUAL(egress__canon_host(buf, (size_t)n + 2, &h2, &why), EGRESS_EINVAL);
    }
  }
  /* Every dotted quad with one part spelled with a leading zero, and each
   * of the four parts out of range, is invalid. */
  for (int part = 0; part < 4; part++) {
    static const char *bad[] = { "00", "01", "007", "256", "1000", "0x1", "-1", "" };
    for (size_t b = 0; b < sizeof(bad) / sizeof(bad[0]); b++) {
      char buf[64];
      const char *p[4] = { "1", "2", "3", "4" };
      p[part] = bad[b];
      int n = snprintf(buf, sizeof(buf), "%s.%s.%s.%s", p[0], p[1], p[2], p[3]);
      egress__host_t h;
      const char *why;
      CU_ASSERT_EQUAL(egress__canon_host(buf, (size_t)n, &h, &why), EGRESS_EINVAL);
    }
  }
}

/* Every value a part can take round-trips exactly. */
static void test_ip4_exhaustive_parts(void) {
  for (unsigned v = 0; v < 1000; v++) {
    char buf[32];
    int n = snprintf(buf, sizeof(buf), "10.%u.0.1", v);
    egress__ip_t ip;
    bool ok = egress__ip4_parse(buf, (size_t)n, &ip);
    CU_ASSERT_EQUAL(ok, v <= 255);
    if (ok) CU_ASSERT_EQUAL(ip.bytes[1], v);
    n = snprintf(buf, sizeof(buf), "10.0%u.0.1", v);
    CU_ASSERT_FALSE(egress__ip4_parse(buf, (size_t)n, &ip));
  }
}

/* ---- ip.c ---- */

static egress__ip_t ip_of(const char *s) {
  egress__ip_t ip;
  memset(&ip, 0, sizeof(ip));
  if (!egress__ip4_parse(s, strlen(s), &ip)) CU_ASSERT_TRUE(egress__ip6_parse(s, strlen(s), &ip));
  return ip;
}

static void test_ip_parse(void) {
  egress__ip_t ip;
  CU_ASSERT_TRUE(egress__ip4_parse("1.2.3.4", 7, &ip));
  CU_ASSERT_EQUAL(ip.family, 4);
  CU_ASSERT_EQUAL(ip.bytes[0], 1);
  CU_ASSERT_EQUAL(ip.bytes[3], 4);
  CU_ASSERT_EQUAL(ip.bytes[4], 0);
  CU_ASSERT_TRUE(egress__ip4_parse("1.2.3.4.5", 7, &ip)); /* len bounds */
  CU_ASSERT_FALSE(egress__ip4_parse("1.2.3.4", 6, &ip) && ip.bytes[3] == 4);
  CU_ASSERT_FALSE(egress__ip4_parse("1.2.3.", 6, &ip));
  CU_ASSERT_FALSE(egress__ip4_parse("1.2.3.4\0", 8, &ip));
  CU_ASSERT_FALSE(egress__ip4_parse(NULL, 7, &ip));
  CU_ASSERT_FALSE(egress__ip4_parse("", 0, &ip));
  CU_ASSERT_FALSE(egress__ip4_parse("1.2.3.4.", 8, &ip));
  CU_ASSERT_FALSE(egress__ip4_parse("01.2.3.4", 8, &ip));
  CU_ASSERT_FALSE(egress__ip4_parse("1.2.3.4 ", 8, &ip));
  CU_ASSERT_FALSE(egress__ip4_parse("1.2.3.a", 7, &ip));
  CU_ASSERT_FALSE(egress__ip4_parse("1111.2.3.4", 10, &ip));

  CU_ASSERT_TRUE(egress__ip6_parse("::1zzz", 3, &ip)); /* explicit length */
  CU_ASSERT_EQUAL(ip.family, 6);
  CU_ASSERT_EQUAL(ip.bytes[15], 1);
  CU_ASSERT_FALSE(egress__ip6_parse("::1%eth0", 8, &ip));
  CU_ASSERT_FALSE(egress__ip6_parse("[::1]", 5, &ip));
  CU_ASSERT_FALSE(egress__ip6_parse("::1\0", 4, &ip));
  CU_ASSERT_FALSE(egress__ip6_parse("::ffff:127.0.0.01", 17, &ip));
  CU_ASSERT_FALSE(egress__ip6_parse("::ffff:127.1", 12, &ip));
  CU_ASSERT_FALSE(egress__ip6_parse("1.2.3.4", 7, &ip));
  CU_ASSERT_FALSE(egress__ip6_parse("", 0, &ip));
  CU_ASSERT_TRUE(egress__ip6_parse("0000:0000:0000:0000:0000:0000:255.255.255.255", 45, &ip));
  CU_ASSERT_FALSE(egress__ip6_parse("0000:0000:0000:0000:0000:0000:255.255.255.2550", 46, &ip));
}

static void test_ip_format(void) {
  static const struct {
    const char *in, *out;
  } f[] = {
    { "1.2.3.4", "1.2.3.4" },
    { "0.0.0.0", "0.0.0.0" },
    { "::", "::" },
    { "::1", "::1" },
    { "1::", "1::" },
    { "2001:db8::1", "2001:db8::1" },
    { "2001:db8:0:0:1:0:0:1", "2001:db8::1:0:0:1" },
    { "2001:0:0:1:0:0:0:1", "2001:0:0:1::1" },
    { "2001:db8:0:1:1:1:1:1", "2001:db8:0:1:1:1:1:1" },
    { "2001:DB8:AAAA:bbbb:CcCc:0:0:0", "2001:db8:aaaa:bbbb:cccc::" },
    { "::2:3", "::2:3" },
    { "::7f00:1", "::7f00:1" },
    { "::ffff:1.2.3.4", "::ffff:1.2.3.4" },
    { "::ffff:0:0", "::ffff:0.0.0.0" },
    { "::ffff:0:1.2.3.4", "::ffff:0:102:304" },
    { "1:0:0:0:0:0:0:0", "1::" },
    { "0:0:0:0:0:0:0:0", "::" },
    { "0:1:0:1:0:1:0:1", "0:1:0:1:0:1:0:1" },
    { "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff", "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff" },
  };
  for (size_t i = 0; i < sizeof(f) / sizeof(f[0]); i++) {
    egress__ip_t ip = ip_of(f[i].in);
    char buf[EGRESS__IPSTR_MAX];
    egress__ip_format(&ip, buf, sizeof(buf));
    if (strcmp(buf, f[i].out) != 0) {
      printf("\n  format(%s) = %s, expected %s\n", f[i].in, buf, f[i].out);
      CU_FAIL("ip_format");
    }
  }
  /* A small buffer is truncated, never overrun. */
  egress__ip_t ip = ip_of("2001:db8::1");
  char small[5] = "zzzz";
  egress__ip_format(&ip, small, 4);
  CU_ASSERT_EQUAL(strlen(small), 3);
  egress__ip_format(&ip, small, 0);
}

/* Cross-check the formatter against inet_pton/ntop on random addresses
 * biased to zeros: it must parse back to the same bytes, and be the
 * shortest form (no group with leading zeros, "::" for the longest run). */
static uint64_t rng_state = 0x243f6a8885a308d3ull;
static uint32_t rng(void) {
  /* xorshift64*: fixed seed so failures reproduce. */
  rng_state ^= rng_state >> 12;
  rng_state ^= rng_state << 25;
  rng_state ^= rng_state >> 27;
  return (uint32_t)((rng_state * 2685821657736338717ull) >> 32);
}

static void test_ip_format_random(void) {
  for (int it = 0; it < 20000; it++) {
    egress__ip_t ip;
    memset(&ip, 0, sizeof(ip));
    ip.family = 6;
    for (int g = 0; g < 8; g++) {
      uint32_t r = rng();
      uint16_t v = (r & 3) ? 0 : (uint16_t)(r >> 16);
      ip.bytes[2 * g] = (uint8_t)(v >> 8);
      ip.bytes[2 * g + 1] = (uint8_t)v;
    }
    char buf[EGRESS__IPSTR_MAX];
    egress__ip_format(&ip, buf, sizeof(buf));
    egress__ip_t back;
    CU_ASSERT_TRUE_FATAL(egress__ip6_parse(buf, strlen(buf), &back));
    CU_ASSERT_EQUAL(memcmp(back.bytes, ip.bytes, 16), 0);
    /* At most one "::" and never ":::" or a leading zero in a group. */
    const char *dc = strstr(buf, "::");
    if (dc) CU_ASSERT_PTR_NULL(strstr(dc + 1, "::"));
    CU_ASSERT_PTR_NULL(strstr(buf, ":::"));
    for (const char *p = buf; *p; p++) {
      bool start = p == buf || p[-1] == ':';
      if (start && p[0] == '0' && p[1] && p[1] != ':' && p[1] != '.') CU_FAIL("leading zero");
    }
  }
}

static void test_prefix_contains(void) {
  egress__prefix_t p;
  memset(&p, 0, sizeof(p));
  p.addr = ip_of("10.0.0.0");
  p.len = 8;
  egress__ip_t a = ip_of("10.255.1.2"), b = ip_of("11.0.0.0"), c = ip_of("::ffff:10.0.0.1");
  CU_ASSERT_TRUE(egress__prefix_contains(&p, &a));
  CU_ASSERT_FALSE(egress__prefix_contains(&p, &b));
  CU_ASSERT_FALSE(egress__prefix_contains(&p, &c)); /* families differ */
  p.addr = ip_of("192.168.0.0");
  p.len = 23;
  a = ip_of("192.168.1.255");
  b = ip_of("192.168.2.0");
  CU_ASSERT_TRUE(egress__prefix_contains(&p, &a));
  CU_ASSERT_FALSE(egress__prefix_contains(&p, &b));
  p.addr = ip_of("0.0.0.0");
  p.len = 0;
  CU_ASSERT_TRUE(egress__prefix_contains(&p, &b));
  p.addr = ip_of("1.2.3.4");
  p.len = 32;
  a = ip_of("1.2.3.4");
  b = ip_of("1.2.3.5");
  CU_ASSERT_TRUE(egress__prefix_contains(&p, &a));
  CU_ASSERT_FALSE(egress__prefix_contains(&p, &b));
  p.len = 33;
  CU_ASSERT_FALSE(egress__prefix_contains(&p, &a));
  p.addr = ip_of("2001:db8::");
  p.len = 32;
  a = ip_of("2001:db8:ffff::1");
  b = ip_of("2001:db9::");
  CU_ASSERT_TRUE(egress__prefix_contains(&p, &a));
  CU_ASSERT_FALSE(egress__prefix_contains(&p, &b));
  p.addr = ip_of("fe80::");
  p.len = 10;
  a = ip_of("febf::1");
  b = ip_of("fec0::1");
  CU_ASSERT_TRUE(egress__prefix_contains(&p, &a));
  CU_ASSERT_FALSE(egress__prefix_contains(&p, &b));
  p.addr = ip_of("::1");
  p.len = 128;
  a = ip_of("::1");
  CU_ASSERT_TRUE(egress__prefix_contains(&p, &a));
  p.len = 129;
  CU_ASSERT_FALSE(egress__prefix_contains(&p, &a));
  CU_ASSERT_FALSE(egress__prefix_contains(NULL, &a));
  CU_ASSERT_FALSE(egress__prefix_contains(&p, NULL));
}

static void test_unmap_sockaddr(void) {
  egress__ip_t ip = ip_of("::ffff:192.0.2.1");
  CU_ASSERT_TRUE(egress__ip_unmap(&ip));
  CU_ASSERT_EQUAL(ip.family, 4);
  egress__ip_t want = ip_of("192.0.2.1");
  CU_ASSERT_EQUAL(memcmp(&ip, &want, sizeof(ip)), 0);
  CU_ASSERT_FALSE(egress__ip_unmap(&ip));
  ip = ip_of("::ffff:0:192.0.2.1");
  CU_ASSERT_FALSE(egress__ip_unmap(&ip));
  CU_ASSERT_EQUAL(ip.family, 6);
  ip = ip_of("::192.0.2.1");
  CU_ASSERT_FALSE(egress__ip_unmap(&ip));
  CU_ASSERT_FALSE(egress__ip_unmap(NULL));

  egress__sockaddr_t ss;
  ip = ip_of("192.0.2.1");
  socklen_t len = egress__ip_sockaddr(&ip, 443, &ss);
  CU_ASSERT_EQUAL(len, sizeof(struct sockaddr_in));
  const struct sockaddr_in *sin = (const struct sockaddr_in *)&ss;
  CU_ASSERT_EQUAL(sin->sin_family, AF_INET);
  CU_ASSERT_EQUAL(ntohs(sin->sin_port), 443);
  CU_ASSERT_EQUAL(ntohl(sin->sin_addr.s_addr), 0xc0000201u);
  ip = ip_of("2001:db8::1");
  len = egress__ip_sockaddr(&ip, 8443, &ss);
  CU_ASSERT_EQUAL(len, sizeof(struct sockaddr_in6));
  const struct sockaddr_in6 *sin6 = (const struct sockaddr_in6 *)&ss;
  CU_ASSERT_EQUAL(sin6->sin6_family, AF_INET6);
  CU_ASSERT_EQUAL(ntohs(sin6->sin6_port), 8443);
  CU_ASSERT_EQUAL(memcmp(&sin6->sin6_addr, ip.bytes, 16), 0);
  CU_ASSERT_EQUAL(sin6->sin6_scope_id, 0);
  ip.family = 0;
  CU_ASSERT_EQUAL(egress__ip_sockaddr(&ip, 1, &ss), 0);
}

/* ---- properties over random input ---- */

static bool name_invariants(const egress__host_t *h) {
  if (h->len == 0 || h->len > EGRESS__NAME_MAX || h->len != strlen(h->text)) return false;
  size_t label = 0;
  for (size_t i = 0; i < h->len; i++) {
    char c = h->text[i];
    if (c == '.') {
      if (label == 0 || label > EGRESS__LABEL_MAX || h->text[i - 1] == '-') return false;
      label = 0;
      continue;
    }
    if (!((c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '-' || c == '_')) return false;
    if (label == 0 && c == '-') return false;
    label++;
  }
  if (label == 0 || label > EGRESS__LABEL_MAX || h->text[h->len - 1] == '-') return false;
  /* The last label must not be numeric ("ends in a number"). */
  const char *last = strrchr(h->text, '.');
  last = last ? last + 1 : h->text;
  bool digits = true, hex = (last[0] == '0' && last[1] == 'x');
  for (const char *p = last; *p; p++) digits = digits && (*p >= '0' && *p <= '9');
  if (hex)
    for (const char *p = last + 2; *p; p++)
      hex = hex && ((*p >= '0' && *p <= '9') || (*p >= 'a' && *p <= 'f'));
  return !digits && !hex;
}

static void check_random_result(const char *buf, size_t n, bool names_only) {
  egress__host_t h, again;
  const char *why = NULL;
  egress_status_t st =
      names_only ? egress__canon_name(buf, n, &h, &why) : egress__canon_host(buf, n, &h, &why);
  CU_ASSERT_TRUE_FATAL(st == EGRESS_OK || st == EGRESS_EINVAL);
  if (st != EGRESS_OK) {
    CU_ASSERT_PTR_NOT_NULL_FATAL(why);
    return;
  }
  /* Nothing accepted holds a byte that could change its meaning later. */
  for (size_t i = 0; i < n; i++) {
    char c = buf[i];
    if (c == '\0' || c == '%' || c == '@' || c == '/' || c == '\\' || c == ' ' || c == '?' || c == '#' ||
        (unsigned char)c < 0x20 || c == 0x7f)
      CU_FAIL_FATAL("accepted a host with a forbidden byte");
  }
  if (h.kind == EGRESS__HOST_NAME) {
    if (!name_invariants(&h)) {
      char show_buf[1024];
      printf("\n  bad name \"%s\" from \"%s\"\n", h.text, show(buf, n, show_buf, sizeof(show_buf)));
      CU_FAIL_FATAL("accepted name breaks an invariant");
    }
  } else {
    CU_ASSERT_FALSE_FATAL(names_only);
    char txt[EGRESS__IPSTR_MAX];
    egress__ip_format(&h.ip, txt, sizeof(txt));
    CU_ASSERT_STRING_EQUAL_FATAL(txt, h.text);
    CU_ASSERT_EQUAL_FATAL(h.ip.family, h.kind == EGRESS__HOST_IPV4 ? 4 : 6);
  }
  CU_ASSERT_EQUAL_FATAL(egress__canon_host(h.text, h.len, &again, &why), EGRESS_OK);
  CU_ASSERT_STRING_EQUAL_FATAL(again.text, h.text);
  CU_ASSERT_EQUAL_FATAL(again.kind, h.kind);
}

static void test_random_bytes(void) {
  /* Pieces that make accepted and near-miss hosts likely, mixed with raw
   * random bytes. */
  static const char *pieces[] = {
    "a",
    "z",
    "Q",
    "0",
    "1",
    "9",
    "127",
    "255",
    "256",
    "0x",
    "0X7f",
    "08",
    ".",
    ".",
    ".",
    "-",
    "_",
    ":",
    "::",
    "[",
    "]",
    "%",
    "@",
    "/",
    "\\",
    " ",
    "xn--",
    "xn--bcher-kva",
    "ffff",
    "\xc3\xbc",
    "\xc3\x9c",
    "\xe3\x80\x82",
    "\xef\xbc\x8e",
    "\xef\xbc\x91",
    "\xe2\x91\xa0",
    "\xe2\x80\x8b",
    "\xe2\x80\x8d",
    "\xcf\x82",
    "\xc3\x9f",
    "\xd0\xb0",
    "\xc0\xae",
    "\xed\xa0\x80",
    "\xf0\x9f\x92\xa9",
    "com",
    "example",
    "1.2.3.4",
    "::ffff:",
    "localhost",
    "\xef\xbd\xa1",
  };
  size_t npieces = sizeof(pieces) / sizeof(pieces[0]);
  unsigned accepted = 0;
  for (int it = 0; it < 100000; it++) {
    char buf[300];
    size_t n = 0;
    size_t target = rng() % 40;
    while (n < target) {
      uint32_t r = rng();
      if (r % 4 == 0) {
        buf[n++] = (char)(r >> 8);
      } else {
        const char *p = pieces[(r >> 8) % npieces];
        size_t pl = strlen(p);
        if (n + pl > sizeof(buf)) break;
        memcpy(buf + n, p, pl);
        n += pl;
      }
    }
    check_random_result(buf, n, (it & 1) != 0);
    egress__host_t h;
    const char *why;
    if (egress__canon_host(buf, n, &h, &why) == EGRESS_OK) accepted++;
  }
  /* The generator must actually reach the accepting paths. */
  CU_ASSERT(accepted > 1000);
}

/* Sequences of dots and ASCII letters with random case: the canonical text
 * is the lower-cased input without one trailing dot, or invalid. */
static void test_random_ascii_names(void) {
  static const char alphabet[] = "abcXYZ019-_.";
  for (int it = 0; it < 20000; it++) {
    char buf[80], want[80];
    size_t n = 1 + rng() % 20;
    for (size_t i = 0; i < n; i++) buf[i] = alphabet[rng() % (sizeof(alphabet) - 1)];
    egress__host_t h;
    const char *why;
    egress_status_t st = egress__canon_host(buf, n, &h, &why);
    if (st != EGRESS_OK) continue;
    size_t m = n;
    if (buf[m - 1] == '.') m--;
    for (size_t i = 0; i < m; i++) want[i] = (buf[i] >= 'A' && buf[i] <= 'Z') ? (char)(buf[i] + 32) : buf[i];
    want[m] = '\0';
    CU_ASSERT_STRING_EQUAL(h.text, want);
    CU_ASSERT_TRUE(h.kind == EGRESS__HOST_NAME || h.kind == EGRESS__HOST_IPV4);
    if (h.kind == EGRESS__HOST_NAME) CU_ASSERT_TRUE(name_invariants(&h));
  }
}

/* No shared state: the same table canonicalized from several threads at
 * once gives the same answers. */
static void *thread_run(void *arg) {
  size_t *bad = arg;
  size_t n = sizeof(rows) / sizeof(rows[0]);
  for (int rep = 0; rep < 20; rep++) {
    for (size_t i = 0; i < n; i++) {
      egress__host_t h;
      const char *why;
      egress_status_t st = egress__canon_host(rows[i].in, rows[i].len, &h, &why);
      bool ok =
          rows[i].kind == BADK ? st == EGRESS_EINVAL : st == EGRESS_OK && strcmp(h.text, rows[i].text) == 0;
      if (!ok) (*bad)++;
    }
  }
  return NULL;
}

static void test_threads(void) {
  pthread_t t[4];
  size_t bad[4] = { 0, 0, 0, 0 };
  for (int i = 0; i < 4; i++) CU_ASSERT_EQUAL_FATAL(pthread_create(&t[i], NULL, thread_run, &bad[i]), 0);
  for (int i = 0; i < 4; i++) {
    pthread_join(t[i], NULL);
    CU_ASSERT_EQUAL(bad[i], 0);
  }
}

static CU_TestInfo canon_tests[] = {
  { "table: canon_host", test_table_host },
  { "table: canon_name", test_table_name },
  { "canonical output is a fixed point", test_idempotent },
  { "label and name lengths", test_lengths },
  { "explicit length is honoured", test_explicit_length },
  { "NULL arguments", test_null_args },
  { "messages name the problem", test_messages },
  { "numeric last label means IPv4 attempt", test_numeric_last_label_rule },
  { "random bytes: no crash, invariants hold", test_random_bytes },
  { "random ASCII names", test_random_ascii_names },
  { "threads", test_threads },
  CU_TEST_INFO_NULL,
};

static CU_TestInfo ip_tests[] = {
  { "parse", test_ip_parse },
  { "dotted quad parts", test_ip4_exhaustive_parts },
  { "RFC 5952 format", test_ip_format },
  { "RFC 5952 format, random", test_ip_format_random },
  { "prefix contains", test_prefix_contains },
  { "unmap and sockaddr", test_unmap_sockaddr },
  CU_TEST_INFO_NULL,
};

int main(int argc, char **argv) {
  static const egress_test_suite_t suites[] = {
    { "canon", NULL, NULL, canon_tests },
    { "ip", NULL, NULL, ip_tests },
    { NULL, NULL, NULL, NULL },
  };
  return egress_test_main(argc, argv, suites);
}
