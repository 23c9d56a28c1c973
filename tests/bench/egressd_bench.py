#!/usr/bin/env python3
"""egressd against Squid and against no proxy at all, in one run.

    egressd_bench.py --load EGRESSD_LOAD --egressd EGRESSD --dns EGRESS_TEST_DNS
                     [--json FILE] [--reps N] [--quick] [--no-squid] [--no-perf]

Started by tests/bench/run.sh --only egressd, which builds the three programs.
Everything listens on 127.0.0.1: the upstream (egressd-load serve), the
loopback DNS responder that egressd asks (up.test, TTL one hour, so every
check after the first hits egressd's cache), egressd, and Squid (when the
`squid` program is installed; Debian package `squid`), which finds up.test in
a hosts_file of its own and lets through only that name and the upstream's
port, as egressd's policy does.  Both proxies log each request to a file.

Figures, each the median of the reps, every rep measuring its baselines
right next to it:
  setup   CONNECT + one GET through the tunnel on a fresh connection, p50 of
          2 000 sequential setups each; the time each proxy adds over the
          same GET on a direct connection.  Direct, egressd and Squid take
          turns setup by setup (each round in a shuffled order), so the
          machine's noise, and what one proxy still does after its client
          is done, fall on all three alike.  Target: egressd adds <= 0.5x
          Squid's.  With them, in the same turns, the floor: a bare relay
          (egressd-load relay: accept, read the head, connect, 200, relay;
          no check, no log), what any proxy's setup costs here.
  rps     absolute-form GET with keep-alive from 50 connections, small
          responses; connections the proxy closes are replaced and counted.
          Target: egressd >= 2x Squid.
  perf    `perf record` on egressd during 12 s of the rps load: the share of
          its samples spent in libegress (the check), attributing each sample
          to the innermost frame in libegress, egressd or libuv, with the
          share's 95% interval from the sample count (about +-0.4 points
          at 10 000 samples and 5%).  Target < 5%.
  bulk    1 GiB through one CONNECT tunnel vs the same transfer direct.
          Target >= 0.7x direct.  egressd as deployed (--relay buffer) and,
          in the same turns, a second egressd with --relay splice.  With it, the CPU seconds per GiB of the
          sender, the proxy and the receiver, and the ratio those allow on
          this machine's CPUs at best (the proxied transfer takes at least
          its processes' CPU time spread over all CPUs, and at least its
          busiest process's).
  idle    N tunnels established and idle (N = 10 000, or what the fd hard
          limit allows: an idle egressd tunnel holds two descriptors, its
          two sockets): RSS growth / N.
          Target <= 16 KiB.
"""
import argparse, itertools, json, os, random, resource, shutil, signal, socket, statistics, subprocess, sys, tempfile, time

ap = argparse.ArgumentParser()
ap.add_argument("--load", required=True)
ap.add_argument("--egressd", required=True)
ap.add_argument("--dns", required=True)
ap.add_argument("--json")
ap.add_argument("--reps", type=int, default=5)
ap.add_argument("--quick", action="store_true", help="small counts: a smoke run of a few seconds")
ap.add_argument("--no-squid", action="store_true", help="leave Squid out even if it is installed")
ap.add_argument("--no-perf", action="store_true", help="leave out the perf profile")
ap.add_argument("--squid", default=shutil.which("squid") or "/usr/sbin/squid")
a = ap.parse_args()

quick = a.quick
reps = 1 if quick else max(1, a.reps)
SETUP_COUNT = 200 if quick else 2000
RPS_CONNS = 50
RPS_SECONDS = 1 if quick else 4
PERF_SECONDS = 12
BULK_BYTES = (64 if quick else 1024) << 20
soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
# Two descriptors an idle tunnel, its two sockets (a bulk one has two
# more), in egressd as in Squid; each side of the test is its own process.
IDLE_TUNNELS = min(500 if quick else 10000, (hard - 300) // 2)

use_squid = not a.no_squid and os.access(a.squid, os.X_OK)
use_perf = not a.no_perf and not quick and shutil.which("perf") is not None

tmp = tempfile.mkdtemp(prefix="egressd-bench-")
os.chmod(tmp, 0o711)  # Squid's user must reach its files in there
children = []
status = 1


def spawn(argv, **kw):
    p = subprocess.Popen(argv, **kw)
    children.append(p)
    return p


def stop(p):
    if p.poll() is None:
        p.terminate()
        try:
            p.wait(10)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()


def load(*args, timeout=300):
    """Runs one egressd-load client; returns its JSON result."""
    r = subprocess.run([a.load] + [str(x) for x in args], capture_output=True, text=True, timeout=timeout)
    if r.returncode != 0:
        sys.exit(f"egressd-load {' '.join(map(str, args))}: {r.stderr.strip()}")
    return json.loads(r.stdout)


def rss_kib(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def cpu_s(pid):
    """User + system CPU seconds of process PID so far (clock-tick grain)."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def wait_port(port, proc, what, log=None):
    for _ in range(300):
        if proc.poll() is not None:
            break
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            time.sleep(0.05)
    detail = open(log).read()[-2000:] if log and os.path.exists(log) else ""
    sys.exit(f"{what} did not start\n{detail}")


def med(xs):
    return statistics.median(xs) if xs else None


try:
    # The upstream and the responder.
    up = spawn([a.load, "serve"], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    up_port = int(up.stdout.readline().split()[1])
    authority = f"up.test:{up_port}"
    direct = f"127.0.0.1:{up_port}"
    zone = os.path.join(tmp, "zone")
    with open(zone, "w") as f:
        f.write("up.test A 127.0.0.1 3600\n")
    dns = spawn([a.dns, "--bind", "127.0.0.1", "--zone", zone, "--stdin-lifeline"],
                stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    dns_port = int(dns.stdout.readline().split()[1])

    # egressd: the upstream's name and port, nothing else (a name that
    # resolves to loopback is refused unless a rule opens the address too).
    # The policy in a directory of its own: egressd watches the policy's
    # directory, and the events file written there would wake it every check.
    os.mkdir(os.path.join(tmp, "policy"))
    policy = os.path.join(tmp, "policy", "policy.json")
    with open(policy, "w") as f:
        json.dump({"egressAllowlist": [authority, f"127.0.0.1/32:{up_port}"], "egressDenylist": []}, f)

    def start_egressd(name, *extra):
        port_file = os.path.join(tmp, name + ".port")
        p = spawn([a.egressd, "--listen", "127.0.0.1:0", "--port-file", port_file, "--policy", policy,
                   "--dns-server", f"127.0.0.1:{dns_port}", "--events-path", os.path.join(tmp, name + ".jsonl"),
                   "--max-connections", str(2 * IDLE_TUNNELS + 100), *extra],
                  stdout=subprocess.DEVNULL, stderr=open(os.path.join(tmp, name + ".log"), "w"))
        for _ in range(200):
            if os.path.exists(port_file) and open(port_file).read().strip():
                return p, f"127.0.0.1:{int(open(port_file).read())}"
            time.sleep(0.05)
        sys.exit(f"{name} did not start: " + open(os.path.join(tmp, name + ".log")).read())

    egressd, egressd_addr = start_egressd("egressd")
    proxies = {"egressd": egressd_addr}
    pids = {"egressd": egressd.pid}
    # The other way of moving a bulk tunnel's bytes, in the same bulk turns.
    egressd_splice, egressd_splice_addr = start_egressd("egressd-splice", "--relay", "splice")

    # Squid: the same name (from its own hosts file), the same port, nothing else.
    if use_squid:
        sq = os.path.join(tmp, "squid")
        os.mkdir(sq)
        os.chmod(sq, 0o777)  # squid drops root for cache_effective_user before writing its logs
        with open(os.path.join(sq, "hosts"), "w") as f:
            f.write("127.0.0.1 up.test\n")
        squid_port = free_port()
        conf = os.path.join(sq, "squid.conf")
        with open(conf, "w") as f:
            f.write(f"""http_port 127.0.0.1:{squid_port}
pid_filename none
cache_effective_user proxy
cache_log {sq}/cache.log
access_log stdio:{sq}/access.log
cache_store_log none
logfile_rotate 0
coredump_dir {sq}
netdb_filename none
pinger_enable off
cache deny all
hosts_file {sq}/hosts
dns_nameservers 127.0.0.1
acl bench_dst dstdomain up.test
acl bench_port port {up_port}
http_access allow bench_dst bench_port
http_access deny all
max_filedescriptors {hard}
shutdown_lifetime 0 seconds
workers 1
""")
        squid = spawn([a.squid, "-N", "-f", conf], stdout=subprocess.DEVNULL, stderr=open(os.path.join(sq, "stderr"), "w"))
        wait_port(squid_port, squid, "squid", os.path.join(sq, "cache.log"))
        proxies["squid"] = f"127.0.0.1:{squid_port}"
        pids["squid"] = squid.pid

    names = list(proxies)
    # Warm-up: the name cached in egressd, first-request work done in both.
    for name, addr in proxies.items():
        load("setup", addr, "--proxy", "--host", authority, "--count", 20)
        load("rps", addr, "--proxy", "--host", authority, "--conns", 2, "--seconds", 0.2)
    results = {"config": {"reps": reps, "setup_count": SETUP_COUNT, "rps_conns": RPS_CONNS,
                          "rps_seconds": RPS_SECONDS, "bulk_bytes": BULK_BYTES, "idle_tunnels": IDLE_TUNNELS,
                          "squid": use_squid, "quick": quick}}

    # idle first, on fresh processes: memory freed by earlier figures would
    # be reused by the tunnels and hide their cost.
    idle = {}
    for name, addr in proxies.items():
        time.sleep(0.5)
        before = rss_kib(pids[name])
        holder = spawn([a.load, "idle", addr, "--host", authority, "--count", str(IDLE_TUNNELS)],
                       stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        ready = holder.stdout.readline().split()
        time.sleep(0.5)
        after = rss_kib(pids[name])
        holder.stdin.close()
        holder.wait(30)
        ok = int(ready[1]) if len(ready) == 3 else 0
        idle[name] = {"tunnels": ok, "failed": IDLE_TUNNELS - ok, "rss_before_kib": before, "rss_after_kib": after,
                      "kib_per_tunnel": (after - before) / ok if ok else None}
        time.sleep(1)  # the proxy closes its side and the upstream's
    results["idle"] = idle

    # The floor of the setup figure: a bare relay (egressd-load relay) that
    # only accepts, reads the head, connects and relays: what any proxy's
    # setup costs on this machine before it checks or logs anything.
    bare = spawn([a.load, "relay", direct], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    bare_addr = f"127.0.0.1:{int(bare.stdout.readline().split()[1])}"
    setup_names = names + ["bare"]
    setup = {n: [] for n in ["direct"] + setup_names}
    rps = {n: [] for n in ["direct"] + names}
    bulk = {n: [] for n in ["direct"] + names + ["egressd-splice"]}
    for _ in range(reps):
        # Direct, the proxies and the bare relay take turns setup by setup.
        rr = load("setup-rr", direct, "--host", authority, "--count", SETUP_COUNT,
                  "--proxies", ",".join(list(proxies.values()) + [bare_addr]))
        for name, got in zip(["direct"] + setup_names, rr):
            setup[name].append(got)
    for _ in range(reps):
        rps["direct"].append(load("rps", direct, "--host", authority, "--conns", RPS_CONNS, "--seconds", RPS_SECONDS))
        for name, addr in proxies.items():
            rps[name].append(load("rps", addr, "--proxy", "--host", authority, "--conns", RPS_CONNS,
                                  "--seconds", RPS_SECONDS))
    def bulk_run(addr, proxy_pid=None):
        """One bulk transfer, with the CPU time its processes spent."""
        before = (cpu_s(up.pid), cpu_s(proxy_pid) if proxy_pid else 0)
        r = load("bulk", addr, *(["--proxy"] if proxy_pid else []), "--host", authority, "--bytes", BULK_BYTES)
        r["sender_cpu_s"] = cpu_s(up.pid) - before[0]
        r["proxy_cpu_s"] = cpu_s(proxy_pid) - before[1] if proxy_pid else 0
        return r

    # Each rep in a fresh order, as the setups: the machine's pace drifts
    # by a quarter from one transfer to the next (direct alone read 2 700 to
    # 4 200 MiB/s in one run), and a fixed order gives the first one a
    # place of its own.
    bulk_targets = [("direct", direct, None)] + [(n, proxies[n], pids[n]) for n in names] + \
                   [("egressd-splice", egressd_splice_addr, egressd_splice.pid)]
    shuffle = random.Random(1)
    for _ in range(reps):
        for name, addr, pid in shuffle.sample(bulk_targets, len(bulk_targets)):
            bulk[name].append(bulk_run(addr, pid))
    results.update(setup=setup, rps=rps, bulk=bulk)

    # perf on egressd under the rps load, apart from the timed reps.
    profile = None
    if use_perf:
        data = os.path.join(tmp, "perf.data")
        perf = spawn(["perf", "record", "-q", "-F", "999", "--call-graph", "dwarf,16384", "-p", str(egressd.pid),
                      "-o", data], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        time.sleep(0.5)
        # Long enough for some 10 000 samples: with the 3 400 of 3 s, the
        # share's sampling error alone was +-0.7 points.
        load("rps", proxies["egressd"], "--proxy", "--host", authority, "--conns", RPS_CONNS, "--seconds", PERF_SECONDS)
        perf.send_signal(signal.SIGINT)
        perf.wait(60)
        script = subprocess.run(["perf", "script", "-i", data, "-F", "ip,sym,dso"], capture_output=True, text=True)
        counts = {"libegress": 0, "egressd": 0, "libuv": 0, "other": 0}
        # egressd's own close events take their id and time from the
        # library (egress_event_stamp, which the check never calls): that
        # is egressd's work, as it was when egressd stamped them itself.
        # egress_event_stamp ends in a tail call, so its frame may be gone:
        # a stamp entered straight from egressd is one too (the check's
        # stamp is always entered from the check's own frames).
        counts["close_stamps"] = 0  # of counts["egressd"]
        check_funcs = {}  # innermost libegress function of the check's samples
        own = os.path.basename(a.egressd)

        def owner(dso):
            base = os.path.basename(dso.strip("()"))
            if base.startswith("libegress"):
                return "libegress"  # libegress.so and libegress-uv.so: the check and its adapter
            if base == own:
                return "egressd"
            if base.startswith("libuv"):
                return "libuv"
            return None  # libc, the kernel, c-ares, cJSON...: charged to whoever called them

        def flush(frames):
            if not frames:
                return
            for i, (sym, dso) in enumerate(frames):
                o = owner(dso)
                if o == "libegress":
                    run = list(itertools.takewhile(lambda f: owner(f[1]) == "libegress", frames[i:]))
                    caller = next((owner(d) for s, d in frames[i + len(run):] if owner(d)), None)
                    if caller == "egressd" and {s for s, _ in run} <= {"stamp", "egress_event_stamp"}:
                        counts["egressd"] += 1
                        counts["close_stamps"] += 1
                        return
                if o:
                    counts[o] += 1
                    if o == "libegress":
                        check_funcs[sym] = check_funcs.get(sym, 0) + 1
                    return
            counts["other"] += 1

        frames = []
        for line in script.stdout.splitlines():
            parts = line.split()
            if not parts:
                flush(frames)
                frames = []
            elif len(parts) >= 3:
                frames.append((" ".join(parts[1:-1]), parts[-1]))
        flush(frames)
        close_stamps = counts.pop("close_stamps")
        total = sum(counts.values())
        top = sorted(check_funcs.items(), key=lambda kv: -kv[1])[:8]
        # The attempt event written by the checker's sink (lib/sink.c) within
        # the check: a write(2) to the events file for every check.
        sink = sum(v for k, v in check_funcs.items() if k == "write_once" or k.startswith("egress__sink"))
        share = counts["libegress"] / total if total else None
        profile = {"samples": total, "by_owner": counts, "check_top_functions": dict(top),
                   "check_share": share, "close_event_stamps": close_stamps,
                   # normal approximation of the binomial: samples are the trials
                   "check_share_95": 1.96 * (share * (1 - share) / total) ** 0.5 if total else None,
                   "sink_share": sink / total if total else None}
        results["perf"] = profile
        if not total:
            # perf not allowed here (perf_event_paranoid, a container): say so, go on.
            print("note: perf recorded no samples of egressd: " + (script.stderr.strip()[-300:] or "no output"))
            profile = None

    # ---- the table -------------------------------------------------------------
    def fmt(v, spec):
        return "-" if v is None else format(v, spec)

    def spread(xs):
        """The reps' range, printed after a median ratio: the machine is shared."""
        return f" [{min(xs):.2f}-{max(xs):.2f}]" if len(xs) > 1 else ""

    def per_rep(fig, key, name):
        return [r[key] for r in fig[name]]

    rows = []
    d50 = per_rep(setup, "p50_us", "direct")
    added = {n: [p - d for p, d in zip(per_rep(setup, "p50_us", n), d50)] for n in setup_names}
    setup_ratios = [e / s for e, s in zip(added["egressd"], added["squid"]) if s > 0] if use_squid else []
    setup_ratio = med(setup_ratios)
    rows.append(["tunnel setup p50, us (CONNECT + GET)", fmt(med(d50), ".0f"),
                 fmt(med(per_rep(setup, "p50_us", "egressd")), ".0f") + f" (+{med(added['egressd']):.0f})",
                 (fmt(med(per_rep(setup, "p50_us", "squid")), ".0f") + f" (+{med(added['squid']):.0f})") if use_squid else "-",
                 "added " + fmt(setup_ratio, ".2f") + "x Squid's" + spread(setup_ratios), "<= 0.5x"])
    bare_ratios = [b / s for b, s in zip(added["bare"], added["squid"]) if s > 0] if use_squid else []
    rows.append(["  a bare relay: no check, no log (floor)", "",
                 fmt(med(per_rep(setup, "p50_us", "bare")), ".0f") + f" (+{med(added['bare']):.0f})", "",
                 ("added " + fmt(med(bare_ratios), ".2f") + "x Squid's" + spread(bare_ratios)) if use_squid else "", ""])
    results["setup_bare_vs_squid"] = med(bare_ratios)
    rps_ratios = [e["rps"] / s["rps"] for e, s in zip(rps["egressd"], rps["squid"])] if use_squid else []
    rps_ratio = med(rps_ratios)

    def conns_per_1k(name):
        return med([1000 * r["connections"] / r["responses"] for r in rps[name] if r["responses"]])

    rows.append([f"HTTP keep-alive GET/s, {RPS_CONNS} connections", fmt(med(per_rep(rps, "rps", "direct")), ".0f"),
                 fmt(med(per_rep(rps, "rps", "egressd")), ".0f"),
                 fmt(med(per_rep(rps, "rps", "squid")), ".0f") if use_squid else "-",
                 fmt(rps_ratio, ".2f") + "x Squid" + spread(rps_ratios), ">= 2x"])
    rows.append(["  connections per 1000 GETs", fmt(conns_per_1k("direct"), ".1f"), fmt(conns_per_1k("egressd"), ".1f"),
                 fmt(conns_per_1k("squid"), ".1f") if use_squid else "-", "", ""])
    if profile:
        rows.append(["  egressd CPU in libegress (perf)", "",
                     fmt(100 * profile["check_share"], ".1f") + f"% +-{100 * profile['check_share_95']:.1f}"
                     + f" (event write {100 * profile['sink_share']:.1f}%)",
                     "", "", "< 5%"])
    bulk_ratios = {n: [p["mib_per_s"] / d["mib_per_s"] for p, d in zip(bulk[n], bulk["direct"])]
                   for n in names + ["egressd-splice"]}
    bulk_ratio = {n: med(v) for n, v in bulk_ratios.items()}
    rows.append([f"tunnel throughput, MiB/s ({BULK_BYTES >> 20} MiB)", fmt(med(per_rep(bulk, "mib_per_s", "direct")), ".0f"),
                 fmt(med(per_rep(bulk, "mib_per_s", "egressd")), ".0f"),
                 fmt(med(per_rep(bulk, "mib_per_s", "squid")), ".0f") if use_squid else "-",
                 fmt(bulk_ratio["egressd"], ".2f") + "x direct" + spread(bulk_ratios["egressd"]) +
                 (f" (Squid {bulk_ratio['squid']:.2f}x)" if use_squid else ""), ">= 0.7x"])
    rows.append(["  egressd --relay splice, MiB/s", "", fmt(med(per_rep(bulk, "mib_per_s", "egressd-splice")), ".0f"), "",
                 fmt(bulk_ratio["egressd-splice"], ".2f") + "x direct" + spread(bulk_ratios["egressd-splice"]), ""])
    # What the transfer costs in CPU, per GiB, and what that allows here:
    # the proxied transfer cannot finish before its processes' CPU time is
    # spread over this machine's CPUs, nor before its busiest process is done.
    gib = BULK_BYTES / (1 << 30)

    def cpu_per_gib(name):
        return {k: med([r[k + "_cpu_s"] / gib for r in bulk[name]]) for k in ("sender", "proxy", "receiver")}

    def cpu_text(name):
        c = cpu_per_gib(name)
        return "+".join(f"{c[k]:.2f}" for k in ("sender", "proxy", "receiver") if name != "direct" or k != "proxy")

    direct_s = med([r["seconds"] for r in bulk["direct"]])
    eg_cpu = cpu_per_gib("egressd")
    floor_s = max(sum(eg_cpu.values()) * gib / (os.cpu_count() or 1), max(eg_cpu.values()) * gib)
    ceiling = direct_s / floor_s if floor_s > 0 else None
    rows.append(["  CPU-s per GiB: sender+(proxy+)receiver", cpu_text("direct"), cpu_text("egressd"),
                 cpu_text("squid") if use_squid else "-",
                 f"CPU-bound ceiling on {os.cpu_count()} CPUs: {fmt(ceiling, '.2f')}x", ""])
    rows.append(["  CPU-s per GiB, --relay splice", "", cpu_text("egressd-splice"), "", "", ""])
    results["bulk_ceiling_vs_direct"] = ceiling
    rows.append([f"memory per idle tunnel, KiB ({idle['egressd']['tunnels']} tunnels)", "",
                 fmt(idle["egressd"]["kib_per_tunnel"], ".1f"),
                 fmt(idle["squid"]["kib_per_tunnel"], ".1f") if use_squid else "-",
                 fmt(idle["egressd"]["kib_per_tunnel"] / idle["squid"]["kib_per_tunnel"], ".2f") + "x Squid"
                 if use_squid and idle["squid"]["kib_per_tunnel"] else "", "<= 16 KiB"])
    results["ratios"] = {"setup_added_vs_squid": setup_ratio, "rps_vs_squid": rps_ratio,
                         "bulk_vs_direct": bulk_ratio}

    head = ["figure", "direct", "egressd", "squid" if use_squid else "squid (not run)", "egressd ratio", "target"]
    widths = [max(len(str(r[i])) for r in rows + [head]) for i in range(len(head))]
    print(f"egressd vs Squid, median of {reps} rep(s), [the reps' range]" + (" (--quick)" if quick else "")
          + f"; load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs")
    print("| " + " | ".join(h.ljust(w) for h, w in zip(head, widths)) + " |")
    print("|" + "|".join("-" * (w + 2) for w in widths) + "|")
    for r in rows:
        print("| " + " | ".join(str(c).ljust(w) for c, w in zip(r, widths)) + " |")
    if profile:
        c, t = profile["by_owner"], profile["samples"] or 1
        print(f"perf: {t} samples of egressd under the GET load, by the innermost frame in libegress, egressd or"
              f" libuv (kernel and library time charged to its caller): libegress {100 * c['libegress'] / t:.1f}%,"
              f" egressd {100 * c['egressd'] / t:.1f}%, libuv {100 * c['libuv'] / t:.1f}%,"
              f" unattributed {100 * c['other'] / t:.1f}%; egressd's close events stamped by the library"
              f" (egress_event_stamp, in egressd's share) {100 * profile['close_event_stamps'] / t:.1f}%")
        print("  libegress: " + ", ".join(f"{k} {100 * v / t:.1f}%" for k, v in profile["check_top_functions"].items()))
    fails = {}
    for n in names:
        fails[n] = sum(r["errors"] for r in rps[n]) + idle[n]["failed"]
        if fails[n]:
            print(f"note: {n}: {fails[n]} failed requests or tunnels (see the JSON)")
    if a.json:
        with open(a.json, "w") as f:
            json.dump(results, f, indent=1)
        print(f"raw numbers: {a.json}")
    # egressd is what is measured: a request it failed makes the run fail
    # (Squid's are only noted).
    status = 1 if fails["egressd"] else 0
finally:
    for p in reversed(children):
        if p.stdin:
            try:
                p.stdin.close()
            except OSError:
                pass
        stop(p)
    shutil.rmtree(tmp, ignore_errors=True)
sys.exit(status)
