#!/usr/bin/env python3
"""Write the hand-made seed inputs of tests/fuzz/corpus/<target>/.

Seeds are named seed-NNN; inputs that libFuzzer found and that were kept
after a merge have hash names.  Run from anywhere:  python3 gen_seeds.py
(existing seed-* files are rewritten, other files are left alone).
"""
import os
import random
import struct

HERE = os.path.dirname(os.path.abspath(__file__))


def write(target, items):
    d = os.path.join(HERE, "corpus", target)
    os.makedirs(d, exist_ok=True)
    for f in os.listdir(d):
        if f.startswith("seed-"):
            os.remove(os.path.join(d, f))
    for i, data in enumerate(items):
        if isinstance(data, str):
            data = data.encode("utf-8", "surrogateescape")
        with open(os.path.join(d, "seed-%03d" % i), "wb") as fh:
            fh.write(data)


ENTRIES = [
    "https://api.example.com", "https://api.example.com:8443/v1", "https://api.example.com/v1/",
    "api.example.com", "api.example.com:8443", "api.example.com:8000-8999", "api.example.com:*",
    "*.example.com", "**.example.com", "*", "*:80", "re:^api-[0-9]+\\.example\\.com$",
    "re:^(a+)+$", "re:^(a|aa)+$:443", "re:^a\\.example\\.com$:8443", "re:api\\.x\\.com:443",
    "203.0.113.0/24", "203.0.113.7", "203.0.113.0/24:443", "[2001:db8::]/32:443", "2001:db8::/32",
    "[2001:db8::1]:443", "::ffff:10.0.0.0/104", "10.0.0.1/8", "0177.0.0.1", "127.1",
    "https://user@host.example", "http://h.example/a/../b", "https://h.example/%2e%2e/",
    "https://h.example/a%2Fb", "https://h.example/a%41", "https://h.example/ok%20x",
    "b\u00fccher.example", "xn--bcher-kva.example", "xn--zz.example", "foo.2.3.4", "a..b",
    " a.com", "a.com\x00b", "a.com\t", "ftp://x.example", "[fe80::1%eth0]", "*.*.com", "a*.com",
    "a.com:0443", "a.com:0", "a.com:65536", "a.com:9-1", "https://h.example:8080:90",
    "https://h.example:80-90", "a" * 64 + ".com", ".".join(["a" * 63] * 4), "re:", "re:(",
    "re:a b", "re:\u00e9", "a_b.example", "r3---sn-abc.googlevideo.com", "https://[::1]:8443/x",
    "http://1.2.3.4/", "HTTPS://API.EXAMPLE.COM", "https://h.example?q", "https://h.example#f",
    "[::ffff:1.2.3.4]", "[1.2.3.4]", "1.2.3.4/33", "1.2.3.4/08", "[::]/0", "0.0.0.0/0:*",
    "**.", "*.", "https://*.example.com/x", "https://**.example.com:8443",
    "\uff41\uff50\uff49.example.com", "\u2460\u2461\u2466.0.0.1", "https://h.example//x",
    "https://h.example/a/./b", "https://h.example/a\\b", "64:ff9b::/96", "[64:ff9b::]/96:443",
]

HOSTS = [
    "api.example.com", "API.Example.COM.", "127.0.0.1", "2130706433", "0x7f.1", "0177.0.0.1",
    "127.1", "[::1]", "::ffff:127.0.0.1", "[::ffff:7f00:1]", "fe80::1%25eth0", "fe80::1%eth0",
    "\u2460\u2461\u2466.0.0.1", "b\u00fccher.de", "xn--bcher-kva.de", "xn--", "xn--a.com", "a..b",
    "a.b..", ".", "", "foo.2.3.4", "203.0.113.08", "a@b", "http://a", "a/b", "a b", "a\tb",
    "a%2eb", "[127.0.0.1]", "[::1", "::1]", "0x", "a.0x", "a.0xg", "a.0XFF", "a" * 64 + ".com",
    ".".join(["a" * 63] * 3) + "." + "a" * 61, ".".join(["a" * 63] * 3) + "." + "a" * 62,
    "\uff41\uff50\uff49.example.com", "a\u200b.com", "\u00df.de", "xn--zca.de", "\xff\xfe",
    "a\x00b", "_dmarc.example.com", "-a.com", "a-.com", "r3---sn.x.com", "ab--cd.com",
    "1.2.3.4.", "1.2.3.4..", "::", "[::]", "[1::2::3]", "1e100.net", "0.0.0.0",
    "255.255.255.256", "localhost", "a.b.c.d.e.f.g", "EXAMPLE.COM", "\u0130.com",
    "xn--80ak6aa92e.com", "\u0430\u0440\u0440\u04cf\u0435.com", "a\\b.com", "a\u3002b.com",
    "1.2.3", "0x7f000001", "[::ffff:127.0.0.1]", "64:ff9b::7f00:1", "::127.0.0.1",
]

URLS = [
    "https://api.example.com/", "https://files.example.com/v1/upload/x",
    "https://files.example.com/v1/uploadx", "https://files.example.com/v1/x/../upload/a",
    "https://files.example.com/v1/%2e%2e/secret", "https://files.example.com/v1/upload/%2e%2e/%2e%2e/x",
    "https://a.svc.example.com:8443/", "https://bad.svc.example.com:8443/",
    "https://loop.svc.example.com:8443/", "http://plain.example.com:8080/",
    "https://203.0.113.7:9999/", "https://203.0.113.99/", "https://[2001:db8::1]/x",
    "https://[2001:db8::1]:444/", "https://evil.example.net@api.example.com/",
    "https://api.example.com\\@evil.example.net/", "https://api.example.com#@evil.example.net",
    "https://api.example.com?x=@evil", "https://API.EXAMPLE.COM./", "https://api.example.com:443/",
    "https://api.example.com:0443/", "http://api.example.com/", "ftp://api.example.com",
    "https://api.example.com:65536/", "https://[::ffff:203.0.113.7]/", "https://0xcb.0.113.7/",
    "https://3405803783/", "//api.example.com", "https:api.example.com",
    "https://files.example.com/V1/upload", "https://api.example.com:/", "https://:443/",
    "https://api.example.com%2f@evil/", "https://a.b.svc.example.com:8443/",
    "https://files.example.com", "https://files.example.com/v1/upload?x#y",
    "https://files.example.com/v1//upload", "https://api.example.com.evil.example.net/",
    "https://api.example.com\t/", "https://xn--bcher-kva.svc.example.com:8443/",
    "https://b\u00fccher.svc.example.com:8443/",
    "https://files.example.com/admin/x/../v1/upload", "https://files.example.com/v1/upload/..%2f..%2fadmin",
    "https://files.example.com/v1/upload/..;/..;/admin", "https://files.example.com/a/%2e%2E/v1/upload",
    # schemes: a URL entry allows its own scheme only
    "http://files.example.com:443/v1/upload/x", "HTTP://files.example.com:443/v1/upload",
    "https://plain.example.com:8080/", "http://plain.example.com:8080/x",
    # malformed percent-encoding in the path
    "https://files.example.com/v1/upload/%zz", "https://files.example.com/v1/upload/%u002e%u002e/admin",
    "https://files.example.com/v1/upload/%4", "https://files.example.com/v1/upload/%",
    "https://files.example.com/v1/upload/%2", "https://files.example.com/v1/upload/%%32%65",
    # an over-long host
    "https://" + "a" * 300 + ".example.com/",
]


def name(n):
    out = b""
    for label in n.split("."):
        out += bytes([len(label)]) + label.encode()
    return out + b"\x00"


def hdr(rcode=0, qd=1, an=0, ns=0, ar=0, tc=False, qr=True):
    flags = (0x8000 if qr else 0) | 0x0100 | 0x0080 | (0x0200 if tc else 0) | rcode
    return struct.pack(">HHHHHH", 0, flags, qd, an, ns, ar)


def rr(owner, rtype, rdata, ttl=300, cls=1):
    return owner + struct.pack(">HHIH", rtype, cls, ttl & 0xffffffff, len(rdata)) + rdata


PTR = b"\xc0\x0c"  # the question name in a spliced reply
A, AAAA, CNAME, TXT = 1, 28, 5, 16


def ip4(s):
    return bytes(int(x) for x in s.split("."))


def ip6(s):
    import ipaddress
    return ipaddress.IPv6Address(s).packed


def splice(*segments, flags=1):
    """flags 1 = splice the question; segments are header + answer records."""
    out = bytes([flags])
    for s in segments:
        out += struct.pack(">H", len(s)) + s
    return out


def answer(records, **kw):
    return hdr(an=len(records), **kw) + b"".join(records)


def full(qname, qtype, records, **kw):
    return hdr(an=len(records), **kw) + name(qname) + struct.pack(">HH", qtype, 1) + b"".join(records)


def dns_seeds():
    q = "fuzz.example.com"
    a = lambda ip, **kw: rr(PTR, A, ip4(ip), **kw)
    aaaa = lambda ip, **kw: rr(PTR, AAAA, ip6(ip), **kw)
    s = []
    s.append(splice(answer([a("1.1.1.1")]), answer([aaaa("2606:4700:4700::1111")])))
    s.append(splice(answer([a("127.0.0.1")]), answer([])))
    s.append(splice(answer([a("1.1.1.1"), a("10.0.0.1")]), answer([]), flags=3))
    s.append(splice(answer([a("1.1.1.1"), a("10.0.0.1")]), answer([]), flags=1))
    cname = rr(PTR, CNAME, name("other.example.net"))
    # the CNAME target lies at offset 12 + question + 12 (owner ptr + fixed) of the reply
    s.append(splice(answer([cname, rr(name("other.example.net"), A, ip4("8.8.8.8"))]), answer([cname])))
    s.append(splice(hdr(rcode=3, an=0), hdr(rcode=3, an=0)))
    s.append(splice(hdr(rcode=2, an=0)))
    s.append(splice(hdr(rcode=5, an=0)))
    s.append(splice(hdr(an=0), hdr(an=0)))
    s.append(splice(hdr(an=1) + PTR + struct.pack(">HH", A, 1)))  # truncated RR
    s.append(splice(hdr(an=1) + b"\xc0\x1e" + b"\xc0\x1e" + struct.pack(">HHIH", A, 1, 60, 4) + ip4("1.1.1.1")))
    s.append(splice(hdr(an=1) + PTR + struct.pack(">HHIH", A, 1, 60, 3) + b"\x01\x02\x03"))
    s.append(splice(hdr(an=1) + b"\x7fabc"))
    # TC: UDP reply truncated, the TCP retry gets the full answer
    s.append(splice(hdr(tc=True), answer([a("1.1.1.1")]), hdr(tc=True), answer([aaaa("2606:4700:4700::1111")])))
    s.append(splice(full(q, A, [rr(PTR, A, ip4("1.0.0.1"))]), full(q, AAAA, []), flags=0))
    s.append(splice(full(q, A, [rr(PTR, A, ip4("1.0.0.1"))]), b"", flags=1))
    s.append(splice(answer([a("1.1.1.1", ttl=0)]), answer([aaaa("2606:4700::1", ttl=0x80000000)])))
    s.append(splice(answer([a("1.1.1.1", ttl=0x7fffffff)]), answer([])))
    s.append(splice(answer([rr(PTR, A, ip4("1.1.1.1"), cls=3)]), answer([rr(PTR, TXT, b"\x03abc")])))
    s.append(splice(answer([rr(name("other.example.com"), A, ip4("1.2.3.4"))]), answer([])))
    s.append(splice(answer([]), answer([aaaa("::ffff:127.0.0.1")])))
    s.append(splice(answer([]), answer([aaaa("64:ff9b::7f00:1")])))
    s.append(splice(answer([]), answer([aaaa("2002:7f00:1::1")])))
    s.append(splice(answer([]), answer([aaaa("2001:0:4136:e378:8000:63bf:80ff:fffe")])))
    s.append(splice(answer([]), answer([aaaa("2606:2800:220:1:248:1893:25c8:1946")])))
    s.append(splice(answer([a("93.184.216.34")]), answer([])))
    s.append(splice(answer([a("1.1.%d.%d" % (i // 200, i % 200 + 1)) for i in range(40)]), answer([])))
    loop1 = rr(PTR, CNAME, name("b.example.com"))
    s.append(splice(answer([loop1, rr(name("b.example.com"), CNAME, name(q))]), answer([loop1])))
    s.append(splice(b"\x00\x00\x81\x80\x00\x01\x00\x01"))
    s.append(splice(hdr(an=0xffff) + a("1.1.1.1")))
    s.append(splice(full(q, A, [rr(PTR, A, ip4("1.1.1.1"))], qd=0), flags=0))
    s.append(splice(answer([a("169.254.169.254")]), answer([aaaa("fd00:ec2::254")])))
    s.append(splice(answer([a("0.0.0.0")]), answer([aaaa("::")])))
    s.append(splice(answer([a("1.1.1.1"), a("1.1.1.1")]), answer([aaaa("2606:4700::1"), aaaa("2606:4700::1")])))
    s.append(splice(answer([a("1.1.1.1")], qr=False), answer([])))
    s.append(splice(answer([a("1.1.1.1")], rcode=3), answer([])))
    s.append(splice(hdr(an=1) + b"\xc0\xff" + struct.pack(">HHIH", A, 1, 60, 4) + ip4("1.1.1.1")))
    s.append(splice(answer([rr(b"\x3f" + b"a" * 63 + PTR, A, ip4("1.1.1.1"))])))
    s.append(b"")
    s.append(b"\x01")
    # CNAME chains through a deny-listed name (*.attacker.net): denied
    # whatever the addresses, also in filter mode
    evil = rr(PTR, CNAME, name("x.attacker.net"))
    s.append(splice(answer([evil, rr(name("x.attacker.net"), A, ip4("8.8.8.8"))]),
                    answer([evil, rr(name("x.attacker.net"), AAAA, ip6("2606:4700::1111"))])))
    s.append(splice(answer([evil, rr(name("x.attacker.net"), A, ip4("8.8.8.8"))]), answer([]), flags=3))
    hop = rr(PTR, CNAME, name("hop.example.org"))
    s.append(splice(answer([hop, rr(name("hop.example.org"), CNAME, name("Y.Attacker.NET")),
                            rr(name("Y.Attacker.NET"), A, ip4("1.1.1.1"))]), answer([])))
    # an unrelated CNAME record in the answer section moves c-ares 1.18 onto its target
    s.append(splice(answer([rr(name("elsewhere.example.com"), CNAME, name("z.attacker.net")),
                            rr(name("z.attacker.net"), A, ip4("9.9.9.9"))]), answer([])))
    # a long chain of distinct names
    chain = [rr(PTR if i == 0 else name("h%d.example.org" % i), CNAME, name("h%d.example.org" % (i + 1)))
             for i in range(40)]
    s.append(splice(answer(chain + [rr(name("h40.example.org"), A, ip4("1.0.0.1"))]), answer([])))
    return s


def policy_seeds():
    good = [
        '{"egressAllowlist": ["api.example.com", "*.svc.example.com:8443", "203.0.113.0/24"]}',
        '{"egressAllowlist": ["https://api.example.com/v1"], "egressDenylist": ["10.0.0.0/8", "bad.example.com"]}',
        '{"isolationMode": "strict", "egressAllowlist": ["**.example.org:*"], "workloadIdentity": {"spiffe": "x"}}',
        '{"machineId": "m-1", "executionPolicy": {"egressAllowlist": ["*", "10.1.0.0/16:5432"]}}',
        '{"egressAllowlist": []}',
        '{"egressAllowlist": ["127.0.0.0/8:8080", "[::1]:443", "::ffff:127.0.0.1"]}',
        '{"egressAllowlist": ["0.0.0.0/0:*", "::/0"], "egressDenylist": ["169.254.169.254"]}',
        '{"egressAllowlist": ["re:^api-[0-9]+\\\\.example\\\\.com$", "re:^(a+)+$"]}',
        '{"egressAllowlist": ["b\\u00fccher.example", "xn--bcher-kva.example:80"]}',
        '{"egressAllowlist": ["10.0.0.0/8", "100.64.0.0/10", "192.0.0.0/24:443"]}',
        '{"egressAllowlist": ["[2001:db8::]/32:443", "[64:ff9b::]/96", "fd00::/8"]}',
        '{"egressAllowlist": ["api.example.com"], "unknown": {"nested": [1, 2, {"x": null}]}}',
    ]
    bad = [
        '{"egressAllowlist": "api.example.com"}', '{"egressAllowlist": [1, 2]}',
        '{"egressAllowlist": ["a"], "egressAllowlist": ["b"]}', '[]', '"x"', '{}',
        '{"egressAllowlist": ["a\\u0000b"]}', '{"egressAllowlist": ["0177.0.0.1"]}',
        '{"egressAllowlist": ["a"]} x', '{"egressAllowlist": ["a"]', '{"executionPolicy": 3}',
        '{"executionPolicy": {"egressAllowlist": []}, "egressAllowlist": []}',
        '{"egressAllowlist": [null]}', '{"egressAllowlist": ["10.0.0.1/8"]}',
        '{"egressAllowlist": ["' + "a" * 5000 + '"]}', '{"egressAllowlist": ["\xff\xfe"]}',
        '[' * 2000 + ']' * 2000, '{"egressAllowlist": ["re:("]}',
        '{"egressAllowlist": ["a.com"], "egressDenylist": {"x": 1}}',
    ]
    return good + bad


def diff_seeds():
    rng = random.Random(5)
    out = []
    for n in (4, 8, 16, 24, 32, 48, 64, 96, 128, 160, 200, 256):
        out.append(bytes(rng.randrange(256) for _ in range(n)))
        out.append(bytes(rng.choice((0, 1, 2, 3, 7, 9, 255)) for _ in range(n)))
    return out


if __name__ == "__main__":
    write("entry", ENTRIES)
    write("canon", HOSTS)
    write("url", URLS)
    write("dns", dns_seeds())
    write("policy", policy_seeds())
    write("diff", diff_seeds())
