#!/usr/bin/env python3
"""Tests of the Python binding (unittest, standard library only).

Environment:
  EGRESS_LIBRARY   path of libegress.so (else the binding's own search)
  EGRESS_TEST_DNS  path of the loopback DNS responder egress-test-dns; the
                   tests that need a DNS server are skipped without it

Names resolve from a hosts file written here, or from the responder serving
the zone below on 127.0.0.1.  Sockets bind 127.0.0.1 on free ports only.
"""

import dataclasses
import json
import os
import re
import select
import socket
import subprocess
import sys
import tempfile
import threading
import time
import unittest

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

import egress  # noqa: E402

HOSTS = """\
93.184.216.34 api.example.com
93.184.216.35 other.example.com
93.184.216.36 legacy.example.com
127.0.0.1 local.test
10.0.0.5 priv.test
169.254.169.254 meta.test
127.0.0.1 web.test
127.0.0.1 xn--fa-hia.test
127.0.0.1 pool.test
127.0.0.2 pool.test
"""

ZONE = """\
pub.test A 93.184.216.34
lo.test A 127.0.0.1
meta.test A 169.254.169.254
rebind.test SEQUENCE A 93.184.216.34 | A 127.0.0.1
rebind.test STICKY
multi.test A 127.0.0.2
multi.test A 127.0.0.1
mixed.test A 127.0.0.1
mixed.test A 127.0.0.2
fail.test RCODE SERVFAIL
nx.test RCODE NXDOMAIN
"""

POLICY = {
    "egressAllowlist": [
        "https://api.example.com",             # 0
        "https://api.example.com:8443/v1",     # 1
        "*.files.example.com",                 # 2
        "legacy.example.com",                  # 3 (denied by the deny list)
        "priv.test",                           # 4 resolves to 10.0.0.5
        "meta.test",                           # 5 resolves to 169.254.169.254
        "missing.example.com",                 # 6 in no hosts file
        "203.0.113.0/24:443",                  # 7
    ],
    "egressDenylist": ["legacy.example.com"],
}

REASONS = {
    "invalid_host", "invalid_port", "empty_allowlist", "explicit_deny",
    "not_in_allowlist", "port_not_allowed", "special_purpose_address",
    "no_such_host", "resolved_address_forbidden", "dns_unavailable",
    "audit_unavailable", "internal_error",
}

TMP = tempfile.mkdtemp(prefix="egress-py-")
SRCDIR = os.path.abspath(os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", ".."))
REGISTRATION = os.path.join(SRCDIR, "examples", "policies", "machine-registration.json")


def write(name, text):
    path = os.path.join(TMP, name)
    with open(path, "w", encoding="utf-8") as f:
        f.write(text)
    return path


HOSTS_FILE = write("hosts", HOSTS)


def checker(policy=POLICY, **kw):
    kw.setdefault("hosts_file", HOSTS_FILE)
    return egress.Checker(policy, **kw)


class Responder:
    """egress-test-dns on 127.0.0.1, dying with its stdin."""

    def __init__(self, zone):
        path = os.environ.get("EGRESS_TEST_DNS")
        if not path or not os.path.exists(path):
            if os.environ.get("EGRESS_TEST_NO_SKIP"):
                raise RuntimeError("EGRESS_TEST_DNS not set and EGRESS_TEST_NO_SKIP is")
            raise unittest.SkipTest("EGRESS_TEST_DNS not set: DNS tests skipped")
        self.proc = subprocess.Popen([path, "--zone", write("zone", zone), "--stdin-lifeline"],
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     stderr=subprocess.PIPE)
        ready, _, _ = select.select([self.proc.stdout], [], [], 30)
        line = self.proc.stdout.readline().decode() if ready else ""
        m = re.match(r"^PORT (\d+)$", line.strip())
        if not m:
            self.stop()
            raise RuntimeError("responder did not start: %r" % line)
        self.server = "127.0.0.1:%s" % m.group(1)

    def stop(self):
        self.proc.terminate()
        try:
            self.proc.communicate(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.communicate(timeout=10)


class Listener:
    """A TCP listener on 127.0.0.1 that records what connects."""

    def __init__(self):
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(8)
        self.port = self.sock.getsockname()[1]
        self.accepted = []

    def accept(self, timeout):
        self.sock.settimeout(timeout)
        try:
            conn = self.sock.accept()
        except socket.timeout:
            return None
        self.accepted.append(conn[0])
        return conn

    def close(self):
        for conn in self.accepted:
            conn.close()
        self.sock.close()


# ---------------------------------------------------------------------------


class TestDecisions(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.c = checker()

    @classmethod
    def tearDownClass(cls):
        cls.c.close()

    def deny(self, d, reason, outcome="denied"):
        self.assertEqual(d.verdict, "deny", d)
        self.assertFalse(d.allowed)
        self.assertEqual(d.reason, reason, d)
        self.assertEqual(d.outcome, outcome, d)
        self.assertTrue(d.message)
        self.assertEqual(d.event["data"]["denyReason"], reason)
        self.assertTrue(d.event["data"]["wouldDeny"])

    def test_allowed(self):
        d = self.c.check("api.example.com", 443)
        self.assertTrue(d.allowed)
        self.assertEqual((d.verdict, d.outcome, d.reason), ("allow", "allowed", None))
        self.assertEqual(d.host, "api.example.com")
        self.assertEqual(d.port, 443)
        self.assertEqual(d.matched_rule, egress.MatchedRule(0, "allow", "https://api.example.com"))
        self.assertEqual([a.address for a in d.addresses], ["93.184.216.34"])
        a = d.addresses[0]
        self.assertEqual((a.verdict, a.reason, a.family), ("allow", None, socket.AF_INET))
        self.assertEqual(a.sockaddr, ("93.184.216.34", 443))
        self.assertEqual(d.vetted_addresses, d.addresses)
        self.assertEqual(d.curl_resolve, "api.example.com:443:93.184.216.34")
        self.assertRegex(d.policy_digest, r"^[0-9a-f]{64}$")
        self.assertEqual(d.policy_digest, self.c.policy_digest)
        self.assertGreaterEqual(d.latency_ms, 0.0)
        self.assertGreaterEqual(d.dns_ms, 0.0)
        self.assertEqual(d.event["type"], "io.portarium.egress.attempt")
        self.assertEqual(d.event["subject"], "api.example.com:443")
        self.assertEqual(d.event["data"]["outcome"], "allowed")
        self.assertIsNone(d.event["data"]["denyReason"])
        self.assertFalse(d.event["data"]["wouldDeny"])
        self.assertEqual(d.mode, "enforce")

    def test_canonical_spellings(self):
        for host in ("API.Example.COM", "api.example.com.", b"api.example.com"):
            with self.subTest(host=host):
                d = self.c.check(host, 443)
                self.assertTrue(d.allowed, d)
                self.assertEqual(d.host, "api.example.com")
                self.assertEqual(d.destination, host)

    def test_cidr_literal(self):
        d = self.c.check("203.0.113.9", 443)
        self.assertTrue(d.allowed, d)
        self.assertEqual(d.matched_rule.index, 7)
        self.assertIsNone(d.curl_resolve)  # literals need no CURLOPT_RESOLVE
        self.assertEqual(d.addresses[0].sockaddr, ("203.0.113.9", 443))
        self.assertIsNone(d.addresses[0].ttl)
        self.deny(self.c.check("203.0.113.9", 80), "port_not_allowed")

    def test_each_reason(self):
        cases = [
            (("api.example.com:443", 443), "invalid_host"),
            (("https://api.example.com", 443), "invalid_host"),
            (("0x7f.1", 443), "invalid_host"),
            (("2130706433", 443), "invalid_host"),
            (("api.example.com", 0), "invalid_port"),
            (("api.example.com", 65536), "invalid_port"),
            (("legacy.example.com", 443), "explicit_deny"),
            (("evil.example.net", 443), "not_in_allowlist"),
            (("api.example.com", 80), "port_not_allowed"),
            (("127.0.0.1", 443), "special_purpose_address"),
            (("169.254.169.254", 80), "special_purpose_address"),
            (("missing.example.com", 443), "no_such_host"),
            (("priv.test", 443), "resolved_address_forbidden"),
            (("meta.test", 443), "resolved_address_forbidden"),
        ]
        for (host, port), reason in cases:
            with self.subTest(host=host, port=port):
                self.deny(self.c.check(host, port), reason)
        with checker({"egressAllowlist": []}) as empty:
            self.deny(empty.check("api.example.com", 443), "empty_allowlist")

    def test_explicit_deny_names_the_deny_rule(self):
        d = self.c.check("legacy.example.com", 443)
        self.assertEqual(d.matched_rule, egress.MatchedRule(0, "deny", "legacy.example.com"))

    def test_rebinding_answer_refused(self):
        d = self.c.check("priv.test", 443)
        self.assertEqual([(a.address, a.verdict) for a in d.addresses], [("10.0.0.5", "deny")])
        self.assertIsNotNone(d.addresses[0].reason)
        self.assertIsNone(d.curl_resolve)
        self.assertEqual(d.vetted_addresses, ())

    def test_ports(self):
        for port in (0, -1, 65536, 2 ** 31, 2 ** 32 + 443, 2 ** 64 + 443, -2 ** 40, 2 ** 16 + 443):
            with self.subTest(port=port):
                d = self.c.check("api.example.com", port)
                self.deny(d, "invalid_port")
                self.assertEqual(d.port, port)
        for port in (True, "443", 443.0, None):
            with self.subTest(port=port):
                with self.assertRaises(TypeError):
                    self.c.check("api.example.com", port)

    def test_ports_beyond_int32_reported_faithfully(self):
        # The C API takes an int32: the event can show no such port, so it
        # shows none (0), never a clamped or wrapped one, and the decision
        # names the real value.
        events = []
        with checker({"egressAllowlist": ["127.0.0.1/32:*"]}, on_event=events.append) as c:
            for port in (2 ** 32 + 443, 2 ** 31, -2 ** 40):
                with self.subTest(port=port):
                    d = c.check("127.0.0.1", port)
                    self.deny(d, "invalid_port")
                    self.assertEqual(d.port, port)
                    self.assertIn(str(port), d.message)
                    data = events[-1]["data"]
                    self.assertEqual((data["port"], data["denyReason"]), (0, "invalid_port"))
                    self.assertNotIn("2147483647", json.dumps(events[-1]))
                    self.assertNotIn("-2147483648", json.dumps(events[-1]))

    def test_str_subclass_host_checked_as_shown(self):
        class Sly(str):
            def encode(self, *a, **k):
                return b"127.0.0.1"

            def __str__(self):
                return "127.0.0.1"

        events = []
        with checker({"egressAllowlist": ["127.0.0.1/32:443"]}, on_event=events.append) as c:
            d = c.check(Sly("169.254.169.254"), 443)
            self.deny(d, "special_purpose_address")
            self.assertIs(type(d.destination), str)
            self.assertEqual(d.destination, "169.254.169.254")
            self.assertEqual(events[0]["data"]["destination"], "169.254.169.254:443")
            # A context value is sent as the value it was checked as.
            with self.assertRaises(ValueError):
                c.check("127.0.0.1", 443, runId=type("S", (str,), {
                    "encode": lambda self, *a, **k: b"ok"})("x\ny"))

    def test_host_types(self):
        for host in (None, 443, ["api.example.com"]):
            with self.assertRaises(TypeError):
                self.c.check(host, 443)

    def test_url(self):
        d = self.c.check_url("https://api.example.com:8443/v1/items")
        self.assertTrue(d.allowed, d)
        self.assertEqual(d.port, 8443)
        self.assertEqual(d.matched_rule.index, 1)
        self.assertEqual(d.url, "https://api.example.com:8443/v1/items")
        self.assertEqual(d.event["data"]["url"], "https://api.example.com:8443/v1/items")
        self.deny(self.c.check_url("https://api.example.com:8443/v1/../admin"), "not_in_allowlist")
        self.deny(self.c.check_url("https://api.example.com@evil.example.net/"), "invalid_host")
        self.deny(self.c.check_url("ftp://api.example.com/"), "invalid_host")

    def test_context_in_event(self):
        d = self.c.check("api.example.com", 443, method="GET", workspace_id="ws-1",
                         agent_id="agent-1", machine_id="m-1", run_id="run-1",
                         correlation_id="corr-1")
        data = d.event["data"]
        self.assertEqual(
            (data["method"], data["workspaceId"], data["agentId"], data["machineId"],
             data["runId"], data["correlationId"]),
            ("GET", "ws-1", "agent-1", "m-1", "run-1", "corr-1"))
        d = self.c.check("api.example.com", 443, method=None)
        self.assertIsNone(d.event["data"]["method"])

    def test_bad_context_is_refused_before_checking(self):
        before = self.c.stats()["checks"]
        with self.assertRaises(TypeError):
            self.c.check("api.example.com", 443, methd="GET")
        for bad in ("GET\0DELETE", "GET\nX: 1", "x" * 1025):
            with self.assertRaises(ValueError):
                self.c.check("api.example.com", 443, run_id=bad)
        with self.assertRaises(TypeError):
            self.c.check("api.example.com", 443, run_id=42)
        self.assertEqual(self.c.stats()["checks"], before)

    def test_frozen(self):
        d = self.c.check("api.example.com", 443)
        with self.assertRaises(dataclasses.FrozenInstanceError):
            d.verdict = "allow"
        with self.assertRaises(dataclasses.FrozenInstanceError):
            d.addresses[0].verdict = "allow"
        self.assertIsInstance(d.addresses, tuple)

    def test_stats_and_metrics(self):
        with checker(on_event=lambda ev: None) as c:
            c.check("api.example.com", 443)
            c.check("evil.example.net", 443)
            c.check("evil.example.net", 443)
            s = c.stats()
            self.assertEqual(s["checks"], 3)
            self.assertEqual(s["events_emitted"], 3)
            self.assertEqual(s["checks_by"], {"allowed": {"none": 1},
                                              "denied": {"not_in_allowlist": 2}})
            m = c.metrics()
            self.assertIn("egress_checks_total 3", m)
            self.assertIn('egress_checks_by_outcome_total{outcome="denied",'
                          'reason="not_in_allowlist"} 2', m)


class TestNul(unittest.TestCase):
    """C strings end at NUL: a host holding one must never be checked as its
    prefix, in any mode, through any entry point."""

    HOSTILE = [
        "api.example.com\0.evil.example.net",
        "api.example.com\0",
        "\0api.example.com",
        "api.exa\0mple.com",
        "203.0.113.9\0.evil",
        b"api.example.com\0.evil",
        bytearray(b"api.example.com\x00"),
    ]

    def test_nul_host_denied_without_truncation(self):
        for mode in ("enforce", "monitor"):
            events = []
            with checker(mode=mode, on_event=events.append) as c:
                for host in self.HOSTILE:
                    with self.subTest(mode=mode, host=host):
                        d = c.check(host, 443)
                        self.assertEqual(d.verdict, "deny", d)
                        self.assertEqual(d.reason, "invalid_host")
                        self.assertIn("NUL", d.message)
                        self.assertIsNone(d.host)
                        self.assertEqual(d.addresses, ())
                        self.assertEqual(d.destination, host)
                        # The event shows the whole destination, NUL marked.
                        self.assertIn("%00", d.event["data"]["destination"])
                        self.assertEqual(d.event["data"]["denyReason"], "invalid_host")
                        with self.assertRaises(egress.EgressDenied):
                            c.create_connection(host, 443)
                self.assertEqual(len(events), 2 * len(self.HOSTILE))

    def test_nul_url_denied(self):
        with checker() as c:
            for url in ("https://api.example.com/\0", "https://api.example.com\0.evil/",
                        "https://api.example.com:8443/v1/x\0/../../admin",
                        b"https://api.example.com/\0"):
                with self.subTest(url=url):
                    d = c.check_url(url)
                    self.assertEqual(d.verdict, "deny", d)
                    self.assertEqual(d.reason, "invalid_host")
                    self.assertIn("NUL", d.message)

    def test_lone_surrogates_denied(self):
        with checker(mode="monitor") as c:
            for host in ("api.example.com\udc80", "\ud800.example.com"):
                d = c.check(host, 443)
                self.assertEqual((d.verdict, d.reason), ("deny", "invalid_host"))

    def test_nul_in_paths_and_options(self):
        with self.assertRaises(ValueError):
            checker(policy=None, policy_file=os.path.join(TMP, "p\0.json"))
        with self.assertRaises(ValueError):
            checker(hosts_file=HOSTS_FILE + "\0x")
        with self.assertRaises(ValueError):
            checker(dns_servers=["127.0.0.1\0"])
        with checker() as c:
            with self.assertRaises(ValueError):
                c.reload_file(HOSTS_FILE + "\0")

    def test_nul_in_policy_document_rejected(self):
        with self.assertRaises(egress.PolicyError):
            egress.Checker('{"egressAllowlist": ["api.example.com\\u0000.evil"]}')
        with self.assertRaises(egress.PolicyError):
            egress.Checker(b'{"egressAllowlist": ["api.example.com"]}\0garbage')


class TestEvents(unittest.TestCase):
    def test_one_event_per_check(self):
        events = []
        with checker(on_event=events.append, event_source="/test/python") as c:
            calls = [("api.example.com", 443), ("evil.example.net", 443), ("bad host", 443),
                     ("api.example.com", 0), ("priv.test", 443)]
            decisions = [c.check(h, p) for h, p in calls]
            decisions.append(c.check_url("https://api.example.com/x"))
            decisions.append(c.check_url("not a url"))
            self.assertEqual(len(events), len(decisions))
            for ev, d in zip(events, decisions):
                self.assertEqual(ev, d.event)
                self.assertEqual(ev["source"], "/test/python")
                self.assertEqual(ev["specversion"], "1.0")
            self.assertEqual(len({ev["id"] for ev in events}), len(events))
            self.assertEqual(c.stats()["events_emitted"], len(events))

    def test_raising_callback_counts_failure(self):
        def boom(event):
            raise RuntimeError("sink down")
        with checker(on_event=boom) as c:
            d = c.check("api.example.com", 443)
            self.assertTrue(d.allowed)  # audit not required: the decision stands
            self.assertEqual(c.stats()["events_failed"], 1)

    def test_audit_required_denies_when_delivery_fails(self):
        def boom(event):
            raise OSError("disk full")
        for mode in ("enforce", "monitor"):
            with self.subTest(mode=mode):
                with checker(on_event=boom, audit_required=True, mode=mode) as c:
                    d = c.check("api.example.com", 443)
                    self.assertEqual(d.verdict, "deny")
                    self.assertEqual(d.outcome, "enforcement_unavailable")
                    self.assertEqual(d.reason, "audit_unavailable")
                    with self.assertRaises(egress.EgressUnavailable) as cm:
                        c.create_connection("api.example.com", 443)
                    self.assertEqual(cm.exception.decision.reason, "audit_unavailable")
                    self.assertEqual(c.stats()["events_failed"], 2)

    def test_audit_required_allows_when_delivered(self):
        seen = []
        with checker(on_event=seen.append, audit_required=True) as c:
            self.assertTrue(c.check("api.example.com", 443).allowed)
            self.assertEqual(len(seen), 1)

    def test_keyboard_interrupt_in_callback(self):
        def interrupt(event):
            raise KeyboardInterrupt
        with checker(on_event=interrupt, audit_required=True) as c:
            with self.assertRaises(KeyboardInterrupt):
                c.check("api.example.com", 443)
            self.assertEqual(c.stats()["events_failed"], 1)
        self.assertTrue(c.closed)

    def test_events_path(self):
        path = os.path.join(TMP, "events.jsonl")
        with checker(events_path=path) as c:
            c.check("api.example.com", 443)
            c.check("evil.example.net", 443, run_id="r-9")
        with open(path, encoding="utf-8") as f:
            lines = [json.loads(line) for line in f]
        self.assertEqual(len(lines), 2)
        self.assertEqual(lines[1]["data"]["runId"], "r-9")
        with self.assertRaises(ValueError):
            checker(events_path=path, on_event=print)


class TestMonitor(unittest.TestCase):
    def test_policy_denials_allowed_and_recorded(self):
        with checker(mode="monitor") as c:
            for host, port, reason in (("evil.example.net", 443, "not_in_allowlist"),
                                       ("api.example.com", 80, "port_not_allowed"),
                                       ("legacy.example.com", 443, "explicit_deny"),
                                       ("priv.test", 443, "resolved_address_forbidden")):
                with self.subTest(host=host):
                    d = c.check(host, port)
                    self.assertEqual(d.verdict, "allow")
                    self.assertTrue(d.would_deny)
                    self.assertEqual((d.outcome, d.reason), ("denied", reason))
                    self.assertEqual(d.mode, "monitor")
                    self.assertEqual(d.event["data"]["enforcementMode"], "monitor")
                    self.assertTrue(d.event["data"]["wouldDeny"])
            for host, port, reason in (("bad host", 443, "invalid_host"),
                                       ("api.example.com", 0, "invalid_port")):
                d = c.check(host, port)
                self.assertEqual((d.verdict, d.reason), ("deny", reason))

    def test_monitor_never_resolves_unlisted_names(self):
        with checker(mode="monitor") as c:
            d = c.check("evil.example.net", 443)
            self.assertEqual(d.addresses, ())
            with self.assertRaises(egress.EgressUnavailable):
                c.create_connection("evil.example.net", 443)

    def test_bad_mode(self):
        with self.assertRaises(ValueError):
            checker(mode="audit")


class TestLifecycle(unittest.TestCase):
    def test_context_manager(self):
        with checker() as c:
            self.assertTrue(c.check("api.example.com", 443).allowed)
            self.assertFalse(c.closed)
        self.assertTrue(c.closed)
        for call in (lambda: c.check("api.example.com", 443),
                     lambda: c.check_url("https://api.example.com/"),
                     lambda: c.create_connection("api.example.com", 443),
                     c.stats, c.metrics, lambda: c.set_policy(POLICY),
                     lambda: c.reload_file(HOSTS_FILE), lambda: c.policy_digest):
            with self.assertRaises(egress.EgressError):
                call()
        c.close()  # idempotent
        with self.assertRaises(egress.EgressError):
            with c:
                pass

    def test_close_waits_for_checks_in_flight(self):
        entered = threading.Event()
        release = threading.Event()
        results = []

        def slow(event):
            entered.set()
            release.wait(10)

        c = checker(on_event=slow)
        t = threading.Thread(target=lambda: results.append(c.check("api.example.com", 443)))
        t.start()
        self.assertTrue(entered.wait(10))
        closer = threading.Thread(target=c.close)
        closer.start()
        time.sleep(0.1)
        self.assertTrue(closer.is_alive())  # blocked on the check in flight
        release.set()
        t.join(10)
        closer.join(10)
        self.assertFalse(closer.is_alive())
        self.assertTrue(results[0].allowed)
        self.assertTrue(c.closed)

    def test_close_inside_callback_refused(self):
        errors = []
        holder = {}

        def cb(event):
            try:
                holder["c"].close()
            except egress.EgressError as e:
                errors.append(e)

        with checker(on_event=cb) as c:
            holder["c"] = c
            c.check("api.example.com", 443)
        self.assertEqual(len(errors), 1)

    def test_policy_errors_name_the_entry(self):
        with self.assertRaises(egress.PolicyError) as cm:
            egress.Checker({"egressAllowlist": ["ok.example.com", "https://user@c.example.com"]})
        self.assertIn("egressAllowlist[1]", str(cm.exception))
        self.assertIn("https://user@c.example.com", str(cm.exception))
        self.assertEqual(cm.exception.status, "invalid_policy")
        for bad in ("not json", "{}", {"egressAllowlist": "x"}, {"egressAllowlist": [" a.com"]},
                    {"egressAllowlist": ["10.0.0.1/8"]}):
            with self.subTest(policy=bad):
                with self.assertRaises(egress.PolicyError):
                    egress.Checker(bad)
        with self.assertRaises(egress.PolicyError) as cm:
            egress.Checker(policy_file=os.path.join(TMP, "no-such-file.json"))
        self.assertEqual(cm.exception.status, "io_error")
        with self.assertRaises(ValueError):
            egress.Checker()
        with self.assertRaises(TypeError):
            egress.Checker(42)

    def test_policy_shapes(self):
        for policy in (["https://api.example.com"], ("https://api.example.com",),
                       json.dumps({"egressAllowlist": ["https://api.example.com"]}),
                       {"isolationMode": "x", "egressAllowlist": ["https://api.example.com"]},
                       {"executionPolicy": {"egressAllowlist": ["https://api.example.com"]}}):
            with self.subTest(policy=policy):
                with checker(policy) as c:
                    self.assertTrue(c.check("api.example.com", 443).allowed)

    def test_options(self):
        with checker(timeout_ms=500, cache={"max_entries": 0}, filter=True,
                     pref64=["2001:db8:64::/96"]) as c:
            c.check("api.example.com", 443)
            c.check("api.example.com", 443)
            self.assertEqual(c.stats()["cache_hits"], 0)
        for kw in ({"timeout_ms": 0}, {"timeout_ms": 600001}, {"cache": {"ttl": 1}},
                   {"cache": {"min_ttl": 10, "max_ttl": 5}}, {"pref64": ["2001:db8::/33"]},
                   {"cache": {"max_entries": -1}}):
            with self.subTest(kw=kw):
                with self.assertRaises((ValueError, egress.EgressError)):
                    checker(**kw)
        with self.assertRaises((ValueError, egress.EgressError)):
            checker(dns_servers=["not-an-address"])

    def test_set_policy_and_reload(self):
        path = write("policy.json", json.dumps({"egressAllowlist": ["https://api.example.com"]}))
        with checker(policy=None, policy_file=path) as c:
            digest = c.policy_digest
            self.assertFalse(c.reload_file(path))
            self.assertFalse(c.check("other.example.com", 443).allowed)
            write("policy.json", json.dumps(
                {"egressAllowlist": ["https://api.example.com", "other.example.com"]}))
            self.assertTrue(c.reload_file(path))
            self.assertTrue(c.check("other.example.com", 443).allowed)
            self.assertNotEqual(c.policy_digest, digest)
            write("policy.json", json.dumps(
                {"egressAllowlist": ["api.example.com", "re:(unclosed"]}))
            with self.assertRaises(egress.PolicyError) as cm:
                c.reload_file(path)
            self.assertIn("egressAllowlist[1]", str(cm.exception))
            self.assertTrue(c.check("other.example.com", 443).allowed)  # old policy stays
            with self.assertRaises(egress.PolicyError):
                c.reload_file(os.path.join(TMP, "missing.json"))
            c.set_policy({"egressAllowlist": []})
            self.assertEqual(c.check("api.example.com", 443).reason, "empty_allowlist")
            with self.assertRaises(egress.PolicyError):
                c.set_policy({"egressAllowlist": ["*.*.example.com"]})
            self.assertEqual(c.check("api.example.com", 443).reason, "empty_allowlist")
            s = c.stats()
            self.assertGreaterEqual(s["policy_swaps"], 2)
            self.assertGreaterEqual(s["policy_reload_failures"], 1)


class TestThreads(unittest.TestCase):
    def test_many_threads_one_checker(self):
        lock = threading.Lock()
        events = []

        def on_event(ev):
            with lock:
                events.append(ev["data"]["destination"])

        calls = [("api.example.com", 443, "allow", None),
                 ("evil.example.net", 443, "deny", "not_in_allowlist"),
                 ("api.example.com\0.evil", 443, "deny", "invalid_host"),
                 ("priv.test", 443, "deny", "resolved_address_forbidden"),
                 ("203.0.113.7", 443, "allow", None),
                 ("api.example.com", 70000, "deny", "invalid_port")]
        failures = []
        with checker(on_event=on_event, audit_required=True) as c:
            def worker(n):
                for i in range(200):
                    host, port, verdict, reason = calls[(n + i) % len(calls)]
                    d = c.check(host, port, run_id="t%d-%d" % (n, i))
                    if (d.verdict, d.reason) != (verdict, reason):
                        failures.append((host, port, d.verdict, d.reason))
            threads = [threading.Thread(target=worker, args=(n,)) for n in range(8)]
            for t in threads:
                t.start()
            for t in threads:
                t.join(120)
            self.assertEqual(failures, [])
            self.assertEqual(len(events), 1600)
            s = c.stats()
            self.assertEqual(s["checks"], 1600)
            self.assertEqual(s["events_emitted"], 1600)
            self.assertEqual(s["events_failed"], 0)


class TestCreateConnection(unittest.TestCase):
    def setUp(self):
        self.server = Listener()
        self.port = self.server.port

    def tearDown(self):
        self.server.close()

    def test_connects_to_vetted_address(self):
        policy = {"egressAllowlist": ["127.0.0.1/32:%d" % self.port, "local.test:%d" % self.port]}
        with checker(policy) as c:
            real = socket.getaddrinfo

            def no_lookup(*a, **k):
                raise AssertionError("a second name lookup was made")
            # Any Python-level lookup during the connect fails the test.
            socket.getaddrinfo = no_lookup
            try:
                sock = c.create_connection("local.test", self.port, timeout=5, run_id="conn-1")
            finally:
                socket.getaddrinfo = real
            with sock:
                accepted = self.server.accept(5)
                self.assertIsNotNone(accepted)
                conn, peer = accepted
                self.assertEqual(sock.getpeername(), ("127.0.0.1", self.port))
                self.assertEqual(peer, sock.getsockname())
                sock.sendall(b"ping")
                self.assertEqual(conn.recv(4), b"ping")
                self.assertEqual(sock.gettimeout(), 5)

    def test_refused_when_only_the_name_is_listed(self):
        with checker({"egressAllowlist": ["local.test:%d" % self.port]}) as c:
            with self.assertRaises(egress.EgressDenied) as cm:
                c.create_connection("local.test", self.port, timeout=5)
            d = cm.exception.decision
            self.assertEqual(d.reason, "resolved_address_forbidden")
            self.assertNotIsInstance(cm.exception, egress.EgressUnavailable)
            self.assertIsNone(self.server.accept(0.3))  # nothing connected
            with self.assertRaises(egress.EgressDenied):
                c.create_connection("127.0.0.1", self.port, timeout=5)
            self.assertIsNone(self.server.accept(0.3))

    def test_literal_and_connect_helper(self):
        with checker({"egressAllowlist": ["127.0.0.1/32:%d" % self.port]}) as c:
            d = c.check("127.0.0.1", self.port)
            self.assertTrue(d.allowed, d)
            with c.connect(d, timeout=5):
                self.assertIsNotNone(self.server.accept(5))
            self.assertIsNone(c.check("127.0.0.1", self.port).curl_resolve)

    def test_source_address_refused(self):
        # As Node refuses localAddress: the local address can pick the route
        # (source-based routing), which no check saw.
        with checker({"egressAllowlist": ["127.0.0.1/32:%d" % self.port]}) as c:
            d = c.check("127.0.0.1", self.port)
            with self.assertRaises(ValueError):
                c.connect(d, timeout=5, source_address=("127.0.0.1", 0))
            with self.assertRaises(ValueError):
                c.create_connection("127.0.0.1", self.port, 5, ("127.0.0.1", 0))
            with self.assertRaises(ValueError):
                c.http_connection("127.0.0.1", self.port, source_address=("127.0.0.1", 0))
            self.assertIsNone(self.server.accept(0.2))

    def test_unavailable(self):
        with checker(["dns-down.example.com"], dns_servers=["127.0.0.1:1"],
                     timeout_ms=300, hosts_file=None) as c:
            # dns_servers on a closed port: the lookup fails, so the check
            # is enforcement_unavailable and nothing connects.
            with self.assertRaises(egress.EgressUnavailable) as cm:
                c.create_connection("dns-down.example.com", 443)
            self.assertEqual(cm.exception.decision.reason, "dns_unavailable")
        # Only names the policy allows are looked up.
        self.assertIsNone(self.server.accept(0.1))


# c-ares reads a hosts file through CARES_HOSTS, process-wide; the DNS tests
# use names that are in no hosts file, so they always reach the responder.
class TestDns(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.dns = Responder(ZONE)

    @classmethod
    def tearDownClass(cls):
        cls.dns.stop()

    def checker(self, policy, **kw):
        return egress.Checker(policy, dns_servers=[self.dns.server], timeout_ms=2000, **kw)

    def test_public_allowed_loopback_refused(self):
        with self.checker(["pub.test", "lo.test", "meta.test"]) as c:
            d = c.check("pub.test", 443)
            self.assertTrue(d.allowed, d)
            self.assertEqual(d.addresses[0].ttl, 60)
            self.assertEqual(d.curl_resolve, "pub.test:443:93.184.216.34")
            for host in ("lo.test", "meta.test"):
                d = c.check(host, 443)
                self.assertEqual((d.verdict, d.reason), ("deny", "resolved_address_forbidden"))

    def test_rebinding_name_refused(self):
        with self.checker(["rebind.test"], cache={"max_entries": 0}) as c:
            first = c.check("rebind.test", 443)
            self.assertTrue(first.allowed, first)
            for _ in range(3):
                d = c.check("rebind.test", 443)
                self.assertEqual((d.verdict, d.reason), ("deny", "resolved_address_forbidden"))
                self.assertEqual([a.address for a in d.addresses], ["127.0.0.1"])
                with self.assertRaises(egress.EgressDenied):
                    c.create_connection("rebind.test", 443)

    def test_dns_failures(self):
        with self.checker(["fail.test", "nx.test"]) as c:
            d = c.check("fail.test", 443)
            self.assertEqual((d.verdict, d.outcome, d.reason),
                             ("deny", "enforcement_unavailable", "dns_unavailable"))
            with self.assertRaises(egress.EgressUnavailable):
                c.create_connection("fail.test", 443)
            d = c.check("nx.test", 443)
            self.assertEqual((d.verdict, d.outcome, d.reason), ("deny", "denied", "no_such_host"))

    def test_tries_each_vetted_address_in_order(self):
        server = Listener()  # 127.0.0.1 only: 127.0.0.2 refuses
        try:
            with self.checker(["127.0.0.0/8:%d" % server.port,
                               "multi.test:%d" % server.port]) as c:
                d = c.check("multi.test", server.port)
                self.assertTrue(d.allowed, d)
                self.assertEqual([a.address for a in d.vetted_addresses],
                                 ["127.0.0.2", "127.0.0.1"])
                with c.connect(d, timeout=5) as sock:
                    self.assertEqual(sock.getpeername(), ("127.0.0.1", server.port))
                    self.assertIsNotNone(server.accept(5))
        finally:
            server.close()

    def test_filter_mode_connects_only_to_vetted(self):
        # 127.0.0.1 (listening) is forbidden, 127.0.0.2 (nothing listens) is
        # the one vetted address: the connection must fail rather than use
        # the forbidden address.
        server = Listener()
        try:
            with self.checker(["127.0.0.2/32:%d" % server.port, "mixed.test:%d" % server.port],
                              filter=True) as c:
                d = c.check("mixed.test", server.port)
                self.assertTrue(d.allowed, d)
                self.assertEqual([(a.address, a.verdict) for a in d.addresses],
                                 [("127.0.0.1", "deny"), ("127.0.0.2", "allow")])
                self.assertEqual(d.curl_resolve, "mixed.test:%d:127.0.0.2" % server.port)
                with self.assertRaises(OSError) as cm:
                    c.connect(d, timeout=5)
                self.assertNotIsInstance(cm.exception, egress.EgressError)
                self.assertIsNone(server.accept(0.3))
            with self.checker(["127.0.0.2/32:%d" % server.port,
                               "mixed.test:%d" % server.port]) as c:
                d = c.check("mixed.test", server.port)
                self.assertEqual(d.reason, "resolved_address_forbidden")
        finally:
            server.close()



class TestContextKeys(unittest.TestCase):
    """The request context takes the event's own keys, as the Node binding
    does (snake_case stays as an alias), and a registration record gives
    machineId/workspaceId to every check that gives none."""

    KEYS = ("method", "workspaceId", "agentId", "machineId", "runId", "correlationId")

    def context_of(self, d):
        return tuple(d.event["data"][k] for k in self.KEYS)

    def test_camel_case_keys_everywhere(self):
        ctx = {"method": "GET", "workspaceId": "ws-1", "agentId": "agent-1", "machineId": "m-1",
               "runId": "run-1", "correlationId": "corr-1"}
        want = ("GET", "ws-1", "agent-1", "m-1", "run-1", "corr-1")
        events = []
        server = Listener()
        try:
            policy = {"egressAllowlist": ["https://api.example.com",
                                          "127.0.0.1/32:%d" % server.port]}
            with checker(policy, on_event=events.append) as c:
                self.assertEqual(self.context_of(c.check("api.example.com", 443, **ctx)), want)
                self.assertEqual(self.context_of(c.check("api.example.com", 443, ctx)), want)
                self.assertEqual(self.context_of(c.check_url("https://api.example.com/x", ctx)),
                                 want)
                self.assertEqual(self.context_of(c.check_url("https://api.example.com/x",
                                                             **ctx)), want)
                with c.create_connection("127.0.0.1", server.port, timeout=5, ctx=ctx):
                    pass
                with c.create_connection("127.0.0.1", server.port, 5, **ctx):
                    pass
            self.assertEqual(len(events), 6)
            for ev in events:
                self.assertEqual(tuple(ev["data"][k] for k in self.KEYS), want)
        finally:
            server.close()

    def test_snake_case_aliases_and_mixing(self):
        with checker() as c:
            d = c.check("api.example.com", 443, {"runId": "r"}, correlation_id="c",
                        workspace_id="w", agent_id="a", machine_id="m", method="PUT")
            self.assertEqual(self.context_of(d), ("PUT", "w", "a", "m", "r", "c"))
            # One key spelled twice with one value is fine; two values are not.
            d = c.check("api.example.com", 443, {"runId": "r"}, run_id="r")
            self.assertEqual(d.event["data"]["runId"], "r")
            before = c.stats()["checks"]
            with self.assertRaises(TypeError):
                c.check("api.example.com", 443, {"runId": "r1"}, run_id="r2")
            with self.assertRaises(TypeError):
                c.check("api.example.com", 443, {"runID": "r"})
            with self.assertRaises(TypeError):
                c.check("api.example.com", 443, ["runId"])
            with self.assertRaises(ValueError):
                c.check_url("https://api.example.com/", {"agentId": "a\nb"})
            self.assertEqual(c.stats()["checks"], before)

    def test_registration_defaults(self):
        with open(REGISTRATION, encoding="utf-8") as f:
            record = json.load(f)
        for policy in (record, json.dumps(record), json.dumps(record).encode()):
            with self.subTest(kind=type(policy).__name__):
                with checker(policy) as c:
                    self.assertEqual(c.default_context,
                                     {"workspaceId": "ws-acme", "machineId": "machine-sor-sync-01"})
                    d = c.check("api.crm.example.com", 443, runId="r-1")
                    self.assertEqual(self.context_of(d),
                                     (None, "ws-acme", None, "machine-sor-sync-01", "r-1", None))
                    # What the caller gives wins over the record.
                    d = c.check("api.crm.example.com", 443, machineId="m-2", workspace_id="ws-2")
                    self.assertEqual(self.context_of(d)[1:4:2], ("ws-2", "m-2"))
        with checker(policy=None, policy_file=REGISTRATION) as c:
            d = c.check_url("https://api.crm.example.com/v1")
            self.assertEqual(d.event["data"]["machineId"], "machine-sor-sync-01")
            self.assertEqual(d.event["data"]["workspaceId"], "ws-acme")
            # The defaults follow the document in force.
            c.set_policy(["https://api.crm.example.com"])
            self.assertEqual(c.default_context, {})
            self.assertIsNone(c.check("api.crm.example.com", 443).event["data"]["machineId"])
            path = write("registration.json", json.dumps(record))
            self.assertTrue(c.reload_file(path))
            self.assertEqual(c.check("api.crm.example.com", 443).event["data"]["machineId"],
                             "machine-sor-sync-01")
            # Same rules, another machine: still a change worth reporting.
            path = write("registration.json", json.dumps(dict(record, machineId="m-9")))
            self.assertTrue(c.reload_file(path))
            self.assertEqual(c.default_context["machineId"], "m-9")
            self.assertFalse(c.reload_file(path))
        # Only a registration record gives defaults; a bare document does not.
        with checker({"machineId": "m", "egressAllowlist": ["api.example.com"]}) as c:
            self.assertEqual(c.default_context, {})

    def test_registration_with_unusable_ids_rejected(self):
        with open(REGISTRATION, encoding="utf-8") as f:
            record = json.load(f)
        for bad in (dict(record, machineId="m\n1"), dict(record, workspaceId="w" * 1025)):
            with self.subTest(bad=str(bad)[:40]):
                with self.assertRaises(egress.EgressPolicyError):
                    checker(bad)
        text = json.dumps(record)[:-1] + ', "machineId": "other"}'
        with self.assertRaises(egress.EgressPolicyError) as cm:
            checker(text)
        self.assertIn("machineId", str(cm.exception))
        with checker(record) as c:
            with self.assertRaises(egress.EgressPolicyError):
                c.set_policy(dict(record, machineId="bad\x7f"))
            self.assertEqual(c.default_context["machineId"], "machine-sor-sync-01")


class TestErrors(unittest.TestCase):
    """The error classes, shaped like the Node binding's."""

    def test_hierarchy(self):
        self.assertTrue(issubclass(egress.EgressPolicyError, egress.EgressError))
        self.assertTrue(issubclass(egress.EgressDeniedError, egress.EgressError))
        # An outage is a denial to the caller.
        self.assertTrue(issubclass(egress.EgressUnavailableError, egress.EgressDeniedError))
        self.assertFalse(issubclass(egress.EgressDeniedError, OSError))
        # The first release's names are the same classes.
        self.assertIs(egress.PolicyError, egress.EgressPolicyError)
        self.assertIs(egress.EgressDenied, egress.EgressDeniedError)
        self.assertIs(egress.EgressUnavailable, egress.EgressUnavailableError)

    def test_denied_and_unavailable(self):
        with checker() as c:
            with self.assertRaises(egress.EgressDeniedError) as cm:
                c.create_connection("evil.example.net", 443)
            e = cm.exception
            self.assertNotIsInstance(e, egress.EgressUnavailableError)
            self.assertEqual((e.code, e.reason, e.decision.reason),
                             ("EEGRESSDENIED", "not_in_allowlist", "not_in_allowlist"))
        with checker(["dns-down.example.com"], dns_servers=["127.0.0.1:1"], timeout_ms=300,
                     hosts_file=None) as c:
            with self.assertRaises(egress.EgressDeniedError) as cm:
                c.create_connection("dns-down.example.com", 443)
            e = cm.exception
            self.assertIsInstance(e, egress.EgressUnavailableError)
            self.assertEqual((e.code, e.reason), ("EEGRESSUNAVAILABLE", "dns_unavailable"))

    def test_policy_errors(self):
        with self.assertRaises(egress.EgressPolicyError) as cm:
            egress.Checker({"egressAllowlist": ["https://user@c.example.com"]})
        self.assertEqual((cm.exception.code, cm.exception.status),
                         ("EGRESS_EPOLICY", "invalid_policy"))
        with self.assertRaises(egress.EgressPolicyError) as cm:
            egress.Checker(policy_file=os.path.join(TMP, "absent.json"))
        self.assertEqual((cm.exception.code, cm.exception.status), ("EGRESS_EIO", "io_error"))
        with checker() as c:
            with self.assertRaises(egress.EgressPolicyError) as cm:
                c.reload_file(os.path.join(TMP, "absent.json"))
            self.assertEqual(cm.exception.code, "EGRESS_EIO")
        with self.assertRaises(egress.EgressError) as cm:
            c.check("api.example.com", 443)
        self.assertEqual(cm.exception.code, "EGRESS_CLOSED")


class TestHeldDecision(unittest.TestCase):
    def setUp(self):
        self.server = Listener()

    def tearDown(self):
        self.server.close()

    def test_check_then_connect_one_event(self):
        events = []
        policy = {"egressAllowlist": ["127.0.0.0/8:%d" % self.server.port,
                                      "web.test:%d" % self.server.port]}
        with checker(policy, on_event=events.append) as c:
            d = c.check("web.test", self.server.port, runId="held-1")
            self.assertTrue(d.allowed, d)
            with c.connect(d, timeout=5) as sock:
                self.assertIn(sock.getpeername(), [a.sockaddr for a in d.vetted_addresses])
                self.assertIsNotNone(self.server.accept(5))
            self.assertEqual(len(events), 1)
            self.assertEqual(events[0]["data"]["runId"], "held-1")

    def test_forged_decision_refused(self):
        policy = {"egressAllowlist": ["127.0.0.0/8:%d" % self.server.port]}
        with checker(policy) as c:
            denied = c.check("127.0.0.1", self.server.port + 1 if self.server.port < 65535 else 1)
            self.assertFalse(denied.allowed)
            forged = dataclasses.replace(denied, verdict="allow", outcome="allowed", reason=None)
            with self.assertRaises(ValueError):
                c.connect(forged)
            ok = c.check("127.0.0.1", self.server.port)
            moved = dataclasses.replace(ok, addresses=tuple(
                dataclasses.replace(a, sockaddr=("127.0.0.2", self.server.port))
                for a in ok.addresses))
            with self.assertRaises(ValueError):
                c.connect(moved)
            with self.assertRaises(TypeError):
                c.connect({"verdict": "allow"})
            self.assertIsNone(self.server.accept(0.2))

    def test_decision_edited_in_place_refused(self):
        # "frozen" does not stop object.__setattr__: what the library decided
        # is kept apart at issue time, and an edited decision is refused.
        policy = {"egressAllowlist": ["127.0.0.1/32:%d" % self.server.port]}
        with checker(policy) as c:
            d = c.check("127.0.0.1", self.server.port)
            self.assertTrue(d.allowed, d)
            object.__setattr__(d.addresses[0], "sockaddr", ("127.0.0.2", self.server.port))
            with self.assertRaises(ValueError):
                c.connect(d, timeout=5)
            denied = c.check("127.0.0.2", self.server.port)
            object.__setattr__(denied, "verdict", "allow")
            object.__setattr__(denied, "outcome", "allowed")
            object.__setattr__(denied, "addresses", (dataclasses.replace(
                denied.addresses[0], verdict="allow", sockaddr=("127.0.0.1", self.server.port)),))
            with self.assertRaises(ValueError):
                c.connect(denied, timeout=5)
            self.assertIsNone(self.server.accept(0.2))

    def test_stale_spent_and_foreign_decisions_refused(self):
        policy = {"egressAllowlist": ["127.0.0.1/32:%d" % self.server.port]}
        with checker(policy) as c, checker(policy) as other:
            d = c.check("127.0.0.1", self.server.port)
            with c.connect(d, timeout=5):
                self.assertIsNotNone(self.server.accept(5))
            with self.assertRaises(ValueError):  # one decision, one connection
                c.connect(d, timeout=5)
            with self.assertRaises(ValueError):  # another checker's
                c.connect(other.check("127.0.0.1", self.server.port), timeout=5)
            held = c.check("127.0.0.1", self.server.port)
            c.set_policy({"egressAllowlist": []})
            with self.assertRaises(ValueError):  # made under the old policy
                c.connect(held, timeout=5)
            self.assertIsNone(self.server.accept(0.2))

    def test_decision_stale_after_a_swap_and_back(self):
        # A -> B -> A: the digest is A's again, but the decision was made
        # before two swaps (B may have been in force for a reason).
        policy = {"egressAllowlist": ["127.0.0.1/32:%d" % self.server.port]}
        path = os.path.join(TMP, "generation.json")
        with open(path, "w") as f:
            json.dump(policy, f)
        with checker(policy) as c:
            held = c.check("127.0.0.1", self.server.port)
            c.set_policy({"egressAllowlist": ["127.0.0.1/32:1"]})
            c.set_policy(policy)
            self.assertEqual(held.policy_digest, c.policy_digest)
            with self.assertRaises(ValueError):
                c.connect(held, timeout=5)
            held = c.check("127.0.0.1", self.server.port)
            c.set_policy(policy)  # every set_policy is a swap, even to the same rules
            with self.assertRaises(ValueError):
                c.connect(held, timeout=5)
            self.assertIsNone(self.server.accept(0.2))
            # A reload that changes nothing swaps nothing: still good.
            held = c.check("127.0.0.1", self.server.port)
            self.assertFalse(c.reload_file(path))
            with c.connect(held, timeout=5):
                self.assertIsNotNone(self.server.accept(5))


class TestLibraryLookup(unittest.TestCase):
    """How _native finds libegress: EGRESS_LIBRARY alone, else the dynamic
    loader, else plain builds of a source checkout, never a sanitizer one."""

    def fake_checkout(self, sanitize):
        top = tempfile.mkdtemp(dir=TMP)
        os.makedirs(os.path.join(top, "include"))
        open(os.path.join(top, "include", "egress.h"), "w").close()
        os.makedirs(os.path.join(top, "bindings", "python", "egress"))
        open(os.path.join(top, "bindings", "python", "egress", "_native.py"), "w").close()
        for sub, value in (("build/release", sanitize), ("build/debug", "none")):
            os.makedirs(os.path.join(top, sub, "lib"))
            os.makedirs(os.path.join(top, sub, "meson-info"))
            open(os.path.join(top, sub, "lib", "libegress.so.0"), "w").close()
            with open(os.path.join(top, sub, "meson-info", "intro-buildoptions.json"), "w") as f:
                json.dump([{"name": "b_sanitize", "value": value}], f)
        os.makedirs(os.path.join(top, "build", "lib"))  # no meson-info: not trusted
        open(os.path.join(top, "build", "lib", "libegress.so.0"), "w").close()
        return top

    def test_order(self):
        from egress import _native
        top = self.fake_checkout("none")
        self.assertEqual(list(_native._candidates({"EGRESS_LIBRARY": "/x/libegress.so"}, top)),
                         ["/x/libegress.so"])
        self.assertEqual(list(_native._candidates({}, top)),
                         ["libegress.so.0", os.path.join(top, "build/release/lib/libegress.so.0"),
                          os.path.join(top, "build/debug/lib/libegress.so.0")])

    def test_sanitizer_builds_skipped(self):
        from egress import _native
        for value in ("address,undefined", "thread", ["address"]):
            top = self.fake_checkout(value)
            self.assertEqual(
                list(_native._candidates({}, top)),
                ["libegress.so.0", os.path.join(top, "build/debug/lib/libegress.so.0")])

    def test_installed_package_looks_nowhere_else(self):
        from egress import _native
        top = tempfile.mkdtemp(dir=TMP)
        os.makedirs(os.path.join(top, "build", "release", "lib"))
        open(os.path.join(top, "build", "release", "lib", "libegress.so.0"), "w").close()
        self.assertEqual(list(_native._candidates({}, top)), ["libegress.so.0"])

    def test_library_path_is_the_loaded_file(self):
        self.assertTrue(os.path.isabs(egress.library_path), egress.library_path)
        self.assertTrue(os.path.exists(egress.library_path))
        self.assertEqual(egress.version(), egress.__version__)

if __name__ == "__main__":
    unittest.main(verbosity=2)
