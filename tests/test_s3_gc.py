"""
Tests for L{zotwist.storage.s3.gc}: garbage collection of an S3 store on a
real Ceph RADOS Gateway and C{redis-server}.

Ages: a collector's clock can be moved forward (C{clock=}) so that
everything pushed so far is older than C{gcDelay}; the test of pushes
during a run uses the real clock and waits until the old content is old.
"""

import json
import os
import time

from twisted.internet import reactor
from twisted.internet.defer import ensureDeferred, gatherResults, maybeDeferred
from twisted.internet.task import deferLater

from tests.apihelpers import descriptor, digestOf, imageManifest
from tests.procsupport import waitUntil
from tests.test_s3_store import CONFIG, LAYER, S3Case
from zotwist import oci
from zotwist.errors import ManifestBlobsUnknown, RegistryError
from zotwist.storage.gc import GarbageCollectionService
from zotwist.storage.s3.gc import S3GarbageCollector


def later(seconds: float):
    """
    A clock C{seconds} ahead of the real one.
    """
    return lambda: time.time() + seconds


class S3GarbageCollectionTests(S3Case):
    """
    What the collector removes and keeps.
    """

    async def pushReferrer(self, store, name: str, subject: str, size: int) -> str:
        empty = b"{}"
        await self.pushBlob(store, name, empty)
        body = imageManifest(
            descriptor(oci.OCI_EMPTY, empty), [],
            artifactType="application/vnd.example.sig",
            subject={"mediaType": oci.OCI_MANIFEST, "digest": subject, "size": size},
        )
        digest = digestOf(body)
        await store.putManifest(name, body, oci.OCI_MANIFEST, digest, [])
        return digest

    def test_rules(self):
        """
        With everything older than C{gcDelay}: the tagged image, its blobs
        and a referrer of it stay; an untagged image, its blobs, a
        referrer of that untagged image, and an orphan blob go, from the
        index (S3 and Redis) and from S3 and C{blobs:<repo>}.
        """

        async def run():
            store = await self.instance()
            kept, keptBody, keptBlobs = await self.pushImage(store, "repo", "v1", "kept")
            gone, goneBody, goneBlobs = await self.pushImage(store, "repo", None, "gone")
            orphan = await self.pushBlob(store, "repo", b"orphan blob")
            keptRef = await self.pushReferrer(store, "repo", kept, len(keptBody))
            goneRef = await self.pushReferrer(store, "repo", gone, len(goneBody))
            collector = S3GarbageCollector(store, 100, clock=later(1000))
            result = await collector.collectAll()
            self.assertEqual(sorted(result.manifests), sorted([gone, goneRef]))
            self.assertEqual(
                sorted(result.blobs), sorted([gone, goneRef, orphan, *goneBlobs])
            )
            self.assertHeld("repo", [kept, *keptBlobs, keptRef, digestOf(b"{}")])
            self.assertGone("repo", [gone, *goneBlobs, goneRef, orphan])
            listed = {m["digest"] for m in self.s3Index("repo")["manifests"]}
            self.assertEqual(listed, {kept, keptRef})
            self.assertEqual(await store.listTags("repo"), ["v1"])
            self.assertEqual(
                [i.digest for i in await store.referrers("repo", kept)], [keptRef]
            )
            other = await self.instance()
            with self.assertRaises(Exception):
                await other.getManifest("repo", gone)
            # A second round finds nothing more.
            again = await collector.collectAll()
            self.assertFalse(again.removedAnything())

        return ensureDeferred(run())

    def test_youngContentStays(self):
        """
        With the real clock and an hour's C{gcDelay}, an untagged manifest
        and an orphan blob just pushed stay.
        """

        async def run():
            store = await self.instance()
            digest, _, blobs = await self.pushImage(store, "young", None, "y")
            orphan = await self.pushBlob(store, "young", b"new orphan")
            result = await S3GarbageCollector(store, 3600).collectAll()
            self.assertFalse(result.removedAnything())
            self.assertHeld("young", [digest, orphan, *blobs])
            self.assertEqual((await store.getManifest("young", digest))[2], digest)

        return ensureDeferred(run())

    def test_usedBlobCountsAsYoung(self):
        """
        A blob a client used (HEAD) after it became old is not collected:
        its use is noted in Redis and counts as its age.
        """

        async def run():
            store = await self.instance()
            store.touchAfter = 0
            old = await self.pushBlob(store, "used", b"old but used")
            other = await self.pushBlob(store, "used", b"old and unused")
            store._touched.clear()
            collector = S3GarbageCollector(store, 100, clock=later(1000))
            # Use it "now" by the collector's clock.
            self.redis.hset(self.key("touched", "used"), old, int(collector.clock()))
            result = await collector.collectAll()
            self.assertEqual(result.blobs, [other])
            self.assertHeld("used", [old])
            self.assertGone("used", [other])

        return ensureDeferred(run())

    def test_pushesDuringTheRun(self):
        """
        Rounds of collection while another instance pushes: everything
        pushed during the run stays, a manifest that references an old
        unreferenced blob either succeeds with that blob kept or fails with
        C{MANIFEST_BLOB_UNKNOWN}, never a tag whose blobs are missing; and
        old garbage goes.
        """

        async def run():
            gcStore = await self.instance()
            pusher = await self.instance()
            pusher.touchAfter = 0.5
            delay = 2.0
            oldGarbage = await self.pushBlob(pusher, "live", b"old garbage")
            oldWanted = await self.pushBlob(pusher, "live", b"old layer wanted later")
            pusher._touched.clear()
            started = time.time()
            await waitUntil(lambda: time.time() - started > delay + 1.1, 30, "clock")
            collector = S3GarbageCollector(gcStore, delay)
            outcomes = {}

            async def collect():
                for _ in range(4):
                    await collector.collectAll()

            async def push(i: int):
                config = f'{{"fresh": {i}}}'.encode()
                layer = os.urandom(2048)
                await self.pushBlob(pusher, "live", config)
                await self.pushBlob(pusher, "live", layer)
                layers = [descriptor(LAYER, layer)]
                if i == 3:
                    layers.append(descriptor(LAYER, b"old layer wanted later"))
                body = imageManifest(descriptor(CONFIG, config), layers)
                try:
                    await pusher.putManifest("live", body, oci.OCI_MANIFEST, f"t{i}", [])
                except ManifestBlobsUnknown as e:
                    outcomes[i] = e.digests
                else:
                    outcomes[i] = "ok"
                await deferLater(reactor, 0.05, lambda: None)

            async def pushes():
                for i in range(6):
                    await push(i)

            await gatherResults(
                [ensureDeferred(collect()), ensureDeferred(pushes())], consumeErrors=True
            )
            self.assertGreaterEqual(collector.rounds, 4)
            self.assertEqual([outcomes[i] for i in (0, 1, 2, 4, 5)], ["ok"] * 5)
            self.assertIn(outcomes[3], ("ok", [oldWanted]))
            tags = await gcStore.listTags("live")
            self.assertEqual(tags, sorted(f"t{i}" for i, o in outcomes.items() if o == "ok"))
            # Every tagged image is whole, in S3 and in Redis.
            for tag in tags:
                body, _, digest = await gcStore.getManifest("live", tag)
                document = json.loads(body)
                needed = [document["config"]["digest"]] + [
                    layer["digest"] for layer in document["layers"]
                ]
                self.assertHeld("live", [digest, *needed])
            self.assertGone("live", [oldGarbage])

        return ensureDeferred(run())

    def test_staleUploads(self):
        """
        Multipart uploads under C{.uploads/} that no live session uses and
        that started before C{gcDelay} are aborted; stale session records
        and stray upload objects are removed; a live session's multipart
        upload stays.
        """

        async def run():
            store = await self.instance()
            root = self.rootdirectory.strip("/")
            orphanKey = f"{root}/.uploads/{'a' * 32}/data"
            liveKey = f"{root}/.uploads/{'b' * 32}/data"
            orphan = self.s3.create_multipart_upload(Bucket=self.bucket, Key=orphanKey)
            live = self.s3.create_multipart_upload(Bucket=self.bucket, Key=liveKey)
            self.s3.put_object(
                Bucket=self.bucket, Key=f"{root}/.uploads/{'c' * 32}/data", Body=b"x"
            )
            collector = S3GarbageCollector(store, 100, clock=later(1000))
            # A real session S3Blobs opened: stale by the collector's clock.
            stale = await store.startUpload("r", "sha256")
            self.assertEqual(await store.uploadStatus("r", stale), 0)
            self.redis.hset(
                self.key("upload", "b" * 32),
                mapping={"repo": "r", "mpu": live["UploadId"], "updated": collector.clock()},
            )
            self.redis.hset(
                self.key("upload", "d" * 32), mapping={"repo": "r", "updated": 1}
            )
            removed = await collector.collectUploads()
            self.assertEqual(removed, 3)
            with self.assertRaises(RegistryError) as raised:
                await store.uploadStatus("r", stale)
            self.assertEqual(raised.exception.code, "BLOB_UPLOAD_UNKNOWN")
            remaining = self.s3.list_multipart_uploads(Bucket=self.bucket).get("Uploads", [])
            self.assertEqual([u["UploadId"] for u in remaining], [live["UploadId"]])
            self.assertNotEqual(orphan["UploadId"], live["UploadId"])
            self.assertFalse(self.redis.exists(self.key("upload", "d" * 32)))
            self.assertTrue(self.redis.exists(self.key("upload", "b" * 32)))
            keys = [
                o["Key"]
                for o in self.s3.list_objects_v2(
                    Bucket=self.bucket, Prefix=f"{root}/.uploads/"
                ).get("Contents", [])
            ]
            self.assertEqual(keys, [])
            self.s3.abort_multipart_upload(
                Bucket=self.bucket, Key=liveKey, UploadId=live["UploadId"]
            )

        return ensureDeferred(run())

    def test_onlyTheLeaderCollects(self):
        """
        A collector whose instance is not the leader removes nothing; once
        its lease is held, it collects.  It runs under
        L{GarbageCollectionService} as the local collector does.
        """

        async def run():
            store = await self.instance()
            orphan = await self.pushBlob(store, "led", b"orphan")
            lease = store.leaderLease(ttl=0.6)
            collector = S3GarbageCollector(store, 100, lease=lease, clock=later(1000))
            result = await collector.collectAll()
            self.assertFalse(result.removedAnything())
            self.assertHeld("led", [orphan])
            lease.startService()
            self.addCleanup(lambda: lease.stopService() if lease.running else None)
            await waitUntil(lease.isLeader, 30, "never led")
            service = GarbageCollectionService(collector, 0.05, reactor)
            service.startService()
            self.addCleanup(lambda: service.stopService() if service.running else None)
            await waitUntil(lambda: collector.rounds >= 1, 30, "no round ran")
            await maybeDeferred(service.stopService)
            self.assertEqual(collector.removed.blobs, [orphan])
            self.assertGone("led", [orphan])

        return ensureDeferred(run())
