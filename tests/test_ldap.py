"""
LDAP logins against a real OpenLDAP C{slapd} started by each test
(L{tests.ldapsupport}): passwords, unknown and hostile user names, groups,
search scope and filter, the service account inline and from a credentials
file, StartTLS and LDAPS with certificate checks, an unreachable or silent
directory, and the whole login through the registry, next to htpasswd.
"""

import json
import os
import time

from treq import content
from twisted.cred.credentials import UsernamePassword
from twisted.cred.error import UnauthorizedLogin
from twisted.internet import reactor
from twisted.internet.endpoints import TCP4ServerEndpoint
from twisted.internet.protocol import Factory, Protocol
from twisted.trial.unittest import SynchronousTestCase, TestCase

from tests.authsupport import (
    SecretWatch,
    credentialedClient,
    startRecordedRegistry,
    writeHTPasswd,
)
from tests.ldapsupport import GROUPS, READER_DN, READER_PASSWORD, Slapd
from tests.tlssupport import PKI
from zotwist.auth.ldap import LDAPChecker, groupNames, readCredentialsFile
from zotwist.config import ConfigError, parseConfig
from zotwist.threads import InlineRunner


def _ldapConfig(section: dict):
    """
    An L{zotwist.config.LDAPConfig} as the loader makes it.
    """
    document = {"storage": {"rootDirectory": "/tmp/x"}, "http": {"auth": {"ldap": section}}}
    return parseConfig(document).http.auth.ldap


class LDAPTestCase(TestCase):
    """
    Starts a slapd for each test.
    """

    async def directory(self) -> Slapd:
        """
        Make the PKI, start slapd, remember both.
        """
        self.pki = PKI(os.path.abspath(self.mktemp()))
        self.slapd = await Slapd(self, self.pki).start()
        return self.slapd

    def checker(self, **overrides) -> LDAPChecker:
        """
        A checker on the test's slapd, with C{overrides} of its section.
        """
        return LDAPChecker(_ldapConfig(self.slapd.config(**overrides)), reactor, InlineRunner())

    async def login(self, checker, username, password):
        """
        The L{AvatarId} for a login.
        """
        return await checker.requestAvatarId(UsernamePassword(username, password))

    async def assertRefused(self, checker, username, password):
        """
        The login fails with L{UnauthorizedLogin}.
        """
        with self.assertRaises(UnauthorizedLogin):
            await self.login(checker, username, password)


class PasswordTests(LDAPTestCase):
    """
    Service bind, search, user bind, groups.
    """

    async def test_goodPassword(self):
        """
        C{alice}'s password logs her in with method C{ldap} and her groups,
        each both as its C{cn} and as the whole DN.
        """
        await self.directory()
        avatar = await self.login(self.checker(), "alice", "alice-pw")
        self.assertEqual((avatar.name, avatar.method), ("alice", "ldap"))
        self.assertEqual(
            set(avatar.groups), {"devs", "ops", f"cn=devs,{GROUPS}", f"cn=ops,{GROUPS}"}
        )
        bob = await self.login(self.checker(), "bob", "bob-pw")
        self.assertEqual(bob.groups, ())

    async def test_refusals(self):
        """
        A wrong password, another user's password, an unknown user and an
        empty password (an unauthenticated bind to LDAP) are refused.
        """
        await self.directory()
        checker = self.checker()
        await self.assertRefused(checker, "alice", "wrong")
        await self.assertRefused(checker, "alice", "bob-pw")
        await self.assertRefused(checker, "zoe", "zoe-pw")
        await self.assertRefused(checker, "alice", "")

    async def test_hostileUserNames(self):
        """
        Filter syntax in a user name matches nothing: with C{alice}'s
        password, C{al*} (which string formatting would turn into a
        wildcard matching only her) and other injections are refused.
        """
        await self.directory()
        checker = self.checker()
        for name in ["al*", "*", "alice)(uid=alice", "*)(uid=*", "alice)(|(uid=*", "\\61lice"]:
            await self.assertRefused(checker, name, "alice-pw")
        self.assertEqual((await self.login(checker, "alice", "alice-pw")).name, "alice")

    async def test_caseOfName(self):
        """
        The directory matches user names without regard to case; the
        identity is spelt as the directory spells it.
        """
        await self.directory()
        self.assertEqual((await self.login(self.checker(), "ALICE", "alice-pw")).name, "alice")

    async def test_groupsOff(self):
        """
        Without C{userGroupAttribute} no groups are read.
        """
        await self.directory()
        avatar = await self.login(self.checker(userGroupAttribute=None), "alice", "alice-pw")
        self.assertEqual(avatar.groups, ())

    async def test_subtreeSearch(self):
        """
        A user below C{baseDN}'s children is found only with
        C{subtreeSearch} (zot searches one level by default).
        """
        await self.directory()
        await self.assertRefused(self.checker(), "carol", "carol-pw")
        avatar = await self.login(self.checker(subtreeSearch=True), "carol", "carol-pw")
        self.assertEqual(avatar.name, "carol")
        self.assertIn("devs", avatar.groups)

    async def test_userFilter(self):
        """
        C{userFilter} narrows the search: C{dave} (not an inetOrgPerson)
        logs in without it and is refused with it; C{alice} logs in either
        way.
        """
        await self.directory()
        self.assertEqual((await self.login(self.checker(), "dave", "dave-pw")).name, "dave")
        narrowed = self.checker(userFilter="(objectClass=inetOrgPerson)")
        await self.assertRefused(narrowed, "dave", "dave-pw")
        self.assertEqual((await self.login(narrowed, "alice", "alice-pw")).name, "alice")

    async def test_ambiguousName(self):
        """
        A name two entries share is refused, whichever password is given.
        """
        await self.directory()
        checker = self.checker(userAttribute="cn")
        await self.assertRefused(checker, "twin", "eve-pw")
        await self.assertRefused(checker, "twin", "Eve2-pw")

    async def test_serviceAccount(self):
        """
        The search needs the service account: anonymously it finds nobody,
        and with a wrong service password nobody logs in.
        """
        await self.directory()
        await self.assertRefused(self.checker(bindDN=None, bindPassword=None), "alice", "alice-pw")
        await self.assertRefused(self.checker(bindPassword="wrong"), "alice", "alice-pw")

    async def test_credentialsFile(self):
        """
        The service account can come from C{credentialsFile}; a changed
        file is read again at the next login; an invalid replacement keeps
        the last good credentials.
        """
        await self.directory()
        path = os.path.abspath(self.mktemp())
        with open(path, "w") as f:
            json.dump({"bindDN": READER_DN, "bindPassword": "wrong"}, f)
        checker = self.checker(bindDN=None, bindPassword=None, credentialsFile=path)
        await self.assertRefused(checker, "alice", "alice-pw")
        with open(path, "w") as f:
            json.dump({"bindDN": READER_DN, "bindPassword": READER_PASSWORD}, f)
        self.assertEqual((await self.login(checker, "alice", "alice-pw")).name, "alice")
        with open(path, "w") as f:
            f.write("{not json")
        self.assertEqual((await self.login(checker, "alice", "alice-pw")).name, "alice")

    async def test_passwordsNeverLogged(self):
        """
        Refused LDAP logins (wrong password, wrong service password) are
        logged without any password.
        """
        await self.directory()
        watch = SecretWatch(self)
        await self.assertRefused(self.checker(), "alice", "Ldap-Wrong-Pw-5501")
        wrongService = self.checker(bindPassword="Svc-Wrong-Pw-8812")
        await self.assertRefused(wrongService, "alice", "alice-pw")
        self.assertEqual((await self.login(self.checker(), "alice", "alice-pw")).name, "alice")
        text = watch.text()
        self.assertIn(f"LDAP service account {READER_DN} cannot bind", text)
        for secret in ("Ldap-Wrong-Pw-5501", "Svc-Wrong-Pw-8812", "alice-pw", READER_PASSWORD):
            self.assertNotIn(secret, text)


class TransportTests(LDAPTestCase):
    """
    StartTLS and LDAPS, verifying the directory's certificate.
    """

    async def test_startTLS(self):
        """
        StartTLS with the test CA as C{caCert} logs in; without it the
        certificate is not trusted and the login refused; C{skipVerify}
        logs in without checking.
        """
        await self.directory()
        tls = {"insecure": False, "startTLS": True}
        checker = self.checker(caCert=self.pki.ca.certPath, **tls)
        self.assertEqual((await self.login(checker, "alice", "alice-pw")).name, "alice")
        await self.assertRefused(self.checker(**tls), "alice", "alice-pw")
        self.assertEqual(
            (await self.login(self.checker(skipVerify=True, **tls), "alice", "alice-pw")).name,
            "alice",
        )

    async def test_ldaps(self):
        """
        LDAPS (zot's default when not C{insecure}) on the TLS port logs in
        with the test CA, by address or by host name; a CA that did not
        sign the directory's certificate is refused.
        """
        await self.directory()
        for address in ("127.0.0.1", "localhost"):
            checker = self.checker(
                address=address,
                port=self.slapd.tlsPort,
                insecure=None,
                caCert=self.pki.ca.certPath,
            )
            self.assertEqual((await self.login(checker, "alice", "alice-pw")).name, "alice")
        foreign = self.checker(
            port=self.slapd.tlsPort, insecure=None, caCert=self.pki.foreignCA.certPath
        )
        await self.assertRefused(foreign, "alice", "alice-pw")

    async def test_plainToTLSPortRefused(self):
        """
        Plain LDAP to the LDAPS port fails cleanly (refused, not hung).
        """
        await self.directory()
        checker = self.checker(port=self.slapd.tlsPort)
        checker.timeout = 3
        await self.assertRefused(checker, "alice", "alice-pw")


class UnavailableDirectoryTests(TestCase):
    """
    A directory that is down or silent refuses logins in bounded time.
    """

    async def test_down(self):
        """
        Nothing listening: the login is refused and the error logged.
        """
        from tests.procsupport import freePort

        watch = SecretWatch(self)
        section = {
            "address": "127.0.0.1",
            "port": freePort(),
            "insecure": True,
            "baseDN": "dc=x",
            "userAttribute": "uid",
        }
        checker = LDAPChecker(_ldapConfig(section), reactor, InlineRunner())
        with self.assertRaises(UnauthorizedLogin):
            await checker.requestAvatarId(UsernamePassword("alice", "pw"))
        self.assertIn("LDAP login of alice failed", watch.text())

    async def test_silent(self):
        """
        A server that accepts the connection and never answers costs one
        C{timeout}, then the login is refused.
        """
        port = await TCP4ServerEndpoint(reactor, 0, interface="127.0.0.1").listen(
            Factory.forProtocol(Protocol)
        )
        self.addCleanup(port.stopListening)
        section = {
            "address": "127.0.0.1",
            "port": port.getHost().port,
            "insecure": True,
            "baseDN": "dc=x",
            "userAttribute": "uid",
            "bindDN": "cn=x",
            "bindPassword": "y",
        }
        checker = LDAPChecker(_ldapConfig(section), reactor, InlineRunner())
        checker.timeout = 0.5
        start = time.monotonic()
        with self.assertRaises(UnauthorizedLogin):
            await checker.requestAvatarId(UsernamePassword("alice", "pw"))
        self.assertLess(time.monotonic() - start, 3)


class RegistryTests(LDAPTestCase):
    """
    LDAP through the registry, alone and next to htpasswd.
    """

    async def test_loginThroughRegistry(self):
        """
        C{GET /v2/} with C{alice}'s LDAP password answers 200 and the
        authorizer sees her groups; a wrong password gets 401 with the
        challenge and never reaches the authorizer.
        """
        await self.directory()
        registry = await startRecordedRegistry(
            self, {"http": {"auth": {"ldap": self.slapd.config()}}}
        )
        good = await credentialedClient(self, "alice", "alice-pw").get(registry.url + "/v2/")
        self.assertEqual(good.code, 200)
        await content(good)
        bad = await credentialedClient(self, "alice", "nope").get(registry.url + "/v2/")
        self.assertEqual(bad.code, 401)
        self.assertEqual(bad.headers.getRawHeaders(b"WWW-Authenticate"), [b'Basic realm="zot"'])
        await content(bad)
        (alice,) = registry.authorizer.identities
        self.assertEqual((alice.name, alice.method), ("alice", "ldap"))
        self.assertTrue({"devs", "ops"} <= alice.groups)

    async def test_withHTPasswd(self):
        """
        With both, htpasswd is asked first and LDAP next (zot's order): a
        local user logs in through htpasswd, a directory user through LDAP,
        and a name in both logs in with either password, by the method that
        knows it.
        """
        await self.directory()
        htpasswd = os.path.abspath(self.mktemp())
        writeHTPasswd(htpasswd, {"local": "local-pw", "alice": "alice-local-pw"})
        registry = await startRecordedRegistry(
            self,
            {
                "http": {
                    "auth": {
                        "htpasswd": {"path": htpasswd},
                        "ldap": self.slapd.config(),
                    }
                }
            },
        )
        for user, password in [
            ("local", "local-pw"),
            ("bob", "bob-pw"),
            ("alice", "alice-local-pw"),
            ("alice", "alice-pw"),
        ]:
            response = await credentialedClient(self, user, password).get(registry.url + "/v2/")
            self.assertEqual(response.code, 200, (user, password))
            await content(response)
        self.assertEqual(
            [(i.name, i.method) for i in registry.authorizer.identities],
            [("local", "htpasswd"), ("bob", "ldap"), ("alice", "htpasswd"), ("alice", "ldap")],
        )


class CredentialsFileTests(SynchronousTestCase):
    """
    zot's LDAP credentials file: exactly C{bindDN} and C{bindPassword}.
    """

    def write(self, document) -> str:
        """
        Write C{document} (JSON, or raw text) to a file; return its path.
        """
        path = os.path.abspath(self.mktemp())
        with open(path, "w") as f:
            f.write(document if isinstance(document, str) else json.dumps(document))
        return path

    def test_good(self):
        """
        Both keys give the pair (key case does not matter, as in zot).
        """
        path = self.write({"bindDN": "cn=r", "BINDPASSWORD": "pw"})
        self.assertEqual(readCredentialsFile(path), ("cn=r", "pw"))

    def test_refused(self):
        """
        Unknown keys, missing keys, non-strings, non-objects, bad JSON and
        a missing file are refused with one line that never shows the
        password.
        """
        for document, expected in [
            ({"bindDN": "cn=r", "bindPassword": "pw", "extra": 1}, 'unknown key "extra"'),
            ({"bindDN": "cn=r"}, "bindPassword is missing"),
            ({"bindDN": "cn=r", "bindPassword": 5}, "bindPassword must be a non-empty string"),
            (["cn=r", "pw"], "expected a JSON object"),
            ("{nope", "not a JSON object"),
        ]:
            with self.assertRaises(ConfigError) as caught:
                readCredentialsFile(self.write(document), "zot.json")
            message = str(caught.exception)
            self.assertTrue(
                message.startswith("zot.json: http.auth.ldap.credentialsFile: "), message
            )
            self.assertIn(expected, message)
            self.assertNotIn("pw", message.split(": ", 2)[2].replace(expected, ""))
        with self.assertRaises(ConfigError):
            readCredentialsFile("/nonexistent/creds.json")

    def test_startupRefusesBadFile(self):
        """
        Building the checker reads the file, so a bad one stops start-up.
        """
        path = self.write({"bindDN": "cn=r", "bindPassword": "pw", "oops": True})
        section = {
            "address": "l",
            "baseDN": "dc=x",
            "userAttribute": "uid",
            "credentialsFile": path,
        }
        with self.assertRaises(ConfigError):
            LDAPChecker(_ldapConfig(section), reactor, InlineRunner())

    def test_badUserFilter(self):
        """
        A C{userFilter} that is not a filter stops start-up.
        """
        section = {"address": "l", "baseDN": "dc=x", "userAttribute": "uid", "userFilter": "(&(("}
        with self.assertRaises(ConfigError) as caught:
            LDAPChecker(_ldapConfig(section), reactor, InlineRunner())
        self.assertIn("http.auth.ldap.userFilter", str(caught.exception))


class GroupNameTests(SynchronousTestCase):
    """
    L{groupNames} reads C{userGroupAttribute} values.
    """

    def test_names(self):
        """
        A DN gives itself and its first RDN's value; a plain name gives
        itself; empty values are dropped.
        """
        self.assertEqual(
            groupNames([b"cn=devs,ou=groups,dc=example,dc=org", b"builders", b""]),
            frozenset({"cn=devs,ou=groups,dc=example,dc=org", "devs", "builders"}),
        )
