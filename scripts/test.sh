#!/usr/bin/env bash
# The project's test command (README, .ci/run): checks the proto model
# against LittleHorse's descriptors, builds everything, runs every test.
set -euo pipefail
cd "$(dirname "$0")/.."

# SQLite headers for GRDB (present on most images; installed when missing).
if [ ! -f /usr/include/sqlite3.h ] && [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
  echo "== installing libsqlite3-dev"
  (apt-get install -y -qq libsqlite3-dev || (apt-get update -qq && apt-get install -y -qq libsqlite3-dev)) >/dev/null
fi

echo "== proto compatibility with LittleHorse"
scripts/check-proto.sh

echo "== deploy/ checks"
scripts/check-deploy.sh

echo "== build (debug, with tests)"
log=$(mktemp)
start=$(date +%s)
if ! swift build --build-tests >"$log" 2>&1; then
  grep -v -E '^\[[0-9]+/[0-9]+\] ' "$log" | tail -150
  echo "build failed (full log: $log)"
  exit 1
fi
grep -E 'warning:|Compiling|Build complete' "$log" | grep -v -E '^\[' | tail -5 || true
echo "built in $(( $(date +%s) - start )) s"

echo "== tests"
swift test --skip-build 2>&1
