# -*- test-case-name: tests.test_tls -*-
"""
Client certificates as identities: C{http.auth.mtls}.

The TLS handshake has verified the certificate against C{http.tls.cacert}
before any of this runs; here only the user name is read from it, as zot
does: the C{identityAttributes} are tried in order (default
C{["CommonName"]}) and the first one the certificate has wins.

  - C{CommonName} (C{CN}): the subject's common name.
  - C{Subject} (C{DN}): the whole subject, RFC 4514 (C{CN=alice,O=Example}).
  - C{URI} (C{URL}): the URI SAN at C{uriSanIndex}; with C{uriSanPattern}
    (a regular expression), its first capture group, e.g. the workload of a
    SPIFFE id.
  - C{DNSName} (C{DNS}): the DNS SAN at C{dnsSanIndex}.
  - C{Email} (C{rfc822name}): the e-mail SAN at C{emailSanIndex}.
"""

import re

from cryptography import x509
from cryptography.x509.oid import NameOID
from twisted.cred.checkers import ICredentialsChecker
from twisted.cred.error import UnauthorizedLogin
from twisted.internet.defer import fail, succeed
from twisted.internet.interfaces import ISSLTransport
from twisted.logger import Logger
from zope.interface import implementer

from zotwist.auth.realm import AvatarId, IClientCertificate

#: zot's default when C{identityAttributes} is empty.
DEFAULT_ATTRIBUTES = ("CommonName",)

_ALIASES = {
    "commonname": "commonname",
    "cn": "commonname",
    "subject": "subject",
    "dn": "subject",
    "uri": "uri",
    "url": "uri",
    "dnsname": "dnsname",
    "dns": "dnsname",
    "email": "email",
    "rfc822name": "email",
}


class NoIdentity(Exception):
    """
    The certificate lacks the attribute asked for.
    """


def _sans(certificate: x509.Certificate, kind) -> list:
    """
    The subject alternative names of one kind, in certificate order.
    """
    try:
        extension = certificate.extensions.get_extension_for_class(x509.SubjectAlternativeName)
    except x509.ExtensionNotFound:
        return []
    return extension.value.get_values_for_type(kind)


def _indexed(values: list, index: int, what: str) -> str:
    """
    The value at C{index}, or L{NoIdentity}.
    """
    if not values:
        raise NoIdentity(f"no {what} in the certificate")
    if index >= len(values):
        raise NoIdentity(f"no {what} at index {index} (the certificate has {len(values)})")
    return values[index]


def identityFromAttribute(certificate: x509.Certificate, attribute: str, mtlsConfig) -> str:
    """
    Read one identity attribute.

    @raise NoIdentity: if the certificate does not have it.
    @raise ValueError: for an attribute name zot does not know.
    """
    kind = _ALIASES.get(attribute.strip().lower())
    if kind == "commonname":
        names = certificate.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
        if not names or not names[0].value:
            raise NoIdentity("no common name in the certificate subject")
        return str(names[0].value)
    if kind == "subject":
        return certificate.subject.rfc4514_string()
    if kind == "uri":
        uri = _indexed(
            _sans(certificate, x509.UniformResourceIdentifier),
            getattr(mtlsConfig, "uriSanIndex", 0),
            "URI SAN",
        )
        pattern = getattr(mtlsConfig, "uriSanPattern", None)
        if pattern:
            match = re.search(pattern, uri)
            if match is None or match.lastindex is None:
                raise NoIdentity("the URI SAN does not match uriSanPattern")
            return match.group(1)
        return uri
    if kind == "dnsname":
        return _indexed(
            _sans(certificate, x509.DNSName), getattr(mtlsConfig, "dnsSanIndex", 0), "DNS SAN"
        )
    if kind == "email":
        return _indexed(
            _sans(certificate, x509.RFC822Name),
            getattr(mtlsConfig, "emailSanIndex", 0),
            "e-mail SAN",
        )
    raise ValueError(f"unknown identity attribute {attribute!r}")


def identityFromCertificate(certificate: x509.Certificate, mtlsConfig=None) -> str:
    """
    The user name a client certificate stands for.

    @param mtlsConfig: a L{zotwist.config.MTLSConfig}, or L{None} for zot's
        defaults (the common name).
    @raise NoIdentity: if none of the attributes is in the certificate.
    """
    attributes = tuple(getattr(mtlsConfig, "identityAttributes", ()) or ()) or DEFAULT_ATTRIBUTES
    problems = []
    for attribute in attributes:
        try:
            name = identityFromAttribute(certificate, attribute, mtlsConfig)
        except NoIdentity as e:
            problems.append(str(e))
            continue
        if name:
            return name
        problems.append(f"{attribute} is empty")
    raise NoIdentity("; ".join(problems))


def peerCertificate(request) -> "x509.Certificate | None":
    """
    The client certificate of the connection C{request} came on, if any.

    Over TLS with C{verify=True} a certificate only reaches this point when
    it verified: the handshake fails otherwise.

    @return: the leaf certificate, or L{None} (plain HTTP, or no certificate).
    """
    transport = ISSLTransport(getattr(request, "transport", None), None)
    if transport is None:
        return None
    try:
        peer = transport.getPeerCertificate()
    except Exception:
        return None
    if peer is None:
        return None
    return peer.to_cryptography()


@implementer(ICredentialsChecker)
class ClientCertificateChecker:
    """
    Logs in a verified client certificate as the user it names.
    """

    credentialInterfaces = (IClientCertificate,)
    _log = Logger()

    def __init__(self, mtlsConfig=None):
        self._config = mtlsConfig

    def requestAvatarId(self, credentials):
        """
        @return: a L{Deferred} firing with an L{AvatarId} (method C{"mtls"}),
            or failing with L{UnauthorizedLogin} when the certificate names
            nobody.
        """
        try:
            name = identityFromCertificate(credentials.certificate, self._config)
        except NoIdentity as e:
            self._log.info(
                "Client certificate {subject} names no user: {reason}",
                subject=credentials.certificate.subject.rfc4514_string(),
                reason=str(e),
            )
            return fail(UnauthorizedLogin("the client certificate names no user"))
        return succeed(AvatarId(name, "mtls"))
