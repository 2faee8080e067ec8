"""
HTTP API tests for content management: deleting tags, manifests (end-9) and
blobs (end-10), over loopback.  Deletes must be visible immediately (the
conformance suite's "atomic" setting; zot#1733).
"""

import json
import os

from twisted.trial import unittest

from tests.apihelpers import (
    EMPTY_CONFIG,
    OCI_EMPTY,
    OCI_MANIFEST,
    assertError,
    body,
    descriptor,
    digestOf,
    imageManifest,
    pushBlob,
    pushImage,
    pushManifest,
    status,
    tagsOf,
)
from tests.support import startRegistry

REPO = "del/repo"


def indexTags(root, repo):
    """
    @return: the tags recorded in C{<root>/<repo>/index.json}.
    """
    with open(os.path.join(root, repo, "index.json")) as f:
        index = json.load(f)
    return sorted(
        m["annotations"]["org.opencontainers.image.ref.name"]
        for m in index.get("manifests", [])
        if "org.opencontainers.image.ref.name" in (m.get("annotations") or {})
    )


class DeleteManifestTests(unittest.TestCase):
    """
    C{DELETE /v2/<name>/manifests/<reference>}.
    """

    async def test_deleteTag(self):
        """
        Deleting a tag answers 202; the tag then answers 404 and leaves the
        tags list and C{index.json}, while the manifest stays reachable by
        digest and through its other tags.
        """
        reg = await startRegistry(self)
        image = await pushImage(reg, REPO, "one", "untag")
        await pushManifest(reg, REPO, "two", image.manifest)
        resp = await reg.client.delete(f"{reg.url}/v2/{REPO}/manifests/one")
        await body(resp)
        self.assertEqual(resp.code, 202)
        resp = await reg.client.get(f"{reg.url}/v2/{REPO}/manifests/one")
        await assertError(resp, 404, "MANIFEST_UNKNOWN")
        for reference in [image.digest, "two"]:
            resp = await reg.client.get(f"{reg.url}/v2/{REPO}/manifests/{reference}")
            self.assertEqual(resp.code, 200, reference)
            self.assertEqual(await body(resp), image.manifest, reference)
        self.assertEqual(await tagsOf(reg, REPO), ["two"])
        self.assertEqual(indexTags(reg.root, REPO), ["two"])

    async def test_deleteByDigest(self):
        """
        Deleting a manifest by digest answers 202; afterwards the digest and
        every tag that pointed at it answer 404, and those tags are gone from
        the list, while other manifests are untouched.
        """
        reg = await startRegistry(self)
        image = await pushImage(reg, REPO, "one", "doomed")
        await pushManifest(reg, REPO, "two", image.manifest)
        keep = await pushImage(reg, REPO, "keep", "survivor")
        resp = await reg.client.delete(f"{reg.url}/v2/{REPO}/manifests/{image.digest}")
        await body(resp)
        self.assertEqual(resp.code, 202)
        for reference in [image.digest, "one", "two"]:
            resp = await reg.client.get(f"{reg.url}/v2/{REPO}/manifests/{reference}")
            await assertError(resp, 404, "MANIFEST_UNKNOWN")
            resp = await reg.client.head(f"{reg.url}/v2/{REPO}/manifests/{reference}")
            await body(resp)
            self.assertEqual(resp.code, 404, reference)
        self.assertEqual(await tagsOf(reg, REPO), ["keep"])
        self.assertEqual(indexTags(reg.root, REPO), ["keep"])
        resp = await reg.client.get(f"{reg.url}/v2/{REPO}/manifests/{keep.digest}")
        self.assertEqual(await body(resp), keep.manifest)

    async def test_deleteUnknownManifest(self):
        """
        Deleting a digest or tag the repository does not hold answers 404
        C{MANIFEST_UNKNOWN}.
        """
        reg = await startRegistry(self)
        await pushImage(reg, REPO, "present", "present")
        for reference in [digestOf(b"never pushed"), "absent"]:
            resp = await reg.client.delete(f"{reg.url}/v2/{REPO}/manifests/{reference}")
            await assertError(resp, 404, "MANIFEST_UNKNOWN")

    async def test_deleteInUnknownRepository(self):
        """
        Deleting a manifest in a repository that does not exist MUST answer
        404 (zot answers 400 here; the spec wins); C{NAME_UNKNOWN} or
        C{MANIFEST_UNKNOWN} are accepted.
        """
        reg = await startRegistry(self)
        resp = await reg.client.delete(
            f"{reg.url}/v2/no/such/repo/manifests/{digestOf(b'x')}"
        )
        await assertError(resp, 404, ("NAME_UNKNOWN", "MANIFEST_UNKNOWN"))

    async def test_deletedReferrerLeavesReferrers(self):
        """
        Once a referrer is deleted it no longer appears in the referrers
        list of its subject.
        """
        reg = await startRegistry(self)
        subject = await pushImage(reg, REPO, "base", "subject")
        await pushBlob(reg, REPO, EMPTY_CONFIG)
        referrer = imageManifest(
            descriptor(OCI_EMPTY, EMPTY_CONFIG),
            [descriptor(OCI_EMPTY, EMPTY_CONFIG)],
            artifactType="application/vnd.example.sig",
            subject=descriptor(OCI_MANIFEST, subject.manifest),
        )
        digest = await pushManifest(reg, REPO, digestOf(referrer), referrer)
        resp = await reg.client.delete(f"{reg.url}/v2/{REPO}/manifests/{digest}")
        await body(resp)
        self.assertEqual(resp.code, 202)
        resp = await reg.client.get(f"{reg.url}/v2/{REPO}/referrers/{subject.digest}")
        document = json.loads(await body(resp))
        self.assertEqual(resp.code, 200)
        self.assertEqual(document["manifests"], [])

    async def test_repushAfterDelete(self):
        """
        A deleted manifest can be pushed again and is served again.
        """
        reg = await startRegistry(self)
        image = await pushImage(reg, REPO, "again", "again")
        resp = await reg.client.delete(f"{reg.url}/v2/{REPO}/manifests/{image.digest}")
        await body(resp)
        self.assertEqual(resp.code, 202)
        await pushManifest(reg, REPO, "again", image.manifest)
        resp = await reg.client.get(f"{reg.url}/v2/{REPO}/manifests/again")
        self.assertEqual(await body(resp), image.manifest)


class DeleteBlobTests(unittest.TestCase):
    """
    C{DELETE /v2/<name>/blobs/<digest>}.
    """

    async def test_deleteBlob(self):
        """
        Deleting a blob answers 202; GET and HEAD then answer 404 (GET with
        C{BLOB_UNKNOWN}), immediately.
        """
        reg = await startRegistry(self)
        digest = await pushBlob(reg, REPO, b"delete this blob")
        resp = await reg.client.delete(f"{reg.url}/v2/{REPO}/blobs/{digest}")
        await body(resp)
        self.assertEqual(resp.code, 202)
        resp = await reg.client.get(f"{reg.url}/v2/{REPO}/blobs/{digest}")
        await assertError(resp, 404, "BLOB_UNKNOWN")
        self.assertEqual(
            await status(reg, "HEAD", f"{reg.url}/v2/{REPO}/blobs/{digest}"), 404
        )

    async def test_deleteBlobKeepsOtherRepository(self):
        """
        Deleting a blob from one repository leaves the same content in
        another repository intact (deduplicated storage must not share the
        delete).
        """
        reg = await startRegistry(self)
        data = b"shared content"
        digest = await pushBlob(reg, REPO, data)
        await pushBlob(reg, "del/other", data)
        resp = await reg.client.delete(f"{reg.url}/v2/{REPO}/blobs/{digest}")
        await body(resp)
        self.assertEqual(resp.code, 202)
        resp = await reg.client.get(f"{reg.url}/v2/del/other/blobs/{digest}")
        self.assertEqual(resp.code, 200)
        self.assertEqual(await body(resp), data)

    async def test_deleteUnknownBlob(self):
        """
        Deleting a blob that is not there answers 404 C{BLOB_UNKNOWN}; a
        second delete of a deleted blob too.
        """
        reg = await startRegistry(self)
        digest = await pushBlob(reg, REPO, b"once")
        resp = await reg.client.delete(f"{reg.url}/v2/{REPO}/blobs/{digest}")
        await body(resp)
        self.assertEqual(resp.code, 202)
        for target in [digest, digestOf(b"never")]:
            resp = await reg.client.delete(f"{reg.url}/v2/{REPO}/blobs/{target}")
            await assertError(resp, 404, "BLOB_UNKNOWN")

    async def test_deleteBlobInUnknownRepository(self):
        """
        Deleting a blob in a repository that does not exist answers 404
        (C{NAME_UNKNOWN} or C{BLOB_UNKNOWN}).
        """
        reg = await startRegistry(self)
        resp = await reg.client.delete(
            f"{reg.url}/v2/no/such/repo/blobs/{digestOf(b'x')}"
        )
        await assertError(resp, 404, ("NAME_UNKNOWN", "BLOB_UNKNOWN"))
