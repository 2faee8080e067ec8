"""
HTTP API tests for pushing blobs (end-4a/4b/4c, end-5, end-6, end-11, end-13,
end-14) and manifests (end-7a/7b), over loopback.
"""

import json
import os
import uuid
from urllib.parse import urlsplit

from twisted.trial import unittest

from tests.apihelpers import (
    DOCKER_CONFIG,
    DOCKER_LAYER,
    DOCKER_LIST,
    DOCKER_MANIFEST,
    EMPTY_CONFIG,
    EMPTY_CONFIG_DIGEST,
    OCI_CONFIG,
    OCI_EMPTY,
    OCI_INDEX,
    OCI_MANIFEST,
    OCTET,
    assertError,
    body,
    contentLength,
    descriptor,
    digestOf,
    header,
    imageIndex,
    imageManifest,
    makeImage,
    mediaTypeOf,
    pushBlob,
    pushImage,
    pushManifest,
    putManifest,
    resolve,
    startUpload,
    status,
    withQuery,
)
from tests.support import startRegistry

REPO = "push/repo"


async def blobStatus(reg, repo, digest):
    """
    @return: the status of C{HEAD /v2/<repo>/blobs/<digest>}.
    """
    return await status(reg, "HEAD", f"{reg.url}/v2/{repo}/blobs/{digest}")


async def blobContent(reg, repo, digest):
    """
    @return: (status, body) of C{GET /v2/<repo>/blobs/<digest>}.
    """
    resp = await reg.client.get(f"{reg.url}/v2/{repo}/blobs/{digest}")
    return resp.code, await body(resp)


async def patch(reg, location, data, contentRange=None):
    """
    PATCH a chunk to an upload location, with C{Content-Range} if given.
    """
    headers = dict(OCTET)
    if contentRange is not None:
        headers["Content-Range"] = [contentRange]
    return await reg.client.patch(location, data=data, headers=headers)


class MonolithicUploadTests(unittest.TestCase):
    """
    Single POST (end-4b) and POST then PUT (end-4a + end-6).
    """

    async def test_singlePost(self):
        """
        C{POST /blobs/uploads/?digest=} with the body answers 201 with a
        C{Location} that serves the blob and C{Docker-Content-Digest}.
        """
        reg = await startRegistry(self)
        data = b"single post blob"
        digest = digestOf(data)
        resp = await reg.client.post(
            f"{reg.url}/v2/{REPO}/blobs/uploads/?digest={digest}",
            data=data,
            headers=OCTET,
        )
        raw = await body(resp)
        self.assertEqual(resp.code, 201, raw)
        self.assertEqual(header(resp, "Docker-Content-Digest"), digest)
        location = header(resp, "Location")
        self.assertIsNotNone(location)
        got = await reg.client.get(resolve(reg, location))
        self.assertEqual(got.code, 200)
        self.assertEqual(await body(got), data)

    async def test_postThenPut(self):
        """
        POST answers 202 with a C{Location} holding the session's UUID, a
        C{Docker-Upload-UUID} header naming it and C{Range: 0-0} (what zot
        and distribution send for an empty session); the PUT with
        C{?digest=} answers 201 with a C{Location} of the pullable blob.
        """
        reg = await startRegistry(self)
        data = b"post then put"
        digest = digestOf(data)
        resp = await reg.client.post(
            f"{reg.url}/v2/{REPO}/blobs/uploads/",
            data=b"",
        )
        await body(resp)
        self.assertEqual(resp.code, 202)
        location = header(resp, "Location")
        self.assertIsNotNone(location)
        sessionId = header(resp, "Docker-Upload-UUID")
        self.assertTrue(sessionId)
        self.assertIn(sessionId, location)
        self.assertEqual(header(resp, "Range"), "0-0")
        resp = await reg.client.put(
            withQuery(resolve(reg, location), [("digest", digest)]),
            data=data,
            headers=OCTET,
        )
        raw = await body(resp)
        self.assertEqual(resp.code, 201, raw)
        self.assertEqual(header(resp, "Docker-Content-Digest"), digest)
        blobLocation = header(resp, "Location")
        self.assertIsNotNone(blobLocation)
        got = await reg.client.get(resolve(reg, blobLocation))
        self.assertEqual(got.code, 200)
        self.assertEqual(await body(got), data)

    async def test_locationForms(self):
        """
        Upload and blob locations may be absolute or relative; either way
        they must point at this registry's paths for the repository (so a
        client resolving them against its base URL reaches the session) and
        the blob location must name the blob's digest.
        """
        reg = await startRegistry(self)
        resp = await reg.client.post(f"{reg.url}/v2/{REPO}/blobs/uploads/", data=b"")
        await body(resp)
        location = header(resp, "Location")
        parts = urlsplit(location)
        if parts.scheme or parts.netloc:
            self.assertEqual(parts.scheme, "http")
            self.assertEqual(parts.netloc, f"127.0.0.1:{reg.port}")
        self.assertTrue(
            parts.path.startswith(f"/v2/{REPO}/blobs/uploads/"), location
        )
        data = b"location forms"
        digest = digestOf(data)
        resp = await reg.client.put(
            withQuery(resolve(reg, location), [("digest", digest)]),
            data=data,
            headers=OCTET,
        )
        await body(resp)
        self.assertEqual(resp.code, 201)
        blobParts = urlsplit(header(resp, "Location"))
        self.assertEqual(blobParts.path, f"/v2/{REPO}/blobs/{digest}")

    async def test_sessionsAreDistinct(self):
        """
        Two POSTs open two sessions with different locations, and each can
        be completed independently.
        """
        reg = await startRegistry(self)
        first = await startUpload(reg, REPO)
        second = await startUpload(reg, REPO)
        self.assertNotEqual(first, second)
        for location, data in [(first, b"one"), (second, b"two")]:
            resp = await reg.client.put(
                withQuery(location, [("digest", digestOf(data))]),
                data=data,
                headers=OCTET,
            )
            await body(resp)
            self.assertEqual(resp.code, 201)
        for data in [b"one", b"two"]:
            self.assertEqual(
                await blobContent(reg, REPO, digestOf(data)), (200, data)
            )

    async def test_sessionGoneAfterPut(self):
        """
        Once a session is closed by its PUT the location no longer names a
        session: a status GET answers 404 C{BLOB_UPLOAD_UNKNOWN}.
        """
        reg = await startRegistry(self)
        location = await startUpload(reg, REPO)
        data = b"closed"
        resp = await reg.client.put(
            withQuery(location, [("digest", digestOf(data))]),
            data=data,
            headers=OCTET,
        )
        await body(resp)
        self.assertEqual(resp.code, 201)
        resp = await reg.client.get(location)
        await assertError(resp, 404, "BLOB_UPLOAD_UNKNOWN")

    async def test_pushSameBlobTwice(self):
        """
        Pushing content that already exists succeeds again (201) and the
        blob stays intact; pushes are idempotent.
        """
        reg = await startRegistry(self)
        data = b"twice"
        await pushBlob(reg, REPO, data)
        await pushBlob(reg, REPO, data)
        self.assertEqual(await blobContent(reg, REPO, digestOf(data)), (200, data))

    async def test_zeroByteBlob(self):
        """
        A zero-byte blob (conformance data set) can be pushed with POST then
        PUT and with a single POST; GET answers 200 with an empty body and
        C{Content-Length: 0}, HEAD likewise.
        """
        reg = await startRegistry(self)
        digest = await pushBlob(reg, REPO, b"")
        self.assertEqual(
            digest,
            "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
        )
        resp = await reg.client.get(f"{reg.url}/v2/{REPO}/blobs/{digest}")
        self.assertEqual(resp.code, 200)
        self.assertEqual(await body(resp), b"")
        self.assertEqual(contentLength(resp), 0)
        resp = await reg.client.head(f"{reg.url}/v2/{REPO}/blobs/{digest}")
        await body(resp)
        self.assertEqual(resp.code, 200)
        self.assertEqual(contentLength(resp), 0)
        resp = await reg.client.post(
            f"{reg.url}/v2/push/other/blobs/uploads/?digest={digest}",
            data=b"",
            headers=OCTET,
        )
        await body(resp)
        self.assertEqual(resp.code, 201)
        self.assertEqual(await blobStatus(reg, "push/other", digest), 200)


class ChunkedUploadTests(unittest.TestCase):
    """
    Chunked uploads: PATCH (end-5), status GET (end-13), cancel (end-14).
    """

    async def test_chunksWithContentRange(self):
        """
        Each in-order PATCH with C{Content-Range} answers 202 with a
        C{Location} and C{Range: 0-<end>}; the closing PUT may carry the last
        chunk and answers 201; the blob is the concatenation.
        """
        reg = await startRegistry(self)
        data = bytes(range(30))
        location = await startUpload(reg, REPO)
        resp = await patch(reg, location, data[0:10], "0-9")
        await body(resp)
        self.assertEqual(resp.code, 202)
        self.assertEqual(header(resp, "Range"), "0-9")
        self.assertIsNotNone(header(resp, "Location"))
        location = resolve(reg, header(resp, "Location"))
        resp = await patch(reg, location, data[10:20], "10-19")
        await body(resp)
        self.assertEqual(resp.code, 202)
        self.assertEqual(header(resp, "Range"), "0-19")
        location = resolve(reg, header(resp, "Location"))
        resp = await reg.client.put(
            withQuery(location, [("digest", digestOf(data))]),
            data=data[20:30],
            headers={**OCTET, "Content-Range": ["20-29"]},
        )
        raw = await body(resp)
        self.assertEqual(resp.code, 201, raw)
        self.assertEqual(header(resp, "Docker-Content-Digest"), digestOf(data))
        self.assertEqual(await blobContent(reg, REPO, digestOf(data)), (200, data))

    async def test_chunksThenEmptyPut(self):
        """
        When every chunk went through PATCH, the closing PUT has no body and
        answers 201.
        """
        reg = await startRegistry(self)
        data = os.urandom(300_000)
        location = await startUpload(reg, REPO)
        for start in range(0, len(data), 100_000):
            chunk = data[start : start + 100_000]
            resp = await patch(
                reg, location, chunk, f"{start}-{start + len(chunk) - 1}"
            )
            await body(resp)
            self.assertEqual(resp.code, 202)
            self.assertEqual(header(resp, "Range"), f"0-{start + len(chunk) - 1}")
            location = resolve(reg, header(resp, "Location"))
        resp = await reg.client.put(
            withQuery(location, [("digest", digestOf(data))]), data=b""
        )
        raw = await body(resp)
        self.assertEqual(resp.code, 201, raw)
        self.assertEqual(await blobContent(reg, REPO, digestOf(data)), (200, data))

    async def test_outOfOrderChunk(self):
        """
        A chunk that does not start right after the previous one answers 416
        (MUST); the session keeps its offset (status GET says C{0-9}) and
        the upload can continue with the right chunk.
        """
        reg = await startRegistry(self)
        data = bytes(range(30))
        location = await startUpload(reg, REPO)
        resp = await patch(reg, location, data[0:10], "0-9")
        await body(resp)
        self.assertEqual(resp.code, 202)
        location = resolve(reg, header(resp, "Location"))
        resp = await patch(reg, location, data[20:30], "20-29")
        await assertError(resp, 416)
        resp = await patch(reg, location, data[5:15], "5-14")
        await assertError(resp, 416)
        resp = await reg.client.get(location)
        await body(resp)
        self.assertEqual(resp.code, 204)
        self.assertEqual(header(resp, "Range"), "0-9")
        resp = await patch(reg, location, data[10:30], "10-29")
        await body(resp)
        self.assertEqual(resp.code, 202)
        location = resolve(reg, header(resp, "Location"))
        resp = await reg.client.put(
            withQuery(location, [("digest", digestOf(data))]), data=b""
        )
        await body(resp)
        self.assertEqual(resp.code, 201)
        self.assertEqual(await blobContent(reg, REPO, digestOf(data)), (200, data))

    async def test_firstChunkNotAtZero(self):
        """
        The first chunk's range MUST begin with 0; one starting at 10
        answers 416.
        """
        reg = await startRegistry(self)
        location = await startUpload(reg, REPO)
        resp = await patch(reg, location, b"x" * 10, "10-19")
        await assertError(resp, 416)

    async def test_contentRangeDisagreesWithBody(self):
        """
        A C{Content-Range} that does not match the body length is rejected
        (zot answers 416, a 400 is as defensible: the spec names no code),
        and nothing of that chunk is kept: the session is still at 0.
        """
        reg = await startRegistry(self)
        location = await startUpload(reg, REPO)
        resp = await patch(reg, location, b"x" * 10, "0-19")
        self.assertIn(resp.code, (400, 416))
        await assertError(resp, resp.code)
        resp = await reg.client.get(location)
        await body(resp)
        self.assertEqual(resp.code, 204)
        self.assertEqual(header(resp, "Range"), "0-0")

    async def test_streamedPatch(self):
        """
        A PATCH without C{Content-Range} (a streamed chunk, as Docker and
        containerd send) is appended: 202 with C{Range: 0-<n-1>}; a second
        one appends again; the empty PUT closes the blob.
        """
        reg = await startRegistry(self)
        first, second = os.urandom(70_000), os.urandom(50_000)
        location = await startUpload(reg, REPO)
        resp = await patch(reg, location, first)
        await body(resp)
        self.assertEqual(resp.code, 202)
        self.assertEqual(header(resp, "Range"), f"0-{len(first) - 1}")
        location = resolve(reg, header(resp, "Location"))
        resp = await patch(reg, location, second)
        await body(resp)
        self.assertEqual(resp.code, 202)
        self.assertEqual(header(resp, "Range"), f"0-{len(first) + len(second) - 1}")
        location = resolve(reg, header(resp, "Location"))
        whole = first + second
        resp = await reg.client.put(
            withQuery(location, [("digest", digestOf(whole))]), data=b""
        )
        await body(resp)
        self.assertEqual(resp.code, 201)
        self.assertEqual(await blobContent(reg, REPO, digestOf(whole)), (200, whole))

    async def test_uploadStatus(self):
        """
        C{GET <location>} (end-13) answers 204 with C{Location} and C{Range}:
        C{0-0} on an empty session, C{0-9} after ten bytes; the returned
        location can be used to finish the upload.
        """
        reg = await startRegistry(self)
        location = await startUpload(reg, REPO)
        resp = await reg.client.get(location)
        self.assertEqual(await body(resp), b"")
        self.assertEqual(resp.code, 204)
        self.assertEqual(header(resp, "Range"), "0-0")
        self.assertIsNotNone(header(resp, "Location"))
        resp = await patch(reg, location, b"0123456789", "0-9")
        await body(resp)
        self.assertEqual(resp.code, 202)
        resp = await reg.client.get(resolve(reg, header(resp, "Location")))
        await body(resp)
        self.assertEqual(resp.code, 204)
        self.assertEqual(header(resp, "Range"), "0-9")
        location = resolve(reg, header(resp, "Location"))
        resp = await reg.client.put(
            withQuery(location, [("digest", digestOf(b"0123456789"))]), data=b""
        )
        await body(resp)
        self.assertEqual(resp.code, 201)

    async def test_cancelUpload(self):
        """
        C{DELETE <location>} (end-14) answers 204; the session is then
        unknown (status GET and PUT answer 404 C{BLOB_UPLOAD_UNKNOWN}), no
        blob was created, and its spool under C{.uploads} is gone (leaked
        upload files are zot#2598).
        """
        reg = await startRegistry(self)
        location = await startUpload(reg, REPO)
        data = b"abandoned" * 100
        resp = await patch(reg, location, data, f"0-{len(data) - 1}")
        await body(resp)
        self.assertEqual(resp.code, 202)
        location = resolve(reg, header(resp, "Location"))
        resp = await reg.client.delete(location)
        await body(resp)
        self.assertEqual(resp.code, 204)
        resp = await reg.client.get(location)
        await assertError(resp, 404, "BLOB_UPLOAD_UNKNOWN")
        resp = await reg.client.put(
            withQuery(location, [("digest", digestOf(data))]), data=b""
        )
        await assertError(resp, 404, "BLOB_UPLOAD_UNKNOWN")
        self.assertEqual(await blobStatus(reg, REPO, digestOf(data)), 404)
        uploads = os.path.join(reg.root, REPO, ".uploads")
        leftovers = []
        if os.path.isdir(uploads):
            for dirpath, _dirs, files in os.walk(uploads):
                leftovers.extend(os.path.join(dirpath, f) for f in files)
        self.assertEqual(leftovers, [])

    async def test_unknownUpload(self):
        """
        A well-formed but unknown session id answers 404
        C{BLOB_UPLOAD_UNKNOWN} to GET, PATCH, PUT and DELETE.
        """
        reg = await startRegistry(self)
        await pushBlob(reg, REPO, b"make the repository exist")
        url = f"{reg.url}/v2/{REPO}/blobs/uploads/{uuid.uuid4()}"
        resp = await reg.client.get(url)
        await assertError(resp, 404, "BLOB_UPLOAD_UNKNOWN")
        resp = await patch(reg, url, b"data", "0-3")
        await assertError(resp, 404, "BLOB_UPLOAD_UNKNOWN")
        resp = await reg.client.put(
            withQuery(url, [("digest", digestOf(b"data"))]), data=b"data"
        )
        await assertError(resp, 404, "BLOB_UPLOAD_UNKNOWN")
        resp = await reg.client.delete(url)
        await assertError(resp, 404, "BLOB_UPLOAD_UNKNOWN")

    async def test_sessionBelongsToItsRepository(self):
        """
        A session opened in one repository cannot be used through another
        repository's path: 404 C{BLOB_UPLOAD_UNKNOWN}, and no blob appears
        in either repository.
        """
        reg = await startRegistry(self)
        await pushBlob(reg, "push/other", b"other exists")
        location = await startUpload(reg, REPO)
        sessionPath = urlsplit(location).path.rsplit("/", 1)[1]
        data = b"cross-session"
        resp = await reg.client.put(
            f"{reg.url}/v2/push/other/blobs/uploads/{sessionPath}"
            f"?digest={digestOf(data)}",
            data=data,
            headers=OCTET,
        )
        await assertError(resp, 404, "BLOB_UPLOAD_UNKNOWN")
        self.assertEqual(await blobStatus(reg, "push/other", digestOf(data)), 404)
        self.assertEqual(await blobStatus(reg, REPO, digestOf(data)), 404)


class DigestTests(unittest.TestCase):
    """
    Digest checking on blob pushes, sha512 (end-4c) and malformed digests.
    """

    async def test_mismatchOnPut(self):
        """
        A PUT whose C{?digest=} does not match the uploaded bytes answers 400
        C{DIGEST_INVALID}, and nothing is stored under either digest.
        """
        reg = await startRegistry(self)
        data, claimed = b"real content", digestOf(b"claimed content")
        location = await startUpload(reg, REPO)
        resp = await reg.client.put(
            withQuery(location, [("digest", claimed)]), data=data, headers=OCTET
        )
        await assertError(resp, 400, "DIGEST_INVALID")
        self.assertEqual(await blobStatus(reg, REPO, claimed), 404)
        self.assertEqual(await blobStatus(reg, REPO, digestOf(data)), 404)

    async def test_mismatchOnSinglePost(self):
        """
        A single POST whose digest does not match the body answers 400
        C{DIGEST_INVALID} and stores nothing.
        """
        reg = await startRegistry(self)
        await pushBlob(reg, REPO, b"repository exists")
        data, claimed = b"real content", digestOf(b"claimed content")
        resp = await reg.client.post(
            f"{reg.url}/v2/{REPO}/blobs/uploads/?digest={claimed}",
            data=data,
            headers=OCTET,
        )
        await assertError(resp, 400, "DIGEST_INVALID")
        self.assertEqual(await blobStatus(reg, REPO, claimed), 404)
        self.assertEqual(await blobStatus(reg, REPO, digestOf(data)), 404)

    async def test_mismatchAfterChunks(self):
        """
        A chunked upload closed with the wrong digest answers 400
        C{DIGEST_INVALID} and stores nothing.
        """
        reg = await startRegistry(self)
        data = os.urandom(5000)
        claimed = digestOf(data[:-1])
        location = await startUpload(reg, REPO)
        resp = await patch(reg, location, data, f"0-{len(data) - 1}")
        await body(resp)
        self.assertEqual(resp.code, 202)
        location = resolve(reg, header(resp, "Location"))
        resp = await reg.client.put(withQuery(location, [("digest", claimed)]), data=b"")
        await assertError(resp, 400, "DIGEST_INVALID")
        self.assertEqual(await blobStatus(reg, REPO, claimed), 404)
        self.assertEqual(await blobStatus(reg, REPO, digestOf(data)), 404)

    async def test_malformedDigest(self):
        """
        Digests that do not parse (no algorithm, short hex, non-hex) answer
        400 C{DIGEST_INVALID} on single POST and on the closing PUT.
        """
        reg = await startRegistry(self)
        data = b"malformed digests"
        for bad in [
            "nonsense",
            "sha256:" + "a" * 63,
            "sha256:" + "g" * 64,
            "sha256:",
        ]:
            resp = await reg.client.post(
                withQuery(f"{reg.url}/v2/{REPO}/blobs/uploads/", [("digest", bad)]),
                data=data,
                headers=OCTET,
            )
            try:
                await assertError(resp, 400, "DIGEST_INVALID")
            except AssertionError as e:
                self.fail(f"single POST digest={bad!r}: {e}")
            location = await startUpload(reg, REPO)
            resp = await reg.client.put(
                withQuery(location, [("digest", bad)]), data=data, headers=OCTET
            )
            try:
                await assertError(resp, 400, "DIGEST_INVALID")
            except AssertionError as e:
                self.fail(f"PUT digest={bad!r}: {e}")
        self.assertEqual(await blobStatus(reg, REPO, digestOf(data)), 404)

    async def test_putWithoutDigest(self):
        """
        The closing PUT MUST carry C{?digest=}; without it the registry
        answers 400 (C{DIGEST_INVALID}, or C{BLOB_UPLOAD_INVALID} since the
        spec names no code for this) and creates nothing.
        """
        reg = await startRegistry(self)
        location = await startUpload(reg, REPO)
        resp = await reg.client.put(location, data=b"no digest", headers=OCTET)
        await assertError(resp, 400, ("DIGEST_INVALID", "BLOB_UPLOAD_INVALID"))
        self.assertEqual(await blobStatus(reg, REPO, digestOf(b"no digest")), 404)

    async def test_sha512SinglePost(self):
        """
        A sha512 blob (main-branch conformance) pushed by single POST answers
        201, is served under its sha512 digest with that digest in
        C{Docker-Content-Digest}, and lands in C{blobs/sha512/<hex>}.
        """
        reg = await startRegistry(self)
        data = b"sha512 content " * 10
        digest = digestOf(data, "sha512")
        resp = await reg.client.post(
            f"{reg.url}/v2/{REPO}/blobs/uploads/?digest={digest}",
            data=data,
            headers=OCTET,
        )
        raw = await body(resp)
        self.assertEqual(resp.code, 201, raw)
        resp = await reg.client.get(f"{reg.url}/v2/{REPO}/blobs/{digest}")
        self.assertEqual(await body(resp), data)
        self.assertEqual(resp.code, 200)
        self.assertEqual(header(resp, "Docker-Content-Digest"), digest)
        hexPart = digest.split(":", 1)[1]
        self.assertTrue(
            os.path.isfile(os.path.join(reg.root, REPO, "blobs", "sha512", hexPart))
        )

    async def test_digestAlgorithmSession(self):
        """
        C{POST ?digest-algorithm=sha512} (end-4c) opens a session (202);
        chunks and a PUT with the sha512 digest complete it (201).
        """
        reg = await startRegistry(self)
        data = os.urandom(20_000)
        digest = digestOf(data, "sha512")
        location = await startUpload(reg, REPO, [("digest-algorithm", "sha512")])
        resp = await patch(reg, location, data[:10_000], "0-9999")
        await body(resp)
        self.assertEqual(resp.code, 202)
        location = resolve(reg, header(resp, "Location"))
        resp = await reg.client.put(
            withQuery(location, [("digest", digest)]),
            data=data[10_000:],
            headers={**OCTET, "Content-Range": ["10000-19999"]},
        )
        raw = await body(resp)
        self.assertEqual(resp.code, 201, raw)
        self.assertEqual(await blobContent(reg, REPO, digest), (200, data))

    async def test_unsupportedDigestAlgorithm(self):
        """
        An algorithm the registry does not support answers 400 (SHOULD, main
        branch) with an OCI error document, both as C{digest-algorithm=} and
        in a C{digest=}; nothing is stored.
        """
        reg = await startRegistry(self)
        resp = await reg.client.post(
            f"{reg.url}/v2/{REPO}/blobs/uploads/?digest-algorithm=md5", data=b""
        )
        await assertError(resp, 400)
        data = b"md5 content"
        resp = await reg.client.post(
            f"{reg.url}/v2/{REPO}/blobs/uploads/?digest={digestOf(data, 'md5')}",
            data=data,
            headers=OCTET,
        )
        await assertError(resp, 400)
        self.assertEqual(await blobStatus(reg, REPO, digestOf(data)), 404)


class MountTests(unittest.TestCase):
    """
    Cross-repository blob mount (end-11).
    """

    async def test_mountFromRepository(self):
        """
        C{POST ?mount=<d>&from=<repo>} for a blob held by C{from} answers 201
        with C{Location} and C{Docker-Content-Digest}; the blob is then
        served by the target and stored in the target's own layout.
        """
        reg = await startRegistry(self)
        data = b"mount me"
        digest = await pushBlob(reg, "mount/source", data)
        resp = await reg.client.post(
            f"{reg.url}/v2/mount/target/blobs/uploads/"
            f"?mount={digest}&from=mount/source",
            data=b"",
        )
        raw = await body(resp)
        self.assertEqual(resp.code, 201, raw)
        self.assertEqual(header(resp, "Docker-Content-Digest"), digest)
        location = header(resp, "Location")
        self.assertIsNotNone(location)
        got = await reg.client.get(resolve(reg, location))
        self.assertEqual(await body(got), data)
        self.assertEqual(await blobContent(reg, "mount/target", digest), (200, data))
        hexPart = digest.split(":", 1)[1]
        self.assertTrue(
            os.path.isfile(
                os.path.join(reg.root, "mount/target", "blobs", "sha256", hexPart)
            )
        )

    async def test_mountMissingFallsBackToUpload(self):
        """
        Mounting a blob nobody holds answers 202 with a C{Location} of a new
        upload session, which the client completes normally.
        """
        reg = await startRegistry(self)
        await pushBlob(reg, "mount/source", b"something else")
        data = b"never pushed before"
        digest = digestOf(data)
        resp = await reg.client.post(
            f"{reg.url}/v2/mount/target/blobs/uploads/"
            f"?mount={digest}&from=mount/source",
            data=b"",
        )
        await body(resp)
        self.assertEqual(resp.code, 202)
        location = resolve(reg, header(resp, "Location"))
        resp = await reg.client.put(
            withQuery(location, [("digest", digest)]), data=data, headers=OCTET
        )
        await body(resp)
        self.assertEqual(resp.code, 201)
        self.assertEqual(await blobContent(reg, "mount/target", digest), (200, data))

    async def test_mountWithoutFrom(self):
        """
        The registry MAY treat C{from} as optional; like zot, zotwist mounts
        a blob found in another repository: 201 and the blob is served.
        """
        reg = await startRegistry(self)
        data = b"found anywhere"
        digest = await pushBlob(reg, "mount/source", data)
        resp = await reg.client.post(
            f"{reg.url}/v2/mount/target/blobs/uploads/?mount={digest}", data=b""
        )
        raw = await body(resp)
        self.assertEqual(resp.code, 201, raw)
        self.assertEqual(await blobContent(reg, "mount/target", digest), (200, data))

    async def test_mountFromRepositoryLackingIt(self):
        """
        When C{from} does not hold the blob but another repository does, the
        registry may either mount it anyway (C{from} MAY be optional: 201 and
        the blob is served) or fall back to an upload session (202 with a
        C{Location}); both are accepted.
        """
        reg = await startRegistry(self)
        data = b"held elsewhere"
        digest = await pushBlob(reg, "mount/holder", data)
        await pushBlob(reg, "mount/source", b"source has something else")
        resp = await reg.client.post(
            f"{reg.url}/v2/mount/target/blobs/uploads/"
            f"?mount={digest}&from=mount/source",
            data=b"",
        )
        await body(resp)
        self.assertIn(resp.code, (201, 202))
        self.assertIsNotNone(header(resp, "Location"))
        code, raw = await blobContent(reg, "mount/target", digest)
        if resp.code == 201:
            self.assertEqual((code, raw), (200, data))
        else:
            self.assertEqual(code, 404)


class ManifestPushTests(unittest.TestCase):
    """
    Manifest PUT (end-7a, end-7b) for every media type a registry should
    accept, and the ways a manifest can be refused.
    """

    async def test_ociImageManifest(self):
        """
        An OCI image manifest PUT by tag answers 201 with
        C{Docker-Content-Digest} equal to the digest of the body and a
        C{Location} that serves exactly those bytes.
        """
        reg = await startRegistry(self)
        image = makeImage("oci")
        await pushBlob(reg, REPO, image.config)
        await pushBlob(reg, REPO, image.layers[0])
        resp = await putManifest(reg, REPO, "v1", image.manifest, OCI_MANIFEST)
        raw = await body(resp)
        self.assertEqual(resp.code, 201, raw)
        self.assertEqual(header(resp, "Docker-Content-Digest"), image.digest)
        location = header(resp, "Location")
        self.assertIsNotNone(location)
        self.assertTrue(
            urlsplit(location).path.startswith(f"/v2/{REPO}/manifests/"), location
        )
        got = await reg.client.get(resolve(reg, location))
        self.assertEqual(got.code, 200)
        self.assertEqual(await body(got), image.manifest)

    async def test_pushByDigest(self):
        """
        A manifest PUT by its digest answers 201 with that digest, is served
        by digest, and creates no tag.
        """
        reg = await startRegistry(self)
        image = makeImage("by-digest")
        await pushBlob(reg, REPO, image.config)
        await pushBlob(reg, REPO, image.layers[0])
        resp = await putManifest(reg, REPO, image.digest, image.manifest, OCI_MANIFEST)
        await body(resp)
        self.assertEqual(resp.code, 201)
        self.assertEqual(header(resp, "Docker-Content-Digest"), image.digest)
        got = await reg.client.get(f"{reg.url}/v2/{REPO}/manifests/{image.digest}")
        self.assertEqual(await body(got), image.manifest)
        resp = await reg.client.get(f"{reg.url}/v2/{REPO}/tags/list")
        document = json.loads(await body(resp))
        self.assertEqual(resp.code, 200)
        self.assertEqual(document, {"name": REPO, "tags": []})

    async def test_overwriteTag(self):
        """
        Pushing another manifest under an existing tag moves the tag; the
        first manifest stays reachable by digest.
        """
        reg = await startRegistry(self)
        first = await pushImage(reg, REPO, "v1", "first")
        second = await pushImage(reg, REPO, "v1", "second")
        got = await reg.client.get(f"{reg.url}/v2/{REPO}/manifests/v1")
        self.assertEqual(await body(got), second.manifest)
        got = await reg.client.get(f"{reg.url}/v2/{REPO}/manifests/{first.digest}")
        self.assertEqual(got.code, 200)
        self.assertEqual(await body(got), first.manifest)

    async def test_ociIndex(self):
        """
        An OCI image index whose children exist answers 201 and is served
        with its media type; an index can nest another index.
        """
        reg = await startRegistry(self)
        amd = await pushImage(reg, REPO, None, "amd64")
        arm = await pushImage(reg, REPO, None, "arm64")
        index = imageIndex(
            [
                descriptor(
                    OCI_MANIFEST,
                    amd.manifest,
                    platform={"architecture": "amd64", "os": "linux"},
                ),
                descriptor(
                    OCI_MANIFEST,
                    arm.manifest,
                    platform={"architecture": "arm64", "os": "linux"},
                ),
            ]
        )
        await pushManifest(reg, REPO, "multi", index, OCI_INDEX)
        outer = imageIndex([descriptor(OCI_INDEX, index)])
        await pushManifest(reg, REPO, "nested", outer, OCI_INDEX)
        for tag, expected in [("multi", index), ("nested", outer)]:
            got = await reg.client.get(f"{reg.url}/v2/{REPO}/manifests/{tag}")
            self.assertEqual(await body(got), expected)
            self.assertEqual(mediaTypeOf(got), OCI_INDEX)

    async def test_ociIndexMissingChild(self):
        """
        An index naming a manifest the repository does not hold is refused
        with 400 C{MANIFEST_BLOB_UNKNOWN} (the spec's code when a registry
        rejects unknown references), and the tag is not created.
        """
        reg = await startRegistry(self)
        present = await pushImage(reg, REPO, None, "present")
        absent = makeImage("absent")
        index = imageIndex(
            [
                descriptor(OCI_MANIFEST, present.manifest),
                descriptor(OCI_MANIFEST, absent.manifest),
            ]
        )
        resp = await putManifest(reg, REPO, "broken", index, OCI_INDEX)
        await assertError(resp, 400, "MANIFEST_BLOB_UNKNOWN")
        resp = await reg.client.get(f"{reg.url}/v2/{REPO}/manifests/broken")
        await assertError(resp, 404, "MANIFEST_UNKNOWN")

    async def test_dockerSchema2(self):
        """
        A Docker schema 2 manifest and a Docker manifest list are accepted
        by default (zot#724: Docker-built images must push) and served with
        their own media types.
        """
        reg = await startRegistry(self)
        config = b'{"architecture":"amd64","os":"linux","docker":true}'
        layer = b"docker layer bytes"
        await pushBlob(reg, REPO, config)
        await pushBlob(reg, REPO, layer)
        manifest = imageManifest(
            descriptor(DOCKER_CONFIG, config),
            [descriptor(DOCKER_LAYER, layer)],
            mediaType=DOCKER_MANIFEST,
        )
        await pushManifest(reg, REPO, "docker", manifest, DOCKER_MANIFEST)
        manifestList = imageIndex(
            [
                descriptor(
                    DOCKER_MANIFEST,
                    manifest,
                    platform={"architecture": "amd64", "os": "linux"},
                )
            ],
            mediaType=DOCKER_LIST,
        )
        await pushManifest(reg, REPO, "dockerlist", manifestList, DOCKER_LIST)
        for tag, expected, mediaType in [
            ("docker", manifest, DOCKER_MANIFEST),
            ("dockerlist", manifestList, DOCKER_LIST),
        ]:
            got = await reg.client.get(
                f"{reg.url}/v2/{REPO}/manifests/{tag}",
                headers={"Accept": [mediaType]},
            )
            self.assertEqual(await body(got), expected)
            self.assertEqual(mediaTypeOf(got), mediaType)

    async def test_artifactManifest(self):
        """
        An artifact (image manifest with C{artifactType} and the empty config
        C{application/vnd.oci.empty.v1+json}, content C{{}}) is accepted.
        """
        reg = await startRegistry(self)
        self.assertEqual(digestOf(EMPTY_CONFIG), EMPTY_CONFIG_DIGEST)
        await pushBlob(reg, REPO, EMPTY_CONFIG)
        payload = b"an sbom"
        await pushBlob(reg, REPO, payload)
        manifest = imageManifest(
            descriptor(OCI_EMPTY, EMPTY_CONFIG),
            [descriptor("application/vnd.example.sbom.v1+json", payload)],
            artifactType="application/vnd.example.sbom.v1",
        )
        digest = await pushManifest(reg, REPO, "sbom", manifest)
        got = await reg.client.get(f"{reg.url}/v2/{REPO}/manifests/{digest}")
        self.assertEqual(got.code, 200)
        self.assertEqual(await body(got), manifest)

    async def test_emptyLayersAndCustomFields(self):
        """
        A manifest with an empty layer list and fields the registry does not
        know (both in the conformance data sets) is accepted and stored
        byte-for-byte.
        """
        reg = await startRegistry(self)
        config = b'{"custom":"config"}'
        await pushBlob(reg, REPO, config)
        manifest = imageManifest(
            descriptor(OCI_CONFIG, config, **{"com.example.custom": [1, 2]}),
            [],
            **{"com.example.field": {"nested": True}},
        )
        await pushManifest(reg, REPO, "custom", manifest)
        got = await reg.client.get(f"{reg.url}/v2/{REPO}/manifests/custom")
        self.assertEqual(await body(got), manifest)

    async def test_nonDistributableLayerNotRequired(self):
        """
        A non-distributable layer (with C{urls}) need not be pushed; the
        conformance data set pushes such a manifest without the layer.
        """
        reg = await startRegistry(self)
        config = b'{"nondist":"config"}'
        await pushBlob(reg, REPO, config)
        foreign = b"foreign layer never uploaded"
        manifest = imageManifest(
            descriptor(OCI_CONFIG, config),
            [
                descriptor(
                    "application/vnd.oci.image.layer.nondistributable.v1.tar",
                    foreign,
                    urls=["https://example.com/layer.tar"],
                )
            ],
        )
        await pushManifest(reg, REPO, "nondist", manifest)

    async def test_missingBlobs(self):
        """
        A manifest whose config or layer blob is not in the repository is
        refused with 400 C{MANIFEST_BLOB_UNKNOWN}; the tag is not created.
        """
        reg = await startRegistry(self)
        image = makeImage("missing-layer")
        await pushBlob(reg, REPO, image.config)
        resp = await putManifest(reg, REPO, "nolayer", image.manifest, OCI_MANIFEST)
        await assertError(resp, 400, "MANIFEST_BLOB_UNKNOWN")
        image = makeImage("missing-config")
        await pushBlob(reg, REPO, image.layers[0])
        resp = await putManifest(reg, REPO, "noconfig", image.manifest, OCI_MANIFEST)
        await assertError(resp, 400, "MANIFEST_BLOB_UNKNOWN")
        for tag in ["nolayer", "noconfig"]:
            resp = await reg.client.get(f"{reg.url}/v2/{REPO}/manifests/{tag}")
            await assertError(resp, 404, "MANIFEST_UNKNOWN")

    async def test_malformedJSON(self):
        """
        A body that is not JSON answers 400 C{MANIFEST_INVALID}.
        """
        reg = await startRegistry(self)
        await pushBlob(reg, REPO, b"repo exists")
        resp = await putManifest(
            reg, REPO, "bad", b'{"schemaVersion": 2, "mediaType": ', OCI_MANIFEST
        )
        await assertError(resp, 400, "MANIFEST_INVALID")

    async def test_contentTypeDisagreesWithMediaType(self):
        """
        If a manifest has C{mediaType}, the client MUST send it as
        C{Content-Type}; a disagreeing Content-Type answers 400
        C{MANIFEST_INVALID} and nothing is stored.
        """
        reg = await startRegistry(self)
        image = makeImage("mismatch")
        await pushBlob(reg, REPO, image.config)
        await pushBlob(reg, REPO, image.layers[0])
        resp = await putManifest(reg, REPO, "wrong", image.manifest, OCI_INDEX)
        await assertError(resp, 400, "MANIFEST_INVALID")
        resp = await reg.client.get(f"{reg.url}/v2/{REPO}/manifests/{image.digest}")
        await assertError(resp, 404, "MANIFEST_UNKNOWN")

    async def test_contentTypeParametersIgnored(self):
        """
        Registries SHOULD ignore Content-Type parameters: a manifest PUT with
        C{; charset=utf-8} is accepted and served back with the bare type.
        """
        reg = await startRegistry(self)
        image = makeImage("params")
        await pushBlob(reg, REPO, image.config)
        await pushBlob(reg, REPO, image.layers[0])
        resp = await putManifest(
            reg, REPO, "params", image.manifest, OCI_MANIFEST + "; charset=utf-8"
        )
        await body(resp)
        self.assertEqual(resp.code, 201)
        got = await reg.client.get(f"{reg.url}/v2/{REPO}/manifests/params")
        await body(got)
        self.assertEqual(header(got, "Content-Type"), OCI_MANIFEST)

    async def test_digestReferenceMismatch(self):
        """
        A PUT to C{/manifests/<digest>} whose body has another digest answers
        400 C{DIGEST_INVALID}; nothing is stored under either digest.
        """
        reg = await startRegistry(self)
        image = makeImage("digest-mismatch")
        await pushBlob(reg, REPO, image.config)
        await pushBlob(reg, REPO, image.layers[0])
        wrong = digestOf(b"some other manifest")
        resp = await putManifest(reg, REPO, wrong, image.manifest, OCI_MANIFEST)
        await assertError(resp, 400, "DIGEST_INVALID")
        for reference in [wrong, image.digest]:
            resp = await reg.client.get(f"{reg.url}/v2/{REPO}/manifests/{reference}")
            await assertError(resp, 404, "MANIFEST_UNKNOWN")

    async def test_manifestTooLarge(self):
        """
        A manifest over 4 MiB answers 413 and is not stored.
        """
        reg = await startRegistry(self)
        image = makeImage("too-large")
        await pushBlob(reg, REPO, image.config)
        await pushBlob(reg, REPO, image.layers[0])
        manifest = self._padded(image, 4 * 1024 * 1024 + 1024)
        resp = await putManifest(reg, REPO, "huge", manifest, OCI_MANIFEST)
        await assertError(resp, 413)
        resp = await reg.client.get(f"{reg.url}/v2/{REPO}/manifests/huge")
        await assertError(resp, 404, "MANIFEST_UNKNOWN")

    async def test_largeManifestAccepted(self):
        """
        Registries SHOULD handle manifests of at least 4 MB: a ~3.9 MiB one
        (padded with an annotation) is accepted and served byte-for-byte.
        """
        reg = await startRegistry(self)
        image = makeImage("large")
        await pushBlob(reg, REPO, image.config)
        await pushBlob(reg, REPO, image.layers[0])
        manifest = self._padded(image, int(3.9 * 1024 * 1024))
        await pushManifest(reg, REPO, "large", manifest)
        got = await reg.client.get(f"{reg.url}/v2/{REPO}/manifests/large")
        raw = await body(got)
        self.assertEqual(got.code, 200)
        self.assertEqual(len(raw), len(manifest))
        self.assertEqual(digestOf(raw), digestOf(manifest))

    def _padded(self, image, size):
        """
        @return: C{image}'s manifest grown to exactly C{size} bytes with a
            padding annotation.
        """
        document = json.loads(image.manifest)
        document["annotations"] = {"pad": ""}
        base = len(json.dumps(document).encode())
        document["annotations"]["pad"] = "x" * (size - base)
        data = json.dumps(document).encode()
        self.assertEqual(len(data), size)
        return data

    async def test_tagsOnDigestPush(self):
        """
        C{PUT /manifests/<digest>?tag=a&tag=b} (end-7b) answers 201 with one
        C{OCI-Tag} header per tag, and both tags then resolve to the
        manifest and appear in the tags list.
        """
        reg = await startRegistry(self)
        image = makeImage("tag-params")
        await pushBlob(reg, REPO, image.config)
        await pushBlob(reg, REPO, image.layers[0])
        resp = await putManifest(
            reg,
            REPO,
            image.digest,
            image.manifest,
            OCI_MANIFEST,
            params=[("tag", "alpha"), ("tag", "beta")],
        )
        raw = await body(resp)
        self.assertEqual(resp.code, 201, raw)
        values = resp.headers.getRawHeaders("OCI-Tag") or []
        self.assertEqual(sorted(values), ["alpha", "beta"])
        for tag in ["alpha", "beta"]:
            got = await reg.client.get(f"{reg.url}/v2/{REPO}/manifests/{tag}")
            self.assertEqual(await body(got), image.manifest)
        resp = await reg.client.get(f"{reg.url}/v2/{REPO}/tags/list")
        self.assertEqual(json.loads(await body(resp))["tags"], ["alpha", "beta"])

    async def test_subjectHeader(self):
        """
        A registry that processes C{subject} MUST answer C{OCI-Subject:
        <subject digest>}, also when the subject is not pushed yet (it MUST
        accept any push order).
        """
        reg = await startRegistry(self)
        subject = await pushImage(reg, REPO, "base", "subject")
        await pushBlob(reg, REPO, EMPTY_CONFIG)
        for target in [subject, makeImage("not pushed yet")]:
            manifest = imageManifest(
                descriptor(OCI_EMPTY, EMPTY_CONFIG),
                [descriptor(OCI_EMPTY, EMPTY_CONFIG)],
                artifactType="application/vnd.example.signature",
                subject=descriptor(OCI_MANIFEST, target.manifest),
            )
            resp = await putManifest(
                reg, REPO, digestOf(manifest), manifest, OCI_MANIFEST
            )
            raw = await body(resp)
            self.assertEqual(resp.code, 201, raw)
            self.assertEqual(header(resp, "OCI-Subject"), target.digest)
