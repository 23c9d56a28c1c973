'use strict';
// Every string that crosses from JS to the addon is decided (or stored) as
// exactly the string JS passed, or refused: hosts and URLs holding what a C
// string cannot carry (NUL, a lone surrogate) are denied invalid_host, any
// other argument throws.  Fuzz-style: strings of 200-300 UTF-8 bytes with
// 2-, 3- and 4-byte characters, lone surrogates and NUL at every offset.
const test = require('node:test');
const assert = require('node:assert/strict');
const url = require('node:url');
const { egress, tmpdir, writeFile } = require('./helpers');
const { Checker } = egress;

const dir = tmpdir();
// Names the policy admits resolve from this file or not at all: no DNS.
const hostsFile = writeFile(dir, 'hosts', '93.184.216.34 api.example.com\n');
const CTX_KEYS = ['method', 'workspaceId', 'agentId', 'machineId', 'runId', 'correlationId'];

// One of each UTF-8 length, a full stop that IDNA maps to '.', surrogate
// pairs (one mapped to a letter by IDNA, one disallowed), lone surrogates,
// NUL, and a genuine U+FFFD (which must not be taken for a lone surrogate).
const CHARS = {
  two: '\u00e9',
  three: '\uff58',
  ideographicStop: '\u3002',
  pairMapped: '\u{1d431}',
  pairEmoji: '\u{1f600}',
  loneHigh: '\ud800',
  loneLow: '\udc00',
  nul: '\u0000',
  replacement: '\ufffd',
};

function exact(s) {
  return s.isWellFormed() && !s.includes('\0');
}

// The string as the library must see it: itself, or (for destinations that
// cannot cross whole) with U+0001 for each NUL and lone surrogate.
function crossed(s) {
  let out = '';
  for (let i = 0; i < s.length; i++) {
    const c = s.charCodeAt(i);
    if (c >= 0xd800 && c <= 0xdbff && i + 1 < s.length) {
      const n = s.charCodeAt(i + 1);
      if (n >= 0xdc00 && n <= 0xdfff) {
        out += s[i] + s[i + 1];
        i++;
        continue;
      }
    }
    out += c === 0 || (c >= 0xd800 && c <= 0xdfff) ? '\u0001' : s[i];
  }
  return out;
}

// An ASCII name of exactly n bytes (n >= 13) ending in ".example.com".
function pad(n) {
  let rest = n - '.example.com'.length;
  let s = '';
  while (rest > 61) {
    s += `${'a'.repeat(60)}.`;
    rest -= 61;
  }
  s += `${'a'.repeat(rest)}.example.com`;
  assert.equal(Buffer.byteLength(s), n, `pad(${n})`);
  return s;
}

// Where the policy's suffix ends, the string goes on: a host cut at the
// character would be inside **.example.com, the whole host never is.
function hosts() {
  const out = [];
  for (let k = 190; k <= 300; k++)
    for (const [name, c] of Object.entries(CHARS)) out.push({ name, k, host: pad(k) + c + 'attacker.net' });
  return out;
}

// The event's destination is the host as given.  The library may report an
// invalid one longer than any host can be as its first bytes and
// "\u2026(truncated, N bytes)": N is then the whole length, so the check still
// saw every byte.
function assertDestination(actual, text, what) {
  if (actual === `${text}:443`) return;
  const m = /^([^]*)\u2026\(truncated, (\d+) bytes\):443$/.exec(actual);
  assert.ok(m, `${what}: destination ${JSON.stringify(actual)}`);
  assert.ok(text.startsWith(m[1]), `${what}: destination ${JSON.stringify(actual)}`);
  assert.equal(Number(m[2]), Buffer.byteLength(text), `${what}: length reported`);
}

function admittedByPolicy(d) {
  return d.matchedRule !== null && d.matchedRule.list === 'allow';
}

function assertSameDecision(a, b, what) {
  for (const k of ['verdict', 'outcome', 'reason', 'host', 'port', 'matchedRule', 'url'])
    assert.deepEqual(a[k], b[k], `${what}: ${k}`);
}

function checker(allow) {
  return new Checker({ policy: { egressAllowlist: allow }, hostsFile, onEvent() {} });
}

test('the cut that read ...example.com: checkSync decides the whole host', async () => {
  const c = checker(['**.example.com']);
  const fw = (s) => [...s].map((ch) => (ch === '.' ? '\uff0e' : String.fromCharCode(ch.charCodeAt(0) + 0xfee0))).join('');
  const tail = fw(`${'x'.repeat(40)}.${'x'.repeat(30)}.example.com`);
  const head = 'a'.repeat(253 - Buffer.byteLength(tail)) + tail;
  assert.equal(Buffer.byteLength(head), 253);
  const host = `${head}\u3002attacker\uff0enet`;
  assert.ok(url.domainToASCII(host).endsWith('.example.com.attacker.net'));
  const s = c.checkSync(host, 443);
  const a = await c.check(host, 443);
  assert.equal(a.reason, 'not_in_allowlist');
  assertSameDecision(s, a, 'checkSync vs check');
  assertDestination(s.event.data.destination, host, 'checkSync');
  assertDestination(a.event.data.destination, host, 'check');
  c.close();
});

test('hosts: checkSync and check decide exactly the string given', async () => {
  const c = checker(['**.example.com']);
  for (const { name, k, host } of hosts()) {
    const what = `${name} at byte ${k}`;
    const s = c.checkSync(host, 443);
    const a = await c.check(host, 443);
    assertSameDecision(s, a, what);
    assertDestination(s.event.data.destination, crossed(host), what);
    assertDestination(a.event.data.destination, crossed(host), what);
    if (!exact(host)) {
      assert.equal(s.verdict, 'deny', what);
      assert.equal(s.reason, 'invalid_host', what);
    }
    if (admittedByPolicy(s)) {
      const ascii = url.domainToASCII(host);
      assert.ok(ascii === '' || ascii.endsWith('.example.com'), `${what}: admitted ${ascii}`);
    }
    assert.notEqual(s.verdict, 'allow', what);
  }
  c.close();
});

test('hosts with multi-byte characters everywhere: checkSync equals check', async () => {
  // Labels made of the character itself, so the end of the copy can fall
  // anywhere in the string, not only after an ASCII run.
  const c = checker(['**.example.com']);
  let admitted = 0;
  for (const [name, ch] of Object.entries(CHARS)) {
    for (let lead = 0; lead < 4; lead++) {
      for (let target = 200; target <= 300; target++) {
        const what = `${name} lead ${lead} target ${target}`;
        let h = 'a'.repeat(lead);
        for (let n = 1; Buffer.byteLength(h) < target - 12; n++) h += n % 16 === 0 ? '.' : ch;
        const inside = `${h}.example.com`;
        for (const host of [inside, `${inside}\u3002attacker.net`]) {
          const s = c.checkSync(host, 443);
          const a = await c.check(host, 443);
          assertSameDecision(s, a, what);
          assertDestination(s.event.data.destination, crossed(host), what);
          assertDestination(a.event.data.destination, crossed(host), what);
          if (!exact(host)) assert.equal(s.reason, 'invalid_host', what);
          if (admittedByPolicy(s)) {
            admitted++;
            const ascii = url.domainToASCII(host);
            assert.ok(ascii === '' || ascii.endsWith('.example.com'), `${what}: admitted ${ascii}`);
            assert.equal(host, inside, `${what}: admitted a host outside the suffix`);
          }
        }
      }
    }
  }
  // The invariant above was exercised, not vacuous.
  assert.ok(admitted > 1000, `${admitted} hosts admitted`);
  c.close();
});

test('URLs: checkUrlSync and checkUrl decide exactly the URL given', async () => {
  const c = checker(['**.example.com']);
  for (const { name, k, host } of hosts()) {
    const what = `${name} at byte ${k}`;
    const u = `https://${host}/v1/x`;
    const s = c.checkUrlSync(u);
    const a = await c.checkUrl(u);
    assertSameDecision(s, a, what);
    assert.equal(s.url, crossed(u), what);
    assert.equal(s.event.data.url, crossed(u), what);
    assert.equal(a.event.data.url, crossed(u), what);
    if (!exact(u)) assert.equal(s.reason, 'invalid_host', what);
    if (admittedByPolicy(s)) {
      const ascii = url.domainToASCII(host);
      assert.ok(ascii === '' || ascii.endsWith('.example.com'), `${what}: admitted ${ascii}`);
    }
  }
  c.close();
});

test('URL paths: a path is decided whole, never a prefix of it', async () => {
  const c = checker(['https://api.example.com/v1']);
  const head = 'https://api.example.com/v1/';
  for (let k = 200; k <= 300; k++) {
    for (const [name, ch] of Object.entries(CHARS)) {
      const what = `${name} at byte ${k}`;
      const u = head + 'p'.repeat(k - head.length) + ch + '/../../admin';
      const s = c.checkUrlSync(u);
      const a = await c.checkUrl(u);
      assertSameDecision(s, a, what);
      assert.equal(s.url, crossed(u), what);
      assert.equal(a.event.data.url, crossed(u), what);
      assert.equal(s.verdict, 'deny', what);
    }
  }
  c.close();
});

test('destinations past the 64 KiB copy limit: denied invalid_host with an event, never a prefix', async () => {
  const events = [];
  const c = new Checker({
    policy: { egressAllowlist: ['**.example.com', 'https://api.example.com/v1'] },
    hostsFile,
    onEvent: (e) => events.push(e),
  });
  const limit = 64 * 1024;
  const what = (d) => JSON.stringify(d.event.data).slice(0, 200);
  for (const extra of [1, 3, 1000]) {
    // Every prefix of these is allowed by the policy; the whole is not a
    // host (too long) and not a URL any server reads as one path.
    const host = pad(limit + extra);
    const u = `https://api.example.com/v1/${'p'.repeat(limit + extra - 27)}`;
    assert.ok(Buffer.byteLength(u) > limit);
    const decisions = [
      ['checkSync', c.checkSync(host, 443)],
      ['check', await c.check(host, 443)],
      ['checkUrlSync', c.checkUrlSync(u)],
      ['checkUrl', await c.checkUrl(u)],
    ];
    for (const [how, d] of decisions) {
      const what = `${how}, ${extra} bytes over`;
      assert.equal(d.verdict, 'deny', what);
      assert.equal(d.reason, 'invalid_host', what);
      assert.equal(d.matchedRule, null, what);
    }
    const [, async] = decisions[1];
    assert.ok(async.event.data.destination.startsWith(`\u0001(host of ${limit + extra} UTF-8 bytes`), what(async));
    const [, asyncUrl] = decisions[3];
    assert.ok(asyncUrl.event.data.url.startsWith(`\u0001(url of ${Buffer.byteLength(u)} UTF-8 bytes`), what(asyncUrl));
  }
  await new Promise((r) => setImmediate(r));
  assert.equal(events.length, 12, 'one event per refused destination');
  assert.deepEqual(events.map((e) => e.data.denyReason), Array(12).fill('invalid_host'));
  // Any other argument that long is an argument error, not a decision.
  assert.throws(() => c.reloadFile('/'.repeat(limit + 1)), RangeError);
  c.close();
});

test('context fields: kept whole, or a TypeError', async () => {
  const c = checker(['**.example.com']);
  for (let k = 200; k <= 300; k++) {
    for (const [name, ch] of Object.entries(CHARS)) {
      const what = `${name} at byte ${k}`;
      const key = CTX_KEYS[k % CTX_KEYS.length];
      const value = 'r'.repeat(k) + ch + 'tail';
      const ctx = { [key]: value };
      if (!exact(value)) {
        assert.throws(() => c.checkSync('api.example.com', 443, ctx), TypeError, what);
        await assert.rejects(c.check('api.example.com', 443, ctx), TypeError, what);
        await assert.rejects(c.checkUrl('https://api.example.com/', ctx), TypeError, what);
        assert.throws(() => c.checkUrlSync('https://api.example.com/', ctx), TypeError, what);
        continue;
      }
      const s = c.checkSync('api.example.com', 443, ctx);
      assert.equal(s.event.data[key], value, what);
      assert.equal((await c.check('api.example.com', 443, ctx)).event.data[key], value, what);
      assert.equal(c.checkUrlSync('https://api.example.com/', ctx).event.data[key], value, what);
      assert.equal((await c.checkUrl('https://api.example.com/', ctx)).event.data[key], value, what);
    }
  }
  c.close();
});

test('policy text with multi-byte characters is read whole', () => {
  // Unknown keys are ignored, so a note pushes the rules past any boundary
  // a copy could stop at; a cut text would not parse, or lose the rule.
  for (let k = 200; k <= 300; k++) {
    for (const ch of ['\u00e9', '\uff58', '\u{1f600}']) {
      const text = `{"note": "${'n'.repeat(k)}${ch}", "egressAllowlist": ["api.example.com"]}`;
      const c = new Checker({ policy: text, hostsFile });
      assert.deepEqual(c.policy().egressAllowlist, ['api.example.com']);
      c.close();
    }
  }
});

test('policy text, file paths, options: NUL and lone surrogates are a TypeError', () => {
  const good = '{"egressAllowlist": ["api.example.com"]}';
  for (const bad of ['\u0000', '\ud800', '\udc00']) {
    const text = `{"egressAllowlist": ["api.example.com${bad}"]}`;
    assert.throws(() => new Checker({ policy: text, hostsFile }), TypeError, JSON.stringify(bad));
    const c = new Checker({ policy: good, hostsFile });
    const digest = c.policy().digest;
    assert.throws(() => c.setPolicy(text), TypeError);
    assert.equal(c.policy().digest, digest, 'the old policy stays');
    assert.throws(() => c.reloadFile(`${dir}/p${bad}.json`), TypeError);
    c.close();
    assert.throws(() => new Checker({ policyFile: `${dir}/p${bad}.json` }), TypeError);
    for (const k of ['hostsFile', 'eventSource', 'eventsPath'])
      assert.throws(() => new Checker({ policy: good, [k]: `${dir}/x${bad}` }), TypeError, k);
    assert.throws(() => new Checker({ policy: good, dnsServers: [`127.0.0.1${bad}`] }), TypeError);
    assert.throws(() => new Checker({ policy: good, pref64: [`64:ff9b::/96${bad}`] }), TypeError);
  }
});
