"""
Tests for L{zotwist.web.producer.BlobProducer} (sending a blob without
holding it in memory) and for L{zotwist.web.api.parseByteRange} (which part
of it to send).
"""

from twisted.internet.defer import Deferred, fail, succeed
from twisted.internet.interfaces import IPushProducer
from twisted.trial.unittest import SynchronousTestCase
from zope.interface.verify import verifyObject

from zotwist.web.api import parseByteRange
from zotwist.web.producer import BlobProducer

DATA = bytes(range(256)) * 40  # 10240 bytes, every offset distinguishable


class FakeRequest:
    """
    The parts of a request a producer uses; it records what happens and can
    push back (pause the producer) after a number of writes.

    @ivar writes: the chunks written, in order.
    @ivar events: C{("register", producer, streaming)}, C{("unregister",)}.
    """

    def __init__(self, pauseAfterWrites: int | None = None):
        self.writes: list[bytes] = []
        self.events: list[tuple] = []
        self.producer = None
        self._pauseAfter = pauseAfterWrites

    def registerProducer(self, producer, streaming):
        self.producer = producer
        self.events.append(("register", producer, streaming))

    def unregisterProducer(self):
        self.producer = None
        self.events.append(("unregister",))

    def write(self, data: bytes):
        self.writes.append(data)
        if self._pauseAfter is not None and len(self.writes) % self._pauseAfter == 0:
            self.producer.pauseProducing()

    def body(self) -> bytes:
        """
        Everything written so far.
        """
        return b"".join(self.writes)


class FakeReader:
    """
    An L{zotwist.storage.interfaces.IBlobReader} over bytes.

    With C{manual} set, each read returns a Deferred the test fires with
    L{complete}; otherwise reads have already fired.

    @ivar reads: C{(offset, length)} of every read, in order.
    @ivar closes: for each close, whether a read was in flight at that moment.
    """

    def __init__(self, data: bytes, manual: bool = False):
        self._data = data
        self.size = len(data)
        self._manual = manual
        self.reads: list[tuple[int, int]] = []
        self.pending: Deferred | None = None
        self._pendingRange: tuple[int, int] | None = None
        self.closes: list[bool] = []

    def read(self, offset: int, length: int) -> Deferred:
        assert not self.closes, "read after close"
        assert self.pending is None, "two reads in flight"
        self.reads.append((offset, length))
        if not self._manual:
            return succeed(self._data[offset:offset + length])
        self.pending = Deferred()
        self._pendingRange = (offset, length)
        return self.pending

    def complete(self) -> None:
        """
        Let the read in flight finish with its bytes.
        """
        d, self.pending = self.pending, None
        offset, length = self._pendingRange
        d.callback(self._data[offset:offset + length])

    def failRead(self, reason: Exception) -> None:
        """
        Let the read in flight fail.
        """
        d, self.pending = self.pending, None
        d.errback(reason)

    def close(self) -> None:
        self.closes.append(self.pending is not None)


class BlobProducerTests(SynchronousTestCase):
    """
    L{BlobProducer} writes a range chunk by chunk, honouring pause and stop.
    """

    def test_interface(self):
        """
        It is an L{IPushProducer}, registered as streaming.
        """
        request = FakeRequest()
        producer = BlobProducer(request, FakeReader(DATA), 0, len(DATA))
        self.assertTrue(verifyObject(IPushProducer, producer))
        self.successResultOf(producer.start())
        self.assertEqual(request.events[0], ("register", producer, True))

    def test_whole(self):
        """
        The whole blob is written in order in chunks of at most the chunk
        size; then the producer unregisters, closes the reader once and
        C{done} fires.
        """
        request = FakeRequest()
        reader = FakeReader(DATA)
        producer = BlobProducer(request, reader, 0, len(DATA), chunkSize=1000)
        self.assertIsNone(self.successResultOf(producer.start()))
        self.assertEqual(request.body(), DATA)
        self.assertEqual([len(w) for w in request.writes], [1000] * 10 + [240])
        self.assertEqual(request.events[1:], [("unregister",)])
        self.assertEqual(reader.closes, [False])

    def test_range(self):
        """
        A range is read from its offset and stops at its length.
        """
        request = FakeRequest()
        reader = FakeReader(DATA)
        producer = BlobProducer(request, reader, 100, 2500, chunkSize=1000)
        self.successResultOf(producer.start())
        self.assertEqual(request.body(), DATA[100:2600])
        self.assertEqual(reader.reads, [(100, 1000), (1100, 1000), (2100, 500)])
        self.assertEqual(reader.closes, [False])

    def test_empty(self):
        """
        A zero-length range reads nothing and finishes at once.
        """
        request = FakeRequest()
        reader = FakeReader(DATA)
        self.successResultOf(BlobProducer(request, reader, 5, 0).start())
        self.assertEqual(reader.reads, [])
        self.assertEqual(request.writes, [])
        self.assertEqual(request.events[1:], [("unregister",)])
        self.assertEqual(reader.closes, [False])

    def test_manySynchronousChunks(self):
        """
        A reader whose reads complete at once (the disk work done inline, as
        with L{zotwist.threads.InlineRunner}) can serve a blob of a thousand
        chunks (1 GiB in the default chunk size).
        """
        data = DATA[:4000]
        request = FakeRequest()
        producer = BlobProducer(request, FakeReader(data), 0, len(data), chunkSize=4)
        self.successResultOf(producer.start())
        self.assertEqual(request.body(), data)

    def test_pauseStopsReading(self):
        """
        While paused no new read starts; a read already in flight is still
        written when it completes; resuming reads on.
        """
        request = FakeRequest()
        reader = FakeReader(DATA, manual=True)
        producer = BlobProducer(request, reader, 0, 3000, chunkSize=1000)
        done = producer.start()
        self.assertEqual(len(reader.reads), 1)
        producer.pauseProducing()
        reader.complete()
        self.assertEqual(request.body(), DATA[:1000])
        self.assertEqual(len(reader.reads), 1)
        producer.pauseProducing()
        self.assertEqual(len(reader.reads), 1)
        producer.resumeProducing()
        self.assertEqual(reader.reads[-1], (1000, 1000))
        reader.complete()
        reader.complete()
        self.assertEqual(request.body(), DATA[:3000])
        self.successResultOf(done)
        self.assertEqual(reader.closes, [False])

    def test_resumeDuringRead(self):
        """
        Resuming while a read is in flight does not start a second read
        (the fake reader asserts there is only ever one).
        """
        request = FakeRequest()
        reader = FakeReader(DATA, manual=True)
        producer = BlobProducer(request, reader, 0, 2000, chunkSize=1000)
        done = producer.start()
        producer.pauseProducing()
        producer.resumeProducing()
        producer.resumeProducing()
        self.assertEqual(len(reader.reads), 1)
        reader.complete()
        reader.complete()
        self.successResultOf(done)
        self.assertEqual(request.body(), DATA[:2000])

    def test_pausedByWrite(self):
        """
        A transport that pauses the producer from inside C{write} stops the
        reads until it resumes it.
        """
        request = FakeRequest(pauseAfterWrites=1)
        reader = FakeReader(DATA)
        producer = BlobProducer(request, reader, 0, 2500, chunkSize=1000)
        done = producer.start()
        self.assertEqual(request.body(), DATA[:1000])
        self.assertNoResult(done)
        producer.resumeProducing()
        self.assertEqual(request.body(), DATA[:2000])
        producer.resumeProducing()
        self.assertEqual(request.body(), DATA[:2500])
        # The last write paused the producer too: it finishes once the
        # transport has taken that chunk and resumes it.
        producer.resumeProducing()
        self.successResultOf(done)
        self.assertEqual(len(reader.reads), 3)

    def test_stopWhileIdle(self):
        """
        C{stopProducing} with no read in flight closes the reader at once
        and fails C{done}; nothing more is read or written.
        """
        request = FakeRequest(pauseAfterWrites=1)
        reader = FakeReader(DATA)
        producer = BlobProducer(request, reader, 0, 3000, chunkSize=1000)
        done = producer.start()
        producer.stopProducing()
        self.failureResultOf(done, ConnectionError)
        self.assertEqual(reader.closes, [False])
        producer.resumeProducing()
        self.assertEqual(len(reader.reads), 1)
        self.assertEqual(request.body(), DATA[:1000])

    def test_stopDuringRead(self):
        """
        C{stopProducing} while a read is in flight fails C{done} at once but
        closes the reader only after that read completed, and does not
        write its bytes.
        """
        request = FakeRequest()
        reader = FakeReader(DATA, manual=True)
        producer = BlobProducer(request, reader, 0, 3000, chunkSize=1000)
        done = producer.start()
        producer.stopProducing()
        self.failureResultOf(done, ConnectionError)
        self.assertEqual(reader.closes, [])
        reader.complete()
        self.assertEqual(reader.closes, [False])
        self.assertEqual(request.writes, [])
        self.assertEqual(len(reader.reads), 1)

    def test_stopDuringFailingRead(self):
        """
        A read in flight that fails after C{stopProducing} also closes the
        reader, and C{done} is not failed twice.
        """
        reader = FakeReader(DATA, manual=True)
        producer = BlobProducer(FakeRequest(), reader, 0, 3000, chunkSize=1000)
        done = producer.start()
        producer.stopProducing()
        self.failureResultOf(done, ConnectionError)
        reader.failRead(OSError("disk gone"))
        self.assertEqual(reader.closes, [False])

    def test_stopTwiceAndAfterFinish(self):
        """
        C{stopProducing} after the end, or a second time, changes nothing.
        """
        reader = FakeReader(DATA)
        producer = BlobProducer(FakeRequest(), reader, 0, 10)
        self.successResultOf(producer.start())
        producer.stopProducing()
        producer.stopProducing()
        self.assertEqual(reader.closes, [False])

    def test_readFailure(self):
        """
        A failed read fails C{done} with its error, unregisters and closes
        the reader.
        """
        request = FakeRequest()
        reader = FakeReader(DATA, manual=True)
        done = BlobProducer(request, reader, 0, 3000, chunkSize=1000).start()
        reader.complete()
        reader.failRead(OSError("disk gone"))
        self.failureResultOf(done, OSError)
        self.assertEqual(request.events[1:], [("unregister",)])
        self.assertEqual(reader.closes, [False])
        self.assertEqual(request.body(), DATA[:1000])

    def test_shortFile(self):
        """
        A blob shorter than its recorded size (an empty read) fails C{done}
        instead of looping.
        """
        request = FakeRequest()
        reader = FakeReader(DATA[:1500])
        done = BlobProducer(request, reader, 0, 3000, chunkSize=1000).start()
        failure = self.failureResultOf(done, OSError)
        self.assertIn("shorter", str(failure.value))
        self.assertEqual(request.body(), DATA[:1500])
        self.assertEqual(reader.closes, [False])

    def test_synchronousFailingReader(self):
        """
        A reader whose read has already failed is handled like a later
        failure.
        """
        class Broken(FakeReader):
            """
            A reader whose every read has already failed.
            """

            def read(self, offset, length):
                return fail(OSError("EIO"))

        reader = Broken(DATA)
        self.failureResultOf(BlobProducer(FakeRequest(), reader, 0, 10).start(), OSError)
        self.assertEqual(reader.closes, [False])


class ParseByteRangeTests(SynchronousTestCase):
    """
    L{parseByteRange}: one C{bytes=} range of a blob GET.
    """

    def test_absent(self):
        """
        No header means the whole blob.
        """
        self.assertIsNone(parseByteRange(None, 100))
        self.assertIsNone(parseByteRange("", 100))

    def test_closed(self):
        """
        C{bytes=0-9} is the first ten bytes.
        """
        self.assertEqual(parseByteRange("bytes=0-9", 100), (0, 9))
        self.assertEqual(parseByteRange("bytes=5-5", 100), (5, 5))
        self.assertEqual(parseByteRange(" bytes= 0 - 9 ", 100), (0, 9))

    def test_open(self):
        """
        C{bytes=10-} runs to the end.
        """
        self.assertEqual(parseByteRange("bytes=10-", 100), (10, 99))
        self.assertEqual(parseByteRange("bytes=99-", 100), (99, 99))

    def test_suffix(self):
        """
        C{bytes=-5} is the last five bytes; a suffix longer than the blob is
        all of it.
        """
        self.assertEqual(parseByteRange("bytes=-5", 100), (95, 99))
        self.assertEqual(parseByteRange("bytes=-100", 100), (0, 99))
        self.assertEqual(parseByteRange("bytes=-500", 100), (0, 99))

    def test_zeroSuffix(self):
        """
        C{bytes=-0} selects nothing: unsatisfiable.
        """
        self.assertEqual(parseByteRange("bytes=-0", 100), "unsatisfiable")

    def test_startBeyondEnd(self):
        """
        A start at or past the size is unsatisfiable.
        """
        self.assertEqual(parseByteRange("bytes=100-", 100), "unsatisfiable")
        self.assertEqual(parseByteRange("bytes=100-200", 100), "unsatisfiable")
        self.assertEqual(parseByteRange("bytes=1000-1001", 100), "unsatisfiable")

    def test_endClamped(self):
        """
        An end past the size is clamped to the last byte.
        """
        self.assertEqual(parseByteRange("bytes=90-200", 100), (90, 99))
        self.assertEqual(parseByteRange("bytes=0-100", 100), (0, 99))

    def test_multipleRanges(self):
        """
        Several ranges: the whole blob is sent (RFC 9110 allows it).
        """
        self.assertIsNone(parseByteRange("bytes=0-1,5-6", 100))
        self.assertIsNone(parseByteRange("bytes=0-1, -5", 100))

    def test_garbage(self):
        """
        Headers that are not one byte range are ignored.
        """
        for value in ["garbage", "items=0-9", "bytes=", "bytes=abc", "bytes=5", "bytes=-",
                      "bytes=a-9", "bytes=0-b", "bytes=9-3", "bytes 0-9", "bytes=0-9-"]:
            self.assertIsNone(parseByteRange(value, 100), value)

    def test_signsAndSeparatorsAreNotDigits(self):
        """
        RFC 9110 positions are plain digits: signs, digit group separators
        and a doubled minus make the header invalid, so it is ignored (the
        whole blob), not read as some other number or as unsatisfiable.
        """
        for value in ["bytes=+5-10", "bytes=1_0-20", "bytes=--5", "bytes=-+5", "bytes=5-+9"]:
            self.assertIsNone(parseByteRange(value, 100), value)

    def test_emptyBlob(self):
        """
        No range of an empty blob is satisfiable.
        """
        for value in ["bytes=0-", "bytes=0-0", "bytes=-5", "bytes=-0"]:
            self.assertEqual(parseByteRange(value, 0), "unsatisfiable", value)
        self.assertIsNone(parseByteRange(None, 0))
