"""
Tests for L{zotwist.storage.tagtimes}: push and pull times per tag and
manifest digest, kept in memory and appended to a journal in batches.
"""

import os

from twisted.internet.defer import ensureDeferred, fail
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase, TestCase

from tests.apihelpers import pushImage
from tests.support import startRegistry
from zotwist.storage.tagtimes import FLUSH_INTERVAL, TagTimes
from zotwist.threads import InlineRunner


class CountingRunner(InlineRunner):
    """
    An inline runner that counts the work it was given, and can fail it.
    """

    def __init__(self):
        self.calls = 0
        self.failing = False

    def run(self, function, *args, **kwargs):
        self.calls += 1
        if self.failing:
            return fail(OSError("disk full"))
        return super().run(function, *args, **kwargs)


class TagTimesTests(SynchronousTestCase):
    """
    L{TagTimes} with an inline runner and a fake clock.
    """

    def setUp(self):
        self.root = os.path.abspath(self.mktemp())
        os.makedirs(self.root)
        self.now = 1000.0
        self.runner = CountingRunner()
        self.times = self.make()

    def make(self, reactor=None) -> TagTimes:
        return TagTimes(self.root, self.runner, reactor, clock=lambda: self.now)

    def result(self, coroutine):
        return self.successResultOf(ensureDeferred(coroutine))

    def test_pullTouchesNoDisk(self):
        """
        Recording a pull, or a push, is memory only: nothing is handed to
        the disk pool until a flush.
        """
        self.times.pushed("r", ["v1", "sha256:aa"])
        for _ in range(1000):
            self.times.pulled("r", ["v1", "sha256:aa"])
        self.assertEqual(self.runner.calls, 0)
        self.assertFalse(os.path.exists(self.times.journalPath("r")))

    def test_flushAndReadBack(self):
        """
        Flushed times are read back by another instance (a restart); a
        flush writes one line per dirty key, and nothing when none is dirty.
        """
        self.times.pushed("team/app", ["v1", "sha256:aa"])
        self.now = 2000.0
        self.times.pulled("team/app", ["v1"])
        self.times.pulled("team/app", ["v1"])
        self.assertEqual(self.result(self.times.flush()), 2)
        self.assertEqual(self.result(self.times.flush()), 0)
        with open(self.times.journalPath("team/app"), "rb") as f:
            self.assertEqual(len(f.read().splitlines()), 2)
        again = self.make()
        self.assertEqual(
            self.result(again.times("team/app")),
            {"v1": (1000.0, 2000.0), "sha256:aa": (1000.0, None)},
        )
        self.assertEqual(self.result(again.times("other")), {})

    def test_journalPerRepository(self):
        """
        Each repository has its own journal, named so that nested names and
        odd characters stay inside the directory.
        """
        self.times.pushed("a/b", ["t"])
        self.times.pushed("a", ["t"])
        self.result(self.times.flush())
        self.assertEqual(
            sorted(os.listdir(self.times.directory)),
            ["a%2Fb.journal", "a%2Fb.journal.lock", "a.journal", "a.journal.lock"],
        )

    def test_processesMerge(self):
        """
        Two processes appending to one journal: the later time of each kind
        wins, whatever the order of the lines; what this process saw and did
        not yet write counts too.
        """
        other = self.make()
        self.times.pushed("r", ["v1"], when=10.0)
        other.pushed("r", ["v1"], when=5.0)
        other.pulled("r", ["v1"], when=50.0)
        self.result(self.times.flush())
        self.result(other.flush())
        reader = self.make()
        reader.pulled("r", ["v1"], when=40.0)
        self.assertEqual(self.result(reader.times("r")), {"v1": (10.0, 50.0)})

    def test_tornLinesIgnored(self):
        """
        A torn last line or a line that is not a record is skipped.
        """
        self.times.pushed("r", ["v1"])
        self.result(self.times.flush())
        with open(self.times.journalPath("r"), "ab") as f:
            f.write(b'["not a record"]\n{"k": 3}\n{"k": "v2", "push": "x"}\n{"k": "v1", "pu')
        self.assertEqual(self.result(self.make().times("r")), {"v1": (1000.0, None)})
        # The next append starts on a line of its own.
        self.times.pulled("r", ["v1"], when=1500.0)
        self.result(self.times.flush())
        self.assertEqual(self.result(self.make().times("r")), {"v1": (1000.0, 1500.0)})

    def test_compaction(self):
        """
        A journal much longer than its keys is rewritten with one line per
        key when read, keeping every time.
        """
        for i in range(300):
            self.times.pulled("r", ["v1"], when=float(i))
            self.result(self.times.flush())
        reader = self.make()
        self.assertEqual(self.result(reader.times("r")), {"v1": (None, 299.0)})
        with open(self.times.journalPath("r"), "rb") as f:
            self.assertEqual(len(f.read().splitlines()), 1)
        self.assertEqual(self.result(self.make().times("r")), {"v1": (None, 299.0)})

    def test_failedFlushKeepsDirty(self):
        """
        When the write fails, the entries stay dirty and the next flush
        writes them.
        """
        self.times.pushed("r", ["v1"])
        self.runner.failing = True
        self.failureResultOf(ensureDeferred(self.times.flush()), OSError)
        self.runner.failing = False
        self.assertEqual(self.result(self.times.flush()), 1)
        self.assertEqual(self.result(self.make().times("r")), {"v1": (1000.0, None)})

    def test_periodicFlushAndStop(self):
        """
        With a reactor the dirty entries are written every
        L{FLUSH_INTERVAL} seconds; a stop writes what is left.
        """
        clock = Clock()
        times = self.make(reactor=clock)
        times.start()
        times.pushed("r", ["v1"])
        clock.advance(FLUSH_INTERVAL - 0.1)
        self.assertFalse(os.path.exists(times.journalPath("r")))
        clock.advance(0.2)
        self.assertTrue(os.path.exists(times.journalPath("r")))
        times.pulled("r", ["v1"], when=3000.0)
        self.result(times.stop())
        self.assertEqual(clock.getDelayedCalls(), [])
        self.assertEqual(self.result(self.make().times("r")), {"v1": (1000.0, 3000.0)})


class RegistryTagTimesTests(TestCase):
    """
    The registry records pushes and pulls of manifests.
    """

    async def test_pushAndPullRecorded(self):
        """
        A manifest PUT records the push time of its tag and digest; a GET by
        tag records the pull of both, a GET by digest of the digest only;
        a HEAD is not a pull.  The times survive the registry's stop.
        """
        reg = await startRegistry(self)
        image = await pushImage(reg, "team/app", "v1", "timed")
        store = reg.service.getServiceNamed("store").store
        times = await store.tagTimes.times("team/app")
        self.assertIsNotNone(times["v1"][0])
        self.assertIsNone(times["v1"][1])
        self.assertEqual(times[image.digest][0], times["v1"][0])
        resp = await reg.client.head(f"{reg.url}/v2/team/app/manifests/v1")
        self.assertEqual(resp.code, 200)
        self.assertIsNone((await store.tagTimes.times("team/app"))["v1"][1])
        resp = await reg.client.get(f"{reg.url}/v2/team/app/manifests/v1")
        self.assertEqual(resp.code, 200)
        await resp.content()
        after = await store.tagTimes.times("team/app")
        self.assertIsNotNone(after["v1"][1])
        self.assertEqual(after[image.digest][1], after["v1"][1])
        await store.tagTimes.stop()
        reread = TagTimes(reg.root, InlineRunner())
        self.assertEqual(await reread.times("team/app"), after)
