#!/usr/bin/env bash
# Starts lh-server (data in ./lh-data, 127.0.0.1:2023, TLS with a development
# CA), registers the collect-underpants example and runs its task workers.
# Ctrl-C stops everything.
set -euo pipefail
cd "$(dirname "$0")/.."
echo "building (debug)..."
swift build --product lh-server >/dev/null && swift build --product lhctl >/dev/null \
  && swift build --product collect-underpants-worker >/dev/null && swift build --product collect-underpants-register >/dev/null
bin=$(swift build --show-bin-path)
"$bin/lh-server" --data-dir lh-data --listen 127.0.0.1:2023 &
server=$!
trap 'kill $server ${worker:-} 2>/dev/null; wait' EXIT INT TERM
export LHC_API_HOST=127.0.0.1 LHC_API_PORT=2023 LHC_CA_CERT=lh-data/tls/ca.pem
for _ in $(seq 1 100); do "$bin/lhctl" version >/dev/null 2>&1 && break; sleep 0.1; done
"$bin/collect-underpants-worker" &
worker=$!
"$bin/collect-underpants-register"   # waits for the TaskDefs the worker registers
echo "ready: try  $bin/lhctl run collect-underpants --wfRunId my-wf all-underpants '[]'  (LHC_CA_CERT=lh-data/tls/ca.pem)"
echo "       and watch it at https://127.0.0.1:2025/ (the dashboard; its certificate is signed by lh-data/tls/ca.pem)"
wait $server
