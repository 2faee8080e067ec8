"""
htpasswd logins over real HTTP: the 401 challenge, good and bad passwords,
every bcrypt spelling, malformed and repeated headers, non-ASCII names,
reloading the file without a restart, C{failDelay} measured while other
clients are served, and passwords never reaching the log.
"""

import os
import threading
import time
from types import SimpleNamespace

import bcrypt
from treq import content
from twisted.internet import reactor
from twisted.internet.defer import ensureDeferred, gatherResults
from twisted.trial.unittest import TestCase

from tests.apihelpers import pushBlob
from tests.authsupport import (
    SecretWatch,
    basic,
    basicHeaders,
    bodyJSON,
    credentialedClient,
    hashPassword,
    startRecordedRegistry,
    writeHTPasswd,
)
from tests.support import startRegistry
from zotwist.auth import htpasswd as htpasswdModule

USERS = {"alice": "alice-pw", "bob": "bob:with:colons", "j\u00fcrgen": "p\u00e4ssw\u00f6rd"}


class HTPasswdTests(TestCase):
    """
    A registry with C{http.auth.htpasswd}.
    """

    async def startWith(self, users=USERS, extra=b"", logLevel="error", **auth):
        """
        Write the htpasswd file and start the registry on it.
        """
        self.htpasswd = os.path.abspath(self.mktemp())
        writeHTPasswd(self.htpasswd, users, extra=extra)
        config = {
            "http": {"auth": {"htpasswd": {"path": self.htpasswd}, **auth}},
            "log": {"level": logLevel},
        }
        self.registry = await startRegistry(self, config)
        return self.registry

    async def get(self, headers=None, path="/v2/"):
        """
        GET C{path}; return C{(status, response body bytes, response)}.
        """
        response = await self.registry.client.get(self.registry.url + path, headers=headers)
        return response.code, await content(response), response

    async def statusAs(self, username, password):
        """
        The status of C{GET /v2/} with Basic credentials.
        """
        return (await self.get(basicHeaders(username, password)))[0]

    async def test_anonymousChallenged(self):
        """
        Without credentials the answer is 401 with the OCI error body and the
        Basic challenge naming the default realm, C{zot}.
        """
        await self.startWith()
        response = await self.registry.client.get(self.registry.url + "/v2/")
        self.assertEqual(response.code, 401)
        self.assertEqual(
            response.headers.getRawHeaders(b"WWW-Authenticate"), [b'Basic realm="zot"']
        )
        self.assertEqual(response.headers.getRawHeaders(b"Content-Type"), [b"application/json"])
        errors = (await bodyJSON(response))["errors"]
        self.assertEqual([e["code"] for e in errors], ["UNAUTHORIZED"])
        catalog = await self.registry.client.get(self.registry.url + "/v2/_catalog")
        self.assertEqual(catalog.code, 401)
        await content(catalog)

    async def test_realm(self):
        """
        C{http.realm} is the challenge's realm.
        """
        htpasswd = os.path.abspath(self.mktemp())
        writeHTPasswd(htpasswd, USERS)
        self.registry = await startRegistry(
            self,
            {"http": {"realm": "Acme registry", "auth": {"htpasswd": {"path": htpasswd}}}},
        )
        _, _, response = await self.get()
        self.assertEqual(
            response.headers.getRawHeaders(b"WWW-Authenticate"), [b'Basic realm="Acme registry"']
        )

    async def test_passwords(self):
        """
        Each user's password logs in; a wrong password, another user's
        password and an unknown user get 401; a password with colons and
        UTF-8 names and passwords work.
        """
        await self.startWith()
        for user, password in USERS.items():
            self.assertEqual(await self.statusAs(user, password), 200, user)
        self.assertEqual(await self.statusAs("alice", "wrong"), 401)
        self.assertEqual(await self.statusAs("alice", "bob:with:colons"), 401)
        self.assertEqual(await self.statusAs("alice", ""), 401)
        self.assertEqual(await self.statusAs("mallory", "alice-pw"), 401)
        self.assertEqual(await self.statusAs("ALICE", "alice-pw"), 401)

    async def test_bcryptVariants(self):
        """
        C{$2y$} (C{htpasswd -B}), C{$2b$} and C{$2a$} hashes all work;
        SHA1, MD5 and plain-text entries are ignored, so their users cannot
        log in even with the right password.
        """
        extra = b"\n".join(
            [
                b"b-user:" + hashPassword("b-pw", b"$2b$"),
                b"a-user:" + hashPassword("a-pw", b"$2a$"),
                b"sha-user:{SHA}" + b"W6ph5Mm5Pz8GgiULbPgzG37mj9g=",
                b"md5-user:$apr1$2Lq0xkIN$yS9y0sgu0bgQNyBJGoFAd/",
                b"plain-user:plain-pw",
            ]
        )
        await self.startWith({"y-user": "y-pw"}, extra=extra + b"\n")
        with open(self.htpasswd, "rb") as f:
            self.assertTrue(f.read().startswith(b"y-user:$2y$05$"))
        for user in ("y", "b", "a"):
            self.assertEqual(await self.statusAs(f"{user}-user", f"{user}-pw"), 200)
        self.assertEqual(await self.statusAs("sha-user", "password"), 401)
        self.assertEqual(await self.statusAs("md5-user", "password"), 401)
        self.assertEqual(await self.statusAs("plain-user", "plain-pw"), 401)

    async def test_malformedHeaders(self):
        """
        Malformed credentials get 401 with the challenge; so do two
        C{Authorization} headers, even when both are right; C{Basic Og==}
        counts as no credentials.
        """
        await self.startWith()
        good = basic("alice", "alice-pw")
        for values in [
            [b"Basic"],
            [b"Basic not-base64!"],
            [b"Bearer eyJhbGciOiJub25lIn0.e30."],
            [b"Basic " + b"YWxpY2U="],  # "alice", no colon
            [b"Basic " + "j\u00fcrgen:p\u00e4ssw\u00f6rd".encode("latin-1").hex().encode()],
            [good, good],
            [good, basic("bob", "bob:with:colons")],
            [b"Basic Og=="],
        ]:
            status, body, response = await self.get({b"Authorization": values})
            self.assertEqual(status, 401, values)
            self.assertEqual(
                response.headers.getRawHeaders(b"WWW-Authenticate"), [b'Basic realm="zot"']
            )
            self.assertIn(b"UNAUTHORIZED", body)

    async def test_nonUTF8Refused(self):
        """
        Credentials in Latin-1 rather than UTF-8 are refused, even though
        the same characters in UTF-8 log in.
        """
        import base64

        await self.startWith()
        latin1 = b"Basic " + base64.b64encode("j\u00fcrgen:p\u00e4ssw\u00f6rd".encode("latin-1"))
        self.assertEqual((await self.get({b"Authorization": [latin1]}))[0], 401)
        self.assertEqual(await self.statusAs("j\u00fcrgen", "p\u00e4ssw\u00f6rd"), 200)

    async def test_pushWithCredentials(self):
        """
        The whole API works for a logged-in user: a blob push succeeds with
        credentials and is refused without.
        """
        await self.startWith()
        uploads = self.registry.url + "/v2/team/app/blobs/uploads/"
        anonymous = await self.registry.client.post(uploads)
        self.assertEqual(anonymous.code, 401)
        await content(anonymous)

        alice = SimpleNamespace(
            url=self.registry.url, client=credentialedClient(self, "alice", "alice-pw")
        )
        digest = await pushBlob(alice, "team/app", b"layer bytes")
        response = await alice.client.get(f"{self.registry.url}/v2/team/app/blobs/{digest}")
        self.assertEqual(response.code, 200)
        self.assertEqual(await content(response), b"layer bytes")

    async def test_reloadWithoutRestart(self):
        """
        Rewriting the file in place and replacing it by rename both take
        effect at the next request; removing it refuses everyone until it
        is back.
        """
        await self.startWith({"alice": "alice-pw"})
        self.assertEqual(await self.statusAs("alice", "alice-pw"), 200)

        writeHTPasswd(self.htpasswd, {"alice": "new-pw", "carol": "carol-pw"})
        self.assertEqual(await self.statusAs("alice", "alice-pw"), 401)
        self.assertEqual(await self.statusAs("alice", "new-pw"), 200)
        self.assertEqual(await self.statusAs("carol", "carol-pw"), 200)

        replacement = self.htpasswd + ".new"
        writeHTPasswd(replacement, {"dave": "dave-pw"})
        os.rename(replacement, self.htpasswd)
        self.assertEqual(await self.statusAs("carol", "carol-pw"), 401)
        self.assertEqual(await self.statusAs("dave", "dave-pw"), 200)

        os.rename(self.htpasswd, replacement)
        self.assertEqual(await self.statusAs("dave", "dave-pw"), 401)
        os.rename(replacement, self.htpasswd)
        self.assertEqual(await self.statusAs("dave", "dave-pw"), 200)

    async def test_bcryptOffTheReactorThread(self):
        """
        bcrypt runs in the auth thread pool, never on the reactor thread.
        """
        await self.startWith()
        threads = []
        original = bcrypt.checkpw

        def recording(password, hashed):
            threads.append(threading.current_thread())
            return original(password, hashed)

        self.patch(htpasswdModule.bcrypt, "checkpw", recording)
        self.assertEqual(await self.statusAs("alice", "alice-pw"), 200)
        self.assertEqual(await self.statusAs("nobody", "x"), 401)
        self.assertEqual(len(threads), 2)
        self.assertNotIn(threading.main_thread(), threads)
        self.assertTrue(all("zotwist-auth" in t.name for t in threads), threads)

    async def test_failDelay(self):
        """
        With C{failDelay: 1} a failed login is answered after at least a
        second, while another client's good login and an anonymous request
        are answered at once; a good login is not delayed.
        """
        await self.startWith(failDelay=1)
        client = self.registry.client
        url = self.registry.url + "/v2/"
        start = time.monotonic()
        timings = {}

        async def timed(name, headers):
            response = await client.get(url, headers=headers)
            await content(response)
            timings[name] = (response.code, time.monotonic() - start)

        failing = ensureDeferred(timed("wrong", basicHeaders("alice", "wrong")))
        # Let the failed login reach its delay before the others start.
        from twisted.internet.task import deferLater

        await deferLater(reactor, 0.2)
        await gatherResults(
            [
                failing,
                ensureDeferred(timed("good", basicHeaders("bob", "bob:with:colons"))),
                ensureDeferred(timed("anonymous", None)),
                ensureDeferred(timed("malformed", {b"Authorization": [b"Basic ###"]})),
            ]
        )
        self.assertEqual(timings["wrong"][0], 401)
        self.assertGreaterEqual(timings["wrong"][1], 1.0)
        self.assertEqual(timings["good"][0], 200)
        self.assertLess(timings["good"][1], timings["wrong"][1])
        self.assertLess(timings["good"][1], 0.2 + 0.5)
        self.assertEqual(timings["anonymous"][0], 401)
        self.assertLess(timings["anonymous"][1], 0.2 + 0.5)
        self.assertEqual(timings["malformed"][0], 401)
        self.assertGreaterEqual(timings["malformed"][1], 0.2 + 1.0)

    async def test_passwordsNeverLogged(self):
        """
        Failed and successful logins are logged with the user name and
        client address only: neither password appears in any log event.
        """
        secretGood = "Good-S3cret-Pw-7731"
        secretBad = "Bad-S3cret-Pw-9924"
        watch = SecretWatch(self)
        await self.startWith({"alice": secretGood}, logLevel="debug")
        self.assertEqual(await self.statusAs("alice", secretGood), 200)
        self.assertEqual(await self.statusAs("alice", secretBad), 401)
        self.assertEqual(await self.statusAs("mallory", secretBad), 401)
        twice = {b"Authorization": [basic("alice", secretBad), basic("a", secretGood)]}
        self.assertEqual((await self.get(twice))[0], 401)
        text = watch.text()
        self.assertIn("Failed login for 'alice' from 127.0.0.1", text)
        self.assertIn("Failed login for 'mallory' from 127.0.0.1", text)
        self.assertIn("several Authorization headers", text)
        for secret in (secretGood, secretBad):
            self.assertNotIn(secret, text)
            self.assertNotIn(secret.encode("utf-8").hex(), text)


class IdentityTests(TestCase):
    """
    The identity an htpasswd login gives the authorizer.
    """

    async def test_identity(self):
        """
        The authorizer sees the user name and C{method} C{"htpasswd"}, no
        groups, and anonymous callers as anonymous.
        """
        htpasswd = os.path.abspath(self.mktemp())
        writeHTPasswd(htpasswd, USERS)
        registry = await startRecordedRegistry(
            self, {"http": {"auth": {"htpasswd": {"path": htpasswd}}}}
        )
        for client in (
            credentialedClient(self, "j\u00fcrgen", "p\u00e4ssw\u00f6rd"),
            credentialedClient(self),
        ):
            response = await client.get(registry.url + "/v2/")
            await content(response)
        first, second = registry.authorizer.identities
        self.assertEqual(
            (first.name, first.method, first.groups), ("j\u00fcrgen", "htpasswd", frozenset())
        )
        self.assertTrue(second.anonymous)
