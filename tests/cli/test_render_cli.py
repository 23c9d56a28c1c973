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
    # YAML 1.2 5.1: only printable characters may appear raw (readers such
    # as kubectl's refuse the rest), whatever the quoting.
    bad = re.search("[^\x09\x0a\x0d\x20-\x7e\x85\xa0-\ud7ff\ue000-\ufffd\U00010000-\U0010ffff]", text)
    if bad:
        raise ValueError("a character YAML does not allow raw: U+%04X" % ord(bad.group()))
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
                   "\u00e9t\u00e9", "nc\ufffe", "nc\uffff", "bom\ufeff", "y", "True", "OFF", "=", "<<", "?", ",", "k=v"]
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


GATEWAY = os.path.join(ROOT, "examples", "gateway")
DNS_RULE = {"to": [{"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "kube-system"}},
                    "podSelector": {"matchLabels": {"k8s-app": "kube-dns"}}}],
            "ports": [{"protocol": "UDP", "port": 53}, {"protocol": "TCP", "port": 53}]}


class Gateway(unittest.TestCase):
    """render --format gateway: egressd and the NetworkPolicy fence of
    Pattern B (the agents reach the network only through the gateway)."""

    def setUp(self):
        self.tmp = tempfile.mkdtemp(prefix="egress-gateway-")

    def write(self, name, data):
        path = os.path.join(self.tmp, name)
        with open(path, "wb") as f:
            f.write(data if isinstance(data, bytes) else json.dumps(data).encode())
        return path

    def render(self, policy, *extra):
        p = run("render", "--policy", policy, "--format", "gateway", *extra)
        self.assertEqual(p.returncode, 0, p.stderr)
        return json.loads(p.stdout)

    def check_structure(self, doc, policy, ns="portarium", name="egress-gateway", agent="agent",
                        replicas=2, image=None):
        """Everything Pattern B rests on, for one rendering of @policy."""
        self.assertEqual((doc["apiVersion"], doc["kind"]), ("v1", "List"))
        items = doc["items"]
        self.assertEqual([(i["kind"], i["metadata"]["name"]) for i in items], [
            ("ConfigMap", name + "-policy"), ("Deployment", name), ("Service", name),
            ("NetworkPolicy", name + "-clients"), ("NetworkPolicy", name + "-ingress"),
            ("NetworkPolicy", name + "-egress"), ("NetworkPolicy", "default-deny-egress")])
        self.assertTrue(all(i["metadata"]["namespace"] == ns for i in items))
        cm, dep, svc, clients, ingress, egress, deny = items
        # The ConfigMap holds the file's bytes, exactly.
        with open(policy, "rb") as f:
            self.assertEqual(cm["data"], {"policy.json": f.read().decode("utf-8")})
        # The Deployment runs egressd on that file, hardened.
        gw = dep["spec"]["selector"]["matchLabels"]
        self.assertEqual(gw, {"portarium.io/component": "egress-gateway", "app.kubernetes.io/instance": name})
        tmpl = dep["spec"]["template"]
        self.assertEqual(tmpl["metadata"]["labels"], gw)
        self.assertEqual(dep["spec"]["replicas"], replicas)
        pod = tmpl["spec"]
        self.assertEqual(len(pod["containers"]), 1)
        ctr = pod["containers"][0]
        if image is not None:
            self.assertEqual(ctr["image"], image)
        self.assertRegex(ctr["image"], r"^[A-Za-z0-9][A-Za-z0-9._/:@-]*$")
        self.assertEqual(ctr["command"], ["egressd", "--listen", "0.0.0.0:3128", "--admin", "0.0.0.0:9090",
                                          "--policy", "/etc/egressd/policy.json"])
        self.assertEqual(ctr["ports"], [{"name": "proxy", "containerPort": 3128, "protocol": "TCP"},
                                        {"name": "admin", "containerPort": 9090, "protocol": "TCP"}])
        # Readiness follows egressd's drain; liveness only its loop.
        self.assertEqual(ctr["readinessProbe"]["httpGet"], {"path": "/readyz", "port": "admin"})
        self.assertEqual(ctr["livenessProbe"]["httpGet"], {"path": "/healthz", "port": "admin"})
        sc = ctr["securityContext"]
        self.assertEqual((sc["allowPrivilegeEscalation"], sc["readOnlyRootFilesystem"], sc["runAsNonRoot"]),
                         (False, True, True))
        self.assertEqual(sc["capabilities"], {"drop": ["ALL"]})
        self.assertTrue(pod["securityContext"]["runAsNonRoot"])
        self.assertGreater(pod["securityContext"]["runAsUser"], 0)
        self.assertEqual(set(ctr["resources"]), {"requests", "limits"})
        for part in ("requests", "limits"):
            self.assertEqual(set(ctr["resources"][part]), {"cpu", "memory"})
        mount, = ctr["volumeMounts"]
        vol, = pod["volumes"]
        self.assertEqual((mount["name"], mount["mountPath"], mount["readOnly"]), (vol["name"], "/etc/egressd", True))
        self.assertEqual(vol["configMap"], {"name": cm["metadata"]["name"]})
        self.assertEqual(tmpl["metadata"]["annotations"]["portarium.io/egress-policy-digest"],
                         cm["metadata"]["annotations"]["portarium.io/egress-policy-digest"])
        # The Service reaches those pods on 3128.
        self.assertEqual(svc["spec"]["type"], "ClusterIP")
        self.assertEqual(svc["spec"]["selector"], gw)
        self.assertEqual(svc["spec"]["ports"], [{"name": "proxy", "protocol": "TCP", "port": 3128,
                                                 "targetPort": 3128}])
        # The agents: the gateway pods on TCP 3128 and cluster DNS, nothing else.
        agents = {"portarium.io/component": agent}
        self.assertEqual(clients["spec"], {
            "podSelector": {"matchLabels": agents}, "policyTypes": ["Egress"],
            "egress": [{"to": [{"podSelector": {"matchLabels": gw}}],
                        "ports": [{"protocol": "TCP", "port": 3128}]}, DNS_RULE]})
        # Only the agents reach the gateway, on 3128.
        self.assertEqual(ingress["spec"], {
            "podSelector": {"matchLabels": gw}, "policyTypes": ["Ingress"],
            "ingress": [{"from": [{"podSelector": {"matchLabels": agents}}],
                         "ports": [{"protocol": "TCP", "port": 3128}]}]})
        # The gateway: exactly what --format networkpolicy opens for the
        # allowlist (the same renderer), plus DNS.
        self.assertEqual(egress["spec"]["podSelector"], {"matchLabels": gw})
        self.assertEqual(egress["spec"]["policyTypes"], ["Egress"])
        p = run("render", "--policy", policy, "--format", "networkpolicy", "--namespace", ns)
        self.assertEqual(p.returncode, 0, p.stderr)
        sor = json.loads(p.stdout)["items"][1]
        self.assertEqual(sor["metadata"]["labels"]["portarium.io/egress-layer"], "system-of-record")
        self.assertEqual(egress["spec"]["egress"], sor["spec"]["egress"] + [DNS_RULE])
        for rule in egress["spec"]["egress"][:-1]:
            self.assertTrue(all(set(peer) == {"ipBlock"} for peer in rule["to"]), rule)
        # Every pod of the namespace: egress denied unless allowed.
        self.assertEqual(deny, dict(DEFAULT_DENY, metadata=dict(DEFAULT_DENY["metadata"], namespace=ns)))
        # No policy of the List opens anything more for the agents.
        for np in (clients, ingress, egress):
            sel = np["spec"]["podSelector"]["matchLabels"]
            self.assertIn(sel, (agents, gw))
            if sel == agents:
                self.assertIs(np, clients)

    def test_committed_manifests_are_current(self):
        args = ["render", "--policy", EXAMPLE, "--format", "gateway"]
        update = os.environ.get("EGRESS_UPDATE_GOLDEN") == "1"
        outputs = {}
        for ext, extra in (("json", []), ("yaml", ["--output", "yaml"])):
            p = run(*args, *extra)
            self.assertEqual(p.returncode, 0, p.stderr)
            self.assertEqual(p.stderr, b"")
            golden = os.path.join(GATEWAY, "gateway." + ext)
            if update:
                with open(golden, "wb") as f:
                    f.write(p.stdout)
            with open(golden, "rb") as f:
                self.assertEqual(p.stdout, f.read(), f"examples/gateway/gateway.{ext} is stale: regenerate it "
                                 "(examples/gateway/README.md)")
            outputs[ext] = p.stdout
        doc = json.loads(outputs["json"])
        self.assertEqual(read_yaml(outputs["yaml"].decode("utf-8")), doc)
        self.check_structure(doc, EXAMPLE)
        # The README gives the commands that made the files.
        with open(os.path.join(GATEWAY, "README.md")) as f:
            readme = f.read()
        self.assertIn("egressctl render --policy examples/policies/demo-policy.json --format gateway"
                      " > examples/gateway/gateway.json", readme)
        self.assertIn("--output yaml > examples/gateway/gateway.yaml", readme)

    def test_options_and_other_policies(self):
        text = ('{"egressAllowlist": ["api.example.com", "10.9.0.0/16:5432", "\u00e9t\u00e9.example:8443",\n'
                '\t"[2001:db8::]/32:443"],\r\n "note": "quote \\" back\\\\slash \\u2028 </script>"}\n')
        odd = self.write("odd.json", text.encode("utf-8"))
        for path in (EXAMPLE, odd):
            with self.subTest(policy=path):
                self.check_structure(self.render(path), path)
        extra = ["--namespace", "tenant-a", "--name", "gw2", "--component", "execution-plane",
                 "--replicas", "5", "--gateway-image", "registry.local:5000/egressd@sha256:" + "ab" * 32]
        doc = self.render(odd, *extra)
        self.check_structure(doc, odd, ns="tenant-a", name="gw2", agent="execution-plane", replicas=5,
                             image="registry.local:5000/egressd@sha256:" + "ab" * 32)
        y = run("render", "--policy", odd, "--format", "gateway", *extra, "--output", "yaml")
        self.assertEqual(y.returncode, 0, y.stderr)
        self.assertEqual(read_yaml(y.stdout.decode("utf-8")), doc)
        # An empty allowlist: the gateway reaches DNS only, the agents the gateway only.
        empty = self.write("empty.json", {"egressAllowlist": []})
        doc = self.render(empty)
        self.check_structure(doc, empty)
        self.assertEqual(doc["items"][5]["spec"]["egress"], [DNS_RULE])

    def test_hostile_inputs(self):
        cases = [
            (["--replicas", "0"], "'0'"), (["--replicas", "101"], "'101'"), (["--replicas", "2x"], "'2x'"),
            (["--replicas", "-1"], "'-1'"), (["--replicas", " 2"], "' 2'"), (["--replicas", "1e1"], "'1e1'"),
            (["--replicas", "99999999999999999999"], "'99999999999999999999'"),
            (["--replicas", "2\n"], "'2\\x0a'"),
            (["--gateway-image", "egressd:1\nkind: Secret"], '"egressd:1\\x0akind: Secret"'),
            (["--gateway-image", 'egressd"x'], '"egressd\\"x"'),
            (["--gateway-image", "egressd 1"], '"egressd 1"'),
            (["--gateway-image", "-egressd"], '"-egressd"'),
            (["--gateway-image", "egressd:"], '"egressd:"'),
            (["--gateway-image", "x" * 256], "x" * 80),
            (["--name", "1gw"], '"1gw"'), (["--name", "Gw"], '"Gw"'), (["--name", "g" * 64], "g" * 64),
            (["--namespace", "Bad_NS"], '"Bad_NS"'),
            (["--baseline", EXAMPLE], "--baseline"),
            (["--component", "gateway"], "--component"),
        ]
        for extra, named in cases:
            with self.subTest(extra=extra):
                p = run("render", "--policy", EXAMPLE, "--format", "gateway", *extra)
                self.assertEqual(p.returncode, 64, p.stderr)
                self.assertEqual(p.stdout, b"")
                lines = p.stderr.decode().splitlines()
                self.assertEqual(len(lines), 2, lines)  # the value cannot forge lines
                self.assertIn(named, lines[0])
        for extra in (["--replicas", "3"], ["--gateway-image", "egressd:1"]):
            p = run("render", "--policy", EXAMPLE, "--format", "networkpolicy", *extra)
            self.assertEqual(p.returncode, 64, p.stderr)
            self.assertIn(b"--format gateway only", p.stderr)
        # Policies: no allowlist, not a policy, not UTF-8, too big for a ConfigMap, missing.
        bad = {
            "no-allowlist.json": (b'{"egressDenylist": ["x.example"]}', 65, b"egressAllowlist"),
            "not-json.json": (b'{"egressAllowlist": [', 65, b"invalid policy"),
            "latin1.json": (b'{"egressAllowlist": ["a.example"], "n": "\xe9t\xe9"}', 65, b"not UTF-8"),
            "surrogate.json": (b'{"egressAllowlist": ["a.example"], "n": "\xed\xa0\x80"}', 65, b"not UTF-8"),
            "overlong.json": (b'{"egressAllowlist": ["a.example"], "n": "\xc0\xaf"}', 65, b"not UTF-8"),
            "cut.json": (b'{"egressAllowlist": ["a.example"], "n": "\xe2\x82', 65, b""),
            "big.json": (b'{"egressAllowlist": ["a.example"], "pad": "' + b"x" * 1000000 + b'"}', 65,
                         b"larger than a ConfigMap"),
        }
        for name, (data, rc, said) in bad.items():
            with self.subTest(policy=name):
                p = run("render", "--policy", self.write(name, data), "--format", "gateway")
                self.assertEqual(p.returncode, rc, p.stderr)
                self.assertEqual(p.stdout, b"")
                self.assertIn(said, p.stderr)
                self.assertIn(name.encode(), p.stderr)
        p = run("render", "--policy", os.path.join(self.tmp, "missing.json"), "--format", "gateway")
        self.assertEqual(p.returncode, 66)

    def test_usage_mentions_gateway(self):
        p = run("--help")
        self.assertEqual(p.returncode, 0)
        out = p.stdout.decode()
        self.assertIn("networkpolicy|cilium|gateway", out)
        for word in ("--gateway-image", "--replicas", "NAME-clients", "NAME-ingress", "NAME-egress"):
            self.assertIn(word, out)


if __name__ == "__main__":
    if not EGRESSCTL or not os.access(EGRESSCTL, os.X_OK):
        print("EGRESSCTL is not set to an executable", file=sys.stderr)
        sys.exit(1)
    prog = unittest.main(exit=False, verbosity=2)
    sys.exit(0 if prog.result.wasSuccessful() else 1)
