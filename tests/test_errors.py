"""
Tests for L{zotwist.errors}: the OCI error codes and their JSON bodies.
"""

import json

from twisted.trial.unittest import SynchronousTestCase

from zotwist.errors import CODES, ManifestBlobsUnknown, RegistryError, errorBody

DIGEST_A = "sha256:" + "a" * 64
DIGEST_B = "sha256:" + "b" * 64


class RegistryErrorTests(SynchronousTestCase):
    """
    L{RegistryError} carries a code, a status, a message, a detail and
    headers, with defaults from the spec's table.
    """

    def test_defaults(self):
        """
        Without arguments beyond the code, the status and message come from
        L{CODES}, the detail is L{None} and there are no extra headers.
        """
        error = RegistryError("BLOB_UNKNOWN")
        self.assertEqual(error.code, "BLOB_UNKNOWN")
        self.assertEqual(error.status, 404)
        self.assertEqual(error.message, "blob unknown to registry")
        self.assertIsNone(error.detail)
        self.assertEqual(error.headers, {})
        self.assertEqual(str(error), "BLOB_UNKNOWN: blob unknown to registry")

    def test_everyCodeHasAStatusAndMessage(self):
        """
        Every code in the table maps to a client or server error status and
        a non-empty message, and builds an error with them.
        """
        for code, (status, message) in CODES.items():
            error = RegistryError(code)
            self.assertEqual((error.status, error.message), (status, message))
            self.assertTrue(400 <= status < 600, code)
            self.assertTrue(message, code)

    def test_overrides(self):
        """
        An explicit status, message, detail and headers replace the
        defaults; the headers are copied, not shared with the caller.
        """
        headers = {"Range": "0-9"}
        error = RegistryError(
            "BLOB_UPLOAD_INVALID", message="out of order", detail={"x": 1},
            status=416, headers=headers,
        )
        headers["Range"] = "changed"
        self.assertEqual(error.status, 416)
        self.assertEqual(error.message, "out of order")
        self.assertEqual(error.detail, {"x": 1})
        self.assertEqual(error.headers, {"Range": "0-9"})

    def test_statusZeroIsNotTheDefault(self):
        """
        Only L{None} means "use the default status".
        """
        self.assertEqual(RegistryError("UNKNOWN", status=503).status, 503)

    def test_unknownCode(self):
        """
        A code that is not in the table is a programming error: L{KeyError}.
        """
        self.assertRaises(KeyError, RegistryError, "NOT_A_CODE")

    def test_bodyWithoutDetail(self):
        """
        The body is C{{"errors": [{"code", "message"}]}} with no C{detail}
        key when there is no detail.
        """
        document = json.loads(RegistryError("NAME_UNKNOWN").body())
        self.assertEqual(
            document,
            {"errors": [{"code": "NAME_UNKNOWN",
                         "message": "repository name not known to registry"}]},
        )

    def test_bodyWithDetail(self):
        """
        A detail appears verbatim under C{detail}.
        """
        error = RegistryError("DIGEST_INVALID", detail={"digest": DIGEST_A})
        document = json.loads(error.body())
        self.assertEqual(
            document["errors"],
            [{"code": "DIGEST_INVALID",
              "message": "provided digest did not match uploaded content",
              "detail": {"digest": DIGEST_A}}],
        )

    def test_bodyIsUTF8JSON(self):
        """
        The body is bytes: UTF-8 encoded JSON, also for non-ASCII messages.
        """
        body = RegistryError("DENIED", message="nicht erlaubt \u00fc").body()
        self.assertIsInstance(body, bytes)
        self.assertEqual(
            json.loads(body.decode("utf-8"))["errors"][0]["message"], "nicht erlaubt \u00fc"
        )

    def test_errorBodyOfSeveral(self):
        """
        L{errorBody} puts several errors in one document, in order.
        """
        document = json.loads(
            errorBody([RegistryError("UNAUTHORIZED"), RegistryError("DENIED")])
        )
        self.assertEqual([e["code"] for e in document["errors"]], ["UNAUTHORIZED", "DENIED"])


class ManifestBlobsUnknownTests(SynchronousTestCase):
    """
    L{ManifestBlobsUnknown} reports every missing digest.
    """

    def test_attributes(self):
        """
        It is a C{MANIFEST_BLOB_UNKNOWN} L{RegistryError} answered with 400
        and keeps the digests in order.
        """
        error = ManifestBlobsUnknown([DIGEST_A, DIGEST_B])
        self.assertIsInstance(error, RegistryError)
        self.assertEqual(error.code, "MANIFEST_BLOB_UNKNOWN")
        self.assertEqual(error.status, 400)
        self.assertEqual(error.digests, [DIGEST_A, DIGEST_B])

    def test_bodyListsOneEntryPerDigest(self):
        """
        The body holds one C{MANIFEST_BLOB_UNKNOWN} entry per digest, each
        naming its digest in C{detail}.
        """
        document = json.loads(ManifestBlobsUnknown([DIGEST_A, DIGEST_B]).body())
        self.assertEqual(
            document["errors"],
            [
                {"code": "MANIFEST_BLOB_UNKNOWN",
                 "message": CODES["MANIFEST_BLOB_UNKNOWN"][1],
                 "detail": {"digest": DIGEST_A}},
                {"code": "MANIFEST_BLOB_UNKNOWN",
                 "message": CODES["MANIFEST_BLOB_UNKNOWN"][1],
                 "detail": {"digest": DIGEST_B}},
            ],
        )

    def test_digestsCopied(self):
        """
        Changing the caller's list afterwards does not change the error.
        """
        digests = [DIGEST_A]
        error = ManifestBlobsUnknown(digests)
        digests.append(DIGEST_B)
        self.assertEqual(error.digests, [DIGEST_A])
        self.assertEqual(len(json.loads(error.body())["errors"]), 1)
