#!/usr/bin/env python3
"""egressd's forwarding at the edges of HTTP/1.1 framing: a kept-alive client
connection whose next request goes to another upstream, responses without a
body whatever their fields say (1xx, 204, 304, HEAD), loose chunked framing
from upstream, status codes egressd cannot relay (101, 099, too many 1xx),
request targets with dot segments, CONNECT without a version, a bad chunked
request body after the head went upstream, a Via loop, TRACE and OPTIONS
with Max-Forwards.

Upstreams are scripted raw sockets on loopback; names come from the loopback
DNS responder.  Every wait is bounded: a hang is a failed check, not a stuck
test.  At the end egressd must exit 0 on SIGTERM with no sanitizer report."""
import argparse, json, os, socket, subprocess, sys, tempfile, threading, time

from gwlib import body_of, check, close_data, events_of, finish, head_of, start_egressd, stop_egressd

ap = argparse.ArgumentParser()
ap.add_argument("--egressd", required=True)
ap.add_argument("--dns", required=True)
a = ap.parse_args()


class Scripted:
    """A loopback upstream answering each request head with SCRIPT(path, n),
    n counting the requests on that connection: bytes to send, "wait" (send
    nothing, keep reading) or None (200 "connN reqN").  Records each
    connection's bytes and whether the peer (egressd) closed it."""

    def __init__(self, script=None):
        self.script = script or (lambda path, n: None)
        self.conns = []
        self.srv = socket.socket()
        self.srv.bind(("127.0.0.1", 0))
        self.srv.listen(32)
        self.port = self.srv.getsockname()[1]
        threading.Thread(target=self.accept, daemon=True).start()

    def accept(self):
        while True:
            s, _ = self.srv.accept()
            rec = {"data": b"", "closed": False}
            self.conns.append(rec)
            threading.Thread(target=self.serve, args=(s, rec, len(self.conns)), daemon=True).start()

    def serve(self, s, rec, k):
        buf, n = b"", 0
        try:
            while True:
                d = s.recv(65536)
                if not d:
                    break
                rec["data"] += d
                buf += d
                while b"\r\n\r\n" in buf:
                    head, buf = buf.split(b"\r\n\r\n", 1)
                    n += 1
                    path = head.split(b" ")[1].decode("latin-1") if b" " in head else ""
                    r = self.script(path, n)
                    if r == "wait":
                        continue
                    if r is None:
                        b = b"conn%d req%d" % (k, n)
                        r = b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s" % (len(b), b)
                    s.sendall(r)
        except OSError:
            pass
        rec["closed"] = True
        s.close()


class Client:
    """One client connection to egressd, read response by response."""

    def __init__(self, port, timeout=3):
        self.s = socket.create_connection(("127.0.0.1", port), timeout=timeout)
        self.buf = b""
        self.eof = False

    def send(self, data):
        self.s.sendall(data)

    def _more(self):
        try:
            d = self.s.recv(65536)
        except (socket.timeout, ConnectionResetError):
            d = b""
        if not d:
            self.eof = True
        self.buf += d
        return bool(d)

    def response(self, to_head=False):
        """The next response (head and the body its Content-Length or
        strict chunked framing delimits; none when TO_HEAD), or what came
        before a timeout or the end (then incomplete: the second value
        False)."""
        while b"\r\n\r\n" not in self.buf:
            if not self._more():
                out, self.buf = self.buf, b""
                return out, False
        head, rest = self.buf.split(b"\r\n\r\n", 1)
        status, hdrs = head_of(head + b"\r\n\r\n")
        if to_head or status // 100 == 1 or status in (204, 304):
            self.buf = rest
            return head + b"\r\n\r\n", True
        if hdrs.get("transfer-encoding", "").lower() == "chunked":
            while True:
                end = strict_chunked_end(rest)
                if end is not None:
                    self.buf = rest[end:]
                    return head + b"\r\n\r\n" + rest[:end], True
                if not self._more():
                    break
                rest = self.buf.split(b"\r\n\r\n", 1)[1]
            out, self.buf = self.buf, b""
            return out, False
        n = int(hdrs.get("content-length", "0"))
        while len(rest) < n:
            if not self._more():
                out, self.buf = self.buf, b""
                return out, False
            rest = self.buf.split(b"\r\n\r\n", 1)[1]
        self.buf = rest[n:]
        return head + b"\r\n\r\n" + rest[:n], True

    def closed(self):
        """Whether egressd closes the connection with nothing more sent."""
        while not self.eof:
            if not self._more() and not self.eof:
                return False
        return self.buf == b""

    def close(self):
        self.s.close()


def exchange(port, data):
    """DATA on a fresh connection to egressd; its response."""
    c = Client(port)
    c.send(data)
    resp, _ = c.response()
    c.close()
    return resp


def strict_chunked_end(body):
    """Where strictly framed chunked BODY ends (after 0 CRLF CRLF, no
    trailers), None while incomplete; raises ValueError on loose framing."""
    i = 0
    while True:
        j = body.find(b"\r\n", i)
        if j < 0:
            return None
        size = body[i:j]
        if not size or any(c not in b"0123456789abcdefABCDEF" for c in size):
            raise ValueError(f"bad chunk size {size!r}")
        n = int(size, 16)
        i = j + 2
        if n == 0:
            if len(body) < i + 2:
                return None
            if body[i:i + 2] != b"\r\n":
                raise ValueError("trailers or junk after the last chunk")
            return i + 2
        if len(body) < i + n + 2:
            return None
        if body[i + n:i + n + 2] != b"\r\n":
            raise ValueError("chunk data not followed by CRLF")
        i += n + 2


def dechunk(body):
    out, i = b"", 0
    while True:
        j = body.index(b"\r\n", i)
        n = int(body[i:j], 16)
        if n == 0:
            return out
        out += body[j + 2:j + 2 + n]
        i = j + 2 + n + 2


def get(port, host, path, extra=b""):
    return b"GET http://%s:%d%s HTTP/1.1\r\nHost: %s:%d\r\n%s\r\n" % (host.encode(), port, path.encode(),
                                                                    host.encode(), port, extra)


def proxy_status(resp):
    return head_of(resp)[1].get("proxy-status", "")


FORGED = b"HTTP/1.1 200 OK\r\nContent-Length: 6\r\nX-Forged: yes\r\n\r\nFORGED"
CANNED = {
    "/304-length": b"HTTP/1.1 304 Not Modified\r\nContent-Length: 10\r\n\r\n",
    "/304-chunked": b"HTTP/1.1 304 Not Modified\r\nTransfer-Encoding: chunked\r\n\r\n",
    "/204-forged": b"HTTP/1.1 204 No Content\r\nContent-Length: %d\r\n\r\n%s" % (len(FORGED), FORGED),
    "/head-body": b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello",
    "/101": b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\nraw-bytes",
    "/099": b"HTTP/1.1 099 Odd\r\nContent-Length: 2\r\n\r\nok",
    "/loose-crlf": b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhelloXY0\r\n\r\n",
    "/loose-cr": b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\rXhello\r\n0\r\n\r\n",
    "/chunks": b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3;ext=1\r\nabc\r\n2\r\nde\r\n0\r\nX-T: 1\r\n\r\n",
    "/many-1xx": b"HTTP/1.1 100 Continue\r\n\r\n" * 9 + b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok",
    "/some-1xx": b"HTTP/1.1 100 Continue\r\n\r\n" * 2 + b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok",
    "/100cl": b"HTTP/1.1 100 Continue\r\nContent-Length: 4\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok",
    "/wait": "wait",
}


def canned(path, n):
    return CANNED.get(path.split("?")[0])


with tempfile.TemporaryDirectory() as tmp:
    up_a, up_b = Scripted(), Scripted()
    path_up = Scripted()
    raw_up = Scripted(canned)

    zone = os.path.join(tmp, "zone")
    with open(zone, "w") as f:
        f.write("path.test A 127.0.0.1 0\n")
    dns = subprocess.Popen([a.dns, "--bind", "127.0.0.1", "--zone", zone, "--stdin-lifeline"],
                           stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    line = dns.stdout.readline().split()
    if len(line) != 2 or line[0] != "PORT":
        sys.exit(f"responder did not start: {line}")

    policy = os.path.join(tmp, "policy.json")
    with open(policy, "w") as f:
        json.dump({"egressAllowlist": [f"127.0.0.1/32:{up_a.port}", f"127.0.0.1/32:{up_b.port}",
                                       f"127.0.0.1/32:{raw_up.port}", f"http://path.test:{path_up.port}/public",
                                       # opens loopback for the name; its paths stay those above
                                       f"127.0.0.1/32:{path_up.port}"],
                   "egressDenylist": []}, f)
    gw = start_egressd(a.egressd, policy, tmp, "--dns-server", f"127.0.0.1:{line[1]}", "--dns-cache", "0")
    G = gw.port
    R = raw_up.port

    # 1. The next request on a kept-alive client connection goes to another
    # upstream: the idle upstream connection is closed and the new one read.
    c = Client(G)
    c.send(get(up_a.port, "127.0.0.1", "/first"))
    r1, ok1 = c.response()
    c.send(get(up_b.port, "127.0.0.1", "/second"))
    r2, ok2 = c.response()
    c.send(get(up_a.port, "127.0.0.1", "/third"))
    r3, ok3 = c.response()
    c.close()
    check(ok1 and head_of(r1)[0] == 200 and body_of(r1) == b"conn1 req1", f"kept-alive: first upstream answers ({r1[-20:]!r})")
    check(ok2 and head_of(r2)[0] == 200 and body_of(r2) == b"conn1 req1",
          f"kept-alive: a request to another upstream is answered, not left hanging ({r2[-40:]!r})")
    check(ok3 and head_of(r3)[0] == 200 and body_of(r3) == b"conn2 req1",
          f"kept-alive: and back to the first, on a new upstream connection ({r3[-40:]!r})")

    # 2. Responses that end at their head whatever their fields say.
    for p in ["/304-length", "/304-chunked"]:
        c = Client(G)
        c.send(get(R, "127.0.0.1", p))
        r, ok = c.response()
        check(ok and head_of(r)[0] == 304, f"{p}: relayed ({r[:30]!r})")
        c.send(get(R, "127.0.0.1", "/next"))
        r, ok = c.response()
        check(ok and head_of(r)[0] == 200, f"{p}: ends at its head, the next request is answered ({r[-20:]!r})")
        c.close()

    n0 = len(raw_up.conns)
    c = Client(G)
    c.send(get(R, "127.0.0.1", "/204-forged"))
    r, ok = c.response()
    rest_closed = c.closed()
    extra = c.buf
    c.close()
    check(ok and head_of(r)[0] == 204 and b"FORGED" not in r + extra and b"X-Forged" not in r + extra,
          f"204 with Content-Length and bytes after it: the bytes are dropped ({(r + extra)[:80]!r})")
    check(rest_closed and head_of(r)[1].get("connection") == "close",
          "204 announcing a body: the client is told the connection ends, and it does")
    time.sleep(0.3)
    check(len(raw_up.conns) > n0 and raw_up.conns[n0]["closed"],
          "204 announcing a body: its upstream connection is closed, not reused")

    n0 = len(raw_up.conns)
    c = Client(G)
    c.send(b"HEAD http://127.0.0.1:%d/head-body HTTP/1.1\r\nHost: 127.0.0.1:%d\r\n\r\n" % (R, R))
    r, ok = c.response(to_head=True)
    c.send(get(R, "127.0.0.1", "/after-head"))
    r2, ok2 = c.response()
    c.close()
    check(ok and head_of(r)[0] == 200 and head_of(r)[1].get("content-length") == "5",
          f"HEAD: the head is relayed ({r[:40]!r})")
    check(ok2 and head_of(r2)[0] == 200 and b"hello" not in r2 and len(raw_up.conns) == n0 + 2,
          f"HEAD answered with a body anyway: the body is dropped, the next request on a new upstream connection ({r2[-30:]!r})")

    # 3. Dot segments: the check sees the normalized path, upstream would
    # get the raw one.
    n0 = len(path_up.conns)
    for p in ["/admin/%2e%2e/public/x", "/admin/../public/x", "/public/./x", "/public/%2E./admin", "/public/x/.."]:
        resp = exchange(G, get(path_up.port, "path.test", p, b"Connection: close\r\n"))
        check(head_of(resp)[0] == 400 and "http_request_error" in proxy_status(resp) and
              "dot segment" in proxy_status(resp), f"dot segments {p}: 400 ({resp[:120]!r})")
    check(len(path_up.conns) == n0, "dot segments: nothing connected")
    # A path the library itself finds ambiguous (a dot look-alike) is 400 too.
    resp = exchange(G, get(path_up.port, "path.test", "/public/...", b"Connection: close\r\n"))
    check(head_of(resp)[0] == 400 and "http_request_error" in proxy_status(resp) and len(path_up.conns) == n0,
          f"a path the check refuses as ambiguous: 400 ({resp[:100]!r})")
    resp = exchange(G, get(path_up.port, "path.test", "/public/a..b/.x", b"Connection: close\r\n"))
    check(head_of(resp)[0] == 200, f"dots inside a segment are no dot segment: 200 ({resp[:40]!r})")

    # 4. 101 to a forwarded request (Upgrade is not forwarded).
    c = Client(G)
    c.send(get(R, "127.0.0.1", "/101", b"Upgrade: websocket\r\nConnection: Upgrade\r\n"))
    r, ok = c.response()
    closed = c.closed()
    extra = c.buf
    c.close()
    check(head_of(r)[0] == 502 and "http_upgrade_failed" in proxy_status(r) and closed and b"raw-bytes" not in extra,
          f"101 Switching Protocols: 502 http_upgrade_failed, connection closed ({r[:120]!r})")

    # 5. Loose chunked framing is written anew; an invalid status is 502.
    for p in ["/loose-crlf", "/loose-cr", "/chunks"]:
        c = Client(G)
        c.send(get(R, "127.0.0.1", p))
        try:
            r, ok = c.response()
            body = body_of(r)
            good = ok and head_of(r)[0] == 200
            payload = dechunk(body) if good else b""
        except ValueError as e:
            good, payload, r = False, b"", repr(e).encode()
        c.send(get(R, "127.0.0.1", "/after"))
        try:
            r2, ok2 = c.response()
        except ValueError:
            r2, ok2 = b"", False
        c.close()
        want = {"/loose-crlf": b"hello", "/loose-cr": b"hello", "/chunks": b"abcde"}[p]
        check(good and payload == want, f"chunked {p}: relayed in strict chunked framing ({r[-40:]!r})")
        check(ok2 and head_of(r2)[0] == 200 and body_of(r2).startswith(b"conn"),
              f"chunked {p}: the next response is read where it begins ({r2[-30:]!r})")
    r = exchange(G, get(R, "127.0.0.1", "/099"))
    check(head_of(r)[0] == 502 and "http_protocol_error" in proxy_status(r), f"status 099: 502 ({r[:100]!r})")

    # 6. CONNECT without an HTTP version.
    n0 = len(up_a.conns)
    r = exchange(G, b"CONNECT 127.0.0.1:%d\r\n\r\n" % up_a.port)
    check(head_of(r)[0] == 400 and len(up_a.conns) == n0, f"CONNECT without a version: 400 ({r[:60]!r})")

    # 7. A bad chunk size after the head went upstream: 400, then the end.
    n0 = len(raw_up.conns)
    c = Client(G)
    c.send(b"POST http://127.0.0.1:%d/wait HTTP/1.1\r\nHost: 127.0.0.1:%d\r\nTransfer-Encoding: chunked\r\n\r\n"
           b"3\r\nabc\r\n" % (R, R))
    time.sleep(0.3)
    c.send(b"ffffffffffffffffff\r\n")
    r, _ = c.response()
    closed = c.closed()
    c.close()
    time.sleep(0.2)
    check(len(raw_up.conns) == n0 + 1 and b"POST /wait" in raw_up.conns[n0]["data"],
          "bad chunk size: the head had gone upstream")
    check(head_of(r)[0] == 400 and "http_request_error" in proxy_status(r) and closed,
          f"bad chunk size after the head went upstream: 400, then closed ({r[:100]!r})")
    check(raw_up.conns[n0]["closed"], "bad chunk size: the upstream connection is closed")

    # 8. Interim responses: a few are relayed, too many are 502.
    c = Client(G)
    c.send(get(R, "127.0.0.1", "/some-1xx"))
    got = [c.response()[0] for _ in range(3)]
    c.close()
    check([head_of(x)[0] for x in got] == [100, 100, 200], f"two 100 Continue, then 200 ({[x[:15] for x in got]})")
    c = Client(G)
    c.send(get(R, "127.0.0.1", "/many-1xx"))
    got = []
    while True:
        x, ok = c.response()
        got.append(x)
        if not ok or head_of(x)[0] != 100:
            break
    c.close()
    check(head_of(got[-1])[0] == 502 and "http_protocol_error" in proxy_status(got[-1]),
          f"nine 100 Continue: 502 after the eighth ({len(got) - 1} relayed, last {got[-1][:60]!r})")

    # 9. A request that went through egressd already, and TRACE.
    n0 = len(up_a.conns)
    r = exchange(G, get(up_a.port, "127.0.0.1", "/loop", b"Via: 1.0 other (x, y), 1.1 egressd\r\n"))
    check(head_of(r)[0] == 508 and "proxy_loop_detected" in proxy_status(r), f"Via naming egressd: 508 ({r[:90]!r})")
    r = exchange(G, get(up_a.port, "127.0.0.1", "/via", b"Via: 1.1 egressd-other\r\nConnection: close\r\n"))
    check(head_of(r)[0] == 200, f"Via naming another proxy: forwarded ({r[:30]!r})")
    r = exchange(G, b"TRACE http://127.0.0.1:%d/t HTTP/1.1\r\nHost: 127.0.0.1:%d\r\nMax-Forwards: 0\r\n\r\n" % (up_a.port, up_a.port))
    check(head_of(r)[0] == 405 and len(up_a.conns) == n0 + 1, f"TRACE: 405, not forwarded ({r[:60]!r})")
    r = exchange(G, b"OPTIONS http://127.0.0.1:%d/o HTTP/1.1\r\nHost: 127.0.0.1:%d\r\nMax-Forwards: 0\r\n\r\n" % (up_a.port, up_a.port))
    check(head_of(r)[0] == 200 and "proxy-status" not in head_of(r)[1] and len(up_a.conns) == n0 + 1,
          f"OPTIONS with Max-Forwards: 0: answered by egressd ({r[:40]!r})")
    c = Client(G)
    c.send(b"OPTIONS http://127.0.0.1:%d/o HTTP/1.1\r\nHost: 127.0.0.1:%d\r\nMax-Forwards: 3\r\nConnection: close\r\n\r\n"
           % (up_a.port, up_a.port))
    r, _ = c.response()
    c.close()
    check(head_of(r)[0] == 200 and len(up_a.conns) == n0 + 2 and b"\r\nMax-Forwards: 2\r\n" in up_a.conns[-1]["data"],
          f"OPTIONS with Max-Forwards: 3: forwarded with 2 ({up_a.conns[-1]['data'][:120]!r})")

    # Max-Forwards: trailing white space is not part of the value, and a
    # value of any length is a number.
    for mf, want in ((b"5 \t", b"4"), (b"10000000000", b"999999998")):
        c = Client(G)
        c.send(b"OPTIONS http://127.0.0.1:%d/o HTTP/1.1\r\nHost: 127.0.0.1:%d\r\nMax-Forwards: %s\r\n"
               b"Connection: close\r\n\r\n" % (up_a.port, up_a.port, mf))
        r, _ = c.response()
        c.close()
        check(head_of(r)[0] == 200 and b"\r\nMax-Forwards: %s\r\n" % want in up_a.conns[-1]["data"],
              f"Max-Forwards {mf!r}: forwarded as {want!r} ({r[:30]!r})")

    # A request denied on a kept-alive connection connected nowhere: its
    # close event names no address, though the exchange before it had one.
    c = Client(G)
    c.send(get(path_up.port, "path.test", "/public/ok"))
    r1, _ = c.response()
    c.send(get(path_up.port, "path.test", "/admin"))
    r2, _ = c.response()
    c.close()
    time.sleep(0.3)
    closes = [e for e in close_data(events_of(gw)) if e["host"] == "path.test" and e["port"] == path_up.port]
    denied = [e for e in closes if e["status"] == 403]
    allowed = [e for e in closes if e["status"] == 200]
    check(head_of(r1)[0] == 200 and head_of(r2)[0] == 403 and denied and all(e["address"] is None for e in denied)
          and allowed and allowed[-1]["address"] == "127.0.0.1",
          f"a denied request after an allowed one on one connection: close event with no address {denied}")

    # An upstream connection dropped for bytes it should not have sent does
    # not spoil the next one: /second and /third share a new connection.
    n0 = len(raw_up.conns)
    c = Client(G)
    for p in ("/100cl", "/second", "/third"):
        c.send(get(R, "127.0.0.1", p))
        r, ok = c.response()
        if p == "/100cl":
            r, ok = c.response()  # the final response after the relayed 100
    c.close()
    check(len(raw_up.conns) - n0 == 2,
          f"after a dropped upstream connection the next one is kept alive: {len(raw_up.conns) - n0} connections for 3 requests")

    stop_egressd(gw)
    dns.stdin.close()
    dns.wait(timeout=10)

finish("egressd-forward-edge")
