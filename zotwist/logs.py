# -*- test-case-name: tests.test_ops_logs -*-
"""
Logging as the config asks: C{log.level} and C{log.output}.

twistd already writes every event to its own log (stdout with C{-n}, which
suits systemd).  L{LogService} filters the observers already there at
C{log.level} while it runs (restoring them when it stops), and when
C{log.output} names a file, it adds a JSON lines observer for it, filtered
the same way.  It also reports the config's warnings (keys zotwist does not
implement yet) once at start.

Both can change while the registry runs (C{SIGHUP}, L{LogService.applyConfig}):
the level applies to the next event, and a new C{log.output} is opened
before the old one is closed.

Log files are opened with C{O_APPEND} and written one event per
C{write(2)}, so C{logrotate}'s C{copytruncate} works, and
L{LogService.reopen} (C{SIGHUP} again) starts a new file after a rename
without losing a line: events written before the swap land in the renamed
file, those after in the new one.  Other files that must follow the same
rotation (the audit log of C{log.audit}, when it exists) register a
callable with L{LogService.addReopenHook}.
"""

import threading

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


class ReopenableFile:
    """
    A log file that can be swapped for a fresh one under the same name
    while observers keep writing to it.

    It is opened in binary append mode without buffering, so each event is
    one C{write(2)} at the end of the file: nothing is held in memory, and
    a C{copytruncate} never leaves a hole.  Writes and the swap take one
    lock, because observers may be called from threads.

    @ivar path: the file's name.
    """

    def __init__(self, path: str):
        self.path = path
        self._lock = threading.Lock()
        self._file = self._open(path)

    @staticmethod
    def _open(path: str):
        return open(path, "ab", buffering=0)

    def write(self, data) -> None:
        """
        Append C{data} (text is written as UTF-8) in one system call.
        """
        if isinstance(data, str):
            data = data.encode("utf-8")
        with self._lock:
            if self._file is not None:
                self._file.write(data)

    def flush(self) -> None:
        """
        Nothing is buffered.
        """

    def reopen(self, path: str | None = None) -> None:
        """
        Open C{path} (by default the same name again) and write there from
        now on; the old file is closed after the swap.

        @raise OSError: if the new file cannot be opened; the old one is
            kept then.
        """
        path = self.path if path is None else path
        new = self._open(path)
        with self._lock:
            old, self._file = self._file, new
            self.path = path
        if old is not None:
            old.close()

    def close(self) -> None:
        """
        Close the file; later writes are dropped.
        """
        with self._lock:
            old, self._file = self._file, None
        if old is not None:
            old.close()


def _passes(event: LogLevel, threshold: LogLevel) -> bool:
    return not event < threshold


class LogService(Service):
    """
    Filters the log at C{log.level} and adds the C{log.output} file while
    running.

    @ivar level: the L{LogLevel} in force.
    """

    _log = Logger()

    def __init__(self, config):
        self._config = config
        self._predicate = LogLevelFilterPredicate(defaultLogLevel=logLevel(config.log.level))
        self.level = self._predicate.defaultLogLevel
        self._infoPasses = _passes(LogLevel.info, self.level)
        self._observer = None
        self._file: ReopenableFile | None = None
        self._wrapped: list = []
        self._reopenHooks: list = []
        self.setName("logs")

    def passesInfo(self) -> bool:
        """
        Whether an info event passes C{log.level} now: lets the busiest
        emitters (the access log) skip building events nobody will see.
        """
        return self._infoPasses

    def startService(self) -> None:
        """
        Filter the existing observers, open C{log.output}, report the config's warnings.
        """
        super().startService()
        self._filterExisting(self._predicate)
        self._openOutput(self._config.log.output)
        for warning in self._config.warnings:
            self._log.warn(
                "config {source}: {warning}", source=self._config.source, warning=warning
            )

    def _openOutput(self, output: str | None) -> None:
        if output:
            self._file = ReopenableFile(output)
            # Plain JSON lines, as zot writes: no RFC 7464 record separator.
            self._observer = FilteringLogObserver(
                jsonFileLogObserver(self._file, recordSeparator=""), [self._predicate]
            )
            globalLogPublisher.addObserver(self._observer)

    def _closeOutput(self) -> None:
        if self._observer is not None:
            globalLogPublisher.removeObserver(self._observer)
            self._observer = None
        if self._file is not None:
            self._file.close()
            self._file = None

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

    def setLevel(self, name: str) -> None:
        """
        Filter at zot's level C{name} from the next event on.
        """
        level = logLevel(name)
        self._predicate.defaultLogLevel = level
        self._predicate.setLogLevelForNamespace("", level)
        self.level = level
        self._infoPasses = _passes(LogLevel.info, level)

    def applyConfig(self, config) -> None:
        """
        Apply a reloaded config's C{log.level} and C{log.output}.

        @raise OSError: if a new C{log.output} cannot be opened (the old
            file is kept).
        """
        self.setLevel(config.log.level)
        output = config.log.output
        current = self._file.path if self._file is not None else None
        if output != current and self.running:
            if output and self._file is not None:
                self._file.reopen(output)
            else:
                self._closeOutput()
                self._openOutput(output)
        self._config = config

    def addReopenHook(self, hook) -> None:
        """
        Call C{hook()} whenever the log files are reopened (C{SIGHUP}): for
        files kept elsewhere that rotate with the log, such as the audit
        log of C{log.audit}.
        """
        self._reopenHooks.append(hook)

    def reopen(self) -> None:
        """
        Reopen C{log.output} under its name, after an outside rotation
        renamed it, and run the reopen hooks.  A file that cannot be opened
        is reported and the old one kept.
        """
        if self._file is not None:
            try:
                self._file.reopen()
            except OSError as e:
                self._log.error(
                    "Cannot reopen log file {path}: {error}", path=self._file.path, error=e
                )
        for hook in list(self._reopenHooks):
            try:
                hook()
            except Exception:
                self._log.failure("Reopening a log file failed")

    def stopService(self) -> None:
        """
        Unwrap the observers and close C{log.output}.
        """
        super().stopService()
        for observer, wrapped in self._wrapped:
            globalLogPublisher.removeObserver(wrapped)
            globalLogPublisher.addObserver(observer)
        self._wrapped = []
        self._closeOutput()
