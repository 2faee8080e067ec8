# -*- test-case-name: tests.test_ops_lifecycle -*-
"""
The open HTTP connections of a site, so that a stop can be graceful.

L{ConnectionTracker} knows every channel the site built and still has open.
L{ConnectionTracker.drain} is what C{SIGTERM} leads to, once the listening
port is closed: idle keep-alive connections are closed at once, connections
with a request in flight are told to close after their answer
(C{Connection: close}), and whatever is still open when the bound runs out
is aborted.  An upload cut off that way keeps what reached the disk: its
session lives in the storage root, and the client resumes it after the
restart (C{GET} its location for the C{Range}, then C{PATCH} the rest).
"""

from twisted.internet.defer import Deferred
from twisted.logger import Logger

from zotwist.storage.writers import QueuedWriter

#: How long a graceful stop waits for requests in flight, in seconds.  zot
#: has no config key for it, so it is a constant (C{twistd zot
#: --drain-timeout} overrides it, for tests and unusual setups); the systemd
#: unit's C{TimeoutStopSec} leaves room above it.
DRAIN_TIMEOUT = 30.0

#: How often the drain looks at the connections again, in seconds.
_POLL = 0.05
#: How long after aborting the drain still waits for the connections to be
#: gone before it gives up on them, in seconds.
_ABORT_GRACE = 5.0


class ConnectionTracker:
    """
    The channels of one site that are still connected.
    """

    _log = Logger()

    def __init__(self):
        self._channels: set = set()
        self.draining = False

    def add(self, channel) -> None:
        """
        Track a channel the site just built.
        """
        self._channels.add(channel)
        if self.draining:
            # Built by a port that was closing: answer nothing more on it.
            channel.persistent = False

    def remove(self, channel) -> None:
        """
        Forget a channel whose connection is gone.
        """
        self._channels.discard(channel)

    def __len__(self) -> int:
        """
        The number of open connections.
        """
        return len(self._channels)

    def requestsInFlight(self) -> list:
        """
        Every request received and not yet finished, over all connections.
        """
        found = []
        for channel in self._channels:
            for request in getattr(channel, "requests", ()):
                if not request.finished:
                    found.append(request)
        return found

    def uploadsInFlight(self) -> int:
        """
        How many requests in flight are writing a blob upload to disk.
        """
        return sum(
            1 for request in self.requestsInFlight()
            if isinstance(getattr(request, "content", None), QueuedWriter)
        )

    def _closeIdle(self) -> int:
        """
        Close the connections with nothing in flight and mark the others to
        close after their current answer.

        @return: how many connections still have a request in flight.
        """
        busy = 0
        for channel in list(self._channels):
            pending = [r for r in getattr(channel, "requests", ()) if not r.finished]
            if not pending:
                channel.loseConnection()
                continue
            busy += 1
            channel.persistent = False
            for request in pending:
                if not request.startedWriting:
                    request.responseHeaders.setRawHeaders(b"Connection", [b"close"])
        return busy

    def abortAll(self) -> int:
        """
        Abort every connection now.

        @return: how many were aborted.
        """
        channels = list(self._channels)
        for channel in channels:
            transport = getattr(channel, "transport", None)
            if transport is not None:
                transport.abortConnection()
        return len(channels)

    def drain(self, reactor, timeout: float = DRAIN_TIMEOUT) -> Deferred:
        """
        Let the requests in flight finish, for at most C{timeout} seconds,
        then abort what is left.  Call it after the listening port closed.

        @return: a L{Deferred} firing with the number of connections that
            had to be aborted once every connection is gone.
        """
        self.draining = True
        done: Deferred = Deferred()
        started = reactor.seconds()
        deadline = started + timeout
        state = {"aborted": 0, "logged": False}

        def check():
            busy = self._closeIdle()
            if not self._channels:
                if state["logged"] or state["aborted"]:
                    self._log.info(
                        "Requests in flight drained in {seconds:.1f} s ({aborted} cut off)",
                        seconds=reactor.seconds() - started,
                        aborted=state["aborted"],
                    )
                done.callback(state["aborted"])
                return
            if busy and not state["logged"]:
                state["logged"] = True
                self._log.info(
                    "Waiting up to {timeout:.0f} s for {count} requests in flight",
                    timeout=timeout,
                    count=len(self.requestsInFlight()),
                )
            now = reactor.seconds()
            if now >= deadline + _ABORT_GRACE:
                self._log.warn("{count} connections did not close; stopping anyway",
                               count=len(self._channels))
                done.callback(state["aborted"])
                return
            if now >= deadline and not state["aborted"]:
                state["aborted"] = self.abortAll()
                self._log.warn(
                    "Cut off {count} connections still busy after {timeout:.0f} s; "
                    "their uploads can be resumed",
                    count=state["aborted"],
                    timeout=timeout,
                )
            reactor.callLater(_POLL, check)

        check()
        return done


__all__ = ["ConnectionTracker", "DRAIN_TIMEOUT"]
