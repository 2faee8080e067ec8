"""
Tests for L{zotwist.storage.retention}: which tags a repository's retention
policy keeps (zot's rules), what a sweep removes under C{deleteUntagged} and
C{deleteReferrers}, dry runs; and the whole thing through the HTTP API with
push and pull times injected through the store's clock.
"""

import io
import json
import os
import time
from contextlib import redirect_stderr, redirect_stdout

from twisted.internet.defer import ensureDeferred
from twisted.internet.testing import EventLoggingObserver
from twisted.logger import formatEvent, globalLogPublisher
from twisted.trial.unittest import SynchronousTestCase, TestCase

from tests import apihelpers as api
from tests.procsupport import freePort
from tests.support import startRegistry
from tests.test_local import StoreCase
from zotwist import cli, oci
from zotwist.config import parseConfig
from zotwist.storage.gc import GarbageCollector, collectRepositoryBlocking
from zotwist.storage.local import LocalStore
from zotwist.storage.retention import (
    REFERRERS_ALL,
    REFERRERS_KEEP,
    decideTags,
    policyFor,
    rulesFor,
)
from zotwist.threads import InlineRunner

HOUR = 3600.0
NOW = 1_000_000.0


def retention(policies, dryRun=False, **extra):
    """
    C{storage.retention} parsed from its JSON form, as the config loader
    does.
    """
    document = {
        "storage": {
            "rootDirectory": "/srv/zot",
            "retention": {"dryRun": dryRun, "policies": policies, **extra},
        },
    }
    return parseConfig(document).storage.retention


class DecideTests(SynchronousTestCase):
    """
    L{decideTags} on tags with given push and pull times.
    """

    times = {
        # tag: (pushed, pulled)
        "v1": (NOW - 10 * HOUR, NOW - 1 * HOUR),
        "v2": (NOW - 5 * HOUR, None),
        "v3": (NOW - 1 * HOUR, None),
        "dev-a": (NOW - 30 * HOUR, NOW - 20 * HOUR),
        "dev-b": (NOW - 2 * HOUR, None),
        "old": (None, None),
    }

    def decide(self, keepTags, times=None):
        config = retention([{"repositories": ["**"], "keepTags": keepTags}])
        index, policy = policyFor(config, "team/app")
        times = self.times if times is None else times
        return decideTags(policy, index, list(times), times, NOW)

    def keepsOf(self, keepTags):
        decision = self.decide(keepTags)
        return sorted(decision.keep), sorted(decision.delete)

    def test_noPolicyKeepsEverything(self):
        """
        A repository no policy matches keeps every tag; so does a matching
        policy without C{keepTags}.
        """
        config = retention([{"repositories": ["other/**"], "keepTags": [
            {"mostRecentlyPushedCount": 1}]}])
        index, policy = policyFor(config, "team/app")
        self.assertEqual((index, policy), (None, None))
        decision = decideTags(policy, index, list(self.times), self.times, NOW)
        self.assertEqual(decision.delete, {})
        self.assertEqual(sorted(decision.keep), sorted(self.times))
        config = retention([{"repositories": ["**"]}])
        index, policy = policyFor(config, "team/app")
        self.assertEqual(decideTags(policy, index, list(self.times), self.times, NOW).delete, {})

    def test_firstMatchingPolicyWins(self):
        """
        Policies are tried in order and the first whose globs match
        applies; C{*} does not cross C{/}, C{**} does.
        """
        config = retention([
            {"repositories": ["team/*"], "keepTags": [{"patterns": ["^v"]}]},
            {"repositories": ["**"], "keepTags": [{"patterns": [".*"]}]},
        ])
        self.assertEqual(policyFor(config, "team/app")[0], 0)
        self.assertEqual(policyFor(config, "team/app/sub")[0], 1)
        self.assertEqual(policyFor(retention([{"repositories": ["team/*"]}]), "x"), (None, None))

    def test_patterns(self):
        """
        An entry with only C{patterns} keeps the tags any pattern matches
        (searched, not anchored); tags no entry matches go.
        """
        kept, gone = self.keepsOf([{"patterns": ["^v", "old"]}])
        self.assertEqual(kept, ["old", "v1", "v2", "v3"])
        self.assertEqual(gone, ["dev-a", "dev-b"])
        decision = self.decide([{"patterns": ["^v", "old"]}])
        self.assertEqual(decision.delete["dev-a"], "matches no keepTags patterns")

    def test_noPatternsMatchEverything(self):
        """
        An entry without C{patterns} applies to every tag.
        """
        kept, gone = self.keepsOf([{"mostRecentlyPushedCount": 2}])
        self.assertEqual(kept, ["dev-b", "v3"])
        self.assertEqual(gone, ["dev-a", "old", "v1", "v2"])

    def test_badPatternKeepsEverything(self):
        """
        A pattern Python cannot compile removes nothing.
        """
        kept, gone = self.keepsOf([{"patterns": ["(?P<x"]}])
        self.assertEqual(gone, [])
        self.assertEqual(kept, sorted(self.times))

    def test_mostRecentlyPushedCount(self):
        """
        C{mostRecentlyPushedCount} keeps the N most recently pushed of the
        tags its entry matched.
        """
        kept, gone = self.keepsOf([{"patterns": ["^v"], "mostRecentlyPushedCount": 2}])
        self.assertEqual(kept, ["v2", "v3"])
        self.assertEqual(gone, ["dev-a", "dev-b", "old", "v1"])
        decision = self.decide([{"patterns": ["^v"], "mostRecentlyPushedCount": 2}])
        self.assertEqual(decision.keep["v3"], "keepTags[0]: among the 2 most recently pushed")
        self.assertEqual(decision.delete["v1"], "keepTags[0]: meets none of its rules")

    def test_mostRecentlyPulledCount(self):
        """
        C{mostRecentlyPulledCount} takes the most recently pulled first; as
        in zot, never-pulled tags count as the oldest and still fill the
        count (the most recently pushed of them first).
        """
        kept, _ = self.keepsOf([{"mostRecentlyPulledCount": 2}])
        self.assertEqual(kept, ["dev-a", "v1"])
        kept, _ = self.keepsOf([{"mostRecentlyPulledCount": 3}])
        self.assertEqual(kept, ["dev-a", "v1", "v3"])

    def test_within(self):
        """
        C{pushedWithin} keeps tags pushed recently enough; C{pulledWithin}
        those pulled, or pushed, recently enough (zot's rule: a tag just
        pushed is not removed for not having been pulled yet).
        """
        kept, _ = self.keepsOf([{"pushedWithin": "3h"}])
        self.assertEqual(kept, ["dev-b", "v3"])
        kept, _ = self.keepsOf([{"pulledWithin": "2h"}])
        self.assertEqual(kept, ["v1", "v3"])

    def test_rulesOfAnEntryCombine(self):
        """
        Within an entry a tag any rule selects stays (OR).
        """
        kept, gone = self.keepsOf([
            {"patterns": ["^v", "^dev"], "mostRecentlyPushedCount": 1,
             "mostRecentlyPulledCount": 1}
        ])
        self.assertEqual(kept, ["v1", "v3"])
        self.assertEqual(gone, ["dev-a", "dev-b", "old", "v2"])

    def test_firstMatchingEntryDecides(self):
        """
        A tag belongs to the first C{keepTags} entry whose patterns match it
        (zot's grouping): a later, more generous entry does not rescue it.
        """
        decision = self.decide([
            {"patterns": ["^dev"], "mostRecentlyPushedCount": 1},
            {"patterns": [".*"]},
        ])
        self.assertEqual(sorted(decision.keep), ["dev-b", "old", "v1", "v2", "v3"])
        self.assertEqual(list(decision.delete), ["dev-a"])
        self.assertEqual(decision.keep["v2"], "keepTags[1]: patterns match")

    def test_delayDefaultsToGCDelay(self):
        """
        C{retention.delay}, when not given, is the store's C{gcDelay}; the
        rules of a repository follow its policy's flags, and a repository
        no policy matches keeps the collector's defaults.
        """
        config = retention([{"repositories": ["team/**"], "deleteReferrers": True,
                             "deleteUntagged": False}])
        self.assertIsNone(config.delay)
        rules = rulesFor(config, "team/app", NOW, 2 * HOUR)
        self.assertEqual(rules.cutoff, NOW - 2 * HOUR)
        self.assertEqual((rules.deleteUntagged, rules.referrers), (False, REFERRERS_ALL))
        other = rulesFor(config, "other", NOW, 2 * HOUR)
        self.assertTrue(other.deleteUntagged)
        self.assertEqual(other.referrers, "untagged")
        config = retention([{"repositories": ["**"]}], delay="5h")
        rules = rulesFor(config, "x", NOW, 2 * HOUR)
        self.assertEqual(rules.cutoff, NOW - 5 * HOUR)
        self.assertEqual(rules.referrers, REFERRERS_KEEP)


def age(path: str, seconds: float) -> None:
    """
    Make C{path} look last modified C{seconds} ago.
    """
    then = time.time() - seconds
    os.utime(path, (then, then))


class SweepTests(StoreCase):
    """
    A sweep (L{collectRepositoryBlocking}) under a repository's retention
    rules, on a real store.
    """

    repo = "team/app"

    def manifestPath(self, digest: str, repo: str | None = None) -> str:
        algorithm, encoded = oci.parseDigest(digest)
        return os.path.join(self.root, *(repo or self.repo).split("/"), "blobs",
                            algorithm, encoded)

    def indexEntries(self, repo: str | None = None) -> list:
        path = os.path.join(self.root, *(repo or self.repo).split("/"), "index.json")
        with open(path) as f:
            return json.load(f)["manifests"]

    def sweep(self, policies, repo=None, dryRun=False, times=None, **extra):
        now = time.time()
        rules = rulesFor(retention(policies, dryRun=dryRun, **extra), repo or self.repo,
                         now, HOUR, times)
        return collectRepositoryBlocking(
            os.path.join(self.root, *(repo or self.repo).split("/")), now - HOUR, rules=rules
        )

    def pushReferrer(self, subjectDigest: str, seed: bytes) -> str:
        subject = {"mediaType": oci.OCI_MANIFEST, "digest": subjectDigest, "size": 10}
        _, digest = self.pushImage(self.repo, None, layers=(seed,), config=b"{r" + seed + b"}",
                                   subject=subject)
        return digest

    def test_tagRemovalDropsItsManifest(self):
        """
        A tag retention removes takes its manifest out of C{index.json} when
        no other tag names it (so its blobs are garbage once old), and only
        the tag when another tag still names the manifest.
        """
        _, shared = self.pushImage(self.repo, "keep", layers=(b"s",), config=b"{s}",
                                   tags=["drop-1"])
        _, alone = self.pushImage(self.repo, "drop-2", layers=(b"a",), config=b"{a}")
        result = self.sweep([{"repositories": ["**"], "keepTags": [{"patterns": ["^keep$"]}]}])
        self.assertEqual(sorted(result.tags), ["drop-1", "drop-2"])
        entries = self.indexEntries()
        self.assertEqual([(e["digest"], e["annotations"][oci.REF_NAME]) for e in entries],
                         [(shared, "keep")])
        # Young blobs stay this round; aged, the dropped image's go.
        self.assertTrue(os.path.exists(self.manifestPath(alone)))
        for dirpath, _, files in os.walk(os.path.join(self.root, "team")):
            for name in files:
                age(os.path.join(dirpath, name), 2 * HOUR)
        result = self.sweep([{"repositories": ["**"], "keepTags": [{"patterns": ["^keep$"]}]}])
        self.assertIn(alone, result.blobs)
        self.assertIn(oci.digestOf(b"a"), result.blobs)
        self.assertTrue(os.path.exists(self.manifestPath(shared)))

    def test_deleteUntagged(self):
        """
        An old untagged manifest goes under C{deleteUntagged} (the default)
        and stays with C{deleteUntagged: false}; a young one stays either way.
        """
        _, old = self.pushImage(self.repo, None, layers=(b"o",), config=b"{o}")
        age(self.manifestPath(old), 2 * HOUR)
        _, young = self.pushImage(self.repo, None, layers=(b"y",), config=b"{y}")
        result = self.sweep([{"repositories": ["**"], "deleteUntagged": False}])
        self.assertEqual(result.manifests, [])
        self.assertEqual({e["digest"] for e in self.indexEntries()}, {old, young})
        result = self.sweep([{"repositories": ["**"]}])
        self.assertEqual(result.manifests, [old])
        self.assertEqual(result.events, [("manifest", old, "untagged")])
        self.assertEqual({e["digest"] for e in self.indexEntries()}, {young})

    def test_retentionDelay(self):
        """
        C{retention.delay} decides when untagged manifests go, not
        C{gcDelay}.
        """
        _, digest = self.pushImage(self.repo, None, layers=(b"d",), config=b"{d}")
        age(self.manifestPath(digest), 2 * HOUR)
        result = self.sweep([{"repositories": ["**"]}], delay="3h")
        self.assertEqual(result.manifests, [])
        result = self.sweep([{"repositories": ["**"]}], delay="90m")
        self.assertEqual(result.manifests, [digest])

    def test_deleteReferrers(self):
        """
        A referrer whose subject is gone stays unless its policy says
        C{deleteReferrers} (zot's default is to keep it); with it, even a
        tagged one goes, and a referrer of a live subject always stays.
        """
        _, subject = self.pushImage(self.repo, "app", layers=(b"app",), config=b"{app}")
        live = self.pushReferrer(subject, b"sig")
        orphan = self.pushReferrer(oci.digestOf(b"gone"), b"sbom")
        tagged = self.pushReferrer(oci.digestOf(b"gone too"), b"att")
        self.result(self.store.putManifest(
            self.repo, open(self.manifestPath(tagged), "rb").read(), oci.OCI_MANIFEST,
            "att-tag", [],
        ))
        for digest in (live, orphan, tagged):
            age(self.manifestPath(digest), 2 * HOUR)
        result = self.sweep([{"repositories": ["**"]}])
        self.assertEqual(result.manifests, [])
        result = self.sweep([{"repositories": ["**"], "deleteReferrers": True}])
        self.assertEqual(result.manifests, sorted([orphan, tagged]))
        self.assertEqual({e["digest"] for e in self.indexEntries()}, {subject, live})

    def test_dryRunChangesNothing(self):
        """
        A dry run reports the tags and manifests that would go and leaves
        C{index.json} and every blob as they were.
        """
        self.pushImage(self.repo, "v1", layers=(b"1",), config=b"{1}")
        _, untagged = self.pushImage(self.repo, None, layers=(b"u",), config=b"{u}")
        for dirpath, _, files in os.walk(os.path.join(self.root, "team")):
            for name in files:
                age(os.path.join(dirpath, name), 2 * HOUR)
        with open(os.path.join(self.root, "team", "app", "index.json"), "rb") as f:
            before = f.read()
        result = self.sweep([{"repositories": ["**"], "keepTags": [{"patterns": ["^x"]}]}],
                            dryRun=True)
        self.assertTrue(result.dryRun)
        self.assertEqual(sorted(result.events), sorted([
            ("tag", "v1", "matches no keepTags patterns"),
            ("manifest", untagged, "untagged"),
        ]))
        self.assertEqual((result.tags, result.manifests, result.blobs), ([], [], []))
        with open(os.path.join(self.root, "team", "app", "index.json"), "rb") as f:
            self.assertEqual(f.read(), before)


class CollectorTests(StoreCase):
    """
    L{GarbageCollector} with C{storage.retention}: times from the store's
    journal, one log line per tag.
    """

    def test_sweepUsesRecordedTimesAndLogs(self):
        """
        The collector decides with the push times the store recorded and
        logs one line per tag it removes, naming the policy and the reason.
        """
        now = time.time()
        for number, tag in enumerate(["v1", "v2", "v3"]):
            self.store.tagTimes._clock = lambda: now - (10 - number) * HOUR
            self.pushImage("team/app", tag, layers=(tag.encode(),), config=tag.encode())
        config = retention([{"repositories": ["team/**"], "keepTags": [
            {"mostRecentlyPushedCount": 1}]}])
        collector = GarbageCollector(self.store, InlineRunner(), HOUR, clock=lambda: now,
                                     retention=config)
        observer = EventLoggingObserver.createWithCleanup(self, globalLogPublisher)
        result = self.successResultOf(ensureDeferred(collector.collectAll()))
        self.assertEqual(sorted(result.tags), ["v1", "v2"])
        self.assertEqual(self.result(self.store.listTags("team/app")), ["v3"])
        lines = [formatEvent(e) for e in observer if "retention" in formatEvent(e)]
        self.assertEqual(lines, [
            "retention: removed tag team/app:v1 (policy 0: keepTags[0]: meets none of its"
            " rules)",
            "retention: removed tag team/app:v2 (policy 0: keepTags[0]: meets none of its"
            " rules)",
        ])

    def test_unrecordedPushUsesManifestTime(self):
        """
        A tag whose push was never recorded counts as pushed when its
        manifest file was written.
        """
        now = time.time()
        self.store.tagTimes._clock = lambda: now - 5 * HOUR
        self.pushImage("team/app", "recorded", layers=(b"r",), config=b"{r}")
        _, digest = self.pushImage("team/app", "legacy", layers=(b"l",), config=b"{l}")
        self.store.tagTimes._times["team/app"]["legacy"][0] = None
        os.utime(self.store._blobPath("team/app", digest), (now - HOUR,) * 2)
        config = retention([{"repositories": ["**"], "keepTags": [
            {"mostRecentlyPushedCount": 1}]}])
        collector = GarbageCollector(self.store, InlineRunner(), HOUR, clock=lambda: now,
                                     retention=config)
        self.successResultOf(ensureDeferred(collector.collectAll()))
        self.assertEqual(self.result(self.store.listTags("team/app")), ["legacy"])


class RetentionAPITests(TestCase):
    """
    Retention end to end: images pushed and pulled through the HTTP API at
    injected times, one sweep, and the exact survivors.
    """

    POLICIES = [
        {
            "repositories": ["team/**"],
            "keepTags": [
                {"patterns": ["^v"], "mostRecentlyPushedCount": 2, "mostRecentlyPulledCount": 1},
                {"patterns": ["^stable$"]},
            ],
        },
        {"repositories": ["keep/**"], "deleteReferrers": False},
        {"repositories": ["drop/**"], "deleteReferrers": True},
    ]

    async def start(self, dryRun=False):
        reg = await startRegistry(self, {"storage": {
            "gc": True, "gcDelay": "1h", "gcInterval": "24h",
            "retention": {"dryRun": dryRun, "delay": "1h", "policies": self.POLICIES},
        }})
        store = reg.service.getServiceNamed("store").store
        collector = reg.service.getServiceNamed("gc").collector
        return reg, store, collector

    async def pushAt(self, reg, store, when, repo, tag, seed):
        store.tagTimes._clock = lambda: when
        return await api.pushImage(reg, repo, tag, seed)

    async def pullAt(self, reg, store, when, repo, tag):
        store.tagTimes._clock = lambda: when
        code = await api.status(reg, "GET", f"{reg.url}/v2/{repo}/manifests/{tag}",
                                headers={"Accept": [api.OCI_MANIFEST]})
        self.assertEqual(code, 200)

    async def populate(self, reg, store):
        now = time.time()
        images = {}
        for tag, hoursAgo in [("v1", 5), ("v2", 4), ("v3", 3), ("v4", 2), ("stable", 10),
                              ("dev", 1)]:
            images[tag] = await self.pushAt(reg, store, now - hoursAgo * HOUR, "team/app",
                                            tag, f"team-{tag}")
        await self.pushAt(reg, store, now - 50 * HOUR, "other/app", "ancient", "other")
        await self.pullAt(reg, store, now - HOUR, "team/app", "v1")
        return now, images

    async def test_survivors(self):
        """
        With C{keepTags} of C{^v} (2 most recently pushed, 1 most recently
        pulled) and C{^stable$}: v3 and v4 (pushed last), v1 (pulled) and
        stable stay; v2 and dev go, their manifests unreachable by digest
        too; a repository no policy matches keeps its old tag.
        """
        reg, store, collector = await self.start()
        now, images = await self.populate(reg, store)
        collector.clock = lambda: now
        observer = EventLoggingObserver.createWithCleanup(self, globalLogPublisher)
        result = await collector.collectAll()
        self.assertEqual(sorted(result.tags), ["dev", "v2"])
        self.assertEqual(await api.tagsOf(reg, "team/app"), ["stable", "v1", "v3", "v4"])
        self.assertEqual(await api.tagsOf(reg, "other/app"), ["ancient"])
        for tag in ("v2", "dev"):
            code = await api.status(
                reg, "GET", f"{reg.url}/v2/team/app/manifests/{images[tag].digest}")
            self.assertEqual(code, 404)
        lines = sorted(formatEvent(e) for e in observer if "retention" in formatEvent(e))
        self.assertEqual(lines, [
            "retention: removed tag team/app:dev (policy 0: matches no keepTags patterns)",
            "retention: removed tag team/app:v2 (policy 0: keepTags[0]: meets none of its"
            " rules)",
        ])

    async def test_dryRun(self):
        """
        A dry run deletes nothing and logs, one line per tag, what would go.
        """
        reg, store, collector = await self.start(dryRun=True)
        now, images = await self.populate(reg, store)
        collector.clock = lambda: now
        observer = EventLoggingObserver.createWithCleanup(self, globalLogPublisher)
        result = await collector.collectAll()
        self.assertEqual(result.tags, [])
        self.assertEqual(await api.tagsOf(reg, "team/app"),
                         ["dev", "stable", "v1", "v2", "v3", "v4"])
        lines = sorted(formatEvent(e) for e in observer if "retention" in formatEvent(e))
        self.assertEqual(lines, [
            "retention (dry run): would remove tag team/app:dev (policy 0: matches no keepTags"
            " patterns)",
            "retention (dry run): would remove tag team/app:v2 (policy 0: keepTags[0]: meets"
            " none of its rules)",
        ])

    async def test_untaggedAndReferrers(self):
        """
        Through the API: an untagged manifest older than the retention delay
        goes (C{deleteUntagged} defaults to true); a referrer whose subject
        was deleted goes where the policy says C{deleteReferrers} and stays
        where it does not.
        """
        reg, store, collector = await self.start()
        referrers = {}
        for repo in ("keep/app", "drop/app"):
            subject = await api.pushImage(reg, repo, "app", f"subject-{repo}")
            referrer = await api.pushImage(reg, repo, None, f"sig-{repo}", subject={
                "mediaType": api.OCI_MANIFEST, "digest": subject.digest,
                "size": len(subject.manifest)})
            untagged = await api.pushImage(reg, repo, None, f"untagged-{repo}")
            code = await api.status(reg, "DELETE",
                                    f"{reg.url}/v2/{repo}/manifests/{subject.digest}")
            self.assertEqual(code, 202)
            for digest in (referrer.digest, untagged.digest):
                age(store._blobPath(repo, digest), 2 * HOUR)
            referrers[repo] = (referrer.digest, untagged.digest)
        await collector.collectAll()

        async def code(repo, digest):
            return await api.status(reg, "GET", f"{reg.url}/v2/{repo}/manifests/{digest}")

        keptReferrer, keepUntagged = referrers["keep/app"]
        droppedReferrer, dropUntagged = referrers["drop/app"]
        self.assertEqual(await code("keep/app", keptReferrer), 200)
        self.assertEqual(await code("drop/app", droppedReferrer), 404)
        self.assertEqual(await code("keep/app", keepUntagged), 404)
        self.assertEqual(await code("drop/app", dropUntagged), 404)

    async def test_pullTimeRecordedOffTheDisk(self):
        """
        A pull records its time in memory only (the journal on disk does
        not change until the periodic flush), and the flush writes it.
        """
        reg, store, collector = await self.start()
        await self.pushAt(reg, store, NOW, "team/app", "v1", "pull")
        await store.tagTimes.flush()
        journal = store.tagTimes.journalPath("team/app")
        with open(journal, "rb") as f:
            before = f.read()
        await self.pullAt(reg, store, NOW + 10, "team/app", "v1")
        with open(journal, "rb") as f:
            self.assertEqual(f.read(), before)
        self.assertEqual((await store.tagTimes.times("team/app"))["v1"], (NOW, NOW + 10))
        await store.tagTimes.flush()
        with open(journal, "rb") as f:
            records = [json.loads(line) for line in f.read().splitlines()]
        self.assertIn({"k": "v1", "push": NOW, "pull": NOW + 10}, records)



class PushDuringSweepTests(StoreCase):
    """
    A tag pushed between the moment the collector read the push times and
    the sweep taking the index lock is not judged on stale times.
    """

    repo = "team/app"

    def test_tagMovedOrAddedMeanwhileStays(self):
        """
        A tag now pointing at another manifest than when the times were
        read, or not there then, stays this round; the others are decided.
        """
        _, first = self.pushImage(self.repo, "moved", layers=(b"1",), config=b"{1}")
        self.pushImage(self.repo, "old", layers=(b"2",), config=b"{2}")
        seen = {"moved": first, "old": self.result(self.store.statManifest(self.repo, "old"))[2]}
        # Pushed "meanwhile": a new manifest for "moved", and a new tag.
        self.pushImage(self.repo, "moved", layers=(b"3",), config=b"{3}")
        self.pushImage(self.repo, "new", layers=(b"4",), config=b"{4}")
        now = time.time()
        config = retention([{"repositories": ["**"], "keepTags": [{"patterns": ["^x"]}]}])
        rules = rulesFor(config, self.repo, now, HOUR, times={}, seen=seen)
        result = collectRepositoryBlocking(os.path.join(self.root, "team", "app"),
                                           now - HOUR, rules=rules)
        self.assertEqual(result.tags, ["old"])
        self.assertEqual(self.result(self.store.listTags(self.repo)), ["moved", "new"])


class OfflineCommandTests(StoreCase):
    """
    C{zot gc CONFIG} and C{zot scrub CONFIG} against a stopped registry
    apply retention and cover every C{storage.subPaths} root.
    """

    def setUp(self):
        super().setUp()
        self.ciRoot = os.path.join(self.parent, "ci-root")
        self.config = os.path.join(self.parent, "config.json")
        with open(self.config, "w") as f:
            json.dump({
                "storage": {
                    "rootDirectory": self.root, "gcDelay": "1h",
                    "retention": {"policies": [{"repositories": ["team/**"], "keepTags": [
                        {"mostRecentlyPushedCount": 1}]}]},
                    "subPaths": {"/ci": {"rootDirectory": self.ciRoot, "gc": True,
                                         "gcDelay": "2h"}},
                },
                "http": {"address": "127.0.0.1", "port": str(freePort())},
            }, f)

    def zot(self, *argv: str):
        out, err = io.StringIO(), io.StringIO()
        with redirect_stdout(out), redirect_stderr(err):
            code = cli.main(list(argv))
        return code, out.getvalue(), err.getvalue()

    def test_gcAppliesRetentionToEveryRoot(self):
        """
        The offline collection decides with the push times of the journal,
        prints one line per tag removed, and collects the sub-path's root
        with its own C{gcDelay}.
        """
        now = time.time()
        for number, tag in enumerate(["v1", "v2"]):
            self.store.tagTimes._clock = lambda: now - (5 - number) * HOUR
            self.pushImage("team/app", tag, layers=(tag.encode(),), config=tag.encode())
        self.result(self.store.tagTimes.flush())
        ci = LocalStore(self.ciRoot, InlineRunner())
        self.result(ci.startService())
        stray = self.pushBlob("ci/app", b"stray", store=ci)
        algorithm, encoded = oci.parseDigest(stray)
        strayPath = os.path.join(self.ciRoot, "ci", "app", "blobs", algorithm, encoded)
        age(strayPath, 1.5 * HOUR)
        code, out, err = self.zot("gc", self.config)
        self.assertEqual((code, err), (0, ""))
        self.assertEqual(out.splitlines(), [
            "retention: removed tag team/app:v1 (policy 0: keepTags[0]: meets none of its"
            " rules)",
            f"{self.root}: removed 1 tags, 0 manifests, 0 blobs (0 bytes), 0 stale uploads",
            f"{self.ciRoot}: removed 0 manifests, 0 blobs (0 bytes), 0 stale uploads",
        ])
        self.assertEqual(self.result(self.makeStore().listTags("team/app")), ["v2"])
        age(strayPath, 2.5 * HOUR)
        code, out, _ = self.zot("gc", self.config)
        self.assertIn(f"{self.ciRoot}: removed 0 manifests, 1 blobs (5 bytes)", out)
        self.assertEqual(self.zot("scrub", self.config),
                         (0, f"{self.root}: ok\n{self.ciRoot}: ok\n", ""))


class ReloadTests(TestCase):
    """
    C{SIGHUP} changes C{storage.retention} and C{storage.gcTimeWindow} live.
    """

    async def test_reloadRetentionAndWindow(self):
        """
        A reload hands the new retention to the running collector and the
        new window to its service; C{gcDelay} still needs a restart.
        """
        reg = await startRegistry(self, {"storage": {"gc": True, "gcInterval": "24h"}})
        gc = reg.service.getServiceNamed("gc")
        self.assertIsNone(gc.collector.retention)
        with open(reg.configPath) as f:
            document = json.load(f)
        document["storage"].update({
            "gcDelay": "2h", "gcTimeWindow": "01:00-02:00",
            "retention": {"dryRun": True, "policies": [{"repositories": ["**"]}]},
        })
        with open(reg.configPath, "w") as f:
            json.dump(document, f)
        result = reg.service.getServiceNamed("reload").settings.reloadFile()
        self.assertEqual(sorted(result.applied), ["storage.gcTimeWindow", "storage.retention"])
        self.assertEqual(result.kept, ("storage.gcDelay",))
        self.assertTrue(gc.collector.retention.dryRun)
        self.assertEqual(gc.window, (60, 120))
        self.assertEqual(gc.collector.delay, HOUR)
