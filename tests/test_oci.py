"""
Tests for L{zotwist.oci}: the grammar of names, tags and digests.
"""

import hashlib

from twisted.trial.unittest import SynchronousTestCase

from zotwist import oci
from zotwist.errors import RegistryError

SHA256 = "sha256:" + "0123456789abcdef" * 4
SHA512 = "sha512:" + "0123456789abcdef" * 8


class NameTests(SynchronousTestCase):
    """
    L{oci.validateName} accepts exactly the spec's repository names.
    """

    VALID = (
        "a",
        "a/b",
        "a-b",
        "a--b",
        "a__b",
        "a_b",
        "a.b",
        "a.b/c_d",
        "0",
        "a/b/c/d/e",
        "library/ubuntu",
        "blobs",
        "blobs/x",
        "a/manifests",
        "a/tags",
        "a" * 255,
        "/".join(["ab"] * 85),  # 254 characters
    )

    INVALID = (
        "",
        "A",
        "a/B",
        "..",
        ".",
        "a/..",
        "../a",
        "a//b",
        "/a",
        "a/",
        "%2e",
        "a%2fb",
        "a/%2e%2e",
        "a/blobs",
        "a/b/blobs",
        "a/index.json",
        "a/oci-layout",
        "a/.uploads",
        "-a",
        "a-",
        "_a",
        "a_",
        ".a",
        "a.",
        "a___b",
        "a..b",
        "a._b",
        "a b",
        "a:b",
        "a\\b",
        "a\nb",
        "a\n",
        "\u00e4",
        "a" * 256,
        "a/" + "b" * 254,
    )

    def test_valid(self):
        """
        Names that match the grammar and fit in 255 characters are returned
        unchanged.
        """
        for name in self.VALID:
            self.assertEqual(oci.validateName(name), name, name)

    def test_maximumLength(self):
        """
        255 characters are accepted, 256 are not.
        """
        self.assertEqual(len("a" * 255), oci.MAX_NAME_LENGTH)
        oci.validateName("a" * 255)
        self.assertRaises(RegistryError, oci.validateName, "a" * 256)

    def test_invalid(self):
        """
        Everything else is C{NAME_INVALID} (400).
        """
        for name in self.INVALID:
            with self.assertRaises(RegistryError, msg=repr(name)) as caught:
                oci.validateName(name)
            self.assertEqual(caught.exception.code, "NAME_INVALID", repr(name))
            self.assertEqual(caught.exception.status, 400, repr(name))

    def test_reservedComponentMessage(self):
        """
        A reserved component (one that would collide with the parent
        repository's layout) is named in the message.
        """
        with self.assertRaises(RegistryError) as caught:
            oci.validateName("a/blobs")
        self.assertIn("blobs", caught.exception.message)
        self.assertEqual(caught.exception.detail, {"name": "a/blobs"})

    def test_hugeNameDetailTruncated(self):
        """
        The detail of an overlong name does not echo megabytes back.
        """
        with self.assertRaises(RegistryError) as caught:
            oci.validateName("a" * 100000)
        self.assertLessEqual(len(caught.exception.detail["name"]), 300)


class TagTests(SynchronousTestCase):
    """
    L{oci.isTag} and L{oci.validateTag}.
    """

    VALID = ("latest", "v1.0.0", "_", "_x", "0", "A-b_C.d", "a" * 128, "1.0-rc.1__x")
    INVALID = (
        "", "a" * 129, ".a", "-a", "a/b", "a:b", "a b", "a\n", "\u00e4", "a@b", "a+b",
    )

    def test_valid(self):
        """
        Tags of up to 128 characters from the grammar are accepted.
        """
        for tag in self.VALID:
            self.assertTrue(oci.isTag(tag), tag)
            self.assertEqual(oci.validateTag(tag), tag)

    def test_invalid(self):
        """
        Anything else, including 129 characters and a leading C{.} or C{-},
        is C{TAG_INVALID} (400).
        """
        for tag in self.INVALID:
            self.assertFalse(oci.isTag(tag), repr(tag))
            with self.assertRaises(RegistryError, msg=repr(tag)) as caught:
                oci.validateTag(tag)
            self.assertEqual(caught.exception.code, "TAG_INVALID")
            self.assertEqual(caught.exception.status, 400)


class DigestTests(SynchronousTestCase):
    """
    L{oci.parseDigest}, L{oci.validateAlgorithm}, L{oci.digestOf} and friends.
    """

    def test_sha256(self):
        """
        A sha256 digest with 64 lower-case hex characters splits in two.
        """
        self.assertEqual(oci.parseDigest(SHA256), ("sha256", SHA256[7:]))

    def test_sha512(self):
        """
        A sha512 digest with 128 lower-case hex characters splits in two.
        """
        self.assertEqual(oci.parseDigest(SHA512), ("sha512", SHA512[7:]))

    def assertDigestInvalid(self, value):
        """
        Assert that C{value} is refused with C{DIGEST_INVALID} (400).
        """
        with self.assertRaises(RegistryError, msg=repr(value)) as caught:
            oci.parseDigest(value)
        self.assertEqual(caught.exception.code, "DIGEST_INVALID", repr(value))
        self.assertEqual(caught.exception.status, 400, repr(value))

    def test_wrongLength(self):
        """
        Too short or too long for the algorithm, including a sha512-length
        hex under C{sha256} and the reverse, is C{DIGEST_INVALID}.
        """
        for value in [
            SHA256[:-1], SHA256 + "0", SHA512[:-1], SHA512 + "0",
            "sha256:" + SHA512[7:], "sha512:" + SHA256[7:], "sha256:",
        ]:
            self.assertDigestInvalid(value)

    def test_upperCaseHex(self):
        """
        The encoded part must be lower-case hex.
        """
        self.assertDigestInvalid(SHA256.upper())
        self.assertDigestInvalid("sha256:" + SHA256[7:].upper())
        self.assertDigestInvalid("sha256:" + "g" * 64)

    def test_unknownAlgorithm(self):
        """
        An algorithm this registry does not support is C{DIGEST_INVALID},
        even when the digest is well formed per the spec's grammar.
        """
        self.assertDigestInvalid("md5:" + "0" * 32)
        self.assertDigestInvalid("sha384:" + "0" * 96)
        self.assertDigestInvalid("sha256+b64u:" + "0" * 64)

    def test_malformed(self):
        """
        No colon, an empty string, L{None}, path tricks and whitespace are
        C{DIGEST_INVALID}.
        """
        for value in [
            "sha256" + "0" * 64, "", None, ":" + "0" * 64, "sha256:../../etc",
            "sha256:" + "0" * 63 + "/", SHA256 + "\n", " " + SHA256, "SHA256:" + "0" * 64,
        ]:
            self.assertDigestInvalid(value)

    def test_looksLikeDigest(self):
        """
        A colon marks a reference as a digest: tags cannot have one.
        """
        self.assertTrue(oci.looksLikeDigest(SHA256))
        self.assertTrue(oci.looksLikeDigest("md5:x"))
        self.assertFalse(oci.looksLikeDigest("latest"))

    def test_validateAlgorithm(self):
        """
        sha256 and sha512 are supported; others are C{DIGEST_INVALID}.
        """
        self.assertEqual(oci.validateAlgorithm("sha256"), "sha256")
        self.assertEqual(oci.validateAlgorithm("sha512"), "sha512")
        for value in ["md5", "SHA256", "", "sha256 "]:
            with self.assertRaises(RegistryError) as caught:
                oci.validateAlgorithm(value)
            self.assertEqual(caught.exception.code, "DIGEST_INVALID")

    def test_digestOf(self):
        """
        L{oci.digestOf} agrees with L{hashlib}, and its result parses.
        """
        data = b"hello world"
        self.assertEqual(oci.digestOf(data), "sha256:" + hashlib.sha256(data).hexdigest())
        self.assertEqual(
            oci.digestOf(data, "sha512"), "sha512:" + hashlib.sha512(data).hexdigest()
        )
        oci.parseDigest(oci.digestOf(data))
        oci.parseDigest(oci.digestOf(data, "sha512"))

    def test_newHasher(self):
        """
        L{oci.newHasher} returns a fresh hashlib object of the algorithm.
        """
        hasher = oci.newHasher("sha512")
        hasher.update(b"x")
        self.assertEqual(hasher.hexdigest(), hashlib.sha512(b"x").hexdigest())
        self.assertEqual(oci.newHasher("sha256").hexdigest(), hashlib.sha256().hexdigest())


class MediaTypeTests(SynchronousTestCase):
    """
    The media type sets and L{oci.isNonDistributable}.
    """

    def test_manifestTypes(self):
        """
        The four manifest media types are split into images and indexes.
        """
        self.assertEqual(oci.IMAGE_MANIFEST_TYPES, {oci.OCI_MANIFEST, oci.DOCKER_MANIFEST})
        self.assertEqual(oci.INDEX_TYPES, {oci.OCI_INDEX, oci.DOCKER_LIST})
        self.assertEqual(
            oci.MANIFEST_TYPES,
            {oci.OCI_MANIFEST, oci.DOCKER_MANIFEST, oci.OCI_INDEX, oci.DOCKER_LIST},
        )

    def test_nonDistributable(self):
        """
        OCI non-distributable and Docker foreign layers may be absent;
        ordinary layers may not.
        """
        self.assertTrue(oci.isNonDistributable(
            "application/vnd.oci.image.layer.nondistributable.v1.tar+gzip"))
        self.assertTrue(oci.isNonDistributable(
            "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip"))
        self.assertFalse(oci.isNonDistributable("application/vnd.oci.image.layer.v1.tar+gzip"))
        self.assertFalse(oci.isNonDistributable(
            "application/vnd.docker.image.rootfs.diff.tar.gzip"))
