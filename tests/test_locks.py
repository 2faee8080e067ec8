"""
Tests for L{zotwist.storage.locks}: per-key Deferred locks and the
cross-process file lock.
"""

import os
import subprocess
import sys

from twisted.internet.defer import CancelledError, Deferred, ensureDeferred
from twisted.trial.unittest import SynchronousTestCase

from zotwist.storage.locks import KeyedLocks, fileLock

#: A child process that tries to take the lock without waiting and says
#: whether it could.
_PROBE = """
import fcntl, os, sys
fd = os.open(sys.argv[1], os.O_RDWR | os.O_CREAT, 0o644)
try:
    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
except BlockingIOError:
    print("blocked")
else:
    print("acquired")
"""


def probe(path: str) -> str:
    """
    Ask another process whether it can lock C{path} right now.
    """
    result = subprocess.run(
        [sys.executable, "-c", _PROBE, path], capture_output=True, text=True, timeout=30,
        check=True,
    )
    return result.stdout.strip()


class KeyedLocksTests(SynchronousTestCase):
    """
    L{KeyedLocks.run} serializes work per key.
    """

    def setUp(self):
        self.locks = KeyedLocks()
        self.calls: list[str] = []
        self.pending: dict[str, Deferred] = {}

    def work(self, label: str) -> Deferred:
        """
        Record that C{label} started and return a Deferred the test fires.
        """
        self.calls.append(label)
        d = self.pending[label] = Deferred()
        return d

    def start(self, key: str, label: str) -> Deferred:
        """
        Run L{work} for C{label} under C{key}'s lock.
        """
        return ensureDeferred(self.locks.run(key, self.work, label))

    def test_sameKeySerialized(self):
        """
        A second call on the same key starts only once the first finished,
        and each gets its own result.
        """
        first = self.start("a", "first")
        second = self.start("a", "second")
        self.assertEqual(self.calls, ["first"])
        self.assertNoResult(second)
        self.pending["first"].callback(1)
        self.assertEqual(self.successResultOf(first), 1)
        self.assertEqual(self.calls, ["first", "second"])
        self.pending["second"].callback(2)
        self.assertEqual(self.successResultOf(second), 2)

    def test_differentKeysConcurrent(self):
        """
        Calls on different keys run at the same time.
        """
        a = self.start("a", "a")
        b = self.start("b", "b")
        self.assertEqual(self.calls, ["a", "b"])
        self.pending["b"].callback("B")
        self.assertEqual(self.successResultOf(b), "B")
        self.assertNoResult(a)
        self.pending["a"].callback("A")
        self.assertEqual(self.successResultOf(a), "A")

    def test_orderKept(self):
        """
        Waiters on one key run in the order they came.
        """
        ds = [self.start("k", str(i)) for i in range(4)]
        for i in range(4):
            self.assertEqual(self.calls, [str(j) for j in range(i + 1)])
            self.pending[str(i)].callback(i)
        self.assertEqual([self.successResultOf(d) for d in ds], [0, 1, 2, 3])

    def test_failureReleases(self):
        """
        A failing call passes its failure on and releases the lock.
        """
        first = self.start("a", "first")
        second = self.start("a", "second")
        self.pending["first"].errback(ValueError("boom"))
        self.failureResultOf(first, ValueError)
        self.assertEqual(self.calls, ["first", "second"])
        self.pending["second"].callback(None)
        self.successResultOf(second)

    def test_coroutineFunction(self):
        """
        The function may be a coroutine function.
        """
        async def double(x):
            return x * 2

        self.assertEqual(self.successResultOf(ensureDeferred(self.locks.run("a", double, 4))), 8)

    def test_cancelledWaiter(self):
        """
        Cancelling a call that waits for the lock removes it from the queue;
        the next waiter still runs, and nothing stays locked.
        """
        first = self.start("a", "first")
        second = self.start("a", "second")
        third = self.start("a", "third")
        second.cancel()
        self.failureResultOf(second, CancelledError)
        self.pending["first"].callback(None)
        self.assertEqual(self.calls, ["first", "third"])
        self.pending["third"].callback(None)
        self.successResultOf(first)
        self.successResultOf(third)
        self.assertEqual(self.locks._locks, {})

    def test_idleLocksDropped(self):
        """
        Once no call uses a key, its lock is forgotten (the table does not
        grow with every repository ever touched).
        """
        d = self.start("a", "a")
        self.assertEqual(list(self.locks._locks), ["a"])
        self.pending["a"].callback(None)
        self.successResultOf(d)
        self.assertEqual(self.locks._locks, {})
        self.assertEqual(self.locks._users, {})


class FileLockTests(SynchronousTestCase):
    """
    L{fileLock} excludes other processes.
    """

    def test_excludesAnotherProcess(self):
        """
        While held, another process cannot take the lock; once released, it
        can.
        """
        path = self.mktemp()
        with fileLock(path):
            self.assertTrue(os.path.exists(path))
            self.assertEqual(probe(path), "blocked")
        self.assertEqual(probe(path), "acquired")

    def test_releasedOnException(self):
        """
        An exception inside the block releases the lock too.
        """
        path = self.mktemp()
        with self.assertRaises(ValueError), fileLock(path):
            raise ValueError("boom")
        self.assertEqual(probe(path), "acquired")

    def test_existingFileKept(self):
        """
        Locking an existing file does not change its content.
        """
        path = self.mktemp()
        with open(path, "wb") as f:
            f.write(b"content")
        with fileLock(path):
            pass
        with open(path, "rb") as f:
            self.assertEqual(f.read(), b"content")
