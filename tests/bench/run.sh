#!/bin/sh
# Run the libegress benchmarks.
#
#   tests/bench/run.sh [BUILD_DIR] [--reps N] [--quick] [--only FIGURE]
#   (FIGURE uv: checks on a libuv loop, tests/bench/bench_uv.c;
#    FIGURE egressd: egressd against Squid, tests/bench/egressd_bench.py)
#
# Configures a release build in BUILD_DIR (default: build/bench under the
# source tree) unless one is there already, builds the benchmark, runs it,
# prints the table and writes the raw numbers to BUILD_DIR/bench.json.
# Extra arguments after BUILD_DIR go to the benchmark (--reps N, --quick).
set -eu

src=$(cd "$(dirname "$0")/../.." && pwd)
build="$src/build/bench"
case "${1:-}" in
  ""|-*) ;;                      # options only: default build dir
  *) build=$1; shift ;;
esac

if [ ! -f "$build/build.ninja" ]; then
  # -Ddebug=true: symbols for perf (the egressd figure); the code is the same.
  meson setup "$build" "$src" --buildtype=release -Ddebug=true -Dbench=true -Dtests=true
else
  buildtype=$(python3 -c 'import json,sys
for o in json.load(open(sys.argv[1])):
    if o["name"] == "buildtype": print(o["value"])' "$build/meson-info/intro-buildoptions.json" 2>/dev/null || true)
  if [ "$buildtype" != "release" ]; then
    echo "warning: $build is a '$buildtype' build; the figures are meant for --buildtype=release" >&2
  fi
fi

# --only uv: checks on a libuv loop (tests/bench/bench_uv.c), its own program.
case " $* " in
  *" --only uv "*)
    ninja -C "$build" tests/bench/egress-bench-uv
    args=""
    while [ $# -gt 0 ]; do
      case "$1" in
        --only) shift ;;
        --json) shift ;;
        *) args="$args $1" ;;
      esac
      shift
    done
    exec "$build/tests/bench/egress-bench-uv" $args ;;
esac

# --only egressd: egressd against Squid (tests/bench/egressd_bench.py), which
# drives egressd-load, egressd and the loopback DNS responder.
case " $* " in
  *" --only egressd "*)
    ninja -C "$build" tests/bench/egressd-load tools/egressd tests/dns/egress-test-dns
    args=""
    while [ $# -gt 0 ]; do
      case "$1" in
        --only) shift ;;
        --json) shift ;;
        *) args="$args $1" ;;
      esac
      shift
    done
    exec python3 "$src/tests/bench/egressd_bench.py" --load "$build/tests/bench/egressd-load" \
      --egressd "$build/tools/egressd" --dns "$build/tests/dns/egress-test-dns" \
      --json "$build/egressd-bench.json" $args ;;
esac

ninja -C "$build" tests/bench/egress-bench
exec "$build/tests/bench/egress-bench" --json "$build/bench.json" "$@"
