#!/usr/bin/env bash
# The main job on built-in defaults: installs what it needs, builds in release mode, and
# runs `seqcell demo` (extra arguments are passed on, e.g. --steps 300 --seq-len 100).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/ensure-deps.sh
# One build of every target: the CLI and the cell plugins it loads. (A single-product build,
# --product seqcell, would also compile swift-protobuf's protoc sources for its build plugin.)
swift build -c release
exec .build/release/seqcell demo "$@"
