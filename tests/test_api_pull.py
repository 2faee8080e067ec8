"""
HTTP API tests for pulling (end-2 blobs, end-3 manifests), over loopback.
"""

import os

from twisted.trial import unittest

from tests.apihelpers import (
    DOCKER_CONFIG,
    DOCKER_LAYER,
    DOCKER_MANIFEST,
    OCI_MANIFEST,
    assertError,
    body,
    contentLength,
    descriptor,
    digestOf,
    header,
    imageManifest,
    mediaTypeOf,
    pushBlob,
    pushImage,
    pushManifest,
)
from tests.support import startRegistry

#: 100 distinct bytes, so that any off-by-one in a range shows.
BLOB = bytes(range(100))


class BlobPullTests(unittest.TestCase):
    """
    C{GET}/C{HEAD /v2/<name>/blobs/<digest>} (end-2).
    """

    async def test_getBlob(self):
        """
        GET of a pushed blob answers 200 with the exact bytes,
        C{Content-Length}, C{Docker-Content-Digest} equal to the digest of
        the body (MUST on main) and C{Content-Type: application/octet-stream}.
        """
        reg = await startRegistry(self)
        digest = await pushBlob(reg, "pull/blob", BLOB)
        resp = await reg.client.get(f"{reg.url}/v2/pull/blob/blobs/{digest}")
        raw = await body(resp)
        self.assertEqual(resp.code, 200)
        self.assertEqual(raw, BLOB)
        self.assertEqual(contentLength(resp), len(BLOB))
        self.assertEqual(header(resp, "Docker-Content-Digest"), digest)
        self.assertEqual(mediaTypeOf(resp), "application/octet-stream")

    async def test_headBlob(self):
        """
        HEAD of a pushed blob answers 200 with C{Content-Length} (MUST on
        main), C{Docker-Content-Digest}, and no body.
        """
        reg = await startRegistry(self)
        digest = await pushBlob(reg, "pull/blob", BLOB)
        resp = await reg.client.head(f"{reg.url}/v2/pull/blob/blobs/{digest}")
        raw = await body(resp)
        self.assertEqual(resp.code, 200)
        self.assertEqual(raw, b"")
        self.assertEqual(contentLength(resp), len(BLOB))
        self.assertEqual(header(resp, "Docker-Content-Digest"), digest)

    async def test_getLargeBlob(self):
        """
        A blob larger than any single socket buffer (3 MiB) comes back
        byte-for-byte; the registry must stream it, not truncate it.
        """
        reg = await startRegistry(self)
        data = os.urandom(3 * 1024 * 1024 + 17)
        digest = await pushBlob(reg, "pull/large", data)
        resp = await reg.client.get(f"{reg.url}/v2/pull/large/blobs/{digest}")
        raw = await body(resp)
        self.assertEqual(resp.code, 200)
        self.assertEqual(len(raw), len(data))
        self.assertEqual(digestOf(raw), digest)

    async def test_missingBlob(self):
        """
        GET and HEAD of a blob the repository does not hold answer 404; the
        GET carries C{BLOB_UNKNOWN}.
        """
        reg = await startRegistry(self)
        await pushBlob(reg, "pull/blob", BLOB)
        missing = digestOf(b"not pushed")
        resp = await reg.client.get(f"{reg.url}/v2/pull/blob/blobs/{missing}")
        await assertError(resp, 404, "BLOB_UNKNOWN")
        resp = await reg.client.head(f"{reg.url}/v2/pull/blob/blobs/{missing}")
        await body(resp)
        self.assertEqual(resp.code, 404)

    async def test_blobInUnknownRepository(self):
        """
        A blob GET in a repository that does not exist answers 404; the spec
        only requires 404, so either C{NAME_UNKNOWN} or C{BLOB_UNKNOWN} is
        accepted.
        """
        reg = await startRegistry(self)
        resp = await reg.client.get(
            f"{reg.url}/v2/no/such/repo/blobs/{digestOf(BLOB)}"
        )
        await assertError(resp, 404, ("NAME_UNKNOWN", "BLOB_UNKNOWN"))


class RangeTests(unittest.TestCase):
    """
    Blob GET SHOULD honour C{Range} (RFC 9110) so pulls can resume.
    """

    async def _get(self, rangeValue):
        reg = await startRegistry(self)
        digest = await pushBlob(reg, "pull/range", BLOB)
        resp = await reg.client.get(
            f"{reg.url}/v2/pull/range/blobs/{digest}",
            headers={"Range": [rangeValue]},
        )
        return resp, await body(resp)

    async def test_firstBytes(self):
        """
        C{Range: bytes=0-9} answers 206 with the first ten bytes,
        C{Content-Range: bytes 0-9/100} and C{Content-Length: 10}.
        """
        resp, raw = await self._get("bytes=0-9")
        self.assertEqual(resp.code, 206)
        self.assertEqual(raw, BLOB[0:10])
        self.assertEqual(header(resp, "Content-Range"), "bytes 0-9/100")
        self.assertEqual(contentLength(resp), 10)

    async def test_middleBytes(self):
        """
        C{Range: bytes=40-59} answers 206 with exactly those twenty bytes.
        """
        resp, raw = await self._get("bytes=40-59")
        self.assertEqual(resp.code, 206)
        self.assertEqual(raw, BLOB[40:60])
        self.assertEqual(header(resp, "Content-Range"), "bytes 40-59/100")

    async def test_suffix(self):
        """
        A suffix range C{bytes=-5} answers 206 with the last five bytes and
        C{Content-Range: bytes 95-99/100}.
        """
        resp, raw = await self._get("bytes=-5")
        self.assertEqual(resp.code, 206)
        self.assertEqual(raw, BLOB[-5:])
        self.assertEqual(header(resp, "Content-Range"), "bytes 95-99/100")

    async def test_openEnded(self):
        """
        An open range C{bytes=10-} answers 206 with everything from byte 10,
        which is what a resuming client sends.
        """
        resp, raw = await self._get("bytes=10-")
        self.assertEqual(resp.code, 206)
        self.assertEqual(raw, BLOB[10:])
        self.assertEqual(header(resp, "Content-Range"), "bytes 10-99/100")

    async def test_endBeyondSize(self):
        """
        A range whose end is past the blob is clamped (RFC 9110): C{bytes=90-
        500} answers 206 with bytes 90-99.
        """
        resp, raw = await self._get("bytes=90-500")
        self.assertEqual(resp.code, 206)
        self.assertEqual(raw, BLOB[90:])
        self.assertEqual(header(resp, "Content-Range"), "bytes 90-99/100")

    async def test_unsatisfiable(self):
        """
        A range starting at or past the end answers 416 with
        C{Content-Range: bytes */100}.
        """
        resp, _ = await self._get("bytes=100-")
        self.assertEqual(resp.code, 416)
        self.assertEqual(header(resp, "Content-Range"), "bytes */100")

    async def test_multipleRanges(self):
        """
        A multi-range request may be answered with 206
        C{multipart/byteranges} holding every part (zot does) or, since a
        server MAY ignore Range, with 200 and the whole blob; both are
        accepted, but a 206 must carry both parts.
        """
        resp, raw = await self._get("bytes=0-3,50-53")
        self.assertIn(resp.code, (200, 206))
        if resp.code == 200:
            self.assertEqual(raw, BLOB)
        else:
            self.assertEqual(mediaTypeOf(resp), "multipart/byteranges")
            self.assertIn(BLOB[0:4], raw)
            self.assertIn(BLOB[50:54], raw)
            self.assertIn(b"content-range: bytes 0-3/100", raw.lower())
            self.assertIn(b"content-range: bytes 50-53/100", raw.lower())

    async def test_malformedRangeIgnored(self):
        """
        A C{Range} header that is not a byte range is ignored (RFC 9110) and
        the whole blob is served with 200.
        """
        resp, raw = await self._get("items=0-9")
        self.assertEqual(resp.code, 200)
        self.assertEqual(raw, BLOB)


class ManifestPullTests(unittest.TestCase):
    """
    C{GET}/C{HEAD /v2/<name>/manifests/<reference>} (end-3).
    """

    async def test_getByTagAndDigest(self):
        """
        GET by tag and by digest both answer 200 with the exact stored bytes,
        C{Content-Type} equal to the pushed media type and
        C{Docker-Content-Digest} equal to the digest of those bytes.
        """
        reg = await startRegistry(self)
        image = await pushImage(reg, "pull/manifest", "v1", "bytes")
        for reference in ["v1", image.digest]:
            resp = await reg.client.get(
                f"{reg.url}/v2/pull/manifest/manifests/{reference}",
                headers={"Accept": [OCI_MANIFEST]},
            )
            raw = await body(resp)
            self.assertEqual(resp.code, 200, reference)
            self.assertEqual(raw, image.manifest, reference)
            self.assertEqual(mediaTypeOf(resp), OCI_MANIFEST, reference)
            self.assertEqual(
                header(resp, "Docker-Content-Digest"), image.digest, reference
            )

    async def test_contentTypeIsPushedType(self):
        """
        The C{Content-Type} of a pulled manifest is the type it was pushed
        with, here a Docker schema 2 manifest, without parameters.
        """
        reg = await startRegistry(self)
        config = b'{"architecture":"amd64","os":"linux"}'
        layer = b"docker layer"
        await pushBlob(reg, "pull/docker", config)
        await pushBlob(reg, "pull/docker", layer)
        manifest = imageManifest(
            descriptor(DOCKER_CONFIG, config),
            [descriptor(DOCKER_LAYER, layer)],
            mediaType=DOCKER_MANIFEST,
        )
        await pushManifest(reg, "pull/docker", "d1", manifest, DOCKER_MANIFEST)
        resp = await reg.client.get(
            f"{reg.url}/v2/pull/docker/manifests/d1",
            headers={"Accept": [DOCKER_MANIFEST]},
        )
        raw = await body(resp)
        self.assertEqual(resp.code, 200)
        self.assertEqual(raw, manifest)
        self.assertEqual(header(resp, "Content-Type"), DOCKER_MANIFEST)

    async def test_headManifest(self):
        """
        HEAD of a manifest answers 200 with C{Content-Length} (the stored
        size), C{Docker-Content-Digest}, the media type, and no body.
        """
        reg = await startRegistry(self)
        image = await pushImage(reg, "pull/manifest", "v1", "head")
        for reference in ["v1", image.digest]:
            resp = await reg.client.head(
                f"{reg.url}/v2/pull/manifest/manifests/{reference}"
            )
            raw = await body(resp)
            self.assertEqual(resp.code, 200, reference)
            self.assertEqual(raw, b"", reference)
            self.assertEqual(
                contentLength(resp), len(image.manifest), reference
            )
            self.assertEqual(
                header(resp, "Docker-Content-Digest"), image.digest, reference
            )
            self.assertEqual(mediaTypeOf(resp), OCI_MANIFEST, reference)

    async def test_missingManifest(self):
        """
        An unknown tag or digest in an existing repository answers 404
        C{MANIFEST_UNKNOWN} to GET, and 404 to HEAD.
        """
        reg = await startRegistry(self)
        await pushImage(reg, "pull/manifest", "v1", "missing")
        for reference in ["nope", digestOf(b"no such manifest")]:
            url = f"{reg.url}/v2/pull/manifest/manifests/{reference}"
            resp = await reg.client.get(url)
            await assertError(resp, 404, "MANIFEST_UNKNOWN")
            resp = await reg.client.head(url)
            await body(resp)
            self.assertEqual(resp.code, 404, reference)

    async def test_manifestInUnknownRepository(self):
        """
        A manifest GET in a repository that does not exist answers 404.  The
        spec only says 404 (and lists C{NAME_UNKNOWN} for an unknown
        repository), so C{NAME_UNKNOWN} or C{MANIFEST_UNKNOWN} are both
        accepted.
        """
        reg = await startRegistry(self)
        resp = await reg.client.get(f"{reg.url}/v2/never/pushed/manifests/latest")
        await assertError(resp, 404, ("NAME_UNKNOWN", "MANIFEST_UNKNOWN"))

    async def test_manifestNotServedAsOtherRepository(self):
        """
        A manifest pushed to one repository is not visible by tag in another
        one: tags are per repository.
        """
        reg = await startRegistry(self)
        await pushImage(reg, "pull/one", "v1", "isolation")
        await pushImage(reg, "pull/two", "v2", "other")
        resp = await reg.client.get(f"{reg.url}/v2/pull/two/manifests/v1")
        await assertError(resp, 404, "MANIFEST_UNKNOWN")
