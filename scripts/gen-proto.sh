#!/usr/bin/env bash
# Regenerates the Swift code for the TensorBoard event-file messages
# (Sources/SeqCellTools/Report/Proto/*.pb.swift) from the .proto subsets beside them, and for ONNX
# models (Sources/SeqCellFormats/Interop/ONNX/Proto/onnx.pb.swift) from onnx.proto as the onnx 1.23.2
# package ships it (onnx/onnx.proto in its wheel or repository, unmodified, Apache-2.0).
# The generated files are committed: building SeqCell never runs protoc. Run this only after
# editing a .proto file, then commit the .pb.swift files it writes.
#
# Needs protoc (Debian: apt-get install protobuf-compiler) and protoc-gen-swift built from
# swift-protobuf at the version Package.swift requires. Give its path as PROTOC_GEN_SWIFT, or
# let this script build it in a scratch clone (several minutes):
#   git clone https://github.com/apple/swift-protobuf && cd swift-protobuf
#   git checkout 1.39.0 && swift build -c release --product protoc-gen-swift
set -euo pipefail
cd "$(dirname "$0")/.."
version=1.39.0
proto_dir=Sources/SeqCellTools/Report/Proto

command -v protoc >/dev/null || { echo "gen-proto: protoc not found (apt-get install protobuf-compiler)" >&2; exit 1; }

plugin="${PROTOC_GEN_SWIFT:-}"
if [ -z "$plugin" ]; then
    scratch=.build/protoc-gen-swift-$version
    if [ ! -x "$scratch/.build/release/protoc-gen-swift" ]; then
        rm -rf "$scratch"
        git clone -q --branch "$version" https://github.com/apple/swift-protobuf "$scratch"
        (cd "$scratch" && swift build -c release --product protoc-gen-swift)
    fi
    plugin="$scratch/.build/release/protoc-gen-swift"
fi

protoc --plugin=protoc-gen-swift="$plugin" --proto_path="$proto_dir" \
    --swift_opt=Visibility=Internal --swift_out="$proto_dir" \
    "$proto_dir"/event.proto "$proto_dir"/summary.proto "$proto_dir"/histogram.proto
onnx_dir=Sources/SeqCellFormats/Interop/ONNX/Proto
protoc --plugin=protoc-gen-swift="$plugin" --proto_path="$onnx_dir" \
    --swift_opt=Visibility=Internal --swift_out="$onnx_dir" "$onnx_dir"/onnx.proto
echo "gen-proto: wrote $(ls "$proto_dir"/*.pb.swift "$onnx_dir"/*.pb.swift | tr '\n' ' ')"
