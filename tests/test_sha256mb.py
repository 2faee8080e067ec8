"""
Tests for L{zotwist.sha256mb}: the multi-buffer SHA-256 kernel, the mill
that shares its calls between threads, and the hashlib-like stream object.

A wrong digest would refuse every push, so every path is compared with
hashlib: both kernels (AVX2 and AVX-512VL, when the CPU runs them), with and
without OpenSSL's single-lane path, through odd lengths, odd chunkings and
many threads at once.  The library must be built (tests/run.sh builds it):
these tests fail, not skip, when it is missing.
"""

import gc
import hashlib
import os
import random
import struct
import sys
import threading

from twisted.internet import reactor
from twisted.internet.task import deferLater
from twisted.trial.unittest import SynchronousTestCase, TestCase

from zotwist import oci, sha256mb
from zotwist.sha256mb import kernel as kernelModule
from zotwist.sha256mb.kernel import (
    AVX2,
    AVX512,
    INITIAL_STATE,
    LANES,
    Kernel,
    Lane,
    LaneArray,
    Segment,
    State,
    libraryPath,
)
from zotwist.sha256mb.mill import DEPTH, Mill, _mayTake
from zotwist.sha256mb.stream import Sha256
from zotwist.storage.writers import AppendWriter, FreshWriter, SessionState, hashFile
from zotwist.threads import ThreadPoolRunner

#: The lengths around SHA-256's padding boundaries.
EDGE_LENGTHS = (0, 1, 55, 56, 63, 64, 65, 119, 120, 127, 128, 129, 191, 192, 1000)


def _bestKernel() -> int:
    path = libraryPath()
    if path is None:
        raise AssertionError("the kernel library is not built (run zotwist/sha256mb/build.sh)")
    return Kernel(path).best


def _chunked(data: bytes, rng: random.Random, largest: int) -> list[bytes]:
    """
    @return: C{data} cut at random places into pieces of 0 to C{largest}
        bytes (empty pieces included).
    """
    pieces = []
    offset = 0
    while offset < len(data):
        size = rng.randint(0, largest)
        pieces.append(data[offset : offset + size])
        offset += size
    return pieces


class AvailabilityTests(SynchronousTestCase):
    """
    The library is built and used on this machine.
    """

    def test_built(self):
        """
        The library is next to its source, it loads, and this CPU runs at
        least the AVX2 kernel (the machines zotwist is tested on all do).
        """
        self.assertIsNotNone(libraryPath())
        self.assertTrue(sha256mb.available())
        self.assertIn(_bestKernel(), (AVX2, AVX512))
        self.assertIn(sha256mb.defaultMill().kernel.name, sha256mb.describe())

    def test_newHasher(self):
        """
        L{oci.newHasher} gives the multi-buffer hasher for SHA-256 (on a CPU
        without the SHA extensions, as this one) and hashlib for SHA-512.
        """
        self.assertFalse(sha256mb.shaExtensions())
        self.assertIsInstance(oci.newHasher("sha256"), Sha256)
        self.assertEqual(oci.newHasher("sha512").name, "sha512")

    def test_fallback(self):
        """
        Without the kernel, or with C{ZOTWIST_SHA256=hashlib}, L{oci.newHasher}
        gives hashlib's SHA-256 (decided once, so reset around the test).
        """
        self.patch(oci, "_sha256How", "")
        self.patch(oci, "_sha256", None)
        self.patch(sha256mb, "available", lambda: False)
        self.assertEqual(type(oci.newHasher("sha256")), type(hashlib.sha256()))
        self.patch(oci, "_sha256", None)
        self.patch(sha256mb, "available", lambda: True)
        self.patch(os, "environ", {"ZOTWIST_SHA256": "hashlib"})
        self.assertEqual(type(oci.newHasher("sha256")), type(hashlib.sha256()))
        self.patch(oci, "_sha256", None)
        self.patch(os, "environ", {})
        self.assertIsInstance(oci.newHasher("sha256"), Sha256)
        self.assertEqual(oci.sha256Backend(), sha256mb.describe())

    def test_shaExtensions(self):
        """
        The kernel's CPUID check for the SHA extensions agrees with the
        kernel's own view of the CPU (the C{sha_ni} flag of /proc/cpuinfo).
        """
        with open("/proc/cpuinfo") as f:
            flags = next(line for line in f if line.startswith("flags")).split()
        self.assertEqual(sha256mb.defaultMill().kernel.shaExtensions, "sha_ni" in flags)
        self.assertEqual(sha256mb.shaExtensions(), "sha_ni" in flags)

    def test_preferHashlibWithShaExtensions(self):
        """
        On a CPU with the SHA extensions L{oci.newHasher} gives hashlib's
        SHA-256 (OpenSSL then outruns the kernel), unless
        C{ZOTWIST_SHA256=multibuffer} asks for the kernel.
        """
        self.patch(oci, "_sha256How", "")
        self.patch(oci, "_sha256", None)
        self.patch(sha256mb, "shaExtensions", lambda: True)
        self.patch(os, "environ", {})
        self.assertEqual(type(oci.newHasher("sha256")), type(hashlib.sha256()))
        self.assertIn("SHA extensions", oci.sha256Backend())
        self.patch(oci, "_sha256", None)
        self.patch(os, "environ", {"ZOTWIST_SHA256": "multibuffer"})
        self.assertIsInstance(oci.newHasher("sha256"), Sha256)

    def test_chooseSha256(self):
        """
        L{oci.chooseSha256}: the override first, then hashlib on a CPU with
        the SHA extensions or without the kernel, else the kernel.
        """
        choose = oci.chooseSha256
        self.assertEqual(choose(None, True, False)[0], "multibuffer")
        self.assertEqual(choose(None, True, True)[0], "hashlib")
        self.assertEqual(choose(None, False, False)[0], "hashlib")
        self.assertEqual(choose("hashlib", True, False)[0], "hashlib")
        self.assertEqual(choose("multibuffer", True, True)[0], "multibuffer")
        self.assertEqual(choose("multibuffer", False, False)[0], "hashlib")

    def test_unavailable(self):
        """
        Without a built library L{kernel.loadKernel} gives C{None} (zotwist
        then uses hashlib), and asking for a kernel the CPU cannot run fails.
        """
        self.patch(kernelModule, "libraryPath", lambda: None)
        self.assertIsNone(kernelModule.loadKernel())
        self.assertRaises(OSError, Kernel, libraryPath(), 99)

    def test_hashChunks(self):
        """
        L{sha256mb.hashChunks} feeds a hashlib object chunk by chunk too.
        """
        hasher = hashlib.sha256()
        sha256mb.hashChunks(hasher, [b"ab", b"", b"c"])
        self.assertEqual(hasher.hexdigest(), hashlib.sha256(b"abc").hexdigest())


class KernelTests(SynchronousTestCase):
    """
    L{Kernel.run} itself: lanes of different lengths, several segments per
    lane (empty ones included), a block budget per call.
    """

    kernel = AVX2

    def setUp(self):
        if self.kernel > _bestKernel():
            raise AssertionError("this CPU cannot run the kernel under test")
        self.library = Kernel(libraryPath(), self.kernel, single=False)

    def _padded(self, message: bytes) -> bytes:
        return (
            message
            + b"\x80"
            + b"\0" * ((55 - len(message)) % 64)
            + struct.pack(">Q", 8 * len(message))
        )

    def _check(
        self, messages: list[bytes], maxBlocks: int, rng: random.Random, stopWhenDry=False
    ) -> None:
        lanes = LaneArray()
        keep = []
        for i, message in enumerate(messages):
            padded = self._padded(message)
            # Cut the padded message into segments at block boundaries, with
            # a random byte offset into a bigger buffer and empty segments.
            segments = []
            offset = 0
            while offset < len(padded):
                blocks = rng.randint(0, 5)
                lead = rng.randint(0, 7)  # bytes before the segment's data
                piece = padded[offset : offset + 64 * blocks]
                segments.append((os.urandom(lead) + piece + os.urandom(3), lead, len(piece) // 64))
                offset += len(piece)
            array = (Segment * len(segments))(*segments)
            state = State(*INITIAL_STATE)
            lane = Lane(state, array, len(segments), 0, 0)
            keep.append((state, array, lane))
            lanes[i] = kernelModule.ctypes.pointer(lane)
        calls = 0
        while any(lane.index < lane.count for _, _, lane in keep):
            self.library.run(lanes, len(messages), maxBlocks, stopWhenDry)
            calls += 1
            self.assertLess(calls, 10000)
        for message, (state, _, _) in zip(messages, keep):
            self.assertEqual(struct.pack(">8I", *state), hashlib.sha256(message).digest())

    def test_lanes(self):
        """
        Up to eight lanes of different lengths, in one call or in many small
        ones, each give hashlib's digest.
        """
        rng = random.Random(1)
        for count in (1, 2, 3, 7, 8):
            for maxBlocks in (0, 1, 3, 64):
                messages = [os.urandom(rng.choice(EDGE_LENGTHS + (5000,))) for _ in range(count)]
                self._check(messages, maxBlocks, rng)

    def test_lanesStoppingWhenDry(self):
        """
        Calls that return as soon as one lane runs dry, resumed until every
        lane is done (as the mill does, without refilling), give hashlib's
        digests too.
        """
        rng = random.Random(2)
        for count in (2, 3, 8):
            for maxBlocks in (0, 3, 64):
                messages = [os.urandom(rng.choice(EDGE_LENGTHS + (5000,))) for _ in range(count)]
                self._check(messages, maxBlocks, rng, stopWhenDry=True)

    def _twoLanes(self):
        """
        @return: a lane array with a 1-block lane and a 10-block lane, and
            the two lanes.
        """
        lanes = LaneArray()
        short = Lane(State(*INITIAL_STATE), (Segment * 1)((self._padded(b"abc"), 0, 1)), 1, 0, 0)
        data = self._padded(b"x" * 600)
        long = Lane(State(*INITIAL_STATE), (Segment * 1)((data, 0, len(data) // 64)), 1, 0, 0)
        lanes[0] = kernelModule.ctypes.pointer(short)
        lanes[1] = kernelModule.ctypes.pointer(long)
        return lanes, short, long

    def test_stopWhenDry(self):
        """
        With C{stopWhenDry}, the call returns right after the block that
        finished the shortest lane: the other lane has hashed that many
        blocks and no more.  Without it, every lane is hashed to its end.
        """
        lanes, short, long = self._twoLanes()
        self.library.run(lanes, 2, 0, True)
        self.assertEqual((short.index, long.index, long.offset), (1, 0, 1))
        lanes, short, long = self._twoLanes()
        self.library.run(lanes, 2)
        self.assertEqual((short.index, long.index), (1, 1))
        self.assertEqual(struct.pack(">8I", *long.state[:8]), hashlib.sha256(b"x" * 600).digest())

    def test_idleLanes(self):
        """
        A lane with nothing to do (zero segments) keeps its state.
        """
        lanes = LaneArray()
        state = State(*INITIAL_STATE)
        lane = Lane(state, (Segment * 1)(), 0, 0, 0)
        lanes[0] = kernelModule.ctypes.pointer(lane)
        other = State(*INITIAL_STATE)
        data = self._padded(b"abc")
        busy = Lane(other, (Segment * 1)((data, 0, 1)), 1, 0, 0)
        lanes[1] = kernelModule.ctypes.pointer(busy)
        self.library.run(lanes, 2)
        self.assertEqual(tuple(state), INITIAL_STATE)
        self.assertEqual(
            struct.pack(">8I", *other).hex(),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad",
        )

    def test_tooManyLanes(self):
        """
        More than eight lanes is refused rather than overrunning.
        """
        self.assertRaises(RuntimeError, self.library.run, LaneArray(), 9)


class Avx512KernelTests(KernelTests):
    kernel = AVX512


class StreamTests(SynchronousTestCase):
    """
    L{Sha256} against hashlib, through one kernel and one single-lane mode.
    """

    kernel = AVX2
    single = False
    quantum = 4096

    def setUp(self):
        if self.kernel > _bestKernel():
            raise AssertionError("this CPU cannot run the kernel under test")
        library = Kernel(libraryPath(), self.kernel, self.single)
        if self.single:
            self.assertIsNotNone(library.single)
        self.mill = Mill(library, quantum=self.quantum)
        self.addCleanup(self.mill.stop)

    def new(self, data=b""):
        return Sha256(self.mill, data)

    def test_knownAnswers(self):
        """
        FIPS 180-2's examples.
        """
        self.assertEqual(
            self.new(b"abc").hexdigest(),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad",
        )
        self.assertEqual(
            self.new().hexdigest(),
            "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
        )
        self.assertEqual(
            self.new(b"abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq").hexdigest(),
            "248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1",
        )

    def test_edgeLengths(self):
        """
        Lengths around the padding boundaries, in one update, byte by byte,
        and split in two at every place.
        """
        for length in EDGE_LENGTHS:
            data = os.urandom(length)
            expected = hashlib.sha256(data).hexdigest()
            self.assertEqual(self.new(data).hexdigest(), expected, length)
            hasher = self.new()
            for i in range(length):
                hasher.update(data[i : i + 1])
            self.assertEqual(hasher.hexdigest(), expected, length)
            for cut in range(0, length + 1, 7):
                hasher = self.new(data[:cut])
                hasher.update(data[cut:])
                self.assertEqual(hasher.hexdigest(), expected, (length, cut))

    def test_randomChunkings(self):
        """
        Random lengths up to a few MB, cut into random chunks, fed with
        C{update} and with C{updateAll}.
        """
        rng = random.Random(2)
        for _ in range(6):
            data = os.urandom(rng.randint(0, 3 * 1024 * 1024))
            expected = hashlib.sha256(data).hexdigest()
            largest = rng.choice((100, 5000, 300000))
            pieces = _chunked(data, rng, largest)
            hasher = self.new()
            for piece in pieces:
                hasher.update(piece)
            self.assertEqual(hasher.hexdigest(), expected)
            hasher = self.new()
            for start in range(0, len(pieces), 5):
                hasher.updateAll(pieces[start : start + 5])
            self.assertEqual(hasher.hexdigest(), expected)

    def test_bytesLike(self):
        """
        bytearray and memoryview data hash like bytes.
        """
        data = os.urandom(1000)
        hasher = self.new(bytearray(data[:300]))
        hasher.update(memoryview(data)[300:])
        self.assertEqual(hasher.digest(), hashlib.sha256(data).digest())

    def test_digestThenUpdate(self):
        """
        Taking a digest does not change the state: more data may follow.
        """
        data = os.urandom(200)
        hasher = self.new(data[:70])
        self.assertEqual(hasher.hexdigest(), hashlib.sha256(data[:70]).hexdigest())
        self.assertEqual(hasher.hexdigest(), hashlib.sha256(data[:70]).hexdigest())
        hasher.update(data[70:])
        self.assertEqual(hasher.hexdigest(), hashlib.sha256(data).hexdigest())

    def test_copy(self):
        """
        A copy goes on independently of the original.
        """
        data = os.urandom(300)
        hasher = self.new(data[:100])
        other = hasher.copy()
        hasher.update(data[100:])
        other.update(b"x")
        self.assertEqual(hasher.hexdigest(), hashlib.sha256(data).hexdigest())
        self.assertEqual(other.hexdigest(), hashlib.sha256(data[:100] + b"x").hexdigest())

    def test_surface(self):
        """
        The attributes zotwist and hashlib users read.
        """
        hasher = self.new()
        self.assertEqual((hasher.name, hasher.digest_size, hasher.block_size), ("sha256", 32, 64))
        self.assertEqual(len(hasher.digest()), 32)

    def test_concurrentStreams(self):
        """
        More streams than lanes, each in its own thread with random chunk
        sizes and chunk counts per call, all hashed right; the mill ran
        rounds with several lanes at once.
        """
        rng = random.Random(3)
        streams = 12
        inputs = [os.urandom(rng.randint(0, 600000)) for _ in range(streams)]
        plans = [
            _chunked(data, random.Random(i), rng.choice((64, 999, 70000)))
            for i, data in enumerate(inputs)
        ]
        results: dict[int, str] = {}
        errors = []
        barrier = threading.Barrier(streams)

        def work(i):
            try:
                hasher = self.new()
                barrier.wait()
                pieces = plans[i]
                local = random.Random(i)
                start = 0
                while start < len(pieces):
                    step = local.randint(1, 4)
                    hasher.updateAll(pieces[start : start + step])
                    start += step
                results[i] = hasher.hexdigest()
            except BaseException as error:
                errors.append(error)

        threads = [threading.Thread(target=work, args=(i,)) for i in range(streams)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        self.assertEqual(errors, [])
        self.assertEqual(
            results, {i: hashlib.sha256(data).hexdigest() for i, data in enumerate(inputs)}
        )

    def _holdFirstRound(self, until):
        """
        Make the kernel's first round wait until C{until()} is true, and
        record how many lanes each round carried.
        """
        real = self.mill.kernel.run
        self.mill.kernel.single = None
        counts = []
        self.firstRound = threading.Event()

        def recording(lanes, count, maxBlocks=0, stopWhenDry=False):
            if not counts:
                self.firstRound.set()
                for _ in range(10000):
                    if until():
                        break
                    threading.Event().wait(0.001)
            counts.append(count)
            real(lanes, count, maxBlocks, stopWhenDry)

        self.mill.kernel.run = recording
        return counts

    def test_batching(self):
        """
        Streams that arrive while a round runs are hashed together in the
        next one, in one kernel call (one hashing thread here: with two, the
        second would take them at once).
        """
        self.mill = Mill(self.mill.kernel, quantum=self.quantum, threads=1)
        self.addCleanup(self.mill.stop)
        counts = self._holdFirstRound(lambda: len(self.mill._ready) >= 3)
        # The first stream outlasts its first round, whatever the quantum.
        inputs = [os.urandom(600000)] + [os.urandom(50000 + i) for i in range(3)]
        hashers = [self.new(inputs[0])]
        self.assertTrue(self.firstRound.wait(30))
        hashers += [self.new(data) for data in inputs[1:]]
        self.assertEqual(
            [hasher.hexdigest() for hasher in hashers],
            [hashlib.sha256(data).hexdigest() for data in inputs],
        )
        self.assertEqual(counts[0], 1)
        self.assertEqual(max(counts), 4)

    def test_gatherInOneThread(self):
        """
        With two hashing threads, a stream that arrives while the first
        thread's round runs is left to that thread, and hashed in its next
        round together with the first stream (not alone on the idle
        thread, which would cost a second core for no gain).
        """
        self.mill = Mill(self.mill.kernel, quantum=self.quantum, threads=2)
        self.addCleanup(self.mill.stop)
        counts = self._holdFirstRound(lambda: len(self.mill._ready) >= 1)
        # The first stream outlasts its first round, whatever the quantum.
        first, second = os.urandom(600000), os.urandom(70000)
        held = self.new(first)
        self.assertTrue(self.firstRound.wait(30))
        other = self.new(second)
        self.assertEqual(other.hexdigest(), hashlib.sha256(second).hexdigest())
        self.assertEqual(held.hexdigest(), hashlib.sha256(first).hexdigest())
        self.assertEqual(counts[:2], [1, 2])

    def test_depth(self):
        """
        Updates return while their batches are still being hashed, up to
        L{DEPTH} of them; the next one waits: a stream holds at most DEPTH
        batches in the mill besides the caller's.
        """
        release = threading.Event()
        self._holdFirstRound(release.is_set)
        hasher = self.new()
        for _ in range(DEPTH):
            hasher.update(os.urandom(100000))
        track = hasher._track
        self.assertEqual(track.outstanding, DEPTH)
        second = threading.Thread(target=hasher.update, args=(b"y" * 1000,))
        second.start()
        for _ in range(10000):
            if track.outstanding == DEPTH + 1:
                break
            threading.Event().wait(0.001)
        self.assertEqual(track.outstanding, DEPTH + 1)
        self.assertTrue(second.is_alive())
        release.set()
        second.join(30)
        self.assertFalse(second.is_alive())

    def test_budget(self):
        """
        Past the mill's byte budget, a stream's update waits until other
        streams' batches are hashed, even below L{DEPTH}; once every batch
        is hashed, nothing is counted as queued.
        """
        self.mill = Mill(self.mill.kernel, quantum=self.quantum, budget=150000)
        self.addCleanup(self.mill.stop)
        release = threading.Event()
        self._holdFirstRound(release.is_set)
        self.addCleanup(release.set)
        first, second = os.urandom(100000), os.urandom(100032)
        held = self.new(first)
        self.assertTrue(self.firstRound.wait(30))
        self.assertEqual(self.mill.queued, 100000 // 64 * 64)
        other = self.new()
        waiting = threading.Thread(target=other.update, args=(second,))
        waiting.start()
        for _ in range(10000):
            if self.mill.queued > 150000:
                break
            threading.Event().wait(0.001)
        self.assertEqual(self.mill.queued, 100000 // 64 * 64 + 100032)
        waiting.join(0.2)
        self.assertTrue(waiting.is_alive())
        release.set()
        waiting.join(30)
        self.assertFalse(waiting.is_alive())
        self.assertEqual(held.hexdigest(), hashlib.sha256(first).hexdigest())
        self.assertEqual(other.hexdigest(), hashlib.sha256(second).hexdigest())
        self.assertEqual(self.mill.queued, 0)

    def test_kernelFailure(self):
        """
        When the kernel fails, every stream of the failed round gets the
        error from its digest and its next update, and the mill goes on
        hashing other streams.
        """
        real = self.mill.kernel.run
        self.mill.kernel.single = None

        def failing(lanes, count, maxBlocks=0, stopWhenDry=False):
            raise RuntimeError("boom")

        self.mill.kernel.run = failing
        hashers = [self.new(os.urandom(100000)) for _ in range(3)]
        for hasher in hashers:
            self.assertRaises(RuntimeError, hasher.digest)
            self.assertRaises(RuntimeError, hasher.update, os.urandom(1000))
        self.mill.kernel.run = real
        self.assertEqual(self.new(b"abc" * 100).digest(), hashlib.sha256(b"abc" * 100).digest())
        # The failed batches no longer count against the mill's budget.
        self.assertEqual(self.mill.queued, 0)


class StreamSingleTests(StreamTests):
    single = True


class StreamAvx512Tests(StreamTests):
    kernel = AVX512


class StreamAvx512SingleTests(StreamTests):
    kernel = AVX512
    single = True
    quantum = 256 * 1024


class WritersTests(SynchronousTestCase):
    """
    The upload code's blocking helpers on the multi-buffer hasher.
    """

    def test_hashFile(self):
        """
        L{hashFile} gives hashlib's digest of a file of several reads.
        """
        path = self.mktemp()
        data = os.urandom(2 * 1024 * 1024 + 77)
        with open(path, "wb") as f:
            f.write(data)
        self.assertEqual(
            hashFile(path, "sha256"), ("sha256:" + hashlib.sha256(data).hexdigest(), len(data))
        )

    def test_catchUp(self):
        """
        L{SessionState.catchUp} hashes what was appended since, in pieces.
        """
        path = self.mktemp()
        data = os.urandom(1500000)
        with open(path, "wb") as f:
            f.write(data)
        state = SessionState.fresh("sha256")
        self.assertIsInstance(state.hasher, Sha256)
        fd = os.open(path, os.O_RDONLY)
        self.addCleanup(os.close, fd)
        state.catchUp(fd, 1000001)
        self.assertEqual(state.digest(), "sha256:" + hashlib.sha256(data[:1000001]).hexdigest())
        state.catchUp(fd, len(data))
        self.assertEqual(state.digest(), "sha256:" + hashlib.sha256(data).hexdigest())


class WriterFlushTests(TestCase):
    """
    L{FreshWriter.flushed} waits for the background hashing, so the digest
    taken on the reactor thread right after never blocks it.
    """

    def setUp(self):
        self.runner = ThreadPoolRunner(reactor, minThreads=1, maxThreads=4, name="mbtest")
        self.runner.startService()
        self.addCleanup(self.runner.stopService)

    def holdKernel(self) -> tuple[threading.Event, threading.Event]:
        """
        Make every kernel call of the process's mill wait (up to 30 s)
        until the returned C{release} is set; C{held} is set once one does.
        The single-lane OpenSSL path is off, so every batch goes through it.
        """
        kernel = sha256mb.defaultMill().kernel
        real = kernel.run
        release = threading.Event()
        held = threading.Event()

        def holding(lanes, count, maxBlocks=0, stopWhenDry=False):
            held.set()
            release.wait(30)
            real(lanes, count, maxBlocks, stopWhenDry)

        self.patch(kernel, "single", None)
        self.patch(kernel, "run", holding)
        self.addCleanup(release.set)
        return held, release

    async def test_flushedWaitsForHashing(self):
        """
        While the mill still hashes the last batch, L{flushed} has not fired;
        once it fires the hasher has nothing pending and the digest is right.
        """
        held, release = self.holdKernel()
        writer = FreshWriter(self.runner, os.path.join(self.mktemp(), "up"), "sha256")
        self.assertIsInstance(writer.state.hasher, Sha256)
        data = os.urandom(300000)
        writer.write(data)
        d = writer.flushed()
        while not held.is_set():
            await deferLater(reactor, 0.005, lambda: None)
        # The bytes are on disk and the batch is done; the hash is not.
        while writer.written < len(data):
            await deferLater(reactor, 0.005, lambda: None)
        self.assertNoResult(d)
        self.assertTrue(sha256mb.pending(writer.state.hasher))
        release.set()
        self.assertIs(await d, writer)
        self.assertFalse(sha256mb.pending(writer.state.hasher))
        self.assertEqual(writer.state.digest(), "sha256:" + hashlib.sha256(data).hexdigest())
        writer.close()

    async def test_patchDoesNotWaitForHashing(self):
        """
        An L{AppendWriter} (a PATCH) is flushed once its bytes are written,
        while its hash is still running; the digest, taken off the reactor
        thread as the closing PUT does, covers this chunk and the next.
        """
        _, release = self.holdKernel()
        path = self.mktemp()
        open(path, "wb").close()
        state = SessionState.fresh("sha256")
        self.assertIsInstance(state.hasher, Sha256)
        first, second = os.urandom(300000), os.urandom(200000)

        writer = AppendWriter(self.runner, path, state, 0, len(first))
        writer.write(first)
        await writer.flushed()
        writer.close()
        # Flushed while every kernel call is held: the PATCH did not wait
        # for its hash, which cannot have finished.
        self.assertTrue(sha256mb.pending(state.hasher))
        release.set()

        writer = AppendWriter(self.runner, path, state, len(first), len(second))
        self.assertIsNone(writer.rejection)
        writer.write(second)
        await writer.flushed()
        writer.close()
        with open(path, "rb") as f:
            self.assertEqual(f.read(), first + second)
        digest = await self.runner.run(state.digest)
        self.assertEqual(digest, "sha256:" + hashlib.sha256(first + second).hexdigest())
        self.assertEqual(state.hashedSize, len(first) + len(second))


class ThreadChoiceTests(SynchronousTestCase):
    """
    L{_mayTake}: which hashing thread takes a ready stream.
    """

    def test_gatherInTheFullest(self):
        """
        A running thread takes more streams while it is at least as full as
        the other; the emptier one leaves them to it.
        """
        self.assertTrue(_mayTake(1, 1))
        self.assertTrue(_mayTake(3, 1))
        self.assertFalse(_mayTake(1, 3))

    def test_idleTakesOnlyWhenNoneIsBusy(self):
        """
        An idle thread takes a stream when no other thread holds one, and
        leaves it to a busy thread otherwise.
        """
        self.assertTrue(_mayTake(0, 0))
        self.assertFalse(_mayTake(0, 1))
        self.assertFalse(_mayTake(0, 2))
        self.assertFalse(_mayTake(0, LANES - 1))

    def test_fullThreadOverflows(self):
        """
        When the fullest thread has no lane left, any thread takes.
        """
        self.assertTrue(_mayTake(0, LANES))
        self.assertTrue(_mayTake(1, LANES))


class ReleaseTests(SynchronousTestCase):
    """
    The mill lets go of the data it hashed.
    """

    def test_buffersReleased(self):
        """
        Once a stream's data is hashed, the mill holds no reference to its
        buffers, through the kernel's lanes or the single-lane path (an
        upload's chunks must not outlive it).
        """
        for single in (False, True):
            mill = Mill(Kernel(libraryPath(), single=single), quantum=4096)
            self.addCleanup(mill.stop)
            hashers = [Sha256(mill) for _ in range(3)]
            chunks = [os.urandom(100000 + i) for i in range(3)]
            before = [sys.getrefcount(chunks[i]) for i in range(3)]
            for i in range(3):
                hashers[i].update(chunks[i])
            for i in range(3):
                self.assertEqual(hashers[i].hexdigest(), hashlib.sha256(chunks[i]).hexdigest())
            gc.collect()
            self.assertEqual([sys.getrefcount(chunks[i]) for i in range(3)], before)
