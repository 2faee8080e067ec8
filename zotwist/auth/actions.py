# -*- test-case-name: tests.test_auth_authorizer -*-
"""
What each endpoint does, in the words of access control and of tokens.

One table, shared by the authorizer (which asks the policy about the
action) and by the bearer authenticator (whose 401 challenge names the
token scope a client should ask for).
"""

from zotwist.auth.policy import CREATE, DELETE, READ, UPDATE

#: The access-control action of each route and method; HEAD is GET.
#: Manifest PUT is refined to L{UPDATE} by the authorizer when it would
#: move an existing tag.  Every step of a blob upload, including asking
#: its status and cancelling it, is part of pushing, so L{CREATE}.
ROUTE_ACTIONS = {
    ("tags", "GET"): READ,
    ("manifest", "GET"): READ,
    ("manifest", "PUT"): CREATE,
    ("manifest", "DELETE"): DELETE,
    ("blob", "GET"): READ,
    ("blob", "DELETE"): DELETE,
    ("referrers", "GET"): READ,
    ("uploads", "POST"): CREATE,
    ("upload", "GET"): CREATE,
    ("upload", "PATCH"): CREATE,
    ("upload", "PUT"): CREATE,
    ("upload", "DELETE"): CREATE,
}

#: The token (distribution auth spec) action that grants each
#: access-control action.
TOKEN_ACTIONS = {READ: "pull", CREATE: "push", UPDATE: "push", DELETE: "delete"}

#: What a client should ask a token service for, per action: pushing needs
#: pulling too (clients check for blobs before uploading them).
SCOPE_ACTIONS = {READ: "pull", CREATE: "pull,push", UPDATE: "pull,push", DELETE: "delete"}


def routeAction(route, method: str) -> str | None:
    """
    @param route: a matched L{zotwist.web.routes.Route}.
    @param method: the HTTP method, upper case.
    @return: the action the request needs on C{route.params["name"]}, or
        L{None} for the routes that name no repository (C{/v2/}, the
        catalog).
    """
    if route is None:
        return None
    if method == "HEAD":
        method = "GET"
    return ROUTE_ACTIONS.get((route.name, method))


__all__ = ["ROUTE_ACTIONS", "SCOPE_ACTIONS", "TOKEN_ACTIONS", "routeAction"]
