# -*- test-case-name: tests.test_auth_basic -*-
"""
The twisted.cred side of logging in: credentials, avatar ids and the realm.

Every checker answers with an L{AvatarId}: who the caller is, how that was
established, and the groups the checker itself learnt (LDAP reads them from
the user's entry).  The one L{RegistryRealm} turns that into the
L{zotwist.auth.interfaces.Identity} the web layer and the authorizer see.
Twisted documents avatar ids as bytes; ours carry more because an LDAP login
knows the user's groups only at the moment it succeeds.
"""

from dataclasses import dataclass

from twisted.cred.credentials import ICredentials
from twisted.cred.portal import IRealm
from zope.interface import Attribute, Interface, implementer

from zotwist.auth.interfaces import Identity


class IRegistryUser(Interface):
    """
    The avatar interface the registry logs in for: the avatar is an
    L{Identity}.
    """


class IClientCertificate(ICredentials):
    """
    Credentials made of a client certificate that the TLS handshake already
    verified against C{http.tls.cacert}.
    """

    certificate = Attribute("The peer's leaf certificate (cryptography x509.Certificate).")


@implementer(IClientCertificate)
@dataclass(frozen=True)
class ClientCertificate:
    """
    A verified client certificate, as credentials.
    """

    certificate: object


@dataclass(frozen=True)
class AvatarId:
    """
    What a checker established.

    @ivar name: the user name.
    @ivar method: C{"htpasswd"}, C{"ldap"} or C{"mtls"}.
    @ivar groups: groups the checker learnt (LDAP), possibly empty.
    """

    name: str
    method: str
    groups: tuple = ()


@implementer(IRealm)
class RegistryRealm:
    """
    Builds the caller's L{Identity} from an L{AvatarId}.

    @ivar groupsOf: a callable giving extra groups for a user name (the
        config's C{accessControl.groups}, when the authorizer wants them on
        the identity); by default none.
    """

    def __init__(self, groupsOf=None):
        self._groupsOf = groupsOf or (lambda name: ())

    def requestAvatar(self, avatarId, mind, *interfaces):
        """
        @return: C{(IRegistryUser, identity, logout)}.
        @raise NotImplementedError: for any other avatar interface.
        """
        if IRegistryUser not in interfaces:
            raise NotImplementedError("RegistryRealm only makes IRegistryUser avatars")
        groups = frozenset(avatarId.groups) | frozenset(self._groupsOf(avatarId.name))
        identity = Identity(avatarId.name, groups, avatarId.method)
        return IRegistryUser, identity, lambda: None
