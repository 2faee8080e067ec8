"""
Tests for L{zotwist.web.bodies}: where a request body goes, decided before
it arrives.
"""

import os

from twisted.internet.address import IPv4Address
from twisted.internet.defer import ensureDeferred
from twisted.internet.error import ConnectionDone
from twisted.internet.testing import StringTransport
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase
from twisted.web.http_headers import Headers

from zotwist.errors import RegistryError
from zotwist.manifests import MAX_MANIFEST_SIZE
from zotwist.storage.local import LocalStore
from zotwist.storage.writers import AppendWriter, DiscardWriter, FreshWriter
from zotwist.threads import InlineRunner
from zotwist.web import bodies, resource, routes
from zotwist.web.bodies import SMALL_BODY, LimitedBuffer, chooseBody, parseContentRange
from zotwist.web.site import RegistrySite

DIGEST = "sha256:" + "0123456789abcdef" * 4
SHA512 = "sha512:" + "0123456789abcdef" * 8
UPLOAD = "0123456789abcdef0123456789abcdef"


class FakeStore:
    """
    Records the writers asked for and hands back markers, or raises
    C{error} when set.
    """

    def __init__(self, error: RegistryError | None = None):
        self.calls: list[tuple] = []
        self.error = error

    def writerForMonolithic(self, name, algorithm, length):
        self.calls.append(("monolithic", name, algorithm, length))
        if self.error is not None:
            raise self.error
        return ("monolithic-writer", name)

    def writerForSession(self, name, uploadID, start, length):
        self.calls.append(("session", name, uploadID, start, length))
        if self.error is not None:
            raise self.error
        return ("session-writer", name)


class ParseContentRangeTests(SynchronousTestCase):
    """
    L{parseContentRange} for upload chunks.
    """

    def test_absent(self):
        """
        No header, no range.
        """
        self.assertIsNone(parseContentRange(None))

    def test_plain(self):
        """
        C{start-end}, inclusive, as the spec's chunked uploads send it.
        """
        self.assertEqual(parseContentRange("0-9"), (0, 9))
        self.assertEqual(parseContentRange("10-10"), (10, 10))
        self.assertEqual(parseContentRange(" 5-7 "), (5, 7))

    def test_bytesPrefix(self):
        """
        The RFC form C{bytes start-end/total} is tolerated.
        """
        self.assertEqual(parseContentRange("bytes 0-9/10"), (0, 9))
        self.assertEqual(parseContentRange("bytes 3-4/*"), (3, 4))

    def test_malformed(self):
        """
        Anything else raises L{ValueError}.
        """
        for value in ["", "-", "0-", "-9", "9-0", "a-b", "0-9-10", "0 - 9", "bytes=0-9",
                      "+1-2", "0x1-2", "bytes */10", "1,2-3"]:
            self.assertRaises(ValueError, parseContentRange, value)


class LimitedBufferTests(SynchronousTestCase):
    """
    L{LimitedBuffer} keeps a bounded body.
    """

    def test_underLimit(self):
        """
        A body within the limit is kept whole and can be read back.
        """
        buffer = LimitedBuffer(10)
        buffer.write(b"hello")
        buffer.write(b"world")
        self.assertFalse(buffer.overflowed)
        self.assertEqual(buffer.tell(), 10)
        self.assertEqual(buffer.getvalue(), b"helloworld")
        buffer.seek(0)
        self.assertEqual(buffer.read(), b"helloworld")
        self.assertIsNone(buffer.rejection)

    def test_overflow(self):
        """
        Past the limit the buffer stops storing, keeps counting and says it
        overflowed.
        """
        buffer = LimitedBuffer(10)
        buffer.write(b"hello")
        buffer.write(b"world!")
        buffer.write(b"x" * 1000)
        self.assertTrue(buffer.overflowed)
        self.assertEqual(buffer.tell(), 1011)
        self.assertEqual(buffer.received, 1011)
        self.assertLessEqual(len(buffer.getvalue()), 10)

    def test_close(self):
        """
        Closing drops the content.
        """
        buffer = LimitedBuffer(10)
        buffer.write(b"abc")
        buffer.close()
        self.assertEqual(buffer.getvalue(), b"")


class ChooseBodyTests(SynchronousTestCase):
    """
    L{chooseBody} picks the body's destination from method, path, query and
    headers.
    """

    def choose(self, method: bytes, uri: bytes, headers=None, length=None, store=None):
        """
        Call L{chooseBody} with a L{FakeStore} (kept as C{self.store}).
        """
        self.store = store if store is not None else FakeStore()
        return chooseBody(self.store, method, uri, Headers(headers or {}), length)

    def test_manifestPut(self):
        """
        A manifest PUT goes to a L{LimitedBuffer} bounded by
        L{MAX_MANIFEST_SIZE}.
        """
        body = self.choose(b"PUT", b"/v2/a/b/manifests/latest", length=100)
        self.assertIsInstance(body, LimitedBuffer)
        body.write(b"x" * MAX_MANIFEST_SIZE)
        self.assertFalse(body.overflowed)
        body.write(b"x")
        self.assertTrue(body.overflowed)
        self.assertEqual(self.store.calls, [])

    def test_otherRequestsSmall(self):
        """
        Requests that need no body (and unknown paths) keep at most
        L{SMALL_BODY} bytes.
        """
        for method, uri in [
            (b"GET", b"/v2/a/manifests/latest"),
            (b"DELETE", b"/v2/a/blobs/" + DIGEST.encode()),
            (b"POST", b"/v2/a/manifests/latest"),
            (b"PUT", b"/v2/a/blobs/uploads/"),
            (b"GET", b"/v2/a/blobs/uploads/" + UPLOAD.encode()),
            (b"PUT", b"/elsewhere"),
            (b"PUT", b"/v2/\xff/manifests/x"),
        ]:
            body = self.choose(method, uri)
            self.assertIsInstance(body, LimitedBuffer, (method, uri))
            body.write(b"x" * SMALL_BODY)
            self.assertFalse(body.overflowed)
            body.write(b"x")
            self.assertTrue(body.overflowed, (method, uri))
            self.assertEqual(self.store.calls, [])

    def test_postWithoutDigest(self):
        """
        A POST that opens a session carries no blob: discarded, no rejection.
        """
        for uri in [b"/v2/a/blobs/uploads/", b"/v2/a/blobs/uploads/?digest-algorithm=sha512"]:
            body = self.choose(b"POST", uri, length=0)
            self.assertIsInstance(body, DiscardWriter)
            self.assertIsNone(body.rejection)
        self.assertEqual(self.store.calls, [])

    def test_postWithMount(self):
        """
        A mount carries no blob either, even with a C{digest} argument.
        """
        for query in [
            b"mount=" + DIGEST.encode() + b"&from=b",
            b"mount=" + DIGEST.encode(),
            b"digest=" + DIGEST.encode() + b"&mount=" + DIGEST.encode() + b"&from=b",
        ]:
            body = self.choose(b"POST", b"/v2/a/blobs/uploads/?" + query)
            self.assertIsInstance(body, DiscardWriter, query)
            self.assertIsNone(body.rejection)
        self.assertEqual(self.store.calls, [])

    def test_postWithDigest(self):
        """
        A monolithic POST C{?digest=} streams into a writer for that name
        and the digest's algorithm.
        """
        body = self.choose(b"POST", b"/v2/a/b/blobs/uploads/?digest=" + DIGEST.encode(),
                           length=42)
        self.assertEqual(body, ("monolithic-writer", "a/b"))
        self.assertEqual(self.store.calls, [("monolithic", "a/b", "sha256", 42)])
        body = self.choose(b"POST", b"/v2/a/blobs/uploads?digest=" + SHA512.encode())
        self.assertEqual(self.store.calls, [("monolithic", "a", "sha512", None)])

    def test_postWithBadDigest(self):
        """
        An invalid digest is rejected (C{DIGEST_INVALID}) and the body
        discarded.
        """
        body = self.choose(b"POST", b"/v2/a/blobs/uploads/?digest=md5:abc")
        self.assertIsInstance(body, DiscardWriter)
        self.assertEqual(body.rejection.code, "DIGEST_INVALID")
        self.assertEqual(self.store.calls, [])

    def test_postWithBadName(self):
        """
        An invalid name is rejected (C{NAME_INVALID}) before the store sees
        it.
        """
        body = self.choose(b"POST", b"/v2/A/blobs/uploads/?digest=" + DIGEST.encode())
        self.assertIsInstance(body, DiscardWriter)
        self.assertEqual(body.rejection.code, "NAME_INVALID")
        body = self.choose(b"POST", b"/v2/a%2F..%2Fb/blobs/uploads/?digest=" + DIGEST.encode())
        self.assertEqual(body.rejection.code, "NAME_INVALID")
        self.assertEqual(self.store.calls, [])

    def test_patchAndPutOnSession(self):
        """
        PATCH and the closing PUT on a session append through the store's
        session writer, with the start from Content-Range (or L{None}).
        """
        uri = b"/v2/a/b/blobs/uploads/" + UPLOAD.encode()
        body = self.choose(b"PATCH", uri, {b"Content-Range": [b"10-19"]}, 10)
        self.assertEqual(body, ("session-writer", "a/b"))
        self.assertEqual(self.store.calls, [("session", "a/b", UPLOAD, 10, 10)])
        self.choose(b"PATCH", uri, {}, None)
        self.assertEqual(self.store.calls, [("session", "a/b", UPLOAD, None, None)])
        self.choose(b"PUT", uri + b"?digest=" + DIGEST.encode(), {}, 0)
        self.assertEqual(self.store.calls, [("session", "a/b", UPLOAD, None, 0)])
        self.choose(b"put", uri, {b"Content-Range": [b"0-4"]}, 5)
        self.assertEqual(self.store.calls, [("session", "a/b", UPLOAD, 0, 5)])

    def test_rangeWithChunkedBody(self):
        """
        With a Content-Range and no Content-Length (chunked), only the start
        is used.
        """
        uri = b"/v2/a/blobs/uploads/" + UPLOAD.encode()
        self.choose(b"PATCH", uri, {b"Content-Range": [b"5-9"]}, None)
        self.assertEqual(self.store.calls, [("session", "a", UPLOAD, 5, None)])

    def test_rangeLengthMismatch(self):
        """
        A Content-Range that does not agree with Content-Length is a 416
        rejection; the body is discarded and the session not touched.
        """
        uri = b"/v2/a/blobs/uploads/" + UPLOAD.encode()
        for contentRange, length in [(b"0-9", 5), (b"0-9", 11), (b"0-0", 0)]:
            body = self.choose(b"PATCH", uri, {b"Content-Range": [contentRange]}, length)
            self.assertIsInstance(body, DiscardWriter)
            self.assertEqual(body.rejection.code, "BLOB_UPLOAD_INVALID")
            self.assertEqual(body.rejection.status, 416)
            self.assertEqual(self.store.calls, [])

    def test_malformedRange(self):
        """
        A malformed Content-Range is a 416 rejection.
        """
        uri = b"/v2/a/blobs/uploads/" + UPLOAD.encode()
        for value in [b"garbage", b"9-0", b"0-", b"\xb2-5"]:
            body = self.choose(b"PATCH", uri, {b"Content-Range": [value]}, 10)
            self.assertIsInstance(body, DiscardWriter, value)
            self.assertEqual(body.rejection.status, 416)
            self.assertEqual(self.store.calls, [])

    def test_storeRejection(self):
        """
        An error from the store (an unknown session) becomes the body's
        rejection instead of an exception.
        """
        error = RegistryError("BLOB_UPLOAD_UNKNOWN")
        uri = b"/v2/a/blobs/uploads/" + UPLOAD.encode()
        body = self.choose(b"PATCH", uri, {}, 3, store=FakeStore(error))
        self.assertIsInstance(body, DiscardWriter)
        self.assertIs(body.rejection, error)


class ChooseBodyWithStoreTests(SynchronousTestCase):
    """
    L{chooseBody} against a real L{LocalStore}.
    """

    def setUp(self):
        self.store = LocalStore(self.mktemp(), InlineRunner())
        self.successResultOf(ensureDeferred(self.store.startService()))

    def test_unknownSession(self):
        """
        A PATCH to a session that does not exist is a C{BLOB_UPLOAD_UNKNOWN}
        rejection.
        """
        for uploadID in [UPLOAD, "..", "..%2F..%2Fx"]:
            body = chooseBody(self.store, b"PATCH",
                              b"/v2/a/blobs/uploads/" + uploadID.encode(), Headers(), 3)
            self.assertIsInstance(body, DiscardWriter)
            self.assertEqual(body.rejection.code, "BLOB_UPLOAD_UNKNOWN")
            self.assertEqual(body.rejection.status, 404)

    def test_knownSession(self):
        """
        A PATCH to a session gets an L{AppendWriter}.
        """
        uploadID = self.successResultOf(ensureDeferred(self.store.startUpload("a", "sha256")))
        body = chooseBody(self.store, b"PATCH", b"/v2/a/blobs/uploads/" + uploadID.encode(),
                          Headers({b"Content-Range": [b"0-2"]}), 3)
        self.addCleanup(body.close)
        self.assertIsInstance(body, AppendWriter)
        self.assertIsNone(body.rejection)

    def test_monolithic(self):
        """
        A monolithic POST gets a L{FreshWriter} inside the storage root.
        """
        body = chooseBody(self.store, b"POST", b"/v2/a/blobs/uploads/?digest=" + DIGEST.encode(),
                          Headers(), 3)
        self.assertIsInstance(body, FreshWriter)
        self.assertTrue(os.path.abspath(body.path).startswith(self.store.root + os.sep))
        body.close()
        self.assertFalse(os.path.exists(body.directory))


class RouteMatchedOnceTests(SynchronousTestCase):
    """
    The path of a request is matched to a route once, when its headers
    arrive; the resource uses that match.
    """

    def test_matchedOnce(self):
        """
        A manifest PUT and a tag list, through the real site: one route
        match each, and the answers are right.
        """
        calls = []

        def counting(path):
            calls.append(path)
            return routes.matchRoute(path)

        self.patch(bodies, "matchRoute", counting)
        self.patch(resource, "matchRoute", counting)
        store = LocalStore(self.mktemp(), InlineRunner())
        self.successResultOf(ensureDeferred(store.startService()))
        site = RegistrySite(store)

        def request(raw: bytes) -> bytes:
            address = IPv4Address("TCP", "127.0.0.1", 1234)
            channel = site.buildProtocol(address)
            transport = StringTransport(peerAddress=address, hostAddress=address)
            channel.makeConnection(transport)
            channel.dataReceived(raw)
            # Closed, so that no idle timeout stays behind on the reactor.
            channel.connectionLost(Failure(ConnectionDone()))
            return transport.value()

        body = (
            b'{"schemaVersion":2,"mediaType":"application/vnd.oci.image.index.v1+json",'
            b'"manifests":[]}'
        )
        answer = request(
            b"PUT /v2/a/manifests/v1 HTTP/1.1\r\nHost: x\r\nContent-Type: "
            b"application/vnd.oci.image.index.v1+json\r\nContent-Length: %d\r\n\r\n%s"
            % (len(body), body)
        )
        self.assertIn(b" 201 ", answer.split(b"\r\n")[0])
        self.assertEqual(calls, [b"/v2/a/manifests/v1"])
        answer = request(b"GET /v2/a/tags/list HTTP/1.1\r\nHost: x\r\n\r\n")
        self.assertIn(b" 200 ", answer.split(b"\r\n")[0])
        self.assertTrue(answer.endswith(b'{"name": "a", "tags": ["v1"]}'))
        self.assertEqual(calls, [b"/v2/a/manifests/v1", b"/v2/a/tags/list"])
