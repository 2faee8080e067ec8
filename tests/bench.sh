#!/usr/bin/env bash
# Side-by-side benchmark: zotwist against Debian's docker-registry (the Go
# reference registry), with the shared load generator in ../shared/bench.
#
#   bash tests/bench.sh              the standard suite, 3 rounds each, A,B,A,B
#   bash tests/bench.sh --quick      a ~2 minute smoke run
#   bash tests/bench.sh --steps pull,head ...   any run.sh option
#
# Installs what it needs (golang-go to build the load generator,
# docker-registry, nginx, curl, gcc and libc6-dev for the SHA-256 kernel)
# when missing, runs zotwist from this checkout
# (twistd with the checkout on PYTHONPATH, so the plugin and code are the
# checkout's), and prints run.sh's table of median ratios zotwist/docker-
# registry. Quote ratios from one run, never a lone absolute figure.
set -euo pipefail
export DEBIAN_FRONTEND=noninteractive

SRC=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
BENCH=${ZOTWIST_BENCH:-$SRC/../shared/bench}
[ -x "$BENCH/run.sh" ] || { echo "bench.sh: no load generator at $BENCH (set ZOTWIST_BENCH)" >&2; exit 2; }

missing=""
for pkg in golang-go docker-registry nginx curl gcc libc6-dev; do
    dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q 'install ok installed' || missing="$missing $pkg"
done
if [ -n "$missing" ]; then
    apt-get update -q </dev/null
    # shellcheck disable=SC2086
    apt-get install -y -q --no-install-recommends $missing </dev/null
fi

PYTHON=${PYTHON:-$(command -v python3)}
"$PYTHON" -c 'import twisted, treq, OpenSSL, ldaptor, bcrypt' 2>/dev/null || {
    echo "bench.sh: $PYTHON lacks zotwist's dependencies; run tests/run.sh first or set PYTHON" >&2
    exit 2
}
# The multi-buffer SHA-256 kernel, built in place (zotwist logs at startup
# whether it hashes with it or with hashlib).
bash "$SRC/zotwist/sha256mb/build.sh" "$PYTHON"
WRAPPER=$(mktemp /tmp/zotwist-twistd.XXXXXX)
trap 'rm -f "$WRAPPER"' EXIT
cat >"$WRAPPER" <<SH
#!/bin/sh
PYTHONPATH="$SRC" exec "$PYTHON" -c 'from twisted.scripts.twistd import run; run()' "\$@"
SH
chmod +x "$WRAPPER"

export BIN=${BIN:-/tmp/regbench-bin}
ZOTWIST_TWISTD="$WRAPPER" "$BENCH/run.sh" --pair zotwist docker-registry "$@"
