# -*- test-case-name: tests.test_ops_lifecycle -*-
"""
The life of the process under twistd and systemd: signals, an orderly
stop, and readiness notification.

C{SIGTERM}: twistd's reactor stops on it and, after a clean shutdown,
re-raises the signal so that the process ends "killed by SIGTERM" (status
-15; C{twisted.scripts.twistd.run} calls C{app._exitWithSignal} whenever
C{reactor._exitSignal} is set, and the reactor's own handler sets it).  A
graceful stop should exit 0, so L{SignalHandlers} replaces the reactor's
C{SIGTERM} handler, once the reactor has installed its own (after
start-up), with one that stops the reactor without recording the signal.
The services then stop in order (L{OrderedMultiService}): the HTTP port
first, draining the requests in flight within its bound, then the store,
the thread pools and, last, the logs.  A second C{SIGTERM} during the drain
cuts the requests in flight at once.

C{SIGHUP}: twistd installs no handler for it (it rotates its own
C{--logfile} on C{SIGUSR1}), so L{SignalHandlers} takes it for reloading:
reopen the log files, re-read the config.  zot itself stops on C{SIGHUP};
zotwist reloads on it, as daemons managed by systemd's C{ExecReload} do.

Signal handlers run between two bytecodes of the main thread; they only
hand the work to the reactor with C{callFromThread}.

L{notifySystemd} speaks systemd's C{sd_notify} protocol (one datagram to
C{$NOTIFY_SOCKET}) so that C{Type=notify} units are "started" when the
registry answers, not when the process exists.
"""

import os
import signal
import socket

from twisted.application.service import MultiService, Service
from twisted.internet.defer import ensureDeferred, maybeDeferred
from twisted.logger import Logger

_log = Logger()


class OrderedMultiService(MultiService):
    """
    A L{MultiService} whose children stop one after the other, in the
    reverse of the order they were added, each waiting for the one before.

    Twisted's own stops them all at once, which would stop the thread pool
    while the HTTP service is still draining requests that need it.
    """

    def stopService(self):
        Service.stopService(self)
        """
        Stop the children one by one, last added first.

        @return: a L{Deferred} firing when every child has stopped.
        """

        async def stopAll():
            for service in reversed(list(self)):
                try:
                    await maybeDeferred(service.stopService)
                except Exception:
                    _log.failure("Stopping service {name} failed", name=service.name)

        return ensureDeferred(stopAll())


def notifySystemd(state: str, environ=None) -> bool:
    """
    Send C{state} (such as C{"READY=1"}) to systemd if it is listening.

    @return: whether a message was sent (false outside a C{Type=notify}
        unit, where C{$NOTIFY_SOCKET} is unset).
    """
    environ = os.environ if environ is None else environ
    address = environ.get("NOTIFY_SOCKET")
    if not address:
        return False
    if address.startswith("@"):
        address = "\0" + address[1:]
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as s:
            s.connect(address)
            s.sendall(state.encode("utf-8"))
    except OSError as e:
        _log.warn("Could not notify systemd ({state}): {error}", state=state, error=e)
        return False
    return True


class SignalHandlers(Service):
    """
    Installs the C{SIGTERM} and C{SIGHUP} handlers described above while it
    runs under a reactor.

    @param reactor: the reactor (its C{stop}, C{callFromThread} and system
        event triggers).
    @param reload: called (on the reactor thread) on C{SIGHUP}.
    @param abort: called on a second C{SIGTERM}, to cut the requests in
        flight at once.
    @param healthChecks: a L{zotwist.ops.health.HealthChecks} to mark as
        stopping, so that C{/readyz} fails during the drain.
    """

    def __init__(self, reactor, reload=None, abort=None, healthChecks=None):
        self._reactor = reactor
        self._reload = reload
        self._abort = abort
        self._healthChecks = healthChecks
        self._previous: dict = {}
        self._stopping = False
        self.setName("signals")

    def startService(self) -> None:
        """
        Install the handlers once the reactor's own are in place.
        """
        super().startService()
        # The reactor installs its own handlers during start-up; ours must
        # come after them.  If it is already running, that has happened.
        if self._reactor.running:
            self._install()
        else:
            self._reactor.addSystemEventTrigger("after", "startup", self._install)

    def _install(self) -> None:
        if not self.running:
            return
        self._previous[signal.SIGTERM] = signal.signal(signal.SIGTERM, self._onTerm)
        if self._reload is not None:
            self._previous[signal.SIGHUP] = signal.signal(signal.SIGHUP, self._onHangUp)

    def _onTerm(self, signum, frame) -> None:
        self._reactor.callFromThread(self.terminate)

    def _onHangUp(self, signum, frame) -> None:
        self._reactor.callFromThread(self.hangUp)

    def terminate(self) -> None:
        """
        Begin a graceful stop (exit status 0), or on a second request cut
        the requests in flight.
        """
        if self._stopping:
            _log.warn("Second SIGTERM: cutting off the requests in flight now")
            if self._abort is not None:
                self._abort()
            return
        self._stopping = True
        _log.info("Received SIGTERM: stopping gracefully")
        if self._healthChecks is not None:
            self._healthChecks.stopping = True
        notifySystemd("STOPPING=1")
        self._reactor.stop()

    def hangUp(self) -> None:
        """
        Reload, logging (never raising) what goes wrong.
        """
        try:
            self._reload()
        except Exception:
            _log.failure("Reloading failed")

    def stopService(self) -> None:
        """
        Keep C{SIGTERM} handled through the shutdown; ignore C{SIGHUP}.
        """
        super().stopService()
        # Keep our SIGTERM handler through the shutdown (a second SIGTERM
        # must still abort, and must not make twistd re-raise).  SIGHUP is
        # ignored from now on: its default action would kill the process
        # in the middle of its orderly stop.
        if self._previous.pop(signal.SIGHUP, None) is not None:
            signal.signal(signal.SIGHUP, signal.SIG_IGN)


__all__ = ["OrderedMultiService", "SignalHandlers", "notifySystemd"]
