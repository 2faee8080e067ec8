#!/usr/bin/env bash
# Install zotwist on a fresh Debian machine and start it on the default
# config. Run as root from anywhere:  bash conf/install.sh
#
#   - a virtualenv at /opt/zotwist (Debian's system pip is externally
#     managed), built on /usr/bin/python3 (>= 3.11) when it exists;
#   - /etc/zot/config.json from conf/config.json unless one is there;
#   - a system user and group "zot", /var/lib/zot and /var/log/zot;
#   - under systemd: the unit conf/zot.service, enabled and (re)started;
#     otherwise twistd daemonized as user zot with a pidfile and log file.
#
# Re-running it upgrades the installed code and restarts the registry; an
# existing /etc/zot/config.json is never overwritten.
#
# Settings (environment): ZOTWIST_PREFIX (default /opt/zotwist), PYTHON
# (interpreter for the virtualenv), ZOTWIST_WAIT (seconds to wait for the
# registry to answer, default 60).
set -euo pipefail

export DEBIAN_FRONTEND=noninteractive

SRC=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
PREFIX=${ZOTWIST_PREFIX:-/opt/zotwist}
CONFIG_DIR=/etc/zot
CONFIG=$CONFIG_DIR/config.json
STATE_DIR=/var/lib/zot
LOG_DIR=/var/log/zot
LOG_FILE=$LOG_DIR/zot.log
RUN_DIR=/run/zot
PIDFILE=$RUN_DIR/zot.pid
UNIT=/etc/systemd/system/zot.service
SERVICE_USER=zot
WAIT=${ZOTWIST_WAIT:-60}

say() { printf 'install.sh: %s\n' "$*"; }
die() { printf 'install.sh: error: %s\n' "$*" >&2; exit 1; }

[ "$(id -u)" -eq 0 ] || die "run me as root (I create a user, /etc/zot and /var/lib/zot)"
[ -f "$SRC/setup.py" ] || die "$SRC does not look like a zotwist checkout (no setup.py)"

APT_UPDATED=0
aptInstall() {
    # Install the Debian packages given, updating the package lists once.
    if [ "$APT_UPDATED" -eq 0 ]; then
        say "apt-get update"
        apt-get update -q
        APT_UPDATED=1
    fi
    say "apt-get install $*"
    apt-get install -y -q --no-install-recommends "$@"
}

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

# --- 1. Tools: curl (to check the registry), CA certificates (for pip), a C
# compiler (pip builds the multi-buffer SHA-256 kernel; without it zotwist
# falls back to hashlib, slower on concurrent pushes). ---
missing=$(missingPackages ca-certificates curl gcc libc6-dev)
if [ -n "$missing" ]; then
    # shellcheck disable=SC2086
    aptInstall $missing
fi

# --- 2. An interpreter that user zot can run. ---
# A pyenv under /root is not readable by user zot, so prefer Debian's.
if [ -z "${PYTHON:-}" ]; then
    if pythonIsUsable /usr/bin/python3; then
        PYTHON=/usr/bin/python3
    elif command -v python3 >/dev/null && pythonIsUsable "$(command -v python3)"; then
        PYTHON=$(command -v python3)
    else
        aptInstall python3 python3-venv
        PYTHON=/usr/bin/python3
    fi
fi
pythonIsUsable "$PYTHON" || die "$PYTHON is not Python >= 3.11"

# --- 3. The virtualenv. ---
if ! [ -x "$PREFIX/bin/python" ] || ! pythonIsUsable "$PREFIX/bin/python" \
        || ! "$PREFIX/bin/python" -m pip --version >/dev/null 2>&1; then
    rm -rf "$PREFIX"
    say "creating virtualenv $PREFIX with $PYTHON"
    if ! "$PYTHON" -m venv "$PREFIX" 2>/dev/null; then
        # Debian splits ensurepip out into python3-venv (python3.11-venv).
        rm -rf "$PREFIX"
        aptInstall python3-venv
        "$PYTHON" -m venv "$PREFIX"
    fi
fi

# --- 4. The package. Build from a copy so the checkout gets no build/ or
# *.egg-info, and never as an editable install (it hides the twistd plugin).
BUILD=$(mktemp -d)
trap 'rm -rf "$BUILD"' EXIT
tar -C "$SRC" --exclude=./.git --exclude=./.venv --exclude=./build \
    --exclude='./*.egg-info' --exclude='./_trial_temp*' -cf - . | tar -C "$BUILD" -xf -
say "installing zotwist into $PREFIX"
"$PREFIX/bin/python" -m pip install -q --upgrade pip >/dev/null 2>&1 || true
"$PREFIX/bin/python" -m pip install -q "$BUILD"
# Refresh Twisted's plugin cache now, as root: user zot cannot write it later.
(cd / && "$PREFIX/bin/python" -c \
    'from twisted.plugin import IPlugin, getPlugins; list(getPlugins(IPlugin))')
twistdHelp=$(cd / && "$PREFIX/bin/twistd" --help)
grep -qE '^ +zot +' <<<"$twistdHelp" || die "twistd does not list the zot plugin after installing"

# --- 5. User, directories, config. ---
getent group "$SERVICE_USER" >/dev/null || groupadd --system "$SERVICE_USER"
if ! id -u "$SERVICE_USER" >/dev/null 2>&1; then
    useradd --system --gid "$SERVICE_USER" --home-dir "$STATE_DIR" --no-create-home \
        --shell /usr/sbin/nologin --comment "zotwist registry" "$SERVICE_USER"
fi
install -d -m 0755 "$CONFIG_DIR"
install -d -o "$SERVICE_USER" -g "$SERVICE_USER" -m 0750 "$STATE_DIR" "$LOG_DIR"
if [ -e "$CONFIG" ]; then
    say "keeping existing $CONFIG"
else
    install -m 0644 "$SRC/conf/config.json" "$CONFIG"
    say "installed $CONFIG"
fi
"$PREFIX/bin/zot" verify "$CONFIG" || die "$CONFIG does not verify (see above)"
# The storage root may have been changed in the config: let zot own it.
ROOT=$("$PREFIX/bin/python" -c \
    'import json,sys; print(json.load(open(sys.argv[1]))["storage"]["rootDirectory"])' "$CONFIG")
install -d -o "$SERVICE_USER" -g "$SERVICE_USER" -m 0750 "$ROOT"
runuser -u "$SERVICE_USER" -- "$PREFIX/bin/python" -c 'import zotwist.tap' \
    || die "user $SERVICE_USER cannot import zotwist from $PREFIX (interpreter $PYTHON unreadable?)"

# Where to knock: the configured address, or loopback for a wildcard.
read -r ADDRESS PORT < <("$PREFIX/bin/python" -c '
import json, sys
http = json.load(open(sys.argv[1])).get("http", {})
address = http.get("address") or "127.0.0.1"
address = {"0.0.0.0": "127.0.0.1", "::": "::1"}.get(address, address)
print("[%s]" % address if ":" in address else address, http.get("port", "8080"))
' "$CONFIG")
URL="http://$ADDRESS:$PORT/v2/"

# --- 6. Start (or restart) it. ---
if [ -d /run/systemd/system ] && [ "$(cat /proc/1/comm 2>/dev/null)" = systemd ]; then
    sed "s#/opt/zotwist/#$PREFIX/#g" "$SRC/conf/zot.service" > "$UNIT.new"
    mv "$UNIT.new" "$UNIT"
    systemctl daemon-reload
    systemctl enable zot.service >/dev/null 2>&1
    say "systemctl restart zot"
    systemctl restart zot.service
    STOP="systemctl stop zot"
    LOGS="journalctl -u zot"
else
    # No systemd: twistd daemonizes itself, binds as root, then runs as zot.
    install -d -o "$SERVICE_USER" -g "$SERVICE_USER" -m 0755 "$RUN_DIR"
    if [ -s "$PIDFILE" ] && kill -0 "$(cat "$PIDFILE")" 2>/dev/null; then
        old=$(cat "$PIDFILE")
        say "stopping the running registry (pid $old)"
        kill "$old"
        for _ in $(seq 1 100); do
            kill -0 "$old" 2>/dev/null || break
            sleep 0.1
        done
        kill -0 "$old" 2>/dev/null && die "pid $old did not stop; kill it and re-run"
    fi
    rm -f "$PIDFILE"
    touch "$LOG_FILE"
    chown "$SERVICE_USER:$SERVICE_USER" "$LOG_FILE"
    say "starting twistd as user $SERVICE_USER"
    # cd first: twistd puts its working directory on sys.path, and the
    # checkout's zotwist/ must not shadow the installed one.
    (cd "$STATE_DIR" && "$PREFIX/bin/twistd" \
        --pidfile "$PIDFILE" --logfile "$LOG_FILE" --rundir "$STATE_DIR" --umask 0027 \
        --uid "$SERVICE_USER" --gid "$SERVICE_USER" \
        zot --config "$CONFIG")
    STOP="kill \$(cat $PIDFILE)"
    LOGS="tail -f $LOG_FILE"
fi

# --- 7. Wait until it answers. ---
say "waiting for $URL"
for _ in $(seq 1 $((WAIT * 4))); do
    if curl -fsS -o /dev/null "$URL" 2>/dev/null; then
        say "zotwist is up: $(curl -fsS "$URL") from $URL"
        say "config: $CONFIG   storage: $ROOT   logs: $LOGS"
        say "to stop it: $STOP"
        exit 0
    fi
    sleep 0.25
done
if [ -f "$LOG_FILE" ]; then
    tail -n 30 "$LOG_FILE" >&2 || true
fi
die "no answer from $URL after ${WAIT}s (logs: $LOGS)"
