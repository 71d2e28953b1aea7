#!/usr/bin/env bash
# The full test suite: installs what it needs, builds every target (the CLI and the cell
# plugin .so files the tests load through the registry), and runs all tests; then runs the
# cell, layer and conformance tests again against the optimised (release) plugins, which are
# what users run — the optimiser has bitten plugin code before (see docs/PLUGIN_ABI.md).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/ensure-deps.sh --python
swift build --build-tests
swift test --skip-build "$@"
echo "== the same cells, built with optimisation =="
swift build -c release
SEQCELL_PLUGIN_PATH="$PWD/.build/release" swift test --skip-build \
    --filter 'CellTests|GradientTests|LayerTests|ConformanceTests|TrainingTests'
