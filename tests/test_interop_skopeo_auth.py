"""
The real C{skopeo} against a protected registry: HTTPS with the test CA,
htpasswd credentials (C{--creds}, C{--dest-creds}, C{--src-creds}), and
mutual TLS with a client certificate in a C{--cert-dir} (skopeo reads
C{*.crt} there as CAs and a C{*.cert}/C{*.key} pair as its certificate).

skopeo runs asynchronously (L{getProcessOutputAndValue}), so the reactor
keeps serving the registry meanwhile.  A missing skopeo is a failure, not a
skip: C{tests/run.sh} installs it.
"""

import json
import os
import shutil

from twisted.internet.utils import getProcessOutputAndValue
from twisted.trial import unittest

from tests import images
from tests.authsupport import basic, writeHTPasswd
from tests.support import startRegistry
from tests.test_interop_skopeo import ToolError
from tests.tlssupport import PKI


class SkopeoFixture(unittest.TestCase):
    """
    A private HOME, a PKI, an image to push and a way to run skopeo; no
    tests of its own.
    """

    timeout = 300

    def setUp(self):
        """
        Find skopeo; give each test a private HOME and TMPDIR, a PKI and an
        image to push.
        """
        self.skopeoPath = shutil.which("skopeo")
        if self.skopeoPath is None:
            self.fail("skopeo is not installed: run `bash tests/run.sh`, which installs it")
        self.work = os.path.abspath(self.mktemp())
        for name in ("home", "tmp"):
            os.makedirs(os.path.join(self.work, name))
        self.env = {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "HOME": os.path.join(self.work, "home"),
            "TMPDIR": os.path.join(self.work, "tmp"),
        }
        self.pki = PKI(os.path.join(self.work, "pki"))
        self.source = os.path.join(self.work, "source")
        self.digest = images.buildImage(self.source, "v1", layers=2, layerSize=64 * 1024, seed=41)

    def certDir(self, name: str, client=None) -> str:
        """
        A directory as skopeo reads it: the test CA as C{ca.crt}, and
        C{client.cert}/C{client.key} when a client certificate is given.
        """
        directory = os.path.join(self.work, name)
        os.makedirs(directory)
        shutil.copy(self.pki.ca.certPath, os.path.join(directory, "ca.crt"))
        if client is not None:
            shutil.copy(client.certPath, os.path.join(directory, "client.cert"))
            shutil.copy(client.keyPath, os.path.join(directory, "client.key"))
        return directory

    async def skopeo(self, *args) -> bytes:
        """
        Run C{skopeo --insecure-policy ARGS}; raise L{ToolError} on failure.
        """
        argv = [self.skopeoPath, "--insecure-policy", *args]
        out, err, code = await getProcessOutputAndValue(argv[0], argv[1:], env=self.env)
        if code != 0:
            raise ToolError(argv, code, out, err)
        return out

    async def assertRoundTrip(self, remote, pushArgs, pullArgs, inspectArgs):
        """
        Push the image, inspect it, pull it back, and compare digests.
        """
        await self.skopeo("copy", "--preserve-digests", *pushArgs, f"oci:{self.source}:v1", remote)
        inspected = json.loads(await self.skopeo("inspect", *inspectArgs, remote))
        self.assertEqual(inspected["Digest"], self.digest)
        copy = os.path.join(self.work, "copy")
        await self.skopeo("copy", "--preserve-digests", *pullArgs, remote, f"oci:{copy}:v1")
        self.assertEqual(images.taggedDescriptor(copy, "v1")["digest"], self.digest)
        manifest = images.readJSONBlob(self.source, self.digest)
        for layer in manifest["layers"]:
            digest = layer["digest"]
            self.assertEqual(images.readBlob(copy, digest), images.readBlob(self.source, digest))



class SkopeoAuthTests(SkopeoFixture):
    """
    Push, inspect and pull with credentials and client certificates.
    """

    async def test_credentialsOverHTTPS(self):
        """
        Over HTTPS verified with the test CA, the right credentials push,
        inspect and pull; wrong or missing credentials are refused as
        unauthorized.
        """
        htpasswd = os.path.join(self.work, "htpasswd")
        writeHTPasswd(htpasswd, {"alice": "alice-pw"})
        registry = await startRegistry(
            self,
            {"http": {"tls": self.pki.tlsConfig(), "auth": {"htpasswd": {"path": htpasswd}}}},
        )
        certs = self.certDir("certs")
        remote = f"docker://127.0.0.1:{registry.port}/secure/app:v1"
        await self.assertRoundTrip(
            remote,
            ["--dest-cert-dir", certs, "--dest-creds", "alice:alice-pw"],
            ["--src-cert-dir", certs, "--src-creds", "alice:alice-pw"],
            ["--cert-dir", certs, "--creds", "alice:alice-pw"],
        )
        for credentials in (["--creds", "alice:wrong"], ["--creds", "mallory:alice-pw"], []):
            with self.assertRaises(ToolError) as caught:
                await self.skopeo("inspect", "--cert-dir", certs, *credentials, remote)
            self.assertIn("unauthorized", caught.exception.stderr.lower())

    async def test_mutualTLS(self):
        """
        With the client CA as the only way in, skopeo with C{alice}'s
        certificate pushes, inspects and pulls without any password;
        without a certificate, or with one from another CA, the server
        refuses the handshake (the TLS alert skopeo reports says which).
        """
        registry = await startRegistry(self, {"http": {"tls": self.pki.tlsConfig(clientCA=True)}})
        certs = self.certDir("alice-certs", self.pki.alice)
        remote = f"docker://127.0.0.1:{registry.port}/mtls/app:v1"
        await self.assertRoundTrip(
            remote,
            ["--dest-cert-dir", certs],
            ["--src-cert-dir", certs],
            ["--cert-dir", certs],
        )
        for name, client, alert in (
            ("no-client", None, "certificate required"),
            ("foreign", self.pki.foreignClient, "unknown certificate authority"),
        ):
            with self.assertRaises(ToolError) as caught:
                await self.skopeo("inspect", "--cert-dir", self.certDir(name, client), remote)
            self.assertIn(f"remote error: tls: {alert}", caught.exception.stderr)


class SkopeoAccessControlTests(SkopeoFixture):
    """
    End to end: htpasswd logins decide who skopeo is, and
    C{http.accessControl} decides what each may do.
    """

    async def test_policiesWithRealLogins(self):
        """
        With C{writer} allowed read/create on C{team/**}, C{reader} only read,
        and anonymous callers nothing: the writer pushes, the reader pulls
        but cannot push, a wrong password and anonymous are unauthorized, and
        the catalog of the reader lists only what it may read.
        """
        htpasswd = os.path.join(self.work, "htpasswd")
        writeHTPasswd(htpasswd, {"writer": "w-pw", "reader": "r-pw"})
        registry = await startRegistry(
            self,
            {
                "http": {
                    "auth": {"htpasswd": {"path": htpasswd}},
                    "accessControl": {
                        "repositories": {
                            "team/**": {
                                "policies": [
                                    {"users": ["writer"], "actions": ["read", "create"]},
                                    {"users": ["reader"], "actions": ["read"]},
                                ]
                            },
                            "private/**": {
                                "policies": [{"users": ["writer"], "actions": ["read", "create"]}]
                            },
                        }
                    },
                }
            },
        )
        insecure = ["--dest-tls-verify=false"]
        remote = f"docker://127.0.0.1:{registry.port}/team/app:v1"
        await self.skopeo(
            "copy", *insecure, "--dest-creds", "writer:w-pw", f"oci:{self.source}:v1", remote
        )
        await self.skopeo(
            "copy", *insecure, "--dest-creds", "writer:w-pw", f"oci:{self.source}:v1",
            f"docker://127.0.0.1:{registry.port}/private/app:v1",
        )
        inspected = json.loads(
            await self.skopeo("inspect", "--tls-verify=false", "--creds", "reader:r-pw", remote)
        )
        self.assertEqual(inspected["Digest"], self.digest)
        with self.assertRaises(ToolError) as caught:
            await self.skopeo(
                "copy", *insecure, "--dest-creds", "reader:r-pw", f"oci:{self.source}:v1",
                f"docker://127.0.0.1:{registry.port}/team/other:v1",
            )
        self.assertIn("denied", caught.exception.stderr.lower())
        for credentials in (["--creds", "reader:wrong"], []):
            with self.assertRaises(ToolError) as caught:
                await self.skopeo("inspect", "--tls-verify=false", *credentials, remote)
            self.assertIn("unauthorized", caught.exception.stderr.lower())
        resp = await registry.client.get(
            f"{registry.url}/v2/_catalog",
            headers={"Authorization": [basic("reader", "r-pw")]},
        )
        self.assertEqual(json.loads(await resp.content()), {"repositories": ["team/app"]})
