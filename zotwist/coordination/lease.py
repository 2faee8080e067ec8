# -*- test-case-name: tests.test_coordination -*-
"""
The leader lease: which one instance of a cluster runs background work.

Garbage collection, scrub and retention must run once across the cluster,
not once per instance.  Every instance runs a L{LeaderLease}; the one whose
C{SET leader <id> NX PX <ttl>} succeeds is the leader and renews the lease
every third of the TTL with a compare-and-pexpire script (only its own id
is prolonged).  When the leader dies or cannot reach Redis, its lease
expires after at most one TTL and the next instance to try takes it.

A leader that fails to renew in time (the lease is gone or held by another
id, or Redis does not answer before the lease would have run out by its own
clock) considers itself deposed at once: being wrongly "not leader" for a
moment only delays background work, while two leaders at once could both
collect garbage.
"""

import os
import time

from twisted.application.service import Service
from twisted.internet.defer import ensureDeferred, maybeDeferred
from twisted.internet.task import LoopingCall
from twisted.logger import Logger

from zotwist.coordination.scripts import DELETE_IF_OWNED

#: KEYS[1] leader; ARGV[1] our id, ARGV[2] ttl ms.  1: we hold it (taken
#: now or renewed), 0: someone else does.
_TAKE_OR_RENEW = """
local current = redis.call('GET', KEYS[1])
if current == ARGV[1] then
    redis.call('PEXPIRE', KEYS[1], ARGV[2])
    return 1
end
if not current then
    redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
    return 1
end
return 0
"""


class LeaderLease(Service):
    """
    Holds (or waits for) the cluster's leader lease while running.

    @param conn: a blocking redis-py client.
    @param runner: an L{zotwist.threads.IBlockingRunner} for Redis calls.
    @param key: the full Redis key of the lease (C{RedisClient.key("leader")}).
    @param reactor: for the renewal timer.
    @param ttl: the lease's lifetime in seconds; it is renewed (or, by a
        follower, tried) every C{ttl / 3}.
    @param instanceID: this instance's id (random by default).
    @ivar onGain: callables run (on the reactor thread) when this instance
        becomes leader.
    @ivar onLoss: callables run when it stops being leader (deposed,
        Redis unreachable, or stopped).
    """

    name = "leader-lease"
    _log = Logger()

    def __init__(self, conn, runner, key: str, reactor, ttl: float = 15.0, instanceID=None):
        self._conn = conn
        self._runner = runner
        self.key = key
        self._reactor = reactor
        self.ttl = ttl
        self.instanceID = instanceID or f"{os.uname().nodename}-{os.getpid()}-{os.urandom(6).hex()}"
        self.onGain: list = []
        self.onLoss: list = []
        self._leader = False
        self._validUntil = 0.0
        self._loop: LoopingCall | None = None
        self._attempt = None
        self._script = conn.register_script(_TAKE_OR_RENEW)
        self._resign = conn.register_script(DELETE_IF_OWNED)  # resign: only our own lease

    def isLeader(self) -> bool:
        """
        Whether this instance holds the lease now (by its own clock: a lease
        not renewed in time counts as lost even before Redis says so).
        """
        if self._leader and time.monotonic() >= self._validUntil:
            self._setLeader(False)
        return self._leader

    def startService(self) -> None:
        super().startService()
        self._loop = LoopingCall(self._tick)
        self._loop.clock = self._reactor
        self._loop.start(self.ttl / 3, now=True)

    async def _stop(self) -> None:
        if self._attempt is not None:
            try:
                await self._attempt
            except Exception:
                pass
        if self._leader:
            self._setLeader(False)
            try:
                await self._runner.run(
                    lambda: self._resign(keys=[self.key], args=[self.instanceID])
                )
            except Exception:
                self._log.failure("Could not resign the leader lease (it will expire)")

    def stopService(self):
        super().stopService()
        if self._loop is not None and self._loop.running:
            self._loop.stop()
        return ensureDeferred(self._stop())

    def _tick(self) -> None:
        if self._attempt is not None:
            # The last attempt has not answered: if it outlives our lease,
            # isLeader() already says no.
            self.isLeader()
            return
        started = time.monotonic()
        ttlMs = max(1, int(self.ttl * 1000))
        d = self._runner.run(
            lambda: int(self._script(keys=[self.key], args=[self.instanceID, ttlMs]))
        )
        self._attempt = d

        def answered(held):
            self._attempt = None
            if not self.running:
                return
            if held:
                # Valid from when we asked, not from when Redis answered.
                self._validUntil = started + self.ttl
                if not self._leader:
                    self._log.info("This instance ({id}) is now the leader", id=self.instanceID)
                self._setLeader(True)
            elif self._leader:
                self._log.warn("Leader lease lost to another instance")
                self._setLeader(False)

        def failed(failure):
            self._attempt = None
            self._log.failure("Leader lease: Redis did not answer", failure)
            self.isLeader()

        d.addCallbacks(answered, failed)

    def _setLeader(self, leader: bool) -> None:
        if leader == self._leader:
            return
        self._leader = leader
        for callback in list(self.onGain if leader else self.onLoss):
            try:
                callback()
            except Exception:
                self._log.failure("Leader lease callback failed")


class LeaderOnly(Service):
    """
    Runs a child service only while a L{LeaderLease} says this instance is
    the leader: started on gain, stopped on loss.

    Wrap a L{zotwist.storage.gc.GarbageCollectionService}-like service in
    it so the cluster collects once.
    """

    def __init__(self, lease: LeaderLease, child: Service):
        self.lease = lease
        self.child = child
        self.name = f"leader-only-{getattr(child, 'name', None) or 'service'}"
        self._stopping = None

    def startService(self) -> None:
        super().startService()
        self.lease.onGain.append(self._gained)
        self.lease.onLoss.append(self._lost)
        if self.lease.isLeader():
            self._gained()

    def _gained(self) -> None:
        if self.running and not self.child.running:
            self.child.startService()

    def _lost(self):
        if self.child.running:
            return self.child.stopService()
        return None

    def stopService(self):
        super().stopService()
        if self._gained in self.lease.onGain:
            self.lease.onGain.remove(self._gained)
        if self._lost in self.lease.onLoss:
            self.lease.onLoss.remove(self._lost)
        return maybeDeferred(self._lost)
