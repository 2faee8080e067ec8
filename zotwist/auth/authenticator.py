# -*- test-case-name: tests.test_auth_basic -*-
"""
Who is calling: C{http.auth} (htpasswd, LDAP, mTLS) through one cred
L{Portal}, behind the L{IAuthenticator} hook of the web layer.

How a request is read, as zot reads it:
  1. More than one C{Authorization} header: refused.
  2. An C{Authorization} header with credentials, when htpasswd or LDAP is
     configured: Basic credentials, checked by htpasswd first and then LDAP
     (zot's order: the local file, then the network).  Malformed or wrong
     credentials are refused; an LDAP outage refuses too (and is logged).
  3. Otherwise, with C{http.tls.cacert}, a verified client certificate:
     the user it names (L{zotwist.auth.mtls}).
  4. Otherwise the caller is anonymous; whether anonymous may do anything
     is the authorizer's decision (L{AuthenticatedOnly} says no).

A refused login waits C{http.auth.failDelay} seconds (a reactor timer, so
every other client is served meanwhile) and then answers 401 UNAUTHORIZED
with C{WWW-Authenticate: Basic realm="<http.realm>"}.  Passwords are never
logged: only the user name, the client address and why.

L{buildAuthenticator}, L{buildAuthorizer} and L{buildTLSOptions} turn a
loaded config into these pieces; L{checkSecurityConfig} runs the same
construction once before the server starts, so that a missing certificate,
htpasswd file or LDAP credentials file stops C{twistd zot} with one line.
"""

from twisted.cred.checkers import ICredentialsChecker
from twisted.cred.credentials import UsernamePassword
from twisted.cred.error import UnauthorizedLogin
from twisted.cred.portal import Portal
from twisted.internet.defer import ensureDeferred, fail, succeed
from twisted.internet.task import deferLater
from twisted.logger import Logger
from zope.interface import implementer

from zotwist.auth.basic import (
    MalformedCredentials,
    authorizationHeaders,
    isEmptyAuthorization,
    parseBasic,
)
from zotwist.auth.htpasswd import HTPasswdChecker
from zotwist.auth.interfaces import (
    ANONYMOUS,
    AllowEverything,
    IAuthenticator,
    IAuthorizer,
    NoAuthentication,
)
from zotwist.auth.ldap import LDAPChecker
from zotwist.auth.mtls import ClientCertificateChecker, peerCertificate
from zotwist.auth.realm import ClientCertificate, IRegistryUser, RegistryRealm
from zotwist.config import ConfigError
from zotwist.errors import RegistryError
from zotwist.tls import serverTLSOptions


@implementer(IAuthenticator)
class PortalAuthenticator:
    """
    Establishes the caller through a cred L{Portal}.

    @param portal: a portal whose realm makes L{IRegistryUser} avatars
        (L{zotwist.auth.interfaces.Identity}), with a checker for
        C{IUsernamePassword} when C{basic} and one for C{IClientCertificate}
        when C{mtls}.
    @param realm: the C{http.realm} named in the Basic challenge.
    @param failDelay: seconds to wait before refusing a login.
    @param clock: an C{IReactorTime} for that wait.
    @param basic: whether Basic credentials are read.
    @param mtls: whether client certificates are read.
    """

    _log = Logger()

    def __init__(self, portal, realm="zot", failDelay=0, clock=None, basic=True, mtls=False):
        self._portal = portal
        self._realm = realm
        self.failDelay = failDelay
        self._clock = clock
        self._basic = basic
        self._mtls = mtls

    def challenge(self, request):
        """
        The Basic challenge, quoting the realm as Go's C{strconv.Quote} does
        for the characters that matter.
        """
        realm = (self._realm or "zot").replace("\\", "\\\\").replace('"', '\\"')
        return {"WWW-Authenticate": f'Basic realm="{realm}"'}

    def authenticate(self, request):
        """
        @return: a L{Deferred} firing with the caller's L{Identity}
            (L{ANONYMOUS} without credentials), or failing with
            C{RegistryError("UNAUTHORIZED")} after C{failDelay}.
        """
        return ensureDeferred(self._authenticate(request))

    async def _authenticate(self, request):
        headers = authorizationHeaders(request)
        if len(headers) > 1:
            await self._refuse(request, "several Authorization headers")
        if self._basic and headers and not isEmptyAuthorization(headers[0]):
            try:
                username, password = parseBasic(headers[0])
            except MalformedCredentials as e:
                await self._refuse(request, str(e))
            credentials = UsernamePassword(username, password)
            del password
            try:
                _, identity, _ = await self._portal.login(credentials, None, IRegistryUser)
            except UnauthorizedLogin:
                await self._refuse(request, "wrong user name or password", username)
            return identity
        if self._mtls:
            certificate = peerCertificate(request)
            if certificate is not None:
                try:
                    _, identity, _ = await self._portal.login(
                        ClientCertificate(certificate), None, IRegistryUser
                    )
                except UnauthorizedLogin:
                    await self._refuse(request, "the client certificate names no user")
                return identity
        return ANONYMOUS

    async def _refuse(self, request, reason: str, username: str | None = None):
        """
        Log a failed login, wait C{failDelay}, then raise 401.
        """
        peer = request.getClientAddress()
        self._log.info(
            "Failed login{forUser} from {client}: {reason}",
            forUser=f" for {username!r}" if username is not None else "",
            username=username,
            client=getattr(peer, "host", str(peer)),
            reason=reason,
        )
        if self.failDelay > 0:
            await deferLater(self._clock, self.failDelay)
        raise RegistryError("UNAUTHORIZED")


@implementer(IAuthorizer)
class AuthenticatedOnly:
    """
    Authentication configured and no C{http.accessControl}: as in zot, any
    authenticated user may do everything, and anonymous callers nothing
    (401, so that clients send their credentials).
    """

    def authorize(self, identity, route, method, request):
        """
        @return: a L{Deferred} that fails with 401 for anonymous callers.
        """
        if identity is None or identity.anonymous:
            return fail(RegistryError("UNAUTHORIZED"))
        return succeed(None)

    def mayRead(self, identity, repository):
        """
        @return: whether C{identity} is an authenticated user.
        """
        return identity is not None and not identity.anonymous


@implementer(ICredentialsChecker)
class _FirstSuccess:
    """
    Several checkers for the same credentials interface, asked in order
    until one accepts (a Portal keeps one checker per interface).
    """

    def __init__(self, checkers):
        self._checkers = list(checkers)
        self.credentialInterfaces = self._checkers[0].credentialInterfaces

    def requestAvatarId(self, credentials):
        """
        @return: the first L{AvatarId} any checker gives, or the last
            L{UnauthorizedLogin}.
        """
        return ensureDeferred(self._ask(credentials))

    async def _ask(self, credentials):
        refusal = None
        for checker in self._checkers:
            try:
                return await checker.requestAvatarId(credentials)
            except UnauthorizedLogin as e:
                refusal = e
        raise refusal


# -- building from the config ---------------------------------------------


def _passwordMethods(config) -> bool:
    """
    Whether htpasswd or LDAP is configured.
    """
    auth = config.http.auth
    return auth is not None and (auth.htpasswd is not None or auth.ldap is not None)


def _otherLogins(config) -> bool:
    """
    Whether a login other than a client certificate is configured (htpasswd,
    LDAP or bearer tokens): client certificates are then optional.
    """
    auth = config.http.auth
    return _passwordMethods(config) or (auth is not None and auth.bearer is not None)


def _mtlsEnabled(config) -> bool:
    """
    Whether client certificates are verified (C{http.tls.cacert}).
    """
    tls = config.http.tls
    return tls is not None and bool(tls.cacert)


def authenticationConfigured(config) -> bool:
    """
    Whether callers can log in at all (htpasswd, LDAP or mTLS): then
    anonymous callers are refused unless an authorizer says otherwise.
    """
    return _passwordMethods(config) or _mtlsEnabled(config)


def buildTLSOptions(config):
    """
    The server's TLS options for C{http.tls}, or L{None} for plain HTTP.

    Client certificates are required when they are the only way to log in,
    and optional (verified when given) next to htpasswd or LDAP.

    @raise ConfigError: for unusable certificate or key files.
    """
    if config.http.tls is None:
        return None
    return serverTLSOptions(
        config.http.tls,
        requireClientCertificate=not _otherLogins(config),
        source=config.source,
    )


def buildAuthenticator(config, reactor, runner):
    """
    The L{IAuthenticator} for C{http.auth} and C{http.tls.cacert}.

    @param reactor: the clock for C{failDelay} and LDAP connections.
    @param runner: an L{zotwist.threads.IBlockingRunner} for bcrypt and file
        reads.
    @raise ConfigError: for an unreadable htpasswd file, a bad LDAP
        credentials file, CA file or user filter.
    """
    if not authenticationConfigured(config):
        return NoAuthentication()
    auth = config.http.auth
    source = config.source
    realm = RegistryRealm()
    portal = Portal(realm)
    passwordCheckers = []
    if auth is not None and auth.htpasswd is not None:
        checker = HTPasswdChecker(auth.htpasswd.path, runner)
        try:
            checker.load()
        except OSError as e:
            raise ConfigError(
                source,
                "http.auth.htpasswd.path",
                f"cannot read {auth.htpasswd.path}: {e.strerror or e}",
            ) from None
        passwordCheckers.append(checker)
    if auth is not None and auth.ldap is not None:
        passwordCheckers.append(LDAPChecker(auth.ldap, reactor, runner, source))
    if passwordCheckers:
        if len(passwordCheckers) == 1:
            portal.registerChecker(passwordCheckers[0])
        else:
            portal.registerChecker(_FirstSuccess(passwordCheckers))
    if _mtlsEnabled(config):
        portal.registerChecker(ClientCertificateChecker(auth.mtls if auth else None))
    return PortalAuthenticator(
        portal,
        realm=config.http.realm,
        failDelay=auth.failDelay if auth is not None else 0,
        clock=reactor,
        basic=bool(passwordCheckers),
        mtls=_mtlsEnabled(config),
    )


def buildAuthorizer(config):
    """
    The default authorizer: L{AuthenticatedOnly} when anyone can log in,
    L{AllowEverything} otherwise.  (C{http.accessControl} brings its own.)
    """
    if authenticationConfigured(config):
        return AuthenticatedOnly()
    return AllowEverything()


def checkSecurityConfig(config) -> None:
    """
    Build the TLS options and the authenticator once, only to find problems
    with the files they read, before the server starts.

    @raise ConfigError: as L{buildTLSOptions} and L{buildAuthenticator}.
    """
    buildTLSOptions(config)
    buildAuthenticator(config, reactor=None, runner=None)
