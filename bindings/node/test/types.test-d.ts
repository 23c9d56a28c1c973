// Type-checked by `tsc --noEmit -p bindings/node/tsconfig.json` (meson test
// node-types); never run.
import * as net from 'node:net';
import * as http from 'node:http';
import * as https from 'node:https';
import * as tls from 'node:tls';
import {
  Checker,
  CheckContext,
  Decision,
  EgressDeniedError,
  EgressError,
  EgressEvent,
  EgressHttpRequestOptions,
  EgressPolicyError,
  EgressRequestInit,
  EgressUnavailableError,
  MachineRegistrationV1,
  Policy,
  Reason,
  Stats,
  install,
  runWithContext,
  specialRangesVersion,
  version,
} from '..';

const events: EgressEvent[] = [];
const checker = new Checker({
  policy: { egressAllowlist: ['https://api.example.com'], egressDenylist: [] },
  mode: 'monitor',
  dnsServers: ['127.0.0.1:5353'],
  cache: { maxEntries: 100, minTtl: 1, maxTtl: 60, negativeTtl: 5 },
  onEvent: (e) => events.push(e),
  auditRequired: true,
});
new Checker({ policyFile: '/etc/portarium/machine.json', timeoutMs: 1000, pref64: ['64:ff9b::/96'] });
new Checker({ policy: '{"egressAllowlist": []}' });
// @ts-expect-error: mode is enforce or monitor
new Checker({ policy: '{}', mode: 'audit' });

// Policies: the three shapes the library reads, and nothing else.
const registration: MachineRegistrationV1 = {
  schemaVersion: 1,
  machineId: 'machine-sor-sync-01',
  workspaceId: 'ws-acme',
  executionPolicy: { isolationMode: 'PerTenantWorker', egressAllowlist: ['https://api.crm.example.com'], workloadIdentity: 'Required' },
};
const policies: Policy[] = [
  { egressAllowlist: ['api.example.com'] },
  { egressAllowlist: [], egressDenylist: ['10.0.0.0/8'] },
  { isolationMode: 'PerTenantWorker', egressAllowlist: ['api.example.com'], workloadIdentity: 'Required' },
  registration,
];
new Checker({ policy: registration });
// @ts-expect-error: the key is egressAllowlist
new Checker({ policy: { allowlist: ['api.example.com'] } });
// @ts-expect-error: entries are an array of strings
new Checker({ policy: { egressAllowlist: 'oops' } });
// @ts-expect-error: entries are strings
checker.setPolicy({ egressAllowlist: [443] });
// @ts-expect-error: a registration holds its policy in executionPolicy
checker.setPolicy({ machineId: 'm-1', egressAllowlist: ['a.example.com'], executionPolicy: 'x' });
// @ts-expect-error: a misspelt deny list is not silently ignored
checker.setPolicy({ egressAllowlist: [], egressDenyList: ['a.example.com'] });
void policies;

async function use(): Promise<void> {
  const d: Decision = await checker.check('api.example.com', 443, { runId: 'r-1', method: 'GET' });
  const r: Reason | null = d.reason;
  if (d.verdict === 'allow') {
    for (const a of d.addresses) {
      const fam: 4 | 6 = a.family;
      net.connect({ host: a.address, port: d.port, family: fam });
    }
  }
  const s: Decision = checker.checkSync('203.0.113.7', 443);
  const u: Decision = await checker.checkUrl('https://api.example.com/v1');
  const us: Decision = checker.checkUrlSync('https://api.example.com/v1');
  void [r, s, u, us, d.matchedRule?.text, d.event?.data.denyReason];
  // @ts-expect-error: port is a number
  checker.checkSync('api.example.com', '443');
  checker.setPolicy({ egressAllowlist: ['a.example.com'] });
  const { changed }: { changed: boolean } = checker.reloadFile('/tmp/p.json');
  const st: Stats = checker.stats();
  const m: string = checker.metrics();
  const defaults: string | undefined = checker.defaultContext.machineId;
  void [changed, st.checks, st.checksByOutcome.denied.not_in_allowlist, m, defaults, version(), specialRangesVersion()];

  // Request context: the event's keys only.
  const ctx: CheckContext = { runId: 'r', correlationId: 'c', agentId: null };
  await checker.check('api.example.com', 443, ctx);
  // @ts-expect-error: runID is not a context key
  await checker.check('api.example.com', 443, { runID: 'r' });
  // @ts-expect-error: snake_case is the Python binding's alias, not a key here
  checker.checkSync('api.example.com', 443, { run_id: 'r' });
  // @ts-expect-error: context values are strings
  checker.checkSync('api.example.com', 443, { runId: 42 });
  const n: number = checker.withContext({ runId: 'r' }, (a: number) => a + 1, 1);
  const p: Promise<Decision> = runWithContext({ workspaceId: 'ws' }, () => checker.check('api.example.com', 443));
  // @ts-expect-error: an unknown key
  runWithContext({ tenant: 'x' }, () => undefined);
  void [n, p];

  net.connect({ host: 'api.example.com', port: 443, lookup: checker.lookupFor(443) });
  checker.lookupFor(443)('api.example.com', { all: true }, (err, addrs) => {
    if (!err) addrs.forEach((a) => a.address);
  });
  // @ts-expect-error: there is no port-less lookup (reading it throws)
  checker.lookup('api.example.com', () => undefined);
  const sock: net.Socket = checker.connect({ host: 'api.example.com', port: 443 }, () => undefined);
  sock.on('error', (e) => e instanceof EgressDeniedError);
  // @ts-expect-error: a Unix socket cannot be checked
  checker.connect({ path: '/var/run/docker.sock' });

  // Connect with the decision held: net, or TLS.
  const held: net.Socket = checker.connect(d);
  const heldTls: tls.TLSSocket = checker.connect(d, { tls: { rejectUnauthorized: true }, servername: 'api.example.com' });
  const heldTls2: tls.TLSSocket = checker.connect(d, { tls: true }, () => undefined);
  void [held, heldTls, heldTls2];
  // @ts-expect-error: only a check makes a Decision
  checker.connect({ verdict: 'allow', host: 'api.example.com', port: 443, addresses: [] });
  // @ts-expect-error: a lookup would connect elsewhere than what was vetted
  checker.connect(d, { lookup: () => undefined });
  // @ts-expect-error: so would a local address
  checker.connect(d, { localAddress: '10.0.0.1' });

  // HTTP helpers.
  const agent: https.Agent = checker.httpsAgent({ keepAlive: true, context: { agentId: 'agent-1' } });
  https.get('https://api.example.com/', { agent });
  // @ts-expect-error: an agent-wide host would override where each request is checked for
  checker.httpAgent({ host: '10.0.0.1' });
  // @ts-expect-error: and so would an agent-wide servername
  checker.httpsAgent({ servername: 'evil.example' });
  const opts: EgressHttpRequestOptions = { agent: checker.httpAgent(), egress: { runId: 'r', decision: d } };
  http.get('http://api.example.com/', opts);
  // @ts-expect-error: the decision option takes a Decision
  const badOpts: EgressHttpRequestOptions = { egress: { decision: 'allow' } };
  // @ts-expect-error: and context keys only
  const badOpts2: EgressHttpRequestOptions = { egress: { runID: 'r' } };
  void [badOpts, badOpts2];
  // @ts-expect-error: a connect function would connect without the check
  checker.undiciDispatcher({ connect: (_o: unknown, cb: () => void) => cb() });
  // @ts-expect-error: context keys only
  checker.undiciDispatcher({ context: { user: 'x' } });

  // fetch: typed without casts (the global fetch through an EgressRequestInit,
  // whatever RequestInit the libraries in use declare; or checker.fetch).
  const dispatcher = checker.undiciDispatcher({ connect: { rejectUnauthorized: true }, context: { agentId: 'a' } });
  const viaGlobal: EgressRequestInit = { dispatcher, headers: { 'x-egress-run-id': 'r' } };
  const res1: Response = await fetch('https://api.example.com/', viaGlobal);
  const heldInit: EgressRequestInit = { dispatcher: checker.undiciDispatcher({ decision: u }) };
  const res2: Response = await fetch('https://api.example.com/', heldInit);
  const init: EgressRequestInit = { method: 'POST', body: '{}', headers: { 'x-egress-run-id': 'r' }, egress: { runId: 'r', decision: u } };
  const res3: Response = await checker.fetch('https://api.example.com/v1', init);
  const res4: Response = await checker.fetch(new URL('https://api.example.com/'), { egress: { correlationId: 'c' } });
  void [res1, res2, res3, res4];
  // @ts-expect-error: a decision, not a verdict
  await checker.fetch('https://api.example.com/', { egress: { decision: { verdict: 'allow' } } });
  // @ts-expect-error: context keys only
  await checker.fetch('https://api.example.com/', { egress: { workspace: 'ws' } });
  // @ts-expect-error: a decision is not a dispatcher option of fetch itself
  await checker.fetch('https://api.example.com/', { decision: u });

  const uninstall: () => void = install(checker);
  uninstall();
  // @ts-expect-error: install takes a Checker
  install({ check: () => undefined });

  // Errors: one hierarchy, literal codes.
  try {
    await checker.check('evil.example.net', 443);
  } catch (e) {
    if (e instanceof EgressUnavailableError) {
      const code: 'EEGRESSUNAVAILABLE' = e.code;
      const base: EgressDeniedError = e;
      void [code, base];
    } else if (e instanceof EgressDeniedError) {
      const code: 'EEGRESSDENIED' | 'EEGRESSUNAVAILABLE' = e.code;
      const reason: Reason | null = e.reason;
      // @ts-expect-error: a denial's code is one of the two
      const wrong: 'EGRESS_EPOLICY' = e.code;
      void [code, reason, wrong, e.decision.reason];
    } else if (e instanceof EgressPolicyError) {
      const code: 'EGRESS_EPOLICY' | 'EGRESS_EIO' = e.code;
      const base: EgressError = e;
      void [code, base, e.status];
    } else if (e instanceof EgressError) {
      if (e.code === 'EGRESS_CLOSED') void e.message;
    }
  }
  checker.close();
}
void use;
