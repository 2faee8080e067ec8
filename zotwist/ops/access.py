# -*- test-case-name: tests.test_ops_logs,tests.test_ops_metrics -*-
"""
What one finished request was, for the access log and the metrics.

Twisted calls L{zotwist.web.site.RegistrySite.log} once per finished
request, and the site's channel reports requests cut off by a lost
connection; both hand the request to L{summarize}, which reads what the
web layer left on it (C{request.route}, C{request.identity}, the body's
byte count, C{request.sentLength}) into a L{RequestSummary}.  The summary
goes to every observer the site has: the L{AccessLog} always, the
metrics when C{extensions.metrics} is on.

Labels are bounded: the route is the name of a pattern of
L{zotwist.web.routes} (or of an operational endpoint), never the raw path,
and an unknown method is counted as C{OTHER}.
"""

import time
from dataclasses import dataclass

from twisted.logger import Logger

from zotwist.web.routes import matchRoute

#: The methods counted under their own name; anything else is C{OTHER}.
KNOWN_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})

#: The status recorded for a request whose connection went away before it
#: was answered (as nginx logs it).
ABORTED_STATUS = 499


@dataclass(frozen=True)
class RequestSummary:
    """
    One request, as the access log and the metrics see it.

    @ivar method: the HTTP method, or C{"OTHER"}.
    @ivar route: the route name (C{"manifest"}, C{"blob"}, C{"metrics"},
        ...), C{"unmatched"} for a path nothing answers.
    @ivar repository: the repository named in the path, or L{None}.
    @ivar status: the response status; L{ABORTED_STATUS} if the connection
        was lost first.
    @ivar bytesIn: request body bytes received.
    @ivar bytesOut: response body bytes sent.
    @ivar duration: seconds from the request line to the end.
    @ivar user: the authenticated user name, or L{None} (anonymous, or the
        request never reached authentication).
    @ivar path: the request path, without its query (for the log only,
        never a metrics label).
    @ivar client: the peer's address, or L{None}.
    @ivar aborted: whether the connection was lost before the answer ended.
    """

    method: str
    route: str
    repository: str | None
    status: int
    bytesIn: int
    bytesOut: int
    duration: float
    user: str | None
    path: str
    client: str | None
    aborted: bool = False


def _requestLine(request) -> tuple[bytes, bytes]:
    """
    The method and path of C{request}.  A request cut off before its body
    arrived has neither yet (Twisted sets them once the body is in); the
    channel still holds them from the request line then.
    """
    method = request.method
    path = getattr(request, "path", None)
    if path is None or method == b"(no method yet)":
        channel = getattr(request, "channel", None)
        method = getattr(channel, "_command", None) or b""
        uri = getattr(channel, "_path", None) or b""
        path = uri.split(b"?", 1)[0]
    return method or b"", path or b""


def routeName(request) -> str:
    """
    The bounded route label of C{request}: the matched C{/v2} route, the
    operational endpoint that answered it, or a C{/v2} pattern it matched
    with a method that route does not have; C{"unmatched"} otherwise.
    """
    route = getattr(request, "route", None)
    if route is not None:
        return route.name
    opsRoute = getattr(request, "opsRoute", None)
    if opsRoute is not None:
        return opsRoute
    _, path = _requestLine(request)
    if path.startswith(b"/v2"):
        matched = matchRoute(path)
        if matched is not None:
            return matched.name
    return "unmatched"


def _repository(request) -> str | None:
    route = getattr(request, "route", None)
    if route is None:
        _, path = _requestLine(request)
        route = matchRoute(path) if path.startswith(b"/v2") else None
    if route is None:
        return None
    return route.params.get("name")


def _bytesIn(request) -> int:
    content = getattr(request, "content", None)
    received = getattr(content, "received", None)
    if isinstance(received, int):
        return received
    length = request.getHeader(b"content-length")
    try:
        return int(length) if length is not None else 0
    except ValueError:
        return 0


def _client(request) -> str | None:
    try:
        address = request.getClientAddress()
    except Exception:
        return None
    host = getattr(address, "host", None)
    return host if isinstance(host, str) else None


def summarize(request, aborted: bool = False, now: float | None = None) -> RequestSummary:
    """
    Read a finished (or cut-off) request into a L{RequestSummary}.

    @param aborted: the connection was lost before the request finished.
    @param now: the monotonic time it ended; the current time by default.
    """
    rawMethod, rawPath = _requestLine(request)
    method = rawMethod.decode("ascii", "replace").upper()
    if method not in KNOWN_METHODS:
        method = "OTHER"
    started = getattr(request, "startedAt", None)
    end = time.monotonic() if now is None else now
    identity = getattr(request, "identity", None)
    return RequestSummary(
        method=method,
        route=routeName(request),
        repository=_repository(request),
        status=ABORTED_STATUS if aborted else int(request.code),
        bytesIn=_bytesIn(request),
        bytesOut=int(request.sentLength or 0),
        duration=max(0.0, end - started) if started is not None else 0.0,
        user=getattr(identity, "name", None),
        path=rawPath.decode("ascii", "replace"),
        client=_client(request),
        aborted=aborted,
    )


#: The access log's logger; its namespace lets an observer pick access events.
_accessLog = Logger(namespace="zotwist.access")


class AccessLog:
    """
    One structured event per request at info level, in namespace
    C{zotwist.access}; C{log.level} and C{log.output} decide where it goes
    (L{zotwist.logs.LogService} filters every observer), and in the
    C{log.output} file every field is a JSON key.
    """

    def __init__(self, enabled=lambda: True):
        """
        @param enabled: says whether info events pass the log level now;
            when they do not, the site skips summarizing requests for this
            observer (at C{log.level} warn, a request costs no log work).
        """
        self.wanted = enabled

    def __call__(self, summary: RequestSummary) -> None:
        """
        Emit the access event for C{summary}.
        """
        _accessLog.info(
            "{method} {path} {status} route={route} repository={repository} "
            "in={bytesIn} out={bytesOut} {duration:.3f}s user={user} client={client}",
            method=summary.method,
            path=summary.path,
            status=summary.status,
            route=summary.route,
            repository=summary.repository,
            bytesIn=summary.bytesIn,
            bytesOut=summary.bytesOut,
            duration=summary.duration,
            user=summary.user,
            client=summary.client,
            aborted=summary.aborted,
            access=True,
        )


__all__ = ["AccessLog", "RequestSummary", "summarize", "routeName", "ABORTED_STATUS"]
