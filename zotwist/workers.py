# -*- test-case-name: tests.test_workers -*-
"""
Several worker processes sharing one listening socket (C{http.workers}).

One Python process serves from one core (hashing and disk I/O run in
threads, but request handling holds the GIL).  With C{http.workers: N} the
process twistd starts binds the port, serves like any worker, and starts
N-1 more processes that inherit the listening socket and accept from it
too; the kernel gives each new connection to one of them.

Workers share nothing but the storage root, which is built for that:
C{index.json} changes are serialised by a file lock, upload sessions live
on disk, caches are validated by C{stat}, and new repositories are announced
in a journal for the others' catalogs.  A worker that dies is started
again; stopping the registry stops them all.
"""

import os
import signal
import sys

from twisted.application.service import Service
from twisted.internet.protocol import ProcessProtocol
from twisted.logger import Logger

#: Seconds before a worker that died is started again (doubling up to 30 s).
RESTART_DELAY = 1.0


class _WorkerProtocol(ProcessProtocol):
    def __init__(self, pool: "WorkerPool", index: int):
        self._pool = pool
        self.index = index

    def processEnded(self, reason) -> None:
        self._pool._ended(self, reason)


class WorkerPool(Service):
    """
    Starts, watches and stops the extra worker processes.

    @param configPath: the config file the workers load (the same one).
    @param count: how many extra processes (C{http.workers} - 1).
    @param http: the L{zotwist.service.HTTPService} whose socket they share.
    """

    _log = Logger()

    def __init__(self, reactor, configPath: str, count: int, http):
        self._reactor = reactor
        self._configPath = os.path.abspath(configPath)
        self._count = count
        self._http = http
        self._processes: dict[int, object] = {}
        self._delays: dict[int, float] = {}
        self._stopping = False
        self._stopped = []
        self.setName("workers")

    def startService(self) -> None:
        super().startService()
        self._stopping = False
        # Workers may get the stop signal first (a signal to the process
        # group): no restarts once the reactor is on its way down.
        self._reactor.addSystemEventTrigger("before", "shutdown", self._noMoreRestarts)
        self._http.whenListening().addCallback(lambda _: self._startAll())

    def _noMoreRestarts(self) -> None:
        self._stopping = True

    def _startAll(self) -> None:
        for index in range(1, self._count + 1):
            self._start(index)

    def _start(self, index: int) -> None:
        if self._stopping:
            return
        fd = self._http.listeningFD()
        argv = [
            sys.executable, "-m", "zotwist.worker", "--config", self._configPath,
            "--fd", "3", "--index", str(index), "--parent", str(os.getpid()),
        ]
        env = dict(os.environ)
        # Workers import zotwist the way this process did.
        env["PYTHONPATH"] = os.pathsep.join(p for p in sys.path if p)
        transport = self._reactor.spawnProcess(
            _WorkerProtocol(self, index), sys.executable, argv, env=env,
            childFDs={0: "w", 1: 1, 2: 2, 3: fd},
        )
        self._processes[index] = transport
        self._log.info("Worker {index} started (pid {pid})", index=index, pid=transport.pid)

    def _ended(self, protocol: _WorkerProtocol, reason) -> None:
        index = protocol.index
        self._processes.pop(index, None)
        if self._stopping:
            waiting, self._stopped = self._stopped, []
            if not self._processes:
                for d in waiting:
                    d.callback(None)
            else:
                self._stopped = waiting
            return
        delay = min(self._delays.get(index, RESTART_DELAY / 2) * 2, 30.0)
        self._delays[index] = delay
        self._log.error(
            "Worker {index} ended ({reason}); starting it again in {delay} s",
            index=index, reason=reason.value, delay=delay,
        )
        self._reactor.callLater(delay, self._start, index)

    def stopService(self):
        super().stopService()
        self._stopping = True
        if not self._processes:
            return None
        from twisted.internet.defer import Deferred

        d = Deferred()
        self._stopped.append(d)
        for transport in list(self._processes.values()):
            try:
                transport.signalProcess(signal.SIGTERM)
            except Exception:
                pass
        return d
