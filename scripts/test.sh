#!/usr/bin/env bash
# The project's test command (README, .ci/run): checks the proto model
# against LittleHorse's descriptors, the formatting, builds everything, runs every test,
# then checks that lh-server still links jemalloc as shipped.
set -euo pipefail
cd "$(dirname "$0")/.."

# SQLite headers for GRDB (present on most images; installed when missing).
if [ ! -f /usr/include/sqlite3.h ]; then
  echo "== installing libsqlite3-dev"
  scripts/apt-install.sh libsqlite3-dev
fi

echo "== proto compatibility with LittleHorse"
scripts/check-proto.sh

echo "== formatting (.swift-format)"
scripts/format.sh --check

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

# The dashboard's browser and metrics tests need Chromium, chromium-driver,
# Selenium and prometheus-client: installed here, before the tests' clocks
# run (the tests skip, saying why, only when they cannot be installed).
echo "== dashboard test tools (Chromium, Selenium, prometheus-client)"
scripts/browser.sh >/dev/null || echo "the dashboard tests will say SKIPPED"

# The PostgreSQL store's tests (both backends, fencing, failover) need a
# PostgreSQL: scripts/postgres.sh installs Debian's when missing and runs the
# tests with one of their own (fsync off: PostgreSQL itself is never killed
# there), stopped and removed after.
echo "== tests (with a PostgreSQL of their own)"
if LH_PG_FSYNC=off scripts/postgres.sh run true 2>/dev/null; then
  LH_PG_FSYNC=off scripts/postgres.sh run swift test --skip-build 2>&1
else
  echo "PostgreSQL cannot be started here: its tests will say SKIPPED"
  swift test --skip-build 2>&1
fi

# The server as shipped links jemalloc (Package.swift, deploy/Dockerfile.server):
# check that it still links and starts. Only lh-server is relinked.
echo "== lh-server with jemalloc (LH_JEMALLOC=1)"
ls /usr/lib/*/libjemalloc.so >/dev/null 2>&1 || scripts/apt-install.sh libjemalloc-dev || true
if ls /usr/lib/*/libjemalloc.so >/dev/null 2>&1; then
  if ! LH_JEMALLOC=1 swift build --product lh-server >"$log" 2>&1; then
    tail -50 "$log"
    echo "lh-server does not build with LH_JEMALLOC=1"
    exit 1
  fi
  bin="$(swift build --show-bin-path)/lh-server"
  # (Not `ldd | grep -q`: grep stopping early fails ldd with SIGPIPE under pipefail.)
  if [[ "$(ldd "$bin")" != *libjemalloc* ]]; then
    echo "LH_JEMALLOC=1 built an lh-server that does not link libjemalloc"
    exit 1
  fi
  "$bin" --help >/dev/null
  echo "lh-server links libjemalloc and starts"
else
  echo "SKIPPED jemalloc link check: libjemalloc-dev could not be installed"
fi
