"""
Tests for L{zotwist.manifests}: parsing and validating manifest bodies.
"""

import json

from twisted.trial.unittest import SynchronousTestCase

from zotwist import oci
from zotwist.errors import RegistryError
from zotwist.manifests import Descriptor, normaliseContentType, parseManifest

CONFIG_TYPE = "application/vnd.oci.image.config.v1+json"
LAYER_TYPE = "application/vnd.oci.image.layer.v1.tar+gzip"
DOCKER_CONFIG = "application/vnd.docker.container.image.v1+json"
DOCKER_LAYER = "application/vnd.docker.image.rootfs.diff.tar.gzip"
OCI_FOREIGN = "application/vnd.oci.image.layer.nondistributable.v1.tar+gzip"
DOCKER_FOREIGN = "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip"


def digest(n: int) -> str:
    """
    A distinct, valid sha256 digest per C{n}.
    """
    return oci.digestOf(str(n).encode())


def desc(mediaType: str, n: int, size: int = 10, **extra) -> dict:
    """
    A descriptor dict.
    """
    d = {"mediaType": mediaType, "digest": digest(n), "size": size}
    d.update(extra)
    return d


def encode(document) -> bytes:
    """
    The body of C{document}.
    """
    return json.dumps(document).encode()


def parse(document, contentType=None, body=None):
    """
    Parse C{document} (or the raw C{body}) with the digest of its body.
    """
    if body is None:
        body = encode(document)
    return parseManifest(body, contentType, oci.digestOf(body))


def imageDocument(mediaType=oci.OCI_MANIFEST, configType=CONFIG_TYPE, layerType=LAYER_TYPE,
                  **extra):
    """
    An image manifest document with one config and two layers.
    """
    document = {
        "schemaVersion": 2,
        "mediaType": mediaType,
        "config": desc(configType, 1),
        "layers": [desc(layerType, 2, 100), desc(layerType, 3, 200)],
    }
    document.update(extra)
    return document


def indexDocument(mediaType=oci.OCI_INDEX, childType=oci.OCI_MANIFEST, **extra):
    """
    An index document with two children.
    """
    document = {
        "schemaVersion": 2,
        "mediaType": mediaType,
        "manifests": [
            desc(childType, 10, 500, platform={"os": "linux", "architecture": "amd64"}),
            desc(childType, 11, 501),
        ],
    }
    document.update(extra)
    return document


class ParseManifestTests(SynchronousTestCase):
    """
    L{parseManifest} on each media type.
    """

    def test_ociManifest(self):
        """
        An OCI image manifest needs its config and layers as blobs, has no
        children, and its size and digest are those of the body.
        """
        body = encode(imageDocument())
        info = parseManifest(body, oci.OCI_MANIFEST, "sha256:" + "f" * 64)
        self.assertEqual(info.mediaType, oci.OCI_MANIFEST)
        self.assertEqual(info.digest, "sha256:" + "f" * 64)
        self.assertEqual(info.size, len(body))
        self.assertEqual(
            info.blobs,
            (Descriptor(CONFIG_TYPE, digest(1), 10),
             Descriptor(LAYER_TYPE, digest(2), 100),
             Descriptor(LAYER_TYPE, digest(3), 200)),
        )
        self.assertEqual(info.children, ())
        self.assertIsNone(info.subject)
        self.assertEqual(info.annotations, {})

    def test_ociIndex(self):
        """
        An OCI index lists its manifests as children and needs no blobs.
        """
        info = parse(indexDocument(), oci.OCI_INDEX)
        self.assertEqual(info.mediaType, oci.OCI_INDEX)
        self.assertEqual(info.blobs, ())
        self.assertEqual([c.digest for c in info.children], [digest(10), digest(11)])
        self.assertEqual([c.size for c in info.children], [500, 501])
        self.assertEqual({c.mediaType for c in info.children}, {oci.OCI_MANIFEST})
        self.assertIsNone(info.artifactType)

    def test_dockerManifest(self):
        """
        A Docker schema 2 manifest is an image manifest.
        """
        document = imageDocument(oci.DOCKER_MANIFEST, DOCKER_CONFIG, DOCKER_LAYER)
        info = parse(document, oci.DOCKER_MANIFEST)
        self.assertEqual(info.mediaType, oci.DOCKER_MANIFEST)
        self.assertEqual([b.digest for b in info.blobs], [digest(1), digest(2), digest(3)])
        self.assertEqual(info.children, ())
        self.assertEqual(info.artifactType, DOCKER_CONFIG)

    def test_dockerManifestList(self):
        """
        A Docker manifest list is an index.
        """
        info = parse(indexDocument(oci.DOCKER_LIST, oci.DOCKER_MANIFEST), oci.DOCKER_LIST)
        self.assertEqual(info.mediaType, oci.DOCKER_LIST)
        self.assertEqual(info.blobs, ())
        self.assertEqual(len(info.children), 2)

    def test_mediaTypeFromBodyWithoutContentType(self):
        """
        Without a Content-Type (or with a generic one) the body's
        C{mediaType} decides.
        """
        for contentType in [None, "application/json", "application/octet-stream", ""]:
            self.assertEqual(parse(indexDocument(), contentType).mediaType, oci.OCI_INDEX)
            self.assertEqual(
                parse(imageDocument(oci.DOCKER_MANIFEST), contentType).mediaType,
                oci.DOCKER_MANIFEST,
            )

    def test_mediaTypeFromContentTypeWithoutBodyField(self):
        """
        A body without C{mediaType} takes the Content-Type's.
        """
        document = imageDocument()
        del document["mediaType"]
        self.assertEqual(parse(document, oci.DOCKER_MANIFEST).mediaType, oci.DOCKER_MANIFEST)

    def test_mediaTypeGuessedFromShape(self):
        """
        With neither, C{manifests} means an OCI index and C{config} an OCI
        image manifest; a body with neither is C{MANIFEST_INVALID}.
        """
        image = imageDocument()
        del image["mediaType"]
        index = indexDocument()
        del index["mediaType"]
        self.assertEqual(parse(image).mediaType, oci.OCI_MANIFEST)
        self.assertEqual(parse(index).mediaType, oci.OCI_INDEX)
        self.assertInvalid({"schemaVersion": 2})

    def test_artifactTypeFallsBackToConfig(self):
        """
        An image manifest without C{artifactType} reports its config's
        media type.
        """
        info = parse(imageDocument(configType=oci.OCI_EMPTY), oci.OCI_MANIFEST)
        self.assertEqual(info.artifactType, oci.OCI_EMPTY)

    def test_artifactTypeExplicit(self):
        """
        An explicit C{artifactType} wins over the config media type, on
        image manifests and on indexes.
        """
        image = parse(
            imageDocument(configType=oci.OCI_EMPTY, artifactType="application/x.sig"),
            oci.OCI_MANIFEST,
        )
        self.assertEqual(image.artifactType, "application/x.sig")
        index = parse(indexDocument(artifactType="application/x.sbom"), oci.OCI_INDEX)
        self.assertEqual(index.artifactType, "application/x.sbom")

    def test_subject(self):
        """
        A C{subject} descriptor is parsed, on image manifests and indexes.
        """
        subject = desc(oci.OCI_MANIFEST, 42, 1234)
        info = parse(imageDocument(subject=subject), oci.OCI_MANIFEST)
        self.assertEqual(info.subject, Descriptor(oci.OCI_MANIFEST, digest(42), 1234))
        info = parse(indexDocument(subject=subject), oci.OCI_INDEX)
        self.assertEqual(info.subject.digest, digest(42))
        self.assertIsNone(parse(imageDocument(subject=None)).subject)

    def test_badSubject(self):
        """
        A subject that is not a valid descriptor is C{MANIFEST_INVALID}.
        """
        self.assertInvalid(imageDocument(subject="sha256:" + "0" * 64))
        self.assertInvalid(imageDocument(subject={"mediaType": oci.OCI_MANIFEST, "size": 1}))

    def test_nonDistributableLayersExcluded(self):
        """
        Non-distributable (OCI) and foreign (Docker) layers are not in
        C{blobs}: the registry need not hold them.
        """
        document = imageDocument()
        document["layers"] = [
            desc(OCI_FOREIGN, 20), desc(LAYER_TYPE, 21), desc(DOCKER_FOREIGN, 22),
        ]
        info = parse(document, oci.OCI_MANIFEST)
        self.assertEqual([b.digest for b in info.blobs], [digest(1), digest(21)])

    def test_emptyOrNullLayers(self):
        """
        An empty or null layer list leaves just the config.
        """
        for layers in ([], None):
            info = parse(imageDocument(layers=layers))
            self.assertEqual([b.digest for b in info.blobs], [digest(1)])
        document = imageDocument()
        del document["layers"]
        self.assertEqual(len(parse(document).blobs), 1)

    def test_contentTypeParametersIgnored(self):
        """
        Parameters and case in the Content-Type do not matter.
        """
        info = parse(imageDocument(), oci.OCI_MANIFEST + "; charset=utf-8")
        self.assertEqual(info.mediaType, oci.OCI_MANIFEST)
        info = parse(indexDocument(), " " + oci.OCI_INDEX.upper() + " ;q=1")
        self.assertEqual(info.mediaType, oci.OCI_INDEX)

    def test_contentTypeMismatch(self):
        """
        A Content-Type that contradicts the body's C{mediaType} is
        C{MANIFEST_INVALID} with 400.
        """
        error = self.assertInvalid(imageDocument(), oci.OCI_INDEX)
        self.assertEqual(error.detail,
                         {"mediaType": oci.OCI_MANIFEST, "contentType": oci.OCI_INDEX})
        self.assertInvalid(imageDocument(oci.DOCKER_MANIFEST), oci.OCI_MANIFEST)

    def test_unknownMediaType(self):
        """
        A media type this registry does not store as a manifest is
        C{MANIFEST_INVALID} with 415, from the header or the body.
        """
        for document, contentType in [
            (imageDocument(), "application/vnd.example+json"),
            (imageDocument("application/vnd.example+json"), None),
            (imageDocument("application/vnd.docker.distribution.manifest.v1+prettyjws"), None),
        ]:
            if contentType is not None:
                del document["mediaType"]
            with self.assertRaises(RegistryError) as caught:
                parse(document, contentType)
            self.assertEqual(caught.exception.code, "MANIFEST_INVALID")
            self.assertEqual(caught.exception.status, 415)

    def assertInvalid(self, document, contentType=None, body=None) -> RegistryError:
        """
        Assert that parsing fails with C{MANIFEST_INVALID} and 400.
        """
        with self.assertRaises(RegistryError) as caught:
            parse(document, contentType, body)
        self.assertEqual(caught.exception.code, "MANIFEST_INVALID")
        self.assertEqual(caught.exception.status, 400)
        return caught.exception

    def test_invalidJSON(self):
        """
        Bodies that are not JSON, or not UTF-8, are C{MANIFEST_INVALID}.
        """
        for body in [b"", b"{", b"not json", b"\xff\xfe\x00", b'{"a": 1} x']:
            self.assertInvalid(None, oci.OCI_MANIFEST, body)

    def test_notAnObject(self):
        """
        JSON that is not an object is C{MANIFEST_INVALID}.
        """
        for document in [[], "x", 1, None, [imageDocument()]]:
            self.assertInvalid(document, oci.OCI_MANIFEST)

    def test_schemaVersion(self):
        """
        C{schemaVersion} must be 2.
        """
        self.assertInvalid(imageDocument(schemaVersion=1))
        self.assertInvalid(imageDocument(schemaVersion="2"))
        document = imageDocument()
        del document["schemaVersion"]
        self.assertInvalid(document)

    def test_missingConfig(self):
        """
        An image manifest without a config is C{MANIFEST_INVALID}.
        """
        document = imageDocument()
        del document["config"]
        self.assertInvalid(document, oci.OCI_MANIFEST)
        self.assertInvalid(imageDocument(config=None))

    def test_badDescriptors(self):
        """
        Descriptors with a missing or wrong-typed field, an invalid digest, a
        negative or boolean size, or bad annotations are C{MANIFEST_INVALID}.
        """
        good = desc(LAYER_TYPE, 5)
        bad = [
            "sha256:" + "0" * 64,
            {k: v for k, v in good.items() if k != "mediaType"},
            {k: v for k, v in good.items() if k != "digest"},
            {k: v for k, v in good.items() if k != "size"},
            dict(good, mediaType=""),
            dict(good, mediaType=5),
            dict(good, digest="sha256:xyz"),
            dict(good, digest="md5:" + "0" * 32),
            dict(good, digest=5),
            dict(good, size=-1),
            dict(good, size=True),
            dict(good, size=1.5),
            dict(good, size="10"),
            dict(good, annotations=["x"]),
            dict(good, artifactType=5),
        ]
        for descriptor in bad:
            self.assertInvalid(imageDocument(layers=[descriptor]))
            self.assertInvalid(imageDocument(config=descriptor))
            self.assertInvalid(indexDocument(manifests=[descriptor]))

    def test_badLists(self):
        """
        C{layers} and C{manifests} must be lists; an index needs C{manifests}.
        """
        self.assertInvalid(imageDocument(layers={"a": 1}))
        self.assertInvalid(indexDocument(manifests=None))
        self.assertInvalid(indexDocument(manifests={}))
        document = indexDocument()
        del document["manifests"]
        self.assertInvalid(document, oci.OCI_INDEX)

    def test_mixedShapes(self):
        """
        An image manifest with C{manifests}, or an index with C{config} or
        C{layers}, is C{MANIFEST_INVALID}.
        """
        self.assertInvalid(imageDocument(manifests=[]))
        self.assertInvalid(indexDocument(config=desc(CONFIG_TYPE, 1)))
        self.assertInvalid(indexDocument(layers=[]))

    def test_badTopLevelFields(self):
        """
        Wrong types for C{mediaType}, C{artifactType} or C{annotations} are
        C{MANIFEST_INVALID}.
        """
        self.assertInvalid(imageDocument(mediaType=5))
        self.assertInvalid(imageDocument(artifactType=5))
        self.assertInvalid(imageDocument(annotations=["x"]))

    def test_customFieldsAndDataAllowed(self):
        """
        Unknown fields, and descriptors with C{data} or C{urls}, are kept
        out of the way, not refused.
        """
        document = imageDocument(custom={"x": 1})
        document["layers"][0]["data"] = "aGVsbG8="
        document["layers"][0]["urls"] = ["https://example.com/x"]
        self.assertEqual(len(parse(document).blobs), 3)

    def test_annotations(self):
        """
        Manifest and descriptor annotations are kept.
        """
        document = imageDocument(annotations={"a": "b"})
        document["layers"][0]["annotations"] = {"c": "d"}
        info = parse(document)
        self.assertEqual(info.annotations, {"a": "b"})
        self.assertEqual(info.blobs[1].annotations, {"c": "d"})


class DescriptorTests(SynchronousTestCase):
    """
    L{ManifestInfo.descriptor}, as the referrers API lists a manifest.
    """

    def test_minimal(self):
        """
        An index without artifactType or annotations has just media type,
        digest and size.
        """
        body = encode(indexDocument())
        info = parseManifest(body, None, oci.digestOf(body))
        self.assertEqual(
            info.descriptor(),
            {"mediaType": oci.OCI_INDEX, "digest": oci.digestOf(body), "size": len(body)},
        )

    def test_full(self):
        """
        The artifact type (explicit or from the config) and annotations are
        included.
        """
        body = encode(imageDocument(configType="application/x.cfg", annotations={"k": "v"}))
        info = parseManifest(body, oci.OCI_MANIFEST, oci.digestOf(body))
        self.assertEqual(
            info.descriptor(),
            {
                "mediaType": oci.OCI_MANIFEST,
                "digest": oci.digestOf(body),
                "size": len(body),
                "artifactType": "application/x.cfg",
                "annotations": {"k": "v"},
            },
        )


class NormaliseContentTypeTests(SynchronousTestCase):
    """
    L{normaliseContentType}.
    """

    def test_normalise(self):
        """
        Parameters, whitespace and case go; empty or absent gives L{None}.
        """
        self.assertIsNone(normaliseContentType(None))
        self.assertIsNone(normaliseContentType(""))
        self.assertIsNone(normaliseContentType(" ; charset=utf-8"))
        self.assertEqual(normaliseContentType("Application/JSON; charset=UTF-8"),
                         "application/json")
