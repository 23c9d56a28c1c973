'use strict';
// Checks through c-ares and the loopback DNS responder (EGRESS_TEST_DNS).
const test = require('node:test');
const assert = require('node:assert/strict');
const { egress, startDns, waitFor } = require('./helpers');
const { Checker, EgressDeniedError, EgressUnavailableError } = egress;

const ZONE = `
api.test A 93.184.216.34
slow.test A 93.184.216.35
slow.test DELAY 500
rebind.test A 127.0.0.1
multi.test A 93.184.216.36
multi.test AAAA 2606:2800:220:1::36
meta.test A 169.254.169.254
broken.test RCODE SERVFAIL
`;
const POLICY = {
  egressAllowlist: ['api.test', 'slow.test', 'rebind.test', 'multi.test', 'meta.test', 'broken.test', 'gone.test', '203.0.113.0/24'],
};

let dns;
test.before(async () => {
  dns = await startDns(ZONE);
});
test.after(() => dns && dns.stop());

function checker(t, extra) {
  if (!dns) {
    t.skip('EGRESS_TEST_DNS not set: loopback DNS responder not built');
    return null;
  }
  return new Checker(Object.assign({ policy: POLICY, dnsServers: [dns.server], timeoutMs: 3000 }, extra));
}

test('the event loop keeps ticking during a slow DNS answer', async (t) => {
  const c = checker(t);
  if (!c) return;
  let ticks = 0;
  const iv = setInterval(() => ticks++, 10);
  const started = Date.now();
  const d = await c.check('slow.test', 443);
  clearInterval(iv);
  const elapsed = Date.now() - started;
  assert.equal(d.verdict, 'allow');
  assert.ok(elapsed >= 450, `DNS was slow (${elapsed} ms)`);
  assert.ok(d.dnsMs >= 400, `dnsMs ${d.dnsMs}`);
  // 500 ms at one tick per 10 ms: a blocked loop would give 0 or 1.
  assert.ok(ticks >= 10, `the loop ticked ${ticks} times while the check was pending`);
  c.close();
});

test('5000 concurrent check() promises all resolve correctly', async (t) => {
  const c = checker(t);
  if (!c) return;
  const kinds = [
    ['api.test', 443, 'allow', null],
    ['rebind.test', 443, 'deny', 'resolved_address_forbidden'],
    ['evil.test', 443, 'deny', 'not_in_allowlist'],
    ['203.0.113.7', 443, 'allow', null],
    ['multi.test', 443, 'allow', null],
    ['api.test', 80, 'deny', 'port_not_allowed'],
    ['meta.test', 443, 'deny', 'resolved_address_forbidden'],
  ];
  const n = 5000;
  const promises = [];
  for (let i = 0; i < n; i++) {
    const [h, p] = kinds[i % kinds.length];
    promises.push(c.check(h, p, { correlationId: `c-${i}` }));
  }
  const results = await Promise.all(promises);
  for (let i = 0; i < n; i++) {
    const [h, p, verdict, reason] = kinds[i % kinds.length];
    const d = results[i];
    assert.equal(d.host, h, `#${i}`);
    assert.equal(d.port, p, `#${i}`);
    assert.equal(d.verdict, verdict, `#${i} ${h}`);
    assert.equal(d.reason, reason, `#${i} ${h}`);
    assert.equal(d.event.data.correlationId, `c-${i}`);
  }
  assert.equal(c.stats().checks, n);
  c.close();
});

test('close() with checks in flight: they are cancelled, later calls fail', async (t) => {
  const c = checker(t, { cache: { maxEntries: 0 } });
  if (!c) return;
  const inflight = [];
  for (let i = 0; i < 50; i++) inflight.push(c.check('slow.test', 443));
  c.close();
  await assert.rejects(c.check('api.test', 443), { code: 'EGRESS_CLOSED' });
  assert.throws(() => c.checkSync('203.0.113.1', 443), { code: 'EGRESS_CLOSED' });
  for (const r of await Promise.allSettled(inflight)) {
    assert.equal(r.status, 'rejected');
    assert.equal(r.reason.code, 'EGRESS_CLOSED');
    assert.equal(r.reason.message, 'checker closed while the check was in flight');
  }
  c.close();
});

test('onEvent receives exactly one event per check, on the JS thread', async (t) => {
  const events = [];
  const c = checker(t, { onEvent: (e) => events.push(e) });
  if (!c) return;
  const n = 300;
  const ps = [];
  const ids = new Set();
  for (let i = 0; i < n; i++) {
    if (i % 3 === 0) ids.add(c.checkSync('203.0.113.9', 443, { runId: `r-${i}` }).event.id);
    else ps.push(c.check(i % 3 === 1 ? 'api.test' : 'evil.test', 443, { runId: `r-${i}` }));
  }
  for (const d of await Promise.all(ps)) ids.add(d.event.id);
  await waitFor(() => events.length >= n, 10000, 'events');
  await new Promise((r) => setTimeout(r, 100));
  assert.equal(events.length, n);
  assert.equal(new Set(events.map((e) => e.id)).size, n);
  assert.deepEqual(new Set(events.map((e) => e.id)), ids, 'the events are the decisions\' events');
  assert.deepEqual(new Set(events.map((e) => e.data.runId)).size, n);
  const s = c.stats();
  assert.equal(s.eventsEmitted, n);
  assert.equal(s.eventsFailed, 0);
  c.close();
});

test('auditRequired: a full event queue denies with audit_unavailable', (t) => {
  const events = [];
  const c = checker(t, { onEvent: (e) => events.push(e), auditRequired: true, eventQueueSize: 1 });
  if (!c) return;
  // The JS thread is busy here, so nothing is delivered between checks.
  const a = c.checkSync('203.0.113.1', 443);
  const b = c.checkSync('203.0.113.2', 443);
  assert.equal(a.verdict, 'allow');
  assert.equal(b.verdict, 'deny');
  assert.equal(b.outcome, 'enforcement_unavailable');
  assert.equal(b.reason, 'audit_unavailable');
  assert.equal(c.stats().eventsFailed, 1);
  c.close();
});

test('lookup: only vetted addresses, all:true and family', async (t) => {
  const c = checker(t);
  if (!c) return;
  const lookup = c.lookupFor(443);
  const call = (host, opts) => new Promise((resolve) => {
    lookup(host, opts, (err, address, family) => resolve({ err, address, family }));
  });
  let r = await call('multi.test', { all: true });
  assert.equal(r.err, null);
  assert.deepEqual(r.address.sort((x, y) => x.family - y.family), [
    { address: '93.184.216.36', family: 4 },
    { address: '2606:2800:220:1::36', family: 6 },
  ]);
  r = await call('multi.test', { all: true, family: 6 });
  assert.deepEqual(r.address, [{ address: '2606:2800:220:1::36', family: 6 }]);
  r = await call('multi.test', { family: 4 });
  assert.deepEqual([r.address, r.family], ['93.184.216.36', 4]);
  r = await call('multi.test', 6);
  assert.deepEqual([r.address, r.family], ['2606:2800:220:1::36', 6]);
  r = await new Promise((resolve) => c.lookupFor(443)('api.test', (err, address, family) => resolve({ err, address, family })));
  assert.deepEqual([r.err, r.address, r.family], [null, '93.184.216.34', 4]);
  r = await call('rebind.test', { all: true });
  assert.ok(r.err instanceof EgressDeniedError);
  assert.equal(r.err.code, 'EEGRESSDENIED');
  assert.equal(r.err.decision.reason, 'resolved_address_forbidden');
  r = await call('evil.test', {});
  assert.equal(r.err.code, 'EEGRESSDENIED');
  r = await call('broken.test', {});
  assert.ok(r.err instanceof EgressUnavailableError);
  assert.equal(r.err.code, 'EEGRESSUNAVAILABLE');
  assert.equal(r.err.decision.reason, 'dns_unavailable');
  r = await call('api.test', { family: 6 });
  assert.equal(r.err.code, 'ENOTFOUND');
  // The port is part of the check.
  r = await new Promise((resolve) => c.lookupFor(80)('api.test', {}, (err) => resolve({ err })));
  assert.equal(r.err.decision.reason, 'port_not_allowed');
  c.close();
});

test('lookup in monitor mode proceeds with what the check saw', async (t) => {
  const c = checker(t, { mode: 'monitor' });
  if (!c) return;
  const r = await new Promise((resolve) => c.lookupFor(443)('rebind.test', { all: true }, (err, a) => resolve({ err, a })));
  assert.equal(r.err, null);
  assert.deepEqual(r.a, [{ address: '127.0.0.1', family: 4 }]);
  c.close();
});

test('DNS failures fail closed', async (t) => {
  const c = checker(t);
  if (!c) return;
  const d = await c.check('broken.test', 443);
  assert.equal(d.verdict, 'deny');
  assert.equal(d.outcome, 'enforcement_unavailable');
  const g = await c.check('gone.test', 443);
  assert.equal(g.verdict, 'deny');
  assert.ok(['no_such_host', 'dns_unavailable'].includes(g.reason), g.reason);
  c.close();
});
