# -*- test-case-name: tests.test_tls -*-
"""
HTTPS for the registry: C{http.tls} (C{cert}, C{key}, C{cacert}).

The C{ssl:} strport cannot ask for client certificates, so the server's
L{CertificateOptions} are built here, in code, and the HTTP service listens
with C{SSL4ServerEndpoint}.  What the options promise:

  - TLS 1.2 and newer only; for TLS 1.2 only ECDHE key exchange with AES-GCM
    or ChaCha20-Poly1305 (zot's list).  TLS 1.3 suites are all AEAD and are
    left as OpenSSL has them.
  - With C{cacert}, client certificates are asked for and verified against
    it (mutual TLS).  When another way to log in exists (htpasswd, LDAP) a
    certificate is optional; otherwise it is required, and a client without
    one, or with one from another CA, is refused during the handshake.  A
    certificate that is presented must verify in either case.

Everything that can be wrong with the files (missing, unreadable, not PEM,
key not matching the certificate, expired or not yet valid, a CA file with
no certificate) is found before the server starts, by L{serverTLSOptions},
and reported as one L{ConfigError} line naming the file and the key.
"""

import datetime
import re

from cryptography import x509
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from OpenSSL import SSL
from OpenSSL.crypto import X509, PKey
from twisted.internet.ssl import AcceptableCiphers, CertificateOptions, TLSVersion

from zotwist.config import ConfigError

#: TLS 1.2 suites offered: forward secrecy (ECDHE) and an AEAD cipher only.
TLS12_CIPHERS = ":".join(
    [
        "ECDHE-ECDSA-AES128-GCM-SHA256",
        "ECDHE-RSA-AES128-GCM-SHA256",
        "ECDHE-ECDSA-AES256-GCM-SHA384",
        "ECDHE-RSA-AES256-GCM-SHA384",
        "ECDHE-ECDSA-CHACHA20-POLY1305",
        "ECDHE-RSA-CHACHA20-POLY1305",
    ]
)

_PEM_CERTIFICATE = re.compile(
    rb"-----BEGIN CERTIFICATE-----\r?\n.+?\r?\n-----END CERTIFICATE-----", re.DOTALL
)


def _utcnow() -> datetime.datetime:
    """
    The current time, timezone-aware, for expiry checks.
    """
    return datetime.datetime.now(datetime.timezone.utc)


def _readFile(source: str, keyPath: str, path: str, what: str) -> bytes:
    """
    Read a certificate or key file.

    @raise ConfigError: naming C{keyPath} and the file if it cannot be read.
    """
    try:
        with open(path, "rb") as f:
            return f.read()
    except IsADirectoryError:
        raise ConfigError(source, keyPath, f"{path}: is a directory, expected a {what}") from None
    except OSError as e:
        raise ConfigError(
            source, keyPath, f"cannot read the {what} {path}: {e.strerror or e}"
        ) from None


def loadCertificates(
    source: str, keyPath: str, path: str, what: str = "PEM certificate file"
) -> "list[x509.Certificate]":
    """
    Read every PEM certificate of a file, in order.

    @raise ConfigError: if the file cannot be read or holds no certificate.
    """
    data = _readFile(source, keyPath, path, what)
    blocks = _PEM_CERTIFICATE.findall(data)
    if not blocks:
        raise ConfigError(source, keyPath, f"{path}: no PEM certificate found in the file")
    certificates = []
    for index, block in enumerate(blocks):
        try:
            certificates.append(x509.load_pem_x509_certificate(block))
        except ValueError as e:
            raise ConfigError(
                source, keyPath, f"{path}: certificate {index + 1} is not valid: {e}"
            ) from None
    return certificates


def loadPrivateKey(source: str, keyPath: str, path: str):
    """
    Read an unencrypted PEM private key.

    @raise ConfigError: if it cannot be read, is not a PEM key, or is
        encrypted (nobody could type its passphrase into a daemon).
    """
    data = _readFile(source, keyPath, path, "PEM private key file")
    try:
        return serialization.load_pem_private_key(data, password=None)
    except TypeError:
        raise ConfigError(
            source, keyPath, f"{path}: the private key is encrypted; give an unencrypted key"
        ) from None
    except (ValueError, UnsupportedAlgorithm) as e:
        reason = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise ConfigError(
            source, keyPath, f"{path}: not a PEM private key ({reason})"
        ) from None


def _describeName(certificate: x509.Certificate) -> str:
    """
    The subject of C{certificate}, for messages.
    """
    return certificate.subject.rfc4514_string() or "(empty subject)"


def checkValidity(
    source: str,
    keyPath: str,
    path: str,
    certificate: x509.Certificate,
    now: datetime.datetime | None = None,
) -> None:
    """
    Refuse a certificate that expired or is not valid yet.

    @raise ConfigError: naming the certificate and the dates.
    """
    now = now or _utcnow()
    if certificate.not_valid_after_utc < now:
        raise ConfigError(
            source,
            keyPath,
            f"{path}: the certificate {_describeName(certificate)} expired on "
            f"{certificate.not_valid_after_utc.isoformat()}",
        )
    if certificate.not_valid_before_utc > now:
        raise ConfigError(
            source,
            keyPath,
            f"{path}: the certificate {_describeName(certificate)} is not valid before "
            f"{certificate.not_valid_before_utc.isoformat()}",
        )


def _samePublicKey(certificate: x509.Certificate, key) -> bool:
    """
    Whether C{key} is the private half of C{certificate}'s public key.
    """
    spki = serialization.PublicFormat.SubjectPublicKeyInfo
    der = serialization.Encoding.DER
    return certificate.public_key().public_bytes(der, spki) == key.public_key().public_bytes(
        der, spki
    )


def serverTLSOptions(
    tlsConfig,
    requireClientCertificate: bool,
    source: str = "<config>",
    now: datetime.datetime | None = None,
) -> CertificateOptions:
    """
    Build and check the server's TLS options from C{http.tls}.

    @param tlsConfig: a L{zotwist.config.TLSConfig} with C{cert} and C{key}.
    @param requireClientCertificate: with a C{cacert}, refuse clients that do
        not present a certificate (no other way to log in is configured);
        otherwise a certificate is optional, but verified when presented.
    @param source: the config file's name, for messages.
    @param now: the time the certificates must be valid at (tests).
    @return: options whose context was already built once, so that any
        problem OpenSSL itself finds shows now and not at the first client.
    @raise ConfigError: for anything wrong with the files.
    """
    if not tlsConfig.cert:
        raise ConfigError(source, "http.tls.cert", "required when http.tls is given")
    if not tlsConfig.key:
        raise ConfigError(source, "http.tls.key", "required when http.tls is given")
    chain = loadCertificates(source, "http.tls.cert", tlsConfig.cert)
    leaf = chain[0]
    checkValidity(source, "http.tls.cert", tlsConfig.cert, leaf, now)
    key = loadPrivateKey(source, "http.tls.key", tlsConfig.key)
    if not _samePublicKey(leaf, key):
        raise ConfigError(
            source,
            "http.tls.key",
            f"{tlsConfig.key} does not match the certificate in {tlsConfig.cert} "
            f"({_describeName(leaf)})",
        )
    options: dict = {
        "privateKey": PKey.from_cryptography_key(key),
        "certificate": X509.from_cryptography(leaf),
        "extraCertChain": [X509.from_cryptography(c) for c in chain[1:]],
        "raiseMinimumTo": TLSVersion.TLSv1_2,
        "acceptableCiphers": AcceptableCiphers.fromOpenSSLCipherString(TLS12_CIPHERS),
    }
    if tlsConfig.cacert:
        authorities = loadCertificates(
            source, "http.tls.cacert", tlsConfig.cacert, "PEM CA certificate file"
        )
        current = [c for c in authorities if c.not_valid_after_utc >= (now or _utcnow())]
        if not current:
            raise ConfigError(
                source,
                "http.tls.cacert",
                f"{tlsConfig.cacert}: every CA certificate in the file has expired",
            )
        options.update(
            verify=True,
            caCerts=[X509.from_cryptography(c) for c in authorities],
            requireCertificate=requireClientCertificate,
        )
    try:
        tlsOptions = CertificateOptions(**options)
        tlsOptions.getContext()
    except SSL.Error as e:
        raise ConfigError(
            source, "http.tls", f"OpenSSL refused the certificate or key: {e}"
        ) from None
    return tlsOptions


__all__ = [
    "TLS12_CIPHERS",
    "checkValidity",
    "loadCertificates",
    "loadPrivateKey",
    "serverTLSOptions",
]
