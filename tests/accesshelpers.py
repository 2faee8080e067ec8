"""
Helpers for the access-control tests: a registry site built by hand around
a real L{LocalStore} and listening on loopback, callers that present an
identity on every request, and bearer tokens signed in the test.

L{HeaderAuthenticator} is a TEST-ONLY authenticator: it believes the
C{X-Test-User} and C{X-Test-Groups} headers, so that the authorization
tests do not depend on the htpasswd, LDAP or certificate checkers, which
are built separately.  Nothing in zotwist uses it; a registry that trusted
such headers would let anyone be anyone.
"""

import base64
import datetime
import json
import os
from dataclasses import dataclass
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, padding, rsa
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature
from cryptography.x509.oid import NameOID
from treq.client import HTTPClient
from twisted.internet import reactor as _reactor
from twisted.internet.defer import fail, succeed
from twisted.internet.endpoints import TCP4ServerEndpoint
from twisted.web.client import Agent, HTTPConnectionPool
from zope.interface import implementer

from zotwist.auth.interfaces import ANONYMOUS, IAuthenticator, Identity
from zotwist.auth.policy import AccessPolicy
from zotwist.config import parseConfig
from zotwist.errors import RegistryError
from zotwist.storage.local import LocalStore
from zotwist.threads import InlineRunner
from zotwist.web.site import RegistrySite


@implementer(IAuthenticator)
class HeaderAuthenticator:
    """
    TEST ONLY: the caller is whoever C{X-Test-User} says, in the groups
    C{X-Test-Groups} lists (as an LDAP directory would report them); no
    header is anonymous, and C{X-Test-User: !bad} is a failed login.
    """

    def authenticate(self, request):
        name = request.getHeader("x-test-user")
        if name is None:
            return succeed(ANONYMOUS)
        if name == "!bad":
            return fail(RegistryError("UNAUTHORIZED", message="bad test credentials"))
        groups = request.getHeader("x-test-groups") or ""
        return succeed(
            Identity(
                name,
                frozenset(g for g in groups.split(",") if g),
                method="test",
            )
        )

    def challenge(self, request):
        return {"WWW-Authenticate": 'Basic realm="zotwist-test"'}


class HeaderClient:
    """
    A treq client that adds fixed headers to every request, so that the
    helpers of L{tests.apihelpers} act as one caller.
    """

    def __init__(self, client: HTTPClient, headers: dict):
        self._client = client
        self._headers = {k: list(v) for k, v in headers.items()}

    def request(self, method, url, **kwargs):
        headers = dict(self._headers)
        for key, value in (kwargs.pop("headers", None) or {}).items():
            headers[key] = value if isinstance(value, list) else [value]
        return self._client.request(method, url, headers=headers, **kwargs)

    def get(self, url, **kwargs):
        return self.request("GET", url, **kwargs)

    def head(self, url, **kwargs):
        return self.request("HEAD", url, **kwargs)

    def put(self, url, **kwargs):
        return self.request("PUT", url, **kwargs)

    def post(self, url, **kwargs):
        return self.request("POST", url, **kwargs)

    def patch(self, url, **kwargs):
        return self.request("PATCH", url, **kwargs)

    def delete(self, url, **kwargs):
        return self.request("DELETE", url, **kwargs)


@dataclass
class CallerView:
    """
    A registry as one caller sees it: what the helpers of
    L{tests.apihelpers} take as C{reg}.
    """

    url: str
    client: Any
    label: str


@dataclass
class AccessSite:
    """
    A registry site on loopback for one test.
    """

    url: str
    root: str
    store: LocalStore
    client: HTTPClient

    def as_(self, user: str | None, groups: "list[str] | None" = None) -> CallerView:
        """
        The registry as C{user} (L{None}: anonymous) sees it.
        """
        headers = {}
        if user is not None:
            headers["X-Test-User"] = [user]
        if groups:
            headers["X-Test-Groups"] = [",".join(groups)]
        return CallerView(self.url, HeaderClient(self.client, headers), user or "anonymous")

    def withHeaders(self, headers: dict, label: str) -> CallerView:
        """
        The registry as a caller sending C{headers} (a token, say) sees it.
        """
        return CallerView(self.url, HeaderClient(self.client, headers), label)


async def startSite(
    testCase, authenticator=None, authorizer=None, limiter=None, audit=None, store=None
) -> AccessSite:
    """
    Serve a L{RegistrySite} on 127.0.0.1 for C{testCase}.

    @param authorizer: a callable C{store -> IAuthorizer}, or an authorizer.
    """
    if store is None:
        root = os.path.abspath(testCase.mktemp())
        store = LocalStore(root, InlineRunner())
        await store.startService()
    if callable(authorizer) and not hasattr(authorizer, "authorize"):
        authorizer = authorizer(store)
    site = RegistrySite(store, authenticator, authorizer, limiter=limiter, audit=audit)
    port = await TCP4ServerEndpoint(_reactor, 0, interface="127.0.0.1").listen(site)
    testCase.addCleanup(port.stopListening)
    pool = HTTPConnectionPool(_reactor, persistent=False)
    testCase.addCleanup(pool.closeCachedConnections)
    return AccessSite(
        url=f"http://127.0.0.1:{port.getHost().port}",
        root=store.root,
        store=store,
        client=HTTPClient(Agent(_reactor, pool=pool)),
    )


def loadPolicy(accessControl: dict) -> AccessPolicy:
    """
    Load an C{accessControl} section through the config loader (with
    bearer settings, which count as authentication and read no file).
    """
    config = parseConfig(
        {
            "storage": {"rootDirectory": "/unused"},
            "http": {
                "auth": {"bearer": {"realm": "r", "service": "s", "cert": "c"}},
                "accessControl": accessControl,
            },
        }
    )
    return AccessPolicy(config.http.accessControl)


# -- keys, certificates and tokens ---------------------------------------------


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


@dataclass
class Signer:
    """
    A token service's key pair and its self-signed certificate.
    """

    kind: str
    privateKey: Any
    certificatePEM: bytes

    def writeCertificate(self, path: str) -> str:
        with open(path, "wb") as f:
            f.write(self.certificatePEM)
        return path


_SIGNERS: dict = {}


def signer(kind: str = "rsa", fresh: bool = False) -> Signer:
    """
    A key pair of C{kind} (C{rsa}, C{ec} (P-256) or C{ed25519}) with a
    self-signed certificate; made once per kind and reused, unless
    C{fresh}.
    """
    if kind in _SIGNERS and not fresh:
        return _SIGNERS[kind]
    if kind == "rsa":
        key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        algorithm = hashes.SHA256()
    elif kind == "ec":
        key = ec.generate_private_key(ec.SECP256R1())
        algorithm = hashes.SHA256()
    elif kind == "ed25519":
        key = ed25519.Ed25519PrivateKey.generate()
        algorithm = None
    else:
        raise ValueError(kind)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, f"test token service {kind}")])
    now = datetime.datetime.now(datetime.timezone.utc)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=30))
        .sign(key, algorithm)
    )
    made = Signer(kind, key, certificate.public_bytes(serialization.Encoding.PEM))
    if not fresh:
        _SIGNERS[kind] = made
    return made


def mintToken(signer: Signer, claims: dict, alg: str | None = None, header=None) -> str:
    """
    Sign C{claims} as a compact JWS with C{signer}'s key.

    @param alg: the algorithm; by default RS256, ES256 or EdDSA after the
        key.  C{"none"} produces an unsigned token.
    @param header: extra header fields.
    """
    if alg is None:
        alg = {"rsa": "RS256", "ec": "ES256", "ed25519": "EdDSA"}[signer.kind]
    head = {"typ": "JWT", "alg": alg}
    head.update(header or {})
    signingInput = (
        _b64(json.dumps(head).encode()) + "." + _b64(json.dumps(claims).encode())
    ).encode("ascii")
    key = signer.privateKey
    if alg == "none":
        signature = b""
    elif alg.startswith("RS"):
        signature = key.sign(signingInput, padding.PKCS1v15(), hashes.SHA256())
    elif alg.startswith("PS"):
        signature = key.sign(
            signingInput,
            padding.PSS(mgf=padding.MGF1(hashes.SHA256()), salt_length=32),
            hashes.SHA256(),
        )
    elif alg.startswith("ES"):
        r, s = decode_dss_signature(key.sign(signingInput, ec.ECDSA(hashes.SHA256())))
        signature = r.to_bytes(32, "big") + s.to_bytes(32, "big")
    elif alg == "EdDSA":
        signature = key.sign(signingInput)
    else:
        raise ValueError(alg)
    return signingInput.decode("ascii") + "." + _b64(signature)


def accessClaims(now: float, access: list, service: str = "zotwist-test", **extra) -> dict:
    """
    Claims a token service issues: subject, audience, a one-hour validity
    and the C{access} list.
    """
    claims = {
        "iss": "test-token-service",
        "sub": "tina",
        "aud": service,
        "iat": int(now),
        "nbf": int(now) - 1,
        "exp": int(now) + 3600,
        "access": access,
    }
    claims.update(extra)
    return claims


__all__ = [
    "AccessSite",
    "CallerView",
    "HeaderAuthenticator",
    "HeaderClient",
    "Signer",
    "accessClaims",
    "loadPolicy",
    "mintToken",
    "signer",
    "startSite",
]
