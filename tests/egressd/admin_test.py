#!/usr/bin/env python3
"""egressd's operation side: the admin listener (/healthz, /readyz,
/metrics and its hostile requests and limits), /metrics figures against the
close events of the same traffic, the per-client connection limit (127.0.0.1
held at its limit while 127.0.0.2 is served), policy reloads when the file
changes (a ConfigMap-style symlink swap, rename-into-place, writes in place,
a bad file, an unchanged one), the JSON log lines on stderr and --help."""
import argparse, json, os, re, signal, socket, subprocess, sys
import tempfile, threading, time

from gwlib import EchoUpstream, Upstream, black_hole, body_of, check, close_data, closed_port, finish, head_of, raw_until_close, read_all

ap = argparse.ArgumentParser()
ap.add_argument("--egressd", required=True)
a = ap.parse_args()

def raw(port, data, src=None, timeout=5):
    """(status, fields, body) of what came back until egressd closed."""
    out = raw_until_close(port, data, src, timeout)
    return (*head_of(out), body_of(out))


def admin_get(path, method="GET"):
    return raw(aport, f"{method} {path} HTTP/1.1\r\nHost: admin\r\n\r\n".encode())


def open_tunnel(port, dest_port, src=None):
    """CONNECT to 127.0.0.1:dest_port; returns (status, headers, socket or None)."""
    s = socket.socket()
    s.settimeout(5)
    if src:
        s.bind((src, 0))
    s.connect(("127.0.0.1", port))
    s.sendall(b"CONNECT 127.0.0.1:%d HTTP/1.1\r\n\r\n" % dest_port)
    head = b""
    while b"\r\n\r\n" not in head:
        b = s.recv(1)
        if not b:
            break
        head += b
    st, h = head_of(head)
    if st != 200:
        read_all(s)
        s.close()
        return st, h, None
    return st, h, s


def through(s, path):
    """A GET inside an open tunnel; returns the body."""
    s.sendall(b"GET %s HTTP/1.1\r\nHost: up\r\n\r\n" % path.encode())
    data = b""
    while b"\r\n\r\n" not in data:
        data += s.recv(4096)
    head, _, body = data.partition(b"\r\n\r\n")
    n = int(re.search(rb"Content-Length: (\d+)", head).group(1))
    while len(body) < n:
        body += s.recv(4096)
    return body.decode()


SAMPLE = re.compile(r'^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{(?:[a-zA-Z_][a-zA-Z0-9_]*="(?:[^"\\\n]|\\.)*",?)*\})? (\S+)$')


def metrics():
    """/metrics as {(name, ((label, value), ...)): float}, after checking
    the response and the exposition format line by line."""
    st, h, body = admin_get("/metrics")
    assert st == 200 and h.get("content-type") == "text/plain; version=0.0.4", (st, h)
    typed, out, bad = {}, {}, []
    for line in body.decode().splitlines():
        if line.startswith("# TYPE "):
            _, _, name, kind = line.split(" ", 3)
            if name in typed:
                bad.append("twice: " + line)
            typed[name] = kind
            continue
        if line.startswith("#"):
            continue
        m = SAMPLE.match(line)
        if not m:
            bad.append(line)
            continue
        name = m.group(1)
        base = re.sub(r"_(bucket|sum|count)$", "", name) if name not in typed else name
        if base not in typed:
            bad.append("untyped: " + line)
        labels = tuple(sorted(re.findall(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"', m.group(2) or "")))
        out[(name, labels)] = float(m.group(3))
    metrics.bad = bad
    metrics.typed = typed
    return out


def m_get(ms, name, **labels):
    return ms.get((name, tuple(sorted(labels.items()))), 0.0)


def m_sum(ms, name, **labels):
    return sum(v for (n, ls), v in ms.items() if n == name and all((k, v2) in ls for k, v2 in labels.items()))


class Proxy:
    def __init__(self, policy, events, *extra):
        self.p = subprocess.Popen([a.egressd, "--listen", "127.0.0.1:0", "--admin", "127.0.0.1:0", "--policy", policy,
                                   "--events-path", events, "--dns-cache", "0"] + list(extra),
                                  stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        self.lines = []
        self.ports = {}
        ready = threading.Event()

        def reader():
            for line in self.p.stderr:
                self.lines.append(line.rstrip("\n"))
                w = line.split()
                if len(w) == 2 and w[0] in ("PORT", "ADMIN_PORT"):
                    self.ports[w[0]] = int(w[1])
                    if len(self.ports) == 2:
                        ready.set()
            ready.set()

        self.t = threading.Thread(target=reader, daemon=True)
        self.t.start()
        if not ready.wait(10) or len(self.ports) != 2:
            self.p.kill()
            sys.exit("egressd did not start: " + "\n".join(self.lines))
        self.port, self.aport = self.ports["PORT"], self.ports["ADMIN_PORT"]

    def logs(self):
        return [json.loads(l) for l in list(self.lines) if l.startswith("{")]

    def stop(self):
        if self.p.poll() is None:
            self.p.send_signal(signal.SIGTERM)
        try:
            rc = self.p.wait(timeout=15)
        except subprocess.TimeoutExpired:
            self.p.kill()
            rc = -1
        self.t.join(5)
        return rc


def write_policy(path, ports):
    with open(path, "w") as f:
        json.dump({"egressAllowlist": [f"127.0.0.1/32:{p}" for p in ports], "egressDenylist": []}, f)


def wait_for(cond, secs=3):
    end = time.monotonic() + secs
    while time.monotonic() < end:
        if cond():
            return True
        time.sleep(0.05)
    return cond()


# --help documents every new option and the endpoints.
h = subprocess.run([a.egressd, "--help"], capture_output=True, text=True).stdout
check(all(w in h for w in ("--admin ADDR:PORT", "--max-client-connections N", "/healthz", "/readyz", "/metrics",
                           "ADMIN_PORT", "RELOAD", "..data", "client connection limit")),
      "--help documents --admin, --max-client-connections, the endpoints and reloads")

with tempfile.TemporaryDirectory() as tmp:
    up, up2 = Upstream(name="up"), Upstream(name="up2")
    closed, refused_port = closed_port()
    black, black_port, fillers = black_hole()

    # A ConfigMap volume: policy.json -> ..data/policy.json, ..data -> ..v1.
    cm = os.path.join(tmp, "cm")
    os.makedirs(os.path.join(cm, "..v1"))
    write_policy(os.path.join(cm, "..v1", "policy.json"), [up.port, refused_port, black_port])
    os.symlink("..v1", os.path.join(cm, "..data"))
    os.symlink("..data/policy.json", os.path.join(cm, "policy.json"))
    policy = os.path.join(cm, "policy.json")
    events = os.path.join(tmp, "events.jsonl")

    px = Proxy(policy, events, "--max-client-connections", "3", "--header-timeout-ms", "1500",
               "--connect-timeout-ms", "500")
    pport, aport = px.port, px.aport
    held = []
    try:
        # ---- admin endpoints -------------------------------------------------
        st, hd, body = admin_get("/healthz")
        check(st == 200 and body == b"ok\n", f"/healthz: {st} {body!r}")
        st, hd, body = admin_get("/readyz")
        check(st == 200 and body == b"ready\n", f"/readyz with a policy: {st} {body!r}")
        st, hd, body = admin_get("/readyz?verbose=1")
        check(st == 200, f"/readyz with a query: {st}")
        st, hd, body = admin_get("/nope")
        check(st == 404, f"unknown path: {st}")
        st, hd, body = admin_get("/HEALTHZ")
        check(st == 404, f"paths are case-sensitive: {st}")
        for method in ("POST", "HEAD", "DELETE"):
            st, hd, body = admin_get("/healthz", method)
            check(st == 405 and hd.get("allow") == "GET", f"{method} /healthz: {st} allow={hd.get('allow')}")
        for req, what in [(b"GARBAGE\r\n\r\n", "not HTTP"), (b"GET /healthz HTTP/1.1\r\nBad Header\r\n\r\n", "malformed header"),
                          (b"GET http://evil/healthz HTTP/1.1\r\n\r\n", "absolute-form target"),
                          (b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03", "TLS bytes")]:
            st, hd, body = raw(aport, req)
            check(st == 400, f"admin: {what} is 400 ({st})")
        st, hd, body = raw(aport, b"GET /healthz HTTP/1.1\r\nX-Big: " + b"a" * 20000 + b"\r\n\r\n")
        check(st == 431, f"admin: header block over 8 KiB is 431 ({st})")
        st, hd, body = raw(aport, b"GET /" + b"a" * 5000 + b" HTTP/1.1\r\n\r\n")
        check(st == 414, f"admin: long target is 414 ({st})")
        st, hd, body = raw(aport, b"GET /healthz HTTP/1.1\r\n\r\nGET /nope HTTP/1.1\r\n\r\n")
        check(st == 200 and body == b"ok\n", f"admin: one answer a connection, pipelined request ignored ({st} {body!r})")

        ms = metrics()
        check(not metrics.bad, f"exposition format: every sample well-formed and typed {metrics.bad[:3]}")
        want = {"egressd_connections_accepted_total": "counter", "egressd_connections_open": "gauge",
                "egressd_connections_refused_total": "counter", "egressd_bytes_total": "counter",
                "egressd_exchange_duration_seconds": "histogram", "egressd_upstream_connect_failures_total": "counter",
                "egressd_requests_total": "counter", "egressd_policy_reloads_total": "counter",
                "egressd_policy_reload_failures_total": "counter", "egressd_policy_info": "gauge",
                "egressd_draining": "gauge", "egress_checks_total": "counter", "egress_policy_swaps_total": "counter"}
        check(all(metrics.typed.get(k) == v for k, v in want.items()),
              f"metric families and types: {sorted(k for k, v in want.items() if metrics.typed.get(k) != v)} missing")
        digest0 = [dict(l)["digest"] for (n, l) in ms if n == "egressd_policy_info"]
        check(len(digest0) == 1 and re.fullmatch(r"[0-9a-f]{64}", digest0[0]), f"policy digest as an info metric: {digest0}")
        start = [l for l in px.logs() if l.get("msg") == "listening"]
        check(len(start) == 1 and start[0].get("listen") == f"127.0.0.1:{pport}" and start[0].get("admin") == f"127.0.0.1:{aport}"
              and start[0].get("digest") == digest0[0] and start[0].get("level") == "info" and "ts" in start[0],
              f"startup log line: {start}")

        # ---- traffic, then the figures against the close events ---------------
        st, hd, s = open_tunnel(pport, up.port)
        check(st == 200 and s and through(s, "/t1") == "hello from up /t1", "a tunnel to an allowed upstream")
        s.shutdown(socket.SHUT_WR)
        read_all(s)
        s.close()
        st, hd, s = open_tunnel(pport, up2.port)
        check(st == 403 and s is None, f"a denied destination: {st}")
        st, hd, s = open_tunnel(pport, refused_port)
        check(st == 502, f"nothing listening: {st}")
        st, hd, s = open_tunnel(pport, black_port)
        check(st == 504, f"upstream never answers: {st}")
        st, hd, body = raw(pport, b"GET http://127.0.0.1:%d/f HTTP/1.1\r\nHost: 127.0.0.1:%d\r\nConnection: close\r\n\r\n" % (up.port, up.port))
        check(st == 200 and body == b"hello from up /f", f"a forwarded exchange: {st} {body!r}")
        st, hd, body = raw(pport, b"NOT HTTP\r\n\r\n")
        check(st == 400, f"a bad request to the proxy: {st}")
        s = socket.create_connection(("127.0.0.1", pport))
        s.close()  # a connection that asks nothing
        wait_for(lambda: m_get(metrics(), "egressd_connections_accepted_total") == 7
                 and m_get(metrics(), "egressd_connections_open") == 0)

        ms = metrics()
        closes = close_data(json.loads(l) for l in open(events))
        check(m_get(ms, "egressd_connections_accepted_total") == 7, f"connections accepted: {m_get(ms, 'egressd_connections_accepted_total')} (7 made)")
        check(m_get(ms, "egressd_connections_open") == 0, "connections open: 0 after they closed")
        check(m_get(ms, "egressd_bytes_total", direction="up") == sum(e["bytesUp"] for e in closes) > 0
              and m_get(ms, "egressd_bytes_total", direction="down") == sum(e["bytesDown"] for e in closes) > 0,
              f"bytes each way equal the close events' sums ({m_get(ms, 'egressd_bytes_total', direction='up')}, "
              f"{m_get(ms, 'egressd_bytes_total', direction='down')})")
        req = lambda **kw: m_sum(ms, "egressd_requests_total", **kw)
        check(req(kind="tunnel", status="200") == 1 and req(kind="tunnel", status="403", ended="denied") == 1
              and req(kind="tunnel", status="502", ended="connect_failed") == 1
              and req(kind="tunnel", status="504", ended="connect_timeout") == 1
              and req(kind="forward", status="200") == 1 and req(kind="none", status="400", ended="bad_request") == 1
              and req() == 6, f"requests by kind, status and ending: {[(k, v) for k, v in ms.items() if k[0] == 'egressd_requests_total']}")
        check(m_get(ms, "egressd_upstream_connect_failures_total", reason="refused") == 1
              and m_get(ms, "egressd_upstream_connect_failures_total", reason="timeout") == 1, "upstream connect failures: refused 1, timeout 1")
        for kind, n in (("tunnel", 4), ("forward", 1)):
            buckets = sorted(((float(dict(l)["le"]), v) for (nm, l), v in ms.items()
                              if nm == "egressd_exchange_duration_seconds_bucket" and dict(l)["kind"] == kind))
            count = m_get(ms, "egressd_exchange_duration_seconds_count", kind=kind)
            total = m_get(ms, "egressd_exchange_duration_seconds_sum", kind=kind)
            ev = [e["durationMs"] / 1000 for e in closes if e["kind"] == kind]
            mono = all(buckets[i][1] <= buckets[i + 1][1] for i in range(len(buckets) - 1))
            check(count == n == len(ev) and buckets[-1] == (float("inf"), count) and mono and abs(total - sum(ev)) < 0.002 * n
                  and all(v == sum(1 for d in ev if d <= le) for le, v in buckets),
                  f"{kind} duration histogram: count {count}, sum {total:.3f} vs events {sum(ev):.3f}, +Inf {buckets[-1]}")
        check(m_get(ms, "egress_checks_total") == 5, f"the checker's own counters are there: egress_checks_total {m_get(ms, 'egress_checks_total')}")

        # ---- per-client limit -------------------------------------------------
        for i in range(3):
            st, hd, s = open_tunnel(pport, up.port)
            held.append(s)
        check(all(held) and len(held) == 3, "three tunnels from 127.0.0.1 at its limit")
        check(m_get(metrics(), "egressd_connections_open") == 3, "connections open: 3")
        st, hd, s = open_tunnel(pport, up.port)
        check(st == 503 and 'details="client connection limit"' in hd.get("proxy-status", ""),
              f"a fourth from 127.0.0.1: {st} {hd.get('proxy-status')}")
        st, hd, s2 = open_tunnel(pport, up.port, src="127.0.0.2")
        check(st == 200 and s2 and through(s2, "/other") == "hello from up /other", f"127.0.0.2 still served: {st}")
        check(all(through(s, f"/held{i}") == f"hello from up /held{i}" for i, s in enumerate(held)), "held tunnels still work")
        held.pop().close()
        check(wait_for(lambda: m_get(metrics(), "egressd_connections_open") == 3), "a closed tunnel frees its slot")
        st, hd, s = open_tunnel(pport, up.port)
        check(st == 200 and s, f"127.0.0.1 served again below its limit: {st}")
        held.append(s)
        # Connections count, not requests: an idle one holds a slot too.
        held.pop().close()
        wait_for(lambda: m_get(metrics(), "egressd_connections_open") == 3)
        idle = socket.create_connection(("127.0.0.1", pport))
        time.sleep(0.1)
        st, hd, s = open_tunnel(pport, up.port)
        check(st == 503, f"an idle connection counts against the limit: {st}")
        # A flood: every one refused, the log says so at most once a second.
        t0 = time.monotonic()
        flood = 0
        while time.monotonic() - t0 < 2.2:
            st, hd, _ = raw(pport, b"CONNECT 127.0.0.1:%d HTTP/1.1\r\n\r\n" % up.port)
            flood += st == 503
            time.sleep(0.005)
        idle.close()
        time.sleep(1.3)
        ms = metrics()
        refused = m_get(ms, "egressd_connections_refused_total", limit="client")
        lines = [l for l in px.logs() if l.get("msg") == "connections refused by a limit" and l.get("limit") == "client"]
        stamps = [time.mktime(time.strptime(l["ts"][:19], "%Y-%m-%dT%H:%M:%S")) + int(l["ts"][20:23]) / 1000 for l in lines]
        check(flood > 30 and refused == flood + 2, f"refusals counted: {refused} (flood {flood} + 2)")
        check(sum(l["refused"] for l in lines) == refused and 3 <= len(lines) <= 5
              and all(b - c >= 0.99 for b, c in zip(stamps[1:], stamps)) and lines[-1].get("lastClient") == "127.0.0.1",
              f"refusals logged at most once a second with counts: {len(lines)} lines for {refused}")
        check(m_sum(ms, "egressd_requests_total", kind="none", status="503", ended="client_limit") == refused,
              "refusals as requests with status 503")
        s2.close()
        for s in held:
            s.close()
        held = []

        # ---- admin limits: 64 at once, idle ones timed out ---------------------
        hogs = [socket.create_connection(("127.0.0.1", aport)) for _ in range(64)]
        time.sleep(0.3)
        st, hd, body = admin_get("/healthz")
        check(st == 503, f"65th admin connection: {st}")
        t0 = time.monotonic()
        deadline = t0 + 4
        ended = []
        for s in hogs:
            s.settimeout(max(0.01, deadline - time.monotonic()))
            try:
                ended.append(s.recv(1) == b"")
            except (socket.timeout, ConnectionResetError):
                ended.append(False)
        took = time.monotonic() - t0
        check(all(ended) and 0.8 < took < 3, f"idle admin connections closed after --header-timeout-ms ({took:.2f}s)")
        for s in hogs:
            s.close()
        st, hd, body = admin_get("/healthz")
        check(st == 200, f"admin served again: {st}")
        check(m_get(metrics(), "egressd_connections_accepted_total") == 7 + 3 + 1 + 2 + 2 + flood,
              "admin connections are not proxy connections")

        # ---- reloads -----------------------------------------------------------
        def reloads(trigger):
            return m_get(metrics(), "egressd_policy_reloads_total", trigger=trigger)

        def failures_(trigger):
            return m_get(metrics(), "egressd_policy_reload_failures_total", trigger=trigger)

        sources = iter(f"127.0.1.{i}" for i in range(1, 255))

        def allowed(port):
            # Each from its own address: closes in flight hold no slot of the next.
            st, hd, s = open_tunnel(pport, port, src=next(sources))
            if s:
                s.close()
            return st == 200

        def digest():
            return [dict(l)["digest"] for (n, l) in metrics() if n == "egressd_policy_info"][0]

        def swap(version, ports):
            os.makedirs(os.path.join(cm, version))
            write_policy(os.path.join(cm, version, "policy.json"), ports)
            os.symlink(version, os.path.join(cm, "..data_tmp"))
            os.rename(os.path.join(cm, "..data_tmp"), os.path.join(cm, "..data"))

        swap("..v2", [up2.port])
        check(wait_for(lambda: reloads("file") == 1) and allowed(up2.port) and not allowed(up.port),
              "ConfigMap swap of ..data: the new policy is in force")
        check(digest() != digest0[0], "the digest metric follows the reload")
        swap("..v3", [up2.port])
        time.sleep(0.6)
        check(reloads("file") == 1 and failures_("file") == 0, "a swap to the same policy is not a reload")
        # Rename into place over the symlink (an editor's save).
        fresh = os.path.join(cm, ".policy.json.tmp")
        write_policy(fresh, [up.port])
        os.rename(fresh, policy)
        check(wait_for(lambda: reloads("file") == 2) and allowed(up.port) and not allowed(up2.port),
              "rename-into-place: the new policy is in force")
        with open(policy, "w") as f:
            f.write('{"egressAllowlist": [')
        check(wait_for(lambda: failures_("file") == 1) and allowed(up.port) and reloads("file") == 2,
              "a bad file: the old policy stays, the failure counted")
        write_policy(policy, [up.port, up2.port])
        check(wait_for(lambda: reloads("file") == 3) and allowed(up.port) and allowed(up2.port),
              "a good file written in place replaces it")
        with open(os.path.join(cm, "unrelated.txt"), "w") as f:
            f.write("x")
        time.sleep(0.4)
        px.p.send_signal(signal.SIGHUP)
        check(wait_for(lambda: any(l.get("msg") == "policy unchanged" for l in px.logs()))
              and reloads("signal") == 0 and reloads("file") == 3, "SIGHUP with nothing changed: logged, not a reload")
        write_policy(policy, [up2.port])
        px.p.send_signal(signal.SIGHUP)
        check(wait_for(lambda: reloads("signal") + reloads("file") == 4) and not allowed(up.port), "SIGHUP still reloads")
        lg = px.logs()
        ok_lines = [l for l in lg if l.get("msg") == "policy reloaded"]
        bad_lines = [l for l in lg if l.get("level") == "error" and "previous policy stays" in l.get("msg", "")]
        check(len(ok_lines) == 4 and all(re.fullmatch(r"[0-9a-f]{64}", l.get("digest", "")) for l in ok_lines)
              and [l["trigger"] for l in ok_lines][:3] == ["file"] * 3,
              f"each reload logged with its trigger and digest ({len(ok_lines)})")
        check(len(bad_lines) == 1 and bad_lines[0].get("trigger") == "file" and "JSON" in bad_lines[0].get("detail", ""),
              f"the failed reload logged with why: {bad_lines}")

        # ---- drain -------------------------------------------------------------
        write_policy(policy, [up.port])
        px.p.send_signal(signal.SIGHUP)
        wait_for(lambda: allowed(up.port))
        wait_for(lambda: m_get(metrics(), "egressd_connections_open") == 0)
        st, hd, s = open_tunnel(pport, up.port)
        px.p.send_signal(signal.SIGTERM)
        check(wait_for(lambda: admin_get("/readyz")[0] == 503), "draining: /readyz 503")
        st, hd, body = admin_get("/readyz")
        check(body == b"draining\n" and admin_get("/healthz")[0] == 200, "draining: /healthz still 200")
        check(m_get(metrics(), "egressd_draining") == 1, "draining: the gauge says so")
        check(through(s, "/during") == "hello from up /during", "draining: the open tunnel goes on")
        s.close()
        rc = px.p.wait(timeout=5)
        check(rc == 0, f"exit {rc} once the last tunnel closed")
        drains = [l for l in px.logs() if l.get("msg") == "draining"]
        check(len(drains) == 1 and drains[0].get("open") == 1 and drains[0].get("signal") == "SIGTERM", f"drain logged: {drains}")
    finally:
        for s in held:
            s.close()
        px.stop()
    stray = [l for l in px.lines if not l.startswith("{") and l.split()[0:1] not in (["PORT"], ["ADMIN_PORT"])]
    check(not stray, f"nothing but JSON lines on stderr (no sanitizer report): {stray[:5]}")

    # ---- the global limit, counted and logged ------------------------------------
    p2 = Proxy(policy, events, "--max-connections", "1")
    try:
        hold = socket.create_connection(("127.0.0.1", p2.port))
        time.sleep(0.1)
        st, hd, body = raw(p2.port, b"CONNECT 127.0.0.1:%d HTTP/1.1\r\n\r\n" % up.port)
        aport = p2.aport
        ms = metrics()
        check(st == 503 and m_get(ms, "egressd_connections_refused_total", limit="connections") == 1
              and m_get(ms, "egressd_connections_accepted_total") == 2, f"--max-connections refusal counted: {st}")
        check(admin_get("/healthz")[0] == 200, "the admin listener answers while the proxy is full")
        # A second refusal within the second waits for the next line; the
        # exit comes first and says it.
        st2, hd, body = raw(p2.port, b"CONNECT 127.0.0.1:%d HTTP/1.1\r\n\r\n" % up.port)
        hold.close()
    finally:
        rc = p2.stop()
    lines = [l for l in p2.logs() if l.get("msg") == "connections refused by a limit"]
    check(st2 == 503 and len(lines) == 2 and all(l.get("limit") == "connections" and l.get("refused") == 1
                                                   and l.get("max") == 1 for l in lines),
          f"--max-connections refusals logged, the last at exit: {st2} {lines}")
    stray = [l for l in p2.lines if not l.startswith("{") and l.split()[0:1] not in (["PORT"], ["ADMIN_PORT"])]
    check(rc == 0 and not stray, f"exit {rc}, nothing but JSON lines on stderr: {stray[:5]}")

    # Refusals hold no slot of --max-connections: a client flooding past
    # its own limit (and keeping the refused connections open) leaves
    # room for the others.
    p3 = Proxy(policy, events, "--max-connections", "4", "--max-client-connections", "1")
    try:
        st, hd, t1 = open_tunnel(p3.port, up.port)
        refused3 = []
        for _ in range(8):
            s = socket.create_connection(("127.0.0.1", p3.port), timeout=5)
            refused3.append((s, read_all(s)))
        st2, hd, t2 = open_tunnel(p3.port, up.port, src="127.0.0.2")
        check(t1 and all(r.startswith(b"HTTP/1.1 503") and b"client connection limit" in r for s, r in refused3)
              and st2 == 200 and t2 and through(t2, "/room") == "hello from up /room",
              f"refused connections left open hold no slot: 127.0.0.2 answered {st2}")
        for s, r in refused3:
            s.close()
        for t in (t1, t2):
            if t:
                t.close()
    finally:
        rc = p3.stop()
    check(rc == 0, f"exit {rc}")

    # Bulk tunnels' 4 MiB relay buffers: made on demand, at most
    # --bulk-buffers, kept for reuse; with none allowed every read of a bulk
    # tunnel moves 64 KiB and is counted as a shortfall, and the bytes still
    # arrive whole and in order.
    echo = EchoUpstream()
    bulk_policy = os.path.join(tmp, "bulk.json")
    write_policy(bulk_policy, [echo.port])
    blob = os.urandom(3 << 20)
    for limit in ("0", "16"):
        pb = Proxy(bulk_policy, events, "--bulk-buffers", limit)
        back, ms = b"", {}
        try:
            st, hd, s = open_tunnel(pb.port, echo.port)
            if s:
                def pour(s=s):
                    s.sendall(blob)
                    s.shutdown(socket.SHUT_WR)
                pourer = threading.Thread(target=pour)
                pourer.start()
                back = read_all(s)
                pourer.join()
                s.close()
            aport = pb.aport
            ms = metrics()
        finally:
            rc = pb.stop()
        made = m_get(ms, "egressd_relay_buffers")
        short = m_get(ms, "egressd_relay_buffer_shortfalls_total")
        want = made == 0 and short > 0 if limit == "0" else 1 <= made <= 2 and short == 0
        check(rc == 0 and back == blob and want,
              f"--bulk-buffers {limit}: 3 MiB echoed whole ({len(back)}), {made:g} buffers made, {short:g} shortfalls")

    # Clients that stop reading cannot make egressd hold a large buffer per
    # tunnel: four bulk tunnels whose clients read 1 MiB and then nothing,
    # under --bulk-buffers 2, hold two 4 MiB buffers between them (the
    # others wait with 64 KiB ones); once the clients read again every byte
    # arrives, in order.
    SOURCE = 8 << 20
    source = socket.socket()
    source.bind(("127.0.0.1", 0))
    source.listen(8)

    def pour_all(c):
        try:
            c.sendall(bytes(range(256)) * (SOURCE // 256))
        except OSError:
            pass
        c.close()

    def serve_source():
        while True:
            try:
                c, _ = source.accept()
            except OSError:
                return
            threading.Thread(target=pour_all, args=(c,), daemon=True).start()

    threading.Thread(target=serve_source, daemon=True).start()
    write_policy(bulk_policy, [source.getsockname()[1]])
    pb = Proxy(bulk_policy, events, "--bulk-buffers", "2")
    tunnels, got, ms_stalled = [], [], {}
    try:
        for _ in range(4):
            st, hd, s = open_tunnel(pb.port, source.getsockname()[1])
            if s:
                s.settimeout(10)
                first = b""
                while len(first) < (1 << 20):
                    d = s.recv(1 << 16)
                    if not d:
                        break
                    first += d
                tunnels.append((s, first))
        time.sleep(1)
        aport = pb.aport
        ms_stalled = metrics()
        for s, first in tunnels:
            got.append(first + read_all(s))
            s.close()
    finally:
        rc = pb.stop()
        source.close()
    made = m_get(ms_stalled, "egressd_relay_buffers")
    short = m_get(ms_stalled, "egressd_relay_buffer_shortfalls_total")
    want = bytes(range(256)) * (SOURCE // 256)
    check(rc == 0 and len(tunnels) == 4 and made == 2 and short >= 2 and all(g == want for g in got),
          f"four stalled readers under --bulk-buffers 2: {made:g} buffers made, {short:g} shortfalls, "
          f"then {[len(g) for g in got]} bytes each, whole")
    r = subprocess.run([a.egressd, "--policy", policy, "--bulk-buffers", "1025"], capture_output=True, text=True)
    check(r.returncode == 64 and "--bulk-buffers" in r.stderr, f"--bulk-buffers 1025: exit {r.returncode}")

    # Usage errors.
    r = subprocess.run([a.egressd, "--policy", policy, "--admin", "nowhere"], capture_output=True, text=True)
    check(r.returncode == 64 and "--admin" in r.stderr, f"--admin without a port: exit {r.returncode}")
    r = subprocess.run([a.egressd, "--policy", policy, "--max-client-connections", "-1"], capture_output=True, text=True)
    check(r.returncode == 64, f"--max-client-connections -1: exit {r.returncode}")

finish("egressd-admin")
