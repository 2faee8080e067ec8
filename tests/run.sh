#!/usr/bin/env bash
# Install what the tests need on a Debian machine, then run the whole suite.
#
#   bash tests/run.sh                      everything (what CI runs)
#   bash tests/run.sh tests.test_plugin    just some tests (trial names)
#
# As root it apt-get installs the Debian packages in TEST_PACKAGES (only when
# one is missing: then it also runs apt-get update), creates a virtualenv
# (default /opt/zotwist-test, override with ZOTWIST_TEST_VENV), installs
# '.[test]' into it (again only when setup.py or the plugin file changed;
# ZOTWIST_REINSTALL=1 forces it) and runs trial from the checkout, so the
# code under test is always the checkout's. Needs no stdin; CI=true is fine.
# The exit status is trial's.
set -euo pipefail

export DEBIAN_FRONTEND=noninteractive

# Debian packages the tests use: the real clients and servers we test
# against. Add new ones here (e.g. slapd, redis-server, ceph).
# slapd and ldap-utils: the LDAP tests start their own slapd (own config and
# database in a temporary directory, on 127.0.0.1) and load it with ldapadd.
# ceph-mon ceph-osd radosgw ceph-common and redis-server: the scale-out tests
# (S3 storage, Redis coordination) run against a real single-host Ceph cluster
# (monitor, in-memory OSD, RADOS Gateway as the S3 endpoint) and a real
# redis-server, both started by tests/clustersupport.py on 127.0.0.1.
# haproxy: the cluster tests put three zotwist instances behind a round-robin
# balancer (tests/lbsupport.py).
# gcc and libc6-dev: the multi-buffer SHA-256 kernel (zotwist/sha256mb) is
# built in place before the tests, which require it.
TEST_PACKAGES="gcc libc6-dev ca-certificates skopeo umoci slapd ldap-utils ceph-mon ceph-osd radosgw ceph-common redis-server haproxy"

SRC=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
VENV=${ZOTWIST_TEST_VENV:-/opt/zotwist-test}
JOBS=${ZOTWIST_TEST_JOBS:-2}

say() { printf 'run.sh: %s\n' "$*"; }
die() { printf 'run.sh: error: %s\n' "$*" >&2; exit 1; }

missingPackages() {
    # Print those of the given Debian packages that are not installed.
    local pkg
    for pkg in "$@"; do
        dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q 'install ok installed' \
            || printf '%s ' "$pkg"
    done
}

pythonIsUsable() {
    # True when "$1" runs and is Python 3.11 or newer.
    "$1" -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null
}

# --- 1. Debian packages. ---
# shellcheck disable=SC2086
missing=$(missingPackages $TEST_PACKAGES)
if [ -n "$missing" ]; then
    [ "$(id -u)" -eq 0 ] || die "missing Debian packages: $missing(run me as root to install them)"
    say "installing $missing"
    # Install slapd without a directory of its own and without starting the
    # system's slapd: the tests never use it.
    echo "slapd slapd/no_configuration boolean true" | debconf-set-selections
    apt-get update -q </dev/null
    # shellcheck disable=SC2086
    apt-get install -y -q --no-install-recommends $missing </dev/null
fi

# --- 2. The virtualenv. ---
if [ -z "${PYTHON:-}" ]; then
    if command -v python3 >/dev/null && pythonIsUsable "$(command -v python3)"; then
        PYTHON=$(command -v python3)
    elif pythonIsUsable /usr/bin/python3; then
        PYTHON=/usr/bin/python3
    else
        [ "$(id -u)" -eq 0 ] || die "no Python >= 3.11 (run me as root to install one)"
        apt-get update -q </dev/null
        apt-get install -y -q --no-install-recommends python3 python3-venv </dev/null
        PYTHON=/usr/bin/python3
    fi
fi
if ! [ -x "$VENV/bin/python" ] || ! pythonIsUsable "$VENV/bin/python" \
        || ! "$VENV/bin/python" -m pip --version >/dev/null 2>&1; then
    rm -rf "$VENV"
    say "creating virtualenv $VENV with $PYTHON"
    if ! "$PYTHON" -m venv "$VENV" 2>/dev/null; then
        # Debian splits ensurepip out into python3-venv.
        rm -rf "$VENV"
        [ "$(id -u)" -eq 0 ] || die "$PYTHON -m venv failed (python3-venv missing?)"
        apt-get update -q </dev/null
        apt-get install -y -q --no-install-recommends python3-venv </dev/null
        "$PYTHON" -m venv "$VENV"
    fi
fi

# --- 3. The package and its test dependencies. ---
# Reinstall only when what decides the dependencies or the plugin changed:
# the tests import zotwist from the checkout, not from the virtualenv.
STAMP_FILE="$VENV/.zotwist-test-stamp"
stamp=$(cat "$SRC/setup.py" "$SRC/twisted/plugins/zot_plugin.py" | sha256sum | cut -d' ' -f1)
if [ "${ZOTWIST_REINSTALL:-0}" != 0 ] || [ "$(cat "$STAMP_FILE" 2>/dev/null)" != "$stamp" ]; then
    # Build from a copy: no build/ or *.egg-info in the checkout, and never
    # an editable install (it hides the twistd plugin).
    BUILD=$(mktemp -d)
    trap 'rm -rf "$BUILD"' EXIT
    tar -C "$SRC" --exclude=./.git --exclude=./.venv --exclude=./build \
        --exclude='./*.egg-info' --exclude='./_trial_temp*' -cf - . | tar -C "$BUILD" -xf -
    say "installing zotwist[test] into $VENV"
    "$VENV/bin/python" -m pip install -q "$BUILD[test]" </dev/null
    # Refresh Twisted's plugin cache (twisted/plugins/dropin.cache).
    (cd / && "$VENV/bin/python" -c \
        'from twisted.plugin import IPlugin, getPlugins; list(getPlugins(IPlugin))')
    printf '%s\n' "$stamp" >"$STAMP_FILE"
fi

# --- 4. The multi-buffer SHA-256 kernel, built in place: the tests import
# zotwist from the checkout, and tests.test_sha256mb fails without it. ---
bash "$SRC/zotwist/sha256mb/build.sh" "$VENV/bin/python"

# --- 5. The tests. ---
cd "$SRC"
LOG=$(mktemp)
jobsArg=()
if [ "$JOBS" -gt 1 ]; then
    jobsArg=("-j$JOBS")
fi
say "python -m twisted.trial ${jobsArg[*]} ${*:-tests}"
set +e
"$VENV/bin/python" -m twisted.trial "${jobsArg[@]}" "${@:-tests}" </dev/null 2>&1 | tee "$LOG"
status=${PIPESTATUS[0]}
set -e

# One plain closing line, e.g. "trial: 40 passed, 0 failed, 1 skipped", from
# trial's own "PASSED (successes=40, skips=1)" / "FAILED (...)" summary.
summary=$(grep -E '^(PASSED|FAILED) \(' "$LOG" | tail -n 1 || true)
ran=$(grep -E '^Ran [0-9]+ tests? in' "$LOG" | tail -n 1 | awk '{print $2}' || true)
rm -f "$LOG"
count() {
    grep -oE "$1=[0-9]+" <<<"$summary" | cut -d= -f2 | head -n 1 | grep . || echo 0
}
passed=$(($(count successes) + $(count expectedFailures)))
failed=$(($(count failures) + $(count errors) + $(count unexpectedSuccesses)))
skipped=$(count skips)
echo "trial: $passed passed, $failed failed, $skipped skipped"
if [ "$status" -eq 0 ] && [ "${ran:-0}" -eq 0 ]; then
    die "trial ran no test"
fi
exit "$status"
