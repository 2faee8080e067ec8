"""
How fast a blob goes into Ceph through the S3 upload path.

    python3 -m tests.benchs3 [SIZE_MIB]

Starts the test Ceph cluster and redis-server (L{tests.clustersupport}),
one registry instance in this process serving the blob endpoints over
L{S3Blobs}, and pushes a SIZE_MIB (default 256) random blob with C{curl}
(a separate process, so the client does not share this process's CPU):
as one POST C{?digest=}, and as a chunked upload of 32 MiB PATCHes.  For
comparison it also times one PutObject of the same bytes straight into the
bucket (what S3 itself takes) and hashing them alone.  Prints MiB/s for
each.  The machine's other load shows in the numbers: compare within a run.
"""

import hashlib
import os
import subprocess
import sys
import tempfile
import time

from twisted.internet import task
from twisted.internet.defer import ensureDeferred

MiB = 1024 * 1024


def _curl(*argv: str) -> tuple[int, str]:
    done = subprocess.run(
        ["curl", "-s", "-o", "/dev/null", "-D", "-", "-w", "%{http_code}", *argv],
        capture_output=True,
        check=True,
    )
    out = done.stdout.decode()
    return int(out[-3:]), out


def _header(raw: str, name: str) -> str:
    for line in raw.splitlines():
        if line.lower().startswith(name.lower() + ":"):
            return line.split(":", 1)[1].strip()
    raise KeyError(name)


async def main(reactor, sizeMiB: int) -> None:
    from tests.clustersupport import cephS3, newBucket, redisServer
    from zotwist.coordination.client import RedisClient, storePrefix
    from zotwist.storage.s3.blobs import S3Blobs
    from zotwist.storage.s3.objects import ObjectStore
    from zotwist.threads import ThreadPoolRunner

    endpoint = cephS3()
    redisURL = redisServer().url
    bucket = newBucket(endpoint)
    runner = ThreadPoolRunner(reactor, name="bench")
    uploadRunner = ThreadPoolRunner(reactor, name="bench-upload")
    partRunner = ThreadPoolRunner(reactor, name="bench-parts")
    runner.startService()
    uploadRunner.startService()
    partRunner.startService()
    objects = ObjectStore(
        runner, endpoint.url, bucket, endpoint.accessKey, endpoint.secretKey,
        secure=False, forcepathstyle=True,
    )
    redis = RedisClient(redisURL, runner, storePrefix(bucket, "zot"))
    blobs = S3Blobs(objects, redis, "zot", uploadRunner=uploadRunner, partRunner=partRunner)

    class Store:
        def __getattr__(self, name):
            return getattr(blobs, name)

    try:
        await _measure(reactor, runner, objects, endpoint, bucket, Store(), sizeMiB)
    finally:
        await redis.close()
        runner.stopService()
        uploadRunner.stopService()
        partRunner.stopService()


async def _measure(reactor, runner, objects, endpoint, bucket, store, sizeMiB: int) -> None:
    """
    Serve C{store} on loopback and time the uploads.
    """
    from zotwist.web.site import RegistrySite

    port = reactor.listenTCP(0, RegistrySite(store), interface="127.0.0.1")
    try:
        await _uploads(runner, objects, f"http://127.0.0.1:{port.getHost().port}", sizeMiB)
    finally:
        await port.stopListening()


async def _uploads(runner, objects, url: str, sizeMiB: int) -> None:
    """
    The timed uploads against the registry at C{url}.
    """
    size = sizeMiB * MiB
    with tempfile.NamedTemporaryFile(prefix="zotwist-bench-") as f:
        data = os.urandom(size)
        f.write(data)
        f.flush()
        digest = "sha256:" + hashlib.sha256(data).hexdigest()

        started = time.monotonic()
        await objects.put("raw", data)
        raw = time.monotonic() - started
        print(f"one PutObject straight into RGW (zotwist's boto3 settings): "
              f"{sizeMiB / raw:.0f} MiB/s ({raw:.2f} s)")
        started = time.monotonic()
        await runner.run(hashlib.sha256, data)
        hashing = time.monotonic() - started
        del data
        print(f"sha256 of the blob alone: {sizeMiB / hashing:.0f} MiB/s ({hashing:.2f} s)")

        started = time.monotonic()
        code, _ = await runner.run(
            _curl, "-X", "POST", "-H", "Content-Type: application/octet-stream",
            "--data-binary", f"@{f.name}", f"{url}/v2/bench/one/blobs/uploads/?digest={digest}",
        )
        single = time.monotonic() - started
        assert code == 201, code
        print(f"single POST ?digest= through zotwist: {sizeMiB / single:.0f} MiB/s "
              f"({single:.2f} s)")

        chunk = 32 * MiB
        started = time.monotonic()
        code, headers = await runner.run(
            _curl, "-X", "POST", f"{url}/v2/bench/chunked/blobs/uploads/"
        )
        assert code == 202, code
        location = _header(headers, "Location")
        pieces = tempfile.mkdtemp(prefix="zotwist-bench-")
        for offset in range(0, size, chunk):
            length = min(chunk, size - offset)
            piece = os.path.join(pieces, "piece")
            with open(f.name, "rb") as source, open(piece, "wb") as out:
                source.seek(offset)
                out.write(source.read(length))
            code, headers = await runner.run(
                _curl, "-X", "PATCH", "-H", "Content-Type: application/octet-stream",
                "-H", f"Content-Range: {offset}-{offset + length - 1}",
                "--data-binary", f"@{piece}", url + location,
            )
            assert code == 202, code
            location = _header(headers, "Location")
            os.unlink(piece)
        os.rmdir(pieces)
        code, _ = await runner.run(
            _curl, "-X", "PUT", url + location + f"?digest={digest}"
        )
        chunked = time.monotonic() - started
        assert code == 201, code
        print(f"chunked upload (32 MiB PATCHes) through zotwist: {sizeMiB / chunked:.0f} MiB/s "
              f"({chunked:.2f} s)")


if __name__ == "__main__":
    sizeMiB = int(sys.argv[1]) if len(sys.argv) > 1 else 256
    task.react(lambda r: ensureDeferred(main(r, sizeMiB)))
