# -*- test-case-name: tests.test_routes -*-
"""
Matching /v2 paths to the spec's endpoints.

Repository names contain slashes, so the path is matched whole (as Klein's
leaf resource does), from the right: the last one or two segments say what
is asked for, everything before them is the name.  Paths are matched in
their raw, percent-encoded form and never decoded: no valid name, tag,
digest or session id contains a C{%}, so an encoded slash or dot can only
fail validation, never reach the filesystem.  The one exception is an
encoded colon in a digest or reference (C{sha256%3A...}), which is decoded.
"""

import re
from dataclasses import dataclass

_PATTERNS = [
    ("base", re.compile(r"/v2/?\Z")),
    ("catalog", re.compile(r"/v2/_catalog\Z")),
    ("tags", re.compile(r"/v2/(?P<name>.+)/tags/list\Z")),
    ("manifest", re.compile(r"/v2/(?P<name>.+)/manifests/(?P<reference>[^/]+)\Z")),
    ("uploads", re.compile(r"/v2/(?P<name>.+)/blobs/uploads/?\Z")),
    ("upload", re.compile(r"/v2/(?P<name>.+)/blobs/uploads/(?P<uploadID>[^/]+)\Z")),
    ("blob", re.compile(r"/v2/(?P<name>.+)/blobs/(?P<digest>[^/]+)\Z")),
    ("referrers", re.compile(r"/v2/(?P<name>.+)/referrers/(?P<digest>[^/]+)\Z")),
]

#: Parameters in which an encoded colon (C{sha256%3A...}) is decoded: HTTP
#: libraries that quote every path parameter (schemathesis, some SDKs) send
#: digests that way, and the Docker registry decodes the path before matching.
#: Only the colon: nothing else a digest or tag may contain needs quoting, and
#: decoding C{%2F} or C{%2E} could turn a parameter into a path.
_COLON_PARAMS = ("digest", "reference")
_ENCODED_COLON = re.compile("%3a", re.IGNORECASE)

#: The methods each route answers (HEAD is answered wherever GET is).
METHODS = {
    "base": ("GET",),
    "catalog": ("GET",),
    "tags": ("GET",),
    "manifest": ("GET", "PUT", "DELETE"),
    "uploads": ("POST",),
    "upload": ("GET", "PATCH", "PUT", "DELETE"),
    "blob": ("GET", "DELETE"),
    "referrers": ("GET",),
}


@dataclass(frozen=True)
class Route:
    """
    A matched endpoint.

    @ivar name: the route's name, a key of L{METHODS}.
    @ivar params: the captured path parameters, as str.
    """

    name: str
    params: dict

    def allows(self, method: str) -> bool:
        allowed = METHODS[self.name]
        return method in allowed or (method == "HEAD" and "GET" in allowed)

    def allowHeader(self) -> str:
        allowed = list(METHODS[self.name])
        if "GET" in allowed:
            allowed.append("HEAD")
        return ", ".join(allowed)


def matchRoute(path: bytes) -> Route | None:
    """
    @param path: the request path without its query string, as received.
    @return: the matched L{Route}, or L{None} for a path the API does not have.
    """
    try:
        text = path.decode("ascii")
    except UnicodeDecodeError:
        return None
    for name, pattern in _PATTERNS:
        match = pattern.match(text)
        if match is not None:
            params = match.groupdict()
            for key in _COLON_PARAMS:
                if key in params:
                    params[key] = _ENCODED_COLON.sub(":", params[key])
            return Route(name, params)
    return None
