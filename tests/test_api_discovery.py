"""
HTTP API tests for content discovery: tags list (end-8a/8b), referrers
(end-12a/12b) and the C{_catalog} extension, over loopback.
"""

from typing import ClassVar

from twisted.trial import unittest

from tests.apihelpers import (
    EMPTY_CONFIG,
    OCI_CONFIG,
    OCI_EMPTY,
    OCI_INDEX,
    OCI_MANIFEST,
    assertError,
    descriptor,
    digestOf,
    header,
    imageIndex,
    imageManifest,
    jsonBody,
    linkNext,
    makeImage,
    mediaTypeOf,
    pushBlob,
    pushImage,
    pushManifest,
    queryOf,
    resolve,
)
from tests.support import startRegistry

REPO = "disc/repo"
#: Lower-case letters and digits only: lexical (case-insensitive) and
#: ASCIIbetical order agree on these, so either sort the spec allows works.
TAGS = ["v10", "a", "beta", "v2", "1.0", "latest", "z9", "m"]


async def pushTags(reg, repo, tags):
    """
    Push one small image and tag it with every name in C{tags} (by pushing
    the same manifest under each tag).
    """
    image = await pushImage(reg, repo, tags[0], "tags")
    for tag in tags[1:]:
        await pushManifest(reg, repo, tag, image.manifest)
    return image


class TagsListTests(unittest.TestCase):
    """
    C{GET /v2/<name>/tags/list} with and without C{n} and C{last}.
    """

    async def _list(self, reg, query=""):
        resp = await reg.client.get(f"{reg.url}/v2/{REPO}/tags/list{query}")
        document = await jsonBody(resp)
        self.assertEqual(resp.code, 200, document)
        self.assertEqual(document["name"], REPO)
        return resp, document["tags"]

    async def test_sorted(self):
        """
        The full list names every tag once, in lexical order, with the
        repository's name.
        """
        reg = await startRegistry(self)
        await pushTags(reg, REPO, TAGS)
        _, tags = await self._list(reg)
        self.assertEqual(tags, sorted(TAGS))

    async def test_mixedCaseOrder(self):
        """
        With mixed-case tags the spec allows lexical (case-insensitive) or
        ASCIIbetical (Go C{sort.Strings}) order; either is accepted.
        """
        reg = await startRegistry(self)
        mixed = ["b", "A", "a", "B", "c", "C1"]
        await pushTags(reg, REPO, mixed)
        _, tags = await self._list(reg)
        self.assertIn(tags, [sorted(mixed), sorted(mixed, key=str.lower)])
        self.assertEqual(sorted(tags), sorted(mixed))

    async def test_limit(self):
        """
        C{n=3} returns exactly the first three tags (fewer only if a Link is
        given, which is then honoured by the walk test).
        """
        reg = await startRegistry(self)
        await pushTags(reg, REPO, TAGS)
        resp, tags = await self._list(reg, "?n=3")
        if header(resp, "Link") is None:
            self.assertEqual(tags, sorted(TAGS)[:3])
        else:
            self.assertTrue(1 <= len(tags) <= 3, tags)
            self.assertEqual(tags, sorted(TAGS)[: len(tags)])

    async def test_limitZero(self):
        """
        C{n=0} MUST return an empty list and MUST NOT send a C{Link}.
        """
        reg = await startRegistry(self)
        await pushTags(reg, REPO, TAGS)
        resp, tags = await self._list(reg, "?n=0")
        self.assertEqual(tags, [])
        self.assertIsNone(header(resp, "Link"))

    async def test_last(self):
        """
        C{last} returns the tags strictly after that value, with or without
        C{n}.
        """
        reg = await startRegistry(self)
        await pushTags(reg, REPO, TAGS)
        ordered = sorted(TAGS)
        _, tags = await self._list(reg, "?last=beta")
        self.assertEqual(tags, ordered[ordered.index("beta") + 1 :])
        _, tags = await self._list(reg, "?n=2&last=beta")
        self.assertEqual(tags, ordered[ordered.index("beta") + 1 :][:2])

    async def test_lastNotATag(self):
        """
        C{last} is a value, not an index or a lookup key: a value that is
        not a tag still returns the tags that sort after it (zot answers 404
        here; the spec wins).
        """
        reg = await startRegistry(self)
        await pushTags(reg, REPO, TAGS)
        _, tags = await self._list(reg, "?last=c")
        self.assertEqual(tags, [t for t in sorted(TAGS) if t > "c"])

    async def test_linkHeader(self):
        """
        When C{n} cuts the list short the registry sends C{Link: </v2/<name>
        /tags/list?n=<n>&last=<last tag>>; rel="next"}.
        """
        reg = await startRegistry(self)
        await pushTags(reg, REPO, TAGS)
        resp, tags = await self._list(reg, "?n=3")
        link = linkNext(resp)
        self.assertIsNotNone(link)
        self.assertTrue(resolve(reg, link).startswith(f"{reg.url}/v2/{REPO}/tags/list?"))
        self.assertEqual(queryOf(link), {"n": "3", "last": tags[-1]})

    async def test_walkLinks(self):
        """
        Following C{Link rel="next"} from C{n=3} visits every tag exactly
        once, in order, and stops.
        """
        reg = await startRegistry(self)
        await pushTags(reg, REPO, TAGS)
        url = f"{reg.url}/v2/{REPO}/tags/list?n=3"
        seen = []
        for _ in range(len(TAGS) + 2):
            resp = await reg.client.get(url)
            document = await jsonBody(resp)
            self.assertEqual(resp.code, 200)
            self.assertLessEqual(len(document["tags"]), 3)
            seen.extend(document["tags"])
            link = linkNext(resp)
            if link is None:
                break
            url = resolve(reg, link)
        else:
            self.fail("Link pagination did not terminate")
        self.assertEqual(seen, sorted(TAGS))

    async def test_unknownRepository(self):
        """
        The tags list of a repository that does not exist answers 404
        C{NAME_UNKNOWN}.
        """
        reg = await startRegistry(self)
        resp = await reg.client.get(f"{reg.url}/v2/no/such/repo/tags/list")
        await assertError(resp, 404, "NAME_UNKNOWN")


class ReferrersTests(unittest.TestCase):
    """
    C{GET /v2/<name>/referrers/<digest>} (end-12a) and its C{artifactType}
    filter (end-12b).
    """

    async def _referrers(self, reg, repo, digest, query=""):
        resp = await reg.client.get(
            f"{reg.url}/v2/{repo}/referrers/{digest}{query}"
        )
        document = await jsonBody(resp)
        self.assertEqual(resp.code, 200, document)
        self.assertEqual(mediaTypeOf(resp), OCI_INDEX)
        self.assertEqual(document["schemaVersion"], 2)
        self.assertEqual(document["mediaType"], OCI_INDEX)
        self.assertIsInstance(document["manifests"], list)
        return resp, document

    async def _pushReferrers(self, reg):
        """
        Push a subject image and three referrers: an SBOM artifact with
        C{artifactType}, a signature without one (its config media type must
        stand in) and an index with a subject and no C{artifactType}.

        @return: (subject image, {name: (digest, bytes)}).
        """
        subject = await pushImage(reg, REPO, "base", "subject")
        subjectDescriptor = descriptor(OCI_MANIFEST, subject.manifest)
        await pushBlob(reg, REPO, EMPTY_CONFIG)
        sbomPayload = b"sbom payload"
        await pushBlob(reg, REPO, sbomPayload)
        sbom = imageManifest(
            descriptor(OCI_EMPTY, EMPTY_CONFIG),
            [descriptor("application/vnd.example.sbom.v1+json", sbomPayload)],
            artifactType="application/vnd.example.sbom.v1",
            subject=subjectDescriptor,
            annotations={"org.example.kind": "sbom", "created": "2024-01-01"},
        )
        sigConfig = b'{"signature":"config"}'
        await pushBlob(reg, REPO, sigConfig)
        signature = imageManifest(
            descriptor("application/vnd.example.sig.config.v1+json", sigConfig),
            [descriptor(OCI_EMPTY, EMPTY_CONFIG)],
            subject=subjectDescriptor,
            annotations={"org.example.kind": "signature"},
        )
        child = await pushImage(reg, REPO, None, "index child")
        index = imageIndex(
            [descriptor(OCI_MANIFEST, child.manifest)],
            subject=subjectDescriptor,
            annotations={"org.example.kind": "index"},
        )
        referrers = {}
        for name, data, mediaType in [
            ("sbom", sbom, OCI_MANIFEST),
            ("signature", signature, OCI_MANIFEST),
            ("index", index, OCI_INDEX),
        ]:
            referrers[name] = (
                await pushManifest(reg, REPO, digestOf(data), data, mediaType),
                data,
                mediaType,
            )
        return subject, referrers

    async def test_listsReferrers(self):
        """
        Every manifest whose C{subject} is the digest is listed with
        mediaType, size, digest, C{artifactType} (the manifest's own, else
        its config media type, omitted for an index without one) and all of
        its annotations.
        """
        reg = await startRegistry(self)
        subject, referrers = await self._pushReferrers(reg)
        _, document = await self._referrers(reg, REPO, subject.digest)
        byDigest = {d["digest"]: d for d in document["manifests"]}
        self.assertEqual(
            set(byDigest), {digest for digest, _, _ in referrers.values()}
        )
        expectations = {
            "sbom": ("application/vnd.example.sbom.v1", "sbom"),
            "signature": ("application/vnd.example.sig.config.v1+json", "signature"),
            "index": (None, "index"),
        }
        for name, (digest, data, mediaType) in referrers.items():
            entry = byDigest[digest]
            artifactType, kind = expectations[name]
            self.assertEqual(entry["mediaType"], mediaType, name)
            self.assertEqual(entry["size"], len(data), name)
            self.assertEqual(entry.get("artifactType"), artifactType, name)
            self.assertEqual(entry["annotations"]["org.example.kind"], kind, name)
        self.assertEqual(
            byDigest[referrers["sbom"][0]]["annotations"],
            {"org.example.kind": "sbom", "created": "2024-01-01"},
        )

    async def test_filterByArtifactType(self):
        """
        C{?artifactType=} keeps only matching descriptors and, since the
        filter was applied, answers C{OCI-Filters-Applied: artifactType}.
        """
        reg = await startRegistry(self)
        subject, referrers = await self._pushReferrers(reg)
        resp, document = await self._referrers(
            reg,
            REPO,
            subject.digest,
            "?artifactType=application/vnd.example.sbom.v1",
        )
        self.assertEqual(
            [d["digest"] for d in document["manifests"]], [referrers["sbom"][0]]
        )
        self.assertEqual(header(resp, "OCI-Filters-Applied"), "artifactType")
        resp, document = await self._referrers(
            reg, REPO, subject.digest, "?artifactType=application/vnd.example.none"
        )
        self.assertEqual(document["manifests"], [])
        self.assertEqual(header(resp, "OCI-Filters-Applied"), "artifactType")

    async def test_noReferrers(self):
        """
        A digest nothing refers to answers 200 with an empty image index and
        no filter header.
        """
        reg = await startRegistry(self)
        image = await pushImage(reg, REPO, "lonely", "lonely")
        resp, document = await self._referrers(reg, REPO, image.digest)
        self.assertEqual(document["manifests"], [])
        self.assertIsNone(header(resp, "OCI-Filters-Applied"))

    async def test_unknownRepository(self):
        """
        A registry supporting referrers MUST NOT answer 404 to a referrers
        request; for a repository that does not exist the answer is 200
        with an empty index (as zot does).
        """
        reg = await startRegistry(self)
        _, document = await self._referrers(
            reg, "no/such/repo", digestOf(b"whatever")
        )
        self.assertEqual(document["manifests"], [])

    async def test_subjectPushedLater(self):
        """
        A referrer pushed before its subject is listed once the subject
        exists, and already before (the registry MUST accept either order).
        """
        reg = await startRegistry(self)
        subject = makeImage("later subject")
        await pushBlob(reg, REPO, EMPTY_CONFIG)
        referrer = imageManifest(
            descriptor(OCI_EMPTY, EMPTY_CONFIG),
            [descriptor(OCI_EMPTY, EMPTY_CONFIG)],
            artifactType="application/vnd.example.early",
            subject=descriptor(OCI_MANIFEST, subject.manifest),
        )
        referrerDigest = await pushManifest(
            reg, REPO, digestOf(referrer), referrer
        )
        _, document = await self._referrers(reg, REPO, subject.digest)
        self.assertEqual(
            [d["digest"] for d in document["manifests"]], [referrerDigest]
        )
        await pushBlob(reg, REPO, subject.config)
        await pushBlob(reg, REPO, subject.layers[0])
        await pushManifest(reg, REPO, "later", subject.manifest)
        _, document = await self._referrers(reg, REPO, subject.digest)
        self.assertEqual(
            [d["digest"] for d in document["manifests"]], [referrerDigest]
        )

    async def test_otherSubjectsNotListed(self):
        """
        Only manifests whose subject is this digest are listed: referrers of
        another subject and manifests without subject are not.
        """
        reg = await startRegistry(self)
        first = await pushImage(reg, REPO, "first", "first")
        second = await pushImage(reg, REPO, "second", "second")
        config = b'{"ref":"config"}'
        await pushBlob(reg, REPO, config)
        referrer = imageManifest(
            descriptor(OCI_CONFIG, config),
            [],
            subject=descriptor(OCI_MANIFEST, second.manifest),
        )
        await pushManifest(reg, REPO, digestOf(referrer), referrer)
        _, document = await self._referrers(reg, REPO, first.digest)
        self.assertEqual(document["manifests"], [])
        _, document = await self._referrers(reg, REPO, second.digest)
        self.assertEqual(
            [d["digest"] for d in document["manifests"]], [digestOf(referrer)]
        )

    async def test_malformedDigest(self):
        """
        A referrers request whose digest does not parse MUST answer 400.
        """
        reg = await startRegistry(self)
        await pushImage(reg, REPO, "base", "malformed")
        for bad in ["sha256:xyz", "notadigest", "sha256:" + "a" * 63]:
            resp = await reg.client.get(f"{reg.url}/v2/{REPO}/referrers/{bad}")
            try:
                await assertError(resp, 400)
            except AssertionError as e:
                self.fail(f"referrers/{bad}: {e}")


class CatalogTests(unittest.TestCase):
    """
    C{GET /v2/_catalog} (the reserved extension every client expects).
    """

    REPOS: ClassVar[list[str]] = ["alpha", "beta/one", "beta/two", "gamma", "delta/x/y"]

    async def _push(self, reg):
        for repo in self.REPOS:
            await pushImage(reg, repo, "latest", f"catalog {repo}")

    async def test_catalog(self):
        """
        The catalog lists every repository once, sorted.
        """
        reg = await startRegistry(self)
        await self._push(reg)
        resp = await reg.client.get(f"{reg.url}/v2/_catalog")
        document = await jsonBody(resp)
        self.assertEqual(resp.code, 200)
        self.assertEqual(document["repositories"], sorted(self.REPOS))

    async def test_emptyCatalog(self):
        """
        A fresh registry has an empty catalog (200, empty list).
        """
        reg = await startRegistry(self)
        resp = await reg.client.get(f"{reg.url}/v2/_catalog")
        document = await jsonBody(resp)
        self.assertEqual(resp.code, 200)
        self.assertEqual(document["repositories"], [])

    async def test_paginate(self):
        """
        C{n} limits the page and sends C{Link: </v2/_catalog?n=<n>&last=<repo>>;
        rel="next"}; C{last} starts strictly after a name; following the links
        visits every repository once, in order.
        """
        reg = await startRegistry(self)
        await self._push(reg)
        ordered = sorted(self.REPOS)
        resp = await reg.client.get(f"{reg.url}/v2/_catalog?n=2")
        document = await jsonBody(resp)
        self.assertEqual(document["repositories"], ordered[:2])
        link = linkNext(resp)
        self.assertIsNotNone(link)
        self.assertTrue(resolve(reg, link).startswith(f"{reg.url}/v2/_catalog?"))
        self.assertEqual(queryOf(link), {"n": "2", "last": ordered[1]})

        resp = await reg.client.get(f"{reg.url}/v2/_catalog?last={ordered[1]}")
        document = await jsonBody(resp)
        self.assertEqual(document["repositories"], ordered[2:])

        url, seen = f"{reg.url}/v2/_catalog?n=2", []
        for _ in range(len(ordered) + 2):
            resp = await reg.client.get(url)
            document = await jsonBody(resp)
            self.assertEqual(resp.code, 200)
            seen.extend(document["repositories"])
            link = linkNext(resp)
            if link is None:
                break
            url = resolve(reg, link)
        else:
            self.fail("catalog pagination did not terminate")
        self.assertEqual(seen, ordered)
