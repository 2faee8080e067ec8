# -*- test-case-name: tests.test_api_base -*-
"""
The /v2 leaf resource: routing, the handler's life cycle, and errors.

Every request below C{/v2} is matched whole by L{zotwist.web.routes}, then
handed to the coroutine of L{zotwist.web.api.RegistryAPI} named
C{<route>_<METHOD>}.  Whatever a handler raises becomes the spec's JSON error
body: a L{RegistryError} with its own code and status, anything else a logged
500.  A handler still running when the client goes away is cancelled, and
nothing is written after the request finished.
"""

import json

from twisted.internet.defer import CancelledError, ensureDeferred
from twisted.logger import Logger
from twisted.web.resource import Resource
from twisted.web.server import NOT_DONE_YET

from zotwist.auth.interfaces import AllowEverything, NoAuthentication
from zotwist.errors import RegistryError
from zotwist.web.routes import matchRoute

API_VERSION_HEADER = (b"Docker-Distribution-API-Version", b"registry/2.0")


def sendError(request, error: RegistryError) -> None:
    """
    Answer with the OCI error document for C{error}.
    """
    body = error.body()
    request.setResponseCode(error.status)
    request.setHeader(b"Content-Type", b"application/json")
    request.setHeader(b"Content-Length", str(len(body)).encode())
    for key, value in error.headers.items():
        request.setHeader(key.encode(), value.encode("latin-1"))
    if request.method != b"HEAD":
        request.write(body)
    request.finish()


def sendJSON(
    request, document, status: int = 200, contentType: bytes = b"application/json"
) -> None:
    body = json.dumps(document).encode("utf-8")
    request.setResponseCode(status)
    request.setHeader(b"Content-Type", contentType)
    request.setHeader(b"Content-Length", str(len(body)).encode())
    if request.method != b"HEAD":
        request.write(body)
    request.finish()


def sendEmpty(request, status: int, headers: dict | None = None) -> None:
    request.setResponseCode(status)
    for key, value in (headers or {}).items():
        request.setHeader(key.encode(), value.encode("latin-1"))
    request.setHeader(b"Content-Length", b"0")
    request.finish()


class V2Resource(Resource):
    """
    Everything under C{/v2}, as one leaf.

    @param api: the L{zotwist.web.api.RegistryAPI} holding the handlers.
    @param limiter: a L{zotwist.web.ratelimit.RateLimiter} consulted before
        anything else (so an over-eager client costs no authentication),
        or L{None}.
    @param audit: a L{zotwist.web.audit.AuditLog} told about every request,
        or L{None}.
    """

    isLeaf = True
    _log = Logger()

    def __init__(self, api, authenticator=None, authorizer=None, limiter=None, audit=None):
        super().__init__()
        self._api = api
        self._authenticator = authenticator or NoAuthentication()
        self._authorizer = authorizer or AllowEverything()
        self._limiter = limiter
        self._audit = audit

    async def _handle(self, request, route, method: str):
        """
        Authenticate, authorize, then run the route's handler.
        """
        identity = await self._authenticator.authenticate(request)
        request.identity = identity
        await self._authorizer.authorize(identity, route, method, request)
        handlerMethod = "GET" if method == "HEAD" else method
        handler = getattr(self._api, f"{route.name}_{handlerMethod}")
        await handler(request, **route.params)

    def render(self, request):
        request.identity = None
        request.route = None
        request.setHeader(*API_VERSION_HEADER)
        method = request.method.decode("ascii", "replace").upper()
        if self._audit is not None:
            self._audit.watch(request, method)
        if self._limiter is not None:
            wait = self._limiter.check(method, getattr(request.getClientAddress(), "host", ""))
            if wait is not None:
                sendError(request, RegistryError(
                    "TOOMANYREQUESTS", headers={"Retry-After": str(wait)}
                ))
                return NOT_DONE_YET
        matched = getattr(request, "matchedRoute", None)
        if matched is not None and matched[0] == request.path:
            route = matched[1]
        else:
            route = matchRoute(request.path)
        if route is None:
            sendError(request, RegistryError("UNSUPPORTED", message="no such endpoint", status=404))
            return NOT_DONE_YET
        if not route.allows(method):
            request.setHeader(b"Allow", route.allowHeader().encode())
            sendError(
                request,
                RegistryError("UNSUPPORTED", message=f"method {method} is not allowed here"),
            )
            return NOT_DONE_YET
        request.route = route
        d = ensureDeferred(self._handle(request, route, method))
        finished = request.notifyFinish()

        def clientGone(failure):
            d.cancel()

        finished.addErrback(clientGone)

        def failed(failure):
            if request._disconnected or request.finished:
                if not failure.check(CancelledError):
                    self._log.failure("Handler failed after the client left", failure)
                return
            if failure.check(RegistryError):
                error = failure.value
                if error.status == 401:
                    error.headers = {**self._authenticator.challenge(request), **error.headers}
                sendError(request, error)
                return
            self._log.failure("Unexpected error answering {method} {path}", failure,
                              method=method, path=request.path)
            sendError(request, RegistryError("UNKNOWN", message="internal error"))

        d.addErrback(failed)
        return NOT_DONE_YET
