'use strict';
/*
 * npm's install script: build the addon with node-gyp (binding.gyp) against
 * the installed libegress, then open it once so that a package that cannot
 * load fails `npm install`, not the first checker.
 *
 * Nothing is built when:
 *   - this is a libegress source checkout (`npm ci` there installs the dev
 *     tools; meson builds the addon), unless EGRESS_NODE_GYP=1;
 *   - egress_node.node already sits next to the package (`meson install`).
 *
 * Offline by default: when no nodedir is configured and the running node's
 * installation has its headers (<prefix>/include/node, as Debian's and
 * NodeSource's packages do) for this very version, node-gyp is pointed at
 * them instead of downloading a header tarball.
 */
const { spawnSync } = require('node:child_process');
const fs = require('node:fs');
const path = require('node:path');

const root = path.resolve(__dirname, '..');

function say(msg) {
  console.log(`@portarium/libegress: ${msg}`);
}

function die(msg) {
  console.error(`@portarium/libegress: ${msg}`);
  process.exit(1);
}

function inSourceCheckout() {
  try {
    const text = fs.readFileSync(path.join(root, '..', '..', 'meson.build'), 'utf8');
    return /project\(\s*'libegress'/.test(text);
  } catch {
    return false;
  }
}

if (process.env.EGRESS_NODE_GYP !== '1') {
  if (inSourceCheckout()) {
    say('libegress source checkout: the addon is built by meson (set EGRESS_NODE_GYP=1 to build it with node-gyp)');
    process.exit(0);
  }
  if (fs.existsSync(path.join(root, 'egress_node.node'))) {
    say('egress_node.node is installed next to the package: nothing to build');
    process.exit(0);
  }
}

const pc = spawnSync('pkg-config', ['--modversion', 'libegress'], { encoding: 'utf8' });
if (pc.error || pc.status !== 0) {
  die(
    'pkg-config does not find libegress (' +
      (pc.error ? pc.error.message : (pc.stderr || '').trim()) +
      '). Install the library first (meson install, or the distribution package) and, for a ' +
      'prefix of your own, set PKG_CONFIG_PATH=<prefix>/<libdir>/pkgconfig.');
}
say(`building the addon against libegress ${pc.stdout.trim()}`);

// The headers of the running node, when its installation has them.
function localNodedir() {
  const prefix = path.resolve(path.dirname(process.execPath), '..');
  try {
    const h = fs.readFileSync(path.join(prefix, 'include', 'node', 'node_version.h'), 'utf8');
    const v = ['MAJOR', 'MINOR', 'PATCH'].map((k) => (new RegExp(`#define NODE_${k}_VERSION (\\d+)`).exec(h) || [])[1]);
    return v.join('.') === process.versions.node ? prefix : null;
  } catch {
    return null;
  }
}

const args = ['rebuild'];
if (!process.env.npm_config_nodedir) {
  const dir = localNodedir();
  if (dir) args.push(`--nodedir=${dir}`);
}

// npm names its bundled node-gyp in npm_config_node_gyp; else PATH's.
const gyp = process.env.npm_config_node_gyp;
const run = gyp
  ? spawnSync(process.execPath, [gyp, ...args], { cwd: root, stdio: 'inherit' })
  : spawnSync('node-gyp', args, { cwd: root, stdio: 'inherit' });
if (run.error) die(`cannot run node-gyp: ${run.error.message}`);
if (run.status !== 0) die(`node-gyp ${args.join(' ')} failed (exit ${run.status})`);

// Open it the way the package will, with no environment help.
const env = Object.assign({}, process.env);
delete env.EGRESS_NODE_ADDON;
const probe = spawnSync(
  process.execPath,
  ['-e', "const l = require('./loader'); l.load(); console.log(l.addonPath())"],
  { cwd: root, env, encoding: 'utf8' });
if (probe.status !== 0) die(`the built addon does not load:\n${probe.stderr}`);
say(`addon built: ${probe.stdout.trim()}`);
