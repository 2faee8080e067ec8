# -*- test-case-name: tests.test_syncer -*-
"""
Replacing C{index.json} cheaply, and making it durable a moment later.

Renaming a new file over an existing one makes ext4 (C{auto_da_alloc}, on
by default) write the new file's data to disk inside the C{rename}: for an
C{index.json} of thousands of tags, rewritten after every group of manifest
pushes, that is milliseconds of CPU and a megabyte of disk writes each
time, most of it for versions replaced again a few milliseconds later.

Without C{storage.commit}, L{replace} therefore swaps the new file into
place with C{renameat2(RENAME_EXCHANGE)} (as atomic for readers, without
the flush) and removes the old one; L{LazySync} then C{fdatasync}s each
changed index about once a second, so a quiet repository's index is on
disk within a second or so, as zot's C{commit: false} promises no more
than that.  With C{storage.commit}, files are synced before the rename
and the rename is a plain one.

Without the flush, a power loss (not a process crash: the page cache
survives those) shortly after a swap can leave C{index.json} empty or
garbled, which would lose every tag of the repository, not just the last
change.  So while a swapped-in C{index.json} is not known to be on disk,
the last content that is stays beside it as C{.index.json.prev}
(L{previousOf}): L{replace} keeps it, L{LazySync} removes it once the new
content is synced, and L{readWithFallback} reads it when C{index.json}
does not parse.  At worst a power loss costs the last second of changes,
which is what zot's C{commit: false} promises.
"""

import contextlib
import ctypes
import errno
import os

from twisted.internet.task import LoopingCall
from twisted.logger import Logger

_AT_FDCWD = -100
_RENAME_EXCHANGE = 2
#: Seconds between two syncs of changed indexes.
SYNC_INTERVAL = 1.0

_log = Logger()


def _loadRenameat2():
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        function = libc.renameat2
    except (OSError, AttributeError):
        return None
    function.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p,
                         ctypes.c_uint]
    function.restype = ctypes.c_int
    return function


_renameat2 = _loadRenameat2()


def exchange(source: str, target: str) -> bool:
    """
    Atomically swap the names C{source} and C{target}.

    @return: whether it was done; L{False} where the system or filesystem
        cannot, or C{target} does not exist (the caller renames instead).
    """
    global _renameat2
    if _renameat2 is None:
        return False
    result = _renameat2(
        _AT_FDCWD, os.fsencode(source), _AT_FDCWD, os.fsencode(target), _RENAME_EXCHANGE
    )
    if result == 0:
        return True
    code = ctypes.get_errno()
    if code in (errno.ENOSYS, errno.EPERM):
        _renameat2 = None  # not on this kernel (or forbidden by seccomp)
    elif code not in (errno.ENOENT, errno.EINVAL, errno.EXDEV, errno.ENOTSUP):
        raise OSError(code, os.strerror(code), target)
    return False


def previousOf(target: str) -> str:
    """
    @return: where the last synced content of C{target} is kept while its
        current content may not be on disk yet.
    """
    directory, name = os.path.split(target)
    return os.path.join(directory, f".{name}.prev")


def replace(source: str, target: str, commit: bool, exchange_: bool = True) -> None:
    """
    Put the file C{source} in place of C{target}, atomically for readers.
    Blocking; call it under the lock that orders the writers of C{target}.

    @param commit: C{source} was synced: a plain rename (nothing for ext4
        to flush).  Otherwise an exchange, keeping the old content as
        L{previousOf} C{target} unless an older synced one is kept already.
    @param exchange_: L{False} to always rename (ext4 flushes the data in
        the rename, so the new content needs no previous copy).
    """
    if exchange_ and not commit and exchange(source, target):
        # ``source`` now names the old content.  Invariant: with no previous
        # copy, the target's content is on disk (synced, or flushed by a
        # plain rename); so that content is the one to keep.
        previous = previousOf(target)
        if os.path.exists(previous):
            os.unlink(source)
        else:
            os.rename(source, previous)
        return
    os.replace(source, target)
    with contextlib.suppress(FileNotFoundError):
        os.unlink(previousOf(target))


def readWithFallback(target: str, parse):
    """
    Read and C{parse} C{target}; when that raises L{ValueError} (an
    C{index.json} left empty or garbled by a power loss after a swap) and
    a previous synced copy exists, parse that instead.  Blocking.

    @return: C{(os.stat_result of target, parse(data))}; raises
        L{FileNotFoundError} when there is no C{target}, and the first
        L{ValueError} when no fallback parses.
    """
    with open(target, "rb") as f:
        st = os.fstat(f.fileno())
        data = f.read()
    try:
        return st, parse(data)
    except ValueError as first:
        try:
            with open(previousOf(target), "rb") as f:
                fallback = f.read()
        except FileNotFoundError:
            raise first from None
        try:
            parsed = parse(fallback)
        except ValueError:
            raise first from None
        _log.warn(
            "{path} does not parse ({e}); using the last synced copy {previous}",
            path=target, e=first, previous=previousOf(target),
        )
        return st, parsed


class LazySync:
    """
    Syncs the files it is told changed, in the pool, every
    L{SYNC_INTERVAL} seconds (and when stopped).

    @param runner: an L{zotwist.threads.IBlockingRunner}.
    @param reactor: schedules the syncs; L{None} syncs nothing (unit tests).
    """

    def __init__(self, runner, reactor=None, interval: float = SYNC_INTERVAL, lockFor=None):
        """
        @param lockFor: C{path -> context manager} holding the lock that
            orders C{path}'s writers (L{replace} runs under it), so that a
            sync and its removal of the previous copy are not split by a
            swap; L{None} for no lock.
        """
        self._lockFor = lockFor or (lambda path: contextlib.nullcontext())
        self._runner = runner
        self._reactor = reactor
        self._interval = interval
        self._dirty: set[str] = set()
        self._loop: LoopingCall | None = None
        self._running = None

    def changed(self, path: str) -> None:
        """
        C{path} was replaced and is not on disk yet.  Thread-safe (a set
        update under the GIL).
        """
        self._dirty.add(path)

    def start(self) -> None:
        if self._reactor is None or self._loop is not None:
            return
        self._loop = LoopingCall(self._tick)
        self._loop.clock = self._reactor
        self._loop.start(self._interval, now=False)

    def _tick(self) -> None:
        if self._running is None and self._dirty:
            self._running = self.sync()
            self._running.addErrback(
                lambda f: _log.error("Syncing indexes failed: {e}", e=f.value)
            )
            self._running.addBoth(self._done)

    def _done(self, _) -> None:
        self._running = None

    def sync(self):
        """
        Sync what changed so far.

        @return: a L{Deferred} that fires when done.
        """
        paths, self._dirty = self._dirty, set()
        return self._runner.run(_syncAll, sorted(paths), self._lockFor)

    async def stop(self) -> None:
        if self._loop is not None:
            loop, self._loop = self._loop, None
            if loop.running:
                loop.stop()
        if self._running is not None:
            try:
                await self._running
            except Exception:
                pass
        if self._dirty:
            await self.sync()


def _syncAll(paths, lockFor) -> None:
    for path in paths:
        with lockFor(path):
            try:
                fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
            except OSError:
                continue  # gone: nothing to keep
            try:
                os.fdatasync(fd)
            except OSError:
                continue  # not known to be on disk: keep the previous copy
            finally:
                os.close(fd)
            with contextlib.suppress(FileNotFoundError):
                os.unlink(previousOf(path))
