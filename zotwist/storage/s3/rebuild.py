# -*- test-case-name: tests.test_s3_store -*-
"""
Rebuilding the Redis state of an S3 store from the bucket.

Redis is a cache of the bucket plus coordination: losing it (first start,
a restart without persistence, a FLUSHALL) must not lose data.  Its C{ready}
key says the state is complete; without it, one instance (the holder of the
C{.rebuild} lock, a name no repository can have) lists the store's prefix
once and restores, per repository and under that repository's lock:
 - C{index:<repo>}, C{indexetag:<repo>}, C{indexver:<repo>} from its
   C{index.json} (read with its ETag, so the next write is conditional on
   exactly what was restored);
 - C{blobs:<repo>} (digest -> size) and C{holders:<digest>} from the keys
   under C{blobs/};
 - C{repos}.
Then it sets C{ready}.  The other instances wait for C{ready} (or take the
lock over if the rebuilder dies, when its lock expires).

Push and pull times (C{tagtimes:<repo>}, for retention) are not in the
bucket and stay lost: see L{zotwist.storage.s3.tagtimes} for how a tag
without them is judged.

Restoring is additive (C{HSET}, C{SADD}): a blob upload that records itself
in Redis while the listing runs is not undone.  Upload sessions lived only
in Redis: their clients start again, and the collector aborts the orphaned
multipart uploads.
"""

import time

from twisted.internet.defer import DeferredSemaphore, ensureDeferred, gatherResults
from twisted.internet.task import deferLater
from twisted.logger import Logger

from zotwist import oci
from zotwist.errors import RegistryError
from zotwist.storage.s3.metadata import firstVersion

_log = Logger()

#: The lock name of the rebuild (repository names never start with a dot).
REBUILD_LOCK = ".rebuild"
#: Seconds between progress lines in the log.
PROGRESS_INTERVAL = 2.0
#: Repositories restored at once.
PARALLEL = 8


def classify(layoutRoot: str, key: str):
    """
    What an object key of the store is.

    @return: C{("index", repo)}, C{("layout", repo)},
        C{("blob", repo, digest)}, or L{None} (upload temporaries, strays).
    """
    if not key.startswith(layoutRoot):
        return None
    rest = key[len(layoutRoot):]
    if rest.startswith(".uploads/") or rest.startswith("."):
        return None
    kind = None
    if rest.endswith("/index.json"):
        kind, name = "index", rest[: -len("/index.json")]
    elif rest.endswith("/oci-layout"):
        kind, name = "layout", rest[: -len("/oci-layout")]
    elif "/blobs/" in rest:
        name, _, path = rest.partition("/blobs/")
        parts = path.split("/")
        if len(parts) != 2:
            return None
        try:
            digest = f"{parts[0]}:{parts[1]}"
            oci.parseDigest(digest)
        except RegistryError:
            return None
        kind = "blob"
    else:
        return None
    try:
        oci.validateName(name)
    except RegistryError:
        return None
    if kind == "blob":
        return ("blob", name, digest)
    return (kind, name)


async def ensureReady(store, reactor=None, poll: float = 0.2) -> None:
    """
    Return once Redis holds the store's state: at once when C{ready} is
    set, else after rebuilding it (when this instance gets the rebuild
    lock) or after another instance's rebuild.
    """
    if reactor is None:
        reactor = store._reactor
    metadata = store.metadata
    waited = False
    while True:
        if await metadata.isReady():
            if waited:
                _log.info("Redis state of the store is ready (rebuilt by another instance)")
            return
        held = await store.locks.tryAcquire(REBUILD_LOCK)
        if held is not None:
            try:
                if not await metadata.isReady():
                    await rebuild(store, held)
            finally:
                await held.release()
            return
        if not waited:
            _log.info("Waiting for another instance to rebuild the Redis state")
            waited = True
        await deferLater(reactor, poll, lambda: None)


async def rebuild(store, held=None) -> dict:
    """
    Restore the Redis state from the bucket (see the module docstring).

    @param held: the rebuild lock, extended as the work goes on.
    @return: counts: C{repositories}, C{blobs}, C{objects}.
    """
    layout = store.layout
    redis = store.redis
    started = last = time.monotonic()
    _log.info(
        "Rebuilding the Redis state from s3 prefix {prefix!r}", prefix=layout.rootPrefix()
    )
    repositories: dict[str, dict] = {}
    withIndex: set[str] = set()
    objects = 0
    listing = await store.objects.list(layout.rootPrefix())
    for info in listing.objects:
        key, size = info.key, info.size
        objects += 1
        what = classify(layout.rootPrefix(), key)
        if what is None:
            continue
        blobs = repositories.setdefault(what[1], {})
        if what[0] == "blob":
            blobs[what[2]] = size
        elif what[0] == "index":
            withIndex.add(what[1])
        now = time.monotonic()
        if now - last >= PROGRESS_INTERVAL:
            last = now
            _log.info(
                "Rebuild: listed {objects} objects, {repositories} repositories so far",
                objects=objects, repositories=len(repositories),
            )
    _log.info(
        "Rebuild: {objects} objects listed, {repositories} repositories; restoring",
        objects=objects, repositories=len(repositories),
    )
    blobCount = sum(len(blobs) for blobs in repositories.values())
    progress = {"done": 0, "last": time.monotonic()}

    async def restore(name: str, blobs: dict) -> None:
        if held is not None:
            await held.ensure()
        async with store.locks.hold(name):
            found = None
            if name in withIndex:
                found = await store.objects.getWithETag(layout.indexKey(name))
            else:
                # Blobs but no index.json (a crash between a blob's copy and
                # the layout): lay it out before Redis lists the repository,
                # since a listed repository is taken as laid out.
                await store.objects.runner.run(store.blobs.writeLayoutBlocking, name)
            await redis.run(_restore, redis, name, blobs, found)
        progress["done"] += 1
        now = time.monotonic()
        if now - progress["last"] >= PROGRESS_INTERVAL:
            progress["last"] = now
            _log.info(
                "Rebuild: restored {done} of {total} repositories",
                done=progress["done"], total=len(repositories),
            )

    # A few repositories at a time: each is a lock, a GET and a Redis
    # transaction, mostly waiting on the network.
    semaphore = DeferredSemaphore(PARALLEL)
    await gatherResults(
        [
            semaphore.run(lambda n=name, b=blobs: ensureDeferred(restore(n, b)))
            for name, blobs in sorted(repositories.items())
        ],
        consumeErrors=True,
    )
    await redis.run(lambda r: r.set(redis.key("ready"), str(int(time.time()))))
    _log.info(
        "Rebuilt the Redis state: {repositories} repositories, {blobs} blobs "
        "({seconds:.2f} s)",
        repositories=len(repositories), blobs=blobCount,
        seconds=time.monotonic() - started,
    )
    store.metadata._cache.clear()
    store.metadata._writerEntries.clear()
    return {"repositories": len(repositories), "blobs": blobCount, "objects": objects}


def _restore(r, redis, name: str, blobs: dict, found) -> None:
    """
    Blocking: write one repository's state in one transaction.
    """
    pipe = r.pipeline(transaction=True)
    if blobs:
        pipe.hset(redis.key("blobs", name), mapping=blobs)
        for digest in blobs:
            pipe.sadd(redis.key("holders", digest), name)
    if found is not None:
        data, etag = found
        pipe.set(redis.key("index", name), data)
        pipe.set(redis.key("indexetag", name), etag.strip('"'))
        pipe.set(redis.key("indexver", name), firstVersion())
        # Changes logged before describe other versions (see metadata).
        pipe.delete(redis.key("indexlog", name))
    pipe.sadd(redis.key("repos"), name)
    pipe.execute()
