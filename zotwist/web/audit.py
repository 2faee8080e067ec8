# -*- test-case-name: tests.test_audit -*-
"""
C{log.audit}: one JSON line per request that changes something.

Every POST, PUT, PATCH and DELETE below C{/v2} is recorded once its answer
is known (C{request.notifyFinish}), whatever the answer: who (the
authenticated user, or C{null} and C{"auth": "anonymous"}), from where
(the client address), what (method and path), on which repository and
reference, the HTTP status, and a C{result}: C{success} (2xx),
C{denied} (401, 403, 429), C{failure} (any other status) or C{aborted}
(the client left first).  zot records only the successes; the refused
attempts are kept here too, because they are what an audit looks for.
Reads are not recorded.  Credentials never are: only the user name the
authenticator established.

The file is opened once when the service starts, in append mode and line
buffered, so each record reaches the file whole as soon as it is written
and several processes may append to one file.
"""

import json
from datetime import datetime, timezone

from twisted.application.service import Service
from twisted.logger import Logger

#: The methods that change the registry.
CHANGES = frozenset({"POST", "PUT", "PATCH", "DELETE"})


def _arg(request, name: bytes) -> str | None:
    values = (getattr(request, "args", None) or {}).get(name)
    return values[0].decode("utf-8", "replace") if values else None


def _reference(route, request) -> str | None:
    """
    The manifest reference or blob digest a change is about.
    """
    if route is None:
        return None
    params = route.params
    if "reference" in params:
        return params["reference"]
    if "digest" in params:
        return params["digest"]
    if route.name in ("uploads", "upload"):
        return _arg(request, b"mount") or _arg(request, b"digest")
    return None


def _result(status: int, aborted: bool) -> str:
    if aborted:
        return "aborted"
    if 200 <= status < 300:
        return "success"
    if status in (401, 403, 429):
        return "denied"
    return "failure"


def auditRecord(request, method: str, now: float, aborted: bool = False) -> dict:
    """
    The audit entry for a finished request.
    """
    identity = getattr(request, "identity", None)
    route = getattr(request, "route", None)
    address = request.getClientAddress()
    record = {
        "time": datetime.fromtimestamp(now, timezone.utc)
        .isoformat(timespec="milliseconds")
        .replace("+00:00", "Z"),
        "user": None if identity is None else identity.name,
        "auth": None if identity is None else identity.method,
        "clientIP": getattr(address, "host", None),
        "method": method,
        "path": request.uri.decode("utf-8", "replace"),
        "repository": route.params.get("name") if route is not None else None,
        "reference": _reference(route, request),
        "status": request.code,
        "result": _result(request.code, aborted),
    }
    if route is not None and "uploadID" in route.params:
        record["upload"] = route.params["uploadID"]
    return record


class AuditLog(Service):
    """
    The audit file, open while the service runs.

    @param path: the file to append to.
    @param clock: an L{IReactorTime} for the records' time.
    """

    _log = Logger()

    def __init__(self, path: str, clock):
        self.path = path
        self._clock = clock
        self._file = None
        self.setName("audit")

    def startService(self) -> None:
        super().startService()
        self._file = open(self.path, "a", buffering=1, encoding="utf-8")

    def stopService(self) -> None:
        super().stopService()
        if self._file is not None:
            self._file.close()
            self._file = None

    def reopen(self) -> None:
        """
        Open the file again under its name (after a rotation renamed it, on
        C{SIGHUP}); records written meanwhile went to the old file, none is
        lost.  The old file is closed after the swap.
        """
        if self._file is None:
            return
        try:
            new = open(self.path, "a", buffering=1, encoding="utf-8")
        except OSError:
            self._log.failure("Could not reopen the audit log {path}", path=self.path)
            return
        old, self._file = self._file, new
        old.close()

    def watch(self, request, method: str) -> None:
        """
        Record C{request} when it is answered, if C{method} changes things.
        """
        if method not in CHANGES:
            return

        def done(result):
            aborted = result is not None  # a Failure: the connection was lost
            self.write(auditRecord(request, method, self._clock.seconds(), aborted))

        request.notifyFinish().addBoth(done)

    def write(self, record: dict) -> None:
        """
        Append one record as a line.
        """
        if self._file is None:
            self._log.error("Audit record dropped, the audit log is not open: {record}",
                            record=record)
            return
        try:
            self._file.write(json.dumps(record, separators=(",", ":")) + "\n")
        except OSError:
            self._log.failure("Could not write to the audit log {path}", path=self.path)


def buildAuditLog(config, clock) -> AuditLog | None:
    """
    The audit log for C{log.audit}, or L{None} when there is none.
    """
    if not config.log.audit:
        return None
    return AuditLog(config.log.audit, clock)


__all__ = ["AuditLog", "CHANGES", "auditRecord", "buildAuditLog"]
