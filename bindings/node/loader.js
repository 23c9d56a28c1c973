'use strict';
/*
 * Finding and opening the native addon (egress_node.node).
 *
 * Where it looks, in order:
 *   1. the path given to load() (new Checker({ addon })), else the
 *      EGRESS_NODE_ADDON environment variable.  Either one is authoritative:
 *      when told, the loader opens that file (a sanitizer build included) or
 *      throws; it never falls back to another copy.
 *   2. the node-gyp build of an installed package: build/Release/ (then
 *      build/Debug/) next to this file (`npm install` builds it).
 *   3. egress_node.node next to this file (`meson install` puts it there).
 *   4. in a libegress source checkout only: the meson build directories
 *      ../../build*\/ and ../../build*\/*\/ (tools/dev.sh uses build/release,
 *      build/asan, ...), in name order.
 * Candidates 2-4 are skipped when they are sanitizer builds: an ASan or
 * TSan runtime cannot be loaded into a node binary that was not started with
 * it, and tries to end the process ("ASan runtime does not come first in
 * initial library list"), which no JS code could catch.  A meson build
 * directory says so in meson-info/intro-buildoptions.json (b_sanitize); any
 * candidate says so in its ELF dynamic section (DT_NEEDED libasan/libtsan/
 * libubsan/... or undefined __asan_/__tsan_/... symbols).
 *
 * Every failure is a JS Error with a code:
 *   EGRESS_NO_ADDON           nothing to load (the message lists what was
 *                             tried and why each was skipped)
 *   EGRESS_ADDON_LOAD_FAILED  a file was there but did not load (cause set)
 */
const fs = require('node:fs');
const os = require('node:os');
const path = require('node:path');

const ADDON = 'egress_node.node';

let native = null;
let loadedFrom = null;
const listeners = [];

/*
 * The node binary carries its own, newer c-ares and exports its symbols.
 * Loaded the ordinary way, the addon's calls into c-ares would bind to
 * those instead of the libcares.so.2 that libegress was built against
 * (different ABI and behaviour: every DNS query then times out).
 * RTLD_DEEPBIND puts the addon's own dependencies first (libegress.so.0 and
 * its libcares.so.2 when the addon links the shared library); Node-API
 * symbols, found only in the node binary, still resolve there.
 */
function dlopenFlags() {
  const c = os.constants.dlopen || {};
  if (c.RTLD_DEEPBIND === undefined) return c.RTLD_LAZY;
  return (c.RTLD_NOW || 0) | c.RTLD_DEEPBIND;
}

function isDir(p) {
  try {
    return fs.statSync(p).isDirectory();
  } catch {
    return false;
  }
}

function subdirs(dir) {
  let entries;
  try {
    entries = fs.readdirSync(dir, { withFileTypes: true });
  } catch {
    return [];
  }
  return entries
    .filter((e) => e.isDirectory() || (e.isSymbolicLink() && isDir(path.join(dir, e.name))))
    .map((e) => e.name)
    .sort();
}

/* The top of a libegress source checkout this file sits in, or null. */
function sourceCheckout(dir) {
  const top = path.resolve(dir, '..', '..');
  try {
    const text = fs.readFileSync(path.join(top, 'meson.build'), 'utf8');
    return /project\(\s*'libegress'/.test(text) ? top : null;
  } catch {
    return null;
  }
}

/**
 * The places load() looks at, in order, as { file, source } where source is
 * 'explicit', 'env', 'node-gyp', 'package' or 'meson' (and, for 'meson',
 * buildDir: the meson build directory).  Existence is not checked here.
 */
function candidates(explicit, dir = __dirname) {
  if (explicit) return [{ file: path.resolve(explicit), source: 'explicit' }];
  if (process.env.EGRESS_NODE_ADDON)
    return [{ file: path.resolve(process.env.EGRESS_NODE_ADDON), source: 'env' }];
  const list = [
    { file: path.join(dir, 'build', 'Release', ADDON), source: 'node-gyp' },
    { file: path.join(dir, 'build', 'Debug', ADDON), source: 'node-gyp' },
    { file: path.join(dir, ADDON), source: 'package' },
  ];
  const top = sourceCheckout(dir);
  if (top) {
    const rel = path.join('bindings', 'node', ADDON);
    for (const name of subdirs(top)) {
      if (!name.startsWith('build')) continue;
      const b = path.join(top, name);
      list.push({ file: path.join(b, rel), source: 'meson', buildDir: b });
      for (const sub of subdirs(b)) {
        const bs = path.join(b, sub);
        list.push({ file: path.join(bs, rel), source: 'meson', buildDir: bs });
      }
    }
  }
  return list;
}

/* b_sanitize of a meson build directory: null when none or unknown. */
function mesonSanitize(buildDir) {
  let opts;
  try {
    opts = JSON.parse(fs.readFileSync(path.join(buildDir, 'meson-info', 'intro-buildoptions.json'), 'utf8'));
  } catch {
    return null;
  }
  const o = Array.isArray(opts) ? opts.find((x) => x && x.name === 'b_sanitize') : null;
  if (!o) return null;
  // A string in meson 1.0 ('address,undefined'), a list in later versions.
  const v = Array.isArray(o.value) ? o.value.join(',') : String(o.value);
  return v === '' || v === 'none' ? null : v;
}

const SANITIZER_LIBS = /^lib(asan|tsan|ubsan|hwasan|msan|lsan)\.so/;
const SANITIZER_SYMS = /^__(asan|tsan|ubsan|hwasan|msan|lsan)_/;

/*
 * What an ELF file's dynamic section says of sanitizers: the first
 * sanitizer runtime it needs or sanitizer symbol it leaves undefined, or
 * null (none, or not an ELF file this reader understands).
 */
function elfSanitizer(file) {
  let b;
  try {
    b = fs.readFileSync(file);
  } catch {
    return null;
  }
  if (b.length < 64 || b.readUInt32BE(0) !== 0x7f454c46) return null;
  const is64 = b[4] === 2;
  const le = b[5] === 1;
  const u16 = (o) => (le ? b.readUInt16LE(o) : b.readUInt16BE(o));
  const u32 = (o) => (le ? b.readUInt32LE(o) : b.readUInt32BE(o));
  const addr = (o) => (is64 ? Number(le ? b.readBigUInt64LE(o) : b.readBigUInt64BE(o)) : u32(o));
  try {
    const shoff = addr(is64 ? 0x28 : 0x20);
    const shentsize = u16(is64 ? 0x3a : 0x2e);
    const shnum = u16(is64 ? 0x3c : 0x30);
    const sections = [];
    for (let i = 0; i < shnum; i++) {
      const s = shoff + i * shentsize;
      sections.push({
        type: u32(s + 4),
        offset: addr(is64 ? s + 0x18 : s + 0x10),
        size: addr(is64 ? s + 0x20 : s + 0x14),
        link: u32(is64 ? s + 0x28 : s + 0x18),
        entsize: addr(is64 ? s + 0x38 : s + 0x24),
      });
    }
    const str = (sec, off) => {
      const start = sec.offset + off;
      const end = b.indexOf(0, start);
      return b.toString('latin1', start, end < 0 ? sec.offset + sec.size : end);
    };
    for (const sec of sections) {
      if (sec.type === 6 /* SHT_DYNAMIC */) {
        const strtab = sections[sec.link];
        const ent = is64 ? 16 : 8;
        for (let o = sec.offset; o + ent <= sec.offset + sec.size; o += ent) {
          const tag = addr(o);
          if (tag === 0) break;
          if (tag === 1 /* DT_NEEDED */) {
            const name = str(strtab, addr(o + (is64 ? 8 : 4)));
            if (SANITIZER_LIBS.test(name)) return name;
          }
        }
      } else if (sec.type === 11 /* SHT_DYNSYM */) {
        const strtab = sections[sec.link];
        const ent = sec.entsize || (is64 ? 24 : 16);
        for (let o = sec.offset + ent; o + ent <= sec.offset + sec.size; o += ent) {
          const shndx = u16(is64 ? o + 6 : o + 14);
          if (shndx !== 0) continue; // defined here
          const name = str(strtab, u32(o));
          if (SANITIZER_SYMS.test(name)) return name;
        }
      }
    }
  } catch {
    return null; // truncated or odd: no verdict from this reader
  }
  return null;
}

/* Why a found candidate must not be loaded unasked, or null. */
function sanitizerBuild(c) {
  if (c.buildDir) {
    const s = mesonSanitize(c.buildDir);
    if (s) return `sanitizer build (b_sanitize=${s})`;
  }
  const e = elfSanitizer(c.file);
  return e ? `sanitizer build (needs ${e})` : null;
}

function fail(code, message, cause) {
  const err = new Error(message, cause ? { cause } : undefined);
  err.code = code;
  return err;
}

/**
 * Load the native addon (once per module instance) and return its exports.
 * See the top of this file for where it looks.
 */
function load(explicit) {
  if (native) return native;
  const tried = [];
  let lastError = null;
  for (const c of candidates(explicit)) {
    const told = c.source === 'explicit' || c.source === 'env';
    const where = c.source === 'env' ? `EGRESS_NODE_ADDON=${c.file}` : c.file;
    if (!fs.existsSync(c.file)) {
      if (told) throw fail('EGRESS_NO_ADDON', `libegress: native addon not found: ${where}`);
      tried.push(`${c.file} (absent)`);
      continue;
    }
    if (!told) {
      const why = sanitizerBuild(c);
      if (why) {
        tried.push(`${c.file} (skipped: ${why}; set EGRESS_NODE_ADDON to load it anyway)`);
        continue;
      }
    }
    const mod = { exports: {} };
    try {
      process.dlopen(mod, c.file, dlopenFlags());
    } catch (e) {
      if (told) throw fail('EGRESS_ADDON_LOAD_FAILED', `libegress: cannot load ${where}: ${e.message}`, e);
      tried.push(`${c.file} (failed: ${e.message})`);
      lastError = e;
      continue;
    }
    native = mod.exports;
    loadedFrom = c.file;
    for (const fn of listeners) fn(loadedFrom);
    return native;
  }
  const hint =
    'install libegress (pkg-config must find libegress) and npm install the package, ' +
    'which builds the addon with node-gyp; or build it with meson ' +
    '(ninja -C BUILD bindings/node/egress_node.node) and set EGRESS_NODE_ADDON.';
  if (lastError)
    throw fail('EGRESS_ADDON_LOAD_FAILED', `libegress: no native addon could be loaded; ${hint} Tried: ${tried.join(', ')}`, lastError);
  throw fail('EGRESS_NO_ADDON', `libegress: native addon egress_node.node not found; ${hint} Tried: ${tried.join(', ')}`);
}

/** The file the addon was loaded from, or null before it is. */
function addonPath() {
  return loadedFrom;
}

/** Call fn(path) once the addon is loaded (now, if it is already). */
function onLoad(fn) {
  if (loadedFrom) fn(loadedFrom);
  else listeners.push(fn);
}

module.exports = { candidates, load, dlopenFlags, addonPath, onLoad, sanitizerBuild, elfSanitizer, mesonSanitize };
