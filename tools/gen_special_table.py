#!/usr/bin/env python3
"""Generate lib/special_table.c from the IANA special-purpose registries.

Inputs (kept in the repository next to this script, columns as IANA
publishes them):
    tools/data/iana-ipv4-special-registry-1.csv
    tools/data/iana-ipv6-special-registry-1.csv

Usage:
    gen_special_table.py                  write lib/special_table.c
    gen_special_table.py --output FILE    write FILE instead
    gen_special_table.py --check FILE     exit 1 with a diff if FILE is stale

The table is never edited by hand: change the CSVs (or the rules below) and
run the script again.  The output is deterministic (rows sorted by family,
network address, then prefix length), which is also the order that
lib/special.c relies on for its lookup.

Reading of the registry (docs/special-ranges.md):
- "Globally Reachable" True means global, False means special-purpose.
- A terminated block (termination date set, empty flag cells) is not global.
- "N/A" (Teredo 2001::/32, 6to4 2002::/16: reachability depends on the
  embedded IPv4 address) is treated as NOT global.  Their reachability
  depends on the IPv4 address they carry, and an egress control must fail
  closed: such an address is usable only when an allowlist CIDR rule
  inside the range opens it, and its embedded IPv4 addresses are vetted on
  top of that (lib/special.c egress__embedded_ipv4).
- Footnote marks ("192.0.0.0/24 [2]", "False [1]", "N/A [3]") are dropped;
  a cell listing several prefixes ("192.0.0.170/32, 192.0.0.171/32") gives
  one row per prefix.
- Nested blocks are kept as they are: the most specific block containing an
  address decides whether it is global (so 192.0.0.9/32 is global inside the
  non-global 192.0.0.0/24, and 2001:1::1/128 inside 2001::/23).

Not routable on the Internet => special-purpose, whatever the "Globally
Reachable" column says.  That column describes where a block's addresses are
meant to be reachable, which is not always the same question as whether a
packet to them can be routed; an egress control needs the second.  Every row
the registry marks True was reviewed against that rule (NOT_ROUTABLE below
holds the exceptions, each with its reason):
- 2001:20::/28 ORCHIDv2 (RFC 7343): identifiers for applications and APIs,
  "non-routable addresses from the IPv6-layer perspective" that must not
  appear in IPv6 headers.  Not global here.
- 2001:30::/28 DRIP Entity Tags (RFC 9374): DETs are Hierarchical HITs in
  the ORCHIDv2 format (RFC 9374 updates RFC 7343 for them), identifiers of
  the same kind.  Not global here.
- Kept global, because they are routed on the Internet: 192.0.0.9/32 and
  192.0.0.10/32 (anycast; the registry's own exceptions)
  and their IPv6 counterparts 2001:1::1/128 and 2001:1::2/128, with
  2001:1::3/128 (DNS-SD SRP anycast, the same kind of service address);
  192.52.193.0/24 and 2001:3::/32 (AMT relay anycast, RFC 7450: announced
  in BGP so that gateways anywhere find a relay); 192.31.196.0/24,
  192.175.48.0/24, 2001:4:112::/48 and 2620:4f:8000::/48 (AS112, announced
  in BGP).
- Outside 2000::/3 no IPv6 address is global, whatever its row says: the
  NAT64 well-known prefix 64:ff9b::/96 (marked True) is special, opened only
  by a CIDR rule inside it, and the IPv4 address it embeds is vetted on top
  (lib/special.c egress__embedded_ipv4).
- Terminated rows (2001:10::/28 ORCHID v1, 192.88.99.0/24 6to4 relay
  anycast) have empty flag cells and are therefore not global.
- Inside 2001::/23 (IETF Protocol Assignments, not global) only the rows
  above marked True and kept are global; every unlisted part of the /23
  stays special through the /23 row.

Added by rule (never globally reachable, not in these registries): RFC 1918
192.168.0.0/16 (missing from the CSV snapshot kept here), IPv4 multicast, the deprecated 6to4 relay anycast, IPv6 multicast, site-local,
IPv4-compatible and IPv4-translated forms, and synthetic blocks covering
every IPv6 address outside 2000::/3 (::/3, 4000::/2, 8000::/1).
"""

import argparse
import csv
import difflib
import io
import ipaddress
import os
import re
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
DATA_DIR = os.path.join(HERE, "data")
V4_CSV = "iana-ipv4-special-registry-1.csv"
V6_CSV = "iana-ipv6-special-registry-1.csv"
DEFAULT_OUTPUT = os.path.join(HERE, os.pardir, "lib", "special_table.c")

# Whether a "Globally Reachable: N/A" row counts as global.  See the module
# docstring: Teredo and 6to4 are special-purpose, so no.
NA_IS_GLOBAL = False

# (prefix, name, reference, synthetic).  All of them are not global.  A rule
# block that the registry already lists keeps the registry row (and is forced
# not global); so a safety net such as 192.168.0.0/16 costs nothing when the
# CSV has it and keeps private space special when a snapshot lacks the row
# (the one in tools/data/ does).
RULE_BLOCKS = [
    ("192.168.0.0/16", "Private-Use", "[RFC1918]", False),
    ("224.0.0.0/4", "Multicast", "[RFC5771] IANA IPv4 Multicast Address Space Registry", False),
    ("192.88.99.0/24", "Deprecated (6to4 Relay Anycast)", "[RFC7526]", False),
    ("ff00::/8", "Multicast", "[RFC4291], Section 2.7", False),
    ("fec0::/10", "Site-Local Unicast (deprecated)", "[RFC3879]", False),
    ("::/96", "IPv4-Compatible IPv6 Address (deprecated)", "[RFC4291], Section 2.5.5.1", False),
    ("::ffff:0:0:0/96", "IPv4-translated Address", "[RFC2765], Section 2.1", False),
    ("::/3", "Outside 2000::/3 (not global unicast)", "[RFC4291], Section 2.4", True),
    ("4000::/2", "Outside 2000::/3 (not global unicast)", "[RFC4291], Section 2.4", True),
    ("8000::/1", "Outside 2000::/3 (not global unicast)", "[RFC4291], Section 2.4", True),
]

# Registry rows whose "Globally Reachable" cell says True but whose addresses
# cannot be routed on the Internet: (prefix, why).  The prefix must be a row
# of the registry, so a change of the CSVs cannot silently drop an exception.
NOT_ROUTABLE = [
    ("2001:20::/28", "ORCHIDv2 identifiers are not routable at the IPv6 layer (RFC 7343)"),
    ("2001:30::/28", "DETs are ORCHIDv2-format identifiers, not routable (RFC 9374)"),
]

FOOTNOTE = re.compile(r"\s*\[\d+\]\s*$")
DATE = re.compile(r"^\d{4}-\d{2}$")
EXPECTED_HEADER = [
    "Address Block", "Name", "RFC", "Allocation Date", "Termination Date", "Source",
    "Destination", "Forwardable", "Globally Reachable", "Reserved-by-Protocol",
]


class GenError(Exception):
    pass


def strip_footnote(cell):
    return FOOTNOTE.sub("", cell.strip()).strip()


def parse_global(cell, terminated, where):
    value = strip_footnote(cell)
    if terminated or value == "":
        return False
    if value == "True":
        return True
    if value == "False":
        return False
    if value == "N/A":
        return NA_IS_GLOBAL
    raise GenError("%s: unexpected Globally Reachable value %r" % (where, cell))


def parse_prefix(text, family, where):
    try:
        net = ipaddress.ip_network(text, strict=True)
    except ValueError as exc:
        raise GenError("%s: bad prefix %r: %s" % (where, text, exc)) from exc
    if net.version != family:
        raise GenError("%s: %s is not IPv%d" % (where, text, family))
    return net


def read_registry(path, family):
    """Rows of one registry and the dates it holds."""
    rows = []
    dates = []
    with open(path, newline="", encoding="utf-8-sig") as f:
        reader = csv.reader(f)
        header = next(reader, None)
        if header is None or [h.strip() for h in header] != EXPECTED_HEADER:
            raise GenError("%s: unexpected header %r" % (path, header))
        for lineno, rec in enumerate(reader, start=2):
            if not any(c.strip() for c in rec):
                continue
            where = "%s:%d" % (os.path.basename(path), lineno)
            if len(rec) != len(EXPECTED_HEADER):
                raise GenError("%s: expected %d columns, got %d" % (where, len(EXPECTED_HEADER), len(rec)))
            block, name, rfc, alloc, term = (c.strip() for c in rec[:5])
            for d in (alloc, term):
                if DATE.match(d):
                    dates.append(d)
            terminated = term not in ("", "N/A")
            glob = parse_global(rec[8], terminated, where)
            for part in block.split(","):
                part = strip_footnote(part)
                if not part:
                    raise GenError("%s: empty prefix in %r" % (where, block))
                net = parse_prefix(part, family, where)
                rows.append({
                    "net": net, "name": name, "rfc": rfc, "global": glob,
                    "by_rule": False, "synthetic": False,
                    "source": "IANA IPv%d registry, allocated %s%s" % (
                        family, alloc, ", terminated " + term if terminated else ""),
                })
    return rows, dates


def build(data_dir):
    rows = []
    dates = []
    for name, family in ((V4_CSV, 4), (V6_CSV, 6)):
        r, d = read_registry(os.path.join(data_dir, name), family)
        rows += r
        dates += d
    if not dates:
        raise GenError("no allocation dates in the registries")

    by_net = {}
    for row in rows:
        if row["net"] in by_net:
            raise GenError("duplicate registry prefix %s" % row["net"])
        by_net[row["net"]] = row

    for text, why in NOT_ROUTABLE:
        net = ipaddress.ip_network(text, strict=True)
        if net not in by_net:
            raise GenError("NOT_ROUTABLE prefix %s is not a registry row" % net)
        row = by_net[net]
        if row["global"]:
            row["global"] = False
            row["source"] += "; registry says globally reachable, not global here: " + why

    # An IPv6 address is global only inside 2000::/3: a registry row outside
    # it is special whatever its "Globally Reachable" cell says.
    global_unicast = ipaddress.ip_network("2000::/3")
    for row in rows:
        net = row["net"]
        if net.version == 6 and row["global"] and not net.subnet_of(global_unicast):
            row["global"] = False
            row["source"] += "; registry says globally reachable, not global here: outside 2000::/3"

    for text, name, rfc, synthetic in RULE_BLOCKS:
        net = ipaddress.ip_network(text, strict=True)
        if net in by_net:
            # Already a registry row (192.88.99.0/24 is listed as terminated):
            # keep the registry's citation but never let it be global.
            by_net[net]["global"] = False
            continue
        row = {"net": net, "name": name, "rfc": rfc, "global": False,
               "by_rule": True, "synthetic": synthetic, "source": "added by rule"}
        by_net[net] = row
        rows.append(row)

    rows.sort(key=lambda r: (r["net"].version, int(r["net"].network_address), r["net"].prefixlen))
    version = "iana-special-registry-" + max(dates)
    return rows, version


def c_string(s):
    out = ['"']
    for ch in s:
        o = ord(ch)
        if ch in '"\\':
            out.append("\\" + ch)
        elif 0x20 <= o < 0x7f:
            out.append(ch)
        else:
            for b in ch.encode("utf-8"):
                out.append("\\%03o" % b)
    out.append('"')
    return "".join(out)


def c_comment(s):
    return s.replace("*/", "* /")


def render(rows, version):
    buf = io.StringIO()
    w = buf.write
    w("/*\n")
    w(" * GENERATED by tools/gen_special_table.py from tools/data/%s\n" % V4_CSV)
    w(" * and tools/data/%s.  Do not edit: change the CSVs or the\n" % V6_CSV)
    w(" * generator and run it again (the special-table-up-to-date test checks it).\n")
    w(" *\n")
    w(" * Sorted by family, network address, then prefix length: lib/special.c\n")
    w(" * relies on that order.  The most specific block containing an address\n")
    w(" * decides whether it is global.\n")
    w(" */\n")
    w('#include "egress_private.h"\n\n')
    w("const char egress__special_version[] = %s;\n\n" % c_string(version))
    w("const egress__special_block_t egress__special_blocks[] = {\n")
    for r in rows:
        net = r["net"]
        raw = net.network_address.packed
        if net.version == 6:
            last = max([i for i, b in enumerate(raw) if b] + [0])
            body = ", ".join("0x%02x" % b for b in raw[: last + 1])
        else:
            body = ", ".join("%d" % b for b in raw)
        flags = []
        if r["synthetic"]:
            flags.append("synthetic")
        w("  /* %s: %s %s; %s; %s */\n" % (
            net, c_comment(r["name"]), c_comment(r["rfc"]),
            "global" if r["global"] else "not global",
            c_comment(r["source"]) + ("" if not flags else " (" + ", ".join(flags) + ")")))
        w("  {.prefix = {.addr = {.family = %d, .bytes = {%s}}, .len = %d},\n" % (
            net.version, body, net.prefixlen))
        w("   .name = %s,\n" % c_string(r["name"]))
        w("   .rfc = %s,\n" % c_string(r["rfc"]))
        w("   .global = %s, .by_rule = %s, .synthetic = %s},\n" % (
            "true" if r["global"] else "false",
            "true" if r["by_rule"] else "false",
            "true" if r["synthetic"] else "false"))
    w("};\n\n")
    w("const size_t egress__special_block_count =\n")
    w("    sizeof egress__special_blocks / sizeof egress__special_blocks[0];\n")
    return buf.getvalue()


def main(argv):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data-dir", default=DATA_DIR, help="folder holding the two IANA CSVs")
    ap.add_argument("--output", default=DEFAULT_OUTPUT, help="file to write")
    ap.add_argument("--check", metavar="FILE", help="compare FILE with a fresh generation")
    args = ap.parse_args(argv)

    try:
        rows, version = build(args.data_dir)
    except (GenError, OSError) as exc:
        print("gen_special_table: %s" % exc, file=sys.stderr)
        return 2
    text = render(rows, version)

    if args.check:
        try:
            with open(args.check, encoding="utf-8") as f:
                current = f.read()
        except OSError as exc:
            print("gen_special_table: %s" % exc, file=sys.stderr)
            return 1
        if current != text:
            sys.stdout.writelines(difflib.unified_diff(
                current.splitlines(True), text.splitlines(True),
                fromfile=args.check, tofile="regenerated"))
            print("gen_special_table: %s is stale; run tools/gen_special_table.py" % args.check,
                  file=sys.stderr)
            return 1
        print("%s is up to date (%d blocks, %s)" % (args.check, len(rows), version))
        return 0

    out = os.path.normpath(args.output)
    tmp = out + ".tmp"
    with open(tmp, "w", encoding="utf-8", newline="\n") as f:
        f.write(text)
    os.replace(tmp, out)
    print("wrote %s (%d blocks, %s)" % (out, len(rows), version))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
