#!/usr/bin/env python3
"""uv-check-many against the loopback responder: 10 000 distinct names, all
answered, every tenth with 127.0.0.1 (denied: resolved_address_forbidden);
asserts every callback ran and the decision counts.  All 10 000 are started
at once (--window bounds them if given): the library itself keeps the DNS
queries in flight within what the socket's receive buffer holds, so no answer
is lost and none ends as dns_unavailable."""
import argparse, os, subprocess, sys, tempfile

ap = argparse.ArgumentParser()
ap.add_argument("--uv-check-many", required=True)
ap.add_argument("--dns", required=True)
ap.add_argument("--count", type=int, default=10000)
ap.add_argument("--window", type=int, default=0)
a = ap.parse_args()

with tempfile.TemporaryDirectory() as tmp:
    zone = os.path.join(tmp, "zone")
    with open(zone, "w") as f:
        for i in range(a.count):
            f.write(f"n{i}.many.test A {'127.0.0.1' if i % 10 == 0 else '93.184.216.34'}\n")
    policy = os.path.join(tmp, "policy.json")
    with open(policy, "w") as f:
        f.write('{"egressAllowlist": ["**.many.test"], "egressDenylist": []}\n')
    dns = subprocess.Popen([a.dns, "--bind", "127.0.0.1", "--zone", zone, "--stdin-lifeline"],
                           stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    try:
        line = dns.stdout.readline().split()
        if len(line) != 2 or line[0] != "PORT":
            sys.exit(f"responder did not start: {line}")
        out = subprocess.run([a.uv_check_many, policy, f"127.0.0.1:{line[1]}", str(a.count), "many.test"] + ([str(a.window)] if a.window else []),
                             capture_output=True, text=True, timeout=120)
    finally:
        dns.stdin.close()
        dns.wait(timeout=10)
    print(out.stdout, end="")
    print(out.stderr, end="", file=sys.stderr)
    fields = out.stdout.splitlines()[0].split()
    got = dict(zip(fields[0::2], fields[1::2]))
    denied = (a.count + 9) // 10
    want = {"checks": a.count, "callbacks": a.count, "allowed": a.count - denied, "denied": denied,
            "cancelled": 0}
    bad = [k for k, v in want.items() if int(got.get(k, -1)) != v]
    if out.returncode != 0 or bad or f"resolved_address_forbidden {denied}" not in out.stdout:
        sys.exit(f"FAIL: exit {out.returncode}, wrong {bad}: {got}")
    print("ok")
