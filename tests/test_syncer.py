"""
Tests for L{zotwist.storage.syncer}: swapping an index into place, and
syncing it later.
"""

import contextlib
import json
import os

from twisted.internet.defer import ensureDeferred
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from zotwist.storage import syncer
from zotwist.threads import InlineRunner


class ReplaceTests(SynchronousTestCase):
    """
    L{syncer.replace} and L{syncer.exchange}.
    """

    def setUp(self):
        self.directory = self.mktemp()
        os.makedirs(self.directory)
        self.target = os.path.join(self.directory, "index.json")
        self.source = os.path.join(self.directory, ".index.json.tmp")

    def write(self, path: str, data: bytes) -> None:
        with open(path, "wb") as f:
            f.write(data)

    def read(self, path: str) -> bytes:
        with open(path, "rb") as f:
            return f.read()

    def test_replaceWithoutCommit(self):
        """
        Without commit, the new content takes the target's name, keeping
        the new file's inode (what a reader's signature names), and the
        source name is gone.
        """
        self.write(self.target, b"old")
        self.write(self.source, b"new")
        inode = os.stat(self.source).st_ino
        syncer.replace(self.source, self.target, commit=False)
        self.assertEqual(self.read(self.target), b"new")
        self.assertEqual(os.stat(self.target).st_ino, inode)
        self.assertFalse(os.path.exists(self.source))
        self.assertEqual(sorted(os.listdir(self.directory)), [".index.json.prev", "index.json"])
        self.assertEqual(self.read(syncer.previousOf(self.target)), b"old")

    def test_previousKeptUntilSynced(self):
        """
        While the swapped-in content is not synced, the previous copy stays
        the last synced content however many swaps follow; a plain
        replacement (flushed by the filesystem) or a sync drops it.
        """
        previous = syncer.previousOf(self.target)
        self.write(self.target, b"v1")
        for version in (b"v2", b"v3"):
            self.write(self.source, version)
            syncer.replace(self.source, self.target, commit=False)
        self.assertEqual(self.read(self.target), b"v3")
        self.assertEqual(self.read(previous), b"v1")
        syncer._syncAll([self.target], lambda path: contextlib.nullcontext())
        self.assertFalse(os.path.exists(previous))
        self.write(self.source, b"v4")
        syncer.replace(self.source, self.target, commit=False)
        self.assertEqual(self.read(previous), b"v3")
        self.write(self.source, b"v5")
        syncer.replace(self.source, self.target, commit=False, exchange_=False)
        self.assertEqual(self.read(self.target), b"v5")
        self.assertFalse(os.path.exists(previous))

    def test_readFallsBackToPrevious(self):
        """
        An index that does not parse (as a power loss right after a swap
        can leave it) is read from the previous synced copy; without one,
        the parse error stands.
        """
        self.write(self.target, b"")
        self.assertRaises(ValueError, syncer.readWithFallback, self.target, json.loads)
        self.write(syncer.previousOf(self.target), b'{"manifests": []}')
        st, parsed = syncer.readWithFallback(self.target, json.loads)
        self.assertEqual(parsed, {"manifests": []})
        self.assertEqual(st.st_size, 0)

    def test_replaceWithCommit(self):
        """
        With commit, a plain rename does the same.
        """
        self.write(self.target, b"old")
        self.write(self.source, b"new")
        syncer.replace(self.source, self.target, commit=True)
        self.assertEqual(self.read(self.target), b"new")
        self.assertFalse(os.path.exists(self.source))

    def test_replaceCreates(self):
        """
        A target that does not exist yet is created.
        """
        self.write(self.source, b"new")
        syncer.replace(self.source, self.target, commit=False)
        self.assertEqual(self.read(self.target), b"new")
        self.assertFalse(os.path.exists(self.source))

    def test_exchangeNeedsBoth(self):
        """
        L{syncer.exchange} with no target does nothing and says so.
        """
        self.write(self.source, b"new")
        self.assertFalse(syncer.exchange(self.source, self.target))
        self.assertEqual(self.read(self.source), b"new")
        self.assertFalse(os.path.exists(self.target))

    def test_exchangeSwaps(self):
        """
        Where the system can, the two names swap their files; where it
        cannot, nothing changes and it says so.
        """
        self.write(self.target, b"old")
        self.write(self.source, b"new")
        if syncer.exchange(self.source, self.target):
            self.assertEqual(
                (self.read(self.target), self.read(self.source)), (b"new", b"old")
            )
        else:
            self.assertEqual(
                (self.read(self.target), self.read(self.source)), (b"old", b"new")
            )


class LazySyncTests(SynchronousTestCase):
    """
    L{syncer.LazySync} syncs the changed files about once an interval.
    """

    def setUp(self):
        self.directory = self.mktemp()
        os.makedirs(self.directory)
        self.synced = []
        realSync = os.fdatasync

        def fdatasync(fd):
            self.synced.append(os.readlink(f"/proc/self/fd/{fd}"))
            realSync(fd)

        self.patch(os, "fdatasync", fdatasync)
        self.clock = Clock()
        self.lazy = syncer.LazySync(InlineRunner(), self.clock, interval=1.0)

    def path(self, name: str) -> str:
        path = os.path.abspath(os.path.join(self.directory, name))
        with open(path, "wb") as f:
            f.write(b"x")
        return path

    def test_syncsChangedFilesEachInterval(self):
        """
        Nothing is synced before the interval; then every file that changed,
        once, however often it changed; a file gone meanwhile is skipped.
        """
        a, b, gone = self.path("a"), self.path("b"), self.path("gone")
        self.lazy.start()
        for path in (a, b, a, gone):
            self.lazy.changed(path)
        os.unlink(gone)
        self.clock.advance(0.5)
        self.assertEqual(self.synced, [])
        self.clock.advance(0.5)
        self.assertEqual(self.synced, [a, b])
        self.clock.advance(1.0)
        self.assertEqual(self.synced, [a, b])  # nothing new changed
        self.lazy.changed(b)
        self.clock.advance(1.0)
        self.assertEqual(self.synced, [a, b, b])

    def test_stopSyncsTheRest(self):
        """
        Stopping syncs what changed since the last interval.
        """
        a = self.path("a")
        self.lazy.start()
        self.lazy.changed(a)
        self.successResultOf(ensureDeferred(self.lazy.stop()))
        self.assertEqual(self.synced, [a])
        self.assertEqual(self.clock.getDelayedCalls(), [])
