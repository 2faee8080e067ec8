# -*- test-case-name: tests.test_ldap -*-
"""
C{http.auth.ldap}: user names and passwords checked against a directory,
through ldaptor.

One login is one fresh connection: connect (plain, StartTLS or LDAPS), bind
as the service account, search the user, bind as the user with the
password given, read the user's groups, unbind.  The whole exchange has a
time limit, so that a directory that stops answering costs a client a 401
after L{LDAPChecker.timeout} seconds, not a hung request.

Transport, as zot reads its keys:
  - C{startTLS: true}: plain TCP, then the StartTLS extended operation;
  - otherwise C{insecure: true}: plain TCP, nothing encrypted (tests and
    loopback directories only);
  - otherwise LDAPS, TLS from the first byte (zot's default).
TLS verifies the server's certificate against C{caCert} (or the system's
CAs) and its name against C{address}, unless C{skipVerify} is true.

The user is searched with filter objects, never by formatting the name
into a filter string: C{(&<userFilter>(<userAttribute>=<name>))}, where
C{userFilter} (optional) is the operator's own filter text, parsed once at
start-up.  The search is one level below C{baseDN}, or the whole subtree
with C{subtreeSearch}; anything but exactly one entry refuses the login.
An empty password is refused before any network traffic: to LDAP it would
be an unauthenticated bind, which succeeds without proving anything
(RFC 4513, 5.1.2).

Groups come from C{userGroupAttribute} of the user's entry (e.g.
C{memberOf}).  A value that is a DN counts twice: whole, and as the value of
its first RDN (C{cn=devs,ou=groups,dc=example,dc=org} is group C{devs} too),
so that C{accessControl} can name groups either way.

The service account's DN and password come from C{credentialsFile} (a JSON
object with exactly C{bindDN} and C{bindPassword}, re-read when it changes)
or from the inline C{bindDN}/C{bindPassword}; with neither, the search runs
on an anonymous bind.
"""

import json
import os

from ldaptor import ldapfilter
from ldaptor.protocols import pureldap
from ldaptor.protocols.ldap import distinguishedname, ldapclient, ldaperrors, ldapsyntax
from OpenSSL.crypto import X509
from twisted.cred.checkers import ICredentialsChecker
from twisted.cred.credentials import IUsernamePassword
from twisted.cred.error import UnauthorizedLogin
from twisted.internet.defer import ensureDeferred, fail
from twisted.internet.endpoints import HostnameEndpoint, connectProtocol, wrapClientTLS
from twisted.internet.ssl import (
    Certificate,
    CertificateOptions,
    optionsForClientTLS,
    platformTrust,
    trustRootFromCertificates,
)
from twisted.logger import Logger
from zope.interface import implementer

from zotwist.auth.realm import AvatarId
from zotwist.config import ConfigError
from zotwist.tls import loadCertificates

_CREDENTIAL_KEYS = ("bindDN", "bindPassword")


def readCredentialsFile(path: str, source: str = "<config>") -> "tuple[str, str]":
    """
    Read zot's LDAP credentials file: a JSON object with exactly C{bindDN}
    and C{bindPassword} (zot refuses unknown and missing keys there too).

    @return: C{(bindDN, bindPassword)}.
    @raise ConfigError: naming C{http.auth.ldap.credentialsFile}; the
        password is never part of the message.
    """
    keyPath = "http.auth.ldap.credentialsFile"
    try:
        with open(path, "rb") as f:
            data = f.read()
    except OSError as e:
        raise ConfigError(source, keyPath, f"cannot read {path}: {e.strerror or e}") from None
    try:
        document = json.loads(data.decode("utf-8-sig"))
    except (UnicodeDecodeError, ValueError) as e:
        reason = getattr(e, "msg", None) or type(e).__name__
        raise ConfigError(source, keyPath, f"{path}: not a JSON object ({reason})") from None
    if not isinstance(document, dict):
        raise ConfigError(source, keyPath, f"{path}: expected a JSON object")
    folded = {key.lower(): key for key in _CREDENTIAL_KEYS}
    values = {}
    for key, value in document.items():
        name = folded.get(key.lower())
        if name is None:
            raise ConfigError(
                source,
                keyPath,
                f"{path}: unknown key {json.dumps(key)} (expected only bindDN and bindPassword)",
            )
        if not isinstance(value, str) or not value:
            raise ConfigError(source, keyPath, f"{path}: {name} must be a non-empty string")
        values[name] = value
    for name in _CREDENTIAL_KEYS:
        if name not in values:
            raise ConfigError(source, keyPath, f"{path}: {name} is missing")
    return values["bindDN"], values["bindPassword"]


def parseUserFilter(text: str | None, source: str = "<config>"):
    """
    Parse the operator's C{userFilter} once, at start-up.

    @return: an ldaptor filter object, or L{None}.
    @raise ConfigError: if it is not an LDAP filter.
    """
    if not text:
        return None
    text = text.strip()
    if not text.startswith("("):
        text = f"({text})"
    try:
        return ldapfilter.parseFilter(text)
    except Exception as e:
        raise ConfigError(
            source, "http.auth.ldap.userFilter", f"not an LDAP search filter: {e}"
        ) from None


def _loadCA(path: str, source: str):
    """
    The trust root made of the PEM certificates in C{caCert}.
    """
    certificates = loadCertificates(
        source, "http.auth.ldap.caCert", path, "PEM CA certificate file"
    )
    return trustRootFromCertificates(
        [Certificate(X509.from_cryptography(c)) for c in certificates]
    )


def groupNames(values) -> "frozenset[str]":
    """
    The groups named by the values of C{userGroupAttribute}: each value
    itself and, for a DN, the value of its first RDN.
    """
    groups = set()
    for raw in values:
        value = raw.decode("utf-8", "replace") if isinstance(raw, bytes) else str(raw)
        if not value:
            continue
        groups.add(value)
        if "=" in value:
            try:
                rdn = distinguishedname.DistinguishedName(value).split()[0]
                groups.add(rdn.split()[0].value)
            except Exception:
                pass
    return frozenset(groups)


def _values(entry, attribute: str) -> list:
    """
    The values of C{attribute} in a search result entry (any case), or [].
    """
    wanted = attribute.lower()
    for key, values in entry.items():
        name = key.decode("utf-8", "replace") if isinstance(key, bytes) else str(key)
        if name.lower() == wanted:
            return list(values)
    return []


@implementer(ICredentialsChecker)
class LDAPChecker:
    """
    Checks user names and passwords by binding to an LDAP directory.

    @param ldapConfig: a L{zotwist.config.LDAPConfig}.
    @param reactor: for connections and the time limit.
    @param runner: an L{zotwist.threads.IBlockingRunner} for reading the
        credentials file.
    @param source: the config file's name, for messages.
    @ivar timeout: seconds one whole login may take.
    """

    credentialInterfaces = (IUsernamePassword,)
    _log = Logger()
    timeout = 10.0

    def __init__(self, ldapConfig, reactor, runner, source: str = "<config>"):
        self._config = ldapConfig
        self._reactor = reactor
        self._runner = runner
        self._source = source
        self._userFilter = parseUserFilter(ldapConfig.userFilter, source)
        self._trustRoot = None
        if ldapConfig.caCert:
            self._trustRoot = _loadCA(ldapConfig.caCert, source)
        self._credentialsStamp = None
        self._bind = (ldapConfig.bindDN, ldapConfig.bindPassword)
        if ldapConfig.credentialsFile:
            self._bind = readCredentialsFile(ldapConfig.credentialsFile, source)
            self._credentialsStamp = self._stamp()

    # -- the service account ---------------------------------------------

    def _stamp(self):
        """
        What identifies one version of the credentials file.
        """
        try:
            stat = os.stat(self._config.credentialsFile)
        except OSError:
            return None
        return (stat.st_dev, stat.st_ino, stat.st_size, stat.st_mtime_ns)

    def _refreshCredentials(self):
        """
        Re-read the credentials file if it changed (blocking; runs in the
        thread pool).  A file that became invalid keeps the last good
        credentials and logs why.
        """
        stamp = self._stamp()
        if stamp is None or stamp == self._credentialsStamp:
            return self._bind
        try:
            self._bind = readCredentialsFile(self._config.credentialsFile, self._source)
            self._log.info(
                "Re-read the LDAP credentials file {path}", path=self._config.credentialsFile
            )
        except ConfigError as e:
            self._log.error("Keeping the previous LDAP service account: {error}", error=str(e))
        self._credentialsStamp = stamp
        return self._bind

    # -- connecting --------------------------------------------------------

    def _clientTLS(self):
        """
        The client TLS options for LDAPS and StartTLS.
        """
        if self._config.skipVerify:
            return CertificateOptions()
        return optionsForClientTLS(
            self._config.address, trustRoot=self._trustRoot or platformTrust()
        )

    async def _connect(self):
        """
        Open a connection as the config says and return the L{LDAPClient}.
        """
        config = self._config
        endpoint = HostnameEndpoint(
            self._reactor, config.address.encode("idna"), config.port, timeout=self.timeout
        )
        if not config.startTLS and not config.insecure:
            endpoint = wrapClientTLS(self._clientTLS(), endpoint)
        client = await connectProtocol(endpoint, ldapclient.LDAPClient())
        if config.startTLS:
            try:
                await client.startTLS(self._clientTLS())
            except BaseException:
                client.transport.abortConnection()
                raise
        return client

    # -- logging in --------------------------------------------------------

    def _filterFor(self, username: str):
        """
        The search filter for C{username}, as objects (no string building).
        """
        match = pureldap.LDAPFilter_equalityMatch(
            attributeDesc=pureldap.LDAPAttributeDescription(self._config.userAttribute),
            assertionValue=pureldap.LDAPAssertionValue(username),
        )
        if self._userFilter is None:
            return match
        return pureldap.LDAPFilter_and([self._userFilter, match])

    async def _login(self, username: str, password: str) -> AvatarId:
        """
        Service bind, search, user bind, groups.

        @raise UnauthorizedLogin: for anything but success.
        """
        config = self._config
        if config.credentialsFile:
            bindDN, bindPassword = await self._runner.run(self._refreshCredentials)
        else:
            bindDN, bindPassword = self._bind
        client = await self._connect()
        try:
            if bindDN:
                try:
                    await ldapsyntax.LDAPEntry(client, bindDN).bind(bindPassword or "")
                except ldaperrors.LDAPException as e:
                    self._log.error(
                        "LDAP service account {dn} cannot bind: {error}",
                        dn=bindDN,
                        error=type(e).__name__,
                    )
                    raise UnauthorizedLogin("the directory refused the service account")
            scope = (
                pureldap.LDAP_SCOPE_wholeSubtree
                if config.subtreeSearch
                else pureldap.LDAP_SCOPE_singleLevel
            )
            attributes = [config.userAttribute]
            if config.userGroupAttribute:
                attributes.append(config.userGroupAttribute)
            entries = await ldapsyntax.LDAPEntry(client, config.baseDN).search(
                filterObject=self._filterFor(username), attributes=attributes, scope=scope
            )
            if len(entries) != 1:
                self._log.info(
                    "LDAP login refused for {user}: {count} entries match",
                    user=username,
                    count=len(entries),
                )
                raise UnauthorizedLogin("no single directory entry for this user")
            entry = entries[0]
            userDN = entry.dn.getText()
            try:
                await ldapsyntax.LDAPEntry(client, userDN).bind(password)
            except ldaperrors.LDAPInvalidCredentials:
                raise UnauthorizedLogin("wrong user name or password") from None
            name = username
            for value in _values(entry, config.userAttribute):
                text = value.decode("utf-8", "replace") if isinstance(value, bytes) else value
                if text.casefold() == username.casefold():
                    name = text
                    break
            groups = ()
            if config.userGroupAttribute:
                groups = tuple(sorted(groupNames(_values(entry, config.userGroupAttribute))))
            return AvatarId(name, "ldap", groups)
        finally:
            try:
                client.unbind()
            except Exception:
                if client.transport is not None:
                    client.transport.abortConnection()

    def requestAvatarId(self, credentials):
        """
        @return: a L{Deferred} firing with an L{AvatarId} (method C{"ldap"},
            with the user's groups), or failing with L{UnauthorizedLogin};
            directory errors and time-outs are logged and refuse the login.
        """
        username = credentials.username
        password = credentials.password
        if isinstance(username, bytes):
            username = username.decode("utf-8")
        if isinstance(password, bytes):
            password = password.decode("utf-8")
        if not password:
            return fail(UnauthorizedLogin("an empty password is an unauthenticated bind"))
        d = ensureDeferred(self._login(username, password))
        d.addTimeout(self.timeout, self._reactor)

        def failed(failure):
            if failure.check(UnauthorizedLogin):
                return failure
            self._log.error(
                "LDAP login of {user} failed: {error}",
                user=username,
                error=f"{failure.type.__name__}: {failure.getErrorMessage()}",
            )
            raise UnauthorizedLogin("the directory could not be asked")

        return d.addErrback(failed)
