# -*- test-case-name: tests.test_auth_authorizer -*-
"""
The L{IAuthorizer} for C{http.accessControl} and bearer tokens.

For each request, L{RegistryAuthorizer} works out the action (read, create,
update, delete; see L{zotwist.auth.actions}) on the repository the route
names, and asks:

  - for a caller with a bearer token, the token's C{access} claims (as zot
    does, the policies do not apply to tokens);
  - otherwise the L{AccessPolicy}, when C{accessControl} is configured;
  - otherwise (authentication without policies) whether the caller is
    authenticated at all.

A refusal is C{UNAUTHORIZED} (401, with the authenticator's challenge) for
an anonymous caller, who may get further by logging in, and C{DENIED} (403)
for an authenticated one.

A manifest PUT is an I{update} when one of the tags it sets already exists
and names another manifest; pushing the same manifest again under the same
tag is still a I{create}, so a retried push does not need the right to
overwrite.  Cross-repository mounts check I{read} on the source through
L{mayRead} (the store only mounts from repositories the caller may read,
and otherwise answers with a plain upload session, as zot does).

C{/v2/} is open to authenticated callers, and to anonymous ones when some
repository has an C{anonymousPolicy}; but a Docker client must be told to
log in there when anonymous and authenticated-only policies coexist,
because Docker only sends its stored credentials after a 401 on C{/v2/}
(zot#3538, #3182; zot recognises Docker by its User-Agent the same way).
The catalog is open to the same callers and filtered by L{mayRead}.
"""

import hashlib

from twisted.internet.defer import ensureDeferred
from zope.interface import implementer

from zotwist import oci
from zotwist.auth.actions import TOKEN_ACTIONS, routeAction
from zotwist.auth.bearer import grantsAllow
from zotwist.auth.interfaces import ANONYMOUS, IAuthorizer
from zotwist.auth.policy import CREATE, READ, UPDATE, AccessPolicy
from zotwist.errors import RegistryError


def isDockerClient(request) -> bool:
    """
    Whether the request comes from the Docker engine (directly or on
    behalf of compose or buildx), by zot's User-Agent test.
    """
    agent = request.getHeader("user-agent") or ""
    if isinstance(agent, bytes):
        agent = agent.decode("latin-1")
    return "Docker-Client" in agent or agent.startswith("docker/")


def _hasCatalogGrant(identity) -> bool:
    """
    Whether a token allows listing the catalog: C{registry:catalog:*}, or
    the C{repository::pull} entry older zot token services issue for it.
    """
    return grantsAllow(identity.claims, "registry", "catalog", "*") or grantsAllow(
        identity.claims, "repository", "", "pull"
    )


@implementer(IAuthorizer)
class RegistryAuthorizer:
    """
    Access control for policies and tokens.

    @param policy: the L{AccessPolicy}, or L{None} when C{accessControl} is
        not configured (then every authenticated caller may do everything).
    @param store: the L{zotwist.storage.interfaces.IRegistryStore}, to tell
        a manifest I{update} from a I{create}; without one every manifest
        PUT is a create.
    @param tokens: whether bearer tokens are accepted: token holders may do
        what anonymous callers may not even when every policy is
        anonymous, so Docker must then be sent to log in too.
    """

    def __init__(self, policy: AccessPolicy | None = None, store=None, tokens: bool = False):
        self._policy = policy
        self._store = store
        self._tokens = tokens

    def setPolicy(self, policy: AccessPolicy) -> None:
        """
        Put a reloaded C{accessControl} in force (C{SIGHUP}): requests
        authorized from now on follow it.
        """
        self._policy = policy

    # -- IAuthorizer -----------------------------------------------------------

    def authorize(self, identity, route, method, request):
        return ensureDeferred(self._authorize(identity or ANONYMOUS, route, method, request))

    def mayRead(self, identity, repository):
        return self._can(identity or ANONYMOUS, READ, repository)

    def mayList(self, identity, repository):
        """
        Whether the catalog shows C{repository}: readable repositories, or
        every one for a token with the catalog grant (distribution's
        C{registry:catalog:*}, which token services issue by itself).
        """
        identity = identity or ANONYMOUS
        if identity.method == "bearer" and _hasCatalogGrant(identity):
            return True
        return self.mayRead(identity, repository)

    # -- decisions -----------------------------------------------------------------

    def _can(self, identity, action: str, repository: str) -> bool:
        if identity.method == "bearer" and not identity.anonymous:
            return grantsAllow(identity.claims, "repository", repository, TOKEN_ACTIONS[action])
        if self._policy is not None:
            return self._policy.can(identity, action, repository)
        return not identity.anonymous

    def _anonymousWelcome(self) -> bool:
        return self._policy is not None and self._policy.anonymousPolicyExists()

    async def _authorize(self, identity, route, method: str, request) -> None:
        if route.name == "base":
            if not identity.anonymous:
                return
            if not self._anonymousWelcome():
                raise RegistryError("UNAUTHORIZED")
            mixed = self._policy.hasMixedPolicies() or self._tokens
            if mixed and isDockerClient(request):
                raise RegistryError(
                    "UNAUTHORIZED",
                    message="log in to reach the repositories anonymous users cannot",
                )
            return
        if route.name == "catalog":
            if identity.anonymous:
                if not self._anonymousWelcome():
                    raise RegistryError("UNAUTHORIZED")
            elif identity.method == "bearer" and not _hasCatalogGrant(identity):
                raise RegistryError("DENIED", detail={"scope": "registry:catalog:*"})
            return
        name = route.params["name"]
        action = routeAction(route, method)
        if action is None:  # a route the table does not know: refuse, never guess
            raise self._refusal(identity, "unknown", name)
        if action == CREATE and route.name == "manifest":
            action = await self._manifestPutAction(name, route.params["reference"], request)
        if not self._can(identity, action, name):
            raise self._refusal(identity, action, name)

    def _refusal(self, identity, action: str, name: str) -> RegistryError:
        if identity.anonymous:
            return RegistryError("UNAUTHORIZED")
        return RegistryError("DENIED", detail={"repository": name, "action": action})

    async def _manifestPutAction(self, name: str, reference: str, request) -> str:
        """
        L{UPDATE} when the PUT would move a tag that exists and names another
        manifest (the reference, or a C{?tag=}); else L{CREATE}.
        """
        if self._store is None:
            return CREATE
        tags = [] if oci.looksLikeDigest(reference) else [reference]
        for value in (getattr(request, "args", None) or {}).get(b"tag", []):
            tags.append(value.decode("utf-8", "replace"))
        if not tags:
            return CREATE
        content = getattr(request, "content", None)
        digest = None
        if content is not None and hasattr(content, "getvalue"):
            if not getattr(content, "overflowed", False):
                digest = "sha256:" + hashlib.sha256(content.getvalue()).hexdigest()
        for tag in dict.fromkeys(tags):
            try:
                _, _, current = await self._store.statManifest(name, tag)
            except RegistryError:
                continue  # no such tag or repository (or a bad tag: the handler says so)
            if current != digest:
                return UPDATE
        return CREATE


def buildAuthorizer(config, store):
    """
    The authorizer the config asks for: a L{RegistryAuthorizer} when
    C{http.accessControl} or bearer tokens are configured (tokens carry
    their own grants, so no other authorizer may let a token holder do
    everything); L{None} otherwise, for the caller's default.
    """
    http = config.http
    bearer = http.auth is not None and http.auth.bearer is not None
    if http.accessControl is None and not bearer:
        return None
    policy = AccessPolicy(http.accessControl) if http.accessControl is not None else None
    return RegistryAuthorizer(policy, store, tokens=bearer)


__all__ = ["RegistryAuthorizer", "buildAuthorizer", "isDockerClient"]
