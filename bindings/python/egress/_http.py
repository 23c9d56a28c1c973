"""HTTP through the checker: http.client connections and a urllib handler
that make one check per request.

Each request is checked as its URL (scheme, host, port, path) with its
method and context before any byte of it is sent: one decision, one event.
A kept-alive connection carries the next request only when that request's
own decision vetted the address the connection is open to; otherwise the
connection is closed and the request connects to what its decision vetted.
A decision the caller already holds can stand in for the check, so that
check-then-call is one event.
"""

import functools
import http.client
import socket
import threading
import urllib.error
import urllib.parse
import urllib.request

from . import (
    _F_METHOD,
    Decision,
    EgressError,
    _context,
    _denied,
    _issued,
    _no_source_address,
)

try:
    import ssl
except ImportError:  # a Python built without OpenSSL
    ssl = None

_DEFAULT_PORTS = {"http": 80, "https": 443}

# Methods a pooled connection may resend after the server closed it while
# idle (RFC 9110, 9.2.2).
_IDEMPOTENT = frozenset(("GET", "HEAD", "OPTIONS", "PUT", "DELETE", "TRACE"))

# What a send on a connection the server already closed raises.
_STALE = (ConnectionResetError, BrokenPipeError, ConnectionAbortedError)


def _norm_host(host):
    if isinstance(host, (bytes, bytearray)):
        host = bytes(host).decode("utf-8", "replace")
    host = (host or "").lower()
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    if host.endswith("."):
        host = host[:-1]
    return host


# What never appears in a bare host name, so cannot be let into the URL a
# request is checked as ("allowed.test/public" would be checked as the path
# /public/... of allowed.test).  ":" only in an IPv6 literal.
_NOT_IN_HOST = frozenset("/?#@%\\[]:")


def _host_problem(host):
    """None when ``host`` (a connection's) is a bare host name or IP
    literal that can go into a URL as its host; else why not."""
    if type(host) is not str or not host:
        return "invalid host %r: not a host name" % (host,)
    if ":" in host:
        try:
            socket.inet_pton(socket.AF_INET6, host)
            return None
        except (OSError, ValueError):
            return "invalid host %r: ':' outside an IPv6 literal" % (host,)
    for ch in host:
        if ch in _NOT_IN_HOST or ch.isspace() or not ch.isprintable():
            return "invalid host %r: %r is not part of a host name" % (host, ch)
    if not host.isascii():
        # The library checks a U-label as its IDNA 2008 / UTS #46 A-label,
        # while http.client (Host) and ssl (SNI) encode it with Python's
        # IDNA 2003 codec: "fa\u00df.test" is checked as xn--fa-hia.test and
        # sent as fass.test, another name.  (This also covers look-alikes
        # such as U+FF0F, which NFKC maps to "/".)
        return ("invalid host %r: a non-ASCII host name would be sent (Host, SNI) in Python's "
                "IDNA 2003 form, which can name another host than the A-label checked; pass "
                "the A-label (xn--...), as Decision.host of a check shows it" % (host,))
    return None


def _target_problem(target):
    """None when a request target goes on the wire exactly as the URL it
    is checked as holds it; else why not."""
    if type(target) is not str:
        return "request target %r: not a str" % (target,)
    for ch in target:
        # "#": the check reads a fragment and drops it, while http.client
        # sends it ("/public#/../secret" would be checked as /public).
        # Non-ASCII, whitespace and control characters: http.client refuses
        # or encodes them apart from the check.  A backslash: servers read it as "/".
        if ch == "#" or ch == "\\" or not "!" <= ch <= "~":
            return ("request target %r: %r is not sent as checked (percent-encode it; a "
                    "fragment is never sent)" % (target, ch))
    return None


def _names_host(value, host, port, scheme):
    """Whether a Host header value names ``host``:``port`` (the port may be
    left out when it is the scheme's default), case aside."""
    if isinstance(value, (bytes, bytearray)):
        value = bytes(value).decode("latin-1")
    elif not isinstance(value, str):
        return False
    value = str.__str__(value)
    # Before lower(): "\u212a".lower() is "k".  Hosts are ASCII (see
    # _host_problem); an IDNA 2003 alias is not the A-label the library checked.
    if not value.isascii():
        return False
    value = value.strip(" \t").lower()
    name, sep, digits = value.rpartition(":")
    if not (sep and digits.isascii() and digits.isdigit()):
        name, digits = value, str(_DEFAULT_PORTS[scheme])
    if int(digits) != port:
        return False
    return name == ("[%s]" % host.lower() if ":" in host else host.lower())


def _authority(host, port, scheme):
    text = "[%s]" % host if ":" in host else host
    if port != _DEFAULT_PORTS[scheme]:
        text += ":%d" % port
    return text


def _origin(url):
    """(scheme, host, port) of an absolute URL; None when it has none."""
    parts = urllib.parse.urlsplit(url)
    scheme = parts.scheme.lower()
    if scheme not in _DEFAULT_PORTS:
        return None
    try:
        port = parts.port or _DEFAULT_PORTS[scheme]
    except ValueError:
        return None
    return scheme, _norm_host(parts.hostname), port


def _target_key(url):
    """What makes two URLs one request target: origin, path and query."""
    parts = urllib.parse.urlsplit(url)
    return _origin(url), parts.path or "/", parts.query


def _rule_limits_paths(rule):
    """Whether an allow rule ((index, list, text)) is a URL entry with a
    path prefix, which only a check of the URL applies."""
    if rule is None or rule[1] != "allow":
        return False
    text = rule[2]
    for scheme in ("https://", "http://"):
        if text[:len(scheme)].lower() == scheme:
            rest = text[len(scheme):]
            slash = rest.find("/")
            return slash >= 0 and rest[slash:] != "/"
    return False


def _socket_timeout(timeout):
    if timeout is socket._GLOBAL_DEFAULT_TIMEOUT:
        return socket.getdefaulttimeout()
    return timeout


class _Response(http.client.HTTPResponse):
    """A response that tells its pool, once, whether it was read to its end
    (then its connection can carry another request) or not."""

    _egress_release = None
    _egress_eof = False

    def _read_and_discard_trailer(self):
        super()._read_and_discard_trailer()
        # Reached only after the last chunk: the body is complete.
        self._egress_eof = True

    def _close_conn(self):
        whole = self._egress_eof if self.chunked else self.length == 0
        try:
            super()._close_conn()
        finally:
            release, self._egress_release = self._egress_release, None
            if release is not None:
                release(whole)


def _fixed(name):
    """An attribute set once (by http.client's __init__), then read-only:
    requests are checked for this host and port, and TLS names this host
    (SNI, certificate), so neither may change under a connection."""
    attr = "_egress_fixed_" + name

    def get(self):
        return getattr(self, attr)

    def set(self, value):
        if hasattr(self, attr):
            raise AttributeError("the %s of an egress connection cannot change: its "
                                 "requests are checked for it" % name)
        if isinstance(value, str):
            value = str.__str__(value)  # one exact value, checked and connected alike
        setattr(self, attr, value)

    return property(get, set)


class _Checked:
    """What EgressHTTPConnection and EgressHTTPSConnection add to http.client:
    a check in putrequest(), and connect() to the addresses it vetted."""

    _egress_scheme = "http"
    response_class = _Response
    _egress_sending = False  # whether send() may write: see send()
    host = _fixed("host")
    port = _fixed("port")

    def _egress_setup(self, checker, ctx, decision):
        if checker is None or not hasattr(checker, "_check_url"):
            raise TypeError("checker must be an egress.Checker")
        if decision is not None and not isinstance(decision, Decision):
            raise TypeError("decision must be an egress.Decision")
        _no_source_address(self.source_address)
        self.checker = checker
        self._egress_ctx = _context(ctx)
        self._egress_held = decision
        #: The decision of the latest request (or of connect()).
        self.decision = None
        self._egress_snap = None  # the snapshot of self.decision, acted on
        self._egress_next = None
        self._egress_pending = None
        self._egress_connect_with = None
        self._egress_peer = None
        self._egress_reused = False

    # -- requests ------------------------------------------------------------

    def request(self, method, url, body=None, headers={}, *, encode_chunked=False, ctx=None,
                decision=None):
        """As http.client's, checked first.  ``ctx`` adds request context to
        the connection's; ``decision`` is a decision already made for this
        request (its URL or host and port), used instead of a new check."""
        self._egress_request(method, url, body, headers, encode_chunked=encode_chunked,
                             fields={**self._egress_ctx, **_context(ctx)}, decision=decision)

    def _egress_request(self, method, url, body, headers, *, encode_chunked, fields, decision,
                        resend=False):
        """``resend``: the previous request again, under its decision (a
        kept-alive connection the server had closed)."""
        if decision is not None and not isinstance(decision, Decision):
            raise TypeError("decision must be an egress.Decision")
        # Before any check: a Host header naming another host than the
        # connection's would be domain fronting.
        for name, value in headers.items():
            if isinstance(name, str) and name.strip().lower() == "host":
                self._egress_host_header(value)
        self._egress_next = (fields, decision, resend)
        try:
            super().request(method, url, body, headers, encode_chunked=encode_chunked)
        finally:
            self._egress_next = None

    def putrequest(self, method, url, skip_host=False, skip_accept_encoding=False):
        pending, self._egress_next = self._egress_next, None
        fields, held, resend = pending if pending is not None else (self._egress_ctx, None, False)
        fields = dict(fields)
        fields[_F_METHOD] = method  # the method on the wire, whatever ctx said
        bad = _host_problem(self.host)
        if bad is not None:
            # Checked as host:port, which the library denies invalid_host:
            # one decision and one event, nothing composed from the host.
            self.close()
            self.decision = self.checker._check(self.host, self.port, fields, refuse=bad)
            raise _denied(self.decision)
        target = self._egress_url(url)
        # A decision given to the constructor is the first request's, even
        # when that request brings its own.
        first = self._egress_held is not None
        if held is None and not resend:
            held = self._egress_held
        snap = None
        if resend:
            held, snap = self.decision, self._egress_snap
        elif held is not None:
            snap = self._egress_fit(held, method, target)
        # http.client validates the method, the path and its own state here
        # and only buffers the request line: nothing is sent yet.
        super().putrequest(method, url, skip_host, skip_accept_encoding)
        if first:
            self._egress_held = None
        try:
            if held is not None:
                decision = held
            else:
                decision = self.checker._check_url(target, fields)
                snap = self.checker._use(decision, fresh=True)
            self.decision, self._egress_snap = decision, snap
            if snap.verdict != "allow":
                raise _denied(decision)
            self._egress_reused = self.sock is not None and self._egress_may_reuse(snap)
            if self.sock is not None and not self._egress_reused:
                self._egress_drop()
            self._egress_pending = snap
            self._egress_sending = True
        except BaseException:
            # Nothing was sent: forget the buffered request line, and the
            # kept-alive socket with it.
            self._buffer.clear()
            self.close()
            raise

    def putheader(self, header, *values):
        name = header.decode("latin-1") if isinstance(header, (bytes, bytearray)) else header
        if isinstance(name, str) and name.strip().lower() == "host":
            try:
                if len(values) != 1:
                    raise ValueError("one Host header value is sent, not %d" % len(values))
                self._egress_host_header(values[0])
            except ValueError:
                self._buffer.clear()
                self.close()
                raise
        super().putheader(header, *values)

    def _egress_host_header(self, value):
        if _host_problem(self.host) is not None:
            return  # putrequest() refuses the request, invalid_host, saying why
        if not _names_host(value, self.host, self.port, self._egress_scheme):
            raise ValueError(
                "Host header %r names another host than the one checked and connected to "
                "(%s): refused (domain fronting)"
                % (value, _authority(self.host, self.port, self._egress_scheme)))

    def endheaders(self, message_body=None, *, encode_chunked=False):
        try:
            super().endheaders(message_body, encode_chunked=encode_chunked)
        finally:
            self._egress_pending = None

    def send(self, data):
        """http.client's, for the request a checked putrequest() started
        (its headers, and a body the caller streams after endheaders())
        until getresponse(); refused anywhere else: the bytes would leave
        on a connection vetted for another request, or for host:port only
        while the policy limits paths."""
        if not self._egress_sending:
            raise EgressError("send() outside a checked request is refused: its bytes were "
                              "never checked; use request() or putrequest() first")
        super().send(data)

    def getresponse(self):
        self._egress_sending = False  # the request is over: send() is refused from here
        return super().getresponse()

    def set_tunnel(self, host, port=None, headers=None):
        raise EgressError(
            "a tunnel through a proxy is not checked here: the check would name %r while "
            "the socket goes to the proxy %r; check the proxy as the destination instead"
            % (host, self.host))

    # -- connecting ----------------------------------------------------------

    def connect(self):
        snap = self._egress_pending
        if snap is None:
            # Called by the caller outside a request: a connection attempt of
            # its own, unless a held decision covers it.
            decision = self._egress_held
            if decision is not None:
                snap = self._egress_fit(decision)
                self._egress_held = None
            else:
                decision = self.checker._check(self.host, self.port, self._egress_ctx,
                                               refuse=_host_problem(self.host))
                snap = self.checker._use(decision, fresh=True)
            self.decision, self._egress_snap = decision, snap
            if snap.verdict != "allow":
                raise _denied(decision)
        self._egress_connect_with = snap
        try:
            super().connect()
        except BaseException:
            # HTTPSConnection leaves the plain socket in place when the TLS
            # handshake fails; it must never carry a request.
            if self.sock is not None:
                self._egress_drop()
            raise
        finally:
            self._egress_connect_with = None

    # http.client's connect() opens its socket through self._create_connection,
    # which its __init__ makes a plain instance attribute: replaced, it would
    # open the socket anywhere once the check is done.  This property (a data
    # descriptor, so the instance's __dict__ is never read) always gives the
    # class's own function, never an instance override of either name.
    @property
    def _create_connection(self):
        return _Checked._egress_create_connection.__get__(self)

    @_create_connection.setter
    def _create_connection(self, value):
        if "_egress_ctx" in self.__dict__:
            raise AttributeError("an egress connection opens its sockets to the addresses its "
                                 "check vetted; _create_connection cannot be replaced")
        # http.client's __init__ assigning socket.create_connection: ignored.

    def _egress_create_connection(self, address, timeout=socket._GLOBAL_DEFAULT_TIMEOUT,
                                  source_address=None):
        snap = self._egress_connect_with
        if snap is None:
            raise EgressError("this connection opens sockets for checked requests only")
        _no_source_address(source_address)
        sock, self._egress_peer = self.checker._connect(self.decision, snap, timeout)
        return sock

    def _egress_may_reuse(self, snap):
        peer = self._egress_peer
        if peer is None:
            return False
        return any(family == peer[0] and sockaddr[:2] == peer[1][:2]
                   for family, sockaddr in snap.targets)

    def _egress_drop(self):
        sock, self.sock = self.sock, None
        self._egress_peer = None
        sock.close()

    def close(self):
        super().close()
        self._egress_peer = None
        self._egress_sending = False

    # -- what a request is -------------------------------------------------

    def _egress_url(self, url):
        """The URL a request line's target stands for on this connection:
        the target itself, byte for byte, after the origin."""
        target = url or "/"
        bad = _target_problem(target)
        if bad is not None:
            raise ValueError(bad)
        if target.startswith("/"):
            path = target
        elif target == "*":
            path = ""
        else:
            here = (self._egress_scheme, _norm_host(self.host), self.port)
            if _origin(target) != here:
                raise ValueError("request target %r is not a path on this connection's origin "
                                 "%s://%s" % (target, self._egress_scheme,
                                              _authority(self.host, self.port,
                                                         self._egress_scheme)))
            return target
        return "%s://%s%s" % (self._egress_scheme,
                              _authority(self.host, self.port, self._egress_scheme), path)

    def _egress_fit(self, decision, method=None, url=None):
        """The snapshot of a held decision, spent, when it was made for this
        connection and request; else refused (ValueError): it would let
        them through unchecked.  Judged on the snapshot of what the library
        decided, not on the Decision's attributes."""
        snap = _issued(decision).snapshot
        names = {_norm_host(snap.host), _norm_host(snap.destination)}
        if snap.port != self.port or _norm_host(self.host) not in names:
            raise ValueError("the decision is for %s:%s, not this connection's %s:%s"
                             % (snap.host or snap.destination, snap.port, self.host, self.port))
        if url is not None:
            if snap.url is not None:
                if _target_key(_norm_url(snap.url)) != _target_key(url):
                    raise ValueError("the decision is for %r, not %r" % (snap.url, url))
            elif _rule_limits_paths(snap.rule):
                raise ValueError("the decision, from check(host, port), allowed the connection "
                                 "by %r, which limits paths: hold a check_url() decision for %r"
                                 % (snap.rule[2], url))
            if snap.method is not None and method is not None and snap.method != method:
                raise ValueError("the decision is for a %s request, not %s"
                                 % (snap.method, method))
        # Last: only a decision that fits is spent (another checker's, a
        # stale or a used one is refused here).
        return self.checker._use(decision)


def _norm_url(url):
    if isinstance(url, (bytes, bytearray)):
        return bytes(url).decode("utf-8", "replace")
    return url


class EgressHTTPConnection(_Checked, http.client.HTTPConnection):
    """http.client.HTTPConnection that checks every request.

    ``request()`` (or ``putrequest()``) checks the request's URL with its
    method and context: one decision and one event per request, made before
    anything is sent; a denial raises EgressDeniedError (or
    EgressUnavailableError) and closes the connection.  A kept-alive
    connection is reused only when the new decision vetted the address it
    is open to, else a new one is made to the addresses that decision
    vetted, tried in order, never looked up again.

    ``ctx`` is request context for every request (the event's keys);
    ``request(..., ctx=...)`` adds to it per request.  ``decision`` is a
    decision already held for the first request (check-then-call: one
    event); ``request(..., decision=...)`` does the same per request.
    ``decision`` is the decision of the latest request.
    """

    def __init__(self, host, port=None, timeout=socket._GLOBAL_DEFAULT_TIMEOUT,
                 source_address=None, blocksize=8192, *, checker, ctx=None, decision=None):
        super().__init__(host, port, timeout, source_address, blocksize)
        self._egress_setup(checker, ctx, decision)


if ssl is not None:
    class EgressHTTPSConnection(_Checked, http.client.HTTPSConnection):
        """EgressHTTPConnection over TLS.  ``context`` is the ssl.SSLContext
        (default: http.client's, which verifies the certificate against the
        host name; TCP goes to the vetted address, TLS names the host)."""

        _egress_scheme = "https"

        def __init__(self, host, port=None, *, checker, ctx=None, decision=None,
                     timeout=socket._GLOBAL_DEFAULT_TIMEOUT, source_address=None, context=None,
                     blocksize=8192):
            super().__init__(host, port, timeout=timeout, source_address=source_address,
                             context=context, blocksize=blocksize)
            self._egress_setup(checker, ctx, decision)
else:
    class EgressHTTPSConnection:
        def __init__(self, *args, **kwargs):
            raise EgressError("this Python has no ssl module")


# ---------------------------------------------------------------------------
# urllib
# ---------------------------------------------------------------------------

class Request(urllib.request.Request):
    """urllib.request.Request with request context (``ctx``, the event's
    keys) and a held ``decision`` for this request.  A plain Request works
    too, with attributes ``egress_ctx`` and ``egress_decision``."""

    def __init__(self, url, data=None, headers={}, origin_req_host=None, unverifiable=False,
                 method=None, *, ctx=None, decision=None):
        super().__init__(url, data, headers, origin_req_host, unverifiable, method)
        self.egress_ctx = ctx
        self.egress_decision = decision


class _Pool:
    """Idle kept-alive connections by origin, a few per origin."""

    def __init__(self, per_origin):
        self._lock = threading.Lock()
        self._idle = {}
        self._per_origin = per_origin
        self._closed = False

    def take(self, key):
        with self._lock:
            idle = self._idle.get(key)
            return idle.pop() if idle else None

    def give_back(self, key, conn, whole):
        if whole and conn.sock is not None:
            with self._lock:
                idle = self._idle.setdefault(key, [])
                if not self._closed and len(idle) < self._per_origin:
                    idle.append(conn)
                    return
        conn.close()

    def close(self):
        with self._lock:
            self._closed = True
            conns = [c for idle in self._idle.values() for c in idle]
            self._idle.clear()
        for conn in conns:
            conn.close()


_HANDLER_BASES = ((urllib.request.HTTPSHandler, urllib.request.HTTPHandler)
                  if hasattr(urllib.request, "HTTPSHandler") else (urllib.request.HTTPHandler,))


class EgressHandler(*_HANDLER_BASES):
    """urllib handler for http and https: every request (each redirect hop
    too) is checked as its URL with its method and context, over a pool of
    kept-alive EgressHTTP(S)Connections (``pool_size`` idle ones per
    origin).

    ``ctx`` is request context for every request; a request adds its own
    with ``egress.Request(url, ctx=...)`` (or an ``egress_ctx`` attribute)
    and may hold its decision (``decision=`` / ``egress_decision``).
    ``context`` is the ssl.SSLContext for https.  A denial raises
    EgressDeniedError (not URLError).  Requests through a proxy are refused:
    use build_opener(), which installs no ProxyHandler.
    """

    def __init__(self, checker, *, ctx=None, context=None, debuglevel=None, pool_size=4):
        if debuglevel is None:
            debuglevel = http.client.HTTPConnection.debuglevel
        urllib.request.AbstractHTTPHandler.__init__(self, debuglevel)
        if not hasattr(checker, "_check_url"):
            raise TypeError("checker must be an egress.Checker")
        self.checker = checker
        self._ctx = _context(ctx)
        self._context = context
        self._pool = _Pool(pool_size)

    def http_open(self, req):
        return self._open(req, EgressHTTPConnection, {})

    def https_open(self, req):
        return self._open(req, EgressHTTPSConnection, {"context": self._context})

    http_request = urllib.request.AbstractHTTPHandler.do_request_
    https_request = urllib.request.AbstractHTTPHandler.do_request_

    def close(self):
        """Close the idle connections (OpenerDirector.close() calls this)."""
        self._pool.close()

    def _open(self, req, cls, extra):
        if req._tunnel_host or req.has_proxy():
            raise EgressError(
                "%s goes through a proxy: the check would name the origin while the socket "
                "goes to the proxy; open it with egress.build_opener(), which uses none"
                % req.full_url)
        if not req.host:
            raise urllib.error.URLError("no host given")
        fields = {**self._ctx, **_context(getattr(req, "egress_ctx", None))}
        held = getattr(req, "egress_decision", None)
        key = (cls, req.host.lower())
        conn = self._pool.take(key)
        if conn is None:
            conn = cls(req.host, timeout=req.timeout, checker=self.checker, **extra)
        else:
            conn.timeout = req.timeout
            if conn.sock is not None:
                conn.sock.settimeout(_socket_timeout(req.timeout))
        conn.set_debuglevel(self._debuglevel)

        headers = dict(req.unredirected_hdrs)
        headers.update((k, v) for k, v in req.headers.items() if k not in headers)
        headers = {name.title(): value for name, value in headers.items()}
        method = req.get_method()
        chunked = req.has_header("Transfer-encoding")

        def send(decision, resend=False):
            try:
                conn._egress_request(method, req.selector, req.data, headers,
                                     encode_chunked=chunked, fields=fields, decision=decision,
                                     resend=resend)
            except EgressError:
                raise
            except OSError as err:
                if isinstance(err, _STALE):
                    raise
                raise urllib.error.URLError(err)
            return conn.getresponse()

        try:
            try:
                r = send(held)
            except _STALE:
                # The server closed the idle connection this request went
                # on.  Sent again on a new one, under the decision already
                # made for it: still one check, one event.
                if not (conn._egress_reused and method in _IDEMPOTENT
                        and isinstance(req.data, (type(None), bytes, bytearray))):
                    raise
                conn.close()
                r = send(None, resend=True)
        except BaseException:
            conn.close()
            raise

        r.url = req.get_full_url()
        r.msg = r.reason  # what urllib's own handler does: clients read the reason there
        if conn.sock is not None:
            r._egress_release = functools.partial(self._pool.give_back, key, conn)
        return r


class EgressRedirectHandler(urllib.request.HTTPRedirectHandler):
    """Carries a request's context to its redirect (checked anew: a held
    decision is for the first URL only)."""

    def redirect_request(self, req, fp, code, msg, headers, newurl):
        new = super().redirect_request(req, fp, code, msg, headers, newurl)
        if new is not None:
            new.egress_ctx = getattr(req, "egress_ctx", None)
        return new


class _NoFTP(urllib.request.FTPHandler):
    """Takes the place of urllib's FTP handler: FTP would leave unchecked."""

    def ftp_open(self, req):
        raise EgressError("%s: only http and https requests are checked; ftp is refused"
                          % req.full_url)


class _Opener(urllib.request.OpenerDirector):
    def close(self):
        """Close the handlers' idle connections (urllib's own close() does
        nothing)."""
        for handler in self.handlers:
            handler.close()


def build_opener(checker, *handlers, ctx=None, context=None, pool_size=4):
    """A urllib OpenerDirector whose http and https requests go through
    EgressHandler (one check per request, pooled kept-alive connections).

    No proxy is used (environment proxies would send the socket elsewhere
    than the checked origin) and ftp is refused.  ``handlers`` are added as
    urllib.request.build_opener() adds them: one that subclasses a default
    handler replaces it.  ``opener.close()`` closes the idle connections.
    """
    handlers = (urllib.request.ProxyHandler({}),
                EgressHandler(checker, ctx=ctx, context=context, pool_size=pool_size),
                EgressRedirectHandler(), _NoFTP()) + handlers
    # urllib.request.build_opener(), making an _Opener.
    defaults = [urllib.request.ProxyHandler, urllib.request.UnknownHandler,
                urllib.request.HTTPHandler, urllib.request.HTTPDefaultErrorHandler,
                urllib.request.HTTPRedirectHandler, urllib.request.FTPHandler,
                urllib.request.FileHandler, urllib.request.HTTPErrorProcessor,
                urllib.request.DataHandler]
    if hasattr(urllib.request, "HTTPSHandler"):
        defaults.append(urllib.request.HTTPSHandler)
    opener = _Opener()
    for klass in defaults:
        if not any(issubclass(h, klass) if isinstance(h, type) else isinstance(h, klass)
                   for h in handlers):
            opener.add_handler(klass())
    for h in handlers:
        opener.add_handler(h() if isinstance(h, type) else h)
    return opener
