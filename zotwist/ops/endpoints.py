# -*- test-case-name: tests.test_ops_health -*-
"""
Small helpers shared by the operational endpoints (health, metrics, API
documentation): answering with a body, refusing a method or a path with the
registry's JSON error document, as C{/v2} does.
"""

from twisted.web.server import NOT_DONE_YET

from zotwist.errors import RegistryError
from zotwist.web.resource import sendError


def sendBody(request, body: bytes, contentType: bytes, status: int = 200,
             headers: dict | None = None):
    """
    Answer with C{body} (headers only for C{HEAD}) and finish.

    @return: L{NOT_DONE_YET}, for C{render} to return.
    """
    request.setResponseCode(status)
    request.setHeader(b"Content-Type", contentType)
    request.setHeader(b"Content-Length", str(len(body)).encode())
    for name, value in (headers or {}).items():
        request.setHeader(name, value)
    if request.method != b"HEAD":
        request.write(body)
    request.finish()
    return NOT_DONE_YET


def notFound(request):
    """
    Answer 404 with the registry's error document.

    @return: L{NOT_DONE_YET}.
    """
    sendError(request, RegistryError("UNSUPPORTED", message="no such endpoint", status=404))
    return NOT_DONE_YET


def refuseMethod(request, allowed: tuple) -> bool:
    """
    Answer 405 (with C{Allow}) unless the request's method is in C{allowed};
    C{HEAD} is allowed wherever C{GET} is.

    @return: whether the request was refused (and so answered).
    """
    method = request.method.decode("ascii", "replace").upper()
    methods = list(allowed)
    if "GET" in methods and "HEAD" not in methods:
        methods.append("HEAD")
    if method in methods:
        return False
    request.setHeader(b"Allow", ", ".join(methods).encode())
    sendError(request, RegistryError("UNSUPPORTED", message=f"method {method} is not allowed here"))
    return True


__all__ = ["sendBody", "notFound", "refuseMethod"]
