"""
Tests for L{zotwist.coordination.locks} and L{zotwist.coordination.lease}
against a real C{redis-server} (L{tests.clustersupport.redisServer}).

Each test works under its own random key prefix, so tests share one server.
"""

import os

import redis
from twisted.internet import reactor
from twisted.internet.defer import ensureDeferred, gatherResults
from twisted.internet.task import deferLater
from twisted.trial.unittest import TestCase

from tests.clustersupport import redisServer
from tests.procsupport import waitUntil
from zotwist.coordination.lease import LeaderLease, LeaderOnly
from zotwist.coordination.locks import FencedLocks, LockLost, LockTimeout
from zotwist.threads import ThreadPoolRunner


class _RedisCase(TestCase):
    """
    A Redis connection, a started thread pool and a unique key prefix.
    """

    def setUp(self):
        self.endpoint = redisServer()
        self.prefix = f"test:{os.urandom(6).hex()}:"
        self.conn = self.connect()
        self.runner = ThreadPoolRunner(reactor, minThreads=1, maxThreads=16, name="test-redis")
        self.runner.startService()
        self.addCleanup(self.runner.stopService)

    def connect(self) -> redis.Redis:
        """
        A separate connection pool, as another instance would have.
        """
        conn = redis.Redis.from_url(self.endpoint.url)
        self.addCleanup(conn.close)
        return conn

    def key(self, *parts: str) -> str:
        return self.prefix + ":".join(parts)

    def locks(self, ttl: float = 10.0, wait: float = 30.0, conn=None) -> FencedLocks:
        return FencedLocks(
            conn or self.connect(), self.runner, self.key, reactor, ttl=ttl, wait=wait
        )

    async def expired(self, name: str) -> None:
        """
        Wait until Redis dropped the lock C{name} by itself (its TTL ran out).
        """
        lockKey = self.key("lock", name)
        await waitUntil(lambda: not self.conn.exists(lockKey), 30, "lock never expired")


class FencedLockTests(_RedisCase):
    """
    L{FencedLocks}: exclusion, expiry, fencing, stale holders.
    """

    def test_mutualExclusion(self):
        """
        Forty concurrent read-modify-write increments of one Redis counter,
        spread over four lock objects (as four instances would), each
        yielding to the reactor between its read and its write, end exactly
        at forty: no two critical sections overlapped.
        """
        counter = self.key("counter")
        instances = [self.locks() for _ in range(4)]
        inside = []
        overlaps = []

        async def increment(locks):
            async with locks.hold("repo"):
                inside.append(1)
                if len(inside) > 1:
                    overlaps.append(len(inside))
                value = int(await self.runner.run(self.conn.get, counter) or 0)
                await deferLater(reactor, 0.001, lambda: None)
                await self.runner.run(self.conn.set, counter, value + 1)
                inside.pop()

        async def run():
            await gatherResults(
                [ensureDeferred(increment(instances[i % 4])) for i in range(40)],
                consumeErrors=True,
            )
            self.assertEqual(int(self.conn.get(counter)), 40)
            self.assertEqual(overlaps, [])
            self.assertFalse(self.conn.exists(self.key("lock", "repo")))
            self.assertEqual(int(self.conn.get(self.key("fence", "repo"))), 40)

        return ensureDeferred(run())

    def test_fencingTokensIncrease(self):
        """
        Each acquisition gets a fencing number larger than the one before,
        whichever lock object takes it.
        """

        async def run():
            first, second = self.locks(), self.locks()
            fences = []
            for locks in (first, second, first, second, second):
                held = await locks.acquire("repo")
                fences.append(held.fence)
                self.assertTrue(await held.release())
            self.assertEqual(fences, sorted(set(fences)))
            self.assertEqual(len(fences), 5)

        return ensureDeferred(run())

    def test_deadHolderExpires(self):
        """
        A holder that never releases (it died) blocks others only until
        its TTL runs out; the next holder gets a larger fence.
        """

        async def run():
            dead = await self.locks(ttl=0.3).acquire("repo")
            other = self.locks(ttl=10)
            self.assertIsNone(await other.tryAcquire("repo"))
            held = await other.acquire("repo", wait=30)
            self.assertGreater(held.fence, dead.fence)
            await held.release()

        return ensureDeferred(run())

    def test_staleHolderCannotReleaseOrExtend(self):
        """
        After a holder's lock expired and another took it, the first
        holder's release and extend do nothing, and its C{ensure} raises
        L{LockLost}; the new holder keeps the lock.
        """

        async def run():
            stale = await self.locks(ttl=0.2).acquire("repo")
            await self.expired("repo")
            current = await self.locks(ttl=30).acquire("repo")
            self.assertFalse(await stale.extend(30))
            self.assertFalse(await stale.stillHeld())
            stale.acquired -= 1  # by its clock, its TTL ran out
            with self.assertRaises(LockLost):
                await stale.ensure()
            self.assertFalse(await stale.release())
            self.assertEqual(
                self.conn.get(self.key("lock", "repo")).decode(), current.token
            )
            self.assertTrue(await current.stillHeld())
            self.assertTrue(await current.extend(30))
            self.assertTrue(await current.release())
            self.assertFalse(self.conn.exists(self.key("lock", "repo")))

        return ensureDeferred(run())

    def test_extendKeepsLockAlive(self):
        """
        A holder that extends keeps its lock past the original TTL.
        """

        async def run():
            locks = self.locks(ttl=0.3)
            held = await locks.acquire("repo")
            self.assertTrue(await held.extend(30))
            ttl = self.conn.pttl(self.key("lock", "repo"))
            self.assertGreater(ttl, 1000)
            self.assertTrue(await held.release())

        return ensureDeferred(run())

    def test_acquireGivesUp(self):
        """
        While another holder keeps the lock, L{FencedLocks.acquire} retries
        and then raises L{LockTimeout}; the holder is not disturbed.
        """

        async def run():
            holder = await self.locks(ttl=30).acquire("repo")
            with self.assertRaises(LockTimeout):
                await self.locks().acquire("repo", wait=0.2)
            self.assertTrue(await holder.stillHeld())
            await holder.release()

        return ensureDeferred(run())

    def test_releaseWakesWaiter(self):
        """
        A waiter on another instance is woken by the release message: its
        back-off is a minute at least, yet it has the lock within seconds
        of the release.  The release reports that the lock was wanted
        meanwhile.
        """

        async def run():
            holder = await self.locks().acquire("repo")
            waiter = FencedLocks(
                self.connect(), self.runner, self.key, reactor, ttl=10, wait=240,
                firstDelay=120.0, maxDelay=120.0,
            )
            self.addCleanup(waiter.stop)
            waiting = ensureDeferred(waiter.acquire("repo"))
            # Refused once (the lock is marked wanted), then sleeping.
            await waitUntil(
                lambda: self.conn.exists(self.key("want", "repo")), 5, "never refused"
            )
            # Let the subscriber thread subscribe before the message goes out.
            channel = self.key("unlocked").encode()
            await waitUntil(
                lambda: self.conn.pubsub_numsub(channel)[0][1] > 0, 5, "never subscribed"
            )
            self.assertFalse(waiting.called)
            self.assertTrue(await holder.release())
            self.assertTrue(holder.wanted)
            await waitUntil(lambda: waiting.called, 20, "the release never woke the waiter")
            held = await waiting
            self.assertGreater(held.fence, holder.fence)
            self.assertTrue(await held.release())
            self.assertFalse(held.wanted)

        return ensureDeferred(run())

    def test_acquireReadsAndReleaseWrites(self):
        """
        Commands added to the acquiring transaction see the state as the
        new holder does; commands added to the release run while the lock
        is still held, in the same round trip.
        """

        async def run():
            locks = self.locks()
            self.conn.set(self.key("data"), "before")
            held = await locks.acquire("repo", after=lambda pipe: pipe.get(self.key("data")))
            self.assertEqual(held.results, [b"before"])

            def write(pipe):
                pipe.get(self.key("lock", "repo"))
                pipe.set(self.key("data"), "after")

            self.assertTrue(await held.release(before=write))
            self.assertEqual(held.results, [held.token.encode(), True])
            self.assertEqual(self.conn.get(self.key("data")), b"after")
            self.assertFalse(self.conn.exists(self.key("lock", "repo")))

        return ensureDeferred(run())

    def test_contextManagerReleasesOnError(self):
        """
        Leaving an C{async with} block by an exception releases the lock.
        """

        async def run():
            locks = self.locks()
            with self.assertRaises(ZeroDivisionError):
                async with locks.hold("repo") as held:
                    self.assertTrue(await held.stillHeld())
                    1 / 0
            self.assertFalse(self.conn.exists(self.key("lock", "repo")))
            self.assertIsNotNone(await locks.tryAcquire("repo"))

        return ensureDeferred(run())

    def test_locksAreIndependentPerName(self):
        """
        Two names lock independently.
        """

        async def run():
            locks = self.locks()
            a = await locks.tryAcquire("a")
            b = await locks.tryAcquire("b")
            self.assertIsNotNone(a)
            self.assertIsNotNone(b)
            self.assertIsNone(await locks.tryAcquire("a"))

        return ensureDeferred(run())


class RedisRestartTests(_RedisCase):
    """
    Locks and the lease keep working when Redis restarts empty (its Lua
    scripts are gone too and must be loaded again).
    """

    def test_locksAfterRestart(self):
        """
        After a restart, a lock object made before it acquires, extends and
        releases again, through a L{RedisClient} connection as the store
        uses; fencing numbers start again from the new server's count
        (which is why the storage's conditional writes, not the fence, stop
        late writers).
        """
        from zotwist.coordination.client import RedisClient

        async def run():
            client = RedisClient(self.endpoint.url, self.runner, self.prefix)
            self.addCleanup(client.close)
            locks = FencedLocks(client.redis, self.runner, client.key, reactor, ttl=10)
            held = await locks.acquire("repo")
            self.assertTrue(await held.release())
            self.endpoint.restart()
            held = await locks.acquire("repo")
            self.assertEqual(held.fence, 1)
            self.assertTrue(await held.extend(20))
            self.assertTrue(await held.release())
            self.assertIsNotNone(await locks.tryAcquire("repo"))

        return ensureDeferred(run())


class LeaderLeaseTests(_RedisCase):
    """
    L{LeaderLease}: one leader at a time, takeover after the leader dies.
    """

    def lease(self, ttl: float = 0.6) -> LeaderLease:
        lease = LeaderLease(self.connect(), self.runner, self.key("leader"), reactor, ttl=ttl)
        events = []
        lease.onGain.append(lambda: events.append("gain"))
        lease.onLoss.append(lambda: events.append("loss"))
        lease.events = events
        return lease

    def start(self, lease: LeaderLease) -> None:
        lease.startService()
        self.addCleanup(lambda: lease.stopService() if lease.running else None)

    def test_oneLeaderThenTakeover(self):
        """
        Of three instances exactly one leads; when it stops renewing (dies
        without resigning), another takes over after the TTL, and the dead
        one's id is no longer in Redis.
        """

        async def run():
            leases = [self.lease() for _ in range(3)]
            for lease in leases:
                self.start(lease)
            await waitUntil(lambda: any(x.isLeader() for x in leases), 30, "nobody leads")
            # Let several renewal rounds pass: still exactly one.
            for _ in range(3):
                await deferLater(reactor, 0.2, lambda: None)
                self.assertEqual(sum(x.isLeader() for x in leases), 1)
            leader = next(x for x in leases if x.isLeader())
            self.assertEqual(self.conn.get(self.key("leader")).decode(), leader.instanceID)
            # Death: the renewal loop stops, nothing is resigned.
            leader._loop.stop()
            others = [x for x in leases if x is not leader]
            await waitUntil(lambda: any(x.isLeader() for x in others), 30, "no takeover")
            successor = next(x for x in others if x.isLeader())
            self.assertEqual(self.conn.get(self.key("leader")).decode(), successor.instanceID)
            self.assertEqual(successor.events, ["gain"])
            # By its own clock, the dead leader knows it is no longer leader.
            await waitUntil(lambda: not leader.isLeader(), 30, "old leader still leads")
            self.assertEqual(leader.events, ["gain", "loss"])
            self.assertEqual(sum(x.isLeader() for x in others), 1)

        return ensureDeferred(run())

    def test_deposedLeaderNoticesLoss(self):
        """
        When the lease key names someone else (another instance took it
        after an expiry), the former leader's next renewal reports loss.
        """

        async def run():
            lease = self.lease()
            self.start(lease)
            await waitUntil(lease.isLeader, 30, "never led")
            self.conn.set(self.key("leader"), "someone-else", px=60000)
            await waitUntil(lambda: not lease.isLeader(), 30, "never noticed")
            self.assertEqual(lease.events, ["gain", "loss"])
            self.assertEqual(self.conn.get(self.key("leader")), b"someone-else")

        return ensureDeferred(run())

    def test_stopResigns(self):
        """
        Stopping the leader deletes its lease at once, so a successor does
        not wait for the TTL, and reports loss.
        """

        async def run():
            lease = self.lease(ttl=60)
            self.start(lease)
            await waitUntil(lease.isLeader, 30, "never led")
            await lease.stopService()
            self.assertFalse(self.conn.exists(self.key("leader")))
            self.assertEqual(lease.events, ["gain", "loss"])
            follower = self.lease(ttl=60)
            self.start(follower)
            await waitUntil(follower.isLeader, 30, "follower never led")

        return ensureDeferred(run())

    def test_leaderOnlyRunsChildWhileLeading(self):
        """
        L{LeaderOnly} starts its child when the lease is gained and stops it
        when the lease is lost.
        """
        from twisted.application.service import Service

        async def run():
            lease = self.lease()
            child = Service()
            gated = LeaderOnly(lease, child)
            gated.startService()
            self.start(lease)
            await waitUntil(lambda: child.running, 30, "child never started")
            self.conn.set(self.key("leader"), "someone-else", px=60000)
            await waitUntil(lambda: not child.running, 30, "child never stopped")
            await gated.stopService()
            self.assertFalse(child.running)

        return ensureDeferred(run())
