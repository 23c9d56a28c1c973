// Type declarations of @portarium/libegress (hand-written; see index.js).
import type { Agent as HttpAgent, AgentOptions as HttpAgentOptions } from 'node:http';
import type { Socket, TcpNetConnectOpts } from 'node:net';
import type { Agent as HttpsAgent, AgentOptions as HttpsAgentOptions } from 'node:https';
import type { LookupAddress, LookupOneOptions, LookupAllOptions, LookupOptions } from 'node:dns';
import type { Agent as UndiciAgent } from 'undici-types';

export type Verdict = 'allow' | 'deny';
export type Outcome = 'allowed' | 'denied' | 'enforcement_unavailable';
export type Reason =
  | 'invalid_host'
  | 'invalid_port'
  | 'empty_allowlist'
  | 'explicit_deny'
  | 'not_in_allowlist'
  | 'port_not_allowed'
  | 'special_purpose_address'
  | 'no_such_host'
  | 'resolved_address_forbidden'
  | 'dns_unavailable'
  | 'audit_unavailable'
  | 'internal_error';
export type Mode = 'enforce' | 'monitor';

/** A policy document: {egressAllowlist, egressDenylist?}, a
 *  MachineExecutionPolicyV1 or a MachineRegistrationV1 record. */
export type Policy = { egressAllowlist: string[]; egressDenylist?: string[] } | Record<string, unknown>;

export interface MatchedRule {
  index: number;
  list: 'allow' | 'deny';
  text: string;
}

export interface CheckedAddress {
  address: string;
  verdict: Verdict;
  /** null when the address passed vetting */
  reason: Reason | null;
  /** DNS TTL in seconds; null for IP literals */
  ttl: number | null;
  family: 4 | 6;
}

/** The CloudEvents 1.0 decision event (type io.portarium.egress.attempt). */
export interface EgressEvent {
  specversion: '1.0';
  type: string;
  source: string;
  id: string;
  time: string;
  datacontenttype: 'application/json';
  subject: string;
  data: {
    workspaceId: string | null;
    agentId: string | null;
    machineId: string | null;
    runId: string | null;
    correlationId: string | null;
    method: string | null;
    destination: string;
    host: string | null;
    port: number;
    outcome: Outcome;
    denyReason: Reason | null;
    enforcementMode: Mode;
    wouldDeny: boolean;
    matchedRule: MatchedRule | null;
    addresses: Array<Omit<CheckedAddress, 'family'>>;
    dnsMs: number;
    latencyMs: number;
    policyDigest: string | null;
    specialRangesVersion: string;
    url?: string;
  };
}

export interface Decision {
  /** What the caller must do. */
  verdict: Verdict;
  /** What the policy says (monitor mode may allow a denied outcome). */
  outcome: Outcome;
  /** null when allowed */
  reason: Reason | null;
  message: string;
  /** canonical host (as given when invalid) */
  host: string | null;
  port: number;
  mode: Mode;
  wouldDeny: boolean;
  matchedRule: MatchedRule | null;
  addresses: CheckedAddress[];
  /** "host:port:addr,..." for CURLOPT_RESOLVE; null unless an allowed name */
  curlResolve: string | null;
  dnsMs: number;
  latencyMs: number;
  policyDigest: string | null;
  /** the URL as given, for checkUrl / checkUrlSync */
  url: string | null;
  /** The decision event: always for check()/checkUrl()/checkUrlSync(); for
   *  checkSync() only when the checker has an event sink. */
  event: EgressEvent | null;
}

export interface CheckContext {
  method?: string;
  workspaceId?: string;
  agentId?: string;
  machineId?: string;
  runId?: string;
  correlationId?: string;
}

export interface CacheOptions {
  /** names kept (0 disables the cache); default 4096 */
  maxEntries?: number;
  /** TTL clamp in seconds; defaults 5 and 300 */
  minTtl?: number;
  maxTtl?: number;
  /** NXDOMAIN TTL in seconds; default 5 */
  negativeTtl?: number;
}

export interface CheckerOptions {
  /** JSON text or a parsed policy object (this or policyFile). */
  policy?: Policy | string;
  policyFile?: string;
  mode?: Mode;
  /** "IP[:PORT]" or "[v6]:PORT" each */
  dnsServers?: string[];
  /** process-wide in c-ares 1.18 (CARES_HOSTS) */
  hostsFile?: string;
  timeoutMs?: number;
  cache?: CacheOptions;
  /** drop forbidden addresses of a mixed answer instead of denying */
  filter?: boolean;
  pref64?: string[];
  auditRequired?: boolean;
  eventSource?: string;
  /** JSON Lines file (exclusive with onEvent) */
  eventsPath?: string;
  /** Called on the JS thread with each decision event. */
  onEvent?: (event: EgressEvent) => void;
  /** events queued for onEvent before delivery fails; default 65536 */
  eventQueueSize?: number;
  /** path of egress_node.node (else EGRESS_NODE_ADDON, then build dirs) */
  addon?: string;
}

export interface Stats {
  checks: number;
  dnsQueries: number;
  dnsFailures: number;
  cacheHits: number;
  cacheMisses: number;
  eventsEmitted: number;
  eventsFailed: number;
  policySwaps: number;
  policyReloadFailures: number;
  /** non-zero counts by outcome, then reason ("none" for allowed) */
  checksByOutcome: Record<Outcome, Partial<Record<Reason | 'none', number>>>;
}

/** dns.lookup's signature. */
export interface EgressLookup {
  (hostname: string, callback: (err: NodeJS.ErrnoException | null, address: string, family: number) => void): void;
  (hostname: string, options: number | LookupOneOptions,
   callback: (err: NodeJS.ErrnoException | null, address: string, family: number) => void): void;
  (hostname: string, options: LookupAllOptions,
   callback: (err: NodeJS.ErrnoException | null, addresses: LookupAddress[]) => void): void;
  (hostname: string, options: LookupOptions,
   callback: (err: NodeJS.ErrnoException | null, address: string | LookupAddress[], family: number) => void): void;
}

export class Checker {
  constructor(options: CheckerOptions);
  readonly mode: Mode;
  readonly closed: boolean;
  /**
   * Removed: reading it throws (code EGRESS_LOOKUP_NEEDS_PORT).  dns.lookup
   * has no port, so a port-less lookup checks the wrong destination: use
   * lookupFor(port), or the guarded agents, dispatcher and connect().
   * @deprecated
   */
  readonly lookup: never;
  /** Check off the event loop (libuv thread pool). */
  check(host: string, port: number, ctx?: CheckContext): Promise<Decision>;
  /** Check on the calling thread: for IP literals and cached names. */
  checkSync(host: string, port: number, ctx?: CheckContext): Decision;
  checkUrl(url: string, ctx?: CheckContext): Promise<Decision>;
  checkUrlSync(url: string, ctx?: CheckContext): Decision;
  setPolicy(policy: Policy | string): void;
  reloadFile(path?: string): { changed: boolean };
  policy(): { digest: string; egressAllowlist: string[]; egressDenylist: string[] };
  stats(): Stats;
  /** Prometheus text exposition format. */
  metrics(): string;
  close(): void;
  /**
   * A dns.lookup-compatible function checking HOSTNAME:port.  Not a whole
   * guard: Node never calls a lookup for an IP literal, and @p port must be
   * the port actually connected to.  Prefer connect() and the agents.
   */
  lookupFor(port: number): EgressLookup;
  /**
   * net.connect that connects only where the policy allows: IP literals are
   * checked, names resolve through the vetted lookup bound to options.port,
   * and lookup, localAddress, fd (anything that connects elsewhere) are
   * refused.  A refusal is the socket's 'error' (EgressDeniedError).
   */
  connect(options: TcpNetConnectOpts, connectListener?: () => void): Socket;
  /** Checks every connection like connect(); socketPath and the options
   *  connect() refuses are refused, with one deny event each. */
  httpAgent(options?: HttpAgentOptions): HttpAgent;
  httpsAgent(options?: HttpsAgentOptions): HttpsAgent;
  /** An undici Agent for fetch({dispatcher}); needs the undici package.
   *  connect must be options (not a function); no factory; socketPath,
   *  connect.path, connect.lookup and localAddress are refused. */
  undiciDispatcher(options?: Record<string, unknown>): UndiciAgent;
}

export class EgressDeniedError extends Error {
  constructor(decision: Decision, message?: string);
  readonly code: 'EEGRESSDENIED';
  readonly decision: Decision;
}

export class EgressUnavailableError extends Error {
  constructor(decision: Decision, message?: string);
  readonly code: 'EEGRESSUNAVAILABLE';
  readonly decision: Decision;
}

/** Load the addon now (optional: the first Checker does it). */
export function load(path?: string): unknown;
export const addonPath: string | null;
export const version: string;
export const specialRangesVersion: string;
