#!/usr/bin/env python3
"""egressctl render and lint warnings from the command line (issue 7).

Environment (set by tests/meson.build):
  EGRESSCTL           path of the egressctl binary (required)
  EGRESS_TEST_SRCDIR  the source tests/ directory

The manifests committed under examples/kubernetes/ must be exactly what
`egressctl render` prints for the example policy today.
"""

import json
import os
import subprocess
import sys
import tempfile
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


if __name__ == "__main__":
    if not EGRESSCTL or not os.access(EGRESSCTL, os.X_OK):
        print("EGRESSCTL is not set to an executable", file=sys.stderr)
        sys.exit(1)
    prog = unittest.main(exit=False, verbosity=2)
    sys.exit(0 if prog.result.wasSuccessful() else 1)
