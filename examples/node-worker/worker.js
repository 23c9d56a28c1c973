// @ts-check
/*
 * node-worker: how an execution-plane worker (TypeScript on Node.js) gates
 * its adapter calls.  Every fetch goes through a dispatcher whose lookup is
 * the checker's: the connection can only go to addresses the policy vetted.
 *
 * Offline: a local HTTP server plays the System of Record (127.0.0.1), names
 * resolve from a generated hosts file, and the policy names 127.0.0.1/32 on
 * the server's port explicitly (a special-purpose range opens only by naming
 * it).  A second name, allowed by the policy, "rebinds" to the cloud
 * metadata address: the fetch is refused before any connection, and the
 * decision event says why.
 *
 *   node examples/node-worker/worker.js      (EGRESS_NODE_ADDON=path/to/egress_node.node)
 *
 * Exit status 0 when both outcomes are the expected ones (the meson test
 * 'node-worker' runs it), 1 otherwise.
 */
'use strict';

const fs = require('node:fs');
const http = require('node:http');
const os = require('node:os');
const path = require('node:path');
const { Checker, EgressDeniedError } = require('../../bindings/node');

/** @param {http.Server} server @returns {Promise<number>} */
function listen(server) {
  return new Promise((resolve) => server.listen(0, '127.0.0.1', () => {
    const addr = server.address();
    resolve(typeof addr === 'object' && addr ? addr.port : 0);
  }));
}

async function main() {
  let sorRequests = 0;
  const server = http.createServer((req, res) => {
    sorRequests++;
    res.setHeader('content-type', 'application/json');
    res.end(JSON.stringify({ contacts: [{ id: 1, name: 'Ada' }] }));
  });
  const port = await listen(server);

  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'egress-node-worker-'));
  const hostsFile = path.join(dir, 'hosts');
  fs.writeFileSync(hostsFile, [
    '127.0.0.1 crm.sor.example.test',
    '169.254.169.254 reports.sor.example.test',   // an allowed name pointing at the metadata service
  ].join('\n') + '\n');

  /** @type {object[]} */
  const events = [];
  const checker = new Checker({
    policy: {
      egressAllowlist: [`http://crm.sor.example.test:${port}/v1`, `reports.sor.example.test:${port}`,
        `127.0.0.1/32:${port}`],
    },
    hostsFile,
    auditRequired: true,             // no audit record, no call
    onEvent: (event) => { events.push(event); },
  });
  const dispatcher = checker.undiciDispatcher();

  /**
   * One adapter call, gated.
   * @param {string} adapter @param {string} url
   */
  async function adapterCall(adapter, url) {
    try {
      const res = await fetch(url, /** @type {any} */ ({ dispatcher }));
      const body = await res.json();
      console.log(`ALLOW  ${adapter}  GET ${url} -> HTTP ${res.status} ${JSON.stringify(body)}`);
      return { verdict: 'allow', status: res.status };
    } catch (e) {
      const err = /** @type {any} */ (e);
      const cause = err instanceof EgressDeniedError ? err : err && err.cause;
      if (cause instanceof EgressDeniedError) {
        const d = cause.decision;
        console.log(`DENY   ${adapter}  GET ${url}  ${d.reason}: ${d.message}`);
        return { verdict: 'deny', reason: d.reason };
      }
      throw e;
    }
  }

  const ok = await adapterCall('crm.listContacts', `http://crm.sor.example.test:${port}/v1/contacts`);
  const before = sorRequests;
  const rebind = await adapterCall('reports.fetch', `http://reports.sor.example.test:${port}/q1`);
  await new Promise((r) => setTimeout(r, 50));   // let the event queue drain

  const denialEvent = events.find((e) => /** @type {any} */ (e).data.host === 'reports.sor.example.test');
  console.log('\ndecision event of the refused call:');
  console.log(JSON.stringify(denialEvent, null, 2));

  checker.close();
  server.close();
  fs.rmSync(dir, { recursive: true, force: true });

  const good = ok.verdict === 'allow' && ok.status === 200 && rebind.verdict === 'deny' &&
    rebind.reason === 'resolved_address_forbidden' && sorRequests === before && denialEvent !== undefined &&
    /** @type {any} */ (denialEvent).data.denyReason === 'resolved_address_forbidden';
  console.log(good ? '\nnode-worker: as expected' : '\nnode-worker: UNEXPECTED OUTCOME');
  process.exitCode = good ? 0 : 1;
}

main().catch((e) => {
  console.error(e);
  process.exitCode = 1;
});
