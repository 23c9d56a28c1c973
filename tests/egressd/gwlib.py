"""What the egressd test programs share: checks that print one line each,
counting upstreams, starting egressd and judging how it ended.

Every check prints "ok   WHAT" or "FAIL WHAT"; finish() prints the
"EGRESS-TESTS: NAME passed=N failed=M" line that tests/summarize.py counts,
so each check is one test in the totals, and exits non-zero on a failure."""
import http.server, json, os, resource, signal, socket, subprocess, sys, threading, time

passed = 0
failures = []


def check(cond, what):
    global passed
    print(("ok   " if cond else "FAIL ") + what, flush=True)
    if cond:
        passed += 1
    else:
        failures.append(what)
    return cond


def finish(name):
    print(f"EGRESS-TESTS: {name} passed={passed} failed={len(failures)}", flush=True)
    if failures:
        sys.exit(f"{len(failures)} failures")
    print("all ok")


class Upstream:
    """HTTP/1.1 server in a thread that counts the connections it accepted.
    GET answers "hello from NAME PATH" (NAME defaults to the address) and
    keeps the request's fields in last_headers; POST echoes its body
    (Content-Length or chunked); HEAD announces a body it never sends.
    With events_path set, a GET of /audit... records whether its attempt
    line was already in the events file when the request arrived."""

    def __init__(self, ip="127.0.0.1", port=0, name=None):
        outer = self
        self.accepted = 0
        self.requests = 0
        self.last_headers = {}
        self.events_path = None
        self.audited = []
        name = name or ip

        class H(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_POST(self):
                outer.requests += 1
                if self.headers.get("Transfer-Encoding") == "chunked":
                    data = b""
                    while True:
                        n = int(self.rfile.readline().strip(), 16)
                        if n == 0:
                            self.rfile.readline()
                            break
                        data += self.rfile.read(n)
                        self.rfile.readline()
                else:
                    data = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                self.send_response(200)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def do_GET(self):
                outer.requests += 1
                outer.last_headers = {k.lower(): v for k, v in self.headers.items()}
                if outer.events_path and self.path.startswith("/audit"):
                    with open(outer.events_path) as ev:
                        outer.audited.append(any(self.path in l and "io.portarium.egress.attempt" in l for l in ev))
                body = f"hello from {name} {self.path}".encode()
                self.send_response(200)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def do_HEAD(self):
                outer.requests += 1
                self.send_response(200)
                self.send_header("Content-Length", "50")
                self.end_headers()

            def log_message(self, *args):
                pass

        class S(http.server.ThreadingHTTPServer):
            daemon_threads = True
            request_queue_size = 128

            def get_request(self):
                r = super().get_request()
                outer.accepted += 1
                return r

        self.srv = S((ip, port), H)
        self.port = self.srv.server_address[1]
        threading.Thread(target=self.srv.serve_forever, daemon=True).start()


def serve_in_thread(server):
    """A loopback listener for SERVER (its srv and port), served by its
    serve() in a thread."""
    server.srv = socket.socket()
    server.srv.bind(("127.0.0.1", 0))
    server.srv.listen(8)
    server.port = server.srv.getsockname()[1]
    threading.Thread(target=server.serve, daemon=True).start()


class EchoUpstream:
    """Sends back what it reads, both ways at once, until EOF."""

    def __init__(self):
        serve_in_thread(self)

    def serve(self):
        while True:
            s, _ = self.srv.accept()
            try:
                while True:
                    d = s.recv(1 << 16)
                    if not d:
                        break
                    s.sendall(d)
                s.shutdown(socket.SHUT_WR)
            except OSError:
                pass
            s.close()


class RawUpstream:
    """Answers each request head it reads with the next canned response,
    as raw bytes; closes after the last.  Counts connections."""

    def __init__(self, responses):
        self.responses = list(responses)
        self.accepted = 0
        serve_in_thread(self)

    def serve(self):
        while True:
            s, _ = self.srv.accept()
            self.accepted += 1
            buf = b""
            try:
                while self.responses:
                    while b"\r\n\r\n" not in buf:
                        d = s.recv(4096)
                        if not d:
                            raise ConnectionError
                        buf += d
                    buf = buf.split(b"\r\n\r\n", 1)[1]
                    s.sendall(self.responses.pop(0))
            except OSError:
                pass
            s.close()


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    p = s.getsockname()[1]
    s.close()
    return p


def closed_port():
    """A port where a connect is refused, and stays refused: a socket bound
    there without listening, so that neither another test's listener nor a
    connect's own ephemeral port (a TCP self-connect) can take it.  Returns
    (the socket, its port): keep the socket open while the port is used."""
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    return s, s.getsockname()[1]


def black_hole():
    """A listener that never accepts, its queue filled, so that a connect to
    it goes unanswered.  Returns (listener, port, the sockets filling it):
    keep all three open for as long as it is needed."""
    black = socket.socket()
    black.bind(("127.0.0.1", 0))
    black.listen(0)
    port = black.getsockname()[1]
    fillers = []
    for _ in range(8):
        f = socket.socket()
        f.setblocking(False)
        try:
            f.connect(("127.0.0.1", port))
        except BlockingIOError:
            pass
        fillers.append(f)
    time.sleep(0.2)
    return black, port, fillers


def read_all(s, enough=None):
    """What comes on S until the peer closes (or a timeout or reset), or
    until enough(what came so far) is true."""
    out = b""
    try:
        while not (enough and enough(out)):
            b = s.recv(65536)
            if not b:
                break
            out += b
    except (socket.timeout, ConnectionResetError):
        pass
    return out


def raw_until_close(port, data, src=None, timeout=5):
    """Sends DATA to the proxy (from the address SRC if given); returns
    what came back until it closed."""
    s = socket.socket()
    s.settimeout(timeout)
    if src:
        s.bind((src, 0))
    s.connect(("127.0.0.1", port))
    s.sendall(data)
    out = read_all(s)
    s.close()
    return out


def raw(port, data, timeout=5):
    """Sends DATA to the proxy; returns the first response: its head and
    the body its Content-Length announces, or what came until the proxy
    closed (egressd keeps client connections alive)."""
    def whole_response(out):
        if b"\r\n\r\n" not in out:
            return False
        cl = head_of(out)[1].get("content-length")
        return cl is not None and cl.isdigit() and len(body_of(out)) >= int(cl)

    s = socket.create_connection(("127.0.0.1", port), timeout=timeout)
    s.sendall(data)
    out = read_all(s, whole_response)
    s.close()
    return out


def head_of(resp):
    lines = resp.split(b"\r\n\r\n")[0].decode("latin-1").split("\r\n")
    status = int(lines[0].split()[1]) if lines and len(lines[0].split()) > 1 else 0
    hdrs = {}
    for l in lines[1:]:
        k, _, v = l.partition(":")
        hdrs[k.strip().lower()] = v.strip()
    return status, hdrs


def tunnel_get(pport, host, port, path, timeout=5):
    """CONNECT host:port, then GET path inside the tunnel with
    Connection: close.  Returns (CONNECT status, headers, response bytes)."""
    s = socket.create_connection(("127.0.0.1", pport), timeout=timeout)
    try:
        s.sendall(b"CONNECT %s:%d HTTP/1.1\r\nHost: %s:%d\r\n\r\n" % (host.encode(), port, host.encode(), port))
        head = b""
        while b"\r\n\r\n" not in head:
            b = s.recv(4096)
            if not b:
                break
            head += b
        st, h = head_of(head)
        if st != 200:
            return st, h, b""
        rest = head.split(b"\r\n\r\n", 1)[1]
        s.sendall(b"GET %s HTTP/1.1\r\nHost: %s\r\nConnection: close\r\n\r\n" % (path.encode(), host.encode()))
        while True:
            b = s.recv(65536)
            if not b:
                break
            rest += b
        return st, h, rest
    finally:
        s.close()


def body_of(resp):
    return resp.split(b"\r\n\r\n", 1)[1] if b"\r\n\r\n" in resp else b""


def start_egressd(egressd, policy, tmp, *extra, nofile=None, name="egressd", env=None):
    """egressd on a free loopback port, events to TMP/NAME.events, stderr
    to TMP/NAME.err.  NOFILE sets its RLIMIT_NOFILE (soft and hard)."""
    portfile = os.path.join(tmp, name + ".port")
    errpath = os.path.join(tmp, name + ".err")
    events = os.path.join(tmp, name + ".events")

    def limits():
        if nofile is not None:
            resource.setrlimit(resource.RLIMIT_NOFILE, (nofile, nofile))

    err = open(errpath, "w")
    p = subprocess.Popen([egressd, "--listen", "127.0.0.1:0", "--port-file", portfile, "--policy", policy,
                          "--events-path", events] + list(extra),
                         stdout=subprocess.DEVNULL, stderr=err, preexec_fn=limits, env=env)
    err.close()
    p.errpath, p.events = errpath, events
    for _ in range(200):
        if os.path.exists(portfile) and open(portfile).read().strip():
            p.port = int(open(portfile).read())
            return p
        if p.poll() is not None:
            break
        time.sleep(0.05)
    p.kill()
    sys.exit(f"{name} did not start: " + open(errpath).read())


def stop_egressd(p, what="egressd"):
    """SIGTERM; checks that egressd exits 0 and that its stderr holds no
    sanitizer report (ASan, LeakSanitizer, UBSan).  Returns its stderr."""
    if p.poll() is None:
        p.send_signal(signal.SIGTERM)
    try:
        rc = p.wait(timeout=20)
    except subprocess.TimeoutExpired:
        p.kill()
        rc = p.wait()
    err = open(p.errpath, errors="replace").read()
    bad = [l for l in err.splitlines() if "Sanitizer" in l or "runtime error:" in l]
    check(rc == 0 and not bad, f"{what}: exit {rc} after SIGTERM, no sanitizer report {bad[:3]}")
    return err


def events_of(p):
    try:
        return [json.loads(l) for l in open(p.events) if l.strip()]
    except FileNotFoundError:
        return []


ATTEMPT = "io.portarium.egress.attempt"
CONNECTION = "io.portarium.egress.connection"


def attempts_of(evs):
    """The attempt events (the library's) among egressd's events."""
    return [e for e in evs if e.get("type") == ATTEMPT]


def close_data(evs):
    """The data of the connection (close) events, each with its event's id."""
    return [dict(e["data"], eventId=e["id"]) for e in evs if e.get("type") == CONNECTION]


def rss_kib(pid):
    with open(f"/proc/{pid}/status") as f:
        for l in f:
            if l.startswith("VmRSS:"):
                return int(l.split()[1])
    return -1


def fd_count(pid):
    return len(os.listdir(f"/proc/{pid}/fd"))
