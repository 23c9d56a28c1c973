#!/bin/sh
# localize.sh OBJCOPY OUT KEEP CC... -- ARCHIVE...
#
# Links the archives into one relocatable object OUT in which only the
# comma-separated symbols KEEP stay global: every other definition,
# including the library's own public names, becomes local to OUT.  So the
# copy of the library inside OUT can never bind to, or be bound by, the
# shared library linked beside it.
set -eu
objcopy=$1 out=$2 keep=$3
shift 3
cc=
while [ "$1" != "--" ]; do cc="$cc $1"; shift; done
shift
$cc -r -nostdlib -o "$out.tmp" -Wl,--whole-archive "$@" -Wl,--no-whole-archive
set --
for s in $(echo "$keep" | tr , ' '); do set -- "$@" "--keep-global-symbol=$s"; done
"$objcopy" "$@" "$out.tmp" "$out"
rm -f "$out.tmp"
