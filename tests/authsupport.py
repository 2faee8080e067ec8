"""
Helpers for the authentication tests: htpasswd files, Basic headers, a
registry whose authorizer records who each request came from, and a check
that secrets never reach the log.
"""

import base64
import json
import os
from dataclasses import dataclass, field
from typing import Any

import bcrypt
from treq import content
from treq.client import HTTPClient
from twisted.internet.endpoints import SSL4ServerEndpoint, TCP4ServerEndpoint
from twisted.internet.testing import EventLoggingObserver
from twisted.logger import formatEvent, globalLogPublisher
from twisted.web.client import Agent, HTTPConnectionPool
from twisted.web.http_headers import Headers
from twisted.web.iweb import IAgent
from zope.interface import implementer

from tests.support import deepMerge
from zotwist.auth.authenticator import AuthenticatedOnly, buildAuthenticator, buildTLSOptions
from zotwist.auth.interfaces import IAuthorizer
from zotwist.config import loadConfig
from zotwist.storage.local import LocalStore
from zotwist.threads import ThreadPoolRunner
from zotwist.web.site import RegistrySite

#: bcrypt's cheapest useful cost: about 3 ms per check.
FAST_COST = 5


def hashPassword(password: str, prefix: bytes = b"$2b$") -> bytes:
    """
    A bcrypt hash as C{htpasswd -B} writes it; C{prefix=b"$2y$"} gives
    Apache's spelling of the same algorithm.
    """
    hashed = bcrypt.hashpw(password.encode("utf-8"), bcrypt.gensalt(FAST_COST))
    return prefix + hashed[4:]


def writeHTPasswd(path: str, users: "dict[str, str]", prefix: bytes = b"$2y$", extra: bytes = b""):
    """
    Write an htpasswd file of bcrypt entries (C{$2y$} by default, as
    C{htpasswd -B} does), followed by C{extra} raw lines.
    """
    lines = [user.encode("utf-8") + b":" + hashPassword(pw, prefix) for user, pw in users.items()]
    with open(path, "wb") as f:
        f.write(b"\n".join(lines) + b"\n" + extra)


def basic(username: str, password: str) -> bytes:
    """
    An C{Authorization} header value for Basic credentials (UTF-8).
    """
    token = base64.b64encode(f"{username}:{password}".encode("utf-8"))
    return b"Basic " + token


def basicHeaders(username: str, password: str) -> dict:
    """
    Request headers carrying Basic credentials, for treq.
    """
    return {b"Authorization": [basic(username, password)]}


async def bodyJSON(response) -> Any:
    """
    The response body parsed as JSON.
    """
    return json.loads(await content(response))


@implementer(IAuthorizer)
class RecordingAuthorizer(AuthenticatedOnly):
    """
    L{AuthenticatedOnly}, remembering the identity of every request.
    """

    def __init__(self):
        self.identities: list = []

    def authorize(self, identity, route, method, request):
        """
        Record, then decide as L{AuthenticatedOnly}.
        """
        self.identities.append(identity)
        return super().authorize(identity, route, method, request)


@dataclass
class RecordedRegistry:
    """
    A registry built from a config, with a L{RecordingAuthorizer}.
    """

    url: str
    port: int
    authorizer: RecordingAuthorizer
    authenticator: Any
    config: Any
    extra: dict = field(default_factory=dict)


async def startRecordedRegistry(testCase, config: dict) -> RecordedRegistry:
    """
    Serve the registry's real site, TLS options and authenticator for
    C{config}, with an authorizer that records identities, on 127.0.0.1.
    """
    from twisted.internet import reactor

    base = os.path.abspath(testCase.mktemp())
    os.makedirs(base)
    document = deepMerge(
        {
            "distSpecVersion": "1.1.1",
            "storage": {"rootDirectory": os.path.join(base, "store")},
            "http": {"address": "127.0.0.1", "port": "0", "workers": 1},
            "log": {"level": "error"},
        },
        config,
    )
    path = os.path.join(base, "config.json")
    with open(path, "w") as f:
        json.dump(document, f)
    loaded = loadConfig(path)
    runner = ThreadPoolRunner(reactor, 0, 2, name="test-auth")
    runner.startService()
    testCase.addCleanup(runner.stopService)
    authenticator = buildAuthenticator(loaded, reactor, runner)
    authorizer = RecordingAuthorizer()
    os.makedirs(loaded.storage.rootDirectory)
    site = RegistrySite(LocalStore(loaded.storage.rootDirectory, runner), authenticator, authorizer)
    tlsOptions = buildTLSOptions(loaded)
    if tlsOptions is None:
        endpoint = TCP4ServerEndpoint(reactor, 0, interface="127.0.0.1")
        scheme = "http"
    else:
        endpoint = SSL4ServerEndpoint(reactor, 0, tlsOptions, interface="127.0.0.1")
        scheme = "https"
    port = await endpoint.listen(site)
    testCase.addCleanup(port.stopListening)
    number = port.getHost().port
    return RecordedRegistry(
        f"{scheme}://127.0.0.1:{number}", number, authorizer, authenticator, loaded
    )


@implementer(IAgent)
class _CredentialedAgent:
    """
    An agent that adds one C{Authorization} header to every request.
    """

    def __init__(self, agent, authorization: bytes):
        self._agent = agent
        self._authorization = authorization

    def request(self, method, uri, headers=None, bodyProducer=None):
        """
        Forward the request with the credentials added.
        """
        headers = headers.copy() if headers is not None else Headers()
        headers.setRawHeaders(b"authorization", [self._authorization])
        return self._agent.request(method, uri, headers, bodyProducer)


def credentialedClient(testCase, username=None, password=None, contextFactory=None):
    """
    A treq client sending Basic credentials with every request (none when
    C{username} is L{None}); its pool is closed when the test ends.
    """
    from twisted.internet import reactor

    pool = HTTPConnectionPool(reactor, persistent=False)
    testCase.addCleanup(pool.closeCachedConnections)
    kwargs = {"pool": pool}
    if contextFactory is not None:
        kwargs["contextFactory"] = contextFactory
    agent = Agent(reactor, **kwargs)
    if username is not None:
        agent = _CredentialedAgent(agent, basic(username, password))
    return HTTPClient(agent)


class SecretWatch:
    """
    Collects every log event of a test, to assert a secret never appears.
    """

    def __init__(self, testCase):
        self._events = EventLoggingObserver.createWithCleanup(testCase, globalLogPublisher)

    def text(self) -> str:
        """
        Every event, formatted and as its raw fields, as one string.
        """
        parts = []
        for event in self._events:
            parts.append(formatEvent(event) or "")
            parts.append(repr(event))
            failure = event.get("log_failure")
            if failure is not None:
                parts.append(failure.getTraceback())
        return "\n".join(parts)

    def __len__(self) -> int:
        return len(self._events)
