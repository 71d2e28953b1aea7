#!/bin/sh
# Builds the sample IndRNN cell plugin: samples/indrnn/build.sh [output-dir] [extra cc flags...]
# The library lands in output-dir (default: this folder) as libseqcell_indrnn.so.
set -eu
here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/../.." && pwd)
out=${1:-$here}
[ $# -gt 0 ] && shift
mkdir -p "$out"
${CC:-cc} -std=c99 -pedantic -O2 -fPIC -shared -Wall -Wextra -Werror "$@" \
    -I"$repo/Sources/CSeqCell/include" "$here/indrnn.c" -o "$out/libseqcell_indrnn.so" -lm
echo "$out/libseqcell_indrnn.so"
