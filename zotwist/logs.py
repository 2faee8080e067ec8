# -*- test-case-name: tests.test_logs -*-
"""
Logging as the config asks: C{log.level} and C{log.output}.

twistd already writes every event to its own log (stdout with C{-n}, which
suits systemd).  L{LogService} filters the observers already there at
C{log.level} while it runs (restoring them when it stops), and when
C{log.output} names a file, it adds a JSON lines observer for it, filtered
the same way.  It also reports the config's warnings (keys zotwist does not
implement yet) once at start.
"""

from twisted.application.service import Service
from twisted.logger import (
    FilteringLogObserver,
    Logger,
    LogLevel,
    LogLevelFilterPredicate,
    globalLogPublisher,
    jsonFileLogObserver,
)

_LEVELS = {
    "debug": LogLevel.debug,
    "info": LogLevel.info,
    "warn": LogLevel.warn,
    "warning": LogLevel.warn,
    "error": LogLevel.error,
    "panic": LogLevel.critical,
    "fatal": LogLevel.critical,
}


def logLevel(name: str) -> LogLevel:
    """
    zot's level names as Twisted's levels.
    """
    return _LEVELS.get((name or "debug").lower(), LogLevel.info)


class LogService(Service):
    """
    Adds the configured log file observer while running.
    """

    _log = Logger()

    def __init__(self, config):
        self._config = config
        self._observer = None
        self._file = None
        self._wrapped: list = []
        self.setName("logs")

    def startService(self) -> None:
        super().startService()
        predicate = LogLevelFilterPredicate(defaultLogLevel=logLevel(self._config.log.level))
        self._filterExisting(predicate)
        output = self._config.log.output
        if output:
            self._file = open(output, "a", encoding="utf-8")
            self._observer = FilteringLogObserver(jsonFileLogObserver(self._file), [predicate])
            globalLogPublisher.addObserver(self._observer)
        for warning in self._config.warnings:
            self._log.warn(
                "config {source}: {warning}", source=self._config.source, warning=warning
            )

    def _filterExisting(self, predicate) -> None:
        """
        Put twistd's own observers (its log file or stdout) behind the level
        filter.  The publisher has no public list of observers, so this reads
        its private one, and does nothing if that ever goes away.
        """
        observers = getattr(globalLogPublisher, "_observers", None)
        if not isinstance(observers, list):
            return
        for observer in list(observers):
            wrapped = FilteringLogObserver(observer, [predicate])
            globalLogPublisher.removeObserver(observer)
            globalLogPublisher.addObserver(wrapped)
            self._wrapped.append((observer, wrapped))

    def stopService(self) -> None:
        super().stopService()
        for observer, wrapped in self._wrapped:
            globalLogPublisher.removeObserver(wrapped)
            globalLogPublisher.addObserver(observer)
        self._wrapped = []
        if self._observer is not None:
            globalLogPublisher.removeObserver(self._observer)
            self._observer = None
        if self._file is not None:
            self._file.close()
            self._file = None
