#!/usr/bin/env python3
"""Total every test suite of the given meson testlog.json files.

Each meson test is counted by what it ran inside: CUnit executables print an
"EGRESS-TESTS: NAME passed=N failed=M" line (tests/testutil.c), Python
unittest prints "Ran N tests" and "FAILED (failures=.., errors=..)", node's
runner prints "# pass N" / "# fail N".  Anything else counts as one test.
A suite that meson saw fail but that reports no failure of its own (a crash,
a timeout, a sanitizer abort) adds one failure, so nothing failing is lost.
Prints one line per suite and the closing line "N passed, N failed".
"""
import json
import re
import sys


def counts_from_output(out):
    m = re.findall(r"^EGRESS-TESTS: \S+ passed=(\d+) failed=(\d+)", out, re.M)
    if m:
        return sum(int(a) for a, _ in m), sum(int(b) for _, b in m)
    ran = re.findall(r"^Ran (\d+) tests?", out, re.M)
    if ran:
        total = sum(int(r) for r in ran)
        failed = 0
        for f in re.findall(r"^FAILED \(([^)]*)\)", out, re.M):
            for part in f.split(","):
                k, _, v = part.strip().partition("=")
                if k in ("failures", "errors"):
                    failed += int(v)
        return total - failed, failed
    np = re.findall(r"^# pass (\d+)", out, re.M)
    nf = re.findall(r"^# fail (\d+)", out, re.M)
    if np or nf:
        return sum(map(int, np)), sum(map(int, nf))
    return None


def main(paths):
    passed = failed = 0
    for path in paths:
        try:
            lines = open(path, encoding="utf-8", errors="replace").read().splitlines()
        except OSError as e:
            print(f"{path}: {e}")
            failed += 1
            continue
        build = path.split("/meson-logs")[0] + (" valgrind" if "valgrind" in path else "")
        for line in lines:
            t = json.loads(line)
            ok = t.get("result") in ("OK", "EXPECTEDFAIL")
            skipped = t.get("result") == "SKIP"
            c = counts_from_output(t.get("stdout", "") + "\n" + (t.get("stderr") or ""))
            if c is None:
                p, f = (1, 0) if ok else (0, 1)
            else:
                p, f = c
                if not ok and f == 0:
                    f = 1
            if skipped:
                p, f = 0, 1  # a skipped suite hides untested behaviour
            print(f"  {build:<22} {t['name']:<28} {t.get('result'):<8} {p} passed, {f} failed")
            passed += p
            failed += f
    print(f"{passed} passed, {failed} failed")
    return 0 if failed == 0 else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
