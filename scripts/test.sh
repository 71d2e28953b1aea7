#!/usr/bin/env bash
# The full test suite: installs what it needs, builds every target (the CLI and the cell
# plugin .so files the tests load through the registry), then runs all tests.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/ensure-deps.sh --python
swift build --build-tests
swift test --skip-build "$@"
