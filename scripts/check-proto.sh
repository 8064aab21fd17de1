#!/usr/bin/env bash
# Checks proto/*.proto against LittleHorse's published descriptors (PyPI
# littlehorse-client): names, field numbers, types, enum values. Installs what
# it needs (protoc from Debian, a virtualenv in .build-py/). When that is not
# possible it says so and exits 0 with a SKIPPED line: never silently.
set -uo pipefail
cd "$(dirname "$0")/.."

command -v protoc >/dev/null || scripts/apt-install.sh protobuf-compiler
if ! command -v protoc >/dev/null; then
  echo "SKIPPED proto-compat: protoc is not installed and could not be installed (apt-get install protobuf-compiler)"
  exit 0
fi
if ! python=$(scripts/python-sdk.sh); then
  echo "SKIPPED proto-compat: could not install littlehorse-client from PyPI into .build-py/"
  exit 0
fi
set -e
out=$(mktemp)
protoc --include_imports --descriptor_set_out="$out" -I proto proto/*.proto
"$python" scripts/check-proto-compat.py "$out"
rm -f "$out"
