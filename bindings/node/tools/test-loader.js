'use strict';
// meson test node-loader: where loader.js looks, and what it never loads
// unasked.  Each load runs in a child node over a copy of the package in a
// temporary tree, so a wrong pick (a sanitizer runtime ends the process)
// fails the case instead of this runner.
//
// Environment: EGRESS_NODE_ADDON  a plain (non-sanitized) egress_node.node
//              EGRESS_CC          the C compiler (for an ASan-linked module)
const test = require('node:test');
const assert = require('node:assert/strict');
const { spawnSync } = require('node:child_process');
const fs = require('node:fs');
const os = require('node:os');
const path = require('node:path');

const PKG = process.env.EGRESS_NODE_PACKAGE_DIR || path.resolve(__dirname, '..');
const ADDON = process.env.EGRESS_NODE_ADDON;
const NO_SKIP = process.env.EGRESS_TEST_NO_SKIP === '1';
const TMP = fs.mkdtempSync(path.join(os.tmpdir(), 'egress-node-loader-'));
process.on('exit', () => fs.rmSync(TMP, { recursive: true, force: true }));

const JS = ['index.js', 'index.mjs', 'loader.js', 'package.json'];
const REL = path.join('bindings', 'node', 'egress_node.node');

function put(file, data) {
  fs.mkdirSync(path.dirname(file), { recursive: true });
  if (Buffer.isBuffer(data) || typeof data === 'string') fs.writeFileSync(file, data);
  else fs.copyFileSync(data.copy, file);
}

function buildOptions(dir, sanitize) {
  put(path.join(dir, 'meson-info', 'intro-buildoptions.json'),
    JSON.stringify([{ name: 'b_sanitize', value: sanitize }, { name: 'buildtype', value: 'release' }]));
}

/* The package's JS files (those it has: the test also runs over older trees). */
function copyPackage(dir) {
  for (const f of JS) if (fs.existsSync(path.join(PKG, f))) put(path.join(dir, f), { copy: path.join(PKG, f) });
}

/* A source checkout: meson.build at the top, the package in bindings/node. */
function checkout(name) {
  const top = path.join(TMP, name);
  put(path.join(top, 'meson.build'), "project('libegress', 'c')\n");
  copyPackage(path.join(top, 'bindings', 'node'));
  return top;
}

/* Run code in a child node with no EGRESS_NODE_ADDON unless given.  The
 * package's entry point loads, as an application would. */
function child(code, env = {}, args = []) {
  const e = Object.assign({}, process.env);
  delete e.EGRESS_NODE_ADDON;
  Object.assign(e, env);
  const r = spawnSync(process.execPath, [...args, '-e', code], { env: e, encoding: 'utf8', timeout: 30000 });
  return r;
}

const LOAD = (dir, explicit) => `
  const egress = require(${JSON.stringify(path.join(dir, 'index.js'))});
  let out;
  try {
    egress.load(${explicit ? JSON.stringify(explicit) : ''});
    out = { path: egress.addonPath };
  } catch (e) {
    out = { code: e.code, message: e.message, isError: e instanceof Error };
  }
  console.log(JSON.stringify(out));`;

function loadIn(dir, explicit, env) {
  const r = child(LOAD(dir, explicit), env);
  assert.equal(r.status, 0, `the child process died (status ${r.status}, signal ${r.signal}):\n${r.stderr}`);
  return JSON.parse(r.stdout.trim().split('\n').pop());
}

/* A module that needs the ASan runtime, as a sanitizer build of the addon does. */
let asanModule = null;
function compileAsanModule() {
  if (asanModule !== null) return asanModule;
  asanModule = false;
  const cc = (process.env.EGRESS_CC || 'cc').split(' ').filter(Boolean);
  const src = path.join(TMP, 'asan.c');
  fs.writeFileSync(src, 'int egress_fake(int *p) { return p[1]; }\n');
  const out = path.join(TMP, 'asan.so');
  const r = spawnSync(cc[0], [...cc.slice(1), '-shared', '-fPIC', '-fsanitize=address', '-o', out, src], {
    encoding: 'utf8',
  });
  if (r.status === 0) asanModule = out;
  else asanModule = { error: (r.error && r.error.message) || r.stderr };
  return asanModule;
}

function needAddon(t) {
  if (ADDON && fs.existsSync(ADDON)) return true;
  if (NO_SKIP) assert.fail('EGRESS_NODE_ADDON is not set (EGRESS_TEST_NO_SKIP=1)');
  t.skip('EGRESS_NODE_ADDON not set');
  return false;
}

test('a source checkout: build/asan (meson b_sanitize) comes first by name; release is loaded', (t) => {
  if (!needAddon(t)) return;
  const top = checkout('marker');
  buildOptions(path.join(top, 'build', 'asan'), 'address,undefined');
  put(path.join(top, 'build', 'asan', REL), { copy: ADDON });
  buildOptions(path.join(top, 'build', 'release'), 'none');
  put(path.join(top, 'build', 'release', REL), { copy: ADDON });
  const got = loadIn(path.join(top, 'bindings', 'node'));
  assert.equal(got.path, path.join(top, 'build', 'release', REL), JSON.stringify(got));
});

test('a module that needs libasan is skipped with no meson marker (ELF dynamic section)', (t) => {
  if (!needAddon(t)) return;
  const m = compileAsanModule();
  if (typeof m !== 'string') {
    if (NO_SKIP) assert.fail(`cannot build an ASan module: ${m.error}`);
    t.skip(`cannot build an ASan module: ${m.error}`);
    return;
  }
  const top = checkout('elf');
  // In name order: build/tsan, where meson says none and the file says
  // otherwise; build-elf, with no meson-info at all; then the plain one.
  buildOptions(path.join(top, 'build', 'tsan'), 'none');
  put(path.join(top, 'build', 'tsan', REL), { copy: m });
  put(path.join(top, 'build-elf', REL), { copy: m });
  put(path.join(top, 'build-z', REL), { copy: ADDON });
  const got = loadIn(path.join(top, 'bindings', 'node'));
  assert.equal(got.path, path.join(top, 'build-z', REL), JSON.stringify(got));
  const loader = require(path.join(PKG, 'loader.js'));
  assert.match(loader.elfSanitizer(m), /^(libasan\.so|__asan_)/);
  assert.equal(loader.elfSanitizer(ADDON), null, 'the plain addon reads as a sanitizer build');
});

test('only sanitizer builds: EGRESS_NO_ADDON, a JS error naming why each was skipped', (t) => {
  if (!needAddon(t)) return;
  const top = checkout('only-asan');
  buildOptions(path.join(top, 'build', 'asan'), 'address,undefined');
  put(path.join(top, 'build', 'asan', REL), { copy: ADDON });
  buildOptions(path.join(top, 'build', 'tsan'), ['thread']); // a list, as later meson writes it
  put(path.join(top, 'build', 'tsan', REL), { copy: ADDON });
  const got = loadIn(path.join(top, 'bindings', 'node'));
  assert.equal(got.code, 'EGRESS_NO_ADDON', JSON.stringify(got));
  assert.ok(got.isError);
  assert.match(got.message, /b_sanitize=address,undefined/);
  assert.match(got.message, /b_sanitize=thread/);
  assert.match(got.message, /EGRESS_NODE_ADDON/);
});

test('order: node-gyp build/Release, then next to the package, then meson build dirs', (t) => {
  if (!needAddon(t)) return;
  const top = checkout('order');
  const pkg = path.join(top, 'bindings', 'node');
  put(path.join(top, 'build', 'release', REL), { copy: ADDON });
  assert.equal(loadIn(pkg).path, path.join(top, 'build', 'release', REL));
  put(path.join(pkg, 'egress_node.node'), { copy: ADDON });
  assert.equal(loadIn(pkg).path, path.join(pkg, 'egress_node.node'));
  put(path.join(pkg, 'build', 'Release', 'egress_node.node'), { copy: ADDON });
  assert.equal(loadIn(pkg).path, path.join(pkg, 'build', 'Release', 'egress_node.node'));
});

test('outside a source checkout, ../../build* is never scanned', (t) => {
  if (!needAddon(t)) return;
  // node_modules/@portarium/libegress: ../../ is node_modules.
  const nm = path.join(TMP, 'app', 'node_modules');
  const pkg = path.join(nm, '@portarium', 'libegress');
  copyPackage(pkg);
  put(path.join(nm, 'build', REL), { copy: ADDON });
  const got = loadIn(pkg);
  assert.equal(got.code, 'EGRESS_NO_ADDON', JSON.stringify(got));
});

test('told: an explicit path or EGRESS_NODE_ADDON is the only candidate', (t) => {
  if (!needAddon(t)) return;
  const top = checkout('told');
  const pkg = path.join(top, 'bindings', 'node');
  put(path.join(top, 'build', 'release', REL), { copy: ADDON });
  const missing = path.join(TMP, 'nowhere', 'egress_node.node');
  let got = loadIn(pkg, undefined, { EGRESS_NODE_ADDON: missing });
  assert.equal(got.code, 'EGRESS_NO_ADDON', JSON.stringify(got));
  assert.match(got.message, /EGRESS_NODE_ADDON=/);
  got = loadIn(pkg, missing);
  assert.equal(got.code, 'EGRESS_NO_ADDON', JSON.stringify(got));
  // Not a loadable module: a JS error with the cause, not an exit.
  const bogus = path.join(TMP, 'bogus.node');
  fs.writeFileSync(bogus, 'not an ELF file\n');
  got = loadIn(pkg, bogus);
  assert.equal(got.code, 'EGRESS_ADDON_LOAD_FAILED', JSON.stringify(got));
  got = loadIn(pkg, undefined, { EGRESS_NODE_ADDON: ADDON });
  assert.equal(got.path, path.resolve(ADDON));
});

test('a broken node-gyp build is reported, and a plain build after it still loads', (t) => {
  if (!needAddon(t)) return;
  const top = checkout('broken');
  const pkg = path.join(top, 'bindings', 'node');
  put(path.join(pkg, 'build', 'Release', 'egress_node.node'), 'garbage\n');
  let got = loadIn(pkg);
  assert.equal(got.code, 'EGRESS_ADDON_LOAD_FAILED', JSON.stringify(got));
  put(path.join(top, 'build', 'release', REL), { copy: ADDON });
  got = loadIn(pkg);
  assert.equal(got.path, path.join(top, 'build', 'release', REL), JSON.stringify(got));
});

test('index.mjs names every export of index.js; version and specialRangesVersion are functions', () => {
  const code = `
    const cjs = require(${JSON.stringify(path.join(PKG, 'index.js'))});
    import(${JSON.stringify('file://' + path.join(PKG, 'index.mjs'))}).then((ns) => {
      console.log(JSON.stringify({
        cjs: Object.keys(cjs).sort(),
        esm: Object.keys(ns).filter((k) => k !== 'default').sort(),
        same: ns.default === cjs,
        version: typeof cjs.version, ranges: typeof cjs.specialRangesVersion,
        esmVersion: typeof ns.version, esmRanges: typeof ns.specialRangesVersion,
      }));
    });`;
  const r = child(code);
  assert.equal(r.status, 0, r.stderr);
  const got = JSON.parse(r.stdout);
  assert.deepEqual(got.esm, got.cjs, 'index.mjs and index.js export different names');
  assert.ok(got.same, 'the default export is not the CommonJS module');
  assert.deepEqual([got.version, got.ranges, got.esmVersion, got.esmRanges],
    ['function', 'function', 'function', 'function']);
});
