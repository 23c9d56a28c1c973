#!/usr/bin/env bash
# Build the libFuzzer targets and run each for SECONDS (default 60).
#
#   tests/fuzz/run.sh [SECONDS] [TARGET...]      targets: entry policy canon url dns diff request
#
# Environment:
#   FUZZ_BUILD_DIR  build directory (default build/fuzz; configured here with
#                   clang, ASan+UBSan and the library instrumented for coverage)
#   FUZZ_MERGE=1    afterwards, merge what was found into tests/fuzz/corpus/TARGET
#                   (libFuzzer -merge=1 into a fresh directory; hand-made seed-*
#                   files are always kept; at most FUZZ_CORPUS_CAP files, default 200)
#   FUZZ_JOBS       targets run at once (default: number of CPUs)
#
# New inputs found during a run go to $FUZZ_BUILD_DIR/fuzz-corpus/TARGET, not
# into the tree.  Crash files go to tests/fuzz/artifacts/ (git-ignored).  Exits
# non-zero when any target crashed or failed an invariant.
set -uo pipefail
cd "$(dirname "$0")/../.."
root=$PWD
secs=${1:-60}
[ $# -gt 0 ] && shift
targets=("$@")
[ ${#targets[@]} -eq 0 ] && targets=(entry policy canon url dns diff request)
build=${FUZZ_BUILD_DIR:-build/fuzz}
cap=${FUZZ_CORPUS_CAP:-200}
jobs=${FUZZ_JOBS:-$(nproc)}

if ! command -v clang >/dev/null; then
  echo "run.sh: clang is needed (apt-get install clang)" >&2
  exit 2
fi
opts=(-Dfuzz=true -Db_sanitize=address,undefined -Db_lundef=false
      -Dc_args=-fsanitize=fuzzer-no-link -Dwerror=false -Dnode=disabled -Dbench=false)
if [ -f "$build/build.ninja" ]; then
  meson setup --reconfigure "$build" "${opts[@]}" >/dev/null || exit 2
else
  CC=clang meson setup "$build" "${opts[@]}" >/dev/null || exit 2
fi
ninja -C "$build" $(printf 'tests/fuzz/fuzz_%s ' "${targets[@]}") || exit 2

mkdir -p tests/fuzz/artifacts "$build/fuzz-logs"
export ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=1:abort_on_error=0}
export UBSAN_OPTIONS=${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}

run_one() {
  local t=$1 work="$build/fuzz-corpus/$1" log="$build/fuzz-logs/$1.log"
  local dict=()
  mkdir -p "$work"
  case $t in
    policy) dict=(-dict=tests/fuzz/policy.dict) ;;
    entry|url|canon) dict=(-dict=tests/fuzz/entry.dict) ;;
  esac
  "$build/tests/fuzz/fuzz_$t" -max_total_time="$secs" -timeout=20 -rss_limit_mb=4096 \
    -print_final_stats=1 -artifact_prefix="tests/fuzz/artifacts/$t-" "${dict[@]}" \
    "$work" "tests/fuzz/corpus/$t" >"$log" 2>&1
  echo $? >"$log.rc"
}

running=0
for t in "${targets[@]}"; do
  run_one "$t" &
  running=$((running + 1))
  if [ "$running" -ge "$jobs" ]; then
    wait -n
    running=$((running - 1))
  fi
done
wait

status=0
for t in "${targets[@]}"; do
  log="$build/fuzz-logs/$t.log"
  rc=$(cat "$log.rc" 2>/dev/null || echo 99)
  execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -1)
  [ -z "$execs" ] && execs=$(sed -n 's/^Done \([0-9]*\) runs.*/\1/p' "$log" | tail -1)
  cov=$(grep -o 'cov: [0-9]*' "$log" | tail -1)
  if [ "$rc" = 0 ]; then
    printf 'fuzz_%-7s %10s execs in %ss  %s  ok\n' "$t" "${execs:-?}" "$secs" "$cov"
  else
    status=1
    printf 'fuzz_%-7s %10s execs in %ss  %s  CRASH (exit %s, log %s)\n' "$t" "${execs:-?}" "$secs" "$cov" "$rc" "$log"
    grep -E '^(==[0-9]+==ERROR|SUMMARY|.*invariant failed)' "$log" | head -5 | sed 's/^/    /'
    grep -o 'Test unit written to .*' "$log" | sed 's/^/    /'
  fi
done

if [ "${FUZZ_MERGE:-0}" = 1 ]; then
  for t in "${targets[@]}"; do
    tree="tests/fuzz/corpus/$t" fresh="$build/fuzz-merge/$t"
    rm -rf "$fresh" && mkdir -p "$fresh"
    "$build/tests/fuzz/fuzz_$t" -merge=1 -timeout=20 "$fresh" "$tree" "$build/fuzz-corpus/$t" \
      >"$build/fuzz-logs/$t.merge.log" 2>&1 || { echo "merge of $t failed" >&2; status=1; continue; }
    # Keep the hand-made seeds, then the smallest merged inputs up to the cap.
    find "$tree" -type f ! -name 'seed-*' -delete
    # libFuzzer names merged inputs by their SHA-1: drop the seeds' own.
    (cd "$tree" && sha1sum seed-* 2>/dev/null | cut -d' ' -f1) | while read -r h; do
      rm -f "$fresh/$h"
    done
    room=$((cap - $(ls "$tree" | wc -l)))
    if [ "$room" -gt 0 ]; then
      for f in $(cd "$fresh" && ls -S -r | head -n "$room"); do
        cp "$fresh/$f" "$tree/$f"
      done
    fi
    echo "corpus/$t: $(ls "$tree" | wc -l) files"
  done
fi
exit $status
