# -*- test-case-name: tests.test_threads -*-
"""
Where blocking work runs.

Disk I/O, fsync, renames and whole-file hashing must never run on the reactor
thread, where they would stall every other client.  Code that needs them asks
an L{IBlockingRunner} instead of calling C{deferToThread} itself, so that the
pool is owned by the service (started and stopped with it) and tests can swap
in L{InlineRunner} to run the same code synchronously.
"""

import os
import threading
from typing import Any, Callable

from twisted.application.service import Service
from twisted.internet.defer import Deferred, maybeDeferred
from twisted.internet.threads import deferToThreadPool
from twisted.python.threadpool import ThreadPool
from zope.interface import Interface, implementer


class IBlockingRunner(Interface):
    """
    Runs blocking callables away from the reactor thread.
    """

    def run(function: Callable[..., Any], *args: Any, **kwargs: Any) -> Deferred:
        """
        Call C{function(*args, **kwargs)} where blocking is allowed.

        @return: a L{Deferred} firing with its result (on the reactor thread).
        """


@implementer(IBlockingRunner)
class ThreadPoolRunner(Service):
    """
    A service owning a L{ThreadPool}: started with the application, joined
    when it stops, so no thread outlives the reactor.

    @ivar pool: the underlying thread pool.
    """

    def __init__(
        self,
        reactor,
        minThreads: int = 2,
        maxThreads: int = 16,
        name: str = "disk",
        niceness: int = 0,
    ):
        self._reactor = reactor
        self.pool = ThreadPool(minThreads, maxThreads, name=f"zotwist-{name}")
        self.setName(f"threads-{name}")
        self._niceness = niceness
        self._niced = threading.local()

    def startService(self) -> None:
        super().startService()
        self.pool.start()

    def stopService(self) -> None:
        super().stopService()
        self.pool.stop()

    def run(self, function, *args, **kwargs) -> Deferred:
        if self._niceness:
            return deferToThreadPool(
                self._reactor, self.pool, self._niced_call, function, args, kwargs
            )
        return deferToThreadPool(self._reactor, self.pool, function, *args, **kwargs)

    def _niced_call(self, function, args, kwargs):
        """
        Lower this pool thread's scheduling priority once (Linux nice values
        are per thread), then run the work.  Bulk work such as hashing and
        writing upload bodies then yields the CPU to the reactor thread, so
        small requests stay fast while large pushes saturate the cores.
        """
        if not getattr(self._niced, "done", False):
            self._niced.done = True
            try:
                os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), self._niceness)
            except (OSError, AttributeError):
                pass
        return function(*args, **kwargs)


@implementer(IBlockingRunner)
class InlineRunner:
    """
    Runs the work synchronously on the calling thread: for unit tests only.
    """

    def run(self, function, *args, **kwargs) -> Deferred:
        return maybeDeferred(function, *args, **kwargs)
