#!/usr/bin/env python3
"""Tests of the HTTP helpers: EgressHTTPConnection and the urllib opener.

Loopback HTTP/1.1 servers (http.server) on 127.0.0.1 (and 127.0.0.2) on a
free port; names resolve from the hosts file of test_egress (c-ares reads
one hosts file per process, so both modules share it).  Every test counts
what reached the server and the events the checker emitted.
"""

import dataclasses
import http.client
import http.server
import os
import socket
import ssl
import sys
import threading
import unittest
import urllib.error
import urllib.request

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, ".."))
sys.path.insert(0, HERE)

import egress  # noqa: E402
import test_egress as base  # noqa: E402


class _Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive unless told otherwise

    def setup(self):
        super().setup()
        with self.server.lock:
            self.server.connections += 1
            self.conn_no = self.server.connections

    def log_message(self, *args):
        pass

    def _answer(self):
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        with self.server.lock:
            self.server.requests.append((self.command, self.path, self.conn_no, body))
        if self.path.startswith("/redirect"):
            self.send_response(302)
            self.send_header("Location", "/final")
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        if self.path.startswith("/missing"):
            payload = b"not here"
            self.send_response(404)
        else:
            payload = ("%s %s on %s" % (self.command, self.path,
                                        self.server.server_address[0])).encode()
            self.send_response(200)
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(payload)
        if self.path.startswith("/drop"):
            # Keep-alive as far as the client can tell, then gone: what a
            # server closing an idle connection looks like.
            self.close_connection = True

    do_GET = do_POST = do_PUT = do_HEAD = _answer


class Server:
    def __init__(self, address="127.0.0.1", port=0):
        self.httpd = http.server.ThreadingHTTPServer((address, port), _Handler)
        self.httpd.daemon_threads = True
        self.httpd.lock = threading.Lock()
        self.httpd.requests = []
        self.httpd.connections = 0
        self.port = self.httpd.server_address[1]
        self.thread = threading.Thread(target=self.httpd.serve_forever, args=(0.05,),
                                       daemon=True)
        self.thread.start()

    @property
    def requests(self):
        with self.httpd.lock:
            return list(self.httpd.requests)

    @property
    def connections(self):
        with self.httpd.lock:
            return self.httpd.connections

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()


def two_servers():
    """Servers on 127.0.0.1:P and 127.0.0.2:P (one port, so one policy rule
    and one URL reach either)."""
    for _ in range(20):
        first = Server("127.0.0.1")
        try:
            return first, Server("127.0.0.2", first.port)
        except OSError:
            first.close()
    raise unittest.SkipTest("no port free on both 127.0.0.1 and 127.0.0.2")


class Case(unittest.TestCase):
    def setUp(self):
        self.server = Server()
        self.port = self.server.port
        self.events = []
        self.policy = {"egressAllowlist": ["127.0.0.0/8:%d" % self.port,
                                           "web.test:%d" % self.port]}
        self.c = base.checker(self.policy, on_event=self.events.append)

    def tearDown(self):
        self.c.close()
        self.server.close()

    def url(self, path, host="web.test"):
        return "http://%s:%d%s" % (host, self.port, path)

    def assertEvent(self, event, method, path, outcome="allowed", **ctx):
        data = event["data"]
        self.assertEqual(data["method"], method)
        self.assertEqual(data["url"], self.url(path))
        self.assertEqual(data["outcome"], outcome)
        for key, value in ctx.items():
            self.assertEqual(data[key], value, key)


class TestHTTPConnection(Case):
    def get(self, conn, path, **kw):
        conn.request("GET", path, **kw)
        r = conn.getresponse()
        return r.status, r.read()

    def test_keep_alive_refused_after_swap(self):
        conn = self.c.http_connection("web.test", self.port, timeout=5)
        self.assertEqual(self.get(conn, "/1"), (200, b"GET /1 on 127.0.0.1"))
        self.assertEqual(self.get(conn, "/2"), (200, b"GET /2 on 127.0.0.1"))
        self.assertEqual([r[2] for r in self.server.requests], [1, 1])  # one connection
        self.c.set_policy({"egressAllowlist": []})
        with self.assertRaises(egress.EgressDeniedError) as cm:
            self.get(conn, "/3")
        self.assertEqual(cm.exception.reason, "empty_allowlist")
        self.assertIs(cm.exception.decision, conn.decision)
        self.assertIsNone(conn.sock)  # the kept-alive socket is closed too
        self.assertEqual(len(self.server.requests), 2)  # no upstream hit
        self.assertEqual(len(self.events), 3)
        self.assertEvent(self.events[2], "GET", "/3", outcome="denied")
        self.assertEqual(self.events[2]["data"]["denyReason"], "empty_allowlist")
        # Allowed again: a new connection under the new decision.
        self.c.set_policy(self.policy)
        self.assertEqual(self.get(conn, "/4")[0], 200)
        self.assertEqual([r[2] for r in self.server.requests], [1, 1, 2])
        conn.close()

    def test_one_event_per_request_with_context(self):
        conn = egress.EgressHTTPConnection("web.test", self.port, checker=self.c, timeout=5,
                                           ctx={"agentId": "agent-7", "runId": "run-0"})
        self.get(conn, "/a", ctx={"runId": "run-1", "correlationId": "corr-1"})
        conn.request("POST", "/b", body=b"payload", ctx={"run_id": "run-2"})
        self.assertEqual(conn.getresponse().read(), b"POST /b on 127.0.0.1")
        conn.request("HEAD", "/c")
        self.assertEqual(conn.getresponse().read(), b"")
        self.get(conn, "/d?q=1", ctx={"method": "DELETE"})  # the method on the wire wins
        self.assertEqual(len(self.events), 4)
        self.assertEvent(self.events[0], "GET", "/a", agentId="agent-7", runId="run-1",
                         correlationId="corr-1")
        self.assertEvent(self.events[1], "POST", "/b", agentId="agent-7", runId="run-2",
                         correlationId=None)
        self.assertEvent(self.events[2], "HEAD", "/c", agentId="agent-7", runId="run-0")
        self.assertEvent(self.events[3], "GET", "/d?q=1")
        self.assertEqual([(r[0], r[1], r[3]) for r in self.server.requests],
                         [("GET", "/a", b""), ("POST", "/b", b"payload"), ("HEAD", "/c", b""),
                          ("GET", "/d?q=1", b"")])
        self.assertEqual({r[2] for r in self.server.requests}, {1})
        self.assertEqual(self.c.stats()["checks"], 4)
        conn.close()

    def test_kept_alive_peer_must_be_vetted_by_the_new_decision(self):
        one, two = two_servers()
        try:
            policy = {"egressAllowlist": ["127.0.0.0/8:%d" % one.port, "pool.test:%d" % one.port]}
            with base.checker(policy, filter=True) as c:
                conn = c.http_connection("pool.test", one.port, timeout=5)
                self.assertEqual(self.get(conn, "/x")[1], b"GET /x on 127.0.0.1")
                self.assertEqual(conn.sock.getpeername(), ("127.0.0.1", one.port))
                # The name is still allowed, but 127.0.0.1 no longer is.
                c.set_policy({"egressAllowlist": ["127.0.0.2/32:%d" % one.port,
                                                  "pool.test:%d" % one.port]})
                self.assertEqual(self.get(conn, "/y")[1], b"GET /y on 127.0.0.2")
                self.assertEqual(conn.sock.getpeername(), ("127.0.0.2", one.port))
                self.assertEqual([a.address for a in conn.decision.vetted_addresses],
                                 ["127.0.0.2"])
                self.assertEqual([r[1] for r in one.requests], ["/x"])
                self.assertEqual([r[1] for r in two.requests], ["/y"])
                # Both vetted again: the connection to 127.0.0.2 is kept.
                c.set_policy(policy)
                self.get(conn, "/z")
                self.assertEqual([r[1] for r in two.requests], ["/y", "/z"])
                self.assertEqual(two.connections, 1)
                conn.close()
        finally:
            one.close()
            two.close()

    def test_held_decision_one_event(self):
        d = self.c.check_url(self.url("/held"), method="GET", runId="run-h")
        conn = self.c.http_connection("web.test", self.port, timeout=5, decision=d)
        self.assertEqual(self.get(conn, "/held")[0], 200)
        self.assertEqual(len(self.events), 1)
        self.assertIs(conn.decision, d)
        self.assertIn(conn.sock.getpeername(), [a.sockaddr for a in d.vetted_addresses])
        # The held decision was for that request only.
        self.get(conn, "/next")
        self.assertEqual(len(self.events), 2)
        self.assertEvent(self.events[1], "GET", "/next")
        # Per request, from check(host, port) too.
        d2 = self.c.check("web.test", self.port)
        self.get(conn, "/again", decision=d2)
        self.assertEqual(len(self.events), 3)
        self.assertEqual(len(self.server.requests), 3)
        conn.close()

    def test_constructor_decision_is_for_the_first_request_only(self):
        d1 = self.c.check_url(self.url("/first"))
        d2 = self.c.check_url(self.url("/first"))
        conn = self.c.http_connection("web.test", self.port, timeout=5, decision=d1)
        self.get(conn, "/first", decision=d2)
        self.assertIs(conn.decision, d2)
        self.get(conn, "/second")  # checked: d1 is not kept for it
        self.assertEqual(len(self.events), 3)
        self.assertEvent(self.events[2], "GET", "/second")
        conn.close()

    def test_held_decision_must_fit_the_request(self):
        d = self.c.check_url(self.url("/held"), method="GET")
        other_port = self.c.check("web.test", 443)
        for kw, target, method in (
                ({"decision": d}, "/elsewhere", "GET"),    # another path
                ({"decision": d}, "/held", "POST"),        # another method
        ):
            conn = self.c.http_connection("web.test", self.port, timeout=5)
            with self.assertRaises(ValueError):
                conn.request(method, target, **kw)
        with self.assertRaises(ValueError):
            self.c.http_connection("web.test", self.port, decision=other_port).request("GET", "/")
        https_d = self.c.check_url("https://web.test:%d/held" % self.port)
        with self.assertRaises(ValueError):
            self.c.http_connection("web.test", self.port).request("GET", "/held",
                                                                  decision=https_d)
        forged = dataclasses.replace(d)
        with self.assertRaises(ValueError):
            self.c.http_connection("web.test", self.port).request("GET", "/held",
                                                                  decision=forged)
        self.assertEqual(len(self.events), 3)  # the checks above, nothing more
        self.assertEqual(self.server.requests, [])
        self.assertEqual(self.server.connections, 0)

    def test_host_port_decision_does_not_cover_a_path_rule(self):
        with base.checker(["http://web.test:%d/v1" % self.port, "127.0.0.0/8:%d" % self.port],
                          on_event=self.events.append) as c:
            d = c.check("web.test", self.port)
            self.assertTrue(d.allowed, d)
            with self.assertRaises(ValueError):
                c.http_connection("web.test", self.port, decision=d).request("GET", "/admin")
            conn = c.http_connection("web.test", self.port, timeout=5)
            with self.assertRaises(egress.EgressDeniedError):
                conn.request("GET", "/admin")
            self.assertEqual(self.get(conn, "/v1/items")[0], 200)
            conn.close()
        self.assertEqual([r[1] for r in self.server.requests], ["/v1/items"])

    def test_held_denied_decision_refused(self):
        self.c.set_policy({"egressAllowlist": ["web.test:1"]})
        d = self.c.check("web.test", self.port)
        self.assertEqual(d.reason, "port_not_allowed")
        conn = self.c.http_connection("web.test", self.port, decision=d)
        with self.assertRaises(egress.EgressDeniedError):
            conn.request("GET", "/")
        self.assertEqual(len(self.events), 1)
        self.assertEqual(self.server.connections, 0)

    def test_denials_reach_nothing(self):
        with base.checker(["local.test:%d" % self.port], on_event=self.events.append) as c:
            # A loopback literal no CIDR rule opens.
            conn = c.http_connection("127.0.0.1", self.port)
            with self.assertRaises(egress.EgressDeniedError) as cm:
                conn.request("GET", "/")
            self.assertEqual(cm.exception.reason, "special_purpose_address")
            # A name resolving to loopback without a CIDR rule opening it.
            conn = c.http_connection("local.test", self.port)
            with self.assertRaises(egress.EgressDeniedError) as cm:
                conn.request("GET", "/")
            self.assertEqual(cm.exception.reason, "resolved_address_forbidden")
        self.assertEqual(self.server.connections, 0)
        self.assertEqual(len(self.events), 2)

    def test_unavailable_is_a_denial(self):
        with base.checker(["dns-down.example.com"], dns_servers=["127.0.0.1:1"],
                          timeout_ms=300, hosts_file=None) as c:
            conn = c.http_connection("dns-down.example.com", 443)
            with self.assertRaises(egress.EgressDeniedError) as cm:
                conn.request("GET", "/")
            self.assertIsInstance(cm.exception, egress.EgressUnavailableError)

    def test_ip_literal_by_cidr(self):
        conn = self.c.http_connection("127.0.0.1", self.port, timeout=5)
        self.assertEqual(self.get(conn, "/lit")[0], 200)
        self.assertEqual(self.events[0]["data"]["url"], "http://127.0.0.1:%d/lit" % self.port)
        conn.close()

    def test_explicit_connect_is_an_attempt_of_its_own(self):
        conn = self.c.http_connection("web.test", self.port, timeout=5, ctx={"runId": "r"})
        conn.connect()
        self.assertEqual(len(self.events), 1)
        self.assertIsNone(self.events[0]["data"].get("url"))
        self.assertEqual(self.events[0]["data"]["runId"], "r")
        self.get(conn, "/after-connect")
        self.assertEqual(len(self.events), 2)
        self.assertEqual(self.server.connections, 1)
        conn.close()

    def test_monitor_mode_observes(self):
        with base.checker({"egressAllowlist": ["api.example.com"]}, mode="monitor",
                          on_event=self.events.append) as c:
            conn = c.http_connection("127.0.0.1", self.port, timeout=5)
            self.assertEqual(self.get(conn, "/watched")[0], 200)
            self.assertTrue(self.events[0]["data"]["wouldDeny"])
            self.assertEqual(self.events[0]["data"]["enforcementMode"], "monitor")
            # A name outside the policy was never resolved: nothing to connect to.
            conn2 = c.http_connection("web.test", self.port, timeout=5)
            with self.assertRaises(egress.EgressUnavailableError):
                conn2.request("GET", "/unresolved")
            conn.close()
        self.assertEqual([r[1] for r in self.server.requests], ["/watched"])

    def test_tunnels_and_foreign_targets_refused(self):
        conn = self.c.http_connection("web.test", self.port)
        with self.assertRaises(egress.EgressError):
            conn.set_tunnel("api.example.com", 443)
        with self.assertRaises(ValueError):
            conn.request("GET", "http://api.example.com/")
        self.assertEqual(self.events, [])
        # An absolute target on the connection's own origin is checked as is.
        self.assertEqual(self.get(conn, self.url("/abs"))[0], 200)
        self.assertEqual(self.events[0]["data"]["url"], self.url("/abs"))
        conn.close()

    def test_https_connection_checks_before_tls(self):
        conn = self.c.https_connection("evil.example.net")
        with self.assertRaises(egress.EgressDeniedError) as cm:
            conn.request("GET", "/")
        self.assertEqual(self.events[0]["data"]["url"], "https://evil.example.net/")
        self.assertEqual(cm.exception.reason, "not_in_allowlist")
        # Allowed: TCP goes to the vetted address, TLS then fails against a
        # plain HTTP server; that socket must not stay for a next request.
        conn = self.c.https_connection("web.test", self.port, timeout=5)
        with self.assertRaises(OSError):
            conn.request("GET", "/tls")
        self.assertIsNone(conn.sock)
        self.assertEqual(self.events[1]["data"]["url"], "https://web.test:%d/tls" % self.port)
        self.assertEqual(self.server.requests, [])

    def test_host_must_be_a_bare_host(self):
        # "web.test/public" would be checked as http://web.test:P/public/admin
        # and let through by a rule for /public.
        with base.checker(["http://web.test:%d/public" % self.port, "127.0.0.0/8:%d" % self.port],
                          on_event=self.events.append) as c:
            for host in ("web.test/public", "web.test%2Fpublic", "web.test?", "u@web.test",
                         "web.test\\x", "web.test\uff0fpublic"):
                with self.subTest(host=host):
                    conn = c.http_connection(host, self.port, timeout=5)
                    with self.assertRaises(egress.EgressDeniedError) as cm:
                        conn.request("GET", "/admin")
                    self.assertEqual(cm.exception.reason, "invalid_host")
                    self.assertEqual(self.events[-1]["data"]["destination"],
                                     "%s:%d" % (host, self.port))
                    self.assertEqual(self.events[-1]["data"]["outcome"], "denied")
            opener = egress.build_opener(c)
            with self.assertRaises(egress.EgressDeniedError) as cm:
                opener.open("http://web.test%%2Fpublic:%d/admin" % self.port, timeout=5)
            self.assertEqual(cm.exception.reason, "invalid_host")
            opener.close()
        self.assertEqual(len(self.events), 7)
        self.assertEqual(self.server.requests, [])

    def test_host_header_must_name_the_checked_host(self):
        conn = self.c.http_connection("web.test", self.port, timeout=5)
        for host in ("evil.test", "web.test:1", "web.test.evil.test", "user@web.test"):
            with self.assertRaises(ValueError):
                conn.request("GET", "/x", headers={"Host": host})
        self.assertEqual(self.events, [])  # refused before any check
        conn.putrequest("GET", "/x", skip_host=True)
        with self.assertRaises(ValueError):
            conn.putheader("Host", "evil.test")
        self.assertIsNone(conn.sock)
        # The checked host, in any case, is fine.
        self.assertEqual(self.get(conn, "/ok", headers={"Host": "WEB.test:%d" % self.port})[0],
                         200)
        opener = egress.build_opener(self.c)
        self.addCleanup(opener.close)
        with self.assertRaises(ValueError):
            opener.open(egress.Request(self.url("/u"), headers={"Host": "evil.test"}), timeout=5)
        self.assertEqual([r[1] for r in self.server.requests], ["/ok"])
        conn.close()

    def test_https_names_the_checked_host(self):
        names = []

        class Recording(ssl.SSLContext):
            def wrap_socket(self, sock, *args, server_hostname=None, **kw):
                names.append(server_hostname)
                raise ssl.SSLError("recorded")

        conn = self.c.https_connection("web.test", self.port, timeout=5,
                                       context=Recording(ssl.PROTOCOL_TLS_CLIENT))
        conn.putrequest("GET", "/tls")  # checked for web.test
        with self.assertRaises(AttributeError):
            conn.host = "evil.test"  # would name evil.test in SNI over the vetted socket
        with self.assertRaises(AttributeError):
            conn.port = 1
        with self.assertRaises(OSError):
            conn.endheaders()
        self.assertEqual(names, ["web.test"])
        self.assertEqual(self.server.requests, [])

    def test_target_is_sent_as_checked(self):
        # "/public#/../secret" was checked as /public (the library drops a
        # fragment) and sent whole: a server that cleans paths serves /secret.
        with base.checker(["http://web.test:%d/public" % self.port, "127.0.0.0/8:%d" % self.port],
                          on_event=self.events.append) as c:
            conn = c.http_connection("web.test", self.port, timeout=5)
            for target in ("/public#/../secret", "/public?q#/../x", self.url("/public#x"),
                           "/public\\..\\secret", "/public/a b", "/public/\x7f",
                           "/public/caf\u00e9"):
                with self.subTest(target=target):
                    with self.assertRaises(ValueError):
                        conn.request("GET", target)
            with self.assertRaises(ValueError):
                conn.putrequest("GET", "/public#/../secret")
            self.assertEqual(self.events, [])  # refused before any check
            self.assertEqual(self.get(conn, "/public/%23x")[0], 200)  # "#" percent-encoded
            self.assertEqual(self.events[0]["data"]["url"], self.url("/public/%23x"))
            conn.close()
        self.assertEqual([r[1] for r in self.server.requests], ["/public/%23x"])

    def test_non_ascii_host_refused(self):
        # The library checks "fa\u00df.test" as its IDNA 2008 A-label
        # xn--fa-hia.test; http.client (Host) and ssl (SNI) would send
        # Python's IDNA 2003 form, fass.test: another name.
        names = []

        class Recording(ssl.SSLContext):
            def wrap_socket(self, sock, *args, server_hostname=None, **kw):
                names.append(server_hostname)
                raise ssl.SSLError("recorded")

        with base.checker(["xn--fa-hia.test:%d" % self.port, "127.0.0.0/8:%d" % self.port],
                          on_event=self.events.append) as c:
            for conn in (c.http_connection("fa\u00df.test", self.port, timeout=5),
                         c.https_connection("fa\u00df.test", self.port, timeout=5,
                                            context=Recording(ssl.PROTOCOL_TLS_CLIENT))):
                with self.assertRaises(egress.EgressDeniedError) as cm:
                    conn.request("GET", "/idn")
                self.assertEqual(cm.exception.reason, "invalid_host")
                self.assertIn("A-label", str(cm.exception))
            opener = egress.build_opener(c)
            self.addCleanup(opener.close)
            with self.assertRaises(egress.EgressDeniedError) as cm:
                opener.open("http://fa\u00df.test:%d/idn" % self.port, timeout=5)
            self.assertEqual(cm.exception.reason, "invalid_host")
            self.assertEqual(len(self.events), 3)
            # The A-label is what the library checks, so what is sent.
            conn = c.http_connection("xn--fa-hia.test", self.port, timeout=5)
            self.assertEqual(self.get(conn, "/idn")[0], 200)
            conn.close()
        self.assertEqual(names, [])
        self.assertEqual([r[1] for r in self.server.requests], ["/idn"])
        # A Host header is the checked host itself, never an IDNA 2003 alias.
        from egress import _http
        self.assertFalse(_http._names_host("fass.test", "fa\u00df.test", 80, "http"))
        self.assertFalse(_http._names_host("\u212aube.test", "kube.test", 80, "http"))

    def test_send_only_inside_a_checked_request(self):
        raw = b"GET /secret HTTP/1.1\r\nHost: web.test\r\n\r\n"
        with base.checker(["http://web.test:%d/public" % self.port, "127.0.0.0/8:%d" % self.port],
                          on_event=self.events.append) as c:
            conn = c.http_connection("web.test", self.port, timeout=5)
            with self.assertRaises(egress.EgressError):
                conn.send(raw)  # would open a socket by a host:port check
            self.assertIsNone(conn.sock)
            conn.connect()  # allowed as host:port: the path rule is not applied
            with self.assertRaises(egress.EgressError):
                conn.send(raw)
            self.assertEqual(self.get(conn, "/public")[0], 200)
            with self.assertRaises(egress.EgressError):
                conn.send(raw)  # the request is over
            # What http.client allows: a body streamed after endheaders().
            conn.putrequest("POST", "/public/up")
            conn.putheader("Content-Length", "4")
            conn.endheaders()
            conn.send(b"data")
            r = conn.getresponse()
            r.read()
            self.assertEqual(r.status, 200)
            conn.close()
        self.assertEqual([(r[0], r[1], r[3]) for r in self.server.requests],
                         [("GET", "/public", b""), ("POST", "/public/up", b"data")])

    def test_socket_opener_cannot_be_replaced(self):
        one, two = two_servers()
        self.addCleanup(one.close)
        self.addCleanup(two.close)

        def elsewhere(address, *args, **kw):
            return socket.create_connection(("127.0.0.2", two.port))

        with base.checker(["127.0.0.1/32:%d" % one.port, "web.test:%d" % one.port]) as c:
            conn = c.http_connection("web.test", one.port, timeout=5)
            with self.assertRaises(AttributeError):
                conn._create_connection = elsewhere
            conn.__dict__["_create_connection"] = elsewhere  # under the property
            conn._egress_create_connection = elsewhere
            self.assertEqual(self.get(conn, "/here")[1], b"GET /here on 127.0.0.1")
            conn.close()
        self.assertEqual([r[1] for r in one.requests], ["/here"])
        self.assertEqual(two.connections, 0)

    def test_held_decision_single_use_current_policy_unaltered(self):
        conn = self.c.http_connection("web.test", self.port, timeout=5)
        d = self.c.check_url(self.url("/x"), method="GET")
        self.assertEqual(self.get(conn, "/x", decision=d)[0], 200)
        with self.assertRaises(ValueError):  # one decision, one request
            conn.request("GET", "/x", decision=d)
        stale = self.c.check_url(self.url("/x"), method="GET")
        stale_u = self.c.check_url(self.url("/x"), method="GET")
        self.c.set_policy({"egressAllowlist": ["127.0.0.0/8:%d" % self.port]})
        with self.assertRaises(ValueError):
            self.c.http_connection("web.test", self.port).request("GET", "/x", decision=stale)
        opener = egress.build_opener(self.c)
        self.addCleanup(opener.close)
        with self.assertRaises(ValueError):
            opener.open(egress.Request(self.url("/x"), decision=stale_u), timeout=5)
        # Edited in place: the URL of a decision for /x made to say /admin.
        self.c.set_policy(self.policy)
        edited = self.c.check_url(self.url("/x"), method="GET")
        object.__setattr__(edited, "url", self.url("/admin"))
        with self.assertRaises(ValueError):
            self.c.http_connection("web.test", self.port).request("GET", "/admin",
                                                                  decision=edited)
        self.assertEqual([r[1] for r in self.server.requests], ["/x"])
        conn.close()


class TestUrllib(Case):
    def opener(self, **kw):
        opener = egress.build_opener(self.c, **kw)
        self.addCleanup(opener.close)
        return opener

    def open(self, opener, target, **kw):
        with opener.open(egress.Request(target, **kw), timeout=5) as r:
            return r.status, r.read()

    def test_pooled_keep_alive_refused_after_swap(self):
        opener = self.c.urllib_opener(ctx={"agentId": "agent-u"})
        self.addCleanup(opener.close)
        self.assertEqual(self.open(opener, self.url("/1"), ctx={"runId": "run-1"}),
                         (200, b"GET /1 on 127.0.0.1"))
        self.assertEqual(self.open(opener, self.url("/2"), ctx={"runId": "run-2"}),
                         (200, b"GET /2 on 127.0.0.1"))
        self.assertEqual([r[2] for r in self.server.requests], [1, 1])  # pooled
        self.c.set_policy({"egressAllowlist": []})
        with self.assertRaises(egress.EgressDeniedError) as cm:
            self.open(opener, self.url("/3"), ctx={"runId": "run-3"})
        self.assertEqual(cm.exception.reason, "empty_allowlist")
        self.assertEqual(len(self.server.requests), 2)  # no upstream hit
        self.assertEqual(len(self.events), 3)
        for i, ev in enumerate(self.events):
            self.assertEvent(ev, "GET", "/%d" % (i + 1), outcome="denied" if i == 2 else "allowed",
                             agentId="agent-u", runId="run-%d" % (i + 1))

    def test_one_event_per_request_and_per_redirect_hop(self):
        opener = self.opener(ctx={"agentId": "agent-r"})
        status, body = self.open(opener, self.url("/redirect"), ctx={"runId": "run-r"})
        self.assertEqual((status, body), (200, b"GET /final on 127.0.0.1"))
        status, body = self.open(opener, self.url("/post"), data=b"x=1",
                                 ctx={"correlationId": "corr-p"})
        self.assertEqual(body, b"POST /post on 127.0.0.1")
        with self.assertRaises(urllib.error.HTTPError) as cm:
            self.open(opener, self.url("/missing"))
        self.assertEqual(cm.exception.code, 404)
        self.assertEqual(cm.exception.read(), b"not here")
        cm.exception.close()
        self.assertEqual(len(self.events), 4)
        self.assertEvent(self.events[0], "GET", "/redirect", agentId="agent-r", runId="run-r")
        self.assertEvent(self.events[1], "GET", "/final", agentId="agent-r", runId="run-r")
        self.assertEvent(self.events[2], "POST", "/post", agentId="agent-r",
                         correlationId="corr-p", runId=None)
        self.assertEvent(self.events[3], "GET", "/missing")
        self.assertEqual([(r[0], r[1], r[2]) for r in self.server.requests],
                         [("GET", "/redirect", 1), ("GET", "/final", 1), ("POST", "/post", 1),
                          ("GET", "/missing", 1)])

    def test_redirect_to_a_denied_origin(self):
        self.c.set_policy({"egressAllowlist": ["127.0.0.0/8:%d" % self.port,
                                               "http://web.test:%d/redirect" % self.port]})
        opener = self.opener()
        with self.assertRaises(egress.EgressDeniedError):
            self.open(opener, self.url("/redirect"))
        self.assertEqual([r[1] for r in self.server.requests], ["/redirect"])
        self.assertEqual([e["data"]["outcome"] for e in self.events], ["allowed", "denied"])

    def test_held_decision(self):
        d = self.c.check_url(self.url("/held"), {"method": "GET", "runId": "run-h"})
        opener = self.opener()
        self.assertEqual(self.open(opener, self.url("/held"), decision=d)[0], 200)
        self.assertEqual(len(self.events), 1)
        req = urllib.request.Request(self.url("/held"))
        req.egress_decision = self.c.check_url(self.url("/held"))
        with opener.open(req, timeout=5) as r:
            r.read()
        self.assertEqual(len(self.events), 2)
        self.assertEqual(len(self.server.requests), 2)

    def test_idle_connection_closed_by_server_is_retried_once(self):
        opener = self.opener()
        self.assertEqual(self.open(opener, self.url("/drop"))[0], 200)
        # The pooled connection is dead; the request goes again, on a new
        # connection, under the decision already made: one event.
        self.assertEqual(self.open(opener, self.url("/second"))[1], b"GET /second on 127.0.0.1")
        self.assertEqual(len(self.events), 2)
        self.assertEqual([(r[1], r[2]) for r in self.server.requests],
                         [("/drop", 1), ("/second", 2)])

    def test_proxies_and_ftp_never_used(self):
        saved = {k: os.environ.get(k) for k in ("http_proxy", "HTTP_PROXY", "no_proxy")}
        os.environ["http_proxy"] = os.environ["HTTP_PROXY"] = "http://127.0.0.1:9"
        os.environ.pop("no_proxy", None)
        try:
            opener = self.opener()
            self.assertEqual(self.open(opener, self.url("/direct"))[0], 200)
            # A plain urllib opener picks the environment's proxy: refused.
            plain = urllib.request.build_opener(egress.EgressHandler(self.c))
            with self.assertRaises(egress.EgressError):
                plain.open(self.url("/proxied"), timeout=5)
            with self.assertRaises(egress.EgressError):
                opener.open("ftp://web.test/file", timeout=5)
        finally:
            for k, v in saved.items():
                if v is None:
                    os.environ.pop(k, None)
                else:
                    os.environ[k] = v
        self.assertEqual([r[1] for r in self.server.requests], ["/direct"])
        self.assertEqual(len(self.events), 1)

    def test_threads_share_one_opener(self):
        opener = self.opener()
        errors = []

        def worker(n):
            try:
                for i in range(10):
                    status, body = self.open(opener, self.url("/t%d-%d" % (n, i)),
                                             ctx={"runId": "t%d-%d" % (n, i)})
                    if body != ("GET /t%d-%d on 127.0.0.1" % (n, i)).encode():
                        errors.append(body)
            except Exception as e:  # noqa: BLE001 - reported below
                errors.append(e)

        threads = [threading.Thread(target=worker, args=(n,)) for n in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
        self.assertEqual(errors, [])
        self.assertEqual(len(self.events), 40)
        self.assertEqual(sorted(e["data"]["runId"] for e in self.events),
                         sorted("t%d-%d" % (n, i) for n in range(4) for i in range(10)))
        self.assertLessEqual(self.server.connections, 8)


if __name__ == "__main__":
    unittest.main(verbosity=2)
