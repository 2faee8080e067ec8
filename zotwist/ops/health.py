# -*- test-case-name: tests.test_ops_health -*-
"""
C{/livez}, C{/readyz} and C{/startupz}, as zot serves them.

zot answers its probes with controller-runtime's C{healthz} checks: C{200}
with the body C{ok} when a check passes, C{500} with
C{internal server error: <reason>} when it fails, as plain text.  Here:

  - C{/livez} passes while the process runs and the reactor turns;
  - C{/startupz} passes once the store has scanned its root (the port only
    opens after that, so a probe that gets an answer at all sees it pass);
  - C{/readyz} passes while the store is ready, its root directory is still
    writable (a read-only remount or a removed volume fails it), and the
    process is not shutting down (after C{SIGTERM} it fails, so a load
    balancer stops sending new requests while those in flight drain).
"""

import os

from twisted.web.resource import Resource
from twisted.web.server import NOT_DONE_YET

from zotwist.ops.endpoints import notFound, refuseMethod, sendBody

_TEXT = b"text/plain; charset=utf-8"


class HealthChecks:
    """
    The three checks; each returns L{None} when it passes, else the reason.

    @param storeService: the L{zotwist.service.StoreService}.
    @param root: the storage root directory.
    @ivar stopping: set when a graceful stop begins.
    """

    def __init__(self, storeService, root: str):
        self._storeService = storeService
        self._root = root
        self.stopping = False

    def livez(self) -> str | None:
        """
        Passes while the process can answer at all.
        """
        return None

    def startupz(self) -> str | None:
        """
        Passes once the store has scanned its root.
        """
        if not self._storeService.isReady:
            return "storage is being prepared"
        return None

    def readyz(self) -> str | None:
        """
        Passes while the store is ready, its root writable, and no stop began.
        """
        if not self._storeService.isReady:
            return "storage is being prepared"
        if self.stopping:
            return "shutting down"
        # access(2) is one system call, fine on the reactor thread; it
        # answers EROFS for a read-only mount.
        if not os.access(self._root, os.W_OK | os.X_OK):
            return "storage root is not writable"
        return None


class HealthResource(Resource):
    """
    One check, answered the controller-runtime way.
    """

    isLeaf = True

    def __init__(self, name: str, check):
        super().__init__()
        self._name = name
        self._check = check

    def render(self, request):
        """
        Answer C{GET}/C{HEAD} with the check's result.
        """
        request.opsRoute = self._name
        if request.postpath not in ([], [b""]):
            return notFound(request)
        if refuseMethod(request, ("GET",)):
            return NOT_DONE_YET
        reason = self._check()
        headers = {b"X-Content-Type-Options": b"nosniff"}
        if reason is None:
            return sendBody(request, b"ok", _TEXT, 200, headers)
        body = f"internal server error: {reason}\n".encode()
        return sendBody(request, body, _TEXT, 500, headers)


def healthResources(checks: HealthChecks) -> dict:
    """
    @return: C{{path: resource}} for the three endpoints.
    """
    return {
        "/livez": HealthResource("livez", checks.livez),
        "/readyz": HealthResource("readyz", checks.readyz),
        "/startupz": HealthResource("startupz", checks.startupz),
    }


__all__ = ["HealthChecks", "HealthResource", "healthResources"]
