#!/usr/bin/env bash
# Build the multi-buffer SHA-256 kernel in place, next to its source, for
# running zotwist from the checkout (tests/run.sh, tests/bench.sh); an
# installed zotwist gets it from setup.py instead, with the same flags.
#
#   bash zotwist/sha256mb/build.sh [PYTHON]
#
# Rebuilds only when the library is missing or older than its sources.
# Needs a C compiler (Debian: gcc and libc6-dev).
set -euo pipefail
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
PYTHON=${1:-${PYTHON:-python3}}
SUFFIX=$("$PYTHON" -c 'import sysconfig; print(sysconfig.get_config_var("EXT_SUFFIX"))')
OUT="$HERE/_sha256mb$SUFFIX"
if [ ! -e "$OUT" ] || [ "$HERE/_sha256mb.c" -nt "$OUT" ] || [ "$HERE/_sha256mb_kernel.h" -nt "$OUT" ]; then
    echo "build.sh: building $OUT"
    ${CC:-cc} -O3 -fPIC -shared -Wall -o "$OUT.tmp" "$HERE/_sha256mb.c"
    mv "$OUT.tmp" "$OUT"
fi
