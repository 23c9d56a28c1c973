#!/usr/bin/env python3
"""The curl-pinned example's test: a loopback HTTP server, a hosts file that
maps pinned.example.test to 127.0.0.1, and policies with and without the
CIDR rule that opens 127.0.0.1.  The server records every request, so a
denied fetch is shown to have sent nothing.

    curl_pinned_test.py --curl-pinned PATH [--workdir DIR]
"""

import argparse
import http.server
import json
import os
import subprocess
import sys
import tempfile
import threading
import unittest

ARGS = None


class Handler(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        self.server.seen.append((self.path, self.headers.get("Host")))
        if self.path == "/ok":
            body = b"ok\n"
            self.send_response(200)
        elif self.path == "/redirect":
            body = b""
            self.send_response(302)
            self.send_header("Location", "http://127.0.0.1:%d/followed" % self.server.port)
        else:
            body = b"not found\n"
            self.send_response(404)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


class TestCurlPinned(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        cls.server.seen = []
        cls.port = cls.server.port = cls.server.server_address[1]
        cls.thread = threading.Thread(target=cls.server.serve_forever, daemon=True)
        cls.thread.start()
        cls.dir = tempfile.mkdtemp(prefix="curl-pinned-", dir=ARGS.workdir)
        cls.hosts = cls.write("hosts", "127.0.0.1 pinned.example.test\n"
                                       "127.0.0.1 other.example.test\n")
        cls.pinned = cls.write("pinned.json", json.dumps({"egressAllowlist": [
            "127.0.0.1/32:%d" % cls.port, "pinned.example.test:%d" % cls.port]}))
        cls.name_only = cls.write("name-only.json", json.dumps({"egressAllowlist": [
            "pinned.example.test:%d" % cls.port]}))

    @classmethod
    def tearDownClass(cls):
        cls.server.shutdown()
        cls.server.server_close()

    @classmethod
    def write(cls, name, text):
        path = os.path.join(cls.dir, name)
        with open(path, "w", encoding="utf-8") as f:
            f.write(text)
        return path

    def setUp(self):
        self.server.seen.clear()

    def run_pinned(self, policy, url, env=None, *extra):
        e = dict(os.environ)
        e.update(env or {})
        return subprocess.run([ARGS.curl_pinned, "--policy", policy, "--hosts", self.hosts,
                               *extra, url],
                              capture_output=True, text=True, timeout=30, env=e)

    def url(self, path, host="pinned.example.test"):
        return "http://%s:%d%s" % (host, self.port, path)

    def test_fetch_pinned(self):
        p = self.run_pinned(self.pinned, self.url("/ok"))
        self.assertEqual(p.returncode, 0, p.stderr)
        self.assertIn("allow %s -> 127.0.0.1\n" % self.url("/ok"), p.stdout)
        self.assertIn("status 200 bytes 3\n", p.stdout)
        self.assertEqual(self.server.seen, [("/ok", "pinned.example.test:%d" % self.port)])

    def test_denied_without_cidr_sends_nothing(self):
        p = self.run_pinned(self.name_only, self.url("/ok"))
        self.assertEqual(p.returncode, 1, p.stdout + p.stderr)
        self.assertIn("deny resolved_address_forbidden", p.stdout)
        self.assertNotIn("status", p.stdout)
        self.assertEqual(self.server.seen, [])

    def test_denied_names(self):
        for url, reason in ((self.url("/ok", "other.example.test"), "not_in_allowlist"),
                            ("http://pinned.example.test:%d@127.0.0.1:%d/ok"
                             % (self.port, self.port), "invalid_host"),
                            ("ftp://pinned.example.test:%d/ok" % self.port, "invalid_host"),
                            (self.url("/ok", "0x7f.1"), "invalid_host"),
                            ("http://pinned.example.test:%d/ok" % (self.port + 1 if self.port
                                                                    < 65535 else 1),
                             "port_not_allowed")):
            with self.subTest(url=url):
                p = self.run_pinned(self.pinned, url)
                self.assertEqual(p.returncode, 1, p.stdout + p.stderr)
                self.assertIn("deny %s" % reason, p.stdout)
        self.assertEqual(self.server.seen, [])

    def test_literal(self):
        p = self.run_pinned(self.pinned, self.url("/ok", "127.0.0.1"))
        self.assertEqual(p.returncode, 0, p.stderr)
        self.assertIn("status 200", p.stdout)
        p = self.run_pinned(self.name_only, self.url("/ok", "127.0.0.1"))
        self.assertEqual(p.returncode, 1)
        self.assertIn("deny special_purpose_address", p.stdout)
        self.assertEqual(len(self.server.seen), 1)

    def test_redirect_not_followed(self):
        p = self.run_pinned(self.pinned, self.url("/redirect"))
        self.assertEqual(p.returncode, 0, p.stderr)
        self.assertIn("status 302", p.stdout)
        self.assertIn("redirect http://127.0.0.1:%d/followed not followed" % self.port, p.stdout)
        self.assertEqual([s[0] for s in self.server.seen], ["/redirect"])

    def test_environment_proxy_ignored(self):
        # Through a proxy the connection would go to the proxy, not to the
        # vetted address: the example turns proxies off.
        env = {"http_proxy": "http://127.0.0.1:1", "HTTPS_PROXY": "http://127.0.0.1:1",
               "ALL_PROXY": "http://127.0.0.1:1"}
        p = self.run_pinned(self.pinned, self.url("/ok"), env)
        self.assertEqual(p.returncode, 0, p.stderr)
        self.assertEqual(len(self.server.seen), 1)

    def test_usage_and_policy_errors(self):
        p = subprocess.run([ARGS.curl_pinned, self.url("/ok")], capture_output=True,
                           timeout=30)
        self.assertEqual(p.returncode, 64)
        bad = self.write("bad.json", json.dumps({"egressAllowlist": ["https://u@x.test"]}))
        p = self.run_pinned(bad, self.url("/ok"))
        self.assertEqual(p.returncode, 65)
        self.assertIn("egressAllowlist[0]", p.stderr)
        p = self.run_pinned(os.path.join(self.dir, "missing.json"), self.url("/ok"))
        self.assertEqual(p.returncode, 66)
        self.assertEqual(self.server.seen, [])


def main():
    global ARGS
    ap = argparse.ArgumentParser()
    ap.add_argument("--curl-pinned", required=True)
    ap.add_argument("--workdir", default=None)
    ARGS, rest = ap.parse_known_args()
    unittest.main(argv=[sys.argv[0]] + rest, verbosity=2)


if __name__ == "__main__":
    main()
