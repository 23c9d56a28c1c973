'use strict';
// Connections through the guards: http.Agent, net.connect with lookup, and
// undici (the engine of fetch), against a local HTTP server on 127.0.0.1.
const test = require('node:test');
const assert = require('node:assert/strict');
const http = require('node:http');
const net = require('node:net');
const { egress, startDns } = require('./helpers');
const { Checker, EgressDeniedError } = egress;

let undici = null;
try {
  undici = require('undici');
} catch {
  undici = null;
}

let dns;
let server;
let port;
let connections = 0;

test.before(async () => {
  dns = await startDns('rebind.test A 127.0.0.1\nlocal.test A 127.0.0.1\n');
  server = http.createServer((req, res) => res.end('hello'));
  server.on('connection', () => connections++);
  await new Promise((r) => server.listen(0, '127.0.0.1', r));
  port = server.address().port;
});
test.after(() => {
  if (dns) dns.stop();
  server.close();
});

function checker(t, allow) {
  if (!dns) {
    t.skip('EGRESS_TEST_DNS not set: loopback DNS responder not built');
    return null;
  }
  return new Checker({ policy: { egressAllowlist: allow }, dnsServers: [dns.server] });
}

function get(url, agent) {
  return new Promise((resolve, reject) => {
    http.get(url, { agent }, (res) => {
      let body = '';
      res.on('data', (c) => (body += c));
      res.on('end', () => resolve({ status: res.statusCode, body }));
    }).on('error', reject);
  });
}

test('allowed: 127.0.0.1/32:PORT named explicitly, by literal and by name', async (t) => {
  const c = checker(t, [`127.0.0.1/32:${port}`, `local.test:${port}`]);
  if (!c) return;
  const agent = c.httpAgent();
  assert.deepEqual(await get(`http://127.0.0.1:${port}/`, agent), { status: 200, body: 'hello' });
  // The name resolves to 127.0.0.1, which the CIDR rule opens on this port.
  assert.deepEqual(await get(`http://local.test:${port}/`, agent), { status: 200, body: 'hello' });
  agent.destroy();
  c.close();
});

test('a rebinding name is refused through http.Agent and net.connect', async (t) => {
  const c = checker(t, [`rebind.test:${port}`]);
  if (!c) return;
  const before = connections;
  const agent = c.httpAgent({ keepAlive: false });
  await assert.rejects(get(`http://rebind.test:${port}/`, agent), (e) => {
    assert.ok(e instanceof EgressDeniedError, e.message);
    assert.equal(e.decision.reason, 'resolved_address_forbidden');
    return true;
  });
  // IP literals never reach lookup: the agent checks them itself.
  await assert.rejects(get(`http://127.0.0.1:${port}/`, agent), (e) => {
    assert.equal(e.code, 'EEGRESSDENIED');
    assert.equal(e.decision.reason, 'special_purpose_address');
    return true;
  });
  await new Promise((resolve) => {
    const s = net.connect({ host: 'rebind.test', port, lookup: c.lookupFor(port) });
    s.on('connect', () => assert.fail('connected'));
    s.on('error', (e) => {
      assert.equal(e.code, 'EEGRESSDENIED');
      resolve();
    });
  });
  assert.equal(connections, before, 'the server saw no connection');
  agent.destroy();
  c.close();
});

test('undici: allowed literal, refused rebinding name and literal', { skip: !undici && 'undici not installed (npm ci)' }, async (t) => {
  const ok = checker(t, [`127.0.0.1/32:${port}`]);
  if (!ok) return;
  const d1 = ok.undiciDispatcher();
  const res = await undici.request(`http://127.0.0.1:${port}/`, { dispatcher: d1 });
  assert.equal(res.statusCode, 200);
  assert.equal(await res.body.text(), 'hello');
  const f = await undici.fetch(`http://127.0.0.1:${port}/`, { dispatcher: d1 });
  assert.equal(await f.text(), 'hello');
  await d1.close();
  ok.close();

  const c = checker(t, [`rebind.test:${port}`]);
  const before = connections;
  const d2 = c.undiciDispatcher();
  await assert.rejects(undici.fetch(`http://rebind.test:${port}/`, { dispatcher: d2 }), (e) => {
    const cause = e.cause || e;
    assert.equal(cause.code, 'EEGRESSDENIED', String(cause));
    assert.equal(cause.decision.reason, 'resolved_address_forbidden');
    return true;
  });
  await assert.rejects(undici.request(`http://127.0.0.1:${port}/`, { dispatcher: d2 }), { code: 'EEGRESSDENIED' });
  // Node's own fetch takes the dispatcher too.
  await assert.rejects(fetch(`http://rebind.test:${port}/`, { dispatcher: d2 }), (e) => (e.cause || e).code === 'EEGRESSDENIED');
  assert.equal(connections, before, 'the server saw no connection');
  await d2.close();
  c.close();
});
