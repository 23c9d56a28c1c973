'use strict';
// What the guarded agents, the undici dispatcher and checker.connect() cannot
// check they refuse: Unix sockets (socketPath, path), a lookup or connection
// function of the caller's, a local address, IP literals the policy does not
// open.  Each refusal is an EgressDeniedError with exactly one deny event,
// and the servers behind (a real Unix socket, a TCP port on 127.0.0.1) never
// see a connection.
const test = require('node:test');
const assert = require('node:assert/strict');
const http = require('node:http');
const https = require('node:https');
const net = require('node:net');
const path = require('node:path');
const { egress, tmpdir, writeFile } = require('./helpers');
const { Checker, EgressDeniedError } = egress;

let undici = null;
try {
  undici = require('undici');
} catch {
  undici = null;
}
const needUndici = !undici && 'undici not installed (npm ci)';

const dir = tmpdir();
const hostsFile = writeFile(dir, 'hosts', '127.0.0.1 local.test\n');
const sockPath = path.join(dir, 'docker.sock');
let unixServer;
let tcpServer;
let port;
let unixConnections = 0;
let tcpConnections = 0;

test.before(async () => {
  const app = (req, res) => res.end('[{"Id": "c0ffee"}]');
  unixServer = http.createServer(app);
  unixServer.on('connection', () => unixConnections++);
  await new Promise((r) => unixServer.listen(sockPath, r));
  tcpServer = http.createServer(app);
  tcpServer.on('connection', () => tcpConnections++);
  await new Promise((r) => tcpServer.listen(0, '127.0.0.1', r));
  port = tcpServer.address().port;
});
test.after(() => {
  unixServer.close();
  tcpServer.close();
});

function setup(allow, extra) {
  const events = [];
  const c = new Checker(Object.assign({ policy: { egressAllowlist: allow }, hostsFile, onEvent: (e) => events.push(e) }, extra));
  return { c, events };
}

function get(mod, options) {
  return new Promise((resolve, reject) => {
    mod.get(options, (res) => {
      let body = '';
      res.on('data', (d) => (body += d));
      res.on('end', () => resolve({ status: res.statusCode, body }));
    }).on('error', reject);
  });
}

function denied(e) {
  const err = e && e.cause && !(e instanceof EgressDeniedError) ? e.cause : e;
  assert.ok(err instanceof EgressDeniedError, `expected EgressDeniedError, got ${err && err.stack}`);
  assert.equal(err.code, 'EEGRESSDENIED');
  assert.equal(err.decision.verdict, 'deny');
  return err;
}

// Exactly one event, a denial, once the queue has drained.
async function oneDenyEvent(events, reason) {
  await new Promise((r) => setTimeout(r, 30));
  assert.equal(events.length, 1, JSON.stringify(events.map((e) => e.data.destination)));
  assert.equal(events[0].data.outcome, 'denied');
  if (reason) assert.equal(events[0].data.denyReason, reason);
  return events[0];
}

async function refusedBy(promise, events, reason) {
  let err;
  await assert.rejects(promise, (e) => {
    err = denied(e);
    return true;
  });
  if (reason) assert.equal(err.decision.reason, reason);
  return { err, event: await oneDenyEvent(events, reason) };
}

function socketError(s) {
  return new Promise((resolve, reject) => {
    s.on('connect', () => reject(new Error('connected')));
    s.on('error', reject);
  });
}

test('socketPath through httpAgent and httpsAgent: refused, one deny event', async () => {
  const before = unixConnections;
  for (const [mod, agentOf] of [[http, (c) => c.httpAgent()], [https, (c) => c.httpsAgent()]]) {
    const { c, events } = setup([]);
    const agent = agentOf(c);
    const { event } = await refusedBy(
      get(mod, { socketPath: sockPath, path: '/containers/json', agent }), events, 'invalid_host');
    assert.ok(event.data.destination.includes(sockPath), event.data.destination);
    agent.destroy();
    c.close();
  }
  assert.equal(unixConnections, before, 'the Unix socket saw no connection');
});

test('socketPath is refused even where the policy allows host:port', async () => {
  const before = unixConnections;
  const { c, events } = setup([`127.0.0.1/32:${port}`, `local.test:${port}`]);
  const agent = c.httpAgent();
  await refusedBy(get(http, { host: '127.0.0.1', port, socketPath: sockPath, path: '/', agent }), events, 'invalid_host');
  events.length = 0;
  await refusedBy(get(http, { host: 'local.test', port, socketPath: sockPath, path: '/', agent }), events, 'invalid_host');
  // Monitor mode lets policy denials through, never what cannot be checked.
  const m = setup([], { mode: 'monitor' });
  const magent = m.c.httpAgent();
  await refusedBy(get(http, { socketPath: sockPath, path: '/', agent: magent }), m.events, 'invalid_host');
  // An agent made with socketPath refuses every request through it.
  const { c: c2, events: e2 } = setup([`127.0.0.1/32:${port}`]);
  const a2 = c2.httpAgent({ socketPath: sockPath });
  await refusedBy(get(http, { host: '127.0.0.1', port, path: '/', agent: a2 }), e2, 'invalid_host');
  assert.equal(unixConnections, before, 'the Unix socket saw no connection');
  // The same agent still connects where the policy allows.
  assert.deepEqual(await get(http, { host: '127.0.0.1', port, path: '/', agent }), { status: 200, body: '[{"Id": "c0ffee"}]' });
  for (const a of [agent, magent, a2]) a.destroy();
  c.close();
  m.c.close();
  c2.close();
});

test('a lookup, createConnection or localAddress of the caller: refused', async () => {
  const { c, events } = setup([`127.0.0.1/32:${port}`, `local.test:${port}`]);
  const agent = c.httpAgent();
  const before = tcpConnections;
  let called = 0;
  const lookup = (host, opts, cb) => {
    called++;
    cb(null, '127.0.0.1', 4);
  };
  const createConnection = (o, cb) => {
    called++;
    return net.createConnection({ host: '127.0.0.1', port }, cb);
  };
  const cases = [
    { host: 'local.test', port, lookup },
    { host: 'local.test', port, createConnection },
    { host: '127.0.0.1', port, localAddress: '127.0.0.1' },
  ];
  for (const o of cases) {
    events.length = 0;
    await refusedBy(get(http, Object.assign({ path: '/', agent }, o)), events, 'invalid_host');
  }
  assert.equal(called, 0, 'the caller\'s functions were never called');
  assert.equal(tcpConnections, before, 'the server saw no connection');
  agent.destroy();
  c.close();
});

test('undici dispatcher: socketPath, path, lookup, localAddress refused', { skip: needUndici }, async () => {
  const beforeUnix = unixConnections;
  const beforeTcp = tcpConnections;
  const variants = [
    { connect: { socketPath: sockPath } },
    { connect: { path: sockPath } },
    { socketPath: sockPath },
    { connect: { lookup: (h, o, cb) => cb(null, '127.0.0.1', 4) } },
    { localAddress: '127.0.0.1' },
  ];
  for (const v of variants) {
    for (const allow of [[], [`127.0.0.1/32:${port}`, `local.test:${port}`]]) {
      const { c, events } = setup(allow);
      const d = c.undiciDispatcher(v);
      await refusedBy(undici.request(`http://local.test:${port}/containers/json`, { dispatcher: d }), events, 'invalid_host');
      events.length = 0;
      await refusedBy(undici.request(`http://127.0.0.1:${port}/`, { dispatcher: d }), events, 'invalid_host');
      await d.close();
      c.close();
    }
  }
  // Functions that would connect without the check are not accepted.
  const { c } = setup([]);
  assert.throws(() => c.undiciDispatcher({ connect: (o, cb) => cb(null, null) }), TypeError);
  assert.throws(() => c.undiciDispatcher({ factory: (origin, o) => new undici.Client(origin, o) }), TypeError);
  c.close();
  assert.equal(unixConnections, beforeUnix, 'the Unix socket saw no connection');
  assert.equal(tcpConnections, beforeTcp, 'the server saw no connection');
});

test('checker.connect(): literals, names, paths; checked before connecting', async () => {
  const before = tcpConnections;
  const beforeUnix = unixConnections;
  const { c, events } = setup([]);
  // An empty allowlist: the literal, the name and the Unix socket are refused.
  for (const [o, reason] of [
    [{ host: '127.0.0.1', port }, 'empty_allowlist'],
    [{ host: '::1', port }, 'empty_allowlist'],
    [{ host: '[::1]', port }, 'empty_allowlist'],
    [{ host: 'local.test', port }, 'empty_allowlist'],
    // No port to check: the library says so first; with one, the path.
    [{ path: sockPath }, 'invalid_port'],
    [{ path: sockPath, port }, 'invalid_host'],
    [{ host: '127.0.0.1', port, lookup: () => assert.fail('lookup called') }, 'invalid_host'],
  ]) {
    events.length = 0;
    const s = c.connect(o);
    assert.ok(s instanceof net.Socket);
    await refusedBy(socketError(s), events, reason);
  }
  // No port: decided (invalid_port), not connected to a default.
  events.length = 0;
  await refusedBy(socketError(c.connect({ host: '127.0.0.1' })), events, 'invalid_port');
  c.close();
  assert.equal(tcpConnections, before);
  assert.equal(unixConnections, beforeUnix);

  // Allowed by the policy: it connects, by literal and by name.
  const ok = setup([`127.0.0.1/32:${port}`, `local.test:${port}`]);
  for (const host of ['127.0.0.1', 'local.test']) {
    const s = ok.c.connect({ host, port });
    await new Promise((resolve, reject) => s.on('connect', resolve).on('error', reject));
    s.destroy();
  }
  await new Promise((r) => setTimeout(r, 30));
  assert.deepEqual(ok.events.map((e) => [e.data.destination, e.data.outcome]),
    [[`127.0.0.1:${port}`, 'allowed'], [`local.test:${port}`, 'allowed']], 'one event per connection');
  // The port is the one connected to: another port of an allowed name is not.
  ok.events.length = 0;
  await refusedBy(socketError(ok.c.connect({ host: 'local.test', port: port + 1 })), ok.events, 'port_not_allowed');
  ok.c.close();
});

test('IP literals: the agents and the dispatcher refuse what the policy does not open', async () => {
  const before = tcpConnections;
  for (const allow of [[], [`local.test:${port}`]]) {
    const { c, events } = setup(allow);
    const agent = c.httpAgent();
    await refusedBy(get(http, { host: '127.0.0.1', port, path: '/', agent }), events);
    events.length = 0;
    const sagent = c.httpsAgent();
    await refusedBy(get(https, { host: '127.0.0.1', port, path: '/', agent: sagent }), events);
    if (undici) {
      events.length = 0;
      const d = c.undiciDispatcher();
      await refusedBy(undici.request(`http://127.0.0.1:${port}/`, { dispatcher: d }), events);
      await d.close();
    }
    agent.destroy();
    sagent.destroy();
    c.close();
  }
  assert.equal(tcpConnections, before, 'the server saw no connection');
});

test('lookupFor on a port the policy does not allow never connects', async () => {
  const before = tcpConnections;
  const { c, events } = setup([`local.test:${port + 1}`, `127.0.0.1/32:${port + 1}`]);
  const s = net.connect({ host: 'local.test', port, lookup: c.lookupFor(port) });
  await refusedBy(socketError(s), events, 'port_not_allowed');
  assert.equal(tcpConnections, before);
  c.close();
});

test('checker.lookup is gone: it throws, naming lookupFor(port) and the agents', () => {
  const { c } = setup([]);
  assert.throws(() => c.lookup, (e) => {
    assert.equal(e.code, 'EGRESS_LOOKUP_NEEDS_PORT');
    assert.match(e.message, /lookupFor\(port\)/);
    assert.match(e.message, /httpAgent/);
    return true;
  });
  c.close();
});

test('checker.connect(): options are read once; a getter cannot swap in a Unix socket or a lookup', async () => {
  const beforeUnix = unixConnections;
  const { c, events } = setup([`127.0.0.1/32:${port}`, `local.test:${port}`]);
  // undefined on the first read, the hostile value on every later one.
  const shifty = (o, key, value) => {
    let reads = 0;
    Object.defineProperty(o, key, { enumerable: true, get: () => (reads++ === 0 ? undefined : value) });
    return o;
  };
  let called = 0;
  const lookup = (h, o, cb) => {
    called++;
    cb(null, '127.0.0.1', 4);
  };
  const connected = (s) => new Promise((resolve, reject) => s.on('connect', () => resolve(s)).on('error', reject));
  // connect(options): checked (one event) and connected to what was checked.
  for (const [key, value] of [['path', sockPath], ['socketPath', sockPath], ['lookup', lookup]]) {
    events.length = 0;
    const s = await connected(c.connect(shifty({ host: 'local.test', port }, key, value)));
    assert.equal(s.remotePort, port, key);
    s.destroy();
    await new Promise((r) => setTimeout(r, 30));
    assert.deepEqual(events.map((e) => [e.data.destination, e.data.outcome]), [[`local.test:${port}`, 'allowed']], key);
  }
  // connect(decision, options), and its tls options.
  for (const [key, value] of [['path', sockPath], ['lookup', lookup], ['localAddress', '127.0.0.2']]) {
    const s = await connected(c.connect(c.checkSync('local.test', port), shifty({}, key, value)));
    assert.equal(s.remoteAddress, '127.0.0.1', key);
    s.destroy();
  }
  assert.equal(called, 0, 'the caller\'s lookup was never called');
  assert.equal(unixConnections, beforeUnix, 'the Unix socket saw no connection');
  c.close();
});
