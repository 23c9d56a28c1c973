#!/bin/sh
# Run the worker-gate demo from a meson build directory:
#
#   examples/demo/run-demo.sh BUILD_DIR [worker-gate options...]
#
# e.g.  examples/demo/run-demo.sh /tmp/build --pretty
#       examples/demo/run-demo.sh /tmp/build --mode monitor
#
# Decision events are also written to BUILD_DIR/examples/demo-events.jsonl
# (started afresh on each run) unless --events is given.  Offline: names
# resolve from examples/demo/hosts only.
set -eu

if [ $# -lt 1 ] || [ "$1" = "-h" ] || [ "$1" = "--help" ]; then
  echo "usage: $0 BUILD_DIR [worker-gate options...]" >&2
  exit 64
fi
build=$1
shift

here=$(CDPATH='' cd -- "$(dirname -- "$0")" && pwd)
examples=$(dirname -- "$here")
gate=$build/examples/worker-gate
if [ ! -x "$gate" ]; then
  echo "$0: $gate not found; build it first: ninja -C $build examples/worker-gate" >&2
  exit 66
fi

own_events=yes
for arg in "$@"; do
  case $arg in
    --events|--events=*) own_events=no ;;
  esac
done

if [ "$own_events" = yes ]; then
  events=$build/examples/demo-events.jsonl
  rm -f -- "$events"
  set -- --events "$events" "$@"
fi

status=0
"$gate" \
  --policy "$examples/policies/demo-policy.json" \
  --hosts "$here/hosts" \
  --calls "$here/calls.jsonl" \
  "$@" || status=$?

if [ "$status" -eq 0 ] && [ "$own_events" = yes ]; then
  echo
  echo "decision events (one CloudEvents JSON object per line): $events"
fi
exit "$status"
