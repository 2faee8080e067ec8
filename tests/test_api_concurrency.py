"""
HTTP API tests for concurrent clients of one registry, over loopback.

Each client pushes through its own connections at the same time as the
others; the repository's C{index.json} is shared state, so lost updates show
up as missing tags.
"""

import json
import os

from twisted.internet import defer
from twisted.trial import unittest

from tests.apihelpers import (
    OCI_MANIFEST,
    body,
    digestOf,
    header,
    makeImage,
    pushBlob,
    pushImage,
    putManifest,
    resolve,
    startUpload,
    storeProblems,
    tagsOf,
    withQuery,
)
from tests.support import startRegistry

REPO = "conc/repo"
CLIENTS = 8


def gather(coroutines):
    """
    Run coroutines concurrently; fail with the first failure.
    """
    return defer.gatherResults(
        [defer.ensureDeferred(c) for c in coroutines], consumeErrors=True
    )


def indexEntries(root, repo):
    """
    @return: the C{manifests} of C{<root>/<repo>/index.json}.
    """
    with open(os.path.join(root, repo, "index.json")) as f:
        return json.load(f).get("manifests", [])


def tagOf(entry):
    """
    @return: the tag an C{index.json} entry carries, or L{None}.
    """
    return (entry.get("annotations") or {}).get("org.opencontainers.image.ref.name")


class ConcurrentPushTests(unittest.TestCase):
    """
    Several clients pushing to one repository at once.
    """

    async def test_eightTagsAtOnce(self):
        """
        Eight clients each push their own blobs and manifest under their own
        tag to the same repository simultaneously; afterwards all eight tags
        are in the tags list and in C{index.json}, each pointing at its own
        manifest, and each resolves to the right bytes.
        """
        reg = await startRegistry(self)
        images = await gather(
            pushImage(reg, REPO, f"t{i}", f"concurrent {i}") for i in range(CLIENTS)
        )
        expected = {f"t{i}": images[i] for i in range(CLIENTS)}
        self.assertEqual(await tagsOf(reg, REPO), sorted(expected))
        tagged = {
            tagOf(e): e["digest"] for e in indexEntries(reg.root, REPO) if tagOf(e)
        }
        self.assertEqual(tagged, {t: image.digest for t, image in expected.items()})
        for tag, image in expected.items():
            resp = await reg.client.get(f"{reg.url}/v2/{REPO}/manifests/{tag}")
            self.assertEqual(await body(resp), image.manifest, tag)
        self.assertEqual(storeProblems(reg.root), [])

    async def test_sameBlobAtOnce(self):
        """
        Eight clients uploading the same blob concurrently all get 201 and
        the stored blob is whole (one of the renames wins, none corrupts it).
        """
        reg = await startRegistry(self)
        data = os.urandom(512 * 1024)
        digests = await gather(pushBlob(reg, REPO, data) for _ in range(CLIENTS))
        self.assertEqual(set(digests), {digestOf(data)})
        resp = await reg.client.get(f"{reg.url}/v2/{REPO}/blobs/{digestOf(data)}")
        self.assertEqual(await body(resp), data)
        self.assertEqual(storeProblems(reg.root), [])

    async def test_sameTagAtOnce(self):
        """
        Eight clients pushing different manifests under the same tag at once
        all succeed; afterwards the tag names exactly one of them, in the
        API and in C{index.json} (one entry for the tag, never two).
        """
        reg = await startRegistry(self)
        images = [makeImage(f"same tag {i}") for i in range(CLIENTS)]
        for image in images:
            await pushBlob(reg, REPO, image.config)
            await pushBlob(reg, REPO, image.layers[0])

        async def push(image):
            resp = await putManifest(reg, REPO, "shared", image.manifest, OCI_MANIFEST)
            await body(resp)
            return resp.code

        codes = await gather(push(image) for image in images)
        self.assertEqual(codes, [201] * CLIENTS)
        resp = await reg.client.get(f"{reg.url}/v2/{REPO}/manifests/shared")
        served = await body(resp)
        self.assertIn(served, [image.manifest for image in images])
        entries = [e for e in indexEntries(reg.root, REPO) if tagOf(e) == "shared"]
        self.assertEqual(len(entries), 1)
        self.assertEqual(entries[0]["digest"], digestOf(served))
        self.assertEqual(await tagsOf(reg, REPO), ["shared"])

    async def test_racingChunksOnOneSession(self):
        """
        Eight clients PATCH the same session at once, each claiming bytes
        0-9999 with different content: exactly one chunk is accepted (202),
        every other one is out of order (416), and the session then holds
        exactly the winner's bytes, which close into the right blob.
        """
        reg = await startRegistry(self)
        location = await startUpload(reg, REPO)
        chunks = [bytes([i]) * 10_000 for i in range(CLIENTS)]

        async def send(chunk):
            resp = await reg.client.patch(
                location,
                data=chunk,
                headers={
                    "Content-Type": ["application/octet-stream"],
                    "Content-Range": ["0-9999"],
                },
            )
            await body(resp)
            return resp.code

        codes = await gather(send(chunk) for chunk in chunks)
        self.assertEqual(sorted(codes), [202] + [416] * (CLIENTS - 1))
        winner = chunks[codes.index(202)]
        resp = await reg.client.get(location)
        await body(resp)
        self.assertEqual(resp.code, 204)
        self.assertEqual(header(resp, "Range"), "0-9999")
        resp = await reg.client.put(
            withQuery(resolve(reg, header(resp, "Location")), [("digest", digestOf(winner))]),
            data=b"",
        )
        await body(resp)
        self.assertEqual(resp.code, 201)
        resp = await reg.client.get(f"{reg.url}/v2/{REPO}/blobs/{digestOf(winner)}")
        self.assertEqual(await body(resp), winner)

    async def test_manyRepositoriesAtOnce(self):
        """
        Eight clients each creating their own repository at once all end up
        in the catalog with their tag.
        """
        reg = await startRegistry(self)
        repos = [f"conc/r{i}" for i in range(CLIENTS)]
        await gather(
            pushImage(reg, repo, "latest", f"repo {repo}") for repo in repos
        )
        resp = await reg.client.get(f"{reg.url}/v2/_catalog")
        document = json.loads(await body(resp))
        self.assertEqual(document["repositories"], sorted(repos))
        for repo in repos:
            self.assertEqual(await tagsOf(reg, repo), ["latest"])
