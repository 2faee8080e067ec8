# -*- test-case-name: tests.test_s3_blobs -*-
"""
Upload bodies streamed into S3 multipart uploads, with the session's state
in Redis so that any instance can continue it.

An upload's bytes are hashed as they arrive and collected into parts of
L{PART_SIZE}; each full part is sent with UploadPart from a pool thread to the
multipart upload of C{<root>/.uploads/<id>/data}.  What has not filled a part
yet (the I{tail}, less than one part) and the running hash's state (see
L{zotwist.storage.s3.hashing}) are saved in the session's Redis hash after
every request, with the offset, the multipart UploadId and the parts sent:
the next PATCH, on whichever instance, loads them and continues.

A session is written by one request at a time: a request takes the
session's lock in Redis (waiting up to L{LOCK_WAIT} seconds, on the reactor,
for the previous request's instance to let go), keeps it alive
(L{LockKeeper}) while its body streams, and saves the state only while it
still holds it, so a request whose lock expired (a stalled or dead instance)
cannot overwrite a later one's progress, and a dead instance's lock is gone
after L{LOCK_TTL_MS}.

Per upload, at most L{PARTS_IN_FLIGHT} parts being sent, less than a part of
tail and the writer's queue (L{zotwist.storage.writers.HIGH_WATER}, beyond
which the client's connection is paused) are in memory: about 28 MiB,
whatever the blob's size.
"""

import json
import re
import time
import uuid
from concurrent.futures import Future
from dataclasses import dataclass, field

from twisted.internet.defer import Deferred, DeferredList
from twisted.internet.task import deferLater
from twisted.logger import Logger

from zotwist import oci
from zotwist.coordination.scripts import DELETE_IF_OWNED, PEXPIRE_IF_OWNED
from zotwist.errors import RegistryError
from zotwist.storage.s3.hashing import ResumableHash
from zotwist.storage.writers import QueuedWriter

#: Bytes per multipart part (S3's minimum is 5 MiB except for the last
#: part; at most 10000 parts, so an upload may hold up to 78 GiB).
PART_SIZE = 8 * 1024 * 1024
#: Parts of one upload sent at once (each holds a part's bytes in memory).
PARTS_IN_FLIGHT = 2
#: S3's limit on the number of parts.
MAX_PARTS = 10000
#: Milliseconds a session lock lives without being refreshed: the longest a
#: dead instance keeps others from continuing its sessions.  Its holder
#: refreshes it every L{LOCK_REFRESH} seconds (L{LockKeeper}).
LOCK_TTL_MS = 10_000
#: Seconds between refreshes of a held session lock.
LOCK_REFRESH = 3.0
#: Seconds a request waits for the previous request on the same session to
#: release it (its instance answers the client before it lets go).  Longer
#: than L{LOCK_TTL_MS}: a retry after an instance died mid-request waits for
#: the dead instance's lock to expire instead of failing.
LOCK_WAIT = 15.0
#: Seconds a session lives in Redis after its last change, unless the
#: store sets another (gcDelay plus a day, by the design).
DEFAULT_SESSION_TTL = 86400 + 3600

_UPLOAD_ID = re.compile(r"[0-9a-f]{32}\Z")

#: Save a session's fields, only while holding its lock and only if the
#: session still exists (a cancel or completion elsewhere ended it).
_SAVE = """
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return -1 end
if redis.call('EXISTS', KEYS[2]) == 0 then return 0 end
redis.call('HSET', KEYS[2], unpack(ARGV, 3))
redis.call('EXPIRE', KEYS[2], ARGV[2])
return 1
"""


def checkUploadID(uploadID: str) -> str:
    """
    @raise RegistryError: C{BLOB_UPLOAD_UNKNOWN} for anything that is not a
        session id this store makes (so no client string reaches a key).
    """
    if not _UPLOAD_ID.match(uploadID):
        raise RegistryError("BLOB_UPLOAD_UNKNOWN", detail={"uuid": uploadID[:100]})
    return uploadID


def newUploadID() -> str:
    return uuid.uuid4().hex


@dataclass
class UploadState:
    """
    Everything about an upload but the parts already in S3.

    @ivar offset: bytes received so far.
    @ivar mpu: the S3 multipart UploadId, or L{None} before the first part.
    @ivar parts: C{[number, etag, size]} of each part sent, in order.
    @ivar tail: received bytes not yet sent (less than one part), and
        before them those of the parts being sent.
    @ivar sending: C{(number, size, future)} of each part being sent, in
        order (never saved: L{UploadEngine.settle} runs before every save).
    """

    repo: str
    algorithm: str
    hasher: ResumableHash
    offset: int = 0
    mpu: str | None = None
    parts: list = field(default_factory=list)
    tail: bytearray = field(default_factory=bytearray)
    sending: list = field(default_factory=list, repr=False)

    @classmethod
    def fresh(cls, repo: str, algorithm: str) -> "UploadState":
        return cls(repo, algorithm, ResumableHash(algorithm))

    def fields(self) -> dict:
        """
        The Redis hash fields of this state.
        """
        return {
            "repo": self.repo,
            "algorithm": self.algorithm,
            "offset": str(self.offset),
            "mpu": self.mpu or "",
            "parts": json.dumps(self.parts),
            "hashstate": self.hasher.state(),
            "tail": bytes(self.tail),
            "updated": str(int(time.time())),
        }

    @classmethod
    def fromFields(cls, fields: dict) -> "UploadState":
        """
        The state saved by L{fields} (keys and values as bytes, as redis-py
        returns them).

        @raise ValueError: when something is missing or malformed.
        """
        try:
            algorithm = oci.validateAlgorithm(fields[b"algorithm"].decode())
            hasher = ResumableHash.fromState(fields[b"hashstate"])
            if hasher.algorithm != algorithm:
                raise ValueError("hash state of another algorithm")
            return cls(
                repo=fields[b"repo"].decode(),
                algorithm=algorithm,
                hasher=hasher,
                offset=int(fields[b"offset"]),
                mpu=fields.get(b"mpu", b"").decode() or None,
                parts=json.loads(fields.get(b"parts", b"[]")),
                tail=bytearray(fields.get(b"tail", b"")),
            )
        except (KeyError, TypeError, UnicodeDecodeError, RegistryError) as e:
            raise ValueError(f"malformed upload session: {e!r}") from e

    def digest(self) -> str:
        return f"{self.algorithm}:{self.hasher.hexdigest()}"


class UploadEngine:
    """
    The blocking half of uploads, shared by every writer of one store:
    sending parts, and the session's Redis records and lock.  All methods
    block: call them in pool threads.
    """

    def __init__(
        self,
        objects,
        redis,
        uploadKey,
        sessionTTL: int = DEFAULT_SESSION_TTL,
        partPool=None,
        clock=None,
    ):
        """
        @param objects: an L{zotwist.storage.s3.objects.ObjectStore}.
        @param redis: a L{zotwist.coordination.client.RedisClient}.
        @param uploadKey: C{uploadID -> object key} of the multipart target.
        @param partPool: a started L{twisted.python.threadpool.ThreadPool}
            parts are sent in, or L{None} to send them from the writer's
            thread.  It must not be the pool the writers run in: a writer
            waits for its part, and a pool full of waiting writers would
            never run the parts.
        @param clock: the reactor, for L{LockKeeper}s.
        """
        self.objects = objects.blocking
        self.partPool = partPool
        if clock is None:
            from twisted.internet import reactor as clock
        self.clock = clock
        self.redis = redis
        self.uploadKey = uploadKey
        self.sessionTTL = sessionTTL
        self._finishing: set = set()
        r = redis.redis
        self._refresh = r.register_script(PEXPIRE_IF_OWNED)
        self._release = r.register_script(DELETE_IF_OWNED)
        self._save = r.register_script(_SAVE)

    def finishing(self, d: Deferred) -> Deferred:
        """
        Remember a writer's background save-and-release until it ends, so
        that L{settled} can wait for it: a store stopping (or a test ending)
        must not close the Redis connections under a session being saved.
        """
        self._finishing.add(d)

        def forget(result):
            self._finishing.discard(d)
            return result

        return d.addBoth(forget)

    def settled(self) -> Deferred:
        """
        @return: a L{Deferred} firing once every background save-and-release
            started so far has ended.
        """
        return DeferredList(list(self._finishing), consumeErrors=True)

    def sessionKey(self, uploadID: str) -> str:
        return self.redis.key("upload", uploadID)

    def lockKey(self, uploadID: str) -> str:
        return self.redis.key("uploadlock", uploadID)

    # -- parts ----------------------------------------------------------------

    def feed(self, state: UploadState, uploadID: str, chunks) -> None:
        """
        Hash C{chunks} and add them to the state, sending every part that
        fills up.  The state stays consistent if a send fails: the bytes
        stay in the tail until their part was accepted.
        """
        for chunk in chunks:
            state.hasher.update(chunk)
            state.offset += len(chunk)
            state.tail += chunk
        self.pump(state, uploadID)

    def pump(self, state: UploadState, uploadID: str) -> None:
        """
        Send the full parts of the tail.  With a part pool, up to
        L{PARTS_IN_FLIGHT} parts are sent there while this thread goes back
        to hashing the next bytes (so hashing and sending overlap, and S3
        works on several parts at once); without, parts go synchronously.
        """
        while True:
            sending = sum(size for _, size, _ in state.sending)
            if len(state.tail) - sending < PART_SIZE:
                return
            if len(state.sending) >= PARTS_IN_FLIGHT:
                self._settleFirst(state)
                continue
            key = self.uploadKey(uploadID)
            if state.mpu is None:
                state.mpu = self.objects.createMultipart(key)
            number = len(state.parts) + len(state.sending) + 1
            if number > MAX_PARTS:
                raise RegistryError("BLOB_UPLOAD_INVALID", message="upload too large", status=413)
            data = bytes(state.tail[sending : sending + PART_SIZE])
            future = self._submit(self.objects.uploadPart, key, state.mpu, number, data)
            state.sending.append((number, PART_SIZE, future))
            if self.partPool is None:
                self._settleFirst(state)

    def _submit(self, function, *args) -> Future:
        """
        Run C{function} in the part pool (or here and now, without one).
        """
        future: Future = Future()
        if self.partPool is None:
            try:
                future.set_result(function(*args))
            except BaseException as e:
                future.set_exception(e)
            return future

        def done(succeeded, result):
            if succeeded:
                future.set_result(result)
            else:
                future.set_exception(result.value)

        self.partPool.callInThreadWithCallback(done, function, *args)
        return future

    def settle(self, state: UploadState) -> None:
        """
        Wait for the parts being sent and account for them: they join the
        parts, their bytes leave the tail.

        @raise Exception: a send's failure (its bytes, and those of the
            parts after it, stay in the tail; they are sent again later
            under the same numbers).
        """
        while state.sending:
            self._settleFirst(state)

    def _settleFirst(self, state: UploadState) -> None:
        """
        Wait for the first part being sent and account for it; if it
        failed, wait for the others too, forget them all, and raise.
        """
        number, size, future = state.sending[0]
        try:
            etag = future.result()
        except BaseException:
            sending, state.sending = state.sending, []
            for _, _, other in sending[1:]:
                try:
                    other.result()
                except BaseException:
                    pass
            raise
        del state.sending[0]
        state.parts.append([number, etag, size])
        del state.tail[:size]

    def assemble(self, state: UploadState, uploadID: str, target: str) -> None:
        """
        Put the upload's whole content under C{target}: one PutObject when no
        part was sent (less than one part in all), else the tail as the last
        part, CompleteMultipartUpload to the upload's own key and a
        server-side copy to C{target}.  Safe to repeat after a failure.
        """
        self.settle(state)
        if not state.parts:
            self.objects.put(target, bytes(state.tail))
            self.discard(state, uploadID)
            return
        key = self.uploadKey(uploadID)
        if self.objects.head(key) != state.offset:
            from botocore.exceptions import ClientError

            parts = list(state.parts)
            if state.tail:
                number = len(parts) + 1
                etag = self.objects.uploadPart(key, state.mpu, number, bytes(state.tail))
                parts.append([number, etag, len(state.tail)])
            try:
                self.objects.completeMultipart(key, state.mpu, parts)
            except ClientError:
                # A completion that succeeded before a failure later on
                # leaves no multipart upload, but the object.
                if self.objects.head(key) != state.offset:
                    raise
        self.objects.copy(key, target, state.offset)
        self.objects.delete(key)

    def discard(self, state: UploadState | None, uploadID: str) -> None:
        """
        Remove what an upload left in S3: its multipart upload (and parts)
        and its assembled object.  An upload that never sent a part left
        nothing (L{None}: unknown, so look).
        """
        if state is not None:
            try:
                self.settle(state)
            except Exception:
                pass
        if state is not None and not state.mpu:
            return
        key = self.uploadKey(uploadID)
        if state is not None:
            self.objects.abortMultipart(key, state.mpu)
        self.objects.delete(key)

    # -- sessions ---------------------------------------------------------------

    def create(self, r, uploadID: str, state: UploadState) -> None:
        """
        Record a new session.
        """
        key = self.sessionKey(uploadID)
        pipe = r.pipeline(transaction=True)
        pipe.hset(key, mapping=state.fields())
        pipe.expire(key, self.sessionTTL)
        pipe.execute()

    def peek(self, r, uploadID: str) -> tuple[str, int] | None:
        """
        The session's repository and offset, without its lock, or L{None}.
        """
        repo, offset = r.hmget(self.sessionKey(uploadID), ["repo", "offset"])
        if repo is None or offset is None:
            return None
        return repo.decode(), int(offset)

    def acquire(self, r, uploadID: str, wait: float | None = None) -> str | None:
        """
        Take the session's lock, waiting up to C{wait} seconds (default
        L{LOCK_WAIT}).

        @return: the lock's token, or L{None} if it stayed taken.
        """
        token = uuid.uuid4().hex
        key = self.lockKey(uploadID)
        deadline = time.monotonic() + (LOCK_WAIT if wait is None else wait)
        delay = 0.005
        while True:
            if r.set(key, token, nx=True, px=LOCK_TTL_MS):
                return token
            if time.monotonic() >= deadline:
                return None
            time.sleep(delay)
            delay = min(delay * 2, 0.1)

    async def acquireAsync(self, uploadID: str, wait: float | None = None) -> str | None:
        """
        L{acquire} without holding a pool thread while waiting: each attempt
        is one quick Redis call, the pauses between them are the reactor's.
        """
        token = uuid.uuid4().hex
        key = self.lockKey(uploadID)
        deadline = time.monotonic() + (LOCK_WAIT if wait is None else wait)
        delay = 0.005
        while True:
            taken = await self.redis.run(
                lambda r: r.set(key, token, nx=True, px=LOCK_TTL_MS)
            )
            if taken:
                return token
            if time.monotonic() >= deadline:
                return None
            await deferLater(self.clock, delay)
            delay = min(delay * 2, 0.1)

    async def lockAndLoad(self, name: str, uploadID: str) -> tuple[UploadState, str]:
        """
        Take the session's lock (waiting up to L{LOCK_WAIT}) and load it.

        @raise RegistryError: C{BLOB_UPLOAD_UNKNOWN} for no such session,
            C{BLOB_UPLOAD_INVALID} (416) when another request kept it.
        """
        token = await self.acquireAsync(uploadID)
        if token is None:
            if await self.redis.run(self.peek, uploadID) is None:
                raise RegistryError("BLOB_UPLOAD_UNKNOWN", detail={"uuid": uploadID})
            raise RegistryError(
                "BLOB_UPLOAD_INVALID",
                message="another request is writing to this upload",
                status=416,
            )
        try:
            state = await self.redis.run(self.load, name, uploadID)
        except BaseException:
            await self.redis.run(self.release, uploadID, token)
            raise
        return state, token

    def keep(self, uploadID: str, token: str) -> "LockKeeper":
        """
        Start refreshing a lock just taken (call on the reactor thread).
        """
        return LockKeeper(self, uploadID, token, self.clock)

    def refresh(self, r, uploadID: str, token: str) -> bool:
        """
        Extend the lock's life.  @return: whether it was still ours.
        """
        return bool(
            self._refresh(keys=[self.lockKey(uploadID)], args=[token, LOCK_TTL_MS], client=r)
        )

    def release(self, r, uploadID: str, token: str | None) -> None:
        if token is None:
            return
        self._release(keys=[self.lockKey(uploadID)], args=[token], client=r)

    def load(self, r, name: str, uploadID: str) -> UploadState:
        """
        The session's saved state (call while holding its lock).

        @raise RegistryError: C{BLOB_UPLOAD_UNKNOWN} when there is no such
            session in repository C{name}.
        """
        fields = r.hgetall(self.sessionKey(uploadID))
        if not fields:
            raise RegistryError("BLOB_UPLOAD_UNKNOWN", detail={"uuid": uploadID})
        try:
            state = UploadState.fromFields(fields)
        except ValueError:
            raise RegistryError("BLOB_UPLOAD_UNKNOWN", detail={"uuid": uploadID})
        if state.repo != name:
            raise RegistryError("BLOB_UPLOAD_UNKNOWN", detail={"uuid": uploadID})
        return state

    def save(self, r, uploadID: str, token: str, state: UploadState) -> None:
        """
        Save the state, if the lock is still ours and the session exists.

        @raise RegistryError: C{BLOB_UPLOAD_INVALID} when the lock was lost
            (another request took over) and C{BLOB_UPLOAD_UNKNOWN} when the
            session ended meanwhile.
        """
        self.settle(state)
        args = [token, self.sessionTTL]
        for name, value in state.fields().items():
            args += [name, value]
        result = self._save(
            keys=[self.lockKey(uploadID), self.sessionKey(uploadID)], args=args, client=r
        )
        if result == -1:
            raise RegistryError(
                "BLOB_UPLOAD_INVALID",
                message="the upload was taken over by another request",
                status=409,
            )
        if result == 0:
            raise RegistryError("BLOB_UPLOAD_UNKNOWN", detail={"uuid": uploadID})


class LockKeeper:
    """
    Keeps a session lock alive while its holder works (a long PATCH, a
    completion copying a large blob): refreshes it every L{LOCK_REFRESH}
    seconds, in the Redis client's pool.  A dead instance stops refreshing,
    so its locks expire after L{LOCK_TTL_MS}.

    @ivar lost: set when a refresh found the lock taken by someone else
        (the holder's save then fails: it checks the token itself).
    """

    _log = Logger()

    def __init__(self, engine: "UploadEngine", uploadID: str, token: str, clock):
        from twisted.internet.task import LoopingCall

        self._engine = engine
        self._uploadID = uploadID
        self._token = token
        self._refreshing = False
        self.lost = False
        self._call = LoopingCall(self._refresh)
        self._call.clock = clock
        self._call.start(LOCK_REFRESH, now=False)

    def _refresh(self) -> None:
        if self._refreshing:
            return
        self._refreshing = True
        d = self._engine.redis.run(self._engine.refresh, self._uploadID, self._token)
        d.addCallbacks(self._refreshed, self._failed)

    def _refreshed(self, stillOurs: bool) -> None:
        self._refreshing = False
        if not stillOurs:
            self.lost = True
            self._log.warn("Lost the lock of upload {uploadID}", uploadID=self._uploadID)
            self.stop()

    def _failed(self, failure) -> None:
        self._refreshing = False
        self._log.failure("Refreshing the lock of upload {uploadID} failed", failure,
                          uploadID=self._uploadID)

    def stop(self, _=None):
        """
        Stop refreshing (passes its argument through, for callbacks).
        """
        if self._call.running:
            self._call.stop()
        return _


#: A stand-in file descriptor: L{QueuedWriter} drops data when its
#: descriptor is None, and these writers have none (they write to S3).
_NO_FILE = -1


class S3UploadWriter(QueuedWriter):
    """
    An upload body streamed into S3 parts.  L{QueuedWriter} does the
    queueing, back-pressure and flush notifications; each batch runs
    L{UploadEngine.feed} in a pool thread.

    @ivar upload: the L{UploadState}, or L{None} until loaded.
    @ivar uploadID: the multipart target's upload id.
    """

    _log = Logger()

    def __init__(self, runner, engine: UploadEngine, uploadID: str, upload: UploadState | None):
        super().__init__(runner, _NO_FILE, None)
        self.engine = engine
        self.uploadID = uploadID
        self.upload = upload

    def _writeBatch(self, chunks: list[bytes]) -> None:
        self.engine.feed(self.upload, self.uploadID, chunks)

    def _release(self, fd) -> None:
        """
        The request is over and its queue empty (see subclasses).
        """


class MonolithicS3Writer(S3UploadWriter):
    """
    The body of a single-request upload (POST C{?digest=}).  Nothing is in
    Redis: the request is the whole upload.  Unless L{committed}, what it
    sent to S3 is discarded when the request ends.
    """

    def __init__(self, runner, engine: UploadEngine, name: str, algorithm: str):
        super().__init__(runner, engine, newUploadID(), UploadState.fresh(name, algorithm))
        self.committed = False

    def _release(self, fd) -> None:
        if not self.committed and self.upload.mpu is not None:
            d = self._runner.run(self.engine.discard, self.upload, self.uploadID)
            d.addErrback(lambda f: self._log.failure("Discarding an upload failed", f))


class SessionS3Writer(S3UploadWriter):
    """
    A PATCH (or closing PUT) body appended to a session.

    Created synchronously when the headers are in; at once it takes the
    session's lock and loads the state in a pool thread, queueing the body
    meanwhile (the load counts as the batch in flight).  A C{start} that does
    not continue the session, or an unknown session, becomes the
    L{rejection} (and L{flushed} fails with it).  L{flushed} saves the state
    to Redis; the lock is let go when the request ends (or by the completion).

    @ivar done: set once a completion took the session over.
    """

    def __init__(self, runner, engine: UploadEngine, name: str, uploadID: str, start):
        super().__init__(runner, engine, uploadID, None)
        self.name = name
        self.start = start
        self.token: str | None = None
        self.done = False
        self._dirty = False
        self.keeper: LockKeeper | None = None
        # The load is the first batch: writes queue behind it.
        self._inFlight = True
        self._loading = Deferred.fromCoroutine(self._load())
        self._loading.addCallbacks(self._loaded, self._loadFailed)

    async def _load(self) -> UploadState:
        """
        Take the lock, load the state.
        """
        upload, self.token = await self.engine.lockAndLoad(self.name, self.uploadID)
        return upload

    def _loaded(self, upload: UploadState) -> None:
        self.upload = upload
        if self.token is not None:
            self.keeper = self.engine.keep(self.uploadID, self.token)
        if self.start is not None and self.start != upload.offset:
            self._reject(
                RegistryError(
                    "BLOB_UPLOAD_INVALID",
                    message=f"chunk starts at {self.start} but the upload holds "
                    f"{upload.offset} bytes",
                    status=416,
                    headers={"Range": f"0-{max(upload.offset - 1, 0)}"},
                )
            )
        self._batchDone(None, 0)

    def _loadFailed(self, failure) -> None:
        if failure.check(RegistryError):
            self._reject(failure.value)
            self._batchDone(None, 0)
        else:
            self._batchFailed(failure)

    def _reject(self, error: RegistryError) -> None:
        """
        Refuse the body: drop what queued, and let the client send the rest.
        """
        self.rejection = error
        self._pending = []
        self._pendingBytes = 0
        if self._paused and self.transport is not None:
            self._paused = False
            self.transport.resumeProducing()

    def _maybeStart(self) -> None:
        if self.rejection is not None:
            self._pending = []
            self._pendingBytes = 0
            return
        super()._maybeStart()

    def _writeBatch(self, chunks: list[bytes]) -> None:
        self._dirty = True
        super()._writeBatch(chunks)

    def flushed(self) -> Deferred:
        """
        Everything received so far is hashed, sent or in the tail, and the
        state is saved in Redis (so a status request anywhere sees it).
        Fails with the L{rejection}, if any.
        """
        d = super().flushed()
        d.addCallback(lambda _: self._saveIfDirty())
        return d

    def _saveIfDirty(self):
        if self.rejection is not None:
            raise self.rejection
        if not self._dirty or self.done:
            return self
        d = self._runner.run(
            self.engine.save, self.engine.redis.redis, self.uploadID, self.token, self.upload
        )

        def saved(_):
            # Only now: when a part in flight failed, the save failed with
            # it, and the end of the request saves again (consistently: the
            # failed part's bytes are back in the tail).
            self._dirty = False
            return self

        d.addCallback(saved)
        return d

    def _release(self, fd) -> None:
        """
        The request ended: save what it brought (also when the client left
        mid-body, or a part could not be sent: the bytes received are the
        session's progress, as with the local store's append, and the state
        is consistent whatever failed), then let go of the lock.
        """
        if self.done or self.token is None:
            return
        token, self.token = self.token, None
        dirty = self._dirty and self.rejection is None
        self._dirty = False
        upload = self.upload
        r = self.engine.redis.redis

        def finish():
            try:
                if dirty:
                    self.engine.save(r, self.uploadID, token, upload)
            except RegistryError as e:
                # Taken over or ended elsewhere: nothing of ours to keep.
                self._log.warn(
                    "Upload {uploadID} not saved: {reason}",
                    uploadID=self.uploadID, reason=e.message,
                )
            finally:
                self.engine.release(r, self.uploadID, token)

        d = self._runner.run(finish)
        d.addErrback(lambda f: self._log.failure("Saving an upload session failed", f))
        self.engine.finishing(d)
        if self.keeper is not None:
            d.addBoth(self.keeper.stop)

    def takeOver(self) -> tuple[UploadState, str, LockKeeper | None]:
        """
        For the completion: the loaded state, the lock's token and its
        keeper; the writer will neither save nor release them any more.
        """
        self.done = True
        token, self.token = self.token, None
        keeper, self.keeper = self.keeper, None
        return self.upload, token, keeper
