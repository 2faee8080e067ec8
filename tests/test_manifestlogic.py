"""
Tests for L{zotwist.storage.manifestlogic}: the manifest rules the local and
the S3 store share (their stores' own tests cover them end to end).
"""

import json

from twisted.internet.defer import Deferred, ensureDeferred, succeed
from twisted.trial.unittest import SynchronousTestCase

from zotwist import oci
from zotwist.errors import ManifestBlobsUnknown, RegistryError
from zotwist.manifests import parseManifest
from zotwist.storage import manifestlogic
from zotwist.storage.index import RepositoryIndex
from zotwist.storage.manifestlogic import ManifestCache

CONFIG_TYPE = "application/vnd.oci.image.config.v1+json"
LAYER_TYPE = "application/vnd.oci.image.layer.v1.tar+gzip"


def digest(n: int) -> str:
    """
    A distinct, valid sha256 digest per C{n}.
    """
    return oci.digestOf(str(n).encode())


def image(layers=(1,), artifactType=None, subject=None) -> bytes:
    """
    The body of an image manifest with config C{digest(0)} and the given
    layers.
    """
    document = {
        "schemaVersion": 2,
        "mediaType": oci.OCI_MANIFEST,
        "config": {"mediaType": CONFIG_TYPE, "digest": digest(0), "size": 2},
        "layers": [{"mediaType": LAYER_TYPE, "digest": digest(n), "size": 3} for n in layers],
    }
    if artifactType is not None:
        document["artifactType"] = artifactType
    if subject is not None:
        document["subject"] = {"mediaType": oci.OCI_MANIFEST, "digest": subject, "size": 1}
    return json.dumps(document).encode()


def indexOf(children) -> bytes:
    """
    The body of an image index listing C{children} (digests).
    """
    return json.dumps({
        "schemaVersion": 2,
        "mediaType": oci.OCI_INDEX,
        "manifests": [{"mediaType": oci.OCI_MANIFEST, "digest": d, "size": 1} for d in children],
    }).encode()


def parsed(body: bytes):
    """
    The parsed form of C{body}, under its sha256.
    """
    return parseManifest(body, None, oci.digestOf(body))


def repository(*manifests, tags=()) -> RepositoryIndex:
    """
    A readers' index listing C{manifests} (bodies), the first one tagged
    with each of C{tags}.
    """
    entries = []
    for body in manifests:
        entries.append({
            "mediaType": oci.OCI_MANIFEST, "digest": oci.digestOf(body), "size": len(body),
        })
    for tag in tags:
        entries.append(dict(entries[0], annotations={oci.REF_NAME: tag}))
    return RepositoryIndex.fromManifests(("",), entries)


class InlineRunner:
    """
    A runner that runs the call right away, and counts the calls.
    """

    def __init__(self):
        self.calls = 0

    def run(self, f, *args):
        self.calls += 1
        return succeed(f(*args))


class ReferenceTests(SynchronousTestCase):
    """
    L{manifestlogic.resolve}, L{manifestlogic.requireDescriptor},
    L{manifestlogic.requireRepository} and L{manifestlogic.statOf}.
    """

    def test_resolveTagAndDigest(self):
        """
        A tag and a digest both name the tagged manifest; an unknown one
        names nothing.
        """
        body = image()
        index = repository(body, tags=["latest"])
        self.assertEqual(manifestlogic.resolve(index, "latest")["digest"], oci.digestOf(body))
        self.assertEqual(
            manifestlogic.resolve(index, oci.digestOf(body))["digest"], oci.digestOf(body)
        )
        self.assertIsNone(manifestlogic.resolve(index, "other"))
        self.assertIsNone(manifestlogic.resolve(index, digest(9)))

    def test_resolveInvalid(self):
        """
        A malformed tag or digest is the client's mistake, not an unknown
        manifest.
        """
        index = repository(image())
        e = self.assertRaises(RegistryError, manifestlogic.resolve, index, "-bad")
        self.assertEqual(e.code, "TAG_INVALID")
        e = self.assertRaises(RegistryError, manifestlogic.resolve, index, "sha256:abc")
        self.assertEqual(e.code, "DIGEST_INVALID")

    def test_requireDescriptor(self):
        """
        Nothing named is C{MANIFEST_UNKNOWN} with the reference.
        """
        e = self.assertRaises(
            RegistryError, manifestlogic.requireDescriptor, repository(image()), "nope"
        )
        self.assertEqual((e.code, e.detail), ("MANIFEST_UNKNOWN", {"reference": "nope"}))

    def test_requireRepository(self):
        """
        No index is C{NAME_UNKNOWN} with the name; an index is answered.
        """
        e = self.assertRaises(RegistryError, manifestlogic.requireRepository, None, "a/b")
        self.assertEqual((e.code, e.detail), ("NAME_UNKNOWN", {"name": "a/b"}))
        index = repository(image())
        self.assertIs(manifestlogic.requireRepository(index, "a/b"), index)

    def test_statOf(self):
        """
        A HEAD answers the held size, the media type and the digest; bytes
        gone are C{MANIFEST_UNKNOWN}.
        """
        body = image()
        index = repository(body, tags=["v1"])
        sizes = {oci.digestOf(body): 77}
        result = self.successResultOf(ensureDeferred(
            manifestlogic.statOf(index, "v1", lambda d: succeed(sizes.get(d)))
        ))
        self.assertEqual(result, (77, oci.OCI_MANIFEST, oci.digestOf(body)))
        sizes.clear()
        failure = self.failureResultOf(ensureDeferred(
            manifestlogic.statOf(index, "v1", lambda d: succeed(sizes.get(d)))
        ), RegistryError)
        self.assertEqual(failure.value.code, "MANIFEST_UNKNOWN")

    def test_pulledKeys(self):
        """
        A pull by tag counts for the tag and the digest; by digest, for the
        digest once.
        """
        self.assertEqual(manifestlogic.pulledKeys("v1", digest(1)), ("v1", digest(1)))
        self.assertEqual(manifestlogic.pulledKeys(digest(1), digest(1)), (digest(1),))


class PushTests(SynchronousTestCase):
    """
    What a manifest PUT is checked against before any storage is touched.
    """

    def test_tagReference(self):
        """
        A tag reference comes first among the tags, repeats go, and the
        digest is the body's sha256.
        """
        body = image()
        found, tags = manifestlogic.pushTarget(body, "v1", ["v2", "v1", "v2"])
        self.assertEqual(found, oci.digestOf(body, "sha256"))
        self.assertEqual(tags, ["v1", "v2"])

    def test_digestReference(self):
        """
        A digest reference is the body's digest in its own algorithm.
        """
        body = image()
        reference = oci.digestOf(body, "sha512")
        self.assertEqual(manifestlogic.pushTarget(body, reference, ()), (reference, []))

    def test_digestMismatch(self):
        """
        A digest reference the body does not have is C{DIGEST_INVALID},
        naming both.
        """
        body = image()
        e = self.assertRaises(RegistryError, manifestlogic.pushTarget, body, digest(5), ())
        self.assertEqual(e.code, "DIGEST_INVALID")
        self.assertEqual(e.detail, {"expected": digest(5), "actual": oci.digestOf(body)})

    def test_invalidExtraTag(self):
        """
        Every extra tag is validated.
        """
        e = self.assertRaises(RegistryError, manifestlogic.pushTarget, image(), "v1", ["-x"])
        self.assertEqual(e.code, "TAG_INVALID")

    def test_parseInPoolOnlyWhenLarge(self):
        """
        A small manifest is parsed inline; one above the limit in the pool.
        """
        runner = InlineRunner()
        small = image()
        info = self.successResultOf(ensureDeferred(
            manifestlogic.parsePushed(runner, small, None, oci.digestOf(small))
        ))
        self.assertEqual((info.digest, runner.calls), (oci.digestOf(small), 0))
        large = image(layers=range(1, 800))
        self.assertGreater(len(large), manifestlogic.PARSE_INLINE_LIMIT)
        info = self.successResultOf(ensureDeferred(
            manifestlogic.parsePushed(runner, large, None, oci.digestOf(large))
        ))
        self.assertEqual((info.digest, runner.calls), (oci.digestOf(large), 1))

    def test_neededDigests(self):
        """
        Blobs always need checking; an index's children only when the
        repository does not list them yet; all are referenced.
        """
        info = parsed(indexOf([digest(1), digest(2)]))
        self.assertEqual(manifestlogic.neededDigests(info, {digest(1): {}}), [digest(2)])
        self.assertEqual(manifestlogic.referencedDigests(info), [digest(1), digest(2)])
        info = parsed(image(layers=(1, 2)))
        self.assertEqual(
            manifestlogic.neededDigests(info, {digest(1): {}}), [digest(0), digest(1), digest(2)]
        )

    def test_refuseAbsent(self):
        """
        Missing digests are refused once each, in order; none is fine.
        """
        manifestlogic.refuseAbsent([])
        e = self.assertRaises(
            ManifestBlobsUnknown, manifestlogic.refuseAbsent, [digest(2), digest(1), digest(2)]
        )
        self.assertEqual(e.digests, [digest(2), digest(1)])

    def test_descriptorArtifactType(self):
        """
        An image manifest's artifactType is recorded only when it is not
        just its config's media type; an index's descriptor carries none.
        """
        body = image(artifactType="application/x-sbom")
        info = parsed(body)
        self.assertEqual(
            manifestlogic.descriptorFor(info, info.digest, len(body)),
            {"mediaType": oci.OCI_MANIFEST, "digest": info.digest, "size": len(body),
             "artifactType": "application/x-sbom"},
        )
        for body in (image(), image(artifactType=CONFIG_TYPE)):
            info = parsed(body)
            self.assertNotIn("artifactType", manifestlogic.descriptorFor(info, info.digest, 1))
        info = parsed(indexOf([digest(1)]))
        self.assertEqual(
            manifestlogic.descriptorFor(info, info.digest, 5),
            {"mediaType": oci.OCI_INDEX, "digest": info.digest, "size": 5},
        )

    def test_holdsDigest(self):
        """
        Bytes count only when they are there and have the digest.
        """
        self.assertTrue(manifestlogic.holdsDigest(b"x", oci.digestOf(b"x", "sha512")))
        self.assertFalse(manifestlogic.holdsDigest(b"y", oci.digestOf(b"x")))
        self.assertFalse(manifestlogic.holdsDigest(None, oci.digestOf(b"x")))


class ManifestCacheTests(SynchronousTestCase):
    """
    L{ManifestCache} in front of a store's loader.
    """

    def setUp(self):
        self.bodies: dict = {}
        self.loads: list = []
        self.cache = ManifestCache(self.load)

    def load(self, name, found):
        """
        The store's loader: what C{self.bodies} holds, noting each call.
        """
        self.loads.append((name, found))
        return succeed(self.bodies.get(found))

    def test_bodyLoadedOnce(self):
        """
        Bytes the loader answers are kept; nothing answered is asked again.
        """
        body = image()
        self.bodies[oci.digestOf(body)] = body
        for _ in range(2):
            got = self.successResultOf(ensureDeferred(self.cache.body("r", oci.digestOf(body))))
            self.assertEqual(got, body)
        self.assertEqual(self.loads, [("r", oci.digestOf(body))])
        for _ in range(2):
            self.assertIsNone(
                self.successResultOf(ensureDeferred(self.cache.body("r", digest(3))))
            )
        self.assertEqual(len(self.loads), 3)

    def test_remembered(self):
        """
        A remembered manifest needs no load, nor a parse.
        """
        body = image()
        info = parsed(body)
        self.cache.remember(info.digest, body, info)
        self.assertIs(
            self.successResultOf(ensureDeferred(self.cache.info("r", info.digest, None))), info
        )
        self.assertEqual(self.loads, [])

    def test_infoUnparsable(self):
        """
        Bytes that do not parse as a manifest have no info.
        """
        self.bodies[oci.digestOf(b"[]")] = b"[]"
        self.assertIsNone(
            self.successResultOf(ensureDeferred(self.cache.info("r", oci.digestOf(b"[]"), None)))
        )

    def test_read(self):
        """
        A GET answers the bytes, the media type and the digest; bytes gone
        are C{MANIFEST_UNKNOWN}.
        """
        body = image()
        index = repository(body, tags=["v1"])
        self.bodies[oci.digestOf(body)] = body
        self.assertEqual(
            self.successResultOf(ensureDeferred(self.cache.read("r", index, "v1"))),
            (body, oci.OCI_MANIFEST, oci.digestOf(body)),
        )
        other = image(layers=(2,))
        index = repository(other, tags=["v2"])
        failure = self.failureResultOf(
            ensureDeferred(self.cache.read("r", index, "v2")), RegistryError
        )
        self.assertEqual(failure.value.code, "MANIFEST_UNKNOWN")

    def test_referrers(self):
        """
        Manifests are listed under their subject, and the mapping is kept
        on the index.
        """
        subject = image()
        sbom = image(layers=(4,), subject=oci.digestOf(subject))
        for body in (subject, sbom):
            self.bodies[oci.digestOf(body)] = body
        index = repository(subject, sbom)
        found = self.successResultOf(ensureDeferred(
            self.cache.referrers("r", index, oci.digestOf(subject))
        ))
        self.assertEqual([i.digest for i in found], [oci.digestOf(sbom)])
        self.assertIsNotNone(index.referrersByDigest)
        self.assertEqual(self.successResultOf(ensureDeferred(
            self.cache.referrers("r", index, oci.digestOf(sbom))
        )), [])

    def test_referrersIndexChanged(self):
        """
        A mapping computed while the index changed is answered but not
        kept on the index.
        """
        subject = image()
        sbom = image(layers=(4,), subject=oci.digestOf(subject))
        self.bodies[oci.digestOf(subject)] = subject
        index = repository(subject, sbom)
        pending = Deferred()
        cache = ManifestCache(
            lambda name, d: pending if d == oci.digestOf(sbom) else succeed(self.bodies.get(d))
        )
        d = ensureDeferred(cache.referrers("r", index, oci.digestOf(subject)))
        self.assertNoResult(d)
        index.changed()
        pending.callback(sbom)
        self.assertEqual([i.digest for i in self.successResultOf(d)], [oci.digestOf(sbom)])
        self.assertIsNone(index.referrersByDigest)
