# -*- test-case-name: tests.test_locks -*-
"""
Locks that hold across threads and processes.

A repository's C{index.json} is read, changed and replaced under an
exclusive C{flock} on a lock file beside it, so several worker processes
sharing one storage root never lose each other's tags.  Inside one process a
L{DeferredLock} per repository queues the writers first, so waiting for the
file lock never ties up more than one thread of the pool per repository.
"""

import fcntl
import os
from contextlib import contextmanager

from twisted.internet.defer import DeferredLock


@contextmanager
def fileLock(path: str):
    """
    Hold an exclusive C{flock} on C{path} (created if needed).  Blocking:
    use it inside the disk pool only.
    """
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


@contextmanager
def sharedFileLock(path: str):
    """
    Hold a shared C{flock} on C{path}: no holder of L{fileLock} is inside
    while it is held.  Best effort: where the lock file cannot be opened (a
    read-only root, where nobody writes either) nothing is locked.
    Blocking: use it inside the disk pool only.
    """
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except FileNotFoundError:
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        except OSError:
            fd = None
    except OSError:
        fd = None
    try:
        if fd is not None:
            fcntl.flock(fd, fcntl.LOCK_SH)
        yield
    finally:
        if fd is not None:
            os.close(fd)


class KeyedLocks:
    """
    One L{DeferredLock} per key, created on demand and dropped when idle.
    """

    def __init__(self):
        self._locks: dict[str, DeferredLock] = {}
        self._users: dict[str, int] = {}

    async def run(self, key: str, function, *args, **kwargs):
        """
        Run C{function(*args, **kwargs)} (which may return a Deferred or be a
        coroutine's result) while holding the lock for C{key}.
        """
        lock = self._locks.get(key)
        if lock is None:
            lock = self._locks[key] = DeferredLock()
        self._users[key] = self._users.get(key, 0) + 1
        try:
            await lock.acquire()
            try:
                return await function(*args, **kwargs)
            finally:
                lock.release()
        finally:
            self._users[key] -= 1
            if not self._users[key]:
                del self._users[key]
                del self._locks[key]
