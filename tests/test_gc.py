"""
Tests for L{zotwist.storage.gc}: what the garbage collector removes and
keeps, on a real L{LocalStore} with an inline runner.  Ages are made by
setting files' mtimes into the past, not by waiting.
"""

import json
import os
import time

from twisted.internet.defer import ensureDeferred
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from tests.test_local import (
    CONFIG_TYPE,
    StoreCase,
    descriptorOf,
    imageManifest,
    indexManifest,
)
from zotwist import oci
from zotwist.storage.gc import (
    GarbageCollectionService,
    GarbageCollector,
    collectRepositoryBlocking,
    inTimeWindow,
    manifestReferences,
    parseTimeWindow,
    removeIfStale,
    secondsUntilWindow,
)
from zotwist.threads import InlineRunner

#: gcDelay of these tests, in seconds.
DELAY = 3600.0
#: An age well past DELAY.
OLD = 2 * DELAY


def age(path: str, seconds: float) -> None:
    """
    Make C{path} look last modified C{seconds} ago.
    """
    then = time.time() - seconds
    os.utime(path, (then, then))


class GCCase(StoreCase):
    """
    A store, and helpers to age its files and collect.
    """

    repo = "team/app"

    def blobPath(self, digest: str, repo: str | None = None) -> str:
        algorithm, encoded = oci.parseDigest(digest)
        return os.path.join(self.root, *(repo or self.repo).split("/"), "blobs",
                            algorithm, encoded)

    def ageAll(self, repo: str | None = None, seconds: float = OLD) -> None:
        """
        Age every file of the repository's C{blobs/} and C{.uploads/}.
        """
        top = os.path.join(self.root, *(repo or self.repo).split("/"))
        for sub in ("blobs", ".uploads"):
            for dirpath, _, files in os.walk(os.path.join(top, sub)):
                age(dirpath, seconds)
                for name in files:
                    age(os.path.join(dirpath, name), seconds)

    def collect(self, repo: str | None = None):
        return collectRepositoryBlocking(
            os.path.join(self.root, *(repo or self.repo).split("/")), time.time() - DELAY
        )

    def exists(self, digest: str, repo: str | None = None) -> bool:
        return os.path.isfile(self.blobPath(digest, repo))

    def indexDigests(self, repo: str | None = None) -> set:
        path = os.path.join(self.root, *(repo or self.repo).split("/"), "index.json")
        with open(path) as f:
            return {m["digest"] for m in json.load(f)["manifests"]}


class ReachabilityTests(GCCase):
    """
    What is reachable from C{index.json} stays, whatever its age.
    """

    def test_taggedImageKeptUnreferencedBlobGoes(self):
        """
        An old tagged image keeps its manifest, config and layers; an old
        blob nothing references goes, and the index is untouched.
        """
        body, digest = self.pushImage(self.repo, "1.0", layers=(b"a", b"b"), config=b"{1}")
        stray = self.pushBlob(self.repo, b"stray")
        self.ageAll()
        result = self.collect()
        self.assertEqual(result.blobs, [stray])
        self.assertEqual(result.bytes, len(b"stray"))
        self.assertEqual(result.manifests, [])
        for d in (digest, oci.digestOf(b"a"), oci.digestOf(b"b"), oci.digestOf(b"{1}")):
            self.assertTrue(self.exists(d), d)
        self.assertFalse(self.exists(stray))
        self.assertEqual(self.indexDigests(), {digest})

    def test_youngUnreferencedBlobKept(self):
        """
        A blob uploaded a moment ago and not referenced yet survives.
        """
        fresh = self.pushBlob(self.repo, b"fresh")
        result = self.collect()
        self.assertEqual(result.blobs, [])
        self.assertTrue(self.exists(fresh))

    def test_untaggedOldManifestGoes(self):
        """
        An old manifest pushed by digest and never tagged goes, with the
        blobs only it referenced; a young one stays.
        """
        _, old = self.pushImage(self.repo, None, layers=(b"old layer",), config=b"{o}")
        self.ageAll()
        _, young = self.pushImage(self.repo, None, layers=(b"young layer",), config=b"{y}")
        result = self.collect()
        self.assertEqual(result.manifests, [old])
        self.assertEqual(
            sorted(result.blobs),
            sorted([old, oci.digestOf(b"old layer"), oci.digestOf(b"{o}")]),
        )
        self.assertEqual(self.indexDigests(), {young})
        self.assertTrue(self.exists(young))
        self.registryFailure(self.store.getManifest(self.repo, old), "MANIFEST_UNKNOWN")
        body, _, _ = self.result(self.store.getManifest(self.repo, young))
        self.assertEqual(oci.digestOf(body), young)

    def test_untaggedAfterTagMovedGoes(self):
        """
        A tag moved to another image leaves the old image untagged: it goes
        once old, the image the tag names stays.
        """
        _, first = self.pushImage(self.repo, "latest", layers=(b"one",), config=b"{1}")
        _, second = self.pushImage(self.repo, "latest", layers=(b"two",), config=b"{2}")
        self.ageAll()
        result = self.collect()
        self.assertEqual(result.manifests, [first])
        self.assertEqual(self.indexDigests(), {second})
        self.assertTrue(self.exists(oci.digestOf(b"two")))
        self.assertFalse(self.exists(oci.digestOf(b"one")))

    def test_indexKeepsChildren(self):
        """
        Children of a tagged index stay, although untagged and old; when the
        index loses its tag and grows old, the index, its children and their
        blobs all go.
        """
        _, childA = self.pushImage(self.repo, None, layers=(b"amd64",), config=b"{a}")
        _, childB = self.pushImage(self.repo, None, layers=(b"arm64",), config=b"{b}")
        bodyA = imageManifest(b"{a}", [b"amd64"])
        bodyB = imageManifest(b"{b}", [b"arm64"])
        index = indexManifest([bodyA, bodyB])
        self.result(self.store.putManifest(self.repo, index, oci.OCI_INDEX, "multi", []))
        indexDigest = oci.digestOf(index)
        self.ageAll()
        result = self.collect()
        self.assertEqual(result.manifests, [])
        self.assertEqual(result.blobs, [])
        self.assertEqual(self.indexDigests(), {childA, childB, indexDigest})

        self.result(self.store.deleteManifest(self.repo, "multi"))
        self.ageAll()
        result = self.collect()
        self.assertEqual(sorted(result.manifests), sorted([childA, childB, indexDigest]))
        self.assertEqual(self.indexDigests(), set())
        self.assertEqual(os.listdir(os.path.join(self.root, "team", "app", "blobs", "sha256")),
                         [])

    def test_dockerTypes(self):
        """
        A Docker manifest list and its schema 2 manifests are walked like
        OCI ones.
        """
        self.pushBlob(self.repo, b"{d}")
        self.pushBlob(self.repo, b"docker layer")
        manifest = imageManifest(b"{d}", [b"docker layer"], mediaType=oci.DOCKER_MANIFEST,
                                 configType="application/vnd.docker.container.image.v1+json")
        self.result(self.store.putManifest(
            self.repo, manifest, oci.DOCKER_MANIFEST, oci.digestOf(manifest), []))
        listing = json.dumps({
            "schemaVersion": 2,
            "mediaType": oci.DOCKER_LIST,
            "manifests": [descriptorOf(oci.DOCKER_MANIFEST, manifest)],
        }).encode()
        self.result(self.store.putManifest(self.repo, listing, oci.DOCKER_LIST, "docker", []))
        stray = self.pushBlob(self.repo, b"stray")
        self.ageAll()
        result = self.collect()
        self.assertEqual(result.blobs, [stray])
        for data in (manifest, listing, b"{d}", b"docker layer"):
            self.assertTrue(self.exists(oci.digestOf(data)))

    def test_nonDistributableLayerKept(self):
        """
        A non-distributable layer is not required on push, but when its
        bytes were pushed anyway they are referenced and stay.
        """
        foreign = b"foreign layer"
        self.pushBlob(self.repo, b"{c}")
        self.pushBlob(self.repo, foreign)
        body = json.dumps({
            "schemaVersion": 2,
            "mediaType": oci.OCI_MANIFEST,
            "config": descriptorOf(CONFIG_TYPE, b"{c}"),
            "layers": [descriptorOf(
                "application/vnd.oci.image.layer.nondistributable.v1.tar+gzip", foreign)],
        }).encode()
        self.result(self.store.putManifest(self.repo, body, oci.OCI_MANIFEST, "nd", []))
        self.ageAll()
        self.assertEqual(self.collect().blobs, [])
        self.assertTrue(self.exists(oci.digestOf(foreign)))

    def test_unreadableManifestLeavesBlobsAlone(self):
        """
        When a tagged manifest's bytes are missing, what it references is
        unknown: no blob of the repository is deleted, and the result says
        why.
        """
        _, digest = self.pushImage(self.repo, "1.0")
        stray = self.pushBlob(self.repo, b"stray")
        os.unlink(self.blobPath(digest))
        self.ageAll()
        result = self.collect()
        self.assertEqual(result.blobs, [])
        self.assertIn(digest, result.skipped)
        self.assertTrue(self.exists(stray))

    def test_manifestReferences(self):
        """
        L{manifestReferences} reads config, layers, children and subject
        leniently, and refuses what is not a JSON object.
        """
        subject = {"mediaType": oci.OCI_MANIFEST, "digest": oci.digestOf(b"s"), "size": 1}
        body = imageManifest(b"{c}", [b"l"], subject=subject)
        blobs, children, found = manifestReferences(body)
        self.assertEqual(blobs, [oci.digestOf(b"{c}"), oci.digestOf(b"l")])
        self.assertEqual(children, [])
        self.assertEqual(found, oci.digestOf(b"s"))
        self.assertEqual(manifestReferences(indexManifest([body]))[1], [oci.digestOf(body)])
        self.assertIsNone(manifestReferences(b"[1]"))
        self.assertIsNone(manifestReferences(b"\xff"))
        self.assertEqual(
            manifestReferences(b'{"layers": [{"digest": "nope"}, 3]}'), ([], [], None)
        )


class ReferrerTests(GCCase):
    """
    Referrers live as long as their subject does.
    """

    def pushReferrer(self, subjectDigest: str, seed: bytes) -> str:
        subject = {"mediaType": oci.OCI_MANIFEST, "digest": subjectDigest, "size": 10}
        self.pushBlob(self.repo, b"{}")
        self.pushBlob(self.repo, seed)
        body = imageManifest(b"{}", [seed], configType="application/vnd.example.sig",
                             subject=subject)
        digest = oci.digestOf(body)
        self.result(self.store.putManifest(self.repo, body, oci.OCI_MANIFEST, digest, []))
        return digest

    def test_referrerOfLiveSubjectKept(self):
        """
        An old untagged referrer of a tagged image stays, with its blobs.
        """
        _, image = self.pushImage(self.repo, "1.0")
        signature = self.pushReferrer(image, b"signature")
        self.ageAll()
        result = self.collect()
        self.assertEqual(result.manifests, [])
        self.assertEqual(result.blobs, [])
        self.assertEqual(self.indexDigests(), {image, signature})
        self.assertEqual(
            [info.digest for info in self.result(self.store.referrers(self.repo, image))],
            [signature],
        )

    def test_referrerOfReferrerKept(self):
        """
        A referrer of a live referrer lives too (the fixed point).
        """
        _, image = self.pushImage(self.repo, "1.0")
        sbom = self.pushReferrer(image, b"sbom")
        sbomSignature = self.pushReferrer(sbom, b"sbom signature")
        self.ageAll()
        self.assertEqual(self.collect().manifests, [])
        self.assertEqual(self.indexDigests(), {image, sbom, sbomSignature})

    def test_orphanReferrerGoes(self):
        """
        An old referrer whose subject is absent goes with its blobs; a young
        one stays (its subject may be on its way: any push order is allowed).
        """
        absent = oci.digestOf(b"never pushed")
        orphan = self.pushReferrer(absent, b"orphan")
        self.ageAll()
        young = self.pushReferrer(absent, b"young")
        result = self.collect()
        self.assertEqual(result.manifests, [orphan])
        self.assertIn(oci.digestOf(b"orphan"), result.blobs)
        self.assertEqual(self.indexDigests(), {young})

    def test_referrerGoesAfterSubjectDeleted(self):
        """
        Deleting the subject leaves its referrer orphaned: both go once old.
        """
        _, image = self.pushImage(self.repo, "1.0")
        signature = self.pushReferrer(image, b"signature")
        self.result(self.store.deleteManifest(self.repo, image))
        self.ageAll()
        result = self.collect()
        self.assertEqual(result.manifests, [signature])
        self.assertEqual(self.indexDigests(), set())
        self.assertFalse(self.exists(image))


class UploadAndTemporaryTests(GCCase):
    """
    Stale upload sessions and crash leftovers go; active ones stay.
    """

    def test_staleUploadsGo(self):
        """
        A session untouched for longer than the delay is removed, and the
        client then learns it is unknown; a fresh one stays usable.
        """
        stale = self.startSession(self.repo)
        self.ageAll()
        fresh = self.startSession(self.repo)
        result = self.collect()
        self.assertEqual(result.uploads, 1)
        uploads = os.path.join(self.root, "team", "app", ".uploads")
        self.assertEqual(os.listdir(uploads), [fresh])
        self.registryFailure(self.store.uploadStatus(self.repo, stale), "BLOB_UPLOAD_UNKNOWN")
        self.assertEqual(self.result(self.store.uploadStatus(self.repo, fresh)), 0)

    def test_recentlyWrittenUploadStays(self):
        """
        A session whose data was written recently stays although its
        directory and metadata are old.
        """
        session = self.startSession(self.repo)
        self.ageAll()
        data = os.path.join(self.root, "team", "app", ".uploads", session, "data")
        os.utime(data)
        self.assertEqual(self.collect().uploads, 0)

    def test_temporaryFilesGo(self):
        """
        Temporary files a crash left in C{blobs/} and beside the index go
        once their name is older than the delay (the cutoff); a newer one (a
        write in progress) stays, even with an old mtime, as the hard link a
        mount makes has (its source's).
        """
        self.pushImage(self.repo, "1.0")
        repoDir = os.path.join(self.root, "team", "app")
        leftovers = [
            os.path.join(repoDir, "blobs", "sha256", "abc.123.tmp"),
            os.path.join(repoDir, ".index.json.1-2.tmp"),
        ]
        for path in leftovers:
            with open(path, "wb") as f:
                f.write(b"x")
        time.sleep(0.05)
        cutoff = time.time()
        time.sleep(0.05)
        inProgress = os.path.join(repoDir, "blobs", "sha256", "def.456.tmp")
        with open(inProgress, "wb") as f:
            f.write(b"y")
        age(inProgress, OLD)
        result = collectRepositoryBlocking(repoDir, cutoff)
        self.assertEqual(result.temporary, 2)
        for path in leftovers:
            self.assertFalse(os.path.exists(path))
        self.assertTrue(os.path.exists(inProgress))


class SafetyTests(GCCase):
    """
    The hooks that keep a concurrent push whole.
    """

    def test_removeIfStaleRestoresTouched(self):
        """
        L{removeIfStale} deletes a file older than the cutoff, and leaves in
        place one touched since the decision (it looks after renaming).
        """
        path = os.path.join(self.parent, "blob")
        with open(path, "wb") as f:
            f.write(b"12345")
        self.assertIsNone(removeIfStale(path, time.time() - DELAY))
        self.assertTrue(os.path.exists(path))
        self.assertEqual(os.listdir(self.parent), ["blob", "root"])
        age(path, OLD)
        self.assertEqual(removeIfStale(path, time.time() - DELAY), 5)
        self.assertFalse(os.path.exists(path))
        self.assertIsNone(removeIfStale(path, time.time()))

    def test_headAndGetRefreshAge(self):
        """
        With C{touchAfter} set, a HEAD (C{statBlob}) or a GET (C{openBlob})
        of an old blob makes it young again, so the collector spares it.
        """
        self.store.touchAfter = DELAY / 2
        seen = self.pushBlob(self.repo, b"seen")
        read = self.pushBlob(self.repo, b"read")
        ignored = self.pushBlob(self.repo, b"ignored")
        self.ageAll()
        self.assertEqual(self.result(self.store.statBlob(self.repo, seen)), 4)
        self.result(self.store.openBlob(self.repo, read)).close()
        self.assertEqual(self.collect().blobs, [ignored])
        self.assertTrue(self.exists(seen))
        self.assertTrue(self.exists(read))

    def test_noTouchWithoutCollector(self):
        """
        Without a collector (C{touchAfter} is L{None}) reads change no mtime.
        """
        digest = self.pushBlob(self.repo, b"blob")
        age(self.blobPath(digest), OLD)
        before = os.stat(self.blobPath(digest)).st_mtime
        self.result(self.store.statBlob(self.repo, digest))
        self.assertEqual(os.stat(self.blobPath(digest)).st_mtime, before)

    def test_mountIsYoung(self):
        """
        A blob mounted from another repository is new here: its shared,
        old mtime is refreshed so that it survives until a manifest names it.
        """
        self.store.touchAfter = DELAY / 2
        digest = self.pushBlob("other", b"shared")
        age(self.blobPath(digest, "other"), OLD)
        self.assertEqual(self.result(self.store.mountBlob(self.repo, digest, "other")), 6)
        self.assertEqual(self.collect().blobs, [])
        self.assertTrue(self.exists(digest))

    def test_putRechecksUnderTheLock(self):
        """
        A blob that vanishes between the manifest PUT's first check and its
        index change (the collector ran in between) makes the PUT fail with
        C{MANIFEST_BLOB_UNKNOWN}: no index entry names a missing blob.
        """
        config = self.pushBlob(self.repo, b"{c}")
        layer = self.pushBlob(self.repo, b"layer")
        original = self.store._mutateIndex

        def collectFirst(name, change, precheck):
            def checkThenCollect():
                precheck()
                age(self.blobPath(layer), OLD)
                self.collect()

            return original(name, change, checkThenCollect)

        self.store._mutateIndex = collectFirst
        body = imageManifest(b"{c}", [b"layer"])
        error = self.registryFailure(
            self.store.putManifest(self.repo, body, oci.OCI_MANIFEST, "1.0", []),
            "MANIFEST_BLOB_UNKNOWN",
        )
        self.assertIn(layer, json.dumps(error.detail))
        self.assertTrue(self.exists(config))
        self.assertEqual(self.indexDigests(), set())

    def test_rePushRefreshesUntaggedManifest(self):
        """
        Pushing an old untagged manifest again (as a client pushing an
        index re-pushes its children) makes it young: it is kept for the
        index that follows.
        """
        self.store.touchAfter = DELAY / 2
        body, digest = self.pushImage(self.repo, None)
        self.ageAll()
        self.result(self.store.putManifest(self.repo, body, oci.OCI_MANIFEST, digest, []))
        self.assertEqual(self.collect().manifests, [])
        self.assertEqual(self.indexDigests(), {digest})

    def test_putRewritesVanishedManifestBytes(self):
        """
        A re-push of a manifest whose old bytes the collector removed after
        the PUT's first look writes them again under the lock.
        """
        body, digest = self.pushImage(self.repo, None)
        original = self.store._mutateIndex

        def collectFirst(name, change, precheck):
            def checkThenCollect():
                precheck()
                os.unlink(self.blobPath(digest))

            return original(name, change, checkThenCollect)

        self.store._mutateIndex = collectFirst
        self.result(self.store.putManifest(self.repo, body, oci.OCI_MANIFEST, "again", []))
        with open(self.blobPath(digest), "rb") as f:
            self.assertEqual(f.read(), body)


class CollectorTests(GCCase):
    """
    L{GarbageCollector} over the whole store.
    """

    def test_collectAll(self):
        """
        Every repository is collected and the results add up; the in-memory
        index of the store sees the collector's rewrite.
        """
        _, a = self.pushImage("one", None, layers=(b"1",), config=b"{1}")
        _, b = self.pushImage("two/nested", None, layers=(b"2",), config=b"{2}")
        self.pushBlob("two/nested", b"stray")
        self.ageAll("one")
        self.ageAll("two/nested")
        self.assertIsNotNone(self.result(self.store.statManifest("one", a)))
        collector = GarbageCollector(self.store, InlineRunner(), DELAY)
        result = self.successResultOf(ensureDeferred(collector.collectAll()))
        self.assertEqual(sorted(result.manifests), sorted([a, b]))
        self.assertEqual(len(result.blobs), 7)
        self.registryFailure(self.store.statManifest("one", a), "MANIFEST_UNKNOWN")
        # The store still writes its index correctly after the rewrite.
        _, c = self.pushImage("one", "new", layers=(b"3",), config=b"{3}")
        self.assertEqual(self.indexDigests("one"), {c})





class _CountingCollector:
    """
    A collector that counts its rounds (they complete at once).
    """

    def __init__(self):
        self.stopping = False
        self.rounds = 0

    async def collectAll(self):
        self.rounds += 1


class TimeWindowTests(SynchronousTestCase):
    """
    C{gcTimeWindow}: sweeps only start inside the window, read in UTC on an
    injected clock.
    """

    #: 1970-01-02 00:00 UTC.
    MIDNIGHT = 86400.0

    def test_inTimeWindow(self):
        """
        Start included, end excluded; a window whose end comes first wraps
        past midnight.
        """
        at = lambda hh, mm: self.MIDNIGHT + hh * 3600 + mm * 60  # noqa: E731
        plain = parseTimeWindow("01:00-02:30")
        self.assertEqual(plain, (60, 150))
        self.assertTrue(inTimeWindow(plain, at(1, 0)))
        self.assertTrue(inTimeWindow(plain, at(2, 29)))
        self.assertFalse(inTimeWindow(plain, at(2, 30)))
        self.assertFalse(inTimeWindow(plain, at(0, 59)))
        wrapping = parseTimeWindow("22:00-06:30")
        for hh, mm, inside in [(22, 0, True), (23, 59, True), (0, 0, True), (6, 29, True),
                               (6, 30, False), (12, 0, False), (21, 59, False)]:
            self.assertEqual(inTimeWindow(wrapping, at(hh, mm)), inside, (hh, mm))
        self.assertEqual(secondsUntilWindow(wrapping, at(21, 0)), 3600)
        self.assertEqual(secondsUntilWindow(wrapping, at(23, 0)), 0)
        self.assertEqual(secondsUntilWindow(plain, at(3, 0)), 22 * 3600)

    def test_sweepWaitsForTheWindow(self):
        """
        A sweep due outside the window starts when the window opens, not
        before, and the next due inside it starts on time.
        """
        reactor = Clock()
        start = self.MIDNIGHT + 3 * 3600  # 03:00 UTC
        collector = _CountingCollector()
        service = GarbageCollectionService(
            collector, 3600, reactor, window="01:00-02:00",
            clock=lambda: start + reactor.seconds(),
        )
        service.startService()
        self.addCleanup(service.stopService)
        reactor.advance(3600)  # 04:00: due, outside
        self.assertEqual(collector.rounds, 0)
        reactor.advance(20 * 3600 + 59 * 60)  # 00:59 next day
        self.assertEqual(collector.rounds, 0)
        reactor.advance(60)  # 01:00: the window opens
        self.assertEqual(collector.rounds, 1)
        reactor.advance(1800)  # 01:30: the ticks that fell due did not double it
        self.assertEqual(collector.rounds, 1)
        reactor.advance(1800)  # 02:00, next due: the window closed (its end is excluded)
        self.assertEqual(collector.rounds, 1)
        reactor.advance(23 * 3600)  # 01:00 the day after
        self.assertEqual(collector.rounds, 2)

    def test_noWindowRunsEveryInterval(self):
        """
        Without a window every interval starts a sweep.
        """
        reactor = Clock()
        collector = _CountingCollector()
        service = GarbageCollectionService(collector, 60, reactor)
        service.startService()
        self.addCleanup(service.stopService)
        reactor.pump([60] * 5)
        self.assertEqual(collector.rounds, 5)

    def test_stopCancelsTheWait(self):
        """
        Stopping the service while a sweep waits for its window cancels it.
        """
        reactor = Clock()
        collector = _CountingCollector()
        service = GarbageCollectionService(collector, 60, reactor, window="01:00-02:00",
                                           clock=lambda: self.MIDNIGHT + 12 * 3600)
        service.startService()
        reactor.advance(60)
        self.assertEqual(len(reactor.getDelayedCalls()), 1)
        service.stopService()
        self.assertEqual(reactor.getDelayedCalls(), [])

    def test_newWindowJudgesAWaitingSweep(self):
        """
        A reload that widens the window lets a waiting sweep start at once;
        one that removes it too.
        """
        reactor = Clock()
        collector = _CountingCollector()
        service = GarbageCollectionService(collector, 3600, reactor, window="01:00-02:00",
                                           clock=lambda: self.MIDNIGHT + 12 * 3600 +
                                           reactor.seconds())
        service.startService()
        self.addCleanup(service.stopService)
        reactor.advance(3600)  # 13:00: due, waits
        self.assertEqual(collector.rounds, 0)
        service.setWindow("14:00-15:00")  # still closed: waits for 14:00
        reactor.advance(1800)
        self.assertEqual(collector.rounds, 0)
        service.setWindow("13:00-15:00")  # open now
        self.assertEqual(collector.rounds, 1)
        reactor.advance(3600)  # 14:30, next due, inside
        self.assertEqual(collector.rounds, 2)
