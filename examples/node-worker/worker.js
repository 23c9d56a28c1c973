// @ts-check
/*
 * node-worker: how an execution-plane worker (TypeScript on Node.js) gates
 * its adapter calls.  egress.install() routes Node's own fetch (and
 * http.get / https.get) through the checker: every request is checked
 * before it is sent — its URL, method and the run's context — with one
 * decision event per request, kept-alive connections included, and a
 * connection only ever goes to addresses that request's decision vetted.
 *
 * Offline: a local HTTP server plays the System of Record (127.0.0.1), names
 * resolve from a generated hosts file, and the policy names 127.0.0.1/32 on
 * the server's port explicitly (a special-purpose range opens only by naming
 * it).  The worker:
 *   1. lists contacts twice (allowed; the second request rides the kept-alive
 *      connection and is still checked, with its own event);
 *   2. calls a second name, allowed by the policy, that "rebinds" to the
 *      cloud metadata address: refused before any connection;
 *   3. checks a call first and then makes it with that decision (one event);
 *   4. takes a policy update that revokes the CRM: the next call is refused
 *      on the spot, although a kept-alive connection to the CRM was open.
 *
 *   node examples/node-worker/worker.js      (EGRESS_NODE_ADDON=path/to/egress_node.node)
 *
 * Exit status 0 when every outcome is the expected one (the meson test
 * 'node-worker' runs it), 1 otherwise.
 */
'use strict';

const fs = require('node:fs');
const http = require('node:http');
const os = require('node:os');
const path = require('node:path');
const egress = require('../../bindings/node');
const { Checker, EgressDeniedError } = egress;

/** @param {http.Server} server @returns {Promise<number>} */
function listen(server) {
  return new Promise((resolve) => server.listen(0, '127.0.0.1', () => {
    const addr = server.address();
    resolve(typeof addr === 'object' && addr ? addr.port : 0);
  }));
}

async function main() {
  let sorRequests = 0;
  let sorConnections = 0;
  const server = http.createServer((req, res) => {
    sorRequests++;
    res.setHeader('content-type', 'application/json');
    res.end(JSON.stringify({ contacts: [{ id: 1, name: 'Ada' }] }));
  });
  server.on('connection', () => sorConnections++);
  const port = await listen(server);

  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'egress-node-worker-'));
  const hostsFile = path.join(dir, 'hosts');
  fs.writeFileSync(hostsFile, [
    '127.0.0.1 crm.sor.example.test',
    '169.254.169.254 reports.sor.example.test',   // an allowed name pointing at the metadata service
  ].join('\n') + '\n');

  const policy = (/** @type {string[]} */ extra) => ({
    // A registration record: its machineId and workspaceId go into every event.
    machineId: 'machine-sor-sync-01',
    workspaceId: 'ws-acme',
    executionPolicy: {
      isolationMode: 'PerTenantWorker',
      egressAllowlist: [`reports.sor.example.test:${port}`, `127.0.0.1/32:${port}`, ...extra],
      workloadIdentity: 'Required',
    },
  });

  /** @type {import('../../bindings/node').EgressEvent[]} */
  const events = [];
  const checker = new Checker({
    policy: policy([`http://crm.sor.example.test:${port}/v1`]),
    hostsFile,
    auditRequired: true,             // no audit record, no call
    onEvent: (event) => { events.push(event); },
  });
  const uninstall = egress.install(checker);

  /**
   * One adapter call, gated: a plain fetch, with the run's context.
   * @param {string} adapter @param {string} url @param {RequestInit} [init]
   */
  async function adapterCall(adapter, url, init) {
    return egress.runWithContext({ runId: 'run-42', agentId: adapter }, async () => {
      try {
        const res = await fetch(url, init);
        const body = await res.json();
        console.log(`ALLOW  ${adapter}  GET ${url} -> HTTP ${res.status} ${JSON.stringify(body)}`);
        return { verdict: 'allow', status: res.status };
      } catch (e) {
        const cause = e instanceof EgressDeniedError ? e : e instanceof Error ? e.cause : undefined;
        if (cause instanceof EgressDeniedError) {
          console.log(`DENY   ${adapter}  GET ${url}  ${cause.reason}: ${cause.decision.message}`);
          return { verdict: 'deny', reason: cause.reason };
        }
        throw e;
      }
    });
  }

  const contacts = `http://crm.sor.example.test:${port}/v1/contacts`;
  const first = await adapterCall('crm.listContacts', contacts);
  const second = await adapterCall('crm.listContacts', contacts);
  const afterTwo = { requests: sorRequests, connections: sorConnections };

  const rebind = await adapterCall('reports.fetch', `http://reports.sor.example.test:${port}/q1`);

  // Check first, then call with the decision: one event for both.
  const held = await checker.checkUrl(contacts, { method: 'GET', runId: 'run-42', agentId: 'crm.sync' });
  const eventsBefore = events.length;
  const heldRes = await checker.fetch(contacts, { egress: { decision: held } });
  await heldRes.text();
  const heldOneEvent = events.length === eventsBefore;
  console.log(`ALLOW  crm.sync  GET ${contacts} with a held decision -> HTTP ${heldRes.status} (no second event: ${heldOneEvent})`);

  // A policy update revokes the CRM while a kept-alive connection to it is open.
  checker.setPolicy(policy([]));
  const beforeRevoked = sorRequests;
  const revoked = await adapterCall('crm.listContacts', contacts);

  const denialEvent = events.find((e) => e.data.host === 'reports.sor.example.test');
  console.log('\ndecision event of the refused call:');
  console.log(JSON.stringify(denialEvent, null, 2));

  uninstall();
  checker.close();
  server.close();
  fs.rmSync(dir, { recursive: true, force: true });

  const calls = events.filter((e) => e.data.runId === 'run-42');
  const good = first.verdict === 'allow' && second.verdict === 'allow' &&
    afterTwo.requests === 2 && afterTwo.connections === 1 &&
    rebind.verdict === 'deny' && rebind.reason === 'resolved_address_forbidden' &&
    denialEvent !== undefined && denialEvent.data.denyReason === 'resolved_address_forbidden' &&
    heldRes.status === 200 && heldOneEvent &&
    revoked.verdict === 'deny' && revoked.reason === 'not_in_allowlist' && sorRequests === beforeRevoked &&
    calls.length === 5 && calls.every((e) => e.data.machineId === 'machine-sor-sync-01' && e.data.workspaceId === 'ws-acme');
  console.log(good ? '\nnode-worker: as expected' : '\nnode-worker: UNEXPECTED OUTCOME');
  process.exitCode = good ? 0 : 1;
}

main().catch((e) => {
  console.error(e);
  process.exitCode = 1;
});
