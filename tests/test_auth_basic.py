"""
Unit tests of the authentication pieces: Basic header parsing, the realm,
the checkers' and authenticator's interfaces, the chained password checkers
and the default authorizer.
"""

import base64

from twisted.cred.checkers import ICredentialsChecker
from twisted.cred.credentials import IUsernamePassword, UsernamePassword
from twisted.cred.error import UnauthorizedLogin
from twisted.cred.portal import IRealm, Portal
from twisted.internet.defer import fail, succeed
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase
from twisted.web.test.requesthelper import DummyRequest
from zope.interface import implementer
from zope.interface.verify import verifyObject

from zotwist.auth.authenticator import (
    AuthenticatedOnly,
    PortalAuthenticator,
    _FirstSuccess,
    authenticationConfigured,
    buildAuthorizer,
)
from zotwist.auth.basic import MalformedCredentials, isEmptyAuthorization, parseBasic
from zotwist.auth.htpasswd import HTPasswdChecker, parseHTPasswd
from zotwist.auth.interfaces import ANONYMOUS, AllowEverything, IAuthenticator, IAuthorizer
from zotwist.auth.mtls import ClientCertificateChecker
from zotwist.auth.realm import AvatarId, IRegistryUser, RegistryRealm
from zotwist.config import parseConfig
from zotwist.errors import RegistryError
from zotwist.threads import InlineRunner


def _token(raw: bytes) -> bytes:
    """
    C{Basic <base64(raw)>}.
    """
    return b"Basic " + base64.b64encode(raw)


class ParseBasicTests(SynchronousTestCase):
    """
    L{parseBasic} accepts exactly RFC 7617 credentials.
    """

    def test_good(self):
        """
        User and password split at the first colon; the password may hold
        colons and be empty; the scheme is case-insensitive.
        """
        self.assertEqual(parseBasic(_token(b"alice:s3cret")), ("alice", "s3cret"))
        self.assertEqual(parseBasic(_token(b"alice:a:b:c")), ("alice", "a:b:c"))
        self.assertEqual(parseBasic(_token(b"alice:")), ("alice", ""))
        self.assertEqual(parseBasic(b"bAsIc " + base64.b64encode(b"a:b")), ("a", "b"))

    def test_nonASCII(self):
        """
        UTF-8 user names and passwords decode; other bytes are refused.
        """
        raw = "j\u00fcrgen:p\u00e4ssw\u00f6rd".encode()
        self.assertEqual(parseBasic(_token(raw)), ("j\u00fcrgen", "p\u00e4ssw\u00f6rd"))
        with self.assertRaises(MalformedCredentials):
            parseBasic(_token("j\u00fcrgen:x".encode("latin-1")))

    def test_malformed(self):
        """
        Other schemes, missing or extra tokens, bad base64, no colon, an
        empty user name and control characters are all refused.
        """
        for header in [
            b"Bearer abc.def.ghi",
            b"Basic",
            b"Basic ",
            b"Basic a b",
            b"Basic !!!!",
            b"Basic YWxpY2U6cw",  # missing padding
            b"Basic YWxpY2U6cw==junk",
            _token(b"alice"),
            _token(b":password"),
            _token(b"ali\nce:pw"),
            _token(b"ali\x00ce:pw"),
            b"Digest username=alice",
        ]:
            with self.assertRaises(MalformedCredentials, msg=header):
                parseBasic(header)

    def test_emptyCredentials(self):
        """
        C{Basic Og==} (user and password empty) and a blank header mean no
        credentials; anything else does not.
        """
        self.assertTrue(isEmptyAuthorization(b"Basic Og=="))
        self.assertTrue(isEmptyAuthorization(b"basic og=="))
        self.assertTrue(isEmptyAuthorization(b"  "))
        self.assertFalse(isEmptyAuthorization(_token(b"a:b")))


class InterfaceTests(SynchronousTestCase):
    """
    Each piece provides the interface it claims.
    """

    def test_verify(self):
        """
        The realm, the checkers, the authenticator and the authorizer
        provide their interfaces.
        """
        verifyObject(IRealm, RegistryRealm())
        verifyObject(ICredentialsChecker, HTPasswdChecker("/nonexistent", InlineRunner()))
        verifyObject(ICredentialsChecker, ClientCertificateChecker())
        verifyObject(IAuthenticator, PortalAuthenticator(Portal(RegistryRealm())))
        verifyObject(IAuthorizer, AuthenticatedOnly())
        verifyObject(ICredentialsChecker, _FirstSuccess([_Fixed("a", "b")]))

    def test_realm(self):
        """
        The realm makes an L{Identity} of the avatar id's name, method and
        groups, plus the groups its C{groupsOf} adds.
        """
        realm = RegistryRealm(groupsOf=lambda name: {"staff"} if name == "alice" else ())
        interface, identity, logout = realm.requestAvatar(
            AvatarId("alice", "ldap", ("devs",)), None, IRegistryUser
        )
        self.assertIs(interface, IRegistryUser)
        self.assertEqual(identity.name, "alice")
        self.assertEqual(identity.method, "ldap")
        self.assertEqual(identity.groups, frozenset({"devs", "staff"}))
        self.assertIsNone(logout())
        with self.assertRaises(NotImplementedError):
            realm.requestAvatar(AvatarId("a", "x"), None, IRealm)


@implementer(ICredentialsChecker)
class _Fixed:
    """
    A checker that accepts one password, recording every call.
    """

    credentialInterfaces = (IUsernamePassword,)

    def __init__(self, method, password):
        self.method = method
        self.password = password
        self.calls = 0

    def requestAvatarId(self, credentials):
        self.calls += 1
        if credentials.password == self.password:
            return succeed(AvatarId(credentials.username, self.method))
        return fail(UnauthorizedLogin())


class FirstSuccessTests(SynchronousTestCase):
    """
    htpasswd and LDAP together: the first checker that accepts wins.
    """

    def test_order(self):
        """
        The htpasswd password logs in through htpasswd without asking LDAP;
        the LDAP password falls through to LDAP; a password neither knows
        is refused after both were asked.
        """
        local = _Fixed("htpasswd", "local")
        remote = _Fixed("ldap", "remote")
        chained = _FirstSuccess([local, remote])
        self.assertEqual(
            self.successResultOf(chained.requestAvatarId(UsernamePassword("u", "local"))).method,
            "htpasswd",
        )
        self.assertEqual(remote.calls, 0)
        self.assertEqual(
            self.successResultOf(chained.requestAvatarId(UsernamePassword("u", "remote"))).method,
            "ldap",
        )
        self.failureResultOf(
            chained.requestAvatarId(UsernamePassword("u", "neither")), UnauthorizedLogin
        )
        self.assertEqual((local.calls, remote.calls), (3, 2))


class AuthenticatorTests(SynchronousTestCase):
    """
    L{PortalAuthenticator} on request doubles, with a fake clock.
    """

    def setUp(self):
        """
        A portal whose only password is C{right}, a 3 s failDelay.
        """
        portal = Portal(RegistryRealm())
        portal.registerChecker(_Fixed("htpasswd", "right"))
        self.clock = Clock()
        self.authenticator = PortalAuthenticator(
            portal, realm='my "zot"', failDelay=3, clock=self.clock
        )

    def request(self, *headers):
        """
        A request carrying the given C{Authorization} header values.
        """
        request = DummyRequest([b"v2", b""])
        for value in headers:
            request.requestHeaders.addRawHeader(b"authorization", value)
        return request

    def test_good(self):
        """
        The right password gives the user's identity at once.
        """
        d = self.authenticator.authenticate(self.request(_token(b"alice:right")))
        identity = self.successResultOf(d)
        self.assertEqual((identity.name, identity.method), ("alice", "htpasswd"))

    def test_anonymous(self):
        """
        No header, or C{Basic Og==}, is anonymous, at once.
        """
        anonymous = self.authenticator.authenticate(self.request())
        self.assertIs(self.successResultOf(anonymous), ANONYMOUS)
        self.assertIs(
            self.successResultOf(self.authenticator.authenticate(self.request(b"Basic Og=="))),
            ANONYMOUS,
        )

    def test_refusalsWaitFailDelay(self):
        """
        A wrong password, malformed credentials and two headers are each
        refused with 401 only after the fail delay.
        """
        for headers in [
            (_token(b"alice:wrong"),),
            (b"Basic ???",),
            (_token(b"alice:right"), _token(b"alice:right")),
        ]:
            d = self.authenticator.authenticate(self.request(*headers))
            self.clock.advance(2.9)
            self.assertNoResult(d)
            self.clock.advance(0.2)
            failure = self.failureResultOf(d, RegistryError)
            self.assertEqual((failure.value.code, failure.value.status), ("UNAUTHORIZED", 401))

    def test_challenge(self):
        """
        The challenge names the realm, quotes escaped.
        """
        self.assertEqual(
            self.authenticator.challenge(self.request()),
            {"WWW-Authenticate": 'Basic realm="my \\"zot\\""'},
        )


class DefaultAuthorizerTests(SynchronousTestCase):
    """
    Without C{accessControl}: everything is open without authentication,
    and reserved to authenticated users with it.
    """

    def test_choice(self):
        """
        htpasswd, LDAP or a client CA make L{AuthenticatedOnly} the
        authorizer; TLS alone or nothing leaves everything open.
        """
        base = {"storage": {"rootDirectory": "/tmp/x"}}
        for http, expected in [
            ({}, AllowEverything),
            ({"tls": {"cert": "/c", "key": "/k"}}, AllowEverything),
            ({"tls": {"cert": "/c", "key": "/k", "cacert": "/ca"}}, AuthenticatedOnly),
            ({"auth": {"htpasswd": {"path": "/h"}}}, AuthenticatedOnly),
            (
                {"auth": {"ldap": {"address": "l", "baseDN": "dc=x", "userAttribute": "uid"}}},
                AuthenticatedOnly,
            ),
            ({"auth": {"failDelay": 5}}, AllowEverything),
        ]:
            config = parseConfig({**base, "http": http})
            self.assertIsInstance(buildAuthorizer(config), expected)
            self.assertEqual(authenticationConfigured(config), expected is AuthenticatedOnly)

    def test_authenticatedOnly(self):
        """
        Anonymous callers get 401; any user may do anything and read
        every repository.
        """
        authorizer = AuthenticatedOnly()
        failure = self.failureResultOf(
            authorizer.authorize(ANONYMOUS, None, "GET", None), RegistryError
        )
        self.assertEqual(failure.value.code, "UNAUTHORIZED")
        user = RegistryRealm().requestAvatar(AvatarId("bob", "htpasswd"), None, IRegistryUser)[1]
        self.assertIsNone(self.successResultOf(authorizer.authorize(user, None, "DELETE", None)))
        self.assertTrue(authorizer.mayRead(user, "any/repo"))
        self.assertFalse(authorizer.mayRead(ANONYMOUS, "any/repo"))


class HTPasswdParseTests(SynchronousTestCase):
    """
    L{parseHTPasswd} keeps bcrypt entries only.
    """

    def test_parse(self):
        """
        C{$2y$}, C{$2b$} and C{$2a$} entries are kept (the last of a
        duplicate wins); comments, blank lines, lines without a colon and
        non-bcrypt hashes are skipped.
        """
        hashY = b"$2y$05$" + b"a" * 53
        hashB = b"$2b$05$" + b"b" * 53
        hashA = b"$2a$05$" + b"c" * 53
        data = b"\n".join(
            [
                b"# comment",
                b"",
                b"alice:" + hashY,
                b"bob:" + hashB,
                b"carol:" + hashA,
                b"dave:{SHA}W6ph5Mm5Pz8GgiULbPgzG37mj9g=",
                b"erin:$apr1$abc$def",
                b"frank:plaintext",
                b"no colon here",
                b"alice:" + hashB,
            ]
        )
        self.assertEqual(
            parseHTPasswd(data, "f"), {b"alice": hashB, b"bob": hashB, b"carol": hashA}
        )
