"""Loading libegress and declaring the C signatures the binding uses.

Every foreign function gets explicit argtypes and restype: ctypes would
otherwise pass Python ints as C int and read every result as int, which
truncates pointers on 64-bit machines.
"""

import ctypes
import json
import os

__all__ = ["lib", "library_path", "EVENT_CB", "ERRBUF_SIZE"]

ERRBUF_SIZE = 512  # EGRESS_ERRBUF_SIZE

SONAME = "libegress.so.0"

# Build directories of a source checkout, tried after the installed library,
# relative to the top of the tree, so that the binding works from a checkout
# after `meson setup build/release`.
_BUILD_GUESSES = (
    "build/release",
    "build",
    "builddir",
    "build/debug",
)

_TOP = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", "..", ".."))


def _is_checkout(top):
    return (os.path.isfile(os.path.join(top, "include", "egress.h"))
            and os.path.isfile(os.path.join(top, "bindings", "python", "egress", "_native.py")))


def _plain_build(builddir):
    """Whether a meson build directory was configured without sanitizers.

    A sanitizer build's libegress.so cannot be loaded into an interpreter
    that was not started with the sanitizer runtime: ASan aborts the whole
    process rather than failing the load.  Such a build is used only when
    named in EGRESS_LIBRARY (with the runtime preloaded).  A directory
    whose options cannot be read is not trusted either.
    """
    path = os.path.join(builddir, "meson-info", "intro-buildoptions.json")
    try:
        with open(path, encoding="utf-8") as f:
            options = json.load(f)
        value = next(o["value"] for o in options if o.get("name") == "b_sanitize")
    except (OSError, ValueError, StopIteration, KeyError, TypeError, AttributeError):
        return False
    return value in ("none", "", [], ["none"])


def _candidates(environ=None, top=_TOP):
    """Where libegress is looked for, in order:

    1. EGRESS_LIBRARY, alone: an explicit choice must not be silently
       replaced by another copy;
    2. the soname through the dynamic loader (LD_LIBRARY_PATH, the
       ld.so cache, the system directories): an installed libegress;
    3. in a source checkout only, the plain (unsanitized) meson builds.
    """
    environ = os.environ if environ is None else environ
    env = environ.get("EGRESS_LIBRARY")
    if env:
        yield env
        return
    yield SONAME
    if not _is_checkout(top):
        return
    for sub in _BUILD_GUESSES:
        builddir = os.path.join(top, sub)
        for name in (SONAME, "libegress.so"):
            path = os.path.join(builddir, "lib", name)
            if os.path.exists(path) and _plain_build(builddir):
                yield path
                break


class _DlInfo(ctypes.Structure):
    _fields_ = [("dli_fname", ctypes.c_char_p), ("dli_fbase", ctypes.c_void_p),
                ("dli_sname", ctypes.c_char_p), ("dli_saddr", ctypes.c_void_p)]


def _loaded_path(handle, fallback):
    """The file the loader picked for ``handle`` (dladdr), else ``fallback``."""
    try:
        dladdr = ctypes.CDLL(None).dladdr
        dladdr.argtypes = [ctypes.c_void_p, ctypes.POINTER(_DlInfo)]
        dladdr.restype = ctypes.c_int
        info = _DlInfo()
        addr = ctypes.cast(handle.egress_version, ctypes.c_void_p)
        if dladdr(addr, ctypes.byref(info)) and info.dli_fname:
            return os.path.realpath(os.fsdecode(info.dli_fname))
    except (AttributeError, OSError):
        pass
    return fallback


def _load():
    errors = []
    for path in _candidates():
        try:
            handle = ctypes.CDLL(path)
        except OSError as e:
            errors.append("%s: %s" % (path, e))
            continue
        return handle, _loaded_path(handle, path)
    raise OSError(
        "libegress not found: install it where the dynamic loader finds %s, or set "
        "EGRESS_LIBRARY to its path (tried: %s)" % (SONAME, "; ".join(errors)))


lib, library_path = _load()

_p = ctypes.c_void_p
_s = ctypes.c_char_p
_i = ctypes.c_int
_sz = ctypes.c_size_t
_u32 = ctypes.c_uint32
_u64 = ctypes.c_uint64
_i32 = ctypes.c_int32
_b = ctypes.c_bool
_pp = ctypes.POINTER(ctypes.c_void_p)

# int cb(const char *json, size_t len, const egress_decision_t *d, void *user)
# The JSON arrives as a raw pointer so that it is read with its length.
EVENT_CB = ctypes.CFUNCTYPE(_i, _p, _sz, _p, _p)

_SIGNATURES = {
    "egress_status_name": (_s, [_i]),
    "egress_strerror": (_s, [_i]),
    "egress_reason_count": (_i, []),
    "egress_reason_name": (_s, [_i]),
    "egress_reason_message": (_s, [_i]),
    "egress_outcome_name": (_s, [_i]),
    "egress_version": (_s, []),
    "egress_special_ranges_version": (_s, []),
    "egress_free": (None, [_p]),
    "egress_policy_from_json": (_i, [_p, _sz, _pp, _p, _sz]),
    "egress_policy_from_file": (_i, [_s, _pp, _p, _sz]),
    "egress_policy_unref": (None, [_p]),
    "egress_policy_digest": (_s, [_p]),
    "egress_options_new": (_i, [_pp]),
    "egress_options_free": (None, [_p]),
    "egress_options_set_mode": (_i, [_p, _i]),
    "egress_options_set_mixed": (_i, [_p, _i]),
    "egress_options_set_dns_servers": (_i, [_p, _s]),
    "egress_options_set_hosts_file": (_i, [_p, _s]),
    "egress_options_set_timeout_ms": (_i, [_p, _u32]),
    "egress_options_set_cache": (_i, [_p, _u32, _u32, _u32, _u32]),
    "egress_options_add_pref64": (_i, [_p, _s]),
    "egress_options_set_event_source": (_i, [_p, _s]),
    "egress_options_set_event_callback": (_i, [_p, EVENT_CB, _p]),
    "egress_options_set_event_path": (_i, [_p, _s]),
    "egress_options_set_audit_required": (_i, [_p, _b]),
    "egress_checker_new": (_i, [_p, _p, _pp, _p, _sz]),
    "egress_checker_free": (None, [_p]),
    "egress_checker_set_policy": (_i, [_p, _p]),
    "egress_checker_reload_file": (_i, [_p, _s, ctypes.POINTER(_b), _p, _sz]),
    "egress_checker_policy": (_p, [_p]),
    "egress_request_new": (_i, [_pp]),
    "egress_request_free": (None, [_p]),
    "egress_request_set": (_i, [_p, _i, _s]),
    "egress_request_refuse": (_i, [_p, _i, _s]),
    "egress_check_ex": (_i, [_p, _s, _i32, _p, _pp]),
    "egress_check_url": (_i, [_p, _s, _p, _pp]),
    "egress_decision_free": (None, [_p]),
    "egress_decision_verdict": (_i, [_p]),
    "egress_decision_outcome": (_i, [_p]),
    "egress_decision_reason": (_i, [_p]),
    "egress_decision_message": (_s, [_p]),
    "egress_decision_destination_host": (_s, [_p]),
    "egress_decision_host": (_s, [_p]),
    "egress_decision_port": (_i32, [_p]),
    "egress_decision_mode": (_i, [_p]),
    "egress_decision_has_rule": (_b, [_p]),
    "egress_decision_rule_list": (_i, [_p]),
    "egress_decision_rule_index": (_sz, [_p]),
    "egress_decision_rule_text": (_s, [_p]),
    "egress_decision_address_count": (_sz, [_p]),
    "egress_decision_address": (_s, [_p, _sz]),
    "egress_decision_address_verdict": (_i, [_p, _sz]),
    "egress_decision_address_reason": (_i, [_p, _sz]),
    "egress_decision_address_ttl": (_i32, [_p, _sz]),
    "egress_decision_address_sockaddr": (_p, [_p, _sz, ctypes.POINTER(_sz)]),
    "egress_decision_curl_resolve": (_s, [_p]),
    "egress_decision_dns_ms": (ctypes.c_double, [_p]),
    "egress_decision_latency_ms": (ctypes.c_double, [_p]),
    "egress_decision_policy_digest": (_s, [_p]),
    "egress_decision_event_json": (_p, [_p]),
    "egress_checker_counter": (_u64, [_p, _i]),
    "egress_checker_checks_by": (_u64, [_p, _i, _i]),
    "egress_checker_metrics": (_p, [_p]),
}

for _name, (_res, _args) in _SIGNATURES.items():
    _fn = getattr(lib, _name)
    _fn.restype = _res
    _fn.argtypes = _args
