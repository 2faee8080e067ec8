"""
Tests for L{zotwist.web.sendfile}: zero-copy blob downloads.

Through a registry on loopback: the sendfile path is the one taken on plain
TCP, it sends exactly the bytes asked for (whole blob and ranges), and a
client that leaves mid-download frees its thread.
"""

import os
import socket

from twisted.internet import reactor
from twisted.internet.task import deferLater
from twisted.internet.threads import deferToThread
from twisted.trial.unittest import TestCase

from tests.apihelpers import body, pushBlob
from tests.support import startRegistry
from zotwist.web import sendfile


class SendfileTests(TestCase):
    """
    Downloads over plain TCP go through C{sendfile}.
    """

    async def setUp(self):
        self.reg = await startRegistry(self)
        self.data = os.urandom(3 * 1024 * 1024 + 17)
        self.digest = await pushBlob(self.reg, "send/test", self.data)
        self.calls = []
        original = sendfile.sendBlocking

        def spy(*args):
            self.calls.append(args[3:5])
            return original(*args)

        self.patch(sendfile, "sendBlocking", spy)

    async def test_wholeBlob(self):
        """
        A blob GET is answered through sendfile with every byte and the usual
        headers.
        """
        resp = await self.reg.client.get(f"{self.reg.url}/v2/send/test/blobs/{self.digest}")
        self.assertEqual(resp.code, 200)
        self.assertEqual(await body(resp), self.data)
        self.assertEqual(
            resp.headers.getRawHeaders(b"Docker-Content-Digest"), [self.digest.encode()]
        )
        self.assertEqual(self.calls, [(0, len(self.data))])

    async def test_ranges(self):
        """
        Ranges are sent from their offset, and only their bytes.
        """
        for header, start, end in [
            ("bytes=0-0", 0, 0),
            ("bytes=1000-2000000", 1000, 2000000),
            ("bytes=-17", len(self.data) - 17, len(self.data) - 1),
        ]:
            resp = await self.reg.client.get(
                f"{self.reg.url}/v2/send/test/blobs/{self.digest}", headers={"Range": header}
            )
            self.assertEqual(resp.code, 206)
            self.assertEqual(await body(resp), self.data[start:end + 1])
        self.assertEqual(
            self.calls,
            [(0, 1), (1000, 2000000 - 1000 + 1), (len(self.data) - 17, 17)],
        )

    async def test_keepAliveAfterSendfile(self):
        """
        The connection stays usable: a second request on the same connection
        gets its own, correct answer after a sendfile response.
        """
        path = f"/v2/send/test/blobs/{self.digest}"

        def twoRequests():
            with socket.create_connection(("127.0.0.1", self.reg.port), timeout=10) as s:
                request = f"GET {path} HTTP/1.1\r\nHost: x\r\nRange: bytes=0-9\r\n\r\n"
                s.sendall(request.encode() * 2)
                received = b""
                while received.count(b"HTTP/1.1 206") < 2 or not received.endswith(
                    self.data[:10]
                ):
                    chunk = s.recv(65536)
                    if not chunk:
                        break
                    received += chunk
                return received

        received = await deferToThread(twoRequests)
        self.assertEqual(received.count(b"HTTP/1.1 206 Partial Content"), 2)
        self.assertEqual(received.count(b"\r\n\r\n" + self.data[:10]), 2)

    async def test_clientLeavesMidDownload(self):
        """
        A client that closes after a few bytes of a large blob ends the
        send: the thread is released and the registry keeps serving.
        """
        big = os.urandom(64 * 1024 * 1024)
        digest = await pushBlob(self.reg, "send/big", big)

        def readALittle():
            with socket.create_connection(("127.0.0.1", self.reg.port), timeout=10) as s:
                s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
                s.sendall(f"GET /v2/send/big/blobs/{digest} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
                return s.recv(1000)

        first = await deferToThread(readALittle)
        self.assertTrue(first.startswith(b"HTTP/1.1 200"))
        sender = self.reg.service.getServiceNamed("threads-send")
        for _ in range(100):
            if not sender.pool.working:
                break
            await deferLater(reactor, 0.05, lambda: None)
        self.assertEqual(sender.pool.working, [])
        resp = await self.reg.client.get(f"{self.reg.url}/v2/send/test/blobs/{self.digest}")
        self.assertEqual(await body(resp), self.data)
