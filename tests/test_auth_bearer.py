"""
Tests for L{zotwist.auth.bearer}: Docker token authentication.

Keys, self-signed certificates and tokens are made in the tests with
C{cryptography} (L{tests.accesshelpers}); the "token service" of the HTTP
tests is a function that reads the challenge's scope and signs what its
own little policy grants, as a real one would.
"""

import base64
import json
import os
import re
import time

from twisted.internet import reactor
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase, TestCase
from twisted.web.test.requesthelper import DummyRequest
from zope.interface.verify import verifyObject

from tests.accesshelpers import accessClaims, mintToken, signer, startSite
from tests.apihelpers import (
    assertError,
    digestOf,
    header,
    jsonBody,
    makeImage,
    pushImage,
    putManifest,
    status,
    withQuery,
)
from zotwist.auth.authorizer import RegistryAuthorizer
from zotwist.auth.bearer import (
    BearerAuthenticator,
    Grant,
    TokenError,
    grantsFromClaims,
    loadVerificationKeys,
    verifyToken,
)
from zotwist.auth.interfaces import IAuthenticator
from zotwist.config import BearerConfig
from zotwist.errors import RegistryError

SERVICE = "zotwist-test"
REALM = "https://auth.example/token"
NOW = 1_900_000_000.0


def keysOf(kind: str):
    """
    The public key of the shared signer of C{kind}.
    """
    return [signer(kind).privateKey.public_key()]


def pullTeamApp(**extra) -> dict:
    return accessClaims(
        NOW, [{"type": "repository", "name": "team/app", "actions": ["pull"]}], **extra
    )


class VerifyTokenTests(SynchronousTestCase):
    """
    L{verifyToken} accepts exactly the tokens signed for this service and
    still valid.
    """

    def verify(self, token, keys=None, now=NOW) -> dict:
        if isinstance(token, str):
            token = token.encode("ascii")
        return verifyToken(token, keys or keysOf("rsa"), SERVICE, now)

    def assertRefused(self, token, reason: str, keys=None, now=NOW) -> None:
        error = self.assertRaises(TokenError, self.verify, token, keys, now)
        self.assertIn(reason, str(error))

    def test_goodTokens(self):
        """
        RS256, PS256, ES256 and EdDSA tokens verify and give their claims.
        """
        for kind, alg in [("rsa", "RS256"), ("rsa", "PS256"), ("ec", "ES256"),
                          ("ed25519", "EdDSA")]:
            claims = self.verify(mintToken(signer(kind), pullTeamApp(), alg), keysOf(kind))
            self.assertEqual(claims["sub"], "tina", alg)
            self.assertEqual(claims["access"][0]["name"], "team/app", alg)

    def test_expired(self):
        """
        A token is good until C{exp} plus a minute of leeway, not after.
        """
        token = mintToken(signer("rsa"), pullTeamApp(exp=int(NOW) - 30))
        self.assertEqual(self.verify(token)["sub"], "tina")
        token = mintToken(signer("rsa"), pullTeamApp(exp=int(NOW) - 61))
        self.assertRefused(token, "expired")

    def test_notYetValid(self):
        """
        C{nbf} and C{iat} in the future (beyond the leeway) are refused.
        """
        self.assertRefused(mintToken(signer("rsa"), pullTeamApp(nbf=int(NOW) + 120)), "nbf")
        self.assertRefused(mintToken(signer("rsa"), pullTeamApp(iat=int(NOW) + 120)), "iat")

    def test_noExpiry(self):
        """
        A token without C{exp} would be good forever: refused.
        """
        claims = pullTeamApp()
        del claims["exp"]
        self.assertRefused(mintToken(signer("rsa"), claims), "no exp")
        self.assertRefused(mintToken(signer("rsa"), pullTeamApp(exp="soon")), "not a number")

    def test_wrongKey(self):
        """
        A token signed by another key is refused.
        """
        other = signer("rsa", fresh=True)
        self.assertRefused(mintToken(other, pullTeamApp()), "bad signature")
        self.assertRefused(
            mintToken(signer("ec"), pullTeamApp()), "bad signature", keys=keysOf("rsa")
        )

    def test_wrongAudience(self):
        """
        A token for another service is refused; a list naming this one is
        accepted.
        """
        self.assertRefused(mintToken(signer("rsa"), pullTeamApp(aud="other")), "audience")
        self.assertRefused(
            mintToken(signer("rsa"), {**pullTeamApp(), "aud": None}), "audience"
        )
        token = mintToken(signer("rsa"), pullTeamApp(aud=["other", SERVICE]))
        self.assertEqual(self.verify(token)["sub"], "tina")

    def test_tampered(self):
        """
        Changing the claims after signing (widening the access) breaks the
        signature.
        """
        token = mintToken(signer("rsa"), pullTeamApp())
        head, payload, signature = token.split(".")
        claims = json.loads(base64.urlsafe_b64decode(payload + "=="))
        claims["access"][0]["actions"] = ["pull", "push", "delete"]
        forged = base64.urlsafe_b64encode(json.dumps(claims).encode()).rstrip(b"=").decode()
        self.assertRefused(f"{head}.{forged}.{signature}", "bad signature")

    def test_algNone(self):
        """
        C{alg: none}, and HMAC with the public key as the secret, are refused.
        """
        self.assertRefused(mintToken(signer("rsa"), pullTeamApp(), "none"), "'none'")
        unsigned = mintToken(signer("rsa"), pullTeamApp(), "none")
        self.assertRefused(unsigned + "AAAA", "'none'")
        head = base64.urlsafe_b64encode(b'{"alg":"HS256","typ":"JWT"}').rstrip(b"=").decode()
        rest = mintToken(signer("rsa"), pullTeamApp()).split(".", 1)[1]
        self.assertRefused(f"{head}.{rest}", "'HS256'")

    def test_algKeyMismatch(self):
        """
        An algorithm that does not fit the key (ES256 claimed, RSA key) never
        verifies.
        """
        token = mintToken(signer("rsa"), pullTeamApp())
        head = base64.urlsafe_b64encode(b'{"alg":"ES256"}').rstrip(b"=").decode()
        self.assertRefused(head + "." + token.split(".", 1)[1], "bad signature")

    def test_critical(self):
        """
        Critical header extensions cannot be honoured, so are refused.
        """
        token = mintToken(signer("rsa"), pullTeamApp(), header={"crit": ["exp"]})
        self.assertRefused(token, "critical")

    def test_malformed(self):
        """
        Anything that is not a compact JWS is refused.
        """
        self.assertRefused("abc.def", "three")
        self.assertRefused("a b.c.d", "malformed")
        self.assertRefused("e30.bm90IGpzb24.AAAA", "malformed")
        self.assertRefused("W10.e30.AAAA", "not JSON objects")
        self.assertRefused("x" * 20000, "too long")
        deep = base64.urlsafe_b64encode(b"[" * 9000).rstrip(b"=").decode()
        self.assertRefused(f"e30.{deep}.AAAA", "malformed")

    def test_accessMustBeList(self):
        """
        An C{access} claim that is not a list is refused.
        """
        claims = {**pullTeamApp(), "access": {"type": "repository"}}
        self.assertRefused(mintToken(signer("rsa"), claims), "access")

    def test_grants(self):
        """
        Access entries become L{Grant}s; malformed entries and entries whose
        own C{exp} passed grant nothing.
        """
        grants = grantsFromClaims(
            {"access": [
                {"type": "repository", "name": "a", "actions": ["pull", "push", 7]},
                {"type": "repository", "name": "b", "actions": "pull"},
                {"type": "repository", "actions": ["pull"]},
                "junk",
                {"type": "repository", "name": "old", "actions": ["pull"], "exp": NOW - 1},
                {"type": "repository", "name": "new", "actions": ["*"], "exp": NOW + 60},
            ]},
            NOW,
        )
        self.assertEqual(
            grants,
            (Grant("repository", "a", frozenset({"pull", "push"})),
             Grant("repository", "new", frozenset({"*"}))),
        )
        self.assertTrue(grants[1].allows("repository", "new", "delete"))
        self.assertFalse(grants[0].allows("repository", "a", "delete"))


class KeyFileTests(SynchronousTestCase):
    """
    L{loadVerificationKeys} reads certificates and public keys.
    """

    def write(self, data: bytes) -> str:
        path = self.mktemp()
        with open(path, "wb") as f:
            f.write(data)
        return path

    def test_certificate(self):
        """
        The public key of a PEM certificate verifies that key's tokens.
        """
        keys = loadVerificationKeys(self.write(signer("ec").certificatePEM))
        claims = verifyToken(
            mintToken(signer("ec"), pullTeamApp()).encode(), keys, SERVICE, NOW
        )
        self.assertEqual(claims["sub"], "tina")

    def test_bundle(self):
        """
        A file with several certificates (a key rotation) accepts tokens of
        each.
        """
        rotated = signer("rsa", fresh=True)
        keys = loadVerificationKeys(
            self.write(signer("rsa").certificatePEM + rotated.certificatePEM)
        )
        for key in [signer("rsa"), rotated]:
            verifyToken(mintToken(key, pullTeamApp()).encode(), keys, SERVICE, NOW)

    def test_publicKey(self):
        """
        A bare PEM public key works too.
        """
        from cryptography.hazmat.primitives import serialization

        pem = signer("ed25519").privateKey.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
        keys = loadVerificationKeys(self.write(pem))
        verifyToken(mintToken(signer("ed25519"), pullTeamApp()).encode(), keys, SERVICE, NOW)

    def test_unusable(self):
        """
        A missing file, one without PEM blocks, or a broken certificate is
        an error naming the file.
        """
        missing = os.path.abspath(self.mktemp())
        error = self.assertRaises(ValueError, loadVerificationKeys, missing)
        self.assertIn(missing, str(error))
        garbage = self.write(b"not a certificate\n")
        self.assertIn("no PEM certificate", str(self.assertRaises(
            ValueError, loadVerificationKeys, garbage)))
        broken = self.write(b"-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n")
        self.assertIn("unreadable certificate", str(self.assertRaises(
            ValueError, loadVerificationKeys, broken)))


class AuthenticatorTests(SynchronousTestCase):
    """
    L{BearerAuthenticator} on request doubles.
    """

    def setUp(self):
        self.clock = Clock()
        self.clock.advance(NOW)
        config = BearerConfig(realm=REALM, service=SERVICE, cert="unused")
        self.authenticator = BearerAuthenticator(config, keysOf("rsa"), self.clock)

    def request(self, *authorization: bytes) -> DummyRequest:
        request = DummyRequest([b""])
        for value in authorization:
            request.requestHeaders.addRawHeader(b"authorization", value)
        return request

    def test_interface(self):
        """
        L{BearerAuthenticator} provides L{IAuthenticator}.
        """
        self.assertTrue(verifyObject(IAuthenticator, self.authenticator))

    def test_identity(self):
        """
        A good token is an identity named after C{sub}, with its grants.
        """
        token = mintToken(signer("rsa"), pullTeamApp()).encode()
        identity = self.successResultOf(
            self.authenticator.authenticate(self.request(b"Bearer " + token))
        )
        self.assertEqual((identity.name, identity.method), ("tina", "bearer"))
        self.assertEqual(identity.claims, (Grant("repository", "team/app", frozenset({"pull"})),))
        self.assertFalse(identity.anonymous)

    def test_clock(self):
        """
        Expiry is judged on the injected clock.
        """
        token = mintToken(signer("rsa"), pullTeamApp()).encode()
        self.clock.advance(3600 + 61)
        request = self.request(b"Bearer " + token)
        failure = self.failureResultOf(self.authenticator.authenticate(request), RegistryError)
        self.assertEqual(failure.value.code, "UNAUTHORIZED")
        self.assertEqual(
            self.authenticator.challenge(request)["WWW-Authenticate"],
            f'Bearer realm="{REALM}",service="{SERVICE}",error="invalid_token"',
        )

    def test_noToken(self):
        """
        Without an C{Authorization} header the caller is anonymous; with
        another scheme, or several headers, it is a 401.
        """
        identity = self.successResultOf(self.authenticator.authenticate(self.request()))
        self.assertTrue(identity.anonymous)
        for headers in [(b"Basic dXNlcjpwYXNz",), (b"Bearer a.b.c", b"Bearer d.e.f")]:
            self.failureResultOf(
                self.authenticator.authenticate(self.request(*headers)), RegistryError
            )

    def test_fallback(self):
        """
        With a fallback authenticator, other schemes go to it.
        """
        class Fallback:
            def authenticate(self, request):
                from twisted.internet.defer import succeed

                from zotwist.auth.interfaces import Identity
                return succeed(Identity("basic-user", method="htpasswd"))

        config = BearerConfig(realm=REALM, service=SERVICE, cert="unused")
        authenticator = BearerAuthenticator(config, keysOf("rsa"), self.clock, Fallback())
        identity = self.successResultOf(
            authenticator.authenticate(self.request(b"Basic dXNlcjpwYXNz"))
        )
        self.assertEqual(identity.name, "basic-user")

    def test_quoting(self):
        """
        Quotes in the realm cannot break the challenge's syntax.
        """
        config = BearerConfig(realm='https://a/"x"', service="s", cert="unused")
        authenticator = BearerAuthenticator(config, [], self.clock)
        self.assertEqual(
            authenticator.challenge(self.request())["WWW-Authenticate"],
            'Bearer realm="https://a/\\"x\\"",service="s"',
        )


def parseChallenge(value: str) -> dict:
    """
    The parameters of a C{Bearer} challenge.
    """
    scheme, _, rest = value.partition(" ")
    assert scheme == "Bearer", value
    return {k: v.replace('\\"', '"') for k, v in re.findall(r'(\w+)="((?:[^"\\]|\\.)*)"', rest)}


class TokenService:
    """
    A token service for the tests: reads a challenge's scope and grants,
    per user, what its own table allows of it.
    """

    def __init__(self, grants: dict):
        self.grants = grants

    def token(self, user: str, challenge: dict, **claims) -> str:
        access = []
        for scope in challenge.get("scope", "").split():
            type_, name, actions = scope.split(":")
            allowed = self.grants.get(user, {}).get(name, set())
            granted = [a for a in actions.split(",") if a in allowed or "*" in allowed]
            access.append({"type": type_, "name": name, "actions": granted})
        now = time.time()
        return mintToken(
            signer("ec"),
            accessClaims(now, access, service=challenge["service"], sub=user, **claims),
        )


class HTTPFlowTests(TestCase):
    """
    The Docker token flow over real HTTP: 401 with a challenge naming the
    scope, a token for that scope, the retried request.
    """

    async def setUp(self):
        config = BearerConfig(realm=REALM, service=SERVICE, cert="unused")
        authenticator = BearerAuthenticator(config, keysOf("ec"), reactor)
        self.site = await startSite(
            self, authenticator, lambda store: RegistryAuthorizer(None, store)
        )
        self.service = TokenService({
            "puller": {"team/app": {"pull"}},
            "pusher": {"team/app": {"pull", "push"}, "team/base": {"pull"}},
            "admin": {"team/app": {"*"}, "team/base": {"*"}, "secret/x": {"*"},
                      "catalog": {"*"}},
        })

    def bearer(self, token: str):
        return self.site.withHeaders({"Authorization": [f"Bearer {token}"]}, "bearer")

    async def challengeFor(self, method: str, path: str, **kwargs) -> dict:
        """
        Send an anonymous request; insist on a 401 with a Bearer challenge.
        """
        resp = await self.site.client.request(method, self.site.url + path, **kwargs)
        if method == "HEAD":
            self.assertEqual(resp.code, 401)
        else:
            await assertError(resp, 401, "UNAUTHORIZED")
        return parseChallenge(header(resp, "WWW-Authenticate"))

    async def asUser(self, user: str, method: str, path: str, **kwargs):
        """
        The whole flow: challenge, token from the service, retry.

        @return: the retried response.
        """
        challenge = await self.challengeFor(method, path, **kwargs)
        token = self.service.token(user, challenge)
        return await self.bearer(token).client.request(method, self.site.url + path, **kwargs)

    async def admin(self):
        token = self.service.token(
            "admin", {"service": SERVICE,
                      "scope": "repository:team/app:pull,push,delete "
                               "repository:team/base:pull,push repository:secret/x:pull,push"},
        )
        return self.bearer(token)

    async def test_challenges(self):
        """
        Each 401 names the realm, the service and the scope the request
        needs: pull to read, pull and push to push, delete to delete, the
        catalog's own scope, and none for C{/v2/}.
        """
        for method, path, scope in [
            ("GET", "/v2/", None),
            ("GET", "/v2/_catalog", "registry:catalog:*"),
            ("GET", "/v2/team/app/manifests/v1", "repository:team/app:pull"),
            ("HEAD", "/v2/team/app/blobs/sha256:" + "a" * 64, "repository:team/app:pull"),
            ("GET", "/v2/team/app/tags/list", "repository:team/app:pull"),
            ("POST", "/v2/team/app/blobs/uploads/", "repository:team/app:pull,push"),
            ("PUT", "/v2/team/app/manifests/v1", "repository:team/app:pull,push"),
            ("DELETE", "/v2/team/app/manifests/v1", "repository:team/app:delete"),
        ]:
            challenge = await self.challengeFor(method, path)
            expected = {"realm": REALM, "service": SERVICE}
            if scope is not None:
                expected["scope"] = scope
            self.assertEqual(challenge, expected, f"{method} {path}")

    async def test_pull(self):
        """
        A token granting pull reads; one for another repository or without
        pull is refused with 403.
        """
        image = await pushImage(await self.admin(), "team/app", "v1", "pull me")
        resp = await self.asUser("puller", "GET", "/v2/team/app/manifests/v1")
        self.assertEqual(resp.code, 200)
        self.assertEqual(await resp.content(), image.manifest)
        resp = await self.asUser("pusher", "GET", f"/v2/team/app/blobs/{digestOf(image.config)}")
        self.assertEqual(resp.code, 200)
        await resp.content()
        resp = await self.asUser("nobody", "GET", "/v2/team/app/tags/list")
        await assertError(resp, 403, "DENIED")

    async def test_push(self):
        """
        Pushing a whole image needs push; a pull-only token gets 403 on the
        first step.
        """
        challenge = await self.challengeFor("POST", "/v2/team/app/blobs/uploads/")
        pusher = self.bearer(self.service.token("pusher", challenge))
        image = await pushImage(pusher, "team/app", "v1", "pushed")
        resp = await self.admin_get("/v2/team/app/manifests/v1")
        self.assertEqual(header(resp, "Docker-Content-Digest"), image.digest)
        puller = self.bearer(self.service.token("puller", challenge))
        self.assertEqual(
            await status(puller, "POST", f"{self.site.url}/v2/team/app/blobs/uploads/",
                         data=b""),
            403,
        )
        resp = await putManifest(puller, "team/app", "v2", image.manifest, image.mediaType)
        await assertError(resp, 403, "DENIED")

    async def admin_get(self, path: str):
        admin = await self.admin()
        resp = await admin.client.get(self.site.url + path)
        await resp.content()
        return resp

    async def test_delete(self):
        """
        Deleting needs the delete action (or C{*}).
        """
        await pushImage(await self.admin(), "team/app", "v1", "delete me")
        resp = await self.asUser("pusher", "DELETE", "/v2/team/app/manifests/v1")
        await assertError(resp, 403, "DENIED")
        resp = await self.asUser("admin", "DELETE", "/v2/team/app/manifests/v1")
        self.assertEqual(resp.code, 202)

    async def test_catalog(self):
        """
        The catalog needs the C{registry:catalog:*} grant, and then lists
        every repository.
        """
        admin = await self.admin()
        for repo in ["team/app", "secret/x"]:
            await pushImage(admin, repo, "v1", repo)
        resp = await self.asUser("puller", "GET", "/v2/_catalog")
        await assertError(resp, 403, "DENIED")
        challenge = await self.challengeFor("GET", "/v2/_catalog")
        token = mintToken(signer("ec"), accessClaims(
            time.time(), [{"type": "registry", "name": "catalog", "actions": ["*"]}],
            service=challenge["service"]))
        resp = await self.bearer(token).client.get(f"{self.site.url}/v2/_catalog")
        self.assertEqual((await jsonBody(resp))["repositories"], ["secret/x", "team/app"])

    async def test_mountNeedsPullOnSource(self):
        """
        A mount from a repository the token cannot pull falls back to a new
        upload session.
        """
        admin = await self.admin()
        secret = await pushImage(admin, "secret/x", "v1", "secret")
        base = await pushImage(admin, "team/base", "v1", "base")
        challenge = {"service": SERVICE,
                     "scope": "repository:team/app:pull,push repository:team/base:pull"}
        pusher = self.bearer(self.service.token("pusher", challenge))
        for source, image, code in [("secret/x", secret, 202), ("team/base", base, 201)]:
            url = withQuery(f"{self.site.url}/v2/team/app/blobs/uploads/",
                            [("mount", digestOf(image.layers[0])), ("from", source)])
            self.assertEqual(await status(pusher, "POST", url, data=b""), code, source)

    async def test_badTokens(self):
        """
        An expired token, one for another service, and one signed by an
        unknown key are 401s with C{error="invalid_token"}.
        """
        now = time.time()
        access = [{"type": "repository", "name": "team/app", "actions": ["pull"]}]
        for token in [
            mintToken(signer("ec"), accessClaims(now - 7200, access)),
            mintToken(signer("ec"), accessClaims(now, access, service="elsewhere")),
            mintToken(signer("rsa"), accessClaims(now, access)),
        ]:
            resp = await self.bearer(token).client.get(
                f"{self.site.url}/v2/team/app/tags/list"
            )
            await assertError(resp, 401, "UNAUTHORIZED")
            self.assertEqual(
                parseChallenge(header(resp, "WWW-Authenticate")),
                {"realm": REALM, "service": SERVICE, "scope": "repository:team/app:pull",
                 "error": "invalid_token"},
            )

    async def test_baseWithToken(self):
        """
        Any valid token opens C{/v2/}.
        """
        token = mintToken(signer("ec"), accessClaims(time.time(), []))
        self.assertEqual(await status(self.bearer(token), "GET", f"{self.site.url}/v2/"), 200)

    async def test_newImageStaysUnwritable(self):
        """
        A token for one repository does not let its holder push to another.
        """
        challenge = {"service": SERVICE, "scope": "repository:team/app:pull,push"}
        pusher = self.bearer(self.service.token("pusher", challenge))
        image = makeImage("elsewhere")
        resp = await putManifest(pusher, "team/other", "v1", image.manifest, image.mediaType)
        await assertError(resp, 403, "DENIED")
