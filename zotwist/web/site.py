# -*- test-case-name: tests.test_api_base -*-
"""
The Twisted Web site of the registry.

L{RegistrySite} carries the store so that L{RegistryRequest} can route a
body into storage before the resource tree is even consulted, and it turns
off form parsing so that no POST body is ever read into memory.
"""

from twisted.web.http import HTTPChannel
from twisted.web.resource import Resource
from twisted.web.server import NOT_DONE_YET, Site

from zotwist.errors import RegistryError
from zotwist.web.api import RegistryAPI
from zotwist.web.bodies import RegistryRequest
from zotwist.web.resource import V2Resource, sendError


class RootResource(Resource):
    """
    C{/}: C{/v2} and, later, operational endpoints; a JSON 404 elsewhere.
    """

    def getChild(self, path, request):
        return _NotFound()


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
    """

    noisy = False
    protocol = RegistryChannel

    def __init__(
        self, store, authenticator=None, authorizer=None, limiter=None, audit=None, sender=None
    ):
        root = RootResource()
        api = RegistryAPI(store, authorizer, sender)
        root.putChild(b"v2", V2Resource(api, authenticator, authorizer, limiter, audit))
        self.root = root
        super().__init__(root, requestFactory=RegistryRequest, parsePOSTFormSubmission=False)
        self.store = store
        self.displayTracebacks = False

    def log(self, request) -> None:
        """
        No access log yet: per-request lines belong to the operations work
        (structured, level-filtered), not to Twisted's combined log format.
        """
