'use strict';
// check() and checkUrl() on Node's own event loop: no thread pool, close()
// cancelling what is in flight, events before promises, one query per name.
const test = require('node:test');
const assert = require('node:assert/strict');
const { spawnSync } = require('node:child_process');
const path = require('node:path');
const { egress, startDns } = require('./helpers');
const { Checker } = egress;

const ZONE = `
api.test A 93.184.216.34
slow.test A 93.184.216.35
slow.test DELAY 400
share.test A 93.184.216.37
share.test DELAY 200
`;
const POLICY = { egressAllowlist: ['api.test', 'slow.test', 'share.test', '203.0.113.0/24'] };

let dns;
test.before(async () => {
  dns = await startDns(ZONE, { counts: true });
});
test.after(() => dns && dns.stop());

function checker(t, extra) {
  if (!dns) {
    t.skip('EGRESS_TEST_DNS not set: loopback DNS responder not built');
    return null;
  }
  return new Checker(Object.assign({ policy: POLICY, dnsServers: [dns.server], timeoutMs: 5000 }, extra));
}

const tick = (ms) => new Promise((r) => setTimeout(r, ms));

test('close() with 1000 checks in flight: each rejects once with EGRESS_CLOSED, nothing after', async (t) => {
  const events = [];
  const c = checker(t, { cache: { maxEntries: 0 }, onEvent: (e) => events.push(e) });
  if (!c) return;
  const n = 1000;
  const settled = new Array(n).fill(0);
  const errors = [];
  let resolved = 0;
  const ps = [];
  for (let i = 0; i < n; i++) {
    const p = i % 2 ? c.check('slow.test', 443) : c.checkUrl('https://slow.test/x');
    ps.push(
      p.then(
        () => {
          settled[i]++;
          resolved++;
        },
        (e) => {
          settled[i]++;
          errors[i] = e;
        },
      ),
    );
  }
  await tick(20); // the queries are out: the checks wait on DNS
  assert.equal(events.length, 0, 'no check decided before close()');
  c.close();
  // Every check's deny event reached onEvent inside close(), none after.
  assert.equal(events.length, n);
  for (const e of events) assert.equal(e.data.denyReason, 'internal_error');
  await Promise.all(ps);
  assert.equal(resolved, 0);
  for (let i = 0; i < n; i++) {
    assert.equal(settled[i], 1, `#${i} settled ${settled[i]} times`);
    assert.equal(errors[i].code, 'EGRESS_CLOSED', `#${i}`);
    assert.equal(errors[i].message, 'checker closed while the check was in flight');
  }
  await tick(600); // past the responder's delay: no late answer reaches JS
  assert.equal(events.length, n);
  assert.ok(settled.every((k) => k === 1));
  await assert.rejects(c.check('203.0.113.1', 443), { code: 'EGRESS_CLOSED' });
  await assert.rejects(c.checkUrl('https://api.test/'), { code: 'EGRESS_CLOSED' });
});

test("a check's event reaches onEvent before its promise resolves (literal, cached, DNS, URL)", async (t) => {
  const seen = new Set();
  const c = checker(t, { onEvent: (e) => seen.add(e.id) });
  if (!c) return;
  c.checkSync('api.test', 443); // cached from here on
  const cases = [
    () => c.check('203.0.113.5', 443),
    () => c.check('api.test', 443),
    () => c.check('slow.test', 443),
    () => c.check('evil.test', 443),
    () => c.checkUrl('https://api.test/a'),
  ];
  for (const start of cases) {
    const ids = await Promise.all(
      Array.from({ length: 20 }, () =>
        start().then((d) => {
          assert.ok(seen.has(d.event.id), `event ${d.event.id} (${d.host}) not delivered before the decision`);
          return d.event.id;
        }),
      ),
    );
    assert.equal(new Set(ids).size, ids.length);
  }
  c.close();
});

test('concurrent checks of one uncached name share one query', async (t) => {
  const c = checker(t);
  if (!c) return;
  const before = c.stats().dnsQueries;
  const ds = await Promise.all(Array.from({ length: 500 }, (_, i) => c.check('share.test', 443)));
  for (const d of ds) assert.deepEqual([d.verdict, d.addresses.map((a) => a.address)], ['allow', ['93.184.216.37']]);
  const queries = c.stats().dnsQueries - before;
  assert.ok(queries >= 1 && queries <= 2, `${queries} queries for 500 checks of one name`);
  c.close();
  // The responder saw one A and at most one AAAA question for it.
  const counts = await dns.counts();
  dns = null;
  assert.ok(counts['share.test'], JSON.stringify(counts));
  assert.equal(counts['share.test'].A, 1, JSON.stringify(counts['share.test']));
  assert.ok(counts['share.test'].AAAA <= 1, JSON.stringify(counts['share.test']));
});

test('check() needs no thread pool: it completes while the only pool thread is busy', (t) => {
  if (!process.env.EGRESS_TEST_DNS) return t.skip('EGRESS_TEST_DNS not set');
  // A child with one pool thread, held by a pbkdf2 of about two seconds:
  // literals, cached names and a name answered by DNS all decide meanwhile.
  const script = `
    const crypto = require('node:crypto');
    const { Checker } = require(${JSON.stringify(path.resolve(__dirname, '..'))});
    const { spawn } = require('node:child_process');
    const fs = require('node:fs'), os = require('node:os'), path = require('node:path');
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'egress-pool-'));
    fs.writeFileSync(path.join(dir, 'zone'), 'api.test A 93.184.216.34\\nlate.test A 93.184.216.38\\n');
    const dns = spawn(process.env.EGRESS_TEST_DNS, ['--zone', path.join(dir, 'zone'), '--stdin-lifeline'], { stdio: ['pipe', 'pipe', 'inherit'] });
    dns.stdout.once('data', async (line) => {
      const server = '127.0.0.1:' + /PORT (\\d+)/.exec(String(line))[1];
      const c = new Checker({ policy: { egressAllowlist: ['api.test', 'late.test', '203.0.113.0/24'] }, dnsServers: [server] });
      c.checkSync('api.test', 443);
      let poolDone = false;
      const t0 = Date.now();
      crypto.pbkdf2('x', 'y', 3e6, 32, 'sha256', () => { poolDone = true; });
      await new Promise((r) => setTimeout(r, 50));
      const ds = await Promise.all([c.check('203.0.113.1', 443), c.check('api.test', 443), c.check('late.test', 443),
                                    c.checkUrl('https://api.test/')]);
      const out = { verdicts: ds.map((d) => d.verdict), poolDone, ms: Date.now() - t0 };
      c.close();
      dns.stdin.end();
      await new Promise((r) => { const iv = setInterval(() => { if (poolDone) { clearInterval(iv); r(); } }, 10); });
      out.poolMs = Date.now() - t0;
      console.log(JSON.stringify(out));
    });`;
  const r = spawnSync(process.execPath, ['-e', script], {
    env: Object.assign({}, process.env, { UV_THREADPOOL_SIZE: '1' }),
    encoding: 'utf8',
    timeout: 60000,
  });
  assert.equal(r.status, 0, r.stderr);
  const out = JSON.parse(r.stdout.trim().split('\n').pop());
  assert.deepEqual(out.verdicts, ['allow', 'allow', 'allow', 'allow']);
  assert.equal(out.poolDone, false, `the pool finished first (${out.poolMs} ms): the test proves nothing`);
});

test('a process exits cleanly with checks in flight', (t) => {
  if (!process.env.EGRESS_TEST_DNS) return t.skip('EGRESS_TEST_DNS not set');
  // DNS that never answers (a port nobody serves): the checks are pending when
  // the process exits, from process.exit() and from a worker's termination.
  const script = `
    const { Checker } = require(${JSON.stringify(path.resolve(__dirname, '..'))});
    const { Worker, isMainThread } = require('node:worker_threads');
    const c = new Checker({ policy: { egressAllowlist: ['never.test'] }, dnsServers: ['127.0.0.1:9'], timeoutMs: 60000 });
    for (let i = 0; i < 100; i++) c.check('never.test', 443).catch(() => {});
    if (isMainThread) {
      const w = new Worker(__filename);
      setTimeout(() => w.terminate().then(() => { console.log('ok'); process.exit(0); }), 200);
    }`;
  const dir = require('./helpers').tmpdir();
  const file = path.join(dir, 'exit.js');
  require('node:fs').writeFileSync(file, script);
  const r = spawnSync(process.execPath, [file], { encoding: 'utf8', timeout: 30000 });
  assert.equal(r.status, 0, r.stderr);
  assert.equal(r.stdout.trim(), 'ok');
});

test('check(): the event is parsed on first read, equal to the one onEvent got, kept by JSON.stringify', async () => {
  const seen = [];
  const c = new Checker({ policy: POLICY, onEvent: (e) => seen.push(e) });
  try {
    // A context id holding the very text the method is found by.
    const ctx = { method: 'GET', runId: ',"method":"POST"', correlationId: 'q"\\"x' };
    const d = await c.checkUrl('http://203.0.113.7:8081/x', ctx);
    assert.equal(seen.length, 1);
    assert.deepEqual(d.event, seen[0]);
    assert.equal(d.event, d.event, 'parsed once');
    assert.equal(d.event.data.method, 'GET');
    assert.equal(d.event.data.runId, ctx.runId);
    assert.deepEqual(JSON.parse(JSON.stringify(d)).event, seen[0]);
    // The held decision is for a GET: a POST with it is refused before
    // anything is sent, however the context ids were spelled.
    await assert.rejects(c.fetch('http://203.0.113.7:8081/x', { method: 'POST', egress: { decision: d }, signal: AbortSignal.timeout(3000) }),
      (e) => {
        const why = e.cause || e; // fetch wraps what its dispatcher threw
        return why.code === 'ERR_INVALID_ARG_VALUE' && /GET/.test(why.message);
      });
    const lit = await c.check('203.0.113.8', 443);
    assert.equal(lit.event.data.method, null);
    assert.equal(lit.event.subject, '203.0.113.8:443');
  } finally {
    c.close();
  }
});
