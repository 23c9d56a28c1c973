'use strict';
/*
 * @portarium/libegress: the Node.js binding of libegress.
 *
 * The native addon (src/*.c, built by meson) does the checks; this
 * file gives them their JS shape: Checker, decisions as plain objects, the
 * error classes, request context (per call, per request, AsyncLocalStorage,
 * the registration's defaults), and the HTTP helpers that make one decision
 * per request before it is sent: http/https agents, an undici dispatcher,
 * checker.fetch() and egress.install() for Node's default agents and fetch.
 * connect() connects with a decision already held.
 */
const fs = require('node:fs');
const net = require('node:net');
const tls = require('node:tls');
const http = require('node:http');
const https = require('node:https');
const EventEmitter = require('node:events');
const { AsyncLocalStorage } = require('node:async_hooks');
const { domainToASCII } = require('node:url');

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
  checkLayout(typeof n.layout === 'function' ? n.layout() : null, loader.addonPath());
  n.setup(buildDecision, NUMS);
  TABLES = n.tables();
  native = n;
  loadedFrom = loader.addonPath();
  return native;
}

// ---------------------------------------------------------------------------
// Decisions: the addon fills NUMS and hands the string fields packed in one
// string (NUL-separated); buildDecision makes the plain object.  The slots
// and fields are named as in the addon (PACKED_NUMBERS and PACKED_STRINGS in
// src/addon.h); load() refuses an addon whose layout() differs from these.
// ---------------------------------------------------------------------------

// NUMS slots.
const N_VERDICT = 0;
const N_OUTCOME = 1;
const N_REASON = 2;
const N_PORT = 3;
const N_HAS_RULE = 4;
const N_RULE_LIST = 5;
const N_RULE_INDEX = 6;
const N_NADDRS = 7;
const N_DNS_MS = 8;
const N_LATENCY_MS = 9;
const N_MODE = 10;
const N_ADDR_OVERFLOW = 11; // 1: per-address numbers follow the strings instead
const N_NULLS = 12; // bit i set: string field i is null
const N_MEMO_SLOT = 13; // string memo slot of this decision, -1: none
const N_MEMO_TAG = 14; // the slot's tag
const N_EVENT = 15; // where the event text is: EVENT_NONE, EVENT_AFTER, EVENT_ALONE
const N_HEADER = 16; // then 3 numbers per address: verdict, reason, ttl
// Packed string fields.
const S_MESSAGE = 0;
const S_HOST = 1;
const S_RULE_TEXT = 2;
const S_ADDRESSES = 3; // comma-separated address texts
const S_CURL_RESOLVE = 4;
const S_DIGEST = 5; // '' when it is the digest of the previous decision
const S_URL = 6;
const S_COUNT = 7; // then, with N_ADDR_OVERFLOW, "verdict,reason,ttl" per address
// N_EVENT: the event text is not a packed field (its id and time differ for
// every check, the fields do not: the memo keeps them); it is
const EVENT_NONE = 0; // absent (checkSync without an event sink)
const EVENT_AFTER = 1; // the last NUL-separated part of the packed string
const EVENT_ALONE = 2; // the whole string the addon returned (fields memoized)

// What the addon's layout() must return: every constant above by name, and
// the request context keys in the order ctxArray() fills them.
function packedLayout() {
  return {
    numbers: {
      N_VERDICT, N_OUTCOME, N_REASON, N_PORT, N_HAS_RULE, N_RULE_LIST, N_RULE_INDEX, N_NADDRS,
      N_DNS_MS, N_LATENCY_MS, N_MODE, N_ADDR_OVERFLOW, N_NULLS, N_MEMO_SLOT, N_MEMO_TAG, N_EVENT, N_HEADER,
    },
    strings: { S_MESSAGE, S_HOST, S_RULE_TEXT, S_ADDRESSES, S_CURL_RESOLVE, S_DIGEST, S_URL, S_COUNT },
    context: CTX_KEYS,
  };
}

// An addon packing decisions otherwise (one built from other sources) would
// have every decision read wrong: refuse it, as loader.js refuses an addon
// that does not load, naming the first difference.
function checkLayout(got, from) {
  const want = packedLayout();
  const differ = (what) => {
    const err = new Error(`the addon ${from} packs decisions differently from index.js: ${what}; ` +
      'rebuild it from the same sources');
    err.code = 'EGRESS_ADDON_MISMATCH';
    throw err;
  };
  if (got === null || typeof got !== 'object') differ('it has no layout()');
  for (const table of ['numbers', 'strings']) {
    const g = got[table] !== null && typeof got[table] === 'object' ? got[table] : {};
    for (const [name, i] of Object.entries(want[table]))
      if (g[name] !== i) differ(`${name} is ${g[name] === undefined ? 'absent' : g[name]} there, ${i} here`);
    for (const name of Object.keys(g))
      if (!(name in want[table])) differ(`${name} is ${g[name]} there, absent here`);
  }
  const ctx = Array.isArray(got.context) ? got.context : [];
  if (ctx.join() !== want.context.join())
    differ(`the request context keys are [${ctx.join(', ')}] there, [${want.context.join(', ')}] here`);
}

const MAX_INLINE_ADDRS = 64;
const NUMS = new Float64Array(N_HEADER + 3 * MAX_INLINE_ADDRS);
let TABLES = null; // [reasons[], outcomes[], version, specialRangesVersion, statuses[]]
let lastDigest = null;

const VERDICTS = ['deny', 'allow'];
const LISTS = ['allow', 'deny'];

// Split string fields by memo slot, with the tag the addon gave each.
const MEMO_FIELDS = [];
const MEMO_TAGS = [];

// The decision's event text, from what the addon returned (see N_EVENT).
let EVENT_TEXT = null;

function stringFields(packed) {
  const n = NUMS;
  const slot = n[N_MEMO_SLOT];
  const where = n[N_EVENT];
  let s;
  EVENT_TEXT = null;
  if (packed === undefined || where === EVENT_ALONE) {
    // Same bytes as the slot held: reuse its fields if this is the store
    // the addon means, else ask for the bytes again.
    if (where === EVENT_ALONE) EVENT_TEXT = packed;
    if (MEMO_TAGS[slot] === n[N_MEMO_TAG]) return MEMO_FIELDS[slot];
    s = native.lastPacked().split('\0');
  } else {
    s = packed.split('\0');
    if (where === EVENT_AFTER) EVENT_TEXT = s.pop();
  }
  if (slot >= 0) {
    MEMO_FIELDS[slot] = s;
    MEMO_TAGS[slot] = n[N_MEMO_TAG];
  }
  return s;
}

function buildDecision(packed) {
  const n = NUMS;
  const s = stringFields(packed);
  const reasons = TABLES[0];
  const nulls = n[N_NULLS];
  const outcome = n[N_OUTCOME];
  const reason = n[N_REASON];
  const naddrs = n[N_NADDRS];
  let addresses;
  let texts = null;
  let allowed = 0; // bit i: address i passed vetting (up to 31; beyond, `many`)
  let many = null;
  if (naddrs === 0) {
    addresses = [];
  } else {
    texts = naddrs === 1 ? [s[S_ADDRESSES]] : s[S_ADDRESSES].split(',');
    if (naddrs > 31) many = new Array(naddrs);
    const overflow = n[N_ADDR_OVERFLOW] === 1;
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
      if (v === 1) {
        if (many === null) allowed |= 1 << i;
        else many[i] = true;
      }
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
  if ((nulls & (1 << S_DIGEST)) === 0) {
    if (s[S_DIGEST] === '') digest = lastDigest;
    else digest = lastDigest = s[S_DIGEST];
  }
  // The event stays text until read (see Decision#event): most callers
  // never read it, and parsing it cost more than the check.
  const eventText = EVENT_TEXT;
  const allowRule = n[N_HAS_RULE] === 1 && n[N_RULE_LIST] === 0 ? s[S_RULE_TEXT] : null;
  const seal = new Seal(texts, allowed, many, allowRule, eventText);
  seal.digest = digest;
  const host = (nulls & (1 << S_HOST)) === 0 ? s[S_HOST] : null;
  const url = (nulls & (1 << S_URL)) === 0 ? s[S_URL] : null;
  const verdict = VERDICTS[n[N_VERDICT]];
  const mode = n[N_MODE] === 1 ? 'monitor' : 'enforce';
  seal.verdict = verdict;
  seal.outcome = TABLES[1][outcome];
  seal.mode = mode;
  seal.host = host;
  seal.port = n[N_PORT];
  seal.url = url;
  return new Decision(
    verdict,
    TABLES[1][outcome],
    outcome === 1 && reason === 0 ? null : reasons[reason],
    s[S_MESSAGE],
    host,
    n[N_PORT],
    mode,
    outcome !== 1,
    n[N_HAS_RULE] === 1 ? { index: n[N_RULE_INDEX], list: LISTS[n[N_RULE_LIST]], text: s[S_RULE_TEXT] } : null,
    addresses,
    (nulls & (1 << S_CURL_RESOLVE)) === 0 ? s[S_CURL_RESOLVE] : null,
    n[N_DNS_MS],
    n[N_LATENCY_MS],
    digest,
    url,
    eventText,
    seal);
}

/* The request method the event records (data.method), read without
 * parsing the event: the library's writer puts `,"method":` once, as a key
 * of data (lib/event.c); every text a caller supplies is a JSON string
 * there, whose quotes are escaped, so it cannot hold that run. */
const METHOD_KEY = ',"method":';
function eventMethod(text) {
  const at = text.indexOf(METHOD_KEY);
  if (at === -1) return null;
  const v = at + METHOD_KEY.length;
  if (text.charCodeAt(v) !== 34) return null; // "method":null
  let end = v + 1;
  while (end < text.length && text.charCodeAt(end) !== 34) end += text.charCodeAt(end) === 92 ? 2 : 1;
  return JSON.parse(text.slice(v, end + 1));
}

/*
 * A decision: its fields are plain data (the events' names); the class only
 * carries, out of reach, the seal of what the check returned.  connect() and
 * the helpers act on the seal, made of values nobody can change (strings,
 * and the vetted addresses as a bit mask), never on the decision's own
 * (mutable) fields, and refuse any object without one: a copy ({...d},
 * structuredClone) or one built by hand was never vetted.  A private field
 * costs next to nothing on the hot path, where a WeakMap entry costs more
 * than the check itself.
 */
class Decision {
  #seal;
  #eventText;
  #event = undefined;
  constructor(verdict, outcome, reason, message, host, port, mode, wouldDeny, matchedRule, addresses,
    curlResolve, dnsMs, latencyMs, policyDigest, url, eventText, seal) {
    this.verdict = verdict;
    this.outcome = outcome;
    this.reason = reason;
    this.message = message;
    this.host = host;
    this.port = port;
    this.mode = mode;
    this.wouldDeny = wouldDeny;
    this.matchedRule = matchedRule;
    this.addresses = addresses;
    this.curlResolve = curlResolve;
    this.dnsMs = dnsMs;
    this.latencyMs = latencyMs;
    this.policyDigest = policyDigest;
    this.url = url;
    this.#eventText = eventText;
    this.#seal = seal;
  }

  /** The decision event, parsed from its text on first read. */
  get event() {
    if (this.#event === undefined) this.#event = this.#eventText === null ? null : JSON.parse(this.#eventText);
    return this.#event;
  }

  set event(v) {
    this.#event = v;
  }

  /* JSON.stringify sees the event as it saw the data property it replaces. */
  toJSON() {
    return { ...this, event: this.event };
  }

  static sealOf(d) {
    return d !== null && typeof d === 'object' && #seal in d ? d.#seal : undefined;
  }
}

class Seal {
  constructor(texts, allowed, many, allowRule, eventText) {
    this.checker = null; // the checker whose check made it (madeBy); null: none of the public checks
    this.verdict = null;
    this.outcome = null;
    this.mode = null;
    this.host = null;
    this.port = 0;
    this.url = null;
    this.eventText = eventText; // null: the method is the context's (sealMethod)
    this.knownMethod = undefined; // the method, once read
    this.texts = texts; // address texts in answer order, or null
    this.allowedMask = allowed;
    this.allowedMany = many;
    this.allowRule = allowRule; // text of the allow rule that decided, or null
    this.target = null; // made on first use
    this.digest = null; // of the policy the check applied
    this.epoch = SWAPS; // policy swaps (of any checker) before the decision was made
    this.used = false; // a held decision stands for one request or connection
  }

  /* The request method the check recorded, read from the event text on
   * first use (most decisions never go to a helper that asks). */
  get method() {
    if (this.knownMethod === undefined) this.knownMethod = this.eventText !== null ? eventMethod(this.eventText) : null;
    return this.knownMethod;
  }

  set method(m) {
    this.knownMethod = m;
  }

  passed(i) {
    return this.allowedMany === null ? (this.allowedMask & (1 << i)) !== 0 : this.allowedMany[i] === true;
  }

  get rulePaths() {
    return this.allowRule !== null && ruleLimitsPaths(this.allowRule);
  }
}

const sealOf = Decision.sealOf;

// Policy swaps of every checker so far: a decision made before a checker's
// last swap is stale for that checker (Checker#_swappedAt), even if its
// digest matches again (A, then B, then A).
let SWAPS = 0;

// A URL entry with a path prefix ("https://h/v1"): only a URL check applies it.
function ruleLimitsPaths(text) {
  const m = /^https?:\/\/[^/]*(\/.*)?$/i.exec(text);
  return m !== null && m[1] !== undefined && m[1] !== '/';
}


// ---------------------------------------------------------------------------
// Errors
// ---------------------------------------------------------------------------

/*
 * EgressError                 .code, .status
 * ├── EgressPolicyError       bad policy or unreadable policy file (the old one stays)
 * └── EgressDeniedError       .decision, .reason                code EEGRESSDENIED
 *     └── EgressUnavailableError                                code EEGRESSUNAVAILABLE
 *
 * The codes are the Python binding's: the library status for library
 * failures (EGRESS_EPOLICY, EGRESS_EIO, ...), EGRESS_CLOSED for a closed
 * checker.  An outage is a denial to the caller, hence the subclass.
 */

let STATUS_NAMES = null; // code token -> library status name

function statusName(code) {
  if (STATUS_NAMES === null) {
    if (!TABLES || !TABLES[4]) return null;
    STATUS_NAMES = new Map(TABLES[4].map(([c, n]) => [c, n]));
  }
  const n = STATUS_NAMES.get(code);
  return n === undefined ? null : n;
}

/** Base class of every libegress error. */
class EgressError extends Error {
  constructor(message, code, status) {
    super(message);
    this.code = code || 'EGRESS_ERROR';
    this.status = status === undefined ? statusName(this.code) : status;
  }
}

/** A policy that could not be compiled or (re)loaded; the policy in force is unchanged. */
class EgressPolicyError extends EgressError {
  constructor(message, code, status) {
    super(message, code || 'EGRESS_EPOLICY', status);
  }
}

function denyText(decision) {
  const d = decision || {};
  return `egress denied: ${d.host}:${d.port}: ${d.message}`;
}

/** A connection the policy denies. */
class EgressDeniedError extends EgressError {
  constructor(decision, message) {
    super(message || denyText(decision), 'EEGRESSDENIED', null);
    this.decision = decision;
    this.reason = decision && decision.reason !== undefined ? decision.reason : null;
  }
}

/** A check that could not be made (DNS down, audit sink failing, ...), or
 *  nothing vetted to connect to: denied. */
class EgressUnavailableError extends EgressDeniedError {
  constructor(decision, message) {
    const d = decision || {};
    super(decision, message || `egress enforcement unavailable: ${d.host}:${d.port}: ${d.message}`);
    this.code = 'EEGRESSUNAVAILABLE';
  }
}

for (const C of [EgressError, EgressPolicyError, EgressDeniedError, EgressUnavailableError])
  Object.defineProperty(C.prototype, 'name', { value: C.name, writable: true, configurable: true });

function errorFor(decision) {
  return decision.outcome === 'enforcement_unavailable'
    ? new EgressUnavailableError(decision)
    : new EgressDeniedError(decision);
}

/* The addon throws Errors whose code names the library status; give them
 * their class.  Argument errors (TypeError, RangeError) stay as they are. */
function libraryError(e) {
  if (!e || e instanceof EgressError || e instanceof TypeError || e instanceof RangeError) return e;
  const code = e.code;
  if (typeof code !== 'string' || !code.startsWith('EGRESS_')) return e;
  const C = code === 'EGRESS_EPOLICY' || code === 'EGRESS_EIO' ? EgressPolicyError : EgressError;
  return new C(e.message, code);
}

function rethrowLibrary(e) {
  throw libraryError(e);
}

/* checkAsync's result: the promise of a check waiting for DNS, or a check
 * decided at once (a literal, a cached name, a policy denial), packed. */
function settleCheck(r, checker) {
  return typeof r === 'object' && r !== null
    ? r.then((d) => madeBy(checker, d), rethrowLibrary)
    : Promise.resolve(madeBy(checker, buildDecision(r)));
}

/* Records in D's seal the checker that made it: a held decision is taken
 * only by that checker's helpers and connect() (see genuine), never by
 * another checker's, whose mode, policy and events are not the ones the
 * check applied. */
function madeBy(checker, d) {
  sealOf(d).checker = checker;
  return d;
}

function closedError() {
  return new EgressError('the checker is closed', 'EGRESS_CLOSED');
}

function argError(message) {
  const e = new TypeError(message);
  e.code = 'ERR_INVALID_ARG_VALUE';
  return e;
}

// ---------------------------------------------------------------------------
// Request context: the decision event's keys
// ---------------------------------------------------------------------------

const CTX_KEYS = ['method', 'workspaceId', 'agentId', 'machineId', 'runId', 'correlationId'];
const CTX_INDEX = new Map(CTX_KEYS.map((k, i) => [k, i]));
const CTX_MAX = 1024; // bytes, as egress_request_set() enforces
// x-egress-run-id, X-Egress-RunId, ... -> runId (the method is the request's own)
const HEADER_KEYS = new Map(CTX_KEYS.slice(1).map((k) => [k.toLowerCase(), k]));

/* Why a context value cannot go into an event, or null. */
function ctxProblem(v) {
  if (/[\u0000-\u001f\u007f]/.test(v)) return 'holds control characters';
  if (!v.isWellFormed()) return 'is not well-formed Unicode (lone surrogate)';
  if (Buffer.byteLength(v, 'utf8') > CTX_MAX) return `is longer than ${CTX_MAX} bytes`;
  return null;
}

function ctxValue(v, key, what) {
  if (typeof v !== 'string') throw new TypeError(`${what}.${key} must be a string`);
  const bad = ctxProblem(v);
  if (bad) throw argError(`${what}.${key} ${bad}`);
  return v;
}

/*
 * Request context from an object with the event's keys: a null-prototype
 * object of the keys given (null/undefined values are "not given").  An
 * unknown key is a TypeError, so that a misspelt key is not silently
 * dropped from the audit record.  withDecision admits `decision` too (the
 * per-request options of the helpers).
 */
function ctxFields(ctx, what, withDecision) {
  if (ctx === null || typeof ctx !== 'object' || Array.isArray(ctx))
    throw new TypeError(`${what} must be an object`);
  let out = null;
  for (const key of Object.keys(ctx)) {
    if (!CTX_INDEX.has(key)) {
      if (withDecision && key === 'decision') continue;
      throw new TypeError(
        `unknown request context key ${JSON.stringify(key)} in ${what} (expected one of ${CTX_KEYS.join(', ')}` +
          `${withDecision ? ', decision' : ''})`);
    }
    const v = ctx[key];
    if (v === undefined || v === null) continue;
    if (out === null) out = Object.create(null);
    out[key] = ctxValue(v, key, what);
  }
  return out;
}

/* Layers merged in order, later ones winning; two layers of one request
 * (headers and the egress option) that disagree are refused. */
function mergeFields(base, ...strict) {
  let out = base === null ? null : Object.assign(Object.create(null), base);
  let seen = null;
  for (const layer of strict) {
    if (layer === null) continue;
    for (const k of Object.keys(layer)) {
      if (seen !== null && seen[k] !== undefined && seen[k] !== layer[k])
        throw argError(`two values for request context ${k}: ${JSON.stringify(seen[k])} and ${JSON.stringify(layer[k])}`);
    }
    seen = Object.assign(seen || Object.create(null), layer);
  }
  if (seen !== null) out = Object.assign(out || Object.create(null), seen);
  return out;
}

/*
 * AsyncLocalStorage: runWithContext(ctx, fn) and checker.withContext(ctx, fn)
 * give every check made inside fn (directly or by the helpers: fetch,
 * http.get through the guarded or installed agents) that context.  The
 * store is a list of layers, innermost last; a layer names a checker or
 * none (every checker).  A layer may hold a decision for the first request
 * of the checker (checker.fetch() with egress.decision).
 */
const als = new AsyncLocalStorage();

function runLayer(checker, fields, held, fn, args) {
  if (typeof fn !== 'function') throw new TypeError('fn must be a function');
  const outer = als.getStore();
  const layer = { checker, fields, held };
  const layers = outer === undefined ? [layer] : outer.layers.concat([layer]);
  return als.run({ layers }, fn, ...args);
}

/** The context in force for CHECKER here (AsyncLocalStorage), or null. */
function alsFields(checker) {
  const st = als.getStore();
  if (st === undefined) return null;
  let out = null;
  for (const l of st.layers) {
    if (l.fields === null || (l.checker !== null && l.checker !== checker)) continue;
    out = Object.assign(out || Object.create(null), l.fields);
  }
  return out;
}

/* The held decision of the innermost layer for CHECKER, once. */
function alsTakeHeld(checker) {
  const st = als.getStore();
  if (st === undefined) return undefined;
  for (let i = st.layers.length - 1; i >= 0; i--) {
    const h = st.layers[i].held;
    if (h && st.layers[i].checker === checker && !h.used) {
      h.used = true;
      return h.decision;
    }
  }
  return undefined;
}

/* The array the addon takes: registration defaults, then the context in
 * force (AsyncLocalStorage), then the call's own; METHOD (the request's
 * method on the wire) last.  undefined when there is nothing to set. */
function ctxArray(defaults, ambient, own, method) {
  if (defaults === null && ambient === null && own === null && method === undefined) return undefined;
  const a = [undefined, undefined, undefined, undefined, undefined, undefined];
  for (const layer of [defaults, ambient, own]) {
    if (layer === null) continue;
    for (const k in layer) a[CTX_INDEX.get(k)] = layer[k];
  }
  if (method !== undefined) a[0] = method;
  return a;
}

/*
 * The request context a MachineRegistrationV1 record gives every check of
 * its machine: its top-level machineId and workspaceId.  Only a record (one
 * with executionPolicy, the shape the library reads as one) gives any.
 * TEXT, when the document came as JSON text, is scanned for a repeated key:
 * cJSON reads the first and JSON.parse the last, so neither is safe to stamp
 * on every audit event.
 */
function registrationDefaults(doc, text) {
  if (doc === null || typeof doc !== 'object' || Array.isArray(doc) || !('executionPolicy' in doc)) return null;
  let out = null;
  for (const key of ['workspaceId', 'machineId']) {
    const v = doc[key];
    if (typeof v !== 'string' || v === '') continue;
    if (text !== undefined && topLevelKeyCount(text, key) > 1)
      throw new EgressPolicyError(`${key}: key appears more than once`, 'EGRESS_EPOLICY');
    const bad = ctxProblem(v);
    if (bad) throw new EgressPolicyError(`${key} ${bad} (used as the request context of every check)`, 'EGRESS_EPOLICY');
    if (out === null) out = Object.create(null);
    out[key] = v;
  }
  return out;
}

function parseOrNull(text) {
  try {
    return JSON.parse(text);
  } catch {
    return null;
  }
}

function defaultsOfText(text) {
  return registrationDefaults(parseOrNull(text), text);
}

/* How often KEY is a member name of the top-level object of valid JSON TEXT. */
function topLevelKeyCount(text, key) {
  let depth = 0;
  let n = 0;
  let expectKey = false;
  for (let i = 0; i < text.length; i++) {
    const c = text[i];
    if (c === '"') {
      let j = i + 1;
      while (j < text.length && text[j] !== '"') j += text[j] === '\\' ? 2 : 1;
      if (depth === 1 && expectKey) {
        if (parseOrNull(text.slice(i, j + 1)) === key) n++;
        expectKey = false;
      }
      i = j;
    } else if (c === '{' || c === '[') {
      depth++;
      expectKey = depth === 1 && c === '{';
    } else if (c === '}' || c === ']') {
      depth--;
    } else if (c === ',' && depth === 1) {
      expectKey = true;
    }
  }
  return n;
}

function sameDefaults(a, b) {
  return JSON.stringify(a) === JSON.stringify(b);
}

function readOrNull(file) {
  try {
    return fs.readFileSync(file);
  } catch {
    return null;
  }
}

const FILE_TRIES = 5;

/*
 * Run ACTION (a library call that reads FILE itself) with the registration
 * defaults of the same bytes: the library reads the file for the policy, this
 * reads it for the machine's context; reading it before and after makes both
 * come from one version of a file being replaced (a ConfigMap swap).  The
 * defaults are taken before ACTION, so a record they refuse changes nothing.
 */
function fromStableFile(file, action, undo) {
  for (let i = 0; i < FILE_TRIES; i++) {
    const before = readOrNull(file);
    const defaults = before === null ? null : defaultsOfText(before.toString('utf8'));
    const result = action();
    const after = readOrNull(file);
    if (before === null ? after === null : after !== null && before.equals(after)) return { result, defaults };
    if (undo) undo(result);
  }
  throw new EgressPolicyError(`${file}: the file changed while it was read, ${FILE_TRIES} times`, 'EGRESS_EIO');
}

// ---------------------------------------------------------------------------
// Argument handling
// ---------------------------------------------------------------------------

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
  return net.isIP(bareHost(host)) !== 0;
}

function bareHost(host) {
  return host.length > 1 && host[0] === '[' && host[host.length - 1] === ']' ? host.slice(1, -1) : host;
}

function wantFamily(options) {
  if (typeof options === 'number') return options;
  if (!options || typeof options !== 'object') return 0;
  const f = options.family;
  if (f === 'IPv4') return 4;
  if (f === 'IPv6') return 6;
  return f === 4 || f === 6 ? f : 0;
}

const kRetire = Symbol('egress.retire');

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
    const create = () => {
      try {
        return n.create(o, onEvent);
      } catch (e) {
        throw libraryError(e);
      }
    };
    this._closed = false;
    this._generation = 0;
    this._swappedAt = 0; // SWAPS at this checker's last policy swap
    this._digest = null; // digest of the policy in force, read when _digestAt lags
    this._digestAt = -1;
    this._guards = new Set(); // WeakRefs of the agents and dispatchers to retire on a swap
    this._prune = 64;
    this._dispatcher = null;
    this._policyFile = o.policyFile;
    this.mode = o.monitor ? 'monitor' : 'enforce';
    this._monitor = !!o.monitor; // the mode the addon applies (this.mode is a plain, writable field)
    if (o.policyFile !== undefined) {
      const r = fromStableFile(o.policyFile, create, (h) => n.close(h));
      this._h = r.result;
      this._defaults = r.defaults;
    } else {
      this._defaults =
        typeof options.policy === 'string' ? defaultsOfText(options.policy) : registrationDefaults(options.policy);
      this._h = create();
    }
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
    if (this._closed) throw closedError();
  }

  /** The context every check gets unless it gives its own: machineId and
   *  workspaceId of a MachineRegistrationV1 policy document. */
  get defaultContext() {
    return Object.assign({}, this._defaults);
  }

  /** Check HOST:PORT without blocking: on this thread's event loop, DNS
   *  answered through it; no thread pool. */
  check(host, port, ctx) {
    try {
      this._live();
      checkHostPort(host, port);
      const a = ctxArray(this._defaults, alsFields(this), ctxOf(ctx), undefined);
      return settleCheck(native.checkAsync(this._h, host, port, a, undefined), this);
    } catch (e) {
      return Promise.reject(libraryError(e));
    }
  }

  /** Check HOST:PORT on this thread.  Only for names already cached and IP
   *  literals: an uncached name waits for DNS here, blocking the loop. */
  checkSync(host, port, ctx) {
    this._live();
    checkHostPort(host, port);
    const a = ctxArray(this._defaults, alsFields(this), ctxOf(ctx), undefined);
    return sealMethod(madeBy(this, buildDecision(native.checkSync(this._h, host, port, a))), a);
  }

  /** Check an http(s) URL without blocking (see check). */
  checkUrl(url, ctx) {
    try {
      this._live();
      if (typeof url !== 'string') throw new TypeError('url must be a string');
      const a = ctxArray(this._defaults, alsFields(this), ctxOf(ctx), undefined);
      return settleCheck(native.checkAsync(this._h, null, 0, a, url), this);
    } catch (e) {
      return Promise.reject(libraryError(e));
    }
  }

  /** Check an http(s) URL on this thread (see checkSync). */
  checkUrlSync(url, ctx) {
    this._live();
    if (typeof url !== 'string') throw new TypeError('url must be a string');
    const a = ctxArray(this._defaults, alsFields(this), ctxOf(ctx), undefined);
    return sealMethod(madeBy(this, buildDecision(native.checkUrlSync(this._h, url, a))), a);
  }

  /* The helpers' check of one request: the context captured when the
   * request was made (AMBIENT), its own (OWN) and its method. */
  _checkRequest(url, host, port, ambient, own, method) {
    try {
      this._live();
      const a = ctxArray(this._defaults, ambient, own, method);
      const r = url !== null ? native.checkAsync(this._h, null, 0, a, url) : native.checkAsync(this._h, host, port, a, undefined);
      if (typeof r === 'object' && r !== null) return r.then(undefined, rethrowLibrary);
      // Decided at once: settle on the next turn of the loop, as a check on
      // the thread pool did, so that a connection the previous request is
      // handing back to its pool is there to be reused.
      const d = buildDecision(r);
      return new Promise((resolve) => setImmediate(resolve, d));
    } catch (e) {
      return Promise.reject(libraryError(e));
    }
  }

  /** Run fn(...args) with request context for every check of this checker
   *  made inside it, directly or by the helpers (AsyncLocalStorage). */
  withContext(ctx, fn, ...args) {
    return runLayer(this, ctx === undefined || ctx === null ? null : ctxFields(ctx, 'ctx', false), null, fn, args);
  }

  /** Replace the policy (JSON text or object); throws EgressPolicyError and
   *  keeps the old one when it is invalid.  Retires pooled connections. */
  setPolicy(policy) {
    this._live();
    const text = typeof policy === 'string' ? policy : JSON.stringify(policy);
    if (typeof text !== 'string') throw new TypeError('policy must be JSON text or an object');
    const defaults = typeof policy === 'string' ? defaultsOfText(text) : registrationDefaults(policy);
    try {
      native.setPolicy(this._h, text);
    } catch (e) {
      throw libraryError(e);
    }
    this._defaults = defaults;
    this._retireAll();
  }

  /** Reload the policy file (the constructor's policyFile by default). */
  reloadFile(file) {
    this._live();
    const p = file === undefined ? this._policyFile : file;
    if (typeof p !== 'string') throw new TypeError('reloadFile needs a path (no policyFile was given)');
    let swapped = false;
    const { defaults } = fromStableFile(p, () => {
      try {
        swapped = native.reloadFile(this._h, p) || swapped;
      } catch (e) {
        throw libraryError(e);
      }
    });
    const changed = swapped || !sameDefaults(defaults, this._defaults);
    this._defaults = defaults;
    if (swapped) this._retireAll();
    return { changed };
  }

  /* A new policy: connections opened under the old one are closed when
   * idle and never reused (each request is checked anyway). */
  _retireAll() {
    this._generation++;
    this._swappedAt = ++SWAPS;
    for (const ref of this._guards) {
      const g = ref.deref();
      if (g === undefined) this._guards.delete(ref);
      else g[kRetire]();
    }
  }

  _register(guard) {
    // Agents made per request (`agent: false`) and dispatchers made per
    // call come and go: forget the collected ones now and then.
    if (this._guards.size >= this._prune) {
      for (const r of this._guards) if (r.deref() === undefined) this._guards.delete(r);
      this._prune = Math.max(64, 2 * this._guards.size);
    }
    const ref = new WeakRef(guard);
    this._guards.add(ref);
    return ref;
  }

  /* Digest of the policy in force, read from the library once per swap. */
  _policyDigest() {
    if (this._digestAt !== this._swappedAt) {
      this._digest = native.policyInfo(this._h)[0];
      this._digestAt = this._swappedAt;
    }
    return this._digest;
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
   *  calls throw (promises reject) with code EGRESS_CLOSED.  Idle pooled
   *  connections of its helpers are closed. */
  close() {
    if (this._closed) return;
    this._closed = true;
    native.close(this._h);
    this._retireAll();
    if (this._dispatcher !== null) {
      this._dispatcher.close().catch(() => {});
      this._dispatcher = null;
    }
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
   * connect(decision[, options][, listener]): connect to the addresses a
   * check vetted, tried in order, with no second check and no lookup (TLS
   * with options.tls).  connect(options[, listener]): net.connect that
   * checks first (IP literals before the socket is made, names through the
   * vetted lookup bound to options.port); a refusal is the socket's 'error'.
   */
  connect(options, connectListener, listener) {
    if (isDecisionArg(options)) return connectDecision(this, options, connectListener, listener);
    if (!options || typeof options !== 'object') throw new TypeError('connect(options): options must be an object');
    // Read once: what is checked is what net.connect gets (a getter cannot
    // show undefined to the checks and a Unix socket path to net.connect).
    const g = guardConnection(this, { ...options }, undefined);
    if (g.error) {
      const socket = new net.Socket();
      process.nextTick(() => socket.destroy(g.error));
      return socket;
    }
    return net.connect(g.options, connectListener);
  }

  /** An http.Agent that checks every request it carries (see README). */
  httpAgent(options) {
    return new EgressHttpAgent(options, this);
  }

  /** An https.Agent that checks every request it carries. */
  httpsAgent(options) {
    return new EgressHttpsAgent(options, this);
  }

  /**
   * An undici Dispatcher (for fetch({dispatcher}) and undici.request) that
   * checks every request it is given.  Uses the undici package when it is
   * installed, else the undici inside Node's own fetch.
   */
  undiciDispatcher(options) {
    const U = undiciClasses();
    return new (dispatcherClass(U))(this, options, U);
  }

  /**
   * fetch() through this checker: the global fetch with a dispatcher of
   * this checker's.  init.egress holds request context (the event's keys)
   * and optionally a decision already made for this request.
   */
  fetch(input, init) {
    try {
      this._live();
      const o = init === undefined || init === null ? {} : init;
      if (typeof o !== 'object') throw new TypeError('init must be an object');
      const { egress: eg, dispatcher, ...rest } = o;
      if (dispatcher !== undefined && !(dispatcher && dispatcher[kDispatcherChecker] === this))
        throw new TypeError('checker.fetch() uses its own dispatcher: pass no dispatcher, or one of this checker\'s');
      const fields = eg === undefined || eg === null ? null : ctxFields(eg, 'egress', true);
      let held = null;
      if (eg && eg.decision !== undefined && eg.decision !== null) held = { decision: genuine(eg.decision, this), used: false };
      const d = dispatcher || this._sharedDispatcher();
      return runLayer(this, fields, held, () => globalThis.fetch(input, Object.assign(rest, { dispatcher: d })), []);
    } catch (e) {
      return Promise.reject(e);
    }
  }

  _sharedDispatcher() {
    if (this._dispatcher === null) this._dispatcher = this.undiciDispatcher();
    return this._dispatcher;
  }
}

function ctxOf(ctx) {
  if (ctx === undefined || ctx === null) return null;
  return ctxFields(ctx, 'ctx', false);
}

/* A decision made on this thread without an event knows its method from the
 * context it was checked with. */
function sealMethod(d, a) {
  if (a !== undefined && a[0] !== undefined) {
    const s = sealOf(d);
    if (s.method === null) s.method = a[0];
  }
  return d;
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
// Held decisions: connecting with what a check vetted
// ---------------------------------------------------------------------------

function isDecisionArg(x) {
  return x !== null && typeof x === 'object' && (sealOf(x) !== undefined || ('verdict' in x && 'addresses' in x));
}

/* DECISION, if a check of CHECKER made it.  Another checker's decision is
 * refused even under the same policy digest: its mode is not this one's (a
 * monitor-mode decision says allow to what this checker would deny), and
 * its event went to another sink. */
function genuine(decision, checker) {
  const s = sealOf(decision);
  if (s === undefined)
    throw argError('this decision was not made by a check (only addresses a check vetted are connected to; ' +
      'a decision built or copied by hand is refused)');
  if (s.checker !== checker)
    throw argError('the decision was made by another checker: a held decision is good only with the checker ' +
      'whose check made it (its mode, policy and events): check with this checker');
  return decision;
}

/* A held decision opens a connection only if its verdict is allow and, but
 * for a monitor-mode checker, its outcome is allowed too. */
function heldAllows(checker, decision) {
  const s = sealOf(decision);
  if (s.verdict !== 'allow' || (s.outcome !== 'allowed' && !checker._monitor)) throw errorFor(decision);
}

/*
 * Where a decision lets a connection go: the vetted addresses in answer
 * order; in monitor mode, when none passed, the addresses the check saw, or
 * (a name outside the policy, never resolved by the check) the ordinary
 * resolver.  key names the set, for pooling: a pooled connection serves only
 * a request whose own decision vetted the addresses of its pool.
 */
function targetOf(decision) {
  const s = sealOf(decision);
  if (s.target !== null) return s.target;
  const seen = (s.texts || []).map((address) => ({ address, family: address.indexOf(':') === -1 ? 4 : 6 }));
  let addrs = seen.filter((a, i) => s.passed(i));
  let dns = false;
  if (addrs.length === 0 && s.mode === 'monitor' && s.verdict === 'allow') {
    addrs = seen;
    dns = addrs.length === 0;
  }
  if (addrs.length === 0 && !dns)
    throw new EgressUnavailableError(decision, `egress: no vetted address to connect to for ${s.host}:${s.port}`);
  const host = s.host !== null ? s.host : '';
  s.target = {
    addrs,
    dns,
    key: dns ? 'dns' : addrs.map((a) => a.address).sort().join(','),
    literal: net.isIP(host) !== 0 ? host : null,
    host,
    port: s.port,
  };
  return s.target;
}

/* A dns.lookup that answers with ADDRS (the vetted addresses), asking no one. */
function fixedLookup(addrs) {
  return function egressVettedLookup(hostname, options, callback) {
    if (typeof options === 'function') {
      callback = options;
      options = {};
    }
    const family = wantFamily(options);
    const list = family ? addrs.filter((a) => a.family === family) : addrs;
    if (list.length === 0) {
      const err = new Error(`getaddrinfo ENOTFOUND ${hostname} (no vetted IPv${family} address)`);
      err.code = 'ENOTFOUND';
      err.hostname = hostname;
      process.nextTick(callback, err);
    } else if (options && options.all) {
      process.nextTick(callback, null, list.map((a) => ({ address: a.address, family: a.family })));
    } else {
      process.nextTick(callback, null, list[0].address, list[0].family);
    }
  };
}

/* Connection options that reach exactly TARGET: the vetted addresses through
 * the fixed lookup, tried in order (autoSelectFamily), a literal as itself. */
function pinned(options, target) {
  const o = Object.assign({}, options);
  if (target.literal !== null) o.host = target.literal;
  if (!target.dns) {
    o.lookup = fixedLookup(target.addrs);
    if (target.addrs.length > 1 && o.autoSelectFamily === undefined) o.autoSelectFamily = true;
  }
  return o;
}

function normHost(host) {
  if (typeof host !== 'string') return null;
  let h = bareHost(host).toLowerCase();
  if (h.endsWith('.')) h = h.slice(0, -1);
  if (net.isIPv6(h)) {
    try {
      return new URL(`http://[${h}]/`).hostname.slice(1, -1);
    } catch {
      return h;
    }
  }
  // eslint-disable-next-line no-control-regex
  if (/[^\x00-\x7f]/.test(h)) h = domainToASCII(h) || h;
  return h;
}

const DEFAULT_PORTS = { 'http:': 80, 'https:': 443 };

/* origin, path and query of a URL, to compare a request with a URL decision. */
function targetKey(url) {
  let u;
  try {
    u = new URL(url);
  } catch {
    return null;
  }
  const port = u.port === '' ? DEFAULT_PORTS[u.protocol] : Number(u.port);
  return `${u.protocol}//${normHost(u.hostname)}:${port}${u.pathname || '/'}${u.search}`;
}

/*
 * A held decision stands in for the check of one request only if it was
 * made for it: a genuine, allowed decision for its host and port; a URL
 * decision for the same URL (origin, path, query) and method; a host:port
 * decision not when the rule that allowed it limits paths (only a URL check
 * applies those).  Anything else is refused: it would let the request
 * through unchecked.  REQ: {host, port, url|null, method|undefined}.
 */
function heldTarget(checker, decision, req) {
  genuine(decision, checker);
  const s = sealOf(decision);
  if (normHost(req.host) !== normHost(s.host) || req.port !== s.port)
    throw argError(`the decision is for ${s.host}:${s.port}, not ${req.host}:${req.port}`);
  if (req.url !== undefined) {
    if (s.url !== null) {
      const want = targetKey(s.url);
      if (want === null || req.url === null || want !== targetKey(req.url))
        throw argError(`the decision is for ${JSON.stringify(s.url)}, not ${JSON.stringify(req.url)}`);
    } else if (s.rulePaths) {
      throw argError('the decision, from check(host, port), was allowed by a rule that limits paths: ' +
        `hold a checkUrl() decision for ${JSON.stringify(req.url)}`);
    }
    if (s.method !== null && req.method !== undefined && String(s.method).toUpperCase() !== String(req.method).toUpperCase())
      throw argError(`the decision is for a ${s.method} request, not ${req.method}`);
  }
  heldAllows(checker, decision);
  const t = targetOf(decision);
  takeHeld(checker, decision);
  return t;
}

/*
 * A held decision about to open a request or a connection of CHECKER: it
 * must have been made under the policy in force there (same digest, no swap
 * since), and is good for one request or connection, as a check is.
 */
function takeHeld(checker, decision) {
  checker._live();
  const s = sealOf(decision);
  if (s.epoch < checker._swappedAt || s.digest !== checker._policyDigest())
    throw argError('the decision was made under another policy than the one in force (setPolicy or reloadFile since): ' +
      'check again');
  if (s.used) throw argError('the decision was used already: a decision stands for one request or connection; check again');
  s.used = true;
}

function requestTarget(d) {
  if (d.verdict !== 'allow') throw errorFor(d);
  return targetOf(d);
}

function connectDecision(checker, decision, options, listener) {
  if (typeof options === 'function') {
    listener = options;
    options = undefined;
  }
  if (options !== undefined && options !== null && typeof options !== 'object')
    throw new TypeError('connect(decision, options): options must be an object');
  // Read once (plain copies): the options checked are the options used.
  const o = { ...options };
  const useTls = !!o.tls;
  const tlsOpts = useTls && typeof o.tls === 'object' ? { ...o.tls } : {};
  delete o.tls;
  genuine(decision, checker);
  const s = sealOf(decision);
  heldAllows(checker, decision);
  for (const x of [o, tlsOpts]) {
    const bad = uncheckedOption(x);
    if (bad) throw argError(`connect(decision): option ${bad} would connect elsewhere than the addresses the decision vetted`);
  }
  if ((o.host !== undefined && normHost(o.host) !== normHost(s.host)) || (o.port !== undefined && Number(o.port) !== s.port))
    throw argError(`connect(decision): the decision is for ${s.host}:${s.port}, not ${o.host}:${o.port}`);
  const t = targetOf(decision);
  const p = pinned(Object.assign(o, { host: t.literal !== null ? t.literal : t.host, port: t.port }), t);
  const opts = useTls ? Object.assign(tlsOpts, p) : p;
  if (useTls) {
    // TLS names the checked host: another servername would be another site's
    // certificate and virtual host over the vetted address.
    if (opts.servername === undefined && t.literal === null) opts.servername = t.host;
    if (!sameServername(opts.servername, t))
      throw argError(`connect(decision): servername ${JSON.stringify(opts.servername)} is not the decision's host ${t.host}`);
  }
  takeHeld(checker, decision);
  return useTls ? tls.connect(opts, listener) : net.connect(opts, listener);
}

/* A TLS servername that names the checked host (or none: '' / undefined). */
function sameServername(servername, t) {
  return servername === undefined || servername === null || servername === '' || normHost(servername) === normHost(t.host);
}

// ---------------------------------------------------------------------------
// What cannot be checked, and connect(options)
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

// ---------------------------------------------------------------------------
// One check per request: what the helpers share
// ---------------------------------------------------------------------------

function requestError(message, code) {
  return new EgressError(`egress: ${message}`, code || 'EGRESS_EUNSUPPORTED');
}

/* A host that goes into a URL as it is (a name or an IP literal); anything
 * else is checked as host:port, which decides it as it is (invalid_host). */
function urlSafeHost(host) {
  if (typeof host !== 'string' || host === '') return false;
  if (net.isIPv6(bareHost(host))) return true;
  // eslint-disable-next-line no-control-regex
  return !/[\u0000-\u0020\u007f/?#@\\:[\]%]/.test(host);
}

/* The URL a request stands for: ORIGIN plus a request target that is a path
 * ("*" stands for none).  Absolute-form targets and CONNECT are refused: the
 * check would name one origin while the request reaches another. */
function requestUrl(origin, target, method) {
  if (method === 'CONNECT')
    throw requestError('a CONNECT tunnel is not checked here: the check would name the proxy, not where the tunnel goes');
  if (target === '*') return origin;
  if (typeof target !== 'string' || target[0] !== '/')
    throw argError(`request target ${JSON.stringify(target)} is not a path on ${origin}`);
  // The check must see the bytes sent.  Node and undici send the target as
  // given, a '#' too, but the check's path ends at '#' ("/public#/../secret"
  // checked as "/public"); a character above U+007E is sent as one Latin-1
  // byte but checked as its UTF-8; white space and control characters are
  // refused here rather than half-way (Node refuses most of them itself).
  if (/[^\x21-\x7e]|#/.test(target))
    throw argError(`request target ${JSON.stringify(target)} has a '#', white space, a control or a non-ASCII character: ` +
      'the check would not see what is sent (percent-encode it; a fragment is never sent)');
  return origin + target;
}

function urlOrigin(protocol, host, port) {
  const h = net.isIPv6(bareHost(host)) ? `[${bareHost(host)}]` : host;
  return port === DEFAULT_PORTS[protocol] ? `${protocol}//${h}` : `${protocol}//${h}:${port}`;
}

/* x-egress-run-id: run-42 and the like -> {runId: 'run-42'} */
function headerField(name, value) {
  const key = HEADER_KEYS.get(name.slice(9).replace(/-/g, '').toLowerCase());
  if (key === undefined)
    throw argError(`unknown request context header ${name} (expected x-egress-workspace-id, x-egress-agent-id, ` +
      'x-egress-machine-id, x-egress-run-id or x-egress-correlation-id)');
  if (Array.isArray(value)) {
    if (value.length !== 1) throw argError(`header ${name} given ${value.length} times`);
    value = value[0];
  }
  if (Buffer.isBuffer(value)) value = value.toString('latin1');
  return [key, ctxValue(typeof value === 'number' ? String(value) : value, key, `header ${name}:`)];
}

function isEgressHeader(name) {
  return typeof name === 'string' && name.length > 9 && name.slice(0, 9).toLowerCase() === 'x-egress-';
}

/*
 * undici's headers (an object, a flat [name, value, ...] array, or an
 * iterable of pairs) as a flat array without the x-egress-* ones, and the
 * context those gave.  Always a copy, read once: undici reads the headers
 * after the check, and a live object (Headers, a Map, getters) must not
 * change them in between.
 */
function stripHeaders(headers) {
  if (headers === null || headers === undefined || typeof headers !== 'object') return { headers, fields: null };
  let pairs;
  if (Array.isArray(headers) && !(headers.length > 0 && Array.isArray(headers[0]))) {
    pairs = [];
    for (let i = 0; i < headers.length; i += 2) pairs.push([headers[i], headers[i + 1]]);
  } else if (typeof headers[Symbol.iterator] === 'function') {
    pairs = Array.from(headers, (p) => [p[0], p[1]]);
  } else {
    pairs = Object.entries(headers);
  }
  let fields = null;
  const out = [];
  for (const [n, value] of pairs) {
    const name = String(n);
    if (!isEgressHeader(name)) {
      out.push(name, value);
      continue;
    }
    const [k, v] = headerField(name, value);
    if (fields === null) fields = Object.create(null);
    if (fields[k] !== undefined && fields[k] !== v) throw argError(`two values for header ${name}`);
    fields[k] = v;
  }
  return { headers: out, fields };
}

/* A Host header of a flat header array naming another site than WANT. */
function hostHeadersProblem(flat, want) {
  for (let i = 0; i < flat.length; i += 2)
    if (flat[i].toLowerCase() === 'host') {
      const bad = hostHeaderProblem(flat[i + 1], want);
      if (bad) return bad;
    }
  return null;
}

// ---------------------------------------------------------------------------
// http / https agents
// ---------------------------------------------------------------------------

const kChecker = Symbol('egress.checker');
const kContext = Symbol('egress.context');
const kTarget = Symbol('egress.target');
const kGeneration = Symbol('egress.generation');

/*
 * Agent options that choose where a connection goes.  Node's agent lets its
 * own options win over the request's (host, port, servername), so one given
 * to the constructor would send every request elsewhere than where it was
 * checked: refused there.  (What cannot be checked at all, socketPath, lookup
 * and the rest of UNCHECKED, is refused per request with a deny event.)
 */
const AGENT_TARGET = ['host', 'hostname', 'port', 'servername'];

let INSTALLED = null; // what egress.install() put in place

/*
 * http.Agent / https.Agent with one decision per request.  addRequest()
 * checks the request (its URL: scheme, host, port, path; its method and
 * context) before it is given a socket, and hands the agent the request
 * with the decision's target.  Sockets are pooled by Node's own logic under
 * a name that includes the vetted addresses, so a free socket is reused
 * only by a request whose own decision vetted the address it is open to;
 * createConnection connects only to those addresses (no lookup).  Sockets
 * opened before a policy swap are closed when idle and never reused.
 */
function agentClass(Base, protocol) {
  const defaultPort = DEFAULT_PORTS[protocol];
  return class extends Base {
    constructor(options, checker) {
      const o = { ...options };
      const context = o.context;
      delete o.context;
      for (const k of AGENT_TARGET)
        if (o[k] !== undefined && o[k] !== null)
          throw argError(`${protocol === 'https:' ? 'httpsAgent' : 'httpAgent'}: option ${k} would override the host or ` +
            'port each request is checked for; give it per request');
      super(o);
      this[kContext] = context === undefined || context === null ? null : ctxFields(context, 'context', false);
      this[kChecker] = checker || null;
      this.egressChecker = checker || null;
      if (checker) checker._register(this);
    }

    // The checker of this agent; an agent made by Node for `agent: false`
    // (no checker of its own) uses the one egress.install() put in place.
    _egressChecker() {
      if (this[kChecker]) return this[kChecker];
      const c = INSTALLED && INSTALLED.checker;
      if (c && !this._egressRegistered) {
        this._egressRegistered = true;
        c._register(this);
      }
      return c || null;
    }

    getName(options) {
      const name = super.getName(options);
      const t = options && options[kTarget];
      return t ? `${name}|egress:${t.key}` : name;
    }

    addRequest(req, options, port, localAddress) {
      if (typeof options === 'string') options = { host: options, port, localAddress }; // legacy form
      if (options && options[kTarget]) return super.addRequest(req, options);
      let plan;
      try {
        const checker = this._egressChecker();
        if (!checker) throw requestError('this agent has no checker (egress.install() is not in force): refused', 'EGRESS_NO_CHECKER');
        plan = planAgentRequest(this, checker, req, { ...options }, defaultPort, protocol);
      } catch (e) {
        req.onSocket(null, e);
        return undefined;
      }
      plan.then(
        (target) => {
          if (req.destroyed) req.onSocket(null);
          else super.addRequest(req, Object.assign({}, options, { [kTarget]: target }));
        },
        (err) => req.onSocket(null, err));
      return undefined;
    }

    createConnection(options, oncreate) {
      const t = options && options[kTarget];
      // Checked again here, after the check (the agent's options may have
      // changed since): only the checked target, by its own name.
      const bad = !t ? 'a guarded agent opens connections only for requests it checked'
        : uncheckedOption(options) !== null ? `option ${uncheckedOption(options)} connects where the egress check cannot see`
        : protocol === 'https:' && !sameServername(options.servername, t)
          ? `TLS servername ${JSON.stringify(options.servername)} (from the Host header or the servername option) is not the checked host ${t.host}`
          : null;
      if (bad !== null) {
        const err = requestError(bad, 'EGRESS_UNCHECKED');
        if (typeof oncreate !== 'function') throw err;
        process.nextTick(oncreate, err);
        return undefined;
      }
      // The checked host and port win over whatever the merged options say.
      const pin = { host: t.literal !== null ? t.literal : t.host, port: t.port };
      const socket = super.createConnection(pinned(Object.assign({}, options, pin), t), oncreate);
      if (socket) socket[kGeneration] = t.generation;
      return socket;
    }

    keepSocketAlive(socket) {
      const c = this._egressChecker();
      if (!c || c.closed || socket[kGeneration] !== c._generation) return false;
      return super.keepSocketAlive(socket);
    }

    [kRetire]() {
      for (const name of Object.keys(this.freeSockets)) for (const s of this.freeSockets[name].slice()) s.destroy();
    }
  };
}

const EgressHttpAgent = agentClass(http.Agent, 'http:');
const EgressHttpsAgent = agentClass(https.Agent, 'https:');

/* x-egress-* headers of a ClientRequest, removed before anything is sent. */
function takeRequestHeaders(req) {
  if (req._header) {
    // Headers given as an array (or with Expect) are rendered at once.
    if (/\r\nx-egress-/i.test(req._header))
      throw argError('x-egress-* headers given as an array (or with Expect) are already rendered and cannot be removed: ' +
        'give the headers as an object, or use the egress request option');
    return null;
  }
  let fields = null;
  for (const name of req.getHeaderNames()) {
    if (!isEgressHeader(name)) continue;
    const [k, v] = headerField(name, req.getHeader(name));
    if (fields === null) fields = Object.create(null);
    fields[k] = v;
    req.removeHeader(name);
  }
  return fields;
}

/*
 * What a request says on the wire must be what was checked: its header
 * block, as rendered (first line, Host, no x-egress-*), against WANT
 * {method, path, host, port, defaultPort}.  Returns the difference, or null.
 */
function renderedProblem(header, want) {
  const lines = header.split('\r\n');
  if (lines[0] !== `${want.method} ${want.path} HTTP/1.1`)
    return `the request line ${JSON.stringify(lines[0])} is not the checked ${JSON.stringify(`${want.method} ${want.path}`)}`;
  let hosts = 0;
  for (let i = 1; i < lines.length; i++) {
    const colon = lines[i].indexOf(':');
    if (colon === -1) continue;
    const name = lines[i].slice(0, colon).trim().toLowerCase();
    const value = lines[i].slice(colon + 1).trim();
    if (isEgressHeader(name)) return `header ${name} was set after the request was checked`;
    if (name === 'host' && (++hosts > 1 || hostHeaderProblem(value, want)))
      return hosts > 1 ? 'more than one Host header' : hostHeaderProblem(value, want);
  }
  return null;
}

/* A Host header naming another host or port than the checked one. */
function hostHeaderProblem(value, want) {
  const v = Array.isArray(value) ? value.join(',') : String(value);
  const m = /^(\[[^\]]*\]|[^:]*)(?::(\d+))?$/.exec(v);
  const port = m && m[2] !== undefined ? Number(m[2]) : want.defaultPort;
  if (m === null || normHost(m[1]) !== normHost(want.host) || port !== want.port)
    return `the Host header ${JSON.stringify(v)} is not the checked ${want.host}:${want.port}`;
  return null;
}

/*
 * The request must go out as it was checked: Node renders its header block
 * when the request is first written (end(), write()), which may be after
 * the check, from req.path, req.method and its headers as they are then.
 * Checked when rendered; a request that changed is destroyed with the error
 * (its socket, if it has one, too), so nothing of it is sent.
 */
function guardRender(req, want) {
  if (req._header) {
    // Headers given as an array are rendered already: check them now.
    const bad = renderedProblem(req._header, want);
    if (bad) throw argError(`egress: ${bad}`);
    return;
  }
  const store = req._storeHeader;
  req._storeHeader = function egressStoreHeader(firstLine, headers) {
    const r = store.call(this, firstLine, headers);
    const bad = renderedProblem(this._header, want);
    if (bad) this.destroy(requestError(`${bad}: the request changed after it was checked, refused`, 'EGRESS_UNCHECKED'));
    return r;
  };
}

/* The decision for one request of an agent: {held decision | check}.
 * OPTIONS is the agent's own copy; EGRESS is read once, too. */
function planAgentRequest(agent, checker, req, options, defaultPort, protocol) {
  const eg = options.egress === undefined || options.egress === null ? null : { ...options.egress };
  const own = eg === null ? null : ctxFields(eg, 'egress', true);
  const fields = mergeFields(agent[kContext], takeRequestHeaders(req), own);
  const ambient = alsFields(checker);
  const method = req.method;
  const port = portOf(options.port, defaultPort);
  // What Node's agent merges for its connection: the agent's options win.
  const merged = Object.assign({}, options, agent.options);
  const bad = uncheckedOption(merged);
  if (bad) return Promise.reject(refuseUnchecked(checker, bad, merged[bad], port));
  const host = options.host || options.hostname || 'localhost';
  const path = req.path;
  const url = urlSafeHost(host) && validPort(port) ? requestUrl(urlOrigin(protocol, host, port), path, method) : null;
  if (protocol === 'https:' && !sameServername(options.servername, { host }))
    throw argError(`servername ${JSON.stringify(options.servername)} is not the request's host ${host}`);
  const want = { method, path, host, port, defaultPort };
  // A Host header naming another site: refused before the check, as the
  // servername above (Node derives the TLS servername from it, too).
  const hostHeader = req._header ? undefined : req.getHeader('host');
  if (hostHeader !== undefined && hostHeaderProblem(hostHeader, want)) throw argError(`egress: ${hostHeaderProblem(hostHeader, want)}`);
  guardRender(req, want);
  const generation = checker._generation;
  const withGen = (t) => Object.assign({}, t, { generation });
  if (eg !== null && eg.decision !== undefined && eg.decision !== null)
    return Promise.resolve(withGen(heldTarget(checker, eg.decision, { host, port, url, method })));
  return checker._checkRequest(url, host, port, ambient, fields, method).then((d) => withGen(requestTarget(d)));
}

// ---------------------------------------------------------------------------
// undici dispatcher
// ---------------------------------------------------------------------------

const GLOBAL_DISPATCHER = Symbol.for('undici.globalDispatcher.1');
const kDispatcherChecker = Symbol('egress.dispatcherChecker');

let UNDICI = null;
let NODE_DISPATCHER = null; // Node's own global dispatcher, as first seen
let forceNodeUndici = false;

/* The global dispatcher of Node's fetch before anyone (egress.install())
 * replaced it.  Reading Headers loads Node's bundled undici, which sets it. */
function nodeDispatcher() {
  if (NODE_DISPATCHER === null) {
    void globalThis.Headers;
    const g = globalThis[GLOBAL_DISPATCHER];
    if (g && !(INSTALLED && g === INSTALLED.dispatcher)) NODE_DISPATCHER = g;
  }
  return NODE_DISPATCHER;
}

/*
 * The undici classes the dispatcher is built from: the undici package when
 * installed, else the undici inside Node's fetch (its Agent class, from
 * Node's global dispatcher), so that install() guards fetch without it.
 */
function undiciClasses() {
  if (UNDICI !== null && !(forceNodeUndici && UNDICI.source === 'package')) return UNDICI;
  if (!forceNodeUndici) {
    try {
      const u = require('undici');
      UNDICI = { Agent: u.Agent, Dispatcher: u.Dispatcher, RedirectHandler: u.RedirectHandler, source: 'package' };
      return UNDICI;
    } catch {
      // fall through to Node's own
    }
  }
  const g = nodeDispatcher();
  const Agent = g && g.constructor;
  if (typeof Agent !== 'function' || typeof Agent.prototype.dispatch !== 'function')
    throw requestError('an undici dispatcher needs the undici package (npm install undici) or Node\'s built-in fetch',
      'EGRESS_NO_UNDICI');
  let D = Agent;
  while (D && D.name !== 'Dispatcher') D = Object.getPrototypeOf(D);
  UNDICI = { Agent, Dispatcher: D || EventEmitter, RedirectHandler: null, source: 'node' };
  return UNDICI;
}

function closedDispatcherError() {
  const e = new Error('The client is destroyed');
  e.name = 'ClientClosedError';
  e.code = 'UND_ERR_CLOSED';
  return e;
}

/* undici's `query` request option, serialized into the path that is both
 * checked and sent. */
function withQuery(path, query) {
  if (query === undefined || query === null) return path;
  if (typeof query !== 'object') throw argError('query must be an object');
  const sp = new URLSearchParams();
  for (const [k, v] of Object.entries(query)) {
    if (Array.isArray(v)) for (const x of v) sp.append(k, String(x));
    else if (v !== undefined) sp.append(k, String(v));
  }
  const q = sp.toString();
  return q === '' ? path : `${path}${path.includes('?') ? '&' : '?'}${q}`;
}

/*
 * A Dispatcher that checks every request it is given (dispatch(opts,
 * handler)): its URL (origin + path), method and context, before it is
 * given a connection.  Allowed requests go to an inner undici Agent per
 * (origin, vetted addresses) whose connections reach only those addresses,
 * so a pooled connection serves only requests whose own decision vetted the
 * address it is open to.  A policy swap closes the inner agents (requests in
 * flight finish; idle connections close; the next request opens anew).
 */
function dispatcherClass(U) {
  if (U.Class) return U.Class;
  class EgressDispatcher extends U.Dispatcher {
    constructor(checker, options, classes) {
      super();
      const opts = Object.assign({}, options);
      if (typeof opts.connect === 'function')
        throw new TypeError('undiciDispatcher: a connect function of your own would connect without the check; pass connect options');
      if (opts.factory !== undefined)
        throw new TypeError('undiciDispatcher: a factory of your own would make clients that connect without the check');
      this[kDispatcherChecker] = checker;
      this._U = classes;
      this._held = opts.decision === undefined || opts.decision === null ? null : { decision: genuine(opts.decision, checker), used: false };
      this._context = opts.context === undefined || opts.context === null ? null : ctxFields(opts.context, 'context', false);
      this._maxRedirections = opts.maxRedirections || 0;
      this._connect = Object.assign({}, opts.connect);
      // What each connection would see (undici spreads connect options into
      // net/tls.connect, and adds the Agent's localAddress).
      this._seen = Object.assign({}, this._connect);
      if (opts.socketPath !== undefined && opts.socketPath !== null) this._seen.socketPath = opts.socketPath;
      if (opts.localAddress !== undefined && opts.localAddress !== null) this._seen.localAddress = opts.localAddress;
      for (const k of ['decision', 'context', 'maxRedirections', 'connect', 'socketPath', 'localAddress']) delete opts[k];
      this._inner = opts;
      this._agents = new Map();
      this._closed = false;
      checker._register(this);
    }

    get closed() {
      return this._closed;
    }

    dispatch(opts, handler) {
      if (this._closed) {
        const e = closedDispatcherError();
        queueMicrotask(() => handler.onError(e));
        return false;
      }
      const ambient = alsFields(this[kDispatcherChecker]);
      const max = opts.maxRedirections !== undefined && opts.maxRedirections !== null ? opts.maxRedirections : this._maxRedirections;
      if (max) {
        if (!this._U.RedirectHandler) {
          queueMicrotask(() => handler.onError(requestError('maxRedirections needs the undici package')));
          return true;
        }
        // Every hop is a request of its own: checked anew, with the context
        // of the first (never its held decision).
        const hop = (o, h) => {
          this._dispatchOne(o, h, ambient, false);
          return true;
        };
        let rh;
        try {
          rh = new this._U.RedirectHandler(hop, max, opts, handler);
        } catch (e) {
          queueMicrotask(() => handler.onError(e));
          return true;
        }
        this._dispatchOne(opts, rh, ambient, true);
        return true;
      }
      this._dispatchOne(opts, handler, ambient, true);
      return true;
    }

    _dispatchOne(opts, handler, ambient, first) {
      let plan;
      try {
        plan = this._plan(opts, ambient, first);
      } catch (e) {
        queueMicrotask(() => handler.onError(e));
        return;
      }
      plan.target.then(
        (target) => {
          if (this._closed) throw closedDispatcherError();
          this._agentFor(plan.origin, target).dispatch(plan.opts, handler);
        }).then(undefined, (e) => handler.onError(e));
    }

    _plan(dispatchOpts, ambient, first) {
      const checker = this[kDispatcherChecker];
      // Read once, into plain copies: the inner Agent dispatches later, after
      // the check, and must see what was checked.  A URL (or any object) as
      // origin becomes the string of its origin now; mutating it afterwards
      // changes nothing.
      const opts = { ...dispatchOpts };
      const u = new URL(opts.origin instanceof URL ? opts.origin.href : String(opts.origin));
      if (u.protocol !== 'http:' && u.protocol !== 'https:') throw argError(`origin ${u.origin} is not http or https`);
      const method = opts.method;
      const path = withQuery(opts.path, opts.query);
      const url = requestUrl(urlOrigin(u.protocol, u.hostname, u.port === '' ? DEFAULT_PORTS[u.protocol] : Number(u.port)), path, method);
      const port = u.port === '' ? DEFAULT_PORTS[u.protocol] : Number(u.port);
      const eg = opts.egress === undefined || opts.egress === null ? null : { ...opts.egress };
      const own = eg === null ? null : ctxFields(eg, 'egress', true);
      const { headers, fields: hdr } = stripHeaders(opts.headers);
      const badHost = Array.isArray(headers) ? hostHeadersProblem(headers, { host: u.hostname, port, defaultPort: DEFAULT_PORTS[u.protocol] }) : null;
      if (badHost) throw argError(`egress: ${badHost}`);
      const fields = mergeFields(this._context, hdr, own);
      const origin = u.origin;
      const sent = Object.assign(opts, { origin, headers, path, maxRedirections: 0 });
      delete sent.egress;
      delete sent.query;
      const bad = uncheckedOption(this._seen);
      if (bad) return { origin, opts: sent, target: Promise.reject(refuseUnchecked(checker, bad, this._seen[bad], port)) };
      let held;
      if (first) {
        if (eg !== null && eg.decision !== undefined && eg.decision !== null) held = eg.decision;
        else if (this._held !== null && !this._held.used) {
          this._held.used = true;
          held = this._held.decision;
        } else held = alsTakeHeld(checker);
      }
      if (held !== undefined)
        return { origin, opts: sent, target: Promise.resolve(heldTarget(checker, held, { host: u.hostname, port, url, method })) };
      return { origin, opts: sent, target: checker._checkRequest(url, null, 0, ambient, fields, method).then(requestTarget) };
    }

    _agentFor(origin, target) {
      const key = `${origin}|${target.key}`;
      let e = this._agents.get(key);
      if (e === undefined) {
        const agent = new this._U.Agent(Object.assign({}, this._inner, { connect: pinned(this._connect, target) }));
        e = { agent, connected: 0 };
        const entry = e;
        agent.on('connect', (o, t) => {
          entry.connected++;
          this.emit('connect', o, [this, ...t]);
        });
        agent.on('disconnect', (o, t, err) => {
          entry.connected--;
          this.emit('disconnect', o, [this, ...t], err);
          // Nothing open any more: forget it (requests queued on it finish).
          if (entry.connected <= 0 && this._agents.get(key) === entry) {
            this._agents.delete(key);
            agent.close().catch(() => {});
          }
        });
        agent.on('connectionError', (o, t, err) => this.emit('connectionError', o, [this, ...t], err));
        this._agents.set(key, e);
      }
      return e.agent;
    }

    [kRetire]() {
      const agents = [...this._agents.values()];
      this._agents.clear();
      return Promise.all(agents.map((e) => e.agent.close().catch(() => {})));
    }

    close(callback) {
      this._closed = true;
      const p = this[kRetire]().then(() => undefined);
      if (typeof callback === 'function') {
        p.then(() => callback(null), callback);
        return undefined;
      }
      return p;
    }

    destroy(err, callback) {
      if (typeof err === 'function') {
        callback = err;
        err = null;
      }
      this._closed = true;
      const agents = [...this._agents.values()];
      this._agents.clear();
      const p = Promise.all(agents.map((e) => e.agent.destroy(err || null).catch(() => {}))).then(() => undefined);
      if (typeof callback === 'function') {
        p.then(() => callback(null), callback);
        return undefined;
      }
      return p;
    }
  }
  U.Class = EgressDispatcher;
  return EgressDispatcher;
}

// ---------------------------------------------------------------------------
// install(): Node's default agents and fetch's global dispatcher
// ---------------------------------------------------------------------------

function setGlobalDispatcher(value) {
  if (Object.prototype.hasOwnProperty.call(globalThis, GLOBAL_DISPATCHER)) globalThis[GLOBAL_DISPATCHER] = value;
  else Object.defineProperty(globalThis, GLOBAL_DISPATCHER, { value, writable: true, enumerable: false, configurable: false });
}

/**
 * Route Node's default HTTP clients through CHECKER: http.globalAgent,
 * https.globalAgent (http.get, https.request ... without an agent of their
 * own, and `agent: false`) and the global dispatcher of fetch (Node's
 * built-in fetch, undici's fetch and request).  Returns uninstall(), which
 * puts back what was there (where nothing else replaced it since) and
 * closes the installed helpers' connections.  Installing the same checker
 * again returns the same uninstall(); another checker is refused while one
 * is installed (code EGRESS_INSTALLED).
 */
function install(checker) {
  if (!(checker instanceof Checker)) throw new TypeError('install(checker): a Checker is required');
  if (INSTALLED !== null) {
    if (INSTALLED.checker === checker) return INSTALLED.uninstall;
    throw new EgressError('egress.install: another checker is installed; call its uninstall() first', 'EGRESS_INSTALLED');
  }
  checker._live();
  const prevDispatcher = nodeDispatcher() !== null ? globalThis[GLOBAL_DISPATCHER] : undefined;
  const dispatcher = checker.undiciDispatcher();
  const agentOptions = { keepAlive: true, scheduling: 'lifo', timeout: 5000 }; // Node's global agents'
  const httpAgent = new EgressHttpAgent(agentOptions, checker);
  const httpsAgent = new EgressHttpsAgent(agentOptions, checker);
  const state = {
    checker,
    dispatcher,
    prev: { http: http.globalAgent, https: https.globalAgent, dispatcher: prevDispatcher },
    uninstall: null,
  };
  state.uninstall = function uninstall() {
    if (INSTALLED !== state) return;
    INSTALLED = null;
    if (http.globalAgent === httpAgent) http.globalAgent = state.prev.http;
    if (https.globalAgent === httpsAgent) https.globalAgent = state.prev.https;
    if (globalThis[GLOBAL_DISPATCHER] === dispatcher) setGlobalDispatcher(state.prev.dispatcher);
    httpAgent.destroy();
    httpsAgent.destroy();
    dispatcher.close().catch(() => {});
  };
  INSTALLED = state;
  http.globalAgent = httpAgent;
  https.globalAgent = httpsAgent;
  setGlobalDispatcher(dispatcher);
  return state.uninstall;
}

/** Run fn(...args) with request context for every check of every checker
 *  made inside it (AsyncLocalStorage). */
function runWithContext(ctx, fn, ...args) {
  return runLayer(null, ctx === undefined || ctx === null ? null : ctxFields(ctx, 'ctx', false), null, fn, args);
}

module.exports = {
  Checker,
  EgressError,
  EgressPolicyError,
  EgressDeniedError,
  EgressUnavailableError,
  install,
  runWithContext,
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
    const stale = ['stale', 'stale.invalid', 'stale', '192.0.2.1', 'stale', 'stale', ''];
    for (let i = 0; i < MEMO_FIELDS.length; i++) {
      MEMO_FIELDS[i] = stale;
      MEMO_TAGS[i] = -1;
    }
  },
  enumerable: false,
});

// For the tests only: the packed layout index.js reads decisions by, and
// the check load() makes of an addon's layout().
Object.defineProperty(module.exports, '_packedLayout', {
  value: { expected: packedLayout, check: checkLayout },
  enumerable: false,
});

// For the tests only: build dispatchers from the undici inside Node's fetch,
// as without the undici package.
Object.defineProperty(module.exports, '_useNodeUndici', {
  value(on) {
    forceNodeUndici = on !== false;
    UNDICI = null;
  },
  enumerable: false,
});
