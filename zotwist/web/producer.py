# -*- test-case-name: tests.test_producer -*-
"""
Sending a blob, or one range of it, without holding it in memory.

L{BlobProducer} is a push producer: it reads a chunk in the disk pool, writes
it to the request, and reads the next only while the transport is not
paused.  At most one chunk is in memory per download, the reactor thread
never blocks on the disk, and a client that reads slowly slows only itself.
"""

from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IPushProducer
from twisted.logger import Logger
from zope.interface import implementer

CHUNK_SIZE = 1024 * 1024


@implementer(IPushProducer)
class BlobProducer:
    """
    Write C{length} bytes of C{reader} from C{offset} to C{request}.

    @ivar done: a L{Deferred} firing when everything was written (the request
        is not finished by the producer), or failing when the client left or
        the read failed.
    """

    _log = Logger()

    def __init__(self, request, reader, offset: int, length: int, chunkSize: int = CHUNK_SIZE):
        self._request = request
        self._reader = reader
        self._offset = offset
        self._remaining = length
        self._chunkSize = chunkSize
        self._paused = False
        self._reading = False
        self._stopped = False
        self._looping = False
        self.done = Deferred()

    def start(self) -> Deferred:
        self._request.registerProducer(self, True)
        self._readNext()
        return self.done

    def _readNext(self) -> None:
        """
        Read chunks while nothing stops us.  A loop, not recursion: a read
        that completes at once (an inline runner, a cached file) would
        otherwise nest one call per chunk.
        """
        if self._looping:
            return
        self._looping = True
        try:
            while not (self._paused or self._reading or self._stopped):
                if self._remaining <= 0:
                    self._finish()
                    return
                self._reading = True
                d = self._reader.read(self._offset, min(self._chunkSize, self._remaining))
                d.addCallbacks(self._gotChunk, self._readFailed)
        finally:
            self._looping = False

    def _gotChunk(self, data: bytes) -> None:
        self._reading = False
        if self._stopped:
            self._closeReader()
            return
        if not data:
            self._fail(OSError("blob file is shorter than its recorded size"))
            return
        self._offset += len(data)
        self._remaining -= len(data)
        self._request.write(data)
        self._readNext()

    def _readFailed(self, failure) -> None:
        self._reading = False
        if self._stopped:
            self._closeReader()
            return
        self._fail(failure)

    def _closeReader(self) -> None:
        """
        Close the file, but never while a read is in flight in the pool: its
        descriptor could be reused by another open and the read would then
        return another file's bytes.
        """
        if not self._reading and self._reader is not None:
            reader, self._reader = self._reader, None
            reader.close()

    def _finish(self) -> None:
        if self._stopped:
            return
        self._stopped = True
        self._request.unregisterProducer()
        self._closeReader()
        self.done.callback(None)

    def _fail(self, reason) -> None:
        if self._stopped:
            return
        self._stopped = True
        self._request.unregisterProducer()
        self._closeReader()
        self.done.errback(reason)

    def pauseProducing(self) -> None:
        self._paused = True

    def resumeProducing(self) -> None:
        self._paused = False
        self._readNext()

    def stopProducing(self) -> None:
        if self._stopped:
            return
        self._stopped = True
        self._closeReader()
        self.done.errback(ConnectionError("client went away during a download"))
