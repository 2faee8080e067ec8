"""
Tests for L{zotwist.storage.s3.scrub}: the scrub of the S3 store, against
the real Ceph RADOS Gateway and redis-server of L{tests.clustersupport}.
"""

from twisted.internet import reactor
from twisted.internet.defer import ensureDeferred

from tests.test_s3_store import S3Case
from zotwist.storage.s3.scrub import S3ScrubService
from zotwist.threads import ThreadPoolRunner


class FixedLease:
    """
    A lease whose answer the test sets.
    """

    def __init__(self, leading: bool):
        self.leading = leading

    def isLeader(self) -> bool:
        return self.leading


class S3ScrubTests(S3Case):
    """
    What a scrub round finds and does.
    """

    def scrubber(self, store, lease=None) -> S3ScrubService:
        runner = ThreadPoolRunner(reactor, minThreads=0, maxThreads=1, name="test-s3-scrub")
        runner.startService()
        self.addCleanup(runner.stopService)
        return S3ScrubService(store, runner, 3600, lease=lease, rate=None, reactor=reactor)

    def corrupt(self, name: str, digest: str, data: bytes) -> None:
        self.s3.put_object(
            Bucket=self.bucket,
            Key=self.objectKey(name, "blobs", "sha256", digest.split(":")[1]),
            Body=data,
        )

    async def _corruptBlobIsForgottenAndMovedAside(self):
        store = await self.instance()
        manifest, _, (config, layer) = await self.pushImage(store, "scrub/app", "v1", "one")
        whole = await self.pushBlob(store, "scrub/app", b"whole" * 100)
        self.corrupt("scrub/app", layer, b"bit rot")
        problems = await self.scrubber(store).scrubOnce()
        self.assertEqual([(p.repository, p.kind, p.digest) for p in problems],
                         [("scrub/app", "corrupt-blob", layer)])
        self.assertIsNone(await store.statBlob("scrub/app", layer))
        self.assertFalse(self.redis.hexists(self.key("blobs", "scrub/app"), layer))
        aside = self.s3.get_object(
            Bucket=self.bucket,
            Key=self.objectKey("scrub/app", ".corrupt", "sha256", layer.split(":")[1]),
        )["Body"].read()
        self.assertEqual(aside, b"bit rot")
        self.assertEqual(
            self.s3.list_objects_v2(
                Bucket=self.bucket,
                Prefix=self.objectKey("scrub/app", "blobs", "sha256", layer.split(":")[1]),
            )["KeyCount"],
            0,
        )
        for digest in (manifest, config, whole):
            self.assertIsNotNone(await store.statBlob("scrub/app", digest))
        # A second round finds nothing more: the damage is out of service.
        self.assertEqual(await self.scrubber(store).scrubOnce(), [])

    def test_corruptBlobIsForgottenAndMovedAside(self):
        """
        A blob whose object no longer hashes to its name is reported, is
        404 from then on (so a re-push repairs it), and its object sits
        under C{.corrupt/}; whole blobs and manifests are untouched.
        """
        return ensureDeferred(self._corruptBlobIsForgottenAndMovedAside())

    async def _missingObject(self):
        store = await self.instance()
        digest = await self.pushBlob(store, "scrub/gone", b"soon gone" * 10)
        self.s3.delete_object(
            Bucket=self.bucket,
            Key=self.objectKey("scrub/gone", "blobs", "sha256", digest.split(":")[1]),
        )
        problems = await self.scrubber(store).scrubOnce()
        self.assertEqual([(p.kind, p.digest) for p in problems], [("corrupt-blob", digest)])
        self.assertIn("missing", problems[0].detail)
        self.assertIsNone(await store.statBlob("scrub/gone", digest))

    def test_missingObject(self):
        """
        A blob Redis lists but S3 no longer holds is reported and forgotten.
        """
        return ensureDeferred(self._missingObject())

    async def _onlyTheLeaderScrubs(self):
        store = await self.instance()
        digest = await self.pushBlob(store, "scrub/lead", b"led" * 10)
        self.corrupt("scrub/lead", digest, b"bad")
        lease = FixedLease(False)
        scrubber = self.scrubber(store, lease)
        self.assertEqual(await scrubber.scrubOnce(), [])
        self.assertIsNotNone(await store.statBlob("scrub/lead", digest))
        lease.leading = True
        self.assertEqual([p.digest for p in await scrubber.scrubOnce()], [digest])

    def test_onlyTheLeaderScrubs(self):
        """
        An instance that does not hold the leader lease scrubs nothing; the
        one that does, does.
        """
        return ensureDeferred(self._onlyTheLeaderScrubs())
