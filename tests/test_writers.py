"""
Tests for L{zotwist.storage.writers}: request bodies streamed to disk and
hashed on the way, with back-pressure on the transport.

These use a real L{ThreadPoolRunner}: the order of writes, the moment a
batch completes and the pause/resume calls only mean something when the
disk work really happens on another thread.
"""

import hashlib
import os
import time

from twisted.internet import reactor
from twisted.internet.task import deferLater
from twisted.trial.unittest import SynchronousTestCase, TestCase
from zope.interface.verify import verifyObject

from zotwist.errors import RegistryError
from zotwist.storage import writers
from zotwist.storage.interfaces import IUploadWriter
from zotwist.storage.writers import (
    HIGH_WATER,
    LOW_WATER,
    AppendWriter,
    DiscardWriter,
    FreshWriter,
    QueuedWriter,
    SessionState,
    hashFile,
)
from zotwist.threads import ThreadPoolRunner

MiB = 1024 * 1024


class FakeTransport:
    """
    Records C{pauseProducing}/C{resumeProducing} calls, with how many bytes
    the writer had written at that moment.

    @ivar calls: a list of C{(name, writtenSoFar)}.
    """

    def __init__(self):
        self.calls: list[tuple[str, int]] = []
        self.writer = None

    def pauseProducing(self):
        self.calls.append(("pause", self.writer.written))

    def resumeProducing(self):
        self.calls.append(("resume", self.writer.written))

    def names(self) -> list[str]:
        """
        The calls' names only.
        """
        return [name for name, _ in self.calls]


def chunks(count: int, size: int) -> list[bytes]:
    """
    C{count} distinct chunks of C{size} bytes each.
    """
    return [bytes([i % 251]) * (size - 4) + i.to_bytes(4, "big") for i in range(count)]


def readFile(path: str) -> bytes:
    """
    The content of C{path}.
    """
    with open(path, "rb") as f:
        return f.read()


class RecordingHasher:
    """
    Wraps a hashlib object and records what it is fed.
    """

    def __init__(self, hasher):
        self._hasher = hasher
        self.updates: list[bytes] = []

    def update(self, data):
        self.updates.append(bytes(data))
        self._hasher.update(data)

    def hexdigest(self):
        return self._hasher.hexdigest()


class ThreadedWriterCase(TestCase):
    """
    Common set-up: a started thread pool and a scratch directory.
    """

    def setUp(self):
        self.runner = ThreadPoolRunner(reactor, minThreads=1, maxThreads=4, name="writers")
        self.runner.startService()
        self.addCleanup(self.runner.stopService)
        self.root = self.mktemp()
        os.makedirs(self.root)

    async def waitUntil(self, predicate, timeout: float = 10.0) -> None:
        """
        Let the reactor run until C{predicate()} holds.
        """
        deadline = time.monotonic() + timeout
        while not predicate():
            if time.monotonic() > deadline:
                self.fail("condition not reached in time")
            await deferLater(reactor, 0.005, lambda: None)

    def fresh(self, algorithm: str = "sha256") -> FreshWriter:
        """
        A L{FreshWriter} in a new directory under the scratch root, with a
        L{FakeTransport}.
        """
        writer = FreshWriter(self.runner, os.path.join(self.root, "up", os.urandom(4).hex()),
                             algorithm)
        writer.transport = FakeTransport()
        writer.transport.writer = writer
        return writer

    def sessionFile(self, content: bytes = b"") -> str:
        """
        An upload session's data file holding C{content}.
        """
        path = os.path.join(self.root, "data-" + os.urandom(4).hex())
        with open(path, "wb") as f:
            f.write(content)
        return path


class FreshWriterTests(ThreadedWriterCase):
    """
    L{FreshWriter}: a single-request upload into a private directory.
    """

    def test_interface(self):
        """
        It provides L{IUploadWriter}.
        """
        writer = self.fresh()
        self.addCleanup(writer.close)
        self.assertTrue(verifyObject(IUploadWriter, writer))
        self.assertIsNone(writer.rejection)

    async def test_writtenAndHashedInOrder(self):
        """
        Chunks arriving while earlier batches are on their way to disk end
        up in the file in order, and the running hash is the file's.
        """
        writer = self.fresh()
        parts = chunks(200, 1000 + 7)
        for i, part in enumerate(parts):
            writer.write(part)
            if i % 17 == 0:
                # Let some batches complete in between.
                await deferLater(reactor, 0, lambda: None)
        result = await writer.flushed()
        self.assertIs(result, writer)
        data = b"".join(parts)
        self.assertEqual(readFile(writer.path), data)
        self.assertEqual(writer.state.digest(), "sha256:" + hashlib.sha256(data).hexdigest())
        self.assertEqual(writer.state.hashedSize, len(data))
        self.assertEqual(writer.written, len(data))
        self.assertEqual(writer.received, len(data))
        self.assertEqual(writer.tell(), len(data))
        writer.committed = True
        writer.close()

    async def test_sha512(self):
        """
        A sha512 writer hashes with sha512.
        """
        writer = self.fresh("sha512")
        writer.write(b"abc")
        writer.write(b"def")
        await writer.flushed()
        self.assertEqual(writer.state.digest(), "sha512:" + hashlib.sha512(b"abcdef").hexdigest())
        writer.close()

    async def test_flushed(self):
        """
        With nothing queued, L{flushed} has already fired; with a write on
        its way it fires once the bytes are on disk.
        """
        writer = self.fresh()
        self.assertIs(self.successResultOf(writer.flushed()), writer)
        writer.write(b"x" * 5000)
        d = writer.flushed()
        self.assertNoResult(d)
        self.assertIs(await d, writer)
        self.assertEqual(readFile(writer.path), b"x" * 5000)
        self.assertIs(self.successResultOf(writer.flushed()), writer)
        writer.close()

    async def test_severalWaiters(self):
        """
        Every L{flushed} Deferred taken while writing fires.
        """
        writer = self.fresh()
        writer.write(b"a")
        first = writer.flushed()
        writer.write(b"b")
        second = writer.flushed()
        self.assertEqual([await first, await second], [writer, writer])
        self.assertEqual(readFile(writer.path), b"ab")
        writer.close()

    async def test_backPressure(self):
        """
        When more than L{HIGH_WATER} bytes queue up behind a batch in
        flight, the transport is paused (once); it is resumed after the
        queue has drained below L{LOW_WATER}, before L{flushed} fires.
        """
        self.assertLess(LOW_WATER, HIGH_WATER)
        writer = self.fresh()
        transport = writer.transport
        writer.write(b"first")  # now in flight: nothing below can start
        for _ in range(HIGH_WATER // MiB):
            writer.write(b"\0" * MiB)
        self.assertEqual(transport.calls, [])  # exactly HIGH_WATER queued
        writer.write(b"\1")
        self.assertEqual(transport.names(), ["pause"])
        writer.write(b"\2" * MiB)
        self.assertEqual(transport.names(), ["pause"])
        await writer.flushed()
        self.assertEqual(transport.names(), ["pause", "resume"])
        total = 5 + HIGH_WATER + 1 + MiB
        self.assertEqual(os.path.getsize(writer.path), total)
        self.assertEqual(writer.written, total)
        writer.close()

    async def test_noPauseWithoutTransport(self):
        """
        A writer whose transport was never set still works past the
        high-water mark.
        """
        writer = self.fresh()
        writer.transport = None
        writer.write(b"a")
        writer.write(b"\0" * (HIGH_WATER + 1))
        await writer.flushed()
        self.assertEqual(writer.written, HIGH_WATER + 2)
        writer.close()

    async def test_closeRemovesUncommitted(self):
        """
        Closing a writer that was not committed removes its directory.
        """
        writer = self.fresh()
        writer.write(b"data")
        await writer.flushed()
        self.assertTrue(os.path.isdir(writer.directory))
        writer.close()
        await self.waitUntil(lambda: not os.path.exists(writer.directory))

    async def test_closeWhileWriting(self):
        """
        Closing while a batch is in flight waits for it, then removes the
        directory; the bytes queued were still written (no write to a
        closed descriptor).
        """
        writer = self.fresh()
        writer.write(b"x" * MiB)
        writer.write(b"y" * MiB)
        writer.close()
        self.assertTrue(os.path.isdir(writer.directory))
        await self.waitUntil(lambda: not os.path.exists(writer.directory))
        self.assertEqual(writer.written, 2 * MiB)

    async def test_committedKept(self):
        """
        A committed writer's close leaves the directory alone (the store
        moved the data away and cleans up itself).
        """
        writer = self.fresh()
        writer.write(b"data")
        await writer.flushed()
        writer.committed = True
        writer.close()
        # Give a wrongly scheduled removal the chance to happen.
        await deferLater(reactor, 0.05, lambda: None)
        self.assertEqual(readFile(writer.path), b"data")

    def test_fileLikeSurface(self):
        """
        C{seek} and C{read} are harmless no-ops for Twisted's benefit.
        """
        writer = self.fresh()
        self.addCleanup(writer.close)
        self.assertEqual(writer.seek(0), 0)
        self.assertEqual(writer.read(), b"")
        self.assertEqual(writer.tell(), 0)


class QueuedWriterFailureTests(ThreadedWriterCase):
    """
    A write error reaches L{flushed}, and the transport is not left paused.
    """

    async def test_writeError(self):
        """
        A descriptor that cannot be written fails L{flushed} with the
        L{OSError}; a paused transport is resumed; later writes are ignored.
        """
        path = self.sessionFile()
        fd = os.open(path, os.O_RDONLY)
        writer = QueuedWriter(self.runner, fd, SessionState.fresh("sha256"))
        writer.transport = FakeTransport()
        writer.transport.writer = writer
        writer.write(b"a")
        writer.write(b"\0" * (HIGH_WATER + 1))
        self.assertEqual(writer.transport.names(), ["pause"])
        with self.assertRaises(OSError):
            await writer.flushed()
        self.assertEqual(len(self.flushLoggedErrors(OSError)), 1)
        self.assertEqual(writer.transport.names(), ["pause", "resume"])
        writer.write(b"more")
        self.failureResultOf(writer.flushed(), OSError)
        writer.close()
        self.assertRaises(OSError, os.fstat, fd)  # closed by the writer


class AppendWriterTests(ThreadedWriterCase):
    """
    L{AppendWriter}: a chunk appended to an upload session's file.
    """

    def test_interface(self):
        """
        It provides L{IUploadWriter}.
        """
        writer = AppendWriter(self.runner, self.sessionFile(), SessionState.fresh("sha256"),
                              None, None)
        self.addCleanup(writer.close)
        self.assertTrue(verifyObject(IUploadWriter, writer))

    async def test_appendsAndCatchesUp(self):
        """
        The body is appended at the start it claimed; a session state that
        has not seen the bytes already in the file (after a restart, or
        when another process appended them) first catches up with them.
        """
        path = self.sessionFile(b"hello")
        state = SessionState.fresh("sha256")
        writer = AppendWriter(self.runner, path, state, 5, 6)
        self.assertIsNone(writer.rejection)
        self.assertEqual(writer.startSize, 5)
        writer.write(b" wor")
        writer.write(b"ld")
        await writer.flushed()
        writer.close()
        self.assertEqual(readFile(path), b"hello world")
        self.assertEqual(state.digest(), "sha256:" + hashlib.sha256(b"hello world").hexdigest())
        self.assertEqual(state.hashedSize, 11)

    def hashedState(self, path: str, algorithm: str = "sha256") -> SessionState:
        """
        A session state that has already hashed all of C{path}, as after
        earlier requests of the same session in this process.
        """
        state = SessionState.fresh(algorithm)
        fd = os.open(path, os.O_RDONLY)
        try:
            state.catchUp(fd, os.fstat(fd).st_size)
        finally:
            os.close(fd)
        return state

    async def test_appendWithoutStart(self):
        """
        Without a Content-Range (start L{None}) the body is appended to
        whatever the session holds.
        """
        path = self.sessionFile(b"abc")
        state = self.hashedState(path)
        writer = AppendWriter(self.runner, path, state, None, None)
        self.assertIsNone(writer.rejection)
        writer.write(b"def")
        await writer.flushed()
        writer.close()
        self.assertEqual(readFile(path), b"abcdef")
        self.assertEqual(state.digest(), "sha256:" + hashlib.sha256(b"abcdef").hexdigest())

    async def test_consecutiveChunks(self):
        """
        The chunks of one session, each its own request with its own
        writer, append in turn and keep one running hash (the usual flow:
        the state was created with the empty session).
        """
        path = self.sessionFile()
        state = SessionState.fresh("sha512")
        expected = b""
        for part in chunks(4, 3000):
            writer = AppendWriter(self.runner, path, state, len(expected), len(part))
            self.assertIsNone(writer.rejection)
            writer.write(part)
            await writer.flushed()
            writer.close()
            expected += part
        self.assertEqual(readFile(path), expected)
        self.assertEqual(state.digest(), "sha512:" + hashlib.sha512(expected).hexdigest())
        self.assertEqual(state.hashedSize, len(expected))

    async def test_wrongStart(self):
        """
        A start other than the file size is refused with 416 and a C{Range}
        header, before any byte is written.
        """
        path = self.sessionFile(b"hello")
        for start in (0, 4, 6, 100):
            writer = AppendWriter(self.runner, path, SessionState.fresh("sha256"), start, 3)
            error = writer.rejection
            self.assertIsInstance(error, RegistryError)
            self.assertEqual(error.code, "BLOB_UPLOAD_INVALID")
            self.assertEqual(error.status, 416)
            self.assertEqual(error.headers, {"Range": "0-4"})
            writer.write(b"xyz")
            await writer.flushed()
            writer.close()
        self.assertEqual(readFile(path), b"hello")

    def test_wrongStartOnEmptySession(self):
        """
        For an empty session the C{Range} header is C{0-0}, as the Docker
        registry writes it.
        """
        writer = AppendWriter(self.runner, self.sessionFile(), SessionState.fresh("sha256"), 3, 3)
        self.addCleanup(writer.close)
        self.assertEqual(writer.rejection.status, 416)
        self.assertEqual(writer.rejection.headers, {"Range": "0-0"})

    async def test_locked(self):
        """
        While one writer has the file, a second gets a 416 rejection and
        writes nothing; once the first is closed, a third may write.
        """
        path = self.sessionFile(b"ab")
        state = self.hashedState(path)
        first = AppendWriter(self.runner, path, state, 2, None)
        self.assertIsNone(first.rejection)
        second = AppendWriter(self.runner, path, state, 2, None)
        self.assertIsNotNone(second.rejection)
        self.assertEqual(second.rejection.code, "BLOB_UPLOAD_INVALID")
        self.assertEqual(second.rejection.status, 416)
        second.write(b"XX")
        await second.flushed()
        second.close()
        first.write(b"cd")
        await first.flushed()
        first.close()
        third = AppendWriter(self.runner, path, state, 4, None)
        self.assertIsNone(third.rejection)
        third.write(b"ef")
        await third.flushed()
        third.close()
        self.assertEqual(readFile(path), b"abcdef")
        self.assertEqual(state.digest(), "sha256:" + hashlib.sha256(b"abcdef").hexdigest())

    async def test_ensureCaughtUp(self):
        """
        Without any body, L{AppendWriter.ensureCaughtUp} still brings the
        session hash up to the whole file.
        """
        path = self.sessionFile(b"restart")
        state = SessionState.fresh("sha256")
        writer = AppendWriter(self.runner, path, state, None, 0)
        await writer.flushed()
        await writer.ensureCaughtUp()
        writer.close()
        self.assertEqual(state.hashedSize, 7)
        self.assertEqual(state.digest(), "sha256:" + hashlib.sha256(b"restart").hexdigest())

    def test_missingFile(self):
        """
        A session file that does not exist raises L{FileNotFoundError}
        (the store turns it into C{BLOB_UPLOAD_UNKNOWN}).
        """
        self.assertRaises(
            FileNotFoundError, AppendWriter, self.runner, os.path.join(self.root, "nope"),
            SessionState.fresh("sha256"), None, None,
        )


class SessionStateTests(SynchronousTestCase):
    """
    L{SessionState.catchUp} hashes only what it has not seen yet.
    """

    def setUp(self):
        self.path = self.mktemp()
        with open(self.path, "wb") as f:
            f.write(b"abc")
        self.fd = os.open(self.path, os.O_RDWR | os.O_APPEND)
        self.addCleanup(os.close, self.fd)

    def test_onlyNewBytes(self):
        """
        After catching up to 3 bytes and 3 more being appended, only the new
        3 are read and hashed.
        """
        state = SessionState.fresh("sha256")
        state.catchUp(self.fd, 3)
        self.assertEqual(state.hashedSize, 3)
        recorder = state.hasher = RecordingHasher(state.hasher)
        os.write(self.fd, b"def")
        state.catchUp(self.fd, 6)
        self.assertEqual(recorder.updates, [b"def"])
        self.assertEqual(state.hashedSize, 6)
        self.assertEqual(state.digest(), "sha256:" + hashlib.sha256(b"abcdef").hexdigest())
        state.catchUp(self.fd, 6)
        self.assertEqual(recorder.updates, [b"def"])

    def test_upToSizeOnly(self):
        """
        Bytes past the given size are left for later.
        """
        os.write(self.fd, b"def")
        state = SessionState.fresh("sha256")
        state.catchUp(self.fd, 4)
        self.assertEqual(state.hashedSize, 4)
        self.assertEqual(state.digest(), "sha256:" + hashlib.sha256(b"abcd").hexdigest())

    def test_shrunkFileStartsOver(self):
        """
        A file shorter than what was hashed is not the same file: the hash
        starts over from its beginning.
        """
        state = SessionState.fresh("sha256")
        state.catchUp(self.fd, 3)
        os.ftruncate(self.fd, 0)
        os.write(self.fd, b"x")
        state.catchUp(self.fd, 1)
        self.assertEqual(state.hashedSize, 1)
        self.assertEqual(state.digest(), "sha256:" + hashlib.sha256(b"x").hexdigest())

    def test_sizeBeyondFile(self):
        """
        A size larger than the file stops at the end of the file.
        """
        state = SessionState.fresh("sha512")
        state.catchUp(self.fd, 100)
        self.assertEqual(state.hashedSize, 3)
        self.assertEqual(state.digest(), "sha512:" + hashlib.sha512(b"abc").hexdigest())

    def test_largeFile(self):
        """
        Files larger than one read are hashed in several reads.
        """
        data = os.urandom(int(2.5 * MiB))
        os.write(self.fd, data)
        state = SessionState.fresh("sha256")
        recorder = state.hasher = RecordingHasher(state.hasher)
        state.catchUp(self.fd, 3 + len(data))
        self.assertGreater(len(recorder.updates), 1)
        self.assertEqual(state.digest(), "sha256:" + hashlib.sha256(b"abc" + data).hexdigest())


class HashFileTests(SynchronousTestCase):
    """
    L{hashFile}.
    """

    def write(self, data: bytes) -> str:
        """
        A file holding C{data}.
        """
        path = self.mktemp()
        with open(path, "wb") as f:
            f.write(data)
        return path

    def test_hashFile(self):
        """
        The digest and size of a file larger than one read.
        """
        data = os.urandom(int(2.5 * MiB) + 3)
        path = self.write(data)
        self.assertEqual(hashFile(path, "sha256"),
                         ("sha256:" + hashlib.sha256(data).hexdigest(), len(data)))
        self.assertEqual(hashFile(path, "sha512"),
                         ("sha512:" + hashlib.sha512(data).hexdigest(), len(data)))

    def test_empty(self):
        """
        An empty file has the digest of no bytes.
        """
        self.assertEqual(hashFile(self.write(b""), "sha256"),
                         ("sha256:" + hashlib.sha256(b"").hexdigest(), 0))

    def test_missing(self):
        """
        A missing file raises L{FileNotFoundError}.
        """
        self.assertRaises(FileNotFoundError, hashFile, self.mktemp(), "sha256")


class DiscardWriterTests(SynchronousTestCase):
    """
    L{DiscardWriter} swallows a body, counting it.
    """

    def test_discard(self):
        """
        It provides L{IUploadWriter}, counts what it gets, keeps its
        rejection and is always flushed.
        """
        error = RegistryError("DENIED")
        writer = DiscardWriter(error)
        self.assertTrue(verifyObject(IUploadWriter, writer))
        writer.write(b"abc")
        writer.write(b"de")
        self.assertEqual(writer.tell(), 5)
        self.assertEqual(writer.read(), b"")
        self.assertEqual(writer.seek(0), 0)
        self.assertIs(writer.rejection, error)
        self.assertIs(self.successResultOf(writer.flushed()), writer)
        writer.close()
        self.assertIsNone(DiscardWriter().rejection)


class ConstantsTests(SynchronousTestCase):
    """
    The water marks.
    """

    def test_waterMarks(self):
        """
        The low-water mark is below the high-water mark, which bounds the
        memory of one upload to a few MiB.
        """
        self.assertLess(writers.LOW_WATER, writers.HIGH_WATER)
        self.assertLessEqual(writers.HIGH_WATER, 64 * MiB)
