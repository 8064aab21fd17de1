#!/usr/bin/env bash
# Makes the expected lhctl output of every case in this folder with Go's
# protojson (main.go), the library LittleHorse's lhctl prints with, so that
# LHProtoJSONTests checks LHProtoJSON against output that no one here wrote.
# Run by hand after adding a case or changing proto/; the output (NAME.bin,
# NAME.lhctl.json) is committed and CI never runs this.
#
# Needs protoc and Go with protobuf-go (Debian: protobuf-compiler golang-go
# golang-google-protobuf-dev; installed here when missing and root).
#
# A case is NAME.in.json: {"type": "littlehorse.WfRun", "message": {...}}
# with the message in protobuf JSON (the cases here are what lh-server
# answered in seed 003's walkthrough and a few runs of the tests'
# workflows, as printed by lhctl before it printed unset fields).
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
top="$(cd "$here/../../../.." && pwd)"
"$top/scripts/apt-install.sh" protobuf-compiler golang-go golang-google-protobuf-dev
command -v protoc >/dev/null || { echo "protoc not found: apt-get install -y protobuf-compiler" >&2; exit 1; }
command -v go >/dev/null || { echo "go not found: apt-get install -y golang-go golang-google-protobuf-dev" >&2; exit 1; }

tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT
protoc --include_imports --descriptor_set_out="$tmp/lh.protoset" -I "$top/proto" "$top"/proto/*.proto
cp "$here/main.go" "$tmp/main.go"
(cd "$tmp" && GO111MODULE=off GOPATH=/usr/share/gocode GOCACHE="$tmp/cache" go run main.go "$tmp/lh.protoset" "$here")
