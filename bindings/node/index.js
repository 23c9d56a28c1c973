'use strict';
/*
 * @portarium/libegress: the Node.js binding of libegress.
 *
 * The native addon (src/egress_node.c, built by meson) does the checks; this
 * file gives them their JS shape: Checker, decisions as plain objects,
 * a dns.lookup-compatible vetted lookup, and the guards that decide every
 * connection before it is made: http/https agents, an undici dispatcher and
 * connect().
 */
const os = require('node:os');
const path = require('node:path');
const fs = require('node:fs');
const net = require('node:net');
const http = require('node:http');
const https = require('node:https');

// ---------------------------------------------------------------------------
// Loading the addon
// ---------------------------------------------------------------------------

// loader.js finds and opens egress_node.node (where it looks, and what it
// never loads unasked: sanitizer builds); this sets the addon up once.
const loader = require('./loader');

let native = null;
let loadedFrom = null;

/** Load the native addon (once); see loader.js for where it looks. */
function load(explicit) {
  if (native) return native;
  const n = loader.load(explicit);
  n.setup(buildDecision, NUMS);
  TABLES = n.tables();
  native = n;
  loadedFrom = loader.addonPath();
  return native;
}

// ---------------------------------------------------------------------------
// Decisions: the addon fills NUMS and hands the string fields packed in one
// string (NUL-separated); buildDecision makes the plain object.  Layouts
// mirror the enums at the top of src/egress_node.c.
// ---------------------------------------------------------------------------

const N_HEADER = 16;
const MAX_INLINE_ADDRS = 64;
const NUMS = new Float64Array(N_HEADER + 3 * MAX_INLINE_ADDRS);
let TABLES = null; // [reasons[], outcomes[], version, specialRangesVersion]
let lastDigest = null;

const VERDICTS = ['deny', 'allow'];
const LISTS = ['allow', 'deny'];
const S_COUNT = 8;

// Split string fields by memo slot, with the tag the addon gave each.
const MEMO_FIELDS = [];
const MEMO_TAGS = [];

function stringFields(packed) {
  const n = NUMS;
  const slot = n[13];
  let s;
  if (packed === undefined) {
    // Same bytes as the slot held: reuse its fields if this is the store
    // the addon means, else ask for the bytes again.
    if (MEMO_TAGS[slot] === n[14]) return MEMO_FIELDS[slot];
    s = native.lastPacked().split('\0');
  } else {
    s = packed.split('\0');
  }
  if (slot >= 0) {
    MEMO_FIELDS[slot] = s;
    MEMO_TAGS[slot] = n[14];
  }
  return s;
}

function buildDecision(packed) {
  const n = NUMS;
  const s = stringFields(packed);
  const reasons = TABLES[0];
  const nulls = n[12];
  const outcome = n[1];
  const reason = n[2];
  const naddrs = n[7];
  let addresses;
  if (naddrs === 0) {
    addresses = [];
  } else {
    const texts = naddrs === 1 ? [s[3]] : s[3].split(',');
    const overflow = n[11] === 1;
    addresses = new Array(naddrs);
    for (let i = 0; i < naddrs; i++) {
      let v, r, ttl;
      if (overflow) {
        const f = s[S_COUNT + i].split(',');
        v = +f[0];
        r = +f[1];
        ttl = +f[2];
      } else {
        const b = N_HEADER + 3 * i;
        v = n[b];
        r = n[b + 1];
        ttl = n[b + 2];
      }
      const text = texts[i];
      addresses[i] = {
        address: text,
        verdict: VERDICTS[v],
        reason: r === 0 ? null : reasons[r],
        ttl: ttl < 0 ? null : ttl,
        family: text.indexOf(':') === -1 ? 4 : 6,
      };
    }
  }
  let digest = null;
  if ((nulls & 32) === 0) {
    if (s[5] === '') digest = lastDigest;
    else digest = lastDigest = s[5];
  }
  return {
    verdict: VERDICTS[n[0]],
    outcome: TABLES[1][outcome],
    reason: outcome === 1 && reason === 0 ? null : reasons[reason],
    message: s[0],
    host: (nulls & 2) === 0 ? s[1] : null,
    port: n[3],
    mode: n[10] === 1 ? 'monitor' : 'enforce',
    wouldDeny: outcome !== 1,
    matchedRule: n[4] === 1 ? { index: n[6], list: LISTS[n[5]], text: s[2] } : null,
    addresses,
    curlResolve: (nulls & 16) === 0 ? s[4] : null,
    dnsMs: n[8],
    latencyMs: n[9],
    policyDigest: digest,
    url: (nulls & 128) === 0 ? s[7] : null,
    event: (nulls & 64) === 0 ? JSON.parse(s[6]) : null,
  };
}

// ---------------------------------------------------------------------------
// Errors
// ---------------------------------------------------------------------------

/** A connection the policy denies. */
class EgressDeniedError extends Error {
  constructor(decision, message) {
    super(message || `egress denied: ${decision.host}:${decision.port}: ${decision.message}`);
    this.name = 'EgressDeniedError';
    this.code = 'EEGRESSDENIED';
    this.decision = decision;
  }
}

/** A check that could not be made (DNS down, audit sink failing, ...): denied. */
class EgressUnavailableError extends Error {
  constructor(decision, message) {
    super(
      message ||
        `egress enforcement unavailable: ${decision.host}:${decision.port}: ${decision.message}`);
    this.name = 'EgressUnavailableError';
    this.code = 'EEGRESSUNAVAILABLE';
    this.decision = decision;
  }
}

function errorFor(decision) {
  return decision.outcome === 'enforcement_unavailable'
    ? new EgressUnavailableError(decision)
    : new EgressDeniedError(decision);
}

// ---------------------------------------------------------------------------
// Argument handling
// ---------------------------------------------------------------------------

const CTX_KEYS = ['method', 'workspaceId', 'agentId', 'machineId', 'runId', 'correlationId'];

function ctxArray(ctx) {
  if (ctx === undefined || ctx === null) return undefined;
  if (typeof ctx !== 'object') throw new TypeError('ctx must be an object');
  return [ctx.method, ctx.workspaceId, ctx.agentId, ctx.machineId, ctx.runId, ctx.correlationId];
}

function checkHostPort(host, port) {
  if (typeof host !== 'string') throw new TypeError('host must be a string');
  if (typeof port !== 'number' || !Number.isInteger(port))
    throw new TypeError('port must be an integer');
}

function u32(v, name) {
  if (!Number.isInteger(v) || v < 0 || v > 0xffffffff)
    throw new RangeError(`${name} must be an integer between 0 and 4294967295`);
  return v;
}

function normalizeOptions(options) {
  if (!options || typeof options !== 'object') throw new TypeError('options must be an object');
  const o = {};
  if (options.policy !== undefined && options.policy !== null) {
    o.policyJson = typeof options.policy === 'string' ? options.policy : JSON.stringify(options.policy);
    if (typeof o.policyJson !== 'string') throw new TypeError('policy must be JSON text or an object');
  } else if (options.policyFile !== undefined) {
    if (typeof options.policyFile !== 'string') throw new TypeError('policyFile must be a string');
    o.policyFile = options.policyFile;
  } else {
    throw new TypeError('a policy or a policyFile is required');
  }
  const mode = options.mode === undefined ? 'enforce' : options.mode;
  if (mode !== 'enforce' && mode !== 'monitor')
    throw new TypeError("mode must be 'enforce' or 'monitor'");
  o.monitor = mode === 'monitor';
  if (options.dnsServers !== undefined) {
    if (!Array.isArray(options.dnsServers) || !options.dnsServers.every((x) => typeof x === 'string'))
      throw new TypeError('dnsServers must be an array of strings');
    if (options.dnsServers.some((x) => x.includes(',')))
      throw new TypeError('dnsServers entries must not contain commas');
    o.dnsServers = options.dnsServers.join(',');
  }
  for (const k of ['hostsFile', 'eventSource', 'eventsPath']) {
    if (options[k] !== undefined) {
      if (typeof options[k] !== 'string') throw new TypeError(`${k} must be a string`);
      o[k] = options[k];
    }
  }
  if (options.timeoutMs !== undefined) o.timeoutMs = options.timeoutMs;
  if (options.cache !== undefined) {
    const c = options.cache || {};
    o.cache = [
      u32(c.maxEntries === undefined ? 4096 : c.maxEntries, 'cache.maxEntries'),
      u32(c.minTtl === undefined ? 5 : c.minTtl, 'cache.minTtl'),
      u32(c.maxTtl === undefined ? 300 : c.maxTtl, 'cache.maxTtl'),
      u32(c.negativeTtl === undefined ? 5 : c.negativeTtl, 'cache.negativeTtl'),
    ];
  }
  o.filter = options.filter === true;
  o.auditRequired = options.auditRequired === true;
  if (options.pref64 !== undefined) {
    if (!Array.isArray(options.pref64)) throw new TypeError('pref64 must be an array of strings');
    o.pref64 = options.pref64;
  }
  if (options.onEvent !== undefined && typeof options.onEvent !== 'function')
    throw new TypeError('onEvent must be a function');
  if (options.onEvent && options.eventsPath !== undefined)
    throw new TypeError('onEvent and eventsPath are exclusive: a checker has one event sink');
  if (options.eventQueueSize !== undefined) o.eventQueueSize = u32(options.eventQueueSize, 'eventQueueSize');
  return o;
}

const COUNTER_NAMES = [
  'checks',
  'dnsQueries',
  'dnsFailures',
  'cacheHits',
  'cacheMisses',
  'eventsEmitted',
  'eventsFailed',
  'policySwaps',
  'policyReloadFailures',
];

// ---------------------------------------------------------------------------
// Checker
// ---------------------------------------------------------------------------

function looksLikeIp(host) {
  return net.isIP(host.length > 1 && host[0] === '[' && host[host.length - 1] === ']' ? host.slice(1, -1) : host) !== 0;
}

function wantFamily(options) {
  if (typeof options === 'number') return options;
  if (!options || typeof options !== 'object') return 0;
  const f = options.family;
  if (f === 'IPv4') return 4;
  if (f === 'IPv6') return 6;
  return f === 4 || f === 6 ? f : 0;
}

class Checker {
  /**
   * @param {object} options see index.d.ts (CheckerOptions)
   */
  constructor(options) {
    const o = normalizeOptions(options);
    const n = load(options.addon);
    let onEvent;
    if (options.onEvent) {
      const user = options.onEvent;
      onEvent = (text) => {
        let event;
        try {
          event = JSON.parse(text);
        } catch (e) {
          return; // the library only emits valid JSON; nothing to deliver otherwise
        }
        try {
          user(event);
        } catch (e) {
          // An exception thrown by a listener surfaces like one thrown by an
          // EventEmitter listener: as an uncaught exception.
          process.nextTick(() => {
            throw e;
          });
        }
      };
    }
    this._h = n.create(o, onEvent);
    this._policyFile = o.policyFile;
    this._closed = false;
    this.mode = o.monitor ? 'monitor' : 'enforce';
  }

  /**
   * Gone: dns.lookup has no port, and a lookup bound to another port than
   * the one connected to checks another destination.  Throws.
   */
  get lookup() {
    const err = new Error(
      'checker.lookup was removed: dns.lookup has no port, so a port-less lookup checks the wrong ' +
        'destination. Use checker.lookupFor(port) with the port actually connected to (it never sees ' +
        'IP literals), or the guarded httpAgent(), httpsAgent(), undiciDispatcher() or connect(), ' +
        'which check literals too');
    err.code = 'EGRESS_LOOKUP_NEEDS_PORT';
    throw err;
  }

  _live() {
    if (this._closed) {
      const err = new Error('the checker is closed');
      err.code = 'EGRESS_CLOSED';
      throw err;
    }
  }

  /** Check HOST:PORT off the event loop (libuv thread pool). */
  check(host, port, ctx) {
    try {
      this._live();
      checkHostPort(host, port);
      return native.checkAsync(this._h, host, port, ctxArray(ctx), undefined);
    } catch (e) {
      return Promise.reject(e);
    }
  }

  /** Check HOST:PORT on this thread.  Only for names already cached and IP
   *  literals: an uncached name waits for DNS here, blocking the loop. */
  checkSync(host, port, ctx) {
    this._live();
    checkHostPort(host, port);
    return buildDecision(native.checkSync(this._h, host, port, ctxArray(ctx)));
  }

  /** Check an http(s) URL off the event loop. */
  checkUrl(url, ctx) {
    try {
      this._live();
      if (typeof url !== 'string') throw new TypeError('url must be a string');
      return native.checkAsync(this._h, null, 0, ctxArray(ctx), url);
    } catch (e) {
      return Promise.reject(e);
    }
  }

  /** Check an http(s) URL on this thread (see checkSync). */
  checkUrlSync(url, ctx) {
    this._live();
    if (typeof url !== 'string') throw new TypeError('url must be a string');
    return buildDecision(native.checkUrlSync(this._h, url, ctxArray(ctx)));
  }

  /** Replace the policy (JSON text or object); throws and keeps the old one
   *  when it is invalid. */
  setPolicy(policy) {
    this._live();
    const text = typeof policy === 'string' ? policy : JSON.stringify(policy);
    if (typeof text !== 'string') throw new TypeError('policy must be JSON text or an object');
    native.setPolicy(this._h, text);
  }

  /** Reload the policy file (the constructor's policyFile by default). */
  reloadFile(file) {
    this._live();
    const p = file === undefined ? this._policyFile : file;
    if (typeof p !== 'string') throw new TypeError('reloadFile needs a path (no policyFile was given)');
    return { changed: native.reloadFile(this._h, p) };
  }

  /** The policy in force: digest and rule texts. */
  policy() {
    this._live();
    const [digest, allow, deny] = native.policyInfo(this._h);
    return { digest, egressAllowlist: allow, egressDenylist: deny };
  }

  /** Counters, as an object. */
  stats() {
    this._live();
    const raw = native.counters(this._h);
    const out = {};
    for (let i = 0; i < COUNTER_NAMES.length; i++) out[COUNTER_NAMES[i]] = raw[i];
    const reasons = TABLES[0];
    const byOutcome = {};
    let k = COUNTER_NAMES.length;
    for (const outcome of TABLES[1]) {
      const row = {};
      for (const r of reasons) {
        const v = raw[k++];
        if (v) row[r] = v;
      }
      byOutcome[outcome] = row;
    }
    out.checksByOutcome = byOutcome;
    return out;
  }

  /** Counters in Prometheus text exposition format. */
  metrics() {
    this._live();
    return native.metrics(this._h);
  }

  /** Release the checker.  Idempotent.  Checks in flight finish first; later
   *  calls throw (promises reject) with code EGRESS_CLOSED. */
  close() {
    if (this._closed) return;
    this._closed = true;
    native.close(this._h);
  }

  get closed() {
    return this._closed;
  }

  /**
   * A function with the signature of dns.lookup(hostname, options, callback)
   * that checks HOSTNAME:PORT and yields only the vetted addresses.  Not a
   * whole guard: Node never calls a lookup for an IP literal, and nothing
   * ties PORT to the port connected to (see connect() and the agents).
   */
  lookupFor(port) {
    if (!Number.isInteger(port) || port < 1 || port > 65535)
      throw new RangeError('port must be an integer between 1 and 65535');
    const self = this;
    return function egressLookup(hostname, options, callback) {
      if (typeof options === 'function') {
        callback = options;
        options = {};
      }
      if (typeof callback !== 'function') throw new TypeError('callback must be a function');
      const all = !!(options && typeof options === 'object' && options.all);
      const family = wantFamily(options);
      self.check(hostname, port).then(
        (d) => deliver(d, hostname, all, family, options, callback),
        (e) => process.nextTick(callback, e));
    };
  }

  /**
   * net.connect(options[, connectListener]) that connects only where the
   * policy allows: an IP literal is checked before the socket is made, a
   * name through the vetted lookup bound to options.port, and options that
   * connect elsewhere (path, lookup, localAddress, ...) are refused.  A
   * refusal is reported as the socket's 'error' (EgressDeniedError).  For
   * TLS: tls.connect({ socket: checker.connect({host, port}), servername }).
   */
  connect(options, connectListener) {
    if (!options || typeof options !== 'object') throw new TypeError('connect(options): options must be an object');
    const g = guardConnection(this, options, undefined);
    if (g.error) {
      const socket = new net.Socket();
      process.nextTick(() => socket.destroy(g.error));
      return socket;
    }
    return net.connect(g.options, connectListener);
  }

  /** An http.Agent that connects only where the policy allows. */
  httpAgent(options) {
    return guardAgent(this, new http.Agent(options), 80);
  }

  /** An https.Agent that connects only where the policy allows. */
  httpsAgent(options) {
    return guardAgent(this, new https.Agent(options), 443);
  }

  /**
   * An undici Agent (a fetch dispatcher) that connects only where the
   * policy allows.  Needs the `undici` package.
   */
  undiciDispatcher(options) {
    let undici;
    try {
      undici = require('undici');
    } catch (e) {
      const err = new Error('undiciDispatcher() needs the undici package (npm install undici)');
      err.code = 'EGRESS_NO_UNDICI';
      throw err;
    }
    const self = this;
    const opts = Object.assign({}, options);
    if (typeof opts.connect === 'function')
      throw new TypeError('undiciDispatcher: a connect function of your own would connect without the check; pass connect options');
    if (opts.factory !== undefined)
      throw new TypeError('undiciDispatcher: a factory of your own would make clients that connect without the check');
    const connectOpts = Object.assign({}, opts.connect);
    // undici ignores an Agent-level socketPath once connect is a function;
    // refusing it says so instead of quietly connecting over TCP.
    const fixed = Object.assign({}, connectOpts);
    if (opts.socketPath !== undefined && opts.socketPath !== null) fixed.socketPath = opts.socketPath;
    const byPort = new Map();
    function connector(port) {
      let c = byPort.get(port);
      if (!c) {
        c = undici.buildConnector(Object.assign({}, connectOpts, { lookup: self.lookupFor(port) }));
        byPort.set(port, c);
      }
      return c;
    }
    opts.connect = function egressConnect(o, callback) {
      const port = portOf(o.port, o.protocol === 'https:' ? 443 : 80);
      // buildConnector spreads the connect options into net/tls.connect and
      // adds these two per connection (httpSocket becomes tls's socket).
      const seen = Object.assign({}, fixed, { localAddress: o.localAddress, socket: o.httpSocket });
      const bad = uncheckedOption(seen);
      const g = bad ? { error: refuseUnchecked(self, bad, seen[bad], port) } : decideTarget(self, o.hostname, port);
      if (g.error) {
        process.nextTick(callback, g.error, null);
        return undefined;
      }
      return connector(port)(Object.assign({}, o, { port }), callback);
    };
    return new undici.Agent(opts);
  }
}

function deliver(d, hostname, all, family, options, callback) {
  if (d.verdict !== 'allow') {
    callback(errorFor(d));
    return;
  }
  let addrs;
  if (d.outcome === 'allowed') {
    addrs = d.addresses.filter((a) => a.verdict === 'allow');
  } else {
    // Monitor mode: the policy would deny, the worker proceeds.  Names
    // outside the policy were never resolved by the check, so resolve them
    // the ordinary way.
    addrs = d.addresses;
    if (addrs.length === 0) {
      require('node:dns').lookup(hostname, options, callback);
      return;
    }
  }
  if (family) addrs = addrs.filter((a) => a.family === family);
  if (addrs.length === 0) {
    const err = new Error(`getaddrinfo ENOTFOUND ${hostname}`);
    err.code = 'ENOTFOUND';
    err.hostname = hostname;
    err.decision = d;
    callback(err);
    return;
  }
  if (all) callback(null, addrs.map((a) => ({ address: a.address, family: a.family })));
  else callback(null, addrs[0].address, addrs[0].family);
}

// ---------------------------------------------------------------------------
// Guards: what the agents, the dispatcher and connect() connect to
// ---------------------------------------------------------------------------

/*
 * Connection options a guard cannot check: they connect somewhere else than
 * host:port, or let other code choose the address.  A Unix socket
 * (socketPath, path), a descriptor or socket that exists already (fd,
 * handle, socket), the caller's own resolver or connection function (lookup,
 * createConnection), a local address (with source-based routing it picks
 * the network a connection leaves through).  family is not here: the vetted
 * lookup honours it among the vetted addresses, and Node ignores it for IP
 * literals, so it can narrow what is connected to, never widen it.
 */
const UNCHECKED = ['socketPath', 'path', 'fd', 'handle', 'socket', 'lookup', 'createConnection', 'localAddress'];

function uncheckedOption(options) {
  for (const k of UNCHECKED) if (options[k] !== undefined && options[k] !== null) return k;
  return null;
}

function validPort(port) {
  return Number.isInteger(port) && port >= 1 && port <= 65535;
}

// The port a connection will use, as an integer the check can take: a
// value that is not one is decided as invalid_port (-1), never defaulted.
function portOf(value, defaultPort) {
  if (value === undefined || value === null || value === '') return defaultPort === undefined ? -1 : defaultPort;
  const n = Number(value);
  return Number.isInteger(n) ? n : -1;
}

/*
 * A refusal goes through the library as a check of a destination it always
 * decides invalid_host (parentheses and a space are never part of a host,
 * in monitor mode too), so it is counted, leaves its one deny event in the
 * checker's sinks, and names the option in the event's destination.
 */
function refuseUnchecked(checker, option, value, port) {
  const shown = typeof value === 'string' ? value : typeof value === 'function' ? 'function' : typeof value;
  let d;
  try {
    d = checker.checkSync(`(${option} ${shown})`, validPort(port) ? port : -1);
  } catch (e) {
    return e;
  }
  return new EgressDeniedError(d, `egress denied: option ${option} (${shown}) connects where the egress check cannot see`);
}

/*
 * IP literals, which never reach a lookup, and ports out of range are
 * decided here with checkSync (no DNS: it never blocks the loop).  Every
 * target that may proceed gets the vetted lookup bound to this port, which
 * names resolve through.  A literal comes back as net.connect reads one
 * ("[::1]" is a name to it, and would go to the lookup and be checked a
 * second time).  Returns {error} or {host, lookup}.
 */
function decideTarget(checker, host, port) {
  if (typeof host !== 'string') return { error: new TypeError('host must be a string') };
  const literal = looksLikeIp(host);
  if (literal || !validPort(port)) {
    let d;
    try {
      d = checker.checkSync(host, port);
    } catch (e) {
      return { error: e };
    }
    if (d.verdict !== 'allow' || !validPort(port)) return { error: errorFor(d) };
  }
  const bare = literal && host[0] === '[' ? host.slice(1, -1) : host;
  return { host: bare, lookup: checker.lookupFor(port) };
}

/*
 * One connection of an agent or of connect(): refuse what cannot be checked,
 * decide the target, and pin host and port in the options returned so that
 * the connection goes to the host:port that was checked (whatever hostname
 * or an empty host would have meant to net.connect).  Returns {error} or
 * {options}.
 */
function guardConnection(checker, options, defaultPort) {
  const port = portOf(options.port, defaultPort);
  const bad = uncheckedOption(options);
  if (bad) return { error: refuseUnchecked(checker, bad, options[bad], port) };
  const host = options.host || options.hostname || 'localhost';
  const g = decideTarget(checker, host, port);
  if (g.error) return g;
  return { options: Object.assign({}, options, { host: g.host, port, lookup: g.lookup }) };
}

/*
 * Wrap an http(s).Agent's createConnection with guardConnection.  The agent
 * hands it the request's options merged with its own, so a socketPath or a
 * lookup given to either is seen here.
 */
function guardAgent(checker, agent, defaultPort) {
  const base = agent.createConnection;
  agent.createConnection = function egressCreateConnection(options, oncreate) {
    if (!options || typeof options !== 'object')
      throw new TypeError('a guarded agent takes createConnection(options, callback)');
    const g = guardConnection(checker, options, defaultPort);
    if (g.error) {
      if (typeof oncreate !== 'function') throw g.error;
      process.nextTick(oncreate, g.error);
      return undefined;
    }
    return base.call(this, g.options, oncreate);
  };
  agent.egressChecker = checker;
  return agent;
}

module.exports = {
  Checker,
  EgressDeniedError,
  EgressUnavailableError,
  load,
  get addonPath() {
    return loadedFrom;
  },
  // Functions, not getters: plain values that ESM named exports (index.mjs)
  // can carry, and that load the addon only when called.
  version() {
    load();
    return TABLES[2];
  },
  specialRangesVersion() {
    load();
    return TABLES[3];
  },
};

// For the tests only: make the builder hold stale fields under tags the
// addon never gave, as if it had missed the addon's stores; a decision must
// then still come out right (the tag check sends it to lastPacked()).
Object.defineProperty(module.exports, '_poisonStringMemo', {
  value() {
    const stale = ['stale', 'stale.invalid', 'stale', '192.0.2.1', 'stale', 'stale', '', ''];
    for (let i = 0; i < MEMO_FIELDS.length; i++) {
      MEMO_FIELDS[i] = stale;
      MEMO_TAGS[i] = -1;
    }
  },
  enumerable: false,
});
