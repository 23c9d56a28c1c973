// Type-checked by `tsc --noEmit -p bindings/node/tsconfig.json` (meson test
// node-types); never run.
import * as net from 'node:net';
import * as https from 'node:https';
import { Checker, Decision, EgressDeniedError, EgressEvent, Reason, Stats } from '..';

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
  void [changed, st.checks, st.checksByOutcome.denied.not_in_allowlist, m];

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
  const agent: https.Agent = checker.httpsAgent({ keepAlive: true });
  https.get('https://api.example.com/', { agent });
  const dispatcher = checker.undiciDispatcher();
  // Node 20's RequestInit type does not list dispatcher; fetch accepts it.
  await fetch('https://api.example.com/', { dispatcher } as RequestInit);
  try {
    await checker.check('evil.example.net', 443);
  } catch (e) {
    if (e instanceof EgressDeniedError) {
      const code: 'EEGRESSDENIED' = e.code;
      void [code, e.decision.reason];
    }
  }
  checker.close();
}
void use;
