#!/usr/bin/env python3
"""egressd with names from a real dnsmasq, its answers changed between two
requests (a hosts file rewritten, then SIGHUP to dnsmasq).

egressd runs with --dns-cache 0, so each request asks dnsmasq (its query log
proves it).  A name that rebinds to an address the policy forbids is
refused on the request after the change, and the trap listening there sees
no connection; a name outside the policy never reaches DNS at all.

dnsmasq flags as in tests/test_integration.c (foreground, no configuration
file, no upstream servers, one loopback socket, our own user and group so
that it changes no credentials), plus --addn-hosts=FILE (re-read on SIGHUP,
which also clears dnsmasq's cache), --local=/test/ (dnsmasq answers for
.test itself: NXDOMAIN for names it does not know) and --local-ttl=0."""
import argparse, grp, os, pwd, random, shutil, signal, socket, struct, subprocess, tempfile, time
from gwlib import ATTEMPT, Upstream, body_of, check, close_data, events_of, finish, head_of, raw, start_egressd, stop_egressd, tunnel_get

ap = argparse.ArgumentParser()
ap.add_argument("--egressd", required=True)
a = ap.parse_args()

dnsmasq_bin = os.environ.get("EGRESS_DNSMASQ") or shutil.which("dnsmasq") or "/usr/sbin/dnsmasq"
if not os.access(dnsmasq_bin, os.X_OK):
    # A missing dnsmasq is a failure, never a skip: dnsmasq-base is one of
    # tools/dev.sh's packages.
    check(False, f"dnsmasq found ({dnsmasq_bin})")
    finish("egressd-dnsmasq")


def dns_a(port, name, timeout=2):
    """The A addresses dnsmasq answers for NAME (a minimal stub query)."""
    qid = random.randrange(65536)
    q = struct.pack(">HHHHHH", qid, 0x0100, 1, 0, 0, 0)
    q += b"".join(bytes([len(p)]) + p.encode() for p in name.split(".")) + b"\0" + struct.pack(">HH", 1, 1)
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.settimeout(timeout)
    try:
        s.sendto(q, ("127.0.0.1", port))
        r = s.recv(4096)
    except OSError:
        return None
    finally:
        s.close()
    an = struct.unpack(">H", r[6:8])[0]
    i = 12
    while r[i]:
        i += 1 + r[i]
    i += 5
    out = []
    for _ in range(an):
        if r[i] & 0xC0 == 0xC0:
            i += 2
        else:
            while r[i]:
                i += 1 + r[i]
            i += 1
        typ, _, _, rdlen = struct.unpack(">HHIH", r[i:i + 10])
        i += 10
        if typ == 1 and rdlen == 4:
            out.append(socket.inet_ntoa(r[i:i + 4]))
        i += rdlen
    return out


with tempfile.TemporaryDirectory() as tmp:
    up = Upstream("127.0.0.1")
    trap = Upstream("127.0.0.2", up.port)  # where rebind.test points after the change
    hosts = os.path.join(tmp, "hosts")
    qlog = os.path.join(tmp, "queries.log")

    def write_hosts(rebind_to):
        with open(hosts + ".new", "w") as f:
            f.write(f"127.0.0.1 up.test\n{rebind_to} rebind.test\n")
        os.replace(hosts + ".new", hosts)

    write_hosts("127.0.0.1")
    dnsmasq = None
    for attempt in range(5):
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        s.bind(("127.0.0.1", 0))
        dport = s.getsockname()[1]
        s.close()
        dnsmasq = subprocess.Popen(
            [dnsmasq_bin, "--keep-in-foreground", "--conf-file=/dev/null", "--no-resolv", "--no-hosts", "--no-poll",
             "--bind-interfaces", "--listen-address=127.0.0.1", f"--port={dport}", "--pid-file=",
             f"--user={pwd.getpwuid(os.geteuid()).pw_name}", f"--group={grp.getgrgid(os.getegid()).gr_name}",
             "--log-queries", f"--log-facility={qlog}", "--local-ttl=0", "--local=/test/", f"--addn-hosts={hosts}"],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=open(os.path.join(tmp, "dnsmasq.err"), "w"))
        for _ in range(50):
            if dnsmasq.poll() is not None or dns_a(dport, "up.test", 0.1) == ["127.0.0.1"]:
                break
            time.sleep(0.05)
        if dnsmasq.poll() is None and dns_a(dport, "up.test") == ["127.0.0.1"]:
            break
        dnsmasq.kill()
        dnsmasq.wait()
        dnsmasq = None
    if not dnsmasq:
        check(False, "dnsmasq started: " + open(os.path.join(tmp, "dnsmasq.err")).read())
        finish("egressd-dnsmasq")

    def queries(name):
        try:
            return open(qlog).read().count(f"query[A] {name} ")
        except FileNotFoundError:
            return 0

    def rebind(to):
        write_hosts(to)
        dnsmasq.send_signal(signal.SIGHUP)
        for _ in range(100):
            if dns_a(dport, "rebind.test") == [to]:
                return True
            time.sleep(0.05)
        return False

    policy = os.path.join(tmp, "policy.json")
    with open(policy, "w") as f:
        f.write('{"egressAllowlist": ["up.test:%d", "rebind.test:%d", "gone.test:%d", "127.0.0.1/32:%d"],'
                ' "egressDenylist": []}' % ((up.port,) * 4))
    proxy = start_egressd(a.egressd, policy, tmp, "--dns-server", f"127.0.0.1:{dport}", "--dns-cache", "0",
                          "--connect-timeout-ms", "2000")
    pport = proxy.port
    try:
        st, _, resp = tunnel_get(pport, "up.test", up.port, "/t")
        check(st == 200 and body_of(resp) == b"hello from 127.0.0.1 /t", f"CONNECT to a name dnsmasq answers: {st} {resp[-40:]!r}")
        q0 = queries("up.test")
        resp = raw(pport, b"GET http://up.test:%d/f HTTP/1.1\r\nHost: up.test:%d\r\nConnection: close\r\n\r\n" % (up.port, up.port))
        check(head_of(resp)[0] == 200 and body_of(resp) == b"hello from 127.0.0.1 /f", f"absolute-form GET: {resp[:12]!r}")
        check(queries("up.test") > q0, f"--dns-cache 0: the second request asked dnsmasq again ({q0} -> {queries('up.test')})")

        # The first answer of rebind.test is vetted and used.
        q1 = queries("rebind.test")
        st, _, resp = tunnel_get(pport, "rebind.test", up.port, "/r1")
        check(st == 200 and body_of(resp) == b"hello from 127.0.0.1 /r1", f"rebind.test, first answer 127.0.0.1: {st}")
        check(rebind("127.0.0.2"), "dnsmasq answers rebind.test with 127.0.0.2 after the hosts file changed and SIGHUP")
        q2 = queries("rebind.test")

        # The second answer is forbidden: refused before any connection.
        before = (up.accepted, trap.accepted)
        resp = raw(pport, b"CONNECT rebind.test:%d HTTP/1.1\r\nHost: rebind.test:%d\r\n\r\n" % (up.port, up.port))
        st, h = head_of(resp)
        check(st == 403 and h.get("x-egress-reason") == "resolved_address_forbidden"
              and h.get("proxy-status", "").startswith("egressd; error=destination_ip_prohibited"),
              f"CONNECT after rebinding to 127.0.0.2 refused: {st} {h.get('proxy-status')}")
        check(queries("rebind.test") > q2, f"the refused CONNECT asked dnsmasq ({q2} -> {queries('rebind.test')})")
        resp = raw(pport, b"GET http://rebind.test:%d/r2 HTTP/1.1\r\nHost: rebind.test:%d\r\n\r\n" % (up.port, up.port))
        st, h = head_of(resp)
        check(st == 403 and h.get("x-egress-reason") == "resolved_address_forbidden",
              f"absolute-form GET after rebinding refused: {st} {h.get('x-egress-reason')}")
        time.sleep(0.2)
        check(trap.accepted == 0 and (up.accepted, trap.accepted) == before,
              f"the trap at 127.0.0.2 never connected, nor the upstream ({before} -> {(up.accepted, trap.accepted)})")

        # And back: nothing of the refusal was cached either.
        check(rebind("127.0.0.1"), "dnsmasq answers 127.0.0.1 again")
        st, _, resp = tunnel_get(pport, "rebind.test", up.port, "/r3")
        check(st == 200 and body_of(resp) == b"hello from 127.0.0.1 /r3", f"rebind.test allowed again: {st}")

        # A name outside the policy is refused without a query; a name the
        # policy allows but dnsmasq does not know is 502 no_such_host.
        resp = raw(pport, b"CONNECT evil.test:%d HTTP/1.1\r\n\r\n" % up.port)
        st, h = head_of(resp)
        check(st == 403 and h.get("x-egress-reason") == "not_in_allowlist", f"evil.test denied: {st}")
        check(queries("evil.test") == 0, f"evil.test never reached dnsmasq ({queries('evil.test')} queries)")
        resp = raw(pport, b"CONNECT gone.test:%d HTTP/1.1\r\n\r\n" % up.port)
        st, h = head_of(resp)
        check(st == 502 and h.get("x-egress-reason") == "no_such_host", f"NXDOMAIN from dnsmasq: {st} {h.get('x-egress-reason')}")
    finally:
        stop_egressd(proxy)
        dnsmasq.send_signal(signal.SIGTERM)
        dnsmasq.wait(timeout=10)

    evs = events_of(proxy)
    denied = [e for e in evs if e.get("type") == ATTEMPT and e.get("data", {}).get("host") == "rebind.test"
              and any(x.get("address") == "127.0.0.2" for x in e["data"].get("addresses", []))]
    check(len(denied) == 2 and all(x["verdict"] != "allow" for e in denied for x in e["data"]["addresses"]
                                   if x["address"] == "127.0.0.2"),
          f"two attempt events name 127.0.0.2, not allowed ({len(denied)})")
    closes = [e for e in close_data(evs) if e["host"] == "rebind.test"]
    check(all(e["address"] in ("127.0.0.1", None) for e in closes) and sum(e["address"] == "127.0.0.1" for e in closes) == 2,
          f"close events: rebind.test connected only to 127.0.0.1 {[e['address'] for e in closes]}")

finish("egressd-dnsmasq")
