#!/usr/bin/env python3
"""egressd under hostile clients, hostile upstreams and hostile operators:
slowloris, 10 000 idle connections at once, file descriptors exhausted, a
storm of SIGHUPs alternating a good and a malformed policy file while
requests run, an upstream that resets mid-response and one that accepts
and never answers.

Destinations are loopback literals opened by CIDR rules, so no DNS is
involved.  After each part egressd must still serve a plain request; at the
end each egressd must exit 0 on SIGTERM with no sanitizer report on its
stderr (gwlib.stop_egressd), which is what makes an ASan+UBSan build of
egressd fail this test on a memory error or a leak."""
import argparse, json, os, resource, select, signal, socket, struct, tempfile, threading, time
from gwlib import (Upstream, black_hole, body_of, check, close_data, events_of, fd_count, finish, head_of, raw, rss_kib, start_egressd,
                   stop_egressd, tunnel_get)

ap = argparse.ArgumentParser()
ap.add_argument("--egressd", required=True)
ap.add_argument("--idle-clients", type=int, default=10000)
a = ap.parse_args()

# The test itself holds the idle clients: room for them and for upstreams.
soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
want = a.idle_clients + 1000
if hard != resource.RLIM_INFINITY and hard < want:
    check(False, f"RLIMIT_NOFILE hard limit {hard} holds {a.idle_clients} idle clients (needs {want})")
    finish("egressd-hostile")
resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))


def served(pport, up, what):
    st, _, resp = tunnel_get(pport, "127.0.0.1", up.port, "/" + what.replace(" ", "-"))
    return check(st == 200 and body_of(resp).startswith(b"hello from 127.0.0.1"),
                 f"{what}: a CONNECT is served ({st} {body_of(resp)[:40]!r})")


def read_until_closed(s, limit):
    """Bytes read until EOF or reset, and the time that took (or None if
    the peer was still open after LIMIT seconds)."""
    t0 = time.monotonic()
    out = b""
    s.settimeout(limit)
    try:
        while True:
            b = s.recv(65536)
            if not b:
                break
            out += b
    except socket.timeout:
        return out, None
    except ConnectionResetError:
        pass
    return out, time.monotonic() - t0


class RawUpstream:
    """A listener whose every connection is handled by BEHAVE(sock)."""

    def __init__(self, behave):
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(64)
        self.port = self.sock.getsockname()[1]
        self.accepted = 0
        self.held = []

        def loop():
            while True:
                try:
                    c, _ = self.sock.accept()
                except OSError:
                    return
                self.accepted += 1
                self.held.append(c)
                threading.Thread(target=behave, args=(c,), daemon=True).start()

        threading.Thread(target=loop, daemon=True).start()


def reset_mid_response(c):
    """Reads the request head, sends a head announcing 100000 bytes and 5000
    of them, then resets the connection (SO_LINGER 0)."""
    data = b""
    while b"\r\n\r\n" not in data:
        b = c.recv(4096)
        if not b:
            return
        data += b
    c.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 100000\r\n\r\n" + b"x" * 5000)
    time.sleep(0.2)
    c.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    c.close()


def reset_mid_bulk(c):
    """Sends 2 MiB at once (a tunnel past its hand-over to large moves),
    then resets the connection."""
    try:
        c.sendall(b"y" * (2 << 20))
        time.sleep(0.3)
        c.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    except OSError:
        pass
    c.close()


def pour_until_failed(c):
    """Sends until the connection fails."""
    try:
        while True:
            c.sendall(b"z" * 65536)
    except OSError:
        pass
    c.close()


def silent(c):
    """Accepts and never reads nor answers; the connection stays open."""


def serve_late(black, fillers, delay):
    """Makes black_hole's listener answer after DELAY seconds: its queue is
    emptied, so the connect egressd started meanwhile (its SYN dropped
    while the queue was full) gets in when the SYN is sent again, about a
    second after the first.  Every connection that then sends a request is
    answered "late" and closed."""
    def run():
        time.sleep(delay)
        for f in fillers:
            f.close()
        black.settimeout(0.5)
        end = time.monotonic() + 5
        while time.monotonic() < end:
            try:
                c, _ = black.accept()
            except socket.timeout:
                continue
            c.settimeout(1)
            try:
                if c.recv(4096):
                    c.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 4\r\nConnection: close\r\n\r\nlate")
            except OSError:
                pass
            c.close()
    th = threading.Thread(target=run, daemon=True)
    th.start()
    return th


with tempfile.TemporaryDirectory() as tmp:
    up = Upstream("127.0.0.1")
    resetter = RawUpstream(reset_mid_response)
    bulk_resetter = RawUpstream(reset_mid_bulk)
    pourer = RawUpstream(pour_until_failed)
    mute = RawUpstream(silent)
    late_kinds = ("tunnel", "forward")
    late = {kind: black_hole() for kind in late_kinds}
    good = {"egressAllowlist": [f"127.0.0.1/32:{p}" for p in
                                (up.port, resetter.port, bulk_resetter.port, pourer.port, mute.port) + tuple(late[k][1] for k in late_kinds)],
            "egressDenylist": []}
    policy = os.path.join(tmp, "policy.json")

    def put_policy(text):
        # Whole files only: egressd may read it at any moment.
        with open(policy + ".new", "w") as f:
            f.write(text)
        os.replace(policy + ".new", policy)

    good_text = json.dumps(good)
    put_policy(good_text)

    proxy = start_egressd(a.egressd, policy, tmp, "--header-timeout-ms", "1500", "--idle-timeout-ms", "1500",
                          "--connect-timeout-ms", "2000", name="main")
    pport = proxy.port
    others = []
    try:
        served(pport, up, "at start")

        # ---- slowloris: one byte of the head every 0.2 s -----------------
        slow = socket.create_connection(("127.0.0.1", pport), timeout=5)
        head = b"CONNECT 127.0.0.1:%d HTTP/1.1\r\nHost: 127.0.0.1:%d\r\nUser-Agent: slow-loris\r\n\r\n" % (up.port, up.port)
        slow_result = {}

        def trickle():
            t0 = time.monotonic()
            for i in range(len(head)):
                try:
                    slow.send(head[i:i + 1])
                except OSError:
                    break
                r, _, _ = select.select([slow], [], [], 0.2)
                if r:
                    break
            got, _ = read_until_closed(slow, 3)
            slow_result["got"], slow_result["t"], slow_result["sent"] = got, time.monotonic() - t0, i

        th = threading.Thread(target=trickle)
        th.start()
        served_meanwhile = 0
        while th.is_alive():
            st, _, resp = tunnel_get(pport, "127.0.0.1", up.port, "/meanwhile")
            served_meanwhile += st == 200 and body_of(resp).startswith(b"hello")
            time.sleep(0.05)
        th.join()
        slow.close()
        check(slow_result["got"].startswith(b"HTTP/1.1 408") and 1.3 < slow_result["t"] < 3.5,
              f"slowloris answered 408 at --header-timeout-ms 1500: {slow_result['got'][:12]!r} after "
              f"{slow_result['t']:.2f}s, {slow_result['sent']} of {len(head)} bytes sent")
        check(served_meanwhile >= 5, f"other clients served meanwhile ({served_meanwhile})")

        # ---- an upstream that resets mid-response ------------------------
        for kind, req in [("tunnel", None),
                          ("forward", b"GET http://127.0.0.1:%d/r HTTP/1.1\r\nHost: 127.0.0.1:%d\r\n\r\n"
                           % (resetter.port, resetter.port))]:
            s = socket.create_connection(("127.0.0.1", pport), timeout=5)
            if kind == "tunnel":
                s.sendall(b"CONNECT 127.0.0.1:%d HTTP/1.1\r\n\r\n" % resetter.port)
                ack = s.recv(4096)
                s.sendall(b"GET /r HTTP/1.1\r\nHost: x\r\n\r\n")
            else:
                ack = b"HTTP/1.1 200"
                s.sendall(req)
            got, took = read_until_closed(s, 5)
            s.close()
            check(ack.startswith(b"HTTP/1.1 200") and b"Content-Length: 100000" in got and body_of(got) == b"x" * 5000
                  and took is not None and took < 1.4,
                  f"upstream reset mid-response ({kind}): the 5000 bytes that came relayed, then the client "
                  f"closed in {took if took is None else round(took, 2)}s (idle timeout 1.5 s), {len(body_of(got))} body bytes")
        served(pport, up, "after upstream resets")

        # ---- resets in a bulk tunnel (relayed in large moves) --------------
        s = socket.create_connection(("127.0.0.1", pport), timeout=5)
        s.sendall(b"CONNECT 127.0.0.1:%d HTTP/1.1\r\n\r\n" % bulk_resetter.port)
        got, took = read_until_closed(s, 5)
        s.close()
        check(got.startswith(b"HTTP/1.1 200") and len(body_of(got)) >= 256 << 10 and set(body_of(got)) == {ord("y")}
              and took is not None and took < 1.4,
              f"upstream reset in a bulk tunnel: {len(body_of(got))} bytes relayed, then closed in "
              f"{took if took is None else round(took, 2)}s (idle timeout 1.5 s)")
        s = socket.create_connection(("127.0.0.1", pport), timeout=5)
        s.sendall(b"CONNECT 127.0.0.1:%d HTTP/1.1\r\n\r\n" % pourer.port)
        first = b""
        while len(first) < (1 << 20):
            d = s.recv(65536)
            if not d:
                break
            first += d
        s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        s.close()
        check(len(first) >= 1 << 20, f"a client reading a bulk tunnel ({len(first)} bytes), then resetting it")
        time.sleep(0.3)
        served(pport, up, "after resets in bulk tunnels")
        bulk_closes = {e["port"]: e for e in close_data(events_of(proxy))
                       if e.get("port") in (bulk_resetter.port, pourer.port)}
        b_up, b_cl = bulk_closes.get(bulk_resetter.port, {}), bulk_closes.get(pourer.port, {})
        check(b_up.get("relay") == "buffer" and b_up.get("ended") == "upstream_error"
              and b_cl.get("relay") == "buffer" and b_cl.get("ended") == "client_error" and b_cl.get("bytesDown", 0) >= 1 << 20,
              f"bulk resets: close events {[(e.get('relay'), e.get('ended'), e.get('bytesDown')) for e in (b_up, b_cl)]}")

        # ---- an upstream that accepts and never answers -------------------
        for kind in ("tunnel", "forward"):
            s = socket.create_connection(("127.0.0.1", pport), timeout=5)
            if kind == "tunnel":
                s.sendall(b"CONNECT 127.0.0.1:%d HTTP/1.1\r\n\r\n" % mute.port)
                ack = s.recv(4096)
                s.sendall(b"GET /m HTTP/1.1\r\nHost: x\r\n\r\n")
            else:
                ack = b""
                s.sendall(b"GET http://127.0.0.1:%d/m HTTP/1.1\r\nHost: 127.0.0.1:%d\r\n\r\n" % (mute.port, mute.port))
            got, took = read_until_closed(s, 5)
            s.close()
            check((kind == "forward" or ack.startswith(b"HTTP/1.1 200")) and took is not None and 1.2 < took < 4,
                  f"silent upstream ({kind}): closed at --idle-timeout-ms 1500 "
                  f"({took if took is None else round(took, 2)}s, {got[:12]!r})")
        time.sleep(0.1)
        mute_closes = [e for e in close_data(events_of(proxy)) if e.get("port") == mute.port]
        check(sorted(e["kind"] for e in mute_closes if e["ended"] == "idle_timeout") == ["forward", "tunnel"],
              f"silent upstream: close events ended idle_timeout {[(e['kind'], e['ended']) for e in mute_closes]}")
        reset_closes = [e for e in close_data(events_of(proxy)) if e.get("port") == resetter.port]
        check(len(reset_closes) == 2 and all(e["ended"] != "idle_timeout" and e["bytesDown"] >= 5000 for e in reset_closes),
              f"upstream reset: close events {[(e['kind'], e['ended'], e['bytesDown']) for e in reset_closes]}")

        # ---- an upstream slow to accept ------------------------------------
        # The connect is still under way when connect(2) returns (most on
        # loopback are not): egressd must watch it and go on when it
        # completes, a second later, within --connect-timeout-ms 2000.
        for kind in late_kinds:
            black, black_port, fillers = late[kind]
            server = serve_late(black, fillers, 0.3)
            s = socket.create_connection(("127.0.0.1", pport), timeout=5)
            t0 = time.monotonic()
            if kind == "tunnel":
                s.sendall(b"CONNECT 127.0.0.1:%d HTTP/1.1\r\n\r\n" % black_port)
                s.settimeout(4)
                ack = s.recv(4096)
                s.sendall(b"GET /late HTTP/1.1\r\nHost: x\r\n\r\n")
            else:
                ack = b"HTTP/1.1 200"
                s.sendall(b"GET http://127.0.0.1:%d/late HTTP/1.1\r\nHost: 127.0.0.1:%d\r\nConnection: close\r\n\r\n"
                          % (black_port, black_port))
            got, _ = read_until_closed(s, 4)
            took = time.monotonic() - t0
            s.close()
            server.join()
            black.close()
            check(ack.startswith(b"HTTP/1.1 200") and got.startswith(b"HTTP/1.1 200") and body_of(got) == b"late"
                  and took > 0.8,
                  f"upstream slow to accept ({kind}): the connect watched until it completed after {took:.2f}s, "
                  f"then relayed ({ack[:12]!r}, {got[:12]!r}, body {body_of(got)!r})")
        time.sleep(0.1)
        late_closes = [e for e in close_data(events_of(proxy))
                       if e.get("port") in {late[k][1] for k in late_kinds}]
        check(sorted((e["kind"], e["status"]) for e in late_closes) == [("forward", 200), ("tunnel", 200)],
              f"upstream slow to accept: close events {[(e['kind'], e['status'], e['ended']) for e in late_closes]}")
        served(pport, up, "after upstreams slow to accept")

        # ---- SIGHUP storm ------------------------------------------------
        # The malformed file never replaces the policy in force, so the good
        # policy rules throughout: every request to the allowed upstream
        # must succeed and every request to a port neither opens must be
        # refused 403 -- none may fail any other way, nor hang.
        denied_port = mute.port + 1 if mute.port + 1 not in (up.port, resetter.port) else mute.port + 2
        outcomes = {"allowed_ok": 0, "allowed_bad": [], "denied_403": 0, "denied_bad": []}
        stop = threading.Event()

        def requests():
            i = 0
            while not stop.is_set():
                i += 1
                try:
                    if i % 3 == 0:
                        st, h = head_of(raw(pport, b"CONNECT 127.0.0.1:%d HTTP/1.1\r\n\r\n" % denied_port))
                        if st == 403:
                            outcomes["denied_403"] += 1
                        else:
                            outcomes["denied_bad"].append(st)
                    elif i % 3 == 1:
                        st, _, resp = tunnel_get(pport, "127.0.0.1", up.port, f"/storm{i}")
                        if st == 200 and body_of(resp) == f"hello from 127.0.0.1 /storm{i}".encode():
                            outcomes["allowed_ok"] += 1
                        else:
                            outcomes["allowed_bad"].append((st, resp[:30]))
                    else:
                        resp = raw(pport, b"GET http://127.0.0.1:%d/f%d HTTP/1.1\r\nHost: 127.0.0.1:%d\r\nConnection: close\r\n\r\n"
                                   % (up.port, i, up.port))
                        if head_of(resp)[0] == 200 and body_of(resp) == f"hello from 127.0.0.1 /f{i}".encode():
                            outcomes["allowed_ok"] += 1
                        else:
                            outcomes["allowed_bad"].append((head_of(resp)[0], resp[:30]))
                except OSError as e:
                    outcomes["allowed_bad"].append(repr(e))

        workers = [threading.Thread(target=requests) for _ in range(3)]
        for w in workers:
            w.start()
        bad_text = good_text[: len(good_text) // 2]  # cut mid-way: not JSON
        n_hups = 400
        for i in range(n_hups):
            put_policy(good_text if i % 2 else bad_text)
            proxy.send_signal(signal.SIGHUP)
            time.sleep(0.005)
        put_policy(good_text)
        time.sleep(0.3)
        stop.set()
        for w in workers:
            w.join(timeout=15)
        check(proxy.poll() is None, f"alive after {n_hups} SIGHUPs")
        check(not outcomes["allowed_bad"] and outcomes["allowed_ok"] >= 30,
              f"SIGHUP storm: {outcomes['allowed_ok']} allowed requests succeeded, failed: {outcomes['allowed_bad'][:5]}")
        check(not outcomes["denied_bad"] and outcomes["denied_403"] >= 10,
              f"SIGHUP storm: {outcomes['denied_403']} requests to a port neither policy opens refused 403, "
              f"otherwise: {outcomes['denied_bad'][:5]}")
        # Signals coalesce: at most one reload a SIGHUP, each logged as a
        # refused file or as the good policy (reloaded or unchanged); the
        # directory watch adds reloads of its own (trigger "file").
        logs = [json.loads(l) for l in open(proxy.errpath) if l.startswith("{")]
        by_signal = [l for l in logs if l.get("trigger", "signal") == "signal"]
        failed = [l for l in by_signal if l.get("level") == "error" and "previous policy stays" in l.get("msg", "")]
        kept = [l for l in by_signal if l.get("msg") in ("policy reloaded", "policy unchanged")]
        digests = {l.get("digest", l.get("detail")) for l in kept}
        check(failed and kept and len(failed) + len(kept) <= n_hups and len(digests) == 1,
              f"reloads logged on stderr: {len(failed)} refused, {len(kept)} good ({len(digests)} digest), "
              f"for {n_hups} SIGHUPs")
        served(pport, up, "after the SIGHUP storm")
    finally:
        stop_egressd(proxy, "main egressd")

    # ---- 10 000 idle client connections --------------------------------
    n = a.idle_clients
    # Without meson's MALLOC_PERTURB_: glibc then fills every allocation and
    # free, which makes 10 000 accepts several times slower while the header
    # timeout already runs.  Memory errors are the ASan+UBSan build's to find.
    # The header timeout leaves room for opening them on a loaded machine.
    crowd = start_egressd(a.egressd, policy, tmp, "--max-connections", str(2 * n), "--header-timeout-ms", "8000",
                          nofile=n + 200, name="crowd",
                          env={k: v for k, v in os.environ.items() if k != "MALLOC_PERTURB_"})
    try:
        rss0, fds0 = rss_kib(crowd.pid), fd_count(crowd.pid)
        clients = []
        t0 = time.monotonic()
        # In steps that egressd's listen queue (511) holds: a SYN past a
        # full queue is dropped and retried a second later.
        try:
            for i in range(n):
                clients.append(socket.create_connection(("127.0.0.1", crowd.port), timeout=10))
                if i % 250 == 249:
                    caught_up = time.monotonic() + 5
                    while fd_count(crowd.pid) < fds0 + len(clients) - 10 and time.monotonic() < caught_up:
                        time.sleep(0.005)
        except OSError as e:
            check(False, f"opening idle client {len(clients)}: {e}")
        t_open = time.monotonic() - t0
        for _ in range(100):
            if fd_count(crowd.pid) >= fds0 + len(clients):
                break
            time.sleep(0.05)
        held = fd_count(crowd.pid) - fds0
        rss1 = rss_kib(crowd.pid)
        check(held >= n, f"{n} idle clients opened in {t_open:.1f}s, all accepted ({held} descriptors held)")
        t_held = time.monotonic()
        served(crowd.port, up, f"with {n} idle clients open")
        check(time.monotonic() - t_held < 3, f"... within {time.monotonic() - t_held:.2f}s")
        # They are closed by the header timeout, each answered 408.
        deadline = time.monotonic() + 8 + t_open + 10
        while time.monotonic() < deadline and fd_count(crowd.pid) > fds0 + 5:
            time.sleep(0.2)
        left = fd_count(crowd.pid) - fds0
        answered = 0
        for c in clients:
            c.setblocking(False)
            try:
                answered += c.recv(32).startswith(b"HTTP/1.1 408")
            except OSError:
                pass
            c.close()
        check(left <= 5 and answered == len(clients),
              f"idle clients closed by the header timeout: {answered} answered 408, {left} descriptors left")
        time.sleep(0.2)
        rss2 = rss_kib(crowd.pid)
        print(f"info egressd RSS: {rss0} KiB at start, {rss1} KiB with {n} idle clients "
              f"({(rss1 - rss0) / max(n, 1):.1f} KiB each), {rss2} KiB after they were closed", flush=True)
        served(crowd.port, up, "after the idle crowd")
    finally:
        for c in clients:
            c.close()
        stop_egressd(crowd, "crowd egressd")

    # ---- file descriptors exhausted --------------------------------------
    starved = start_egressd(a.egressd, policy, tmp, "--header-timeout-ms", "20000", nofile=64, name="starved")
    try:
        served(starved.port, up, "RLIMIT_NOFILE 64, at start")
        hold = []
        for i in range(150):
            try:
                hold.append(socket.create_connection(("127.0.0.1", starved.port), timeout=2))
            except OSError:
                break
        time.sleep(0.5)
        open_ones, dropped = [], 0
        for s in hold:
            r, _, _ = select.select([s], [], [], 0)
            if r:
                dropped += 1
                s.close()
            else:
                open_ones.append(s)
        check(starved.poll() is None and len(open_ones) >= 30 and dropped > 0,
              f"{len(hold)} clients against RLIMIT_NOFILE 64: {len(open_ones)} held, {dropped} dropped, alive")
        # Every descriptor is taken: a held client's CONNECT cannot get an
        # upstream socket and must be answered, not left hanging.
        for _ in range(30):
            if fd_count(starved.pid) >= 64:
                break
            open_ones.append(socket.create_connection(("127.0.0.1", starved.port), timeout=2))
            time.sleep(0.05)
        check(fd_count(starved.pid) >= 64, f"all 64 descriptors of egressd taken ({fd_count(starved.pid)})")
        s = open_ones.pop(0)
        s.sendall(b"CONNECT 127.0.0.1:%d HTTP/1.1\r\n\r\n" % up.port)
        got, took = read_until_closed(s, 5)
        s.close()
        st, h = head_of(got)
        # Answered 5xx, and truthfully: the destination refused nothing, so
        # Proxy-Status must not say connection_refused (RFC 9209: "refused by the next hop").
        check(starved.poll() is None and took is not None and 500 <= st < 600
              and "connection_refused" not in h.get("proxy-status", ""),
              f"a CONNECT with no descriptor left is answered 5xx, not blamed on the destination: "
              f"{st} {h.get('proxy-status')}")
        # Ten descriptors freed: the held clients left are served.
        for s in open_ones[:10]:
            s.close()
        del open_ones[:10]
        time.sleep(0.3)
        ok = 0
        for s in open_ones[:3]:
            s.sendall(b"CONNECT 127.0.0.1:%d HTTP/1.1\r\n\r\nGET /held HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
                      % up.port)
            got, _ = read_until_closed(s, 5)
            ok += got.startswith(b"HTTP/1.1 200") and got.endswith(b"hello from 127.0.0.1 /held")
        check(ok == 3, f"with ten descriptors freed, held clients are served ({ok} of 3)")
        for s in open_ones:
            s.close()
        for _ in range(50):
            if fd_count(starved.pid) < 20:
                break
            time.sleep(0.1)
        good_after = 0
        for i in range(20):
            st, _, resp = tunnel_get(starved.port, "127.0.0.1", up.port, f"/after{i}")
            good_after += st == 200 and body_of(resp) == f"hello from 127.0.0.1 /after{i}".encode()
        check(good_after == 20, f"after the clients closed, new requests served normally ({good_after} of 20)")
    finally:
        stop_egressd(starved, "starved egressd")

finish("egressd-hostile")
