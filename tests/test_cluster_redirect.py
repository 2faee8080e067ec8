"""
Tests for C{storage.redirectBlobURL} in the web layer: a blob GET answers
307 with the store's presigned URL, HEAD is answered as before, and a blob
the repository does not hold is a 404 here, not a redirect.

The store is a local one with a C{blobURL} standing in for the S3
presigner (the presigned URLs themselves, and a GET of one from Ceph, are
in L{tests.test_cluster}).
"""

import os

from treq.client import HTTPClient
from twisted.internet import reactor
from twisted.internet.endpoints import TCP4ServerEndpoint
from twisted.trial.unittest import TestCase
from twisted.web.client import Agent, HTTPConnectionPool

from tests.apihelpers import assertError, body, header, pushBlob
from zotwist.storage.local import LocalStore
from zotwist.threads import InlineRunner
from zotwist.web.site import RegistrySite


class _PresigningStore(LocalStore):
    """
    A local store that also answers C{blobURL}, as the S3 store does.
    """

    async def blobURL(self, name: str, digest: str) -> str:
        """
        A recognisable URL naming the blob.
        """
        return f"http://objects.example/{name}/{digest}?X-Amz-Signature=abc"


class _Registry:
    """
    What L{pushBlob} needs of a registry: its C{url} and C{client}.
    """

    def __init__(self, url: str, client: HTTPClient) -> None:
        self.url = url
        self.client = client


class RedirectBlobTests(TestCase):
    """
    C{RegistrySite(..., redirectBlobs=True)}.
    """

    async def serve(self, redirectBlobs: bool) -> _Registry:
        """
        Serve a site on a presigning store on 127.0.0.1.
        """
        store = _PresigningStore(os.path.abspath(self.mktemp()), InlineRunner())
        await store.startService()
        site = RegistrySite(store, redirectBlobs=redirectBlobs)
        port = await TCP4ServerEndpoint(reactor, 0, interface="127.0.0.1").listen(site)
        self.addCleanup(port.stopListening)
        pool = HTTPConnectionPool(reactor, persistent=False)
        self.addCleanup(pool.closeCachedConnections)
        return _Registry(
            f"http://127.0.0.1:{port.getHost().port}", HTTPClient(Agent(reactor, pool=pool))
        )

    async def test_getRedirects(self):
        """
        A blob GET answers 307 with the presigned URL in C{Location} and
        the digest in C{Docker-Content-Digest}, and no body.
        """
        registry = await self.serve(redirectBlobs=True)
        digest = await pushBlob(registry, "team/app", b"redirect me")
        url = f"{registry.url}/v2/team/app/blobs/{digest}"
        response = await registry.client.get(url, allow_redirects=False)
        self.assertEqual(response.code, 307)
        self.assertEqual(
            header(response, "Location"),
            f"http://objects.example/team/app/{digest}?X-Amz-Signature=abc",
        )
        self.assertEqual(header(response, "Docker-Content-Digest"), digest)
        self.assertEqual(await body(response), b"")

    async def test_headUnchanged(self):
        """
        HEAD answers here, with the size, as without redirects.
        """
        registry = await self.serve(redirectBlobs=True)
        digest = await pushBlob(registry, "team/app", b"twelve bytes")
        response = await registry.client.head(
            f"{registry.url}/v2/team/app/blobs/{digest}", allow_redirects=False
        )
        self.assertEqual(response.code, 200)
        self.assertEqual(header(response, "Content-Length"), "12")
        self.assertEqual(header(response, "Docker-Content-Digest"), digest)

    async def test_unknownBlob(self):
        """
        A blob the repository does not hold is C{BLOB_UNKNOWN}, not a
        redirect; so is a blob of another repository.
        """
        registry = await self.serve(redirectBlobs=True)
        digest = await pushBlob(registry, "team/app", b"only in app")
        missing = "sha256:" + "0" * 64
        for repo, wanted in (("team/app", missing), ("team/other", digest)):
            response = await registry.client.get(
                f"{registry.url}/v2/{repo}/blobs/{wanted}", allow_redirects=False
            )
            await assertError(response, 404, "BLOB_UNKNOWN")

    async def test_offServesBytes(self):
        """
        Without C{redirectBlobURL} the bytes are served as always.
        """
        registry = await self.serve(redirectBlobs=False)
        digest = await pushBlob(registry, "team/app", b"served here")
        response = await registry.client.get(
            f"{registry.url}/v2/team/app/blobs/{digest}", allow_redirects=False
        )
        self.assertEqual(response.code, 200)
        self.assertEqual(await body(response), b"served here")
