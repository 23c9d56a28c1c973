#!/usr/bin/env python3
"""The shared library exports exactly the EGRESS_API functions of egress.h.

Usage: check_exports.py LIBEGRESS.so include/egress.h

Every function declared with EGRESS_API must be a defined dynamic symbol,
and no other symbol may be: an egress__ internal or a helper that escaped
-fvisibility=hidden is a leak.
"""
import re
import subprocess
import sys

# Symbols the toolchain itself may put in the dynamic table of a shared
# object; they are not part of our API and not a leak of ours.
TOOLCHAIN = {"_init", "_fini", "_edata", "_end", "__bss_start"}


def declared(header_text):
    # Drop comments first so that prose mentioning EGRESS_API is not read.
    text = re.sub(r"/\*.*?\*/", " ", header_text, flags=re.S)
    text = re.sub(r"//[^\n]*", " ", text)
    # Preprocessor lines (the EGRESS_API definition itself, X-macro lists).
    text = re.sub(r"^[ \t]*#(?:[^\n]*\\\n)*[^\n]*", " ", text, flags=re.M)
    names = set()
    for decl in re.finditer(r"\bEGRESS_API\b([^;{]*?)\(", text):
        before_paren = decl.group(1)
        m = re.search(r"([A-Za-z_][A-Za-z0-9_]*)\s*$", before_paren)
        if m:
            names.add(m.group(1))
    return names


def exported(lib):
    out = subprocess.run(["nm", "-D", "--defined-only", lib], check=True,
                         capture_output=True, text=True).stdout
    names = set()
    for line in out.splitlines():
        parts = line.split()
        if len(parts) < 2:
            continue
        name = parts[-1].split("@")[0]
        if name in TOOLCHAIN:
            continue
        names.add(name)
    return names


def main():
    if len(sys.argv) != 3:
        print(__doc__, file=sys.stderr)
        return 2
    lib, header = sys.argv[1], sys.argv[2]
    with open(header, encoding="utf-8") as f:
        api = declared(f.read())
    syms = exported(lib)
    ok = True
    if len(api) < 50:
        print(f"only {len(api)} EGRESS_API declarations found in {header}: parser broken?")
        ok = False
    missing = sorted(api - syms)
    extra = sorted(syms - api)
    for name in missing:
        print(f"declared but not exported: {name}")
    for name in extra:
        kind = "internal" if name.startswith("egress__") else "not in egress.h"
        print(f"exported but not declared ({kind}): {name}")
    if missing or extra:
        ok = False
    print(f"{len(api)} declared, {len(syms)} exported")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
