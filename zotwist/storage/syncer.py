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
"""

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


def replace(source: str, target: str, commit: bool) -> None:
    """
    Put the file C{source} in place of C{target}, atomically for readers.
    Blocking.

    @param commit: C{source} was synced: a plain rename (nothing for ext4
        to flush).  Otherwise an exchange and an unlink of the old content.
    """
    if not commit and exchange(source, target):
        os.unlink(source)  # now the old content
        return
    os.replace(source, target)


class LazySync:
    """
    Syncs the files it is told changed, in the pool, every
    L{SYNC_INTERVAL} seconds (and when stopped).

    @param runner: an L{zotwist.threads.IBlockingRunner}.
    @param reactor: schedules the syncs; L{None} syncs nothing (unit tests).
    """

    def __init__(self, runner, reactor=None, interval: float = SYNC_INTERVAL):
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
        return self._runner.run(_syncAll, sorted(paths))

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


def _syncAll(paths) -> None:
    for path in paths:
        try:
            fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
        except OSError:
            continue  # gone: nothing to keep
        try:
            os.fdatasync(fd)
        except OSError:
            pass
        finally:
            os.close(fd)
