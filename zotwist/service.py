# -*- test-case-name: tests.test_plugin -*-
"""
The long-running parts of the registry: the prepared store and the
listening HTTP port.

The HTTP port opens only once the store has scanned its root, so the first
request a client sends is answered from a complete catalog.
"""

import os
import socket

from twisted.application.service import Service
from twisted.internet.defer import Deferred, ensureDeferred, maybeDeferred, succeed
from twisted.internet.endpoints import (
    SSL4ServerEndpoint,
    TCP4ServerEndpoint,
    TCP6ServerEndpoint,
)
from twisted.logger import Logger

from zotwist.ops.drain import DRAIN_TIMEOUT


class StoreService(Service):
    """
    Prepares the store (scans the root) and tells who waits when it is ready.
    """

    _log = Logger()

    def __init__(self, store):
        self.store = store
        self._ready: Deferred | None = None
        self._waiting: list[Deferred] = []
        self.isReady = False
        self.setName("store")

    def startService(self) -> None:
        super().startService()
        self._ready = ensureDeferred(self.store.startService())
        self._ready.addCallbacks(self._started, self._failed)

    def _started(self, _) -> None:
        self.isReady = True
        waiting, self._waiting = self._waiting, []
        for d in waiting:
            d.callback(self.store)

    def _failed(self, failure) -> None:
        self._log.failure("Storage could not be prepared", failure)
        waiting, self._waiting = self._waiting, []
        for d in waiting:
            d.errback(failure)

    def stopService(self):
        """
        Stop the store's background work (when it has any).
        """
        super().stopService()
        stop = getattr(self.store, "stopService", None)
        if stop is None:
            return None
        return ensureDeferred(stop())

    def whenReady(self) -> Deferred:
        if self.isReady:
            d = Deferred()
            d.callback(self.store)
            return d
        d = Deferred()
        self._waiting.append(d)
        return d


class HTTPService(Service):
    """
    Listens once the store is ready; L{whenListening} gives the bound port.

    @param tlsOptions: server TLS options (L{zotwist.tls.serverTLSOptions})
        to serve HTTPS only, or L{None} for plain HTTP.

    Stopping is graceful: the port closes, then the site's connections
    drain (L{zotwist.ops.drain.ConnectionTracker.drain}) for at most
    C{drainTimeout} seconds.
    """

    _log = Logger()

    def __init__(
        self,
        reactor,
        site,
        address: str,
        port: int,
        storeService: StoreService,
        tlsOptions=None,
        adoptFD: int | None = None,
        drainTimeout: float = DRAIN_TIMEOUT,
    ):
        self.drainTimeout = drainTimeout
        self._adoptFD = adoptFD
        self._reactor = reactor
        self._tlsOptions = tlsOptions
        self._site = site
        self._address = address
        self._port = port
        self._storeService = storeService
        self._listening = None
        self._waiting: list[Deferred] = []
        self.port: int | None = None
        self.setName("http")

    def _endpoint(self):
        if self._tlsOptions is not None:
            return SSL4ServerEndpoint(
                self._reactor, self._port, self._tlsOptions, interface=self._address
            )
        if ":" in self._address:
            return TCP6ServerEndpoint(self._reactor, self._port, interface=self._address)
        return TCP4ServerEndpoint(self._reactor, self._port, interface=self._address)

    def startService(self) -> None:
        super().startService()
        d = self._storeService.whenReady()
        if self._adoptFD is None:
            d.addCallback(lambda _: self._endpoint().listen(self._site))
        else:
            d.addCallback(lambda _: self._adopt())
        d.addCallbacks(self._listened, self._failed)

    def _adopt(self):
        """
        Serve a listening socket inherited from the parent process (a
        worker, see L{zotwist.workers}): every worker accepts from the same
        socket, and the kernel hands each connection to one of them.
        """
        factory = self._site
        if self._tlsOptions is not None:
            from twisted.protocols.tls import TLSMemoryBIOFactory

            factory = TLSMemoryBIOFactory(self._tlsOptions, False, self._site)
        family = socket.AF_INET6 if ":" in self._address else socket.AF_INET
        port = self._reactor.adoptStreamPort(self._adoptFD, family, factory)
        os.close(self._adoptFD)
        return port

    def listeningFD(self) -> int:
        """
        The listening socket's descriptor, for workers to inherit.
        """
        return self._listening.fileno()

    def _listened(self, listeningPort) -> None:
        self._listening = listeningPort
        self.port = listeningPort.getHost().port
        self._log.info(
            "zotwist listening on {address}:{port} ({scheme})",
            address=self._address,
            port=self.port,
            scheme="https" if self._tlsOptions is not None else "http",
        )
        waiting, self._waiting = self._waiting, []
        for d in waiting:
            d.callback(self.port)

    def _failed(self, failure) -> None:
        self._log.failure("Could not start listening", failure)
        waiting, self._waiting = self._waiting, []
        for d in waiting:
            d.errback(failure)
        if self._reactor.running:
            self._reactor.stop()

    def whenListening(self) -> Deferred:
        d = Deferred()
        if self.port is not None:
            d.callback(self.port)
        else:
            self._waiting.append(d)
        return d

    def stopService(self):
        super().stopService()
        d = succeed(None)
        if self._listening is not None:
            listening, self._listening = self._listening, None
            d = maybeDeferred(listening.stopListening)
        connections = getattr(self._site, "connections", None)
        if connections is not None:
            d.addCallback(lambda _: connections.drain(self._reactor, self.drainTimeout))
        return d
