"""
The access settings through the whole service, as C{twistd zot} builds it
from a config file (L{tests.support.startRegistry}): access control,
bearer tokens, the rate limit and the audit log are wired in.
"""

import json
import os
import time

from twisted.trial.unittest import TestCase

from tests.accesshelpers import CallerView, HeaderClient, accessClaims, mintToken, signer
from tests.apihelpers import assertError, header, pushImage, status
from tests.support import startRegistry


def bearer(reg, token: str) -> CallerView:
    return CallerView(reg.url, HeaderClient(reg.client, {"Authorization": [f"Bearer {token}"]}),
                      "bearer")


class WiringTests(TestCase):
    """
    Each access key of the config changes what the running registry does.
    """

    async def test_anonymousOnlyPolicies(self):
        """
        Without authentication, anonymous-only policies decide: reading
        C{pub/**} is open, everything else is refused.
        """
        reg = await startRegistry(self, {"http": {"accessControl": {"repositories": {
            "pub/**": {"anonymousPolicy": ["read", "create"]},
        }}}})
        await pushImage(reg, "pub/app", "v1", "public")
        self.assertEqual(await status(reg, "GET", f"{reg.url}/v2/pub/app/manifests/v1"), 200)
        self.assertEqual(await status(reg, "DELETE", f"{reg.url}/v2/pub/app/manifests/v1"), 401)
        self.assertEqual(
            await status(reg, "POST", f"{reg.url}/v2/private/blobs/uploads/", data=b""), 401
        )
        self.assertEqual(await status(reg, "GET", f"{reg.url}/v2/"), 200)

    async def test_bearer(self):
        """
        With bearer tokens and an anonymous read policy: anonymous callers
        read, a push is challenged with the scope, a token with push pushes.
        """
        certificate = signer("rsa").writeCertificate(os.path.abspath(self.mktemp()))
        reg = await startRegistry(self, {"http": {
            "auth": {"bearer": {"realm": "https://auth.example/token",
                                "service": "zotwist-test", "cert": certificate}},
            "accessControl": {"repositories": {"**": {"anonymousPolicy": ["read"]}}},
        }})
        resp = await reg.client.post(f"{reg.url}/v2/team/app/blobs/uploads/", data=b"")
        self.assertEqual(
            header(resp, "WWW-Authenticate"),
            'Bearer realm="https://auth.example/token",service="zotwist-test",'
            'scope="repository:team/app:pull,push"',
        )
        await assertError(resp, 401, "UNAUTHORIZED")
        token = mintToken(signer("rsa"), accessClaims(
            time.time(),
            [{"type": "repository", "name": "team/app", "actions": ["pull", "push"]}],
        ))
        await pushImage(bearer(reg, token), "team/app", "v1", "pushed with a token")
        self.assertEqual(await status(reg, "GET", f"{reg.url}/v2/team/app/manifests/v1"), 200)
        # Token holders may do more than anonymous callers, so Docker is
        # sent to get a token at /v2/, though every policy is anonymous.
        self.assertEqual(await status(reg, "GET", f"{reg.url}/v2/"), 200)
        docker = {"User-Agent": ["docker/27.3.1 go/go1.22.7"]}
        resp = await reg.client.get(f"{reg.url}/v2/", headers=docker)
        await assertError(resp, 401, "UNAUTHORIZED")
        self.assertEqual(
            header(resp, "WWW-Authenticate"),
            'Bearer realm="https://auth.example/token",service="zotwist-test"',
        )

    async def test_ratelimit(self):
        """
        C{http.ratelimit} answers 429 over the limit.
        """
        reg = await startRegistry(self, {"http": {"ratelimit": {
            "methods": [{"method": "DELETE", "rate": 1}]}}})
        url = f"{reg.url}/v2/a/manifests/v1"
        self.assertEqual(await status(reg, "DELETE", url), 404)
        resp = await reg.client.delete(url)
        await assertError(resp, 429, "TOOMANYREQUESTS")
        self.assertEqual(await status(reg, "GET", f"{reg.url}/v2/"), 200)

    async def test_audit(self):
        """
        C{log.audit} receives a line per change while the registry runs.
        """
        path = os.path.abspath(self.mktemp())
        reg = await startRegistry(self, {"log": {"audit": path}})
        await pushImage(reg, "team/app", "v1", "audited")
        with open(path, encoding="utf-8") as f:
            records = [json.loads(line) for line in f]
        self.assertEqual(len(records), 5)
        self.assertEqual(records[-1]["reference"], "v1")
        self.assertEqual(records[-1]["auth"], "anonymous")
