'use strict';
// One decision per request, every request: the undici dispatcher, the
// http/https agents, egress.install() (plain fetch and http.get), held
// decisions (checker.connect(decision), the helpers' decision options),
// request context (options, x-egress-* headers, AsyncLocalStorage, the
// registration's defaults), the error classes and the event order.
//
// Loopback HTTP/1.1 servers on 127.0.0.1 and 127.0.0.2 (one port number);
// names from the loopback DNS responder (EGRESS_TEST_DNS), whose answers
// change for the flip*.test names (first 127.0.0.1, then 127.0.0.2); the
// policy opens 127.0.0.0/8 on the servers' port.
const test = require('node:test');
const assert = require('node:assert/strict');
const http = require('node:http');
const https = require('node:https');
const net = require('node:net');
const tls = require('node:tls');
const { egress, startDns, tmpdir, writeFile, waitFor } = require('./helpers');
const { Checker, EgressError, EgressPolicyError, EgressDeniedError, EgressUnavailableError } = egress;

let undici = null;
try {
  undici = require('undici');
} catch {
  undici = null;
}
const needUndici = !undici && 'undici not installed (npm ci)';

const GLOBAL_DISPATCHER = Symbol.for('undici.globalDispatcher.1');
const FLIPS = ['flip1.test', 'flip2.test', 'flip3.test', 'flip4.test'];
const ZONE = [
  'api.test A 127.0.0.1',
  'other.test A 127.0.0.1',
  'broken.test RCODE SERVFAIL',
  ...FLIPS.flatMap((n) => [`${n} SEQUENCE A 127.0.0.1 | A 127.0.0.2`, `${n} STICKY`]),
  '',
].join('\n');

let dns = null;
let port = 0;
let one = null; // 127.0.0.1
let two = null; // 127.0.0.2

function serve(host, listenPort) {
  const s = { requests: [], connections: 0, closed: 0, server: null, port: 0 };
  s.server = http.createServer((req, res) => {
    s.requests.push({ url: req.url, method: req.method, headers: req.headers });
    if (req.url.startsWith('/redirect')) {
      res.writeHead(302, { location: '/target' });
      res.end();
      return;
    }
    res.end(`hello from ${host}`);
  });
  s.server.keepAliveTimeout = 30000;
  s.server.on('connection', (sock) => {
    s.connections++;
    sock.on('close', () => s.closed++);
  });
  return new Promise((resolve, reject) => {
    s.server.once('error', reject);
    s.server.listen(listenPort, host, () => {
      s.port = s.server.address().port;
      resolve(s);
    });
  });
}

test.before(async () => {
  dns = await startDns(ZONE);
  one = await serve('127.0.0.1', 0);
  port = one.port;
  two = await serve('127.0.0.2', port);
});
test.after(() => {
  if (dns) dns.stop();
  one.server.closeAllConnections();
  two.server.closeAllConnections();
  one.server.close();
  two.server.close();
});

function policy(extra) {
  return { egressAllowlist: [`127.0.0.0/8:${port}`, `api.test:${port}`, `broken.test:${port}`, ...FLIPS.map((n) => `${n}:${port}`), ...(extra || [])] };
}

function setup(t, extra) {
  if (!dns) {
    if (process.env.EGRESS_TEST_NO_SKIP === '1') assert.fail('EGRESS_TEST_DNS: the loopback DNS responder is needed');
    t.skip('EGRESS_TEST_DNS not set: loopback DNS responder not built');
    return null;
  }
  const events = [];
  const c = new Checker(Object.assign({
    policy: policy(),
    dnsServers: [dns.server],
    cache: { maxEntries: 0 },
    onEvent: (e) => events.push(e),
  }, extra));
  return { c, events };
}

function counts() {
  return { r1: one.requests.length, c1: one.connections, x1: one.closed, r2: two.requests.length, c2: two.connections };
}

// Let refusals' events (checkSync: queued) arrive.
const settle = () => new Promise((r) => setTimeout(r, 40));

function get(mod, url, options) {
  return new Promise((resolve, reject) => {
    mod.get(url, options || {}, (res) => {
      let body = '';
      res.on('data', (c) => (body += c));
      res.on('end', () => resolve({ status: res.statusCode, body }));
    }).on('error', reject);
  });
}

async function body(p) {
  const r = await p;
  return typeof r.text === 'function' ? r.text() : r.body.text();
}

function cause(e) {
  return e instanceof EgressError || e instanceof TypeError && e.code ? e : e && e.cause ? e.cause : e;
}

function deniedWith(reason) {
  return (e) => {
    const err = cause(e);
    assert.ok(err instanceof EgressDeniedError, `expected EgressDeniedError, got ${err && err.stack}`);
    assert.equal(err.reason, reason);
    assert.equal(err.decision.reason, reason);
    return true;
  };
}

function refusedArg(e) {
  const err = cause(e);
  assert.ok(err instanceof TypeError, `expected TypeError, got ${err && err.stack}`);
  return true;
}

function noEgressHeaders(req) {
  assert.deepEqual(Object.keys(req.headers).filter((h) => h.startsWith('x-egress-')), [], 'x-egress-* headers are stripped');
}

test('undici dispatcher: each request checked; a swap closes the kept-alive connection and refuses the next', { skip: needUndici }, async (t) => {
  const s = setup(t);
  if (!s) return;
  const { c, events } = s;
  const d = c.undiciDispatcher();
  const before = counts();
  assert.equal(await body(undici.request(`http://api.test:${port}/one`, { dispatcher: d, egress: { runId: 'run-1', correlationId: 'c-1' } })), 'hello from 127.0.0.1');
  assert.equal(await body(fetch(`http://api.test:${port}/two?q=1`, { dispatcher: d, headers: { 'x-egress-run-id': 'run-2', 'X-Egress-AgentId': 'agent-2' } })), 'hello from 127.0.0.1');
  const mid = counts();
  assert.equal(mid.r1 - before.r1, 2, 'two requests upstream');
  assert.equal(mid.c1 - before.c1, 1, 'over one kept-alive connection');
  one.requests.slice(-2).forEach(noEgressHeaders);
  assert.equal(events.length, 2, 'one event per request');
  assert.deepEqual(events.map((e) => [e.data.outcome, e.data.method, e.data.url, e.data.runId]), [
    ['allowed', 'GET', `http://api.test:${port}/one`, 'run-1'],
    ['allowed', 'GET', `http://api.test:${port}/two?q=1`, 'run-2'],
  ]);
  assert.equal(events[0].data.correlationId, 'c-1');
  assert.equal(events[1].data.agentId, 'agent-2');

  c.setPolicy({ egressAllowlist: [] });
  await waitFor(() => one.closed - before.x1 >= 1, 3000, 'the idle connection closed on the swap');
  await assert.rejects(undici.request(`http://api.test:${port}/three`, { dispatcher: d, egress: { runId: 'run-3' } }), deniedWith('empty_allowlist'));
  await assert.rejects(fetch(`http://api.test:${port}/four`, { dispatcher: d }), deniedWith('empty_allowlist'));
  await settle();
  assert.equal(counts().r1, mid.r1, 'no upstream request after the swap');
  assert.equal(counts().c1, mid.c1, 'no upstream connection after the swap');
  assert.equal(events.length, 4, 'one deny event per refused request');
  assert.deepEqual(events.slice(2).map((e) => [e.data.outcome, e.data.denyReason, e.data.runId]), [
    ['denied', 'empty_allowlist', 'run-3'],
    ['denied', 'empty_allowlist', null],
  ]);
  await d.close();
  c.close();
});

test('http agent: each request checked; a swap closes the kept-alive socket and refuses the next', async (t) => {
  const s = setup(t);
  if (!s) return;
  const { c, events } = s;
  const agent = c.httpAgent({ keepAlive: true });
  const before = counts();
  assert.deepEqual(await get(http, `http://api.test:${port}/a`, { agent, egress: { runId: 'run-a' } }), { status: 200, body: 'hello from 127.0.0.1' });
  assert.deepEqual(await get(http, `http://api.test:${port}/b`, { agent, headers: { 'X-Egress-Run-Id': 'run-b', 'x-egress-workspace-id': 'ws-b' } }), { status: 200, body: 'hello from 127.0.0.1' });
  assert.equal(counts().r1 - before.r1, 2);
  assert.equal(counts().c1 - before.c1, 1, 'the second request reused the kept-alive socket');
  one.requests.slice(-2).forEach(noEgressHeaders);
  assert.deepEqual(events.map((e) => [e.data.outcome, e.data.method, e.data.url, e.data.runId]), [
    ['allowed', 'GET', `http://api.test:${port}/a`, 'run-a'],
    ['allowed', 'GET', `http://api.test:${port}/b`, 'run-b'],
  ]);
  assert.equal(events[1].data.workspaceId, 'ws-b');

  c.setPolicy({ egressAllowlist: [] });
  await waitFor(() => one.closed - before.x1 >= 1, 3000, 'the free socket closed on the swap');
  const mid = counts();
  await assert.rejects(get(http, `http://api.test:${port}/c`, { agent, egress: { runId: 'run-c' } }), deniedWith('empty_allowlist'));
  await assert.rejects(get(http, `http://127.0.0.1:${port}/d`, { agent }), deniedWith('empty_allowlist'));
  await settle();
  assert.equal(counts().r1, mid.r1, 'no upstream request');
  assert.equal(counts().c1, mid.c1, 'no upstream connection');
  assert.equal(events.length, 4);
  assert.deepEqual(events.slice(2).map((e) => [e.data.denyReason, e.data.runId, e.data.url]), [
    ['empty_allowlist', 'run-c', `http://api.test:${port}/c`],
    ['empty_allowlist', null, `http://127.0.0.1:${port}/d`],
  ]);
  agent.destroy();
  c.close();
});

test('a pooled connection serves only requests whose own decision vetted its address', async (t) => {
  const s = setup(t);
  if (!s) return;
  const { c, events } = s;
  // DNS moves flip*.test from 127.0.0.1 to 127.0.0.2 after the first answer.
  const cases = [['agent', FLIPS[0], (url) => get(http, url, { agent })]];
  const agent = c.httpAgent({ keepAlive: true });
  let d = null;
  if (undici) {
    d = c.undiciDispatcher();
    cases.push(['dispatcher', FLIPS[1], (url) => body(undici.request(url, { dispatcher: d }))]);
  }
  for (const [what, name, call] of cases) {
    const before = counts();
    await call(`http://${name}:${port}/first`);
    await call(`http://${name}:${port}/second`);
    const after = counts();
    assert.equal(after.r1 - before.r1, 1, `${what}: 127.0.0.1 served the first request only`);
    assert.equal(after.r2 - before.r2, 1, `${what}: the second went to the address its decision vetted`);
    assert.equal(two.requests[two.requests.length - 1].url, '/second');
  }
  assert.equal(events.length, 2 * cases.length, 'one event per request');
  assert.deepEqual(events.map((e) => e.data.addresses.map((a) => a.address)),
    cases.flatMap(() => [['127.0.0.1'], ['127.0.0.2']]));
  agent.destroy();
  if (d) await d.close();
  c.close();
});

test('redirects: every hop is a request of its own, with the first one\'s context', { skip: needUndici }, async (t) => {
  const s = setup(t);
  if (!s) return;
  const { c, events } = s;
  const d = c.undiciDispatcher();
  assert.equal(await body(fetch(`http://api.test:${port}/redirect`, { dispatcher: d, headers: { 'x-egress-run-id': 'run-r' } })), 'hello from 127.0.0.1');
  assert.equal(await body(undici.request(`http://api.test:${port}/redirect2`, { dispatcher: d, maxRedirections: 2, egress: { runId: 'run-u' } })), 'hello from 127.0.0.1');
  assert.deepEqual(events.map((e) => [e.data.url, e.data.runId]), [
    [`http://api.test:${port}/redirect`, 'run-r'],
    [`http://api.test:${port}/target`, 'run-r'],
    [`http://api.test:${port}/redirect2`, 'run-u'],
    [`http://api.test:${port}/target`, 'run-u'],
  ]);
  await d.close();
  c.close();
});

test('egress.install: plain fetch and http.get checked per request with context; uninstall restores', async (t) => {
  const s = setup(t);
  if (!s) return;
  const { c, events } = s;
  void globalThis.Headers; // Node's fetch sets its global dispatcher when it loads
  const prev = { http: http.globalAgent, https: https.globalAgent, dispatcher: globalThis[GLOBAL_DISPATCHER] };
  const uninstall = egress.install(c);
  try {
    assert.equal(egress.install(c), uninstall, 'installing the same checker again is a no-op');
    const other = new Checker({ policy: { egressAllowlist: [] } });
    assert.throws(() => egress.install(other), (e) => e instanceof EgressError && e.code === 'EGRESS_INSTALLED');
    other.close();
    assert.notEqual(http.globalAgent, prev.http);
    assert.notEqual(globalThis[GLOBAL_DISPATCHER], prev.dispatcher);

    const before = counts();
    await egress.runWithContext({ runId: 'run-i', agentId: 'agent-i' }, async () => {
      assert.equal(await body(fetch(`http://api.test:${port}/f1`)), 'hello from 127.0.0.1');
      assert.equal(await body(fetch(`http://api.test:${port}/f2`)), 'hello from 127.0.0.1');
      assert.equal((await get(http, `http://api.test:${port}/h1`)).body, 'hello from 127.0.0.1');
      assert.equal((await get(http, `http://api.test:${port}/h2`, { headers: { 'x-egress-correlation-id': 'corr-h2' } })).body, 'hello from 127.0.0.1');
    });
    assert.equal(counts().r1 - before.r1, 4);
    assert.equal(counts().c1 - before.c1, 2, 'fetch and http.get each kept one connection alive');
    one.requests.slice(-4).forEach(noEgressHeaders);
    assert.deepEqual(events.map((e) => [e.data.url, e.data.runId, e.data.agentId]), ['f1', 'f2', 'h1', 'h2'].map((p) => [`http://api.test:${port}/${p}`, 'run-i', 'agent-i']));
    assert.equal(events[3].data.correlationId, 'corr-h2');

    c.setPolicy({ egressAllowlist: [] });
    const mid = counts();
    await c.withContext({ runId: 'run-j' }, async () => {
      await assert.rejects(fetch(`http://api.test:${port}/f3`), deniedWith('empty_allowlist'));
      await assert.rejects(get(http, `http://api.test:${port}/h3`), deniedWith('empty_allowlist'));
      await assert.rejects(get(https, `https://api.test:${port}/s3`), deniedWith('empty_allowlist'));
      await assert.rejects(get(http, `http://api.test:${port}/h4`, { agent: false }), deniedWith('empty_allowlist'));
    });
    await settle();
    assert.equal(counts().r1, mid.r1, 'no upstream request after the swap');
    assert.equal(counts().c1, mid.c1, 'no upstream connection after the swap');
    assert.deepEqual(events.slice(4).map((e) => [e.data.url, e.data.denyReason, e.data.runId]), [
      [`http://api.test:${port}/f3`, 'empty_allowlist', 'run-j'],
      [`http://api.test:${port}/h3`, 'empty_allowlist', 'run-j'],
      [`https://api.test:${port}/s3`, 'empty_allowlist', 'run-j'],
      [`http://api.test:${port}/h4`, 'empty_allowlist', 'run-j'],
    ]);
  } finally {
    uninstall();
  }
  uninstall();
  assert.equal(http.globalAgent, prev.http);
  assert.equal(https.globalAgent, prev.https);
  assert.equal(globalThis[GLOBAL_DISPATCHER], prev.dispatcher);
  // Uninstalled: fetch goes out unchecked again (the policy is still empty).
  const n = events.length;
  assert.equal(await body(fetch(`http://127.0.0.1:${port}/after`)), 'hello from 127.0.0.1');
  await settle();
  assert.equal(events.length, n);
  // Another checker may be installed now.
  const un2 = egress.install(c);
  un2();
  c.close();
});

test('egress.install without the undici package: Node\'s own fetch is checked', async (t) => {
  const s = setup(t);
  if (!s) return;
  const { c, events } = s;
  egress._useNodeUndici(true);
  const prev = globalThis[GLOBAL_DISPATCHER];
  const uninstall = egress.install(c);
  try {
    assert.equal(await body(fetch(`http://api.test:${port}/n1`, { headers: { 'x-egress-run-id': 'run-n' } })), 'hello from 127.0.0.1');
    noEgressHeaders(one.requests[one.requests.length - 1]);
    c.setPolicy({ egressAllowlist: [] });
    await assert.rejects(fetch(`http://api.test:${port}/n2`), deniedWith('empty_allowlist'));
    assert.deepEqual(events.map((e) => [e.data.outcome, e.data.runId]), [['allowed', 'run-n'], ['denied', null]]);
  } finally {
    uninstall();
    egress._useNodeUndici(false);
  }
  assert.equal(globalThis[GLOBAL_DISPATCHER], prev);
  c.close();
});

test('checker.connect(decision): one event, the vetted address, even after the DNS answer changed', async (t) => {
  const s = setup(t);
  if (!s) return;
  const { c, events } = s;
  const name = FLIPS[2];
  const d1 = await c.check(name, port, { runId: 'run-c1' });
  const d2 = await c.check(name, port);
  assert.deepEqual([d1.addresses.map((a) => a.address), d2.addresses.map((a) => a.address)], [['127.0.0.1'], ['127.0.0.2']],
    'the DNS answer changed between the two checks');
  assert.equal(events.length, 2);
  // A held decision stands for one connection: one for each below.
  const dt = await c.check('api.test', port);
  const dx = await c.check('api.test', port);
  const connected = (sock) => new Promise((resolve, reject) => sock.once('connect', resolve).once('error', reject));
  for (const [d, want] of [[d1, '127.0.0.1'], [d2, '127.0.0.2']]) {
    const sock = c.connect(d);
    await connected(sock);
    assert.equal(sock.remoteAddress, want);
    assert.ok(d.addresses.some((a) => a.verdict === 'allow' && a.address === sock.remoteAddress));
    assert.equal(sock.remotePort, port);
    sock.destroy();
  }
  // TLS over the vetted address (the server speaks plain HTTP: the handshake fails, the socket is TLS).
  const ts = c.connect(dt, { tls: { rejectUnauthorized: false } });
  assert.ok(ts instanceof tls.TLSSocket);
  ts.on('error', () => {});
  ts.destroy();
  await settle();
  assert.equal(events.length, 4, 'connecting with a held decision made no second check');
  // Used once: a second connection needs a check of its own.
  assert.throws(() => c.connect(d1), (e) => refusedArg(e) && /used already/.test(e.message));

  // What a check did not make, or not for this destination, is refused.
  assert.throws(() => c.connect({ ...d1 }), refusedArg);
  assert.throws(() => c.connect(Object.assign(Object.create(null), { verdict: 'allow', host: '127.0.0.1', port, addresses: [{ address: '127.0.0.1', verdict: 'allow' }] })), refusedArg);
  assert.throws(() => c.connect(d1, { host: 'other.test' }), refusedArg);
  assert.throws(() => c.connect(d1, { port: port + 1 }), refusedArg);
  assert.throws(() => c.connect(d1, { lookup: () => assert.fail('lookup called') }), refusedArg);
  // Tampering with a genuine decision changes nothing: the copy made when the check returned is used.
  dx.addresses.push({ address: '127.0.0.3', verdict: 'allow', reason: null, ttl: 1, family: 4 });
  dx.addresses.shift();
  const again = c.connect(dx);
  await connected(again);
  assert.equal(again.remoteAddress, '127.0.0.1');
  again.destroy();
  const no = await c.check('nope.test', port);
  assert.throws(() => c.connect(no), deniedWith('not_in_allowlist'));
  // The options form still checks (one event each).
  const n = events.length;
  const plain = c.connect({ host: 'api.test', port });
  await connected(plain);
  plain.destroy();
  await settle();
  assert.equal(events.length, n + 1);
  c.close();
});

test('held decisions through the dispatcher, checker.fetch and the agent: one event; misfits refused', async (t) => {
  const s = setup(t);
  if (!s) return;
  const { c, events } = s;
  const url = `http://api.test:${port}/held`;
  // A held decision stands for one request: each call holds its own.
  const du = () => c.checkUrl(url, { method: 'GET', runId: 'held' });
  const dh = () => c.check('api.test', port);
  const before = counts();
  const agent = c.httpAgent({ keepAlive: true });
  const calls = [
    async () => get(http, url, { agent, egress: { decision: await du() } }),
    async () => get(http, url, { agent, egress: { decision: await dh() } }),
    async () => body(c.fetch(url, { egress: { decision: await du() } })),
  ];
  let d = null;
  if (undici) {
    d = c.undiciDispatcher();
    calls.push(
      async () => body(undici.request(url, { dispatcher: d, egress: { decision: await du() } })),
      async () => body(fetch(url, { dispatcher: c.undiciDispatcher({ decision: await du() }) })),
    );
  }
  for (const call of calls) await call();
  assert.equal(counts().r1 - before.r1, calls.length, 'every request reached the server');
  await settle();
  assert.equal(events.length, calls.length, 'no request made a check of its own');

  // A decision that was not made for the request is refused: nothing is
  // checked, nothing is sent.
  const mid = counts();
  const held = await du();
  const misfits = [
    () => get(http, `http://api.test:${port}/elsewhere`, { agent, egress: { decision: held } }),
    () => get(http, url, { agent, method: 'GET', egress: { decision: { ...held } } }),
    () => new Promise((resolve, reject) => {
      const req = http.request(url, { agent, method: 'POST', egress: { decision: held } }, resolve);
      req.on('error', reject);
      req.end('x');
    }),
    () => c.fetch(`http://other.test:${port}/held`, { egress: { decision: held } }),
  ];
  if (d) misfits.push(() => undici.request(`http://api.test:${port}/held?x=1`, { dispatcher: d, egress: { decision: held } }));
  for (const call of misfits) await assert.rejects(call(), refusedArg);
  assert.throws(() => c.undiciDispatcher({ decision: { ...held } }), refusedArg);
  // A held denial is a denial.
  const no = await c.checkUrl(`http://nope.test:${port}/`);
  await assert.rejects(c.fetch(`http://nope.test:${port}/`, { egress: { decision: no } }), deniedWith('not_in_allowlist'));
  await settle();
  assert.equal(counts().r1, mid.r1);
  assert.equal(counts().c1, mid.c1);
  assert.equal(events.length, calls.length + 2, 'only the checks of held and nope.test added events');
  agent.destroy();
  if (d) await d.close();
  c.close();
});

test('onEvent fires before check() and checkUrl() resolve', async (t) => {
  const s = setup(t);
  if (!s) return;
  const { c, events } = s;
  const late = [];
  const ps = [];
  for (let i = 0; i < 200; i++) {
    const p = i % 2 ? c.check(i % 4 === 1 ? 'api.test' : 'evil.test', port) : c.checkUrl(`http://api.test:${port}/${i}`);
    ps.push(p.then((d) => {
      if (!events.some((e) => e.id === d.event.id)) late.push(d.event.id);
    }));
  }
  await Promise.all(ps);
  assert.deepEqual(late, [], `${late.length} of 200 decisions resolved before their event was delivered`);
  assert.equal(events.length, 200);
  c.close();
});

test('errors: EgressError above the policy, denial and outage errors, with their codes', async (t) => {
  const s = setup(t);
  if (!s) return;
  const { c } = s;
  assert.ok(EgressPolicyError.prototype instanceof EgressError);
  assert.ok(EgressDeniedError.prototype instanceof EgressError);
  assert.ok(EgressUnavailableError.prototype instanceof EgressDeniedError);
  const policyError = (code, status) => (e) => {
    assert.ok(e instanceof EgressPolicyError, e && e.stack);
    assert.ok(e instanceof EgressError);
    assert.equal(e.code, code);
    assert.equal(e.status, status);
    assert.equal(e.name, 'EgressPolicyError');
    return true;
  };
  assert.throws(() => new Checker({ policy: { egressAllowlist: ['https://user@a.example.com'] } }), policyError('EGRESS_EPOLICY', 'invalid_policy'));
  assert.throws(() => new Checker({ policy: '{"egressAllowlist": [' }), policyError('EGRESS_EPOLICY', 'invalid_policy'));
  assert.throws(() => new Checker({ policyFile: '/nonexistent/policy.json' }), policyError('EGRESS_EIO', 'io_error'));
  assert.throws(() => c.setPolicy({ egressAllowlist: ['10.0.0.1/8'] }), policyError('EGRESS_EPOLICY', 'invalid_policy'));
  assert.throws(() => c.reloadFile('/nonexistent/policy.json'), policyError('EGRESS_EIO', 'io_error'));
  assert.equal((await c.check('api.test', port)).verdict, 'allow', 'the old policy stays');

  const d = await c.check('broken.test', port);
  const u = new EgressUnavailableError(d);
  assert.ok(u instanceof EgressDeniedError && u instanceof EgressError);
  assert.deepEqual([u.code, u.reason, u.name], ['EEGRESSUNAVAILABLE', 'dns_unavailable', 'EgressUnavailableError']);
  const agent = c.httpAgent();
  await assert.rejects(get(http, `http://broken.test:${port}/`, { agent }), (e) => {
    assert.ok(e instanceof EgressUnavailableError && e instanceof EgressDeniedError);
    assert.equal(e.code, 'EEGRESSUNAVAILABLE');
    return true;
  });
  await assert.rejects(get(http, `http://nope.test:${port}/`, { agent }), (e) => {
    assert.ok(e instanceof EgressDeniedError && !(e instanceof EgressUnavailableError));
    assert.deepEqual([e.code, e.reason, e.name], ['EEGRESSDENIED', 'not_in_allowlist', 'EgressDeniedError']);
    return true;
  });
  agent.destroy();
  c.close();
  await assert.rejects(c.check('api.test', port), (e) => e instanceof EgressError && e.code === 'EGRESS_CLOSED');
  assert.throws(() => c.checkSync('203.0.113.1', 443), (e) => e instanceof EgressError && e.code === 'EGRESS_CLOSED');
});

test('a MachineRegistrationV1 policy gives every check its machineId and workspaceId', async (t) => {
  const s = setup(t);
  if (!s) return;
  const reg = (m, w) => ({
    schemaVersion: 1, machineId: m, workspaceId: w, displayName: 'runner',
    executionPolicy: { isolationMode: 'PerTenantWorker', egressAllowlist: policy().egressAllowlist, workloadIdentity: 'Required' },
  });
  s.c.close();
  const events = [];
  const c = new Checker({ policy: reg('machine-1', 'ws-1'), dnsServers: [dns.server], onEvent: (e) => events.push(e) });
  assert.deepEqual(c.defaultContext, { workspaceId: 'ws-1', machineId: 'machine-1' });
  await c.check('api.test', port);
  await c.check('api.test', port, { machineId: 'machine-2', runId: 'r' });
  const d = undici ? c.undiciDispatcher() : null;
  if (d) await body(undici.request(`http://api.test:${port}/reg`, { dispatcher: d }));
  c.setPolicy(JSON.stringify(reg('machine-3', 'ws-3')));
  await c.check('api.test', port);
  c.setPolicy(policy());
  await c.check('api.test', port);
  const got = events.map((e) => [e.data.machineId, e.data.workspaceId]);
  assert.deepEqual(got, [
    ['machine-1', 'ws-1'], ['machine-2', 'ws-1'], ...(d ? [['machine-1', 'ws-1']] : []), ['machine-3', 'ws-3'], [null, null],
  ]);
  // From a file, and reloaded.
  const dir = tmpdir();
  const file = writeFile(dir, 'machine.json', JSON.stringify(reg('machine-f', 'ws-f')));
  const f = new Checker({ policyFile: file, dnsServers: [dns.server] });
  assert.equal((await f.check('api.test', port)).event.data.machineId, 'machine-f');
  writeFile(dir, 'machine.json', JSON.stringify(reg('machine-g', 'ws-f')));
  assert.deepEqual(f.reloadFile(), { changed: true });
  assert.equal((await f.check('api.test', port)).event.data.machineId, 'machine-g');
  writeFile(dir, 'machine.json', JSON.stringify(policy()));
  assert.deepEqual(f.reloadFile(), { changed: true });
  assert.equal((await f.check('api.test', port)).event.data.machineId, null);
  // Ids that cannot go into every event are a policy error; nothing changes.
  writeFile(dir, 'machine.json', '{"machineId": "a", "machineId": "b", "executionPolicy": {"egressAllowlist": []}}');
  assert.throws(() => f.reloadFile(), (e) => e instanceof EgressPolicyError && /machineId/.test(e.message));
  assert.throws(() => c.setPolicy(reg('bad\nid', 'ws')), EgressPolicyError);
  assert.equal((await f.check('api.test', port)).verdict, 'allow');
  if (d) await d.close();
  f.close();
  c.close();
});

test('context: withContext / runWithContext; unknown keys and headers refused with no check', async (t) => {
  const s = setup(t);
  if (!s) return;
  const { c, events } = s;
  const d1 = await c.withContext({ runId: 'outer', agentId: 'a' }, () =>
    egress.runWithContext({ runId: 'inner' }, () => c.check('api.test', port)));
  assert.deepEqual([d1.event.data.runId, d1.event.data.agentId], ['inner', 'a']);
  const d2 = await c.withContext({ runId: 'outer' }, () => c.check('api.test', port, { runId: 'own' }));
  assert.equal(d2.event.data.runId, 'own');
  const other = new Checker({ policy: policy(), dnsServers: [dns.server] });
  const d3 = await c.withContext({ runId: 'only-c' }, () => other.check('api.test', port));
  assert.equal(d3.event.data.runId, null, 'withContext is for its own checker');
  other.close();
  const n = events.length;
  assert.throws(() => c.checkSync('203.0.113.1', 443, { runID: 'typo' }), TypeError);
  await assert.rejects(c.check('api.test', port, { run_id: 'x' }), TypeError);
  assert.throws(() => c.withContext({ user: 'x' }, () => {}), TypeError);
  const agent = c.httpAgent();
  await assert.rejects(get(http, `http://api.test:${port}/`, { agent, headers: { 'x-egress-run': 'x' } }), refusedArg);
  await assert.rejects(get(http, `http://api.test:${port}/`, { agent, egress: { runID: 'x' } }), refusedArg);
  await assert.rejects(get(http, `http://api.test:${port}/`, { agent, egress: { runId: 'x' }, headers: { 'x-egress-run-id': 'y' } }), refusedArg);
  if (undici) {
    const d = c.undiciDispatcher();
    await assert.rejects(undici.request(`http://api.test:${port}/`, { dispatcher: d, headers: { 'x-egress-who': 'x' } }), refusedArg);
    await d.close();
  }
  await settle();
  assert.equal(events.length, n, 'refused before any check');
  agent.destroy();
  c.close();
});

test('monitor mode: requests the policy would refuse proceed, each with its own event', async (t) => {
  // No CIDR rule: 127.0.0.1 is special-purpose, so enforce mode would deny.
  const s = setup(t, { mode: 'monitor', policy: { egressAllowlist: [`api.test:${port}`] } });
  if (!s) return;
  const { c, events } = s;
  const agent = c.httpAgent({ keepAlive: true });
  const calls = [
    () => get(http, `http://api.test:${port}/m1`, { agent }),
    () => get(http, `http://api.test:${port}/m2`, { agent }),
    () => get(http, `http://127.0.0.1:${port}/m3`, { agent }),
  ];
  let d = null;
  if (undici) {
    d = c.undiciDispatcher();
    calls.push(() => undici.request(`http://api.test:${port}/m4`, { dispatcher: d }).then((r) => r.body.text()),
      () => undici.request(`http://api.test:${port}/m5`, { dispatcher: d }).then((r) => r.body.text()));
  }
  const before = counts();
  for (const call of calls) await call();
  assert.equal(counts().r1 - before.r1, calls.length);
  assert.equal(events.length, calls.length, 'one event per request, kept-alive ones too');
  for (const e of events) {
    assert.equal(e.data.outcome, 'denied');
    assert.equal(e.data.enforcementMode, 'monitor');
    assert.equal(e.data.wouldDeny, true);
  }
  agent.destroy();
  if (d) await d.close();
  c.close();
});

// A self-signed certificate for api.test and flip4.test (EC P-256, valid until
// 2126), made for these tests with openssl req -x509: HTTPS requests name the
// host in SNI and the certificate check while TCP goes to the vetted address.
const TLS_KEY = `-----BEGIN PRIVATE KEY-----
MIGHAgEAMBMGByqGSM49AgEGCCqGSM49AwEHBG0wawIBAQQgE6crfFE1DFfDfHrg
BxHfngDfUu/p5FfIx8T+3i6O712hRANCAARnMq1y8fTV02DDuMQyZGiX6E0240YT
nbokENNZ1YzT/XCDvNj/xK1PS0xItUz3WEY41LsbV+pFHPev8/JnQWBJ
-----END PRIVATE KEY-----`;
const TLS_CERT = `-----BEGIN CERTIFICATE-----
MIIBnTCCAUSgAwIBAgIUCzoWlmbIY8xCLs/VFkRQvhAZrOUwCgYIKoZIzj0EAwIw
EzERMA8GA1UEAwwIYXBpLnRlc3QwIBcNMjYxMjA1MTAzNzE2WhgPMjEyNjExMTEx
MDM3MTZaMBMxETAPBgNVBAMMCGFwaS50ZXN0MFkwEwYHKoZIzj0CAQYIKoZIzj0D
AQcDQgAEZzKtcvH01dNgw7jEMmRol+hNNuNGE526JBDTWdWM0/1wg7zY/8StT0tM
SLVM91hGONS7G1fqRRz3r/PyZ0FgSaN0MHIwHQYDVR0OBBYEFML4n6lVZaGvxp0E
5RUuGEfNSSCyMB8GA1UdIwQYMBaAFML4n6lVZaGvxp0E5RUuGEfNSSCyMA8GA1Ud
EwEB/wQFMAMBAf8wHwYDVR0RBBgwFoIIYXBpLnRlc3SCCmZsaXA0LnRlc3QwCgYI
KoZIzj0EAwIDRwAwRAIgcp3jv02B00sYTAC386lKegwahb3TmdGf9h8qulwXffsC
IH68fIIyseSwXK/HkkP0HdOdLXPt5VvYshd8J7bw5EKP
-----END CERTIFICATE-----`;

test('https: the agent, the dispatcher and connect(decision, {tls}) verify the name over the vetted address', async (t) => {
  const s = setup(t);
  if (!s) return;
  const { c, events } = s;
  const https1 = { requests: 0, connections: 0, server: null };
  https1.server = https.createServer({ key: TLS_KEY, cert: TLS_CERT }, (req, res) => {
    https1.requests++;
    res.end(`tls ${req.socket.servername}`);
  });
  https1.server.on('secureConnection', () => https1.connections++);
  await new Promise((r) => https1.server.listen(0, '127.0.0.1', r));
  const tport = https1.server.address().port;
  c.setPolicy(policy([`127.0.0.0/8:${tport}`, `https://api.test:${tport}`, `flip4.test:${tport}`]));
  const agent = c.httpsAgent({ keepAlive: true, ca: TLS_CERT });
  assert.deepEqual(await get(https, `https://api.test:${tport}/x`, { agent }), { status: 200, body: 'tls api.test' });
  assert.deepEqual(await get(https, `https://api.test:${tport}/y`, { agent }), { status: 200, body: 'tls api.test' });
  assert.equal(https1.connections, 1, 'one kept-alive TLS connection');
  // The certificate names api.test, not other.test (same address): refused by TLS, after the check allowed it.
  c.setPolicy(policy([`127.0.0.0/8:${tport}`, `https://api.test:${tport}`, `other.test:${tport}`]));
  await assert.rejects(get(https, `https://other.test:${tport}/`, { agent }), (e) => e.code === 'ERR_TLS_CERT_ALTNAME_INVALID');
  if (undici) {
    const d = c.undiciDispatcher({ connect: { ca: TLS_CERT } });
    assert.equal(await body(undici.request(`https://api.test:${tport}/z`, { dispatcher: d })), 'tls api.test');
    await d.close();
  }
  const dd = await c.check('api.test', tport);
  const ts = c.connect(dd, { tls: { ca: TLS_CERT } });
  await new Promise((resolve, reject) => ts.once('secureConnect', resolve).once('error', reject));
  assert.equal(ts.remoteAddress, '127.0.0.1');
  assert.equal(ts.authorized, true);
  ts.destroy();
  await settle();
  assert.deepEqual(events.map((e) => e.data.url || e.data.destination), [
    `https://api.test:${tport}/x`, `https://api.test:${tport}/y`, `https://other.test:${tport}/`,
    ...(undici ? [`https://api.test:${tport}/z`] : []), `api.test:${tport}`,
  ]);
  agent.destroy();
  https1.server.close();
  c.close();
});

test('net.Socket and TLS options a decision connect does not take', (t) => {
  const s = setup(t);
  if (!s) return;
  const d = s.c.checkSync('127.0.0.1', port);
  for (const bad of [{ path: '/tmp/x.sock' }, { localAddress: '127.0.0.1' }, { tls: { socket: new net.Socket() } }])
    assert.throws(() => s.c.connect(d, bad), refusedArg);
  s.c.close();
});

// Hostile callers: what selects the destination is read once and pinned to
// what was checked; nothing checked for one target reaches another.

test('agents: host, hostname, port, servername given to the constructor are refused; later changes lose', async (t) => {
  const s = setup(t);
  if (!s) return;
  const { c, events } = s;
  for (const make of [(o) => c.httpAgent(o), (o) => c.httpsAgent(o)]) {
    for (const o of [{ host: '127.0.0.2' }, { hostname: '127.0.0.2' }, { port }, { servername: 'evil.test' }]) {
      const k = Object.keys(o)[0];
      assert.throws(() => make(o), (e) => refusedArg(e) && e.message.includes(`option ${k} `), k);
    }
  }
  // Node's agent lets agent.options win over the request's: changed after
  // construction, they still do not move the connection off the checked target.
  const agent = c.httpAgent();
  agent.options.host = '127.0.0.2';
  const before = counts();
  assert.deepEqual(await get(http, `http://api.test:${port}/pinned`, { agent }), { status: 200, body: 'hello from 127.0.0.1' });
  assert.equal(counts().r2, before.r2, '127.0.0.2 saw nothing');
  agent.options.socketPath = '/nonexistent.sock';
  await assert.rejects(get(http, `http://api.test:${port}/unix`, { agent }), deniedWith('invalid_host'));
  assert.equal(events.filter((e) => e.data.outcome === 'allowed').length, 1);
  agent.destroy();
  c.close();
});

test('undici dispatcher: a URL origin is read when checked; mutating it later goes nowhere else; no other Host', { skip: needUndici }, async (t) => {
  const s = setup(t);
  if (!s) return;
  const { c, events } = s;
  const d = c.undiciDispatcher();
  const before = counts();
  const origin = new URL(`http://api.test:${port}`);
  const p = d.request({ origin, path: '/mutated', method: 'GET' });
  origin.hostname = '127.0.0.2';
  const r = await p;
  assert.equal(await r.body.text(), 'hello from 127.0.0.1');
  assert.equal(counts().r2, before.r2, '127.0.0.2 saw nothing');
  assert.equal(one.requests[one.requests.length - 1].url, '/mutated');
  assert.equal(one.requests[one.requests.length - 1].headers.host, `api.test:${port}`);
  // Any object: read once, as a string.
  let reads = 0;
  const shifty = { toString: () => (reads++ === 0 ? `http://api.test:${port}` : `http://127.0.0.2:${port}`) };
  assert.equal(await body(d.request({ origin: shifty, path: '/shifty', method: 'GET' })), 'hello from 127.0.0.1');
  assert.equal(reads, 1);
  // A Host header naming another site is refused (no check); one naming the origin is not.
  for (const headers of [{ host: 'evil.test' }, ['Host', `api.test:${port + 1}`], [['host', 'evil.test']]])
    await assert.rejects(d.request({ origin: `http://api.test:${port}`, path: '/host', method: 'GET', headers }), refusedArg);
  assert.equal(counts().r2, before.r2);
  assert.equal(one.requests.length, before.r1 + 2, 'only the two checked requests were sent');
  await settle();
  assert.deepEqual(events.map((e) => e.data.url), [`http://api.test:${port}/mutated`, `http://api.test:${port}/shifty`]);
  await d.close();
  c.close();
});

test('agents: path, method, Host or x-egress-* changed after the check are refused, nothing sent', async (t) => {
  const s = setup(t, { policy: { egressAllowlist: [`http://api.test:${port}/public`, `127.0.0.0/8:${port}`] } });
  if (!s) return;
  const { c, events } = s;
  const agent = c.httpAgent({ keepAlive: true });
  const url = `http://api.test:${port}/public`;
  const send = (change, options) => new Promise((resolve, reject) => {
    const req = http.request(url, Object.assign({ agent }, options), (res) => res.resume().on('end', () => resolve(res.statusCode)));
    req.on('error', reject);
    change(req);
    req.end();
  });
  const afterSocket = (change) => (req) => {
    const end = req.end;
    req.end = () => req.once('socket', () => {
      change(req);
      end.call(req);
    });
  };
  const before = counts();
  const changes = [
    (req) => (req.path = '/admin'),
    (req) => (req.method = 'DELETE'),
    (req) => req.setHeader('Host', `127.0.0.2:${port}`),
    (req) => req.setHeader('x-egress-run-id', 'unchecked'),
    afterSocket((req) => (req.path = '/admin')),
  ];
  for (const change of changes)
    await assert.rejects(send(change), (e) => e instanceof EgressError && e.code === 'EGRESS_UNCHECKED' && /after it was checked/.test(e.message));
  // A Host header for another host, given up front: refused before any check.
  const n = events.length;
  await assert.rejects(send(() => {}, { headers: { host: 'evil.test' } }), refusedArg);
  await assert.rejects(send(() => {}, { headers: [['Host', 'evil.test']] }), refusedArg);
  await settle();
  assert.equal(events.length, n, 'no check for a request refused up front');
  assert.equal(counts().r1, before.r1, 'the server saw no request');
  // The request as checked still goes through (its own Host, or the same one spelt otherwise).
  assert.equal(await send(() => {}), 200);
  assert.equal(await send((req) => req.setHeader('Host', `API.test:${port}`)), 200);
  agent.destroy();
  c.close();
});

test('held decisions: refused after a policy swap, or from another policy; used once', async (t) => {
  const s = setup(t);
  if (!s) return;
  const { c, events } = s;
  const url = `http://api.test:${port}/stale`;
  const agent = c.httpAgent();
  const stale = [await c.checkUrl(url, { method: 'GET' }), await c.checkUrl(url, { method: 'GET' }), await c.check('api.test', port)];
  const d = undici ? c.undiciDispatcher({ decision: await c.checkUrl(url, { method: 'GET' }) }) : null;
  // Swapped to the same policy (same digest): still a swap since, refused.
  c.setPolicy(policy());
  const before = counts();
  const staleErr = (e) => refusedArg(e) && /another policy/.test(cause(e).message);
  await assert.rejects(get(http, url, { agent, egress: { decision: stale[0] } }), staleErr);
  await assert.rejects(c.fetch(url, { egress: { decision: stale[1] } }), staleErr);
  assert.throws(() => c.connect(stale[2]), staleErr);
  if (d) await assert.rejects(body(d.request({ origin: `http://api.test:${port}`, path: '/stale', method: 'GET' })), staleErr);
  // A decision of another checker whose policy differs.
  const other = new Checker({ policy: { egressAllowlist: [`api.test:${port}`, `127.0.0.0/8:${port}`] }, dnsServers: [dns.server] });
  const foreign = await other.check('api.test', port);
  assert.throws(() => c.connect(foreign), (e) => refusedArg(e) && /another checker/.test(e.message));
  other.close();
  await settle();
  assert.equal(counts().r1, before.r1, 'nothing sent');
  assert.equal(counts().c1, before.c1, 'no connection');
  // Fresh: goes through once, then is refused.
  const fresh = await c.checkUrl(url, { method: 'GET' });
  assert.equal((await get(http, url, { agent, egress: { decision: fresh } })).status, 200);
  await assert.rejects(get(http, url, { agent, egress: { decision: fresh } }), (e) => refusedArg(e) && /used already/.test(e.message));
  assert.equal(events.length, (d ? 4 : 3) + 1, 'the checks made here, no more');
  if (d) await d.close();
  agent.destroy();
  c.close();
});

test('https: a servername or Host header other than the checked host is refused', async (t) => {
  const s = setup(t);
  if (!s) return;
  const { c } = s;
  const srv = { requests: 0, snis: [] };
  srv.server = https.createServer({ key: TLS_KEY, cert: TLS_CERT }, (req, res) => {
    srv.requests++;
    res.end('tls');
  });
  srv.server.on('secureConnection', (sock) => srv.snis.push(sock.servername));
  await new Promise((r) => srv.server.listen(0, '127.0.0.1', r));
  const tport = srv.server.address().port;
  c.setPolicy(policy([`127.0.0.0/8:${tport}`, `api.test:${tport}`, `flip4.test:${tport}`]));
  const agent = c.httpsAgent({ ca: TLS_CERT });
  // flip4.test is on the certificate too: only the egress guard stops these.
  await assert.rejects(get(https, `https://api.test:${tport}/`, { agent, servername: 'flip4.test' }), refusedArg);
  await assert.rejects(get(https, `https://api.test:${tport}/`, { agent, headers: { Host: 'flip4.test' } }), refusedArg);
  const d = await c.check('api.test', tport);
  assert.throws(() => c.connect(d, { tls: { ca: TLS_CERT, servername: 'flip4.test' } }), refusedArg);
  assert.throws(() => c.connect(d, { servername: 'flip4.test', tls: { ca: TLS_CERT } }), refusedArg);
  assert.deepEqual([srv.requests, srv.snis], [0, []], 'the server saw no TLS connection');
  assert.deepEqual(await get(https, `https://api.test:${tport}/`, { agent }), { status: 200, body: 'tls' });
  assert.deepEqual(srv.snis, ['api.test']);
  agent.destroy();
  srv.server.close();
  c.close();
});

test('held decisions: another checker\'s is refused, same policy digest or not (a monitor decision never opens an enforcing checker\'s way)', async (t) => {
  // Same policy, so the same digest: only the mode differs.  127.0.0.2 is
  // outside it: the monitor checker says allow (outcome denied) to it.
  const only = { policy: { egressAllowlist: [`api.test:${port}`] } };
  const s = setup(t, only);
  if (!s) return;
  const { c, events } = s;
  const mon = new Checker(Object.assign({ mode: 'monitor', dnsServers: [dns.server] }, only));
  assert.equal(mon.policy().digest, c.policy().digest);
  const url = `http://127.0.0.2:${port}/secret`;
  const held = async () => {
    const d = await mon.checkUrl(url, { method: 'GET' });
    assert.deepEqual([d.verdict, d.outcome], ['allow', 'denied']);
    return d;
  };
  const agent = c.httpAgent();
  const otherErr = (e) => refusedArg(e) && /another checker/.test(cause(e).message);
  const before = counts();
  await assert.rejects(get(http, url, { agent, egress: { decision: await held() } }), otherErr);
  await assert.rejects(c.fetch(url, { egress: { decision: await held() } }), otherErr);
  const dc = await mon.check('127.0.0.2', port);
  assert.throws(() => c.connect(dc), otherErr);
  if (undici) {
    const dd = await held();
    assert.throws(() => c.undiciDispatcher({ decision: dd }), otherErr);
    const d = c.undiciDispatcher();
    await assert.rejects(body(undici.request(url, { dispatcher: d, egress: { decision: await held() } })), otherErr);
    await d.close();
  }
  await settle();
  assert.equal(counts().r2, before.r2, 'nothing sent');
  assert.equal(counts().c2, before.c2, 'no connection');
  assert.equal(events.length, 0, 'the enforcing checker made no check');
  // Its own monitor decisions still go through a monitor checker.
  const magent = mon.httpAgent();
  assert.equal((await get(http, url, { agent: magent, egress: { decision: await held() } })).status, 200);
  magent.destroy();
  agent.destroy();
  mon.close();
  c.close();
});

test("request targets the check would read otherwise (a '#', non-ASCII, white space) are refused before any check", async (t) => {
  const s = setup(t, { policy: { egressAllowlist: [`http://api.test:${port}/public`, `127.0.0.0/8:${port}`] } });
  if (!s) return;
  const { c, events } = s;
  assert.equal(c.checkUrlSync(`http://api.test:${port}/secret`).verdict, 'deny', 'only /public is allowed');
  await settle();
  events.length = 0;
  const agent = c.httpAgent({ keepAlive: true });
  const origin = `http://api.test:${port}`;
  const viaAgent = (path) => get(http, origin, { agent, path });
  const d = undici ? c.undiciDispatcher() : null;
  const viaDispatcher = (path) => body(d.request({ origin, path, method: 'GET' }));
  // Checked as "/public" (the check's path ends at '#'), sent as is: a
  // server that cleans the path serves /secret.  A Latin-1 character is sent
  // as one byte, checked as its UTF-8.
  const targets = ['/public#/../secret', '/public/#', '/public/\u00e9', '/public?q=\u00e9'];
  const before = counts();
  for (const path of targets) {
    await assert.rejects(viaAgent(path), refusedArg, `agent: ${path}`);
    if (d) await assert.rejects(viaDispatcher(path), refusedArg, `dispatcher: ${path}`);
  }
  // Node refuses these itself; a raw dispatch is refused the same way.
  if (d) for (const path of ['/public/a b', '/public/\t', '/public\x7f']) await assert.rejects(viaDispatcher(path), refusedArg, `dispatcher: ${JSON.stringify(path)}`);
  await settle();
  assert.equal(events.length, 0, 'no check for a target refused up front');
  assert.equal(counts().r1, before.r1, 'the server saw no request');
  // What is sent is what was checked, byte for byte, query included.
  const ok = ['/public/x?a=1&b=%C3%A9', '/public?q=%23'];
  for (const path of ok) {
    assert.equal((await viaAgent(path)).status, 200);
    if (d) assert.equal(await viaDispatcher(path), 'hello from 127.0.0.1');
  }
  await settle();
  const sent = one.requests.slice(before.r1).map((r) => r.url);
  assert.deepEqual(sent, ok.flatMap((p) => (d ? [p, p] : [p])));
  assert.deepEqual(events.map((e) => e.data.url), sent.map((p) => origin + p));
  agent.destroy();
  if (d) await d.close();
  c.close();
});
