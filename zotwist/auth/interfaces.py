# -*- test-case-name: tests.test_auth_interfaces -*-
"""
The two questions the web layer asks before a handler runs.

L{V2Resource} asks an L{IAuthenticator} who the caller is, keeps the answer
on the request as C{request.identity}, then asks an L{IAuthorizer} whether
that identity may do what the route and method mean.  Without any auth
configured both are the open defaults below: everyone is anonymous and
anonymous may do everything, as zot behaves with no C{http.auth}.
"""

from dataclasses import dataclass, field

from twisted.internet.defer import succeed
from zope.interface import Interface, implementer


@dataclass(frozen=True)
class Identity:
    """
    The caller, as established by an authenticator.

    @ivar name: the user name, or L{None} for an anonymous caller.
    @ivar groups: group names (from LDAP, the config's groups, ...).
    @ivar method: how it was established: C{"anonymous"}, C{"htpasswd"},
        C{"ldap"}, C{"mtls"}, C{"bearer"}, ...
    @ivar claims: for bearer tokens, the token's C{access} claims.
    """

    name: str | None
    groups: frozenset = frozenset()
    method: str = "anonymous"
    claims: tuple = field(default=())

    @property
    def anonymous(self) -> bool:
        return self.name is None


ANONYMOUS = Identity(None)


class IAuthenticator(Interface):
    """
    Establishes the caller's identity from a request (headers, TLS peer).
    """

    def authenticate(request):
        """
        @return: a L{Deferred} firing with an L{Identity} (L{ANONYMOUS} when
            the request carries no credentials), or failing with a
            C{RegistryError("UNAUTHORIZED")} for credentials that are wrong.
        """

    def challenge(request):
        """
        @param request: the request being refused (its C{route} attribute,
            when set, says which repository and action a Bearer challenge's
            C{scope} should name).
        @return: the headers a 401 answer carries (C{WWW-Authenticate}), as a
            dict of str to str.
        """


class IAuthorizer(Interface):
    """
    Decides what an identity may do.
    """

    def authorize(identity, route, method, request):
        """
        @param route: the matched L{zotwist.web.routes.Route}.
        @param method: the HTTP method, upper case (HEAD as itself).
        @return: a L{Deferred} firing when allowed, failing with
            C{RegistryError("UNAUTHORIZED")} (anonymous caller) or
            C{RegistryError("DENIED")} otherwise.
        """

    def mayRead(identity, repository):
        """
        @return: whether C{identity} may read C{repository} (used to filter
            the catalog and to choose mount sources).
        """


@implementer(IAuthenticator)
class NoAuthentication:
    """
    No C{http.auth}: every caller is anonymous.
    """

    def authenticate(self, request):
        return succeed(ANONYMOUS)

    def challenge(self, request):
        return {}


@implementer(IAuthorizer)
class AllowEverything:
    """
    No C{http.accessControl} and no authentication: everything is allowed.
    """

    def authorize(self, identity, route, method, request):
        return succeed(None)

    def mayRead(self, identity, repository):
        return True
