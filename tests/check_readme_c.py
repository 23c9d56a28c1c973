#!/usr/bin/env python3
"""README.md's C snippets compile cleanly against egress.h.

A reader copies the worker gate from README into a project built with
-Wall -Wextra -Werror; a snippet that ignores a warn_unused_result status or
calls a function under an old name would teach the wrong thing. Each ```c
block is compiled as the body of a function (its #include lines lifted to
the top), with a die() helper the snippets use; a block that defines
functions of its own (a line opening with "static ") is compiled as a whole
file, with the same helper.

usage: check_readme_c.py CC README.md INCLUDE_DIR...
"""
import os
import re
import subprocess
import sys
import tempfile


def main():
    cc, readme, incs = sys.argv[1], sys.argv[2], sys.argv[3:]
    text = open(readme, encoding="utf-8").read()
    blocks = re.findall(r"^```c\n(.*?)^```$", text, re.S | re.M)
    if not blocks:
        print("no ```c block in " + readme)
        return 1
    failed = 0
    for n, block in enumerate(blocks, 1):
        lines = block.splitlines()
        includes = [l for l in lines if l.startswith("#include")]
        body = [l for l in lines if not l.startswith("#include")]
        # libuv's uv.h needs POSIX types that -std=c11 hides (README says so).
        head = ["#define _GNU_SOURCE", "#include <stdio.h>", "#include <stdlib.h>", *includes,
                "static void die(const char *m) { fprintf(stderr, \"%s\\n\", m); exit(1); }"]
        if any(l.startswith("static ") for l in body):
            src = "\n".join(head + ["void readme_die(const char *m);",
                                     "void readme_die(const char *m) { die(m); }", *body]) + "\n"
        else:
            src = "\n".join(head + ["int readme_snippet(void);", "int readme_snippet(void) {", *body,
                                     "return 0;", "}"]) + "\n"
        with tempfile.NamedTemporaryFile("w", suffix=".c", delete=False) as f:
            f.write(src)
            path = f.name
        try:
            cmd = [cc, "-std=c11", "-Wall", "-Wextra", "-Werror", "-c", "-o", os.devnull,
                   *("-I" + i for i in incs), path]
            p = subprocess.run(cmd, capture_output=True, text=True)
        finally:
            os.unlink(path)
        status = "ok" if p.returncode == 0 else "FAILED"
        print(f"README C block {n}: {status}")
        if p.returncode != 0:
            print(p.stderr)
            failed += 1
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
