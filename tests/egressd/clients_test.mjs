// egressd with undici's proxy clients (Node 20): ProxyAgent and
// EnvHttpProxyAgent, plain http both tunnelled (CONNECT, undici's default)
// and absolute-form (proxyTunnel: false), https through a CONNECT tunnel to a
// Node https upstream whose certificate is signed by a CA made here with the
// openssl CLI, so a real TLS session runs through egressd and the client
// verifies it.  Names come from the loopback DNS responder (--dns-server).
// Denials are seen as undici sees them (a failed CONNECT, a 403 response)
// and as egressd says them (Proxy-Status, X-Egress-Reason), and the
// upstreams' accept counters prove nothing reached them.
//
//   node clients_test.mjs --egressd PATH --dns PATH
//
// undici comes from bindings/node/node_modules (npm ci --prefix
// bindings/node, which tools/dev.sh runs).  One "ok   "/"FAIL " line per
// check, then the "EGRESS-TESTS:" line tests/summarize.py counts.
import { spawn, execFile, execFileSync } from 'node:child_process';
import { once } from 'node:events';
import fs from 'node:fs';
import http from 'node:http';
import https from 'node:https';
import { createRequire } from 'node:module';
import os from 'node:os';
import path from 'node:path';
import readline from 'node:readline';
import { setTimeout as sleep } from 'node:timers/promises';
import { parseArgs } from 'node:util';

const { values: args } = parseArgs({ options: { egressd: { type: 'string' }, dns: { type: 'string' } } });
if (!args.egressd || !args.dns) {
  console.error('usage: clients_test.mjs --egressd PATH --dns PATH');
  process.exit(64);
}

let passed = 0;
const failures = [];
function check(cond, what) {
  console.log((cond ? 'ok   ' : 'FAIL ') + what);
  if (cond) passed++;
  else failures.push(what);
  return cond;
}
function finish() {
  console.log(`EGRESS-TESTS: egressd-clients passed=${passed} failed=${failures.length}`);
  if (failures.length) {
    console.log(`${failures.length} failures`);
    process.exitCode = 1;
  } else {
    console.log('all ok');
  }
}

const nodePkg = new URL('../../bindings/node/package.json', import.meta.url);
let undici;
try {
  undici = createRequire(nodePkg)('undici');
} catch (e) {
  check(false, `undici from bindings/node/node_modules (run npm ci --prefix bindings/node): ${e.message}`);
  finish();
  process.exit(1);
}
const { Client, EnvHttpProxyAgent, ProxyAgent, request } = undici;
process.removeAllListeners('warning'); // EnvHttpProxyAgent's "experimental" notice
process.on('warning', () => {});

const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'egressd-clients-'));
const children = [];
process.on('exit', () => {
  for (const c of children) if (c.exitCode === null) c.kill('SIGKILL');
  fs.rmSync(tmp, { recursive: true, force: true });
});

// ---- a test CA and a server certificate for tls.test --------------------
function openssl(...a) {
  execFileSync('openssl', a, { cwd: tmp, stdio: ['ignore', 'ignore', 'pipe'] });
}
const ec = ['-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes'];
openssl('req', '-x509', ...ec, '-keyout', 'ca.key', '-out', 'ca.pem', '-days', '2', '-subj', '/CN=egressd test CA',
  '-addext', 'basicConstraints=critical,CA:TRUE', '-addext', 'keyUsage=critical,keyCertSign,cRLSign');
openssl('req', ...ec, '-keyout', 'srv.key', '-out', 'srv.csr', '-subj', '/CN=tls.test');
fs.writeFileSync(path.join(tmp, 'srv.ext'),
  'subjectAltName=DNS:tls.test\nextendedKeyUsage=serverAuth\nbasicConstraints=CA:FALSE\n');
openssl('x509', '-req', '-in', 'srv.csr', '-CA', 'ca.pem', '-CAkey', 'ca.key', '-CAcreateserial', '-out', 'srv.pem',
  '-days', '2', '-extfile', 'srv.ext');
const ca = fs.readFileSync(path.join(tmp, 'ca.pem'));

// ---- upstreams that count what reached them -----------------------------
function counted(server, label) {
  const s = { server, label, accepted: 0, requests: 0, paths: [] };
  server.on('connection', () => s.accepted++);
  server.on('request', (req, res) => {
    s.requests++;
    s.paths.push(req.url);
    const body = `hello from ${label} ${req.url}`;
    res.writeHead(200, { 'content-length': Buffer.byteLength(body) });
    res.end(body);
  });
  return s;
}
const plain = counted(http.createServer(), 'http');
const tls = counted(https.createServer({ key: fs.readFileSync(path.join(tmp, 'srv.key')),
  cert: fs.readFileSync(path.join(tmp, 'srv.pem')) }), 'https');
let tlsSessions = 0;
tls.server.on('secureConnection', () => tlsSessions++);
for (const u of [plain, tls]) {
  u.server.listen(0, '127.0.0.1');
  await once(u.server, 'listening');
  u.port = u.server.address().port;
}

// ---- the DNS responder and egressd --------------------------------------
const zone = path.join(tmp, 'zone');
fs.writeFileSync(zone, 'up.test A 127.0.0.1 0\ntls.test A 127.0.0.1 0\nevil.test A 127.0.0.1 0\n');
const dns = spawn(args.dns, ['--bind', '127.0.0.1', '--zone', zone, '--stdin-lifeline'],
  { stdio: ['pipe', 'pipe', 'ignore'] });
children.push(dns);
const [first] = await once(readline.createInterface({ input: dns.stdout }), 'line');
const dnsPort = Number(first.split(' ')[1]);

const policy = path.join(tmp, 'policy.json');
fs.writeFileSync(policy, JSON.stringify({
  egressAllowlist: [`up.test:${plain.port}`, `tls.test:${tls.port}`, `127.0.0.1/32:${plain.port}`,
    `127.0.0.1/32:${tls.port}`],
  egressDenylist: [],
}));
const portFile = path.join(tmp, 'port');
const events = path.join(tmp, 'events.jsonl');
const errPath = path.join(tmp, 'egressd.err');
const egressd = spawn(args.egressd, ['--listen', '127.0.0.1:0', '--port-file', portFile, '--policy', policy,
  '--dns-server', `127.0.0.1:${dnsPort}`, '--events-path', events],
{ stdio: ['ignore', 'ignore', fs.openSync(errPath, 'w')] });
children.push(egressd);
let pport = 0;
for (let i = 0; i < 200 && !pport; i++) {
  if (fs.existsSync(portFile)) pport = Number(fs.readFileSync(portFile, 'utf8').trim()) || 0;
  if (!pport) await sleep(50);
}
if (!pport) {
  check(false, 'egressd started: ' + fs.readFileSync(errPath, 'utf8'));
  finish();
  process.exit(1);
}
const proxyUrl = `http://127.0.0.1:${pport}`;

async function get(url, dispatcher, opts = {}) {
  const r = await request(url, { dispatcher, ...opts });
  return { status: r.statusCode, headers: r.headers, body: await r.body.text() };
}
async function attempt(what, fn) {
  try {
    return await fn();
  } catch (e) {
    check(false, `${what}: ${e.code || ''} ${e.message}${e.cause ? ' / ' + e.cause.message : ''}`);
    return null;
  }
}
const accepted = () => [plain.accepted, tls.accepted];

try {
  // ---- ProxyAgent ---------------------------------------------------------
  const tunnelled = new ProxyAgent({ uri: proxyUrl, requestTls: { ca } });
  let r = await attempt('ProxyAgent http (CONNECT)', () => get(`http://up.test:${plain.port}/tunnelled`, tunnelled));
  if (r) check(r.status === 200 && r.body === 'hello from http /tunnelled', `ProxyAgent http through a CONNECT tunnel: ${r.status} ${r.body}`);

  const before = tls.requests;
  r = await attempt('ProxyAgent https', () => get(`https://tls.test:${tls.port}/secure`, tunnelled));
  if (r) {
    check(r.status === 200 && r.body === 'hello from https /secure' && tls.requests === before + 1 && tlsSessions >= 1,
      `ProxyAgent https: TLS through the tunnel, certificate verified against the test CA (${r.status} ${r.body}, ${tlsSessions} TLS sessions)`);
  }
  r = await attempt('ProxyAgent https, second request', () => get(`https://tls.test:${tls.port}/again`, tunnelled));
  if (r) check(r.status === 200 && r.body === 'hello from https /again', 'ProxyAgent https: a second request');

  // The same tunnel without the CA: the client must refuse the certificate.
  const noCa = new ProxyAgent({ uri: proxyUrl });
  try {
    await get(`https://tls.test:${tls.port}/unverified`, noCa);
    check(false, 'https without the test CA is refused by the client');
  } catch (e) {
    check(/certificate|self.signed|UNABLE_TO/i.test(`${e.code} ${e.message}`),
      `https without the test CA is refused by the client (${e.code})`);
  }
  await noCa.close();

  const forwarding = new ProxyAgent({ uri: proxyUrl, proxyTunnel: false });
  const paths = plain.paths.length;
  r = await attempt('ProxyAgent http absolute-form', () => get(`http://up.test:${plain.port}/absolute?q=1`, forwarding));
  if (r) {
    check(r.status === 200 && r.body === 'hello from http /absolute?q=1' && plain.paths[paths] === '/absolute?q=1',
      `ProxyAgent proxyTunnel:false: absolute-form forwarded in origin-form (${r.status} ${plain.paths[paths]})`);
  }

  // ---- denials --------------------------------------------------------------
  let acc = accepted();
  try {
    await get(`https://evil.test:${tls.port}/x`, tunnelled);
    check(false, 'ProxyAgent https to a denied name fails');
  } catch (e) {
    check(/403/.test(e.message), `ProxyAgent https to a denied name: failed CONNECT (${e.message})`);
  }
  try {
    await get(`http://evil.test:${plain.port}/x`, tunnelled);
    check(false, 'ProxyAgent http (CONNECT) to a denied name fails');
  } catch (e) {
    check(/403/.test(e.message), `ProxyAgent http (CONNECT) to a denied name: failed CONNECT (${e.message})`);
  }
  r = await attempt('absolute-form to a denied name', () => get(`http://evil.test:${plain.port}/x`, forwarding));
  if (r) {
    check(r.status === 403 && r.headers['x-egress-reason'] === 'not_in_allowlist'
      && /^egressd; error=http_request_denied/.test(r.headers['proxy-status'] || ''),
    `absolute-form to a denied name: ${r.status} ${r.headers['proxy-status']} ${r.headers['x-egress-reason']}`);
  }
  r = await attempt('absolute-form to 169.254.169.254', () => get('http://169.254.169.254/latest/meta-data/', forwarding));
  if (r) {
    check(r.status === 403 && r.headers['x-egress-reason'] === 'special_purpose_address'
      && /error=destination_ip_prohibited/.test(r.headers['proxy-status'] || ''),
    `absolute-form to 169.254.169.254: ${r.status} ${r.headers['proxy-status']}`);
  }
  // What undici's ProxyAgent hides of a refused CONNECT: its head.
  const raw = new Client(proxyUrl);
  r = await attempt('Client.connect to a denied name', async () => {
    const { statusCode, headers, socket } = await raw.connect({ path: `evil.test:${tls.port}` });
    socket.destroy();
    return { status: statusCode, headers };
  }).catch(() => null);
  if (r) {
    check(r.status === 403 && r.headers['x-egress-reason'] === 'not_in_allowlist'
      && /details="not_in_allowlist"/.test(r.headers['proxy-status'] || ''),
    `refused CONNECT head: ${r.status} ${r.headers['proxy-status']} ${r.headers['x-egress-reason']}`);
  }
  await raw.close().catch(() => {});
  await sleep(100);
  check(JSON.stringify(accepted()) === JSON.stringify(acc), `the upstreams saw no connection for the denials (${acc} -> ${accepted()})`);

  // ---- EnvHttpProxyAgent ----------------------------------------------------
  process.env.HTTP_PROXY = proxyUrl;
  process.env.HTTPS_PROXY = proxyUrl;
  delete process.env.NO_PROXY;
  delete process.env.no_proxy;
  const env = new EnvHttpProxyAgent({ requestTls: { ca } });
  r = await attempt('EnvHttpProxyAgent https', () => get(`https://tls.test:${tls.port}/env`, env));
  if (r) check(r.status === 200 && r.body === 'hello from https /env', `EnvHttpProxyAgent https via HTTPS_PROXY: ${r.status}`);
  r = await attempt('EnvHttpProxyAgent http', () => get(`http://up.test:${plain.port}/env`, env));
  if (r) check(r.status === 200 && r.body === 'hello from http /env', `EnvHttpProxyAgent http via HTTP_PROXY: ${r.status}`);
  // curl finds the proxy in HTTPS_PROXY too (run apart: the TLS upstream
  // lives in this process's loop, which must go on turning).
  const curl = await new Promise((resolve) => {
    execFile('curl', ['-sS', '--max-time', '5', '--cacert', path.join(tmp, 'ca.pem'), `https://tls.test:${tls.port}/curl`],
      { env: { ...process.env, HTTPS_PROXY: proxyUrl } }, (err, stdout, stderr) => resolve({ err, stdout, stderr }));
  });
  check(!curl.err && curl.stdout === 'hello from https /curl', `curl with HTTPS_PROXY, TLS verified through the tunnel: ${curl.stdout} ${curl.stderr}`);
  const envForward = new EnvHttpProxyAgent({ proxyTunnel: false });
  r = await attempt('EnvHttpProxyAgent http absolute-form', () => get(`http://up.test:${plain.port}/env-abs`, envForward));
  if (r) check(r.status === 200 && r.body === 'hello from http /env-abs', `EnvHttpProxyAgent proxyTunnel:false: ${r.status}`);
  acc = accepted();
  try {
    await get(`https://evil.test:${tls.port}/env`, env);
    check(false, 'EnvHttpProxyAgent https to a denied name fails');
  } catch (e) {
    check(/403/.test(e.message), `EnvHttpProxyAgent https to a denied name: failed CONNECT (${e.message})`);
  }
  r = await attempt('EnvHttpProxyAgent absolute-form denied', () => get(`http://evil.test:${plain.port}/env`, envForward));
  if (r) check(r.status === 403 && r.headers['x-egress-reason'] === 'not_in_allowlist', `EnvHttpProxyAgent absolute-form to a denied name: ${r.status}`);
  await sleep(100);
  check(JSON.stringify(accepted()) === JSON.stringify(acc), `the upstreams saw no connection (${acc} -> ${accepted()})`);

  // undici's fetch with the agent as dispatcher.
  r = await attempt('fetch through ProxyAgent', async () => {
    const res = await undici.fetch(`https://tls.test:${tls.port}/fetch`, { dispatcher: tunnelled });
    return { status: res.status, body: await res.text() };
  });
  if (r) check(r.status === 200 && r.body === 'hello from https /fetch', `undici.fetch https through ProxyAgent: ${r.status}`);

  for (const d of [tunnelled, forwarding, env, envForward]) await d.close();
} finally {
  egressd.kill('SIGTERM');
  const code = egressd.exitCode ?? (await once(egressd, 'exit'))[0];
  const err = fs.readFileSync(errPath, 'utf8');
  const bad = err.split('\n').filter((l) => /Sanitizer|runtime error:/.test(l));
  check(code === 0 && bad.length === 0, `egressd: exit ${code} after SIGTERM, no sanitizer report ${JSON.stringify(bad.slice(0, 3))}`);
  dns.stdin.end();
  plain.server.close();
  tls.server.close();
  plain.server.closeAllConnections();
  tls.server.closeAllConnections();
}

const evs = fs.readFileSync(events, 'utf8').split('\n').filter(Boolean).map((l) => JSON.parse(l));
const closes = evs.filter((e) => e.type === 'io.portarium.egress.connection').map((e) => e.data);
check(closes.some((e) => e.host === 'tls.test' && e.kind === 'tunnel' && e.status === 200 && e.bytesUp > 0 && e.bytesDown > 0),
  'close event of a TLS tunnel to tls.test with bytes both ways');
check(closes.some((e) => e.host === 'up.test' && e.kind === 'forward' && e.status === 200), 'close event of an absolute-form exchange');
const denied = evs.filter((e) => e.type === 'io.portarium.egress.attempt' && e.data && e.data.host === 'evil.test');
check(denied.length >= 6 && denied.every((e) => JSON.stringify(e).includes('not_in_allowlist')),
  `attempt events of the denials name not_in_allowlist (${denied.length})`);
finish();
