#!/usr/bin/env python3
"""Runs the worker-gate demo and checks it against its own script.

Every line of calls.jsonl carries "expect": {"verdict": ..., "reason": ...}.
This checker runs worker-gate on the demo files and verifies that

  * every scripted call printed exactly one decision line, in order, with the
    expected verdict and reason;
  * the events file holds exactly one valid CloudEvents 1.0 decision event per
    call, carrying the call's context and the expected outcome, and each event
    is the one printed under its decision line;
  * the summary and the Prometheus counters agree with the decisions;
  * monitor mode lets every call through while recording what enforce mode
    would have done (events on standard output this time);
  * setup errors end with the documented non-zero exit statuses.

Standard library only.  Exit status 0 on success, 1 on any failure.
"""

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile

DECISION_RE = re.compile(r"^(ALLOW|DENY) +(\S+) (\S+)  (.*)$")
CONTEXT_RE = re.compile(r"^    adapter (\S+)  run (\S+)  correlation (\S+)$")
REASON_RE = re.compile(r"^(?:monitor, would deny: )?([a-z_]+): ")
UUID4_RE = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$")
TIME_RE = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{3}Z$")
DATA_KEYS = {
    "workspaceId", "agentId", "machineId", "runId", "correlationId", "method",
    "destination", "host", "port", "outcome", "denyReason", "enforcementMode",
    "wouldDeny", "matchedRule", "addresses", "dnsMs", "latencyMs",
    "policyDigest", "specialRangesVersion",
}
REASONS = {
    "invalid_host", "invalid_port", "empty_allowlist", "explicit_deny",
    "not_in_allowlist", "port_not_allowed", "special_purpose_address",
    "no_such_host", "resolved_address_forbidden", "dns_unavailable",
    "audit_unavailable",
}
# Malformed destinations are not policy decisions: monitor mode denies them
# too (include/egress.h: monitor allows "policy denials").
INPUT_ERRORS = {"invalid_host", "invalid_port"}
# The Quick-start promises to show these; trimming the script must not drop one.
REQUIRED_REASONS = {
    "not_in_allowlist", "port_not_allowed", "explicit_deny",
    "resolved_address_forbidden", "special_purpose_address", "invalid_host",
    "no_such_host",
}

failures = []


def fail(msg):
    failures.append(msg)
    print("FAIL: " + msg, file=sys.stderr)


def check(cond, msg):
    if not cond:
        fail(msg)
    return cond


def load_calls(path):
    calls = []
    with open(path, encoding="utf-8") as f:
        for n, line in enumerate(f, 1):
            if not line.strip():
                continue
            call = json.loads(line)
            exp = call.get("expect")
            if not (isinstance(exp, dict) and exp.get("verdict") in ("allow", "deny")):
                raise SystemExit("%s:%d: missing or bad \"expect\"" % (path, n))
            if (exp["verdict"] == "allow") != (exp.get("reason") is None):
                raise SystemExit("%s:%d: an allow expects reason null, a deny a reason" % (path, n))
            if exp["verdict"] == "deny" and exp["reason"] not in REASONS:
                raise SystemExit("%s:%d: unknown reason %r" % (path, n, exp["reason"]))
            calls.append(call)
    return calls


def target_of(call):
    if "url" in call:
        return call["url"]
    host = call["host"]
    return ("[%s]:%d" if ":" in host else "%s:%d") % (host, call["port"])


def run(cmd):
    p = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                       text=True, timeout=60)
    return p.returncode, p.stdout, p.stderr


def parse_output(out):
    """Returns [(verdict, method, target, reason|None, context, event_text)]."""
    lines = out.split("\n")
    decisions = []
    i = 0
    while i < len(lines):
        m = DECISION_RE.match(lines[i])
        if not m:
            i += 1
            continue
        verdict, method, target, rest = m.groups()
        reason = None
        if not rest.startswith("-> "):
            rm = REASON_RE.match(rest)
            reason = rm.group(1) if rm else "<unparsed: %s>" % rest
        context = event = None
        j = i + 1
        while j < len(lines) and lines[j].startswith("    "):
            cm = CONTEXT_RE.match(lines[j])
            if cm:
                context = cm.groups()
            if lines[j].startswith("    event: "):
                event = lines[j][len("    event: "):]
            j += 1
        decisions.append((verdict, method, target, reason, context, event))
        i = j
    return decisions


def check_event(ev, call, mode, where, identity):
    exp = call["expect"]
    check(ev.get("specversion") == "1.0", where + ": specversion")
    check(ev.get("type") == "io.portarium.egress.attempt", where + ": type")
    check(isinstance(ev.get("source"), str) and ev["source"], where + ": source")
    check(isinstance(ev.get("id"), str) and UUID4_RE.match(ev["id"]), where + ": id is not a UUID v4")
    check(isinstance(ev.get("time"), str) and TIME_RE.match(ev["time"]), where + ": time %r" % ev.get("time"))
    check(ev.get("datacontenttype") == "application/json", where + ": datacontenttype")
    data = ev.get("data")
    if not check(isinstance(data, dict), where + ": data is not an object"):
        return
    missing = DATA_KEYS - set(data)
    check(not missing, where + ": data lacks %s" % sorted(missing))
    check(ev.get("subject") == data.get("destination"), where + ": subject != destination")
    check(data.get("workspaceId") == identity["workspaceId"], where + ": workspaceId")
    check(data.get("machineId") == identity["machineId"], where + ": machineId")
    check(data.get("runId") == call.get("runId"), where + ": runId")
    check(data.get("correlationId") == call.get("correlationId"), where + ": correlationId")
    check(data.get("method") == call.get("method"), where + ": method")
    check(data.get("enforcementMode") == mode, where + ": enforcementMode")
    want_outcome = "allowed" if exp["verdict"] == "allow" else "denied"
    check(data.get("outcome") == want_outcome,
          where + ": outcome %r, expected %r" % (data.get("outcome"), want_outcome))
    check(data.get("denyReason") == exp["reason"],
          where + ": denyReason %r, expected %r" % (data.get("denyReason"), exp["reason"]))
    check(data.get("wouldDeny") is (exp["verdict"] == "deny"), where + ": wouldDeny")
    if "host" in call:
        check(data.get("port") == call["port"], where + ": port")
    addrs = data.get("addresses")
    if check(isinstance(addrs, list), where + ": addresses"):
        if exp["verdict"] == "allow":
            check(addrs and all(a.get("verdict") == "allow" for a in addrs),
                  where + ": an allowed call must list only vetted addresses")
        if exp["reason"] == "resolved_address_forbidden":
            check(any(a.get("verdict") == "deny" for a in addrs),
                  where + ": the forbidden address must be listed")
    digest = data.get("policyDigest")
    check(isinstance(digest, str) and re.match(r"^[0-9a-f]{64}$", digest), where + ": policyDigest")
    check(isinstance(data.get("specialRangesVersion"), str) and data["specialRangesVersion"],
          where + ": specialRangesVersion")


def check_decisions(decisions, calls, mode, label):
    if not check(len(decisions) == len(calls),
                 "%s: %d decision lines for %d calls" % (label, len(decisions), len(calls))):
        return
    for n, (call, dec) in enumerate(zip(calls, decisions), 1):
        verdict, method, target, reason, context, _ = dec
        exp = call["expect"]
        where = "%s call %d (%s)" % (label, n, call.get("adapter"))
        monitor_allows = mode == "monitor" and exp["reason"] not in INPUT_ERRORS
        want_verdict = "ALLOW" if monitor_allows or exp["verdict"] == "allow" else "DENY"
        check(verdict == want_verdict, where + ": printed %s, expected %s" % (verdict, want_verdict))
        check(reason == exp["reason"], where + ": printed reason %r, expected %r" % (reason, exp["reason"]))
        check(method == call.get("method", "TCP"), where + ": method %r" % method)
        check(target == target_of(call), where + ": target %r" % target)
        check(context == (call.get("adapter"), call.get("runId"), call.get("correlationId")),
              where + ": context line %r" % (context,))


def metric(out, name):
    m = re.search(r"^%s (\d+)$" % re.escape(name), out, re.M)
    return int(m.group(1)) if m else None


def check_counters(out, calls, label):
    n = len(calls)
    check(metric(out, "egress_checks_total") == n, label + ": egress_checks_total")
    check(metric(out, "egress_events_emitted_total") == n, label + ": egress_events_emitted_total")
    check(metric(out, "egress_events_failed_total") == 0, label + ": egress_events_failed_total")
    hits = metric(out, "egress_dns_cache_hits_total")
    check(hits is not None and hits >= 1,
          label + ": the repeated name should be answered from the DNS cache")
    want = {}
    for c in calls:
        key = c["expect"]["reason"]
        want[key] = want.get(key, 0) + 1
    for reason, count in want.items():
        if reason is None:
            pat = r'^egress_checks_by_outcome_total\{outcome="allowed",reason="[^"]*"\} (\d+)$'
        else:
            pat = (r'^egress_checks_by_outcome_total\{outcome="denied",reason="%s"\} (\d+)$'
                   % re.escape(reason))
        m = re.search(pat, out, re.M)
        check(m and int(m.group(1)) == count,
              "%s: counter for %s should be %d" % (label, reason or "allowed", count))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--worker-gate", required=True)
    ap.add_argument("--policy", required=True)
    ap.add_argument("--hosts", required=True)
    ap.add_argument("--calls", required=True)
    ap.add_argument("--workdir", default=None)
    a = ap.parse_args()

    calls = load_calls(a.calls)
    expected_reasons = {c["expect"]["reason"] for c in calls}
    check(None in expected_reasons, "the script has no allowed call")
    check(REQUIRED_REASONS <= expected_reasons,
          "the script no longer shows %s" % sorted(REQUIRED_REASONS - expected_reasons))
    with open(a.policy, encoding="utf-8") as f:
        record = json.load(f)
    identity = {"workspaceId": record.get("workspaceId"), "machineId": record.get("machineId")}
    n_allow = sum(1 for c in calls if c["expect"]["verdict"] == "allow")
    n_deny = len(calls) - n_allow
    n_input_errors = sum(1 for c in calls if c["expect"]["reason"] in INPUT_ERRORS)

    tmp = tempfile.mkdtemp(prefix="worker-gate-", dir=a.workdir)
    try:
        base = [a.worker_gate, "--policy", a.policy, "--hosts", a.hosts, "--calls", a.calls]

        # Enforce mode, events to a file.
        events_path = os.path.join(tmp, "events.jsonl")
        rc, out, err = run(base + ["--events", events_path])
        check(rc == 0, "enforce: exit status %d, stderr: %s" % (rc, err.strip()))
        decisions = parse_output(out)
        check_decisions(decisions, calls, "enforce", "enforce")
        check("summary: %d calls, %d allowed, %d denied\n" % (len(calls), n_allow, n_deny) in out,
              "enforce: summary line")
        check_counters(out, calls, "enforce")
        with open(events_path, encoding="utf-8") as f:
            raw = f.read()
        check(raw.endswith("\n"), "enforce: events file does not end with a newline")
        lines = raw.split("\n")[:-1]
        check(len(lines) == len(calls),
              "enforce: %d event lines for %d calls" % (len(lines), len(calls)))
        ids = set()
        for n, (line, call) in enumerate(zip(lines, calls), 1):
            where = "enforce event %d (%s)" % (n, call.get("adapter"))
            try:
                ev = json.loads(line)
            except ValueError as e:
                fail("%s: not JSON: %s" % (where, e))
                continue
            if not check(isinstance(ev, dict), where + ": not an object"):
                continue
            check_event(ev, call, "enforce", where, identity)
            ids.add(ev.get("id"))
            if n <= len(decisions):
                check(decisions[n - 1][5] == line, where + ": printed event differs from the delivered one")
        check(len(ids) == len(lines), "enforce: event ids are not unique")

        # Monitor mode, events on standard output between the readable lines.
        rc, out, err = run(base + ["--mode", "monitor", "--events", "-"])
        check(rc == 0, "monitor: exit status %d, stderr: %s" % (rc, err.strip()))
        check_decisions(parse_output(out), calls, "monitor", "monitor")
        check(("summary: %d calls, %d allowed, %d denied; monitor mode: %d allowed calls would be "
               "denied in enforce mode\n" % (len(calls), len(calls) - n_input_errors,
                                             n_input_errors, n_deny - n_input_errors)) in out,
              "monitor: summary line")
        stream = [l for l in out.split("\n") if l.startswith("{")]
        check(len(stream) == len(calls),
              "monitor: %d events on stdout for %d calls" % (len(stream), len(calls)))
        for n, (line, call) in enumerate(zip(stream, calls), 1):
            where = "monitor event %d (%s)" % (n, call.get("adapter"))
            try:
                check_event(json.loads(line), call, "monitor", where, identity)
            except ValueError as e:
                fail("%s: not JSON: %s" % (where, e))

        # Pretty-printed events change only the layout of the event blocks.
        rc, out, err = run(base + ["--pretty"])
        check(rc == 0, "pretty: exit status %d, stderr: %s" % (rc, err.strip()))
        check_decisions(parse_output(out), calls, "enforce", "pretty")

        # Setup errors are not decisions: they must not exit 0.
        rc, _, _ = run([a.worker_gate])
        check(rc == 64, "no arguments: exit %d, expected 64" % rc)
        rc, _, _ = run(base + ["--mode", "audit"])
        check(rc == 64, "bad --mode: exit %d, expected 64" % rc)
        bad_policy = os.path.join(tmp, "bad-policy.json")
        with open(bad_policy, "w", encoding="utf-8") as f:
            json.dump({"egressAllowlist": ["https://api.example.com", "10.0.0.1/8"]}, f)
        rc, _, err = run([a.worker_gate, "--policy", bad_policy, "--hosts", a.hosts,
                          "--calls", a.calls])
        check(rc == 65, "invalid policy: exit %d, expected 65" % rc)
        check("10.0.0.1/8" in err, "invalid policy: the message should name the entry: %r" % err)
        rc, _, _ = run(base[:3] + ["--hosts", os.path.join(tmp, "missing-hosts"),
                                   "--calls", a.calls])
        check(rc == 66, "missing hosts file: exit %d, expected 66" % rc)
        bad_calls = os.path.join(tmp, "bad-calls.jsonl")
        with open(bad_calls, "w", encoding="utf-8") as f:
            f.write('{"adapter":"x","url":"https://api.crm.example.com/"}\n{"adapter":"y"}\n')
        rc, _, err = run(base[:5] + ["--calls", bad_calls])
        check(rc == 65, "call without url or host: exit %d, expected 65" % rc)
        check(":2:" in err, "bad calls file: the message should name line 2: %r" % err)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)

    if failures:
        print("%d check(s) failed" % len(failures), file=sys.stderr)
        return 1
    print("demo OK: %d calls (%d allowed, %d denied) decided as scripted, "
          "with one CloudEvents event each, in enforce and monitor mode" % (len(calls), n_allow, n_deny))
    return 0


if __name__ == "__main__":
    sys.exit(main())
