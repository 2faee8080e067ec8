# -*- test-case-name: tests.test_api_base -*-
"""
The Twisted Web site of the registry.

L{RegistrySite} carries the store so that L{RegistryRequest} can route a
body into storage before the resource tree is even consulted, and it turns
off form parsing so that no POST body is ever read into memory.
"""

from twisted.logger import Logger
from twisted.web.http import HTTPChannel
from twisted.web.resource import Resource
from twisted.web.server import NOT_DONE_YET, Site

from zotwist.errors import RegistryError
from zotwist.ops.access import summarize
from zotwist.ops.drain import ConnectionTracker
from zotwist.web.api import RegistryAPI
from zotwist.web.bodies import RegistryRequest
from zotwist.web.resource import V2Resource, sendError


def _wants(observer) -> bool:
    wanted = getattr(observer, "wanted", None)
    return wanted is None or wanted()


class RootResource(Resource):
    """
    C{/}: C{/v2} and the operational endpoints (L{zotwist.ops.endpoints});
    a JSON 404 elsewhere.
    """

    def getChild(self, path, request):
        return _NotFound()

    def putPath(self, path: str, resource) -> None:
        """
        Answer C{path} (absolute, such as C{/metrics} or C{/ops/metrics})
        with C{resource}, adding plain containers for the segments before
        its last one.
        """
        segments = [s.encode("utf-8") for s in path.strip("/").split("/")]
        parent = self
        for segment in segments[:-1]:
            child = parent.children.get(segment)
            if child is None:
                child = RootResource()
                parent.putChild(segment, child)
            parent = child
        parent.putChild(segments[-1], resource)


class _NotFound(Resource):
    isLeaf = True

    def render(self, request):
        sendError(request, RegistryError("UNSUPPORTED", message="no such endpoint", status=404))
        return NOT_DONE_YET


#: The first byte of a TLS record carrying a handshake (a ClientHello).
_TLS_HANDSHAKE = b"\x16"


class RegistryChannel(HTTPChannel):
    """
    An HTTP/1.1 channel that recognises a TLS ClientHello sent to the plain
    HTTP port and answers it at once.

    Clients such as skopeo try HTTPS first and fall back to HTTP only when
    that fails; a plain HTTP server that waits for a request line would make
    each of them sit out its 10 s handshake timeout.  Go's net/http answers
    the same way.
    """

    _sniffed = False
    _host = None
    _peer = None

    def getHost(self):
        """
        The local address, asked of the socket once per connection (Twisted
        asks for every request: a C{getsockname} each time).
        """
        if self._host is None:
            self._host = super().getHost()
        return self._host

    def getPeer(self):
        """
        The client's address, built once per connection.
        """
        if self._peer is None:
            self._peer = super().getPeer()
        return self._peer

    def connectionLost(self, reason) -> None:
        """
        Report the requests the connection takes with it (the client left,
        or a graceful stop cut it off) before Twisted forgets them.
        """
        site = getattr(self, "site", None)
        if site is not None:
            for request in list(self.requests):
                if not request.finished:
                    site.requestAborted(request)
            site.connections.remove(self)
        super().connectionLost(reason)

    def dataReceived(self, data: bytes) -> None:
        if not self._sniffed:
            self._sniffed = True
            if data[:1] == _TLS_HANDSHAKE:
                self.transport.write(
                    b"HTTP/1.0 400 Bad Request\r\n\r\n"
                    b"Client sent an HTTP request to an HTTPS server.\n"
                )
                self.transport.loseConnection()
                return
        super().dataReceived(data)


class RegistrySite(Site):
    """
    A L{Site} whose requests stream upload bodies into C{store}.

    @ivar store: the L{zotwist.storage.interfaces.IRegistryStore}.
    @ivar requestObservers: callables given a
        L{zotwist.ops.access.RequestSummary} for every request that ends,
        answered or cut off (the access log, the metrics).  An observer
        with a C{wanted()} method that returns false is skipped for now.
    @ivar connections: the open connections, for a graceful stop.
    """

    noisy = False
    protocol = RegistryChannel
    _log = Logger()

    def __init__(
        self, store, authenticator=None, authorizer=None, limiter=None, audit=None, sender=None,
        redirectBlobs: bool = False,
    ):
        root = RootResource()
        api = RegistryAPI(store, authorizer, sender, redirectBlobs)
        root.putChild(b"v2", V2Resource(api, authenticator, authorizer, limiter, audit))
        self.root = root
        super().__init__(root, requestFactory=RegistryRequest, parsePOSTFormSubmission=False)
        self.store = store
        self.displayTracebacks = False
        self.requestObservers: list = []
        self.connections = ConnectionTracker()

    def buildProtocol(self, addr):
        """
        Build a channel and track it until its connection is gone.
        """
        channel = super().buildProtocol(addr)
        if channel is not None:
            self.connections.add(channel)
        return channel

    def _report(self, request, aborted: bool) -> None:
        observers = [o for o in self.requestObservers if _wants(o)]
        if not observers:
            return
        summary = summarize(request, aborted=aborted)
        for observer in observers:
            try:
                observer(summary)
            except Exception:
                self._log.failure("Request observer {observer!r} failed", observer=observer)

    def log(self, request) -> None:
        """
        Called by Twisted once per finished request: hand it to the
        L{requestObservers} (structured and level-filtered, not Twisted's
        combined log format).
        """
        self._report(request, aborted=False)

    def requestAborted(self, request) -> None:
        """
        Called by the channel for a request whose connection was lost
        before it finished.
        """
        self._report(request, aborted=True)
