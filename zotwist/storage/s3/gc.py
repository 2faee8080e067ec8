# -*- test-case-name: tests.test_s3_gc,tests.test_s3_retention -*-
"""
Garbage collection of an S3 store, by the cluster's leader only.

The rules are those of L{zotwist.storage.gc} (zot's C{gc}, C{gcDelay},
C{gcInterval}), per repository:
 - untagged manifests older than C{gcDelay} that no live index lists;
 - untagged referrers older than C{gcDelay} whose subject is not live;
 - blobs no live manifest references, older than C{gcDelay};
with C{storage.retention}, each repository's sweep first applies its
policy exactly as the local collector does (the decision is the shared
L{zotwist.storage.gc.planRepository}): tags its C{keepTags} do not keep
go, judged on the push and pull times every instance records in Redis
(L{zotwist.storage.s3.tagtimes}; a tag without a push time counts as pushed
when its manifest object was last written or used), and C{deleteUntagged},
C{deleteReferrers} and C{retention.delay} replace the defaults above for
untagged manifests and referrers; a dry run changes no index and logs
what would go.  Tags and manifests are removed under the repository's
fenced lock through the index writer every tag DELETE goes through
(L{RepositoryMetadata.writeLocked}: conditional S3 write, change log for
the other instances' caches), each tag only if it still names the manifest
it named when the times were read.  The removed images' blobs then go
like any unreferenced blob, once older than C{gcDelay};
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
from collections import Counter
from datetime import datetime

from twisted.logger import Logger

from zotwist.storage.gc import (
    CollectionResult,
    _dropTag,
    _validDigest,
    collectRound,
    leftAlone,
    logEvents,
    manifestReferences,
    planRepository,
    reachableFrom,
    sweepRules,
)
from zotwist.storage.index import IndexEntries
from zotwist.storage.retention import RepositoryRules

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
    @param retention: C{storage.retention} (a
        L{zotwist.config.RetentionConfig}), or L{None}: applied to each
        repository under its lock, as by the local collector.
    """

    def __init__(self, store, delay: float, lease=None, clock=time.time, retention=None):
        self.store = store
        self.delay = delay
        self.lease = lease
        self.clock = clock
        self.retention = retention
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
        return await collectRound(self, total, started, _log, self._leading)

    def logRemoved(self, name: str, result: CollectionResult) -> None:
        """
        The summary of one repository's sweep that removed something.
        """
        _log.info(
            "GC: {repo}: removed {manifests} manifests, {blobs} blobs ({bytes} bytes)",
            repo=name, manifests=len(result.manifests), blobs=len(result.blobs),
            bytes=result.bytes,
        )

    # -- one repository ------------------------------------------------------------

    async def rulesFor(self, name: str, now: float) -> RepositoryRules:
        """
        L{sweepRules} of one repository, with its push and pull times from
        Redis (L{zotwist.storage.s3.tagtimes}).
        """
        return await sweepRules(self.store, self.retention, name, now, self.delay)

    async def collectRepository(self, name: str) -> CollectionResult:
        store = self.store
        now = self.clock()
        rules = await self.rulesFor(name, now)
        async with store.locks.hold(name) as held:
            result = await self._collectLocked(name, held, now - self.delay, rules)
        logEvents(name, result, rules, _log)
        if rules.times and not rules.dryRun:
            await self._forgetTimes(name, rules)
        return result

    async def _forgetTimes(self, name: str, rules: RepositoryRules) -> None:
        """
        Drop the recorded times of tags and manifests the index no longer
        lists, once they are older than the retention delay (an older push
        cannot be in flight: its lock wait is far shorter), so the hash does
        not grow with every tag ever pushed.
        """
        index = await self.store._index(name)
        listed = set() if index is None else set(index.tags) | set(index.byDigest)
        stale = {
            key: (pushed, pulled)
            for key, (pushed, pulled) in rules.times.items()
            if key not in listed
            and max(t for t in (pushed, pulled, float("-inf")) if t is not None) < rules.cutoff
        }
        if stale:
            await self.store.tagTimes.forget(name, stale)

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

    async def _references(self, name: str, held, entries) -> dict:
        """
        What each manifest the index lists references, and the children of
        those, to the end (L{manifestReferences}; L{None} for bytes that
        cannot be read): read before deciding, so that the decision
        (L{planRepository}) is the local collector's, synchronous.
        """
        references: dict[str, tuple | None] = {}
        pending = [
            d for d in (_validDigest(e.get("digest")) for e in entries.manifests())
            if d is not None
        ]
        while pending:
            digest = pending.pop()
            if digest in references:
                continue
            await held.ensure()  # a repository of many manifests takes a while
            body = await self.store.manifests.body(name, digest)
            refs = references[digest] = None if body is None else manifestReferences(body)
            if refs is not None:
                pending.extend(refs[1])
        return references

    async def _collectLocked(self, name: str, held, cutoff: float,
                             rules: RepositoryRules | None = None) -> CollectionResult:
        store = self.store
        metadata = store.metadata
        if rules is None:
            rules = RepositoryRules(cutoff=cutoff)
        result = CollectionResult()
        entries, _ = await metadata.readForWrite(name)
        ages = await self._ages(name)
        references = await self._references(name, held, entries)

        def ageOf(digest: str):
            age = ages.get(digest)
            return None if age is None else age[1]

        # A dry run decides on a copy; otherwise the entries as read are
        # planned on, and the plan is applied again, checked, through the
        # index writer (the change log readers replay).
        work = IndexEntries.fromManifests(entries.manifests()) if rules.dryRun else entries
        plan = planRepository(work, rules, references.get, ageOf)
        reach = plan.reach
        if rules.dryRun:
            result.dryRun = True
            result.events = plan.events
            reach = reachableFrom(entries, references.get)
        elif plan.changes():
            dropped, dead = plan.dropped, sorted(plan.dead)

            async def remove(entries):
                current = {tag: entry.get("digest") for tag, entry in entries.tags.items()}
                naming = Counter(current.values())
                tags = []
                for tag, digest in dropped.items():
                    if current.get(tag) == digest:  # not moved since it was judged
                        _dropTag(entries, tag, current, naming)
                        tags.append(tag)
                named = set(current.values())
                manifests = [d for d in dead if d not in named and entries.removeDigest(d)]
                return bool(tags or manifests), (tags, manifests)

            ((ok, value),) = await metadata.writeLocked(name, held, [remove])
            if not ok:
                value.raiseException()
            result.tags, result.manifests = value
            removed = set(result.tags) | set(result.manifests)
            result.events = [e for e in plan.events if e[1] in removed]
        if leftAlone(name, reach, result, _log):
            return result
        for digest, (size, age) in sorted(ages.items()):
            if digest in reach.blobs or age >= cutoff:
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
