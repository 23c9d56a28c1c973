'use strict';
// meson test node-types: tsc --noEmit over index.d.ts and test/types.test-d.ts.
// Skips (77) only when node_modules is missing and EGRESS_TEST_NO_SKIP is
// not 1: CI runs `npm ci --prefix bindings/node` first.
const { spawnSync } = require('node:child_process');
const fs = require('node:fs');
const path = require('node:path');

const root = path.resolve(__dirname, '..');
const tsc = path.join(root, 'node_modules', 'typescript', 'bin', 'tsc');
if (!fs.existsSync(tsc)) {
  if (process.env.EGRESS_TEST_NO_SKIP === '1') {
    console.error(`typescript is not installed (${tsc}): run npm ci --prefix bindings/node`);
    process.exit(1);
  }
  console.log('SKIP: bindings/node/node_modules missing (npm ci --prefix bindings/node)');
  process.exit(77);
}
const r = spawnSync(process.execPath, [tsc, '--noEmit', '-p', path.join(root, 'tsconfig.json')], {
  stdio: 'inherit',
});
process.exit(r.status === null ? 1 : r.status);
