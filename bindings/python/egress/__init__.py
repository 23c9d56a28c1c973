"""libegress for Python: may this process connect to HOST:PORT?

A thin ctypes binding over libegress (standard library only).  The library
does every decision; this module converts arguments, reads decisions into
frozen dataclasses and connects sockets to exactly the addresses the library
vetted.

    import egress

    with egress.Checker({"egressAllowlist": ["https://api.example.com"]}) as c:
        d = c.check("api.example.com", 443, {"method": "GET", "runId": "run-42"})
        if d.allowed:
            sock = c.connect(d)            # or c.create_connection(host, port)

        # HTTP: one check per request, kept-alive connections re-vetted
        conn = c.https_connection("api.example.com")
        opener = c.urllib_opener(ctx={"runId": "run-42"})

Strings cross into C as NUL-terminated UTF-8.  A host or URL holding a NUL
character is never truncated at the NUL: see ``Checker.check``.
"""

import collections.abc
import ctypes
import dataclasses
import json
import operator
import os
import socket
import sys
import threading
import typing
import weakref

from ._native import EVENT_CB, ERRBUF_SIZE, lib, library_path

__all__ = [
    "Address",
    "Checker",
    "Decision",
    "EgressDeniedError",
    "EgressError",
    "EgressHTTPConnection",
    "EgressHTTPSConnection",
    "EgressHandler",
    "EgressPolicyError",
    "EgressRedirectHandler",
    "EgressUnavailableError",
    "MatchedRule",
    "Request",
    "build_opener",
    "library_path",
    "reason_names",
    "special_ranges_version",
    "version",
    # names of the first release
    "EgressDenied",
    "EgressUnavailable",
    "PolicyError",
]

__version__ = "0.1.0"

_OK = 0
_EINVAL = 2
_EPOLICY = 3
_EIO = 4

_VERDICT_ALLOW = 1
_REASON_INVALID_HOST = 1
_REASON_INVALID_PORT = 2
_REASON_INTERNAL_ERROR = 12

_LISTS = {0: "allow", 1: "deny"}
_MODES = {"enforce": 0, "monitor": 1}
_MODE_NAMES = {0: "enforce", 1: "monitor"}

# Request context: the decision event's own key names, as the Node binding
# takes them, with the snake_case spellings of the first release as aliases.
# Index = egress_field_t.
_FIELD_NAMES = ("method", "workspaceId", "agentId", "machineId", "runId", "correlationId")
_FIELDS = {name: i for i, name in enumerate(_FIELD_NAMES)}
_FIELDS.update(workspace_id=1, agent_id=2, machine_id=3, run_id=4, correlation_id=5)
_F_METHOD = 0
_CONTEXT_MAX = 1024  # bytes, as egress_request_set() enforces

_COUNTERS = (
    "checks",
    "dns_queries",
    "dns_failures",
    "cache_hits",
    "cache_misses",
    "events_emitted",
    "events_failed",
    "policy_swaps",
    "policy_reload_failures",
)

_CACHE_DEFAULTS = {"max_entries": 4096, "min_ttl": 5, "max_ttl": 300, "negative_ttl": 5}

_INT32_MIN = -(2 ** 31)
_INT32_MAX = 2 ** 31 - 1
_UINT32_MAX = 2 ** 32 - 1


# --------------------------------------------------------------------------
# Exceptions
# --------------------------------------------------------------------------

# Node's error codes for library statuses, so both bindings name a failure
# the same way.
_STATUS_CODES = {
    1: "EGRESS_ENOMEM",
    2: "EGRESS_EINVAL",
    3: "EGRESS_EPOLICY",
    4: "EGRESS_EIO",
    5: "EGRESS_ERESOLVER",
    6: "EGRESS_ERANGE",
    7: "EGRESS_EINTERNAL",
}


class EgressError(Exception):
    """Base class of every libegress error.

    ``code`` is a stable token shared with the Node binding: the library
    status ("EGRESS_EPOLICY", "EGRESS_EIO", ...), "EGRESS_CLOSED" for a
    closed checker, "EEGRESSDENIED" / "EEGRESSUNAVAILABLE" for denials, or
    "EGRESS_ERROR".  ``status`` is the library's status token
    ("invalid_policy", "io_error", ...) when the error came from a library
    call, else None.
    """

    code = "EGRESS_ERROR"

    def __init__(self, message, status=None, code=None):
        super().__init__(message)
        self.status = status
        if code is not None:
            self.code = code


class EgressPolicyError(EgressError):
    """A policy could not be compiled or (re)loaded; the policy in force is
    unchanged.  The message names the list, index, entry and problem, e.g.
    ``egressAllowlist[2] "..." : ...``.  ``code`` is "EGRESS_EPOLICY"
    (``status`` "invalid_policy") or "EGRESS_EIO" for an unreadable file
    (``status`` "io_error")."""

    code = "EGRESS_EPOLICY"


class EgressDeniedError(EgressError):
    """The check denied the connection.  ``decision`` is the whole decision,
    ``reason`` its reason token (e.g. "not_in_allowlist")."""

    code = "EEGRESSDENIED"

    def __init__(self, decision, message=None):
        super().__init__(message or _deny_text(decision))
        self.decision = decision
        self.reason = decision.reason

    def __reduce__(self):
        return (type(self), (self.decision, str(self)))


class EgressUnavailableError(EgressDeniedError):
    """Enforcement was unavailable (DNS failure, undeliverable audit event,
    internal error), or there is no vetted address to connect to.

    A subclass of EgressDeniedError: to the caller an outage is a denial, so
    code that handles denials also fails closed on it."""

    code = "EEGRESSUNAVAILABLE"


# The names of the first release, kept so that existing handlers still
# catch what they caught.
PolicyError = EgressPolicyError
EgressDenied = EgressDeniedError
EgressUnavailable = EgressUnavailableError


def _library_error(message, status):
    """The error for a failed policy load: a policy error when the document
    or its file was the problem."""
    cls = EgressPolicyError if status in (_EPOLICY, _EIO) else EgressError
    return cls(message, _status_name(status), _STATUS_CODES.get(status))


def _denied(decision, message=None):
    if decision.outcome == "enforcement_unavailable":
        return EgressUnavailableError(decision, message)
    return EgressDeniedError(decision, message)


def _deny_text(decision):
    return "egress %s: %s" % (decision.reason or decision.outcome, decision.message)


# --------------------------------------------------------------------------
# Decisions
# --------------------------------------------------------------------------

@dataclasses.dataclass(frozen=True)
class MatchedRule:
    """The policy rule that decided: its index in its list, the list
    ("allow" or "deny") and the entry text exactly as written."""
    index: int
    list: str
    text: str


@dataclasses.dataclass(frozen=True)
class Address:
    """One address the check considered (an IP literal or a resolved one).

    ``verdict`` is "allow" when the address passed vetting (it is one to
    connect to); ``reason`` is None then.  ``ttl`` is the DNS TTL in seconds,
    None for literals.  ``sockaddr`` is the library's socket address carrying
    the checked port, in the tuple form ``socket.connect`` takes.
    """
    address: str
    verdict: str
    reason: typing.Optional[str]
    ttl: typing.Optional[int]
    family: int
    sockaddr: typing.Optional[tuple] = None


@dataclasses.dataclass(frozen=True)
class Decision:
    """The result of one check.

    ``verdict`` ("allow" | "deny") is what the caller must do; ``outcome``
    ("allowed" | "denied" | "enforcement_unavailable") is what the policy
    says (they differ in monitor mode); ``reason`` is None when allowed.
    ``host`` is the canonical host (None when invalid); ``destination`` is
    the host exactly as the caller gave it.  ``event`` is the CloudEvents
    decision event as a dict.
    """
    verdict: str
    outcome: str
    reason: typing.Optional[str]
    message: str
    host: typing.Optional[str]
    port: int
    matched_rule: typing.Optional[MatchedRule]
    addresses: typing.Tuple[Address, ...]
    curl_resolve: typing.Optional[str]
    dns_ms: float
    latency_ms: float
    policy_digest: typing.Optional[str]
    event: typing.Optional[dict]
    destination: typing.Union[str, bytes, None] = None
    mode: str = "enforce"
    url: typing.Union[str, bytes, None] = None

    @property
    def allowed(self):
        """True only when the connection may proceed."""
        return self.verdict == "allow"

    @property
    def would_deny(self):
        """True when enforce mode would deny (the outcome is not allowed)."""
        return self.outcome != "allowed"

    @property
    def vetted_addresses(self):
        """The addresses that passed vetting, in answer order."""
        return tuple(a for a in self.addresses if a.verdict == "allow")


def _targets(decision):
    """The addresses connect() tries for an allowed decision, in order."""
    targets = [a for a in decision.addresses if a.verdict == "allow"]
    if not targets and decision.mode == "monitor":
        # Monitor mode observes and never blocks: the addresses the check
        # saw are used even when enforce mode would have refused them.
        targets = list(decision.addresses)
    return [a for a in targets if a.sockaddr is not None]


class _Snapshot(typing.NamedTuple):
    """What the library decided, as immutable values, taken when the check
    returned.  The helpers act on this, never on the Decision's attributes:
    object.__setattr__ edits a "frozen" dataclass in place."""
    issuer: object          # the issuing checker's token
    verdict: str
    outcome: str
    mode: str
    host: typing.Optional[str]
    destination: typing.Union[str, bytes, None]
    port: int
    url: typing.Union[str, bytes, None]
    policy_digest: typing.Optional[str]
    rule: typing.Optional[tuple]    # (index, list, text)
    method: typing.Optional[str]    # the event's
    targets: tuple                  # ((family, sockaddr), ...) to connect to, in order


def _snapshot(decision, issuer):
    rule = decision.matched_rule
    data = decision.event.get("data") if isinstance(decision.event, dict) else None
    return _Snapshot(
        issuer, decision.verdict, decision.outcome, decision.mode, decision.host,
        decision.destination, decision.port, decision.url, decision.policy_digest,
        None if rule is None else (rule.index, rule.list, rule.text),
        data.get("method") if isinstance(data, dict) else None,
        tuple((socket.AddressFamily(a.family), tuple(a.sockaddr)) for a in _targets(decision)))


class _Entry:
    __slots__ = ("ref", "snapshot", "spent", "generation")


# Every decision a check returned, by id(), for as long as the caller keeps
# it, with its snapshot: connect() and the HTTP helpers act only on these.
# A dead decision's entry goes in its weakref callback, which runs before
# its id can be reused.
_ISSUED = {}
_SPEND_LOCK = threading.Lock()


def _issue(decision, issuer, generation):
    entry = _Entry()
    entry.snapshot = _snapshot(decision, issuer)
    entry.spent = False
    entry.generation = generation
    key = id(decision)
    entry.ref = weakref.ref(decision, lambda _ref, key=key: _ISSUED.pop(key, None))
    _ISSUED[key] = entry


def _issued(decision):
    """The entry of a decision a check returned and nobody altered since."""
    if not isinstance(decision, Decision):
        raise TypeError("decision must be an egress.Decision, not %s" % type(decision).__name__)
    entry = _ISSUED.get(id(decision))
    if entry is None or entry.ref() is not decision:
        raise ValueError("this Decision was not made by a check: only addresses "
                         "a check vetted are connected to")
    try:
        same = _snapshot(decision, entry.snapshot.issuer) == entry.snapshot
    except Exception:  # an attribute replaced by something unreadable
        same = False
    if not same:
        # Edits are refused loudly; the snapshot alone is ever acted on, so
        # an edit that compares equal to the original is ignored.
        raise ValueError("this Decision was altered after its check (object.__setattr__): "
                         "only what the library decided is acted on")
    return entry


def _text(raw):
    if raw is None:
        return None
    return raw.decode("utf-8", "replace")


def _sockaddr(ptr, length):
    """Decode a struct sockaddr_in / sockaddr_in6 the library built."""
    if not ptr or length < 16:
        return None
    raw = ctypes.string_at(ptr, length)
    if sys.platform.startswith("linux") or sys.platform.startswith("win"):
        family = int.from_bytes(raw[0:2], sys.byteorder)
    else:  # BSD layout: sa_len, then an 8-bit sa_family
        family = raw[1]
    port = int.from_bytes(raw[2:4], "big")
    if family == socket.AF_INET:
        return socket.AF_INET, (socket.inet_ntop(socket.AF_INET, raw[4:8]), port)
    if family == socket.AF_INET6 and length >= 28:
        flowinfo = int.from_bytes(raw[4:8], "big")
        addr = socket.inet_ntop(socket.AF_INET6, raw[8:24])
        scope = int.from_bytes(raw[24:28], sys.byteorder)
        return socket.AF_INET6, (addr, port, flowinfo, scope)
    return None


def _read_decision(d, destination, port, url):
    verdict = "allow" if lib.egress_decision_verdict(d) == _VERDICT_ALLOW else "deny"
    outcome = _text(lib.egress_outcome_name(lib.egress_decision_outcome(d)))
    reason_code = lib.egress_decision_reason(d)
    reason = None if reason_code == 0 else _text(lib.egress_reason_name(reason_code))
    rule = None
    if lib.egress_decision_has_rule(d):
        rule = MatchedRule(
            index=int(lib.egress_decision_rule_index(d)),
            list=_LISTS.get(lib.egress_decision_rule_list(d), "allow"),
            text=_text(lib.egress_decision_rule_text(d)) or "")
    addresses = []
    for i in range(lib.egress_decision_address_count(d)):
        text = _text(lib.egress_decision_address(d, i))
        if text is None:
            continue
        areason = lib.egress_decision_address_reason(d, i)
        ttl = lib.egress_decision_address_ttl(d, i)
        length = ctypes.c_size_t(0)
        sa = _sockaddr(lib.egress_decision_address_sockaddr(d, i, ctypes.byref(length)),
                       length.value)
        if sa is not None:
            family = sa[0]
        else:
            family = socket.AF_INET6 if ":" in text else socket.AF_INET
        addresses.append(Address(
            address=text,
            verdict="allow" if lib.egress_decision_address_verdict(d, i) == _VERDICT_ALLOW
            else "deny",
            reason=None if areason == 0 else _text(lib.egress_reason_name(areason)),
            ttl=None if ttl < 0 else int(ttl),
            family=socket.AddressFamily(family),
            sockaddr=None if sa is None else sa[1]))
    event = None
    ev = lib.egress_decision_event_json(d)
    if ev:
        event = json.loads(ctypes.string_at(ev).decode("utf-8", "replace"))
    if port is None:  # URL checks: the port the library derived
        port = int(lib.egress_decision_port(d))
    return Decision(
        verdict=verdict,
        outcome=outcome,
        reason=reason,
        message=_text(lib.egress_decision_message(d)) or "",
        host=_text(lib.egress_decision_host(d)),
        port=port,
        matched_rule=rule,
        addresses=tuple(addresses),
        curl_resolve=_text(lib.egress_decision_curl_resolve(d)),
        dns_ms=float(lib.egress_decision_dns_ms(d)),
        latency_ms=float(lib.egress_decision_latency_ms(d)),
        policy_digest=_text(lib.egress_decision_policy_digest(d)),
        event=event,
        destination=destination if destination is not None
        else _text(lib.egress_decision_destination_host(d)),
        mode=_MODE_NAMES.get(lib.egress_decision_mode(d), "enforce"),
        url=url)


def _internal_error_decision(destination, port, url, mode):
    """What a check returns when the library could not even allocate a
    decision: a deny, like the library's own NULL-decision reading."""
    return Decision(
        verdict="deny", outcome="enforcement_unavailable", reason="internal_error",
        message=_text(lib.egress_reason_message(_REASON_INTERNAL_ERROR)) or "internal error",
        host=None, port=port if port is not None else 0, matched_rule=None, addresses=(),
        curl_resolve=None, dns_ms=0.0, latency_ms=0.0, policy_digest=None, event=None,
        destination=destination, mode=mode, url=url)


# --------------------------------------------------------------------------
# Argument conversion
# --------------------------------------------------------------------------

def _c_path(path, what):
    raw = os.fsencode(path)
    if b"\0" in raw:
        raise ValueError("%s holds a NUL character" % what)
    return raw


def _c_text(value, what):
    if not isinstance(value, str):
        raise TypeError("%s must be a str" % what)
    raw = value.encode("utf-8")
    if b"\0" in raw:
        raise ValueError("%s holds a NUL character" % what)
    return raw


def _c_destination(value, nul_replacement, what):
    """Bytes to hand to the library for a host or URL, and None or a message
    saying why they were altered so that the library cannot read them as
    valid.

    C strings end at the first NUL: "api.example.com\\0.evil" passed as is
    would be checked as "api.example.com".  Each NUL is therefore replaced
    by text that the library's grammar rejects, so the check still runs
    (one decision, one event, the counters) and denies with invalid_host,
    and the event shows where the NUL was.  A str that cannot be UTF-8
    (lone surrogates) is passed with its surrogates encoded as the invalid
    UTF-8 they stand for, which the library rejects the same way.
    """
    note = None
    # One exact value, decided and shown alike: a str subclass can override
    # encode() and __str__, a bytes subclass __bytes__, a bytearray change.
    if isinstance(value, str):
        value = str.__str__(value)
        try:
            raw = value.encode("utf-8")
        except UnicodeEncodeError:
            raw = value.encode("utf-8", "surrogatepass")
            note = "invalid %s: %s is not valid UTF-8 (lone surrogate)" % (what, what)
    elif isinstance(value, (bytes, bytearray, memoryview)):
        raw = value = bytes(memoryview(value))
    else:
        raise TypeError("%s must be str or bytes, not %s" % (what, type(value).__name__))
    if b"\0" in raw:
        raw = raw.replace(b"\0", nul_replacement)
        note = "invalid %s: %s contains a NUL character (reported as %r)" % (
            what, what, nul_replacement.decode("ascii"))
    return value, raw, note


def _c_port(port):
    """(the port, the int32 the library takes, None or why it is refused).

    ctypes would wrap 4294967739 to 443, and a clamped value would be
    reported as a port nobody gave; a port outside int32 is passed as 0 (the
    library's "no port", as for a URL whose port it cannot read) with a
    refusal whose message names the real value."""
    if isinstance(port, bool) or not hasattr(port, "__index__"):
        raise TypeError("port must be an int, not %s" % type(port).__name__)
    port = operator.index(port)  # once: __index__ may answer differently twice
    if _INT32_MIN <= port <= _INT32_MAX:
        return port, port, None
    return port, 0, (_REASON_INVALID_PORT, "port %d is outside 1-65535" % port)


def _u32(value, what, low=0, high=_UINT32_MAX):
    if isinstance(value, bool) or not hasattr(value, "__index__"):
        raise TypeError("%s must be an int" % what)
    value = operator.index(value)
    if not low <= value <= high:
        raise ValueError("%s must be in %d..%d" % (what, low, high))
    return value


def _status_name(status):
    return _text(lib.egress_status_name(status)) or "unknown"


def _error_text(status, errbuf):
    msg = errbuf.value.decode("utf-8", "replace") if errbuf is not None else ""
    return msg or (_text(lib.egress_strerror(status)) or "error")


def _context_value(value, key):
    """Refuse what egress_request_set() refuses, before anything else is
    done with the request (an HTTP request line is not yet buffered)."""
    if not isinstance(value, str):
        raise TypeError("%s must be a str, not %s" % (key, type(value).__name__))
    value = str.__str__(value)  # the value checked is the value sent (see _c_destination)
    try:
        raw = value.encode("utf-8")
    except UnicodeEncodeError:
        raise ValueError("%s is not valid Unicode (lone surrogate)" % key) from None
    if len(raw) > _CONTEXT_MAX or any(b < 0x20 or b == 0x7F for b in raw):
        raise ValueError("%s: longer than %d bytes or holds control characters"
                         % (key, _CONTEXT_MAX))
    return value


def _context(*mappings):
    """Request context from mappings given together (a ``ctx`` dict and
    keyword arguments): {egress_field_t: str}.

    Keys are the event's names (runId ...) or their snake_case aliases; a
    value of None means "not given".  Two spellings of one key with two
    different values are refused rather than one silently winning.
    """
    out = {}
    spelled = {}
    for mapping in mappings:
        if mapping is None:
            continue
        if not isinstance(mapping, collections.abc.Mapping):
            raise TypeError("ctx must be a mapping, not %s" % type(mapping).__name__)
        for key, value in mapping.items():
            field = _FIELDS.get(key) if isinstance(key, str) else None
            if field is None:
                raise TypeError("unknown request context %r (expected one of %s)"
                                % (key, ", ".join(_FIELD_NAMES)))
            if value is None:
                continue
            value = _context_value(value, key)
            if field in out and out[field] != value:
                raise TypeError("%s and %s give two values for %s"
                                % (spelled[field], key, _FIELD_NAMES[field]))
            out[field] = value
            spelled[field] = key
    return out


class _TopLevel(dict):
    """A JSON object that remembers which of its keys were repeated."""

    def __init__(self, pairs):
        super().__init__()
        self.repeated = set()
        for key, value in pairs:
            if key in self:
                self.repeated.add(key)
            self[key] = value


def _registration_context(doc):
    """The request context a MachineRegistrationV1 record gives every check
    of its machine: its top-level machineId and workspaceId.

    ``doc`` is the policy document as the caller gave it (a dict) or as
    bytes.  Only a registration record (one with ``executionPolicy``, the
    shape the library reads as one) gives defaults.  Text Python's json
    cannot read gives none: the library alone decides what is a policy.
    """
    if isinstance(doc, (bytes, bytearray, memoryview, str)):
        try:
            doc = json.loads(bytes(doc) if not isinstance(doc, str) else doc,
                             object_pairs_hook=_TopLevel)
        except (ValueError, RecursionError):
            return {}
    if not isinstance(doc, collections.abc.Mapping) or "executionPolicy" not in doc:
        return {}
    out = {}
    for key in ("workspaceId", "machineId"):
        value = doc.get(key)
        if not isinstance(value, str) or not value:
            continue
        if key in getattr(doc, "repeated", ()):
            # cJSON would read the first, Python the last: neither is safe
            # to stamp on every audit event.
            raise EgressPolicyError("%s: key appears more than once" % key, "invalid_policy",
                                    "EGRESS_EPOLICY")
        try:
            out[_FIELDS[key]] = _context_value(value, key)
        except (TypeError, ValueError) as e:
            raise EgressPolicyError("%s (used as the request context of every check)" % e,
                                    "invalid_policy", "EGRESS_EPOLICY") from None
    return out


def _read_file(path):
    try:
        with open(path, "rb") as f:
            return f.read()
    except OSError:
        return None


_FILE_TRIES = 5


def _from_stable_file(path, action, undo=None):
    """Run ``action`` (a library call that reads ``path`` itself) and return
    (its result, the registration context of the same bytes).

    The library reads the file for the policy, Python reads it for the
    machine's context; reading it before and after and comparing makes sure
    both come from one version of a file that is being replaced (a
    ConfigMap symlink swap).
    """
    for _ in range(_FILE_TRIES):
        before = _read_file(path)
        defaults = _registration_context(before) if before is not None else {}
        result = action()
        if _read_file(path) == before:
            return result, defaults
        if undo is not None:
            undo(result)
    raise EgressPolicyError("%s: the file changed while it was read, %d times"
                            % (os.fsdecode(path), _FILE_TRIES), "io_error", "EGRESS_EIO")


def _compile_policy(policy, policy_file):
    """Compile a policy: (handle the caller owns (unref), registration
    context of the document)."""
    if policy is not None and policy_file is not None:
        raise ValueError("give policy or policy_file, not both")
    errbuf = ctypes.create_string_buffer(ERRBUF_SIZE)

    if policy_file is not None:
        cpath = _c_path(policy_file, "policy_file")

        def load():
            out = ctypes.c_void_p()
            st = lib.egress_policy_from_file(cpath, ctypes.byref(out), errbuf, ERRBUF_SIZE)
            if st != _OK or not out.value:
                if st == _OK:
                    st = _EPOLICY
                raise _library_error(_error_text(st, errbuf), st)
            return out.value

        return _from_stable_file(policy_file, load, lib.egress_policy_unref)

    if policy is None:
        raise ValueError("a Checker needs a policy or a policy_file")
    defaults = {}
    if isinstance(policy, collections.abc.Mapping):
        doc = json.dumps(dict(policy)).encode("utf-8")
        defaults = _registration_context(policy)
    elif isinstance(policy, (list, tuple)):
        doc = json.dumps({"egressAllowlist": list(policy)}).encode("utf-8")
    elif isinstance(policy, str):
        try:
            doc = policy.encode("utf-8")
        except UnicodeEncodeError as e:
            raise EgressPolicyError("policy text is not valid Unicode: %s" % e,
                                    "invalid_policy", "EGRESS_EPOLICY") from None
    elif isinstance(policy, (bytes, bytearray, memoryview)):
        doc = bytes(policy)
    else:
        raise TypeError("policy must be a dict, a list of entries or JSON text")
    # The length is passed, so a NUL in the document reaches the library
    # (which rejects it) instead of cutting the document short.
    buf = ctypes.create_string_buffer(doc, len(doc))
    out = ctypes.c_void_p()
    st = lib.egress_policy_from_json(buf, len(doc), ctypes.byref(out), errbuf, ERRBUF_SIZE)
    if st != _OK or not out.value:
        if st == _OK:
            st = _EPOLICY
        raise _library_error(_error_text(st, errbuf), st)
    if not isinstance(policy, (collections.abc.Mapping, list, tuple)):
        try:
            defaults = _registration_context(doc)
        except BaseException:
            lib.egress_policy_unref(out.value)
            raise
    return out.value, defaults


def _no_source_address(source_address):
    """Binding the local address is refused, as by the Node binding
    (localAddress): with source-based routing it picks the network a
    connection leaves through, which the check never saw."""
    if source_address is not None:
        raise ValueError("source_address is not supported: the local address can choose the "
                         "route a connection takes, outside what the egress check vetted")


def _check_status(st, what):
    if st != _OK:
        err = "%s: %s" % (what, _text(lib.egress_strerror(st)))
        if st == _EINVAL:
            raise ValueError(err)
        raise EgressError(err, _status_name(st), _STATUS_CODES.get(st))


# --------------------------------------------------------------------------
# The checker
# --------------------------------------------------------------------------

class Checker:
    """What a worker holds: a policy and how it is enforced.  Thread-safe:
    any number of threads may call check(), check_url(), create_connection(),
    set_policy() and reload_file() at once.

    Args:
        policy: a dict (a policy document), a list of allowlist entries, or
            JSON text; or None with ``policy_file``.
        policy_file: path of a JSON policy file.
        mode: "enforce" (default) or "monitor".
        dns_servers: list of "IP[:PORT]" / "[v6]:PORT" strings; None means
            the system servers.
        hosts_file: resolve from this hosts file (process-wide, see the C API).
        timeout_ms: DNS budget of one check.
        cache: dict with any of max_entries, min_ttl, max_ttl, negative_ttl.
        filter: drop forbidden addresses of a mixed answer instead of denying.
        pref64: NAT64 prefixes whose embedded IPv4 addresses are vetted too.
        audit_required: deny a check whose event cannot be delivered.
        event_source: the CloudEvents "source".
        events_path: append events as JSON Lines to this file.
        on_event: callable(event: dict) called once per check, on the
            checking thread.  An exception it raises is a delivery failure
            (counted; denies the check when audit_required).  Give either
            events_path or on_event.

    When the policy is a MachineRegistrationV1 record, its top-level
    ``machineId`` and ``workspaceId`` are the request context of every check
    that gives none (``default_context``).
    """

    def __init__(self, policy=None, *, policy_file=None, mode="enforce", dns_servers=None,
                 hosts_file=None, timeout_ms=None, cache=None, filter=False, pref64=(),
                 audit_required=False, event_source=None, events_path=None, on_event=None):
        self._handle = None
        self._lock = threading.Lock()
        self._idle = threading.Condition(self._lock)
        self._inflight = 0
        self._local = threading.local()
        self._callback = None
        self._on_event = None
        self._defaults = {}
        # Names this checker in the snapshots of its decisions (a strong
        # reference to a token, not to the checker).
        self._token = object()
        # Policy generation: bumped by every policy swap.  A held decision
        # is good only under the generation it was made in; its digest alone
        # would take it back after a swap A -> B -> A (as the Node binding).
        self._generation = 0
        if mode not in _MODES:
            raise ValueError("mode must be 'enforce' or 'monitor', not %r" % (mode,))
        self._mode = mode
        if events_path is not None and on_event is not None:
            raise ValueError("a checker has one event sink: give events_path or on_event")
        if on_event is not None and not callable(on_event):
            raise TypeError("on_event must be callable")

        policy_h, self._defaults = _compile_policy(policy, policy_file)
        opts = ctypes.c_void_p()
        try:
            _check_status(lib.egress_options_new(ctypes.byref(opts)), "options")
            o = opts.value
            _check_status(lib.egress_options_set_mode(o, _MODES[mode]), "mode")
            _check_status(lib.egress_options_set_mixed(o, 1 if filter else 0), "filter")
            if dns_servers is not None:
                if isinstance(dns_servers, (str, bytes)):
                    dns_servers = [dns_servers]
                servers = [_c_text(s, "dns_servers entry") for s in dns_servers]
                if any(b"," in s for s in servers):
                    raise ValueError("dns_servers entries must not hold ','")
                _check_status(lib.egress_options_set_dns_servers(o, b",".join(servers)),
                              "dns_servers")
            if hosts_file is not None:
                _check_status(lib.egress_options_set_hosts_file(
                    o, _c_path(hosts_file, "hosts_file")), "hosts_file")
            if timeout_ms is not None:
                _check_status(lib.egress_options_set_timeout_ms(
                    o, _u32(timeout_ms, "timeout_ms", 1, 600000)), "timeout_ms")
            if cache is not None:
                unknown = set(cache) - set(_CACHE_DEFAULTS)
                if unknown:
                    raise ValueError("unknown cache keys: %s" % ", ".join(sorted(unknown)))
                c = dict(_CACHE_DEFAULTS, **cache)
                _check_status(lib.egress_options_set_cache(
                    o, *(_u32(c[k], "cache " + k) for k in
                         ("max_entries", "min_ttl", "max_ttl", "negative_ttl"))), "cache")
            if isinstance(pref64, str):
                pref64 = [pref64]
            for prefix in pref64:
                _check_status(lib.egress_options_add_pref64(o, _c_text(prefix, "pref64")),
                              "pref64 %r" % (prefix,))
            if event_source is not None:
                _check_status(lib.egress_options_set_event_source(
                    o, _c_text(event_source, "event_source")), "event_source")
            if events_path is not None:
                _check_status(lib.egress_options_set_event_path(
                    o, _c_path(events_path, "events_path")), "events_path")
            if on_event is not None:
                self._on_event = on_event
                # Kept on the instance: the C side holds only a raw pointer
                # to this thunk for the checker's whole lifetime.
                self._callback = EVENT_CB(self._deliver)
                _check_status(lib.egress_options_set_event_callback(o, self._callback, None),
                              "on_event")
            _check_status(lib.egress_options_set_audit_required(o, bool(audit_required)),
                          "audit_required")
            errbuf = ctypes.create_string_buffer(ERRBUF_SIZE)
            out = ctypes.c_void_p()
            st = lib.egress_checker_new(policy_h, o, ctypes.byref(out), errbuf, ERRBUF_SIZE)
            if st != _OK or not out.value:
                raise EgressError(_error_text(st, errbuf), _status_name(st),
                                  _STATUS_CODES.get(st))
            self._handle = out.value
        finally:
            lib.egress_options_free(opts)
            lib.egress_policy_unref(policy_h)

    # -- event delivery ----------------------------------------------------

    def _deliver(self, json_ptr, length, decision, user_data):
        """The C callback.  Nothing may escape it (ctypes would print the
        exception and return 0, i.e. "delivered"): any failure is reported
        to the library as a delivery failure instead."""
        try:
            event = json.loads(ctypes.string_at(json_ptr, length).decode("utf-8"))
            self._on_event(event)
            return 0
        except Exception:
            return 1
        except BaseException as e:  # KeyboardInterrupt, SystemExit
            # Re-raised by the check once the C call has returned.
            self._local.pending = e
            return 1

    # -- handle lifetime ---------------------------------------------------

    def _enter(self):
        with self._lock:
            if self._handle is None:
                raise EgressError("the checker is closed", code="EGRESS_CLOSED")
            self._inflight += 1
            handle = self._handle
        self._local.depth = getattr(self._local, "depth", 0) + 1
        return handle

    def _leave(self):
        self._local.depth -= 1
        with self._lock:
            self._inflight -= 1
            if self._inflight == 0:
                self._idle.notify_all()
        pending = getattr(self._local, "pending", None)
        if pending is not None and self._local.depth == 0:
            self._local.pending = None
            raise pending

    def close(self):
        """Free the checker once the checks in flight have finished.
        Idempotent; any later use raises EgressError."""
        if getattr(self._local, "depth", 0):
            raise EgressError("close() called from inside a check of this checker",
                              code="EGRESS_EINVAL")
        with self._lock:
            handle = self._handle
            if handle is None:
                return
            self._handle = None
            while self._inflight:
                self._idle.wait()
        lib.egress_checker_free(handle)

    @property
    def closed(self):
        return self._handle is None

    def __enter__(self):
        if self._handle is None:
            raise EgressError("the checker is closed", code="EGRESS_CLOSED")
        return self

    def __exit__(self, *exc):
        self.close()

    def __del__(self):
        try:
            if getattr(self, "_handle", None) is not None:
                self.close()
        except Exception:
            pass

    # -- checks ------------------------------------------------------------

    def _request(self, fields, refuse=None):
        """A C request for ``fields`` ({egress_field_t: str}) completed with
        the registration's context; None when there is nothing to set.
        ``refuse`` = (reason, message): the library denies the check with
        them (in monitor mode too) and records it like any other."""
        defaults = self._defaults
        if defaults:
            fields = {**defaults, **fields}
        if not fields and refuse is None:
            return None
        req = ctypes.c_void_p()
        _check_status(lib.egress_request_new(ctypes.byref(req)), "request")
        try:
            if refuse is not None:
                _check_status(lib.egress_request_refuse(
                    req.value, refuse[0], refuse[1].encode("utf-8", "backslashreplace")),
                    "refuse")
            for field, value in fields.items():
                name = _FIELD_NAMES[field]
                st = lib.egress_request_set(req.value, field, _c_text(value, name))
                if st != _OK:
                    if st == _EINVAL:
                        raise ValueError("%s: longer than %d bytes or holds control "
                                         "characters" % (name, _CONTEXT_MAX))
                    raise EgressError("%s: %s" % (name, _text(lib.egress_strerror(st))),
                                      _status_name(st), _STATUS_CODES.get(st))
        except BaseException:
            lib.egress_request_free(req.value)
            raise
        return req.value

    @property
    def default_context(self):
        """The context every check gets unless it gives its own: the
        ``machineId`` and ``workspaceId`` of a MachineRegistrationV1 policy
        document, by event key; empty for other documents."""
        return {_FIELD_NAMES[k]: v for k, v in sorted(self._defaults.items())}

    def check(self, host, port, ctx=None, **fields):
        """May this process connect to ``host`` on ``port``?

        ``host`` is a bare host name or IP literal (str, or bytes holding
        UTF-8).  The request context goes into the decision event: a
        mapping ``ctx`` and/or keyword arguments with the event's keys
        ``method``, ``workspaceId``, ``agentId``, ``machineId``, ``runId``,
        ``correlationId`` (snake_case ``run_id`` ... are accepted too).
        Emits exactly one event.  A host holding NUL is denied as
        invalid_host (the event shows each NUL as "%00"), never checked as
        the part before the NUL.
        """
        return self._check(host, port, _context(ctx, fields))

    def _check(self, host, port, fields, refuse=None):
        """check(); ``refuse`` (a message) denies it as invalid_host: for a
        host the caller found unusable, still decided and recorded."""
        host, raw, altered = _c_destination(host, b"%00", "host")
        port, cport, bad_port = _c_port(port)
        if refuse is not None:
            refuse = (_REASON_INVALID_HOST, refuse)
        refuse = refuse or bad_port

        def call(handle, req, out):
            lib.egress_check_ex(handle, raw, cport, req, out)

        return self._run(call, fields, host, port, None, altered, refuse)

    def check_url(self, url, ctx=None, **fields):
        """Check an http or https URL (host, port and path prefix rules);
        context as for check().  A URL holding NUL is denied, never checked
        as the part before it."""
        return self._check_url(url, _context(ctx, fields))

    def _check_url(self, url, fields):
        # A control character makes any URL invalid; "%00" would not, since
        # it is a valid percent-encoding in a path.
        url, raw, altered = _c_destination(url, b"\x01", "URL")

        def call(handle, req, out):
            lib.egress_check_url(handle, raw, req, out)

        return self._run(call, fields, None, None, url, altered)

    def _run(self, call, fields, destination, port, url, altered, refuse=None):
        # Read before the check: a swap during it then makes the decision
        # stale (the generation is bumped only once the library swapped).
        generation = self._generation
        req = None
        out = ctypes.c_void_p()
        handle = self._enter()
        try:
            req = self._request(fields, refuse)
            call(handle, req, ctypes.byref(out))
            if not out.value:
                decision = _internal_error_decision(destination, port, url, self._mode)
            else:
                decision = _read_decision(out.value, destination, port, url)
        finally:
            lib.egress_decision_free(out.value)
            lib.egress_request_free(req)
            self._leave()
        if altered is not None:
            # The library denies the altered text by itself (invalid_host in
            # every mode); forcing the deny here is a second lock on the
            # door, not the mechanism.  The message names the real problem.
            decision = dataclasses.replace(
                decision, verdict="deny",
                outcome=decision.outcome if decision.outcome != "allowed" else "denied",
                reason=decision.reason or "invalid_host", message=altered)
        _issue(decision, self._token, generation)
        return decision

    def _use(self, decision, fresh=False):
        """The snapshot to act on for ``decision``, which it spends: one
        allowed decision opens one connection or carries one request.

        Refused (ValueError): a decision not made by a check, altered since,
        made by another checker (its mode, sinks and policy are not this
        one's), already used, or made before the latest policy swap (another
        generation, even when the digest is the same again) or under another
        digest (``fresh``: made just now by the helper itself, so current).
        A denied one is returned as is, for the caller to raise on."""
        entry = _issued(decision)
        snap = entry.snapshot
        if snap.issuer is not self._token:
            raise ValueError("this Decision was made by another Checker")
        if snap.verdict != "allow":
            return snap
        if not fresh and (entry.generation != self._generation
                          or snap.policy_digest != self.policy_digest):
            raise ValueError("this Decision was made under a policy no longer in force "
                             "(set_policy / reload_file since): check again")
        with _SPEND_LOCK:
            if entry.spent:
                raise ValueError("this Decision was used already: one decision is for one "
                                 "connection or request; check again")
            entry.spent = True
        return snap

    # -- connecting ----------------------------------------------------------

    def create_connection(self, host, port, timeout=socket._GLOBAL_DEFAULT_TIMEOUT,
                          source_address=None, *, ctx=None, **fields):
        """Check, then connect a TCP socket to the vetted addresses only.

        Like socket.create_connection, each address is tried in order until
        one connects; unlike it, no name is looked up again: the addresses
        are those the check resolved and vetted, so DNS rebinding between
        the check and the connect is impossible.  Context as for check().
        Raises EgressDeniedError (``.decision``) on a deny,
        EgressUnavailableError when enforcement was unavailable, OSError
        when no address accepted the connection.
        """
        _no_source_address(source_address)
        decision = self._check(host, port, _context(ctx, fields))
        return self._connect(decision, self._use(decision, fresh=True), timeout)[0]

    def connect(self, decision, timeout=socket._GLOBAL_DEFAULT_TIMEOUT, source_address=None):
        """Connect to the addresses ``decision`` vetted, in order, without
        checking again: check-then-connect is one decision and one event.

        ``decision`` must come from a check of this checker, under the
        policy in force with no set_policy / changing reload_file since, and
        not have been used yet; a Decision built, copied or altered by hand,
        or one that fails those conditions, is refused with ValueError.  Raises as create_connection does.
        """
        _no_source_address(source_address)
        return self._connect(decision, self._use(decision), timeout)[0]

    def _connect(self, decision, snap, timeout=socket._GLOBAL_DEFAULT_TIMEOUT):
        """Connect to what ``snap`` (the snapshot of ``decision``) vetted;
        returns (socket, (family, sockaddr) it is connected to)."""
        if snap.verdict != "allow":
            raise _denied(decision)
        if not snap.targets:
            raise EgressUnavailableError(
                decision, "egress: no vetted address to connect to for %r (%s)"
                % (snap.destination, decision.reason or snap.outcome))
        error = None
        for family, sockaddr in snap.targets:
            sock = None
            try:
                sock = socket.socket(family, socket.SOCK_STREAM)
                if timeout is not socket._GLOBAL_DEFAULT_TIMEOUT:
                    sock.settimeout(timeout)
                # A numeric sockaddr: CPython parses it with inet_pton, so
                # this connect performs no lookup.
                sock.connect(sockaddr)
                return sock, (family, sockaddr)
            except OSError as e:
                error = e
                if sock is not None:
                    sock.close()
        raise error

    # -- HTTP ----------------------------------------------------------------

    def http_connection(self, host, port=None, **kwargs):
        """An EgressHTTPConnection to ``host`` checked by this checker."""
        return EgressHTTPConnection(host, port, checker=self, **kwargs)

    def https_connection(self, host, port=None, **kwargs):
        """An EgressHTTPSConnection to ``host`` checked by this checker."""
        return EgressHTTPSConnection(host, port, checker=self, **kwargs)

    def urllib_opener(self, *handlers, **kwargs):
        """A urllib opener whose http and https requests are each checked by
        this checker (see build_opener)."""
        return build_opener(self, *handlers, **kwargs)

    # -- policy --------------------------------------------------------------

    def set_policy(self, policy=None, *, policy_file=None):
        """Replace the policy atomically (checks in flight finish on the old
        one), and the default context with the new document's.  Raises
        EgressPolicyError and keeps the old policy on failure."""
        policy_h, defaults = _compile_policy(policy, policy_file)
        try:
            handle = self._enter()
            try:
                _check_status(lib.egress_checker_set_policy(handle, policy_h), "set_policy")
                self._defaults = defaults
                self._bump_generation()
            finally:
                self._leave()
        finally:
            lib.egress_policy_unref(policy_h)

    def reload_file(self, path):
        """Reload the policy from ``path``; returns whether it changed (its
        rules, or the registration's machineId/workspaceId).  On failure
        raises EgressPolicyError naming the entry; the old policy stays."""
        cpath = _c_path(path, "path")
        errbuf = ctypes.create_string_buffer(ERRBUF_SIZE)
        changed = ctypes.c_bool(False)
        swapped = False

        def reload():
            nonlocal swapped
            handle = self._enter()
            try:
                st = lib.egress_checker_reload_file(handle, cpath, ctypes.byref(changed),
                                                    errbuf, ERRBUF_SIZE)
            finally:
                self._leave()
            if st != _OK:
                raise _library_error(_error_text(st, errbuf), st)
            if changed.value:  # the library swapped in another policy
                self._bump_generation()
            swapped = swapped or bool(changed.value)

        _, defaults = _from_stable_file(path, reload)
        swapped = swapped or defaults != self._defaults
        self._defaults = defaults
        return swapped

    def _bump_generation(self):
        with self._lock:
            self._generation += 1

    @property
    def policy_digest(self):
        """SHA-256 (hex) of the policy in force."""
        handle = self._enter()
        try:
            p = lib.egress_checker_policy(handle)
            try:
                return _text(lib.egress_policy_digest(p))
            finally:
                lib.egress_policy_unref(p)
        finally:
            self._leave()

    @property
    def mode(self):
        return self._mode

    # -- counters ------------------------------------------------------------

    def stats(self):
        """The counters as a dict: checks, dns_queries, dns_failures,
        cache_hits, cache_misses, events_emitted, events_failed,
        policy_swaps, policy_reload_failures, and checks_by
        {outcome: {reason: count}} (reason "none" for allowed checks)."""
        handle = self._enter()
        try:
            result = {name: int(lib.egress_checker_counter(handle, i))
                      for i, name in enumerate(_COUNTERS)}
            by = {}
            for o in range(3):
                oname = _text(lib.egress_outcome_name(o))
                for r in range(lib.egress_reason_count()):
                    n = int(lib.egress_checker_checks_by(handle, o, r))
                    if n:
                        by.setdefault(oname, {})[_text(lib.egress_reason_name(r))] = n
            result["checks_by"] = by
            return result
        finally:
            self._leave()

    def metrics(self):
        """All counters in Prometheus text exposition format."""
        handle = self._enter()
        try:
            ptr = lib.egress_checker_metrics(handle)
            if not ptr:
                raise MemoryError("egress_checker_metrics")
            try:
                return ctypes.string_at(ptr).decode("utf-8")
            finally:
                lib.egress_free(ptr)
        finally:
            self._leave()


# --------------------------------------------------------------------------
# Module-level facts
# --------------------------------------------------------------------------

def version():
    """The run-time libegress version string."""
    return _text(lib.egress_version())


def special_ranges_version():
    """Version of the special-purpose address table compiled into the library."""
    return _text(lib.egress_special_ranges_version())


def reason_names():
    """Every reason token, in code order ("none" first)."""
    return tuple(_text(lib.egress_reason_name(i)) for i in range(lib.egress_reason_count()))


# The HTTP helpers use the names above.
from ._http import (  # noqa: E402
    EgressHTTPConnection,
    EgressHTTPSConnection,
    EgressHandler,
    EgressRedirectHandler,
    Request,
    build_opener,
)
