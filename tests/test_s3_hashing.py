"""
Tests for L{zotwist.storage.s3.hashing}: the resumable hash agrees with
C{hashlib}, also when its state is saved mid-way and continued elsewhere.
"""

import hashlib
import os
import pickle

from twisted.trial.unittest import SynchronousTestCase

from zotwist.storage.s3.hashing import ResumableHash


class ResumableHashTests(SynchronousTestCase):
    """
    L{ResumableHash} against L{hashlib}.
    """

    def test_knownDigests(self):
        """
        The empty string and C{abc} give the standard digests.
        """
        for algorithm in ("sha256", "sha512"):
            for data in (b"", b"abc"):
                h = ResumableHash(algorithm)
                h.update(data)
                self.assertEqual(h.hexdigest(), hashlib.new(algorithm, data).hexdigest())

    def test_manyPieces(self):
        """
        Hashing in pieces of every size (bytes, bytearray, memoryview) gives
        hashlib's digest of the whole.
        """
        data = os.urandom(300_000)
        for algorithm in ("sha256", "sha512"):
            h = ResumableHash(algorithm)
            offset, step = 0, 1
            kinds = (bytes, bytearray, memoryview)
            while offset < len(data):
                piece = data[offset : offset + step]
                h.update(kinds[step % 3](piece))
                offset += len(piece)
                step = step * 3 + 1 if step < 100_000 else 7
            self.assertEqual(h.hexdigest(), hashlib.new(algorithm, data).hexdigest())

    def test_resumeAfterSerialize(self):
        """
        The state saved mid-way (as bytes, e.g. through Redis) and loaded into
        a new object continues to the right digest, at any split point,
        including inside a compression block.
        """
        data = os.urandom(10_000)
        for algorithm in ("sha256", "sha512"):
            expected = hashlib.new(algorithm, data).hexdigest()
            for split in (0, 1, 63, 64, 65, 127, 128, 129, 5000, 10_000):
                first = ResumableHash(algorithm)
                first.update(data[:split])
                state = pickle.loads(pickle.dumps(first.state()))
                self.assertIsInstance(state, bytes)
                second = ResumableHash.fromState(state)
                self.assertEqual(second.algorithm, algorithm)
                second.update(data[split:])
                self.assertEqual(second.hexdigest(), expected, (algorithm, split))

    def test_digestDoesNotConsume(self):
        """
        Taking the digest leaves the hash usable: more data continues it (a
        failed digest check must not lose the session's state).
        """
        h = ResumableHash("sha256")
        h.update(b"hello ")
        self.assertEqual(h.hexdigest(), hashlib.sha256(b"hello ").hexdigest())
        h.update(b"world")
        self.assertEqual(h.hexdigest(), hashlib.sha256(b"hello world").hexdigest())

    def test_copyIsIndependent(self):
        """
        A copy continues separately from the original.
        """
        h = ResumableHash("sha512")
        h.update(b"a")
        c = h.copy()
        c.update(b"b")
        self.assertEqual(h.hexdigest(), hashlib.sha512(b"a").hexdigest())
        self.assertEqual(c.hexdigest(), hashlib.sha512(b"ab").hexdigest())

    def test_badState(self):
        """
        Bytes that are not a state (wrong tag, wrong length) are refused.
        """
        state = ResumableHash("sha256").state()
        self.assertRaises(ValueError, ResumableHash.fromState, b"\x09" + state[1:])
        self.assertRaises(ValueError, ResumableHash.fromState, state[:-1])
        self.assertRaises(ValueError, ResumableHash.fromState, b"")
        self.assertRaises(ValueError, ResumableHash, "md5")

    def test_largeInput(self):
        """
        A 64 MiB update (larger than any one network chunk) is hashed right.
        """
        data = os.urandom(64 * 1024 * 1024)
        h = ResumableHash("sha256")
        h.update(data)
        self.assertEqual(h.hexdigest(), hashlib.sha256(data).hexdigest())
