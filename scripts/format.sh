#!/usr/bin/env bash
# Formats the hand-written Swift with swift-format and .swift-format (4
# spaces, 120 columns). Generated code (every Generated/ folder, LHWireProto,
# the worker's closure overloads, UnsupportedFields.swift) is left as its
# generator writes it.
#   scripts/format.sh          format in place
#   scripts/format.sh --check  list the files it would change; exit 1 if any
set -euo pipefail
cd "$(dirname "$0")/.."
mapfile -t files < <(git ls-files '*.swift' | grep -v -e '/Generated/' -e '^Sources/LHWireProto/' -e 'TaskWorker+Overloads.swift' -e 'UnsupportedFields.swift' -e '^Package.swift$')
if [ "${1:-}" = "--check" ]; then
  tmp=$(mktemp -d)
  trap 'rm -rf "$tmp"' EXIT
  for f in "${files[@]}"; do mkdir -p "$tmp/$(dirname "$f")"; cp "$f" "$tmp/$f"; done
  cp .swift-format "$tmp/"
  (cd "$tmp" && swift format format --parallel -i "${files[@]}")
  changed=0
  for f in "${files[@]}"; do
    if ! cmp -s "$f" "$tmp/$f"; then echo "not formatted: $f"; changed=1; fi
  done
  [ "$changed" = 0 ] && echo "all ${#files[@]} Swift files are formatted"
  exit "$changed"
fi
swift format format --parallel -i "${files[@]}"
