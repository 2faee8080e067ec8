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

Waiting for a taken lock: a refused attempt marks the lock wanted
(C{want:<repo>}, short-lived) and waits for a wake-up; releasing publishes
the name on the channel C{unlocked} (one subscriber thread per
L{FencedLocks} hands the messages to the reactor), so a waiter on another
instance tries again as soon as the lock is free instead of sleeping out
a back-off.  A jittered back-off timer stays as the fallback (a lost
message, a holder that died and left the lock to expire).  Release reports
whether someone wanted the lock meanwhile (L{HeldLock.wanted}).

Every Redis call is blocking (redis-py) and runs in the runner's thread
pool; waiting between attempts is a reactor timer, never a sleeping thread.
Callers can add their own commands to the acquire and release round trips
(a MULTI/EXEC transaction each): reading what the lock protects right
after taking it, recording a change right before releasing it.
"""

import os
import random
import threading
import time

from twisted.internet.defer import Deferred
from twisted.logger import Logger

from zotwist.coordination.scripts import PEXPIRE_IF_OWNED

#: KEYS[1] lock, KEYS[2] fence, KEYS[3] want; ARGV[1] token, ARGV[2] ttl in
#: ms, ARGV[3] how long a refused attempt marks the lock wanted, in ms.
#: Returns the new fence number, or 0 when the lock is held by someone else
#: (then marked wanted).
_ACQUIRE = """
if redis.call('SET', KEYS[1], ARGV[1], 'NX', 'PX', ARGV[2]) then
    return redis.call('INCR', KEYS[2])
end
redis.call('SET', KEYS[3], '1', 'PX', ARGV[3])
return 0
"""

#: KEYS[1] lock, KEYS[2] want; ARGV[1] token, ARGV[2] channel, ARGV[3] the
#: lock's name.  Deletes only our own lock, and then tells the waiters.
#: Returns 0 when the lock was not ours, 1 when released, 2 when released
#: and someone had wanted it meanwhile.
_RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
    redis.call('DEL', KEYS[1])
    local wanted = redis.call('DEL', KEYS[2])
    redis.call('PUBLISH', ARGV[2], ARGV[3])
    return 1 + wanted
end
return 0
"""

#: Milliseconds a refused attempt marks a lock wanted: a little longer
#: than the fallback poll, so a live waiter keeps it marked.
_WANT_MS = 1000
WANT_MS = _WANT_MS


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
    @ivar results: what the commands the caller added to the acquiring
        transaction answered (see L{FencedLocks.acquire}).
    @ivar wanted: after L{release}: whether another attempt was refused
        while this lock was held (someone is waiting for it).
    """

    def __init__(self, locks: "FencedLocks", name: str, token: str, fence: int):
        self._locks = locks
        self.name = name
        self.token = token
        self.fence = fence
        self.acquired = time.monotonic()
        self.released = False
        self.results: list = []
        self.wanted = False

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

    async def release(self, before=None) -> bool:
        """
        Free the lock if it is still ours.

        @param before: L{None}, or a function given the transaction
            (a redis-py pipeline) to queue its own commands in, run right
            before the release in the same round trip (while the lock is
            still held); their answers are returned in L{results}.
        @return: whether it was still ours.
        """
        if self.released:
            return False
        self.released = True
        status, self.results = await self._locks._release(self.name, self.token, before)
        self.wanted = status == 2
        return status > 0

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
    @param firstDelay: the first fallback pause between attempts (doubled
        after each refusal up to C{maxDelay}); a release message ends a
        pause early.
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
        self.firstDelay = firstDelay
        self.maxDelay = maxDelay
        self._extendScript = conn.register_script(PEXPIRE_IF_OWNED)
        self.channel = keyFor("unlocked")
        #: name -> Deferreds fired by the next release message of it.
        self._waiters: dict[str, list[Deferred]] = {}
        self._listenLock = threading.Lock()
        self._listening = False
        self._stopping = False

    def ms(self, ttl: float | None = None) -> int:
        """
        C{ttl} (default: the locks' TTL) in whole milliseconds, as Redis
        takes it.
        """
        return max(1, int((self.ttl if ttl is None else ttl) * 1000))

    def lockKey(self, name: str) -> str:
        return self._keyFor("lock", name)

    def fenceKey(self, name: str) -> str:
        return self._keyFor("fence", name)

    def wantKey(self, name: str) -> str:
        return self._keyFor("want", name)

    # -- Redis calls (blocking, in the runner) ----------------------------------------

    def _tryAcquire(self, name: str, token: str, after=None):
        """
        Blocking: one attempt, with the caller's commands queued C{after}
        it in one transaction.  @return: C{(fence or 0, their answers)}.
        """
        pipe = self._conn.pipeline(transaction=after is not None)
        pipe.eval(
            _ACQUIRE, 3, self.lockKey(name), self.fenceKey(name), self.wantKey(name),
            token, self.ms(None), _WANT_MS,
        )
        if after is not None:
            after(pipe)
        answers = pipe.execute()
        return int(answers[0]), answers[1:]

    def _releaseBlocking(self, name: str, token: str, before=None):
        pipe = self._conn.pipeline(transaction=before is not None)
        if before is not None:
            before(pipe)
        pipe.eval(
            _RELEASE, 2, self.lockKey(name), self.wantKey(name), token, self.channel, name
        )
        answers = pipe.execute()
        return int(answers[-1]), answers[:-1]

    def _release(self, name: str, token: str, before=None):
        return self._runner.run(self._releaseBlocking, name, token, before)

    def _extend(self, name: str, token: str, ttl: float | None):
        return self._runner.run(
            lambda: bool(
                self._extendScript(keys=[self.lockKey(name)], args=[token, self.ms(ttl)])
            )
        )

    def _isHeld(self, name: str, token: str):
        def check():
            value = self._conn.get(self.lockKey(name))
            if isinstance(value, bytes):
                value = value.decode("ascii", "replace")
            return value == token

        return self._runner.run(check)

    # -- acquiring ------------------------------------------------------------------

    async def tryAcquire(self, name: str, after=None) -> HeldLock | None:
        """
        One attempt.

        @param after: L{None}, or a function given the transaction (a
            redis-py pipeline) to queue its own commands in, run right
            after taking the lock in the same round trip (so they see what
            the lock protects as the new holder will); their answers are
            the L{HeldLock}'s C{results}.
        @return: the L{HeldLock}, or L{None} when taken.
        """
        token = newToken()
        # The TTL runs from when Redis sets the key, which is after this
        # moment: counting from here never overestimates what is left.
        started = time.monotonic()
        fence, results = await self._runner.run(self._tryAcquire, name, token, after)
        if not fence:
            return None
        held = HeldLock(self, name, token, fence)
        held.acquired = started
        held.results = results
        return held

    async def acquire(
        self, name: str, wait: float | None = None, after=None
    ) -> HeldLock:
        """
        Take the lock; while another holder has it, try again when its
        release is announced, or after a jittered exponential back-off.

        @param wait: seconds to keep trying (default: the C{wait} given at
            construction).
        @param after: see L{tryAcquire}.
        @raise LockTimeout: still taken after C{wait} seconds.
        """
        deadline = time.monotonic() + (self.wait if wait is None else wait)
        delay = self.firstDelay
        attempts = 0
        while True:
            attempts += 1
            # Expect the release message before asking, so one sent while
            # the attempt is on its way is not missed.
            wake = self._expect(name)
            held = await self.tryAcquire(name, after)
            if held is not None:
                self._forget(name, wake)
                return held
            self._startListening()
            now = time.monotonic()
            if now >= deadline:
                self._forget(name, wake)
                raise LockTimeout(f"lock {name!r} still taken after {attempts} attempts")
            pause = min(delay, deadline - now) * random.uniform(0.5, 1.0)
            await self._pause(name, pause, wake)
            delay = min(delay * 2, self.maxDelay)

    def hold(self, name: str, wait: float | None = None) -> "_Acquiring":
        """
        C{async with locks.hold(name) as held:} acquires on entry and
        releases on exit.
        """
        return _Acquiring(self, name, wait)

    # -- release messages --------------------------------------------------------------

    def expect(self, name: str) -> Deferred:
        """
        @return: a L{Deferred} fired by the next message about C{name} on
            L{channel} (a release, or whatever else a holder announces
            there); ask for it before the Redis call whose outcome it
            follows, so a message sent meanwhile is not missed.
        """
        self._startListening()
        return self._expect(name)

    def pause(self, name: str, seconds: float, wake: Deferred) -> Deferred:
        """
        @return: a L{Deferred} firing after C{seconds} or when C{wake} (from
            L{expect}) fires, whichever comes first.
        """
        return self._pause(name, seconds, wake)

    def forget(self, name: str, wake: Deferred) -> None:
        """
        Stop expecting a message (C{wake} from L{expect}).
        """
        self._forget(name, wake)

    def _expect(self, name: str) -> Deferred:
        wake = Deferred()
        self._waiters.setdefault(name, []).append(wake)
        return wake

    def _forget(self, name: str, wake: Deferred) -> None:
        waiting = self._waiters.get(name)
        if waiting and wake in waiting:
            waiting.remove(wake)
            if not waiting:
                del self._waiters[name]

    def _pause(self, name: str, seconds: float, wake: Deferred) -> Deferred:
        """
        @return: a L{Deferred} firing after C{seconds} or when C{wake}
            fires, whichever comes first.
        """
        done = Deferred()

        def finish(_=None):
            if call.active():
                call.cancel()
            self._forget(name, wake)
            if not done.called:
                done.callback(None)

        call = self._reactor.callLater(max(0.0, seconds), finish)
        wake.addCallback(finish)
        return done

    def _woken(self, name: str) -> None:
        for wake in self._waiters.pop(name, []):
            if not wake.called:
                wake.callback(None)

    def _startListening(self) -> None:
        """
        Subscribe to release messages (a thread of its own, started on the
        first refused attempt; it ends after a while without waiters).
        """
        if not hasattr(self._conn, "pubsub"):
            return
        with self._listenLock:
            if self._listening or self._stopping:
                return
            self._listening = True
        threading.Thread(
            target=self._listen, name=f"zotwist-locks-{self.channel}", daemon=True
        ).start()

    def _listen(self) -> None:
        idleSince = time.monotonic()
        while True:
            pubsub = None
            try:
                pubsub = self._conn.pubsub(ignore_subscribe_messages=True)
                pubsub.subscribe(self.channel)
                while True:
                    with self._listenLock:
                        if self._waiters:
                            idleSince = time.monotonic()
                        elif self._stopping or time.monotonic() - idleSince > 10.0:
                            self._listening = False
                            return
                    message = pubsub.get_message(timeout=0.5)
                    if message and message.get("type") == "message":
                        name = message.get("data")
                        if isinstance(name, bytes):
                            name = name.decode("utf-8", "replace")
                        self._reactor.callFromThread(self._woken, name)
            except Exception:
                # Redis away: the waiters' back-off timers carry on meanwhile.
                if self._stopping:
                    with self._listenLock:
                        self._listening = False
                    return
                time.sleep(0.2)
            finally:
                if pubsub is not None:
                    try:
                        pubsub.close()
                    except Exception:
                        pass

    def stop(self) -> None:
        """
        End the subscriber thread (within half a second).
        """
        with self._listenLock:
            self._stopping = True


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
