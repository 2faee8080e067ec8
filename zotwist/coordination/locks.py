# -*- test-case-name: tests.test_coordination -*-
"""
Fenced locks in Redis: one writer per repository across every instance.

Several zotwist instances change the same repository's C{index.json} in
S3.  A read-modify-write of that file must not interleave with another, so
each change runs under a lock in Redis (C{lock:<repo>}), the classic
single-instance pattern:

 - acquire: C{SET lock:<repo> <random token> NX PX <ttl>}; a crashed holder
   cannot block the others for longer than the TTL;
 - release and extend: a Lua script compares the token first
   (compare-and-delete, compare-and-pexpire), so a holder whose lock
   expired and was taken by someone else can neither free nor prolong the
   new holder's lock;
 - fencing: every successful acquisition also C{INCR}s C{fence:<repo>} in
   the same script, so each holder gets a strictly larger number (while
   Redis keeps its data: a Redis restarted empty counts from 1 again, one
   more reason the storage-level check below is what counts).  The lock
   alone cannot stop a holder that was paused past its TTL from writing
   late; what stops it is the storage refusing the late write.  For
   C{index.json} that is S3's conditional PUT (C{If-Match} on the ETag the
   holder read), see L{zotwist.storage.s3.metadata}; the fence number
   identifies the holder in logs and in Redis-side checks.

Every Redis call is blocking (redis-py) and runs in the runner's thread
pool; waiting between attempts is a reactor timer, never a sleeping thread.
"""

import os
import random
import time

from twisted.internet.task import deferLater
from twisted.logger import Logger

#: KEYS[1] lock, KEYS[2] fence; ARGV[1] token, ARGV[2] ttl in ms.
#: Returns the new fence number, or 0 when the lock is held by someone else.
_ACQUIRE = """
if redis.call('SET', KEYS[1], ARGV[1], 'NX', 'PX', ARGV[2]) then
    return redis.call('INCR', KEYS[2])
end
return 0
"""

#: KEYS[1] lock; ARGV[1] token.  Deletes only our own lock.
_RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
    return redis.call('DEL', KEYS[1])
end
return 0
"""

#: KEYS[1] lock; ARGV[1] token, ARGV[2] ttl in ms.  Prolongs only our own lock.
_EXTEND = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
    return redis.call('PEXPIRE', KEYS[1], ARGV[2])
end
return 0
"""


class LockTimeout(Exception):
    """
    The lock stayed taken by others for longer than the caller would wait.
    """


class LockLost(Exception):
    """
    The lock expired and may be held by another instance now: whatever was
    about to be written under it must not be written.
    """


def newToken() -> str:
    """
    A token no other holder has: 128 random bits.
    """
    return os.urandom(16).hex()


class HeldLock:
    """
    One acquisition of a L{FencedLocks} lock.

    Use it as an asynchronous context manager (C{async with}); leaving the
    block releases it.

    @ivar name: what is locked (a repository name).
    @ivar token: the random value stored under the lock key.
    @ivar fence: the fencing number of this acquisition (strictly larger
        than every earlier acquisition's for the same name).
    @ivar acquired: C{time.monotonic()} when it was taken or last extended.
    """

    def __init__(self, locks: "FencedLocks", name: str, token: str, fence: int):
        self._locks = locks
        self.name = name
        self.token = token
        self.fence = fence
        self.acquired = time.monotonic()
        self.released = False

    def remaining(self) -> float:
        """
        Seconds the lock is certainly still ours (by this process's clock),
        counted from the last acquire or extend.
        """
        return self._locks.ttl - (time.monotonic() - self.acquired)

    async def extend(self, ttl: float | None = None) -> bool:
        """
        Give the lock a fresh TTL, if it is still ours.

        @return: whether it was still ours (and is now prolonged).
        """
        started = time.monotonic()
        ok = await self._locks._extend(self.name, self.token, ttl)
        if ok:
            self.acquired = started
        return ok

    async def ensure(self, margin: float | None = None) -> None:
        """
        Make sure the lock is held for at least C{margin} more seconds
        (half the TTL by default), extending it when needed.

        @raise LockLost: it is not ours any more.
        """
        if margin is None:
            margin = self._locks.ttl / 2
        if self.remaining() >= margin:
            return
        if not await self.extend():
            raise LockLost(self.name)

    async def stillHeld(self) -> bool:
        """
        Ask Redis whether the lock is still ours (one round trip).
        """
        return await self._locks._isHeld(self.name, self.token)

    async def release(self) -> bool:
        """
        Free the lock if it is still ours.

        @return: whether it was still ours.
        """
        if self.released:
            return False
        self.released = True
        return await self._locks._release(self.name, self.token)

    async def __aenter__(self) -> "HeldLock":
        return self

    async def __aexit__(self, *exc) -> None:
        try:
            await self.release()
        except Exception:
            # The TTL frees it anyway; the block's own outcome matters more.
            self._locks._log.failure("Releasing lock {name} failed", name=self.name)


class FencedLocks:
    """
    Named fenced locks in one Redis database.

    @param conn: a blocking redis-py client (thread-safe, pooled).
    @param runner: an L{zotwist.threads.IBlockingRunner} for the Redis calls.
    @param keyFor: builds a full Redis key from its parts (the shared
        prefix), as C{RedisClient.key} does.
    @param reactor: for the timers between attempts.
    @param ttl: seconds a lock lives unless extended.
    @param wait: seconds L{acquire} keeps trying before L{LockTimeout}.
    """

    _log = Logger()

    def __init__(
        self,
        conn,
        runner,
        keyFor,
        reactor,
        ttl: float = 30.0,
        wait: float = 60.0,
        firstDelay: float = 0.005,
        maxDelay: float = 0.25,
    ):
        self._conn = conn
        self._runner = runner
        self._keyFor = keyFor
        self._reactor = reactor
        self.ttl = ttl
        self.wait = wait
        self._firstDelay = firstDelay
        self._maxDelay = maxDelay
        self._acquireScript = conn.register_script(_ACQUIRE)
        self._releaseScript = conn.register_script(_RELEASE)
        self._extendScript = conn.register_script(_EXTEND)

    def _ms(self, ttl: float | None) -> int:
        return max(1, int((self.ttl if ttl is None else ttl) * 1000))

    def lockKey(self, name: str) -> str:
        return self._keyFor("lock", name)

    def fenceKey(self, name: str) -> str:
        return self._keyFor("fence", name)

    def _tryAcquire(self, name: str, token: str) -> int:
        return int(
            self._acquireScript(
                keys=[self.lockKey(name), self.fenceKey(name)], args=[token, self._ms(None)]
            )
        )

    async def tryAcquire(self, name: str) -> HeldLock | None:
        """
        One attempt.  @return: the L{HeldLock}, or L{None} when taken.
        """
        token = newToken()
        # The TTL runs from when Redis sets the key, which is after this
        # moment: counting from here never overestimates what is left.
        started = time.monotonic()
        fence = await self._runner.run(self._tryAcquire, name, token)
        if not fence:
            return None
        held = HeldLock(self, name, token, fence)
        held.acquired = started
        return held

    async def acquire(self, name: str, wait: float | None = None) -> HeldLock:
        """
        Take the lock, retrying with jittered exponential back-off while
        another holder has it.

        @param wait: seconds to keep trying (default: the C{wait} given at
            construction).
        @raise LockTimeout: still taken after C{wait} seconds.
        """
        deadline = time.monotonic() + (self.wait if wait is None else wait)
        delay = self._firstDelay
        attempts = 0
        while True:
            attempts += 1
            held = await self.tryAcquire(name)
            if held is not None:
                return held
            now = time.monotonic()
            if now >= deadline:
                raise LockTimeout(f"lock {name!r} still taken after {attempts} attempts")
            pause = min(delay, deadline - now) * random.uniform(0.5, 1.0)
            await deferLater(self._reactor, pause, lambda: None)
            delay = min(delay * 2, self._maxDelay)

    def hold(self, name: str, wait: float | None = None) -> "_Acquiring":
        """
        C{async with locks.hold(name) as held:} acquires on entry and
        releases on exit.
        """
        return _Acquiring(self, name, wait)

    def _release(self, name: str, token: str):
        return self._runner.run(
            lambda: bool(self._releaseScript(keys=[self.lockKey(name)], args=[token]))
        )

    def _extend(self, name: str, token: str, ttl: float | None):
        return self._runner.run(
            lambda: bool(
                self._extendScript(keys=[self.lockKey(name)], args=[token, self._ms(ttl)])
            )
        )

    def _isHeld(self, name: str, token: str):
        def check():
            value = self._conn.get(self.lockKey(name))
            if isinstance(value, bytes):
                value = value.decode("ascii", "replace")
            return value == token

        return self._runner.run(check)


class _Acquiring:
    """
    The asynchronous context manager L{FencedLocks.hold} returns.
    """

    def __init__(self, locks: FencedLocks, name: str, wait: float | None):
        self._locks = locks
        self._name = name
        self._wait = wait
        self._held: HeldLock | None = None

    async def __aenter__(self) -> HeldLock:
        self._held = await self._locks.acquire(self._name, self._wait)
        return self._held

    async def __aexit__(self, *exc) -> None:
        await self._held.__aexit__(*exc)
