# -*- test-case-name: tests.test_s3_store -*-
"""
Repository metadata of the S3 store: C{index.json} in the bucket, its
current copy in Redis, and how instances change it without losing each
other's tags.

The bucket is the truth: C{<root>/<repo>/index.json} is an ordinary OCI
layout index (tags are C{org.opencontainers.image.ref.name} annotations),
so the repository can be copied out with any S3 tool and read by
C{skopeo}.  Redis holds what readers need without an S3 round trip:
C{index:<repo>} (the bytes last written), C{indexetag:<repo>} (the S3 ETag
of those bytes), C{indexver:<repo>} (a counter bumped on every change) and
the catalog C{repos}.  Each instance keeps the parsed index per repository
keyed by C{indexver}, so a tag lookup is one small Redis script call and
no JSON parse while nothing changes.

A change (tag, untag, add, remove) is a read-modify-write:
 1. take the repository's fenced lock (L{zotwist.coordination.locks});
 2. read the current index from Redis (else from S3) with its ETag;
 3. apply the queued changes (every change that arrived while the last
    write was in flight: one write for many concurrent pushes);
 4. PUT C{index.json} conditionally: C{If-Match: <etag>} (unquoted:
    Ceph Pacific refuses the quoted form), or C{If-None-Match: *} for a
    repository's first index.  S3 accepts only a write based on the
    current version, so even a holder whose lock expired while it was
    paused cannot overwrite a newer index: it gets 412 and its request
    fails cleanly (L{IndexWriteRefused}).  A current holder that gets 412
    (a paused ex-holder slipped a write in first) re-reads S3 and retries;
 5. record the new bytes, ETag and version in Redis with a script that
    accepts the update from the lock holder, or from anyone whose base
    ETag is still the one Redis has (a writer whose lock ran out between
    its S3 write and this step: its S3 write was based on the newest
    version, so recording it is right).

The S3 PUT is the moment a change happens: once it succeeded, every later
write is based on it (S3 refuses the others), so the change is never lost
even if this instance dies before updating Redis; the next writer's 412
re-reads S3, and a rebuild (L{zotwist.storage.s3.rebuild}) reads S3 too.
"""

import hashlib
import json
import time

from twisted.internet.defer import Deferred
from twisted.logger import Logger
from twisted.python.failure import Failure

from zotwist import oci
from zotwist.coordination.locks import LockLost, LockTimeout
from zotwist.errors import RegistryError
from zotwist.storage.index import IndexEntries, RepositoryIndex

LAYOUT = b'{"imageLayoutVersion": "1.0.0"}'

#: KEYS: indexver, index, repos, ready; ARGV: cached version ('' for none),
#: repository name.  Answers {status, version, bytes}: 0 unknown
#: repository, 1 known but no index yet (blobs only), 2 unchanged since the
#: cached version, 3 changed (with the bytes), -1 Redis is not ready (empty
#: after a restart: the state must be rebuilt).
_READ = """
if redis.call('EXISTS', KEYS[4]) == 0 then
    return {-1, '', ''}
end
local v = redis.call('GET', KEYS[1])
if not v then
    if redis.call('SISMEMBER', KEYS[3], ARGV[2]) == 1 then
        return {1, '', ''}
    end
    return {0, '', ''}
end
if v == ARGV[1] then
    return {2, v, ''}
end
return {3, v, redis.call('GET', KEYS[2]) or ''}
"""

#: KEYS: lock, index, indexetag, indexver, repos, indexlog; ARGV: lock
#: token, base ETag ('' when the index was created), new bytes, new ETag,
#: repository, a first version (see L{firstVersion}), the changes as JSON
#: (see L{_Recorder}), how many changes the log keeps, its expiry in ms.
#: Answers the new version, or 0 when refused (neither the lock holder nor
#: based on what Redis has).
_RECORD = """
if redis.call('GET', KEYS[1]) ~= ARGV[1] then
    local current = redis.call('GET', KEYS[3])
    if ARGV[2] == '' then
        if current then return 0 end
    elseif current ~= ARGV[2] then
        return 0
    end
end
redis.call('SET', KEYS[2], ARGV[3])
redis.call('SET', KEYS[3], ARGV[4])
redis.call('SADD', KEYS[5], ARGV[5])
local version
if redis.call('EXISTS', KEYS[4]) == 0 then
    redis.call('SET', KEYS[4], ARGV[6])
    redis.call('DEL', KEYS[6])
    version = tonumber(ARGV[6])
else
    version = redis.call('INCR', KEYS[4])
end
redis.call('RPUSH', KEYS[6], string.format('%d', version) .. ' ' .. ARGV[7])
redis.call('LTRIM', KEYS[6], -tonumber(ARGV[8]), -1)
redis.call('PEXPIRE', KEYS[6], ARGV[9])
return version
"""

#: KEYS: index, indexetag, indexver, indexlog; ARGV: the version and ETag
#: the writer holds parsed ('' for none), the log's length.  What a writer needs to bring its
#: parsed index up to date, cheapest first: {etag, version, 0} when it is
#: current, {etag, version, 1, changes...} when the log holds every change
#: since (oldest first), else {etag, version, 2, bytes}; {'', '', 2, ''}
#: when Redis has no index.
_SINCE = """
local etag = redis.call('GET', KEYS[2])
local version = redis.call('GET', KEYS[3])
if not etag or not version then
    return {'', '', 2, ARGV[1], ''}
end
if ARGV[1] ~= '' then
    if version == ARGV[1] and etag == ARGV[2] then
        return {etag, version, 0, ARGV[1]}
    end
    local since = tonumber(ARGV[1])
    local missing = tonumber(version) - since
    if missing > 0 and missing <= tonumber(ARGV[3]) then
        local log = redis.call('LRANGE', KEYS[4], -missing, -1)
        if #log == missing and tonumber(string.match(log[1], '^%d+')) == since + 1 then
            local answer = {etag, version, 1, ARGV[1]}
            for i = 1, #log do
                answer[#answer + 1] = log[i]
            end
            return answer
        end
    end
end
return {etag, version, 2, ARGV[1], redis.call('GET', KEYS[1]) or ''}
"""

#: How many changes (batches) of a repository's index the log in Redis
#: keeps, and for how long after the last.
_LOG_LENGTH = 64
_LOG_EXPIRY_MS = 3600 * 1000

#: Seconds after a release that found the lock wanted during which this
#: instance's next batch lets the waiters go first.
_YIELD_WINDOW = 0.05

#: How many times a lock holder re-reads S3 and retries after a 412.
_WRITE_ATTEMPTS = 4


class IndexWriteRefused(RegistryError):
    """
    The index could not be changed safely (the repository lock was lost or
    not obtained, or S3 refused the conditional write): nothing was
    written.  A 503 the client may retry.
    """

    def __init__(self, name: str, why: str):
        super().__init__(
            "UNKNOWN",
            message=f"repository {name} is being changed concurrently; retry ({why})",
            status=503,
            headers={"Retry-After": "1"},
        )
        self.why = why


class NotReady(Exception):
    """
    Redis holds no state for this store (first start, or restarted empty):
    it must be rebuilt from the bucket before it can answer.
    """


def firstVersion() -> int:
    """
    The C{indexver} a repository starts from when Redis has none: the time
    in microseconds.  Instances cache parsed indexes by version and trust
    an equal version to mean equal content, so a version must never come
    back with other content, even after Redis lost everything and counts
    again: starting from the clock, the new versions are larger than any
    counted before.
    """
    return int(time.time() * 1_000_000)


def etagOf(data: bytes) -> str:
    """
    The ETag S3 gives a single-part, unencrypted PUT of C{data}: its MD5.
    """
    return hashlib.md5(data).hexdigest()


class _Recorder:
    """
    The L{IndexEntries} a batch of changes is applied to, noting each
    change (C{tag}, C{add}, C{untag}, C{removeDigest} with their
    arguments): the batch's entry in the index's change log in Redis, so
    that another instance holding an older parse of the index replays a
    few changes instead of parsing the whole index again
    (L{RepositoryMetadata.readForWrite}).  Reads pass through.
    """

    def __init__(self, entries: IndexEntries):
        self.entries = entries
        self.changes: list = []

    def tag(self, tag: str, descriptor: dict) -> None:
        self.changes.append(["tag", tag, descriptor])
        return self.entries.tag(tag, descriptor)

    def add(self, descriptor: dict) -> bool:
        self.changes.append(["add", descriptor])
        return self.entries.add(descriptor)

    def untag(self, tag: str) -> bool:
        self.changes.append(["untag", tag])
        return self.entries.untag(tag)

    def removeDigest(self, digest: str) -> bool:
        self.changes.append(["removeDigest", digest])
        return self.entries.removeDigest(digest)

    def __getattr__(self, name):
        return getattr(self.entries, name)


def replay(entries: IndexEntries, changes: list) -> None:
    """
    Apply the changes a L{_Recorder} noted to C{entries}.

    @raise ValueError: an unknown or malformed change.
    """
    for change in changes:
        if not isinstance(change, list) or not change:
            raise ValueError(f"malformed index change {change!r}")
        kind, args = change[0], change[1:]
        if kind == "tag" and len(args) == 2:
            entries.tag(args[0], args[1])
        elif kind == "add" and len(args) == 1:
            entries.add(args[0])
        elif kind == "untag" and len(args) == 1:
            entries.untag(args[0])
        elif kind == "removeDigest" and len(args) == 1:
            entries.removeDigest(args[0])
        else:
            raise ValueError(f"unknown index change {change!r}")


def _manifestsOf(data: bytes | None) -> list:
    """
    The entries of C{index.json} bytes, leniently (unreadable -> none).
    """
    if data:
        try:
            document = json.loads(data)
            found = document.get("manifests") if isinstance(document, dict) else None
            if isinstance(found, list):
                return [m for m in found if isinstance(m, dict)]
        except (ValueError, UnicodeDecodeError, RecursionError):
            pass
    return []


def parseIndex(data: bytes | None, signature: tuple) -> RepositoryIndex:
    """
    Parse C{index.json} bytes leniently (unreadable -> empty), for readers.
    """
    return RepositoryIndex.fromManifests(signature, _manifestsOf(data))


def parseEntries(data: bytes | None) -> IndexEntries:
    """
    Parse C{index.json} bytes leniently (unreadable -> empty), for a writer.
    """
    return IndexEntries.fromManifests(_manifestsOf(data))


class S3Layout:
    """
    Object keys of the OCI layouts under the store's root directory.

    @param rootdirectory: the driver's C{rootdirectory} (leading and
        trailing slashes do not matter; empty for the bucket's top).
    """

    def __init__(self, rootdirectory: str):
        self.root = (rootdirectory or "").strip("/")

    def repositoryPrefix(self, name: str) -> str:
        return f"{self.root}/{name}/" if self.root else f"{name}/"

    def indexKey(self, name: str) -> str:
        return self.repositoryPrefix(name) + "index.json"

    def layoutKey(self, name: str) -> str:
        return self.repositoryPrefix(name) + "oci-layout"

    def blobKey(self, name: str, digest: str) -> str:
        algorithm, encoded = oci.parseDigest(digest)
        return f"{self.repositoryPrefix(name)}blobs/{algorithm}/{encoded}"

    def blobsPrefix(self, name: str) -> str:
        return self.repositoryPrefix(name) + "blobs/"

    def rootPrefix(self) -> str:
        return f"{self.root}/" if self.root else ""


def _text(value) -> str:
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    return "" if value is None else str(value)


class RepositoryMetadata:
    """
    Reads and changes of repositories' indexes, shared by all instances.

    @param redis: a L{zotwist.coordination.client.RedisClient}.
    @param objects: the store's L{zotwist.storage.s3.objects.ObjectStore}.
    @param locks: the L{zotwist.coordination.locks.FencedLocks} of the
        repositories.
    @param layout: the L{S3Layout}.
    @param preconditionFailed: the exception class C{objects.put} raises on
        HTTP 412.
    """

    _log = Logger()

    def __init__(self, redis, objects, locks, layout: S3Layout, preconditionFailed):
        self.redis = redis
        self.objects = objects
        self.locks = locks
        self.layout = layout
        self._preconditionFailed = preconditionFailed
        #: name -> (version, RepositoryIndex) as last seen.
        self._cache: dict[str, tuple[str, RepositoryIndex]] = {}
        #: name -> (etag, version, IndexEntries): the writer's parsed
        #: entries, reused by the next change as they are while nobody else
        #: wrote, else brought up to date from the change log.
        self._writerEntries: dict[str, tuple[str, str, IndexEntries]] = {}
        #: name -> the version of the entries L{readForWrite} last answered.
        self._versions: dict[str, str] = {}
        self._queues: dict[str, list] = {}
        self._writing: set[str] = set()
        #: name -> until when a new batch lets waiting instances go first
        #: (the last release found the lock wanted by others).
        self._yieldNext: dict[str, float] = {}
        #: Repositories whose C{oci-layout} this process wrote.
        self._layouts: set[str] = set()

    # -- keys ------------------------------------------------------------------

    def key(self, *parts: str) -> str:
        return self.redis.key(*parts)

    # -- reading ------------------------------------------------------------------

    async def index(self, name: str) -> RepositoryIndex | None:
        """
        The repository's current index (empty for a repository holding only
        blobs), or L{None} for an unknown repository.  One Redis round trip;
        parsed again only when the version moved.

        @raise NotReady: Redis is empty and must be rebuilt first.
        """
        return (await self.indexAndSizes(name, []))[0]

    async def indexAndSizes(self, name: str, digests: list[str]):
        """
        L{index} and L{heldSizes} in one Redis round trip.

        @return: C{(index or None, {digest: size or None})}.
        @raise NotReady: Redis is empty and must be rebuilt first.
        """
        cached = self._cache.get(name)
        keys = [
            self.key("indexver", name),
            self.key("index", name),
            self.key("repos"),
            self.key("ready"),
        ]
        digests = list(dict.fromkeys(digests))
        blobsKey = self.key("blobs", name)

        def read(r):
            pipe = r.pipeline(transaction=False)
            pipe.eval(_READ, len(keys), *keys, cached[0] if cached else "", name)
            if digests:
                pipe.hmget(blobsKey, digests)
            return pipe.execute()

        answers = await self.redis.run(read)
        status, version, data = answers[0]
        sizes = {}
        if digests:
            sizes = {d: (int(v) if v is not None else None) for d, v in zip(digests, answers[1])}
        status = int(status)
        if status == -1:
            raise NotReady()
        if status == 0:
            self._cache.pop(name, None)
            return None, sizes
        if status == 1:
            return RepositoryIndex.fromManifests(("",), []), sizes
        if status == 2:
            return cached[1], sizes
        version = _text(version)
        index = parseIndex(data, (version,))
        # What Redis says now replaces the cache, newer or not: a version
        # stands for one content, so an older one costs a parse, no more.
        self._cache[name] = (version, index)
        return index, sizes

    async def catalog(self) -> list[str]:
        names = await self.redis.run(lambda r: r.smembers(self.key("repos")))
        return sorted(_text(n) for n in names)

    async def isReady(self) -> bool:
        return bool(await self.redis.run(lambda r: r.exists(self.key("ready"))))

    # -- blobs the repository holds (Redis `blobs:<repo>`) ---------------------------

    async def heldSizes(self, name: str, digests: list[str]) -> dict:
        """
        @return: digest -> size (or L{None}) from C{blobs:<repo>}, one HMGET.
        """
        if not digests:
            return {}
        digests = list(dict.fromkeys(digests))
        values = await self.redis.run(lambda r: r.hmget(self.key("blobs", name), digests))
        return {d: (int(v) if v is not None else None) for d, v in zip(digests, values)}

    async def recordBlob(self, name: str, digest: str, size: int) -> None:
        """
        Note that C{name} holds C{digest} (after its S3 object exists).
        """

        def record(r):
            pipe = r.pipeline(transaction=True)
            pipe.hset(self.key("blobs", name), digest, size)
            pipe.sadd(self.key("holders", digest), name)
            pipe.execute()

        await self.redis.run(record)

    async def putBlobBytes(self, name: str, digest: str, data: bytes) -> None:
        """
        Store small bytes (a manifest) as a blob of the layout and record it.
        """
        await self.objects.put(self.layout.blobKey(name, digest), data)
        await self.recordBlob(name, digest, len(data))

    # -- changing ------------------------------------------------------------------

    async def mutate(self, name: str, change, needs=None):
        """
        Apply C{change} to the repository's index, under its lock, and
        write the result.

        C{change} is a coroutine function answering C{(changed, result)}:
        called as C{change(entries)} with the L{IndexEntries}, or, when
        C{needs} (digests) is given, as C{change(entries, sizes)} with
        C{sizes} mapping each of C{needs} to its size in C{blobs:<repo>} (or
        L{None}), read in the same Redis transaction that took the lock.

        Changes that arrive while a write is in flight are applied together
        by the next one, in order (one lock hold, one S3 write for all).

        @return: C{result}, or raise what C{change} raised.
        @raise IndexWriteRefused: the change could not be written safely.
        """
        waiting = Deferred()
        self._queues.setdefault(name, []).append((change, needs, waiting))
        if name not in self._writing:
            self._writing.add(name)
            self._writeQueued(name)
        return await waiting

    def _writeQueued(self, name: str) -> None:
        from twisted.internet.defer import ensureDeferred

        batch = self._queues.pop(name, None)
        if not batch:
            self._writing.discard(name)
            return
        changes = [(change, needs) for change, needs, _ in batch]
        d = ensureDeferred(self._writeBatch(name, changes))

        def written(outcomes):
            for (_, _, waiting), (ok, value) in zip(batch, outcomes):
                if ok:
                    waiting.callback(value)
                else:
                    waiting.errback(value)

        def failed(failure):
            for _, _, waiting in batch:
                waiting.errback(failure)

        d.addCallbacks(written, failed)
        d.addBoth(lambda _: self._writeQueued(name))

    async def _writeBatch(self, name: str, changes) -> list:
        """
        One lock hold for a batch of queued changes: two Redis round trips
        around the S3 write.  The lock is taken in a transaction that also
        reads the index, its ETag and the sizes the changes need; the new
        index is recorded in the transaction that releases it.
        """
        needs = list(dict.fromkeys(d for _, n in changes if n for d in n))
        blobsKey = self.key("blobs", name)
        since = self._sinceCommand(name, self._writerEntries.get(name))

        def reads(pipe):
            since(pipe)
            if needs:
                pipe.hmget(blobsKey, needs)

        try:
            held = await self.locks.acquire(
                name, after=reads, yieldFirst=self._yieldNext.pop(name, 0.0) > time.monotonic()
            )
        except LockTimeout as e:
            raise IndexWriteRefused(name, str(e))
        sizes = {}
        if needs:
            sizes = {
                d: (int(v) if v is not None else None) for d, v in zip(needs, held.results[1])
            }
        prefetched = (held.results[0], sizes)
        try:
            outcomes, pending = await self._apply(name, held, changes, prefetched)
        except BaseException:
            try:
                await held.release()
            except Exception:
                self._log.failure("Releasing the lock of {name} failed", name=name)
            raise
        record = None if pending is None else self._recordCommand(name, held, pending)
        try:
            await held.release(before=record)
        except Exception:
            if pending is not None:
                # The S3 write happened, the change stands (the next writer
                # reads S3 after its 412); only Redis lags.
                self._log.failure("Recording the index of {name} failed", name=name)
            else:
                self._log.failure("Releasing the lock of {name} failed", name=name)
            return outcomes
        if held.wanted:
            # Someone waited meanwhile: if more changes are queued right
            # away, let the waiter go first.
            self._yieldNext[name] = time.monotonic() + _YIELD_WINDOW
        if pending is not None:
            self._recorded(name, pending, held.results[0])
        return outcomes

    def _sinceCommand(self, name: str, kept):
        """
        @param kept: what this process holds parsed of C{name}'s index
            (see L{_writerEntries}), or L{None}.
        @return: a function queueing the L{_SINCE} script for it on a
            redis-py pipeline.
        """
        keys = [
            self.key("index", name),
            self.key("indexetag", name),
            self.key("indexver", name),
            self.key("indexlog", name),
        ]
        version, etag = (kept[1], kept[0]) if kept is not None else ("", "")
        return lambda pipe: pipe.eval(_SINCE, len(keys), *keys, version, etag, _LOG_LENGTH)

    async def readForWrite(self, name: str, fromS3: bool = False, prefetched=None):
        """
        The index a writer starts from: what Redis has (by the cheapest of
        the L{_SINCE} answers: the entries parsed last time, those brought
        up to date by replaying the log, or a parse of the bytes), else
        what S3 has.

        @param prefetched: L{None}, or the L{_SINCE} answer the caller got
            under the lock.
        @return: C{(entries, etag)}; C{etag} is L{None} when the repository
            has no C{index.json} yet.
        """
        kept = self._writerEntries.pop(name, None)
        if not fromS3:
            if prefetched is None:
                command = self._sinceCommand(name, kept)

                def since(r):
                    pipe = r.pipeline(transaction=False)
                    command(pipe)
                    return pipe.execute()[0]

                prefetched = await self.redis.run(since)
            etag, version, mode = _text(prefetched[0]), _text(prefetched[1]), int(prefetched[2])
            if etag and version:
                if kept is not None and kept[1] != _text(prefetched[3]):
                    kept = None  # asked about other entries than these
                entries = self._upToDate(name, kept, etag, mode, prefetched[4:])
                if entries is None:
                    data = await self.redis.run(lambda r: r.get(self.key("index", name)))
                    entries = parseEntries(data)
                self._versions[name] = version
                return entries, etag
        self._versions.pop(name, None)
        found = await self.objects.getWithETag(self.layout.indexKey(name))
        if found is None:
            return IndexEntries(), None
        data, etag = found
        return parseEntries(data), etag.strip('"')

    def _upToDate(self, name: str, kept, etag: str, mode: int, payload) -> IndexEntries | None:
        """
        The entries of the index whose ETag is C{etag}, from a L{_SINCE}
        answer (C{mode}, C{payload}) and what this process kept (C{kept}:
        C{(etag, version, entries)} or L{None}); L{None} when the bytes must
        be fetched.  Replayed entries count only when their serialization
        has that ETag: the log can never make a writer start from anything
        but the current index.
        """
        if mode == 0 and kept is not None and kept[0] == etag:
            return kept[2]
        if mode == 1 and kept is not None:
            entries = kept[2]
            try:
                for logged in payload:
                    _, _, changes = _text(logged).partition(" ")
                    replay(entries, json.loads(changes))
            except (ValueError, TypeError, KeyError, AttributeError):
                self._log.warn("Unreadable change log of {name}; parsing the index", name=name)
                return None
            if etagOf(entries.serialize()) == etag:
                return entries
            self._log.warn(
                "Replaying the change log of {name} did not give the current index; "
                "parsing it",
                name=name,
            )
            return None
        if mode == 2 and payload:
            return parseEntries(payload[0])
        return None

    async def writeLocked(self, name: str, held, changes) -> list:
        """
        Apply C{changes} (coroutine functions C{change(entries)}) and write,
        holding C{held} (the repository's lock), which stays held.  The
        garbage collector's way in.

        @return: one C{(ok, value-or-Failure)} per change.
        """
        outcomes, pending = await self._apply(name, held, [(c, None) for c in changes], None)
        if pending is not None:
            command = self._recordCommand(name, held, pending)

            def record(r):
                pipe = r.pipeline(transaction=False)
                command(pipe)
                return pipe.execute()[0]

            self._recorded(name, pending, await self.redis.run(record))
        return outcomes

    async def _apply(self, name: str, held, changes, prefetched):
        """
        Apply C{changes} (C{(change, needs)} pairs, see L{mutate}) and
        write the index to S3 conditionally, under C{held}.

        @param prefetched: L{None}, or C{(index bytes, etag, sizes)} read
            when the lock was taken.
        @return: C{(outcomes, pending)}: one C{(ok, value-or-Failure)} per
            change, and what to record in Redis (L{None}: nothing changed).
        """
        fromS3 = False
        for attempt in range(_WRITE_ATTEMPTS):
            if prefetched is not None and not fromS3:
                entries, etag = await self.readForWrite(name, prefetched=prefetched[0])
                sizes = prefetched[1]
            else:
                entries, etag = await self.readForWrite(name, fromS3)
                needs = list(dict.fromkeys(d for _, n in changes if n for d in n))
                sizes = await self.heldSizes(name, needs)
            base = self._versions.get(name)
            recorder = _Recorder(entries)
            outcomes = []
            changed = False
            for change, needs in changes:
                try:
                    if needs is None:
                        didChange, result = await change(recorder)
                    else:
                        didChange, result = await change(recorder, sizes)
                except Exception:
                    outcomes.append((False, Failure()))
                    continue
                changed = changed or didChange
                outcomes.append((True, result))
            if not changed:
                # Entries a change touched before failing are not kept.
                if etag is not None and base is not None and not recorder.changes:
                    self._writerEntries[name] = (etag, base, entries)
                return outcomes, None
            data = entries.serialize()
            try:
                await held.ensure()
            except LockLost:
                raise IndexWriteRefused(name, "repository lock lost")
            try:
                if etag is None:
                    if name not in self._layouts:
                        await self.objects.put(self.layout.layoutKey(name), LAYOUT)
                        self._layouts.add(name)
                    newEtag = await self.objects.put(
                        self.layout.indexKey(name), data, ifNoneMatch=True
                    )
                else:
                    newEtag = await self.objects.put(
                        self.layout.indexKey(name), data, ifMatch=etag
                    )
            except self._preconditionFailed:
                if not await held.stillHeld():
                    self._log.warn(
                        "Index write of {name} refused by S3 after our lock was lost; "
                        "nothing written",
                        name=name,
                    )
                    raise IndexWriteRefused(name, "index changed by another writer")
                self._log.warn(
                    "Index of {name} changed behind our lock (a stale holder wrote); "
                    "re-reading it from S3",
                    name=name,
                )
                fromS3 = True
                continue
            newEtag = (newEtag if isinstance(newEtag, str) else etagOf(data)).strip('"')
            return outcomes, (etag, data, newEtag, entries, recorder.changes)
        raise IndexWriteRefused(name, f"S3 refused {_WRITE_ATTEMPTS} index writes")

    def _recordCommand(self, name: str, held, pending):
        """
        @return: a function queueing the L{_RECORD} script of C{pending}
            (see L{_apply}) on a redis-py pipeline.
        """
        etag, data, newEtag, _, changes = pending
        keys = [
            self.locks.lockKey(name),
            self.key("index", name),
            self.key("indexetag", name),
            self.key("indexver", name),
            self.key("repos"),
            self.key("indexlog", name),
        ]
        args = [
            held.token, etag or "", data, newEtag, name, firstVersion(),
            json.dumps(changes, separators=(",", ":")), _LOG_LENGTH, _LOG_EXPIRY_MS,
        ]
        return lambda pipe: pipe.eval(_RECORD, len(keys), *keys, *args)

    def _recorded(self, name: str, pending, version) -> None:
        """
        Note what the L{_RECORD} script answered for C{pending}.
        """
        _, _, newEtag, entries, _ = pending
        if version:
            version = str(int(version))
            self._writerEntries[name] = (newEtag, version, entries)
            self._cache[name] = (version, entries.snapshot((version,)))
        else:
            self._log.warn(
                "Index of {name} written to S3 but Redis moved on meanwhile; "
                "the next writer records it",
                name=name,
            )
