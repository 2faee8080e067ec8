# -*- test-case-name: tests.test_writers -*-
"""
Upload writers: request bodies streamed to disk, hashed on the way.

Twisted hands a request body to C{request.content.write} chunk by chunk as it
arrives.  A writer queues those chunks and lets one blocking batch at a time
run in the disk thread pool: C{os.writev}, then the whole batch to the hasher
in one call (both release the GIL, so hashing uses the second core; the
multi-buffer SHA-256 of L{zotwist.sha256mb} hashes the batches of concurrent
uploads together, in the background while the next batch is written, and
L{QueuedWriter.flushed} waits for it).  When more than L{HIGH_WATER} bytes
wait, it pauses the network transport; below L{LOW_WATER} it resumes it.  So
a blob never sits whole in memory, whatever its size, and a slow disk slows
the client rather than growing the server.
"""

import fcntl
import os
import shutil
from dataclasses import dataclass
from typing import Any

from twisted.internet.defer import Deferred, fail, succeed
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import implementer

from zotwist import oci, sha256mb
from zotwist.errors import RegistryError
from zotwist.storage.interfaces import IUploadWriter

#: Bytes queued per upload above which the socket is no longer read, and
#: below which it is read again: small enough that a few concurrent pushes
#: hold little memory, large enough that each trip to the pool writes and
#: hashes a few hundred KiB.
HIGH_WATER = 2 * 1024 * 1024
LOW_WATER = 512 * 1024
_HASH_READ = 1024 * 1024


@dataclass
class SessionState:
    """
    The in-memory part of an upload session: a running hash of the first
    C{hashedSize} bytes of the session's data file.

    The file only ever grows by appends, so when another process (or an
    earlier life of this one) appended more, the state catches up by hashing
    just the new bytes.
    """

    algorithm: str
    hasher: Any
    hashedSize: int = 0

    @classmethod
    def fresh(cls, algorithm: str) -> "SessionState":
        return cls(algorithm, oci.newHasher(algorithm), 0)

    def catchUp(self, fd: int, size: int) -> None:
        """
        Hash the bytes of C{fd} between C{hashedSize} and C{size}.  Blocking.
        """
        if size < self.hashedSize:
            # The file shrank: it is not the file we hashed.  Start over.
            self.hasher = oci.newHasher(self.algorithm)
            self.hashedSize = 0
        if self.hashedSize >= size:
            # Nothing new: in particular, do not wait for the hashing an
            # earlier PATCH of this session left running in the background.
            return
        while self.hashedSize < size:
            data = os.pread(fd, min(_HASH_READ, size - self.hashedSize), self.hashedSize)
            if not data:
                break
            self.hasher.update(data)
            self.hashedSize += len(data)
        sha256mb.settle(self.hasher)

    def digest(self) -> str:
        """
        @return: the digest of the first C{hashedSize} bytes.  Does not block
            once the writer is flushed (L{QueuedWriter.flushed} waits for the
            background hashing too).
        """
        return f"{self.algorithm}:{self.hasher.hexdigest()}"


def hashFile(path: str, algorithm: str) -> tuple[str, int]:
    """
    Hash a whole file.  Blocking: run it in the disk pool.

    @return: C{(digest, size)}.
    """
    hasher = oci.newHasher(algorithm)
    size = 0
    with open(path, "rb", buffering=0) as f:
        while True:
            data = f.read(_HASH_READ)
            if not data:
                break
            hasher.update(data)
            size += len(data)
    return f"{algorithm}:{hasher.hexdigest()}", size


@implementer(IUploadWriter)
class QueuedWriter:
    """
    Common machinery: a queue of chunks, one blocking batch in flight,
    back-pressure on the transport, flush notifications.

    @ivar transport: the producer to pause and resume (the request's
        transport); set by the web layer right after creation.
    @ivar received: bytes accepted from the network so far.
    @ivar rejection: see L{IUploadWriter.rejection}.
    @cvar settleOnFlush: whether L{flushed} also waits for the background
        hashing (L{zotwist.sha256mb}), so that the digest can be taken on
        the reactor thread at once.
    """

    _log = Logger()
    settleOnFlush = True

    def __init__(self, runner, fd: int | None, state: SessionState | None, rejection=None):
        self._runner = runner
        self._fd = fd
        self.state = state
        self.rejection = rejection
        self.transport = None
        self.received = 0
        self.written = 0
        self._pending: list[bytes] = []
        self._pendingBytes = 0
        self._inFlight = False
        self._paused = False
        self._failure: Failure | None = None
        self._waiters: list[Deferred] = []
        self._closed = False
        self._finalized = False

    # -- file-like surface used by twisted.web.http.Request ---------------

    def write(self, data: bytes) -> None:
        self.received += len(data)
        if self.rejection is not None or self._failure is not None or self._fd is None:
            return
        self._pending.append(data)
        self._pendingBytes += len(data)
        if self._pendingBytes > HIGH_WATER and not self._paused and self.transport is not None:
            self._paused = True
            self.transport.pauseProducing()
        self._maybeStart()

    def tell(self) -> int:
        return self.received

    def seek(self, offset: int, whence: int = 0) -> int:
        return 0

    def read(self, size: int = -1) -> bytes:
        return b""

    def close(self) -> None:
        self._closed = True
        if not self._inFlight and not self._pending:
            self._finalize()

    # -- the queue ----------------------------------------------------------

    def _maybeStart(self) -> None:
        if self._inFlight or not self._pending or self._failure is not None:
            return
        chunks, self._pending = self._pending, []
        size, self._pendingBytes = self._pendingBytes, 0
        self._inFlight = True
        d = self._runner.run(self._writeBatch, chunks)
        d.addCallbacks(self._batchDone, self._batchFailed, callbackArgs=(size,))

    def _writeBatch(self, chunks: list[bytes]) -> None:
        """
        Blocking: write and hash one batch, in order.
        """
        fd = self._fd
        self._beforeBatch(fd)
        remaining = chunks
        while remaining:
            written = os.writev(fd, remaining)
            # Regular files take everything at once; handle the rare short write.
            while remaining and written >= len(remaining[0]):
                written -= len(remaining[0])
                remaining = remaining[1:]
            if remaining and written:
                remaining = [remaining[0][written:]] + remaining[1:]
        if self.state is not None:
            sha256mb.hashChunks(self.state.hasher, chunks)
            self.state.hashedSize += sum(map(len, chunks))

    def _beforeBatch(self, fd: int) -> None:
        """
        Hook run in the thread before the first bytes of each batch.
        """

    def _batchDone(self, _: Any, size: int) -> None:
        self._inFlight = False
        self.written += size
        if self._paused and self._pendingBytes < LOW_WATER and self.transport is not None:
            self._paused = False
            self.transport.resumeProducing()
        if self._pending:
            self._maybeStart()
        elif (
            self.settleOnFlush
            and self.state is not None
            and sha256mb.pending(self.state.hasher)
        ):
            # The multi-buffer hasher hashes in the background: wait for it
            # in the pool, so a digest taken once flushed never blocks the
            # reactor.  Chunks arriving meanwhile start the next batch after.
            self._inFlight = True
            d = self._runner.run(sha256mb.settle, self.state.hasher)
            d.addCallbacks(self._batchDone, self._batchFailed, callbackArgs=(0,))
        else:
            self._notify()
            if self._closed:
                self._finalize()

    def _batchFailed(self, failure: Failure) -> None:
        self._inFlight = False
        self._log.failure("Writing an upload failed", failure)
        self._failure = failure
        self._pending = []
        self._pendingBytes = 0
        if self._paused and self.transport is not None:
            self._paused = False
            self.transport.resumeProducing()
        self._notify()
        if self._closed:
            self._finalize()

    def _notify(self) -> None:
        waiters, self._waiters = self._waiters, []
        for d in waiters:
            if self._failure is not None:
                d.errback(self._failure)
            else:
                d.callback(self)

    def flushed(self) -> Deferred:
        if self._failure is not None:
            return fail(self._failure)
        if not self._inFlight and not self._pending:
            return succeed(self)
        d = Deferred()
        self._waiters.append(d)
        return d

    def _finalize(self) -> None:
        if self._finalized:
            return
        self._finalized = True
        fd, self._fd = self._fd, None
        self._release(fd)

    def _release(self, fd: int | None) -> None:
        """
        Hook: give back the file descriptor (and whatever else) once the
        request is over and the queue is empty.
        """
        if fd is not None:
            os.close(fd)


class FreshWriter(QueuedWriter):
    """
    The body of a single-request upload, written to a new file in a private
    directory.  Unless L{commit} ran, the directory is removed when the
    request ends, so an abandoned or failed upload leaves nothing behind.
    """

    def __init__(self, runner, directory: str, algorithm: str):
        os.makedirs(directory, exist_ok=True)
        self.directory = directory
        self.path = os.path.join(directory, "data")
        fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o644)
        super().__init__(runner, fd, SessionState.fresh(algorithm))
        self.committed = False

    def _release(self, fd: int | None) -> None:
        if fd is not None:
            os.close(fd)
        if not self.committed:
            self._runner.run(shutil.rmtree, self.directory, True)


class AppendWriter(QueuedWriter):
    """
    A PATCH (or closing PUT) body appended to an upload session's data file.

    The file is locked (C{flock}) for the whole request, so two requests
    cannot interleave their bytes, even from two processes.  A C{start}
    that does not continue the session exactly is refused before any byte is
    written (416), which is how out-of-order chunks are caught.

    A PATCH answers once its bytes are written, not hashed: the session's
    hash goes on in the background into the next PATCH, so a chunked
    upload is not held to one stream's hashing speed at every chunk
    boundary.  The closing PUT takes the digest in the disk pool, where
    waiting for the hash is fine.
    """

    settleOnFlush = False

    def __init__(
        self, runner, dataPath: str, state: SessionState, start: int | None, length: int | None
    ):
        # Read access too: catching up the session hash reads earlier bytes.
        fd = os.open(dataPath, os.O_RDWR | os.O_APPEND | os.O_CLOEXEC)
        rejection = None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            fd = None
            rejection = RegistryError(
                "BLOB_UPLOAD_INVALID",
                message="another request is writing to this upload",
                status=416,
            )
        else:
            size = os.fstat(fd).st_size
            self.startSize = size
            if start is not None and start != size:
                rejection = RegistryError(
                    "BLOB_UPLOAD_INVALID",
                    message=f"chunk starts at {start} but the upload holds {size} bytes",
                    status=416,
                    headers={"Range": f"0-{max(size - 1, 0)}"},
                )
        super().__init__(runner, fd, state, rejection)
        self._caughtUp = False

    def _beforeBatch(self, fd: int) -> None:
        if not self._caughtUp:
            self._caughtUp = True
            self.state.catchUp(fd, os.fstat(fd).st_size)

    def _release(self, fd: int | None) -> None:
        if fd is not None:
            os.close(fd)

    def ensureCaughtUp(self) -> Deferred:
        """
        Make sure the session hash covers the whole file, also when this
        request carried no body (so no batch ran).
        """
        if self._fd is None or self._caughtUp:
            return succeed(None)
        self._caughtUp = True
        fd = self._fd
        return self._runner.run(lambda: self.state.catchUp(fd, os.fstat(fd).st_size))


@implementer(IUploadWriter)
class DiscardWriter:
    """
    Swallows a body that cannot be accepted (or that no handler reads),
    keeping only its length, so the client still gets its error answer.
    """

    def __init__(self, rejection=None):
        self.rejection = rejection
        self.received = 0
        self.transport = None

    def write(self, data: bytes) -> None:
        self.received += len(data)

    def tell(self) -> int:
        return self.received

    def seek(self, offset: int, whence: int = 0) -> int:
        return 0

    def read(self, size: int = -1) -> bytes:
        return b""

    def flushed(self) -> Deferred:
        return succeed(self)

    def close(self) -> None:
        pass
