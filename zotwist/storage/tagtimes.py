# -*- test-case-name: tests.test_tagtimes -*-
"""
Push and pull times per tag and per manifest digest: what
C{storage.retention}'s C{mostRecentlyPushedCount}, C{mostRecentlyPulledCount},
C{pushedWithin} and C{pulledWithin} need.

A pull must not wait for the disk: L{TagTimes.pulled} only updates a map in
memory and marks the entry dirty.  Every few seconds (L{FLUSH_INTERVAL}) the
dirty entries are appended, in the disk pool, to one journal per repository
under C{ROOT/.zotwist-retention/}: JSON lines C{{"k": key, "push": t,
"pull": t}} (times in seconds since the epoch, L{None} when unknown).  A later
line for a key wins, field by field, by the larger time, so worker processes
sharing the root can append to one journal (whole lines, under an
C{flock}) in any order.  A stop flushes what is left; a crash loses at most
the last interval's pulls, never a push older than that.

A journal is read the first time its repository's times are asked for
(L{TagTimes.times}), merged with what this process saw meanwhile, and
rewritten with one line per key when it has grown to more than twice that.
"""

import json
import os
import time
from urllib.parse import quote

from twisted.internet.defer import ensureDeferred
from twisted.internet.task import LoopingCall
from twisted.logger import Logger

from zotwist.storage.locks import fileLock

#: The directory under the storage root that holds the journals.
DIRECTORY = ".zotwist-retention"
#: How often dirty entries are written, in seconds.
FLUSH_INTERVAL = 5.0
#: A journal with more lines than this many per key (plus a margin) is
#: compacted when read.
_COMPACT_RATIO = 2
_COMPACT_MARGIN = 100


def later(a, b):
    """
    The later of two times, either of which may be unknown (L{None}): times
    only ever move forward, whoever records them in whatever order.
    """
    if a is None:
        return b
    if b is None:
        return a
    return max(a, b)


def merge(times: dict, key: str, pushed, pulled) -> None:
    """
    Fold C{(pushed, pulled)} into C{times[key]} (a C{[pushed, pulled]}
    list, made when absent), keeping the later of each.
    """
    entry = times.setdefault(key, [None, None])
    entry[0] = later(entry[0], pushed)
    entry[1] = later(entry[1], pulled)


async def flushLast(flushing, flush, log, message: str) -> None:
    """
    The last write when times stop being recorded: wait for the flush in
    progress (its failure was logged already), then write what is left; a
    failure is logged (C{message}, with C{e}) and not raised, so the
    service stops anyway.

    @param flushing: the Deferred of the flush in progress, or L{None}.
    @param flush: starts a flush; awaitable.
    """
    if flushing is not None:
        try:
            await flushing
        except Exception:
            pass
    try:
        await flush()
    except Exception as e:
        log.error(message, e=e)


class TagTimes:
    """
    The push and pull times of the tags and manifests of every repository.

    @param root: the storage root.
    @param runner: an L{zotwist.threads.IBlockingRunner} for the disk work.
    @param reactor: schedules the periodic flush (L{None}: only explicit
        L{flush} calls write).
    @param clock: returns the current time in seconds since the epoch.
    """

    _log = Logger()

    def __init__(self, root: str, runner, reactor=None, clock=time.time,
                 interval: float = FLUSH_INTERVAL):
        self.directory = os.path.join(root, DIRECTORY)
        self._runner = runner
        self._reactor = reactor
        self._clock = clock
        self._interval = interval
        # repository -> key -> [pushed, pulled]
        self._times: dict[str, dict[str, list]] = {}
        self._loaded: set[str] = set()
        self._dirty: dict[str, set[str]] = {}
        self._loop: LoopingCall | None = None
        self._flushing = None

    # -- recording (on the reactor thread, no I/O) --------------------------------

    def _entry(self, repository: str, key: str) -> list:
        keys = self._times.setdefault(repository, {})
        entry = keys.get(key)
        if entry is None:
            entry = keys[key] = [None, None]
        return entry

    def pushed(self, repository: str, keys, when: float | None = None) -> None:
        """
        The manifest known by C{keys} (its tags and digest) was pushed.
        """
        self._note(repository, keys, 0, when)

    def pulled(self, repository: str, keys, when: float | None = None) -> None:
        """
        The manifest known by C{keys} was pulled.  Memory only.
        """
        self._note(repository, keys, 1, when)

    def _note(self, repository: str, keys, which: int, when: float | None) -> None:
        """
        Record time C{which} (0 pushed, 1 pulled) of C{keys}, to be flushed.
        """
        when = self._clock() if when is None else when
        dirty = self._dirty.setdefault(repository, set())
        for key in keys:
            entry = self._entry(repository, key)
            entry[which] = later(entry[which], when)
            dirty.add(key)

    # -- reading -----------------------------------------------------------------------

    def journalPath(self, repository: str) -> str:
        return os.path.join(self.directory, quote(repository, safe="") + ".journal")

    async def times(self, repository: str) -> dict[str, tuple]:
        """
        @return: C{{key: (pushed, pulled)}} for the repository's tags and
            manifest digests, from its journal and this process's memory.
        """
        if repository not in self._loaded:
            stored = await self._runner.run(self._load, repository)
            keys = self._times.setdefault(repository, {})
            for key, (pushed, pulled) in stored.items():
                merge(keys, key, pushed, pulled)
            self._loaded.add(repository)
        return {k: tuple(v) for k, v in self._times.get(repository, {}).items()}

    def _load(self, repository: str) -> dict[str, tuple]:
        """
        Read (and, when long, compact) a journal.  Blocking.
        """
        path = self.journalPath(repository)
        found: dict[str, list] = {}
        lines = 0
        try:
            with fileLock(path + ".lock"):
                with open(path, "rb") as f:
                    data = f.read()
                for line in data.splitlines():
                    lines += 1
                    try:
                        record = json.loads(line)
                        key = record["k"]
                        if not isinstance(key, str):
                            continue
                        merge(found, key, _time(record.get("push")), _time(record.get("pull")))
                    except (ValueError, KeyError, TypeError):
                        continue  # a torn or foreign line
                if lines > _COMPACT_RATIO * len(found) + _COMPACT_MARGIN:
                    self._rewrite(path, found)
        except FileNotFoundError:
            return {}
        return {k: tuple(v) for k, v in found.items()}

    @staticmethod
    def _rewrite(path: str, found: dict) -> None:
        tmp = f"{path}.{os.getpid()}.tmp"
        with open(tmp, "wb") as f:
            f.write(_lines(found))
        os.replace(tmp, path)

    # -- writing -------------------------------------------------------------------------

    def start(self) -> None:
        """
        Flush every L{FLUSH_INTERVAL} seconds (when there is a reactor).
        """
        os.makedirs(self.directory, exist_ok=True)
        if self._reactor is not None and self._loop is None:
            self._loop = LoopingCall(self._tick)
            self._loop.clock = self._reactor
            self._loop.start(self._interval, now=False)

    def _tick(self):
        if self._flushing is not None:
            return None  # the last flush is still writing
        self._flushing = d = self._flushDeferred()

        def done(result):
            self._flushing = None
            return result

        d.addBoth(done)
        d.addErrback(
            lambda f: self._log.error("retention: writing push/pull times failed: {e}",
                                      e=f.value)
        )
        return None

    def _flushDeferred(self):
        return ensureDeferred(self.flush())

    async def flush(self) -> int:
        """
        Append the dirty entries to their journals.

        @return: how many records were written.
        """
        dirty, self._dirty = self._dirty, {}
        batches = []
        for repository, keys in dirty.items():
            current = self._times.get(repository, {})
            # Copies of the times; encoded in the pool (thousands of keys
            # a flush would otherwise stall the reactor for milliseconds).
            records = {k: tuple(current[k]) for k in keys if k in current}
            if records:
                batches.append((self.journalPath(repository), records))
        if not batches:
            return 0
        try:
            await self._runner.run(self._append, batches)
        except BaseException:
            # Not written: dirty again, for the next flush.
            for repository, keys in dirty.items():
                self._dirty.setdefault(repository, set()).update(keys)
            raise
        return sum(len(keys) for keys in dirty.values())

    def _append(self, batches) -> None:
        os.makedirs(self.directory, exist_ok=True)
        flags = os.O_RDWR | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC
        for path, records in batches:
            data = _lines(records)
            with fileLock(path + ".lock"):
                fd = os.open(path, flags, 0o644)
                try:
                    size = os.fstat(fd).st_size
                    if size and os.pread(fd, 1, size - 1) != b"\n":
                        # A line torn by a crash: end it, so it spoils
                        # nothing after it.
                        data = b"\n" + data
                    view = memoryview(data)
                    while view:
                        view = view[os.write(fd, view):]
                finally:
                    os.close(fd)

    async def stop(self) -> None:
        """
        Stop the periodic flush and write what is left.
        """
        if self._loop is not None:
            loop, self._loop = self._loop, None
            if loop.running:
                loop.stop()
        await flushLast(
            self._flushing, self.flush, self._log,
            "retention: writing push/pull times failed: {e}",
        )


def _time(value):
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(value)
    return float(value)


def _lines(records: dict) -> bytes:
    return b"".join(
        json.dumps({"k": k, "push": v[0], "pull": v[1]}, separators=(",", ":")).encode()
        + b"\n"
        for k, v in sorted(records.items())
    )


__all__ = ["TagTimes", "DIRECTORY", "FLUSH_INTERVAL"]
