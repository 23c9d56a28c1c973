'use strict';
// meson test node-package: the Node package as others get it.
//
//   1. libegress from this build is installed into a DESTDIR (meson install
//      --tags runtime,devel,node-runtime); pkg-config finds it there through
//      PKG_CONFIG_PATH and PKG_CONFIG_SYSROOT_DIR.
//   2. `npm pack` of bindings/node; the tarball carries the addon's source.
//   3. A fresh project installs the tarball offline (npm_config_nodedir=/usr:
//      the headers of the installed node); npm's install script builds the
//      addon with node-gyp against the installed shared libegress.
//   4. CommonJS and ES module scripts in that project, with no EGRESS_* or
//      LD_LIBRARY_PATH in their environment, check an IP literal and names
//      resolved through the loopback DNS responder (c-ares of the system, not
//      node's: the addon is opened with RTLD_DEEPBIND) and report the addon
//      and the libegress.so they loaded.
//   5. meson install's copy of the package loads its own addon.
//
// Environment: EGRESS_BUILDDIR (required), MESON, NPM, EGRESS_TEST_DNS,
// EGRESS_NODE_PACKAGE_DIR (default: this package), EGRESS_TEST_NO_SKIP.
const test = require('node:test');
const assert = require('node:assert/strict');
const { spawn, spawnSync } = require('node:child_process');
const fs = require('node:fs');
const os = require('node:os');
const path = require('node:path');
const readline = require('node:readline');

const PKG = process.env.EGRESS_NODE_PACKAGE_DIR || path.resolve(__dirname, '..');
const BUILD = process.env.EGRESS_BUILDDIR;
const MESON = process.env.MESON || 'meson';
const NPM = process.env.NPM || 'npm';
const NO_SKIP = process.env.EGRESS_TEST_NO_SKIP === '1';
const TMP = fs.realpathSync(fs.mkdtempSync(path.join(os.tmpdir(), 'egress-node-pkg-')));
const DEST = path.join(TMP, 'dest');
const APP = path.join(TMP, 'app');
process.on('exit', () => {
  if (process.env.EGRESS_TEST_KEEP !== '1') fs.rmSync(TMP, { recursive: true, force: true });
});

const ZONE = `api.test A 93.184.216.34
other.test A 93.184.216.36
`;
const POLICY = {
  egressAllowlist: ['api.test', 'other.test:8443', '203.0.113.0/24'],
  egressDenylist: ['blocked.test'],
};

// What every project script does: the same checks, one JSON line out.
const BODY = `
const fs = require_fs();
const policy = JSON.parse(process.env.T_POLICY);
const opts = { policy, timeoutMs: 3000 };
if (process.env.T_DNS) opts.dnsServers = [process.env.T_DNS];
else opts.hostsFile = process.env.T_HOSTS;
const c = new Checker(opts);
const pick = (d) => ({ verdict: d.verdict, reason: d.reason, addresses: d.addresses.map((a) => a.address) });
const out = {
  literalAllowed: pick(c.checkSync('203.0.113.9', 443)),
  literalDenied: pick(c.checkSync('192.0.2.1', 443)),
  nameAllowed: pick(c.checkSync('api.test', 443)),
  nameWrongPort: pick(c.checkSync('other.test', 443)),
  nameDenied: pick(c.checkSync('blocked.test', 443)),
  addonPath: ADDON_PATH(),
  version: version(),
  specialRangesVersion: specialRangesVersion(),
  libegress: fs.readFileSync('/proc/self/maps', 'utf8').split('\\n')
    .map((l) => l.split(/\\s+/)[5]).filter((f) => f && /\\/libegress\\.so/.test(f))[0] || null,
};
c.close();
console.log(JSON.stringify(out));
`;

const CJS = `'use strict';
const { Checker, version, specialRangesVersion } = require('@portarium/libegress');
const egress = require('@portarium/libegress');
const require_fs = () => require('node:fs');
const ADDON_PATH = () => egress.addonPath;
${BODY}`;

const ESM = `import { Checker, version, specialRangesVersion, addonPath } from '@portarium/libegress';
import * as fsmod from 'node:fs';
const require_fs = () => fsmod;
const ADDON_PATH = () => addonPath;
${BODY}`;

// TypeScript in an ES module project: the exports map's "types" resolve.
const TS = `import { Checker, EgressDeniedError, addonPath } from '@portarium/libegress';
import egress from '@portarium/libegress';
const c: Checker = new Checker({ policy: { egressAllowlist: ['api.test'] } });
const p: string | null = addonPath;
const e: typeof EgressDeniedError = egress.EgressDeniedError;
export { c, p, e };
`;

function skipOrFail(t, why) {
  if (NO_SKIP) assert.fail(`${why} (EGRESS_TEST_NO_SKIP=1)`);
  t.skip(why);
}

function run(cmd, args, opts = {}) {
  const r = spawnSync(cmd, args, Object.assign({ encoding: 'utf8', timeout: 180000 }, opts));
  if (r.error) throw r.error;
  return r;
}

function show(r) {
  return `exit ${r.status}${r.signal ? ` (${r.signal})` : ''}\n--- stdout\n${r.stdout}\n--- stderr\n${r.stderr}`;
}

function find(root, pred) {
  const stack = [root];
  while (stack.length) {
    const dir = stack.pop();
    for (const e of fs.readdirSync(dir, { withFileTypes: true })) {
      const p = path.join(dir, e.name);
      if (pred(p, e)) return p;
      if (e.isDirectory()) stack.push(p);
    }
  }
  return null;
}

/* An environment with nothing pointing at a build tree. */
function cleanEnv(extra = {}) {
  const env = {};
  for (const [k, v] of Object.entries(process.env)) {
    if (k.startsWith('EGRESS_') || k.startsWith('npm_') || k.startsWith('PKG_CONFIG')) continue;
    if (['LD_LIBRARY_PATH', 'LD_PRELOAD', 'NODE_PATH', 'NODE_OPTIONS', 'T_DNS', 'T_HOSTS'].includes(k)) continue;
    env[k] = v;
  }
  return Object.assign(env, extra);
}

function startDns(zone) {
  const exe = process.env.EGRESS_TEST_DNS;
  if (!exe || !fs.existsSync(exe)) return Promise.resolve(null);
  const zoneFile = path.join(TMP, 'zone');
  fs.writeFileSync(zoneFile, zone);
  const child = spawn(exe, ['--zone', zoneFile, '--stdin-lifeline'], { stdio: ['pipe', 'pipe', 'inherit'] });
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error('DNS responder did not start')), 10000);
    child.on('error', reject);
    readline.createInterface({ input: child.stdout }).once('line', (line) => {
      clearTimeout(timer);
      const m = /^PORT (\d+)$/.exec(line);
      if (!m) return reject(new Error(`unexpected responder output: ${line}`));
      resolve({ server: `127.0.0.1:${m[1]}`, stop: () => { child.stdin.end(); child.kill('SIGTERM'); } });
    });
  });
}

const state = {};

test.before(async () => {
  if (!BUILD) return;
  fs.mkdirSync(APP);
  state.dns = await startDns(ZONE);
  state.hosts = path.join(TMP, 'hosts');
  fs.writeFileSync(state.hosts, '93.184.216.34 api.test\n93.184.216.36 other.test\n93.184.216.35 blocked.test\n');
});
test.after(() => state.dns && state.dns.stop());

test('meson install: libegress for pkg-config, the Node package with its addon', (t) => {
  if (!BUILD) return skipOrFail(t, 'EGRESS_BUILDDIR not set');
  const r = run(MESON, ['install', '-C', BUILD, '--destdir', DEST, '--no-rebuild', '--quiet',
    '--tags', 'runtime,devel,node-runtime']);
  assert.equal(r.status, 0, show(r));
  const pc = find(DEST, (p) => path.basename(p) === 'libegress.pc');
  assert.ok(pc, `no libegress.pc under ${DEST}`);
  state.pkgConfig = { PKG_CONFIG_PATH: path.dirname(pc), PKG_CONFIG_SYSROOT_DIR: DEST };
  const libdir = run('pkg-config', ['--variable=libdir', 'libegress'], { env: cleanEnv(state.pkgConfig) });
  assert.equal(libdir.status, 0, show(libdir));
  state.libdir = libdir.stdout.trim();
  assert.ok(fs.existsSync(path.join(state.libdir, 'libegress.so.0')), `no libegress.so.0 in ${state.libdir}`);
  const mv = run('pkg-config', ['--modversion', 'libegress'], { env: cleanEnv(state.pkgConfig) });
  state.version = mv.stdout.trim();
  state.installedPkg = find(DEST, (p, e) => e.isDirectory() && p.endsWith(path.join('node_modules', '@portarium', 'libegress')));
  assert.ok(state.installedPkg, `no node_modules/@portarium/libegress under ${DEST}`);
  assert.ok(state.installedPkg.endsWith(path.join('lib', 'node_modules', '@portarium', 'libegress')), state.installedPkg);
  for (const f of ['index.js', 'index.mjs', 'index.d.ts', 'loader.js', 'package.json', 'egress_node.node'])
    assert.ok(fs.existsSync(path.join(state.installedPkg, f)), `meson install left out ${f}`);
});

test("meson install's package loads the addon next to it, from CommonJS and ES modules", (t) => {
  if (!state.installedPkg) return skipOrFail(t, 'nothing installed');
  const code = `
    const e = require(${JSON.stringify(state.installedPkg)});
    const c = new e.Checker({ policy: { egressAllowlist: ['203.0.113.0/24'] } });
    import(${JSON.stringify(`file://${state.installedPkg}/index.mjs`)}).then((m) => {
      console.log(JSON.stringify({ path: e.addonPath, esmPath: m.addonPath,
        verdict: c.checkSync('203.0.113.9', 443).verdict, version: m.version() }));
    });`;
  const r = run(process.execPath, ['-e', code], { cwd: TMP, env: cleanEnv() });
  assert.equal(r.status, 0, show(r));
  const got = JSON.parse(r.stdout);
  const addon = path.join(state.installedPkg, 'egress_node.node');
  assert.deepEqual(got, { path: addon, esmPath: addon, verdict: 'allow', version: state.version });
});

test('npm pack ships the addon source, binding.gyp, the loader and the ESM entry', (t) => {
  const r = run(NPM, ['pack', '--json', '--pack-destination', TMP, PKG], {
    cwd: TMP,
    env: cleanEnv({ npm_config_cache: path.join(TMP, 'npm-cache'), npm_config_update_notifier: 'false' }),
  });
  assert.equal(r.status, 0, show(r));
  const info = JSON.parse(r.stdout)[0];
  const files = info.files.map((f) => f.path).sort();
  // Every source of the addon: node-gyp builds what binding.gyp lists.
  const sources = fs.readdirSync(path.join(PKG, 'src')).map((f) => `src/${f}`);
  const gyp = fs.readFileSync(path.join(PKG, 'binding.gyp'), 'utf8');
  for (const f of sources.filter((f) => f.endsWith('.c')))
    assert.ok(gyp.includes(`'${f}'`), `binding.gyp does not build ${f}`);
  for (const f of ['binding.gyp', 'index.d.ts', 'index.js', 'index.mjs', 'loader.js', 'package.json', 'tools/install.js', ...sources])
    assert.ok(files.includes(f), `the tarball has no ${f}: ${files.join(', ')}`);
  assert.ok(!files.some((f) => f.startsWith('test/')), 'the tarball carries the tests');
  state.tarball = path.join(TMP, info.filename);
});

test('npm install of the tarball in a fresh project builds the addon offline with node-gyp', (t) => {
  if (!state.tarball) return skipOrFail(t, 'no tarball');
  if (!state.pkgConfig) return skipOrFail(t, 'libegress not installed');
  fs.writeFileSync(path.join(APP, 'package.json'), JSON.stringify({ name: 'app', version: '1.0.0', private: true }));
  const r = run(NPM, ['install', '--offline', '--no-audit', '--no-fund', '--foreground-scripts', state.tarball], {
    cwd: APP,
    env: cleanEnv(Object.assign({
      npm_config_nodedir: '/usr',
      npm_config_cache: path.join(TMP, 'npm-cache'),
      npm_config_update_notifier: 'false',
    }, state.pkgConfig)),
  });
  assert.equal(r.status, 0, show(r));
  state.addon = path.join(APP, 'node_modules', '@portarium', 'libegress', 'build', 'Release', 'egress_node.node');
  assert.ok(fs.existsSync(state.addon), `node-gyp left no ${state.addon}\n${show(r)}`);
});

function projectScript(t, name, text) {
  if (!state.addon) return skipOrFail(t, 'the package did not install');
  if (!state.dns) {
    if (NO_SKIP) assert.fail('EGRESS_TEST_DNS not set (EGRESS_TEST_NO_SKIP=1)');
    t.diagnostic('EGRESS_TEST_DNS not set: names resolve from a hosts file');
  }
  const file = path.join(APP, name);
  fs.writeFileSync(file, text);
  const env = cleanEnv({ T_POLICY: JSON.stringify(POLICY) });
  if (state.dns) env.T_DNS = state.dns.server;
  else env.T_HOSTS = state.hosts;
  const r = run(process.execPath, [file], { cwd: APP, env, timeout: 60000 });
  assert.equal(r.status, 0, show(r));
  const got = JSON.parse(r.stdout.trim().split('\n').pop());
  assert.deepEqual(got.literalAllowed, { verdict: 'allow', reason: null, addresses: ['203.0.113.9'] });
  assert.deepEqual(got.literalDenied.verdict, 'deny');
  // Resolved: through the responder, the c-ares calls reached the system
  // libcares (node's own copy would time out).
  assert.deepEqual(got.nameAllowed, { verdict: 'allow', reason: null, addresses: ['93.184.216.34'] });
  assert.equal(got.nameWrongPort.verdict, 'deny');
  assert.deepEqual([got.nameDenied.verdict, got.nameDenied.reason], ['deny', 'explicit_deny']);
  assert.equal(got.addonPath, state.addon);
  assert.ok(got.libegress && got.libegress.startsWith(DEST + path.sep), `libegress.so loaded from ${got.libegress}`);
  assert.equal(got.version, state.version);
  assert.equal(typeof got.specialRangesVersion, 'string');
}

test('CommonJS: the installed package checks with no environment help', (t) => {
  projectScript(t, 'check.cjs', CJS);
});

test('ES module: real named exports (version, specialRangesVersion, addonPath) and the same checks', (t) => {
  projectScript(t, 'check.mjs', ESM);
});

test('TypeScript (module node16) resolves the types of the exports map', (t) => {
  if (!state.addon) return skipOrFail(t, 'the package did not install');
  const tsc = path.join(PKG, 'node_modules', 'typescript', 'bin', 'tsc');
  const types = path.join(PKG, 'node_modules', '@types', 'node');
  const undiciTypes = path.join(PKG, 'node_modules', 'undici-types');
  if (!fs.existsSync(tsc) || !fs.existsSync(types) || !fs.existsSync(undiciTypes))
    return skipOrFail(t, 'typescript not installed (npm ci --prefix bindings/node)');
  // @types/node and its dependency undici-types (index.d.ts names it) from
  // the source tree, where npm would hoist them: the project installs
  // nothing from a registry.
  fs.mkdirSync(path.join(APP, 'node_modules', '@types'), { recursive: true });
  fs.symlinkSync(types, path.join(APP, 'node_modules', '@types', 'node'));
  fs.symlinkSync(undiciTypes, path.join(APP, 'node_modules', 'undici-types'));
  fs.writeFileSync(path.join(APP, 'use.mts'), TS);
  const r = run(process.execPath, [tsc, '--noEmit', '--strict', '--module', 'node16', '--moduleResolution', 'node16',
    '--target', 'es2022', '--types', 'node', path.join(APP, 'use.mts')], { cwd: APP, env: cleanEnv() });
  assert.equal(r.status, 0, show(r));
});
