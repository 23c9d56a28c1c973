#!/usr/bin/env python3
"""Malformed and hostile policy documents are rejected, precisely and quickly.

Every tests/policies/bad/*.json is listed in bad/expected.tsv with the
substrings its error must hold; `egressctl lint --policy FILE` must exit 65
(invalid policy) with those on stderr, within 5 seconds.  Documents too big
to keep in the tree (100k levels of nesting, a million entries, a file over
the size cap) are generated here.  A catastrophic-backtracking regex must
compile and then match in bounded time.

Needs EGRESSCTL (path of the egressctl binary); meson sets it.
"""
import json
import os
import subprocess
import sys
import tempfile
import time
import unittest

HERE = os.path.dirname(os.path.abspath(__file__))
BAD = os.path.join(HERE, "bad")
EGRESSCTL = os.environ.get("EGRESSCTL", "egressctl")
# Sanitizer and valgrind builds are slower; generated big documents get a
# larger (still bounded) budget than the 5 s of each corpus file.
TIMEOUT = 5
BIG_TIMEOUT = float(os.environ.get("EGRESS_BIG_POLICY_TIMEOUT", "60"))
EX_POLICY = 65


def lint(path, timeout=TIMEOUT):
    start = time.monotonic()
    p = subprocess.run([EGRESSCTL, "lint", "--policy", path], capture_output=True,
                       timeout=timeout)
    return p.returncode, p.stdout.decode("utf-8", "replace"), \
        p.stderr.decode("utf-8", "replace"), time.monotonic() - start


def expected():
    rows = {}
    with open(os.path.join(BAD, "expected.tsv"), encoding="utf-8") as fh:
        for line in fh:
            line = line.rstrip("\n")
            if not line or line.startswith("#"):
                continue
            name, *subs = line.split("\t")
            rows[name] = subs
    return rows


class BadPolicyCorpus(unittest.TestCase):
    def test_every_file_is_listed(self):
        files = sorted(f for f in os.listdir(BAD) if f.endswith(".json"))
        rows = expected()
        self.assertGreaterEqual(len(files), 50)
        self.assertEqual(files, sorted(rows), "bad/*.json and expected.tsv disagree")
        for name, subs in rows.items():
            self.assertTrue(subs and all(subs), f"{name}: no expected substring")

    def test_each_file_rejected_with_its_message(self):
        for name, subs in sorted(expected().items()):
            with self.subTest(policy=name):
                path = os.path.join(BAD, name)
                rc, out, err, secs = lint(path)
                self.assertEqual(rc, EX_POLICY, f"{name}: exit {rc}, stderr: {err!r}")
                for s in subs:
                    self.assertIn(s, err, f"{name}: stderr lacks {s!r}")
                self.assertNotIn("ok:", out)
                # The message is safe to log: one line, printable.
                self.assertEqual(err.count("\n"), 1, f"{name}: {err!r}")
                self.assertTrue(all(c == "\n" or c.isprintable() for c in err), f"{name}: {err!r}")


class GeneratedDocuments(unittest.TestCase):
    def setUp(self):
        self.tmp = tempfile.TemporaryDirectory()

    def tearDown(self):
        self.tmp.cleanup()

    def write(self, name, data):
        path = os.path.join(self.tmp.name, name)
        with open(path, "wb") as fh:
            fh.write(data if isinstance(data, bytes) else data.encode())
        return path

    def assert_rejected(self, path, *subs, timeout=BIG_TIMEOUT):
        rc, out, err, secs = lint(path, timeout)
        self.assertEqual(rc, EX_POLICY, f"exit {rc}, stderr: {err[:300]!r}")
        for s in subs:
            self.assertTrue(s in err, f"{s!r} not in stderr, which starts {err[:300]!r}")
        return secs

    def test_array_nesting_100k(self):
        self.assert_rejected(self.write("deep.json", "[" * 100000 + "]" * 100000), "not valid JSON",
                             timeout=TIMEOUT)

    def test_object_nesting_100k(self):
        doc = '{"a":' * 100000 + "1" + "}" * 100000
        self.assert_rejected(self.write("deep.json", doc), "not valid JSON", timeout=TIMEOUT)

    def test_nesting_inside_allowlist(self):
        doc = '{"egressAllowlist": [' + "[" * 100000 + "]" * 100000 + "]}"
        self.assert_rejected(self.write("deep.json", doc), "not valid JSON", timeout=TIMEOUT)

    def test_unterminated_100k(self):
        self.assert_rejected(self.write("open.json", '{"egressAllowlist": [' + '"a.com",' * 100000),
                             "not valid JSON", timeout=TIMEOUT)

    def test_million_entries_last_one_bad(self):
        entries = ["h%d.example.com" % i for i in range(999999)] + ["10.0.0.1/8"]
        path = self.write("big.json", json.dumps({"egressAllowlist": entries}))
        self.assert_rejected(path, 'egressAllowlist[999999] "10.0.0.1/8"', "host bits")

    def test_million_non_strings(self):
        path = self.write("nums.json", '{"egressAllowlist": [' + ",".join(["1"] * 1000000) + "]}")
        self.assert_rejected(path, "egressAllowlist[0] 1: entry must be a string, not a number")

    def test_million_keys(self):
        doc = "{" + ",".join('"k%d": 1' % i for i in range(1000000)) + "}"
        self.assert_rejected(self.write("keys.json", doc), "egressAllowlist: missing")

    def test_million_keys_one_written_twice(self):
        # Sorted, not compared pairwise: a million keys stay quick.
        doc = "{" + ",".join('"k%d": 1' % i for i in range(1000000)) + ', "egressAllowlist": [], "k777": 2}'
        self.assert_rejected(self.write("keys2.json", doc), "k777: key appears 2 times")

    def test_duplicate_key_far_apart(self):
        doc = ('{"egressAllowlist": ["*"], ' + ",".join('"k%d": 1' % i for i in range(100000)) +
               ', "egressAllowlist": []}')
        self.assert_rejected(self.write("dup.json", doc), "key appears 2 times")

    def test_over_size_cap(self):
        path = os.path.join(self.tmp.name, "huge.json")
        with open(path, "wb") as fh:
            fh.truncate(64 * 1024 * 1024 + 1)  # sparse: costs no disk
        self.assert_rejected(path, "larger than")

    def test_many_nul_escapes(self):
        doc = '{"egressAllowlist": ["a.com' + "\\\\" * 50000 + '\\u0000"]}'
        self.assert_rejected(self.write("nul.json", doc), "NUL character", timeout=TIMEOUT)

    def test_long_entry_each_kind(self):
        for entry in ("a" * 100000, "re:" + "(a" * 5000 + ")" * 5000, "https://h.example/" + "x/" * 50000,
                      "1" * 100000 + ".0.0.0/8"):
            with self.subTest(entry=entry[:20]):
                path = self.write("long.json", json.dumps({"egressAllowlist": [entry]}))
                self.assert_rejected(path, "egressAllowlist[0]", "4096", timeout=TIMEOUT)


class CatastrophicRegex(unittest.TestCase):
    """re:^(a+)+$ is a valid pattern: it must load, and matching a hostile
    name against it must end quickly (match limit), not hang the check."""

    PATTERNS = ["re:^(a+)+$", "re:^(a|aa)+$", "re:^(a|a?)+$", "re:^(.*a){20}$", "re:^(([a-z])+.)+[A-Z]([a-z])+$"]

    def test_compiles_and_matches_bounded(self):
        with tempfile.TemporaryDirectory() as tmp:
            policy = os.path.join(tmp, "p.json")
            hosts = os.path.join(tmp, "hosts")
            with open(policy, "w") as fh:
                json.dump({"egressAllowlist": [p + ":443" if p.endswith("$") else p for p in self.PATTERNS]}, fh)
            open(hosts, "w").close()
            rc, out, err, _ = lint(policy)
            self.assertEqual(rc, 0, err)
            hostile = ["a" * 60 + ".b", "a" * 63 + "." + "a" * 63 + ".x", ".".join(["a" * 60] * 4)]
            for host in hostile:
                with self.subTest(host=host[:16]):
                    start = time.monotonic()
                    p = subprocess.run([EGRESSCTL, "check", "--policy", policy, "--hosts", hosts,
                                        "--timeout-ms", "500", host, "443"],
                                       capture_output=True, timeout=TIMEOUT)
                    self.assertLess(time.monotonic() - start, TIMEOUT)
                    self.assertEqual(p.returncode, 1, p.stdout + p.stderr)  # denied, never allowed
                    self.assertEqual(json.loads(p.stdout.decode())["verdict"], "deny")


if __name__ == "__main__":
    unittest.main(verbosity=2)
