/*
 * The policy entry grammar (lib/entry.c, docs/policy.md#entries): every accepted form with
 * every field checked, every error class with hostile variants, deny-list
 * port defaults, regex anchoring and fail-closed limits, allocation failure,
 * and random mutations of valid entries.
 *
 * Every entry is parsed from an exact-size heap copy with no terminating NUL
 * so that a read past the given length shows up under AddressSanitizer.
 */
#include "egress_private.h"

#include "testutil.h"

#include <arpa/inet.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#define ANYP 1, 65535

typedef struct ok_case {
  const char *text;
  egress_list_t list;
  egress__rule_kind_t kind;
  const char *name; /* expected rule->name, NULL for none */
  const char *cidr; /* expected CIDR address text, NULL unless CIDR */
  int plen;
  unsigned lo, hi;
  const char *path; /* expected rule->path */
} ok_case_t;

#define A     EGRESS_LIST_ALLOW
#define D     EGRESS_LIST_DENY
#define EXACT EGRESS__RULE_EXACT
#define WILD1 EGRESS__RULE_WILD1
#define WILDN EGRESS__RULE_WILDN
#define ANY   EGRESS__RULE_ANY
#define REGEX EGRESS__RULE_REGEX
#define CIDR  EGRESS__RULE_CIDR

static const ok_case_t ok_cases[] = {
  /* URLs */
  { "https://api.example.com", A, EXACT, "api.example.com", NULL, 0, 443, 443, NULL },
  { "http://h", A, EXACT, "h", NULL, 0, 80, 80, NULL },
  { "https://h:8443/v1/x", A, EXACT, "h", NULL, 0, 8443, 8443, "/v1/x" },
  { "HTTPS://API.Example.COM/", A, EXACT, "api.example.com", NULL, 0, 443, 443, NULL },
  { "Http://api.example.com", A, EXACT, "api.example.com", NULL, 0, 80, 80, NULL },
  { "https://api.example.com/v1/", A, EXACT, "api.example.com", NULL, 0, 443, 443, "/v1" },
  { "https://api.example.com/v1/%7Bid%7d", A, EXACT, "api.example.com", NULL, 0, 443, 443, "/v1/%7Bid%7D" },
  { "https://api.example.com./v1", A, EXACT, "api.example.com", NULL, 0, 443, 443, "/v1" },
  { "https://h/a/b/c.d/e..f/...", A, EXACT, "h", NULL, 0, 443, 443, "/a/b/c.d/e..f/..." },
  { "https://h/a:b;c=d,e+f!$&'()*~_-", A, EXACT, "h", NULL, 0, 443, 443, "/a:b;c=d,e+f!$&'()*~_-" },
  { "https://*.example.com", A, WILD1, "example.com", NULL, 0, 443, 443, NULL },
  { "https://**.example.com:8443/x", A, WILDN, "example.com", NULL, 0, 8443, 8443, "/x" },
  { "https://*", A, ANY, NULL, NULL, 0, 443, 443, NULL },
  { "http://*:8080", A, ANY, NULL, NULL, 0, 8080, 8080, NULL },
  { "https://203.0.113.7", A, CIDR, NULL, "203.0.113.7", 32, 443, 443, NULL },
  { "http://203.0.113.7:8080/api", A, CIDR, NULL, "203.0.113.7", 32, 8080, 8080, "/api" },
  { "http://[2001:db8::1]:8080/p", A, CIDR, NULL, "2001:db8::1", 128, 8080, 8080, "/p" },
  { "https://[2001:DB8::1]", A, CIDR, NULL, "2001:db8::1", 128, 443, 443, NULL },
  { "https://[::ffff:203.0.113.9]", A, CIDR, NULL, "203.0.113.9", 32, 443, 443, NULL },
  { "https://h:65535", A, EXACT, "h", NULL, 0, 65535, 65535, NULL },
  { "http://h:1", A, EXACT, "h", NULL, 0, 1, 1, NULL },
  { "https://bücher.de/x", A, EXACT, "xn--bcher-kva.de", NULL, 0, 443, 443, "/x" },
  /* bare names */
  { "api.example.com", A, EXACT, "api.example.com", NULL, 0, 443, 443, NULL },
  { "API.EXAMPLE.COM.", A, EXACT, "api.example.com", NULL, 0, 443, 443, NULL },
  { "api.example.com:8443", A, EXACT, "api.example.com", NULL, 0, 8443, 8443, NULL },
  { "api.example.com:8000-8999", A, EXACT, "api.example.com", NULL, 0, 8000, 8999, NULL },
  { "api.example.com:*", A, EXACT, "api.example.com", NULL, 0, ANYP, NULL },
  { "api.example.com:443-443", A, EXACT, "api.example.com", NULL, 0, 443, 443, NULL },
  { "api.example.com:1", A, EXACT, "api.example.com", NULL, 0, 1, 1, NULL },
  { "api.example.com:65535", A, EXACT, "api.example.com", NULL, 0, 65535, 65535, NULL },
  { "api.example.com:1-65535", A, EXACT, "api.example.com", NULL, 0, ANYP, NULL },
  { "_dmarc.example.com", A, EXACT, "_dmarc.example.com", NULL, 0, 443, 443, NULL },
  { "localhost", A, EXACT, "localhost", NULL, 0, 443, 443, NULL },
  { "bücher.de", A, EXACT, "xn--bcher-kva.de", NULL, 0, 443, 443, NULL },
  { "a1.example.com:80", A, EXACT, "a1.example.com", NULL, 0, 80, 80, NULL },
  /* wildcards */
  { "*.example.com", A, WILD1, "example.com", NULL, 0, 443, 443, NULL },
  { "**.example.com", A, WILDN, "example.com", NULL, 0, 443, 443, NULL },
  { "*.Example.Com.", A, WILD1, "example.com", NULL, 0, 443, 443, NULL },
  { "*", A, ANY, NULL, NULL, 0, 443, 443, NULL },
  { "*:*", A, ANY, NULL, NULL, 0, ANYP, NULL },
  { "*:8443", A, ANY, NULL, NULL, 0, 8443, 8443, NULL },
  { "*.example.com:8443", A, WILD1, "example.com", NULL, 0, 8443, 8443, NULL },
  { "**.example.com:1-1024", A, WILDN, "example.com", NULL, 0, 1, 1024, NULL },
  { "*.com", A, WILD1, "com", NULL, 0, 443, 443, NULL },
  { "*.bücher.de", A, WILD1, "xn--bcher-kva.de", NULL, 0, 443, 443, NULL },
  /* IPv4 CIDR */
  { "203.0.113.0/24", A, CIDR, NULL, "203.0.113.0", 24, ANYP, NULL },
  { "203.0.113.7", A, CIDR, NULL, "203.0.113.7", 32, ANYP, NULL },
  { "203.0.113.7/32", A, CIDR, NULL, "203.0.113.7", 32, ANYP, NULL },
  { "203.0.113.0/24:443", A, CIDR, NULL, "203.0.113.0", 24, 443, 443, NULL },
  { "203.0.113.7:443", A, CIDR, NULL, "203.0.113.7", 32, 443, 443, NULL },
  { "10.0.0.0/8:5432-5440", A, CIDR, NULL, "10.0.0.0", 8, 5432, 5440, NULL },
  { "10.0.0.0/8:*", A, CIDR, NULL, "10.0.0.0", 8, ANYP, NULL },
  { "0.0.0.0/0", A, CIDR, NULL, "0.0.0.0", 0, ANYP, NULL },
  { "0.0.0.0/0:*", A, CIDR, NULL, "0.0.0.0", 0, ANYP, NULL },
  { "255.255.255.255", A, CIDR, NULL, "255.255.255.255", 32, ANYP, NULL },
  { "128.0.0.0/1", A, CIDR, NULL, "128.0.0.0", 1, ANYP, NULL },
  /* IPv6 CIDR */
  { "2001:db8::/32", A, CIDR, NULL, "2001:db8::", 32, ANYP, NULL },
  { "2001:DB8::/32", A, CIDR, NULL, "2001:db8::", 32, ANYP, NULL },
  { "2001:db8::1", A, CIDR, NULL, "2001:db8::1", 128, ANYP, NULL },
  { "[2001:db8::]/32:443", A, CIDR, NULL, "2001:db8::", 32, 443, 443, NULL },
  { "[2001:db8::1]:443", A, CIDR, NULL, "2001:db8::1", 128, 443, 443, NULL },
  { "[2001:db8::1]/128", A, CIDR, NULL, "2001:db8::1", 128, ANYP, NULL },
  { "[2001:db8::1]", A, CIDR, NULL, "2001:db8::1", 128, ANYP, NULL },
  { "[2001:db8::]/32:8000-9000", A, CIDR, NULL, "2001:db8::", 32, 8000, 9000, NULL },
  { "[::]/0:*", A, CIDR, NULL, "::", 0, ANYP, NULL },
  { "::/0", A, CIDR, NULL, "::", 0, ANYP, NULL },
  { "::1", A, CIDR, NULL, "::1", 128, ANYP, NULL },
  { "fd00:ec2::254", A, CIDR, NULL, "fd00:ec2::254", 128, ANYP, NULL },
  /* IPv4-mapped IPv6 becomes the IPv4 rule it means */
  { "::ffff:10.0.0.0/104", A, CIDR, NULL, "10.0.0.0", 8, ANYP, NULL },
  { "[::ffff:10.0.0.0]/104:443", A, CIDR, NULL, "10.0.0.0", 8, 443, 443, NULL },
  { "::ffff:0:0/96", A, CIDR, NULL, "0.0.0.0", 0, ANYP, NULL },
  { "::ffff:203.0.113.7", A, CIDR, NULL, "203.0.113.7", 32, ANYP, NULL },
  { "::ffff:cb00:7107", A, CIDR, NULL, "203.0.113.7", 32, ANYP, NULL },
  /* regex */
  { "re:^api-[0-9]+\\.example\\.com$", A, REGEX, NULL, NULL, 0, 443, 443, NULL },
  { "re:^api-[0-9]+\\.example\\.com$:8443", A, REGEX, NULL, NULL, 0, 8443, 8443, NULL },
  { "re:x$:8000-8999", A, REGEX, NULL, NULL, 0, 8000, 8999, NULL },
  { "re:x$:*", A, REGEX, NULL, NULL, 0, ANYP, NULL },
  { "re:(?:a|b)\\.example\\.com", A, REGEX, NULL, NULL, 0, 443, 443, NULL },
  { "re:api\\.example\\.com", A, REGEX, NULL, NULL, 0, 443, 443, NULL },
  { "re:[a-z]+", A, REGEX, NULL, NULL, 0, 443, 443, NULL },
  /* deny list: no explicit port means every port */
  { "api.example.com", D, EXACT, "api.example.com", NULL, 0, ANYP, NULL },
  { "api.example.com:25", D, EXACT, "api.example.com", NULL, 0, 25, 25, NULL },
  { "api.example.com:8000-8999", D, EXACT, "api.example.com", NULL, 0, 8000, 8999, NULL },
  { "https://api.example.com", D, EXACT, "api.example.com", NULL, 0, ANYP, NULL },
  { "http://api.example.com/x", D, EXACT, "api.example.com", NULL, 0, ANYP, "/x" },
  { "https://api.example.com:8443", D, EXACT, "api.example.com", NULL, 0, 8443, 8443, NULL },
  { "https://203.0.113.7", D, CIDR, NULL, "203.0.113.7", 32, ANYP, NULL },
  { "*.example.com", D, WILD1, "example.com", NULL, 0, ANYP, NULL },
  { "**.example.com", D, WILDN, "example.com", NULL, 0, ANYP, NULL },
  { "*", D, ANY, NULL, NULL, 0, ANYP, NULL },
  { "re:x", D, REGEX, NULL, NULL, 0, ANYP, NULL },
  { "re:x$:25", D, REGEX, NULL, NULL, 0, 25, 25, NULL },
  { "10.0.0.0/8", D, CIDR, NULL, "10.0.0.0", 8, ANYP, NULL },
  { "10.0.0.0/8:22", D, CIDR, NULL, "10.0.0.0", 8, 22, 22, NULL },
  { "[2001:db8::1]:22", D, CIDR, NULL, "2001:db8::1", 128, 22, 22, NULL },
};

typedef struct err_case {
  const char *text;
  size_t len;      /* 0: strlen(text) */
  const char *why; /* substring the message must hold, or NULL */
} err_case_t;

static const err_case_t err_cases[] = {
  /* empty, white space, control characters, NUL */
  { "", 0, "empty" },
  { " a.com", 0, "white space" },
  { "a.com ", 0, "white space" },
  { "\ta.com", 0, NULL },
  { "a.com\n", 0, NULL },
  { "a.com\r\n", 0, NULL },
  { " ", 0, NULL },
  { "a .com", 0, NULL },
  { "a.com :443", 0, NULL },
  { "a.com: 443", 0, NULL },
  { "https://a.com /x", 0, NULL },
  { "https://a .com", 0, NULL },
  { "https:// a.com", 0, NULL },
  { "\xc2\xa0"
    "a.com",
    0, NULL },
  { "a.com\xe3\x80\x80", 0, NULL },
  { "a.com\x0b", 0, NULL },
  { "a\x01.com", 0, "control" },
  { "a.com\x7f", 0, "control" },
  { "a\x1b[0m.com", 0, "control" },
  { "re:a\x01", 0, "control" },
  { "https://a.com/\x7f", 0, "control" },
  { "a.com\0", 6, "NUL" },
  { "a.com\0evil.com", 14, "NUL" },
  { "\0", 1, "NUL" },
  { "re:a\0b", 6, "NUL" },
  { "https://a.com\0/x", 16, "NUL" },
  /* URL scheme */
  { "ftp://a.com", 0, "scheme" },
  { "file:///etc/passwd", 0, "scheme" },
  { "ws://a.com", 0, "scheme" },
  { "javascript://a.com", 0, "scheme" },
  { "httpss://a.com", 0, "scheme" },
  { "htt://a.com", 0, "scheme" },
  { "://a.com", 0, "scheme" },
  { "1https://a.com", 0, "scheme" },
  { "ht tp://a.com", 0, NULL },
  { "https:/a.com", 0, NULL },
  { "https//a.com", 0, NULL },
  { "https:a.com", 0, NULL },
  { "//a.com", 0, NULL },
  /* URL userinfo, query, fragment */
  { "https://user@a.com", 0, "userinfo" },
  { "https://user:pw@a.com", 0, "userinfo" },
  { "https://a.com@evil.com", 0, "userinfo" },
  { "https://a.com:443@evil.com", 0, "userinfo" },
  { "https://a.com/x@y", 0, "userinfo" },
  { "https://@a.com", 0, "userinfo" },
  { "https://a.com?x=1", 0, "query" },
  { "https://a.com/?", 0, "query" },
  { "https://a.com/x?y", 0, "query" },
  { "https://a.com#f", 0, "fragment" },
  { "https://a.com/#", 0, "fragment" },
  { "https://a.com\\@evil.com", 0, NULL },
  { "https://a.com\\x", 0, NULL },
  /* URL host */
  { "https://", 0, "empty host" },
  { "https:///x", 0, "empty host" },
  { "https://:443", 0, "empty host" },
  { "https://:443/x", 0, "empty host" },
  { "https://a%2ecom", 0, "percent" },
  { "https://%61.com", 0, "percent" },
  { "https://a.com%2f", 0, "percent" },
  { "https://[2001:db8::1%25eth0]", 0, "zone" },
  { "https://[fe80::1%eth0]:443", 0, "zone" },
  { "https://[1.2.3.4]", 0, "IPv6" },
  { "https://[2001:db8::1", 0, "]" },
  { "https://[2001:db8::1]x", 0, NULL },
  { "https://[2001:db8::1]443", 0, NULL },
  { "https://[]", 0, NULL },
  { "https://[a.com]", 0, NULL },
  { "https://2001:db8::1/x", 0, NULL },
  { "https://2130706433", 0, NULL },
  { "https://0x7f.0.0.1", 0, NULL },
  { "https://127.1", 0, NULL },
  { "https://0177.0.0.1", 0, NULL },
  { "https://203.0.113.08", 0, NULL },
  { "https://foo.2.3.4", 0, NULL },
  { "https://a.*.com", 0, "*" },
  { "https://*a.com", 0, "*" },
  { "https://**", 0, "*" },
  { "https://a..com", 0, NULL },
  { "https://-a.com", 0, NULL },
  { "https://a.com:443:443", 0, NULL },
  { "https://a.com/x/../../y", 0, "dot segment" },
  /* URL port */
  { "https://a.com:", 0, "empty port" },
  { "https://a.com:/x", 0, "empty port" },
  { "https://a.com:0", 0, "range" },
  { "https://a.com:65536", 0, "range" },
  { "https://a.com:99999999999999999999", 0, "range" },
  { "https://a.com:+443", 0, NULL },
  { "https://a.com:-1", 0, NULL },
  { "https://a.com:0443", 0, "leading zero" },
  { "https://a.com:443a", 0, NULL },
  { "https://a.com:0x1bb", 0, NULL },
  { "https://a.com:*", 0, "single number" },
  { "https://a.com:1-2", 0, "single number" },
  { "https://a.com:\xef\xbc\x98\xef\xbc\x94", 0, NULL },
  /* URL path */
  { "https://a.com/../x", 0, "dot segment" },
  { "https://a.com/./x", 0, "dot segment" },
  { "https://a.com/x/..", 0, "dot segment" },
  { "https://a.com/x/.", 0, "dot segment" },
  { "https://a.com/x/../", 0, "dot segment" },
  { "https://a.com/..", 0, "dot segment" },
  { "https://a.com/%2e%2e/x", 0, "'.'" },
  { "https://a.com/%2E/x", 0, "'.'" },
  { "https://a.com/.%2e/x", 0, "'.'" },
  { "https://a.com/%2e", 0, "'.'" },
  { "https://a.com/%41", 0, "unreserved" },
  { "https://a.com/x%2fy", 0, "'/'" },
  { "https://a.com/x%2Fy", 0, "'/'" },
  { "https://a.com/x%5cy", 0, "'/'" },
  { "https://a.com/x%00y", 0, "control" },
  { "https://a.com/x%0ay", 0, "control" },
  { "https://a.com/x%zz", 0, "percent" },
  { "https://a.com/x%4", 0, "percent" },
  { "https://a.com/x%", 0, "percent" },
  { "https://a.com/x%%41", 0, "percent" },
  { "https://a.com/v1/%u002e%u002e/admin", 0, "percent" },
  { "http://a.com/%zz/x", 0, "percent" },
  { "https://a.com/x%4/y", 0, "percent" },
  { "https://a.com/x%g0", 0, "percent" },
  { "https://a.com/x%0", 0, "percent" },
  { "https://a.com:8443/a%", 0, "percent" },
  { "https://a.com/x y", 0, "white space" },
  { "https://a.com//x", 0, "empty segment" },
  { "https://a.com/x//y", 0, "empty segment" },
  { "https://a.com//", 0, "empty segment" },
  { "https://a.com/\xc3\xa9", 0, NULL },
  { "https://a.com/<x>", 0, NULL },
  { "https://a.com/x\"", 0, NULL },
  { "https://a.com/x`", 0, NULL },
  { "https://a.com/x{y}", 0, NULL },
  { "https://a.com/x|y", 0, NULL },
  { "https://a.com/x^y", 0, NULL },
  /* wildcards */
  { "*example.com", 0, "*" },
  { "a.*.example.com", 0, "*" },
  { "*.*.example.com", 0, "*" },
  { "***.x", 0, "*" },
  { "*.", 0, NULL },
  { "*..", 0, NULL },
  { "**", 0, "*" },
  { "**.", 0, NULL },
  { "*.example.*", 0, "*" },
  { "ex*ample.com", 0, "*" },
  { "*.example.com*", 0, "*" },
  { "*.*", 0, "*" },
  { "*x", 0, "*" },
  { "*.-x.com", 0, NULL },
  { "*.1.2.3", 0, NULL },
  { "*.203.0.113.7", 0, NULL },
  { "*.10.0.0.0/8", 0, NULL },
  { "*:", 0, "empty port" },
  { "*:0", 0, "range" },
  { "*/*", 0, NULL },
  { "*.[::1]", 0, NULL },
  /* names */
  { ".a.com", 0, NULL },
  { "a..com", 0, NULL },
  { "a.com..", 0, NULL },
  { ".", 0, NULL },
  { "-a.com", 0, NULL },
  { "a-.com", 0, NULL },
  { "a!b.com", 0, NULL },
  { "a$b.com", 0, NULL },
  { "a,b.com", 0, NULL },
  { "a.com@b.com", 0, NULL },
  { "a.com#x", 0, NULL },
  { "a.com?x", 0, NULL },
  { "a%2ecom", 0, "percent" },
  { "a\\b.com", 0, NULL },
  { "a.com/x", 0, "URL" },
  { "a.com/", 0, "URL" },
  { "a.com:443/x", 0, NULL },
  { "foo.2.3.4", 0, NULL },
  { "foo.0x10", 0, NULL },
  { "127.1", 0, NULL },
  { "2130706433", 0, NULL },
  { "0x7f000001", 0, NULL },
  { "0177.0.0.1", 0, NULL },
  { "01.2.3.4", 0, NULL },
  { "1.2.3.04", 0, NULL },
  { "1.2.3.4.5", 0, NULL },
  { "1.2.3", 0, NULL },
  { "256.1.1.1", 0, NULL },
  { "1.2.3.4.", 0, NULL },
  { "1.2.3.-4", 0, NULL },
  { "\xe2\x91\xa0\xe2\x91\xa1\xe2\x91\xa6.0.0.1", 0, NULL },
  { "\xef\xbc\x91\xef\xbc\x92\xef\xbc\x97.0.0.1", 0, NULL },
  { "\xff\xfe.com", 0, NULL },
  { "\xc3.com", 0, NULL },
  { "a.xn--", 0, NULL },
  { "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa.com", 0, NULL },
  { "[a.com]", 0, NULL },
  { "[a.com]:443", 0, NULL },
  { "a.com]", 0, NULL },
  { "a[.com", 0, NULL },
  /* name ports */
  { "a.com:", 0, "empty port" },
  { ":443", 0, "empty host" },
  { ":", 0, NULL },
  { "a.com:0", 0, "range" },
  { "a.com:65536", 0, "range" },
  { "a.com:70000", 0, "range" },
  { "a.com:4294967739", 0, "range" },
  { "a.com:+443", 0, NULL },
  { "a.com:-443", 0, NULL },
  { "a.com:0443", 0, "leading zero" },
  { "a.com:00", 0, "leading zero" },
  { "a.com:443-", 0, "empty port" },
  { "a.com:-", 0, "empty port" },
  { "a.com:9000-8000", 0, "reversed" },
  { "a.com:1-2-3", 0, NULL },
  { "a.com:**", 0, NULL },
  { "a.com:*-5", 0, NULL },
  { "a.com:0-5", 0, "range" },
  { "a.com:5-65536", 0, "range" },
  { "a.com:443,444", 0, NULL },
  { "a.com:0x1bb", 0, NULL },
  { "a.com:443 ", 0, "white space" },
  { "a.com:\xd9\xa4\xd9\xa4\xd9\xa3", 0, NULL },
  { "a.com:443:443", 0, NULL },
  { "a.com:80:", 0, NULL },
  /* IPv4 CIDR */
  { "10.0.0.1/8", 0, "host bits" },
  { "203.0.113.7/24", 0, "host bits" },
  { "0.0.0.1/0", 0, "host bits" },
  { "10.0.0.1/8:443", 0, "host bits" },
  { "10.0.0.0/33", 0, "range" },
  { "10.0.0.0/", 0, "prefix" },
  { "10.0.0.0/08", 0, "leading zero" },
  { "10.0.0.0/+8", 0, NULL },
  { "10.0.0.0/-1", 0, NULL },
  { "10.0.0.0/8/8", 0, NULL },
  { "10.0.0.0/8:", 0, "empty port" },
  { "10.0.0.0/8:0", 0, "range" },
  { "10.0.0.0/8:99999", 0, "range" },
  { "010.0.0.0/8", 0, "IPv4" },
  { "10.0.0/8", 0, "IPv4" },
  { "10/8", 0, "IPv4" },
  { "10.0.0.0/a", 0, NULL },
  { "1.2.3.4/32x", 0, NULL },
  { "1.2.3.4/4294967328", 0, "range" },
  { "/8", 0, NULL },
  { "0x0a.0.0.0/8", 0, NULL },
  /* IPv6 CIDR */
  { "2001:db8::1/32", 0, "host bits" },
  { "::1/0", 0, "host bits" },
  { "2001:db8::/129", 0, "range" },
  { "2001:db8::/032", 0, "leading zero" },
  { "2001:db8::/", 0, "prefix" },
  { "2001:db8::/32:443", 0, "port" },
  { "2001:db8::/32:", 0, "port" },
  { "2001:db8::1%eth0", 0, "zone" },
  { "fe80::1%25eth0", 0, "zone" },
  { "[fe80::1%eth0]", 0, "zone" },
  { "[fe80::1%eth0]:443", 0, "zone" },
  { "[2001:db8::/32]", 0, NULL },
  { "[2001:db8::]/", 0, "prefix" },
  { "[2001:db8::]/32:", 0, "empty port" },
  { "[2001:db8::]/32:0", 0, "range" },
  { "[2001:db8::]/32:*:", 0, NULL },
  { "[2001:db8::]x", 0, NULL },
  { "[2001:db8::]:", 0, "empty port" },
  { "[2001:db8::1]443", 0, NULL },
  { "[2001:db8::1]/33", 0, "host bits" },
  { "[2001:db8::]/129", 0, "range" },
  { "[1.2.3.4]", 0, "IPv6" },
  { "[1.2.3.4]:443", 0, "IPv6" },
  { "[]", 0, NULL },
  { "[", 0, NULL },
  { "[:", 0, NULL },
  { "[2001:db8::1", 0, "]" },
  { "2001:db8::1]", 0, NULL },
  { "[[2001:db8::1]]", 0, NULL },
  { "[2001:db8::1]]", 0, NULL },
  { "2001:db8:::1", 0, NULL },
  { "2001:db8::g", 0, NULL },
  { "1:2:3:4:5:6:7:8:9", 0, NULL },
  { "::ffff:10.0.0.1/104", 0, "host bits" },
  { "::ffff:1.2.3.04", 0, NULL },
  { "::ffff:1.2.3", 0, NULL },
  { "::/129", 0, "range" },
  { "a.com:80:90", 0, NULL },
  { "[::1]/128/128", 0, NULL },
  /* regex */
  { "re:", 0, "empty" },
  { "re:(", 0, "offset" },
  { "re:[a-", 0, "offset" },
  { "re:a{2,1}", 0, "offset" },
  { "re:(*UTF)a", 0, "offset" },
  { "re:(*UCP)a", 0, "offset" },
  { "re:\\C", 0, "offset" },
  { "re:(?<n>a)\\k<m>", 0, "offset" },
  { "re:a:443", 0, "'$'" },
  { "re:a:*", 0, "'$'" },
  { "re:a:1-2", 0, "'$'" },
  { "re:a$:", 0, "empty port" },
  { "re:a$:0", 0, "range" },
  { "re:a$:x", 0, NULL },
  { "re:a$:65536", 0, "range" },
  { "re:a$:443-80", 0, "reversed" },
  { "re:a b", 0, "white space" },
  { "re:\xc3\xa9", 0, "ASCII" },
  { "re: a", 0, "white space" },
  { "re:a ", 0, "white space" },
};

/* ------------------------------------------------------------------------ */

static char *copy_exact(const char *s, size_t len) {
  /* No terminating NUL: a read past len is a heap overflow. */
  char *p = malloc(len ? len : 1);
  CU_ASSERT_FATAL(p != NULL);
  if (len) memcpy(p, s, len);
  return p;
}

static bool rule_is_zero(const egress__rule_t *r) {
  static const egress__rule_t zero;
  return memcmp(r, &zero, sizeof zero) == 0;
}

static egress_status_t parse(const char *s, size_t len, egress_list_t list, egress__rule_t *rule,
                             const char **why) {
  char *buf = copy_exact(s, len);
  egress_status_t st = egress__entry_parse(buf, len, list, rule, why);
  if (st == EGRESS_OK && rule->text) {
    /* The rule must own its copy, not point into the caller's buffer. */
    CU_ASSERT(rule->text != buf);
  }
  memset(buf, 'Z', len);
  free(buf);
  return st;
}

static bool fill_ip(const char *text, egress__ip_t *ip) {
  memset(ip, 0, sizeof *ip);
  if (strchr(text, ':')) {
    ip->family = 6;
    return inet_pton(AF_INET6, text, ip->bytes) == 1;
  }
  ip->family = 4;
  return inet_pton(AF_INET, text, ip->bytes) == 1;
}

static void check_ok_case(const ok_case_t *c) {
  egress__rule_t rule;
  const char *why = NULL;
  size_t len = strlen(c->text);
  egress_status_t st = parse(c->text, len, c->list, &rule, &why);
  if (st != EGRESS_OK) {
    printf("\n  unexpected error for \"%s\": %s\n", c->text, why ? why : "(null)");
    CU_FAIL("valid entry rejected");
    return;
  }
  bool good = true;
  good &= rule.kind == c->kind;
  good &= rule.list == c->list;
  good &= rule.text && strlen(rule.text) == len && memcmp(rule.text, c->text, len) == 0;
  if (c->name)
    good &= rule.name && !strcmp(rule.name, c->name) && rule.name_len == strlen(c->name);
  else
    good &= rule.name == NULL && rule.name_len == 0;
  good &= rule.port_lo == c->lo && rule.port_hi == c->hi;
  if (c->path)
    good &= rule.path && !strcmp(rule.path, c->path);
  else
    good &= rule.path == NULL;
  good &= (rule.regex != NULL) == (c->kind == REGEX);
  /* A URL entry keeps its scheme (URL checks allow only that one). */
  egress__scheme_t scheme = !strncasecmp(c->text, "https://", 8)  ? EGRESS__SCHEME_HTTPS
                            : !strncasecmp(c->text, "http://", 7) ? EGRESS__SCHEME_HTTP
                                                                  : EGRESS__SCHEME_NONE;
  good &= rule.scheme == scheme;
  if (c->cidr) {
    egress__ip_t want;
    CU_ASSERT_FATAL(fill_ip(c->cidr, &want));
    good &= rule.cidr.addr.family == want.family;
    good &= memcmp(rule.cidr.addr.bytes, want.bytes, 16) == 0;
    good &= rule.cidr.len == c->plen;
  }
  if (!good) {
    printf("\n  wrong rule for \"%s\": kind=%d name=%s lo=%u hi=%u path=%s len=%u fam=%u scheme=%d\n",
           c->text, (int)rule.kind, rule.name ? rule.name : "(null)", rule.port_lo, rule.port_hi,
           rule.path ? rule.path : "(null)", rule.cidr.len, rule.cidr.addr.family, (int)rule.scheme);
  }
  CU_ASSERT(good);
  egress__rule_clear(&rule);
  CU_ASSERT(rule_is_zero(&rule));
}

static void test_accepts_every_form(void) {
  size_t n = sizeof ok_cases / sizeof ok_cases[0];
  CU_ASSERT(n >= 90);
  for (size_t i = 0; i < n; i++) check_ok_case(&ok_cases[i]);
}

static void test_rejects_hostile_entries(void) {
  size_t n = sizeof err_cases / sizeof err_cases[0];
  CU_ASSERT(n >= 100);
  for (size_t i = 0; i < n; i++) {
    const err_case_t *c = &err_cases[i];
    size_t len = c->len ? c->len : strlen(c->text);
    for (int l = 0; l < 2; l++) {
      egress__rule_t rule;
      memset(&rule, 0x5a, sizeof rule);
      const char *why = NULL;
      egress_status_t st = parse(c->text, len, (egress_list_t)l, &rule, &why);
      if (st != EGRESS_EPOLICY) {
        printf("\n  accepted hostile entry #%zu \"%.*s\" (status %d)\n", i, (int)len, c->text, (int)st);
        CU_FAIL("hostile entry accepted");
        if (st == EGRESS_OK) egress__rule_clear(&rule);
        continue;
      }
      CU_ASSERT(rule_is_zero(&rule));
      CU_ASSERT(why != NULL && why[0] != '\0');
      if (c->why && why && !strstr(why, c->why)) {
        printf("\n  entry #%zu \"%.*s\": message \"%s\" lacks \"%s\"\n", i, (int)len, c->text, why, c->why);
        CU_FAIL("error message does not name the problem");
      }
    }
  }
}

static void test_never_reads_past_len(void) {
  /* The text after len must not take part: each prefix is parsed as what it
   * is on its own. */
  const char *full = "api.example.com:443";
  egress__rule_t rule;
  const char *why;
  CU_ASSERT_EQUAL(egress__entry_parse(full, 15, EGRESS_LIST_ALLOW, &rule, &why), EGRESS_OK);
  CU_ASSERT_STRING_EQUAL(rule.text, "api.example.com");
  CU_ASSERT_EQUAL(rule.port_lo, 443);
  egress__rule_clear(&rule);
  CU_ASSERT_EQUAL(egress__entry_parse(full, 19, EGRESS_LIST_DENY, &rule, &why), EGRESS_OK);
  CU_ASSERT_EQUAL(rule.port_lo, 443);
  CU_ASSERT_EQUAL(rule.port_hi, 443);
  egress__rule_clear(&rule);
  CU_ASSERT_EQUAL(egress__entry_parse("https://a.com/x", 13, EGRESS_LIST_ALLOW, &rule, &why), EGRESS_OK);
  CU_ASSERT_PTR_NULL(rule.path);
  egress__rule_clear(&rule);
  CU_ASSERT_EQUAL(egress__entry_parse("10.0.0.0/8", 8, EGRESS_LIST_ALLOW, &rule, &why), EGRESS_OK);
  CU_ASSERT_EQUAL(rule.cidr.len, 32);
  egress__rule_clear(&rule);

  /* Every prefix of a long valid entry, from exact-size buffers. */
  const char *longs[] = { "https://api.example.com:8443/v1/%7Bx%7D", "[2001:db8::]/32:8000-9000",
                          "re:^api-[0-9]+\\.example\\.com$:8443", "**.example.com:1-65535",
                          "::ffff:10.0.0.0/104" };
  for (size_t k = 0; k < sizeof longs / sizeof longs[0]; k++) {
    for (size_t l = 0; l <= strlen(longs[k]); l++) {
      egress_status_t st = parse(longs[k], l, EGRESS_LIST_ALLOW, &rule, &why);
      if (st == EGRESS_OK) {
        CU_ASSERT(strlen(rule.text) == l);
        egress__rule_clear(&rule);
      } else {
        CU_ASSERT(rule_is_zero(&rule));
      }
    }
  }
}

static void test_bad_arguments(void) {
  egress__rule_t rule;
  const char *why = NULL;
  CU_ASSERT_EQUAL(egress__entry_parse(NULL, 3, EGRESS_LIST_ALLOW, &rule, &why), EGRESS_EINVAL);
  CU_ASSERT(rule_is_zero(&rule));
  CU_ASSERT_NOT_EQUAL(egress__entry_parse("a.com", 5, EGRESS_LIST_ALLOW, NULL, &why), EGRESS_OK);
  CU_ASSERT_NOT_EQUAL(egress__entry_parse("a.com", 5, (egress_list_t)7, &rule, &why), EGRESS_OK);
  CU_ASSERT(rule_is_zero(&rule));
  CU_ASSERT_EQUAL(egress__entry_parse(NULL, 0, EGRESS_LIST_ALLOW, &rule, &why), EGRESS_EPOLICY);
  /* why may be NULL */
  CU_ASSERT_EQUAL(egress__entry_parse("a .com", 6, EGRESS_LIST_ALLOW, &rule, NULL), EGRESS_EPOLICY);
  CU_ASSERT_EQUAL(egress__entry_parse("a.com", 5, EGRESS_LIST_ALLOW, &rule, NULL), EGRESS_OK);
  egress__rule_clear(&rule);
  egress__rule_clear(NULL);
  egress__rule_clear(&rule); /* twice is harmless */

  /* A 253-octet name is fine, 254 is not; over-long entries are errors. */
  char big[5000];
  memset(big, 'a', sizeof big);
  for (int i = 63; i < 253; i += 64) big[i] = '.';
  CU_ASSERT_EQUAL(parse(big, 253, EGRESS_LIST_ALLOW, &rule, &why), EGRESS_OK);
  CU_ASSERT_EQUAL(rule.name_len, 253);
  egress__rule_clear(&rule);
  CU_ASSERT_EQUAL(parse(big, 254, EGRESS_LIST_ALLOW, &rule, &why), EGRESS_EPOLICY);
  memcpy(big, "re:", 3);
  CU_ASSERT_EQUAL(parse(big, sizeof big, EGRESS_LIST_ALLOW, &rule, &why), EGRESS_EPOLICY);
  CU_ASSERT(rule_is_zero(&rule));
}

/* ------------------------------------------------------------------------ */
/* Regex matching.                                                           */
/* ------------------------------------------------------------------------ */

static bool rx(const char *entry, egress_list_t list, const char *name) {
  egress__rule_t rule;
  const char *why = NULL;
  egress_status_t st = egress__entry_parse(entry, strlen(entry), list, &rule, &why);
  CU_ASSERT_EQUAL_FATAL(st, EGRESS_OK);
  CU_ASSERT_EQUAL_FATAL(rule.kind, EGRESS__RULE_REGEX);
  bool m = egress__regex_match(&rule, name, strlen(name));
  egress__rule_clear(&rule);
  return m;
}

static void test_regex_anchoring(void) {
  const char *e = "re:api\\.example\\.com";
  CU_ASSERT(rx(e, A, "api.example.com"));
  CU_ASSERT(!rx(e, A, "xapi.example.com"));
  CU_ASSERT(!rx(e, A, "api.example.com.evil.com"));
  CU_ASSERT(!rx(e, A, "api.example.co"));
  CU_ASSERT(!rx(e, A, "api.example.com\n"));
  CU_ASSERT(!rx(e, A, ""));
  CU_ASSERT(!rx(e, D, "xapi.example.com"));
  CU_ASSERT(rx(e, D, "api.example.com"));
  /* "$" never matches before a trailing newline */
  CU_ASSERT(!rx("re:^api\\.example\\.com$", A, "api.example.com\n"));
  /* alternation stays anchored at both ends */
  CU_ASSERT(rx("re:a|b\\.example\\.com", A, "a"));
  CU_ASSERT(!rx("re:a|b\\.example\\.com", A, "a.evil.com"));
  CU_ASSERT(!rx("re:a|b\\.example\\.com", A, "xb.example.com"));
  CU_ASSERT(rx("re:a|ab", A, "ab"));
  /* '.' is any character: the author's business, but it must stay inside
   * the whole-name anchor */
  CU_ASSERT(rx("re:api.example.com", A, "apixexample.com"));
  CU_ASSERT(!rx("re:api.example.com", A, "apixexample.com.evil"));
  /* Unanchored-looking patterns are anchored too */
  CU_ASSERT(!rx("re:[0-9]+", A, "a1"));
  CU_ASSERT(rx("re:[0-9]+", A, "12"));
  CU_ASSERT(rx("re:.*\\.example\\.com", A, "a.b.example.com"));
  CU_ASSERT(!rx("re:.*\\.example\\.com", A, "a.example.com.evil.com"));
  /* the documented example */
  const char *doc = "re:^api-[0-9]+\\.example\\.com$:8443";
  CU_ASSERT(rx(doc, A, "api-1.example.com"));
  CU_ASSERT(rx(doc, A, "api-42.example.com"));
  CU_ASSERT(!rx(doc, A, "api-.example.com"));
  CU_ASSERT(!rx(doc, A, "api-1.example.com.evil.com"));
  CU_ASSERT(!rx(doc, A, "evil.api-1.example.com"));
}

static void test_regex_caseless_and_bytes(void) {
  CU_ASSERT(rx("re:API\\.Example\\.COM", A, "api.example.com"));
  CU_ASSERT(rx("re:api\\.example\\.com", A, "API.EXAMPLE.COM"));
  CU_ASSERT(rx("re:[A-Z]+", A, "abc"));
  /* an explicit length: text after len does not count, NUL inside does */
  egress__rule_t rule;
  const char *why;
  CU_ASSERT_EQUAL_FATAL(egress__entry_parse("re:abc", 6, A, &rule, &why), EGRESS_OK);
  CU_ASSERT(egress__regex_match(&rule, "abcdef", 3));
  CU_ASSERT(!egress__regex_match(&rule, "abc\0", 4));
  CU_ASSERT(!egress__regex_match(&rule, "ab", 2));
  /* a non-regex rule or no rule never matches in the allowlist */
  egress__rule_clear(&rule);
  CU_ASSERT(!egress__regex_match(NULL, "abc", 3));
  CU_ASSERT_EQUAL_FATAL(egress__entry_parse("abc", 3, A, &rule, &why), EGRESS_OK);
  CU_ASSERT(!egress__regex_match(&rule, "abc", 3));
  egress__rule_clear(&rule);
  /* A byte above 0x7f in the name is just a byte (no UTF-8 mode whose
   * "invalid UTF-8" error would read as a deny-list match). */
  CU_ASSERT(rx("re:a.c", A,
               "a\xc3"
               "c"));
  CU_ASSERT(!rx("re:a.*", D, "b\xff"));
  CU_ASSERT(!rx("re:b", D, "\xff"));
}

static double now_s(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static void test_regex_limit_fails_closed(void) {
  const char *cat[] = { "re:^(a+)+$",   "re:(a|a)+",    "re:(a|aa)+$",
                        "re:(.*a){20}", "re:((a+)+)+b", "re:(a*)*(b*)*x" };
  char subject[255];
  memset(subject, 'a', sizeof subject);
  subject[253] = '!';
  subject[254] = '\0';
  double t0 = now_s();
  int hits = 0;
  for (size_t i = 0; i < sizeof cat / sizeof cat[0]; i++) {
    for (size_t n = 24; n <= 254; n += 23) {
      /* subject: n-1 'a' followed by '!' */
      const char *s = subject + 254 - n;
      bool allow = rx(cat[i], A, s);
      bool deny = rx(cat[i], D, s);
      /* The name never matches: in the allowlist the answer is always "no".
       * In the deny list a limit hit must read as "match" (fail closed). */
      CU_ASSERT(!allow);
      if (deny) hits++;
    }
  }
  double dt = now_s() - t0;
  printf("\n  catastrophic patterns: %d limit hits, %.3f s\n", hits, dt);
  /* The match limit bounds the work, not the wall clock of a shared machine:
   * under valgrind (which the test setup runs with the JIT off) every
   * instruction costs tens of times more, so the bound scales with it. */
  CU_ASSERT(dt < (getenv("EGRESS_PCRE2_NO_JIT") ? 60.0 : 5.0));
  /* The canonical example must actually exercise the limit path. */
  CU_ASSERT(rx("re:^(a+)+$", D, "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa!"));
  CU_ASSERT(!rx("re:^(a+)+$", A, "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa!"));
  /* and the same pattern still answers normally where it can */
  CU_ASSERT(rx("re:^(a+)+$", A, "aaaa"));
  CU_ASSERT(!rx("re:^(a+)+$", A, "b"));
  CU_ASSERT(!rx("re:^(a+)+$", D, "b"));
  /* A pattern cannot raise its own limit above the library's. */
  CU_ASSERT(rx("re:(*LIMIT_MATCH=100000000)(*LIMIT_DEPTH=100000000)^(a+)+$", D,
               "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa!"));
  CU_ASSERT(now_s() - t0 < 10.0);
}

/* ------------------------------------------------------------------------ */
/* Allocation failure and random mutations.                                  */
/* ------------------------------------------------------------------------ */

static void test_alloc_failure(void) {
  const char *entries[] = { "https://**.example.com:8443/v1/x",
                            "re:^api-[0-9]+\\.example\\.com$",
                            "bücher.de:443",
                            "[2001:db8::]/32:443",
                            "*",
                            "10.0.0.0/8" };
  /* Set the regex contexts up first so the loop covers the per-entry path;
   * the setup itself is covered by the first iterations below too. */
  for (size_t k = 0; k < sizeof entries / sizeof entries[0]; k++) {
    bool finished = false;
    for (long n = 1; n < 200 && !finished; n++) {
      egress__rule_t rule;
      const char *why = NULL;
      egress__alloc_fail_at(n);
      egress_status_t st = egress__entry_parse(entries[k], strlen(entries[k]), A, &rule, &why);
      long used = egress__alloc_count();
      egress__alloc_fail_at(0);
      if (st == EGRESS_OK) {
        CU_ASSERT_PTR_NOT_NULL(rule.text);
        egress__rule_clear(&rule);
        if (used < n) finished = true;
      } else {
        if (st != EGRESS_ENOMEM)
          printf("\n  \"%s\" failing allocation %ld: status %d (%s)\n", entries[k], n, (int)st,
                 why ? why : "(null)");
        CU_ASSERT_EQUAL(st, EGRESS_ENOMEM);
        CU_ASSERT(rule_is_zero(&rule));
        CU_ASSERT_PTR_NOT_NULL(why);
      }
    }
    CU_ASSERT(finished);
  }
  /* A regex match that cannot allocate fails closed in both lists. */
  egress__rule_t rule;
  const char *why;
  for (int l = 0; l < 2; l++) {
    CU_ASSERT_EQUAL_FATAL(egress__entry_parse("re:abc", 6, (egress_list_t)l, &rule, &why), EGRESS_OK);
    egress__alloc_fail_at(1);
    bool m1 = egress__regex_match(&rule, "abc", 3);
    bool m2 = egress__regex_match(&rule, "xyz", 3);
    egress__alloc_fail_at(0);
    CU_ASSERT_EQUAL(m1, l == 1);
    (void)m2; /* only the first call is guaranteed to hit the injected failure */
    CU_ASSERT(egress__regex_match(&rule, "abc", 3));
    CU_ASSERT(!egress__regex_match(&rule, "xyz", 3));
    egress__rule_clear(&rule);
  }
}

static uint64_t rng_state = 0x9e3779b97f4a7c15ull;

static uint32_t rnd(void) {
  rng_state ^= rng_state << 13;
  rng_state ^= rng_state >> 7;
  rng_state ^= rng_state << 17;
  return (uint32_t)(rng_state >> 11);
}

static bool host_bits_clear(const egress__prefix_t *p) {
  unsigned bits = p->addr.family == 4 ? 32 : 128;
  if (p->addr.family != 4 && p->addr.family != 6) return false;
  if (p->len > bits) return false;
  for (unsigned i = p->len; i < 128; i++)
    if (p->addr.bytes[i / 8] & (0x80u >> (i % 8))) return false;
  return true;
}

static void check_invariants(const egress__rule_t *r, const char *text, size_t len, egress_list_t list) {
  bool good = true;
  good &= r->port_lo >= 1 && r->port_lo <= r->port_hi;
  good &= r->list == list;
  good &= r->text && strlen(r->text) == len && memcmp(r->text, text, len) == 0;
  good &= (r->regex != NULL) == (r->kind == EGRESS__RULE_REGEX);
  if (r->kind == EGRESS__RULE_CIDR) good &= host_bits_clear(&r->cidr);
  if (r->kind == EGRESS__RULE_EXACT || r->kind == EGRESS__RULE_WILD1 || r->kind == EGRESS__RULE_WILDN) {
    good &= r->name && strlen(r->name) == r->name_len && r->name_len >= 1 && r->name_len <= EGRESS__NAME_MAX;
    for (size_t i = 0; r->name && i < r->name_len; i++) {
      char ch = r->name[i];
      good &= (ch >= 'a' && ch <= 'z') || (ch >= '0' && ch <= '9') || ch == '-' || ch == '_' || ch == '.';
    }
  } else {
    good &= r->name == NULL;
  }
  for (size_t i = 0; r->path && r->path[i]; i++) {
    unsigned char ch = (unsigned char)r->path[i];
    good &= ch > 0x20 && ch < 0x7f && ch != '\\' && ch != '?' && ch != '#' && ch != '@';
  }
  if (r->path) {
    size_t pl = strlen(r->path);
    good &= r->path[0] == '/' && pl > 1 && r->path[pl - 1] != '/' && !strstr(r->path, "//") &&
            !strstr(r->path, "/./") && !strstr(r->path, "/../");
  }
  for (size_t i = 0; i < len; i++) {
    unsigned char ch = (unsigned char)text[i];
    good &= ch >= 0x20 && ch != 0x7f;
  }
  good &= text[0] != ' ' && text[len - 1] != ' ';
  if (!good) printf("\n  invariant broken by \"%.*s\"\n", (int)len, text);
  CU_ASSERT(good);
}

static void test_random_mutations(void) {
  static const char *seeds[] = { "https://api.example.com:8443/v1/x",
                                 "http://[2001:db8::1]:8080/p",
                                 "api.example.com:8000-8999",
                                 "*.example.com:8443",
                                 "**.example.com",
                                 "*:*",
                                 "203.0.113.0/24:443",
                                 "10.0.0.0/8:5432-5440",
                                 "[2001:db8::]/32:443",
                                 "2001:db8::/32",
                                 "::ffff:10.0.0.0/104",
                                 "re:^api-[0-9]+\\.example\\.com$:8443",
                                 "https://*.example.com/a/b",
                                 "bücher.de",
                                 "0.0.0.0/0",
                                 "https://203.0.113.7/x" };
  static const char alphabet[] = " :/[]*.-%@?#0123456789abcfxyzAZ\\$^()+|{}re_~\t\x01\x7f\xc3\xa9\xff";
  size_t nseeds = sizeof seeds / sizeof seeds[0];
  unsigned accepted = 0, rejected = 0;
  char buf[256];
  for (unsigned iter = 0; iter < 60000; iter++) {
    const char *seed = seeds[rnd() % nseeds];
    size_t len = strlen(seed);
    memcpy(buf, seed, len);
    unsigned nmut = 1 + rnd() % 4;
    for (unsigned m = 0; m < nmut; m++) {
      unsigned op = rnd() % 6;
      size_t pos = len ? rnd() % (len + 1) : 0;
      char ch = alphabet[rnd() % (sizeof alphabet - 1)];
      if (op == 0 && len < sizeof buf - 1) { /* insert */
        memmove(buf + pos + 1, buf + pos, len - pos);
        buf[pos] = ch;
        len++;
      } else if (op == 1 && pos < len) { /* delete */
        memmove(buf + pos, buf + pos + 1, len - pos - 1);
        len--;
      } else if (op == 2 && pos < len) { /* replace */
        buf[pos] = ch;
      } else if (op == 3 && pos < len) { /* digit tweak: ports and prefixes */
        buf[pos] = (char)('0' + rnd() % 10);
      } else if (op == 4) { /* truncate */
        len = pos;
      } else if (op == 5 && len > 0 && len * 2 < sizeof buf) { /* duplicate a slice */
        char slice[256];
        size_t a = rnd() % len, b = a + rnd() % (len - a);
        memcpy(slice, buf + a, b - a);
        memmove(buf + pos + (b - a), buf + pos, len - pos);
        memcpy(buf + pos, slice, b - a);
        len += b - a;
      }
      if (rnd() % 64 == 0 && len < sizeof buf - 1) { /* an occasional NUL */
        pos = rnd() % (len + 1);
        memmove(buf + pos + 1, buf + pos, len - pos);
        buf[pos] = '\0';
        len++;
      }
    }
    egress_list_t list = (egress_list_t)(rnd() % 2);
    egress__rule_t rule;
    const char *why = NULL;
    egress_status_t st = parse(buf, len, list, &rule, &why);
    if (st == EGRESS_OK) {
      accepted++;
      check_invariants(&rule, buf, len, list);
      if (rule.kind == EGRESS__RULE_REGEX) (void)egress__regex_match(&rule, buf, len);
      egress__rule_clear(&rule);
    } else {
      rejected++;
      CU_ASSERT_EQUAL(st, EGRESS_EPOLICY);
      CU_ASSERT(why != NULL);
      CU_ASSERT(rule_is_zero(&rule));
    }
  }
  printf("\n  mutations: %u accepted, %u rejected\n", accepted, rejected);
  CU_ASSERT(accepted > 1000 && rejected > 1000);
}

/* Structured fuzz of ports and prefix lengths: every accepted value is in
 * range, with one spelling. */
static void test_numbers(void) {
  char buf[64];
  for (long p = -5; p <= 70000; p += (p < 70 ? 1 : (p < 65530 ? 997 : 1))) {
    int n = snprintf(buf, sizeof buf, "a.com:%ld", p);
    egress__rule_t rule;
    const char *why;
    egress_status_t st = parse(buf, (size_t)n, A, &rule, &why);
    if (p >= 1 && p <= 65535) {
      CU_ASSERT_EQUAL(st, EGRESS_OK);
      CU_ASSERT_EQUAL(rule.port_lo, p);
      CU_ASSERT_EQUAL(rule.port_hi, p);
      egress__rule_clear(&rule);
    } else {
      CU_ASSERT_EQUAL(st, EGRESS_EPOLICY);
    }
  }
  for (int l = -1; l <= 140; l++) {
    int n = snprintf(buf, sizeof buf, "0.0.0.0/%d", l);
    egress__rule_t rule;
    const char *why;
    egress_status_t st = parse(buf, (size_t)n, A, &rule, &why);
    CU_ASSERT_EQUAL(st, (l >= 0 && l <= 32) ? EGRESS_OK : EGRESS_EPOLICY);
    if (st == EGRESS_OK) {
      CU_ASSERT_EQUAL(rule.cidr.len, l);
      egress__rule_clear(&rule);
    }
    n = snprintf(buf, sizeof buf, "::/%d", l);
    st = parse(buf, (size_t)n, A, &rule, &why);
    CU_ASSERT_EQUAL(st, (l >= 0 && l <= 128) ? EGRESS_OK : EGRESS_EPOLICY);
    if (st == EGRESS_OK) {
      CU_ASSERT_EQUAL(rule.cidr.len, l);
      egress__rule_clear(&rule);
    }
  }
  /* every prefix length with the first host bit set is refused */
  for (int l = 0; l < 32; l++) {
    uint32_t a = 0x80000000u >> l;
    int n = snprintf(buf, sizeof buf, "%u.%u.%u.%u/%d", a >> 24, (a >> 16) & 255, (a >> 8) & 255, a & 255, l);
    egress__rule_t rule;
    const char *why = NULL;
    CU_ASSERT_EQUAL(parse(buf, (size_t)n, A, &rule, &why), EGRESS_EPOLICY);
    CU_ASSERT(why && strstr(why, "host bits"));
  }
}

static CU_TestInfo entry_tests[] = {
  { "accepts every form with every field", test_accepts_every_form },
  { "rejects hostile entries", test_rejects_hostile_entries },
  { "never reads past len", test_never_reads_past_len },
  { "bad arguments and sizes", test_bad_arguments },
  { "ports and prefix lengths", test_numbers },
  CU_TEST_INFO_NULL,
};

static CU_TestInfo regex_tests[] = {
  { "anchored at both ends", test_regex_anchoring },
  { "caseless, explicit length", test_regex_caseless_and_bytes },
  { "match limit fails closed", test_regex_limit_fails_closed },
  CU_TEST_INFO_NULL,
};

static CU_TestInfo robust_tests[] = {
  { "allocation failure", test_alloc_failure },
  { "random mutations", test_random_mutations },
  CU_TEST_INFO_NULL,
};

int main(int argc, char **argv) {
  static const egress_test_suite_t suites[] = {
    { "entry", NULL, NULL, entry_tests },
    { "regex", NULL, NULL, regex_tests },
    { "robustness", NULL, NULL, robust_tests },
    { NULL, NULL, NULL, NULL },
  };
  return egress_test_main(argc, argv, suites);
}
