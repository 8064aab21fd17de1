#!/usr/bin/env bash
# Regenerates the Swift of proto/*.proto. Run by hand after
# editing proto/; the output is committed and CI never runs this script.
# LittleHorse's data model goes to LHProto (SDK users build requests with
# it); our own wire envelope (wire.proto) to LHWireProto and our on-disk
# records (store.proto) to LHStore, modules an SDK user never sees.
#
# Needs protoc (Debian: apt-get install -y protobuf-compiler) and
# protoc-gen-swift at the same version as the swift-protobuf runtime in
# Package.swift. Without PROTOC_GEN_SWIFT set, the plugin is built from the
# mirrored swift-protobuf into .build-protoc/.
set -euo pipefail
cd "$(dirname "$0")/.."
SWIFT_PROTOBUF_VERSION=1.39.0

command -v protoc >/dev/null || { echo "protoc not found: apt-get install -y protobuf-compiler" >&2; exit 1; }

plugin="${PROTOC_GEN_SWIFT:-}"
if [ -z "$plugin" ]; then
  src=.build-protoc/swift-protobuf
  if [ ! -x "$src/.build/release/protoc-gen-swift" ]; then
    rm -rf "$src"; mkdir -p .build-protoc
    git clone -q --branch "$SWIFT_PROTOBUF_VERSION" https://github.com/apple/swift-protobuf.git "$src"
    (cd "$src" && swift build -c release --product protoc-gen-swift)
  fi
  plugin="$src/.build/release/protoc-gen-swift"
fi

out=Sources/LHProto/Generated
rm -f "$out"/*.pb.swift
public_protos=$(ls proto/*.proto | grep -v -x -F -e proto/wire.proto -e proto/store.proto)
protoc --plugin=protoc-gen-swift="$plugin" \
  --swift_out="$out" --swift_opt=Visibility=Public \
  -I proto $public_protos
# Our own envelope and storage records: modules of their own that SDK users
# never import (LHClient and LHWorker re-export LHProto only).
for target in "proto/wire.proto:Sources/LHWireProto" "proto/store.proto:Sources/LHStore/Generated"; do
  protoc --plugin=protoc-gen-swift="$plugin" \
    --swift_out="${target#*:}" --swift_opt=Visibility=Public \
    --swift_opt=ProtoPathModuleMappings=proto/module_mappings.asciipb \
    -I proto "${target%%:*}"
done

# The descriptors of the same files, for printing JSON as LittleHorse's lhctl
# does (LHProtoJSON in Sources/LHProto/ProtoJSON.swift needs every field,
# also those a message leaves unset). Committed as base64 in a Swift file.
mkdir -p .build-protoc
protoc --include_imports --descriptor_set_out=.build-protoc/lh.protoset -I proto proto/*.proto
{
  echo "// DO NOT EDIT."
  echo "// Made by scripts/generate-proto.sh from proto/*.proto with"
  echo "// protoc --include_imports --descriptor_set_out: the FileDescriptorSet of"
  echo "// every message in LHProto, base64, read by LHProtoJSON (ProtoJSON.swift)."
  echo ""
  echo "extension LHProtoJSON {"
  echo "    static let fileDescriptorSetBase64 = \"\"\""
  base64 -w 100 .build-protoc/lh.protoset | sed 's/^/        /'
  echo "        \"\"\""
  echo "}"
} > "$out"/descriptor_set.pb.swift
echo "generated: $(ls "$out"/*.pb.swift | wc -l) files in $out"
