#!/usr/bin/env python3
"""Tests of the egressctl command line.

Environment (set by tests/meson.build):
  EGRESSCTL             path of the egressctl binary (required)
  EGRESS_TEST_SRCDIR    the source tests/ directory
  EGRESS_TEST_DNS       path of the loopback DNS responder (optional), else
  EGRESS_TEST_BUILDDIR  build tests/ directory: dns/egress-test-dns is used

Every subprocess call has a timeout.  The script exits non-zero when any
test fails or errors, and prints unittest's usual summary line.
"""

import json
import os
import re
import select
import shutil
import subprocess
import sys
import tempfile
import unittest

EGRESSCTL = os.environ.get("EGRESSCTL", "")
TIMEOUT = 60

EX_USAGE = 64
EX_DATAERR = 65
EX_NOINPUT = 66

POLICY = {
    "egressAllowlist": [
        "api.example.com",                  # 0
        "*.svc.example.com:8443",           # 1
        "https://docs.example.com/v1",      # 2
        "203.0.113.0/24:443",               # 3
        "10.1.0.0/16:5432",                 # 4
        "pub.test:*",                       # 5
        "lo.test",                          # 6
        "meta.test",                        # 7
        "priv.test",                        # 8
        "v6lo.test",                        # 9
        "mix.test",                         # 10
        "nx.test",                          # 11
        "fail.test",                        # 12
        "drop.test",                        # 13
        "mixed-ok.test",                    # 14
    ],
    "egressDenylist": ["bad.example.com"],
}

HOSTS = """\
93.184.216.34 api.example.com
93.184.216.35 docs.example.com
93.184.216.36 a.svc.example.com
127.0.0.1 lo.test
"""

ZONE = """\
pub.test A 93.184.216.34
lo.test A 127.0.0.1
meta.test A 169.254.169.254
priv.test A 10.0.0.5
v6lo.test AAAA ::1
mix.test A 93.184.216.34
mix.test A 10.0.0.5
mixed-ok.test A 93.184.216.34
mixed-ok.test A 192.168.1.1
nx.test RCODE NXDOMAIN
fail.test RCODE SERVFAIL
drop.test DROP
"""

VERDICTS = {"allow", "deny"}
OUTCOMES = {"allowed", "denied", "enforcement_unavailable"}
REASONS = {
    "invalid_host", "invalid_port", "empty_allowlist", "explicit_deny",
    "not_in_allowlist", "port_not_allowed", "special_purpose_address",
    "no_such_host", "resolved_address_forbidden", "dns_unavailable",
    "audit_unavailable", "internal_error",
}


def responder_path():
    p = os.environ.get("EGRESS_TEST_DNS")
    if p and os.path.exists(p):
        return p
    b = os.environ.get("EGRESS_TEST_BUILDDIR")
    if b:
        p = os.path.join(b, "dns", "egress-test-dns")
        if os.path.exists(p):
            return p
    return None


def silent_udp_port():
    """A loopback DNS server that never answers: a socket bound and never
    read, so that no other test's responder can take the port meanwhile.
    Returns (the socket, its port): keep the socket open while it is used."""
    import socket
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind(("127.0.0.1", 0))
    return s, s.getsockname()[1]


class CliBase(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        if not EGRESSCTL or not os.path.exists(EGRESSCTL):
            raise unittest.SkipTest("EGRESSCTL not set or missing")
        cls.tmp = tempfile.mkdtemp(prefix="egressctl-test-")
        cls.policy = cls.write("policy.json", json.dumps(POLICY))
        cls.hosts = cls.write("hosts", HOSTS)
        # Names missing from the hosts file must not reach a real resolver:
        # point c-ares at a loopback port that never answers as well.
        cls.nodns_sock, port = silent_udp_port()
        cls.nodns = "127.0.0.1:%d" % port

    @classmethod
    def tearDownClass(cls):
        cls.nodns_sock.close()
        shutil.rmtree(cls.tmp, ignore_errors=True)

    @classmethod
    def write(cls, name, text, mode="w"):
        path = os.path.join(cls.tmp, name)
        with open(path, mode) as f:
            f.write(text)
        return path

    def run_cli(self, *args, stdin=None, timeout=TIMEOUT):
        if isinstance(stdin, str):
            stdin = stdin.encode("utf-8")
        p = subprocess.run([EGRESSCTL] + [str(a) for a in args], input=stdin,
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                           timeout=timeout)
        self.assertGreaterEqual(p.returncode, 0,
                                "egressctl died from signal %d: %r" % (-p.returncode, p.stderr))
        return p

    def check(self, host, port, *extra, timeout=TIMEOUT):
        return self.run_cli("check", "--policy", self.policy, "--hosts", self.hosts,
                            "--dns-server", self.nodns, "--timeout-ms", "500",
                            *extra, host, port, timeout=timeout)

    def assert_decision(self, obj, where=""):
        self.assertIsInstance(obj, dict, where)
        for key in ("host", "port", "verdict", "outcome", "reason", "matchedRule",
                    "addresses", "message"):
            self.assertIn(key, obj, "%s missing %s: %r" % (where, key, obj))
        self.assertTrue(obj["host"] is None or isinstance(obj["host"], str), where)
        self.assertTrue(obj["port"] is None or
                        (isinstance(obj["port"], int) and not isinstance(obj["port"], bool)),
                        "%s port %r" % (where, obj["port"]))
        self.assertIn(obj["verdict"], VERDICTS, where)
        self.assertIn(obj["outcome"], OUTCOMES, where)
        if obj["outcome"] == "allowed":
            self.assertIsNone(obj["reason"], where)
        else:
            self.assertIn(obj["reason"], REASONS, where)
        self.assertTrue(obj["matchedRule"] is None or isinstance(obj["matchedRule"], dict), where)
        self.assertIsInstance(obj["addresses"], list, where)
        self.assertIsInstance(obj["message"], str, where)

    def decisions(self, p):
        """Parse every stdout line as a decision; return the list."""
        out = []
        text = p.stdout.decode("utf-8")  # must be valid UTF-8
        self.assertTrue(text == "" or text.endswith("\n"), "output ends mid-line")
        for i, line in enumerate(text.splitlines()):
            obj = json.loads(line)
            self.assert_decision(obj, "line %d" % (i + 1))
            out.append(obj)
        return out

    def one(self, p, code):
        self.assertEqual(p.returncode, code, "stdout=%r stderr=%r" % (p.stdout, p.stderr))
        d = self.decisions(p)
        self.assertEqual(len(d), 1, p.stdout)
        return d[0]


class TestUsage(CliBase):
    def test_version_and_help(self):
        p = self.run_cli("--version")
        self.assertEqual(p.returncode, 0)
        self.assertRegex(p.stdout.decode(), r"^egressctl \d+\.\d+\.\d+")
        for h in ("help", "-h", "--help"):
            p = self.run_cli(h)
            self.assertEqual(p.returncode, 0, h)
            self.assertIn(b"egressctl check", p.stdout)
        p = self.run_cli("check", "--help")
        self.assertEqual(p.returncode, 0)

    def usage(self, *args, stdin=None):
        p = self.run_cli(*args, stdin=stdin)
        self.assertEqual(p.returncode, EX_USAGE, "args=%r stderr=%r" % (args, p.stderr))
        self.assertEqual(p.stdout, b"", args)
        self.assertIn(b"usage", p.stderr, args)
        return p

    def test_usage_errors(self):
        pol = self.policy
        cases = [
            (),
            ("frobnicate",),
            ("--version", "x"),
            ("help", "x"),
            ("check",),
            ("check", "api.example.com", "443"),                      # no --policy
            ("check", "--policy"),                                    # missing value
            ("check", "--policy", pol),                               # no HOST PORT
            ("check", "--policy", pol, "api.example.com"),            # no PORT
            ("check", "--policy", pol, "a", "443", "extra"),
            ("check", "--policy", pol, "--bogus", "a", "443"),
            ("check", "--policy", pol, "-x", "a", "443"),
            ("check", "--policy", pol, "--policy", pol, "a", "443"),
            ("check", "--policy", "", "a", "443"),
            ("check", "--policy", pol, "--mode", "audit", "a", "443"),
            ("check", "--policy", pol, "--mode", "enforce", "--mode", "monitor", "a", "443"),
            ("check", "--policy", pol, "--timeout-ms", "0", "a", "443"),
            ("check", "--policy", pol, "--timeout-ms", "abc", "a", "443"),
            ("check", "--policy", pol, "--timeout-ms", "600001", "a", "443"),
            ("check", "--policy", pol, "--timeout-ms", "-5", "a", "443"),
            ("check", "--policy", pol, "--timeout-ms", "99999999999999999999999", "a", "443"),
            ("check", "--policy", pol, "--dns-server", "", "a", "443"),
            ("check", "--policy", pol, "--dns-server", "not-an-ip", "a", "443"),
            ("check", "--policy", pol, "--dns-server", "1.1.1.1,8.8.8.8", "a", "443"),
            ("check", "--policy", pol, "--pref64", "bogus", "a", "443"),
            ("check", "--policy", pol, "--batch", "a", "443"),
            ("check", "--policy", pol, "--url", "https://a/", "a"),
            ("check", "--policy", pol, "--url", "https://a/", "--batch"),
            ("check", "--policy", pol, "--url"),
            ("lint",),
            ("lint", "--policy", pol, "extra"),
            ("lint", "--policy", pol, "--mode", "monitor"),
            ("lint", "--policy"),
        ]
        for args in cases:
            with self.subTest(args=args):
                self.usage(*args)

    def test_bad_port_text_is_usage_error(self):
        for port in ("abc", "-1", "", "443x", "+443", " 443", "443 ", "0443", "00",
                     "4 43", "0x1bb", "1e3", "443.0", "\u0664\u0664\u0663"):
            with self.subTest(port=port):
                p = self.usage("check", "--policy", self.policy, "api.example.com", port)
                self.assertIn(b"PORT", p.stderr)

    def test_numeric_out_of_range_port_is_decided(self):
        # Syntactically numeric: a check input, decided invalid_port, exit 1.
        for port in ("0", "65536", "70000", "2147483647"):
            with self.subTest(port=port):
                d = self.one(self.check("api.example.com", port), 1)
                self.assertEqual(d["verdict"], "deny")
                self.assertEqual(d["reason"], "invalid_port")
                self.assertEqual(d["port"], int(port))
        # Numbers past the library's port are decided too, the value named
        # in the message (the event's port is 0: it cannot hold them).
        for port in ("2147483648", "4294967739", "99999999999999999999"):
            with self.subTest(port=port):
                d = self.one(self.check("api.example.com", port), 1)
                self.assertEqual((d["verdict"], d["reason"], d["port"]), ("deny", "invalid_port", 0))
                self.assertIn(port, d["message"])

    def test_hostile_arguments_never_crash(self):
        weird = ["", "-", "--", "\x01", "a" * 100000, "%", "[", "]:", "\u00ff\u00fe",
                 "api.example.com\n", "https://api.example.com/", "*"]
        for w in weird:
            with self.subTest(w=w[:20]):
                p = self.run_cli("check", "--policy", self.policy, "--dns-server", self.nodns,
                                 "--timeout-ms", "300", "--", w, "443")
                self.assertIn(p.returncode, (1, 64), p.stderr)
                if p.returncode == 1:
                    d = self.one(p, 1)
                    self.assertEqual(d["verdict"], "deny")

    def test_invalid_utf8_argument(self):
        host = b"api.example.com\xff"
        p = subprocess.run([EGRESSCTL.encode(), b"check", b"--policy", self.policy.encode(),
                            host, b"443"], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                           timeout=TIMEOUT)
        d = self.one(p, 1)
        self.assertEqual(d["reason"], "invalid_host")

    def test_double_dash_allows_dash_host(self):
        d = self.one(self.run_cli("check", "--policy", self.policy, "--", "-evil.com", "443"), 1)
        self.assertEqual(d["verdict"], "deny")


class TestPolicyErrors(CliBase):
    def test_missing_policy_file(self):
        p = self.run_cli("check", "--policy", os.path.join(self.tmp, "nope.json"), "a.com", "443")
        self.assertEqual(p.returncode, EX_NOINPUT, p.stderr)
        self.assertEqual(p.stdout, b"")
        p = self.run_cli("lint", "--policy", os.path.join(self.tmp, "nope.json"))
        self.assertEqual(p.returncode, EX_NOINPUT)
        p = self.run_cli("lint", "--policy", self.tmp)  # a directory
        self.assertIn(p.returncode, (EX_NOINPUT, EX_DATAERR))

    def test_missing_hosts_file(self):
        p = self.run_cli("check", "--policy", self.policy, "--hosts",
                         os.path.join(self.tmp, "nohosts"), "api.example.com", "443")
        self.assertEqual(p.returncode, EX_NOINPUT, p.stderr)

    def test_invalid_policy_check_and_lint(self):
        bad = {
            "egressAllowlist": ["api.example.com", "10.0.0.1/8"],
        }
        path = self.write("bad.json", json.dumps(bad))
        for args in (("check", "--policy", path, "api.example.com", "443"),
                     ("lint", "--policy", path)):
            with self.subTest(args=args[0]):
                p = self.run_cli(*args)
                self.assertEqual(p.returncode, EX_DATAERR, p.stderr)
                self.assertEqual(p.stdout, b"")
                err = p.stderr.decode()
                self.assertIn("egressAllowlist", err)
                self.assertIn("1", err)
                self.assertIn("10.0.0.1/8", err)

    def test_lint_errors_name_list_index_entry(self):
        cases = [
            ({"egressAllowlist": ["ok.example.com", " space.example.com"]}, "egressAllowlist", "1"),
            ({"egressAllowlist": ["a.com"], "egressDenylist": ["b.com", "c.com", "ftp://x.com"]},
             "egressDenylist", "2"),
            ({"egressAllowlist": ["0177.0.0.1"]}, "egressAllowlist", "0"),
            ({"egressAllowlist": ["https://user@a.com"]}, "egressAllowlist", "0"),
        ]
        for doc, lst, idx in cases:
            with self.subTest(doc=doc):
                path = self.write("lint.json", json.dumps(doc))
                p = self.run_cli("lint", "--policy", path)
                self.assertEqual(p.returncode, EX_DATAERR, p.stderr)
                err = p.stderr.decode()
                self.assertIn(lst, err)
                self.assertRegex(err, r"\b%s\b" % idx)

    def test_lint_not_json(self):
        for text in ("", "{", "[1,2]", "{\"egressAllowlist\": \"a.com\"}", "\x00\x01"):
            with self.subTest(text=text):
                path = self.write("garbage.json", text)
                p = self.run_cli("lint", "--policy", path)
                self.assertEqual(p.returncode, EX_DATAERR, p.stderr)
                self.assertNotEqual(p.stderr, b"")

    def test_lint_ok(self):
        p = self.run_cli("lint", "--policy", self.policy)
        self.assertEqual(p.returncode, 0, p.stderr)
        out = p.stdout.decode()
        m = re.match(r"^ok: (\d+) allow entr(?:y|ies), (\d+) deny entr(?:y|ies), digest ([0-9a-f]{64})\n$", out)
        self.assertTrue(m, out)
        self.assertEqual(int(m.group(1)), len(POLICY["egressAllowlist"]))
        self.assertEqual(int(m.group(2)), len(POLICY["egressDenylist"]))
        # The digest follows the content.
        other = self.write("other.json", json.dumps({"egressAllowlist": ["x.example.com"]}))
        p2 = self.run_cli("lint", "--policy", other)
        self.assertEqual(p2.returncode, 0)
        self.assertNotEqual(p2.stdout.split()[-1], p.stdout.split()[-1])

    def test_lint_empty_allowlist_is_valid(self):
        path = self.write("empty.json", json.dumps({"egressAllowlist": []}))
        p = self.run_cli("lint", "--policy", path)
        self.assertEqual(p.returncode, 0, p.stderr)
        self.assertTrue(p.stdout.startswith(b"ok: 0 allow entries, 0 deny entries"), p.stdout)
        d = self.one(self.run_cli("check", "--policy", path, "api.example.com", "443"), 1)
        self.assertEqual(d["verdict"], "deny")


class TestCheck(CliBase):
    def test_allow_hosts_file(self):
        d = self.one(self.check("api.example.com", "443"), 0)
        self.assertEqual(d["verdict"], "allow")
        self.assertEqual(d["outcome"], "allowed")
        self.assertIsNone(d["reason"])
        self.assertEqual(d["port"], 443)
        self.assertEqual(d["host"], "api.example.com")
        self.assertIsNotNone(d["matchedRule"])
        self.assertIn("93.184.216.34", json.dumps(d["addresses"]))

    def test_allow_ip_literal_cidr(self):
        d = self.one(self.check("203.0.113.7", "443"), 0)
        self.assertEqual(d["verdict"], "allow")
        d = self.one(self.check("203.0.113.7", "80"), 1)
        self.assertEqual(d["verdict"], "deny")

    def test_denials(self):
        cases = [
            ("nothere.example.org", "443", "not_in_allowlist"),
            ("api.example.com", "80", "port_not_allowed"),
            ("bad.example.com", "443", "explicit_deny"),
            ("2130706433", "443", "invalid_host"),
            ("127.1", "443", "invalid_host"),
            ("user@api.example.com", "443", "invalid_host"),
            ("127.0.0.1", "443", None),
            ("169.254.169.254", "80", None),
            ("lo.test", "443", "resolved_address_forbidden"),
        ]
        for host, port, reason in cases:
            with self.subTest(host=host, port=port):
                d = self.one(self.check(host, port), 1)
                self.assertEqual(d["verdict"], "deny")
                self.assertEqual(d["outcome"], "denied")
                if reason:
                    self.assertEqual(d["reason"], reason)
                else:
                    self.assertIn(d["reason"], ("special_purpose_address", "not_in_allowlist"))

    def test_explicit_deny_names_rule(self):
        d = self.one(self.check("bad.example.com", "443"), 1)
        self.assertEqual(d["reason"], "explicit_deny")
        self.assertIn("bad.example.com", json.dumps(d["matchedRule"]))

    def test_dns_unavailable_exit_2(self):
        # Not in the hosts file -> DNS -> a closed port: fail closed.
        p = self.run_cli("check", "--policy", self.policy, "--dns-server", self.nodns,
                         "--timeout-ms", "300", "fail.test", "443")
        d = self.one(p, 2)
        self.assertEqual(d["verdict"], "deny")
        self.assertEqual(d["outcome"], "enforcement_unavailable")
        self.assertEqual(d["reason"], "dns_unavailable")

    def test_monitor_mode(self):
        p = self.check("nothere.example.org", "443", "--mode", "monitor")
        d = self.one(p, 0)
        self.assertEqual(d["verdict"], "allow")
        self.assertEqual(d["outcome"], "denied")
        self.assertEqual(d["reason"], "not_in_allowlist")
        d = self.one(self.check("api.example.com", "443", "--mode", "enforce"), 0)
        self.assertEqual(d["verdict"], "allow")

    def test_url_path_prefix(self):
        cases = [
            ("https://docs.example.com/v1", 0),
            ("https://docs.example.com/v1/", 0),
            ("https://docs.example.com/v1/pages/x?q=1", 0),
            ("https://docs.example.com/v2/x", 1),
            ("https://docs.example.com/v10", 1),
            ("https://docs.example.com/v1/../admin", 1),
            ("https://docs.example.com/", 1),
            ("http://docs.example.com/v1/x", 1),
            ("https://api.example.com/anything", 0),
            ("https://nothere.example.org/v1", 1),
            ("ftp://docs.example.com/v1", 1),
            ("not a url", 1),
            ("", 1),
        ]
        for url, code in cases:
            with self.subTest(url=url):
                p = self.run_cli("check", "--policy", self.policy, "--hosts", self.hosts,
                                 "--dns-server", self.nodns, "--timeout-ms", "500",
                                 "--url", url)
                d = self.one(p, code)
                self.assertEqual(d["verdict"], "allow" if code == 0 else "deny")

    def test_events_file_one_line_per_check(self):
        ev = os.path.join(self.tmp, "events-single.jsonl")
        for i in range(3):
            self.check("api.example.com" if i else "nothere.example.org", "443",
                       "--events", ev)
        with open(ev) as f:
            lines = f.read().splitlines()
        self.assertEqual(len(lines), 3)
        for line in lines:
            e = json.loads(line)
            self.assertEqual(e["specversion"], "1.0")
            self.assertEqual(e["type"], "io.portarium.egress.attempt")
            self.assertIn("data", e)
        self.assertEqual(json.loads(lines[0])["data"]["outcome"], "denied")
        self.assertEqual(json.loads(lines[1])["data"]["outcome"], "allowed")

    def test_events_stdout(self):
        p = self.check("api.example.com", "443", "--events", "-")
        self.assertEqual(p.returncode, 0, p.stderr)
        lines = p.stdout.decode().splitlines()
        self.assertEqual(len(lines), 2, lines)
        objs = [json.loads(x) for x in lines]
        events = [o for o in objs if o.get("type") == "io.portarium.egress.attempt"]
        decisions = [o for o in objs if "verdict" in o]
        self.assertEqual(len(events), 1)
        self.assertEqual(len(decisions), 1)
        self.assert_decision(decisions[0])

    def test_events_unwritable(self):
        p = self.check("api.example.com", "443", "--events",
                       os.path.join(self.tmp, "no", "such", "dir", "ev.jsonl"))
        self.assertEqual(p.returncode, 73, p.stderr)  # EX_CANTCREAT
        self.assertEqual(p.stdout, b"")

    def test_metrics(self):
        p = self.check("api.example.com", "443", "--metrics")
        self.assertEqual(p.returncode, 0)
        self.assertRegex(p.stderr.decode(), r"egress\w*")
        self.assertIn(b"# TYPE", p.stderr)

    def test_filter_and_pref64_accepted(self):
        p = self.check("api.example.com", "443", "--filter", "--pref64", "2001:db8:64::/96")
        self.one(p, 0)


class TestBatch(CliBase):
    def batch(self, text, *extra, timeout=TIMEOUT):
        if isinstance(text, str):
            text = text.encode("utf-8")
        return self.run_cli("check", "--policy", self.policy, "--hosts", self.hosts,
                            "--dns-server", self.nodns, "--timeout-ms", "500", "--batch",
                            *extra, stdin=text, timeout=timeout)

    def test_mixed_1000(self):
        lines, expect = [], []
        for i in range(1000):
            k = i % 10
            if k == 0:
                lines.append(json.dumps({"host": "api.example.com", "port": 443,
                                         "correlationId": "c-%d" % i}))
                expect.append(("allow", None, "api.example.com", 443))
            elif k == 1:
                h = "nothere%d.example.org" % i
                lines.append(json.dumps({"host": h, "port": 443}))
                expect.append(("deny", "not_in_allowlist", h, 443))
            elif k == 2:
                lines.append(json.dumps({"host": "bad host %d" % i, "port": 443}))
                expect.append(("deny", "invalid_host", None, 443))
            elif k == 3:
                lines.append("{not json %d" % i)
                expect.append(("deny", "invalid_host", None, None))
            elif k == 4:
                lines.append(json.dumps({"host": "api.example.com", "port": "443"}))
                expect.append(("deny", "invalid_port", None, None))
            elif k == 5:
                lines.append(json.dumps({"host": "api.example.com", "port": 70000}))
                expect.append(("deny", "invalid_port", None, 70000))
            elif k == 6:
                h = "203.0.113.%d" % (i % 256)
                lines.append(json.dumps({"host": h, "port": 443, "method": "GET"}))
                expect.append(("allow", None, h, 443))
            elif k == 7:
                lines.append(json.dumps({"host": "bad.example.com", "port": 443}))
                expect.append(("deny", "explicit_deny", "bad.example.com", 443))
            elif k == 8:
                lines.append('{"host": 2130706433, "port": 443}')
                expect.append(("deny", "invalid_host", None, 443))
            else:
                lines.append('{"host": "api.example.com", "port": 443.5}')
                expect.append(("deny", "invalid_port", None, None))
            if i % 97 == 0:
                lines.append("")      # skipped
            if i % 131 == 0:
                lines.append("   \t")  # skipped
        ev = os.path.join(self.tmp, "batch-events.jsonl")
        p = self.batch("\n".join(lines) + "\n", "--events", ev, timeout=120)
        self.assertEqual(p.returncode, 0, p.stderr[-2000:])
        got = self.decisions(p)
        self.assertEqual(len(got), len(expect))
        for i, (d, (verdict, reason, host, port)) in enumerate(zip(got, expect)):
            where = "entry %d: %r" % (i, d)
            self.assertEqual(d["verdict"], verdict, where)
            self.assertEqual(d["reason"], reason, where)
            if host is not None:
                self.assertEqual(d["host"], host, where)
            if port is not None:
                self.assertEqual(d["port"], port, where)
        # One event per check the library made: every line except bad JSON
        # and non-string hosts (which egressctl answers itself).
        with open(ev) as f:
            events = f.read().splitlines()
        lib_checks = sum(1 for i in range(1000) if i % 10 not in (3, 8))
        self.assertEqual(len(events), lib_checks)
        for e in events[:50]:
            self.assertEqual(json.loads(e)["type"], "io.portarium.egress.attempt")
        # Context reaches the event.
        first = json.loads(events[0])
        self.assertEqual(first["data"]["correlationId"], "c-0")

    def test_bad_lines(self):
        cases = [
            ('[1, 2]', "invalid_host"),
            ('"api.example.com"', "invalid_host"),
            ('42', "invalid_host"),
            ('null', "invalid_host"),
            ('{}', "invalid_host"),
            ('{"port": 443}', "invalid_host"),
            ('{"host": null, "port": 443}', "invalid_host"),
            ('{"host": true, "port": 443}', "invalid_host"),
            ('{"host": ["api.example.com"], "port": 443}', "invalid_host"),
            ('{"host": {"a": 1}, "port": 443}', "invalid_host"),
            ('{"host": "api.example.com"}', "invalid_port"),
            ('{"host": "api.example.com", "port": null}', "invalid_port"),
            ('{"host": "api.example.com", "port": true}', "invalid_port"),
            ('{"host": "api.example.com", "port": -1}', "invalid_port"),
            ('{"host": "api.example.com", "port": 0}', "invalid_port"),
            ('{"host": "api.example.com", "port": 65536}', "invalid_port"),
            ('{"host": "api.example.com", "port": 1e300}', "invalid_port"),
            ('{"host": "api.example.com", "port": -1e300}', "invalid_port"),
            ('{"host": "api.example.com", "port": 4294967739}', "invalid_port"),
            ('{"host": "api.example.com", "port": [443]}', "invalid_port"),
            ('{"host": "api.example.com", "port": 443} trailing', "invalid_host"),
            ('{"host": "api.example.com", "port": 443}{"host":"x"}', "invalid_host"),
            ('{"host": "evil.com", "host": "api.example.com", "port": 443}', "invalid_host"),
            ('{"host": "api.example.com", "port": 443, "port": 80}', "invalid_host"),
            ('{"host": "api.example.com", "port": 443, "url": "https://api.example.com/"}',
             "invalid_host"),
            ('{"url": 5}', "invalid_host"),
            ('{"host": "api.example.com", "port": 443, "method": 5}', "invalid_host"),
            ('{"host": "api.example.com", "port": 443, "runId": "a\\u0001b"}', "invalid_host"),
            ('{"host": "api.example.com", "port": 443, "runId": "' + "x" * 2000 + '"}',
             "invalid_host"),
            ('{"Host": "api.example.com", "port": 443}', "invalid_host"),
            ("[" * 5000 + "]" * 5000, "invalid_host"),
            ('{"host": "api.example.com\\u0000.evil.com", "port": 443}', "invalid_host"),
            ('{"host": "api.example.com\\u0000", "port": 443}', "invalid_host"),
            ('{"host": "\\u0000api.example.com", "port": 443}', "invalid_host"),
            ('{"host": "api.example.com\\n", "port": 443}', "invalid_host"),
            ('{"host": "api.example.com\\t", "port": 443}', "invalid_host"),
            ('{"host": "api.example.com\\u001f", "port": 443}', "invalid_host"),
            ('{"host": "api.example.com\\ud800", "port": 443}', "invalid_host"),
            ('{"host": "api.example.com/", "port": 443}', "invalid_host"),
            ('{"url": "https://api.example.com\\u0000.evil.com/"}', "invalid_host"),
            ('{"url": "https://evil.com\\u0000@api.example.com/"}', "invalid_host"),
        ]
        text = "\n".join(c[0] for c in cases) + "\n"
        p = self.batch(text)
        self.assertEqual(p.returncode, 0, p.stderr[-2000:])
        got = self.decisions(p)
        self.assertEqual(len(got), len(cases))
        for (line, reason), d in zip(cases, got):
            with self.subTest(line=line[:80]):
                self.assertEqual(d["verdict"], "deny", d)
                self.assertEqual(d["outcome"], "denied", d)
                self.assertEqual(d["reason"], reason, d)

    def test_escaped_backslash_u0000_is_not_nul(self):
        # "\\u0000" is a backslash and the text u0000: still invalid (a
        # backslash), and the output must show it, not a NUL.
        p = self.batch('{"host": "api.example.com\\\\u0000", "port": 443}\n')
        d = self.one(p, 0)
        self.assertEqual(d["reason"], "invalid_host")

    def test_nul_never_allows(self):
        # Whatever follows the NUL, the truncated name must never be allowed.
        hosts = ["api.example.com\\u0000", "api.example.com\\u0000x", "api.example.com\\U0000",
                 "203.0.113.7\\u0000", "a.svc.example.com\\u0000.evil"]
        text = "".join('{"host": "%s", "port": 443}\n' % h for h in hosts)
        got = self.decisions(self.batch(text))
        self.assertEqual(len(got), len(hosts))
        for h, d in zip(hosts, got):
            with self.subTest(h=h):
                self.assertEqual(d["verdict"], "deny")

    def test_invalid_utf8_and_raw_bytes(self):
        lines = [
            b'{"host": "api.example.com\xff", "port": 443}',
            b'{"host": "api.\xc3\x28example.com", "port": 443}',
            b'{"host": "api.example.com\xed\xa0\x80", "port": 443}',
            b'{"host": "api.example.com", "port": 443, "runId": "\xff"}',
            b'{"url": "https://api.example.com/\xff"}',
            b'{"host": "api.example.com\x00.evil", "port": 443}',
            b'\x00',
            b'\xff\xfe\xfd',
            b'{"host": "api.example.com\x01", "port": 443}',
        ]
        p = self.batch(b"\n".join(lines) + b"\n")
        self.assertEqual(p.returncode, 0, p.stderr)
        got = self.decisions(p)   # output is valid UTF-8 JSON
        self.assertEqual(len(got), len(lines))
        for line, d in zip(lines, got):
            with self.subTest(line=line):
                self.assertEqual(d["verdict"], "deny", d)

    def test_nul_and_utf8_hosts_named_for_what_they_are(self):
        # egressctl hands a NUL to the library as the text "\u0000" (a C
        # string cannot hold it); the message must name the NUL, not the
        # backslash of that text.  Invalid UTF-8 goes to the library as given.
        cases = [
            (b'{"host": "api.example.com\\u0000.evil", "port": 443}',
             'invalid host "api.example.com\\x00.evil": host contains a NUL byte'),
            (b'{"host": "\\u0000", "port": 443}', 'invalid host "\\x00": host contains a NUL byte'),
            (b'{"host": "api.example.com\xff", "port": 443}',
             'invalid host "api.example.com\\xff": host is not valid UTF-8'),
            (b'{"host": "api.\xc3\x28example.com", "port": 443}', "host is not valid UTF-8"),
            (b'{"host": "api.example.com\xed\xa0\x80", "port": 443}', "host is not valid UTF-8"),
            (b'{"host": "api.example.com\\u0001", "port": 443}', "host contains a control character"),
            # A raw 0xFF elsewhere on the line must not be read as a NUL...
            (b'{"host": "a\\u0000b", "port": 443, "note": "\xff"}',
             'invalid host "a\\x00b": host contains a NUL byte'),
            # ...nor a NUL elsewhere make a raw 0xFF one.
            (b'{"host": "api.example.com\xff", "port": 443, "note": "\\u0000"}',
             'invalid host "api.example.com\\xff": host is not valid UTF-8'),
            (b'{"host": "api.example.com\\\\", "port": 443}', "host contains a backslash"),
        ]
        ev = os.path.join(self.tmp, "nul-events.jsonl")
        if os.path.exists(ev):
            os.unlink(ev)
        p = self.batch(b"\n".join(c[0] for c in cases) + b"\n", "--events", ev)
        self.assertEqual(p.returncode, 0, p.stderr)
        got = self.decisions(p)
        self.assertEqual(len(got), len(cases))
        for (line, message), d in zip(cases, got):
            with self.subTest(line=line):
                self.assertEqual(d["reason"], "invalid_host", d)
                self.assertIn(message, d["message"])
                if b"\\\\" not in line:
                    self.assertNotIn("backslash", d["message"])
        with open(ev, "rb") as f:
            events = [json.loads(x) for x in f.read().decode("utf-8").splitlines()]
        self.assertEqual(len(events), len(cases))
        self.assertEqual(events[0]["data"]["destination"], "api.example.com\\u0000.evil:443")
        self.assertEqual(events[2]["data"]["destination"], "api.example.com\ufffd:443")
        # The command line: an argument cannot hold a NUL, but bytes can be
        # anything.
        d = self.one(self.check(b"api.example.com\xff".decode("utf-8", "surrogateescape"), "443"), 1)
        self.assertEqual(d["message"], 'invalid host "api.example.com\\xff": host is not valid UTF-8')
        p = self.run_cli("check", "--policy", self.policy, "--url",
                         b"https://api.example.com/\xff".decode("utf-8", "surrogateescape"))
        d = self.one(p, 1)
        self.assertEqual(d["message"], "invalid URL: URL is not valid UTF-8")

    def test_refused_lines_have_events(self):
        # Every line that names its destination is denied with an event,
        # whatever egressctl refused it for: one event per decision line.
        lines = [
            b'{"host": "api.example.com", "port": 443, "runId": 5, "correlationId": "c1"}',
            b'{"host": "api.example.com", "port": 443, "runId": true}',
            b'{"host": "api.example.com", "port": 443, "runId": ["r"]}',
            b'{"host": "api.example.com", "port": 443, "runId": {"a": 1}}',
            b'{"host": "api.example.com", "port": 443, "method": 5}',
            b'{"host": "api.example.com", "port": 443, "runId": "' + b"x" * 2000 + b'"}',
            b'{"host": "api.example.com", "port": 443, "runId": "a\\u0000b", "agentId": "a1"}',
            b'{"host": "api.example.com", "port": 443, "runId": "a\\u0001b"}',
            b'{"host": "api.example.com", "port": 443, "runId": "\xff"}',
            b'{"host": "api.example.com", "port": 443, "runId": "a", "runId": "b"}',
            b'{"host": "x.example.org", "port": "443", "workspaceId": 7}',
            b'{"host": "bad host", "port": 443, "machineId": false}',
            b'{"url": "https://docs.example.com/v1/a", "agentId": 1}',
            b'{"url": "https://api.example.com/\\u0000"}',
            b'{"url": "https://api.example.com/\xff"}',
        ]
        dests = ["api.example.com:443"] * 10 + ["x.example.org:-1", "bad host:443",
                                                "https://docs.example.com/v1/a",
                                                "https://api.example.com/\\u0000",
                                                "https://api.example.com/\ufffd"]
        why = ['"runId" is not a string'] * 4 + ['"method" is not a string',
               '"runId" is refused', '"runId" holds a NUL byte', '"runId" is refused',
               '"runId" is not valid UTF-8', 'duplicate key "runId"', '"workspaceId" is not a string',
               '"machineId" is not a string', '"agentId" is not a string', '"url" holds a NUL byte',
               '"url" is not valid UTF-8']
        for mode in ("enforce", "monitor"):
            with self.subTest(mode=mode):
                ev = os.path.join(self.tmp, "refused-%s.jsonl" % mode)
                p = self.batch(b"\n".join(lines) + b"\n", "--events", ev, "--mode", mode)
                self.assertEqual(p.returncode, 0, p.stderr)
                got = self.decisions(p)
                with open(ev, "rb") as f:
                    events = [json.loads(x) for x in f.read().decode("utf-8").splitlines()]
                self.assertEqual(len(got), len(lines))
                self.assertEqual(len(events), len(lines))
                for i, (d, e) in enumerate(zip(got, events)):
                    where = "line %d: %r %r" % (i + 1, d, e["data"])
                    self.assertEqual(d["verdict"], "deny", where)
                    self.assertEqual(d["reason"], "invalid_host", where)
                    self.assertIn("line %d: %s" % (i + 1, why[i]), d["message"], where)
                    self.assertEqual(e["type"], "io.portarium.egress.attempt")
                    self.assertEqual(e["data"]["outcome"], "denied", where)
                    self.assertEqual(e["data"]["denyReason"], "invalid_host", where)
                    self.assertEqual(e["data"]["enforcementMode"], mode, where)
                    self.assertTrue(e["data"]["wouldDeny"], where)
                    self.assertEqual(e["data"]["destination"], dests[i], where)
                    self.assertEqual(e["subject"], dests[i], where)
                    self.assertEqual(len(e["data"]["policyDigest"]), 64, where)
                # The usable context rides along; the bad field is null.
                self.assertEqual(events[0]["data"]["correlationId"], "c1")
                self.assertIsNone(events[0]["data"]["runId"])
                self.assertEqual(events[6]["data"]["agentId"], "a1")
                self.assertEqual(events[12]["data"]["url"], "https://docs.example.com/v1/a")
                # A port that was not a number shows as given (null), as
                # for lines the library decides.
                self.assertIsNone(got[10]["port"])
        # With --events -, each event still comes right before its decision.
        p = self.batch(b"\n".join(lines[:3]) + b"\ngarbage\n", "--events", "-")
        kinds = ["event" if "specversion" in json.loads(x) else "decision"
                 for x in p.stdout.decode().splitlines()]
        self.assertEqual(kinds, ["event", "decision"] * 3 + ["decision"])

    def test_long_lines(self):
        big = "a" * (1 << 20)
        lines = [
            json.dumps({"host": big, "port": 443}),
            json.dumps({"host": "api.example.com", "port": 443, "correlationId": big}),
            json.dumps({"host": ("a" * 63 + ".") * 3 + "api.example.com", "port": 443}),
            json.dumps({"host": "api.example.com", "port": 443}),
        ]
        got = self.decisions(self.batch("\n".join(lines) + "\n"))
        self.assertEqual([d["verdict"] for d in got], ["deny", "deny", "deny", "allow"])
        self.assertEqual(got[0]["reason"], "invalid_host")

    def test_url_lines_and_context(self):
        lines = [
            {"url": "https://docs.example.com/v1/a", "method": "GET", "workspaceId": "w",
             "agentId": "a", "machineId": "m", "runId": "r", "correlationId": "c"},
            {"url": "https://docs.example.com/v2/a"},
            {"host": "a.svc.example.com", "port": 8443, "method": None},
            {"host": "a.svc.example.com", "port": 443},
        ]
        got = self.decisions(self.batch("\n".join(json.dumps(x) for x in lines) + "\n"))
        self.assertEqual([d["verdict"] for d in got], ["allow", "deny", "allow", "deny"])

    def test_crlf_and_no_final_newline(self):
        text = '{"host":"api.example.com","port":443}\r\n\r\n{"host":"x.example.org","port":443}'
        got = self.decisions(self.batch(text))
        self.assertEqual([d["verdict"] for d in got], ["allow", "deny"])

    def test_empty_input(self):
        p = self.batch("")
        self.assertEqual(p.returncode, 0)
        self.assertEqual(p.stdout, b"")
        p = self.batch("\n\n  \n")
        self.assertEqual(p.returncode, 0)
        self.assertEqual(p.stdout, b"")

    def test_monitor_batch(self):
        lines = [{"host": "nothere.example.org", "port": 443}, {"host": "api.example.com", "port": 443}]
        got = self.decisions(self.batch("\n".join(json.dumps(x) for x in lines) + "\n",
                                        "--mode", "monitor"))
        self.assertEqual([d["verdict"] for d in got], ["allow", "allow"])
        self.assertEqual([d["outcome"] for d in got], ["denied", "allowed"])

    def test_batch_events_stdout_interleave(self):
        lines = [{"host": "api.example.com", "port": 443}, {"host": "x.example.org", "port": 443},
                 "garbage"]
        text = "\n".join(x if isinstance(x, str) else json.dumps(x) for x in lines) + "\n"
        p = self.batch(text, "--events", "-")
        self.assertEqual(p.returncode, 0)
        objs = [json.loads(x) for x in p.stdout.decode().splitlines()]
        kinds = ["event" if "specversion" in o else "decision" for o in objs]
        self.assertEqual(kinds, ["event", "decision", "event", "decision", "decision"])

    def test_batch_policy_errors(self):
        bad = self.write("bad-batch.json", json.dumps({"egressAllowlist": ["a..b"]}))
        p = self.run_cli("check", "--policy", bad, "--batch", stdin="{}\n")
        self.assertEqual(p.returncode, EX_DATAERR)
        self.assertEqual(p.stdout, b"")

    def test_100k_lines(self):
        parts = []
        for i in range(100000):
            if i % 3 == 0:
                parts.append('{"host":"n%d.example.org","port":443}' % i)
            elif i % 3 == 1:
                parts.append('{"host":"203.0.113.%d","port":443}' % (i % 256))
            else:
                parts.append('{"host":"api.example.com","port":%d}' % (i % 70000))
        p = self.batch("\n".join(parts) + "\n", "--metrics", timeout=170)
        self.assertEqual(p.returncode, 0, p.stderr[-2000:])
        out = p.stdout.decode().splitlines()
        self.assertEqual(len(out), 100000)
        # Spot-check order.
        for i in (0, 1, 2, 4999, 99999):
            d = json.loads(out[i])
            self.assert_decision(d)
            if i % 3 == 0:
                self.assertEqual(d["host"], "n%d.example.org" % i)
            elif i % 3 == 1:
                self.assertEqual(d["host"], "203.0.113.%d" % (i % 256))
            else:
                self.assertEqual(d["port"], i % 70000)


class TestDns(CliBase):
    """Checks through the loopback responder (meson target egress-test-dns)."""

    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        path = responder_path()
        if path is None:
            raise unittest.SkipTest(
                "DNS responder egress-test-dns not found (set EGRESS_TEST_DNS or "
                "EGRESS_TEST_BUILDDIR): DNS tests skipped")
        zone = cls.write("zone", ZONE)
        cls.proc = subprocess.Popen([path, "--zone", zone, "--stdin-lifeline"],
                                    stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                    stderr=subprocess.PIPE)
        # Bounded wait for the "PORT <n>" line, like every other call here.
        ready, _, _ = select.select([cls.proc.stdout], [], [], 30)
        line = cls.proc.stdout.readline().decode() if ready else ""
        m = re.match(r"^PORT (\d+)$", line.strip())
        if not m:
            cls.proc.kill()
            cls.proc.wait(timeout=10)
            raise RuntimeError("responder did not start: %r" % line)
        cls.server = "127.0.0.1:%s" % m.group(1)

    @classmethod
    def tearDownClass(cls):
        proc = getattr(cls, "proc", None)
        if proc is not None:
            proc.terminate()
            try:
                proc.communicate(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.communicate(timeout=10)
        super().tearDownClass()

    def dns(self, host, port="443", *extra):
        return self.run_cli("check", "--policy", self.policy, "--dns-server", self.server,
                            "--timeout-ms", "300", *extra, host, port)

    def test_public_allowed(self):
        d = self.one(self.dns("pub.test"), 0)
        self.assertEqual(d["verdict"], "allow")
        self.assertIn("93.184.216.34", json.dumps(d["addresses"]))
        d = self.one(self.dns("PUB.test.", "8080"), 0)
        self.assertEqual(d["host"], "pub.test")

    def test_forbidden_addresses(self):
        for host, addr in (("lo.test", "127.0.0.1"), ("meta.test", "169.254.169.254"),
                           ("priv.test", "10.0.0.5"), ("v6lo.test", "::1"),
                           ("mix.test", "10.0.0.5")):
            with self.subTest(host=host):
                d = self.one(self.dns(host), 1)
                self.assertEqual(d["verdict"], "deny")
                self.assertEqual(d["reason"], "resolved_address_forbidden")
                self.assertIn(addr, json.dumps(d["addresses"]) + d["message"])

    def test_filter_mixed(self):
        d = self.one(self.dns("mixed-ok.test", "443", "--filter"), 0)
        self.assertEqual(d["verdict"], "allow")
        d = self.one(self.dns("mixed-ok.test"), 1)
        self.assertEqual(d["reason"], "resolved_address_forbidden")

    def test_nxdomain(self):
        d = self.one(self.dns("nx.test"), 1)
        self.assertEqual(d["reason"], "no_such_host")
        self.assertEqual(d["outcome"], "denied")

    def test_servfail_and_drop(self):
        for host in ("fail.test", "drop.test"):
            with self.subTest(host=host):
                d = self.one(self.dns(host), 2)
                self.assertEqual(d["verdict"], "deny")
                self.assertEqual(d["outcome"], "enforcement_unavailable")
                self.assertEqual(d["reason"], "dns_unavailable")

    def test_not_in_policy_never_resolved(self):
        d = self.one(self.dns("unlisted.test"), 1)
        self.assertEqual(d["reason"], "not_in_allowlist")

    def test_monitor_dns_unavailable(self):
        p = self.dns("fail.test", "443", "--mode", "monitor")
        d = self.one(p, p.returncode)
        self.assertEqual(d["outcome"], "enforcement_unavailable")
        self.assertIn(p.returncode, (0, 2))
        self.assertEqual(p.returncode, 0 if d["verdict"] == "allow" else 2)

    def test_batch_dns(self):
        hosts = ["pub.test", "lo.test", "nx.test", "fail.test", "pub.test"]
        text = "".join(json.dumps({"host": h, "port": 443}) + "\n" for h in hosts)
        p = self.run_cli("check", "--policy", self.policy, "--dns-server", self.server,
                         "--timeout-ms", "300", "--batch", stdin=text)
        self.assertEqual(p.returncode, 0)
        got = self.decisions(p)
        self.assertEqual([d["reason"] for d in got],
                         [None, "resolved_address_forbidden", "no_such_host",
                          "dns_unavailable", None])


if __name__ == "__main__":
    # unittest prints its own summary ("Ran N tests ..." then "OK" or
    # "FAILED (...)") as the last lines; the exit status follows it.
    prog = unittest.main(exit=False, verbosity=2)
    sys.exit(0 if prog.result.wasSuccessful() else 1)
