"""
Large and slow blob transfers against the registry running as its own
process (L{tests.procsupport.RegistryProcess}).

The server promises that an upload body goes to disk as it arrives (hashed on
the way) and that a download is produced in pieces, honouring C{Range}.  So
the memory of the server process must not depend on the size of the blobs it
moves: its peak resident set size (C{VmHWM}, the server alone) after a 2 GiB
push and pull must stay within a few tens of MiB of its peak after a 64 MiB
one.  The content comes from L{PatternBlob}, generated on the fly, so the
test process does not hold it either, and downloads are hashed as they
stream in.

These are the only tests here with numeric bounds; they are bounds on memory
and on bytes read, never on time.
"""

from twisted.internet.defer import ensureDeferred, gatherResults
from twisted.internet.threads import deferToThread
from twisted.logger import Logger
from twisted.trial.unittest import TestCase

from tests.procsupport import (
    OCTET_STREAM,
    GiB,
    KiB,
    MiB,
    PatternBlob,
    RegistryProcess,
    StreamingBody,
    expect,
    filesUnder,
    finishUpload,
    header,
    pullDigest,
    pushMonolithic,
    request,
    resolve,
    sha256Digest,
    splitBytes,
    startUpload,
    storedSince,
    waitUntil,
    withQuery,
)

_log = Logger()

#: The server's peak RSS must stay below this, whatever it moved.
PEAK_RSS_LIMIT = 150 * MiB

#: ... and must not grow by more than this between a 64 MiB transfer and a
#: transfer many times larger.
PEAK_RSS_GROWTH_LIMIT = 40 * MiB

#: A range request may make the server read the range plus this much (one
#: read-ahead buffer or two), never the rest of the blob.
RANGE_READ_SLACK = 8 * MiB

REPO = "streaming/big"


class _BlobChecks:
    """
    Shared steps of the memory tests: a server, a 64 MiB baseline transfer,
    and the memory checks.
    """

    async def _startWithBaseline(self) -> tuple[RegistryProcess, int]:
        """
        Start a server, push and pull a 64 MiB blob, and return the server
        and its peak RSS after that (the baseline every later peak is
        compared with).  The server's storage is deleted after the test.
        """
        registry = RegistryProcess(self, keepStore=False)
        baselineBlob = PatternBlob(64 * MiB, seed=2)
        baselineDigest = deferToThread(baselineBlob.digest)
        await registry.start()
        digest = await baselineDigest
        await pushMonolithic(
            registry, REPO, StreamingBody(baselineBlob.pieces(), baselineBlob.size), digest
        )
        pulled, length, _ = await pullDigest(registry, REPO, digest)
        self.assertEqual((pulled, length), (digest, baselineBlob.size))
        baseline = registry.peakRSS()
        _log.info("server peak RSS after 64 MiB push+pull: {mib:.1f} MiB", mib=baseline / MiB)
        return registry, baseline

    def _assertFlat(self, registry: RegistryProcess, baseline: int, when: str) -> int:
        """
        Check the server's peak RSS against the absolute limit and against
        the baseline, and return it.
        """
        peak = registry.peakRSS()
        _log.info(
            "server peak RSS after {when}: {mib:.1f} MiB (baseline {base:.1f} MiB)",
            when=when,
            mib=peak / MiB,
            base=baseline / MiB,
        )
        self.assertLess(
            peak,
            PEAK_RSS_LIMIT,
            f"server peak RSS {peak / MiB:.1f} MiB after {when} exceeds"
            f" {PEAK_RSS_LIMIT / MiB:.0f} MiB",
        )
        self.assertLess(
            peak - baseline,
            PEAK_RSS_GROWTH_LIMIT,
            f"server peak RSS grew from {baseline / MiB:.1f} MiB (after 64 MiB) to"
            f" {peak / MiB:.1f} MiB after {when}: memory follows the blob size",
        )
        return peak

    async def _assertRange(
        self,
        registry: RegistryProcess,
        blob: PatternBlob,
        digest: str,
        spec: str,
        first: int,
        last: int,
    ) -> None:
        """
        GET C{Range: bytes=<spec>} and check the 206, its headers, the exact
        bytes C{[first, last]}, and that the server read little more than
        those bytes (C{rchar}).
        """
        before = registry.bytesRead()
        response = await request(
            registry,
            "GET",
            f"{registry.url}/v2/{REPO}/blobs/{digest}",
            headers={"Range": f"bytes={spec}"},
        )
        body = await expect(response, 206, f"GET blob with Range: bytes={spec}")
        read = registry.bytesRead() - before
        length = last - first + 1
        self.assertEqual(header(response, "Content-Range"), f"bytes {first}-{last}/{blob.size}")
        # Twisted's client moves a GET response's Content-Length to .length.
        self.assertEqual(response.length, length)
        self.assertEqual(len(body), length)
        self.assertTrue(
            body == blob.read(first, length),
            f"Range bytes={spec} returned the wrong bytes",
        )
        _log.info("Range bytes={spec}: server read {read} bytes", spec=spec, read=read)
        self.assertLess(
            read,
            length + RANGE_READ_SLACK,
            f"serving Range bytes={spec} of a {blob.size} byte blob made the server read"
            f" {read} bytes",
        )


class LargeBlobTests(_BlobChecks, TestCase):
    """
    Pushing and pulling blobs far larger than the server's memory budget.
    """

    async def test_monolithicTwoGiB(self):
        """
        A 2 GiB blob pushed with POST then one streamed C{PUT ?digest=}
        (with Content-Length) is stored under its digest, comes back intact
        (hashed as it streams), and neither the push nor the pull raises the
        server's peak RSS above 150 MiB or more than 40 MiB above its peak
        after a 64 MiB push and pull (the pull's peak is measured on its
        own).  A Range GET of the last MiB returns
        exactly those bytes without reading the rest of the blob.
        """
        big = PatternBlob(2 * GiB, seed=1)
        bigDigest = deferToThread(big.digest)
        registry, baseline = await self._startWithBaseline()
        digest = await bigDigest

        await pushMonolithic(registry, REPO, StreamingBody(big.pieces(), big.size), digest)
        pushPeak = self._assertFlat(registry, baseline, "a 2 GiB monolithic push")

        response = await request(registry, "HEAD", f"{registry.url}/v2/{REPO}/blobs/{digest}")
        await expect(response, 200, "HEAD of the 2 GiB blob")
        self.assertEqual(header(response, "Content-Length"), str(big.size))
        self.assertEqual(header(response, "Docker-Content-Digest"), digest)

        # Measure the pull on its own: VmHWM would still show the push.
        registry.resetPeakRSS()
        pulled, length, response = await pullDigest(registry, REPO, digest)
        self.assertEqual((pulled, length), (digest, big.size))
        self.assertEqual(header(response, "Docker-Content-Digest"), digest)
        pullPeak = self._assertFlat(registry, baseline, "a 2 GiB pull")
        _log.info(
            "2 GiB: peak RSS push {push:.1f} MiB, pull {pull:.1f} MiB",
            push=pushPeak / MiB,
            pull=pullPeak / MiB,
        )

        await self._assertRange(
            registry, big, digest, f"{big.size - MiB}-{big.size - 1}", big.size - MiB, big.size - 1
        )

    test_monolithicTwoGiB.timeout = 300

    async def test_chunkedHalfGiB(self):
        """
        A 512 MiB blob uploaded as eight 64 MiB PATCH chunks (each with
        Content-Range and Content-Length), then closed with an empty
        C{PUT ?digest=}, is stored intact, and the server's peak RSS stays
        flat: a 64 MiB chunk is never held in memory.
        """
        blob = PatternBlob(512 * MiB, seed=4)
        blobDigest = deferToThread(blob.digest)
        registry, baseline = await self._startWithBaseline()
        digest = await blobDigest

        chunk = 64 * MiB
        location = await startUpload(registry, REPO)
        for start in range(0, blob.size, chunk):
            body = StreamingBody(blob.pieces(start, chunk), chunk)
            response = await request(
                registry,
                "PATCH",
                location,
                data=body,
                headers={
                    "Content-Type": OCTET_STREAM,
                    "Content-Range": f"{start}-{start + chunk - 1}",
                },
            )
            await expect(response, 202, f"PATCH {start}-{start + chunk - 1}")
            self.assertEqual(header(response, "Range"), f"0-{start + chunk - 1}")
            location = resolve(registry, header(response, "Location") or location)
        response = await finishUpload(registry, location, digest)
        self.assertEqual(response.code, 201)
        self.assertEqual(header(response, "Docker-Content-Digest"), digest)
        self._assertFlat(registry, baseline, "a 512 MiB chunked push")

        registry.resetPeakRSS()
        pulled, length, _ = await pullDigest(registry, REPO, digest)
        self.assertEqual((pulled, length), (digest, blob.size))
        self._assertFlat(registry, baseline, "a 512 MiB pull")

    test_chunkedHalfGiB.timeout = 300


class RangeTests(_BlobChecks, TestCase):
    """
    Single-range GETs of a large blob.
    """

    async def test_rangesReadOnlyTheirBytes(self):
        """
        Range GETs of a 512 MiB blob (the last MiB as C{a-b}, an unaligned
        slice in the middle, the last MiB as C{a-} and as the suffix C{-N})
        each answer 206 with the right C{Content-Range}, C{Content-Length}
        and bytes, and make the server read only about the range; a range
        starting past the end answers 416 with C{Content-Range: bytes */size}.
        """
        blob = PatternBlob(512 * MiB, seed=3)
        blobDigest = deferToThread(blob.digest)
        registry = RegistryProcess(self, keepStore=False)
        await registry.start()
        digest = await blobDigest
        await pushMonolithic(registry, REPO, StreamingBody(blob.pieces(), blob.size), digest)

        size = blob.size
        await self._assertRange(
            registry, blob, digest, f"{size - MiB}-{size - 1}", size - MiB, size - 1
        )
        middle = 200 * MiB + 12345
        await self._assertRange(
            registry, blob, digest, f"{middle}-{middle + MiB + 16}", middle, middle + MiB + 16
        )
        await self._assertRange(registry, blob, digest, f"{size - MiB}-", size - MiB, size - 1)
        await self._assertRange(registry, blob, digest, f"-{MiB}", size - MiB, size - 1)

        response = await request(
            registry,
            "GET",
            f"{registry.url}/v2/{REPO}/blobs/{digest}",
            headers={"Range": f"bytes={size}-"},
        )
        await expect(response, 416, "GET with a range past the end")
        self.assertEqual(header(response, "Content-Range"), f"bytes */{size}")

    test_rangesReadOnlyTheirBytes.timeout = 120


class SlowClientTests(TestCase):
    """
    Uploads whose bodies arrive slowly, as over a poor link.
    """

    async def test_trickledUploadsComplete(self):
        """
        Three uploads trickled concurrently in 20 pieces of 64 KiB with
        0.25 s pauses (5 s each) all complete: a monolithic C{PUT ?digest=}
        with Content-Length, a single C{POST ?digest=} with Content-Length,
        and a PATCH without Content-Length (chunked transfer coding) closed
        by C{PUT ?digest=}.  No read timeout cuts them, and the bodies reach
        the disk under the storage root while they are still arriving (the
        server does not wait for the end of a body to store it).
        """
        registry = RegistryProcess(self)
        await registry.start()
        pieces = 20
        pieceSize = 64 * KiB
        delay = 0.25
        datas = [
            PatternBlob(pieces * pieceSize, seed=seed).read(0, pieces * pieceSize)
            for seed in (21, 22, 23)
        ]
        digests = [sha256Digest(data) for data in datas]
        before = filesUnder(registry.root)
        bodies = [
            StreamingBody(splitBytes(datas[0], pieceSize), len(datas[0]), delay=delay),
            StreamingBody(splitBytes(datas[1], pieceSize), len(datas[1]), delay=delay),
            StreamingBody(splitBytes(datas[2], pieceSize), delay=delay),
        ]

        async def monolithicPut():
            location = await startUpload(registry, REPO)
            response = await request(
                registry,
                "PUT",
                withQuery(location, digest=digests[0]),
                data=bodies[0],
                headers={"Content-Type": OCTET_STREAM},
            )
            await expect(response, 201, "trickled monolithic PUT")

        async def singlePost():
            response = await request(
                registry,
                "POST",
                withQuery(f"{registry.url}/v2/{REPO}/blobs/uploads/", digest=digests[1]),
                data=bodies[1],
                headers={"Content-Type": OCTET_STREAM},
            )
            await expect(response, 201, "trickled single POST ?digest=")

        async def streamedPatch():
            location = await startUpload(registry, REPO)
            response = await request(
                registry,
                "PATCH",
                location,
                data=bodies[2],
                headers={"Content-Type": OCTET_STREAM},
            )
            await expect(response, 202, "trickled PATCH without Content-Length")
            self.assertEqual(header(response, "Range"), f"0-{len(datas[2]) - 1}")
            location = resolve(registry, header(response, "Location") or location)
            response = await finishUpload(registry, location, digests[2])
            self.assertEqual(response.code, 201)

        uploads = gatherResults(
            [
                ensureDeferred(monolithicPut()),
                ensureDeferred(singlePost()),
                ensureDeferred(streamedPatch()),
            ],
            consumeErrors=True,
        )

        # Halfway through, the bytes sent so far must be on disk.
        for body in bodies:
            await body.whenSent(pieces // 2 * pieceSize)
        halfway = 3 * (pieces // 2) * pieceSize

        def storedSoFar() -> int:
            return storedSince(registry.root, before)

        uploads.addErrback(lambda f: f.value.subFailure)
        await waitUntil(
            lambda: storedSoFar() >= halfway * 3 // 4 or uploads.called,
            timeout=30,
            message="uploads neither progressed nor finished",
        )
        if uploads.called:
            await uploads
            self.fail(
                f"only {storedSoFar()} of the {halfway} bytes sent halfway through three"
                " trickled uploads reached the storage root before the bodies ended"
            )
        await uploads
        for data, digest in zip(datas, digests):
            pulled, length, _ = await pullDigest(registry, REPO, digest)
            self.assertEqual((pulled, length), (digest, len(data)))

    test_trickledUploadsComplete.timeout = 60
