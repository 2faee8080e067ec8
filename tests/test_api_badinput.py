"""
HTTP API tests with hostile or broken input: path traversal through
repository names and digests, invalid tags, truncated bodies, clients that
disconnect, oversized and malformed manifests.

The invariants: the registry answers a 4xx (never a 500), creates nothing
outside its root, and never exposes a partial blob: every file under a
C{blobs/} directory is a complete blob named by its own digest.
"""

import json
import os
import uuid
from urllib.parse import urlsplit

from twisted.trial import unittest

from tests.apihelpers import (
    OCI_CONFIG,
    OCI_INDEX,
    OCI_MANIFEST,
    assertError,
    blobFiles,
    body,
    descriptor,
    digestOf,
    header,
    makeImage,
    pushBlob,
    pushImage,
    pushManifest,
    putManifest,
    rawHead,
    rawRequest,
    readBytes,
    resolve,
    sleep,
    snapshotOutside,
    startUpload,
    status,
    storeProblems,
    tagsOf,
    withQuery,
)
from tests.support import startRegistry

REPO = "bad/repo"


class _Checks:
    """
    Assertions every test here ends with.
    """

    async def assertStillServing(self, reg):
        """
        The registry still answers C{GET /v2/} with 200.
        """
        self.assertEqual(await status(reg, "GET", reg.url + "/v2/"), 200)

    def assertStoreConsistent(self, reg):
        """
        Every file under any C{blobs/} directory is a whole blob named by
        its digest.
        """
        self.assertEqual(storeProblems(reg.root), [])

    def assertNoFileFor(self, reg, digest):
        """
        No file anywhere under the store is named after C{digest}'s hex.
        """
        hexPart = digest.split(":", 1)[1]
        for dirpath, _dirs, files in os.walk(reg.root):
            self.assertNotIn(hexPart, files, dirpath)

    async def settle(self, reg):
        """
        Give the server time to notice a dropped connection and finish any
        work it does about it, then round-trip one request.
        """
        await sleep(0.5)
        await self.assertStillServing(reg)


class HostileNameTests(_Checks, unittest.TestCase):
    """
    Repository names that try to leave the store or are simply invalid.
    """

    def hostileNames(self, marker):
        """
        @return: raw (still percent-encoded) repository-name parts of a URL
            path, each invalid under the spec's name grammar.
        """
        return [
            f"../../{marker}",
            f"../../../../{marker}",
            f"%2e%2e/%2e%2e/{marker}",
            f"%2e%2e/%2e%2e/%2e%2e/%2e%2e/{marker}",
            f"..%2f..%2f{marker}",
            f"a%2F..%2F..%2F..%2F{marker}",
            f"a/%2e%2e/%2e%2e/%2e%2e/{marker}",
            f"a/../../../{marker}",
            f"a%2F{marker}",
            f"%2F{marker}",
            f"Upper{marker}",
            "a" * 256,
            f"{marker}/",
            f"a//{marker}",
            f"a/./{marker}",
            f"a..b{marker}",
            f"-lead{marker}",
            f"{marker}%00",
            f"{marker}%20x",
        ]

    async def _assertRejected(self, resp, what, failures):
        """
        C{resp} is 400 C{NAME_INVALID} or a 404 with an OCI error document;
        if not, say why in C{failures}.
        """
        try:
            self.assertIn(resp.code, (400, 404), what)
            codes = await assertError(resp, resp.code)
            if resp.code == 400:
                self.assertEqual(codes[0], "NAME_INVALID", what)
        except AssertionError as e:
            failures.append(f"{what}: {e}")

    async def test_hostileNamesCreateNothing(self):
        """
        Blob pushes, upload sessions, manifest pushes and reads through
        hostile names all answer 400 C{NAME_INVALID} or 404 (never 2xx or
        500), and nothing appears outside the store, nor anywhere above it
        under the marker name, nor inside it.
        """
        reg = await startRegistry(self)
        image = await pushImage(reg, "legit", "v1", "hostile names")
        marker = "zwesc" + uuid.uuid4().hex[:12]
        before = snapshotOutside(reg.root, levels=3)
        rootBefore = sorted(os.listdir(reg.root))
        data = b"escaping blob"
        failures: list[str] = []
        for name in self.hostileNames(marker):
            base = f"{reg.url}/v2/{name}"
            resp = await reg.client.post(
                f"{base}/blobs/uploads/?digest={digestOf(data)}",
                data=data,
                headers={"Content-Type": ["application/octet-stream"]},
            )
            await self._assertRejected(resp, f"single POST {name}", failures)
            resp = await reg.client.post(f"{base}/blobs/uploads/", data=b"")
            await self._assertRejected(resp, f"POST session {name}", failures)
            resp = await putManifest(reg, name, "v1", image.manifest, OCI_MANIFEST)
            await self._assertRejected(resp, f"PUT manifest {name}", failures)
            resp = await reg.client.post(
                f"{base}/blobs/uploads/?mount={digestOf(image.config)}&from=legit",
                data=b"",
            )
            await self._assertRejected(resp, f"mount {name}", failures)
            for path in ["tags/list", "manifests/v1", f"blobs/{digestOf(data)}"]:
                resp = await reg.client.get(f"{base}/{path}")
                await self._assertRejected(resp, f"GET {name}/{path}", failures)
        self.assertEqual(failures, [])
        await self.assertStillServing(reg)
        self.assertEqual(snapshotOutside(reg.root, levels=3) - before, set())
        self.assertEqual(sorted(os.listdir(reg.root)), rootBefore)
        ancestor = os.path.abspath(reg.root)
        while True:
            self.assertFalse(
                os.path.exists(os.path.join(ancestor, marker)), ancestor
            )
            parent = os.path.dirname(ancestor)
            if parent == ancestor:
                break
            ancestor = parent

    async def test_nameAtLengthLimit(self):
        """
        Names must be under 256 characters: a 255-character name (several
        components) works, 256 is refused with 400 C{NAME_INVALID}.
        """
        reg = await startRegistry(self)
        name = "/".join(["a" * 50] * 4) + "/" + "b" * 51
        self.assertEqual(len(name), 255)
        await pushImage(reg, name, "v1", "long name")
        resp = await reg.client.get(f"{reg.url}/v2/{name}/manifests/v1")
        await body(resp)
        self.assertEqual(resp.code, 200)
        tooLong = name + "f"
        resp = await reg.client.post(f"{reg.url}/v2/{tooLong}/blobs/uploads/", data=b"")
        await assertError(resp, 400, "NAME_INVALID")

    async def test_validUnusualNames(self):
        """
        Names the grammar allows (double underscore, runs of dashes, dots,
        deep nesting) are accepted: rejecting hostile names must not reject
        these.
        """
        reg = await startRegistry(self)
        for name in ["a__b", "a---b", "a.b.c", "x/y/z/w", "0/1"]:
            await pushImage(reg, name, "v1", f"unusual {name}")
            self.assertEqual(await tagsOf(reg, name), ["v1"])

    async def test_digestTraversal(self):
        """
        A "digest" carrying an encoded path (C{sha256:..%2F..%2F...}) that
        would reach the config file next to the store answers 400 or 404 on
        GET, HEAD and DELETE, never serves that file, and never deletes it.
        """
        reg = await startRegistry(self)
        await pushImage(reg, REPO, "v1", "digest traversal")
        config = readBytes(reg.configPath)
        for depth in range(3, 7):
            evil = "sha256:" + "..%2F" * depth + os.path.basename(reg.configPath)
            for kind in ["blobs", "manifests"]:
                url = f"{reg.url}/v2/{REPO}/{kind}/{evil}"
                for method in ["GET", "HEAD", "DELETE"]:
                    resp = await reg.client.request(method, url)
                    raw = await body(resp)
                    self.assertIn(resp.code, (400, 404), f"{method} {url}")
                    self.assertNotIn(config, raw)
            self.assertTrue(os.path.exists(reg.configPath))
        resp = await reg.client.get(f"{reg.url}/v2/{REPO}/blobs/sha256:{'..%2F' * 4}")
        await body(resp)
        self.assertIn(resp.code, (400, 404))
        await self.assertStillServing(reg)

    async def test_malformedDigestsInPaths(self):
        """
        Malformed digests in blob and manifest URLs answer 400
        (C{DIGEST_INVALID}) or 404 (C{BLOB_UNKNOWN}/C{MANIFEST_UNKNOWN}):
        the spec requires 404 for absent content and a SHOULD-400 for an
        invalid digest, so both are accepted; never a 500.
        """
        reg = await startRegistry(self)
        await pushImage(reg, REPO, "v1", "bad digests")
        for bad in [
            "sha256:" + "a" * 63,
            "sha256:" + "a" * 65,
            "sha256:" + "z" * 64,
            "md5:" + "a" * 32,
            "sha256:",
            ":" + "a" * 64,
        ]:
            resp = await reg.client.get(f"{reg.url}/v2/{REPO}/blobs/{bad}")
            await assertError(resp, resp.code, ("DIGEST_INVALID", "BLOB_UNKNOWN"))
            self.assertIn(resp.code, (400, 404), bad)
            resp = await reg.client.delete(f"{reg.url}/v2/{REPO}/blobs/{bad}")
            await assertError(resp, resp.code, ("DIGEST_INVALID", "BLOB_UNKNOWN"))
            self.assertIn(resp.code, (400, 404), bad)


class BadTagTests(_Checks, unittest.TestCase):
    """
    A C{<reference>} MUST be a tag (C{[a-zA-Z0-9_][a-zA-Z0-9._-]{0,127}}) or a
    digest, nothing else.
    """

    async def test_invalidTagsRefused(self):
        """
        Manifest PUTs under invalid tags answer 400 (C{TAG_INVALID} or
        C{MANIFEST_INVALID}; the spec names no code for this) and create no
        tag; the longest and oddest valid tags are accepted.
        """
        reg = await startRegistry(self)
        image = await pushImage(reg, REPO, None, "tags")
        for tag in [
            "-lead",
            ".lead",
            "a+b",
            "a%21b",
            "a%20b",
            "t" * 129,
            "%2e%2e",
            "..%2Fescape",
            "a%2Fb",
        ]:
            resp = await putManifest(reg, REPO, tag, image.manifest, OCI_MANIFEST)
            try:
                await assertError(resp, 400, ("TAG_INVALID", "MANIFEST_INVALID"))
            except AssertionError as e:
                self.fail(f"tag {tag!r}: {e}")
        valid = ["t" * 128, "_under", "A.b-c_D", "0"]
        for tag in valid:
            await pushManifest(reg, REPO, tag, image.manifest)
        self.assertEqual(sorted(await tagsOf(reg, REPO)), sorted(valid))

    async def test_invalidTagsOnRead(self):
        """
        Reading a manifest by an invalid reference answers 400 or 404 with an
        OCI error document, never a 500.
        """
        reg = await startRegistry(self)
        await pushImage(reg, REPO, "v1", "read tags")
        for tag in ["-lead", "t" * 129, "a%20b", "%2e%2e"]:
            resp = await reg.client.get(f"{reg.url}/v2/{REPO}/manifests/{tag}")
            self.assertIn(resp.code, (400, 404), tag)
            await assertError(resp, resp.code)

    async def test_badTagParam(self):
        """
        An invalid C{?tag=} on a digest push (end-7b) is refused with 400 and
        none of the tags of that request are created.
        """
        reg = await startRegistry(self)
        image = await pushImage(reg, REPO, None, "tag params")
        resp = await putManifest(
            reg,
            REPO,
            image.digest,
            image.manifest,
            OCI_MANIFEST,
            params=[("tag", "good"), ("tag", "-bad")],
        )
        await assertError(resp, 400, ("TAG_INVALID", "MANIFEST_INVALID"))
        self.assertEqual(await tagsOf(reg, REPO), [])


class TruncatedBodyTests(_Checks, unittest.TestCase):
    """
    Clients that declare more body than they send, then go away.
    """

    async def test_truncatedSinglePost(self):
        """
        A single POST that declares 100000 bytes, sends 40000 and closes
        leaves no blob (HEAD 404), no file named after the digest, and no
        partial file under C{blobs/}.
        """
        reg = await startRegistry(self)
        await pushBlob(reg, REPO, b"repository exists")
        data = os.urandom(100_000)
        digest = digestOf(data)
        head = rawHead(
            "POST",
            f"/v2/{REPO}/blobs/uploads/?digest={digest}",
            {"Content-Type": "application/octet-stream", "Content-Length": "100000"},
        )
        resp = await rawRequest(reg, head + data[:40_000], closeAfterSend=True)
        self.assertNotIn(resp.status, (201, 202))
        await self.settle(reg)
        self.assertEqual(
            await status(reg, "HEAD", f"{reg.url}/v2/{REPO}/blobs/{digest}"), 404
        )
        self.assertNoFileFor(reg, digest)
        self.assertStoreConsistent(reg)

    async def test_truncatedChunkedSinglePost(self):
        """
        A single POST with C{Transfer-Encoding: chunked} whose stream stops
        before the terminating chunk stores nothing.
        """
        reg = await startRegistry(self)
        await pushBlob(reg, REPO, b"repository exists")
        data = os.urandom(60_000)
        digest = digestOf(data)
        head = rawHead(
            "POST",
            f"/v2/{REPO}/blobs/uploads/?digest={digest}",
            {
                "Content-Type": "application/octet-stream",
                "Transfer-Encoding": "chunked",
            },
        )
        chunks = b"".join(
            b"%x\r\n" % 10_000 + data[i : i + 10_000] + b"\r\n"
            for i in range(0, 30_000, 10_000)
        )
        resp = await rawRequest(reg, head + chunks, closeAfterSend=True)
        self.assertNotIn(resp.status, (201, 202))
        await self.settle(reg)
        self.assertEqual(
            await status(reg, "HEAD", f"{reg.url}/v2/{REPO}/blobs/{digest}"), 404
        )
        self.assertNoFileFor(reg, digest)
        self.assertStoreConsistent(reg)

    async def test_truncatedClosingPut(self):
        """
        A closing PUT that declares more than it sends stores no blob and
        leaves nothing partial under C{blobs/}.
        """
        reg = await startRegistry(self)
        location = await startUpload(reg, REPO)
        data = os.urandom(100_000)
        digest = digestOf(data)
        path = urlsplit(withQuery(location, [("digest", digest)]))
        head = rawHead(
            "PUT",
            f"{path.path}?{path.query}",
            {"Content-Type": "application/octet-stream", "Content-Length": "100000"},
        )
        resp = await rawRequest(reg, head + data[:30_000], closeAfterSend=True)
        self.assertNotIn(resp.status, (201,))
        await self.settle(reg)
        self.assertEqual(
            await status(reg, "HEAD", f"{reg.url}/v2/{REPO}/blobs/{digest}"), 404
        )
        self.assertNoFileFor(reg, digest)
        self.assertStoreConsistent(reg)

    async def test_disconnectMidPatch(self):
        """
        A client that disconnects in the middle of a PATCH leaves the session
        either gone (404) or resumable: its status C{Range} names a prefix
        of what was sent, and sending the rest from there yields the right
        blob.  Nothing partial ever shows under C{blobs/}.
        """
        reg = await startRegistry(self)
        location = await startUpload(reg, REPO)
        data = os.urandom(200_000)
        digest = digestOf(data)
        path = urlsplit(location)
        target = path.path + (f"?{path.query}" if path.query else "")
        head = rawHead(
            "PATCH",
            target,
            {
                "Content-Type": "application/octet-stream",
                "Content-Length": "200000",
                "Content-Range": "0-199999",
            },
        )
        resp = await rawRequest(reg, head + data[:100_000], closeAfterSend=True)
        self.assertNotEqual(resp.status, 202)
        await self.settle(reg)
        self.assertStoreConsistent(reg)
        self.assertEqual(
            await status(reg, "HEAD", f"{reg.url}/v2/{REPO}/blobs/{digest}"), 404
        )
        resp = await reg.client.get(location)
        if resp.code == 404:
            await assertError(resp, 404, "BLOB_UPLOAD_UNKNOWN")
            return
        await body(resp)
        self.assertEqual(resp.code, 204)
        rangeValue = header(resp, "Range")
        end = int(rangeValue.split("-")[1])
        offset = 0 if rangeValue == "0-0" else end + 1
        self.assertLessEqual(offset, 100_000)
        location = resolve(reg, header(resp, "Location"))
        resp = await reg.client.patch(
            location,
            data=data[offset:],
            headers={
                "Content-Type": ["application/octet-stream"],
                "Content-Range": [f"{offset}-{len(data) - 1}"],
            },
        )
        raw = await body(resp)
        self.assertEqual(resp.code, 202, raw)
        location = resolve(reg, header(resp, "Location"))
        resp = await reg.client.put(withQuery(location, [("digest", digest)]), data=b"")
        raw = await body(resp)
        self.assertEqual(resp.code, 201, raw)
        resp = await reg.client.get(f"{reg.url}/v2/{REPO}/blobs/{digest}")
        self.assertEqual(await body(resp), data)
        self.assertStoreConsistent(reg)

    async def test_disconnectMidStreamedPatch(self):
        """
        A streamed (no Content-Range) PATCH cut short leaves nothing partial
        under C{blobs/}, and the registry keeps serving.
        """
        reg = await startRegistry(self)
        location = await startUpload(reg, REPO)
        data = os.urandom(150_000)
        path = urlsplit(location)
        target = path.path + (f"?{path.query}" if path.query else "")
        head = rawHead(
            "PATCH",
            target,
            {"Content-Type": "application/octet-stream", "Content-Length": "150000"},
        )
        await rawRequest(reg, head + data[:50_000], closeAfterSend=True)
        await self.settle(reg)
        self.assertStoreConsistent(reg)
        self.assertEqual(
            await status(reg, "HEAD", f"{reg.url}/v2/{REPO}/blobs/{digestOf(data)}"),
            404,
        )

    async def test_disconnectDuringDownload(self):
        """
        A client that goes away while a large blob is being sent does not
        break the registry: the next request is served, and the blob is
        still whole.
        """
        reg = await startRegistry(self)
        data = os.urandom(4 * 1024 * 1024)
        digest = await pushBlob(reg, REPO, data)
        head = rawHead("GET", f"/v2/{REPO}/blobs/{digest}", {})
        partial = await rawRequest(reg, head, closeAfterReceiving=65536)
        self.assertEqual(partial.status, 200)
        self.assertLess(len(partial.body), len(data))
        await self.settle(reg)
        resp = await reg.client.get(f"{reg.url}/v2/{REPO}/blobs/{digest}")
        raw = await body(resp)
        self.assertEqual(digestOf(raw), digest)

    async def test_truncatedManifest(self):
        """
        A manifest PUT whose body is cut short creates no tag and no
        manifest.
        """
        reg = await startRegistry(self)
        image = makeImage("truncated manifest")
        await pushBlob(reg, REPO, image.config)
        await pushBlob(reg, REPO, image.layers[0])
        head = rawHead(
            "PUT",
            f"/v2/{REPO}/manifests/cut",
            {"Content-Type": OCI_MANIFEST, "Content-Length": str(len(image.manifest))},
        )
        await rawRequest(
            reg, head + image.manifest[: len(image.manifest) // 2], closeAfterSend=True
        )
        await self.settle(reg)
        resp = await reg.client.get(f"{reg.url}/v2/{REPO}/manifests/cut")
        await assertError(resp, 404, "MANIFEST_UNKNOWN")
        resp = await reg.client.get(f"{reg.url}/v2/{REPO}/manifests/{image.digest}")
        await assertError(resp, 404, "MANIFEST_UNKNOWN")
        self.assertStoreConsistent(reg)


class BadManifestTests(_Checks, unittest.TestCase):
    """
    Manifests that are too large, not JSON, or JSON of the wrong shape.
    """

    async def test_oversizedManifest(self):
        """
        A 5 MiB manifest answers 413; no tag, no manifest and no file named
        after its digest are created.
        """
        reg = await startRegistry(self)
        image = makeImage("oversized")
        await pushBlob(reg, REPO, image.config)
        await pushBlob(reg, REPO, image.layers[0])
        document = json.loads(image.manifest)
        document["annotations"] = {"pad": "x" * (5 * 1024 * 1024)}
        manifest = json.dumps(document).encode()
        resp = await putManifest(reg, REPO, "big", manifest, OCI_MANIFEST)
        await assertError(resp, 413)
        resp = await reg.client.get(f"{reg.url}/v2/{REPO}/manifests/big")
        await assertError(resp, 404, "MANIFEST_UNKNOWN")
        self.assertNoFileFor(reg, digestOf(manifest))
        self.assertStoreConsistent(reg)

    def malformed(self, config):
        """
        @return: (label, body, media type) of manifests that are not valid.
        """
        good = descriptor(OCI_CONFIG, config)

        def manifest(**fields):
            document = {"schemaVersion": 2, "mediaType": OCI_MANIFEST}
            document.update(fields)
            return json.dumps(document).encode()

        return [
            ("not JSON", b"this is not json", OCI_MANIFEST),
            ("JSON array", b"[]", OCI_MANIFEST),
            ("JSON string", b'"manifest"', OCI_MANIFEST),
            ("truncated", b'{"schemaVersion": 2, "config": {', OCI_MANIFEST),
            ("bad UTF-8", b'{"schemaVersion": 2, "x": "\xff\xfe"}', OCI_MANIFEST),
            ("empty body", b"", OCI_MANIFEST),
            ("deep nesting", b"[" * 100_000 + b"]" * 100_000, OCI_MANIFEST),
            (
                "deep nesting in object",
                b'{"schemaVersion": 2, "x": ' + b"[" * 100_000 + b"]" * 100_000 + b"}",
                OCI_MANIFEST,
            ),
            ("schemaVersion 1", manifest(schemaVersion=1, config=good, layers=[]),
             OCI_MANIFEST),
            ("schemaVersion string", manifest(schemaVersion="2", config=good,
                                              layers=[]), OCI_MANIFEST),
            ("no config", manifest(layers=[]), OCI_MANIFEST),
            ("config not object", manifest(config="sha256:x", layers=[]),
             OCI_MANIFEST),
            ("layers not list", manifest(config=good, layers={}), OCI_MANIFEST),
            ("layer not object", manifest(config=good, layers=[42]), OCI_MANIFEST),
            (
                "config without digest",
                manifest(config={"mediaType": OCI_CONFIG, "size": 2}, layers=[]),
                OCI_MANIFEST,
            ),
            (
                "negative size",
                manifest(config={**good, "size": -1}, layers=[]),
                OCI_MANIFEST,
            ),
            (
                "size not a number",
                manifest(config={**good, "size": "12"}, layers=[]),
                OCI_MANIFEST,
            ),
            (
                "index manifests not list",
                json.dumps(
                    {"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": "x"}
                ).encode(),
                OCI_INDEX,
            ),
        ]

    async def test_malformedManifests(self):
        """
        Each malformed manifest answers 400 C{MANIFEST_INVALID} (never a
        500, even for JSON nested deeper than a recursive parser allows),
        creates no tag, and stores nothing under C{blobs/}.
        """
        reg = await startRegistry(self)
        config = b'{"malformed":"tests"}'
        await pushBlob(reg, REPO, config)
        filesBefore = sorted(blobFiles(reg.root))
        failures = []
        for i, (label, data, mediaType) in enumerate(self.malformed(config)):
            resp = await putManifest(reg, REPO, f"bad{i}", data, mediaType)
            try:
                await assertError(resp, 400, "MANIFEST_INVALID")
            except AssertionError as e:
                failures.append(f"{label}: {e}")
        self.assertEqual(failures, [])
        self.assertEqual(await tagsOf(reg, REPO), [])
        self.assertEqual(sorted(blobFiles(reg.root)), filesBefore)
        self.assertStoreConsistent(reg)
        await self.assertStillServing(reg)

    async def test_descriptorWithBadDigest(self):
        """
        A descriptor whose digest does not parse is refused with 400
        (C{MANIFEST_INVALID}, or C{DIGEST_INVALID} which names the exact
        fault) and nothing is tagged.
        """
        reg = await startRegistry(self)
        await pushBlob(reg, REPO, b"repository exists")
        for bad in ["sha256:zz", "nonsense", "sha256:../../../etc/passwd"]:
            manifest = json.dumps(
                {
                    "schemaVersion": 2,
                    "mediaType": OCI_MANIFEST,
                    "config": {"mediaType": OCI_CONFIG, "digest": bad, "size": 2},
                    "layers": [],
                }
            ).encode()
            resp = await putManifest(reg, REPO, "baddigest", manifest, OCI_MANIFEST)
            try:
                await assertError(resp, 400, ("MANIFEST_INVALID", "DIGEST_INVALID"))
            except AssertionError as e:
                self.fail(f"digest {bad!r}: {e}")
        self.assertEqual(await tagsOf(reg, REPO), [])

    async def test_wrongDigestsEverywhere(self):
        """
        Digests that are well formed but wrong (the body of another blob,
        a manifest under another digest) never create content: each request
        fails with C{DIGEST_INVALID} and the store stays consistent.
        """
        reg = await startRegistry(self)
        image = await pushImage(reg, REPO, "v1", "wrong digests")
        data = b"payload"
        for claimed in [digestOf(b"other"), digestOf(b"other", "sha512")]:
            resp = await reg.client.post(
                f"{reg.url}/v2/{REPO}/blobs/uploads/?digest={claimed}",
                data=data,
                headers={"Content-Type": ["application/octet-stream"]},
            )
            await assertError(resp, 400, "DIGEST_INVALID")
        other = makeImage("other manifest")
        resp = await putManifest(
            reg, REPO, other.digest, image.manifest, OCI_MANIFEST
        )
        await assertError(resp, 400, "DIGEST_INVALID")
        self.assertEqual(
            await status(reg, "HEAD", f"{reg.url}/v2/{REPO}/blobs/{digestOf(data)}"),
            404,
        )
        self.assertEqual(await tagsOf(reg, REPO), ["v1"])
        self.assertStoreConsistent(reg)
