"""
How long C{twistd zot} takes to start on a storage root with many
repositories.

    python3 tests/benchstartup.py [COUNT] [--keep DIR]

makes COUNT (default 10,000) minimal valid OCI layouts (C{oci-layout},
C{index.json} with one tagged manifest, its config and one layer under
C{blobs/sha256/}; a third of them nested as C{team<i>/app<j>}), starts the
registry on them as users do (C{twistd -n zot --config FILE}, from this
checkout), and prints the seconds until C{/readyz} answers 200, and the
scan time the registry itself logged.  Not a test: it writes tens of
thousands of files.
"""

import argparse
import hashlib
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


def _blob(directory: str, data: bytes) -> str:
    digest = hashlib.sha256(data).hexdigest()
    with open(os.path.join(directory, digest), "wb") as f:
        f.write(data)
    return "sha256:" + digest


def makeRepository(root: str, name: str) -> None:
    """
    Write one minimal OCI layout with one tagged image.
    """
    directory = os.path.join(root, *name.split("/"))
    blobs = os.path.join(directory, "blobs", "sha256")
    os.makedirs(blobs)
    config = json.dumps({"architecture": "amd64", "os": "linux", "name": name}).encode()
    layer = f"layer of {name}\n".encode()
    manifest = json.dumps({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json",
                   "digest": _blob(blobs, config), "size": len(config)},
        "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar",
                    "digest": _blob(blobs, layer), "size": len(layer)}],
    }).encode()
    index = {
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.index.v1+json",
        "manifests": [{
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "digest": _blob(blobs, manifest), "size": len(manifest),
            "annotations": {"org.opencontainers.image.ref.name": "latest"},
        }],
    }
    with open(os.path.join(directory, "oci-layout"), "w") as f:
        f.write('{"imageLayoutVersion": "1.0.0"}')
    with open(os.path.join(directory, "index.json"), "w") as f:
        json.dump(index, f)


def repositoryNames(count: int) -> list[str]:
    """
    C{count} names, a third of them nested two levels deep.
    """
    return [f"team{i % 97}/app{i}" if i % 3 == 0 else f"repo{i}" for i in range(count)]


def freePort() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("count", type=int, nargs="?", default=10_000)
    parser.add_argument("--keep", help="use (and keep) this directory")
    args = parser.parse_args()
    base = args.keep or tempfile.mkdtemp(prefix="zotwist-startup-")
    root = os.path.join(base, "store")
    try:
        if not os.path.isdir(root):
            started = time.monotonic()
            for name in repositoryNames(args.count):
                makeRepository(root, name)
            print(f"made {args.count} repositories in {time.monotonic() - started:.1f} s")
        port = freePort()
        config = os.path.join(base, "config.json")
        with open(config, "w") as f:
            json.dump({
                "distSpecVersion": "1.1.1",
                "storage": {"rootDirectory": root},
                "http": {"address": "127.0.0.1", "port": str(port)},
                "log": {"level": "info"},
            }, f)
        env = dict(os.environ, PYTHONPATH=CHECKOUT)
        logPath = os.path.join(base, "server.log")
        with open(logPath, "wb") as log:
            started = time.monotonic()
            process = subprocess.Popen(
                [sys.executable, "-c", "from twisted.scripts.twistd import run; run()",
                 "-n", "--pidfile=", "zot", "--config", config],
                stdout=log, stderr=subprocess.STDOUT, env=env,
            )
        try:
            while True:
                try:
                    with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=1) as r:
                        if r.status == 200:
                            break
                except OSError:
                    pass
                if process.poll() is not None:
                    raise SystemExit(f"the registry exited; see {logPath}")
                time.sleep(0.02)
            ready = time.monotonic() - started
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/v2/_catalog") as r:
                listed = len(json.load(r)["repositories"])
        finally:
            process.terminate()
            process.wait(30)
        with open(logPath, errors="replace") as f:
            scans = [line.strip() for line in f if "repositories" in line]
        print(f"{listed} repositories listed; /readyz 200 after {ready:.2f} s from exec")
        for line in scans:
            print("  " + line)
    finally:
        if not args.keep:
            shutil.rmtree(base, ignore_errors=True)


if __name__ == "__main__":
    main()
