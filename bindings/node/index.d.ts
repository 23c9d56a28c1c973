// Type declarations of @portarium/libegress (hand-written; see index.js).
import type { Agent as HttpAgent, AgentOptions as HttpAgentOptions, RequestOptions as HttpRequestOptions } from 'node:http';
import type { Socket, TcpNetConnectOpts } from 'node:net';
import type { TLSSocket, ConnectionOptions as TlsConnectionOptions } from 'node:tls';
import type { Agent as HttpsAgent, AgentOptions as HttpsAgentOptions, RequestOptions as HttpsRequestOptions } from 'node:https';
import type { LookupAddress, LookupOneOptions, LookupAllOptions, LookupOptions } from 'node:dns';
import type { Agent as UndiciAgent, Dispatcher } from 'undici-types';

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

/** `{egressAllowlist, egressDenylist?}`: the allow and deny entries (see the README for the grammar). */
export interface EgressAllowlistPolicy {
  egressAllowlist: string[];
  egressDenylist?: string[];
}

/** A machine's execution policy (MachineExecutionPolicyV1). */
export interface MachineExecutionPolicyV1 {
  isolationMode?: string;
  egressAllowlist: string[];
  egressDenylist?: string[];
  workloadIdentity?: string;
}

/**
 * A MachineRegistrationV1 record: its executionPolicy is the policy, and its
 * top-level machineId and workspaceId are the request context of every check
 * that gives none (Checker.defaultContext).
 */
export interface MachineRegistrationV1 {
  schemaVersion?: number;
  machineId?: string;
  workspaceId?: string;
  endpointUrl?: string;
  active?: boolean;
  displayName?: string;
  capabilities?: string[];
  registeredAtIso?: string;
  authConfig?: { kind?: string; secretRef?: string };
  executionPolicy: MachineExecutionPolicyV1;
}

/** A policy document: one of the three shapes the library reads. */
export type Policy = EgressAllowlistPolicy | MachineExecutionPolicyV1 | MachineRegistrationV1;

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

declare const decisionBrand: unique symbol;

/**
 * The result of one check.  Only a check makes one: connect(decision) and
 * the helpers' decision options refuse objects built or copied by hand.
 */
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
  /** Made by a check (no such field at run time). */
  readonly [decisionBrand]: true;
}

/**
 * Request context: the decision event's keys.  Values up to 1024 bytes
 * without control characters; null/undefined mean "not given"; any other
 * key is refused (TypeError).
 */
export interface CheckContext {
  method?: string | null;
  workspaceId?: string | null;
  agentId?: string | null;
  machineId?: string | null;
  runId?: string | null;
  correlationId?: string | null;
}

/** Per-request options of the HTTP helpers (`egress` on a request). */
export interface EgressRequestOptions extends CheckContext {
  /** A decision already made for this request (its URL or host and port,
   *  its method): used instead of a check, so check-then-call is one event.
   *  Used once, only with the checker whose check made it, and only under
   *  the policy it was made under. */
  decision?: Decision;
}

/**
 * fetch()'s init with the `egress` option of Checker.fetch, and the
 * `dispatcher` Node's fetch takes (missing from RequestInit when the DOM
 * library is in use): an init of this type passes to the global fetch as it
 * is, no cast.
 */
export interface EgressRequestInit extends RequestInit {
  egress?: EgressRequestOptions;
  /** For the global fetch; Checker.fetch takes only a dispatcher of its own checker. */
  dispatcher?: Dispatcher;
}

/** http.request() options with the `egress` option of the guarded agents. */
export interface EgressHttpRequestOptions extends HttpRequestOptions {
  egress?: EgressRequestOptions;
}

/** https.request() options with the `egress` option of the guarded agents. */
export interface EgressHttpsRequestOptions extends HttpsRequestOptions {
  egress?: EgressRequestOptions;
}

/** What a guarded agent refuses in its constructor (a TypeError): Node's
 *  agent lets these win over each request's, which would send requests
 *  elsewhere than where they were checked.  Give them per request. */
export type EgressAgentTargetOption = 'host' | 'hostname' | 'port' | 'servername';

/** Options a guarded agent adds to http(s).Agent's. */
export interface EgressAgentOptions {
  /** Request context for every request of this agent. */
  context?: CheckContext;
}

/** undici Agent options of Checker.undiciDispatcher(). */
export interface EgressDispatcherOptions extends Omit<UndiciAgent.Options, 'connect' | 'factory'> {
  /** Connection options (not a function: it would connect without the
   *  check).  socketPath, path, lookup and localAddress are refused. */
  connect?: Omit<TlsConnectionOptions, 'socket' | 'lookup' | 'path' | 'localAddress' | 'host' | 'port'> & {
    timeout?: number | null;
    keepAlive?: boolean | null;
    keepAliveInitialDelay?: number | null;
    maxCachedSessions?: number | null;
    allowH2?: boolean;
  };
  /** Request context for every request of this dispatcher. */
  context?: CheckContext;
  /** A decision for this dispatcher's first request (check-then-call:
   *  fetch(url, {dispatcher: checker.undiciDispatcher({decision})})). */
  decision?: Decision;
}

/** Options of connect(decision, options). */
export interface EgressConnectOptions {
  /** TLS over the vetted address; servername defaults to the decision's host. */
  tls?: boolean | Omit<TlsConnectionOptions, 'socket' | 'lookup' | 'path' | 'host' | 'port'>;
  /** TLS server name (SNI and certificate check): the decision's host (the
   *  default) or none (''); any other is refused. */
  servername?: string;
  /** Must be the decision's, when given. */
  host?: string;
  port?: number;
  family?: 4 | 6;
  timeout?: number;
  noDelay?: boolean;
  keepAlive?: boolean;
  keepAliveInitialDelay?: number;
  autoSelectFamily?: boolean;
  autoSelectFamilyAttemptTimeout?: number;
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
  /** machineId and workspaceId of a MachineRegistrationV1 policy document:
   *  the context every check gets unless it gives its own. */
  readonly defaultContext: { machineId?: string; workspaceId?: string };
  /** Check without blocking, on this thread's event loop (no thread pool).
   *  onEvent has run for the decision when the promise resolves; close()
   *  rejects the checks in flight with EGRESS_CLOSED. */
  check(host: string, port: number, ctx?: CheckContext): Promise<Decision>;
  /** Check on the calling thread: for IP literals and cached names. */
  checkSync(host: string, port: number, ctx?: CheckContext): Decision;
  checkUrl(url: string, ctx?: CheckContext): Promise<Decision>;
  checkUrlSync(url: string, ctx?: CheckContext): Decision;
  /** Run fn with request context for every check of this checker made
   *  inside it, directly or by the helpers (AsyncLocalStorage). */
  withContext<R, A extends unknown[]>(ctx: CheckContext | null | undefined, fn: (...args: A) => R, ...args: A): R;
  /** Atomic swap; throws EgressPolicyError and keeps the old policy.  Idle
   *  pooled connections of the helpers are closed, none is reused. */
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
   * Connect with a decision a check returned: to its vetted addresses,
   * tried in order, with no second check, no second event and no lookup.
   * Throws (no socket) for a decision no check of this checker made, one
   * for another host:port, a denial (EgressDeniedError; also an outcome
   * other than allowed, unless this checker is in monitor mode), an option that would connect
   * elsewhere, a decision made under another policy than the one in force
   * (setPolicy/reloadFile since) or used already (one decision, one
   * connection).  Options are read once.
   */
  connect(decision: Decision, options: EgressConnectOptions & { tls: true | object }, connectListener?: () => void): TLSSocket;
  connect(decision: Decision, options?: EgressConnectOptions, connectListener?: () => void): Socket;
  connect(decision: Decision, connectListener: () => void): Socket;
  /**
   * net.connect that checks first: IP literals are checked, names resolve
   * through the vetted lookup bound to options.port, and lookup,
   * localAddress, fd (anything that connects elsewhere) are refused.  A
   * refusal is the socket's 'error' (EgressDeniedError).
   */
  connect(options: TcpNetConnectOpts, connectListener?: () => void): Socket;
  /** An http.Agent that checks every request it carries (one decision and
   *  one event per request); pooled sockets serve only requests whose own
   *  decision vetted their address. */
  httpAgent(options?: Omit<HttpAgentOptions, EgressAgentTargetOption> & EgressAgentOptions): HttpAgent;
  httpsAgent(options?: Omit<HttpsAgentOptions, EgressAgentTargetOption> & EgressAgentOptions): HttpsAgent;
  /** An undici Dispatcher for fetch({dispatcher}) and undici.request that
   *  checks every request it is given.  Uses the undici package when
   *  installed, else the undici inside Node's fetch. */
  undiciDispatcher(options?: EgressDispatcherOptions): Dispatcher;
  /** The global fetch through a dispatcher of this checker; init.egress
   *  holds request context and optionally a decision for this request. */
  fetch(input: string | URL | Request, init?: EgressRequestInit): Promise<Response>;
}

export type EgressErrorCode =
  | 'EGRESS_ERROR'
  | 'EGRESS_CLOSED'
  | 'EGRESS_ENOMEM'
  | 'EGRESS_EINVAL'
  | 'EGRESS_EPOLICY'
  | 'EGRESS_EIO'
  | 'EGRESS_ERESOLVER'
  | 'EGRESS_ERANGE'
  | 'EGRESS_EINTERNAL'
  | 'EGRESS_ENAPI'
  | 'EGRESS_INSTALLED'
  | 'EGRESS_NO_CHECKER'
  | 'EGRESS_NO_UNDICI'
  | 'EGRESS_EUNSUPPORTED'
  | 'EGRESS_UNCHECKED'
  | 'EEGRESSDENIED'
  | 'EEGRESSUNAVAILABLE';

/** The library's status tokens (EgressError.status). */
export type EgressStatus =
  | 'out_of_memory'
  | 'invalid_argument'
  | 'invalid_policy'
  | 'io_error'
  | 'resolver_error'
  | 'out_of_range'
  | 'internal_error';

/** Base class of every libegress error. */
export class EgressError extends Error {
  constructor(message: string, code?: EgressErrorCode, status?: EgressStatus | null);
  readonly code: EgressErrorCode;
  /** The library status token when the error came from a library call. */
  readonly status: EgressStatus | null;
}

/** A policy that could not be compiled or read; the policy in force stays. */
export class EgressPolicyError extends EgressError {
  constructor(message: string, code?: 'EGRESS_EPOLICY' | 'EGRESS_EIO', status?: EgressStatus | null);
  readonly code: 'EGRESS_EPOLICY' | 'EGRESS_EIO';
}

/** The check denied the connection. */
export class EgressDeniedError extends EgressError {
  constructor(decision: Decision, message?: string);
  readonly code: 'EEGRESSDENIED' | 'EEGRESSUNAVAILABLE';
  readonly decision: Decision;
  readonly reason: Reason | null;
}

/** Enforcement unavailable (DNS down, audit failing), or nothing vetted to
 *  connect to: a denial, hence the subclass. */
export class EgressUnavailableError extends EgressDeniedError {
  constructor(decision: Decision, message?: string);
  readonly code: 'EEGRESSUNAVAILABLE';
}

/**
 * Route Node's default HTTP clients through CHECKER: http.globalAgent,
 * https.globalAgent and the global dispatcher of fetch.  Returns uninstall().
 * The same checker again: the same uninstall(); another one while installed:
 * EgressError EGRESS_INSTALLED.
 */
export function install(checker: Checker): () => void;

/** Run fn with request context for every check of every checker made
 *  inside it (AsyncLocalStorage). */
export function runWithContext<R, A extends unknown[]>(ctx: CheckContext | null | undefined, fn: (...args: A) => R, ...args: A): R;

/** Load the addon now (optional: the first Checker does it). */
export function load(path?: string): unknown;
export const addonPath: string | null;
/** The run-time libegress version. */
export function version(): string;
/** Version of the special-purpose address table. */
export function specialRangesVersion(): string;
