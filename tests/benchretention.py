"""
How long one garbage collection sweep with retention takes over many
repositories.

    python3 tests/benchretention.py [COUNT] [--tags N] [--keep K]

writes COUNT (default 1,000) OCI layouts, each with N (default 5) small
tagged images pushed an hour apart (push times in the retention journal),
then times, on one L{LocalStore} with an inline runner (the sweep's own
cost, without thread hand-offs): a sweep without retention, a dry run of a
policy keeping the K (default 2) most recently pushed tags, the real run
(removing N-K tags per repository), a steady-state sweep with nothing
left to remove, and one past C{gcDelay} that deletes the dropped images'
blobs.  Not a test: it writes tens of thousands of files.
"""

import argparse
import hashlib
import json
import os
import shutil
import sys
import tempfile
import time
from urllib.parse import quote

CHECKOUT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, CHECKOUT)

from twisted.internet.defer import ensureDeferred  # noqa: E402

from zotwist.config import parseConfig  # noqa: E402
from zotwist.storage.gc import GarbageCollector  # noqa: E402
from zotwist.storage.local import LocalStore  # noqa: E402
from zotwist.storage.tagtimes import DIRECTORY  # noqa: E402
from zotwist.threads import InlineRunner  # noqa: E402


def _blob(directory: str, data: bytes) -> dict:
    digest = hashlib.sha256(data).hexdigest()
    with open(os.path.join(directory, digest), "wb") as f:
        f.write(data)
    return {"digest": "sha256:" + digest, "size": len(data)}


def makeRepository(root: str, name: str, tags: int, now: float) -> None:
    """
    One layout with C{tags} tagged images, and their push times.
    """
    path = os.path.join(root, *name.split("/"))
    blobs = os.path.join(path, "blobs", "sha256")
    os.makedirs(blobs)
    with open(os.path.join(path, "oci-layout"), "w") as f:
        f.write('{"imageLayoutVersion":"1.0.0"}')
    entries = []
    journal = []
    for number in range(tags):
        config = _blob(blobs, json.dumps({"repo": name, "n": number}).encode())
        layer = _blob(blobs, f"layer {number} of {name}\n".encode() * 20)
        manifest = json.dumps({
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "config": {"mediaType": "application/vnd.oci.image.config.v1+json", **config},
            "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar", **layer}],
        }).encode()
        descriptor = _blob(blobs, manifest)
        tag = f"t{number}"
        entries.append({"mediaType": "application/vnd.oci.image.manifest.v1+json",
                        **descriptor, "annotations": {"org.opencontainers.image.ref.name": tag}})
        journal.append(json.dumps({"k": tag, "push": now - (tags - number) * 3600,
                                   "pull": None}))
    with open(os.path.join(path, "index.json"), "w") as f:
        json.dump({"schemaVersion": 2, "manifests": entries}, f)
    directory = os.path.join(root, DIRECTORY)
    os.makedirs(directory, exist_ok=True)
    with open(os.path.join(directory, quote(name, safe="") + ".journal"), "w") as f:
        f.write("\n".join(journal) + "\n")


def sweep(root: str, retention, now: float) -> tuple[float, object]:
    """
    One sweep of every repository on a freshly started store.
    """
    store = LocalStore(root, InlineRunner())
    ensureDeferred(store.startService())
    collector = GarbageCollector(store, InlineRunner(), 3600.0, clock=lambda: now,
                                 retention=retention)
    started = time.monotonic()
    results = []
    ensureDeferred(collector.collectAll()).addCallback(results.append)
    seconds = time.monotonic() - started
    ensureDeferred(store.stopService())
    return seconds, results[0]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("count", nargs="?", type=int, default=1000)
    parser.add_argument("--tags", type=int, default=5)
    parser.add_argument("--keep", type=int, default=2)
    options = parser.parse_args()
    base = tempfile.mkdtemp(prefix="zotwist-bench-retention-")
    try:
        root = os.path.join(base, "root")
        now = time.time()
        started = time.monotonic()
        for number in range(options.count):
            makeRepository(root, f"team{number % 10}/app{number}", options.tags, now)
        print(f"wrote {options.count} repositories x {options.tags} tags in "
              f"{time.monotonic() - started:.1f} s")

        def policy(dryRun):
            return parseConfig({"storage": {"rootDirectory": root, "retention": {
                "dryRun": dryRun, "policies": [{"repositories": ["**"], "keepTags": [
                    {"mostRecentlyPushedCount": options.keep}]}]}}}).storage.retention

        for label, retention, later in [
            ("GC only, nothing to remove", None, 0),
            ("retention dry run", policy(True), 0),
            ("retention, removing tags", policy(False), 0),
            ("retention, steady state", policy(False), 0),
            ("2 h later: their blobs past gcDelay", policy(False), 7200),
        ]:
            seconds, result = sweep(root, retention, now + later)
            print(f"{label}: {seconds:.2f} s (tags removed: {len(result.tags)}, "
                  f"manifests removed: {len(result.manifests)}, blobs: {len(result.blobs)})")
    finally:
        shutil.rmtree(base, ignore_errors=True)


if __name__ == "__main__":
    main()
