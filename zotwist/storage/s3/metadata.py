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

A change (tag, untag, add, remove) is a read-modify-write under the
repository's fenced lock (L{zotwist.coordination.locks}), done as a group
commit across requests and instances (L{RepositoryMetadata.mutate}):
 1. the change is a job described as data (L{applyJob}); it joins the
    repository's queue in Redis (C{indexq:<repo>}) in the same script call
    that tries to take the lock;
 2. the instance that gets the lock takes the whole queue with it (every
    instance's jobs), reads the index and the blob sizes the jobs need in
    one Redis round trip: the index it parsed last time, brought up to
    date by replaying the change log C{indexlog:<repo>} (checked against
    the ETag), or parsed from C{index:<repo>} when the log does not reach
    back (else S3 when Redis has none);
 3. applies the jobs, in order;
 4. PUTs C{index.json} conditionally: C{If-Match: <etag>} (unquoted:
    Ceph Pacific refuses the quoted form), or C{If-None-Match: *} for a
    repository's first index.  S3 accepts only a write based on the
    current version, so even a holder whose lock expired while it was
    paused cannot overwrite a newer index: it gets 412 and its requests
    fail cleanly (L{IndexWriteRefused}).  A current holder that gets 412
    (a paused ex-holder slipped a write in first) re-reads S3 and retries;
 5. records, in one transaction: the new bytes, ETag, version and change
    log entry (a script that accepts the update from the lock holder, or
    from anyone whose base ETag is still the one Redis has: a writer whose
    lock ran out between its S3 write and this step wrote based on the
    newest version, so recording it is right); the answers of other
    instances' jobs (C{indexres:<repo>}); and takes the jobs queued
    meanwhile for another round, or releases the lock when there are none.
    The round is announced on the lock channel: the submitters waiting on
    other instances collect their answers.  Every answer is given after
    the S3 write it depends on.

The S3 PUT is the moment a change happens: once it succeeded, every later
write is based on it (S3 refuses the others), so the change is never lost
even if this instance dies before updating Redis; the next writer's 412
re-reads S3, and a rebuild (L{zotwist.storage.s3.rebuild}) reads S3 too.
"""

import hashlib
import json
import random
import time

from twisted.internet.defer import Deferred
from twisted.logger import Logger
from twisted.python.failure import Failure

from zotwist import oci
from zotwist.coordination.locks import WANT_MS, HeldLock, LockLost, newToken
from zotwist.errors import ManifestBlobsUnknown, RegistryError
from zotwist.storage.index import IndexEntries, RepositoryIndex

LAYOUT = b'{"imageLayoutVersion": "1.0.0"}'

#: Lua shared by L{_READ} and L{_SINCE}: C{changesSince(key, since,
#: version, limit)} answers the index log's changes (the list at C{key},
#: kept to C{limit} entries) after version C{since} up to C{version},
#: oldest first, or nil when the log no longer holds every one of them;
#: C{appended(answer, items)} is C{answer} with C{items} added at its end.
_CHANGES_SINCE = """
local function changesSince(key, since, version, limit)
    since = tonumber(since)
    local missing = tonumber(version) - since
    if missing > 0 and missing <= tonumber(limit) then
        local log = redis.call('LRANGE', key, -missing, -1)
        if #log == missing and tonumber(string.match(log[1], '^%d+')) == since + 1 then
            return log
        end
    end
    return nil
end
local function appended(answer, items)
    for i = 1, #items do
        answer[#answer + 1] = items[i]
    end
    return answer
end
"""

#: KEYS: indexver, index, repos, ready, indexetag, indexlog; ARGV: cached
#: version ('' for none), repository name, the version and ETag of the
#: entries this process's writer keeps ('' for none), the log's length.
#: Answers {status, version, ...}: 0 unknown repository, 1 known but no
#: index yet (blobs only), 2 unchanged since the cached version, 3 changed
#: {3, version, bytes}, 4 changed but the writer's entries are current
#: {4, version, etag}, 5 changed and the log holds every change since the
#: writer's entries {5, version, etag, changes...}, -1 Redis is not ready
#: (empty after a restart: the state must be rebuilt).
_READ = _CHANGES_SINCE + """
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
local etag = redis.call('GET', KEYS[5])
if ARGV[3] ~= '' and etag then
    if v == ARGV[3] and etag == ARGV[4] then
        return {4, v, etag}
    end
    local log = changesSince(KEYS[6], ARGV[3], v, ARGV[5])
    if log then
        return appended({5, v, etag}, log)
    end
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
_SINCE = _CHANGES_SINCE + """
local etag = redis.call('GET', KEYS[2])
local version = redis.call('GET', KEYS[3])
if not etag or not version then
    return {'', '', 2, ARGV[1], ''}
end
if ARGV[1] ~= '' then
    if version == ARGV[1] and etag == ARGV[2] then
        return {etag, version, 0, ARGV[1]}
    end
    local log = changesSince(KEYS[4], ARGV[1], version, ARGV[3])
    if log then
        return appended({etag, version, 1, ARGV[1]}, log)
    end
end
return {etag, version, 2, ARGV[1], redis.call('GET', KEYS[1]) or ''}
"""

#: How many changes (batches) of a repository's index the log in Redis
#: keeps, and for how long after the last.
_LOG_LENGTH = 64
_LOG_EXPIRY_MS = 3600 * 1000

#: One attempt of a submitter (L{RepositoryMetadata.mutate}).  KEYS: lock,
#: fence, want (L{zotwist.coordination.locks}' keys and protocol), the
#: repository's job queue, its results; ARGV: token, lock TTL in ms, want
#: mark in ms, how many new jobs, the new jobs (JSON), then the ids of the
#: submitter's unanswered jobs.  Queues the new jobs; takes the answers
#: of finished ones; and unless every job is answered, tries to take the
#: lock (an acquisition takes the whole queue too).  Answers {fence or 0,
#: number of answers, id, answer, ..., drained jobs...}.
_ATTEMPT = """
local fresh = tonumber(ARGV[4])
for i = 1, fresh do
    redis.call('RPUSH', KEYS[4], ARGV[4 + i])
end
local found = {}
local waiting = 0
for i = 5 + fresh, #ARGV do
    local answer = redis.call('HGET', KEYS[5], ARGV[i])
    if answer then
        redis.call('HDEL', KEYS[5], ARGV[i])
        found[#found + 1] = ARGV[i]
        found[#found + 1] = answer
    else
        waiting = waiting + 1
    end
end
local fence = 0
local drained = {}
if waiting > 0 then
    if redis.call('SET', KEYS[1], ARGV[1], 'NX', 'PX', ARGV[2]) then
        fence = redis.call('INCR', KEYS[2])
        drained = redis.call('LRANGE', KEYS[4], 0, -1)
        redis.call('DEL', KEYS[4])
    else
        redis.call('SET', KEYS[3], '1', 'PX', ARGV[3])
    end
end
local answer = {fence, #found / 2}
for i = 1, #found do
    answer[#answer + 1] = found[i]
end
for i = 1, #drained do
    answer[#answer + 1] = drained[i]
end
return answer
"""

#: The end of a holder's round.  KEYS: lock, want, job queue; ARGV: token,
#: channel, repository, lock TTL in ms.  Takes the jobs queued meanwhile
#: and keeps the lock (prolonged) for them, or releases it when there are
#: none (as L{zotwist.coordination.locks} does); either way announces the
#: round on the channel, so the submitters collect their answers.
#: Answers {1, jobs...}, {0, wanted (0 or 1)}, or {-1} when the lock was
#: not ours any more.
_NEXT = """
local state = {-1}
if redis.call('GET', KEYS[1]) == ARGV[1] then
    local jobs = redis.call('LRANGE', KEYS[3], 0, -1)
    if #jobs > 0 then
        redis.call('DEL', KEYS[3])
        redis.call('PEXPIRE', KEYS[1], ARGV[4])
        state = {1}
        for i = 1, #jobs do
            state[#state + 1] = jobs[i]
        end
    else
        redis.call('DEL', KEYS[1])
        state = {0, redis.call('DEL', KEYS[2])}
    end
end
redis.call('PUBLISH', ARGV[2], ARGV[3])
return state
"""

#: Manifests up to this size are kept in Redis (C{manifest:<digest>}) for
#: this many seconds, so instances read each other's manifests from Redis
#: rather than S3.
MANIFEST_CACHE_MAX = 256 * 1024
MANIFEST_CACHE_TTL = 86400

#: Milliseconds a submitter's answer waits in Redis for it to collect it.
_ANSWER_EXPIRY_MS = 120 * 1000

#: What L{RepositoryMetadata.mutate} answers for a manifest job whose
#: manifest bytes are not held any more: store them again and resubmit.
BYTES_MISSING = "bytes-missing"

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


def jobNeeds(job: dict) -> list:
    """
    The digests whose sizes in C{blobs:<repo>} applying C{job} needs.
    """
    if job.get("kind") == "put":
        return list(job.get("needs") or []) + [job["digest"]]
    return []


def applyJob(entries, job: dict, sizes: dict):
    """
    Apply one change described as data (any instance can apply it, see
    L{RepositoryMetadata.mutate}) to C{entries}.

      - C{{"kind": "put", "needs": [digests], "digest", "descriptor",
        "tags": [...]}}: list the manifest (tagged with each of C{tags}, or
        untagged), if every digest it needs and its own bytes are held;
      - C{{"kind": "delete", "reference", "byDigest"}}: remove a manifest
        and its tags, or untag.

    @param sizes: digest -> size or L{None}, for L{jobNeeds}.
    @return: C{(changed, answer)}; the answer is C{{"ok": value}},
        C{{"missing": [digests]}}, C{{"bytes": true}} or
        C{{"refused": why}} (see L{answerValue}).
    """
    kind = job.get("kind")
    if kind == "put":
        missing = [d for d in job.get("needs") or [] if sizes.get(d) is None]
        if missing:
            return False, {"missing": list(dict.fromkeys(missing))}
        if sizes.get(job["digest"]) is None:
            return False, {"bytes": True}
        descriptor = job["descriptor"]
        if not job.get("tags"):
            return entries.add(descriptor), {"ok": None}
        for tag in job["tags"]:
            entries.tag(tag, descriptor)
        return True, {"ok": None}
    if kind == "delete":
        reference = job["reference"]
        if job.get("byDigest"):
            found = entries.removeDigest(reference)
        else:
            found = entries.untag(reference)
        return found, {"ok": found}
    return False, {"refused": f"unknown index change {kind!r}"}


def answerValue(name: str, answer: dict):
    """
    What L{RepositoryMetadata.mutate} answers (or raises) for a job's answer.
    """
    if "ok" in answer:
        return answer["ok"]
    if "missing" in answer:
        raise ManifestBlobsUnknown(list(answer["missing"]))
    if answer.get("bytes"):
        return BYTES_MISSING
    raise IndexWriteRefused(name, str(answer.get("refused") or "refused"))


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
        #: Names this process's job ids by (with a counter).
        self._instance = newToken()[:16]
        self._jobCount = 0
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
        kept = self._writerEntries.get(name)
        keys = [
            self.key("indexver", name),
            self.key("index", name),
            self.key("repos"),
            self.key("ready"),
            self.key("indexetag", name),
            self.key("indexlog", name),
        ]
        args = [
            cached[0] if cached else "", name,
            kept[1] if kept else "", kept[0] if kept else "", _LOG_LENGTH,
        ]
        digests = list(dict.fromkeys(digests))
        blobsKey = self.key("blobs", name)

        def read(r):
            pipe = r.pipeline(transaction=False)
            pipe.eval(_READ, len(keys), *keys, *args)
            if digests:
                pipe.hmget(blobsKey, digests)
            return pipe.execute()

        answers = await self.redis.run(read)
        status, version, data = answers[0][:3]
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
        index = None
        if status in (4, 5) and self._writerEntries.get(name) is kept:
            index = self._fromKept(name, kept, version, _text(data), answers[0][3:])
        if index is None:
            if status != 3:
                data = await self.redis.run(lambda r: r.get(self.key("index", name)))
            index = parseIndex(data, (version,))
        # What Redis says now replaces the cache, newer or not: a version
        # stands for one content, so an older one costs a parse, no more.
        self._cache[name] = (version, index)
        return index, sizes

    def _fromKept(self, name: str, kept, version: str, etag: str, changes):
        """
        A reader's snapshot of version C{version} (ETag C{etag}) made from
        the writer's kept entries, replaying C{changes} (the log since
        them) into them first: no parse of the whole index.  L{None} when
        the replay does not give that ETag (the kept entries are dropped).
        """
        if changes:
            entries = self._upToDate(name, kept, etag, 1, changes)
            if entries is None:
                self._writerEntries.pop(name, None)
                return None
            self._writerEntries[name] = (etag, version, entries)
        else:
            entries = kept[2]
        return entries.snapshot((version,))

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

    async def recordBlob(self, name: str, digest: str, size: int,
                         body: bytes | None = None) -> None:
        """
        Note that C{name} holds C{digest} (after its S3 object exists).

        @param body: the bytes of a manifest, to keep in L{cacheManifest}.
        """

        def record(r):
            pipe = r.pipeline(transaction=True)
            pipe.hset(self.key("blobs", name), digest, size)
            pipe.sadd(self.key("holders", digest), name)
            if body is not None and len(body) <= MANIFEST_CACHE_MAX:
                pipe.set(self.key("manifest", digest), body, ex=MANIFEST_CACHE_TTL)
            pipe.execute()

        await self.redis.run(record)

    async def putBlobBytes(self, name: str, digest: str, data: bytes) -> None:
        """
        Store a manifest's bytes as a blob of the layout, record it, and
        keep the bytes in Redis for the other instances (L{cachedManifest}).
        """
        await self.objects.put(self.layout.blobKey(name, digest), data)
        await self.recordBlob(name, digest, len(data), body=data)

    async def cachedManifest(self, digest: str) -> bytes | None:
        """
        The bytes of a manifest as Redis keeps them (C{manifest:<digest>},
        content-addressed, for L{MANIFEST_CACHE_TTL} after it was written
        or last read from S3), or L{None}: an instance reads a manifest
        another pushed without an S3 GET.  The caller checks the digest.
        """
        return await self.redis.run(lambda r: r.get(self.key("manifest", digest)))

    async def cacheManifest(self, digest: str, body: bytes) -> None:
        """
        Keep a manifest read from S3 in Redis for the other instances.
        """
        if len(body) <= MANIFEST_CACHE_MAX:
            await self.redis.run(
                lambda r: r.set(self.key("manifest", digest), body, ex=MANIFEST_CACHE_TTL)
            )

    # -- changing ------------------------------------------------------------------

    async def mutate(self, name: str, job: dict):
        """
        Apply C{job} (a change described as data, see L{applyJob}) to the
        repository's index and write it to S3: group commit across
        requests and instances.

        The job joins the repository's queue in Redis; whichever instance
        holds (or takes) the repository lock applies every queued job, its
        own and other instances', in one S3 write, records the answers in
        Redis and announces them; it takes the jobs queued meanwhile for
        another round before it releases the lock.  A submitter that does
        not get the lock waits for those announcements (or a back-off) and
        asks again: for its answers, else for the lock (so a holder that
        died only delays the jobs it took until its lock expires, then
        their submitters apply them themselves).

        @return: the job's value (see L{answerValue}), or raise.
        @raise IndexWriteRefused: the change could not be written safely
            (it may still be applied later by the holder that has it).
        """
        waiting = Deferred()
        self._jobCount += 1
        job = dict(job, id=f"{self._instance}:{self._jobCount}")
        self._queues.setdefault(name, []).append((job, waiting))
        if name not in self._writing:
            self._writing.add(name)
            self._run(name)
        return await waiting

    def _run(self, name: str) -> None:
        from twisted.internet.defer import ensureDeferred

        def failed(failure):
            self._log.failure("Index writer of {name} failed", failure, name=name)

        def again(_):
            if self._queues.get(name):
                self._run(name)
            else:
                self._queues.pop(name, None)
                self._writing.discard(name)

        d = ensureDeferred(self._submit(name))
        d.addErrback(failed)
        d.addBoth(again)

    def _deliver(self, name: str, waiting: Deferred, answer: dict) -> None:
        try:
            value = answerValue(name, answer)
        except Exception:
            waiting.errback(Failure())
        else:
            waiting.callback(value)

    async def _submit(self, name: str) -> None:
        """
        Queue this process's jobs of C{name} in Redis and see them answered
        (as holder or by another).
        """
        own: dict[str, tuple] = {}
        deadline = time.monotonic() + self.locks.wait
        delay = self.locks.firstDelay
        while True:
            fresh = self._queues.pop(name, [])
            for job, waiting in fresh:
                own[job["id"]] = (job, waiting)
            if not own:
                return
            wake = self.locks.expect(name)
            token = newToken()
            started = time.monotonic()
            try:
                fence, found, drained = await self.redis.run(
                    self._attempt, name, token, [job for job, _ in fresh], list(own)
                )
            except Exception:
                self.locks.forget(name, wake)
                failure = Failure()
                for _, waiting in own.values():
                    waiting.errback(failure)
                return
            for jobId, answer in found:
                if jobId in own:
                    self._deliver(name, own.pop(jobId)[1], answer)
            if fence:
                self.locks.forget(name, wake)
                held = HeldLock(self.locks, name, token, fence)
                held.acquired = started
                await self._hold(name, held, drained, own)
                return
            if not own:
                self.locks.forget(name, wake)
                continue
            now = time.monotonic()
            if now >= deadline:
                self.locks.forget(name, wake)
                refused = {"refused": "the repository lock stayed taken"}
                for _, waiting in own.values():
                    self._deliver(name, waiting, refused)
                return
            pause = min(delay, deadline - now) * random.uniform(0.5, 1.0)
            await self.locks.pause(name, pause, wake)
            delay = min(delay * 2, self.locks.maxDelay)

    def _attempt(self, r, name: str, token: str, fresh: list, ids: list):
        """
        Blocking: the L{_ATTEMPT} script.  @return: C{(fence or 0,
        [(id, answer)], drained jobs)}.
        """
        keys = [
            self.locks.lockKey(name),
            self.locks.fenceKey(name),
            self.locks.wantKey(name),
            self.key("indexq", name),
            self.key("indexres", name),
        ]
        args = [
            token, self.locks.ms(None), WANT_MS, len(fresh),
            *[json.dumps(job, separators=(",", ":")) for job in fresh], *ids,
        ]
        answer = r.eval(_ATTEMPT, len(keys), *keys, *args)
        fence, count = int(answer[0]), int(answer[1])
        found = [
            (_text(answer[2 + 2 * i]), json.loads(answer[3 + 2 * i])) for i in range(count)
        ]
        drained = [json.loads(job) for job in answer[2 + 2 * count:]]
        return fence, found, drained

    async def _hold(self, name: str, held, drained: list, own: dict) -> None:
        """
        Rounds of the lock holder: apply the queued jobs (C{drained}, this
        process's C{own} unanswered ones, and local arrivals), write,
        answer, and go on with what was queued meanwhile.
        """
        jobs = {job["id"]: job for job in drained}
        for jobId, (job, _) in own.items():
            jobs.setdefault(jobId, job)
        while True:
            for job, waiting in self._queues.pop(name, []):
                own[job["id"]] = (job, waiting)
                jobs[job["id"]] = job
            try:
                answers, pending = await self._writeJobs(name, held, list(jobs.values()))
            except IndexWriteRefused as e:
                answers, pending = {jobId: {"refused": e.why} for jobId in jobs}, None
            except Exception as e:
                self._log.failure("Writing the index of {name} failed", name=name)
                answers, pending = {jobId: {"refused": repr(e)} for jobId in jobs}, None
            foreign = {jobId: a for jobId, a in answers.items() if jobId not in own}
            record = None if pending is None else self._recordCommand(name, held, pending)
            started = time.monotonic()
            try:
                version, state, more = await self.redis.run(
                    self._finishRound, name, held.token, record, foreign
                )
            except Exception:
                failure = Failure()
                self._log.failure("Ending a round on the index of {name} failed", failure,
                                  name=name)
                for jobId in list(answers):
                    if jobId in own:
                        own.pop(jobId)[1].errback(failure)
                return
            if pending is not None:
                self._recorded(name, pending, version)
            for jobId, answer in answers.items():
                if jobId in own:
                    self._deliver(name, own.pop(jobId)[1], answer)
            if state != 1:
                held.released = True
                return
            held.acquired = started
            jobs = {job["id"]: job for job in more}

    async def _writeJobs(self, name: str, held, jobs: list):
        """
        Apply C{jobs} and write the index (one round of L{_hold}).

        @return: C{({id: answer}, pending record or None)}.
        """
        needs = list(dict.fromkeys(d for job in jobs for d in jobNeeds(job)))
        since = self._sinceCommand(name, self._writerEntries.get(name))
        blobsKey = self.key("blobs", name)

        def read(r):
            pipe = r.pipeline(transaction=False)
            since(pipe)
            if needs:
                pipe.hmget(blobsKey, needs)
            return pipe.execute()

        answers = await self.redis.run(read)
        sizes = {}
        if needs:
            sizes = {d: (int(v) if v is not None else None) for d, v in zip(needs, answers[1])}

        def changeFor(job):
            async def change(entries, sizes):
                return applyJob(entries, job, sizes)

            return change

        changes = [(changeFor(job), jobNeeds(job)) for job in jobs]
        outcomes, pending = await self._apply(name, held, changes, (answers[0], sizes))
        result = {}
        for job, (ok, value) in zip(jobs, outcomes):
            result[job["id"]] = value if ok else {"refused": repr(value.value)}
        return result, pending

    def _finishRound(self, r, name: str, token: str, record, foreign: dict):
        """
        Blocking: record the index (C{record}, from L{_recordCommand}),
        the answers of other instances' jobs, and the L{_NEXT} script, in
        one transaction.  @return: C{(record's answer, state, more jobs)}.
        """
        pipe = r.pipeline(transaction=True)
        if record is not None:
            record(pipe)
        if foreign:
            resultsKey = self.key("indexres", name)
            pipe.hset(resultsKey, mapping={
                jobId: json.dumps(answer, separators=(",", ":"))
                for jobId, answer in foreign.items()
            })
            pipe.pexpire(resultsKey, _ANSWER_EXPIRY_MS)
        pipe.eval(
            _NEXT, 3, self.locks.lockKey(name), self.locks.wantKey(name),
            self.key("indexq", name), token, self.locks.channel, name, self.locks.ms(None),
        )
        answers = pipe.execute()
        version = answers[0] if record is not None else None
        state = answers[-1]
        code = int(state[0])
        more = [json.loads(job) for job in state[1:]] if code == 1 else []
        return version, code, more

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
