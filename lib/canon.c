/*
 * Host canonicalization: docs/check.md#canonical-hosts.
 *
 * A host reaches the policy in exactly one of three canonical shapes: a
 * lower-case ASCII name (A-labels for IDNs, no trailing dot), a canonical
 * dotted quad, or RFC 5952 IPv6 text.  Anything that another parser on the
 * path (inet_aton, the WHATWG URL host parser, curl, a resolver) could read
 * differently is refused as invalid_host rather than guessed at.
 *
 * Decisions taken here where the design leaves a choice:
 *  - "127.0.0.1." (a canonical dotted quad plus one trailing dot) is the
 *    IPv4 address 127.0.0.1; every other numeric spelling is invalid.
 *  - A name whose last label is all digits, or "0x"/"0X" followed by hex
 *    digits (the URL standard's "ends in a number"), is an IPv4 attempt: it
 *    is valid only as a canonical dotted quad.
 *  - Labels may not start or end with '-' (RFC 952/1123; libidn2 refuses
 *    the same for IDN names).  "--" in the third and fourth position is
 *    allowed in ASCII names other than "xn--" because real names use it
 *    (r3---sn-xxxx.googlevideo.com); "xn--" labels must be valid A-labels that
 *    survive an A-label -> U-label -> A-label round trip.
 *  - Non-ASCII hosts go through UTS#46 non-transitional processing with NFC
 *    (libidn2).  If that refuses the name, transitional processing is tried,
 *    as curl does before it resolves, so the name checked is the
 *    name curl would look up (e.g. a ZERO WIDTH JOINER outside its allowed
 *    context is dropped).  Characters UTS#46 ignores (U+200B, U+00AD,
 *    U+FEFF) are dropped and full-width/ideographic dots become '.', as in
 *    every browser.  A non-ASCII host whose result is an IP literal or ends
 *    in a number is invalid, never a name or an address.
 *
 * No heap allocation apart from libidn2's own results (freed with
 * idn2_free); no global state, so it is reentrant and thread-safe.
 */
#include "egress_private.h"

#include <idn2.h>
#include <string.h>

/* Non-ASCII input may be longer than its A-label form (UTF-8 needs up to
 * four bytes a character and UTS#46 drops ignorable characters), but
 * nothing legitimate comes near this. */
#define CANON_INPUT_MAX 1024

#define IDNA_FLAGS_STRICT   (IDN2_NFC_INPUT | IDN2_NONTRANSITIONAL)
#define IDNA_FLAGS_FALLBACK (IDN2_NFC_INPUT | IDN2_TRANSITIONAL)

static egress_status_t invalid(const char **why, const char *msg) {
  *why = msg;
  return EGRESS_EINVAL;
}

static char lower(char c) { return (c >= 'A' && c <= 'Z') ? (char)(c - 'A' + 'a') : c; }

static bool is_digit(char c) { return c >= '0' && c <= '9'; }

static bool is_hex(char c) { return is_digit(c) || (c >= 'a' && c <= 'f') || (c >= 'A' && c <= 'F'); }

/* Strict UTF-8 (egress__utf8_seq: no overlong forms, so no 0xC0 0xAE for
 * '.'; no UTF-16 surrogates; nothing above U+10FFFF), and no C1 control
 * characters: U+0080..U+009F, which UTF-8 writes as C2 80..C2 9F. */
static const char *check_utf8(const unsigned char *s, size_t len) {
  size_t i = 0, bad;
  while (i < len) {
    size_t n = egress__utf8_seq(s + i, len - i, &bad);
    if (!n) return "host is not valid UTF-8";
    if (n == 2 && s[i] == 0xc2 && s[i + 1] <= 0x9f) return "host contains a control character";
    i += n;
  }
  return NULL;
}

/* The URL standard's "ends in a number": the last label is all ASCII
 * digits, or "0x"/"0X" followed by zero or more hex digits. */
static bool label_is_numeric(const char *l, size_t n) {
  if (n == 0) return false;
  if (n >= 2 && l[0] == '0' && (l[1] == 'x' || l[1] == 'X')) {
    for (size_t i = 2; i < n; i++)
      if (!is_hex(l[i])) return false;
    return true;
  }
  for (size_t i = 0; i < n; i++)
    if (!is_digit(l[i])) return false;
  return true;
}

/* An "xn--" label is accepted only if it decodes and encodes back to the
 * very same text, which rejects bad punycode, labels that decode to ASCII
 * or to characters UTS#46 would map (an A-label hiding "127" or a dot), and
 * labels that are not in their canonical (NFC, lower-case) form. */
static egress_status_t check_alabel(const char *label, size_t n, const char **why) {
  char buf[EGRESS__LABEL_MAX + 1];
  char *ulabel = NULL, *again = NULL;
  egress_status_t st = EGRESS_EINVAL;

  *why = "invalid A-label (xn--)";
  memcpy(buf, label, n);
  buf[n] = '\0';
  int rc = idn2_to_unicode_8z8z(buf, &ulabel, 0);
  if (rc == IDN2_MALLOC) goto nomem;
  if (rc != IDN2_OK || !ulabel || ulabel[0] == '\0') goto done;
  rc = idn2_to_ascii_8z(ulabel, &again, IDNA_FLAGS_STRICT);
  if (rc == IDN2_MALLOC) goto nomem;
  if (rc != IDN2_OK || !again || strcmp(again, buf) != 0) goto done;
  st = EGRESS_OK;
  *why = NULL;
  goto done;
nomem:
  st = EGRESS_ENOMEM;
  *why = "out of memory";
done:
  idn2_free(ulabel);
  idn2_free(again);
  return st;
}

/* The ASCII rules of step 2 on @p s (@p n bytes; lower-cased here).
 * @p from_idna: the text is the result of IDNA on a non-ASCII host.
 * @p names_only: an IP literal is not acceptable. */
/* Host-name bytes mapped to their lower-case form; 0 for every byte a
 * host name may not hold.  One table look-up per byte on the hot path. */
static const unsigned char host_char[256] = {
  ['-'] = '-', ['.'] = '.', ['_'] = '_', ['0'] = '0', ['1'] = '1', ['2'] = '2', ['3'] = '3', ['4'] = '4',
  ['5'] = '5', ['6'] = '6', ['7'] = '7', ['8'] = '8', ['9'] = '9', ['a'] = 'a', ['b'] = 'b', ['c'] = 'c',
  ['d'] = 'd', ['e'] = 'e', ['f'] = 'f', ['g'] = 'g', ['h'] = 'h', ['i'] = 'i', ['j'] = 'j', ['k'] = 'k',
  ['l'] = 'l', ['m'] = 'm', ['n'] = 'n', ['o'] = 'o', ['p'] = 'p', ['q'] = 'q', ['r'] = 'r', ['s'] = 's',
  ['t'] = 't', ['u'] = 'u', ['v'] = 'v', ['w'] = 'w', ['x'] = 'x', ['y'] = 'y', ['z'] = 'z', ['A'] = 'a',
  ['B'] = 'b', ['C'] = 'c', ['D'] = 'd', ['E'] = 'e', ['F'] = 'f', ['G'] = 'g', ['H'] = 'h', ['I'] = 'i',
  ['J'] = 'j', ['K'] = 'k', ['L'] = 'l', ['M'] = 'm', ['N'] = 'n', ['O'] = 'o', ['P'] = 'p', ['Q'] = 'q',
  ['R'] = 'r', ['S'] = 's', ['T'] = 't', ['U'] = 'u', ['V'] = 'v', ['W'] = 'w', ['X'] = 'x', ['Y'] = 'y',
  ['Z'] = 'z',
};

static egress_status_t canon_ascii(const char *s, size_t n, bool from_idna, bool names_only,
                                   egress__host_t *out, const char **why) {
  bool trailing_dot = false;

  if (n > 0 && s[n - 1] == '.') {
    n--;
    trailing_dot = true;
  }
  if (n == 0) return invalid(why, trailing_dot ? "host is only a dot" : "host is empty");
  if (s[n - 1] == '.') return invalid(why, "host ends with more than one dot");
  if (n > EGRESS__NAME_MAX) return invalid(why, "host name is longer than 253 octets");

  /* One pass: lower-case, validate, check each label as it ends, and note
   * whether any label is an A-label (only then is the costly check run). */
  size_t label_start = 0;
  bool any_alabel = false;
  for (size_t i = 0; i <= n; i++) {
    char c = '.';
    if (i < n) {
      c = (char)host_char[(unsigned char)s[i]];
      if (c == 0)
        return invalid(why, from_idna ? "internationalized host maps to a character not "
                                        "allowed in a host name"
                                      : "host name may hold only letters, digits, '-', '_' "
                                        "and '.'");
      out->text[i] = c;
      if (c != '.') continue;
    }
    size_t llen = i - label_start;
    if (llen == 0) return invalid(why, "host has an empty label");
    if (llen > EGRESS__LABEL_MAX) return invalid(why, "label is longer than 63 octets");
    if (out->text[label_start] == '-' || out->text[i - 1] == '-')
      return invalid(why, "label starts or ends with '-'");
    if (llen >= 4 && !memcmp(out->text + label_start, "xn--", 4)) any_alabel = true;
    if (i < n) label_start = i + 1;
  }
  out->text[n] = '\0';
  out->len = n;

  size_t last = label_start; /* the last label */
  if (label_is_numeric(out->text + last, n - last)) {
    egress__ip_t ip;
    bool quad = egress__ip4_parse(out->text, n, &ip);
    if (from_idna)
      return invalid(why,
                     "internationalized host maps to an IP address or a "
                     "numeric name");
    if (!quad)
      return invalid(why,
                     "numeric host is not a canonical dotted-quad IPv4 "
                     "address (or a name ends in a numeric label)");
    if (names_only) return invalid(why, "an IP address is not a host name");
    out->kind = EGRESS__HOST_IPV4;
    out->ip = ip;
    return EGRESS_OK;
  }

  for (size_t i = 0; any_alabel && i < n;) {
    size_t j = i;
    while (j < n && out->text[j] != '.') j++;
    if (j - i >= 4 && memcmp(out->text + i, "xn--", 4) == 0) {
      egress_status_t st = check_alabel(out->text + i, j - i, why);
      /* Under the transitional fallback libidn2 can emit A-labels (emoji,
       * U+00BD) that IDNA2008 refuses; name the input's problem, not ours. */
      if (st == EGRESS_EINVAL && from_idna) *why = "internationalized host name is not valid IDNA (UTS#46)";
      if (st != EGRESS_OK) return st;
    }
    i = j + 1;
  }
  out->kind = EGRESS__HOST_NAME;
  return EGRESS_OK;
}

static egress_status_t canon_idna(const char *in, size_t len, bool names_only, egress__host_t *out,
                                  const char **why) {
  char buf[CANON_INPUT_MAX + 1];
  char *ace = NULL;
  egress_status_t st;

  const char *bad = check_utf8((const unsigned char *)in, len);
  if (bad) return invalid(why, bad);
  /* idn2 needs a NUL-terminated string; the caller has already refused
   * NUL bytes, so this copy is the whole host. */
  for (size_t i = 0; i < len; i++) buf[i] = lower(in[i]);
  buf[len] = '\0';
  int rc = idn2_to_ascii_8z(buf, &ace, IDNA_FLAGS_STRICT);
  if (rc != IDN2_OK && rc != IDN2_MALLOC) {
    idn2_free(ace);
    ace = NULL;
    rc = idn2_to_ascii_8z(buf, &ace, IDNA_FLAGS_FALLBACK);
  }
  if (rc == IDN2_MALLOC) {
    *why = "out of memory";
    st = EGRESS_ENOMEM;
    goto done;
  }
  if (rc != IDN2_OK || !ace) {
    st = invalid(why, "internationalized host name is not valid IDNA (UTS#46)");
    goto done;
  }
  size_t alen = strlen(ace);
  if (alen > EGRESS__NAME_MAX + 1) {
    st = invalid(why, "host name is longer than 253 octets");
    goto done;
  }
  /* The ACE string goes back into our own buffer so that it can be freed
   * on the single exit below whatever canon_ascii decides. */
  memcpy(buf, ace, alen);
  st = canon_ascii(buf, alen, true, names_only, out, why);
done:
  idn2_free(ace);
  return st;
}

static egress_status_t set_ip6(const char *s, size_t n, egress__host_t *out) {
  egress__ip_t ip;
  if (!egress__ip6_parse(s, n, &ip)) return EGRESS_EINVAL;
  if (egress__ip_unmap(&ip)) {
    out->kind = EGRESS__HOST_IPV4;
  } else {
    out->kind = EGRESS__HOST_IPV6;
  }
  out->ip = ip;
  egress__ip_format(&ip, out->text, sizeof(out->text));
  out->len = strlen(out->text);
  return EGRESS_OK;
}

static egress_status_t canon(const char *in, size_t len, egress__host_t *out, const char **why,
                             bool names_only) {
  const char *dummy;
  egress_status_t st;

  if (!why) why = &dummy;
  *why = NULL;
  if (!out) return invalid(why, "no output");
  /* Only the header: the text buffer is written before it is read. */
  out->kind = EGRESS__HOST_NAME;
  out->len = 0;
  out->text[0] = '\0';
  memset(&out->ip, 0, sizeof out->ip);
  if (!in) return invalid(why, "host is missing");
  if (len == 0) return invalid(why, "host is empty");
  if (len > CANON_INPUT_MAX) return invalid(why, "host is too long");

  /* One pass over the bytes: this runs before every check. */
  bool nonascii = false, colon = false, bracket = false;
  for (size_t i = 0; i < len; i++) {
    unsigned char c = (unsigned char)in[i];
    if ((c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '.' || c == '-') continue;
    if (c == 0) return invalid(why, "host contains a NUL byte");
    if (c < 0x20 || c == 0x7f) return invalid(why, "host contains a control character");
    switch (c) {
      case ' ': return invalid(why, "host contains white space");
      case '%': return invalid(why, "host contains '%' (percent-encoding or an IPv6 zone id)");
      case '\\': return invalid(why, "host contains a backslash");
      case '@': return invalid(why, "host contains '@' (userinfo)");
      case '/':
        if (i > 0 && in[i - 1] == ':' && i + 1 < len && in[i + 1] == '/')
          return invalid(why, "host contains a URL scheme");
        return invalid(why, "host contains '/' (a path)");
      case '?': return invalid(why, "host contains '?' (a query)");
      case '#': return invalid(why, "host contains '#' (a fragment)");
      case ':': colon = true; break;
      case '[':
      case ']': bracket = true; break;
      default:
        if (c >= 0x80) nonascii = true;
        break;
    }
  }

  if (bracket) {
    if (names_only) return invalid(why, "a host name may not hold brackets");
    if (in[0] != '[') return invalid(why, "misplaced or unbalanced brackets");
    size_t close = 1;
    while (close < len && in[close] != ']') close++;
    if (close == len) return invalid(why, "unbalanced brackets");
    if (close != len - 1) return invalid(why, "text after ']' (a port is not part of the host)");
    for (size_t i = 1; i < close; i++)
      if (in[i] == '[') return invalid(why, "nested brackets");
    if (set_ip6(in + 1, close - 1, out) != EGRESS_OK) {
      memset(out, 0, sizeof(*out));
      return invalid(why, "brackets may only enclose an IPv6 address (no zone id)");
    }
    return EGRESS_OK;
  }
  if (colon) {
    if (names_only) return invalid(why, "a host name may not hold ':' (IPv6 or a port)");
    if (set_ip6(in, len, out) != EGRESS_OK) {
      memset(out, 0, sizeof(*out));
      return invalid(why,
                     "host holds ':' but is not an IPv6 address (a port is not "
                     "part of the host)");
    }
    return EGRESS_OK;
  }

  if (nonascii)
    st = canon_idna(in, len, names_only, out, why);
  else if (len > EGRESS__NAME_MAX + 1)
    st = invalid(why, "host name is longer than 253 octets");
  else
    st = canon_ascii(in, len, false, names_only, out, why);
  if (st != EGRESS_OK) memset(out, 0, sizeof(*out));
  return st;
}

egress_status_t egress__canon_host(const char *in, size_t len, egress__host_t *out, const char **why) {
  return canon(in, len, out, why, false);
}

egress_status_t egress__canon_name(const char *in, size_t len, egress__host_t *out, const char **why) {
  return canon(in, len, out, why, true);
}
