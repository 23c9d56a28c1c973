#!/bin/sh
# Run the libegress soak test.
#
#   tests/soak/run.sh [BUILD_DIR] [--checks N] [other egress-soak options]
#
# Configures a release build in BUILD_DIR (default: build/soak under the
# source tree) unless one is there already, builds egress-soak, runs it and
# prints the figures.  Exits non-zero when any verification fails (or, in a
# sanitizer build, on the first sanitizer report).  See tests/soak/README.md.
set -eu

src=$(cd "$(dirname "$0")/../.." && pwd)
build="$src/build/soak"
case "${1:-}" in
  ""|-*) ;;                      # options only: default build dir
  *) build=$1; shift ;;
esac

if [ ! -f "$build/build.ninja" ]; then
  meson setup "$build" "$src" --buildtype=release -Dtests=true
fi

ninja -C "$build" tests/soak/egress-soak

# Harmless in a plain build; in a sanitizer build any report ends the run
# with a non-zero status instead of scrolling past.
: "${ASAN_OPTIONS:=detect_leaks=1:abort_on_error=1}"
: "${UBSAN_OPTIONS:=print_stacktrace=1:halt_on_error=1}"
: "${TSAN_OPTIONS:=halt_on_error=1}"
export ASAN_OPTIONS UBSAN_OPTIONS TSAN_OPTIONS

exec "$build/tests/soak/egress-soak" "$@"
