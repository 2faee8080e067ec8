# -*- test-case-name: tests.test_s3_scrub -*-
"""
Scrub of the S3 store: re-hash every blob a repository holds, as the local
scrub does (L{zotwist.storage.scrub}), run once across the cluster by the
instance holding the leader lease.

A blob whose bytes do not hash to its name (or whose object is gone) is
forgotten first (Redis C{blobs:<repo>} and C{holders:<digest>}: HEAD and
GET answer 404 from then on, so a client's re-push repairs it), then its
object is moved aside to C{<repo>/.corrupt/<alg>/<hex>} for inspection.
"""

import hashlib

from twisted.logger import Logger

from zotwist import oci
from zotwist.storage.scrub import Problem, ScrubService

_log = Logger()

#: Bytes read from a blob's GET at a time.
READ_SIZE = 1024 * 1024


def checkBlobBlocking(store, name: str, digest: str, size: int, throttle) -> Problem | None:
    """
    Blocking: stream blob C{digest} of C{name} from S3 and hash it.

    @return: a L{Problem} when it is missing, of another size or does not
        hash to C{digest}; L{None} when it is whole.
    """
    algorithm, _ = oci.parseDigest(digest)
    key = store.blobs.blobKey(name, digest)
    try:
        stream = store.objects.blocking.openStream(key, 0)
    except KeyError:
        return Problem(name, "corrupt-blob", digest, "the object is missing")
    hasher = hashlib.new(algorithm)
    length = 0
    try:
        while True:
            chunk = stream.read(READ_SIZE)
            if not chunk:
                break
            hasher.update(chunk)
            length += len(chunk)
            throttle.consumed(len(chunk))
    finally:
        stream.close()
    actual = f"{algorithm}:{hasher.hexdigest()}"
    if actual != digest or length != size:
        return Problem(
            name, "corrupt-blob", digest,
            f"content hashes to {actual} ({length} bytes, {size} recorded)",
        )
    return None


def quarantineBlocking(store, name: str, digest: str) -> None:
    """
    Blocking: forget C{digest} in C{name} (Redis first, so nothing serves
    it any more), then move its object aside to C{.corrupt/}.
    """
    blobs = store.blobs

    def forget(pipe):
        pipe.hdel(blobs.blobsKey(name), digest)
        pipe.srem(blobs.holdersKey(digest), name)

    r = store.redis.redis
    with r.pipeline(transaction=True) as pipe:
        forget(pipe)
        pipe.execute()
    algorithm, encoded = oci.parseDigest(digest)
    source = blobs.blobKey(name, digest)
    objects = store.objects.blocking
    if objects.head(source) is None:
        return
    objects.copy(source, blobs.repoKey(name, ".corrupt", algorithm, encoded))
    objects.delete(source)


class S3ScrubService(ScrubService):
    """
    L{ScrubService} over an L{zotwist.storage.s3.store.S3Store}: the blobs
    each repository holds (Redis C{blobs:<repo>}), streamed from S3 in
    C{runner} at C{rate} bytes a second.  With C{lease}, a round only runs
    (and goes on from repository to repository) while this instance leads.
    """

    def __init__(self, store, runner, interval: float, lease=None, **kwargs):
        super().__init__(store, runner, interval, **kwargs)
        self.lease = lease

    def _mayGoOn(self) -> bool:
        return super()._mayGoOn() and (self.lease is None or self.lease.isLeader())

    async def _scrubRepository(self, name: str, throttle) -> list[Problem]:
        store = self.store
        sizes = await store.redis.run(lambda r, key=store.blobs.blobsKey(name): r.hgetall(key))
        problems = []
        for digest, size in sorted(sizes.items()):
            digest = digest.decode() if isinstance(digest, bytes) else digest
            problem = await self.runner.run(
                checkBlobBlocking, store, name, digest, int(size), throttle
            )
            if problem is None:
                continue
            _log.error("Scrub: {problem}", problem=str(problem))
            await self.runner.run(quarantineBlocking, store, name, digest)
            problems.append(problem)
        return problems
