#!/usr/bin/env bash
# libegress developer entry point.
#
#   tools/dev.sh demo    install what is missing, build, run the demo worker
#   tools/dev.sh test    install what is missing, build, run every test suite
#                        (release build, ASan+UBSan build, CLI, examples) and
#                        print one closing line "N passed, N failed"
#   tools/dev.sh deps    only install the Debian packages
#
# Works on a fresh Debian 12 machine as root (or with sudo), offline once the
# packages are installed.  Build directories live under build/ in the tree.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$here"

DEBIAN_PACKAGES=(
  build-essential pkg-config meson ninja-build python3 valgrind
  libc-ares-dev libpcre2-dev libcjson-dev libcunit1-dev libidn2-dev nettle-dev
  dnsmasq-base libcurl4-openssl-dev clang libclang-rt-14-dev clang-format libuv1-dev libhttp-parser-dev curl openssl
)

as_root() {
  if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi
}

install_deps() {
  local missing=()
  for p in "${DEBIAN_PACKAGES[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
  done
  if [ "${#missing[@]}" -gt 0 ]; then
    echo "== installing Debian packages: ${missing[*]}"
    as_root env DEBIAN_FRONTEND=noninteractive apt-get update -qq
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}"
  fi
}

configure() {  # configure DIR [meson options...]
  local dir=$1; shift
  # The packages above are installed: a part they make possible must be
  # built, never silently left out (its tests with it).
  set -- -Duv=enabled -Degressd=enabled "$@"
  if [ -f "$dir/build.ninja" ]; then
    meson setup --reconfigure "$dir" "$@" >/dev/null
  else
    meson setup "$dir" "$@" >/dev/null
  fi
}

build_release() {
  configure build/release --buildtype=release
  ninja -C build/release
}

run_demo() {
  configure build/release --buildtype=release
  ninja -C build/release examples/worker-gate tools/egressctl
  exec examples/demo/run-demo.sh build/release
}

run_tests() {
  local logs=()
  local status=0
  export EGRESS_TEST_NO_SKIP=1   # a skipped suite is a failure here

  echo "== npm packages of the Node binding (from package-lock.json)"
  npm ci --prefix bindings/node --no-audit --no-fund

  echo "== release build"
  build_release
  meson test -C build/release --print-errorlogs --num-processes 2 || status=1
  logs+=(build/release/meson-logs/testlog.json)

  echo "== AddressSanitizer + UndefinedBehaviorSanitizer build"
  configure build/asan -Db_sanitize=address,undefined -Db_lundef=false --buildtype=debug
  ninja -C build/asan
  ASAN_OPTIONS=detect_leaks=1:abort_on_error=1 UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 \
    meson test -C build/asan --print-errorlogs --num-processes 2 --timeout-multiplier 3 || status=1
  logs+=(build/asan/meson-logs/testlog.json)

  echo "== valgrind memcheck of the CUnit suites (release build)"
  meson test -C build/release --setup valgrind --print-errorlogs --num-processes 2 \
    canon special entry policy api checker resolve faults events integration bad-policy-reload \
    fuzz-replay-entry fuzz-replay-policy fuzz-replay-canon fuzz-replay-url fuzz-replay-dns \
    fuzz-replay-diff fuzz-replay-request || status=1
  # Kept apart so the summary counts these runs on their own.
  cp build/release/meson-logs/testlog-valgrind.json build/release/meson-logs/valgrind.json 2>/dev/null || true
  logs+=(build/release/meson-logs/valgrind.json)

  echo "== ThreadSanitizer build"
  configure build/tsan -Db_sanitize=thread -Db_lundef=false --buildtype=debugoptimized
  ninja -C build/tsan
  TSAN_OPTIONS=halt_on_error=1:second_deadlock_stack=1 \
    meson test -C build/tsan --print-errorlogs --num-processes 2 --timeout-multiplier 4 || status=1
  logs+=(build/tsan/meson-logs/testlog.json)

  echo "== fuzzing: every libFuzzer target for ${EGRESS_FUZZ_SECONDS:-30} s"
  mkdir -p build
  if tests/fuzz/run.sh "${EGRESS_FUZZ_SECONDS:-30}" > build/fuzz-run.txt 2>&1; then fuzz_ok=1; else fuzz_ok=0; status=1; fi
  cat build/fuzz-run.txt | grep -E '^fuzz_' || tail -20 build/fuzz-run.txt
  # One summary line per target: a crash or a failed invariant counts as a failure.
  python3 - build/fuzz-run.txt "$fuzz_ok" > build/fuzzlog.json <<'PY'
import json, re, sys
text = open(sys.argv[1], errors="replace").read()
rows = re.findall(r"^fuzz_(\S+)\s.*?\s(ok|CRASH.*)$", text, re.M)
if not rows or (sys.argv[2] != "1" and all(r == "ok" for _, r in rows)):
    rows.append(("run", "CRASH"))
for name, res in rows:
    print(json.dumps({"name": "fuzz-" + name, "result": "OK" if res == "ok" else "FAIL", "stdout": ""}))
PY
  logs+=(build/fuzzlog.json)

  echo "== summary"
  python3 tests/summarize.py "${logs[@]}" || status=1
  return $status
}

case "${1:-}" in
  deps) install_deps ;;
  demo) install_deps; run_demo ;;
  test) install_deps; run_tests ;;
  *) echo "usage: tools/dev.sh demo|test|deps" >&2; exit 64 ;;
esac
