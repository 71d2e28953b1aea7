#!/usr/bin/env bash
# The whole test suite under AddressSanitizer and UndefinedBehaviorSanitizer.
#
# Builds every target (the host, the CLI, the samples and the cell plugin .so files, which the
# tests dlopen) with Swift's -sanitize=address and, for the C targets, clang's
# -fsanitize=address,undefined, into its own scratch path (.build-asan, so the ordinary
# .build stays as it is), then runs the whole suite. Exits non-zero if the build or any test
# fails, or if any process the suite started (the test runner, the CLI, validate-plugin's
# child) wrote a sanitizer report, even one that a test treated as an expected failure.
#
#   scripts/sanitize.sh                       # the whole suite
#   scripts/sanitize.sh --filter RegistryTests  # extra arguments go to `swift test`
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/ensure-deps.sh --python

scratch=.build-asan
# Swift has no UBSan on Linux; the C targets (the host shims, the ABI helpers, the cells' vector
# kernels) get it through -Xcc. -fsanitize=function is left out: it checks calls through C
# function pointers against a signature prologue that Swift functions (the host services, the
# cells' entry points) do not have.
flags=(--scratch-path "$scratch" --sanitize=address
       -Xcc -fsanitize=undefined -Xcc -fno-sanitize=function -Xcc -fno-sanitize-recover=undefined)

echo "== building with AddressSanitizer + UndefinedBehaviorSanitizer into $scratch =="
# gold warns once per ASan runtime helper for every linked image that it "cannot export local
# symbol '__asan_…'" (hundreds of lines, harmless): drop those.
swift build --build-tests "${flags[@]}" 2>&1 | { grep -v "Cannot export local symbol '__asan_" || true; }

reports=$(mktemp -d "${TMPDIR:-/tmp}/seqcell-sanitize.XXXXXX")
trap 'rm -rf "$reports"' EXIT
# Every sanitized process writes its report to $reports/<tool>.<pid> instead of stderr, so a
# report from a child process whose failure a test expects is still seen.
# - halt_on_error: the first error ends the process (and fails the test that ran it).
# - detect_leaks=0: leak checking is not part of this run (plugins are never unloaded by
#   design, docs/PLUGIN_ABI.md, and Swift's runtime keeps its caches to exit; a leak run
#   would need a suppression list first).
# - handle_segv=0, handle_abort=0: a fixture plugin that crashes on purpose (validate-plugin's
#   tests) must die as it would without ASan, so the parent reports it; an unexpected crash
#   still fails its test. ASan's own checks (out of bounds, use after free, ...) are unaffected.
export ASAN_OPTIONS="log_path=$reports/asan:halt_on_error=1:detect_leaks=0:handle_segv=0:handle_abort=0:detect_stack_use_after_return=0:strict_string_checks=0"
export UBSAN_OPTIONS="log_path=$reports/ubsan:halt_on_error=1:print_stacktrace=1"
# The Swift runtime's crash handler copies the crashed thread's stack to print a backtrace,
# which ASan reports as a stack-buffer-underflow (in CrashHandlerLinux.cpp) and then ends the
# process in a way validate-plugin's parent never sees; turn it off so a crash is a signal.
export SWIFT_BACKTRACE=enable=no
# The HDF5 check child (Sources/CSeqCellHDF5Check) is where libhdf5 reads untrusted bytes, and
# libhdf5 1.10 overruns its own buffers on some damaged files (the tests feed it such files on
# purpose). Its reports go to a folder of their own: a report whose fault is inside libhdf5 is
# a fault contained by design and is counted, not failed; any other report there (a fault in
# SeqCell's own walker) fails the run like every other report.
mkdir -p "$reports/check-child"
export SEQCELL_SANITIZER_CHECK_CHILD_LOG="$reports/check-child/report"

# Left out, by name: a test whose time budget the instrumented build cannot meet (it runs in
# scripts/test.sh). The ASan build of `seqcell new` spends more than the test's 60 s
# initialising the 120 MB model it must kill mid-save, so the kill never lands.
skipped=(CheckpointTests.testKillingASavingProcessLeavesThePreviousCheckpointLoadable)
echo "== the suite, sanitized (skipped: ${skipped[*]}) =="
status=0
swift test --skip-build "${flags[@]}" "${skipped[@]/#/--skip=}" "$@" || status=$?

# A contained report: its first stack frame outside the sanitizer runtime is in libhdf5.
contained=0
for f in "$reports"/check-child/*; do
    [ -e "$f" ] || continue
    first=$(awk '/^ *#[0-9]+ 0x/ && !/compiler-rt|sanitizer_common|\/asan\/|\/ubsan\/|in (memcpy|memmove|memset|strlen|strcpy|__interceptor_)/ { print; exit }' "$f")
    if [[ "$first" == *libhdf5* ]]; then
        contained=$((contained + 1))
        rm -f "$f"
    else
        mv "$f" "$reports/$(basename "$f").check-child"
    fi
done
rmdir "$reports/check-child" 2>/dev/null || true
if [ "$contained" -gt 0 ]; then
    echo "== $contained fault(s) inside libhdf5 on damaged files, contained in the HDF5 check child (expected) =="
fi

if compgen -G "$reports/*" >/dev/null; then
    echo "== sanitizer reports =="
    for f in "$reports"/*; do
        echo "--- $(basename "$f")"
        cat "$f"
    done
    echo "sanitize.sh: FAILED: $(ls "$reports" | wc -l) sanitizer report(s) above" >&2
    exit 1
fi
if [ "$status" -ne 0 ]; then
    echo "sanitize.sh: FAILED: the test suite failed under the sanitizers (exit $status)" >&2
    exit "$status"
fi
echo "sanitize.sh: the whole suite passed with no sanitizer report"
