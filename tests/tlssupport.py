"""
Certificates made in the tests, and HTTPS clients that trust them.

L{PKI} writes a small public key infrastructure into a test's temporary
directory: a CA, a server certificate for C{localhost} and C{127.0.0.1}, a
client certificate for C{alice} (with e-mail, DNS and SPIFFE URI SANs), one
for a client without a common name, an expired client certificate from the
same CA, a client certificate from a foreign CA, and an expired server
certificate.  Keys are EC P-256: generating them all takes milliseconds.

L{httpsClient} returns a treq client whose agent trusts the test CA and,
optionally, presents a client certificate (an C{IPolicyForHTTPS}, as
Twisted's docs recommend, rather than switching verification off).
"""

import datetime
import ipaddress
import os
from dataclasses import dataclass

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from treq.client import HTTPClient
from twisted.internet import ssl
from twisted.web.client import Agent, HTTPConnectionPool
from twisted.web.iweb import IPolicyForHTTPS
from zope.interface import implementer

_ONE_DAY = datetime.timedelta(days=1)


def _now() -> datetime.datetime:
    """
    The current time (UTC, aware).
    """
    return datetime.datetime.now(datetime.timezone.utc)


def _name(commonName: str | None, organization: str = "zotwist tests") -> x509.Name:
    """
    A subject with an organization and, unless L{None}, a common name.
    """
    attributes = [x509.NameAttribute(NameOID.ORGANIZATION_NAME, organization)]
    if commonName is not None:
        attributes.append(x509.NameAttribute(NameOID.COMMON_NAME, commonName))
    return x509.Name(attributes)


@dataclass
class Issued:
    """
    A certificate and its key, with PEM files on disk.

    @ivar certPath: the PEM certificate.
    @ivar keyPath: the PEM (PKCS#8, unencrypted) key.
    """

    certificate: x509.Certificate
    key: ec.EllipticCurvePrivateKey
    certPath: str
    keyPath: str

    @property
    def certPEM(self) -> bytes:
        """
        The certificate as PEM.
        """
        return self.certificate.public_bytes(serialization.Encoding.PEM)

    @property
    def keyPEM(self) -> bytes:
        """
        The key as unencrypted PKCS#8 PEM.
        """
        return self.key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )

    def privateCertificate(self) -> ssl.PrivateCertificate:
        """
        The pair as Twisted's L{ssl.PrivateCertificate}, for a client.
        """
        return ssl.PrivateCertificate.loadPEM(self.certPEM + self.keyPEM)


class Authority:
    """
    A certificate authority that issues certificates into a directory.
    """

    def __init__(self, directory: str, name: str):
        self.directory = directory
        self.key = ec.generate_private_key(ec.SECP256R1())
        subject = _name(f"{name} CA")
        now = _now()
        self.certificate = (
            x509.CertificateBuilder()
            .subject_name(subject)
            .issuer_name(subject)
            .public_key(self.key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - _ONE_DAY)
            .not_valid_after(now + 30 * _ONE_DAY)
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .add_extension(
                x509.KeyUsage(
                    digital_signature=True,
                    content_commitment=False,
                    key_encipherment=False,
                    data_encipherment=False,
                    key_agreement=False,
                    key_cert_sign=True,
                    crl_sign=True,
                    encipher_only=False,
                    decipher_only=False,
                ),
                critical=True,
            )
            .add_extension(
                x509.SubjectKeyIdentifier.from_public_key(self.key.public_key()), critical=False
            )
            .sign(self.key, hashes.SHA256())
        )
        self.certPath = os.path.join(directory, f"{name}-ca.crt")
        with open(self.certPath, "wb") as f:
            f.write(self.certificate.public_bytes(serialization.Encoding.PEM))

    def trustRoot(self):
        """
        This CA as a Twisted trust root.
        """
        return ssl.Certificate.loadPEM(self.certificate.public_bytes(serialization.Encoding.PEM))

    def issue(
        self,
        fileName: str,
        commonName: str | None,
        *,
        server: bool = False,
        dnsNames=(),
        ipAddresses=(),
        emails=(),
        uris=(),
        notBefore: datetime.datetime | None = None,
        notAfter: datetime.datetime | None = None,
    ) -> Issued:
        """
        Issue a leaf certificate and write C{<fileName>.crt}/C{.key}.

        @param server: a server certificate (serverAuth) rather than a
            client one (clientAuth).
        """
        key = ec.generate_private_key(ec.SECP256R1())
        now = _now()
        builder = (
            x509.CertificateBuilder()
            .subject_name(_name(commonName))
            .issuer_name(self.certificate.subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(notBefore or now - _ONE_DAY)
            .not_valid_after(notAfter or now + 30 * _ONE_DAY)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(
                x509.ExtendedKeyUsage(
                    [ExtendedKeyUsageOID.SERVER_AUTH if server else ExtendedKeyUsageOID.CLIENT_AUTH]
                ),
                critical=False,
            )
            .add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_public_key(self.key.public_key()),
                critical=False,
            )
        )
        names = (
            [x509.DNSName(n) for n in dnsNames]
            + [x509.IPAddress(ipaddress.ip_address(a)) for a in ipAddresses]
            + [x509.RFC822Name(e) for e in emails]
            + [x509.UniformResourceIdentifier(u) for u in uris]
        )
        if names:
            builder = builder.add_extension(x509.SubjectAlternativeName(names), critical=False)
        certificate = builder.sign(self.key, hashes.SHA256())
        issued = Issued(
            certificate,
            key,
            os.path.join(self.directory, f"{fileName}.crt"),
            os.path.join(self.directory, f"{fileName}.key"),
        )
        with open(issued.certPath, "wb") as f:
            f.write(issued.certPEM)
        with open(issued.keyPath, "wb") as f:
            f.write(issued.keyPEM)
        return issued


class PKI:
    """
    Everything a TLS test needs, in C{directory}.
    """

    def __init__(self, directory: str):
        os.makedirs(directory, exist_ok=True)
        self.directory = directory
        self.ca = Authority(directory, "test")
        self.foreignCA = Authority(directory, "foreign")
        now = _now()
        self.server = self.ca.issue(
            "server", "localhost", server=True, dnsNames=["localhost"], ipAddresses=["127.0.0.1"]
        )
        self.alice = self.ca.issue(
            "alice",
            "alice",
            emails=["alice@example.org"],
            dnsNames=["alice.clients.example.org"],
            uris=["spiffe://example.org/ns/ci/sa/builder"],
        )
        self.nameless = self.ca.issue("nameless", None, emails=["robot@example.org"])
        self.expiredClient = self.ca.issue(
            "expired-client",
            "old-alice",
            notBefore=now - 20 * _ONE_DAY,
            notAfter=now - 10 * _ONE_DAY,
        )
        self.foreignClient = self.foreignCA.issue("mallory", "alice")
        self.expiredServer = self.ca.issue(
            "expired-server",
            "localhost",
            server=True,
            dnsNames=["localhost"],
            ipAddresses=["127.0.0.1"],
            notBefore=now - 20 * _ONE_DAY,
            notAfter=now - 10 * _ONE_DAY,
        )

    def tlsConfig(self, clientCA: bool = False) -> dict:
        """
        The C{http.tls} section serving L{server}, with C{cacert} when asked.
        """
        section = {"cert": self.server.certPath, "key": self.server.keyPath}
        if clientCA:
            section["cacert"] = self.ca.certPath
        return section


@implementer(IPolicyForHTTPS)
class TrustingPolicy:
    """
    Verify servers against one CA (and their names), optionally presenting a
    client certificate.
    """

    def __init__(self, trustRoot, clientCertificate=None):
        self._trustRoot = trustRoot
        self._clientCertificate = clientCertificate

    def creatorForNetloc(self, hostname, port):
        """
        Client TLS options for one server.
        """
        return ssl.optionsForClientTLS(
            hostname.decode("ascii"),
            trustRoot=self._trustRoot,
            clientCertificate=self._clientCertificate,
        )


def httpsClient(testCase, pki: PKI, client: Issued | None = None) -> HTTPClient:
    """
    A treq client trusting the PKI's CA, presenting C{client} if given; its
    pool is closed when the test ends.
    """
    from twisted.internet import reactor

    pool = HTTPConnectionPool(reactor, persistent=False)
    testCase.addCleanup(pool.closeCachedConnections)
    policy = TrustingPolicy(
        pki.ca.trustRoot(), client.privateCertificate() if client is not None else None
    )
    return HTTPClient(Agent(reactor, contextFactory=policy, pool=pool))
