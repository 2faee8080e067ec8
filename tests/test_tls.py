"""
HTTPS, mutual TLS and client-certificate identities, over real handshakes
with certificates made by the test (L{tests.tlssupport}), and the start-up
checks that refuse unusable certificate files with one line.
"""

import datetime
import json
import os
import socket
import ssl
import sys

from OpenSSL import SSL
from treq import content
from twisted.internet.threads import deferToThread
from twisted.internet.utils import getProcessOutputAndValue
from twisted.python import usage
from twisted.trial.unittest import SynchronousTestCase, TestCase

from tests.authsupport import basicHeaders, bodyJSON, startRecordedRegistry, writeHTPasswd
from tests.procsupport import NETWORK_ERRORS, REPOSITORY_ROOT
from tests.support import startRegistry
from tests.tlssupport import PKI, httpsClient
from zotwist import tap
from zotwist.auth.mtls import NoIdentity, identityFromCertificate
from zotwist.config import ConfigError, MTLSConfig, parseConfig
from zotwist.tls import TLS12_CIPHERS, serverTLSOptions


def _tlsConfig(cert, key, cacert=None):
    """
    A L{zotwist.config.TLSConfig} as the loader makes it.
    """
    http = {"tls": {"cert": cert, "key": key}}
    if cacert:
        http["tls"]["cacert"] = cacert
    return parseConfig({"storage": {"rootDirectory": "/tmp/x"}, "http": http}).http.tls


def _handshake(port, cafile, maximum=None, minimum=None, ciphers=None, client=None):
    """
    One blocking TLS handshake with the standard library's client, set to
    allow everything OpenSSL can do (security level 0), so that whatever is
    refused is refused by the server.

    @return: C{(version, cipher)} negotiated.
    """
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.load_verify_locations(cafile)
    context.set_ciphers((ciphers or "ALL") + ":@SECLEVEL=0")
    context.minimum_version = minimum or ssl.TLSVersion.MINIMUM_SUPPORTED
    if maximum is not None:
        context.maximum_version = maximum
    if client is not None:
        context.load_cert_chain(client.certPath, client.keyPath)
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        with context.wrap_socket(sock, server_hostname="localhost") as tls:
            return tls.version(), tls.cipher()[0]


class CertificateFileTests(SynchronousTestCase):
    """
    L{serverTLSOptions} refuses every kind of unusable file with one line
    naming the key and the file.
    """

    def setUp(self):
        """
        Make the test PKI.
        """
        self.pki = PKI(os.path.abspath(self.mktemp()))

    def assertRefused(self, tlsConfig, *fragments, now=None):
        """
        Building options fails with a one-line L{ConfigError} containing
        every fragment.
        """
        with self.assertRaises(ConfigError) as caught:
            serverTLSOptions(tlsConfig, requireClientCertificate=False, source="zot.json", now=now)
        message = str(caught.exception)
        self.assertNotIn("\n", message)
        self.assertTrue(message.startswith("zot.json: http.tls"), message)
        for fragment in fragments:
            self.assertIn(fragment, message)
        return message

    def test_goodFiles(self):
        """
        A matching certificate and key build options; with a C{cacert} the
        context verifies client certificates, requiring one or not as
        asked.
        """
        tlsConfig = _tlsConfig(
            self.pki.server.certPath, self.pki.server.keyPath, self.pki.ca.certPath
        )
        required = serverTLSOptions(tlsConfig, requireClientCertificate=True).getContext()
        self.assertTrue(required.get_verify_mode() & SSL.VERIFY_PEER)
        self.assertTrue(required.get_verify_mode() & SSL.VERIFY_FAIL_IF_NO_PEER_CERT)
        optional = serverTLSOptions(tlsConfig, requireClientCertificate=False).getContext()
        self.assertTrue(optional.get_verify_mode() & SSL.VERIFY_PEER)
        self.assertFalse(optional.get_verify_mode() & SSL.VERIFY_FAIL_IF_NO_PEER_CERT)
        plain = serverTLSOptions(
            _tlsConfig(self.pki.server.certPath, self.pki.server.keyPath),
            requireClientCertificate=True,
        ).getContext()
        self.assertEqual(plain.get_verify_mode(), SSL.VERIFY_NONE)

    def test_missingCertificate(self):
        """
        A certificate file that does not exist names C{http.tls.cert}.
        """
        missing = os.path.join(self.pki.directory, "nope.crt")
        message = self.assertRefused(
            _tlsConfig(missing, self.pki.server.keyPath), missing, "No such file"
        )
        self.assertTrue(message.startswith("zot.json: http.tls.cert: "))

    def test_missingKey(self):
        """
        A key file that does not exist names C{http.tls.key}.
        """
        missing = os.path.join(self.pki.directory, "nope.key")
        message = self.assertRefused(_tlsConfig(self.pki.server.certPath, missing), missing)
        self.assertTrue(message.startswith("zot.json: http.tls.key: "))

    def test_unreadable(self):
        """
        A directory where a certificate should be is refused as unreadable.
        """
        self.assertRefused(
            _tlsConfig(self.pki.directory, self.pki.server.keyPath), "is a directory"
        )

    def test_notPEM(self):
        """
        A certificate file without a PEM certificate, or a key file without
        a PEM key, is refused.
        """
        garbage = os.path.join(self.pki.directory, "garbage")
        with open(garbage, "wb") as f:
            f.write(b"this is not a certificate\n")
        self.assertRefused(_tlsConfig(garbage, self.pki.server.keyPath), "no PEM certificate")
        self.assertRefused(
            _tlsConfig(self.pki.server.certPath, garbage), "http.tls.key", "not a PEM private key"
        )

    def test_mismatchedKey(self):
        """
        A key that belongs to another certificate is refused, naming both
        files.
        """
        self.assertRefused(
            _tlsConfig(self.pki.server.certPath, self.pki.alice.keyPath),
            "http.tls.key",
            "does not match",
            self.pki.alice.keyPath,
            self.pki.server.certPath,
        )

    def test_expired(self):
        """
        An expired certificate is refused with its expiry date.
        """
        self.assertRefused(
            _tlsConfig(self.pki.expiredServer.certPath, self.pki.expiredServer.keyPath),
            "http.tls.cert",
            "expired on",
        )

    def test_notYetValid(self):
        """
        A certificate whose validity starts later is refused.
        """
        past = datetime.datetime.now(datetime.timezone.utc) - datetime.timedelta(days=3)
        self.assertRefused(
            _tlsConfig(self.pki.server.certPath, self.pki.server.keyPath),
            "is not valid before",
            now=past,
        )

    def test_badClientCA(self):
        """
        A C{cacert} file without certificates names C{http.tls.cacert}.
        """
        self.assertRefused(
            _tlsConfig(self.pki.server.certPath, self.pki.server.keyPath, self.pki.alice.keyPath),
            "http.tls.cacert",
            "no PEM certificate",
        )


class StartupTests(TestCase):
    """
    A bad certificate stops C{twistd zot} before it starts, with one line.
    """

    def setUp(self):
        """
        Make the test PKI and a directory for configs.
        """
        self.base = os.path.abspath(self.mktemp())
        self.pki = PKI(os.path.join(self.base, "pki"))

    def writeConfig(self, tls: dict, auth: dict | None = None) -> str:
        """
        Write a config serving C{tls}; return its path.
        """
        http = {"address": "127.0.0.1", "port": "0", "tls": tls}
        if auth:
            http["auth"] = auth
        path = os.path.join(self.base, "config.json")
        with open(path, "w") as f:
            json.dump({"storage": {"rootDirectory": os.path.join(self.base, "s")}, "http": http}, f)
        return path

    def test_optionsRefuseExpiredCertificate(self):
        """
        The twistd options refuse an expired certificate with a usage error
        naming the config file, the key and the certificate.
        """
        path = self.writeConfig(
            {"cert": self.pki.expiredServer.certPath, "key": self.pki.expiredServer.keyPath}
        )
        with self.assertRaises(usage.UsageError) as caught:
            tap.Options().parseOptions(["--config", path])
        expected = f"{path}: http.tls.cert: {self.pki.expiredServer.certPath}"
        self.assertIn(expected, str(caught.exception))
        self.assertIn("expired on", str(caught.exception))

    def test_optionsRefuseMissingHTPasswd(self):
        """
        A missing htpasswd file stops start-up too.
        """
        path = self.writeConfig(
            self.pki.tlsConfig(), {"htpasswd": {"path": os.path.join(self.base, "nope")}}
        )
        with self.assertRaises(usage.UsageError) as caught:
            tap.Options().parseOptions(["--config", path])
        self.assertIn("http.auth.htpasswd.path: cannot read", str(caught.exception))

    async def test_twistdPrintsOneLine(self):
        """
        C{twistd zot} with a key that does not match its certificate exits
        non-zero, printing the problem and no traceback.
        """
        path = self.writeConfig({"cert": self.pki.server.certPath, "key": self.pki.alice.keyPath})
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [REPOSITORY_ROOT, env.get("PYTHONPATH")]))
        out, err, code = await getProcessOutputAndValue(
            sys.executable,
            [
                "-c",
                "import sys; from twisted.scripts.twistd import run; sys.argv[0] = 'twistd'; run()",
                "-n",
                "--pidfile=",
                "zot",
                "--config",
                path,
            ],
            env=env,
            path=self.base,
        )
        output = (out + err).decode("utf-8", "replace")
        self.assertNotEqual(code, 0, output)
        self.assertIn(f"{path}: http.tls.key: {self.pki.alice.keyPath} does not match", output)
        self.assertNotIn("Traceback", output)


class HTTPSTests(TestCase):
    """
    With C{http.tls} the registry speaks HTTPS only, TLS 1.2 or newer, with
    forward-secret AEAD suites only.
    """

    async def startHTTPS(self, clientCA=False):
        """
        Start the registry serving the test PKI's server certificate.
        """
        self.pki = PKI(os.path.abspath(self.mktemp()))
        registry = await startRegistry(self, {"http": {"tls": self.pki.tlsConfig(clientCA)}})
        self.url = f"https://127.0.0.1:{registry.port}"
        return registry

    async def test_servesHTTPS(self):
        """
        C{GET /v2/} over HTTPS, verifying the server's certificate and its
        IP address, answers 200 with the API version header.
        """
        await self.startHTTPS()
        response = await httpsClient(self, self.pki).get(self.url + "/v2/")
        self.assertEqual(response.code, 200)
        self.assertEqual(
            response.headers.getRawHeaders(b"Docker-Distribution-API-Version"), [b"registry/2.0"]
        )
        await content(response)

    async def test_plainHTTPRefused(self):
        """
        Plain HTTP to the HTTPS port gets no HTTP answer.
        """
        registry = await self.startHTTPS()
        with self.assertRaises(NETWORK_ERRORS):
            response = await registry.client.get(registry.url + "/v2/", timeout=5)
            await content(response)

    async def test_protocolVersions(self):
        """
        TLS 1.3 and 1.2 handshakes succeed; 1.1 and 1.0 are refused by the
        server, although the client would speak them.
        """
        registry = await self.startHTTPS()
        ca = self.pki.ca.certPath
        version, _ = await deferToThread(_handshake, registry.port, ca)
        self.assertEqual(version, "TLSv1.3")
        version, _ = await deferToThread(
            _handshake, registry.port, ca, maximum=ssl.TLSVersion.TLSv1_2
        )
        self.assertEqual(version, "TLSv1.2")
        for old in (ssl.TLSVersion.TLSv1_1, ssl.TLSVersion.TLSv1):
            with self.assertRaises(ssl.SSLError):
                await deferToThread(_handshake, registry.port, ca, maximum=old)

    async def test_tls12Ciphers(self):
        """
        For TLS 1.2, every ECDHE AEAD suite for the server's EC key is
        accepted, and CBC suites are refused even when the client offers
        nothing else.
        """
        registry = await self.startHTTPS()
        ca = self.pki.ca.certPath
        tls12 = ssl.TLSVersion.TLSv1_2
        for cipher in (
            "ECDHE-ECDSA-AES128-GCM-SHA256",
            "ECDHE-ECDSA-AES256-GCM-SHA384",
            "ECDHE-ECDSA-CHACHA20-POLY1305",
        ):
            self.assertIn(cipher, TLS12_CIPHERS)
            version, chosen = await deferToThread(
                _handshake, registry.port, ca, maximum=tls12, ciphers=cipher
            )
            self.assertEqual((version, chosen), ("TLSv1.2", cipher))
        for weak in ("ECDHE-ECDSA-AES128-SHA", "ECDHE-ECDSA-AES256-SHA384", "AES128-GCM-SHA256"):
            with self.assertRaises(ssl.SSLError):
                await deferToThread(_handshake, registry.port, ca, maximum=tls12, ciphers=weak)


class MutualTLSTests(TestCase):
    """
    C{http.tls.cacert}: client certificates verified against the CA, and
    the certificate as the caller's identity.
    """

    def setUp(self):
        """
        Make the test PKI.
        """
        self.pki = PKI(os.path.abspath(self.mktemp()))

    async def assertNoAnswer(self, url, client):
        """
        The request never gets an HTTP answer: the handshake was refused.
        """
        with self.assertRaises(NETWORK_ERRORS):
            response = await httpsClient(self, self.pki, client).get(url, timeout=5)
            await content(response)

    async def test_requiredWithoutOtherLogin(self):
        """
        With mTLS as the only way to log in, a client without a certificate,
        with one from another CA, or with an expired one from the right CA
        is refused at the handshake; C{alice}'s certificate logs her in
        (C{method} C{"mtls"}).
        """
        registry = await startRecordedRegistry(self, {"http": {"tls": self.pki.tlsConfig(True)}})
        url = registry.url + "/v2/"
        await self.assertNoAnswer(url, None)
        await self.assertNoAnswer(url, self.pki.foreignClient)
        await self.assertNoAnswer(url, self.pki.expiredClient)
        self.assertEqual(registry.authorizer.identities, [])
        response = await httpsClient(self, self.pki, self.pki.alice).get(url)
        self.assertEqual(response.code, 200)
        await content(response)
        (identity,) = registry.authorizer.identities
        self.assertEqual((identity.name, identity.method), ("alice", "mtls"))

    async def test_optionalNextToHTPasswd(self):
        """
        Next to htpasswd a certificate is optional: without one and without
        a password the answer is 401 with the Basic challenge, a password
        logs in, a certificate logs in, and a foreign certificate is still
        refused at the handshake.
        """
        htpasswd = os.path.join(self.pki.directory, "htpasswd")
        writeHTPasswd(htpasswd, {"bob": "bobpw"})
        registry = await startRecordedRegistry(
            self,
            {"http": {"tls": self.pki.tlsConfig(True), "auth": {"htpasswd": {"path": htpasswd}}}},
        )
        url = registry.url + "/v2/"
        anonymous = await httpsClient(self, self.pki).get(url)
        self.assertEqual(anonymous.code, 401)
        self.assertEqual(
            anonymous.headers.getRawHeaders(b"WWW-Authenticate"), [b'Basic realm="zot"']
        )
        self.assertEqual((await bodyJSON(anonymous))["errors"][0]["code"], "UNAUTHORIZED")
        client = httpsClient(self, self.pki)
        withPassword = await client.get(url, headers=basicHeaders("bob", "bobpw"))
        self.assertEqual(withPassword.code, 200)
        await content(withPassword)
        withCertificate = await httpsClient(self, self.pki, self.pki.alice).get(url)
        self.assertEqual(withCertificate.code, 200)
        await content(withCertificate)
        await self.assertNoAnswer(url, self.pki.foreignClient)
        self.assertEqual(
            [(i.name, i.method) for i in registry.authorizer.identities],
            [(None, "anonymous"), ("bob", "htpasswd"), ("alice", "mtls")],
        )

    async def test_identityAttributes(self):
        """
        C{identityAttributes} choose what names the user: here the e-mail
        SAN first; a certificate without one falls back to the next
        attribute; one with neither gets 401.
        """
        registry = await startRecordedRegistry(
            self,
            {
                "http": {
                    "tls": self.pki.tlsConfig(True),
                    "auth": {"mtls": {"identityAttributes": ["DNSName", "Email"]}},
                }
            },
        )
        url = registry.url + "/v2/"
        for client in (self.pki.alice, self.pki.nameless):
            response = await httpsClient(self, self.pki, client).get(url)
            self.assertEqual(response.code, 200)
            await content(response)
        self.assertEqual(
            [i.name for i in registry.authorizer.identities],
            ["alice.clients.example.org", "robot@example.org"],
        )


class IdentityAttributeTests(SynchronousTestCase):
    """
    L{identityFromCertificate} reads each of zot's identity attributes.
    """

    def setUp(self):
        """
        Make the test PKI.
        """
        self.pki = PKI(os.path.abspath(self.mktemp()))
        self.alice = self.pki.alice.certificate

    def identity(self, certificate, **mtls):
        """
        The identity for an C{http.auth.mtls} section made of C{mtls}.
        """
        return identityFromCertificate(certificate, MTLSConfig(**mtls))

    def test_default(self):
        """
        Without configuration the common name is the identity.
        """
        self.assertEqual(identityFromCertificate(self.alice), "alice")

    def test_eachAttribute(self):
        """
        Every attribute and alias reads its part of the certificate.
        """
        for attributes, expected in [
            (("CommonName",), "alice"),
            (("CN",), "alice"),
            (("Subject",), "CN=alice,O=zotwist tests"),
            (("DN",), "CN=alice,O=zotwist tests"),
            (("Email",), "alice@example.org"),
            (("rfc822name",), "alice@example.org"),
            (("DNSName",), "alice.clients.example.org"),
            (("URI",), "spiffe://example.org/ns/ci/sa/builder"),
        ]:
            self.assertEqual(self.identity(self.alice, identityAttributes=attributes), expected)

    def test_uriPattern(self):
        """
        C{uriSanPattern}'s first group is the identity (a SPIFFE workload).
        """
        self.assertEqual(
            self.identity(
                self.alice,
                identityAttributes=("URI",),
                uriSanPattern=r"^spiffe://example\.org/ns/[^/]+/sa/([^/]+)$",
            ),
            "builder",
        )
        with self.assertRaises(NoIdentity):
            self.identity(self.alice, identityAttributes=("URI",), uriSanPattern=r"^https://(.*)")

    def test_fallbackAndIndexes(self):
        """
        Missing attributes fall through to the next; an index past the end
        is missing; nothing found raises L{NoIdentity}.
        """
        nameless = self.pki.nameless.certificate
        self.assertEqual(
            self.identity(nameless, identityAttributes=("CommonName", "Email")),
            "robot@example.org",
        )
        with self.assertRaises(NoIdentity):
            self.identity(self.alice, identityAttributes=("Email",), emailSanIndex=1)
        with self.assertRaises(NoIdentity):
            self.identity(nameless, identityAttributes=("CommonName", "URI", "DNSName"))

    def test_configChecks(self):
        """
        The config refuses C{auth.mtls} without C{tls.cacert}, C{tls}
        without a key, and a C{uriSanPattern} that does not compile.
        """
        base = {"storage": {"rootDirectory": "/tmp/x"}}
        cases = [
            (
                {"tls": {"cert": "/c", "key": "/k"}, "auth": {"mtls": {}}},
                "<config>: http.auth.mtls: needs http.tls.cacert",
            ),
            ({"tls": {"cert": "/c"}}, "<config>: http.tls.key: required"),
            (
                {
                    "tls": {"cert": "/c", "key": "/k", "cacert": "/ca"},
                    "auth": {"mtls": {"uriSanPattern": "(unclosed"}},
                },
                "<config>: http.auth.mtls.uriSanPattern: not a regular expression",
            ),
        ]
        for http, expected in cases:
            with self.assertRaises(ConfigError) as caught:
                parseConfig({**base, "http": http})
            self.assertTrue(str(caught.exception).startswith(expected), str(caught.exception))
