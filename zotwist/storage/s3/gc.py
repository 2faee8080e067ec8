# -*- test-case-name: tests.test_s3_gc -*-
"""
Garbage collection of an S3 store, by the cluster's leader only.

The rules are those of L{zotwist.storage.gc} (zot's C{gc}, C{gcDelay},
C{gcInterval}), per repository:
 - untagged manifests older than C{gcDelay} that no live index lists;
 - untagged referrers older than C{gcDelay} whose subject is not live;
 - blobs no live manifest references, older than C{gcDelay};
and, once per round, for the whole store:
 - upload sessions (C{upload:<id>} in Redis) not updated for C{gcDelay},
   and multipart uploads under C{.uploads/} started before C{gcDelay} ago
   that no live session uses (aborted: S3 keeps their parts, and bills
   them, until someone does), with other stale C{.uploads/} objects.

A blob's age is the later of its object's C{LastModified} and its last use
noted in C{touched:<repo>} (L{zotwist.storage.s3.store.S3Store._touch}).

Safety while pushes go on, as in the local collector:
 1. Each repository is collected under its fenced lock, the lock every
    C{index.json} change takes; the index is rewritten first (through
    L{RepositoryMetadata.writeLocked}: conditional on its ETag, so a lost
    lock cannot overwrite a newer index), then blobs are deleted, each
    removed from C{blobs:<repo>} before its S3 object is deleted.
 2. A manifest PUT re-checks C{blobs:<repo>} inside its index change,
    under the same lock: it either sees its blobs held and makes them
    referenced before the lock is released, or fails cleanly with
    C{MANIFEST_BLOB_UNKNOWN}.
 3. Just before deleting, the collector looks at C{touched:<repo>} again:
    a blob used since the decision goes back into C{blobs:<repo>}.  After
    deleting, a blob that reappeared in C{blobs:<repo>} (an upload of the
    same digest finished meanwhile) is checked with a HEAD and dropped from
    Redis if its object is gone, so Redis never claims a blob S3 lacks.
Limit: an upload whose copy lands between that HEAD and its own
C{blobs:<repo>} update, in the same few milliseconds as the delete of the
same digest in the same repository, is lost; its client's manifest PUT
then fails with C{MANIFEST_BLOB_UNKNOWN}, and a retry pushes the blob again.

The collector runs a round only while the instance holds the leader lease
(L{zotwist.coordination.lease.LeaderLease}), and checks it again before
each repository.  Schedule it with L{zotwist.storage.gc.GarbageCollectionService}.
"""

import time
from datetime import datetime

from twisted.logger import Logger

from zotwist.storage.gc import CollectionResult, _validDigest, manifestReferences
from zotwist.storage.index import _tagOf

_log = Logger()


def _epoch(value) -> float:
    if isinstance(value, datetime):
        return value.timestamp()
    return float(value)


def _text(value) -> str:
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)


class S3GarbageCollector:
    """
    Collects the repositories of an L{zotwist.storage.s3.store.S3Store}.

    Has the surface L{zotwist.storage.gc.GarbageCollectionService} drives
    (C{collectAll}, C{stopping}, C{onRound}, C{removed}, C{rounds}).

    @param store: the S3 store.
    @param delay: C{gcDelay}, in seconds.
    @param lease: the instance's L{LeaderLease}; L{None} collects
        unconditionally (tests, single instance).
    @param clock: returns the current time as C{time.time} does.
    """

    def __init__(self, store, delay: float, lease=None, clock=time.time):
        self.store = store
        self.delay = delay
        self.lease = lease
        self.clock = clock
        self.stopping = False
        self.removed = CollectionResult()
        self.rounds = 0
        self.onRound = None

    def _leading(self) -> bool:
        return self.lease is None or self.lease.isLeader()

    async def collectAll(self) -> CollectionResult:
        """
        One round over every repository (and the upload area), if this
        instance is the leader; a failure in one repository is logged and
        the others go on.
        """
        total = CollectionResult()
        if not self._leading():
            return total
        started = time.monotonic()
        try:
            total.uploads += await self.collectUploads()
        except Exception:
            _log.failure("GC of stale uploads failed")
        names = await self.store.catalog()
        for name in names:
            if self.stopping or not self._leading():
                break
            try:
                result = await self.collectRepository(name)
            except Exception:
                _log.failure("GC of repository {repo} failed", repo=name)
                continue
            if result.removedAnything():
                _log.info(
                    "GC: {repo}: removed {manifests} manifests, {blobs} blobs ({bytes} bytes)",
                    repo=name, manifests=len(result.manifests), blobs=len(result.blobs),
                    bytes=result.bytes,
                )
            total.add(result)
        self.removed.add(total)
        self.rounds += 1
        if self.onRound is not None:
            self.onRound(total)
        _log.debug(
            "GC of {count} repositories took {seconds:.2f} s",
            count=len(names), seconds=time.monotonic() - started,
        )
        return total

    # -- one repository ------------------------------------------------------------

    async def collectRepository(self, name: str) -> CollectionResult:
        store = self.store
        async with store.locks.hold(name) as held:
            return await self._collectLocked(name, held, self.clock() - self.delay)

    async def _ages(self, name: str) -> dict:
        """
        digest -> (size, age timestamp) of the repository's blob objects.
        """
        store = self.store
        layout = store.layout
        prefix = layout.blobsPrefix(name)
        found = {}
        for info in (await store.objects.list(prefix)).objects:
            parts = info.key[len(prefix):].split("/")
            if len(parts) != 2:
                continue
            digest = _validDigest(f"{parts[0]}:{parts[1]}")
            if digest is not None:
                found[digest] = (info.size, _epoch(info.mtime))
        touched = await store.redis.run(lambda r: r.hgetall(store.redis.key("touched", name)))
        for digest, when in touched.items():
            digest = _text(digest)
            if digest in found:
                size, mtime = found[digest]
                found[digest] = (size, max(mtime, float(when)))
        return found

    async def _collectLocked(self, name: str, held, cutoff: float) -> CollectionResult:
        store = self.store
        metadata = store.metadata
        result = CollectionResult()
        entries, _ = await metadata.readForWrite(name)
        ages = await self._ages(name)
        references: dict[str, tuple | None] = {}

        async def referencesOf(digest: str):
            if digest not in references:
                await held.ensure()  # a repository of many manifests takes a while
                body = await store._manifestBody(name, digest)
                references[digest] = None if body is None else manifestReferences(body)
            return references[digest]

        tagged, untagged = set(), set()
        for entry in entries.manifests():
            digest = _validDigest(entry.get("digest"))
            if digest is None:
                continue
            (tagged if _tagOf(entry) is not None else untagged).add(digest)
        untagged -= tagged
        roots = set(tagged)
        old = set()
        for digest in untagged:
            age = ages.get(digest)
            if age is not None and age[1] < cutoff:
                old.add(digest)
            else:
                roots.add(digest)  # young, or bytes missing: kept
        live: set[str] = set()
        keep: set[str] = set()
        unknown: list[str] = []

        async def mark(digest: str) -> None:
            stack = [digest]
            while stack:
                current = stack.pop()
                if current in live:
                    continue
                live.add(current)
                keep.add(current)
                refs = await referencesOf(current)
                if refs is None:
                    unknown.append(current)
                    continue
                keep.update(refs[0])
                stack.extend(refs[1])

        for digest in roots:
            await mark(digest)
        pending = set(old)
        changed = True
        while changed:
            changed = False
            for digest in list(pending):
                if digest in live:
                    pending.discard(digest)
                    continue
                refs = await referencesOf(digest)
                if refs is not None and refs[2] is not None and refs[2] in live:
                    await mark(digest)
                    pending.discard(digest)
                    changed = True
        dead = sorted(d for d in old if d not in live)
        if dead:

            async def removeDead(entries):
                removed = [d for d in dead if entries.removeDigest(d)]
                return bool(removed), removed

            ((ok, value),) = await metadata.writeLocked(name, held, [removeDead])
            if not ok:
                value.raiseException()
            result.manifests = value
        if unknown:
            result.skipped = "unreadable manifests " + ", ".join(sorted(unknown)[:5])
            _log.warn(
                "GC: {repo}: {why}; its blobs are left alone", repo=name, why=result.skipped
            )
            return result
        for digest, (size, age) in sorted(ages.items()):
            if digest in keep or age >= cutoff:
                continue
            await held.ensure()
            if await self._deleteBlob(name, digest, cutoff):
                result.blobs.append(digest)
                result.bytes += size
        return result

    async def _deleteBlob(self, name: str, digest: str, cutoff: float) -> bool:
        """
        Remove one unreferenced blob: from Redis first, then from S3, with
        the re-checks of the module docstring.  Under the repository lock.

        @return: whether it was deleted.
        """
        store = self.store
        redis = store.redis
        blobsKey = redis.key("blobs", name)
        touchedKey = redis.key("touched", name)
        holdersKey = redis.key("holders", digest)

        def forget(r):
            pipe = r.pipeline(transaction=True)
            pipe.hget(blobsKey, digest)
            pipe.hdel(blobsKey, digest)
            pipe.srem(holdersKey, name)
            pipe.hget(touchedKey, digest)
            size, _, _, touched = pipe.execute()
            if touched is not None and float(touched) >= cutoff:
                # Used since the decision: put it back.
                if size is not None:
                    pipe = r.pipeline(transaction=True)
                    pipe.hset(blobsKey, digest, size)
                    pipe.sadd(holdersKey, name)
                    pipe.execute()
                return False
            r.hdel(touchedKey, digest)
            return True

        if not await redis.run(forget):
            return False
        key = store.layout.blobKey(name, digest)
        await store.objects.delete(key)

        def reappeared(r):
            return r.hexists(blobsKey, digest)

        if await redis.run(reappeared):
            if await store.objects.head(key) is None:
                await redis.run(lambda r: r.hdel(blobsKey, digest))
                await redis.run(lambda r: r.srem(holdersKey, name))
        return True

    # -- uploads ---------------------------------------------------------------------

    async def collectUploads(self) -> int:
        """
        Abort multipart uploads and delete C{.uploads/} objects that no
        session updated within C{gcDelay}; drop stale session records.

        @return: how many uploads were removed.
        """
        store = self.store
        redis = store.redis
        cutoff = self.clock() - self.delay
        prefix = store.layout.rootPrefix() + ".uploads/"
        sessionPrefix = redis.key("upload", "")

        def sessions(r):
            live, stale = {}, []
            for key in r.scan_iter(match=sessionPrefix + "*", count=500):
                fields = r.hmget(key, ["updated", "mpu", "repo"])
                uploadID = _text(key)[len(sessionPrefix):]
                try:
                    updated = float(fields[0]) if fields[0] is not None else 0.0
                except ValueError:
                    updated = 0.0
                if updated >= cutoff:
                    live[uploadID] = _text(fields[1]) if fields[1] is not None else None
                else:
                    repo = _text(fields[2]) if fields[2] is not None else None
                    stale.append((key, uploadID, repo))
            return live, stale

        live, stale = await redis.run(sessions)
        removed = 0
        for key, uploadID, repo in stale:
            # Through S3Blobs, which also aborts the session's multipart
            # upload and drops its other keys; a record it cannot read is
            # deleted here.
            try:
                await store.blobs.cancelUpload(repo, uploadID)
            except Exception:
                await redis.run(lambda r, key=key: r.delete(key))
            removed += 1
        liveMPUs = {mpu for mpu in live.values() if mpu}
        for upload in await store.objects.listMultipart(prefix):
            uploadID = upload.key[len(prefix):].split("/", 1)[0]
            if (
                upload.uploadID in liveMPUs
                or uploadID in live
                or _epoch(upload.initiated) >= cutoff
            ):
                continue
            await store.objects.abortMultipart(upload.key, upload.uploadID)
            removed += 1
        for info in (await store.objects.list(prefix)).objects:
            uploadID = info.key[len(prefix):].split("/", 1)[0]
            if uploadID in live or _epoch(info.mtime) >= cutoff:
                continue
            await store.objects.delete(info.key)
        return removed
