'use strict';
// The Checker API against a hosts file (no DNS server needed).
const test = require('node:test');
const assert = require('node:assert/strict');
const fs = require('node:fs');
const { egress, tmpdir, writeFile, waitFor } = require('./helpers');
const { Checker, EgressDeniedError } = egress;

const dir = tmpdir();
const hostsFile = writeFile(dir, 'hosts', [
  '93.184.216.34 api.example.com',
  '93.184.216.35 files.example.com',
  '127.0.0.1 rebind.example.com',
  '2606:2800:220:1::1 v6.example.com',
  '',
].join('\n'));
const POLICY = {
  egressAllowlist: [
    'https://api.example.com',
    '*.example.com:8443',
    'rebind.example.com',
    'v6.example.com',
    '203.0.113.0/24:443',
  ],
  egressDenylist: ['blocked.example.com'],
};

function checker(extra) {
  return new Checker(Object.assign({ policy: POLICY, hostsFile }, extra));
}

test('an allowed name: every field of the decision', () => {
  const c = checker();
  const d = c.checkSync('API.example.com.', 443);
  assert.equal(d.verdict, 'allow');
  assert.equal(d.outcome, 'allowed');
  assert.equal(d.reason, null);
  assert.equal(d.host, 'api.example.com');
  assert.equal(d.port, 443);
  assert.equal(d.mode, 'enforce');
  assert.equal(d.wouldDeny, false);
  assert.deepEqual(d.matchedRule, { index: 0, list: 'allow', text: 'https://api.example.com' });
  assert.equal(d.addresses.length, 1);
  assert.deepEqual(
    { ...d.addresses[0], ttl: null },
    { address: '93.184.216.34', verdict: 'allow', reason: null, ttl: null, family: 4 });
  assert.equal(d.curlResolve, 'api.example.com:443:93.184.216.34');
  assert.match(d.policyDigest, /^[0-9a-f]{64}$/);
  assert.equal(d.policyDigest, c.policy().digest);
  assert.equal(typeof d.message, 'string');
  assert.ok(d.latencyMs >= 0 && d.dnsMs >= 0);
  assert.equal(d.event, null, 'checkSync builds no event without a sink');
  c.close();
});

test('check() resolves the same decision, with its CloudEvent', async () => {
  const c = checker();
  const ctx = { method: 'GET', workspaceId: 'ws-1', agentId: 'a-1', machineId: 'm-1', runId: 'r-1', correlationId: 'c-1' };
  const d = await c.check('api.example.com', 443, ctx);
  assert.equal(d.verdict, 'allow');
  assert.equal(d.event.specversion, '1.0');
  assert.equal(d.event.type, 'io.portarium.egress.attempt');
  assert.equal(d.event.subject, 'api.example.com:443');
  for (const [k, v] of Object.entries(ctx)) assert.equal(d.event.data[k], v);
  assert.equal(d.event.data.outcome, 'allowed');
  assert.deepEqual(d.event.data.matchedRule, d.matchedRule);
  assert.equal(d.event.data.policyDigest, d.policyDigest);
  const sync = c.checkSync('api.example.com', 443);
  for (const k of ['verdict', 'outcome', 'reason', 'host', 'port', 'matchedRule', 'curlResolve', 'policyDigest', 'message'])
    assert.deepEqual(sync[k], d[k], k);
  c.close();
});

test('denials name their reason and rule', async () => {
  const c = checker();
  const cases = [
    ['evil.example.net', 443, 'not_in_allowlist', null],
    ['api.example.com', 80, 'port_not_allowed', 0],
    ['blocked.example.com', 8443, 'explicit_deny', 0],
    ['rebind.example.com', 443, 'resolved_address_forbidden', 2],
    ['127.0.0.1', 443, 'special_purpose_address', null],
    ['203.0.113.9', 80, 'port_not_allowed', 4],
    ['nosuch.example.com', 8443, 'no_such_host', 1],
  ];
  for (const [host, port, reason, rule] of cases) {
    for (const d of [c.checkSync(host, port), await c.check(host, port)]) {
      assert.equal(d.verdict, 'deny', host);
      assert.equal(d.reason, reason, host);
      assert.equal(d.wouldDeny, true);
      assert.equal(d.curlResolve, null);
      if (rule === null) assert.equal(d.matchedRule, null, host);
      else assert.equal(d.matchedRule.index, rule, host);
      assert.ok(d.message.length > 0);
    }
  }
  const d = c.checkSync('rebind.example.com', 443);
  assert.deepEqual(d.addresses.map((a) => [a.address, a.verdict, a.reason]),
    [['127.0.0.1', 'deny', 'special_purpose_address']]);
  const lit = c.checkSync('203.0.113.9', 443);
  assert.equal(lit.verdict, 'allow');
  assert.equal(lit.addresses[0].ttl, null, 'literals have no TTL');
  assert.equal(lit.curlResolve, null);
  const v6 = c.checkSync('v6.example.com', 443);
  assert.equal(v6.verdict, 'allow');
  assert.equal(v6.addresses[0].family, 6);
  assert.equal(v6.curlResolve, 'v6.example.com:443:[2606:2800:220:1::1]');
  c.close();
});

test('checkSync on invalid input: decided, never allowed', () => {
  const c = checker();
  const hostile = [
    '0x7f.1', '2130706433', '0177.0.0.1', '127.1', 'api.example.com\0.evil', '\0', '',
    'api.example.com/x', 'user@api.example.com', 'api.example.com:443', '[127.0.0.1]',
    'fe80::1%eth0', 'a'.repeat(300), 'api.example.com\n', '\ud800.example.com', '①②⑦.0.0.1',
    ' api.example.com', 'api..example.com', '%61pi.example.com',
  ];
  for (const h of hostile) {
    const d = c.checkSync(h, 443);
    assert.equal(d.verdict, 'deny', JSON.stringify(h));
    assert.equal(d.reason, 'invalid_host', JSON.stringify(h));
  }
  for (const p of [0, -1, 65536, 2 ** 31, -(2 ** 40), Number.MAX_SAFE_INTEGER]) {
    const d = c.checkSync('api.example.com', p);
    assert.equal(d.verdict, 'deny', String(p));
    assert.equal(d.reason, 'invalid_port', String(p));
  }
  // Beyond what the library's int32_t port holds: decided too (no RangeError),
  // never recorded as a clamped 2147483647; the message names the value.
  const ec = checker({ onEvent: () => {} });
  for (const [p, text] of [[2 ** 63, '9223372036854775808'], [1e19, '10000000000000000000'], [-1e19, '-10000000000000000000']]) {
    const d = ec.checkSync('api.example.com', p);
    assert.deepEqual([d.verdict, d.reason], ['deny', 'invalid_port'], String(p));
    assert.notEqual(d.port, 2147483647);
    assert.ok(d.message.includes(`port ${text} is out of range`), d.message);
    assert.ok(!d.event.data.destination.includes('2147483647'), d.event.data.destination);
  }
  ec.close();
  assert.throws(() => c.checkSync(null, 443), TypeError);
  assert.throws(() => c.checkSync(42, 443), TypeError);
  assert.throws(() => c.checkSync('api.example.com', '443'), TypeError);
  assert.throws(() => c.checkSync('api.example.com', 443.5), TypeError);
  assert.throws(() => c.checkSync('api.example.com', NaN), TypeError);
  assert.throws(() => c.checkSync('api.example.com', 443, { runId: 'a\nb' }), TypeError);
  assert.throws(() => c.checkSync('api.example.com', 443, { runId: 'x'.repeat(2000) }), TypeError);
  assert.throws(() => c.checkSync('api.example.com', 443, { runId: 'a\0b' }), TypeError);
  assert.throws(() => c.checkSync('api.example.com', 443, { runId: 7 }), TypeError);
  // Every decided check was counted; thrown ones were not checks.
  assert.equal(c.stats().checks, hostile.length + 6);
  c.close();
});

test('check() rejects bad argument types', async () => {
  const c = checker();
  await assert.rejects(c.check(undefined, 443), TypeError);
  await assert.rejects(c.check('api.example.com', '443'), TypeError);
  await assert.rejects(c.checkUrl(5), TypeError);
  const wide = await c.check('api.example.com', 1e19);
  assert.deepEqual([wide.verdict, wide.reason], ['deny', 'invalid_port']);
  c.close();
});

test('URL checks', async () => {
  const c = checker();
  const ok = await c.checkUrl('https://api.example.com/v1/items');
  assert.equal(ok.verdict, 'allow');
  assert.equal(ok.url, 'https://api.example.com/v1/items');
  assert.equal(ok.port, 443);
  assert.equal(c.checkUrlSync('https://files.example.com:8443/x').verdict, 'allow');
  for (const u of ['https://api.example.com@evil.example.net/', 'http://api.example.com/', 'ftp://api.example.com/', 'not a url']) {
    assert.equal(c.checkUrlSync(u).verdict, 'deny', u);
    assert.equal((await c.checkUrl(u)).verdict, 'deny', u);
  }
  c.close();
});

test('invalid policy throws naming the entry, with code EGRESS_EPOLICY', () => {
  const bad = { egressAllowlist: ['api.example.com', 'https://user@c.example.com'] };
  assert.throws(() => new Checker({ policy: bad, hostsFile }), (e) => {
    assert.equal(e.code, 'EGRESS_EPOLICY');
    assert.match(e.message, /egressAllowlist\[1\]/);
    assert.match(e.message, /user@c\.example\.com/);
    return true;
  });
  assert.throws(() => new Checker({ policy: '{"egressAllowlist": [', hostsFile }), { code: 'EGRESS_EPOLICY' });
  assert.throws(() => new Checker({ policy: { egressAllowlist: ['*.'] } }), { code: 'EGRESS_EPOLICY' });
  assert.throws(() => new Checker({ policy: { egressDenylist: [] } }), { code: 'EGRESS_EPOLICY' });
  assert.throws(() => new Checker({ policyFile: '/nonexistent/policy.json' }), { code: 'EGRESS_EIO' });
  assert.throws(() => new Checker({}), TypeError);
  assert.throws(() => new Checker({ policy: POLICY, mode: 'audit' }), TypeError);
  assert.throws(() => new Checker({ policy: POLICY, dnsServers: ['not-an-ip'] }), (e) => e.code === 'EGRESS_EINVAL' && /not-an-ip/.test(e.message));
  assert.throws(() => new Checker({ policy: POLICY, pref64: ['2001:db8::/33'] }), { code: 'EGRESS_EINVAL' });
  assert.throws(() => new Checker({ policy: POLICY, cache: { minTtl: 10, maxTtl: 5 } }), { code: 'EGRESS_EINVAL' });
  assert.throws(() => new Checker({ policy: POLICY, timeoutMs: 0 }), { code: 'EGRESS_EINVAL' });
  assert.throws(() => new Checker({ policy: POLICY, onEvent: () => {}, eventsPath: '/tmp/x' }), TypeError);
});

test('setPolicy and reloadFile swap atomically and keep the old policy on error', () => {
  const file = writeFile(dir, 'policy.json', JSON.stringify(POLICY));
  const c = new Checker({ policyFile: file, hostsFile });
  assert.equal(c.checkSync('api.example.com', 443).verdict, 'allow');
  assert.deepEqual(c.reloadFile(), { changed: false });
  fs.writeFileSync(file, JSON.stringify({ egressAllowlist: ['files.example.com'] }));
  assert.deepEqual(c.reloadFile(), { changed: true });
  assert.equal(c.checkSync('api.example.com', 443).reason, 'not_in_allowlist');
  fs.writeFileSync(file, '{"egressAllowlist": ["https://u@x.example.com"]}');
  assert.throws(() => c.reloadFile(), (e) => e.code === 'EGRESS_EPOLICY' && /egressAllowlist\[0\]/.test(e.message));
  assert.equal(c.checkSync('files.example.com', 443).verdict, 'allow', 'old policy stays');
  const before = c.policy().digest;
  assert.throws(() => c.setPolicy({ egressAllowlist: ['a.example.com', 'bad entry'] }), (e) => {
    return e.code === 'EGRESS_EPOLICY' && /egressAllowlist\[1\]/.test(e.message);
  });
  assert.equal(c.policy().digest, before);
  c.setPolicy(JSON.stringify(POLICY));
  assert.equal(c.checkSync('api.example.com', 443).verdict, 'allow');
  assert.notEqual(c.checkSync('api.example.com', 443).policyDigest, before);
  assert.deepEqual(c.policy().egressAllowlist, POLICY.egressAllowlist);
  const s = c.stats();
  assert.equal(s.policySwaps, 2);
  assert.equal(s.policyReloadFailures, 1);
  c.close();
});

test('monitor mode allows policy denials and records them', async () => {
  const events = [];
  const c = checker({ mode: 'monitor', onEvent: (e) => events.push(e) });
  const d = await c.check('evil.example.net', 443);
  assert.equal(d.verdict, 'allow');
  assert.equal(d.outcome, 'denied');
  assert.equal(d.reason, 'not_in_allowlist');
  assert.equal(d.wouldDeny, true);
  assert.equal(d.mode, 'monitor');
  assert.equal(d.event.data.enforcementMode, 'monitor');
  assert.equal(d.event.data.wouldDeny, true);
  // Invalid input is not a policy question: still denied.
  assert.equal(c.checkSync('0x7f.1', 443).verdict, 'deny');
  assert.equal(c.checkSync('api.example.com', 0).verdict, 'deny');
  const r = c.checkSync('rebind.example.com', 443);
  assert.equal(r.verdict, 'allow');
  assert.equal(r.reason, 'resolved_address_forbidden');
  await waitFor(() => events.length === 4, 5000, 'events');
  assert.deepEqual(events.map((e) => e.data.outcome), ['denied', 'denied', 'denied', 'denied']);
  c.close();
});

test('stats() and metrics()', () => {
  const c = checker();
  c.checkSync('api.example.com', 443);
  c.checkSync('api.example.com', 443);
  c.checkSync('evil.example.net', 443);
  const s = c.stats();
  assert.equal(s.checks, 3);
  assert.equal(s.checksByOutcome.allowed.none, 2);
  assert.equal(s.checksByOutcome.denied.not_in_allowlist, 1);
  assert.equal(s.cacheHits + s.cacheMisses >= 2, true);
  const m = c.metrics();
  assert.match(m, /^egress_checks_total 3$/m);
  assert.match(m, /egress_checks_by_outcome_total\{outcome="denied",reason="not_in_allowlist"\} 1/);
  c.close();
});

test('close() is idempotent and later calls fail clearly', async () => {
  const c = checker();
  c.close();
  c.close();
  assert.equal(c.closed, true);
  assert.throws(() => c.checkSync('api.example.com', 443), { code: 'EGRESS_CLOSED' });
  await assert.rejects(c.check('api.example.com', 443), { code: 'EGRESS_CLOSED' });
  await assert.rejects(c.checkUrl('https://api.example.com/'), { code: 'EGRESS_CLOSED' });
  assert.throws(() => c.stats(), { code: 'EGRESS_CLOSED' });
  assert.throws(() => c.setPolicy(POLICY), { code: 'EGRESS_CLOSED' });
  await new Promise((resolve) => c.lookupFor(443)('api.example.com', {}, (err) => {
    assert.equal(err.code, 'EGRESS_CLOSED');
    resolve();
  }));
});

test('events: eventsPath writes one JSON line per check', async () => {
  const path = `${dir}/events.jsonl`;
  const c = checker({ eventsPath: path, eventSource: '/test/node' });
  c.checkSync('api.example.com', 443);
  await c.check('evil.example.net', 443);
  const d = c.checkSync('api.example.com', 443);
  assert.equal(d.event.source, '/test/node', 'with a sink, checkSync carries the event');
  c.close();
  const lines = fs.readFileSync(path, 'utf8').trim().split('\n').map((l) => JSON.parse(l));
  assert.equal(lines.length, 3);
  assert.equal(lines[1].data.denyReason, 'not_in_allowlist');
  assert.equal(lines[2].id, d.event.id);
});

test('EgressDeniedError carries the decision', () => {
  const c = checker();
  const d = c.checkSync('evil.example.net', 443);
  const e = new EgressDeniedError(d);
  assert.equal(e.code, 'EEGRESSDENIED');
  assert.equal(e.decision, d);
  assert.ok(e instanceof Error);
  c.close();
});

// The addon hands back no strings when a decision's string fields equal
// what a memo slot holds; the builder then reuses that slot's fields.  Many
// destinations (more than the 64 slots, so slots collide and are refilled),
// interleaved with denials and a policy swap, must each keep their own text.
test('string memo: interleaved destinations keep their own fields', () => {
  const n = 300;
  // Every fifth name resolves to a private address: denied, with its own text.
  const addrOf = (i) => (i % 5 === 0 ? `10.0.${i >> 8}.${i & 255}` : `198.51.${i >> 8}.${i & 255}`);
  const lines = [];
  for (let i = 0; i < n; i++) lines.push(`${addrOf(i)} h${i}.memo.test`);
  const memoHosts = writeFile(dir, 'memo-hosts', lines.join('\n') + '\n');
  const c = new Checker({ policy: { egressAllowlist: ['*.memo.test', '203.0.113.0/24'] }, hostsFile: memoHosts });
  let seed = 7;
  const next = () => (seed = (seed * 1103515245 + 12345) & 0x7fffffff);
  for (let round = 0; round < 4; round++) {
    if (round === 2) c.setPolicy({ egressAllowlist: ['203.0.113.0/24', '**.memo.test'] });
    const ruleText = round < 2 ? '*.memo.test' : '**.memo.test';
    for (let k = 0; k < 3 * n; k++) {
      const i = next() % n;
      const name = `h${i}.memo.test`;
      const d = c.checkSync(name, 443);
      assert.equal(d.host, name);
      assert.equal(d.addresses.length, 1);
      assert.equal(d.addresses[0].address, addrOf(i));
      assert.equal(d.matchedRule.text, ruleText);
      assert.equal(d.policyDigest, c.policy().digest);
      if (i % 5 === 0) {
        assert.equal(d.verdict, 'deny');
        assert.equal(d.reason, 'resolved_address_forbidden');
        assert.equal(d.curlResolve, null);
        assert.ok(d.message.includes(addrOf(i)), d.message);
      } else {
        assert.equal(d.verdict, 'allow');
        assert.equal(d.curlResolve, `${name}:443:${addrOf(i)}`);
        assert.equal(d.message, `allowed by egressAllowlist[${round < 2 ? 0 : 1}]`);
      }
      // A literal and a name outside the policy in between change every field.
      const lit = c.checkSync(`203.0.113.${i & 255}`, 443);
      assert.equal(lit.host, `203.0.113.${i & 255}`);
      assert.equal(lit.addresses[0].address, `203.0.113.${i & 255}`);
      const no = c.checkSync(`x${i}.other.test`, 443);
      assert.equal(no.verdict, 'deny');
      assert.equal(no.host, `x${i}.other.test`);
      assert.ok(no.message.includes(`x${i}.other.test`), no.message);
      assert.equal(no.matchedRule, null);
    }
  }
  c.close();
});

test('string memo: decisions of one destination carry their own event, memoized fields or not', async () => {
  const seen = [];
  const c = checker({ onEvent: (e) => seen.push(e) });
  const ids = new Set();
  const one = (d, method) => {
    assert.equal(d.host, 'api.example.com');
    assert.equal(d.verdict, 'allow');
    assert.equal(d.event.data.host, 'api.example.com');
    assert.equal(d.event.data.method, method);
    assert.equal(d.event.subject, 'api.example.com:443');
    assert.ok(!ids.has(d.event.id), `event id ${d.event.id} seen twice`);
    ids.add(d.event.id);
  };
  for (let i = 0; i < 6; i++) {
    // Every third round the builder has missed the store: lastPacked().
    if (i % 3 === 2) egress._poisonStringMemo();
    const method = i % 2 ? 'PUT' : null;
    one(await c.check('api.example.com', 443, method ? { method } : undefined), method);
    one(await c.checkUrl('https://api.example.com/v1'), null);
    one(c.checkSync('api.example.com', 443), null);
    // Another destination in between: its own fields and event.
    const lit = await c.check('203.0.113.9', 443);
    assert.equal(lit.host, '203.0.113.9');
    assert.equal(lit.event.data.host, '203.0.113.9');
  }
  // A decision without an event (no sink) between two with one.
  const quiet = checker();
  assert.equal(quiet.checkSync('api.example.com', 443).event, null);
  assert.equal((await quiet.check('api.example.com', 443)).event.data.host, 'api.example.com');
  assert.equal(quiet.checkSync('api.example.com', 443).event, null);
  quiet.close();
  c.close();
});

test('string memo: a builder that missed a store recovers the fields', () => {
  const c = checker();
  const first = c.checkSync('api.example.com', 443);
  for (let i = 0; i < 3; i++) {
    egress._poisonStringMemo();
    const d = c.checkSync('api.example.com', 443);
    assert.deepEqual({ ...d, latencyMs: 0, dnsMs: 0, addresses: d.addresses.map((a) => ({ ...a, ttl: 0 })) },
      { ...first, latencyMs: 0, dnsMs: 0, addresses: first.addresses.map((a) => ({ ...a, ttl: 0 })) });
    const other = c.checkSync('files.example.com', 8443);
    assert.equal(other.host, 'files.example.com');
    assert.equal(other.curlResolve, 'files.example.com:8443:93.184.216.35');
  }
  c.close();
});
