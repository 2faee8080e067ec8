# -*- test-case-name: tests.test_s3_store -*-
"""
L{S3Store}: the registry's storage on an S3 bucket, shared by several
instances through Redis.

Same contract and semantics as L{zotwist.storage.local.LocalStore}, same
layout (C{<root>/<repo>/oci-layout}, C{index.json}, C{blobs/<alg>/<hex>}
as object keys).  Blobs and upload sessions are
L{zotwist.storage.s3.blobs.S3Blobs}'s; manifests, tags, the catalog and
referrers are here, with the index machinery of
L{zotwist.storage.s3.metadata}.  Reads are answered from Redis and
in-process caches; S3 is read only for manifest bytes this process has not
seen yet (kept in an LRU by digest: content-addressed bytes never change).

Blob age for the garbage collector: S3 cannot cheaply refresh an object's
modification time the way the local store C{utime}s a file, so a blob a
client uses (HEAD, GET, mount, referenced by a manifest PUT) is noted in
Redis (C{touched:<repo>} digest -> unix time, at most once per
C{touchAfter} per process); the collector counts the later of that and
the object's C{LastModified} as its age.
"""

import time

from twisted.internet.defer import Deferred, ensureDeferred
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import implementer

from zotwist import oci
from zotwist.coordination.lease import LeaderLease
from zotwist.coordination.locks import FencedLocks
from zotwist.manifests import ManifestInfo
from zotwist.storage import manifestlogic
from zotwist.storage.index import RepositoryIndex
from zotwist.storage.interfaces import IRegistryStore
from zotwist.storage.manifestlogic import ManifestCache
from zotwist.storage.s3.metadata import (
    BYTES_MISSING,
    IndexWriteRefused,
    NotReady,
    RepositoryMetadata,
    S3Layout,
)
from zotwist.storage.s3.tagtimes import S3TagTimes

#: Seconds the repository lock lives unless its holder extends it (the
#: holder extends it before each index write and while the collector works):
#: also the longest a killed instance can hold up changes to a repository.
LOCK_TTL = 10.0
#: Seconds a change waits for the repository lock before answering 503.
LOCK_WAIT = 60.0
#: The leader lease's lifetime (renewed every third of it).
LEASE_TTL = 15.0


def _folded(document: dict | None, name: str, default=None):
    """
    A driver parameter, whatever the case of its key (zot's drivers read
    them case-insensitively).
    """
    for key, value in (document or {}).items():
        if key.lower() == name.lower():
            return value
    return default


@implementer(IRegistryStore)
class S3Store:
    """
    L{IRegistryStore} on S3 + Redis.

    @param objects: an L{zotwist.storage.s3.objects.ObjectStore}.
    @param redis: a L{zotwist.coordination.client.RedisClient}.
    @param blobs: an L{zotwist.storage.s3.blobs.S3Blobs} on the same two.
    @param runner: the thread pool of blocking calls (Redis, boto3).
    @param reactor: for timers.
    @param rootdirectory: the driver's C{rootdirectory} in the bucket.
    @param root: the local C{storage.rootDirectory} (zot still requires
        one; health checks look at it).
    @ivar touchAfter: like L{zotwist.storage.local.LocalStore.touchAfter}:
        seconds after which a use of a blob is noted again for the
        collector; L{None} (no collector) notes nothing.
    @ivar tagTimes: the push and pull times of tags and manifests
        (L{S3TagTimes}), for retention.
    @ivar manifests: the L{ManifestCache} of manifest bytes and their
        parsed form in this process.
    """

    _log = Logger()

    def __init__(
        self,
        objects,
        redis,
        blobs,
        runner,
        reactor,
        rootdirectory: str,
        root: str | None = None,
        lockTTL: float = LOCK_TTL,
        lockWait: float = LOCK_WAIT,
        preconditionFailed=None,
    ):
        if preconditionFailed is None:
            from zotwist.storage.s3.objects import PreconditionFailed as preconditionFailed
        self.objects = objects
        self.redis = redis
        self.blobs = blobs
        self._runner = runner
        self._reactor = reactor
        self.layout = S3Layout(rootdirectory)
        self.root = root
        self.locks = FencedLocks(
            redis.redis, runner, redis.key, reactor, ttl=lockTTL, wait=lockWait
        )
        self.metadata = RepositoryMetadata(
            redis, objects, self.locks, self.layout, preconditionFailed
        )
        self.manifests = ManifestCache(self._loadManifest)
        #: Thread pools this store made and starts and stops.
        self._ownedRunners: list = []
        self._touched: dict[tuple, float] = {}
        self._rebuilding = None
        self._readyWaiters: list = []
        self.touchAfter: float | None = None
        self.tagTimes = S3TagTimes(redis, reactor)

    @classmethod
    def fromConfig(cls, storageConfig, runner, reactor, uploadRunner=None) -> "S3Store":
        """
        Build the store from zot's C{storage} section
        (L{zotwist.config.StorageConfig}): C{storageDriver} (C{name: s3},
        C{rootdirectory}, C{region}, C{regionendpoint}, C{bucket},
        C{accesskey}, C{secretkey}, C{secure}, C{skipverify},
        C{forcepathstyle}) and C{cacheDriver} (C{name: redis}, C{url});
        upload sessions live C{gcDelay} plus a day after their last change.

        @param runner: the pool of S3 and Redis calls.
        @param uploadRunner: the pool upload bodies are hashed and sent in
            (the lower-priority C{upload} pool of the service), else
            C{runner}.  The store adds a pool of its own to send parts in
            while the next bytes are hashed, started and stopped with it.
        """
        from zotwist.coordination.client import RedisClient, storePrefix
        from zotwist.storage.s3.blobs import S3Blobs
        from zotwist.storage.s3.objects import ObjectStore, driverFlag
        from zotwist.threads import ThreadPoolRunner

        driver = storageConfig.storageDriver or {}
        cache = storageConfig.cacheDriver or {}
        if _folded(driver, "name") != "s3":
            raise ValueError("S3Store needs storageDriver.name = s3")
        if _folded(cache, "name") != "redis" or not _folded(cache, "url"):
            raise ValueError("S3Store needs cacheDriver.name = redis with a url")
        bucket = _folded(driver, "bucket")
        rootdirectory = _folded(driver, "rootdirectory", "") or ""
        objects = ObjectStore(
            runner,
            _folded(driver, "regionendpoint"),
            bucket,
            _folded(driver, "accesskey"),
            _folded(driver, "secretkey"),
            _folded(driver, "region", "us-east-1") or "us-east-1",
            driverFlag(_folded(driver, "secure"), True),
            driverFlag(_folded(driver, "skipverify"), False),
            driverFlag(_folded(driver, "forcepathstyle"), False),
        )
        redis = RedisClient(_folded(cache, "url"), runner, storePrefix(bucket, rootdirectory))
        partRunner = ThreadPoolRunner(reactor, minThreads=0, maxThreads=16, name="s3-parts")
        blobs = S3Blobs(
            objects,
            redis,
            rootdirectory,
            uploadRunner=uploadRunner,
            sessionTTL=int(storageConfig.gcDelay) + 86400,
            partRunner=partRunner,
            reactor=reactor,
        )
        store = cls(
            objects, redis, blobs, runner, reactor, rootdirectory,
            root=storageConfig.rootDirectory,
        )
        store._ownedRunners.append(partRunner)
        return store

    # -- lifecycle ---------------------------------------------------------------

    async def startService(self) -> None:
        """
        Make sure Redis holds the store's state: rebuild it from the bucket
        when it does not (first start, Redis restarted empty), or wait for
        the instance that does.
        """
        for runner in self._ownedRunners:
            if not runner.running:
                runner.startService()
        self.tagTimes.start()
        await self.ensureReady()

    async def stopService(self) -> None:
        await self.tagTimes.stop()
        self.locks.stop()
        await self.blobs.engine.settled()
        for runner in self._ownedRunners:
            if runner.running:
                runner.stopService()
        try:
            await self.redis.close()
        except Exception:
            self._log.failure("Closing the Redis connections failed")

    def ensureReady(self) -> Deferred:
        """
        @return: a Deferred firing once Redis holds the state; concurrent
            callers share one rebuild (or one wait for another instance's).
        """
        from zotwist.storage.s3.rebuild import ensureReady

        waiting = Deferred()
        self._readyWaiters.append(waiting)
        if self._rebuilding is None:
            self._rebuilding = ensureDeferred(ensureReady(self))
            self._rebuilding.addBoth(self._rebuilt)
        return waiting

    def _rebuilt(self, result) -> None:
        waiters, self._readyWaiters, self._rebuilding = self._readyWaiters, [], None
        for waiting in waiters:
            if isinstance(result, Failure):
                waiting.errback(result)
            else:
                waiting.callback(None)

    def leaderLease(self, ttl: float = LEASE_TTL) -> LeaderLease:
        """
        A L{LeaderLease} on this store's Redis (one per instance): the
        background work (GC) runs on its holder only.
        """
        return LeaderLease(
            self.redis.redis, self._runner, self.redis.key("leader"), self._reactor, ttl=ttl
        )

    # -- repositories ---------------------------------------------------------------

    async def _index(self, name: str) -> RepositoryIndex | None:
        try:
            return await self.metadata.index(name)
        except NotReady:
            await self.ensureReady()
            return await self.metadata.index(name)

    async def _requireIndex(self, name: str) -> RepositoryIndex:
        return manifestlogic.requireRepository(await self._index(name), name)

    async def catalog(self) -> list[str]:
        if not await self.metadata.isReady():
            await self.ensureReady()
        return await self.metadata.catalog()

    async def repositoryExists(self, name: str) -> bool:
        return (await self._index(name)) is not None

    # -- blob age, for the collector ----------------------------------------------------

    async def _touch(self, name: str, digests) -> None:
        """
        Note that clients used C{digests} of C{name} now (throttled).
        """
        touchAfter = self.touchAfter
        if touchAfter is None:
            return
        now = time.time()
        due = [d for d in digests if now - self._touched.get((name, d), 0) > touchAfter]
        if not due:
            return
        if len(self._touched) > 200000:
            self._touched.clear()
        for d in due:
            self._touched[(name, d)] = now
        mapping = {d: int(now) for d in due}
        await self.redis.run(lambda r: r.hset(self.redis.key("touched", name), mapping=mapping))

    # -- blobs and uploads: S3Blobs ---------------------------------------------------

    async def statBlob(self, name: str, digest: str):
        size = await self.blobs.statBlob(name, digest)
        if size is not None:
            await self._touch(name, [digest])
        return size

    async def openBlob(self, name: str, digest: str):
        reader = await self.blobs.openBlob(name, digest)
        await self._touch(name, [digest])
        return reader

    async def deleteBlob(self, name: str, digest: str) -> None:
        await self.blobs.deleteBlob(name, digest)

    async def mountBlob(self, name: str, digest: str, fromName, mayRead=None):
        size = await self.blobs.mountBlob(name, digest, fromName, mayRead)
        if size is not None:
            await self._touch(name, [digest])
        return size

    def startUpload(self, name: str, algorithm: str):
        return self.blobs.startUpload(name, algorithm)

    def uploadStatus(self, name: str, uploadID: str):
        return self.blobs.uploadStatus(name, uploadID)

    def cancelUpload(self, name: str, uploadID: str):
        return self.blobs.cancelUpload(name, uploadID)

    def writerForSession(self, name: str, uploadID: str, start, length):
        return self.blobs.writerForSession(name, uploadID, start, length)

    def writerForMonolithic(self, name: str, algorithm: str, length):
        return self.blobs.writerForMonolithic(name, algorithm, length)

    def completeUpload(self, name: str, uploadID: str, digest: str, writer):
        # S3Blobs records the repository in the catalog with the blob.
        return self.blobs.completeUpload(name, uploadID, digest, writer)

    def commitMonolithic(self, name: str, digest: str, writer):
        return self.blobs.commitMonolithic(name, digest, writer)

    def blobURL(self, name: str, digest: str):
        """
        A presigned URL of the blob (C{redirectBlobURL}).
        """
        return self.blobs.blobURL(name, digest)

    # -- manifests ------------------------------------------------------------------

    async def statManifest(self, name: str, reference: str):
        index = await self._requireIndex(name)

        async def heldSize(digest):
            return (await self.metadata.heldSizes(name, [digest]))[digest]

        return await manifestlogic.statOf(index, reference, heldSize)

    async def getManifest(self, name: str, reference: str):
        index = await self._requireIndex(name)
        body, mediaType, digest = await self.manifests.read(name, index, reference)
        self.tagTimes.pulled(name, manifestlogic.pulledKeys(reference, digest))
        return body, mediaType, digest

    async def _loadManifest(self, name: str, digest: str) -> bytes | None:
        """
        A manifest's bytes for L{ManifestCache}: the copy in Redis (written
        by the instance that stored them), else S3.  Bytes from Redis or S3
        count only when they have the digest.
        """
        body = await self.metadata.cachedManifest(digest)
        if manifestlogic.holdsDigest(body, digest):
            return body
        body = await self.objects.get(self.layout.blobKey(name, digest))
        if manifestlogic.holdsDigest(body, digest):
            await self.metadata.cacheManifest(digest, body)
            return body
        return None

    async def putManifest(self, name: str, body: bytes, contentType, reference: str, tags):
        digest, tags = manifestlogic.pushTarget(body, reference, tags)
        info = await manifestlogic.parsePushed(self._runner, body, contentType, digest)
        allNeeded = manifestlogic.referencedDigests(info)
        known = {}
        if info.children:
            # An index's children may be listed manifests: the index is read
            # (and parsed, when it changed) only for those.
            try:
                index, held = await self.metadata.indexAndSizes(name, allNeeded + [digest])
            except NotReady:
                await self.ensureReady()
                index, held = await self.metadata.indexAndSizes(name, allNeeded + [digest])
            if index is not None:
                known = index.byDigest
        else:
            held = await self.metadata.heldSizes(name, allNeeded + [digest])
            if any(held[d] is None for d in allNeeded) and not await self.metadata.isReady():
                # Redis lost its state: rebuild it before answering 400.
                await self.ensureReady()
                held = await self.metadata.heldSizes(name, allNeeded + [digest])
        needed = manifestlogic.neededDigests(info, known)
        manifestlogic.refuseAbsent([d for d in needed if held[d] is None])
        wrote = held[digest] is None
        if wrote:
            await self.metadata.putBlobBytes(name, digest, body)
        self.manifests.remember(digest, body, info)
        descriptor = manifestlogic.descriptorFor(info, digest, len(body))
        # Applied under the repository lock (by whichever instance holds
        # it), where the garbage collector decides too: what this manifest
        # needs must be held then, and becomes referenced before the lock is
        # released (zotwist.storage.s3.gc).
        job = {
            "kind": "put", "needs": allNeeded, "digest": digest,
            "descriptor": descriptor, "tags": tags,
        }
        # Before the index change: a tag the collector sees has its push
        # time (zotwist.storage.s3.tagtimes).
        await self.tagTimes.pushed(name, [*tags, digest])
        for _ in range(3):
            if await self.metadata.mutate(name, job) != BYTES_MISSING:
                break
            # The manifest's own bytes went (a blob DELETE): store them again.
            await self.metadata.putBlobBytes(name, digest, body)
        else:
            raise IndexWriteRefused(name, "the manifest's bytes keep disappearing")
        # Bytes written just now are as young as a touch would make them.
        await self._touch(name, allNeeded if wrote else allNeeded + [digest])
        return info

    async def deleteManifest(self, name: str, reference: str) -> None:
        manifestlogic.requireDescriptor(await self._requireIndex(name), reference)
        job = {
            "kind": "delete", "reference": reference,
            "byDigest": oci.looksLikeDigest(reference),
        }
        if not await self.metadata.mutate(name, job):
            raise manifestlogic.unknownManifest(reference)

    async def listTags(self, name: str) -> list[str]:
        index = await self._requireIndex(name)
        return sorted(index.tags)

    async def referrers(self, name: str, digest: str) -> list[ManifestInfo]:
        oci.parseDigest(digest)
        index = await self._index(name)
        if index is None:
            return []
        return await self.manifests.referrers(name, index, digest)
