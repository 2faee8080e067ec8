"""
Small-request latency while big pushes run: the p99 of manifest GETs
measured while four 1 GiB blobs are being pushed at once.

    python3 tests/benchlatency.py [--size 1G] [--pushes 4] [--ops 5000]

Starts C{twistd -n zot} from this checkout on a fresh root (as
C{tests/bench.sh} does), runs the shared load generator's C{push-mono}
scenario (C{-n PUSHES -c PUSHES -size SIZE}) and, once the first upload
bytes reach the disk, its C{manifest-get} scenario (C{-c 16}).  Prints both
results and whether the manifest GETs ended before the pushes did (only
then does the p99 count as "during the pushes").  Not a test: it moves
gigabytes.  Needs the load generator built (C{tests/bench.sh} builds it
into C{$BIN}, default C{/tmp/regbench-bin}).
"""

import argparse
import glob
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request

CHECKOUT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def freePort() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def waitReady(url: str, process) -> None:
    while True:
        try:
            with urllib.request.urlopen(url + "/readyz", timeout=1) as r:
                if r.status == 200:
                    return
        except OSError:
            pass
        if process.poll() is not None:
            raise SystemExit("the registry exited before it was ready")
        time.sleep(0.05)


def uploading(root: str) -> bool:
    """
    Whether some upload under C{root} has bytes on disk yet.
    """
    for path in glob.glob(os.path.join(root, "**", ".uploads", "*", "data"), recursive=True):
        try:
            if os.path.getsize(path) > 0:
                return True
        except OSError:
            pass
    return False


def lastJSON(text: str) -> dict:
    lines = [line for line in text.splitlines() if line.startswith("{")]
    if not lines:
        raise SystemExit("the load generator printed no result:\n" + text)
    return json.loads(lines[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size", default="1G")
    parser.add_argument("--pushes", type=int, default=4)
    parser.add_argument("--ops", type=int, default=5000)
    parser.add_argument("--bin", default=os.environ.get("BIN", "/tmp/regbench-bin"))
    args = parser.parse_args()
    regbench = os.path.join(args.bin, "regbench")
    if not os.access(regbench, os.X_OK):
        raise SystemExit(f"no load generator at {regbench}: run tests/bench.sh --quick once")
    base = tempfile.mkdtemp(prefix="zotwist-latency-")
    root = os.path.join(base, "store")
    port = freePort()
    url = f"http://127.0.0.1:{port}"
    config = os.path.join(base, "config.json")
    with open(config, "w") as f:
        json.dump({"distSpecVersion": "1.1.1", "storage": {"rootDirectory": root},
                   "http": {"address": "127.0.0.1", "port": str(port)},
                   "log": {"level": "warn"}}, f)
    env = dict(os.environ, PYTHONPATH=CHECKOUT)
    server = subprocess.Popen(
        [sys.executable, "-c", "from twisted.scripts.twistd import run; run()",
         "-n", "--pidfile=", "zot", "--config", config],
        stdout=open(os.path.join(base, "server.log"), "wb"), stderr=subprocess.STDOUT, env=env,
    )
    try:
        waitReady(url, server)
        # The manifests first (untimed setup of the manifest-get scenario
        # happens inside its own run, so warm it here with a tiny run).
        subprocess.run([regbench, "-url", url, "-scenario", "manifest-get", "-ops", "100",
                        "-c", "4"], check=True, capture_output=True, text=True)
        pushes = subprocess.Popen(
            [regbench, "-url", url, "-scenario", "push-mono", "-n", str(args.pushes),
             "-c", str(args.pushes), "-size", args.size, "-cache-dir", ""],
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        )
        while not uploading(root):
            if pushes.poll() is not None:
                raise SystemExit("the pushes ended before any upload was seen:\n"
                                 + pushes.stdout.read())
            time.sleep(0.05)
        time.sleep(1.0)  # let all four streams get going
        gets = subprocess.run(
            [regbench, "-url", url, "-scenario", "manifest-get", "-ops", str(args.ops),
             "-c", "16"], capture_output=True, text=True, check=True,
        )
        during = pushes.poll() is None
        pushOut, _ = pushes.communicate()
        get = lastJSON(gets.stdout)
        push = lastJSON(pushOut)
        print(f"pushes: {args.pushes} x {args.size}: {push['mb_s']:.0f} MB/s, "
              f"errors {push['errors']}")
        print(f"manifest-get during the pushes: {get['ops_s']:.0f} ops/s, "
              f"p50 {get['p50_ms']:.1f} ms, p99 {get['p99_ms']:.1f} ms, "
              f"max {get['max_ms']:.1f} ms, errors {get['errors']}")
        print("the manifest GETs ended before the pushes: " + ("yes" if during else
              "NO (the p99 is not all under push load; use a larger --size)"))
    finally:
        server.terminate()
        server.wait(30)
        shutil.rmtree(base, ignore_errors=True)


if __name__ == "__main__":
    main()
