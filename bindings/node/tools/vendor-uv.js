'use strict';
/*
 * npm's prepack script: copy the libuv adapter (lib/uv/egress_uv.c and
 * include/egress_uv.h of the libegress checkout) into uv/, which the package
 * ships and binding.gyp compiles against node's own uv.h.  The addon needs
 * its own build of the adapter: a libegress-uv linked with the system libuv
 * would bring a second libuv to Node's loop.  Outside a checkout (a package
 * being repacked) uv/ is already there and kept.
 */
const fs = require('node:fs');
const path = require('node:path');

const pkg = path.resolve(__dirname, '..');
const top = path.resolve(pkg, '..', '..');
const files = [
  [path.join(top, 'lib', 'uv', 'egress_uv.c'), 'egress_uv.c'],
  [path.join(top, 'include', 'egress_uv.h'), 'egress_uv.h'],
];
const out = path.join(pkg, 'uv');
if (!fs.existsSync(files[0][0])) {
  if (!fs.existsSync(path.join(out, 'egress_uv.c'))) {
    console.error('@portarium/libegress: no lib/uv/egress_uv.c to pack (not a libegress checkout?)');
    process.exit(1);
  }
  process.exit(0);
}
fs.mkdirSync(out, { recursive: true });
for (const [from, name] of files) fs.copyFileSync(from, path.join(out, name));
