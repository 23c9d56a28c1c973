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


DEFAULT_DENY = {
    "apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
    "metadata": {"name": "default-deny-egress", "namespace": "portarium",
                 "labels": {"app.kubernetes.io/managed-by": "egressctl",
                            "portarium.io/egress-layer": "default-deny"}},
    "spec": {"podSelector": {}, "policyTypes": ["Egress"], "egress": []},
}

# Plain scalars a YAML 1.1 or 1.2 reader resolves to something other than a
# string (booleans, null, numbers in any base, floats, sexagesimal, dates,
# merge/value keys), or that start with an indicator character.
_NOT_A_STRING = re.compile(
    r"""^(?:y|Y|yes|Yes|YES|n|N|no|No|NO|true|True|TRUE|false|False|FALSE|on|On|ON|off|Off|OFF
        |~|null|Null|NULL|<<|=
        |[-+]?(?:0|[1-9][0-9_]*|0[0-7_]+|0o[0-7]+|0x[0-9a-fA-F_]+|0b[01_]+)
        |[-+]?(?:[0-9][0-9_]*)?\.?[0-9_]*(?:[eE][-+]?[0-9]+)?
        |[-+]?\.(?:inf|Inf|INF)|\.(?:nan|NaN|NAN)
        |[-+]?[0-9][0-9_]*(?::[0-5]?[0-9])+(?:\.[0-9_]*)?
        |[0-9]{4}-[0-9]{1,2}-[0-9]{1,2}.*)$""", re.X)
_INDICATORS = set("-?:,[]{}#&*!|>'\"%@`")


def _scalar(text):
    """One scalar of the subset: double-quoted (JSON escapes plus \\xNN),
    a decimal integer, or a plain string nothing could read otherwise."""
    if text.startswith('"'):
        if len(text) < 2 or not text.endswith('"'):
            raise ValueError("unterminated string: %r" % text)
        body = text[1:-1]
        out, i = [], 0
        while i < len(body):
            ch = body[i]
            if ch == '"':
                raise ValueError("bare quote in %r" % text)
            if ch != "\\":
                out.append(ch)
                i += 1
                continue
            e = body[i + 1:i + 2]
            simple = {'"': '"', "\\": "\\", "n": "\n", "t": "\t", "r": "\r", "/": "/", "b": "\b", "f": "\f"}
            if e in simple:
                out.append(simple[e])
                i += 2
            elif e in ("x", "u"):
                n = 2 if e == "x" else 4
                out.append(chr(int(body[i + 2:i + 2 + n], 16)))
                i += 2 + n
            else:
                raise ValueError("bad escape in %r" % text)
        return "".join(out)
    if re.fullmatch(r"-?(?:0|[1-9][0-9]*)", text):
        return int(text)
    if text == "{}":
        return {}
    if text == "[]":
        return []
    if text in ("true", "false"):
        return text == "true"
    if (not text or text[0] in _INDICATORS or text != text.strip() or "#" in text or ": " in text
            or text.endswith(":") or _NOT_A_STRING.match(text)):
        raise ValueError("plain scalar %r is not plainly a string" % text)
    return text


def read_yaml(text):
    """A strict reader of the YAML subset egressctl writes: block mappings
    and sequences indented by spaces, "- " items (a mapping may start on the
    dash line), scalars as _scalar takes them, "{}" and "[]".  Anything else
    (tabs, comments, flow collections with content, anchors, tags, single
    quotes, duplicate keys) raises ValueError."""
    lines = []
    for raw in text.split("\n"):
        if raw == "":
            continue
        if "\t" in raw[:len(raw) - len(raw.lstrip())] or raw != raw.rstrip(" "):
            raise ValueError("tab indentation or trailing space: %r" % raw)
        lines.append((len(raw) - len(raw.lstrip(" ")), raw.lstrip(" ")))
    if not text.endswith("\n"):
        raise ValueError("no final newline")
    pos = 0

    def key_value(body):
        if body.startswith('"'):
            end = 1
            while end < len(body) and body[end] != '"':
                end += 2 if body[end] == "\\" else 1
            key, rest = _scalar(body[:end + 1]), body[end + 1:]
        else:
            cut = body.find(":")
            if cut < 0:
                raise ValueError("not a mapping entry: %r" % body)
            key, rest = _scalar(body[:cut]), body[cut:]
        if not isinstance(key, str) or not rest.startswith(":"):
            raise ValueError("bad key in %r" % body)
        rest = rest[1:]
        if rest and not rest.startswith(" "):
            raise ValueError("no space after ':' in %r" % body)
        return key, rest[1:] if rest else None

    def block(indent):
        nonlocal pos
        if pos >= len(lines) or lines[pos][0] != indent:
            raise ValueError("expected a block at indent %d" % indent)
        if lines[pos][1].startswith("-"):
            return seq(indent)
        return mapping(indent, None)

    def mapping(indent, first):
        nonlocal pos
        out = {}
        entry = first
        while True:
            if entry is None:
                if pos >= len(lines) or lines[pos][0] != indent or lines[pos][1].startswith("- "):
                    break
                entry = lines[pos][1]
                pos += 1
            key, value = key_value(entry)
            entry = None
            if key in out:
                raise ValueError("duplicate key %r" % key)
            out[key] = _scalar(value) if value is not None else block_after(indent)
        return out

    def block_after(indent):
        if pos < len(lines) and lines[pos][0] > indent:
            return block(lines[pos][0])
        raise ValueError("missing value")

    def seq(indent):
        nonlocal pos
        out = []
        while pos < len(lines) and lines[pos][0] == indent and lines[pos][1].startswith("-"):
            body = lines[pos][1]
            pos += 1
            if body == "-":
                out.append(block_after(indent))
            elif not body.startswith("- "):
                raise ValueError("bad item %r" % body)
            elif body[2:].startswith('"') and body.endswith('"') or ":" not in body[2:] or \
                    body[2:] in ("{}", "[]"):
                out.append(_scalar(body[2:]))
            else:
                out.append(mapping(indent + 2, body[2:]))
        return out

    doc = block(0)
    if pos != len(lines):
        raise ValueError("unexpected line %r" % (lines[pos][1],))
    return doc


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
                self.assertEqual(kinds, ["NetworkPolicy", want, "NetworkPolicy"])
                for item in doc["items"][:2]:
                    sel = item["spec"].get("podSelector") or item["spec"].get("endpointSelector")
                    self.assertEqual(sel["matchLabels"], {"portarium.io/component": comp})
                self.assertEqual(doc["items"][2], DEFAULT_DENY)
                # The YAML rendering: committed too, and the same document.
                y = run(*args, "--output", "yaml")
                self.assertEqual(y.returncode, 0, y.stderr)
                golden = os.path.join(MANIFESTS, f"{fmt}-{comp}.yaml")
                if os.environ.get("EGRESS_UPDATE_GOLDEN") == "1":
                    with open(golden, "wb") as f:
                        f.write(y.stdout)
                with open(golden, "rb") as f:
                    self.assertEqual(y.stdout, f.read(),
                                     f"examples/kubernetes/{fmt}-{comp}.yaml is stale: regenerate it")
                self.assertEqual(read_yaml(y.stdout.decode()), doc)

    def test_defaults_and_names(self):
        p = run("render", "--policy", EXAMPLE, "--format", "networkpolicy")
        self.assertEqual(p.returncode, 0, p.stderr)
        self.assertEqual(p.stderr, b"")
        doc = json.loads(p.stdout)
        names = [(i["metadata"]["name"], i["metadata"]["namespace"]) for i in doc["items"]]
        self.assertEqual(names, [("egress-execution-plane-baseline", "portarium"),
                                 ("egress-execution-plane", "portarium"),
                                 ("default-deny-egress", "portarium")])
        p = run("render", "--policy", EXAMPLE, "--format", "networkpolicy", "--namespace", "tenant-a",
                "--name", "crm-sync", "--component", "agent")
        self.assertEqual(p.returncode, 0, p.stderr)
        doc = json.loads(p.stdout)
        self.assertEqual([i["metadata"]["name"] for i in doc["items"]],
                         ["crm-sync-baseline", "crm-sync", "default-deny-egress"])
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
        self.assertIn('note: egressAllowlist[2] "*.files.crm.example.com": does not match "files.crm.example.com"', err)
        self.assertNotIn("8443", err)  # an explicit port is a choice
        self.assertIn("note: egressDenylist[0]", err)
        self.assertNotIn("warning", err)
        self.assertTrue(err.endswith(": 3 notes\n"), err)
        # The project's own example passes --strict: notes never fail it.
        p = run("lint", "--strict", "--policy", EXAMPLE)
        self.assertEqual(p.returncode, 0, p.stderr)
        self.assertRegex(p.stdout.decode(), r"^ok: 8 allow entries")
        slip = self.write("slip.json", {"egressAllowlist": ["*.x.example.com", "https://api.example.com:80"]})
        p = run("lint", "--strict", "--policy", slip)
        self.assertEqual(p.returncode, 65)
        self.assertEqual(p.stdout, b"")
        err = p.stderr.decode()
        self.assertIn('warning: egressAllowlist[1] "https://api.example.com:80": https on port 80, the http '
                      'port: scheme and port look swapped', err)
        self.assertTrue(err.endswith(": 1 warning, 1 note (--strict: failing)\n"), err)
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

    def test_lint_url_paths(self):
        # Valid entries that do not mean what they look like: the warning
        # says what the entry means and what was likely meant.
        pol = self.write("urls.json", {
            "egressAllowlist": ["http://10.0.0.0/8", "https://example.com/*", "https://example.org/",
                                "https://erp.example:8443/api", "http://[2001:db8::]/32"],
            "egressDenylist": ["http://192.168.0.0/16"]})
        p = run("lint", "--policy", pol)
        self.assertEqual(p.returncode, 0, p.stderr)
        err = p.stderr.decode().splitlines()
        want = [
            'warning: egressAllowlist[0] "http://10.0.0.0/8": means host 10.0.0.0, port 80, path "/8": '
            'a URL names one address; for the range write "10.0.0.0/8" (every port) or "10.0.0.0/8:80"',
            'warning: egressAllowlist[1] "https://example.com/*": the path "/*" is literal (\'*\' is no '
            'wildcard in a URL entry): this allows only paths beginning with it; a path prefix already '
            'covers every path under it, so "https://example.com/" was likely meant',
            'warning: egressAllowlist[4] "http://[2001:db8::]/32": means host [2001:db8::], port 80, path '
            '"/32": a URL names one address; for the range write "2001:db8::/32" (every port) or '
            '"[2001:db8::]/32:80"',
            'warning: egressDenylist[0] "http://192.168.0.0/16": means host 192.168.0.0 on every port, '
            'path "/16" (which a deny entry ignores): a URL names one address; for the range write '
            '"192.168.0.0/16"',
        ]
        self.assertEqual(err, [pol + ": " + w for w in want] + [pol + ": 4 warnings"])
        p = run("lint", "--strict", "--policy", pol)
        self.assertEqual(p.returncode, 65)

    def test_yaml_output(self):
        # Names and labels that YAML would read as something else unless
        # quoted: every one must come back as the same string.
        hostile = ["on", "yes", "No", "null", "~", "*", ":", "a: b", "#x", "x #y", " lead", "trail ",
                   "0755", "1e3", "0x1F", ".inf", "-1", "+1", "1_000", "2001-12-14", "12:30", "",
                   "- x", "[x]", "{y}", "&a", "*a", "!t", "|", ">", "'q'", '"d"', "%p", "@u", "`b",
                   "back\\slash", "new\nline", "tab\tx", "ctl\x01", "del\x7f", "c1\u0085",
                   "\u00e9t\u00e9", "y", "True", "OFF", "=", "<<", "?", ",", "k=v"]
        labels = {"k%d" % i: v for i, v in enumerate(hostile)}
        labels.update({v + "key" if v else "empty": "v" for v in hostile})
        base = self.write("hostile-baseline.json", {"services": [
            {"namespace": "on", "podLabels": labels, "ports": [443, 8080], "protocols": ["TCP", "UDP"]},
            {"namespace": "0755", "ports": [53]}]})
        pol = self.write("hostile.json", {"egressAllowlist": ["yes.example", "null.example:755",
                                                              "10.0.0.0/8:1-1024", "[2001:db8::]/32:443",
                                                              "*.on.example", "**.no.example", "*"],
                                          "egressDenylist": ["10.1.0.0/16", "y.on.example"]})
        for fmt in ("networkpolicy", "cilium"):
            for ns, name in (("yes", "on"), ("null", "1.5"), ("portarium", "0755")):
                with self.subTest(fmt=fmt, ns=ns, name=name):
                    args = ["render", "--policy", pol, "--format", fmt, "--namespace", ns, "--name", name,
                            "--baseline", base, "--skip-unrenderable"]
                    j = run(*args)
                    self.assertEqual(j.returncode, 0, j.stderr)
                    y = run(*args, "--output", "yaml")
                    self.assertEqual(y.returncode, 0, y.stderr)
                    doc = json.loads(j.stdout)
                    self.assertEqual(read_yaml(y.stdout.decode("utf-8")), doc)
                    self.assertEqual(doc["items"][-1], dict(DEFAULT_DENY, metadata=dict(
                        DEFAULT_DENY["metadata"], namespace=ns)))
        # The reader is strict: what it would misread, it refuses.
        for bad in ("a: on\n", "a: 0755\n", "a: *\n", "a: 1e3\n", "a: ~\n", "a:\n\t- b\n",
                    "a: 'x'\n", "a: [1]\n", "a: b # c\n", "a: b\n a: c\n", "a: \"x\n"):
            with self.subTest(bad=bad):
                with self.assertRaises(ValueError):
                    read_yaml(bad)
        p = run("render", "--policy", pol, "--format", "cilium", "--output", "xml")
        self.assertEqual(p.returncode, 64)
        self.assertIn(b"--output must be 'json' or 'yaml'", p.stderr)

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
        self.assertEqual(lines[-1], "%s: 54000 warnings, 18000 notes" % path)
        got = {}
        for line in lines[:-1]:
            m = re.match(r'^.*?: (warning|note): (egress\w+)\[(\d+)\] "[^"]*": (.*)$', line)
            self.assertIsNotNone(m, line)
            # Only a wildcard without its apex is a note here.
            self.assertEqual(m.group(1) == "note", int(m.group(3)) % 10 == 6, line)
            got.setdefault((m.group(2), int(m.group(3))), []).append(m.group(4))
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
