#!/usr/bin/env python3
"""egressctl render and lint warnings from the command line.

Environment (set by tests/meson.build):
  EGRESSCTL           path of the egressctl binary (required)
  EGRESS_TEST_SRCDIR  the source tests/ directory

The manifests committed under examples/kubernetes/ must be exactly what
`egressctl render` prints for the example policy today.
"""

import json
import os
import re
import subprocess
import sys
import tempfile
import time
import unittest

EGRESSCTL = os.environ.get("EGRESSCTL", "")
SRC = os.environ.get("EGRESS_TEST_SRCDIR", os.path.join(os.path.dirname(__file__), ".."))
ROOT = os.path.normpath(os.path.join(SRC, ".."))
EXAMPLE = os.path.join(ROOT, "examples", "policies", "demo-policy.json")
MANIFESTS = os.path.join(ROOT, "examples", "kubernetes")
TIMEOUT = 60


def run(*args):
    return subprocess.run([EGRESSCTL, *args], capture_output=True, timeout=TIMEOUT)


class RenderCli(unittest.TestCase):
    def setUp(self):
        self.tmp = tempfile.mkdtemp(prefix="egress-render-cli-")

    def write(self, name, doc):
        path = os.path.join(self.tmp, name)
        with open(path, "w") as f:
            json.dump(doc, f)
        return path

    def test_committed_manifests_are_current(self):
        for fmt in ("networkpolicy", "cilium"):
            for comp in ("execution-plane", "agent"):
                args = ["render", "--policy", EXAMPLE, "--format", fmt, "--component", comp]
                if fmt == "cilium":
                    args.append("--skip-unrenderable")
                p = run(*args)
                self.assertEqual(p.returncode, 0, p.stderr)
                with open(os.path.join(MANIFESTS, f"{fmt}-{comp}.json"), "rb") as f:
                    self.assertEqual(p.stdout, f.read(),
                                     f"examples/kubernetes/{fmt}-{comp}.json is stale: regenerate it")
                doc = json.loads(p.stdout)
                self.assertEqual((doc["apiVersion"], doc["kind"]), ("v1", "List"))
                kinds = [i["kind"] for i in doc["items"]]
                want = "CiliumNetworkPolicy" if fmt == "cilium" else "NetworkPolicy"
                self.assertEqual(kinds, ["NetworkPolicy", want])
                for item in doc["items"]:
                    sel = item["spec"].get("podSelector") or item["spec"].get("endpointSelector")
                    self.assertEqual(sel["matchLabels"], {"portarium.io/component": comp})

    def test_defaults_and_names(self):
        p = run("render", "--policy", EXAMPLE, "--format", "networkpolicy")
        self.assertEqual(p.returncode, 0, p.stderr)
        self.assertEqual(p.stderr, b"")
        doc = json.loads(p.stdout)
        names = [(i["metadata"]["name"], i["metadata"]["namespace"]) for i in doc["items"]]
        self.assertEqual(names, [("egress-execution-plane-baseline", "portarium"),
                                 ("egress-execution-plane", "portarium")])
        p = run("render", "--policy", EXAMPLE, "--format", "networkpolicy", "--namespace", "tenant-a",
                "--name", "crm-sync", "--component", "agent")
        self.assertEqual(p.returncode, 0, p.stderr)
        doc = json.loads(p.stdout)
        self.assertEqual([i["metadata"]["name"] for i in doc["items"]], ["crm-sync-baseline", "crm-sync"])
        self.assertTrue(all(i["metadata"]["namespace"] == "tenant-a" for i in doc["items"]))

    def test_unrenderable_fails_unless_skipped(self):
        p = run("render", "--policy", EXAMPLE, "--format", "cilium")
        self.assertEqual(p.returncode, 65)
        self.assertEqual(p.stdout, b"")
        self.assertIn(b"exports.files.crm.example.com", p.stderr)
        self.assertIn(b"--skip-unrenderable", p.stderr)
        regex = self.write("re.json", {"egressAllowlist": ["api.example.com", r"re:^api-[0-9]+\.example\.com$"]})
        p = run("render", "--policy", regex, "--format", "cilium")
        self.assertEqual(p.returncode, 65)
        self.assertIn(b"egressAllowlist[1]", p.stderr)
        self.assertIn(b"re:^api-", p.stderr)
        p = run("render", "--policy", regex, "--format", "cilium", "--skip-unrenderable")
        self.assertEqual(p.returncode, 0, p.stderr)
        self.assertIn(b"left out", p.stderr)
        self.assertNotIn(b"re:", p.stdout)
        self.assertIn(b"api.example.com", p.stdout)
        # NetworkPolicy renders names as ports only: nothing to skip.
        p = run("render", "--policy", regex, "--format", "networkpolicy")
        self.assertEqual(p.returncode, 0, p.stderr)
        self.assertEqual(p.stderr, b"")

    def test_usage_errors(self):
        cases = [
            ("render",),
            ("render", "--policy", EXAMPLE),
            ("render", "--policy", EXAMPLE, "--format", "yaml"),
            ("render", "--policy", EXAMPLE, "--format", "cilium", "--component", "control-plane"),
            ("render", "--policy", EXAMPLE, "--format", "cilium", "--namespace", "Bad_NS"),
            ("render", "--policy", EXAMPLE, "--format", "cilium", "--name", "a/b"),
            ("render", "--policy", EXAMPLE, "--format", "cilium", "extra"),
            ("render", "--policy", EXAMPLE, "--format", "cilium", "--format", "cilium"),
            ("render", "--policy", EXAMPLE, "--format", "cilium", "--bogus"),
        ]
        for args in cases:
            with self.subTest(args=args):
                p = run(*args)
                self.assertEqual(p.returncode, 64, p.stderr)
                self.assertEqual(p.stdout, b"")

    def test_bad_policy(self):
        bad = self.write("bad.json", {"egressAllowlist": ["10.0.0.1/8"]})
        p = run("render", "--policy", bad, "--format", "networkpolicy")
        self.assertEqual(p.returncode, 65)
        self.assertEqual(p.stdout, b"")
        p = run("render", "--policy", os.path.join(self.tmp, "missing.json"), "--format", "cilium")
        self.assertEqual(p.returncode, 66)

    def test_lint_warnings_and_strict(self):
        p = run("lint", "--policy", EXAMPLE)
        self.assertEqual(p.returncode, 0, p.stderr)
        self.assertRegex(p.stdout.decode(), r"^ok: 8 allow entries, 1 deny entry, digest [0-9a-f]{64}\n$")
        err = p.stderr.decode()
        self.assertIn('egressAllowlist[2] "*.files.crm.example.com": does not match "files.crm.example.com"', err)
        self.assertIn('egressAllowlist[3] "https://erp.acme.example:8443/api": port 8443 is not the https default', err)
        self.assertIn("egressDenylist[0]", err)
        self.assertIn("4 warnings", err)
        p = run("lint", "--policy", EXAMPLE, "--strict")
        self.assertEqual(p.returncode, 65)
        self.assertEqual(p.stdout, b"")
        clean = self.write("clean.json", {"egressAllowlist": ["api.example.com", "151.101.0.0/16:443"]})
        p = run("lint", "--policy", clean, "--strict")
        self.assertEqual(p.returncode, 0, p.stderr)
        self.assertEqual(p.stderr, b"")
        noisy = self.write("noisy.json", {"egressAllowlist": ["*", "api.example.com", "0.0.0.0/0"]})
        p = run("lint", "--policy", noisy)
        self.assertEqual(p.returncode, 0)
        err = p.stderr.decode()
        self.assertIn("matches every host name", err)
        self.assertIn('egressAllowlist[1] "api.example.com": shadowed by egressAllowlist[0]', err)
        self.assertIn("matches every IPv4 address", err)

    def test_lint_large_policy(self):
        # Lint compared every pair of entries: a minute at 100 000 entries,
        # far more at 198 000.  Indexed, it takes about a second (a few
        # under sanitizers); the timeout leaves room for a loaded machine
        # but not for quadratic time.  Each kind of finding here has a known
        # count and a known partner.
        na, allow = 180000, []
        for i in range(na):
            k = i % 10
            if k <= 5:
                allow.append("h%d.s%d.example.com" % (i, i % 97))
            elif k == 6:
                allow.append("*.w%d.example.net" % i)                    # apex missing
            elif k == 7:
                allow.append("11.%d.%d.0/24" % (i >> 8 & 255, i & 255))
            elif k == 8:
                allow.append("11.%d.%d.9" % ((i - 1) >> 8 & 255, (i - 1) & 255))  # inside i-1
            else:
                j = i - 9
                allow.append("https://h%d.s%d.example.com" % (j, j % 97))  # duplicate of j
        deny = ["h%d.s%d.example.com" % (10 * j + 1, (10 * j + 1) % 97) for j in range(na // 10)]
        path = self.write("large.json", {"egressAllowlist": allow, "egressDenylist": deny})
        p = subprocess.run([EGRESSCTL, "lint", "--policy", path], capture_output=True, timeout=40)
        self.assertEqual(p.returncode, 0, p.stderr[-2000:])
        self.assertIn(b"ok: 180000 allow entries, 18000 deny entries", p.stdout)
        lines = p.stderr.decode().splitlines()
        self.assertEqual(lines[-1], "%s: 72000 warnings" % path)
        got = {}
        for line in lines[:-1]:
            m = re.match(r'^.*?: warning: (egress\w+)\[(\d+)\] "[^"]*": (.*)$', line)
            self.assertIsNotNone(m, line)
            got.setdefault((m.group(1), int(m.group(2))), []).append(m.group(3))
        self.assertEqual(len(got), 72000)
        for (lst, i), whats in got.items():
            self.assertEqual(lst, "egressAllowlist")
            self.assertEqual(len(whats), 1, (i, whats))
            what, k = whats[0], i % 10
            if k == 6:
                self.assertTrue(what.startswith('does not match "w%d.example.net" itself' % i), what)
            elif k == 8:
                self.assertTrue(what.startswith("shadowed by egressAllowlist[%d] " % (i - 1)), what)
            elif k == 9:
                self.assertEqual(what, 'duplicate of egressAllowlist[%d] "%s"' % (i - 9, allow[i - 9]))
            else:
                self.assertEqual(k, 1)
                self.assertEqual(what, 'never allows anything: egressDenylist[%d] "%s" denies all of it'
                                 % (i // 10, deny[i // 10]))

    def test_lint_large_shapes(self):
        # Entries that share one name and differ in URL path or port are
        # told apart without comparing each with all the others (which took
        # seconds here, growing with the square).  Loading such a policy is
        # itself slow under sanitizers, so lint is timed against a check
        # that loads the same file, in the same run.
        n = 20000
        allow = ["https://api.example.com/v1/p%d" % i for i in range(n)] + ["https://api.example.com/v1"]
        allow += ["db.example.com:%d" % (1000 + i) for i in range(n)] + ["db.example.com:1000-65535"]
        path = self.write("shapes.json", {"egressAllowlist": allow})
        t0 = time.monotonic()
        p = subprocess.run([EGRESSCTL, "check", "--policy", path, "db.example.com", "1"],
                           capture_output=True, timeout=100)
        t1 = time.monotonic()
        self.assertEqual(p.returncode, 1, p.stderr[-2000:])
        p = subprocess.run([EGRESSCTL, "lint", "--policy", path], capture_output=True, timeout=100)
        t2 = time.monotonic()
        self.assertEqual(p.returncode, 0, p.stderr[-2000:])
        self.assertLess(t2 - t1, 3 * (t1 - t0) + 1.0,
                        "lint %.2f s, loading the policy %.2f s" % (t2 - t1, t1 - t0))
        lines = p.stderr.decode().splitlines()
        self.assertEqual(lines[-1], "%s: %d warnings" % (path, 2 * n))
        for i, line in enumerate(lines[:-1]):
            j = i if i < n else i + 1
            by = n if i < n else 2 * n + 1
            self.assertIn('egressAllowlist[%d] "%s": shadowed by egressAllowlist[%d] ' % (j, allow[j], by),
                          line)

    def test_lint_ipv6_port_lookalike(self):
        doc = self.write("v6.json", {"egressAllowlist": ["2001:db8::1:443", "[2001:db8::1]:443",
                                                         "2001:db8::2:443/128"]})
        p = run("lint", "--policy", doc)
        self.assertEqual(p.returncode, 0, p.stderr)
        err = p.stderr.decode()
        self.assertIn('egressAllowlist[0] "2001:db8::1:443": reads like an address and a port', err)
        self.assertIn('write "[2001:db8::1]:443" for port 443 of 2001:db8::1, or '
                      '"2001:db8::1:443/128" to keep this meaning', err)
        self.assertNotIn("egressAllowlist[1]", err)
        self.assertNotIn("egressAllowlist[2]", err)
        self.assertIn("1 warning\n", err)


class OperatorItems(unittest.TestCase):
    def setUp(self):
        self.tmp = tempfile.mkdtemp(prefix="egress-operator-")

    def write(self, name, doc):
        path = os.path.join(self.tmp, name)
        with open(path, "w") as f:
            f.write(doc if isinstance(doc, str) else json.dumps(doc))
        return path

    def test_lint_reports_every_invalid_entry_once(self):
        doc = {"egressAllowlist": ["ok.example.com", " lead.example.com", 7, "0177.0.0.1",
                                   "fine.example.org"],
               "egressDenylist": ["ftp://x.example.com", "bad.example.com"]}
        path = self.write("many.json", doc)
        p = run("lint", "--policy", path)
        self.assertEqual(p.returncode, 65, p.stderr)
        self.assertEqual(p.stdout, b"")
        lines = p.stderr.decode().splitlines()
        want = ['egressAllowlist[1] " lead.example.com"', "egressAllowlist[2]",
                'egressAllowlist[3] "0177.0.0.1"', 'egressDenylist[0] "ftp://x.example.com"']
        for w in want:
            hits = [ln for ln in lines if w in ln]
            self.assertEqual(len(hits), 1, (w, lines))
        # One line per entry plus the count; the file named once a line.
        self.assertEqual(len(lines), len(want) + 1, lines)
        self.assertIn("4 invalid entries", lines[-1])
        for ln in lines:
            self.assertEqual(ln.count(path), 1, ln)
        # check fails on the first, naming the file once.
        p = run("check", "--policy", path, "ok.example.com", "443")
        self.assertEqual(p.returncode, 65)
        self.assertEqual(p.stderr.decode().count(path), 1, p.stderr)

    def test_usage_error_is_one_line_and_a_pointer(self):
        for args in (("lint", "--bogus"), ("render", "--policy"), ("check",), ("nope",)):
            with self.subTest(args=args):
                p = run(*args)
                self.assertEqual(p.returncode, 64)
                lines = p.stderr.decode().splitlines()
                self.assertEqual(len(lines), 2, lines)
                self.assertIn("--help", lines[1])
                self.assertNotIn("check options", p.stderr.decode())
        # An option of another subcommand is unknown here.
        p = run("render", "--policy", EXAMPLE, "--format", "cilium", "--strict")
        self.assertEqual(p.returncode, 64)
        self.assertIn("--strict", p.stderr.decode())

    def test_baseline_from_file(self):
        base = {"services": [
            {"namespace": "secrets", "ports": [8201]},
            {"podLabels": {"app": "collector"}, "ports": [4317], "components": ["agent"]},
            {"namespace": "kube-system", "podLabels": {"k8s-app": "coredns"}, "ports": [53],
             "protocols": ["UDP"]}]}
        path = self.write("base.json", base)
        got = {}
        for comp in ("execution-plane", "agent"):
            p = run("render", "--policy", EXAMPLE, "--format", "networkpolicy",
                    "--component", comp, "--baseline", path)
            self.assertEqual(p.returncode, 0, p.stderr)
            items = json.loads(p.stdout)["items"]
            baseline = [i for i in items if i["metadata"]["name"].endswith("-baseline")]
            self.assertEqual(len(baseline), 1)
            got[comp] = baseline[0]["spec"]["egress"]
        ep = got["execution-plane"]
        self.assertEqual(len(ep), 2)
        self.assertEqual(ep[0]["to"], [{"namespaceSelector": {"matchLabels": {
            "kubernetes.io/metadata.name": "secrets"}}}])
        self.assertEqual(ep[0]["ports"], [{"protocol": "TCP", "port": 8201}])
        self.assertEqual(ep[1]["ports"], [{"protocol": "UDP", "port": 53}])
        self.assertEqual(len(got["agent"]), 3)
        self.assertEqual(got["agent"][1]["to"], [{"podSelector": {"matchLabels": {"app": "collector"}}}])
        # Nothing of the default platform is left.
        text = json.dumps(got)
        for old in ("vault", "temporal", "8200", "7233", "control-plane"):
            self.assertNotIn(old, text)

    def test_bad_baseline(self):
        bad = [
            "not json",
            {"services": [{"ports": [80]}]},
            {"services": [{"namespace": "Bad_NS", "ports": [80]}]},
            {"services": [{"namespace": "a", "ports": [0]}]},
            {"services": [{"namespace": "a", "ports": [80.5]}]},
            {"services": [{"namespace": "a", "ports": [80], "protocols": ["ICMP"]}]},
            {"services": [{"namespace": "a", "ports": [80], "components": ["web"]}]},
            {"services": [{"namespace": "a", "ports": [80], "extra": 1}]},
            {"services": [{"podLabels": {"a": 1}, "ports": [80]}]},
            {"service": []},
        ]
        for i, doc in enumerate(bad):
            with self.subTest(doc=doc):
                path = self.write("bad%d.json" % i, doc)
                p = run("render", "--policy", EXAMPLE, "--format", "networkpolicy",
                        "--baseline", path)
                self.assertEqual(p.returncode, 65, p.stderr)
                self.assertEqual(p.stdout, b"")
                self.assertIn(path, p.stderr.decode())
        p = run("render", "--policy", EXAMPLE, "--format", "networkpolicy",
                "--baseline", os.path.join(self.tmp, "missing.json"))
        self.assertEqual(p.returncode, 66)


if __name__ == "__main__":
    if not EGRESSCTL or not os.access(EGRESSCTL, os.X_OK):
        print("EGRESSCTL is not set to an executable", file=sys.stderr)
        sys.exit(1)
    prog = unittest.main(exit=False, verbosity=2)
    sys.exit(0 if prog.result.wasSuccessful() else 1)
