"""
Tests for retention (C{storage.retention}) on the S3 store: push and pull
times in Redis (L{zotwist.storage.s3.tagtimes}) and their use by the
leader's collector (L{zotwist.storage.s3.gc}), against the real Ceph RADOS
Gateway and C{redis-server} of L{tests.clustersupport}; plus the pure
parts and the wiring.

Times are injected (the stores' C{tagTimes.clock}, the collector's
C{clock}); nothing sleeps to make something old.
"""

import copy
import os
import time

from twisted.internet import reactor
from twisted.internet.defer import ensureDeferred
from twisted.internet.testing import EventLoggingObserver, MemoryReactorClock
from twisted.logger import formatEvent, globalLogPublisher
from twisted.trial.unittest import SynchronousTestCase

from tests.procsupport import waitUntil
from tests.test_config import S3_STORAGE
from tests.test_retention import retention
from tests.test_s3_store import S3Case
from zotwist.config import parseConfig
from zotwist.coordination.lease import LeaderOnly
from zotwist.errors import RegistryError
from zotwist.storage.s3.gc import S3GarbageCollector
from zotwist.storage.s3.tagtimes import S3TagTimes, parseTimes, timeFields
from zotwist.tap import makeServiceFromConfig

HOUR = 3600.0
NOW = 1_700_000_000.25


def later(seconds: float):
    """
    A clock C{seconds} ahead of the real one.
    """
    return lambda: time.time() + seconds


class TimeFieldsTests(SynchronousTestCase):
    """
    L{timeFields} and L{parseTimes}: the fields of C{tagtimes:<repo>}.
    """

    def test_roundTrip(self):
        """
        Push and pull times of tags and digests come back exactly (a
        digest's C{:} is no problem); a missing time writes no field.
        """
        times = {
            "v1": (NOW, NOW + 0.5),
            "sha256:" + "a" * 64: (NOW - 1, None),
            "v2": (None, NOW + 3),
        }
        fields = timeFields(times)
        self.assertEqual(sorted(fields), sorted([
            "push:v1", "pull:v1", "push:sha256:" + "a" * 64, "pull:v2",
        ]))
        stored = {k.encode(): v.encode() for k, v in fields.items()}
        self.assertEqual(parseTimes(stored), times)

    def test_unreadableFieldsSkipped(self):
        """
        Foreign fields and values that are not numbers are ignored.
        """
        stored = {b"push:v1": b"12.5", b"pull:v1": b"soon", b"other": b"3", b"push:v2": b"x"}
        self.assertEqual(parseTimes(stored), {"v1": (12.5, None)})


class S3TagTimesTests(S3Case):
    """
    L{S3TagTimes} on the real Redis.
    """

    def tagTimes(self, clock=time.time, interval=3600.0) -> S3TagTimes:
        from zotwist.coordination.client import RedisClient

        redis = RedisClient(self.redisEndpoint.url, self.runner, self.prefix)
        self.addCleanup(redis.close)
        times = S3TagTimes(redis, reactor, clock=clock, interval=interval)
        self.addCleanup(lambda: ensureDeferred(times.stop()))
        return times

    def stored(self, repo: str) -> dict:
        return parseTimes(self.redis.hgetall(self.key("tagtimes", repo)))

    def test_pushWrittenPullNoted(self):
        """
        A push is in Redis when C{pushed} returns; a pull is only noted (no
        Redis call) until the flush, and the instance's own reads include
        it meanwhile.
        """

        async def run():
            times = self.tagTimes(clock=lambda: NOW)
            await times.pushed("team/app", ["v1", "sha256:" + "b" * 64])
            self.assertEqual(self.stored("team/app"), {
                "v1": (NOW, None), "sha256:" + "b" * 64: (NOW, None),
            })
            self.assertIsNone(times.pulled("team/app", ["v1"], when=NOW + 5))
            self.assertEqual(self.stored("team/app")["v1"], (NOW, None))
            self.assertEqual((await times.times("team/app"))["v1"], (NOW, NOW + 5))
            self.assertEqual(await times.flush(), 1)
            self.assertEqual(self.stored("team/app")["v1"], (NOW, NOW + 5))

        return ensureDeferred(run())

    def test_laterTimeWins(self):
        """
        Instances flushing out of order never move a time back: the larger
        of the stored and the written time stays, per field.
        """

        async def run():
            a = self.tagTimes()
            b = self.tagTimes()
            await a.pushed("r", ["v1"], when=NOW)
            await b.pushed("r", ["v1"], when=NOW - 10)
            a.pulled("r", ["v1"], when=NOW + 20)
            b.pulled("r", ["v1"], when=NOW + 10)
            await a.flush()
            await b.flush()
            self.assertEqual(self.stored("r"), {"v1": (NOW, NOW + 20)})

        return ensureDeferred(run())

    def test_pullsCoalescedOnATimer(self):
        """
        Pulls noted within an interval go to Redis in one timed write, with
        no explicit flush; a stop writes what is left.
        """

        async def run():
            times = self.tagTimes(interval=0.05)
            for i in range(3):
                times.pulled("r", [f"t{i}"], when=NOW + i)
            await waitUntil(lambda: len(self.stored("r")) == 3, 30, "pulls not written")
            self.assertEqual(self.stored("r")["t2"], (None, NOW + 2))
            times.pulled("r", ["t9"], when=NOW + 9)
            await times.stop()
            self.assertEqual(self.stored("r")["t9"], (None, NOW + 9))

        return ensureDeferred(run())

    def test_forgetOnlyUnchanged(self):
        """
        C{forget} drops the fields that still hold the times read, and
        leaves one written since.
        """

        async def run():
            times = self.tagTimes()
            await times.pushed("r", ["gone", "moved"], when=NOW)
            read = await times.times("r")
            await times.pushed("r", ["moved"], when=NOW + 1)
            self.assertEqual(await times.forget("r", read), 1)
            self.assertEqual(self.stored("r"), {"moved": (NOW + 1, None)})

        return ensureDeferred(run())


class S3RetentionTests(S3Case):
    """
    The leader's collector applies C{storage.retention} to an S3 store.
    """

    repo = "team/app"

    async def pushAt(self, store, when: float, tag: str | None, seed: str, repo=None):
        store.tagTimes.clock = lambda: when
        try:
            return await self.pushImage(store, repo or self.repo, tag, seed)
        finally:
            store.tagTimes.clock = time.time

    def retentionLines(self, observer) -> list:
        return sorted(formatEvent(e) for e in observer if "retention" in formatEvent(e))

    def test_mostRecentlyPushedCount(self):
        """
        With C{mostRecentlyPushedCount: 1}, the older tags go from the index
        (in S3 and Redis, seen by another instance) with their manifests,
        one log line each; their blobs go once older than C{gcDelay}, the
        kept image's stay, and the removed tags' recorded times are dropped
        then.  A repository no policy matches keeps its tags.
        """

        async def run():
            store = await self.instance()
            now = time.time()
            images = {}
            for hours, tag in [(10, "v1"), (5, "v2"), (1, "v3")]:
                images[tag] = await self.pushAt(store, now - hours * HOUR, tag, tag)
            await self.pushAt(store, now - 50 * HOUR, "ancient", "other", repo="other/app")
            # Another instance that has read (and cached) the index before.
            other = await self.instance()
            self.assertEqual(await other.listTags(self.repo), ["v1", "v2", "v3"])
            config = retention([{"repositories": ["team/**"], "keepTags": [
                {"mostRecentlyPushedCount": 1}]}])
            collector = S3GarbageCollector(store, HOUR, clock=lambda: now, retention=config)
            observer = EventLoggingObserver.createWithCleanup(self, globalLogPublisher)
            result = await collector.collectAll()
            self.assertEqual(sorted(result.tags), ["v1", "v2"])
            self.assertEqual(result.blobs, [])
            self.assertEqual(self.retentionLines(observer), [
                "retention: removed tag team/app:v1 (policy 0: keepTags[0]: meets none of"
                " its rules)",
                "retention: removed tag team/app:v2 (policy 0: keepTags[0]: meets none of"
                " its rules)",
            ])
            self.assertEqual(self.s3Tags(self.repo), {"v3": images["v3"][0]})
            self.assertEqual(
                [m["digest"] for m in self.s3Index(self.repo)["manifests"]], [images["v3"][0]]
            )
            self.assertEqual(await other.listTags(self.repo), ["v3"])
            self.assertEqual(await other.listTags("other/app"), ["ancient"])
            for tag in ("v1", "v2"):
                with self.assertRaises(RegistryError) as raised:
                    await other.getManifest(self.repo, images[tag][0])
                self.assertEqual(raised.exception.code, "MANIFEST_UNKNOWN")
                # Young: still there this round.
                self.assertHeld(self.repo, [images[tag][0], *images[tag][2]])
            # Once older than gcDelay, the removed images' blobs go.
            collector.clock = later(2 * HOUR)
            result = await collector.collectAll()
            self.assertEqual(result.tags, [])
            gone = [d for tag in ("v1", "v2") for d in (images[tag][0], *images[tag][2])]
            self.assertEqual(sorted(result.blobs), sorted(gone))
            self.assertGone(self.repo, gone)
            self.assertHeld(self.repo, [images["v3"][0], *images["v3"][2]])
            self.assertEqual(await other.listTags(self.repo), ["v3"])
            stored = parseTimes(self.redis.hgetall(self.key("tagtimes", self.repo)))
            self.assertEqual(sorted(stored), sorted(["v3", images["v3"][0]]))

        return ensureDeferred(run())

    def test_pulledWithinAcrossInstances(self):
        """
        A pull through one instance (its timed write, no flush called) is
        what the leader on another instance decides with: under
        C{pulledWithin: 1h} a tag pushed long ago but pulled recently stays,
        one pushed as long ago and never pulled goes.
        """

        async def run():
            leader = await self.instance()
            puller = await self.instance()
            now = time.time()
            await self.pushAt(leader, now - 10 * HOUR, "pulled", "p")
            unpulled = await self.pushAt(leader, now - 10 * HOUR, "unpulled", "u")
            puller.tagTimes.clock = lambda: now - 0.5 * HOUR
            await puller.getManifest(self.repo, "pulled")
            await waitUntil(
                lambda: self.redis.hexists(self.key("tagtimes", self.repo), "pull:pulled"),
                30, "the pull was not written",
            )
            config = retention([{"repositories": ["**"], "keepTags": [
                {"pulledWithin": "1h"}]}])
            collector = S3GarbageCollector(leader, HOUR, clock=lambda: now, retention=config)
            result = await collector.collectAll()
            self.assertEqual(result.tags, ["unpulled"])
            self.assertEqual(await puller.listTags(self.repo), ["pulled"])
            self.assertEqual(self.s3Tags(self.repo).keys(), {"pulled"})
            self.assertNotIn(unpulled[0], {m["digest"] for m in self.s3Index(self.repo)[
                "manifests"]})

        return ensureDeferred(run())

    def test_dryRunRemovesNothing(self):
        """
        A dry run logs what would go (tags and an old untagged manifest)
        and changes nothing: the same C{index.json} bytes in S3, the same
        tags, every blob kept even once old.
        """

        async def run():
            store = await self.instance()
            now = time.time()
            images = {}
            for hours, tag in [(10, "v1"), (1, "v2")]:
                images[tag] = await self.pushAt(store, now - hours * HOUR, tag, tag)
            untagged = await self.pushImage(store, self.repo, None, "untagged")
            key = self.objectKey(self.repo, "index.json")
            before = self.s3.get_object(Bucket=self.bucket, Key=key)["Body"].read()
            config = retention([{"repositories": ["**"], "keepTags": [
                {"mostRecentlyPushedCount": 1}]}], dryRun=True)
            collector = S3GarbageCollector(store, HOUR, clock=later(2 * HOUR), retention=config)
            observer = EventLoggingObserver.createWithCleanup(self, globalLogPublisher)
            result = await collector.collectAll()
            self.assertEqual((result.tags, result.manifests, result.blobs), ([], [], []))
            self.assertEqual(self.retentionLines(observer), sorted([
                "retention (dry run): would remove tag team/app:v1 (policy 0: keepTags[0]:"
                " meets none of its rules)",
                f"retention (dry run): would remove manifest team/app@{untagged[0]} (policy 0:"
                " untagged)",
            ]))
            after = self.s3.get_object(Bucket=self.bucket, Key=key)["Body"].read()
            self.assertEqual(after, before)
            self.assertEqual(await (await self.instance()).listTags(self.repo), ["v1", "v2"])
            for digest, _, blobs in [*images.values(), untagged]:
                self.assertHeld(self.repo, [digest, *blobs])

        return ensureDeferred(run())

    def test_onlyTheLeaseHolderApplies(self):
        """
        Of two instances on one bucket, the collector of the one without
        the leader lease removes nothing; the lease holder's applies the
        policy.
        """

        async def run():
            a = await self.instance()
            b = await self.instance()
            now = time.time()
            await self.pushAt(a, now - 10 * HOUR, "old", "o")
            await self.pushAt(a, now - HOUR, "new", "n")
            leaseA = a.leaderLease(ttl=5)
            leaseA.startService()
            self.addCleanup(lambda: leaseA.stopService() if leaseA.running else None)
            await waitUntil(leaseA.isLeader, 30, "a never led")
            leaseB = b.leaderLease(ttl=5)
            leaseB.startService()
            self.addCleanup(lambda: leaseB.stopService() if leaseB.running else None)
            config = retention([{"repositories": ["**"], "keepTags": [
                {"mostRecentlyPushedCount": 1}]}])
            follower = S3GarbageCollector(b, HOUR, lease=leaseB, clock=lambda: now,
                                          retention=config)
            result = await follower.collectAll()
            self.assertFalse(leaseB.isLeader())
            self.assertFalse(result.removedAnything())
            self.assertEqual(await b.listTags(self.repo), ["new", "old"])
            self.assertEqual(sorted(self.s3Tags(self.repo)), ["new", "old"])
            leader = S3GarbageCollector(a, HOUR, lease=leaseA, clock=lambda: now,
                                        retention=config)
            result = await leader.collectAll()
            self.assertEqual(result.tags, ["old"])
            self.assertEqual(await b.listTags(self.repo), ["new"])

        return ensureDeferred(run())

    def test_tagMovedSinceTimesWereReadStays(self):
        """
        A tag pushed again (to another manifest) or added after the
        collector read the index and the times stays that round; the
        others are decided.
        """

        async def run():
            store = await self.instance()
            now = time.time()
            await self.pushAt(store, now - 10 * HOUR, "moved", "m1")
            await self.pushAt(store, now - 10 * HOUR, "old", "o")
            config = retention([{"repositories": ["**"], "keepTags": [
                {"patterns": ["^x"]}]}])
            collector = S3GarbageCollector(store, HOUR, clock=lambda: now, retention=config)
            rules = await collector.rulesFor(self.repo, now)
            pusher = await self.instance()
            moved = await self.pushImage(pusher, self.repo, "moved", "m2")
            await self.pushImage(pusher, self.repo, "new", "n")
            async with store.locks.hold(self.repo) as held:
                result = await collector._collectLocked(self.repo, held, now - HOUR, rules)
            self.assertEqual(result.tags, ["old"])
            self.assertEqual(await pusher.listTags(self.repo), ["moved", "new"])
            self.assertEqual(self.s3Tags(self.repo)["moved"], moved[0])

        return ensureDeferred(run())

    def test_missingPushTimeAfterRebuild(self):
        """
        After Redis was emptied and rebuilt from the bucket, a tag has no
        recorded push time: it counts as pushed when its manifest object
        was written (as a tag without a journal record on disk), so it
        outranks a tag recorded since as pushed hours ago.
        """

        async def run():
            store = await self.instance()
            await self.pushImage(store, self.repo, "legacy", "l")
            self.redisEndpoint.flushall()
            rebuilt = await self.instance()
            self.assertEqual(self.redis.hgetall(self.key("tagtimes", self.repo)), {})
            now = time.time()
            await self.pushAt(rebuilt, now - 5 * HOUR, "recorded", "r")
            config = retention([{"repositories": ["**"], "keepTags": [
                {"mostRecentlyPushedCount": 1}]}])
            collector = S3GarbageCollector(rebuilt, HOUR, clock=lambda: now + 60,
                                           retention=config)
            result = await collector.collectAll()
            self.assertEqual(result.tags, ["recorded"])
            self.assertEqual(await rebuilt.listTags(self.repo), ["legacy"])

        return ensureDeferred(run())

    def test_untaggedManifestsFollowTheirPolicy(self):
        """
        C{deleteUntagged: false} keeps an old untagged manifest (the S3
        collector's default would remove it); C{retention.delay}, not
        C{gcDelay}, decides when one goes, in a repository no policy
        matches too; their blobs then go after C{gcDelay}.
        """

        async def run():
            store = await self.instance()
            kept = await self.pushImage(store, "keep/app", None, "k")
            dropped = await self.pushImage(store, "drop/app", None, "d")
            default = await self.pushImage(store, "plain/app", None, "p")
            config = retention([
                {"repositories": ["keep/**"], "deleteUntagged": False},
                {"repositories": ["drop/**"]},
            ], delay="3h")
            collector = S3GarbageCollector(store, HOUR, clock=later(2 * HOUR),
                                           retention=config)
            result = await collector.collectAll()
            self.assertEqual(result.manifests, [])
            collector.clock = later(4 * HOUR)
            result = await collector.collectAll()
            self.assertEqual(sorted(result.manifests), sorted([dropped[0], default[0]]))
            self.assertEqual(
                [m["digest"] for m in self.s3Index("keep/app")["manifests"]], [kept[0]]
            )
            self.assertHeld("keep/app", [kept[0], *kept[2]])
            self.assertGone("drop/app", [dropped[0], *dropped[2]])
            self.assertGone("plain/app", [default[0], *default[2]])

        return ensureDeferred(run())


class WiringTests(SynchronousTestCase):
    """
    The S3 collector gets C{storage.retention}, and a reload changes it.
    """

    def test_retentionGivenAndReloaded(self):
        """
        The collector under L{LeaderOnly} starts with the configured
        retention; a C{SIGHUP} reload hands it the new one.
        """
        storage = dict(S3_STORAGE, rootDirectory=os.path.abspath(self.mktemp()),
                       retention={"policies": [{"repositories": ["**"]}]})
        document = {"storage": storage, "http": {"address": "127.0.0.1", "port": "0"},
                    "log": {"level": "error"}}
        top = makeServiceFromConfig(parseConfig(document), reactor=MemoryReactorClock())
        gated = [s for s in top if isinstance(s, LeaderOnly)]
        self.assertEqual(len(gated), 1)
        collector = gated[0].child.collector
        self.assertIsInstance(collector, S3GarbageCollector)
        self.assertFalse(collector.retention.dryRun)
        settings = top.getServiceNamed("reload").settings
        changed = copy.deepcopy(settings.current.raw)
        changed["storage"]["retention"] = {"dryRun": True, "policies": [
            {"repositories": ["team/**"], "keepTags": [{"mostRecentlyPushedCount": 3}]}]}
        result = settings.reload(parseConfig(changed))
        self.assertEqual(sorted(result.applied),
                         ["storage.retention.dryRun", "storage.retention.policies"])
        self.assertTrue(collector.retention.dryRun)
        self.assertEqual(collector.retention.policies[0].keepTags[0].mostRecentlyPushedCount, 3)
