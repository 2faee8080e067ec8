"""
Tests for L{zotwist.ops.health}: C{/livez}, C{/readyz} and C{/startupz}
through a running registry, and the checks on their own.
"""

import os

from twisted.trial.unittest import SynchronousTestCase, TestCase

from tests.apihelpers import assertError
from tests.support import startRegistry
from zotwist.ops.health import HealthChecks


async def probe(reg, path: str, method: str = "GET"):
    """
    @return: C{(status, body, response)} of one probe.
    """
    resp = await reg.client.request(method, reg.url + path)
    return resp.code, await resp.content(), resp


class ProbeTests(TestCase):
    """
    The probes as zot serves them: C{200 ok} or C{500} with a reason, as
    plain text.
    """

    async def test_allPass(self):
        """
        On a running registry with a usable store, all three answer 200
        with the body C{ok}, as plain text that must not be sniffed.
        """
        reg = await startRegistry(self)
        for path in ("/livez", "/readyz", "/startupz"):
            code, body, resp = await probe(reg, path)
            self.assertEqual((code, body), (200, b"ok"), path)
            self.assertEqual(
                resp.headers.getRawHeaders("content-type"), ["text/plain; charset=utf-8"]
            )
            self.assertEqual(resp.headers.getRawHeaders("x-content-type-options"), ["nosniff"])

    async def test_head(self):
        """
        C{HEAD} answers like C{GET}, without a body.
        """
        reg = await startRegistry(self)
        code, body, resp = await probe(reg, "/readyz", "HEAD")
        self.assertEqual((code, body), (200, b""))
        self.assertEqual(resp.headers.getRawHeaders("content-length"), ["2"])

    async def test_otherMethods(self):
        """
        Other methods get the registry's JSON 405 with C{Allow}, and a path
        below a probe is unknown.
        """
        reg = await startRegistry(self)
        resp = await reg.client.post(reg.url + "/livez", data=b"")
        await assertError(resp, 405, "UNSUPPORTED")
        self.assertEqual(resp.headers.getRawHeaders("allow"), ["GET, HEAD"])
        resp = await reg.client.get(reg.url + "/livez/more")
        await assertError(resp, 404, "UNSUPPORTED")

    async def test_storageGone(self):
        """
        When the storage root disappears (a volume unmounted under the
        registry), C{/readyz} fails with the reason while C{/livez} still
        passes; it passes again once the root is back.
        """
        reg = await startRegistry(self)
        moved = reg.root + ".away"
        os.rename(reg.root, moved)
        try:
            code, body, _ = await probe(reg, "/readyz")
            self.assertEqual(code, 500)
            self.assertEqual(body, b"internal server error: storage root is not writable\n")
            code, body, _ = await probe(reg, "/livez")
            self.assertEqual((code, body), (200, b"ok"))
        finally:
            os.rename(moved, reg.root)
        code, body, _ = await probe(reg, "/readyz")
        self.assertEqual((code, body), (200, b"ok"))


class _Store:
    """
    A stand-in for L{zotwist.service.StoreService}.
    """

    isReady = False


class CheckTests(SynchronousTestCase):
    """
    The checks' answers in each state.
    """

    def test_beforeStorageIsReady(self):
        """
        Until the store has scanned its root, start-up and readiness fail;
        liveness never does.
        """
        store = _Store()
        checks = HealthChecks(store, self.mktemp())
        os.makedirs(checks._root)
        self.assertIsNone(checks.livez())
        self.assertEqual(checks.startupz(), "storage is being prepared")
        self.assertEqual(checks.readyz(), "storage is being prepared")
        store.isReady = True
        self.assertIsNone(checks.startupz())
        self.assertIsNone(checks.readyz())

    def test_stopping(self):
        """
        Once a graceful stop began, readiness fails, so that load balancers
        send nothing new while requests in flight drain.
        """
        store = _Store()
        store.isReady = True
        root = self.mktemp()
        os.makedirs(root)
        checks = HealthChecks(store, root)
        checks.stopping = True
        self.assertEqual(checks.readyz(), "shutting down")
        self.assertIsNone(checks.livez())
