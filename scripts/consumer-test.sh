#!/usr/bin/env bash
# SeqCell as a SwiftPM dependency, the way another package uses it: by URL and version.
#
# Clones this repository's committed HEAD (uncommitted changes are NOT part of the test) into a
# temporary folder, tags the clone 9.9.9, and builds a throwaway consumer package that depends
# on it with `.package(url: "file://…", from: "9.9.9")`. A version requirement makes SwiftPM
# treat SeqCell as a remote dependency, so any unsafe build flag in the products used fails
# the build, exactly as it would for a user. The consumer uses the products SeqCell,
# SeqCellConformance, seqcell_rnn, seqcell_lstm and seqcell_gru; its executable checks that
# PluginRegistry.standard() finds the three built-in cells in the .so files SwiftPM put beside
# it, runs a tiny forward through all three, runs the conformance kit (every check) on the RNN
# plugin, and that no plugin's symbol references bind to another plugin's definitions (the consumer links the cell products, so all three are loaded
# into the global scope at start-up: the case where an exported, interposable symbol would
# be shared). Exits non-zero with a message on any failure; removes its temporary folders.
#
#   scripts/consumer-test.sh          # HEAD
#   scripts/consumer-test.sh REV      # another commit (e.g. to see an old one fail)
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
rev=${1:-HEAD}
version=9.9.9
start=$(date +%s)

fail() { echo "consumer-test: FAILED: $*" >&2; exit 1; }

sha=$(git -C "$root" rev-parse --verify "$rev^{commit}") || fail "'$rev' is not a commit of $root"
if [ "$rev" = HEAD ] && [ -n "$(git -C "$root" status --porcelain --untracked-files=no)" ]; then
    echo "consumer-test: note: uncommitted changes are not tested; testing commit ${sha:0:12}" >&2
fi

tmp=$(mktemp -d "${TMPDIR:-/tmp}/seqcell-consumer.XXXXXX")
trap 'rm -rf "$tmp"' EXIT

echo "== consumer test: SeqCell ${sha:0:12} tagged $version, used by URL and version =="
git clone --quiet --no-local "$root" "$tmp/SeqCell"
git -C "$tmp/SeqCell" checkout --quiet --detach "$sha"
git -C "$tmp/SeqCell" -c user.name=consumer-test -c user.email=consumer-test@localhost \
    tag -a -m "consumer test" "$version" "$sha"

mkdir -p "$tmp/consumer/Sources/consumer"
cat >"$tmp/consumer/Package.swift" <<EOF
// swift-tools-version:6.0
import PackageDescription

let package = Package(
    name: "SeqCellConsumer",
    dependencies: [
        .package(url: "file://$tmp/SeqCell", from: "$version"),
    ],
    targets: [
        .executableTarget(
            name: "consumer",
            dependencies: [
                .product(name: "SeqCell", package: "SeqCell"),
                .product(name: "SeqCellConformance", package: "SeqCell"),
                .product(name: "seqcell_rnn", package: "SeqCell"),
                .product(name: "seqcell_lstm", package: "SeqCell"),
                .product(name: "seqcell_gru", package: "SeqCell"),
            ]),
    ]
)
EOF
cat >"$tmp/consumer/Sources/consumer/main.swift" <<'EOF'
import Foundation
import SeqCell
import SeqCellConformance

func fail(_ message: String) -> Never {
    FileHandle.standardError.write(Data("consumer: \(message)\n".utf8))
    exit(1)
}

let exe = URL(fileURLWithPath: "/proc/self/exe").resolvingSymlinksInPath()
let exeDir = exe.deletingLastPathComponent().path
let registry = PluginRegistry.standard()
for id in ["rnn", "lstm", "gru"] {
    guard let type = try? registry.cellType(id) else {
        fail("cell '\(id)' not found; searched \(registry.searchedPaths); problems: \(registry.problems)")
    }
    let dir = URL(fileURLWithPath: type.libraryPath).resolvingSymlinksInPath().deletingLastPathComponent().path
    guard dir == exeDir else { fail("cell '\(id)' came from \(type.libraryPath), not from beside the executable (\(exeDir))") }
    print("cell \(id) \(type.version) from \(URL(fileURLWithPath: type.libraryPath).lastPathComponent)")
}
if !registry.problems.isEmpty { fail("plugin problems: \(registry.problems)") }

do {
    let model = try Model.build(
        inputSize: 3,
        layers: [LayerSpec(cell: "rnn", hiddenSize: 4),
                 LayerSpec(cell: "lstm", hiddenSize: 4, direction: .bidirectional),
                 LayerSpec(cell: "gru", hiddenSize: 2)],
        head: HeadSpec(outputSize: 1), registry: registry, seed: 1)
    let x = Tensor(shape: [5, 2, 3], data: (0..<30).map { Float($0 % 7) / 7 - 0.5 })
    let out = try model.forward(input: x, lengths: [5, 3])
    guard out.output.shape == [5, 2, 1] else { fail("forward gave shape \(out.output.shape), expected [5, 2, 1]") }
    guard out.output.data.allSatisfy(\.isFinite) else { fail("forward gave non-finite values: \(out.output.data)") }
    // Steps past a sample's length are zero in the recurrent output.
    guard (3..<5).allSatisfy({ t in (0..<2).allSatisfy { out.recurrentOutput.data[(t * 2 + 1) * 2 + $0] == 0 } }) else {
        fail("padded steps of the recurrent output are not zero")
    }
    print("forward rnn -> bidirectional lstm -> gru -> head: shape \(out.output.shape), first \(out.output.data[0])")
} catch {
    fail("forward failed: \(error)")
}
// The conformance kit, as a cell author's own test suite uses it: every check on one library.
let rnnLibrary = "\(exeDir)/libseqcell_rnn.so"
let report = ConformanceRunner().validate(library: rnnLibrary)
guard report.passed, report.checks.count >= 5 else { fail("conformance of libseqcell_rnn.so: \(report)") }
print("conformance kit: libseqcell_rnn.so passed all \(report.checks.count) checks")
print("consumer: OK")
EOF

echo "== building the consumer (debug) =="
build_log="$tmp/build.log"
if ! (cd "$tmp/consumer" && swift build) >"$build_log" 2>&1; then
    cat "$build_log" >&2
    grep -q "unsafe build flags" "$build_log" &&
        fail "SeqCell cannot be used as a versioned dependency: a product it uses has unsafe build flags (see above)"
    fail "the consumer package did not build (see above)"
fi
tail -1 "$build_log"

bin=$(cd "$tmp/consumer" && swift build --show-bin-path)
for p in rnn lstm gru; do
    [ -f "$bin/libseqcell_$p.so" ] || fail "libseqcell_$p.so is not beside the consumer's executable in $bin"
done
echo "plugins beside the executable: $(cd "$bin" && ls libseqcell_*.so | tr '\n' ' ')"

echo "== running the consumer =="
# Only the plugins beside the executable: the user's own search path must not interfere.
env -u SEQCELL_PLUGIN_PATH LD_DEBUG=bindings LD_DEBUG_OUTPUT="$tmp/ld" "$bin/consumer" ||
    fail "the consumer's executable failed (exit $?)"
# Each plugin must bind its own symbols: a reference from one plugin resolved to another
# plugin's definition means an exported symbol was interposed (docs/PLUGIN_ABI.md).
cross=$(cat "$tmp"/ld.* | grep -E 'binding file [^ ]*/libseqcell_[a-z0-9_]+\.so \[' |
    sed -E 's/.*binding file [^ ]*\/(libseqcell_[a-z0-9_]+\.so) \[[0-9]+\] to [^ ]*\/([^/ ]+) \[[0-9]+\]: [a-z]+ symbol `([^'"'"']*).*/\1 \2 \3/' |
    awk '$2 ~ /^libseqcell_/ && $1 != $2' | sort -u || true)
if [ -n "$cross" ]; then
    echo "$cross" | head -20 >&2
    fail "a plugin's references bind to another plugin's symbols (file, bound to, symbol above)"
fi
echo "consumer-test: passed in $(( $(date +%s) - start )) s"
