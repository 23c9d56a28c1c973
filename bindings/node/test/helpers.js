'use strict';
// Shared by the *.test.js files (node --test also runs this file: it
// defines no tests).
const { spawn } = require('node:child_process');
const fs = require('node:fs');
const os = require('node:os');
const path = require('node:path');
const readline = require('node:readline');

const egress = require('..');

function tmpdir() {
  return fs.mkdtempSync(path.join(os.tmpdir(), 'egress-node-'));
}

function writeFile(dir, name, text) {
  const p = path.join(dir, name);
  fs.writeFileSync(p, text);
  return p;
}

/**
 * Start the loopback DNS responder (tests/dns, EGRESS_TEST_DNS) with a zone.
 * Resolves to { port, server: '127.0.0.1:PORT', stop(), counts() } or null
 * when the responder was not built (the caller skips).  With
 * { counts: true }, counts() stops the responder and resolves to the queries
 * it answered by name: { 'api.test': { total, A, AAAA }, ... }.
 */
function startDns(zone, { counts = false } = {}) {
  const exe = process.env.EGRESS_TEST_DNS;
  if (!exe || !fs.existsSync(exe)) return Promise.resolve(null);
  const dir = tmpdir();
  const zoneFile = writeFile(dir, 'zone', zone);
  const child = spawn(exe, ['--zone', zoneFile, '--stdin-lifeline'], {
    stdio: ['pipe', 'pipe', counts ? 'pipe' : 'inherit'],
  });
  let errText = '';
  if (counts) child.stderr.on('data', (b) => (errText += b));
  return new Promise((resolve, reject) => {
    const rl = readline.createInterface({ input: child.stdout });
    const timer = setTimeout(() => reject(new Error('DNS responder did not start')), 10000);
    child.on('error', reject);
    child.on('exit', (code) => reject(new Error(`DNS responder exited (${code})`)));
    rl.once('line', (line) => {
      clearTimeout(timer);
      const m = /^PORT (\d+)$/.exec(line);
      if (!m) return reject(new Error(`unexpected responder output: ${line}`));
      const port = Number(m[1]);
      resolve({
        port,
        server: `127.0.0.1:${port}`,
        stop() {
          child.removeAllListeners('exit');
          child.stdin.end();
          child.kill('SIGTERM');
        },
        counts() {
          return new Promise((done) => {
            child.removeAllListeners('exit');
            child.once('close', () => {
              const byName = {};
              // "NAME TOTAL A N AAAA N", after "total N tcp N bad N"
              for (const line of errText.split('\n')) {
                const f = line.split(' ');
                if (f.length !== 6 || f[0] === 'total' || f[2] !== 'A') continue;
                byName[f[0]] = { total: Number(f[1]), A: Number(f[3]), AAAA: Number(f[5]) };
              }
              done(byName);
            });
            child.stdin.end();
          });
        },
      });
    });
  });
}

/** Wait until pred() is true (polling), or fail after ms. */
async function waitFor(pred, ms = 5000, what = 'condition') {
  const end = Date.now() + ms;
  while (!pred()) {
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 5));
  }
}

module.exports = { egress, tmpdir, writeFile, startDns, waitFor };
