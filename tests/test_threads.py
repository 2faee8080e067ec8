"""
Tests for L{zotwist.threads}: where blocking work runs.
"""

import threading

from twisted.internet import reactor
from twisted.trial.unittest import SynchronousTestCase, TestCase
from zope.interface.verify import verifyObject

from zotwist.threads import IBlockingRunner, InlineRunner, ThreadPoolRunner


class InlineRunnerTests(SynchronousTestCase):
    """
    L{InlineRunner} runs work synchronously, for unit tests.
    """

    def test_interface(self):
        """
        It provides L{IBlockingRunner}.
        """
        self.assertTrue(verifyObject(IBlockingRunner, InlineRunner()))

    def test_result(self):
        """
        The Deferred has already fired with the result, computed on the
        calling thread with the given arguments.
        """
        d = InlineRunner().run(lambda a, b=0: (a + b, threading.get_ident()), 1, b=2)
        self.assertEqual(self.successResultOf(d), (3, threading.get_ident()))

    def test_exception(self):
        """
        An exception becomes a failed Deferred, not a raise.
        """
        def boom():
            raise ValueError("boom")

        self.failureResultOf(InlineRunner().run(boom), ValueError)


class ThreadPoolRunnerTests(TestCase):
    """
    L{ThreadPoolRunner} runs work in its own pool, started and stopped as a
    service.
    """

    def makeRunner(self) -> ThreadPoolRunner:
        """
        A started runner, stopped when the test ends.
        """
        runner = ThreadPoolRunner(reactor, minThreads=1, maxThreads=4, name="test")
        runner.startService()
        self.addCleanup(runner.stopService)
        return runner

    def test_interface(self):
        """
        It provides L{IBlockingRunner} and is named after its pool.
        """
        runner = ThreadPoolRunner(reactor, name="cpu")
        self.assertTrue(verifyObject(IBlockingRunner, runner))
        self.assertEqual(runner.name, "threads-cpu")
        self.assertEqual(runner.pool.name, "zotwist-cpu")

    async def test_runsInAnotherThread(self):
        """
        The work runs off the reactor thread and its result comes back.
        """
        runner = self.makeRunner()
        result = await runner.run(lambda x: (x * 2, threading.get_ident()), 21)
        self.assertEqual(result[0], 42)
        self.assertNotEqual(result[1], threading.get_ident())

    async def test_exception(self):
        """
        An exception in the pool fails the Deferred.
        """
        runner = self.makeRunner()

        def boom():
            raise ValueError("boom")

        with self.assertRaises(ValueError):
            await runner.run(boom)

    async def test_concurrent(self):
        """
        Several calls run at the same time in the pool: two callables that
        each wait for the other both finish.
        """
        runner = self.makeRunner()
        first, second = threading.Event(), threading.Event()

        def meet(mine, theirs):
            mine.set()
            return theirs.wait(5)

        d1 = runner.run(meet, first, second)
        d2 = runner.run(meet, second, first)
        self.assertEqual([await d1, await d2], [True, True])

    def test_startStop(self):
        """
        Starting the service starts the pool; stopping it joins the threads.
        """
        runner = ThreadPoolRunner(reactor, minThreads=1, maxThreads=2, name="life")
        self.assertFalse(runner.pool.started)
        runner.startService()
        self.assertTrue(runner.running)
        self.assertTrue(runner.pool.started)
        runner.stopService()
        self.assertFalse(runner.running)
        self.assertFalse(runner.pool.started)
        self.assertEqual([t for t in runner.pool.threads if t.is_alive()], [])
