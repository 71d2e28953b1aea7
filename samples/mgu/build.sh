#!/bin/sh
# Builds the sample MGU cell plugin: samples/mgu/build.sh [output-dir]
# The library lands in output-dir (default: this folder) as libseqcell_mgu.so.
set -eu
here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/../.." && pwd)
out=${1:-$here}
mkdir -p "$out"
${CC:-cc} -std=c99 -pedantic -O2 -fPIC -shared -Wall -Wextra -Werror \
    -I"$repo/Sources/CSeqCell/include" "$here/mgu.c" -o "$out/libseqcell_mgu.so" -lm
echo "$out/libseqcell_mgu.so"
