'use strict';
// On-demand benchmark of the Node binding (not a test):
//   EGRESS_NODE_ADDON=build/.../egress_node.node node bindings/node/bench/bench.js [--quick]
// checkSync on a cached name and on an IP literal against a plain-JS
// linear-scan allowlist check over the same rules (exact names, *. wildcards,
// CIDRs), at 10 and 10 000 rules; then check() Promise throughput on Node's
// loop: cached names and literals (checkSync in a loop as the reference),
// and uncached names behind a 2 ms DNS delay at 1000 in flight, against the
// thread-pool design it replaced (blocking checkSync in a pool of 4 worker
// threads, libuv's default pool size).  The DNS figures need the loopback
// responder: EGRESS_TEST_DNS, else <build>/tests/dns/egress-test-dns next to
// EGRESS_NODE_ADDON's build.
const { spawn } = require('node:child_process');
const fs = require('node:fs');
const os = require('node:os');
const path = require('node:path');
const { Worker, isMainThread, parentPort, workerData } = require('node:worker_threads');
const { Checker } = require('..');

const quick = process.argv.includes('--quick');
const REPS = quick ? 3 : 7;
const TARGET_MS = quick ? 100 : 300;

// Rules by position mod 4: exact name, CIDR, *. wildcard, exact name.
function makeRules(n) {
  const rules = [];
  for (let i = 0; i < n; i++) {
    switch (i % 4) {
      case 0: case 3: rules.push(`host${i}.example.com`); break;
      case 1: rules.push(`11.${(i >> 8) & 255}.${i & 255}.1/32`); break;
      default: rules.push(`*.zone${i}.example.com`);
    }
  }
  return rules;
}

// The plain-JS baseline: what a service might write by hand.
function compileNaive(rules) {
  return rules.map((r) => {
    if (r.startsWith('*.')) return { kind: 'wild', suffix: r.slice(1) };
    const m = /^(\d+)\.(\d+)\.(\d+)\.(\d+)\/(\d+)$/.exec(r);
    if (m) {
      const ip = ((+m[1] << 24) | (+m[2] << 16) | (+m[3] << 8) | +m[4]) >>> 0;
      const bits = +m[5];
      const mask = bits === 0 ? 0 : (~0 << (32 - bits)) >>> 0;
      return { kind: 'cidr', ip: (ip & mask) >>> 0, mask };
    }
    return { kind: 'exact', name: r };
  });
}
function parseV4(h) {
  const p = h.split('.');
  if (p.length !== 4) return -1;
  let v = 0;
  for (const x of p) {
    if (!/^\d{1,3}$/.test(x) || +x > 255) return -1;
    v = v * 256 + +x;
  }
  return v >>> 0;
}
function naiveAllowed(rules, host, port) {
  if (port < 1 || port > 65535) return false;
  const h = host.toLowerCase();
  const ip = parseV4(h);
  for (const r of rules) {
    if (ip >= 0) {
      if (r.kind === 'cidr' && ((ip & r.mask) >>> 0) === r.ip) return true;
    } else if (r.kind === 'exact') {
      if (r.name === h) return true;
    } else if (r.kind === 'wild') {
      if (h.endsWith(r.suffix) && h.indexOf('.') === h.length - r.suffix.length) return true;
    }
  }
  return false;
}

function nsPerCall(fn) {
  // Calibrate, then take the median of REPS timed runs.
  let n = 1000;
  for (;;) {
    const t = process.hrtime.bigint();
    for (let i = 0; i < n; i++) fn(i);
    const ms = Number(process.hrtime.bigint() - t) / 1e6;
    if (ms > TARGET_MS / 4) break;
    n *= 4;
  }
  const reps = [];
  for (let r = 0; r < REPS; r++) {
    const t = process.hrtime.bigint();
    for (let i = 0; i < n; i++) fn(i);
    reps.push(Number(process.hrtime.bigint() - t) / n);
  }
  reps.sort((a, b) => a - b);
  return reps[reps.length >> 1];
}

async function main() {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'egress-bench-'));
  const hosts = path.join(dir, 'hosts');
  const rows = [];
  for (const n of [10, 10000]) {
    const rules = makeRules(n);
    // Targets near the end of the list: the naive scan's worst realistic case.
    let exact = rules.length - 1;
    while (rules[exact].startsWith('*.') || /\//.test(rules[exact])) exact--;
    let cidr = rules.length - 1;
    while (!/\//.test(rules[cidr])) cidr--;
    const name = rules[exact];
    const literal = rules[cidr].replace(/\/32$/, '');
    fs.writeFileSync(hosts, `93.184.216.34 ${name}\n`);
    const c = new Checker({ policy: { egressAllowlist: rules.map((r) => (/\//.test(r) ? `${r}:443` : r)) }, hostsFile: hosts });
    const naive = compileNaive(rules);
    if (c.checkSync(name, 443).verdict !== 'allow' || c.checkSync(literal, 443).verdict !== 'allow')
      throw new Error('bench targets must be allowed');
    if (!naiveAllowed(naive, name, 443) || !naiveAllowed(naive, literal, 443)) throw new Error('naive check broken');
    let sink = 0;
    const libName = nsPerCall(() => { sink += c.checkSync(name, 443).port; });
    const jsName = nsPerCall(() => { sink += naiveAllowed(naive, name, 443) ? 1 : 0; });
    const libLit = nsPerCall(() => { sink += c.checkSync(literal, 443).port; });
    const jsLit = nsPerCall(() => { sink += naiveAllowed(naive, literal, 443) ? 1 : 0; });
    rows.push([`checkSync cached name, ${n} rules`, libName, jsName]);
    rows.push([`checkSync IP literal, ${n} rules`, libLit, jsLit]);
    if (sink === 42) console.log('');
    c.close();
  }

  // check() throughput on the loop: batches of concurrent promises.
  fs.writeFileSync(hosts, '93.184.216.34 api.example.com\n');
  const c = new Checker({ policy: { egressAllowlist: ['api.example.com', '203.0.113.0/24'] }, hostsFile: hosts });
  await c.check('api.example.com', 443);
  const rates = [];
  for (const [what, host] of [['cached name', 'api.example.com'], ['IP literal', '203.0.113.7']]) {
    const batch = 1000;
    const rounds = quick ? 20 : 100;
    const perSec = [];
    for (let rep = 0; rep < REPS; rep++) {
      const t = process.hrtime.bigint();
      for (let r = 0; r < rounds; r++) {
        const ps = [];
        for (let i = 0; i < batch; i++) ps.push(c.check(host, 443));
        await Promise.all(ps);
      }
      perSec.push((batch * rounds * 1e9) / Number(process.hrtime.bigint() - t));
    }
    perSec.sort((a, b) => a - b);
    let sink = 0;
    const syncNs = nsPerCall(() => { sink += c.checkSync(host, 443).port; });
    if (sink === 42) console.log('');
    rates.push([what, perSec[perSec.length >> 1], 1e9 / syncNs]);
  }
  c.close();

  const dnsRows = await uncachedFigures();

  const pad = (s, w) => String(s).padEnd(w);
  console.log(`libegress Node binding benchmark (node ${process.version}, ${os.cpus().length} CPUs, median of ${REPS})`);
  console.log(pad('figure', 38) + pad('binding ns/call', 17) + pad('plain JS ns/call', 18) + 'binding / JS');
  for (const [f, lib, js] of rows)
    console.log(pad(f, 38) + pad(lib.toFixed(0), 17) + pad(js.toFixed(0), 18) + (lib / js).toFixed(2) + 'x');
  for (const [what, rate, sync] of rates)
    console.log(`check() on the loop, ${what}: ${(rate / 1000).toFixed(0)} k checks/s, batches of 1000 ` +
      `(checkSync in a loop: ${(sync / 1000).toFixed(0)} k/s)`);
  if (dnsRows) {
    const [loop, pool, failed, done] = dnsRows;
    console.log(`uncached names, DNS answers after 2 ms, ${WINDOW} in flight: check() on the loop ${loop.toFixed(0)} allowed/s` +
      ` (${failed} of ${done} timed out); thread-pool design (blocking checkSync, 4 worker threads) ${pool.toFixed(0)} checks/s:` +
      ` ${(loop / pool).toFixed(1)}x`);
  } else {
    console.log('uncached names: skipped (no DNS responder: set EGRESS_TEST_DNS)');
  }
  console.log('targets: checkSync cached name < 1000 ns at 10000 rules; <= 3x plain JS at 10 rules; ' +
    'check() >= 500 k/s cached and literal; uncached >= 10x the thread-pool design');
}

const NAMES = 5000;
// Checks in flight.  A burst of this many answers can overrun a UDP socket's
// receive buffer (net.core.rmem_default): the dropped ones time out.
const WINDOW = Number(process.env.EGRESS_BENCH_WINDOW || 1000);
const nameOf = (i) => `n${i % NAMES}.bench.test`;

function startResponder() {
  let exe = process.env.EGRESS_TEST_DNS;
  if (!exe && process.env.EGRESS_NODE_ADDON)
    exe = path.resolve(path.dirname(process.env.EGRESS_NODE_ADDON), '..', '..', 'tests', 'dns', 'egress-test-dns');
  if (!exe || !fs.existsSync(exe)) return Promise.resolve(null);
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'egress-bench-dns-'));
  let zone = '';
  for (let i = 0; i < NAMES; i++) zone += `${nameOf(i)} A 93.184.${(i >> 8) & 255}.${i & 255}\n${nameOf(i)} DELAY 2\n`;
  fs.writeFileSync(path.join(dir, 'zone'), zone);
  const child = spawn(exe, ['--zone', path.join(dir, 'zone'), '--stdin-lifeline'], { stdio: ['pipe', 'pipe', 'ignore'] });
  return new Promise((resolve, reject) => {
    child.on('error', reject);
    child.stdout.once('data', (line) => resolve({ server: `127.0.0.1:${/PORT (\d+)/.exec(String(line))[1]}`, stop: () => child.stdin.end() }));
  });
}

// No cache: every check asks the responder, which answers after 2 ms.
const uncachedOptions = (server) => ({
  policy: { egressAllowlist: ['*.bench.test'] },
  dnsServers: [server],
  cache: { maxEntries: 0 },
  timeoutMs: 10000,
});

async function uncachedFigures() {
  const dns = await startResponder();
  if (!dns) return null;
  const seconds = quick ? 1 : 3;
  // check() on the loop: a window of 1000 checks in flight, distinct names.
  const c = new Checker(uncachedOptions(dns.server));
  let done = 0, next = 0, failed = 0;
  const end = Date.now() + seconds * 1000;
  await new Promise((resolve) => {
    let running = 0;
    const one = () => {
      running++;
      c.check(nameOf(next++), 443).then((d) => {
        // A lookup that timed out: its datagrams were dropped (see below).
        if (d.verdict !== 'allow') failed++;
        done++;
        running--;
        if (Date.now() < end) one();
        else if (running === 0) resolve();
      });
    };
    for (let i = 0; i < WINDOW; i++) one();
  });
  const loopRate = (done - failed) / seconds;
  c.close();
  // The design it replaced: each check blocking one of 4 pool threads.
  const counts = await Promise.all(Array.from({ length: 4 }, (_, k) => new Promise((resolve, reject) => {
    const w = new Worker(__filename, { workerData: { server: dns.server, seconds, first: k * 1000 } });
    w.once('message', resolve);
    w.once('error', reject);
  })));
  dns.stop();
  return [loopRate, counts.reduce((a, b) => a + b, 0) / seconds, failed, done];
}

function poolWorker() {
  const c = new Checker(uncachedOptions(workerData.server));
  const end = Date.now() + workerData.seconds * 1000;
  let n = 0;
  while (Date.now() < end) {
    if (c.checkSync(nameOf(workerData.first + n), 443).verdict !== 'allow') throw new Error('bench name denied');
    n++;
  }
  c.close();
  parentPort.postMessage(n);
}

if (!isMainThread) {
  poolWorker();
  return;
}

main().catch((e) => {
  console.error(e);
  process.exit(1);
});
