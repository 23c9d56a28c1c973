'use strict';
// index.js reads decisions by name (N_VERDICT, S_HOST, ...) from what the
// addon packs by name (PACKED_NUMBERS, PACKED_STRINGS in src/addon.h): both
// sources are read here, and the built addon's layout() compared with them,
// so a field added, dropped or moved on one side only fails.  load()
// refuses an addon whose layout differs.  The status codes and request
// context keys the addon hands over follow include/egress.h.
const test = require('node:test');
const assert = require('node:assert/strict');
const fs = require('node:fs');
const path = require('node:path');
const { egress } = require('./helpers');

const PKG = path.join(__dirname, '..');
const TOP = path.join(PKG, '..', '..');
const layout = egress._packedLayout;

function native() {
  new egress.Checker({ policy: { egressAllowlist: [] } }).close(); // loads and sets up the addon
  return require('../loader').load();
}

// The X(...) entries of an X-macro list, in order.
function xmacro(text, name) {
  const m = new RegExp(`#define ${name}\\(X\\)((?:.*\\\\\\n)*.*)`).exec(text);
  assert.ok(m, `no ${name}(X) found`);
  return [...m[1].replace(/\/\*[\s\S]*?\*\//g, '').matchAll(/X\(([A-Z0-9_]+)[,)]/g)].map((x) => x[1]);
}

// The addon's side, from its source: names in order, then the fixed ends.
function addonSource() {
  const h = fs.readFileSync(path.join(PKG, 'src', 'addon.h'), 'utf8');
  const numbers = {};
  xmacro(h, 'PACKED_NUMBERS').forEach((n, i) => { numbers[`N_${n}`] = i; });
  const header = /\bN_HEADER = (\d+)/.exec(h);
  assert.ok(header, 'addon.h sets no N_HEADER');
  numbers.N_HEADER = +header[1];
  const strings = {};
  const s = xmacro(h, 'PACKED_STRINGS');
  s.forEach((n, i) => { strings[`S_${n}`] = i; });
  strings.S_COUNT = s.length;
  return { numbers, strings };
}

// index.js's side, from its source: every top-level N_/S_ constant.
function indexSource() {
  const js = fs.readFileSync(path.join(PKG, 'index.js'), 'utf8');
  const numbers = {};
  const strings = {};
  for (const [, name, value] of js.matchAll(/^const ([NS]_[A-Z0-9_]+) = (\d+);/gm))
    (name[0] === 'N' ? numbers : strings)[name] = +value;
  return { numbers, strings };
}

test('src/addon.h and index.js name the same packed slots and fields at the same indexes', () => {
  const a = addonSource();
  const j = indexSource();
  assert.ok(Object.keys(a.numbers).length >= 15 && Object.keys(a.strings).length >= 8, JSON.stringify(a));
  assert.deepEqual(j, a);
  const want = layout.expected();
  assert.deepEqual({ numbers: want.numbers, strings: want.strings }, a,
    'packedLayout() in index.js leaves out a constant it declares');
});

test('the built addon hands over the layout index.js reads by', () => {
  const got = native().layout();
  assert.deepEqual(JSON.parse(JSON.stringify(got)), JSON.parse(JSON.stringify(layout.expected())));
  assert.doesNotThrow(() => layout.check(got, 'built'));
});

test('an addon packing otherwise is refused, naming the difference', () => {
  const good = () => JSON.parse(JSON.stringify(layout.expected()));
  const cases = [
    ['two slots swapped', (l) => { l.numbers.N_PORT = 4; l.numbers.N_HAS_RULE = 3; }, /N_PORT is 4 there, 3 here/],
    ['a field added in the addon', (l) => { l.strings.S_EXTRA = 7; l.strings.S_COUNT = 8; }, /S_COUNT is 8 there, 7 here/],
    ['a slot added in the addon only', (l) => { l.numbers.N_EXTRA = 16; }, /N_EXTRA is 16 there, absent here/],
    ['a field dropped from the addon', (l) => { delete l.strings.S_URL; }, /S_URL is absent there, 6 here/],
    ['a wider header', (l) => { l.numbers.N_HEADER = 17; }, /N_HEADER is 17 there, 16 here/],
    ['context keys in another order', (l) => { l.context.reverse(); }, /request context keys/],
    ['a context key renamed', (l) => { l.context[4] = 'run_id'; }, /request context keys/],
    ['no tables', (l) => { delete l.numbers; delete l.strings; }, /N_VERDICT is absent there/],
  ];
  for (const [what, edit, message] of cases) {
    const l = good();
    edit(l);
    assert.throws(() => layout.check(l, '/x/egress_node.node'),
      (e) => e.code === 'EGRESS_ADDON_MISMATCH' && message.test(e.message) && e.message.includes('/x/egress_node.node'),
      what);
  }
  for (const bad of [null, undefined, 42, 'layout'])
    assert.throws(() => layout.check(bad, 'x'), { code: 'EGRESS_ADDON_MISMATCH', message: /no layout\(\)/ });
});

test('every status of include/egress.h has its error code and name, in order', () => {
  const h = fs.readFileSync(path.join(TOP, 'include', 'egress.h'), 'utf8');
  const m = /#define EGRESS_STATUS_MAP\(X\)((?:.*\\\n)*.*)/.exec(h);
  assert.ok(m, 'no EGRESS_STATUS_MAP in egress.h');
  const want = [...m[1].matchAll(/X\(([A-Z0-9_]+), *\d+, *"([a-z_]+)"/g)].map((x) => [`EGRESS_${x[1]}`, x[2]]);
  assert.ok(want.length >= 8, JSON.stringify(want));
  assert.deepEqual(native().tables()[4], want);
});

test('the context keys are EGRESS_FIELD_MAP of include/egress.h, by value', () => {
  const h = fs.readFileSync(path.join(TOP, 'include', 'egress.h'), 'utf8');
  const m = /#define EGRESS_FIELD_MAP\(X\)((?:.*\\\n)*.*)/.exec(h);
  assert.ok(m, 'no EGRESS_FIELD_MAP in egress.h');
  const fields = [...m[1].matchAll(/X\(([A-Z0-9_]+), *(\d+), *"(\w+)"\)/g)];
  assert.ok(fields.length >= 6, JSON.stringify(fields));
  const keys = [];
  for (const [, , value, key] of fields) keys[+value] = key;
  assert.deepEqual(native().layout().context, keys);
  assert.deepEqual(layout.expected().context, keys);
});
