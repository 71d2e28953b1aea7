#!/usr/bin/env bash
# The full test suite: installs what it needs, builds every target (the CLI, the samples and
# the cell plugin .so files the tests load through the registry), and runs all tests; runs
# a package that depends on this one by URL and version (scripts/consumer-test.sh: committed
# HEAD only); runs each sample and the main job for a few steps; then runs the whole suite
# again with the optimised (release) plugins loaded through SEQCELL_PLUGIN_PATH, which are what
# users run — the optimiser has bitten plugin code before (docs/PLUGIN_ABI.md).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/ensure-deps.sh --python --mpi  # Open MPI: DistributedTests run mpirun with 2 and 3 ranks
swift build --build-tests
swift test --skip-build "$@"

echo "== SeqCell as a versioned SwiftPM dependency of another package =="
scripts/consumer-test.sh

echo "== samples and the main job, a few steps each =="
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
bin=.build/debug
$bin/adding-sample --steps 5 --seq-len 10 --output "$tmp/adding.h5"
$bin/charlm-sample --steps 3 --sample-length 20 --hidden 16 --output "$tmp/charlm.h5"
$bin/finetune-sample --steps 3 --out-dir "$tmp/finetune"
$bin/seqcell demo --steps 5 --seq-len 10 --log-every 5 --out-dir "$tmp/demo"
samples/mgu/build.sh "$tmp/mgu" >/dev/null
$bin/seqcell validate-plugin "$tmp/mgu/libseqcell_mgu.so" | tail -1

echo "== the suite again, with the cells built with optimisation =="
swift build -c release
SEQCELL_PLUGIN_PATH="$PWD/.build/release" swift test --skip-build "$@"

echo "== quick fuzz of the file readers (debug CLI) =="
scripts/fuzz/fuzz.py --quick --seqcell .build/debug/seqcell --out .build/fuzz-out
