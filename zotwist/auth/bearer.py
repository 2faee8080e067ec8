# -*- test-case-name: tests.test_auth_bearer -*-
"""
C{http.auth.bearer}: Docker token authentication.

A client that gets a 401 reads the challenge
C{WWW-Authenticate: Bearer realm="...",service="...",scope="..."}, asks the
token service at C{realm} for a token covering C{scope}, and retries with
C{Authorization: Bearer <JWT>}.  The registry never talks to the token
service: it checks the JWT's signature with the public key of the
certificate in C{cert}, its validity period, and that it was issued for
this registry (C{aud} is C{service}).  What the caller may do is then what
the token's C{access} claim lists, entries such as
C{{"type": "repository", "name": "team/app", "actions": ["pull", "push"]}}
(distribution's token spec); L{zotwist.auth.authorizer} decides from those,
not from C{http.accessControl}, as zot does.

Signatures are verified with C{cryptography}: RS256/384/512, PS256/384/512,
ES256/384/512 and EdDSA, each only with a key of the matching type.
C{alg: none}, HMAC algorithms (which would turn the public key into a
shared secret) and tokens with C{crit} headers are refused.
"""

import base64
import json
import re
from dataclasses import dataclass

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed448, ed25519, padding, rsa
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature
from twisted.internet.defer import fail, succeed
from twisted.logger import Logger
from zope.interface import implementer

from zotwist.auth.actions import SCOPE_ACTIONS, routeAction
from zotwist.auth.interfaces import ANONYMOUS, IAuthenticator, Identity
from zotwist.config import ConfigError
from zotwist.errors import RegistryError

#: Seconds of clock skew tolerated on C{exp}, C{nbf} and C{iat}, as in
#: distribution's token verification.
LEEWAY = 60

#: Tokens longer than this are refused unread.
MAX_TOKEN_SIZE = 16 * 1024

_HASHES = {"256": hashes.SHA256, "384": hashes.SHA384, "512": hashes.SHA512}
_CURVES = {"ES256": ec.SECP256R1, "ES384": ec.SECP384R1, "ES512": ec.SECP521R1}
_B64URL = re.compile(rb"[A-Za-z0-9_-]*\Z")


class TokenError(Exception):
    """
    A bearer token that does not authenticate anyone; the message says why
    (for the log, never for the client).
    """


@dataclass(frozen=True)
class Grant:
    """
    One entry of a token's C{access} claim.

    @ivar type: C{"repository"} or C{"registry"}.
    @ivar name: the repository name (or C{"catalog"}).
    @ivar actions: C{"pull"}, C{"push"}, C{"delete"}, C{"*"}.
    """

    type: str
    name: str
    actions: frozenset

    def allows(self, type: str, name: str, action: str) -> bool:
        """
        Whether this entry grants C{action} on the resource C{type:name}.
        """
        return (
            self.type == type
            and self.name == name
            and (action in self.actions or "*" in self.actions)
        )


def grantsAllow(grants, type: str, name: str, action: str) -> bool:
    """
    Whether any of C{grants} allows C{action} on C{type:name}.
    """
    return any(grant.allows(type, name, action) for grant in grants)


# -- keys -------------------------------------------------------------------


def loadVerificationKeys(path: str) -> list:
    """
    Read the public keys tokens are checked with: every certificate in a
    PEM file (a bundle allows key rotation), or PEM public keys.

    @raise ValueError: if the file is unreadable or holds no usable key.
    """
    try:
        with open(path, "rb") as f:
            data = f.read()
    except OSError as e:
        raise ValueError(f"cannot read {path}: {e.strerror or e}") from None
    keys = []
    for block in re.finditer(
        rb"-----BEGIN ([A-Z ]+)-----.+?-----END \1-----", data, re.DOTALL
    ):
        kind = block.group(1)
        try:
            if kind == b"CERTIFICATE":
                keys.append(x509.load_pem_x509_certificate(block.group(0)).public_key())
            elif kind == b"PUBLIC KEY":
                keys.append(serialization.load_pem_public_key(block.group(0)))
        except ValueError as e:
            raise ValueError(f"{path}: unreadable {kind.decode().lower()}: {e}") from None
    keys = [
        k
        for k in keys
        if isinstance(
            k,
            (
                rsa.RSAPublicKey,
                ec.EllipticCurvePublicKey,
                ed25519.Ed25519PublicKey,
                ed448.Ed448PublicKey,
            ),
        )
    ]
    if not keys:
        raise ValueError(
            f"{path}: no PEM certificate or public key (RSA, EC or Ed25519) found"
        )
    return keys


def bearerKeysFromConfig(config) -> list | None:
    """
    Load the keys for C{http.auth.bearer.cert}, so that a missing or bad
    file stops start-up with one line.

    @return: the keys, or L{None} when bearer authentication is off.
    @raise ConfigError: naming the file and key when the keys cannot be read.
    """
    auth = config.http.auth
    if auth is None or auth.bearer is None:
        return None
    try:
        return loadVerificationKeys(auth.bearer.cert)
    except ValueError as e:
        raise ConfigError(config.source, "http.auth.bearer.cert", str(e)) from None


# -- JWT ----------------------------------------------------------------------


def _b64decode(part: bytes) -> bytes:
    if not _B64URL.match(part):
        raise TokenError("not base64url")
    return base64.urlsafe_b64decode(part + b"=" * (-len(part) % 4))


def _verifySignature(alg: str, key, signingInput: bytes, signature: bytes) -> bool:
    """
    @return: whether C{signature} is C{key}'s signature of C{signingInput}
        under C{alg}; C{False} as well when the key does not fit C{alg}.
    """
    try:
        if alg[:2] in ("RS", "PS") and alg[2:] in _HASHES:
            if not isinstance(key, rsa.RSAPublicKey):
                return False
            algorithm = _HASHES[alg[2:]]()
            if alg.startswith("RS"):
                pad = padding.PKCS1v15()
            else:
                pad = padding.PSS(
                    mgf=padding.MGF1(algorithm), salt_length=padding.PSS.AUTO
                )
            key.verify(signature, signingInput, pad, algorithm)
            return True
        if alg in _CURVES:
            if not isinstance(key, ec.EllipticCurvePublicKey) or not isinstance(
                key.curve, _CURVES[alg]
            ):
                return False
            size = (key.curve.key_size + 7) // 8
            if len(signature) != 2 * size:
                return False
            r = int.from_bytes(signature[:size], "big")
            s = int.from_bytes(signature[size:], "big")
            key.verify(
                encode_dss_signature(r, s), signingInput, ec.ECDSA(_HASHES[alg[2:]]())
            )
            return True
        if alg == "EdDSA":
            if not isinstance(key, (ed25519.Ed25519PublicKey, ed448.Ed448PublicKey)):
                return False
            key.verify(signature, signingInput)
            return True
    except InvalidSignature:
        return False
    return False


def _number(claims: dict, name: str) -> float | None:
    value = claims.get(name)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TokenError(f"{name} is not a number")
    return float(value)


def verifyToken(token: bytes, keys, service: str, now: float, leeway: float = LEEWAY) -> dict:
    """
    Check a compact-serialised JWS token and return its claims.

    @param keys: the public keys of L{loadVerificationKeys}; any may sign.
    @param service: the registry's C{service}, which C{aud} must name.
    @param now: the current POSIX time.
    @raise TokenError: for anything short of a valid token for this service.
    """
    if len(token) > MAX_TOKEN_SIZE:
        raise TokenError("token too long")
    parts = token.split(b".")
    if len(parts) != 3:
        raise TokenError("not a compact JWS (three dot-separated parts)")
    try:
        header = json.loads(_b64decode(parts[0]))
        claims = json.loads(_b64decode(parts[1]))
        signature = _b64decode(parts[2])
    except (ValueError, TokenError, RecursionError) as e:
        raise TokenError(f"malformed token: {e.__class__.__name__}") from None
    if not isinstance(header, dict) or not isinstance(claims, dict):
        raise TokenError("header or claims are not JSON objects")
    alg = header.get("alg")
    if not isinstance(alg, str) or not (
        alg in _CURVES or alg == "EdDSA" or (alg[:2] in ("RS", "PS") and alg[2:] in _HASHES)
    ):
        raise TokenError(f"signature algorithm {alg!r} not accepted")
    if "crit" in header:
        raise TokenError("critical header extensions are not supported")
    signingInput = parts[0] + b"." + parts[1]
    if not any(_verifySignature(alg, key, signingInput, signature) for key in keys):
        raise TokenError("bad signature")

    expires = _number(claims, "exp")
    if expires is None:
        raise TokenError("no exp claim")
    if now > expires + leeway:
        raise TokenError("expired")
    notBefore = _number(claims, "nbf")
    if notBefore is not None and now < notBefore - leeway:
        raise TokenError("not valid yet (nbf)")
    issuedAt = _number(claims, "iat")
    if issuedAt is not None and now < issuedAt - leeway:
        raise TokenError("issued in the future (iat)")
    audience = claims.get("aud")
    audiences = audience if isinstance(audience, list) else [audience]
    if service not in audiences:
        raise TokenError(f"audience {audience!r} is not {service!r}")
    access = claims.get("access", [])
    if not isinstance(access, list):
        raise TokenError("access claim is not a list")
    return claims


def grantsFromClaims(claims: dict, now: float) -> tuple:
    """
    The token's C{access} entries as L{Grant}s.  Malformed entries grant
    nothing; an entry with its own C{exp} (a zot extension) that has passed
    is dropped.
    """
    grants = []
    for entry in claims.get("access") or ():
        if not isinstance(entry, dict):
            continue
        type_, name, actions = entry.get("type"), entry.get("name"), entry.get("actions")
        if not isinstance(type_, str) or not isinstance(name, str):
            continue
        if not isinstance(actions, list):
            continue
        expires = entry.get("exp")
        if isinstance(expires, (int, float)) and not isinstance(expires, bool):
            if now > expires:
                continue
        grants.append(
            Grant(type_, name, frozenset(a for a in actions if isinstance(a, str)))
        )
    return tuple(grants)


# -- the authenticator ---------------------------------------------------------


def _quoted(value: str) -> str:
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def scopeFor(request) -> str | None:
    """
    The token scope a request needs, for the challenge: C{repository:<name>:
    pull} to read, C{...:pull,push} to push, C{...:delete} to delete,
    C{registry:catalog:*} for the catalog, nothing for C{/v2/}.
    """
    route = getattr(request, "route", None)
    if route is None:
        return None
    if route.name == "catalog":
        return "registry:catalog:*"
    method = request.method.decode("ascii", "replace").upper()
    action = routeAction(route, method)
    name = route.params.get("name")
    if action is None or name is None:
        return None
    return f"repository:{name}:{SCOPE_ACTIONS[action]}"


@implementer(IAuthenticator)
class BearerAuthenticator:
    """
    Authenticates C{Authorization: Bearer <JWT>} requests.

    @param config: the L{zotwist.config.BearerConfig}.
    @param keys: the verification keys (L{loadVerificationKeys}).
    @param clock: an L{IReactorTime} for C{exp}/C{nbf}.
    @param fallback: an L{IAuthenticator} for requests with another (or no)
        C{Authorization} scheme, when other methods are configured too;
        without one, such requests are anonymous (no header) or refused.
    """

    _log = Logger()

    def __init__(self, config, keys, clock, fallback=None):
        self._realm = config.realm
        self._service = config.service
        self._keys = list(keys)
        self._clock = clock
        self._fallback = fallback

    def authenticate(self, request):
        headers = request.requestHeaders.getRawHeaders(b"authorization") or []
        if len(headers) > 1:
            request.bearerError = "invalid_request"
            return fail(RegistryError("UNAUTHORIZED", message="several Authorization headers"))
        if not headers:
            if self._fallback is not None:
                return self._fallback.authenticate(request)
            return succeed(ANONYMOUS)
        scheme, _, token = headers[0].strip().partition(b" ")
        if scheme.lower() != b"bearer":
            if self._fallback is not None:
                return self._fallback.authenticate(request)
            request.bearerError = "invalid_request"
            return fail(RegistryError("UNAUTHORIZED", message="a bearer token is required"))
        now = self._clock.seconds()
        try:
            claims = verifyToken(token.strip(), self._keys, self._service, now)
        except TokenError as e:
            self._log.info("Bearer token refused: {reason}", reason=str(e))
            request.bearerError = "invalid_token"
            return fail(RegistryError("UNAUTHORIZED", message="invalid bearer token"))
        subject = claims.get("sub")
        return succeed(
            Identity(
                subject if isinstance(subject, str) else "",
                method="bearer",
                claims=grantsFromClaims(claims, now),
            )
        )

    def challenge(self, request):
        parts = [f"realm={_quoted(self._realm)}", f"service={_quoted(self._service)}"]
        scope = scopeFor(request)
        if scope is not None:
            parts.append(f"scope={_quoted(scope)}")
        error = getattr(request, "bearerError", None)
        if error is not None:
            parts.append(f"error={_quoted(error)}")
        return {"WWW-Authenticate": "Bearer " + ",".join(parts)}


def buildBearerAuthenticator(config, clock, keys=None, fallback=None):
    """
    The authenticator for C{http.auth.bearer}, or L{None} when it is not
    configured.

    @param keys: already loaded keys (L{bearerKeysFromConfig}); read from
        C{cert} when not given.
    @raise ConfigError: when the keys cannot be read.
    """
    auth = config.http.auth
    if auth is None or auth.bearer is None:
        return None
    if keys is None:
        keys = bearerKeysFromConfig(config)
    return BearerAuthenticator(auth.bearer, keys, clock, fallback)


__all__ = [
    "BearerAuthenticator",
    "Grant",
    "TokenError",
    "bearerKeysFromConfig",
    "buildBearerAuthenticator",
    "grantsAllow",
    "grantsFromClaims",
    "loadVerificationKeys",
    "scopeFor",
    "verifyToken",
]
