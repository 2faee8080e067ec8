# -*- test-case-name: tests.test_s3_blobs -*-
"""
Blobs and upload sessions on S3, with what the instances must agree on in
Redis: the blobs each repository holds, who holds each digest (the dedupe
index and mount sources), the catalog, and the upload sessions.

The bucket holds the same layout as a local store's root (C{<root>/<repo>/
oci-layout}, C{index.json}, C{blobs/<alg>/<hex>}), so C{aws s3 sync} and
C{skopeo oci:} read a repository.  A blob key appears only after its digest
was verified: uploads go to C{<root>/.uploads/<id>/data} first (see
L{zotwist.storage.s3.uploads}) and are then copied on the server.

Redis is the index, S3 the truth: C{blobs:<repo>} (digest -> size) is written
after the object exists and removed before it is deleted, so Redis never
names an object that is not there (except after a failure between the two,
which GC and the rebuild from S3 repair).  L{S3Blobs.statBlob} answers from
Redis alone: no S3 round trip for the existence checks clients make before
every layer push.
"""

import json
from collections import deque

from twisted.internet.defer import Deferred, fail, succeed
from twisted.logger import Logger
from zope.interface import implementer

from zotwist import oci
from zotwist.errors import RegistryError
from zotwist.storage.interfaces import IBlobReader
from zotwist.storage.s3.objects import READ_SIZE, PreconditionFailed
from zotwist.storage.s3.uploads import (
    DEFAULT_SESSION_TTL,
    MonolithicS3Writer,
    SessionS3Writer,
    UploadEngine,
    UploadState,
    checkUploadID,
    newUploadID,
)

_LAYOUT = b'{"imageLayoutVersion": "1.0.0"}'
_EMPTY_INDEX = json.dumps(
    {"schemaVersion": 2, "mediaType": oci.OCI_INDEX, "manifests": []}
).encode()
#: The largest read-ahead chunk (one pool job reads at most this much).  The
#: producer's read size: each answer is then a whole chunk, not a copied
#: slice.  4 MiB chunks sliced into 1 MiB answers cost 17 % more server CPU
#: and 20 % of the throughput of four concurrent 32 MiB pulls here.
READ_AHEAD_CHUNK = READ_SIZE
#: At most this many bytes are buffered ahead per reader (two chunks).  8 MiB
#: pulled whole blobs no faster here, and read further past the end of a
#: range (20 ranges of 8 MiB: 156 against 175 MiB/s).
READ_AHEAD_LIMIT = 2 * READ_AHEAD_CHUNK
#: A GET ended with at most this much unread is read to its end, so its
#: connection is kept; a longer rest is cut.
DRAIN_LIMIT = 8 * 1024 * 1024
#: Seconds a presigned blob URL is valid.
PRESIGN_EXPIRY = 600


@implementer(IBlobReader)
class S3BlobReader:
    """
    A blob in S3, read through ranged GETs with read-ahead, so the next S3
    read overlaps the sending of the previous chunk.

    Without read-ahead a download alternates: the web layer's producer asks
    for 1 MiB, the pool reads it from S3 while the socket is idle, the
    reactor writes it and is paused until the socket drained it, while S3
    is idle.  Here, once reads are sequential, one pool job at a time keeps
    a buffer filled from the GET (chunks of L{READ_AHEAD_CHUNK}, never more
    than L{READ_AHEAD_LIMIT} bytes buffered) while the reactor sends, and
    reads are answered from it.

    Positional semantics as L{IBlobReader} says.  The first read, and any
    read that is not where the previous one ended or inside the buffer (a
    seek), drops the buffer and opens a GET of exactly the bytes asked for:
    the producer's first read of a range of up to 1 MiB is the whole range.
    A sequential read of a full L{READ_SIZE} turns read-ahead on, which
    reads on from one GET to the end of the object.  (Closing a GET before
    its end costs the next GET a new connection: about 30 ms against RGW
    here, against 6 ms for a 1 MiB GET on a kept one; hence the exact first
    GET, and a GET with at most L{DRAIN_LIMIT} bytes left is read to its
    end, in the pool after the response, rather than cut.  Bounded GETs
    of doubling size instead of one to the end were measured: the extra
    GETs cost more CPU than cut connections save; four concurrent 32 MiB
    pulls ran at 0.67 of the old reader's throughput with them, 0.9
    without, both with 4 MiB chunks.)

    Threads: at most one pool job per reader at a time (opening a GET
    and/or reading one chunk); it never waits for room in the buffer, so no
    pool thread is held by a slow client.  A GET's stream is only touched
    by that job, or closed after it.  Everything else runs on the reactor
    thread.

    Deliberately no C{fileno}: the web layer uses C{sendfile} only for
    local files.

    @ivar fetching: the L{Deferred} of the pool job in flight, or L{None}.
    @ivar buffered: how many bytes are read ahead.
    """

    def __init__(self, objects, key: str, size: int):
        self._objects = objects
        self._key = key
        self.size = size
        self._stream = None
        #: Buffered chunks; the first is consumed from C{_head} on.
        self._chunks: deque[bytes] = deque()
        self._head = 0
        self.buffered = 0
        #: The object offset of the first buffered byte (the consumer's position).
        self._bufferStart = -1
        #: The object offset the reads continue from (-1: none yet).
        self._streamAt = -1
        #: The last object offset (inclusive) the open GET returns.
        self._streamEnd = -1
        #: An offset at which a GET ended early (the object is shorter).
        self._eofAt: int | None = None
        self._readingAhead = False
        self._waiters: deque = deque()
        self._closed = False
        self.fetching: Deferred | None = None

    def read(self, offset: int, length: int) -> Deferred:
        if self._closed:
            return fail(OSError("the blob reader is closed"))
        d = Deferred()
        self._waiters.append((offset, length, d))
        self._pump()
        return d

    def close(self) -> Deferred:
        """
        Stop the read-ahead, drop the buffer and end the GET (in the pool),
        once a job in flight finished.  Reads still waiting fail.

        @return: a L{Deferred} firing once the GET is closed (callers of
            L{IBlobReader} need not wait for it).
        """
        if not self._closed:
            self._closed = True
            self._drop()
            waiters, self._waiters = self._waiters, deque()
            for _, _, d in waiters:
                d.errback(OSError("the blob reader is closed"))
        if self.fetching is not None:
            # The job's completion hands its stream back; release it then.
            d = Deferred()
            self.fetching.addBoth(lambda _: self._releaseStream().chainDeferred(d))
            return d
        return self._releaseStream()

    def _releaseStream(self) -> Deferred:
        stream, self._stream = self._stream, None
        if stream is None:
            return succeed(None)
        return self._objects.runner.run(_endStream, stream, self._streamEnd - self._streamAt + 1)

    # -- the buffer ----------------------------------------------------------------

    def _drop(self) -> None:
        self._chunks.clear()
        self._head = 0
        self.buffered = 0

    def _take(self, offset: int, length: int) -> bytes:
        """
        Up to C{length} buffered bytes from C{offset} (inside the buffer),
        discarding everything before them.
        """
        self._skip(offset - self._bufferStart)
        chunk = self._chunks[0]
        available = len(chunk) - self._head
        if self._head == 0 and length >= available:
            data = chunk
        else:
            data = chunk[self._head : self._head + min(length, available)]
        self._skip(len(data))
        return data

    def _skip(self, count: int) -> None:
        self._bufferStart += count
        self.buffered -= count
        while count:
            chunk = self._chunks[0]
            step = min(count, len(chunk) - self._head)
            self._head += step
            count -= step
            if self._head == len(chunk):
                self._chunks.popleft()
                self._head = 0

    # -- the state machine (reactor thread) ---------------------------------------

    def _pump(self) -> None:
        """
        Answer what the buffer can, start the one job the state calls for,
        then fire the answers: their callbacks may call L{read} again and
        find the state settled.
        """
        ready = []
        while self._waiters:
            offset, length, d = self._waiters[0]
            if offset >= self.size or length <= 0 or offset == self._eofAt:
                self._waiters.popleft()
                ready.append((d, b""))
                continue
            if self.buffered and self._bufferStart <= offset < self._streamAt:
                self._waiters.popleft()
                if length < READ_SIZE:
                    # The producer's last read of a range: nothing follows.
                    self._readingAhead = False
                ready.append((d, self._take(offset, length)))
                continue
            if self.fetching is not None:
                # A job continues the stream (it may bring this offset), or
                # must finish before the stream can be replaced.
                break
            self._drop()
            self._bufferStart = offset
            if offset == self._streamAt and (
                length >= READ_SIZE or (self._stream is not None and offset <= self._streamEnd)
            ):
                self._readingAhead = length >= READ_SIZE
                self._fill()
            else:
                # A seek, or the first read: a GET of just the bytes asked for.
                self._streamAt = offset
                self._eofAt = None
                self._readingAhead = False
                self._fetch(offset, offset + length - 1, length)
            break
        if (
            self.fetching is None
            and not self._closed
            and self._readingAhead
            and self._eofAt is None
            and 0 <= self._streamAt < self.size
            and self.buffered + READ_AHEAD_CHUNK <= READ_AHEAD_LIMIT
        ):
            self._fill()
        for d, data in ready:
            d.callback(data)

    def _fill(self) -> None:
        """
        Read the next chunk at C{_streamAt}: from the open GET, or from a
        new one to the end of the object when it is used up.
        """
        if self._stream is not None and self._streamAt <= self._streamEnd:
            self._fetch(None, None, READ_AHEAD_CHUNK)
        else:
            self._fetch(self._streamAt, None, READ_AHEAD_CHUNK)

    def _fetch(self, openAt: int | None, end: int | None, size: int) -> None:
        """
        Start the pool job: open a GET of C{openAt}..C{end} if given (ending
        the current one), then read up to C{size} bytes of it.
        """
        stream, self._stream = self._stream, None
        left = self._streamEnd - self._streamAt + 1
        if openAt is not None:
            if end is not None:
                end = min(end, self.size - 1)
            self._streamEnd = self.size - 1 if end is None else end
        size = min(size, self._streamEnd - self._streamAt + 1)
        d = self.fetching = self._objects.runner.run(
            self._fetchBlocking, stream, left, openAt, end, size
        )
        d.addCallbacks(self._fetched, self._fetchFailed)

    def _fetchBlocking(self, stream, left: int, openAt: int | None, end: int | None, size: int):
        """
        Blocking: the job.  Owns C{stream} (with C{left} bytes unread)
        while it runs; ends every stream it does not return.
        """
        if openAt is not None:
            if stream is not None:
                _endStream(stream, left)
                stream = None
            try:
                stream = self._objects.blocking.openStream(self._key, openAt, end)
            except KeyError:
                raise OSError(f"the object {self._key} is missing")
        try:
            return stream, stream.read(size)
        except BaseException:
            stream.close()
            raise

    def _fetched(self, result) -> None:
        self.fetching = None
        self._stream, data = result
        self._streamAt += len(data)
        if self._closed:
            return
        if data:
            self._chunks.append(data)
            self.buffered += len(data)
        else:
            self._eofAt = self._streamAt
        self._pump()

    def _fetchFailed(self, failure) -> None:
        self.fetching = None
        # The stream is gone; a later read at this offset opens another.
        self._streamEnd = -1
        if self._closed:
            return
        if self._waiters:
            _, _, d = self._waiters.popleft()
            d.errback(failure)
        self._pump()


def _endStream(stream, left: int) -> None:
    """
    Blocking: end a GET's body with C{left} bytes unread: read a short rest
    so its connection is kept for the next GET, else close it.
    """
    try:
        if 0 < left <= DRAIN_LIMIT:
            while stream.read(READ_SIZE):
                pass
    finally:
        stream.close()


class S3Blobs:
    """
    The blob and upload half of L{zotwist.storage.interfaces.IRegistryStore}
    on S3 and Redis, with the semantics of
    L{zotwist.storage.local.LocalStore}.

    @ivar objects: the L{zotwist.storage.s3.objects.ObjectStore}.
    @ivar redis: the L{zotwist.coordination.client.RedisClient}.
    @ivar root: the key prefix in the bucket (zot's C{rootdirectory}),
        without leading or trailing slashes.
    @ivar engine: the L{UploadEngine} (sessions, parts, session locks).
    @ivar layout: a blocking callable C{(name) -> None} that makes C{name} a
        layout (C{oci-layout}, an empty C{index.json} when none) before its
        first blob is published; a store may replace it.
    """

    _log = Logger()

    def __init__(
        self,
        objects,
        redis,
        root: str,
        uploadRunner=None,
        sessionTTL: int = DEFAULT_SESSION_TTL,
        layout=None,
        partRunner=None,
        reactor=None,
    ):
        """
        @param uploadRunner: where upload bodies are hashed and sent (the
            objects' runner when not given).
        @param partRunner: a L{zotwist.threads.ThreadPoolRunner} of its own
            (not C{uploadRunner}) to send parts in while the next bytes are
            hashed; without one, parts are sent between hashing (slower).
        @param reactor: the clock that keeps session locks alive (the
            global reactor when not given).
        @param sessionTTL: seconds an upload session lives after its last
            change (zot's C{gcDelay} plus a day).
        """
        self.objects = objects
        self.redis = redis
        self.root = root.strip("/")
        self._prefix = f"{self.root}/" if self.root else ""
        self._runner = objects.runner
        self._uploadRunner = uploadRunner or objects.runner
        if partRunner is not None and partRunner in (self._uploadRunner, objects.runner):
            # A writer waits for its part: in one pool, writers waiting for
            # parts queued behind them would deadlock it.
            raise ValueError("partRunner must be a pool of its own")
        self.engine = UploadEngine(
            objects,
            redis,
            self.uploadKey,
            sessionTTL,
            partPool=None if partRunner is None else partRunner.pool,
            clock=reactor,
        )
        self._layouts: set[str] = set()
        self.layout = layout or self.ensureLayoutBlocking

    # -- names ---------------------------------------------------------------------

    def repoKey(self, name: str, *parts: str) -> str:
        """
        The object key of C{parts} inside repository C{name}'s layout.
        """
        return self._prefix + "/".join((name,) + parts)

    def blobKey(self, name: str, digest: str) -> str:
        """
        C{<root>/<name>/blobs/<alg>/<hex>}.
        """
        algorithm, encoded = oci.parseDigest(digest)
        return self.repoKey(name, "blobs", algorithm, encoded)

    def uploadKey(self, uploadID: str) -> str:
        """
        C{<root>/.uploads/<id>/data}: an upload's multipart target.
        """
        return f"{self._prefix}.uploads/{uploadID}/data"

    def blobsKey(self, name: str) -> str:
        return self.redis.key("blobs", name)

    def holdersKey(self, digest: str) -> str:
        return self.redis.key("holders", digest)

    # -- layouts and the index in Redis -------------------------------------------------

    def ensureLayoutBlocking(self, name: str) -> None:
        """
        The default L{layout}: create C{oci-layout} and an empty
        C{index.json} unless they exist (C{If-None-Match: *}, so a
        repository's real index is never replaced).  Blocking.

        Skipped, without an S3 call, when Redis's catalog (C{repos}) lists
        the repository: a name is added there only after its layout exists
        (L{_published} lays out first; the metadata records an index after
        writing C{index.json}, and C{oci-layout} before a first index; the
        rebuilds lay out what they add, see L{rebuildBlobsBlocking}), and
        no layout file is ever deleted.  So only the first blob of a new
        repository pays the two conditional PUTs, not the first of every
        instance.
        """
        if name in self._layouts:
            return
        if self.redis.redis.sismember(self.redis.key("repos"), name):
            self._layouts.add(name)
            return
        self.writeLayoutBlocking(name)
        self._layouts.add(name)

    def writeLayoutBlocking(self, name: str) -> None:
        """
        Blocking: the two conditional PUTs of L{ensureLayoutBlocking},
        unconditionally of Redis (for a rebuild, before it adds C{name} to
        C{repos}).
        """
        for key, data in (
            (self.repoKey(name, "oci-layout"), _LAYOUT),
            (self.repoKey(name, "index.json"), _EMPTY_INDEX),
        ):
            try:
                self.objects.blocking.put(key, data, ifNoneMatch=True)
            except PreconditionFailed:
                pass

    def _published(self, name: str, digest: str, size: int, uploadID: str | None = None):
        """
        Blocking: record that C{name} holds C{digest} (its object exists),
        and end the upload session C{uploadID}, in one transaction.
        """
        self.layout(name)
        pipe = self.redis.redis.pipeline(transaction=True)
        pipe.hset(self.blobsKey(name), digest, size)
        pipe.sadd(self.holdersKey(digest), name)
        pipe.sadd(self.redis.key("repos"), name)
        if uploadID is not None:
            pipe.delete(self.engine.sessionKey(uploadID))
        pipe.execute()

    def rebuildBlobsBlocking(self, name: str, objects) -> int:
        """
        Restore Redis's record of the blobs repository C{name} holds from
        a listing of its C{blobs/} keys (for the rebuild after Redis lost
        its data).  Keys that are not C{blobs/<alg>/<hex>} of a valid digest
        are skipped.  The layout files are written (unless they exist)
        before the name goes into C{repos}: a blob copied before a crash
        may be all a repository has, and L{ensureLayoutBlocking} trusts
        C{repos}.  Blocking.

        @param objects: L{zotwist.storage.s3.objects.ObjectInfo}s.
        @return: how many blobs were recorded.
        """
        prefix = self.repoKey(name, "blobs") + "/"
        found = {}
        for info in objects:
            if not info.key.startswith(prefix):
                continue
            algorithm, _, encoded = info.key[len(prefix):].partition("/")
            digest = f"{algorithm}:{encoded}"
            try:
                oci.parseDigest(digest)
            except RegistryError:
                continue
            found[digest] = info.size
        if found:
            self.writeLayoutBlocking(name)
            pipe = self.redis.redis.pipeline(transaction=False)
            pipe.hset(self.blobsKey(name), mapping=found)
            for digest in found:
                pipe.sadd(self.holdersKey(digest), name)
            pipe.sadd(self.redis.key("repos"), name)
            pipe.execute()
        return len(found)

    def rebuildBlobs(self, name: str, objects) -> Deferred:
        """
        L{rebuildBlobsBlocking} in the thread pool.
        """
        return self._runner.run(self.rebuildBlobsBlocking, name, list(objects))

    # -- blobs -----------------------------------------------------------------------

    async def statBlob(self, name: str, digest: str) -> int | None:
        oci.parseDigest(digest)
        key = self.blobsKey(name)
        size = await self.redis.run(lambda r: r.hget(key, digest))
        return None if size is None else int(size)

    async def openBlob(self, name: str, digest: str) -> S3BlobReader:
        size = await self.statBlob(name, digest)
        if size is None:
            raise RegistryError("BLOB_UNKNOWN", detail={"digest": digest})
        return S3BlobReader(self.objects, self.blobKey(name, digest), size)

    async def blobURL(self, name: str, digest: str, expires: int = PRESIGN_EXPIRY) -> str:
        """
        A presigned GET URL of the blob, for C{redirectBlobURL}.

        @raise RegistryError: C{BLOB_UNKNOWN} when the repository does not
            hold it.
        """
        if await self.statBlob(name, digest) is None:
            raise RegistryError("BLOB_UNKNOWN", detail={"digest": digest})
        return await self.objects.presign(self.blobKey(name, digest), expires)

    async def deleteBlob(self, name: str, digest: str) -> None:
        oci.parseDigest(digest)
        blobs, holders = self.blobsKey(name), self.holdersKey(digest)

        def forget(r):
            pipe = r.pipeline(transaction=True)
            pipe.hdel(blobs, digest)
            pipe.srem(holders, name)
            return pipe.execute()[0]

        if not await self.redis.run(forget):
            raise RegistryError("BLOB_UNKNOWN", detail={"digest": digest})
        await self.objects.delete(self.blobKey(name, digest))

    async def mountBlob(
        self, name: str, digest: str, fromName: str | None, mayRead=None
    ) -> int | None:
        """
        Copy the blob on the server from a repository that holds it (and
        that C{mayRead} accepts): no byte passes through this process, and
        each repository stays a self-contained layout.
        """
        existing = await self.statBlob(name, digest)
        if existing is not None:
            return existing
        if fromName is not None:
            candidates = [fromName]
        else:
            holders = self.holdersKey(digest)
            members = await self.redis.run(lambda r: r.smembers(holders))
            candidates = sorted(m.decode() for m in members)
        if mayRead is not None:
            candidates = [c for c in candidates if mayRead(c)]
        for candidate in candidates:
            if candidate == name:
                continue
            size = await self.statBlob(candidate, digest)
            if size is None:
                continue
            try:
                await self._runner.run(self._copyBlob, candidate, name, digest, size)
            except KeyError:
                self._log.warn(
                    "{digest} is recorded in {repo} but its object is missing",
                    digest=digest, repo=candidate,
                )
                continue
            return size
        return None

    def _copyBlob(self, source: str, name: str, digest: str, size: int) -> None:
        """
        Blocking: the server-side copy of a mount, then its record.
        """
        self.objects.blocking.copy(self.blobKey(source, digest), self.blobKey(name, digest), size)
        self._published(name, digest, size)

    # -- uploads -----------------------------------------------------------------------

    async def startUpload(self, name: str, algorithm: str) -> str:
        oci.validateAlgorithm(algorithm)
        uploadID = newUploadID()
        await self.redis.run(self.engine.create, uploadID, UploadState.fresh(name, algorithm))
        return uploadID

    async def uploadStatus(self, name: str, uploadID: str) -> int:
        checkUploadID(uploadID)
        found = await self.redis.run(self.engine.peek, uploadID)
        if found is None or found[0] != name:
            raise RegistryError("BLOB_UPLOAD_UNKNOWN", detail={"uuid": uploadID})
        return found[1]

    async def cancelUpload(self, name: str, uploadID: str) -> None:
        """
        End the session (under its lock when it can be had: a request still
        streaming into it then finds it gone and saves nothing), then
        discard its parts.
        """
        checkUploadID(uploadID)
        token = await self.engine.acquireAsync(uploadID)
        try:
            state = await self.redis.run(self._forget, name, uploadID)
        finally:
            await self.redis.run(self.engine.release, uploadID, token)
        await self._runner.run(self.engine.discard, state, uploadID)

    def _forget(self, r, name: str, uploadID: str) -> UploadState:
        """
        Blocking: load and delete the session's record.
        """
        state = self.engine.load(r, name, uploadID)
        r.delete(self.engine.sessionKey(uploadID))
        return state

    def writerForSession(self, name: str, uploadID: str, start, length) -> SessionS3Writer:
        checkUploadID(uploadID)
        return SessionS3Writer(self._uploadRunner, self.engine, name, uploadID, start)

    def writerForMonolithic(self, name: str, algorithm: str, length) -> MonolithicS3Writer:
        oci.validateAlgorithm(algorithm)
        return MonolithicS3Writer(self._uploadRunner, self.engine, name, algorithm)

    async def completeUpload(self, name: str, uploadID: str, digest: str, writer) -> int:
        oci.parseDigest(digest)
        checkUploadID(uploadID)
        if isinstance(writer, SessionS3Writer):
            # Saves the body's bytes into the session first: a wrong digest
            # leaves the session as it was, this body included.
            await writer.flushed()
            state, token, keeper = writer.takeOver()
        else:
            if writer is not None and getattr(writer, "rejection", None) is not None:
                raise writer.rejection
            state, token = await self.engine.lockAndLoad(name, uploadID)
            keeper = self.engine.keep(uploadID, token)
        try:
            return await self._runner.run(self._complete, name, uploadID, digest, state)
        finally:
            try:
                await self.redis.run(self.engine.release, uploadID, token)
            finally:
                if keeper is not None:
                    keeper.stop()

    def _verify(self, state: UploadState, digest: str) -> None:
        """
        @raise RegistryError: C{DIGEST_INVALID} unless the content hashes to
            C{digest}.
        """
        algorithm, _ = oci.parseDigest(digest)
        if algorithm != state.algorithm:
            raise RegistryError(
                "DIGEST_INVALID",
                message=f"this upload was hashed with {state.algorithm}; "
                f"open it with ?digest-algorithm={algorithm} to use {algorithm}",
                detail={"expected": digest},
            )
        actual = state.digest()
        if actual != digest:
            raise RegistryError("DIGEST_INVALID", detail={"expected": digest, "actual": actual})

    def _complete(self, name: str, uploadID: str, digest: str, state: UploadState) -> int:
        """
        Blocking: verify, publish under the digest, end the session.
        """
        self._verify(state, digest)
        if self._alreadyHeld(name, digest, state.offset):
            self.engine.discard(state, uploadID)
        else:
            self.engine.assemble(state, uploadID, self.blobKey(name, digest))
        self._published(name, digest, state.offset, uploadID)
        return state.offset

    def _alreadyHeld(self, name: str, digest: str, size: int) -> bool:
        """
        Whether C{name} holds C{digest} already (a re-push): then the upload
        is dropped instead of copied over identical bytes.
        """
        held = self.redis.redis.hget(self.blobsKey(name), digest)
        return held is not None and int(held) == size

    async def commitMonolithic(self, name: str, digest: str, writer) -> int:
        oci.parseDigest(digest)
        await writer.flushed()
        state = writer.upload
        self._verify(state, digest)
        return await self._runner.run(self._commit, name, digest, writer)

    def _commit(self, name: str, digest: str, writer: MonolithicS3Writer) -> int:
        """
        Blocking: publish a verified single-request upload.
        """
        state = writer.upload
        if self._alreadyHeld(name, digest, state.offset):
            self.engine.discard(state, writer.uploadID)
        else:
            self.engine.assemble(state, writer.uploadID, self.blobKey(name, digest))
        writer.committed = True
        self._published(name, digest, state.offset)
        return state.offset
